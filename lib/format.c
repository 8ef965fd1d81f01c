/*
 * format.c — the geometry rules of a new mendfs and the order in which it is written
 * (see format.h; the rules are documented in mkfs.mendfs(8)).
 */
#include "format.h"

#include "ag.h"
#include "bcache.h"
#include "byteorder.h"
#include "dev.h"
#include "fs.h"
#include "inode_init.h"
#include "journal.h"
#include "log.h"
#include "mendfs_format.h"
#include "verify.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MiB (1ull << 20)
#define TiB (1ull << 40)

#define FMT_DEFAULT_AGCOUNT 4u
#define FMT_MAX_AG_BYTES    TiB          /* AGs are never larger than this */
/* Default journal: 1/128 of the filesystem, at least min(32 MiB, 1/64 of it) and 1 MiB, at
 * most 128 MiB and a quarter of AG 0.  A log this size holds seconds of metadata changes,
 * so checkpoints (every logged block written in place) are rare and run in the background
 * (journal.h); small filesystems keep a small log. */
#define FMT_LOG_RATIO       128u
#define FMT_LOG_FLOOR_RATIO 64u
#define FMT_LOG_FLOOR_BYTES (32 * MiB)
#define FMT_LOG_MIN_BYTES   MiB
#define FMT_LOG_MAX_BYTES   (128 * MiB)
#define FMT_LOG_MIN_BLOCKS  16u
#define FMT_AG0_SLACK       16u          /* free blocks AG 0 keeps after the journal */

static int is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static uint64_t roundup64(uint64_t v, uint64_t align)
{
	return align > 1 ? (v + align - 1) / align * align : v;
}

int mfs_format_random_uuid(uint8_t uuid[16])
{
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, uuid, 16);
	close(fd);
	if (n != 16)
		return -EIO;
	uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40);
	uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80);
	return 0;
}

/* Block size, inode size and label: the checks mkfs makes while parsing its options, made
 * again for callers that build options themselves. */
static int check_opts(const struct mfs_format_opts *o, uint32_t bs, uint32_t isz)
{
	if (!is_pow2(bs) || bs < MFS_MIN_BLOCKSIZE || bs > MFS_MAX_BLOCKSIZE) {
		mfs_log(MFS_LOG_ERR, "block size %u is not a power of two between %u and %u", bs,
			MFS_MIN_BLOCKSIZE, MFS_MAX_BLOCKSIZE);
		return -EINVAL;
	}
	if (!is_pow2(isz) || isz < MFS_MIN_INODESIZE || isz > MFS_MAX_INODESIZE || isz > bs) {
		mfs_log(MFS_LOG_ERR, "inode size %u is not a power of two between %u and %u and "
			"at most the block size %u", isz, MFS_MIN_INODESIZE, MFS_MAX_INODESIZE, bs);
		return -EINVAL;
	}
	if (o->agcount && o->agsize) {
		mfs_log(MFS_LOG_ERR, "an AG count and an AG size cannot both be given");
		return -EINVAL;
	}
	if (o->agcount > MFS_MAX_AGCOUNT) {
		mfs_log(MFS_LOG_ERR, "AG count %u is more than the %u allowed", o->agcount,
			MFS_MAX_AGCOUNT);
		return -EINVAL;
	}
	if (o->label && strlen(o->label) > 31) {
		mfs_log(MFS_LOG_ERR, "label '%s' is %zu bytes long, at most 31 are allowed",
			o->label, strlen(o->label));
		return -EINVAL;
	}
	return 0;
}

/* AG size in blocks: from -A (checked against the stripe unit) or from the AG count. */
static int choose_agblocks(const struct mfs_format_opts *o, const struct mfs_geom *g,
			   uint64_t maxag, uint64_t *agblocks_out)
{
	uint32_t bs = g->blocksize;
	uint64_t agblocks, agcount;

	if (o->agsize) {
		if (o->agsize % bs) {
			mfs_log(MFS_LOG_ERR, "AG size %" PRIu64 " is not a multiple of the block "
				"size %u", o->agsize, bs);
			return -EINVAL;
		}
		agblocks = o->agsize / bs;
		if (g->sunit && agblocks % g->sunit) {
			mfs_log(MFS_LOG_ERR, "AG size %" PRIu64 " blocks is not a multiple of the "
				"stripe unit (%u blocks)", agblocks, g->sunit);
			return -EINVAL;
		}
	} else {
		agcount = o->agcount ? o->agcount : FMT_DEFAULT_AGCOUNT;
		agblocks = (g->dblocks + agcount - 1) / agcount;
		if (!o->agcount && agblocks > maxag)
			agblocks = maxag;
		agblocks = roundup64(agblocks, g->sunit);
		if (!o->agcount && agblocks > maxag)
			agblocks -= g->sunit;
	}
	if (agblocks < MFS_MIN_AGBLOCKS || agblocks > maxag) {
		mfs_log(MFS_LOG_ERR, "AG size of %" PRIu64 " blocks is outside %u..%" PRIu64
			" blocks (%u bytes each, AGs of at most 1 TiB)", agblocks, MFS_MIN_AGBLOCKS,
			maxag, bs);
		return -EINVAL;
	}
	*agblocks_out = agblocks;
	return 0;
}

/* AG 0 holds the fixed headers, the tree roots and AGFL stock of mfs_ag_format, the root
 * inode chunk (aligned to its size), then the journal (aligned to the stripe unit) with
 * FMT_AG0_SLACK free blocks after it. */
static int place_journal(const struct mfs_format_opts *o, uint64_t bytes,
			 struct mfs_format_layout *L)
{
	struct mfs_geom *g = &L->geo;
	uint32_t bs = g->blocksize;
	uint64_t ag0len = mfs_ag_length(g, 0), first, logblocks;

	first = MFS_AG_FIXED_BLOCKS + mfs_ag_format_blocks(g);
	L->chunk_agbno = (uint32_t)roundup64(first, g->chunkblocks);
	L->log_agbno = (uint32_t)roundup64(L->chunk_agbno + g->chunkblocks, g->sunit);
	if (o->logbytes) {
		logblocks = (o->logbytes + bs - 1) / bs;
		if (logblocks < FMT_LOG_MIN_BLOCKS ||
		    L->log_agbno + logblocks + FMT_AG0_SLACK > ag0len) {
			mfs_log(MFS_LOG_ERR, "a journal of %" PRIu64 " blocks does not fit: it "
				"needs at least %u blocks and at most %" PRIu64 " (AG 0 has %" PRIu64
				" blocks from block %u)", logblocks, FMT_LOG_MIN_BLOCKS,
				ag0len > L->log_agbno + FMT_AG0_SLACK ?
					ag0len - L->log_agbno - FMT_AG0_SLACK : 0,
				ag0len, L->log_agbno);
			return -EINVAL;
		}
	} else {
		uint64_t lb = bytes / FMT_LOG_RATIO;
		uint64_t floor = bytes / FMT_LOG_FLOOR_RATIO;

		if (floor > FMT_LOG_FLOOR_BYTES)
			floor = FMT_LOG_FLOOR_BYTES;
		if (lb < floor)
			lb = floor;
		if (lb < FMT_LOG_MIN_BYTES)
			lb = FMT_LOG_MIN_BYTES;
		if (lb > FMT_LOG_MAX_BYTES)
			lb = FMT_LOG_MAX_BYTES;
		logblocks = roundup64(lb / bs, g->sunit);
		if (logblocks > ag0len / 4)
			logblocks = ag0len / 4;
		if (logblocks < FMT_LOG_MIN_BLOCKS)
			logblocks = FMT_LOG_MIN_BLOCKS;
		if (L->log_agbno + logblocks + FMT_AG0_SLACK > ag0len) {
			mfs_log(MFS_LOG_ERR, "AG 0 (%" PRIu64 " blocks) is too small for the "
				"journal", ag0len);
			return -EINVAL;
		}
	}
	g->logstart = mfs_agbno_to_fsb(g, 0, L->log_agbno);
	g->logblocks = (uint32_t)logblocks;
	return 0;
}

int mfs_format_layout(const struct mfs_format_opts *o, uint64_t bytes,
		      const struct mfs_dev_topology *topo, struct mfs_format_layout *L)
{
	static const uint8_t zero_uuid[16];
	struct mfs_geom *g = &L->geo;
	uint32_t bs = o->blocksize ? o->blocksize : MFS_DEFAULT_BLOCKSIZE;
	uint32_t isz = o->inodesize ? o->inodesize : MFS_DEFAULT_INODESIZE;
	uint64_t maxag, agblocks, agcount, last;
	uint32_t min_last;
	struct mfs_sb sb;
	struct mfs_geom check;
	int err;

	memset(L, 0, sizeof(*L));
	err = check_opts(o, bs, isz);
	if (err)
		return err;
	L->devbytes = bytes;
	g->blocksize = bs;
	g->blocklog = mfs_log2_ceil(bs);
	g->inodesize = isz;
	g->inopblog = mfs_log2_ceil(bs / isz);
	g->chunkblocks = MFS_INODES_PER_CHUNK >> g->inopblog;
	if (!g->chunkblocks)
		g->chunkblocks = 1;
	g->dblocks = bytes / bs;
	if (bytes < MFS_FORMAT_MIN_BYTES) {
		mfs_log(MFS_LOG_ERR, "%s%s%" PRIu64 " bytes is too small: a mendfs needs at least "
			"%llu MiB", o->name ? o->name : "", o->name ? ": " : "", bytes,
			MFS_FORMAT_MIN_BYTES / MiB);
		return -EINVAL;
	}

	/* Stripe geometry from the device's I/O hints (block devices only). */
	if (topo && topo->min_io > topo->physical_sector && topo->min_io % bs == 0) {
		g->sunit = topo->min_io / bs;
		g->swidth = g->sunit;
		if (topo->opt_io > topo->min_io && topo->opt_io % topo->min_io == 0)
			g->swidth = topo->opt_io / bs;
	}

	maxag = FMT_MAX_AG_BYTES / bs;
	if (maxag > MFS_MAX_AGBLOCKS)
		maxag = MFS_MAX_AGBLOCKS;
	err = choose_agblocks(o, g, maxag, &agblocks);
	if (err)
		return err;
	if (agblocks > g->dblocks)
		agblocks = g->dblocks;
	g->agblocks = (uint32_t)agblocks;
	g->agblklog = mfs_log2_ceil(agblocks);

	/* The last AG must hold its headers, trees and some free space; a shorter tail is
	 * left unused. */
	min_last = MFS_AG_FIXED_BLOCKS + mfs_ag_format_blocks(g) + FMT_AG0_SLACK;
	if (min_last < MFS_MIN_AGBLOCKS)
		min_last = MFS_MIN_AGBLOCKS;
	agcount = (g->dblocks + agblocks - 1) / agblocks;
	last = g->dblocks - (agcount - 1) * agblocks;
	if (last < min_last && agcount > 1) {
		L->dropped_blocks = (uint32_t)last;
		agcount--;
		g->dblocks = agcount * agblocks;
	}
	if (agcount > MFS_MAX_AGCOUNT) {
		mfs_log(MFS_LOG_ERR, "%" PRIu64 " AGs are more than the %u allowed; use a larger "
			"AG size (-A)", agcount, MFS_MAX_AGCOUNT);
		return -EINVAL;
	}
	g->agcount = (uint32_t)agcount;
	if (o->agcount && g->agcount != o->agcount)
		mfs_log(MFS_LOG_INFO, "note: %u AGs of %u blocks instead of the %u asked for",
			g->agcount, g->agblocks, o->agcount);

	err = place_journal(o, bytes, L);
	if (err)
		return err;
	g->rootino = mfs_agino_to_ino(g, 0, mfs_agbno_to_agino(g, L->chunk_agbno));
	if (o->nil_uuid || memcmp(o->uuid, zero_uuid, 16)) {
		memcpy(g->uuid, o->uuid, 16);
	} else {
		err = mfs_format_random_uuid(g->uuid);
		if (err) {
			mfs_log(MFS_LOG_ERR, "cannot read /dev/urandom for a UUID");
			return err;
		}
	}

	/* The same checks mount makes. */
	memset(&sb, 0, sizeof(sb));
	mfs_geom_to_sb(g, &sb);
	if (mfs_geom_from_sb(&check, &sb, bytes)) {
		mfs_log(MFS_LOG_ERR, "internal error: the computed geometry does not validate");
		return -EINVAL;
	}
	return 0;
}

/* Write the root inode chunk: inode 0 of the chunk is the root directory, the other 63
 * are free (mode 0, valid header and CRC).  Blocks of the chunk beyond its 64 inodes (when
 * a block holds more than 64 inodes) stay zero. */
static int write_root_chunk(struct mfs_fs *fs, const struct mfs_format_opts *o,
			    const struct mfs_format_layout *L, int64_t now)
{
	const struct mfs_geom *g = &fs->geo;
	struct mfs_inode_init_args root = {
		.mode = S_IFDIR | 0755,
		.dformat = MFS_FMT_LOCAL,
		.nlink = 2,
		.uid = o->root_ids ? o->root_uid : (uint32_t)getuid(),
		.gid = o->root_ids ? o->root_gid : (uint32_t)getgid(),
		.time = { .tv_sec = (time_t)now, .tv_nsec = 0 },
	};
	uint32_t ipb = 1u << g->inopblog;

	for (uint32_t b = 0; b < g->chunkblocks; b++) {
		struct mfs_buf *bp;
		int err = mfs_buf_get_new(fs->bc, mfs_agbno_to_fsb(g, 0, L->chunk_agbno + b), 0,
					  &bp);

		if (err)
			return err;
		for (uint32_t i = 0; i < ipb && b * ipb + i < MFS_INODES_PER_CHUNK; i++) {
			uint64_t ino = g->rootino + b * ipb + i;

			mfs_dinode_init((char *)bp->data + mfs_ino_to_offset(g, ino), g->inodesize,
					ino, g->uuid, ino == g->rootino ? &root : NULL);
		}
		mfs_buf_mark_dirty(bp);
		mfs_buf_put(bp);
	}
	return 0;
}

/* Superblock copy of AG `agno`: the geometry, clean, the root chunk's inode counts. */
static int write_sb(struct mfs_fs *fs, const struct mfs_format_opts *o, uint32_t agno,
		    uint64_t fdblocks, int64_t now)
{
	const struct mfs_geom *g = &fs->geo;
	uint64_t fsb = mfs_agbno_to_fsb(g, agno, MFS_SB_AGBNO);
	struct mfs_buf *bp;
	struct mfs_sb *sb;
	int err;

	err = mfs_buf_get_new(fs->bc, fsb, 1, &bp);
	if (err)
		return err;
	mfs_blk_init(bp->data, g->blocksize, MFS_SB_MAGIC, fsb, agno, g->uuid);
	sb = bp->data;
	mfs_geom_to_sb(g, sb);
	mfs_put32(sb->state, MFS_STATE_CLEAN);
	mfs_put64(sb->icount, MFS_INODES_PER_CHUNK);
	mfs_put64(sb->ifree, MFS_INODES_PER_CHUNK - 1);
	mfs_put64(sb->fdblocks, fdblocks);
	mfs_put64(sb->ctime, (uint64_t)now);
	mfs_put64(sb->wtime, (uint64_t)now);
	if (o->label)
		memcpy(sb->label, o->label, strlen(o->label));
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
	return 0;
}

/* The free blocks of every AG, from the AG headers. */
static int sum_free(struct mfs_fs *fs, uint64_t *fdblocks)
{
	*fdblocks = 0;
	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++) {
		struct mfs_buf *bp;
		int err = mfs_read_agh(fs, agno, &bp);

		if (err) {
			mfs_log(MFS_LOG_ERR, "AG %u header does not read back: %s", agno,
				strerror(-err));
			return err;
		}
		*fdblocks += mfs_get32(((struct mfs_agh *)bp->data)->freeblks);
		mfs_buf_put(bp);
	}
	return 0;
}

static int write_all(struct mfs_fs *fs, const struct mfs_format_opts *o,
		     const struct mfs_format_layout *L, int64_t now)
{
	const struct mfs_geom *g = &L->geo;
	const char *name = o->name ? o->name : "the device";
	struct mfs_ag_extent used[2];
	struct mfs_inobt_rec chunk;
	uint64_t fdblocks;
	int err;

	used[0] = (struct mfs_ag_extent){ L->chunk_agbno, g->chunkblocks, MFS_OWN_INODES, 0 };
	used[1] = (struct mfs_ag_extent){ L->log_agbno, g->logblocks, MFS_OWN_LOG, 0 };
	mfs_put32(chunk.startino, mfs_agbno_to_agino(g, L->chunk_agbno));
	mfs_put32(chunk.freecount, MFS_INODES_PER_CHUNK - 1);
	mfs_put64(chunk.freemask, ~1ull);        /* all free but the root, inode 0 */

	for (uint32_t agno = 0; agno < g->agcount; agno++) {
		err = agno ? mfs_ag_format(fs, agno, NULL, 0, NULL, 0)
			   : mfs_ag_format(fs, 0, used, 2, &chunk, 1);
		if (err) {
			mfs_log(MFS_LOG_ERR, "formatting AG %u failed: %s", agno, strerror(-err));
			return err;
		}
	}
	err = write_root_chunk(fs, o, L, now);
	if (err)
		return err;
	/* An empty journal: both header copies (written straight to the device). */
	err = mfs_journal_format(fs);
	if (err) {
		mfs_log(MFS_LOG_ERR, "writing the journal failed: %s", strerror(-err));
		return err;
	}
	if (o->populate) {
		err = o->populate(fs, o->populate_priv);
		if (err)
			return err;
	}
	err = sum_free(fs, &fdblocks);
	if (err)
		return err;

	for (uint32_t agno = 1; agno < g->agcount; agno++) {
		err = write_sb(fs, o, agno, fdblocks, now);
		if (err)
			return err;
	}
	/* Everything but the primary superblock is durable before the primary is written. */
	err = mfs_bcache_flush(fs->bc);
	if (err) {
		mfs_log(MFS_LOG_ERR, "writing %s failed: %s", name, strerror(-err));
		return err;
	}
	return write_sb(fs, o, 0, fdblocks, now);
}

int mfs_format_write(struct mfs_dev *dev, const struct mfs_format_opts *o,
		     const struct mfs_format_layout *L)
{
	int64_t now = o->time ? o->time : (int64_t)time(NULL);
	struct mfs_fs *fs;
	int err, err2;

	err = mfs_fs_create(dev, &L->geo, 0, &fs);
	if (err) {
		mfs_dev_close(dev);
		return err;
	}
	err = write_all(fs, o, L, now);
	if (err)
		mfs_bcache_discard(fs->bc);
	err2 = mfs_fs_close(fs);
	if (!err && err2)
		mfs_log(MFS_LOG_ERR, "writing %s failed: %s", o->name ? o->name : "the device",
			strerror(-err2));
	return err ? err : err2;
}
