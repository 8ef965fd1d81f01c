/*
 * check_inode.c — the inode layer: allocation and freeing through the inode btree
 * (ialloc.c) against a model, cancel leaving the image bytes unchanged, the in-core inode
 * cache (one instance per number while referenced, from several threads, bounded LRU),
 * verification of corrupt inodes, and every field round-tripping through a log and a
 * reopen with the journal.
 *
 * Images are formatted in process (tu_format: lib/format, the code of mkfs.mendfs).  After
 * the big run the image is checked by the built mendfs_db ($BIN, default build/bin); without
 * it the program skips (exit 77).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ag.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "crc32c.h"
#include "fs.h"
#include "geom.h"
#include "ialloc.h"
#include "inode.h"
#include "log.h"
#include "mendfs_format.h"
#include "trans.h"
#include "verify.h"

#include "format.h"
#include "tu.h"

#if defined(__SANITIZE_ADDRESS__)
#define NALLOC 3000u
#define NTHREAD_ITERS 5000u
#else
#define NALLOC 10000u
#define NTHREAD_ITERS 40000u
#endif

static char db_prog[512];      /* the built mendfs_db */
static const uint32_t blocksizes[] = { 4096, 1024 };

struct timg {
	char path[TU_PATH_MAX];
	struct mfs_fs *fs;
	unsigned flags;
};

static void timg_open(struct timg *t)
{
	t->fs = tu_fs_open(t->path, t->flags);
	CK_OK(mfs_icache_init(t->fs, 0));
}

static void timg_close(struct timg *t)
{
	CK_OK(mfs_icache_destroy(t->fs));
	tu_fs_close(t->fs);
	t->fs = NULL;
}

/* A fresh image of 64 MiB in 4 AGs with block size bs, opened with an inode cache. */
static void timg_make(struct timg *t, uint32_t bs, unsigned flags)
{
	struct mfs_format_opts o = { .blocksize = bs, .agcount = 4 };

	memset(t, 0, sizeof(*t));
	tu_format_new(t->path, "mendfs_inode", 64 << 20, &o);
	t->flags = flags;
	timg_open(t);
}

static void timg_destroy(struct timg *t)
{
	if (t->fs)
		timg_close(t);
	tu_image_remove(t->path);
}

/* Mark the superblock dirty, as a mounted filesystem's is: its summary counters are then
 * not expected to match the AGs. */
static void sb_mark_dirty(struct timg *t)
{
	struct mfs_buf *bp;

	CK_OK(mfs_read_sb(t->fs, 0, &bp));
	mfs_put32(((struct mfs_sb *)bp->data)->state, MFS_STATE_DIRTY);
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
}

/* Close, run mendfs_db's check on the image, reopen. */
static void db_check(struct timg *t)
{
	timg_close(t);
	CK_EQ(tu_run("out=$('%s' -c check %s 2>&1) || { printf '%%s\\n' \"$out\" | tail -5 >&2; exit 1; }",
		     db_prog, t->path), 0);
	timg_open(t);
}

/* ---- the inode btree against a model ------------------------------------------------------ */
struct chunks {
	struct mfs_inobt_rec *v;
	size_t n, cap;
};

static int collect(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	struct chunks *c = priv;

	(void)cur;
	if (c->n == c->cap) {
		c->cap = c->cap ? 2 * c->cap : 64;
		c->v = realloc(c->v, c->cap * sizeof(*c->v));
		if (!c->v)
			return -ENOMEM;
	}
	memcpy(&c->v[c->n++], rec, sizeof(*c->v));
	return 0;
}

/* Is inode `agino` in use according to the records (sorted by startino)?  -1: in no chunk */
static int rec_inuse(const struct chunks *c, uint32_t agino)
{
	size_t lo = 0, hi = c->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		uint32_t s = mfs_get32(c->v[mid].startino);

		if (agino < s)
			hi = mid;
		else if (agino >= s + MFS_INODES_PER_CHUNK)
			lo = mid + 1;
		else
			return !((mfs_get64(c->v[mid].freemask) >> (agino - s)) & 1);
	}
	return -1;
}

/*
 * Every AG: the inode btree passes mfs_btree_verify, the header's icount/ifree are the sums
 * over its records; every model inode is in a chunk that says in use, and the in-use
 * inodes of all chunks are exactly the model's plus the root.  Returns total icount and
 * ifree.
 */
static void check_inodes(struct timg *t, const uint64_t *inos, size_t n, uint64_t *icount,
			 uint64_t *ifree)
{
	struct mfs_fs *fs = t->fs;
	const struct mfs_geom *g = &fs->geo;
	uint64_t inuse_total = 0;

	*icount = *ifree = 0;
	for (uint32_t agno = 0; agno < g->agcount; agno++) {
		struct chunks c = { NULL, 0, 0 };
		struct mfs_btree_cur cur;
		struct mfs_buf *agh_bp;
		const struct mfs_agh *agh;
		uint64_t ic = 0, ifr = 0, nrecs = 0;

		CK_OK(mfs_read_agh(fs, agno, &agh_bp));
		agh = agh_bp->data;
		mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_INO, agh_bp);
		CK_OK(mfs_btree_verify(&cur, &nrecs, NULL));
		CK_OK(mfs_btree_query_range(&cur, NULL, NULL, collect, &c));
		mfs_btree_cur_release(&cur);
		CK_EQ(c.n, nrecs);
		for (size_t i = 0; i < c.n; i++) {
			ic += MFS_INODES_PER_CHUNK;
			ifr += mfs_get32(c.v[i].freecount);
		}
		CK_EQ(mfs_get32(agh->icount), ic);
		CK_EQ(mfs_get32(agh->ifree), ifr);
		*icount += ic;
		*ifree += ifr;
		inuse_total += ic - ifr;
		for (size_t i = 0; i < n; i++) {
			if (mfs_ino_to_agno(g, inos[i]) != agno)
				continue;
			if (rec_inuse(&c, mfs_ino_to_agino(g, inos[i])) != 1)
				ck_assert_msg(0, "inode %" PRIu64 " is allocated but its chunk record "
					      "says %d", inos[i],
					      rec_inuse(&c, mfs_ino_to_agino(g, inos[i])));
		}
		mfs_buf_put(agh_bp);
		free(c.v);
	}
	CK_EQ(inuse_total, n + 1);
}

/* An inode number in AG agno that mfs_ialloc accepts as a hint. */
static uint64_t ag_hint(const struct mfs_geom *g, uint32_t agno)
{
	uint32_t b = (MFS_AG_FIXED_BLOCKS + g->chunkblocks - 1) / g->chunkblocks * g->chunkblocks;

	return mfs_agino_to_ino(g, agno, mfs_agbno_to_agino(g, b));
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

START_TEST(test_alloc_random)
{
	uint32_t bs = blocksizes[_i];
	struct timg t;
	uint64_t *inos = calloc(NALLOC, sizeof(uint64_t));
	uint64_t *sorted = calloc(NALLOC, sizeof(uint64_t));
	char what[64];
	uint64_t icount0, ifree0, icount, ifree;
	size_t n = 0, nalloc = 0, nfree = 0;
	struct timespec t0, t1;

	snprintf(what, sizeof(what), "inode alloc random (bs %u)", bs);
	tu_srand(tu_seed("SEED", what));
	CK_TRUE(inos && sorted);
	timg_make(&t, bs, 0);
	sb_mark_dirty(&t);
	check_inodes(&t, inos, 0, &icount0, &ifree0);
	CK_EQ(icount0, MFS_INODES_PER_CHUNK);
	CK_EQ(ifree0, MFS_INODES_PER_CHUNK - 1);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (nalloc < NALLOC) {
		struct mfs_trans *tp;
		struct mfs_inode *ip;

		CK_OK(mfs_trans_alloc(t.fs, &tp));
		if (n && tu_rand() % 100 < 30) {
			size_t k = tu_rand() % n;

			CK_OK(mfs_ifree(tp, inos[k]));
			CK_OK(mfs_trans_commit(tp));
			CK_EQ(mfs_iget(t.fs, inos[k], MFS_IGET_UNTRUSTED, &ip), -ENOENT);
			inos[k] = inos[--n];
			nfree++;
		} else {
			uint64_t hint = n && tu_rand() % 2 ? inos[tu_rand() % n]
					: ag_hint(&t.fs->geo, (uint32_t)(tu_rand() % t.fs->geo.agcount));
			uint16_t mode = tu_rand() % 3 ? S_IFREG | 0644 : S_IFDIR | 0755;
			uint64_t ino;

			CK_OK(tu_ialloc_linked(tp, hint, mode, &ino));
			CK_OK(mfs_trans_commit(tp));
			CK_OK(mfs_iget(t.fs, ino, 0, &ip));
			CK_EQ(ip->mode, mode);
			CK_EQ(ip->nlink, 1);
			mfs_iput(ip);
			inos[n++] = ino;
			nalloc++;
		}
		if ((nalloc + nfree) % 2500 == 0)
			check_inodes(&t, inos, n, &icount, &ifree);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	printf("  %zu allocations, %zu frees: %.1f us per operation\n", nalloc, nfree,
	       ((double)(t1.tv_sec - t0.tv_sec) * 1e9 + (double)(t1.tv_nsec - t0.tv_nsec)) /
	       1e3 / (double)(nalloc + nfree));

	/* unique numbers */
	memcpy(sorted, inos, n * sizeof(uint64_t));
	qsort(sorted, n, sizeof(uint64_t), cmp_u64);
	for (size_t i = 1; i < n; i++)
		CK_TRUE(sorted[i] != sorted[i - 1]);
	check_inodes(&t, inos, n, &icount, &ifree);
	CK_EQ(icount - ifree, n + 1);
	printf("  %zu live inodes in %" PRIu64 " chunks\n", n, icount / MFS_INODES_PER_CHUNK);

	/* a cold cache reads every one back */
	db_check(&t);
	for (size_t i = 0; i < n; i++) {
		struct mfs_inode *ip;

		CK_OK(mfs_iget(t.fs, inos[i], MFS_IGET_UNTRUSTED, &ip));
		CK_EQ(ip->ino, inos[i]);
		mfs_iput(ip);
	}

	/* free everything, in random order, several per transaction */
	while (n) {
		struct mfs_trans *tp;
		unsigned k = 1 + (unsigned)(tu_rand() % 8);

		CK_OK(mfs_trans_alloc(t.fs, &tp));
		while (k-- && n) {
			size_t j = tu_rand() % n;

			CK_OK(mfs_ifree(tp, inos[j]));
			inos[j] = inos[--n];
		}
		CK_OK(mfs_trans_commit(tp));
	}
	check_inodes(&t, inos, 0, &icount, &ifree);
	CK_EQ(icount, icount0);
	CK_EQ(ifree, ifree0);
	db_check(&t);
	timg_destroy(&t);
	free(inos);
	free(sorted);
}
END_TEST

/* A transaction that allocates (new chunks too), frees and logs, then cancels, leaves every
 * byte of the image as it was. */
START_TEST(test_cancel_exact)
{
	uint32_t bs = blocksizes[_i];
	struct timg t;
	uint64_t inos[300], icount0, ifree0, icount, ifree, ino;
	struct mfs_trans *tp;
	struct mfs_inode *ip;
	uint32_t crc0;
	unsigned n = 0;

	tu_srand(12345);
	timg_make(&t, bs, 0);
	sb_mark_dirty(&t);
	/* some committed inodes to free inside the cancelled transaction */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (; n < 100; n++)
		CK_OK(tu_ialloc_linked(tp, ag_hint(&t.fs->geo, n % 4), S_IFREG | 0600, &inos[n]));
	CK_OK(mfs_trans_commit(tp));
	check_inodes(&t, inos, n, &icount0, &ifree0);
	CK_OK(mfs_iget(t.fs, inos[7], 0, &ip));
	crc0 = tu_image_crc(t.fs, t.path);

	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (unsigned i = 0; i < 200; i++)
		CK_OK(tu_ialloc_linked(tp, ag_hint(&t.fs->geo, i % 4), S_IFDIR | 0700, &inos[n + i]));
	for (unsigned i = 0; i < 100; i += 3)
		if (i != 7)
			CK_OK(mfs_ifree(tp, inos[i]));
	pthread_rwlock_wrlock(&ip->lock);
	ip->nlink = 5;
	ip->size = 12345;
	CK_OK(mfs_inode_log(tp, ip));
	pthread_rwlock_unlock(&ip->lock);
	mfs_trans_cancel(tp);
	mfs_inode_invalidate(t.fs, ip->ino);
	for (unsigned i = 0; i < 200; i++)
		mfs_inode_invalidate(t.fs, inos[n + i]);
	for (unsigned i = 0; i < 100; i += 3)
		mfs_inode_invalidate(t.fs, inos[i]);

	CK_EQ(tu_image_crc(t.fs, t.path), crc0);
	check_inodes(&t, inos, n, &icount, &ifree);
	CK_EQ(icount, icount0);
	CK_EQ(ifree, ifree0);
	/* the in-core copies read the restored inodes again */
	mfs_iput(ip);
	CK_OK(mfs_iget(t.fs, inos[7], 0, &ip));
	CK_EQ(ip->nlink, 1);
	CK_EQ(ip->size, 0);
	mfs_iput(ip);
	for (unsigned i = 0; i < 200; i++) {
		int known = 0;

		for (unsigned j = 0; j < n; j++)
			known |= inos[j] == inos[n + i];
		if (!known)
			CK_EQ(mfs_iget(t.fs, inos[n + i], MFS_IGET_UNTRUSTED, &ip), -ENOENT);
	}
	/* and the filesystem goes on working */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(tu_ialloc_linked(tp, 0, S_IFLNK | 0777, &ino));
	CK_OK(mfs_trans_commit(tp));
	inos[n++] = ino;
	check_inodes(&t, inos, n, &icount, &ifree);
	db_check(&t);
	timg_destroy(&t);
}
END_TEST

/* Allocation takes the first chunk at or after the hint's with a free inode, wrapping round;
 * a chunk whose last free inode was taken by a cancelled transaction is found again (ialloc.c
 * keeps an in-core list of chunks with free inodes: this is what it must not change). */
static uint64_t alloc_near(struct timg *t, uint64_t hint, int commit)
{
	struct mfs_trans *tp;
	uint64_t ino;

	CK_OK(mfs_trans_alloc(t->fs, &tp));
	CK_OK(tu_ialloc_linked(tp, hint, S_IFREG | 0644, &ino));
	if (commit) {
		CK_OK(mfs_trans_commit(tp));
	} else {
		mfs_trans_cancel(tp);
		mfs_inode_invalidate(t->fs, ino);
	}
	return ino;
}

static void free_one(struct timg *t, uint64_t ino)
{
	struct mfs_trans *tp;

	CK_OK(mfs_trans_alloc(t->fs, &tp));
	CK_OK(mfs_ifree(tp, ino));
	CK_OK(mfs_trans_commit(tp));
}

START_TEST(test_alloc_nearest)
{
	enum { NCHUNK = 8, N = NCHUNK * MFS_INODES_PER_CHUNK };
	struct timg t;
	const struct mfs_geom *g;
	uint64_t inos[N], h, a, b, c, ino;
	struct mfs_trans *tp;

	timg_make(&t, 4096, 0);
	sb_mark_dirty(&t);
	g = &t.fs->geo;
	h = ag_hint(g, 1);
	for (unsigned i = 0; i < N; i += MFS_INODES_PER_CHUNK) {
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		for (unsigned k = 0; k < MFS_INODES_PER_CHUNK; k++)
			CK_OK(tu_ialloc_linked(tp, h, S_IFREG | 0644, &inos[i + k]));
		CK_OK(mfs_trans_commit(tp));
	}
	qsort(inos, N, sizeof(inos[0]), cmp_u64);
	for (unsigned k = 0; k < NCHUNK; k++) {        /* eight whole chunks of AG 1 */
		CK_EQ(mfs_ino_to_agno(g, inos[k * MFS_INODES_PER_CHUNK]), 1);
		CK_EQ(mfs_ino_to_agino(g, inos[k * MFS_INODES_PER_CHUNK]) % MFS_INODES_PER_CHUNK, 0);
		CK_EQ(inos[k * MFS_INODES_PER_CHUNK + MFS_INODES_PER_CHUNK - 1],
		      inos[k * MFS_INODES_PER_CHUNK] + MFS_INODES_PER_CHUNK - 1);
	}
	a = inos[2 * MFS_INODES_PER_CHUNK + 5];
	b = inos[5 * MFS_INODES_PER_CHUNK + 9];
	c = inos[6 * MFS_INODES_PER_CHUNK + 1];
	free_one(&t, a);
	free_one(&t, b);
	h = inos[3 * MFS_INODES_PER_CHUNK];
	CK_EQ(alloc_near(&t, h, 1), b);                /* the first free one after chunk 3 */
	CK_EQ(alloc_near(&t, h, 1), a);                /* wrapped round */
	free_one(&t, a);
	free_one(&t, c);
	CK_EQ(alloc_near(&t, inos[0], 0), a);          /* taken, then cancelled */
	CK_EQ(alloc_near(&t, inos[N - 1], 1), a);      /* still found first (wrapping) */
	CK_EQ(alloc_near(&t, inos[N - 1], 1), c);
	ino = alloc_near(&t, inos[N - 1], 1);          /* none free: a new chunk in AG 1 */
	CK_EQ(mfs_ino_to_agno(g, ino), 1);
	CK_TRUE(ino < inos[0] || ino > inos[N - 1]);
	db_check(&t);
	timg_destroy(&t);
}
END_TEST

/* ---- corrupt inodes ------------------------------------------------------------------------ */
static uint64_t alloc_one(struct timg *t, uint16_t mode)
{
	struct mfs_trans *tp;
	uint64_t ino;

	CK_OK(mfs_trans_alloc(t->fs, &tp));
	CK_OK(tu_ialloc_linked(tp, 0, mode, &ino));
	CK_OK(mfs_trans_commit(tp));
	return ino;
}

/* Apply `fn` to inode `ino`'s bytes in the cache (reseal when asked), and drop any in-core
 * copy. */
static void poke(struct timg *t, uint64_t ino, void (*fn)(struct mfs_dinode *), int reseal)
{
	const struct mfs_geom *g = &t->fs->geo;
	struct mfs_buf *bp;
	struct mfs_dinode *d;

	CK_OK(mfs_buf_read(t->fs->bc, mfs_ino_to_fsb(g, ino), NULL, &bp));
	d = (void *)((char *)bp->data + mfs_ino_to_offset(g, ino));
	fn(d);
	if (reseal)
		mfs_dinode_seal(d, g->inodesize);
	mfs_buf_put(bp);
	mfs_inode_invalidate(t->fs, ino);
}

static void p_flip(struct mfs_dinode *d) { ((uint8_t *)d)[200] ^= 0x40; }
static void p_self(struct mfs_dinode *d) { mfs_put64(d->ino, mfs_get64(d->ino) + 1); }
static void p_mode(struct mfs_dinode *d) { mfs_put16(d->mode, 0170644); }
static void p_dfmt(struct mfs_dinode *d) { d->dformat = MFS_FMT_DEV; }
static void p_forkoff(struct mfs_dinode *d) { mfs_put16(d->forkoff, 200); d->aformat = 2; }
static void p_nsec(struct mfs_dinode *d) { mfs_put32(d->mtime.nsec, 1000000000u); }
static void p_next(struct mfs_dinode *d) { d->dformat = MFS_FMT_EXTENTS; mfs_put32(d->dnext, 1000); }
static void p_freebad(struct mfs_dinode *d) { mfs_put16(d->mode, 0); mfs_put32(d->nlink, 3); }
static void p_magic(struct mfs_dinode *d) { mfs_put32(d->magic, 0x12345678); }

START_TEST(test_corrupt)
{
	static const struct {
		void (*fn)(struct mfs_dinode *);
		int reseal, err;
	} cases[] = {
		{ p_flip, 0, -EFSBADCRC }, { p_self, 1, -EFSCORRUPTED },
		{ p_mode, 1, -EFSCORRUPTED }, { p_dfmt, 1, -EFSCORRUPTED },
		{ p_forkoff, 1, -EFSCORRUPTED }, { p_nsec, 1, -EFSCORRUPTED },
		{ p_next, 1, -EFSCORRUPTED }, { p_freebad, 1, -EFSCORRUPTED },
		{ p_magic, 1, -EFSCORRUPTED },
	};
	struct timg t;
	struct mfs_inode *ip;
	const struct mfs_geom *g;
	uint64_t ino, freeino;
	int lvl;

	timg_make(&t, 4096, 0);
	g = &t.fs->geo;
	lvl = mfs_log_quiet();
	for (unsigned c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		ino = alloc_one(&t, S_IFREG | 0644);
		CK_OK(mfs_iget(t.fs, ino, 0, &ip));
		mfs_iput(ip);
		poke(&t, ino, cases[c].fn, cases[c].reseal);
		ip = (void *)1;
		if (mfs_iget(t.fs, ino, 0, &ip) != cases[c].err)
			ck_assert_msg(0, "case %u: iget gave %d, expected %d", c,
				      mfs_iget(t.fs, ino, 0, &ip), cases[c].err);
		CK_TRUE(ip == NULL);
		/* and again (the failure is not cached as a good inode) */
		CK_EQ(mfs_iget(t.fs, ino, MFS_IGET_FREE, &ip), cases[c].err);
	}
	/* numbers outside the filesystem or its chunk area */
	CK_EQ(mfs_iget(t.fs, 0, 0, &ip), -EFSCORRUPTED);
	CK_EQ(mfs_iget(t.fs, mfs_agino_to_ino(g, g->agcount, 64), 0, &ip), -EFSCORRUPTED);
	CK_EQ(mfs_iget(t.fs, mfs_agino_to_ino(g, g->agcount, 64), MFS_IGET_UNTRUSTED, &ip),
	      -EINVAL);
	CK_EQ(mfs_iget(t.fs, mfs_agino_to_ino(g, 1, 1), MFS_IGET_UNTRUSTED, &ip), -EINVAL);
	CK_EQ(mfs_iget(t.fs, 1ull << 60, 0, &ip), -EFSCORRUPTED);
	/* a block that holds no inodes: the inode verifier refuses it */
	CK_EQ(mfs_iget(t.fs, ag_hint(g, 2) + 4 * MFS_INODES_PER_CHUNK, 0, &ip), -EFSCORRUPTED);
	CK_EQ(mfs_iget(t.fs, ag_hint(g, 2) + 4 * MFS_INODES_PER_CHUNK, MFS_IGET_UNTRUSTED, &ip),
	      -ENOENT);
	mfs_log_set_level(lvl);

	/* free inodes: -ENOENT unless asked for */
	freeino = g->rootino + 63;
	CK_EQ(mfs_iget(t.fs, freeino, 0, &ip), -ENOENT);
	CK_EQ(mfs_iget(t.fs, freeino, MFS_IGET_UNTRUSTED, &ip), -ENOENT);
	CK_OK(mfs_iget(t.fs, freeino, MFS_IGET_FREE, &ip));
	CK_EQ(ip->mode, 0);
	mfs_iput(ip);
	CK_OK(mfs_iget(t.fs, g->rootino, MFS_IGET_UNTRUSTED, &ip));
	CK_TRUE(S_ISDIR(ip->mode));
	CK_EQ(ip->nlink, 2);
	mfs_iput(ip);
	/* freeing a free inode, or one in no chunk */
	{
		struct mfs_trans *tp;

		lvl = mfs_log_quiet();
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_EQ(mfs_ifree(tp, freeino), -EFSCORRUPTED);
		CK_EQ(mfs_ifree(tp, ag_hint(g, 3)), -EFSCORRUPTED);
		CK_EQ(mfs_ifree(tp, 0), -EINVAL);
		CK_EQ(tu_ialloc_linked(tp, 0, 0644, &ino), -EINVAL);
		mfs_trans_cancel(tp);
		mfs_log_set_level(lvl);
	}
	timg_destroy(&t);
}
END_TEST

/* ---- concurrency ---------------------------------------------------------------------------- */
#define NSHARED 200u

struct shared {
	struct mfs_fs *fs;
	uint64_t inos[NSHARED];
	pthread_mutex_t lock;
	struct mfs_inode *ptr[NSHARED];
	unsigned holders[NSHARED];
	int failed;
	char why[256];
	uint64_t seed;
};

static void *worker(void *arg)
{
	struct shared *s = arg;
	uint64_t r = __atomic_add_fetch(&s->seed, 0x9e3779b97f4a7c15ull, __ATOMIC_RELAXED);

	for (unsigned it = 0; it < NTHREAD_ITERS && !__atomic_load_n(&s->failed, __ATOMIC_RELAXED);
	     it++) {
		struct mfs_inode *ip, *ip2 = NULL;
		unsigned k;
		int err;

		r ^= r >> 12; r ^= r << 25; r ^= r >> 27;
		k = (unsigned)((r * 2685821657736338717ull) >> 33) % NSHARED;
		err = mfs_iget(s->fs, s->inos[k], 0, &ip);
		if (err) {
			snprintf(s->why, sizeof(s->why), "iget %" PRIu64 ": %d", s->inos[k], err);
			__atomic_store_n(&s->failed, 1, __ATOMIC_RELAXED);
			break;
		}
		pthread_mutex_lock(&s->lock);
		if (s->holders[k] && s->ptr[k] != ip) {
			snprintf(s->why, sizeof(s->why), "inode %" PRIu64 " instantiated twice",
				 s->inos[k]);
			s->failed = 1;
		}
		s->ptr[k] = ip;
		s->holders[k]++;
		pthread_mutex_unlock(&s->lock);
		pthread_rwlock_rdlock(&ip->lock);
		if (ip->ino != s->inos[k] || ip->mode != (S_IFREG | 0640) || ip->uid != k) {
			snprintf(s->why, sizeof(s->why), "inode %" PRIu64 ": wrong fields",
				 s->inos[k]);
			__atomic_store_n(&s->failed, 1, __ATOMIC_RELAXED);
		}
		pthread_rwlock_unlock(&ip->lock);
		if (r & 1) {          /* a second reference through iget: the same pointer */
			if (mfs_iget(s->fs, s->inos[k], 0, &ip2) || ip2 != ip) {
				snprintf(s->why, sizeof(s->why), "second iget of %" PRIu64
					 " differs", s->inos[k]);
				__atomic_store_n(&s->failed, 1, __ATOMIC_RELAXED);
			}
		}
		pthread_mutex_lock(&s->lock);
		s->holders[k]--;
		pthread_mutex_unlock(&s->lock);
		mfs_iput(ip2);
		mfs_iput(ip);
	}
	return NULL;
}

START_TEST(test_concurrent)
{
	static struct shared s;
	struct timg t;
	struct mfs_trans *tp;
	struct mfs_icache_stats st;
	pthread_t th[4];

	memset(&s, 0, sizeof(s));
	pthread_mutex_init(&s.lock, NULL);
	s.seed = (uint64_t)time(NULL);
	timg_make(&t, 4096, 0);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (unsigned i = 0; i < NSHARED; i++) {
		struct mfs_inode *ip;

		CK_OK(tu_ialloc_linked(tp, ag_hint(&t.fs->geo, i % 4), S_IFREG | 0640, &s.inos[i]));
		CK_OK(mfs_iget(t.fs, s.inos[i], 0, &ip));
		pthread_rwlock_wrlock(&ip->lock);
		ip->uid = i;
		ip->nlink = 1;
		CK_OK(mfs_inode_log(tp, ip));
		pthread_rwlock_unlock(&ip->lock);
		mfs_iput(ip);
	}
	CK_OK(mfs_trans_commit(tp));
	/* a tiny cache: inodes are evicted and read again all the time */
	CK_OK(mfs_icache_destroy(t.fs));
	CK_OK(mfs_icache_init(t.fs, 16));
	s.fs = t.fs;
	for (int i = 0; i < 4; i++)
		CK_EQ(pthread_create(&th[i], NULL, worker, &s), 0);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	ck_assert_msg(!s.failed, "%s", s.why);
	mfs_icache_get_stats(t.fs, &st);
	printf("inode cache, 4 threads x %u iget/iput on %u inodes: %" PRIu64 " hits, %" PRIu64
	       " misses, %" PRIu64 " evictions, %" PRIu64 " cached (limit %" PRIu64 ")\n",
	       NTHREAD_ITERS, NSHARED, st.hits, st.misses, st.evictions, st.cached,
	       st.max_unused);
	CK_TRUE(st.evictions > 0);
	CK_TRUE(st.unused == st.cached);
	CK_TRUE(st.cached <= st.max_unused + 64);
	CK_TRUE(st.hits + st.misses >= 4ull * NTHREAD_ITERS);
	timg_destroy(&t);
}
END_TEST

/* ---- every field through log, commit, reopen (with the journal) ---------------------------- */
START_TEST(test_roundtrip)
{
	uint32_t bs = blocksizes[_i];
	struct timg t;
	struct mfs_trans *tp;
	struct mfs_inode *ip, *ip2;
	uint64_t ino, ino2;
	const struct timespec ts[4] = { { -5, 1 }, { 1700000000, 999999999 },
					{ 1234567890, 123456789 }, { (time_t)1 << 40, 42 } };
	uint32_t litsize;

	timg_make(&t, bs, MFS_OPEN_JOURNAL);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(tu_ialloc_linked(tp, t.fs->geo.rootino, S_IFREG | 0640, &ino));
	CK_OK(tu_ialloc_linked(tp, t.fs->geo.rootino, S_IFCHR | 0600, &ino2));
	CK_OK(mfs_iget(t.fs, ino, 0, &ip));
	CK_EQ(ip->dformat, MFS_FMT_EXTENTS);
	CK_TRUE(ip->generation != 0 || ip->ctime.tv_sec != 0);
	litsize = ip->litsize;
	CK_EQ(litsize, t.fs->geo.inodesize - sizeof(struct mfs_dinode));
	pthread_rwlock_wrlock(&ip->lock);
	ip->mode = S_IFREG | 04751;
	ip->dformat = MFS_FMT_LOCAL;
	ip->nlink = 3;
	ip->uid = 1000001;
	ip->gid = 0xfffffffe;
	ip->forkoff = 6;            /* data fork 48 bytes, attribute fork the rest */
	ip->aformat = MFS_FMT_EXTENTS;
	ip->anext = 1;
	ip->size = 40;
	ip->nblocks = 0x123456789ull;
	ip->atime = ts[0];
	ip->mtime = ts[1];
	ip->ctime = ts[2];
	ip->btime = ts[3];
	ip->flags = MFS_DIFLAG_NOATIME | MFS_DIFLAG_NODUMP;
	ip->generation = 0xdeadbeef;
	ip->next_unlinked = ino2;
	for (uint32_t i = 0; i < litsize; i++)
		ip->lit[i] = (uint8_t)(i * 7 + 3);
	CK_OK(mfs_inode_log(tp, ip));
	/* an invalid in-core inode is refused and the buffer left alone */
	ip->mtime.tv_nsec = 1000000000;
	{
		int lvl = mfs_log_quiet();

		CK_EQ(mfs_inode_log(tp, ip), -EINVAL);
		mfs_log_set_level(lvl);
	}
	ip->mtime = ts[1];
	pthread_rwlock_unlock(&ip->lock);

	CK_OK(mfs_iget(t.fs, ino2, 0, &ip2));
	CK_EQ(ip2->dformat, MFS_FMT_DEV);
	pthread_rwlock_wrlock(&ip2->lock);
	ip2->rdev = 0x00080001;
	ip2->nlink = 1;
	CK_OK(mfs_inode_log(tp, ip2));
	pthread_rwlock_unlock(&ip2->lock);
	CK_OK(mfs_trans_commit(tp));
	/* needs-inactive: only when unlinked and the last reference */
	CK_TRUE(!mfs_inode_needs_inactive(ip2));
	ip2->nlink = 0;
	CK_TRUE(mfs_inode_needs_inactive(ip2));
	mfs_ihold(ip2);
	CK_TRUE(!mfs_inode_needs_inactive(ip2));
	mfs_iput(ip2);
	ip2->nlink = 1;
	mfs_iput(ip2);
	mfs_iput(ip);

	/* a cold open: replay/checkpoint, read back every field */
	timg_close(&t);
	timg_open(&t);
	CK_OK(mfs_iget(t.fs, ino, 0, &ip));
	CK_EQ(ip->mode, S_IFREG | 04751);
	CK_EQ(ip->dformat, MFS_FMT_LOCAL);
	CK_EQ(ip->aformat, MFS_FMT_EXTENTS);
	CK_EQ(ip->nlink, 3);
	CK_EQ(ip->uid, 1000001);
	CK_EQ(ip->gid, 0xfffffffe);
	CK_EQ(ip->forkoff, 6);
	CK_EQ(ip->anext, 1);
	CK_EQ(ip->dnext, 0);
	CK_EQ(ip->size, 40);
	CK_EQ(ip->nblocks, 0x123456789ull);
	CK_EQ(ip->atime.tv_sec, ts[0].tv_sec);
	CK_EQ(ip->atime.tv_nsec, ts[0].tv_nsec);
	CK_EQ(ip->mtime.tv_sec, ts[1].tv_sec);
	CK_EQ(ip->mtime.tv_nsec, ts[1].tv_nsec);
	CK_EQ(ip->ctime.tv_sec, ts[2].tv_sec);
	CK_EQ(ip->ctime.tv_nsec, ts[2].tv_nsec);
	CK_EQ(ip->btime.tv_sec, ts[3].tv_sec);
	CK_EQ(ip->btime.tv_nsec, ts[3].tv_nsec);
	CK_EQ(ip->flags, MFS_DIFLAG_NOATIME | MFS_DIFLAG_NODUMP);
	CK_EQ(ip->generation, 0xdeadbeef);
	CK_EQ(ip->next_unlinked, ino2);
	for (uint32_t i = 0; i < litsize; i++)
		if (ip->lit[i] != (uint8_t)(i * 7 + 3))
			ck_assert_msg(0, "literal byte %u: %u", i, ip->lit[i]);
	mfs_iput(ip);
	CK_OK(mfs_iget(t.fs, ino2, 0, &ip2));
	CK_EQ(ip2->mode, S_IFCHR | 0600);
	CK_EQ(ip2->rdev, 0x00080001);
	CK_EQ(ip2->nlink, 1);
	mfs_iput(ip2);
	sb_mark_dirty(&t);
	db_check(&t);
	timg_destroy(&t);
}
END_TEST

/* ---- MFS_IGET_NOWAIT: a caller holding AG locks never waits for an inode's lock ---------- */
START_TEST(test_iget_nowait)
{
	struct timg t;
	struct mfs_inode *ip, *ip2;
	uint64_t ino;

	timg_make(&t, 4096, 0);
	ino = alloc_one(&t, S_IFREG | 0644);
	CK_OK(mfs_iget(t.fs, ino, 0, &ip));
	/* a reader holds a copy that went stale (freed and allocated again elsewhere) */
	pthread_rwlock_rdlock(&ip->lock);
	mfs_inode_invalidate(t.fs, ino);
	CK_EQ(mfs_iget(t.fs, ino, MFS_IGET_NOWAIT, &ip2), -EDEADLK);
	CK_TRUE(ip2 == NULL);
	pthread_rwlock_unlock(&ip->lock);
	CK_OK(mfs_iget(t.fs, ino, MFS_IGET_NOWAIT, &ip2));
	CK_TRUE(ip2 == ip);
	CK_EQ(__atomic_load_n(&ip->stale, __ATOMIC_SEQ_CST), 0);
	mfs_iput(ip2);
	/* a writer holds a current copy: the free-inode check would wait; MFS_IGET_FREE does
	 * not look */
	pthread_rwlock_wrlock(&ip->lock);
	CK_EQ(mfs_iget(t.fs, ino, MFS_IGET_NOWAIT, &ip2), -EDEADLK);
	CK_OK(mfs_iget(t.fs, ino, MFS_IGET_NOWAIT | MFS_IGET_FREE, &ip2));
	CK_TRUE(ip2 == ip);
	mfs_iput(ip2);
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	timg_destroy(&t);      /* every reference dropped: the cache empties */
}
END_TEST

/* ---- ENOSPC: fill a small filesystem with inodes, then drain it ----------------------------- */
START_TEST(test_enospc)
{
	struct timg t;
	size_t n = 0, cap = 1 << 16;
	uint64_t *inos = calloc(cap, sizeof(uint64_t));
	uint64_t icount0, ifree0, icount, ifree;
	int err = 0;

	CK_TRUE(inos != NULL);
	memset(&t, 0, sizeof(t));
	tu_format_new(t.path, "mendfs_inode", 16 << 20,
		      &(struct mfs_format_opts){ .blocksize = 4096, .agcount = 2 });
	timg_open(&t);
	sb_mark_dirty(&t);
	check_inodes(&t, inos, 0, &icount0, &ifree0);
	while (!err) {
		struct mfs_trans *tp;
		uint32_t crc;
		size_t n0 = n;

		CK_OK(mfs_trans_alloc(t.fs, &tp));
		for (int i = 0; i < 64 && !err; i++) {
			uint64_t ino;

			err = tu_ialloc_linked(tp, inos[n0 ? n0 - 1 : 0], S_IFREG | 0644, &ino);
			if (!err) {
				CK_TRUE(n < cap);
				inos[n++] = ino;
			}
		}
		if (!err) {
			CK_OK(mfs_trans_commit(tp));
			continue;
		}
		CK_EQ(err, -ENOSPC);
		/* the failed transaction is cancelled and leaves nothing behind */
		mfs_trans_cancel(tp);
		for (size_t i = n0; i < n; i++)
			mfs_inode_invalidate(t.fs, inos[i]);
		n = n0;
		crc = tu_image_crc(t.fs, t.path);
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		for (;;) {
			uint64_t ino;

			err = tu_ialloc_linked(tp, 0, S_IFREG | 0644, &ino);
			if (err)
				break;
			inos[n++] = ino;
		}
		CK_EQ(err, -ENOSPC);
		mfs_trans_cancel(tp);
		for (size_t i = n0; i < n; i++)
			mfs_inode_invalidate(t.fs, inos[i]);
		n = n0;
		CK_EQ(tu_image_crc(t.fs, t.path), crc);
	}
	check_inodes(&t, inos, n, &icount, &ifree);
	printf("ENOSPC after %zu inodes (%" PRIu64 " chunks) in a 16 MiB filesystem\n", n,
	       icount / MFS_INODES_PER_CHUNK);
	CK_TRUE(n > 30000);
	db_check(&t);
	/* drain */
	while (n) {
		struct mfs_trans *tp;

		CK_OK(mfs_trans_alloc(t.fs, &tp));
		for (int i = 0; i < 100 && n; i++)
			CK_OK(mfs_ifree(tp, inos[--n]));
		CK_OK(mfs_trans_commit(tp));
	}
	check_inodes(&t, inos, 0, &icount, &ifree);
	CK_EQ(icount, icount0);
	CK_EQ(ifree, ifree0);
	db_check(&t);
	timg_destroy(&t);
	free(inos);
}
END_TEST

static Suite *inode_suite(void)
{
	Suite *s = suite_create("inode");
	TCase *tc = tcase_create("inode");

	tcase_set_timeout(tc, 240);
	tcase_add_loop_test(tc, test_alloc_random, 0, 2);
	tcase_add_loop_test(tc, test_cancel_exact, 0, 2);
	tcase_add_test(tc, test_alloc_nearest);
	tcase_add_test(tc, test_corrupt);
	tcase_add_test(tc, test_concurrent);
	tcase_add_test(tc, test_enospc);
	tcase_add_test(tc, test_iget_nowait);
	tcase_add_loop_test(tc, test_roundtrip, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	if (tu_program("mendfs_db", db_prog, sizeof(db_prog))) {
		printf("check_inode: skipped: no mendfs_db at %s (set BIN)\n", db_prog);
		return 77;
	}
	return tu_run_suite(inode_suite());
}
