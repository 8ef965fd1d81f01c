/*
 * check_headroom.c — estimates, the headroom probe, and the reserve: success, cancel,
 * refusal inside a real child memory cgroup (up front, and when headroom drops between
 * chunks) with no OOM kill, and ENOSPC on a small tmpfs with everything given back.
 * Tests that need root, cgroups or mounts print "SKIP: reason" and pass when they cannot run.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include "headroom.h"

#include "tu.h"

#define MiB (1ull << 20)

START_TEST(test_probe)
{
	struct mfs_headroom h;
	char dir[512];
	struct stat st;

	ck_assert_int_eq(mfs_headroom_probe(&h), 0);
	ck_assert_uint_gt(h.mem_available, 0);
	ck_assert_uint_le(h.headroom, h.mem_available);
	ck_assert_uint_le(h.headroom, h.cgroup_room);
	if (mfs_headroom_cgroup_dir(1, dir, sizeof(dir)) == 0) {
		ck_assert_int_eq(stat(dir, &st), 0);
		ck_assert(S_ISDIR(st.st_mode));
		printf("headroom: v1 memory cgroup %s\n", dir);
	}
	if (mfs_headroom_cgroup_dir(2, dir, sizeof(dir)) == 0) {
		ck_assert_int_eq(stat(dir, &st), 0);
		printf("headroom: v2 cgroup %s\n", dir);
	}
	printf("headroom: MemAvailable+SwapFree %.0f MiB, cgroup room %s%.0f MiB -> %.0f MiB\n",
	       (double)h.mem_available / MiB, h.cgroup_room == MFS_HEADROOM_UNLIMITED ?
	       "(unlimited) " : "", h.cgroup_room == MFS_HEADROOM_UNLIMITED ? 0.0 :
	       (double)h.cgroup_room / MiB, (double)h.headroom / MiB);
}
END_TEST

START_TEST(test_estimate)
{
	struct mfs_reserve_estimate e = { 0 }, e2 = { 0 };

	mfs_reserve_estimate_xfarray(&e, 1000000, 16);
	ck_assert_uint_ge(e.file_bytes, 16000000);
	ck_assert_uint_le(e.heap_bytes, 8 * MiB);
	mfs_reserve_estimate_xfarray(&e2, 2000000, 16);
	ck_assert_uint_gt(e2.file_bytes, e.file_bytes);
	mfs_reserve_estimate_xblob(&e, 1000, 1000000);
	ck_assert_uint_ge(e.file_bytes, 17000000);
	uint64_t r = mfs_reserve_estimate_bytes(&e);
	ck_assert_uint_ge(r, e.file_bytes + e.file_bytes / 2);
	ck_assert_uint_eq(r % MiB, 0);
}
END_TEST

START_TEST(test_reserve_memfd)
{
	int fd = memfd_create("reserve", MFD_CLOEXEC);
	struct mfs_reserve_result res;
	struct mfs_reserve_opts o = { .chunk = 4 * MiB };
	struct stat st;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(mfs_reserve(fd, 0, 48 * MiB + 4096, &o, &res), 0);
	ck_assert_uint_eq(res.reserved, 48 * MiB + 4096);
	ck_assert(res.memory_backed);
	ck_assert_str_eq(res.msg, "");
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_int_eq(st.st_size, 48 * MiB + 4096);
	ck_assert_int_ge(st.st_blocks * 512, 48 * MiB);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

/* Cancelled part way: -ECANCELED, and the file is back to its size and blocks. */
static atomic_int cancel_flag;
static int cancel_after_two(void *priv, uint64_t done)
{
	(void)priv;
	if (done >= 2 * MiB)
		atomic_store(&cancel_flag, 1);
	return 0;
}

START_TEST(test_reserve_cancel)
{
	int fd = memfd_create("reserve", MFD_CLOEXEC);
	struct mfs_reserve_opts o = { .chunk = MiB, .abort = &cancel_flag,
				      .after_chunk = cancel_after_two };
	struct mfs_reserve_result res;
	struct stat st;

	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(pwrite(fd, "x", 1, 100), 1);
	atomic_store(&cancel_flag, 0);
	ck_assert_int_eq(mfs_reserve(fd, 0, 16 * MiB, &o, &res), -ECANCELED);
	ck_assert_uint_eq(res.reserved, 0);
	ck_assert_int_eq(fstat(fd, &st), 0);
	ck_assert_int_eq(st.st_size, 101);
	ck_assert_int_le(st.st_blocks * 512, 4096);
	ck_assert_int_eq(close(fd), 0);
}
END_TEST

/* ---- a child memory cgroup ------------------------------------------------------------- */

struct cg {
	int version;
	char dir[600];
};

static int write_file(const char *dir, const char *name, const char *val)
{
	char path[800];
	int fd, rc = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (write(fd, val, strlen(val)) != (ssize_t)strlen(val))
		rc = -errno;
	close(fd);
	return rc;
}

static long long read_num(const char *dir, const char *name, const char *key)
{
	char path[800], buf[4096];
	FILE *f;
	long long v = -1;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(buf, sizeof(buf), f)) {
		char k[64];
		long long x;

		if (!key && sscanf(buf, "%lld", &x) == 1) {
			v = x;
			break;
		}
		if (key && sscanf(buf, "%63s %lld", k, &x) == 2 && strcmp(k, key) == 0) {
			v = x;
			break;
		}
	}
	fclose(f);
	return v;
}

/* Create a child memory cgroup limited to limit bytes; a reason on failure. */
static const char *cg_create(struct cg *cg, uint64_t limit)
{
	char parent[512], val[32];

	cg->dir[0] = '\0';
	if (geteuid() != 0)
		return "not root";
	if (mfs_headroom_cgroup_dir(1, parent, sizeof(parent)) == 0)
		cg->version = 1;
	else if (mfs_headroom_cgroup_dir(2, parent, sizeof(parent)) == 0)
		cg->version = 2;
	else
		return "no memory cgroup hierarchy mounted";
	snprintf(cg->dir, sizeof(cg->dir), "%s/mendfs-test-%d", parent, (int)getpid());
	if (mkdir(cg->dir, 0755) < 0) {
		cg->dir[0] = '\0';
		return "cannot create a child cgroup";
	}
	snprintf(val, sizeof(val), "%" PRIu64, limit);
	if (write_file(cg->dir, cg->version == 1 ? "memory.limit_in_bytes" : "memory.max", val))
		return "cannot set the child cgroup's memory limit";
	if (cg->version == 2)
		(void)write_file(cg->dir, "memory.swap.max", "0");
	return NULL;
}

static void cg_remove(struct cg *cg)
{
	if (cg->dir[0])
		ck_assert_msg(rmdir(cg->dir) == 0, "rmdir %s: %s", cg->dir, strerror(errno));
	cg->dir[0] = '\0';
}

static long long cg_oom_kills(const struct cg *cg)
{
	return cg->version == 1 ? read_num(cg->dir, "memory.oom_control", "oom_kill")
				: read_num(cg->dir, "memory.events", "oom_kill");
}

/* What the child reports back through a pipe. */
struct child_report {
	int rc;
	uint64_t needed, available;
	off_t size_after;
	blkcnt_t blocks_after;
	char msg[1024];
};

static int hog_fd = -1;
static int hog_once(void *priv, uint64_t done)
{
	(void)priv;
	if (done == 4 * MiB) {
		/* Somebody else eats the cgroup's memory while the reserve runs. */
		hog_fd = memfd_create("hog", MFD_CLOEXEC);
		if (hog_fd < 0 || fallocate(hog_fd, 0, 0, 40 * MiB) < 0)
			return -EIO;
	}
	return 0;
}

/* In a forked child moved into cg: reserve want bytes of a memfd. */
static void child_reserve(const struct cg *cg, int wfd, uint64_t want, bool hog)
{
	struct child_report r = { 0 };
	struct mfs_reserve_opts o = { .chunk = 4 * MiB, .margin = 8 * MiB,
				      .after_chunk = hog ? hog_once : NULL };
	struct mfs_reserve_result res;
	char pid[32];
	struct stat st;
	int fd;

	snprintf(pid, sizeof(pid), "%d", (int)getpid());
	if (write_file(cg->dir, cg->version == 1 ? "tasks" : "cgroup.procs", pid))
		_exit(3);
	fd = memfd_create("reserve", MFD_CLOEXEC);
	if (fd < 0)
		_exit(4);
	r.rc = mfs_reserve(fd, 0, want, &o, &res);
	r.needed = res.needed;
	r.available = res.available;
	snprintf(r.msg, sizeof(r.msg), "%s", res.msg);
	if (fstat(fd, &st) < 0)
		_exit(5);
	r.size_after = st.st_size;
	r.blocks_after = st.st_blocks;
	if (write(wfd, &r, sizeof(r)) != (ssize_t)sizeof(r))
		_exit(6);
	_exit(0);
}

/* Runs child_reserve in a fresh 64 MiB cgroup; returns false (after printing why) to skip. */
static bool run_in_cgroup(uint64_t want, bool hog, struct child_report *r, int *status,
			  long long *kills_before, long long *kills_after)
{
	struct cg cg;
	const char *why = cg_create(&cg, 64 * MiB);
	int p[2];
	pid_t pid;

	if (why) {
		printf("SKIP: cgroup reserve test: %s\n", why);
		if (cg.dir[0])
			cg_remove(&cg);
		return false;
	}
	*kills_before = cg_oom_kills(&cg);
	if (pipe(p) < 0 || (pid = fork()) < 0) {
		cg_remove(&cg);
		ck_abort_msg("pipe/fork: %s", strerror(errno));
	}
	if (pid == 0) {
		close(p[0]);
		child_reserve(&cg, p[1], want, hog);
	}
	close(p[1]);
	ssize_t n = read(p[0], r, sizeof(*r));
	close(p[0]);
	waitpid(pid, status, 0);
	*kills_after = cg_oom_kills(&cg);
	cg_remove(&cg);		/* the child is gone: the cgroup is empty */
	ck_assert_msg(n == (ssize_t)sizeof(*r), "child reported nothing (status %#x)", *status);
	return true;
}

START_TEST(test_reserve_refused_in_cgroup)
{
	struct child_report r;
	long long k0, k1;
	int status;

	if (!run_in_cgroup(256 * MiB, false, &r, &status, &k0, &k1))
		return;
	printf("headroom: cgroup 64 MiB, reserve 256 MiB: rc %d, \"%s\"\n", r.rc, r.msg);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	ck_assert_int_eq(r.rc, -ENOMEM);
	ck_assert_uint_ge(r.needed, 256 * MiB);
	ck_assert_uint_le(r.available, 64 * MiB);
	ck_assert_ptr_nonnull(strstr(r.msg, "256.0 MiB"));
	ck_assert_int_eq(r.size_after, 0);
	ck_assert_int_eq(r.blocks_after, 0);
	ck_assert_int_eq(k0, k1);
}
END_TEST

START_TEST(test_reserve_stopped_in_cgroup)
{
	struct child_report r;
	long long k0, k1;
	int status;

	/* 40 MiB fits up front; then a hog takes 40 MiB and the per-chunk probe must stop
	 * the reserve before the cgroup limit (where the OOM killer, not ENOMEM, waits). */
	if (!run_in_cgroup(40 * MiB, true, &r, &status, &k0, &k1))
		return;
	printf("headroom: cgroup 64 MiB, reserve 40 MiB with a 40 MiB hog: rc %d, \"%s\"\n",
	       r.rc, r.msg);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %#x", status);
	ck_assert_int_eq(r.rc, -ENOMEM);
	ck_assert_ptr_nonnull(strstr(r.msg, "stopped"));
	ck_assert_uint_le(r.available, 64 * MiB);
	ck_assert_int_eq(r.size_after, 0);
	ck_assert_int_eq(r.blocks_after, 0);
	ck_assert_int_eq(k0, k1);
}
END_TEST

/* ---- ENOSPC on a small tmpfs ------------------------------------------------------------ */

/* ---- the cgroup lookup from many threads at once ------------------------------------------ */

/* The daemon looks its memory cgroup up from every client thread that starts a repair (the
 * pressure watcher, the headroom check): the lookup must be thread-safe.  Each thread asks
 * many times and must always get the answer one thread got alone (with strtok's shared
 * state, a thread parsed another's mount line: ASan saw a read of another thread's stack
 * in t_repair_headers). */
struct cg_ask {
	const char *want;
	int version, bad;
};

static void *cg_ask_fn(void *arg)
{
	struct cg_ask *a = arg;
	char dir[512];

	for (int i = 0; i < 1500; i++)
		if (mfs_headroom_cgroup_dir(a->version, dir, sizeof(dir)) != 0 ||
		    strcmp(dir, a->want) != 0)
			a->bad++;
	return NULL;
}

START_TEST(test_cgroup_dir_threads)
{
	char want[512];
	pthread_t th[8];
	struct cg_ask a[8];
	int version = 1;

	if (mfs_headroom_cgroup_dir(1, want, sizeof(want)) != 0) {
		version = 2;
		if (mfs_headroom_cgroup_dir(2, want, sizeof(want)) != 0) {
			printf("SKIP: no memory cgroup to look up\n");
			return;
		}
	}
	for (int k = 0; k < 8; k++) {
		a[k] = (struct cg_ask){ want, version, 0 };
		ck_assert_int_eq(pthread_create(&th[k], NULL, cg_ask_fn, &a[k]), 0);
	}
	for (int k = 0; k < 8; k++) {
		pthread_join(th[k], NULL);
		ck_assert_msg(a[k].bad == 0, "thread %d: %d of 1500 lookups wrong (want %s)", k,
			      a[k].bad, want);
	}
}
END_TEST

START_TEST(test_reserve_enospc_tmpfs)
{
	char dir[] = "/tmp/mendfs-tmpfs-XXXXXX";
	struct mfs_reserve_opts o = { .chunk = MiB };
	struct mfs_reserve_result res;
	struct statvfs before, after;
	struct stat st;
	int fd, rc, fds0;
	char page[4096];

	if (geteuid() != 0) {
		printf("SKIP: tmpfs ENOSPC test: not root\n");
		return;
	}
	ck_assert_ptr_nonnull(mkdtemp(dir));
	if (mount("tmpfs", dir, "tmpfs", 0, "size=8m") < 0) {
		printf("SKIP: tmpfs ENOSPC test: mount: %s\n", strerror(errno));
		rmdir(dir);
		return;
	}
	fds0 = tu_count_fds();
	fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	memset(page, 'p', sizeof(page));
	bool setup = fd >= 0 && pwrite(fd, page, sizeof(page), 0) == (ssize_t)sizeof(page) &&
		     statvfs(dir, &before) == 0;
	rc = setup ? mfs_reserve(fd, 0, 32 * MiB, &o, &res) : 0;
	bool stat_ok = setup && fstat(fd, &st) == 0 && statvfs(dir, &after) == 0;
	bool data_ok = setup && pread(fd, page, sizeof(page), 0) == (ssize_t)sizeof(page) &&
		       page[0] == 'p' && page[4095] == 'p';
	int close_rc = fd >= 0 ? close(fd) : -1;
	int fds1 = tu_count_fds();
	int umount_rc = umount2(dir, 0);
	int rmdir_rc = rmdir(dir);

	ck_assert_msg(setup, "setup failed: %s", strerror(errno));
	printf("headroom: 8 MiB tmpfs, reserve 32 MiB: rc %d, \"%s\"\n", rc, res.msg);
	ck_assert_int_eq(rc, -ENOSPC);
	ck_assert_uint_eq(res.reserved, 0);
	ck_assert(stat_ok);
	ck_assert_int_eq(st.st_size, 4096);
	ck_assert_int_le(st.st_blocks * 512, 8192);
	ck_assert_uint_eq(after.f_bfree, before.f_bfree);
	ck_assert(data_ok);
	ck_assert_int_eq(close_rc, 0);
	ck_assert_int_eq(fds1, fds0);
	ck_assert_int_eq(umount_rc, 0);
	ck_assert_int_eq(rmdir_rc, 0);
}
END_TEST

static Suite *headroom_suite(void)
{
	Suite *s = suite_create("headroom");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_probe);
	tcase_add_test(tc, test_cgroup_dir_threads);
	tcase_add_test(tc, test_estimate);
	tcase_add_test(tc, test_reserve_memfd);
	tcase_add_test(tc, test_reserve_cancel);
	tcase_add_test(tc, test_reserve_refused_in_cgroup);
	tcase_add_test(tc, test_reserve_stopped_in_cgroup);
	tcase_add_test(tc, test_reserve_enospc_tmpfs);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(headroom_suite());
}
