/*
 * repair_rmap_live.h — the inode owners' part of one AG's reverse map, gathered while the
 * filesystem runs (repair_rmap_live.c), for the reverse-map rebuilder (repair_rmapbt.c).
 * The design and why it is sound are at the top of repair_rmap_live.c.
 */
#ifndef MFS_REPAIR_RMAP_LIVE_H
#define MFS_REPAIR_RMAP_LIVE_H

#include <stddef.h>
#include <stdint.h>

#include "repair_ag.h"

/* A gathered record: the reverse-map record, and the scan it came from (0: the first pass;
 * a later scan of the same owner supersedes it).  blockcount 0: the owner has nothing here
 * (a marker that the owner was scanned again). */
struct rep_srec {
	struct mfs_rmap_rec rec;
	uint32_t epoch;
	uint32_t pad;
};

struct rep_live {
	struct rep *r;
	struct mfs_fs *fs;
	uint32_t agno, aglen;
	struct mfs_xfarray *S;       /* struct rep_srec: what the owners said, every scan */
	struct mfs_xfarray *C;       /* struct mfs_rmap_rec: the old tree's inode records */
	uint32_t epoch;              /* of the last scan */
	uint64_t s_sorted;           /* S's count when it was last sorted (only appends
				      * change it: the same count, still sorted) */
	int c_ok;                    /* the old tree read whole this round */
	uint64_t *todo, *busy;       /* owners to scan again: under the lock; without it */
	size_t ntodo, nbusy, captodo, capbusy;
	uint64_t seen;
	unsigned rounds;
	uint64_t rescanned, waited;  /* owners scanned again under the lock; after waiting */
};

/* The owners' records: every inode in use, each under its own lock (shared), no AG lock
 * held but briefly one at a time to list the inode chunks.  Into lv->S, epoch 0. */
int rep_live_scan(struct rep_live *lv);

/*
 * With the AG locked (ar, from rep_ag_begin): the old tree's inode records against what
 * the owners said; an owner that disagrees is scanned again at once when its lock is free
 * (no waiting: the AG lock is held).  *settled: 1 when every owner's records now hold under
 * the lock; 0 when some owners were busy — the caller then lets the AG go (rep_ag_cancel),
 * calls rep_live_wait_busy() and tries again.  Also refuses (-EFSCORRUPTED) an owner whose
 * map puts the very data blocks the old tree gives it at other file offsets (which side is
 * damaged cannot be told).
 */
int rep_live_settle(struct rep_live *lv, struct agrep *ar, int *settled);

/* No lock held: scan again the owners that were busy (waiting for their locks). */
int rep_live_wait_busy(struct rep_live *lv);

/* Call fn on every record of the owners as last scanned (blockcount > 0). */
int rep_live_emit(struct rep_live *lv, int (*fn)(void *priv, const struct mfs_rmap_rec *rec),
		  void *priv);

/*
 * The blocks the new map gives to nobody and leaves out of free space (G: struct rext
 * in scratch, sorted by block): none of them may be an inode's in the old tree — that inode's map lost them
 * (damaged), and the rebuild would free its data.  -EFSCORRUPTED naming the inode.  The
 * old tree is asked about the gaps alone (ar: the AG, locked since the settle) when it
 * was read whole; otherwise what was read of it is.
 */
int rep_live_check_gaps(struct rep_live *lv, struct agrep *ar, struct mfs_xfarray *G);

void rep_live_release(struct rep_live *lv);

/* Tests only (check_repair): inode chunks listed at a time by the scan (4096; fewer in
 * tests, so that an AG's listing takes several batches). */
extern unsigned rep_live_chunk_batch;

/* Can b follow a (adjacent on disk) in one record? (repair_rmapbt.c) */
int rep_rmap_follows(const struct mfs_rmap_rec *a, const struct mfs_rmap_rec *b);

#endif
