/*
 * scrub_alloc.c — the free-space checkers: the by-block tree (bnobt) and the by-length tree
 * (cntbt) of one AG, walked together with the reverse map under the AG lock.
 *
 * Both trees must pass the structural check (mfs_btree_verify: blocks, order, keys), and
 * their records must describe the same set of extents, each non-empty, inside the AG past
 * its fixed blocks, not overlapping another; in the by-block tree two records never touch
 * (a free extent is always merged with its free neighbours).  Cross-references: every
 * extent of one tree is in the other, and no free block has an owner in the reverse map.
 *
 * Memory.  The full check (below) holds every record of the three trees and where it lies
 * (some 70 MiB at a million free extents).  So each checker first tries the quick proof,
 * which holds no record: under the same lock, the three trees pass the same structural
 * walk; the by-block records are streamed in order and checked on their own (sane, in
 * order, not touching) and against the reverse map streamed alongside by a second cursor
 * (the two are sorted by start block); the by-length records are streamed and checked on
 * their own.  That the two trees hold the same extents is then shown by a fingerprint of
 * each tree's multiset of extents: a sum of keyed hashes (two 64-bit lanes, keys drawn at
 * random for each proof, so no image can be made to collide), equal with the counts.  Given
 * equal multisets and a clean by-block tree, everything the full check of either tree
 * would report is absent: each by-length extent is a by-block one (so in that tree, sane,
 * owned by nobody, overlapping no other).  The proof only ever concludes "clean"; anything
 * else (damage, a finding, an error) sends the checker to the full check, which alone
 * reports, so the findings are the same as without the proof.  When the census keeps the
 * AG's walk at the current change count (its first checker made it, scrub_ag_scan's
 * SCRUB_SHARE), the records are held already: the full check runs on them, with no walk.
 */
#include "ag.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "log.h"
#include "mem.h"
#include "scrub_priv.h"

#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

static void report_tree(struct mfs_scrub_ctx *ctx, const struct scrub_ag *sa, int t)
{
	scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "AG %u %s (root %u, %u levels): %s",
		     sa->agno, scrub_tree_names[t], mfs_get32(sa->agh->roots[t]),
		     mfs_get32(sa->agh->levels[t]), scrub_errstr(sa->tree_err[t]));
}

/* ---- the quick proof (see the top of the file) ---------------------------------------------- */

struct quick {
	uint32_t len;                   /* blocks in the AG */
	uint64_t key[2];                /* the fingerprint's keys */
	uint64_t sum[2][2];             /* [tree: 0 bno, 1 cnt][lane] */
	uint64_t nrecs[2];
	uint64_t prev_end;              /* end of the previous by-block extent */
	struct scrub_stream rm;         /* the reverse map, up to the by-block extent's last
					   block */
	int err;                        /* an rmap cursor error */
};

static uint64_t qmix(uint64_t x)
{
	x ^= x >> 30;
	x *= 0xbf58476d1ce4e5b9ull;
	x ^= x >> 27;
	x *= 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static void qadd(struct quick *q, int tree, uint32_t start, uint32_t n)
{
	uint64_t v = (uint64_t)start << 32 | n;

	for (int l = 0; l < 2; l++)
		q->sum[tree][l] += qmix(qmix(v ^ q->key[l]) + q->key[l]);
	q->nrecs[tree]++;
}

/* Sane on its own: as rec_sane, without reporting. */
static int qsane(const struct quick *q, uint32_t start, uint32_t n)
{
	return n && start >= MFS_AG_FIXED_BLOCKS && (uint64_t)start + n <= q->len;
}

/* By-block records: 0 to go on, 1 to stop (the full check must look), or an error. */
static int qbno_rec(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_alloc_rec *a = rec;
	struct quick *q = priv;
	uint32_t start = mfs_get32(a->startblock), n = mfs_get32(a->blockcount);
	int err;

	(void)cur;
	if (!qsane(q, start, n) || (q->nrecs[0] && start <= q->prev_end))
		return 1;
	q->prev_end = (uint64_t)start + n;
	qadd(q, 0, start, n);
	/* xref_rmap: the last rmap record starting in or before the extent ends before it. */
	err = scrub_stream_upto(&q->rm, start + n - 1);
	if (err) {
		q->err = err;
		return 1;
	}
	if (q->rm.have_at && (uint64_t)mfs_get32(q->rm.at.r.startblock) +
			     mfs_get32(q->rm.at.r.blockcount) > start)
		return 1;
	return 0;
}

static int qcnt_rec(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_alloc_rec *a = rec;
	struct quick *q = priv;
	uint32_t start = mfs_get32(a->startblock), n = mfs_get32(a->blockcount);

	(void)cur;
	if (!qsane(q, start, n))
		return 1;
	qadd(q, 1, start, n);
	return 0;
}

/* The structural walk of scrub_ag_scan (mfs_btree_verify reads and checks every block: its
 * second walk, mfs_btree_visit_blocks, only collects their numbers, which the proof does not
 * need), then fn on every record.  0 when all of it passed, 1 when the full check must look,
 * or an operational error. */
static int qtree(struct mfs_scrub_ctx *ctx, struct mfs_buf *agh_bp, int t, mfs_btree_rec_fn fn,
		 struct quick *q)
{
	struct mfs_btree_cur cur;
	int err = scrub_cancelled(ctx);

	if (err)
		return err;
	mfs_ag_cur_init(&cur, ctx->fs, NULL, ctx->agno, (enum mfs_ag_tree)t, agh_bp);
	cur.flags = MFS_BTREE_CUR_ONCE;       /* a sweep: kept out of the buffer cache */
	err = mfs_btree_verify(&cur, NULL, NULL);
	if (!err && fn)
		err = mfs_btree_query_range(&cur, NULL, NULL, fn, q);
	mfs_btree_cur_release(&cur);
	if (err == -ENOMEM || err == -ECANCELED)
		return err;
	return err ? 1 : 0;
}

/*
 * With the AG locked: 1 when both free-space trees are proven clean (neither checker would
 * report anything), 0 when the full check must decide, or an operational error.
 */
static int alloc_quick(struct mfs_scrub_ctx *ctx)
{
	struct mfs_buf *agh_bp;
	struct quick q;
	int err, ret = 0;

	memset(&q, 0, sizeof(q));
	if (getrandom(q.key, sizeof(q.key), GRND_NONBLOCK) != (ssize_t)sizeof(q.key)) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		q.key[0] = qmix((uint64_t)ts.tv_nsec ^ (uint64_t)(uintptr_t)&q);
		q.key[1] = qmix(q.key[0] ^ (uint64_t)ts.tv_sec);
	}
	q.len = mfs_ag_length(&ctx->fs->geo, ctx->agno);
	err = mfs_read_agh(ctx->fs, ctx->agno, &agh_bp);
	if (err)
		return mfs_is_corruption(err) ? 0 : err;
	/* The reverse map first: its structure, then a cursor on its first record. */
	err = qtree(ctx, agh_bp, MFS_BT_RMAP, NULL, &q);
	if (err)
		goto out_agh;
	err = scrub_stream_open(&q.rm, ctx->fs, ctx->agno, MFS_BT_RMAP, agh_bp);
	q.rm.cur.flags = MFS_BTREE_CUR_ONCE;  /* from its second leaf on */
	if (!err)
		err = qtree(ctx, agh_bp, MFS_BT_BNO, qbno_rec, &q);
	if (!err && q.err)
		err = q.err == -ENOMEM ? -ENOMEM : 1;
	scrub_stream_close(&q.rm);
	if (err < 0 && err != -ENOMEM && err != -ECANCELED)
		err = 1;                /* an rmap read error: the full check says */
	if (!err)
		err = qtree(ctx, agh_bp, MFS_BT_CNT, qcnt_rec, &q);
	if (!err)
		ret = q.nrecs[0] == q.nrecs[1] && q.sum[0][0] == q.sum[1][0] &&
		      q.sum[0][1] == q.sum[1][1];
out_agh:
	mfs_buf_put(agh_bp);
	return err < 0 ? err : ret;
}

/* Common start: lock, walk, header and tree errors.  1: go on with the records. */
/*
 * An AG header marked MFS_AGH_REAP (a rebuild's old tree blocks still to free: a crash cut
 * its reap short) is reported by the by-block tree's check, whose repair (the free-space
 * rebuild) frees them; the reverse map's check leaves those blocks to this finding.
 */
static void report_reap(struct mfs_scrub_ctx *ctx)
{
	struct mfs_buf *bp;

	if (mfs_read_agh(ctx->fs, ctx->agno, &bp))
		return;              /* the header's own check reports it */
	if (mfs_get32(((const struct mfs_agh *)bp->data)->flags) & MFS_AGH_REAP)
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "AG %u: old tree blocks of an "
			     "interrupted rebuild are still to be freed (the AG header's reap "
			     "flag)", ctx->agno);
	mfs_buf_put(bp);
}

static int alloc_begin(struct mfs_scrub_ctx *ctx, int t, struct scrub_ag *sa, int *err)
{
	scrub_ag_lock(ctx->fs, ctx->agno);
	memset(sa, 0, sizeof(*sa));
	*err = 0;
	if (t == MFS_BT_BNO)
		report_reap(ctx);
	/* The AG's walk kept by the census at the current change count (the AG's first
	 * checker made it) is the trees as they are, already walked and collected: the full
	 * check on it reads nothing, where the proof would walk the three trees again. */
	if (!ctx->census || scrub_census_scan_get(ctx, ctx->agno, sa) != 0) {
		*err = alloc_quick(ctx);
		if (*err) {             /* proven clean, or an operational error */
			if (*err > 0)
				*err = 0;
			return 0;
		}
		*err = scrub_ag_scan(ctx, ctx->agno, SCRUB_WANT_BNO | SCRUB_WANT_CNT |
				     SCRUB_WANT_RMAP, sa);
		if (*err)
			return 0;
	}
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
