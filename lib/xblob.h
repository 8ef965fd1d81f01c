/*
 * xblob.h — variable-length blobs kept in a scratch file descriptor.
 *
 * The repair engine stages names, xattr values and other variable-length data here while
 * it rebuilds a structure; an xfarray record then holds the blob's cookie.  Like xfarray,
 * the data lives in a client-supplied memfd or O_TMPFILE file, not in the daemon heap; the
 * heap holds only a fixed-size control block.
 *
 * Format (offsets relative to the base given at creation): each blob occupies one slot of
 * a power-of-two size class, 64 bytes to 128 KiB, aligned to min(slot size, 4096).  A slot
 * starts with a 40-byte header — magic, state (in use / free), size class, payload size,
 * the slot's own offset, the store sequence number, and (when free) the next free slot of
 * its class — followed by the payload.  Freed slots go on a per-class free list threaded
 * through their headers, and the page-aligned inside of a freed slot is punched out of the
 * file so its memory returns to the system; a later store of the same class reuses the slot.
 *
 * Cookie: (sequence & 0xffffff) << 40 | offset / 64.  0 is never a valid cookie.  A cookie
 * that points outside the store, or at something that is not a slot header, is rejected
 * with -EINVAL; a cookie of a freed slot, or of a slot since reused by another store
 * (detected by the sequence number), gives -ENODATA.  A bad cookie never crashes and never
 * returns another blob's data (short of a 24-bit sequence collision on the very same slot).
 *
 * Errors are negative errnos; a short read or write of the scratch file is -ENOMEM, other
 * I/O errors keep their errno (-ENOSPC, -EFBIG, -EIO...).  A failed store leaves nothing
 * behind: the payload is written before the header, and the slot goes back where it came
 * from.
 */
#ifndef MFS_XBLOB_H
#define MFS_XBLOB_H

#include <stddef.h>
#include <stdint.h>

struct mfs_xblob;

#define MFS_XBLOB_HDR_BYTES   40u
#define MFS_XBLOB_MAX_SLOT    (128u * 1024)
#define MFS_XBLOB_MAX_BYTES   (MFS_XBLOB_MAX_SLOT - MFS_XBLOB_HDR_BYTES)

/* Create a blob store at byte offset base of fd (the region must read as zeros). */
int mfs_xblob_create(int fd, uint64_t base, struct mfs_xblob **out);
/* Free the control block; the fd stays open and owned by the caller.  NULL is fine. */
void mfs_xblob_destroy(struct mfs_xblob *b);

/* Store len bytes (0..MFS_XBLOB_MAX_BYTES, else -EFBIG); *cookie receives the handle. */
int mfs_xblob_store(struct mfs_xblob *b, const void *data, size_t len, uint64_t *cookie);
/* Size of a blob's payload. */
int mfs_xblob_size(struct mfs_xblob *b, uint64_t cookie, size_t *len);
/* Read a blob into buf; -EFBIG if bufsize is smaller than the blob; *len (may be NULL)
 * receives its size. */
int mfs_xblob_load(struct mfs_xblob *b, uint64_t cookie, void *buf, size_t bufsize,
		   size_t *len);
/* Free a blob; its cookie (and any copy of it) becomes invalid: -ENODATA from then on. */
int mfs_xblob_free(struct mfs_xblob *b, uint64_t cookie);

/* Live blobs, their payload bytes, and the extent of the store in the file. */
uint64_t mfs_xblob_count(const struct mfs_xblob *b);
uint64_t mfs_xblob_live_bytes(const struct mfs_xblob *b);
uint64_t mfs_xblob_extent(const struct mfs_xblob *b);

#endif /* MFS_XBLOB_H */
