/*
 * repair_dirwalk.c — every directory of the filesystem, for the rebuilds that must search
 * the namespace (repair_dirwalk.h): the directory rebuild looking for a directory's real
 * parent and its orphaned subdirectories, the inode core rebuild asking the entries naming
 * an inode which file type it has.
 *
 * The inode btree of each AG is read under the AG lock into memory (its chunk records),
 * the lock dropped, then each allocated inode's committed copy is peeked at (AG lock only)
 * and the callback called with no lock held, so that it may take a directory's inode lock.
 */
#include "repair_dirwalk.h"
#include "repair_priv.h"
#include "scrub_priv.h"

#include "byteorder.h"
#include "dir.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>

static unsigned long long ULL(uint64_t v)
{
	return (unsigned long long)v;
}

int rep_walk_dirs(struct rep *r, rep_dir_fn fn, void *priv)
{
	struct mfs_fs *fs = r->fs;
	struct mfs_scrub_ctx sc;
	int err = 0;

	memset(&sc, 0, sizeof(sc));
	sc.fs = fs;
	for (uint32_t agno = 0; agno < fs->geo.agcount && !err; agno++) {
		struct scrub_ag sa;

		scrub_ag_lock(fs, agno);
		err = scrub_ag_scan(&sc, agno, SCRUB_WANT_INO, &sa);
		if (!err && !(sa.have & SCRUB_WANT_INO))
			err = -EFSCORRUPTED;
		scrub_ag_unlock(fs, agno);
		for (size_t c = 0; !err && c < sa.recs[MFS_BT_INO].n; c++) {
			const struct mfs_inobt_rec *cr = scrub_rec(&sa.recs[MFS_BT_INO], c);
			uint64_t mask = mfs_get64(cr->freemask);

			for (unsigned k = 0; k < MFS_INODES_PER_CHUNK && !err; k++) {
				uint64_t ino = mfs_agino_to_ino(&fs->geo, agno,
								mfs_get32(cr->startino) + k);
				uint64_t parent;
				uint16_t mode;

				if (mask >> k & 1)
					continue;
				err = rep_poll(r);
				if (err)
					break;
				if (rep_inode_peek(fs, ino, &mode, &parent) || !S_ISDIR(mode))
					continue;
				err = fn(priv, ino, parent);
			}
		}
		scrub_ag_lock(fs, agno);
		scrub_ag_release(&sa);
		scrub_ag_unlock(fs, agno);
		if (mfs_is_corruption(err))
			return rep_fail(r, err, "AG %u's inode btree is damaged: the rebuild searches "
					"every directory; rebuild it first", agno);
		if (err < 0)                /* (fn's or rep_poll's reason, set first, stays) */
			return rep_fail(r, err, "listing AG %u's directories: %s", agno,
					strerror(-err));
	}
	return err > 0 ? 0 : err;
}

struct named_walk {
	struct rep_names *out;
	uint64_t ino;
	uint64_t dir;
};

static int named_entry(void *priv, const char *name, unsigned len, uint64_t ino, uint8_t ftype,
		       uint64_t next_cookie)
{
	struct named_walk *w = priv;

	(void)name;
	(void)len;
	if (next_cookie <= MFS_DIR_COOKIE_DOTDOT || ino != w->ino)
		return 0;
	if (!w->out->n++)
		w->out->holder = w->dir;
	if (ftype < 16)
		w->out->dtypes |= (uint16_t)(1u << ftype);
	return 0;
}

int rep_dir_names(struct mfs_inode *dp, uint64_t ino, struct rep_names *out)
{
	struct named_walk w = { out, ino, dp->ino };

	if (!S_ISDIR(dp->mode) || dp->nlink == 0)
		return 0;
	return mfs_dir_iterate(dp, 0, named_entry, &w);
}

struct named_dirs {
	struct rep *r;
	struct rep_names *out;
	uint64_t ino;
};

static int named_dir(void *priv, uint64_t dino, uint64_t parent)
{
	struct named_dirs *w = priv;
	struct mfs_inode *dp;
	int err;

	(void)parent;
	if (dino == w->ino)
		return 0;
	err = mfs_iget_locked(w->r->fs, dino, 0, 0, &dp);
	if (err == -ENOENT || mfs_is_corruption(err))
		return 0;                   /* gone, or damaged: its own repair's */
	if (err)
		return rep_fail(w->r, err, "reading directory %llu: %s", ULL(dino), strerror(-err));
	err = rep_dir_names(dp, w->ino, w->out);
	pthread_rwlock_unlock(&dp->lock);
	mfs_iput(dp);
	if (mfs_is_corruption(err))
		err = 0;                    /* a damaged directory tells nothing */
	return err < 0 ? rep_fail(w->r, err, "reading directory %llu: %s", ULL(dino),
				  strerror(-err)) : 0;
}

int rep_inode_named(struct rep *r, uint64_t ino, struct rep_names *out)
{
	struct named_dirs w = { r, out, ino };

	memset(out, 0, sizeof(*out));
	return rep_walk_dirs(r, named_dir, &w);
}

