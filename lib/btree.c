/*
 * btree.c — the generic btree engine: lookup, walk, insert with splits, delete with
 * rebalancing, range queries, block visits and the full structural verifier (btree.h).
 *
 * Block layout (mendfs_format.h): a 64-byte struct mfs_btree_block header, then
 *
 *     leaf (level 0):   rec[0] rec[1] ... rec[numrecs-1]                (rec_len bytes each)
 *     node (level > 0): key[0] ... key[cap-1]  ptr[0] ... ptr[cap-1]    (cap = node maxrecs)
 *
 * Invariants kept by every change and checked by mfs_btree_verify():
 *
 *   - every leaf is at level 0 and at depth root.levels - 1; a child's level is its
 *     parent's level minus one;
 *   - keys are unique and strictly increasing across the whole tree in key order;
 *   - node key[i] equals the lowest key in the subtree under ptr[i] (the first key of the
 *     child block);
 *   - every block but the root holds between minrecs (= maxrecs / 2) and maxrecs entries;
 *     a root node holds at least two (a root node with one child is collapsed), a root
 *     leaf anything from zero (the empty tree) to maxrecs.
 *
 * Descent: at each node we follow the last key <= the search key (or the first entry when
 * the search key is below every key, which only happens along the leftmost path); in the
 * leaf we land on the first record >= the search key.  Because node keys are exactly the
 * first keys of their children, that leaf is the one that holds the key or would hold it.
 *
 * The cursor keeps a held buffer for every level of its path (path[0] the leaf).  A new
 * descent reuses a held buffer when the block number matches, so repeated lookups do not
 * go through the cache for the root and upper nodes.  This is sound because the caller
 * holds the tree's lock for the cursor's whole life and every change to the tree goes
 * through a cursor of the same transaction; after mfs_trans_cancel() the cursor must be
 * released, not reused (its buffers may describe blocks the cancel dropped).
 *
 * Nothing read from disk is trusted: numrecs is bounded by maxrecs before any entry is
 * touched, node pointers are range-checked before they are followed, and the expected
 * level is verified on every block read, so a corrupt tree yields -EFSCORRUPTED (or the
 * verifier's -EFSBADCRC), never a crash or an endless walk.
 */
#include "mem.h"
#include "btree.h"
#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "log.h"
#include "trans.h"
#include "verify.h"

#include <stdlib.h>
#include <string.h>

#define BT_HDR        ((unsigned)sizeof(struct mfs_btree_block))
#define BT_KEYBUF     256u          /* largest key_len the engine accepts */

/* ---- block access -------------------------------------------------------------------- */

static inline struct mfs_btree_block *bt_blk(const struct mfs_buf *bp)
{
	return (struct mfs_btree_block *)bp->data;
}

static inline unsigned bt_numrecs(const struct mfs_buf *bp)
{
	return mfs_get16(bt_blk(bp)->numrecs);
}

static inline void bt_set_numrecs(struct mfs_buf *bp, unsigned n)
{
	mfs_put16(bt_blk(bp)->numrecs, (uint16_t)n);
}

static inline uint8_t *bt_rec(const struct mfs_btree_cur *cur, const struct mfs_buf *bp,
			      unsigned i)
{
	return (uint8_t *)bp->data + BT_HDR + (size_t)i * cur->ops->rec_len;
}

static inline uint8_t *bt_key(const struct mfs_btree_cur *cur, const struct mfs_buf *bp,
			      unsigned i)
{
	return (uint8_t *)bp->data + BT_HDR + (size_t)i * cur->ops->key_len;
}

static inline uint8_t *bt_ptr(const struct mfs_btree_cur *cur, const struct mfs_buf *bp,
			      unsigned i)
{
	return (uint8_t *)bp->data + BT_HDR + (size_t)cur->maxrecs[1] * cur->ops->key_len +
	       (size_t)i * cur->ops->ptr_len;
}

static inline unsigned bt_maxrecs(const struct mfs_btree_cur *cur, unsigned lev)
{
	return cur->maxrecs[lev > 0];
}

static inline unsigned bt_minrecs(const struct mfs_btree_cur *cur, unsigned lev)
{
	return cur->maxrecs[lev > 0] / 2;
}

/* The fsblock a node pointer designates (not yet range-checked). */
static inline uint64_t bt_get_ptr(const struct mfs_btree_cur *cur, const struct mfs_buf *bp,
				  unsigned i)
{
	const uint8_t *p = bt_ptr(cur, bp, i);

	if (cur->ops->ptr_len == 4) {
		uint32_t v;

		memcpy(&v, p, 4);
		return mfs_agbno_to_fsb(&cur->fs->geo, cur->agno, mfs_get32(v));
	} else {
		uint64_t v;

		memcpy(&v, p, 8);
		return mfs_get64(v);
	}
}

static inline void bt_set_ptr(const struct mfs_btree_cur *cur, struct mfs_buf *bp, unsigned i,
			      uint64_t fsb)
{
	uint8_t *p = bt_ptr(cur, bp, i);

	if (cur->ops->ptr_len == 4) {
		uint32_t v;

		mfs_put32(v, mfs_fsb_to_agbno(&cur->fs->geo, fsb));
		memcpy(p, &v, 4);
	} else {
		uint64_t v;

		mfs_put64(v, fsb);
		memcpy(p, &v, 8);
	}
}

/* The first key of a block: the key of record 0 (leaf) or key 0 (node). */
static inline const void *bt_first_key(const struct mfs_btree_cur *cur,
				       const struct mfs_buf *bp, unsigned lev, void *kbuf)
{
	if (lev == 0) {
		cur->ops->rec_key(bt_rec(cur, bp, 0), kbuf);
		return kbuf;
	}
	return bt_key(cur, bp, 0);
}

static const char *bt_ownerkind(const struct mfs_btree_cur *cur)
{
	return cur->ops->ptr_len == 4 ? "AG" : "inode";
}

static unsigned long long bt_ownerid(const struct mfs_btree_cur *cur)
{
	return cur->ops->ptr_len == 4 ? (unsigned long long)cur->agno :
					(unsigned long long)cur->owner;
}

/*
 * Is `fsb` a place a block of this tree may live?  4-byte pointers stay inside the
 * cursor's AG, 8-byte ones inside the filesystem; neither may point at an AG's fixed
 * blocks (superblock, AG header, AGFL).
 */
static int bt_check_fsb(const struct mfs_btree_cur *cur, uint64_t fsb, const char *what,
			uint64_t from)
{
	const struct mfs_geom *g = &cur->fs->geo;
	uint32_t agno, agbno;

	if (fsb >= g->dblocks)
		goto bad;
	agno = mfs_fsb_to_agno(g, fsb);
	agbno = mfs_fsb_to_agbno(g, fsb);
	if (agbno < MFS_AG_FIXED_BLOCKS)
		goto bad;
	if (cur->ops->ptr_len == 4 && (agno != cur->agno || agbno >= mfs_ag_length(g, agno)))
		goto bad;
	return 0;
bad:
	return MFS_CORRUPT("%s %llu %s block %llu: %s %llu lies outside the %s or on its "
			   "fixed blocks", bt_ownerkind(cur), bt_ownerid(cur), cur->ops->name,
			   (unsigned long long)from, what, (unsigned long long)fsb,
			   cur->ops->ptr_len == 4 ? "AG" : "filesystem");
}

/* Sanity of the cursor's ops and root before any walk. */
static int bt_check_cur(const struct mfs_btree_cur *cur)
{
	const struct mfs_btree_ops *ops = cur->ops;

	if (!ops || !ops->cmp_keys || !ops->rec_key || !ops->rec_len || !ops->key_len ||
	    ops->key_len > BT_KEYBUF || (ops->ptr_len != 4 && ops->ptr_len != 8) ||
	    cur->maxrecs[0] < 1 || cur->maxrecs[1] < 2)
		return -EINVAL;
	if (cur->root.levels < 1 || cur->root.levels > MFS_BTREE_MAXLEVELS)
		return MFS_CORRUPT("%s %llu %s: root claims %u levels (1..%u allowed)",
				   bt_ownerkind(cur), bt_ownerid(cur), ops->name,
				   cur->root.levels, MFS_BTREE_MAXLEVELS);
	if (ops->ptr_len == 4 && cur->agno >= cur->fs->geo.agcount)
		return -EINVAL;
	if (cur->root.fsb >= cur->fs->geo.dblocks ||
	    mfs_fsb_to_agbno(&cur->fs->geo, cur->root.fsb) < MFS_AG_FIXED_BLOCKS ||
	    (ops->ptr_len == 4 && mfs_fsb_to_agno(&cur->fs->geo, cur->root.fsb) != cur->agno))
		return MFS_CORRUPT("%s %llu %s: root block %llu lies outside the %s",
				   bt_ownerkind(cur), bt_ownerid(cur), ops->name,
				   (unsigned long long)cur->root.fsb,
				   ops->ptr_len == 4 ? "AG" : "filesystem");
	return 0;
}

/*
 * Read block `fsb` expected at level `lev` and check its record count.  Returns a held
 * buffer.  The header (magic, CRC, UUID, self, owner, level) is checked by the cache.
 */
/*
 * "AG 3 free-space-by-block btree" (or "inode 1234 ..."): what the block verifier calls
 * the tree in its messages, so that they say which AG or inode is damaged.  Built by hand
 * rather than with snprintf because it runs on every block read.
 */
#define BT_WHATBUF 128u
static const char *bt_what(const struct mfs_btree_cur *cur, char buf[BT_WHATBUF])
{
	const char *kind = bt_ownerkind(cur), *name = cur->ops->name;
	unsigned long long id = bt_ownerid(cur);
	char digits[24];
	size_t n = 0, nd = 0, klen = strlen(kind), nlen = name ? strlen(name) : 0;

	do {
		digits[nd++] = (char)('0' + id % 10);
		id /= 10;
	} while (id);
	if (klen + 1 + nd + 1 + nlen + 1 > BT_WHATBUF)
		return name;
	memcpy(buf, kind, klen);
	n = klen;
	buf[n++] = ' ';
	while (nd)
		buf[n++] = digits[--nd];
	buf[n++] = ' ';
	if (nlen)
		memcpy(buf + n, name, nlen);
	buf[n + nlen] = '\0';
	return buf;
}

static int bt_read(struct mfs_btree_cur *cur, uint64_t fsb, unsigned lev, int isroot,
		   struct mfs_buf **out)
{
	char what[BT_WHATBUF];
	struct mfs_blk_expect exp = {
		.magic = cur->ops->magic, .owner = cur->owner, .level = (int)lev,
		.what = bt_what(cur, what),
	};
	struct mfs_buf *bp;
	unsigned n;
	int err;

	err = (cur->flags & MFS_BTREE_CUR_ONCE) && !cur->tp ?
	      mfs_buf_read_once(cur->fs->bc, fsb, &exp, &bp) :
	      mfs_buf_read(cur->fs->bc, fsb, &exp, &bp);
	if (err)
		return err;
	n = bt_numrecs(bp);
	if (n > bt_maxrecs(cur, lev) || (lev > 0 && n < (isroot ? 2u : 1u))) {
		mfs_buf_put(bp);
		return MFS_CORRUPT("%s %llu %s block %llu: %u %s at level %u (%s %u..%u)",
				   bt_ownerkind(cur), bt_ownerid(cur), cur->ops->name,
				   (unsigned long long)fsb, n, lev ? "keys" : "records", lev,
				   "allowed", lev ? (isroot ? 2u : 1u) : 0u, bt_maxrecs(cur, lev));
	}
	*out = bp;
	return 0;
}

/* Make path[lev] hold block `fsb`, reusing the held buffer when it already does. */
static int bt_path_load(struct mfs_btree_cur *cur, unsigned lev, uint64_t fsb)
{
	struct mfs_buf *old = cur->path[lev].bp, *bp;
	int err;

	if (old && old->blkno == fsb)
		return 0;
	err = bt_read(cur, fsb, lev, lev + 1 == cur->root.levels, &bp);
	if (err)
		return err;
	if (old)
		mfs_buf_put(old);
	cur->path[lev].bp = bp;
	return 0;
}

/* The fsblock of child `idx` of the node held at path[lev], range-checked. */
static int bt_child(struct mfs_btree_cur *cur, unsigned lev, unsigned idx, uint64_t *fsb)
{
	struct mfs_buf *bp = cur->path[lev].bp;

	*fsb = bt_get_ptr(cur, bp, idx);
	return bt_check_fsb(cur, *fsb, "child pointer", bp->blkno);
}

/* Drop held buffers above the tree's height (after a root collapse). */
static void bt_path_trim(struct mfs_btree_cur *cur)
{
	for (unsigned l = cur->root.levels; l < MFS_BTREE_MAXLEVELS; l++) {
		if (cur->path[l].bp) {
			mfs_buf_put(cur->path[l].bp);
			cur->path[l].bp = NULL;
		}
	}
}

/* ---- cursor ---------------------------------------------------------------------------- */

unsigned mfs_btree_maxrecs(const struct mfs_btree_ops *ops, uint32_t blocksize, int leaf)
{
	unsigned per = leaf ? ops->rec_len : (unsigned)ops->key_len + ops->ptr_len;
	unsigned n;

	if (!per || blocksize <= BT_HDR)
		return 0;
	n = (blocksize - BT_HDR) / per;
	return n > 0xffff ? 0xffff : n;
}

unsigned mfs_btree_minrecs(const struct mfs_btree_ops *ops, uint32_t blocksize, int leaf)
{
	return mfs_btree_maxrecs(ops, blocksize, leaf) / 2;
}

void mfs_btree_cur_init(struct mfs_btree_cur *cur, struct mfs_fs *fs, struct mfs_trans *tp,
			const struct mfs_btree_ops *ops, uint64_t owner, uint32_t agno,
			const struct mfs_btree_root *root, void *priv)
{
	memset(cur, 0, sizeof(*cur));
	cur->fs = fs;
	cur->tp = tp;
	cur->ops = ops;
	cur->owner = owner;
	cur->agno = agno;
	if (root)
		cur->root = *root;
	cur->priv = priv;
	cur->maxrecs[0] = mfs_btree_maxrecs(ops, fs->geo.blocksize, 1);
	cur->maxrecs[1] = mfs_btree_maxrecs(ops, fs->geo.blocksize, 0);
}

void mfs_btree_cur_release(struct mfs_btree_cur *cur)
{
	for (unsigned l = 0; l < MFS_BTREE_MAXLEVELS; l++) {
		if (cur->path[l].bp) {
			mfs_buf_put(cur->path[l].bp);
			cur->path[l].bp = NULL;
		}
	}
	cur->valid = 0;
}

/* ---- search ---------------------------------------------------------------------------- */

/*
 * A binary search over a block that is not in the CPU cache waits for one memory access
 * per probe, one after the other.  Asking for every line of the searched area up front
 * lets those fetches overlap, so the search waits about once instead of log2(n) times.
 */
static inline void bt_prefetch(const uint8_t *p, size_t len)
{
	for (size_t off = 0; off < len; off += 64)
		__builtin_prefetch(p + off);
}

/* Last key index <= key in a node with n >= 1 keys; 0 when key is below every key. */
static inline unsigned bt_node_search(const struct mfs_btree_cur *cur, const struct mfs_buf *bp,
				      unsigned n, const void *key)
{
	int (*cmp)(const void *, const void *) = cur->ops->cmp_keys;
	const uint8_t *keys = bt_key(cur, bp, 0);
	unsigned klen = cur->ops->key_len;
	unsigned lo = 0, hi = n;      /* answer in [lo, hi): first key > key is at hi */
	int ptrs_fetched = 0;

	bt_prefetch(keys, (size_t)n * klen);
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;

		/* The child pointer read next lies in another part of the block: once the
		 * answer is narrowed to a few lines' worth of pointers, fetch those too. */
		if (!ptrs_fetched && (hi - lo) * cur->ops->ptr_len <= 4 * 64) {
			bt_prefetch(bt_ptr(cur, bp, lo ? lo - 1 : 0),
				    (size_t)(hi - lo + 1) * cur->ops->ptr_len);
			ptrs_fetched = 1;
		}

		if (cmp(keys + (size_t)mid * klen, key) <= 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo ? lo - 1 : 0;
}

/* First record index with key >= key in a leaf of n records (n when none); *eq set when
 * that record's key equals key. */
static inline unsigned bt_leaf_search(const struct mfs_btree_cur *cur, const struct mfs_buf *bp,
				      unsigned n, const void *key, int *eq)
{
	const struct mfs_btree_ops *ops = cur->ops;
	const uint8_t *recs = bt_rec(cur, bp, 0);
	unsigned rlen = ops->rec_len;
	unsigned lo = 0, hi = n;
	_Alignas(8) uint8_t kbuf[BT_KEYBUF];
	int c;

	bt_prefetch(recs, (size_t)n * rlen);
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;

		ops->rec_key(recs + (size_t)mid * rlen, kbuf);
		c = ops->cmp_keys(kbuf, key);
		if (c < 0) {
			lo = mid + 1;
		} else if (c > 0) {
			hi = mid;
		} else {
			*eq = 1;
			return mid;
		}
	}
	*eq = 0;
	return lo;
}

/*
 * Walk from the root to the leaf that holds `key` (NULL: the leftmost leaf), filling the
 * path.  path[0].idx is the first record >= key (may be numrecs); *eq when it equals key.
 */
static int bt_descend(struct mfs_btree_cur *cur, const void *key, int *eq)
{
	uint64_t fsb = cur->root.fsb;
	unsigned lev;
	int err;

	cur->valid = 0;
	*eq = 0;
	err = bt_check_cur(cur);
	if (err)
		return err;
	for (lev = cur->root.levels - 1;; lev--) {
		struct mfs_buf *bp;
		unsigned n;

		err = bt_path_load(cur, lev, fsb);
		if (err)
			return err;
		bp = cur->path[lev].bp;
		n = bt_numrecs(bp);
		if (lev == 0) {
			cur->path[0].idx = key ? (int)bt_leaf_search(cur, bp, n, key, eq) : 0;
			return 0;
		}
		cur->path[lev].idx = key ? (int)bt_node_search(cur, bp, n, key) : 0;
		err = bt_child(cur, lev, (unsigned)cur->path[lev].idx, &fsb);
		if (err)
			return err;
	}
}

/*
 * Is block fsb one of the tree's?  Without a list of its blocks: fsb, read as a block of
 * this tree at the level its header gives, is the tree's when the descent from the root by
 * its own first key reaches it at that level — the way to the lowest key a block holds
 * leads to that block in a tree whose keys are in order.  A block that is not of this
 * tree's kind and owner, or that the descent does not reach (leaked, or of another tree of
 * the same owner), is not (*found 0).  Damage on the way down is returned as an error.
 */
int mfs_btree_has_block(struct mfs_btree_cur *cur, uint64_t fsb, int *found)
{
	_Alignas(8) uint8_t key[BT_KEYBUF];
	const struct mfs_btree_block *hdr;
	struct mfs_buf *bp;
	uint64_t at = cur->root.fsb;
	unsigned lev, level, n;
	int err;

	*found = 0;
	cur->valid = 0;
	err = bt_check_cur(cur);
	if (err)
		return err;
	if (fsb == cur->root.fsb) {
		*found = 1;
		return 0;
	}
	/* its level, as it says; then read as the tree's block at that level */
	err = mfs_buf_read(cur->fs->bc, fsb, NULL, &bp);
	if (err)
		return err;
	hdr = bp->data;
	level = mfs_get16(hdr->level);
	n = mfs_get32(hdr->hdr.magic) == cur->ops->magic &&
	    mfs_get64(hdr->hdr.owner) == cur->owner;
	mfs_buf_put(bp);
	if (!n || level + 1 >= cur->root.levels)
		return 0;                    /* not of this kind and owner, or not below the root */
	err = bt_read(cur, fsb, level, 0, &bp);
	if (err)
		return mfs_is_corruption(err) ? 0 : err;
	n = bt_numrecs(bp);
	if (n && level == 0)
		cur->ops->rec_key(bt_rec(cur, bp, 0), key);
	else if (n)
		memcpy(key, bt_key(cur, bp, 0), cur->ops->key_len);
	mfs_buf_put(bp);
	if (!n)
		return 0;                    /* an empty block below the root is nobody's */
	for (lev = cur->root.levels - 1; lev > level; lev--) {
		err = bt_path_load(cur, lev, at);
		if (!err)
			err = bt_child(cur, lev, bt_node_search(cur, cur->path[lev].bp,
								bt_numrecs(cur->path[lev].bp), key),
				       &at);
		if (err)
			return err;
	}
	*found = at == fsb;
	return 0;
}

/* Load the path below level `lev` along its current index, taking the first (leftmost)
 * or last (rightmost) entry of each block below it. */
static int bt_descend_edge(struct mfs_btree_cur *cur, unsigned lev, int rightmost)
{
	while (lev > 0) {
		uint64_t fsb;
		unsigned n;
		int err;

		err = bt_child(cur, lev, (unsigned)cur->path[lev].idx, &fsb);
		if (err)
			return err;
		lev--;
		err = bt_path_load(cur, lev, fsb);
		if (err)
			return err;
		n = bt_numrecs(cur->path[lev].bp);
		if (rightmost && n == 0)
			return MFS_CORRUPT("%s %llu %s block %llu: empty leaf below the root",
					   bt_ownerkind(cur), bt_ownerid(cur), cur->ops->name,
					   (unsigned long long)fsb);
		cur->path[lev].idx = rightmost ? (int)n - 1 : 0;
	}
	return 0;
}

static int bt_increment(struct mfs_btree_cur *cur, int *stat)
{
	unsigned lev;
	int err;

	*stat = 0;
	if (!cur->valid)
		return 0;
	if ((unsigned)++cur->path[0].idx < bt_numrecs(cur->path[0].bp)) {
		*stat = 1;
		return 0;
	}
	for (lev = 1; lev < cur->root.levels; lev++)
		if ((unsigned)cur->path[lev].idx + 1 < bt_numrecs(cur->path[lev].bp))
			break;
	if (lev == cur->root.levels) {
		cur->valid = 0;       /* past the last record */
		return 0;
	}
	cur->path[lev].idx++;
	err = bt_descend_edge(cur, lev, 0);
	if (err) {
		cur->valid = 0;
		return err;
	}
	if (bt_numrecs(cur->path[0].bp) == 0) {
		cur->valid = 0;
		return MFS_CORRUPT("%s %llu %s block %llu: empty leaf below the root",
				   bt_ownerkind(cur), bt_ownerid(cur), cur->ops->name,
				   (unsigned long long)cur->path[0].bp->blkno);
	}
	*stat = 1;
	return 0;
}

static int bt_decrement(struct mfs_btree_cur *cur, int *stat)
{
	unsigned lev;
	int err;

	*stat = 0;
	if (!cur->valid)
		return 0;
	if (cur->path[0].idx > 0) {
		cur->path[0].idx--;
		*stat = 1;
		return 0;
	}
	for (lev = 1; lev < cur->root.levels; lev++)
		if (cur->path[lev].idx > 0)
			break;
	if (lev == cur->root.levels) {
		cur->valid = 0;       /* before the first record */
		return 0;
	}
	cur->path[lev].idx--;
	err = bt_descend_edge(cur, lev, 1);
	if (err) {
		cur->valid = 0;
		return err;
	}
	*stat = 1;
	return 0;
}

int mfs_btree_lookup(struct mfs_btree_cur *cur, const void *key, enum mfs_btree_lookup how,
		     int *stat)
{
	unsigned n;
	int eq, err;

	*stat = 0;
	err = bt_descend(cur, key, &eq);
	if (err)
		return err;
	n = bt_numrecs(cur->path[0].bp);
	switch (how) {
	case MFS_LOOKUP_EQ:
		cur->valid = *stat = eq;
		return 0;
	case MFS_LOOKUP_GE:
		if ((unsigned)cur->path[0].idx < n) {
			cur->valid = *stat = 1;
			return 0;
		}
		if (n == 0)
			return 0;
		/* Past this leaf's last record: the answer is the next leaf's first. */
		cur->path[0].idx = (int)n - 1;
		cur->valid = 1;
		return bt_increment(cur, stat);
	case MFS_LOOKUP_LE:
		if (eq) {
			cur->valid = *stat = 1;
			return 0;
		}
		if (cur->path[0].idx > 0) {
			cur->path[0].idx--;
			cur->valid = *stat = 1;
			return 0;
		}
		if (n == 0)
			return 0;
		cur->valid = 1;
		return bt_decrement(cur, stat);
	}
	return -EINVAL;
}

int mfs_btree_get(struct mfs_btree_cur *cur, void *rec, int *stat)
{
	*stat = 0;
	if (!cur->valid || !cur->path[0].bp ||
	    (unsigned)cur->path[0].idx >= bt_numrecs(cur->path[0].bp))
		return 0;
	memcpy(rec, bt_rec(cur, cur->path[0].bp, (unsigned)cur->path[0].idx),
	       cur->ops->rec_len);
	*stat = 1;
	return 0;
}

int mfs_btree_next(struct mfs_btree_cur *cur, int *stat)
{
	return bt_increment(cur, stat);
}

int mfs_btree_prev(struct mfs_btree_cur *cur, int *stat)
{
	return bt_decrement(cur, stat);
}

/* ---- changing blocks ------------------------------------------------------------------- */

static int bt_modify(struct mfs_btree_cur *cur, struct mfs_buf *bp)
{
	return mfs_trans_modify(cur->tp, bp);
}

/*
 * Move `count` entries of level `lev` from src[sidx..] to dst[didx..] (memmove: the two
 * may be the same block and overlap).
 */
static void bt_move(const struct mfs_btree_cur *cur, unsigned lev, struct mfs_buf *dst,
		    unsigned didx, const struct mfs_buf *src, unsigned sidx, unsigned count)
{
	if (!count)
		return;
	if (lev == 0) {
		memmove(bt_rec(cur, dst, didx), bt_rec(cur, src, sidx),
			(size_t)count * cur->ops->rec_len);
	} else {
		memmove(bt_key(cur, dst, didx), bt_key(cur, src, sidx),
			(size_t)count * cur->ops->key_len);
		memmove(bt_ptr(cur, dst, didx), bt_ptr(cur, src, sidx),
			(size_t)count * cur->ops->ptr_len);
	}
}

/* An entry to place in a block: a record (leaf), or a key and child pointer (node). */
struct bt_entry {
	const void *rec;
	_Alignas(8) uint8_t key[BT_KEYBUF];
	uint64_t ptr;
};

static void bt_put_entry(const struct mfs_btree_cur *cur, unsigned lev, struct mfs_buf *bp,
			 unsigned idx, const struct bt_entry *e)
{
	if (lev == 0) {
		memcpy(bt_rec(cur, bp, idx), e->rec, cur->ops->rec_len);
	} else {
		memcpy(bt_key(cur, bp, idx), e->key, cur->ops->key_len);
		bt_set_ptr(cur, bp, idx, e->ptr);
	}
}

/*
 * The block at path[lev] may have a new first key: copy it into the parents, going up as
 * long as the changed entry is the first of its block.
 */
static int bt_fix_keys(struct mfs_btree_cur *cur, unsigned lev)
{
	_Alignas(8) uint8_t kbuf[BT_KEYBUF];
	int err;

	for (; lev + 1 < cur->root.levels; lev++) {
		struct mfs_buf *bp = cur->path[lev].bp, *pp = cur->path[lev + 1].bp;
		unsigned pidx = (unsigned)cur->path[lev + 1].idx;
		const void *key;

		if (bt_numrecs(bp) == 0)
			return 0;
		key = bt_first_key(cur, bp, lev, kbuf);
		if (cur->ops->cmp_keys(key, bt_key(cur, pp, pidx)) == 0)
			return 0;
		err = bt_modify(cur, pp);
		if (err)
			return err;
		memmove(bt_key(cur, pp, pidx), key, cur->ops->key_len);
		if (pidx != 0)
			return 0;
	}
	return 0;
}

/* A fresh, empty, joined block for level `lev`; the cursor gets no reference. */
static int bt_new_block(struct mfs_btree_cur *cur, unsigned lev, struct mfs_buf **out)
{
	struct mfs_buf *bp;
	uint64_t fsb;
	int err;

	if (!cur->ops->alloc_block)
		return -EOPNOTSUPP;
	err = cur->ops->alloc_block(cur, &fsb);
	if (err)
		return err;
	err = bt_check_fsb(cur, fsb, "newly allocated block", fsb);
	if (err)
		return err;
	err = mfs_trans_get_new(cur->tp, fsb, 1, &bp);
	if (err)
		return err;
	mfs_blk_init(bp->data, cur->fs->geo.blocksize, cur->ops->magic, fsb, cur->owner,
		     cur->fs->geo.uuid);
	mfs_put16(bt_blk(bp)->level, (uint16_t)lev);
	*out = bp;
	return 0;
}

static int bt_free_block(struct mfs_btree_cur *cur, uint64_t fsb)
{
	int err;

	if (!cur->ops->free_block)
		return -EOPNOTSUPP;
	err = cur->ops->free_block(cur, fsb);
	if (err)
		return err;
	return mfs_trans_forget(cur->tp, fsb);
}

static int bt_set_root(struct mfs_btree_cur *cur)
{
	return cur->ops->set_root ? cur->ops->set_root(cur) : 0;
}

static int bt_writable(const struct mfs_btree_cur *cur)
{
	if (!cur->tp) {
		mfs_log(MFS_LOG_ERR, "%s %llu %s: change attempted through a read-only cursor",
			bt_ownerkind(cur), bt_ownerid(cur), cur->ops->name);
		return -EROFS;
	}
	return 0;
}

/* ---- insert ------------------------------------------------------------------------------ */

/*
 * Place entry `e` at index `idx` of the block at path[lev], splitting full blocks on the
 * way up.  A split moves the upper half of the block into a new right sibling and inserts
 * (first key of the sibling, sibling) into the parent just after the block's own entry;
 * when the root splits, a new root above both halves adds a level.
 */
static int bt_insert_at(struct mfs_btree_cur *cur, unsigned lev, unsigned idx,
			struct bt_entry *e)
{
	_Alignas(8) uint8_t kbuf[BT_KEYBUF];
	int err;

	for (;;) {
		struct mfs_buf *bp = cur->path[lev].bp, *rbp, *nroot;
		unsigned n = bt_numrecs(bp), max = bt_maxrecs(cur, lev), m;

		err = bt_modify(cur, bp);
		if (err)
			return err;
		if (n < max) {
			bt_move(cur, lev, bp, idx + 1, bp, idx, n - idx);
			bt_put_entry(cur, lev, bp, idx, e);
			bt_set_numrecs(bp, n + 1);
			return idx == 0 ? bt_fix_keys(cur, lev) : 0;
		}

		/* Split: entries [m, n) go to the new right sibling. */
		err = bt_new_block(cur, lev, &rbp);
		if (err)
			return err;
		m = n / 2;
		bt_move(cur, lev, rbp, 0, bp, m, n - m);
		bt_set_numrecs(rbp, n - m);
		bt_set_numrecs(bp, m);
		if (idx <= m) {
			bt_move(cur, lev, bp, idx + 1, bp, idx, m - idx);
			bt_put_entry(cur, lev, bp, idx, e);
			bt_set_numrecs(bp, m + 1);
			if (idx == 0) {
				err = bt_fix_keys(cur, lev);
				if (err)
					return err;
			}
		} else {
			unsigned ridx = idx - m;

			bt_move(cur, lev, rbp, ridx + 1, rbp, ridx, n - m - ridx);
			bt_put_entry(cur, lev, rbp, ridx, e);
			bt_set_numrecs(rbp, n - m + 1);
		}

		/* The entry for the new sibling, to insert one level up. */
		memcpy(e->key, bt_first_key(cur, rbp, lev, kbuf), cur->ops->key_len);
		e->ptr = rbp->blkno;
		e->rec = NULL;

		if (lev + 1 < cur->root.levels) {
			idx = (unsigned)cur->path[lev + 1].idx + 1;
			lev++;
			continue;
		}

		/* The root split: a new root above the two halves. */
		if (cur->root.levels >= MFS_BTREE_MAXLEVELS) {
			mfs_log(MFS_LOG_ERR, "%s %llu %s: tree would exceed %u levels",
				bt_ownerkind(cur), bt_ownerid(cur), cur->ops->name,
				MFS_BTREE_MAXLEVELS);
			return -EFBIG;
		}
		err = bt_new_block(cur, lev + 1, &nroot);
		if (err)
			return err;
		memcpy(bt_key(cur, nroot, 0), bt_first_key(cur, bp, lev, kbuf), cur->ops->key_len);
		bt_set_ptr(cur, nroot, 0, bp->blkno);
		memcpy(bt_key(cur, nroot, 1), e->key, cur->ops->key_len);
		bt_set_ptr(cur, nroot, 1, e->ptr);
		bt_set_numrecs(nroot, 2);
		mfs_buf_hold(nroot);
		if (cur->path[lev + 1].bp)
			mfs_buf_put(cur->path[lev + 1].bp);
		cur->path[lev + 1].bp = nroot;
		cur->path[lev + 1].idx = 0;
		cur->root.fsb = nroot->blkno;
		cur->root.levels++;
		return bt_set_root(cur);
	}
}

int mfs_btree_insert(struct mfs_btree_cur *cur, const void *rec)
{
	struct bt_entry e;
	_Alignas(8) uint8_t key[BT_KEYBUF];
	int eq, err;

	err = bt_writable(cur);
	if (err)
		return err;
	if (cur->ops->key_len > BT_KEYBUF)
		return -EINVAL;
	cur->ops->rec_key(rec, key);
	err = bt_descend(cur, key, &eq);
	if (err)
		return err;
	if (eq)
		return -EEXIST;
	e.rec = rec;
	e.ptr = 0;
	err = bt_insert_at(cur, 0, (unsigned)cur->path[0].idx, &e);
	cur->valid = 0;
	return err;
}

/* ---- update ------------------------------------------------------------------------------ */

/*
 * The cursor is on the first record of its leaf: the key of the record before it (the
 * last of the previous leaf) in `key`, *found = 0 when it is the first of the tree.  Steps
 * the cursor back and forth, so it ends where it began (the leaf buffer may be reloaded).
 */
static int bt_prev_leaf_key(struct mfs_btree_cur *cur, void *key, int *found)
{
	unsigned l;
	int stat, err;

	*found = 0;
	for (l = 1; l < cur->root.levels; l++)
		if (cur->path[l].idx > 0)
			break;
	if (l >= cur->root.levels)
		return 0;            /* the leftmost leaf */
	err = bt_decrement(cur, &stat);
	if (!err && stat) {
		cur->ops->rec_key(bt_rec(cur, cur->path[0].bp, (unsigned)cur->path[0].idx), key);
		*found = 1;
		err = bt_increment(cur, &stat);
	}
	if (!err && !stat) {
		cur->valid = 0;
		err = MFS_CORRUPT("%s %llu %s: a node has an entry left of the cursor but no "
				  "record precedes it", bt_ownerkind(cur), bt_ownerid(cur),
				  cur->ops->name);
	}
	return err;
}

int mfs_btree_update(struct mfs_btree_cur *cur, const void *rec)
{
	const struct mfs_btree_ops *ops = cur->ops;
	_Alignas(8) uint8_t key[BT_KEYBUF], nkey[BT_KEYBUF];
	struct mfs_buf *bp = cur->path[0].bp;
	unsigned idx = (unsigned)cur->path[0].idx, n;
	int found, err;

	err = bt_writable(cur);
	if (err)
		return err;
	if (!cur->valid || !bp || idx >= (n = bt_numrecs(bp)))
		return -EINVAL;
	ops->rec_key(rec, key);
	if (idx > 0) {
		ops->rec_key(bt_rec(cur, bp, idx - 1), nkey);
		if (ops->cmp_keys(nkey, key) >= 0)
			return -EINVAL;
	} else {
		err = bt_prev_leaf_key(cur, nkey, &found);
		if (err)
			return err;
		if (found && ops->cmp_keys(nkey, key) >= 0)
			return -EINVAL;
		bp = cur->path[0].bp;
	}
	if (idx + 1 < n) {
		ops->rec_key(bt_rec(cur, bp, idx + 1), nkey);
		if (ops->cmp_keys(key, nkey) >= 0)
			return -EINVAL;
	} else {
		/* The next record is the first of the next leaf, whose key the lowest ancestor
		 * with an entry to the right holds as that entry's key. */
		for (unsigned l = 1; l < cur->root.levels; l++) {
			struct mfs_buf *pp = cur->path[l].bp;
			unsigned pi = (unsigned)cur->path[l].idx;

			if (pi + 1 < bt_numrecs(pp)) {
				if (ops->cmp_keys(key, bt_key(cur, pp, pi + 1)) >= 0)
					return -EINVAL;
				break;
			}
		}
	}
	err = bt_modify(cur, bp);
	if (err)
		return err;
	memcpy(bt_rec(cur, bp, idx), rec, ops->rec_len);
	return idx == 0 ? bt_fix_keys(cur, 0) : 0;
}

/* ---- delete ------------------------------------------------------------------------------ */

/*
 * The block at path[lev] fell under minrecs.  Take one entry from a sibling that can spare
 * one (right first, then left); otherwise merge with a sibling and return, in *pidx_del,
 * the parent entry that must go (the caller continues one level up).  Returns 1 through
 * *merged when a merge happened.
 */
static int bt_rebalance(struct mfs_btree_cur *cur, unsigned lev, int *merged)
{
	struct mfs_buf *bp = cur->path[lev].bp, *pp = cur->path[lev + 1].bp;
	struct mfs_buf *rbp = NULL, *lbp = NULL;
	unsigned pidx = (unsigned)cur->path[lev + 1].idx, pn = bt_numrecs(pp);
	unsigned n = bt_numrecs(bp), min = bt_minrecs(cur, lev);
	_Alignas(8) uint8_t kbuf[BT_KEYBUF];
	uint64_t fsb;
	int err;

	*merged = 0;
	if (pidx + 1 < pn) {
		err = bt_child(cur, lev + 1, pidx + 1, &fsb);
		if (!err)
			err = bt_read(cur, fsb, lev, 0, &rbp);
		if (err)
			return err;
		if (bt_numrecs(rbp) > min) {
			unsigned rn = bt_numrecs(rbp);

			/* Borrow the right sibling's first entry. */
			err = bt_modify(cur, bp);
			if (!err)
				err = bt_modify(cur, rbp);
			if (!err)
				err = bt_modify(cur, pp);
			if (err)
				goto out;
			bt_move(cur, lev, bp, n, rbp, 0, 1);
			bt_set_numrecs(bp, n + 1);
			bt_move(cur, lev, rbp, 0, rbp, 1, rn - 1);
			bt_set_numrecs(rbp, rn - 1);
			memcpy(bt_key(cur, pp, pidx + 1), bt_first_key(cur, rbp, lev, kbuf),
			       cur->ops->key_len);
			err = n == 0 ? bt_fix_keys(cur, lev) : 0;
			goto out;
		}
	}
	if (pidx > 0) {
		err = bt_child(cur, lev + 1, pidx - 1, &fsb);
		if (!err)
			err = bt_read(cur, fsb, lev, 0, &lbp);
		if (err)
			goto out;
		if (bt_numrecs(lbp) > min) {
			unsigned ln = bt_numrecs(lbp);

			/* Borrow the left sibling's last entry. */
			err = bt_modify(cur, bp);
			if (!err)
				err = bt_modify(cur, lbp);
			if (err)
				goto out;
			bt_move(cur, lev, bp, 1, bp, 0, n);
			bt_move(cur, lev, bp, 0, lbp, ln - 1, 1);
			bt_set_numrecs(bp, n + 1);
			bt_set_numrecs(lbp, ln - 1);
			err = bt_fix_keys(cur, lev);
			goto out;
		}
	}
	if (rbp) {
		unsigned rn = bt_numrecs(rbp);

		/* Merge the right sibling into this block; its parent entry goes. */
		err = bt_modify(cur, bp);
		if (err)
			goto out;
		bt_move(cur, lev, bp, n, rbp, 0, rn);
		bt_set_numrecs(bp, n + rn);
		if (n == 0) {
			err = bt_fix_keys(cur, lev);
			if (err)
				goto out;
		}
		fsb = rbp->blkno;
		mfs_buf_put(rbp);
		rbp = NULL;
		err = bt_free_block(cur, fsb);
		if (err)
			goto out;
		cur->path[lev + 1].idx = (int)pidx + 1;
		*merged = 1;
	} else if (lbp) {
		unsigned ln = bt_numrecs(lbp);

		/* Merge this block into the left sibling; this block's parent entry goes. */
		err = bt_modify(cur, lbp);
		if (err)
			goto out;
		bt_move(cur, lev, lbp, ln, bp, 0, n);
		bt_set_numrecs(lbp, ln + n);
		fsb = bp->blkno;
		mfs_buf_put(bp);
		cur->path[lev].bp = lbp;
		lbp = NULL;
		err = bt_free_block(cur, fsb);
		if (err)
			goto out;
		cur->path[lev + 1].idx = (int)pidx;
		*merged = 1;
	}
	/* else: an only child under a non-root node cannot be; nothing to do. */
	err = 0;
out:
	if (rbp)
		mfs_buf_put(rbp);
	if (lbp)
		mfs_buf_put(lbp);
	return err;
}

/* A root node with a single child hands the root over to that child. */
static int bt_collapse_root(struct mfs_btree_cur *cur)
{
	int err;

	while (cur->root.levels > 1) {
		unsigned top = cur->root.levels - 1;
		struct mfs_buf *rp = cur->path[top].bp;
		uint64_t child, old;

		if (bt_numrecs(rp) != 1)
			return 0;
		cur->path[top].idx = 0;
		err = bt_child(cur, top, 0, &child);
		if (err)
			return err;
		old = rp->blkno;
		/* Load the child as it will be read once it is the root (>= 2 entries when a
		 * node; anything when a leaf). */
		cur->root.levels--;
		err = bt_path_load(cur, top - 1, child);
		if (err) {
			cur->root.levels++;
			return err;
		}
		cur->root.fsb = child;
		bt_path_trim(cur);
		err = bt_free_block(cur, old);
		if (!err)
			err = bt_set_root(cur);
		if (err)
			return err;
	}
	return 0;
}

int mfs_btree_delete(struct mfs_btree_cur *cur)
{
	unsigned lev = 0;
	int err, merged;

	err = bt_writable(cur);
	if (err)
		return err;
	if (!cur->valid || !cur->path[0].bp ||
	    (unsigned)cur->path[0].idx >= bt_numrecs(cur->path[0].bp))
		return -EINVAL;
	cur->valid = 0;
	for (;;) {
		struct mfs_buf *bp = cur->path[lev].bp;
		unsigned idx = (unsigned)cur->path[lev].idx, n = bt_numrecs(bp);

		err = bt_modify(cur, bp);
		if (err)
			return err;
		bt_move(cur, lev, bp, idx, bp, idx + 1, n - idx - 1);
		bt_set_numrecs(bp, --n);
		if (lev + 1 == cur->root.levels)
			break;
		if (idx == 0 && n > 0) {
			err = bt_fix_keys(cur, lev);
			if (err)
				return err;
		}
		if (n >= bt_minrecs(cur, lev))
			return 0;
		err = bt_rebalance(cur, lev, &merged);
		if (err || !merged)
			return err;
		lev++;
	}
	return bt_collapse_root(cur);
}

/* ---- range query ------------------------------------------------------------------------ */

int mfs_btree_query_range(struct mfs_btree_cur *cur, const void *lo, const void *hi,
			  mfs_btree_rec_fn fn, void *priv)
{
	const struct mfs_btree_ops *ops = cur->ops;
	_Alignas(8) uint8_t kbuf[BT_KEYBUF];
	int stat, err;

	if (lo) {
		err = mfs_btree_lookup(cur, lo, MFS_LOOKUP_GE, &stat);
	} else {
		int eq;

		err = bt_descend(cur, NULL, &eq);
		stat = !err && bt_numrecs(cur->path[0].bp) > 0;
		cur->valid = stat;
	}
	while (!err && stat) {
		struct mfs_buf *bp = cur->path[0].bp;
		unsigned n = bt_numrecs(bp);

		/* Every remaining record of this leaf, then on to the next leaf. */
		for (unsigned i = (unsigned)cur->path[0].idx; i < n; i++) {
			const uint8_t *rec = bt_rec(cur, bp, i);
			int ret;

			if (hi) {
				ops->rec_key(rec, kbuf);
				if (ops->cmp_keys(kbuf, hi) > 0) {
					cur->valid = 0;
					return 0;
				}
			}
			cur->path[0].idx = (int)i;
			ret = fn(cur, rec, priv);
			if (ret) {
				cur->valid = 0;
				return ret;
			}
		}
		cur->path[0].idx = (int)n - 1;
		err = bt_increment(cur, &stat);
	}
	cur->valid = 0;
	return err;
}

/* ---- walking every block: visit and verify ------------------------------------------- */
/*
 * Three walks share one walker (bt_walk), depth first, children in order:
 *
 *   visit (mfs_btree_visit_blocks): no check beyond each block's own (bt_read), so it keeps
 *     a set of the blocks seen to stop at a block reached twice (a shared child or a loop);
 *
 *   verify (mfs_btree_verify*): every check of bt_check_block, and NO set of the blocks
 *     seen, whose memory would grow with the tree (2-4 MiB for a reverse map of 24M-32M
 *     records).  The checks find a block reached twice on their own:
 *
 *     - a block is read at the level its parent implies (the parent's minus one) and its
 *       header must say that level (bt_read); a block has one level, so it is reached
 *       every time at the same level, and never below itself: an entry naming an ancestor
 *       or the block itself (a cycle) fails this check at once.  For the same reason the
 *       root, at the top level, is nobody's child.
 *     - Every block but the root has an entry (bt_read refuses a node with none,
 *       bt_check_block a leaf with none).  So when a block B is reached a second time,
 *       the walk goes down B's first entries to a leaf L (B itself if it is a leaf), whose
 *       first record r it checks against the last record seen.  The first time it went
 *       the same way (the same blocks: the caller's lock keeps the tree still) and
 *       checked r and the rest of L; every record checked since is above them.  So the
 *       last record seen is >= r and the order check fails at L: the walk never goes
 *       past a second arrival by more than the levels - 1 nodes down to L, never calls fn
 *       on a leaf twice, and reads each block once plus that path.
 *
 *     Nothing of the keys is used but a strict order across the whole walk: equal keys are
 *     refused (records never share a key in any mendfs tree: the by-length tree's key is
 *     (length, start)), and a child whose records lie outside its parent's interval is out
 *     of order with its neighbours the same way.  (A tree that allowed equal keys would
 *     break the argument — a shared leaf of equal records would pass — and need the set.)
 *     Against a device that changes under the walk, more blocks than the pointers can
 *     address (the AG, the filesystem) is corruption too.
 *
 *   trusted (mfs_btree_visit_trusted, mfs_btree_count_trusted): a tree verified under the
 *     lock the caller still holds: nodes are read, leaves only named by their parents
 *     (not read), no set kept.  Damage since the check is not looked for beyond each
 *     node's own verifier and bounds (bt_read), but nothing loops: the level falls at each
 *     step down, and more than the caller's bound of blocks stops the walk.
 */

/* A set of block numbers, to notice a block reached twice (visit only). */
struct bt_seen {
	uint64_t *slot;           /* open addressing; 0 is free, values stored + 1 */
	size_t mask, count;
};

static int seen_add(struct bt_seen *s, uint64_t fsb)
{
	size_t i;

	if ((s->count + 1) * 2 > s->mask + 1) {
		size_t nsz = s->mask ? (s->mask + 1) * 2 : 1024;
		uint64_t *ns = mfs_calloc(nsz, sizeof(*ns));

		if (!ns)
			return -ENOMEM;
		for (size_t j = 0; s->mask && j <= s->mask; j++) {
			if (!s->slot[j])
				continue;
			i = (size_t)(s->slot[j] * 0x9e3779b97f4a7c15ull >> 17) & (nsz - 1);
			while (ns[i])
				i = (i + 1) & (nsz - 1);
			ns[i] = s->slot[j];
		}
		free(s->slot);
		s->slot = ns;
		s->mask = nsz - 1;
	}
	i = (size_t)((fsb + 1) * 0x9e3779b97f4a7c15ull >> 17) & s->mask;
	while (s->slot[i]) {
		if (s->slot[i] == fsb + 1)
			return 1;
		i = (i + 1) & s->mask;
	}
	s->slot[i] = fsb + 1;
	s->count++;
	return 0;
}

struct bt_walk {
	int verify;
	int trusted;                /* leaves named, not read; no seen-set (visit_trusted) */
	uint64_t max;               /* more blocks than this is corruption (bt_walk sets it but
				     * for a trusted walk, which has the caller's) */
	mfs_btree_blk_fn fn;
	void *priv;
	uint64_t nrecs, nblocks;
	int have_last;
	_Alignas(8) uint8_t last[BT_KEYBUF];     /* last leaf key seen, for the global order check */
	struct bt_seen seen;
};

/* Checks of one block on its own and against the key its parent gave it. */
static int bt_check_block(struct mfs_btree_cur *cur, struct bt_walk *w, struct mfs_buf *bp,
			  unsigned lev, int isroot, const void *pkey)
{
	const struct mfs_btree_ops *ops = cur->ops;
	unsigned n = bt_numrecs(bp);
	unsigned long long blk = (unsigned long long)bp->blkno;
	_Alignas(8) uint8_t kbuf[BT_KEYBUF];
	int err;

	if (!isroot && (n < bt_minrecs(cur, lev) || n == 0))
		return MFS_CORRUPT("%s %llu %s block %llu: %u entries at level %u, fewer than "
				   "the minimum %u", bt_ownerkind(cur), bt_ownerid(cur),
				   ops->name, blk, n, lev, bt_minrecs(cur, lev) ? bt_minrecs(cur, lev) : 1);
	if (pkey && ops->cmp_keys(pkey, bt_first_key(cur, bp, lev, kbuf)) != 0)
		return MFS_CORRUPT("%s %llu %s block %llu: first key differs from the key "
				   "its parent holds for it", bt_ownerkind(cur), bt_ownerid(cur),
				   ops->name, blk);
	if (lev > 0) {
		for (unsigned i = 1; i < n; i++)
			if (ops->cmp_keys(bt_key(cur, bp, i - 1), bt_key(cur, bp, i)) >= 0)
				return MFS_CORRUPT("%s %llu %s block %llu: node keys %u and %u out "
						   "of order", bt_ownerkind(cur), bt_ownerid(cur),
						   ops->name, blk, i - 1, i);
		return 0;
	}
	for (unsigned i = 0; i < n; i++) {
		const uint8_t *rec = bt_rec(cur, bp, i);

		ops->rec_key(rec, kbuf);
		if (w->have_last && ops->cmp_keys(w->last, kbuf) >= 0)
			return MFS_CORRUPT("%s %llu %s block %llu: record %u out of order (its key "
					   "is not above the previous record's%s)", bt_ownerkind(cur),
					   bt_ownerid(cur), ops->name, blk, i, i ? "" :
					   ", the last of the leaf before: leaves overlap, or this "
					   "one is reached twice");
		memcpy(w->last, kbuf, ops->key_len);
		w->have_last = 1;
		if (ops->check_rec) {
			err = ops->check_rec(cur, rec);
			if (err)
				return err;
		}
	}
	w->nrecs += n;
	return 0;
}

/* One more block in the walk: past the bound, corruption. */
static int bt_walk_count(struct mfs_btree_cur *cur, struct bt_walk *w, uint64_t fsb,
			 unsigned lev)
{
	if (++w->nblocks <= w->max)
		return 0;
	return MFS_CORRUPT("%s %llu %s: more than %llu blocks (block %llu at level %u: a "
			   "block reached twice?)", bt_ownerkind(cur), bt_ownerid(cur),
			   cur->ops->name, (unsigned long long)w->max, (unsigned long long)fsb,
			   lev);
}

/* Trusted walk: the leaves under the level-1 node held at path[1], named, not read. */
static int bt_walk_leaves(struct mfs_btree_cur *cur, struct bt_walk *w)
{
	unsigned n = bt_numrecs(cur->path[1].bp);
	uint64_t fsb;
	int err = 0;

	for (unsigned i = 0; i < n && !err; i++) {
		err = bt_child(cur, 1, i, &fsb);
		if (!err)
			err = bt_walk_count(cur, w, fsb, 0);
		if (!err && w->fn)
			err = w->fn(cur, fsb, 0, w->priv);
	}
	return err;
}

/* Take block `fsb` at level `lev` into the walk: seen-set, read, checks, callback. */
static int bt_walk_enter(struct mfs_btree_cur *cur, struct bt_walk *w, uint64_t fsb,
			 unsigned lev, const void *pkey)
{
	int isroot = lev + 1 == cur->root.levels;
	struct mfs_buf *bp;
	int err;

	err = w->trusted || w->verify ? 0 : seen_add(&w->seen, fsb);
	if (err < 0)
		return err;
	if (err > 0)
		return MFS_CORRUPT("%s %llu %s block %llu: reached twice (shared child or loop)",
				   bt_ownerkind(cur), bt_ownerid(cur), cur->ops->name,
				   (unsigned long long)fsb);
	err = bt_read(cur, fsb, lev, isroot, &bp);
	if (err)
		return err;
	if (cur->path[lev].bp)
		mfs_buf_put(cur->path[lev].bp);
	cur->path[lev].bp = bp;
	cur->path[lev].idx = 0;
	err = bt_walk_count(cur, w, fsb, lev);
	if (!err && w->verify)
		err = bt_check_block(cur, w, bp, lev, isroot, pkey);
	if (!err && w->fn)
		err = w->fn(cur, fsb, lev, w->priv);
	if (!err && w->trusted && lev == 1)
		err = bt_walk_leaves(cur, w);
	return err;
}

/* Depth-first, pre-order walk of every block, using the cursor's path as the stack. */
static int bt_walk(struct mfs_btree_cur *cur, struct bt_walk *w)
{
	unsigned lev;
	int err;

	cur->valid = 0;
	err = bt_check_cur(cur);
	if (err)
		return err;
	if (!w->trusted)        /* trusted: the caller's bound; else what pointers address */
		w->max = cur->ops->ptr_len == 4 ? mfs_ag_length(&cur->fs->geo, cur->agno) :
						  cur->fs->geo.dblocks;
	lev = cur->root.levels - 1;
	err = bt_walk_enter(cur, w, cur->root.fsb, lev, NULL);
	while (!err) {
		struct mfs_buf *bp = cur->path[lev].bp;
		uint64_t fsb;

		if (lev == 0 || (w->trusted && lev == 1) ||
		    (unsigned)cur->path[lev].idx >= bt_numrecs(bp)) {
			if (++lev == cur->root.levels)
				break;
			cur->path[lev].idx++;
			continue;
		}
		err = bt_child(cur, lev, (unsigned)cur->path[lev].idx, &fsb);
		if (err)
			break;
		err = bt_walk_enter(cur, w, fsb, lev - 1,
				    w->verify ? bt_key(cur, bp, (unsigned)cur->path[lev].idx) : NULL);
		lev--;
	}
	free(w->seen.slot);
	w->seen.slot = NULL;
	return err;
}

int mfs_btree_visit_blocks(struct mfs_btree_cur *cur, mfs_btree_blk_fn fn, void *priv)
{
	struct bt_walk w;

	memset(&w, 0, sizeof(w));
	w.fn = fn;
	w.priv = priv;
	return bt_walk(cur, &w);
}

/*
 * A tree checked before: in a tree (verified: no block reached twice) each block but the
 * root is one node entry's child, so naming every node entry's child lists every block
 * once without reading the leaves or keeping a set of the blocks seen.
 */
int mfs_btree_visit_trusted(struct mfs_btree_cur *cur, uint64_t max, mfs_btree_blk_fn fn,
			    void *priv, uint64_t *nblocks)
{
	struct bt_walk w;
	int err;

	memset(&w, 0, sizeof(w));
	w.trusted = 1;
	w.max = max;
	w.fn = fn;
	w.priv = priv;
	err = bt_walk(cur, &w);
	if (nblocks)
		*nblocks = err ? 0 : w.nblocks;
	return err;
}

int mfs_btree_count_trusted(struct mfs_btree_cur *cur, uint64_t max, uint64_t *nblocks)
{
	return mfs_btree_visit_trusted(cur, max, NULL, NULL, nblocks);
}

const void *mfs_btree_leaf_recs(const struct mfs_btree_cur *cur, unsigned *n)
{
	const struct mfs_buf *bp = cur->path[0].bp;

	*n = bt_numrecs(bp);
	return bt_rec(cur, bp, 0);
}

int mfs_btree_verify_visit(struct mfs_btree_cur *cur, mfs_btree_blk_fn fn, void *priv,
			   uint64_t *nrecs, uint64_t *nblocks)
{
	struct bt_walk w;
	int err;

	memset(&w, 0, sizeof(w));
	w.verify = 1;
	w.fn = fn;
	w.priv = priv;
	err = bt_walk(cur, &w);
	if (nrecs)
		*nrecs = w.nrecs;
	if (nblocks)
		*nblocks = w.nblocks;
	return err;
}

int mfs_btree_verify(struct mfs_btree_cur *cur, uint64_t *nrecs, uint64_t *nblocks)
{
	return mfs_btree_verify_visit(cur, NULL, NULL, nrecs, nblocks);
}

int mfs_btree_lookup_get(struct mfs_btree_cur *cur, const void *key, enum mfs_btree_lookup how,
			 void *rec, int *stat)
{
	int err = mfs_btree_lookup(cur, key, how, stat);

	if (!err && *stat)
		err = mfs_btree_get(cur, rec, stat);
	return err;
}
