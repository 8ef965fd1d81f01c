/*
 * bench_repair.c — the repair engine on one AG holding N (default 1,000,000) extents,
 * against xfs_repair on an XFS image with the same extent count.  Printed, never pass/fail
 * (exit 1 only when a mendfs step fails).
 *
 * mendfs: a file (in AG 0) owns N one-block extents in AG 1, every other block (so AG 1's
 * reverse map has N records of it and its free space N one-block extents): AG 1 is written
 * with mfs_ag_format(), the file's extent map is then rebuilt from the reverse map (the
 * MFS_SCRUB_BMAP rebuilder: a btree of N extents).  Then, with the journal attached as in
 * the daemon (BENCH_REPAIR_JOURNAL=0: without) and the buffer cache bounded at
 * BENCH_REPAIR_CACHE_MB (default 32), two online rebuilds of AG 1, scratch in a memfd:
 *   - its free-space trees (by block and by length, from the reverse map);
 *   - its reverse map (from every owner: the inodes scanned, then settled under the lock).
 * For each: wall and CPU time (the rebuilding thread's), scratch used against the estimate,
 * the process's RSS growth (peak during the rebuild over the RSS before it, freed heap
 * given back first with malloc_trim so that it cannot hide what the rebuild touches: the
 * engine's data lives in the scratch file) and the heap's (mallinfo2, sampled), each also
 * up to the commit (the test hook at MFS_REPAIR_AT_BUILT: without the commit and the check
 * the engine runs afterwards), and the p99 latency of 4 KiB writes in another AG —
 * one-block allocations in AG 0 committed (asynchronously, as the daemon's writes are)
 * and freed by a second thread — during the rebuild against the same with no rebuild.
 * BENCH_REPAIR_ROUNDS (default 3) rounds, each from the same image (a copy taken before
 * the first): before each rebuild an idle window of the writes as long as the same
 * rebuild took in the round before (1 s at least), so that idle and during windows
 * alternate under the same machine load.  The table has the median CPU and wall time with
 * the range, the highest RSS, heap and scratch, and per window the p99 (the medians, their
 * ranges, and the verdict on the aim: median during <= 2x median idle).
 *
 * XFS: a sparse image of two AGs as large as the mendfs one (mkfs.xfs -m rmapbt=1), loop
 * mounted, one file fallocated and every other block punched out (N extents, N free
 * extents, N reverse-map records in one AG), unmounted; then `xfs_repair -n` and
 * `xfs_repair`, each timed (wall, CPU, peak RSS from wait4).  Skipped, with the reason,
 * without xfsprogs (tests/bench/bench_deps.sh installs it), without root or a loop device,
 * or with BENCH_REPAIR_XFS=0.
 *
 * The machine may be shared and loaded: CPU time and RSS are steadier than wall time.
 *
 *   bench_repair [N]          BENCH_QUICK=1: N = 100,000; BENCH_DIR: where the images go;
 *                             BENCH_REPAIR_MALLOC_STATS=1: malloc_stats() after each rebuild;
 *                             BENCH_REPAIR_LOG_MB: the journal's size (default 16 MiB; 0: the
 *                             format's default), so that a rebuild must not need a journal
 *                             as large as its tree;
 *                             BENCH_REPAIR_CANCEL=1: each rebuild is first stopped just
 *                             before its commit, AG 1's bytes compared (must not change);
 *                             BENCH_REPAIR_IMAGE=FILE: the image before the rebuilds is
 *                             copied from FILE when it exists (N and the journal size must
 *                             match: no bmap column then), else saved there (to profile the
 *                             rebuilds alone);
 *                             BENCH_REPAIR_ROUNDS=k: rounds (1..16, default 3);
 *                             BENCH_REPAIR_ONLY=rmap (bno): the reverse map's (the
 *                             free-space trees') rebuild alone;
 *                             BENCH_REPAIR_MEMTRACE=1: where the memory is at each point
 *                             (after the commit too: at the start of the accounting and
 *                             after each batch of the reap);
 *                             BENCH_REPAIR_SCRATCH_DIR=DIR: the scratch in an O_TMPFILE
 *                             file in DIR instead of a memfd (mendfs_scrub -T), for sizes
 *                             whose scratch does not fit in memory;
 *                             BENCH_REPAIR_NOTUNE=1: without mfs_mem_tune() (which the
 *                             daemon and mendfs_repair call), to compare;
 *                             BENCH_REPAIR_SLOW=k: the k slowest writes of each rebuild,
 *                             when and in which phase, and whether they blocked
 */
#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <fcntl.h>
#include <inttypes.h>
#include <malloc.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ag.h"
#include "alloc.h"
#include "bcache.h"
#include "crc32c.h"
#include "dev.h"
#include "dir.h"
#include "format.h"
#include "fs.h"
#include "geom.h"
#include "ialloc.h"
#include "journal.h"
#include "inode.h"
#include "log.h"
#include "mem.h"
#include "repair.h"
#include "trans.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double thread_cpu(void)
{
	struct rusage ru;

	getrusage(RUSAGE_THREAD, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static long status_kb(const char *key)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long v = -1;

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, strlen(key)))
			v = strtol(line + strlen(key) + 1, NULL, 10);
	fclose(f);
	return v;
}

/* Reset the peak RSS (VmHWM) to the current RSS; 0 when the kernel allows it. */
static int reset_hwm(void)
{
	int fd = open("/proc/self/clear_refs", O_WRONLY);
	int ok = fd >= 0 && write(fd, "5", 1) == 1;

	if (fd >= 0)
		close(fd);
	return ok ? 0 : -1;
}

/* The heap in use (malloc'd and mmapped by malloc) now, in bytes. */
static double heap_in_use(void)
{
	struct mallinfo2 mi = mallinfo2();

	return (double)mi.uordblks + (double)mi.hblkhd;
}

/* Samples the heap in use every few milliseconds while `on`: its peak. */
struct heapmon {
	atomic_int on, stop;
	_Atomic double peak;
	pthread_t th;
};

static void *heapmon_main(void *arg)
{
	struct heapmon *h = arg;

	while (!atomic_load(&h->stop)) {
		if (atomic_load(&h->on)) {
			double v = heap_in_use();

			if (v > h->peak)
				h->peak = v;
		}
		usleep(10000);
	}
	return NULL;
}

/* What the rebuild had taken when its transaction was built, before the commit and the
 * check afterwards (the test hook at MFS_REPAIR_AT_BUILT). */
struct built {
	struct heapmon *hm;
	double cpu, heap;
	long hwm;
	double at[MFS_REPAIR_AT_BUILT + 1];    /* when each test-hook point was reached */
	unsigned reaps;                        /* MFS_REPAIR_AT_REAPED points seen */
};

/* The scratch file a rebuild is given: a memfd, or with BENCH_REPAIR_SCRATCH_DIR an
 * unnamed file in that directory (as mendfs_scrub -T gives). */
static int scratch_fd(void)
{
	const char *dir = getenv("BENCH_REPAIR_SCRATCH_DIR");

	if (dir && *dir)
		return open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	return memfd_create("bench_repair", MFD_CLOEXEC);
}

/* BENCH_REPAIR_MEMTRACE=1: at each test-hook point, where the resident memory is (anonymous,
 * file, shared: /proc/self/status), the heap (mallinfo2: arena, in use, mmapped) and the
 * buffer cache, so that what grows with the size can be told apart. */
static struct mfs_bcache *trace_bc;

/* BENCH_REPAIR_MEMTRACE=2: the mappings holding 512 KiB or more of the RSS (smaps). */
static void smaps_top(void)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512], name[512] = "";
	unsigned long lo = 0, hi = 0;
	long kb;

	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		char nm[400] = "";

		if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %399[^\n]", &lo, &hi, nm) >= 2 &&
		    strchr(line, '-') && line[0] != 'R' && !strchr(line, ':')) {
			snprintf(name, sizeof(name), "%s", nm);
			continue;
		}
		if (sscanf(line, "Rss: %ld kB", &kb) == 1 && kb >= 512)
			printf("      %8.1f MiB of a %8.1f MiB mapping %s\n", kb / 1024.0,
			       (double)(hi - lo) / 1048576.0, name[0] ? name : "(anonymous)");
	}
	fclose(f);
}

static void memtrace(const char *what)
{
	struct mallinfo2 mi = mallinfo2();
	struct mfs_bcache_stats st;

	if (!getenv("BENCH_REPAIR_MEMTRACE"))
		return;
	mfs_bcache_get_stats(trace_bc, &st);
	printf("    mem %-9s RSS %6.1f (anon %6.1f file %5.1f shmem %5.1f) HWM %6.1f MiB; heap "
	       "arena %6.1f in use %6.1f mmapped %5.1f free %6.1f MiB; cache %zu bufs %.1f MiB "
	       "(peak %.1f)\n",
	       what, status_kb("VmRSS:") / 1024.0, status_kb("RssAnon:") / 1024.0,
	       status_kb("RssFile:") / 1024.0, status_kb("RssShmem:") / 1024.0,
	       status_kb("VmHWM:") / 1024.0, mi.arena / 1048576.0, mi.uordblks / 1048576.0,
	       mi.hblkhd / 1048576.0, mi.fordblks / 1048576.0, st.nbufs, st.bytes / 1048576.0,
	       st.peak_bytes / 1048576.0);
	if (atoi(getenv("BENCH_REPAIR_MEMTRACE")) >= 2)
		smaps_top();
	fflush(stdout);
}

static int built_hook(void *arg, enum mfs_repair_point at)
{
	static const char *const names[] = { "start", "reserved", "gathered", "sorting",
					     "built" };
	struct built *b = arg;

	if (at <= MFS_REPAIR_AT_BUILT && !b->at[at]) {
		memtrace(names[at]);
		b->at[at] = now();
	}
	if (at == MFS_REPAIR_AT_ACCOUNTING)
		memtrace("account");
	if (at == MFS_REPAIR_AT_REAPED) {
		char what[32];

		/* the first call is right after the commit (or after the accounting) */
		snprintf(what, sizeof(what), "reap %u", b->reaps++);
		memtrace(what);
	}
	if (at == MFS_REPAIR_AT_BUILT) {
		b->cpu = thread_cpu();
		b->hwm = status_kb("VmHWM:");
		b->heap = b->hm->peak;
	}
	return 0;
}

static char path[4096];        /* the mendfs image, removed however the bench ends */
static char pristine[4200];    /* its copy before the rebuilds, the same */

static int die(const char *what, int err)
{
	fprintf(stderr, "bench_repair: %s: %s\n", what, strerror(err < 0 ? -err : err));
	if (path[0])
		unlink(path);
	if (pristine[0])
		unlink(pristine);
	exit(1);
}

/* ---- one-block allocations in AG 0, timed -------------------------------------------------- */
#define LAT_MAX 200000

struct lat {
	struct mfs_fs *fs;
	atomic_int stop;
	atomic_int phase;              /* 0 idle, 1 rebuild running, 2 not recording */
	double *v[2], *t[2];           /* each write's latency and start */
	long *sw[2];                   /* its voluntary (blocked: a lock, I/O) context switches
					* * 1000 + involuntary (preempted: the CPU) ones, */
	unsigned char *step[2];        /* and its slowest step (enum lat_step) */
	atomic_size_t n[2];
	uint64_t owner, off;
	int err;
};

enum lat_step { LS_TRANS, LS_ALLOC, LS_COMMIT, LS_FREE, LS_FREE_COMMIT, LS_N };
static const char *const lat_step_names[LS_N] = {
	"mfs_trans_alloc", "mfs_alloc_extent", "its commit", "mfs_free_extent", "its commit"
};

static void *lat_main(void *arg)
{
	struct lat *l = arg;

	while (!atomic_load(&l->stop)) {
		struct mfs_alloc_args a;
		struct mfs_trans *tp = NULL;
		int ph = atomic_load(&l->phase);
		struct rusage r0, r1;
		double ts[LS_N + 1];
		unsigned slow = 0;
		int err;

		getrusage(RUSAGE_THREAD, &r0);
		ts[LS_TRANS] = now();
		err = mfs_trans_alloc(l->fs, &tp);
		ts[LS_ALLOC] = now();
		memset(&a, 0, sizeof(a));
		a.type = MFS_ALLOC_NEAR;
		a.target = 100;
		a.minlen = a.maxlen = 1;
		a.owner = l->owner;
		a.offset = l->off;
		if (!err)
			err = mfs_alloc_extent(tp, &a);
		ts[LS_COMMIT] = now();
		if (!err)
			err = mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, NULL);
		else if (tp)
			mfs_trans_cancel(tp);
		ts[LS_FREE] = now();
		if (!err) {
			/* give it back at once so that AG 0 never fills */
			err = mfs_trans_alloc(l->fs, &tp);
			if (!err)
				err = mfs_free_extent(tp, a.fsb, 1, l->owner, l->off);
			ts[LS_FREE_COMMIT] = now();
			if (!err)
				err = mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, NULL);
			else if (tp)
				mfs_trans_cancel(tp);
		}
		ts[LS_N] = now();
		if (err) {
			l->err = err;
			break;
		}
		l->off += 2;
		for (unsigned k = 1; k < LS_N; k++)
			if (ts[k + 1] - ts[k] > ts[slow + 1] - ts[slow])
				slow = k;
		if (ph < 2) {
			size_t i = atomic_load(&l->n[ph]);

			if (i < LAT_MAX) {
				l->v[ph][i] = ts[LS_N] - ts[0];
				l->t[ph][i] = ts[0];
				getrusage(RUSAGE_THREAD, &r1);
				l->sw[ph][i] = (r1.ru_nvcsw - r0.ru_nvcsw) * 1000 +
					       (r1.ru_nivcsw - r0.ru_nivcsw);
				l->step[ph][i] = (unsigned char)slow;
				atomic_store(&l->n[ph], i + 1);
			}
		}
		usleep(200);           /* the same pace idle and during the rebuild */
	}
	return NULL;
}

static int cmp_d(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double p99(double *v, size_t n)
{
	if (!n)
		return 0;
	qsort(v, n, sizeof(*v), cmp_d);
	return v[n * 99 / 100];
}

/* ---- one measured column ------------------------------------------------------------------- */
#define BENCH_ROUNDS_MAX 16
struct col {
	const char *name;
	int ran, ok;
	char why[1100];
	uint64_t records;
	double nrec;                   /* records, for the table */
	double wall, cpu, rss_mb;      /* rss_mb < 0: not measured */
	double cache_mb;               /* the buffer cache's peak's growth, part of rss_mb */
	double heap_mb;                /* peak of the heap in use over its level before */
	double cpu_b, rss_b, heap_b;   /* the same up to the commit (without the check after) */
	double used_mb, est_mb;        /* < 0: not applicable */
	/* rounds (an idle window, then the rebuild): CPU is their median, RSS and heap their
	 * highest; p99 of the 4 KiB writes in AG 0 per window, us (< 0: not applicable) */
	unsigned rounds;
	double cpu_lo, cpu_hi;
	double p99_idle, p99_busy;     /* medians over the windows */
	double p99_idle_lo, p99_idle_hi, p99_busy_lo, p99_busy_hi;
	double p99_ratio;              /* p99_busy / p99_idle */
	double blk_idle, blk_busy;     /* medians of the % of writes that blocked */
	double p99_win[2][BENCH_ROUNDS_MAX];   /* [idle, during][round] */
};

/* A repair of AG 1's object `type`, scratch in fd, with a test hook. */
static void ag1_ctx(struct mfs_repair_ctx *rc, struct mfs_fs *fs, uint32_t type, int fd,
		    int (*hook)(void *, enum mfs_repair_point), void *arg)
{
	rc->fs = fs;
	rc->type = type;
	rc->agno = 1;
	rc->fds[0] = fd;
	rc->nfds = 1;
	rc->test_hook = hook;
	rc->hook_arg = arg;
}

/* What one round measured. */
struct round {
	int err;
	char why[1024];
	uint64_t records;
	double wall, cpu, rss_mb, cache_mb, heap_mb, cpu_b, rss_b, heap_b, used_mb, est_mb;
	double p99_idle, p99_busy;
	size_t n_idle, n_busy;
	double blk_idle, blk_busy;     /* % of the writes that blocked (lock, I/O) */
};

/* The writes in AG 0 with no rebuild, for `secs` and at least 1,000 of them (20 s at most). */
static void idle_window(struct lat *l, double secs)
{
	double t0 = now(), deadline = t0 + 20;

	atomic_store(&l->n[0], 0);
	atomic_store(&l->n[1], 0);
	atomic_store(&l->phase, 0);
	while (!l->err && now() < deadline &&
	       (now() - t0 < secs || atomic_load(&l->n[0]) < 1000))
		usleep(10000);
}

/* Of the n writes of window ph, the share that blocked at least once (%). */
static double blocked_pct(const struct lat *l, int ph, size_t n)
{
	size_t b = 0;

	for (size_t i = 0; i < n; i++)
		b += l->sw[ph][i] >= 1000;
	return n ? 100.0 * (double)b / (double)n : 0;
}

/* BENCH_REPAIR_SLOW=k: the k slowest writes during a rebuild, when they started (ms after
 * the rebuild's start) and in which of its phases (the test hook's points). */
static void slowest(const struct lat *l, size_t n, double t0, const struct built *bt, int k)
{
	static const char *const phase[] = { "reserving", "gathering", "sorting, building",
					     "sorting, building", "building" };
	char *used = calloc(n ? n : 1, 1);

	if (!used)
		return;
	for (int j = 0; j < k; j++) {
		size_t w = n;
		const char *ph = "commit+check";

		for (size_t i = 0; i < n; i++)
			if (!used[i] && (w == n || l->v[1][i] > l->v[1][w]))
				w = i;
		if (w == n)
			break;
		used[w] = 1;
		for (int a = 0; a <= MFS_REPAIR_AT_BUILT; a++)
			if (a == MFS_REPAIR_AT_BUILT || (bt->at[a + 1] && l->t[1][w] < bt->at[a + 1]) ||
			    !bt->at[a + 1]) {
				if (a < MFS_REPAIR_AT_BUILT || l->t[1][w] < bt->at[a])
					ph = phase[a];
				break;
			}
		printf("    slow write: %.0f us at +%.0f ms (%s), blocked %ld, preempted %ld "
		       "times, mostly in %s\n", l->v[1][w] * 1e6, (l->t[1][w] - t0) * 1e3, ph,
		       l->sw[1][w] / 1000, l->sw[1][w] % 1000, lat_step_names[l->step[1][w]]);
	}
	{
		size_t by[LS_N] = { 0 };

		for (size_t i = 0; i < n; i++)
			if (l->sw[1][i] >= 1000)
				by[l->step[1][i]]++;
		printf("    writes that blocked, by their slowest step:");
		for (int st = 0; st < LS_N; st++)
			printf(" %s%s %zu", lat_step_names[st], st == LS_COMMIT ? " (alloc)" :
			       st == LS_FREE_COMMIT ? " (free)" : "", by[st]);
		printf("\n");
	}
	printf("    points: reserved +%.0f, gathered +%.0f, built +%.0f ms\n",
	       bt->at[1] ? (bt->at[1] - t0) * 1e3 : -1, bt->at[2] ? (bt->at[2] - t0) * 1e3 : -1,
	       bt->at[4] ? (bt->at[4] - t0) * 1e3 : -1);
	free(used);
}

/* One rebuild of AG 1 (type), timed, beside the allocations of l, after an idle window of
 * idle_s seconds of them. */
static void rebuild_round(struct mfs_fs *fs, struct lat *l, uint32_t type, double idle_s,
			  struct round *o)
{
	struct mfs_repair_ctx *rc = calloc(1, sizeof(*rc));
	int fd = scratch_fd();
	struct mfs_bcache_stats st0, st1;
	struct heapmon hm;
	struct built bt = { .hm = &hm };
	double t0, c0, heap0;
	long rss0, hwm;

	memset(o, 0, sizeof(*o));
	if (fd < 0 || !rc)
		die("memfd", errno);
	idle_window(l, idle_s);
	ag1_ctx(rc, fs, type, fd, built_hook, &bt);
	/* freed heap still resident (the image's making, an earlier round) must not hide
	 * what this rebuild touches: give it back before the RSS is taken */
	malloc_trim(0);
	if (reset_hwm())
		fprintf(stderr, "bench_repair: /proc/self/clear_refs: the peak RSS is the "
			"process's since its start\n");
	mfs_bcache_get_stats(fs->bc, &st0);
	trace_bc = fs->bc;
	memtrace("before");
	rss0 = status_kb("VmRSS:");
	memset(&hm, 0, sizeof(hm));
	heap0 = hm.peak = heap_in_use();
	atomic_store(&hm.on, 1);
	if (pthread_create(&hm.th, NULL, heapmon_main, &hm))
		die("thread", EAGAIN);
	atomic_store(&l->phase, 1);
	t0 = now();
	c0 = thread_cpu();
	o->err = mfs_repair(rc);
	o->cpu = thread_cpu() - c0;
	o->wall = now() - t0;
	atomic_store(&l->phase, 2);
	atomic_store(&hm.stop, 1);
	pthread_join(hm.th, NULL);
	o->heap_mb = (hm.peak - heap0) / 1048576.0;
	o->cpu_b = bt.hwm ? bt.cpu - c0 : -1;
	o->heap_b = bt.hwm ? (bt.heap - heap0) / 1048576.0 : -1;
	hwm = status_kb("VmHWM:");
	memtrace("after");
	mfs_bcache_get_stats(fs->bc, &st1);
	if (getenv("BENCH_REPAIR_MALLOC_STATS")) {
		/* where the RSS went: the heap in use now against what it took at its peak */
		fprintf(stderr, "after the rebuild of type %u (cache %zu buffers, %zu dirty):\n",
			type, st1.nbufs, st1.ndirty);
		malloc_stats();
	}
	o->rss_mb = (double)(hwm - rss0) / 1024.0;
	o->rss_b = bt.hwm ? (double)(bt.hwm - rss0) / 1024.0 : -1;
	/* the cache's memory is its peak (its block chunks are kept): how much the rebuild
	 * raised it */
	o->cache_mb = ((double)st1.peak_bytes - (double)st0.peak_bytes) / 1048576.0;
	o->records = rc->records;
	o->used_mb = rc->scratch_used / 1048576.0;
	o->est_mb = rc->estimate / 1048576.0;
	o->n_idle = atomic_load(&l->n[0]);
	o->n_busy = atomic_load(&l->n[1]);
	if (getenv("BENCH_REPAIR_SLOW"))
		slowest(l, o->n_busy, t0, &bt, atoi(getenv("BENCH_REPAIR_SLOW")));
	o->blk_idle = blocked_pct(l, 0, o->n_idle);
	o->blk_busy = blocked_pct(l, 1, o->n_busy);
	o->p99_idle = p99(l->v[0], o->n_idle) * 1e6;
	o->p99_busy = p99(l->v[1], o->n_busy) * 1e6;
	if (o->err)
		snprintf(o->why, sizeof(o->why), "%s", rc->reason);
	else
		printf("rebuild of type %u: %.2f s wall, %.2f s CPU, RSS growth %.1f MiB; p99 of "
		       "4 KiB writes in AG 0: idle %.0f us (%zu writes, %.1f%% blocked), during "
		       "%.0f us (%zu writes, %.1f%% blocked)\n", type, o->wall, o->cpu, o->rss_mb,
		       o->p99_idle, o->n_idle, o->blk_idle, o->p99_busy, o->n_busy, o->blk_busy);
	fflush(stdout);
	free(rc);
	close(fd);
}

static double median(double *v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_d);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double maxd(double a, double b)
{
	return a > b ? a : b;
}

/* The column of a rebuild from its k rounds: CPU and wall time the medians, RSS, heap and
 * scratch the highest; the p99 of each window, their medians and ranges.  A failed round
 * fails the column (its reason shown). */
static void summarize(struct col *c, struct round *rs, unsigned k)
{
	double cpu[BENCH_ROUNDS_MAX], cpub[BENCH_ROUNDS_MAX], wall[BENCH_ROUNDS_MAX],
	       pi[BENCH_ROUNDS_MAX], pb[BENCH_ROUNDS_MAX], bi[BENCH_ROUNDS_MAX],
	       bb[BENCH_ROUNDS_MAX];

	c->ran = 1;
	c->ok = k > 0;
	c->rounds = k;
	c->p99_idle = c->p99_busy = c->p99_ratio = c->blk_idle = c->blk_busy = -1;
	c->rss_mb = c->cache_mb = c->heap_mb = c->rss_b = c->heap_b = c->used_mb = -1e9;
	for (unsigned i = 0; i < k; i++) {
		const struct round *o = &rs[i];

		if (o->err) {
			c->ok = 0;
			if (!c->why[0])
				snprintf(c->why, sizeof(c->why), "round %u: %s", i + 1, o->why);
			continue;
		}
		cpu[i] = o->cpu;
		cpub[i] = o->cpu_b;
		wall[i] = o->wall;
		pi[i] = c->p99_win[0][i] = o->p99_idle;
		pb[i] = c->p99_win[1][i] = o->p99_busy;
		bi[i] = o->blk_idle;
		bb[i] = o->blk_busy;
		c->records = o->records;
		c->rss_mb = maxd(c->rss_mb, o->rss_mb);
		c->cache_mb = maxd(c->cache_mb, o->cache_mb);
		c->heap_mb = maxd(c->heap_mb, o->heap_mb);
		c->rss_b = maxd(c->rss_b, o->rss_b);
		c->heap_b = maxd(c->heap_b, o->heap_b);
		c->used_mb = maxd(c->used_mb, o->used_mb);
		c->est_mb = o->est_mb;
	}
	if (!c->ok)
		return;
	c->cpu = median(cpu, k);
	c->cpu_b = median(cpub, k);
	c->cpu_lo = cpu[0];
	c->cpu_hi = cpu[k - 1];
	c->wall = median(wall, k);
	c->p99_idle = median(pi, k);
	c->p99_idle_lo = pi[0];
	c->p99_idle_hi = pi[k - 1];
	c->p99_busy = median(pb, k);
	c->p99_busy_lo = pb[0];
	c->p99_busy_hi = pb[k - 1];
	c->p99_ratio = c->p99_idle > 0 ? c->p99_busy / c->p99_idle : -1;
	c->blk_idle = median(bi, k);
	c->blk_busy = median(bb, k);
}

/* ---- a cancelled rebuild leaves the image as it was ------------------------------------- */
static int cancel_hook(void *arg, enum mfs_repair_point at)
{
	(void)arg;
	return at == MFS_REPAIR_AT_BUILT ? -ECANCELED : 0;
}

/* CRC of AG 1's bytes on the device. */
static uint32_t ag1_crc(struct mfs_fs *fs)
{
	const struct mfs_geom *g = &fs->geo;
	uint64_t off = (uint64_t)g->agblocks * g->blocksize;
	uint64_t end = off + (uint64_t)mfs_ag_length(g, 1) * g->blocksize;
	size_t len = 1u << 20;
	char *buf = malloc(len);
	uint32_t crc = 0;
	int fd = open(path, O_RDONLY);

	if (!buf || fd < 0)
		die("reading the image", errno);
	for (; off < end; off += len) {
		size_t n = end - off < len ? (size_t)(end - off) : len;

		if (pread(fd, buf, n, (off_t)off) != (ssize_t)n)
			die("reading the image", EIO);
		crc = mfs_crc32c(crc, buf, n);
	}
	close(fd);
	free(buf);
	return crc;
}

/* BENCH_REPAIR_CANCEL=1: a rebuild of `type` stopped at its last point before the commit
 * (the test hook), with everything of AG 1 written first: its bytes must be as before —
 * the ordered new blocks' old bytes put back, nothing else written. */
static void cancelled_rebuild(struct mfs_fs *fs, uint32_t type)
{
	struct mfs_repair_ctx *rc = calloc(1, sizeof(*rc));
	int fd = scratch_fd();
	uint32_t c0, c1;
	int err;

	if (!rc || fd < 0)
		die("memfd", errno);
	err = fs->log ? mfs_journal_checkpoint(fs->log) : 0;
	if (!err)
		err = mfs_bcache_flush(fs->bc);
	if (err)
		die("flushing before the cancelled rebuild", err);
	c0 = ag1_crc(fs);
	ag1_ctx(rc, fs, type, fd, cancel_hook, NULL);
	err = mfs_repair(rc);
	c1 = ag1_crc(fs);
	printf("rebuild of type %u stopped before its commit: %s (%s); AG 1 %s\n", type,
	       err == -ECANCELED ? "cancelled" : "NOT cancelled", rc->reason,
	       c0 == c1 ? "unchanged" : "CHANGED");
	free(rc);
	close(fd);
	if (err != -ECANCELED || c0 != c1)
		die("cancelled rebuild", EIO);
}

/* ---- the mendfs image ------------------------------------------------------------------------ */
static uint64_t new_file(struct mfs_fs *fs, uint64_t size)
{
	struct mfs_inode *dp, *ip;
	struct mfs_trans *tp;
	uint64_t ino = 0;
	int err = mfs_iget(fs, fs->geo.rootino, 0, &dp);

	if (err)
		die("root inode", err);
	pthread_rwlock_wrlock(&dp->lock);
	err = mfs_trans_alloc(fs, &tp);
	if (!err)
		err = mfs_ialloc(tp, fs->geo.rootino, S_IFREG | 0644, &ino);
	if (!err)
		err = mfs_iget(fs, ino, 0, &ip);
	if (err)
		die("new file", err);
	pthread_rwlock_wrlock(&ip->lock);
	ip->nlink = 1;
	ip->size = size;
	err = mfs_inode_log(tp, ip);
	if (!err)
		err = mfs_dir_add(tp, dp, "frag", 4, ino, DT_REG);
	if (!err)
		err = mfs_inode_log(tp, dp);
	if (!err)
		err = mfs_trans_commit(tp);
	if (err)
		die("new file", err);
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	pthread_rwlock_unlock(&dp->lock);
	mfs_iput(dp);
	return ino;
}

static void close_fs(struct mfs_fs *fs)
{
	int err = mfs_icache_destroy(fs);

	if (!err)
		err = mfs_fs_close(fs);
	if (err)
		die("close", err);
}

/* Format the image, give a file n extents in AG 1, rebuild its extent map from them. */
static void make_mendfs(uint64_t n, uint64_t bytes, uint32_t agblocks, uint64_t logmb,
			struct col *bmap)
{
	struct mfs_format_opts o;
	struct mfs_format_layout L;
	struct mfs_ag_extent *used;
	struct mfs_repair_ctx *rc;
	struct mfs_dev *dev;
	struct mfs_fs *fs;
	uint64_t ino;
	uint32_t first;
	double t0, c0;
	int fd, err;

	memset(&o, 0, sizeof(o));
	o.blocksize = 4096;
	o.agcount = 2;
	o.logbytes = logmb << 20;
	err = mfs_format_layout(&o, bytes, NULL, &L);
	if (!err)
		err = mfs_dev_open(path, MFS_DEV_CREATE | MFS_DEV_EXCL, &dev);
	if (!err)
		err = mfs_dev_set_size(dev, bytes);
	if (!err)
		err = mfs_format_write(dev, &o, &L);
	if (err)
		die("format", err);
	err = mfs_fs_open(path, MFS_OPEN_EXCL, 256u << 20, &fs);
	if (!err)
		err = mfs_icache_init(fs, 0);
	if (err)
		die("open", err);
	ino = new_file(fs, (2 * n + 2) * 4096ull);
	agblocks = mfs_ag_length(&fs->geo, 1);
	first = MFS_AG_FIXED_BLOCKS + mfs_ag_format_blocks(&fs->geo) + 64;
	used = malloc(n * sizeof(*used));
	if (!used)
		die("malloc", ENOMEM);
	for (uint64_t i = 0; i < n; i++) {
		used[i].agbno = first + 2 * (uint32_t)i;
		used[i].len = 1;
		used[i].owner = ino;
		used[i].offset = 2 * i;
	}
	if (used[n - 1].agbno + 1 >= agblocks)
		die("AG too small", EINVAL);
	t0 = now();
	err = mfs_ag_format(fs, 1, used, (unsigned)n, NULL, 0);
	free(used);
	if (err)
		die("AG format", err);
	printf("AG 1 of %u blocks with %" PRIu64 " extents of inode %" PRIu64 " written in "
	       "%.1f s\n", agblocks, n, ino, now() - t0);
	/* the file's extent map, from the reverse map */
	fd = scratch_fd();
	rc = calloc(1, sizeof(*rc));
	if (fd < 0 || !rc)
		die("memfd", errno);
	rc->fs = fs;
	rc->type = MFS_SCRUB_BMAP;
	rc->ino = ino;
	rc->fds[0] = fd;
	rc->nfds = 1;
	bmap->ran = 1;
	bmap->rss_mb = bmap->cache_mb = bmap->heap_mb = bmap->p99_idle = bmap->p99_busy = -1;
	bmap->p99_ratio = bmap->blk_idle = bmap->blk_busy = -1;
	bmap->cpu_b = bmap->rss_b = bmap->heap_b = -1;
	t0 = now();
	c0 = thread_cpu();
	err = mfs_repair(rc);
	bmap->cpu = thread_cpu() - c0;
	bmap->wall = now() - t0;
	bmap->ok = !err;
	bmap->records = rc->records;
	bmap->used_mb = rc->scratch_used / 1048576.0;
	bmap->est_mb = rc->estimate / 1048576.0;
	if (err)
		snprintf(bmap->why, sizeof(bmap->why), "%s", rc->reason);
	free(rc);
	close(fd);
	close_fs(fs);
}

/* Copy an image (sparse): 0 or -1. */
static int copy_file(const char *from, const char *to)
{
	char cmd[9000];

	snprintf(cmd, sizeof(cmd), "cp --sparse=always '%s' '%s'", from, to);
	return system(cmd) == 0 ? 0 : -1;
}

/* ---- XFS ------------------------------------------------------------------------------------- */
/* Run argv, wait: its exit status, wall time, CPU time and peak RSS (MiB). */
static int run_timed(char *const argv[], double *wall, double *cpu, double *rss_mb)
{
	struct rusage ru;
	double t0 = now();
	int st = 0;
	pid_t pid = fork();

	if (pid < 0)
		return -1;
	if (pid == 0) {
		int nul = open("/dev/null", O_WRONLY);

		if (nul >= 0) {
			dup2(nul, 1);
			dup2(nul, 2);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	if (wait4(pid, &st, 0, &ru) != pid)
		return -1;
	*wall = now() - t0;
	*cpu = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	*rss_mb = ru.ru_maxrss / 1024.0;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

static int have(const char *prog)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null 2>&1", prog);
	return system(cmd) == 0;
}


/* An XFS image with one file of n extents (every other block punched) in one AG. */
static void xfs_cols(uint64_t n, uint64_t agblocks, const char *dir, struct col *xn,
		     struct col *xr)
{
	char img[4096], mnt[4096], file[4200], opts[128], loopdev[256] = "";
	char *argv_n[] = { "xfs_repair", "-n", img, NULL };
	char *argv_r[] = { "xfs_repair", img, NULL };
	double t0, tpunch;
	FILE *p;
	int fd, st = 0, mounted = 0;

	xn->rss_mb = xr->rss_mb = 0;
	xn->cache_mb = xr->cache_mb = xn->heap_mb = xr->heap_mb = -1;
	xn->cpu_b = xr->cpu_b = xn->rss_b = xr->rss_b = xn->heap_b = xr->heap_b = -1;
	xn->used_mb = xn->est_mb = xr->used_mb = xr->est_mb = -1;
	xn->p99_idle = xn->p99_busy = xr->p99_idle = xr->p99_busy = -1;
	xn->p99_ratio = xr->p99_ratio = -1;
	xn->blk_idle = xn->blk_busy = xr->blk_idle = xr->blk_busy = -1;
	if (getenv("BENCH_REPAIR_XFS") && !strcmp(getenv("BENCH_REPAIR_XFS"), "0")) {
		snprintf(xn->why, sizeof(xn->why), "BENCH_REPAIR_XFS=0");
		return;
	}
	if (!have("mkfs.xfs") || !have("xfs_repair") || !have("losetup")) {
		snprintf(xn->why, sizeof(xn->why), "no xfsprogs (apt-get install xfsprogs; "
			 "make bench installs it as root)");
		return;
	}
	if (geteuid() != 0) {
		snprintf(xn->why, sizeof(xn->why), "not root: no loop mount to make the image");
		return;
	}
	snprintf(img, sizeof(img), "%s/bench_repair.%d.xfs", dir, (int)getpid());
	snprintf(mnt, sizeof(mnt), "%s/bench_repair.%d.mnt", dir, (int)getpid());
	snprintf(file, sizeof(file), "%s/frag", mnt);
	/* two AGs: the image is twice the AG size */
	snprintf(opts, sizeof(opts), "agsize=%" PRIu64 "b", agblocks);
	fd = open(img, O_RDWR | O_CREAT | O_EXCL, 0600);
	if (fd < 0 || ftruncate(fd, (off_t)(2 * agblocks * 4096))) {
		snprintf(xn->why, sizeof(xn->why), "image: %s", strerror(errno));
		goto out;
	}
	close(fd);
	fd = -1;
	{
		char cmd[4400];

		snprintf(cmd, sizeof(cmd), "mkfs.xfs -q -f -b size=4096 -m rmapbt=1 -d %s '%s' "
			 ">/dev/null 2>&1", opts, img);
		st = system(cmd);
	}
	if (st || mkdir(mnt, 0700)) {
		snprintf(xn->why, sizeof(xn->why), "mkfs.xfs -d %s failed", opts);
		goto out;
	}
	{
		char cmd[4300];

		snprintf(cmd, sizeof(cmd), "losetup -f --show '%s'", img);
		p = popen(cmd, "r");
		if (!p || !fgets(loopdev, sizeof(loopdev), p))
			loopdev[0] = 0;
		if (p)
			pclose(p);
		loopdev[strcspn(loopdev, "\n")] = 0;
	}
	if (!loopdev[0] || mount(loopdev, mnt, "xfs", 0, NULL)) {
		snprintf(xn->why, sizeof(xn->why), "loop mount of the XFS image: %s",
			 loopdev[0] ? strerror(errno) : "no loop device");
		goto out;
	}
	mounted = 1;
	t0 = now();
	fd = open(file, O_RDWR | O_CREAT, 0644);
	if (fd < 0 || fallocate(fd, 0, 0, (off_t)(2 * n * 4096))) {
		snprintf(xn->why, sizeof(xn->why), "fallocate of %" PRIu64 " blocks: %s", 2 * n,
			 strerror(errno));
		goto out;
	}
	for (uint64_t i = 0; i < n; i++)
		if (fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)((2 * i + 1) * 4096), 4096)) {
			snprintf(xn->why, sizeof(xn->why), "punching block %" PRIu64 ": %s",
				 2 * i + 1, strerror(errno));
			goto out;
		}
	close(fd);
	fd = -1;
	tpunch = now() - t0;
	if (umount(mnt)) {
		snprintf(xn->why, sizeof(xn->why), "umount: %s", strerror(errno));
		goto out;
	}
	mounted = 0;
	printf("XFS image: one file of %" PRIu64 " extents made in %.1f s (fallocate, punch)\n",
	       n, tpunch);
	xn->ran = xr->ran = 1;
	xn->records = xr->records = n;
	st = run_timed(argv_n, &xn->wall, &xn->cpu, &xn->rss_mb);
	xn->ok = st == 0;
	if (!xn->ok)
		snprintf(xn->why, sizeof(xn->why), "xfs_repair -n exited %d", st);
	st = run_timed(argv_r, &xr->wall, &xr->cpu, &xr->rss_mb);
	xr->ok = st == 0;
	if (!xr->ok)
		snprintf(xr->why, sizeof(xr->why), "xfs_repair exited %d", st);
out:
	if (fd >= 0)
		close(fd);
	if (mounted && umount(mnt))
		umount2(mnt, MNT_DETACH);
	if (loopdev[0]) {
		char cmd[400];

		snprintf(cmd, sizeof(cmd), "losetup -d '%s' 2>/dev/null", loopdev);
		if (system(cmd))
			fprintf(stderr, "bench_repair: losetup -d %s failed\n", loopdev);
	}
	rmdir(mnt);
	unlink(img);
	if (!xn->ran && !xr->why[0])
		snprintf(xr->why, sizeof(xr->why), "%s", xn->why);
}

/* ---- the table ------------------------------------------------------------------------------- */
static void cell(const struct col *c, double v, int prec)
{
	char s[64];

	if (!c->ran || !c->ok)
		snprintf(s, sizeof(s), "%s", c->ran ? "failed" : "-");
	else if (v < 0)
		snprintf(s, sizeof(s), "n/a");
	else
		snprintf(s, sizeof(s), "%.*f", prec, v);
	printf(" %16s", s);
}

/* One row: the double at byte offset `off` of each column. */
static void row(const struct col *c, unsigned nc, const char *label, size_t off, int prec)
{
	printf("\n%-28s", label);
	for (unsigned i = 0; i < nc; i++)
		cell(&c[i], *(const double *)((const char *)&c[i] + off), prec);
}

/* One row of ranges "lo-hi" (n/a without rounds). */
static void range_row(const struct col *c, unsigned nc, const char *label, size_t lo,
		      size_t hi, int prec)
{
	printf("\n%-28s", label);
	for (unsigned i = 0; i < nc; i++) {
		char s[64];

		if (!c[i].ran || !c[i].ok)
			snprintf(s, sizeof(s), "%s", c[i].ran ? "failed" : "-");
		else if (!c[i].rounds)
			snprintf(s, sizeof(s), "n/a");
		else
			snprintf(s, sizeof(s), "%.*f-%.*f", prec,
				 *(const double *)((const char *)&c[i] + lo), prec,
				 *(const double *)((const char *)&c[i] + hi));
		printf(" %16s", s);
	}
}

static void table(struct col *c, unsigned nc)
{
	printf("\n%-28s", "");
	for (unsigned i = 0; i < nc; i++) {
		printf(" %16s", c[i].name);
		c[i].nrec = (double)c[i].records;
	}
	row(c, nc, "records / extents", offsetof(struct col, nrec), 0);
	row(c, nc, "wall s", offsetof(struct col, wall), 2);
	row(c, nc, "CPU s (median of rounds)", offsetof(struct col, cpu), 2);
	range_row(c, nc, "  range", offsetof(struct col, cpu_lo), offsetof(struct col, cpu_hi),
		  2);
	row(c, nc, "  of it up to the commit", offsetof(struct col, cpu_b), 2);
	row(c, nc, "RSS growth / peak MiB", offsetof(struct col, rss_mb), 1);
	row(c, nc, "  of it buffer cache MiB", offsetof(struct col, cache_mb), 1);
	row(c, nc, "  up to the commit MiB", offsetof(struct col, rss_b), 1);
	row(c, nc, "heap in use growth MiB", offsetof(struct col, heap_mb), 1);
	row(c, nc, "  up to the commit MiB", offsetof(struct col, heap_b), 1);
	row(c, nc, "scratch used MiB", offsetof(struct col, used_mb), 1);
	row(c, nc, "scratch estimate MiB", offsetof(struct col, est_mb), 1);
	row(c, nc, "p99 4K write AG 0 idle us", offsetof(struct col, p99_idle), 0);
	range_row(c, nc, "  range of the windows", offsetof(struct col, p99_idle_lo),
		  offsetof(struct col, p99_idle_hi), 0);
	row(c, nc, "p99 ... during rebuild us", offsetof(struct col, p99_busy), 0);
	range_row(c, nc, "  range of the windows", offsetof(struct col, p99_busy_lo),
		  offsetof(struct col, p99_busy_hi), 0);
	row(c, nc, "p99 during / idle", offsetof(struct col, p99_ratio), 2);
	row(c, nc, "writes that blocked, idle %", offsetof(struct col, blk_idle), 1);
	row(c, nc, "  during the rebuild %", offsetof(struct col, blk_busy), 1);
	printf("\n");
	for (unsigned i = 0; i < nc; i++) {
		unsigned over = 0;

		if (!c[i].rounds)
			continue;
		printf("  %s: p99 idle/during per round, us:", c[i].name);
		for (unsigned k = 0; k < c[i].rounds; k++) {
			printf(" %.0f/%.0f", c[i].p99_win[0][k], c[i].p99_win[1][k]);
			over += c[i].p99_win[1][k] > 2 * c[i].p99_win[0][k];
		}
		printf("; aim p99 during <= 2x idle: %s (medians %.2fx; %u of %u rounds over "
		       "2x their own idle window)\n", c[i].p99_ratio >= 0 && c[i].p99_ratio <= 2 ?
		       "met" : "NOT met", c[i].p99_ratio, over, c[i].rounds);
	}
	for (unsigned i = 0; i < nc; i++)
		if (c[i].why[0])
			printf("  %s: %s\n", c[i].name, c[i].why);
	printf("(mendfs RSS: growth of this process's peak over its RSS before the rebuild, of "
	       "which the growth of the buffer cache's peak (bounded by its budget) is shown; xfs_repair: its peak RSS.  Aims: mendfs growth < 32 MiB, scratch within the "
	       "estimate, p99 during <= 2x idle, faster than xfs_repair.  On a loaded machine "
	       "compare CPU time and RSS: wall time varies with the load.)\n");
}

int main(int argc, char **argv)
{
	uint64_t n = getenv("BENCH_QUICK") ? 100000 : 1000000;
	const char *dir = getenv("BENCH_DIR") ? getenv("BENCH_DIR") : "/var/tmp";
	unsigned cache_mb = getenv("BENCH_REPAIR_CACHE_MB") ?
			    (unsigned)atoi(getenv("BENCH_REPAIR_CACHE_MB")) : 32;
	int journal = !getenv("BENCH_REPAIR_JOURNAL") || atoi(getenv("BENCH_REPAIR_JOURNAL"));
	uint64_t logmb = getenv("BENCH_REPAIR_LOG_MB") ?
			 strtoull(getenv("BENCH_REPAIR_LOG_MB"), NULL, 10) : 16;
	const char *keep = getenv("BENCH_REPAIR_IMAGE");
	unsigned rounds = getenv("BENCH_REPAIR_ROUNDS") ?
			  (unsigned)atoi(getenv("BENCH_REPAIR_ROUNDS")) : 3;
	struct col c[5] = {
		{ .name = "mendfs bno+cnt" }, { .name = "mendfs rmap" },
		{ .name = "mendfs bmap" }, { .name = "xfs_repair -n" }, { .name = "xfs_repair" },
	};
	static struct round rs[2][BENCH_ROUNDS_MAX];
	int only_rmap = getenv("BENCH_REPAIR_ONLY") && !strcmp(getenv("BENCH_REPAIR_ONLY"), "rmap");
	int only_bno = getenv("BENCH_REPAIR_ONLY") && !strcmp(getenv("BENCH_REPAIR_ONLY"), "bno");
	struct mfs_fs *fs;
	struct lat l;
	pthread_t th;
	uint32_t agblocks;
	uint64_t bytes;
	int err;

	if (!getenv("BENCH_REPAIR_NOTUNE"))
		mfs_mem_tune();              /* as the daemon and mendfs_repair do */
	if (argc > 1)
		n = strtoull(argv[1], NULL, 10);
	if (n < 1000)
		n = 1000;
	if (rounds < 1 || rounds > BENCH_ROUNDS_MAX)
		rounds = rounds < 1 ? 1 : BENCH_ROUNDS_MAX;
	mfs_log_set_level(MFS_LOG_WARN);
	snprintf(path, sizeof(path), "%s/bench_repair.%d.img", dir, (int)getpid());
	/* Two AGs of 2n + a margin blocks, 4 KiB blocks. */
	agblocks = (uint32_t)(2 * n + 4096);
	bytes = 2ull * agblocks * 4096;
	if (keep && !access(keep, R_OK)) {
		/* the image of an earlier run, as it was before its rebuilds */
		snprintf(c[2].why, sizeof(c[2].why), "image copied from %s", keep);
		if (copy_file(keep, path))
			die("copying BENCH_REPAIR_IMAGE", EIO);
	} else {
		make_mendfs(n, bytes, agblocks, logmb, &c[2]);
		if (keep && copy_file(path, keep))
			die("saving BENCH_REPAIR_IMAGE", EIO);
	}

	/* every round starts from the same image: the pristine copy */
	snprintf(pristine, sizeof(pristine), "%s.orig", path);
	if (copy_file(path, pristine))
		die("copying the image", EIO);
	memset(&l, 0, sizeof(l));
	l.v[0] = malloc(LAT_MAX * sizeof(double));
	l.v[1] = malloc(LAT_MAX * sizeof(double));
	l.t[0] = malloc(LAT_MAX * sizeof(double));
	l.t[1] = malloc(LAT_MAX * sizeof(double));
	l.sw[0] = calloc(LAT_MAX, sizeof(long));
	l.sw[1] = calloc(LAT_MAX, sizeof(long));
	l.step[0] = calloc(LAT_MAX, 1);
	l.step[1] = calloc(LAT_MAX, 1);
	if (!l.v[0] || !l.v[1] || !l.t[0] || !l.t[1] || !l.sw[0] || !l.sw[1] || !l.step[0] ||
	    !l.step[1])
		die("malloc", ENOMEM);
	/* touched now (non-zero bytes: a zero fill may be elided), not page by page as the
	 * writes of a rebuild's window fill them (which its RSS growth would count) */
	for (int ph = 0; ph < 2; ph++) {
		memset(l.v[ph], 1, LAT_MAX * sizeof(double));
		memset(l.t[ph], 1, LAT_MAX * sizeof(double));
		memset(l.sw[ph], 1, LAT_MAX * sizeof(long));
		memset(l.step[ph], 1, LAT_MAX);
	}
	for (unsigned k = 0; k < rounds; k++) {
		double idle_s[2] = { 1, 1 };

		if (k && copy_file(pristine, path))
			die("copying the image back", EIO);
		err = mfs_fs_open(path, MFS_OPEN_EXCL | (journal ? MFS_OPEN_JOURNAL : 0),
				  (size_t)cache_mb << 20, &fs);
		if (!err)
			err = mfs_icache_init(fs, 0);
		if (err)
			die("reopen", err);
		if (!k)
			printf("rebuilds of AG 1 with the journal (%u blocks) %s, buffer cache "
			       "bounded at %u MiB, %u rounds from the same image\n",
			       fs->geo.logblocks, journal ? "attached (as the daemon)" : "detached",
			       cache_mb, rounds);
		printf("round %u:\n", k + 1);
		l.fs = fs;
		l.owner = fs->geo.rootino;
		atomic_store(&l.stop, 0);
		atomic_store(&l.phase, 2);
		if (pthread_create(&th, NULL, lat_main, &l))
			die("thread", EAGAIN);
		if (!k && getenv("BENCH_REPAIR_CANCEL"))
			cancelled_rebuild(fs, MFS_SCRUB_BNOBT);
		if (k) {
			idle_s[0] = rs[0][k - 1].wall > 1 ? rs[0][k - 1].wall : 1;
			idle_s[1] = rs[1][k - 1].wall > 1 ? rs[1][k - 1].wall : 1;
		}
		if (!only_rmap)
			rebuild_round(fs, &l, MFS_SCRUB_BNOBT, idle_s[0], &rs[0][k]);
		if (!k && getenv("BENCH_REPAIR_CANCEL"))
			cancelled_rebuild(fs, MFS_SCRUB_RMAPBT);
		if (!l.err && !only_bno)
			rebuild_round(fs, &l, MFS_SCRUB_RMAPBT, idle_s[1], &rs[1][k]);
		atomic_store(&l.stop, 1);
		pthread_join(th, NULL);
		if (l.err)
			die("allocations in AG 0", l.err);
		close_fs(fs);
	}
	free(l.v[0]);
	free(l.v[1]);
	free(l.t[0]);
	free(l.t[1]);
	free(l.sw[0]);
	free(l.sw[1]);
	free(l.step[0]);
	free(l.step[1]);
	if (only_rmap)
		snprintf(c[0].why, sizeof(c[0].why), "BENCH_REPAIR_ONLY=rmap");
	else
		summarize(&c[0], rs[0], rounds);
	if (only_bno)
		snprintf(c[1].why, sizeof(c[1].why), "BENCH_REPAIR_ONLY=bno");
	else
		summarize(&c[1], rs[1], rounds);
	unlink(pristine);
	unlink(path);
	path[0] = pristine[0] = 0;
	xfs_cols(n, agblocks, dir, &c[3], &c[4]);
	table(c, 5);
	return (c[0].ok || only_rmap) && (c[1].ok || only_bno) && c[2].ok ? 0 : 1;
}
