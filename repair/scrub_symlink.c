/*
 * scrub_symlink.c — the symlink checker: the target is 1..4095 bytes, exactly `size`,
 * without a NUL byte; inline (it fits the data fork's part of the literal area) or in data
 * blocks every one of which is mapped (unless unlinked: blocks of an orphan may be gone).
 * An inline target is first looked at in the committed inode (symlink_quick).
 */
#include "bmap.h"
#include "byteorder.h"
#include "dev.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "mem.h"
#include "scrub_priv.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SYMLINK_MAX 4095u

/* Read the target of an extent-format symlink into buf (size bytes). */
static int read_target(struct mfs_scrub_ctx *ctx, struct mfs_inode *ip, uint8_t *buf)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	uint64_t nblk = (ip->size + g->blocksize - 1) >> g->blocklog;
	uint8_t *blk = mfs_malloc(g->blocksize);
	int err = 0;

	if (!blk)
		return -ENOMEM;
	for (uint64_t b = 0; b < nblk && !err; b++) {
		struct mfs_bmap_ext ext;
		uint64_t done = b << g->blocklog;
		size_t n = ip->size - done < g->blocksize ? (size_t)(ip->size - done) : g->blocksize;

		err = mfs_bmap_lookup(ip, b, &ext);
		if (err)
			break;
		if (ext.startblock == MFS_BMAP_HOLE || ext.unwritten) {
			scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "symlink %llu: target block %llu "
				     "is %s", (unsigned long long)ip->ino, (unsigned long long)b,
				     ext.unwritten ? "unwritten" : "not mapped");
			err = 1;
			break;
		}
		err = mfs_dev_pread(ctx->fs->dev, blk, g->blocksize,
				    (ext.startblock + (b - ext.startoff)) << g->blocklog);
		if (!err)
			memcpy(buf + done, blk, n);
	}
	free(blk);
	return err;
}

/*
 * The quick look (scrub_priv.h, "Committed on-disk inodes"): 1 when the committed copy
 * shows a usable symlink whose target is inline, of a size in range that fits its data
 * fork, without a NUL byte; else 0 and the inode is taken and looked at (and only that
 * look reports).  No inode is loaded into the cache for the common, inline symlink.
 */
int scrub_symlink_inline_ok(struct mfs_scrub_ctx *ctx, const struct mfs_dinode *d)
{
	uint32_t litsize = ctx->fs->geo.inodesize - (uint32_t)sizeof(struct mfs_dinode), dsize;
	uint64_t size;

	if (!S_ISLNK(mfs_get16(d->mode)) || d->dformat != MFS_FMT_LOCAL)
		return 0;
	size = mfs_get64(d->size);
	dsize = mfs_get16(d->forkoff) ? mfs_get16(d->forkoff) * 8u : litsize;
	return size > 0 && size <= SYMLINK_MAX && size <= dsize && dsize <= litsize &&
	       !memchr((const uint8_t *)d + sizeof(*d), 0, (size_t)size);
}

static int symlink_quick(struct mfs_scrub_ctx *ctx)
{
	uint64_t buf[MFS_MAX_INODESIZE / 8];
	const struct mfs_dinode *d;
	struct scrub_census_ino ci;
	int usable;

	/* The census's verdict, when current, is that of the committed inode now. */
	if (scrub_census_get(ctx, ctx->ino, &ci) && !(ci.flags & SCRUB_CI_FREE) &&
	    (ci.flags & SCRUB_CI_LNKOK))
		return 1;
	return !scrub_dinode_quick(ctx, ctx->ino, buf, &d, &usable) && usable &&
	       scrub_symlink_inline_ok(ctx, d);
}

int scrub_symlink(struct mfs_scrub_ctx *ctx)
{
	unsigned long long ino = (unsigned long long)ctx->ino;
	struct mfs_inode *ip;
	uint8_t *target = NULL;
	uint32_t dsize;
	int err;

	if (symlink_quick(ctx))
		return 0;
	err = scrub_iget(ctx, &ip);
	if (err || !ip)
		return err;
	if (!S_ISLNK(ip->mode))
		goto out;
	if (ip->size == 0 || ip->size > SYMLINK_MAX) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "symlink %llu: size %llu, a target has "
			     "1..%u bytes", ino, (unsigned long long)ip->size, SYMLINK_MAX);
		goto out;
	}
	dsize = ip->forkoff ? ip->forkoff * 8u : ip->litsize;
	if (ip->dformat == MFS_FMT_LOCAL) {
		if (ip->size > dsize) {
			scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "symlink %llu: inline target of "
				     "%llu bytes in a %u-byte data fork", ino,
				     (unsigned long long)ip->size, dsize);
			goto out;
		}
		if (memchr(ip->lit, 0, (size_t)ip->size))
			scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "symlink %llu: the %llu-byte "
				     "target holds a NUL byte at %zu", ino,
				     (unsigned long long)ip->size,
				     (size_t)((const uint8_t *)memchr(ip->lit, 0, (size_t)ip->size) -
					      ip->lit));
		goto out;
	}
	if (ip->dformat != MFS_FMT_EXTENTS && ip->dformat != MFS_FMT_BTREE) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "symlink %llu: data fork format %u holds "
			     "no target", ino, ip->dformat);
		goto out;
	}
	/* An unlinked symlink (on its orphan list) is being freed: its blocks go first, in
	 * their own transactions, and the inode after them, so it can rest without its target
	 * block (its freeing met a transient error and is tried again later, or a crash came
	 * in between: the next mount finishes it). */
	if (ip->nlink == 0)
		goto out;
	target = mfs_malloc((size_t)ip->size);
	if (!target) {
		err = -ENOMEM;
		goto out;
	}
	err = read_target(ctx, ip, target);
	if (err > 0) {
		err = 0;
	} else if (mfs_is_corruption(err)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "symlink %llu: extent map: %s", ino,
			     scrub_errstr(err));
		err = 0;
	} else if (!err && memchr(target, 0, (size_t)ip->size)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "symlink %llu: the %llu-byte target "
			     "holds a NUL byte", ino, (unsigned long long)ip->size);
	}
out:
	free(target);
	scrub_irele(ip);
	return err;
}
