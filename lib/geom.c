/*
 * geom.c — superblock geometry: decode, validate, encode (see geom.h).
 */
#include "geom.h"
#include "byteorder.h"
#include "log.h"

#include <string.h>

static int is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

int mfs_geom_from_sb(struct mfs_geom *g, const struct mfs_sb *sb, uint64_t devbytes)
{
	memset(g, 0, sizeof(*g));
	g->blocksize = mfs_get32(sb->blocksize);
	g->blocklog = sb->blocklog;
	g->dblocks = mfs_get64(sb->dblocks);
	g->agblocks = mfs_get32(sb->agblocks);
	g->agcount = mfs_get32(sb->agcount);
	g->inodesize = mfs_get16(sb->inodesize);
	g->inopblog = sb->inopblog;
	g->agblklog = sb->agblklog;
	g->rootino = mfs_get64(sb->rootino);
	g->logstart = mfs_get64(sb->logstart);
	g->logblocks = mfs_get32(sb->logblocks);
	g->sunit = mfs_get32(sb->sunit);
	g->swidth = mfs_get32(sb->swidth);
	memcpy(g->uuid, sb->hdr.uuid, 16);

	if (mfs_get32(sb->version) != MFS_VERSION)
		return MFS_CORRUPT("superblock: format version %u, this mendfs knows %u",
				   mfs_get32(sb->version), MFS_VERSION);
	if (!is_pow2(g->blocksize) || g->blocksize < MFS_MIN_BLOCKSIZE ||
	    g->blocksize > MFS_MAX_BLOCKSIZE || g->blocklog > 31 ||
	    (1u << g->blocklog) != g->blocksize)
		return MFS_CORRUPT("superblock: block size %u (log %u) is not a power of two "
				   "between %u and %u", g->blocksize, g->blocklog,
				   MFS_MIN_BLOCKSIZE, MFS_MAX_BLOCKSIZE);
	/* inopblog is an on-disk byte: bound it before shifting by it. */
	if (!is_pow2(g->inodesize) || g->inodesize < MFS_MIN_INODESIZE ||
	    g->inodesize > MFS_MAX_INODESIZE || g->inodesize > g->blocksize ||
	    g->inopblog > g->blocklog || (g->blocksize >> g->inopblog) != g->inodesize)
		return MFS_CORRUPT("superblock: inode size %u (%u per block as log %u) does not "
				   "fit block size %u", g->inodesize, 1u << (g->inopblog & 31),
				   g->inopblog, g->blocksize);
	if (g->agblocks < MFS_MIN_AGBLOCKS || g->agblocks > MFS_MAX_AGBLOCKS ||
	    g->agblklog != mfs_log2_ceil(g->agblocks))
		return MFS_CORRUPT("superblock: AG size %u blocks (log %u) out of range %u..%u",
				   g->agblocks, g->agblklog, MFS_MIN_AGBLOCKS, MFS_MAX_AGBLOCKS);
	if (g->agcount == 0 || g->agcount > MFS_MAX_AGCOUNT ||
	    g->dblocks <= (uint64_t)(g->agcount - 1) * g->agblocks ||
	    g->dblocks > (uint64_t)g->agcount * g->agblocks ||
	    mfs_ag_length(g, g->agcount - 1) < MFS_MIN_AGBLOCKS)
		return MFS_CORRUPT("superblock: %u AGs of %u blocks do not make %llu blocks",
				   g->agcount, g->agblocks, (unsigned long long)g->dblocks);
	if (g->agblklog + g->inopblog + mfs_log2_ceil(g->agcount) > 56)
		return MFS_CORRUPT("superblock: inode numbers would need more than 56 bits");
	if (devbytes && g->dblocks > devbytes / g->blocksize)
		return MFS_CORRUPT("superblock: filesystem has %llu blocks but the device holds "
				   "only %llu (truncated image?)", (unsigned long long)g->dblocks,
				   (unsigned long long)(devbytes / g->blocksize));
	g->chunkblocks = MFS_INODES_PER_CHUNK >> g->inopblog;
	if (!g->chunkblocks)
		g->chunkblocks = 1;
	if (g->logblocks && (g->logstart >= g->dblocks || g->logblocks > g->dblocks - g->logstart))
		return MFS_CORRUPT("superblock: journal at block %llu, %u blocks, lies outside "
				   "the filesystem", (unsigned long long)g->logstart, g->logblocks);
	if (g->logblocks) {
		/* The journal lies inside one AG, after its fixed headers: replay must never
		 * be able to write over another structure's home. */
		uint32_t agno = mfs_fsb_to_agno(g, g->logstart);
		uint32_t agbno = mfs_fsb_to_agbno(g, g->logstart);

		if (g->logblocks < MFS_JOURNAL_MIN_BLOCKS || agbno < MFS_AG_FIXED_BLOCKS ||
		    g->logblocks > mfs_ag_length(g, agno) - agbno)
			return MFS_CORRUPT("superblock: journal at block %llu, %u blocks, must "
					   "hold at least %u blocks inside one AG after its "
					   "headers", (unsigned long long)g->logstart,
					   g->logblocks, MFS_JOURNAL_MIN_BLOCKS);
	}
	if (g->rootino == 0 || mfs_ino_to_agno(g, g->rootino) >= g->agcount ||
	    mfs_agino_to_agbno(g, mfs_ino_to_agino(g, g->rootino)) >=
		    mfs_ag_length(g, mfs_ino_to_agno(g, g->rootino)))
		return MFS_CORRUPT("superblock: root inode %llu lies outside the filesystem",
				   (unsigned long long)g->rootino);
	return 0;
}

void mfs_geom_to_sb(const struct mfs_geom *g, struct mfs_sb *sb)
{
	mfs_put32(sb->version, MFS_VERSION);
	mfs_put32(sb->blocksize, g->blocksize);
	sb->blocklog = (uint8_t)g->blocklog;
	mfs_put64(sb->dblocks, g->dblocks);
	mfs_put32(sb->agblocks, g->agblocks);
	mfs_put32(sb->agcount, g->agcount);
	mfs_put16(sb->inodesize, (uint16_t)g->inodesize);
	sb->inopblog = (uint8_t)g->inopblog;
	sb->agblklog = (uint8_t)g->agblklog;
	mfs_put64(sb->rootino, g->rootino);
	mfs_put64(sb->logstart, g->logstart);
	mfs_put32(sb->logblocks, g->logblocks);
	mfs_put32(sb->sunit, g->sunit);
	mfs_put32(sb->swidth, g->swidth);
	memcpy(sb->hdr.uuid, g->uuid, 16);
}
