/*
 * repair_agh.c — the AG header rebuilder, and the recount of an AG header's counters from
 * its trees (shared with the summary counters' rebuilder, repair_summary.c).
 *
 * A header is rewritten whole, in one transaction under the AG lock:
 *
 *   identity     magic, block number, owner, UUID, seqno and length: from the geometry;
 *   roots        each of the four trees' root and height is kept when the block there is a
 *                block of that tree at the height the header says.  The reverse map, which
 *                must then verify whole, is the one every other rebuild trusts:
 *                when its root is lost it is searched for (below).  A lost free-space or
 *                inode btree root is not searched for: the tree is rebuilt from the reverse
 *                map by its own rebuilder (rep_allocbt, rep_inobt), each in a transaction of
 *                its own right after this one — until then the header names the reverse
 *                map's root for it, in range but of the wrong kind, so that every reader
 *                fails on it as it did on the garbage before;
 *   counters     freeblks and longest from the by-block tree, btreeblks from the block counts
 *                of the by-block, by-length and reverse-map trees, icount and ifree from the
 *                inode btree — each group only from trees that verify and agree with each
 *                other and with the reverse map (rep_agh_counters), else kept; rewritten by
 *                the tree rebuilds when those are rebuilt;
 *   free list    fl_first and fl_count kept when in range, else the list is emptied (its
 *                blocks stay MFS_OWN_AG, and the free-space rebuild that follows takes them
 *                back: a header whose list indices are damaged always gets one);
 *   orphans      the unlinked list's head kept when the old header verified (the orphan
 *                checker judges the list itself), else 0;
 *   the rest     reserved words, padding and the bytes past the structure zero.
 *
 * What is committed when.  A header that needs nothing but the rebuild of a lost tree is not
 * written at all: the tree's rebuilder takes it as it is (its field check passes) and
 * rewrites the root and counters in its own one transaction — a refused or aborted rebuild
 * then leaves the AG exactly as it was.  Otherwise the header is committed first, then the
 * lost trees are rebuilt; an abort of one of those leaves the new header (with its
 * placeholder root: the tree was lost before and still is), which a later repair completes.
 * A tree whose root is right but which is damaged below it is left to its own repair: the
 * header keeps its counters for that tree, and a header with nothing else wrong is not
 * changed (-EFSCORRUPTED saying which tree).
 *
 * Finding a lost reverse-map root.  The journal is checkpointed first (the AG is locked, so
 * every committed change to it is then in place), and the AG is read from the device: every
 * block that carries the reverse map's magic, this AG as owner, its own block number and a
 * good CRC is a candidate.  Candidates are tried highest level first, then newest (journal
 * sequence) first; one is taken when the tree under it verifies and its own records say
 * that its root block is MFS_OWN_AG (a stale root freed by a collapse is no longer owned in
 * the tree it roots).  None: -EFSCORRUPTED, offline repair of the reverse map is needed.
 */
#include "repair_priv.h"

#include "ag.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "dev.h"
#include "fs.h"
#include "geom.h"
#include "journal.h"
#include "log.h"
#include "mem.h"
#include "trans.h"
#include "verify.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SCAN_CHUNK_BLOCKS 256u
#define MAX_CANDIDATES 64u

/* ---- counters from the trees ---------------------------------------------------------------- */
struct bno_sum {
	uint64_t sum, longest;
};

static int bno_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_alloc_rec *a = rec;
	struct bno_sum *s = priv;
	uint32_t n = mfs_get32(a->blockcount);

	s->sum += n;
	if (n > s->longest)
		s->longest = n;
	return 0;
}

struct ino_sum {
	uint64_t icount, ifree;
};

static int ino_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_inobt_rec *c = rec;
	struct ino_sum *s = priv;

	s->icount += MFS_INODES_PER_CHUNK;
	s->ifree += (unsigned)__builtin_popcountll(mfs_get64(c->freemask));
	return 0;
}

/* Verify tree t of the header in agh_bp; its block count in *nblocks (may be NULL). */
static int tree_verify(struct mfs_fs *fs, uint32_t agno, enum mfs_ag_tree t,
		       struct mfs_buf *agh_bp, uint64_t *nblocks)
{
	struct mfs_btree_cur cur;
	uint64_t nrecs, nb;
	int err;

	mfs_ag_cur_init(&cur, fs, NULL, agno, t, agh_bp);
	err = mfs_btree_verify(&cur, &nrecs, &nb);
	mfs_btree_cur_release(&cur);
	if (!err && nblocks)
		*nblocks = nb;
	return err;
}

static int tree_walk(struct mfs_fs *fs, uint32_t agno, enum mfs_ag_tree t,
		     struct mfs_buf *agh_bp, mfs_btree_rec_fn fn, void *priv)
{
	struct mfs_btree_cur cur;
	int err;

	mfs_ag_cur_init(&cur, fs, NULL, agno, t, agh_bp);
	err = mfs_btree_query_range(&cur, NULL, NULL, fn, priv);
	mfs_btree_cur_release(&cur);
	return err;
}

struct rmap_sum {
	uint64_t mapped, inode_blocks;
};

static int rmap_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_rmap_rec *rr = rec;
	struct rmap_sum *s = priv;

	s->mapped += mfs_get32(rr->blockcount);
	if (mfs_get64(rr->owner) == MFS_OWN_INODES)
		s->inode_blocks += mfs_get32(rr->blockcount);
	return 0;
}

int rep_agh_counters(struct rep *r, uint32_t agno, struct mfs_buf *agh_bp, unsigned which,
		     struct rep_agh_counts *c)
{
	struct mfs_fs *fs = r->fs;
	uint64_t nb[MFS_AG_NTREES] = { 0 };
	struct bno_sum bs = { 0, 0 }, cs = { 0, 0 };
	struct ino_sum is = { 0, 0 };
	struct rmap_sum rs = { 0, 0 };
	uint32_t aglen = mfs_ag_length(&fs->geo, agno);
	int err = 0;

	memset(c, 0, sizeof(*c));
	which |= 1u << MFS_BT_RMAP;          /* the reference both counts are checked against */
	for (int t = 0; t < MFS_AG_NTREES && !err; t++) {
		if (!(which & (1u << t)))
			continue;     /* REP_AGH_FREE and REP_AGH_INODES are sets of trees */
		err = tree_verify(fs, agno, (enum mfs_ag_tree)t, agh_bp, &nb[t]);
		if (err)
			return rep_fail(r, err, "AG %u: the %s does not verify (%s): rebuild it first",
					agno, mfs_ag_tree_ops((enum mfs_ag_tree)t)->name,
					strerror(-err));
	}
	err = tree_walk(fs, agno, MFS_BT_RMAP, agh_bp, rmap_fn, &rs);
	if (!err && (which & REP_AGH_FREE) == REP_AGH_FREE) {
		err = tree_walk(fs, agno, MFS_BT_BNO, agh_bp, bno_fn, &bs);
		if (!err)
			err = tree_walk(fs, agno, MFS_BT_CNT, agh_bp, bno_fn, &cs);
		if (!err && (bs.sum != cs.sum || bs.longest != cs.longest ||
			     rs.mapped > aglen || bs.sum != aglen - rs.mapped))
			return rep_fail(r, -EFSCORRUPTED, "AG %u: the free-space trees disagree (by "
					"block %llu free blocks, by length %llu, the reverse map leaves "
					"%llu): rebuild them first", agno, (unsigned long long)bs.sum,
					(unsigned long long)cs.sum,
					(unsigned long long)(rs.mapped > aglen ? 0 : aglen - rs.mapped));
		c->freeblks = bs.sum;
		c->longest = bs.longest;
		c->btreeblks = nb[MFS_BT_BNO] + nb[MFS_BT_CNT] + nb[MFS_BT_RMAP] - 3;
	}
	if (!err && (which & REP_AGH_INODES) == REP_AGH_INODES) {
		uint64_t chunks = rs.inode_blocks / fs->geo.chunkblocks;

		err = tree_walk(fs, agno, MFS_BT_INO, agh_bp, ino_fn, &is);
		if (!err && is.icount != chunks * MFS_INODES_PER_CHUNK)
			return rep_fail(r, -EFSCORRUPTED, "AG %u: the inode btree holds %llu inodes, "
					"the reverse map's inode chunks %llu: rebuild it first", agno,
					(unsigned long long)is.icount,
					(unsigned long long)(chunks * MFS_INODES_PER_CHUNK));
		c->icount = is.icount;
		c->ifree = is.ifree;
	}
	if (!err)
		err = rep_poll(r);
	if (err && !r->rc->reason[0])
		rep_fail(r, err, "AG %u: walking its trees: %s", agno, strerror(-err));
	return err;
}

int rep_agh_put_counts(const struct mfs_agh *agh, unsigned which, const struct rep_agh_counts *c,
		       struct mfs_agh *out)
{
	int changed = 0;

#define PUT(field, v)                                           \
	do {                                                    \
		if (mfs_get32(agh->field) != (uint32_t)(v))     \
			changed = 1;                            \
		if (out)                                        \
			mfs_put32(out->field, (uint32_t)(v));   \
	} while (0)
	if ((which & REP_AGH_FREE) == REP_AGH_FREE) {
		PUT(freeblks, c->freeblks);
		PUT(longest, c->longest);
		PUT(btreeblks, c->btreeblks);
	}
	if ((which & REP_AGH_INODES) == REP_AGH_INODES) {
		PUT(icount, c->icount);
		PUT(ifree, c->ifree);
	}
#undef PUT
	return changed;
}

/* ---- the header ------------------------------------------------------------------------------ */
struct aghrep {
	struct rep *r;
	struct mfs_fs *fs;
	uint32_t agno, aglen;
	struct mfs_trans *tp;
	struct mfs_buf *bp;          /* the header block, joined */
	void *oldblk;                /* its contents on entry (a copy of the block) */
	struct mfs_agh *old;         /* oldblk if it verified, else NULL */
	unsigned lost;               /* trees whose root is lost (1 << enum mfs_ag_tree) */
	unsigned broken;             /* trees whose root is right but which do not verify */
};

/* Whether the block at the header's root of tree t is a block of that tree at the height the
 * header says (read through the cache: the committed state). */
static int root_block_ok(struct aghrep *h, const struct mfs_agh *agh, enum mfs_ag_tree t)
{
	uint32_t root = mfs_get32(agh->roots[t]), levels = mfs_get32(agh->levels[t]);
	struct mfs_blk_expect e;
	struct mfs_buf *bp;

	if (root < MFS_AG_FIXED_BLOCKS || root >= h->aglen || levels < 1 ||
	    levels > MFS_BTREE_MAXLEVELS)
		return 0;
	e.magic = mfs_ag_tree_ops(t)->magic;
	e.owner = h->agno;
	e.level = (int)levels - 1;
	e.what = mfs_ag_tree_ops(t)->name;
	if (mfs_buf_read(h->fs->bc, mfs_agbno_to_fsb(&h->fs->geo, h->agno, root), &e, &bp))
		return 0;
	mfs_buf_put(bp);
	return 1;
}

struct rmap_cand {
	uint32_t agbno, level;
	uint64_t lsn;
};

static int cand_cmp(const void *a, const void *b)
{
	const struct rmap_cand *x = a, *y = b;

	if (x->level != y->level)
		return x->level > y->level ? -1 : 1;
	if (x->lsn != y->lsn)
		return x->lsn > y->lsn ? -1 : 1;
	return x->agbno < y->agbno ? -1 : x->agbno > y->agbno;
}

/* Candidates for the reverse map's root: read from the device, the AG's committed state
 * being in place (journal checkpointed under the AG lock). */
static int scan_rmap_blocks(struct aghrep *h, struct rmap_cand *c, unsigned *nc)
{
	const struct mfs_geom *g = &h->fs->geo;
	uint32_t bs = g->blocksize;
	char *buf;
	int err = 0;

	*nc = 0;
	if (h->fs->log) {
		err = mfs_journal_checkpoint(h->fs->log);
		if (err)
			return rep_fail(h->r, err, "AG %u: checkpointing the journal before the search "
					"for the reverse map's root: %s", h->agno, strerror(-err));
	}
	buf = mfs_malloc((size_t)SCAN_CHUNK_BLOCKS * bs);
	if (!buf)
		return rep_fail(h->r, -ENOMEM, "no memory to search for the reverse map's root");
	for (uint32_t b = MFS_AG_FIXED_BLOCKS; b < h->aglen && !err; b += SCAN_CHUNK_BLOCKS) {
		uint32_t n = h->aglen - b < SCAN_CHUNK_BLOCKS ? h->aglen - b : SCAN_CHUNK_BLOCKS;
		uint64_t fsb = mfs_agbno_to_fsb(g, h->agno, b);

		err = mfs_dev_pread(h->fs->dev, buf, (size_t)n * bs, fsb * bs);
		if (err) {
			rep_fail(h->r, err, "AG %u: reading blocks %u+%u: %s", h->agno, b, n,
				 strerror(-err));
			break;
		}
		for (uint32_t i = 0; i < n; i++) {
			const struct mfs_btree_block *blk = (const void *)(buf + (size_t)i * bs);

			if (mfs_get32(blk->hdr.magic) != MFS_RMAPBT_MAGIC ||
			    mfs_get64(blk->hdr.owner) != h->agno ||
			    mfs_get64(blk->hdr.blkno) != fsb + i ||
			    memcmp(blk->hdr.uuid, g->uuid, sizeof(g->uuid)) ||
			    mfs_get16(blk->level) >= MFS_BTREE_MAXLEVELS || !mfs_blk_crc_ok(blk, bs))
				continue;
			if (*nc == MAX_CANDIDATES) {
				/* keep the highest levels, newest first */
				qsort(c, *nc, sizeof(*c), cand_cmp);
				if (cand_cmp(&(struct rmap_cand){ b + i, mfs_get16(blk->level),
						mfs_get64(blk->hdr.lsn) }, &c[*nc - 1]) >= 0)
					continue;
				(*nc)--;
			}
			c[*nc].agbno = b + i;
			c[*nc].level = mfs_get16(blk->level);
			c[*nc].lsn = mfs_get64(blk->hdr.lsn);
			(*nc)++;
		}
		if (!err)
			err = rep_poll(h->r);
	}
	free(buf);
	if (!err)
		qsort(c, *nc, sizeof(*c), cand_cmp);
	return err;
}

struct owns {
	uint32_t agbno;
	int owned;
};

static int owns_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_rmap_rec *rr = rec;
	struct owns *o = priv;
	uint32_t s = mfs_get32(rr->startblock), l = mfs_get32(rr->blockcount);

	if (o->agbno >= s && o->agbno - s < l) {
		o->owned = mfs_get64(rr->owner) == MFS_OWN_AG;
		return 1;
	}
	return 0;
}

/* Find the reverse map's root and put it into the new header (h->bp). */
static int find_rmap_root(struct aghrep *h)
{
	struct mfs_agh *agh = h->bp->data;
	struct rmap_cand *c = mfs_calloc(MAX_CANDIDATES, sizeof(*c));
	unsigned nc = 0;
	int err;

	if (!c)
		return rep_fail(h->r, -ENOMEM, "no memory to search for the reverse map's root");
	err = scan_rmap_blocks(h, c, &nc);
	for (unsigned i = 0; !err && i < nc; i++) {
		struct owns o = { c[i].agbno, 0 };

		mfs_put32(agh->roots[MFS_BT_RMAP], c[i].agbno);
		mfs_put32(agh->levels[MFS_BT_RMAP], c[i].level + 1);
		if (tree_verify(h->fs, h->agno, MFS_BT_RMAP, h->bp, NULL))
			continue;
		err = tree_walk(h->fs, h->agno, MFS_BT_RMAP, h->bp, owns_fn, &o);
		if (err < 0)
			break;
		err = 0;
		if (o.owned) {
			mfs_log(MFS_LOG_INFO, "AG %u: the reverse map's root found at block %u (%u "
				"levels), among %u candidates", h->agno, c[i].agbno, c[i].level + 1,
				nc);
			free(c);
			return 0;
		}
	}
	free(c);
	if (err)
		return err;
	return rep_fail(h->r, -EFSCORRUPTED, "AG %u header: the reverse map's root is lost and no "
			"block of this AG roots a reverse map that verifies (%u candidates): the "
			"reverse map must be rebuilt offline (mendfs_repair)", h->agno, nc);
}

/* Build the new header into h->bp (joined). */
static int agh_build(struct aghrep *h)
{
	const struct mfs_geom *g = &h->fs->geo;
	const struct mfs_agh *old = h->old;
	struct mfs_agh *agh = h->bp->data;
	struct rep_agh_counts cnt;
	unsigned which = 0;
	int err;

	mfs_blk_init(agh, g->blocksize, MFS_AGH_MAGIC,
		     mfs_agbno_to_fsb(g, h->agno, MFS_AGH_AGBNO), h->agno, g->uuid);
	mfs_put32(agh->seqno, h->agno);
	mfs_put32(agh->length, h->aglen);
	if (old) {
		memcpy(agh->roots, old->roots, sizeof(agh->roots));
		memcpy(agh->levels, old->levels, sizeof(agh->levels));
		agh->unlinked = old->unlinked;
		/* a reap still to finish stays marked (known flags only) */
		mfs_put32(agh->flags, mfs_get32(old->flags) & MFS_AGH_FLAGS_KNOWN);
		agh->freeblks = old->freeblks;
		agh->longest = old->longest;
		agh->btreeblks = old->btreeblks;
		agh->icount = old->icount;
		agh->ifree = old->ifree;
		if (mfs_get32(old->fl_first) < MFS_AGFL_SIZE_MAX &&
		    mfs_get32(old->fl_count) <= MFS_AGFL_SIZE_MAX) {
			agh->fl_first = old->fl_first;
			agh->fl_count = old->fl_count;
		} else {
			h->lost |= 1u << MFS_BT_BNO;     /* the free-space rebuild takes them back */
		}
	} else {
		h->lost |= 1u << MFS_BT_BNO;
	}
	for (int t = 0; t < MFS_AG_NTREES; t++)
		if (!old || !root_block_ok(h, old, (enum mfs_ag_tree)t))
			h->lost |= 1u << t;
	if (h->lost & (1u << MFS_BT_RMAP)) {
		err = find_rmap_root(h);
		if (err)
			return err;
		h->lost &= ~(1u << MFS_BT_RMAP);
	}
	if (tree_verify(h->fs, h->agno, MFS_BT_RMAP, h->bp, NULL))
		return rep_fail(h->r, -EFSCORRUPTED, "AG %u: the reverse map does not verify: it "
				"must be rebuilt first (offline, mendfs_repair)", h->agno);
	/* A tree whose root is right but which does not verify is damaged below its root: its
	 * own rebuild repairs it, and its counters are left as they are meanwhile. */
	for (int t = MFS_BT_BNO; t <= MFS_BT_INO; t++)
		if (!(h->lost & (1u << t)) &&
		    tree_verify(h->fs, h->agno, (enum mfs_ag_tree)t, h->bp, NULL))
			h->broken |= 1u << t;
	if (h->lost & (1u << MFS_BT_CNT))
		h->lost |= 1u << MFS_BT_BNO;     /* one rebuild makes both */
	if (h->lost & (1u << MFS_BT_BNO))
		h->lost |= 1u << MFS_BT_CNT;
	for (int t = MFS_BT_BNO; t <= MFS_BT_INO; t++)
		if (h->lost & (1u << t)) {
			/* a placeholder in range, of the wrong kind: see the top */
			agh->roots[t] = agh->roots[MFS_BT_RMAP];
			mfs_put32(agh->levels[t], 1);
		}
	if (h->lost & (1u << MFS_BT_BNO)) {
		agh->freeblks = agh->longest = agh->btreeblks = 0;
	} else if (!(h->broken & ((1u << MFS_BT_BNO) | (1u << MFS_BT_CNT)))) {
		which |= REP_AGH_FREE;
	}
	if (h->lost & (1u << MFS_BT_INO))
		agh->icount = agh->ifree = 0;
	else if (!(h->broken & (1u << MFS_BT_INO)))
		which |= REP_AGH_INODES;
	/* Each group of counters from its trees, when those agree with each other and with the
	 * reverse map; trees that do not are damaged below their roots (their own repair). */
	for (unsigned grp = 0; grp < 2; grp++) {
		unsigned w = grp ? REP_AGH_INODES : REP_AGH_FREE;

		if (!(which & w))
			continue;
		err = rep_agh_counters(h->r, h->agno, h->bp, w, &cnt);
		if (err == -EFSCORRUPTED) {
			h->broken |= grp ? 1u << MFS_BT_INO : 1u << MFS_BT_BNO;
			h->r->rc->reason[0] = 0;  /* not this repair's failure */
			continue;
		}
		if (err)
			return err;
		rep_agh_put_counts(agh, w, &cnt, agh);
	}
	if (mfs_get32(agh->longest) > mfs_get32(agh->freeblks) ||
	    mfs_get32(agh->freeblks) > h->aglen)
		agh->freeblks = agh->longest = 0;          /* rebuilt by the free-space rebuild */
	if (mfs_get32(agh->ifree) > mfs_get32(agh->icount))
		agh->icount = agh->ifree = 0;              /* by the inode btree's */
	return 0;
}

/*
 * Whether the new header (h->bp) is the old block but for its journal sequence and CRC and
 * for the fields the rebuilds of the lost trees rewrite themselves: then nothing needs
 * committing before those rebuilds, which accept the old header as it is (it passes the
 * field check) — and a rebuild refused leaves the AG exactly as it was.
 */
static int agh_unchanged(const struct aghrep *h)
{
	uint32_t bs = h->fs->geo.blocksize;
	struct mfs_agh *a, *b;
	int same;

	if (!h->old || mfs_agh_check(h->fs, h->agno, h->old))
		return 0;
	a = mfs_malloc(bs);
	b = mfs_malloc(bs);
	if (!a || !b) {
		free(a);
		free(b);
		return 0;
	}
	memcpy(a, h->oldblk, bs);
	memcpy(b, h->bp->data, bs);
	a->hdr.lsn = b->hdr.lsn = 0;
	a->hdr.crc = b->hdr.crc = 0;
	for (int t = MFS_BT_BNO; t <= MFS_BT_INO; t++)
		if (h->lost & (1u << t)) {
			b->roots[t] = a->roots[t];
			b->levels[t] = a->levels[t];
		}
	if (h->lost & (1u << MFS_BT_BNO)) {
		b->freeblks = a->freeblks;
		b->longest = a->longest;
		b->btreeblks = a->btreeblks;
	}
	if (h->lost & (1u << MFS_BT_INO)) {
		b->icount = a->icount;
		b->ifree = a->ifree;
	}
	same = !memcmp(a, b, bs);
	free(a);
	free(b);
	return same;
}

int rep_aghdr(struct rep *r)
{
	struct mfs_fs *fs = r->fs;
	uint32_t bs = fs->geo.blocksize;
	struct aghrep h;
	struct mfs_blk_expect e;
	uint64_t fsb;
	int err, unchanged, verified;

	memset(&h, 0, sizeof(h));
	h.r = r;
	h.fs = fs;
	h.agno = r->rc->agno;
	h.aglen = mfs_ag_length(&fs->geo, h.agno);
	fsb = mfs_agbno_to_fsb(&fs->geo, h.agno, MFS_AGH_AGBNO);
	err = rep_geo_check(r);         /* a primary with a wrong agblocks (repair_sb.c) */
	if (err)
		return err;
	err = mfs_trans_alloc(fs, &h.tp);
	if (err)
		return rep_fail(r, err, "no memory for the transaction");
	err = mfs_trans_lock_ag(h.tp, h.agno, 0);
	if (err) {
		rep_fail(r, err, "could not lock AG %u: %s", h.agno, strerror(-err));
		goto out;
	}
	/* Verified through the cache (a header changed since its last write has a stale CRC
	 * in memory: the cache knows not to check it); else the block whatever it holds. */
	mfs_expect_agh(fs, h.agno, &e);
	verified = mfs_buf_read(fs->bc, fsb, &e, &h.bp) == 0;
	err = verified ? 0 : mfs_buf_read(fs->bc, fsb, NULL, &h.bp);
	if (err) {
		rep_fail(r, err, "AG %u header (block %llu) unreadable: %s", h.agno,
			 (unsigned long long)fsb, strerror(-err));
		goto out;
	}
	h.oldblk = mfs_malloc(bs);
	if (!h.oldblk) {
		err = rep_fail(r, -ENOMEM, "no memory for the AG header");
		goto out;
	}
	memcpy(h.oldblk, h.bp->data, bs);
	if (verified)
		h.old = h.oldblk;
	err = mfs_trans_modify(h.tp, h.bp);
	if (err) {
		rep_fail(r, err, "no memory to join the AG header");
		goto out;
	}
	err = agh_build(&h);
	if (err)
		goto out;
	unchanged = agh_unchanged(&h);
	if (unchanged && !h.lost) {
		/* Nothing wrong in the header itself. */
		mfs_trans_cancel(h.tp);
		h.tp = NULL;
		for (int t = MFS_BT_BNO; t <= MFS_BT_INO; t++)
			if (h.broken & (1u << t)) {
				err = rep_fail(r, -EFSCORRUPTED, "AG %u header: its own fields are "
					       "right; what its check finds comes from the %s, "
					       "damaged below its root: that tree's repair rebuilds it",
					       h.agno, mfs_ag_tree_ops((enum mfs_ag_tree)t)->name);
				break;
			}
		goto out;
	}
	if (!unchanged) {
		mfs_buf_set_meta(h.bp);
		r->rc->records = 1;
		mfs_buf_put(h.bp);
		h.bp = NULL;
		err = rep_commit(r, h.tp, 0, "the AG %u header", h.agno);
		h.tp = NULL;
		if (err)
			goto out;
	} else {
		mfs_buf_put(h.bp);
		h.bp = NULL;
		mfs_trans_cancel(h.tp);      /* the old header serves the tree rebuilds */
		h.tp = NULL;
	}
	/* The trees whose root was lost, each rebuilt from the reverse map in a transaction of
	 * its own (they lock the AG again).  Their scratch is handed out afresh each time. */
	if (h.lost & (1u << MFS_BT_BNO)) {
		mfs_log(MFS_LOG_INFO, "AG %u header %s; rebuilding its free-space trees", h.agno,
			unchanged ? "kept" : "rewritten");
		err = rep_allocbt(r);
		rep_release(r);
	}
	if (!err && (h.lost & (1u << MFS_BT_INO))) {
		mfs_log(MFS_LOG_INFO, "AG %u header %s; rebuilding its inode btree", h.agno,
			unchanged ? "kept" : "rewritten");
		err = rep_inobt(r);
		rep_release(r);
	}
	if (err && r->rc->reason[0]) {
		char why[sizeof(r->rc->reason)];

		snprintf(why, sizeof(why), "%s", r->rc->reason);
		snprintf(r->rc->reason, sizeof(r->rc->reason), "AG %u header %s, but rebuilding a "
			 "tree whose root it had lost failed: %.900s", h.agno,
			 unchanged ? "unchanged" : "rewritten", why);
	}
out:
	if (h.bp)
		mfs_buf_put(h.bp);
	if (h.tp)
		mfs_trans_cancel(h.tp);
	free(h.oldblk);
	return err;
}
