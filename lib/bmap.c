/*
 * bmap.c — the data fork's extent map (see bmap.h): lookups, allocation into holes,
 * punching, unwritten conversion, seeking and walking, over either fork format.
 *
 * Layering.  The operations are written against four primitives keyed by an extent's
 * startoff (fk_get: the last record at or before / first at or after an offset; fk_insert,
 * fk_update, fk_delete), which work on whichever format the fork has:
 *
 *   - inline: an array of dnext records in ip->lit, sorted by startoff;
 *   - btree:  a fresh cursor per primitive (mfs_bmbt_cur_init); the engine splits, merges
 *             and moves the root, and bmbt.c writes those changes into the inode.
 *
 * Invariants kept by every changing call, in the in-core inode and so in what it logs:
 *   - records are sorted, never overlap, each passes mfs_bmbt_check_rec;
 *   - two records are merged whenever they could be (contiguous in the file and on disk,
 *     same AG, same unwritten state, combined length fits 32 bits) — so that the reverse
 *     map, which merges the same way minus the unwritten state, has one record per run;
 *   - ip->nblocks = data blocks + extent btree blocks;
 *   - an inline fork holds at most mfs_bmap_inline_max() records (an insert into a full
 *     one converts to a btree first); a btree whose root is a leaf with fewer records than
 *     that goes back inline when the call ends (fork_maybe_shrink).
 *
 * Every record read from the map is checked before use, so a damaged image yields
 * -EFSCORRUPTED, never a wild index or an allocator call on nonsense.
 */
#include "bmap.h"
#include "alloc.h"
#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "trans.h"
#include "verify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* An extent in host order. */
struct xrec {
	uint64_t off;      /* file block */
	uint64_t fsb;      /* first disk block */
	uint32_t len;
	uint32_t flags;    /* MFS_EXT_* */
};

static uint64_t xend(const struct xrec *r)
{
	return r->off + r->len;
}

static void rec_decode(const struct mfs_bmbt_rec *d, struct xrec *r)
{
	r->off = mfs_get64(d->startoff);
	r->fsb = mfs_get64(d->startblock);
	r->len = mfs_get32(d->blockcount);
	r->flags = mfs_get32(d->flags);
}

static void rec_encode(struct mfs_bmbt_rec *d, const struct xrec *r)
{
	mfs_put64(d->startoff, r->off);
	mfs_put64(d->startblock, r->fsb);
	mfs_put32(d->blockcount, r->len);
	mfs_put32(d->flags, r->flags);
}

static uint32_t fork_size(const struct mfs_inode *ip)
{
	return ip->forkoff ? ip->forkoff * 8u : ip->litsize;
}

unsigned mfs_bmap_inline_max(const struct mfs_inode *ip)
{
	uint32_t fs = fork_size(ip);

	if (fs > ip->litsize)
		fs = ip->litsize;
	return fs / (unsigned)sizeof(struct mfs_bmbt_rec);
}

/* Is the fork one this layer handles, and sane on its face? */
static int fork_check(const struct mfs_inode *ip)
{
	if (ip->dformat == MFS_FMT_EXTENTS) {
		if (ip->dnext > mfs_bmap_inline_max(ip))
			return MFS_CORRUPT("inode %llu: %u extents inline, room for %u",
					   (unsigned long long)ip->ino, ip->dnext,
					   mfs_bmap_inline_max(ip));
		return 0;
	}
	if (ip->dformat == MFS_FMT_BTREE)
		return 0;
	return -EINVAL;
}

/* ---- the inline list ---------------------------------------------------------------------- */
static struct mfs_bmbt_rec *irec(struct mfs_inode *ip, unsigned i)
{
	return (struct mfs_bmbt_rec *)ip->lit + i;
}

static int iget(struct mfs_inode *ip, unsigned i, struct xrec *r)
{
	struct mfs_bmbt_rec d;

	memcpy(&d, irec(ip, i), sizeof(d));
	rec_decode(&d, r);
	return mfs_bmbt_check_rec(ip->fs, ip->ino, &d);
}

static void iput_rec(struct mfs_inode *ip, unsigned i, const struct xrec *r)
{
	struct mfs_bmbt_rec d;

	rec_encode(&d, r);
	memcpy(irec(ip, i), &d, sizeof(d));
}

/* Index of the first record whose startoff is > off (binary search: 0..dnext). */
static unsigned iupper(struct mfs_inode *ip, uint64_t off)
{
	unsigned lo = 0, hi = ip->dnext;

	while (lo < hi) {
		unsigned mid = lo + (hi - lo) / 2;

		if (mfs_get64(irec(ip, mid)->startoff) <= off)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Index of the record whose startoff is exactly `key`. */
static int ifind(struct mfs_inode *ip, uint64_t key, unsigned *idx)
{
	unsigned u = iupper(ip, key);

	if (u == 0 || mfs_get64(irec(ip, u - 1)->startoff) != key)
		return MFS_CORRUPT("inode %llu: inline extent at file block %llu vanished",
				   (unsigned long long)ip->ino, (unsigned long long)key);
	*idx = u - 1;
	return 0;
}

/* ---- primitives over either format --------------------------------------------------------- */
struct bctx {
	struct mfs_trans *tp;
	struct mfs_inode *ip;
};

enum fk_how { FK_LE, FK_GE };

static int cur_get(struct mfs_btree_cur *cur, struct xrec *r, int *found)
{
	struct mfs_bmbt_rec d;
	int err = mfs_btree_get(cur, &d, found);

	if (err || !*found)
		return err;
	rec_decode(&d, r);
	return mfs_bmbt_check_rec(cur->fs, cur->owner, &d);
}

/* The last record with startoff <= off (FK_LE), or the first with startoff >= off (FK_GE). */
static int fk_get(struct bctx *c, uint64_t off, enum fk_how how, struct xrec *r, int *found)
{
	struct mfs_inode *ip = c->ip;
	struct mfs_btree_cur cur;
	struct mfs_bmbt_key key;
	int err;

	*found = 0;
	if (ip->dformat == MFS_FMT_EXTENTS) {
		unsigned u = iupper(ip, off);

		if (how == FK_LE) {
			if (u == 0)
				return 0;
			*found = 1;
			return iget(ip, u - 1, r);
		}
		if (u > 0 && mfs_get64(irec(ip, u - 1)->startoff) == off)
			u--;
		if (u >= ip->dnext)
			return 0;
		*found = 1;
		return iget(ip, u, r);
	}
	err = mfs_bmbt_cur_init(&cur, NULL, ip);
	if (err)
		return err;
	mfs_put64(key.startoff, off);
	err = mfs_btree_lookup(&cur, &key, how == FK_LE ? MFS_LOOKUP_LE : MFS_LOOKUP_GE, found);
	if (!err && *found)
		err = cur_get(&cur, r, found);
	mfs_btree_cur_release(&cur);
	return err;
}

/* A btree cursor positioned on the record whose startoff is `key`. */
static int bt_seek_exact(struct bctx *c, uint64_t key, struct mfs_btree_cur *cur)
{
	struct mfs_bmbt_key k;
	int err, stat = 0;

	err = mfs_bmbt_cur_init(cur, c->tp, c->ip);
	if (err)
		return err;
	mfs_put64(k.startoff, key);
	err = mfs_btree_lookup(cur, &k, MFS_LOOKUP_EQ, &stat);
	if (!err && !stat)
		err = MFS_CORRUPT("inode %llu: extent btree lost its record at file block %llu",
				  (unsigned long long)c->ip->ino, (unsigned long long)key);
	return err;
}

static int fork_to_btree(struct bctx *c);

static int fk_insert(struct bctx *c, const struct xrec *r)
{
	struct mfs_inode *ip = c->ip;
	struct mfs_btree_cur cur;
	struct mfs_bmbt_rec d;
	int err;

	if (ip->dformat == MFS_FMT_EXTENTS && ip->dnext >= mfs_bmap_inline_max(ip)) {
		err = fork_to_btree(c);
		if (err)
			return err;
	}
	if (ip->dformat == MFS_FMT_EXTENTS) {
		unsigned u = iupper(ip, r->off);

		memmove(irec(ip, u + 1), irec(ip, u), (ip->dnext - u) * sizeof(struct mfs_bmbt_rec));
		iput_rec(ip, u, r);
		ip->dnext++;
		return 0;
	}
	err = mfs_bmbt_cur_init(&cur, c->tp, ip);
	if (err)
		return err;
	rec_encode(&d, r);
	err = mfs_btree_insert(&cur, &d);
	mfs_btree_cur_release(&cur);
	if (err == -EEXIST)
		err = MFS_CORRUPT("inode %llu: extent btree already has a record at file block "
				  "%llu", (unsigned long long)ip->ino, (unsigned long long)r->off);
	return err;
}

/* Replace the record at startoff `key` by r (whose startoff keeps the order). */
static int fk_update(struct bctx *c, uint64_t key, const struct xrec *r)
{
	struct mfs_inode *ip = c->ip;
	struct mfs_btree_cur cur;
	struct mfs_bmbt_rec d;
	unsigned i;
	int err;

	if (ip->dformat == MFS_FMT_EXTENTS) {
		err = ifind(ip, key, &i);
		if (!err)
			iput_rec(ip, i, r);
		return err;
	}
	err = bt_seek_exact(c, key, &cur);
	if (!err) {
		rec_encode(&d, r);
		err = mfs_btree_update(&cur, &d);
	}
	mfs_btree_cur_release(&cur);
	return err;
}

static int fk_delete(struct bctx *c, uint64_t key)
{
	struct mfs_inode *ip = c->ip;
	struct mfs_btree_cur cur;
	unsigned i;
	int err;

	if (ip->dformat == MFS_FMT_EXTENTS) {
		err = ifind(ip, key, &i);
		if (err)
			return err;
		memmove(irec(ip, i), irec(ip, i + 1),
			(ip->dnext - i - 1) * sizeof(struct mfs_bmbt_rec));
		ip->dnext--;
		memset(irec(ip, ip->dnext), 0, sizeof(struct mfs_bmbt_rec));
		return 0;
	}
	err = bt_seek_exact(c, key, &cur);
	if (!err)
		err = mfs_btree_delete(&cur);
	mfs_btree_cur_release(&cur);
	return err;
}

/*
 * Call fn on every record whose end lies after `from`, in order (fn: 0 go on, > 0 stop,
 * < 0 error), checking that each begins at or after the previous one's end.
 */
typedef int (*fk_iter_fn)(const struct xrec *r, void *priv);

static int order_check(struct mfs_inode *ip, const struct xrec *r, int have_prev,
		       uint64_t prev_end)
{
	if (have_prev && r->off < prev_end)
		return MFS_CORRUPT("inode %llu: data fork extent at file block %llu overlaps or "
				   "precedes the previous one, which ends at %llu",
				   (unsigned long long)ip->ino, (unsigned long long)r->off,
				   (unsigned long long)prev_end);
	return 0;
}

static int fk_iter(struct mfs_inode *ip, uint64_t from, fk_iter_fn fn, void *priv)
{
	struct mfs_btree_cur cur;
	struct mfs_bmbt_key key;
	struct xrec r;
	uint64_t prev_end = 0;
	int err, stat = 0, have_prev = 0;

	if (ip->dformat == MFS_FMT_EXTENTS) {
		unsigned u = iupper(ip, from);

		for (unsigned i = u ? u - 1 : 0; i < ip->dnext; i++) {
			err = iget(ip, i, &r);
			if (!err)
				err = order_check(ip, &r, have_prev, prev_end);
			if (err)
				return err;
			have_prev = 1;
			prev_end = xend(&r);
			if (xend(&r) <= from)
				continue;
			err = fn(&r, priv);
			if (err)
				return err;
		}
		return 0;
	}
	err = mfs_bmbt_cur_init(&cur, NULL, ip);
	if (err)
		return err;
	mfs_put64(key.startoff, from);
	err = mfs_btree_lookup(&cur, &key, MFS_LOOKUP_LE, &stat);
	if (!err && !stat)
		err = mfs_btree_lookup(&cur, &key, MFS_LOOKUP_GE, &stat);
	while (!err && stat) {
		err = cur_get(&cur, &r, &stat);
		if (err || !stat)
			break;
		err = order_check(ip, &r, have_prev, prev_end);
		if (err)
			break;
		have_prev = 1;
		prev_end = xend(&r);
		if (xend(&r) > from) {
			err = fn(&r, priv);
			if (err)
				break;
		}
		err = mfs_btree_next(&cur, &stat);
	}
	mfs_btree_cur_release(&cur);
	return err;
}

/* ---- format changes --------------------------------------------------------------------------- */
/*
 * Inline → btree: a new root leaf near the inode holding the inline records (or, when the
 * literal area holds more records than a leaf, an empty leaf they are then inserted into).
 */
static int fork_to_btree(struct bctx *c)
{
	struct mfs_inode *ip = c->ip;
	struct mfs_fs *fs = ip->fs;
	struct mfs_bmbt_rec recs[MFS_MAX_INODESIZE / sizeof(struct mfs_bmbt_rec)];
	unsigned n = ip->dnext, leafmax = mfs_btree_maxrecs(&mfs_bmbt_ops, fs->geo.blocksize, 1);
	struct mfs_btree_cur cur;
	struct mfs_btree_block *blk;
	struct mfs_fork_root fr;
	struct mfs_buf *bp;
	uint64_t fsb;
	int err;

	if (fork_size(ip) < sizeof(fr) || n > sizeof(recs) / sizeof(recs[0]))
		return -ENOSPC;      /* no room in the inode even for a btree root */
	memcpy(recs, ip->lit, n * sizeof(recs[0]));

	/* the allocation hook of the tree itself: near the inode, nblocks + 1, logged */
	mfs_btree_cur_init(&cur, fs, c->tp, &mfs_bmbt_ops, ip->ino, 0, NULL, ip);
	err = mfs_bmbt_ops.alloc_block(&cur, &fsb);
	if (err)
		return err;
	err = mfs_trans_get_new(c->tp, fsb, 1, &bp);
	if (err)
		return err;
	mfs_blk_init(bp->data, fs->geo.blocksize, MFS_BMBT_MAGIC, fsb, ip->ino, fs->geo.uuid);
	blk = bp->data;
	if (n <= leafmax) {
		memcpy((uint8_t *)bp->data + sizeof(*blk), recs, n * sizeof(recs[0]));
		mfs_put16(blk->numrecs, (uint16_t)n);
	}

	ip->dformat = MFS_FMT_BTREE;
	ip->dnext = 1;
	memset(ip->lit, 0, fork_size(ip));
	memset(&fr, 0, sizeof(fr));
	mfs_put64(fr.rootblock, fsb);
	mfs_put32(fr.levels, 1);
	memcpy(ip->lit, &fr, sizeof(fr));
	err = mfs_inode_log(c->tp, ip);
	if (err || n <= leafmax)
		return err;

	for (unsigned i = 0; i < n && !err; i++) {
		err = mfs_bmbt_cur_init(&cur, c->tp, ip);
		if (!err)
			err = mfs_btree_insert(&cur, &recs[i]);
		mfs_btree_cur_release(&cur);
	}
	return err;
}

/*
 * Btree → inline, when the root is a leaf holding fewer records than the inline list can
 * (one slot of hysteresis: see bmap.h), or none at all.
 */
static int fork_maybe_shrink(struct bctx *c)
{
	struct mfs_inode *ip = c->ip;
	struct mfs_fs *fs = ip->fs;
	unsigned imax = mfs_bmap_inline_max(ip), n;
	struct mfs_bmbt_rec recs[MFS_MAX_INODESIZE / sizeof(struct mfs_bmbt_rec)];
	struct mfs_btree_cur cur;
	struct mfs_blk_expect exp;
	struct mfs_buf *bp;
	char what[96];
	uint64_t root;
	int err;

	if (ip->dformat != MFS_FMT_BTREE || ip->dnext != 1)
		return 0;
	err = mfs_bmbt_cur_init(&cur, NULL, ip);     /* checks the fork root */
	if (err)
		return err;
	root = cur.root.fsb;
	mfs_btree_cur_release(&cur);
	if (root >= fs->geo.dblocks ||
	    mfs_fsb_to_agbno(&fs->geo, root) < MFS_AG_FIXED_BLOCKS)
		return MFS_CORRUPT("inode %llu: data fork extent btree root %llu lies outside the "
				   "filesystem", (unsigned long long)ip->ino,
				   (unsigned long long)root);
	snprintf(what, sizeof(what), "inode %llu %s", (unsigned long long)ip->ino,
		 mfs_bmbt_ops.name);
	exp.magic = MFS_BMBT_MAGIC;
	exp.owner = ip->ino;
	exp.level = 0;
	exp.what = what;
	err = mfs_buf_read(fs->bc, root, &exp, &bp);
	if (err)
		return err;
	n = mfs_get16(((struct mfs_btree_block *)bp->data)->numrecs);
	/* An empty tree always goes, even when the fork has no room for a record (an inline
	 * attribute fork beside it): else its root leaf outlived the file (found by
	 * mendfs_stress -S: a freed inode's extent btree block left in the rmap). */
	if ((n >= imax && n > 0) || n > sizeof(recs) / sizeof(recs[0])) {
		mfs_buf_put(bp);
		return 0;
	}
	memcpy(recs, (uint8_t *)bp->data + sizeof(struct mfs_btree_block), n * sizeof(recs[0]));
	mfs_buf_put(bp);
	for (unsigned i = 0; i < n; i++) {
		err = mfs_bmbt_check_rec(fs, ip->ino, &recs[i]);
		if (err)
			return err;
	}

	err = mfs_free_extent(c->tp, root, 1, ip->ino, MFS_RMAP_BMBT_BLOCK);
	if (!err)
		err = mfs_trans_forget(c->tp, root);
	if (err)
		return err;
	if (ip->nblocks == 0)
		return MFS_CORRUPT("inode %llu: block count already 0 when freeing extent btree "
				   "root %llu", (unsigned long long)ip->ino, (unsigned long long)root);
	ip->nblocks--;
	ip->dformat = MFS_FMT_EXTENTS;
	ip->dnext = n;
	memset(ip->lit, 0, fork_size(ip));
	memcpy(ip->lit, recs, n * sizeof(recs[0]));
	return 0;
}

/* ---- merging ---------------------------------------------------------------------------------- */
/* Can b directly follow a in one record? */
static int can_join(const struct mfs_geom *g, const struct xrec *a, const struct xrec *b)
{
	return xend(a) == b->off && a->fsb + a->len == b->fsb && a->flags == b->flags &&
	       mfs_fsb_to_agno(g, a->fsb) == mfs_fsb_to_agno(g, b->fsb) &&
	       (uint64_t)a->len + b->len <= UINT32_MAX;
}

/*
 * Put extent n into the map, where [n.off, n.end) is unmapped; prev / next (when have_*)
 * are the records just before and after it, merged with n when they can be.
 */
static int insert_merge(struct bctx *c, struct xrec n, int have_prev, const struct xrec *prev,
			int have_next, const struct xrec *next)
{
	const struct mfs_geom *g = &c->ip->fs->geo;
	int ml = have_prev && can_join(g, prev, &n);
	int mr = have_next && can_join(g, &n, next);
	struct xrec m;
	int err;

	if (ml && mr && (uint64_t)prev->len + n.len + next->len > UINT32_MAX)
		mr = 0;
	if (ml) {
		m = *prev;
		m.len += n.len;
		if (mr) {
			m.len += next->len;
			err = fk_delete(c, next->off);
			if (err)
				return err;
		}
		return fk_update(c, prev->off, &m);
	}
	if (mr) {
		m = n;
		m.len += next->len;
		return fk_update(c, next->off, &m);
	}
	return fk_insert(c, &n);
}

/* ---- lookup ----------------------------------------------------------------------------------- */
static void ext_from(struct mfs_bmap_ext *e, const struct xrec *r)
{
	e->startoff = r->off;
	e->len = r->len;
	e->startblock = r->fsb;
	e->unwritten = !!(r->flags & MFS_EXT_UNWRITTEN);
}

int mfs_bmap_lookup(struct mfs_inode *ip, uint64_t off, struct mfs_bmap_ext *ext)
{
	struct bctx c = { NULL, ip };
	uint64_t maxb = mfs_bmap_max_blocks(ip->fs);
	struct xrec r;
	int err, found;

	memset(ext, 0, sizeof(*ext));
	if (off >= maxb)
		return -EINVAL;
	err = fork_check(ip);
	if (err)
		return err;
	err = fk_get(&c, off, FK_LE, &r, &found);
	if (err)
		return err;
	if (found && off < xend(&r)) {
		ext_from(ext, &r);
		return 0;
	}
	ext->startoff = found ? xend(&r) : 0;
	ext->startblock = MFS_BMAP_HOLE;
	err = fk_get(&c, off, FK_GE, &r, &found);
	if (err)
		return err;
	if (found && r.off <= off)
		return MFS_CORRUPT("inode %llu: extent at file block %llu both covers and follows "
				   "block %llu", (unsigned long long)ip->ino,
				   (unsigned long long)r.off, (unsigned long long)off);
	ext->len = (found ? r.off : maxb) - ext->startoff;
	return 0;
}

/* ---- alloc ------------------------------------------------------------------------------------ */
/*
 * Where the allocation of `want` blocks at file block `off` should go: right after the
 * previous extent's blocks (as if the gap were mapped), else just before the next's, else
 * near the inode — but a file's first extent of SPREAD_MIN bytes or more (a file written
 * in large pieces) starts at one of SPREAD_SLOTS evenly spaced points of the inode's AG,
 * picked by the inode number.  Files written at the same time are mostly neighbours
 * (consecutive inodes of one directory): all starting near their inodes, each append
 * found its target taken by another file's last piece, and four files written with 1 MiB
 * requests ended up in 1 MiB extents taking turns — read back at half the rate of the
 * same files laid out one after the other.  From points of their own, each grows in a
 * stretch of its own.  Small files stay near their inode (and their directory).
 */
#define SPREAD_MIN (256u << 10)
#define SPREAD_SLOTS 16u
#define SPREAD_MIN_STRIDE (8u << 20)    /* bytes between points; an AG too small: none */

static uint64_t alloc_target(struct mfs_inode *ip, uint64_t off, uint64_t want, int have_prev,
			     const struct xrec *prev, int have_next, const struct xrec *next)
{
	const struct mfs_geom *g = &ip->fs->geo;
	uint64_t t;

	if (have_prev) {
		uint64_t gap = off - xend(prev);

		t = prev->fsb + prev->len;
		if (gap < g->agblocks)
			t += gap;
		if (t < g->dblocks)
			return t;
	}
	if (have_next && next->off - off <= next->fsb)
		return next->fsb - (next->off - off);
	if (!have_prev && !have_next && want >= (SPREAD_MIN >> g->blocklog)) {
		uint32_t agno = mfs_ino_to_agno(g, ip->ino);
		uint32_t stride = mfs_ag_length(g, agno) / SPREAD_SLOTS;

		if ((uint64_t)stride << g->blocklog >= SPREAD_MIN_STRIDE)
			return mfs_agbno_to_fsb(g, agno, mfs_ino_to_agino(g, ip->ino) %
						SPREAD_SLOTS * stride);
	}
	return mfs_ino_to_fsb(g, ip->ino);
}

int mfs_bmap_alloc(struct mfs_trans *tp, struct mfs_inode *ip, uint64_t off, uint64_t len,
		   unsigned flags, struct mfs_bmap_ext *ext)
{
	const struct mfs_geom *g = &ip->fs->geo;
	uint64_t maxb = mfs_bmap_max_blocks(ip->fs), want;
	struct bctx c = { tp, ip };
	struct mfs_alloc_args args;
	struct xrec prev, next, n;
	int err, have_prev, have_next;

	memset(ext, 0, sizeof(*ext));
	if (!tp || len == 0 || off >= maxb || maxb - off < len || (flags & ~MFS_BMAP_UNWRITTEN))
		return -EINVAL;
	err = fork_check(ip);
	if (!err)
		err = mfs_inode_lock_ag(tp, ip);
	if (!err)
		err = fk_get(&c, off, FK_LE, &prev, &have_prev);
	if (err)
		return err;
	if (have_prev && off < xend(&prev)) {
		/* already mapped: report it from off on */
		ext->startoff = off;
		ext->startblock = prev.fsb + (off - prev.off);
		ext->len = xend(&prev) - off < len ? xend(&prev) - off : len;
		ext->unwritten = !!(prev.flags & MFS_EXT_UNWRITTEN);
		return 0;
	}
	err = fk_get(&c, off, FK_GE, &next, &have_next);
	if (err)
		return err;
	if (have_next && next.off <= off)
		return MFS_CORRUPT("inode %llu: extent at file block %llu both covers and follows "
				   "block %llu", (unsigned long long)ip->ino,
				   (unsigned long long)next.off, (unsigned long long)off);
	want = len;
	if (have_next && next.off - off < want)
		want = next.off - off;
	if (want > g->agblocks)
		want = g->agblocks;

	memset(&args, 0, sizeof(args));
	args.type = MFS_ALLOC_NEAR;
	args.target = alloc_target(ip, off, want, have_prev, &prev, have_next, &next);
	args.minlen = 1;
	args.maxlen = (uint32_t)want;
	args.owner = ip->ino;
	args.offset = off;
	err = mfs_alloc_extent(tp, &args);
	if (err)
		return err;

	n.off = off;
	n.fsb = args.fsb;
	n.len = args.len;
	n.flags = (flags & MFS_BMAP_UNWRITTEN) ? MFS_EXT_UNWRITTEN : 0;
	err = insert_merge(&c, n, have_prev, &prev, have_next, &next);
	if (err)
		return err;
	ip->nblocks += args.len;
	err = mfs_inode_log(tp, ip);
	if (err)
		return err;
	ext_from(ext, &n);
	return 0;
}

/* ---- punch and convert --------------------------------------------------------------------- */
/*
 * The record covering `pos`, or the first one after it (found = 0: none before `end`).
 */
static int next_in_range(struct bctx *c, uint64_t pos, uint64_t end, struct xrec *r,
			 int *found)
{
	int err = fk_get(c, pos, FK_LE, r, found);

	if (err)
		return err;
	if (*found && xend(r) > pos)
		return 0;
	err = fk_get(c, pos, FK_GE, r, found);
	if (!err && *found && r->off >= end)
		*found = 0;
	return err;
}

static int range_args(struct mfs_trans *tp, struct mfs_inode *ip, uint64_t off, uint64_t len,
		      uint64_t *done)
{
	uint64_t maxb = mfs_bmap_max_blocks(ip->fs);
	int err;

	*done = 0;
	if (!tp || off >= maxb || maxb - off < len)
		return -EINVAL;
	err = fork_check(ip);
	if (!err)
		err = mfs_inode_lock_ag(tp, ip);
	return err;
}

int mfs_bmap_punch(struct mfs_trans *tp, struct mfs_inode *ip, uint64_t off, uint64_t len,
		   uint64_t *done)
{
	struct bctx c = { tp, ip };
	uint64_t pos = off, end = off + len;
	unsigned changed = 0;
	struct xrec r, part;
	int err, found;

	err = range_args(tp, ip, off, len, done);
	if (err)
		return err;
	while (pos < end && changed < MFS_BMAP_MAX_EXTENTS_PER_CALL) {
		uint64_t a, b;

		err = next_in_range(&c, pos, end, &r, &found);
		if (err)
			return err;
		if (!found) {
			pos = end;
			break;
		}
		a = r.off > pos ? r.off : pos;
		b = xend(&r) < end ? xend(&r) : end;
		err = mfs_free_extent(tp, r.fsb + (a - r.off), (uint32_t)(b - a), ip->ino, a);
		if (err)
			return err;
		if (a == r.off && b == xend(&r)) {
			err = fk_delete(&c, r.off);
		} else if (a == r.off) {
			part = r;
			part.off = b;
			part.fsb += b - r.off;
			part.len = (uint32_t)(xend(&r) - b);
			err = fk_update(&c, r.off, &part);
		} else {
			part = r;
			part.len = (uint32_t)(a - r.off);
			err = fk_update(&c, r.off, &part);
			if (!err && b < xend(&r)) {
				part = r;
				part.off = b;
				part.fsb += b - r.off;
				part.len = (uint32_t)(xend(&r) - b);
				err = fk_insert(&c, &part);
			}
		}
		if (err)
			return err;
		if (ip->nblocks < b - a)
			return MFS_CORRUPT("inode %llu: block count %llu is below the %llu blocks "
					   "being freed", (unsigned long long)ip->ino,
					   (unsigned long long)ip->nblocks,
					   (unsigned long long)(b - a));
		ip->nblocks -= b - a;
		pos = b;
		changed++;
	}
	if (changed) {
		err = fork_maybe_shrink(&c);
		if (!err)
			err = mfs_inode_log(tp, ip);
		if (err)
			return err;
	}
	*done = pos - off;
	return 0;
}

int mfs_bmap_convert_written(struct mfs_trans *tp, struct mfs_inode *ip, uint64_t off,
			     uint64_t len, uint64_t *done)
{
	struct bctx c = { tp, ip };
	uint64_t pos = off, end = off + len;
	unsigned changed = 0;
	struct xrec r, left, mid, right, prev, next;
	int err, found, have_prev, have_next;

	err = range_args(tp, ip, off, len, done);
	if (err)
		return err;
	while (pos < end && changed < MFS_BMAP_MAX_EXTENTS_PER_CALL) {
		uint64_t a, b;

		err = next_in_range(&c, pos, end, &r, &found);
		if (err)
			return err;
		if (!found) {
			pos = end;
			break;
		}
		a = r.off > pos ? r.off : pos;
		b = xend(&r) < end ? xend(&r) : end;
		pos = b;
		if (!(r.flags & MFS_EXT_UNWRITTEN))
			continue;
		left = mid = right = r;
		left.len = (uint32_t)(a - r.off);
		mid.off = a;
		mid.fsb = r.fsb + (a - r.off);
		mid.len = (uint32_t)(b - a);
		mid.flags &= ~MFS_EXT_UNWRITTEN;
		right.off = b;
		right.fsb = r.fsb + (b - r.off);
		right.len = (uint32_t)(xend(&r) - b);

		/* the neighbours the written middle may join */
		have_prev = have_next = 0;
		if (left.len) {
			prev = left;
			have_prev = 1;
		} else if (r.off > 0) {
			err = fk_get(&c, r.off - 1, FK_LE, &prev, &have_prev);
		}
		if (!err && right.len) {
			next = right;
			have_next = 1;
		} else if (!err) {
			err = fk_get(&c, xend(&r), FK_GE, &next, &have_next);
		}
		if (err)
			return err;

		/* take r out, then put its pieces back */
		if (left.len)
			err = fk_update(&c, r.off, &left);
		else
			err = fk_delete(&c, r.off);
		if (!err && right.len)
			err = fk_insert(&c, &right);
		if (!err)
			err = insert_merge(&c, mid, have_prev, &prev, have_next, &next);
		if (err)
			return err;
		changed++;
	}
	if (changed) {
		err = fork_maybe_shrink(&c);
		if (!err)
			err = mfs_inode_log(tp, ip);
		if (err)
			return err;
	}
	*done = pos - off;
	return 0;
}

/* ---- seek and walk ---------------------------------------------------------------------------- */
struct seek_state {
	int whence;
	uint64_t pos;      /* SEEK_HOLE: candidate hole; SEEK_DATA: start */
	int found;
};

static int seek_one(const struct xrec *r, void *priv)
{
	struct seek_state *s = priv;
	int unwritten = !!(r->flags & MFS_EXT_UNWRITTEN);

	if (s->whence == SEEK_DATA) {
		if (unwritten)
			return 0;
		if (r->off > s->pos)
			s->pos = r->off;
		s->found = 1;
		return 1;
	}
	/* SEEK_HOLE: pos is a hole unless this written extent covers it */
	if (r->off > s->pos || unwritten)
		return 1;
	s->pos = xend(r);
	return 0;
}

int mfs_bmap_seek(struct mfs_inode *ip, uint64_t off, int whence, uint64_t *res)
{
	struct seek_state s = { whence, off, 0 };
	int err;

	*res = 0;
	if ((whence != SEEK_DATA && whence != SEEK_HOLE) || off >= mfs_bmap_max_blocks(ip->fs))
		return -EINVAL;
	err = fork_check(ip);
	if (!err)
		err = fk_iter(ip, off, seek_one, &s);
	if (err < 0)
		return err;
	if (whence == SEEK_DATA && !s.found)
		return -ENXIO;
	*res = s.pos;
	return 0;
}

struct walk_state {
	struct mfs_inode *ip;
	mfs_bmap_walk_fn fn;
	void *priv;
};

static int walk_one(const struct xrec *r, void *priv)
{
	struct walk_state *w = priv;
	struct mfs_bmap_ext e;

	ext_from(&e, r);
	return w->fn(w->ip, &e, w->priv);
}

int mfs_bmap_walk(struct mfs_inode *ip, mfs_bmap_walk_fn fn, void *priv)
{
	struct walk_state w = { ip, fn, priv };
	int err = fork_check(ip);

	if (err)
		return err;
	return fk_iter(ip, 0, walk_one, &w);
}
