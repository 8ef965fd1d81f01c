/*
 * check_xblob.c — the scratch blob store: against an in-memory model under seeded random
 * store/load/free (memfd and O_TMPFILE), stale and made-up cookies, space reuse, and
 * scratch-file failures.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xblob.h"

#include "tu.h"

static size_t rnd_len(void)
{
	switch (tu_rand() % 10) {
	case 0: return 0;
	case 1: return (size_t)(tu_rand() % (MFS_XBLOB_MAX_BYTES + 1));	/* up to ~128 KiB */
	case 2: return 65536;
	case 3: return (size_t)(tu_rand() % 8192);
	default: return (size_t)(tu_rand() % 200);
	}
}

static void fill(unsigned char *p, size_t len, uint64_t tag)
{
	for (size_t i = 0; i < len; i++)
		p[i] = (unsigned char)(tag * 131 + i * 7);
}

struct live {
	uint64_t cookie;
	uint64_t tag;
	size_t len;
};

static void model_run(int tmpfile, uint64_t seed, unsigned nops)
{
	enum { MAXLIVE = 400, MAXDEAD = 2000 };
	struct live *live = calloc(MAXLIVE, sizeof(*live));
	uint64_t *dead = calloc(MAXDEAD, sizeof(*dead));
	unsigned char *buf = malloc(MFS_XBLOB_MAX_BYTES), *want = malloc(MFS_XBLOB_MAX_BYTES);
	unsigned nlive = 0, ndead = 0;
	uint64_t bytes = 0, max_extent = 0;
	struct mfs_xblob *b;
	int fd = tu_scratch_fd(tmpfile);
	size_t len;

	ck_assert(live && dead && buf && want);
	tu_srand(seed);
	ck_assert_int_eq(mfs_xblob_create(fd, 0, &b), 0);
	for (unsigned op = 0; op < nops; op++) {
		unsigned what = (unsigned)(tu_rand() % 100);

		if (what < 40 && nlive < MAXLIVE) {
			struct live *l = &live[nlive++];

			l->len = rnd_len();
			l->tag = tu_rand();
			fill(want, l->len, l->tag);
			CK_EQ(mfs_xblob_store(b, want, l->len, &l->cookie), 0);
			CK_TRUE(l->cookie != 0);
			bytes += l->len;
		} else if (what < 70 && nlive > 0) {
			unsigned k = (unsigned)(tu_rand() % nlive);
			struct live *l = &live[k];

			CK_EQ(mfs_xblob_free(b, l->cookie), 0);
			CK_EQ(mfs_xblob_free(b, l->cookie), -ENODATA);	/* double free */
			bytes -= l->len;
			dead[ndead++ % MAXDEAD] = l->cookie;
			*l = live[--nlive];
		} else if (what < 90 && nlive > 0) {
			struct live *l = &live[tu_rand() % nlive];

			CK_EQ(mfs_xblob_size(b, l->cookie, &len), 0);
			CK_EQ(len, l->len);
			CK_EQ(mfs_xblob_load(b, l->cookie, buf, MFS_XBLOB_MAX_BYTES, &len), 0);
			CK_EQ(len, l->len);
			fill(want, l->len, l->tag);
			CK_TRUE(memcmp(buf, want, len) == 0);
			if (l->len > 0)
				CK_EQ(mfs_xblob_load(b, l->cookie, buf, l->len - 1, NULL), -EFBIG);
		} else if (what < 95 && ndead > 0) {
			/* A freed cookie never loads again, even after its slot was reused. */
			uint64_t c = dead[tu_rand() % (ndead < MAXDEAD ? ndead : MAXDEAD)];
			int rc = mfs_xblob_load(b, c, buf, MFS_XBLOB_MAX_BYTES, &len);

			CK_EQ(rc, -ENODATA);
		} else {
			/* A made-up cookie gives -EINVAL or -ENODATA, never data of a live blob
			 * unless it is exactly that blob's cookie. */
			uint64_t c = tu_rand() % 4 == 0 ? tu_rand()
				     : (tu_rand() & 0xffffff0000000000ull) |
				       (tu_rand() % (mfs_xblob_extent(b) / 64 + 2));
			int rc = mfs_xblob_load(b, c, buf, MFS_XBLOB_MAX_BYTES, &len);
			bool known = false;

			for (unsigned k = 0; k < nlive; k++)
				known |= live[k].cookie == c;
			if (!known)
				if (rc != -EINVAL && rc != -ENODATA)
					ck_abort_msg("cookie %llx: rc %d", (unsigned long long)c, rc);
		}
		CK_EQ(mfs_xblob_count(b), nlive);
		CK_EQ(mfs_xblob_live_bytes(b), bytes);
		if (mfs_xblob_extent(b) > max_extent)
			max_extent = mfs_xblob_extent(b);
	}
	/* Everything still live reads back. */
	for (unsigned k = 0; k < nlive; k++) {
		CK_EQ(mfs_xblob_load(b, live[k].cookie, buf, MFS_XBLOB_MAX_BYTES, &len), 0);
		fill(want, live[k].len, live[k].tag);
		CK_TRUE(len == live[k].len && memcmp(buf, want, len) == 0);
	}
	/* Steady state of at most MAXLIVE blobs of at most 128 KiB: reuse keeps the file
	 * far below what nops stores would take without it. */
	ck_assert_uint_lt(max_extent, (uint64_t)MAXLIVE * 2 * MFS_XBLOB_MAX_SLOT);
	mfs_xblob_destroy(b);
	ck_assert_int_eq(close(fd), 0);
	free(live);
	free(dead);
	free(buf);
	free(want);
}

START_TEST(test_model_memfd)
{
	model_run(0, 0x1001 + (uint64_t)_i, 20000);
}
END_TEST

START_TEST(test_model_tmpfile)
{
	model_run(1, 0x2002 + (uint64_t)_i, 20000);
}
END_TEST

START_TEST(test_basic_and_reuse)
{
	int fd = tu_scratch_fd(0);
	struct mfs_xblob *b;
	unsigned char big[65536], out[65536];
	uint64_t c1, c2, c3;
	size_t len;
	struct stat st;

	memset(big, 0xab, sizeof(big));
	ck_assert_int_eq(mfs_xblob_create(fd, 8192, &b), 0);
	ck_assert_int_eq(mfs_xblob_load(b, 0, out, sizeof(out), &len), -EINVAL);
	ck_assert_int_eq(mfs_xblob_store(b, big, MFS_XBLOB_MAX_BYTES + 1, &c1), -EFBIG);
	ck_assert_int_eq(mfs_xblob_store(b, big, sizeof(big), &c1), 0);
	ck_assert_int_eq(mfs_xblob_load(b, c1, out, sizeof(out), &len), 0);
	ck_assert_uint_eq(len, sizeof(big));
	ck_assert_mem_eq(out, big, sizeof(big));
	ck_assert_int_eq(fstat(fd, &st), 0);
	blkcnt_t used = st.st_blocks;

	/* Free punches the slot out; a store of the same class takes the same slot, and the
	 * old cookie stays dead. */
	ck_assert_int_eq(mfs_xblob_free(b, c1), 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_int_lt(st.st_blocks, used);
	ck_assert_int_eq(mfs_xblob_store(b, big, 65500, &c2), 0);
	ck_assert_uint_eq(c2 & 0xffffffffffull, c1 & 0xffffffffffull);	/* same slot */
	ck_assert_uint_ne(c2, c1);
	ck_assert_int_eq(mfs_xblob_load(b, c1, out, sizeof(out), &len), -ENODATA);
	ck_assert_int_eq(mfs_xblob_free(b, c1), -ENODATA);
	ck_assert_int_eq(mfs_xblob_load(b, c2, out, sizeof(out), &len), 0);
	ck_assert_uint_eq(len, 65500);
	/* A cookie into the middle of a payload is not a header. */
	ck_assert_int_eq(mfs_xblob_load(b, c2 + 1, out, sizeof(out), &len), -EINVAL);
	/* Past the end of the store. */
	ck_assert_int_eq(mfs_xblob_load(b, (c2 & ~0xffffffffffull) | 0xfffffffff, out,
					sizeof(out), &len), -EINVAL);
	ck_assert_int_eq(mfs_xblob_store(b, "", 0, &c3), 0);
	ck_assert_int_eq(mfs_xblob_size(b, c3, &len), 0);
	ck_assert_uint_eq(len, 0);
	mfs_xblob_destroy(b);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

/* Scratch failures: a file that cannot grow gives the write's errno and leaves the store
 * consistent; a truncated file gives -ENOMEM. */
START_TEST(test_failures)
{
	int fd = memfd_create("sealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	struct mfs_xblob *b;
	unsigned char data[3000], out[3000];
	uint64_t c, first;
	size_t len;
	int rc = 0, n = 0;

	ck_assert_int_ge(fd, 0);
	memset(data, 0x11, sizeof(data));
	ck_assert_int_eq(ftruncate(fd, 65536), 0);
	ck_assert_int_eq(fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK), 0);
	ck_assert_int_eq(mfs_xblob_create(fd, 0, &b), 0);
	ck_assert_int_eq(mfs_xblob_store(b, data, sizeof(data), &first), 0);
	while (rc == 0 && n++ < 100)
		rc = mfs_xblob_store(b, data, sizeof(data), &c);
	ck_assert_int_eq(rc, -EPERM);
	uint64_t live = mfs_xblob_count(b);
	/* After freeing one, the store has room again, and reuses it. */
	ck_assert_int_eq(mfs_xblob_free(b, first), 0);
	ck_assert_int_eq(mfs_xblob_store(b, data, sizeof(data), &c), 0);
	ck_assert_uint_eq(mfs_xblob_count(b), live);
	ck_assert_int_eq(mfs_xblob_load(b, c, out, sizeof(out), &len), 0);
	ck_assert_mem_eq(out, data, sizeof(data));
	mfs_xblob_destroy(b);
	ck_assert_int_eq(close(fd), 0);

	fd = tu_scratch_fd(0);
	ck_assert_int_eq(mfs_xblob_create(fd, 0, &b), 0);
	for (int k = 0; k < 50; k++)
		ck_assert_int_eq(mfs_xblob_store(b, data, sizeof(data), &c), 0);
	ck_assert_int_eq(ftruncate(fd, 4096), 0);
	ck_assert_int_eq(mfs_xblob_load(b, c, out, sizeof(out), &len), -ENOMEM);
	mfs_xblob_destroy(b);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

static Suite *xblob_suite(void)
{
	Suite *s = suite_create("xblob");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_basic_and_reuse);
	tcase_add_loop_test(tc, test_model_memfd, 0, 3);
	tcase_add_loop_test(tc, test_model_tmpfile, 0, 2);
	tcase_add_test(tc, test_failures);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(xblob_suite());
}
