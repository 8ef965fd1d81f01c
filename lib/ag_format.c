/*
 * ag_format.c — writing a new allocation group: its header, its free list and its four
 * btrees, each built in one pass by the bulk loader from records computed here.
 *
 * Layout right after the fixed headers (agbno 0..2):
 *
 *     agbno 3                     inode btree                    (MFS_OWN_INOBT)
 *     agbno 4, 5, 6               by-block, by-length, rmap       (MFS_OWN_AG)
 *     agbno 7 .. 7+FMT_AGFL-1     the AGFL stock                  (MFS_OWN_AG)
 *
 * one block for each tree (its root when the tree has one block; otherwise the bulk loader's
 * first leaf).  mfs_ag_format_blocks() is the size of that area; callers put their own
 * extents after it.
 * When a tree needs more than its root (many used extents or inode chunks), its other
 * blocks are claimed from the lowest free blocks after that area.  How many depends on the
 * record counts, which depend on what is claimed, so the count is iterated to a fixed point
 * (it converges in a step or two: claiming shortens or removes free extents and adds at
 * most a few reverse-map records); any block claimed beyond the final need joins the AGFL
 * stock.
 */
#include "mem.h"
#include "ag.h"
#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "log.h"
#include "verify.h"

#include <stdlib.h>
#include <string.h>

#define FMT_INO_ROOT   MFS_AG_FIXED_BLOCKS            /* 3 */
#define FMT_BNO_ROOT   (MFS_AG_FIXED_BLOCKS + 1)
#define FMT_CNT_ROOT   (MFS_AG_FIXED_BLOCKS + 2)
#define FMT_RMAP_ROOT  (MFS_AG_FIXED_BLOCKS + 3)
#define FMT_AGFL_FIRST (MFS_AG_FIXED_BLOCKS + 4)
/* The AGFL stock: mfs_agfl_need() of one-level trees, 2*2 + 2*2 + 2. */
#define FMT_AGFL       10u

uint32_t mfs_ag_format_blocks(const struct mfs_geom *geo)
{
	(void)geo;
	return 4 + FMT_AGFL;
}

/* ---- sorting --------------------------------------------------------------------------- */
static int cmp_ext(const void *a, const void *b)
{
	const struct mfs_ag_extent *x = a, *y = b;

	return x->agbno < y->agbno ? -1 : x->agbno > y->agbno;
}

static int cmp_chunk(const void *a, const void *b)
{
	uint32_t x = mfs_get32(((const struct mfs_inobt_rec *)a)->startino);
	uint32_t y = mfs_get32(((const struct mfs_inobt_rec *)b)->startino);

	return x < y ? -1 : x > y;
}

static int cmp_cnt(const void *a, const void *b)
{
	const struct mfs_alloc_rec *x = a, *y = b;
	uint32_t xl = mfs_get32(x->blockcount), yl = mfs_get32(y->blockcount);
	uint32_t xs = mfs_get32(x->startblock), ys = mfs_get32(y->startblock);

	if (xl != yl)
		return xl < yl ? -1 : 1;
	return xs < ys ? -1 : xs > ys;
}

/* ---- the plan: every record and block of the new AG ---------------------------------- */
struct fmt_plan {
	struct mfs_fs *fs;
	uint32_t agno, aglen, base;
	const struct mfs_ag_extent *used;     /* sorted, validated */
	unsigned nused;
	/* claimed blocks beyond the reserved area, ascending */
	uint32_t *claimed;
	uint32_t nclaimed, ino_extra;
	/* records */
	struct mfs_rmap_rec *rmap;
	uint64_t nrmap, caprmap;
	struct mfs_alloc_rec *bno, *cnt;
	uint64_t nfree, capfree;
};

static int rmap_push(struct fmt_plan *p, uint32_t start, uint32_t len, uint64_t owner,
		     uint64_t offset)
{
	struct mfs_rmap_rec *last = p->nrmap ? &p->rmap[p->nrmap - 1] : NULL;

	/* merge with the previous record: same owner and flags, adjacent, contiguous offset */
	if (last && mfs_get32(last->startblock) + mfs_get32(last->blockcount) == start &&
	    mfs_get64(last->owner) == owner) {
		uint64_t lo = mfs_get64(last->offset);
		int positional = owner < MFS_OWN_MIN && !(offset & MFS_RMAP_BMBT_BLOCK);

		if ((lo & ~MFS_RMAP_OFF_MASK) == (offset & ~MFS_RMAP_OFF_MASK) &&
		    (positional ? (lo & MFS_RMAP_OFF_MASK) + mfs_get32(last->blockcount) ==
				  (offset & MFS_RMAP_OFF_MASK) : lo == offset)) {
			mfs_put32(last->blockcount, mfs_get32(last->blockcount) + len);
			return 0;
		}
	}
	if (p->nrmap == p->caprmap) {
		uint64_t ncap = p->caprmap ? 2 * p->caprmap : 64;
		struct mfs_rmap_rec *n = mfs_realloc(p->rmap, ncap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		p->rmap = n;
		p->caprmap = ncap;
	}
	last = &p->rmap[p->nrmap++];
	mfs_put32(last->startblock, start);
	mfs_put32(last->blockcount, len);
	mfs_put64(last->owner, owner);
	mfs_put64(last->offset, offset);
	return 0;
}

static int free_push(struct fmt_plan *p, uint32_t start, uint32_t len)
{
	if (p->nfree == p->capfree) {
		uint64_t ncap = p->capfree ? 2 * p->capfree : 64;
		struct mfs_alloc_rec *n = mfs_realloc(p->bno, ncap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		p->bno = n;
		p->capfree = ncap;
	}
	mfs_put32(p->bno[p->nfree].startblock, start);
	mfs_put32(p->bno[p->nfree].blockcount, len);
	p->nfree++;
	return 0;
}

/* Claim the first n free blocks at or after base (not in `used`). */
static int plan_claim(struct fmt_plan *p, uint32_t n)
{
	uint32_t *c = mfs_realloc(p->claimed, (n ? n : 1) * sizeof(*c));
	uint32_t b = p->base, got = 0;
	unsigned i = 0;

	if (!c)
		return -ENOMEM;
	p->claimed = c;
	while (got < n && b < p->aglen) {
		while (i < p->nused && p->used[i].agbno + p->used[i].len <= b)
			i++;
		if (i < p->nused && p->used[i].agbno <= b) {
			b = p->used[i].agbno + p->used[i].len;
			continue;
		}
		c[got++] = b++;
	}
	if (got < n) {
		mfs_log(MFS_LOG_ERR, "AG %u: no room for %u btree blocks at format time", p->agno,
			n);
		return -ENOSPC;
	}
	p->nclaimed = n;
	return 0;
}

/* The reverse map and free space for the current claim. */
static int plan_records(struct fmt_plan *p)
{
	unsigned i = 0, j = 0;
	uint32_t next = 0;
	int err;

	p->nrmap = 0;
	p->nfree = 0;
	err = rmap_push(p, 0, MFS_AG_FIXED_BLOCKS, MFS_OWN_FS, 0);
	if (!err)
		err = rmap_push(p, FMT_INO_ROOT, 1, MFS_OWN_INOBT, 0);
	if (!err)
		err = rmap_push(p, FMT_BNO_ROOT, p->base - FMT_BNO_ROOT, MFS_OWN_AG, 0);
	/* merge the used extents and the claimed blocks, both ascending */
	while (!err && (i < p->nused || j < p->nclaimed)) {
		if (j < p->nclaimed && (i == p->nused || p->claimed[j] < p->used[i].agbno)) {
			err = rmap_push(p, p->claimed[j], 1,
					j < p->ino_extra ? MFS_OWN_INOBT : MFS_OWN_AG, 0);
			j++;
		} else {
			err = rmap_push(p, p->used[i].agbno, p->used[i].len, p->used[i].owner,
					p->used[i].offset);
			i++;
		}
	}
	/* free space: the gaps */
	for (uint64_t k = 0; !err && k < p->nrmap; k++) {
		uint32_t s = mfs_get32(p->rmap[k].startblock);

		if (s > next)
			err = free_push(p, next, s - next);
		next = s + mfs_get32(p->rmap[k].blockcount);
	}
	if (!err && next < p->aglen)
		err = free_push(p, next, p->aglen - next);
	return err;
}

/* ---- feeding the bulk loader ------------------------------------------------------------ */
struct fmt_feed {
	const uint8_t *recs;
	size_t recsz;
	uint64_t nrecs, pos;
	const uint32_t *blocks;        /* root candidate first, then extra blocks */
	uint32_t nblocks, bpos;
	const struct mfs_geom *geo;
	uint32_t agno;
};

static int feed_recs(void *priv, void *recs, unsigned n)
{
	struct fmt_feed *f = priv;

	if (f->pos + n > f->nrecs)
		return -EINVAL;
	memcpy(recs, f->recs + f->pos * f->recsz, (size_t)n * f->recsz);
	f->pos += n;
	return 0;
}

static int feed_block(void *priv, uint64_t *fsb)
{
	struct fmt_feed *f = priv;

	if (f->bpos >= f->nblocks)
		return -ENOSPC;
	*fsb = mfs_agbno_to_fsb(f->geo, f->agno, f->blocks[f->bpos++]);
	return 0;
}

static int build_tree(struct fmt_plan *p, enum mfs_ag_tree t, const void *recs, uint64_t nrecs,
		      size_t recsz, const uint32_t *blocks, uint32_t nblocks,
		      struct mfs_btree_root *root)
{
	struct fmt_feed f = { recs, recsz, nrecs, 0, blocks, nblocks, 0, &p->fs->geo, p->agno };
	struct mfs_bload bl;
	int err;

	memset(&bl, 0, sizeof(bl));
	bl.ops = mfs_ag_tree_ops(t);
	bl.owner = p->agno;
	bl.agno = p->agno;
	bl.nrecs = nrecs;
	bl.get_recs = feed_recs;
	bl.claim_block = feed_block;
	bl.priv = &f;
	err = mfs_bload_build(p->fs, NULL, &bl, root);
	if (!err && (f.bpos != nblocks || f.pos != nrecs))
		err = MFS_CORRUPT("AG %u %s: bulk load used %u of %u blocks and %llu of %llu "
				  "records", p->agno, bl.ops->name, f.bpos, nblocks,
				  (unsigned long long)f.pos, (unsigned long long)nrecs);
	return err;
}

/* ---- validation ------------------------------------------------------------------------- */
static int check_used(const struct fmt_plan *p)
{
	const struct mfs_geom *g = &p->fs->geo;

	for (unsigned i = 0; i < p->nused; i++) {
		const struct mfs_ag_extent *e = &p->used[i];
		uint64_t owner = e->owner;

		if (e->len == 0 || e->agbno < p->base || (uint64_t)e->agbno + e->len > p->aglen) {
			mfs_log(MFS_LOG_ERR, "AG %u: used extent %u+%u outside %u..%u", p->agno,
				e->agbno, e->len, p->base, p->aglen - 1);
			return -EINVAL;
		}
		if (i && p->used[i - 1].agbno + p->used[i - 1].len > e->agbno) {
			mfs_log(MFS_LOG_ERR, "AG %u: used extents %u+%u and %u+%u overlap", p->agno,
				p->used[i - 1].agbno, p->used[i - 1].len, e->agbno, e->len);
			return -EINVAL;
		}
		if (owner == MFS_OWN_NULL || owner == 0 ||
		    (owner >= (1ull << 56) && owner < MFS_OWN_MIN) ||
		    (owner < MFS_OWN_MIN && mfs_ino_to_agno(g, owner) >= g->agcount) ||
		    (owner >= MFS_OWN_MIN && e->offset) ||
		    (e->offset & ~MFS_RMAP_OFF_MASK & ~(MFS_RMAP_ATTR_FORK | MFS_RMAP_BMBT_BLOCK))) {
			mfs_log(MFS_LOG_ERR, "AG %u: used extent %u+%u has bad owner %llu or offset "
				"0x%llx", p->agno, e->agbno, e->len, (unsigned long long)owner,
				(unsigned long long)e->offset);
			return -EINVAL;
		}
	}
	return 0;
}

/* Chunks: aligned, in the AG, counts consistent, distinct, inside MFS_OWN_INODES space. */
static int check_chunks(const struct fmt_plan *p, const struct mfs_inobt_rec *c, unsigned n,
			uint32_t *ifree)
{
	const struct mfs_geom *g = &p->fs->geo;
	uint32_t cb = g->chunkblocks ? g->chunkblocks : 1;

	*ifree = 0;
	for (unsigned i = 0; i < n; i++) {
		uint32_t ino = mfs_get32(c[i].startino), agbno = mfs_agino_to_agbno(g, ino);
		uint32_t fc = mfs_get32(c[i].freecount);
		int inside = 0;

		for (unsigned k = 0; k < p->nused; k++) {
			const struct mfs_ag_extent *e = &p->used[k];

			if (e->agbno <= agbno && (uint64_t)agbno + cb <= (uint64_t)e->agbno + e->len)
				inside = e->owner == MFS_OWN_INODES;
		}
		if (ino % MFS_INODES_PER_CHUNK || agbno % cb || (ino >> g->inopblog) != agbno ||
		    (uint64_t)agbno + cb > p->aglen || !inside ||
		    fc != (uint32_t)__builtin_popcountll(mfs_get64(c[i].freemask)) ||
		    (i && mfs_get32(c[i - 1].startino) == ino)) {
			mfs_log(MFS_LOG_ERR, "AG %u: inode chunk at agino %u is misaligned, "
				"duplicated, outside inode space or has a wrong free count", p->agno,
				ino);
			return -EINVAL;
		}
		*ifree += fc;
	}
	return 0;
}

/* ---- writing ----------------------------------------------------------------------------- */
static int write_agh(struct fmt_plan *p, const struct mfs_btree_root roots[MFS_AG_NTREES],
		     uint32_t btreeblks, uint32_t icount, uint32_t ifree, const uint32_t *fl,
		     uint32_t nfl)
{
	const struct mfs_geom *g = &p->fs->geo;
	uint32_t freeblks = 0, longest = 0;
	struct mfs_buf *bp;
	struct mfs_agh *agh;
	struct mfs_agfl *agfl;
	int err;

	for (uint64_t i = 0; i < p->nfree; i++) {
		uint32_t l = mfs_get32(p->bno[i].blockcount);

		freeblks += l;
		if (l > longest)
			longest = l;
	}
	err = mfs_buf_get_new(p->fs->bc, mfs_agbno_to_fsb(g, p->agno, MFS_AGH_AGBNO), 1, &bp);
	if (err)
		return err;
	mfs_blk_init(bp->data, g->blocksize, MFS_AGH_MAGIC, bp->blkno, p->agno, g->uuid);
	agh = bp->data;
	mfs_put32(agh->seqno, p->agno);
	mfs_put32(agh->length, p->aglen);
	for (int t = 0; t < MFS_AG_NTREES; t++) {
		mfs_put32(agh->roots[t], mfs_fsb_to_agbno(g, roots[t].fsb));
		mfs_put32(agh->levels[t], roots[t].levels);
	}
	mfs_put32(agh->freeblks, freeblks);
	mfs_put32(agh->longest, longest);
	mfs_put32(agh->btreeblks, btreeblks);
	mfs_put32(agh->icount, icount);
	mfs_put32(agh->ifree, ifree);
	mfs_put32(agh->fl_first, 0);
	mfs_put32(agh->fl_count, nfl);
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);

	err = mfs_buf_get_new(p->fs->bc, mfs_agbno_to_fsb(g, p->agno, MFS_AGFL_AGBNO), 1, &bp);
	if (err)
		return err;
	mfs_blk_init(bp->data, g->blocksize, MFS_AGFL_MAGIC, bp->blkno, p->agno, g->uuid);
	agfl = bp->data;
	for (uint32_t i = 0; i < nfl; i++)
		mfs_put32(agfl->bno[i], fl[i]);
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
	return 0;
}

int mfs_ag_format(struct mfs_fs *fs, uint32_t agno, const struct mfs_ag_extent *used,
		  unsigned nused, const struct mfs_inobt_rec *chunks, unsigned nchunks)
{
	const struct mfs_geom *g = &fs->geo;
	struct fmt_plan p;
	struct mfs_ag_extent *u = NULL;
	struct mfs_inobt_rec *c = NULL;
	struct mfs_btree_root roots[MFS_AG_NTREES];
	uint64_t nb[MFS_AG_NTREES];
	unsigned lv;
	uint32_t *blocks = NULL, fl[MFS_AGFL_SIZE_MAX], nfl, need, ifree, pos;
	int err;

	if (agno >= g->agcount)
		return -EINVAL;
	memset(&p, 0, sizeof(p));
	p.fs = fs;
	p.agno = agno;
	p.aglen = mfs_ag_length(g, agno);
	p.base = MFS_AG_FIXED_BLOCKS + mfs_ag_format_blocks(g);
	if (p.aglen < p.base + 1)
		return -EINVAL;
	u = mfs_malloc((nused ? nused : 1) * sizeof(*u));
	c = mfs_malloc((nchunks ? nchunks : 1) * sizeof(*c));
	err = u && c ? 0 : -ENOMEM;
	if (err)
		goto out;
	if (nused)
		memcpy(u, used, nused * sizeof(*u));
	if (nchunks)
		memcpy(c, chunks, nchunks * sizeof(*c));
	qsort(u, nused, sizeof(*u), cmp_ext);
	qsort(c, nchunks, sizeof(*c), cmp_chunk);
	p.used = u;
	p.nused = nused;
	err = check_used(&p);
	if (!err)
		err = check_chunks(&p, c, nchunks, &ifree);
	if (!err)
		err = mfs_bload_geometry(&mfs_inobt_ops, g->blocksize, nchunks, 0,
					 &nb[MFS_BT_INO], &lv);
	if (err)
		goto out;

	/* claim extra tree blocks until the claim covers what the records need */
	p.ino_extra = (uint32_t)(nb[MFS_BT_INO] - 1);
	need = p.ino_extra;
	for (int iter = 0;; iter++) {
		uint32_t want;

		err = plan_claim(&p, need);
		if (!err)
			err = plan_records(&p);
		if (!err)
			err = mfs_bload_geometry(&mfs_bnobt_ops, g->blocksize, p.nfree, 0,
						 &nb[MFS_BT_BNO], &lv);
		if (!err)
			err = mfs_bload_geometry(&mfs_cntbt_ops, g->blocksize, p.nfree, 0,
						 &nb[MFS_BT_CNT], &lv);
		if (!err)
			err = mfs_bload_geometry(&mfs_rmapbt_ops, g->blocksize, p.nrmap, 0,
						 &nb[MFS_BT_RMAP], &lv);
		if (err)
			goto out;
		want = (uint32_t)(nb[MFS_BT_INO] + nb[MFS_BT_BNO] + nb[MFS_BT_CNT] +
				  nb[MFS_BT_RMAP] - 4);
		if (need >= want) {
			nfl = FMT_AGFL + (need - want);     /* surplus joins the AGFL stock */
			break;
		}
		if (iter > 32) {
			err = MFS_CORRUPT("AG %u: format-time btree sizes do not converge", agno);
			goto out;
		}
		need = want;
	}
	if (nfl > MFS_AGFL_SIZE_MAX) {
		err = -ENOSPC;
		goto out;
	}

	/* blocks for each tree: its root in the reserved area, then its share of the claim */
	blocks = mfs_malloc((p.nclaimed + 4) * sizeof(*blocks));
	err = blocks ? 0 : -ENOMEM;
	if (err)
		goto out;
	pos = 0;
	{
		static const uint32_t rootblk[MFS_AG_NTREES] = {
			[MFS_BT_BNO] = FMT_BNO_ROOT, [MFS_BT_CNT] = FMT_CNT_ROOT,
			[MFS_BT_INO] = FMT_INO_ROOT, [MFS_BT_RMAP] = FMT_RMAP_ROOT,
		};
		static const enum mfs_ag_tree order[MFS_AG_NTREES] = {
			MFS_BT_INO, MFS_BT_BNO, MFS_BT_CNT, MFS_BT_RMAP,
		};
		struct mfs_alloc_rec *cnt;

		cnt = mfs_malloc((p.nfree ? p.nfree : 1) * sizeof(*cnt));
		err = cnt ? 0 : -ENOMEM;
		if (err)
			goto out;
		if (p.nfree)
			memcpy(cnt, p.bno, p.nfree * sizeof(*cnt));
		qsort(cnt, p.nfree, sizeof(*cnt), cmp_cnt);
		for (int k = 0; !err && k < MFS_AG_NTREES; k++) {
			enum mfs_ag_tree t = order[k];
			uint32_t n = (uint32_t)nb[t];
			const void *recs;
			uint64_t nrecs;
			size_t recsz;

			blocks[0] = rootblk[t];
			memcpy(blocks + 1, p.claimed + pos, (size_t)(n - 1) * sizeof(*blocks));
			pos += n - 1;
			switch (t) {
			case MFS_BT_BNO:
				recs = p.bno, nrecs = p.nfree, recsz = sizeof(*p.bno);
				break;
			case MFS_BT_CNT:
				recs = cnt, nrecs = p.nfree, recsz = sizeof(*cnt);
				break;
			case MFS_BT_INO:
				recs = c, nrecs = nchunks, recsz = sizeof(*c);
				break;
			default:
				recs = p.rmap, nrecs = p.nrmap, recsz = sizeof(*p.rmap);
				break;
			}
			err = build_tree(&p, t, recs, nrecs, recsz, blocks, n, &roots[t]);
		}
		free(cnt);
		if (err)
			goto out;
	}
	for (uint32_t i = 0; i < FMT_AGFL; i++)
		fl[i] = FMT_AGFL_FIRST + i;
	for (uint32_t i = FMT_AGFL; i < nfl; i++)
		fl[i] = p.claimed[pos++];
	err = write_agh(&p, roots,
			(uint32_t)(nb[MFS_BT_BNO] + nb[MFS_BT_CNT] + nb[MFS_BT_RMAP] - 3),
			nchunks * MFS_INODES_PER_CHUNK, ifree, fl, nfl);
out:
	free(blocks);
	free(u);
	free(c);
	free(p.claimed);
	free(p.rmap);
	free(p.bno);
	return err;
}
