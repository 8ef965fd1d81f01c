/*
 * scrub.h — the checkers: one function per metadata object kind (enum mfs_scrub_type in
 * mendfs_ctl.h), run inside the daemon (and by the offline tools) on an open filesystem.
 *
 * SEED contract between the checkers (repair/scrub_*.c) and their callers (fs/ctl.c, the
 * offline tools): the caller fills a struct mfs_scrub_ctx and calls mfs_scrub(); each
 * problem found is reported through ctx->report with the object named and what was
 * expected versus found, and ORed into ctx->oflags.  The checker takes the locks it needs
 * (the AG's mutex for AG objects, the inode's rwlock for inode objects) and re-checks
 * anything it read before taking them, so that a check under concurrent writes never
 * reports corruption that is not there.  Whole-filesystem checks that need a stable
 * namespace (link counts) call ctx->quiesce(ctx->hook_arg, 1) before and (…, 0) after:
 * the daemon then holds new namespace changes back for that time (NULL: nothing else runs).
 */
#ifndef MFS_SCRUB_H
#define MFS_SCRUB_H

#include <stdint.h>

#include "mendfs_ctl.h"

struct mfs_fs;

struct mfs_scrub_ctx {
	struct mfs_fs *fs;
	uint32_t type;          /* enum mfs_scrub_type */
	uint32_t agno;          /* AG objects */
	uint64_t ino;           /* inode objects */

	/* Called once per finding: flag is one MFS_SCRUB_OFLAG_*, msg names the object. */
	void (*report)(void *arg, uint32_t flag, const char *msg);
	int (*quiesce)(void *arg, int on);
	/* Polled during long checks: nonzero = stop now with -ECANCELED (client gone). */
	int (*cancelled)(void *arg);
	void *hook_arg;
	/* Optional, the caller's (NULL: none): committed inodes copied by one check and looked
	 * at again by the next checks of the same request — the inode core, extent map and
	 * attribute checks of one inode, the inodes of one chunk — instead of each reading
	 * its own.  Only the checks' quick looks use it (a copy that shows anything to report
	 * is read again); still, reset it before each request so that no copy outlives it. */
	struct mfs_scrub_memo *memo;
	/* Optional, the caller's (NULL: none): the inode census (repair/scrub_census.c), kept
	 * from one request to the next and shared by every client of the filesystem — each
	 * inode's mode, links and verdicts, and each directory's entries, as of a change count
	 * (mfs_fs_changes); used only while the count is the same, so never stale. */
	struct mfs_scrub_census *census;

	uint32_t oflags;        /* out: OR of the flags reported */
};

struct mfs_scrub_census;
/* 0 or -ENOMEM. */
int mfs_scrub_census_new(struct mfs_fs *fs, struct mfs_scrub_census **out);
/* Forget what it holds (the memory goes back; the next users take it again).  No check
 * may be running with it meanwhile: the daemon drops it when its last client has gone. */
void mfs_scrub_census_drop(struct mfs_scrub_census *c);
void mfs_scrub_census_free(struct mfs_scrub_census *c);
/*
 * The allocated inodes of AG agno from inode `cursor` (in the AG) on, as the INODES command
 * lists them (number and mode), up to max into out[]: from ctx->census when it has them —
 * taken at the AG's first inode (the sweep of the AG's chunks that lists them also takes
 * what the later checks want) — else from the inode btree and the committed chunks, the
 * AG locked.  0 with *n listed, *next the inode after the last, *end set when the AG has
 * no more; -EINVAL (no such AG), -ENOMEM, or a read or corruption error (the AG's header or
 * inode btree is damaged: its inodes cannot be listed).
 */
int mfs_scrub_list_inodes(struct mfs_scrub_ctx *ctx, uint32_t agno, uint64_t cursor,
			  struct mfs_ctl_inode *out, uint32_t max, uint32_t *n, uint64_t *next,
			  int *end);

struct mfs_scrub_memo;
/* 0 or -ENOMEM. */
int mfs_scrub_memo_new(struct mfs_scrub_memo **out);
/* Forget every copy (the next check reads afresh). */
void mfs_scrub_memo_reset(struct mfs_scrub_memo *m);
void mfs_scrub_memo_free(struct mfs_scrub_memo *m);
/*
 * Before a request's checks: the extent-map checks (MFS_SCRUB_BMAP) of inodes inos[0..n)
 * will follow.  Their quick looks are made now, together, into ctx->memo: the inline
 * extents of all of them cross-referenced AG by AG in block order, one walk of each AG's
 * reverse map and free space under one hold of its lock, instead of two tree lookups per
 * extent; each check then takes its inode's verdict (one that is not clean still takes the
 * full look, which alone reports).  ctx: fs, memo, cancelled and hook_arg are used.
 * Optional; 0, or an error after which the checks look one by one as without it.
 */
int mfs_scrub_memo_prepare_bmap(struct mfs_scrub_ctx *ctx, const uint64_t *inos, size_t n);

/* Run one check.  0 when it ran (the findings are in oflags, maybe none); a negative errno
 * when it could not (-EINVAL unknown type or AG/inode out of range, -ENOENT a free inode,
 * -ECANCELED, -ENOMEM, -EIO). */
int mfs_scrub(struct mfs_scrub_ctx *ctx);

#endif
