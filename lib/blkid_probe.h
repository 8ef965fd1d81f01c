/*
 * blkid_probe.h — finding and erasing existing signatures on a device before mkfs.
 *
 * libblkid knows the other filesystems, RAID and crypto members and partition tables; it
 * does not know mendfs (its probers are compiled into util-linux), so our own superblock
 * magic at offset 0 is recognised here directly.
 */
#ifndef MFS_BLKID_PROBE_H
#define MFS_BLKID_PROBE_H

#include <stddef.h>

/*
 * Look for a signature on the open device or image `fd`.  Returns 1 and a description of
 * the first one found in `desc` ("an ext4 filesystem labelled 'data'", "a gpt partition
 * table", "a mendfs filesystem"), 0 when there is none (an empty image included), or a
 * negative errno.
 */
int mfs_probe_signatures(int fd, char *desc, size_t desclen);

/*
 * Erase every signature libblkid finds (superblock and partition-table chains, the same
 * magic bytes wipefs(8) erases) and our own superblock magic, then fsync.  `fd` must be
 * open read-write.  Returns the number of signatures erased, or a negative errno.
 */
int mfs_wipe_signatures(int fd);

#endif
