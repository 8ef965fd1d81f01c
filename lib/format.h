/*
 * format.h — building an empty mendfs: the geometry rules and the writing order.
 *
 * Two steps, so that a bad request changes nothing:
 *   mfs_format_layout()  computes the geometry for a device of `bytes` bytes (AG count and
 *                        size, journal size and place, root inode chunk, stripe alignment
 *                        from the device topology) and checks it with the validator mount
 *                        uses.  It writes nothing.
 *   mfs_format_write()   writes every AG (mfs_ag_format), the root inode chunk, an empty
 *                        journal and the secondary superblocks, flushes, and writes the
 *                        primary superblock last, so that an interrupted format never leaves
 *                        a primary superblock pointing at half-written AGs.
 *
 * mkfs.mendfs is the command-line front end; the unit tests format their images with it in
 * process; repair will recompute a layout to know where things belong.  The geometry rules
 * are documented in mkfs.mendfs(8): keep the two in step.
 *
 * Every option is 0 for "the default".  Problems are reported through mfs_log (prefixed by
 * opts->name when given) and returned as a negative errno: -EINVAL for a request that cannot
 * be met.  When opts->agcount is given but cannot be honoured exactly, mfs_format_layout
 * logs a note at MFS_LOG_INFO and uses the nearest count.
 */
#ifndef MFS_FORMAT_H
#define MFS_FORMAT_H

#include <stdint.h>

#include "geom.h"

struct mfs_dev;
struct mfs_dev_topology;
struct mfs_fs;

#define MFS_FORMAT_MIN_BYTES (16ull << 20)   /* the smallest filesystem */

struct mfs_format_opts {
	uint32_t blocksize;         /* power of two, MFS_MIN..MAX_BLOCKSIZE; 0: 4096 */
	uint32_t inodesize;         /* power of two, MFS_MIN..MAX_INODESIZE, <= blocksize;
	                               0: 256 */
	uint32_t agcount;           /* 0: 4, or fewer AGs of at most 1 TiB; not with agsize */
	uint64_t agsize;            /* bytes, a multiple of the block size (and stripe unit);
	                               0: from agcount */
	uint64_t logbytes;          /* journal size, rounded up to whole blocks; 0: the default
	                               (format.c: 1/128 of the filesystem, 1..128 MiB) */
	const char *label;          /* NULL or at most 31 bytes */
	uint8_t uuid[16];           /* all zero: a random (version 4) UUID, unless nil_uuid */
	int nil_uuid;               /* nonzero: an all-zero uuid is kept as given */
	int root_ids;               /* nonzero: root_uid/root_gid own the root directory;
	                               0: the calling process's uid and gid */
	uint32_t root_uid, root_gid;
	int64_t time;               /* seconds since the epoch for every timestamp; 0: now */
	const char *name;           /* the device's name in messages (NULL: none) */
	/* Called after the AGs, root chunk and journal are written and before any superblock,
	 * with a handle on the half-built filesystem (no journal attached): a test or tool may
	 * add content through transactions; the superblock free-block count is summed from the
	 * AG headers after it.  NULL: nothing. */
	int (*populate)(struct mfs_fs *fs, void *priv);
	void *populate_priv;
};

/* The geometry plus where the format puts the root chunk and the journal. */
struct mfs_format_layout {
	struct mfs_geom geo;        /* uuid included */
	uint32_t chunk_agbno;       /* root inode chunk in AG 0 */
	uint32_t log_agbno;         /* journal in AG 0 */
	uint64_t devbytes;          /* bytes the filesystem was computed for */
	uint32_t dropped_blocks;    /* a too-short last AG that was left out */
};

/*
 * Compute the layout for `bytes` bytes of a device with I/O topology `topo` (NULL: 512-byte
 * sectors, no stripe hints).  Returns 0, -EINVAL (with a message naming the problem) for an
 * impossible request, or -EIO when no random UUID could be made.
 */
int mfs_format_layout(const struct mfs_format_opts *opts, uint64_t bytes,
		      const struct mfs_dev_topology *topo, struct mfs_format_layout *out);

/*
 * Write the filesystem `L` (from mfs_format_layout with the same opts) onto `dev`, which
 * must be open read-write and at least L->devbytes long.  Takes `dev`: it is closed in every
 * case.  Returns 0 or the first error (logged, naming the step).
 */
int mfs_format_write(struct mfs_dev *dev, const struct mfs_format_opts *opts,
		     const struct mfs_format_layout *L);

/* A random version 4 (RFC 4122) UUID from /dev/urandom; -errno or -EIO on failure. */
int mfs_format_random_uuid(uint8_t uuid[16]);

#endif
