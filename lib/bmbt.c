/*
 * bmbt.c — an inode's data-fork extent btree as an instance of the generic engine: the ops
 * table (record = struct mfs_bmbt_rec, key = its startoff, 8-byte fsblock pointers), the
 * sanity check of one extent record, and opening a cursor from the fork root that lives
 * in the inode's literal area.
 *
 * The cursor's priv is the in-core inode (held with its lock exclusive by any writer).
 * Everything the engine changes outside the tree blocks lands in that inode and is logged
 * at once in the cursor's transaction:
 *   - alloc_block: one block near the inode, reverse-map owner (ino, MFS_RMAP_BMBT_BLOCK),
 *     ip->nblocks + 1;
 *   - free_block: the block back to the allocator, ip->nblocks - 1;
 *   - set_root: the new struct mfs_fork_root in ip->lit, ip->dnext = levels.
 */
#include "bmap.h"
#include "alloc.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "trans.h"

#include <string.h>

static int bmbt_cmp_keys(const void *k1, const void *k2)
{
	uint64_t a = mfs_get64(((const struct mfs_bmbt_key *)k1)->startoff);
	uint64_t b = mfs_get64(((const struct mfs_bmbt_key *)k2)->startoff);

	return a < b ? -1 : a > b;
}

static void bmbt_rec_key(const void *rec, void *key)
{
	((struct mfs_bmbt_key *)key)->startoff = ((const struct mfs_bmbt_rec *)rec)->startoff;
}

uint64_t mfs_bmap_max_blocks(const struct mfs_fs *fs)
{
	return 1ull << (63 - fs->geo.blocklog);
}

int mfs_bmbt_check_rec(const struct mfs_fs *fs, uint64_t ino, const struct mfs_bmbt_rec *rec)
{
	const struct mfs_geom *g = &fs->geo;
	uint64_t off = mfs_get64(rec->startoff), fsb = mfs_get64(rec->startblock);
	uint32_t len = mfs_get32(rec->blockcount), flags = mfs_get32(rec->flags);
	uint64_t maxb = mfs_bmap_max_blocks(fs);
	uint32_t agno, agbno;

	if (len == 0 || (flags & ~MFS_EXT_UNWRITTEN) || off >= maxb || maxb - off < len)
		return MFS_CORRUPT("inode %llu data fork: extent at file block %llu, length %u, "
				   "flags 0x%x is empty, has unknown flags or ends past file block "
				   "%llu", (unsigned long long)ino, (unsigned long long)off, len,
				   flags, (unsigned long long)maxb);
	if (fsb >= g->dblocks || g->dblocks - fsb < len)
		goto bad_place;
	agno = mfs_fsb_to_agno(g, fsb);
	agbno = mfs_fsb_to_agbno(g, fsb);
	if (agbno < MFS_AG_FIXED_BLOCKS || (uint64_t)agbno + len > mfs_ag_length(g, agno))
		goto bad_place;
	return 0;
bad_place:
	return MFS_CORRUPT("inode %llu data fork: extent at file block %llu maps %u blocks at "
			   "fsblock %llu, outside the filesystem, over an AG's fixed blocks or "
			   "across an AG end", (unsigned long long)ino, (unsigned long long)off, len,
			   (unsigned long long)fsb);
}

static int bmbt_check_rec(struct mfs_btree_cur *cur, const void *rec)
{
	return mfs_bmbt_check_rec(cur->fs, cur->owner, rec);
}

static int bmbt_alloc_block(struct mfs_btree_cur *cur, uint64_t *fsb)
{
	int err = mfs_inode_btree_alloc(cur, cur->priv, MFS_RMAP_BMBT_BLOCK, fsb);

	return err ? err : mfs_inode_log(cur->tp, cur->priv);
}

/* (the engine drops the freed block's buffer from the transaction itself) */
static int bmbt_free_block(struct mfs_btree_cur *cur, uint64_t fsb)
{
	int err = mfs_inode_btree_free(cur, cur->priv, MFS_RMAP_BMBT_BLOCK, fsb);

	return err ? err : mfs_inode_log(cur->tp, cur->priv);
}

static int bmbt_set_root(struct mfs_btree_cur *cur)
{
	struct mfs_inode *ip = cur->priv;
	struct mfs_fork_root fr;

	if (!cur->tp || !ip || ip->dformat != MFS_FMT_BTREE)
		return -EINVAL;
	memset(&fr, 0, sizeof(fr));
	mfs_put64(fr.rootblock, cur->root.fsb);
	mfs_put32(fr.levels, cur->root.levels);
	memcpy(ip->lit, &fr, sizeof(fr));
	ip->dnext = cur->root.levels;
	return mfs_inode_log(cur->tp, ip);
}

const struct mfs_btree_ops mfs_bmbt_ops = {
	.name = "data fork extent btree",
	.magic = MFS_BMBT_MAGIC,
	.rec_len = sizeof(struct mfs_bmbt_rec),
	.key_len = sizeof(struct mfs_bmbt_key),
	.ptr_len = 8,
	.cmp_keys = bmbt_cmp_keys,
	.rec_key = bmbt_rec_key,
	.check_rec = bmbt_check_rec,
	.alloc_block = bmbt_alloc_block,
	.free_block = bmbt_free_block,
	.set_root = bmbt_set_root,
};

int mfs_bmbt_cur_init(struct mfs_btree_cur *cur, struct mfs_trans *tp, struct mfs_inode *ip)
{
	struct mfs_fork_root fr;
	struct mfs_btree_root root;
	uint32_t forksize = ip->forkoff ? ip->forkoff * 8u : ip->litsize;

	memset(cur, 0, sizeof(*cur));
	if (ip->dformat != MFS_FMT_BTREE || forksize < sizeof(fr))
		return -EINVAL;
	memcpy(&fr, ip->lit, sizeof(fr));
	root.fsb = mfs_get64(fr.rootblock);
	root.levels = mfs_get32(fr.levels);
	if (root.levels != ip->dnext || root.levels < 1 || root.levels > MFS_BTREE_MAXLEVELS)
		return MFS_CORRUPT("inode %llu: data fork root says %u levels, the inode %u "
				   "(1..%u allowed)", (unsigned long long)ip->ino, root.levels,
				   ip->dnext, MFS_BTREE_MAXLEVELS);
	mfs_btree_cur_init(cur, ip->fs, tp, &mfs_bmbt_ops, ip->ino, 0, &root, ip);
	return 0;
}
