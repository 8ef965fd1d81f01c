/*
 * bench_btree.c — throughput of the btree engine on one core, everything in the buffer
 * cache: bulk load of N 16-byte records, random lookups, random inserts, then random
 * deletes.  Prints each figure beside its aim; not pass/fail (exit 1 only when an
 * operation fails).
 *
 *   bench_btree [NRECS [OPS_PER_TRANSACTION]]     defaults 10,000,000 and 16
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "dev.h"
#include "fs.h"
#include "geom.h"
#include "log.h"
#include "trans.h"
#include "verify.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU time of this thread: unlike the wall clock, not inflated when other processes share
 * the core (the figures beside the wall-clock ones). */
static double cpu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t rnd_state = 0x2545f4914f6cdd1dull;
static uint64_t rnd(void)
{
	rnd_state ^= rnd_state >> 12;
	rnd_state ^= rnd_state << 25;
	rnd_state ^= rnd_state >> 27;
	return rnd_state * 2685821657736338717ull;
}

static int b_cmp(const void *a, const void *b)
{
	uint64_t x, y;

	memcpy(&x, a, 8);
	memcpy(&y, b, 8);
	x = mfs_get64(x);
	y = mfs_get64(y);
	return x < y ? -1 : x > y;
}

static void b_rec_key(const void *rec, void *key)
{
	memcpy(key, rec, 8);
}

static uint64_t next_block, nblocks_img;

static int b_alloc(struct mfs_btree_cur *cur, uint64_t *fsb)
{
	(void)cur;
	if (next_block >= nblocks_img)
		return -ENOSPC;
	*fsb = next_block++;
	return 0;
}

static int b_free(struct mfs_btree_cur *cur, uint64_t fsb)
{
	(void)cur;
	(void)fsb;
	return 0;
}

static struct mfs_btree_root broot;

static int b_set_root(struct mfs_btree_cur *cur)
{
	broot = cur->root;
	return 0;
}

static const struct mfs_btree_ops bops = {
	.name = "bench btree", .magic = MFS_MAGIC('B', 'N', 'C', 'H'),
	.rec_len = 16, .key_len = 8, .ptr_len = 4,
	.cmp_keys = b_cmp, .rec_key = b_rec_key,
	.alloc_block = b_alloc, .free_block = b_free, .set_root = b_set_root,
};

/* Bulk-loaded keys are the even numbers 2*i*K; inserts use odd ones. */
#define KSTEP 16u

struct src {
	uint64_t next, claimed, first;
};

static int src_recs(void *priv, void *recs, unsigned n)
{
	struct src *s = priv;
	uint64_t *r = recs;

	for (unsigned i = 0; i < n; i++, s->next++) {
		r[2 * i] = htole64(s->next * KSTEP);
		r[2 * i + 1] = htole64(s->next);
	}
	return 0;
}

static int src_claim(void *priv, uint64_t *fsb)
{
	struct src *s = priv;

	*fsb = s->first + s->claimed++;
	return 0;
}

static void fail(const char *what, int err)
{
	fprintf(stderr, "bench_btree: %s: %s\n", what, strerror(-err));
	exit(1);
}

int main(int argc, char **argv)
{
	uint64_t n = argc > 1 ? strtoull(argv[1], NULL, 0) : 10000000ull;
	unsigned per_txn = argc > 2 ? (unsigned)strtoul(argv[2], NULL, 0) : 16;
	uint64_t nlook = n < 2000000 ? n : 2000000, nins = nlook;
	char path[] = "/tmp/bench_btree.XXXXXX";
	struct mfs_geom geo;
	struct mfs_dev *dev;
	struct mfs_fs *fs;
	struct mfs_btree_cur cur;
	struct mfs_trans *tp;
	struct mfs_bload bl;
	struct src s = { 0, 0, 16 };
	uint64_t nblocks, found = 0;
	unsigned levels;
	double t0, t_load, t_look, t_ins, t_del;
	double c0, c_load, c_look, c_ins, c_del;
	int fd, err, stat;

	if (n < 1000)
		n = 1000;
	memset(&geo, 0, sizeof(geo));
	geo.blocksize = 4096;
	geo.blocklog = 12;
	geo.agblocks = 1u << 22;
	geo.dblocks = geo.agblocks;
	geo.agcount = 1;
	geo.inodesize = 256;
	geo.inopblog = 4;
	geo.agblklog = 22;
	geo.chunkblocks = 4;
	geo.rootino = 128;
	for (int i = 0; i < 16; i++)
		geo.uuid[i] = (uint8_t)rnd();
	nblocks_img = geo.dblocks;

	fd = mkstemp(path);
	if (fd < 0 || ftruncate(fd, (off_t)geo.dblocks * geo.blocksize) < 0) {
		perror("bench_btree: image");
		return 1;
	}
	close(fd);
	err = mfs_dev_open(path, 0, &dev);
	if (err)
		fail("open image", err);
	unlink(path);
	err = mfs_fs_create(dev, &geo, (size_t)4 << 30, &fs);
	if (err)
		fail("create fs", err);

	/* Bulk load n records (default fill). */
	err = mfs_bload_geometry(&bops, geo.blocksize, n, 0, &nblocks, &levels);
	if (err)
		fail("bload geometry", err);
	memset(&bl, 0, sizeof(bl));
	bl.ops = &bops;
	bl.nrecs = n;
	bl.get_recs = src_recs;
	bl.claim_block = src_claim;
	bl.priv = &s;
	t0 = now();
	c0 = cpu_now();
	err = mfs_bload_build(fs, NULL, &bl, &broot);
	t_load = now() - t0;
	c_load = cpu_now() - c0;
	if (err)
		fail("bload build", err);
	next_block = s.first + s.claimed;

	/* Random lookups (EQ, all hits). */
	mfs_btree_cur_init(&cur, fs, NULL, &bops, 0, 0, &broot, NULL);
	t0 = now();
	c0 = cpu_now();
	for (uint64_t i = 0; i < nlook; i++) {
		uint64_t k = htole64((rnd() % n) * KSTEP);

		err = mfs_btree_lookup(&cur, &k, MFS_LOOKUP_EQ, &stat);
		if (err)
			fail("lookup", err);
		found += (uint64_t)stat;
	}
	t_look = now() - t0;
	c_look = cpu_now() - c0;
	mfs_btree_cur_release(&cur);
	if (found != nlook)
		fail("lookup missed a record", -EIO);

	/* Random inserts, per_txn to a transaction. */
	t0 = now();
	c0 = cpu_now();
	for (uint64_t i = 0; i < nins;) {
		err = mfs_trans_alloc(fs, &tp);
		if (err)
			fail("trans alloc", err);
		mfs_btree_cur_init(&cur, fs, tp, &bops, 0, 0, &broot, NULL);
		for (unsigned j = 0; j < per_txn && i < nins; j++, i++) {
			uint64_t rec[2];

			rec[0] = htole64((rnd() % n) * KSTEP + 1 + (rnd() % (KSTEP - 1)));
			rec[1] = 0;
			err = mfs_btree_insert(&cur, rec);
			if (err && err != -EEXIST)
				fail("insert", err);
		}
		mfs_btree_cur_release(&cur);
		err = mfs_trans_commit(tp);
		if (err)
			fail("commit", err);
	}
	t_ins = now() - t0;
	c_ins = cpu_now() - c0;

	/* Random deletes of bulk-loaded keys, per_txn to a transaction. */
	t0 = now();
	c0 = cpu_now();
	for (uint64_t i = 0; i < nins;) {
		err = mfs_trans_alloc(fs, &tp);
		if (err)
			fail("trans alloc", err);
		mfs_btree_cur_init(&cur, fs, tp, &bops, 0, 0, &broot, NULL);
		for (unsigned j = 0; j < per_txn && i < nins; j++, i++) {
			uint64_t k = htole64((rnd() % n) * KSTEP);

			err = mfs_btree_lookup(&cur, &k, MFS_LOOKUP_EQ, &stat);
			if (err)
				fail("lookup for delete", err);
			if (stat) {
				err = mfs_btree_delete(&cur);
				if (err)
					fail("delete", err);
			}
		}
		mfs_btree_cur_release(&cur);
		err = mfs_trans_commit(tp);
		if (err)
			fail("commit", err);
	}
	t_del = now() - t0;
	c_del = cpu_now() - c0;

	mfs_btree_cur_init(&cur, fs, NULL, &bops, 0, 0, &broot, NULL);
	t0 = now();
	err = mfs_btree_verify(&cur, NULL, NULL);
	mfs_btree_cur_release(&cur);
	if (err)
		fail("verify", err);

	printf("btree, %" PRIu64 " records of 16 bytes, 4 KiB blocks, %u levels, one core, "
	       "in the cache:\n", n, broot.levels);
	printf("  (wall clock; in brackets per CPU second of this thread)\n");
	printf("  bulk load        %8.2f M records/s [%6.2f]  (aim >= 10 M/s)\n", n / t_load / 1e6,
	       n / c_load / 1e6);
	printf("  random lookups   %8.2f M/s         [%6.2f]  (aim >= 2 M/s)\n", nlook / t_look / 1e6,
	       nlook / c_look / 1e6);
	printf("  random inserts   %8.2f M/s         [%6.2f]  (aim >= 1 M/s)\n", nins / t_ins / 1e6,
	       nins / c_ins / 1e6);
	printf("  random deletes   %8.2f M/s         [%6.2f]\n", nins / t_del / 1e6, nins / c_del / 1e6);
	printf("  full verify      %8.2f s\n", now() - t0);
	/* The image is already unlinked: nothing needs writing back, so no close (which would
	 * flush gigabytes to a deleted file); the process exit frees everything. */
	return 0;
}
