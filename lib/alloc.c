/*
 * alloc.c — the extent allocator: finds free space in an AG's by-block and by-length
 * trees, and keeps both of them, the reverse map and the AG header counters in step, all
 * inside the caller's transaction.
 *
 * Invariants kept for every AG, at the end of every operation:
 *   - the by-block and by-length trees hold the same free extents, record for record, and
 *     adjacent free extents are always merged (no two records touch);
 *   - the reverse map covers exactly the space that is not free: the fixed headers
 *     (MFS_OWN_FS), the blocks of the bno/cnt/rmap trees and the AGFL stock (MFS_OWN_AG),
 *     the inode btree (MFS_OWN_INOBT) and every allocated extent with its owner; adjacent
 *     records of one owner with contiguous offsets are merged;
 *   - AGH freeblks is the sum of the free extents, longest the largest one.
 *
 * The AG free list (agfl.c) is what makes changing the trees safe: their splits take blocks
 * from it and their merges give blocks back, so a change of free space never recurses into
 * the allocator.  The list and the reserve obey:
 *
 *   (L) when an operation's tree changes begin, the list holds >= mfs_agfl_need() blocks
 *       (the worst case of one operation), and has AGFL_ROOM empty slots for give-backs;
 *   (R) an allocation leaves need + RESV_EXTRA blocks free besides what its refill takes:
 *       the reserve that a later free's refill takes from, so frees work in a full AG.
 *
 * The refill (agfl_plan/agfl_make, below) takes free blocks onto the list; doing so changes
 * bno/cnt/rmap, which may split and take list blocks back.  With fragmented space (many
 * 1-block extents) every block taken costs an rmap insert, so "how much free space is
 * enough" depends on the trees, not on a count: the refill is *planned* read-only with
 * pessimistic costs and only made when the plan reaches need.  "AG full" therefore means:
 * the search finds no extent within freeblks minus (R), or the plan cannot restock the list
 * from the rest, or what is left would be under (R).  All three are decided before the first
 * change, so ENOSPC always leaves the transaction untouched and mfs_alloc_extent may try the
 * next AG.  The refill puts a piece's blocks on the list *before* removing them from the
 * trees, so the splits that removal causes can draw on them (they stay MFS_OWN_AG either way).
 * Trimming a list grown too long happens after an operation only, never in the same
 * fix-up as a refill: need follows the tree heights, which both change (chasing need in both
 * directions went round for ever: "free list did not settle").
 *
 * Errors: any failure after the first change is a real error (I/O, -EFSCORRUPTED when the
 * header's counters disagree with the trees, e.g. the plan walked every free extent and
 * they do not add up to freeblks); the caller cancels the transaction and trans.c restores
 * every block.
 */
#include "mem.h"
#include "alloc.h"
#include "ag.h"
#include "bcache.h"
#include "busy.h"
#include "byteorder.h"
#include "fs.h"
#include "journal.h"
#include "log.h"
#include "trans.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AGFL_SLACK   4u      /* the list may hold this many blocks above need */
#define RESV_EXTRA   8u      /* kept free beyond need, for the list to refill from */
#define SCAN_RECS    64      /* records looked at in each direction by bounded searches */

/* One AG being worked on, its lock held by tp and its header buffer held by us. */
struct agx {
	struct mfs_trans *tp;
	struct mfs_fs *fs;
	uint32_t agno;
	uint32_t aglen;
	struct mfs_buf *agh_bp;
};

static struct mfs_agh *agx_agh(const struct agx *x)
{
	return x->agh_bp->data;
}

static void agx_init(struct agx *x, struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp)
{
	x->tp = tp;
	x->fs = mfs_trans_fs(tp);
	x->agno = agno;
	x->aglen = mfs_ag_length(&x->fs->geo, agno);
	x->agh_bp = agh_bp;
}

/* A cursor changing tree `t` (ro: a read-only one). */
static void agx_cur(struct agx *x, struct mfs_btree_cur *cur, enum mfs_ag_tree t, int ro)
{
	mfs_ag_cur_init(cur, x->fs, ro ? NULL : x->tp, x->agno, t, x->agh_bp);
}

static void arec_set(struct mfs_alloc_rec *r, uint32_t start, uint32_t len)
{
	mfs_put32(r->startblock, start);
	mfs_put32(r->blockcount, len);
}

static void rrec_set(struct mfs_rmap_rec *r, uint32_t start, uint32_t len, uint64_t owner,
		     uint64_t offset)
{
	mfs_put32(r->startblock, start);
	mfs_put32(r->blockcount, len);
	mfs_put64(r->owner, owner);
	mfs_put64(r->offset, offset);
}

/* Position `cur` on the record with key exactly `key`; corruption if missing. */
static int lookup_eq(struct mfs_btree_cur *cur, const void *key, const char *what, uint32_t a,
		     uint32_t b)
{
	int stat, err = mfs_btree_lookup(cur, key, MFS_LOOKUP_EQ, &stat);

	if (!err && !stat)
		err = MFS_CORRUPT("AG %u %s: record %s %u+%u vanished during the operation",
				  cur->agno, cur->ops->name, what, a, b);
	return err;
}

/* ---- the AG header counters ------------------------------------------------------------- */
static int agh_modify(struct agx *x)
{
	return mfs_trans_modify(x->tp, x->agh_bp);
}

/* The longest free extent: the last record of the by-length tree (0: none). */
static int cnt_longest(struct agx *x, uint32_t *longest)
{
	struct mfs_btree_cur cur;
	struct mfs_alloc_rec key, r;
	int stat = 0, err;

	*longest = 0;
	agx_cur(x, &cur, MFS_BT_CNT, 1);
	arec_set(&key, UINT32_MAX, UINT32_MAX);
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_LE, &r, &stat);
	if (!err && stat)
		*longest = mfs_get32(r.blockcount);
	mfs_btree_cur_release(&cur);
	return err;
}

/* freeblks += delta; longest from the last record of the by-length tree. */
static int agh_update_free(struct agx *x, int64_t delta)
{
	struct mfs_agh *agh = agx_agh(x);
	int64_t nfree = (int64_t)mfs_get32(agh->freeblks) + delta;
	uint32_t longest = 0;
	int err;

	if (nfree < 0 || nfree > x->aglen)
		return MFS_CORRUPT("AG %u header: free block count would become %lld",
				   x->agno, (long long)nfree);
	err = cnt_longest(x, &longest);
	if (err)
		return err;
	err = agh_modify(x);
	if (err)
		return err;
	mfs_put32(agh->freeblks, (uint32_t)nfree);
	mfs_put32(agh->longest, longest);
	return 0;
}

/* ---- free space: both trees together ------------------------------------------------------ */
static int cnt_delete(struct agx *x, uint32_t start, uint32_t len)
{
	struct mfs_btree_cur cur;
	struct mfs_alloc_rec key;
	int stat, err;

	agx_cur(x, &cur, MFS_BT_CNT, 0);
	arec_set(&key, start, len);
	err = mfs_btree_lookup(&cur, &key, MFS_LOOKUP_EQ, &stat);
	if (!err && !stat)
		err = MFS_CORRUPT("AG %u free-space-by-length btree: no record for free extent "
				  "%u+%u of the by-block tree", x->agno, start, len);
	if (!err)
		err = mfs_btree_delete(&cur);
	mfs_btree_cur_release(&cur);
	return err;
}

static int cnt_insert(struct agx *x, uint32_t start, uint32_t len)
{
	struct mfs_btree_cur cur;
	struct mfs_alloc_rec r;
	int err;

	agx_cur(x, &cur, MFS_BT_CNT, 0);
	arec_set(&r, start, len);
	err = mfs_btree_insert(&cur, &r);
	mfs_btree_cur_release(&cur);
	if (err == -EEXIST)
		err = MFS_CORRUPT("AG %u free-space-by-length btree: free extent %u+%u is "
				  "already there", x->agno, start, len);
	return err;
}

/* Remove [start, start+len) from free space; it must lie inside one free extent.  flags
 * MFS_FREESP_NOCOUNT: the header's counters are left alone. */
static int fs_take(struct agx *x, uint32_t start, uint32_t len, unsigned flags)
{
	struct mfs_btree_cur cur;
	struct mfs_alloc_rec key, r;
	uint32_t fs, fl, left, right, end = start + len;
	int stat, err;

	agx_cur(x, &cur, MFS_BT_BNO, 0);
	arec_set(&key, start, 0);
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_LE, &r, &stat);
	if (err)
		goto out;
	fs = stat ? mfs_get32(r.startblock) : 0;
	fl = stat ? mfs_get32(r.blockcount) : 0;
	if (!stat || (uint64_t)fs + fl < end) {
		err = MFS_CORRUPT("AG %u %s: extent %u+%u to allocate is not free", x->agno,
				  cur.ops->name, start, len);
		goto out;
	}
	left = start - fs;
	right = fs + fl - end;
	if (left) {
		arec_set(&r, fs, left);
		err = mfs_btree_update(&cur, &r);
		if (!err && right) {
			arec_set(&r, end, right);
			err = mfs_btree_insert(&cur, &r);
		}
	} else if (right) {
		arec_set(&r, end, right);        /* same place in key order: nothing in between */
		err = mfs_btree_update(&cur, &r);
	} else {
		err = mfs_btree_delete(&cur);
	}
	mfs_btree_cur_release(&cur);
	if (!err)
		err = cnt_delete(x, fs, fl);
	if (!err && left)
		err = cnt_insert(x, fs, left);
	if (!err && right)
		err = cnt_insert(x, end, right);
	if (!err && !(flags & MFS_FREESP_NOCOUNT))
		err = agh_update_free(x, -(int64_t)len);
	return err;
out:
	mfs_btree_cur_release(&cur);
	return err;
}

/* Add [start, start+len) to free space, merging with free neighbours on both sides (flags:
 * as fs_take's). */
static int fs_give(struct agx *x, uint32_t start, uint32_t len, unsigned flags)
{
	struct mfs_btree_cur cur;
	struct mfs_alloc_rec key, r;
	uint32_t ls = 0, ll = 0, rs = 0, rl = 0, end = start + len;
	int haveleft = 0, haveright = 0, stat, err;

	if (len == 0 || start < MFS_AG_FIXED_BLOCKS || (uint64_t)start + len > x->aglen)
		return MFS_CORRUPT("AG %u: freeing extent %u+%u over the AG headers or past the "
				   "AG end %u", x->agno, start, len, x->aglen);
	/* Busy until this transaction is durable: no file data may land on it before. */
	err = mfs_trans_busy(x->tp, x->agno, start, len);
	if (err)
		return err;
	agx_cur(x, &cur, MFS_BT_BNO, 0);
	arec_set(&key, start, 0);
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_LE, &r, &stat);
	if (err)
		goto out;
	if (stat) {
		ls = mfs_get32(r.startblock);
		ll = mfs_get32(r.blockcount);
		if ((uint64_t)ls + ll > start) {
			err = MFS_CORRUPT("AG %u %s: freeing extent %u+%u, but free extent %u+%u "
					  "overlaps it (double free)", x->agno, cur.ops->name,
					  start, len, ls, ll);
			goto out;
		}
		haveleft = ls + ll == start;
	}
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_GE, &r, &stat);
	if (err)
		goto out;
	if (stat) {
		rs = mfs_get32(r.startblock);
		rl = mfs_get32(r.blockcount);
		if (rs < end) {
			err = MFS_CORRUPT("AG %u %s: freeing extent %u+%u, but free extent %u+%u "
					  "overlaps it (double free)", x->agno, cur.ops->name,
					  start, len, rs, rl);
			goto out;
		}
		haveright = rs == end;
	}

	if (haveleft && haveright) {
		err = lookup_eq(&cur, (arec_set(&key, rs, 0), &key), "right", rs, rl);
		if (!err)
			err = mfs_btree_delete(&cur);
		if (!err)
			err = lookup_eq(&cur, (arec_set(&key, ls, 0), &key), "left", ls, ll);
		arec_set(&r, ls, ll + len + rl);
	} else if (haveleft) {
		err = lookup_eq(&cur, (arec_set(&key, ls, 0), &key), "left", ls, ll);
		arec_set(&r, ls, ll + len);
	} else if (haveright) {
		err = lookup_eq(&cur, (arec_set(&key, rs, 0), &key), "right", rs, rl);
		arec_set(&r, start, len + rl);
	} else {
		arec_set(&r, start, len);
		err = mfs_btree_insert(&cur, &r);
		goto cnt;
	}
	if (!err)
		err = mfs_btree_update(&cur, &r);
cnt:
	mfs_btree_cur_release(&cur);
	if (!err && haveleft)
		err = cnt_delete(x, ls, ll);
	if (!err && haveright)
		err = cnt_delete(x, rs, rl);
	if (!err)
		err = cnt_insert(x, mfs_get32(r.startblock), mfs_get32(r.blockcount));
	if (!err && !(flags & MFS_FREESP_NOCOUNT))
		err = agh_update_free(x, len);
	return err;
out:
	mfs_btree_cur_release(&cur);
	return err;
}

int mfs_freesp_take(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp,
		    uint32_t agbno, uint32_t len, unsigned flags)
{
	struct agx x;

	agx_init(&x, tp, agno, agh_bp);
	if (len == 0 || (uint64_t)agbno + len > x.aglen)
		return MFS_CORRUPT("AG %u: taking extent %u+%u from free space, past the AG end "
				   "%u", agno, agbno, len, x.aglen);
	return fs_take(&x, agbno, len, flags);
}

int mfs_freesp_give(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp,
		    uint32_t agbno, uint32_t len, unsigned flags)
{
	struct agx x;

	agx_init(&x, tp, agno, agh_bp);
	return fs_give(&x, agbno, len, flags);
}

int mfs_freesp_check(struct mfs_fs *fs, uint32_t agno, struct mfs_buf *agh_bp, uint32_t agbno,
		     uint32_t len)
{
	struct mfs_btree_cur cur;
	struct mfs_alloc_rec key, r;
	uint32_t fs_, fl;
	int stat = 0, err;

	mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_BNO, agh_bp);
	arec_set(&key, agbno, 0);
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_LE, &r, &stat);
	mfs_btree_cur_release(&cur);
	if (err)
		return err;
	fs_ = stat ? mfs_get32(r.startblock) : 0;
	fl = stat ? mfs_get32(r.blockcount) : 0;
	if (!stat || (uint64_t)fs_ + fl < (uint64_t)agbno + len)
		return MFS_CORRUPT("AG %u free-space-by-block btree: extent %u+%u is not free",
				   agno, agbno, len);
	mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_CNT, agh_bp);
	arec_set(&key, fs_, fl);
	err = mfs_btree_lookup(&cur, &key, MFS_LOOKUP_EQ, &stat);
	mfs_btree_cur_release(&cur);
	if (!err && !stat)
		err = MFS_CORRUPT("AG %u free-space-by-length btree: no record for free extent "
				  "%u+%u of the by-block tree", agno, fs_, fl);
	return err;
}

int mfs_freesp_longest(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp,
		       uint32_t *longest)
{
	struct agx x;

	agx_init(&x, tp, agno, agh_bp);
	return cnt_longest(&x, longest);
}

/* ---- reverse map ------------------------------------------------------------------------ */
static int owner_special(uint64_t owner)
{
	return owner >= MFS_OWN_MIN;
}

/* Offsets carry no position for special owners and extent-btree blocks. */
static int offset_positional(uint64_t owner, uint64_t offset)
{
	return !owner_special(owner) && !(offset & MFS_RMAP_BMBT_BLOCK);
}

/* Can record a (len alen) be followed by b, adjacent on disk, in one record? */
static int rmap_mergeable(uint64_t aowner, uint64_t aoff, uint32_t alen, uint64_t bowner,
			  uint64_t boff)
{
	if (aowner != bowner)
		return 0;
	if ((aoff & ~MFS_RMAP_OFF_MASK) != (boff & ~MFS_RMAP_OFF_MASK))
		return 0;
	if (!offset_positional(aowner, aoff))
		return aoff == boff;
	return (aoff & MFS_RMAP_OFF_MASK) + alen == (boff & MFS_RMAP_OFF_MASK);
}

static uint64_t offset_advance(uint64_t owner, uint64_t offset, uint32_t n)
{
	return offset_positional(owner, offset) ? offset + n : offset;
}

static int rmap_add(struct agx *x, uint32_t start, uint32_t len, uint64_t owner,
		    uint64_t offset)
{
	struct mfs_btree_cur cur;
	struct mfs_rmap_key key;
	struct mfs_rmap_rec l, r, n;
	uint32_t ls = 0, ll = 0, rs = 0, rl = 0, end = start + len;
	int ml = 0, mr = 0, stat, err;

	agx_cur(x, &cur, MFS_BT_RMAP, 0);
	mfs_put32(key.startblock, start);
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_LE, &l, &stat);
	if (err)
		goto out;
	if (stat) {
		ls = mfs_get32(l.startblock);
		ll = mfs_get32(l.blockcount);
		if ((uint64_t)ls + ll > start) {
			err = MFS_CORRUPT("AG %u %s: allocating %u+%u, but %u+%u belongs to owner "
					  "%llu", x->agno, cur.ops->name, start, len, ls, ll,
					  (unsigned long long)mfs_get64(l.owner));
			goto out;
		}
		ml = ls + ll == start && rmap_mergeable(mfs_get64(l.owner), mfs_get64(l.offset),
							ll, owner, offset);
	}
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_GE, &r, &stat);
	if (err)
		goto out;
	if (stat) {
		rs = mfs_get32(r.startblock);
		rl = mfs_get32(r.blockcount);
		if (rs < end) {
			err = MFS_CORRUPT("AG %u %s: allocating %u+%u, but %u+%u belongs to owner "
					  "%llu", x->agno, cur.ops->name, start, len, rs, rl,
					  (unsigned long long)mfs_get64(r.owner));
			goto out;
		}
		mr = rs == end && rmap_mergeable(owner, offset, len, mfs_get64(r.owner),
						 mfs_get64(r.offset));
	}

	if (ml && mr) {
		struct mfs_rmap_key k2;

		mfs_put32(k2.startblock, rs);
		err = lookup_eq(&cur, &k2, "right", rs, rl);
		if (!err)
			err = mfs_btree_delete(&cur);
		mfs_put32(k2.startblock, ls);
		if (!err)
			err = lookup_eq(&cur, &k2, "left", ls, ll);
		n = l;
		mfs_put32(n.blockcount, ll + len + rl);
	} else if (ml) {
		struct mfs_rmap_key k2;

		mfs_put32(k2.startblock, ls);
		err = lookup_eq(&cur, &k2, "left", ls, ll);
		n = l;
		mfs_put32(n.blockcount, ll + len);
	} else if (mr) {
		struct mfs_rmap_key k2;

		mfs_put32(k2.startblock, rs);
		err = lookup_eq(&cur, &k2, "right", rs, rl);
		rrec_set(&n, start, len + rl, owner, offset);
	} else {
		rrec_set(&n, start, len, owner, offset);
		err = mfs_btree_insert(&cur, &n);
		goto out;
	}
	if (!err)
		err = mfs_btree_update(&cur, &n);
out:
	mfs_btree_cur_release(&cur);
	return err;
}

/* Remove [start, start+len) of (owner, offset) from the reverse map: it must lie inside one
 * record of that owner, at the matching offset. */
static int rmap_del(struct agx *x, uint32_t start, uint32_t len, uint64_t owner,
		    uint64_t offset)
{
	struct mfs_btree_cur cur;
	struct mfs_rmap_key key;
	struct mfs_rmap_rec r, n;
	uint32_t rs, rl, end = start + len, left, right;
	uint64_t rowner, roff;
	int stat, err;

	agx_cur(x, &cur, MFS_BT_RMAP, 0);
	mfs_put32(key.startblock, start);
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_LE, &r, &stat);
	if (err)
		goto out;
	rs = stat ? mfs_get32(r.startblock) : 0;
	rl = stat ? mfs_get32(r.blockcount) : 0;
	if (!stat || (uint64_t)rs + rl < end) {
		err = MFS_CORRUPT("AG %u %s: freeing %u+%u of owner %llu, but no single record "
				  "covers it (free space, or several owners)", x->agno,
				  cur.ops->name, start, len, (unsigned long long)owner);
		goto out;
	}
	rowner = mfs_get64(r.owner);
	roff = mfs_get64(r.offset);
	if (rowner != owner ||
	    (roff & ~MFS_RMAP_OFF_MASK) != (offset & ~MFS_RMAP_OFF_MASK) ||
	    offset_advance(rowner, roff, start - rs) != offset) {
		err = MFS_CORRUPT("AG %u %s: freeing %u+%u of owner %llu offset 0x%llx, but the "
				  "space belongs to owner %llu at offset 0x%llx", x->agno,
				  cur.ops->name, start, len, (unsigned long long)owner,
				  (unsigned long long)offset, (unsigned long long)rowner,
				  (unsigned long long)offset_advance(rowner, roff, start - rs));
		goto out;
	}
	left = start - rs;
	right = rs + rl - end;
	if (!left && !right) {
		err = mfs_btree_delete(&cur);
	} else if (!left) {
		rrec_set(&n, end, right, rowner, offset_advance(rowner, roff, len));
		err = mfs_btree_update(&cur, &n);
	} else {
		n = r;
		mfs_put32(n.blockcount, left);
		err = mfs_btree_update(&cur, &n);
		if (!err && right) {
			rrec_set(&n, end, right, rowner, offset_advance(rowner, roff, end - rs));
			err = mfs_btree_insert(&cur, &n);
		}
	}
out:
	mfs_btree_cur_release(&cur);
	return err;
}

/* ---- keeping the AG free list stocked -------------------------------------------------- */
/* Blocks kept out of a refill: the extent an allocation has already chosen. */
struct avoid {
	uint32_t start, len;     /* len 0: nothing */
};

/* The longest piece of free extent [fs, fs+fl) outside `av`, in *ps / *pl. */
static void piece_outside(const struct avoid *av, uint32_t fs, uint32_t fl, uint32_t *ps,
			  uint32_t *pl)
{
	uint64_t fe = (uint64_t)fs + fl, ae = (uint64_t)av->start + av->len;

	*ps = fs;
	*pl = fl;
	if (!av->len || ae <= fs || av->start >= fe)
		return;
	/* the part before the avoided range, or the part after it, whichever is longer */
	*pl = av->start > fs ? av->start - fs : 0;
	if (fe > ae && fe - ae > *pl) {
		*ps = (uint32_t)ae;
		*pl = (uint32_t)(fe - ae);
	}
}

/*
 * The refill is planned before it is made.  agfl_plan() looks (read-only) at the free
 * extents, largest first, and lists the pieces it will take, charging each piece the most
 * list blocks its own tree changes can cost:
 *
 *   - a whole free extent leaves bno and cnt by deletes (which never take a block);
 *   - a piece that leaves part of its extent behind may insert one bno and two cnt records;
 *   - every piece inserts one rmap record (MFS_OWN_AG);
 *   - an insert costs nothing when its leaf has room, and at most (tree height + 1) blocks
 *     when the leaf is full (every level splits and a new root is added).  The plan counts
 *     the inserts it sends to each leaf, so a leaf with room is charged only once it would
 *     be full; after a split the leaf that receives the next records has at least
 *     cap / 2 - 1 free slots, so the plan resumes counting from there.  A charged split may
 *     add a level, which raises need (2 blocks per level of bno/cnt, 1 of rmap): the plan's
 *     target grows with it.
 *
 * The plan succeeds when its pessimistic count reaches the target (need + PLAN_MARGIN);
 * agfl_make() then takes exactly those pieces, and since every real cost is at most its
 * charge, the list ends at least as full as planned.  Because each piece leaves free space
 * for good, a refill always ends; and because the plan changes nothing, a plan that fails
 * is a clean ENOSPC (the transaction untouched).  Deletes may join leaves and give blocks
 * back; a join can also leave a fuller leaf than the plan counted, which PLAN_MARGIN covers.
 */
#define PLAN_MAX     MFS_AGFL_SIZE_MAX       /* pieces in one refill */
#define PLAN_LEAVES  (4 * PLAN_MAX)          /* leaves whose inserts the plan counts */
#define PLAN_MARGIN  2u                      /* stocked beyond need */
#define AGFL_ROOM    8u                      /* slots kept empty for merges' give-backs */

struct plan_leaf {
	int tree;
	uint64_t blk;
	unsigned used;          /* records in it after the planned inserts */
};

struct plan {
	unsigned n;
	uint32_t start[PLAN_MAX], len[PLAN_MAX];
	uint64_t total;                     /* blocks the pieces take */
	unsigned nleaf;
	struct plan_leaf leaf[PLAN_LEAVES];
	unsigned grow[MFS_AG_NTREES];       /* levels a tree may gain (0 or 1 per charge) */
	int64_t count;                      /* the list, pessimistically */
};

static unsigned plan_level(const struct agx *x, const struct plan *p, enum mfs_ag_tree t)
{
	return mfs_get32(agx_agh(x)->levels[t]) + p->grow[t];
}

/* need at the plan's (pessimistic) heights; mfs_agfl_need() is linear in the heights. */
static int64_t plan_need(const struct agx *x, const struct plan *p)
{
	return (int64_t)mfs_agfl_need(x->fs, agx_agh(x)) + 2 * p->grow[MFS_BT_BNO] +
	       2 * p->grow[MFS_BT_CNT] + p->grow[MFS_BT_RMAP];
}

/* What inserting `key` into tree t may cost, given the inserts planned so far. */
static int plan_insert(struct agx *x, struct plan *p, enum mfs_ag_tree t, const void *key,
		       unsigned *charge)
{
	struct mfs_btree_cur cur;
	struct plan_leaf *l = NULL;
	struct mfs_buf *leaf;
	unsigned cap, i;
	int stat, err;

	agx_cur(x, &cur, t, 1);
	err = mfs_btree_lookup(&cur, key, MFS_LOOKUP_EQ, &stat);
	if (err) {
		mfs_btree_cur_release(&cur);
		return err;
	}
	/* The leaf an insert of `key` goes to (the cursor's path, read-only). */
	leaf = cur.path[0].bp;
	cap = cur.maxrecs[0];
	for (i = 0; leaf && i < p->nleaf; i++)
		if (p->leaf[i].tree == (int)t && p->leaf[i].blk == leaf->blkno)
			l = &p->leaf[i];
	if (leaf && !l && p->nleaf < PLAN_LEAVES) {
		l = &p->leaf[p->nleaf++];
		l->tree = (int)t;
		l->blk = leaf->blkno;
		l->used = mfs_get16(((const struct mfs_btree_block *)leaf->data)->numrecs);
	}
	mfs_btree_cur_release(&cur);
	if (l && l->used < cap) {
		l->used++;
		*charge = 0;
		return 0;
	}
	*charge = plan_level(x, p, t) + 1;
	p->grow[t] = 1;     /* the cap of a node is far above what one refill inserts */
	if (l)
		l->used = cap - (cap / 2 > 1 ? cap / 2 - 1 : 0) + 1;
	return 0;
}

/* Charge taking [s, s+t) of free extent [fs, fs+fl). */
static int plan_piece(struct agx *x, struct plan *p, uint32_t fs, uint32_t fl, uint32_t s,
		      uint32_t t)
{
	uint32_t left = s - fs, right = fs + fl - s - t;
	struct mfs_alloc_rec k;
	struct mfs_rmap_key rk;
	unsigned c;
	int err = 0;

	p->start[p->n] = s;
	p->len[p->n] = t;
	p->n++;
	p->total += t;
	p->count += t;
	if (left && right) {
		arec_set(&k, s + t, 0);
		err = plan_insert(x, p, MFS_BT_BNO, &k, &c);
		p->count -= err ? 0 : c;
	}
	if (!err && left) {
		arec_set(&k, fs, left);
		err = plan_insert(x, p, MFS_BT_CNT, &k, &c);
		p->count -= err ? 0 : c;
	}
	if (!err && right) {
		arec_set(&k, s + t, right);
		err = plan_insert(x, p, MFS_BT_CNT, &k, &c);
		p->count -= err ? 0 : c;
	}
	if (!err) {
		mfs_put32(rk.startblock, s);
		err = plan_insert(x, p, MFS_BT_RMAP, &rk, &c);
		p->count -= err ? 0 : c;
	}
	return err;
}

/*
 * Plan the refill of the list to need + PLAN_MARGIN from free space outside `av`.
 * 0 with p->n == 0: nothing to do.  -ENOSPC: the free space outside `av` cannot restock
 * the list (or the list has no room for what it would take).  -EFSCORRUPTED: the walk saw
 * every free extent and they do not add up to the header's free count.
 */
static int agfl_plan(struct agx *x, const struct avoid *av, struct plan *p)
{
	const struct mfs_agh *agh = agx_agh(x);
	struct mfs_btree_cur cur;
	struct mfs_alloc_rec key, r;
	uint64_t seen = 0;
	int stat, err, all = 0;

	p->n = 0;
	p->total = 0;
	p->nleaf = 0;
	memset(p->grow, 0, sizeof(p->grow));
	p->count = mfs_get32(agh->fl_count);
	if (p->count >= (int64_t)mfs_agfl_need(x->fs, agh))
		return 0;
	agx_cur(x, &cur, MFS_BT_CNT, 1);
	arec_set(&key, UINT32_MAX, UINT32_MAX);
	err = mfs_btree_lookup(&cur, &key, MFS_LOOKUP_LE, &stat);
	while (!err && p->count < plan_need(x, p) + PLAN_MARGIN) {
		uint32_t fs, fl, ps, pl, take;
		int64_t want;

		if (!stat) {
			all = 1;
			break;
		}
		if (p->n == PLAN_MAX)
			break;
		err = mfs_btree_get(&cur, &r, &stat);
		if (err || !stat)
			break;
		fs = mfs_get32(r.startblock);
		fl = mfs_get32(r.blockcount);
		seen += fl;
		piece_outside(av, fs, fl, &ps, &pl);
		if (pl) {
			/* enough for the target and the worst a partial piece can cost */
			want = plan_need(x, p) + PLAN_MARGIN - p->count +
			       (plan_level(x, p, MFS_BT_BNO) + 1) +
			       2 * (plan_level(x, p, MFS_BT_CNT) + 1) +
			       plan_level(x, p, MFS_BT_RMAP) + 1;
			take = (int64_t)pl < want ? pl : (uint32_t)want;
			err = plan_piece(x, p, fs, fl, ps, take);
		}
		if (!err)
			err = mfs_btree_prev(&cur, &stat);
	}
	mfs_btree_cur_release(&cur);
	if (err)
		return err;
	if (p->count >= plan_need(x, p) + PLAN_MARGIN) {
		if (mfs_get32(agh->fl_count) + p->total > MFS_AGFL_SIZE_MAX - AGFL_ROOM) {
			mfs_log(MFS_LOG_DEBUG, "AG %u: refilling the free list would take %llu "
				"blocks onto a list of %u", x->agno,
				(unsigned long long)p->total, mfs_get32(agh->fl_count));
			return -ENOSPC;
		}
		return 0;
	}
	if (all && seen != mfs_get32(agh->freeblks))
		return MFS_CORRUPT("AG %u header: %u free blocks, but the free-space-by-length "
				   "btree holds %llu", x->agno, mfs_get32(agh->freeblks),
				   (unsigned long long)seen);
	return -ENOSPC;
}

/* Take the planned pieces onto the list (see the top of the file for why in this order). */
static int agfl_make(struct agx *x, const struct plan *p)
{
	int err = 0;

	for (unsigned i = 0; i < p->n && !err; i++) {
		for (uint32_t b = 0; b < p->len[i] && !err; b++)
			err = mfs_agfl_put(x->tp, x->agno, x->agh_bp, p->start[i] + b);
		if (!err)
			err = fs_take(x, p->start[i], p->len[i], 0);
		if (!err)
			err = rmap_add(x, p->start[i], p->len[i], MFS_OWN_AG, 0);
	}
	if (!err && mfs_get32(agx_agh(x)->fl_count) < mfs_agfl_need(x->fs, agx_agh(x)))
		err = MFS_CORRUPT("AG %u: free list holds %u blocks after a refill planned to "
				  "reach %u", x->agno, mfs_get32(agx_agh(x)->fl_count),
				  mfs_agfl_need(x->fs, agx_agh(x)));
	return err;
}

/* A block off the list back to free space.  It is forgotten (its logged images revoked):
 * whatever put it on the list (a tree's free does the same, a rebuild's leftovers should),
 * a block that next holds file data, written in place, must never get an old tree block's
 * image written over it by a checkpoint or a replay. */
static int agfl_trim_one(struct agx *x)
{
	uint32_t bno;
	int err = mfs_agfl_get(x->tp, x->agno, x->agh_bp, &bno);

	if (!err)
		err = rmap_del(x, bno, 1, MFS_OWN_AG, 0);
	if (!err)
		err = fs_give(x, bno, 1, 0);
	if (!err)
		err = mfs_trans_forget(x->tp, mfs_agbno_to_fsb(&x->fs->geo, x->agno, bno));
	return err;
}

/*
 * After an operation: give back what the list holds above 2 * need + AGFL_SLACK (a
 * refill's pessimistic charges overshoot need; a band that wide keeps them on the list).  Only here,
 * never before an operation, and never followed by a refill: need follows the tree heights,
 * which trimming and refilling themselves change, and a fix-up that chased need both ways
 * could go round for ever (a refill from 1-block extents shrinks the free-space trees and
 * need with them, the trim that follows grows them again...).  A trim starts far above
 * need, so its own splits cannot empty the list; its blocks go back to free space.
 */
static int agfl_trim(struct agx *x)
{
	for (unsigned i = 0; i < MFS_AGFL_SIZE_MAX; i++) {
		const struct mfs_agh *agh = agx_agh(x);
		uint32_t hi = 2 * mfs_agfl_need(x->fs, agh) + AGFL_SLACK;
		int err;

		if (hi > MFS_AGFL_SIZE_MAX - AGFL_ROOM)
			hi = MFS_AGFL_SIZE_MAX - AGFL_ROOM;
		if (mfs_get32(agh->fl_count) <= hi)
			return 0;
		err = agfl_trim_one(x);
		if (err)
			return err;
	}
	return 0;
}

/* Blocks an allocation may take now: what is free minus the list's future refills. */
static uint32_t agx_avail(struct agx *x)
{
	const struct mfs_agh *agh = agx_agh(x);
	uint64_t need = mfs_agfl_need(x->fs, agh), count = mfs_get32(agh->fl_count);
	uint64_t keep = need + RESV_EXTRA, nfree = mfs_get32(agh->freeblks);

	if (count < need)
		keep += need - count;
	return nfree > keep ? (uint32_t)(nfree - keep) : 0;
}

/* ---- searching ------------------------------------------------------------------------- */
struct req {
	enum mfs_alloc_type type;
	uint32_t target;     /* agbno */
	uint32_t minlen, maxlen, align;
	struct mfs_busy *busy;   /* file data: skip busy ranges of AG `agno` (busy.h) */
	uint32_t agno;
};

struct cand {
	int ok;
	uint32_t bno, len, dist;
};

static uint32_t dist_of(uint32_t a, uint32_t b)
{
	return a > b ? a - b : b - a;
}

/* The best piece of free extent [fs, fs+fl) for q: aligned, as long as possible up to
 * maxlen, then as near the target as possible.  0 if it cannot hold minlen. */
static int fit(const struct req *q, uint32_t fs, uint32_t fl, struct cand *c)
{
	uint64_t a = q->align, end = (uint64_t)fs + fl, lo, len, hi, p, pd, pu;
	uint32_t t = q->target;

	lo = (fs + a - 1) / a * a;
	if (lo >= end)
		return 0;
	if (q->type == MFS_ALLOC_EXACT) {
		if (t < fs || t >= end || t % a)
			return 0;
		lo = t;
	}
	len = end - lo < q->maxlen ? end - lo : q->maxlen;
	if (len < q->minlen)
		return 0;
	if (q->type == MFS_ALLOC_EXACT) {
		p = t;
	} else {
		hi = end - len;
		p = t < lo ? lo : (t > hi ? hi : t);
		pd = p / a * a;
		pu = pd + a;
		p = pd;
		if (pu <= hi && dist_of((uint32_t)pu, t) < dist_of((uint32_t)pd, t))
			p = pu;
	}
	c->ok = 1;
	c->bno = (uint32_t)p;
	c->len = (uint32_t)len;
	c->dist = dist_of((uint32_t)p, t);
	return 1;
}

static int cand_full(const struct req *q, const struct cand *c)
{
	return c->ok && c->len >= q->maxlen;
}

/* Is a better than b: full length first, then longer, then nearer. */
static int cand_better(const struct req *q, const struct cand *a, const struct cand *b)
{
	int af, bf;

	if (!b->ok)
		return a->ok;
	if (!a->ok)
		return 0;
	af = cand_full(q, a);
	bf = cand_full(q, b);
	if (af != bf)
		return af;
	if (!af && a->len != b->len)
		return a->len > b->len;
	return a->dist < b->dist;
}

/* Offer free extent [fs, fs+fl) to the search: for file data, each piece of it that is not
 * busy.  Returns whether some piece could hold the request at all. */
static int consider(const struct req *q, uint32_t fs, uint32_t fl, struct cand *best)
{
	struct cand c;
	uint32_t s = fs, e = fs + fl, gs, ge;
	int any = 0;

	if (!q->busy) {
		if (!fit(q, fs, fl, &c))
			return 0;
		if (cand_better(q, &c, best))
			*best = c;
		return 1;
	}
	for (int first = 1; s < e; first = 0) {
		int found = mfs_busy_gap(q->busy, q->agno, s, e, &gs, &ge);

		if (first && (!found || gs != fs || ge != e))
			mfs_busy_count_trim(q->busy);
		if (!found)
			break;
		if (fit(q, gs, ge - gs, &c)) {
			any = 1;
			if (cand_better(q, &c, best))
				*best = c;
		}
		s = ge;
	}
	return any;
}

/* By length: a bounded walk over extents of at least maxlen, then, if none was full, the
 * largest extents downwards until one fits (exhaustive: finds space whenever any exists). */
static int search_cnt(struct agx *x, const struct req *q, struct cand *best)
{
	struct mfs_btree_cur cur;
	struct mfs_alloc_rec key, r;
	int stat, err, n;

	agx_cur(x, &cur, MFS_BT_CNT, 1);
	arec_set(&key, 0, q->maxlen);
	err = mfs_btree_lookup(&cur, &key, MFS_LOOKUP_GE, &stat);
	for (n = 0; !err && stat && n < SCAN_RECS; n++) {
		err = mfs_btree_get(&cur, &r, &stat);
		if (err || !stat)
			break;
		consider(q, mfs_get32(r.startblock), mfs_get32(r.blockcount), best);
		if (cand_full(q, best) && q->type == MFS_ALLOC_ANY)
			break;
		err = mfs_btree_next(&cur, &stat);
	}
	if (!err && !cand_full(q, best)) {
		arec_set(&key, UINT32_MAX, UINT32_MAX);
		err = mfs_btree_lookup(&cur, &key, MFS_LOOKUP_LE, &stat);
		while (!err && stat) {
			err = mfs_btree_get(&cur, &r, &stat);
			if (err || !stat || mfs_get32(r.blockcount) < q->minlen)
				break;
			if (consider(q, mfs_get32(r.startblock), mfs_get32(r.blockcount), best))
				break;
			err = mfs_btree_prev(&cur, &stat);
		}
	}
	mfs_btree_cur_release(&cur);
	return err;
}

/* Near the target: walk the by-block tree both ways from it, then by length. */
static int search_near(struct agx *x, const struct req *q, struct cand *best)
{
	struct mfs_btree_cur cur;
	struct mfs_alloc_rec key, r;
	uint32_t t = q->target;
	int stat, err, n;

	agx_cur(x, &cur, MFS_BT_BNO, 1);
	arec_set(&key, t, 0);
	err = mfs_btree_lookup(&cur, &key, MFS_LOOKUP_LE, &stat);
	for (n = 0; !err && stat && n < SCAN_RECS; n++) {
		uint32_t fs, fl;

		err = mfs_btree_get(&cur, &r, &stat);
		if (err || !stat)
			break;
		fs = mfs_get32(r.startblock);
		fl = mfs_get32(r.blockcount);
		if (cand_full(q, best) && fs + fl <= t && t - (fs + fl) >= best->dist)
			break;
		consider(q, fs, fl, best);
		err = mfs_btree_prev(&cur, &stat);
	}
	if (!err)
		err = mfs_btree_lookup(&cur, &key, MFS_LOOKUP_GE, &stat);
	for (n = 0; !err && stat && n < SCAN_RECS; n++) {
		uint32_t fs, fl;

		err = mfs_btree_get(&cur, &r, &stat);
		if (err || !stat)
			break;
		fs = mfs_get32(r.startblock);
		fl = mfs_get32(r.blockcount);
		if (cand_full(q, best) && fs - t >= best->dist)
			break;
		consider(q, fs, fl, best);
		err = mfs_btree_next(&cur, &stat);
	}
	mfs_btree_cur_release(&cur);
	if (!err && !cand_full(q, best))
		err = search_cnt(x, q, best);
	return err;
}

static int search_exact(struct agx *x, const struct req *q, struct cand *best)
{
	struct mfs_btree_cur cur;
	struct mfs_alloc_rec key, r;
	int stat, err;

	agx_cur(x, &cur, MFS_BT_BNO, 1);
	arec_set(&key, q->target, 0);
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_LE, &r, &stat);
	if (!err && stat)
		consider(q, mfs_get32(r.startblock), mfs_get32(r.blockcount), best);
	mfs_btree_cur_release(&cur);
	return err;
}

static int ag_search(struct agx *x, const struct req *q0, struct cand *best)
{
	struct req q = *q0;
	uint32_t avail = agx_avail(x);

	best->ok = 0;
	if (q.maxlen > avail)
		q.maxlen = avail;
	if (q.maxlen < q.minlen || mfs_get32(agx_agh(x)->longest) < q.minlen)
		return 0;
	switch (q.type) {
	case MFS_ALLOC_EXACT:
		return search_exact(x, &q, best);
	case MFS_ALLOC_NEAR:
		return search_near(x, &q, best);
	default:
		return search_cnt(x, &q, best);
	}
}

/*
 * Allocate inside one AG: search read-only, plan the list's refill from free space *other
 * than* the extent found (read-only too), check that the reserve for later frees is still
 * there, and only then change anything: refill, take the extent, trim the list.  So every
 * ENOSPC (nothing fits, the list cannot be restocked, the reserve would be touched) leaves
 * the transaction as it was (alloc.h), and mfs_alloc_extent may try another AG; an error
 * after the first change is a real one (I/O, corruption), and the caller must cancel.
 */
static int ag_alloc(struct agx *x, const struct req *q, struct mfs_alloc_args *args)
{
	struct plan *p;
	struct cand c;
	struct avoid av;
	uint64_t nfree, keep, left;
	int err;

	err = ag_search(x, q, &c);
	if (err)
		return err;
	if (!c.ok)
		return -ENOSPC;
	p = mfs_malloc(sizeof(*p));
	if (!p)
		return -ENOMEM;
	av.start = c.bno;
	av.len = c.len;
	err = agfl_plan(x, &av, p);
	if (err)
		goto out;
	/* What stays free after the refill and the extent: at least the reserve (shorten the
	 * extent down to minlen to keep it). */
	nfree = mfs_get32(agx_agh(x)->freeblks);
	keep = mfs_agfl_need(x->fs, agx_agh(x)) + RESV_EXTRA;
	left = nfree >= p->total + c.len ? nfree - p->total - c.len : 0;
	if (left < keep) {
		if (c.len < q->minlen + (keep - left)) {
			err = -ENOSPC;
			goto out;
		}
		c.len -= (uint32_t)(keep - left);
	}
	err = agfl_make(x, p);
	if (!err)
		err = fs_take(x, c.bno, c.len, 0);
	if (!err)
		err = rmap_add(x, c.bno, c.len, args->owner, args->offset);
	if (!err)
		err = agfl_trim(x);
	if (err)
		goto out;
	args->fsb = mfs_agbno_to_fsb(&x->fs->geo, x->agno, c.bno);
	args->len = c.len;
out:
	free(p);
	return err;
}

/* Stock the list before a free.  Allocations leave need + RESV_EXTRA blocks free, which
 * is what this refill takes (a shortfall of at most one operation's splits, plus charges),
 * and every free adds space, so in an AG filled by this allocator the plan succeeds; if
 * it cannot (an AG filled by other means), ENOSPC with nothing changed. */
static int agfl_free_fix(struct agx *x, uint32_t agbno, uint32_t len, uint64_t owner,
			 uint64_t offset)
{
	struct plan *p = mfs_malloc(sizeof(*p));
	int err;

	if (!p)
		return -ENOMEM;
	err = agfl_plan(x, &(struct avoid){ 0, 0 }, p);
	if (err == -ENOSPC)
		mfs_log(MFS_LOG_ERR, "AG %u: no free space to stock the free list before freeing "
			"%u+%u of owner %llu offset 0x%llx", x->agno, agbno, len,
			(unsigned long long)owner, (unsigned long long)offset);
	if (!err)
		err = agfl_make(x, p);
	free(p);
	return err;
}

/* ---- entry points ---------------------------------------------------------------------- */
static int owner_offset_ok(const struct mfs_geom *g, uint64_t owner, uint64_t offset)
{
	uint64_t flags = offset & ~MFS_RMAP_OFF_MASK;

	if (owner == MFS_OWN_NULL || owner == 0 || (owner >= (1ull << 56) && owner < MFS_OWN_MIN))
		return 0;
	if (owner_special(owner))
		return offset == 0;
	if (flags & ~(MFS_RMAP_ATTR_FORK | MFS_RMAP_BMBT_BLOCK))
		return 0;
	return !(flags & MFS_RMAP_BMBT_BLOCK) || !(offset & MFS_RMAP_OFF_MASK);
}

static int args_check(const struct mfs_fs *fs, const struct mfs_alloc_args *args)
{
	if (args->minlen == 0 || args->maxlen < args->minlen ||
	    args->maxlen > fs->geo.agblocks || args->target >= fs->geo.dblocks ||
	    args->align > fs->geo.agblocks ||
	    (args->type != MFS_ALLOC_EXACT && args->type != MFS_ALLOC_NEAR &&
	     args->type != MFS_ALLOC_ANY) ||
	    !owner_offset_ok(&fs->geo, args->owner, args->offset))
		return -EINVAL;
	return 0;
}

/* File data: written in place before its mapping commits, so it must not land on space a
 * transaction not yet durable has freed (busy.h).  Metadata reaches its place only through
 * the journal, after every earlier record: it may reuse busy space. */
static int args_data(const struct mfs_alloc_args *args)
{
	return !owner_special(args->owner) &&
	       !(args->offset & (MFS_RMAP_ATTR_FORK | MFS_RMAP_BMBT_BLOCK));
}

static struct mfs_busy *args_busy(const struct mfs_fs *fs, const struct mfs_alloc_args *args)
{
	return fs->log && args_data(args) ? mfs_journal_busy(fs->log) : NULL;
}

static void req_init(struct req *q, const struct mfs_fs *fs, uint32_t agno,
		     const struct mfs_alloc_args *args, uint32_t target)
{
	q->type = args->type;
	q->target = target;
	q->minlen = args->minlen;
	q->maxlen = args->maxlen;
	q->align = args->align ? args->align : 1;
	q->busy = args_busy(fs, args);
	q->agno = agno;
}

/* A stopped journal (mfs_journal_kill): no change can commit, and the trees of the AG that
 * stopped it may disagree with its reverse map — allocate nothing, say why. */
static int log_dead(const struct mfs_fs *fs)
{
	return fs->log ? mfs_journal_error(fs->log) : 0;
}

int mfs_alloc_extent_ag(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp,
			struct mfs_alloc_args *args)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	struct agx x;
	struct req q;
	uint32_t target = 0;
	int err;

	args->fsb = 0;
	args->len = 0;
	err = log_dead(fs);
	if (!err)
		err = args_check(fs, args);
	if (err)
		return err;
	if (agno >= fs->geo.agcount || !mfs_trans_holds_ag(tp, agno))
		return -EINVAL;
	if (mfs_fsb_to_agno(&fs->geo, args->target) == agno)
		target = mfs_fsb_to_agbno(&fs->geo, args->target);
	else if (args->type == MFS_ALLOC_EXACT)
		return -ENOSPC;
	agx_init(&x, tp, agno, agh_bp);
	req_init(&q, fs, agno, args, target);
	return ag_alloc(&x, &q, args);
}

/* Lock AG agno in tp for a change of its space without risking deadlock: wait only where
 * the lock order allows.  The space lock is what the change needs; when tp does not hold it
 * yet, the inode lock is taken with it, as a transaction that changes an AG's space may
 * log an inode of it next (an order the inode lock alone could not be waited for in). */
static int lock_ag(struct mfs_trans *tp, uint32_t agno)
{
	if (mfs_trans_holds_ag(tp, agno))
		return 0;
	return mfs_trans_lock_agl_ordered(tp, agno, MFS_AGL_ALL);
}

/*
 * Bounded wait for a busy AG.  An online repair rebuilding one AG's trees holds that AG's
 * space lock from its first read to its commit (repair/repair_agbtree.c), which may take
 * seconds on a large AG.  An allocation that may go to another AG (NEAR or ANY, several AGs) waits
 * for a busy AG at most AG_WAIT_BOUND_NS and then moves on to the next AG (-EAGAIN here);
 * only when no other AG can satisfy it does alloc_extent come back and wait for the AGs it
 * skipped without a bound.  The AGs it tried meanwhile stay locked (until the transaction
 * ends), so the lock order may forbid that wait: it then returns -EDEADLK, not -ENOSPC,
 * and the caller retries the transaction as for any lock-order conflict (the daemon does;
 * each try waits the bound again, so a retrying writer waits for the rebuild in steps).
 * A lock held for the usual short time of a transaction is waited for as before, so
 * placement does not change on a quiet filesystem.
 *
 * trans.c only offers a blocking or a try lock; the bounded wait is made of the AG's
 * mutexes themselves: wait for each one tp lacks with a deadline, let it go at once and
 * take them through the transaction with a try lock (another thread may win them in
 * between: then wait again, as long as the deadline allows).
 */
#define AG_WAIT_BOUND_NS 20000000L   /* 20 ms */

static int lock_ag_bounded(struct mfs_trans *tp, uint32_t agno)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	pthread_mutex_t *m[2] = { &fs->ag[agno].ilock, &fs->ag[agno].lock };
	struct timespec deadline;
	int err, rc;

	if (mfs_trans_holds_ag(tp, agno) || !mfs_trans_ag_may_wait(tp, agno, MFS_AGL_ALL))
		return lock_ag(tp, agno);    /* held already, or may not wait at all */
	err = mfs_trans_lock_agl(tp, agno, MFS_AGL_ALL, 1);
	if (err != -EDEADLK)
		return err;
	if (mfs_trans_ag_held_long(tp, agno, MFS_AGL_ALL))
		return -EAGAIN;              /* a rebuild's: no use waiting the bound */
	clock_gettime(CLOCK_MONOTONIC, &deadline);
	deadline.tv_nsec += AG_WAIT_BOUND_NS;
	if (deadline.tv_nsec >= 1000000000L) {
		deadline.tv_sec++;
		deadline.tv_nsec -= 1000000000L;
	}
	for (;;) {
		for (int k = mfs_trans_holds_agl(tp, agno, MFS_AGL_INODES); k < 2; k++) {
			rc = pthread_mutex_clocklock(m[k], CLOCK_MONOTONIC, &deadline);
			if (rc == ETIMEDOUT)
				return -EAGAIN;
			if (rc)
				return -rc;
			pthread_mutex_unlock(m[k]);
		}
		err = mfs_trans_lock_agl(tp, agno, MFS_AGL_ALL, 1);
		if (err != -EDEADLK)
			return err;
	}
}

static int alloc_extent(struct mfs_trans *tp, struct mfs_alloc_args *args);

/*
 * File data that found only busy space: make the freeing transactions durable (one log
 * force, without the AG locks being needed by anything the force waits for: see
 * journal.h) and search once more.  The transaction's own frees stay busy.
 */
int mfs_alloc_extent(struct mfs_trans *tp, struct mfs_alloc_args *args)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	struct mfs_busy *busy;
	struct mfs_busy_stats st;
	int err = alloc_extent(tp, args);

	if (err != -ENOSPC || !(busy = args_busy(fs, args)))
		return err;
	mfs_busy_get_stats(busy, &st);
	if (!st.committed)
		return err;
	mfs_busy_count_force(busy);
	err = mfs_journal_force(fs->log);
	return err ? err : alloc_extent(tp, args);
}

/* Try AG agno (locked by the caller) for args; tagno is the target's AG.  -ENOSPC when it
 * cannot satisfy args, the AG then untouched. */
static int try_ag(struct mfs_trans *tp, struct mfs_alloc_args *args, uint32_t agno,
		  uint32_t tagno)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	uint32_t target = 0;
	struct mfs_buf *agh_bp;
	struct agx x;
	struct req q;
	unsigned nbufs;
	int err;

	err = mfs_read_agh(fs, agno, &agh_bp);
	if (err)
		return err;
	agx_init(&x, tp, agno, agh_bp);
	if (agno == tagno)
		target = mfs_fsb_to_agbno(&fs->geo, args->target);
	else if (args->type == MFS_ALLOC_NEAR && agno < tagno)
		target = x.aglen - 1;    /* nearest the target: this AG's end */
	req_init(&q, fs, agno, args, target);
	nbufs = mfs_trans_nbufs(tp);
	err = ag_alloc(&x, &q, args);
	mfs_buf_put(agh_bp);
	/* Moving on is only safe when this AG was left untouched (ag_alloc's ENOSPC comes
	 * before any change; this guards that promise). */
	if (err == -ENOSPC && mfs_trans_nbufs(tp) != nbufs)
		return MFS_CORRUPT("AG %u: allocator ran out of space after changing the AG (%u "
				   "buffers joined, expected %u)", agno, mfs_trans_nbufs(tp), nbufs);
	return err;
}

static int alloc_extent(struct mfs_trans *tp, struct mfs_alloc_args *args)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	uint32_t tagno, n;
	int err, skipped = 0, deadlock = 0;

	args->fsb = 0;
	args->len = 0;
	err = log_dead(fs);
	if (!err)
		err = args_check(fs, args);
	if (err)
		return err;
	tagno = mfs_fsb_to_agno(&fs->geo, args->target);
	n = args->type == MFS_ALLOC_EXACT ? 1 : fs->geo.agcount;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t agno = (tagno + i) % fs->geo.agcount;

		err = n > 1 ? lock_ag_bounded(tp, agno) : lock_ag(tp, agno);
		if (err == -EAGAIN) {
			skipped = 1;         /* busy for long (a rebuild?): the others first */
			continue;
		}
		if (err == -EDEADLK)
			continue;            /* busy, and waiting could deadlock: skip it */
		if (err)
			return err;
		err = try_ag(tp, args, agno, tagno);
		if (err != -ENOSPC)
			return err;
	}
	/* Nothing elsewhere: wait for the AGs skipped above (those not held now), without a
	 * bound where the lock order allows waiting; where it does not, the space there may
	 * still be had by a retry: -EDEADLK. */
	for (uint32_t i = 0; skipped && i < n; i++) {
		uint32_t agno = (tagno + i) % fs->geo.agcount;

		if (mfs_trans_holds_ag(tp, agno))
			continue;            /* tried above */
		err = lock_ag(tp, agno);
		if (err == -EDEADLK) {
			deadlock = 1;
			continue;
		}
		if (err)
			return err;
		err = try_ag(tp, args, agno, tagno);
		if (err != -ENOSPC)
			return err;
	}
	return deadlock ? -EDEADLK : -ENOSPC;
}

int mfs_free_extent(struct mfs_trans *tp, uint64_t fsb, uint32_t len, uint64_t owner,
		    uint64_t offset)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	uint32_t agno, agbno;
	struct mfs_buf *agh_bp;
	struct agx x;
	int err;

	if (fsb >= fs->geo.dblocks || len == 0 || !owner_offset_ok(&fs->geo, owner, offset))
		return -EINVAL;
	err = log_dead(fs);
	if (err)
		return err;
	agno = mfs_fsb_to_agno(&fs->geo, fsb);
	agbno = mfs_fsb_to_agbno(&fs->geo, fsb);
	if ((uint64_t)agbno + len > mfs_ag_length(&fs->geo, agno) || agbno < MFS_AG_FIXED_BLOCKS)
		return -EINVAL;
	err = lock_ag(tp, agno);
	if (err)
		return err;
	err = mfs_read_agh(fs, agno, &agh_bp);
	if (err)
		return err;
	agx_init(&x, tp, agno, agh_bp);
	err = agfl_free_fix(&x, agbno, len, owner, offset);
	if (!err)
		err = rmap_del(&x, agbno, len, owner, offset);
	if (!err)
		err = fs_give(&x, agbno, len, 0);
	if (!err)
		err = agfl_trim(&x);
	mfs_buf_put(agh_bp);
	return err;
}

int mfs_ag_freeblks(struct mfs_trans *tp, uint32_t agno, uint32_t *freeblks)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	struct mfs_buf *agh_bp;
	int err;

	if (agno >= fs->geo.agcount)
		return -EINVAL;
	err = lock_ag(tp, agno);
	if (err)
		return err;
	err = mfs_read_agh(fs, agno, &agh_bp);
	if (err)
		return err;
	*freeblks = mfs_get32(((struct mfs_agh *)agh_bp->data)->freeblks);
	mfs_buf_put(agh_bp);
	return 0;
}
