/*
 * repair_ilit.c — evidence read from an inode's literal area when a field that frames it
 * (the mode, the attribute fork offset) is damaged: see repair_ilit.h.
 *
 * Both tests are strict on purpose: a rebuilder acts on them (refuses, or salvages from
 * another offset) only when the bytes cannot be something else — a name-btree root must
 * carry the directory btree's magic AND this inode as owner; an attribute fork found
 * elsewhere must parse to exactly the entry count the inode records, at one offset only.
 */
#include "repair_ilit.h"

#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "inode.h"
#include "mendfs_format.h"

#include <string.h>
#include <sys/stat.h>

int rep_fork_is_names_btree(struct mfs_fs *fs, const struct mfs_inode *ip)
{
	const struct mfs_btree_block *h;
	struct mfs_buf *bp;
	uint64_t root;
	int yes;

	if (ip->dformat != MFS_FMT_BTREE)
		return 0;
	memcpy(&root, ip->lit, 8);
	root = mfs_get64(root);
	if (!root || root >= fs->geo.dblocks || mfs_buf_read(fs->bc, root, NULL, &bp))
		return 0;
	h = bp->data;
	yes = mfs_get32(h->hdr.magic) == MFS_DIRBT_MAGIC && mfs_get64(h->hdr.owner) == ip->ino;
	mfs_buf_put(bp);
	return yes;
}

int rep_file_holds_names(struct mfs_fs *fs, const struct mfs_inode *ip)
{
	if (!S_ISREG(ip->mode))
		return 0;
	return ip->dformat == MFS_FMT_LOCAL || rep_fork_is_names_btree(fs, ip);
}

long rep_local_attrs_count(const uint8_t *lit, uint32_t litsize, uint32_t at)
{
	uint32_t pos = at;
	long n = 0;

	while (pos + sizeof(struct mfs_xattr_lent) <= litsize) {
		const struct mfs_xattr_lent *e = (const void *)(lit + pos);
		uint32_t vlen = (uint32_t)e->valuelen[0] | (uint32_t)e->valuelen[1] << 8;

		if (e->ns == 0 && e->namelen == 0)
			break;                  /* the zeroes after the last entry */
		if (e->ns < 1 || e->ns > MFS_XATTR_NS_MAX || e->namelen == 0 ||
		    pos + sizeof(*e) + e->namelen + vlen > litsize)
			return -1;
		pos += (uint32_t)sizeof(*e) + e->namelen + vlen;
		n++;
	}
	return n;
}

uint32_t rep_local_attrs_find(const uint8_t *lit, uint32_t litsize, uint8_t dformat,
			      uint32_t dnext, uint64_t size, uint32_t anext)
{
	uint64_t need = 0;
	uint32_t found = 0;

	if (anext == 0)
		return 0;
	if (dformat == MFS_FMT_LOCAL)
		need = size;
	else if (dformat == MFS_FMT_EXTENTS)
		need = (uint64_t)dnext * sizeof(struct mfs_bmbt_rec);
	else if (dformat == MFS_FMT_BTREE)
		need = sizeof(struct mfs_dir_root);
	for (uint64_t fo = need ? (need + 7) / 8 : 1; fo * 8 < litsize; fo++) {
		if (rep_local_attrs_count(lit, litsize, (uint32_t)fo * 8) != (long)anext)
			continue;
		if (found)
			return 0;
		found = (uint32_t)fo;
	}
	return found;
}
