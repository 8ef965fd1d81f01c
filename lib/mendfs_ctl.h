/*
 * mendfs_ctl.h — the control protocol between the daemon and its clients (mendfs_scrub,
 * mendfs_scrub_all): the only header the scrub/ folder includes.
 *
 * SEED: the object kinds and result flags below are fixed; the framing (header, commands,
 * replies, socket location) is completed by the control-socket work and documented in
 * mendfs(8).  Every value here is on the wire: never renumber, only append.
 */
#ifndef MFS_CTL_H
#define MFS_CTL_H

#include <stdint.h>

/* Metadata objects the daemon can check (and later rebuild).  "AG" objects take an AG
 * number, "inode" objects an inode number, the others neither. */
enum mfs_scrub_type {
	MFS_SCRUB_PROBE     = 0,   /* does nothing: is the daemon there, is the object valid */
	MFS_SCRUB_SB        = 1,   /* AG: superblock copy in that AG (AG 0: the primary) */
	MFS_SCRUB_AGH       = 2,   /* AG: AG header counters and roots */
	MFS_SCRUB_AGFL      = 3,   /* AG: free list */
	MFS_SCRUB_BNOBT     = 4,   /* AG: free space by block, x-ref cnt and rmap */
	MFS_SCRUB_CNTBT     = 5,   /* AG: free space by length, x-ref bno */
	MFS_SCRUB_INOBT     = 6,   /* AG: inode chunks, x-ref inodes and rmap */
	MFS_SCRUB_RMAPBT    = 7,   /* AG: reverse map, x-ref owners and free space */
	MFS_SCRUB_JOURNAL   = 8,   /* fs: journal header and state */
	MFS_SCRUB_INODE     = 9,   /* inode: core fields */
	MFS_SCRUB_BMAP      = 10,  /* inode: extent map, x-ref rmap and free space */
	MFS_SCRUB_DIR       = 11,  /* inode: directory entries, hash order, . and .. */
	MFS_SCRUB_XATTR     = 12,  /* inode: extended attributes */
	MFS_SCRUB_SYMLINK   = 13,  /* inode: symlink target */
	MFS_SCRUB_NLINKS    = 14,  /* fs: counted references vs nlink, reachability */
	MFS_SCRUB_ORPHANS   = 15,  /* fs: orphan (unlinked-but-open) lists */
	MFS_SCRUB_SUMMARY   = 16,  /* fs: summary counters vs the AG trees */
	MFS_SCRUB_NTYPES
};

/* Result flags of one check (several may be set; none = clean). */
#define MFS_SCRUB_OFLAG_CORRUPT     0x01u  /* the object is wrong */
#define MFS_SCRUB_OFLAG_XCORRUPT    0x02u  /* it disagrees with another object */
#define MFS_SCRUB_OFLAG_PREEN       0x04u  /* correct but could be optimised */
#define MFS_SCRUB_OFLAG_WARNING     0x08u  /* suspicious, not provably wrong */
#define MFS_SCRUB_OFLAG_INCOMPLETE  0x10u  /* the check could not finish (why: message) */
#define MFS_SCRUB_OFLAG_REPAIRED    0x20u  /* a repair rebuilt it (repair issue) */
#define MFS_SCRUB_OFLAG_UNFIXED     0x40u  /* a repair was asked and could not be done */

#endif
