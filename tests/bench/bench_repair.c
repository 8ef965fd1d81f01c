/*
 * bench_repair.c — the repair engine on one AG holding N (default 1,000,000) extents:
 * the rebuild of its free-space trees (by block and by length, from the reverse map) with
 * scratch in a memfd.  Prints the time, the scratch used against the estimate and the
 * reserve, the process's RSS growth during the rebuild (the engine's data lives in the
 * scratch file; the buffer cache is bounded by BENCH_REPAIR_CACHE_MB, default 32), and the
 * p99 latency of one-block allocations committed in another AG during the rebuild against
 * the same with no rebuild running.  Printed, never pass/fail (exit 1 only when a step
 * fails).  xfs_repair on a same-sized XFS image is not run here (no xfsprogs on the build
 * machines): its figure is left to be measured beside it.
 *
 * BENCH_REPAIR_JOURNAL=1: with the journal attached (the rebuild is then one logged
 * transaction: the log must hold the new trees).
 *
 * The AG is written with mfs_ag_format(): N one-block extents of one owner every other
 * block, so the reverse map has N records and free space N one-block extents.
 *
 *   bench_repair [N]          BENCH_QUICK=1: N = 100,000
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "ag.h"
#include "alloc.h"
#include "bcache.h"
#include "dev.h"
#include "format.h"
#include "fs.h"
#include "geom.h"
#include "log.h"
#include "repair.h"
#include "trans.h"

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
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

static char path[4096];        /* the image, removed however the bench ends */

static int die(const char *what, int err)
{
	fprintf(stderr, "bench_repair: %s: %s\n", what, strerror(err < 0 ? -err : err));
	if (path[0])
		unlink(path);
	exit(1);
}

/* ---- allocations in AG 0, timed -------------------------------------------------------------- */
#define LAT_MAX 200000

struct lat {
	struct mfs_fs *fs;
	atomic_int stop;
	atomic_int phase;              /* 0 idle, 1 rebuild running, 2 done */
	double *v[2];
	size_t n[2];
	uint64_t owner;
	int err;
};

static void *lat_main(void *arg)
{
	struct lat *l = arg;
	uint64_t off = 0;

	while (!atomic_load(&l->stop)) {
		struct mfs_alloc_args a;
		struct mfs_trans *tp;
		int ph = atomic_load(&l->phase);
		double t0 = now();
		int err = mfs_trans_alloc(l->fs, &tp);

		memset(&a, 0, sizeof(a));
		a.type = MFS_ALLOC_NEAR;
		a.target = 100;
		a.minlen = a.maxlen = 1;
		a.owner = l->owner;
		a.offset = off;
		if (!err)
			err = mfs_alloc_extent(tp, &a);
		if (!err) {
			err = mfs_trans_commit(tp);
		} else if (tp) {
			mfs_trans_cancel(tp);
		}
		if (!err) {
			/* give it back at once so that AG 0 never fills */
			err = mfs_trans_alloc(l->fs, &tp);
			if (!err)
				err = mfs_free_extent(tp, a.fsb, 1, l->owner, off);
			if (!err)
				err = mfs_trans_commit(tp);
			else if (tp)
				mfs_trans_cancel(tp);
		}
		if (err) {
			l->err = err;
			break;
		}
		off += 2;
		if (ph < 2 && l->n[ph] < LAT_MAX)
			l->v[ph][l->n[ph]++] = now() - t0;
		if (ph == 0 && l->n[0] >= 20000)
			usleep(1000);
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

int main(int argc, char **argv)
{
	uint64_t n = getenv("BENCH_QUICK") ? 100000 : 1000000;
	const char *dir = getenv("BENCH_DIR") ? getenv("BENCH_DIR") : "/var/tmp";
	unsigned cache_mb = getenv("BENCH_REPAIR_CACHE_MB") ?
			    (unsigned)atoi(getenv("BENCH_REPAIR_CACHE_MB")) : 32;
	struct mfs_format_opts o;
	struct mfs_format_layout L;
	struct mfs_ag_extent *used;
	struct mfs_repair_ctx *rc;
	struct mfs_dev *dev;
	struct mfs_fs *fs;
	struct lat l;
	pthread_t th;
	uint32_t agblocks, first;
	uint64_t bytes;
	long rss0, hwm;
	double t0, t1;
	int fd, err;

	if (argc > 1)
		n = strtoull(argv[1], NULL, 10);
	if (n < 1000)
		n = 1000;
	mfs_log_set_level(MFS_LOG_WARN);
	snprintf(path, sizeof(path), "%s/bench_repair.%d.img", dir, (int)getpid());
	/* Two AGs of 2n + a margin blocks, 4 KiB blocks. */
	agblocks = (uint32_t)(2 * n + 4096);
	bytes = 2ull * agblocks * 4096;
	memset(&o, 0, sizeof(o));
	o.blocksize = 4096;
	o.agcount = 2;
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
	if (err)
		die("open", err);
	/* AG 1: n one-block extents every other block after the AG's own blocks. */
	agblocks = mfs_ag_length(&fs->geo, 1);
	first = MFS_AG_FIXED_BLOCKS + mfs_ag_format_blocks(&fs->geo) + 64;
	used = malloc(n * sizeof(*used));
	if (!used)
		die("malloc", ENOMEM);
	for (uint64_t i = 0; i < n; i++) {
		used[i].agbno = first + 2 * (uint32_t)i;
		used[i].len = 1;
		used[i].owner = fs->geo.rootino;
		used[i].offset = 1000 + 2 * i;
	}
	if (used[n - 1].agbno + 1 >= agblocks)
		die("AG too small", EINVAL);
	t0 = now();
	err = mfs_ag_format(fs, 1, used, (unsigned)n, NULL, 0);
	free(used);
	if (!err)
		err = mfs_fs_close(fs);
	if (err)
		die("AG format", err);
	printf("bench_repair: AG 1 of %u blocks with %" PRIu64 " extents written in %.1f s\n",
	       agblocks, n, now() - t0);

	/* The rebuild, in a cold cache of cache_mb. */
	err = mfs_fs_open(path, MFS_OPEN_EXCL | (getenv("BENCH_REPAIR_JOURNAL") ?
						   MFS_OPEN_JOURNAL : 0), (size_t)cache_mb << 20, &fs);
	if (err)
		die("reopen", err);
	memset(&l, 0, sizeof(l));
	l.fs = fs;
	l.owner = fs->geo.rootino;
	l.v[0] = malloc(LAT_MAX * sizeof(double));
	l.v[1] = malloc(LAT_MAX * sizeof(double));
	if (!l.v[0] || !l.v[1])
		die("malloc", ENOMEM);
	if (pthread_create(&th, NULL, lat_main, &l))
		die("thread", EAGAIN);
	while (l.n[0] < 20000 && !l.err)
		usleep(10000);
	fd = memfd_create("bench_repair", MFD_CLOEXEC);
	rc = calloc(1, sizeof(*rc));
	if (fd < 0 || !rc)
		die("memfd", errno);
	rc->fs = fs;
	rc->type = MFS_SCRUB_BNOBT;
	rc->agno = 1;
	rc->fds[0] = fd;
	rc->nfds = 1;
	rss0 = status_kb("VmRSS:");
	atomic_store(&l.phase, 1);
	t0 = now();
	err = mfs_repair(rc);
	t1 = now();
	atomic_store(&l.phase, 2);
	hwm = status_kb("VmHWM:");
	atomic_store(&l.stop, 1);
	pthread_join(th, NULL);
	if (err) {
		fprintf(stderr, "bench_repair: repair: %s\n", rc->reason);
		mfs_fs_close(fs);
		unlink(path);
		return 1;
	}
	if (l.err)
		die("allocations in AG 0", l.err);
	printf("rebuild of AG 1's bno+cnt trees (%" PRIu64 " records): %.2f s (%.0f records/s)\n",
	       rc->records, t1 - t0, (double)rc->records / (t1 - t0));
	printf("scratch: used %.1f MiB, estimate %.1f MiB (%s), reserved %.1f MiB\n",
	       rc->scratch_used / 1048576.0, rc->estimate / 1048576.0,
	       rc->scratch_used <= rc->estimate ? "within" : "OVER", rc->reserved / 1048576.0);
	printf("RSS growth during the rebuild: %.1f MiB peak (aim < 32 MiB; buffer cache "
	       "bounded at %u MiB)\n", (hwm - rss0) / 1024.0, cache_mb);
	printf("one-block allocations in AG 0: p99 %.1f us idle (%zu), %.1f us during the "
	       "rebuild (%zu) (aim <= 2x)\n", p99(l.v[0], l.n[0]) * 1e6, l.n[0],
	       p99(l.v[1], l.n[1]) * 1e6, l.n[1]);
	printf("xfs_repair on an XFS image with the same extent count: not measured here\n");
	free(l.v[0]);
	free(l.v[1]);
	free(rc);
	close(fd);
	err = mfs_fs_close(fs);
	unlink(path);
	return err ? 1 : 0;
}
