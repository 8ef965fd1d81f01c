/*
 * inode_init.h — filling in one on-disk inode from scratch (mkfs, and later inode
 * allocation): the header, ownership, times, link count; then the CRC seal.
 *
 * A free inode (one whose freemask bit is set in the inode btree) is written as mode 0 with
 * a valid header: magic, self number, UUID and CRC, every other field zero.  So every inode
 * slot of an allocated chunk passes mfs_dinode_verify(), free or not.
 */
#ifndef MFS_INODE_INIT_H
#define MFS_INODE_INIT_H

#include <stdint.h>
#include <time.h>

struct mfs_inode_init_args {
	uint16_t mode;              /* S_IFMT | permissions; 0 writes a free inode */
	uint8_t dformat;            /* enum mfs_fork_format of the data fork */
	uint32_t nlink;
	uint32_t uid, gid;
	struct timespec time;       /* atime = mtime = ctime = btime */
	uint32_t generation;
};

/*
 * Zero `inodesize` bytes at `dinode` and fill in inode `ino` of the filesystem `uuid` from
 * `a` (NULL: a free inode), then seal its CRC.  Cannot fail.
 */
void mfs_dinode_init(void *dinode, uint32_t inodesize, uint64_t ino, const uint8_t uuid[16],
		     const struct mfs_inode_init_args *a);

#endif
