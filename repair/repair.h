/*
 * repair.h — the online repair engine: rebuild one metadata object of an open filesystem
 * from the other metadata that describes it, with scratch memory the client provides.
 *
 * Contract between the engine (repair/repair*.c) and its callers (the control socket's
 * REPAIR command in fs/, the offline tool mendfs_repair, tests):
 *
 *   - the caller fills a struct mfs_repair_ctx (the object as in struct mfs_scrub_ctx, the
 *     scratch descriptors, hooks) and calls mfs_repair();
 *   - the engine estimates the scratch it needs, checks the memory headroom and refuses up
 *     front when the estimate does not fit (rc->reason names both figures and what to do:
 *     a scratch directory on disk with -T, or more memory), otherwise reserves about 1.5x
 *     the estimate in the first descriptor (fallocate in chunks, headroom and pressure
 *     re-checked between chunks: lib/headroom.h);
 *   - it gathers records into fixed-record arrays in that descriptor (lib/xfarray.h),
 *     sorts them, bulk-loads the new structure into blocks it takes out of the space it is
 *     rebuilding (or allocates), and commits the new roots, counters and reverse-map
 *     changes in ONE transaction, under the object's lock (AG objects: the AG lock; other
 *     AGs keep serving, allocations that need this AG wait for it);
 *   - anywhere before that commit it aborts on a scratch I/O failure (-ENOMEM: "scratch
 *     exhausted"), on the pressure flag (-ECANCELED), on cancelled() (-ECANCELED), or on
 *     corruption of the metadata it rebuilds from (-EFSCORRUPTED): the transaction is
 *     cancelled, so the filesystem is bit-for-bit unchanged; the scratch it used is punched
 *     out and the descriptor truncated back to its size on entry, whatever the outcome;
 *   - after the commit it runs the object's checker again; a rebuilt object the checker
 *     still finds wrong is reported as -EFSCORRUPTED ("could not repair").
 *
 * The descriptors stay the caller's: the engine never closes them.  They must be regular
 * files opened read-write (memfd_create(2), or O_TMPFILE in a directory not on this
 * filesystem); the control socket checks the rest (seals, which filesystem) on receipt.
 */
#ifndef MFS_REPAIR_H
#define MFS_REPAIR_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "mendfs_ctl.h"

struct mfs_fs;

#define MFS_REPAIR_MAX_FDS   2u

/* The caller guarantees that nothing else uses the filesystem (the offline tool): needed
 * by the reverse-map rebuild, which reads every inode's extent maps.  Such a caller leaves
 * quiesce, changed and cancelled NULL (no daemon: no namespace changes to hold back, no
 * kernel cache to invalidate, no client to lose); every rebuilder runs without them. */
#define MFS_REPAIR_OFFLINE   0x1u

/* Points where the test hook is called (tests and torture only). */
enum mfs_repair_point {
	MFS_REPAIR_AT_RESERVED = 1,   /* scratch reserved, nothing gathered */
	MFS_REPAIR_AT_GATHERED = 2,   /* records gathered into scratch, before the sort */
	MFS_REPAIR_AT_SORTING = 3,    /* inside the sort (its first comparison) */
	MFS_REPAIR_AT_BUILT = 4,      /* new structure built in the transaction, not committed */
	MFS_REPAIR_AT_REAPED = 5,     /* committed, and again after each batch of the old blocks
				       * freed (repair_ag.h, the reap): a failure here leaves the
				       * rest marked in the AG header, as a crash would */
	MFS_REPAIR_AT_ACCOUNTING = 6, /* committed, the new blocks not yet all accounted for
				       * (repair_reap.c): at its start and after each batch; a
				       * failure here stops the journal, as any failure there
				       * does (a hold: a crash there) */
};

struct mfs_repair_ctx {
	struct mfs_fs *fs;
	uint32_t type;              /* enum mfs_scrub_type */
	uint32_t agno;              /* AG objects */
	uint64_t ino;               /* inode objects */

	int fds[MFS_REPAIR_MAX_FDS];   /* scratch descriptors, the caller's; fds[0] required */
	unsigned nfds;

	/* Abort sources.  `abort`: a flag raised asynchronously (the memory-pressure watcher's,
	 * lib/pressure.h), may be NULL.  cancelled(hook_arg): polled, nonzero = the client is
	 * gone or sent CANCEL.  Either stops the repair with -ECANCELED before its commit. */
	const atomic_int *abort;
	int (*cancelled)(void *arg);
	/* Online: hold the namespace changes back (on 1) and let them go (on 0), as
	 * mfs_scrub_ctx.quiesce does; NULL when nothing else changes names (offline).  The
	 * link-count and orphan-list rebuilds and their checks afterwards run inside it. */
	int (*quiesce)(void *arg, int on);
	/* Online: an inode's attributes (link count, times...) were changed by a committed
	 * rebuild behind the kernel's back; called with hook_arg, possibly inside the quiesce,
	 * so it must not wait for anything a namespace change holds (the daemon has the kernel
	 * drop its cached attributes).  NULL: nobody to tell. */
	void (*changed)(void *arg, uint64_t ino);
	/* Tests: called at each enum mfs_repair_point; a nonzero return (a negative errno)
	 * aborts the repair with that error. */
	int (*test_hook)(void *arg, enum mfs_repair_point at);
	void *hook_arg;

	/* Headroom to leave when reserving (0: MFS_RESERVE_MARGIN_DEFAULT of headroom.h). */
	uint64_t margin;
	/* The client the repair is for (0: none): its memory cgroup's room counts in the
	 * headroom too (headroom.h, mfs_headroom_probe_pid). */
	pid_t client_pid;
	unsigned flags;             /* MFS_REPAIR_* */

	/* out */
	uint64_t estimate;          /* scratch bytes the engine estimated */
	uint64_t reserved;          /* bytes it reserved (about 1.5x the estimate) */
	uint64_t scratch_used;      /* bytes of scratch its arrays used at the peak */
	uint64_t records;           /* records of the rebuilt structure(s) */
	char reason[1024];          /* why it failed or refused; "" on success */
};

/*
 * Rebuilders (rep_rebuilders[] in repair.c; a type without one gives -EOPNOTSUPP):
 *   MFS_SCRUB_BNOBT, MFS_SCRUB_CNTBT  both free-space trees of the AG, from the reverse map
 *   MFS_SCRUB_INOBT                   the inode btree, from the reverse map's inode chunks
 *                                     and the inodes' modes
 *   MFS_SCRUB_AGFL                    the AG free list, from the reverse map and the trees
 *   MFS_SCRUB_RMAPBT                  the reverse map, from every owner (online: owners
 *                                     scanned, then settled under the AG lock)
 *   MFS_SCRUB_BMAP                    an inode's extent map and block count, from the
 *                                     reverse map (repair_bmap.c)
 *   MFS_SCRUB_INODE                   an inode's core fields (repair_inode.c)
 *   MFS_SCRUB_DIR, _XATTR, _SYMLINK   an inode's names, attributes, target, from what
 *                                     survives of them (repair_dir.c, _xattr.c, _symlink.c)
 *   MFS_SCRUB_NLINKS, _ORPHANS        link counts (and /lost+found), the orphan lists
 *   MFS_SCRUB_SB, _AGH, _JOURNAL      superblocks, AG headers, the journal header
 *   MFS_SCRUB_SUMMARY                 the superblock's summary counters, from the AG headers
 *                                     (MFS_REPAIR_OFFLINE)
 * Each commits in one journal transaction, which must fit in the log: a rebuild that would
 * not is refused up front (-ENOSPC, both sizes named).  The free-space trees written as
 * ordered new blocks then free their old trees' blocks in bounded transactions of their own
 * under the same AG lock (the reap: MFS_AGH_REAP marks the AG until it is done).  The free-space trees and the
 * reverse map are written as ordered new blocks (trans.h: in place, into free space,
 * unlogged), so their transaction logs only what points at them, whatever their size (the
 * reverse map falls back to its old, logged way when free space cannot hold it); the
 * other trees are still logged.
 */

/*
 * After a crash during the reap of a free-space or reverse-map rebuild (MFS_AGH_REAP in an
 * AG header: old tree blocks still to free), before anything else uses the filesystem:
 * rebuild those AGs' free-space trees, which frees them (scratch: a memfd of its own;
 * flags: MFS_REPAIR_*).  *nrebuilt: AGs so mended.  0, or the first error (each is logged,
 * the AG named; the filesystem stays usable, the blocks stay unused until a repair).
 */
int mfs_repair_reap_pending(struct mfs_fs *fs, unsigned flags, uint32_t *nrebuilt);

/* Whether the engine can rebuild objects of this type. */
int mfs_repair_supported(uint32_t type);

/*
 * Rebuild one object.  0 when it was rebuilt and its checker now finds it clean; a
 * negative errno otherwise, with rc->reason saying why (and the filesystem unchanged unless
 * the error came after the commit): -EOPNOTSUPP no rebuilder for this type, -EINVAL bad
 * object or descriptors, -ENOMEM refused for lack of memory or scratch exhausted,
 * -ENOSPC / -EFBIG... scratch could not be reserved, -ECANCELED pressure or cancel,
 * -EFSCORRUPTED the metadata it would rebuild from is damaged too (or the rebuilt object
 * still fails its check), -EIO.
 */
int mfs_repair(struct mfs_repair_ctx *rc);

#endif
