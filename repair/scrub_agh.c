/*
 * scrub_agh.c — the AG header and AG free list checkers.
 *
 * AG header: verifies, its fields are sane (mfs_agh_check: sequence, length, roots and
 * heights in range, counters bounded), reserved words zero; each root leads to a tree that
 * verifies; and its counters agree with the trees walked under the AG lock:
 *
 *     freeblks  = sum of the by-block tree's extents      longest = the largest of them
 *     btreeblks = blocks of the bno, cnt and rmap trees minus their three roots
 *     icount    = 64 x inode btree records                 ifree   = sum of their free counts
 *
 * Free list: the valid slots (fl_count from fl_first, circular) name distinct blocks inside
 * the AG past its fixed blocks, none free, none a tree block, each owned by the AG (OWN_AG)
 * in the reverse map.
 */
#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "log.h"
#include "mem.h"
#include "scrub_priv.h"
#include "verify.h"

#include <stdlib.h>
#include <string.h>

static void report_unreadable_agh(struct mfs_scrub_ctx *ctx, const struct scrub_ag *sa)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	uint64_t fsb = mfs_agbno_to_fsb(g, sa->agno, MFS_AGH_AGBNO);
	struct mfs_blk_expect e;
	struct mfs_buf *bp;
	const struct mfs_agh *agh;

	/* A header that verifies but fails the field sanity check: show the fields. */
	mfs_expect_agh(ctx->fs, sa->agno, &e);
	if (sa->agh_err == -EFSCORRUPTED && !mfs_buf_read(ctx->fs->bc, fsb, NULL, &bp)) {
		agh = bp->data;
		if (!mfs_blk_verify(agh, g->blocksize, fsb, g->uuid, &e, 0)) {
			scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "AG %u header (block %llu): fields "
				     "out of range: seqno %u, length %u (expected %u), freeblks %u, "
				     "longest %u, icount %u, ifree %u, fl_first %u, fl_count %u",
				     sa->agno, (unsigned long long)fsb, mfs_get32(agh->seqno),
				     mfs_get32(agh->length), sa->len, mfs_get32(agh->freeblks),
				     mfs_get32(agh->longest), mfs_get32(agh->icount),
				     mfs_get32(agh->ifree), mfs_get32(agh->fl_first),
				     mfs_get32(agh->fl_count));
			mfs_buf_put(bp);
			return;
		}
		mfs_buf_put(bp);
	}
	scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "AG %u header (block %llu): %s", sa->agno,
		     (unsigned long long)fsb, scrub_errstr(sa->agh_err));
}

static void agh_counters(struct mfs_scrub_ctx *ctx, const struct scrub_ag *sa)
{
	const struct mfs_agh *agh = sa->agh;
	const uint32_t X = MFS_SCRUB_OFLAG_XCORRUPT;
	uint32_t agno = sa->agno;

	if (sa->have & SCRUB_WANT_BNO) {
		const struct scrub_recs *r = &sa->recs[MFS_BT_BNO];
		uint64_t sum = 0, longest = 0;

		for (size_t i = 0; i < r->n; i++) {
			const struct mfs_alloc_rec *a = scrub_rec(r, i);
			uint32_t n = mfs_get32(a->blockcount);

			sum += n;
			if (n > longest)
				longest = n;
		}
		if (sum != mfs_get32(agh->freeblks))
			scrub_report(ctx, X, "AG %u header: freeblks %u, the bnobt holds %llu free "
				     "blocks", agno, mfs_get32(agh->freeblks),
				     (unsigned long long)sum);
		if (longest != mfs_get32(agh->longest))
			scrub_report(ctx, X, "AG %u header: longest %u, the bnobt's longest free "
				     "extent is %llu blocks", agno, mfs_get32(agh->longest),
				     (unsigned long long)longest);
	}
	if ((sa->have & (SCRUB_WANT_BNO | SCRUB_WANT_CNT | SCRUB_WANT_RMAP)) ==
	    (SCRUB_WANT_BNO | SCRUB_WANT_CNT | SCRUB_WANT_RMAP)) {
		uint64_t n = sa->blocks[MFS_BT_BNO].n + sa->blocks[MFS_BT_CNT].n +
			     sa->blocks[MFS_BT_RMAP].n - 3;

		if (n != mfs_get32(agh->btreeblks))
			scrub_report(ctx, X, "AG %u header: btreeblks %u, the bnobt, cntbt and "
				     "rmapbt have %llu blocks beyond their roots", agno,
				     mfs_get32(agh->btreeblks), (unsigned long long)n);
	}
	if (sa->have & SCRUB_WANT_INO) {
		const struct scrub_recs *r = &sa->recs[MFS_BT_INO];
		uint64_t ic = 0, ifr = 0;

		for (size_t i = 0; i < r->n; i++) {
			const struct mfs_inobt_rec *c = scrub_rec(r, i);

			ic += MFS_INODES_PER_CHUNK;
			ifr += (unsigned)__builtin_popcountll(mfs_get64(c->freemask));
		}
		if (ic != mfs_get32(agh->icount))
			scrub_report(ctx, X, "AG %u header: icount %u, the inobt has %llu inodes",
				     agno, mfs_get32(agh->icount), (unsigned long long)ic);
		if (ifr != mfs_get32(agh->ifree))
			scrub_report(ctx, X, "AG %u header: ifree %u, the inobt has %llu free "
				     "inodes", agno, mfs_get32(agh->ifree), (unsigned long long)ifr);
	}
}

int scrub_agh(struct mfs_scrub_ctx *ctx)
{
	struct scrub_ag sa;
	const struct mfs_agh *agh;
	int err;

	scrub_ag_lock(ctx->fs, ctx->agno);
	err = scrub_ag_scan(ctx, ctx->agno, SCRUB_WANT_TREES | SCRUB_SHARE, &sa);
	if (err)
		goto out;
	if (!sa.agh) {
		report_unreadable_agh(ctx, &sa);
		goto out;
	}
	agh = sa.agh;
	for (size_t i = 0; i < sizeof(agh->reserved) / sizeof(agh->reserved[0]); i++)
		if (agh->reserved[i]) {
			scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "AG %u header: reserved fields "
				     "are not zero", ctx->agno);
			break;
		}
	if (scrub_nonzero(agh, sizeof(*agh), ctx->fs->geo.blocksize) >= 0)
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "AG %u header: byte %ld, past the header, "
			     "is not zero", ctx->agno,
			     scrub_nonzero(agh, sizeof(*agh), ctx->fs->geo.blocksize));
	for (int t = 0; t < MFS_AG_NTREES; t++)
		if (sa.tree_err[t])
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u header: %s root %u "
				     "(%u levels) does not lead to a valid tree: %s", ctx->agno,
				     scrub_tree_names[t], mfs_get32(agh->roots[t]),
				     mfs_get32(agh->levels[t]), scrub_errstr(sa.tree_err[t]));
	agh_counters(ctx, &sa);
out:
	scrub_ag_release(&sa);
	scrub_ag_unlock(ctx->fs, ctx->agno);
	return err;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

int scrub_agfl(struct mfs_scrub_ctx *ctx)
{
	const uint32_t X = MFS_SCRUB_OFLAG_XCORRUPT, C = MFS_SCRUB_OFLAG_CORRUPT;
	uint32_t agno = ctx->agno;
	struct scrub_ag sa;
	uint32_t *sorted = NULL;
	int err;

	scrub_ag_lock(ctx->fs, agno);
	err = scrub_ag_scan(ctx, agno, SCRUB_WANT_TREES | SCRUB_WANT_AGFL | SCRUB_SHARE, &sa);
	if (err)
		goto out;
	if (!sa.agh) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_INCOMPLETE, "AG %u free list: not checked, the "
			     "AG header (which says which slots are valid) is unreadable", agno);
		goto out;
	}
	if (sa.agfl_err) {
		scrub_report(ctx, C, "AG %u free list (block %llu): %s", agno,
			     (unsigned long long)mfs_agbno_to_fsb(&ctx->fs->geo, agno,
								  MFS_AGFL_AGBNO),
			     scrub_errstr(sa.agfl_err));
		goto out;
	}
	for (size_t i = 0; i < sa.agfl.n; i++) {
		uint32_t b = *(const uint32_t *)scrub_rec(&sa.agfl, i);
		uint32_t slot = (uint32_t)((mfs_get32(sa.agh->fl_first) + i) % MFS_AGFL_SIZE_MAX);
		const struct mfs_rmap_rec *r;

		if (b < MFS_AG_FIXED_BLOCKS || b >= sa.len) {
			scrub_report(ctx, C, "AG %u free list slot %u: block %u outside %u..%u", agno,
				     slot, b, MFS_AG_FIXED_BLOCKS, sa.len - 1);
			continue;
		}
		if ((sa.have & SCRUB_WANT_BNO) && scrub_any_free(&sa.recs[MFS_BT_BNO], b, 1))
			scrub_report(ctx, X, "AG %u free list slot %u: block %u is also free in the "
				     "bnobt", agno, slot, b);
		for (int t = 0; t < MFS_AG_NTREES; t++)
			if ((sa.have & (1u << t)) && scrub_u32_has(&sa.blocks[t], b))
				scrub_report(ctx, X, "AG %u free list slot %u: block %u is a block "
					     "of the %s", agno, slot, b, scrub_tree_names[t]);
		if (!(sa.have & SCRUB_WANT_RMAP))
			continue;
		r = scrub_rmap_covering(&sa.recs[MFS_BT_RMAP], b, 1);
		if (!r || mfs_get64(r->owner) != MFS_OWN_AG) {
			char ob[32];

			scrub_report(ctx, X, "AG %u free list slot %u: block %u is owned by %s in "
				     "the rmapbt, expected ag", agno, slot, b,
				     r ? scrub_owner_name(mfs_get64(r->owner), ob, sizeof(ob))
				       : "nobody");
		}
	}
	if (sa.agfl.n > 1) {
		sorted = mfs_malloc(sa.agfl.n * sizeof(uint32_t));
		if (!sorted) {
			err = -ENOMEM;
			goto out;
		}
		memcpy(sorted, sa.agfl.v, sa.agfl.n * sizeof(uint32_t));
		qsort(sorted, sa.agfl.n, sizeof(uint32_t), cmp_u32);
		for (size_t i = 1; i < sa.agfl.n; i++)
			if (sorted[i] == sorted[i - 1])
				scrub_report(ctx, C, "AG %u free list: block %u is listed twice", agno,
					     sorted[i]);
		free(sorted);
	}
out:
	scrub_ag_release(&sa);
	scrub_ag_unlock(ctx->fs, agno);
	return err;
}
