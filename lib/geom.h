/*
 * geom.h — filesystem geometry in host byte order, and the arithmetic between fsblocks,
 * AG-relative blocks and inode numbers (see mendfs_format.h for the rules).
 */
#ifndef MFS_GEOM_H
#define MFS_GEOM_H

#include <stdint.h>
#include "mendfs_format.h"

struct mfs_geom {
	uint32_t blocksize;
	uint32_t blocklog;
	uint64_t dblocks;
	uint32_t agblocks;
	uint32_t agcount;
	uint32_t inodesize;
	uint32_t inopblog;          /* log2(inodes per block) */
	uint32_t agblklog;          /* ceil(log2(agblocks)) */
	uint32_t chunkblocks;       /* blocks per inode chunk */
	uint64_t rootino;
	uint64_t logstart;
	uint32_t logblocks;
	uint32_t sunit, swidth;
	uint8_t uuid[16];
};

static inline uint64_t mfs_agbno_to_fsb(const struct mfs_geom *g, uint32_t agno, uint32_t agbno)
{
	return (uint64_t)agno * g->agblocks + agbno;
}
static inline uint32_t mfs_fsb_to_agno(const struct mfs_geom *g, uint64_t fsb)
{
	return (uint32_t)(fsb / g->agblocks);
}
static inline uint32_t mfs_fsb_to_agbno(const struct mfs_geom *g, uint64_t fsb)
{
	return (uint32_t)(fsb % g->agblocks);
}
/* Blocks in AG `agno` (the last AG may be shorter). */
static inline uint32_t mfs_ag_length(const struct mfs_geom *g, uint32_t agno)
{
	if (agno + 1 < g->agcount)
		return g->agblocks;
	return (uint32_t)(g->dblocks - (uint64_t)agno * g->agblocks);
}

static inline uint32_t mfs_ino_to_agno(const struct mfs_geom *g, uint64_t ino)
{
	return (uint32_t)(ino >> (g->agblklog + g->inopblog));
}
static inline uint32_t mfs_ino_to_agino(const struct mfs_geom *g, uint64_t ino)
{
	return (uint32_t)(ino & ((1ull << (g->agblklog + g->inopblog)) - 1));
}
static inline uint64_t mfs_agino_to_ino(const struct mfs_geom *g, uint32_t agno, uint32_t agino)
{
	return ((uint64_t)agno << (g->agblklog + g->inopblog)) | agino;
}
static inline uint32_t mfs_agino_to_agbno(const struct mfs_geom *g, uint32_t agino)
{
	return agino >> g->inopblog;
}
static inline uint32_t mfs_agbno_to_agino(const struct mfs_geom *g, uint32_t agbno)
{
	return agbno << g->inopblog;
}
/* fsblock holding inode `ino`, and the inode's byte offset inside that block. */
static inline uint64_t mfs_ino_to_fsb(const struct mfs_geom *g, uint64_t ino)
{
	return mfs_agbno_to_fsb(g, mfs_ino_to_agno(g, ino),
				mfs_agino_to_agbno(g, mfs_ino_to_agino(g, ino)));
}
static inline uint32_t mfs_ino_to_offset(const struct mfs_geom *g, uint64_t ino)
{
	return (uint32_t)(ino & ((1u << g->inopblog) - 1)) * g->inodesize;
}

/* Fill `g` from a superblock and check every field for sanity and consistency with the
 * device size (`devbytes`, 0 to skip).  Returns 0 or -EFSCORRUPTED, after saying which
 * field is wrong. */
int mfs_geom_from_sb(struct mfs_geom *g, const struct mfs_sb *sb, uint64_t devbytes);
/* Store `g` into the geometry fields of a superblock (other fields untouched). */
void mfs_geom_to_sb(const struct mfs_geom *g, struct mfs_sb *sb);

static inline unsigned mfs_log2_ceil(uint64_t v)
{
	unsigned l = 0;

	while ((1ull << l) < v)
		l++;
	return l;
}

#endif
