/*
 * scrub.c — mfs_scrub(): validate the request and dispatch to the checker of its object
 * kind; and what the checkers share (scrub_priv.h): reporting, record arrays, the AG walk
 * under the AG's lock, taking an inode for an inode checker.
 */
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
#include "mem.h"
#include "scrub_priv.h"
#include "verify.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

const char *const scrub_tree_names[MFS_AG_NTREES] = { "bnobt", "cntbt", "inobt", "rmapbt" };

/* ---- findings ---------------------------------------------------------------------------- */

void scrub_report(struct mfs_scrub_ctx *ctx, uint32_t flag, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	ctx->oflags |= flag;
	if (ctx->report)
		ctx->report(ctx->hook_arg, flag, msg);
}

int scrub_cancelled(struct mfs_scrub_ctx *ctx)
{
	return ctx->cancelled && ctx->cancelled(ctx->hook_arg) ? -ECANCELED : 0;
}

const char *scrub_errstr(int err)
{
	if (err == -EFSBADCRC)
		return "checksum does not match";
	if (err == -EFSCORRUPTED)
		return "corrupt metadata";
	return strerror(-err);
}

const char *scrub_owner_name(uint64_t owner, char *buf, size_t len)
{
	switch (owner) {
	case MFS_OWN_NULL: return "null";
	case MFS_OWN_FS: return "fs";
	case MFS_OWN_LOG: return "log";
	case MFS_OWN_AG: return "ag";
	case MFS_OWN_INOBT: return "inobt";
	case MFS_OWN_INODES: return "inodes";
	}
	snprintf(buf, len, "inode %llu", (unsigned long long)owner);
	return buf;
}

/* ---- record arrays ------------------------------------------------------------------------ */

void scrub_recs_init(struct scrub_recs *r, size_t len)
{
	memset(r, 0, sizeof(*r));
	r->len = len;
}

int scrub_recs_add(struct scrub_recs *r, const void *rec)
{
	if (r->n == r->cap) {
		size_t nc = r->cap ? r->cap * 2 : 64;
		uint8_t *nv = mfs_realloc(r->v, nc * r->len);

		if (!nv)
			return -ENOMEM;
		r->v = nv;
		r->cap = nc;
	}
	memcpy(r->v + r->n * r->len, rec, r->len);
	r->n++;
	return 0;
}

/* Room for n more records; 0 or -ENOMEM. */
static int recs_room(struct scrub_recs *r, size_t n)
{
	size_t nc = r->cap ? r->cap : 64;
	uint8_t *nv;

	if (r->n + n <= r->cap)
		return 0;
	while (nc < r->n + n)
		nc *= 2;
	nv = mfs_realloc(r->v, nc * r->len);
	if (!nv)
		return -ENOMEM;
	r->v = nv;
	r->cap = nc;
	return 0;
}

void scrub_recs_free(struct scrub_recs *r)
{
	free(r->v);
	r->v = NULL;
	r->n = r->cap = 0;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

void scrub_sort_u32(struct scrub_recs *r)
{
	if (r->n > 1)
		qsort(r->v, r->n, sizeof(uint32_t), cmp_u32);
}


int scrub_u32_has(const struct scrub_recs *r, uint32_t v)
{
	return r->n && bsearch(&v, r->v, r->n, sizeof(uint32_t), cmp_u32) != NULL;
}

/* Both the bno and the rmap records start with an le32 startblock and an le32 blockcount. */
static uint32_t rec_start(const struct scrub_recs *r, size_t i)
{
	uint32_t v;

	memcpy(&v, scrub_rec(r, i), 4);
	return mfs_get32(v);
}

static uint32_t rec_count(const struct scrub_recs *r, size_t i)
{
	uint32_t v;

	memcpy(&v, (const uint8_t *)scrub_rec(r, i) + 4, 4);
	return mfs_get32(v);
}

long scrub_find_le(const struct scrub_recs *r, uint32_t agbno)
{
	size_t lo = 0, hi = r->n;

	while (lo < hi) {               /* first record starting after agbno */
		size_t mid = lo + (hi - lo) / 2;

		if (rec_start(r, mid) <= agbno)
			lo = mid + 1;
		else
			hi = mid;
	}
	return (long)lo - 1;
}

int scrub_any_free(const struct scrub_recs *bno, uint32_t agbno, uint32_t len)
{
	uint64_t end = (uint64_t)agbno + len;
	long i = scrub_find_le(bno, agbno);

	/* The record at or before agbno, and those starting inside the range. */
	if (i >= 0 && (uint64_t)rec_start(bno, (size_t)i) + rec_count(bno, (size_t)i) > agbno)
		return 1;
	/* Sorted and disjoint: only the next record can start inside the range. */
	return (size_t)(i + 1) < bno->n && rec_start(bno, (size_t)(i + 1)) < end;
}

int scrub_stream_open(struct scrub_stream *s, struct mfs_fs *fs, uint32_t agno, int t,
		      struct mfs_buf *agh_bp)
{
	union {
		struct mfs_rmap_key r;
		struct mfs_alloc_rec a;
	} k0;
	int stat = 0, err;

	memset(s, 0, sizeof(*s));
	memset(&k0, 0, sizeof(k0));             /* the least key of either tree */
	mfs_ag_cur_init(&s->cur, fs, NULL, agno, (enum mfs_ag_tree)t, agh_bp);
	err = mfs_btree_lookup_get(&s->cur, &k0, MFS_LOOKUP_GE, &s->next, &stat);
	s->have_next = !err && stat;
	return err;
}

/* The record after the cursor's into s->next. */
static int stream_fetch_next(struct scrub_stream *s)
{
	int stat = 0, err;

	err = mfs_btree_next(&s->cur, &stat);
	if (!err && stat)
		err = mfs_btree_get(&s->cur, &s->next, &stat);
	s->have_next = !err && stat;
	return err;
}

int scrub_stream_step(struct scrub_stream *s)
{
	s->at = s->next;
	s->have_at = 1;
	return stream_fetch_next(s);
}

int scrub_stream_seek(struct scrub_stream *s, uint32_t agbno)
{
	union {
		struct mfs_rmap_key r;
		struct mfs_alloc_rec a;
	} k;
	int stat = 0, err;

	s->have_at = s->have_next = 0;
	memset(&k, 0, sizeof(k));
	mfs_put32(k.a.startblock, agbno);       /* startblock leads both keys */
	err = mfs_btree_lookup_get(&s->cur, &k, MFS_LOOKUP_LE, &s->at, &stat);
	if (err || !stat)
		return err;
	s->have_at = 1;
	return stream_fetch_next(s);
}

int scrub_stream_upto(struct scrub_stream *s, uint32_t agbno)
{
	int err = 0;

	/* startblock leads both record types */
	while (!err && s->have_next && mfs_get32(s->next.a.startblock) <= agbno)
		err = scrub_stream_step(s);
	return err;
}

void scrub_stream_close(struct scrub_stream *s)
{
	mfs_btree_cur_release(&s->cur);
}

const struct mfs_rmap_rec *scrub_rmap_covering(const struct scrub_recs *rmap, uint32_t agbno,
					       uint32_t len)
{
	long i = scrub_find_le(rmap, agbno);

	if (i < 0 || (uint64_t)rec_start(rmap, (size_t)i) + rec_count(rmap, (size_t)i) <
		     (uint64_t)agbno + len)
		return NULL;
	return scrub_rec(rmap, (size_t)i);
}

/* ---- one AG, walked under its lock ------------------------------------------------------------ */

void scrub_ag_lock(struct mfs_fs *fs, uint32_t agno)
{
	mfs_ag_lock(fs, agno, MFS_AGL_ALL);
}

void scrub_ag_unlock(struct mfs_fs *fs, uint32_t agno)
{
	mfs_ag_unlock(fs, agno, MFS_AGL_ALL);
}

/* What one walk of a tree collects: its blocks, and (unless NULL) its records and where
 * each lies. */
struct collect {
	struct scrub_recs *blocks, *recs, *where;
};

/*
 * The walk's visit of one block (the cursor holds it at `level`): its number, and for a
 * leaf its records, in order (the walk goes depth first, children in order: leaves left to
 * right).  The block passed mfs_btree_verify's checks just before, in the same walk under
 * the same hold of the AG lock (its record count within the block's capacity).
 */
static int collect_blk(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	struct collect *c = priv;
	uint32_t agbno = mfs_fsb_to_agbno(&cur->fs->geo, fsb);
	const uint8_t *rec;
	size_t reclen = cur->ops->rec_len;
	unsigned n;
	int err;

	err = c->blocks ? scrub_recs_add(c->blocks, &agbno) : 0;   /* or SCRUB_NO_BLOCKS */
	if (err || level || !c->recs)
		return err;             /* or SCRUB_NO_RECS */
	rec = mfs_btree_leaf_recs(cur, &n);
	if (!n)
		return 0;               /* an empty root leaf: nothing to copy (v may be NULL) */
	if (recs_room(c->recs, n) || (c->where && recs_room(c->where, n)))
		return -ENOMEM;
	memcpy(c->recs->v + c->recs->n * reclen, rec, (size_t)n * reclen);
	c->recs->n += n;
	if (c->where) {                 /* else SCRUB_NO_WHERE */
		struct scrub_recloc *loc = (struct scrub_recloc *)(void *)c->where->v +
					   c->where->n;

		for (unsigned i = 0; i < n; i++)
			loc[i] = (struct scrub_recloc){ agbno, i };
		c->where->n += n;
	}
	return 0;
}

const char *scrub_rec_where(const struct scrub_ag *sa, int t, size_t i, char *buf, size_t len)
{
	const struct scrub_recloc *loc;
	struct scrub_recloc found;

	if (i < sa->where[t].n) {
		loc = scrub_rec(&sa->where[t], i);
	} else if (i < sa->recs[t].n && sa->fs && sa->agh_bp) {
		/* Not kept (SCRUB_NO_WHERE): the record looked up again.  Every key is a prefix
		 * of its record, and the walked tree's keys are strictly increasing, so the
		 * lookup lands on this record (the AG is still locked). */
		struct mfs_btree_cur cur;
		int stat = 0, err;

		mfs_ag_cur_init(&cur, sa->fs, NULL, sa->agno, (enum mfs_ag_tree)t, sa->agh_bp);
		err = mfs_btree_lookup(&cur, scrub_rec(&sa->recs[t], i), MFS_LOOKUP_EQ, &stat);
		if (!err && stat && cur.path[0].bp) {
			found.agbno = mfs_fsb_to_agbno(&sa->fs->geo, cur.path[0].bp->blkno);
			found.idx = (uint32_t)cur.path[0].idx;
		}
		mfs_btree_cur_release(&cur);
		if (err || !stat) {
			snprintf(buf, len, "record %zu", i);
			return buf;
		}
		loc = &found;
	} else {
		snprintf(buf, len, "record %zu", i);
		return buf;
	}
	snprintf(buf, len, "block %u record %u", loc->agbno, loc->idx);
	return buf;
}

static const size_t tree_reclen[MFS_AG_NTREES] = {
	sizeof(struct mfs_alloc_rec), sizeof(struct mfs_alloc_rec),
	sizeof(struct mfs_inobt_rec), sizeof(struct mfs_rmap_rec),
};

/* scrub_ag_scan's walk itself, made now. */
static int ag_scan_fresh(struct mfs_scrub_ctx *ctx, uint32_t agno, unsigned want,
			 struct scrub_ag *sa)
{
	struct mfs_fs *fs = ctx->fs;
	struct mfs_buf *bp;
	int err;

	memset(sa, 0, sizeof(*sa));
	sa->fs = fs;
	sa->agno = agno;
	sa->len = mfs_ag_length(&fs->geo, agno);
	for (int t = 0; t < MFS_AG_NTREES; t++) {
		scrub_recs_init(&sa->recs[t], tree_reclen[t]);
		scrub_recs_init(&sa->where[t], sizeof(struct scrub_recloc));
		scrub_recs_init(&sa->blocks[t], sizeof(uint32_t));
	}
	scrub_recs_init(&sa->agfl, sizeof(uint32_t));
	sa->agh_err = mfs_read_agh(fs, agno, &sa->agh_bp);
	if (sa->agh_err) {
		sa->agh_bp = NULL;
		if (!mfs_is_corruption(sa->agh_err))
			return sa->agh_err;
		return 0;
	}
	sa->agh = sa->agh_bp->data;
	for (int t = 0; t < MFS_AG_NTREES; t++) {
		struct collect c = {
			want & SCRUB_NO_BLOCKS(t) ? NULL : &sa->blocks[t],
			want & SCRUB_NO_RECS(t) ? NULL : &sa->recs[t],
			want & (SCRUB_NO_RECS(t) | SCRUB_NO_WHERE(t)) ? NULL : &sa->where[t],
		};
		struct mfs_btree_cur cur;

		if (!(want & (1u << t)))
			continue;
		err = scrub_cancelled(ctx);
		if (err)
			return err;
		mfs_ag_cur_init(&cur, fs, NULL, agno, (enum mfs_ag_tree)t, sa->agh_bp);
		/* One walk: each block checked, then its number and a leaf's records
		 * collected (a damaged tree's partial collection is dropped below). */
		err = mfs_btree_verify_visit(&cur, collect_blk, &c, NULL, &sa->nblocks[t]);
		mfs_btree_cur_release(&cur);
		if (err == -ENOMEM)
			return err;
		sa->tree_err[t] = err < 0 ? err : 0;
		if (err < 0) {
			scrub_recs_free(&sa->recs[t]);
			scrub_recs_free(&sa->where[t]);
			scrub_recs_free(&sa->blocks[t]);
			continue;
		}
		scrub_sort_u32(&sa->blocks[t]);
		sa->have |= 1u << t;
	}
	if (!(want & SCRUB_WANT_AGFL))
		return 0;
	err = mfs_read_agfl(fs, agno, &bp);
	if (err) {
		if (!mfs_is_corruption(err))
			return err;
		sa->agfl_err = err;
		return 0;
	}
	{
		const struct mfs_agfl *fl = bp->data;
		uint32_t first = mfs_get32(sa->agh->fl_first);
		uint32_t count = mfs_get32(sa->agh->fl_count);

		for (uint32_t i = 0; i < count && i < MFS_AGFL_SIZE_MAX && !err; i++) {
			uint32_t b = mfs_get32(fl->bno[(first + i) % MFS_AGFL_SIZE_MAX]);

			err = scrub_recs_add(&sa->agfl, &b);
		}
	}
	mfs_buf_put(bp);
	if (err)
		return err;
	sa->have |= SCRUB_WANT_AGFL;
	return 0;
}

int scrub_ag_scan(struct mfs_scrub_ctx *ctx, uint32_t agno, unsigned want, struct scrub_ag *sa)
{
	uint64_t seq;
	int err;

	if (!ctx->census)
		return ag_scan_fresh(ctx, agno, want, sa);
	/* The AG locked: a walk kept at the current change count is the trees as they are. */
	if (scrub_census_scan_get(ctx, agno, sa) == 0)
		return 0;
	if (!(want & SCRUB_SHARE))
		return ag_scan_fresh(ctx, agno, want, sa);
	seq = mfs_fs_changes(ctx->fs);
	err = ag_scan_fresh(ctx, agno, SCRUB_WANT_TREES | SCRUB_WANT_AGFL, sa);
	if (!err && sa->agh)
		(void)scrub_census_scan_put(ctx, agno, sa, seq);       /* else kept by sa */
	return err;
}

int scrub_ag_own(struct mfs_scrub_ctx *ctx, struct scrub_ag *sa)
{
	/* The AG has stayed locked since the walk was borrowed: the census still keeps it. */
	return sa->borrowed ? scrub_census_scan_take_back(ctx, sa->agno, sa) : 0;
}

void scrub_ag_release(struct scrub_ag *sa)
{
	if (sa->borrowed) {
		memset(sa, 0, sizeof(*sa));     /* the census's */
		return;
	}
	for (int t = 0; t < MFS_AG_NTREES; t++) {
		scrub_recs_free(&sa->recs[t]);
		scrub_recs_free(&sa->where[t]);
		scrub_recs_free(&sa->blocks[t]);
	}
	scrub_recs_free(&sa->agfl);
	if (sa->agh_bp)
		mfs_buf_put(sa->agh_bp);
	sa->agh_bp = NULL;
	sa->agh = NULL;
}

long scrub_nonzero(const void *blk, size_t from, size_t to)
{
	const uint8_t *p = blk;

	for (size_t i = from; i < to; i++)
		if (p[i])
			return (long)i;
	return -1;
}

/* ---- inode chunks -------------------------------------------------------------------------- */

/*
 * Point *d at inode `ino` in the copy cl, first copying (with the AG lock taken here unless
 * the caller holds it: `locked`) the whole inode chunk that would hold it — its
 * chunkblocks-aligned blocks, which mfs_ino_check keeps inside the AG — with one
 * mfs_bcache_read_range: cached blocks as cached, the others from the device in one read,
 * nothing added to the cache (the inode tables of a large filesystem are many times the
 * cache; a sweep through it would only evict).  0, -ENOMEM, -EINVAL (an invalid inode
 * number) or a read error.
 */
static int cluster_get(struct mfs_scrub_ctx *ctx, struct scrub_cluster *cl, uint64_t ino,
		       int locked, const struct mfs_dinode **d)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	uint32_t agno = mfs_ino_to_agno(g, ino);
	uint32_t agbno = mfs_agino_to_agbno(g, mfs_ino_to_agino(g, ino));
	uint64_t fsb = mfs_ino_to_fsb(g, ino);
	int err;

	*d = NULL;
	if (!cl->blk || fsb < cl->fsb || fsb - cl->fsb >= cl->nblk) {
		uint32_t n = cl->one_block ? 1 : g->chunkblocks;
		uint64_t first = cl->one_block ? fsb :
				 mfs_agbno_to_fsb(g, agno, agbno - agbno % g->chunkblocks);

		if (mfs_ino_check(ctx->fs, ino))
			return -EINVAL;
		if (!cl->blk) {
			cl->blk = mfs_malloc((size_t)g->chunkblocks * g->blocksize);
			if (!cl->blk)
				return -ENOMEM;
		}
		cl->nblk = 0;
		if (!locked)
			scrub_ag_lock(ctx->fs, agno);
		cl->seq = mfs_fs_changes(ctx->fs);
		err = mfs_bcache_read_range(ctx->fs->bc, first, n, cl->blk);
		if (!locked)
			scrub_ag_unlock(ctx->fs, agno);
		if (err)
			return err;
		cl->fsb = first;
		cl->nblk = n;
	}
	*d = (const void *)(cl->blk + (size_t)(fsb - cl->fsb) * g->blocksize +
			    mfs_ino_to_offset(g, ino));
	return 0;
}

/*
 * Each thread's chunk buffer for scrub_chunk_walk, kept from one chunk to the next (freed
 * when the thread ends): a sweep of a million inodes walks some 16k chunks, and a buffer
 * allocated and freed for each came back from the kernel as fresh pages to fault in.
 */
static pthread_key_t chunk_buf_key;
static pthread_once_t chunk_buf_once = PTHREAD_ONCE_INIT;
static int chunk_buf_ok;

static void chunk_buf_init(void)
{
	chunk_buf_ok = pthread_key_create(&chunk_buf_key, free) == 0;
}

struct chunk_buf {
	size_t size;
	uint8_t data[];
};

/* A cluster whose buffer is this thread's (NULL blk: none, cluster_get allocates one);
 * chunk_buf_done gives the buffer back to the thread, or frees it. */
static void chunk_buf_take(size_t size, struct scrub_cluster *cl)
{
	struct chunk_buf *b;

	memset(cl, 0, sizeof(*cl));
	pthread_once(&chunk_buf_once, chunk_buf_init);
	if (!chunk_buf_ok)
		return;
	b = pthread_getspecific(chunk_buf_key);
	if (!b || b->size < size) {
		free(b);
		(void)pthread_setspecific(chunk_buf_key, NULL);
		b = mfs_malloc(sizeof(*b) + size);
		if (!b)
			return;
		b->size = size;
		if (pthread_setspecific(chunk_buf_key, b) != 0) {
			free(b);
			return;
		}
	}
	cl->blk = b->data;
}

static void chunk_buf_done(struct scrub_cluster *cl)
{
	struct chunk_buf *b = chunk_buf_ok ? pthread_getspecific(chunk_buf_key) : NULL;

	if (!b || cl->blk != b->data)
		scrub_cluster_release(cl);      /* cluster_get's own */
	cl->blk = NULL;
}

int scrub_chunk_walk(struct mfs_scrub_ctx *ctx, uint32_t agno, const struct mfs_inobt_rec *c,
		     scrub_dinode_fn fn, void *priv, uint64_t *bad_fsb)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	uint64_t mask = mfs_get64(c->freemask);
	struct scrub_cluster cl;
	int err = 0;

	chunk_buf_take((size_t)g->chunkblocks * g->blocksize, &cl);

	for (uint32_t k = 0; k < MFS_INODES_PER_CHUNK && !err; k++) {
		uint64_t ino = mfs_agino_to_ino(g, agno, mfs_get32(c->startino) + k);
		const struct mfs_dinode *d;

		if (mfs_ino_check(ctx->fs, ino))
			continue;
		/* The caller holds the AG lock: the whole chunk in one read, not one cache
		 * lookup and read per block. */
		err = cluster_get(ctx, &cl, ino, 1, &d);
		if (err) {
			*bad_fsb = mfs_ino_to_fsb(g, ino);
			break;
		}
		err = fn(priv, ino, d, (int)(mask >> k & 1));
	}
	chunk_buf_done(&cl);
	return err;
}

/* ---- cross-referencing one extent ---------------------------------------------------------- */

int scrub_xref_extent(struct mfs_scrub_ctx *ctx, uint64_t fsb, uint32_t len, uint64_t owner,
		      uint64_t offset, int data, const char *what)
{
	struct mfs_fs *fs = ctx->fs;
	const struct mfs_geom *g = &fs->geo;
	uint32_t agno = mfs_fsb_to_agno(g, fsb), agbno = mfs_fsb_to_agbno(g, fsb);
	struct mfs_btree_cur cur;
	struct mfs_buf *hbp;
	struct mfs_rmap_rec rr;
	struct mfs_rmap_key rk;
	struct mfs_alloc_rec ar, ak;
	char ob[32], ob2[32];
	int err, stat = 0;

	if (agno >= g->agcount || (uint64_t)agbno + len > mfs_ag_length(g, agno)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "%s: blocks %llu+%u lie outside the "
			     "filesystem's AGs", what, (unsigned long long)fsb, len);
		return 0;
	}
	scrub_ag_lock(fs, agno);
	err = mfs_read_agh(fs, agno, &hbp);
	if (err)
		goto out_unlock;
	/* The reverse map: one record of this owner covering the extent. */
	mfs_put32(rk.startblock, agbno);
	mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_RMAP, hbp);
	err = mfs_btree_lookup_get(&cur, &rk, MFS_LOOKUP_LE, &rr, &stat);
	mfs_btree_cur_release(&cur);
	if (err)
		goto out_put;
	if (!stat || (uint64_t)mfs_get32(rr.startblock) + mfs_get32(rr.blockcount) <
		     (uint64_t)agbno + len) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "%s: blocks %llu+%u are not covered "
			     "by one reverse-map record", what, (unsigned long long)fsb, len);
	} else {
		/* The record's offset is that of its first block: an extent starting d blocks
		 * into the record is at file block record offset + d. */
		uint32_t d = data ? agbno - mfs_get32(rr.startblock) : 0;
		uint64_t want = offset - d;

		if (mfs_get64(rr.owner) != owner || offset < d || mfs_get64(rr.offset) != want)
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "%s: blocks %llu+%u are "
				     "reverse-mapped to %s offset 0x%llx, expected %s offset 0x%llx",
				     what, (unsigned long long)fsb, len,
				     scrub_owner_name(mfs_get64(rr.owner), ob, sizeof(ob)),
				     (unsigned long long)mfs_get64(rr.offset),
				     scrub_owner_name(owner, ob2, sizeof(ob2)),
				     (unsigned long long)want);
	}
	/* Free space: the last free extent starting at or before the end must end before
	 * the start. */
	mfs_put32(ak.startblock, agbno + len - 1);
	mfs_put32(ak.blockcount, 0);
	mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_BNO, hbp);
	err = mfs_btree_lookup_get(&cur, &ak, MFS_LOOKUP_LE, &ar, &stat);
	mfs_btree_cur_release(&cur);
	if (!err && stat && (uint64_t)mfs_get32(ar.startblock) + mfs_get32(ar.blockcount) > agbno)
		scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "%s: blocks %llu+%u overlap free "
			     "extent %u+%u of AG %u", what, (unsigned long long)fsb, len,
			     mfs_get32(ar.startblock), mfs_get32(ar.blockcount), agno);
out_put:
	mfs_buf_put(hbp);
out_unlock:
	scrub_ag_unlock(fs, agno);
	if (mfs_is_corruption(err)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_INCOMPLETE, "%s: not cross-referenced, AG %u's "
			     "trees are damaged: %s", what, agno, scrub_errstr(err));
		err = 0;
	}
	return err;
}

/* ---- the blocks of an inode's own btrees -------------------------------------------------- */

static int le64_cmp(const void *k1, const void *k2)
{
	uint64_t a, b;

	memcpy(&a, k1, 8);
	memcpy(&b, k2, 8);
	a = mfs_get64(a);
	b = mfs_get64(b);
	return a < b ? -1 : a > b;
}

static void le64_rec_key(const void *rec, void *key)
{
	memcpy(key, rec, 8);
}

int scrub_fork_cur(struct mfs_inode *ip, int attr, struct mfs_btree_ops *ops,
		   struct mfs_btree_cur *cur)
{
	struct mfs_btree_root r;
	struct mfs_fork_root fr;
	struct mfs_dir_root dr;
	uint32_t magic;
	uint16_t rec_len;

	memset(cur, 0, sizeof(*cur));
	if (!attr && ip->dformat == MFS_FMT_BTREE && !S_ISDIR(ip->mode))
		return mfs_bmbt_cur_init(cur, NULL, ip);
	if (!attr && ip->dformat == MFS_FMT_BTREE) {
		memcpy(&dr, ip->lit, sizeof(dr));
		r.fsb = mfs_get64(dr.rootblock);
		r.levels = mfs_get32(dr.levels);
		magic = MFS_DIRBT_MAGIC;
		rec_len = MFS_DIR_REC_SIZE;
	} else if (attr && ip->aformat == MFS_FMT_BTREE && ip->forkoff &&
		   (uint32_t)ip->forkoff * 8u + sizeof(fr) <= ip->litsize) {
		memcpy(&fr, ip->lit + (uint32_t)ip->forkoff * 8u, sizeof(fr));
		r.fsb = mfs_get64(fr.rootblock);
		r.levels = mfs_get32(fr.levels);
		magic = MFS_XATTRBT_MAGIC;
		rec_len = MFS_XATTR_REC_SIZE;
	} else {
		return -EINVAL;
	}
	/* What walking the blocks needs, the layout, and the keys (the trees' own order: le64,
	 * for mfs_btree_has_block's descent). */
	memset(ops, 0, sizeof(*ops));
	ops->name = attr ? "attribute btree" : "directory name btree";
	ops->magic = magic;
	ops->rec_len = rec_len;
	ops->key_len = 8;
	ops->ptr_len = 8;
	ops->cmp_keys = le64_cmp;
	ops->rec_key = le64_rec_key;
	mfs_btree_cur_init(cur, ip->fs, NULL, ops, ip->ino, 0, &r, ip);
	return 0;
}

struct tree_xref {
	struct mfs_scrub_ctx *ctx;
	uint64_t rmap_offset;
	const char *what;
	int err;
};

static int tree_blk_fn(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	struct tree_xref *tx = priv;
	char what[128];

	snprintf(what, sizeof(what), "%s block %llu (level %u)", tx->what,
		 (unsigned long long)fsb, level);
	if (!tx->err)
		tx->err = scrub_xref_extent(tx->ctx, fsb, 1, cur->owner, tx->rmap_offset, 0, what);
	return 0;
}

int scrub_xref_tree_blocks(struct mfs_scrub_ctx *ctx, struct mfs_inode *ip, int attr,
			   const char *what)
{
	struct mfs_btree_ops ops;
	struct mfs_btree_cur cur;
	struct tree_xref tx = { ctx, attr ? MFS_RMAP_ATTR_FORK | MFS_RMAP_BMBT_BLOCK
					  : MFS_RMAP_BMBT_BLOCK, what, 0 };
	int err;

	err = scrub_fork_cur(ip, attr, &ops, &cur);
	if (!err)
		err = mfs_btree_visit_blocks(&cur, tree_blk_fn, &tx);
	mfs_btree_cur_release(&cur);
	if (tx.err)
		return tx.err;
	return mfs_is_corruption(err) || err == -EINVAL ? 0 : err;
}

/* ---- inode objects ----------------------------------------------------------------------------- */

int scrub_iget(struct mfs_scrub_ctx *ctx, struct mfs_inode **ipp)
{
	struct mfs_inode *ip;
	int err;

	*ipp = NULL;
	err = mfs_iget_locked(ctx->fs, ctx->ino, MFS_IGET_UNTRUSTED, 0, &ip);
	if (mfs_is_corruption(err)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "inode %llu: cannot be loaded: %s",
			     (unsigned long long)ctx->ino, scrub_errstr(err));
		return 0;
	}
	if (err)
		return err;
	err = scrub_inode_current(ctx, ip);
	if (err) {
		scrub_irele(ip);
		if (mfs_is_corruption(err)) {
			scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "inode %llu: its block cannot "
				     "be read: %s", (unsigned long long)ctx->ino, scrub_errstr(err));
			err = 0;
		}
		return err;
	}
	*ipp = ip;
	return 0;
}

int scrub_inode_current(struct mfs_scrub_ctx *ctx, struct mfs_inode *ip)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	uint32_t agno = mfs_ino_to_agno(g, ip->ino);
	const struct mfs_dinode *d;
	struct mfs_buf *bp;
	int err;

	scrub_ag_lock(ctx->fs, agno);
	err = mfs_buf_read(ctx->fs->bc, mfs_ino_to_fsb(g, ip->ino), NULL, &bp);
	if (!err) {
		d = (const void *)((const char *)bp->data + mfs_ino_to_offset(g, ip->ino));
		if (!mfs_get16(d->mode) || mfs_get32(d->generation) != ip->generation)
			err = -ENOENT;
		mfs_buf_put(bp);
	}
	scrub_ag_unlock(ctx->fs, agno);
	return err;
}

int scrub_dinode_read(struct mfs_scrub_ctx *ctx, uint64_t ino, void *buf)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	uint32_t agno = mfs_ino_to_agno(g, ino);
	struct mfs_buf *bp;
	int err;

	scrub_ag_lock(ctx->fs, agno);
	err = mfs_buf_read(ctx->fs->bc, mfs_ino_to_fsb(g, ino), NULL, &bp);
	if (!err) {
		memcpy(buf, (const char *)bp->data + mfs_ino_to_offset(g, ino), g->inodesize);
		mfs_buf_put(bp);
	}
	scrub_ag_unlock(ctx->fs, agno);
	return err;
}

int scrub_cluster_dinode(struct mfs_scrub_ctx *ctx, struct scrub_cluster *cl, uint64_t ino,
			 const struct mfs_dinode **d)
{
	return cluster_get(ctx, cl, ino, 0, d);
}

int scrub_cluster_dinode_locked(struct mfs_scrub_ctx *ctx, struct scrub_cluster *cl,
				uint64_t ino, const struct mfs_dinode **d)
{
	return cluster_get(ctx, cl, ino, 1, d);
}

void scrub_cluster_release(struct scrub_cluster *cl)
{
	free(cl->blk);
	cl->blk = NULL;
	cl->nblk = 0;
}

/* ---- the memo: one request's committed copies ------------------------------------------------ */

int mfs_scrub_memo_new(struct mfs_scrub_memo **out)
{
	*out = mfs_calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

void mfs_scrub_memo_reset(struct mfs_scrub_memo *m)
{
	if (!m)
		return;
	m->nch = 0;             /* the copies' buffers stay, for the next ones */
	m->last = m->next = 0;
	m->nverdicts = 0;
	m->vnext = 0;
}

void mfs_scrub_memo_free(struct mfs_scrub_memo *m)
{
	if (!m)
		return;
	for (unsigned i = 0; i < SCRUB_MEMO_CHUNKS; i++)
		scrub_cluster_release(&m->ch[i].cl);
	free(m->verdicts);
	free(m);
}

static int memo_holds(const struct scrub_memo_chunk *c, uint64_t ino)
{
	return ino >= c->first && ino - c->first < MFS_INODES_PER_CHUNK;
}

/*
 * The memo's copy of the chunk of `ino`, taken now if it holds none: the chunk's blocks
 * and its inode btree record under one hold of the AG lock, so that the copy is a
 * committed state of the chunk and the record says which of its inodes were allocated in
 * it.  NULL when the memo cannot answer — no chunk holds it, it is free there, a record
 * out of line, an error — and the caller reads the inode itself, as without a memo.
 */
static struct scrub_memo_chunk *memo_take(struct mfs_scrub_ctx *ctx, struct mfs_scrub_memo *m,
					  uint64_t ino)
{
	struct mfs_fs *fs = ctx->fs;
	uint32_t agno = mfs_ino_to_agno(&fs->geo, ino);
	struct scrub_memo_chunk *c = NULL;
	const struct mfs_dinode *d;
	int err;

	if (m->nch && memo_holds(&m->ch[m->last], ino))
		c = &m->ch[m->last];
	for (unsigned i = 0; i < m->nch && !c; i++)
		if (memo_holds(&m->ch[i], ino)) {
			c = &m->ch[i];
			m->last = i;
		}
	if (!c) {
		unsigned i;

		if (mfs_ino_check(fs, ino))
			return NULL;
		if (m->nch < SCRUB_MEMO_CHUNKS) {
			i = m->nch;
		} else {
			struct scrub_memo_chunk t;

			/* The copy replaced moves to the last slot (its buffer with it) and is
			 * taken anew there; the last one takes its place. */
			i = m->next++ % SCRUB_MEMO_CHUNKS;
			t = m->ch[i];
			m->ch[i] = m->ch[m->nch - 1];
			m->ch[m->nch - 1] = t;
			i = --m->nch;
		}
		c = &m->ch[i];
		c->known = c->usable = 0;
		c->cl.nblk = 0;
		scrub_ag_lock(fs, agno);
		err = mfs_inobt_chunk_locked(fs, ino, &c->first, &c->freemask);
		if (!err && c->first == (ino & ~(uint64_t)(MFS_INODES_PER_CHUNK - 1)))
			err = cluster_get(ctx, &c->cl, ino, 1, &d);
		else if (!err)
			err = -EINVAL;          /* a record not on its alignment: no shortcut */
		scrub_ag_unlock(fs, agno);
		if (err)
			return NULL;
		m->nch++;
		m->last = i;
	}
	return (c->freemask >> (ino - c->first)) & 1 ? NULL : c;
}

int scrub_dinode_quick(struct mfs_scrub_ctx *ctx, uint64_t ino, void *buf,
		       const struct mfs_dinode **d, int *usable)
{
	struct scrub_memo_chunk *c = ctx->memo ? memo_take(ctx, ctx->memo, ino) : NULL;
	int err;

	if (c) {
		uint64_t bit = 1ull << (ino - c->first);

		err = cluster_get(ctx, &c->cl, ino, 0, d);      /* in the copy: no read */
		if (err)
			return err;
		if (usable) {
			if (!(c->known & bit)) {
				struct scrub_census_ino ci;

				c->known |= bit;
				/* The census's verdict when it is of the same state as the copy. */
				if (scrub_census_get_at(ctx, ino, c->cl.seq, &ci) ?
				    !!(ci.flags & SCRUB_CI_USABLE) : scrub_dinode_usable(ctx, ino, *d))
					c->usable |= bit;
			}
			*usable = !!(c->usable & bit);
		}
		return 0;
	}
	err = scrub_dinode_read(ctx, ino, buf);
	if (err)
		return err;
	*d = buf;
	if (usable)
		*usable = scrub_dinode_usable(ctx, ino, *d);
	return 0;
}

int scrub_dinode_usable(struct mfs_scrub_ctx *ctx, uint64_t ino, const struct mfs_dinode *d)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	uint64_t nu = mfs_get64(d->next_unlinked);

	/* A slot that is not this inode at all says nothing here: the copy may be of a chunk
	 * freed and reused (file data) since the inode was listed, and the verifier would log
	 * it as corruption; the slow path decides, under the AG lock. */
	if (mfs_get32(d->magic) != MFS_DINODE_MAGIC || mfs_get64(d->ino) != ino)
		return 0;
	return mfs_get16(d->mode) && !mfs_dinode_verify(d, g->inodesize, ino, g->uuid) &&
	       !mfs_dinode_check(d, g->inodesize, ino) && !(nu && mfs_ino_check(ctx->fs, nu));
}

long scrub_dinode_extents(struct mfs_scrub_ctx *ctx, const struct mfs_dinode *d,
			  const uint8_t **recs)
{
	uint32_t litsize = ctx->fs->geo.inodesize - (uint32_t)sizeof(*d);
	uint32_t forkoff = mfs_get16(d->forkoff), n = mfs_get32(d->dnext);
	uint64_t room = forkoff ? (uint64_t)forkoff * 8 : litsize;

	if (d->dformat != MFS_FMT_EXTENTS || room > litsize ||
	    (uint64_t)n * sizeof(struct mfs_bmbt_rec) > room)
		return -1;
	*recs = (const uint8_t *)d + sizeof(*d);
	return (long)n;
}

void scrub_irele(struct mfs_inode *ip)
{
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
}

/* ---- dispatch ------------------------------------------------------------------------------------ */

enum obj_kind { OBJ_NONE, OBJ_AG, OBJ_INODE, OBJ_FS };

static const struct {
	enum obj_kind kind;
	int (*fn)(struct mfs_scrub_ctx *ctx);
} checkers[MFS_SCRUB_NTYPES] = {
	[MFS_SCRUB_PROBE]   = { OBJ_NONE, NULL },
	[MFS_SCRUB_SB]      = { OBJ_AG, scrub_sb },
	[MFS_SCRUB_AGH]     = { OBJ_AG, scrub_agh },
	[MFS_SCRUB_AGFL]    = { OBJ_AG, scrub_agfl },
	[MFS_SCRUB_BNOBT]   = { OBJ_AG, scrub_bnobt },
	[MFS_SCRUB_CNTBT]   = { OBJ_AG, scrub_cntbt },
	[MFS_SCRUB_INOBT]   = { OBJ_AG, scrub_inobt },
	[MFS_SCRUB_RMAPBT]  = { OBJ_AG, scrub_rmapbt },
	[MFS_SCRUB_JOURNAL] = { OBJ_FS, scrub_journal },
	[MFS_SCRUB_INODE]   = { OBJ_INODE, scrub_inode },
	[MFS_SCRUB_BMAP]    = { OBJ_INODE, scrub_bmap },
	[MFS_SCRUB_DIR]     = { OBJ_INODE, scrub_dir },
	[MFS_SCRUB_XATTR]   = { OBJ_INODE, scrub_xattr },
	[MFS_SCRUB_SYMLINK] = { OBJ_INODE, scrub_symlink },
	[MFS_SCRUB_NLINKS]  = { OBJ_FS, scrub_nlinks },
	[MFS_SCRUB_ORPHANS] = { OBJ_FS, scrub_orphans },
	[MFS_SCRUB_SUMMARY] = { OBJ_FS, scrub_summary },
};

int mfs_scrub(struct mfs_scrub_ctx *ctx)
{
	if (!ctx || !ctx->fs || ctx->type >= MFS_SCRUB_NTYPES)
		return -EINVAL;
	ctx->oflags = 0;
	switch (checkers[ctx->type].kind) {
	case OBJ_AG:
		if (ctx->agno >= ctx->fs->geo.agcount)
			return -EINVAL;
		break;
	case OBJ_INODE:
		if (!ctx->fs->icache || mfs_ino_check(ctx->fs, ctx->ino))
			return -EINVAL;
		break;
	case OBJ_FS:
	case OBJ_NONE:
		break;
	}
	if (ctx->type == MFS_SCRUB_PROBE)
		return 0;
	if (!checkers[ctx->type].fn)
		return -EOPNOTSUPP;     /* not written yet */
	return checkers[ctx->type].fn(ctx);
}
