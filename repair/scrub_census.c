/*
 * scrub_census.c — the inode census: what the checkers of one scrub want to know of every
 * inode (its mode, link count, whether it is free in the inode btree, whether its committed
 * copy is usable and passes the inode check), gathered by one sweep of each AG's inode
 * chunks, and every directory's entries as the directory checker saw them.  The later
 * phases of a scrub (the inode listing, the directory checks' look at each child, the link
 * counts, the orphan count, the inode checks) take them from here instead of sweeping the
 * inode tables and the directories again.
 *
 * Invariant: what the census holds is the committed state of the filesystem as of the
 * change count (mfs_fs_changes) it was taken at.  An AG's part is taken with the AG locked
 * (every transaction that logs an inode holds its AG's lock until it commits, and counts
 * its commit before letting go), a directory's entries with the directory locked shared and
 * the count the same before and after.  So while the count still reads the same, the
 * census IS the committed state: a checker that finds it current uses it exactly as it
 * would a fresh locked read, and one that does not (anything committed since, anywhere)
 * reads the slow way, as without a census.  Under concurrent writes the census is thus
 * rarely current and never wrong.
 *
 * Locking: the AG parts are read without a lock (struct census_part: published whole,
 * never freed before the census is dropped); their writers take part_lock, after the AG
 * lock when both are held (the builder), never the other way.  The directory store has a
 * lock of its own; each AG's kept walk is under that AG's lock.
 */
#include "ag.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "mem.h"
#include "scrub_priv.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/*
 * One AG's census as taken.  Published whole (an atomic pointer) and read without a lock:
 * once published it never changes but for flags scrub_census_mark adds (one atomic OR
 * each), and a part replaced by a newer one is only put on the census's retired list,
 * freed with the rest when the census is dropped — when no check can be using it.
 */
struct census_part {
	uint64_t seq;                   /* the change count it was taken at */
	uint32_t nchunks;
	uint32_t *startino;             /* sorted agino of each chunk */
	uint64_t *freemask;
	struct scrub_census_ino *ino;   /* 64 per chunk */
	/* Where each chunk is, by agino / 64 - slot_base: its index + 1, 0 for none; NULL when
	 * the chunks lie too sparsely for it (then a binary search of startino). */
	uint32_t *slot;
	uint32_t slot_base, nslots;
	size_t bytes;
	struct census_part *retired;    /* next on the retired list */
};

struct census_ag {
	/* The AG's walk kept for its checkers (SCRUB_SHARE), under the AG's own lock. */
	struct scrub_ag *scan;
	uint64_t scan_seq;
	size_t scan_bytes;

	struct census_part *part;       /* the current part (atomic), or NULL */
};

/* One directory's entries (their inode numbers, "." and ".." left out) and its "..". */
struct census_dir {
	uint64_t dir, dotdot, seq;
	size_t at, n;                   /* children kids[at..at + n) */
};

/* Bytes of AG walks the census keeps at most (the checkers of an AG share its walk while
 * it is checked; a walk that does not fit is not kept, each checker walking on its own). */
#define CENSUS_SCAN_MAX (64u << 20)
/* Bytes of replaced parts kept until the census is dropped, at most (beyond it an AG whose
 * part went stale gets no new one: its checks read the slow way). */
#define CENSUS_RETIRED_MAX (256u << 20)
#define CENSUS_FIRST_CHUNKS 65536u  /* chunks a census first makes room for (it grows) */

struct mfs_scrub_census {
	struct mfs_fs *fs;
	uint32_t agcount;
	size_t scan_bytes;              /* kept walks' bytes, all AGs (atomic) */
	struct census_ag *ag;
	pthread_mutex_t part_lock;      /* writers of the parts: publish, mark, drop */
	struct census_part *retired;
	size_t retired_bytes;
	pthread_mutex_t dir_lock;
	struct scrub_recs dirs;         /* struct census_dir, in the order recorded */
	struct scrub_recs kids;         /* uint64_t */
	int dirs_sorted;
};

int mfs_scrub_census_new(struct mfs_fs *fs, struct mfs_scrub_census **out)
{
	struct mfs_scrub_census *c = mfs_calloc(1, sizeof(*c));

	*out = NULL;
	if (!c)
		return -ENOMEM;
	c->ag = mfs_calloc(fs->geo.agcount, sizeof(*c->ag));
	if (!c->ag) {
		free(c);
		return -ENOMEM;
	}
	c->fs = fs;
	c->agcount = fs->geo.agcount;
	pthread_mutex_init(&c->part_lock, NULL);
	pthread_mutex_init(&c->dir_lock, NULL);
	scrub_recs_init(&c->dirs, sizeof(struct census_dir));
	scrub_recs_init(&c->kids, sizeof(uint64_t));
	*out = c;
	return 0;
}

static void part_free(struct census_part *p)
{
	if (!p)
		return;
	free(p->startino);
	free(p->freemask);
	free(p->ino);
	free(p->slot);
	free(p);
}

/* The current part of AG agno, without a lock (see struct census_part). */
static const struct census_part *part_of(const struct mfs_scrub_census *c, uint32_t agno)
{
	return __atomic_load_n(&c->ag[agno].part, __ATOMIC_ACQUIRE);
}

/* Forget AG agno's kept walk (the AG locked). */
static void scan_forget(struct mfs_scrub_census *c, uint32_t agno)
{
	struct census_ag *ca = &c->ag[agno];

	if (!ca->scan)
		return;
	ca->scan->borrowed = 0;
	scrub_ag_release(ca->scan);
	free(ca->scan);
	ca->scan = NULL;
	__atomic_sub_fetch(&c->scan_bytes, ca->scan_bytes, __ATOMIC_RELAXED);
	ca->scan_bytes = 0;
}

void mfs_scrub_census_drop(struct mfs_scrub_census *c)
{
	if (!c)
		return;
	for (uint32_t a = 0; a < c->agcount; a++) {
		scrub_ag_lock(c->fs, a);
		scan_forget(c, a);
		scrub_ag_unlock(c->fs, a);
	}
	pthread_mutex_lock(&c->part_lock);
	for (uint32_t a = 0; a < c->agcount; a++) {
		part_free(c->ag[a].part);
		__atomic_store_n(&c->ag[a].part, NULL, __ATOMIC_RELEASE);
	}
	while (c->retired) {
		struct census_part *p = c->retired;

		c->retired = p->retired;
		part_free(p);
	}
	c->retired_bytes = 0;
	pthread_mutex_unlock(&c->part_lock);
	pthread_mutex_lock(&c->dir_lock);
	scrub_recs_free(&c->dirs);
	scrub_recs_free(&c->kids);
	pthread_mutex_unlock(&c->dir_lock);
}

void mfs_scrub_census_free(struct mfs_scrub_census *c)
{
	if (!c)
		return;
	mfs_scrub_census_drop(c);
	pthread_mutex_destroy(&c->part_lock);
	pthread_mutex_destroy(&c->dir_lock);
	free(c->ag);
	free(c);
}

/* ---- an AG's inodes ---------------------------------------------------------------------- */

struct build {
	struct mfs_scrub_ctx *ctx;
	uint32_t agno;
	uint32_t n, cap;
	uint32_t *startino;
	uint64_t *freemask;
	struct scrub_census_ino *ino;
	int odd;                        /* a record the census will not stand for */
};

/* What the extent-map, attribute and reverse-map checks want of a usable inode's forks. */
static void census_forks(struct mfs_scrub_ctx *ctx, uint64_t ino, const struct mfs_dinode *d,
			 struct scrub_census_ino *ci)
{
	const uint8_t *recs = NULL;
	long n = 0;
	int r;

	if (d->aformat == MFS_FMT_NONE)
		ci->flags |= SCRUB_CI_NOATTR;
	if (scrub_symlink_inline_ok(ctx, d))
		ci->flags |= SCRUB_CI_LNKOK;
	if (S_ISDIR(ci->mode) && d->dformat == MFS_FMT_BTREE &&
	    ctx->fs->geo.inodesize - sizeof(*d) >= sizeof(struct mfs_dir_root)) {
		struct mfs_dir_root root;

		memcpy(&root, (const uint8_t *)d + sizeof(*d), sizeof(root));
		if (mfs_get32(root.levels) == 1) {
			ci->flags |= SCRUB_CI_DIRROOT;
			ci->fsb = mfs_get64(root.rootblock);
		}
	}
	r = scrub_bmap_quick_dinode(ctx, ino, d, 1, &recs, &n);
	if (r == 1 || (r == 2 && n == 0)) {
		ci->flags |= SCRUB_CI_NOMAP;
	} else if (r == 2 && n == 1) {
		struct mfs_bmbt_rec e;

		memcpy(&e, recs, sizeof(e));
		if (mfs_get64(e.startoff) == 0) {
			ci->flags |= SCRUB_CI_EXT1;
			ci->fsb = mfs_get64(e.startblock);
			ci->len = mfs_get32(e.blockcount);
		}
	}
}

static int census_dinode_fn(void *priv, uint64_t ino, const struct mfs_dinode *d, int isfree)
{
	struct build *b = priv;
	struct scrub_census_ino *ci = &b->ino[(size_t)(b->n - 1) * MFS_INODES_PER_CHUNK +
					      (ino & (MFS_INODES_PER_CHUNK - 1))];
	const struct mfs_geom *g = &b->ctx->fs->geo;
	int verifies;

	ci->mode = mfs_get16(d->mode);
	ci->nlink = mfs_get32(d->nlink);
	ci->flags = SCRUB_CI_SEEN | (isfree ? SCRUB_CI_FREE : 0);
	if (scrub_dinode_usable(b->ctx, ino, d)) {
		verifies = 1;
		ci->flags |= SCRUB_CI_USABLE;
		if (!isfree && ci->nlink && scrub_dinode_core_clean(b->ctx, ino, d))
			ci->flags |= SCRUB_CI_CLEAN;
		census_forks(b->ctx, ino, d, ci);
	} else {
		/* The AG is locked: the slot is this inode's committed copy, so a failure is
		 * damage, which the INOBT checker reports (it looks again at such a chunk). */
		verifies = !mfs_dinode_verify(d, g->inodesize, ino, g->uuid);
	}
	/* The INOBT checker's verdict: verifies, and in use exactly when not free. */
	if (verifies && isfree != mfs_dinode_in_use(d))
		ci->flags |= SCRUB_CI_IOK;
	return 0;
}

/* Room for nc chunks; 0 or -ENOMEM. */
static int build_grow(struct build *b, uint32_t nc)
{
	uint32_t *s = mfs_realloc(b->startino, nc * sizeof(*s));
	uint64_t *f;
	struct scrub_census_ino *ci;

	if (!s)
		return -ENOMEM;
	b->startino = s;
	f = mfs_realloc(b->freemask, nc * sizeof(*f));
	if (!f)
		return -ENOMEM;
	b->freemask = f;
	ci = mfs_realloc(b->ino, (size_t)nc * MFS_INODES_PER_CHUNK * sizeof(*ci));
	if (!ci)
		return -ENOMEM;
	b->ino = ci;
	b->cap = nc;
	return 0;
}

static int census_chunk_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_inobt_rec *r = rec;
	struct build *b = priv;
	const struct mfs_geom *g = &b->ctx->fs->geo;
	uint32_t startino = mfs_get32(r->startino);
	uint32_t agbno = mfs_agino_to_agbno(g, startino);
	uint64_t fsb = 0;
	int err;

	/* Only well-formed chunks in order: anything else is the INOBT checker's to report,
	 * and this AG gets no census (its readers take the slow way). */
	if (startino % MFS_INODES_PER_CHUNK || agbno % g->chunkblocks ||
	    agbno < MFS_AG_FIXED_BLOCKS || (uint64_t)agbno + g->chunkblocks >
	    mfs_ag_length(g, b->agno) || (uint64_t)startino + MFS_INODES_PER_CHUNK >
	    (1ull << (g->agblklog + g->inopblog)) || (b->n && startino <= b->startino[b->n - 1])) {
		b->odd = 1;
		return 1;
	}
	if (b->n == b->cap && build_grow(b, b->cap ? b->cap * 2 : 256))
		return -ENOMEM;
	b->startino[b->n] = startino;
	b->freemask[b->n] = mfs_get64(r->freemask);
	memset(&b->ino[(size_t)b->n * MFS_INODES_PER_CHUNK], 0,
	       MFS_INODES_PER_CHUNK * sizeof(*b->ino));
	b->n++;
	err = scrub_chunk_walk(b->ctx, b->agno, r, census_dinode_fn, b, &fsb);
	if (err && err != -ENOMEM) {
		b->odd = 1;             /* an unreadable block: the slow way reports it */
		return 1;
	}
	return err;
}

/* Part p's slot index, when its chunks lie densely enough (a shortcut: without memory for
 * it, lookups search). */
static void part_index(struct census_part *p)
{
	uint32_t base, span;

	if (!p->nchunks)
		return;
	base = p->startino[0] / MFS_INODES_PER_CHUNK;
	span = p->startino[p->nchunks - 1] / MFS_INODES_PER_CHUNK - base + 1;
	if (span > 2 * p->nchunks + 1024)
		return;
	p->slot = mfs_calloc(span, sizeof(*p->slot));
	if (!p->slot)
		return;
	p->slot_base = base;
	p->nslots = span;
	for (uint32_t i = 0; i < p->nchunks; i++)
		p->slot[p->startino[i] / MFS_INODES_PER_CHUNK - base] = i + 1;
	p->bytes += (size_t)span * sizeof(*p->slot);
}

/* scrub_census_take, and the change count the AG's part is of into *seq (with the AG still
 * locked, it is the AG's committed state now, whatever the count has become). */
int scrub_census_take_at(struct mfs_scrub_ctx *ctx, uint32_t agno, uint64_t *seqp)
{
	struct mfs_scrub_census *c = ctx->census;
	struct mfs_fs *fs = ctx->fs;
	const struct census_part *now;
	struct census_part *np;
	struct build b;
	struct mfs_btree_cur cur;
	struct mfs_buf *agh_bp;
	struct mfs_scrub_ctx quiet = *ctx;
	uint64_t seq = mfs_fs_changes(fs);
	int err;

	if (!c || agno >= c->agcount)
		return -EINVAL;
	now = part_of(c, agno);
	*seqp = seq;
	if (now && now->seq == seq)
		return 0;               /* still current: nothing to take again */
	if (__atomic_load_n(&c->retired_bytes, __ATOMIC_RELAXED) > CENSUS_RETIRED_MAX)
		return -EAGAIN;
	memset(&b, 0, sizeof(b));
	quiet.report = NULL;
	quiet.memo = NULL;
	b.ctx = &quiet;
	b.agno = agno;
	err = mfs_read_agh(fs, agno, &agh_bp);
	if (!err) {
		/* Sized by the header's inode count (a wrong one only costs a regrowth), at most
		 * CENSUS_FIRST_CHUNKS: a damaged count must not ask for gigabytes up front. */
		uint64_t want = mfs_get32(((const struct mfs_agh *)agh_bp->data)->icount) /
				MFS_INODES_PER_CHUNK + 1;

		err = build_grow(&b, (uint32_t)(want < CENSUS_FIRST_CHUNKS ? want :
						CENSUS_FIRST_CHUNKS));
		if (!err) {
			mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_INO, agh_bp);
			err = mfs_btree_query_range(&cur, NULL, NULL, census_chunk_fn, &b);
			mfs_btree_cur_release(&cur);
		}
		mfs_buf_put(agh_bp);
	}
	np = err >= 0 && !b.odd ? mfs_calloc(1, sizeof(*np)) : NULL;
	if (np) {
		struct census_part *old;

		np->seq = seq;
		np->nchunks = b.n;
		np->startino = b.startino;
		np->freemask = b.freemask;
		np->ino = b.ino;
		np->bytes = (size_t)b.cap * (sizeof(uint32_t) + sizeof(uint64_t) +
					     MFS_INODES_PER_CHUNK * sizeof(struct scrub_census_ino));
		part_index(np);
		pthread_mutex_lock(&c->part_lock);
		old = c->ag[agno].part;
		__atomic_store_n(&c->ag[agno].part, np, __ATOMIC_RELEASE);
		if (old) {              /* readers may still hold it: kept until the drop */
			old->retired = c->retired;
			c->retired = old;
			__atomic_add_fetch(&c->retired_bytes, old->bytes, __ATOMIC_RELAXED);
		}
		pthread_mutex_unlock(&c->part_lock);
		return 0;
	}
	if (err >= 0 && !b.odd)
		err = -ENOMEM;
	free(b.startino);
	free(b.freemask);
	free(b.ino);
	if (err == -ENOMEM)
		return err;
	return -EAGAIN;
}

int scrub_census_take(struct mfs_scrub_ctx *ctx, uint32_t agno)
{
	uint64_t seq;

	return scrub_census_take_at(ctx, agno, &seq);
}

/* The chunk this thread found last, and in which part: lookups mostly come in inode order
 * (the next inode lies in the same chunk or the next one).  Parts are never freed while a
 * check can use them, and the finger is only compared against, so a stale one costs a
 * search, nothing else. */
static __thread struct {
	const struct census_part *cp;
	size_t idx;
} finger;

/* Index of the chunk of part cp holding agino, or -1. */
static long chunk_of(const struct census_part *cp, uint32_t agino)
{
	uint32_t first = agino & ~(MFS_INODES_PER_CHUNK - 1);
	size_t lo = 0, hi = cp->nchunks;

	if (finger.cp == cp) {
		for (size_t i = finger.idx; i < finger.idx + 2 && i < cp->nchunks; i++)
			if (cp->startino[i] == first) {
				finger.idx = i;
				return (long)i;
			}
	}
	if (cp->slot) {
		uint32_t k = agino / MFS_INODES_PER_CHUNK;

		if (k < cp->slot_base || k - cp->slot_base >= cp->nslots)
			return -1;
		return (long)cp->slot[k - cp->slot_base] - 1;
	}
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (cp->startino[mid] < first)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo == cp->nchunks || cp->startino[lo] != first)
		return -1;
	finger.cp = cp;
	finger.idx = lo;
	return (long)lo;
}

int scrub_census_get(struct mfs_scrub_ctx *ctx, uint64_t ino, struct scrub_census_ino *out)
{
	return scrub_census_get_at(ctx, ino, mfs_fs_changes(ctx->fs), out);
}

/*
 * The part of ino's AG taken at count seq (*cpp; NULL when there is none): the index of the
 * chunk holding ino in it, -1 when ino lies in no chunk of it, -2 when there is no such part.
 */
static long census_find(struct mfs_scrub_ctx *ctx, uint64_t ino, uint64_t seq,
			const struct census_part **cpp)
{
	struct mfs_scrub_census *c = ctx->census;
	const struct mfs_geom *g = &ctx->fs->geo;
	uint32_t agno = mfs_ino_to_agno(g, ino);

	*cpp = NULL;
	if (!c || agno >= c->agcount)
		return -2;
	*cpp = part_of(c, agno);
	if (!*cpp || (*cpp)->seq != seq)
		return -2;
	return chunk_of(*cpp, mfs_ino_to_agino(g, ino));
}

int scrub_census_get_at(struct mfs_scrub_ctx *ctx, uint64_t ino, uint64_t seq,
			struct scrub_census_ino *out)
{
	const struct census_part *cp;
	long i = census_find(ctx, ino, seq, &cp);

	if (i >= 0) {
		*out = cp->ino[(size_t)i * MFS_INODES_PER_CHUNK + (ino & (MFS_INODES_PER_CHUNK - 1))];
	} else if (i == -1) {
		/* In no chunk: as free as can be. */
		memset(out, 0, sizeof(*out));
		out->flags = SCRUB_CI_FREE | SCRUB_CI_NOCHUNK;
	}
	return i != -2;
}

int scrub_census_chunk(struct mfs_scrub_ctx *ctx, uint64_t ino, struct scrub_census_chunk *out)
{
	uint64_t seq = mfs_fs_changes(ctx->fs);
	const struct census_part *cp;
	long i = census_find(ctx, ino, seq, &cp);

	if (i < 0)
		return 0;
	out->first = ino & ~(uint64_t)(MFS_INODES_PER_CHUNK - 1);
	out->seq = seq;
	out->ino = &cp->ino[(size_t)i * MFS_INODES_PER_CHUNK];
	return 1;
}

const struct scrub_census_ino *scrub_census_chunk_at(struct mfs_scrub_ctx *ctx, uint32_t agno,
						     uint32_t startino, uint64_t seq,
						     uint64_t *freemask)
{
	struct mfs_scrub_census *c = ctx->census;
	const struct census_part *cp;
	long i;

	if (!c || agno >= c->agcount || startino % MFS_INODES_PER_CHUNK)
		return NULL;
	cp = part_of(c, agno);
	if (!cp || cp->seq != seq)
		return NULL;
	i = chunk_of(cp, startino);
	if (i < 0)
		return NULL;
	*freemask = cp->freemask[i];
	return &cp->ino[(size_t)i * MFS_INODES_PER_CHUNK];
}

void scrub_census_mark(struct mfs_scrub_ctx *ctx, const uint64_t *inos, size_t n, uint64_t seq,
		       uint16_t flag)
{
	struct mfs_scrub_census *c = ctx->census;
	const struct mfs_geom *g = &ctx->fs->geo;

	if (!c)
		return;
	pthread_mutex_lock(&c->part_lock);
	for (size_t k = 0; k < n; k++) {
		uint32_t agno = mfs_ino_to_agno(g, inos[k]);
		struct census_part *cp = agno < c->agcount ? c->ag[agno].part : NULL;
		long ch = cp && cp->seq == seq ? chunk_of(cp, mfs_ino_to_agino(g, inos[k])) : -1;

		if (ch >= 0)
			__atomic_or_fetch(&cp->ino[(size_t)ch * MFS_INODES_PER_CHUNK +
						   (inos[k] & (MFS_INODES_PER_CHUNK - 1))].flags,
					  flag, __ATOMIC_RELAXED);
	}
	pthread_mutex_unlock(&c->part_lock);
}

int scrub_census_walk(struct mfs_scrub_ctx *ctx, uint32_t agno, uint64_t from,
		      scrub_census_fn fn, void *priv, uint64_t *seq)
{
	struct mfs_scrub_census *c = ctx->census;
	const struct mfs_geom *g = &ctx->fs->geo;
	const struct census_part *cp;
	int err = 0;

	if (!c || agno >= c->agcount)
		return -EAGAIN;
	cp = part_of(c, agno);
	if (!cp || cp->seq != mfs_fs_changes(ctx->fs))
		return -EAGAIN;
	if (seq)
		*seq = cp->seq;
	for (uint32_t i = 0; i < cp->nchunks && !err; i++) {
		uint64_t first = mfs_agino_to_ino(g, agno, cp->startino[i]);

		if (first + MFS_INODES_PER_CHUNK <= from)
			continue;
		for (uint32_t k = 0; k < MFS_INODES_PER_CHUNK && !err; k++)
			if (first + k >= from)
				err = fn(priv, first + k,
					 &cp->ino[(size_t)i * MFS_INODES_PER_CHUNK + k]);
	}
	return err;
}

int scrub_census_current(struct mfs_scrub_ctx *ctx, uint64_t seq)
{
	return seq == mfs_fs_changes(ctx->fs);
}

/* ---- directories' entries ------------------------------------------------------------------ */

static int cmp_dir(const void *a, const void *b)
{
	const struct census_dir *x = a, *y = b;

	return x->dir < y->dir ? -1 : x->dir > y->dir;
}


void scrub_census_put_dir(struct mfs_scrub_ctx *ctx, uint64_t dir, uint64_t dotdot,
			  const struct scrub_recs *kids, uint64_t seq)
{
	struct mfs_scrub_census *c = ctx->census;
	struct census_dir cd = { dir, dotdot, seq, 0, kids->n };
	size_t old_n;

	if (!c || seq != mfs_fs_changes(ctx->fs))
		return;
	pthread_mutex_lock(&c->dir_lock);
	/* A store of another change count is stale through and through: start afresh. */
	if (c->dirs.n && ((const struct census_dir *)scrub_rec(&c->dirs, 0))->seq != seq) {
		c->dirs.n = 0;
		c->kids.n = 0;
	}
	/* Checked again at the same count (another scrub): kept once. */
	if (c->dirs_sorted && c->dirs.n && bsearch(&cd, c->dirs.v, c->dirs.n, sizeof(cd), cmp_dir))
		goto out;
	old_n = c->kids.n;
	cd.at = old_n;
	if (kids->n && c->kids.cap < c->kids.n + kids->n) {
		size_t nc = c->kids.cap ? c->kids.cap : 1024;
		uint8_t *nv;

		while (nc < c->kids.n + kids->n)
			nc *= 2;
		nv = mfs_realloc(c->kids.v, nc * sizeof(uint64_t));
		if (!nv)
			goto out;       /* no memory: link counts will read it themselves */
		c->kids.v = nv;
		c->kids.cap = nc;
	}
	if (kids->n)
		memcpy(c->kids.v + old_n * sizeof(uint64_t), kids->v, kids->n * sizeof(uint64_t));
	c->kids.n += kids->n;
	if (scrub_recs_add(&c->dirs, &cd) != 0)
		c->kids.n = old_n;
	c->dirs_sorted = 0;
out:
	pthread_mutex_unlock(&c->dir_lock);
}

int scrub_census_dir(struct mfs_scrub_ctx *ctx, uint64_t dir, uint64_t *dotdot,
		     scrub_census_kid_fn fn, void *priv)
{
	struct mfs_scrub_census *c = ctx->census;
	const struct census_dir *cd = NULL;
	uint64_t seq = mfs_fs_changes(ctx->fs);
	int err = -EAGAIN;

	if (!c)
		return err;
	pthread_mutex_lock(&c->dir_lock);
	if (c->dirs.n && ((const struct census_dir *)scrub_rec(&c->dirs, 0))->seq == seq) {
		struct census_dir key = { dir, 0, 0, 0, 0 };

		if (!c->dirs_sorted) {
			qsort(c->dirs.v, c->dirs.n, sizeof(struct census_dir), cmp_dir);
			c->dirs_sorted = 1;
		}
		cd = bsearch(&key, c->dirs.v, c->dirs.n, sizeof(struct census_dir), cmp_dir);
	}
	if (cd) {
		const uint64_t *k = (const uint64_t *)(const void *)c->kids.v + cd->at;

		*dotdot = cd->dotdot;
		err = 0;
		for (size_t i = 0; i < cd->n && !err; i++)
			err = fn(priv, k[i]);
	}
	pthread_mutex_unlock(&c->dir_lock);
	return err;
}

/* ---- the inode listing ----------------------------------------------------------------------- */

struct list_state {
	struct mfs_scrub_ctx *ctx;
	uint32_t agno;
	uint64_t cursor;
	struct mfs_ctl_inode *out;
	uint32_t n, max;
	uint64_t next;
	struct scrub_cluster cl;        /* the slow way's chunk copy */
};

/* One more inode for the list; 1 when the list is full (ino starts the next one). */
static int list_add(struct list_state *ls, uint64_t ino, uint16_t mode)
{
	if (ls->n == ls->max)
		return 1;
	ls->out[ls->n].ino = ino;
	ls->out[ls->n].mode = mode;
	ls->out[ls->n].pad = 0;
	ls->n++;
	ls->next = ino + 1;
	return 0;
}

static int list_fn(void *priv, uint64_t ino, const struct scrub_census_ino *ci)
{
	return ci->flags & SCRUB_CI_FREE ? 0 : list_add(priv, ino, ci->mode);
}

/*
 * The slow way, one inode btree record at a time (the AG locked): the mode of every inode
 * its free mask says is in use, from the committed chunk copied whole (scrub_cluster, not
 * through the buffer cache); an inode number a damaged record makes invalid is read from
 * its block alone, as the cache has it (its damage is the INOBT checker's to report).
 */
static int list_chunk_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_inobt_rec *ir = rec;
	struct list_state *ls = priv;
	const struct mfs_geom *g = &ls->ctx->fs->geo;
	uint32_t start = mfs_get32(ir->startino);
	uint64_t freemask = mfs_get64(ir->freemask);
	int err = 0;

	for (uint32_t i = 0; i < MFS_INODES_PER_CHUNK && !err; i++) {
		uint64_t ino = mfs_agino_to_ino(g, ls->agno, start + i);
		const struct mfs_dinode *d;
		uint16_t mode;

		if (ino < ls->cursor || ((freemask >> i) & 1))
			continue;
		if (ls->n == ls->max)
			return 1;
		if (mfs_ino_check(ls->ctx->fs, ino)) {
			struct mfs_buf *bp;

			err = mfs_buf_read(ls->ctx->fs->bc, mfs_ino_to_fsb(g, ino), NULL, &bp);
			if (err)
				break;
			d = (const void *)((const uint8_t *)bp->data + mfs_ino_to_offset(g, ino));
			mode = mfs_get16(d->mode);
			mfs_buf_put(bp);
		} else {
			err = scrub_cluster_dinode_locked(ls->ctx, &ls->cl, ino, &d);
			if (err)
				break;
			mode = mfs_get16(d->mode);
		}
		err = list_add(ls, ino, mode);
	}
	return err;
}

int mfs_scrub_list_inodes(struct mfs_scrub_ctx *ctx, uint32_t agno, uint64_t cursor,
			  struct mfs_ctl_inode *out, uint32_t max, uint32_t *n, uint64_t *next,
			  int *end)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	uint64_t ag_first = mfs_agino_to_ino(g, agno, 0);
	struct list_state ls;
	int err = -EAGAIN;

	if (agno >= g->agcount)
		return -EINVAL;
	memset(&ls, 0, sizeof(ls));
	ls.ctx = ctx;
	ls.agno = agno;
	ls.cursor = cursor;
	ls.out = out;
	ls.max = max;
	ls.next = cursor;
	*n = 0;
	*next = cursor;
	*end = 1;
	if (cursor < ag_first || cursor - ag_first >= (1ull << (g->agblklog + g->inopblog)))
		return 0;
	/* From the census, taken at the AG's first batch (the sweep that lists the inodes
	 * takes what the later checks want too). */
	if (ctx->census) {
		if (cursor == ag_first) {
			scrub_ag_lock(ctx->fs, agno);
			err = scrub_census_take(ctx, agno);
			scrub_ag_unlock(ctx->fs, agno);
			/* The census is a shortcut: without memory for it, list the slow way. */
		}
		err = scrub_census_walk(ctx, agno, cursor, list_fn, &ls, NULL);
	}
	if (err == -EAGAIN) {
		struct mfs_inobt_key lo;
		struct mfs_btree_cur cur;
		struct mfs_buf *agh_bp;
		/* The chunk holding the cursor starts at most 63 inodes before it. */
		uint32_t agino = mfs_ino_to_agino(g, cursor);

		ls.n = 0;
		ls.next = cursor;
		mfs_put32(lo.startino, agino >= MFS_INODES_PER_CHUNK ?
			  agino - (MFS_INODES_PER_CHUNK - 1) : 0);
		scrub_ag_lock(ctx->fs, agno);
		err = mfs_read_agh(ctx->fs, agno, &agh_bp);
		if (!err) {
			mfs_ag_cur_init(&cur, ctx->fs, NULL, agno, MFS_BT_INO, agh_bp);
			err = mfs_btree_query_range(&cur, &lo, NULL, list_chunk_fn, &ls);
			mfs_btree_cur_release(&cur);
			mfs_buf_put(agh_bp);
		}
		scrub_ag_unlock(ctx->fs, agno);
		scrub_cluster_release(&ls.cl);
	}
	if (err < 0)
		return err;
	*n = ls.n;
	*next = ls.next;
	*end = err == 0;
	return 0;
}

/* ---- AG walks shared by an AG's checkers ----------------------------------------------------- */

int scrub_census_scan_get(struct mfs_scrub_ctx *ctx, uint32_t agno, struct scrub_ag *sa)
{
	struct mfs_scrub_census *c = ctx->census;
	struct census_ag *ca;

	if (!c || agno >= c->agcount)
		return -EAGAIN;
	ca = &c->ag[agno];
	if (!ca->scan)
		return -EAGAIN;
	if (ca->scan_seq != mfs_fs_changes(ctx->fs)) {
		scan_forget(c, agno);           /* stale for good */
		return -EAGAIN;
	}
	*sa = *ca->scan;
	sa->borrowed = 1;
	return 0;
}

static size_t recs_bytes(const struct scrub_recs *r)
{
	return r->cap * r->len;
}

int scrub_census_scan_put(struct mfs_scrub_ctx *ctx, uint32_t agno, struct scrub_ag *sa,
			  uint64_t seq)
{
	struct mfs_scrub_census *c = ctx->census;
	struct census_ag *ca;
	size_t bytes = recs_bytes(&sa->agfl);

	if (!c || agno >= c->agcount || sa->borrowed)
		return -EINVAL;
	ca = &c->ag[agno];
	for (int t = 0; t < MFS_AG_NTREES; t++)
		bytes += recs_bytes(&sa->recs[t]) + recs_bytes(&sa->where[t]) +
			 recs_bytes(&sa->blocks[t]);
	scan_forget(c, agno);
	if (__atomic_add_fetch(&c->scan_bytes, bytes, __ATOMIC_RELAXED) > CENSUS_SCAN_MAX) {
		__atomic_sub_fetch(&c->scan_bytes, bytes, __ATOMIC_RELAXED);
		return -ENOSPC;
	}
	ca->scan = mfs_malloc(sizeof(*ca->scan));
	if (!ca->scan) {
		__atomic_sub_fetch(&c->scan_bytes, bytes, __ATOMIC_RELAXED);
		return -ENOSPC;
	}
	*ca->scan = *sa;
	ca->scan_seq = seq;
	ca->scan_bytes = bytes;
	sa->borrowed = 1;
	return 0;
}

int scrub_census_scan_take_back(struct mfs_scrub_ctx *ctx, uint32_t agno, struct scrub_ag *sa)
{
	struct mfs_scrub_census *c = ctx->census;
	struct census_ag *ca;

	if (!c || agno >= c->agcount || !c->ag[agno].scan || !sa->borrowed)
		return -EAGAIN;
	ca = &c->ag[agno];
	free(ca->scan);                 /* the struct only: its arrays are sa's now */
	ca->scan = NULL;
	__atomic_sub_fetch(&c->scan_bytes, ca->scan_bytes, __ATOMIC_RELAXED);
	ca->scan_bytes = 0;
	sa->borrowed = 0;
	return 0;
}
