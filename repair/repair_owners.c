/*
 * repair_owners.c — what space an inode owns, as reverse-map records: the reverse-map
 * rebuild (repair_agbtree.c) asks every inode in use for its extents in one AG.
 *
 * An inode owns (mendfs_format.h, "Reverse map"):
 *   - its data extents: offset = file block (extent list or extent btree);
 *   - the blocks of its data fork's btree — the extent btree of a file, the name btree of
 *     a directory: offset MFS_RMAP_BMBT_BLOCK;
 *   - the blocks of its attribute btree: MFS_RMAP_ATTR_FORK | MFS_RMAP_BMBT_BLOCK;
 *   - the value blocks of its large attributes: MFS_RMAP_ATTR_FORK | the attribute fork's
 *     logical block MFS_XATTR_RMAP_OFF(namespace, hash, seq, i).
 * Each is reported block range by block range; the caller merges neighbours.
 */
#include "repair_priv.h"

#include "bcache.h"
#include "bmap.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "mendfs_format.h"

#include <string.h>
#include <sys/stat.h>

struct owned {
	struct mfs_inode *ip;
	uint32_t agno;
	rep_owned_fn fn;
	void *priv;
	uint64_t flags;              /* offset flags of tree blocks being visited */
	/* attribute entry being reassembled */
	uint64_t key;                /* head key without its part byte, 0: none */
	uint8_t namelen, remote;
	unsigned have;
	uint8_t bytes[MFS_XATTR_NAME_MAX + sizeof(struct mfs_xattr_remote) + 64];
};

/* Report [fsb, fsb + len) at `offset` for the part inside the AG (positional offsets
 * advance with the block). */
static int emit(struct owned *o, uint64_t fsb, uint64_t len, uint64_t offset, int positional)
{
	const struct mfs_geom *g = &o->ip->fs->geo;

	while (len) {
		uint32_t agno = mfs_fsb_to_agno(g, fsb), agbno = mfs_fsb_to_agbno(g, fsb);
		uint64_t room = mfs_ag_length(g, agno) - agbno, n = len < room ? len : room;
		int err;

		if (agno >= g->agcount)
			return MFS_CORRUPT("inode %llu: block %llu lies outside the filesystem",
					   (unsigned long long)o->ip->ino, (unsigned long long)fsb);
		if (agno == o->agno) {
			err = o->fn(o->priv, o->ip->ino, agbno, (uint32_t)n, offset);
			if (err)
				return err;
		}
		fsb += n;
		len -= n;
		if (positional)
			offset += n;
	}
	return 0;
}

static int data_fn(struct mfs_inode *ip, const struct mfs_bmap_ext *ext, void *priv)
{
	return emit(priv, ext->startblock, ext->len, ext->startoff, 1);
}

static int tree_blk_fn(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	struct owned *o = priv;

	return emit(o, fsb, 1, o->flags | MFS_RMAP_BMBT_BLOCK, 0);
}

static int le64_cmp(const void *a, const void *b)
{
	uint64_t x = mfs_get64(*(const mfs_le64 *)a), y = mfs_get64(*(const mfs_le64 *)b);

	return x < y ? -1 : x > y;
}

static void le64_key(const void *rec, void *key)
{
	memcpy(key, rec, sizeof(mfs_le64));
}

/* A read-only cursor on the directory name btree or the attribute btree of ip. */
static int fork_cur(struct mfs_inode *ip, int attr, struct mfs_btree_ops *ops,
		    struct mfs_btree_cur *cur)
{
	struct mfs_btree_root r;

	memset(ops, 0, sizeof(*ops));
	if (!attr) {
		struct mfs_dir_root dr;

		if (ip->litsize < sizeof(dr))
			return -EFSCORRUPTED;
		memcpy(&dr, ip->lit, sizeof(dr));
		r.fsb = mfs_get64(dr.rootblock);
		r.levels = mfs_get32(dr.levels);
		ops->name = "directory name btree";
		ops->magic = MFS_DIRBT_MAGIC;
		ops->rec_len = MFS_DIR_REC_SIZE;
	} else {
		struct mfs_fork_root fr;

		if (!ip->forkoff || (uint32_t)ip->forkoff * 8u + sizeof(fr) > ip->litsize)
			return MFS_CORRUPT("inode %llu: attribute fork offset %u out of range",
					   (unsigned long long)ip->ino, ip->forkoff);
		memcpy(&fr, ip->lit + (uint32_t)ip->forkoff * 8u, sizeof(fr));
		r.fsb = mfs_get64(fr.rootblock);
		r.levels = mfs_get32(fr.levels);
		ops->name = "attribute btree";
		ops->magic = MFS_XATTRBT_MAGIC;
		ops->rec_len = MFS_XATTR_REC_SIZE;
	}
	if (r.levels < 1 || r.levels > MFS_BTREE_MAXLEVELS || r.fsb >= ip->fs->geo.dblocks)
		return MFS_CORRUPT("inode %llu: %s root %llu, %u levels", (unsigned long long)ip->ino,
				   ops->name, (unsigned long long)r.fsb, r.levels);
	ops->key_len = 8;
	ops->ptr_len = 8;
	ops->cmp_keys = le64_cmp;
	ops->rec_key = le64_key;
	mfs_btree_cur_init(cur, ip->fs, NULL, ops, ip->ino, 0, &r, ip);
	return 0;
}

/* Attribute records in key order: reassemble each remote entry's descriptor. */
static int xattr_rec_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	struct owned *o = priv;
	uint64_t key = mfs_get64(*(const mfs_le64 *)rec);
	unsigned part = key & 0xff, want, take;
	const uint8_t *data;
	size_t dlen;

	if (part == 0) {
		const struct mfs_xattr_rec *h = rec;

		o->key = key;
		o->namelen = h->namelen;
		o->remote = h->flags & MFS_XATTR_REMOTE;
		o->have = 0;
		data = h->data;
		dlen = MFS_XATTR_HEAD_DATA;
	} else {
		if (!o->key || (key & ~0xffull) != o->key)
			return 0;            /* a stray continuation: the xattr checker's */
		data = ((const struct mfs_xattr_cont *)rec)->data;
		dlen = MFS_XATTR_CONT_DATA;
	}
	if (!o->remote)
		return 0;
	want = o->namelen + (unsigned)sizeof(struct mfs_xattr_remote);
	take = want - o->have < dlen ? want - o->have : (unsigned)dlen;
	memcpy(o->bytes + o->have, data, take);
	o->have += take;
	if (o->have == want) {
		struct mfs_xattr_remote rm;
		unsigned ns = (unsigned)(o->key >> 56);
		uint32_t hash = (uint32_t)(o->key >> 24);
		unsigned seq = (unsigned)(o->key >> 8) & MFS_XATTR_SEQ_MAX;

		memcpy(&rm, o->bytes + o->namelen, sizeof(rm));
		o->remote = 0;
		if (ns < 1 || ns > MFS_XATTR_NS_MAX || !mfs_get32(rm.blocks))
			return MFS_CORRUPT("inode %llu: attribute 0x%llx has a bad value descriptor",
					   (unsigned long long)o->ip->ino,
					   (unsigned long long)o->key);
		return emit(o, mfs_get64(rm.fsblock), mfs_get32(rm.blocks), MFS_RMAP_ATTR_FORK |
			    MFS_XATTR_RMAP_OFF(ns, hash, seq, 0), 1);
	}
	return 0;
}

static int visit_fork_tree(struct owned *o, int attr)
{
	struct mfs_btree_ops ops;
	struct mfs_btree_cur cur;
	int err;

	memset(&cur, 0, sizeof(cur));
	if (!attr && !S_ISDIR(o->ip->mode))
		err = mfs_bmbt_cur_init(&cur, NULL, o->ip);
	else
		err = fork_cur(o->ip, attr, &ops, &cur);
	if (err)
		return err;
	o->flags = attr ? MFS_RMAP_ATTR_FORK : 0;
	/* A file's extent btree, whose leaves mfs_bmap_walk has just read in order: its
	 * blocks named from its nodes, with no set of the blocks seen, which would grow with
	 * the tree (16-32 bytes a block: 4-6 MiB for a file of 48M extents, 30 times that at
	 * the format's limit).  The levels fall at each step down and the walk stops past the
	 * filesystem's size; a child shared by two nodes is named twice, and the reverse map's
	 * merge refuses the two records as a cross-link. */
	if (!attr && !S_ISDIR(o->ip->mode))
		err = mfs_btree_visit_trusted(&cur, o->ip->fs->geo.dblocks, tree_blk_fn, o, NULL);
	else
		err = mfs_btree_visit_blocks(&cur, tree_blk_fn, o);
	if (!err && attr) {
		o->key = 0;
		err = mfs_btree_query_range(&cur, NULL, NULL, xattr_rec_fn, o);
	}
	mfs_btree_cur_release(&cur);
	return err;
}

int rep_inode_owned(struct mfs_inode *ip, uint32_t agno, rep_owned_fn fn, void *priv)
{
	struct owned o;
	int err = 0;

	memset(&o, 0, sizeof(o));
	o.ip = ip;
	o.agno = agno;
	o.fn = fn;
	o.priv = priv;
	if (ip->dformat == MFS_FMT_EXTENTS ||
	    (ip->dformat == MFS_FMT_BTREE && !S_ISDIR(ip->mode)))
		err = mfs_bmap_walk(ip, data_fn, &o);
	if (!err && ip->dformat == MFS_FMT_BTREE)
		err = visit_fork_tree(&o, 0);
	if (!err && ip->aformat == MFS_FMT_BTREE)
		err = visit_fork_tree(&o, 1);
	return err;
}
