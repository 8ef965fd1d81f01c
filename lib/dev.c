/*
 * dev.c — block I/O on an image file or a block device (see dev.h).
 */
#include "mem.h"
#include "dev.h"
#include "fdio.h"
#include "log.h"

#include <blkid.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

struct mfs_dev {
	int fd;
	unsigned flags;
	int blockdev;
	uint64_t size;
	char *path;
};

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
	int err;

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
	dev->fd = open(path, oflags | O_CLOEXEC, 0644);
	if (dev->fd < 0) {
		err = -errno;
		mfs_log(MFS_LOG_ERR, "%s: cannot open: %s", path, strerror(-err));
		goto fail;
	}
	err = dev_probe_size(dev);
	if (err)
		goto fail;
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
	*out = dev;
	return 0;
fail:
	if (dev->fd >= 0)
		close(dev->fd);
	free(dev->path);
	free(dev);
	return err;
}

int mfs_dev_close(struct mfs_dev *dev)
{
	int err = 0;

	if (!dev)
		return 0;
	if (close(dev->fd) < 0)
		err = -errno;
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
	if (dev->flags & MFS_DEV_RDONLY)
		return -EROFS;
	return mfs_pwrite_full(dev->fd, buf, len, off);
}

int mfs_dev_flush(struct mfs_dev *dev)
{
	if (dev->flags & MFS_DEV_RDONLY)
		return 0;
	if (fdatasync(dev->fd) < 0)
		return -errno;
	return 0;
}

uint64_t mfs_dev_size(const struct mfs_dev *dev) { return dev->size; }
int mfs_dev_is_blockdev(const struct mfs_dev *dev) { return dev->blockdev; }
int mfs_dev_fd(const struct mfs_dev *dev) { return dev->fd; }
const char *mfs_dev_path(const struct mfs_dev *dev) { return dev->path; }
int mfs_dev_readonly(const struct mfs_dev *dev) { return !!(dev->flags & MFS_DEV_RDONLY); }

int mfs_dev_set_size(struct mfs_dev *dev, uint64_t bytes)
{
	if (dev->blockdev)
		return -ENOTTY;
	if (ftruncate(dev->fd, (off_t)bytes) < 0)
		return -errno;
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
