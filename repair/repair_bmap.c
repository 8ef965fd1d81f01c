/*
 * repair_bmap.c — rebuilder of an inode's extent map (MFS_SCRUB_BMAP) from the reverse map,
 * and the pieces the inode core rebuilder borrows (repair_bmap.h).
 *
 * The data fork of a regular file (and of a symlink whose target lives in blocks) is the
 * list of its data extents; each AG's reverse map holds one record per run of them (owner
 * = the inode, offset = file block of the run's first block), so the map can be rebuilt
 * from the reverse maps alone:
 *
 *   1. under the inode's lock (exclusive: readers and writers of this file wait, the rest
 *      of the filesystem runs), walk every AG's reverse map, each under its AG lock for
 *      the length of the walk only, for the records of this inode: counted once (to size
 *      the scratch), then gathered into fixed-record arrays in the client's descriptor —
 *      every record as found, and the data extents as extent records;
 *   2. sort the extents by file block; they must be sane and must not overlap (else the
 *      reverse map itself is damaged: -EFSCORRUPTED, rebuild it first);
 *   3. in ONE transaction: the extents inline when they fit the data fork, else a new extent
 *      btree bulk-loaded into newly allocated blocks (reverse-mapped to the inode as btree
 *      blocks), the fork root and the block count swapped in the inode, and the old btree's
 *      blocks (what the reverse map names as this inode's data-fork btree blocks, whatever
 *      the fork root says) freed with their mappings; commit.
 *
 * The reverse map does not say which extents are unwritten (allocated by fallocate, read as
 * zeroes).  Where the old map still reads and maps exactly the same blocks, its flag is
 * kept (the extent is split where it changes); elsewhere the extent comes back written.
 *
 * Why the inode lock is enough: every change to an inode's space (allocation, free, btree
 * split, inactivation) happens under its exclusive lock, so the records of this owner hold
 * still for the whole rebuild while other owners' records change around them; the walks
 * take AG locks after the inode lock, as every transaction does.
 *
 * Directories (whose data fork is a name btree), special files and inline symlinks have no
 * extent map: for them only the block count is set right (every block the reverse map
 * gives the inode).  A "regular file" whose btree root is a name-btree block of its own is
 * a directory with a damaged mode: refused (repair_ilit.h), its names kept for the inode
 * record rebuild, which gives the type back from the fork.  The attribute fork is not an extent map either (a keyed btree and value
 * blocks): its blocks are only counted.
 *
 * The daemon's in-core inode is the one changed (under its lock) and logged, so the cache
 * and the disk agree at commit; on any failure the transaction is cancelled and the in-core
 * inode read back from the restored buffer.
 */
#include "repair_bmap.h"
#include "repair_ag.h"
#include "repair_ilit.h"

#include "alloc.h"
#include "bcache.h"
#include "bmap.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "mem.h"
#include "trans.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define FMAP_POLL_RECS 4096u

/* One record of the inode as the reverse map gives it (host order). */
struct orec {
	uint64_t fsb;
	uint64_t offset;             /* rmap offset with its flags */
	uint32_t len;
	uint32_t pad;
};

struct rep_fmap {
	struct rep *r;
	struct mfs_fs *fs;
	uint64_t ino;
	struct mfs_inode *old;       /* map giving the unwritten flags, or NULL */
	int old_ok;                  /* still trusted during this pass */
	int counting;                /* pass 1: count only */
	struct rep_owned_sum sum;
	uint64_t npieces;            /* data extents after the unwritten splits */
	uint64_t seen;
	struct mfs_xfarray *O;       /* struct orec: every record */
	struct mfs_xfarray *E;       /* struct mfs_bmbt_rec: the data extents */
	struct mfs_xfarray *M;       /* struct mfs_bmbt_rec: the old map (when it walks) */
	int settle;                  /* old_map_agrees may settle offset disputes (once) */
	struct ofix *fix;            /* the disputes the old map wins (settle_offsets) */
	size_t nfix, capfix;
	struct orec *rfix;           /* reverse-map records to correct: their new offsets */
	uint64_t *rfix_old;          /* and their offsets as found */
	size_t nrfix;
	uint64_t rec_end;            /* fmap_pass: the end (fsb) of the inode's record before */
	uint64_t next_new;           /* bulk loader: next record of E */
	uint64_t *newblk;            /* the new btree's blocks */
	uint64_t nnew, claimed;
};

const struct rep_owned_sum *rep_fmap_sum(const struct rep_fmap *m)
{
	return &m->sum;
}

void rep_fmap_free(struct rep_fmap *m)
{
	if (!m)
		return;
	free(m->fix);
	free(m->rfix);
	free(m->rfix_old);
	free(m->newblk);
	free(m);
}

/* One data extent piece (pass 2 appends it). */
static int add_piece(struct rep_fmap *m, uint64_t off, uint64_t fsb, uint32_t len, int unw)
{
	struct mfs_bmbt_rec e;
	int err;

	m->npieces++;
	if (m->counting)
		return 0;
	memset(&e, 0, sizeof(e));
	mfs_put64(e.startoff, off);
	mfs_put64(e.startblock, fsb);
	mfs_put32(e.blockcount, len);
	mfs_put32(e.flags, unw ? MFS_EXT_UNWRITTEN : 0);
	err = mfs_xfarray_append(m->E, &e, NULL);
	return err ? rep_scratch_err(m->r, err, "gathering the extents") : 0;
}

/*
 * A data record: split where the old map (still trusted) changes between written and
 * unwritten for these very blocks.  The old map is asked only while it answers sanely; its
 * first error ends the trust for the rest of the pass (both passes meet the same error at
 * the same place: nothing they look at changes in between).
 */
static int add_data(struct rep_fmap *m, uint64_t off, uint64_t fsb, uint32_t len)
{
	while (len) {
		uint32_t n = len;
		int unw = 0, err;

		if (m->old_ok) {
			struct mfs_bmap_ext e;

			err = mfs_bmap_lookup(m->old, off, &e);
			if (err == -ENOMEM)
				return rep_fail(m->r, err, "no memory to read the old extent map");
			if (err || e.startoff > off || e.len == 0 || off - e.startoff >= e.len) {
				m->old_ok = 0;
			} else {
				if (e.len - (off - e.startoff) < n)
					n = (uint32_t)(e.len - (off - e.startoff));
				unw = e.startblock != MFS_BMAP_HOLE && e.unwritten &&
				      e.startblock + (off - e.startoff) == fsb;
			}
		}
		err = add_piece(m, off, fsb, n, unw);
		if (err)
			return err;
		off += n;
		fsb += n;
		len -= n;
	}
	return 0;
}

struct fwalk {
	struct rep_fmap *m;
	uint32_t agno;
};

static int fwalk_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_rmap_rec *rr = rec;
	struct fwalk *w = priv;
	struct rep_fmap *m = w->m;
	const struct mfs_geom *g = &m->fs->geo;
	uint64_t off = mfs_get64(rr->offset);
	uint32_t s = mfs_get32(rr->startblock), l = mfs_get32(rr->blockcount);
	struct orec o;
	int err;

	if (++m->seen % FMAP_POLL_RECS == 0 && (err = rep_poll(m->r)))
		return err;
	if (mfs_get64(rr->owner) != m->ino)
		return 0;
	if (!l || s < MFS_AG_FIXED_BLOCKS || (uint64_t)s + l > mfs_ag_length(g, w->agno))
		return rep_fail(m->r, -EFSCORRUPTED, "AG %u reverse map: inode %llu's record %u+%u "
				"lies outside the AG: rebuild the reverse map first", w->agno,
				(unsigned long long)m->ino, s, l);
	/* The walk goes by block (AG by AG, each in start order): a record that starts before
	 * the end of the inode's one before gives it blocks twice (at two file offsets, or as
	 * data and tree blocks): taking both would cross-link the file with itself. */
	if (mfs_agbno_to_fsb(g, w->agno, s) < m->rec_end)
		return rep_fail(m->r, -EFSCORRUPTED, "AG %u reverse map: inode %llu's record %u+%u "
				"overlaps its record before: rebuild the reverse map first",
				w->agno, (unsigned long long)m->ino, s, l);
	m->rec_end = mfs_agbno_to_fsb(g, w->agno, s) + l;
	if (off & MFS_RMAP_ATTR_FORK) {
		m->sum.attr_recs++;
		m->sum.attr_blocks += l;
	} else if (off & MFS_RMAP_BMBT_BLOCK) {
		m->sum.tree_recs++;
		m->sum.tree_blocks += l;
	} else {
		m->sum.data_recs++;
		m->sum.data_blocks += l;
		err = add_data(m, off & MFS_RMAP_OFF_MASK, mfs_agbno_to_fsb(g, w->agno, s), l);
		if (err)
			return err;
	}
	if (m->counting)
		return 0;
	memset(&o, 0, sizeof(o));
	o.fsb = mfs_agbno_to_fsb(g, w->agno, s);
	o.offset = off;
	o.len = l;
	err = mfs_xfarray_append(m->O, &o, NULL);
	return err ? rep_scratch_err(m->r, err, "gathering the inode's reverse mappings") : 0;
}

/* One pass over every AG's reverse map, each AG locked for its walk only. */
static int fmap_pass(struct rep_fmap *m)
{
	struct mfs_fs *fs = m->fs;
	int err = 0;

	memset(&m->sum, 0, sizeof(m->sum));
	m->npieces = 0;
	m->rec_end = 0;
	m->old_ok = m->old != NULL;
	for (uint32_t a = 0; a < fs->geo.agcount && !err; a++) {
		struct fwalk w = { m, a };
		struct mfs_btree_cur cur;
		struct mfs_buf *hbp;

		mfs_ag_lock(fs, a, MFS_AGL_SPACE);
		err = mfs_read_agh(fs, a, &hbp);
		if (err) {
			mfs_ag_unlock(fs, a, MFS_AGL_SPACE);
			return rep_fail(m->r, err, "AG %u header unreadable (%s): inode %llu's space "
					"cannot be told; repair the AG first", a, strerror(-err),
					(unsigned long long)m->ino);
		}
		mfs_ag_cur_init(&cur, fs, NULL, a, MFS_BT_RMAP, hbp);
		err = mfs_btree_query_range(&cur, NULL, NULL, fwalk_fn, &w);
		mfs_btree_cur_release(&cur);
		mfs_buf_put(hbp);
		mfs_ag_unlock(fs, a, MFS_AGL_SPACE);
		if (err && !m->r->rc->reason[0])
			rep_fail(m->r, err, "AG %u reverse map unreadable (%s): rebuild it first", a,
				 strerror(-err));
	}
	return err;
}

static int cmp_startoff(const void *a, const void *b, void *priv)
{
	uint64_t x = mfs_get64(((const struct mfs_bmbt_rec *)a)->startoff);
	uint64_t y = mfs_get64(((const struct mfs_bmbt_rec *)b)->startoff);

	return x < y ? -1 : x > y;
}

/* Sorted extents: each sane, none overlapping the one before. */
static int fmap_check(struct rep_fmap *m)
{
	uint64_t n = mfs_xfarray_count(m->E), end = 0;

	for (uint64_t i = 0; i < n; i++) {
		struct mfs_bmbt_rec e;
		int err = mfs_xfarray_get(m->E, i, &e);

		if (err)
			return rep_scratch_err(m->r, err, "reading the extents");
		err = mfs_bmbt_check_rec(m->fs, m->ino, &e);
		if (err)
			return rep_fail(m->r, err, "inode %llu: the reverse map gives it a bad extent "
					"at file block %llu: rebuild the reverse map first",
					(unsigned long long)m->ino,
					(unsigned long long)mfs_get64(e.startoff));
		if (i && mfs_get64(e.startoff) < end)
			return rep_fail(m->r, -EFSCORRUPTED, "inode %llu: the reverse map maps file "
					"block %llu twice: rebuild the reverse map first",
					(unsigned long long)m->ino,
					(unsigned long long)mfs_get64(e.startoff));
		end = mfs_get64(e.startoff) + mfs_get32(e.blockcount);
	}
	return 0;
}

static int count_old_fn(struct mfs_inode *ip, const struct mfs_bmap_ext *ext, void *priv)
{
	(*(uint64_t *)priv)++;
	return 0;
}

static int keep_old_fn(struct mfs_inode *ip, const struct mfs_bmap_ext *ext, void *priv)
{
	struct rep_fmap *m = priv;
	struct mfs_bmbt_rec e;
	int err;

	memset(&e, 0, sizeof(e));
	mfs_put64(e.startoff, ext->startoff);
	mfs_put64(e.startblock, ext->startblock);
	mfs_put32(e.blockcount, (uint32_t)ext->len);
	err = mfs_xfarray_append(m->M, &e, NULL);
	return err ? rep_scratch_err(m->r, err, "keeping the old extent map") : 0;
}

/*
 * Whose word wins when the old map still reads cleanly and disagrees with the reverse map?
 * The reverse map's, where the old map's claim is shown false: blocks it maps that are free
 * or the reverse map gives to another owner (a fuzzed start or length), or file blocks it
 * lost (the reverse map maps them, the old map not).  Not where the reverse map may be the
 * damaged one: blocks the old map holds that the reverse map gives to nobody (a lost
 * record): then nothing is rebuilt (-EFSCORRUPTED): the reverse map is to be rebuilt
 * first.  The same blocks at other file offsets are settled by the file's size
 * (offsets_dispute below).
 */
struct claim {
	uint32_t agbno, end;
	uint32_t covered;            /* blocks from agbno on covered so far (in order) */
};

static int claim_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	struct claim *c = priv;
	uint32_t s = mfs_get32(((const struct mfs_alloc_rec *)rec)->startblock);
	uint32_t e = s + mfs_get32(((const struct mfs_alloc_rec *)rec)->blockcount);
	uint32_t at = c->agbno + c->covered;

	if (s > at)
		return 1;                /* this tree leaves block `at` uncovered */
	if (e > at)
		c->covered = (e < c->end ? e : c->end) - c->agbno;
	return c->agbno + c->covered >= c->end;
}

/* Are the blocks [fsb, fsb + len) all free or owned in the reverse map (any owner)?  The
 * two trees are asked in turn from the first block not yet covered, until neither helps. */
static int all_claimed(struct rep_fmap *m, uint64_t fsb, uint32_t len, int *yes)
{
	const struct mfs_geom *g = &m->fs->geo;
	uint32_t a = mfs_fsb_to_agno(g, fsb), before = UINT32_MAX;
	struct claim c = { mfs_fsb_to_agbno(g, fsb), mfs_fsb_to_agbno(g, fsb) + len, 0 };
	struct mfs_buf *hbp;
	int err;

	*yes = 0;
	mfs_ag_lock(m->fs, a, MFS_AGL_SPACE);
	err = mfs_read_agh(m->fs, a, &hbp);
	if (err) {
		mfs_ag_unlock(m->fs, a, MFS_AGL_SPACE);
		return rep_fail(m->r, err, "AG %u header unreadable: %s", a, strerror(-err));
	}
	while (!err && c.covered != before && c.agbno + c.covered < c.end) {
		before = c.covered;
		/* free extents and reverse-map records both begin with startblock, blockcount */
		for (int t = 0; !err && t < 2; t++) {
			struct mfs_btree_cur cur;
			struct mfs_rmap_rec lo, rec;
			int stat = 0;

			memset(&lo, 0, sizeof(lo));
			mfs_put32(lo.startblock, c.agbno + c.covered);
			mfs_ag_cur_init(&cur, m->fs, NULL, a, t ? MFS_BT_RMAP : MFS_BT_BNO, hbp);
			err = mfs_btree_lookup_get(&cur, &lo, MFS_LOOKUP_LE, &rec, &stat);
			if (!err && stat)
				lo.startblock = rec.startblock;
			if (!err)
				err = mfs_btree_query_range(&cur, &lo, NULL, claim_fn, &c);
			mfs_btree_cur_release(&cur);
			if (err > 0)
				err = 0;
		}
	}
	mfs_buf_put(hbp);
	mfs_ag_unlock(m->fs, a, MFS_AGL_SPACE);
	if (err)
		return rep_fail(m->r, err, "AG %u: reading its free space and reverse map: %s", a,
				strerror(-err));
	*yes = c.agbno + c.covered >= c.end;
	return 0;
}

/* mfs_xfarray_bsearch's order for o_find: the records that end at or before block *key
 * come first. */
static int cmp_end(const void *rec, const void *key, void *priv)
{
	const struct orec *o = rec;

	(void)priv;
	return o->fsb + o->len <= *(const uint64_t *)key ? -1 : 0;
}

/*
 * The first record of O that ends after block fsb (the count if none), by halving: O is in
 * block order, its records apart (fmap_pass), so their ends rise too.  A lookup per piece
 * of the old map, not a pass over O: a hostile map that disagrees everywhere costs
 * n log n, not n squared (18,000 one-block extents all at other offsets: 13 s -> 0.2 s).
 */
static int o_find(struct rep_fmap *m, uint64_t fsb, uint64_t *at)
{
	int err = mfs_xfarray_bsearch(m->O, &fsb, cmp_end, NULL, at, NULL);

	return err && err != -ENOENT ? rep_scratch_err(m->r, err, "reading the reverse mappings")
				     : 0;
}

/* How many of [fsb, fsb + len) the reverse map gives the inode as data. */
static int owned_data(struct rep_fmap *m, uint64_t fsb, uint32_t len, uint64_t *nown)
{
	uint64_t n = mfs_xfarray_count(m->O), i;
	int err = o_find(m, fsb, &i);

	*nown = 0;
	if (err)
		return err;
	for (; i < n; i++) {
		struct orec o;
		uint64_t s, e;

		err = mfs_xfarray_get(m->O, i, &o);
		if (err)
			return rep_scratch_err(m->r, err, "reading the reverse mappings");
		if (o.fsb >= fsb + len)
			break;
		if (o.offset & (MFS_RMAP_ATTR_FORK | MFS_RMAP_BMBT_BLOCK))
			continue;
		s = o.fsb > fsb ? o.fsb : fsb;
		e = o.fsb + o.len < fsb + len ? o.fsb + o.len : fsb + len;
		*nown += e - s;
	}
	return 0;
}

/*
 * The same blocks at other file offsets: the old map puts blocks fsb+len at file block
 * off, the reverse map (records of this inode, all of them its data) at another.  Both are
 * checksummed and each reads as a sane map on its own, so the evidence is the file's size:
 * written data lies inside it (an unwritten extent may lie past it: fallocate with
 * KEEP_SIZE); the side whose placement the size rules out is the damaged one.  When the
 * size tells them apart in the old map's favour, the reverse map's records are corrected
 * from the map (settle_offsets, then rep_fmap_lock in the rebuild's transaction); otherwise
 * the reverse map's word stands and the map is rebuilt from it, as xfs_scrub does (its
 * extent-map check blames the map for a reverse-mapping at another offset, and its
 * rebuild takes the reverse map).  The reverse map's own rebuild refuses such an owner
 * (repair_rmap_live.c): this rebuild settles it.
 */
struct ofix {
	uint64_t fsb, len;
	int64_t delta;               /* the old map's file block minus the reverse map's */
};

/* The reverse map's file block for fsb, from the data record of the inode holding it (1:
 * none holds it). */
static int rmap_offset(struct rep_fmap *m, uint64_t fsb, uint64_t *roff)
{
	struct orec o;
	uint64_t i;
	int err = o_find(m, fsb, &i);

	if (err || i == mfs_xfarray_count(m->O))
		return err ? err : 1;
	err = mfs_xfarray_get(m->O, i, &o);
	if (err)
		return rep_scratch_err(m->r, err, "reading the reverse mappings");
	if ((o.offset & (MFS_RMAP_ATTR_FORK | MFS_RMAP_BMBT_BLOCK)) || o.fsb > fsb)
		return 1;
	*roff = o.offset + (fsb - o.fsb);
	return 0;
}

static int offsets_dispute(struct rep_fmap *m, uint64_t off, uint64_t fsb, uint32_t len,
			   int unw)
{
	uint64_t bs = m->fs->geo.blocksize, eof = (m->old->size + bs - 1) / bs, roff = 0;
	int err = m->settle ? rmap_offset(m, fsb, &roff) : 1, map_ok, rmap_ok;
	struct ofix *f;

	if (err < 0)
		return err;
	if (err > 0)
		return rep_fail(m->r, -EFSCORRUPTED, "inode %llu: its extent map and the reverse "
				"map put blocks %llu+%u at different file offsets (the map at %llu): "
				"which is right cannot be told; nothing was changed",
				(unsigned long long)m->ino, (unsigned long long)fsb, len,
				(unsigned long long)off);
	map_ok = off + len <= eof || unw;
	rmap_ok = roff + len <= eof;
	if (!map_ok || rmap_ok)
		return 0;                   /* the reverse map's word: the map is rebuilt */
	if (m->nfix) {
		f = &m->fix[m->nfix - 1];
		if (f->fsb + f->len == fsb && f->delta == (int64_t)(off - roff)) {
			f->len += len;
			return 0;
		}
	}
	if (m->nfix == m->capfix) {
		size_t nc = m->capfix ? 2 * m->capfix : 8;
		struct ofix *nv = mfs_realloc(m->fix, nc * sizeof(*nv));

		if (!nv)
			return rep_fail(m->r, -ENOMEM, "no memory to settle inode %llu's offsets",
					(unsigned long long)m->ino);
		m->fix = nv;
		m->capfix = nc;
	}
	m->fix[m->nfix++] = (struct ofix){ fsb, len, (int64_t)(off - roff) };
	return 0;
}

/* A piece the old map has and the new one not: may the rebuild drop it?  Only when the old
 * map is shown wrong there: some of its blocks are not the inode's in the reverse map, and
 * each of them is free or another owner's; or the same blocks are the inode's at another
 * offset and the dispute goes the reverse map's way (offsets_dispute). */
static int drop_ok(struct rep_fmap *m, uint64_t off, uint64_t fsb, uint32_t len, int unw)
{
	uint64_t nown;
	int yes, err = owned_data(m, fsb, len, &nown);

	if (!err && nown == len)
		return offsets_dispute(m, off, fsb, len, unw);
	if (!err)
		err = all_claimed(m, fsb, len, &yes);
	if (!err && !yes)
		return rep_fail(m->r, -EFSCORRUPTED, "inode %llu: its extent map holds blocks "
				"%llu+%u (file block %llu) that the reverse map gives to nobody: the "
				"reverse map may have lost them; rebuild it first", (unsigned long long)
				m->ino, (unsigned long long)fsb, len, (unsigned long long)off);
	return err;
}

/* Walk the old map (M) against the new (E), both by file block: every old piece the new
 * map does not keep as it is must be droppable. */
static int old_map_agrees(struct rep_fmap *m)
{
	uint64_t nm = mfs_xfarray_count(m->M), ne = mfs_xfarray_count(m->E), j = 0;
	struct mfs_bmbt_rec a, b;
	int err = 0, haveb = 0, unw;

	memset(&b, 0, sizeof(b));
	for (uint64_t i = 0; i < nm && !err; i++) {
		uint64_t off, fsb, end;

		err = mfs_xfarray_get(m->M, i, &a);
		if (err)
			return rep_scratch_err(m->r, err, "reading the old extent map");
		unw = !!(mfs_get32(a.flags) & MFS_EXT_UNWRITTEN);
		off = mfs_get64(a.startoff);
		fsb = mfs_get64(a.startblock);
		end = off + mfs_get32(a.blockcount);
		while (off < end && !err) {
			uint64_t bs, be, n;

			/* the first new extent that ends after off */
			while (!haveb || mfs_get64(b.startoff) + mfs_get32(b.blockcount) <= off) {
				if (j >= ne) {
					haveb = 0;
					break;
				}
				err = mfs_xfarray_get(m->E, j++, &b);
				if (err)
					return rep_scratch_err(m->r, err, "reading the extents");
				haveb = 1;
			}
			bs = haveb ? mfs_get64(b.startoff) : UINT64_MAX;
			be = haveb ? bs + mfs_get32(b.blockcount) : UINT64_MAX;
			if (bs > off) {                 /* a hole in the new map */
				n = (bs < end ? bs : end) - off;
				err = drop_ok(m, off, fsb, (uint32_t)n, unw);
			} else {
				n = (be < end ? be : end) - off;
				if (mfs_get64(b.startblock) + (off - bs) != fsb)
					err = drop_ok(m, off, fsb, (uint32_t)n, unw);
			}
			off += n;
			fsb += n;
		}
	}
	return err;
}

/* The fix holding block fsb, or NULL: the last one starting at or before it (the fixes
 * sorted by block: settle_offsets). */
static const struct ofix *fix_at(const struct rep_fmap *m, uint64_t fsb)
{
	size_t lo = 0, hi = m->nfix;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (m->fix[mid].fsb <= fsb)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo && fsb < m->fix[lo - 1].fsb + m->fix[lo - 1].len ? &m->fix[lo - 1] : NULL;
}

static int cmp_fix(const void *a, const void *b)
{
	uint64_t x = ((const struct ofix *)a)->fsb, y = ((const struct ofix *)b)->fsb;

	return x < y ? -1 : x > y;
}

/* The disputes the old map won: the records of O that hold those blocks take the old
 * map's offsets, and are noted for the transaction to correct in the reverse maps
 * (rep_fmap_lock); E is made again from O, sorted and checked against the old map again,
 * which must now agree. */
static int settle_offsets(struct rep_fmap *m)
{
	uint64_t no = mfs_xfarray_count(m->O), ne;
	int err = 0;

	qsort(m->fix, m->nfix, sizeof(*m->fix), cmp_fix);
	m->rfix = mfs_calloc(no ? no : 1, sizeof(*m->rfix));
	m->rfix_old = mfs_calloc(no ? no : 1, sizeof(*m->rfix_old));
	if (!m->rfix || !m->rfix_old)
		return rep_fail(m->r, -ENOMEM, "no memory to settle inode %llu's offsets",
				(unsigned long long)m->ino);
	for (uint64_t i = 0; i < no && !err; i++) {
		const struct ofix *f;
		struct orec o;

		err = mfs_xfarray_get(m->O, i, &o);
		if (err)
			return rep_scratch_err(m->r, err, "reading the reverse mappings");
		if ((o.offset & (MFS_RMAP_ATTR_FORK | MFS_RMAP_BMBT_BLOCK)) ||
		    !(f = fix_at(m, o.fsb)))
			continue;
		if (o.fsb + o.len > f->fsb + f->len || (int64_t)o.offset + f->delta < 0 ||
		    (uint64_t)((int64_t)o.offset + f->delta) > MFS_RMAP_OFF_MASK)
			return rep_fail(m->r, -EFSCORRUPTED, "inode %llu: its extent map and the "
					"reverse map put blocks %llu+%u at different file offsets, and "
					"not as whole records: which is right cannot be told; nothing "
					"was changed", (unsigned long long)m->ino,
					(unsigned long long)o.fsb, o.len);
		m->rfix_old[m->nrfix] = o.offset;
		o.offset = (uint64_t)((int64_t)o.offset + f->delta);
		m->rfix[m->nrfix++] = o;
		err = mfs_xfarray_set(m->O, i, &o);
		if (err)
			return rep_scratch_err(m->r, err, "correcting the reverse mappings");
	}
	/* E again from the records as corrected (the unwritten flags from the old map at
	 * the offsets now given): emptied from the end, then refilled */
	while (!err && (ne = mfs_xfarray_count(m->E))) {
		err = mfs_xfarray_unset(m->E, ne - 1);
		if (err == -ENODATA)
			break;
	}
	if (err && err != -ENODATA)
		return rep_scratch_err(m->r, err, "emptying the extents");
	err = 0;
	m->old_ok = 1;
	m->npieces = 0;
	for (uint64_t i = 0; i < no && !err; i++) {
		struct orec o;

		err = mfs_xfarray_get(m->O, i, &o);
		if (err)
			return rep_scratch_err(m->r, err, "reading the reverse mappings");
		if (!(o.offset & (MFS_RMAP_ATTR_FORK | MFS_RMAP_BMBT_BLOCK)))
			err = add_data(m, o.offset, o.fsb, o.len);
	}
	if (err)
		return err;
	m->settle = 0;
	err = rep_sort(m->r, m->E, cmp_startoff, "sorting the extents");
	if (!err)
		err = fmap_check(m);
	return err ? err : old_map_agrees(m);
}

int rep_fmap_gather(struct rep *r, uint64_t ino, struct mfs_inode *old, struct rep_fmap **out)
{
	struct rep_fmap *m = mfs_calloc(1, sizeof(*m));
	uint64_t nold = 0;
	int err;

	*out = NULL;
	if (!m)
		return rep_fail(r, -ENOMEM, "no memory to rebuild inode %llu's map",
				(unsigned long long)ino);
	m->r = r;
	m->fs = r->fs;
	m->ino = ino;
	/* The old map is asked about unwritten extents only when it walks cleanly. */
	if (old && !S_ISDIR(old->mode) &&
	    (old->dformat == MFS_FMT_EXTENTS || old->dformat == MFS_FMT_BTREE)) {
		err = mfs_bmap_walk(old, count_old_fn, &nold);
		if (err == -ENOMEM) {
			rep_fmap_free(m);
			return rep_fail(r, err, "no memory to read inode %llu's map",
					(unsigned long long)ino);
		}
		if (!err)
			m->old = old;
	}
	m->counting = 1;
	err = fmap_pass(m);
	if (!err) {
		const struct rep_array_plan plan[3] = {
			{ sizeof(struct orec), m->sum.data_recs + m->sum.tree_recs +
			  m->sum.attr_recs + 1 },
			/* settle_offsets may split the extents anew: as many more as the
			 * old map has */
			{ sizeof(struct mfs_bmbt_rec), m->npieces + nold + 1 },
			{ sizeof(struct mfs_bmbt_rec), nold + 1 },
		};

		err = rep_reserve(r, plan, 3);
		if (!err)
			err = rep_hook(r, MFS_REPAIR_AT_RESERVED);
		if (!err)
			err = rep_array(r, plan[0].recsize, plan[0].max_nr, &m->O);
		if (!err)
			err = rep_array(r, plan[1].recsize, plan[1].max_nr, &m->E);
		if (!err)
			err = rep_array(r, plan[2].recsize, plan[2].max_nr, &m->M);
		if (!err && m->old)
			err = mfs_bmap_walk(old, keep_old_fn, m);
		if (err > 0)
			err = -EFSCORRUPTED;
	}
	if (!err) {
		uint64_t n = m->npieces;

		m->counting = 0;
		err = fmap_pass(m);
		if (!err && m->npieces != n)
			err = rep_fail(r, -EAGAIN, "inode %llu: its reverse mappings changed during "
				       "the rebuild", (unsigned long long)ino);
	}
	if (!err)
		err = rep_hook(r, MFS_REPAIR_AT_GATHERED);
	if (!err)
		err = rep_sort(r, m->E, cmp_startoff, "sorting the extents");
	if (!err)
		err = fmap_check(m);
	if (!err && m->old) {
		m->settle = 1;
		err = old_map_agrees(m);
	}
	if (!err && m->nfix)
		err = settle_offsets(m);
	if (err) {
		rep_fmap_free(m);
		return err;
	}
	*out = m;
	return 0;
}

/* ---- the transaction ------------------------------------------------------------------- */

/* In tp, with its AG locked: the reverse-map record rfix[k] (as found, rfix_old[k]) takes
 * its settled offset. */
static int rmap_set_offset(struct rep_fmap *m, struct mfs_trans *tp, size_t k)
{
	const struct mfs_geom *g = &m->fs->geo;
	const struct orec *o = &m->rfix[k];
	uint32_t a = mfs_fsb_to_agno(g, o->fsb), agbno = mfs_fsb_to_agbno(g, o->fsb);
	struct mfs_btree_cur cur;
	struct mfs_rmap_key key;
	struct mfs_rmap_rec rec;
	struct mfs_buf *hbp;
	int stat = 0, err = mfs_read_agh(m->fs, a, &hbp);

	if (err)
		return rep_fail(m->r, err, "AG %u header unreadable: %s", a, strerror(-err));
	mfs_ag_cur_init(&cur, m->fs, tp, a, MFS_BT_RMAP, hbp);
	mfs_put32(key.startblock, agbno);
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_EQ, &rec, &stat);
	if (!err && (!stat || mfs_get64(rec.owner) != m->ino ||
		     mfs_get32(rec.blockcount) != o->len ||
		     mfs_get64(rec.offset) != m->rfix_old[k]))
		err = -EAGAIN;
	if (!err) {
		mfs_put64(rec.offset, o->offset);
		err = mfs_btree_update(&cur, &rec);
	}
	mfs_btree_cur_release(&cur);
	mfs_buf_put(hbp);
	if (err == -EAGAIN)
		return rep_fail(m->r, err, "AG %u: inode %llu's reverse-map record %u+%u changed "
				"during the rebuild", a, (unsigned long long)m->ino, agbno, o->len);
	return err ? rep_fail(m->r, err, "AG %u: correcting the file offset of inode %llu's "
			      "reverse-map record %u+%u: %s", a, (unsigned long long)m->ino,
			      agbno, o->len, strerror(-err)) : 0;
}

int rep_fmap_lock(struct rep_fmap *m, struct mfs_trans *tp, int all)
{
	const struct mfs_geom *g = &m->fs->geo;
	uint32_t iag = mfs_ino_to_agno(g, m->ino);
	uint64_t n = mfs_xfarray_count(m->O);
	uint8_t *want = mfs_calloc(g->agcount, 1);
	int err = 0;

	if (!want)
		return rep_fail(m->r, -ENOMEM, "no memory to plan the AG locks");
	want[iag] = 1;
	for (uint64_t i = 0; i < n && !err; i++) {
		struct orec o;

		err = mfs_xfarray_get(m->O, i, &o);
		if (err)
			err = rep_scratch_err(m->r, err, "reading the reverse mappings");
		else if (all || (!(o.offset & MFS_RMAP_ATTR_FORK) &&
				 (o.offset & MFS_RMAP_BMBT_BLOCK)))
			want[mfs_fsb_to_agno(g, o.fsb)] = 1;
	}
	for (size_t k = 0; k < m->nrfix; k++)
		want[mfs_fsb_to_agno(g, m->rfix[k].fsb)] = 1;
	for (uint32_t a = 0; a < g->agcount && !err; a++)
		if (want[a]) {
			err = mfs_trans_lock_ag(tp, a, 0);
			if (err)
				err = rep_fail(m->r, err, "could not lock AG %u: %s", a,
					       strerror(-err));
		}
	free(want);
	for (size_t k = 0; k < m->nrfix && !err; k++)
		err = rmap_set_offset(m, tp, k);
	return err;
}

enum { FREE_TREE, FREE_ATTR, FREE_ALL };

/* Free the records of O of one kind (FREE_*), dropping their buffers. */
static int free_recs(struct rep_fmap *m, struct mfs_trans *tp, int kind)
{
	uint64_t n = mfs_xfarray_count(m->O);

	for (uint64_t i = 0; i < n; i++) {
		struct orec o;
		int err = mfs_xfarray_get(m->O, i, &o);

		if (err)
			return rep_scratch_err(m->r, err, "reading the reverse mappings");
		if ((kind == FREE_TREE && ((o.offset & MFS_RMAP_ATTR_FORK) ||
					    !(o.offset & MFS_RMAP_BMBT_BLOCK))) ||
		    (kind == FREE_ATTR && !(o.offset & MFS_RMAP_ATTR_FORK)))
			continue;
		err = mfs_free_extent(tp, o.fsb, o.len, m->ino, o.offset);
		for (uint32_t b = 0; b < o.len && !err; b++)
			err = mfs_trans_forget(tp, o.fsb + b);
		if (err)
			return rep_fail(m->r, err, "inode %llu: freeing blocks %llu+%u: %s",
					(unsigned long long)m->ino, (unsigned long long)o.fsb, o.len,
					strerror(-err));
	}
	return 0;
}

int rep_fmap_free_all(struct rep_fmap *m, struct mfs_trans *tp)
{
	return free_recs(m, tp, FREE_ALL);
}

int rep_fmap_free_attr(struct rep_fmap *m, struct mfs_trans *tp)
{
	return free_recs(m, tp, FREE_ATTR);
}

static int load_recs(void *priv, void *recs, unsigned n)
{
	struct rep_fmap *m = priv;

	for (unsigned i = 0; i < n; i++) {
		int err = mfs_xfarray_get(m->E, m->next_new++,
					  (uint8_t *)recs + i * sizeof(struct mfs_bmbt_rec));

		if (err)
			return rep_scratch_err(m->r, err, "loading the new extent btree");
	}
	return 0;
}

static int claim_blk(void *priv, uint64_t *fsb)
{
	struct rep_fmap *m = priv;

	if (m->claimed >= m->nnew)
		return rep_fail(m->r, -EFSCORRUPTED, "internal: the bulk loader wants more blocks "
				"than planned");
	*fsb = m->newblk[m->claimed++];
	return 0;
}

/* nb new blocks for the extent btree, near the inode, owned by it as btree blocks. */
static int alloc_tree(struct rep_fmap *m, struct mfs_trans *tp, uint64_t nb)
{
	const struct mfs_geom *g = &m->fs->geo;

	m->newblk = mfs_calloc(nb ? nb : 1, sizeof(*m->newblk));
	if (!m->newblk)
		return rep_fail(m->r, -ENOMEM, "no memory for the new btree's block list");
	while (m->nnew < nb) {
		struct mfs_alloc_args a;
		int err;

		memset(&a, 0, sizeof(a));
		a.type = MFS_ALLOC_NEAR;
		a.target = m->nnew ? m->newblk[m->nnew - 1] + 1 : mfs_ino_to_fsb(g, m->ino);
		if (a.target >= g->dblocks)
			a.target = mfs_ino_to_fsb(g, m->ino);
		a.minlen = 1;
		a.maxlen = nb - m->nnew < g->agblocks ? (uint32_t)(nb - m->nnew) : g->agblocks;
		a.owner = m->ino;
		a.offset = MFS_RMAP_BMBT_BLOCK;
		err = mfs_alloc_extent(tp, &a);
		if (err)
			return rep_fail(m->r, err, "inode %llu: allocating %llu blocks for the new "
					"extent btree: %s", (unsigned long long)m->ino,
					(unsigned long long)nb, strerror(-err));
		for (uint32_t i = 0; i < a.len; i++)
			m->newblk[m->nnew++] = a.fsb + i;
	}
	return 0;
}

int rep_fmap_build(struct rep_fmap *m, struct mfs_trans *tp, uint32_t forksize, int may_btree,
		   struct rep_dfork *out)
{
	uint64_t n = mfs_xfarray_count(m->E);
	unsigned inl = forksize / (unsigned)sizeof(struct mfs_bmbt_rec);
	int err;

	memset(out, 0, sizeof(*out));
	if (forksize > sizeof(out->lit))
		return rep_fail(m->r, -EINVAL, "internal: data fork of %u bytes", forksize);
	if (n <= inl) {
		for (uint64_t i = 0; i < n; i++) {
			err = mfs_xfarray_get(m->E, i, out->lit + i * sizeof(struct mfs_bmbt_rec));
			if (err)
				return rep_scratch_err(m->r, err, "reading the extents");
		}
		out->format = MFS_FMT_EXTENTS;
		out->next = (uint32_t)n;
	} else {
		struct mfs_btree_root root;
		struct mfs_fork_root fr;
		struct mfs_bload bl;
		unsigned levels = 0;
		uint64_t nb = rep_geo_blocks(&mfs_bmbt_ops, m->fs->geo.blocksize, n, &levels);

		if (!may_btree || forksize < sizeof(fr))
			return rep_fail(m->r, -EFSCORRUPTED, "inode %llu: the reverse map gives it "
					"%llu extents, its data fork holds %u and cannot be a btree",
					(unsigned long long)m->ino, (unsigned long long)n, inl);
		if (nb == UINT64_MAX)
			return rep_fail(m->r, -EFBIG, "inode %llu: no btree holds %llu extents",
					(unsigned long long)m->ino, (unsigned long long)n);
		err = alloc_tree(m, tp, nb);
		if (err)
			return err;
		memset(&bl, 0, sizeof(bl));
		bl.ops = &mfs_bmbt_ops;
		bl.owner = m->ino;
		bl.nrecs = n;
		bl.get_recs = load_recs;
		bl.claim_block = claim_blk;
		bl.priv = m;
		m->next_new = 0;
		err = mfs_bload_build(m->fs, tp, &bl, &root);
		if (err)
			return rep_fail(m->r, err, "inode %llu: bulk loading the new extent btree: %s",
					(unsigned long long)m->ino, strerror(-err));
		memset(&fr, 0, sizeof(fr));
		mfs_put64(fr.rootblock, root.fsb);
		mfs_put32(fr.levels, root.levels);
		memcpy(out->lit, &fr, sizeof(fr));
		out->format = MFS_FMT_BTREE;
		out->next = root.levels;
		out->tree_blocks = nb;
	}
	m->r->rc->records += n;
	return free_recs(m, tp, FREE_TREE);
}

int rep_ino_finish(struct rep *r, struct mfs_trans *tp, uint64_t ino, int err)
{
	return rep_commit(r, tp, err, "the repair of inode %llu", (unsigned long long)ino);
}

/* ---- MFS_SCRUB_BMAP ------------------------------------------------------------------------ */

/* Has the inode an extent map in its data fork (or should it, by the reverse map)? */
static int has_map(const struct mfs_inode *ip, const struct rep_owned_sum *s)
{
	if (S_ISREG(ip->mode))
		return 1;
	return S_ISLNK(ip->mode) && (ip->dformat == MFS_FMT_EXTENTS || s->data_recs);
}

static int bmap_commit(struct rep *r, struct rep_fmap *m, struct mfs_inode *ip)
{
	const struct rep_owned_sum *s = &m->sum;
	uint32_t forksize = ip->forkoff ? ip->forkoff * 8u : ip->litsize;
	struct agrep lf;
	struct rep_dfork *df = NULL;
	struct mfs_trans *tp;
	int map = has_map(ip, s), err;

	/* The one transaction must fit the log (the new tree, the old one freed). */
	memset(&lf, 0, sizeof(lf));
	lf.r = r;
	lf.fs = r->fs;
	lf.agno = mfs_ino_to_agno(&r->fs->geo, ip->ino);
	if (map) {
		char what[64];
		uint64_t nb = rep_geo_blocks(&mfs_bmbt_ops, r->fs->geo.blocksize,
					     mfs_xfarray_count(m->E), NULL);

		snprintf(what, sizeof(what), "extent map of inode %llu",
			 (unsigned long long)ip->ino);
		err = rep_log_fits(&lf, nb == UINT64_MAX ? 0 : nb, s->tree_blocks, what);
		if (err)
			return err;
	} else if (ip->nblocks == s->data_blocks + s->tree_blocks + s->attr_blocks) {
		return 0;            /* no map, and the count is right: nothing to do */
	}
	err = mfs_trans_alloc(r->fs, &tp);
	if (err)
		return rep_fail(r, err, "no memory for the repair's transaction");
	err = rep_fmap_lock(m, tp, 0);
	if (!err && map) {
		df = mfs_malloc(sizeof(*df));
		err = df ? rep_fmap_build(m, tp, forksize, S_ISREG(ip->mode), df) :
		      rep_fail(r, -ENOMEM, "no memory for the new data fork");
	}
	if (!err) {
		if (map) {
			memset(ip->lit, 0, forksize);
			memcpy(ip->lit, df->lit, forksize);
			ip->dformat = df->format;
			ip->dnext = df->next;
			ip->nblocks = s->data_blocks + df->tree_blocks + s->attr_blocks;
		} else {
			ip->nblocks = s->data_blocks + s->tree_blocks + s->attr_blocks;
		}
		err = mfs_inode_log(tp, ip);
		if (err)
			rep_fail(r, err, "inode %llu: logging the rebuilt inode: %s",
				 (unsigned long long)ip->ino, strerror(-err));
	}
	free(df);
	err = rep_ino_finish(r, tp, ip->ino, err);
	if (err && mfs_inode_reload(ip))
		mfs_inode_invalidate(r->fs, ip->ino);
	return err;
}

int rep_bmap(struct rep *r)
{
	struct mfs_inode *ip;
	struct rep_fmap *m = NULL;
	int err;

	err = mfs_iget_locked(r->fs, r->rc->ino, MFS_IGET_UNTRUSTED, 1, &ip);
	if (err == -ENOENT)
		return rep_fail(r, err, "inode %llu is free", (unsigned long long)r->rc->ino);
	if (err)
		return rep_fail(r, err, "inode %llu cannot be loaded (%s): repair the inode record "
				"first", (unsigned long long)r->rc->ino, strerror(-err));
	/* A "regular file" whose btree root is a name-btree block of its own is a directory
	 * whose mode is the damage: an extent map rebuilt from the reverse map (no data
	 * extents) would free its names.  The inode record repair tells the type from the fork
	 * and gives it back; until then nothing is touched here. */
	if (S_ISREG(ip->mode) && rep_fork_is_names_btree(r->fs, ip))
		err = rep_fail(r, -EFSCORRUPTED, "inode %llu: its mode says regular file, but its "
			       "data fork is a directory's name btree: repair the inode record "
			       "first; nothing was changed", (unsigned long long)ip->ino);
	if (!err)
		err = rep_fmap_gather(r, ip->ino, ip, &m);
	if (!err)
		err = bmap_commit(r, m, ip);
	rep_fmap_free(m);
	pthread_rwlock_unlock(&ip->lock);
	if (!err)
		rep_changed(r, ip->ino);        /* its block count, as the kernel caches it */
	mfs_iput(ip);
	return err;
}
