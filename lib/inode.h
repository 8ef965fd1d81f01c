/*
 * inode.h — in-core inodes: a cache shared by all threads, keyed by inode number, of
 * host-order copies of on-disk inodes (struct mfs_dinode), read and verified once and
 * written back into their cluster buffer inside a transaction.
 *
 * Life of an in-core inode
 * ------------------------
 * mfs_iget() returns a referenced inode; mfs_iput() drops the reference.  While one
 * reference exists, every mfs_iget() of the same number returns the same pointer (an inode
 * is never instantiated twice).  An unreferenced inode stays cached on an LRU list until the
 * cache holds more than its limit of unreferenced inodes; then the oldest are freed.
 * mfs_iput() never does more than that: freeing an unlinked inode's space ("inactivation")
 * is the caller's job, done in a transaction by a worker (see mfs_inode_needs_inactive).
 *
 * Locking
 * -------
 * ip->lock (a rwlock) protects every field below it and the inode's forks.  Take it shared
 * to read, exclusive to change.  The identity fields above it never change.
 *
 * Writing an inode
 * ----------------
 * Change the in-core fields under the exclusive lock, then mfs_inode_log(tp, ip) copies
 * them into the inode's cluster buffer inside `tp` (mfs_trans_modify first, then encode and
 * seal the inode's CRC), so commit, cancel and the journal work as for any block.  Because
 * a cluster block holds several inodes and a transaction saves and restores whole blocks,
 * mfs_inode_log() also locks the inode's AG in the transaction: two transactions never
 * change the same cluster block at once.  (AGs are locked in increasing order: when `tp`
 * already holds a higher AG and the inode's AG is busy, -EDEADLK; lock the AGs of every
 * inode you will log first, in order, with mfs_trans_lock_ag, or cancel and retry.)
 *
 * Rules: keep your reference to every inode you logged until the transaction is
 * committed or cancelled; after mfs_trans_cancel(), call mfs_inode_invalidate() for every
 * inode the transaction logged, allocated or freed, so that the in-core copy is read again
 * from the restored buffer (the next mfs_iget() does it; a holder of the exclusive lock may
 * call mfs_inode_reload() at once).
 */
#ifndef MFS_INODE_H
#define MFS_INODE_H

#include "list.h"

#include <pthread.h>
#include <stdint.h>
#include <time.h>

struct mfs_fs;
struct mfs_trans;

struct mfs_inode {
	/* identity: constant while the inode is referenced */
	struct mfs_fs *fs;
	uint64_t ino;
	uint32_t litsize;           /* bytes in the literal area (inodesize - dinode core) */

	pthread_rwlock_t lock;      /* protects everything below, and the forks */

	/* the dinode core, host order (see struct mfs_dinode) */
	uint16_t mode;              /* 0: free inode */
	uint8_t dformat, aformat;   /* enum mfs_fork_format */
	uint32_t nlink;
	uint32_t uid, gid;
	uint64_t size;
	uint64_t nblocks;
	struct timespec atime, mtime, ctime, btime;
	uint32_t flags;             /* MFS_DIFLAG_* */
	uint32_t generation;
	uint32_t dnext, anext;
	uint16_t forkoff;           /* attribute fork offset in 8-byte units (0: none) */
	uint32_t rdev;
	uint64_t next_unlinked;

	/* In core only, never read from or written to disk (a reload keeps it): set by the
	 * caller that drops the link count to 0 (the daemon's unlink, rmdir, rename over a
	 * target), cleared by whoever frees the inode.  An inode whose link count is 0 without
	 * it was loaded so: an orphan for the mount's recovery, or a damaged link count that
	 * must not be taken as leave to free it. */
	int unlinked_here;

	/* private to inode.c */
	struct mfs_inode *hnext;            /* hash chain */
	struct mfs_list lru;                /* on its shard's LRU iff READY and unreferenced */
	unsigned refs;
	int state;
	int load_err;
	int stale;

	uint8_t lit[];              /* the literal area, litsize bytes */
};

/* Largest link count an inode may have. */
#define MFS_LINK_MAX 0x7fffffffu

/*
 * Attach an inode cache to `fs` (fs->icache), keeping at most about `max_unused`
 * unreferenced inodes (0: the default, MFS_ICACHE_DEFAULT_UNUSED).  The cache is split in
 * 64 shards by inode number, each with its own lock, LRU and a limit of
 * ceil(max_unused / 64), so the bound is max_unused rounded up to a multiple of 64.
 * -EEXIST if one is attached.
 */
#define MFS_ICACHE_DEFAULT_UNUSED 65536u
int mfs_icache_init(struct mfs_fs *fs, unsigned max_unused);
/* Free every cached inode and detach the cache.  Every reference must have been dropped;
 * returns -EBUSY (and frees nothing) otherwise.  Call before mfs_fs_close(). */
int mfs_icache_destroy(struct mfs_fs *fs);

struct mfs_icache_stats {
	uint64_t hits, misses, evictions, reloads;
	uint64_t cached;            /* inodes in the cache */
	uint64_t unused;            /* of which unreferenced (on the LRU) */
	uint64_t max_unused;
};
void mfs_icache_get_stats(struct mfs_fs *fs, struct mfs_icache_stats *st);

#define MFS_IGET_FREE       0x1u    /* a free inode (mode 0) is returned instead of -ENOENT */
#define MFS_IGET_UNTRUSTED  0x2u    /* the number comes from outside (a file handle): a
                                       number outside the filesystem is -EINVAL rather than
                                       corruption, and the inode btree is consulted: an
                                       inode in no allocated chunk, or free, is -ENOENT.
                                       Locks the inode's AG for the lookup: not to be used
                                       inside a transaction that holds AG locks. */
#define MFS_IGET_NOWAIT     0x4u    /* never wait for the inode's lock (a stale copy is
                                       reloaded under it, a free one checked under it):
                                       -EDEADLK when another thread holds it.  For a caller
                                       holding AG locks (the lock order puts inode locks
                                       first), e.g. taking the inode it just allocated, whose
                                       old in-core copy a reader may still hold: cancel and
                                       retry. */

/*
 * Get a referenced in-core inode.  Reads and verifies the on-disk inode on a cache miss:
 * header and CRC (mfs_dinode_verify), then the fields (a known file type, fork formats
 * valid for it, fork offset and extent counts inside the literal area, link count, time
 * nanoseconds).  Returns 0, -ENOENT (a free inode without MFS_IGET_FREE), -EDEADLK (its
 * lock busy, with MFS_IGET_NOWAIT), -EINVAL, an I/O errno, -ENOMEM, or
 * -EFSCORRUPTED/-EFSBADCRC after a message naming the inode.
 */
int mfs_iget(struct mfs_fs *fs, uint64_t ino, unsigned flags, struct mfs_inode **out);
/* mfs_iget, then the inode's lock, shared or (excl) exclusive: -ENOENT also when the inode
 * was freed while this waited for its lock (the in-core copy of an inode the daemon freed
 * says mode 0), reference and lock then dropped.  On success the caller unlocks and puts.
 * Not with MFS_IGET_FREE (a free inode is what it refuses). */
int mfs_iget_locked(struct mfs_fs *fs, uint64_t ino, unsigned flags, int excl,
		    struct mfs_inode **out);
/* Take another reference to an inode already held. */
void mfs_ihold(struct mfs_inode *ip);
/* Drop a reference.  Cheap: never does I/O and never frees disk space. */
void mfs_iput(struct mfs_inode *ip);

/*
 * 1 when the inode is unlinked (nlink 0, not free) and the caller's reference is the last:
 * it should now be freed — its forks' space released and mfs_ifree() (ialloc.h) called in
 * a transaction — by a worker, not in the path that dropped the last user.  The caller
 * holds a reference and at least the shared lock.
 */
int mfs_inode_needs_inactive(struct mfs_inode *ip);

/* Copy the in-core fields into the inode's cluster buffer inside `tp` and seal the inode's
 * CRC; takes the inode lock of the inode's AG in `tp` (mfs_inode_lock_ag).  Caller holds
 * ip->lock exclusive. */
int mfs_inode_log(struct mfs_trans *tp, struct mfs_inode *ip);
/* The inode lock (fs.h: MFS_AGL_INODES) of ip's AG in tp, waited for where the lock order
 * allows (else tried: -EDEADLK when busy).  The map, directory and attribute changes take
 * it first, so that their allocations come after it in the order and their final
 * mfs_inode_log finds it held.  Not the AG's space lock: an allocation takes that itself,
 * and a long rebuild of the AG's space trees does not stop the inode's changes. */
int mfs_inode_lock_ag(struct mfs_trans *tp, struct mfs_inode *ip);

/*
 * Blocks of the btrees an inode owns (its extent map, directory names, attributes): one
 * block allocated near the tree's root (or the inode when the tree has none yet) with
 * reverse-map owner (ip->ino, rmap_offset), counted in ip->nblocks; and freeing one.  For
 * the ops tables' alloc_block/free_block; `cur` must carry a transaction.  The caller logs
 * the inode.
 */
struct mfs_btree_cur;
int mfs_inode_btree_alloc(struct mfs_btree_cur *cur, struct mfs_inode *ip,
			  uint64_t rmap_offset, uint64_t *fsb);
int mfs_inode_btree_free(struct mfs_btree_cur *cur, struct mfs_inode *ip,
			 uint64_t rmap_offset, uint64_t fsb);

/* Read the on-disk inode again into the in-core one (after a cancel).  Caller holds the
 * exclusive lock.  On error the in-core copy is left unchanged and marked stale. */
int mfs_inode_reload(struct mfs_inode *ip);
/* If inode `ino` is cached, mark it to be read again at its next mfs_iget(). */
void mfs_inode_invalidate(struct mfs_fs *fs, uint64_t ino);

/*
 * Whether an on-disk inode (past mfs_dinode_verify) is in use: THE rule for every judge of
 * free or used (the inode btree's checker and rebuild, allocation, the inode checker and
 * rebuild).  A free inode is written by mfs_dinode_init() with mode 0 and every field past
 * the header zero; an inode in use always has a mode and a data fork format (never
 * MFS_FMT_NONE, from mfs_ialloc on).  So an inode is in use when its mode is not 0, or when
 * it has links or any fork content (a fork format, fork offset, extent count or block
 * count): a mode zeroed by damage leaves an inode in use whose type is lost (repaired from
 * its fork and the entries naming it), not a free inode whose blocks would leak and whose
 * slot would be handed out again.  mfs_dinode_check() refuses mode 0 with any of those.
 */
int mfs_dinode_in_use(const void *dinode);

/*
 * Check the fields of an on-disk inode (already past mfs_dinode_verify) for sanity.  0 or
 * -EFSCORRUPTED after a message naming the inode and the field.  `inodesize` bytes.
 */
int mfs_dinode_check(const void *dinode, uint32_t inodesize, uint64_t ino);

/* Where inode `ino` may live: 0 if its number lies in an AG's inode-capable area (inside
 * the AG, past the fixed headers, among the first 64 inodes of its chunk), else -EINVAL. */
int mfs_ino_check(const struct mfs_fs *fs, uint64_t ino);

/* The default data fork format of a new inode of type `mode`. */
uint8_t mfs_inode_default_dformat(uint16_t mode);

#endif
