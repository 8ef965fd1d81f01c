/*
 * fz_image.c — the pristine image of the fuzz targets (fz.h): 4 AGs of 1 KiB blocks (16
 * MiB, the smallest filesystem), a 64-block journal, formatted through lib/format into a
 * memfd.  Then, opened as the daemon opens it
 * (journal attached), it gets content for the inode checkers: a directory of 48 names (a
 * name btree), a file of 80 one-block extents with holes between them (an extent btree)
 * and a file with 20 attributes, one of them 2000 bytes (an attribute btree and a value
 * block).  Closing checkpoints the journal: the image is clean.
 */
#include "bcache.h"
#include "bmap.h"
#include "byteorder.h"
#include "dev.h"
#include "dir.h"
#include "format.h"
#include "fs.h"
#include "geom.h"
#include "ialloc.h"
#include "inode.h"
#include "trans.h"
#include "xattr.h"

#include "fz.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

/*
 * The fuzz programs' clock stands still: time(2) is this one for everything linked in, so
 * the journal's commit records (which carry time(NULL)) are the same on every run, and so
 * is every byte of the image: an input means the same thing in every run of the fuzzer.
 */
time_t time(time_t *t)
{
	if (t)
		*t = 1700000000;
	return 1700000000;
}

void fz_die(const char *what, int err)
{
	fprintf(stderr, "fuzz: %s: %s\n", what, strerror(err < 0 ? -err : err));
	exit(1);
}

/* ---- content, through the library as the daemon makes it --------------------------------- */

/* Times, owner and generation fixed, so that the image is the same on every run (an input
 * must mean the same thing in every run of the fuzzer). */
static void fix_inode(struct mfs_inode *ip)
{
	struct timespec t = { .tv_sec = 1700000000, .tv_nsec = 0 };

	ip->atime = ip->mtime = ip->ctime = ip->btime = t;
	ip->uid = ip->gid = 0;
	ip->generation = (uint32_t)ip->ino;
}

/* A new inode of `mode` named `name` in directory `dp`; its number in *ino. */
static int mk(struct mfs_fs *fs, struct mfs_inode *dp, const char *name, uint16_t mode,
	      uint64_t *ino)
{
	struct mfs_trans *tp;
	struct mfs_inode *ip;
	int err;

	err = mfs_trans_alloc(fs, &tp);
	if (err)
		return err;
	err = mfs_ialloc(tp, dp->ino, mode, ino);
	if (err == 0)
		err = mfs_iget(fs, *ino, 0, &ip);
	if (err) {
		mfs_trans_cancel(tp);
		return err;
	}
	pthread_rwlock_wrlock(&ip->lock);
	ip->nlink = S_ISDIR(mode) ? 2 : 1;
	if (S_ISDIR(mode)) {
		err = mfs_dir_init(tp, ip, dp->ino);
		dp->nlink++;
	}
	fix_inode(ip);
	if (!err)
		err = mfs_inode_log(tp, ip);
	if (!err)
		err = mfs_dir_add(tp, dp, name, (unsigned)strlen(name), *ino,
				  S_ISDIR(mode) ? DT_DIR : DT_REG);
	fix_inode(dp);
	if (!err)
		err = mfs_inode_log(tp, dp);
	if (err)
		mfs_trans_cancel(tp);
	else
		err = mfs_trans_commit(tp);
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	return err;
}

/* One-block extents at every other block of file `ip` (locked), then its size logged. */
static int give_extents(struct mfs_fs *fs, struct mfs_inode *ip, unsigned n)
{
	struct mfs_trans *tp;
	int err;

	for (unsigned i = 0; i < n; i++) {
		struct mfs_bmap_ext ext;

		err = mfs_trans_alloc(fs, &tp);
		if (err)
			return err;
		err = mfs_bmap_alloc(tp, ip, 2ull * i, 1, 0, &ext);
		if (err) {
			mfs_trans_cancel(tp);
			return err;
		}
		err = mfs_trans_commit(tp);
		if (err)
			return err;
	}
	ip->size = 2ull * n * fs->geo.blocksize;
	fix_inode(ip);
	err = mfs_trans_alloc(fs, &tp);
	if (err)
		return err;
	err = mfs_inode_log(tp, ip);
	if (err) {
		mfs_trans_cancel(tp);
		return err;
	}
	return mfs_trans_commit(tp);
}

static int give_xattrs(struct mfs_fs *fs, struct mfs_inode *ip, unsigned n)
{
	static char big[2000];
	int err = 0;

	memset(big, 'v', sizeof(big));
	for (unsigned i = 0; i <= n && !err; i++) {
		struct mfs_trans *tp;
		char name[32];

		snprintf(name, sizeof(name), "attribute.number.%u", i);
		err = mfs_trans_alloc(fs, &tp);
		if (err)
			return err;
		err = mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, name, (unsigned)strlen(name),
				    big, i == n ? sizeof(big) : 8 + i, 0);
		fix_inode(ip);
		if (!err)
			err = mfs_inode_log(tp, ip);
		if (err)
			mfs_trans_cancel(tp);
		else
			err = mfs_trans_commit(tp);
	}
	return err;
}

static int populate_content(struct mfs_fs *fs)
{
	struct mfs_inode *root, *dp, *ip;
	uint64_t ino;
	char name[32];
	int err;

	err = mfs_iget(fs, fs->geo.rootino, 0, &root);
	if (err)
		return err;
	pthread_rwlock_wrlock(&root->lock);
	err = mk(fs, root, "dir", S_IFDIR | 0755, &ino);
	if (err == 0)
		err = mfs_iget(fs, ino, 0, &dp);
	if (err == 0) {
		pthread_rwlock_wrlock(&dp->lock);
		for (unsigned i = 0; i < 48 && !err; i++) {
			snprintf(name, sizeof(name), "a-file-with-a-long-name-%u", i);
			err = mk(fs, dp, name, S_IFREG | 0644, &ino);
		}
		pthread_rwlock_unlock(&dp->lock);
		mfs_iput(dp);
	}
	if (err == 0)
		err = mk(fs, root, "extents", S_IFREG | 0644, &ino);
	if (err == 0 && (err = mfs_iget(fs, ino, 0, &ip)) == 0) {
		pthread_rwlock_wrlock(&ip->lock);
		err = give_extents(fs, ip, 80);
		pthread_rwlock_unlock(&ip->lock);
		mfs_iput(ip);
	}
	if (err == 0)
		err = mk(fs, root, "xattrs", S_IFREG | 0644, &ino);
	if (err == 0 && (err = mfs_iget(fs, ino, 0, &ip)) == 0) {
		pthread_rwlock_wrlock(&ip->lock);
		err = give_xattrs(fs, ip, 20);
		pthread_rwlock_unlock(&ip->lock);
		mfs_iput(ip);
	}
	pthread_rwlock_unlock(&root->lock);
	mfs_iput(root);
	return err;
}

/* The superblock's summary counters from the AG headers, as the daemon's unmount leaves
 * them (its clean state and time are the format's). */
static int sum_counters(struct mfs_fs *fs)
{
	uint64_t icount = 0, ifree = 0, fdblocks = 0;
	struct mfs_trans *tp;
	struct mfs_buf *bp;
	struct mfs_sb *sb;
	int err;

	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++) {
		const struct mfs_agh *agh;

		err = mfs_read_agh(fs, agno, &bp);
		if (err)
			return err;
		agh = bp->data;
		icount += mfs_get32(agh->icount);
		ifree += mfs_get32(agh->ifree);
		fdblocks += mfs_get32(agh->freeblks);
		mfs_buf_put(bp);
	}
	err = mfs_trans_alloc(fs, &tp);
	if (err)
		return err;
	err = mfs_read_sb(fs, 0, &bp);
	if (err == 0) {
		err = mfs_trans_modify(tp, bp);
		sb = bp->data;
		if (err == 0) {
			mfs_put64(sb->icount, icount);
			mfs_put64(sb->ifree, ifree);
			mfs_put64(sb->fdblocks, fdblocks);
		}
		mfs_buf_put(bp);
	}
	if (err) {
		mfs_trans_cancel(tp);
		return err;
	}
	return mfs_trans_commit(tp);
}

static void add_content(const char *path)
{
	struct mfs_fs *fs;
	int err;

	err = mfs_fs_open(path, MFS_OPEN_JOURNAL, 0, &fs);
	if (err)
		fz_die("open the new image", err);
	err = mfs_icache_init(fs, 0);
	if (err)
		fz_die("inode cache", err);
	err = populate_content(fs);
	if (err == 0)
		err = sum_counters(fs);
	if (err)
		fz_die("content", err);
	err = mfs_icache_destroy(fs);
	if (err)
		fz_die("inode cache", err);
	err = mfs_fs_close(fs);
	if (err)
		fz_die("close the new image", err);
}

/* ---- the image ---------------------------------------------------------------------------- */

int fz_image_make(char path[FZ_PATH_MAX])
{
	struct mfs_format_opts o;
	struct mfs_format_layout L;
	struct mfs_dev *dev;
	int fd, err;

	memset(&o, 0, sizeof(o));
	o.blocksize = FZ_BS;
	o.agsize = (uint64_t)FZ_AGBLOCKS * FZ_BS;
	o.logbytes = (uint64_t)FZ_LOGBLOCKS * FZ_BS;
	o.label = "fuzz";
	for (int i = 0; i < 16; i++)
		o.uuid[i] = (uint8_t)(0x31 + 7 * i);
	o.root_ids = 1;
	o.time = 1700000000;

	fd = memfd_create("mendfs_fuzz", MFD_CLOEXEC);
	if (fd < 0)
		fz_die("memfd_create", errno);
	snprintf(path, FZ_PATH_MAX, "/proc/self/fd/%d", fd);
	err = mfs_format_layout(&o, FZ_BYTES, NULL, &L);
	if (err)
		fz_die("format layout", err);
	err = mfs_dev_open(path, 0, &dev);
	if (err)
		fz_die("open the memfd", err);
	err = mfs_dev_set_size(dev, FZ_BYTES);
	if (err)
		fz_die("size the memfd", err);
	err = mfs_format_write(dev, &o, &L);
	if (err)
		fz_die("format", err);
	add_content(path);
	return fd;
}

