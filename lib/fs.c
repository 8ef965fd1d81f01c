/*
 * fs.c — opening and closing a mendfs, and reading its fixed per-AG blocks (see fs.h).
 */
#include "mem.h"
#include "fs.h"
#include "ag.h"
#include "bcache.h"
#include "byteorder.h"
#include "dev.h"
#include "journal.h"
#include "log.h"

#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

static int fs_alloc_ags(struct mfs_fs *fs)
{
	fs->ag = mfs_calloc(fs->geo.agcount, sizeof(*fs->ag));
	if (!fs->ag)
		return -ENOMEM;
	for (uint32_t i = 0; i < fs->geo.agcount; i++) {
		fs->ag[i].agno = i;
		pthread_mutex_init(&fs->ag[i].ilock, NULL);
		pthread_mutex_init(&fs->ag[i].lock, NULL);
	}
	return 0;
}

void mfs_ag_lock(struct mfs_fs *fs, uint32_t agno, unsigned what)
{
	struct mfs_perag *pag = &fs->ag[agno];

	if (what == MFS_AGL_INODES) {
		pthread_mutex_lock(&pag->ilock);
		return;
	}
	if (what == MFS_AGL_SPACE) {
		pthread_mutex_lock(&pag->lock);
		return;
	}
	for (;;) {
		pthread_mutex_lock(&pag->ilock);
		if (!pthread_mutex_trylock(&pag->lock))
			return;
		pthread_mutex_unlock(&pag->ilock);
		/* the space lock is busy (for long, maybe): wait for it alone */
		pthread_mutex_lock(&pag->lock);
		if (!pthread_mutex_trylock(&pag->ilock))
			return;
		pthread_mutex_unlock(&pag->lock);
	}
}

#define WATCH_SLICE_NS 10000000L     /* 10 ms */

int mfs_ag_lock_watch(struct mfs_fs *fs, uint32_t agno, unsigned one)
{
	unsigned cls = one == MFS_AGL_SPACE;
	pthread_mutex_t *m = cls ? &fs->ag[agno].lock : &fs->ag[agno].ilock;
	struct timespec t;
	int rc;

	for (;;) {
		if (!pthread_mutex_trylock(m))
			return 0;
		if (__atomic_load_n(&fs->ag[agno].long_held[cls], __ATOMIC_RELAXED))
			return -EBUSY;
		clock_gettime(CLOCK_MONOTONIC, &t);
		t.tv_nsec += WATCH_SLICE_NS;
		if (t.tv_nsec >= 1000000000L) {
			t.tv_sec++;
			t.tv_nsec -= 1000000000L;
		}
		rc = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &t);
		if (!rc)
			return 0;
		if (rc != ETIMEDOUT)
			return -rc;
	}
}

void mfs_ag_publish_counts(struct mfs_fs *fs, uint32_t agno, const struct mfs_agh *agh)
{
	struct mfs_perag *pag = &fs->ag[agno];
	uint64_t f = mfs_get32(agh->freeblks);
	uint32_t fl = mfs_get32(agh->fl_count), need = mfs_agfl_need(fs, agh);

	/* The free list's stock above what the AG's trees need is free space too: the list
	 * grows in a busy spell and is trimmed only down to twice the need (alloc.c), so
	 * without it statfs stayed below its baseline after everything was deleted (found
	 * by t_enospc). */
	if (fl > need)
		f += fl - need;
	__atomic_store_n(&pag->sf_free, f, __ATOMIC_RELAXED);
	__atomic_store_n(&pag->sf_icount, (uint64_t)mfs_get32(agh->icount), __ATOMIC_RELAXED);
	__atomic_store_n(&pag->sf_ifree, (uint64_t)mfs_get32(agh->ifree), __ATOMIC_RELAXED);
	__atomic_store_n(&pag->sf_valid, 1, __ATOMIC_RELEASE);
}

void mfs_ag_unlock(struct mfs_fs *fs, uint32_t agno, unsigned what)
{
	if (what & MFS_AGL_SPACE)
		pthread_mutex_unlock(&fs->ag[agno].lock);
	if (what & MFS_AGL_INODES)
		pthread_mutex_unlock(&fs->ag[agno].ilock);
}

static void fs_free(struct mfs_fs *fs)
{
	if (fs->ag) {
		for (uint32_t i = 0; i < fs->geo.agcount; i++) {
			pthread_mutex_destroy(&fs->ag[i].lock);
			pthread_mutex_destroy(&fs->ag[i].ilock);
			free(fs->ag[i].ichunks);
		}
		free(fs->ag);
	}
	free(fs);
}

int mfs_fs_create(struct mfs_dev *dev, const struct mfs_geom *geo, size_t cache_bytes,
		  struct mfs_fs **out)
{
	struct mfs_fs *fs;
	int err;

	*out = NULL;
	fs = mfs_calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->geo = *geo;
	if (!fs->geo.chunkblocks)
		fs->geo.chunkblocks = (MFS_INODES_PER_CHUNK >> fs->geo.inopblog) ?
				      (MFS_INODES_PER_CHUNK >> fs->geo.inopblog) : 1;
	err = fs_alloc_ags(fs);
	if (!err)
		err = mfs_bcache_create(dev, geo->blocksize,
					cache_bytes ? cache_bytes : MFS_DEFAULT_CACHE_BYTES, &fs->bc);
	if (err) {
		fs_free(fs);
		return err;
	}
	mfs_bcache_set_uuid(fs->bc, geo->uuid);
	fs->dev = dev;
	*out = fs;
	return 0;
}

/*
 * Read the primary superblock before the block size is known: read the largest possible
 * block, find the block size in it, then verify the header over that many bytes.
 */
static int fs_read_primary_sb(struct mfs_dev *dev, struct mfs_geom *geo)
{
	void *buf;
	struct mfs_sb *sb;
	struct mfs_blk_expect e = { MFS_SB_MAGIC, 0, MFS_LEVEL_ANY, "superblock" };
	uint32_t bs;
	int err;

	if (mfs_dev_size(dev) < MFS_MIN_BLOCKSIZE) {
		mfs_log(MFS_LOG_ERR, "%s: %llu bytes is too small to hold a mendfs superblock",
			mfs_dev_path(dev), (unsigned long long)mfs_dev_size(dev));
		return -EFSCORRUPTED;
	}
	buf = mfs_calloc(1, MFS_MAX_BLOCKSIZE);
	if (!buf)
		return -ENOMEM;
	bs = mfs_dev_size(dev) < MFS_MAX_BLOCKSIZE ? (uint32_t)mfs_dev_size(dev) : MFS_MAX_BLOCKSIZE;
	err = mfs_dev_pread(dev, buf, bs, 0);
	if (err)
		goto out;
	sb = buf;
	if (mfs_get32(sb->hdr.magic) != MFS_SB_MAGIC) {
		mfs_log(MFS_LOG_ERR, "%s: no mendfs superblock (magic 0x%08x, expected 0x%08x)",
			mfs_dev_path(dev), mfs_get32(sb->hdr.magic), MFS_SB_MAGIC);
		err = -EFSCORRUPTED;
		goto out;
	}
	bs = mfs_get32(sb->blocksize);
	if (bs < MFS_MIN_BLOCKSIZE || bs > MFS_MAX_BLOCKSIZE || (bs & (bs - 1)) ||
	    bs > mfs_dev_size(dev)) {
		err = MFS_CORRUPT("superblock: block size %u is not a power of two between %u "
				  "and %u that fits the device", bs, MFS_MIN_BLOCKSIZE,
				  MFS_MAX_BLOCKSIZE);
		goto out;
	}
	err = mfs_blk_verify(buf, bs, 0, sb->hdr.uuid, &e, 0);
	if (err)
		goto out;
	err = mfs_geom_from_sb(geo, sb, mfs_dev_size(dev));
	if (err)
		goto out;
	if (mfs_get32(sb->features_incompat) & ~MFS_FEAT_INCOMPAT_SUPPORTED) {
		mfs_log(MFS_LOG_ERR, "%s: unknown incompatible features 0x%x: this mendfs "
			"cannot read it", mfs_dev_path(dev),
			mfs_get32(sb->features_incompat) & ~MFS_FEAT_INCOMPAT_SUPPORTED);
		err = -EOPNOTSUPP;
	}
out:
	free(buf);
	return err;
}

/*
 * MFS_OPEN_SB_COPY: the primary is unusable, so neither the block size nor the AG size is
 * known.  A copy of AG n sits at fsblock n * agblocks: scan the device for the superblock
 * magic at every MFS_MIN_BLOCKSIZE boundary, and take the first block there that verifies
 * over its own block size, carries a valid geometry, names itself (blkno = owner x
 * agblocks, owner >= 1) and whose incompatible features this mendfs knows.  The scan reads
 * in chunks of 1 MiB and stops at the first copy (AG 1's, at a quarter of a default mkfs).
 */
#define SB_SCAN_CHUNK (1u << 20)

static int sb_copy_ok(struct mfs_dev *dev, uint64_t off, void *blk, struct mfs_geom *geo)
{
	const struct mfs_sb *sb = blk;
	struct mfs_blk_expect e = { MFS_SB_MAGIC, 0, MFS_LEVEL_ANY, "superblock copy" };
	uint32_t bs = mfs_get32(sb->blocksize);
	uint64_t owner = mfs_get64(sb->hdr.owner);

	if (bs < MFS_MIN_BLOCKSIZE || bs > MFS_MAX_BLOCKSIZE || (bs & (bs - 1)) || off % bs ||
	    off + bs > mfs_dev_size(dev) || owner == 0 || owner >= MFS_MAX_AGCOUNT ||
	    mfs_get64(sb->hdr.blkno) != off / bs)
		return 0;
	if (mfs_dev_pread(dev, blk, bs, off))
		return 0;
	e.owner = owner;
	if (!mfs_blk_crc_ok(blk, bs) || mfs_geom_from_sb(geo, sb, mfs_dev_size(dev)) ||
	    owner >= geo->agcount || owner * geo->agblocks != off / bs ||
	    mfs_blk_verify(blk, bs, off / bs, sb->hdr.uuid, &e, 0) ||
	    (mfs_get32(sb->features_incompat) & ~MFS_FEAT_INCOMPAT_SUPPORTED))
		return 0;
	return 1;
}

static int fs_read_sb_copy(struct mfs_dev *dev, struct mfs_geom *geo)
{
	uint64_t size = mfs_dev_size(dev);
	char *buf = mfs_malloc(SB_SCAN_CHUNK), *blk = mfs_malloc(MFS_MAX_BLOCKSIZE);
	int err = -EFSCORRUPTED;

	if (!buf || !blk) {
		free(buf);
		free(blk);
		return -ENOMEM;
	}
	for (uint64_t pos = 0; pos < size && err == -EFSCORRUPTED; pos += SB_SCAN_CHUNK) {
		size_t n = size - pos < SB_SCAN_CHUNK ? (size_t)(size - pos) : SB_SCAN_CHUNK;

		if (mfs_dev_pread(dev, buf, n, pos))
			break;
		for (size_t o = pos ? 0 : MFS_MIN_BLOCKSIZE; o + sizeof(struct mfs_sb) <= n;
		     o += MFS_MIN_BLOCKSIZE) {
			const struct mfs_sb *sb = (const void *)(buf + o);

			if (mfs_get32(sb->hdr.magic) != MFS_SB_MAGIC)
				continue;
			memcpy(blk, buf + o, sizeof(struct mfs_sb));
			if (sb_copy_ok(dev, pos + o, blk, geo)) {
				mfs_log(MFS_LOG_WARN, "%s: the primary superblock is unusable; using "
					"the copy of AG %llu (block %llu)", mfs_dev_path(dev),
					(unsigned long long)mfs_get64(sb->hdr.owner),
					(unsigned long long)((pos + o) / geo->blocksize));
				err = 0;
				break;
			}
		}
	}
	if (err)
		mfs_log(MFS_LOG_ERR, "%s: the primary superblock is unusable and no superblock "
			"copy was found", mfs_dev_path(dev));
	free(buf);
	free(blk);
	return err;
}

int mfs_fs_open(const char *path, unsigned flags, size_t cache_bytes, struct mfs_fs **out)
{
	struct mfs_dev *dev;
	struct mfs_geom geo;
	unsigned dflags = 0;
	int err;

	*out = NULL;
	if (flags & MFS_OPEN_RDONLY)
		dflags |= MFS_DEV_RDONLY;
	if (flags & MFS_OPEN_EXCL)
		dflags |= MFS_DEV_EXCL;
	err = mfs_dev_open(path, dflags, &dev);
	if (err)
		return err;
	err = fs_read_primary_sb(dev, &geo);
	if (mfs_is_corruption(err) && (flags & MFS_OPEN_SB_COPY))
		err = fs_read_sb_copy(dev, &geo);
	if (!err)
		err = mfs_fs_create(dev, &geo, cache_bytes, out);
	if (err) {
		mfs_dev_close(dev);
		return err;
	}
	(*out)->flags = flags;
	if ((flags & MFS_OPEN_JOURNAL) && !(flags & MFS_OPEN_RDONLY)) {
		err = mfs_journal_open(*out, 0, NULL);
		if (err) {
			mfs_bcache_discard((*out)->bc);
			(*out)->bc = NULL;
			mfs_fs_close(*out);
			*out = NULL;
			return err;
		}
	}
	return 0;
}

int mfs_fs_close(struct mfs_fs *fs)
{
	int err, err2;

	if (!fs)
		return 0;
	err = fs->log ? mfs_journal_close(fs->log) : 0;
	err2 = mfs_bcache_destroy(fs->bc);
	if (!err)
		err = err2;
	err2 = mfs_dev_close(fs->dev);
	fs_free(fs);
	return err ? err : err2;
}

/* "AG 3 header" and the like, for verifier messages: one static string per kind is not
 * enough (the AG number varies), so callers pass a buffer. */
static const char *ag_what(char *buf, size_t len, uint32_t agno, const char *kind)
{
	snprintf(buf, len, "AG %u %s", agno, kind);
	return buf;
}

static __thread char what_buf[3][48];

void mfs_expect_sb(const struct mfs_fs *fs, uint32_t agno, struct mfs_blk_expect *e)
{
	e->magic = MFS_SB_MAGIC;
	e->owner = agno;
	e->level = MFS_LEVEL_ANY;
	e->what = ag_what(what_buf[0], sizeof(what_buf[0]), agno, "superblock");
}

void mfs_expect_agh(const struct mfs_fs *fs, uint32_t agno, struct mfs_blk_expect *e)
{
	e->magic = MFS_AGH_MAGIC;
	e->owner = agno;
	e->level = MFS_LEVEL_ANY;
	e->what = ag_what(what_buf[1], sizeof(what_buf[1]), agno, "header");
}

void mfs_expect_agfl(const struct mfs_fs *fs, uint32_t agno, struct mfs_blk_expect *e)
{
	e->magic = MFS_AGFL_MAGIC;
	e->owner = agno;
	e->level = MFS_LEVEL_ANY;
	e->what = ag_what(what_buf[2], sizeof(what_buf[2]), agno, "free list");
}

static int read_ag_block(struct mfs_fs *fs, uint32_t agno, uint32_t agbno,
			 void (*expect)(const struct mfs_fs *, uint32_t, struct mfs_blk_expect *),
			 struct mfs_buf **out)
{
	struct mfs_blk_expect e;

	*out = NULL;
	if (agno >= fs->geo.agcount)
		return -EINVAL;
	expect(fs, agno, &e);
	return mfs_buf_read(fs->bc, mfs_agbno_to_fsb(&fs->geo, agno, agbno), &e, out);
}

int mfs_read_sb(struct mfs_fs *fs, uint32_t agno, struct mfs_buf **out)
{
	return read_ag_block(fs, agno, MFS_SB_AGBNO, mfs_expect_sb, out);
}

int mfs_read_agh(struct mfs_fs *fs, uint32_t agno, struct mfs_buf **out)
{
	int err = read_ag_block(fs, agno, MFS_AGH_AGBNO, mfs_expect_agh, out);

	if (!err) {
		err = mfs_agh_check(fs, agno, (*out)->data);
		if (err) {
			mfs_buf_put(*out);
			*out = NULL;
		}
	}
	return err;
}

int mfs_read_agfl(struct mfs_fs *fs, uint32_t agno, struct mfs_buf **out)
{
	return read_ag_block(fs, agno, MFS_AGFL_AGBNO, mfs_expect_agfl, out);
}

static int agh_check_part(const struct mfs_fs *fs, uint32_t agno, const struct mfs_agh *agh,
			  int inodes);

int mfs_read_agh_inodes(struct mfs_fs *fs, uint32_t agno, struct mfs_buf **out)
{
	int err = read_ag_block(fs, agno, MFS_AGH_AGBNO, mfs_expect_agh, out);

	if (!err) {
		err = agh_check_part(fs, agno, (*out)->data, 1);
		if (err) {
			mfs_buf_put(*out);
			*out = NULL;
		}
	}
	return err;
}

/* The header's fields: with `inodes`, only those that change under both AG locks (fs.h),
 * which a holder of the inode lock alone may read while the space lock's holder changes
 * the rest; else all of them. */
static int agh_check_part(const struct mfs_fs *fs, uint32_t agno, const struct mfs_agh *agh,
			  int inodes)
{
	static const char *const names[MFS_AG_NTREES] = { "by-block", "by-length", "inode",
							  "reverse-map" };
	uint32_t len = mfs_ag_length(&fs->geo, agno);

	if (mfs_get32(agh->seqno) != agno)
		return MFS_CORRUPT("AG %u header: sequence number %u", agno,
				   mfs_get32(agh->seqno));
	if (mfs_get32(agh->length) != len)
		return MFS_CORRUPT("AG %u header: length %u, expected %u blocks", agno,
				   mfs_get32(agh->length), len);
	for (int t = 0; t < MFS_AG_NTREES; t++) {
		uint32_t root = mfs_get32(agh->roots[t]);
		uint32_t levels = mfs_get32(agh->levels[t]);

		if (inodes && t != MFS_BT_INO)
			continue;
		if (root < MFS_AG_FIXED_BLOCKS || root >= len)
			return MFS_CORRUPT("AG %u header: %s btree root %u outside %u..%u", agno,
					   names[t], root, MFS_AG_FIXED_BLOCKS, len - 1);
		if (levels < 1 || levels > MFS_BTREE_MAXLEVELS)
			return MFS_CORRUPT("AG %u header: %s btree height %u outside 1..%u", agno,
					   names[t], levels, MFS_BTREE_MAXLEVELS);
	}
	if (inodes) {
		if (mfs_get32(agh->ifree) > mfs_get32(agh->icount))
			return MFS_CORRUPT("AG %u header: %u free inodes of %u", agno,
					   mfs_get32(agh->ifree), mfs_get32(agh->icount));
		return 0;
	}
	if (mfs_get32(agh->freeblks) > len || mfs_get32(agh->longest) > mfs_get32(agh->freeblks))
		return MFS_CORRUPT("AG %u header: %u free blocks, longest extent %u, in an AG of "
				   "%u blocks", agno, mfs_get32(agh->freeblks),
				   mfs_get32(agh->longest), len);
	if (mfs_get32(agh->fl_first) >= MFS_AGFL_SIZE_MAX ||
	    mfs_get32(agh->fl_count) > MFS_AGFL_SIZE_MAX)
		return MFS_CORRUPT("AG %u header: free list first %u count %u, at most %u slots",
				   agno, mfs_get32(agh->fl_first), mfs_get32(agh->fl_count),
				   MFS_AGFL_SIZE_MAX);
	if (mfs_get32(agh->ifree) > mfs_get32(agh->icount))
		return MFS_CORRUPT("AG %u header: %u free inodes of %u", agno,
				   mfs_get32(agh->ifree), mfs_get32(agh->icount));
	if (mfs_get32(agh->flags) & ~MFS_AGH_FLAGS_KNOWN)
		return MFS_CORRUPT("AG %u header: unknown flags 0x%x", agno,
				   mfs_get32(agh->flags) & ~MFS_AGH_FLAGS_KNOWN);
	return 0;
}

int mfs_agh_check(const struct mfs_fs *fs, uint32_t agno, const struct mfs_agh *agh)
{
	return agh_check_part(fs, agno, agh, 0);
}
