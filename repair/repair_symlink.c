/*
 * repair_symlink.c — the symlink rebuilder (MFS_SCRUB_SYMLINK): a target that cannot be
 * read or is not valid (empty, longer than 4095 bytes, a NUL inside) is replaced, in one
 * transaction under the inode's exclusive lock, by what can be saved of it:
 *
 *   - the bytes before the first NUL, or before the first block that cannot be read, when
 *     there is at least one ("abc\0efg" becomes "abc"; a size larger than the target stops
 *     at the zeroes after it);
 *   - otherwise REP_SYMLINK_LOST, "mendfs-repair:lost-symlink-target": a relative name that
 *     exists nowhere (following the link fails with ENOENT) and says what happened to
 *     whoever lists it.
 *
 * A new target that fits the data fork is stored inline: every block the reverse map gives
 * the data fork (target blocks, an extent btree) is freed and the extent map dropped, so a
 * damaged map does not stand in the way.  A longer one keeps its blocks: its bytes are
 * already there, only the size shrinks.
 */
#include "repair_priv.h"

#include "bmap.h"
#include "byteorder.h"
#include "dev.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "mem.h"
#include "trans.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define REP_SYMLINK_LOST "mendfs-repair:lost-symlink-target"
#define TARGET_MAX 4095u

static uint32_t fork_size(const struct mfs_inode *ip)
{
	return ip->forkoff ? (uint32_t)ip->forkoff * 8u : ip->litsize;
}

static int want_data_fork(uint64_t off)
{
	return !(off & MFS_RMAP_ATTR_FORK);
}

/* Read what can be read of the target into buf (TARGET_MAX bytes): its length. */
static size_t read_target(struct mfs_inode *ip, uint8_t *buf, uint8_t *blk)
{
	const struct mfs_geom *g = &ip->fs->geo;
	uint64_t want = ip->size >= 1 && ip->size <= TARGET_MAX ? ip->size : TARGET_MAX;
	size_t done = 0;

	if (ip->dformat == MFS_FMT_LOCAL) {
		done = (size_t)(want < fork_size(ip) ? want : fork_size(ip));
		memcpy(buf, ip->lit, done);
		return done;
	}
	if (ip->dformat != MFS_FMT_EXTENTS && ip->dformat != MFS_FMT_BTREE)
		return 0;
	for (uint64_t b = 0; done < want; b++) {
		struct mfs_bmap_ext ext;
		size_t n = want - done < g->blocksize ? (size_t)(want - done) : g->blocksize;

		if (mfs_bmap_lookup(ip, b, &ext) || ext.startblock == MFS_BMAP_HOLE ||
		    ext.unwritten ||
		    mfs_dev_pread(ip->fs->dev, blk, g->blocksize,
				  (ext.startblock + (b - ext.startoff)) << g->blocklog))
			break;
		memcpy(buf + done, blk, n);
		done += n;
	}
	return done;
}

int rep_symlink(struct rep *r)
{
	const struct mfs_geom *g = &r->fs->geo;
	struct mfs_xfarray *old = NULL;
	struct mfs_inode *ip = NULL;
	struct rep_array_plan plan;
	struct rep_iblocks nb;
	struct mfs_trans *tp;
	uint8_t *buf = mfs_malloc(TARGET_MAX + 1), *blk = mfs_malloc(g->blocksize);
	const uint8_t *nul;
	size_t len;
	int err, inline_fork;

	if (!buf || !blk) {
		err = rep_fail(r, -ENOMEM, "no memory for the symlink rebuild");
		goto out;
	}
	err = rep_inode_take(r, S_IFLNK, "symlink", &ip);
	if (err || !ip)
		goto out;
	/* An inline target owns no block: the inode's are the attribute fork's. */
	inline_fork = ip->dformat == MFS_FMT_LOCAL;
	memset(&nb, 0, sizeof(nb));
	nb.attr = ip->nblocks;
	err = inline_fork ? 0 : rep_inode_rmap(r, ip->ino, want_data_fork, NULL, &nb);
	if (err)
		goto out;
	plan.recsize = sizeof(struct rep_iext);
	plan.max_nr = nb.data + nb.data_bt + 1;
	err = rep_reserve(r, &plan, 1);
	if (!err)
		err = rep_array(r, plan.recsize, plan.max_nr, &old);
	if (!err && !inline_fork)
		err = rep_inode_rmap(r, ip->ino, want_data_fork, old, &nb);
	if (!err)
		err = rep_hook(r, MFS_REPAIR_AT_RESERVED);
	if (err)
		goto out;
	len = read_target(ip, buf, blk);
	nul = memchr(buf, 0, len);
	if (nul)
		len = (size_t)(nul - buf);
	if (len == 0) {
		len = strlen(REP_SYMLINK_LOST);
		memcpy(buf, REP_SYMLINK_LOST, len);
	}
	if (len > fork_size(ip) && ip->dformat == MFS_FMT_LOCAL)
		len = fork_size(ip);            /* cannot happen: read from the fork itself */
	err = rep_hook(r, MFS_REPAIR_AT_GATHERED);
	if (!err)
		err = rep_inode_trans(r, ip, old, &tp);
	if (err)
		goto out;
	if (len <= fork_size(ip)) {
		if (ip->dformat != MFS_FMT_LOCAL)
			err = rep_inode_free(r, tp, ip, old);
		if (err) {
			rep_inode_cancel(tp, ip);
			goto out;
		}
		ip->dformat = MFS_FMT_LOCAL;
		ip->dnext = 0;
		ip->nblocks = nb.attr;
		memset(ip->lit, 0, fork_size(ip));
		memcpy(ip->lit, buf, len);
	}
	ip->size = len;
	err = rep_inode_commit(r, tp, ip, "symlink target");
	if (!err)
		r->rc->records = 1;
out:
	rep_inode_done(r, ip, !err);
	free(buf);
	free(blk);
	return err;
}
