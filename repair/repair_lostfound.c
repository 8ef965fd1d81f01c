/*
 * repair_lostfound.c — /lost+found: where the repairs put an inode that has no name left
 * (link counts: an inode in use that no directory names; directories: an entry a rebuild
 * could not keep), found or made, and the one transaction that links an inode into it.
 *
 * /lost+found is an ordinary directory named "lost+found" in the root, mode 0700, owned by
 * root; it is made on first use.  An inode is linked under "#<ino>" ("#<ino>.<n>" when that
 * name is taken).  A directory linked there gets ".." = /lost+found, which gains a link.
 *
 * Locks: the caller holds none (online it holds the namespace quiesce, so no name changes
 * meanwhile).  Inode locks are taken in increasing inode number, each transaction locks
 * the AGs it changes in increasing order before changing anything, and a lock-order
 * conflict (-EDEADLK, from the allocator or an AG) is cancelled and retried a few times,
 * each after waiting, holding no AG lock, for the lock that was busy.
 * Waiting for the second inode's lock with the first held is safe because of the quiesce:
 * the one daemon path that waits for inode locks out of that order, a rename's walk up
 * ".." (fs/namei.c is_under), is a namespace change, held back; the rebuilds only try such
 * locks (repair_dir.c parent_holds).
 */
#include "repair_priv.h"

#include "dir.h"
#include "fs.h"
#include "geom.h"
#include "ialloc.h"
#include "inode.h"
#include "log.h"
#include "scrub_priv.h"
#include "trans.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define LF_NAME     "lost+found"
#define LF_MODE     (S_IFDIR | 0700)
#define LF_TRIES    8u          /* lock-order conflicts retried */
#define LF_SUFFIXES 100u        /* "#<ino>.1" ... before giving up on a free name */

static struct timespec lf_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts;
}

static int retryable(int err)
{
	return err == -EDEADLK || err == -EAGAIN;
}

/* Make /lost+found in the root (root locked exclusive by the caller, no such entry). */
static int lf_make(struct rep *r, struct mfs_inode *root, uint64_t *lf_ino)
{
	struct mfs_fs *fs = r->fs;
	int err = 0;

	for (unsigned tries = 0; tries < LF_TRIES; tries++) {
		struct mfs_inode *lf = NULL;
		struct mfs_trans *tp;
		struct timespec now = lf_now();
		uint64_t ino = 0;

		err = mfs_trans_alloc(fs, &tp);
		if (err)
			break;
		err = mfs_trans_lock_ag(tp, mfs_ino_to_agno(&fs->geo, root->ino), 0);
		if (!err)
			err = mfs_ialloc(tp, root->ino, LF_MODE, &ino);
		/* The new inode is locked while its AG is: never wait (see namei's make). */
		if (!err)
			err = mfs_iget(fs, ino, MFS_IGET_NOWAIT, &lf);
		if (!err && pthread_rwlock_trywrlock(&lf->lock)) {
			mfs_iput(lf);
			lf = NULL;
			err = -EDEADLK;
		}
		if (!err) {
			lf->mode = LF_MODE;
			lf->uid = lf->gid = 0;
			lf->nlink = 2;
			lf->atime = lf->mtime = lf->ctime = lf->btime = now;
			err = mfs_dir_init(tp, lf, root->ino);
		}
		if (!err)
			err = mfs_inode_log(tp, lf);
		if (!err)
			err = mfs_dir_add(tp, root, LF_NAME, sizeof(LF_NAME) - 1, ino, DT_DIR);
		if (!err) {
			root->nlink++;
			root->mtime = root->ctime = now;
			err = mfs_inode_log(tp, root);
		}
		if (!err) {
			err = mfs_trans_commit(tp);
			tp = NULL;
		}
		if (tp)
			mfs_trans_cancel(tp);
		if (err) {
			mfs_inode_reload(root);
			if (ino)
				mfs_inode_invalidate(fs, ino);
		}
		if (lf) {
			pthread_rwlock_unlock(&lf->lock);
			mfs_iput(lf);
		}
		if (!err) {
			rep_changed(r, root->ino);
			*lf_ino = ino;
			mfs_log(MFS_LOG_INFO, "repair: made /lost+found (inode %llu)",
				(unsigned long long)ino);
			return 0;
		}
		if (!retryable(err))
			break;
		mfs_trans_wait_busy();     /* the busy AG lock, holding none (trans.h) */
	}
	return rep_fail(r, err, "making /lost+found: %s", scrub_errstr(err));
}

/* The inode number of /lost+found, made if the root has no such entry. */
static int lf_find(struct rep *r, uint64_t *lf_ino)
{
	struct mfs_fs *fs = r->fs;
	struct mfs_inode *root;
	int err;

	err = mfs_iget(fs, fs->geo.rootino, 0, &root);
	if (err)
		return rep_fail(r, mfs_is_corruption(err) || err == -ENOENT ? -EFSCORRUPTED : err,
				"the root directory %llu cannot be read: %s",
				(unsigned long long)fs->geo.rootino, scrub_errstr(err));
	pthread_rwlock_wrlock(&root->lock);
	if (!S_ISDIR(root->mode))
		err = rep_fail(r, -EFSCORRUPTED, "the root inode %llu is not a directory (mode "
			       "0%o)", (unsigned long long)root->ino, (unsigned)root->mode);
	else
		err = mfs_dir_lookup(root, LF_NAME, sizeof(LF_NAME) - 1, lf_ino, NULL);
	if (err == -ENOENT)
		err = lf_make(r, root, lf_ino);
	else if (err && !r->rc->reason[0])
		err = rep_fail(r, err, "looking up /lost+found: %s", scrub_errstr(err));
	pthread_rwlock_unlock(&root->lock);
	mfs_iput(root);
	return err;
}

/* Add the entry, with the first free name of "#<ino>", "#<ino>.1"... */
static int lf_add(struct mfs_trans *tp, struct mfs_inode *lf, struct mfs_inode *ip)
{
	char name[48];
	int err = -EEXIST;

	for (unsigned n = 0; n < LF_SUFFIXES && err == -EEXIST; n++) {
		int len = n ? snprintf(name, sizeof(name), "#%llu.%u", (unsigned long long)ip->ino,
				       n) :
			      snprintf(name, sizeof(name), "#%llu", (unsigned long long)ip->ino);

		err = mfs_dir_add(tp, lf, name, (unsigned)len, ip->ino,
				  (uint8_t)IFTODT(ip->mode));
	}
	return err;
}

/* One try of the link transaction (both inodes locked exclusive). */
static int lf_link_once(struct rep *r, struct mfs_inode *lf, struct mfs_inode *ip,
			uint32_t nlink)
{
	const struct mfs_geom *g = &r->fs->geo;
	uint32_t a1 = mfs_ino_to_agno(g, lf->ino), a2 = mfs_ino_to_agno(g, ip->ino);
	struct timespec now = lf_now();
	struct mfs_trans *tp;
	int err;

	err = mfs_trans_alloc(r->fs, &tp);
	if (err)
		return err;
	err = mfs_trans_lock_ag(tp, a1 < a2 ? a1 : a2, 0);
	if (!err)
		err = mfs_trans_lock_ag(tp, a1 < a2 ? a2 : a1, 0);
	if (!err)
		err = lf_add(tp, lf, ip);
	if (!err && S_ISDIR(ip->mode)) {
		err = mfs_dir_set_parent(tp, ip, lf->ino);
		lf->nlink++;
	}
	if (!err) {
		if (nlink)
			ip->nlink = nlink;
		ip->ctime = now;
		lf->mtime = lf->ctime = now;
		err = mfs_inode_log(tp, ip);
	}
	if (!err)
		err = mfs_inode_log(tp, lf);
	if (!err)
		return mfs_trans_commit(tp);      /* cancelled exactly on failure */
	mfs_trans_cancel(tp);
	return err;
}

int rep_lostfound_link(struct rep *r, uint64_t ino, uint32_t nlink)
{
	struct mfs_fs *fs = r->fs;
	struct mfs_inode *lf = NULL, *ip = NULL;
	uint64_t lf_ino;
	int err;

	if (ino == fs->geo.rootino)
		return rep_fail(r, -EINVAL, "the root directory cannot go into /lost+found");
	err = lf_find(r, &lf_ino);
	if (err)
		return err;
	if (ino == lf_ino)
		return rep_fail(r, -EINVAL, "inode %llu is /lost+found itself",
				(unsigned long long)ino);
	err = mfs_iget(fs, lf_ino, 0, &lf);
	if (!err && !S_ISDIR(lf->mode))
		err = -ENOTDIR;
	if (err) {
		if (lf)
			mfs_iput(lf);
		return rep_fail(r, err == -ENOMEM || err == -EIO ? err : -EFSCORRUPTED,
				"/lost+found (inode %llu) is not a usable directory: %s",
				(unsigned long long)lf_ino, scrub_errstr(err));
	}
	err = mfs_iget(fs, ino, 0, &ip);
	if (err) {
		mfs_iput(lf);
		return rep_fail(r, err, "inode %llu cannot be linked into /lost+found: %s",
				(unsigned long long)ino, scrub_errstr(err));
	}
	if (lf->ino < ip->ino) {
		pthread_rwlock_wrlock(&lf->lock);
		pthread_rwlock_wrlock(&ip->lock);
	} else {
		pthread_rwlock_wrlock(&ip->lock);
		pthread_rwlock_wrlock(&lf->lock);
	}
	for (unsigned tries = 0; tries < LF_TRIES; tries++) {
		if (!ip->mode || !S_ISDIR(lf->mode)) {
			err = -ENOENT;      /* freed (or /lost+found gone) while we waited */
			break;
		}
		err = lf_link_once(r, lf, ip, nlink);
		if (!err)
			break;
		mfs_inode_reload(lf);
		mfs_inode_reload(ip);
		if (!retryable(err))
			break;
		mfs_trans_wait_busy();     /* the busy AG lock, holding none (trans.h) */
	}
	pthread_rwlock_unlock(&ip->lock);
	pthread_rwlock_unlock(&lf->lock);
	mfs_iput(ip);
	mfs_iput(lf);
	if (err)
		return rep_fail(r, err, "linking inode %llu into /lost+found: %s",
				(unsigned long long)ino, scrub_errstr(err));
	rep_changed(r, ino);
	rep_changed(r, lf_ino);
	mfs_log(MFS_LOG_INFO, "repair: inode %llu linked into /lost+found",
		(unsigned long long)ino);
	return 0;
}
