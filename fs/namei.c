/*
 * namei.c — the namespace: lookup, creating inodes (files, directories, devices, fifos,
 * sockets, symlinks), link, unlink, rmdir, rename, readdir and readlink.
 *
 * Every change is one transaction: the new or changed entries (lib/dir), the link counts
 * and times of every inode involved, and — for a new inode — its allocation.  Inodes are
 * locked exclusive in increasing inode number; because a child's number may be lower than
 * its directory's, a name is first looked up under the directory's shared lock, then every
 * inode involved is locked in order and the lookups are checked again (a concurrent change
 * restarts the request).  The AGs of every inode a transaction logs are locked up front in
 * increasing order; an allocation that would break the order returns -EDEADLK and the
 * transaction is retried.
 *
 * Link counts: a directory has 2 + its subdirectories; anything else one per name.
 */
#include "mem.h"
#include "mendfs_int.h"

#include "dir.h"
#include "ialloc.h"
#include "log.h"
#include "mendfs_format.h"
#include "trans.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_name(const char *name, unsigned *len)
{
	size_t l = strlen(name);

	if (l > MFS_NAME_MAX)
		return -ENAMETOOLONG;
	if (l == 0)
		return -ENOENT;
	*len = (unsigned)l;
	return 0;
}

/* ---- locking several inodes ------------------------------------------------------------ */

struct lockset {
	struct mfs_inode *ip[4];
	unsigned n;
};

static void ls_add(struct lockset *ls, struct mfs_inode *ip)
{
	if (!ip)
		return;
	for (unsigned i = 0; i < ls->n; i++)
		if (ls->ip[i] == ip)
			return;
	ls->ip[ls->n++] = ip;
}

/* Exclusive, in increasing inode number. */
static void ls_lock(struct lockset *ls)
{
	for (unsigned i = 1; i < ls->n; i++)
		for (unsigned j = i; j > 0 && ls->ip[j - 1]->ino > ls->ip[j]->ino; j--) {
			struct mfs_inode *t = ls->ip[j];

			ls->ip[j] = ls->ip[j - 1];
			ls->ip[j - 1] = t;
		}
	for (unsigned i = 0; i < ls->n; i++)
		pthread_rwlock_wrlock(&ls->ip[i]->lock);
}

static void ls_unlock(struct lockset *ls)
{
	for (unsigned i = ls->n; i-- > 0;)
		pthread_rwlock_unlock(&ls->ip[i]->lock);
}

/* Lock the AGs of the set's inodes in `tp`, in increasing order. */
static int ls_lock_ags(struct lockset *ls, struct mfs_trans *tp)
{
	const struct mfs_geom *g = &ls->ip[0]->fs->geo;
	uint32_t ags[4];
	unsigned n = 0;

	for (unsigned i = 0; i < ls->n; i++) {
		uint32_t a = mfs_ino_to_agno(g, ls->ip[i]->ino);
		unsigned j = n;

		while (j > 0 && ags[j - 1] > a) {
			ags[j] = ags[j - 1];
			j--;
		}
		ags[j] = a;
		n++;
	}
	for (unsigned i = 0; i < n; i++) {
		int err = mfs_trans_lock_agl_ordered(tp, ags[i], MFS_AGL_ALL);

		if (err)
			return err;
	}
	return 0;
}

/* Log every inode of the set in tp. */
static int ls_log(struct lockset *ls, struct mfs_trans *tp)
{
	for (unsigned i = 0; i < ls->n; i++) {
		int err = mfs_inode_log(tp, ls->ip[i]);

		if (err)
			return err;
	}
	return 0;
}

static void ls_reload(struct lockset *ls)
{
	for (unsigned i = 0; i < ls->n; i++)
		mfs_inode_reload(ls->ip[i]);
}

/* A directory this mount removed (rmdir, rename over it): its names are gone.  One read
 * with a link count of 0 that was not removed here is damaged, and still read as it is. */
static int dir_removed(const struct mfs_inode *dp)
{
	return dp->nlink == 0 && dp->unlinked_here;
}

/* Look `name` up in dp under its shared lock. */
static int lookup_shared(struct mfs_inode *dp, const char *name, unsigned len, uint64_t *ino)
{
	int err;

	pthread_rwlock_rdlock(&dp->lock);
	if (!S_ISDIR(dp->mode))
		err = -ENOTDIR;
	else if (dir_removed(dp))
		err = -ENOENT;
	else
		err = mfs_dir_lookup(dp, name, len, ino, NULL);
	pthread_rwlock_unlock(&dp->lock);
	return err;
}

/*
 * ip was found through `name` in dp: a link count of 0 that this mount did not set
 * (ip->unlinked_here, fs/node.c) is damage — the daemon will not free such an inode, and a
 * scrub must count its links.  Reported (marking the filesystem as needing a scrub) only
 * when, under dp's lock, the name still leads to ip, and ip is still so afterwards: an
 * unlink racing with the caller either removed the name first or set the flag.  The
 * inode is served all the same, so its data can be read.
 */
static void check_named_nlink(struct mfs_inode *dp, const char *name, unsigned len,
			      struct mfs_inode *ip)
{
	uint64_t ino;
	int bad;

	pthread_rwlock_rdlock(&ip->lock);
	bad = ip->nlink == 0 && ip->mode != 0 && !ip->unlinked_here;
	pthread_rwlock_unlock(&ip->lock);
	if (!bad || lookup_shared(dp, name, len, &ino) != 0 || ino != ip->ino)
		return;
	pthread_rwlock_rdlock(&ip->lock);
	bad = ip->nlink == 0 && ip->mode != 0 && !ip->unlinked_here;
	pthread_rwlock_unlock(&ip->lock);
	if (!bad)
		return;
	MFS_CORRUPT("inode %llu: link count 0, but directory %llu names it '%.*s'; it is not "
		    "freed (a scrub must count its links)", (unsigned long long)ip->ino,
		    (unsigned long long)dp->ino, (int)len, name);
	mfsd_note_corruption();
}

static uint8_t ftype_of(uint16_t mode)
{
	return (uint8_t)IFTODT(mode);
}

/* ---- lookup ---------------------------------------------------------------------------- */

void mfsd_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct mfsd *d = mfsd_of(req);
	struct mfs_inode *dp, *ip;
	uint64_t ino;
	unsigned len;
	int err = check_name(name, &len);

	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	err = mfsd_iget(d, parent, &dp);
	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	err = lookup_shared(dp, name, len, &ino);
	if (err == -ENOENT) {
		/* A negative entry: only this daemon changes the image, so it may be cached. */
		struct fuse_entry_param e;

		mfsd_iput(d, dp);
		memset(&e, 0, sizeof(e));
		e.entry_timeout = d->timeout;
		fuse_reply_entry(req, &e);
		return;
	}
	if (!err)
		err = mfs_iget(d->fs, ino, 0, &ip);
	if (!err)
		check_named_nlink(dp, name, len, ip);
	mfsd_iput(d, dp);
	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	mfsd_reply_entry(req, ip);
}

/* ---- making inodes ---------------------------------------------------------------------- */

/*
 * Create `name` in directory `parent`: a new inode of `mode` (rdev for devices, `target`
 * for symlinks), all in one transaction.  *out gets a referenced inode.
 */
static int do_make_node(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
			dev_t rdev, const char *target, struct mfs_inode **out)
{
	struct mfsd *d = mfsd_of(req);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct mfs_fs *fs = d->fs;
	struct mfs_inode *dp, *ip = NULL;
	struct timespec now;
	unsigned len, tries = 0;
	size_t tlen = target ? strlen(target) : 0;
	uint64_t ino;
	int err;

	if (d->ro)
		return -EROFS;
	err = check_name(name, &len);
	if (err)
		return err;
	if (target && (tlen == 0 || tlen >= 4096))
		return tlen ? -ENAMETOOLONG : -ENOENT;
	err = mfsd_iget(d, parent, &dp);
	if (err)
		return err;
	pthread_rwlock_wrlock(&dp->lock);
	if (!S_ISDIR(dp->mode)) {
		err = -ENOTDIR;
		goto out_unlock;
	}
	if (dp->nlink == 0) {
		err = -ENOENT;
		goto out_unlock;
	}
	if (S_ISDIR(mode) && dp->nlink >= MFS_LINK_MAX) {
		err = -EMLINK;
		goto out_unlock;
	}
	err = mfs_dir_lookup(dp, name, len, &ino, NULL);
	if (err != -ENOENT) {
		if (!err)
			err = -EEXIST;
		goto out_unlock;
	}
again:
	mfsd_now(&now);
	{
		struct mfs_trans *tp;

		err = mfs_trans_alloc(fs, &tp);
		if (err)
			goto out_unlock;
		/* The directory's inode lock first (its entry and inode); the new inode's AG
		 * is ialloc's to lock, both locks: the directory's AG when it can be had, else
		 * another (a rebuild holding its space lock: lib/fs.h), so that a create does
		 * not wait for a rebuild holding the directory locked. */
		err = mfs_trans_lock_agl(tp, mfs_ino_to_agno(&fs->geo, dp->ino), MFS_AGL_INODES,
					 0);
		if (!err)
			err = mfs_ialloc(tp, dp->ino, (uint16_t)mode, &ino);
		/* The new inode is locked while its AG is: never wait for it (a reader that
		 * took the old in-core copy before it was freed, e.g. a scrub, may hold it and
		 * want this AG next): -EDEADLK, cancel and retry. */
		if (!err)
			err = mfs_iget(fs, ino, MFS_IGET_NOWAIT, &ip);
		if (!err && pthread_rwlock_trywrlock(&ip->lock)) {
			mfs_iput(ip);
			ip = NULL;
			err = -EDEADLK;
		}
		if (err) {
			mfs_trans_cancel(tp);
			goto retry;
		}
		ip->uid = ctx->uid;
		ip->gid = ctx->gid;
		if (dp->mode & S_ISGID) {
			ip->gid = dp->gid;
			if (S_ISDIR(mode))
				mode |= S_ISGID;
		}
		ip->mode = (uint16_t)mode;
		ip->nlink = S_ISDIR(mode) ? 2 : 1;
		ip->atime = ip->mtime = ip->ctime = ip->btime = now;
		if (S_ISCHR(mode) || S_ISBLK(mode))
			ip->rdev = (uint32_t)rdev;
		if (S_ISDIR(mode)) {
			err = mfs_dir_init(tp, ip, dp->ino);
			if (!err)
				dp->nlink++;
		} else if (target && tlen <= ip->litsize) {
			ip->dformat = MFS_FMT_LOCAL;
			memcpy(ip->lit, target, tlen);
			ip->size = tlen;
		} else if (target) {
			ip->dformat = MFS_FMT_EXTENTS;
			ip->dnext = 0;
			memset(ip->lit, 0, ip->litsize);
			err = mfsd_write_new(tp, ip, target, tlen);
		}
		if (!err)
			err = mfsd_acl_inherit(tp, dp, ip, ctx->umask);
		if (!err)
			err = mfs_inode_log(tp, ip);
		if (!err)
			err = mfs_dir_add(tp, dp, name, len, ino, ftype_of((uint16_t)mode));
		if (!err) {
			dp->mtime = dp->ctime = now;
			err = mfs_inode_log(tp, dp);
		}
		/* A name and an inode: nothing written on the device before the commit becomes
		 * reachable, unless a symlink target too long for the inode was (file data). */
		if (!err && (!target || tlen <= ip->litsize))
			mfs_trans_nodata(tp);
		if (!err) {
			err = mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, NULL);
			if (err) {
				mfs_inode_reload(dp);
				mfs_inode_invalidate(fs, ino);
				pthread_rwlock_unlock(&ip->lock);
				mfs_iput(ip);
				goto out_unlock;
			}
			pthread_rwlock_unlock(&ip->lock);
			*out = ip;
			goto out_unlock;
		}
		mfs_trans_cancel(tp);
		mfs_inode_invalidate(fs, ino);
		pthread_rwlock_unlock(&ip->lock);
		mfs_iput(ip);
		ip = NULL;
	}
retry:
	mfs_inode_reload(dp);
	if (mfsd_should_retry(err, &tries))
		goto again;
out_unlock:
	pthread_rwlock_unlock(&dp->lock);
	mfsd_iput(d, dp);
	return err;
}

/* Namespace changes run under mfsd_ns_begin/end (a link-count check can hold them back). */
static int make_node(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     dev_t rdev, const char *target, struct mfs_inode **out)
{
	struct mfsd *d = mfsd_of(req);
	int err = mfsd_ns_begin(d);

	if (!err) {
		err = do_make_node(req, parent, name, mode, rdev, target, out);
		mfsd_ns_end(d);
	}
	return err;
}

void mfsd_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	struct mfs_inode *ip;
	int err;

	switch (mode & S_IFMT) {
	case S_IFREG: case S_IFCHR: case S_IFBLK: case S_IFIFO: case S_IFSOCK:
		break;
	default:
		fuse_reply_err(req, EINVAL);
		return;
	}
	err = make_node(req, parent, name, mode, rdev, NULL, &ip);
	if (err)
		mfsd_reply_err(req, err);
	else
		mfsd_reply_entry(req, ip);
}

void mfsd_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct mfs_inode *ip;
	int err = make_node(req, parent, name, S_IFDIR | (mode & 07777), 0, NULL, &ip);

	if (err)
		mfsd_reply_err(req, err);
	else
		mfsd_reply_entry(req, ip);
}

void mfsd_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct mfs_inode *ip;
	int err = make_node(req, parent, name, S_IFLNK | 0777, 0, link, &ip);

	if (err)
		mfsd_reply_err(req, err);
	else
		mfsd_reply_entry(req, ip);
}

void mfsd_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		 struct fuse_file_info *fi)
{
	struct mfsd *d = mfsd_of(req);
	struct fuse_entry_param e;
	struct mfs_inode *ip;
	int err = make_node(req, parent, name, S_IFREG | (mode & 07777), 0, NULL, &ip);

	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	pthread_rwlock_rdlock(&ip->lock);
	mfsd_fill_entry(d, ip, &e);
	pthread_rwlock_unlock(&ip->lock);
	err = mfsd_node_lookup(d, ip);
	if (!err) {
		err = mfsd_node_open(d, ip);
		if (err)
			mfsd_node_forget(d, ip->ino, 1);
	}
	if (err) {
		mfsd_iput(d, ip);
		mfsd_reply_err(req, err);
		return;
	}
	fi->keep_cache = 1;
	if (fuse_reply_create(req, &e, fi) != 0) {
		mfsd_node_release(d, ip->ino);
		mfsd_node_forget(d, ip->ino, 1);
	}
	mfsd_iput(d, ip);
}

void mfsd_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct mfsd *d = mfsd_of(req);
	struct mfs_inode *ip;
	char *buf = NULL;
	int err = mfsd_iget(d, ino, &ip);

	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	pthread_rwlock_rdlock(&ip->lock);
	if (!S_ISLNK(ip->mode) || ip->size == 0 || ip->size >= 4096) {
		err = S_ISLNK(ip->mode) ? -EUCLEAN : -EINVAL;
	} else {
		buf = mfs_malloc(ip->size + 1);
		if (!buf)
			err = -ENOMEM;
		else if (ip->dformat == MFS_FMT_LOCAL)
			memcpy(buf, ip->lit, ip->size);
		else
			err = mfsd_read_data(ip, buf, 0, ip->size);
		if (buf)
			buf[ip->size] = 0;
	}
	pthread_rwlock_unlock(&ip->lock);
	mfsd_iput(d, ip);
	if (err)
		mfsd_reply_err(req, err);
	else
		fuse_reply_readlink(req, buf);
	free(buf);
}

/* ---- link, unlink, rmdir ---------------------------------------------------------------- */

static void do_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct mfsd *d = mfsd_of(req);
	struct mfs_inode *ip = NULL, *dp = NULL;
	struct lockset ls = { .n = 0 };
	struct timespec now;
	unsigned len, tries = 0;
	uint64_t other;
	int err;

	if (d->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	err = check_name(newname, &len);
	if (!err)
		err = mfsd_iget(d, ino, &ip);
	if (!err)
		err = mfsd_iget(d, newparent, &dp);
	if (err)
		goto out;
	ls_add(&ls, ip);
	ls_add(&ls, dp);
	ls_lock(&ls);
	if (!S_ISDIR(dp->mode))
		err = -ENOTDIR;
	else if (dp->nlink == 0 || ip->nlink == 0)
		err = -ENOENT;
	else if (S_ISDIR(ip->mode))
		err = -EPERM;
	else if (ip->nlink >= MFS_LINK_MAX)
		err = -EMLINK;
	else if ((err = mfs_dir_lookup(dp, newname, len, &other, NULL)) != -ENOENT)
		err = err ? err : -EEXIST;
	else
		err = 0;
	while (!err) {
		struct mfs_trans *tp;

		mfsd_now(&now);
		err = mfs_trans_alloc(d->fs, &tp);
		if (err)
			break;
		mfs_trans_nodata(tp);           /* a name */
		err = ls_lock_ags(&ls, tp);
		if (!err)
			err = mfs_dir_add(tp, dp, newname, len, ip->ino, ftype_of(ip->mode));
		if (!err) {
			ip->nlink++;
			ip->ctime = now;
			dp->mtime = dp->ctime = now;
			err = ls_log(&ls, tp);
		}
		err = mfsd_trans_end(tp, err);
		if (!err)
			break;
		ls_reload(&ls);
		if (!mfsd_should_retry(err, &tries))
			break;
		err = 0;
	}
	ls_unlock(&ls);
out:
	if (dp)
		mfsd_iput(d, dp);
	if (err) {
		if (ip)
			mfsd_iput(d, ip);
		mfsd_reply_err(req, err);
		return;
	}
	mfsd_reply_entry(req, ip);
}

void mfsd_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct mfsd *d = mfsd_of(req);

	if (mfsd_ns_begin(d) != 0) {
		fuse_reply_err(req, EAGAIN);
		return;
	}
	do_link(req, ino, newparent, newname);
	mfsd_ns_end(d);
}

/* Remove `name` from `parent`: a directory when `isdir`, anything else otherwise. */
static int do_remove_name(fuse_req_t req, fuse_ino_t parent, const char *name, int isdir)
{
	struct mfsd *d = mfsd_of(req);
	struct mfs_inode *dp, *ip = NULL;
	struct timespec now;
	unsigned len, tries = 0;
	uint64_t ino, again_ino;
	int err;

	if (d->ro)
		return -EROFS;
	err = check_name(name, &len);
	if (err)
		return err;
	if (isdir && len == 1 && name[0] == '.')
		return -EINVAL;
	if (isdir && len == 2 && name[0] == '.' && name[1] == '.')
		return -ENOTEMPTY;
	err = mfsd_iget(d, parent, &dp);
	if (err)
		return err;
	for (;;) {
		struct lockset ls = { .n = 0 };

		err = lookup_shared(dp, name, len, &ino);
		if (!err)
			err = mfs_iget(d->fs, ino, 0, &ip);
		if (err)
			break;
		ls_add(&ls, dp);
		ls_add(&ls, ip);
		ls_lock(&ls);
		err = dp->nlink ? mfs_dir_lookup(dp, name, len, &again_ino, NULL) : -ENOENT;
		if (!err && again_ino != ino) {
			/* Renamed meanwhile: look again. */
			ls_unlock(&ls);
			mfsd_iput(d, ip);
			ip = NULL;
			if (++tries >= MFSD_LOCK_RETRIES) {
				err = -EAGAIN;
				break;
			}
			continue;
		}
		if (!err) {
			if (isdir && !S_ISDIR(ip->mode))
				err = -ENOTDIR;
			else if (!isdir && S_ISDIR(ip->mode))
				err = -EISDIR;
			else if (!isdir && ip->nlink == 0)
				err = MFS_CORRUPT("inode %llu: named '%s' in directory %llu "
						  "with link count 0; not unlinked (a scrub must "
						  "count its links)", (unsigned long long)ip->ino,
						  name, (unsigned long long)dp->ino);
			else if (isdir) {
				err = mfs_dir_is_empty(ip);
				err = err < 0 ? err : err ? 0 : -ENOTEMPTY;
			}
		}
		while (!err) {
			struct mfs_trans *tp;

			mfsd_now(&now);
			err = mfs_trans_alloc(d->fs, &tp);
			if (err)
				break;
			mfs_trans_nodata(tp);   /* a name gone, an orphan */
			err = ls_lock_ags(&ls, tp);
			if (!err)
				err = mfs_dir_remove(tp, dp, name, len, NULL);
			if (!err) {
				if (isdir) {
					ip->nlink = 0;
					dp->nlink--;
				} else {
					ip->nlink--;
				}
				ip->ctime = now;
				dp->mtime = dp->ctime = now;
				if (ip->nlink == 0)
					err = mfsd_orphan_add(d, tp, ip);
				if (!err)
					err = ls_log(&ls, tp);
			}
			err = mfsd_trans_end(tp, err);
			if (!err)
				break;
			ls_reload(&ls);
			if (!mfsd_should_retry(err, &tries))
				break;
			err = 0;
		}
		ls_unlock(&ls);
		break;
	}
	if (ip)
		mfsd_iput(d, ip);        /* frees it if the kernel holds no reference */
	mfsd_iput(d, dp);
	return err;
}

static int remove_name(fuse_req_t req, fuse_ino_t parent, const char *name, int isdir)
{
	struct mfsd *d = mfsd_of(req);
	int err = mfsd_ns_begin(d);

	if (!err) {
		err = do_remove_name(req, parent, name, isdir);
		mfsd_ns_end(d);
	}
	return err;
}

void mfsd_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	mfsd_reply_err(req, remove_name(req, parent, name, 0));
}

void mfsd_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	mfsd_reply_err(req, remove_name(req, parent, name, 1));
}

/* ---- rename ------------------------------------------------------------------------------ */

/* Is directory `dir` (by number) `anc` or below it?  Walks ".." up to the root; the
 * inodes of `held` are already locked by the caller (exclusive) and are read as they are,
 * the others under their shared lock.  The caller holds d->rename_lock, so no ".." changes
 * meanwhile. */
static int is_under(struct mfsd *d, const struct lockset *held, uint64_t dir, uint64_t anc)
{
	uint64_t cur = dir;
	unsigned depth = 0;

	while (cur != anc) {
		struct mfs_inode *ip;
		uint64_t parent;
		int err;

		if (cur == d->fs->geo.rootino)
			return 0;
		if (++depth > 1u << 20)
			return -ELOOP;
		struct mfs_inode *heldip = NULL;

		/* Never mfs_iget() an inode this thread holds locked: a stale one would be
		 * reloaded under its lock. */
		for (unsigned i = 0; i < held->n; i++)
			if (held->ip[i]->ino == cur)
				heldip = held->ip[i];
		if (heldip) {
			err = S_ISDIR(heldip->mode) ? mfs_dir_get_parent(heldip, &parent)
						    : -EFSCORRUPTED;
		} else {
			err = mfs_iget(d->fs, cur, 0, &ip);
			if (err)
				return err;
			pthread_rwlock_rdlock(&ip->lock);
			err = S_ISDIR(ip->mode) ? mfs_dir_get_parent(ip, &parent) : -EFSCORRUPTED;
			pthread_rwlock_unlock(&ip->lock);
			mfs_iput(ip);
		}
		if (err)
			return err;
		cur = parent;
	}
	return 1;
}

struct rename_args {
	struct mfs_inode *sdp, *tdp, *sip, *tip;
	const char *sname, *tname;
	unsigned slen, tlen;
	unsigned flags;
};

static int rename_checks(struct mfsd *d, struct rename_args *a, const struct lockset *ls)
{
	int err;

	if (!S_ISDIR(a->tdp->mode) || !S_ISDIR(a->sdp->mode))
		return -ENOTDIR;
	if (a->tdp->nlink == 0 || a->sdp->nlink == 0)
		return -ENOENT;
	if ((a->flags & RENAME_EXCHANGE) && !a->tip)
		return -ENOENT;
	if ((a->flags & RENAME_NOREPLACE) && a->tip)
		return -EEXIST;
	if (a->tip && !(a->flags & RENAME_EXCHANGE)) {
		if (S_ISDIR(a->sip->mode) && !S_ISDIR(a->tip->mode))
			return -ENOTDIR;
		if (!S_ISDIR(a->sip->mode) && S_ISDIR(a->tip->mode))
			return -EISDIR;
		if (!S_ISDIR(a->tip->mode) && a->tip->nlink == 0)
			return MFS_CORRUPT("inode %llu: named '%.*s' with link count 0; not "
					   "replaced (a scrub must count its links)",
					   (unsigned long long)a->tip->ino, (int)a->tlen, a->tname);
		if (S_ISDIR(a->tip->mode)) {
			err = mfs_dir_is_empty(a->tip);
			if (err <= 0)
				return err < 0 ? err : -ENOTEMPTY;
		}
	}
	if (a->sdp != a->tdp) {
		/* No loops: a directory never moves below itself. */
		if (S_ISDIR(a->sip->mode)) {
			err = is_under(d, ls, a->tdp->ino, a->sip->ino);
			if (err)
				return err < 0 ? err : -EINVAL;
			if (a->tdp->nlink >= MFS_LINK_MAX && !(a->tip && S_ISDIR(a->tip->mode)))
				return -EMLINK;
		}
		if (a->tip && (a->flags & RENAME_EXCHANGE) && S_ISDIR(a->tip->mode)) {
			err = is_under(d, ls, a->sdp->ino, a->tip->ino);
			if (err)
				return err < 0 ? err : -EINVAL;
		}
	}
	return 0;
}

static int rename_trans(struct mfsd *d, struct rename_args *a, struct mfs_trans *tp)
{
	int sdir = S_ISDIR(a->sip->mode), tdir = a->tip && S_ISDIR(a->tip->mode);
	struct timespec now;
	int err;

	mfsd_now(&now);
	if (a->flags & RENAME_EXCHANGE) {
		err = mfs_dir_replace(tp, a->sdp, a->sname, a->slen, a->tip->ino,
				      ftype_of(a->tip->mode), NULL);
		if (!err)
			err = mfs_dir_replace(tp, a->tdp, a->tname, a->tlen, a->sip->ino,
					      ftype_of(a->sip->mode), NULL);
		if (!err && a->sdp != a->tdp) {
			if (sdir) {
				err = mfs_dir_set_parent(tp, a->sip, a->tdp->ino);
				a->sdp->nlink--;
				a->tdp->nlink++;
			}
			if (!err && tdir) {
				err = mfs_dir_set_parent(tp, a->tip, a->sdp->ino);
				a->tdp->nlink--;
				a->sdp->nlink++;
			}
		}
		if (err)
			return err;
		a->tip->ctime = now;
	} else {
		if (a->tip)
			err = mfs_dir_replace(tp, a->tdp, a->tname, a->tlen, a->sip->ino,
					      ftype_of(a->sip->mode), NULL);
		else
			err = mfs_dir_add(tp, a->tdp, a->tname, a->tlen, a->sip->ino,
					  ftype_of(a->sip->mode));
		if (!err)
			err = mfs_dir_remove(tp, a->sdp, a->sname, a->slen, NULL);
		if (!err && sdir && a->sdp != a->tdp) {
			err = mfs_dir_set_parent(tp, a->sip, a->tdp->ino);
			a->sdp->nlink--;
			a->tdp->nlink++;
		}
		if (err)
			return err;
		if (a->tip) {
			if (tdir) {
				a->tip->nlink = 0;
				a->tdp->nlink--;
			} else {
				a->tip->nlink--;
			}
			a->tip->ctime = now;
			if (a->tip->nlink == 0) {
				err = mfsd_orphan_add(d, tp, a->tip);
				if (err)
					return err;
			}
		}
	}
	a->sip->ctime = now;
	a->sdp->mtime = a->sdp->ctime = now;
	a->tdp->mtime = a->tdp->ctime = now;
	return 0;
}

static void do_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	struct mfsd *d = mfsd_of(req);
	struct rename_args a = { .sname = name, .tname = newname, .flags = flags };
	unsigned tries = 0;
	int err, big = 0;

	if (d->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE) ||
	    ((flags & RENAME_NOREPLACE) && (flags & RENAME_EXCHANGE))) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	err = check_name(name, &a.slen);
	if (!err)
		err = check_name(newname, &a.tlen);
	if (!err)
		err = mfsd_iget(d, parent, &a.sdp);
	if (!err && (err = mfsd_iget(d, newparent, &a.tdp)) != 0) {
		mfsd_iput(d, a.sdp);
		a.sdp = NULL;
	}
	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	if (a.sdp != a.tdp) {
		/* Serialise moves between directories (the loop check walks the tree). */
		pthread_mutex_lock(&d->rename_lock);
		big = 1;
	}
	for (;;) {
		struct lockset ls = { .n = 0 };
		uint64_t sino, tino = 0, s2, t2 = 0;
		int terr;

		err = lookup_shared(a.sdp, name, a.slen, &sino);
		if (err)
			break;
		terr = lookup_shared(a.tdp, newname, a.tlen, &tino);
		if (terr && terr != -ENOENT) {
			err = terr;
			break;
		}
		err = mfs_iget(d->fs, sino, 0, &a.sip);
		if (!err && !terr && (err = mfs_iget(d->fs, tino, 0, &a.tip)) != 0) {
			mfsd_iput(d, a.sip);
			a.sip = NULL;
		}
		if (err)
			break;
		ls_add(&ls, a.sdp);
		ls_add(&ls, a.tdp);
		ls_add(&ls, a.sip);
		ls_add(&ls, a.tip);
		ls_lock(&ls);
		/* Check the names still point where they did. */
		err = a.sdp->nlink ? mfs_dir_lookup(a.sdp, name, a.slen, &s2, NULL) : -ENOENT;
		if (!err) {
			terr = a.tdp->nlink ? mfs_dir_lookup(a.tdp, newname, a.tlen, &t2, NULL)
					    : -ENOENT;
			if (terr && terr != -ENOENT)
				err = terr;
			else if (s2 != sino || (terr ? 0 : t2) != (a.tip ? tino : 0) ||
				 (!terr) != (a.tip != NULL))
				err = -EAGAIN;
		}
		if (err == -EAGAIN && ++tries < MFSD_LOCK_RETRIES) {
			ls_unlock(&ls);
			mfsd_retry_backoff(tries);
			mfsd_iput(d, a.sip);
			if (a.tip)
				mfsd_iput(d, a.tip);
			a.sip = a.tip = NULL;
			continue;
		}
		if (!err && a.sip == a.tip) {
			/* Two names of one inode: POSIX says do nothing. */
			ls_unlock(&ls);
			break;
		}
		if (!err)
			err = rename_checks(d, &a, &ls);
		while (!err) {
			struct mfs_trans *tp;

			err = mfs_trans_alloc(d->fs, &tp);
			if (err)
				break;
			mfs_trans_nodata(tp);   /* names */
			err = ls_lock_ags(&ls, tp);
			if (!err)
				err = rename_trans(d, &a, tp);
			if (!err)
				err = ls_log(&ls, tp);
			err = mfsd_trans_end(tp, err);
			if (!err)
				break;
			ls_reload(&ls);
			if (!mfsd_should_retry(err, &tries))
				break;
			err = 0;
		}
		ls_unlock(&ls);
		break;
	}
	if (big)
		pthread_mutex_unlock(&d->rename_lock);
	if (a.sip)
		mfsd_iput(d, a.sip);
	if (a.tip)
		mfsd_iput(d, a.tip);    /* frees a replaced inode the kernel does not hold */
	mfsd_iput(d, a.sdp);
	mfsd_iput(d, a.tdp);
	mfsd_reply_err(req, err);
}

void mfsd_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		 const char *newname, unsigned int flags)
{
	struct mfsd *d = mfsd_of(req);

	if (mfsd_ns_begin(d) != 0) {
		fuse_reply_err(req, EAGAIN);
		return;
	}
	do_rename(req, parent, name, newparent, newname, flags);
	mfsd_ns_end(d);
}

/* ---- directories: open, read, release, fsync --------------------------------------------- */

void mfsd_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mfsd *d = mfsd_of(req);
	struct mfs_inode *ip;
	int err = mfsd_iget(d, ino, &ip);

	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	if (!S_ISDIR(ip->mode))
		err = -ENOTDIR;
	else
		err = mfsd_node_open(d, ip);
	mfsd_iput(d, ip);
	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	if (fuse_reply_open(req, fi) != 0)
		mfsd_node_release(d, mfsd_ino(d, ino));
}

void mfsd_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mfsd *d = mfsd_of(req);

	mfsd_node_release(d, mfsd_ino(d, ino));
	fuse_reply_err(req, 0);
}

void mfsd_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct mfsd *d = mfsd_of(req);

	mfsd_reply_err(req, d->ro ? 0 : mfsd_force(d));
}

/* Entries gathered under the directory's lock, answered after it is released (readdirplus
 * takes each child's lock, which must not nest inside the directory's). */
struct rd_ent {
	uint64_t ino;
	uint64_t next;
	uint8_t ftype;
	uint8_t len;
	char name[MFS_NAME_MAX + 1];
};

struct rd_ctx {
	struct rd_ent *v;
	size_t n, max;
	size_t bytes, size;      /* estimated reply bytes, and the kernel's buffer size */
	int plus;
};

static int rd_collect(void *priv, const char *name, unsigned len, uint64_t ino,
		      uint8_t ftype, uint64_t next_cookie)
{
	struct rd_ctx *c = priv;
	size_t need = (c->plus ? 152 : 24) + ((len + 7) & ~7u);
	struct rd_ent *e;

	if (c->n == c->max || (c->n > 0 && c->bytes + need > c->size))
		return 1;
	e = &c->v[c->n++];
	e->ino = ino;
	e->next = next_cookie;
	e->ftype = ftype;
	e->len = (uint8_t)len;
	memcpy(e->name, name, len);
	e->name[len] = 0;
	c->bytes += need;
	return 0;
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, int plus)
{
	struct mfsd *d = mfsd_of(req);
	struct rd_ctx c = { .size = size, .plus = plus };
	struct mfs_inode *dp;
	char *buf;
	size_t pos = 0;
	int err;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	err = mfsd_iget(d, ino, &dp);
	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	c.max = size / (plus ? 152 : 32) + 2;
	c.v = mfs_malloc(c.max * sizeof(*c.v));
	buf = mfs_malloc(size);
	if (!c.v || !buf) {
		free(c.v);
		free(buf);
		mfsd_iput(d, dp);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	pthread_rwlock_rdlock(&dp->lock);
	if (!S_ISDIR(dp->mode))
		err = -ENOTDIR;
	else if (dir_removed(dp))
		err = 0;                /* removed: empty */
	else
		err = mfs_dir_iterate(dp, (uint64_t)off, rd_collect, &c);
	pthread_rwlock_unlock(&dp->lock);
	if (!err)
		mfsd_touch_atime(d, dp);

	for (size_t i = 0; !err && i < c.n; i++) {
		struct rd_ent *e = &c.v[i];
		int dots = (e->len == 1 && e->name[0] == '.') ||
			   (e->len == 2 && e->name[0] == '.' && e->name[1] == '.');
		size_t got;

		if (!plus || dots) {
			struct stat st;

			memset(&st, 0, sizeof(st));
			st.st_ino = e->ino;
			st.st_mode = (mode_t)DTTOIF(e->ftype);
			if (plus) {
				struct fuse_entry_param ep;

				memset(&ep, 0, sizeof(ep));
				ep.attr = st;
				got = fuse_add_direntry_plus(req, buf + pos, size - pos, e->name, &ep,
							     (off_t)e->next);
			} else {
				got = fuse_add_direntry(req, buf + pos, size - pos, e->name, &st,
							(off_t)e->next);
			}
			if (got > size - pos)
				break;
			pos += got;
		} else {
			struct fuse_entry_param ep;
			struct mfs_inode *ip;

			if (fuse_add_direntry_plus(req, NULL, 0, e->name, NULL, 0) > size - pos)
				break;
			if (mfs_iget(d->fs, e->ino, 0, &ip) != 0)
				continue;      /* removed meanwhile */
			check_named_nlink(dp, e->name, (unsigned)strlen(e->name), ip);
			pthread_rwlock_rdlock(&ip->lock);
			mfsd_fill_entry(d, ip, &ep);
			pthread_rwlock_unlock(&ip->lock);
			if (mfsd_node_lookup(d, ip) != 0) {
				mfsd_iput(d, ip);
				if (pos == 0)
					err = -ENOMEM;
				break;
			}
			pos += fuse_add_direntry_plus(req, buf + pos, size - pos, e->name, &ep,
						      (off_t)e->next);
			mfsd_iput(d, ip);
		}
	}
	mfsd_iput(d, dp);
	free(c.v);
	if (err)
		mfsd_reply_err(req, err);
	else
		fuse_reply_buf(req, buf, pos);
	/* Entries counted but not delivered (an interrupted reply) stay counted: the kernel
	 * would then never forget them, so this only leaks references, never frees early. */
	free(buf);
}

void mfsd_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		  struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, 0);
}

void mfsd_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, 1);
}
