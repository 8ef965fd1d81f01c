/*
 * inode_init.c — write a fresh on-disk inode (see inode_init.h).
 */
#include "inode_init.h"
#include "byteorder.h"
#include "mendfs_format.h"
#include "verify.h"

#include <string.h>

static void put_time(struct mfs_timestamp *t, const struct timespec *ts)
{
	mfs_put64(t->sec, (uint64_t)(int64_t)ts->tv_sec);
	mfs_put32(t->nsec, (uint32_t)ts->tv_nsec);
	t->pad = 0;
}

void mfs_dinode_init(void *dinode, uint32_t inodesize, uint64_t ino, const uint8_t uuid[16],
		     const struct mfs_inode_init_args *a)
{
	struct mfs_dinode *d = dinode;

	memset(dinode, 0, inodesize);
	mfs_put32(d->magic, MFS_DINODE_MAGIC);
	mfs_put64(d->ino, ino);
	memcpy(d->uuid, uuid, 16);
	if (a && a->mode) {
		mfs_put16(d->mode, a->mode);
		d->dformat = a->dformat;
		d->aformat = MFS_FMT_NONE;
		mfs_put32(d->nlink, a->nlink);
		mfs_put32(d->uid, a->uid);
		mfs_put32(d->gid, a->gid);
		put_time(&d->atime, &a->time);
		put_time(&d->mtime, &a->time);
		put_time(&d->ctime, &a->time);
		put_time(&d->btime, &a->time);
		mfs_put32(d->generation, a->generation);
	}
	mfs_dinode_seal(dinode, inodesize);
}
