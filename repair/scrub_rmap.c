/*
 * scrub_rmap.c — the reverse-map checker of one AG.
 *
 * Under the AG lock: the tree passes the structural check; each record is non-empty, inside
 * the AG, does not overlap the previous one (no owner shares blocks in mendfs), and names a
 * known owner — a special one (offset 0) or a valid inode number (offset flags known).
 * Every block of the AG is either free (bnobt) or owned, never both, never neither.  The
 * special owners hold exactly what they should:
 *
 *     fs      the fixed blocks 0..2
 *     log     the journal, when it lies in this AG (nothing otherwise)
 *     ag      every bnobt, cntbt and rmapbt block and every block on the free list
 *     inobt   every inobt block
 *     inodes  every inode chunk of the inobt
 *
 * All of that is one pass over the records in start order (check_pass).  The records are
 * not kept when the walk is the check's own: the tree is read forward by a sweep cursor
 * (struct rsrc), and read again for the second phase in windows of a bounded number of
 * records, so that the check's memory does not grow with the AG (a million records are
 * 24 MiB); a walk borrowed from the census has them all, and they are used as they are.
 *
 * Then, with the AG unlocked, the inode-owned records are taken owner by owner (sorted by
 * owner, then file offset: each owner is read once per window, its extent btree forward,
 * whatever the interleaving of the owners' extents on disk).  When the owner's committed
 * on-disk inode maps all of them (data extents of an inline extent list, scrub_priv.h)
 * nothing more is needed; otherwise the owner is taken (its lock shared) and each record
 * compared with it; for a record that does not match, the inode is checked to be the
 * committed one (not freed meanwhile) and the record looked up again with the AG locked
 * (inode lock, then AG lock: the order transactions use), and reported if still there.  It
 * must match the inode — allocated, and for a data extent, mapped by the inode's extent
 * map at that file offset; for btree blocks, a block of that fork's tree (extent btree,
 * directory name btree, attribute btree); for attribute value blocks, an attribute btree.
 */
#include "ag.h"
#include "bcache.h"
#include "bmap.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "mem.h"
#include "scrub_priv.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define RMAP_KNOWN_FLAGS (MFS_RMAP_ATTR_FORK | MFS_RMAP_BMBT_BLOCK)

static int special_owner(uint64_t owner)
{
	return owner == MFS_OWN_FS || owner == MFS_OWN_LOG || owner == MFS_OWN_AG ||
	       owner == MFS_OWN_INOBT || owner == MFS_OWN_INODES;
}

/* ---- the AG's records in start order ------------------------------------------------------ */
/*
 * With the AG locked: the collected records (a walk borrowed from the census keeps them:
 * sa->recs) or, when the check's own walk kept none (a million are 24 MiB), the tree read
 * forward by a cursor from the record that covers or follows block `from` (a sweep:
 * MFS_BTREE_CUR_ONCE).  next:
 * *r the next record (valid until the next call), NULL at the end.
 */
struct rsrc {
	const struct scrub_ag *sa;
	struct mfs_fs *fs;
	uint32_t agno, from;
	struct mfs_buf *agh_bp;
	int streamed, open;
	size_t i;                           /* index of the record at hand */
	struct mfs_btree_cur cur;
	struct mfs_rmap_rec rec;
};

static void rsrc_init(struct rsrc *s, const struct scrub_ag *sa, struct mfs_fs *fs,
		      uint32_t agno, struct mfs_buf *agh_bp, uint32_t from)
{
	memset(s, 0, sizeof(*s));
	s->sa = sa;
	s->fs = fs;
	s->agno = agno;
	s->agh_bp = agh_bp;
	s->from = from;
	s->streamed = !sa || !sa->recs[MFS_BT_RMAP].n;
	s->i = (size_t)-1;
}

static int rsrc_next(struct rsrc *s, const struct mfs_rmap_rec **r)
{
	struct mfs_rmap_key key;
	int stat = 0, err;

	*r = NULL;
	s->i++;
	if (!s->streamed) {
		if (s->i < s->sa->recs[MFS_BT_RMAP].n)
			*r = scrub_rec(&s->sa->recs[MFS_BT_RMAP], s->i);
		return 0;
	}
	if (!s->open) {
		mfs_ag_cur_init(&s->cur, s->fs, NULL, s->agno, MFS_BT_RMAP, s->agh_bp);
		s->cur.flags |= MFS_BTREE_CUR_ONCE;
		s->open = 1;
		mfs_put32(key.startblock, s->from);
		/* From block `from` on: a record that starts before it and covers it too (the
		 * next window's first record, grown at its front since the window before) */
		err = mfs_btree_lookup(&s->cur, &key, s->from ? MFS_LOOKUP_LE : MFS_LOOKUP_GE,
				       &stat);
		if (!err && stat && s->from) {
			err = mfs_btree_get(&s->cur, &s->rec, &stat);
			if (!err && stat && (uint64_t)mfs_get32(s->rec.startblock) +
			    mfs_get32(s->rec.blockcount) <= s->from)
				err = mfs_btree_next(&s->cur, &stat);
		} else if (!err && s->from) {
			err = mfs_btree_lookup(&s->cur, &key, MFS_LOOKUP_GE, &stat);
		}
	} else {
		err = mfs_btree_next(&s->cur, &stat);
	}
	if (!err && stat)
		err = mfs_btree_get(&s->cur, &s->rec, &stat);
	if (!err && stat)
		*r = &s->rec;
	return err;
}

static void rsrc_close(struct rsrc *s)
{
	if (s->open)
		mfs_btree_cur_release(&s->cur);
	s->open = 0;
}

/* Where the record at hand lies, for a finding. */
static const char *rsrc_where(struct rsrc *s, char *buf, size_t len)
{
	if (!s->streamed)
		return scrub_rec_where(s->sa, MFS_BT_RMAP, s->i, buf, len);
	if (s->open && s->cur.path[0].bp)
		snprintf(buf, len, "block %u record %d",
			 mfs_fsb_to_agbno(&s->fs->geo, s->cur.path[0].bp->blkno),
			 s->cur.path[0].idx);
	else
		snprintf(buf, len, "record %zu", s->i);
	return buf;
}

/* ---- phase one: the records, the special owners, the coverage (the AG locked) ------------ */
/*
 * A sorted list of blocks that must each be owned by one special owner (the fixed headers):
 * as the records go by in start order, each block is judged at once against the last record
 * starting at or before it (the one that covers it, if any), and reported when that record
 * is not its owner's.
 */
struct expect {
	const uint32_t *blk;
	size_t n, k;
	uint64_t owner;                     /* of every block */
	const char *what;                   /* the blocks, in findings */
	uint64_t distinct;                  /* blocks judged (one listed twice: once) */
	int64_t last;                       /* the last block judged, -1: none */
};

static void expect_upto(struct mfs_scrub_ctx *ctx, uint32_t agno, struct expect *e,
			uint64_t below, const struct mfs_rmap_rec *prev)
{
	char ob[32], ob2[32];

	for (; e->k < e->n && e->blk[e->k] < below; e->k++) {
		uint32_t b = e->blk[e->k];
		uint64_t found = prev && (uint64_t)mfs_get32(prev->startblock) +
				 mfs_get32(prev->blockcount) > b ? mfs_get64(prev->owner) :
				 MFS_OWN_NULL;

		if ((int64_t)b == e->last)
			continue;
		e->last = b;
		e->distinct++;
		if (found != e->owner)
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u rmapbt: %s block %u is "
				     "owned by %s, expected %s", agno, e->what, b,
				     found != MFS_OWN_NULL ?
				     scrub_owner_name(found, ob2, sizeof(ob2)) : "nobody",
				     scrub_owner_name(e->owner, ob, sizeof(ob)));
	}
}

/* The special owners' blocks, summed over the records: [MFS_OWN_FS - owner]. */
#define NSPECIAL 5
static int special_idx(uint64_t owner)
{
	return (int)(MFS_OWN_FS - owner);
}

struct pass {
	struct expect fixed;
	/* The AG's trees walked clean, to ask of each AG-owned and inobt-owned block whether
	 * it is theirs (mfs_btree_has_block): no list of their blocks, which would grow with
	 * them (16 bytes a block: +5.6 MiB at 48M extents in the check after a rebuild). */
	struct mfs_btree_cur tree[MFS_AG_NTREES];
	unsigned open;                      /* 1 << t: tree[t] set up */
	int have_ag;                        /* the AG's trees and free list walked clean */
	int reap;                           /* MFS_AGH_REAP: AG-owned blocks of no tree are a
					       reap's still to free (the by-block tree's
					       check reports the mark) */
	uint64_t owned[NSPECIAL];
	int have_log;                       /* the last record starting at or before the log */
	struct mfs_rmap_rec log;
};

/* The number of blocks the owner holds is `have`, or (more: the AG-owned blocks of a reap
 * still to finish, MFS_AGH_REAP, reported by the by-block tree's check) at least. */
static void owned_report(struct mfs_scrub_ctx *ctx, uint32_t agno, const struct pass *p,
			 uint64_t owner, uint64_t have, const char *what, int more)
{
	uint64_t owned = p->owned[special_idx(owner)];
	char ob[32];

	if (owned != have && !(more && owned > have))
		scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u rmapbt: owner %s holds %llu "
			     "blocks, the AG has %llu %s blocks", agno,
			     scrub_owner_name(owner, ob, sizeof(ob)), (unsigned long long)owned,
			     (unsigned long long)have, what);
}

/*
 * What the special owners must hold, from the walk (AG locked): the fixed headers (a list),
 * the AG's own trees and free list (when walked clean) and the inobt (asked of).
 */
static void pass_open(const struct scrub_ag *sa, struct pass *p, uint32_t *fixed)
{
	memset(p, 0, sizeof(*p));
	p->fixed.owner = MFS_OWN_FS;
	p->fixed.what = "fixed header";
	p->fixed.last = -1;
	for (uint32_t b = 0; b < MFS_AG_FIXED_BLOCKS; b++)
		fixed[b] = b;
	p->fixed.blk = fixed;
	p->fixed.n = MFS_AG_FIXED_BLOCKS;
	for (int t = 0; t < MFS_AG_NTREES; t++)
		if (sa->have & (1u << t)) {
			mfs_ag_cur_init(&p->tree[t], sa->fs, NULL, sa->agno, (enum mfs_ag_tree)t,
					sa->agh_bp);
			p->open |= 1u << t;
		}
	p->have_ag = (sa->have & (SCRUB_WANT_BNO | SCRUB_WANT_CNT | SCRUB_WANT_AGFL)) ==
		     (SCRUB_WANT_BNO | SCRUB_WANT_CNT | SCRUB_WANT_AGFL) &&
		     (p->open & SCRUB_WANT_RMAP);
	p->reap = sa->agh && (mfs_get32(sa->agh->flags) & MFS_AGH_REAP);
}

static void pass_close(struct pass *p)
{
	for (int t = 0; t < MFS_AG_NTREES; t++)
		if (p->open & (1u << t))
			mfs_btree_cur_release(&p->tree[t]);
	p->open = 0;
}

/* The free list holds at most MFS_AGFL_SIZE_MAX blocks: looked through as it is. */
static int agfl_has(const struct scrub_ag *sa, uint32_t b)
{
	for (size_t i = 0; i < sa->agfl.n; i++)
		if (*(const uint32_t *)scrub_rec(&sa->agfl, i) == b)
			return 1;
	return 0;
}

/* A record of the AG's own (owner ag) or of the inobt: each of its blocks must be a block
 * of those trees (of the free list), asked of the tree its header names. */
static int special_blocks(struct mfs_scrub_ctx *ctx, const struct scrub_ag *sa, struct pass *p,
			  const struct mfs_rmap_rec *r)
{
	static const uint32_t magic[MFS_AG_NTREES] = {
		[MFS_BT_BNO] = MFS_BNOBT_MAGIC, [MFS_BT_CNT] = MFS_CNTBT_MAGIC,
		[MFS_BT_INO] = MFS_INOBT_MAGIC, [MFS_BT_RMAP] = MFS_RMAPBT_MAGIC,
	};
	const struct mfs_geom *g = &ctx->fs->geo;
	uint32_t start = mfs_get32(r->startblock), n = mfs_get32(r->blockcount);
	int ag = mfs_get64(r->owner) == MFS_OWN_AG;
	int err = 0;

	if (ag ? !p->have_ag || p->reap : !(p->open & SCRUB_WANT_INO))
		return 0;
	for (uint32_t b = start; b < start + n && !err; b++) {
		uint64_t fsb = mfs_agbno_to_fsb(g, sa->agno, b);
		int found = ag && agfl_has(sa, b);
		struct mfs_buf *bp;
		uint32_t m = 0;

		/* the one tree its header names is asked (the header read once here) */
		if (!found && !(err = mfs_buf_read(ctx->fs->bc, fsb, NULL, &bp))) {
			m = mfs_get32(((const struct mfs_blkhdr *)bp->data)->magic);
			mfs_buf_put(bp);
		}
		for (int t = 0; m && t < MFS_AG_NTREES && !err; t++)
			if ((t == MFS_BT_INO) != ag && m == magic[t])
				err = mfs_btree_has_block(&p->tree[t], fsb, &found);
		if (!err && !found)
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u rmapbt: block %u is owned "
				     "by %s but is no block of the %s", sa->agno, b,
				     ag ? "ag" : "inobt",
				     ag ? "bnobt, cntbt, rmapbt or free list" : "inobt");
	}
	return err;
}

/* Record r (in start order) for the special owners' accounts. */
static void pass_special(struct mfs_scrub_ctx *ctx, uint32_t agno, struct pass *p,
			 const struct mfs_rmap_rec *r, const struct mfs_rmap_rec *prev)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	uint32_t start = mfs_get32(r->startblock);
	uint64_t owner = mfs_get64(r->owner);

	expect_upto(ctx, agno, &p->fixed, start, prev);
	if (special_owner(owner))
		p->owned[special_idx(owner)] += mfs_get32(r->blockcount);
	if (g->logblocks && mfs_fsb_to_agno(g, g->logstart) == agno &&
	    start <= mfs_fsb_to_agbno(g, g->logstart)) {
		p->log = *r;
		p->have_log = 1;
	}
}

/* After the last record: the special owners' findings. */
static void special_report(struct mfs_scrub_ctx *ctx, const struct scrub_ag *sa, struct pass *p,
			   const struct mfs_rmap_rec *last)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	uint64_t logowned = p->owned[special_idx(MFS_OWN_LOG)];

	expect_upto(ctx, sa->agno, &p->fixed, UINT64_MAX, last);
	owned_report(ctx, sa->agno, p, MFS_OWN_FS, p->fixed.distinct, p->fixed.what, 0);
	if (g->logblocks && mfs_fsb_to_agno(g, g->logstart) == sa->agno) {
		uint32_t start = mfs_fsb_to_agbno(g, g->logstart);

		if (!p->have_log || (uint64_t)mfs_get32(p->log.startblock) +
		    mfs_get32(p->log.blockcount) < (uint64_t)start + g->logblocks ||
		    mfs_get64(p->log.owner) != MFS_OWN_LOG || logowned != g->logblocks)
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u rmapbt: the journal "
				     "(blocks %u+%u) is not exactly what owner log holds (%llu "
				     "blocks)", sa->agno, start, g->logblocks,
				     (unsigned long long)logowned);
	} else if (logowned) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u rmapbt: owner log holds %llu "
			     "blocks, the journal is not in this AG", sa->agno,
			     (unsigned long long)logowned);
	}
	if (p->have_ag)
		owned_report(ctx, sa->agno, p, MFS_OWN_AG, sa->nblocks[MFS_BT_BNO] +
			     sa->nblocks[MFS_BT_CNT] + sa->nblocks[MFS_BT_RMAP] + sa->agfl.n,
			     "bnobt/cntbt/rmapbt/free list", p->reap);
	if (sa->have & SCRUB_WANT_INO) {
		const struct scrub_recs *ir = &sa->recs[MFS_BT_INO];
		uint64_t want = (uint64_t)ir->n * g->chunkblocks;
		uint64_t inodes = p->owned[special_idx(MFS_OWN_INODES)];

		owned_report(ctx, sa->agno, p, MFS_OWN_INOBT, sa->nblocks[MFS_BT_INO], "inobt", 0);
		if (inodes != want)
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u rmapbt: owner inodes "
				     "holds %llu blocks, the inobt's %zu chunks take %llu", sa->agno,
				     (unsigned long long)inodes, ir->n, (unsigned long long)want);
	}
}

/*
 * The by-block records are not collected (a million are 8 MiB): they are read in order by
 * a stream (scrub_priv.h) alongside the reverse map, which is in the same (start block)
 * order.  With the AG locked and the tree walked clean (SCRUB_WANT_BNO in sa->have): a
 * read error now is an operational one.
 */

/* scrub_any_free on the stream: the record at or before agbno, and the next one. */
static int bno_any_free(struct scrub_stream *bs, uint32_t agbno, uint32_t len, int *isfree)
{
	int err = scrub_stream_upto(bs, agbno);

	*isfree = (bs->have_at && (uint64_t)mfs_get32(bs->at.a.startblock) +
		   mfs_get32(bs->at.a.blockcount) > agbno) ||
		  (bs->have_next && mfs_get32(bs->next.a.startblock) < (uint64_t)agbno + len);
	return err;
}

/*
 * Every block is free or owned: the free extents and the rmap records walked in start
 * order together (the free extents by a stream of their own); a gap between them is
 * leaked space.  (Free space that is also owned is reported record by record.)  cover
 * takes the free extents that start at or before `upto`, then (rec) the record.
 */
struct cover {
	struct scrub_stream fs;
	uint64_t pos;
};

static void cover_at(struct mfs_scrub_ctx *ctx, uint32_t agno, struct cover *c, uint64_t start,
		     uint64_t n)
{
	if (start > c->pos)
		scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u rmapbt: blocks %llu..%llu "
			     "are neither free nor owned (leaked)", agno,
			     (unsigned long long)c->pos, (unsigned long long)start - 1);
	if (start + n > c->pos)
		c->pos = start + n;
}

static int cover_upto(struct mfs_scrub_ctx *ctx, uint32_t agno, struct cover *c, uint64_t upto)
{
	int err = 0;

	while (!err && c->fs.have_next && mfs_get32(c->fs.next.a.startblock) <= upto) {
		cover_at(ctx, agno, c, mfs_get32(c->fs.next.a.startblock),
			 mfs_get32(c->fs.next.a.blockcount));
		err = scrub_stream_step(&c->fs);
	}
	return err;
}

/* Where the record at hand lies (rsrc_where), formatted only for a finding. */
#define WHERE rsrc_where(src, wb, sizeof(wb))
/*
 * One pass over the records: each on its own and against the previous one (inode-owned
 * ones marked in `inode`, bit i: record i, when given), the special owners' accounts, and
 * with the free space walked clean the coverage; then the special owners' findings.
 */
static int check_pass(struct mfs_scrub_ctx *ctx, const struct scrub_ag *sa, struct rsrc *src,
		      uint8_t *inode, int *covered)
{
	const uint32_t C = MFS_SCRUB_OFLAG_CORRUPT;
	const int bno = !!(sa->have & SCRUB_WANT_BNO);
	const struct mfs_rmap_rec *r;
	struct mfs_rmap_rec prev;
	struct scrub_stream bs;
	struct cover cv;
	struct pass p;
	uint32_t fixed[MFS_AG_FIXED_BLOCKS];
	uint64_t prev_end = 0;
	int err = 0, isfree, have_prev = 0;

	pass_open(sa, &p, fixed);
	memset(&cv, 0, sizeof(cv));
	if (bno) {
		err = scrub_stream_open(&bs, ctx->fs, sa->agno, MFS_BT_BNO, sa->agh_bp);
		if (!err)
			err = scrub_stream_open(&cv.fs, ctx->fs, sa->agno, MFS_BT_BNO, sa->agh_bp);
	}
	while (!err && !(err = rsrc_next(src, &r)) && r) {
		uint32_t start = mfs_get32(r->startblock), n = mfs_get32(r->blockcount);
		uint64_t owner = mfs_get64(r->owner), off = mfs_get64(r->offset);
		char wb[48];

		pass_special(ctx, sa->agno, &p, r, have_prev ? &prev : NULL);
		prev = *r;
		have_prev = 1;
		if (bno) {
			err = cover_upto(ctx, sa->agno, &cv, start);
			cover_at(ctx, sa->agno, &cv, start, n);
		}
		if (err)
			break;
		if (n == 0 || (uint64_t)start + n > sa->len) {
			scrub_report(ctx, C, "AG %u rmapbt %s: extent %u+%u is empty or "
				     "outside the AG (%u blocks)", sa->agno, WHERE, start, n, sa->len);
			continue;
		}
		if (src->i && start < prev_end)
			scrub_report(ctx, C, "AG %u rmapbt %s: startblock %u overlaps the "
				     "previous record ending at %llu", sa->agno, WHERE, start,
				     (unsigned long long)prev_end);
		prev_end = (uint64_t)start + n;
		if (bno && !(err = bno_any_free(&bs, start, n, &isfree)) && isfree)
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u rmapbt %s: "
				     "extent %u+%u is also free in the bnobt", sa->agno, WHERE, start, n);
		if (special_owner(owner)) {
			if (off)
				scrub_report(ctx, C, "AG %u rmapbt %s: special owner with "
					     "offset 0x%llx, expected 0", sa->agno, WHERE,
					     (unsigned long long)off);
			if (owner == MFS_OWN_AG || owner == MFS_OWN_INOBT)
				err = special_blocks(ctx, sa, &p, r);
			continue;
		}
		if (owner >= MFS_OWN_MIN || mfs_ino_check(ctx->fs, owner)) {
			scrub_report(ctx, C, "AG %u rmapbt %s: extent %u+%u: owner %llu is "
				     "neither a special owner nor a valid inode number", sa->agno, WHERE,
				     start, n, (unsigned long long)owner);
			continue;
		}
		if (off & ~MFS_RMAP_OFF_MASK & ~RMAP_KNOWN_FLAGS) {
			scrub_report(ctx, C, "AG %u rmapbt %s: offset 0x%llx has unknown "
				     "flags", sa->agno, WHERE, (unsigned long long)off);
			continue;
		}
		if (inode)
			inode[src->i / 8] |= (uint8_t)(1u << (src->i % 8));
	}
	rsrc_close(src);
	if (!err && bno) {
		err = cover_upto(ctx, sa->agno, &cv, UINT32_MAX);
		if (!err && cv.pos < sa->len)
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u rmapbt: blocks %llu..%u "
				     "are neither free nor owned (leaked)", sa->agno,
				     (unsigned long long)cv.pos, sa->len - 1);
		*covered = !err;
	}
	if (bno) {
		scrub_stream_close(&bs);
		scrub_stream_close(&cv.fs);
	}
	if (!err)
		special_report(ctx, sa, &p, have_prev ? &prev : NULL);
	pass_close(&p);
	return err;
}
#undef WHERE

/* An inode-owned record that phase one passes (and does not report): the windows of phase
 * two read the tree again and take only these. */
static int inode_rec_ok(struct mfs_fs *fs, uint32_t aglen, const struct mfs_rmap_rec *r)
{
	uint32_t start = mfs_get32(r->startblock), n = mfs_get32(r->blockcount);
	uint64_t owner = mfs_get64(r->owner), off = mfs_get64(r->offset);

	return n && (uint64_t)start + n <= aglen && !special_owner(owner) &&
	       owner < MFS_OWN_MIN && !mfs_ino_check(fs, owner) &&
	       !(off & ~MFS_RMAP_OFF_MASK & ~RMAP_KNOWN_FLAGS);
}

/* The records marked in `keep`, moved out of the collected reverse map into `out` (the
 * array itself, compacted in place: no second copy of a million records). */
static void take_marked(struct scrub_ag *sa, const uint8_t *keep, struct scrub_recs *out)
{
	struct scrub_recs *rm = &sa->recs[MFS_BT_RMAP];
	size_t k = 0;

	for (size_t i = 0; i < rm->n; i++)
		if (keep[i / 8] & (1u << (i % 8))) {
			if (k != i)
				memcpy(rm->v + k * rm->len, rm->v + i * rm->len, rm->len);
			k++;
		}
	scrub_recs_free(out);
	*out = *rm;
	out->n = k;
	rm->v = NULL;
	rm->n = rm->cap = 0;
}

/* With the AG locked: is exactly this record still in the reverse map? */
static int rmap_still_there(struct mfs_fs *fs, uint32_t agno, const struct mfs_rmap_rec *rec,
			    int *there)
{
	struct mfs_btree_cur cur;
	struct mfs_rmap_rec got;
	struct mfs_rmap_key key;
	struct mfs_buf *hbp;
	int err, stat = 0;

	*there = 0;
	err = mfs_read_agh(fs, agno, &hbp);
	if (err)
		return err;
	key.startblock = rec->startblock;
	mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_RMAP, hbp);
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_EQ, &got, &stat);
	mfs_btree_cur_release(&cur);
	mfs_buf_put(hbp);
	*there = !err && stat && !memcmp(&got, rec, sizeof(got));
	return err;
}

/* The owner being checked. */
struct owner {
	struct mfs_inode *ip;
	int err[2];                         /* [0] data-fork tree, [1] attribute btree: damaged */
	int current;                        /* checked against the committed on-disk inode */
	int dry;                            /* first look: note a mismatch, report nothing */
	int mismatch;                       /* the first look found one */
	/* Its extent btree read forward (a data fork in btree format): the records come by
	 * file offset, so each leaf is read once, by a sweep (MFS_BTREE_CUR_ONCE) that keeps
	 * a tree larger than the buffer cache out of it, instead of a lookup from the root
	 * through the cache for each record. */
	struct mfs_btree_cur bm;
	int bm_open, bm_have;
	struct mfs_bmbt_rec bm_rec;         /* the record under bm (bm_have) */
};

static void bm_close(struct owner *o)
{
	if (o->bm_open)
		mfs_btree_cur_release(&o->bm);
	o->bm_open = o->bm_have = 0;
}

/* The record under the cursor into bm_rec (checked on its own), or bm_have = 0. */
static int bm_get(struct owner *o)
{
	int err = mfs_btree_get(&o->bm, &o->bm_rec, &o->bm_have);

	if (!err && o->bm_have)
		err = mfs_bmbt_check_rec(o->ip->fs, o->ip->ino, &o->bm_rec);
	if (err)
		o->bm_have = 0;
	return err;
}

/* mfs_bmap_lookup for a data fork in btree format, through o->bm: a few steps forward from
 * the record under it when `off` lies ahead (the next record, most often), else a lookup. */
static int bm_lookup(struct owner *o, uint64_t off, struct mfs_bmap_ext *ext)
{
	uint64_t so = 0, end = 0;
	int err = 0, stat = 0, stepped = 0;

	memset(ext, 0, sizeof(*ext));
	if (!o->bm_open) {
		err = mfs_bmbt_cur_init(&o->bm, NULL, o->ip);
		if (err)
			return err;
		o->bm.flags |= MFS_BTREE_CUR_ONCE;
		o->bm_open = 1;
	}
	for (int steps = 0; o->bm_have && steps < 8; steps++) {
		so = mfs_get64(o->bm_rec.startoff);
		end = so + mfs_get32(o->bm_rec.blockcount);
		if (so > off || off < end)
			break;
		err = mfs_btree_next(&o->bm, &stat);
		if (!err && stat)
			err = bm_get(o);
		else
			o->bm_have = 0;
		if (err)
			return err;
		stepped = 1;
	}
	if (o->bm_have) {
		so = mfs_get64(o->bm_rec.startoff);
		end = so + mfs_get32(o->bm_rec.blockcount);
	}
	/* Reached by steps from a record ending at or before off: off is in the hole before
	 * the record now under the cursor (or after the last). */
	if (!(o->bm_have && so <= off && off < end) && !(stepped && (!o->bm_have || so > off))) {
		struct mfs_bmbt_key key;

		mfs_put64(key.startoff, off);
		err = mfs_btree_lookup(&o->bm, &key, MFS_LOOKUP_LE, &stat);
		o->bm_have = 0;
		if (!err && stat)
			err = bm_get(o);
		if (err)
			return err;
		if (o->bm_have) {
			so = mfs_get64(o->bm_rec.startoff);
			end = so + mfs_get32(o->bm_rec.blockcount);
		}
	}
	if (o->bm_have && so <= off && off < end) {
		ext->startoff = so;
		ext->len = end - so;
		ext->startblock = mfs_get64(o->bm_rec.startblock);
		ext->unwritten = !!(mfs_get32(o->bm_rec.flags) & MFS_EXT_UNWRITTEN);
	} else {
		ext->startoff = off;
		ext->len = 1;
		ext->startblock = MFS_BMAP_HOLE;
	}
	return 0;
}

/* The record's data blocks are mapped by o's inode at its file offset, block for block. */
static int data_mapped(struct owner *o, uint64_t fsb, uint64_t off, uint32_t len,
		       uint64_t *bad)
{
	struct mfs_inode *ip = o->ip;
	uint64_t pos = 0;

	while (pos < len) {
		struct mfs_bmap_ext ext;
		uint64_t delta, run;
		int err = ip->dformat == MFS_FMT_BTREE ? bm_lookup(o, off + pos, &ext)
						       : mfs_bmap_lookup(ip, off + pos, &ext);

		if (err)
			return err;
		delta = off + pos - ext.startoff;
		if (ext.startblock == MFS_BMAP_HOLE || ext.startblock + delta != fsb + pos) {
			*bad = off + pos;
			return 1;
		}
		run = ext.len - delta;
		pos += run < len - pos ? run : len - pos;
	}
	return 0;
}

/* A finding about a record against its owner: reported, or only noted on the first look. */
static void owner_finding(struct mfs_scrub_ctx *ctx, struct owner *o, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void owner_finding(struct mfs_scrub_ctx *ctx, struct owner *o, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	if (o->dry) {
		o->mismatch = 1;
		return;
	}
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "%s", msg);
}

static void owner_drop(struct owner *o)
{
	o->err[0] = o->err[1] = 0;
	bm_close(o);
	if (o->ip)
		scrub_irele(o->ip);
	o->ip = NULL;
	o->current = 0;
}

/* Btree-block records: each block is a block of the owner's tree of that fork — asked of
 * the tree block by block (mfs_btree_has_block: the descent by the block's first key), not
 * from a list of the tree's blocks, which would grow with the tree (8 bytes a block). */
static void check_tree_blocks(struct mfs_scrub_ctx *ctx, uint32_t agno,
			      const struct mfs_rmap_rec *r, struct owner *o, int attr)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	uint32_t start = mfs_get32(r->startblock), n = mfs_get32(r->blockcount);
	struct mfs_inode *ip = o->ip;
	const char *tree = attr ? "attribute" : S_ISDIR(ip->mode) ? "name" : "extent";
	struct mfs_btree_ops ops;
	struct mfs_btree_cur cur;
	int found = 1, err = o->err[attr];

	if (!err) {
		memset(&cur, 0, sizeof(cur));
		err = scrub_fork_cur(ip, attr, &ops, &cur);
		for (uint32_t b = 0; !err && found && b < n; b++) {
			uint64_t fsb = mfs_agbno_to_fsb(g, agno, start + b);

			err = mfs_btree_has_block(&cur, fsb, &found);
			if (!err && !found)
				owner_finding(ctx, o, "AG %u rmapbt extent %u+%u: block %llu is not "
					      "a block of inode %llu's %s btree (leaked?)", agno,
					      start, n, (unsigned long long)fsb,
					      (unsigned long long)ip->ino, tree);
		}
		if (!err || err != -EINVAL)
			mfs_btree_cur_release(&cur);
		o->err[attr] = err;
	}
	if (err && o->dry)
		/* A damaged tree is the owner's checker's finding; but on the first look the
		 * inode may be one freed meanwhile: look again once it is known current. */
		o->mismatch = 1;
}

static void check_against_inode(struct mfs_scrub_ctx *ctx, uint32_t agno,
				const struct mfs_rmap_rec *r, struct owner *o)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	struct mfs_inode *ip = o->ip;
	uint32_t start = mfs_get32(r->startblock), n = mfs_get32(r->blockcount);
	uint64_t off = mfs_get64(r->offset), bad = 0;
	int err;

	if (off & MFS_RMAP_ATTR_FORK) {
		if (ip->aformat != MFS_FMT_BTREE)
			owner_finding(ctx, o, "AG %u rmapbt extent %u+%u: attribute-fork blocks of "
				     "inode %llu, whose attribute fork is not a btree", agno, start,
				     n, (unsigned long long)ip->ino);
		else if (off & MFS_RMAP_BMBT_BLOCK)
			check_tree_blocks(ctx, agno, r, o, 1);
		return;
	}
	if (off & MFS_RMAP_BMBT_BLOCK) {
		if (ip->dformat != MFS_FMT_BTREE)
			owner_finding(ctx, o, "AG %u rmapbt extent %u+%u: btree blocks of inode "
				     "%llu, whose data fork is not a btree (leaked?)", agno, start, n,
				     (unsigned long long)ip->ino);
		else
			check_tree_blocks(ctx, agno, r, o, 0);
		return;
	}
	if (ip->dformat != MFS_FMT_EXTENTS && ip->dformat != MFS_FMT_BTREE) {
		owner_finding(ctx, o, "AG %u rmapbt extent %u+%u: data of inode %llu at file block "
			     "%llu, whose data fork holds no extent map", agno, start, n,
			     (unsigned long long)ip->ino, (unsigned long long)off);
		return;
	}
	if (S_ISDIR(ip->mode)) {
		owner_finding(ctx, o, "AG %u rmapbt extent %u+%u: data blocks of directory %llu",
			     agno, start, n, (unsigned long long)ip->ino);
		return;
	}
	err = data_mapped(o, mfs_agbno_to_fsb(g, agno, start), off, n, &bad);
	if (err > 0)
		owner_finding(ctx, o, "AG %u rmapbt extent %u+%u owned by inode %llu at file "
			     "block %llu: the inode maps file block %llu elsewhere", agno, start, n,
			     (unsigned long long)ip->ino, (unsigned long long)off,
			     (unsigned long long)bad);
	else if (err < 0)
		owner_finding(ctx, o, "AG %u rmapbt extent %u+%u owned by inode %llu: its extent "
			     "map cannot be read: %s", agno, start, n,
			     (unsigned long long)ip->ino, scrub_errstr(err));
}

/* The owner of record r is not allocated (or cannot be loaded): if the record is still in
 * the reverse map, that is a finding.  AG unlocked on entry and exit. */
static int owner_missing(struct mfs_scrub_ctx *ctx, uint32_t agno, const struct mfs_rmap_rec *r,
			 const char *why)
{
	int err, there;

	scrub_ag_lock(ctx->fs, agno);
	err = rmap_still_there(ctx->fs, agno, r, &there);
	scrub_ag_unlock(ctx->fs, agno);
	if (!err && there)
		scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u rmapbt extent %u+%u: owner "
			     "inode %llu %s", agno, mfs_get32(r->startblock),
			     mfs_get32(r->blockcount), (unsigned long long)mfs_get64(r->owner),
			     why);
	return mfs_is_corruption(err) ? 0 : err;   /* a damaged tree: the first phase's */
}

/* Take the owner of r, locked shared (0 with *ipp NULL: reported or gone).  Whether it is
 * still the committed inode (not freed while we waited for its lock) is asked only when a
 * record does not match it. */
static int owner_get(struct mfs_scrub_ctx *ctx, uint32_t agno, const struct mfs_rmap_rec *r,
		     struct mfs_inode **ipp)
{
	struct mfs_inode *ip;
	int err;

	*ipp = NULL;
	err = mfs_iget(ctx->fs, mfs_get64(r->owner), MFS_IGET_UNTRUSTED, &ip);
	if (err == -ENOENT || mfs_is_corruption(err))
		return owner_missing(ctx, agno, r, err == -ENOENT ? "is not allocated"
								  : "cannot be loaded");
	if (err)
		return err;
	pthread_rwlock_rdlock(&ip->lock);
	*ipp = ip;
	return 0;
}

/* Before reporting against it: is o's inode still allocated, the one on disk?  0 if so;
 * else it is dropped and record r handled as the record of a missing owner. */
static int owner_current(struct mfs_scrub_ctx *ctx, uint32_t agno, const struct mfs_rmap_rec *r,
			 struct owner *o)
{
	int err;

	if (o->current)
		return 0;
	err = scrub_inode_current(ctx, o->ip);
	if (!err) {
		o->current = 1;
		return 0;
	}
	/* Freed while we waited for its lock. */
	owner_drop(o);
	if (err != -ENOENT && !mfs_is_corruption(err))
		return err;
	err = owner_missing(ctx, agno, r, "is not allocated");
	return err ? err : 1;
}

/* Inode-owned records by owner, then offset (data extents by file offset, then the
 * attribute fork's and the btree blocks: the flags are the offset's high bits), then start:
 * each owner's records in one run, its extent map read forward (struct owner's bm). */
static int cmp_owner(const void *a, const void *b)
{
	const struct mfs_rmap_rec *x = a, *y = b;
	uint64_t ox = mfs_get64(x->owner), oy = mfs_get64(y->owner);
	uint64_t fx = mfs_get64(x->offset), fy = mfs_get64(y->offset);
	uint32_t sx = mfs_get32(x->startblock), sy = mfs_get32(y->startblock);

	if (ox != oy)
		return ox < oy ? -1 : 1;
	if (fx != fy)
		return fx < fy ? -1 : 1;
	return sx < sy ? -1 : sx > sy;
}

static int cmp_owner_idx(const void *a, const void *b, void *arg)
{
	const struct scrub_recs *r = arg;

	return cmp_owner(scrub_rec(r, *(const uint32_t *)a), scrub_rec(r, *(const uint32_t *)b));
}

/*
 * Sort the records by (owner, start block) without a second copy of them (qsort's merge
 * buffer would be one: 24 MiB at a million records): nothing to do when they already are
 * (one owner); else sort 4-byte indices, then move the records into place cycle by cycle
 * (ix[k] names the record that goes to position k; a position done is marked ix[k] = k).
 */
static int sort_by_owner(struct scrub_recs *recs)
{
	uint8_t tmp[sizeof(struct mfs_rmap_rec)];
	size_t i, n = recs->n;
	uint32_t *ix;

	for (i = 1; i < n; i++)
		if (cmp_owner(scrub_rec(recs, i - 1), scrub_rec(recs, i)) > 0)
			break;
	if (i >= n)
		return 0;
	if (n > UINT32_MAX || recs->len != sizeof(tmp)) {
		qsort(recs->v, n, recs->len, cmp_owner);
		return 0;
	}
	ix = mfs_malloc(n * sizeof(*ix));
	if (!ix)
		return -ENOMEM;
	for (i = 0; i < n; i++)
		ix[i] = (uint32_t)i;
	qsort_r(ix, n, sizeof(*ix), cmp_owner_idx, recs);
	for (size_t k = 0; k < n; k++) {
		size_t cur = k;

		if (ix[k] == k)
			continue;
		memcpy(tmp, scrub_rec(recs, k), sizeof(tmp));
		while (ix[cur] != k) {
			size_t src = ix[cur];

			memcpy(recs->v + cur * recs->len, scrub_rec(recs, src), sizeof(tmp));
			ix[cur] = (uint32_t)cur;
			cur = src;
		}
		memcpy(recs->v + cur * recs->len, tmp, sizeof(tmp));
		ix[cur] = (uint32_t)cur;
	}
	free(ix);
	return 0;
}

/* Is [fsb, fsb + len) mapped at file block off, block for block, by the inline extent list
 * recs[0..n) (sorted by file offset)? */
static int inline_maps(const uint8_t *recs, long n, uint64_t fsb, uint64_t off, uint32_t len)
{
	uint64_t pos = 0;
	long i = 0;

	while (pos < len) {
		struct mfs_bmbt_rec e;
		uint64_t so = 0, cnt = 0, delta, run;

		for (; i < n; i++) {
			memcpy(&e, recs + (size_t)i * sizeof(e), sizeof(e));
			so = mfs_get64(e.startoff);
			cnt = mfs_get32(e.blockcount);
			if (so + cnt > off + pos)
				break;
		}
		if (i == n || so > off + pos)
			return 0;
		delta = off + pos - so;
		if (mfs_get64(e.startblock) + delta != fsb + pos)
			return 0;
		run = cnt - delta;
		pos += run < len - pos ? run : len - pos;
	}
	return 1;
}

/*
 * A directory's records, for the quick look below: a name btree of one level (a directory
 * of up to a block of names, the common one) has its root for only block, named in the
 * inode: its one record must be that block, as a btree block of the data fork.  Deeper
 * trees, or anything else, take the full look (which lists the tree's blocks).
 */
static int dir_quick(struct mfs_scrub_ctx *ctx, uint32_t agno, const struct scrub_recs *recs,
		     size_t i, size_t j, uint64_t rootblock)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	const struct mfs_rmap_rec *r = scrub_rec(recs, i);

	return j == i + 1 && (mfs_get64(r->offset) & ~MFS_RMAP_OFF_MASK) == MFS_RMAP_BMBT_BLOCK &&
	       mfs_get32(r->blockcount) == 1 &&
	       rootblock == mfs_agbno_to_fsb(g, agno, mfs_get32(r->startblock));
}

/* Are recs[i..j) all data extents that the inline extent list ext[0..n) maps? */
static int recs_mapped(struct mfs_scrub_ctx *ctx, uint32_t agno, const struct scrub_recs *recs,
		       size_t i, size_t j, const uint8_t *ext, long n)
{
	const struct mfs_geom *g = &ctx->fs->geo;

	for (size_t k = i; k < j; k++) {
		const struct mfs_rmap_rec *r = scrub_rec(recs, k);
		uint64_t off = mfs_get64(r->offset);

		if ((off & ~MFS_RMAP_OFF_MASK) ||
		    !inline_maps(ext, n, mfs_agbno_to_fsb(g, agno, mfs_get32(r->startblock)), off,
				 mfs_get32(r->blockcount)))
			return 0;
	}
	return 1;
}

/*
 * The quick look at one owner's records recs[i..j) (scrub_priv.h, "Committed on-disk
 * inodes"): 1 when they are all data extents of a file whose committed inode, its extent
 * list inline, maps each of them block for block; 0 when they need the full look.  The
 * inode is read through the cluster copy cl: any committed state after the records were
 * collected will do (a record that no longer matches goes to the full look).
 */
/*
 * The census taken with the records (the same change count) has record i's owner as it
 * was then: 1 when it accounts for the record — its one-block name tree or its one inline
 * extent, when that is all the owner has — else 0.  One record at a time (no grouping by
 * owner needed): every record an owner has must pass, the rest go to the look by owner.
 */
static int census_quick(struct mfs_scrub_ctx *ctx, uint32_t agno, const struct scrub_recs *recs,
			size_t i, uint64_t seq, struct scrub_recs *rooted)
{
	const struct mfs_rmap_rec *r = scrub_rec(recs, i);
	uint64_t owner = mfs_get64(r->owner);
	struct scrub_census_ino ci;
	struct mfs_bmbt_rec one;

	if (!scrub_census_get_at(ctx, owner, seq, &ci) || (ci.flags & SCRUB_CI_FREE) ||
	    !(ci.flags & (SCRUB_CI_DIRROOT | SCRUB_CI_EXT1)) || !(ci.flags & SCRUB_CI_NOATTR))
		return 0;
	if (ci.flags & SCRUB_CI_DIRROOT) {
		if (!dir_quick(ctx, agno, recs, i, i + 1, ci.fsb))
			return 0;
		/* Exactly what the directory's own cross-reference wants to see. */
		if (mfs_get64(r->offset) == MFS_RMAP_BMBT_BLOCK && scrub_recs_add(rooted, &owner))
			rooted->n = 0;  /* no memory: the directories look themselves */
		return 1;
	}
	mfs_put64(one.startoff, 0);
	mfs_put64(one.startblock, ci.fsb);
	mfs_put32(one.blockcount, ci.len);
	if (!recs_mapped(ctx, agno, recs, i, i + 1, (const uint8_t *)&one, 1))
		return 0;
	/* The record is the whole extent at file block 0: what the extent map's batch
	 * cross-reference looks for (scrub_bmap_batch.c, SCRUB_CI_ROOTMAP). */
	if (mfs_agbno_to_fsb(&ctx->fs->geo, agno, mfs_get32(r->startblock)) == ci.fsb &&
	    mfs_get32(r->blockcount) == ci.len && mfs_get64(r->offset) == 0 &&
	    scrub_recs_add(rooted, &owner))
		rooted->n = 0;
	return 1;
}

static int owner_quick(struct mfs_scrub_ctx *ctx, uint32_t agno, const struct scrub_recs *recs,
		       size_t i, size_t j, struct scrub_cluster *cl)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	const struct mfs_dinode *d;
	uint64_t owner = mfs_get64(((const struct mfs_rmap_rec *)scrub_rec(recs, i))->owner);
	const uint8_t *ext;
	long n;

	if (scrub_cluster_dinode(ctx, cl, owner, &d) || !scrub_dinode_usable(ctx, owner, d))
		return 0;
	if (S_ISDIR(mfs_get16(d->mode))) {
		struct mfs_dir_root root;

		if (d->dformat != MFS_FMT_BTREE || g->inodesize - sizeof(*d) < sizeof(root))
			return 0;
		memcpy(&root, (const uint8_t *)d + sizeof(*d), sizeof(root));
		return mfs_get32(root.levels) == 1 &&
		       dir_quick(ctx, agno, recs, i, j, mfs_get64(root.rootblock));
	}
	n = scrub_dinode_extents(ctx, d, &ext);
	if (n < 0)
		return 0;
	return recs_mapped(ctx, agno, recs, i, j, ext, n);
}

/*
 * Phase two, AG unlocked on entry and exit: each inode owner against its inode.  The
 * records are taken owner by owner (sorted by owner), so each owner is read once per AG
 * and its btree block lists built once: the cost is linear in the records (plus the sort),
 * however the owners' extents interleave on disk.  An owner's records that its committed
 * inode accounts for need nothing more; the others go through the full look below.
 */
static int check_owners(struct mfs_scrub_ctx *ctx, struct scrub_recs *recs, uint64_t seq,
			struct scrub_recs *rooted, struct owner *o, struct scrub_cluster *cl)
{
	uint32_t agno = ctx->agno;
	size_t kept = 0;
	int err = 0, there;

	/* The records the census accounts for, taken one by one in disk order; only the rest
	 * are sorted by owner and looked at below. */
	for (size_t i = 0; i < recs->n; i++) {
		if (census_quick(ctx, agno, recs, i, seq, rooted))
			continue;
		if (kept != i)
			memcpy(recs->v + kept * recs->len, scrub_rec(recs, i), recs->len);
		kept++;
	}
	recs->n = kept;
	err = sort_by_owner(recs);
	if (err)
		return err;
	for (size_t i = 0, j; i < recs->n && !err; i = j) {
		uint64_t owner = mfs_get64(((const struct mfs_rmap_rec *)scrub_rec(recs, i))->owner);

		for (j = i + 1; j < recs->n; j++)
			if (mfs_get64(((const struct mfs_rmap_rec *)scrub_rec(recs, j))->owner) !=
			    owner)
				break;
		/* The owner kept from the window before is this one's only if the same. */
		if (o->ip && o->ip->ino != owner)
			owner_drop(o);
		err = scrub_cancelled(ctx);
		if (err || owner_quick(ctx, agno, recs, i, j, cl))
			continue;
		for (size_t k = i; k < j && !err; k++) {
			const struct mfs_rmap_rec *r = scrub_rec(recs, k);

			if (!o->ip) {
				/* Once per owner (again only after a record found it gone). */
				err = owner_get(ctx, agno, r, &o->ip);
				if (err || !o->ip)
					continue;
			}
			/* First look, with the inode locked and the AG not: a record that matches
			 * its owner needs nothing more (the inode cannot change under its lock,
			 * and the record was in the tree when collected).  Only a mismatch is
			 * looked at again with the AG locked, and reported if the record is still
			 * there. */
			o->dry = 1;
			o->mismatch = 0;
			check_against_inode(ctx, agno, r, o);
			o->dry = 0;
			if (!o->mismatch)
				continue;
			err = owner_current(ctx, agno, r, o);
			if (err) {
				err = err > 0 ? 0 : err;
				continue;
			}
			scrub_ag_lock(ctx->fs, agno);
			err = rmap_still_there(ctx->fs, agno, r, &there);
			if (!err && there)
				check_against_inode(ctx, agno, r, o);
			scrub_ag_unlock(ctx->fs, agno);
			if (mfs_is_corruption(err))
				err = 0;        /* the tree itself is reported by the first phase */
		}
		/* The last owner of a window may have more records in the next: kept (its lock
		 * shared; the AG's is taken after it, the order transactions use). */
		if (j < recs->n)
			owner_drop(o);
	}
	return err;
}

/*
 * Phase two when phase one streamed the records (the check's own walk keeps none): the
 * tree read again in windows of at most scrub_rmap_window inode-owned records, each taken
 * with the AG locked (as of that moment: a record is checked against its owner as the tree
 * held it then, as in one window of all) and checked against the owners with the AG
 * unlocked.  Memory: a window's records (1.5 MiB) whatever the AG holds.  *same: every
 * window was read at change count seq0 (phase one's: nothing committed since).
 */
extern unsigned scrub_rmap_window;
unsigned scrub_rmap_window = 65536;    /* tests make it small (check_repair_bmap) */
/* Tests change the tree between two windows (the next one's from block given); NULL. */
extern void (*scrub_rmap_between)(struct mfs_fs *fs, uint32_t agno, uint32_t from);
void (*scrub_rmap_between)(struct mfs_fs *fs, uint32_t agno, uint32_t from);
static int check_owners_windows(struct mfs_scrub_ctx *ctx, uint32_t aglen, uint64_t seq0,
				struct scrub_recs *rooted, int *same)
{
	struct scrub_cluster cl = { .blk = NULL };
	struct scrub_recs win;
	struct owner o;
	uint32_t from = 0;
	int err = 0, more = 1;

	memset(&o, 0, sizeof(o));
	scrub_recs_init(&win, sizeof(struct mfs_rmap_rec));
	while (!err && more) {
		const struct mfs_rmap_rec *r;
		struct mfs_buf *hbp;
		struct rsrc src;
		uint64_t seq;

		win.n = 0;
		scrub_ag_lock(ctx->fs, ctx->agno);
		seq = mfs_fs_changes(ctx->fs);
		err = mfs_read_agh(ctx->fs, ctx->agno, &hbp);
		if (!err) {
			rsrc_init(&src, NULL, ctx->fs, ctx->agno, hbp, from);
			while (!(err = rsrc_next(&src, &r)) && r) {
				if (win.n && win.n >= scrub_rmap_window) {
					from = mfs_get32(r->startblock);
					break;
				}
				if (inode_rec_ok(ctx->fs, aglen, r))
					err = scrub_recs_add(&win, r);
				if (err)
					break;
			}
			more = !err && r;
			rsrc_close(&src);
			mfs_buf_put(hbp);
		}
		scrub_ag_unlock(ctx->fs, ctx->agno);
		if (mfs_is_corruption(err)) {
			more = 0;
			err = 0;        /* changed since phase one: the next check's finding */
		}
		if (seq != seq0)
			*same = 0;
		/* The chunk copy kept from the window before may be older than this window's
		 * records: owner_quick may only trust a state committed after them. */
		if (cl.nblk && cl.seq < seq)
			cl.nblk = 0;
		if (!err)
			err = check_owners(ctx, &win, seq, rooted, &o, &cl);
		if (!err && more && scrub_rmap_between)
			scrub_rmap_between(ctx->fs, ctx->agno, from);
	}
	owner_drop(&o);
	scrub_cluster_release(&cl);
	scrub_recs_free(&win);
	return err;
}

static int rmapbt_check(struct mfs_scrub_ctx *ctx)
{
	struct scrub_recs inode_recs, rooted;
	struct scrub_ag sa;
	struct rsrc src;
	uint8_t *inode = NULL;
	uint64_t seq;
	uint32_t aglen = 0;
	int err, covered = 0, streamed = 0, same = 1;

	scrub_recs_init(&inode_recs, sizeof(struct mfs_rmap_rec));
	scrub_ag_lock(ctx->fs, ctx->agno);
	seq = mfs_fs_changes(ctx->fs);
	/* No record and no block number is kept by the walk (the free-space trees' and the
	 * reverse map's records are streamed, see rsrc and scrub_stream; their blocks asked
	 * of, see special_blocks); where a record lies is looked up for a
	 * finding — unless the AG's walk shared by its checkers (SCRUB_SHARE) is at hand,
	 * which has it all. */
	err = scrub_ag_scan(ctx, ctx->agno, SCRUB_WANT_TREES | SCRUB_WANT_AGFL |
			    SCRUB_NO_RECS(MFS_BT_CNT) | SCRUB_NO_RECS(MFS_BT_BNO) |
			    SCRUB_NO_RECS(MFS_BT_RMAP) | SCRUB_NO_WHERE(MFS_BT_RMAP) |
			    SCRUB_NO_BLOCKS(MFS_BT_BNO) | SCRUB_NO_BLOCKS(MFS_BT_CNT) |
			    SCRUB_NO_BLOCKS(MFS_BT_INO) | SCRUB_NO_BLOCKS(MFS_BT_RMAP), &sa);
	/* The walk the AG's other checkers shared, when there is one, becomes this one's:
	 * the records are moved out of it below, and the AG's checks end here. */
	if (!err)
		err = scrub_ag_own(ctx, &sa);
	if (err)
		goto unlock;
	if (!sa.agh) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_INCOMPLETE, "AG %u rmapbt: not checked, the AG "
			     "header is unreadable", ctx->agno);
		goto unlock;
	}
	if (sa.tree_err[MFS_BT_RMAP]) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "AG %u rmapbt (root %u, %u levels): %s",
			     sa.agno, mfs_get32(sa.agh->roots[MFS_BT_RMAP]),
			     mfs_get32(sa.agh->levels[MFS_BT_RMAP]),
			     scrub_errstr(sa.tree_err[MFS_BT_RMAP]));
		goto unlock;
	}
	rsrc_init(&src, &sa, ctx->fs, ctx->agno, sa.agh_bp, 0);
	streamed = src.streamed;
	aglen = sa.len;
	if (!streamed) {
		inode = mfs_calloc(sa.recs[MFS_BT_RMAP].n / 8 + 1, 1);
		if (!inode) {
			err = -ENOMEM;
			goto unlock;
		}
	}
	err = check_pass(ctx, &sa, &src, inode, &covered);
	if (!err && !streamed)
		take_marked(&sa, inode, &inode_recs);
	/* The AG's inode census, taken with the records (the listing of phase 3 and the
	 * checks after it use it too): the owners in it need no inode read below.  Without
	 * one (no memory, odd chunks) they are read. */
	if (!err && ctx->census && ctx->fs->icache)
		(void)scrub_census_take(ctx, ctx->agno);
unlock:
	free(inode);
	scrub_ag_release(&sa);
	scrub_ag_unlock(ctx->fs, ctx->agno);
	scrub_recs_init(&rooted, sizeof(uint64_t));
	if (!err && ctx->fs->icache && aglen && streamed) {
		err = check_owners_windows(ctx, aglen, seq, &rooted, &same);
		if (!same)
			rooted.n = 0;   /* the census marks below are phase one's (seq) */
	} else if (!err && ctx->fs->icache && aglen) {
		struct scrub_cluster cl = { .blk = NULL };
		struct owner o;

		memset(&o, 0, sizeof(o));
		err = check_owners(ctx, &inode_recs, seq, &rooted, &o, &cl);
		owner_drop(&o);
		scrub_cluster_release(&cl);
	}
	/* Nothing found in the whole AG (every block owned or free, never both; no records
	 * overlapping): each directory whose one-block name tree is here exactly as its own
	 * record says needs no cross-reference of that block by the directory check. */
	if (!err && covered && !ctx->oflags && rooted.n)
		scrub_census_mark(ctx, (const uint64_t *)(const void *)rooted.v, rooted.n, seq,
				  SCRUB_CI_ROOTMAP);
	scrub_recs_free(&rooted);
	scrub_recs_free(&inode_recs);
	return err;
}

/*
 * The check reads the AG's reverse map whole and each owner's extent map, inode and tree
 * blocks — at a million extents some 50 MiB of metadata read once: as a sweep
 * (mfs_bcache_sweep), the blocks the cache did not hold leave it again when let go, so the
 * check neither grows the cache to its bound nor evicts what the filesystem's users keep
 * there (after a reverse-map rebuild, nothing of the new tree is cached).
 */
int scrub_rmapbt(struct mfs_scrub_ctx *ctx)
{
	int was = mfs_bcache_sweep(1);
	int err = rmapbt_check(ctx);

	mfs_bcache_sweep(was);
	return err;
}
