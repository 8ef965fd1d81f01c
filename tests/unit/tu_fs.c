/*
 * tu_fs.c — the unit-test harness's filesystems: images formatted in process with
 * lib/format, and handles over unformatted images with a hand-made geometry (see tu.h).
 */
#include "tu.h"

#include "ag.h"
#include "bcache.h"
#include "byteorder.h"
#include "dev.h"
#include "format.h"
#include "fs.h"
#include "ialloc.h"
#include "inode.h"
#include "mendfs_format.h"
#include "trans.h"

void tu_format(const char *path, uint64_t bytes, const struct mfs_format_opts *opts)
{
	static const struct mfs_format_opts defaults;
	struct mfs_format_layout L;
	struct mfs_dev *dev;

	if (!opts)
		opts = &defaults;
	CK_OK(mfs_format_layout(opts, bytes, NULL, &L));
	CK_OK(mfs_dev_open(path, MFS_DEV_CREATE | MFS_DEV_EXCL, &dev));
	CK_OK(mfs_dev_set_size(dev, bytes));
	CK_OK(mfs_format_write(dev, opts, &L));
}

void tu_format_new(char *path, const char *tag, uint64_t bytes,
		   const struct mfs_format_opts *opts)
{
	tu_image_create(path, tag, 0);
	tu_format(path, bytes, opts);
}

struct mfs_fs *tu_fs_open(const char *path, unsigned flags)
{
	struct mfs_fs *fs = NULL;

	CK_OK(mfs_fs_open(path, flags, 0, &fs));
	return fs;
}

void tu_fs_close(struct mfs_fs *fs)
{
	CK_OK(mfs_fs_close(fs));
}

void tu_sb_mark_dirty(struct mfs_fs *fs)
{
	struct mfs_buf *bp;

	CK_OK(mfs_read_sb(fs, 0, &bp));
	mfs_put32(((struct mfs_sb *)bp->data)->state, MFS_STATE_DIRTY);
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
}

void tu_img_make(struct tu_img *t, const char *tag, uint64_t bytes,
		 const struct mfs_format_opts *opts, unsigned flags)
{
	memset(t, 0, sizeof(*t));
	tu_format_new(t->path, tag, bytes, opts);
	t->flags = flags;
	tu_img_open(t);
}

void tu_img_open(struct tu_img *t)
{
	t->fs = tu_fs_open(t->path, t->flags);
	CK_OK(mfs_icache_init(t->fs, 0));
}

void tu_img_close(struct tu_img *t)
{
	CK_OK(mfs_icache_destroy(t->fs));
	tu_fs_close(t->fs);
	t->fs = NULL;
}

void tu_img_destroy(struct tu_img *t)
{
	if (t->fs)
		tu_img_close(t);
	tu_image_remove(t->path);
}

void tu_img_db_check(struct tu_img *t)
{
	char db[512];

	ck_assert_msg(tu_program("mendfs_db", db, sizeof(db)) == 0, "no mendfs_db at %s", db);
	tu_img_close(t);
	CK_EQ(tu_run("out=$('%s' -c check %s 2>&1) || { printf '%%s\\n' \"$out\" | tail -5 >&2; exit 1; }", db, t->path), 0);
	tu_img_open(t);
}

int tu_ialloc_linked(struct mfs_trans *tp, uint64_t hint, uint16_t mode, uint64_t *ino)
{
	struct mfs_inode *ip;
	int err = mfs_ialloc(tp, hint, mode, ino);

	if (err)
		return err;
	err = mfs_iget(mfs_trans_fs(tp), *ino, 0, &ip);
	if (err)
		return err;
	pthread_rwlock_wrlock(&ip->lock);
	ip->nlink = 1;
	err = mfs_inode_log(tp, ip);
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	return err;
}

void tu_geom(struct mfs_geom *g, uint32_t bs, uint32_t agblocks, uint32_t agcount,
	     uint64_t dblocks, const uint8_t *uuid)
{
	struct mfs_sb sb;
	struct mfs_geom chk;
	uint32_t first;

	memset(g, 0, sizeof(*g));
	g->blocksize = bs;
	g->blocklog = mfs_log2_ceil(bs);
	g->dblocks = dblocks;
	g->agblocks = agblocks;
	g->agcount = agcount;
	g->inodesize = 256;
	g->inopblog = mfs_log2_ceil(bs / 256);
	g->agblklog = mfs_log2_ceil(agblocks);
	g->chunkblocks = MFS_INODES_PER_CHUNK >> g->inopblog;
	if (!g->chunkblocks)
		g->chunkblocks = 1;
	first = MFS_AG_FIXED_BLOCKS + mfs_ag_format_blocks(g);
	first = (first + g->chunkblocks - 1) / g->chunkblocks * g->chunkblocks;
	g->rootino = mfs_agino_to_ino(g, 0, mfs_agbno_to_agino(g, first));
	for (int i = 0; i < 16; i++)
		g->uuid[i] = uuid ? uuid[i] : (uint8_t)(0xa0 + i * 7);
	memset(&sb, 0, sizeof(sb));
	mfs_geom_to_sb(g, &sb);
	CK_OK(mfs_geom_from_sb(&chk, &sb, 0));
	CK_EQ(chk.chunkblocks, g->chunkblocks);
}

struct mfs_fs *tu_fs_create(const char *path, const struct mfs_geom *g, size_t cache_bytes)
{
	struct mfs_dev *dev;
	struct mfs_fs *fs = NULL;

	CK_OK(mfs_dev_open(path, 0, &dev));
	CK_OK(mfs_fs_create(dev, g, cache_bytes, &fs));
	return fs;
}

#define TU_SCRATCH_CACHE ((size_t)1 << 30)

void tu_scratch_open(struct tu_scratch *t, const char *tag, uint32_t bs, uint32_t agblocks)
{
	uint8_t uuid[16];

	memset(t, 0, sizeof(*t));
	tu_image_create(t->path, tag, (uint64_t)bs * agblocks);
	for (int i = 0; i < 16; i++)
		uuid[i] = (uint8_t)tu_rand();
	tu_geom(&t->geo, bs, agblocks, 1, agblocks, uuid);
	t->fs = tu_fs_create(t->path, &t->geo, TU_SCRATCH_CACHE);
}

void tu_scratch_remount(struct tu_scratch *t)
{
	CK_OK(mfs_fs_close(t->fs));
	t->fs = NULL;
	t->fs = tu_fs_create(t->path, &t->geo, TU_SCRATCH_CACHE);
}

void tu_scratch_close(struct tu_scratch *t)
{
	CK_OK(mfs_fs_close(t->fs));
	t->fs = NULL;
	tu_image_remove(t->path);
}

int tu_key64_cmp(const void *a, const void *b)
{
	uint64_t x, y;

	memcpy(&x, a, 8);
	memcpy(&y, b, 8);
	x = mfs_get64(x);
	y = mfs_get64(y);
	return x < y ? -1 : x > y;
}

void tu_key64_of_rec(const void *rec, void *key)
{
	memcpy(key, rec, 8);
}
