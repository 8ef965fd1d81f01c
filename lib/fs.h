/*
 * fs.h — an open mendfs: device, buffer cache, geometry and the per-AG state.
 *
 * mfs_fs_open() reads and checks the primary superblock and nothing proportional to the
 * filesystem's size, so opening a 16 TiB image is immediate.  mkfs builds its handle with
 * mfs_fs_create() from a geometry before any superblock exists.
 */
#ifndef MFS_FS_H
#define MFS_FS_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include "geom.h"
#include "verify.h"

struct mfs_dev;
struct mfs_bcache;
struct mfs_buf;
struct mfs_journal;
struct mfs_icache;

/*
 * The two locks of an AG.  `ilock` serialises changes to the AG's inode cluster buffers (an
 * inode being logged); `lock` (its space lock) changes to its header, free-space trees,
 * reverse map and free list.  The inode btree and the chunks themselves change only under
 * both, so either one keeps them still for a reader.  Order: AG by AG in increasing order,
 * and within an AG `ilock` before `lock` (trans.h's keys); a lock below one held is only
 * tried, never waited for.  A rebuild of an AG's free-space trees or reverse map holds the
 * space lock alone, for long: inode changes in that AG go on meanwhile.  A rebuild marks
 * the locks it holds as held long (long_held); a transaction that already holds AG locks
 * does not queue behind such a lock (trans.h mfs_trans_lock_agl_ordered): it is cancelled
 * and waits holding none, so a truncate or unlink that frees in the AG waits for the
 * rebuild without stopping the AG's other inode changes.  Readers of the AG header under
 * the inode lock alone read only what changes under both (mfs_read_agh_inodes).
 */
#define MFS_AGL_INODES 0x1u       /* ilock */
#define MFS_AGL_SPACE  0x2u       /* lock */
#define MFS_AGL_ALL    0x3u

struct mfs_perag {
	uint32_t agno;
	pthread_mutex_t ilock;    /* this AG's inode cluster buffers (see above) */
	pthread_mutex_t lock;     /* this AG's header, free space, reverse map, free list */
	/* Holders of `ilock` / `lock` for long (a rebuild: mfs_trans_hold_long), counted;
	 * a transaction that holds other AG locks does not wait for these (trans.h). */
	unsigned long_held[2];
	/* statfs's view of the AG (fs/attr.c), kept for the time a rebuild holds its space
	 * lock: free blocks (the free list's surplus included), inodes, free inodes. */
	uint64_t sf_free, sf_icount, sf_ifree;
	int sf_valid;
	/* ialloc.c's hint, under `lock`: sorted start inodes of chunks that may have a free
	 * inode (nichunks of them); see ialloc.c for what it promises. */
	uint32_t *ichunks;
	uint32_t nichunks, ichunks_cap;
	int ichunks_loaded;
};

struct mfs_fs {
	struct mfs_dev *dev;
	struct mfs_bcache *bc;
	struct mfs_geom geo;
	struct mfs_perag *ag;     /* geo.agcount entries */
	unsigned flags;
	struct mfs_journal *log;  /* attached metadata journal (journal.h), or NULL: then a
	                             transaction commit only dirties the cache */
	struct mfs_icache *icache; /* in-core inode cache (inode.h), or NULL: attached with
	                              mfs_icache_init, destroyed before mfs_fs_close */
	/* Commits so far that changed metadata: mfs_trans_commit adds 1 (atomically, while it
	 * still holds its AG locks) for every transaction with blocks.  Equal readings at two
	 * times mean no committed metadata changed between them: the online checkers keep
	 * what they collected (an inode census, a directory's entries) as long as it stays
	 * the same (mfs_fs_changes). */
	uint64_t changes;
};

static inline uint64_t mfs_fs_changes(const struct mfs_fs *fs)
{
	return __atomic_load_n(&fs->changes, __ATOMIC_ACQUIRE);
}

#define MFS_OPEN_RDONLY   0x1u
#define MFS_OPEN_EXCL     0x2u    /* lock the device against other mendfs processes */
#define MFS_OPEN_JOURNAL  0x4u    /* replay the journal and attach it (read-write only);
                                     a corrupt journal header fails with -EFSCORRUPTED */
#define MFS_OPEN_SB_COPY  0x8u    /* the primary superblock unusable: take the geometry from
                                     the first superblock copy that verifies (a scan of the
                                     device; mendfs_repair), and say so in a message */

#define MFS_DEFAULT_CACHE_BYTES (64u << 20)

/* Lock (outside any transaction) the locks `what` (MFS_AGL_*) of AG agno, in order.  Both:
 * the inode lock is never held while waiting for the space lock (it is let go, the space
 * lock waited for, and the inode lock tried under it), so that a long holder of the space
 * lock (a rebuild) does not stop the AG's inode changes through us. */
void mfs_ag_lock(struct mfs_fs *fs, uint32_t agno, unsigned what);
void mfs_ag_unlock(struct mfs_fs *fs, uint32_t agno, unsigned what);
/* Lock one lock (`one`: MFS_AGL_INODES or MFS_AGL_SPACE) of AG agno, waiting as long as
 * it is not held long (long_held, looked at again every 10 ms of the wait): -EBUSY, not
 * locked, once it is (a rebuild holds it, or is about to). */
int mfs_ag_lock_watch(struct mfs_fs *fs, uint32_t agno, unsigned one);
/* statfs's view of AG agno (sf_*) from its header, read under its space lock: by statfs,
 * and by a rebuild when it takes the lock (what statfs gives meanwhile). */
struct mfs_agh;
void mfs_ag_publish_counts(struct mfs_fs *fs, uint32_t agno, const struct mfs_agh *agh);

/* Open a formatted device.  `cache_bytes` 0 means the default. */
int mfs_fs_open(const char *path, unsigned flags, size_t cache_bytes, struct mfs_fs **out);
/* A handle over an already open device with a given geometry (mkfs).  Takes `dev`. */
int mfs_fs_create(struct mfs_dev *dev, const struct mfs_geom *geo, size_t cache_bytes,
		  struct mfs_fs **out);
/* Close the journal (checkpoint), flush every dirty buffer and close.  Returns the first
 * error. */
int mfs_fs_close(struct mfs_fs *fs);

/* What the verifier expects of each kind of AG block. */
void mfs_expect_sb(const struct mfs_fs *fs, uint32_t agno, struct mfs_blk_expect *e);
void mfs_expect_agh(const struct mfs_fs *fs, uint32_t agno, struct mfs_blk_expect *e);
void mfs_expect_agfl(const struct mfs_fs *fs, uint32_t agno, struct mfs_blk_expect *e);

/* Read (and verify) the superblock copy, AG header or AGFL of AG `agno`. */
int mfs_read_sb(struct mfs_fs *fs, uint32_t agno, struct mfs_buf **out);
int mfs_read_agh(struct mfs_fs *fs, uint32_t agno, struct mfs_buf **out);
int mfs_read_agfl(struct mfs_fs *fs, uint32_t agno, struct mfs_buf **out);
/* The AG header for a holder of the AG's inode lock alone (fs.h's locks): checked only in
 * what changes under both locks (identity, the inode btree's root and height, the inode
 * counts), as the space lock's holder may be changing the rest; read nothing else. */
int mfs_read_agh_inodes(struct mfs_fs *fs, uint32_t agno, struct mfs_buf **out);

/* Sanity of an AG header's fields against the geometry (roots in range, levels, counters). */
int mfs_agh_check(const struct mfs_fs *fs, uint32_t agno, const struct mfs_agh *agh);

#endif
