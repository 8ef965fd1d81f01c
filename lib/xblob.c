/*
 * xblob.c — the blob store: size classes, free lists in the file, cookies and their
 * validation.  See xblob.h for the format and the contract.
 *
 * All state worth keeping is in the file: the heap holds the free-list heads, the append
 * cursor, the sequence counter and two counters.  Every header read is checked field by
 * field before anything is trusted: magic, own offset, state, class, size within class.
 */
#include "mem.h"
#include "xblob.h"
#include "fdio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BLOB_MAGIC	0x424c424du	/* "MBLB" */
#define STATE_USED	1
#define STATE_FREE	2
#define NR_CLASSES	12		/* 64 B << 0 .. 64 B << 11 = 128 KiB */
#define MIN_SLOT	64u
#define OFF_BITS	40
#define OFF_MASK	((1ull << OFF_BITS) - 1)
#define SEQ_MASK	0xffffffull
#define PAGE		4096u

/* The on-file header; written and read as these 40 bytes (host byte order: a scratch
 * file never outlives the process). */
struct blob_hdr {
	uint32_t magic;
	uint8_t state;
	uint8_t cls;
	uint16_t pad;
	uint32_t size;		/* payload bytes */
	uint32_t pad2;
	uint64_t self;		/* offset of this header, relative to base */
	uint64_t seq;		/* sequence number of the store that filled the slot */
	uint64_t next_free;	/* free list link (0 = end) while the slot is free */
};
_Static_assert(sizeof(struct blob_hdr) == MFS_XBLOB_HDR_BYTES, "blob header size");

struct mfs_xblob {
	int fd;
	uint64_t base;
	uint64_t end;			/* append cursor, relative to base */
	uint64_t seq;			/* last sequence number used */
	uint64_t free_head[NR_CLASSES];	/* 0 = empty */
	uint64_t count, live_bytes;
	uint64_t written_end;		/* highest file offset written, absolute */
};

/* ---- file I/O: full transfers, EINTR retried, a short transfer is -ENOMEM ---------------- */

static int pread_full(int fd, void *buf, size_t len, uint64_t off)
{
	int err = mfs_pread_full(fd, buf, len, off, NULL);

	return err == -ENODATA ? -ENOMEM : err;    /* the file was truncated under us */
}

/* ---- slots -------------------------------------------------------------------------------- */

static size_t slot_bytes(unsigned cls)
{
	return (size_t)MIN_SLOT << cls;
}

static unsigned class_for(size_t len)
{
	unsigned cls = 0;

	while (slot_bytes(cls) < len + MFS_XBLOB_HDR_BYTES)
		cls++;
	return cls;
}

static uint64_t make_cookie(uint64_t off, uint64_t seq)
{
	return ((seq & SEQ_MASK) << OFF_BITS) | (off / MIN_SLOT);
}

/* Read and check the header at off; state 0 accepts either state. */
static int read_hdr(struct mfs_xblob *b, uint64_t off, int state, struct blob_hdr *h)
{
	int rc = pread_full(b->fd, h, sizeof(*h), b->base + off);

	if (rc)
		return rc;
	if (h->magic != BLOB_MAGIC || h->self != off || h->cls >= NR_CLASSES ||
	    (h->state != STATE_USED && h->state != STATE_FREE) ||
	    h->size > slot_bytes(h->cls) - MFS_XBLOB_HDR_BYTES)
		return -EINVAL;
	if (state && h->state != state)
		return -ENODATA;
	return 0;
}

/* Turn a cookie into the checked header of a live blob. */
static int lookup(struct mfs_xblob *b, uint64_t cookie, uint64_t *offp, struct blob_hdr *h)
{
	uint64_t off = (cookie & OFF_MASK) * MIN_SLOT;
	int rc;

	if (cookie == 0 || off < MIN_SLOT || off + MFS_XBLOB_HDR_BYTES > b->end)
		return -EINVAL;
	rc = read_hdr(b, off, 0, h);
	if (rc == -ENOMEM) {
		/* EOF: a truncated file, or a made-up cookie past the last payload? */
		struct stat st;

		if (fstat(b->fd, &st) < 0)
			return -errno;
		return (uint64_t)st.st_size < b->written_end ? -ENOMEM : -EINVAL;
	}
	if (rc)
		return -EINVAL;		/* not a slot header: a made-up cookie */
	if (h->state != STATE_USED || (h->seq & SEQ_MASK) != cookie >> OFF_BITS)
		return -ENODATA;	/* freed, or freed and reused */
	*offp = off;
	return 0;
}

int mfs_xblob_create(int fd, uint64_t base, struct mfs_xblob **out)
{
	struct mfs_xblob *b;
	struct stat st;

	*out = NULL;
	if (fd < 0 || base > INT64_MAX / 2)
		return -EINVAL;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	b = mfs_calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->fd = fd;
	b->base = base;
	b->end = MIN_SLOT;	/* offset 0 is never a slot, so cookie 0 is never valid */
	*out = b;
	return 0;
}

void mfs_xblob_destroy(struct mfs_xblob *b)
{
	free(b);
}

int mfs_xblob_store(struct mfs_xblob *b, const void *data, size_t len, uint64_t *cookie)
{
	struct blob_hdr h;
	uint64_t off, old_end = b->end, prev_head;
	unsigned cls;
	int reused = 0, rc;

	if (len > MFS_XBLOB_MAX_BYTES)
		return -EFBIG;
	cls = class_for(len);
	prev_head = b->free_head[cls];
	if (prev_head) {
		/* Pop a free slot of this class. */
		rc = read_hdr(b, prev_head, STATE_FREE, &h);
		if (rc)
			return rc == -ENOMEM ? rc : -EIO;	/* our own list is damaged */
		if (h.cls != cls)
			return -EIO;
		off = prev_head;
		b->free_head[cls] = h.next_free;
		reused = 1;
	} else {
		uint64_t align = slot_bytes(cls) < PAGE ? slot_bytes(cls) : PAGE;

		off = (b->end + align - 1) & ~(align - 1);
		if (off + slot_bytes(cls) > (OFF_MASK + 1) * MIN_SLOT ||
		    b->base + off + slot_bytes(cls) > (uint64_t)INT64_MAX)
			return -EFBIG;
		b->end = off + slot_bytes(cls);
	}

	/* Payload first, header last: a failure leaves no header claiming the slot. */
	rc = len ? mfs_pwrite_full(b->fd, data, len, b->base + off + MFS_XBLOB_HDR_BYTES) : 0;
	if (rc == 0) {
		memset(&h, 0, sizeof(h));
		h.magic = BLOB_MAGIC;
		h.state = STATE_USED;
		h.cls = (uint8_t)cls;
		h.size = (uint32_t)len;
		h.self = off;
		h.seq = ++b->seq;
		rc = mfs_pwrite_full(b->fd, &h, sizeof(h), b->base + off);
	}
	if (rc) {
		if (reused)
			b->free_head[cls] = prev_head;	/* its header still says free */
		else
			b->end = old_end;
		return rc;
	}
	b->count++;
	b->live_bytes += len;
	if (b->base + off + MFS_XBLOB_HDR_BYTES + len > b->written_end)
		b->written_end = b->base + off + MFS_XBLOB_HDR_BYTES + len;
	*cookie = make_cookie(off, h.seq);
	return 0;
}

int mfs_xblob_size(struct mfs_xblob *b, uint64_t cookie, size_t *len)
{
	struct blob_hdr h;
	uint64_t off;
	int rc = lookup(b, cookie, &off, &h);

	if (rc)
		return rc;
	*len = h.size;
	return 0;
}

int mfs_xblob_load(struct mfs_xblob *b, uint64_t cookie, void *buf, size_t bufsize,
		   size_t *len)
{
	struct blob_hdr h;
	uint64_t off;
	int rc = lookup(b, cookie, &off, &h);

	if (rc)
		return rc;
	if (len)
		*len = h.size;
	if (h.size > bufsize)
		return -EFBIG;
	return h.size ? pread_full(b->fd, buf, h.size, b->base + off + MFS_XBLOB_HDR_BYTES) : 0;
}

int mfs_xblob_free(struct mfs_xblob *b, uint64_t cookie)
{
	struct blob_hdr h;
	uint64_t off, lo, hi;
	int rc = lookup(b, cookie, &off, &h);

	if (rc)
		return rc;
	h.state = STATE_FREE;
	h.next_free = b->free_head[h.cls];
	rc = mfs_pwrite_full(b->fd, &h, sizeof(h), b->base + off);
	if (rc)
		return rc;
	b->free_head[h.cls] = off;
	b->count--;
	b->live_bytes -= h.size;

	/* Give the whole pages inside the slot back; best effort (not every fs can punch). */
	lo = (b->base + off + MFS_XBLOB_HDR_BYTES + PAGE - 1) & ~(uint64_t)(PAGE - 1);
	hi = (b->base + off + slot_bytes(h.cls)) & ~(uint64_t)(PAGE - 1);
	if (hi > lo)
		(void)fallocate(b->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
				(off_t)lo, (off_t)(hi - lo));
	return 0;
}

uint64_t mfs_xblob_count(const struct mfs_xblob *b)
{
	return b->count;
}

uint64_t mfs_xblob_live_bytes(const struct mfs_xblob *b)
{
	return b->live_bytes;
}

uint64_t mfs_xblob_extent(const struct mfs_xblob *b)
{
	return b->end;
}
