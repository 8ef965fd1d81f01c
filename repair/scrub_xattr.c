/*
 * scrub_xattr.c — the extended attribute checker: the attribute fork passes mfs_xattr_check
 * (inline entries in bounds, valid and unique; the btree verifies, every entry's records
 * complete and in hash order, names hashing to their keys, value blocks verifying and
 * matching their CRC, i.e. remote values reachable); then every listed attribute has a
 * known namespace and a 1..255-byte name without NUL, and the listing holds as many
 * attributes as the check counted.  Each block of an attribute btree is reverse-mapped to
 * the inode (attribute fork, btree block) and not free.
 */
#include "byteorder.h"
#include "fs.h"
#include "inode.h"
#include "log.h"
#include "scrub_priv.h"
#include "xattr.h"

#include <stdio.h>
#include <string.h>

struct xattr_walk {
	struct mfs_scrub_ctx *ctx;
	uint64_t ino, n;
};

static int xattr_fn(void *priv, unsigned ns, const char *name, unsigned len, size_t valuelen)
{
	struct xattr_walk *w = priv;

	w->n++;
	if (ns < 1 || ns > MFS_XATTR_NS_MAX || len == 0 || len > MFS_XATTR_NAME_MAX ||
	    memchr(name, 0, len) || valuelen > MFS_XATTR_SIZE_MAX)
		scrub_report(w->ctx, MFS_SCRUB_OFLAG_CORRUPT, "inode %llu attribute %llu: "
			     "namespace %u, %u-byte name '%.*s', %zu-byte value: not a valid "
			     "attribute", (unsigned long long)w->ino, (unsigned long long)w->n, ns,
			     len, len < 48 ? (int)len : 48, name, valuelen);
	return scrub_cancelled(w->ctx);
}

int scrub_xattr(struct mfs_scrub_ctx *ctx)
{
	struct mfs_inode *ip;
	struct xattr_walk w = { ctx, ctx->ino, 0 };
	uint64_t count = 0;
	int err;

	/* The quick look (scrub_priv.h): a committed inode without an attribute fork has
	 * nothing to check here — as the census, when current, says it is now. */
	{
		uint64_t buf[MFS_MAX_INODESIZE / 8];
		const struct mfs_dinode *d;
		struct scrub_census_ino ci;
		int usable;

		if (scrub_census_get(ctx, ctx->ino, &ci) && !(ci.flags & SCRUB_CI_FREE) &&
		    (ci.flags & SCRUB_CI_NOATTR))
			return 0;
		err = scrub_dinode_quick(ctx, ctx->ino, buf, &d, &usable);
		if (err && !mfs_is_corruption(err))
			return err;
		if (!err && !mfs_get16(d->mode))
			return -ENOENT;
		if (!err && d->aformat == MFS_FMT_NONE && usable)
			return 0;
	}
	err = scrub_iget(ctx, &ip);
	if (err || !ip)
		return err;
	if (ip->aformat == MFS_FMT_NONE)
		goto out;
	err = mfs_xattr_check(ip, NULL, &count);
	if (mfs_is_corruption(err)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "inode %llu attribute fork (format %u, "
			     "%u entries or levels): %s", (unsigned long long)ip->ino, ip->aformat,
			     ip->anext, scrub_errstr(err));
		err = 0;
		goto out;
	}
	if (err)
		goto out;
	if (ip->aformat == MFS_FMT_BTREE) {
		char what[64];

		snprintf(what, sizeof(what), "inode %llu attribute btree",
			 (unsigned long long)ip->ino);
		err = scrub_xref_tree_blocks(ctx, ip, 1, what);
		if (err)
			goto out;
	}
	err = mfs_xattr_list(ip, xattr_fn, &w);
	if (mfs_is_corruption(err)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "inode %llu attribute fork: listing "
			     "failed: %s", (unsigned long long)ip->ino, scrub_errstr(err));
		err = 0;
	} else if (!err && w.n != count) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "inode %llu attribute fork: %llu "
			     "attributes listed, %llu counted", (unsigned long long)ip->ino,
			     (unsigned long long)w.n, (unsigned long long)count);
	}
out:
	scrub_irele(ip);
	return err;
}
