/*
 * verify.c — metadata block and inode headers: init, seal (CRC), verify (see verify.h).
 */
#include "verify.h"
#include "crc32c.h"
#include "byteorder.h"
#include "log.h"

#include <stddef.h>
#include <string.h>

void mfs_blk_init(void *blk, uint32_t blocksize, uint32_t magic, uint64_t blkno,
		  uint64_t owner, const uint8_t uuid[16])
{
	struct mfs_blkhdr *h = blk;

	memset(blk, 0, blocksize);
	mfs_put32(h->magic, magic);
	mfs_put64(h->blkno, blkno);
	mfs_put64(h->owner, owner);
	memcpy(h->uuid, uuid, 16);
}

static uint32_t blk_crc(const void *blk, uint32_t len, size_t crc_off)
{
	static const uint32_t zero;
	uint32_t c;

	c = mfs_crc32c(0, blk, crc_off);
	c = mfs_crc32c(c, &zero, 4);
	return mfs_crc32c(c, (const char *)blk + crc_off + 4, len - crc_off - 4);
}

void mfs_blk_seal(void *blk, uint32_t blocksize)
{
	struct mfs_blkhdr *h = blk;

	mfs_put32(h->crc, blk_crc(blk, blocksize, offsetof(struct mfs_blkhdr, crc)));
}

int mfs_blk_crc_ok(const void *blk, uint32_t blocksize)
{
	const struct mfs_blkhdr *h = blk;

	return mfs_get32(h->crc) == blk_crc(blk, blocksize, offsetof(struct mfs_blkhdr, crc));
}

static const char *what_of(const struct mfs_blk_expect *e)
{
	return e->what ? e->what : "metadata";
}

int mfs_blk_verify(const void *blk, uint32_t blocksize, uint64_t blkno, const uint8_t uuid[16],
		   const struct mfs_blk_expect *e, unsigned flags)
{
	const struct mfs_blkhdr *h = blk;
	uint32_t magic = mfs_get32(h->magic);

	if (magic != e->magic)
		return MFS_CORRUPT("%s block %llu: magic 0x%08x, expected 0x%08x", what_of(e),
				   (unsigned long long)blkno, magic, e->magic);
	if (!(flags & MFS_VERIFY_NOCRC) && !mfs_blk_crc_ok(blk, blocksize)) {
		mfs_log(MFS_LOG_ERR, "corruption: %s block %llu: checksum 0x%08x does not match "
			"its contents (torn or damaged block)", what_of(e),
			(unsigned long long)blkno, mfs_get32(h->crc));
		return -EFSBADCRC;
	}
	if (memcmp(h->uuid, uuid, 16))
		return MFS_CORRUPT("%s block %llu: belongs to another filesystem (UUID differs)",
				   what_of(e), (unsigned long long)blkno);
	if (mfs_get64(h->blkno) != blkno)
		return MFS_CORRUPT("%s block %llu: says it is block %llu (misplaced write)",
				   what_of(e), (unsigned long long)blkno,
				   (unsigned long long)mfs_get64(h->blkno));
	if (mfs_get64(h->owner) != e->owner)
		return MFS_CORRUPT("%s block %llu: owner is %llu, expected %llu", what_of(e),
				   (unsigned long long)blkno,
				   (unsigned long long)mfs_get64(h->owner),
				   (unsigned long long)e->owner);
	if (e->level != MFS_LEVEL_ANY) {
		const struct mfs_btree_block *b = blk;
		unsigned level = mfs_get16(b->level);

		if (level != (unsigned)e->level)
			return MFS_CORRUPT("%s block %llu: level %u, expected %d", what_of(e),
					   (unsigned long long)blkno, level, e->level);
		/* written as zero, never used: anything else is damage */
		if (mfs_get32(b->pad) || mfs_get64(b->reserved))
			return MFS_CORRUPT("%s block %llu: padding 0x%x or reserved 0x%llx of the "
					   "btree block header not zero", what_of(e),
					   (unsigned long long)blkno, mfs_get32(b->pad),
					   (unsigned long long)mfs_get64(b->reserved));
	}
	return 0;
}

void mfs_dinode_seal(void *dinode, uint32_t inodesize)
{
	struct mfs_dinode *d = dinode;

	mfs_put32(d->crc, blk_crc(dinode, inodesize, offsetof(struct mfs_dinode, crc)));
}

int mfs_dinode_verify(const void *dinode, uint32_t inodesize, uint64_t ino,
		      const uint8_t uuid[16])
{
	const struct mfs_dinode *d = dinode;

	if (mfs_get32(d->magic) != MFS_DINODE_MAGIC)
		return MFS_CORRUPT("inode %llu: magic 0x%08x, expected 0x%08x",
				   (unsigned long long)ino, mfs_get32(d->magic), MFS_DINODE_MAGIC);
	if (mfs_get32(d->crc) != blk_crc(dinode, inodesize, offsetof(struct mfs_dinode, crc))) {
		mfs_log(MFS_LOG_ERR, "corruption: inode %llu: checksum does not match its contents",
			(unsigned long long)ino);
		return -EFSBADCRC;
	}
	if (memcmp(d->uuid, uuid, 16))
		return MFS_CORRUPT("inode %llu: belongs to another filesystem (UUID differs)",
				   (unsigned long long)ino);
	if (mfs_get64(d->ino) != ino)
		return MFS_CORRUPT("inode %llu: says it is inode %llu", (unsigned long long)ino,
				   (unsigned long long)mfs_get64(d->ino));
	return 0;
}
