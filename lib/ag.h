/*
 * ag.h — an allocation group's own metadata: the four per-AG btrees (ops tables and
 * cursors), the AG free list, and formatting a new AG.
 *
 * Tree blocks: the free-space trees and the reverse map take their blocks from the AGFL
 * (and give them back to it), so that a split inside an allocation never recurses into the
 * trees being changed; in the reverse map those blocks, and the AGFL stock, are owned by
 * MFS_OWN_AG.  Inode btree blocks come from the ordinary allocator, owned by MFS_OWN_INOBT.
 */
#ifndef MFS_AG_H
#define MFS_AG_H

#include <stdint.h>
#include "btree.h"
#include "mendfs_format.h"

struct mfs_fs;
struct mfs_geom;
struct mfs_trans;
struct mfs_buf;

extern const struct mfs_btree_ops mfs_bnobt_ops;     /* key (startblock) */
extern const struct mfs_btree_ops mfs_cntbt_ops;     /* key (blockcount, startblock) */
extern const struct mfs_btree_ops mfs_inobt_ops;     /* key (startino) */
extern const struct mfs_btree_ops mfs_rmapbt_ops;    /* key (startblock) */

const struct mfs_btree_ops *mfs_ag_tree_ops(enum mfs_ag_tree which);

/*
 * A cursor on one tree of AG `agno`.  `agh_bp` is the AG header buffer, held by the caller
 * for the cursor's life; the root comes from it, and root changes are written to it inside
 * `tp` (which must hold the AG lock, see mfs_trans_lock_ag).  tp NULL: read-only.
 */
void mfs_ag_cur_init(struct mfs_btree_cur *cur, struct mfs_fs *fs, struct mfs_trans *tp,
		     uint32_t agno, enum mfs_ag_tree which, struct mfs_buf *agh_bp);

/* ---- AG free list ---------------------------------------------------------------------- */
/* Blocks the AGFL should hold before an operation on this AG's trees begins: enough for
 * the worst-case splits of the bno, cnt and rmap trees. */
unsigned mfs_agfl_need(const struct mfs_fs *fs, const struct mfs_agh *agh);
/* Take / give one block from / to the AGFL (inside tp, AG locked).  An empty list on take,
 * or a full one on give, means the fix-up before the operation was wrong or the AG header
 * is damaged: -EFSCORRUPTED naming the AG (never -ENOSPC, which means "AG full"). */
int mfs_agfl_get(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp, uint32_t *agbno);
int mfs_agfl_put(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp, uint32_t agbno);

/* ---- formatting a new AG ------------------------------------------------------------------ */
/* An extent already in use when the AG is formatted (the journal, an inode chunk...). */
struct mfs_ag_extent {
	uint32_t agbno;
	uint32_t len;
	uint64_t owner;             /* MFS_OWN_* or an inode number */
	uint64_t offset;            /* rmap offset (file offset | flags) for inode owners */
};

/* Blocks mfs_ag_format() itself uses right after the fixed AG headers (tree roots and the
 * AGFL stock): callers place their own extents at or after MFS_AG_FIXED_BLOCKS + this. */
uint32_t mfs_ag_format_blocks(const struct mfs_geom *geo);

/*
 * Write AG `agno`'s header, AGFL and its four btrees (built with the bulk loader): the
 * reverse map records the fixed headers, the tree blocks, the AGFL stock and `used`; the
 * inode btree holds `chunks`; all remaining space is free.  The superblock copy at agbno 0
 * is the caller's.  `used` must not overlap and must lie inside the AG after the blocks
 * above.  Written through the buffer cache: flush to make it durable.
 */
int mfs_ag_format(struct mfs_fs *fs, uint32_t agno, const struct mfs_ag_extent *used,
		  unsigned nused, const struct mfs_inobt_rec *chunks, unsigned nchunks);

#endif
