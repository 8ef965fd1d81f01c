/*
 * repair_summary.c — the summary counters: each AG header's counters recounted from its
 * trees, then the superblock's (free blocks, inodes, free inodes) rewritten from the AG
 * headers.  Online and offline alike.
 *
 * First, AG by AG, under that AG's lock only (allocations elsewhere go on), the trees are
 * verified and counted (rep_agh_counters, repair_agh.c) and compared with the header's
 * freeblks, longest, btreeblks, icount and ifree; a damaged tree stops the repair with its
 * name (its rebuild comes first).  Then ONE transaction locks every AG, in increasing order:
 * the headers found wrong are counted again (now under every lock) and rewritten, every
 * header is summed, and the primary superblock's counters are set from the sum — so an
 * abort before that commit changes nothing, and the work under all the locks is reading
 * the headers plus recounting only the AGs that were wrong.  Mounted, those
 * counters are stale by design (only the unmount writes them, and the checker compares
 * them only while the superblock says clean); they are right at the moment of the commit.
 */
#include "repair_priv.h"

#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "log.h"
#include "mem.h"
#include "trans.h"

#include <stdlib.h>
#include <string.h>

/*
 * Whether AG agno's header counters disagree with its trees (*bad), looked at under that AG's
 * lock only; with tp (which holds the lock) the header is also joined and rewritten.
 */
static int recount_ag(struct rep *r, struct mfs_trans *tp, uint32_t agno, int *bad)
{
	const unsigned which = REP_AGH_FREE | REP_AGH_INODES;
	struct mfs_fs *fs = r->fs;
	struct rep_agh_counts c;
	struct mfs_trans *own = NULL;
	struct mfs_buf *bp = NULL;
	int err = 0;

	if (!tp) {
		err = mfs_trans_alloc(fs, &own);
		if (err)
			return rep_fail(r, err, "no memory for the transaction");
		tp = own;
	}
	err = mfs_trans_lock_ag(tp, agno, 0);
	if (!err) {
		err = mfs_read_agh(fs, agno, &bp);
		if (err)
			rep_fail(r, err, "AG %u header unreadable (%s): repair it first", agno,
				 strerror(-err));
	}
	if (!err)
		err = rep_agh_counters(r, agno, bp, which, &c);
	if (!err)
		*bad = rep_agh_put_counts(bp->data, which, &c, NULL);
	if (!err && *bad && !own) {
		err = mfs_trans_modify(tp, bp);
		if (!err)
			rep_agh_put_counts(bp->data, which, &c, bp->data);
	}
	if (bp)
		mfs_buf_put(bp);
	if (own)
		mfs_trans_cancel(own);
	return err;
}

int rep_summary(struct rep *r)
{
	struct mfs_fs *fs = r->fs;
	uint64_t fdblocks = 0, icount = 0, ifree = 0;
	unsigned fixed = 0;
	unsigned char *bad;
	struct mfs_trans *tp;
	struct mfs_buf *bp;
	struct mfs_sb *sb;
	int err = 0;

	bad = mfs_calloc(fs->geo.agcount, 1);
	if (!bad)
		return rep_fail(r, -ENOMEM, "no memory for %u AGs", fs->geo.agcount);
	for (uint32_t agno = 0; agno < fs->geo.agcount && !err; agno++) {
		int b = 0;

		err = recount_ag(r, NULL, agno, &b);
		bad[agno] = (unsigned char)b;
	}
	if (!err)
		err = mfs_trans_alloc(fs, &tp);
	if (err) {
		free(bad);
		return err == -ENOMEM && !r->rc->reason[0] ?
		       rep_fail(r, err, "no memory for the transaction") : err;
	}
	for (uint32_t agno = 0; agno < fs->geo.agcount && !err; agno++) {
		const struct mfs_agh *agh;
		int b = 0;

		if (bad[agno]) {
			err = recount_ag(r, tp, agno, &b);
			fixed += b;
			if (err)
				break;
		}
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
	free(bad);
	if (!err)
		err = rep_poll(r);
	if (!err) {
		err = mfs_read_sb(fs, 0, &bp);
		if (err)
			rep_fail(r, err, "primary superblock unreadable (%s): repair it first",
				 strerror(-err));
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
	}
	mfs_buf_put(bp);
	err = rep_commit(r, tp, err, "the summary counters");
	if (err)
		return err;
	if (fixed)
		mfs_log(MFS_LOG_INFO, "summary counters: %u AG header(s) recounted from their trees",
			fixed);
	return 0;
}
