/*
 * ag_btrees.c — the four btrees of an allocation group as instances of the generic engine:
 * free space by block number and by length, inode chunks, and the reverse map.  Each tree
 * is an ops table (record/key layout, key order, record sanity, where blocks come from,
 * where the root lives) plus mfs_ag_cur_init(), which opens a cursor on one of them from the
 * AG header.
 *
 * Where tree blocks come from:
 *   - by-block, by-length, reverse map: the AG free list (agfl.c).  A split inside an
 *     allocation therefore never recurses into the trees being changed; the allocator
 *     (alloc.c) keeps the AGFL stocked before every operation.  These blocks are owned by
 *     MFS_OWN_AG in the reverse map (the AGFL stock is too, so taking a block from the AGFL
 *     changes no reverse-map record), and the AG header's btreeblks counts them: blocks of
 *     the three trees beyond their roots.
 *   - inode btree: the ordinary allocator, near the old root, in the same AG, owned by
 *     MFS_OWN_INOBT; freed with mfs_free_extent().
 *
 * The cursor's priv is the AG header buffer (held by the caller for the cursor's life).
 */
#include "ag.h"
#include "alloc.h"
#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "log.h"
#include "trans.h"

#include <stddef.h>
#include <string.h>

/* ---- key comparison ----------------------------------------------------------------------- */
static int cmp_u32(uint32_t a, uint32_t b)
{
	return a < b ? -1 : a > b;
}

/* By block: records never overlap, so the start block alone orders them.  The key is a
 * struct mfs_alloc_rec whose blockcount is always 0, so that a node key's bytes depend only
 * on the start block of its subtree's first record. */
static int bno_cmp_keys(const void *k1, const void *k2)
{
	const struct mfs_alloc_rec *a = k1, *b = k2;

	return cmp_u32(mfs_get32(a->startblock), mfs_get32(b->startblock));
}

static void bno_rec_key(const void *rec, void *key)
{
	const struct mfs_alloc_rec *r = rec;
	struct mfs_alloc_rec *k = key;

	k->startblock = r->startblock;
	k->blockcount = 0;
}

/* By length: (blockcount, startblock), so equal lengths are ordered by position. */
static int cnt_cmp_keys(const void *k1, const void *k2)
{
	const struct mfs_alloc_rec *a = k1, *b = k2;
	int c = cmp_u32(mfs_get32(a->blockcount), mfs_get32(b->blockcount));

	return c ? c : cmp_u32(mfs_get32(a->startblock), mfs_get32(b->startblock));
}

static void cnt_rec_key(const void *rec, void *key)
{
	memcpy(key, rec, sizeof(struct mfs_alloc_rec));
}

static int ino_cmp_keys(const void *k1, const void *k2)
{
	const struct mfs_inobt_key *a = k1, *b = k2;

	return cmp_u32(mfs_get32(a->startino), mfs_get32(b->startino));
}

static void ino_rec_key(const void *rec, void *key)
{
	const struct mfs_inobt_rec *r = rec;
	struct mfs_inobt_key *k = key;

	k->startino = r->startino;
}

static int rmap_cmp_keys(const void *k1, const void *k2)
{
	const struct mfs_rmap_key *a = k1, *b = k2;

	return cmp_u32(mfs_get32(a->startblock), mfs_get32(b->startblock));
}

static void rmap_rec_key(const void *rec, void *key)
{
	const struct mfs_rmap_rec *r = rec;
	struct mfs_rmap_key *k = key;

	k->startblock = r->startblock;
}

/* ---- record sanity ------------------------------------------------------------------------ */
static int alloc_check_rec(struct mfs_btree_cur *cur, const void *rec)
{
	const struct mfs_alloc_rec *r = rec;
	uint32_t start = mfs_get32(r->startblock), len = mfs_get32(r->blockcount);
	uint32_t aglen = mfs_ag_length(&cur->fs->geo, cur->agno);

	if (len == 0 || start < MFS_AG_FIXED_BLOCKS || (uint64_t)start + len > aglen)
		return MFS_CORRUPT("AG %u %s: free extent %u+%u is empty, over the AG headers or "
				   "past the AG end %u", cur->agno, cur->ops->name, start, len,
				   aglen);
	return 0;
}

static int ino_check_rec(struct mfs_btree_cur *cur, const void *rec)
{
	const struct mfs_geom *g = &cur->fs->geo;
	const struct mfs_inobt_rec *r = rec;
	uint32_t startino = mfs_get32(r->startino);
	uint32_t freecount = mfs_get32(r->freecount);
	uint64_t freemask = mfs_get64(r->freemask);
	uint32_t agbno = mfs_agino_to_agbno(g, startino);
	uint32_t chunkblocks = g->chunkblocks ? g->chunkblocks : 1;

	if (startino % MFS_INODES_PER_CHUNK || agbno % chunkblocks ||
	    agbno < MFS_AG_FIXED_BLOCKS ||
	    (uint64_t)agbno + chunkblocks > mfs_ag_length(g, cur->agno) ||
	    (startino >> g->inopblog) != agbno)
		return MFS_CORRUPT("AG %u %s: inode chunk at agino %u is not chunk-aligned or "
				   "lies outside the AG", cur->agno, cur->ops->name, startino);
	if (freecount != (uint32_t)__builtin_popcountll(freemask))
		return MFS_CORRUPT("AG %u %s: chunk at agino %u has free count %u but %d bits "
				   "set in its free mask", cur->agno, cur->ops->name, startino,
				   freecount, __builtin_popcountll(freemask));
	return 0;
}

/* Is `owner` a possible reverse-map owner: an inode number inside the filesystem, or a
 * special owner other than MFS_OWN_NULL? */
static int rmap_owner_ok(const struct mfs_geom *g, uint64_t owner)
{
	uint32_t agno;

	if (owner >= MFS_OWN_MIN)
		return owner != MFS_OWN_NULL;
	if (owner == 0 || owner >= (1ull << 56))
		return 0;
	agno = mfs_ino_to_agno(g, owner);
	return agno < g->agcount &&
	       mfs_agino_to_agbno(g, mfs_ino_to_agino(g, owner)) < mfs_ag_length(g, agno);
}

static int rmap_check_rec(struct mfs_btree_cur *cur, const void *rec)
{
	const struct mfs_geom *g = &cur->fs->geo;
	const struct mfs_rmap_rec *r = rec;
	uint32_t start = mfs_get32(r->startblock), len = mfs_get32(r->blockcount);
	uint64_t owner = mfs_get64(r->owner), offset = mfs_get64(r->offset);
	uint64_t flags = offset & ~MFS_RMAP_OFF_MASK, off = offset & MFS_RMAP_OFF_MASK;

	if (len == 0 || (uint64_t)start + len > mfs_ag_length(g, cur->agno))
		return MFS_CORRUPT("AG %u %s: extent %u+%u is empty or past the AG end %u",
				   cur->agno, cur->ops->name, start, len,
				   mfs_ag_length(g, cur->agno));
	if (!rmap_owner_ok(g, owner))
		return MFS_CORRUPT("AG %u %s: extent %u+%u has owner %llu, neither an inode of "
				   "this filesystem nor a known special owner", cur->agno,
				   cur->ops->name, start, len, (unsigned long long)owner);
	if (owner >= MFS_OWN_MIN) {
		if (offset)
			return MFS_CORRUPT("AG %u %s: extent %u+%u of a special owner has offset "
					   "0x%llx, expected 0", cur->agno, cur->ops->name, start,
					   len, (unsigned long long)offset);
		return 0;
	}
	if (flags & ~(MFS_RMAP_ATTR_FORK | MFS_RMAP_BMBT_BLOCK) ||
	    ((flags & MFS_RMAP_BMBT_BLOCK) && off) || off + len > MFS_RMAP_OFF_MASK + 1)
		return MFS_CORRUPT("AG %u %s: extent %u+%u of inode %llu has bad offset 0x%llx",
				   cur->agno, cur->ops->name, start, len,
				   (unsigned long long)owner, (unsigned long long)offset);
	return 0;
}

/* ---- blocks for the trees ----------------------------------------------------------------- */
static struct mfs_agh *cur_agh(struct mfs_btree_cur *cur)
{
	return ((struct mfs_buf *)cur->priv)->data;
}

/* btreeblks counts the blocks of the bno, cnt and rmap trees beyond their roots. */
static int btreeblks_add(struct mfs_btree_cur *cur, int delta)
{
	struct mfs_buf *agh_bp = cur->priv;
	struct mfs_agh *agh = agh_bp->data;
	int err = mfs_trans_modify(cur->tp, agh_bp);

	if (err)
		return err;
	mfs_put32(agh->btreeblks, mfs_get32(agh->btreeblks) + (uint32_t)delta);
	return 0;
}

static int agfl_alloc_block(struct mfs_btree_cur *cur, uint64_t *fsb)
{
	uint32_t agbno;
	int err;

	if (!cur->tp || !cur->priv)
		return -EINVAL;
	err = mfs_agfl_get(cur->tp, cur->agno, cur->priv, &agbno);
	if (!err)
		err = btreeblks_add(cur, 1);
	if (err)
		return err;
	*fsb = mfs_agbno_to_fsb(&cur->fs->geo, cur->agno, agbno);
	return 0;
}

static int agfl_free_block(struct mfs_btree_cur *cur, uint64_t fsb)
{
	const struct mfs_geom *g = &cur->fs->geo;
	int err;

	if (!cur->tp || !cur->priv)
		return -EINVAL;
	if (mfs_fsb_to_agno(g, fsb) != cur->agno)
		return MFS_CORRUPT("AG %u %s: freeing block %llu of another AG", cur->agno,
				   cur->ops->name, (unsigned long long)fsb);
	err = mfs_agfl_put(cur->tp, cur->agno, cur->priv, mfs_fsb_to_agbno(g, fsb));
	if (!err)
		err = btreeblks_add(cur, -1);
	return err;
}

/* Inode btree blocks: an ordinary single-block allocation near the current root, in the
 * same AG (4-byte pointers), with the AG header the caller already holds. */
static int ino_alloc_block(struct mfs_btree_cur *cur, uint64_t *fsb)
{
	struct mfs_alloc_args args;
	int err;

	if (!cur->tp || !cur->priv)
		return -EINVAL;
	memset(&args, 0, sizeof(args));
	args.type = MFS_ALLOC_NEAR;
	args.target = mfs_agbno_to_fsb(&cur->fs->geo, cur->agno,
				       mfs_get32(cur_agh(cur)->roots[MFS_BT_INO]));
	args.minlen = args.maxlen = 1;
	args.owner = MFS_OWN_INOBT;
	err = mfs_alloc_extent_ag(cur->tp, cur->agno, cur->priv, &args);
	if (err)
		return err;
	*fsb = args.fsb;
	return 0;
}

/* (the engine drops the freed block's buffer from the transaction itself) */
static int ino_free_block(struct mfs_btree_cur *cur, uint64_t fsb)
{
	if (!cur->tp)
		return -EINVAL;
	return mfs_free_extent(cur->tp, fsb, 1, MFS_OWN_INOBT, 0);
}

static enum mfs_ag_tree tree_of(const struct mfs_btree_ops *ops)
{
	if (ops == &mfs_cntbt_ops)
		return MFS_BT_CNT;
	if (ops == &mfs_inobt_ops)
		return MFS_BT_INO;
	if (ops == &mfs_rmapbt_ops)
		return MFS_BT_RMAP;
	return MFS_BT_BNO;
}

static int ag_set_root(struct mfs_btree_cur *cur)
{
	struct mfs_buf *agh_bp = cur->priv;
	struct mfs_agh *agh;
	enum mfs_ag_tree t = tree_of(cur->ops);
	int err;

	if (!cur->tp || !agh_bp)
		return -EINVAL;
	if (mfs_fsb_to_agno(&cur->fs->geo, cur->root.fsb) != cur->agno ||
	    cur->root.levels < 1 || cur->root.levels > MFS_BTREE_MAXLEVELS)
		return MFS_CORRUPT("AG %u %s: new root %llu, height %u, is not in this AG",
				   cur->agno, cur->ops->name, (unsigned long long)cur->root.fsb,
				   cur->root.levels);
	err = mfs_trans_modify(cur->tp, agh_bp);
	if (err)
		return err;
	agh = agh_bp->data;
	mfs_put32(agh->roots[t], mfs_fsb_to_agbno(&cur->fs->geo, cur->root.fsb));
	mfs_put32(agh->levels[t], cur->root.levels);
	return 0;
}

/* ---- the tables ------------------------------------------------------------------------- */
const struct mfs_btree_ops mfs_bnobt_ops = {
	.name = "free-space-by-block btree",
	.magic = MFS_BNOBT_MAGIC,
	.rec_len = sizeof(struct mfs_alloc_rec),
	.key_len = sizeof(struct mfs_alloc_rec),
	.ptr_len = 4,
	.cmp_keys = bno_cmp_keys,
	.rec_key = bno_rec_key,
	.check_rec = alloc_check_rec,
	.alloc_block = agfl_alloc_block,
	.free_block = agfl_free_block,
	.set_root = ag_set_root,
};

const struct mfs_btree_ops mfs_cntbt_ops = {
	.name = "free-space-by-length btree",
	.magic = MFS_CNTBT_MAGIC,
	.rec_len = sizeof(struct mfs_alloc_rec),
	.key_len = sizeof(struct mfs_alloc_rec),
	.ptr_len = 4,
	.cmp_keys = cnt_cmp_keys,
	.rec_key = cnt_rec_key,
	.check_rec = alloc_check_rec,
	.alloc_block = agfl_alloc_block,
	.free_block = agfl_free_block,
	.set_root = ag_set_root,
};

const struct mfs_btree_ops mfs_inobt_ops = {
	.name = "inode btree",
	.magic = MFS_INOBT_MAGIC,
	.rec_len = sizeof(struct mfs_inobt_rec),
	.key_len = sizeof(struct mfs_inobt_key),
	.ptr_len = 4,
	.cmp_keys = ino_cmp_keys,
	.rec_key = ino_rec_key,
	.check_rec = ino_check_rec,
	.alloc_block = ino_alloc_block,
	.free_block = ino_free_block,
	.set_root = ag_set_root,
};

const struct mfs_btree_ops mfs_rmapbt_ops = {
	.name = "reverse-map btree",
	.magic = MFS_RMAPBT_MAGIC,
	.rec_len = sizeof(struct mfs_rmap_rec),
	.key_len = sizeof(struct mfs_rmap_key),
	.ptr_len = 4,
	.cmp_keys = rmap_cmp_keys,
	.rec_key = rmap_rec_key,
	.check_rec = rmap_check_rec,
	.alloc_block = agfl_alloc_block,
	.free_block = agfl_free_block,
	.set_root = ag_set_root,
};

const struct mfs_btree_ops *mfs_ag_tree_ops(enum mfs_ag_tree which)
{
	switch (which) {
	case MFS_BT_BNO:
		return &mfs_bnobt_ops;
	case MFS_BT_CNT:
		return &mfs_cntbt_ops;
	case MFS_BT_INO:
		return &mfs_inobt_ops;
	case MFS_BT_RMAP:
		return &mfs_rmapbt_ops;
	default:
		return NULL;
	}
}

void mfs_ag_cur_init(struct mfs_btree_cur *cur, struct mfs_fs *fs, struct mfs_trans *tp,
		     uint32_t agno, enum mfs_ag_tree which, struct mfs_buf *agh_bp)
{
	const struct mfs_agh *agh = agh_bp->data;
	struct mfs_btree_root root;

	root.fsb = mfs_agbno_to_fsb(&fs->geo, agno, mfs_get32(agh->roots[which]));
	root.levels = mfs_get32(agh->levels[which]);
	mfs_btree_cur_init(cur, fs, tp, mfs_ag_tree_ops(which), agno, agno, &root, agh_bp);
}
