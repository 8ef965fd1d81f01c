/*
 * check_bcache.c — the buffer cache stays within its budget, writes dirty blocks back
 * sealed before evicting them, serves concurrent readers, and transactions over it commit
 * all their blocks or restore them exactly; a sweep's reads leave it as it was.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bcache.h"
#include "byteorder.h"
#include "dev.h"
#include "fs.h"
#include "log.h"
#include "mem.h"
#include "trans.h"
#include "verify.h"

#include "tu.h"

#define BS 4096u
static const uint8_t uuid[16] = { 9, 8, 7, 6, 5, 4, 3, 2, 1, 0, 1, 2, 3, 4, 5, 6 };
static char path[TU_PATH_MAX];
static struct mfs_dev *dev;

static void setup(void)
{
	tu_image_create(path, "mfs-bcache", 4096 * (uint64_t)BS);
	ck_assert_int_eq(mfs_dev_open(path, 0, &dev), 0);
}

static void teardown(void)
{
	mfs_dev_close(dev);
	tu_image_remove(path);
}

static struct mfs_blk_expect expect_for(uint64_t blkno)
{
	struct mfs_blk_expect e = { MFS_RMAPBT_MAGIC, blkno % 7, MFS_LEVEL_ANY, "test block" };

	return e;
}

/* Fill `n` blocks with sealed metadata blocks whose payload is their number. */
static void write_blocks(struct mfs_bcache *bc, unsigned n)
{
	for (unsigned b = 0; b < n; b++) {
		struct mfs_buf *bp;

		ck_assert_int_eq(mfs_buf_get_new(bc, b, 1, &bp), 0);
		mfs_blk_init(bp->data, BS, MFS_RMAPBT_MAGIC, b, b % 7, uuid);
		memcpy((char *)bp->data + 100, &b, sizeof(b));
		mfs_buf_mark_dirty(bp);
		mfs_buf_put(bp);
	}
}

START_TEST(budget_and_writeback)
{
	struct mfs_bcache *bc;
	struct mfs_bcache_stats st;

	ck_assert_int_eq(mfs_bcache_create(dev, BS, 64 * BS, &bc), 0);
	mfs_bcache_set_uuid(bc, uuid);
	write_blocks(bc, 1000);
	mfs_bcache_get_stats(bc, &st);
	ck_assert_uint_le(st.nbufs, 64);
	ck_assert_uint_ge(st.evictions, 1000 - 64);
	ck_assert_uint_ge(st.writes, 1000 - 64);
	ck_assert_int_eq(mfs_bcache_flush(bc), 0);
	ck_assert_int_eq(mfs_bcache_destroy(bc), 0);

	/* A new cache reads every block back, verified (so sealed with a good CRC). */
	ck_assert_int_eq(mfs_bcache_create(dev, BS, 64 * BS, &bc), 0);
	mfs_bcache_set_uuid(bc, uuid);
	for (unsigned b = 0; b < 1000; b++) {
		struct mfs_blk_expect e = expect_for(b);
		struct mfs_buf *bp;
		unsigned v;

		ck_assert_int_eq(mfs_buf_read(bc, b, &e, &bp), 0);
		memcpy(&v, (char *)bp->data + 100, sizeof(v));
		ck_assert_uint_eq(v, b);
		mfs_buf_put(bp);
	}
	mfs_bcache_get_stats(bc, &st);
	ck_assert_uint_le(st.nbufs, 64);
	ck_assert_int_eq(mfs_bcache_destroy(bc), 0);
}
END_TEST

/* Reads of a sweep (mfs_buf_read_once, or any read while mfs_bcache_sweep is on) leave the
 * cache as it was, but for what another reader wanted meanwhile or what was changed. */
static size_t nbufs_of(struct mfs_bcache *bc)
{
	struct mfs_bcache_stats st;

	mfs_bcache_get_stats(bc, &st);
	return st.nbufs;
}

static struct mfs_buf *read_once_checked(struct mfs_bcache *bc, unsigned b)
{
	struct mfs_blk_expect e = expect_for(b);
	struct mfs_buf *bp;
	unsigned v;

	ck_assert_int_eq(mfs_buf_read_once(bc, b, &e, &bp), 0);
	memcpy(&v, (char *)bp->data + 100, sizeof(v));
	ck_assert_uint_eq(v, b);
	return bp;
}

START_TEST(sweep_reads_leave_the_cache)
{
	struct mfs_blk_expect e = expect_for(50);
	struct mfs_bcache *bc;
	struct mfs_buf *bp, *bp2;

	ck_assert_int_eq(mfs_bcache_create(dev, BS, 1024 * BS, &bc), 0);
	mfs_bcache_set_uuid(bc, uuid);
	write_blocks(bc, 200);
	ck_assert_int_eq(mfs_bcache_destroy(bc), 0);
	ck_assert_int_eq(mfs_bcache_create(dev, BS, 1024 * BS, &bc), 0);
	mfs_bcache_set_uuid(bc, uuid);
	for (unsigned b = 0; b < 10; b++) {
		struct mfs_blk_expect eb = expect_for(b);

		ck_assert_int_eq(mfs_buf_read(bc, b, &eb, &bp), 0);
		mfs_buf_put(bp);
	}
	ck_assert_uint_eq(nbufs_of(bc), 10);
	/* a sweep of everything: the ten cached stay, nothing else */
	for (unsigned b = 0; b < 200; b++)
		mfs_buf_put(read_once_checked(bc, b));
	ck_assert_uint_eq(nbufs_of(bc), 10);
	/* wanted by an ordinary reader meanwhile: kept */
	bp = read_once_checked(bc, 50);
	ck_assert_int_eq(mfs_buf_read(bc, 50, &e, &bp2), 0);
	mfs_buf_put(bp);
	mfs_buf_put(bp2);
	ck_assert_uint_eq(nbufs_of(bc), 11);
	/* changed: kept, dirty */
	bp = read_once_checked(bc, 60);
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
	ck_assert_uint_eq(nbufs_of(bc), 12);
	/* held twice by the sweep: dropped at the last put only */
	bp = read_once_checked(bc, 70);
	bp2 = read_once_checked(bc, 70);
	ck_assert_ptr_eq(bp, bp2);
	mfs_buf_put(bp);
	ck_assert_uint_eq(nbufs_of(bc), 13);
	mfs_buf_put(bp2);
	ck_assert_uint_eq(nbufs_of(bc), 12);
	/* this thread in a sweep: its ordinary reads are sweep reads */
	ck_assert_int_eq(mfs_bcache_sweep(1), 0);
	e = expect_for(80);
	ck_assert_int_eq(mfs_buf_read(bc, 80, &e, &bp), 0);
	mfs_buf_put(bp);
	ck_assert_uint_eq(nbufs_of(bc), 12);
	ck_assert_int_eq(mfs_bcache_sweep(0), 1);
	ck_assert_int_eq(mfs_buf_read(bc, 80, &e, &bp), 0);
	mfs_buf_put(bp);
	ck_assert_uint_eq(nbufs_of(bc), 13);
	/* the dirty one is written back by the flush as any other */
	ck_assert_int_eq(mfs_bcache_destroy(bc), 0);
}
END_TEST

/* A block a sweep gets new (a split of a tree its transaction changes) leaves the cache once
 * the journal has written it home, as the blocks the sweep reads do; gotten outside a
 * sweep, it stays cached (a rebuild's reap would otherwise leave every split it made). */
START_TEST(sweep_new_blocks_leave_once_written_home)
{
	struct mfs_bcache *bc;
	struct mfs_buf *bp;

	ck_assert_int_eq(mfs_bcache_create(dev, BS, 1024 * BS, &bc), 0);
	mfs_bcache_set_uuid(bc, uuid);
	ck_assert_int_eq(mfs_bcache_sweep(1), 0);
	ck_assert_int_eq(mfs_buf_get_new(bc, 300, 1, &bp), 0);
	mfs_blk_init(bp->data, BS, MFS_RMAPBT_MAGIC, 300, 1, uuid);
	mfs_buf_mark_dirty_lsn(bp, 5);
	mfs_buf_put(bp);
	ck_assert_uint_eq(nbufs_of(bc), 1);          /* dirty: kept until written home */
	mfs_bcache_checkpointed(bc, 300, 5);
	ck_assert_uint_eq(nbufs_of(bc), 0);
	ck_assert_int_eq(mfs_bcache_sweep(0), 1);
	ck_assert_int_eq(mfs_buf_get_new(bc, 301, 1, &bp), 0);
	mfs_blk_init(bp->data, BS, MFS_RMAPBT_MAGIC, 301, 1, uuid);
	mfs_buf_mark_dirty_lsn(bp, 6);
	mfs_buf_put(bp);
	mfs_bcache_checkpointed(bc, 301, 6);
	ck_assert_uint_eq(nbufs_of(bc), 1);
	ck_assert_int_eq(mfs_bcache_destroy(bc), 0);
}
END_TEST

struct reader_arg {
	struct mfs_bcache *bc;
	unsigned seed;
	int errors;
};

static void *reader(void *p)
{
	struct reader_arg *a = p;

	for (int i = 0; i < 20000; i++) {
		unsigned b = (unsigned)rand_r(&a->seed) % 512, v;
		struct mfs_blk_expect e = expect_for(b);
		struct mfs_buf *bp;

		if (mfs_buf_read(a->bc, b, &e, &bp)) {
			a->errors++;
			continue;
		}
		memcpy(&v, (char *)bp->data + 100, sizeof(v));
		if (v != b)
			a->errors++;
		mfs_buf_put(bp);
	}
	return NULL;
}

START_TEST(concurrent_readers)
{
	struct mfs_bcache *bc;
	pthread_t th[4];
	struct reader_arg args[4];

	ck_assert_int_eq(mfs_bcache_create(dev, BS, 128 * BS, &bc), 0);
	mfs_bcache_set_uuid(bc, uuid);
	write_blocks(bc, 512);
	ck_assert_int_eq(mfs_bcache_flush(bc), 0);
	for (int i = 0; i < 4; i++) {
		args[i] = (struct reader_arg){ bc, (unsigned)i + 1, 0 };
		ck_assert_int_eq(pthread_create(&th[i], NULL, reader, &args[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(th[i], NULL);
		ck_assert_int_eq(args[i].errors, 0);
	}
	ck_assert_int_eq(mfs_bcache_destroy(bc), 0);
}
END_TEST

static struct mfs_fs *make_fs(void)
{
	struct mfs_geom g;
	struct mfs_fs *fs;

	tu_geom(&g, BS, 1024, 4, 4096, uuid);
	ck_assert_int_eq(mfs_fs_create(dev, &g, 1 << 20, &fs), 0);
	return fs;
}

/* Close the handle but keep the test's device open. */
static void drop_fs(struct mfs_fs *fs)
{
	ck_assert_int_eq(mfs_bcache_destroy(fs->bc), 0);
	fs->bc = NULL;
	free(fs->ag);
	free(fs);
}

START_TEST(trans_cancel_restores_exactly)
{
	struct mfs_fs *fs = make_fs();
	struct mfs_trans *tp;
	struct mfs_buf *bp, *nbp;
	struct mfs_bcache_stats before, after;
	unsigned char saved[BS];
	struct mfs_blk_expect e = expect_for(5);

	write_blocks(fs->bc, 10);
	ck_assert_int_eq(mfs_bcache_flush(fs->bc), 0);
	ck_assert_int_eq(mfs_buf_read(fs->bc, 5, &e, &bp), 0);
	memcpy(saved, bp->data, BS);
	mfs_bcache_get_stats(fs->bc, &before);

	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	ck_assert_int_eq(mfs_trans_modify(tp, bp), 0);
	memset((char *)bp->data + 64, 0x5a, 1000);
	ck_assert_int_eq(mfs_trans_modify(tp, bp), 0);     /* idempotent */
	memset((char *)bp->data + 2000, 0xa5, 1000);
	ck_assert_int_eq(mfs_trans_get_new(tp, 100, 1, &nbp), 0);
	mfs_blk_init(nbp->data, BS, MFS_RMAPBT_MAGIC, 100, 2, uuid);
	ck_assert_int_eq(mfs_trans_lock_ag(tp, 1, 0), 0);
	mfs_trans_cancel(tp);

	ck_assert_mem_eq(bp->data, saved, BS);
	ck_assert(!mfs_buf_is_dirty(bp));
	mfs_bcache_get_stats(fs->bc, &after);
	ck_assert_uint_eq(after.ndirty, before.ndirty);
	ck_assert_uint_eq(after.nbufs, before.nbufs);   /* the new block was dropped */
	/* The AG lock was released. */
	ck_assert_int_eq(pthread_mutex_trylock(&fs->ag[1].lock), 0);
	pthread_mutex_unlock(&fs->ag[1].lock);
	mfs_buf_put(bp);
	drop_fs(fs);
}
END_TEST

START_TEST(trans_commit_dirties_and_forgets)
{
	struct mfs_fs *fs = make_fs();
	struct mfs_trans *tp;
	struct mfs_buf *bp, *nbp;
	struct mfs_blk_expect e3 = expect_for(3), e4 = expect_for(4);
	unsigned char raw[BS];
	int fd;

	write_blocks(fs->bc, 10);
	ck_assert_int_eq(mfs_bcache_flush(fs->bc), 0);
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	ck_assert_int_eq(mfs_buf_read(fs->bc, 3, &e3, &bp), 0);
	ck_assert_int_eq(mfs_trans_modify(tp, bp), 0);
	memset((char *)bp->data + 64, 0x77, 16);
	mfs_buf_put(bp);     /* the transaction holds its own reference */
	ck_assert_int_eq(mfs_trans_get_new(tp, 200, 1, &nbp), 0);
	mfs_blk_init(nbp->data, BS, MFS_RMAPBT_MAGIC, 200, 200 % 7, uuid);
	/* Block 4 is freed: changed, then forgotten; it must never reach the disk. */
	ck_assert_int_eq(mfs_buf_read(fs->bc, 4, &e4, &bp), 0);
	ck_assert_int_eq(mfs_trans_modify(tp, bp), 0);
	memset((char *)bp->data + 64, 0x99, 16);
	mfs_buf_put(bp);
	ck_assert_int_eq(mfs_trans_forget(tp, 4), 0);
	ck_assert_uint_eq(mfs_trans_nbufs(tp), 3);
	ck_assert_int_eq(mfs_trans_commit(tp), 0);
	ck_assert_int_eq(mfs_bcache_flush(fs->bc), 0);

	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, raw, BS, 3 * (off_t)BS), BS);
	ck_assert_uint_eq(raw[64], 0x77);
	ck_assert(mfs_blk_crc_ok(raw, BS));
	ck_assert_int_eq(pread(fd, raw, BS, 200 * (off_t)BS), BS);
	ck_assert(mfs_blk_crc_ok(raw, BS));
	ck_assert_uint_eq(mfs_get64(((struct mfs_blkhdr *)raw)->blkno), 200);
	ck_assert_int_eq(pread(fd, raw, BS, 4 * (off_t)BS), BS);
	ck_assert_uint_ne(raw[64], 0x99);
	close(fd);
	drop_fs(fs);
}
END_TEST

START_TEST(trans_ag_lock_order)
{
	struct mfs_fs *fs = make_fs();
	struct mfs_trans *tp, *tp2;

	mfs_log_quiet();
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	ck_assert_int_eq(mfs_trans_lock_ag(tp, 2, 0), 0);
	ck_assert_int_eq(mfs_trans_lock_ag(tp, 1, 0), -EDEADLK);   /* out of order */
	ck_assert_int_eq(mfs_trans_lock_ag(tp, 1, 1), 0);          /* trylock is allowed */
	ck_assert(mfs_trans_holds_ag(tp, 1) && mfs_trans_holds_ag(tp, 2));
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp2), 0);
	ck_assert_int_eq(mfs_trans_lock_ag(tp2, 2, 1), -EDEADLK);  /* busy */
	ck_assert_int_eq(mfs_trans_lock_ag(tp2, 9, 0), -EINVAL);
	ck_assert_int_eq(mfs_trans_commit(tp), 0);
	ck_assert_int_eq(mfs_trans_lock_ag(tp2, 2, 1), 0);
	mfs_trans_cancel(tp2);
	drop_fs(fs);
}
END_TEST

/* A roll commits and hands the AG locks to the next transaction: nobody else gets the AG in
 * between, and the last commit releases it. */
START_TEST(trans_roll_keeps_locks)
{
	struct mfs_fs *fs = make_fs();
	struct mfs_trans *tp, *tp2;
	struct mfs_buf *bp;

	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	ck_assert_int_eq(mfs_trans_lock_ag(tp, 2, 0), 0);
	ck_assert_int_eq(mfs_buf_read(fs->bc, 40, NULL, &bp), 0);
	ck_assert_int_eq(mfs_trans_modify(tp, bp), 0);
	memset(bp->data, 0x5a, BS);
	mfs_buf_put(bp);
	ck_assert_int_eq(mfs_trans_roll(&tp, 0), 0);
	ck_assert_ptr_nonnull(tp);
	ck_assert(mfs_trans_holds_ag(tp, 2));
	ck_assert_uint_eq(mfs_trans_nbufs(tp), 0);
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp2), 0);
	ck_assert_int_eq(mfs_trans_lock_ag(tp2, 2, 1), -EDEADLK);  /* still held */
	/* the first link is committed: a cancel of the second leaves it */
	mfs_trans_cancel(tp);
	ck_assert_int_eq(mfs_buf_read(fs->bc, 40, NULL, &bp), 0);
	ck_assert_uint_eq(((unsigned char *)bp->data)[7], 0x5a);
	mfs_buf_put(bp);
	ck_assert_int_eq(mfs_trans_lock_ag(tp2, 2, 1), 0);
	mfs_trans_cancel(tp2);
	drop_fs(fs);
}
END_TEST

/* Review item: a held buffer whose block is forgotten must never be written, even if its
 * holder marks it dirty afterwards, and its last put must not leave it on the dirty list
 * (ASan catches the use-after-free this used to cause in flush). */
START_TEST(forgotten_buffer_never_written)
{
	struct mfs_bcache *bc;
	struct mfs_buf *bp;
	struct mfs_bcache_stats st;
	unsigned char raw[BS];
	int fd;

	ck_assert_int_eq(mfs_bcache_create(dev, BS, 64 * BS, &bc), 0);
	mfs_bcache_set_uuid(bc, uuid);
	write_blocks(bc, 8);
	ck_assert_int_eq(mfs_bcache_flush(bc), 0);
	ck_assert_int_eq(mfs_buf_get_new(bc, 5, 1, &bp), 0);
	mfs_bcache_forget(bc, 5);
	memset(bp->data, 0xee, BS);
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
	mfs_bcache_get_stats(bc, &st);
	ck_assert_uint_eq(st.ndirty, 0);
	ck_assert_int_eq(mfs_bcache_flush(bc), 0);
	ck_assert_int_eq(mfs_bcache_destroy(bc), 0);
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, raw, BS, 5 * (off_t)BS), BS);
	close(fd);
	ck_assert_uint_ne(raw[200], 0xee);
}
END_TEST

/*
 * A failed device flush under the cache is sticky: the host may drop the writes it could
 * not make durable and report the next flush as a success, so every later cache flush
 * (and anybody's device flush) fails too: nothing written before the failure is ever
 * taken as durable.
 */
static int flush_fails;

static int failing_flush(void *arg)
{
	(void)arg;
	if (flush_fails) {
		flush_fails--;
		return -EIO;
	}
	return 0;
}

START_TEST(flush_error_sticky)
{
	struct mfs_bcache *bc;
	int q = mfs_log_quiet();

	ck_assert_int_eq(mfs_bcache_create(dev, BS, 64 * BS, &bc), 0);
	mfs_bcache_set_uuid(bc, uuid);
	write_blocks(bc, 8);
	flush_fails = 1;
	mfs_dev_set_flush_hook(dev, failing_flush, NULL);
	ck_assert_int_eq(mfs_bcache_flush(bc), -EIO);
	ck_assert_int_eq(flush_fails, 0);               /* the next fdatasync would succeed */
	write_blocks(bc, 4);
	ck_assert_int_eq(mfs_bcache_flush(bc), -EIO);
	ck_assert_int_eq(mfs_bcache_flush(bc), -EIO);
	ck_assert_int_eq(mfs_dev_flush(dev), -EIO);
	ck_assert_int_eq(mfs_bcache_destroy(bc), -EIO);
	mfs_dev_set_flush_hook(dev, NULL, NULL);
	mfs_log_set_level(q);
}
END_TEST

/*
 * A flush that overlapped a failed one fails too, even when it ends first: the host
 * reports a writeback error to one fdatasync() only, so the other may see a success for
 * writes that were lost.  Flush A fails, and is slow to tell (its hook holds the failure
 * until flush B has returned, or for a bounded while); B, issued while A was in flight,
 * must not return 0.
 */
static pthread_t slow_thread;
static int slow_in, b_done;

static int slow_failing_flush(void *arg)
{
	double t0 = tu_now();

	(void)arg;
	if (!pthread_equal(pthread_self(), slow_thread))
		return 0;
	__atomic_store_n(&slow_in, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&b_done, __ATOMIC_ACQUIRE) && tu_now() - t0 < 0.5)
		usleep(1000);
	return -EIO;
}

static void *slow_flush_main(void *arg)
{
	(void)arg;
	return (void *)(intptr_t)mfs_dev_flush(dev);
}

START_TEST(flush_overlapping_failure)
{
	int q = mfs_log_quiet(), b;
	void *a;

	slow_in = b_done = 0;
	mfs_dev_set_flush_hook(dev, slow_failing_flush, NULL);
	ck_assert_int_eq(pthread_create(&slow_thread, NULL, slow_flush_main, NULL), 0);
	while (!__atomic_load_n(&slow_in, __ATOMIC_ACQUIRE))
		usleep(1000);
	b = mfs_dev_flush(dev);
	__atomic_store_n(&b_done, 1, __ATOMIC_RELEASE);
	ck_assert_int_eq(pthread_join(slow_thread, &a), 0);
	ck_assert_int_eq((int)(intptr_t)a, -EIO);
	ck_assert_int_eq(b, -EIO);
	ck_assert_int_eq(mfs_dev_flush(dev), -EIO);
	mfs_dev_set_flush_hook(dev, NULL, NULL);
	mfs_log_set_level(q);
}
END_TEST

/* Review item: a block freed and then reused inside one transaction comes back exactly
 * (bytes and "is metadata") when the transaction is cancelled. */
START_TEST(trans_cancel_after_forget_and_reuse)
{
	struct mfs_fs *fs = make_fs();
	struct mfs_trans *tp;
	struct mfs_buf *bp, *nbp;
	struct mfs_blk_expect e = expect_for(6);
	unsigned char before[BS], raw[BS];
	int fd;

	write_blocks(fs->bc, 10);
	ck_assert_int_eq(mfs_bcache_flush(fs->bc), 0);
	/* Transaction 1 changes block 6 and commits: live only in the cache. */
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	ck_assert_int_eq(mfs_buf_read(fs->bc, 6, &e, &bp), 0);
	ck_assert_int_eq(mfs_trans_modify(tp, bp), 0);
	memset((char *)bp->data + 64, 0xab, 64);
	mfs_buf_put(bp);
	ck_assert_int_eq(mfs_trans_commit(tp), 0);
	ck_assert_int_eq(mfs_buf_read(fs->bc, 6, &e, &bp), 0);
	memcpy(before, bp->data, BS);
	mfs_buf_put(bp);

	/* Transaction 2 frees it, reuses it as a data block, and is cancelled. */
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	ck_assert_int_eq(mfs_trans_forget(tp, 6), 0);
	ck_assert_int_eq(mfs_trans_get_new(tp, 6, 0, &nbp), 0);
	memset(nbp->data, 0x11, BS);
	mfs_trans_cancel(tp);

	ck_assert_int_eq(mfs_buf_read(fs->bc, 6, &e, &bp), 0);
	ck_assert_mem_eq(bp->data, before, BS);
	ck_assert(mfs_buf_is_meta(bp));
	mfs_buf_put(bp);
	/* Written back sealed: the committed change of transaction 1 reaches the disk. */
	ck_assert_int_eq(mfs_bcache_flush(fs->bc), 0);
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, raw, BS, 6 * (off_t)BS), BS);
	close(fd);
	ck_assert_uint_eq(raw[64], 0xab);
	ck_assert(mfs_blk_crc_ok(raw, BS));
	drop_fs(fs);
}
END_TEST

/* mfs_trans_reread: a clean block is joined without a copy and a cancel reads it back from
 * the device; a dirty one (a committed change not yet written) is copied as always, or its
 * cancel would bring back the device's older bytes; a read error at the cancel drops the
 * buffer rather than leave the transaction's change in the cache. */
START_TEST(trans_reread_cancel)
{
	struct mfs_fs *fs = make_fs();
	struct mfs_trans *tp;
	struct mfs_buf *bp, *bp5, *bp7, *bp8;
	struct mfs_blk_expect e5 = expect_for(5), e7 = expect_for(7), e8 = expect_for(8);
	unsigned char raw5[BS], dirty7[BS];
	int fd, q;

	write_blocks(fs->bc, 10);
	ck_assert_int_eq(mfs_bcache_flush(fs->bc), 0);
	/* block 7 changed by a committed transaction: dirty, the device holds the old bytes */
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	ck_assert_int_eq(mfs_buf_read(fs->bc, 7, &e7, &bp), 0);
	ck_assert_int_eq(mfs_trans_modify(tp, bp), 0);
	memset((char *)bp->data + 64, 0xab, 64);
	mfs_buf_put(bp);
	ck_assert_int_eq(mfs_trans_commit(tp), 0);

	ck_assert_int_eq(mfs_buf_read(fs->bc, 5, &e5, &bp5), 0);
	ck_assert_int_eq(mfs_buf_read(fs->bc, 7, &e7, &bp7), 0);
	ck_assert(mfs_buf_is_clean(bp5));
	ck_assert(!mfs_buf_is_clean(bp7));
	memcpy(dirty7, bp7->data, BS);
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pread(fd, raw5, BS, 5 * (off_t)BS), BS);
	close(fd);

	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	mfs_trans_reread(tp);
	ck_assert_int_eq(mfs_trans_modify(tp, bp7), 0);       /* dirty: copied */
	/* the clean block needs no memory beyond the item the dirty one made room for */
	mfs_mem_fault_arm(0, 0);
	ck_assert_int_eq(mfs_trans_modify(tp, bp5), 0);
	mfs_mem_fault_disarm();
	memset((char *)bp5->data + 64, 0x5a, 1000);
	memset((char *)bp7->data + 64, 0x5a, 1000);
	mfs_trans_cancel(tp);
	ck_assert_mem_eq(bp5->data, raw5, BS);
	ck_assert_mem_eq(bp7->data, dirty7, BS);
	ck_assert(mfs_buf_is_dirty(bp7));
	ck_assert(mfs_buf_is_meta(bp5));
	mfs_buf_put(bp5);
	mfs_buf_put(bp7);
	/* without mfs_trans_reread a clean block is copied: the same join fails without
	 * memory (what the check above would not tell apart) */
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	ck_assert_int_eq(mfs_buf_read(fs->bc, 7, &e7, &bp7), 0);
	ck_assert_int_eq(mfs_buf_read(fs->bc, 5, &e5, &bp5), 0);
	ck_assert_int_eq(mfs_trans_modify(tp, bp7), 0);
	mfs_mem_fault_arm(0, 0);
	ck_assert_int_eq(mfs_trans_modify(tp, bp5), -ENOMEM);
	mfs_mem_fault_disarm();
	mfs_trans_cancel(tp);
	mfs_buf_put(bp5);
	mfs_buf_put(bp7);

	/* the device cannot give block 8 back at the cancel: its buffer leaves the cache */
	q = mfs_log_quiet();
	ck_assert_int_eq(mfs_buf_read(fs->bc, 8, &e8, &bp8), 0);
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	mfs_trans_reread(tp);
	ck_assert_int_eq(mfs_trans_modify(tp, bp8), 0);
	memset((char *)bp8->data + 64, 0x5a, 1000);
	mfs_buf_put(bp8);
	ck_assert_int_eq(truncate(path, 8 * (off_t)BS), 0);
	mfs_trans_cancel(tp);
	mfs_log_set_level(q);
	ck_assert_int_eq(truncate(path, 4096 * (off_t)BS), 0);
	/* read from the device again (what is there now), not kept from the failed read */
	memset(raw5, 0x33, BS);
	fd = open(path, O_WRONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, raw5, BS, 8 * (off_t)BS), BS);
	close(fd);
	ck_assert_int_eq(mfs_buf_read(fs->bc, 8, NULL, &bp8), 0);
	ck_assert_mem_eq(bp8->data, raw5, BS);
	mfs_buf_put(bp8);
	drop_fs(fs);
}
END_TEST


/* After a cancel, a block joined clean holds the device's bytes again (trans_reread); if the
 * device's copy no longer passes the verifier (changed underneath the cache: a
 * cross-linked file write, a medium error, a bit flip), the cache must not hand those bytes
 * out as verified: a verified read either returns the bytes that were verified or fails. */
START_TEST(trans_reread_unverified)
{
	struct mfs_fs *fs = make_fs();
	struct mfs_trans *tp;
	struct mfs_buf *bp;
	struct mfs_blk_expect e5 = expect_for(5);
	unsigned char good[BS], bad[BS];
	int fd, err;

	write_blocks(fs->bc, 10);
	ck_assert_int_eq(mfs_bcache_flush(fs->bc), 0);
	ck_assert_int_eq(mfs_buf_read(fs->bc, 5, &e5, &bp), 0);    /* verified, clean */
	memcpy(good, bp->data, BS);
	/* the device's copy changes underneath: one payload byte (its CRC now fails) */
	memcpy(bad, good, BS);
	bad[200] ^= 0x40;
	fd = open(path, O_WRONLY);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, bad, BS, 5 * (off_t)BS), BS);
	close(fd);

	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	mfs_trans_reread(tp);
	ck_assert_int_eq(mfs_trans_modify(tp, bp), 0);
	memset((char *)bp->data + 64, 0x5a, 100);
	mfs_buf_put(bp);
	mfs_trans_cancel(tp);

	err = mfs_buf_read(fs->bc, 5, &e5, &bp);
	if (!err) {
		ck_assert_msg(!memcmp(bp->data, good, BS), "block 5: bytes that fail their CRC "
			      "handed out as verified after the cancel");
		mfs_buf_put(bp);
	} else {
		ck_assert(err == -EFSCORRUPTED || err == -EFSBADCRC);
	}
	drop_fs(fs);
}
END_TEST

/* Blocks freed without being joined are a set of their own (trans.c, fset): 200 blocks
 * changed by a committed transaction (dirty), then freed by a second one that joins every
 * third again, and frees some twice.  At its commit the freed ones are dropped unwritten
 * and the re-joined ones written: each block leaves the set exactly when joined, however
 * the set's probe runs were shifted by the removals before it. */
START_TEST(trans_forget_set)
{
	struct mfs_fs *fs = make_fs();
	struct mfs_trans *tp;
	struct mfs_buf *bp;
	unsigned char raw[BS];
	uint64_t nimg, nrev;
	unsigned rejoined = 0;
	int fd;

	write_blocks(fs->bc, 210);
	ck_assert_int_eq(mfs_bcache_flush(fs->bc), 0);
	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	for (unsigned b = 10; b < 210; b++) {
		struct mfs_blk_expect e = expect_for(b);

		ck_assert_int_eq(mfs_buf_read(fs->bc, b, &e, &bp), 0);
		ck_assert_int_eq(mfs_trans_modify(tp, bp), 0);
		memset((char *)bp->data + 64, 0xab, 16);
		mfs_buf_put(bp);
	}
	ck_assert_int_eq(mfs_trans_commit(tp), 0);

	ck_assert_int_eq(mfs_trans_alloc(fs, &tp), 0);
	for (unsigned k = 0; k < 200; k++)       /* a scattered order */
		ck_assert_int_eq(mfs_trans_forget(tp, 10 + (k * 77) % 200), 0);
	ck_assert_uint_eq(mfs_trans_nbufs(tp), 200);
	for (unsigned b = 10; b < 210; b += 3) {
		struct mfs_blk_expect e = expect_for(b);

		ck_assert_int_eq(mfs_buf_read(fs->bc, b, &e, &bp), 0);
		ck_assert_int_eq(mfs_trans_modify(tp, bp), 0);
		memset((char *)bp->data + 64, 0xcd, 16);
		mfs_buf_put(bp);
		rejoined++;
	}
	for (unsigned b = 11; b < 210; b += 3)
		ck_assert_int_eq(mfs_trans_forget(tp, b), 0);   /* again: no change */
	ck_assert_uint_eq(mfs_trans_nbufs(tp), 200);
	mfs_trans_log_size(tp, &nimg, &nrev);
	ck_assert_uint_eq(nimg, rejoined);
	ck_assert_uint_eq(nrev, 200 - rejoined);
	ck_assert_int_eq(mfs_trans_ordered_write(tp, 11, raw, 0), -EINVAL);
	ck_assert_int_eq(mfs_trans_commit(tp), 0);
	ck_assert_int_eq(mfs_bcache_flush(fs->bc), 0);

	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	for (unsigned b = 10; b < 210; b++) {
		ck_assert_int_eq(pread(fd, raw, BS, b * (off_t)BS), BS);
		ck_assert_msg(raw[64] == ((b - 10) % 3 ? 0 : 0xcd), "block %u: %#x on disk", b,
			      raw[64]);
	}
	close(fd);
	drop_fs(fs);
}
END_TEST

/* ---- the hash table and the write-back outside the lock ---------------------------------- */

/* A block's body for version `v`: its number, the version, and a pattern over the rest,
 * so a torn or stale image is told apart from the right one. */
static void fill_version(void *data, unsigned blkno, unsigned v)
{
	unsigned char *p = data;

	memcpy(p + 100, &blkno, sizeof(blkno));
	memcpy(p + 104, &v, sizeof(v));
	memset(p + 128, (int)((v * 7 + blkno) & 0xff), BS - 128);
}

/* 0 when `data` is block `blkno` at version `v` (sealed header checked elsewhere). */
static int check_version(const void *data, unsigned blkno, unsigned v)
{
	const unsigned char *p = data;
	unsigned b, ver;

	memcpy(&b, p + 100, sizeof(b));
	memcpy(&ver, p + 104, sizeof(ver));
	if (b != blkno || ver != v)
		return -1;
	for (unsigned i = 128; i < BS; i++)
		if (p[i] != ((v * 7 + blkno) & 0xff))
			return -1;
	return 0;
}

static void new_version(struct mfs_bcache *bc, unsigned blkno, unsigned v)
{
	struct mfs_buf *bp;

	ck_assert_int_eq(mfs_buf_get_new(bc, blkno, 1, &bp), 0);
	mfs_blk_init(bp->data, BS, MFS_RMAPBT_MAGIC, blkno, blkno % 7, uuid);
	fill_version(bp->data, blkno, v);
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
}

/* Every block on the device holds its model version, with a good CRC. */
static void check_disk(unsigned first, unsigned n, const unsigned *model)
{
	unsigned char *raw = malloc(BS);
	int fd = open(path, O_RDONLY);

	ck_assert_ptr_nonnull(raw);
	ck_assert_int_ge(fd, 0);
	for (unsigned b = first; b < first + n; b++) {
		ck_assert_int_eq(pread(fd, raw, BS, b * (off_t)BS), BS);
		ck_assert_msg(mfs_blk_crc_ok(raw, BS), "block %u: bad CRC on disk", b);
		ck_assert_msg(check_version(raw, b, model[b - first]) == 0,
			      "block %u: not version %u on disk", b, model[b - first]);
	}
	close(fd);
	free(raw);
}

/* Many shards, each table growing and losing entries (backward-shift deletion): every
 * lookup still finds its own block, changed or not, cached or written back and re-read. */
START_TEST(hash_churn)
{
	enum { NBLK = 2048 };
	struct mfs_bcache *bc;
	struct mfs_bcache_stats st;
	static unsigned model[NBLK];
	unsigned seed = 42;

	ck_assert_int_eq(mfs_bcache_create(dev, BS, 1024 * BS, &bc), 0);
	mfs_bcache_set_uuid(bc, uuid);
	for (unsigned b = 0; b < NBLK; b++) {
		model[b] = 1;
		new_version(bc, b, 1);
	}
	for (int i = 0; i < 60000; i++) {
		unsigned b = (unsigned)rand_r(&seed) % NBLK, op = (unsigned)rand_r(&seed) % 10;
		struct mfs_blk_expect e = expect_for(b);
		struct mfs_buf *bp;

		if (op < 6) {
			ck_assert_int_eq(mfs_buf_read(bc, b, &e, &bp), 0);
			ck_assert_msg(check_version(bp->data, b, model[b]) == 0, "block %u", b);
			mfs_buf_put(bp);
		} else if (op < 8) {
			ck_assert_int_eq(mfs_buf_read(bc, b, &e, &bp), 0);
			fill_version(bp->data, b, ++model[b]);
			mfs_buf_mark_dirty(bp);
			mfs_buf_put(bp);
		} else {
			mfs_bcache_forget(bc, b);
			new_version(bc, b, ++model[b]);
		}
	}
	mfs_bcache_get_stats(bc, &st);
	ck_assert_uint_le(st.nbufs, 1024);
	ck_assert_uint_gt(st.evictions, 0);
	ck_assert_int_eq(mfs_bcache_destroy(bc), 0);
	check_disk(0, NBLK, model);
}
END_TEST

#if defined(__SANITIZE_ADDRESS__)
#define STRESS_OPS 6000
#else
#define STRESS_OPS 40000
#endif
#define ST_THREADS 4
#define ST_SHARED 64u
#define ST_OWN 192u

struct stress_arg {
	struct mfs_bcache *bc;
	unsigned id, seed;
	unsigned model[ST_OWN];
	int errors;
};

static volatile int stress_stop;
/* Changers hold it shared, the flusher exclusive: flush runs with no change in progress
 * (bcache.h: no transaction open), while eviction write-back runs at any time. */
static pthread_rwlock_t stress_txlock = PTHREAD_RWLOCK_INITIALIZER;

static unsigned own_blk(const struct stress_arg *a, unsigned i)
{
	return ST_SHARED + a->id * ST_OWN + i;
}

static int stress_read_check(struct mfs_bcache *bc, unsigned b, unsigned v, struct mfs_buf **out)
{
	struct mfs_blk_expect e = expect_for(b);

	if (mfs_buf_read(bc, b, &e, out))
		return -1;
	if (check_version((*out)->data, b, v)) {
		mfs_buf_put(*out);
		return -1;
	}
	return 0;
}

static void *stress_worker(void *p)
{
	struct stress_arg *a = p;

	for (int n = 0; n < STRESS_OPS; n++) {
		unsigned op = (unsigned)rand_r(&a->seed) % 100;
		unsigned i = (unsigned)rand_r(&a->seed) % ST_OWN, b = own_blk(a, i);
		unsigned s = (unsigned)rand_r(&a->seed) % ST_SHARED;
		struct mfs_buf *bp, *sp;

		if (op < 30) {                       /* read an own block */
			if (stress_read_check(a->bc, b, a->model[i], &bp)) {
				a->errors++;
				continue;
			}
			mfs_buf_put(bp);
		} else if (op < 55) {                /* read a shared block, hold it a while */
			if (stress_read_check(a->bc, s, 0, &sp)) {
				a->errors++;
				continue;
			}
			mfs_buf_hold(sp);
			mfs_buf_put(sp);
			if (stress_read_check(a->bc, b, a->model[i], &bp) == 0)
				mfs_buf_put(bp);
			else
				a->errors++;
			mfs_buf_put(sp);
		} else if (op < 85) {                /* change an own block */
			pthread_rwlock_rdlock(&stress_txlock);
			if (stress_read_check(a->bc, b, a->model[i], &bp)) {
				pthread_rwlock_unlock(&stress_txlock);
				a->errors++;
				continue;
			}
			fill_version(bp->data, b, ++a->model[i]);
			mfs_buf_mark_dirty(bp);
			mfs_buf_put(bp);
			pthread_rwlock_unlock(&stress_txlock);
		} else {                             /* free it and reuse it */
			pthread_rwlock_rdlock(&stress_txlock);
			mfs_bcache_forget(a->bc, b);
			if (mfs_buf_get_new(a->bc, b, 1, &bp)) {
				pthread_rwlock_unlock(&stress_txlock);
				a->errors++;
				continue;
			}
			mfs_blk_init(bp->data, BS, MFS_RMAPBT_MAGIC, b, b % 7, uuid);
			fill_version(bp->data, b, ++a->model[i]);
			mfs_buf_mark_dirty(bp);
			mfs_buf_put(bp);
			pthread_rwlock_unlock(&stress_txlock);
		}
	}
	return NULL;
}

static void *stress_flusher(void *p)
{
	struct mfs_bcache *bc = p;
	intptr_t errors = 0;

	while (!__atomic_load_n(&stress_stop, __ATOMIC_RELAXED)) {
		pthread_rwlock_wrlock(&stress_txlock);
		errors += mfs_bcache_flush(bc) != 0;
		pthread_rwlock_unlock(&stress_txlock);
	}
	return (void *)errors;
}

/*
 * Several threads read, change, forget and reuse their own blocks and read shared ones
 * while a flusher thread writes back, all under a budget of a third of the working set:
 * eviction writes back constantly (outside the shard lock), loads race with loads, forget
 * races with write-back.  Every read sees its block's latest version; afterwards the disk
 * holds exactly the latest version of every block, sealed.
 */
START_TEST(stress_threads)
{
	struct mfs_bcache *bc;
	struct mfs_bcache_stats st;
	static struct stress_arg args[ST_THREADS];
	unsigned zero[ST_SHARED] = { 0 };
	pthread_t th[ST_THREADS], fl;
	void *flush_errors;

	ck_assert_int_eq(mfs_bcache_create(dev, BS, 256 * BS, &bc), 0);
	mfs_bcache_set_uuid(bc, uuid);
	for (unsigned b = 0; b < ST_SHARED; b++)
		new_version(bc, b, 0);
	for (unsigned t = 0; t < ST_THREADS; t++) {
		args[t] = (struct stress_arg){ .bc = bc, .id = t, .seed = 7 + t };
		for (unsigned i = 0; i < ST_OWN; i++) {
			args[t].model[i] = 1;
			new_version(bc, own_blk(&args[t], i), 1);
		}
	}
	stress_stop = 0;
	ck_assert_int_eq(pthread_create(&fl, NULL, stress_flusher, bc), 0);
	for (unsigned t = 0; t < ST_THREADS; t++)
		ck_assert_int_eq(pthread_create(&th[t], NULL, stress_worker, &args[t]), 0);
	for (unsigned t = 0; t < ST_THREADS; t++) {
		pthread_join(th[t], NULL);
		ck_assert_int_eq(args[t].errors, 0);
	}
	__atomic_store_n(&stress_stop, 1, __ATOMIC_RELAXED);
	pthread_join(fl, &flush_errors);
	ck_assert_ptr_null(flush_errors);
	ck_assert_int_eq(mfs_bcache_flush(bc), 0);
	mfs_bcache_get_stats(bc, &st);
	ck_assert_uint_eq(st.ndirty, 0);
	ck_assert_uint_gt(st.evictions, 0);
	ck_assert_uint_le(st.nbufs, 256);
	ck_assert_int_eq(mfs_bcache_destroy(bc), 0);
	check_disk(0, ST_SHARED, zero);
	for (unsigned t = 0; t < ST_THREADS; t++)
		check_disk(own_blk(&args[t], 0), ST_OWN, args[t].model);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("bcache");
	TCase *tc = tcase_create("core");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, budget_and_writeback);
	tcase_add_test(tc, concurrent_readers);
	tcase_add_test(tc, trans_cancel_restores_exactly);
	tcase_add_test(tc, trans_commit_dirties_and_forgets);
	tcase_add_test(tc, trans_ag_lock_order);
	tcase_add_test(tc, trans_roll_keeps_locks);
	tcase_add_test(tc, forgotten_buffer_never_written);
	tcase_add_test(tc, trans_cancel_after_forget_and_reuse);
	tcase_add_test(tc, trans_reread_cancel);
	tcase_add_test(tc, trans_reread_unverified);
	tcase_add_test(tc, trans_forget_set);
	tcase_add_test(tc, hash_churn);
	tcase_add_test(tc, stress_threads);
	tcase_add_test(tc, sweep_reads_leave_the_cache);
	tcase_add_test(tc, sweep_new_blocks_leave_once_written_home);
	tcase_add_test(tc, flush_error_sticky);
	tcase_add_test(tc, flush_overlapping_failure);
	suite_add_tcase(s, tc);
	return tu_run_suite(s);
}
