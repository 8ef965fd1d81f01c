/*
 * scrub_summary.c — the summary counters: free blocks and inodes of the whole filesystem.
 *
 * Each AG's trees are walked under its lock and summed (free blocks from the by-block tree,
 * inodes and free inodes from the inode btree); each AG header's counters must agree with
 * its trees.  The superblock's icount/ifree/fdblocks are written only at a clean unmount:
 * they are compared with the sums only when the superblock says clean (a mounted or crashed
 * filesystem's are stale by design).
 */
#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "log.h"
#include "scrub_priv.h"

int scrub_summary(struct mfs_scrub_ctx *ctx)
{
	struct mfs_fs *fs = ctx->fs;
	uint64_t fdblocks = 0, icount = 0, ifree = 0;
	struct mfs_buf *bp;
	int err = 0, complete = 1;

	for (uint32_t agno = 0; agno < fs->geo.agcount && !err; agno++) {
		struct scrub_ag sa;
		uint64_t f = 0, ic = 0, ifr = 0;

		err = scrub_cancelled(ctx);
		if (err)
			break;
		scrub_ag_lock(fs, agno);
		err = scrub_ag_scan(ctx, agno, SCRUB_WANT_BNO | SCRUB_WANT_INO, &sa);
		if (!err && (!sa.agh || (sa.have & (SCRUB_WANT_BNO | SCRUB_WANT_INO)) !=
					(SCRUB_WANT_BNO | SCRUB_WANT_INO))) {
			scrub_report(ctx, MFS_SCRUB_OFLAG_INCOMPLETE, "summary counters: AG %u not "
				     "counted, its header or trees are unreadable", agno);
			complete = 0;
		} else if (!err) {
			for (size_t i = 0; i < sa.recs[MFS_BT_BNO].n; i++)
				f += mfs_get32(((const struct mfs_alloc_rec *)
						scrub_rec(&sa.recs[MFS_BT_BNO], i))->blockcount);
			for (size_t i = 0; i < sa.recs[MFS_BT_INO].n; i++) {
				const struct mfs_inobt_rec *c = scrub_rec(&sa.recs[MFS_BT_INO], i);

				ic += MFS_INODES_PER_CHUNK;
				ifr += (unsigned)__builtin_popcountll(mfs_get64(c->freemask));
			}
			if (f != mfs_get32(sa.agh->freeblks) || ic != mfs_get32(sa.agh->icount) ||
			    ifr != mfs_get32(sa.agh->ifree))
				scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "summary counters: AG %u "
					     "header says %u free blocks, %u inodes, %u free; its "
					     "trees hold %llu, %llu, %llu", agno,
					     mfs_get32(sa.agh->freeblks), mfs_get32(sa.agh->icount),
					     mfs_get32(sa.agh->ifree), (unsigned long long)f,
					     (unsigned long long)ic, (unsigned long long)ifr);
			fdblocks += f;
			icount += ic;
			ifree += ifr;
		}
		scrub_ag_release(&sa);
		scrub_ag_unlock(fs, agno);
	}
	if (err || !complete)
		return err;
	err = mfs_read_sb(fs, 0, &bp);
	if (mfs_is_corruption(err))
		return 0;               /* the SB checker's finding */
	if (err)
		return err;
	{
		const struct mfs_sb *sb = bp->data;

		if ((mfs_get32(sb->state) & MFS_STATE_CLEAN) &&
		    (mfs_get64(sb->fdblocks) != fdblocks || mfs_get64(sb->icount) != icount ||
		     mfs_get64(sb->ifree) != ifree))
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "summary counters: the clean "
				     "superblock says %llu free blocks, %llu inodes, %llu free; the "
				     "AGs hold %llu, %llu, %llu",
				     (unsigned long long)mfs_get64(sb->fdblocks),
				     (unsigned long long)mfs_get64(sb->icount),
				     (unsigned long long)mfs_get64(sb->ifree),
				     (unsigned long long)fdblocks, (unsigned long long)icount,
				     (unsigned long long)ifree);
	}
	mfs_buf_put(bp);
	return 0;
}
