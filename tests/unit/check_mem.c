/*
 * check_mem.c — lib/mem.h, the allocation wrappers and their fault injection: disarmed
 * they never fail; arm(skip, count) lets exactly `skip` allocations through and fails
 * exactly `count` (then disarms itself), or every one with count 0 until disarmed;
 * every(n) fails exactly one in n; each wrapper fails the way its libc counterpart does
 * (NULL, the old block kept by realloc, ENOMEM from posix_memalign); counts are exact
 * with several threads allocating at once, and the injected count adds up.
 */
#include <check.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "mem.h"

#include "tu.h"

/* One allocation through the wrapper `kind` (0..4): whether it succeeded. */
static int try_alloc(unsigned kind)
{
	void *p = NULL;

	switch (kind % 5) {
	case 0:
		p = mfs_malloc(32);
		break;
	case 1:
		p = mfs_calloc(4, 8);
		if (p)
			T_TRUE(((char *)p)[31] == 0);
		break;
	case 2:
		p = mfs_realloc(NULL, 48);
		break;
	case 3:
		p = mfs_strdup("mendfs");
		if (p)
			T_TRUE(strcmp(p, "mendfs") == 0);
		break;
	default:
		if (mfs_posix_memalign(&p, 64, 128) != 0)
			p = NULL;
		else
			T_TRUE(((uintptr_t)p & 63) == 0);
		break;
	}
	free(p);
	return p != NULL;
}

START_TEST(test_disarmed)
{
	uint64_t before = mfs_mem_fault_injected();

	mfs_mem_fault_disarm();
	for (unsigned i = 0; i < 1000; i++)
		T_TRUE(try_alloc(i));
	CK_EQ(mfs_mem_fault_injected(), before);
}
END_TEST

START_TEST(test_arm_skip_count)
{
	uint64_t before = mfs_mem_fault_injected();

	mfs_mem_fault_arm(3, 2);
	for (unsigned i = 0; i < 3; i++)
		CK_TRUE(try_alloc(i));
	CK_TRUE(!try_alloc(3));
	CK_TRUE(!try_alloc(4));
	for (unsigned i = 0; i < 50; i++)          /* used up: disarmed by itself */
		CK_TRUE(try_alloc(i));
	CK_EQ(mfs_mem_fault_injected(), before + 2);
	CK_EQ(atomic_load(&mfs_mem_fault_armed), 0);

	/* count 0: every allocation after the skip fails until disarmed */
	mfs_mem_fault_arm(1, 0);
	CK_TRUE(try_alloc(0));
	for (unsigned i = 0; i < 100; i++)
		CK_TRUE(!try_alloc(i));
	mfs_mem_fault_disarm();
	CK_TRUE(try_alloc(0));
	CK_EQ(mfs_mem_fault_injected(), before + 102);
}
END_TEST

START_TEST(test_every)
{
	uint64_t before = mfs_mem_fault_injected();
	unsigned failed = 0;

	mfs_mem_fault_every(5);
	for (unsigned i = 0; i < 100; i++) {
		int ok = try_alloc(i);

		CK_EQ(ok, i % 5 != 4);                   /* the fifth of each five fails */
		failed += !ok;
	}
	mfs_mem_fault_every(0);                          /* 0: off */
	for (unsigned i = 0; i < 20; i++)
		CK_TRUE(try_alloc(i));
	CK_EQ(failed, 20);
	CK_EQ(mfs_mem_fault_injected(), before + 20);
	/* Re-arming restarts the count. */
	mfs_mem_fault_every(2);
	CK_TRUE(try_alloc(0));
	CK_TRUE(!try_alloc(1));
	mfs_mem_fault_disarm();
}
END_TEST

START_TEST(test_realloc_keeps_block)
{
	char *p = mfs_malloc(8), *q;

	ck_assert_ptr_nonnull(p);
	memcpy(p, "abcdefg", 8);
	mfs_mem_fault_arm(0, 1);
	q = mfs_realloc(p, 1 << 20);
	ck_assert_ptr_null(q);
	CK_TRUE(strcmp(p, "abcdefg") == 0);              /* still ours, unchanged */
	q = mfs_realloc(p, 1 << 20);
	ck_assert_ptr_nonnull(q);
	CK_TRUE(strcmp(q, "abcdefg") == 0);
	free(q);
	{
		void *a = (void *)1;

		mfs_mem_fault_arm(0, 1);
		CK_EQ(mfs_posix_memalign(&a, 64, 64), ENOMEM);
		CK_TRUE(a == (void *)1);                 /* left alone, as posix_memalign does */
	}
}
END_TEST

/* Several threads allocating at once: the counts stay exact. */
#define THREADS 4
#define PER     20000
static void *alloc_main(void *arg)
{
	unsigned *ok = arg;

	for (unsigned i = 0; i < PER; i++)
		*ok += try_alloc(i);
	return NULL;
}

static unsigned run_threads(void)
{
	pthread_t th[THREADS];
	unsigned ok[THREADS] = { 0 }, total = 0;

	for (unsigned t = 0; t < THREADS; t++)
		CK_EQ(pthread_create(&th[t], NULL, alloc_main, &ok[t]), 0);
	for (unsigned t = 0; t < THREADS; t++) {
		pthread_join(th[t], NULL);
		total += ok[t];
	}
	return total;
}

/* mfs_mem_tune: a large block freed does not raise the mmap threshold, so the next large
 * array is mmapped on its own (given back whole when freed), not carved from the heap. */
START_TEST(test_tune_fixed_threshold)
{
#if defined(__GLIBC__) && !UNDER_ASAN   /* ASan's allocator ignores mallopt and mallinfo2 */
	void *big, *mid;
	size_t before;

	if (!getenv("TU_MEM_NOTUNE"))
		mfs_mem_tune();
	big = malloc(8u << 20);         /* mmapped: over any threshold's start */
	ck_assert_ptr_nonnull(big);
	memset(big, 1, 4096);
	free(big);                      /* untuned glibc: the threshold rises to 8 MiB */
	before = mallinfo2().hblkhd;
	mid = malloc(1u << 20);
	ck_assert_ptr_nonnull(mid);
	memset(mid, 1, 4096);
	ck_assert_uint_ge(mallinfo2().hblkhd, before + (1u << 20));
	free(mid);
	ck_assert_uint_eq(mallinfo2().hblkhd, before);
#endif
}
END_TEST

START_TEST(test_threads_exact)
{
	uint64_t before = mfs_mem_fault_injected();

	mfs_mem_fault_arm(1000, 300);
	CK_EQ(run_threads(), THREADS * PER - 300);
	CK_EQ(mfs_mem_fault_injected(), before + 300);
	mfs_mem_fault_every(8);
	CK_EQ(run_threads(), THREADS * PER - THREADS * PER / 8);
	mfs_mem_fault_disarm();
	CK_EQ(mfs_mem_fault_injected(), before + 300 + THREADS * PER / 8);
	CK_EQ(run_threads(), THREADS * PER);
}
END_TEST

static Suite *mem_suite(void)
{
	Suite *s = suite_create("mem");
	TCase *tc = tcase_create("faults");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_disarmed);
	tcase_add_test(tc, test_arm_skip_count);
	tcase_add_test(tc, test_every);
	tcase_add_test(tc, test_realloc_keeps_block);
	tcase_add_test(tc, test_threads_exact);
	tcase_add_test(tc, test_tune_fixed_threshold);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(mem_suite());
}
