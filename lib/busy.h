/*
 * busy.h — busy extents: space freed by a transaction that is not yet durable in the
 * journal, kept per AG so that the allocator does not hand it to file data too early.
 *
 * Why: file data is written in place before the transaction that maps it commits (ordered
 * data).  If a block freed by transaction T1 were given to another file and written while
 * T1 is not yet durable, a crash would replay up to before T1: the old owner still maps the
 * block, which now holds the new owner's bytes.  So a freed extent is "busy" from the free
 * until its transaction's sequence is durable, and data allocations skip busy ranges (or
 * force the log, which makes them durable, and search again).
 *
 * Metadata may reuse a busy extent (as in XFS): a metadata block reaches its home location
 * only through the journal's checkpoint of a durable record, and the log is durable in
 * sequence order, so by then the free that preceded the reuse is durable too.
 *
 * Life of an entry: mfs_busy_insert() when a transaction gives the space back (pending:
 * tagged with the transaction, which holds the AG's lock); at commit mfs_busy_commit()
 * stamps the commit's sequence (or drops the entry when that sequence is already
 * durable); a cancel drops the transaction's entries (mfs_busy_cancel); the journal calls
 * mfs_busy_durable() whenever a batch becomes durable and every committed entry up to that
 * sequence goes.  Entries of different transactions may overlap (a range reused as
 * metadata and freed again): a range is busy while any entry covers it.
 *
 * Locks: one mutex per AG list, a leaf lock (taken under the journal's lock and under the
 * AG locks, never the other way round).  Everything is in memory; the list of an AG is a
 * sorted array, so a gap query is a binary search plus the entries it meets.
 */
#ifndef MFS_BUSY_H
#define MFS_BUSY_H

#include <stdint.h>

struct mfs_busy;

int mfs_busy_create(uint32_t agcount, struct mfs_busy **out);
void mfs_busy_destroy(struct mfs_busy *b);

/* [agbno, agbno + len) of AG agno freed by the transaction `owner` (not yet committed).
 * -ENOMEM, -EINVAL for an AG out of range or an empty extent. */
int mfs_busy_insert(struct mfs_busy *b, uint32_t agno, uint32_t agbno, uint32_t len,
		    const void *owner);
/* `owner` committed with sequence `lsn` (0: nothing to wait for): its entries in AG agno
 * now wait for that sequence to be durable. */
void mfs_busy_commit(struct mfs_busy *b, uint32_t agno, const void *owner, uint64_t lsn);
/* `owner` was cancelled: its entries in AG agno go. */
void mfs_busy_cancel(struct mfs_busy *b, uint32_t agno, const void *owner);
/* Every sequence up to `lsn` is durable: committed entries up to it go. */
void mfs_busy_durable(struct mfs_busy *b, uint64_t lsn);

/* The first non-busy range of [start, end) in AG agno, at or after start, as long as it
 * runs: 1 and [*gs, *ge), or 0 when [start, end) is busy to its end. */
int mfs_busy_gap(struct mfs_busy *b, uint32_t agno, uint32_t start, uint32_t end,
		 uint32_t *gs, uint32_t *ge);
/* Whether [start, end) of AG agno overlaps a busy range. */
int mfs_busy_overlaps(struct mfs_busy *b, uint32_t agno, uint32_t start, uint32_t end);

struct mfs_busy_stats {
	uint64_t entries;          /* now, pending and committed */
	uint64_t committed;        /* now: waiting for the log (a force would clear them) */
	uint64_t inserted;         /* since creation */
	uint64_t cleared;          /* dropped because their sequence became durable */
	uint64_t forces;           /* log forces the allocator asked for to clear them */
	uint64_t trims;            /* free extents a data allocation had to cut around them */
};
void mfs_busy_get_stats(struct mfs_busy *b, struct mfs_busy_stats *st);
/* Counted by the allocator. */
void mfs_busy_count_force(struct mfs_busy *b);
void mfs_busy_count_trim(struct mfs_busy *b);

#endif
