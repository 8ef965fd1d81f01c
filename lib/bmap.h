/*
 * bmap.h — the data fork's extent map: which disk blocks hold which blocks of a file.
 *
 * Format
 * ------
 * A regular file's data fork is a sorted list of extents (struct mfs_bmbt_rec: file offset,
 * fsblock, length, MFS_EXT_UNWRITTEN), none overlapping, each inside one AG.  It is kept
 *
 *   - inline (dformat MFS_FMT_EXTENTS): dnext records at the start of the literal area,
 *     while they fit in the data fork's part of it (the whole literal area, or forkoff * 8
 *     bytes when an attribute fork exists): mfs_bmap_inline_max();
 *   - as an extent btree (dformat MFS_FMT_BTREE): a struct mfs_fork_root (root fsblock,
 *     levels) at the start of the literal area, dnext = levels.  The tree is an instance of
 *     the generic engine (mfs_bmbt_ops: magic MFS_BMBT_MAGIC, 8-byte fsblock pointers, key =
 *     startoff, block owner = inode number).  Its blocks are allocated near the inode and
 *     owned in the reverse map by (ino, MFS_RMAP_BMBT_BLOCK).
 *
 * An insert into a full inline list converts the fork to a btree first.  At the end of
 * every changing call, a btree whose root is a leaf holding fewer than inline_max records
 * goes back inline (one slot of hysteresis, so that a file hovering at the limit does not
 * allocate and free a block on every change).  A taller tree never shrinks back in place
 * (possible only when the literal area holds more records than a leaf: 2 KiB inodes on
 * 1 KiB blocks).
 *
 * Adjacent extents are merged when they are contiguous in the file and on disk, in the same
 * AG and in the same written/unwritten state.  The reverse map (which does not record the
 * unwritten state) then holds one record per maximal run of file- and disk-contiguous data
 * blocks, with owner = inode number and offset = file offset of the run's first block.
 * ip->nblocks counts data blocks plus extent btree blocks.
 *
 * Rules for callers
 * -----------------
 *   - Reading calls (lookup, seek, walk) need ip->lock at least shared; changing calls need
 *     it exclusive and a transaction.  Changing calls update the in-core inode and log it
 *     (mfs_inode_log) in `tp`.  On error the caller cancels the transaction and reloads the
 *     inode (mfs_inode_reload, see inode.h): the in-core fork may be half changed.
 *   - Changing calls first lock the inode's AG in `tp` (waiting only when the transaction
 *     holds no higher AG, else -EDEADLK: cancel and retry), so that logging the inode after
 *     allocating in another AG never breaks the AG lock order.
 *   - Offsets and lengths are in filesystem blocks; file blocks lie in [0,
 *     mfs_bmap_max_blocks()), so byte offsets stay below 2^63.
 *   - Work per call is bounded (the caller rolls transactions): alloc maps at most one new
 *     extent; punch and convert change at most MFS_BMAP_MAX_EXTENTS_PER_CALL extents and
 *     report in *done how far they got.
 *   - Freed blocks: a block freed by punch must not be reused for file data until the
 *     freeing transaction is durable (journal.h).  That "busy extent" rule is the daemon's
 *     job, not this layer's.
 */
#ifndef MFS_BMAP_H
#define MFS_BMAP_H

#include <stdint.h>
#include "btree.h"
#include "mendfs_format.h"

struct mfs_fs;
struct mfs_inode;
struct mfs_trans;

#define MFS_BMAP_HOLE   (~0ull)    /* startblock of a hole */

/* One mapping: an extent, or a hole (startblock MFS_BMAP_HOLE, unwritten 0). */
struct mfs_bmap_ext {
	uint64_t startoff;      /* file block */
	uint64_t len;           /* blocks (a hole can be longer than any extent) */
	uint64_t startblock;    /* fsblock, or MFS_BMAP_HOLE */
	int unwritten;          /* allocated but reads as zeroes */
};

#define MFS_BMAP_UNWRITTEN   0x1u    /* mfs_bmap_alloc: map the new blocks unwritten */

#define MFS_BMAP_MAX_EXTENTS_PER_CALL  16u

/* One past the highest file block: 2^(63 - blocklog). */
uint64_t mfs_bmap_max_blocks(const struct mfs_fs *fs);
/* Extent records the data fork holds inline (0 when the fork is too small for any). */
unsigned mfs_bmap_inline_max(const struct mfs_inode *ip);

/*
 * The mapping containing file block `off`: the whole extent that holds it, or the whole
 * hole around it (from the end of the previous extent, or 0, to the start of the next one,
 * or mfs_bmap_max_blocks()).  Always ext->startoff <= off < ext->startoff + ext->len.
 * -EINVAL if the fork is not an extent list or btree, or off is out of range;
 * -EFSCORRUPTED / -EFSBADCRC with a message for a damaged map.
 */
int mfs_bmap_lookup(struct mfs_inode *ip, uint64_t off, struct mfs_bmap_ext *ext);

/*
 * Map [off, off + len): when `off` lies in a hole, allocate one extent for the start of
 * that hole (as much of len as the hole, the allocator and one AG allow), near the disk
 * block that would continue the previous extent (else near the inode), reverse-map owner =
 * ino and offset = off; merge it with its neighbours when contiguous.  When `off` is already
 * mapped, nothing is allocated.  Either way *ext gets the mapping from off on (startoff ==
 * off, 1 <= len <= the asked len): the caller loops until the range is covered.
 * -ENOSPC (nothing changed), -EINVAL, -EDEADLK (see above) or an I/O / corruption error.
 */
int mfs_bmap_alloc(struct mfs_trans *tp, struct mfs_inode *ip, uint64_t off, uint64_t len,
		   unsigned flags, struct mfs_bmap_ext *ext);

/*
 * Unmap and free the blocks of [off, off + len), splitting extents that straddle its ends
 * (truncate, punch-hole).  Changes at most MFS_BMAP_MAX_EXTENTS_PER_CALL extents; *done gets
 * the number of blocks from `off` now known to be unmapped (== len when finished): call again
 * with off + *done in the next transaction.  A split can need a new btree block: -ENOSPC
 * is then possible (the caller cancels).
 */
int mfs_bmap_punch(struct mfs_trans *tp, struct mfs_inode *ip, uint64_t off, uint64_t len,
		   uint64_t *done);

/*
 * Mark the unwritten blocks of [off, off + len) written (after their data reached the
 * disk), splitting and merging extents as needed; holes and written blocks are left alone.
 * Bounded and reporting *done as mfs_bmap_punch().
 */
int mfs_bmap_convert_written(struct mfs_trans *tp, struct mfs_inode *ip, uint64_t off,
			     uint64_t len, uint64_t *done);

/*
 * SEEK_DATA / SEEK_HOLE in blocks: the first block >= off that is data (written extent) or
 * hole (no extent, or an unwritten one: it reads as zeroes).  Unwritten extents count as
 * holes.  The map has no end of file: SEEK_HOLE always finds one (at worst at
 * mfs_bmap_max_blocks()), SEEK_DATA returns -ENXIO when no data lies at or after off; the
 * caller clips both against the file size.  -EINVAL for another whence.
 */
int mfs_bmap_seek(struct mfs_inode *ip, uint64_t off, int whence, uint64_t *res);

/*
 * Call fn on every extent (never holes) in file order; fn returns 0 to go on, > 0 to stop
 * (returned), < 0 an error (returned).  Each record is checked on its own (mfs_bmbt_check_rec)
 * and against the previous one (no overlap): -EFSCORRUPTED naming the inode otherwise.
 */
typedef int (*mfs_bmap_walk_fn)(struct mfs_inode *ip, const struct mfs_bmap_ext *ext,
				void *priv);
int mfs_bmap_walk(struct mfs_inode *ip, mfs_bmap_walk_fn fn, void *priv);

/* ---- the extent btree (bmbt.c) --------------------------------------------------------- */
extern const struct mfs_btree_ops mfs_bmbt_ops;

/*
 * A cursor on inode ip's data-fork extent btree (dformat MFS_FMT_BTREE): root from the fork
 * root in ip->lit, cur->priv = ip.  With a transaction, new blocks come from the allocator
 * near the inode, and root changes, block counts (ip->nblocks) are written to the in-core
 * inode and logged in tp.  -EINVAL if the fork is not a btree, -EFSCORRUPTED if the fork root
 * disagrees with dnext.
 */
int mfs_bmbt_cur_init(struct mfs_btree_cur *cur, struct mfs_trans *tp, struct mfs_inode *ip);

/* One record on its own: non-empty, known flags, inside the file's block range and inside
 * one AG past its fixed blocks.  0 or -EFSCORRUPTED after a message naming inode `ino`. */
int mfs_bmbt_check_rec(const struct mfs_fs *fs, uint64_t ino, const struct mfs_bmbt_rec *rec);

#endif
