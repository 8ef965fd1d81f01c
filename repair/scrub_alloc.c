/*
 * scrub_alloc.c — the free-space checkers: the by-block tree (bnobt) and the by-length tree
 * (cntbt) of one AG, walked together with the reverse map under the AG lock.
 *
 * Both trees must pass the structural check (mfs_btree_verify: blocks, order, keys), and
 * their records must describe the same set of extents, each non-empty, inside the AG past
 * its fixed blocks, not overlapping another; in the by-block tree two records never touch
 * (a free extent is always merged with its free neighbours).  Cross-references: every
 * extent of one tree is in the other, and no free block has an owner in the reverse map.
 */
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "log.h"
#include "mem.h"
#include "scrub_priv.h"

#include <stdlib.h>
#include <string.h>

static void report_tree(struct mfs_scrub_ctx *ctx, const struct scrub_ag *sa, int t)
{
	scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "AG %u %s (root %u, %u levels): %s",
		     sa->agno, scrub_tree_names[t], mfs_get32(sa->agh->roots[t]),
		     mfs_get32(sa->agh->levels[t]), scrub_errstr(sa->tree_err[t]));
}

/* Common start: lock, walk, header and tree errors.  1: go on with the records. */
static int alloc_begin(struct mfs_scrub_ctx *ctx, int t, struct scrub_ag *sa, int *err)
{
	scrub_ag_lock(ctx->fs, ctx->agno);
	*err = scrub_ag_scan(ctx, ctx->agno, SCRUB_WANT_BNO | SCRUB_WANT_CNT | SCRUB_WANT_RMAP,
			     sa);
	if (*err)
		return 0;
	if (!sa->agh) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_INCOMPLETE, "AG %u %s: not checked, the AG "
			     "header is unreadable", ctx->agno, scrub_tree_names[t]);
		return 0;
	}
	if (sa->tree_err[t]) {
		report_tree(ctx, sa, t);
		return 0;
	}
	return 1;
}

static void alloc_end(struct mfs_scrub_ctx *ctx, struct scrub_ag *sa)
{
	scrub_ag_release(sa);
	scrub_ag_unlock(ctx->fs, ctx->agno);
}

/* A record on its own: non-empty, inside the AG past the fixed blocks. */
static int rec_sane(struct mfs_scrub_ctx *ctx, const struct scrub_ag *sa, int t, size_t i,
		    uint32_t start, uint32_t n)
{
	char wb[48];

	if (n == 0 || start < MFS_AG_FIXED_BLOCKS || (uint64_t)start + n > sa->len) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "AG %u %s %s: extent %u+%u is empty or "
			     "outside the AG's free-able blocks %u..%u", sa->agno,
			     scrub_tree_names[t], scrub_rec_where(sa, t, i, wb, sizeof(wb)), start,
			     n, MFS_AG_FIXED_BLOCKS, sa->len - 1);
		return 0;
	}
	return 1;
}

/* Free space has no owner: report an rmap record overlapping [start, start + n). */
static void xref_rmap(struct mfs_scrub_ctx *ctx, const struct scrub_ag *sa, int t, size_t i,
		      uint32_t start, uint32_t n)
{
	const struct scrub_recs *rm = &sa->recs[MFS_BT_RMAP];
	char wb[48];
	long j;

	if (!(sa->have & SCRUB_WANT_RMAP))
		return;
	j = scrub_find_le(rm, start + n - 1);
	if (j >= 0) {
		const struct mfs_rmap_rec *r = scrub_rec(rm, (size_t)j);
		uint64_t rs = mfs_get32(r->startblock), re = rs + mfs_get32(r->blockcount);
		char ob[32];

		if (re > start)
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u %s %s: free extent "
				     "%u+%u overlaps rmapbt extent %llu+%llu owned by %s", sa->agno,
				     scrub_tree_names[t], scrub_rec_where(sa, t, i, wb, sizeof(wb)),
				     start, n,
				     (unsigned long long)rs, (unsigned long long)(re - rs),
				     scrub_owner_name(mfs_get64(r->owner), ob, sizeof(ob)));
	}
}

static int cmp_start(const void *a, const void *b)
{
	uint32_t x = mfs_get32(((const struct mfs_alloc_rec *)a)->startblock);
	uint32_t y = mfs_get32(((const struct mfs_alloc_rec *)b)->startblock);

	return x < y ? -1 : x > y;
}

/* A copy of free-space records sorted by start block (the by-length tree's, for lookups). */
static int sorted_by_start(const struct scrub_recs *src, struct scrub_recs *dst)
{
	scrub_recs_init(dst, sizeof(struct mfs_alloc_rec));
	if (!src->n)
		return 0;
	dst->v = mfs_malloc(src->n * dst->len);
	if (!dst->v)
		return -ENOMEM;
	memcpy(dst->v, src->v, src->n * dst->len);
	dst->n = dst->cap = src->n;
	qsort(dst->v, dst->n, dst->len, cmp_start);
	return 0;
}

/* Is exactly the extent start+n in the start-sorted records r? */
static int has_extent(const struct scrub_recs *r, uint32_t start, uint32_t n)
{
	long j = scrub_find_le(r, start);
	const struct mfs_alloc_rec *a;

	if (j < 0)
		return 0;
	a = scrub_rec(r, (size_t)j);
	return mfs_get32(a->startblock) == start && mfs_get32(a->blockcount) == n;
}

/* Where record i lies, formatted only for a finding. */
#define WHERE scrub_rec_where(&sa, MFS_BT_BNO, i, wb, sizeof(wb))
int scrub_bnobt(struct mfs_scrub_ctx *ctx)
{
	const struct scrub_recs *bno;
	struct scrub_recs bycnt;
	struct scrub_ag sa;
	uint64_t prev_end = 0;
	int err;

	scrub_recs_init(&bycnt, sizeof(struct mfs_alloc_rec));
	if (!alloc_begin(ctx, MFS_BT_BNO, &sa, &err))
		goto out;
	bno = &sa.recs[MFS_BT_BNO];
	err = sorted_by_start(&sa.recs[MFS_BT_CNT], &bycnt);
	if (err)
		goto out;
	for (size_t i = 0; i < bno->n; i++) {
		const struct mfs_alloc_rec *r = scrub_rec(bno, i);
		uint32_t start = mfs_get32(r->startblock), n = mfs_get32(r->blockcount);
		char wb[48];

		if (!rec_sane(ctx, &sa, MFS_BT_BNO, i, start, n))
			continue;
		if (i && start < prev_end)
			scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "AG %u bnobt %s: startblock %u "
				     "overlaps the previous record ending at %llu", sa.agno, WHERE,
				     start, (unsigned long long)prev_end);
		else if (i && start == prev_end)
			scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "AG %u bnobt %s: extent %u+%u "
				     "touches the previous free extent (not merged)", sa.agno, WHERE,
				     start, n);
		prev_end = (uint64_t)start + n;
		xref_rmap(ctx, &sa, MFS_BT_BNO, i, start, n);
		if ((sa.have & SCRUB_WANT_CNT) && !has_extent(&bycnt, start, n))
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u bnobt %s: free extent "
				     "%u+%u is not in the cntbt", sa.agno, WHERE, start, n);
	}
out:
	scrub_recs_free(&bycnt);
	alloc_end(ctx, &sa);
	return err;
}
#undef WHERE

int scrub_cntbt(struct mfs_scrub_ctx *ctx)
{
	const struct scrub_recs *cnt;
	struct scrub_recs bystart;
	struct scrub_ag sa;
	int err;

	scrub_recs_init(&bystart, sizeof(struct mfs_alloc_rec));
	if (!alloc_begin(ctx, MFS_BT_CNT, &sa, &err))
		goto out;
	cnt = &sa.recs[MFS_BT_CNT];
	for (size_t i = 0; i < cnt->n; i++) {
		const struct mfs_alloc_rec *r = scrub_rec(cnt, i);
		uint32_t start = mfs_get32(r->startblock), n = mfs_get32(r->blockcount);
		char wb[48];

		if (!rec_sane(ctx, &sa, MFS_BT_CNT, i, start, n))
			continue;
		xref_rmap(ctx, &sa, MFS_BT_CNT, i, start, n);
		if ((sa.have & SCRUB_WANT_BNO) && !has_extent(&sa.recs[MFS_BT_BNO], start, n))
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u cntbt %s: free extent "
				     "%u+%u is not in the bnobt", sa.agno,
				     scrub_rec_where(&sa, MFS_BT_CNT, i, wb, sizeof(wb)), start, n);
	}
	/* No two extents overlap (checked in start order). */
	err = sorted_by_start(cnt, &bystart);
	if (err)
		goto out;
	for (size_t i = 1; i < bystart.n; i++) {
		const struct mfs_alloc_rec *p = scrub_rec(&bystart, i - 1), *r = scrub_rec(&bystart, i);
		uint64_t pend = (uint64_t)mfs_get32(p->startblock) + mfs_get32(p->blockcount);

		if (mfs_get32(r->startblock) < pend)
			scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "AG %u cntbt: extent %u+%u "
				     "overlaps extent %u+%u", sa.agno, mfs_get32(r->startblock),
				     mfs_get32(r->blockcount), mfs_get32(p->startblock),
				     mfs_get32(p->blockcount));
	}
out:
	scrub_recs_free(&bystart);
	alloc_end(ctx, &sa);
	return err;
}
