/*
 * check_verify.c — the metadata block and inode verifiers catch each kind of damage:
 * wrong magic, bad CRC, wrong self number, wrong owner, wrong UUID, wrong level, a btree
 * block header's padding or reserved word not zero; and a
 * block that fails is reported by the buffer cache and not kept in it.
 */
#include <check.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bcache.h"
#include "byteorder.h"
#include "dev.h"
#include "log.h"
#include "verify.h"

#include "tu.h"

#define BS 4096u
static const uint8_t uuid[16] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16 };
static unsigned char blk[BS];

static const struct mfs_blk_expect exp_leaf = { MFS_BNOBT_MAGIC, 3, 0, "AG 3 by-block btree" };

static void make_block(void)
{
	struct mfs_btree_block *b = (void *)blk;

	mfs_blk_init(blk, BS, MFS_BNOBT_MAGIC, 777, 3, uuid);
	mfs_put16(b->level, 0);
	mfs_put16(b->numrecs, 1);
	memset(blk + 64, 0xab, 8);
	mfs_blk_seal(blk, BS);
	ck_assert_int_eq(mfs_blk_verify(blk, BS, 777, uuid, &exp_leaf, 0), 0);
	mfs_log_quiet();
}

START_TEST(good_block_passes)
{
	make_block();
	ck_assert(mfs_blk_crc_ok(blk, BS));
}
END_TEST

START_TEST(wrong_magic)
{
	make_block();
	mfs_put32(((struct mfs_blkhdr *)blk)->magic, MFS_CNTBT_MAGIC);
	mfs_blk_seal(blk, BS);
	ck_assert_int_eq(mfs_blk_verify(blk, BS, 777, uuid, &exp_leaf, 0), -EFSCORRUPTED);
}
END_TEST

START_TEST(bad_crc)
{
	make_block();
	blk[100] ^= 0x10;     /* one flipped bit in the records */
	ck_assert_int_eq(mfs_blk_verify(blk, BS, 777, uuid, &exp_leaf, 0), -EFSBADCRC);
	/* A block known to be changed in memory is not CRC-checked. */
	ck_assert_int_eq(mfs_blk_verify(blk, BS, 777, uuid, &exp_leaf, MFS_VERIFY_NOCRC), 0);
}
END_TEST

START_TEST(wrong_self_number)
{
	make_block();
	/* The same, valid block read from another place: a misdirected write. */
	ck_assert_int_eq(mfs_blk_verify(blk, BS, 778, uuid, &exp_leaf, 0), -EFSCORRUPTED);
}
END_TEST

START_TEST(wrong_owner)
{
	struct mfs_blk_expect e = exp_leaf;

	make_block();
	e.owner = 4;
	ck_assert_int_eq(mfs_blk_verify(blk, BS, 777, uuid, &e, 0), -EFSCORRUPTED);
}
END_TEST

START_TEST(wrong_uuid)
{
	uint8_t other[16];

	make_block();
	memcpy(other, uuid, 16);
	other[7] ^= 1;
	ck_assert_int_eq(mfs_blk_verify(blk, BS, 777, other, &exp_leaf, 0), -EFSCORRUPTED);
}
END_TEST

START_TEST(wrong_level)
{
	struct mfs_blk_expect e = exp_leaf;

	make_block();
	e.level = 1;
	ck_assert_int_eq(mfs_blk_verify(blk, BS, 777, uuid, &e, 0), -EFSCORRUPTED);
	e.level = MFS_LEVEL_ANY;
	ck_assert_int_eq(mfs_blk_verify(blk, BS, 777, uuid, &e, 0), 0);
}
END_TEST

START_TEST(btree_header_padding_not_zero)
{
	struct mfs_btree_block *b = (void *)blk;
	struct mfs_blk_expect any = exp_leaf;

	make_block();
	mfs_put32(b->pad, 0x100);
	mfs_blk_seal(blk, BS);
	ck_assert_int_eq(mfs_blk_verify(blk, BS, 777, uuid, &exp_leaf, 0), -EFSCORRUPTED);
	make_block();
	mfs_put64(b->reserved, 1ull << 63);
	mfs_blk_seal(blk, BS);
	ck_assert_int_eq(mfs_blk_verify(blk, BS, 777, uuid, &exp_leaf, 0), -EFSCORRUPTED);
	/* not a btree block (no level expected): the words are not the header's */
	any.level = MFS_LEVEL_ANY;
	ck_assert_int_eq(mfs_blk_verify(blk, BS, 777, uuid, &any, 0), 0);
}
END_TEST

START_TEST(inode_verifier)
{
	unsigned char ino[256] = { 0 };
	struct mfs_dinode *d = (void *)ino;

	mfs_log_quiet();
	mfs_put32(d->magic, MFS_DINODE_MAGIC);
	mfs_put64(d->ino, 131);
	memcpy(d->uuid, uuid, 16);
	mfs_dinode_seal(ino, sizeof(ino));
	ck_assert_int_eq(mfs_dinode_verify(ino, sizeof(ino), 131, uuid), 0);
	ck_assert_int_eq(mfs_dinode_verify(ino, sizeof(ino), 132, uuid), -EFSCORRUPTED);
	ino[200] ^= 4;
	ck_assert_int_eq(mfs_dinode_verify(ino, sizeof(ino), 131, uuid), -EFSBADCRC);
}
END_TEST

/* Through the cache: a damaged block on disk fails every read and is never cached. */
START_TEST(cache_rejects_and_does_not_keep)
{
	char path[TU_PATH_MAX];
	int fd;
	struct mfs_dev *dev;
	struct mfs_bcache *bc;
	struct mfs_buf *bp;
	struct mfs_bcache_stats st;

	tu_image_create(path, "mfs-verify", 0);
	fd = open(path, O_RDWR);
	ck_assert_int_ge(fd, 0);
	make_block();
	blk[200] ^= 1;
	ck_assert_int_eq(pwrite(fd, blk, BS, 777 * (off_t)BS), BS);
	ck_assert_int_eq(mfs_dev_open(path, 0, &dev), 0);
	ck_assert_int_eq(mfs_bcache_create(dev, BS, 1 << 20, &bc), 0);
	mfs_bcache_set_uuid(bc, uuid);
	ck_assert_int_eq(mfs_buf_read(bc, 777, &exp_leaf, &bp), -EFSBADCRC);
	ck_assert_ptr_null(bp);
	mfs_bcache_get_stats(bc, &st);
	ck_assert_uint_eq(st.nbufs, 0);
	/* Repaired on disk: the next read sees the repair, not a stale cached copy. */
	blk[200] ^= 1;
	ck_assert_int_eq(pwrite(fd, blk, BS, 777 * (off_t)BS), BS);
	ck_assert_int_eq(mfs_buf_read(bc, 777, &exp_leaf, &bp), 0);
	mfs_buf_put(bp);
	ck_assert_int_eq(mfs_bcache_destroy(bc), 0);
	ck_assert_int_eq(mfs_dev_close(dev), 0);
	close(fd);
	tu_image_remove(path);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("verify");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, good_block_passes);
	tcase_add_test(tc, wrong_magic);
	tcase_add_test(tc, bad_crc);
	tcase_add_test(tc, wrong_self_number);
	tcase_add_test(tc, wrong_owner);
	tcase_add_test(tc, wrong_uuid);
	tcase_add_test(tc, wrong_level);
	tcase_add_test(tc, btree_header_padding_not_zero);
	tcase_add_test(tc, inode_verifier);
	tcase_add_test(tc, cache_rejects_and_does_not_keep);
	suite_add_tcase(s, tc);
	return tu_run_suite(s);
}
