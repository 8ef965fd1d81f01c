/*
 * trans.h — transactions: the set of metadata buffers one change modifies, made durable
 * together or not at all.
 *
 * Rule of use: read buffers as usual (mfs_buf_read), then call mfs_trans_modify() on each
 * one *before* changing its bytes.  The transaction takes its own reference and remembers
 * the block's old contents, so mfs_trans_cancel() puts every changed block back exactly as
 * it was (a failed allocation or an aborted repair leaves no trace), and mfs_trans_commit()
 * marks them all dirty at once.  Blocks allocated in the transaction come from
 * mfs_trans_get_new(); blocks freed by it are dropped with mfs_trans_forget().
 *
 * Without a journal a commit is "dirty in the buffer cache" and durability comes from
 * mfs_bcache_flush().  With one attached (fs->log, journal.h) a commit is logged: it
 * returns once the transaction is durable in the log (group-committed with other
 * threads'), or at once with MFS_TRANS_ASYNC (durable at the next force).
 */
#ifndef MFS_TRANS_H
#define MFS_TRANS_H

#include <stdint.h>

struct mfs_fs;
struct mfs_buf;
struct mfs_trans;

int mfs_trans_alloc(struct mfs_fs *fs, struct mfs_trans **out);
struct mfs_fs *mfs_trans_fs(const struct mfs_trans *tp);

/* Join `bp` (a buffer the caller holds) before changing it.  Idempotent.  -ENOMEM if the
 * old contents cannot be saved; the buffer is then unchanged and the caller must cancel. */
int mfs_trans_modify(struct mfs_trans *tp, struct mfs_buf *bp);

/* A new block for this transaction: zero-filled and joined; `meta` seals a CRC on write.
 * The transaction holds the reference: do not mfs_buf_put() it. */
int mfs_trans_get_new(struct mfs_trans *tp, uint64_t blkno, int meta, struct mfs_buf **out);

/* The block is freed by this transaction: at commit its buffer is dropped unwritten. */
int mfs_trans_forget(struct mfs_trans *tp, uint64_t blkno);

/* Space [agbno, agbno + len) of AG `agno` (whose lock tp holds) goes back to free space in
 * this transaction: keep it busy (busy.h) until the commit is durable.  No-op without a
 * journal.  -ENOMEM; the caller then cancels. */
int mfs_trans_busy(struct mfs_trans *tp, uint32_t agno, uint32_t agbno, uint32_t len);

/* From now on, the space this transaction gives back is kept busy as one span per AG,
 * from the first block given back to the last, entered in the busy list at the commit
 * (mfs_trans_commit fails with -ENOMEM, cancelled, when it cannot be): what a rebuild
 * frees, a piece per block of an old tree, costs no memory per piece.  The span may cover
 * space that was not freed, which is safe (busy space is only kept from file data, and
 * only until the commit is durable), but until the commit the transaction's own frees are
 * not busy: not for a transaction that allocates file data after freeing. */
void mfs_trans_busy_hull(struct mfs_trans *tp);

/* Lock the locks `what` (MFS_AGL_*, fs.h) of AG `agno` for the rest of the transaction
 * (released at commit or cancel; kept across mfs_trans_roll).  Idempotent.  Locks are
 * taken in their order (fs.h: AG by AG, an AG's inode lock before its space lock): waiting
 * for one below a lock already held is refused (-EDEADLK, logged as a bug); with `trylock`
 * nothing is waited for, and -EDEADLK says one was busy (then none of `what` was taken
 * here).  Both at once: see mfs_ag_lock (the inode lock is not held while waiting). */
int mfs_trans_lock_agl(struct mfs_trans *tp, uint32_t agno, unsigned what, int trylock);
/* Both locks of the AG: everything in it. */
int mfs_trans_lock_ag(struct mfs_trans *tp, uint32_t agno, int trylock);
/* May tp wait for the locks `what` of agno that it does not hold yet (none above them is
 * held)?  And mfs_trans_lock_agl with a wait where the order allows, a try where not. */
int mfs_trans_ag_may_wait(const struct mfs_trans *tp, uint32_t agno, unsigned what);
/* mfs_trans_lock_agl_ordered also only tries, when tp holds some AG lock already and one of
 * those it lacks is held long (below): a truncate holding its inode's AG must not hold it
 * for a whole rebuild of another AG, or of the same AG's space.  -EDEADLK then: cancel,
 * mfs_trans_wait_busy, try again. */
int mfs_trans_lock_agl_ordered(struct mfs_trans *tp, uint32_t agno, unsigned what);
/* Is one of the locks `what` of agno that tp lacks held long by another transaction? */
int mfs_trans_ag_held_long(const struct mfs_trans *tp, uint32_t agno, unsigned what);
/* tp will hold its AG locks for long (an online rebuild, from its first read to its last
 * batch after the commit, rolls included): counted as held long in the AGs (fs.h), so
 * that mfs_trans_lock_agl_ordered does not make others wait behind it holding theirs. */
void mfs_trans_hold_long(struct mfs_trans *tp);
/* After -EDEADLK from an AG lock that was busy (tried, or refused as held long) and the
 * transaction's cancel: wait, holding no AG lock, until that lock is free once, so that
 * the retry does not spin (or give up) while a rebuild holds it.  The lock is the last one
 * this thread found busy; nothing when there is none. */
void mfs_trans_wait_busy(void);
/* Does tp hold all of `what` of agno?  mfs_trans_holds_ag: its space lock, which changing
 * the AG's header and trees needs. */
int mfs_trans_holds_agl(const struct mfs_trans *tp, uint32_t agno, unsigned what);
int mfs_trans_holds_ag(const struct mfs_trans *tp, uint32_t agno);

/*
 * Ordered new blocks: the "write in place, log only the pointer" mode of bulk loads (like
 * XFS's ordered buffers).  `data` (blocksize bytes; sealed here when `meta`) is written to
 * block `blkno` now, through the device, and never logged: the transaction keeps only a
 * count.  The caller guarantees the block is free space that nothing on disk points at
 * until this transaction commits the pointer to it (a new tree's root in the AG header),
 * and that the transaction does not join the block otherwise (-EINVAL if it has).  Then a
 * crash or a cancel before the commit leaves free space holding garbage and the old
 * structure intact; the commit makes the pointer durable only after the block: with a
 * journal, its force flushes the device before it writes any commit (journal.h, ordered
 * data), so the rebuilt tree costs the log a few blocks however large it is.
 *
 * The first ordered write forces the log: a block freed by a transaction not yet durable
 * (busy.h) must not be overwritten before that free is on disk.  Any cached copy of the
 * block is dropped (a later read sees what was written).  Errors: the device's (the
 * caller cancels; nothing on disk points at the block), or the log's force.
 */
int mfs_trans_ordered_write(struct mfs_trans *tp, uint64_t blkno, void *data, int meta);
/* Keep the old bytes of every block written by mfs_trans_ordered_write() from now on in
 * `undo` (an array of MFS_TRANS_UNDO_RECSIZE(blocksize)-byte records, in the caller's
 * scratch file), and have mfs_trans_cancel() write them back: a cancelled transaction then
 * leaves the device bit-for-bit as it was, free space included.  The array must outlive
 * the transaction.  Without it, a cancel leaves the ordered blocks' new bytes in free
 * space. */
struct mfs_xfarray;
void mfs_trans_ordered_undo(struct mfs_trans *tp, struct mfs_xfarray *undo);
#define MFS_TRANS_UNDO_RECSIZE(bs) ((size_t)(bs) + 8)
/* Blocks written by mfs_trans_ordered_write() in this transaction. */
uint64_t mfs_trans_nordered(const struct mfs_trans *tp);

/* The transaction makes no block reachable whose contents were written on the device
 * before its commit (a name, an inode's attributes, a free; not a new or converted data
 * mapping, nor a size grown over written data): the journal then need not flush the
 * device before its record (MFS_JCOMMIT_NODATA).  Ordered tree blocks
 * (mfs_trans_ordered_write) are ordered regardless. */
void mfs_trans_nodata(struct mfs_trans *tp);

/* Blocks clean in the buffer cache when joined from now on (mfs_buf_is_clean: the device
 * holds their bytes) are not copied by mfs_trans_modify(): mfs_trans_cancel() reads their
 * old bytes back from the device (a read error drops the buffer from the cache instead).
 * For transactions that join many blocks (an AG rebuild's): their memory is then the
 * buffers alone.  Blocks dirty when joined are copied as always.  And at commit the
 * journal's images of its blocks are the buffers themselves, not copies
 * (MFS_JCOMMIT_BORROW, journal.h): a later mfs_trans_modify() of such a buffer, by any
 * transaction, first gives the image its own copy. */
void mfs_trans_reread(struct mfs_trans *tp);

/* Number of buffers joined so far (callers bound the size of their transactions). */
unsigned mfs_trans_nbufs(const struct mfs_trans *tp);
/* What a commit now would log: block images (*nimg) and revokes (*nrev). */
void mfs_trans_log_size(const struct mfs_trans *tp, uint64_t *nimg, uint64_t *nrev);
/* Buffers the transaction holds until it ends, each with its saved copy: those it changed
 * and those it changed and then freed (whose revokes cost the log little, but which stay
 * in memory as much as the others until the commit). */
unsigned mfs_trans_nheld(const struct mfs_trans *tp);

/* Commit; on a journal error the transaction is cancelled (exactly) and the error
 * returned.  An error from waiting for durability (log I/O) leaves the change committed
 * in memory but not durable: the journal is then dead (see journal.h); the caller must not
 * retry or undo, but report the error (EIO) and stop writing.  An MFS_TRANS_ASYNC commit
 * also waits, after releasing its locks, when much of the log is queued unwritten
 * (mfs_journal_throttle), and can then return such an error too. */
int mfs_trans_commit(struct mfs_trans *tp);
#define MFS_TRANS_ASYNC 0x1u     /* do not wait for the log: durable at the next force */
/* The same, with flags; *lsn (may be NULL) gets the journal sequence (0: no journal). */
int mfs_trans_commit_lsn(struct mfs_trans *tp, unsigned flags, uint64_t *lsn);
void mfs_trans_cancel(struct mfs_trans *tp);

/*
 * Commit *tpp (as mfs_trans_commit_lsn with flags) and go on in a new transaction that
 * holds the same AG locks, never released in between (XFS's transaction roll): a change
 * too large for one bounded transaction is made as a chain of them, nobody else seeing the
 * AG between two links.  The new one, in *tpp, inherits the modes set on the old one
 * (mfs_trans_reread, _busy_hull, _nodata).  On an error before the commit, the old one is
 * cancelled, its locks released, and *tpp is NULL; on an error waiting for the log after
 * the commit (durability: see mfs_trans_commit) *tpp is the new transaction, which the
 * caller cancels.  Waiting for the log (without MFS_TRANS_ASYNC, or throttled with it)
 * happens with the locks held.
 */
int mfs_trans_roll(struct mfs_trans **tpp, unsigned flags);

#endif
