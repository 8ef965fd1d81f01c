/*
 * check_bmap.c — the data fork's extent map (bmap.c, bmbt.c) against a model.
 *
 * The model is a few windows of file blocks placed far apart (block 0, past 4 GiB, across
 * block 2^32, past 2^40, and at the very top of the file's range), one entry per block:
 * the disk block it maps to, or a hole, and whether it is unwritten.  Seeded random
 * allocations, punches, unwritten conversions, lookups and seeks run against it (each
 * change in its own transaction, rolled as punch/convert ask), and after every phase:
 *
 *   - the walk yields exactly the model's maximal runs (contiguous in the file and on disk,
 *     same state), and lookups of run starts, holes and random blocks agree;
 *   - the extent btree passes mfs_btree_verify; ip->nblocks = data + btree blocks;
 *   - the reverse maps of all AGs hold, for this inode, exactly one record per maximal
 *     file-and-disk-contiguous run with the right file offset, and BMBT-flagged records
 *     covering exactly the btree's blocks; no disk block is mapped twice;
 *   - at the end, mendfs_db -c check on the flushed image (free space vs reverse map).
 *
 * Plus: a cancelled transaction of mixed changes (format conversions included) leaves the
 * image byte-identical; an attribute fork (forkoff) shrinks the inline list and its bytes
 * are never touched; damaged inline records are reported, not followed.
 *
 * Images are formatted in process (tu_format: lib/format, the code of mkfs.mendfs) and
 * checked by the built mendfs_db ($BIN, default build/bin); without it the program skips
 * (exit 77).  MFS_SEED=n replays a run.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ag.h"
#include "bcache.h"
#include "bmap.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "ialloc.h"
#include "inode.h"
#include "log.h"
#include "mendfs_format.h"
#include "trans.h"

#include "format.h"
#include "tu.h"

#define NOPS 48000u      /* about 0.3 s plain, 3 s under ASan */
#define NPHASES 8u

static uint64_t seed;            /* MFS_SEED, or from the clock; each test derives its stream */

/* ---- images ----------------------------------------------------------------------------- */
/* A fresh image of `bytes` in 4 AGs with block size bs and inode size isize, opened with an
 * inode cache. */
static void bimg_make(struct tu_img *t, uint32_t bs, uint32_t isize, uint64_t bytes)
{
	struct mfs_format_opts o = { .blocksize = bs, .inodesize = isize, .agcount = 4 };

	tu_img_make(t, "mendfs_bmap", bytes, &o, 0);
}

/* Mark the superblock dirty (as a mounted filesystem's is), close, run mendfs_db's check,
 * reopen. */
static void db_check(struct tu_img *t)
{
	tu_sb_mark_dirty(t->fs);
	tu_img_db_check(t);
}

static uint64_t new_file(struct tu_img *t)
{
	struct mfs_trans *tp;
	struct mfs_inode *ip;
	uint64_t ino;

	CK_OK(mfs_trans_alloc(t->fs, &tp));
	CK_OK(mfs_ialloc(tp, 0, S_IFREG | 0644, &ino));
	CK_OK(mfs_trans_commit(tp));
	CK_OK(mfs_iget(t->fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	CK_OK(mfs_trans_alloc(t->fs, &tp));
	ip->nlink = 1;
	CK_OK(mfs_inode_log(tp, ip));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(ip->dformat, MFS_FMT_EXTENTS);
	CK_EQ(ip->dnext, 0);
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	return ino;
}

/* ---- the model ---------------------------------------------------------------------------- */
#define NWIN 6u
#define HOLE (~0ull)

struct model {
	uint32_t bs;
	uint64_t maxb;
	uint32_t w;                 /* blocks per window */
	uint64_t base[NWIN];        /* increasing, far apart */
	uint64_t *map[NWIN];        /* fsb or HOLE */
	uint8_t *unw[NWIN];
	uint8_t *owned;             /* per fsblock: mapped by the model */
	uint64_t dblocks;
	uint64_t mapped;
};

static void model_init(struct model *m, const struct mfs_fs *fs, uint32_t w)
{
	memset(m, 0, sizeof(*m));
	m->bs = fs->geo.blocksize;
	m->maxb = mfs_bmap_max_blocks(fs);
	m->w = w;
	m->base[0] = 0;
	m->base[1] = (5ull << 30) / m->bs;             /* 5 GiB into the file */
	m->base[2] = (1ull << 32) - w / 2;             /* across block 2^32 */
	m->base[3] = (1ull << 32) + 3 * (uint64_t)w;
	m->base[4] = (1ull << 40) + 17;
	m->base[5] = m->maxb - w;                      /* the very top */
	for (unsigned i = 0; i < NWIN; i++) {
		m->map[i] = malloc(w * sizeof(uint64_t));
		m->unw[i] = calloc(w, 1);
		CK_TRUE(m->map[i] && m->unw[i]);
		for (uint32_t j = 0; j < w; j++)
			m->map[i][j] = HOLE;
	}
	m->dblocks = fs->geo.dblocks;
	m->owned = calloc(m->dblocks, 1);
	CK_TRUE(m->owned);
}

static void model_free(struct model *m)
{
	for (unsigned i = 0; i < NWIN; i++) {
		free(m->map[i]);
		free(m->unw[i]);
	}
	free(m->owned);
}

/* Window holding file block off, or -1. */
static int mwin(const struct model *m, uint64_t off)
{
	for (unsigned i = 0; i < NWIN; i++)
		if (off >= m->base[i] && off - m->base[i] < m->w)
			return (int)i;
	return -1;
}

static uint64_t mget(const struct model *m, uint64_t off, int *unw)
{
	int w = mwin(m, off);

	*unw = 0;
	if (w < 0)
		return HOLE;
	*unw = m->unw[w][off - m->base[w]];
	return m->map[w][off - m->base[w]];
}

/* Nearest mapped block before off (HOLE if none) and first mapped block >= off (HOLE). */
static uint64_t mprev_mapped(const struct model *m, uint64_t off)
{
	for (int i = NWIN - 1; i >= 0; i--) {
		uint64_t b = m->base[i];

		if (b >= off)
			continue;
		for (uint64_t o = (off - b < m->w ? off - b : m->w); o-- > 0;)
			if (m->map[i][o] != HOLE)
				return b + o;
	}
	return HOLE;
}

static uint64_t mnext_mapped(const struct model *m, uint64_t off, int written_only)
{
	for (unsigned i = 0; i < NWIN; i++) {
		uint64_t b = m->base[i];

		if (b + m->w <= off)
			continue;
		for (uint64_t o = off > b ? off - b : 0; o < m->w; o++)
			if (m->map[i][o] != HOLE && !(written_only && m->unw[i][o]))
				return b + o;
	}
	return HOLE;
}

struct mrun {
	uint64_t off, fsb, len;
	int unw;
};

static int joins(const struct mfs_geom *g, uint64_t pf, uint64_t f, int pu, int u, int use_unw)
{
	return f == pf + 1 && mfs_fsb_to_agno(g, f) == mfs_fsb_to_agno(g, pf) &&
	       (!use_unw || pu == u);
}

/* The model's maximal runs, in file order; use_unw 0: the state is ignored (reverse map). */
static size_t mruns(const struct model *m, const struct mfs_geom *g, int use_unw,
		    struct mrun **out)
{
	size_t n = 0, cap = 1024;
	struct mrun *v = malloc(cap * sizeof(*v));

	CK_TRUE(v);
	for (unsigned i = 0; i < NWIN; i++) {
		for (uint32_t j = 0; j < m->w; j++) {
			uint64_t f = m->map[i][j];
			int u = m->unw[i][j];

			if (f == HOLE)
				continue;
			if (n && v[n - 1].off + v[n - 1].len == m->base[i] + j &&
			    joins(g, v[n - 1].fsb + v[n - 1].len - 1, f, v[n - 1].unw, u, use_unw)) {
				v[n - 1].len++;
				continue;
			}
			if (n == cap) {
				cap *= 2;
				v = realloc(v, cap * sizeof(*v));
				CK_TRUE(v);
			}
			v[n].off = m->base[i] + j;
			v[n].fsb = f;
			v[n].len = 1;
			v[n].unw = use_unw ? u : 0;
			n++;
		}
	}
	*out = v;
	return n;
}

/* ---- checks ------------------------------------------------------------------------------- */
struct collect {
	struct mrun *v;
	size_t n, cap;
	uint64_t prev_end;
};

static void collect_add(struct collect *c, uint64_t off, uint64_t fsb, uint64_t len, int unw)
{
	if (c->n == c->cap) {
		c->cap = c->cap ? c->cap * 2 : 1024;
		c->v = realloc(c->v, c->cap * sizeof(*c->v));
		CK_TRUE(c->v);
	}
	c->v[c->n].off = off;
	c->v[c->n].fsb = fsb;
	c->v[c->n].len = len;
	c->v[c->n].unw = unw;
	c->n++;
}

static int walk_fn(struct mfs_inode *ip, const struct mfs_bmap_ext *e, void *priv)
{
	collect_add(priv, e->startoff, e->startblock, e->len, e->unwritten);
	return 0;
}

struct rmcol {
	uint64_t ino;
	uint32_t agno;
	const struct mfs_geom *g;
	struct collect data;        /* (file offset, fsb, len) */
	struct collect bmbt;        /* (0, fsb, len) */
};

static int rmap_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_rmap_rec *r = rec;
	struct rmcol *c = priv;
	uint64_t off = mfs_get64(r->offset);
	uint64_t fsb = mfs_agbno_to_fsb(c->g, c->agno, mfs_get32(r->startblock));

	if (mfs_get64(r->owner) != c->ino)
		return 0;
	CK_TRUE(!(off & MFS_RMAP_ATTR_FORK));
	if (off & MFS_RMAP_BMBT_BLOCK)
		collect_add(&c->bmbt, 0, fsb, mfs_get32(r->blockcount), 0);
	else
		collect_add(&c->data, off, fsb, mfs_get32(r->blockcount), 0);
	return 0;
}

static int blk_fn(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	collect_add(priv, 0, fsb, 1, 0);
	return 0;
}

static int cmp_fsb(const void *a, const void *b)
{
	const struct mrun *x = a, *y = b;

	return x->fsb < y->fsb ? -1 : x->fsb > y->fsb;
}

static uint64_t longest;     /* longest extent seen by check_all */

struct stats {
	unsigned to_btree, to_inline, maxlevels;
	uint64_t checks;
};

/* Everything about inode ino against the model; returns the number of extents. */
static size_t check_all(struct tu_img *t, struct model *m, uint64_t ino)
{
	const struct mfs_geom *g = &t->fs->geo;
	struct collect walk = { 0 }, blocks = { 0 };
	struct rmcol rc;
	struct mrun *runs, *rruns;
	struct mfs_inode *ip;
	struct mfs_bmap_ext e;
	uint64_t nbt = 0, nrecs = 0;
	size_t nr, nrr;

	memset(&rc, 0, sizeof(rc));
	CK_OK(mfs_iget(t->fs, ino, 0, &ip));
	pthread_rwlock_rdlock(&ip->lock);

	/* the walk yields the model's runs exactly */
	CK_OK(mfs_bmap_walk(ip, walk_fn, &walk));
	nr = mruns(m, g, 1, &runs);
	CK_EQ(walk.n, nr);
	for (size_t i = 0; i < nr; i++)
		if (runs[i].len > longest)
			longest = runs[i].len;
	for (size_t i = 0; i < nr; i++) {
		if (walk.v[i].off != runs[i].off || walk.v[i].fsb != runs[i].fsb ||
		    walk.v[i].len != runs[i].len || walk.v[i].unw != runs[i].unw)
			ck_abort_msg("seed %" PRIu64 ": extent %zu is %" PRIu64 "+%" PRIu64 " at %"
				     PRIu64 " (unw %d), model says %" PRIu64 "+%" PRIu64 " at %"
				     PRIu64 " (unw %d)", seed, i, walk.v[i].off, walk.v[i].len,
				     walk.v[i].fsb, walk.v[i].unw, runs[i].off, runs[i].len,
				     runs[i].fsb, runs[i].unw);
		/* lookups of the first and last block of every run, and the hole after it */
		CK_OK(mfs_bmap_lookup(ip, runs[i].off + runs[i].len - 1, &e));
		CK_EQ(e.startoff, runs[i].off);
		CK_EQ(e.len, runs[i].len);
		CK_EQ(e.startblock, runs[i].fsb);
		CK_EQ(e.unwritten, runs[i].unw);
		if (runs[i].off + runs[i].len < m->maxb &&
		    (i + 1 == nr || runs[i + 1].off > runs[i].off + runs[i].len)) {
			CK_OK(mfs_bmap_lookup(ip, runs[i].off + runs[i].len, &e));
			CK_EQ(e.startblock, MFS_BMAP_HOLE);
			CK_EQ(e.startoff, runs[i].off + runs[i].len);
			CK_EQ(e.startoff + e.len, i + 1 < nr ? runs[i + 1].off : m->maxb);
		}
	}
	if (nr == 0 || runs[0].off > 0) {
		CK_OK(mfs_bmap_lookup(ip, 0, &e));
		CK_EQ(e.startblock, MFS_BMAP_HOLE);
		CK_EQ(e.startoff, 0);
		CK_EQ(e.len, nr ? runs[0].off : m->maxb);
	}

	/* the btree's structure and the block count */
	if (ip->dformat == MFS_FMT_BTREE) {
		struct mfs_btree_cur cur;

		CK_OK(mfs_bmbt_cur_init(&cur, NULL, ip));
		CK_OK(mfs_btree_verify(&cur, &nrecs, &nbt));
		CK_OK(mfs_btree_visit_blocks(&cur, blk_fn, &blocks));
		mfs_btree_cur_release(&cur);
		CK_EQ(nrecs, nr);
		CK_EQ(blocks.n, nbt);
	} else {
		CK_EQ(ip->dformat, MFS_FMT_EXTENTS);
		CK_EQ(ip->dnext, nr);
	}
	CK_EQ(ip->nblocks, m->mapped + nbt);

	/* reverse maps: one record per file-and-disk-contiguous run, btree blocks flagged */
	rc.ino = ino;
	rc.g = g;
	for (uint32_t a = 0; a < g->agcount; a++) {
		struct mfs_btree_cur cur;
		struct mfs_buf *agh;

		rc.agno = a;
		CK_OK(mfs_read_agh(t->fs, a, &agh));
		mfs_ag_cur_init(&cur, t->fs, NULL, a, MFS_BT_RMAP, agh);
		CK_OK(mfs_btree_query_range(&cur, NULL, NULL, rmap_fn, &rc));
		mfs_btree_cur_release(&cur);
		mfs_buf_put(agh);
	}
	nrr = mruns(m, g, 0, &rruns);
	qsort(rruns, nrr, sizeof(*rruns), cmp_fsb);
	CK_EQ(rc.data.n, nrr);
	for (size_t i = 0; i < nrr; i++) {
		if (rc.data.v[i].off != rruns[i].off || rc.data.v[i].fsb != rruns[i].fsb ||
		    rc.data.v[i].len != rruns[i].len)
			ck_abort_msg("seed %" PRIu64 ": rmap record %zu is %" PRIu64 "+%" PRIu64
				     " at file %" PRIu64 ", model run %" PRIu64 "+%" PRIu64
				     " at file %" PRIu64, seed, i, rc.data.v[i].fsb,
				     rc.data.v[i].len, rc.data.v[i].off, rruns[i].fsb, rruns[i].len,
				     rruns[i].off);
	}
	{
		uint64_t nb = 0;
		size_t j = 0;

		if (blocks.n)
			qsort(blocks.v, blocks.n, sizeof(*blocks.v), cmp_fsb);
		for (size_t i = 0; i < rc.bmbt.n; i++)
			nb += rc.bmbt.v[i].len;
		CK_EQ(nb, nbt);
		/* every btree block lies in a BMBT record (both sorted by block) */
		for (size_t i = 0; i < blocks.n; i++) {
			while (j < rc.bmbt.n && rc.bmbt.v[j].fsb + rc.bmbt.v[j].len <= blocks.v[i].fsb)
				j++;
			CK_TRUE(j < rc.bmbt.n && rc.bmbt.v[j].fsb <= blocks.v[i].fsb);
			CK_TRUE(!m->owned[blocks.v[i].fsb]);
		}
	}

	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	free(runs);
	free(rruns);
	free(walk.v);
	free(blocks.v);
	free(rc.data.v);
	free(rc.bmbt.v);
	if (getenv("BMAP_VERBOSE"))
		printf("  check: %zu extents, %" PRIu64 " blocks mapped, %" PRIu64 " btree blocks\n",
		       nr, m->mapped, nbt);
	return nr;
}

/* ---- operations ----------------------------------------------------------------------------- */
struct ctx {
	struct tu_img *t;
	struct model *m;
	uint64_t ino;
	struct mfs_inode *ip;       /* held, locked exclusive by the caller of each op */
	struct stats st;
	uint8_t lastfmt;
};

static void note_format(struct ctx *c)
{
	if (c->lastfmt == MFS_FMT_EXTENTS && c->ip->dformat == MFS_FMT_BTREE)
		c->st.to_btree++;
	if (c->lastfmt == MFS_FMT_BTREE && c->ip->dformat == MFS_FMT_EXTENTS)
		c->st.to_inline++;
	if (c->ip->dformat == MFS_FMT_BTREE && c->ip->dnext > c->st.maxlevels)
		c->st.maxlevels = c->ip->dnext;
	c->lastfmt = c->ip->dformat;
}

/* Map [off, off+len) (inside one window), checking what alloc reports. */
static void op_alloc(struct ctx *c, uint64_t off, uint64_t len, int unw)
{
	struct model *m = c->m;
	int w = mwin(m, off);

	CK_TRUE(w >= 0 && mwin(m, off + len - 1) == w);
	while (len) {
		struct mfs_trans *tp;
		struct mfs_bmap_ext e;
		uint64_t f;
		int u, was_hole;

		f = mget(m, off, &u);
		was_hole = f == HOLE;
		CK_OK(mfs_trans_alloc(c->t->fs, &tp));
		CK_OK(mfs_bmap_alloc(tp, c->ip, off, len, unw ? MFS_BMAP_UNWRITTEN : 0, &e));
		CK_OK(mfs_trans_commit(tp));
		note_format(c);
		CK_EQ(e.startoff, off);
		CK_TRUE(e.len >= 1 && e.len <= len);
		for (uint64_t i = 0; i < e.len; i++) {
			uint64_t o = off + i - m->base[w];

			f = m->map[w][o];
			if (was_hole) {
				/* freshly allocated: the whole extent was a hole, blocks unused */
				CK_TRUE(f == HOLE);
				CK_TRUE(e.startblock + i < m->dblocks);
				CK_TRUE(!m->owned[e.startblock + i]);
				m->owned[e.startblock + i] = 1;
				m->map[w][o] = e.startblock + i;
				m->unw[w][o] = (uint8_t)unw;
				m->mapped++;
			} else {
				CK_EQ(f, e.startblock + i);
				CK_EQ(m->unw[w][o], e.unwritten);
			}
		}
		off += e.len;
		len -= e.len;
	}
}

static void op_punch(struct ctx *c, uint64_t off, uint64_t len)
{
	struct model *m = c->m;
	uint64_t pos = off, end = off + len;

	while (pos < end) {
		struct mfs_trans *tp;
		uint64_t done;

		CK_OK(mfs_trans_alloc(c->t->fs, &tp));
		CK_OK(mfs_bmap_punch(tp, c->ip, pos, end - pos, &done));
		CK_OK(mfs_trans_commit(tp));
		note_format(c);
		CK_TRUE(done > 0 && done <= end - pos);
		pos += done;
	}
	for (uint64_t o = off; o < end; o++) {
		int w = mwin(m, o);

		if (w < 0 || m->map[w][o - m->base[w]] == HOLE)
			continue;
		m->owned[m->map[w][o - m->base[w]]] = 0;
		m->map[w][o - m->base[w]] = HOLE;
		m->unw[w][o - m->base[w]] = 0;
		m->mapped--;
	}
}

static void op_convert(struct ctx *c, uint64_t off, uint64_t len)
{
	struct model *m = c->m;
	uint64_t pos = off, end = off + len;

	while (pos < end) {
		struct mfs_trans *tp;
		uint64_t done;

		CK_OK(mfs_trans_alloc(c->t->fs, &tp));
		CK_OK(mfs_bmap_convert_written(tp, c->ip, pos, end - pos, &done));
		CK_OK(mfs_trans_commit(tp));
		note_format(c);
		CK_TRUE(done > 0 && done <= end - pos);
		pos += done;
	}
	for (uint64_t o = off; o < end; o++) {
		int w = mwin(m, o);

		if (w >= 0)
			m->unw[w][o - m->base[w]] = 0;
	}
}

static void op_lookup(struct ctx *c, uint64_t off)
{
	struct model *m = c->m;
	struct mfs_bmap_ext e;
	uint64_t f;
	int u;

	CK_OK(mfs_bmap_lookup(c->ip, off, &e));
	CK_TRUE(e.startoff <= off && off - e.startoff < e.len);
	f = mget(m, off, &u);
	if (f == HOLE) {
		uint64_t p = mprev_mapped(m, off), n = mnext_mapped(m, off, 0);

		CK_EQ(e.startblock, MFS_BMAP_HOLE);
		CK_EQ(e.startoff, p == HOLE ? 0 : p + 1);
		CK_EQ(e.startoff + e.len, n == HOLE ? m->maxb : n);
	} else {
		CK_EQ(e.startblock + (off - e.startoff), f);
		CK_EQ(e.unwritten, u);
	}
}

static void op_seek(struct ctx *c, uint64_t off)
{
	struct model *m = c->m;
	uint64_t res, want;
	int w, err;

	/* SEEK_DATA: the first written block at or after off */
	want = mnext_mapped(m, off, 1);
	err = mfs_bmap_seek(c->ip, off, SEEK_DATA, &res);
	if (want == HOLE) {
		CK_EQ(err, -ENXIO);
	} else {
		CK_OK(err);
		CK_EQ(res, want);
	}
	/* SEEK_HOLE: the first block at or after off that is not written data */
	want = off;
	w = mwin(m, off);
	if (w >= 0) {
		while (want < m->base[w] + m->w && m->map[w][want - m->base[w]] != HOLE &&
		       !m->unw[w][want - m->base[w]])
			want++;
	}
	CK_OK(mfs_bmap_seek(c->ip, off, SEEK_HOLE, &res));
	CK_EQ(res, want);
}

/* A random offset: mostly inside a window, sometimes just around one. */
static uint64_t roff(const struct model *m, int *win)
{
	unsigned w = (unsigned)tu_rand_below(NWIN);

	*win = (int)w;
	return m->base[w] + tu_rand_below(m->w);
}

static uint64_t rlen(const struct model *m, uint64_t off, int w, uint64_t max)
{
	uint64_t room = m->base[w] + m->w - off, len = 1 + tu_rand_below(max);

	return len < room ? len : room;
}

/* ---- tests ------------------------------------------------------------------------------------ */
static const struct {
	uint32_t bs, isize;
	uint64_t size;
	uint32_t w;
} configs[] = {
	{ 1024, 256, 256ull << 20, 4096 },
	{ 4096, 512, 128ull << 20, 2048 },
};

START_TEST(test_random)
{
	struct tu_img t;
	struct model m;
	struct ctx c;
	double t0;

	tu_srand(seed + (uint64_t)_i * 0x9e3779b97f4a7c15ull);
	longest = 0;
	printf("check_bmap random: seed %" PRIu64 ", block size %u, inode size %u\n", seed,
	       configs[_i].bs, configs[_i].isize);
	t0 = tu_now();
	bimg_make(&t, configs[_i].bs, configs[_i].isize, configs[_i].size);
	model_init(&m, t.fs, configs[_i].w);
	memset(&c, 0, sizeof(c));
	c.t = &t;
	c.m = &m;
	c.ino = new_file(&t);
	c.lastfmt = MFS_FMT_EXTENTS;

	for (unsigned phase = 0; phase < NPHASES; phase++) {
		/* phases alternate between growing (fragmenting) and shrinking the map */
		unsigned grow = phase % 4 < 2 ? 60 : 15, punch = phase % 4 < 2 ? 15 : 55;
		int kept = 0;

		CK_OK(mfs_iget(t.fs, c.ino, 0, &c.ip));
		pthread_rwlock_wrlock(&c.ip->lock);
		for (unsigned i = 0; i < NOPS / NPHASES; i++) {
			unsigned p = (unsigned)tu_rand_below(100);
			int w;
			uint64_t off = roff(&m, &w);

			if (p < grow) {
				/* small pieces of alternating state make many extents */
				op_alloc(&c, off, rlen(&m, off, w, phase % 8 < 4 ? 24 : 3),
					 (int)tu_rand_below(2));
			} else if (p < grow + punch) {
				op_punch(&c, off, rlen(&m, off, w, phase % 4 < 2 ? 16 : 400));
			} else if (p < grow + punch + 10) {
				op_convert(&c, off, rlen(&m, off, w, 64));
			} else if (p < grow + punch + 20) {
				op_lookup(&c, off);
				op_lookup(&c, off - (off > 0 ? 1 + tu_rand_below(off < 5000 ? off : 5000) : 0));
			} else {
				op_seek(&c, off);
				if (off > 3)
					op_seek(&c, off - 3);
			}
		}
		if (phase % 4 == 3) {
			/* empty the file entirely: back to an empty inline list */
			for (unsigned w = 0; w < NWIN; w++)
				op_punch(&c, m.base[w], m.w);
			kept = 1;
		}
		pthread_rwlock_unlock(&c.ip->lock);
		mfs_iput(c.ip);
		c.ip = NULL;
		c.st.checks += check_all(&t, &m, c.ino);
		if (kept)
			CK_EQ(m.mapped, 0);
	}
	printf("check_bmap random: %u ops, %u inline->btree, %u btree->inline, max %u levels, "
	       "longest extent %" PRIu64 ", %" PRIu64 " extents checked\n", NOPS, c.st.to_btree,
	       c.st.to_inline, c.st.maxlevels, longest, c.st.checks);
	CK_TRUE(c.st.to_btree >= 2 && c.st.to_inline >= 2);
	CK_TRUE(c.st.maxlevels >= (configs[_i].bs == 1024 ? 3u : 2u));
	{
		struct mfs_inode *ip;

		CK_OK(mfs_iget(t.fs, c.ino, 0, &ip));
		CK_EQ(ip->dformat, MFS_FMT_EXTENTS);
		CK_EQ(ip->dnext, 0);
		CK_EQ(ip->nblocks, 0);
		mfs_iput(ip);
	}
	db_check(&t);
	model_free(&m);
	tu_img_destroy(&t);
	printf("check_bmap random: %.2f s\n", tu_now() - t0);
}
END_TEST

/* A transaction of many changes (conversions both ways included), cancelled: the image is
 * byte for byte what it was, and the reloaded inode still matches the model. */
START_TEST(test_cancel_exact)
{
	struct tu_img t;
	struct model m;
	struct ctx c;

	tu_srand(seed ^ 0x5bd1e995ull);
	bimg_make(&t, 1024, 256, 32ull << 20);
	model_init(&m, t.fs, 1024);
	memset(&c, 0, sizeof(c));
	c.t = &t;
	c.m = &m;
	c.ino = new_file(&t);
	c.lastfmt = MFS_FMT_EXTENTS;

	for (unsigned round = 0; round < 6; round++) {
		struct mfs_trans *tp;
		struct mfs_bmap_ext e;
		uint32_t crc0, crc1;
		uint64_t done;

		/* committed state: inline (round 0, 3) or a btree of some size */
		CK_OK(mfs_iget(t.fs, c.ino, 0, &c.ip));
		pthread_rwlock_wrlock(&c.ip->lock);
		for (unsigned i = 0; i < (round % 3) * 60; i++) {
			int w;
			uint64_t off = roff(&m, &w);

			op_alloc(&c, off, rlen(&m, off, w, 4), (int)tu_rand_below(2));
		}
		if (round % 3 == 0)
			for (unsigned w = 0; w < NWIN; w++)
				op_punch(&c, m.base[w], m.w);
		pthread_rwlock_unlock(&c.ip->lock);
		mfs_iput(c.ip);
		check_all(&t, &m, c.ino);
		crc0 = tu_image_crc(t.fs, t.path);

		/* a big mixed transaction, then cancel */
		CK_OK(mfs_iget(t.fs, c.ino, 0, &c.ip));
		pthread_rwlock_wrlock(&c.ip->lock);
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		for (unsigned i = 0; i < 40; i++) {
			int w;
			uint64_t off = roff(&m, &w);

			switch (tu_rand_below(3)) {
			case 0:
				CK_OK(mfs_bmap_alloc(tp, c.ip, off, rlen(&m, off, w, 8),
						     (unsigned)tu_rand_below(2), &e));
				break;
			case 1:
				CK_OK(mfs_bmap_punch(tp, c.ip, off, rlen(&m, off, w, 100), &done));
				break;
			default:
				CK_OK(mfs_bmap_convert_written(tp, c.ip, off, rlen(&m, off, w, 100),
							       &done));
			}
		}
		/* every block of the file gone, in the same transaction: back inline */
		for (unsigned w = 0; w < NWIN; w++) {
			uint64_t pos = m.base[w];

			while (pos < m.base[w] + m.w) {
				CK_OK(mfs_bmap_punch(tp, c.ip, pos, m.base[w] + m.w - pos, &done));
				pos += done;
			}
		}
		CK_EQ(c.ip->dformat, MFS_FMT_EXTENTS);
		mfs_trans_cancel(tp);
		CK_OK(mfs_inode_reload(c.ip));
		pthread_rwlock_unlock(&c.ip->lock);
		mfs_iput(c.ip);
		crc1 = tu_image_crc(t.fs, t.path);
		CK_EQ(crc1, crc0);
		check_all(&t, &m, c.ino);
	}
	db_check(&t);
	model_free(&m);
	tu_img_destroy(&t);
}
END_TEST

/* An attribute fork shrinks the data fork: forkoff 6 leaves room for two inline extents;
 * the attribute bytes are never touched, also through btree conversions. */
START_TEST(test_forkoff)
{
	struct tu_img t;
	struct model m;
	struct ctx c;
	uint8_t pattern[512];
	uint32_t asize;

	tu_srand(seed ^ 0x1234567ull);
	bimg_make(&t, 4096, 256, 32ull << 20);
	model_init(&m, t.fs, 512);
	memset(&c, 0, sizeof(c));
	c.t = &t;
	c.m = &m;
	c.ino = new_file(&t);
	c.lastfmt = MFS_FMT_EXTENTS;

	CK_OK(mfs_iget(t.fs, c.ino, 0, &c.ip));
	pthread_rwlock_wrlock(&c.ip->lock);
	{
		struct mfs_trans *tp;

		c.ip->forkoff = 6;
		c.ip->aformat = MFS_FMT_LOCAL;
		asize = c.ip->litsize - 48;
		for (uint32_t i = 0; i < asize; i++)
			pattern[i] = (uint8_t)(0x5a ^ i * 13);
		memcpy(c.ip->lit + 48, pattern, asize);
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_OK(mfs_inode_log(tp, c.ip));
		CK_OK(mfs_trans_commit(tp));
	}
	CK_EQ(mfs_bmap_inline_max(c.ip), 2);
	/* three separate extents: the third converts to a btree */
	op_alloc(&c, 0, 1, 0);
	op_alloc(&c, 10, 1, 0);
	CK_EQ(c.ip->dformat, MFS_FMT_EXTENTS);
	op_alloc(&c, 20, 1, 0);
	CK_EQ(c.ip->dformat, MFS_FMT_BTREE);
	for (unsigned i = 0; i < 300; i++) {
		int w;
		uint64_t off = roff(&m, &w);

		if (tu_rand_below(3))
			op_alloc(&c, off, rlen(&m, off, w, 3), (int)tu_rand_below(2));
		else
			op_punch(&c, off, rlen(&m, off, w, 20));
		CK_TRUE(!memcmp(c.ip->lit + 48, pattern, asize));
	}
	for (unsigned w = 0; w < NWIN; w++)
		op_punch(&c, m.base[w], m.w);
	CK_EQ(c.ip->dformat, MFS_FMT_EXTENTS);
	CK_TRUE(!memcmp(c.ip->lit + 48, pattern, asize));
	CK_EQ(c.st.to_btree >= 1, 1);
	pthread_rwlock_unlock(&c.ip->lock);
	mfs_iput(c.ip);
	check_all(&t, &m, c.ino);
	/* and from disk */
	mfs_inode_invalidate(t.fs, c.ino);
	CK_OK(mfs_iget(t.fs, c.ino, 0, &c.ip));
	CK_TRUE(!memcmp(c.ip->lit + 48, pattern, asize));
	CK_EQ(c.ip->forkoff, 6);
	mfs_iput(c.ip);
	db_check(&t);
	model_free(&m);
	tu_img_destroy(&t);
}
END_TEST

static int count_fn(struct mfs_inode *ip, const struct mfs_bmap_ext *e, void *priv)
{
	++*(unsigned *)priv;
	return 0;
}

static unsigned nexts(struct mfs_inode *ip)
{
	unsigned n = 0;

	CK_OK(mfs_bmap_walk(ip, count_fn, &n));
	return n;
}

/* Merging, step by step on a fresh image (the allocator gives the exact NEAR target when it
 * is free): appends, a conversion joining a written neighbour, an allocation joining the
 * next extent, a gap filled exactly (three-way merge), a punched hole refilled. */
START_TEST(test_merge)
{
	struct tu_img t;
	struct model m;
	struct ctx c;
	struct mfs_bmap_ext e;

	tu_srand(seed ^ 0x77ull);
	bimg_make(&t, 4096, 256, 32ull << 20);
	model_init(&m, t.fs, 512);
	memset(&c, 0, sizeof(c));
	c.t = &t;
	c.m = &m;
	c.ino = new_file(&t);
	CK_OK(mfs_iget(t.fs, c.ino, 0, &c.ip));
	pthread_rwlock_wrlock(&c.ip->lock);
	op_alloc(&c, 0, 8, 0);
	op_alloc(&c, 8, 8, 0);
	CK_EQ(nexts(c.ip), 1);
	op_alloc(&c, 16, 8, 1);
	CK_EQ(nexts(c.ip), 2);
	op_convert(&c, 16, 8);
	CK_EQ(nexts(c.ip), 1);
	op_alloc(&c, 100, 8, 0);
	op_alloc(&c, 92, 8, 0);
	CK_EQ(nexts(c.ip), 2);
	op_alloc(&c, 24, 68, 0);
	CK_EQ(nexts(c.ip), 1);
	CK_OK(mfs_bmap_lookup(c.ip, 50, &e));
	CK_EQ(e.startoff, 0);
	CK_EQ(e.len, 108);
	op_punch(&c, 40, 10);
	CK_EQ(nexts(c.ip), 2);
	op_alloc(&c, 40, 10, 0);
	CK_EQ(nexts(c.ip), 1);
	op_alloc(&c, 200, 4, 1);
	op_alloc(&c, 204, 4, 1);
	CK_EQ(nexts(c.ip), 2);
	op_convert(&c, 202, 2);
	CK_EQ(nexts(c.ip), 4);
	op_convert(&c, 200, 8);
	CK_EQ(nexts(c.ip), 2);
	CK_EQ(c.ip->nblocks, 116);
	pthread_rwlock_unlock(&c.ip->lock);
	mfs_iput(c.ip);
	check_all(&t, &m, c.ino);
	db_check(&t);
	model_free(&m);
	tu_img_destroy(&t);
}
END_TEST

/* Punch and convert change at most MFS_BMAP_MAX_EXTENTS_PER_CALL extents per call and say
 * exactly how far they got. */
START_TEST(test_bounded)
{
	struct tu_img t;
	struct model m;
	struct ctx c;
	struct mfs_trans *tp;
	uint64_t done;
	const unsigned n = 3 * MFS_BMAP_MAX_EXTENTS_PER_CALL + 5;

	tu_srand(seed ^ 0x99ull);
	bimg_make(&t, 4096, 256, 32ull << 20);
	model_init(&m, t.fs, 512);
	memset(&c, 0, sizeof(c));
	c.t = &t;
	c.m = &m;
	c.ino = new_file(&t);
	CK_OK(mfs_iget(t.fs, c.ino, 0, &c.ip));
	pthread_rwlock_wrlock(&c.ip->lock);
	for (unsigned i = 0; i < n; i++)
		op_alloc(&c, 1 + 4 * i, 2, 1);          /* unwritten, holes between */
	CK_EQ(nexts(c.ip), n);

	/* convert: 16 extents, stopping right after the 16th */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_bmap_convert_written(tp, c.ip, 0, 4 * n, &done));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(done, 4 * (MFS_BMAP_MAX_EXTENTS_PER_CALL - 1) + 3);
	for (uint64_t o = 0; o < done; o++)
		if (mwin(&m, o) == 0)
			m.unw[0][o] = 0;
	CK_EQ(nexts(c.ip), n);                  /* holes between: nothing merges */
	/* punch: the same bound, from the middle of an extent */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_bmap_punch(tp, c.ip, 2, 4 * n, &done));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(done, 4 * (MFS_BMAP_MAX_EXTENTS_PER_CALL - 1) + 1);
	for (uint64_t o = 2; o < 2 + done; o++) {
		if (m.map[0][o] != HOLE) {
			m.owned[m.map[0][o]] = 0;
			m.map[0][o] = HOLE;
			m.unw[0][o] = 0;
			m.mapped--;
		}
	}
	CK_EQ(nexts(c.ip), n - MFS_BMAP_MAX_EXTENTS_PER_CALL + 1);
	/* a range of holes only is done in one call */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_bmap_punch(tp, c.ip, 1000, 1ull << 40, &done));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(done, 1ull << 40);
	pthread_rwlock_unlock(&c.ip->lock);
	mfs_iput(c.ip);
	check_all(&t, &m, c.ino);
	model_free(&m);
	tu_img_destroy(&t);
}
END_TEST

/* Damaged inline records are refused with -EFSCORRUPTED, never followed. */
START_TEST(test_corrupt_inline)
{
	struct tu_img t;
	struct model m;
	struct ctx c;
	struct mfs_bmap_ext e;
	struct mfs_bmbt_rec r[2];
	uint64_t res;
	int quiet;

	tu_srand(seed ^ 0xabcdefull);
	bimg_make(&t, 4096, 256, 32ull << 20);
	model_init(&m, t.fs, 64);
	memset(&c, 0, sizeof(c));
	c.t = &t;
	c.m = &m;
	c.ino = new_file(&t);
	CK_OK(mfs_iget(t.fs, c.ino, 0, &c.ip));
	pthread_rwlock_wrlock(&c.ip->lock);
	op_alloc(&c, 0, 4, 0);
	op_alloc(&c, 10, 4, 1);
	CK_EQ(c.ip->dnext, 2);
	memcpy(r, c.ip->lit, sizeof(r));
	quiet = mfs_log_quiet();

	/* a block count of 0 */
	mfs_put32(((struct mfs_bmbt_rec *)c.ip->lit)[0].blockcount, 0);
	CK_EQ(mfs_bmap_lookup(c.ip, 1, &e), -EFSCORRUPTED);
	memcpy(c.ip->lit, r, sizeof(r));
	/* a disk block past the end */
	mfs_put64(((struct mfs_bmbt_rec *)c.ip->lit)[1].startblock, t.fs->geo.dblocks - 1);
	CK_EQ(mfs_bmap_lookup(c.ip, 11, &e), -EFSCORRUPTED);
	memcpy(c.ip->lit, r, sizeof(r));
	/* overlapping records */
	mfs_put64(((struct mfs_bmbt_rec *)c.ip->lit)[1].startoff, 2);
	CK_EQ(mfs_bmap_seek(c.ip, 0, SEEK_HOLE, &res), -EFSCORRUPTED);
	memcpy(c.ip->lit, r, sizeof(r));
	/* unknown flags */
	mfs_put32(((struct mfs_bmbt_rec *)c.ip->lit)[0].flags, 0x80);
	CK_EQ(mfs_bmap_walk(c.ip, walk_fn, &(struct collect){ 0 }), -EFSCORRUPTED);
	memcpy(c.ip->lit, r, sizeof(r));
	/* more extents than fit */
	c.ip->dnext = mfs_bmap_inline_max(c.ip) + 1;
	CK_EQ(mfs_bmap_lookup(c.ip, 0, &e), -EFSCORRUPTED);
	c.ip->dnext = 2;
	/* a bad fork root */
	c.ip->dformat = MFS_FMT_BTREE;
	c.ip->dnext = 1;
	CK_TRUE(mfs_is_corruption(mfs_bmap_lookup(c.ip, 0, &e)));
	mfs_log_set_level(quiet);

	/* the in-core copy was never logged: reload it */
	CK_OK(mfs_inode_reload(c.ip));
	CK_OK(mfs_bmap_lookup(c.ip, 11, &e));
	CK_EQ(e.unwritten, 1);
	/* arguments */
	CK_EQ(mfs_bmap_lookup(c.ip, mfs_bmap_max_blocks(t.fs), &e), -EINVAL);
	CK_EQ(mfs_bmap_seek(c.ip, 0, 7, &res), -EINVAL);
	CK_EQ(mfs_bmap_seek(c.ip, 20, SEEK_DATA, &res), -ENXIO);
	pthread_rwlock_unlock(&c.ip->lock);
	mfs_iput(c.ip);
	model_free(&m);
	tu_img_destroy(&t);
}
END_TEST

/* Allocate [off, off + len) of file `ino` in a transaction of its own; *e: what was mapped. */
static void alloc_in(struct tu_img *t, uint64_t ino, uint64_t off, uint64_t len,
		     struct mfs_bmap_ext *e)
{
	struct mfs_trans *tp;
	struct mfs_inode *ip;

	CK_OK(mfs_iget(t->fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	CK_OK(mfs_trans_alloc(t->fs, &tp));
	CK_OK(mfs_bmap_alloc(tp, ip, off, len, 0, e));
	CK_OK(mfs_trans_commit(tp));
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
}

static unsigned nexts_of(struct tu_img *t, uint64_t ino)
{
	struct mfs_inode *ip;
	unsigned n;

	CK_OK(mfs_iget(t->fs, ino, 0, &ip));
	n = nexts(ip);
	mfs_iput(ip);
	return n;
}

/* Files written at the same time in large pieces (first extent of 256 KiB or more) start at
 * points of their own in the AG (one of 16, by inode number) and each grows in one extent,
 * pieces taking turns; a small file stays near its inode.  With every file starting near
 * its inode, the second file's first piece took the blocks after the first's, and each
 * append had to go elsewhere: both ended in 4 extents (one per piece). */
START_TEST(test_spread)
{
	struct tu_img t;
	struct mfs_bmap_ext e[2], x, small;
	uint64_t ino[2], sino;
	uint32_t stride, agno;

	bimg_make(&t, 4096, 256, 1ull << 30);           /* 4 AGs of 64k blocks */
	ino[0] = new_file(&t);
	ino[1] = new_file(&t);
	agno = mfs_ino_to_agno(&t.fs->geo, ino[0]);
	CK_EQ(mfs_ino_to_agno(&t.fs->geo, ino[1]), agno);
	stride = mfs_ag_length(&t.fs->geo, agno) / 16;
	for (int f = 0; f < 2; f++) {
		alloc_in(&t, ino[f], 0, 256, &e[f]);
		CK_EQ(e[f].len, 256);
		CK_EQ(mfs_fsb_to_agno(&t.fs->geo, e[f].startblock), agno);
	}
	/* each at its own point (the point itself, unless the AG's headers hold it) */
	CK_TRUE(mfs_fsb_to_agbno(&t.fs->geo, e[0].startblock) / stride !=
		mfs_fsb_to_agbno(&t.fs->geo, e[1].startblock) / stride);
	for (uint64_t off = 256; off < 1024; off += 256)
		for (int f = 0; f < 2; f++) {
			alloc_in(&t, ino[f], off, 256, &x);
			CK_EQ(x.startblock, e[f].startblock + off);
		}
	CK_EQ(nexts_of(&t, ino[0]), 1);
	CK_EQ(nexts_of(&t, ino[1]), 1);
	/* a small first piece: near its inode (before the second file's point), not at its
	 * own point (free: nothing was put there) */
	sino = new_file(&t);
	alloc_in(&t, sino, 0, 8, &small);
	CK_EQ(mfs_fsb_to_agno(&t.fs->geo, small.startblock), mfs_ino_to_agno(&t.fs->geo, sino));
	CK_TRUE(mfs_fsb_to_agbno(&t.fs->geo, small.startblock) !=
		mfs_ino_to_agino(&t.fs->geo, sino) % 16 * stride);
	CK_TRUE(mfs_fsb_to_agbno(&t.fs->geo, small.startblock) <
		mfs_fsb_to_agbno(&t.fs->geo, e[1].startblock));
	db_check(&t);
	tu_img_destroy(&t);
}
END_TEST

static Suite *bmap_suite(void)
{
	Suite *s = suite_create("bmap");
	TCase *tc = tcase_create("bmap");

	tcase_set_timeout(tc, 300);
	tcase_add_loop_test(tc, test_random, 0, 2);
	tcase_add_test(tc, test_cancel_exact);
	tcase_add_test(tc, test_forkoff);
	tcase_add_test(tc, test_merge);
	tcase_add_test(tc, test_bounded);
	tcase_add_test(tc, test_corrupt_inline);
	tcase_add_test(tc, test_spread);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	seed = tu_seed("MFS_SEED", "check_bmap");
	return tu_run_suite_needing("mendfs_db", bmap_suite());
}
