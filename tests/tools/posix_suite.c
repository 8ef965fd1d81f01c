/*
 * posix_suite.c — the POSIX behaviour suite: one test per semantic a mounted mendfs must
 * show (issue 3), each checking results and errno values.
 *
 *   posix_suite [-v] [-t NAME]... DIR
 *
 * DIR is an empty directory on the filesystem under test (mounted with allow_other, so the
 * unprivileged parts can reach it).  Every test runs in a fresh subdirectory DIR/NAME
 * (mode 0777) as its working directory; the parts that need an unprivileged caller run in a
 * child process that dropped to nobody (uid and gid 65534, no supplementary groups).
 * Prints one line per test — "ok NAME" or "FAIL NAME: first failure" with every failed
 * check as a "  # line N: ..." line before it — and exits 1 when any test failed.
 * Must run as root (it chowns files to other users and switches to nobody).
 *
 * Failure state lives in a shared anonymous mapping, so checks made in a forked child
 * count for the test that forked it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/falloc.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/types.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

#define NOBODY 65534u
#define GIB (1ULL << 30)
#define MIB (1ULL << 20)

/* ---- failure bookkeeping -------------------------------------------------------------- */

struct suite_state {
	int fails;                  /* failed checks in the current test */
	char first[768];            /* the first one's message */
};
static struct suite_state *S;
static int verbose;

static void failf(int line, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void failf(int line, const char *fmt, ...)
{
	char msg[700];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (S->fails++ == 0)
		snprintf(S->first, sizeof(S->first), "line %d: %s", line, msg);
	printf("  # line %d: %s\n", line, msg);
	fflush(stdout);
}

static const char *ename(int e)
{
	const char *n = e ? strerrorname_np(e) : "0";

	return n ? n : "E?";
}

/* The call must succeed (not return -1); evaluates to its result. */
#define OK(call) ({                                                                   \
	long long r_ = (long long)(call);                                             \
	if (r_ == -1)                                                                 \
		failf(__LINE__, "%s: expected success, got %s", #call, ename(errno)); \
	r_; })

/* The call must fail with errno E. */
#define ERR(call, E) do {                                                             \
	errno = 0;                                                                    \
	long long r_ = (long long)(call);                                             \
	int e_ = errno;                                                               \
	if (r_ != -1)                                                                 \
		failf(__LINE__, "%s: expected %s, got success (%lld)", #call,          \
		      ename(E), r_);                                                  \
	else if (e_ != (E))                                                           \
		failf(__LINE__, "%s: expected %s, got %s", #call, ename(E), ename(e_)); \
} while (0)

#define EQ(a, b) do {                                                                 \
	long long a_ = (long long)(a), b_ = (long long)(b);                           \
	if (a_ != b_)                                                                 \
		failf(__LINE__, "%s: expected %lld, got %lld", #a, b_, a_);           \
} while (0)

#define TRUE(c, ...) do {                                                             \
	if (!(c))                                                                     \
		failf(__LINE__, __VA_ARGS__);                                         \
} while (0)

/* ---- helpers -------------------------------------------------------------------------- */

static struct stat st_of(const char *path)
{
	struct stat st;

	memset(&st, 0, sizeof(st));
	if (!path || lstat(path, &st) != 0)
		st.st_ino = 0;
	return st;
}

static struct stat fst_of(int fd)
{
	struct stat st;

	memset(&st, 0, sizeof(st));
	if (fstat(fd, &st) != 0)
		st.st_ino = 0;
	return st;
}

static int ts_cmp(struct timespec a, struct timespec b)
{
	if (a.tv_sec != b.tv_sec)
		return a.tv_sec < b.tv_sec ? -1 : 1;
	if (a.tv_nsec != b.tv_nsec)
		return a.tv_nsec < b.tv_nsec ? -1 : 1;
	return 0;
}

/* Times the kernel keeps itself (the writeback cache) come from its coarse clock: wait
 * (bounded: 1 s) until that clock is past `t`, so that a change made next can show. */
static void past_coarse(struct timespec t)
{
	for (int i = 0; i < 1000; i++) {
		struct timespec now;

		clock_gettime(CLOCK_REALTIME_COARSE, &now);
		if (ts_cmp(now, t) > 0)
			return;
		usleep(1000);
	}
}

/* The allocated sectors as the daemon has them now (not the kernel's cached count, which
 * the writeback cache lets lag behind the blocks its writeback allocates). */
static long long blocks_now(int fd)
{
	struct statx sx;

	if (statx(fd, "", AT_EMPTY_PATH | AT_STATX_FORCE_SYNC, STATX_BLOCKS, &sx) != 0)
		return -1;
	return (long long)sx.stx_blocks;
}

/* Deterministic content: byte i of pattern `seed`. */
static unsigned char pat(unsigned seed, uint64_t i)
{
	uint64_t x = (i >> 3) * 0x9e3779b97f4a7c15ULL ^ (uint64_t)seed * 0xbf58476d1ce4e5b9ULL;

	x ^= x >> 31;
	x *= 0x94d049bb133111ebULL;
	x ^= x >> 29;
	return (unsigned char)(x >> ((i & 7) * 8));
}

static void fill(unsigned char *buf, size_t n, unsigned seed, uint64_t off)
{
	for (size_t i = 0; i < n; i++)
		buf[i] = pat(seed, off + i);
}

/* Write n bytes of pattern `seed` at file offset off (the pattern indexed by file offset). */
static int put(int fd, uint64_t off, size_t n, unsigned seed)
{
	unsigned char *buf = malloc(n ? n : 1);
	ssize_t w;

	if (!buf)
		return -1;
	fill(buf, n, seed, off);
	w = pwrite(fd, buf, n, (off_t)off);
	free(buf);
	return w == (ssize_t)n ? 0 : -1;
}

/* Compare [off, off + n) with the pattern (seed 0: zeroes).  Returns the first differing
 * offset, or -1 when equal; -2 on a read error or a short read. */
static long long cmp_range(int fd, uint64_t off, size_t n, unsigned seed)
{
	unsigned char *buf = malloc(n ? n : 1);
	ssize_t r;
	long long bad = -1;

	if (!buf)
		return -2;
	r = pread(fd, buf, n, (off_t)off);
	if (r != (ssize_t)n)
		bad = -2;
	for (size_t i = 0; bad == -1 && i < n; i++)
		if (buf[i] != (seed ? pat(seed, off + i) : 0))
			bad = (long long)(off + i);
	free(buf);
	return bad;
}

#define SAME(fd, off, n, seed) do {                                                   \
	long long b_ = cmp_range((fd), (off), (n), (seed));                           \
	if (b_ == -2)                                                                 \
		failf(__LINE__, "read of %llu bytes at %llu failed or was short (%s)",   \
		      (unsigned long long)(n), (unsigned long long)(off), ename(errno)); \
	else if (b_ != -1)                                                            \
		failf(__LINE__, "content differs at byte %lld (range %llu+%llu, %s)", b_, \
		      (unsigned long long)(off), (unsigned long long)(n),               \
		      (seed) ? "pattern" : "zeroes");                                  \
} while (0)

/* n filesystem blocks in 512-byte sectors (st_blocks units). */
static long long sectors(int fd, long long n)
{
	return n * (fst_of(fd).st_blksize / 512);
}

static int mkfile(const char *path, mode_t mode, size_t n, unsigned seed)
{
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, mode);

	if (fd < 0)
		return -1;
	if (n && put(fd, 0, n, seed) != 0) {
		close(fd);
		return -1;
	}
	return close(fd);
}

static struct statvfs vfs_of(const char *path)
{
	struct statvfs sv;

	memset(&sv, 0, sizeof(sv));
	statvfs(path, &sv);
	return sv;
}

/* Inodes in use, as statfs shows them (exact: inodes in chunks minus free ones). */
static unsigned long long used_inodes(const struct statvfs *sv)
{
	return (unsigned long long)(sv->f_files - sv->f_ffree);
}

/* Poll (bounded: 20 s) until statvfs shows at least `blocks` free blocks and at most
 * `used` inodes in use: unlinked inodes are freed by the daemon's worker after the kernel
 * forgets them. */
static int wait_free(const char *path, unsigned long long blocks, unsigned long long used)
{
	for (int i = 0; i < 2000; i++) {
		struct statvfs sv = vfs_of(path);

		if (sv.f_bfree >= blocks && used_inodes(&sv) <= used)
			return 0;
		usleep(10000);
	}
	return -1;
}

/* Run fn as nobody (uid/gid 65534, no supplementary groups) in a child; its checks count. */
static void as_nobody(void (*fn)(void *), void *arg)
{
	pid_t pid;
	int status;

	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		failf(__LINE__, "fork: %s", ename(errno));
		return;
	}
	if (pid == 0) {
		if (setgroups(0, NULL) != 0 || setresgid(NOBODY, NOBODY, NOBODY) != 0 ||
		    setresuid(NOBODY, NOBODY, NOBODY) != 0) {
			failf(__LINE__, "dropping to nobody: %s", ename(errno));
			_exit(1);
		}
		fn(arg);
		fflush(stdout);
		_exit(0);
	}
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		failf(__LINE__, "the unprivileged child did not exit normally (status %#x)",
		      status);
}

static char *name_of(size_t len, char c)
{
	static char buf[512];

	memset(buf, c, len);
	buf[len] = 0;
	return buf;
}

/* ---- regular files -------------------------------------------------------------------- */

static void t_sparse_holes(void)
{
	int fd = OK(open("f", O_CREAT | O_RDWR, 0644));
	struct stat st;

	EQ(put(fd, 1 * MIB + 100, 5000, 7), 0);
	st = fst_of(fd);
	EQ(st.st_size, 1 * MIB + 5100);
	SAME(fd, 0, 1 * MIB + 100, 0);
	SAME(fd, 1 * MIB + 100, 5000, 7);
	TRUE(st.st_blocks <= sectors(fd, 2) + 16, "a 5000-byte write at 1 MiB uses %lld sectors",
	     (long long)st.st_blocks);
	/* A read across EOF is short; at EOF it returns 0. */
	{
		char buf[100];

		EQ(pread(fd, buf, sizeof(buf), (off_t)(1 * MIB + 5050)), 50);
		EQ(pread(fd, buf, sizeof(buf), (off_t)(1 * MIB + 5100)), 0);
		EQ(pread(fd, buf, sizeof(buf), (off_t)(10 * MIB)), 0);
	}
	/* Writing into the middle of a hole leaves both sides zero. */
	EQ(put(fd, 300000, 10, 8), 0);
	SAME(fd, 0, 300000, 0);
	SAME(fd, 300000, 10, 8);
	SAME(fd, 300010, 1 * MIB + 100 - 300010, 0);
	close(fd);
}

static void t_past_4gib(void)
{
	int fd = OK(open("big", O_CREAT | O_RDWR, 0644));
	struct stat st;

	EQ(put(fd, 4 * GIB - 2048, 4096, 3), 0);          /* across the 4 GiB boundary */
	EQ(put(fd, 5 * GIB + 123, 70000, 4), 0);
	st = fst_of(fd);
	EQ(st.st_size, 5 * GIB + 123 + 70000);
	SAME(fd, 4 * GIB - 2048, 4096, 3);
	SAME(fd, 5 * GIB + 123, 70000, 4);
	SAME(fd, 4 * GIB + 2048, 1 * MIB, 0);
	SAME(fd, 5 * GIB - 4096, 4096 + 123, 0);
	TRUE(st.st_blocks <= sectors(fd, 2 + 2 + 70000 / st.st_blksize) + 64,
	     "sparse file past 4 GiB uses %lld sectors",
	     (long long)st.st_blocks);
	/* Truncate down to just past 4 GiB: the data below stays, the rest goes. */
	OK(ftruncate(fd, (off_t)(4 * GIB + 1)));
	EQ(fst_of(fd).st_size, 4 * GIB + 1);
	SAME(fd, 4 * GIB - 2048, 2049, 3);
	OK(ftruncate(fd, (off_t)(6 * GIB)));
	SAME(fd, 4 * GIB + 1, 4096, 0);
	SAME(fd, 5 * GIB + 123, 70000, 0);
	/* A file offset past 1 TiB. */
	EQ(put(fd, 1ULL << 40, 10, 5), 0);
	SAME(fd, 1ULL << 40, 10, 5);
	EQ(fst_of(fd).st_size, (1ULL << 40) + 10);
	/* The largest file: 2^63 - 1 bytes (the kernel's limit too, which refuses writes
	 * past it with EINVAL before they reach us). */
	EQ(pwrite(fd, "ab", 2, (off_t)(LLONG_MAX - 2)), 2);
	EQ(fst_of(fd).st_size, LLONG_MAX);
	SAME(fd, (1ULL << 40) + 10, 4096, 0);
	{
		char c[3] = { 0 };

		EQ(pread(fd, c, 2, (off_t)(LLONG_MAX - 2)), 2);
		TRUE(c[0] == 'a' && c[1] == 'b', "the last bytes read back as %02x %02x", c[0], c[1]);
	}
	{
		/* The data's block, or (no holes reported) the offset itself. */
		off_t dpos = lseek(fd, (off_t)(1ULL << 41), SEEK_DATA);

		TRUE(dpos == (off_t)((LLONG_MAX - 2) & ~(long long)(fst_of(fd).st_blksize - 1)) ||
		     dpos == (off_t)(1ULL << 41), "SEEK_DATA from 2 TiB: %lld (%s)",
		     (long long)dpos, dpos < 0 ? ename(errno) : "");
	}
	OK(ftruncate(fd, (off_t)(4 * GIB)));
	TRUE(fst_of(fd).st_blocks <= sectors(fd, 2) + 16,
	     "after truncating back to 4 GiB: %lld sectors",
	     (long long)fst_of(fd).st_blocks);
	SAME(fd, 4 * GIB - 2048, 2048, 3);
	close(fd);
}

static void t_truncate(void)
{
	int fd = OK(open("t", O_CREAT | O_RDWR, 0644));
	struct stat st;

	EQ(put(fd, 0, 100000, 9), 0);
	OK(ftruncate(fd, 5000));                  /* down, inside a block */
	EQ(fst_of(fd).st_size, 5000);
	SAME(fd, 0, 5000, 9);
	OK(ftruncate(fd, 50000));                 /* up: the old tail must read as zeroes */
	EQ(fst_of(fd).st_size, 50000);
	SAME(fd, 0, 5000, 9);
	SAME(fd, 5000, 45000, 0);
	OK(ftruncate(fd, 0));
	st = fst_of(fd);
	EQ(st.st_size, 0);
	EQ(st.st_blocks, 0);
	OK(truncate("t", 12345));                 /* by path */
	EQ(st_of("t").st_size, 12345);
	SAME(fd, 0, 12345, 0);
	ERR(ftruncate(fd, -1), EINVAL);
	OK(mkdir("d", 0755));
	ERR(truncate("d", 0), EISDIR);
	close(fd);
	fd = OK(open("t", O_RDONLY));
	ERR(ftruncate(fd, 0), EINVAL);            /* not open for writing */
	close(fd);
}

static void t_o_append(void)
{
	int fd = OK(open("a", O_CREAT | O_WRONLY | O_APPEND, 0644));

	EQ(write(fd, "abc", 3), 3);
	OK(lseek(fd, 0, SEEK_SET));
	EQ(write(fd, "def", 3), 3);               /* appends whatever the offset */
	EQ(lseek(fd, 0, SEEK_CUR), 6);
	close(fd);
	fd = OK(open("a", O_WRONLY | O_APPEND));
	EQ(write(fd, "gh", 2), 2);
	close(fd);
	{
		char buf[16] = { 0 };

		fd = OK(open("a", O_RDONLY));
		EQ(read(fd, buf, sizeof(buf)), 8);
		TRUE(memcmp(buf, "abcdefgh", 8) == 0, "O_APPEND content: '%.8s'", buf);
		close(fd);
	}
}

static void t_o_trunc(void)
{
	struct stat st0, st1;
	struct timespec old[2] = { { 1000, 0 }, { 1000, 0 } };
	int fd;

	EQ(mkfile("t", 0644, 200000, 2), 0);
	OK(utimensat(AT_FDCWD, "t", old, 0));
	st0 = st_of("t");
	past_coarse(st0.st_ctim);
	fd = OK(open("t", O_WRONLY | O_TRUNC));
	st1 = fst_of(fd);
	EQ(st1.st_size, 0);
	EQ(st1.st_blocks, 0);
	EQ(st1.st_ino, st0.st_ino);
	TRUE(st1.st_mtim.tv_sec > 1000, "O_TRUNC did not update mtime");
	TRUE(ts_cmp(st1.st_ctim, st0.st_ctim) > 0, "O_TRUNC did not update ctime");
	EQ(write(fd, "x", 1), 1);
	close(fd);
	EQ(st_of("t").st_size, 1);
	/* O_TRUNC of an empty file is harmless; O_TRUNC on a directory: EISDIR. */
	fd = OK(open("t", O_RDWR | O_TRUNC));
	close(fd);
	OK(mkdir("d", 0755));
	ERR(open("d", O_WRONLY | O_TRUNC), EISDIR);
}

static void t_o_excl(void)
{
	int fd = OK(open("e", O_CREAT | O_EXCL | O_WRONLY, 0600));

	close(fd);
	EQ(st_of("e").st_mode & 07777, 0600);
	ERR(open("e", O_CREAT | O_EXCL | O_WRONLY, 0600), EEXIST);
	OK(mkdir("d", 0755));
	ERR(open("d", O_CREAT | O_EXCL | O_WRONLY, 0600), EEXIST);
	ERR(open("d", O_CREAT | O_WRONLY, 0600), EISDIR);
	OK(symlink("nowhere", "dangling"));
	ERR(open("dangling", O_CREAT | O_EXCL | O_WRONLY, 0600), EEXIST);
	EQ(st_of("nowhere").st_ino, 0);
	/* Without O_EXCL a dangling symlink's target is created. */
	fd = OK(open("dangling", O_CREAT | O_WRONLY, 0600));
	close(fd);
	TRUE(st_of("nowhere").st_ino != 0, "open(O_CREAT) through a dangling symlink");
	ERR(open("missing/x", O_CREAT | O_WRONLY, 0600), ENOENT);
	ERR(open("e/x", O_CREAT | O_WRONLY, 0600), ENOTDIR);
	ERR(open("missing", O_RDONLY), ENOENT);
}

static void t_fallocate(void)
{
	int fd = OK(open("p", O_CREAT | O_RDWR, 0644));
	struct stat st;
	blkcnt_t b0;

	/* Plain preallocation extends the size; the blocks read as zeroes. */
	OK(fallocate(fd, 0, 0, 1 * MIB));
	st = fst_of(fd);
	EQ(st.st_size, 1 * MIB);
	TRUE(st.st_blocks >= (blkcnt_t)(1 * MIB / 512), "fallocate 1 MiB: %lld sectors",
	     (long long)st.st_blocks);
	SAME(fd, 0, 1 * MIB, 0);
	/* KEEP_SIZE past EOF: blocks but no size. */
	b0 = st.st_blocks;
	OK(fallocate(fd, FALLOC_FL_KEEP_SIZE, 1 * MIB, 1 * MIB));
	st = fst_of(fd);
	EQ(st.st_size, 1 * MIB);
	TRUE(st.st_blocks >= b0 + (blkcnt_t)(1 * MIB / 512), "KEEP_SIZE allocated nothing");
	/* Writes into preallocated blocks. */
	EQ(put(fd, 5000, 10000, 6), 0);
	SAME(fd, 0, 5000, 0);
	SAME(fd, 5000, 10000, 6);
	SAME(fd, 15000, 1 * MIB - 15000, 0);
	/* Punch needs KEEP_SIZE (the kernel says so). */
	ERR(fallocate(fd, FALLOC_FL_PUNCH_HOLE, 0, 4096), EOPNOTSUPP);
	close(fd);

	fd = OK(open("q", O_CREAT | O_RDWR, 0644));
	EQ(put(fd, 0, 2 * MIB, 11), 0);
	OK(fsync(fd));                            /* block counts once the data is written */
	b0 = blocks_now(fd);
	OK(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 10000, 500000));
	st = fst_of(fd);
	EQ(st.st_size, 2 * MIB);
	TRUE(b0 - st.st_blocks >= sectors(fd, 510000 / st.st_blksize -
					   (10000 + st.st_blksize - 1) / st.st_blksize),
	     "punching 500000 bytes freed %lld sectors",
	     (long long)(b0 - st.st_blocks));
	SAME(fd, 0, 10000, 11);
	SAME(fd, 10000, 500000, 0);
	SAME(fd, 510000, 2 * MIB - 510000, 11);
	/* Punch inside one block. */
	OK(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 600001, 100));
	SAME(fd, 510000, 600001 - 510000, 11);
	SAME(fd, 600001, 100, 0);
	SAME(fd, 600101, 1000, 11);
	/* Punch past EOF changes nothing. */
	OK(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 3 * MIB, 4096));
	EQ(fst_of(fd).st_size, 2 * MIB);
	/* Zero range, unaligned, inside the file. */
	OK(fallocate(fd, FALLOC_FL_ZERO_RANGE, 700003, 300000));
	SAME(fd, 600101, 700003 - 600101, 11);
	SAME(fd, 700003, 300000, 0);
	SAME(fd, 1000003, 2 * MIB - 1000003, 11);
	EQ(fst_of(fd).st_size, 2 * MIB);
	/* Zero range past EOF extends the size, with KEEP_SIZE it does not. */
	OK(fallocate(fd, FALLOC_FL_ZERO_RANGE, 2 * MIB - 100, 10000));
	EQ(fst_of(fd).st_size, 2 * MIB - 100 + 10000);
	SAME(fd, 2 * MIB - 100, 10000, 0);
	OK(fallocate(fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE, 3 * MIB, 10000));
	EQ(fst_of(fd).st_size, 2 * MIB - 100 + 10000);
	/* Modes we do not do, and bad arguments. */
	ERR(fallocate(fd, FALLOC_FL_COLLAPSE_RANGE, 0, 4096), EOPNOTSUPP);
	ERR(fallocate(fd, 0, 0, 0), EINVAL);
	ERR(fallocate(fd, 0, -1, 4096), EINVAL);
	close(fd);
	fd = OK(open("q", O_RDONLY));
	ERR(fallocate(fd, 0, 0, 4096), EBADF);
	close(fd);
}

static void t_seek_data_hole(void)
{
	int fd = OK(open("s", O_CREAT | O_RDWR, 0644));
	long long bs = fst_of(fd).st_blksize;

	EQ(put(fd, 0, (size_t)bs, 1), 0);
	EQ(put(fd, 1 * MIB, (size_t)bs, 1), 0);
	OK(ftruncate(fd, 2 * MIB));
	EQ(lseek(fd, 0, SEEK_DATA), 0);
	if (lseek(fd, 0, SEEK_HOLE) == 2 * MIB) {
		/* No holes reported (POSIX allows it: the writeback cache's mode): every
		 * offset before EOF is data. */
		EQ(lseek(fd, bs, SEEK_DATA), bs);
		EQ(lseek(fd, 1 * MIB + bs, SEEK_DATA), 1 * MIB + bs);
		EQ(lseek(fd, 10, SEEK_HOLE), 2 * MIB);
	} else {
		EQ(lseek(fd, 0, SEEK_HOLE), bs);
		EQ(lseek(fd, 10, SEEK_HOLE), bs);
		EQ(lseek(fd, bs, SEEK_DATA), 1 * MIB);
		EQ(lseek(fd, bs + 1, SEEK_DATA), 1 * MIB);
		EQ(lseek(fd, 1 * MIB + 7, SEEK_DATA), 1 * MIB + 7);
		EQ(lseek(fd, 1 * MIB, SEEK_HOLE), 1 * MIB + bs);
		ERR(lseek(fd, 1 * MIB + bs, SEEK_DATA), ENXIO);   /* only a hole to EOF */
		EQ(lseek(fd, 1 * MIB + bs, SEEK_HOLE), 1 * MIB + bs);
		EQ(lseek(fd, 2 * MIB - 1, SEEK_HOLE), 2 * MIB - 1);
	}
	ERR(lseek(fd, 2 * MIB, SEEK_DATA), ENXIO);           /* at EOF */
	ERR(lseek(fd, 2 * MIB, SEEK_HOLE), ENXIO);
	ERR(lseek(fd, 3 * MIB, SEEK_DATA), ENXIO);           /* past EOF */
	ERR(lseek(fd, 3 * MIB, SEEK_HOLE), ENXIO);
	ERR(lseek(fd, -1, SEEK_DATA), ENXIO);
	/* A file that is all data: the only hole is the end of file. */
	OK(ftruncate(fd, 1 * MIB + bs));
	EQ(lseek(fd, 1 * MIB, SEEK_HOLE), 1 * MIB + bs);
	EQ(lseek(fd, 1 * MIB + bs - 1, SEEK_DATA), 1 * MIB + bs - 1);
	/* An empty file: ENXIO for both. */
	close(fd);
	fd = OK(open("empty", O_CREAT | O_RDWR, 0644));
	ERR(lseek(fd, 0, SEEK_DATA), ENXIO);
	ERR(lseek(fd, 0, SEEK_HOLE), ENXIO);
	close(fd);
}

/* ---- directories ---------------------------------------------------------------------- */

static void t_mkdir(void)
{
	struct stat st;

	OK(mkdir("d", 0751));
	st = st_of("d");
	TRUE(S_ISDIR(st.st_mode), "mkdir made mode %o", st.st_mode);
	EQ(st.st_mode & 07777, 0751);
	EQ(st.st_nlink, 2);
	EQ(st_of(".").st_nlink, 3);
	ERR(mkdir("d", 0755), EEXIST);
	EQ(mkfile("f", 0644, 0, 0), 0);
	ERR(mkdir("f", 0755), EEXIST);
	ERR(mkdir("f/x", 0755), ENOTDIR);
	ERR(mkdir("missing/x", 0755), ENOENT);
	OK(symlink("d", "l"));
	ERR(mkdir("l", 0755), EEXIST);
	OK(mkdir("d/sub", 0700));
	EQ(st_of("d").st_nlink, 3);
	OK(mkdir("sticky", 01777));
	EQ(st_of("sticky").st_mode & 07777, 01777);
	{
		int fd = OK(open("d", O_RDONLY | O_DIRECTORY));
		char c[8];

		ERR(read(fd, c, sizeof(c)), EISDIR);
		close(fd);
	}
	EQ(st_of("d/sub/..").st_ino, st_of("d").st_ino);
	EQ(st_of("d/sub/.").st_ino, st_of("d/sub").st_ino);
}

static void t_rmdir(void)
{
	OK(mkdir("d", 0755));
	OK(mkdir("d/sub", 0755));
	EQ(mkfile("d/f", 0644, 0, 0), 0);
	ERR(rmdir("d"), ENOTEMPTY);
	OK(unlink("d/f"));
	ERR(rmdir("d"), ENOTEMPTY);
	EQ(st_of("d").st_nlink, 3);
	OK(rmdir("d/sub"));
	EQ(st_of("d").st_nlink, 2);
	OK(rmdir("d"));
	EQ(st_of(".").st_nlink, 2);
	ERR(rmdir("d"), ENOENT);
	OK(mkdir("e", 0755));
	ERR(rmdir("e/."), EINVAL);
	ERR(rmdir("e/.."), ENOTEMPTY);
	/* An open, removed directory: empty, and no creation inside. */
	{
		int fd = OK(open("e", O_RDONLY | O_DIRECTORY));

		OK(rmdir("e"));
		EQ(fst_of(fd).st_nlink, 0);
		ERR(openat(fd, "x", O_CREAT | O_WRONLY, 0644), ENOENT);
		ERR(mkdirat(fd, "x", 0755), ENOENT);
		close(fd);
	}
}

static void t_rmdir_notdir(void)
{
	EQ(mkfile("f", 0644, 10, 1), 0);
	ERR(rmdir("f"), ENOTDIR);
	OK(symlink(".", "l"));
	ERR(rmdir("l"), ENOTDIR);
	EQ(st_of("f").st_size, 10);
}

static void t_unlink_dir(void)
{
	OK(mkdir("d", 0755));
	ERR(unlink("d"), EISDIR);
	TRUE(S_ISDIR(st_of("d").st_mode), "the directory went away");
	ERR(unlink("missing"), ENOENT);
	ERR(unlink("d/missing"), ENOENT);
}

/* ---- rename --------------------------------------------------------------------------- */

static void t_rename_across(void)
{
	struct stat st;

	OK(mkdir("a", 0755));
	OK(mkdir("b", 0755));
	EQ(mkfile("a/f", 0644, 100, 3), 0);
	st = st_of("a/f");
	OK(rename("a/f", "b/g"));
	EQ(st_of("a/f").st_ino, 0);
	EQ(st_of("b/g").st_ino, st.st_ino);
	EQ(st_of("b/g").st_nlink, 1);
	/* A directory moves with its contents; ".." follows. */
	OK(mkdir("a/sub", 0755));
	EQ(mkfile("a/sub/x", 0644, 5, 4), 0);
	OK(rename("a/sub", "b/sub2"));
	EQ(st_of("b/sub2/..").st_ino, st_of("b").st_ino);
	EQ(st_of("b/sub2/x").st_size, 5);
	EQ(st_of("a").st_nlink, 2);
	EQ(st_of("b").st_nlink, 3);
	ERR(rename("a/missing", "b/x"), ENOENT);
	ERR(rename("b/g", "missing/x"), ENOENT);
	/* Renaming to itself changes nothing. */
	OK(rename("b/g", "b/g"));
	EQ(st_of("b/g").st_ino, st.st_ino);
}

static void t_rename_over_file(void)
{
	struct stat sa, sb;
	int fd;

	EQ(mkfile("a", 0644, 10, 1), 0);
	EQ(mkfile("b", 0644, 20, 2), 0);
	OK(link("b", "b2"));
	sa = st_of("a");
	sb = st_of("b");
	fd = OK(open("b", O_RDONLY));
	OK(rename("a", "b"));
	EQ(st_of("a").st_ino, 0);
	EQ(st_of("b").st_ino, sa.st_ino);
	EQ(st_of("b").st_size, 10);
	EQ(st_of("b2").st_ino, sb.st_ino);
	EQ(st_of("b2").st_nlink, 1);                  /* the replaced inode lost one link */
	SAME(fd, 0, 20, 2);                           /* still readable through the fd */
	close(fd);
	/* Two names of one inode: nothing happens. */
	OK(link("b", "b3"));
	OK(rename("b", "b3"));
	EQ(st_of("b").st_nlink, 2);
	EQ(st_of("b3").st_nlink, 2);
}

static void t_rename_over_empty_dir(void)
{
	struct stat sa;

	OK(mkdir("p", 0755));
	OK(mkdir("p/a", 0755));
	OK(mkdir("q", 0755));
	OK(mkdir("q/b", 0755));
	sa = st_of("p/a");
	EQ(st_of("p").st_nlink, 3);
	EQ(st_of("q").st_nlink, 3);
	OK(rename("p/a", "q/b"));
	EQ(st_of("q/b").st_ino, sa.st_ino);
	EQ(st_of("p/a").st_ino, 0);
	EQ(st_of("p").st_nlink, 2);
	EQ(st_of("q").st_nlink, 3);
	EQ(st_of("q/b/..").st_ino, st_of("q").st_ino);
	/* In the same directory. */
	OK(mkdir("q/c", 0755));
	EQ(st_of("q").st_nlink, 4);
	OK(rename("q/b", "q/c"));
	EQ(st_of("q").st_nlink, 3);
	EQ(st_of("q/c").st_ino, sa.st_ino);
}

static void t_rename_over_nonempty_dir(void)
{
	OK(mkdir("a", 0755));
	OK(mkdir("b", 0755));
	EQ(mkfile("b/f", 0644, 0, 0), 0);
	ERR(rename("a", "b"), ENOTEMPTY);
	TRUE(S_ISDIR(st_of("a").st_mode) && st_of("b/f").st_ino, "a failed rename changed things");
	OK(mkdir("c", 0755));
	OK(mkdir("c/sub", 0755));
	ERR(rename("a", "c"), ENOTEMPTY);
}

static void t_rename_dir_over_file(void)
{
	OK(mkdir("d", 0755));
	EQ(mkfile("f", 0644, 3, 1), 0);
	ERR(rename("d", "f"), ENOTDIR);
	TRUE(S_ISDIR(st_of("d").st_mode) && S_ISREG(st_of("f").st_mode), "types changed");
	OK(symlink("d", "l"));
	ERR(rename("d", "l"), ENOTDIR);
}

static void t_rename_file_over_dir(void)
{
	OK(mkdir("d", 0755));
	EQ(mkfile("f", 0644, 3, 1), 0);
	ERR(rename("f", "d"), EISDIR);
	OK(mkdir("full", 0755));
	EQ(mkfile("full/x", 0644, 0, 0), 0);
	ERR(rename("f", "full"), EISDIR);
	TRUE(S_ISDIR(st_of("d").st_mode) && S_ISREG(st_of("f").st_mode), "types changed");
}

static int renameat2_(const char *a, const char *b, unsigned flags)
{
	return (int)syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, flags);
}

static void t_rename_noreplace(void)
{
	EQ(mkfile("a", 0644, 1, 1), 0);
	EQ(mkfile("b", 0644, 2, 2), 0);
	OK(mkdir("d", 0755));
	ERR(renameat2_("a", "b", RENAME_NOREPLACE), EEXIST);
	ERR(renameat2_("a", "d", RENAME_NOREPLACE), EEXIST);
	EQ(st_of("a").st_size, 1);
	EQ(st_of("b").st_size, 2);
	OK(renameat2_("a", "c", RENAME_NOREPLACE));
	EQ(st_of("c").st_size, 1);
	EQ(st_of("a").st_ino, 0);
	ERR(renameat2_("c", "b", RENAME_NOREPLACE | RENAME_EXCHANGE), EINVAL);
}

static void t_rename_exchange(void)
{
	struct stat sf, sd;

	OK(mkdir("p", 0755));
	OK(mkdir("q", 0755));
	EQ(mkfile("p/f", 0644, 7, 1), 0);
	OK(mkdir("q/d", 0755));
	EQ(mkfile("q/d/inner", 0644, 1, 1), 0);
	sf = st_of("p/f");
	sd = st_of("q/d");
	/* A file and a directory in different parents trade places. */
	OK(renameat2_("p/f", "q/d", RENAME_EXCHANGE));
	EQ(st_of("p/f").st_ino, sd.st_ino);
	EQ(st_of("q/d").st_ino, sf.st_ino);
	EQ(st_of("p/f/inner").st_size, 1);
	EQ(st_of("p/f/..").st_ino, st_of("p").st_ino);
	EQ(st_of("p").st_nlink, 3);
	EQ(st_of("q").st_nlink, 2);
	/* Two files in one directory. */
	EQ(mkfile("q/x", 0644, 1, 0), 0);
	EQ(mkfile("q/y", 0644, 2, 0), 0);
	OK(renameat2_("q/x", "q/y", RENAME_EXCHANGE));
	EQ(st_of("q/x").st_size, 2);
	EQ(st_of("q/y").st_size, 1);
	ERR(renameat2_("q/x", "q/none", RENAME_EXCHANGE), ENOENT);
	ERR(renameat2_("q/none", "q/x", RENAME_EXCHANGE), ENOENT);
	/* Exchanging a directory with its own descendant would make a loop. */
	OK(mkdir("p/f/deep", 0755));
	ERR(renameat2_("p/f", "p/f/deep", RENAME_EXCHANGE), EINVAL);
}

static void t_rename_loop(void)
{
	OK(mkdir("a", 0755));
	OK(mkdir("a/b", 0755));
	OK(mkdir("a/b/c", 0755));
	ERR(rename("a", "a/b/c/d"), EINVAL);
	ERR(rename("a", "a/b/x"), EINVAL);
	ERR(rename("a/b", "a/b/c/d"), EINVAL);
	ERR(rename("a", "a/b/c"), EINVAL);            /* over a descendant (kernel: EINVAL) */
	ERR(rename("a/b/c", "a"), ENOTEMPTY);         /* over an ancestor */
	ERR(rename(".", "x"), EBUSY);
	TRUE(S_ISDIR(st_of("a/b/c").st_mode), "the tree changed");
	OK(rename("a/b/c", "c"));                     /* upwards is fine */
	OK(rename("a", "c/a"));
	EQ(st_of("c/a/b/..").st_ino, st_of("c/a").st_ino);
}

static void t_rename_nlink(void)
{
	OK(mkdir("p", 0755));
	OK(mkdir("q", 0755));
	OK(mkdir("p/d1", 0755));
	OK(mkdir("p/d2", 0755));
	OK(mkdir("q/e", 0755));
	EQ(st_of("p").st_nlink, 4);
	EQ(st_of("q").st_nlink, 3);
	OK(rename("p/d1", "q/d1"));                   /* dir to a new name elsewhere */
	EQ(st_of("p").st_nlink, 3);
	EQ(st_of("q").st_nlink, 4);
	OK(rename("p/d2", "q/e"));                    /* dir over an empty dir elsewhere */
	EQ(st_of("p").st_nlink, 2);
	EQ(st_of("q").st_nlink, 4);
	EQ(mkfile("p/f", 0644, 0, 0), 0);
	OK(rename("p/f", "q/f"));                     /* files do not count */
	EQ(st_of("p").st_nlink, 2);
	EQ(st_of("q").st_nlink, 4);
	OK(renameat2_("q/d1", "p/none", RENAME_NOREPLACE));
	EQ(st_of("p").st_nlink, 3);
	EQ(st_of("q").st_nlink, 3);
	EQ(st_of(".").st_nlink, 4);
}

/* ---- links ---------------------------------------------------------------------------- */

static void t_hard_links(void)
{
	struct stat st;

	OK(mkdir("d", 0755));
	EQ(mkfile("f", 0644, 100, 5), 0);
	OK(link("f", "g"));
	OK(link("f", "d/h"));
	st = st_of("f");
	EQ(st.st_nlink, 3);
	EQ(st_of("g").st_ino, st.st_ino);
	EQ(st_of("d/h").st_ino, st.st_ino);
	EQ(st_of("d").st_nlink, 2);
	ERR(link("d", "dl"), EPERM);
	ERR(link("missing", "x"), ENOENT);
	ERR(link("f", "g"), EEXIST);
	ERR(link("f", "d"), EEXIST);
	ERR(link("f", "missing/x"), ENOENT);
	OK(unlink("f"));
	EQ(st_of("g").st_nlink, 2);
	OK(unlink("g"));
	EQ(st_of("d/h").st_nlink, 1);
	{
		int fd = OK(open("d/h", O_RDONLY));

		SAME(fd, 0, 100, 5);
		close(fd);
	}
	/* A symlink is linked as itself. */
	OK(symlink("d/h", "s"));
	OK(link("s", "s2"));
	TRUE(S_ISLNK(st_of("s2").st_mode), "link of a symlink is not a symlink");
	EQ(st_of("s").st_nlink, 2);
}

static void t_symlinks(void)
{
	char buf[5000], *longt = malloc(4096);
	ssize_t n;
	int sizes[] = { 1, 20, 60, 100, 200, 500, 1000, 2000, 4095 };

	if (!longt) {
		failf(__LINE__, "malloc");
		return;
	}
	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		char name[32];

		for (int j = 0; j < sizes[i]; j++)
			longt[j] = (char)('a' + (j * 7 + i) % 26);
		if (sizes[i] > 10)
			for (int j = 5; j < sizes[i]; j += 10)
				longt[j] = '/';
		longt[sizes[i]] = 0;
		snprintf(name, sizeof(name), "s%d", sizes[i]);
		OK(symlink(longt, name));
		n = readlink(name, buf, sizeof(buf));
		EQ(n, sizes[i]);
		TRUE(n == sizes[i] && memcmp(buf, longt, (size_t)n) == 0,
		     "readlink of a %d-byte target returns other bytes", sizes[i]);
		EQ(st_of(name).st_size, sizes[i]);
		TRUE(S_ISLNK(st_of(name).st_mode), "not a symlink");
	}
	/* A short buffer gets a truncated target. */
	EQ(readlink("s100", buf, 10), 10);
	/* PATH_MAX bytes and more: ENAMETOOLONG. */
	memset(longt, 'x', 4095);
	longt[4095] = 0;
	{
		char *l2 = malloc(4097);

		if (l2) {
			memset(l2, 'x', 4096);
			l2[4096] = 0;
			ERR(symlink(l2, "toolong"), ENAMETOOLONG);
			free(l2);
		}
	}
	ERR(symlink("", "empty"), ENOENT);
	ERR(symlink("x", "s1"), EEXIST);
	ERR(readlink(".", buf, sizeof(buf)), EINVAL);
	/* Following: a working one, a loop, O_NOFOLLOW, a chain longer than 40. */
	EQ(mkfile("target", 0644, 3, 1), 0);
	OK(symlink("target", "good"));
	{
		int fd = OK(open("good", O_RDONLY));

		SAME(fd, 0, 3, 1);
		close(fd);
	}
	OK(symlink("loop2", "loop1"));
	OK(symlink("loop1", "loop2"));
	ERR(open("loop1", O_RDONLY), ELOOP);
	ERR(stat("loop1", &(struct stat){ 0 }), ELOOP);
	ERR(open("good", O_RDONLY | O_NOFOLLOW), ELOOP);
	OK(symlink("c0", "c41"));
	for (int i = 0; i < 41; i++) {
		char a[16], b[16];

		snprintf(a, sizeof(a), "c%d", i + 1);
		snprintf(b, sizeof(b), "c%d", i);
		if (i < 40)
			OK(symlink(a, b));
		else
			OK(symlink("target", b));
	}
	ERR(open("c41", O_RDONLY), ELOOP);
	free(longt);
}

static void t_mknod(void)
{
	struct stat st;

	OK(mknod("fifo", S_IFIFO | 0640, 0));
	OK(mknod("sock", S_IFSOCK | 0600, 0));
	OK(mknod("chr", S_IFCHR | 0600, makedev(1, 3)));
	OK(mknod("blk", S_IFBLK | 0600, makedev(259, 300000)));
	OK(mknod("reg", S_IFREG | 0600, 0));
	st = st_of("fifo");
	TRUE(S_ISFIFO(st.st_mode), "fifo mode %o", st.st_mode);
	EQ(st.st_mode & 07777, 0640);
	TRUE(S_ISSOCK(st_of("sock").st_mode), "socket mode %o", st_of("sock").st_mode);
	st = st_of("chr");
	TRUE(S_ISCHR(st.st_mode), "char device mode %o", st.st_mode);
	EQ(major(st.st_rdev), 1);
	EQ(minor(st.st_rdev), 3);
	st = st_of("blk");
	TRUE(S_ISBLK(st.st_mode), "block device mode %o", st.st_mode);
	EQ(major(st.st_rdev), 259);
	EQ(minor(st.st_rdev), 300000);
	TRUE(S_ISREG(st_of("reg").st_mode), "mknod S_IFREG");
	{
		int fd = OK(open("reg", O_RDWR));

		EQ(put(fd, 10, 5000, 3), 0);           /* a regular file like any other */
		SAME(fd, 0, 10, 0);
		SAME(fd, 10, 5000, 3);
		close(fd);
	}
	ERR(mknod("fifo", S_IFIFO | 0600, 0), EEXIST);
	/* The fifo works (the kernel serves it, the name comes from us). */
	{
		int fd = OK(open("fifo", O_RDWR | O_NONBLOCK));
		char b[4];

		EQ(write(fd, "abc", 3), 3);
		EQ(read(fd, b, sizeof(b)), 3);
		close(fd);
	}
	/* A socket bound by name in the directory. */
	{
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		int s = OK(socket(AF_UNIX, SOCK_STREAM, 0));

		snprintf(sa.sun_path, sizeof(sa.sun_path), "bound");
		OK(bind(s, (struct sockaddr *)&sa, sizeof(sa)));
		TRUE(S_ISSOCK(st_of("bound").st_mode), "bound socket type");
		close(s);
	}
}

/* ---- attributes ---------------------------------------------------------------------- */

static void t_chmod_chown(void)
{
	struct stat st;

	EQ(mkfile("f", 0644, 0, 0), 0);
	OK(chmod("f", 0750));
	EQ(st_of("f").st_mode & 07777, 0750);
	OK(chmod("f", 07777));
	EQ(st_of("f").st_mode & 07777, 07777);
	OK(chmod("f", 0));
	EQ(st_of("f").st_mode & 07777, 0);
	TRUE(S_ISREG(st_of("f").st_mode), "chmod changed the type");
	OK(chown("f", 123, 456));
	st = st_of("f");
	EQ(st.st_uid, 123);
	EQ(st.st_gid, 456);
	OK(chown("f", (uid_t)-1, 789));
	st = st_of("f");
	EQ(st.st_uid, 123);
	EQ(st.st_gid, 789);
	OK(mkdir("d", 0755));
	OK(chmod("d", 01777));
	EQ(st_of("d").st_mode & 07777, 01777);
	OK(symlink("f", "l"));
	OK(lchown("l", 55, 66));
	EQ(st_of("l").st_uid, 55);
	EQ(st_of("f").st_uid, 123);
	/* A new name in a setgid directory takes its group; a new directory its setgid. */
	OK(chown("d", 0, 4242));
	OK(chmod("d", 02775));
	EQ(mkfile("d/f", 0644, 0, 0), 0);
	EQ(st_of("d/f").st_gid, 4242);
	OK(mkdir("d/s", 0755));
	EQ(st_of("d/s").st_gid, 4242);
	TRUE(st_of("d/s").st_mode & S_ISGID, "a subdirectory of a setgid directory lacks setgid");
}

static void t_utimens(void)
{
	struct timespec ts[2] = { { 946684799, 987654321 }, { 981173106, 123456789 } };
	struct stat st0, st;

	EQ(mkfile("f", 0644, 0, 0), 0);
	OK(utimensat(AT_FDCWD, "f", ts, 0));
	st = st_of("f");
	EQ(st.st_atim.tv_sec, 946684799);
	EQ(st.st_atim.tv_nsec, 987654321);
	EQ(st.st_mtim.tv_sec, 981173106);
	EQ(st.st_mtim.tv_nsec, 123456789);
	/* UTIME_OMIT keeps one; UTIME_NOW sets it to now. */
	st0 = st;
	past_coarse(st0.st_ctim);
	{
		struct timespec t2[2] = { { 0, UTIME_OMIT }, { 5, 6 } };

		OK(utimensat(AT_FDCWD, "f", t2, 0));
		st = st_of("f");
		EQ(st.st_atim.tv_sec, 946684799);
		EQ(st.st_atim.tv_nsec, 987654321);
		EQ(st.st_mtim.tv_sec, 5);
		EQ(st.st_mtim.tv_nsec, 6);
		TRUE(ts_cmp(st.st_ctim, st0.st_ctim) > 0, "utimensat did not move ctime");
	}
	{
		struct timespec t3[2] = { { 0, UTIME_NOW }, { 0, UTIME_OMIT } }, now;

		clock_gettime(CLOCK_REALTIME, &now);
		OK(utimensat(AT_FDCWD, "f", t3, 0));
		st = st_of("f");
		TRUE(st.st_atim.tv_sec >= now.tv_sec - 1, "UTIME_NOW atime %lld, now %lld",
		     (long long)st.st_atim.tv_sec, (long long)now.tv_sec);
		EQ(st.st_mtim.tv_sec, 5);
		EQ(st.st_mtim.tv_nsec, 6);
	}
	{
		struct timespec t4[2] = { { 0, UTIME_OMIT }, { 0, UTIME_OMIT } };

		st0 = st_of("f");
		OK(utimensat(AT_FDCWD, "f", t4, 0));
		st = st_of("f");
		EQ(st.st_mtim.tv_sec, 5);
		EQ(st.st_atim.tv_sec, st0.st_atim.tv_sec);
	}
	/* NULL: both now. */
	OK(utimensat(AT_FDCWD, "f", NULL, 0));
	st = st_of("f");
	TRUE(st.st_mtim.tv_sec > 1000000000, "utimensat(NULL) mtime %lld",
	     (long long)st.st_mtim.tv_sec);
	/* Of a symlink itself, and times before 1970. */
	OK(symlink("f", "l"));
	{
		struct timespec t5[2] = { { -100, 5 }, { -1, 999999999 } };

		OK(utimensat(AT_FDCWD, "l", t5, AT_SYMLINK_NOFOLLOW));
		st = st_of("l");
		EQ(st.st_mtim.tv_sec, -1);
		EQ(st.st_mtim.tv_nsec, 999999999);
		EQ(st.st_atim.tv_sec, -100);
		TRUE(st_of("f").st_mtim.tv_sec > 1000000000, "the target's times changed");
	}
	/* Past 2038 and far before 1970. */
	{
		struct timespec t6[2] = { { -(1LL << 35), 1 }, { 1LL << 34, 999999999 } };

		OK(utimensat(AT_FDCWD, "f", t6, 0));
		st = st_of("f");
		EQ(st.st_mtim.tv_sec, 1LL << 34);
		EQ(st.st_mtim.tv_nsec, 999999999);
		EQ(st.st_atim.tv_sec, -(1LL << 35));
		EQ(st.st_atim.tv_nsec, 1);
	}
	{
		struct timespec bad[2] = { { 0, 1000000000 }, { 0, 0 } };

		ERR(utimensat(AT_FDCWD, "f", bad, 0), EINVAL);
	}
}

struct tsnap {
	struct stat f, d;
};

/* Set file and directory times far in the past (ctime cannot be set: take it as is). */
static struct tsnap age(const char *f, const char *d)
{
	struct timespec old[2] = { { 1000, 1 }, { 1000, 1 } };
	struct tsnap s;

	if (f)
		utimensat(AT_FDCWD, f, old, AT_SYMLINK_NOFOLLOW);
	if (d)
		utimensat(AT_FDCWD, d, old, 0);
	s.f = f ? st_of(f) : (struct stat){ 0 };
	s.d = d ? st_of(d) : (struct stat){ 0 };
	past_coarse(s.f.st_ctim);
	past_coarse(s.d.st_ctim);
	return s;
}

/* What an operation must have done to the times of f (its st before: b->f) and of d. */
#define F_M 1   /* file mtime moved */
#define F_C 2   /* file ctime moved */
#define D_MC 4  /* directory mtime and ctime moved */
static void times_after(int line, const char *what, const struct tsnap *b,
			const struct stat *f, const struct stat *dd, int expect)
{
	if (f) {
		int m = ts_cmp(f->st_mtim, b->f.st_mtim) != 0;
		int c = ts_cmp(f->st_ctim, b->f.st_ctim) > 0;

		if (m != !!(expect & F_M))
			failf(line, "%s: file mtime %s", what, m ? "moved" : "did not move");
		if (c != !!(expect & F_C))
			failf(line, "%s: file ctime %s", what, c ? "moved" : "did not move");
	}
	if (dd) {
		int m = ts_cmp(dd->st_mtim, b->d.st_mtim) != 0;
		int c = ts_cmp(dd->st_ctim, b->d.st_ctim) > 0;

		if (m != !!(expect & D_MC) || c != !!(expect & D_MC))
			failf(line, "%s: directory mtime %s, ctime %s (expected %s)", what,
			      m ? "moved" : "unchanged", c ? "moved" : "unchanged",
			      expect & D_MC ? "both to move" : "neither");
	}
}

#define AFTER(what, b, fpath, dpath, expect) do {                                     \
	struct stat f_ = st_of(fpath), d_ = st_of(dpath);                             \
	times_after(__LINE__, what, &(b), (fpath) ? &f_ : NULL, (dpath) ? &d_ : NULL,   \
		    (expect));                                                        \
} while (0)

static void t_times(void)
{
	struct tsnap b;
	struct stat st;
	int fd;

	OK(mkdir("d", 0755));
	OK(mkdir("e", 0755));
	b = age(NULL, "d");
	EQ(mkfile("d/f", 0644, 0, 0), 0);
	AFTER("create", b, NULL, "d", D_MC);
	st = st_of("d/f");
	TRUE(ts_cmp(st.st_mtim, st.st_ctim) == 0 && ts_cmp(st.st_atim, st.st_ctim) == 0,
	     "a new file's times differ");
	TRUE(ts_cmp(st.st_ctim, st_of("d").st_mtim) == 0, "new file ctime != parent mtime");

	b = age("d/f", "d");
	fd = OK(open("d/f", O_WRONLY));
	EQ(write(fd, "data", 4), 4);
	AFTER("write", b, "d/f", "d", F_M | F_C);
	b = age("d/f", "d");
	EQ(write(fd, "", 0), 0);
	close(fd);
	{
		char c[4];

		fd = OK(open("d/f", O_RDONLY));
		EQ(read(fd, c, 4), 4);
		close(fd);
	}
	AFTER("read", b, "d/f", "d", 0);
	b = age("d/f", "d");
	OK(truncate("d/f", 100));
	AFTER("truncate", b, "d/f", "d", F_M | F_C);
	b = age("d/f", "d");
	OK(chmod("d/f", 0600));
	AFTER("chmod", b, "d/f", "d", F_C);
	b = age("d/f", "d");
	OK(chown("d/f", 1, 1));
	AFTER("chown", b, "d/f", "d", F_C);
	b = age("d/f", "d");
	OK(link("d/f", "d/g"));
	AFTER("link", b, "d/f", "d", F_C | D_MC);
	b = age("d/f", "d");
	OK(unlink("d/g"));
	AFTER("unlink", b, "d/f", "d", F_C | D_MC);
	b = age("d/f", "d");
	{
		struct tsnap b2 = age(NULL, "e");

		OK(rename("d/f", "e/f"));
		AFTER("rename (source dir)", b, NULL, "d", D_MC);
		AFTER("rename (target dir)", b2, NULL, "e", D_MC);
		/* Linux moves the ctime of the renamed inode, not its mtime. */
		AFTER("rename (file)", b, "e/f", NULL, F_C);
	}
	b = age(NULL, "d");
	OK(mkdir("d/sub", 0755));
	AFTER("mkdir", b, NULL, "d", D_MC);
	b = age("d/sub", "d");
	EQ(mkfile("d/sub/x", 0644, 0, 0), 0);
	AFTER("create in a subdirectory", b, "d/sub", "d", F_M | F_C);
	b = age(NULL, "d");
	OK(unlink("d/sub/x"));
	OK(rmdir("d/sub"));
	AFTER("rmdir", b, NULL, "d", D_MC);
	b = age(NULL, "d");
	OK(symlink("x", "d/l"));
	AFTER("symlink", b, NULL, "d", D_MC);
	b = age(NULL, "d");
	OK(mknod("d/p", S_IFIFO | 0644, 0));
	AFTER("mknod", b, NULL, "d", D_MC);
	b = age("e/f", "e");
	fd = OK(open("e/f", O_RDWR));
	OK(fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, 0, 50));
	close(fd);
	AFTER("punch hole", b, "e/f", "e", F_M | F_C);
	/* A failed operation changes nothing. */
	b = age("e/f", "e");
	ERR(mkdir("e/f", 0755), EEXIST);
	ERR(unlink("e/none"), ENOENT);
	AFTER("failed operations", b, "e/f", "e", 0);
}

/* setuid/setgid: cleared on write/truncate by an unprivileged writer, and on chown. */
static void suid_nobody(void *arg)
{
	int fd;

	(void)arg;
	fd = OK(open("w1", O_WRONLY));
	EQ(write(fd, "x", 1), 1);
	close(fd);
	EQ(st_of("w1").st_mode & 07777, 0777);        /* both go: group-executable */
	fd = OK(open("w2", O_WRONLY));
	EQ(write(fd, "x", 1), 1);
	close(fd);
	EQ(st_of("w2").st_mode & 07777, 02766);       /* setgid without g+x stays */
	fd = OK(open("w3", O_WRONLY));
	OK(ftruncate(fd, 1));
	close(fd);
	EQ(st_of("w3").st_mode & 07777, 0777);
	OK(truncate("w4", 0));
	EQ(st_of("w4").st_mode & 07777, 0766);
	fd = OK(open("w5", O_WRONLY | O_TRUNC));
	close(fd);
	EQ(st_of("w5").st_mode & 07777, 0777);
	EQ(st_of("w5").st_size, 0);
	/* nobody owns "own": a chgrp to its own group clears both. */
	OK(chown("own", (uid_t)-1, NOBODY));
	EQ(st_of("own").st_mode & 07777, 0755);
	EQ(st_of("own").st_gid, NOBODY);
	/* Its own file: chmod may set setuid; setgid only for a group it is in. */
	OK(chmod("own", 04755));
	EQ(st_of("own").st_mode & 07777, 04755);
	OK(chmod("own", 06755));
	EQ(st_of("own").st_mode & 07777, 06755);
	OK(chmod("own0", 06755));                     /* group 0: setgid silently dropped */
	EQ(st_of("own0").st_mode & 07777, 04755);
}

static void t_suid_clear(void)
{
	int fd;

	EQ(mkfile("w1", 06777, 1, 1), 0);
	EQ(mkfile("w2", 06766, 1, 1), 0);
	EQ(mkfile("w3", 06777, 1, 1), 0);
	EQ(mkfile("w4", 04766, 1, 1), 0);
	EQ(mkfile("w5", 06777, 1, 1), 0);
	OK(chmod("w5", 06777));
	EQ(mkfile("own", 0644, 1, 1), 0);
	EQ(mkfile("root", 06777, 1, 1), 0);
	EQ(mkfile("rc", 06755, 1, 1), 0);
	OK(chmod("w1", 06777));
	OK(chmod("w2", 06766));
	OK(chmod("w3", 06777));
	OK(chmod("w4", 04766));
	OK(chmod("root", 06777));
	OK(chmod("rc", 06755));
	OK(chown("own", NOBODY, 0));
	OK(chmod("own", 06755));
	EQ(mkfile("own0", 0644, 1, 1), 0);
	OK(chown("own0", NOBODY, 0));
	as_nobody(suid_nobody, NULL);
	/* Root (CAP_FSETID) writing keeps them. */
	fd = OK(open("root", O_WRONLY));
	EQ(write(fd, "x", 1), 1);
	close(fd);
	EQ(st_of("root").st_mode & 07777, 06777);
	/* chown by root clears them too (Linux since 2.2.13). */
	OK(chown("rc", 123, 456));
	EQ(st_of("rc").st_mode & 07777, 0755);
	/* A directory keeps setgid across chown. */
	OK(mkdir("sd", 02755));
	OK(chmod("sd", 02755));
	OK(chown("sd", 5, 5));
	EQ(st_of("sd").st_mode & 07777, 02755);
}

/* cap_net_bind_service=ep as setcap(8) writes it: struct vfs_cap_data, revision 2
 * with the effective flag, little-endian. */
static const unsigned char cap_v2[20] = { 0x01, 0x00, 0x00, 0x02, 0x00, 0x04 };
static const char CAPX[] = "security.capability";

/* Does `path` carry a file capability?  1, 0 (ENODATA), -1 on another error. */
static int has_cap(const char *path)
{
	unsigned char v[64];
	ssize_t n = getxattr(path, CAPX, v, sizeof(v));

	if (n >= 0)
		return 1;
	return errno == ENODATA ? 0 : -1;
}

static void cap_nobody(void *arg)
{
	struct statx sx;
	int fd;

	(void)arg;
	fd = OK(open("cn", O_WRONLY));
	EQ(write(fd, "x", 1), 1);
	close(fd);
	/* The mode alone, as stat -c %a asks for it: the kernel must not keep its copy from
	 * before the write (it drops only size and times after one). */
	OK(statx(AT_FDCWD, "cn", 0, STATX_MODE, &sx));
	EQ(sx.stx_mode & 07777, 0777);
	EQ(has_cap("cn"), 0);
	EQ(st_of("cn").st_mode & 07777, 0777);
	fd = OK(open("cnt", O_WRONLY));
	OK(ftruncate(fd, 5));
	close(fd);
	EQ(has_cap("cnt"), 0);
	EQ(st_of("cnt").st_mode & 07777, 0777);
}

/*
 * File capabilities (security.capability) go on write, truncate and chown, whoever the
 * caller, as on a local filesystem (the kernel's file_remove_privs; on mendfs the daemon
 * removes them itself when it negotiated FUSE_HANDLE_KILLPRIV_V2); other attributes stay.
 */
static void t_cap_clear(void)
{
	const char *files[] = { "cr", "cn", "cnt", "ct", "cc", "co" };
	char v[8];
	int fd;

	for (unsigned i = 0; i < sizeof(files) / sizeof(files[0]); i++) {
		EQ(mkfile(files[i], 0644, 1, 1), 0);
		OK(chmod(files[i], strcmp(files[i], "cr") == 0 ? 0666 : 06777));
		OK(setxattr(files[i], CAPX, cap_v2, sizeof(cap_v2), 0));
		EQ(has_cap(files[i]), 1);
	}
	OK(setxattr("cr", "user.keep", "k", 1, 0));
	/* Written by root: the capability goes, the other attribute stays. */
	fd = OK(open("cr", O_WRONLY));
	EQ(pwrite(fd, "yz", 2, 4096), 2);
	close(fd);
	EQ(has_cap("cr"), 0);
	EQ(getxattr("cr", "user.keep", v, sizeof(v)), 1);
	EQ(st_of("cr").st_size, 4098);
	/* Written and truncated by nobody: capability, setuid and setgid go. */
	as_nobody(cap_nobody, NULL);
	/* Truncated by root: the capability goes, setuid and setgid stay (CAP_FSETID). */
	OK(truncate("ct", 0));
	EQ(has_cap("ct"), 0);
	EQ(st_of("ct").st_mode & 07777, 06777);
	/* chown, even to the same owner, and chgrp: all go. */
	OK(chown("cc", 0, 0));
	EQ(has_cap("cc"), 0);
	EQ(st_of("cc").st_mode & 07777, 0777);
	OK(chown("co", (uid_t)-1, 7));
	EQ(has_cap("co"), 0);
	EQ(st_of("co").st_mode & 07777, 0777);
	/* A capability set again after all that is kept until the next write. */
	OK(setxattr("cr", CAPX, cap_v2, sizeof(cap_v2), 0));
	EQ(has_cap("cr"), 1);
	fd = OK(open("cr", O_RDWR));
	EQ(pread(fd, v, 1, 0), 1);
	EQ(has_cap("cr"), 1);
	EQ(write(fd, "w", 1), 1);
	close(fd);
	EQ(has_cap("cr"), 0);
}

static void t_name_max(void)
{
	char n255[256], n256[257];
	int fd;

	memcpy(n255, name_of(255, 'a'), 256);
	memcpy(n256, name_of(256, 'b'), 257);
	fd = OK(open(n255, O_CREAT | O_WRONLY, 0644));
	close(fd);
	TRUE(st_of(n255).st_ino != 0, "a 255-byte name cannot be found");
	ERR(open(n256, O_CREAT | O_WRONLY, 0644), ENAMETOOLONG);
	ERR(mkdir(n256, 0755), ENAMETOOLONG);
	ERR(mknod(n256, S_IFIFO | 0644, 0), ENAMETOOLONG);
	ERR(symlink("x", n256), ENAMETOOLONG);
	ERR(link(n255, n256), ENAMETOOLONG);
	ERR(rename(n255, n256), ENAMETOOLONG);
	ERR(stat(n256, &(struct stat){ 0 }), ENAMETOOLONG);
	ERR(unlink(n256), ENAMETOOLONG);
	memcpy(n255, name_of(255, 'c'), 256);
	OK(mkdir(n255, 0755));
	{
		char path[800];

		snprintf(path, sizeof(path), "%s/%s", n255, name_of(255, 'd'));
		OK(symlink("x", path));
		OK(rename(path, name_of(255, 'e')));
	}
	/* Every 255-byte name is listed, whole. */
	{
		DIR *dir = opendir(".");
		struct dirent *de;
		int n = 0;

		while (dir && (de = readdir(dir)))
			if (strlen(de->d_name) == 255)
				n++;
		if (dir)
			closedir(dir);
		EQ(n, 3);
	}
}

static void t_statfs(void)
{
	struct statvfs s0, s1, s2;
	unsigned long long want;
	int fd;

	s0 = vfs_of(".");
	EQ(s0.f_namemax, 255);
	TRUE(s0.f_bfree <= s0.f_blocks && s0.f_bavail <= s0.f_bfree && s0.f_ffree <= s0.f_files,
	     "statfs counts out of order: blocks %llu free %llu avail %llu files %llu ffree %llu",
	     (unsigned long long)s0.f_blocks, (unsigned long long)s0.f_bfree,
	     (unsigned long long)s0.f_bavail, (unsigned long long)s0.f_files,
	     (unsigned long long)s0.f_ffree);
	want = 8 * MIB / s0.f_frsize;
	fd = OK(open("big", O_CREAT | O_WRONLY, 0644));
	EQ(put(fd, 0, 8 * MIB, 1), 0);
	OK(fsync(fd));
	close(fd);
	for (int i = 0; i < 20; i++) {
		char n[16];

		snprintf(n, sizeof(n), "f%d", i);
		EQ(mkfile(n, 0644, 0, 0), 0);
	}
	s1 = vfs_of(".");
	TRUE(s0.f_bfree - s1.f_bfree >= want && s0.f_bfree - s1.f_bfree <= want + 64,
	     "writing %llu blocks took %lld free blocks", want,
	     (long long)(s0.f_bfree - s1.f_bfree));
	TRUE(s0.f_ffree - s1.f_ffree >= 21, "21 new inodes took %lld free inodes",
	     (long long)(s0.f_ffree - s1.f_ffree));
	EQ(s1.f_blocks, s0.f_blocks);
	OK(unlink("big"));
	for (int i = 0; i < 20; i++) {
		char n[16];

		snprintf(n, sizeof(n), "f%d", i);
		OK(unlink(n));
	}
	/* Back exactly: nothing is left of the inodes or their blocks (a directory that grew
	 * a block may keep it: allow a few). */
	if (wait_free(".", s0.f_bfree - 4, used_inodes(&s0)) != 0)
		failf(__LINE__, "free space did not come back within 20 s");
	s2 = vfs_of(".");
	TRUE(s2.f_bfree + 4 >= s0.f_bfree && s2.f_bfree <= s0.f_bfree,
	     "free blocks %llu before, %llu after deleting everything",
	     (unsigned long long)s0.f_bfree, (unsigned long long)s2.f_bfree);
	/* Long symlink targets live in blocks of their own: taken and given back. */
	{
		char target[3001];

		memset(target, 't', 3000);
		target[3000] = 0;
		s0 = vfs_of(".");
		for (int i = 0; i < 50; i++) {
			char n[16];

			snprintf(n, sizeof(n), "l%d", i);
			OK(symlink(target, n));
		}
		s1 = vfs_of(".");
		TRUE(s0.f_bfree - s1.f_bfree >= 50, "50 symlinks of 3000 bytes took %lld blocks",
		     (long long)(s0.f_bfree - s1.f_bfree));
		for (int i = 0; i < 50; i++) {
			char n[16];

			snprintf(n, sizeof(n), "l%d", i);
			OK(unlink(n));
		}
		if (wait_free(".", s0.f_bfree - 4, used_inodes(&s0)) != 0)
			failf(__LINE__, "the blocks of 50 removed symlinks did not come back: free "
			      "%llu, baseline %llu", (unsigned long long)vfs_of(".").f_bfree,
			      (unsigned long long)s0.f_bfree);
	}
}

static void t_unlinked_open(void)
{
	struct statvfs s0 = vfs_of(".");
	int fd = OK(open("f", O_CREAT | O_RDWR, 0644)), fd2;
	unsigned long long want = 4 * MIB / s0.f_frsize;

	EQ(put(fd, 0, 4 * MIB, 12), 0);
	OK(unlink("f"));
	EQ(st_of("f").st_ino, 0);
	EQ(fst_of(fd).st_nlink, 0);
	SAME(fd, 0, 4 * MIB, 12);
	EQ(put(fd, 4 * MIB, 100000, 13), 0);          /* still writable, and growing */
	SAME(fd, 4 * MIB, 100000, 13);
	OK(ftruncate(fd, 3 * MIB));
	OK(fchmod(fd, 0600));
	EQ(fst_of(fd).st_mode & 07777, 0600);
	OK(fsync(fd));
	TRUE(s0.f_bfree - vfs_of(".").f_bfree >= want * 3 / 4,
	     "the blocks of an unlinked open file were freed early");
	/* Reopen through /proc while unlinked. */
	{
		char p[64];

		snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
		fd2 = OK(open(p, O_RDONLY));
		SAME(fd2, 0, 3 * MIB, 12);
	}
	close(fd);
	SAME(fd2, 100, 1000, 12);                     /* the second open keeps it */
	close(fd2);
	if (wait_free(".", s0.f_bfree - 4, used_inodes(&s0)) != 0)
		failf(__LINE__, "the space of an unlinked file did not come back after close "
		      "(free %llu, baseline %llu)", (unsigned long long)vfs_of(".").f_bfree,
		      (unsigned long long)s0.f_bfree);
	/* Replaced by rename while open: the old contents stay readable through the fd. */
	EQ(mkfile("old", 0644, 300000, 14), 0);
	EQ(mkfile("new", 0644, 10, 15), 0);
	fd = OK(open("old", O_RDONLY));
	OK(rename("new", "old"));
	SAME(fd, 0, 300000, 14);
	close(fd);
	OK(unlink("old"));
}

/* Create 300 files, list them twice (readdirplus and stat), remove them: the inodes in use
 * come back to the baseline, and (`exact`) the free blocks too. */
static void plus_round(int exact)
{
	struct statvfs s0 = vfs_of("."), s1;

	OK(mkdir("plus", 0755));
	for (int i = 0; i < 300; i++) {
		char n[32];

		snprintf(n, sizeof(n), "plus/p%03d", i);
		EQ(mkfile(n, 0644, 8192, 2), 0);
	}
	for (int pass = 0; pass < 2; pass++) {
		DIR *dir = opendir("plus");
		struct dirent *de;
		int cnt = 0;

		while (dir && (de = readdir(dir))) {
			char n[300];

			snprintf(n, sizeof(n), "plus/%s", de->d_name);
			if (de->d_name[0] == 'p' && st_of(n).st_size == 8192)
				cnt++;
		}
		if (dir)
			closedir(dir);
		EQ(cnt, 300);
	}
	for (int i = 0; i < 300; i++) {
		char n[32];

		snprintf(n, sizeof(n), "plus/p%03d", i);
		OK(unlink(n));
	}
	OK(rmdir("plus"));
	if (wait_free(".", exact ? s0.f_bfree : 0, used_inodes(&s0)) != 0) {
		s1 = vfs_of(".");
		failf(__LINE__, "300 files listed and removed: free blocks %llu, baseline %llu; "
		      "inodes in use %llu, baseline %llu", (unsigned long long)s1.f_bfree,
		      (unsigned long long)s0.f_bfree, used_inodes(&s1), used_inodes(&s0));
	}
}

static void t_lookup_counts(void)
{
	struct statvfs s0 = vfs_of(".");
	int fd, fds[8];

	/* One inode, several names, looked up many times, open several times. */
	OK(mkdir("d", 0755));
	EQ(mkfile("d/f", 0644, 2 * MIB, 21), 0);
	OK(link("d/f", "d/g"));
	OK(link("d/f", "h"));
	for (int i = 0; i < 200; i++) {
		struct stat st;

		stat(i % 3 == 0 ? "d/f" : i % 3 == 1 ? "d/g" : "h", &st);
	}
	for (int i = 0; i < 8; i++)
		fds[i] = OK(open(i & 1 ? "d/g" : "h", O_RDONLY));
	fd = OK(open("d/f", O_RDWR));
	OK(unlink("d/f"));
	OK(unlink("d/g"));
	OK(rename("h", "d/renamed"));
	OK(unlink("d/renamed"));
	OK(rmdir("d"));
	EQ(fst_of(fd).st_nlink, 0);
	EQ(put(fd, 2 * MIB, 4096, 22), 0);
	for (int i = 0; i < 8; i++) {
		SAME(fds[i], 0, 4096, 21);
		close(fds[i]);
	}
	SAME(fd, 2 * MIB, 4096, 22);
	TRUE((s0.f_bfree - vfs_of(".").f_bfree) * s0.f_frsize >= 1 * MIB,
	     "space returned while the file is still open");
	close(fd);
	if (wait_free(".", s0.f_bfree - 4, used_inodes(&s0)) != 0)
		failf(__LINE__, "space not returned after the last close: free %llu, baseline %llu",
		      (unsigned long long)vfs_of(".").f_bfree, (unsigned long long)s0.f_bfree);
	/* Entries the kernel learnt from readdirplus, then stat'ed, then removed: the
	 * kernel forgets them all and their space comes back.  The first round warms up: the
	 * AG free lists grow to what 300 more inodes need (their blocks are not counted
	 * free), and stay so; the second must give back every block. */
	plus_round(0);
	plus_round(1);
	/* Many lookups of names that come and go: nothing leaks. */
	s0 = vfs_of(".");
	for (int i = 0; i < 300; i++) {
		char n[16];

		snprintf(n, sizeof(n), "n%d", i % 7);
		EQ(mkfile(n, 0644, 4096, 1), 0);
		fd = OK(open(n, O_RDONLY));
		OK(unlink(n));
		SAME(fd, 0, 4096, 1);
		close(fd);
	}
	if (wait_free(".", s0.f_bfree - 4, used_inodes(&s0)) != 0)
		failf(__LINE__, "300 create/open/unlink/close cycles leaked: free %llu, baseline %llu",
		      (unsigned long long)vfs_of(".").f_bfree, (unsigned long long)s0.f_bfree);
}

/* ---- readdir -------------------------------------------------------------------------- */

struct dent {
	char name[260];
	long long off;
};

/* Read entries with getdents64 and a small buffer (so the kernel asks again from each
 * entry's cookie) until `max` entries or the end.  Returns the number read. */
static int read_some(int fd, struct dent *v, int max, size_t bufsize)
{
	char buf[1024];
	int n = 0;

	if (bufsize > sizeof(buf))
		bufsize = sizeof(buf);
	while (n < max) {
		long got = syscall(SYS_getdents64, fd, buf, bufsize);

		if (got <= 0)
			break;
		for (long p = 0; p < got;) {
			struct { uint64_t ino; int64_t off; unsigned short reclen;
				 unsigned char type; char name[]; } *de = (void *)(buf + p);

			if (n < max + 64) {
				snprintf(v[n].name, sizeof(v[n].name), "%s", de->name);
				v[n].off = de->off;
				n++;
			}
			p += de->reclen;
		}
		if (n >= max)
			break;
	}
	return n;
}

static int dcount(const struct dent *v, int n, const char *name)
{
	int c = 0;

	for (int i = 0; i < n; i++)
		c += strcmp(v[i].name, name) == 0;
	return c;
}

/* Seek to `off` and return the name of the first entry from there that is not one of the
 * "c" names added during the test (they may sort anywhere): "(end)" at the end. */
static void seek_read(int fd, long long off, size_t bufsize, char *name)
{
	struct dent one[70];

	snprintf(name, 260, "(end)");
	if (lseek(fd, off, SEEK_SET) != off) {
		failf(__LINE__, "lseek to cookie %lld: %s", off, ename(errno));
		return;
	}
	for (;;) {
		int m = read_some(fd, one, 1, bufsize);

		for (int i = 0; i < m; i++)
			if (one[i].name[0] != 'c') {
				snprintf(name, 260, "%s", one[i].name);
				return;
			}
		if (m == 0)
			return;
	}
}

/* The name of entry i of a kind ('a' original, 'b' added, 'c' added while seeking): six
 * bytes, or with `longnames` padded to 6..255 bytes (names of several btree records). */
static const char *dname(char kind, int i, int longnames)
{
	static char buf[256];
	int len = longnames ? 6 + (i * 37) % 250 : 6;

	snprintf(buf, sizeof(buf), "%c%05d", kind, i);
	memset(buf + 6, 'x', (size_t)(len - 6));
	buf[len] = 0;
	return buf;
}

/* One directory of `nent` entries: read part, change it, read on; then seek back. */
static void readdir_case(const char *dir, int nent, size_t bufsize, int longnames)
{
	int total = nent * 3 + 200, n1, n2, fd;
	struct dent *v = calloc((size_t)total + 128, sizeof(*v));
	char path[600];

	if (!v) {
		failf(__LINE__, "calloc");
		return;
	}
	OK(mkdir(dir, 0755));
	for (int i = 0; i < nent; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, dname('a', i, longnames));
		EQ(mkfile(path, 0644, 0, 0), 0);
	}
	fd = OK(open(dir, O_RDONLY | O_DIRECTORY));
	n1 = read_some(fd, v, nent / 3 + 2, bufsize);
	TRUE(n1 >= nent / 3, "read only %d entries of %d", n1, nent + 2);
	/* Remove every third original name, add as many new ones as there were. */
	for (int i = 0; i < nent; i += 3) {
		snprintf(path, sizeof(path), "%s/%s", dir, dname('a', i, longnames));
		OK(unlink(path));
	}
	for (int i = 0; i < nent; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, dname('b', i, longnames));
		EQ(mkfile(path, 0644, 0, 0), 0);
	}
	n2 = read_some(fd, v + n1, total - n1, bufsize);
	/* Every name that lived throughout: exactly once; nothing twice; deleted names not
	 * after they went. */
	EQ(dcount(v, n1 + n2, "."), 1);
	EQ(dcount(v, n1 + n2, ".."), 1);
	for (int i = 0; i < nent; i++) {
		int c;

		snprintf(path, sizeof(path), "%s", dname('a', i, longnames));
		c = dcount(v, n1 + n2, path);
		if (i % 3 != 0 && c != 1)
			failf(__LINE__, "%s (%d entries): %s, present throughout, returned %d times",
			      dir, nent, path, c);
		if (i % 3 == 0 && dcount(v + n1, n2, path) != 0)
			failf(__LINE__, "%s: %s returned after its removal", dir, path);
		if (i % 3 == 0 && c > 1)
			failf(__LINE__, "%s: %s returned %d times", dir, path, c);
		snprintf(path, sizeof(path), "%s", dname('b', i, longnames));
		c = dcount(v, n1 + n2, path);
		if (c > 1)
			failf(__LINE__, "%s: new entry %s returned %d times", dir, path, c);
	}
	/* telldir/seekdir: the position after entry k leads to entry k + 1, also after the
	 * directory changed elsewhere. */
	OK(lseek(fd, 0, SEEK_SET));
	n1 = read_some(fd, v, total, bufsize);
	EQ(n1, 2 + nent - (nent + 2) / 3 + nent);
	/* The end: the cookie after the last entry reads nothing. */
	if (n1 > 0) {
		struct dent one[70];

		OK(lseek(fd, v[n1 - 1].off, SEEK_SET));
		EQ(read_some(fd, one, 1, bufsize), 0);
	}
	for (int k = 1; k + 2 < n1; k += (n1 / 7) + 1) {
		char got[260];

		seek_read(fd, v[k].off, bufsize, got);
		TRUE(strcmp(got, v[k + 1].name) == 0,
		     "%s: seekdir to the cookie after '%s' gave '%s', expected '%s'", dir,
		     v[k].name, got, v[k + 1].name);
		/* Remove entry k + 1 (unless a dot) and add another name: the same cookie
		 * gives entry k + 2. */
		if (v[k + 1].name[0] != '.') {
			snprintf(path, sizeof(path), "%s/%s", dir, v[k + 1].name);
			OK(unlink(path));
			snprintf(path, sizeof(path), "%s/%s", dir, dname('c', k, longnames));
			EQ(mkfile(path, 0644, 0, 0), 0);
			seek_read(fd, v[k].off, bufsize, got);
			TRUE(strcmp(got, v[k + 2].name) == 0,
			     "%s: after removing '%s', seekdir to the cookie after '%s' gave '%s', "
			     "expected '%s'", dir, v[k + 1].name, v[k].name, got, v[k + 2].name);
		}
	}
	close(fd);
	free(v);
}

/* A listing that spans a change of the directory's format: started while it is small
 * (inline), continued after 1200 more names made it a btree, and again after they went
 * (inline again): the names present throughout come exactly once. */
static void readdir_convert(void)
{
	struct dent *v = calloc(1800, sizeof(*v));
	char path[64];
	int n = 0, fd;

	if (!v) {
		failf(__LINE__, "calloc");
		return;
	}
	OK(mkdir("conv", 0755));
	for (int i = 0; i < 10; i++) {
		snprintf(path, sizeof(path), "conv/k%d", i);
		EQ(mkfile(path, 0644, 0, 0), 0);
	}
	fd = OK(open("conv", O_RDONLY | O_DIRECTORY));
	n += read_some(fd, v + n, 4, 64);
	for (int i = 0; i < 1200; i++) {
		snprintf(path, sizeof(path), "conv/m%d", i);
		EQ(mkfile(path, 0644, 0, 0), 0);
	}
	n += read_some(fd, v + n, 3, 64);
	for (int i = 0; i < 1200; i++) {
		snprintf(path, sizeof(path), "conv/m%d", i);
		OK(unlink(path));
	}
	n += read_some(fd, v + n, 1700 - n, 64);
	close(fd);
	EQ(dcount(v, n, "."), 1);
	EQ(dcount(v, n, ".."), 1);
	for (int i = 0; i < 10; i++) {
		snprintf(path, sizeof(path), "k%d", i);
		if (dcount(v, n, path) != 1)
			failf(__LINE__, "%s, present throughout, returned %d times across the "
			      "conversions", path, dcount(v, n, path));
	}
	for (int i = 0; i < n; i++)
		if (v[i].name[0] == 'm' && dcount(v, n, v[i].name) != 1)
			failf(__LINE__, "%s returned %d times", v[i].name, dcount(v, n, v[i].name));
	free(v);
}

static void t_readdir_cookies(void)
{
	readdir_case("small", 12, 64, 0);    /* an inline directory, one entry per call */
	readdir_case("large", 900, 600, 0);  /* a directory btree */
	readdir_case("long", 300, 700, 1);   /* names of 6..255 bytes */
	readdir_convert();
}

/* ---- permissions as nobody ------------------------------------------------------------ */

static void perm_nobody(void *arg)
{
	struct timespec ts[2] = { { 5, 0 }, { 5, 0 } };
	int fd;

	(void)arg;
	/* A 0700 directory of root's: no search, no listing, no creation. */
	ERR(stat("private/f", &(struct stat){ 0 }), EACCES);
	ERR(open("private", O_RDONLY | O_DIRECTORY), EACCES);
	ERR(open("private/new", O_CREAT | O_WRONLY, 0644), EACCES);
	ERR(mkdir("private/sub", 0755), EACCES);
	ERR(unlink("private/f"), EACCES);
	/* 0711: search but no listing. */
	ERR(open("searchonly", O_RDONLY | O_DIRECTORY), EACCES);
	fd = OK(open("searchonly/f", O_RDONLY));
	close(fd);
	/* 0755 of root's: no creation, no removal. */
	ERR(open("rootdir/new", O_CREAT | O_WRONLY, 0644), EACCES);
	ERR(unlink("rootdir/f"), EACCES);
	ERR(rename("rootdir/f", "mine"), EACCES);
	/* Another's file: no chmod, chown, explicit times; no writing a 0644 file. */
	ERR(chmod("rootfile", 0777), EPERM);
	ERR(chown("rootfile", NOBODY, NOBODY), EPERM);
	ERR(utimensat(AT_FDCWD, "rootfile", ts, 0), EPERM);
	ERR(utimensat(AT_FDCWD, "rootfile", NULL, 0), EACCES);
	ERR(open("rootfile", O_WRONLY), EACCES);
	ERR(truncate("rootfile", 0), EACCES);
	fd = OK(open("rootfile", O_RDONLY));
	close(fd);
	ERR(open("secret", O_RDONLY), EACCES);
	/* A world-writable file of root's: UTIME_NOW is allowed, explicit times are not. */
	OK(utimensat(AT_FDCWD, "worldw", NULL, 0));
	ERR(utimensat(AT_FDCWD, "worldw", ts, 0), EPERM);
	/* Its own file: chmod and times work; chown to another user does not. */
	EQ(mkfile("mine", 0644, 10, 1), 0);
	OK(chmod("mine", 0600));
	OK(utimensat(AT_FDCWD, "mine", ts, 0));
	ERR(chown("mine", 0, (gid_t)-1), EPERM);
	ERR(chown("mine", (uid_t)-1, 0), EPERM);
	/* Read-only file of its own: no writing, no truncating. */
	OK(chmod("mine", 0444));
	ERR(open("mine", O_WRONLY), EACCES);
	ERR(open("mine", O_RDWR | O_TRUNC), EACCES);
	ERR(truncate("mine", 0), EACCES);
	EQ(st_of("mine").st_size, 10);
	/* A sticky directory: others' names stay; its own go. */
	ERR(unlink("sticky/rootf"), EPERM);
	ERR(rename("sticky/rootf", "sticky/x"), EPERM);
	ERR(rmdir("sticky/rootd"), EPERM);
	EQ(mkfile("sticky/mine", 0644, 0, 0), 0);
	OK(rename("sticky/mine", "sticky/mine2"));
	OK(unlink("sticky/mine2"));
	/* Hard links to others' files (protected_hardlinks may refuse; not checked here). */
	/* An executable bit is needed to run: opening for exec of a 0644 file fails. */
	ERR(access("rootfile", X_OK), EACCES);
	ERR(access("rootfile", W_OK), EACCES);
	OK(access("rootfile", R_OK));
}

static void t_permissions(void)
{
	OK(mkdir("private", 0700));
	OK(chmod("private", 0700));
	EQ(mkfile("private/f", 0644, 1, 1), 0);
	OK(mkdir("searchonly", 0711));
	OK(chmod("searchonly", 0711));
	EQ(mkfile("searchonly/f", 0644, 1, 1), 0);
	OK(mkdir("rootdir", 0755));
	EQ(mkfile("rootdir/f", 0644, 1, 1), 0);
	EQ(mkfile("rootfile", 0644, 1, 1), 0);
	EQ(mkfile("secret", 0600, 1, 1), 0);
	EQ(mkfile("worldw", 0666, 1, 1), 0);
	OK(chmod("worldw", 0666));
	OK(mkdir("sticky", 0777));
	OK(chmod("sticky", 01777));
	EQ(mkfile("sticky/rootf", 0644, 0, 0), 0);
	OK(mkdir("sticky/rootd", 0755));
	as_nobody(perm_nobody, NULL);
	/* Root passes the permission bits (but the sticky removal rules do not bind it). */
	{
		int fd = OK(open("secret", O_RDWR));

		close(fd);
	}
	OK(unlink("sticky/rootf"));
	TRUE(st_of("mine").st_uid == NOBODY, "a file made by nobody is owned by %u",
	     (unsigned)st_of("mine").st_uid);
	EQ(st_of("mine").st_gid, NOBODY);
}

/* Access times (relatime, the default): a read or listing after a change moves atime;
 * one right after that need not. */
static int read_all(const char *path)
{
	char buf[4096];
	int fd = open(path, O_RDONLY);
	ssize_t r;

	if (fd < 0)
		return -1;
	while ((r = read(fd, buf, sizeof(buf))) > 0)
		;
	close(fd);
	return r < 0 ? -1 : 0;
}

static void t_atime(void)
{
	struct timespec old[2] = { { 1000, 0 }, { 0, UTIME_OMIT } };
	struct stat st0, st1;

	EQ(mkfile("f", 0644, 8192, 1), 0);        /* whole pages: all in the page cache */
	st0 = st_of("f");
	OK(read_all("f"));
	st1 = st_of("f");
	TRUE(ts_cmp(st1.st_atim, st0.st_mtim) > 0,
	     "read after the file was written: atime %lld.%09ld, mtime %lld.%09ld",
	     (long long)st1.st_atim.tv_sec, st1.st_atim.tv_nsec,
	     (long long)st0.st_mtim.tv_sec, st0.st_mtim.tv_nsec);
	/* Written again (mtime moves past atime): the next read moves atime again. */
	{
		int fd = OK(open("f", O_WRONLY));

		EQ(write(fd, "again", 5), 5);
		close(fd);
	}
	st0 = st_of("f");
	OK(read_all("f"));
	st1 = st_of("f");
	TRUE(ts_cmp(st1.st_atim, st0.st_mtim) > 0,
	     "read after a rewrite: atime %lld.%09ld, mtime %lld.%09ld",
	     (long long)st1.st_atim.tv_sec, st1.st_atim.tv_nsec,
	     (long long)st0.st_mtim.tv_sec, st0.st_mtim.tv_nsec);
	/* An access time a day old moves on the next read. */
	OK(utimensat(AT_FDCWD, "f", old, 0));
	OK(read_all("f"));
	TRUE(st_of("f").st_atim.tv_sec > 1000, "a read did not move a day-old atime");
	/* Not by stat, write, chmod (atime is the reads' only). */
	OK(utimensat(AT_FDCWD, "f", old, 0));
	{
		int fd = OK(open("f", O_WRONLY));

		EQ(write(fd, "x", 1), 1);
		close(fd);
	}
	OK(chmod("f", 0600));
	EQ(st_of("f").st_atim.tv_sec, 1000);
	/* After a read has set atime past mtime and ctime, a change of ctime alone (the
	 * cached pages stay valid) still makes the next read move it. */
	OK(read_all("f"));
	OK(read_all("f"));
	OK(chmod("f", 0640));
	st0 = st_of("f");
	OK(read_all("f"));
	st1 = st_of("f");
	TRUE(ts_cmp(st1.st_atim, st0.st_ctim) > 0,
	     "read after a chmod: atime %lld.%09ld, ctime %lld.%09ld",
	     (long long)st1.st_atim.tv_sec, st1.st_atim.tv_nsec,
	     (long long)st0.st_ctim.tv_sec, st0.st_ctim.tv_nsec);
	/* A directory listed after it changed. */
	OK(mkdir("d", 0755));
	EQ(mkfile("d/x", 0644, 0, 0), 0);
	st0 = st_of("d");
	{
		DIR *dir = opendir("d");

		while (dir && readdir(dir))
			;
		if (dir)
			closedir(dir);
	}
	st1 = st_of("d");
	TRUE(ts_cmp(st1.st_atim, st0.st_mtim) > 0, "listing a changed directory: atime %lld, mtime %lld",
	     (long long)st1.st_atim.tv_sec, (long long)st0.st_mtim.tv_sec);
}

/* ---- concurrency ---------------------------------------------------------------------- */

/* Run fn(i) in n child processes at once; each returns its own count of something. */
static void in_parallel(int n, long (*fn)(int), long *out)
{
	long *res = mmap(NULL, sizeof(long) * (size_t)n, PROT_READ | PROT_WRITE,
			 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	pid_t pids[16];

	if (res == MAP_FAILED) {
		failf(__LINE__, "mmap: %s", ename(errno));
		return;
	}
	fflush(stdout);
	for (int i = 0; i < n; i++) {
		pids[i] = fork();
		if (pids[i] == 0) {
			res[i] = fn(i);
			fflush(stdout);
			_exit(0);
		}
	}
	for (int i = 0; i < n; i++) {
		int status;

		if (pids[i] < 0 || waitpid(pids[i], &status, 0) != pids[i] || !WIFEXITED(status))
			failf(__LINE__, "child %d did not exit normally", i);
		out[i] = res[i];
	}
	munmap(res, sizeof(long) * (size_t)n);
}

#define RACERS 6
#define ROUNDS 100

/* Every round all racers try to create "x<round>" exclusively: one may win. */
static long race_excl(int me)
{
	long won = 0;

	for (int r = 0; r < ROUNDS; r++) {
		char n[32];
		int fd;

		snprintf(n, sizeof(n), "excl/x%d", r);
		fd = open(n, O_CREAT | O_EXCL | O_WRONLY, 0644);
		if (fd >= 0) {
			won++;
			if (write(fd, &me, sizeof(me)) != sizeof(me))
				failf(__LINE__, "write: %s", ename(errno));
			close(fd);
		} else if (errno != EEXIST) {
			failf(__LINE__, "racer %d: open(O_EXCL) %s: %s", me, n, ename(errno));
		}
		snprintf(n, sizeof(n), "excl/d%d", r);
		if (mkdir(n, 0755) == 0)
			won += 1000;
		else if (errno != EEXIST)
			failf(__LINE__, "racer %d: mkdir %s: %s", me, n, ename(errno));
	}
	return won;
}

/* Racers move their own files and directories between p and q, over each other's names,
 * link and unlink, and remove directories that may hold others' entries. */
static long race_moves(int me)
{
	long errs = 0;

	for (int r = 0; r < ROUNDS * 2; r++) {
		char a[64], b[96];
		int k = (r * 7 + me) % 5;

		snprintf(a, sizeof(a), "%s/f%d", r & 1 ? "p" : "q", k);
		snprintf(b, sizeof(b), "%s/f%d", r & 1 ? "q" : "p", (k + me) % 5);
		if (rename(a, b) != 0 && errno != ENOENT)
			errs++, failf(__LINE__, "rename %s %s: %s", a, b, ename(errno));
		snprintf(a, sizeof(a), "%s/d%d", r & 2 ? "p" : "q", k);
		snprintf(b, sizeof(b), "%s/d%d", r & 2 ? "q" : "p", k);
		if (rename(a, b) != 0 && errno != ENOENT && errno != ENOTEMPTY &&
		    errno != EEXIST)
			errs++, failf(__LINE__, "rename %s %s: %s", a, b, ename(errno));
		snprintf(a, sizeof(a), "p/d%d", (k + 1) % 5);
		if (mkdir(a, 0755) != 0 && errno != EEXIST)
			errs++, failf(__LINE__, "mkdir %s: %s", a, ename(errno));
		snprintf(b, sizeof(b), "%s/f%d", a, me);
		if (mkfile(b, 0644, 0, 0) != 0 && errno != ENOENT)
			errs++, failf(__LINE__, "create %s: %s", b, ename(errno));
		if (r % 3 == 0 && unlink(b) != 0 && errno != ENOENT)
			errs++, failf(__LINE__, "unlink %s: %s", b, ename(errno));
		snprintf(a, sizeof(a), "q/d%d", (k + 2) % 5);
		if (rmdir(a) != 0 && errno != ENOENT && errno != ENOTEMPTY)
			errs++, failf(__LINE__, "rmdir %s: %s", a, ename(errno));
		snprintf(a, sizeof(a), "p/f%d", k);
		snprintf(b, sizeof(b), "q/l%d.%d", me, r % 4);
		if (link(a, b) != 0 && errno != ENOENT && errno != EEXIST)
			errs++, failf(__LINE__, "link %s %s: %s", a, b, ename(errno));
		snprintf(b, sizeof(b), "q/l%d.%d", me, (r + 2) % 4);
		if (unlink(b) != 0 && errno != ENOENT)
			errs++, failf(__LINE__, "unlink %s: %s", b, ename(errno));
		if (r % 10 == 0) {
			snprintf(a, sizeof(a), "q/f%d", k);
			if (mkfile(a, 0644, 100, 1) != 0)
				errs++, failf(__LINE__, "create %s: %s", a, ename(errno));
		}
	}
	return errs;
}

/* Readers list "stable" (whose s* names never change) while writers churn other names in
 * it: every s* name once per listing. */
static long race_readdir(int me)
{
	long bad = 0;

	if (me >= 2) {
		for (int r = 0; r < ROUNDS * 4; r++) {
			char n[64];

			snprintf(n, sizeof(n), "stable/t%d.%d", me, r % 50);
			if (r % 2 == 0) {
				if (mkfile(n, 0644, 0, 0) != 0)
					bad++, failf(__LINE__, "create %s: %s", n, ename(errno));
			} else if (unlink(n) != 0 && errno != ENOENT) {
				bad++, failf(__LINE__, "unlink %s: %s", n, ename(errno));
			}
		}
		return bad;
	}
	for (int r = 0; r < 30; r++) {
		DIR *d = opendir("stable");
		struct dirent *de;
		static unsigned char seen[200];
		int count = 0;

		memset(seen, 0, sizeof(seen));
		while (d && (de = readdir(d))) {
			int i;

			if (sscanf(de->d_name, "s%d", &i) == 1 && i >= 0 && i < 200) {
				if (seen[i]++)
					bad++, failf(__LINE__, "listing %d: %s twice", r, de->d_name);
				count++;
			}
		}
		if (d)
			closedir(d);
		if (count != 200)
			bad++, failf(__LINE__, "listing %d: %d of the 200 stable names", r, count);
	}
	return bad;
}

/* Appenders: every O_APPEND write lands whole at the end of file, none over another. */
#define APPENDS 400
#define RECLEN 97

static long race_append(int me)
{
	int fd = open("log", O_WRONLY | O_APPEND);
	long bad = 0;

	if (fd < 0) {
		failf(__LINE__, "open log: %s", ename(errno));
		return 1;
	}
	for (int r = 0; r < APPENDS; r++) {
		char rec[RECLEN];

		memset(rec, 'a' + me, sizeof(rec));
		snprintf(rec, sizeof(rec), "%d %d ", me, r);
		rec[RECLEN - 1] = '\n';
		if (write(fd, rec, sizeof(rec)) != (ssize_t)sizeof(rec))
			bad++, failf(__LINE__, "append: %s", ename(errno));
	}
	close(fd);
	return bad;
}

/* Writers of disjoint, unaligned pieces of one file, all at once. */
static long race_pieces(int me)
{
	int fd = open("pieces", O_WRONLY);
	long bad = 0;

	if (fd < 0)
		return 1;
	for (int r = 0; r < 64; r++) {
		uint64_t off = ((uint64_t)r * RACERS + (uint64_t)me) * 3001;

		if (put(fd, off, 3001, 40 + (unsigned)me) != 0)
			bad++, failf(__LINE__, "pwrite at %llu: %s", (unsigned long long)off,
				     ename(errno));
	}
	close(fd);
	return bad;
}

static void t_concurrent_io(void)
{
	long res[RACERS];
	char *buf;
	int fd;

	EQ(mkfile("log", 0644, 0, 0), 0);
	in_parallel(RACERS, race_append, res);
	EQ(st_of("log").st_size, (long long)RACERS * APPENDS * RECLEN);
	buf = malloc((size_t)RACERS * APPENDS * RECLEN);
	fd = OK(open("log", O_RDONLY));
	if (buf && fd >= 0 &&
	    read(fd, buf, (size_t)RACERS * APPENDS * RECLEN) == (ssize_t)RACERS * APPENDS * RECLEN) {
		int next[RACERS] = { 0 };

		for (long i = 0; i < (long)RACERS * APPENDS; i++) {
			const char *rec = buf + i * RECLEN;
			int who, r;

			if (sscanf(rec, "%d %d ", &who, &r) != 2 || who < 0 || who >= RACERS ||
			    r != next[who] || rec[RECLEN - 1] != '\n' ||
			    rec[RECLEN - 2] != 'a' + who) {
				failf(__LINE__, "record %ld is torn or out of order: '%.20s'", i, rec);
				break;
			}
			next[who]++;
		}
	} else {
		failf(__LINE__, "reading the appended log back failed");
	}
	if (fd >= 0)
		close(fd);
	free(buf);

	EQ(mkfile("pieces", 0644, 0, 0), 0);
	in_parallel(RACERS, race_pieces, res);
	fd = OK(open("pieces", O_RDONLY));
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	EQ(fst_of(fd).st_size, 64LL * RACERS * 3001);
	for (int r = 0; r < 64; r++)
		for (int me = 0; me < RACERS; me++)
			SAME(fd, ((uint64_t)r * RACERS + (uint64_t)me) * 3001, 3001,
			     40 + (unsigned)me);
	close(fd);
}

static int count_subdirs(const char *path)
{
	DIR *d = opendir(path);
	struct dirent *de;
	int n = 0;

	while (d && (de = readdir(d))) {
		char p[600];

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(p, sizeof(p), "%s/%s", path, de->d_name);
		n += S_ISDIR(st_of(p).st_mode);
	}
	if (d)
		closedir(d);
	return n;
}

static void t_races(void)
{
	struct statvfs s0 = vfs_of(".");
	long res[RACERS];
	long wins = 0;

	OK(mkdir("excl", 0755));
	in_parallel(RACERS, race_excl, res);
	for (int i = 0; i < RACERS; i++)
		wins += res[i];
	EQ(wins, ROUNDS * 1001L);           /* exactly one winner of each name */
	EQ(st_of("excl").st_nlink, 2 + ROUNDS);

	OK(mkdir("p", 0755));
	OK(mkdir("q", 0755));
	for (int k = 0; k < 5; k++) {
		char n[32];

		snprintf(n, sizeof(n), "p/f%d", k);
		EQ(mkfile(n, 0644, 10, 1), 0);
		snprintf(n, sizeof(n), "q/d%d", k);
		OK(mkdir(n, 0755));
	}
	in_parallel(RACERS, race_moves, res);
	/* Directory link counts match what is in them; every file's link count matches its
	 * names. */
	EQ(st_of("p").st_nlink, 2 + count_subdirs("p"));
	EQ(st_of("q").st_nlink, 2 + count_subdirs("q"));
	{
		const char *dirs[] = { "p", "q" };
		struct { ino_t ino; nlink_t nlink; int names; } seen[512];
		int nseen = 0;

		for (int di = 0; di < 2; di++) {
			DIR *d = opendir(dirs[di]);
			struct dirent *de;

			while (d && (de = readdir(d))) {
				char path[600];
				struct stat st;
				int j;

				snprintf(path, sizeof(path), "%s/%s", dirs[di], de->d_name);
				st = st_of(path);
				if (!S_ISREG(st.st_mode))
					continue;
				for (j = 0; j < nseen && seen[j].ino != st.st_ino; j++)
					;
				if (j == nseen && nseen < 512)
					seen[nseen++] = (typeof(seen[0])){ st.st_ino, st.st_nlink, 0 };
				if (j < 512)
					seen[j].names++;
			}
			if (d)
				closedir(d);
		}
		for (int j = 0; j < nseen; j++)
			if ((int)seen[j].nlink != seen[j].names)
				failf(__LINE__, "inode %llu: link count %d, %d names",
				      (unsigned long long)seen[j].ino, (int)seen[j].nlink, seen[j].names);
	}

	OK(mkdir("stable", 0755));
	for (int i = 0; i < 200; i++) {
		char n[32];

		snprintf(n, sizeof(n), "stable/s%d", i);
		EQ(mkfile(n, 0644, 0, 0), 0);
	}
	in_parallel(4, race_readdir, res);

	/* Everything removed: every inode comes back. */
	if (system("rm -rf excl p q stable") != 0)
		failf(__LINE__, "rm -rf failed");
	if (wait_free(".", 0, used_inodes(&s0)) != 0)
		failf(__LINE__, "inodes in use: %llu, %llu before the races",
		      used_inodes(&(struct statvfs[]){ vfs_of(".") }[0]), used_inodes(&s0));
}

/* ---- the table ------------------------------------------------------------------------ */

struct test {
	const char *name;
	void (*fn)(void);
};

static const struct test tests[] = {
	{ "sparse_holes", t_sparse_holes },
	{ "past_4gib", t_past_4gib },
	{ "truncate_up_down", t_truncate },
	{ "o_append", t_o_append },
	{ "o_trunc", t_o_trunc },
	{ "o_excl", t_o_excl },
	{ "fallocate_punch_zero", t_fallocate },
	{ "seek_data_hole", t_seek_data_hole },
	{ "mkdir_eexist", t_mkdir },
	{ "rmdir_enotempty", t_rmdir },
	{ "rmdir_file_enotdir", t_rmdir_notdir },
	{ "unlink_dir_eisdir", t_unlink_dir },
	{ "rename_across_dirs", t_rename_across },
	{ "rename_over_file", t_rename_over_file },
	{ "rename_over_empty_dir", t_rename_over_empty_dir },
	{ "rename_over_nonempty_dir", t_rename_over_nonempty_dir },
	{ "rename_dir_over_file", t_rename_dir_over_file },
	{ "rename_file_over_dir", t_rename_file_over_dir },
	{ "rename_noreplace", t_rename_noreplace },
	{ "rename_exchange", t_rename_exchange },
	{ "rename_loop", t_rename_loop },
	{ "rename_parent_nlink", t_rename_nlink },
	{ "hard_links", t_hard_links },
	{ "symlinks", t_symlinks },
	{ "mknod", t_mknod },
	{ "chmod_chown", t_chmod_chown },
	{ "utimensat_ns", t_utimens },
	{ "ctime_mtime_updates", t_times },
	{ "suid_sgid_clearing", t_suid_clear },
	{ "capability_clearing", t_cap_clear },
	{ "name_max", t_name_max },
	{ "statfs_counts", t_statfs },
	{ "unlinked_open", t_unlinked_open },
	{ "lookup_counts", t_lookup_counts },
	{ "readdir_cookies", t_readdir_cookies },
	{ "permissions_nobody", t_permissions },
	{ "atime_relatime", t_atime },
	{ "concurrent_namespace", t_races },
	{ "concurrent_io", t_concurrent_io },
};

static int wanted(const char *name, char **only, int nonly)
{
	if (nonly == 0)
		return 1;
	for (int i = 0; i < nonly; i++)
		if (strcmp(only[i], name) == 0)
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	char *only[64];
	int nonly = 0, failed = 0, ran = 0, c, base;

	while ((c = getopt(argc, argv, "vt:")) != -1) {
		if (c == 'v')
			verbose = 1;
		else if (c == 't' && nonly < 64)
			only[nonly++] = optarg;
		else {
			fprintf(stderr, "usage: posix_suite [-v] [-t NAME]... DIR\n");
			return 2;
		}
	}
	if (optind + 1 != argc) {
		fprintf(stderr, "usage: posix_suite [-v] [-t NAME]... DIR\n");
		return 2;
	}
	if (geteuid() != 0) {
		fprintf(stderr, "posix_suite: must run as root\n");
		return 77;
	}
	S = mmap(NULL, sizeof(*S), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (S == MAP_FAILED) {
		perror("mmap");
		return 2;
	}
	umask(0);
	setvbuf(stdout, NULL, _IOLBF, 0);
	base = open(argv[optind], O_RDONLY | O_DIRECTORY);
	if (base < 0) {
		fprintf(stderr, "posix_suite: %s: %s\n", argv[optind], strerror(errno));
		return 2;
	}
	for (size_t i = 0; i < sizeof(tests) / sizeof(tests[0]); i++) {
		const struct test *t = &tests[i];
		struct timespec t0, t1;

		if (!wanted(t->name, only, nonly))
			continue;
		S->fails = 0;
		S->first[0] = 0;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		if (mkdirat(base, t->name, 0777) != 0 || fchmodat(base, t->name, 0777, 0) != 0 ||
		    fchdir(base) != 0 || chdir(t->name) != 0) {
			failf(__LINE__, "cannot make the test directory: %s", ename(errno));
		} else {
			t->fn();
		}
		clock_gettime(CLOCK_MONOTONIC, &t1);
		ran++;
		if (S->fails) {
			failed++;
			printf("FAIL %s: %s\n", t->name, S->first);
		} else if (verbose) {
			printf("ok   %s (%.2f s)\n", t->name,
			       (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9);
		} else {
			printf("ok   %s\n", t->name);
		}
	}
	if (fchdir(base) != 0)
		return 2;
	printf("%d tests, %d failed\n", ran, failed);
	return failed ? 1 : 0;
}
