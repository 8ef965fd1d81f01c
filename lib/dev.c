/*
 * dev.c — block I/O on an image file or a block device (see dev.h), and the write log of
 * crash-point tests (MENDFS_WRITELOG, see dev.h and tests/tools/replaylog.c).
 *
 * fork().  The daemon opens its image and then daemonizes (fork), and a fork leaves the
 * child only the forking thread: a lock of this file held by another thread at that moment
 * would never be let go in the child, a flush in flight never end, a condition variable
 * keep a waiter that does not exist.  So every open device is registered, and around a fork
 * (pthread_atfork, see "fork()" below) each one's locks are taken: the child gets them
 * free, an empty list of flushes in flight and a fresh condition variable.
 */
#include "mem.h"
#include "dev.h"
#include "fdio.h"
#include "log.h"

#include <blkid.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <pthread.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/*
 * The write log.  When the environment names MENDFS_WRITELOG at a writable open, every
 * write, flush and resize of the device is appended to that file as one record (struct
 * mfs_dev_wlog_rec, then the data of a write).  Order is the point of the log: a write is
 * done and recorded under wlog_lock, so the records of writes are in the order the image
 * saw them; a flush is recorded before fdatasync() is called, so every write recorded
 * before a flush record had completed when the flush was issued (that flush makes it
 * durable), and a write recorded after it may or may not be covered by it — the replayer
 * treats it as not.  Its return is recorded too (FLUSHED): from there on the writes before
 * its FLUSH record are on stable storage; before it, a crash may still lose them.  Without the variable wlog_fd is -1 and the I/O paths test only that.
 */
struct mfs_dev {
	int fd;
	unsigned flags;
	int blockdev;
	uint64_t size;
	char *path;
	/* Flushes (mfs_dev_flush): those in flight, and the first failure's errno (sticky;
	 * read without the lock too, atomically). */
	pthread_mutex_t flush_lock;
	pthread_cond_t flush_cv;     /* a flush in flight ended */
	struct dev_flusher *flushing;
	uint64_t flush_seq;          /* flushes begun */
	int flush_err;
	int (*flush_hook)(void *);   /* tests only (mfs_dev_set_flush_hook) */
	void *flush_hook_arg;
	int wlog_fd;                 /* -1: no write log */
	uint64_t wlog_seq;           /* next record's sequence number; under wlog_lock */
	pthread_mutex_t wlog_lock;
	struct mfs_dev *reg_next;    /* the open devices (dev_reg), for fork */
};

/*
 * fork().  The open devices are listed in dev_reg (under dev_reg_lock).  Before a fork the
 * prepare handler takes, for each, flush_lock and then wlog_lock (the order nothing else
 * nests them in: a flush takes them one after the other), so no thread is inside a
 * section they guard when the process is copied: a write record is whole in the log, the
 * flush list consistent.  The parent just lets go.  The child lets go too, after it has
 * emptied the list of flushes in flight (their threads were not copied: nobody will end
 * them, and a flush of the child must not wait for them — they are the parent's to
 * report) and given flush_cv a fresh state (a waiter of the parent's may still be counted
 * in it, and glibc's broadcast waits for such a waiter to leave: the child's next flushes
 * would hang).
 *
 * Order with the journal's fork handlers (journal.c): its prepare waits for its log
 * thread's batch to end, and that batch may be flushing here, so it must run before this
 * file's takes flush_lock.  Prepare handlers run in the reverse order of registration, and
 * this file registers its handlers at the first device open, before any journal (which
 * lives on an open device) registers its own.  This file's prepare waits for no other
 * work than the sections of its locks (a write, a log append, a few pointer updates):
 * never for a flush (fdatasync runs outside the locks).
 */
static pthread_mutex_t dev_reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mfs_dev *dev_reg;
static pthread_once_t dev_atfork_once = PTHREAD_ONCE_INIT;

static void dev_fork_prepare(void)
{
	pthread_mutex_lock(&dev_reg_lock);
	for (struct mfs_dev *dev = dev_reg; dev; dev = dev->reg_next) {
		pthread_mutex_lock(&dev->flush_lock);
		if (dev->wlog_fd >= 0)
			pthread_mutex_lock(&dev->wlog_lock);
	}
}

static void dev_fork_parent(void)
{
	for (struct mfs_dev *dev = dev_reg; dev; dev = dev->reg_next) {
		if (dev->wlog_fd >= 0)
			pthread_mutex_unlock(&dev->wlog_lock);
		pthread_mutex_unlock(&dev->flush_lock);
	}
	pthread_mutex_unlock(&dev_reg_lock);
}

static void dev_fork_child(void)
{
	for (struct mfs_dev *dev = dev_reg; dev; dev = dev->reg_next) {
		dev->flushing = NULL;
		pthread_cond_init(&dev->flush_cv, NULL);
		if (dev->wlog_fd >= 0)
			pthread_mutex_unlock(&dev->wlog_lock);
		pthread_mutex_unlock(&dev->flush_lock);
	}
	pthread_mutex_unlock(&dev_reg_lock);
}

static void dev_atfork_init(void)
{
	pthread_atfork(dev_fork_prepare, dev_fork_parent, dev_fork_child);
}

static void dev_register(struct mfs_dev *dev)
{
	pthread_once(&dev_atfork_once, dev_atfork_init);
	pthread_mutex_lock(&dev_reg_lock);
	dev->reg_next = dev_reg;
	dev_reg = dev;
	pthread_mutex_unlock(&dev_reg_lock);
}

static void dev_unregister(struct mfs_dev *dev)
{
	struct mfs_dev **pp;

	pthread_mutex_lock(&dev_reg_lock);
	for (pp = &dev_reg; *pp && *pp != dev; pp = &(*pp)->reg_next)
		;
	if (*pp)
		*pp = dev->reg_next;
	pthread_mutex_unlock(&dev_reg_lock);
}

static uint64_t wlog_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Append one record (and `len` bytes of data for a write), under wlog_lock.  A failure is
 * returned: a log with a gap would rebuild images that never existed. */
static int wlog_append(struct mfs_dev *dev, uint32_t kind, uint64_t off, uint64_t len,
		       const void *data)
{
	struct mfs_dev_wlog_rec rec = {
		.magic = MFS_DEV_WLOG_MAGIC, .kind = kind, .seq = dev->wlog_seq++,
		.time_ns = wlog_now(), .off = off, .len = len,
	};
	struct iovec iov[2] = {
		{ .iov_base = &rec, .iov_len = sizeof(rec) },
		{ .iov_base = (void *)data, .iov_len = data ? len : 0 },
	};
	int cnt = data ? 2 : 1;

	while (cnt) {
		ssize_t n = writev(dev->wlog_fd, iov, cnt);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			mfs_log(MFS_LOG_ERR, "%s: write log: %s", dev->path,
				n < 0 ? strerror(errno) : "nothing written");
			return n < 0 ? -errno : -EIO;
		}
		/* a short append: go on after what went (O_APPEND, we hold the lock) */
		while (cnt && (size_t)n >= iov[0].iov_len) {
			n -= (ssize_t)iov[0].iov_len;
			iov[0] = iov[1];
			cnt--;
		}
		if (cnt) {
			iov[0].iov_base = (char *)iov[0].iov_base + n;
			iov[0].iov_len -= (size_t)n;
		}
	}
	return 0;
}

static int wlog_open(struct mfs_dev *dev)
{
	const char *path = getenv("MENDFS_WRITELOG");

	dev->wlog_fd = -1;
	if (!path || !*path || (dev->flags & MFS_DEV_RDONLY))
		return 0;
	dev->wlog_fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (dev->wlog_fd < 0) {
		int err = -errno;

		mfs_log(MFS_LOG_ERR, "MENDFS_WRITELOG %s: %s", path, strerror(-err));
		return err;
	}
	pthread_mutex_init(&dev->wlog_lock, NULL);
	mfs_log(MFS_LOG_INFO, "%s: logging every write and flush to %s", dev->path, path);
	return 0;
}

static int dev_probe_size(struct mfs_dev *dev)
{
	struct stat st;

	if (fstat(dev->fd, &st) < 0)
		return -errno;
	if (S_ISBLK(st.st_mode)) {
		uint64_t bytes;

		if (ioctl(dev->fd, BLKGETSIZE64, &bytes) < 0)
			return -errno;
		dev->blockdev = 1;
		dev->size = bytes;
	} else if (S_ISREG(st.st_mode)) {
		dev->size = (uint64_t)st.st_size;
	} else {
		mfs_log(MFS_LOG_ERR, "%s: not a regular file or block device", dev->path);
		return -ENODEV;
	}
	return 0;
}

int mfs_dev_open(const char *path, unsigned flags, struct mfs_dev **out)
{
	struct mfs_dev *dev;
	int oflags = (flags & MFS_DEV_RDONLY) ? O_RDONLY : O_RDWR;
	struct stat st;
	int err, fl;

	*out = NULL;
	if (flags & MFS_DEV_CREATE)
		oflags |= O_CREAT;
	dev = mfs_calloc(1, sizeof(*dev));
	if (!dev)
		return -ENOMEM;
	dev->path = mfs_strdup(path);
	if (!dev->path) {
		free(dev);
		return -ENOMEM;
	}
	dev->flags = flags;
	dev->fd = -1;
	dev->wlog_fd = -1;
	pthread_mutex_init(&dev->flush_lock, NULL);
	pthread_cond_init(&dev->flush_cv, NULL);
	/*
	 * Only a regular file or a block device: anything else is refused before it is
	 * opened (open(2) of a FIFO waits for a peer, forever if none comes; a character
	 * device may act on being opened).  Should the name change meanwhile, the open does
	 * not wait either (O_NONBLOCK, taken off once dev_probe_size has accepted what was
	 * opened).
	 */
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		mfs_log(MFS_LOG_ERR, "%s: not a regular file or block device", path);
		err = -ENODEV;
		goto fail;
	}
	dev->fd = open(path, oflags | O_CLOEXEC | O_NONBLOCK, 0644);
	if (dev->fd < 0) {
		err = -errno;
		mfs_log(MFS_LOG_ERR, "%s: cannot open: %s", path, strerror(-err));
		goto fail;
	}
	err = dev_probe_size(dev);
	if (err)
		goto fail;
	fl = fcntl(dev->fd, F_GETFL);
	if (fl < 0 || fcntl(dev->fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		err = -errno;
		goto fail;
	}
	if (flags & MFS_DEV_EXCL) {
		if (flock(dev->fd, LOCK_EX | LOCK_NB) < 0) {
			err = -errno;
			if (err == -EWOULDBLOCK) {
				err = -EBUSY;
				mfs_log(MFS_LOG_ERR,
					"%s: in use by another mendfs process (mounted, or being "
					"formatted or repaired)", path);
			}
			goto fail;
		}
	}
	err = wlog_open(dev);
	if (err)
		goto fail;
	dev_register(dev);
	*out = dev;
	return 0;
fail:
	if (dev->fd >= 0)
		close(dev->fd);
	pthread_cond_destroy(&dev->flush_cv);
	pthread_mutex_destroy(&dev->flush_lock);
	free(dev->path);
	free(dev);
	return err;
}

int mfs_dev_close(struct mfs_dev *dev)
{
	int err = 0;

	if (!dev)
		return 0;
	dev_unregister(dev);
	if (close(dev->fd) < 0)
		err = -errno;
	if (dev->wlog_fd >= 0) {
		if (close(dev->wlog_fd) < 0 && !err)
			err = -errno;
		pthread_mutex_destroy(&dev->wlog_lock);
	}
	pthread_cond_destroy(&dev->flush_cv);
	pthread_mutex_destroy(&dev->flush_lock);
	free(dev->path);
	free(dev);
	return err;
}

int mfs_dev_pread(struct mfs_dev *dev, void *buf, size_t len, uint64_t off)
{
	size_t done;
	int err = mfs_pread_full(dev->fd, buf, len, off, &done);

	if (err == -ENODATA) {
		/* The image ends before the block does: a block outside the device. */
		memset((char *)buf + done, 0, len - done);
		return -EIO;
	}
	return err;
}

int mfs_dev_pwrite(struct mfs_dev *dev, const void *buf, size_t len, uint64_t off)
{
	int err;

	if (dev->flags & MFS_DEV_RDONLY)
		return -EROFS;
	if (dev->wlog_fd < 0)
		return mfs_pwrite_full(dev->fd, buf, len, off);
	pthread_mutex_lock(&dev->wlog_lock);
	err = mfs_pwrite_full(dev->fd, buf, len, off);
	if (!err)
		err = wlog_append(dev, MFS_DEV_WLOG_WRITE, off, len, buf);
	pthread_mutex_unlock(&dev->wlog_lock);
	return err;
}

/*
 * A failed flush is sticky, for every user of the device.  The host may drop the writes it
 * could not bring to stable storage and report the next fdatasync() as a success (it
 * reports a writeback error once), so after one failed flush nothing written before it may
 * ever be taken as durable: every later flush fails with the first one's error, and so
 * does a flush that overlapped it — its fdatasync() may have returned 0 because the other
 * one was told of the error, so before it reports a success it waits for the flushes that
 * were in flight when it ended (dev->flushing: each on its caller's stack, numbered as
 * they begin; later ones are not waited for, so the wait is as bounded as they are; a
 * fork's child starts with none, see "fork()" above).
 * The journal, the buffer cache and the daemon's fsync without a journal all flush here,
 * so whichever of them saw the failure, the others' next flush reports it.
 */
struct dev_flusher {
	uint64_t seq;
	struct dev_flusher *next;
};

/* Whether a flush begun by flush number `upto` is still in flight (flush_lock held). */
static int flush_overlapped(const struct mfs_dev *dev, uint64_t upto)
{
	for (const struct dev_flusher *f = dev->flushing; f; f = f->next)
		if (f->seq <= upto)
			return 1;
	return 0;
}

int mfs_dev_flush(struct mfs_dev *dev)
{
	struct dev_flusher me, **pp;
	uint64_t issued = 0;
	int err, first;

	if (dev->flags & MFS_DEV_RDONLY)
		return 0;
	err = __atomic_load_n(&dev->flush_err, __ATOMIC_ACQUIRE);
	if (err)
		return err;
	if (dev->wlog_fd >= 0) {
		pthread_mutex_lock(&dev->wlog_lock);
		issued = dev->wlog_seq;
		err = wlog_append(dev, MFS_DEV_WLOG_FLUSH, 0, 0, NULL);
		pthread_mutex_unlock(&dev->wlog_lock);
		if (err)
			return err;
	}
	pthread_mutex_lock(&dev->flush_lock);
	me = (struct dev_flusher){ ++dev->flush_seq, dev->flushing };
	dev->flushing = &me;
	pthread_mutex_unlock(&dev->flush_lock);

	err = dev->flush_hook ? dev->flush_hook(dev->flush_hook_arg) : 0;
	if (!err && fdatasync(dev->fd) < 0)
		err = -errno;

	pthread_mutex_lock(&dev->flush_lock);
	for (pp = &dev->flushing; *pp != &me; pp = &(*pp)->next)
		;
	*pp = me.next;
	first = err && !dev->flush_err;
	if (first)
		__atomic_store_n(&dev->flush_err, err, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&dev->flush_cv);
	if (!err) {
		uint64_t upto = dev->flush_seq;
		struct timespec ts;

		while (!dev->flush_err && flush_overlapped(dev, upto)) {
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 10;
			if (pthread_cond_timedwait(&dev->flush_cv, &dev->flush_lock, &ts) ==
			    ETIMEDOUT)
				mfs_log(MFS_LOG_WARN, "%s: a flush still waits after 10 s for the "
					"flushes that overlapped it", dev->path);
		}
	}
	err = dev->flush_err ? dev->flush_err : err;
	pthread_mutex_unlock(&dev->flush_lock);
	if (first)
		mfs_log(MFS_LOG_ERR, "%s: flushing to stable storage failed: %s; writes "
			"before it may be lost, every later flush fails", dev->path,
			strerror(-err));
	if (!err && dev->wlog_fd >= 0) {
		pthread_mutex_lock(&dev->wlog_lock);
		err = wlog_append(dev, MFS_DEV_WLOG_FLUSHED, issued, 0, NULL);
		pthread_mutex_unlock(&dev->wlog_lock);
	}
	return err;
}

void mfs_dev_set_flush_hook(struct mfs_dev *dev, int (*fn)(void *arg), void *arg)
{
	dev->flush_hook = fn;
	dev->flush_hook_arg = arg;
}

uint64_t mfs_dev_size(const struct mfs_dev *dev) { return dev->size; }
int mfs_dev_is_blockdev(const struct mfs_dev *dev) { return dev->blockdev; }
int mfs_dev_fd(const struct mfs_dev *dev) { return dev->fd; }
const char *mfs_dev_path(const struct mfs_dev *dev) { return dev->path; }
int mfs_dev_readonly(const struct mfs_dev *dev) { return !!(dev->flags & MFS_DEV_RDONLY); }

int mfs_dev_reopen_rdonly(const struct mfs_dev *dev)
{
	char path[64];
	struct rlimit rl;
	int fd;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", dev->fd);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    (rlim_t)fd >= rl.rlim_cur / 2) {
		close(fd);
		return -EMFILE;
	}
	return fd;
}

int mfs_dev_set_size(struct mfs_dev *dev, uint64_t bytes)
{
	if (dev->blockdev)
		return -ENOTTY;
	if (dev->wlog_fd >= 0) {
		int err = 0;

		pthread_mutex_lock(&dev->wlog_lock);
		if (ftruncate(dev->fd, (off_t)bytes) < 0)
			err = -errno;
		else
			err = wlog_append(dev, MFS_DEV_WLOG_RESIZE, bytes, 0, NULL);
		pthread_mutex_unlock(&dev->wlog_lock);
		if (err)
			return err;
	} else if (ftruncate(dev->fd, (off_t)bytes) < 0) {
		return -errno;
	}
	dev->size = bytes;
	return 0;
}

int mfs_dev_topology(struct mfs_dev *dev, struct mfs_dev_topology *topo)
{
	blkid_probe pr;
	blkid_topology tp;

	memset(topo, 0, sizeof(*topo));
	topo->logical_sector = 512;
	topo->physical_sector = 512;
	if (!dev->blockdev)
		return 0;
	pr = blkid_new_probe();
	if (!pr)
		return -ENOMEM;
	if (blkid_probe_set_device(pr, dev->fd, 0, 0) < 0) {
		blkid_free_probe(pr);
		return -EIO;
	}
	tp = blkid_probe_get_topology(pr);
	if (tp) {
		topo->logical_sector = (uint32_t)blkid_topology_get_logical_sector_size(tp);
		topo->physical_sector = (uint32_t)blkid_topology_get_physical_sector_size(tp);
		topo->min_io = (uint32_t)blkid_topology_get_minimum_io_size(tp);
		topo->opt_io = (uint32_t)blkid_topology_get_optimal_io_size(tp);
		topo->alignment_offset = blkid_topology_get_alignment_offset(tp);
		if (!topo->logical_sector)
			topo->logical_sector = 512;
		if (!topo->physical_sector)
			topo->physical_sector = topo->logical_sector;
	}
	blkid_free_probe(pr);
	return 0;
}
