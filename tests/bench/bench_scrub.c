/*
 * bench_scrub.c — how long a full online scrub takes, beside e2fsck -fn on ext4 holding
 * the same tree, at several sizes (is it linear in the metadata?).  Printed, never
 * pass/fail.
 *
 * For each size N (files), a tree shaped like a source or home directory is written
 * through a fresh mendfs mount by 4 threads: directories of about 40 entries, two levels
 * deep; file sizes 70% up to 512 bytes, 25% up to 8 KiB, 5% up to 32 KiB; 2% of the names
 * symlinks and 1% hard links.  The filesystem is remounted (cold daemon caches) and
 * `mendfs_scrub` timed; then the same tree is copied into an ext4 image with
 * `mkfs.ext4 -d` (from the mount) and `e2fsck -fn` timed on it.  Both images stay in the
 * host's page cache: both checks read metadata from memory, the comparison is of the
 * checkers' work.
 *
 * Environment: BENCH_SCRUB_FILES (sizes, default "100000 300000 1000000"; BENCH_QUICK=1:
 * "20000 40000 80000"), BENCH_DIR (default /var/tmp).  The programs are found in ../bin
 * beside this one (build/bench -> build/bin).
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define NTHREADS 4
#define FANOUT   40

static char bindir[PATH_MAX + 16], work[PATH_MAX], mnt[PATH_MAX + 16], img[PATH_MAX + 16];
static pid_t daemon_pid;

/* snprintf that refuses to truncate (a cut path would name something else). */
static int fmt(char *buf, size_t len, const char *f, ...) __attribute__((format(printf, 3, 4)));
static int fmt(char *buf, size_t len, const char *f, ...)
{
	va_list ap;
	int n;

	va_start(ap, f);
	n = vsnprintf(buf, len, f, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len) {
		fprintf(stderr, "bench_scrub: path too long\n");
		exit(1);
	}
	return n;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Run argv (program from bindir unless it contains a slash or is a system tool); wait.
 * out: where its standard output goes (NULL: /dev/null).  Returns the exit status. */
static int run(const char *out, char *const argv[])
{
	pid_t pid = fork();
	int st;

	if (pid == 0) {
		int fd = open(out ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);

		if (fd >= 0) {
			dup2(fd, STDOUT_FILENO);
			if (!out)
				dup2(fd, STDERR_FILENO);
		}
		execvp(argv[0], argv);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &st, 0) < 0)
		return -1;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static int mounted(void)
{
	FILE *f = fopen("/proc/self/mounts", "re");
	char line[PATH_MAX * 2];
	int found = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (strstr(line, mnt) && strstr(line, "fuse.mendfs"))
			found = 1;
	fclose(f);
	return found;
}

static int mount_fs(void)
{
	char prog[PATH_MAX + 16];

	fmt(prog, sizeof(prog), "%s/mendfs", bindir);
	daemon_pid = fork();
	if (daemon_pid == 0) {
		int fd = open("/dev/null", O_WRONLY);

		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		execl(prog, prog, "-f", img, mnt, (char *)NULL);
		_exit(127);
	}
	for (int i = 0; i < 800; i++) {
		struct timespec ts = { 0, 25000000 };

		if (mounted())
			return 0;
		if (waitpid(daemon_pid, NULL, WNOHANG) == daemon_pid)
			return -1;
		nanosleep(&ts, NULL);
	}
	return -1;
}

static void umount_fs(void)
{
	char *argv[] = { "fusermount3", "-u", mnt, NULL };

	run(NULL, argv);
	waitpid(daemon_pid, NULL, 0);   /* the daemon flushes before it exits */
	daemon_pid = 0;
}

/* ---- the tree ------------------------------------------------------------------------------ */

struct filler {
	uint64_t first, n;      /* file indexes */
	unsigned seed;
	int err;
};

static char data[32768];

static unsigned rnd(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s >> 8;
}

/* File i lives in d<i / FANOUT^2>/d<i / FANOUT % FANOUT>/, named by its index. */
static void *fill(void *arg)
{
	struct filler *w = arg;
	char path[PATH_MAX + 64], prev[PATH_MAX + 64] = "";

	for (uint64_t i = w->first; i < w->first + w->n && !w->err; i++) {
		uint64_t top = i / (FANOUT * FANOUT), mid = i / FANOUT % FANOUT;
		unsigned r = rnd(&w->seed) % 100, size;
		int fd;

		if (i % FANOUT == 0 || i == w->first) {
			fmt(path, sizeof(path), "%s/d%llu", mnt, (unsigned long long)top);
			mkdir(path, 0755);
			fmt(path, sizeof(path), "%s/d%llu/s%llu", mnt, (unsigned long long)top,
				 (unsigned long long)mid);
			mkdir(path, 0755);
		}
		fmt(path, sizeof(path), "%s/d%llu/s%llu/file_%llu.c", mnt,
			 (unsigned long long)top, (unsigned long long)mid, (unsigned long long)i);
		if (r < 2 && prev[0]) {
			if (symlink(prev, path) != 0)
				w->err = errno;
			continue;
		}
		if (r < 3 && prev[0]) {
			if (link(prev, path) != 0)
				w->err = errno;
			continue;
		}
		r = rnd(&w->seed) % 100;
		size = r < 70 ? rnd(&w->seed) % 513 : r < 95 ? rnd(&w->seed) % 8193
						    : rnd(&w->seed) % 32769;
		fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
		if (fd < 0 || (size && write(fd, data, size) != (ssize_t)size)) {
			w->err = errno;
			if (fd >= 0)
				close(fd);
			continue;
		}
		close(fd);
		memcpy(prev, path, sizeof(prev));
	}
	return NULL;
}

static int populate(uint64_t nfiles)
{
	struct filler w[NTHREADS];
	pthread_t t[NTHREADS];
	uint64_t per = (nfiles / NTHREADS / FANOUT + 1) * FANOUT, at = 0;

	for (int i = 0; i < NTHREADS; i++) {
		w[i] = (struct filler){ .first = at, .n = at < nfiles ? (nfiles - at < per ?
							nfiles - at : per) : 0, .seed = 7u + (unsigned)i };
		at += w[i].n;
		pthread_create(&t[i], NULL, fill, &w[i]);
	}
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < NTHREADS; i++)
		if (w[i].err) {
			fprintf(stderr, "bench_scrub: populating: %s\n", strerror(w[i].err));
			return -1;
		}
	return 0;
}

/* ---- one size ------------------------------------------------------------------------------- */

static void bench_one(uint64_t nfiles)
{
	char scrub[PATH_MAX + 32], mkfs[PATH_MAX + 32], ext4[PATH_MAX + 16], out[PATH_MAX + 16];
	char size[32], objects[64] = "?", phases[256] = "";
	double t0, t_pop, t_scrub, t_fsck;
	int rc_scrub, rc_fsck;
	FILE *f;

	fmt(mkfs, sizeof(mkfs), "%s/mkfs.mendfs", bindir);
	fmt(scrub, sizeof(scrub), "%s/mendfs_scrub", bindir);
	fmt(ext4, sizeof(ext4), "%s/ext4.img", work);
	fmt(out, sizeof(out), "%s/scrub.out", work);
	/* Room for the data (about 3 KiB a file) and the metadata, sparse. */
	snprintf(size, sizeof(size), "%lluM", (unsigned long long)(nfiles * 12 / 1024 + 512));
	{
		char *argv[] = { mkfs, "-q", "-f", img, size, NULL };

		if (run(NULL, argv) != 0 || mount_fs() != 0) {
			fprintf(stderr, "bench_scrub: cannot make or mount %s\n", img);
			return;
		}
	}
	t0 = now();
	if (populate(nfiles) != 0) {
		umount_fs();
		return;
	}
	t_pop = now() - t0;
	umount_fs();
	if (mount_fs() != 0)
		return;
	{
		char *argv[] = { scrub, "-v", mnt, NULL };

		t0 = now();
		rc_scrub = run(out, argv);
		t_scrub = now() - t0;
	}
	f = fopen(out, "r");
	if (f) {
		char line[1024];

		while (fgets(line, sizeof(line), f)) {
			char *p = strstr(line, "(");

			int ph;
			double secs;

			if (p && strstr(p, "objects checked"))
				snprintf(objects, sizeof(objects), "%.*s", (int)strcspn(p + 1, " "),
					 p + 1);
			/* "Phase N: label: done in S s" */
			if (sscanf(line, "Phase %d:", &ph) == 1 && (p = strstr(line, "done in ")) &&
			    sscanf(p, "done in %lf", &secs) == 1) {
				size_t l = strlen(phases);

				snprintf(phases + l, sizeof(phases) - l, "%s%d:%.2f", l ? " " : "",
					 ph, secs);
			}
		}
		fclose(f);
	}
	{
		/* Same tree into ext4, read from the mount (not timed). */
		char *argv[] = { "mkfs.ext4", "-q", "-F", "-d", mnt, ext4, size, NULL };

		if (run(NULL, argv) != 0) {
			fprintf(stderr, "bench_scrub: mkfs.ext4 -d failed\n");
			umount_fs();
			return;
		}
	}
	umount_fs();
	{
		char *argv[] = { "e2fsck", "-fn", ext4, NULL };

		t0 = now();
		rc_fsck = run(NULL, argv);
		t_fsck = now() - t0;
	}
	printf("%9llu files  populate %6.1f s | mendfs_scrub %6.2f s (%s checks, exit %d, "
	       "%.1f us/file; phase seconds %s) | e2fsck -fn %6.2f s (exit %d, %.1f us/file) | "
	       "scrub/e2fsck %.2f\n",
	       (unsigned long long)nfiles, t_pop, t_scrub, objects, rc_scrub,
	       t_scrub * 1e6 / (double)nfiles, phases, t_fsck, rc_fsck,
	       t_fsck * 1e6 / (double)nfiles, t_fsck > 0 ? t_scrub / t_fsck : 0.0);
	fflush(stdout);
	unlink(ext4);
	unlink(img);
	unlink(out);
}

int main(int argc, char **argv)
{
	const char *sizes = getenv("BENCH_SCRUB_FILES"), *base = getenv("BENCH_DIR");
	char self[PATH_MAX], *copy, *tok, *save = NULL, *slash, rundir[PATH_MAX + 8];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	if (n <= 0)
		return 1;
	self[n] = 0;
	slash = strrchr(self, '/');
	*slash = 0;
	fmt(bindir, sizeof(bindir), "%s/../bin", self);
	if (!sizes)
		sizes = getenv("BENCH_QUICK") && !strcmp(getenv("BENCH_QUICK"), "1") ?
			"20000 40000 80000" : "100000 300000 1000000";
	fmt(work, sizeof(work), "%s/bench_scrub.XXXXXX", base ? base : "/var/tmp");
	if (access("/dev/fuse", R_OK | W_OK) != 0 || !mkdtemp(work)) {
		printf("bench_scrub: skipped (no /dev/fuse or no %s)\n", base ? base : "/var/tmp");
		return 0;
	}
	fmt(mnt, sizeof(mnt), "%s/m", work);
	fmt(img, sizeof(img), "%s/mendfs.img", work);
	fmt(rundir, sizeof(rundir), "%s/run", work);
	mkdir(mnt, 0755);
	mkdir(rundir, 0755);
	setenv("MENDFS_RUNDIR", rundir, 1);
	memset(data, 'x', sizeof(data));
	printf("bench_scrub: full online scrub vs e2fsck -fn on the same tree (%s)\n", work);
	copy = strdup(sizes);
	for (tok = strtok_r(copy, " ,", &save); tok; tok = strtok_r(NULL, " ,", &save)) {
		uint64_t nf = strtoull(tok, NULL, 10);

		if (nf)
			bench_one(nf);
	}
	free(copy);
	rmdir(mnt);
	rmdir(rundir);
	rmdir(work);
	return 0;
}
