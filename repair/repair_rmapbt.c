/*
 * repair_rmapbt.c — rebuilder of an AG's reverse-map btree.
 *
 * Online and offline alike.  The records come from every owner: the fixed blocks (fs), the
 * journal (log), the free-space trees' blocks and the AGFL stock (ag), the inode btree's
 * blocks (inobt) and its chunks (inodes), read under the AG lock; and every inode in use in
 * any AG (its extents and tree blocks in this AG), scanned first without the AG lock and
 * then settled under it against the old tree, so that inodes changing meanwhile are seen
 * as they are at the commit (repair_rmap_live.c explains how, and why it is sound; an
 * owner whose own map seems to be the damaged side makes the rebuild refuse rather than
 * free its data).  What is neither free (the by-block tree, trusted and verified) nor
 * owned is the old reverse map's blocks (and any leaked block).  The new tree is written
 * as ordered new blocks (trans.h) into free space that nothing on disk points at until the
 * commit swaps the root, and the new tree gives the old tree's blocks to MFS_OWN_AG.  With
 * a journal, the free-space trees give up the new tree's blocks after the commit, and the
 * old tree's blocks are freed then too, under the same AG lock, in bounded transactions
 * (repair_reap.c; take_late); without one, the free-space trees give them up in the same
 * transaction (see "ordered" below).  The commit logs only the header and the free list,
 * whatever the size of the tree, so a small journal rebuilds a large reverse map, and
 * what the rebuild pins does not grow with it.  When free space
 * cannot hold the tree with a margin, the old way: the old blocks become MFS_OWN_AG, the
 * new tree is written into their first blocks (joined and logged: a commit that must fit
 * the journal), and the rest goes onto the AGFL (as far as it has room) or back to free
 * space once the new tree is in place; the record count does not depend on which of
 * those blocks the tree takes (all of them are MFS_OWN_AG), so that geometry needs no
 * iteration.  Two owners of one block (cross-linked), or a block both
 * free and owned, cannot be rebuilt: -EFSCORRUPTED naming it.
 */
#include "repair_ag.h"
#include "repair_rmap_live.h"

#include "ag.h"
#include "alloc.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "mem.h"
#include "trans.h"
#include "verify.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct rgather {
	struct agrep *ar;
	struct mfs_xfarray *R, *F;
	struct mfs_xfarray *Q;       /* the special owners' records, when not NULL (radd);
				      * full, they go on in R (spec_in_r) */
	int spec_in_r;
	struct rep_lenhist *h;
	int err;
	uint32_t own_last;           /* start of the last owner's record gathered */
	int own_unsorted;            /* the owners' records did not come in block order */
};

static int radd(struct rgather *g, uint32_t s, uint32_t l, uint64_t owner, uint64_t offset)
{
	struct mfs_rmap_rec rec;
	int err;

	if (!l || (uint64_t)s + l > g->ar->aglen)
		return rep_fail(g->ar->r, -EFSCORRUPTED, "AG %u: owner %llu claims blocks %u+%u "
				"outside the AG", g->ar->agno, (unsigned long long)owner, s, l);
	memset(&rec, 0, sizeof(rec));
	mfs_put32(rec.startblock, s);
	mfs_put32(rec.blockcount, l);
	mfs_put64(rec.owner, owner);
	mfs_put64(rec.offset, offset);
	if (g->Q && !g->spec_in_r) {
		err = mfs_xfarray_append(g->Q, &rec, NULL);
		if (err != -EFBIG)
			return err ? rep_scratch_err(g->ar->r, err, "gathering reverse mappings") : 0;
		g->spec_in_r = 1;           /* more than planned: rsrc_init sorts R whole */
	}
	err = mfs_xfarray_append(g->R, &rec, NULL);
	return err ? rep_scratch_err(g->ar->r, err, "gathering reverse mappings") : 0;
}

struct rvisit {
	struct rgather *g;
	uint64_t owner;
	uint64_t blocks;
};

static int rvisit_fn(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	struct rvisit *v = priv;

	v->blocks++;
	return radd(v->g, mfs_fsb_to_agbno(&cur->fs->geo, fsb), 1, v->owner, 0);
}

static int rtree_blocks(struct rgather *g, enum mfs_ag_tree t, uint64_t owner, uint64_t *n)
{
	struct agrep *ar = g->ar;
	struct rvisit v = { g, owner, 0 };
	struct mfs_btree_cur cur;
	uint64_t nrecs, nblocks;
	int err;

	/* one walk: checked, and its blocks listed (no set of the blocks seen) */
	mfs_ag_cur_init(&cur, ar->fs, NULL, ar->agno, t, ar->agh_bp);
	cur.flags = MFS_BTREE_CUR_ONCE;
	err = mfs_btree_verify_visit(&cur, rvisit_fn, &v, &nrecs, &nblocks);
	mfs_btree_cur_release(&cur);
	if (err && err != -ECANCELED && !ar->r->rc->reason[0])
		return rep_fail(ar->r, err, "AG %u %s is damaged (%s): the reverse map is rebuilt "
				"from it; repair it first", ar->agno, cur.ops->name, strerror(-err));
	if (n)
		*n = v.blocks;
	return err;
}

static int rfree_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_alloc_rec *a = rec;
	struct rgather *g = priv;
	struct rext e = { mfs_get32(a->startblock), mfs_get32(a->blockcount) };
	struct rep_lenhist *h = g->h;
	int err = mfs_xfarray_append(g->F, &e, NULL);

	if (err)
		return rep_scratch_err(g->ar->r, err, "gathering free extents");
	return rep_lh_add(g->ar, h, e.len);
}

static int rchunk_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_inobt_rec *ir = rec;
	struct rgather *g = priv;
	const struct mfs_geom *geo = &cur->fs->geo;

	return radd(g, mfs_agino_to_agbno(geo, mfs_get32(ir->startino)), geo->chunkblocks,
		    MFS_OWN_INODES, 0);
}

static int remit_fn(void *priv, const struct mfs_rmap_rec *rec)
{
	struct rgather *g = priv;
	uint32_t start = mfs_get32(rec->startblock);

	if (mfs_xfarray_count(g->R) && start < g->own_last)
		g->own_unsorted = 1;
	g->own_last = start;
	return radd(priv, start, mfs_get32(rec->blockcount), mfs_get64(rec->owner),
		    mfs_get64(rec->offset));
}

static int cmp_rmap(const void *a, const void *b, void *priv)
{
	uint32_t x = mfs_get32(((const struct mfs_rmap_rec *)a)->startblock);
	uint32_t y = mfs_get32(((const struct mfs_rmap_rec *)b)->startblock);

	return x < y ? -1 : x > y;
}

static int rmap_special(uint64_t owner)
{
	return owner >= MFS_OWN_MIN;
}

int rep_rmap_follows(const struct mfs_rmap_rec *a, const struct mfs_rmap_rec *b)
{
	uint64_t ao = mfs_get64(a->owner), aoff = mfs_get64(a->offset);
	uint64_t boff = mfs_get64(b->offset);

	if (ao != mfs_get64(b->owner) ||
	    mfs_get32(a->startblock) + mfs_get32(a->blockcount) != mfs_get32(b->startblock) ||
	    (aoff & ~MFS_RMAP_OFF_MASK) != (boff & ~MFS_RMAP_OFF_MASK))
		return 0;
	if (rmap_special(ao) || (aoff & MFS_RMAP_BMBT_BLOCK))
		return aoff == boff;
	return (aoff & MFS_RMAP_OFF_MASK) + mfs_get32(a->blockcount) ==
	       (boff & MFS_RMAP_OFF_MASK);
}

/* The merged, gap-filled records, and the old reverse-map blocks (the gaps, in scratch:
 * one per old tree block in a fragmented AG, so as many as the records / 100 or so). */
struct rmerge {
	struct agrep *ar;
	struct mfs_xfarray *out;
	struct mfs_rmap_rec pend;
	int have;
	struct mfs_xfarray *G;       /* the gaps (struct rext), in block order */
	uint64_t ngaps, gapblocks;
};

static int rm_emit(struct rmerge *m, const struct mfs_rmap_rec *rec)
{
	int err = 0;

	if (m->have && rep_rmap_follows(&m->pend, rec)) {
		mfs_put32(m->pend.blockcount, mfs_get32(m->pend.blockcount) +
			  mfs_get32(rec->blockcount));
		return 0;
	}
	if (m->have)
		err = mfs_xfarray_append(m->out, &m->pend, NULL);
	m->pend = *rec;
	m->have = 1;
	return err ? rep_scratch_err(m->ar->r, err, "merging reverse mappings") : 0;
}

/* [s, e) is neither owned nor free: an old reverse-map (or leaked) block range. */
static int rm_gap(struct rmerge *m, uint32_t s, uint32_t e)
{
	struct rext gap = { s, e - s };
	struct mfs_rmap_rec rec;
	int err;

	if (s >= e)
		return 0;
	err = mfs_xfarray_append(m->G, &gap, NULL);
	if (err)
		return rep_scratch_err(m->ar->r, err, "listing the old reverse map's blocks");
	m->ngaps++;
	m->gapblocks += e - s;
	memset(&rec, 0, sizeof(rec));
	mfs_put32(rec.startblock, s);
	mfs_put32(rec.blockcount, e - s);
	mfs_put64(rec.owner, MFS_OWN_AG);
	return rm_emit(m, &rec);
}

/* Walk the sorted records and the free extents together: records must not overlap each
 * other or free space; the holes left are gaps. */
/*
 * The gathered records in block order: R sorted whole, or (the fast way) R — the owners'
 * records, found in block order as they came — merged with Q, the special owners' records
 * (the AG's own trees, chunks and free list), sorted apart.  Q is planned from the AG
 * header's counts; should it overflow, the rest went on in R (radd), and R is sorted
 * whole, Q's records added.  Both live in scratch: a fragmented AG's free-space trees
 * alone are a special record per block, hundreds of thousands.
 */
struct rsrc {
	struct mfs_xfarray *R, *Q;
	uint64_t i, n, qi, qn;
	struct mfs_rmap_rec next, qnext;  /* R's and Q's next records, read ahead */
	int have, qhave;
};

static int rsrc_next(struct rsrc *q, struct mfs_rmap_rec *rec)
{
	int err;

	if (!q->have && q->i < q->n) {
		err = mfs_xfarray_get(q->R, q->i++, &q->next);
		if (err)
			return err;
		q->have = 1;
	}
	if (!q->qhave && q->qi < q->qn) {
		err = mfs_xfarray_get(q->Q, q->qi++, &q->qnext);
		if (err)
			return err;
		q->qhave = 1;
	}
	if (q->have && (!q->qhave || mfs_get32(q->qnext.startblock) >
			mfs_get32(q->next.startblock))) {
		*rec = q->next;
		q->have = 0;
		return 1;
	}
	if (q->qhave) {
		*rec = q->qnext;
		q->qhave = 0;
		return 1;
	}
	return 0;
}

/* The gathered records in block order (see struct rsrc). */
static int rsrc_init(struct rep *r, struct rgather *g, struct rsrc *q)
{
	uint64_t nq = g->Q ? mfs_xfarray_count(g->Q) : 0;
	int err = 0;

	memset(q, 0, sizeof(*q));
	q->R = g->R;
	q->Q = g->Q;
	if (g->own_unsorted || g->spec_in_r) {
		for (uint64_t k = 0; k < nq && !err; k++) {
			struct mfs_rmap_rec rec;

			err = mfs_xfarray_get(g->Q, k, &rec);
			if (!err)
				err = mfs_xfarray_append(g->R, &rec, NULL);
		}
		if (err)
			return rep_scratch_err(r, err, "gathering reverse mappings");
		nq = 0;
		err = rep_sort(r, g->R, cmp_rmap, "sorting the reverse mappings");
	} else if (nq) {
		err = rep_sort(r, g->Q, cmp_rmap, "sorting the AG's own records");
	}
	q->n = mfs_xfarray_count(g->R);
	q->qn = nq;
	return err;
}

static int rmerge_all(struct rmerge *m, struct rsrc *q, struct mfs_xfarray *F)
{
	struct agrep *ar = m->ar;
	uint64_t nf = mfs_xfarray_count(F), fi = 0;
	struct rext fe = { UINT32_MAX, 0 };
	uint32_t pos = 0;
	int err = 0, more = 1;

	if (nf) {
		err = mfs_xfarray_get(F, fi++, &fe);
		if (err)
			return rep_scratch_err(ar->r, err, "reading free extents");
	}
	while (more && !err) {
		struct mfs_rmap_rec rec;
		uint32_t s = ar->aglen, l = 0;

		more = rsrc_next(q, &rec);
		if (more < 0)
			return rep_scratch_err(ar->r, more, "reading reverse mappings");
		if (more) {
			s = mfs_get32(rec.startblock);
			l = mfs_get32(rec.blockcount);
		}
		if (s < pos)
			return rep_fail(ar->r, -EFSCORRUPTED, "AG %u: blocks %u+%u are claimed by "
					"owner %llu and by another owner too (cross-linked): this "
					"cannot be rebuilt", ar->agno, s, l,
					(unsigned long long)mfs_get64(rec.owner));
		/* the space between pos and s: free extents and gaps */
		while (pos < s && !err) {
			if (fe.start < pos)
				return rep_fail(ar->r, -EFSCORRUPTED, "AG %u: free extent %u+%u "
						"overlaps owned space", ar->agno, fe.start, fe.len);
			if (fe.start >= s) {
				err = rm_gap(m, pos, s);
				pos = s;
				break;
			}
			err = rm_gap(m, pos, fe.start);
			if ((uint64_t)fe.start + fe.len > s)
				return rep_fail(ar->r, -EFSCORRUPTED, "AG %u: free extent %u+%u "
						"overlaps blocks %u+%u owned by %llu", ar->agno,
						fe.start, fe.len, s, l,
						(unsigned long long)mfs_get64(rec.owner));
			pos = fe.start + fe.len;
			fe.start = UINT32_MAX;
			if (fi < nf) {
				err = mfs_xfarray_get(F, fi++, &fe);
				if (err)
					err = rep_scratch_err(ar->r, err, "reading free extents");
			}
		}
		if (fe.start < s + l && fe.start != UINT32_MAX && more)
			return rep_fail(ar->r, -EFSCORRUPTED, "AG %u: free extent %u+%u overlaps "
					"blocks %u+%u owned by %llu", ar->agno, fe.start, fe.len,
					s, l, (unsigned long long)mfs_get64(rec.owner));
		if (!err && more) {
			err = rm_emit(m, &rec);
			pos = s + l;
		}
	}
	if (!err && m->have)
		err = mfs_xfarray_append(m->out, &m->pend, NULL) ?
		      rep_scratch_err(ar->r, -ENOMEM, "merging reverse mappings") : 0;
	return err;
}

/* Leftover old blocks past what the AGFL takes: back to free space, through the new tree. */
static int rfree_left(struct agrep *ar, uint32_t s, uint32_t l)
{
	const struct mfs_geom *g = &ar->fs->geo;
	int err = mfs_free_extent(ar->tp, mfs_agbno_to_fsb(g, ar->agno, s), l, MFS_OWN_AG, 0);

	for (uint32_t b = 0; b < l && !err; b++)
		err = mfs_trans_forget(ar->tp, mfs_agbno_to_fsb(g, ar->agno, s + b));
	return err ? rep_fail(ar->r, err, "AG %u: freeing old reverse-map blocks %u+%u: %s",
			      ar->agno, s, l, strerror(-err)) : 0;
}

/* ---- ordered: the new tree written into free space ----------------------------------------
 *
 * The new tree N goes into blocks nothing on disk points at until the commit swaps the
 * root: free space, the longest free extents first (fewest pieces; never the free list's
 * stock, whose blocks may still have images in the log that a checkpoint would write over
 * them: freed blocks were revoked when they were freed).  The old tree's blocks and any leaked block
 * (the gaps G: neither free nor anybody's) are not touched before the commit; the new
 * tree gives them to MFS_OWN_AG (R2 holds a record for each gap) and the reap frees them
 * after it, except those that keep the free list stocked for the splits of the
 * free-space trees while N changes hands (taken from the end of G, MFS_OWN_AG like the
 * rest of the list).  The list holds only MFS_AGFL_SIZE_MAX
 * blocks, and the trees' edits give blocks back to it as they empty tree blocks: when it
 * would overflow, blocks off its head go back to free space (D: AG-owned blocks that
 * leave the records).  So the new
 * records are the merged owners' records R2 with N's pieces taken from free space added
 * to MFS_OWN_AG and without D, merged where they touch an AG-owned neighbour.  The tree's
 * size depends on
 * that count, which depends on how many pieces N takes: planned from the free extents'
 * lengths, then with N counted by binary search in R2 (one more record per added
 * range, one less per merge), with a margin for D; once the edits are made the records
 * are counted exactly (one pass) and what the tree does not need of N goes onto the free
 * list.  The free-space trees are changed with rep_space_take/give (repair_space.c),
 * logged; the tree is written in place
 * (MFS_BLOAD_ORDERED) with its blocks' old bytes kept in scratch for a cancel.
 *
 * Late (a journal attached): N's pieces leave free space only after the commit (one change
 * of a free-space leaf each, hundreds of thousands in a fragmented AG, which the commit
 * would pin), in rolled transactions under the AG's reap mark (take_late); before the
 * commit they are only checked to be there in both trees.  Until the last take the trees
 * list blocks of the new tree as free, so the AG is not fit to be seen — the lock is held
 * throughout — and a take that fails stops the journal: nothing may be allocated from
 * those trees; the next mount rebuilds them from the new reverse map (the mark).  Drains
 * of the free list then cut their block out of the new records (rep_rmap_cut), and the
 * extras go onto the list after the takes, or are reaped.
 */
static int cmp_rext_start(const void *a, const void *b)
{
	const struct rext *x = a, *y = b;

	return x->start < y->start ? -1 : x->start > y->start;
}

/* dst = the ranges of x and y, sorted, touching ones joined. */
static int addset_union(struct agrep *ar, const struct rep_addset *x, const struct rep_addset *y,
			struct rep_addset *dst)
{
	uint64_t k = 0;
	int err = 0;

	dst->n = 0;
	for (uint64_t i = 0; i < x->n && !err; i++)
		err = rep_addset_push(ar, dst, x->v[i].start, x->v[i].len);
	for (uint64_t i = 0; i < y->n && !err; i++)
		err = rep_addset_push(ar, dst, y->v[i].start, y->v[i].len);
	if (err || !dst->n)
		return err;
	qsort(dst->v, dst->n, sizeof(*dst->v), cmp_rext_start);
	for (uint64_t i = 1; i < dst->n; i++) {
		if (dst->v[k].start + dst->v[k].len == dst->v[i].start)
			dst->v[k].len += dst->v[i].len;
		else
			dst->v[++k] = dst->v[i];
	}
	dst->n = k + 1;
	return 0;
}

static struct mfs_rmap_rec ag_rec(uint32_t s, uint32_t l)
{
	struct mfs_rmap_rec r;

	memset(&r, 0, sizeof(r));
	mfs_put32(r.startblock, s);
	mfs_put32(r.blockcount, l);
	mfs_put64(r.owner, MFS_OWN_AG);
	return r;
}

/* The record count of R2 with the ranges of a added to MFS_OWN_AG: *n. */
static int added_count(struct agrep *ar, struct mfs_xfarray *R2, const struct rep_addset *a,
		       uint64_t *n)
{
	uint64_t nr = mfs_xfarray_count(R2), idx;
	struct mfs_rmap_rec key, l, rr;
	int err;

	*n = nr;
	for (uint64_t i = 0; i < a->n; i++) {
		struct mfs_rmap_rec rec;
		struct rext e;

		err = rep_addset_get(a, i, &e);
		if (err)
			return rep_scratch_err(ar->r, err, "counting the new records");
		rec = ag_rec(e.start, e.len);
		key = rec;
		err = mfs_xfarray_bsearch(R2, &key, cmp_rmap, NULL, &idx, NULL);
		if (!err)
			return rep_fail(ar->r, -EFSCORRUPTED, "internal: blocks %u+%u for the new "
					"reverse map are somebody's", e.start, e.len);
		if (err != -ENOENT)
			return rep_scratch_err(ar->r, err, "counting the new records");
		++*n;
		if (idx) {
			err = mfs_xfarray_get(R2, idx - 1, &l);
			if (err)
				return rep_scratch_err(ar->r, err, "counting the new records");
			*n -= (uint64_t)rep_rmap_follows(&l, &rec);
		}
		if (idx < nr) {
			err = mfs_xfarray_get(R2, idx, &rr);
			if (err)
				return rep_scratch_err(ar->r, err, "counting the new records");
			*n -= (uint64_t)rep_rmap_follows(&rec, &rr);
		}
	}
	return 0;
}

/* The records R2 with the added ranges (a) and without the removed blocks (d, AG-owned
 * blocks of R2 that went back to free space), merged, in order: the loader's source, and
 * (counting only) the exact record count. */
struct ostream {
	struct agrep *ar;
	struct mfs_xfarray *R2;
	const struct rep_addset *a, *d;
	uint64_t ri, nr, ai, di, out;
	struct mfs_rmap_rec cur;     /* the rest of the R2 record being cut by d */
	int have_cur;
	struct mfs_rmap_rec next;    /* the next R2 piece, not yet taken */
	int have_next, r_end;
	struct mfs_rmap_rec pend;
	int have;
	struct rext acur;            /* a's piece ai, read when have_a */
	int have_a;
};

/* The next R2 record, or what d leaves of it: 1, 0 at the end, or an error. */
static int ostream_r2(struct ostream *o, struct mfs_rmap_rec *in)
{
	for (;;) {
		uint32_t s, e;

		if (!o->have_cur) {
			int err;

			if (o->ri >= o->nr)
				return 0;
			err = mfs_xfarray_get(o->R2, o->ri++, &o->cur);
			if (err)
				return rep_scratch_err(o->ar->r, err, "loading the new reverse map");
			o->have_cur = 1;
		}
		s = mfs_get32(o->cur.startblock);
		e = s + mfs_get32(o->cur.blockcount);
		while (o->di < o->d->n && o->d->v[o->di].start + o->d->v[o->di].len <= s)
			o->di++;
		if (o->di >= o->d->n || o->d->v[o->di].start >= e ||
		    mfs_get64(o->cur.owner) != MFS_OWN_AG) {
			*in = o->cur;
			o->have_cur = 0;
			return 1;
		}
		/* a removed range cuts this AG-owned record */
		{
			const struct rext *dr = &o->d->v[o->di];
			uint32_t de = dr->start + dr->len < e ? dr->start + dr->len : e;

			if (dr->start > s) {
				*in = ag_rec(s, dr->start - s);
				if (de < e)
					o->cur = ag_rec(de, e - de);
				else
					o->have_cur = 0;
				return 1;
			}
			if (de >= e)
				o->have_cur = 0;
			else
				o->cur = ag_rec(de, e - de);
		}
	}
}

static int ostream_in(struct ostream *o, struct mfs_rmap_rec *in)
{
	if (!o->have_next && !o->r_end) {
		int more = ostream_r2(o, &o->next);

		if (more < 0)
			return more;
		o->have_next = more;
		o->r_end = !more;
	}
	if (!o->have_a && o->ai < o->a->n) {
		int err = rep_addset_get(o->a, o->ai, &o->acur);

		if (err)
			return rep_scratch_err(o->ar->r, err, "loading the new reverse map");
		o->have_a = 1;
	}
	if (o->have_next && (!o->have_a || mfs_get32(o->next.startblock) < o->acur.start)) {
		*in = o->next;
		o->have_next = 0;
		return 1;
	}
	if (o->have_a) {
		*in = ag_rec(o->acur.start, o->acur.len);
		o->ai++;
		o->have_a = 0;
		return 1;
	}
	return 0;
}

static int ostream_get(void *priv, void *out)
{
	struct ostream *o = priv;
	struct mfs_rmap_rec in;
	int more;

	for (;;) {
		more = ostream_in(o, &in);
		if (more < 0)
			return more;
		if (!more)
			break;
		if (o->have && rep_rmap_follows(&o->pend, &in)) {
			mfs_put32(o->pend.blockcount, mfs_get32(o->pend.blockcount) +
				  mfs_get32(in.blockcount));
			continue;
		}
		if (o->have) {
			if (out)
				memcpy(out, &o->pend, sizeof(o->pend));
			o->pend = in;
			o->out++;
			return 0;
		}
		o->pend = in;
		o->have = 1;
	}
	if (!o->have)
		return 1;                   /* the end */
	if (out)
		memcpy(out, &o->pend, sizeof(o->pend));
	o->have = 0;
	o->out++;
	return 0;
}

static void ostream_init(struct ostream *o, struct agrep *ar, struct mfs_xfarray *R2,
			 const struct rep_addset *a, const struct rep_addset *d)
{
	memset(o, 0, sizeof(*o));
	o->ar = ar;
	o->R2 = R2;
	o->a = a;
	o->d = d;
	o->nr = mfs_xfarray_count(R2);
}

/* The loader's source: the end of the stream before nrecs records is an internal error. */
static int ostream_load(void *priv, void *out)
{
	struct ostream *o = priv;
	int err = ostream_get(priv, out);

	return err > 0 ? rep_fail(o->ar->r, -EFSCORRUPTED, "internal: the new reverse map has "
				  "fewer records than counted") : err;
}

/* Exact count of the stream's records. */
static int ostream_count(struct agrep *ar, struct mfs_xfarray *R2, const struct rep_addset *a,
			 const struct rep_addset *d, uint64_t *n)
{
	struct ostream o;
	int err;

	ostream_init(&o, ar, R2, a, d);
	while (!(err = ostream_get(&o, NULL)))
		if (o.out % 65536 == 0 && (err = rep_poll(ar->r)))
			return err;
	*n = o.out;
	return err > 0 ? 0 : err;
}

/* Free-list bounds around the edits: enough for one edit's splits of both free-space
 * trees, and room left for the blocks an edit can give back. */
static uint32_t fl_count(const struct agrep *ar)
{
	return mfs_get32(rep_agh(ar)->fl_count);
}

struct ordered {
	struct agrep *ar;
	struct rmerge *m;
	struct mfs_xfarray *R2, *F;
	struct rep_lenhist *h;
	uint64_t nbno, ncnt;
	struct rep_addset N, D;      /* taken from free space (in scratch: in block order,
				      * never touching — each is a free extent or its end);
				      * AG-owned blocks of R2 freed */
	uint64_t gtaken;             /* blocks of G's end stocked onto the free list */
	uint64_t gback;              /* G's extents not yet (wholly) stocked... */
	uint32_t gbacklen;           /* ...and blocks left in the last of them, */
	uint32_t gbacklen_start;     /* which starts here */
	int late;                    /* N's pieces leave free space after the commit (a
				      * journal attached: take_late) */
	struct blocks b;             /* N's blocks; the tree's first, the extras after */
	uint64_t mblk;               /* blocks of the new tree */
	uint64_t freed, taken;       /* blocks given back to free space; taken from it */
	uint64_t puts, gets;         /* free-list blocks put and got by the plan */
	uint32_t need;               /* free-list stock one edit may use, or give back */
	uint64_t ucap;               /* blocks whose old bytes the undo array can hold */
};

#define PLAN_SLACK_RECS 64u      /* records the free list's drains may add (see fl_drain) */

/*
 * Room on the free list for `more` blocks: the free-space trees give blocks back to it as
 * their edits empty tree blocks, and it holds MFS_AGFL_SIZE_MAX.  Blocks off its head go
 * back to free space (busy, their buffers dropped): one of G's kept for the list is given
 * back like the rest of G; any other is AG-owned in R2 and leaves the new records (D).
 */
static int fl_drain(struct ordered *o, uint32_t more)
{
	struct agrep *ar = o->ar;
	int err = 0;

	while (!err && fl_count(ar) + more > MFS_AGFL_SIZE_MAX) {
		uint32_t b;

		err = mfs_agfl_get(ar->tp, ar->agno, ar->agh_bp, &b);
		if (err)
			return rep_fail(ar->r, err, "AG %u: taking a block off the free list: %s",
					ar->agno, strerror(-err));
		o->gets++;
		err = rep_addset_push(ar, &o->D, b, 1);
		if (!err)
			err = rep_space_give(ar, b, 1);
		if (!err)
			err = rep_forget_blocks(ar, b, 1);
		o->freed++;
	}
	return err;
}

/* Gap i (of G, in scratch): 0 or an error, reported. */
static int gap_get(struct ordered *o, uint64_t i, struct rext *e)
{
	int err = mfs_xfarray_get(o->m->G, i, e);

	return err ? rep_scratch_err(o->ar->r, err, "reading the old reverse map's blocks") : 0;
}

/* The next block of G from its end (AG-owned in R2: a free-list block stays so) onto the
 * free list; 1 when G has none left. */
static int gap_stock_one(struct ordered *o)
{
	struct rext e;
	int err;

	while (!o->gbacklen) {
		if (!o->gback)
			return 1;
		err = gap_get(o, --o->gback, &e);
		if (err)
			return err;
		o->gbacklen = e.len;
		o->gbacklen_start = e.start;
	}
	o->gbacklen--;
	err = rep_agfl_put_old(o->ar, o->gbacklen_start + o->gbacklen);
	o->puts++;
	o->gtaken++;
	return err;
}

/*
 * The free list stocked from the end of G (the gaps, in block order: AG-owned in R2, so the
 * list's blocks stay so); the rest of G is left to the reap after the commit.  o->gtaken:
 * the blocks taken from G's end.
 */
static int stock_from_gaps(struct ordered *o)
{
	int err = 0;

	o->gback = o->m->ngaps;
	o->gbacklen = 0;
	while (!err && fl_count(o->ar) < o->need)
		err = gap_stock_one(o);
	return err < 0 ? err : 0;
}

/* How many blocks to take from free space for the new tree, and which (o->N): enough for
 * its records counted with N itself and a margin for the free list's drains. */
static int plan_new(struct ordered *o, uint64_t *take)
{
	struct agrep *ar = o->ar;
	uint32_t bs = ar->fs->geo.blocksize;
	uint64_t c0 = mfs_xfarray_count(o->R2) + PLAN_SLACK_RECS, t, above, pieces, m = 0, n;
	uint32_t L;
	int err;

	rep_lh_sort(o->h);
	/* from the lengths alone, as if nothing merged */
	t = rep_geo_blocks(&mfs_rmapbt_ops, bs, c0 + 1, NULL);
	for (unsigned round = 0; round < 16 && t != UINT64_MAX; round++) {
		uint64_t t2;

		if (rep_lh_pick(o->h, t, &L, &above, &pieces))
			break;                   /* rep_pick_free says so */
		t2 = rep_geo_blocks(&mfs_rmapbt_ops, bs, c0 + pieces, NULL);
		if (t2 <= t)
			break;
		t = t2;
	}
	/* then exactly, until it settles (a last overshoot is spare blocks) */
	for (unsigned round = 0; round < 16 && t != UINT64_MAX; round++) {
		err = rep_pick_free(ar, o->F, o->h, t, &o->N, "new reverse map");
		if (!err)
			err = added_count(ar, o->R2, &o->N, &n);
		if (err)
			return err;
		m = rep_geo_blocks(&mfs_rmapbt_ops, bs, n + PLAN_SLACK_RECS, NULL);
		if (m == t || (m < t && (round >= 4 || t - m <= 8)))
			break;
		t = round < 8 || m > t ? m : t;
	}
	if (m > t || t == UINT64_MAX)
		return rep_fail(ar->r, -EAGAIN, "AG %u: the size of the new reverse map did not "
				"settle; nothing was changed, try again", ar->agno);
	*take = t;
	return 0;
}

/* Blocks the free list must hold before N's next piece leaves free space: one take
 * inserts at most one record into the by-block tree and two into the by-length tree. */
static uint32_t take_need(const struct agrep *ar)
{
	const struct mfs_agh *agh = rep_agh(ar);

	return mfs_get32(agh->levels[MFS_BT_BNO]) + 1 + 2 * (mfs_get32(agh->levels[MFS_BT_CNT]) + 1);
}

static int rmap_ordered(struct ordered *o, struct mfs_xfarray *U)
{
	struct agrep *ar = o->ar;
	struct mfs_agh *agh = rep_agh(ar);
	struct blocks *b = &o->b;
	struct rep_addset none = { NULL, 0, 0, NULL }, dn = { NULL, 0, 0, NULL };
	struct ostream os;
	struct mfs_btree_root root;
	uint64_t take = 0, mblk = 0, extra = 0, nrecs = 0, nimg, nrev;
	uint32_t fl0 = fl_count(ar), longest, freeblks;
	int err = 0;

	o->need = mfs_agfl_need(ar->fs, agh);
	err = stock_from_gaps(o);
	if (!err)
		err = plan_new(o, &take);
	/* N's pieces out of free space (the free list feeds their splits); late, only checked
	 * now (read only: a take after the commit must not find the trees disagree) */
	for (uint64_t i = 0; !err && i < o->N.n; i++) {
		struct rext e;

		err = rep_addset_get(&o->N, i, &e);
		if (err) {
			err = rep_scratch_err(ar->r, err, "reading the new reverse map's pieces");
			break;
		}
		if (o->late) {
			err = mfs_freesp_check(ar->fs, ar->agno, ar->agh_bp, e.start, e.len);
			if (err)
				err = rep_fail(ar->r, err, "AG %u: the free-space trees disagree "
					       "about blocks %u+%u for the new reverse map (%s): "
					       "nothing was changed; repair the free-space trees "
					       "first", ar->agno, e.start, e.len, strerror(-err));
			else if (++ar->seen % 4096 == 0)
				err = rep_poll(ar->r);
			continue;
		}
		err = fl_drain(o, o->need);
		if (!err && fl_count(ar) < take_need(ar))
			err = rep_fail(ar->r, -EAGAIN, "AG %u: the free list ran short while "
				       "taking free space for the new reverse map; nothing was "
				       "changed, try again", ar->agno);
		if (!err)
			err = rep_space_take(ar, e.start, e.len);
		o->taken += e.len;
	}
	/* The exact count now that the edits are made; what the tree does not need of N
	 * goes onto the free list (drained first: a drain may add a record) — late, after
	 * the commit. */
	for (unsigned round = 0; !err; round++) {
		err = addset_union(ar, &o->D, &none, &dn);
		if (!err)
			err = ostream_count(ar, o->R2, &o->N, &dn, &nrecs);
		if (err)
			break;
		mblk = rep_geo_blocks(&mfs_rmapbt_ops, ar->fs->geo.blocksize, nrecs, NULL);
		if (mblk > take || mblk > o->ucap || round > 4) {
			err = rep_fail(ar->r, -EAGAIN, "AG %u: the new reverse map needs %llu "
				       "blocks, %llu were taken for it; nothing was changed, try "
				       "again", ar->agno, (unsigned long long)mblk,
				       (unsigned long long)take);
			break;
		}
		extra = take - mblk;
		if (o->late || fl_count(ar) + extra <= MFS_AGFL_SIZE_MAX)
			break;
		err = fl_drain(o, (uint32_t)extra);
	}
	if (err)
		goto out;
	/* The blocks: N's pieces in block order; the last `extra` onto the list (late: after
	 * the commit, take_late). */
	b->cap = take;
	for (uint64_t i = 0; !err && i < o->N.n; i++) {
		struct rext e;

		err = rep_addset_get(&o->N, i, &e);
		err = err ? rep_scratch_err(ar->r, err, "reading the new reverse map's pieces") :
		      rep_blocks_add(ar, e.start, e.len, b);
	}
	for (uint64_t i = mblk; !err && !o->late && i < b->n; i++) {
		uint32_t blk;

		err = rep_blocks_get(b, i, &blk);
		if (err) {
			err = rep_scratch_err(ar->r, err, "reading the new reverse map's blocks");
			break;
		}
		err = mfs_agfl_put(ar->tp, ar->agno, ar->agh_bp, blk);
		if (err)
			err = rep_fail(ar->r, err, "AG %u: putting block %u on the free list: %s",
				       ar->agno, blk, strerror(-err));
		o->puts++;
	}
	if (!err) {
		mfs_trans_log_size(ar->tp, &nimg, &nrev);
		err = rep_log_fits(ar, nimg, nrev, "reverse map btree");
	}
	if (err)
		goto out;
	/* The tree, in place. */
	ar->ordered = 1;
	mfs_trans_ordered_undo(ar->tp, U);
	o->mblk = mblk;
	b->n = mblk;
	ostream_init(&os, ar, o->R2, &o->N, &dn);
	err = rep_load_tree_fn(ar, MFS_BT_RMAP, nrecs, ostream_load, &os, b, &root);
	b->n = b->cap;
	if (!err && (ostream_get(&os, NULL) <= 0 || b->next != mblk))
		err = rep_fail(ar->r, -EFSCORRUPTED, "internal: the new reverse map has more "
			       "records or blocks than counted");
	if (!err)
		err = rep_space_longest(ar, &longest);
	if (!err)
		err = mfs_trans_modify(ar->tp, ar->agh_bp);
	if (err)
		goto out;
	rep_set_root(agh, MFS_BT_RMAP, ar->fs, &root);
	/* the free-space trees' blocks: as before, and those the free list fed them */
	mfs_put32(agh->btreeblks, (uint32_t)(o->nbno + o->ncnt + (fl0 + o->puts - o->gets) -
					     fl_count(ar) - 2 + mblk - 1));
	/* The free count is the by-block tree's (trusted, verified), the longest extent the
	 * by-length tree's: should the two trees disagree (the by-block tree short of records
	 * the other holds), the header must still verify — the reap reads it, and so does
	 * every allocation — and the free-space checks report the disagreement.  Late, N is
	 * still free space in the trees: the counts follow its takes (late_count). */
	freeblks = (uint32_t)(o->h->blocks + o->freed - o->taken);
	mfs_put32(agh->freeblks, freeblks);
	mfs_put32(agh->longest, longest < freeblks ? longest : freeblks);
out:
	free(dn.v);
	return err;
}

/* The header's free count after a late take (delta < 0) or give, its longest extent kept
 * no larger (take_late sets it from the by-length tree at the end). */
static int late_count(struct agrep *ar, int64_t delta)
{
	struct mfs_agh *agh = rep_agh(ar);
	int err = mfs_trans_modify(ar->tp, ar->agh_bp);
	uint32_t nfree;

	if (err)
		return rep_fail(ar->r, err, "no memory to join AG %u's header", ar->agno);
	nfree = (uint32_t)((int64_t)mfs_get32(agh->freeblks) + delta);
	mfs_put32(agh->freeblks, nfree);
	if (mfs_get32(agh->longest) > nfree)
		mfs_put32(agh->longest, nfree);
	return 0;
}

/* Late: a block off the full free list back to free space; AG-owned in the new records,
 * which it leaves. */
static int drain_late(struct ordered *o)
{
	struct agrep *ar = o->ar;
	uint32_t b;
	int err = mfs_agfl_get(ar->tp, ar->agno, ar->agh_bp, &b);

	if (err)
		return rep_fail(ar->r, err, "AG %u: taking a block off the free list: %s",
				ar->agno, strerror(-err));
	err = rep_space_give(ar, b, 1);
	if (!err)
		err = late_count(ar, 1);
	if (!err)
		err = rep_rmap_cut(ar, b, 1, NULL);
	if (!err)
		err = rep_forget_blocks(ar, b, 1);
	o->freed++;
	return err;
}

/*
 * Late (a journal attached): after the commit, with the AG marked and still locked, N's
 * pieces leave the free-space trees, a bounded batch per transaction (rep_reap_step), the
 * free list fed from G's end and drained back to free space as in the early edits.  Until
 * the last take the trees still list blocks of the new tree as free: nothing may look
 * (the test hook is not called: ar->unsafe), and should a take fail (an I/O error, no
 * memory) the journal is stopped — an allocation must not give those blocks away — and
 * the next mount finishes the job from the mark (the free-space trees rebuilt from the
 * new reverse map).  Then the extras go onto the free list, as far as it has room.
 * *rest: the first extra block not put there (the caller reaps from it).
 */
static int take_late(struct ordered *o, uint64_t *rest)
{
	static const char what[] = "taking the new reverse map's blocks out of free space";
	static const char state[] = "the free-space trees still list blocks of the new "
				    "reverse map as free";
	struct agrep *ar = o->ar;
	uint64_t i = 0, k = o->mblk;
	uint32_t longest;
	int err;

	*rest = k;
	err = rep_account_begin(ar, state);
	if (err)
		return err;
	while (!err && i < o->N.n) {
		if (fl_count(ar) < take_need(ar)) {
			err = gap_stock_one(o);
			if (err > 0)
				err = rep_fail(ar->r, -ENOSPC, "AG %u: no old block left to feed "
					       "the free list", ar->agno);
		} else if (fl_count(ar) + o->need > MFS_AGFL_SIZE_MAX) {
			err = drain_late(o);
		} else {
			struct rext e;

			err = rep_addset_get(&o->N, i++, &e);
			if (err)
				err = rep_scratch_err(ar->r, err, "reading the new reverse map's "
						      "pieces");
			else if (i > rep_late_fail_after)
				err = -EIO;
			else
				err = rep_space_take(ar, e.start, e.len);
			if (!err)
				err = late_count(ar, -(int64_t)e.len);
			o->taken += e.len;
			ar->recorded += e.len;
		}
		err = err ? rep_reap_fail(ar, err, what) : rep_reap_step(ar, what);
	}
	/* the longest extent as the by-length tree now says; then the last takes committed:
	 * the AG is fit to be seen again */
	if (!err) {
		int e = rep_space_longest(ar, &longest);

		if (!e)
			e = late_count(ar, 0);
		if (e) {
			err = rep_reap_fail(ar, e, what);
		} else {
			struct mfs_agh *agh = rep_agh(ar);

			mfs_put32(agh->longest, longest < mfs_get32(agh->freeblks) ? longest :
				  mfs_get32(agh->freeblks));
		}
	}
	err = rep_account_end(ar, err, what, state);
	if (err)
		return err;
	for (; !err && k < o->b.n && fl_count(ar) < REP_AGFL_EXTRA_CAP; k++) {
		uint32_t blk;

		err = rep_blocks_get(&o->b, k, &blk);
		if (err)
			err = rep_reap_fail(ar, rep_scratch_err(ar->r, err, "reading the new "
								"reverse map's blocks"), what);
		else
			err = rep_agfl_put_old(ar, blk);
		if (!err)
			err = rep_reap_step(ar, "putting spare blocks on the free list");
	}
	*rest = k;
	mfs_buf_put(ar->agh_bp);
	ar->agh_bp = NULL;
	return err;
}

static void ordered_free(struct ordered *o)
{
	free(o->b.v);
	free(o->N.v);
	free(o->D.v);
}

/* Free blocks of the AG, from its header (read under its lock): sizes the scratch. */
/* The test hook of repair_ag.h: the special owners' records planned, at most. */
uint64_t rep_rmap_special_max = UINT64_MAX;

/* Free blocks of the AG and the special owners' records it may hold (its trees' blocks,
 * its chunks, its free list: from the counts of its header, with a margin), read under
 * its lock: sizes the scratch. */
static int ag_free_blocks(struct rep *r, uint64_t *nfree, uint64_t *nspecial)
{
	struct mfs_fs *fs = r->fs;
	uint32_t agno = r->rc->agno, aglen = mfs_ag_length(&fs->geo, agno);
	struct mfs_buf *hbp;
	int err;

	mfs_ag_lock(fs, agno, MFS_AGL_SPACE);
	err = mfs_read_agh(fs, agno, &hbp);
	if (!err) {
		const struct mfs_agh *agh = hbp->data;
		uint32_t f = mfs_get32(agh->freeblks);
		uint64_t chunks = mfs_get32(agh->icount) / MFS_INODES_PER_CHUNK;

		*nfree = f < aglen ? f : aglen;
		*nspecial = mfs_get32(agh->btreeblks) + 2 * chunks + MFS_AGFL_SIZE_MAX + 1024;
		*nspecial += *nspecial / 4;
		mfs_buf_put(hbp);
	}
	mfs_ag_unlock(fs, agno, MFS_AGL_SPACE);
	return err ? rep_fail(r, err, "AG %u header is damaged (%s): repair the AG header "
			      "first", agno, strerror(-err)) : 0;
}

int rep_rmapbt(struct rep *r)
{
	struct agrep ar;
	struct rep_live lv;
	struct rgather g;
	struct rmerge m;
	struct blocks b = { NULL, 0, 0, 0, NULL };
	struct mfs_xfarray *R, *R2, *F, *U, *Q;
	struct mfs_btree_root root;
	struct mfs_agh *agh;
	struct rep_lenhist h;
	struct ordered o;
	struct rsrc q;
	uint64_t nbno = 0, ncnt = 0, used, nfree = 0, mblk, room, k, short_by, total, est;
	uint64_t nspecial = 0, rest;
	const struct mfs_geom *geo = &r->fs->geo;
	uint32_t aglen = mfs_ag_length(geo, r->rc->agno);
	int err, ordered, sweep = -1;      /* the sweep state to restore (mfs_bcache_sweep) */

	memset(&m, 0, sizeof(m));
	memset(&ar, 0, sizeof(ar));
	memset(&lv, 0, sizeof(lv));
	memset(&h, 0, sizeof(h));
	memset(&o, 0, sizeof(o));
	memset(&q, 0, sizeof(q));
	err = rep_lh_init(r, &h);
	if (err)
		goto out;
	/* Records: at most one per owned block (more may be owned by the time the AG is
	 * locked again: a margin); with the gaps between them, twice that.  Free extents: at
	 * most one per two blocks.  The owners' scans: every record once, and again for those
	 * scanned again; the old tree's inode records: one per owned block. */
	err = ag_free_blocks(r, &nfree, &nspecial);
	if (err)
		goto out;
	used = aglen - nfree;
	used += used / 4 + 64;
	if (nspecial > used + 16)
		nspecial = used + 16;
	if (nspecial > rep_rmap_special_max)
		nspecial = rep_rmap_special_max;
	{
		/* and the old bytes of the blocks an ordered tree is written into: a tree of
		 * R's records, one per piece of free space it takes and a margin (see below) */
		uint64_t mmax = rep_geo_blocks(&mfs_rmapbt_ops, geo->blocksize, used + 16 +
					       (used + 16) / 32 + 1024, NULL);
		const struct rep_array_plan plan[10] = {
			{ sizeof(struct mfs_rmap_rec), used + 16 },
			{ sizeof(struct mfs_rmap_rec), 2 * used + 32 },
			{ sizeof(struct rext), aglen / 2 + 2 },
			{ sizeof(struct rep_srec), 2 * used + 1024 },
			{ sizeof(struct mfs_rmap_rec), used + 16 },
			{ MFS_TRANS_UNDO_RECSIZE(geo->blocksize),
			  (mmax == UINT64_MAX ? 0 : mmax) + 16 },
			/* the gaps: each is followed by a block that is no gap */
			{ sizeof(struct rext), aglen / 2 + 2 },
			/* ordered: the pieces of free space taken (at most one per block), and
			 * their blocks */
			{ sizeof(struct rext), (mmax == UINT64_MAX ? 0 : mmax) + 16 },
			{ sizeof(uint32_t), (mmax == UINT64_MAX ? 0 : mmax) + 16 },
			/* the special owners' records (struct rsrc) */
			{ sizeof(struct mfs_rmap_rec), nspecial },
		};

		o.ucap = mmax == UINT64_MAX ? 0 : mmax + 16;

		err = rep_reserve(r, plan, 10);
		if (!err)
			err = rep_hook(r, MFS_REPAIR_AT_RESERVED);
		if (!err)
			err = rep_array(r, plan[0].recsize, plan[0].max_nr, &R);
		if (!err)
			err = rep_array(r, plan[1].recsize, plan[1].max_nr, &R2);
		if (!err)
			err = rep_array(r, plan[2].recsize, plan[2].max_nr, &F);
		if (!err)
			err = rep_array(r, plan[3].recsize, plan[3].max_nr, &lv.S);
		if (!err)
			err = rep_array(r, plan[4].recsize, plan[4].max_nr, &lv.C);
		if (!err)
			err = rep_array(r, plan[5].recsize, plan[5].max_nr, &U);
		if (!err)
			err = rep_array(r, plan[6].recsize, plan[6].max_nr, &m.G);
		if (!err)
			err = rep_array(r, plan[7].recsize, plan[7].max_nr, &o.N.x);
		if (!err)
			err = rep_array(r, plan[8].recsize, plan[8].max_nr, &o.b.x);
		if (!err)
			err = rep_array(r, plan[9].recsize, plan[9].max_nr, &Q);
		if (err)
			goto out;
	}
	/* The owners without the AG lock, then settled under it (repair_rmap_live.c). */
	lv.r = r;
	lv.fs = r->fs;
	lv.agno = r->rc->agno;
	lv.aglen = aglen;
	/* The owners' maps and the old tree are swept whole: kept out of the buffer cache
	 * until the new tree is built (mfs_bcache_sweep) */
	sweep = mfs_bcache_sweep(1);
	err = rep_live_scan(&lv);
	while (!err) {
		int settled = 0;

		err = rep_ag_begin(r, &ar, -1);
		if (!err)
			err = rep_live_settle(&lv, &ar, &settled);
		if (err || settled)
			break;
		rep_ag_cancel(&ar);
		err = rep_live_wait_busy(&lv);
	}
	if (err)
		goto out;
	memset(&g, 0, sizeof(g));
	g.ar = &ar;
	g.R = R;
	g.F = F;
	g.h = &h;
	/* the owners' records first: when they come in block order, only the special
	 * owners' records, gathered after them, need sorting (struct rsrc) */
	err = rep_live_emit(&lv, remit_fn, &g);
	g.Q = Q;                     /* the special owners' records from here on */
	if (!err)
		err = radd(&g, 0, MFS_AG_FIXED_BLOCKS, MFS_OWN_FS, 0);
	if (!err && geo->logblocks && mfs_fsb_to_agno(geo, geo->logstart) == ar.agno)
		err = radd(&g, mfs_fsb_to_agbno(geo, geo->logstart), geo->logblocks, MFS_OWN_LOG, 0);
	if (!err)
		err = rtree_blocks(&g, MFS_BT_BNO, MFS_OWN_AG, &nbno);
	if (!err)
		err = rtree_blocks(&g, MFS_BT_CNT, MFS_OWN_AG, &ncnt);
	if (!err)
		err = rtree_blocks(&g, MFS_BT_INO, MFS_OWN_INOBT, NULL);
	if (!err) {
		struct mfs_btree_cur cur;

		mfs_ag_cur_init(&cur, ar.fs, NULL, ar.agno, MFS_BT_INO, ar.agh_bp);
		cur.flags = MFS_BTREE_CUR_ONCE;
		err = mfs_btree_query_range(&cur, NULL, NULL, rchunk_fn, &g);
		if (!err) {
			mfs_btree_cur_release(&cur);
			mfs_ag_cur_init(&cur, ar.fs, NULL, ar.agno, MFS_BT_BNO, ar.agh_bp);
			cur.flags = MFS_BTREE_CUR_ONCE;
			err = mfs_btree_query_range(&cur, NULL, NULL, rfree_fn, &g);
		}
		mfs_btree_cur_release(&cur);
	}
	if (!err) {
		/* the AGFL stock */
		struct mfs_buf *bp;
		const struct mfs_agh *ah = rep_agh(&ar);

		err = mfs_read_agfl(ar.fs, ar.agno, &bp);
		if (err)
			rep_fail(r, err, "AG %u free list unreadable (%s): repair it first", ar.agno,
				 strerror(-err));
		for (uint32_t i = 0; !err && i < mfs_get32(ah->fl_count); i++) {
			const struct mfs_agfl *fl = bp->data;

			err = radd(&g, mfs_get32(fl->bno[(mfs_get32(ah->fl_first) + i) %
							 MFS_AGFL_SIZE_MAX]), 1, MFS_OWN_AG, 0);
		}
		if (bp)
			mfs_buf_put(bp);
	}
	if (!err)
		err = rep_hook(r, MFS_REPAIR_AT_GATHERED);
	if (!err)
		err = rsrc_init(r, &g, &q);
	if (err)
		goto out;
	/* Ordered (the new tree into free space, in place) when free space holds it with a
	 * good margin: the records are at most the owners' and the AG's own (R's and Q's:
	 * rsrc_init), plus one per piece taken. */
	{
		uint64_t nrec = mfs_xfarray_count(R) + q.qn;

		est = rep_geo_blocks(&mfs_rmapbt_ops, geo->blocksize, nrec + nrec / 32 + 256,
				     NULL);
	}
	ordered = est != UINT64_MAX && h.blocks >= est + est / 8 + 64 && est <= o.ucap;
	m.ar = &ar;
	m.out = R2;
	err = rmerge_all(&m, &q, F);
	if (!err)
		err = rep_live_check_gaps(&lv, &ar, m.G);
	if (err || !ordered) {
		mfs_bcache_sweep(sweep);
		sweep = -1;
	}
	if (err)
		goto out;
	if (ordered) {
		/* still a sweep: the leaves its commit and its reap change, read in for them,
		 * leave the cache once written home (mfs_bcache_sweep) */
		o.ar = &ar;
		o.m = &m;
		o.R2 = R2;
		o.F = F;
		o.h = &h;
		o.nbno = nbno;
		o.ncnt = ncnt;
		o.late = ar.fs->log != NULL;
		err = rmap_ordered(&o, U);
		if (!err)
			err = rep_reap_mark(&ar);
		if (!err)
			err = rep_ag_finish(&ar);
		/* late: N's pieces out of free space, the spare ones onto the free list (the
		 * rest reaped); then the old tree's blocks (and any leaked one), AG-owned in
		 * the new tree: freed, but those stocked onto the free list */
		rest = o.b.n;
		if (!err && o.late)
			err = take_late(&o, &rest);
		if (!err)
			err = rep_reap_hook(&ar);
		for (uint64_t i = rest; !err && i < o.b.n; i++) {
			uint32_t blk;

			err = rep_blocks_get(&o.b, i, &blk);
			err = err ? rep_reap_fail(&ar, rep_scratch_err(r, err, "reading the new "
								       "reverse map's blocks"),
						  "freeing its spare blocks") :
			      rep_reap_piece(&ar, blk, 1, NULL);
		}
		if (!err)
			err = rep_ext_pieces(&ar, m.G, 0, m.gapblocks - o.gtaken, rep_reap_piece,
					     NULL);
		if (!err)
			err = rep_reap_end(&ar);
		if (!err)
			mfs_log(MFS_LOG_INFO, "AG %u: reverse map rebuilt in free space, %llu "
				"records; settled in %u round(s), %llu owner(s) scanned again under "
				"the AG lock, %llu after waiting for them", ar.agno,
				(unsigned long long)r->rc->records, lv.rounds,
				(unsigned long long)lv.rescanned, (unsigned long long)lv.waited);
		goto out;
	}
	mblk = rep_geo_blocks(&mfs_rmapbt_ops, geo->blocksize, mfs_xfarray_count(R2), NULL);
	/* The new tree goes into the old one's blocks; when it needs more (the bulk loader
	 * fills blocks less than the old tree had them, or the AG gained records while the
	 * rebuild ran) the rest comes from the free list's stock: MFS_OWN_AG blocks already,
	 * so the records do not change. */
	short_by = mblk > m.gapblocks ? mblk - m.gapblocks : 0;
	if (short_by > mfs_get32(rep_agh(&ar)->fl_count)) {
		err = rep_fail(r, -ENOSPC, "AG %u: the new reverse map needs %llu blocks, the old "
			       "one left %llu and the free list holds %u", ar.agno,
			       (unsigned long long)mblk, (unsigned long long)m.gapblocks,
			       mfs_get32(rep_agh(&ar)->fl_count));
		goto out;
	}
	err = rep_log_fits(&ar, mblk, m.gapblocks + short_by - mblk, "reverse map btree");
	if (err)
		goto out;
	b.cap = m.gapblocks + short_by;
	b.v = mfs_malloc((b.cap ? b.cap : 1) * sizeof(*b.v));
	if (!b.v) {
		err = rep_fail(r, -ENOMEM, "no memory for the new reverse map's block list");
		goto out;
	}
	for (uint64_t i = 0; !err && i < m.ngaps; i++) {
		struct rext e;

		err = mfs_xfarray_get(m.G, i, &e);
		if (err)
			err = rep_scratch_err(r, err, "reading the old reverse map's blocks");
		else
			err = rep_blocks_add(&ar, e.start, e.len, &b);
	}
	for (uint64_t i = 0; !err && i < short_by; i++) {
		uint32_t bno;

		err = mfs_agfl_get(ar.tp, ar.agno, ar.agh_bp, &bno);
		if (!err)
			err = rep_blocks_add(&ar, bno, 1, &b);
		else
			rep_fail(r, err, "AG %u: taking a block off the free list: %s", ar.agno,
				 strerror(-err));
	}
	for (uint64_t i = 0; !err && i < mblk; i++)
		err = rep_join_block(&ar, b.v[i]);
	if (err)
		goto out;
	total = b.n;
	b.n = mblk;
	err = rep_load_tree(&ar, MFS_BT_RMAP, R2, &b, &root);
	if (!err)
		err = mfs_trans_modify(ar.tp, ar.agh_bp);
	if (err)
		goto out;
	agh = rep_agh(&ar);
	rep_set_root(agh, MFS_BT_RMAP, ar.fs, &root);
	mfs_put32(agh->btreeblks, (uint32_t)(nbno - 1 + ncnt - 1 + mblk - 1));
	/* What the new tree did not take: onto the AGFL, then back to free space. */
	room = mfs_get32(agh->fl_count) < REP_AGFL_EXTRA_CAP ? REP_AGFL_EXTRA_CAP -
	       mfs_get32(agh->fl_count) : 0;
	for (k = mblk; !err && k < total && k - mblk < room; k++)
		err = rep_agfl_put_old(&ar, b.v[k]);
	while (!err && k < total) {
		uint32_t s = b.v[k], l = 1;

		while (k + l < total && b.v[k + l] == s + l)
			l++;
		err = rfree_left(&ar, s, l);
		k += l;
	}
	if (!err)
		err = rep_ag_finish(&ar);
	if (!err)
		mfs_log(MFS_LOG_INFO, "AG %u: reverse map rebuilt, %llu records; settled in %u "
			"round(s), %llu owner(s) scanned again under the AG lock, %llu after waiting "
			"for them", ar.agno, (unsigned long long)mfs_xfarray_count(R2), lv.rounds,
			(unsigned long long)lv.rescanned, (unsigned long long)lv.waited);
out:
	if (sweep >= 0)
		mfs_bcache_sweep(sweep);
	rep_ag_cancel(&ar);
	rep_live_release(&lv);
	ordered_free(&o);
	rep_lh_free(&h);
	free(b.v);
	return err;
}
