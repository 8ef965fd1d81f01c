/*
 * repair_bmap.h — what the extent map rebuilder (repair_bmap.c) lends the inode core
 * rebuilder (repair_inode.c): an inode's space as the reverse map tells it, gathered from
 * every AG into the repair's scratch, and a new data fork built from it.
 *
 * The reverse map is the source of truth: every record of owner `ino` in every AG, in three
 * kinds — data extents (offset = file block), blocks of the data fork's btree (offset
 * MFS_RMAP_BMBT_BLOCK: a file's extent btree, a directory's name btree) and attribute-fork
 * blocks (MFS_RMAP_ATTR_FORK).  Nobody changes those records while the caller holds the
 * inode's lock exclusive (every change of an inode's space happens under it), or while the
 * inode cannot be loaded at all (nobody can change what nobody can load).
 */
#ifndef MFS_REPAIR_BMAP_H
#define MFS_REPAIR_BMAP_H

#include <stdint.h>

#include "mendfs_format.h"
#include "repair_priv.h"

struct mfs_inode;
struct mfs_trans;

/* Totals of what the reverse map gives the inode. */
struct rep_owned_sum {
	uint64_t data_recs, data_blocks;    /* data extents */
	uint64_t tree_recs, tree_blocks;    /* data fork btree blocks */
	uint64_t attr_recs, attr_blocks;    /* attribute btree and value blocks */
};

struct rep_fmap;

/*
 * Walk every AG's reverse map for records of inode `ino` (each AG under its lock, one at a
 * time; the caller may hold the inode's lock, never an AG lock), into arrays in r's
 * scratch (reserved here): every record as found, and the data extents as extent records
 * sorted by file block, checked (sane, not overlapping).  `old`: an in-core inode whose
 * present extent map, where it still reads and maps the very same blocks, says which
 * extents are unwritten (the reverse map does not record it); NULL: all written.
 * 0 with *out set; -EFSCORRUPTED (a damaged reverse map, overlapping extents) or a scratch,
 * cancel or pressure error, with r's reason set.
 */
int rep_fmap_gather(struct rep *r, uint64_t ino, struct mfs_inode *old, struct rep_fmap **out);
void rep_fmap_free(struct rep_fmap *m);
const struct rep_owned_sum *rep_fmap_sum(const struct rep_fmap *m);

/* Lock, in tp and in increasing order, the AGs the rebuild will change: the inode's and
 * those of the old data fork btree blocks (all: of every block the inode owns), so that
 * freeing them never breaks the lock order. */
int rep_fmap_lock(struct rep_fmap *m, struct mfs_trans *tp, int all);

/* A data fork built from the reverse map: what goes into the inode. */
struct rep_dfork {
	uint8_t format;                 /* MFS_FMT_EXTENTS or MFS_FMT_BTREE */
	uint32_t next;                  /* extents inline, or btree levels */
	uint64_t tree_blocks;           /* blocks of the new extent btree */
	uint8_t lit[MFS_MAX_INODESIZE]; /* the data fork's bytes, forksize of them */
};

/*
 * In tp (after rep_fmap_lock): the extents inline when they fit in `forksize` bytes, else
 * (may_btree) a new extent btree bulk-loaded into newly allocated blocks near the inode
 * (reverse-mapped to (ino, MFS_RMAP_BMBT_BLOCK)); then the old data fork btree blocks the
 * reverse map names are freed (their mappings removed with them).  -EFSCORRUPTED when the
 * extents need a btree and may_btree is 0 (a symlink), -ENOSPC, or a scratch error.
 */
int rep_fmap_build(struct rep_fmap *m, struct mfs_trans *tp, uint32_t forksize, int may_btree,
		   struct rep_dfork *out);

/* In tp: give back every block the reverse map names for the inode (clearing it), or only
 * its attribute fork's blocks (a dropped fork). */
int rep_fmap_free_all(struct rep_fmap *m, struct mfs_trans *tp);
int rep_fmap_free_attr(struct rep_fmap *m, struct mfs_trans *tp);

/* The end of an inode repair's transaction: with err 0, the last chance to stop (test
 * hook, pressure, cancel) and the commit; else (or then stopped) the cancel.  The result. */
int rep_ino_finish(struct rep *r, struct mfs_trans *tp, uint64_t ino, int err);

#endif
