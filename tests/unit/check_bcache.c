/*
 * check_bcache.c — the buffer cache stays within its budget, writes dirty blocks back
 * sealed before evicting them, serves concurrent readers, and transactions over it commit
 * all their blocks or restore them exactly.
 */
#include <check.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bcache.h"
#include "byteorder.h"
#include "dev.h"
#include "fs.h"
#include "log.h"
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
	tcase_add_test(tc, forgotten_buffer_never_written);
	tcase_add_test(tc, trans_cancel_after_forget_and_reuse);
	suite_add_tcase(s, tc);
	return tu_run_suite(s);
}
