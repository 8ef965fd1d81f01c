/*
 * attr.c — inode attributes: getattr, setattr (mode, owner, times, size) and statfs.
 *
 * Attributes are answered from the in-core inode under its shared lock.  setattr changes
 * them under the exclusive lock in one transaction (a size change first runs the truncate
 * of fileio.c, in its own bounded transactions).  Times follow POSIX: every attribute change
 * sets ctime; UTIME_NOW and explicit nanosecond times come from the kernel as separate
 * flags; chown of a non-directory clears setuid, and setgid when group-executable, and
 * removes its file capability (security.capability).
 */
#include "mendfs_int.h"

#include "ag.h"
#include "bcache.h"
#include "byteorder.h"
#include "log.h"
#include "mendfs_format.h"
#include "trans.h"

#include <errno.h>
#include <string.h>
#include <sys/statvfs.h>
#include <time.h>

void mfsd_now(struct timespec *ts)
{
	clock_gettime(CLOCK_REALTIME, ts);
}

int mfsd_iget(struct mfsd *d, fuse_ino_t nodeid, struct mfs_inode **ipp)
{
	return mfs_iget(d->fs, mfsd_ino(d, nodeid), 0, ipp);
}

void mfsd_fill_stat(const struct mfs_inode *ip, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ip->ino;
	st->st_mode = ip->mode;
	st->st_nlink = ip->nlink;
	st->st_uid = ip->uid;
	st->st_gid = ip->gid;
	st->st_size = (off_t)ip->size;
	st->st_blksize = ip->fs->geo.blocksize;
	st->st_blocks = (blkcnt_t)(ip->nblocks << (ip->fs->geo.blocklog - 9));
	st->st_atim = ip->atime;
	st->st_mtim = ip->mtime;
	st->st_ctim = ip->ctime;
	if (S_ISCHR(ip->mode) || S_ISBLK(ip->mode))
		st->st_rdev = ip->rdev;
}

void mfsd_fill_entry(struct mfsd *d, struct mfs_inode *ip, struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = mfsd_nodeid(d, ip->ino);
	e->generation = ip->generation;
	mfsd_fill_stat(ip, &e->attr);
	e->attr_timeout = d->timeout;
	e->entry_timeout = d->timeout;
}

void mfsd_reply_entry(fuse_req_t req, struct mfs_inode *ip)
{
	struct mfsd *d = mfsd_of(req);
	struct fuse_entry_param e;
	int err;

	pthread_rwlock_rdlock(&ip->lock);
	mfsd_fill_entry(d, ip, &e);
	pthread_rwlock_unlock(&ip->lock);
	err = mfsd_node_lookup(d, ip);
	if (err) {
		mfsd_iput(d, ip);
		mfsd_reply_err(req, err);
		return;
	}
	if (fuse_reply_entry(req, &e) != 0)
		mfsd_node_forget(d, ip->ino, 1);    /* the kernel never got it */
	mfsd_iput(d, ip);
}

void mfsd_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mfsd *d = mfsd_of(req);
	struct mfs_inode *ip;
	struct stat st;
	int err = mfsd_iget(d, ino, &ip);

	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	pthread_rwlock_rdlock(&ip->lock);
	mfsd_fill_stat(ip, &st);
	pthread_rwlock_unlock(&ip->lock);
	mfsd_iput(d, ip);
	fuse_reply_attr(req, &st, d->timeout);
}

int mfsd_kill_suid(struct mfs_inode *ip)
{
	uint16_t mode = ip->mode;

	if (!S_ISREG(mode))
		return 0;
	mode &= (uint16_t)~S_ISUID;
	if (mode & S_IXGRP)
		mode &= (uint16_t)~S_ISGID;
	if (mode == ip->mode)
		return 0;
	ip->mode = mode;
	return 1;
}

/* One transaction for every change but the size. */
static int setattr_meta(struct mfsd *d, fuse_req_t req, struct mfs_inode *ip,
			const struct stat *attr, int to_set)
{
	struct timespec now;
	struct mfs_trans *tp;
	int err;

	mfsd_now(&now);
	err = mfs_trans_alloc(d->fs, &tp);
	if (err)
		return err;
	/* Mode, owner, times, ACLs, a capability removed: logged metadata only, nothing the
	 * device was written with before (no size: a truncate commits its own transactions,
	 * which stay ordered), so no device flush needs to precede the record. */
	mfs_trans_nodata(tp);
	if (to_set & FUSE_SET_ATTR_MODE)
		ip->mode = (uint16_t)((ip->mode & S_IFMT) | (attr->st_mode & 07777));
	if (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)) {
		int changed = 0;

		if ((to_set & FUSE_SET_ATTR_UID) && ip->uid != attr->st_uid) {
			ip->uid = attr->st_uid;
			changed = 1;
		}
		if ((to_set & FUSE_SET_ATTR_GID) && ip->gid != attr->st_gid) {
			ip->gid = attr->st_gid;
			changed = 1;
		}
		/* As notify_change() does: setuid always, setgid when group-executable; an
		 * explicit mode in the same request wins.  The file capability goes too
		 * (below, in this transaction). */
		(void)changed;
		if (!(to_set & FUSE_SET_ATTR_MODE))
			mfsd_kill_suid(ip);
		err = mfsd_kill_caps_in(tp, ip);
		if (err) {
			mfs_trans_cancel(tp);
			mfs_inode_reload(ip);
			return err;
		}
	}
	if (to_set & FUSE_SET_ATTR_ATIME_NOW)
		ip->atime = now;
	else if (to_set & FUSE_SET_ATTR_ATIME)
		ip->atime = attr->st_atim;
	if (to_set & FUSE_SET_ATTR_MTIME_NOW)
		ip->mtime = now;
	else if (to_set & FUSE_SET_ATTR_MTIME)
		ip->mtime = attr->st_mtim;
	if (to_set & FUSE_SET_ATTR_CTIME)
		ip->ctime = attr->st_ctim;
	else
		ip->ctime = now;
	err = (to_set & FUSE_SET_ATTR_MODE) ? mfsd_acl_chmod(tp, ip) : 0;
	if (!err)
		err = mfs_inode_log(tp, ip);
	if (err) {
		mfs_trans_cancel(tp);
		mfs_inode_reload(ip);
		return err;
	}
	err = mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, NULL);
	if (err)
		mfs_inode_reload(ip);
	return err;
}

void mfsd_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		  struct fuse_file_info *fi)
{
	struct mfsd *d = mfsd_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct mfs_inode *ip;
	struct stat st;
	int err;

	if (d->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	err = mfsd_iget(d, ino, &ip);
	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	pthread_rwlock_wrlock(&ip->lock);
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (S_ISDIR(ip->mode))
			err = -EISDIR;
		else if (!S_ISREG(ip->mode))
			err = -EINVAL;
		else if (attr->st_size < 0)
			err = -EINVAL;
		else
			err = mfsd_truncate(d, ip, (uint64_t)attr->st_size, ctx->uid != 0);
	}
	if (!err && (to_set & ~(FUSE_SET_ATTR_SIZE)))
		err = setattr_meta(d, req, ip, attr, to_set);
	if (!err)
		mfsd_fill_stat(ip, &st);
	pthread_rwlock_unlock(&ip->lock);
	mfsd_iput(d, ip);
	if (err)
		mfsd_reply_err(req, err);
	else
		fuse_reply_attr(req, &st, d->timeout);
}

/*
 * One AG's share of statfs: free blocks (with the free list's surplus), inodes, free
 * inodes, read under the AG's space lock (mfs_ag_publish_counts).  An online rebuild holds
 * that lock for long (fs.h): statfs then gives the counts the rebuild published when it
 * took the lock instead of waiting — they do not change meanwhile (allocations and frees
 * there wait for the rebuild), but for the rebuild's own trees' blocks.  Only when the AG
 * was never seen (mfsd_statfs_prime sees them all at mount) does it wait.  The three counts
 * are each read whole, not as one snapshot: a statfs racing the rebuild's start may mix
 * two readings a moment apart.
 */
static int ag_statfs(struct mfs_fs *fs, uint32_t agno, uint64_t *freeblks, uint64_t *icount,
		     uint64_t *ifree)
{
	struct mfs_perag *pag = &fs->ag[agno];
	struct mfs_buf *bp;
	int err = mfs_ag_lock_watch(fs, agno, MFS_AGL_SPACE);

	if (err == -EBUSY && __atomic_load_n(&pag->sf_valid, __ATOMIC_ACQUIRE))
		goto view;
	if (err == -EBUSY)
		mfs_ag_lock(fs, agno, MFS_AGL_SPACE);     /* never seen: wait after all */
	else if (err)
		return err;
	err = mfs_read_agh(fs, agno, &bp);
	if (!err) {
		mfs_ag_publish_counts(fs, agno, bp->data);
		mfs_buf_put(bp);
	}
	mfs_ag_unlock(fs, agno, MFS_AGL_SPACE);
	if (err)
		return err;
view:
	*freeblks += __atomic_load_n(&pag->sf_free, __ATOMIC_RELAXED);
	*icount += __atomic_load_n(&pag->sf_icount, __ATOMIC_RELAXED);
	*ifree += __atomic_load_n(&pag->sf_ifree, __ATOMIC_RELAXED);
	return 0;
}

void mfsd_statfs_prime(struct mfs_fs *fs)
{
	uint64_t f = 0, ic = 0, ifr = 0;

	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++)
		(void)ag_statfs(fs, agno, &f, &ic, &ifr);
}

void mfsd_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct mfsd *d = mfsd_of(req);
	struct mfs_fs *fs = d->fs;
	uint64_t freeblks = 0, icount = 0, ifree = 0, inode_room;
	struct statvfs sv;

	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++) {
		int err = ag_statfs(fs, agno, &freeblks, &icount, &ifree);

		if (err) {
			mfsd_reply_err(req, err);
			return;
		}
	}
	memset(&sv, 0, sizeof(sv));
	sv.f_bsize = fs->geo.blocksize;
	sv.f_frsize = fs->geo.blocksize;
	sv.f_blocks = fs->geo.dblocks;
	sv.f_bfree = freeblks;
	sv.f_bavail = freeblks;
	/* Inodes: those in allocated chunks plus as many as the free space could hold. */
	inode_room = freeblks << fs->geo.inopblog;
	sv.f_files = icount + inode_room;
	sv.f_ffree = ifree + inode_room;
	sv.f_favail = sv.f_ffree;
	sv.f_namemax = MFS_NAME_MAX;
	fuse_reply_statfs(req, &sv);
}
