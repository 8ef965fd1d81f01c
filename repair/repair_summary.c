/*
 * repair_summary.c — the superblock's summary counters (free blocks, inodes, free inodes)
 * rewritten from the AG headers.
 *
 * The counters are written at a clean unmount and compared only while the superblock says
 * clean (scrub_summary.c), so this is an offline repair (MFS_REPAIR_OFFLINE): a mounted
 * filesystem's counters are stale by design and its daemon rewrites them at unmount.  Every
 * AG is locked, in increasing order, for one consistent sum; the AG headers must already
 * agree with their trees (the AG checks and rebuilds come first: the checker run after this
 * repair says whether they did).  One transaction changes the primary superblock.
 */
#include "repair_priv.h"

#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "log.h"
#include "trans.h"

#include <string.h>

int rep_summary(struct rep *r)
{
	struct mfs_fs *fs = r->fs;
	uint64_t fdblocks = 0, icount = 0, ifree = 0;
	struct mfs_trans *tp;
	struct mfs_buf *bp;
	struct mfs_sb *sb;
	int err;

	if (!(r->rc->flags & MFS_REPAIR_OFFLINE))
		return rep_fail(r, -EOPNOTSUPP, "the summary counters are rewritten offline only "
				"(mendfs_repair): while mounted they are stale by design, and the "
				"daemon rewrites them at unmount");
	err = mfs_trans_alloc(fs, &tp);
	if (err)
		return rep_fail(r, err, "no memory for the transaction");
	for (uint32_t agno = 0; agno < fs->geo.agcount && !err; agno++) {
		const struct mfs_agh *agh;

		err = mfs_trans_lock_ag(tp, agno, 0);
		if (!err)
			err = mfs_read_agh(fs, agno, &bp);
		if (err) {
			rep_fail(r, err, "AG %u header unreadable (%s): repair it first", agno,
				 strerror(-err));
			break;
		}
		agh = bp->data;
		fdblocks += mfs_get32(agh->freeblks);
		icount += mfs_get32(agh->icount);
		ifree += mfs_get32(agh->ifree);
		mfs_buf_put(bp);
	}
	if (!err)
		err = rep_poll(r);
	if (!err) {
		err = mfs_read_sb(fs, 0, &bp);
		if (err)
			rep_fail(r, err, "primary superblock unreadable (%s)", strerror(-err));
	}
	if (err) {
		mfs_trans_cancel(tp);
		return err;
	}
	err = mfs_trans_modify(tp, bp);
	if (!err) {
		sb = bp->data;
		mfs_put64(sb->fdblocks, fdblocks);
		mfs_put64(sb->icount, icount);
		mfs_put64(sb->ifree, ifree);
		r->rc->records = fs->geo.agcount;
		err = rep_hook(r, MFS_REPAIR_AT_BUILT);
	}
	mfs_buf_put(bp);
	if (err) {
		mfs_trans_cancel(tp);
		return err;
	}
	err = mfs_trans_commit(tp);
	return err ? rep_fail(r, err, "committing the summary counters: %s", strerror(-err)) : 0;
}
