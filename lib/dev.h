/*
 * dev.h — the device under a filesystem: an image file or a block device.
 *
 * Whole-buffer pread/pwrite (short transfers and EINTR are retried), the device size, I/O
 * topology, a durable flush, and the exclusive lock that makes one daemon, mkfs or writing
 * repair per image.
 */
#ifndef MFS_DEV_H
#define MFS_DEV_H

#include <stddef.h>
#include <stdint.h>

struct mfs_dev;

#define MFS_DEV_RDONLY   0x1u   /* open read-only */
#define MFS_DEV_EXCL     0x2u   /* take the exclusive lock (flock LOCK_EX|LOCK_NB) */
#define MFS_DEV_CREATE   0x4u   /* create a regular file if missing */

struct mfs_dev_topology {
	uint32_t logical_sector;     /* bytes */
	uint32_t physical_sector;
	uint32_t min_io;             /* 0: unknown */
	uint32_t opt_io;             /* 0: unknown */
	uint64_t alignment_offset;
};

/* Open `path`.  Returns -EBUSY (with a message) when EXCL is asked and another process holds
 * the lock. */
int mfs_dev_open(const char *path, unsigned flags, struct mfs_dev **out);
int mfs_dev_close(struct mfs_dev *dev);            /* returns the first error of close() */

int mfs_dev_pread(struct mfs_dev *dev, void *buf, size_t len, uint64_t off);
int mfs_dev_pwrite(struct mfs_dev *dev, const void *buf, size_t len, uint64_t off);
/* Make every write done before the call durable on stable storage.  A failure is sticky:
 * every later flush of the device returns the first failure's error (dev.c). */
int mfs_dev_flush(struct mfs_dev *dev);

/* For tests: a function called before each flush's fdatasync(); a negative errno it
 * returns is taken as that flush's result (the device is not flushed), 0 lets the flush
 * happen.  Set it while nobody flushes; NULL removes it. */
void mfs_dev_set_flush_hook(struct mfs_dev *dev, int (*fn)(void *arg), void *arg);

uint64_t mfs_dev_size(const struct mfs_dev *dev);  /* bytes */
int mfs_dev_is_blockdev(const struct mfs_dev *dev);
int mfs_dev_fd(const struct mfs_dev *dev);
const char *mfs_dev_path(const struct mfs_dev *dev);
/* A second, read-only descriptor of the device's file (the same file, not the same path:
 * it may have been renamed since), close-on-exec, with a read-ahead state of its own; only
 * when its number falls in the lower half of RLIMIT_NOFILE, so that such descriptors never
 * take the upper half (the control socket and a repair's scratch files need some).  Returns
 * it, or a negative errno (-EMFILE when it would be in the upper half). */
int mfs_dev_reopen_rdonly(const struct mfs_dev *dev);
int mfs_dev_readonly(const struct mfs_dev *dev);

/* Grow or shrink an image file (not a block device) to `bytes`, sparse. */
int mfs_dev_set_size(struct mfs_dev *dev, uint64_t bytes);

/*
 * The write log of crash-point tests.  With MENDFS_WRITELOG=FILE in the environment, a
 * writable open appends to FILE (O_APPEND) one record per write, flush and resize, in the
 * order the device saw them: a write's record follows the write's completion, a flush's
 * record precedes the fdatasync() (so the writes recorded before it are exactly the ones it
 * was issued after) and a FLUSHED record follows its return.  A write's record is followed by its `len` bytes of data.  Host byte
 * order; tests/tools/replaylog.c rebuilds the image at any point of it.  A failure to append
 * fails the I/O.  Without the variable the I/O paths cost one test.
 */
#define MFS_DEV_WLOG_MAGIC  0x474c574du     /* "MWLG" */
enum {
	MFS_DEV_WLOG_WRITE = 1,
	MFS_DEV_WLOG_FLUSH = 2,         /* a flush issued (recorded before the fdatasync) */
	MFS_DEV_WLOG_RESIZE = 3,
	MFS_DEV_WLOG_FLUSHED = 4,       /* the fdatasync of FLUSH record number `off` returned */
};
struct mfs_dev_wlog_rec {
	uint32_t magic;
	uint32_t kind;          /* MFS_DEV_WLOG_* */
	uint64_t seq;           /* 0, 1, 2... per open */
	uint64_t time_ns;       /* CLOCK_MONOTONIC when recorded */
	uint64_t off;           /* byte offset (write); new size (resize); seq (flushed) */
	uint64_t len;           /* bytes of data after the record (write); else 0 */
};

/* I/O topology from libblkid for a block device; for a file, 512-byte sectors and unknowns. */
int mfs_dev_topology(struct mfs_dev *dev, struct mfs_dev_topology *topo);

#endif
