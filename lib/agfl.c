/*
 * agfl.c — the AG free list: a small stock of free blocks kept in the AGFL block (agbno 2)
 * as a circular array of agbnos, whose first slot and count live in the AG header
 * (fl_first, fl_count).  Blocks are taken from the front and given back at the end.
 *
 * The free-space and reverse-map btrees take their split blocks from here and give merged
 * blocks back, so that changing those trees never needs the allocator (which would change
 * them again).  Keeping the stock between mfs_agfl_need() and a little above it is the
 * allocator's job (alloc.c: agfl_fix, run before every operation on an AG); this file only
 * moves single blocks and says how many are needed.
 *
 * Blocks on the AGFL are owned by MFS_OWN_AG in the reverse map and are in neither
 * free-space tree; their contents are meaningless.
 */
#include "ag.h"
#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "log.h"
#include "trans.h"

/*
 * Worst case of one allocator operation: the by-block and by-length trees may each see two
 * inserts (the two leftovers of an extent cut from the middle), each of which may split
 * every level and add a root (levels + 1 blocks); the reverse map sees one insert (a new
 * record, or the right half of a partly freed one).  Capped by the size of the list.
 */
unsigned mfs_agfl_need(const struct mfs_fs *fs, const struct mfs_agh *agh)
{
	unsigned lb = mfs_get32(agh->levels[MFS_BT_BNO]);
	unsigned lc = mfs_get32(agh->levels[MFS_BT_CNT]);
	unsigned lr = mfs_get32(agh->levels[MFS_BT_RMAP]);
	unsigned need;

	(void)fs;
	if (lb > MFS_BTREE_MAXLEVELS)
		lb = MFS_BTREE_MAXLEVELS;
	if (lc > MFS_BTREE_MAXLEVELS)
		lc = MFS_BTREE_MAXLEVELS;
	if (lr > MFS_BTREE_MAXLEVELS)
		lr = MFS_BTREE_MAXLEVELS;
	need = 2 * (lb + 1) + 2 * (lc + 1) + (lr + 1);
	return need < MFS_AGFL_SIZE_MAX ? need : MFS_AGFL_SIZE_MAX;
}

/* Read the AGFL and join it (and the header) to the transaction. */
static int agfl_join(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp,
		     struct mfs_buf **agfl_bp)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	int err;

	err = mfs_read_agfl(fs, agno, agfl_bp);
	if (err)
		return err;
	err = mfs_trans_modify(tp, *agfl_bp);
	if (!err)
		err = mfs_trans_modify(tp, agh_bp);
	if (err) {
		mfs_buf_put(*agfl_bp);
		*agfl_bp = NULL;
	}
	return err;
}

int mfs_agfl_get(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp, uint32_t *agbno)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	struct mfs_agh *agh = agh_bp->data;
	uint32_t first = mfs_get32(agh->fl_first), count = mfs_get32(agh->fl_count);
	uint32_t aglen = mfs_ag_length(&fs->geo, agno), bno;
	struct mfs_buf *bp;
	struct mfs_agfl *fl;
	int err;

	if (first >= MFS_AGFL_SIZE_MAX || count > MFS_AGFL_SIZE_MAX)
		return MFS_CORRUPT("AG %u header: free list first %u count %u, at most %u slots",
				   agno, first, count, MFS_AGFL_SIZE_MAX);
	/* The allocator stocks the list before every change (alloc.c: agfl_fix), so an empty
	 * list here is an internal inconsistency in the middle of a change, never "AG full":
	 * the caller must cancel, not try another AG with a half-changed one. */
	if (count == 0)
		return MFS_CORRUPT("AG %u: free list empty while a btree needs a block in the "
				   "middle of a change (expected at least 1, header says 0)", agno);
	err = agfl_join(tp, agno, agh_bp, &bp);
	if (err)
		return err;
	fl = bp->data;
	bno = mfs_get32(fl->bno[first]);
	if (bno < MFS_AG_FIXED_BLOCKS || bno >= aglen) {
		mfs_buf_put(bp);
		return MFS_CORRUPT("AG %u free list slot %u: block %u outside %u..%u", agno, first,
				   bno, MFS_AG_FIXED_BLOCKS, aglen - 1);
	}
	mfs_put32(fl->bno[first], 0);
	mfs_put32(agh->fl_first, (first + 1) % MFS_AGFL_SIZE_MAX);
	mfs_put32(agh->fl_count, count - 1);
	mfs_buf_put(bp);
	*agbno = bno;
	return 0;
}

int mfs_agfl_put(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp, uint32_t agbno)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	struct mfs_agh *agh = agh_bp->data;
	uint32_t first = mfs_get32(agh->fl_first), count = mfs_get32(agh->fl_count);
	uint32_t aglen = mfs_ag_length(&fs->geo, agno);
	struct mfs_buf *bp;
	struct mfs_agfl *fl;
	int err;

	if (first >= MFS_AGFL_SIZE_MAX || count > MFS_AGFL_SIZE_MAX)
		return MFS_CORRUPT("AG %u header: free list first %u count %u, at most %u slots",
				   agno, first, count, MFS_AGFL_SIZE_MAX);
	if (agbno < MFS_AG_FIXED_BLOCKS || agbno >= aglen)
		return MFS_CORRUPT("AG %u: block %u given to the free list lies outside %u..%u",
				   agno, agbno, MFS_AG_FIXED_BLOCKS, aglen - 1);
	if (count == MFS_AGFL_SIZE_MAX)    /* the same: trimmed before every change */
		return MFS_CORRUPT("AG %u: free list full (%u blocks) while a btree gives a "
				   "block back in the middle of a change", agno, count);
	err = agfl_join(tp, agno, agh_bp, &bp);
	if (err)
		return err;
	fl = bp->data;
	mfs_put32(fl->bno[(first + count) % MFS_AGFL_SIZE_MAX], agbno);
	mfs_put32(agh->fl_count, count + 1);
	mfs_buf_put(bp);
	return 0;
}
