/*
 * check_dev.c — the device survives a fork (a daemon opens its image, then daemonizes):
 * whatever its other threads were doing with it at that moment, the child's flushes and
 * writes go through; and only a regular file or a block device is opened, without waiting.
 * (The device's other behaviour — sticky flush failures — is tested with the buffer cache,
 * check_bcache.c.)
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "dev.h"
#include "log.h"

#include "tu.h"

static char path[TU_PATH_MAX];
static struct mfs_dev *dev;

static void setup(void)
{
	tu_image_create(path, "mfs-dev", 4u << 20);
	dev = NULL;
}

static void teardown(void)
{
	mfs_dev_close(dev);
	tu_image_remove(path);
}

/* The system call thread `tid` of this process is blocked in (-1: running, or unknown). */
static long thread_syscall(pid_t tid)
{
	char name[64], buf[64];
	FILE *f;
	long nr = -1;

	snprintf(name, sizeof(name), "/proc/self/task/%d/syscall", (int)tid);
	f = fopen(name, "r");
	if (!f)
		return -1;
	if (!fgets(buf, sizeof(buf), f) || sscanf(buf, "%ld", &nr) != 1)
		nr = -1;
	fclose(f);
	return nr;
}

/* Wait (bounded: 20 s) until thread `*tid` is blocked in system call `nr`; 0, or -1 when
 * it did not block. */
static int blocked_in(pid_t *tid, long nr)
{
	double t0 = tu_now();

	while (!__atomic_load_n(tid, __ATOMIC_ACQUIRE) || thread_syscall(*tid) != nr) {
		if (tu_now() - t0 > 20)
			return -1;
		usleep(1000);
	}
	return 0;
}

/* ---- flushes held in flight and flushes waiting for them --------------------------------- */

struct flusher {
	int hold;                        /* its hook holds it until `release` */
	pid_t tid;
	int in;                          /* it is in its hook */
	int release;
	pthread_t thread;
};

static __thread struct flusher *self;

static int hold_hook(void *arg)
{
	double t0 = tu_now();

	(void)arg;
	if (!self || !self->hold)
		return 0;
	__atomic_store_n(&self->in, 1, __ATOMIC_RELEASE);
	while (!__atomic_load_n(&self->release, __ATOMIC_ACQUIRE) && tu_now() - t0 < 30)
		usleep(1000);
	return 0;
}

static void *flush_main(void *arg)
{
	self = arg;
	__atomic_store_n(&self->tid, (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
	return (void *)(intptr_t)mfs_dev_flush(dev);
}

/*
 * Start flush A, held in flight by its hook, then flush B, which ends its own fdatasync()
 * and waits for A (a success may not be reported before an overlapping flush ended:
 * dev.c).  0 once B waits (it blocks on a futex only in that wait: nobody holds the
 * device's locks meanwhile); -1 if that did not happen within 20 s.
 */
static int overlap_start(struct flusher *a, struct flusher *b)
{
	double t0 = tu_now();

	*a = (struct flusher){ .hold = 1 };
	*b = (struct flusher){ .hold = 0 };
	mfs_dev_set_flush_hook(dev, hold_hook, NULL);
	if (pthread_create(&a->thread, NULL, flush_main, a))
		return -1;
	while (!__atomic_load_n(&a->in, __ATOMIC_ACQUIRE)) {
		if (tu_now() - t0 > 20)
			return -1;
		usleep(1000);
	}
	if (pthread_create(&b->thread, NULL, flush_main, b))
		return -1;
	return blocked_in(&b->tid, SYS_futex);
}

/* Let A end; 0 if both A and B then returned success. */
static int overlap_end(struct flusher *a, struct flusher *b)
{
	void *ra, *rb;

	__atomic_store_n(&a->release, 1, __ATOMIC_RELEASE);
	if (pthread_join(a->thread, &ra) || pthread_join(b->thread, &rb))
		return -1;
	mfs_dev_set_flush_hook(dev, NULL, NULL);
	return ra || rb ? -1 : 0;
}

/* fork(), with stdio flushed first (the child must not write the parent's buffers). */
static pid_t fork_child(void)
{
	pid_t pid;

	fflush(NULL);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	return pid;
}

/* Wait at most `secs` for child `pid`: its wait status, or -1 when it still ran (it is
 * killed then). */
static int child_wait(pid_t pid, double secs)
{
	double t0 = tu_now();
	int status;

	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (tu_now() - t0 > secs) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			return -1;
		}
		usleep(2000);
	}
	return status;
}

enum { CHILD_FLUSH, CHILD_WRITE_FLUSH, CHILD_OVERLAP };

/*
 * Fork; the child flushes the device (CHILD_WRITE_FLUSH: writes a block first;
 * CHILD_OVERLAP: then also two overlapping flushes of its own threads, as above) and exits
 * 0 if all of it succeeded, 2 if not.  A child still running after 20 s hangs: it is
 * killed (its own alarm after 15 s, else SIGKILL) and the test fails.
 */
static void child_flushes(int what)
{
	int status;
	pid_t pid = fork_child();

	if (pid == 0) {
		static char blk[4096];
		struct flusher c, d;
		int err = 0;

		signal(SIGALRM, SIG_DFL);       /* not the test runner's handler */
		alarm(15);
		memset(blk, 0xc5, sizeof(blk));
		if (what == CHILD_WRITE_FLUSH)
			err = mfs_dev_pwrite(dev, blk, sizeof(blk), 3u << 20);
		if (!err)
			err = mfs_dev_flush(dev);
		if (!err && what == CHILD_OVERLAP)
			err = overlap_start(&c, &d) || overlap_end(&c, &d);
		_exit(err ? 2 : 0);
	}
	status = child_wait(pid, 20);
	ck_assert_msg(status != -1, "the forked child hangs in its flush");
	ck_assert_msg(!WIFSIGNALED(status), "the forked child hung in its flush (killed by "
		      "signal %d)", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
		      "the forked child's write or flush failed");
}

/*
 * A fork while flush B waits for flush A, which its hook holds in flight.  In the child
 * neither thread exists: nothing will end A or wake B, yet the child's own flushes must
 * return, with success — one alone, then two of its own threads overlapping like A and B
 * (they wait and wake on the device's condition variable, where the parent's B still
 * seems to wait).  Back in the parent A and B end normally.
 */
START_TEST(fork_while_flush_waits)
{
	struct flusher a, b;

	ck_assert_int_eq(mfs_dev_open(path, 0, &dev), 0);
	ck_assert_int_eq(overlap_start(&a, &b), 0);
	/* a thread started in the forked child of a multithreaded process can stay stuck
	 * in ASan's own thread start (its locks, held at the fork by another thread) */
	child_flushes(UNDER_ASAN ? CHILD_FLUSH : CHILD_OVERLAP);
	ck_assert_int_eq(overlap_end(&a, &b), 0);
	ck_assert_int_eq(mfs_dev_flush(dev), 0);
}
END_TEST

/* ---- a fork while a write holds the write log ------------------------------------------ */

#define BIG (1u << 20)                   /* the write: 16 fills of a 64 KiB pipe */

static int log_rfd = -1;                 /* the read end of the write log (a FIFO) */
static int drain_armed, drain_go;
static char *drained;                    /* everything read from the log */
static size_t ndrained;
static pid_t writer_tid;

/* This test's fork handler, registered after the device's so that it runs before the
 * device's prepare handler: the log starts to drain, so the write holding it can end. */
static void drain_on_fork(void)
{
	if (__atomic_load_n(&drain_armed, __ATOMIC_ACQUIRE))
		__atomic_store_n(&drain_go, 1, __ATOMIC_RELEASE);
}

static void *drain_main(void *arg)
{
	size_t cap = BIG + 8192;
	double t0 = tu_now();

	(void)arg;
	while (!__atomic_load_n(&drain_go, __ATOMIC_ACQUIRE) && tu_now() - t0 < 30)
		usleep(1000);
	for (;;) {
		ssize_t n;

		if (ndrained == cap)
			return (void *)1;
		n = read(log_rfd, drained + ndrained, cap - ndrained);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return (void *)(intptr_t)(n < 0);
		ndrained += (size_t)n;
	}
}

static void *write_main(void *arg)
{
	static char data[BIG];

	(void)arg;
	memset(data, 0x5a, sizeof(data));
	__atomic_store_n(&writer_tid, (pid_t)syscall(SYS_gettid), __ATOMIC_RELEASE);
	return (void *)(intptr_t)mfs_dev_pwrite(dev, data, sizeof(data), 0);
}

/*
 * With MENDFS_WRITELOG naming a FIFO, a 1 MiB write blocks in its append to the log (the
 * pipe is full), holding the log's lock.  The process forks then; the child writes a block
 * and flushes, which appends to the log too: it must not wait for a lock whose holder did
 * not come along.  The log read back must hold, in order, the parent's whole write record
 * and then the child's write, flush and flushed records, none cut into another.
 */
START_TEST(fork_while_write_logs)
{
	char dir[] = "/tmp/mfs-devlog.XXXXXX", fifo[64];
	static const uint32_t want[] = {
		MFS_DEV_WLOG_WRITE, MFS_DEV_WLOG_WRITE, MFS_DEV_WLOG_FLUSH, MFS_DEV_WLOG_FLUSHED,
	};
	pthread_t writer, drainer;
	size_t off = 0, nrec = 0;
	void *w, *d;
	int q;

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(fifo, sizeof(fifo), "%s/log", dir);
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	log_rfd = open(fifo, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
	ck_assert_int_ge(log_rfd, 0);
	setenv("MENDFS_WRITELOG", fifo, 1);
	q = mfs_log_quiet();
	ck_assert_int_eq(mfs_dev_open(path, 0, &dev), 0);
	mfs_log_set_level(q);
	unsetenv("MENDFS_WRITELOG");
	unlink(fifo);
	rmdir(dir);
	ck_assert_int_eq(fcntl(log_rfd, F_SETFL, 0), 0);   /* reads block now */
	drained = malloc(BIG + 8192);
	ck_assert_ptr_nonnull(drained);
	ndrained = 0;
	drain_go = writer_tid = 0;
	ck_assert_int_eq(pthread_atfork(drain_on_fork, NULL, NULL), 0);
	ck_assert_int_eq(pthread_create(&drainer, NULL, drain_main, NULL), 0);
	ck_assert_int_eq(pthread_create(&writer, NULL, write_main, NULL), 0);
	ck_assert_msg(blocked_in(&writer_tid, SYS_writev) == 0,
		      "the write did not block in its log append within 20 s");

	__atomic_store_n(&drain_armed, 1, __ATOMIC_RELEASE);
	child_flushes(CHILD_WRITE_FLUSH);
	__atomic_store_n(&drain_armed, 0, __ATOMIC_RELEASE);

	ck_assert_int_eq(pthread_join(writer, &w), 0);
	ck_assert_int_eq((int)(intptr_t)w, 0);
	ck_assert_int_eq(mfs_dev_close(dev), 0);           /* the last writer of the log */
	dev = NULL;
	ck_assert_int_eq(pthread_join(drainer, &d), 0);
	ck_assert_ptr_null(d);
	close(log_rfd);
	for (; off < ndrained; nrec++) {
		struct mfs_dev_wlog_rec rec;

		ck_assert_uint_le(off + sizeof(rec), ndrained);
		memcpy(&rec, drained + off, sizeof(rec));
		ck_assert_uint_eq(rec.magic, MFS_DEV_WLOG_MAGIC);
		ck_assert_uint_lt(nrec, sizeof(want) / sizeof(want[0]));
		ck_assert_uint_eq(rec.kind, want[nrec]);
		ck_assert_uint_eq(rec.len, nrec == 0 ? BIG : nrec == 1 ? 4096 : 0);
		off += sizeof(rec) + rec.len;
	}
	ck_assert_uint_eq(off, ndrained);
	ck_assert_uint_eq(nrec, 4);
	free(drained);
}
END_TEST

/* ---- what may be opened as a device -------------------------------------------------------- */

/*
 * A FIFO named as the image is refused (-ENODEV), at once: open(2) of a FIFO waits for a
 * peer (read-only: for a writer), so mendfs_db, mendfs_repair -n or a read-only mount
 * given one waited forever.  Each open runs in a child that must exit within 10 s.
 */
START_TEST(fifo_refused)
{
	static const unsigned flags[] = { MFS_DEV_RDONLY, 0, MFS_DEV_RDONLY | MFS_DEV_EXCL };
	char dir[] = "/tmp/mfs-devfifo.XXXXXX", fifo[64];

	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(fifo, sizeof(fifo), "%s/img", dir);
	ck_assert_int_eq(mkfifo(fifo, 0600), 0);
	for (unsigned i = 0; i < sizeof(flags) / sizeof(flags[0]); i++) {
		int status;
		pid_t pid = fork_child();

		if (pid == 0) {
			struct mfs_dev *d = NULL;
			int err;

			mfs_log_quiet();
			err = mfs_dev_open(fifo, flags[i], &d);
			_exit(err == -ENODEV && !d ? 0 : 2);
		}
		status = child_wait(pid, 10);
		if (status == -1) {
			unlink(fifo);
			rmdir(dir);
			ck_abort_msg("opening a FIFO (flags 0x%x) still waits after 10 s", flags[i]);
		}
		ck_assert_msg(WIFEXITED(status) && WEXITSTATUS(status) == 0,
			      "opening a FIFO (flags 0x%x) did not fail with ENODEV", flags[i]);
	}
	unlink(fifo);
	rmdir(dir);
	/* A character device is refused the same way (it was before too), and the refusal
	 * closes no descriptor of the caller's (the device's number was 0 until opened). */
	{
		int q = mfs_log_quiet();

		if (fcntl(0, F_GETFD) < 0)
			ck_assert_int_eq(open("/dev/null", O_RDONLY), 0);
		ck_assert_int_eq(mfs_dev_open("/dev/null", MFS_DEV_RDONLY, &dev), -ENODEV);
		mfs_log_set_level(q);
		ck_assert_ptr_null(dev);
		ck_assert_msg(fcntl(0, F_GETFD) >= 0, "a refused open closed descriptor 0");
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("dev");
	TCase *tc = tcase_create("fork");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, fork_while_flush_waits);
	tcase_add_test(tc, fork_while_write_logs);
	tcase_add_test(tc, fifo_refused);
	suite_add_tcase(s, tc);
	return tu_run_suite(s);
}
