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
 * owned is the old reverse map's blocks (and any leaked block): it becomes MFS_OWN_AG, the
 * new tree is written into its first blocks, and the rest goes onto the AGFL (as far as it
 * has room) or back to free space once the new tree is in place.  The record count does not
 * depend on which of those blocks the tree takes (all of them are MFS_OWN_AG), so the
 * geometry needs no iteration.  Two owners of one block (cross-linked), or a block both
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
#include <stdlib.h>
#include <string.h>

struct rgather {
	struct agrep *ar;
	struct mfs_xfarray *R, *F;
	int err;
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

	mfs_ag_cur_init(&cur, ar->fs, NULL, ar->agno, t, ar->agh_bp);
	err = mfs_btree_verify(&cur, &nrecs, &nblocks);
	if (err) {
		mfs_btree_cur_release(&cur);
		return rep_fail(ar->r, err, "AG %u %s is damaged (%s): the reverse map is rebuilt "
				"from it; repair it first", ar->agno, cur.ops->name, strerror(-err));
	}
	err = mfs_btree_visit_blocks(&cur, rvisit_fn, &v);
	mfs_btree_cur_release(&cur);
	if (n)
		*n = v.blocks;
	return err;
}

static int rfree_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_alloc_rec *a = rec;
	struct rgather *g = priv;
	struct rext e = { mfs_get32(a->startblock), mfs_get32(a->blockcount) };
	int err = mfs_xfarray_append(g->F, &e, NULL);

	return err ? rep_scratch_err(g->ar->r, err, "gathering free extents") : 0;
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
	return radd(priv, mfs_get32(rec->startblock), mfs_get32(rec->blockcount),
		    mfs_get64(rec->owner), mfs_get64(rec->offset));
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

/* The merged, gap-filled records, and the old reverse-map blocks (the gaps). */
struct rmerge {
	struct agrep *ar;
	struct mfs_xfarray *out;
	struct mfs_rmap_rec pend;
	int have;
	struct rext *gaps;
	uint64_t ngaps, gapcap, gapblocks;
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
	struct mfs_rmap_rec rec;

	if (s >= e)
		return 0;
	if (m->ngaps == m->gapcap) {
		uint64_t nc = m->gapcap ? 2 * m->gapcap : 64;
		struct rext *ng = mfs_realloc(m->gaps, nc * sizeof(*ng));

		if (!ng)
			return rep_fail(m->ar->r, -ENOMEM, "no memory for the old reverse map's "
					"block list");
		m->gaps = ng;
		m->gapcap = nc;
	}
	m->gaps[m->ngaps].start = s;
	m->gaps[m->ngaps].len = e - s;
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
static int rmerge_all(struct rmerge *m, struct mfs_xfarray *R, struct mfs_xfarray *F)
{
	struct agrep *ar = m->ar;
	uint64_t nr = mfs_xfarray_count(R), nf = mfs_xfarray_count(F), fi = 0;
	struct rext fe = { UINT32_MAX, 0 };
	uint32_t pos = 0;
	int err = 0;

	if (nf) {
		err = mfs_xfarray_get(F, fi++, &fe);
		if (err)
			return rep_scratch_err(ar->r, err, "reading free extents");
	}
	for (uint64_t i = 0; i <= nr && !err; i++) {
		struct mfs_rmap_rec rec;
		uint32_t s = ar->aglen, l = 0;

		if (i < nr) {
			err = mfs_xfarray_get(R, i, &rec);
			if (err)
				return rep_scratch_err(ar->r, err, "reading reverse mappings");
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
		if (fe.start < s + l && fe.start != UINT32_MAX && i < nr)
			return rep_fail(ar->r, -EFSCORRUPTED, "AG %u: free extent %u+%u overlaps "
					"blocks %u+%u owned by %llu", ar->agno, fe.start, fe.len,
					s, l, (unsigned long long)mfs_get64(rec.owner));
		if (!err && i < nr) {
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

/* Free blocks of the AG, from its header (read under its lock): sizes the scratch. */
static int ag_free_blocks(struct rep *r, uint64_t *nfree)
{
	struct mfs_fs *fs = r->fs;
	uint32_t agno = r->rc->agno, aglen = mfs_ag_length(&fs->geo, agno);
	struct mfs_buf *hbp;
	int err;

	pthread_mutex_lock(&fs->ag[agno].lock);
	err = mfs_read_agh(fs, agno, &hbp);
	if (!err) {
		uint32_t f = mfs_get32(((const struct mfs_agh *)hbp->data)->freeblks);

		*nfree = f < aglen ? f : aglen;
		mfs_buf_put(hbp);
	}
	pthread_mutex_unlock(&fs->ag[agno].lock);
	return err ? rep_fail(r, err, "AG %u header is damaged (%s): repair the AG header "
			      "first", agno, strerror(-err)) : 0;
}

int rep_rmapbt(struct rep *r)
{
	struct agrep ar;
	struct rep_live lv;
	struct rgather g;
	struct rmerge m;
	struct blocks b = { NULL, 0, 0, 0 };
	struct mfs_xfarray *R, *R2, *F;
	struct mfs_btree_root root;
	struct mfs_agh *agh;
	uint64_t nbno = 0, ncnt = 0, used, nfree = 0, mblk, room, k, short_by, total;
	const struct mfs_geom *geo = &r->fs->geo;
	uint32_t aglen = mfs_ag_length(geo, r->rc->agno);
	int err;

	memset(&m, 0, sizeof(m));
	memset(&ar, 0, sizeof(ar));
	memset(&lv, 0, sizeof(lv));
	/* Records: at most one per owned block (more may be owned by the time the AG is
	 * locked again: a margin); with the gaps between them, twice that.  Free extents: at
	 * most one per two blocks.  The owners' scans: every record once, and again for those
	 * scanned again; the old tree's inode records: one per owned block. */
	err = ag_free_blocks(r, &nfree);
	if (err)
		goto out;
	used = aglen - nfree;
	used += used / 4 + 64;
	{
		const struct rep_array_plan plan[5] = {
			{ sizeof(struct mfs_rmap_rec), used + 16 },
			{ sizeof(struct mfs_rmap_rec), 2 * used + 32 },
			{ sizeof(struct rext), aglen / 2 + 2 },
			{ sizeof(struct rep_srec), 2 * used + 1024 },
			{ sizeof(struct mfs_rmap_rec), used + 16 },
		};

		err = rep_reserve(r, plan, 5);
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
		if (err)
			goto out;
	}
	/* The owners without the AG lock, then settled under it (repair_rmap_live.c). */
	lv.r = r;
	lv.fs = r->fs;
	lv.agno = r->rc->agno;
	lv.aglen = aglen;
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
		err = mfs_btree_query_range(&cur, NULL, NULL, rchunk_fn, &g);
		if (!err) {
			mfs_btree_cur_release(&cur);
			mfs_ag_cur_init(&cur, ar.fs, NULL, ar.agno, MFS_BT_BNO, ar.agh_bp);
			err = mfs_btree_query_range(&cur, NULL, NULL, rfree_fn, &g);
		}
		mfs_btree_cur_release(&cur);
	}
	if (!err) {
		/* the AGFL stock */
		struct mfs_buf *bp;
		const struct mfs_agh *h = rep_agh(&ar);

		err = mfs_read_agfl(ar.fs, ar.agno, &bp);
		if (err)
			rep_fail(r, err, "AG %u free list unreadable (%s): repair it first", ar.agno,
				 strerror(-err));
		for (uint32_t i = 0; !err && i < mfs_get32(h->fl_count); i++) {
			const struct mfs_agfl *fl = bp->data;

			err = radd(&g, mfs_get32(fl->bno[(mfs_get32(h->fl_first) + i) %
							 MFS_AGFL_SIZE_MAX]), 1, MFS_OWN_AG, 0);
		}
		if (bp)
			mfs_buf_put(bp);
	}
	if (!err)
		err = rep_live_emit(&lv, remit_fn, &g);
	if (!err)
		err = rep_hook(r, MFS_REPAIR_AT_GATHERED);
	if (!err)
		err = rep_sort(r, R, cmp_rmap, "sorting the reverse mappings");
	if (err)
		goto out;
	m.ar = &ar;
	m.out = R2;
	err = rmerge_all(&m, R, F);
	if (!err)
		err = rep_live_check_gaps(&lv, m.gaps, m.ngaps);
	if (err)
		goto out;
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
	for (uint64_t i = 0; !err && i < m.ngaps; i++)
		err = rep_blocks_add(&ar, m.gaps[i].start, m.gaps[i].len, &b);
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
		err = mfs_agfl_put(ar.tp, ar.agno, ar.agh_bp, b.v[k]);
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
	rep_ag_cancel(&ar);
	rep_live_release(&lv);
	free(b.v);
	free(m.gaps);
	return err;
}
