/*
 * repair_journal.c — the journal rebuilder: its header (both copies) online, the whole log
 * reset offline.
 *
 * Online (the daemon's journal attached): the journal in memory knows where the live log
 * starts (tail block and sequence) better than any header on disk, so both copies are
 * written from it, after a checkpoint that puts every committed change in place and moves
 * the tail past every durable record — a damaged record that was still live is then behind
 * the tail (mfs_journal_rewrite_header, journal.h).  Not repairable online, with -EOPNOTSUPP
 * and the reason: a log region the superblock places where it cannot be (outside AG 0's
 * free blocks; moving the log would need every block of it reallocated while it is in use).
 *
 * Offline (mendfs_repair, no journal attached: it could not be opened): the log is reset —
 * both headers written empty and the first record block zeroed (mfs_journal_format) — but
 * only when the superblock says the filesystem was unmounted cleanly: then every committed
 * change was put in place before the close, and nothing is lost.  A filesystem in use or
 * crashed may have transactions only in the log: that is refused (-EOPNOTSUPP, with why).
 */
#include "repair_priv.h"

#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "journal.h"
#include "log.h"

#include <string.h>

static int log_region_ok(const struct mfs_geom *g)
{
	return g->logstart < g->dblocks && g->logblocks <= g->dblocks - g->logstart &&
	       g->logblocks >= MFS_JOURNAL_MIN_BLOCKS &&
	       mfs_fsb_to_agbno(g, g->logstart) >= MFS_AG_FIXED_BLOCKS &&
	       mfs_fsb_to_agbno(g, g->logstart) + (uint64_t)g->logblocks <=
		       mfs_ag_length(g, mfs_fsb_to_agno(g, g->logstart));
}

static int journal_reset(struct rep *r)
{
	struct mfs_fs *fs = r->fs;
	struct mfs_buf *bp;
	uint32_t state;
	int err;

	err = mfs_read_sb(fs, 0, &bp);
	if (err)
		return rep_fail(r, err, "the journal is not reset: the primary superblock, which "
				"says whether the filesystem was unmounted cleanly, is unreadable "
				"(%s)", strerror(-err));
	state = mfs_get32(((const struct mfs_sb *)bp->data)->state);
	mfs_buf_put(bp);
	if (!(state & MFS_STATE_CLEAN) || (state & MFS_STATE_DIRTY))
		return rep_fail(r, -EOPNOTSUPP, "the journal is not reset: the superblock says the "
				"filesystem was not unmounted cleanly (state 0x%x), so the log may "
				"hold committed transactions that are nowhere else, and a reset "
				"would lose them", state);
	err = rep_hook(r, MFS_REPAIR_AT_BUILT);
	if (!err)
		err = rep_poll(r);
	if (err)
		return err;
	err = mfs_journal_format(fs);
	if (err)
		return rep_fail(r, err, "writing an empty journal: %s", strerror(-err));
	mfs_log(MFS_LOG_INFO, "journal (blocks %llu+%u) reset: the filesystem was unmounted "
		"cleanly, nothing was waiting in it", (unsigned long long)fs->geo.logstart,
		fs->geo.logblocks);
	return 0;
}

int rep_journal(struct rep *r)
{
	struct mfs_fs *fs = r->fs;
	const struct mfs_geom *g = &fs->geo;
	int err;

	if (!g->logblocks)
		return rep_fail(r, -EOPNOTSUPP, "this filesystem has no journal");
	if (!log_region_ok(g))
		return rep_fail(r, -EOPNOTSUPP, "the journal cannot be repaired: the superblock "
				"places it at blocks %llu+%u, not inside one AG past its fixed "
				"blocks, and moving the log is not supported (online or offline)",
				(unsigned long long)g->logstart, g->logblocks);
	if (!fs->log) {
		if (!(r->rc->flags & MFS_REPAIR_OFFLINE))
			return rep_fail(r, -EOPNOTSUPP, "no journal is attached (a read-only "
					"mount): nothing to rewrite the header from");
		return journal_reset(r);
	}
	err = rep_hook(r, MFS_REPAIR_AT_BUILT);
	if (!err)
		err = rep_poll(r);
	if (err)
		return err;
	r->rc->records = MFS_JHDR_COPIES;
	err = mfs_journal_rewrite_header(fs->log);
	if (err)
		return rep_fail(r, err, "rewriting the journal header: %s (the journal is now "
				"stopped: the filesystem stops writing)", strerror(-err));
	mfs_log(MFS_LOG_INFO, "journal header rewritten (both copies) from the journal in memory");
	return 0;
}
