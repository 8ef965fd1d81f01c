/*
 * scrub_journal.c — the journal checker: the log region lies inside AG 0 past its fixed
 * blocks and is owned by the log in the reverse map (the RMAPBT checker holds the rmap
 * side), and its header verifies: at least one of the two copies is valid, of this
 * filesystem, with the superblock's geometry and a tail inside the log (mfs_journal_peek,
 * read-only).  A journal with records to replay is not damage: a mounted or crashed
 * filesystem has them.
 */
#include "fs.h"
#include "geom.h"
#include "journal.h"
#include "log.h"
#include "scrub_priv.h"

int scrub_journal(struct mfs_scrub_ctx *ctx)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	struct mfs_journal_info ji;
	int err;

	if (!g->logblocks)
		return 0;
	if (g->logstart >= g->dblocks || g->logblocks > g->dblocks - g->logstart ||
	    mfs_fsb_to_agbno(g, g->logstart) < MFS_AG_FIXED_BLOCKS ||
	    mfs_fsb_to_agbno(g, g->logstart) + (uint64_t)g->logblocks >
		    mfs_ag_length(g, mfs_fsb_to_agno(g, g->logstart))) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "journal: blocks %llu+%u do not lie "
			     "inside one AG past its fixed blocks", (unsigned long long)g->logstart,
			     g->logblocks);
		return 0;
	}
	err = mfs_journal_peek(ctx->fs, &ji);
	if (mfs_is_corruption(err)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "journal (blocks %llu+%u): header "
			     "unusable: %s", (unsigned long long)g->logstart, g->logblocks,
			     scrub_errstr(err));
		return 0;
	}
	if (err)
		return err;
	if (ji.tail_blk < 2 || ji.tail_blk >= g->logblocks)
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "journal: tail block %u outside "
			     "2..%u", ji.tail_blk, g->logblocks - 1);
	return 0;
}
