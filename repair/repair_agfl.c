/*
 * repair_agfl.c — rebuilder of an AG's free list.
 *
 * The free list's stock is what the reverse map says the AG owns (MFS_OWN_AG) minus the
 * blocks of the by-block, by-length and reverse-map trees (all verified first).  The list
 * block is rewritten with up to MFS_AGFL_SIZE_MAX - 8 of them, in block order (room kept
 * for give-backs); the rest goes back to free space, in the same transaction.
 *
 * The reverse map is all it has for the stock: the "ag" records' extents, each block taken
 * unless a tree's.  Nothing else vouches for them (not the free space, the inode btree and
 * chunks, nor the files), so a damaged map gives blocks away — an "ag" record moved onto a
 * file's block puts that block on the list (a tree's next split writes over it) or frees
 * it, and the list's own block the record no longer covers is lost — and the reverse map's
 * rebuild, which counts the list as the AG's, can then never agree again.  Its clients
 * therefore rebuild the list after a damaged reverse map, and not at all while that map's
 * own rebuild could not run (mfs_scrub_from_rmap in mendfs_ctl.h).
 */
#include "repair_ag.h"

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

struct fgather {
	struct agrep *ar;
	struct mfs_xfarray *S, *L;
	uint64_t sidx, ns;
	uint32_t scur;
};

static int f_block_fn(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	struct fgather *g = priv;
	uint32_t b = mfs_fsb_to_agbno(&cur->fs->geo, fsb);
	int err = mfs_xfarray_append(g->S, &b, NULL);

	return err ? rep_scratch_err(g->ar->r, err, "listing tree blocks") : 0;
}

static int f_load(struct fgather *g)
{
	int err;

	g->scur = UINT32_MAX;
	if (g->sidx >= g->ns)
		return 0;
	err = mfs_xfarray_get(g->S, g->sidx, &g->scur);
	return err ? rep_scratch_err(g->ar->r, err, "reading tree blocks") : 0;
}

static int f_rmap_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_rmap_rec *rr = rec;
	struct fgather *g = priv;
	uint32_t s = mfs_get32(rr->startblock), end = s + mfs_get32(rr->blockcount);
	int err = 0;

	if (mfs_get64(rr->owner) != MFS_OWN_AG)
		return 0;
	for (uint32_t b = s; b < end && !err; b++) {
		while (g->scur < b && !err) {
			g->sidx++;
			err = f_load(g);
		}
		if (!err && g->scur != b)
			err = rep_add_ext(g->ar, g->L, b, 1);
	}
	return err;
}

/* Leftover stock: back to free space (the new list is in place in the transaction). */
static int free_stock(struct agrep *ar, uint32_t s, uint32_t l, void *priv)
{
	int err = mfs_free_extent(ar->tp, mfs_agbno_to_fsb(&ar->fs->geo, ar->agno, s), l,
				  MFS_OWN_AG, 0);

	if (err)
		return rep_fail(ar->r, err, "AG %u: freeing surplus free-list block %u: %s",
				ar->agno, s, strerror(-err));
	/* an AG-owned block may have been a tree's, its images still in the log */
	return rep_forget_blocks(ar, s, l);
}

struct fill {
	struct mfs_agfl *fl;
	uint32_t n, max;
};

static int fill_fn(struct agrep *ar, uint32_t s, uint32_t l, void *priv)
{
	struct fill *f = priv;

	for (uint32_t i = 0; i < l && f->n < f->max; i++)
		mfs_put32(f->fl->bno[f->n++], s + i);
	return 0;
}

int rep_agfl(struct rep *r)
{
	const uint32_t keep_max = MFS_AGFL_SIZE_MAX - 8;
	struct agrep ar;
	struct fgather g;
	struct mfs_xfarray *S, *L;
	struct mfs_btree_cur cur;
	struct mfs_buf *bp = NULL;
	struct fill f;
	uint64_t nl, e = 0;
	int err;

	memset(&g, 0, sizeof(g));
	err = rep_ag_begin(r, &ar, 2);
	if (err)
		goto out;
	{
		const struct rep_array_plan plan[2] = {
			{ sizeof(uint32_t), ar.own_blocks[OWN_I_AG] + 1 },
			{ sizeof(struct rext), ar.own_blocks[OWN_I_AG] + 1 },
		};

		err = rep_reserve(r, plan, 2);
		if (!err)
			err = rep_hook(r, MFS_REPAIR_AT_RESERVED);
		if (!err)
			err = rep_array(r, plan[0].recsize, plan[0].max_nr, &S);
		if (!err)
			err = rep_array(r, plan[1].recsize, plan[1].max_nr, &L);
		if (err)
			goto out;
	}
	g.ar = &ar;
	g.S = S;
	g.L = L;
	for (int t = MFS_BT_BNO; t <= MFS_BT_RMAP && !err; t++) {
		if (t == MFS_BT_INO)
			continue;
		mfs_ag_cur_init(&cur, ar.fs, NULL, ar.agno, (enum mfs_ag_tree)t, ar.agh_bp);
		err = mfs_btree_verify(&cur, NULL, NULL);
		if (err)
			rep_fail(r, err, "AG %u %s is damaged (%s): repair it first", ar.agno,
				 cur.ops->name, strerror(-err));
		else
			err = mfs_btree_visit_blocks(&cur, f_block_fn, &g);
		mfs_btree_cur_release(&cur);
	}
	if (!err)
		err = rep_sort(r, S, rep_cmp_u32, "sorting the tree blocks");
	if (err)
		goto out;
	g.ns = mfs_xfarray_count(S);
	err = f_load(&g);
	if (!err) {
		mfs_ag_cur_init(&cur, ar.fs, NULL, ar.agno, MFS_BT_RMAP, ar.agh_bp);
		err = mfs_btree_query_range(&cur, NULL, NULL, f_rmap_fn, &g);
		mfs_btree_cur_release(&cur);
	}
	if (!err)
		err = rep_hook(r, MFS_REPAIR_AT_GATHERED);
	if (err)
		goto out;
	nl = rep_ext_blocks(L, &e);
	if (e) {
		err = rep_scratch_err(r, -(int)e, "counting the stock");
		goto out;
	}
	/* the list block: joined (a cancel restores it) and written afresh */
	err = mfs_buf_read(ar.fs->bc, mfs_agbno_to_fsb(&ar.fs->geo, ar.agno, MFS_AGFL_AGBNO), NULL,
			   &bp);
	if (!err)
		err = mfs_trans_modify(ar.tp, bp);
	if (!err)
		err = mfs_trans_modify(ar.tp, ar.agh_bp);
	if (err) {
		rep_fail(r, err, "AG %u free list block: %s", ar.agno, strerror(-err));
		goto out;
	}
	mfs_blk_init(bp->data, ar.fs->geo.blocksize, MFS_AGFL_MAGIC, bp->blkno, ar.agno,
		     ar.fs->geo.uuid);
	mfs_buf_set_meta(bp);
	f.fl = bp->data;
	f.n = 0;
	f.max = keep_max;
	err = rep_ext_pieces(&ar, L, 0, keep_max, fill_fn, &f);
	mfs_put32(rep_agh(&ar)->fl_first, 0);
	mfs_put32(rep_agh(&ar)->fl_count, f.n);
	ar.fl_rewritten = 0;
	r->rc->records = nl;
	if (!err && nl > keep_max)
		err = rep_ext_pieces(&ar, L, keep_max, UINT64_MAX, free_stock, NULL);
	if (!err)
		err = rep_ag_finish(&ar);
out:
	if (bp)
		mfs_buf_put(bp);
	rep_ag_cancel(&ar);
	return err;
}
