/*
 * check_xfarray.c — the fixed-record scratch array: against an in-memory model under
 * seeded random operations (memfd and O_TMPFILE), sort and binary search, sparse arrays
 * past 2^40 bytes, I/O failures, and a 10M-record sort with the heap growth measured.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xfarray.h"

#include "tu.h"

/* Like tu.h's CK_EQ / CK_TRUE, calls into Check only on failure (hot loops). */
#define CK_MEM(a, b, n) do { if (memcmp((a), (b), (n))) ck_assert_mem_eq(a, b, n); } while (0)

enum { SCRATCH_MEMFD, SCRATCH_TMPFILE };     /* tu_scratch_fd(tmpfile) */

/* Records of a variable size whose first 8 bytes are the sort key. */
static int cmp_key(const void *a, const void *b, void *priv)
{
	size_t rs = *(const size_t *)priv;

	return memcmp(a, b, rs);
}

static void make_rec(unsigned char *r, size_t rs)
{
	for (size_t i = 0; i < rs; i++)
		r[i] = (unsigned char)(tu_rand() % 4);	/* small alphabet: many equal keys */
	r[rs - 1] |= 0x80;				/* never all zero */
}

static int cmp_qsort_rs;
static int cmp_qsort(const void *a, const void *b)
{
	return memcmp(a, b, (size_t)cmp_qsort_rs);
}

static bool is_zero(const unsigned char *p, size_t n)
{
	while (n--)
		if (*p++)
			return false;
	return true;
}

START_TEST(test_basic)
{
	int fd = tu_scratch_fd(SCRATCH_MEMFD);
	struct mfs_xfarray *a;
	unsigned char zero[16] = { 0 }, r[16], out[16];
	uint64_t idx;

	ck_assert_int_eq(mfs_xfarray_create(fd, 0, 0, 0, &a), -EINVAL);
	ck_assert_int_eq(mfs_xfarray_create(fd, 0, MFS_XFARRAY_MAX_RECSIZE + 1, 0, &a), -EINVAL);
	ck_assert_int_eq(mfs_xfarray_create(fd, 0, 16, 100, &a), 0);
	ck_assert_uint_eq(mfs_xfarray_count(a), 0);
	ck_assert_int_eq(mfs_xfarray_get(a, 0, out), -ENODATA);
	ck_assert_int_eq(mfs_xfarray_append(a, zero, NULL), -EINVAL);
	memset(r, 7, sizeof(r));
	ck_assert_int_eq(mfs_xfarray_append(a, r, &idx), 0);
	ck_assert_uint_eq(idx, 0);
	ck_assert_int_eq(mfs_xfarray_set(a, 10, r), 0);
	ck_assert_uint_eq(mfs_xfarray_count(a), 11);
	ck_assert_uint_eq(mfs_xfarray_unset_count(a), 9);
	ck_assert_int_eq(mfs_xfarray_get(a, 5, out), -ENOENT);
	ck_assert(is_zero(out, 16));
	ck_assert_int_eq(mfs_xfarray_get(a, 10, out), 0);
	ck_assert_mem_eq(out, r, 16);
	ck_assert_int_eq(mfs_xfarray_set(a, 100, r), -EFBIG);
	ck_assert_int_eq(mfs_xfarray_unset(a, 11), -ENODATA);
	/* Unsetting the last slot drops the trailing unset run too. */
	ck_assert_int_eq(mfs_xfarray_unset(a, 10), 0);
	ck_assert_uint_eq(mfs_xfarray_count(a), 1);
	ck_assert_uint_eq(mfs_xfarray_unset_count(a), 0);
	ck_assert_int_eq(mfs_xfarray_flush(a), 0);
	mfs_xfarray_destroy(a);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

/*
 * A clear empties the array: nothing to read, and refilled by appends (fewer than before,
 * over several windows), every record reads as appended after the clear, nothing past the
 * new count.
 */
START_TEST(test_clear_refill)
{
	int fd = tu_scratch_fd(SCRATCH_MEMFD);
	struct mfs_xfarray *a;
	const uint64_t n = 100000;
	uint64_t v;

	ck_assert_int_eq(mfs_xfarray_create(fd, 4096, sizeof(v), 2 * n, &a), 0);
	for (uint64_t i = 0; i < n; i++) {
		v = 1000000 + i;
		ck_assert_int_eq(mfs_xfarray_append(a, &v, NULL), 0);
	}
	mfs_xfarray_clear(a);
	ck_assert_uint_eq(mfs_xfarray_count(a), 0);
	ck_assert_int_eq(mfs_xfarray_get(a, 0, &v), -ENODATA);
	for (uint64_t i = 0; i < n / 3; i++) {
		v = 7 + 3 * i;
		ck_assert_int_eq(mfs_xfarray_append(a, &v, NULL), 0);
	}
	ck_assert_uint_eq(mfs_xfarray_count(a), n / 3);
	ck_assert_int_eq(mfs_xfarray_flush(a), 0);
	for (uint64_t i = 0; i < n / 3; i++) {
		ck_assert_int_eq(mfs_xfarray_get(a, i, &v), 0);
		ck_assert_uint_eq(v, 7 + 3 * i);
	}
	ck_assert_int_eq(mfs_xfarray_get(a, n / 3, &v), -ENODATA);
	mfs_xfarray_destroy(a);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

/* Random operations against a model; then iterate, sort and search, compare each time. */
static void model_run(int kind, size_t rs, uint64_t seed, unsigned nops, unsigned span)
{
	int fd = tu_scratch_fd(kind);
	struct mfs_xfarray *a;
	unsigned char *model = calloc(span, rs), *r = malloc(rs), *out = malloc(rs);
	uint64_t nr = 0, unset = 0;
	size_t rsv = rs;

	ck_assert(model && r && out);
	tu_srand(seed);
	CK_EQ(mfs_xfarray_create(fd, 4096, rs, span, &a), 0);
	for (unsigned op = 0; op < nops; op++) {
		unsigned what = (unsigned)(tu_rand() % 100);
		uint64_t i = tu_rand() % span;

		if (what < 45) {
			make_rec(r, rs);
			CK_EQ(mfs_xfarray_set(a, i, r), 0);
			if (i >= nr) {
				unset += i - nr;
				nr = i + 1;
			} else if (is_zero(model + i * rs, rs)) {
				unset--;
			}
			memcpy(model + i * rs, r, rs);
		} else if (what < 55) {
			if (nr >= span)
				continue;
			make_rec(r, rs);
			uint64_t got;
			CK_EQ(mfs_xfarray_append(a, r, &got), 0);
			CK_EQ(got, nr);
			memcpy(model + nr * rs, r, rs);
			nr++;
		} else if (what < 70) {
			int rc = mfs_xfarray_unset(a, i);

			if (i >= nr) {
				CK_EQ(rc, -ENODATA);
				continue;
			}
			CK_EQ(rc, 0);
			if (!is_zero(model + i * rs, rs)) {
				memset(model + i * rs, 0, rs);
				unset++;
				while (nr > 0 && is_zero(model + (nr - 1) * rs, rs)) {
					nr--;
					unset--;
				}
			}
		} else {
			int rc = mfs_xfarray_get(a, i, out);

			if (i >= nr)
				CK_EQ(rc, -ENODATA);
			else if (is_zero(model + i * rs, rs))
				CK_EQ(rc, -ENOENT);
			else {
				CK_EQ(rc, 0);
				CK_MEM(out, model + i * rs, rs);
			}
		}
		CK_EQ(mfs_xfarray_count(a), nr);
		CK_EQ(mfs_xfarray_unset_count(a), unset);
	}

	/* Iteration visits exactly the set slots, in order. */
	uint64_t cur = 0, idx, expect = 0, seen = 0;
	int rc;
	while ((rc = mfs_xfarray_iter(a, &cur, out, &idx)) == 1) {
		while (expect < nr && is_zero(model + expect * rs, rs))
			expect++;
		CK_EQ(idx, expect);
		CK_MEM(out, model + idx * rs, rs);
		expect++;
		seen++;
	}
	CK_EQ(rc, 0);
	CK_EQ(seen, nr - unset);

	/* Sort: the model's set records, qsorted, must come back. */
	uint64_t nset = 0;
	for (uint64_t k = 0; k < nr; k++)
		if (!is_zero(model + k * rs, rs))
			memmove(model + nset++ * rs, model + k * rs, rs);
	cmp_qsort_rs = (int)rs;
	qsort(model, nset, rs, cmp_qsort);
	CK_EQ(mfs_xfarray_sort(a, cmp_key, &rsv), 0);
	CK_EQ(mfs_xfarray_count(a), nset);
	CK_EQ(mfs_xfarray_unset_count(a), 0);
	for (uint64_t k = 0; k < nset; k++) {
		CK_EQ(mfs_xfarray_get(a, k, out), 0);
		CK_MEM(out, model + k * rs, rs);
	}
	/* Binary search finds the first of equal records, and misses absent keys. */
	for (int k = 0; k < 200 && nset > 0; k++) {
		uint64_t at = tu_rand() % nset, got;

		CK_EQ(mfs_xfarray_bsearch(a, model + at * rs, cmp_key, &rsv, &got, out), 0);
		CK_MEM(out, model + at * rs, rs);
		CK_TRUE(got <= at);
		ck_assert(got == 0 || memcmp(model + (got - 1) * rs, out, rs) < 0);
	}
	memset(r, 0xff, rs);
	uint64_t got;
	CK_EQ(mfs_xfarray_bsearch(a, r, cmp_key, &rsv, &got, NULL), -ENOENT);
	CK_EQ(got, nset);

	mfs_xfarray_destroy(a);
	CK_EQ(close(fd), 0);
	free(model);
	free(r);
	free(out);
}

START_TEST(test_model_memfd)
{
	model_run(SCRATCH_MEMFD, 16, 0x1234567 + (uint64_t)_i, 60000, 40000);
	model_run(SCRATCH_MEMFD, 24, 0x7654321 + (uint64_t)_i, 30000, 300000);
	model_run(SCRATCH_MEMFD, 100, 0xabcdef + (uint64_t)_i, 20000, 5000);
}
END_TEST

START_TEST(test_model_tmpfile)
{
	model_run(SCRATCH_TMPFILE, 16, 0x51 + (uint64_t)_i, 60000, 40000);
	model_run(SCRATCH_TMPFILE, 8, 0x52 + (uint64_t)_i, 30000, 1000000);
	model_run(SCRATCH_TMPFILE, 4000, 0x53 + (uint64_t)_i, 5000, 3000);
}
END_TEST

/* Sorting a large array of mostly equal and of already sorted / reversed records. */
START_TEST(test_sort_patterns)
{
	int fd = tu_scratch_fd(SCRATCH_MEMFD);
	struct mfs_xfarray *a;
	size_t rs = 8;
	const uint64_t n = 600000;	/* > 2 sort buffers: exercises the file partition */

	for (int pattern = 0; pattern < 4; pattern++) {
		CK_EQ(ftruncate(fd, 0), 0);
		CK_EQ(mfs_xfarray_create(fd, 0, rs, 0, &a), 0);
		tu_srand(99 + (uint64_t)pattern);
		for (uint64_t k = 0; k < n; k++) {
			uint64_t v;

			switch (pattern) {
			case 0: v = 5; break;				/* all equal */
			case 1: v = k + 1; break;			/* sorted */
			case 2: v = n - k; break;			/* reversed */
			default: v = tu_rand() % 3 + 1; break;		/* few distinct */
			}
			v = __builtin_bswap64(v);	/* memcmp order = numeric order */
			CK_EQ(mfs_xfarray_append(a, &v, NULL), 0);
		}
		CK_EQ(mfs_xfarray_sort(a, cmp_key, &rs), 0);
		uint64_t prev = 0, v, cur = 0, cnt = 0;
		int rc;
		while ((rc = mfs_xfarray_iter(a, &cur, &v, NULL)) == 1) {
			v = __builtin_bswap64(v);
			CK_TRUE(v >= prev);
			prev = v;
			cnt++;
		}
		CK_EQ(rc, 0);
		CK_EQ(cnt, n);
		mfs_xfarray_destroy(a);
	}
	CK_EQ(close(fd), 0);
}
END_TEST

/* A record past 2^40 bytes into the file: sparse, found quickly by iteration. */
START_TEST(test_capacity_2_40)
{
	int fd = tu_scratch_fd(_i == 0 ? SCRATCH_MEMFD : SCRATCH_TMPFILE);
	struct mfs_xfarray *a;
	unsigned char r[16], out[16];
	uint64_t far = (1ull << 40) / 16 + 12345, cur = 0, idx;
	struct stat st;

	memset(r, 0x5a, sizeof(r));
	CK_EQ(mfs_xfarray_create(fd, 0, 16, 0, &a), 0);
	CK_EQ(mfs_xfarray_set(a, 3, r), 0);
	CK_EQ(mfs_xfarray_set(a, far, r), 0);
	CK_EQ(mfs_xfarray_count(a), far + 1);
	CK_EQ(mfs_xfarray_unset_count(a), far - 1);
	CK_EQ(mfs_xfarray_flush(a), 0);
	CK_EQ(fstat(fd, &st), 0);
	CK_TRUE((uint64_t)st.st_size >= (1ull << 40));
	ck_assert_int_lt(st.st_blocks * 512, 1 << 20);	/* sparse */
	CK_EQ(mfs_xfarray_iter(a, &cur, out, &idx), 1);
	CK_EQ(idx, 3);
	double t0 = tu_now();
	CK_EQ(mfs_xfarray_iter(a, &cur, out, &idx), 1);
	CK_EQ(idx, far);
	CK_MEM(out, r, 16);
	CK_EQ(mfs_xfarray_iter(a, &cur, out, &idx), 0);
	ck_assert_msg(tu_now() - t0 < 1.0, "hole skipping is too slow");
	CK_EQ(mfs_xfarray_get(a, far, out), 0);
	mfs_xfarray_destroy(a);
	CK_EQ(close(fd), 0);
}
END_TEST

/* A scratch file truncated under the array: -ENOMEM, and the array stays failed. */
START_TEST(test_truncated_file)
{
	int fd = tu_scratch_fd(SCRATCH_MEMFD);
	struct mfs_xfarray *a;
	unsigned char r[32], out[32];

	memset(r, 1, sizeof(r));
	CK_EQ(mfs_xfarray_create(fd, 0, 32, 0, &a), 0);
	for (int k = 0; k < 100000; k++)
		CK_EQ(mfs_xfarray_append(a, r, NULL), 0);
	CK_EQ(mfs_xfarray_flush(a), 0);
	CK_EQ(ftruncate(fd, 4096), 0);
	/* Walk far enough to miss the cache. */
	int rc = 0;
	for (uint64_t k = 0; k < 100000 && rc == 0; k += 1000)
		rc = mfs_xfarray_get(a, k, out);
	CK_EQ(rc, -ENOMEM);
	CK_EQ(mfs_xfarray_get(a, 0, out), -ENOMEM);
	CK_EQ(mfs_xfarray_append(a, r, NULL), -ENOMEM);
	mfs_xfarray_destroy(a);
	CK_EQ(close(fd), 0);
}
END_TEST

/* A scratch file sealed against growth: the write error (EPERM) comes back as such. */
START_TEST(test_sealed_file)
{
	int fd = memfd_create("sealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
	struct mfs_xfarray *a;
	unsigned char r[16];
	int rc = 0;

	ck_assert_int_ge(fd, 0);
	CK_EQ(ftruncate(fd, 65536), 0);
	CK_EQ(fcntl(fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK), 0);
	memset(r, 3, sizeof(r));
	CK_EQ(mfs_xfarray_create(fd, 0, 16, 0, &a), 0);
	for (int k = 0; k < 1000000 && rc == 0; k++)
		rc = mfs_xfarray_append(a, r, NULL);
	CK_EQ(rc, -EPERM);
	mfs_xfarray_destroy(a);
	CK_EQ(close(fd), 0);
}
END_TEST

/* ---- 10M records, heap growth sampled from inside the comparator ------------------------- */

static size_t heap_base, heap_peak;
static unsigned long long cmp_calls;

static size_t heap_now(void)
{
	struct mallinfo2 mi = mallinfo2();

	return mi.uordblks + mi.hblkhd;
}

static int cmp_u64_sampling(const void *a, const void *b, void *priv)
{
	uint64_t x, y;

	if ((++cmp_calls & 0xffff) == 0) {
		size_t h = heap_now();

		if (h > heap_peak)
			heap_peak = h;
	}
	memcpy(&x, a, 8);
	memcpy(&y, b, 8);
	return x < y ? -1 : x > y;
}

START_TEST(test_sort_10m)
{
	const uint64_t n = UNDER_ASAN ? 1000000 : 10000000;
	int fd = tu_scratch_fd(SCRATCH_MEMFD);
	struct mfs_xfarray *a;
	uint64_t r[2], prev = 0, cur = 0, cnt = 0;
	int rc;

	heap_base = heap_now();
	heap_peak = heap_base;
	CK_EQ(mfs_xfarray_create(fd, 0, 16, 0, &a), 0);
	tu_srand(424242);
	double t0 = tu_now();
	for (uint64_t k = 0; k < n; k++) {
		r[0] = tu_rand() | 1;
		r[1] = k;
		CK_EQ(mfs_xfarray_append(a, r, NULL), 0);
	}
	double t1 = tu_now();
	CK_EQ(mfs_xfarray_sort(a, cmp_u64_sampling, NULL), 0);
	double t2 = tu_now();
	size_t h = heap_now();
	if (h > heap_peak)
		heap_peak = h;
	while ((rc = mfs_xfarray_iter(a, &cur, r, NULL)) == 1) {
		CK_TRUE(r[0] >= prev);
		prev = r[0];
		cnt++;
	}
	CK_EQ(rc, 0);
	CK_EQ(cnt, n);
	printf("xfarray: %llu x 16-byte records: fill %.2f s, sort %.2f s (%.1f M rec/s, "
	       "%llu comparisons), heap growth peak %.2f MiB, file %.0f MiB\n",
	       (unsigned long long)n, t1 - t0, t2 - t1, (double)n / (t2 - t1) / 1e6,
	       cmp_calls, (double)(heap_peak - heap_base) / 1048576.0,
	       (double)mfs_xfarray_file_bytes(a) / 1048576.0);
	if (!UNDER_ASAN)
		ck_assert_uint_lt(heap_peak - heap_base, 8u << 20);
	mfs_xfarray_destroy(a);
	CK_EQ(close(fd), 0);
}
END_TEST

static Suite *xfarray_suite(void)
{
	Suite *s = suite_create("xfarray");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_basic);
	tcase_add_test(tc, test_clear_refill);
	tcase_add_loop_test(tc, test_model_memfd, 0, 2);
	tcase_add_loop_test(tc, test_model_tmpfile, 0, 2);
	tcase_add_test(tc, test_sort_patterns);
	tcase_add_loop_test(tc, test_capacity_2_40, 0, 2);
	tcase_add_test(tc, test_truncated_file);
	tcase_add_test(tc, test_sealed_file);
	suite_add_tcase(s, tc);

	tc = tcase_create("big");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_sort_10m);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(xfarray_suite());
}
