/*
 * scrub_bmap_batch.c — the extent-map checks of a whole request, looked at together: the
 * quick looks (scrub_inode.c, "BMAP") of every inode the request will check, with their
 * inline extents cross-referenced against each AG's reverse map and free space in block
 * order — one pass along each tree, a cursor moved forward and looked up afresh only
 * after a long gap, under one hold of the AG's lock — instead of two lookups from the root
 * per extent.  The verdicts wait in the memo (scrub_priv.h) for the checks; a verdict
 * other than clean sends its check to the full look, which alone reports.
 *
 * The cross-reference of extent [agbno, agbno + len) of inode ino at file block off is
 * scrub_xref_extent's: the last reverse-map record starting at or before agbno covers the
 * whole extent, is ino's, and maps agbno to file block off (its offset is that of its own
 * first block); the last free extent starting at or before agbno + len - 1 ends at or
 * before agbno.  Every extent of an inode must pass for its verdict to be clean; a damaged
 * tree, or an extent outside the AGs, leaves the verdict to the full look.  An inode
 * whose one extent the reverse-map check of its AG matched to its record, that AG found
 * clean (SCRUB_CI_ROOTMAP, the census current), needs none: the record covers the extent
 * exactly, and no block of a clean AG is both owned and free.
 */
#include "ag.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "mem.h"
#include "scrub_priv.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* A cursor this many records behind a wanted block is looked up afresh instead. */
#define FINGER_STEPS 32

/* One inline extent of an inode of the batch. */
struct bx_ext {
	uint64_t fsb;
	uint64_t off;               /* file block of its first block */
	uint32_t len;
	uint32_t v;                 /* index of its inode's verdict */
};

/*
 * Make s->at the last record starting at or before agbno (have_at = 0: none): stepped
 * forward (scrub_stream_upto) when that is at most FINGER_STEPS records ahead, else looked
 * up afresh.
 */
static int finger_seek(struct scrub_stream *s, uint32_t agbno)
{
	unsigned steps = 0;
	int err;

	if (s->have_at && mfs_get32(s->at.a.startblock) <= agbno) {
		while (s->have_next && mfs_get32(s->next.a.startblock) <= agbno) {
			if (++steps > FINGER_STEPS)
				return scrub_stream_seek(s, agbno);
			err = scrub_stream_step(s);
			if (err)
				return err;
		}
		return 0;
	}
	return scrub_stream_seek(s, agbno);
}

/* Is extent e (AG-relative start agbno) of inode ino what the fingers show? */
static int ext_ok(const struct scrub_stream *rf, const struct scrub_stream *bf,
		  const struct bx_ext *e, uint32_t agbno, uint64_t ino)
{
	const struct mfs_rmap_rec *r = &rf->at.r;
	const struct mfs_alloc_rec *f = &bf->at.a;
	uint32_t d;

	if (!rf->have_at || (uint64_t)mfs_get32(r->startblock) + mfs_get32(r->blockcount) <
			    (uint64_t)agbno + e->len)
		return 0;               /* not covered by one record */
	d = agbno - mfs_get32(r->startblock);
	if (mfs_get64(r->owner) != ino || e->off < d || mfs_get64(r->offset) != e->off - d)
		return 0;               /* another owner or offset */
	if (bf->have_at && (uint64_t)mfs_get32(f->startblock) + mfs_get32(f->blockcount) > agbno)
		return 0;               /* some of it is free */
	return 1;
}

/*
 * Cross-reference the extents e[0..n) of AG agno (sorted by block) with its trees under
 * its lock; a failing extent makes its inode's verdict 0.  Damaged trees make every
 * verdict of them 0 (the full looks say so); other errors are returned.
 */
static int xref_ag(struct mfs_scrub_ctx *ctx, struct mfs_scrub_memo *m, uint32_t agno,
		   const struct bx_ext *e, size_t n)
{
	struct mfs_fs *fs = ctx->fs;
	const struct mfs_geom *g = &fs->geo;
	uint32_t aglen = mfs_ag_length(g, agno);
	struct scrub_stream rf, bf;
	struct mfs_buf *hbp;
	size_t i = 0;
	int err;

	memset(&rf, 0, sizeof(rf));
	memset(&bf, 0, sizeof(bf));
	scrub_ag_lock(fs, agno);
	err = mfs_read_agh(fs, agno, &hbp);
	if (!err) {
		mfs_ag_cur_init(&rf.cur, fs, NULL, agno, MFS_BT_RMAP, hbp);
		mfs_ag_cur_init(&bf.cur, fs, NULL, agno, MFS_BT_BNO, hbp);
		for (; i < n && !err; i++) {
			uint32_t agbno = mfs_fsb_to_agbno(g, e[i].fsb);
			struct scrub_bmap_verdict *v = &m->verdicts[e[i].v];

			if (v->verdict != 1)
				continue;
			if ((uint64_t)agbno + e[i].len > aglen || e[i].len == 0) {
				v->verdict = 0;
				continue;
			}
			err = finger_seek(&rf, agbno);
			if (!err)
				err = finger_seek(&bf, agbno + e[i].len - 1);
			if (!err && !ext_ok(&rf, &bf, &e[i], agbno, v->ino))
				v->verdict = 0;
		}
		scrub_stream_close(&rf);
		scrub_stream_close(&bf);
		mfs_buf_put(hbp);
	}
	scrub_ag_unlock(fs, agno);
	if (mfs_is_corruption(err)) {
		for (i = 0; i < n; i++)
			m->verdicts[e[i].v].verdict = 0;
		err = 0;
	}
	return err;
}

static int cmp_u64v(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_ext(const void *a, const void *b)
{
	const struct bx_ext *x = a, *y = b;

	return x->fsb < y->fsb ? -1 : x->fsb > y->fsb;
}

/* The quick look at each inode: its verdict, and its extents appended to *ext. */
static int look_all(struct mfs_scrub_ctx *ctx, struct mfs_scrub_memo *m, const uint64_t *inos,
		    size_t n, struct scrub_recs *ext)
{
	uint64_t buf[MFS_MAX_INODESIZE / 8];
	int err = 0;

	for (size_t i = 0; i < n && !err; i++) {
		struct scrub_bmap_verdict *v;
		struct scrub_census_ino ci;
		const struct mfs_dinode *d;
		const uint8_t *recs = NULL;
		long nr = 0;
		int usable, r;

		if ((i && inos[i] == inos[i - 1]) || mfs_ino_check(ctx->fs, inos[i]))
			continue;       /* a repeat, or refused by the check itself */
		/* The census, when current, has the quick look's answer for the inode now. */
		if (scrub_census_get(ctx, inos[i], &ci) && !(ci.flags & SCRUB_CI_FREE) &&
		    (ci.flags & (SCRUB_CI_NOMAP | SCRUB_CI_EXT1))) {
			v = &m->verdicts[m->nverdicts++];
			v->ino = inos[i];
			v->verdict = 1;
			/* ROOTMAP: the reverse-map check of the extent's AG, finding nothing
			 * there, matched its record to this very extent: with nothing
			 * committed since, the cross-reference below would pass. */
			if ((ci.flags & (SCRUB_CI_EXT1 | SCRUB_CI_ROOTMAP)) == SCRUB_CI_EXT1) {
				struct bx_ext x = { ci.fsb, 0, ci.len, (uint32_t)(m->nverdicts - 1) };

				err = scrub_recs_add(ext, &x);
			}
			continue;
		}
		err = scrub_dinode_quick(ctx, inos[i], buf, &d, &usable);
		if (err) {
			if (!mfs_is_corruption(err))
				return err;
			err = 0;
			continue;       /* no verdict: its check reads again */
		}
		r = scrub_bmap_quick_dinode(ctx, inos[i], d, usable, &recs, &nr);
		v = &m->verdicts[m->nverdicts++];
		v->ino = inos[i];
		v->verdict = r == 2 ? 1 : r;
		for (long k = 0; r == 2 && k < nr && !err; k++) {
			struct mfs_bmbt_rec br;
			struct bx_ext x;

			memcpy(&br, recs + (size_t)k * sizeof(br), sizeof(br));
			x.fsb = mfs_get64(br.startblock);
			x.off = mfs_get64(br.startoff);
			x.len = mfs_get32(br.blockcount);
			x.v = (uint32_t)(m->nverdicts - 1);
			err = scrub_recs_add(ext, &x);
		}
	}
	return err;
}

int mfs_scrub_memo_prepare_bmap(struct mfs_scrub_ctx *ctx, const uint64_t *inos, size_t n)
{
	struct mfs_scrub_memo *m = ctx->memo;
	const struct mfs_geom *g = &ctx->fs->geo;
	struct scrub_recs ext;
	uint64_t *sorted;
	int err;

	if (!m || !n)
		return 0;
	m->nverdicts = 0;
	if (n > m->verdicts_cap) {
		struct scrub_bmap_verdict *nv = mfs_realloc(m->verdicts, n * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		m->verdicts = nv;
		m->verdicts_cap = n;
	}
	sorted = mfs_malloc(n * sizeof(*sorted));
	if (!sorted)
		return -ENOMEM;
	memcpy(sorted, inos, n * sizeof(*sorted));
	qsort(sorted, n, sizeof(*sorted), cmp_u64v);
	scrub_recs_init(&ext, sizeof(struct bx_ext));
	err = look_all(ctx, m, sorted, n, &ext);
	free(sorted);
	if (!err && ext.n > 1)
		qsort(ext.v, ext.n, ext.len, cmp_ext);
	/* AG by AG: the extents of one AG lie together once sorted. */
	for (size_t i = 0, j; !err && i < ext.n; i = j) {
		const struct bx_ext *e = scrub_rec(&ext, i);
		uint32_t agno = mfs_fsb_to_agno(g, e->fsb);

		for (j = i + 1; j < ext.n; j++)
			if (mfs_fsb_to_agno(g, ((const struct bx_ext *)scrub_rec(&ext, j))->fsb) !=
			    agno)
				break;
		err = scrub_cancelled(ctx);
		if (err)
			break;
		if (agno >= g->agcount) {
			for (size_t k = i; k < j; k++)
				m->verdicts[((const struct bx_ext *)scrub_rec(&ext, k))->v].verdict = 0;
			continue;
		}
		err = xref_ag(ctx, m, agno, e, j - i);
	}
	scrub_recs_free(&ext);
	if (err)
		m->nverdicts = 0;       /* each check looks for itself */
	return err;
}

static int cmp_verdict(const void *key, const void *elt)
{
	uint64_t ino = *(const uint64_t *)key;
	const struct scrub_bmap_verdict *v = elt;

	return ino < v->ino ? -1 : ino > v->ino;
}

int scrub_bmap_batch_verdict(const struct mfs_scrub_memo *m, uint64_t ino)
{
	const struct scrub_bmap_verdict *v;

	if (!m || !m->nverdicts)
		return 2;
	v = bsearch(&ino, m->verdicts, m->nverdicts, sizeof(*v), cmp_verdict);
	return v ? v->verdict : 2;
}
