/*
 * check_journal.c — the metadata journal: committed transactions survive a crash and
 * nothing else does; torn records are not replayed; the circular log wraps with
 * checkpoints; concurrent committers share device flushes; a corrupt header is refused;
 * a transaction bigger than the log fails cleanly; data written before a commit is flushed
 * before its record reaches the log, and the record flushed before it counts as durable;
 * a force and a checkpoint need no memory; forged records that pass every checksum are replayed or
 * refused whole, nothing else.
 *
 * Each test builds a filesystem handle by hand over a sparse image (one AG, a log region
 * at a fixed place) and uses plain metadata blocks with a test magic.  A "crash" drops the
 * journal and the buffer cache without writing anything and closes the device.
 */
#include <check.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bcache.h"
#include "byteorder.h"
#include "crc32c.h"
#include "dev.h"
#include "fs.h"
#include "journal.h"
#include "log.h"
#include "mem.h"
#include "trans.h"
#include "verify.h"

#include "tu.h"

#define BS        4096u
#define DBLOCKS   4096u
#define LOGSTART  3000u
#define TMAGIC    MFS_MAGIC('T', 'J', 'N', 'L')
#define PAYLOAD   64u      /* offset of the test value in a block */

static const uint8_t uuid[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
/*
 * The image: a temporary file unlinked as soon as it is created and reached through its
 * descriptor (/proc/self/fd/N: every open of `path` opens the same file), so nothing is
 * left in /tmp whatever happens to a test — a failed assertion skips a checked fixture's
 * teardown, a timeout kills the test's process.  Forked children inherit the descriptor.
 */
static char path[64];
static int img_fd = -1;

static void setup(void)
{
	char tmpl[] = "/tmp/mfs-journal-XXXXXX";

	img_fd = mkstemp(tmpl);
	ck_assert_int_ge(img_fd, 0);
	unlink(tmpl);
	ck_assert_int_eq(ftruncate(img_fd, DBLOCKS * (off_t)BS), 0);
	snprintf(path, sizeof(path), "/proc/self/fd/%d", img_fd);
}

static void teardown(void)
{
	close(img_fd);
	img_fd = -1;
}

static struct mfs_geom geom(uint32_t logblocks)
{
	struct mfs_geom g;

	memset(&g, 0, sizeof(g));
	g.blocksize = BS;
	g.blocklog = 12;
	g.dblocks = DBLOCKS;
	g.agblocks = DBLOCKS;
	g.agcount = 1;
	g.inodesize = 256;
	g.inopblog = 4;
	g.agblklog = 12;
	g.logstart = LOGSTART;
	g.logblocks = logblocks;
	memcpy(g.uuid, uuid, 16);
	return g;
}

/* A handle over the image; `format`: write an empty log first.  Opens (replays) the
 * journal and returns its result in *jerr when asked, else asserts success. */
static struct mfs_fs *fs_up(uint32_t logblocks, int format, int *jerr)
{
	struct mfs_geom g = geom(logblocks);
	struct mfs_dev *dev;
	struct mfs_fs *fs;
	int err;

	ck_assert_int_eq(mfs_dev_open(path, 0, &dev), 0);
	ck_assert_int_eq(mfs_fs_create(dev, &g, 0, &fs), 0);
	if (format)
		ck_assert_int_eq(mfs_journal_format(fs), 0);
	err = mfs_journal_open(fs, 0, NULL);
	if (jerr)
		*jerr = err;
	else
		ck_assert_int_eq(err, 0);
	return fs;
}

static void crash(struct mfs_fs *fs)
{
	mfs_journal_discard(fs->log);
	mfs_bcache_discard(fs->bc);
	fs->bc = NULL;
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}

/* Set block `blkno` to value `val` in `tp`: a new block, or a modified one. */
static void put_block(struct mfs_trans *tp, uint64_t blkno, uint64_t val, int fresh)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	struct mfs_blk_expect e = { TMAGIC, 0, MFS_LEVEL_ANY, "test block" };
	struct mfs_buf *bp;

	if (fresh) {
		ck_assert_int_eq(mfs_trans_get_new(tp, blkno, 1, &bp), 0);
		mfs_blk_init(bp->data, BS, TMAGIC, blkno, 0, uuid);
	} else {
		ck_assert_int_eq(mfs_buf_read(fs->bc, blkno, &e, &bp), 0);
		ck_assert_int_eq(mfs_trans_modify(tp, bp), 0);
		mfs_buf_put(bp);   /* the transaction holds its own reference */
	}
	memcpy((char *)bp->data + PAYLOAD, &val, sizeof(val));
	memset((char *)bp->data + PAYLOAD + 8, (int)(val & 0xff), 512);
}

/* One transaction setting blocks[0..n) to `val`. */
static int tx(struct mfs_fs *fs, const uint64_t *blocks, unsigned n, uint64_t val, int fresh)
{
	struct mfs_trans *tp;

	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	for (unsigned i = 0; i < n; i++)
		put_block(tp, blocks[i], val, fresh);
	return mfs_trans_commit(tp);
}

/* The block through the cache, verified: its value (and a nonzero lsn stamp). */
static uint64_t block_val(struct mfs_fs *fs, uint64_t blkno)
{
	struct mfs_blk_expect e = { TMAGIC, 0, MFS_LEVEL_ANY, "test block" };
	struct mfs_buf *bp;
	uint64_t v;

	ck_assert_int_eq(mfs_buf_read(fs->bc, blkno, &e, &bp), 0);
	memcpy(&v, (char *)bp->data + PAYLOAD, sizeof(v));
	ck_assert_uint_ne(mfs_get64(((struct mfs_blkhdr *)bp->data)->lsn), 0);
	ck_assert_int_eq(((unsigned char *)bp->data)[PAYLOAD + 8 + 511], (int)(v & 0xff));
	mfs_buf_put(bp);
	return v;
}

/* Whether the block on disk is all zeroes (never written in place). */
/* Crash, reopen the 256-block log (replay), and expect blocks first.. first+n-1 to hold
 * 1..n; then close. */
static void crash_expect_seq(struct mfs_fs *fs, uint64_t first, unsigned n)
{
	crash(fs);
	fs = fs_up(256, 0, NULL);
	for (unsigned i = 0; i < n; i++)
		ck_assert_uint_eq(block_val(fs, first + i), i + 1);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}

static int raw_zero(uint64_t blkno)
{
	static char buf[BS];
	int fd = open(path, O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, buf, BS, (off_t)blkno * BS), BS);
	close(fd);
	for (unsigned i = 0; i < BS; i++)
		if (buf[i])
			return 0;
	return 1;
}

static void raw_write(uint64_t blkno, const void *buf)
{
	int fd = open(path, O_RDWR);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, buf, BS, (off_t)blkno * BS), BS);
	close(fd);
}

static void raw_read(uint64_t blkno, void *buf)
{
	int fd = open(path, O_RDONLY);

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, buf, BS, (off_t)blkno * BS), BS);
	close(fd);
}

/* ---- committed transactions are replayed; uncommitted ones leave nothing -------------- */
START_TEST(replay_committed)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	struct mfs_journal_stats st;
	struct mfs_journal_info info;
	struct mfs_trans *tp;
	uint64_t lsn;

	for (uint64_t i = 0; i < 20; i++) {
		uint64_t b[3] = { 100 + 2 * i, 101 + 2 * i, 500 };

		ck_assert_int_eq(tx(fs, b, 3, i + 1, 1), 0);
	}
	/* Write-ahead: nothing has reached its home location yet. */
	ck_assert(raw_zero(100));
	ck_assert(raw_zero(500));
	/* A transaction still open at the crash, and one committed asynchronously (not
	 * forced): neither may appear. */
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	put_block(tp, 900, 77, 1);
	put_block(tp, 100, 77, 0);
	mfs_trans_cancel(tp);
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	put_block(tp, 901, 78, 1);
	ck_assert_int_eq(mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, &lsn), 0);
	ck_assert_uint_gt(lsn, 0);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.commits, 21);
	ck_assert_uint_lt(st.durable_lsn, lsn);
	crash(fs);

	fs = fs_up(256, 0, NULL);
	ck_assert_int_eq(mfs_journal_peek(fs, &info), 0);   /* already replayed: empty */
	ck_assert_uint_eq(info.records, 0);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.replayed_records, 20);
	ck_assert_uint_eq(st.replayed_blocks, 60);
	for (uint64_t i = 0; i < 20; i++) {
		ck_assert_uint_eq(block_val(fs, 100 + 2 * i), i + 1);
		ck_assert_uint_eq(block_val(fs, 101 + 2 * i), i + 1);
	}
	ck_assert_uint_eq(block_val(fs, 500), 20);
	ck_assert(raw_zero(900));
	ck_assert(raw_zero(901));

	/* A clean close checkpoints: a reopen finds an empty, clean log. */
	ck_assert_int_eq(mfs_fs_close(fs), 0);
	ck_assert(!raw_zero(500));
	fs = fs_up(256, 0, NULL);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.replayed_records, 0);
	ck_assert_uint_eq(block_val(fs, 500), 20);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/* ---- torn records ------------------------------------------------------------------- */
/*
 * Five transactions of two new blocks each: record i (1 descriptor, 2 images, 1 commit)
 * sits at log blocks 2 + 4i .. 5 + 4i of a freshly formatted log.
 */
#define REC_BLK(i, k) (LOGSTART + 2 + 4 * (i) + (k))

static void five_and_crash(void)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);

	for (uint64_t i = 0; i < 5; i++) {
		uint64_t b[2] = { 200 + 2 * i, 201 + 2 * i };

		ck_assert_int_eq(tx(fs, b, 2, i + 1, 1), 0);
	}
	crash(fs);
}

START_TEST(torn_last_record)
{
	/* k: which block of the last record is damaged (0 desc, 1-2 images, 3 commit);
	 * zeroed (as if never written) or one bit flipped. */
	for (int k = 0; k < 4; k++) {
		for (int how = 0; how < 2; how++) {
			char buf[BS];
			struct mfs_fs *fs;
			struct mfs_journal_stats st;

			five_and_crash();
			raw_read(REC_BLK(4, k), buf);
			if (how)
				buf[BS / 2] ^= 0x10;
			else
				memset(buf, 0, BS);
			raw_write(REC_BLK(4, k), buf);

			fs = fs_up(256, 0, NULL);
			mfs_journal_get_stats(fs->log, &st);
			ck_assert_uint_eq(st.replayed_records, 4);
			for (uint64_t i = 0; i < 4; i++)
				ck_assert_uint_eq(block_val(fs, 200 + 2 * i), i + 1);
			ck_assert(raw_zero(208));
			ck_assert(raw_zero(209));
			ck_assert_int_eq(mfs_fs_close(fs), 0);
			teardown();     /* a fresh image for the next case */
			setup();
		}
	}
}
END_TEST

START_TEST(torn_middle_then_reuse)
{
	struct mfs_journal_stats st;
	struct mfs_fs *fs;
	char buf[BS];

	/* Record 3 torn, record 4 complete after it: replay stops at 3. */
	five_and_crash();
	raw_read(REC_BLK(3, 3), buf);
	buf[100] ^= 1;
	raw_write(REC_BLK(3, 3), buf);
	fs = fs_up(256, 0, NULL);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.replayed_records, 3);
	ck_assert(raw_zero(206));
	ck_assert(raw_zero(208));

	/* A new record of the same size lands where record 3 was; the complete record 4
	 * right after it is stale and must never be taken for its successor. */
	{
		uint64_t b[2] = { 300, 301 };

		ck_assert_int_eq(tx(fs, b, 2, 99, 1), 0);
	}
	crash(fs);
	fs = fs_up(256, 0, NULL);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.replayed_records, 1);
	ck_assert_uint_eq(block_val(fs, 300), 99);
	ck_assert_uint_eq(block_val(fs, 301), 99);
	ck_assert(raw_zero(208));
	ck_assert(raw_zero(209));
	ck_assert_uint_eq(block_val(fs, 204), 3);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/* ---- the circular log wraps, checkpoints free it ---------------------------------------- */
START_TEST(wrap_with_checkpoints)
{
	/* 32 log blocks: 30 usable, 7 four-block records per lap. */
	struct mfs_fs *fs = fs_up(32, 1, NULL);
	struct mfs_journal_stats st;
	uint64_t last[10] = { 0 };
	int fresh[10];

	for (int i = 0; i < 10; i++)
		fresh[i] = 1;
	for (int round = 0; round < 3; round++) {
		for (uint64_t i = 0; i < 97; i++) {
			uint64_t v = round * 1000 + i + 1;
			unsigned a = (unsigned)((i * 3 + round) % 10), b = (a + 1) % 10;
			uint64_t blks[2] = { 400 + a, 400 + b };
			struct mfs_trans *tp;

			ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
			put_block(tp, blks[0], v, fresh[a]);
			put_block(tp, blks[1], v, fresh[b]);
			ck_assert_int_eq(mfs_trans_commit(tp), 0);
			fresh[a] = fresh[b] = 0;
			last[a] = last[b] = v;
			if (i == 50)
				ck_assert_int_eq(mfs_journal_checkpoint(fs->log), 0);
		}
		mfs_journal_get_stats(fs->log, &st);
		ck_assert_uint_gt(st.checkpoints, 10);
		ck_assert_uint_gt(st.blocks_logged, 3 * 30);
		ck_assert_uint_le(st.log_used, st.log_size);
		crash(fs);

		/* What the last checkpoint (the log thread's, maybe after the last commit)
		 * left in the log: at most a lap. */
		fs = fs_up(32, 0, NULL);
		mfs_journal_get_stats(fs->log, &st);
		ck_assert_uint_le(st.replayed_records, 7);
		for (unsigned a = 0; a < 10; a++)
			ck_assert_uint_eq(block_val(fs, 400 + a), last[a]);
	}
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/* ---- freed blocks are revoked: replay never writes over their later contents --------- */
START_TEST(revoked_blocks)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	uint64_t b = 600;
	struct mfs_trans *tp;
	char data[BS], back[BS];

	ck_assert_int_eq(tx(fs, &b, 1, 5, 1), 0);
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	ck_assert_int_eq(mfs_trans_forget(tp, b), 0);
	ck_assert_int_eq(mfs_trans_commit(tp), 0);
	/* The block is now file data, written directly (ordered mode). */
	memset(data, 0xd5, BS);
	raw_write(b, data);
	crash(fs);
	fs = fs_up(256, 0, NULL);
	raw_read(b, back);
	ck_assert(!memcmp(data, back, BS));
	/* Reallocated as metadata after the revoke: replayed again. */
	ck_assert_int_eq(tx(fs, &b, 1, 6, 1), 0);
	crash(fs);
	fs = fs_up(256, 0, NULL);
	ck_assert_uint_eq(block_val(fs, b), 6);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/* ---- group commit: threads share device flushes; every acknowledged one survives ----- */
#define NTHREADS 4
#if defined(__SANITIZE_ADDRESS__)
#define PER_THREAD 100
#else
#define PER_THREAD 300
#endif

/* Thread `t` changes blocks 1000 + 100 t + k (k < nkeys) `per` times in turn, each in a
 * transaction of its own under the AG lock: synchronous commits, or asynchronous ones
 * and a force of the last at the end. */
struct worker {
	struct mfs_fs *fs;
	unsigned t, nkeys, per;
	int async;
	uint64_t acked[25];       /* last acknowledged value of each of this thread's blocks */
	int fail;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	uint64_t lsn = 0;

	for (unsigned i = 0; i < w->per; i++) {
		unsigned k = i % w->nkeys;
		uint64_t blk = 1000 + w->t * 100 + k;
		uint64_t v = (uint64_t)w->t << 32 | (i + 1);
		struct mfs_trans *tp;

		if (mfs_trans_alloc(w->fs, &tp) ||
		    mfs_trans_lock_ag(tp, 0, 0)) {
			w->fail = 1;
			return NULL;
		}
		/* The AG lock serialises the changes; it is released before the wait for
		 * the log, so the others can join the same flush. */
		put_block(tp, blk, v, i < w->nkeys);
		if (mfs_trans_commit_lsn(tp, w->async ? MFS_TRANS_ASYNC : 0, &lsn)) {
			w->fail = 1;
			return NULL;
		}
		w->acked[k] = v;
	}
	if (w->async && mfs_journal_force_lsn(w->fs->log, lsn))
		w->fail = 1;
	return NULL;
}

/* Run NTHREADS workers to the end. */
static void run_workers(struct mfs_fs *fs, struct worker *w, unsigned nkeys, unsigned per,
			int async)
{
	pthread_t th[NTHREADS];

	for (unsigned t = 0; t < NTHREADS; t++) {
		w[t] = (struct worker){ .fs = fs, .t = t, .nkeys = nkeys, .per = per,
					.async = async };
		ck_assert_int_eq(pthread_create(&th[t], NULL, worker_main, &w[t]), 0);
	}
	for (unsigned t = 0; t < NTHREADS; t++) {
		pthread_join(th[t], NULL);
		ck_assert(!w[t].fail);
	}
}

/* Crash, reopen: every acknowledged value is there. */
static void crash_check_workers(struct mfs_fs *fs, uint32_t logblocks, const struct worker *w)
{
	crash(fs);
	fs = fs_up(logblocks, 0, NULL);
	for (unsigned t = 0; t < NTHREADS; t++)
		for (unsigned k = 0; k < w[t].nkeys; k++)
			ck_assert_uint_eq(block_val(fs, 1000 + t * 100 + k), w[t].acked[k]);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}

START_TEST(group_commit)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	struct worker w[NTHREADS];
	struct mfs_journal_stats st;
	struct timespec t0, t1;
	double secs;

	clock_gettime(CLOCK_MONOTONIC, &t0);
	run_workers(fs, w, 25, PER_THREAD, 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	mfs_journal_get_stats(fs->log, &st);
	printf("group commit: %llu transactions, %llu log writes, %llu device flushes "
	       "(%.2f transactions per flush), %llu checkpoints, %.0f commits/s\n",
	       (unsigned long long)st.commits, (unsigned long long)st.writes,
	       (unsigned long long)st.flushes, (double)st.commits / (double)st.flushes,
	       (unsigned long long)st.checkpoints, (double)st.commits / secs);
	ck_assert_uint_eq(st.commits, NTHREADS * PER_THREAD);
	/* Shared batches (a batch's two flushes serve all it carries; the log thread's
	 * checkpoints add flushes of their own, as many as the load makes them). */
	ck_assert_uint_lt(st.writes, st.commits);
	crash_check_workers(fs, 256, w);
}
END_TEST

/* ---- the cache's flush goes through the journal; a clean close says so ---------------- */
START_TEST(flush_and_clean_close)
{
	struct mfs_fs *fs = fs_up(64, 1, NULL);
	struct mfs_bcache_stats bst;
	struct mfs_journal_info info;
	uint64_t b[2] = { 650, 651 };

	ck_assert_int_eq(tx(fs, b, 2, 3, 1), 0);
	mfs_bcache_get_stats(fs->bc, &bst);
	ck_assert_uint_eq(bst.ndirty, 2);       /* journaled: dirty until checkpointed */
	ck_assert(raw_zero(650));
	ck_assert_int_eq(mfs_bcache_flush(fs->bc), 0);
	mfs_bcache_get_stats(fs->bc, &bst);
	ck_assert_uint_eq(bst.ndirty, 0);
	ck_assert(!raw_zero(650));
	ck_assert_int_eq(mfs_journal_peek(fs, &info), 0);
	ck_assert_uint_eq(info.records, 0);     /* the tail moved past the record */
	ck_assert(!info.clean);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
	{
		/* A bare handle (no journal opened) sees the header the close left. */
		struct mfs_geom g = geom(64);
		struct mfs_dev *dev;

		ck_assert_int_eq(mfs_dev_open(path, 0, &dev), 0);
		ck_assert_int_eq(mfs_fs_create(dev, &g, 0, &fs), 0);
		ck_assert_int_eq(mfs_journal_peek(fs, &info), 0);
		ck_assert(info.clean);
		ck_assert_uint_eq(info.records, 0);
		ck_assert_uint_eq(block_val(fs, 651), 3);
		ck_assert_int_eq(mfs_fs_close(fs), 0);
	}
}
END_TEST

/* ---- a damaged header ----------------------------------------------------------------- */
START_TEST(corrupt_header)
{
	struct mfs_fs *fs = fs_up(64, 1, NULL);
	struct mfs_journal_info info;
	uint64_t b = 700;
	char buf[BS];
	int jerr, q;

	ck_assert_int_eq(tx(fs, &b, 1, 1, 1), 0);
	crash(fs);

	/* The older copy damaged (as by a torn header write): the other serves.  Copy 0
	 * holds gen 2 from the format, copy 1 gen 3 from the open. */
	raw_read(LOGSTART, buf);
	buf[200] ^= 4;
	raw_write(LOGSTART, buf);
	q = mfs_log_quiet();
	fs = fs_up(64, 0, &jerr);
	ck_assert_int_eq(jerr, 0);
	ck_assert_uint_eq(block_val(fs, b), 1);
	crash(fs);

	/* Both damaged: refused, and peek says the same. */
	raw_read(LOGSTART + 1, buf);
	memset(buf, 0x5a, 64);
	raw_write(LOGSTART + 1, buf);
	raw_read(LOGSTART, buf);
	buf[300] ^= 4;
	raw_write(LOGSTART, buf);
	fs = fs_up(64, 0, &jerr);
	ck_assert_int_eq(jerr, -EFSCORRUPTED);
	ck_assert_ptr_null(fs->log);
	ck_assert_int_eq(mfs_journal_peek(fs, &info), -EFSCORRUPTED);
	mfs_log_set_level(q);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/* ---- a transaction bigger than the log ------------------------------------------------ */
START_TEST(too_big)
{
	struct mfs_fs *fs = fs_up(32, 1, NULL);
	struct mfs_journal_stats st;
	struct mfs_bcache_stats bst;
	uint64_t blks[40];
	int q;

	for (unsigned i = 0; i < 40; i++)
		blks[i] = 800 + i;
	q = mfs_log_quiet();
	ck_assert_int_eq(tx(fs, blks, 40, 1, 1), -ENOSPC);
	mfs_log_set_level(q);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.commits, 0);
	mfs_bcache_get_stats(fs->bc, &bst);
	ck_assert_uint_eq(bst.ndirty, 0);
	ck_assert_uint_eq(bst.nbufs, 0);     /* the cancelled new blocks are gone */
	/* The journal still works, and the biggest transaction that fits does too. */
	ck_assert_int_eq(tx(fs, blks, 28, 2, 1), 0);
	crash(fs);
	fs = fs_up(32, 0, NULL);
	ck_assert_uint_eq(block_val(fs, 827), 2);
	ck_assert(raw_zero(828));
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/* Make every later write through the handle's device fail (EBADF): its descriptor is
 * replaced by a read-only one on the same image. */
static void dev_break(struct mfs_fs *fs)
{
	int ro = open(path, O_RDONLY);

	ck_assert_int_ge(ro, 0);
	ck_assert_int_eq(dup2(ro, mfs_dev_fd(fs->dev)), mfs_dev_fd(fs->dev));
	close(ro);
}

/* The block's value in the cache, without any check (it may be dirty, unsealed). */
static uint64_t cached_val(struct mfs_fs *fs, uint64_t blkno)
{
	struct mfs_buf *bp;
	uint64_t v;

	ck_assert_int_eq(mfs_buf_read(fs->bc, blkno, NULL, &bp), 0);
	memcpy(&v, (char *)bp->data + PAYLOAD, sizeof(v));
	mfs_buf_put(bp);
	return v;
}

/* ---- a log write failing after the commit: committed in memory, error of durability ---- */
START_TEST(force_error_after_queue)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	struct mfs_journal_stats st;
	uint64_t b = 1500, lsn = 0, last_lsn = 0, last = 1;
	int err = 0, q;

	ck_assert_int_eq(tx(fs, &b, 1, 1, 1), 0);
	dev_break(fs);
	q = mfs_log_quiet();
	/* Asynchronous commits (each also making a new block, so that the queue grows)
	 * queue without I/O; the log thread writes the queue once an eighth of the log is
	 * queued (or a committer does, when three quarters are), which fails.  The commit
	 * that learns of it either was queued before (its throttle returns the error, it
	 * got its sequence) or is refused whole (no sequence). */
	for (uint64_t v = 2; v < 200 && !err; v++) {
		struct mfs_trans *tp;

		ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
		put_block(tp, b, v, 0);
		put_block(tp, b + v, v, 1);
		err = mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, &lsn);
		if (lsn) {
			ck_assert_uint_ge(lsn, last_lsn);
			last_lsn = lsn;
			last = v;
		}
	}
	mfs_log_set_level(q);
	ck_assert_int_eq(err, -EBADF);
	/* The failure did not undo any change the journal had queued: the cache holds the
	 * journal's latest image, that of the last commit that was given a sequence. */
	ck_assert_uint_gt(last_lsn, 0);
	ck_assert_uint_eq(cached_val(fs, b), last);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.commits, last);
	/* The log is dead: later commits are refused (and cancelled, exactly). */
	q = mfs_log_quiet();
	ck_assert_int_eq(tx(fs, &b, 1, 1000, 0), -EBADF);
	mfs_log_set_level(q);
	ck_assert_uint_eq(cached_val(fs, b), last);
	crash(fs);
	fs = fs_up(256, 0, NULL);
	ck_assert_uint_eq(block_val(fs, b), 1);     /* only the durable commit survived */
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/* ---- records that check out but name impossible blocks: refused whole ----------------- */
/* Point tag `k` of record `i` (of five_and_crash) at `fsb`, re-sealing what covers it. */
static void forge_tag(unsigned i, unsigned k, uint64_t fsb)
{
	static char rec[4][BS];
	struct mfs_jdesc *d = (struct mfs_jdesc *)rec[0];
	struct mfs_jtag *t = (struct mfs_jtag *)(d + 1);
	struct mfs_jcommit *c = (struct mfs_jcommit *)rec[3];

	for (unsigned b = 0; b < 4; b++)
		raw_read(REC_BLK(i, b), rec[b]);
	mfs_put64(t[k].fsblock, fsb);
	mfs_blk_seal(d, BS);
	mfs_put32(c->data_crc, mfs_crc32c(0, rec, 3 * BS));
	mfs_blk_seal(c, BS);
	raw_write(REC_BLK(i, 0), rec[0]);
	raw_write(REC_BLK(i, 3), rec[3]);
}

START_TEST(replay_refuses_bad_tags)
{
	/* An image tag pointed at: an AG header, a superblock, a free list (not of that
	 * kind), inside the log, past the end of the filesystem. */
	static const uint64_t bad[] = { 1, 0, 2, LOGSTART + 40, DBLOCKS + 5, UINT64_MAX };

	for (unsigned c = 0; c < sizeof(bad) / sizeof(bad[0]); c++) {
		struct mfs_journal_info info;
		struct mfs_fs *fs;
		int jerr, q;

		five_and_crash();
		forge_tag(4, 1, bad[c]);
		q = mfs_log_quiet();
		fs = fs_up(256, 0, &jerr);
		ck_assert_int_eq(jerr, -EFSCORRUPTED);
		ck_assert_int_eq(mfs_journal_peek(fs, &info), -EFSCORRUPTED);
		mfs_log_set_level(q);
		ck_assert_ptr_null(fs->log);
		/* Nothing applied, not even the good records before the bad one. */
		ck_assert(raw_zero(200));
		ck_assert(raw_zero(bad[c] < DBLOCKS ? bad[c] : 201));
		ck_assert_int_eq(mfs_fs_close(fs), 0);
		teardown();
		setup();
	}
}
END_TEST

START_TEST(replay_fixed_blocks)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	struct mfs_blk_expect e;
	struct mfs_trans *tp;
	struct mfs_buf *bp;
	uint64_t b = 1900, v;
	char buf[BS];
	int jerr, q;

	/* A real AG header logged at agbno 1 is replayed like any metadata block. */
	ck_assert_int_eq(tx(fs, &b, 1, 9, 1), 0);
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	ck_assert_int_eq(mfs_trans_get_new(tp, MFS_AGH_AGBNO, 1, &bp), 0);
	mfs_blk_init(bp->data, BS, MFS_AGH_MAGIC, MFS_AGH_AGBNO, 0, uuid);
	ck_assert_int_eq(mfs_trans_commit(tp), 0);
	crash(fs);
	fs = fs_up(256, 0, NULL);
	raw_read(MFS_AGH_AGBNO, buf);
	mfs_expect_agh(fs, 0, &e);
	ck_assert_int_eq(mfs_blk_verify(buf, BS, MFS_AGH_AGBNO, uuid, &e, 0), 0);
	ck_assert_uint_eq(block_val(fs, b), 9);

	/* A revoke of a fixed block (never freed) is corruption: refused whole. */
	ck_assert_int_eq(tx(fs, &b, 1, 10, 0), 0);
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	ck_assert_int_eq(mfs_trans_forget(tp, MFS_AGFL_AGBNO), 0);
	ck_assert_int_eq(mfs_trans_commit(tp), 0);
	crash(fs);
	q = mfs_log_quiet();
	fs = fs_up(256, 0, &jerr);
	mfs_log_set_level(q);
	ck_assert_int_eq(jerr, -EFSCORRUPTED);
	raw_read(b, buf);
	memcpy(&v, buf + PAYLOAD, sizeof(v));
	ck_assert_uint_eq(v, 9);     /* the good record before the bad one: not replayed */
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/* ---- a checkpoint racing a free never writes the old image over the block's reuse ------- */
struct race {
	struct mfs_fs *fs;
	uint64_t blkno;            /* the block to free from inside the checkpoint */
	int when;                  /* the hook's `writing` value that triggers it */
	int fired;
	pthread_t th;
	int th_err;
};

/* Free (revoke) a block in a transaction of its own, synchronous or not. */
static int free_block_flags(struct mfs_fs *fs, uint64_t blkno, unsigned flags)
{
	struct mfs_trans *tp;
	uint64_t lsn;
	int err = mfs_trans_alloc(fs, &tp);

	if (err)
		return err;
	err = mfs_trans_forget(tp, blkno);
	if (err) {
		mfs_trans_cancel(tp);
		return err;
	}
	return mfs_trans_commit_lsn(tp, flags, &lsn);
}

static int free_block(struct mfs_fs *fs, uint64_t blkno)
{
	return free_block_flags(fs, blkno, 0);
}

static void *free_main(void *arg)
{
	struct race *r = arg;

	r->th_err = free_block(r->fs, r->blkno);
	return NULL;
}

static void race_hook(void *arg, uint64_t blkno, int writing)
{
	struct race *r = arg;
	char data[BS];

	if (blkno != r->blkno || writing != r->when || r->fired++)
		return;
	if (!writing) {
		/* Chosen but not yet written: freed, committed, and reused for file data. */
		ck_assert_int_eq(free_block(r->fs, blkno), 0);
		memset(data, 0xd7, BS);
		raw_write(blkno, data);
		return;
	}
	/* Being written: a free of the block from another thread must wait for the write. */
	{
		struct mfs_journal_stats st;
		struct timespec t0, t;

		ck_assert_int_eq(pthread_create(&r->th, NULL, free_main, r), 0);
		clock_gettime(CLOCK_MONOTONIC, &t0);
		do {
			sched_yield();
			mfs_journal_get_stats(r->fs->log, &st);
			clock_gettime(CLOCK_MONOTONIC, &t);
			ck_assert_int_lt(t.tv_sec - t0.tv_sec, 20);
		} while (!st.revoke_waits);
	}
}

START_TEST(checkpoint_vs_free)
{
	for (int when = 0; when < 2; when++) {
		struct mfs_fs *fs = fs_up(256, 1, NULL);
		uint64_t b[2] = { 1700, 1701 };
		struct mfs_journal_stats st;
		struct race r = { fs, 1701, when, 0, 0, 0 };
		char data[BS], back[BS];

		ck_assert_int_eq(tx(fs, b, 2, 4, 1), 0);
		mfs_journal_set_ckpt_hook(fs->log, race_hook, &r);
		ck_assert_int_eq(mfs_journal_checkpoint(fs->log), 0);
		mfs_journal_set_ckpt_hook(fs->log, NULL, NULL);
		ck_assert_int_eq(r.fired, 1);
		mfs_journal_get_stats(fs->log, &st);
		if (when) {
			/* The free waited for the write, then committed. */
			pthread_join(r.th, NULL);
			ck_assert_int_eq(r.th_err, 0);
			ck_assert_uint_eq(st.revoke_waits, 1);
			ck_assert_uint_eq(st.blocks_checkpointed, 2);
			memset(data, 0xd7, BS);
			raw_write(1701, data);
		} else {
			/* The freed block was skipped: its reuse is intact. */
			ck_assert_uint_eq(st.blocks_checkpointed, 1);
			memset(data, 0xd7, BS);
			raw_read(1701, back);
			ck_assert(!memcmp(data, back, BS));
		}
		ck_assert_int_eq(mfs_journal_checkpoint(fs->log), 0);
		crash(fs);
		fs = fs_up(256, 0, NULL);
		raw_read(1701, back);
		ck_assert(!memcmp(data, back, BS));
		ck_assert_uint_eq(block_val(fs, 1700), 4);
		ck_assert_int_eq(mfs_fs_close(fs), 0);
		raw_read(1701, back);
		ck_assert(!memcmp(data, back, BS));
		teardown();
		setup();
	}
}
END_TEST

/* ---- a block freed during a checkpoint keeps its record in the log until the free is
 * durable (its home was never written: the tail must not pass the record) ------------ */
static void *tail_hook_fs;
static int tail_hook_fired;

static void tail_hook(void *arg, uint64_t blkno, int writing)
{
	(void)arg;
	if (blkno != 1701 || writing || tail_hook_fired++)
		return;
	/* Freed during the checkpoint (committed, not yet durable). */
	ck_assert_int_eq(free_block_flags(tail_hook_fs, blkno, MFS_TRANS_ASYNC), 0);
}

START_TEST(checkpoint_tail_vs_pending_free)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	uint64_t b[2] = { 1700, 1701 };

	ck_assert_int_eq(tx(fs, b, 2, 4, 1), 0);
	tail_hook_fs = fs;
	mfs_journal_set_ckpt_hook(fs->log, tail_hook, NULL);
	ck_assert_int_eq(mfs_journal_checkpoint(fs->log), 0);
	mfs_journal_set_ckpt_hook(fs->log, NULL, NULL);
	ck_assert_int_eq(tail_hook_fired, 1);
	/* Crash before the free is durable: 1701 is still the committed block of value 4. */
	crash(fs);
	fs = fs_up(256, 0, NULL);
	ck_assert_uint_eq(block_val(fs, 1700), 4);
	ck_assert_uint_eq(block_val(fs, 1701), 4);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/* ---- forcing a sequence never handed out is refused, not waited for ------------------- */
START_TEST(force_future_lsn)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	struct mfs_journal_stats st;
	struct mfs_trans *tp;
	uint64_t lsn;
	int q;

	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	put_block(tp, 1600, 1, 1);
	ck_assert_int_eq(mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, &lsn), 0);
	ck_assert_uint_gt(lsn, 0);
	q = mfs_log_quiet();
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, lsn + 1), -EINVAL);
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, UINT64_MAX), -EINVAL);
	mfs_log_set_level(q);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_lt(st.durable_lsn, lsn);     /* the refusal wrote nothing */
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, lsn), 0);
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, lsn - 1), 0);
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, 0), 0);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.durable_lsn, lsn);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/* ---- ordered data: flush, records, flush ---------------------------------------------- */
/*
 * The I/O the journal issues, in order, with the test's own data writes in between (what
 * the daemon does: pwrite the data, then commit the mapping).  A record may reach the log
 * only after a flush that follows every data write before its commit, and is durable only
 * after a second flush; a batch of several commits shares one pair of flushes; the
 * checkpoint writes in place, flushes, then writes the header and flushes again.
 */
#define EV_DATA 100
struct ev { int what; uint64_t blkno; uint32_t n; };
static struct ev evs[64];
static unsigned nev;

static unsigned nfill;      /* zeroes written ahead into the sparse log (log_fill) */

/* (Fills are counted apart: when they come is log_fill's subject, not ordering's.) */
static void io_hook(void *arg, enum mfs_jio what, uint64_t blkno, uint32_t n)
{
	ck_assert_ptr_eq(arg, &nev);
	ck_assert_uint_lt(nev, 64);
	if (what == MFS_JIO_LOG_FILL) {
		nfill++;
		return;
	}
	evs[nev++] = (struct ev){ (int)what, blkno, n };
}

static void data_write(struct mfs_fs *fs, uint64_t blkno)
{
	static char buf[BS];

	memset(buf, 0x5a, BS);
	ck_assert_int_eq(mfs_dev_pwrite(fs->dev, buf, BS, blkno * BS), 0);
	evs[nev++] = (struct ev){ EV_DATA, blkno, 1 };
}

/* An asynchronous commit of one new block; `nodata`: one that orders no data
 * (mfs_trans_nodata). */
static uint64_t async_tx_of(struct mfs_fs *fs, uint64_t blkno, uint64_t val, int nodata)
{
	struct mfs_trans *tp;
	uint64_t lsn;

	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	if (nodata)
		mfs_trans_nodata(tp);
	put_block(tp, blkno, val, 1);
	ck_assert_int_eq(mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, &lsn), 0);
	return lsn;
}

static uint64_t async_tx(struct mfs_fs *fs, uint64_t blkno, uint64_t val)
{
	return async_tx_of(fs, blkno, val, 0);
}

/* Events evs[at..at+2] are a batch with its first flush: flush, record, flush. */
static void expect_flushed_batch(unsigned at)
{
	ck_assert_uint_eq(nev, at + 3);
	ck_assert_int_eq(evs[at].what, MFS_JIO_FLUSH);
	ck_assert_int_eq(evs[at + 1].what, MFS_JIO_LOG_WRITE);
	ck_assert_int_eq(evs[at + 2].what, MFS_JIO_FLUSH);
}

START_TEST(ordered_flushes)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	uint64_t lsn;

	mfs_journal_set_io_hook(fs->log, io_hook, &nev);
	nev = 0;
	/* Two transactions, each after its data write, forced together. */
	data_write(fs, 400);
	async_tx(fs, 600, 1);
	data_write(fs, 401);
	lsn = async_tx(fs, 601, 2);
	ck_assert_uint_eq(nev, 2);                   /* commit does no I/O */
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, lsn), 0);
	ck_assert_uint_eq(nev, 5);
	ck_assert_int_eq(evs[2].what, MFS_JIO_FLUSH);          /* the data first */
	ck_assert_int_eq(evs[3].what, MFS_JIO_LOG_WRITE);      /* one record holds both */
	ck_assert_uint_eq(evs[3].blkno, 2);
	ck_assert_uint_eq(evs[3].n, 4);                        /* desc, 2 images, commit */
	ck_assert_int_eq(evs[4].what, MFS_JIO_FLUSH);          /* then they are durable */
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, lsn), 0);
	ck_assert_uint_eq(nev, 5);                   /* already durable: no I/O */

	/* A synchronous commit: the same three steps. */
	nev = 0;
	data_write(fs, 402);
	{
		uint64_t b = 602;

		ck_assert_int_eq(tx(fs, &b, 1, 3, 1), 0);
	}
	ck_assert_uint_eq(nev, 4);
	ck_assert_int_eq(evs[1].what, MFS_JIO_FLUSH);
	ck_assert_int_eq(evs[2].what, MFS_JIO_LOG_WRITE);
	ck_assert_uint_eq(evs[2].blkno, 6);
	ck_assert_int_eq(evs[3].what, MFS_JIO_FLUSH);

	/* Checkpoint: blocks in place, flush, header, flush. */
	nev = 0;
	ck_assert_int_eq(mfs_journal_checkpoint(fs->log), 0);
	ck_assert_uint_eq(nev, 6);
	for (unsigned i = 0; i < 3; i++) {
		ck_assert_int_eq(evs[i].what, MFS_JIO_HOME_WRITE);
		ck_assert_uint_eq(evs[i].blkno, 600 + i);
	}
	ck_assert_int_eq(evs[3].what, MFS_JIO_FLUSH);
	ck_assert_int_eq(evs[4].what, MFS_JIO_LOG_WRITE);
	ck_assert_uint_lt(evs[4].blkno, 2);                    /* a header copy */
	ck_assert_int_eq(evs[5].what, MFS_JIO_FLUSH);

	/* fsync (mfs_journal_sync): with nothing to write, one flush for the data written
	 * before it; with a record to write, the batch's own flushes serve. */
	nev = 0;
	data_write(fs, 403);
	ck_assert_int_eq(mfs_journal_sync(fs->log), 0);
	ck_assert_uint_eq(nev, 2);
	ck_assert_int_eq(evs[1].what, MFS_JIO_FLUSH);
	nev = 0;
	async_tx(fs, 603, 4);
	data_write(fs, 404);
	ck_assert_int_eq(mfs_journal_sync(fs->log), 0);
	ck_assert_uint_eq(nev, 4);
	ck_assert_int_eq(evs[1].what, MFS_JIO_FLUSH);
	ck_assert_int_eq(evs[2].what, MFS_JIO_LOG_WRITE);
	ck_assert_int_eq(evs[3].what, MFS_JIO_FLUSH);
	mfs_journal_set_io_hook(fs->log, NULL, NULL);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/*
 * The first flush of a batch is left out only when a flush that began after the batch's
 * last commit has completed.  Transaction B (with its data write) commits while batch A
 * is between its record write and its second flush (from the io hook, in the writer's
 * thread): A's second flush covers B's data, so B's batch is the record and one flush.
 * Transaction C commits after every flush has ended: its batch flushes first again.
 */
static int hook_armed;

static void io_hook_commit(void *arg, enum mfs_jio what, uint64_t blkno, uint32_t n)
{
	struct mfs_fs *fs = arg;

	io_hook(&nev, what, blkno, n);
	if (what == MFS_JIO_LOG_WRITE && hook_armed) {
		hook_armed = 0;
		data_write(fs, 411);
		async_tx(fs, 611, 2);
	}
}

/*
 * A batch of transactions that order no data (a name, an inode's attributes, a free) is
 * written without the first flush, even right after a data write: the one flush after the
 * record still covers that write for an fsync.  One such transaction joined to a record
 * with one that does order data leaves the record needing the first flush.
 */
START_TEST(nodata_no_preflush)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	struct mfs_journal_stats st;

	mfs_journal_set_io_hook(fs->log, io_hook, &nev);
	nev = 0;
	data_write(fs, 430);
	async_tx_of(fs, 630, 1, 1);
	ck_assert_int_eq(mfs_journal_sync(fs->log), 0);
	ck_assert_uint_eq(nev, 3);
	ck_assert_int_eq(evs[1].what, MFS_JIO_LOG_WRITE);
	ck_assert_int_eq(evs[2].what, MFS_JIO_FLUSH);          /* covers the data write too */

	nev = 0;
	data_write(fs, 431);
	async_tx(fs, 631, 2);
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, async_tx_of(fs, 632, 3, 1)), 0);
	expect_flushed_batch(1);
	ck_assert_uint_eq(evs[2].n, 4);                        /* one record: both joined */
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.preflushes_saved, 1);
	mfs_journal_set_io_hook(fs->log, NULL, NULL);
	crash_expect_seq(fs, 630, 3);
}
END_TEST

START_TEST(preflush_covered)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	struct mfs_journal_stats st;
	uint64_t lsn;

	mfs_journal_set_io_hook(fs->log, io_hook_commit, fs);
	nev = 0;
	hook_armed = 1;
	data_write(fs, 410);
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, async_tx(fs, 610, 1)), 0);
	ck_assert_uint_eq(nev, 5);
	ck_assert_int_eq(evs[0].what, EV_DATA);
	ck_assert_int_eq(evs[1].what, MFS_JIO_FLUSH);
	ck_assert_int_eq(evs[2].what, MFS_JIO_LOG_WRITE);      /* A's record, then B commits */
	ck_assert_int_eq(evs[3].what, EV_DATA);
	ck_assert_int_eq(evs[4].what, MFS_JIO_FLUSH);          /* A durable, B's data too */

	/* B: its record and one flush. */
	nev = 0;
	ck_assert_int_eq(mfs_journal_force(fs->log), 0);
	ck_assert_uint_eq(nev, 2);
	ck_assert_int_eq(evs[0].what, MFS_JIO_LOG_WRITE);
	ck_assert_int_eq(evs[1].what, MFS_JIO_FLUSH);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.preflushes_saved, 1);

	/* C: committed after the last flush ended: data, flush, record, flush. */
	nev = 0;
	data_write(fs, 412);
	lsn = async_tx(fs, 612, 3);
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, lsn), 0);
	expect_flushed_batch(1);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.preflushes_saved, 1);
	mfs_journal_set_io_hook(fs->log, NULL, NULL);
	crash_expect_seq(fs, 610, 3);
}
END_TEST

/*
 * fsyncs of data overwritten in place (nothing to log), from four threads at once: each
 * returns 0, none waits for ever, and they take at most one journal flush each (printed:
 * fewer when they overlapped and shared one).
 */
#define SYNC_THREADS 4
#define SYNC_EACH    100

struct syncer {
	struct mfs_fs *fs;
	unsigned t;
	int fail;
};

static void *sync_main(void *arg)
{
	struct syncer *w = arg;
	static char buf[SYNC_THREADS][BS];

	for (unsigned i = 0; i < SYNC_EACH && !w->fail; i++) {
		memset(buf[w->t], (int)i, BS);
		if (mfs_dev_pwrite(w->fs->dev, buf[w->t], BS, (420 + w->t) * (uint64_t)BS) ||
		    mfs_journal_sync(w->fs->log))
			w->fail = 1;
	}
	return NULL;
}

START_TEST(sync_shared_flush)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	struct syncer w[SYNC_THREADS];
	pthread_t th[SYNC_THREADS];
	struct mfs_journal_stats st0, st;

	mfs_journal_get_stats(fs->log, &st0);
	for (unsigned t = 0; t < SYNC_THREADS; t++) {
		w[t] = (struct syncer){ fs, t, 0 };
		ck_assert_int_eq(pthread_create(&th[t], NULL, sync_main, &w[t]), 0);
	}
	for (unsigned t = 0; t < SYNC_THREADS; t++) {
		pthread_join(th[t], NULL);
		ck_assert(!w[t].fail);
	}
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_le(st.flushes - st0.flushes, SYNC_THREADS * SYNC_EACH);
	ck_assert_uint_eq(st.writes, st0.writes);
	printf("fsync of overwritten data, %u threads: %u fsyncs, %llu flushes\n", SYNC_THREADS,
	       SYNC_THREADS * SYNC_EACH, (unsigned long long)(st.flushes - st0.flushes));
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/* ---- a failed device flush is sticky ---------------------------------------------------- */
/*
 * A flush that fails (fdatasync EIO) may have lost writes the host will not report again:
 * a later flush can succeed.  After one failed fsync's flush, every later fsync, force and
 * commit fails; no later successful flush makes the earlier writes count as durable.
 */
static int flush_fails;         /* flushes left to fail */
static unsigned flush_calls;

static int failing_flush(void *arg)
{
	(void)arg;
	flush_calls++;
	if (flush_fails) {
		flush_fails--;
		return -EIO;
	}
	return 0;
}

START_TEST(flush_error_sticky)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	struct mfs_journal_stats st0, st;
	static char buf[BS];
	uint64_t b = 1700;
	int q;

	ck_assert_int_eq(tx(fs, &b, 1, 1, 1), 0);           /* durable, flushed */
	mfs_journal_get_stats(fs->log, &st0);
	memset(buf, 0x77, BS);
	ck_assert_int_eq(mfs_dev_pwrite(fs->dev, buf, BS, 430 * (uint64_t)BS), 0);
	flush_fails = 1;
	flush_calls = 0;
	mfs_dev_set_flush_hook(fs->dev, failing_flush, NULL);
	q = mfs_log_quiet();
	/* Nothing queued: the fsync flushes the device itself, which fails. */
	ck_assert_int_eq(mfs_journal_sync(fs->log), -EIO);
	ck_assert_uint_eq(flush_calls, 1);
	ck_assert_int_eq(flush_fails, 0);                   /* the next flush would succeed */
	/* A later fsync of the same (or newer) data must not take a successful flush as
	 * making the earlier write durable: the error again, every time. */
	ck_assert_int_eq(mfs_dev_pwrite(fs->dev, buf, BS, 431 * (uint64_t)BS), 0);
	ck_assert_int_eq(mfs_journal_sync(fs->log), -EIO);
	ck_assert_int_eq(mfs_journal_sync(fs->log), -EIO);
	/* The journal stopped: commits are refused, a force of a new sequence fails. */
	ck_assert_int_eq(tx(fs, &b, 1, 2, 0), -EIO);
	{
		struct mfs_trans *tp;
		uint64_t lsn = 0;

		ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
		put_block(tp, 1701, 3, 1);
		ck_assert_int_eq(mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, &lsn), -EIO);
		ck_assert_uint_eq(lsn, 0);
	}
	ck_assert_int_eq(mfs_journal_sync(fs->log), -EIO);
	mfs_log_set_level(q);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.durable_lsn, st0.durable_lsn);
	mfs_dev_set_flush_hook(fs->dev, NULL, NULL);
	crash(fs);
	fs = fs_up(256, 0, NULL);
	ck_assert_uint_eq(block_val(fs, b), 1);             /* only the durable commit */
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/*
 * _i 0: a batch's flush failing (the force's, not an fsync's own): the same.
 * _i 1: a flush that failed outside the journal (the buffer cache's, an fsync's without a
 * journal: a device flush of its own) is the journal's too: the device's failed flush is
 * sticky (dev.c), so the journal's next flush fails and the journal stops.
 */
START_TEST(batch_flush_error_sticky)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	uint64_t b = 1710, lsn;
	int q;

	ck_assert_int_eq(tx(fs, &b, 1, 1, 1), 0);
	lsn = async_tx(fs, 1711, 2);
	flush_fails = 1;
	flush_calls = 0;
	mfs_dev_set_flush_hook(fs->dev, failing_flush, NULL);
	q = mfs_log_quiet();
	if (_i == 1) {
		ck_assert_int_eq(mfs_dev_flush(fs->dev), -EIO);
		ck_assert_int_eq(flush_fails, 0);           /* the next flush would succeed */
	}
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, lsn), -EIO);
	ck_assert_uint_ge(flush_calls, 1);
	ck_assert_int_eq(mfs_journal_sync(fs->log), -EIO);
	ck_assert_int_eq(mfs_journal_force(fs->log), -EIO);
	ck_assert_int_eq(tx(fs, &b, 1, 3, 0), -EIO);
	ck_assert_int_eq(mfs_bcache_flush(fs->bc), -EIO);
	mfs_log_set_level(q);
	mfs_dev_set_flush_hook(fs->dev, NULL, NULL);
	crash(fs);
	fs = fs_up(256, 0, NULL);
	ck_assert_uint_eq(block_val(fs, b), 1);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/* ---- the log's first lap on a sparse image ---------------------------------------------- */
/*
 * The test image is sparse and mfs_journal_format writes only the headers and the first
 * record block.  The first batch therefore writes zeroes over the free log after it in the
 * same flush pair (the whole rest of a 256-block log: less than FILL_BLOCKS), so that the
 * host file has no holes left in the log; later batches fill nothing, nor does a mount of
 * a log with no holes; and the records, filled around or not, replay.
 */
static int log_has_hole(uint32_t logblocks)
{
	int fd = open(path, O_RDONLY);
	off_t start = (off_t)(LOGSTART + MFS_JHDR_COPIES) * BS, hole;

	ck_assert_int_ge(fd, 0);
	hole = lseek(fd, start, SEEK_HOLE);
	close(fd);
	ck_assert_int_ge(hole, start);
	return hole < (off_t)(LOGSTART + logblocks) * BS;
}

START_TEST(log_fill)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	struct mfs_journal_stats st;
	unsigned i;

	ck_assert(log_has_hole(256));
	mfs_journal_set_io_hook(fs->log, io_hook, &nev);
	nev = nfill = 0;
	data_write(fs, 400);
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, async_tx(fs, 600, 1)), 0);
	ck_assert_uint_eq(nev, 4);                   /* data, flush, record, flush ... */
	ck_assert_int_eq(evs[3].what, MFS_JIO_FLUSH);
	ck_assert_uint_eq(nfill, 1);                 /* ... and one fill before the last */
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.blocks_filled, 256 - MFS_JHDR_COPIES - 3);
	ck_assert(!log_has_hole(256));

	/* Later batches: no fill. */
	nev = nfill = 0;
	for (i = 1; i < 20; i++)
		ck_assert_int_eq(mfs_journal_force_lsn(fs->log, async_tx(fs, 600 + i, i + 1)), 0);
	ck_assert_uint_eq(nfill, 0);
	mfs_journal_set_io_hook(fs->log, NULL, NULL);
	crash(fs);

	/* Replay reads the records up to the zeroes; the log has no holes: nothing to fill. */
	fs = fs_up(256, 0, NULL);
	for (i = 0; i < 20; i++)
		ck_assert_uint_eq(block_val(fs, 600 + i), i + 1);
	mfs_journal_set_io_hook(fs->log, io_hook, &nev);
	nev = nfill = 0;
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, async_tx(fs, 700, 7)), 0);
	ck_assert_uint_eq(nfill, 0);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.blocks_filled, 0);
	mfs_journal_set_io_hook(fs->log, NULL, NULL);
	crash(fs);
	fs = fs_up(256, 0, NULL);
	ck_assert_uint_eq(block_val(fs, 700), 7);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/* ---- no memory: a force and a checkpoint need none, a failed commit leaves the log alive -- */
START_TEST(nomem_not_sticky)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	uint64_t lsn, b = 610;
	struct mfs_trans *tp;

	lsn = async_tx(fs, 700, 5);
	mfs_mem_fault_arm(0, 0);                     /* every allocation fails */
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, lsn), 0);
	ck_assert_int_eq(mfs_journal_checkpoint(fs->log), 0);   /* needs none either */
	ck_assert(!raw_zero(700));
	mfs_mem_fault_disarm();
	/* A commit that cannot copy its images fails cleanly, and the next one works. */
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	put_block(tp, 701, 6, 1);
	mfs_mem_fault_arm(0, 0);
	ck_assert_int_eq(mfs_trans_commit(tp), -ENOMEM);
	mfs_mem_fault_disarm();
	ck_assert_int_eq(tx(fs, &b, 1, 7, 1), 0);
	/* Memory short for a moment: a rebuild's commit (reread) waits and tries again (two
	 * failed tries here) instead of undoing the transaction. */
	{
		uint64_t inj = mfs_mem_fault_injected();

		ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
		mfs_trans_reread(tp);
		put_block(tp, 702, 8, 1);
		mfs_mem_fault_arm(0, 2);
		ck_assert_int_eq(mfs_trans_commit(tp), 0);
		mfs_mem_fault_disarm();
		ck_assert_uint_eq(mfs_mem_fault_injected() - inj, 2);
	}
	ck_assert_int_eq(mfs_journal_checkpoint(fs->log), 0);
	crash(fs);

	fs = fs_up(256, 0, NULL);
	ck_assert_uint_eq(block_val(fs, 700), 5);
	ck_assert_uint_eq(block_val(fs, 610), 7);
	ck_assert_uint_eq(block_val(fs, 702), 8);
	ck_assert(raw_zero(701));
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/* ---- commit images: slabs reused, and released down to the pool's keep size --------- */

/* Every image free (nothing committed since the last checkpoint): all are in the slabs
 * left, and those hold at most the 256 the pool keeps. */
static void expect_images_back(struct mfs_fs *fs, struct mfs_journal_stats *st)
{
	mfs_journal_get_stats(fs->log, st);
	ck_assert_uint_ge(st->img_per_slab, 1);
	ck_assert_uint_eq(st->img_free, st->img_slabs * st->img_per_slab);
	ck_assert_uint_le(st->img_free, 256);
}

/* ---- a borrowed image (MFS_JCOMMIT_BORROW) is frozen before its buffer changes -------- */
static uint64_t raw_val(uint64_t blkno)
{
	static char buf[BS];
	uint64_t v;

	raw_read(blkno, buf);
	memcpy(&v, buf + PAYLOAD, sizeof(v));
	return v;
}

/* A rebuild-like (reread) transaction setting block `b` to `val`, committed without waiting. */
static void borrow_tx(struct mfs_fs *fs, uint64_t b, uint64_t val)
{
	struct mfs_trans *tp;
	uint64_t lsn;

	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	mfs_trans_reread(tp);
	put_block(tp, b, val, 0);
	ck_assert_int_eq(mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, &lsn), 0);
}

/* Block b's borrowed image (val, its record durable) written in place by a checkpoint
 * while an open transaction has changed the buffer (mfs_trans_modify, or `fresh`:
 * mfs_trans_get_new zeroed it): the block gets val, not the change's val + 1. */
static void borrow_ckpt(struct mfs_fs *fs, uint64_t b, uint64_t val, int fresh)
{
	struct mfs_trans *tp;

	borrow_tx(fs, b, val);
	ck_assert_int_eq(mfs_journal_force(fs->log), 0);
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	put_block(tp, b, val + 1, fresh);
	ck_assert_int_eq(mfs_journal_checkpoint(fs->log), 0);
	ck_assert_uint_eq(raw_val(b), val);
	mfs_trans_cancel(tp);
}

/* A block a sweep read in and changed itself (a rebuild's reap: mfs_bcache_sweep on while
 * its transaction commits) leaves the cache once the checkpoint has written it home; one
 * another thread changed, or a sweep changed when it was already cached, stays. */
START_TEST(sweep_changed_leaves_at_checkpoint)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	uint64_t b[3] = { 100, 101, 102 };
	struct mfs_bcache_stats bst;
	int was;

	ck_assert_int_eq(tx(fs, b, 3, 1, 1), 0);
	ck_assert_int_eq(mfs_journal_checkpoint(fs->log), 0);
	mfs_bcache_forget(fs->bc, 100);    /* clean, written home: no longer cached */
	mfs_bcache_forget(fs->bc, 101);
	mfs_bcache_get_stats(fs->bc, &bst);
	ck_assert_uint_eq(bst.nbufs, 1);              /* 102: cached before the sweep */
	was = mfs_bcache_sweep(1);
	ck_assert_int_eq(tx(fs, b, 1, 2, 0), 0);      /* 100: read and changed by the sweep */
	ck_assert_int_eq(tx(fs, b + 2, 1, 2, 0), 0);  /* 102: changed by it, cached before */
	mfs_bcache_sweep(was);
	ck_assert_int_eq(tx(fs, b + 1, 1, 2, 0), 0);  /* 101: an ordinary change */
	mfs_bcache_get_stats(fs->bc, &bst);
	ck_assert_uint_eq(bst.nbufs, 3);              /* dirty, journaled: all held */
	ck_assert_int_eq(mfs_journal_checkpoint(fs->log), 0);
	mfs_bcache_get_stats(fs->bc, &bst);
	ck_assert_uint_eq(bst.nbufs, 2);
	ck_assert_uint_eq(raw_val(100), 2);
	ck_assert_uint_eq(block_val(fs, 100), 2);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

START_TEST(borrow_frozen)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	uint64_t b[3] = { 100, 101, 102 };
	struct mfs_journal_stats st;
	struct mfs_trans *tp;

	ck_assert_int_eq(tx(fs, b, 3, 1, 1), 0);
	ck_assert_int_eq(mfs_journal_checkpoint(fs->log), 0);      /* in place, clean */
	ck_assert_uint_eq(raw_val(100), 1);

	/* The log write: a borrowed image changed before its record is written must be
	 * logged as committed (2), not as the buffer is now (3). */
	borrow_tx(fs, 100, 2);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.img_borrows, 1);
	ck_assert_uint_eq(st.img_borrowed, 1);
	ck_assert_uint_eq(st.img_freezes, 0);
	ck_assert_uint_eq(st.img_free, st.img_slabs * st.img_per_slab - 1);
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	put_block(tp, 100, 3, 0);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.img_borrowed, 0);
	ck_assert_uint_eq(st.img_freezes, 1);
	ck_assert_int_eq(mfs_journal_force(fs->log), 0);
	mfs_trans_cancel(tp);
	ck_assert_uint_eq(block_val(fs, 100), 2);

	/* The checkpoint: a borrowed image written in place after its buffer changed (the
	 * record already durable) must be written as committed (4), not as 5. */
	borrow_ckpt(fs, 101, 4, 0);

	/* Freed while its borrowed image waits for its log write: the buffer leaves the
	 * cache, the image keeps its bytes (ASan: no use after free) until written. */
	borrow_tx(fs, 102, 6);
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	ck_assert_int_eq(mfs_trans_forget(tp, 102), 0);
	ck_assert_int_eq(mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, NULL), 0);
	/* and one left borrowed at the crash: its buffer is put back before the cache goes */
	borrow_tx(fs, 100, 7);
	ck_assert_int_eq(mfs_journal_force(fs->log), 0);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.img_borrows, 4);
	ck_assert_uint_eq(st.img_borrowed, 1);
	crash(fs);

	fs = fs_up(256, 0, NULL);
	ck_assert_uint_eq(block_val(fs, 100), 7);
	ck_assert_uint_eq(block_val(fs, 101), 4);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
	ck_assert_uint_eq(raw_val(101), 4);
	ck_assert_uint_eq(raw_val(100), 7);
}
END_TEST

/*
 * A freeze waits for whatever reads the borrowed bytes: the log write of the record that
 * holds them (the image's readers) and a checkpoint writing them in place (its entry
 * busy).  A thread changes the buffer while each is under way, the hook holding it there
 * for a while: its mfs_trans_modify must return only once the write is over, and the log
 * and the home block get the committed bytes.  (Without the wait the change gets through
 * during the hook and the log holds it.)  Then mfs_trans_get_new of a block whose buffer
 * a committed image borrows freezes it before zeroing it.
 */
struct fwait {
	struct mfs_fs *fs;
	uint64_t blkno, val;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int go, done, in_write, fired, saw_in_write, err, logged;
	long hold_ms;           /* how long a hook holds the write for the change */
	int after_log;          /* fwait_io_hook holds the flush after the record's write (1)
				 * or the one before it (0) */
	struct mfs_trans *tp;
	pthread_t th;
};

static void *fwait_main(void *arg)
{
	struct mfs_blk_expect e = { TMAGIC, 0, MFS_LEVEL_ANY, "test block" };
	struct fwait *w = arg;
	struct mfs_buf *bp = NULL;
	int err;

	pthread_mutex_lock(&w->mu);
	while (!w->go)
		pthread_cond_wait(&w->cv, &w->mu);
	pthread_mutex_unlock(&w->mu);
	err = mfs_trans_alloc(w->fs, &w->tp);
	if (!err)
		err = mfs_buf_read(w->fs->bc, w->blkno, &e, &bp);
	if (!err)
		err = mfs_trans_modify(w->tp, bp);      /* the freeze: after the write */
	pthread_mutex_lock(&w->mu);
	w->saw_in_write = w->in_write;
	pthread_mutex_unlock(&w->mu);
	if (!err)
		memcpy((char *)bp->data + PAYLOAD, &w->val, sizeof(w->val));
	mfs_buf_put(bp);
	pthread_mutex_lock(&w->mu);
	w->err = err;
	w->done = 1;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* From the hooks, a write under way (the first time only): let the thread go and give its
 * change up to hold_ms to get through (a change that must wait must not: the time only
 * bounds how long the test looks for the bug; one that must not wait ends the hold). */
static void fwait_hold(struct fwait *w)
{
	struct timespec ts;

	pthread_mutex_lock(&w->mu);
	if (!w->fired++) {
		w->in_write = 1;
		w->go = 1;
		pthread_cond_broadcast(&w->cv);
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += w->hold_ms / 1000;
		ts.tv_nsec += (w->hold_ms % 1000) * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		while (!w->done && pthread_cond_timedwait(&w->cv, &w->mu, &ts) == 0)
			;
		w->in_write = 0;
	}
	pthread_mutex_unlock(&w->mu);
}

/* Holds a batch's flush: the one before its records are written (the record's commit came
 * after the checkpoint's flush: the batch needs one; its images are read next), or with
 * w->after_log the one after them. */
static void fwait_io_hook(void *arg, enum mfs_jio what, uint64_t blkno, uint32_t n)
{
	struct fwait *w = arg;

	(void)blkno;
	(void)n;
	if (what == MFS_JIO_LOG_WRITE)
		w->logged = 1;
	else if (what == MFS_JIO_FLUSH && w->logged == w->after_log)
		fwait_hold(w);
}

static void fwait_ckpt_hook(void *arg, uint64_t blkno, int writing)
{
	struct fwait *w = arg;

	if (blkno == w->blkno && writing == 1)
		fwait_hold(w);
}

static void fwait_start(struct fwait *w, struct mfs_fs *fs, uint64_t blkno, uint64_t val,
			long hold_ms)
{
	memset(w, 0, sizeof(*w));
	w->hold_ms = hold_ms;
	w->fs = fs;
	w->blkno = blkno;
	w->val = val;
	pthread_mutex_init(&w->mu, NULL);
	pthread_cond_init(&w->cv, NULL);
	ck_assert_int_eq(pthread_create(&w->th, NULL, fwait_main, w), 0);
}

/* The thread's change went through during the held write (during 1) or only after it
 * (during 0); it is then cancelled. */
static void fwait_end(struct fwait *w, int during)
{
	ck_assert_int_eq(w->fired, 1);
	pthread_join(w->th, NULL);
	ck_assert_int_eq(w->err, 0);
	ck_assert_int_eq(w->saw_in_write, during);
	mfs_trans_cancel(w->tp);
	pthread_mutex_destroy(&w->mu);
	pthread_cond_destroy(&w->cv);
}

START_TEST(borrow_freeze_waits)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	uint64_t b[3] = { 110, 111, 112 };
	struct mfs_journal_stats st;
	struct fwait w;

	ck_assert_int_eq(tx(fs, b, 3, 1, 1), 0);
	ck_assert_int_eq(mfs_journal_checkpoint(fs->log), 0);

	/* The log write of the record: the change waits for it; the log holds 2. */
	borrow_tx(fs, 110, 2);
	fwait_start(&w, fs, 110, 3, 300);
	mfs_journal_set_io_hook(fs->log, fwait_io_hook, &w);
	ck_assert_int_eq(mfs_journal_force(fs->log), 0);
	mfs_journal_set_io_hook(fs->log, NULL, NULL);
	fwait_end(&w, 0);

	/* The checkpoint's write in place: the change waits for it; the block holds 4. */
	borrow_tx(fs, 111, 4);
	ck_assert_int_eq(mfs_journal_force(fs->log), 0);
	fwait_start(&w, fs, 111, 5, 300);
	mfs_journal_set_ckpt_hook(fs->log, fwait_ckpt_hook, &w);
	ck_assert_int_eq(mfs_journal_checkpoint(fs->log), 0);
	mfs_journal_set_ckpt_hook(fs->log, NULL, NULL);
	fwait_end(&w, 0);
	ck_assert_uint_eq(raw_val(111), 4);

	/* A borrowed buffer zeroed by mfs_trans_get_new: frozen first, 6 goes in place. */
	borrow_ckpt(fs, 112, 6, 1);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.img_borrows, 3);
	ck_assert_uint_eq(st.img_borrowed, 0);
	ck_assert_uint_ge(st.img_freezes, 2);   /* 110, 112; 111 unless its checkpoint ended first */

	crash(fs);
	fs = fs_up(256, 0, NULL);
	ck_assert_uint_eq(block_val(fs, 110), 2);
	ck_assert_uint_eq(block_val(fs, 111), 4);
	ck_assert_uint_eq(block_val(fs, 112), 6);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/*
 * A freeze waits for the reading of the borrowed bytes, not for the device: once the
 * batch has written its records (the bytes are in the log), a change of the buffer must
 * not wait for the batch's flush after them (trans.c: no log I/O under the AG locks the
 * changer holds; after a rebuild's sync commit, every change of its AG header waited for
 * that whole write and flush).  The io hook holds that flush until the thread's
 * mfs_trans_modify has returned, for at most 5 s.
 */

START_TEST(borrow_freeze_no_flush_wait)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	uint64_t b = 120;
	struct fwait w;

	ck_assert_int_eq(tx(fs, &b, 1, 1, 1), 0);
	ck_assert_int_eq(mfs_journal_checkpoint(fs->log), 0);
	borrow_tx(fs, 120, 2);
	fwait_start(&w, fs, 120, 3, 5000);
	w.after_log = 1;
	mfs_journal_set_io_hook(fs->log, fwait_io_hook, &w);
	ck_assert_int_eq(mfs_journal_force(fs->log), 0);
	mfs_journal_set_io_hook(fs->log, NULL, NULL);
	fwait_end(&w, 1);                       /* through while the flush was held */
	crash(fs);
	fs = fs_up(256, 0, NULL);
	ck_assert_uint_eq(block_val(fs, 120), 2);       /* the log holds the committed bytes */
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/*
 * Commits of 600 blocks, more than the pool keeps: each allocates new slabs only for the
 * images the free ones kept do not cover, and after its checkpoint (every image free
 * again) the slabs beyond the keep size are gone.  Then a commit of 300 blocks whose
 * allocations fail one after another (the 1st, the 2nd, ...: among them a slab's, past
 * the images kept) fails with -ENOMEM each time, every image back, until one succeeds.
 */
START_TEST(image_slabs)
{
	struct mfs_fs *fs = fs_up(1024, 1, NULL);
	struct mfs_journal_stats st0, st;
	struct mfs_trans *tp;
	uint64_t blks[600], injected = 0;
	unsigned skip;
	int err;

	for (unsigned i = 0; i < 600; i++)
		blks[i] = 1000 + i;
	for (unsigned round = 0; round < 4; round++) {
		mfs_journal_get_stats(fs->log, &st0);
		ck_assert_int_eq(tx(fs, blks, 600, round + 1, round == 0), 0);
		ck_assert_int_eq(mfs_journal_checkpoint(fs->log), 0);
		mfs_journal_get_stats(fs->log, &st);
		ck_assert_uint_eq(st.img_slab_allocs - st0.img_slab_allocs,
				  (600 - st0.img_free + st.img_per_slab - 1) / st.img_per_slab);
		expect_images_back(fs, &st);
	}
	for (skip = 0, err = -ENOMEM; err; skip++) {
		ck_assert_uint_lt(skip, 2000);
		ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
		for (unsigned i = 0; i < 300; i++)
			put_block(tp, blks[i], 100 + skip, 0);
		injected = mfs_mem_fault_injected();
		mfs_mem_fault_arm(skip, 1);
		err = mfs_trans_commit(tp);
		mfs_mem_fault_disarm();
		if (err) {
			ck_assert_int_eq(err, -ENOMEM);
			ck_assert_uint_eq(mfs_mem_fault_injected(), injected + 1);
			expect_images_back(fs, &st);
		}
	}
	ck_assert_uint_eq(mfs_mem_fault_injected(), injected);
	/* 300 images, more than were kept: the commit that went through took a new slab */
	mfs_journal_get_stats(fs->log, &st0);
	ck_assert_uint_gt(st0.img_slab_allocs, st.img_slab_allocs);
	ck_assert_int_eq(mfs_journal_checkpoint(fs->log), 0);
	expect_images_back(fs, &st);
	crash(fs);

	fs = fs_up(1024, 0, NULL);
	ck_assert_uint_eq(block_val(fs, blks[0]), 100 + skip - 1);
	ck_assert_uint_eq(block_val(fs, blks[299]), 100 + skip - 1);
	ck_assert_uint_eq(block_val(fs, blks[300]), 4);
	ck_assert_uint_eq(block_val(fs, blks[599]), 4);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/* ---- forged records: anything that passes the checksums is either replayed or refused ---- */
/*
 * Random bytes written into a record's descriptor or image (header fields, counts, tags,
 * image contents), the block resealed and the commit's CRC recomputed, so the record looks
 * complete and intact: opening must either replay (0) or refuse the journal
 * (-EFSCORRUPTED), never anything else, never touch memory it should not (run under ASan),
 * and a refusal applies nothing.
 */
START_TEST(replay_forged_fuzz)
{
	uint64_t seed = tu_seed("JOURNAL_FUZZ_SEED", "check_journal forged records");
	unsigned rounds = UNDER_ASAN ? 40 : 150, refused = 0, replayed = 0;
	static char save[5 * 4][BS], hdr[2][BS], after[BS];

	tu_srand(seed);
	five_and_crash();
	for (unsigned i = 0; i < 5; i++)
		for (unsigned b = 0; b < 4; b++)
			raw_read(REC_BLK(i, b), save[i * 4 + b]);
	raw_read(LOGSTART, hdr[0]);          /* an open rewrites the header: restore it too */
	raw_read(LOGSTART + 1, hdr[1]);
	raw_read(REC_BLK(5, 0), after);
	for (unsigned r = 0; r < rounds; r++) {
		static char rec[4][BS];
		unsigned i = tu_rand_below(5), b = tu_rand_below(4) ? 0 : 1 + tu_rand_below(2);
		unsigned n = 1 + tu_rand_below(8);
		struct mfs_jcommit *c = (struct mfs_jcommit *)rec[3];
		struct mfs_fs *fs;
		int jerr, q;

		for (unsigned x = 0; x < 5 * 4; x++)
			raw_write(REC_BLK(x / 4, x % 4), save[x]);
		raw_write(LOGSTART, hdr[0]);
		raw_write(LOGSTART + 1, hdr[1]);
		raw_write(REC_BLK(5, 0), after);
		for (unsigned k = 0; k < 4; k++)
			memcpy(rec[k], save[i * 4 + k], BS);
		for (unsigned m = 0; m < n; m++) {
			/* past the block header (which would only end the log): the counts
			 * and first tags of a descriptor, or an image's bytes; now and then
			 * anywhere */
			unsigned off = MFS_JBLK_SIZE + (b == 0 ? tu_rand_below(24 + 2 * 56)
							       : tu_rand_below(BS - MFS_JBLK_SIZE));

			if (b == 0 && tu_rand_below(2))      /* a tag's block number or flags */
				off = 64 + 56 * tu_rand_below(2) + tu_rand_below(12);
			if (tu_rand_below(8) == 0)
				off = tu_rand_below(BS);

			rec[b][off] = (char)tu_rand();
		}
		mfs_blk_seal(rec[b], BS);
		mfs_put32(c->data_crc, mfs_crc32c(0, rec, 3 * BS));
		mfs_blk_seal(c, BS);
		raw_write(REC_BLK(i, b), rec[b]);
		raw_write(REC_BLK(i, 3), rec[3]);
		for (uint64_t z = 200; z < 210; z++) {
			static char zero[BS];

			raw_write(z, zero);
		}
		q = mfs_log_quiet();
		fs = fs_up(256, 0, &jerr);
		mfs_log_set_level(q);
		if (jerr == -EFSCORRUPTED) {
			refused++;
			ck_assert_ptr_null(fs->log);
			for (uint64_t z = 200; z < 210; z++)
				ck_assert(raw_zero(z));
		} else {
			ck_assert_int_eq(jerr, 0);
			replayed++;
		}
		crash(fs);
	}
	printf("check_journal forged records: %u rounds, %u refused, %u replayed\n", rounds,
	       refused, replayed);
	ck_assert_uint_gt(refused, 0);
}
END_TEST

/* ---- the log thread: the committers' I/O is its own ------------------------------------ */
/*
 * Thread-safe io hook: counts the journal's I/O by whether the test's own thread issued
 * it (`self`) or another (the log thread).
 */
struct iocount {
	pthread_mutex_t lock;
	pthread_t self;
	unsigned mine, theirs, theirs_writes;
};

static void count_hook(void *arg, enum mfs_jio what, uint64_t blkno, uint32_t n)
{
	struct iocount *c = arg;

	(void)blkno;
	(void)n;
	pthread_mutex_lock(&c->lock);
	if (pthread_equal(pthread_self(), c->self)) {
		c->mine++;
	} else {
		c->theirs++;
		c->theirs_writes += what == MFS_JIO_LOG_WRITE;
	}
	pthread_mutex_unlock(&c->lock);
}

/* Bounded polling until the log thread's counters reach `writes` and `ckpts`. */
static void wait_logd(struct mfs_fs *fs, uint64_t writes, uint64_t ckpts)
{
	struct mfs_journal_stats st;
	double t0 = tu_now();

	for (;;) {
		mfs_journal_get_stats(fs->log, &st);
		if (st.bg_writes >= writes && st.bg_checkpoints >= ckpts)
			return;
		ck_assert_msg(tu_now() - t0 < 30, "the log thread did not write (%llu of %llu "
			      "batches, %llu of %llu checkpoints)", (unsigned long long)st.bg_writes,
			      (unsigned long long)writes, (unsigned long long)st.bg_checkpoints,
			      (unsigned long long)ckpts);
		usleep(1000);
	}
}

/*
 * 150 asynchronous commits of one new block (joined into records of about ten, written
 * when their transactions would take 31 blocks unjoined: about 180 of the 254 usable, so
 * the log never runs out of room and the queue never reaches the throttle's bound): the
 * committing thread issues no I/O at all; the log thread writes batches and checkpoints
 * once half the log is in use.  A force then makes the last one durable, and a crash
 * keeps all of them.
 */
START_TEST(logd_async_no_committer_io)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	struct iocount c = { PTHREAD_MUTEX_INITIALIZER, pthread_self(), 0, 0, 0 };
	struct mfs_journal_stats st;
	uint64_t lsn = 0;

	mfs_journal_set_io_hook(fs->log, count_hook, &c);
	for (uint64_t i = 0; i < 150; i++) {
		uint64_t l = async_tx(fs, 800 + i, i + 1);

		ck_assert_uint_ge(l, lsn);
		lsn = l;
	}
	pthread_mutex_lock(&c.lock);
	ck_assert_uint_eq(c.mine, 0);
	pthread_mutex_unlock(&c.lock);
	wait_logd(fs, 1, 1);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.throttle_forces, 0);
	ck_assert_uint_eq(st.room_waits, 0);
	ck_assert_uint_ge(st.checkpoints, 1);
	ck_assert(!raw_zero(800));                  /* checkpointed in place by the thread */
	pthread_mutex_lock(&c.lock);
	ck_assert_uint_gt(c.theirs_writes, 0);
	pthread_mutex_unlock(&c.lock);

	/* A force of the last sequence: durable when it returns, whoever wrote it. */
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, lsn), 0);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_ge(st.durable_lsn, lsn);
	mfs_journal_set_io_hook(fs->log, NULL, NULL);
	crash_expect_seq(fs, 800, 150);
}
END_TEST

/*
 * Transactions joined into one record: many changes of one block are logged as one image;
 * a block logged and then freed in the same record keeps only the revoke (its later use as
 * file data survives replay), one freed and then logged again keeps only the image.
 */
START_TEST(join_open_record)
{
	/* 1024 log blocks: the log thread writes the queue once its transactions would
	 * take 127 blocks unjoined; these take about 100. */
	struct mfs_fs *fs = fs_up(1024, 1, NULL);
	struct mfs_journal_stats st0, st;
	struct mfs_trans *tp;
	uint64_t lsn, lsn0, x = 1800, y = 1801, z = 1802, old = 1803;
	char data[BS], back[BS];

	/* `old` and `y` durable in an earlier record. */
	{
		uint64_t b[2] = { old, y };

		ck_assert_int_eq(tx(fs, b, 2, 1, 1), 0);
	}
	mfs_journal_get_stats(fs->log, &st0);
	lsn0 = async_tx(fs, x, 1);
	for (uint64_t v = 2; v <= 30; v++) {
		ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
		put_block(tp, x, v, 0);
		ck_assert_int_eq(mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, &lsn), 0);
		ck_assert_uint_eq(lsn, lsn0);                   /* joined */
	}
	/* y: freed (revoke), then logged again; z: logged, then freed; old: freed. */
	ck_assert_int_eq(free_block_flags(fs, y, MFS_TRANS_ASYNC), 0);
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	put_block(tp, y, 7, 1);
	ck_assert_int_eq(mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, &lsn), 0);
	lsn = async_tx(fs, z, 8);
	ck_assert_int_eq(free_block_flags(fs, z, MFS_TRANS_ASYNC), 0);
	ck_assert_int_eq(free_block_flags(fs, old, MFS_TRANS_ASYNC), 0);
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, lsn), 0);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.commits - st0.commits, 35);
	ck_assert_uint_eq(st.joins - st0.joins, 34);
	ck_assert_uint_eq(st.writes - st0.writes, 1);
	/* one record: a descriptor, the images of x and y, a commit */
	ck_assert_uint_eq(st.blocks_logged - st0.blocks_logged, 4);
	/* z and old are file data now */
	memset(data, 0xd9, BS);
	raw_write(z, data);
	raw_write(old, data);
	crash(fs);

	fs = fs_up(1024, 0, NULL);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.replayed_records, 2);
	ck_assert_uint_eq(block_val(fs, x), 30);
	ck_assert_uint_eq(block_val(fs, y), 7);
	raw_read(z, back);
	ck_assert(!memcmp(data, back, BS));
	raw_read(old, back);
	ck_assert(!memcmp(data, back, BS));
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/* A close with records still queued (below the thread's mark) writes and checkpoints
 * them: the reopened journal is clean and empty, the blocks in place. */
START_TEST(logd_close_writes_queue)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	struct mfs_journal_stats st;
	struct mfs_journal_info info;
	uint64_t lsn = 0;

	for (uint64_t i = 0; i < 5; i++)
		lsn = async_tx(fs, 850 + i, 40 + i);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_lt(st.durable_lsn, lsn);      /* 7 blocks: below the mark, queued */
	ck_assert_int_eq(mfs_fs_close(fs), 0);
	for (uint64_t i = 0; i < 5; i++)
		ck_assert(!raw_zero(850 + i));
	fs = fs_up(256, 0, NULL);
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.replayed_records, 0);
	ck_assert_int_eq(mfs_journal_peek(fs, &info), 0);
	ck_assert_uint_eq(info.records, 0);
	for (uint64_t i = 0; i < 5; i++)
		ck_assert_uint_eq(block_val(fs, 850 + i), 40 + i);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

/*
 * Four threads of asynchronous commits on a 64-block log: the log fills over and over, so
 * committers wait for the thread's checkpoints (or run their own) while it writes batches.
 * Every thread forces its last commit; after a crash, every forced value is there.
 */
START_TEST(logd_small_log_many_threads)
{
	struct mfs_fs *fs = fs_up(64, 1, NULL);
	struct worker w[NTHREADS];
	struct mfs_journal_stats st;

	run_workers(fs, w, 8, UNDER_ASAN ? 150 : 400, 1);
	mfs_journal_get_stats(fs->log, &st);
	printf("log thread, 64-block log: %llu commits, %llu batches (%llu by the thread), "
	       "%llu checkpoints (%llu by the thread), %llu waits for room, %llu throttle "
	       "forces\n", (unsigned long long)st.commits, (unsigned long long)st.writes,
	       (unsigned long long)st.bg_writes, (unsigned long long)st.checkpoints,
	       (unsigned long long)st.bg_checkpoints, (unsigned long long)st.room_waits,
	       (unsigned long long)st.throttle_forces);
	ck_assert_uint_eq(st.commits, NTHREADS * (UNDER_ASAN ? 150 : 400));
	ck_assert_uint_gt(st.checkpoints, 1);
	ck_assert_uint_le(st.log_used, st.log_size);
	crash_check_workers(fs, 64, w);
}
END_TEST

/*
 * A big commit on a small log that small ones keep filling: every checkpoint frees room
 * that the small committers may take before the big one gets the lock back, over and over.
 * The log drains each time, so the big commit must wait and go in, never fail with
 * ENOSPC (it did when a count of its tries or wake-ups ran out at a moment without room).
 */
#define CROWD 6
static int crowd_stop;

struct crowd {
	struct mfs_fs *fs;
	uint64_t blk;
	unsigned done;
	int err;
};

static void *crowd_run(void *arg)
{
	struct crowd *c = arg;

	for (uint64_t v = 1; !__atomic_load_n(&crowd_stop, __ATOMIC_ACQUIRE); v++) {
		struct mfs_trans *tp;
		uint64_t lsn;

		c->err = mfs_trans_alloc(c->fs, &tp);
		if (c->err)
			break;
		put_block(tp, c->blk, v, v == 1);
		c->err = mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, &lsn);
		if (c->err)
			break;
		__atomic_add_fetch(&c->done, 1, __ATOMIC_RELEASE);
	}
	return NULL;
}

/*
 * The same, made certain: each time the big commit's own checkpoint has moved the tail,
 * its hook gives the small committers (woken by the move) time to fill the log again
 * before the big one looks for room.  They must not: a commit that found no room claims
 * the room its checkpoint frees, and later ones wait behind it — else it may wait for
 * ever (the checkpoint's room taken each time).  The hook fails when they took it.
 */
struct starve {
	struct mfs_fs *fs;
	pthread_t big;
	uint32_t need;          /* the big record's blocks, at least (56 images, a header) */
	unsigned ckpts;         /* the big commits' checkpoints */
};

static void starve_hook(void *arg, uint64_t blkno, int writing)
{
	struct starve *s = arg;
	struct mfs_journal_stats st;
	double t0 = tu_now();

	(void)blkno;
	if (writing != 2 || !pthread_equal(pthread_self(), s->big))
		return;
	s->ckpts++;
	do {
		mfs_journal_get_stats(s->fs->log, &st);
		ck_assert_msg(st.log_size - st.log_used >= s->need, "the room the checkpoint of "
			      "a waiting %u-block commit freed was taken by later commits "
			      "(%u of %u log blocks used)", s->need, st.log_used, st.log_size);
		usleep(1000);
	} while (tu_now() - t0 < 0.1);
}

/*
 * Six small committers on a 64-block log, then `rounds` commits of 56 blocks beside them;
 * with a starve struct, its hook watches the big commits' checkpoints.
 */
static void big_beside_crowd(unsigned rounds, struct starve *s)
{
	struct mfs_fs *fs = fs_up(64, 1, NULL);
	struct crowd c[CROWD];
	pthread_t th[CROWD];
	uint64_t big[56];
	double t0;

	for (unsigned i = 0; i < 56; i++)
		big[i] = 1200 + i;
	crowd_stop = 0;
	for (unsigned t = 0; t < CROWD; t++) {
		c[t] = (struct crowd){ .fs = fs, .blk = 1300 + t };
		ck_assert_int_eq(pthread_create(&th[t], NULL, crowd_run, &c[t]), 0);
	}
	t0 = tu_now();
	for (unsigned t = 0; t < CROWD; t++)
		while (__atomic_load_n(&c[t].done, __ATOMIC_ACQUIRE) < 20 && !c[t].err &&
		       tu_now() - t0 < 30)
			usleep(1000);
	if (s) {
		s->fs = fs;
		s->big = pthread_self();
		mfs_journal_set_ckpt_hook(fs->log, starve_hook, s);
	}
	for (uint64_t round = 1; round <= rounds; round++)
		ck_assert_int_eq(tx(fs, big, 56, round, round == 1), 0);
	__atomic_store_n(&crowd_stop, 1, __ATOMIC_RELEASE);
	for (unsigned t = 0; t < CROWD; t++) {
		ck_assert_int_eq(pthread_join(th[t], NULL), 0);
		ck_assert_int_eq(c[t].err, 0);
	}
	mfs_journal_set_ckpt_hook(fs->log, NULL, NULL);
	ck_assert_uint_eq(block_val(fs, big[55]), rounds);
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}

START_TEST(big_commit_beside_small_ones)
{
	big_beside_crowd(20, NULL);
}
END_TEST

START_TEST(big_commit_not_starved)
{
	struct starve s = { .need = 57 };

	big_beside_crowd(8, &s);
	ck_assert_uint_gt(s.ckpts, 0);          /* the hook had something to check */
}
END_TEST

/*
 * A fork (a daemon opens its filesystem, then daemonizes) leaves the child a log thread of
 * its own: commits past the thread's mark are written by it, and the close that joins it
 * returns.  The parent's thread works on.  (The child reports through its exit status:
 * 0 ok, 2 a commit failed, 3 no write by the thread, 4 the close failed.)
 */
static int commits_wake_logd(struct mfs_fs *fs, uint64_t first)
{
	struct mfs_journal_stats st;
	double t0 = tu_now();

	/* 11 three-block transactions: past the 31 blocks that wake the thread */
	for (uint64_t i = 0; i < 11; i++) {
		struct mfs_trans *tp;
		uint64_t lsn;

		if (mfs_trans_alloc(fs, &tp))
			return 2;
		put_block(tp, first + i, i + 1, 1);
		if (mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, &lsn))
			return 2;
	}
	do {
		mfs_journal_get_stats(fs->log, &st);
		if (st.bg_writes)
			return 0;
		usleep(1000);
	} while (tu_now() - t0 < 30);
	return 3;
}

START_TEST(logd_survives_fork)
{
	struct mfs_fs *fs;
	int status;
	pid_t pid;

	/* Under ASan a thread started in the forked child of a multithreaded process can
	 * stay stuck in the sanitizer's own thread start (its locks, held at the fork by
	 * another thread): not this code's to test there. */
	if (UNDER_ASAN)
		return;
	fs = fs_up(256, 1, NULL);
	fflush(NULL);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		int rc = commits_wake_logd(fs, 1900);

		if (!rc && mfs_fs_close(fs))
			rc = 4;
		_exit(rc);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	ck_assert(WIFEXITED(status));
	ck_assert_int_eq(WEXITSTATUS(status), 0);
	/* The parent's own thread (the image now holds the child's records too: the
	 * parent's log is only looked at in memory, then dropped). */
	ck_assert_int_eq(commits_wake_logd(fs, 1950), 0);
	crash(fs);
}
END_TEST

/* A write error met by the log thread is sticky: the committers learn it (a throttle of a
 * queued commit, or a refused commit), and every later commit and force returns it. */
START_TEST(logd_error_sticky)
{
	struct mfs_fs *fs = fs_up(256, 1, NULL);
	struct mfs_journal_stats st;
	uint64_t b = 1600, lsn = 0;
	int err = 0, q;

	ck_assert_int_eq(tx(fs, &b, 1, 1, 1), 0);
	dev_break(fs);
	q = mfs_log_quiet();
	/* The thread writes the queue once its transactions would take 31 log blocks
	 * unjoined: the 11th three-block commit crosses the mark; its throttle, or a later
	 * commit (refused: no sequence), may already see the thread's failure. */
	for (uint64_t i = 0; i < 40 && !err; i++) {
		struct mfs_trans *tp;
		uint64_t l;

		ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
		put_block(tp, 1610 + i, i + 1, 1);
		err = mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, &l);
		ck_assert(err == 0 || err == -EBADF);
		ck_assert(i <= 10 ? l > 0 && !(i < 10 && err) : 1);
		lsn = l ? l : lsn;
	}
	wait_logd(fs, 1, 0);    /* the thread writes the queue and fails (counted, error set) */
	mfs_journal_get_stats(fs->log, &st);
	ck_assert_uint_eq(st.bg_writes, 1);
	ck_assert_uint_eq(st.writes, 2);
	ck_assert_uint_lt(st.durable_lsn, lsn);
	ck_assert_int_eq(mfs_journal_force_lsn(fs->log, lsn), -EBADF);
	ck_assert_int_eq(mfs_journal_force(fs->log), -EBADF);
	ck_assert_int_eq(tx(fs, &b, 1, 2, 0), -EBADF);
	{
		struct mfs_trans *tp;

		ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
		put_block(tp, 1660, 9, 1);
		err = mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, &lsn);
		ck_assert_int_eq(err, -EBADF);
		ck_assert_uint_eq(lsn, 0);
	}
	mfs_log_set_level(q);
	crash(fs);
	fs = fs_up(256, 0, NULL);
	ck_assert_uint_eq(block_val(fs, b), 1);
	ck_assert(raw_zero(1610));
	ck_assert_int_eq(mfs_fs_close(fs), 0);
}
END_TEST

static Suite *journal_suite(void)
{
	Suite *s = suite_create("journal");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, replay_committed);
	tcase_add_test(tc, torn_last_record);
	tcase_add_test(tc, torn_middle_then_reuse);
	tcase_add_test(tc, wrap_with_checkpoints);
	tcase_add_test(tc, revoked_blocks);
	tcase_add_test(tc, group_commit);
	tcase_add_test(tc, flush_and_clean_close);
	tcase_add_test(tc, corrupt_header);
	tcase_add_test(tc, too_big);
	tcase_add_test(tc, force_error_after_queue);
	tcase_add_test(tc, checkpoint_vs_free);
	tcase_add_test(tc, checkpoint_tail_vs_pending_free);
	tcase_add_test(tc, replay_refuses_bad_tags);
	tcase_add_test(tc, replay_fixed_blocks);
	tcase_add_test(tc, ordered_flushes);
	tcase_add_test(tc, log_fill);
	tcase_add_test(tc, preflush_covered);
	tcase_add_test(tc, nodata_no_preflush);
	tcase_add_test(tc, sync_shared_flush);
	tcase_add_test(tc, flush_error_sticky);
	tcase_add_loop_test(tc, batch_flush_error_sticky, 0, 2);
	tcase_add_test(tc, nomem_not_sticky);
	tcase_add_test(tc, image_slabs);
	tcase_add_test(tc, sweep_changed_leaves_at_checkpoint);
	tcase_add_test(tc, borrow_frozen);
	tcase_add_test(tc, borrow_freeze_waits);
	tcase_add_test(tc, borrow_freeze_no_flush_wait);
	tcase_add_test(tc, replay_forged_fuzz);
	suite_add_tcase(s, tc);
	tc = tcase_create("logd");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, logd_async_no_committer_io);
	tcase_add_test(tc, logd_close_writes_queue);
	tcase_add_test(tc, join_open_record);
	tcase_add_test(tc, logd_survives_fork);
	tcase_add_test(tc, logd_small_log_many_threads);
	tcase_add_test(tc, big_commit_beside_small_ones);
	tcase_add_test(tc, big_commit_not_starved);
	tcase_add_test(tc, logd_error_sticky);
	suite_add_tcase(s, tc);
	/* Short timeout: the bug this guards against is an endless wait. */
	tc = tcase_create("bounded");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 5);
	tcase_add_test(tc, force_future_lsn);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(journal_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
