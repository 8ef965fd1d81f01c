/*
 * replaylog.c — rebuild the image a crash would have left, from the image as it was before
 * the mount and the daemon's write log (MENDFS_WRITELOG, lib/dev.h): the crash-point
 * replayer of t_crashpoints.sh, like fstests' replay-log over dm-log-writes.
 *
 *   replaylog -i LOG                       count the records and the points, list the
 *                                          segments with writes (K:number of writes)
 *   replaylog -p K LOG BASE OUT            flush point K
 *   replaylog -m K -r SEED LOG BASE OUT    a point inside segment K, chosen by SEED
 *
 * The model.  Let F1..Fn be the flush records in log order, F0 the start of the log and
 * F(n+1) its end; segment K is what lies between FK and F(K+1).  A flush record precedes
 * the fdatasync() it stands for, so every write recorded before FK had completed when FK was
 * issued: after a crash at any time after FK returned, those writes are all on the image,
 * and any write recorded after FK may or may not be (a volatile write cache keeps or loses
 * each, in any order, and may write a multi-sector write in part).
 *   Flush point K (0..n+1): every write recorded before FK applied, nothing after (K = 0 is
 *   the base image, K = n+1 everything: the image after the unmount).
 *   A point inside segment K: a cut after one of the segment's writes (drawn from all of
 *   them); the writes before the latest-issued flush whose return (FLUSHED record) precedes
 *   the cut applied; every later write up to the cut applied, dropped (1 in 3) or torn (1 in
 *   6: only its first s of its sectors, 1 <= s < sectors) — FK itself may not have returned
 *   yet, so writes of earlier segments may be lost too; nothing after the cut.
 * Resize records are always applied in order.
 *
 * Each build prints one line for the test that keeps the fsync record of the workload
 * consistent with the state: "bounds <sync> <change>": a file the workload saw fsync'd
 * before CLOCK_MONOTONIC <sync> must be intact, unless a change to it began before
 * <change> (the first: the time of the flush record before which every write is applied; the
 * second: that of the last record the state may contain, the cut).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "dev.h"

#define SECTOR 512u

struct rec {
	struct mfs_dev_wlog_rec h;
	off_t data;                     /* offset of the data in the log file */
};

static struct rec *recs;
static size_t nrecs;

/* "replaylog: WHAT: the errno's message", exit 2 */
static void die(const char *what)
{
	fprintf(stderr, "replaylog: %s: %s\n", what, strerror(errno));
	exit(2);
}

/* Read every record header of the log (the data stays in the file).  A record cut short at
 * the end (the daemon died while appending it) ends the log with a note. */
static int load(const char *path)
{
	int fd = open(path, O_RDONLY);
	size_t cap = 0;
	off_t pos = 0;
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0)
		die(path);
	for (;;) {
		struct mfs_dev_wlog_rec h;
		ssize_t n = pread(fd, &h, sizeof(h), pos);

		if (n == 0)
			break;
		if (n < 0)
			die(path);
		if ((size_t)n < sizeof(h) ||
		    (h.kind == MFS_DEV_WLOG_WRITE && (uint64_t)(st.st_size - pos - n) < h.len)) {
			fprintf(stderr, "replaylog: %s: the last record (at byte %lld) is cut short; "
				"ignored\n", path, (long long)pos);
			break;
		}
		if (h.magic != MFS_DEV_WLOG_MAGIC || h.kind < MFS_DEV_WLOG_WRITE ||
		    h.kind > MFS_DEV_WLOG_FLUSHED || (h.kind != MFS_DEV_WLOG_WRITE && h.len)) {
			fprintf(stderr, "replaylog: %s: bad record at byte %lld (magic %08x, kind "
				"%u)\n", path, (long long)pos, h.magic, h.kind);
			exit(2);
		}
		if (h.seq != (nrecs ? recs[nrecs - 1].h.seq + 1 : 0) && h.seq != 0) {
			fprintf(stderr, "replaylog: %s: record %zu has sequence %" PRIu64
				" (a gap)\n", path, nrecs, h.seq);
			exit(2);
		}
		if (nrecs == cap) {
			cap = cap ? 2 * cap : 1024;
			recs = realloc(recs, cap * sizeof(*recs));
			if (!recs)
				die("out of memory");
		}
		recs[nrecs].h = h;
		recs[nrecs].data = pos + (off_t)sizeof(h);
		nrecs++;
		pos += (off_t)sizeof(h) + (off_t)h.len;
	}
	return fd;
}

/* Index in recs of flush record K (1..n); nrecs for K = n+1; -1 for K = 0 (before all). */
static long flush_index(unsigned long k, unsigned long *nflush)
{
	unsigned long seen = 0;
	long at = -2;

	for (size_t i = 0; i < nrecs; i++)
		if (recs[i].h.kind == MFS_DEV_WLOG_FLUSH && ++seen == k)
			at = (long)i;
	*nflush = seen;
	if (k == 0)
		return -1;
	if (k == seen + 1)
		return (long)nrecs;
	return at;
}

/*
 * The writes surely on stable storage at a crash just after record `c`: those recorded
 * before the latest-issued flush whose return (FLUSHED) is recorded before c.  Returns that
 * flush record's index, or -1 (no flush had returned: every write may be lost).
 */
static long durable_before(long c)
{
	long best = -1;

	for (long i = 0; i < c; i++) {
		if (recs[i].h.kind != MFS_DEV_WLOG_FLUSHED)
			continue;
		for (long j = i - 1; j > best; j--)
			if (recs[j].h.kind == MFS_DEV_WLOG_FLUSH && recs[j].h.seq == recs[i].h.off) {
				best = j;
				break;
			}
	}
	return best;
}

/* Copy the base image to `out`, sparse (zero chunks are skipped). */
static int copy_base(const char *base, const char *out)
{
	static char buf[1 << 16], zero[1 << 16];
	int in = open(base, O_RDONLY), fd;
	off_t pos = 0;
	ssize_t n;

	if (in < 0)
		die(base);
	fd = open(out, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die(out);
	while ((n = pread(in, buf, sizeof(buf), pos)) > 0) {
		if (memcmp(buf, zero, (size_t)n) && pwrite(fd, buf, (size_t)n, pos) != n)
			die(out);
		pos += n;
	}
	if (n < 0)
		die(base);
	if (ftruncate(fd, pos) < 0)
		die(out);
	close(in);
	return fd;
}

/* Apply record i, only its first `bytes` bytes if a write (the whole: h.len). */
static void apply(int logfd, int fd, size_t i, uint64_t bytes)
{
	static char *buf;
	static size_t cap;
	const struct mfs_dev_wlog_rec *h = &recs[i].h;

	if (h->kind == MFS_DEV_WLOG_RESIZE) {
		if (ftruncate(fd, (off_t)h->off) < 0)
			die("resize");
		return;
	}
	if (h->kind != MFS_DEV_WLOG_WRITE || !bytes)
		return;
	if (bytes > cap) {
		free(buf);
		buf = malloc(bytes);
		if (!buf)
			die("out of memory");
		cap = bytes;
	}
	if (pread(logfd, buf, bytes, recs[i].data) != (ssize_t)bytes)
		die("reading the log");
	if (pwrite(fd, buf, bytes, (off_t)h->off) != (ssize_t)bytes)
		die("writing the image");
}

static uint64_t rnd_state;
static uint64_t rnd(void)                  /* xorshift64*: the same states for a seed */
{
	rnd_state ^= rnd_state >> 12;
	rnd_state ^= rnd_state << 25;
	rnd_state ^= rnd_state >> 27;
	return rnd_state * 0x2545f4914f6cdd1dull;
}

static int usage(void)
{
	fprintf(stderr, "usage: replaylog -i LOG\n"
		"       replaylog -p K LOG BASE OUT          (flush point K)\n"
		"       replaylog -m K -r SEED LOG BASE OUT  (a point inside segment K)\n");
	return 2;
}

int main(int argc, char **argv)
{
	int info = 0, opt, logfd, fd;
	long point = -1, seg = -1;
	unsigned long long seed = 1;
	unsigned long nflush;
	long lo, hi;
	uint64_t tsync, tchange;

	while ((opt = getopt(argc, argv, "ip:m:r:")) != -1) {
		switch (opt) {
		case 'i': info = 1; break;
		case 'p': point = strtol(optarg, NULL, 10); break;
		case 'm': seg = strtol(optarg, NULL, 10); break;
		case 'r': seed = strtoull(optarg, NULL, 10); break;
		default: return usage();
		}
	}
	if (info) {
		unsigned long writes = 0, inside = 0, seg_writes = 0, nonempty = 0, k = 0;
		unsigned long long bytes = 0;
		char *list = NULL;
		size_t listlen = 0;
		FILE *lf = open_memstream(&list, &listlen);

		if (optind + 1 != argc)
			return usage();
		logfd = load(argv[optind]);
		flush_index(0, &nflush);
		for (size_t i = 0; i <= nrecs; i++) {
			if (i == nrecs || recs[i].h.kind == MFS_DEV_WLOG_FLUSH) {
				inside += seg_writes;
				nonempty += seg_writes > 0;
				if (seg_writes && lf)
					fprintf(lf, " %lu:%lu", k, seg_writes);
				seg_writes = 0;
				k++;
				continue;
			}
			if (recs[i].h.kind == MFS_DEV_WLOG_WRITE) {
				writes++;
				seg_writes++;
				bytes += recs[i].h.len;
			}
		}
		printf("records %zu writes %lu bytes %llu flushes %lu\n", nrecs, writes, bytes,
		       nflush);
		/* flush points 0..n+1; a cut after each write of each segment, times the subsets */
		printf("flush points %lu (-p 0..%lu), segments with writes %lu, cut points %lu\n",
		       nflush + 2, nflush + 1, nonempty, inside);
		if (!lf || fclose(lf))
			die("out of memory");
		printf("segments with writes:%s\n", list);
		free(list);
		close(logfd);
		return 0;
	}
	if ((point < 0) == (seg < 0) || optind + 3 != argc)
		return usage();
	logfd = load(argv[optind]);
	fd = copy_base(argv[optind + 1], argv[optind + 2]);
	lo = flush_index(point >= 0 ? (unsigned long)point : (unsigned long)seg, &nflush);
	if (lo == -2 || (seg >= 0 && lo == (long)nrecs)) {
		fprintf(stderr, "replaylog: %s %ld: the log has %lu flushes (points 0..%lu, "
			"segments 0..%lu)\n", point >= 0 ? "point" : "segment",
			point >= 0 ? point : seg, nflush, nflush + 1, nflush);
		return 2;
	}
	if (point >= 0) {
		for (long i = 0; i < lo; i++)
			apply(logfd, fd, (size_t)i, recs[i].h.len);
		tsync = lo < 0 ? 0 : lo == (long)nrecs ? UINT64_MAX : recs[lo].h.time_ns;
		tchange = tsync;
		printf("flush point %ld: records 0..%ld applied\n", point, lo - 1);
	} else {
		unsigned long nw = 0, cut, kept = 0, dropped = 0, torn = 0;
		long c = lo, durable = -1;

		for (hi = lo + 1; hi < (long)nrecs && recs[hi].h.kind != MFS_DEV_WLOG_FLUSH; hi++)
			nw += recs[hi].h.kind == MFS_DEV_WLOG_WRITE;
		if (!nw) {
			fprintf(stderr, "replaylog: segment %ld has no writes\n", seg);
			return 2;
		}
		rnd_state = seed * 0x9e3779b97f4a7c15ull + (uint64_t)seg + 1;
		cut = 1 + (unsigned long)(rnd() % nw);
		for (unsigned long w = 0; w < cut; w += recs[c].h.kind == MFS_DEV_WLOG_WRITE)
			c++;
		durable = durable_before(c);
		printf("segment %ld (records %ld..%ld, %lu writes): cut after record %ld; durable "
		       "before record %ld;", seg, lo + 1, hi - 1, nw, c, durable);
		for (long i = 0; i < durable; i++)
			apply(logfd, fd, (size_t)i, recs[i].h.len);
		for (long i = durable < 0 ? 0 : durable; i <= c; i++) {
			uint64_t len = recs[i].h.len, r, sect = (len + SECTOR - 1) / SECTOR;

			if (recs[i].h.kind != MFS_DEV_WLOG_WRITE) {
				apply(logfd, fd, (size_t)i, 0);
				continue;
			}
			r = rnd() % 6;
			if (r < 2) {
				dropped++;
			} else if (r == 2 && sect > 1) {
				uint64_t sct = 1 + rnd() % (sect - 1);

				apply(logfd, fd, (size_t)i, sct * SECTOR);
				printf(" torn #%ld (%" PRIu64 "/%" PRIu64 " sectors at %" PRIu64 ");",
				       i, sct, sect, recs[i].h.off);
				torn++;
			} else {
				apply(logfd, fd, (size_t)i, len);
				kept++;
			}
		}
		tsync = durable < 0 ? 0 : recs[durable].h.time_ns;
		tchange = recs[c].h.time_ns;
		printf(" %lu applied, %lu dropped, %lu torn\n", kept, dropped, torn);
	}
	printf("bounds %" PRIu64 " %" PRIu64 "\n", tsync, tchange);
	if (close(fd) < 0)
		die(argv[optind + 2]);
	close(logfd);
	return 0;
}
