/*
 * atime.c — access times.  The kernel does not keep them for a FUSE filesystem: it tells
 * us nothing but the read or readdir itself, so the daemon updates the access time after
 * serving one, by the mount's policy:
 *
 *   relatime (default)  when the access time is not newer than the modification or change
 *                       time, or is at least a day old — enough for "has it been read
 *                       since it changed" (mail readers, tmp cleaners) at a tiny fraction
 *                       of the writes;
 *   strictatime         on every read and readdir;
 *   noatime             never (nor for inodes flagged MFS_DIFLAG_NOATIME, nor read-only).
 *
 * The update is its own asynchronous transaction (durable with the next force, like every
 * metadata change short of fsync; it orders no data: mfs_trans_nodata), taken after the
 * read released the inode's shared lock:
 * readers never wait for the journal, and an update that fails only costs the time stamp.
 * The kernel forgets its cached access time after each read or readdir (unless the mount is
 * noatime) and asks again, so stat(2) sees the new value.
 */
#include "mendfs_int.h"

#include "log.h"
#include "mendfs_format.h"
#include "trans.h"

#include <string.h>

#define RELATIME_SECS (24 * 60 * 60)

static int ts_le(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec <= b->tv_nsec);
}

/* Whether `ip` (locked, shared or exclusive) should get access time `now`. */
static int atime_due(const struct mfsd *d, const struct mfs_inode *ip,
		     const struct timespec *now)
{
	if (ip->mode == 0 || (ip->flags & MFS_DIFLAG_NOATIME))
		return 0;
	if (ip->atime.tv_sec == now->tv_sec && ip->atime.tv_nsec == now->tv_nsec)
		return 0;
	if (d->atime_mode == MFSD_ATIME_STRICT)
		return 1;
	return ts_le(&ip->atime, &ip->mtime) || ts_le(&ip->atime, &ip->ctime) ||
	       now->tv_sec - ip->atime.tv_sec >= RELATIME_SECS || now->tv_sec < ip->atime.tv_sec;
}

int mfsd_atime_due(struct mfsd *d, struct mfs_inode *ip)
{
	struct timespec now;
	int due;

	if (d->ro || d->atime_mode == MFSD_ATIME_NOATIME)
		return 0;
	mfsd_now(&now);
	pthread_rwlock_rdlock(&ip->lock);
	due = atime_due(d, ip, &now);
	pthread_rwlock_unlock(&ip->lock);
	return due;
}

void mfsd_touch_atime(struct mfsd *d, struct mfs_inode *ip)
{
	struct timespec now;
	struct mfs_trans *tp;
	int due, err;

	if (d->ro || d->atime_mode == MFSD_ATIME_NOATIME)
		return;
	mfsd_now(&now);
	pthread_rwlock_rdlock(&ip->lock);
	due = atime_due(d, ip, &now);
	pthread_rwlock_unlock(&ip->lock);
	if (!due)
		return;
	pthread_rwlock_wrlock(&ip->lock);
	if (!atime_due(d, ip, &now)) {
		pthread_rwlock_unlock(&ip->lock);
		return;
	}
	ip->atime = now;
	err = mfs_trans_alloc(d->fs, &tp);
	if (!err) {
		/* A time only: the record makes nothing reachable that was written on the device
		 * before it, so a batch of such records needs no device flush ahead of it. */
		mfs_trans_nodata(tp);
		err = mfs_inode_log(tp, ip);
		err = mfsd_trans_end(tp, err);
	}
	if (err) {
		mfs_inode_reload(ip);
		mfs_log(MFS_LOG_WARN, "inode %llu: updating the access time failed: %s",
			(unsigned long long)ip->ino, strerror(mfsd_errno(err)));
	}
	pthread_rwlock_unlock(&ip->lock);
}
