/*
 * repair_sb.c — the superblock rebuilder: the primary (AG 0) or the copy of AG n rewritten
 * whole from the geometry the filesystem runs with.
 *
 * The geometry in memory (fs->geo) is the truth: the daemon read it from a primary that
 * verified when it mounted, and mendfs_repair from the primary or, when the primary was
 * unreadable, from a copy (MFS_OPEN_SB_COPY in fs.h).  Unless the image says otherwise:
 * a primary that verifies but had a geometry field changed before its CRC was computed
 * is caught by rep_geo_check (which the AG header rebuild calls too), and nothing is
 * rewritten from it.  The rest of a superblock (state,
 * features, summary counters, times, label) is taken from the best source there is, in
 * this order: the primary if it verifies and agrees with fs->geo; else (rebuilding the
 * primary) the block being rebuilt if it verifies; else the first copy that does; else
 * nothing — counters 0 and state DIRTY, which the daemon's unmount or the offline summary
 * rebuild sets right.  What is taken is sanitised the way the checker (scrub_sb.c) wants it:
 * unknown feature and state bits dropped, "clean and dirty" made dirty, padding, reserved
 * words, label bytes after the NUL and everything past the structure zero.
 *
 * One transaction under the AG's lock rewrites the block, so a cancel (or a crash before the
 * commit) leaves the old one.  The primary is the block every tool opens first: the journal
 * logs it like any other, and replay checks that its image verifies as a superblock.
 */
#include "repair_priv.h"

#include "bcache.h"
#include "byteorder.h"
#include "dev.h"
#include "fs.h"
#include "geom.h"
#include "log.h"
#include "mem.h"
#include "trans.h"
#include "verify.h"

#include <stdlib.h>
#include <string.h>

#define SB_STATES (MFS_STATE_CLEAN | MFS_STATE_DIRTY | MFS_STATE_ERRORS)

/* Whether two geometries are the same filesystem's. */
static int geo_same(const struct mfs_geom *g, const struct mfs_geom *m)
{
	return g->blocksize == m->blocksize && g->dblocks == m->dblocks &&
	       g->agblocks == m->agblocks && g->agcount == m->agcount &&
	       g->inodesize == m->inodesize && g->rootino == m->rootino &&
	       g->logstart == m->logstart && g->logblocks == m->logblocks &&
	       !memcmp(g->uuid, m->uuid, sizeof(m->uuid));
}

/* Whether sb holds the geometry the filesystem runs with. */
static int sb_matches(const struct mfs_fs *fs, const struct mfs_sb *sb)
{
	struct mfs_geom g;

	if (mfs_geom_from_sb(&g, sb, mfs_dev_size(fs->dev)))
		return 0;
	memcpy(g.uuid, sb->hdr.uuid, sizeof(g.uuid));
	return geo_same(&g, &fs->geo);
}

/*
 * The source of the non-geometry fields: copied into *src (a whole struct mfs_sb).  0 when
 * one was found (*from names it), -ENOENT when none was; never fails otherwise.  tp holds
 * the locks of AG 0 and agno.
 */
static int sb_source(struct rep *r, struct mfs_trans *tp, uint32_t agno, struct mfs_sb *src,
		     const char **from)
{
	struct mfs_fs *fs = r->fs;

	for (uint32_t a = 0; a < fs->geo.agcount; a++) {
		struct mfs_buf *bp;
		int ok;

		/* A copy is read under its AG's lock (another repair may be rewriting it),
		 * taken without waiting: the locks below agno are out of order. */
		if ((a && a == agno) || (a && mfs_trans_lock_ag(tp, a, 1)) ||
		    mfs_read_sb(fs, a, &bp))
			continue;
		ok = sb_matches(fs, bp->data);
		if (ok)
			memcpy(src, bp->data, sizeof(*src));
		mfs_buf_put(bp);
		if (ok) {
			*from = a == agno ? "its own fields" : a ? "a superblock copy" :
				"the primary";
			return 0;
		}
	}
	return -ENOENT;
}

/* The kind of metadata block a magic number names, or NULL. */
static const char *block_kind(uint32_t magic)
{
	switch (magic) {
	case MFS_SB_MAGIC:      return "superblock";
	case MFS_AGH_MAGIC:     return "AG header";
	case MFS_AGFL_MAGIC:    return "AG free list";
	case MFS_BNOBT_MAGIC:   return "free-space-by-block btree";
	case MFS_CNTBT_MAGIC:   return "free-space-by-length btree";
	case MFS_INOBT_MAGIC:   return "inode btree";
	case MFS_RMAPBT_MAGIC:  return "reverse-map btree";
	case MFS_BMBT_MAGIC:    return "extent-map btree";
	case MFS_DIRBT_MAGIC:   return "directory btree";
	case MFS_XATTRBT_MAGIC: return "attribute btree";
	case MFS_XATTRV_MAGIC:  return "attribute value";
	default:                return NULL;
	}
}

/*
 * The copies' vote: the superblocks of AGs 1-3 that verify where the geometry in use puts
 * them.  When two or more agree with each other on a geometry and none agrees with the one
 * in use, the primary it came from is the damaged one (its fields were changed before its
 * CRC was computed): rewriting the copies from it would spread the damage to every copy.
 * 0, or -EFSCORRUPTED with the reason set.
 */
static int geo_vote(struct rep *r)
{
	struct mfs_fs *fs = r->fs;
	struct mfs_geom first, g;
	unsigned agree = 0, with_use = 0;
	uint32_t last = fs->geo.agcount > 4 ? 4 : fs->geo.agcount;

	for (uint32_t agno = 1; agno < last; agno++) {
		uint64_t fsb = mfs_agbno_to_fsb(&fs->geo, agno, MFS_SB_AGBNO);
		const struct mfs_sb *sb;
		struct mfs_buf *bp;
		int ok;

		if (mfs_buf_read(fs->bc, fsb, NULL, &bp))
			continue;
		sb = bp->data;
		ok = mfs_get32(sb->hdr.magic) == MFS_SB_MAGIC &&
		     mfs_get64(sb->hdr.blkno) == fsb &&
		     mfs_blk_crc_ok(sb, fs->geo.blocksize) &&
		     !mfs_geom_from_sb(&g, sb, mfs_dev_size(fs->dev));
		if (ok)
			memcpy(g.uuid, sb->hdr.uuid, sizeof(g.uuid));
		mfs_buf_put(bp);
		if (!ok)
			continue;
		if (geo_same(&g, &fs->geo))
			with_use++;
		else if (!agree++)
			first = g;
		else if (!geo_same(&g, &first))
			return 0;       /* the copies disagree among themselves: no vote */
	}
	if (agree < 2 || with_use)
		return 0;
	return rep_fail(r, -EFSCORRUPTED, "%u superblock copies agree on a geometry other than "
			"the primary's in use (the copies say %llu blocks, agblocks %u, root inode "
			"%llu, log %llu+%u): the primary seems damaged; nothing was changed "
			"(mendfs_repair must take the geometry from a copy)", agree,
			(unsigned long long)first.dblocks, first.agblocks,
			(unsigned long long)first.rootino, (unsigned long long)first.logstart,
			first.logblocks);
}

/*
 * Whether the geometry in use finds AG 1's superblock and header where it puts them.  The
 * rebuilders of superblocks and AG headers write where fs->geo says; a primary that
 * verifies but says a wrong agblocks (a bit flipped before its CRC was computed) would have
 * them write over other structures.  Evidence of that: a block at one of those two places
 * that carries our UUID and its own address as a block of another kind (an AG header where
 * the superblock belongs, a superblock where the header belongs, a btree block...).  A
 * damaged or zeroed block there is no evidence (that is what the rebuild is for).  Then the
 * copies' vote (geo_vote).  0, or -EFSCORRUPTED with the reason set; read errors are left
 * to the rebuild.
 */
int rep_geo_check(struct rep *r)
{
	struct mfs_fs *fs = r->fs;
	static const uint32_t want[2] = { MFS_SB_MAGIC, MFS_AGH_MAGIC };
	static const uint32_t agbno[2] = { MFS_SB_AGBNO, MFS_AGH_AGBNO };

	if (fs->geo.agcount < 2)
		return 0;
	for (int i = 0; i < 2; i++) {
		uint64_t fsb = mfs_agbno_to_fsb(&fs->geo, 1, agbno[i]);
		const struct mfs_blkhdr *h;
		struct mfs_buf *bp;
		const char *kind;
		uint32_t magic;
		int bad;

		if (mfs_buf_read(fs->bc, fsb, NULL, &bp))
			continue;
		h = bp->data;
		magic = mfs_get32(h->magic);
		kind = block_kind(magic);
		bad = kind && magic != want[i] && mfs_get64(h->blkno) == fsb &&
		      !memcmp(h->uuid, fs->geo.uuid, sizeof(h->uuid));
		mfs_buf_put(bp);
		if (bad)
			return rep_fail(r, -EFSCORRUPTED, "the geometry in use (agblocks %u, from the "
					"primary superblock) puts AG 1's %s at block %llu, which holds "
					"this filesystem's %s block of that address: the geometry seems "
					"wrong; nothing was changed", fs->geo.agblocks, i ? "header" : "superblock",
					(unsigned long long)fsb, kind);
	}
	return geo_vote(r);
}

/* Fill blk (a whole block) with the superblock of AG agno: geometry from fs->geo, the
 * other fields from src (or defaults without one), sanitised; `mounted`: the daemon serves
 * the filesystem read-write. */
static void sb_build(const struct mfs_fs *fs, uint32_t agno, const struct mfs_sb *src,
		     int mounted, void *blk)
{
	const struct mfs_geom *g = &fs->geo;
	struct mfs_sb *sb = blk;
	uint32_t state = MFS_STATE_DIRTY;

	mfs_blk_init(blk, g->blocksize, MFS_SB_MAGIC, mfs_agbno_to_fsb(g, agno, MFS_SB_AGBNO),
		     agno, g->uuid);
	mfs_geom_to_sb(g, sb);
	if (src) {
		state = mfs_get32(src->state) & SB_STATES;
		if ((state & MFS_STATE_CLEAN) && (state & MFS_STATE_DIRTY))
			state &= ~MFS_STATE_CLEAN;
		mfs_put32(sb->features_compat,
			  mfs_get32(src->features_compat) & MFS_FEAT_COMPAT_SUPPORTED);
		mfs_put32(sb->features_ro_compat,
			  mfs_get32(src->features_ro_compat) & MFS_FEAT_RO_COMPAT_SUPPORTED);
		mfs_put32(sb->features_incompat,
			  mfs_get32(src->features_incompat) & MFS_FEAT_INCOMPAT_SUPPORTED);
		sb->icount = src->icount;
		sb->ifree = src->ifree;
		sb->fdblocks = src->fdblocks;
		sb->ctime = src->ctime;
		sb->wtime = src->wtime;
		for (size_t i = 0; i < sizeof(sb->label) && src->label[i]; i++)
			sb->label[i] = src->label[i];
	}
	/* The primary of a filesystem mounted read-write says so, whatever the source said
	 * (a copy keeps the state of its last rewrite). */
	if (agno == 0 && mounted)
		state = (state & MFS_STATE_ERRORS) | MFS_STATE_DIRTY;
	mfs_put32(sb->state, state);
	mfs_blk_seal(blk, g->blocksize);
}

int rep_sb(struct rep *r)
{
	struct mfs_fs *fs = r->fs;
	uint32_t agno = r->rc->agno;
	uint64_t fsb = mfs_agbno_to_fsb(&fs->geo, agno, MFS_SB_AGBNO);
	struct mfs_sb *src;
	struct mfs_trans *tp = NULL;
	struct mfs_buf *bp = NULL;
	const char *from = "nothing (defaults)";
	int err, have;

	err = rep_geo_check(r);
	if (err)
		return err;
	src = mfs_malloc(sizeof(*src));
	if (!src)
		return rep_fail(r, -ENOMEM, "no memory for the superblock");
	err = mfs_trans_alloc(fs, &tp);
	if (err) {
		free(src);
		return rep_fail(r, err, "no memory for the transaction");
	}
	/* AG 0's lock guards the primary (which every other rebuild of a superblock reads),
	 * agno's the block rewritten. */
	err = mfs_trans_lock_ag(tp, 0, 0);
	if (!err)
		err = mfs_trans_lock_ag(tp, agno, 0);
	if (err) {
		rep_fail(r, err, "could not lock AG %u: %s", agno, strerror(-err));
		goto out;
	}
	have = sb_source(r, tp, agno, src, &from) == 0;
	err = rep_poll(r);
	if (err)
		goto out;
	/* The block whatever it holds: joined, then written whole. */
	err = mfs_buf_read(fs->bc, fsb, NULL, &bp);
	if (err) {
		rep_fail(r, err, "AG %u superblock (block %llu) unreadable: %s", agno,
			 (unsigned long long)fsb, strerror(-err));
		goto out;
	}
	err = mfs_trans_modify(tp, bp);
	if (err) {
		rep_fail(r, err, "no memory to join the superblock");
		goto out;
	}
	sb_build(fs, agno, have ? src : NULL, !(r->rc->flags & MFS_REPAIR_OFFLINE) && fs->log,
		 bp->data);
	mfs_buf_set_meta(bp);
	r->rc->records = 1;
	mfs_buf_put(bp);
	bp = NULL;
	err = rep_commit(r, tp, 0, "the AG %u superblock", agno);
	tp = NULL;
	if (!err)
		mfs_log(MFS_LOG_INFO, "AG %u superblock rewritten from the geometry in use and %s",
			agno, from);
out:
	if (bp)
		mfs_buf_put(bp);
	if (tp)
		mfs_trans_cancel(tp);
	free(src);
	return err;
}
