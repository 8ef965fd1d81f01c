/*
 * repair_space.c — edits of an AG's two free-space trees for a rebuild that takes free
 * space for its new tree or gives an old tree's blocks back (the reverse-map rebuild,
 * repair_rmapbt.c), without touching the reverse map: the rebuild writes the new
 * reverse map itself, with these blocks' owners already as they will be.
 *
 * Every change is "these free extents go, those come": the by-block tree (key: start) and
 * the by-length tree (key: length, start) always hold the same set of extents, so each
 * edit deletes the old extents from both trees and inserts the new ones into both, in the
 * rebuild's transaction (split blocks come from the AG free list, blocks of emptied tree
 * blocks go back to it: both MFS_OWN_AG, so no owner changes).  Free extents never touch
 * (the by-block tree merges neighbours), and a give merges with both neighbours.  The AG
 * header's counters are the caller's to set once all its edits are made.
 */
#include "repair_ag.h"

#include "ag.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "trans.h"
#include "log.h"

#include <errno.h>
#include <string.h>

static void arec(struct mfs_alloc_rec *r, uint32_t s, uint32_t l)
{
	mfs_put32(r->startblock, s);
	mfs_put32(r->blockcount, l);
}

/* Delete the extents old[] from tree t and insert new[] into it. */
static int tree_swap(struct agrep *ar, enum mfs_ag_tree t, const struct rext *old,
		     unsigned nold, const struct rext *new, unsigned nnew)
{
	struct mfs_btree_cur cur;
	struct mfs_alloc_rec r;
	int stat = 0, err = 0;

	mfs_ag_cur_init(&cur, ar->fs, ar->tp, ar->agno, t, ar->agh_bp);
	for (unsigned i = 0; i < nold && !err; i++) {
		arec(&r, old[i].start, old[i].len);
		err = mfs_btree_lookup(&cur, &r, MFS_LOOKUP_EQ, &stat);
		if (!err && !stat)
			err = rep_fail(ar->r, -EFSCORRUPTED, "AG %u %s: free extent %u+%u is "
				       "missing", ar->agno, cur.ops->name, old[i].start, old[i].len);
		if (!err)
			err = mfs_btree_delete(&cur);
	}
	for (unsigned i = 0; i < nnew && !err; i++) {
		arec(&r, new[i].start, new[i].len);
		err = mfs_btree_insert(&cur, &r);
	}
	mfs_btree_cur_release(&cur);
	return err;
}

static int space_swap(struct agrep *ar, const struct rext *old, unsigned nold,
		      const struct rext *new, unsigned nnew)
{
	int err = tree_swap(ar, MFS_BT_BNO, old, nold, new, nnew);

	if (!err)
		err = tree_swap(ar, MFS_BT_CNT, old, nold, new, nnew);
	return err ? rep_fail(ar->r, err, "AG %u: changing the free-space trees: %s", ar->agno,
			      strerror(-err)) : 0;
}

/* The free extents of the by-block tree at or before s (*lst) and at or after s (*rst). */
static int space_near(struct agrep *ar, uint32_t s, struct rext *l, int *lst, struct rext *r,
		      int *rst)
{
	struct mfs_btree_cur cur;
	struct mfs_alloc_rec key, a, b;
	int err;

	mfs_ag_cur_init(&cur, ar->fs, NULL, ar->agno, MFS_BT_BNO, ar->agh_bp);
	arec(&key, s, 0);
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_LE, &a, lst);
	if (!err)
		err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_GE, &b, rst);
	mfs_btree_cur_release(&cur);
	if (err)
		return rep_fail(ar->r, err, "AG %u: reading the free-space tree: %s", ar->agno,
				strerror(-err));
	l->start = mfs_get32(a.startblock);
	l->len = mfs_get32(a.blockcount);
	r->start = mfs_get32(b.startblock);
	r->len = mfs_get32(b.blockcount);
	return 0;
}

int rep_space_take(struct agrep *ar, uint32_t s, uint32_t l)
{
	struct rext f, nx, rest[2];
	unsigned n = 0;
	int fst, nst, err = space_near(ar, s, &f, &fst, &nx, &nst);

	if (err)
		return err;
	if (!fst || (uint64_t)f.start + f.len < (uint64_t)s + l)
		return rep_fail(ar->r, -EFSCORRUPTED, "AG %u: blocks %u+%u for the new tree are "
				"not free", ar->agno, s, l);
	if (s > f.start)
		rest[n++] = (struct rext){ f.start, s - f.start };
	if (f.start + f.len > s + l)
		rest[n++] = (struct rext){ s + l, f.start + f.len - (s + l) };
	return space_swap(ar, &f, 1, rest, n);
}

int rep_space_give(struct agrep *ar, uint32_t s, uint32_t l)
{
	struct rext lf, rt, nb[2], m = { s, l };
	unsigned n = 0;
	int lst, rst, err = space_near(ar, s, &lf, &lst, &rt, &rst);

	if (err)
		return err;
	if ((lst && (uint64_t)lf.start + lf.len > s) || (rst && rt.start < s + l))
		return rep_fail(ar->r, -EFSCORRUPTED, "AG %u: blocks %u+%u to free overlap free "
				"space", ar->agno, s, l);
	if (lst && lf.start + lf.len == s) {
		nb[n++] = lf;
		m.start = lf.start;
		m.len += lf.len;
	}
	if (rst && rt.start == s + l) {
		nb[n++] = rt;
		m.len += rt.len;
	}
	err = mfs_trans_busy(ar->tp, ar->agno, s, l);
	if (err)
		return rep_fail(ar->r, err, "AG %u: no memory to keep blocks %u+%u busy",
				ar->agno, s, l);
	return space_swap(ar, nb, n, &m, 1);
}

int rep_space_longest(struct agrep *ar, uint32_t *longest)
{
	struct mfs_btree_cur cur;
	struct mfs_alloc_rec key, r;
	int stat = 0, err;

	*longest = 0;
	mfs_ag_cur_init(&cur, ar->fs, NULL, ar->agno, MFS_BT_CNT, ar->agh_bp);
	arec(&key, UINT32_MAX, UINT32_MAX);
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_LE, &r, &stat);
	mfs_btree_cur_release(&cur);
	if (!err && stat)
		*longest = mfs_get32(r.blockcount);
	return err ? rep_fail(ar->r, err, "AG %u: reading the by-length tree: %s", ar->agno,
			      strerror(-err)) : 0;
}
