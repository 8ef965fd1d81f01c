/*
 * bench_scrub.c — how long a full online scrub takes, beside e2fsck -fn on ext4 holding
 * the same tree, at several sizes (is it linear in the metadata?).  Printed, never
 * pass/fail.
 *
 * For each size N (files), a tree shaped like a source or home directory (directories of
 * 40 entries, two levels deep; file sizes 70% up to 512 bytes, 25% up to 8 KiB, 5% up to
 * 32 KiB; 2% of the names symlinks and 1% hard links) is written into a fresh mendfs image
 * offline, in this process, through libmendfs (a transaction per file, as the daemon makes
 * them: filling through FUSE runs at a few thousand files a second, too slow for a million).
 * The image is mounted (cold daemon caches) and `mendfs_scrub -n` timed.  The same tree is
 * written as ordinary files on tmpfs, copied into an ext4 image with `mkfs.ext4 -d`, and
 * `e2fsck -fn` timed on it.  Both images stay in the host's page cache: both checks read
 * metadata from memory, the comparison is of the checkers' work (the mendfs image's data
 * segments are read before each mount, and e2fsck runs once untimed first, in case other
 * processes pushed them out).
 *
 * Environment: BENCH_SCRUB_FILES (sizes; default "20000 50000 100000", BENCH_QUICK=1:
 * "10000 20000 40000", BENCH_SCRUB_FULL=1: "100000 300000 1000000"), BENCH_SCRUB_CACHE_MB
 * (the daemon's -o cache_size, default its own), BENCH_DIR (the images, default /var/tmp),
 * BENCH_TREE_DIR (the ext4 side's tree, default /dev/shm), BENCH_SCRUB_PERF (a file name
 * prefix: `perf record -g -a` runs during each scrub, writing PREFIX.<files>.data; the
 * daemon's pid is printed for `perf report --pid`), BENCH_SCRUB_NO_EXT4=1 (the mendfs side
 * only).  The programs are found in ../bin beside this one (build/bench -> build/bin).
 *
 * Comparing two builds on a loaded machine: BENCH_SCRUB_IMAGES=dir keeps the populated
 * images there (mendfs.<files>.img, ext4.<files>.img) and reuses them on the next run;
 * BENCH_SCRUB_ALT=bindir (another build's bin directory) with BENCH_SCRUB_REPEAT=n mounts
 * and scrubs n times with each build, alternately (A B A B ...), each on a fresh mount
 * (cold daemon caches), and prints a line per scrub and the median CPU of each build;
 * BENCH_SCRUB_REPEAT alone repeats build A.  e2fsck takes its turn in every round (A B
 * e2fsck), so that its figure is of the same load.
 * With BENCH_SCRUB_NO_EXT4=1 the images directory may be on tmpfs (copy mendfs.<files>.img
 * there with cp --sparse=always): a host that reclaims cold page cache (DAMON) otherwise
 * evicts the image between runs, and a 1M-file scrub's CPU swings 2-4x with the disk reads.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bmap.h"
#include "dir.h"
#include "fs.h"
#include "geom.h"
#include "ialloc.h"
#include "inode.h"
#include "mendfs_format.h"
#include "trans.h"

#define FANOUT   40

static char bindir[PATH_MAX + 16], work[PATH_MAX], mnt[PATH_MAX + 16], img[PATH_MAX + 16];
static char tmpdir[PATH_MAX], cache_opt[64], images[PATH_MAX], alt_bindir[PATH_MAX];
static int repeat = 1;
static pid_t daemon_pid;
static const char *perf_prefix;
static int no_ext4;

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

/* CPU seconds of the last program run() waited for (user + system). */
static double last_cpu;

/* Run argv (program from bindir unless it contains a slash or is a system tool); wait.
 * out: where its standard output goes (NULL: /dev/null).  Returns the exit status. */
static int run(const char *out, char *const argv[])
{
	pid_t pid = fork();
	struct rusage ru;
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
	if (pid < 0 || wait4(pid, &st, 0, &ru) < 0)
		return -1;
	last_cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
		   (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* CPU seconds the daemon has used so far (utime + stime from /proc/PID/stat). */
static double daemon_cpu(void)
{
	char path[64], buf[1024], *p;
	unsigned long long ut = 0, st = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/stat", (int)daemon_pid);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = 0;
	p = strrchr(buf, ')');      /* the command name may hold spaces */
	if (!p || sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
			 &ut, &st) != 2)
		return 0;
	return (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
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

static int mount_fs(const char *bin)
{
	char prog[PATH_MAX + 16];

	fmt(prog, sizeof(prog), "%s/mendfs", bin);
	daemon_pid = fork();
	if (daemon_pid == 0) {
		int fd = open("/dev/null", O_WRONLY);

		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		if (cache_opt[0])
			execl(prog, prog, "-f", "-o", cache_opt, img, mnt, (char *)NULL);
		else
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

/*
 * The tree is one deterministic sequence of entries, written twice: into the mendfs image
 * offline, in this process, through libmendfs (a transaction per entry, as the daemon does),
 * and as ordinary files into a directory on tmpfs that mkfs.ext4 -d copies.  File i lives in
 * d<i / FANOUT^2>/s<i / FANOUT % FANOUT>/file_<i>.c; 2% are symlinks to the previous file of
 * the directory, 1% hard links to it, the rest regular files of 0..32 KiB.
 */
struct entry {
	uint64_t i, top, mid;
	int kind;               /* 0 file, 1 symlink, 2 hard link */
	unsigned size;
	uint64_t prev;          /* the previous regular file of the directory (kind 1, 2) */
};

struct tree_ops {
	int (*mkdir)(void *p, uint64_t top, int has_mid, uint64_t mid);
	int (*add)(void *p, const struct entry *e);
};

static char data[32768];

static unsigned rnd(unsigned *s)
{
	*s = *s * 1103515245u + 12345u;
	return *s >> 8;
}

static int walk_tree(uint64_t nfiles, const struct tree_ops *ops, void *p)
{
	unsigned seed = 7;
	uint64_t prev = UINT64_MAX;
	int err = 0;

	for (uint64_t i = 0; i < nfiles && !err; i++) {
		struct entry e = { .i = i, .top = i / (FANOUT * FANOUT), .mid = i / FANOUT % FANOUT };
		unsigned r = rnd(&seed) % 100;

		if (i % (FANOUT * FANOUT) == 0)
			err = ops->mkdir(p, e.top, 0, 0);
		if (!err && i % FANOUT == 0) {
			err = ops->mkdir(p, e.top, 1, e.mid);
			prev = UINT64_MAX;
		}
		if (err)
			break;
		if (r < 3 && prev != UINT64_MAX) {
			e.kind = r < 2 ? 1 : 2;
			e.prev = prev;
		} else {
			r = rnd(&seed) % 100;
			e.size = r < 70 ? rnd(&seed) % 513 : r < 95 ? rnd(&seed) % 8193
								   : rnd(&seed) % 32769;
			prev = i;
		}
		err = ops->add(p, &e);
	}
	return err;
}

/* -- into the mendfs image, offline ---------------------------------------------------------- */

struct lib_tree {
	struct mfs_fs *fs;
	uint64_t root, top, mid;        /* the current directories */
	uint64_t prev_ino;              /* inode of the previous regular file */
	const char *what;
};

/* Make an inode of `mode` named `name` in directory `dir` (or link `link_ino` there). */
static int lib_make(struct lib_tree *t, uint64_t dir, const char *name, uint16_t mode,
		    unsigned size, const char *target, uint64_t link_ino, uint64_t *out)
{
	struct mfs_fs *fs = t->fs;
	struct mfs_inode *dp, *ip;
	struct mfs_trans *tp;
	struct timespec now;
	uint64_t ino = link_ino;
	int err;

	clock_gettime(CLOCK_REALTIME, &now);
	err = mfs_iget(fs, dir, 0, &dp);
	if (err)
		return err;
	err = mfs_trans_alloc(fs, &tp);
	if (err) {
		mfs_iput(dp);
		return err;
	}
	err = mfs_trans_lock_ag(tp, mfs_ino_to_agno(&fs->geo, dir), 0);
	if (!err && !link_ino)
		err = mfs_ialloc(tp, dir, mode, &ino);
	if (!err)
		err = mfs_iget(fs, ino, 0, &ip);
	if (err) {
		mfs_trans_cancel(tp);
		mfs_iput(dp);
		return err;
	}
	if (link_ino) {
		ip->nlink++;
		ip->ctime = now;
	} else {
		ip->mode = mode;
		ip->nlink = S_ISDIR(mode) ? 2 : 1;
		ip->uid = getuid();
		ip->gid = getgid();
		ip->atime = ip->mtime = ip->ctime = ip->btime = now;
	}
	if (S_ISDIR(mode) && !link_ino) {
		err = mfs_dir_init(tp, ip, dir);
		if (!err)
			dp->nlink++;
	} else if (target) {
		size_t tlen = strlen(target);

		if (tlen > ip->litsize)
			err = -ENAMETOOLONG;
		else {
			ip->dformat = MFS_FMT_LOCAL;
			memcpy(ip->lit, target, tlen);
			ip->size = tlen;
		}
	} else if (!link_ino && size) {
		/* The blocks are mapped (and reverse-mapped) like a write's; the sparse image
		 * reads them as zeroes. */
		uint64_t nb = (size + fs->geo.blocksize - 1) >> fs->geo.blocklog, b = 0;

		while (b < nb && !err) {
			struct mfs_bmap_ext ext;

			err = mfs_bmap_alloc(tp, ip, b, nb - b, 0, &ext);
			b += err ? 0 : ext.len;
		}
		ip->size = size;
	}
	if (!err)
		err = mfs_inode_log(tp, ip);
	if (!err)
		err = mfs_dir_add(tp, dp, name, (unsigned)strlen(name), ino,
				  (uint8_t)IFTODT(mode));
	if (!err) {
		dp->mtime = dp->ctime = now;
		err = mfs_inode_log(tp, dp);
	}
	if (!err)
		err = mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, NULL);
	else
		mfs_trans_cancel(tp);
	mfs_iput(ip);
	mfs_iput(dp);
	*out = ino;
	return err;
}

static int lib_mkdir(void *p, uint64_t top, int has_mid, uint64_t mid)
{
	struct lib_tree *t = p;
	char name[64];

	if (!has_mid) {
		snprintf(name, sizeof(name), "d%llu", (unsigned long long)top);
		return lib_make(t, t->root, name, S_IFDIR | 0755, 0, NULL, 0, &t->top);
	}
	snprintf(name, sizeof(name), "s%llu", (unsigned long long)mid);
	return lib_make(t, t->top, name, S_IFDIR | 0755, 0, NULL, 0, &t->mid);
}

static int lib_add(void *p, const struct entry *e)
{
	struct lib_tree *t = p;
	char name[64], target[64];
	uint64_t ino;

	snprintf(name, sizeof(name), "file_%llu.c", (unsigned long long)e->i);
	snprintf(target, sizeof(target), "file_%llu.c", (unsigned long long)e->prev);
	if (e->kind == 1)
		return lib_make(t, t->mid, name, S_IFLNK | 0777, 0, target, 0, &ino);
	if (e->kind == 2)
		return lib_make(t, t->mid, name, S_IFREG | 0644, 0, NULL, t->prev_ino, &ino);
	return lib_make(t, t->mid, name, S_IFREG | 0644, e->size, NULL, 0, &t->prev_ino);
}

static int populate_mendfs(uint64_t nfiles)
{
	static const struct tree_ops ops = { lib_mkdir, lib_add };
	struct lib_tree t = { 0 };
	int err, err2;

	/* Without the journal (as mkfs writes): transactions leave their buffers dirty in the
	 * cache, written back when it fills and at close, with no log force per file. */
	err = mfs_fs_open(img, MFS_OPEN_EXCL, 512u << 20, &t.fs);
	if (err)
		return err;
	err = mfs_icache_init(t.fs, 0);
	if (!err) {
		t.root = t.fs->geo.rootino;
		err = walk_tree(nfiles, &ops, &t);
		err2 = mfs_icache_destroy(t.fs);
		if (!err)
			err = err2;
	}
	err2 = mfs_fs_close(t.fs);
	return err ? err : err2;
}

/* -- into a directory (tmpfs), for mkfs.ext4 -d ------------------------------------------------ */

struct dir_tree {
	char base[PATH_MAX];
	char top[PATH_MAX + 32], mid[PATH_MAX + 64];
};

static int dir_mkdir(void *p, uint64_t top, int has_mid, uint64_t mid)
{
	struct dir_tree *t = p;

	if (!has_mid) {
		fmt(t->top, sizeof(t->top), "%s/d%llu", t->base, (unsigned long long)top);
		return mkdir(t->top, 0755) ? -errno : 0;
	}
	fmt(t->mid, sizeof(t->mid), "%s/s%llu", t->top, (unsigned long long)mid);
	return mkdir(t->mid, 0755) ? -errno : 0;
}

static int dir_add(void *p, const struct entry *e)
{
	struct dir_tree *t = p;
	char path[PATH_MAX + 128], prev[PATH_MAX + 128], target[64];
	int fd;

	fmt(path, sizeof(path), "%s/file_%llu.c", t->mid, (unsigned long long)e->i);
	fmt(target, sizeof(target), "file_%llu.c", (unsigned long long)e->prev);
	if (e->kind == 1)
		return symlink(target, path) ? -errno : 0;
	if (e->kind == 2) {
		fmt(prev, sizeof(prev), "%s/%s", t->mid, target);
		return link(prev, path) ? -errno : 0;
	}
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL, 0644);
	if (fd < 0)
		return -errno;
	if (e->size && write(fd, data, e->size) != (ssize_t)e->size) {
		close(fd);
		return -EIO;
	}
	close(fd);
	return 0;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

static void rm_tree(const char *dir)
{
	nftw(dir, rm_one, 64, FTW_DEPTH | FTW_PHYS);
}

static int populate_dir(uint64_t nfiles, const char *base)
{
	static const struct tree_ops ops = { dir_mkdir, dir_add };
	struct dir_tree *t = calloc(1, sizeof(*t));
	int err;

	if (!t)
		return -ENOMEM;
	fmt(t->base, sizeof(t->base), "%s", base);
	err = mkdir(base, 0755) ? -errno : walk_tree(nfiles, &ops, t);
	free(t);
	return err;
}

/* ---- profiling (BENCH_SCRUB_PERF) ------------------------------------------------------------ */

/* perf record -g -a into PREFIX.<nfiles>.data while a scrub runs; its pid or 0. */
static pid_t perf_start(uint64_t nfiles)
{
	char out[PATH_MAX];
	pid_t p;

	if (!perf_prefix)
		return 0;
	fmt(out, sizeof(out), "%s.%llu.data", perf_prefix, (unsigned long long)nfiles);
	printf("bench_scrub: perf record -a into %s, the daemon is pid %d\n", out,
	       (int)daemon_pid);
	p = fork();
	if (p == 0) {
		int fd = open("/dev/null", O_WRONLY);

		dup2(fd, STDOUT_FILENO);
		dup2(fd, STDERR_FILENO);
		/* System-wide: the daemon's worker threads start after an attach with -p, which
		 * would not follow them.  `perf report --pid` picks the daemon out. */
		execlp("perf", "perf", "record", "-q", "-g", "-a", "-o", out, (char *)NULL);
		_exit(127);
	}
	if (p > 0) {
		struct timespec ts = { 0, 500000000 };

		nanosleep(&ts, NULL);   /* let it attach (a profile, not a measurement) */
	}
	return p > 0 ? p : 0;
}

static void perf_stop(pid_t p)
{
	if (p <= 0)
		return;
	kill(p, SIGINT);
	waitpid(p, NULL, 0);
}

/* ---- one size ------------------------------------------------------------------------------- */

/*
 * Read every data segment of a (sparse) image file, so that the page cache holds it: the
 * mendfs image's file data are holes (never written), so this reads its metadata.  Both
 * checkers are then timed on images in memory, even when other processes pushed the
 * pages out between runs.
 */
static void warm_image(const char *path)
{
	static char buf[1 << 20];
	int fd = open(path, O_RDONLY);
	off_t pos = 0, end;

	if (fd < 0)
		return;
	while ((pos = lseek(fd, pos, SEEK_DATA)) >= 0) {
		end = lseek(fd, pos, SEEK_HOLE);
		if (end <= pos)
			break;
		while (pos < end) {
			ssize_t n = pread(fd, buf, (size_t)(end - pos < (off_t)sizeof(buf) ?
							    end - pos : (off_t)sizeof(buf)), pos);

			if (n <= 0)
				break;
			pos += n;
		}
		if (pos < end)
			break;
	}
	close(fd);
}

/* One timed scrub: wall and CPU seconds (daemon, client), what it printed. */
struct scrub_result {
	double wall, cpu_d, cpu_c;
	int rc;
	char objects[64], phases[256];
};

/* Mount the image with the daemon of `bin`, time `mendfs_scrub -n -v` of `bin`, unmount. */
static int scrub_once(const char *bin, uint64_t nfiles, struct scrub_result *res)
{
	char scrub[PATH_MAX + 32], out[PATH_MAX + 16];
	double t0;
	pid_t perf;
	FILE *f;

	memset(res, 0, sizeof(*res));
	snprintf(res->objects, sizeof(res->objects), "?");
	fmt(scrub, sizeof(scrub), "%s/mendfs_scrub", bin);
	fmt(out, sizeof(out), "%s/scrub.out", work);
	warm_image(img);
	if (mount_fs(bin) != 0) {
		fprintf(stderr, "bench_scrub: cannot mount %s with %s/mendfs\n", img, bin);
		return -1;
	}
	{
		char *argv[] = { scrub, "-n", "-v", mnt, NULL };

		perf = perf_start(nfiles);
		res->cpu_d = daemon_cpu();
		t0 = now();
		res->rc = run(out, argv);
		res->wall = now() - t0;
		res->cpu_c = last_cpu;
		res->cpu_d = daemon_cpu() - res->cpu_d;
		perf_stop(perf);
	}
	umount_fs();
	f = fopen(out, "r");
	if (f) {
		char line[1024];

		while (fgets(line, sizeof(line), f)) {
			char *p = strstr(line, "(");
			int ph;
			double secs;

			if (p && strstr(p, "objects checked"))
				snprintf(res->objects, sizeof(res->objects), "%.*s",
					 (int)strcspn(p + 1, " "), p + 1);
			/* "Phase N: label: done in S s" */
			if (sscanf(line, "Phase %d:", &ph) == 1 && (p = strstr(line, "done in ")) &&
			    sscanf(p, "done in %lf", &secs) == 1) {
				size_t l = strlen(res->phases);

				snprintf(res->phases + l, sizeof(res->phases) - l, "%s%d:%.2f",
					 l ? " " : "", ph, secs);
			}
		}
		fclose(f);
	}
	unlink(out);
	return 0;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
	qsort(v, (size_t)n, sizeof(*v), cmp_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

#define MAX_REPEAT 16

static void bench_one(uint64_t nfiles)
{
	char mkfs[PATH_MAX + 32], ext4[PATH_MAX + 32], size[32], inodes[32];
	char tree[PATH_MAX + 16];
	const char *bins[2] = { bindir, alt_bindir[0] ? alt_bindir : NULL };
	double cpu[2][MAX_REPEAT], wall[2][MAX_REPEAT];
	struct scrub_result res = { 0 }, res_a = { 0 };
	double t0, t_pop = 0, t_fsck, cpu_fsck, cpu_a, wall_a, fc[MAX_REPEAT], fw[MAX_REPEAT];
	char *fsck_argv[] = { "e2fsck", "-fn", ext4, NULL };
	int rc_fsck = -1, err, nrun[2] = { 0, 0 }, reused = 0, do_ext4 = !no_ext4;

	fmt(mkfs, sizeof(mkfs), "%s/mkfs.mendfs", bindir);
	if (images[0]) {
		fmt(img, sizeof(img), "%s/mendfs.%llu.img", images, (unsigned long long)nfiles);
		fmt(ext4, sizeof(ext4), "%s/ext4.%llu.img", images, (unsigned long long)nfiles);
	} else {
		fmt(img, sizeof(img), "%s/mendfs.img", work);
		fmt(ext4, sizeof(ext4), "%s/ext4.img", work);
	}
	fmt(tree, sizeof(tree), "%s/tree", tmpdir);
	/* Room for the data (about 3 KiB a file) and the metadata, sparse. */
	snprintf(size, sizeof(size), "%lluM", (unsigned long long)(nfiles * 12 / 1024 + 512));
	snprintf(inodes, sizeof(inodes), "%llu", (unsigned long long)(nfiles + nfiles / 8 + 4096));
	if (images[0] && access(img, R_OK | W_OK) == 0) {
		reused = 1;
	} else {
		char *argv[] = { mkfs, "-q", "-f", img, size, NULL };

		if (run(NULL, argv) != 0) {
			fprintf(stderr, "bench_scrub: cannot make %s\n", img);
			return;
		}
		t0 = now();
		err = populate_mendfs(nfiles);
		t_pop = now() - t0;
		if (err) {
			fprintf(stderr, "bench_scrub: populating %s: %s\n", img, strerror(-err));
			unlink(img);
			return;
		}
	}
	/* The same tree into ext4 (not timed), first: e2fsck takes its turn in the rounds. */
	if (do_ext4 && (!images[0] || access(ext4, R_OK) != 0)) {
		err = populate_dir(nfiles, tree);
		if (!err) {
			char *argv[] = { "mkfs.ext4", "-q", "-F", "-N", inodes, "-d", tree, ext4,
					 size, NULL };

			err = run(NULL, argv) != 0 ? -EIO : 0;
		}
		rm_tree(tree);
		if (err) {
			fprintf(stderr, "bench_scrub: the ext4 image (tree in %s, mkfs.ext4 -d): %s\n",
				tree, strerror(-err));
			unlink(ext4);
			do_ext4 = 0;    /* this size: the mendfs side only */
		}
	}
	if (do_ext4)
		run(NULL, fsck_argv);   /* untimed: the metadata it reads into the page cache */
	/* A B e2fsck, A B e2fsck ...: the same load for both builds and e2fsck, as far as can
	 * be had. */
	for (int r = 0; r < repeat; r++) {
		if (do_ext4) {
			t0 = now();
			rc_fsck = run(NULL, fsck_argv);
			fw[r] = now() - t0;
			fc[r] = last_cpu;
			if (repeat > 1)
				printf("%9llu files  e2fsck -fn %6.2f s, CPU %.2f (exit %d)\n",
				       (unsigned long long)nfiles, fw[r], fc[r], rc_fsck);
		}
		for (int b = 0; b < 2; b++) {
			if (!bins[b] || scrub_once(bins[b], nfiles, &res) != 0)
				continue;
			if (b == 0)
				res_a = res;
			cpu[b][nrun[b]] = res.cpu_d + res.cpu_c;
			wall[b][nrun[b]++] = res.wall;
			if (repeat > 1 || bins[1])
				printf("%9llu files  %s: mendfs_scrub %6.2f s, CPU %.2f daemon + %.2f "
				       "client = %.2f (exit %d; phase seconds %s)\n",
				       (unsigned long long)nfiles, b ? "B" : "A", res.wall, res.cpu_d,
				       res.cpu_c, res.cpu_d + res.cpu_c, res.rc, res.phases);
			fflush(stdout);
		}
	}
	res = res_a;
	if (!images[0])
		unlink(img);
	if (!nrun[0])
		return;
	cpu_a = median(cpu[0], nrun[0]);
	wall_a = median(wall[0], nrun[0]);
	if (nrun[1])
		printf("%9llu files  median of %d: A CPU %.2f s, wall %.2f s | B CPU %.2f s, wall "
		       "%.2f s | B/A CPU %.2f\n", (unsigned long long)nfiles, nrun[0], cpu_a, wall_a,
		       median(cpu[1], nrun[1]), median(wall[1], nrun[1]),
		       cpu_a > 0 ? median(cpu[1], nrun[1]) / cpu_a : 0.0);
	if (!do_ext4) {
		printf("%9llu files  populate %6.1f s%s | mendfs_scrub %6.2f s, CPU %.2f daemon + "
		       "%.2f client (%s checks, exit %d, %.0f files/s; phase seconds %s)\n",
		       (unsigned long long)nfiles, t_pop, reused ? " (reused)" : "", wall_a,
		       res.cpu_d, res.cpu_c, res.objects, res.rc, (double)nfiles / wall_a,
		       res.phases);
		fflush(stdout);
		return;
	}
	t_fsck = median(fw, repeat);
	cpu_fsck = median(fc, repeat);
	if (!images[0])
		unlink(ext4);
	/* Wall time swings with the machine's load; CPU seconds (the daemon's and the
	 * client's for the scrub) are steadier.  With repeats: medians of build A. */
	printf("%9llu files  populate %6.1f s%s | mendfs_scrub %6.2f s, CPU %.2f daemon + %.2f "
	       "client (%s checks, exit %d, %.0f files/s; phase seconds %s) | e2fsck -fn %6.2f s, "
	       "CPU %.2f (exit %d, %.0f files/s) | scrub/e2fsck %.2f, CPU %.2f\n",
	       (unsigned long long)nfiles, t_pop, reused ? " (reused)" : "", wall_a, res.cpu_d,
	       res.cpu_c, res.objects, res.rc, (double)nfiles / wall_a, res.phases, t_fsck,
	       cpu_fsck, rc_fsck, (double)nfiles / t_fsck, t_fsck > 0 ? wall_a / t_fsck : 0.0,
	       cpu_fsck > 0 ? cpu_a / cpu_fsck : 0.0);
	if (nrun[1])
		printf("%9llu files  B: median CPU %.2f s, wall %.2f s | scrub/e2fsck %.2f, CPU "
		       "%.2f\n", (unsigned long long)nfiles, median(cpu[1], nrun[1]),
		       median(wall[1], nrun[1]), t_fsck > 0 ? median(wall[1], nrun[1]) / t_fsck : 0.0,
		       cpu_fsck > 0 ? median(cpu[1], nrun[1]) / cpu_fsck : 0.0);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	const char *sizes = getenv("BENCH_SCRUB_FILES"), *base = getenv("BENCH_DIR");
	const char *tbase = getenv("BENCH_TREE_DIR"), *full = getenv("BENCH_SCRUB_FULL");
	char self[PATH_MAX], *copy, *tok, *save = NULL, *slash, rundir[PATH_MAX + 8];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);

	(void)argc;
	(void)argv;
	if (n <= 0)
		return 1;
	self[n] = 0;
	slash = strrchr(self, '/');
	*slash = 0;
	fmt(bindir, sizeof(bindir), "%s/../bin", self);
	if (!sizes)
		sizes = full && !strcmp(full, "1") ? "100000 300000 1000000" :
			getenv("BENCH_QUICK") && !strcmp(getenv("BENCH_QUICK"), "1") ?
			"10000 20000 40000" : "20000 50000 100000";
	fmt(work, sizeof(work), "%s/bench_scrub.XXXXXX", base ? base : "/var/tmp");
	fmt(tmpdir, sizeof(tmpdir), "%s/bench_scrub_tree.XXXXXX", tbase ? tbase : "/dev/shm");
	if (access("/dev/fuse", R_OK | W_OK) != 0 || !mkdtemp(work)) {
		printf("bench_scrub: skipped (no /dev/fuse or no %s)\n", base ? base : "/var/tmp");
		return 0;
	}
	if (!mkdtemp(tmpdir)) {
		printf("bench_scrub: skipped (no %s)\n", tbase ? tbase : "/dev/shm");
		rmdir(work);
		return 0;
	}
	perf_prefix = getenv("BENCH_SCRUB_PERF");
	no_ext4 = getenv("BENCH_SCRUB_NO_EXT4") && !strcmp(getenv("BENCH_SCRUB_NO_EXT4"), "1");
	if (getenv("BENCH_SCRUB_CACHE_MB"))
		fmt(cache_opt, sizeof(cache_opt), "cache_size=%lu",
		    strtoul(getenv("BENCH_SCRUB_CACHE_MB"), NULL, 10));
	if (getenv("BENCH_SCRUB_IMAGES"))
		fmt(images, sizeof(images), "%s", getenv("BENCH_SCRUB_IMAGES"));
	if (getenv("BENCH_SCRUB_ALT"))
		fmt(alt_bindir, sizeof(alt_bindir), "%s", getenv("BENCH_SCRUB_ALT"));
	if (getenv("BENCH_SCRUB_REPEAT")) {
		repeat = atoi(getenv("BENCH_SCRUB_REPEAT"));
		repeat = repeat < 1 ? 1 : repeat > MAX_REPEAT ? MAX_REPEAT : repeat;
	}
	fmt(mnt, sizeof(mnt), "%s/m", work);
	fmt(img, sizeof(img), "%s/mendfs.img", work);
	fmt(rundir, sizeof(rundir), "%s/run", work);
	mkdir(mnt, 0755);
	mkdir(rundir, 0755);
	setenv("MENDFS_RUNDIR", rundir, 1);
	memset(data, 'x', sizeof(data));
	printf("bench_scrub: full online scrub vs e2fsck -fn on the same tree (%s; daemon %s)\n",
	       work, cache_opt[0] ? cache_opt : "default cache_size");
	copy = strdup(sizes);
	for (tok = copy ? strtok_r(copy, " ,", &save) : NULL; tok;
	     tok = strtok_r(NULL, " ,", &save)) {
		uint64_t nf = strtoull(tok, NULL, 10);

		if (nf)
			bench_one(nf);
	}
	free(copy);
	rmdir(mnt);
	rmdir(rundir);
	rmdir(work);
	rmdir(tmpdir);
	return 0;
}
