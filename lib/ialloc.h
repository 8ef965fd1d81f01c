/*
 * ialloc.h — allocating and freeing inodes through each AG's inode btree.
 *
 * Every change happens inside the caller's transaction and under the AG lock it takes
 * there (AGs in increasing order; see mfs_trans_lock_ag).  On any error the caller cancels
 * the transaction and every block is back as it was; it should then also call
 * mfs_inode_invalidate() (inode.h) for the inode it allocated or freed.
 *
 * The AG header's icount (inodes in allocated chunks) and ifree (free inodes in them)
 * move in step with the inode btree's records.  The superblock's summary counters are not
 * touched: they are rewritten from the AG headers at a clean unmount.
 */
#ifndef MFS_IALLOC_H
#define MFS_IALLOC_H

#include <stdint.h>

struct mfs_fs;
struct mfs_trans;

/*
 * Allocate an inode of type `mode`, in the AG of `parent_hint` when it can (0 or a bad
 * number: AG 0), then in the following AGs, wrapping round.  Takes a free inode of an
 * existing chunk near the parent, or allocates a new chunk of 64 inodes (aligned to its
 * size, reverse-map owner MFS_OWN_INODES) when the AG has none free.
 *
 * The new on-disk inode has `mode`, its default data fork format, link count 0, uid and gid
 * 0, all four times now and a fresh generation number; the caller fills in the rest through
 * mfs_iget()/mfs_inode_log().  Returns 0 with *ino set, -ENOSPC when no AG has a free inode
 * or room for a chunk, -EDEADLK when an AG that might have had room was skipped because
 * waiting for its lock would break the lock order (cancel and retry), -EINVAL for a bad
 * mode, or an I/O or corruption error.
 */
int mfs_ialloc(struct mfs_trans *tp, uint64_t parent_hint, uint16_t mode, uint64_t *ino);

/*
 * Free inode `ino`: write it as a free inode (mode 0, valid header) and set its bit in its
 * chunk's record.  A chunk whose 64 inodes are all free is itself freed (its record
 * deleted, its blocks given back to the AG).  -EINVAL for a number outside the inode
 * chunks' area, -EFSCORRUPTED if no chunk holds it or it is already free.
 */
int mfs_ifree(struct mfs_trans *tp, uint64_t ino);

/*
 * The inode btree's record of the chunk holding `ino`, the caller holding one of its AG's
 * locks (either keeps the inode btree still: fs.h), or alone with the filesystem: 0 with
 * the chunk's first inode number and free mask (*first and *freemask may be NULL), -ENOENT
 * when no chunk holds it, or a read or corruption error.  mfs_ino_in_use_locked(): 0 when that chunk holds it allocated,
 * -ENOENT when no chunk holds it or it is free, or the error.
 */
int mfs_inobt_chunk_locked(struct mfs_fs *fs, uint64_t ino, uint64_t *first,
			   uint64_t *freemask);
int mfs_ino_in_use_locked(struct mfs_fs *fs, uint64_t ino);

/*
 * Forget AG `agno`'s in-core list of chunks that may have a free inode (ialloc.c); the next
 * allocation there loads it again from the inode btree.  For whoever rebuilds that btree
 * (online repair), with the AG locked: the list is only a hint — every entry is checked
 * against its record before use — but a chunk missing from it is found again only when the
 * list runs empty, so a rebuilt tree is best followed by a reload.
 */
void mfs_ialloc_forget_hint(struct mfs_fs *fs, uint32_t agno);

#endif
