/*
 * verify.h — the self-describing header of every metadata block: initialising it, sealing
 * it with its CRC32C before a write, and verifying it after a read.
 *
 * A verifier failure names the object: "AG 3 free-space-by-block btree block 8195: owner
 * is 4, expected 3".  The caller says what it expects in a struct mfs_blk_expect.
 */
#ifndef MFS_VERIFY_H
#define MFS_VERIFY_H

#include <stdint.h>
#include "mendfs_format.h"

#define MFS_LEVEL_ANY  (-1)

struct mfs_blk_expect {
	uint32_t magic;
	uint64_t owner;
	int level;               /* btree blocks: the exact level expected, or MFS_LEVEL_ANY;
	                            non-btree blocks: MFS_LEVEL_ANY */
	const char *what;        /* "AG 3 inode btree", used in messages */
};

/* Zero the block and fill its header (crc left for mfs_blk_seal). */
void mfs_blk_init(void *blk, uint32_t blocksize, uint32_t magic, uint64_t blkno,
		  uint64_t owner, const uint8_t uuid[16]);

/* Compute and store the CRC32C; call after the last change, before the write. */
void mfs_blk_seal(void *blk, uint32_t blocksize);

/* 1 if the stored CRC matches the contents. */
int mfs_blk_crc_ok(const void *blk, uint32_t blocksize);

#define MFS_VERIFY_NOCRC 0x1u    /* the block was changed in memory; its CRC is stale */

/*
 * Check magic, CRC, UUID, self block number, owner and (btree blocks) level.
 * Returns 0, -EFSBADCRC, or -EFSCORRUPTED, after logging what was expected and found.
 */
int mfs_blk_verify(const void *blk, uint32_t blocksize, uint64_t blkno, const uint8_t uuid[16],
		   const struct mfs_blk_expect *e, unsigned flags);

/* The same for one inode of `inodesize` bytes. */
void mfs_dinode_seal(void *dinode, uint32_t inodesize);
int mfs_dinode_verify(const void *dinode, uint32_t inodesize, uint64_t ino,
		      const uint8_t uuid[16]);

#endif
