/*
 * journal.h — the metadata journal: a write-ahead log of committed transactions,
 * group-committed, checkpointed in place, replayed at mount.
 *
 * On disk (mendfs_format.h, "The metadata journal"): the superblock's log region holds
 * two alternating header copies and a circular area of records; a record is one
 * transaction or several joined (descriptors naming the blocks, their full images, a
 * commit block whose CRC32C covers them).  Every log block carries magic, CRC32C,
 * sequence and UUID.
 *
 * Life of a transaction (trans.c drives this when fs->log is set):
 *
 *   1. mfs_journal_commit() copies every joined buffer (or borrows it: MFS_JCOMMIT_BORROW
 *      below), reserves log space and a sequence
 *      number `lsn`, stamps the lsn into each metadata block's header, and queues the
 *      record.  Or, while the last queued record is still open (no writer has taken it),
 *      the transaction joins that record and shares its lsn: its images replace the
 *      record's images of the same blocks, so a block changed by many transactions
 *      between two log writes is logged once (a block freed and logged again within a
 *      record keeps only its last fate: image or revoke).  Those transactions are then
 *      replayed together or not at all, which a crash could do to them anyway (none of
 *      them was durable).  The buffers become dirty with that lsn (bcache.h): the cache
 *      will neither write nor evict them.  It is called while the caller still holds the locks that
 *      protect the buffers, and returns without I/O.  Only when the log has no room left
 *      does it wait: for the checkpoint in progress to move the tail, or, with none in
 *      progress, by checkpointing itself (the log thread normally keeps the log half
 *      empty, so this means the committers outrun the device).
 *   2. The record is written by the journal's log thread, which wakes when an eighth of
 *      the log is queued or when the queued transactions would take min(an eighth of the
 *      log, 128 blocks) without joins (so that durability trails asynchronous changes by
 *      that much at most), or by the first thread that asks for it to be durable
 *      (mfs_journal_force_lsn: fsync, a synchronous commit) while no batch is being
 *      written.  Group commit: the writer takes every ready queued record and issues a
 *      device flush (the data blocks the records map, written by their committers
 *      before commit, are durable from here), pwrite()s of the records with their commit
 *      blocks (laid out in a buffer allocated at open, up to 256 blocks a write: a write
 *      never allocates, so it cannot fail for want of memory), and a second flush (the
 *      records are durable).  Threads that ask meanwhile wait on a condition variable,
 *      and the next batch takes them all.  Many small transactions from many threads
 *      thus share one pair of flushes.  An asynchronous commit (mfs_journal_throttle)
 *      waits for the log only when three quarters of the log is queued unwritten.  On an
 *      image file whose log is still sparse (mkfs writes none of it), a batch also writes
 *      zeroes over the free log after it, a megabyte at a time, so that the host
 *      filesystem allocates the log once per megabyte instead of in every batch's flush.
 *   3. mfs_journal_checkpoint() writes the latest committed image of every logged block in
 *      place (only images whose record is durable: write-ahead), flushes the device, then
 *      moves the log tail in the header (and flushes again before the freed log space is
 *      reused).  The log thread starts one once half the log is in use; it also runs
 *      when the log is full (step 1), at close, and from mfs_bcache_flush().
 *
 * The log thread lives from mfs_journal_open() to close (or discard), which stop it and
 * wait for the batch or checkpoint it has in hand.  It takes only the journal's locks
 * and the cache's (never a caller's AG or inode lock), so a committer may wait for it
 * while holding its own.
 *
 * Write-ahead, by construction: a block's new contents reach its home location only from
 * the journal's own copy, only after the record holding them is durable.  Ordered data is
 * shared: the caller writes (pwrite) the data blocks before committing the metadata that
 * points at them, and the journal flushes the device before it writes any commit block —
 * unless a flush begun after the batch's last such commit has already completed, or none
 * of its transactions orders data (MFS_JCOMMIT_NODATA: names, attributes, frees).
 * A freed block is "revoked" in its transaction's record so that replay never writes an
 * older image over whatever the block holds later.  A freed extent stays "busy" (busy.h)
 * until the freeing transaction is durable: the journal owns the busy list and clears
 * entries as batches become durable, and the allocator does not give busy blocks to file
 * data before then (mfs_journal_busy()).
 *
 * Replay (mfs_journal_open) scans from the header's tail and applies every record whose
 * blocks all check out, in order, and stops at the first incomplete, torn or stale one
 * (older lap, other filesystem): a crash mid-write loses only transactions that were not
 * yet acknowledged as durable.  The next sequence then skips past anything a torn batch
 * could have left in the log, so such remains never match later.  A header with neither
 * copy valid is -EFSCORRUPTED with a message: the daemon refuses a read-write mount and a
 * read-only mount may skip recovery (mfs_journal_peek() tells what would be replayed).
 *
 * Errors: an I/O error writing the log is sticky — every later commit and force returns
 * it, since transactions after a lost one cannot be made durable in order; the daemon must
 * stop writing (the log thread's own failures are seen by the next commit, throttle or
 * force).  Waits (for the writer, a record being filled, a checkpoint freeing room) are
 * bounded by I/O and a wait longer than MFS_JOURNAL_WAIT_WARN seconds is reported.
 *
 * Checkpoint against free: the checkpoint chooses its blocks under the lock but writes them
 * without it.  Just before each write it re-checks, under the lock, that the block is still
 * logged with the history it chose (not revoked, and not revoked and logged anew), and marks
 * the block busy for the duration of the write; a transaction that frees a busy block waits
 * (one block write) before it can commit.  So once a free is committed, no checkpoint write
 * of the block's old image can land after it, over whatever the block holds next.
 *
 * Simplifications, stated: the checkpoint writes every durable logged block (no partial
 * checkpoints); the journal holds one copy of each logged block until it is checkpointed,
 * so its memory is bounded by the log size, as is the number of buffers the cache cannot
 * evict.  The superblock is read before replay: a replayed change to geometry fields
 * (growfs) needs the caller to re-read it.
 */
#ifndef MFS_JOURNAL_H
#define MFS_JOURNAL_H

#include <stdint.h>

struct mfs_fs;
struct mfs_buf;
struct mfs_journal;

#define MFS_JOURNAL_WAIT_WARN 10     /* seconds */

/* Write an empty journal (both header copies) over the log region of fs->geo; mkfs calls
 * it after the superblock geometry is fixed.  Writes through the device and flushes. */
int mfs_journal_format(struct mfs_fs *fs);

/*
 * Read the journal header, replay every complete record, write a fresh header, and attach
 * the journal to `fs` (fs->log, and the cache's flush hook).  `flags`: none yet, pass 0.
 * `out` may be NULL.  -EFSCORRUPTED (with a message; nothing is replayed) when the header
 * is unusable or a record that checks out names a block outside the filesystem or inside
 * the log, revokes an AG's fixed block, or holds an image for a fixed block (superblock, AG
 * header, free list) that does not verify as that block.
 */
int mfs_journal_open(struct mfs_fs *fs, unsigned flags, struct mfs_journal **out);

/* What a replay would do, without writing anything (read-only, norecovery mounts). */
struct mfs_journal_info {
	uint64_t tail_seq;         /* sequence expected at the tail */
	uint32_t tail_blk;         /* log block of the tail */
	uint32_t clean;            /* header says: closed cleanly */
	uint64_t records;          /* complete records found from the tail */
	uint64_t blocks;           /* image blocks in them */
};
int mfs_journal_peek(struct mfs_fs *fs, struct mfs_journal_info *info);

/* One block of a transaction: `bp` set: log its current contents; `bp` NULL: the block
 * `blkno` was freed (a revoke). */
struct mfs_jitem {
	struct mfs_buf *bp;
	uint64_t blkno;
};

/*
 * Queue a transaction (see step 1 above) and return its sequence in *lsn.  Nothing is
 * durable yet: call mfs_journal_force_lsn(log, *lsn) for that, or at least
 * mfs_journal_throttle(), after releasing the locks that protect the buffers.  Returns
 * -ENOSPC (with a message) for a transaction larger than the log, or when no room could
 * be made after a bounded number of checkpoints; -ENOMEM; or the journal's sticky I/O
 * error.  On error nothing was queued and the buffers were not touched (the caller may
 * restore them); once the record is queued it returns 0 — the change is committed in
 * memory and must not be undone — and it never waits for the log's own I/O after that.
 * `flags`: MFS_JCOMMIT_NODATA when the transaction makes no block reachable whose contents
 * were written on the device before the commit (no new data mapping, no unwritten extent
 * made written, no size grown over written data, no ordered tree blocks): its record then
 * needs no flush before it (see batch_write), whatever was written before it.
 */
#define MFS_JCOMMIT_NODATA 0x1u
/* MFS_JCOMMIT_BORROW: the images of this commit are its buffers' own bytes, not copies
 * (a rebuild's transaction, which changes a leaf per few thousand records: a copy each
 * doubled its memory).  The journal holds a reference to each buffer until its image is
 * written in place, and the buffer's bytes must not change until then except through
 * mfs_journal_freeze(), which mfs_trans_modify() and mfs_trans_get_new() call first: it
 * gives the image a copy of its own (as jbd2 "freezes" a buffer joined again before its
 * log write), after waiting for a log write or checkpoint write reading the buffer. */
#define MFS_JCOMMIT_BORROW 0x2u
/* `revs`, `nrevs`: more freed blocks (revokes), as plain block numbers (NULL, 0: none):
 * a rebuild frees tens of thousands, which cost 8 bytes each here, not an mfs_jitem. */
int mfs_journal_commit(struct mfs_journal *log, const struct mfs_jitem *items, unsigned n,
		       const uint64_t *revs, uint64_t nrevs, unsigned flags, uint64_t *lsn);

/*
 * The buffer of block `blkno` is about to change: if a committed image borrows its bytes
 * (MFS_JCOMMIT_BORROW), copy them into the image first, once no log write or checkpoint
 * write is reading them (it may wait for one: call it with no journal lock held; AG and
 * inode locks are fine, the log thread takes none).  Cheap when no image is borrowed (one
 * atomic load).  Never fails: every image has a block of its own reserved for this.
 */
void mfs_journal_freeze(struct mfs_journal *log, uint64_t blkno);

/*
 * Bound what asynchronous commits leave queued: when more than three quarters of the log
 * is queued but unwritten (the log thread writes it from an eighth on, so it is far
 * behind), force up to `lsn` (the caller's last commit).  Call it after an asynchronous
 * commit, without locks held.  Returns the journal's sticky error if the log died (the
 * log thread's write may have failed): an error of durability: the commit stays done in
 * memory (never cancel it), the log is dead and the caller must report the error (EIO to
 * the application) and stop writing.
 */
int mfs_journal_throttle(struct mfs_journal *log, uint64_t lsn);

/* Durable up to `lsn` (0 or an old lsn: returns at once).  fsync/fdatasync use this with
 * the lsn of the inode's last change.  -EINVAL (with a message) for an lsn never handed
 * out; the lsn of a transaction still being queued by another thread is waited for. */
int mfs_journal_force_lsn(struct mfs_journal *log, uint64_t lsn);
/* Every transaction committed so far is durable (syncfs). */
int mfs_journal_force(struct mfs_journal *log);
/* Stop the journal on purpose, as a failed log write would (EIO is the sticky error every
 * later commit returns, and a force that has something left to write; err, the cause, is
 * logged): for a chain of
 * rolled transactions that cannot go on and has left committed state that only the
 * recovery at the next mount may use (a rebuild's, repair_reap.c).  What was committed
 * before is made durable first, as far as the log can.  Logged as an error. */
void mfs_journal_kill(struct mfs_journal *log, int err);
/* The sticky error of a dead journal (0: alive). */
int mfs_journal_error(struct mfs_journal *log);
/* The same, and every write to the device issued before the call (file data overwritten
 * in place) is on stable storage: fsync.  The device is flushed once, or not at all when
 * the force wrote a batch (whose flushes began after the call, so they cover it); fsyncs
 * that arrive while another's flush is in flight share the next one.  After any failed
 * flush (the journal's sticky error) it returns that error, never 0 again. */
int mfs_journal_sync(struct mfs_journal *log);
/* Force, write every logged block in place, flush, advance the tail. */
int mfs_journal_checkpoint(struct mfs_journal *log);

/* Online repair of a damaged journal (repair/repair_journal.c): checkpoint (every committed
 * change in place, the tail moved past every durable record: a damaged record in the log is
 * no longer live), then write BOTH header copies from the state in memory. */
int mfs_journal_rewrite_header(struct mfs_journal *log);

/* Stop the log thread, checkpoint (every queued record written first), mark the header
 * clean, detach from the fs and free.  Returns the first error; the journal is freed in
 * any case. */
int mfs_journal_close(struct mfs_journal *log);
/* Detach and free without writing anything more (after an error, or to simulate a crash):
 * the log thread is stopped, after the batch or checkpoint it may have in hand. */
void mfs_journal_discard(struct mfs_journal *log);

/* The busy extents (busy.h) of the filesystem: entries are cleared as sequences become
 * durable.  Lives as long as the journal. */
struct mfs_busy;
struct mfs_busy *mfs_journal_busy(struct mfs_journal *log);

struct mfs_journal_stats {
	uint64_t commits;          /* transactions queued */
	uint64_t writes;           /* batches written to the log (group commits) */
	uint64_t flushes;          /* device flushes issued by the journal */
	uint64_t blocks_logged;    /* log blocks written (descriptors, images, commits) */
	uint64_t checkpoints;
	uint64_t blocks_checkpointed;
	uint64_t revoke_waits;     /* frees that waited for a checkpoint write of the block */
	uint64_t bg_writes;        /* batches (of `writes`) the log thread wrote */
	uint64_t bg_checkpoints;   /* checkpoints (of `checkpoints`) the log thread ran */
	uint64_t room_waits;       /* commits that waited for a checkpoint to free log room */
	uint64_t throttle_forces;  /* asynchronous commits whose throttle forced the log */
	uint64_t joins;            /* commits that joined the open record (of `commits`) */
	uint64_t blocks_filled;    /* zeroes written ahead of the head into a sparse log */
	uint64_t preflushes_saved; /* batches (of `writes`) that needed no flush before their
	                              records: a flush begun after their commits had ended */
	uint64_t replayed_records; /* at open */
	uint64_t replayed_blocks;
	uint64_t durable_lsn;      /* every sequence up to this one is durable */
	uint32_t log_used;         /* log blocks between the tail and the head */
	uint32_t log_size;         /* usable log blocks (the region minus the headers) */
	/* Commit images (journal.c, "images and the block map"): */
	uint32_t img_slabs;        /* slabs allocated now */
	uint32_t img_per_slab;     /* images a slab holds */
	uint32_t img_free;         /* images free now, in those slabs */
	uint64_t img_slab_allocs;  /* slabs ever allocated */
	uint32_t img_borrowed;     /* images borrowing their buffer's bytes now */
	uint64_t img_borrows;      /* images ever borrowed (MFS_JCOMMIT_BORROW) */
	uint64_t img_freezes;      /* borrowed images given a copy before their buffer changed */
};
void mfs_journal_get_stats(struct mfs_journal *log, struct mfs_journal_stats *st);

/*
 * For tests: a function the checkpoint calls, without locks held, for each block it
 * writes in place: with `writing` 0 after choosing the block and before checking it is
 * still logged, with `writing` 1 while its write is in progress (a revoke of the block
 * then waits); and once with `writing` 2 (blkno 0) after it moved the tail, before it
 * ends.  NULL removes it.
 */
typedef void (*mfs_journal_ckpt_hook)(void *arg, uint64_t blkno, int writing);
void mfs_journal_set_ckpt_hook(struct mfs_journal *log, mfs_journal_ckpt_hook fn, void *arg);

/*
 * For tests: a function called after each successful write or flush the journal issues, in
 * the order they complete (from the thread that issued them): MFS_JIO_LOG_WRITE for `n`
 * log blocks from log block `blkno` (records and headers), MFS_JIO_HOME_WRITE for a block
 * written in place by a checkpoint, MFS_JIO_FLUSH for a device flush, MFS_JIO_LOG_FILL for
 * `n` blocks of zeroes written ahead of the head into a sparse log (see batch_write).  Set it while no
 * other thread uses the journal (the log thread idle: nothing queued past its mark); NULL
 * removes it.
 */
enum mfs_jio { MFS_JIO_LOG_WRITE, MFS_JIO_HOME_WRITE, MFS_JIO_FLUSH, MFS_JIO_LOG_FILL };
typedef void (*mfs_journal_io_hook)(void *arg, enum mfs_jio what, uint64_t blkno, uint32_t n);
void mfs_journal_set_io_hook(struct mfs_journal *log, mfs_journal_io_hook fn, void *arg);

#endif
