/*
 * bload.c — the btree bulk loader: a whole tree from a sorted stream of records, written
 * bottom-up into blocks reserved beforehand (btree.h).
 *
 * Plan.  Level 0 has N = nrecs entries; a level whose entries fit in one block is the
 * root.  Otherwise the level gets nb blocks, nb = ceil(N / want) where want is fill_pct of
 * the capacity (never below minrecs), and its entries are spread evenly: block i holds
 * N / nb entries, plus one for the first N % nb blocks.  When even spreading would leave
 * blocks under minrecs, nb drops to floor(N / minrecs); since N > maxrecs there, every
 * block then holds between minrecs and maxrecs (N / floor(N / minrecs) <= maxrecs because
 * maxrecs - minrecs >= maxrecs / 2).  The level above has N = nb entries, and so on.
 *
 * Build.  Leaves are filled left to right straight from get_recs into the block memory.
 * Each level keeps one open block; a finished block hands (its first key, its block
 * number) to the level above, which claims its next block on its first entry.  Blocks are
 * therefore claimed in the order they are first needed, exactly as many as the plan says,
 * and mfs_bload_geometry() reports the same plan.
 *
 * The stream's order is checked as it arrives: keys must be strictly increasing, or the
 * build stops with -EINVAL (a repair that feeds unsorted records must not write a tree
 * the verifier would reject).
 *
 * Failure.  With a transaction the caller cancels it, which drops every new block.  Without
 * one, finished blocks are already dirty in the cache; the build remembers every block it
 * claimed and on failure forgets them all, so that nothing is ever written to blocks the
 * caller is about to give back (and that may be reused for something else).
 *
 * Ordered new blocks (MFS_BLOAD_ORDERED, with a transaction).  The blocks are built in the
 * loader's own memory, one open block per level, never in the buffer cache, and each is
 * handed to mfs_trans_ordered_write() the moment it is finished: written in place, not
 * logged (trans.h).  The loader's memory is therefore a few blocks whatever the size of the
 * tree, and the transaction holds no item for them.  This is sound only because the
 * caller's blocks are free space that nothing on disk points at until the transaction
 * that stores the new root commits: a crash or a cancel before that leaves free space
 * holding garbage, after it the whole tree is on disk (the journal flushes the device
 * before it writes the commit).  A failure needs nothing undone.
 */
#include "mem.h"
#include "btree.h"
#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "log.h"
#include "trans.h"
#include "verify.h"

#include <stdlib.h>
#include <string.h>

#define BL_HDR     ((unsigned)sizeof(struct mfs_btree_block))
#define BL_KEYBUF  256u

struct bl_plan {
	unsigned levels;
	uint64_t nentries[MFS_BTREE_MAXLEVELS];   /* entries at each level */
	uint64_t nblocks[MFS_BTREE_MAXLEVELS];    /* blocks at each level */
	uint64_t total;
};

static int bl_make_plan(const struct mfs_btree_ops *ops, uint32_t blocksize, uint64_t nrecs,
			unsigned fill_pct, struct bl_plan *p)
{
	uint64_t n = nrecs;
	unsigned lev;

	memset(p, 0, sizeof(*p));
	if (!ops || !ops->rec_len || !ops->key_len || ops->key_len > BL_KEYBUF ||
	    (ops->ptr_len != 4 && ops->ptr_len != 8) || fill_pct > 100)
		return -EINVAL;
	if (fill_pct == 0)
		fill_pct = MFS_BLOAD_DEFAULT_FILL;
	if (mfs_btree_maxrecs(ops, blocksize, 1) < 1 || mfs_btree_maxrecs(ops, blocksize, 0) < 2)
		return -EINVAL;
	for (lev = 0; lev < MFS_BTREE_MAXLEVELS; lev++) {
		uint64_t cap = mfs_btree_maxrecs(ops, blocksize, lev == 0);
		uint64_t min = cap / 2, want, nb;

		p->nentries[lev] = n;
		if (n <= cap) {
			p->nblocks[lev] = 1;
			p->levels = lev + 1;
			p->total++;
			return 0;
		}
		want = cap * fill_pct / 100;
		if (want < min)
			want = min;
		if (want < 1)
			want = 1;
		nb = (n + want - 1) / want;
		if (min && n / nb < min)
			nb = n / min;
		p->nblocks[lev] = nb;
		p->total += nb;
		n = nb;
	}
	mfs_log(MFS_LOG_ERR, "%s: %llu records need more than %u levels", ops->name,
		(unsigned long long)nrecs, MFS_BTREE_MAXLEVELS);
	return -EFBIG;
}

int mfs_bload_geometry(const struct mfs_btree_ops *ops, uint32_t blocksize, uint64_t nrecs,
		       unsigned fill_pct, uint64_t *nblocks, unsigned *levels)
{
	struct bl_plan p;
	int err = bl_make_plan(ops, blocksize, nrecs, fill_pct, &p);

	if (err)
		return err;
	if (nblocks)
		*nblocks = p.total;
	if (levels)
		*levels = p.levels;
	return 0;
}

/* One level under construction. */
struct bl_level {
	struct mfs_buf *bp;          /* the open block, or NULL (ordered: see data) */
	void *data;                  /* the open block's bytes (bp->data, or ordered: mem) */
	void *mem;                   /* ordered: this level's block memory, kept for reuse */
	uint64_t fsb;                /* the open block's number */
	unsigned fill;               /* entries in it so far */
	unsigned target;             /* entries it must get */
	uint64_t done;               /* blocks finished at this level */
};

struct bl_state {
	struct mfs_fs *fs;
	struct mfs_trans *tp;
	struct mfs_bload *bl;
	struct bl_plan plan;
	unsigned nodecap;
	struct bl_level lv[MFS_BTREE_MAXLEVELS];
	uint64_t root;
	uint64_t *claimed;           /* without tp: every block given a buffer, to forget */
	uint64_t nclaimed;           /* on failure; at most plan.total */
	int ordered;                 /* MFS_BLOAD_ORDERED: written in place, not joined */
};

static unsigned bl_target(const struct bl_state *s, unsigned lev, uint64_t i)
{
	uint64_t n = s->plan.nentries[lev], nb = s->plan.nblocks[lev];

	return (unsigned)(n / nb + (i < n % nb ? 1 : 0));
}

/* Claim the next reserved block and start it as an empty block of level `lev`. */
static int bl_start_block(struct bl_state *s, unsigned lev)
{
	const struct mfs_bload *bl = s->bl;
	const struct mfs_geom *g = &s->fs->geo;
	struct mfs_buf *bp;
	uint64_t fsb;
	int err;

	err = bl->claim_block(bl->priv, &fsb);
	if (err)
		return err;
	if (fsb >= g->dblocks || mfs_fsb_to_agbno(g, fsb) < MFS_AG_FIXED_BLOCKS ||
	    (bl->ops->ptr_len == 4 && mfs_fsb_to_agno(g, fsb) != bl->agno)) {
		mfs_log(MFS_LOG_ERR, "%s: bulk load was given block %llu, outside the %s",
			bl->ops->name, (unsigned long long)fsb,
			bl->ops->ptr_len == 4 ? "tree's AG" : "filesystem");
		return -EINVAL;
	}
	if (!s->tp && s->nclaimed >= s->plan.total) {
		mfs_log(MFS_LOG_ERR, "%s: bulk load claims more than the %llu blocks planned",
			bl->ops->name, (unsigned long long)s->plan.total);
		return -EIO;
	}
	if (s->ordered) {
		if (!s->lv[lev].mem) {
			s->lv[lev].mem = mfs_malloc(g->blocksize);
			if (!s->lv[lev].mem)
				return -ENOMEM;
		}
		bp = NULL;
		s->lv[lev].data = s->lv[lev].mem;
	} else {
		if (s->tp)
			err = mfs_trans_get_new(s->tp, fsb, 1, &bp);
		else
			err = mfs_buf_get_new(s->fs->bc, fsb, 1, &bp);
		if (err)
			return err;
		if (!s->tp)
			s->claimed[s->nclaimed++] = fsb;
		s->lv[lev].data = bp->data;
	}
	mfs_blk_init(s->lv[lev].data, g->blocksize, bl->ops->magic, fsb, bl->owner, g->uuid);
	mfs_put16(((struct mfs_btree_block *)s->lv[lev].data)->level, (uint16_t)lev);
	s->lv[lev].bp = bp;
	s->lv[lev].fsb = fsb;
	s->lv[lev].fill = 0;
	s->lv[lev].target = bl_target(s, lev, s->lv[lev].done);
	return 0;
}

/* Let go of a finished block: ordered, write it in place now (its memory is reused for
 * the level's next block). */
static int bl_release(struct bl_state *s, uint64_t fsb, void *data, struct mfs_buf *bp)
{
	if (s->ordered)
		return mfs_trans_ordered_write(s->tp, fsb, data, 1);
	if (!s->tp) {
		mfs_buf_mark_dirty(bp);
		mfs_buf_put(bp);
	}
	/* with a transaction, the transaction holds the only reference */
	return 0;
}

static int bl_add_node_entry(struct bl_state *s, unsigned lev, const void *key, uint64_t fsb);

/* The open block of `lev` is full: close it and hand it to the level above. */
static int bl_finish_block(struct bl_state *s, unsigned lev)
{
	const struct mfs_btree_ops *ops = s->bl->ops;
	struct bl_level *l = &s->lv[lev];
	struct mfs_buf *bp = l->bp;
	_Alignas(8) uint8_t kbuf[BL_KEYBUF];
	uint8_t *data = l->data;
	uint64_t fsb = l->fsb;
	int err;

	mfs_put16(((struct mfs_btree_block *)data)->numrecs, (uint16_t)l->fill);
	l->done++;
	l->bp = NULL;
	l->data = NULL;
	if (lev + 1 == s->plan.levels) {
		s->root = fsb;
		return bl_release(s, fsb, data, bp);
	}
	if (lev == 0)
		ops->rec_key(data + BL_HDR, kbuf);
	else
		memcpy(kbuf, data + BL_HDR, ops->key_len);
	err = bl_release(s, fsb, data, bp);
	return err ? err : bl_add_node_entry(s, lev + 1, kbuf, fsb);
}

static int bl_add_node_entry(struct bl_state *s, unsigned lev, const void *key, uint64_t fsb)
{
	const struct mfs_btree_ops *ops = s->bl->ops;
	struct bl_level *l = &s->lv[lev];
	uint8_t *base;
	int err;

	if (!l->data) {
		err = bl_start_block(s, lev);
		if (err)
			return err;
	}
	base = (uint8_t *)l->data + BL_HDR;
	memcpy(base + (size_t)l->fill * ops->key_len, key, ops->key_len);
	base += (size_t)s->nodecap * ops->key_len;
	if (ops->ptr_len == 4) {
		uint32_t v;

		mfs_put32(v, mfs_fsb_to_agbno(&s->fs->geo, fsb));
		memcpy(base + (size_t)l->fill * 4, &v, 4);
	} else {
		uint64_t v;

		mfs_put64(v, fsb);
		memcpy(base + (size_t)l->fill * 8, &v, 8);
	}
	if (++l->fill == l->target)
		return bl_finish_block(s, lev);
	return 0;
}

int mfs_bload_build(struct mfs_fs *fs, struct mfs_trans *tp, struct mfs_bload *bl,
		    struct mfs_btree_root *root)
{
	const struct mfs_btree_ops *ops = bl->ops;
	struct bl_state s;
	_Alignas(8) uint8_t kprev[BL_KEYBUF], kcur[BL_KEYBUF];
	uint8_t *prev = kprev, *curk = kcur, *tmp;
	uint64_t recs_done = 0;
	int have_prev = 0, err;

	memset(&s, 0, sizeof(s));
	s.fs = fs;
	s.tp = tp;
	s.bl = bl;
	s.ordered = !!(bl->flags & MFS_BLOAD_ORDERED);
	if (s.ordered && !tp)
		return -EINVAL;
	err = bl_make_plan(ops, fs->geo.blocksize, bl->nrecs, bl->fill_pct, &s.plan);
	if (err)
		return err;
	if (!bl->claim_block || (bl->nrecs && !bl->get_recs) || !ops->rec_key ||
	    !ops->cmp_keys)
		return -EINVAL;
	if (ops->ptr_len == 4 && bl->agno >= fs->geo.agcount)
		return -EINVAL;
	s.nodecap = mfs_btree_maxrecs(ops, fs->geo.blocksize, 0);
	if (!tp) {
		s.claimed = mfs_malloc(s.plan.total * sizeof(*s.claimed));
		if (!s.claimed)
			return -ENOMEM;
	}

	for (uint64_t i = 0; i < s.plan.nblocks[0]; i++) {
		struct bl_level *l = &s.lv[0];
		uint8_t *recs;

		err = bl_start_block(&s, 0);
		if (err)
			goto fail;
		recs = (uint8_t *)l->data + BL_HDR;
		if (l->target) {
			err = bl->get_recs(bl->priv, recs, l->target);
			if (err)
				goto fail;
		}
		/* The stream must be strictly increasing. */
		for (unsigned r = 0; r < l->target; r++) {
			ops->rec_key(recs + (size_t)r * ops->rec_len, curk);
			if (have_prev && ops->cmp_keys(prev, curk) >= 0) {
				mfs_log(MFS_LOG_ERR, "%s: bulk load record %llu is not above the "
					"one before it (input not sorted or not unique)",
					ops->name, (unsigned long long)(recs_done + r));
				err = -EINVAL;
				goto fail;
			}
			tmp = prev;
			prev = curk;
			curk = tmp;
			have_prev = 1;
		}
		recs_done += l->target;
		l->fill = l->target;
		err = bl_finish_block(&s, 0);
		if (err)
			goto fail;
	}
	/* Every level closed its last block exactly at its target. */
	for (unsigned lev = 0; lev < s.plan.levels; lev++) {
		if (s.lv[lev].data || s.lv[lev].done != s.plan.nblocks[lev]) {
			mfs_log(MFS_LOG_ERR, "%s: bulk load plan and build disagree at level %u",
				ops->name, lev);
			err = -EIO;
			goto fail;
		}
	}
	root->fsb = s.root;
	root->levels = s.plan.levels;
	for (unsigned lev = 0; lev < MFS_BTREE_MAXLEVELS; lev++)
		free(s.lv[lev].mem);
	free(s.claimed);
	return 0;
fail:
	/* Nothing built is written: the caller gives the reservation back.  Drop our
	 * references to the open blocks, then forget every block claimed, open or finished
	 * (with a transaction, the caller's cancel does this; ordered blocks written already
	 * are free space nothing points at). */
	if (!tp) {
		for (unsigned lev = 0; lev < MFS_BTREE_MAXLEVELS; lev++)
			if (s.lv[lev].bp)
				mfs_buf_put(s.lv[lev].bp);
		for (uint64_t i = 0; i < s.nclaimed; i++)
			mfs_bcache_forget(fs->bc, s.claimed[i]);
	}
	for (unsigned lev = 0; lev < MFS_BTREE_MAXLEVELS; lev++)
		free(s.lv[lev].mem);
	free(s.claimed);
	return err;
}
