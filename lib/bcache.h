/*
 * bcache.h — the buffer cache: one buffer per metadata block, shared by all threads,
 * bounded in size, verified on read, sealed (CRC) on write-back.
 *
 * A buffer is held by a reference from mfs_buf_read()/mfs_buf_get() until mfs_buf_put().
 * Its contents are protected by the caller's locks (the AG lock for AG metadata, the inode
 * lock for an inode's metadata), not by the cache.  Unreferenced buffers sit on an LRU list;
 * when the cache is over its budget the oldest are dropped, dirty ones written back first.
 * A transaction (trans.h) holds references to every buffer it changes, so a half-changed
 * buffer is never written back by eviction.
 */
#ifndef MFS_BCACHE_H
#define MFS_BCACHE_H

#include <stddef.h>
#include <stdint.h>
#include "verify.h"

struct mfs_dev;
struct mfs_bcache;

/* What callers see of a buffer; the cache's bookkeeping is private to bcache.c. */
struct mfs_buf {
	uint64_t blkno;          /* fsblock */
	void *data;              /* blocksize bytes */
};

struct mfs_bcache_stats {
	uint64_t hits, misses, reads, writes, evictions;
	uint64_t over_budget;    /* times every buffer was held and the budget was exceeded */
	size_t nbufs, ndirty;
	size_t bytes, max_bytes;
	size_t peak_bytes;       /* the sum of each shard's most buffers at once: a lower bound
				  * of the memory its block chunks have taken, which is never
				  * given back before the cache goes */
};

int mfs_bcache_create(struct mfs_dev *dev, uint32_t blocksize, size_t max_bytes,
		      struct mfs_bcache **out);
/* Write back dirty buffers, then free everything.  Returns the first write error. */
int mfs_bcache_destroy(struct mfs_bcache *bc);
/* Free the cache and every buffer without writing any (after an error, or to simulate a
 * crash); like destroy, `bc` is gone afterwards. */
void mfs_bcache_discard(struct mfs_bcache *bc);

/* The UUID that verified blocks must carry. */
void mfs_bcache_set_uuid(struct mfs_bcache *bc, const uint8_t uuid[16]);
uint32_t mfs_bcache_blocksize(const struct mfs_bcache *bc);
struct mfs_dev *mfs_bcache_dev(const struct mfs_bcache *bc);
void mfs_bcache_get_stats(struct mfs_bcache *bc, struct mfs_bcache_stats *st);

/*
 * Read block `blkno` and, when `exp` is given, verify it (see verify.h); the buffer is then
 * sealed with a fresh CRC whenever it is written back.  A block that fails verification
 * is not kept in the cache.  Returns -EFSCORRUPTED/-EFSBADCRC, an I/O errno, or 0.
 */
int mfs_buf_read(struct mfs_bcache *bc, uint64_t blkno, const struct mfs_blk_expect *exp,
		 struct mfs_buf **out);

/*
 * mfs_buf_read for a sweep of more blocks than the cache should hold (a whole tree, walked
 * once): a block the cache did not hold is dropped again at its last mfs_buf_put, unless
 * another reader looked it up meanwhile or another thread changed it (then it stays, as
 * read by mfs_buf_read); changed by the sweep's own thread (mfs_bcache_sweep on while its
 * transaction commits: a rebuild's reap), it is dropped once the journal has written it
 * home (mfs_bcache_checkpointed).  A block the cache held is used as it is, without
 * counting as a use for the eviction.  The sweep then takes a few buffers instead of growing the cache to its
 * bound and evicting everything else.
 */
int mfs_buf_read_once(struct mfs_bcache *bc, uint64_t blkno, const struct mfs_blk_expect *exp,
		      struct mfs_buf **out);
/* From now on this thread's mfs_buf_read()s are mfs_buf_read_once()s (on), or not (0):
 * for a phase of work that sweeps whole structures through code that reads them the
 * ordinary way (a repair's scan of every owner).  Returns the previous state, to restore:
 *     int was = mfs_bcache_sweep(1); ...; mfs_bcache_sweep(was); */
int mfs_bcache_sweep(int on);

/*
 * Copy blocks [blkno, blkno + n) into dst (n * blocksize bytes) as mfs_buf_read would show
 * them — a cached buffer's contents where the cache holds the block (dirty or not), the
 * device's elsewhere — without adding anything to the cache: a sweep of more metadata than
 * the cache holds (the inode tables, by a scrub) would otherwise evict everything else one
 * block at a time.  Uncached blocks that lie together are read with one pread.  Nothing is
 * verified.  The caller holds whatever lock keeps these blocks from changing (a block
 * another thread is reading in is waited for).  Returns 0 or an I/O errno.
 */
int mfs_bcache_read_range(struct mfs_bcache *bc, uint64_t blkno, unsigned n, void *dst);

/* A buffer for a block about to be written whole: zero-filled, nothing read.  `meta`: seal
 * the CRC at write-back.  Got by a sweep (mfs_bcache_sweep on), a block the cache did not
 * hold is kept only until written home, as mfs_buf_read_once's. */
int mfs_buf_get_new(struct mfs_bcache *bc, uint64_t blkno, int meta, struct mfs_buf **out);

void mfs_buf_hold(struct mfs_buf *bp);
void mfs_buf_put(struct mfs_buf *bp);
void mfs_buf_mark_dirty(struct mfs_buf *bp);
int mfs_buf_is_dirty(const struct mfs_buf *bp);
/* The cached copy of its block, neither dirty nor being written nor loaded: the device
 * holds its bytes (but for a metadata block's CRC, sealed only in what is written). */
int mfs_buf_is_clean(const struct mfs_buf *bp);
/* Seal the CRC at write-back (a block that now holds metadata). */
void mfs_buf_set_meta(struct mfs_buf *bp);
/* Set (1) or clear (0) "holds metadata": whether a CRC is sealed into it at write-back. */
void mfs_buf_set_meta_state(struct mfs_buf *bp, int meta);

/* The block was freed: drop its buffer without writing it, if nobody holds it. */
void mfs_bcache_forget(struct mfs_bcache *bc, uint64_t blkno);

/* Write back every dirty buffer, then make it durable.  No transaction may be open.
 * With a journal attached, its log_sync hook runs first (force the log, checkpoint). */
int mfs_bcache_flush(struct mfs_bcache *bc);

/*
 * Journal support (journal.h).  A buffer marked dirty with a log sequence `lsn` (nonzero)
 * belongs to the journal until mfs_bcache_checkpointed(): the cache neither writes it in
 * place nor evicts it, because the log must hold its contents durably first and the
 * journal writes the committed image itself at checkpoint.  Call with the lsn of the
 * commit that changed it; the buffer keeps the highest.
 */
void mfs_buf_mark_dirty_lsn(struct mfs_buf *bp, uint64_t lsn);
/* The contents of `blkno` as of `lsn` are durable in place: the buffer, if its last
 * journaled change is not newer, becomes clean (and evictable). */
void mfs_bcache_checkpointed(struct mfs_bcache *bc, uint64_t blkno, uint64_t lsn);
/* Hook run at the start of mfs_bcache_flush(), without the cache lock (NULL: none). */
void mfs_bcache_set_log(struct mfs_bcache *bc, int (*sync)(void *priv), void *priv);
/* Whether the buffer holds metadata (sealed with a CRC on write). */
int mfs_buf_is_meta(const struct mfs_buf *bp);

#endif
