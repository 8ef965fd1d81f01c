/*
 * repair_agbtree.c — rebuilders of an AG's btrees: the two free-space trees (by block and
 * by length) from the reverse map, and the inode btree from the inode chunks the reverse
 * map names and the modes of their inodes; and the helpers every AG rebuild shares
 * (repair_ag.h; the reverse map's and the free list's rebuilders are repair_rmapbt.c and
 * repair_agfl.c).
 *
 * Both run under the AG lock for their whole length (allocations in this AG wait, other AGs
 * go on; readers of files never take it) and inside ONE transaction: the new trees (as
 * ordered new blocks where they go into free space), the AG header's roots, levels and
 * counters, the reverse-map changes for the blocks that change
 * hands and the freeing of the old blocks are committed together, or — on any error,
 * pressure, cancel — the transaction is cancelled and every block is as it was.  But for
 * one part: the free-space rebuild written as ordered new blocks records its new trees'
 * blocks in the reverse map and frees its old trees' blocks (AG-owned through the commit)
 * after it, under the same lock, in bounded transactions (repair_reap.c): what it pins
 * then does not grow with the AG.
 *
 * Free-space trees: where the new blocks come from
 * -------------------------------------------------
 * The allocator cannot be used: its trees are what is being rebuilt.  The reverse map is
 * trusted (it is verified first); MFS_OWN_AG in it covers three kinds of blocks: the
 * reverse map's own blocks (R), the AGFL stock (L), and the old by-block and by-length
 * tree blocks, whatever state those trees are in (O = OWN_AG - R - L).  The space no record
 * covers is free (F).  After the rebuild the free space is
 *
 *         free' = F + O - N
 *
 * where N are the blocks of the new trees.  N is taken from F's longest extents (whole, the
 * last one's end; those get an MFS_OWN_AG record, one per piece: the fewest pieces), so that
 * the new trees are written in place, unlogged, while the old ones are still what the disk
 * points at (ordered new blocks, trans.h): the commit logs only the header and the free
 * list, whatever the size of the trees, and holds no copy of them in memory.  N's pieces
 * are many in a fragmented AG (one record each, each changing a reverse-map leaf): their
 * records go in after the commit, with the AG marked and still locked, in bounded
 * transactions (abt_record, repair_reap.c), and their splits, more than the free list
 * holds at once, are fed from O's last blocks (AG-owned already, garbage once the new trees
 * are committed).  Then the reap frees the rest of O: free' is F - N at the commit, and O's
 * blocks join it batch by batch.  So what the rebuild pins in memory does not grow with
 * the AG, and an abort (before the commit) still leaves every block as it was.
 * Only when F is too small for the trees, or O for the splits' feeding, is N taken
 * from O first (those blocks stay MFS_OWN_AG: no reverse-map change; they are then joined
 * and logged, since the old trees' blocks must not be overwritten before the commit), and
 * the rest of O has its MFS_OWN_AG record cut out and joins free' in the same transaction
 * (but up to a few blocks, which go onto the AGFL: MFS_OWN_AG already).  The size of N
 * depends on the record count of free', which depends on N: the plan is iterated until
 * the geometry stops changing (in practice once or twice; blocks of a last overshoot go
 * onto the AGFL too, or are reaped).  Reverse-map changes take their split blocks from the
 * AGFL like any change of that tree.
 *
 * Inode btree
 * -----------
 * Each MFS_OWN_INODES extent of the reverse map is a whole number of aligned chunks; a
 * chunk's free mask has bit i set when inode i has mode 0 (inode cluster buffers read under
 * the AG lock, which every transaction that logs an inode holds: committed state).  The new
 * tree's blocks are the old tree's (MFS_OWN_INOBT) first; more are allocated with the
 * ordinary allocator in this AG, and old blocks left over are freed with it — all in the
 * same transaction.
 */
#include "repair_ag.h"

#include "ag.h"
#include "alloc.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "journal.h"
#include "log.h"
#include "mem.h"
#include "trans.h"
#include "verify.h"

#include <stdlib.h>
#include <string.h>

#define PLAN_ROUNDS     8
#define POLL_RECS       4096u




struct mfs_agh *rep_agh(const struct agrep *ar)
{
	return ar->agh_bp->data;
}

static int own_index(uint64_t owner)
{
	return owner == MFS_OWN_AG ? OWN_I_AG : owner == MFS_OWN_INODES ? OWN_I_INODES :
	       owner == MFS_OWN_INOBT ? OWN_I_INOBT : -1;
}

static int survey_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_rmap_rec *rr = rec;
	struct agrep *ar = priv;
	int i = own_index(mfs_get64(rr->owner));

	if (i >= 0)
		ar->own_blocks[i] += mfs_get32(rr->blockcount);
	return ++ar->seen % POLL_RECS ? 0 : rep_poll(ar->r);
}

/*
 * The fields of the AG header a free-space rebuild reads: its identity, the reverse map's
 * root and the free list's indices.  The counters it rewrites (freeblks, longest,
 * btreeblks) and the free-space roots it replaces may be wrong: that is what it repairs.
 */
static int agh_usable(const struct agrep *ar)
{
	const struct mfs_agh *agh = rep_agh(ar);
	uint32_t root = mfs_get32(agh->roots[MFS_BT_RMAP]);
	uint32_t levels = mfs_get32(agh->levels[MFS_BT_RMAP]);

	return mfs_get32(agh->seqno) == ar->agno && mfs_get32(agh->length) == ar->aglen &&
	       root >= MFS_AG_FIXED_BLOCKS && root < ar->aglen && levels >= 1 &&
	       levels <= MFS_BTREE_MAXLEVELS &&
	       (ar->fl_rewritten || (mfs_get32(agh->fl_first) < MFS_AGFL_SIZE_MAX &&
				     mfs_get32(agh->fl_count) <= MFS_AGFL_SIZE_MAX));
}

/* Lock the AG, read its header, verify the reverse map and count what it holds.
 * counters_only: a header whose only faults are what the rebuild rewrites is accepted (2:
 * the free list's indices too); negative: the reverse map is not looked at (its own
 * rebuild). */
int rep_ag_begin(struct rep *r, struct agrep *ar, int counters_only)
{
	struct mfs_blk_expect e;
	struct mfs_btree_cur cur;
	int err;

	memset(ar, 0, sizeof(*ar));
	/* a stopped journal (rep_reap_kill): the AG may be one whose trees and reverse map
	 * disagree, and nothing could commit anyway */
	if (r->fs->log && (err = mfs_journal_error(r->fs->log)))
		return rep_fail(r, err, "the journal is stopped (%s): nothing can be repaired "
				"until the filesystem is mounted again", strerror(-err));
	ar->fl_rewritten = counters_only == 2;
	ar->r = r;
	ar->fs = r->fs;
	ar->agno = r->rc->agno;
	ar->aglen = mfs_ag_length(&ar->fs->geo, ar->agno);
	err = mfs_trans_alloc(ar->fs, &ar->tp);
	if (err)
		return rep_fail(r, err, "no memory for the repair's transaction");
	/* the leaves it changes are not copied (a cancel re-reads them), and the old trees'
	 * blocks it frees are kept busy as one span (it allocates no file data): trans.h */
	mfs_trans_reread(ar->tp);
	mfs_trans_busy_hull(ar->tp);
	/* The free-space, reverse-map and free-list rebuilds change the AG's space only: its
	 * space lock, so that its inodes' changes go on (fs.h); the inode btree's, both. */
	mfs_trans_hold_long(ar->tp);     /* others do not queue behind it holding theirs */
	err = mfs_trans_lock_agl(ar->tp, ar->agno, counters_only ? MFS_AGL_SPACE : MFS_AGL_ALL,
				 0);
	if (err)
		return rep_fail(r, err, "could not lock AG %u: %s", ar->agno, strerror(-err));
	/* mfs_read_agh() without its field check, which is made here */
	mfs_expect_agh(ar->fs, ar->agno, &e);
	err = mfs_buf_read(ar->fs->bc, mfs_agbno_to_fsb(&ar->fs->geo, ar->agno, MFS_AGH_AGBNO),
			   &e, &ar->agh_bp);
	if (err)
		ar->agh_bp = NULL;
	if (!err && mfs_agh_check(ar->fs, ar->agno, rep_agh(ar))) {
		if (!(counters_only > 0 && agh_usable(ar)))
			err = -EFSCORRUPTED;
	} else if (!err) {               /* what statfs gives while the rebuild runs */
		mfs_ag_publish_counts(ar->fs, ar->agno, rep_agh(ar));
	}
	if (err)
		return rep_fail(r, err, "AG %u header is damaged (%s): repair the AG header first",
				ar->agno, strerror(-err));
	if (counters_only < 0)
		return 0;                    /* the reverse map is what will be rebuilt */
	mfs_ag_cur_init(&cur, ar->fs, NULL, ar->agno, MFS_BT_RMAP, ar->agh_bp);
	cur.flags = MFS_BTREE_CUR_ONCE;
	err = mfs_btree_verify(&cur, &ar->nrmap, &ar->rmap_blocks);
	if (!err)
		err = mfs_btree_query_range(&cur, NULL, NULL, survey_fn, ar);
	mfs_btree_cur_release(&cur);
	if (err == -ECANCELED)
		return err;
	if (err)
		return rep_fail(r, err, "AG %u reverse map is damaged (%s): this rebuild trusts it; "
				"rebuild the reverse map first", ar->agno, strerror(-err));
	return 0;
}

void rep_ag_cancel(struct agrep *ar)
{
	if (ar->agh_bp)
		mfs_buf_put(ar->agh_bp);
	ar->agh_bp = NULL;
	if (ar->tp)
		mfs_trans_cancel(ar->tp);
	ar->tp = NULL;
}

/* The commit; marked for a reap (rep_reap_mark), the AG stays locked in ar->tp anew. */
static int ag_commit(struct agrep *ar)
{
	int err;

	if (ar->reap) {
		err = mfs_trans_roll(&ar->tp, MFS_TRANS_ASYNC);
	} else {
		err = mfs_trans_commit(ar->tp);
		ar->tp = NULL;
	}
	mfs_buf_put(ar->agh_bp);
	ar->agh_bp = NULL;
	if (err)
		return rep_fail(ar->r, err, "AG %u: committing the rebuilt trees failed: %s "
				"(nothing changed unless the journal reported an I/O error)",
				ar->agno, strerror(-err));
	return 0;
}

/*
 * The rebuild commits in one journal transaction, which must fit in the log: refuse before
 * building anything when it cannot (the journal would refuse the commit anyway, after all
 * the work).  nimg: blocks the transaction logs (the new trees unless they are ordered new
 * blocks, the reverse-map leaves it touches; a margin is added for the header and the free
 * list), nrev: blocks it frees.
 * The record size is estimated on the high side (a 56-byte tag per block).
 */
int rep_log_fits(struct agrep *ar, uint64_t nimg, uint64_t nrev, const char *what)
{
	const struct mfs_geom *g = &ar->fs->geo;
	uint64_t per_desc = (g->blocksize - 64) / 56, need, room;

	if (!ar->fs->log)
		return 0;
	nimg += 64;
	need = nimg + (nimg + nrev) / per_desc + 2;
	room = g->logblocks > 2 ? g->logblocks - 2 : 0;
	if (need <= room)
		return 0;
	return rep_fail(ar->r, -ENOSPC, "AG %u: rebuilding the %s takes one journal transaction "
			"of about %llu blocks, and the journal holds %llu: nothing was changed; "
			"a filesystem made with a larger journal (mkfs.mendfs -J) can rebuild it",
			ar->agno, what, (unsigned long long)need, (unsigned long long)room);
}

/* The last chance to stop (test hook, pressure, cancel), then the one commit. */
int rep_ag_finish(struct agrep *ar)
{
	int err = rep_hook(ar->r, MFS_REPAIR_AT_BUILT);

	if (!err)
		err = rep_poll(ar->r);
	return err ? err : ag_commit(ar);
}

uint64_t rep_geo_blocks(const struct mfs_btree_ops *ops, uint32_t bs, uint64_t n,
			   unsigned *levels)
{
	uint64_t nb = 0;
	unsigned lv = 0;

	if (mfs_bload_geometry(ops, bs, n, 0, &nb, &lv))
		return UINT64_MAX;
	if (levels)
		*levels = lv;
	return nb;
}

/* Join a block the new tree will be written into, so a cancel restores its bytes. */
int rep_join_block(struct agrep *ar, uint32_t agbno)
{
	struct mfs_buf *bp;
	int err = mfs_buf_read(ar->fs->bc, mfs_agbno_to_fsb(&ar->fs->geo, ar->agno, agbno),
			       NULL, &bp);

	if (err)
		return rep_fail(ar->r, err, "AG %u: block %u for the new tree unreadable: %s",
				ar->agno, agbno, strerror(-err));
	err = mfs_trans_modify(ar->tp, bp);
	mfs_buf_put(bp);
	return err ? rep_fail(ar->r, err, "no memory to join block %u", agbno) : 0;
}

/* ---- extents in scratch --------------------------------------------------------------------- */

int rep_ext_pieces(struct agrep *ar, struct mfs_xfarray *a, uint64_t skip, uint64_t limit,
		      rep_piece_fn fn, void *priv)
{
	uint64_t n = mfs_xfarray_count(a);
	struct rext e;
	int err;

	for (uint64_t i = 0; i < n && limit; i++) {
		uint32_t s, l;

		err = mfs_xfarray_get(a, i, &e);
		if (err)
			return rep_scratch_err(ar->r, err, "reading extents");
		if (skip >= e.len) {
			skip -= e.len;
			continue;
		}
		s = e.start + (uint32_t)skip;
		l = e.len - (uint32_t)skip;
		skip = 0;
		if (l > limit)
			l = (uint32_t)limit;
		limit -= l;
		err = fn(ar, s, l, priv);
		if (err)
			return err;
	}
	return 0;
}

uint64_t rep_ext_blocks(struct mfs_xfarray *a, uint64_t *err_out)
{
	uint64_t n = mfs_xfarray_count(a), t = 0;
	struct rext e;

	for (uint64_t i = 0; i < n; i++) {
		int err = mfs_xfarray_get(a, i, &e);

		if (err) {
			*err_out = (uint64_t)-err;
			return 0;
		}
		t += e.len;
	}
	return t;
}

/* One extent stream of a merge: the array's extents after the first `skip` blocks, or
 * without the pieces of `cut` (each the end of one extent, in block order). */
struct stream {
	struct mfs_xfarray *a;
	uint64_t i, n, skip;
	struct rext cur;
	int have;
	uint64_t left;               /* blocks still to give (UINT64_MAX: all) */
	const struct rep_addset *cut;
	uint64_t ci;                 /* the next piece of cut, */
	struct rext cutcur;          /* read when have_cut */
	int have_cut;
};

static int stream_next(struct stream *s)
{
	s->have = 0;
	while (s->i < s->n && s->left) {
		int err = mfs_xfarray_get(s->a, s->i++, &s->cur);

		if (err)
			return err;
		if (s->skip >= s->cur.len) {
			s->skip -= s->cur.len;
			continue;
		}
		s->cur.start += (uint32_t)s->skip;
		s->cur.len -= (uint32_t)s->skip;
		s->skip = 0;
		if (s->cut && s->ci < s->cut->n && !s->have_cut) {
			err = rep_addset_get(s->cut, s->ci, &s->cutcur);
			if (err)
				return err;
			s->have_cut = 1;
		}
		if (s->have_cut && s->cutcur.start >= s->cur.start &&
		    s->cutcur.start - s->cur.start < s->cur.len) {
			s->cur.len = s->cutcur.start - s->cur.start;
			s->ci++;
			s->have_cut = 0;
			if (!s->cur.len)
				continue;
		}
		if (s->cur.len > s->left)
			s->cur.len = (uint32_t)s->left;
		s->left -= s->cur.len;
		s->have = 1;
		break;
	}
	return 0;
}

struct free_sum {
	uint64_t nrecs, blocks;
	uint32_t longest;
};

/* The free extents F + O - N (N: the first take_o blocks of O and all after the o_keep
 * that follow them (UINT64_MAX: none), and the first take_f of F or, cut not NULL, the
 * pieces of cut), merged, counted and (out not NULL) appended to out in block order. */
static int free_walk(struct agrep *ar, struct mfs_xfarray *F, struct mfs_xfarray *O,
		     uint64_t take_o, uint64_t o_keep, uint64_t take_f,
		     const struct rep_addset *cut, struct mfs_xfarray *out, struct free_sum *fsum)
{
	struct stream sf = { F, 0, mfs_xfarray_count(F), cut ? 0 : take_f, { 0, 0 }, 0,
			     UINT64_MAX, cut, 0, { 0, 0 }, 0 };
	struct stream so = { O, 0, mfs_xfarray_count(O), take_o, { 0, 0 }, 0, o_keep,
			     NULL, 0, { 0, 0 }, 0 };
	struct rext pend = { 0, 0 };
	int err = stream_next(&sf);

	if (!err)
		err = stream_next(&so);
	memset(fsum, 0, sizeof(*fsum));
	while (!err && (sf.have || so.have)) {
		struct stream *s = !so.have || (sf.have && sf.cur.start < so.cur.start) ? &sf : &so;

		if (pend.len && (uint64_t)pend.start + pend.len > s->cur.start)
			return rep_fail(ar->r, -EFSCORRUPTED, "AG %u: free extent %u+%u overlaps "
					"%u+%u while merging", ar->agno, pend.start, pend.len,
					s->cur.start, s->cur.len);
		if (pend.len && pend.start + pend.len == s->cur.start) {
			pend.len += s->cur.len;
		} else {
			if (pend.len) {
				fsum->nrecs++;
				if (out)
					err = mfs_xfarray_append(out, &pend, NULL);
			}
			pend = s->cur;
		}
		fsum->blocks += s->cur.len;
		if (pend.len > fsum->longest)
			fsum->longest = pend.len;
		if (!err)
			err = stream_next(s);
	}
	if (!err && pend.len) {
		fsum->nrecs++;
		if (out)
			err = mfs_xfarray_append(out, &pend, NULL);
	}
	return err ? rep_scratch_err(ar->r, err, "merging free extents") : 0;
}

/* ---- taking the longest free extents ------------------------------------------------------ */

int rep_addset_push(struct agrep *ar, struct rep_addset *a, uint32_t s, uint32_t l)
{
	if (a->x) {
		struct rext e = { s, l };
		int err = mfs_xfarray_append(a->x, &e, NULL);

		if (err)
			return rep_scratch_err(ar->r, err, "listing the new tree's pieces");
		a->n++;
		return 0;
	}
	if (a->n == a->cap) {
		uint64_t nc = a->cap ? 2 * a->cap : 64;
		struct rext *nv = mfs_realloc(a->v, nc * sizeof(*nv));

		if (!nv)
			return rep_fail(ar->r, -ENOMEM, "no memory for the new tree's block list");
		a->v = nv;
		a->cap = nc;
	}
	a->v[a->n++] = (struct rext){ s, l };
	return 0;
}

int rep_addset_get(const struct rep_addset *a, uint64_t i, struct rext *e)
{
	if (a->x)
		return mfs_xfarray_get(a->x, i, e);
	*e = a->v[i];
	return 0;
}

void rep_addset_clear(struct rep_addset *a)
{
	if (a->x)
		mfs_xfarray_clear(a->x);
	a->n = 0;
}

int rep_lh_init(struct rep *r, struct rep_lenhist *h)
{
	memset(h, 0, sizeof(*h));
	h->small = mfs_calloc(REP_LH_SMALL, sizeof(*h->small));
	return h->small ? 0 : rep_fail(r, -ENOMEM, "no memory for the free extents' lengths");
}

int rep_lh_add(struct agrep *ar, struct rep_lenhist *h, uint32_t len)
{
	h->blocks += len;
	if (len < REP_LH_SMALL) {
		h->small[len]++;
		return 0;
	}
	if (h->nbig == h->capbig) {
		uint64_t nc = h->capbig ? 2 * h->capbig : 64;
		uint32_t *nv = mfs_realloc(h->big, nc * sizeof(*nv));

		if (!nv)
			return rep_fail(ar->r, -ENOMEM, "no memory for the free extents' lengths");
		h->big = nv;
		h->capbig = nc;
	}
	h->big[h->nbig++] = len;
	return 0;
}

static int cmp_u32_desc(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x > y ? -1 : x < y;
}

void rep_lh_sort(struct rep_lenhist *h)
{
	if (h->nbig)
		qsort(h->big, h->nbig, sizeof(*h->big), cmp_u32_desc);
}

void rep_lh_free(struct rep_lenhist *h)
{
	free(h->small);
	free(h->big);
	memset(h, 0, sizeof(*h));
}

int rep_lh_pick(const struct rep_lenhist *h, uint64_t want, uint32_t *L, uint64_t *above,
		uint64_t *pieces)
{
	uint64_t sum = 0, n = 0;

	*L = 0;
	*above = *pieces = 0;
	if (!want)
		return 0;
	for (uint64_t i = 0; i < h->nbig; i++) {          /* sorted longest first */
		if (sum + h->big[i] >= want) {
			*L = h->big[i];
			*above = sum;
			*pieces = n + 1;
			/* ties: the others of this length are taken only as needed */
			for (uint64_t j = i; j > 0 && h->big[j - 1] == *L; j--) {
				*above -= *L;
				(*pieces)--;
			}
			*pieces += (want - *above + *L - 1) / *L - 1;
			return 0;
		}
		sum += h->big[i];
		n++;
	}
	for (uint32_t len = REP_LH_SMALL - 1; len > 0; len--) {
		uint64_t c = h->small[len];

		if (sum + c * len >= want) {
			*L = len;
			*above = sum;
			*pieces = n + (want - sum + len - 1) / len;
			return 0;
		}
		sum += c * len;
		n += c;
	}
	return -ENOSPC;
}

int rep_pick_free(struct agrep *ar, struct mfs_xfarray *F, const struct rep_lenhist *h,
		  uint64_t want, struct rep_addset *N, const char *what)
{
	uint64_t nf = mfs_xfarray_count(F), above, pieces, atL;
	uint32_t L;
	int err = rep_lh_pick(h, want, &L, &above, &pieces);

	rep_addset_clear(N);
	if (err)
		return rep_fail(ar->r, -ENOSPC, "AG %u: %llu free blocks are too few for the %s's "
				"%llu", ar->agno, (unsigned long long)h->blocks, what,
				(unsigned long long)want);
	atL = want - above;
	for (uint64_t i = 0; i < nf && want; i++) {
		struct rext e;

		err = mfs_xfarray_get(F, i, &e);
		if (err)
			return rep_scratch_err(ar->r, err, "choosing the new tree's blocks");
		if (e.len > L) {
			err = rep_addset_push(ar, N, e.start, e.len);
			want -= e.len;
		} else if (e.len == L && atL) {
			uint32_t l = atL < L ? (uint32_t)atL : L;

			err = rep_addset_push(ar, N, e.start + e.len - l, l);
			atL -= l;
			want -= l;
		}
		if (err)
			return err;
	}
	return want ? rep_fail(ar->r, -EFSCORRUPTED, "internal: the free extents' lengths and "
			       "the free extents disagree") : 0;
}

/* ---- gathering from the reverse map ---------------------------------------------------------- */
struct gather {
	struct agrep *ar;
	struct mfs_xfarray *S, *F, *O;     /* rmapbt+AGFL blocks (sorted), free, old trees */
	struct rep_lenhist *h;             /* F's lengths */
	uint64_t sidx, ns;
	uint32_t scur;                     /* S[sidx], UINT32_MAX past the end */
	uint32_t next;                     /* first block after the last record */
};

static int s_load(struct gather *g)
{
	int err;

	g->scur = UINT32_MAX;
	if (g->sidx >= g->ns)
		return 0;
	err = mfs_xfarray_get(g->S, g->sidx, &g->scur);
	return err ? rep_scratch_err(g->ar->r, err, "reading the tree blocks") : 0;
}

int rep_add_ext(struct agrep *ar, struct mfs_xfarray *a, uint32_t s, uint32_t l)
{
	struct rext e = { s, l };
	int err = mfs_xfarray_append(a, &e, NULL);

	return err ? rep_scratch_err(ar->r, err, "gathering extents") : 0;
}

static int s_block_fn(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	struct gather *g = priv;
	uint32_t b = mfs_fsb_to_agbno(&cur->fs->geo, fsb);
	int err = mfs_xfarray_append(g->S, &b, NULL);

	return err ? rep_scratch_err(g->ar->r, err, "listing the reverse map's blocks") : 0;
}

int rep_cmp_u32(const void *a, const void *b, void *priv)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y;
}

static int cmp_by_len(const void *a, const void *b, void *priv)
{
	const struct rext *x = a, *y = b;

	if (x->len != y->len)
		return x->len < y->len ? -1 : 1;
	return x->start < y->start ? -1 : x->start > y->start;
}

/* S = the reverse map's own blocks and the AGFL stock, sorted, each once.  The reverse map
 * was verified whole under this AG lock (rep_ag_begin) and has not changed since: its
 * blocks are named from its nodes (mfs_btree_visit_trusted: leaves not read, no set of the
 * blocks seen), no more than verify counted; a block named twice is found in the sorted S
 * below, as a block on the free list and in the tree is. */
static int gather_s(struct gather *g)
{
	struct agrep *ar = g->ar;
	struct mfs_btree_cur cur;
	struct mfs_buf *bp;
	const struct mfs_agh *agh = rep_agh(ar);
	uint32_t first = mfs_get32(agh->fl_first), count = mfs_get32(agh->fl_count), prev = 0;
	int err;

	mfs_ag_cur_init(&cur, ar->fs, NULL, ar->agno, MFS_BT_RMAP, ar->agh_bp);
	cur.flags = MFS_BTREE_CUR_ONCE;
	err = mfs_btree_visit_trusted(&cur, ar->rmap_blocks, s_block_fn, g, NULL);
	mfs_btree_cur_release(&cur);
	if (mfs_is_corruption(err))
		return rep_fail(ar->r, err, "AG %u reverse map changed since it was checked (%s)",
				ar->agno, strerror(-err));
	if (err)
		return err;
	err = mfs_read_agfl(ar->fs, ar->agno, &bp);
	if (err)
		return rep_fail(ar->r, err, "AG %u free list unreadable (%s): repair it first",
				ar->agno, strerror(-err));
	for (uint32_t i = 0; i < count && !err; i++) {
		const struct mfs_agfl *fl = bp->data;
		uint32_t b = mfs_get32(fl->bno[(first + i) % MFS_AGFL_SIZE_MAX]);

		if (b < MFS_AG_FIXED_BLOCKS || b >= ar->aglen)
			err = rep_fail(ar->r, -EFSCORRUPTED, "AG %u free list slot %u holds block "
				       "%u, outside the AG: repair the free list first", ar->agno,
				       (first + i) % MFS_AGFL_SIZE_MAX, b);
		else
			err = mfs_xfarray_append(g->S, &b, NULL);
	}
	mfs_buf_put(bp);
	if (err)
		return err < 0 && err != -EFSCORRUPTED ?
		       rep_scratch_err(ar->r, err, "listing the free list") : err;
	err = rep_sort(ar->r, g->S, rep_cmp_u32, "sorting the reverse map's blocks");
	if (err)
		return err;
	g->ns = mfs_xfarray_count(g->S);
	for (uint64_t i = 0; i < g->ns; i++) {
		uint32_t b;

		err = mfs_xfarray_get(g->S, i, &b);
		if (err)
			return rep_scratch_err(ar->r, err, "reading the tree blocks");
		if (i && b == prev)
			return rep_fail(ar->r, -EFSCORRUPTED, "AG %u: block %u is both in the "
					"reverse map btree and on the free list (or twice in one): "
					"repair the free list first", ar->agno, b);
		prev = b;
	}
	g->sidx = 0;
	return s_load(g);
}

static int gather_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_rmap_rec *rr = rec;
	struct gather *g = priv;
	struct agrep *ar = g->ar;
	uint32_t s = mfs_get32(rr->startblock), l = mfs_get32(rr->blockcount), end = s + l;
	uint64_t owner = mfs_get64(rr->owner);
	int err = 0;

	if (++ar->seen % POLL_RECS == 0 && (err = rep_poll(ar->r)))
		return err;
	if (s < g->next)
		return rep_fail(ar->r, -EFSCORRUPTED, "AG %u reverse map: record %u+%u overlaps "
				"the one before it (ending at %u)", ar->agno, s, l, g->next);
	if (s > g->next) {
		if (g->next < MFS_AG_FIXED_BLOCKS)
			return rep_fail(ar->r, -EFSCORRUPTED, "AG %u reverse map: the AG headers "
					"are not owned", ar->agno);
		err = rep_add_ext(ar, g->F, g->next, s - g->next);
		if (!err)
			err = rep_lh_add(ar, g->h, s - g->next);
		if (err)
			return err;
	}
	g->next = end;
	if (g->scur < s || (owner != MFS_OWN_AG && g->scur < end))
		return rep_fail(ar->r, -EFSCORRUPTED, "AG %u: block %u of the reverse map btree or "
				"free list is not owned by the AG in the reverse map", ar->agno,
				g->scur);
	if (owner != MFS_OWN_AG)
		return 0;
	for (uint32_t pos = s; pos < end && !err;) {
		if (g->scur < end) {
			if (g->scur > pos)
				err = rep_add_ext(ar, g->O, pos, g->scur - pos);
			pos = g->scur + 1;
			g->sidx++;
			if (!err)
				err = s_load(g);
		} else {
			err = rep_add_ext(ar, g->O, pos, end - pos);
			pos = end;
		}
	}
	return err;
}

static int gather_free(struct gather *g)
{
	struct agrep *ar = g->ar;
	struct mfs_btree_cur cur;
	int err;

	g->next = 0;
	ar->seen = 0;
	mfs_ag_cur_init(&cur, ar->fs, NULL, ar->agno, MFS_BT_RMAP, ar->agh_bp);
	cur.flags = MFS_BTREE_CUR_ONCE;
	err = mfs_btree_query_range(&cur, NULL, NULL, gather_fn, g);
	mfs_btree_cur_release(&cur);
	if (err)
		return err == -EFSCORRUPTED || err == -ECANCELED ? err :
		       rep_fail(ar->r, err, "AG %u: walking the reverse map: %s", ar->agno,
				strerror(-err));
	if (g->next < ar->aglen) {
		if (g->next < MFS_AG_FIXED_BLOCKS)
			return rep_fail(ar->r, -EFSCORRUPTED, "AG %u reverse map: the AG headers "
					"are not owned", ar->agno);
		err = rep_add_ext(ar, g->F, g->next, ar->aglen - g->next);
		if (!err)
			err = rep_lh_add(ar, g->h, ar->aglen - g->next);
		if (err)
			return err;
	}
	if (g->sidx < g->ns)
		return rep_fail(ar->r, -EFSCORRUPTED, "AG %u: block %u of the reverse map btree or "
				"free list lies in space the reverse map says is free", ar->agno,
				g->scur);
	return 0;
}

/* ---- reverse-map changes for blocks that change hands ------------------------------------------ */
static void rrec_fill(struct mfs_rmap_rec *r, uint32_t s, uint32_t l)
{
	memset(r, 0, sizeof(*r));
	mfs_put32(r->startblock, s);
	mfs_put32(r->blockcount, l);
	mfs_put64(r->owner, MFS_OWN_AG);
}

int rep_rmap_cut(struct agrep *ar, uint32_t s, uint32_t l, void *priv)
{
	struct mfs_btree_cur cur;
	struct mfs_rmap_key key;
	struct mfs_rmap_rec rec, n;
	uint32_t rs, re, end = s + l;
	int stat, err;

	mfs_ag_cur_init(&cur, ar->fs, ar->tp, ar->agno, MFS_BT_RMAP, ar->agh_bp);
	mfs_put32(key.startblock, s);
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_LE, &rec, &stat);
	if (err)
		goto out;
	rs = mfs_get32(rec.startblock);
	re = rs + mfs_get32(rec.blockcount);
	if (!stat || re < end || mfs_get64(rec.owner) != MFS_OWN_AG) {
		err = rep_fail(ar->r, -EFSCORRUPTED, "AG %u reverse map: no AG-owned record covers "
			       "old tree blocks %u+%u", ar->agno, s, l);
		goto out;
	}
	if (rs == s && re == end) {
		err = mfs_btree_delete(&cur);
	} else if (rs == s) {
		rrec_fill(&n, end, re - end);
		err = mfs_btree_update(&cur, &n);
	} else {
		rrec_fill(&n, rs, s - rs);
		err = mfs_btree_update(&cur, &n);
		if (!err && re > end) {
			rrec_fill(&n, end, re - end);
			err = mfs_btree_insert(&cur, &n);
		}
	}
out:
	mfs_btree_cur_release(&cur);
	return err;
}

/* [s, s+l) (free until now) becomes MFS_OWN_AG, merged with AG-owned neighbours. */
static int rmap_join(struct agrep *ar, uint32_t s, uint32_t l, void *priv)
{
	struct mfs_btree_cur cur;
	struct mfs_rmap_key key;
	struct mfs_rmap_rec lrec, rrec, n;
	uint32_t end = s + l, ls = 0, rl = 0;
	int lst, rst, left = 0, right = 0, err;

	mfs_ag_cur_init(&cur, ar->fs, ar->tp, ar->agno, MFS_BT_RMAP, ar->agh_bp);
	mfs_put32(key.startblock, s);
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_LE, &lrec, &lst);
	if (!err)
		err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_GE, &rrec, &rst);
	if (err)
		goto out;
	if (lst) {
		ls = mfs_get32(lrec.startblock);
		left = mfs_get64(lrec.owner) == MFS_OWN_AG &&
		       ls + mfs_get32(lrec.blockcount) == s;
		if (ls + mfs_get32(lrec.blockcount) > s)
			err = -EFSCORRUPTED;
	}
	if (rst) {
		rl = mfs_get32(rrec.blockcount);
		right = mfs_get64(rrec.owner) == MFS_OWN_AG && mfs_get32(rrec.startblock) == end;
		if (mfs_get32(rrec.startblock) < end)
			err = -EFSCORRUPTED;
	}
	if (err) {
		err = rep_fail(ar->r, err, "AG %u reverse map: blocks %u+%u for the new trees are "
			       "not free", ar->agno, s, l);
		goto out;
	}
	if (right) {
		/* the cursor sits on the right neighbour (GE lookup) */
		if (left) {
			err = mfs_btree_delete(&cur);
			mfs_put32(key.startblock, ls);
			if (!err)
				err = mfs_btree_lookup(&cur, &key, MFS_LOOKUP_EQ, &lst);
			rrec_fill(&n, ls, end + rl - ls);
		} else {
			rrec_fill(&n, s, l + rl);
		}
		if (!err)
			err = mfs_btree_update(&cur, &n);
	} else if (left) {
		mfs_put32(key.startblock, ls);
		err = mfs_btree_lookup(&cur, &key, MFS_LOOKUP_EQ, &lst);
		rrec_fill(&n, ls, end - ls);
		if (!err)
			err = mfs_btree_update(&cur, &n);
	} else {
		rrec_fill(&n, s, l);
		err = mfs_btree_insert(&cur, &n);
	}
out:
	mfs_btree_cur_release(&cur);
	return err;
}

int rep_forget_blocks(struct agrep *ar, uint32_t s, uint32_t l)
{
	int err = 0;

	for (uint32_t b = 0; b < l && !err; b++)
		err = mfs_trans_forget(ar->tp, mfs_agbno_to_fsb(&ar->fs->geo, ar->agno, s + b));
	return err ? rep_fail(ar->r, err, "AG %u: no memory to drop the buffers of blocks "
			      "%u+%u", ar->agno, s, l) : 0;
}

int rep_agfl_put_old(struct agrep *ar, uint32_t agbno)
{
	int err = mfs_agfl_put(ar->tp, ar->agno, ar->agh_bp, agbno);

	if (err)
		return rep_fail(ar->r, err, "AG %u: putting block %u on the free list: %s",
				ar->agno, agbno, strerror(-err));
	return rep_forget_blocks(ar, agbno, 1);
}

/* Old tree blocks that become free: busy until the commit is durable, buffers dropped. */
static int release_old(struct agrep *ar, uint32_t s, uint32_t l, void *priv)
{
	int err = mfs_trans_busy(ar->tp, ar->agno, s, l);

	if (err)
		return rep_fail(ar->r, err, "AG %u: no memory to keep blocks %u+%u busy",
				ar->agno, s, l);
	return rep_forget_blocks(ar, s, l);
}

/* ---- feeding the bulk loader ----------------------------------------------------------------- */

int rep_blocks_add(struct agrep *ar, uint32_t s, uint32_t l, void *priv)
{
	struct blocks *b = priv;

	for (uint32_t i = 0; i < l; i++) {
		uint32_t blk = s + i;

		if (b->n == b->cap)
			return rep_fail(ar->r, -EFSCORRUPTED, "internal: more new-tree blocks than "
					"planned");
		if (b->x) {
			int err = mfs_xfarray_append(b->x, &blk, NULL);

			if (err)
				return rep_scratch_err(ar->r, err, "listing the new tree's blocks");
		} else {
			b->v[b->n] = blk;
		}
		b->n++;
	}
	return 0;
}

int rep_blocks_get(const struct blocks *b, uint64_t i, uint32_t *blk)
{
	if (b->x)
		return mfs_xfarray_get(b->x, i, blk);
	*blk = b->v[i];
	return 0;
}

/* mfs_bload gives one priv to both callbacks. */
struct loader {
	struct agrep *ar;
	rep_rec_fn get;
	void *gpriv;
	size_t rs;                   /* bytes of one on-disk record */
	struct blocks *b;
};

static int loader_recs(void *priv, void *recs, unsigned n)
{
	struct loader *l = priv;

	for (unsigned k = 0; k < n; k++) {
		int err = l->get(l->gpriv, (char *)recs + (size_t)k * l->rs);

		if (err)
			return err;
	}
	return 0;
}

static int loader_claim(void *priv, uint64_t *fsb)
{
	struct loader *l = priv;
	uint32_t blk;
	int err;

	if (l->b->next >= l->b->n)
		return rep_fail(l->ar->r, -EFSCORRUPTED, "internal: the bulk loader wants more "
				"blocks than planned");
	err = rep_blocks_get(l->b, l->b->next++, &blk);
	if (err)
		return rep_scratch_err(l->ar->r, err, "reading the new tree's blocks");
	*fsb = mfs_agbno_to_fsb(&l->ar->fs->geo, l->ar->agno, blk);
	return 0;
}

int rep_load_tree_fn(struct agrep *ar, enum mfs_ag_tree t, uint64_t nrecs, rep_rec_fn get,
		     void *priv, struct blocks *b, struct mfs_btree_root *root)
{
	struct mfs_bload bl;
	struct loader l = { ar, get, priv, mfs_ag_tree_ops(t)->rec_len, b };
	int err;

	memset(&bl, 0, sizeof(bl));
	bl.ops = mfs_ag_tree_ops(t);
	bl.owner = ar->agno;
	bl.agno = ar->agno;
	bl.nrecs = nrecs;
	bl.get_recs = loader_recs;
	bl.claim_block = loader_claim;
	bl.priv = &l;
	bl.flags = ar->ordered ? MFS_BLOAD_ORDERED : 0;
	ar->r->rc->records += bl.nrecs;
	err = mfs_bload_build(ar->fs, ar->tp, &bl, root);
	if (err)
		return rep_fail(ar->r, err, "AG %u: bulk loading the new %s failed: %s", ar->agno,
				bl.ops->name, strerror(-err));
	return 0;
}

/* Records from a scratch array, in order (struct rext for the free-space trees, converted
 * to on-disk records; on-disk records otherwise). */
struct asrc {
	struct agrep *ar;
	struct mfs_xfarray *a;
	uint64_t i;
	int alloc_rec;
};

static int asrc_get(void *priv, void *out)
{
	struct asrc *s = priv;
	struct rext e;
	int err = mfs_xfarray_get(s->a, s->i++, s->alloc_rec ? (void *)&e : out);

	if (err)
		return rep_scratch_err(s->ar->r, err, "loading the new tree");
	if (s->alloc_rec) {
		struct mfs_alloc_rec *r = out;

		mfs_put32(r->startblock, e.start);
		mfs_put32(r->blockcount, e.len);
	}
	return 0;
}

int rep_load_tree(struct agrep *ar, enum mfs_ag_tree t, struct mfs_xfarray *a,
		     struct blocks *b, struct mfs_btree_root *root)
{
	struct asrc s = { ar, a, 0, t == MFS_BT_BNO || t == MFS_BT_CNT };

	return rep_load_tree_fn(ar, t, mfs_xfarray_count(a), asrc_get, &s, b, root);
}

/* Blocks of tree t as it stands in the transaction.  Only for a tree verified whole under
 * this AG lock (rep_ag_begin: the reverse map) and changed since only by the btree engine:
 * it is counted from its nodes (mfs_btree_count_trusted: no set of the blocks seen, 2-4 MiB
 * for a reverse map of 24M-32M records), no more blocks than the AG has. */
static int tree_blocks(struct agrep *ar, enum mfs_ag_tree t, uint64_t *n)
{
	struct mfs_btree_cur cur;
	int err;

	*n = 0;
	mfs_ag_cur_init(&cur, ar->fs, NULL, ar->agno, t, ar->agh_bp);
	cur.flags = MFS_BTREE_CUR_ONCE;
	err = mfs_btree_count_trusted(&cur, ar->aglen, n);
	mfs_btree_cur_release(&cur);
	return err ? rep_fail(ar->r, err, "AG %u: counting the blocks of the %s: %s", ar->agno,
			      cur.ops->name, strerror(-err)) : 0;
}

void rep_set_root(struct mfs_agh *agh, enum mfs_ag_tree t, const struct mfs_fs *fs,
		     const struct mfs_btree_root *root)
{
	mfs_put32(agh->roots[t], mfs_fsb_to_agbno(&fs->geo, root->fsb));
	mfs_put32(agh->levels[t], root->levels);
}

/* ---- free-space trees ------------------------------------------------------------------------ */
struct abt_plan {
	uint64_t nf, no;             /* blocks in F and O */
	uint64_t m;                  /* blocks of the two new trees */
	uint64_t take_o, take_f;     /* blocks taken from the front of O and of F (ordered: F's
				      * longest extents, the pieces of N) */
	uint64_t extra;              /* of those, put on the AGFL (the last ones) */
	int ordered;                 /* the trees from F (written in place), extras from O */
	uint64_t pool;               /* ordered: O's last blocks that feed the AGFL as the
				      * reverse-map changes need them (abt_record) */
	struct free_sum sum;         /* the free space that results */
};

static uint64_t abt_blocks(uint32_t bs, uint64_t nrecs)
{
	uint64_t b = rep_geo_blocks(&mfs_bnobt_ops, bs, nrecs, NULL);
	uint64_t c = rep_geo_blocks(&mfs_cntbt_ops, bs, nrecs, NULL);

	return b == UINT64_MAX || c == UINT64_MAX ? UINT64_MAX : b + c;
}

/*
 * Blocks the free list must be given for n new reverse-map records (one per piece of F the
 * ordered plan takes): a leaf split per half leaf of them, and a split of every level
 * above.  Pessimistic: the records go in in block order, so a split leaf takes the next
 * half leaf of them.
 */
static uint64_t abt_agfl_need(struct agrep *ar, uint64_t n)
{
	uint64_t half = mfs_btree_maxrecs(&mfs_rmapbt_ops, ar->fs->geo.blocksize, 1) / 2;

	return 2 * ((n + half - 1) / (half ? half : 1)) + MFS_BTREE_MAXLEVELS + 2;
}

/* Take m tree blocks (and what the AGFL can hold of O's remainder); -ENOSPC if F + O is too
 * small. */
static int abt_take(struct agrep *ar, struct abt_plan *p, uint64_t m, uint64_t room)
{
	uint64_t t = m;

	if (p->ordered) {
		uint64_t need = abt_agfl_need(ar, m);

		/* the trees from F only; -ENOSPC without a message: the caller plans again
		 * the logged way */
		if (m > p->nf)
			return -ENOSPC;
		p->m = m;
		p->take_f = m;
		p->take_o = p->no < room ? p->no : room;
		p->extra = p->take_o;
		p->pool = p->no - p->take_o < need ? p->no - p->take_o : need;
		return 0;
	}
	if (p->no > m)
		t += p->no - m < room ? p->no - m : room;
	if (t > p->no + p->nf)
		return rep_fail(ar->r, -ENOSPC, "AG %u: the new free-space trees need %llu blocks, "
				"only %llu are free or old tree blocks", ar->agno,
				(unsigned long long)m, (unsigned long long)(p->no + p->nf));
	p->m = m;
	p->extra = t - m;
	p->take_o = t < p->no ? t : p->no;
	p->take_f = t - p->take_o;
	return 0;
}

/*
 * The plan in p's mode; ordered, N are the pieces of F taken (h: F's lengths).  Ordered,
 * the new trees hold F - N alone: O's blocks stay AG-owned through the commit (those the
 * reverse-map changes do not take for the AGFL are reaped after it, repair_reap.c), so
 * the trees' size does not depend on how much of the pool is fed.
 */
static int abt_plan_mode(struct agrep *ar, struct mfs_xfarray *F, struct mfs_xfarray *O,
			 const struct rep_lenhist *h, struct rep_addset *N, struct abt_plan *p)
{
	uint32_t bs = ar->fs->geo.blocksize, cnt = mfs_get32(rep_agh(ar)->fl_count);
	uint64_t room = cnt < REP_AGFL_EXTRA_CAP ? REP_AGFL_EXTRA_CAP - cnt : 0, m, e = 0, o_keep;
	int err;

	p->nf = rep_ext_blocks(F, &e);
	p->no = rep_ext_blocks(O, &e);
	if (e)
		return rep_scratch_err(ar->r, -(int)e, "counting extents");
	/* ordered, no block of O is free in the new trees: those are reaped after the commit */
	o_keep = p->ordered ? 0 : UINT64_MAX;
	err = free_walk(ar, F, O, 0, o_keep, 0, NULL, NULL, &p->sum);
	m = err ? 0 : abt_blocks(bs, p->sum.nrecs);
	for (unsigned round = 0; !err && round <= 2 * PLAN_ROUNDS; round++) {
		uint64_t m2;

		err = abt_take(ar, p, m, room);
		if (!err && p->ordered)
			err = rep_pick_free(ar, F, h, p->take_f, N, "new free-space trees");
		if (!err)
			err = free_walk(ar, F, O, p->take_o, o_keep, p->take_f,
					p->ordered ? N : NULL, NULL, &p->sum);
		if (err)
			break;
		m2 = abt_blocks(bs, p->sum.nrecs);
		if (m2 == m)
			return 0;
		if (m2 < m && round >= PLAN_ROUNDS &&
		    cnt + p->extra + (m - m2) <= MFS_AGFL_SIZE_MAX - 8) {
			/* A plan that does not settle: the spare blocks (AG-owned once taken)
			 * go on the AGFL with the extras. */
			p->extra += m - m2;
			p->m = m2;
			return 0;
		}
		m = round < PLAN_ROUNDS || m2 > m ? m2 : m;
	}
	return err ? err : rep_fail(ar->r, -EAGAIN, "AG %u: the size of the new free-space trees "
				    "did not settle; try again", ar->agno);
}

/* Ordered new blocks when F holds the trees and the free list can be fed, from the AGFL
 * stock, the extras and the pool, what the reverse-map changes that takes need; else (or
 * when `logged`) the trees in O's blocks, logged. */
static int abt_plan(struct agrep *ar, struct mfs_xfarray *F, struct mfs_xfarray *O,
		    const struct rep_lenhist *h, struct rep_addset *N, struct abt_plan *p,
		    int logged)
{
	uint32_t cnt = mfs_get32(rep_agh(ar)->fl_count);
	int err = -ENOSPC;

	memset(p, 0, sizeof(*p));
	p->ordered = 1;
	if (!logged)
		err = abt_plan_mode(ar, F, O, h, N, p);
	if (err && err != -ENOSPC)
		return err;
	if (!err && abt_agfl_need(ar, N->n) <= cnt + p->extra + p->pool)
		return 0;
	memset(p, 0, sizeof(*p));
	rep_addset_clear(N);
	return abt_plan_mode(ar, F, O, h, N, p);
}

/*
 * Ordered, after the commit (the AG marked and still locked, repair_reap.c): the reverse-map
 * records of the new trees' blocks — one for each piece of N — a batch per transaction
 * (rep_reap_step), with the AGFL kept between what one change may take (a split of every
 * level and a new root) and what one may give back (a merge at every level).  When it runs
 * low, old tree blocks go onto it (AG-owned already: no reverse-map change), O's last
 * first, never the first o_lo (the extras, on the list already): *fed of them, which the
 * reap then leaves.  Should O have none left (the plan sized the feeding on the high side:
 * only the test hook gets here), a block comes from the ordinary allocator — the new trees
 * are valid from the commit on.  Too full, a block goes back to free space the ordinary
 * way.  Nothing here can stop: pressure and cancel are no longer looked at.  Until the last
 * record is committed the reverse map does not own all of the live trees' blocks: no test
 * hook, and a failure stops the journal (rep_reap_kill) — an allocator's free-list
 * fix-up, or a later rebuild writing into what the reverse map calls free, must not meet
 * that AG; the next mount finishes the job from the mark.
 */

/* The test hooks of repair_ag.h: after rep_abt_dry_after changes O is taken as used up
 * and the list fed before each change (the planned feeding is pessimistic: a real case is
 * hard to build), so that the allocator's feeding and the trim are both exercised. */
uint64_t rep_abt_dry_after = UINT64_MAX;
uint64_t rep_abt_alloc_feeds;
int rep_abt_force_logged;
uint64_t rep_late_fail_after = UINT64_MAX;

/* The AGFL's count, and the most one reverse-map change may take from it or give to it. */
static uint32_t fl_state(struct agrep *ar, uint32_t *want)
{
	const struct mfs_agh *agh = rep_agh(ar);
	uint32_t lv = mfs_get32(agh->levels[MFS_BT_RMAP]);

	*want = (lv < MFS_BTREE_MAXLEVELS ? lv : MFS_BTREE_MAXLEVELS) + 2;
	return mfs_get32(agh->fl_count);
}

/* O's blocks from its end: avail of them may be taken. */
struct otail {
	struct mfs_xfarray *O;
	uint64_t idx, avail;
	struct rext e;
	uint32_t left;
};

static int otail_next(struct agrep *ar, struct otail *t, uint32_t *b)
{
	while (!t->left) {
		int err;

		if (!t->idx)
			return rep_fail(ar->r, -EFSCORRUPTED, "internal: old tree blocks counted "
					"wrong");
		err = mfs_xfarray_get(t->O, --t->idx, &t->e);
		if (err)
			return rep_scratch_err(ar->r, err, "reading the old tree blocks");
		t->left = t->e.len;
	}
	*b = t->e.start + --t->left;
	t->avail--;
	return 0;
}

/* One block from the new trees onto the AGFL (the ordinary allocator: its record, its own
 * refill of the list). */
static int feed_alloc(struct agrep *ar)
{
	struct mfs_alloc_args a;
	int err;

	memset(&a, 0, sizeof(a));
	a.type = MFS_ALLOC_ANY;
	a.target = mfs_agbno_to_fsb(&ar->fs->geo, ar->agno, 0);
	a.minlen = a.maxlen = 1;
	a.owner = MFS_OWN_AG;
	err = mfs_alloc_extent_ag(ar->tp, ar->agno, ar->agh_bp, &a);
	if (err)
		return rep_fail(ar->r, err, "AG %u: no block to feed the free list once the old "
				"trees' were used up: %s", ar->agno, strerror(-err));
	__atomic_add_fetch(&rep_abt_alloc_feeds, 1, __ATOMIC_RELAXED);
	return rep_agfl_put_old(ar, mfs_fsb_to_agbno(&ar->fs->geo, a.fsb));
}

/* One block off the AGFL back to free space, the ordinary way. */
static int trim_one(struct agrep *ar)
{
	uint32_t b;
	int err = mfs_agfl_get(ar->tp, ar->agno, ar->agh_bp, &b);

	if (!err)
		err = mfs_free_extent(ar->tp, mfs_agbno_to_fsb(&ar->fs->geo, ar->agno, b), 1,
				      MFS_OWN_AG, 0);
	if (!err)
		err = rep_forget_blocks(ar, b, 1);
	return err;
}

static int abt_record(struct agrep *ar, struct mfs_xfarray *O, uint64_t o_lo, uint64_t no,
		      const struct rep_addset *N, uint64_t *fed)
{
	static const char what[] = "recording the new trees' blocks in the reverse map";
	static const char state[] = "the reverse map does not own all the blocks of the new "
				    "free-space trees";
	struct otail t = { O, mfs_xfarray_count(O), no - o_lo, { 0, 0 }, 0 };
	uint64_t ji = 0, nch = 0;
	uint32_t want, cnt;
	int fed_now = 0, err;

	*fed = 0;
	err = rep_account_begin(ar, state);
	if (err)
		return err;
	while (!err && ji < N->n) {
		/* the test hook: past rep_abt_dry_after changes, a feed before each */
		int dry = nch >= rep_abt_dry_after, force = dry && !fed_now;
		uint32_t b = 0;

		cnt = fl_state(ar, &want);
		if ((cnt < want || force) && t.avail && !dry) {
			err = otail_next(ar, &t, &b);
			if (!err)
				err = rep_agfl_put_old(ar, b);
			if (!err)
				++*fed;
			fed_now = 1;
		} else if (cnt < want || force) {
			err = feed_alloc(ar);
			fed_now = 1;
		} else if (cnt + want > MFS_AGFL_SIZE_MAX) {
			err = trim_one(ar);
		} else {
			struct rext e;

			nch++;
			err = rep_addset_get(N, ji++, &e);
			if (err)
				err = rep_scratch_err(ar->r, err, "reading the new trees' pieces");
			else if (ji > rep_late_fail_after)
				err = -EIO;
			else
				err = rmap_join(ar, e.start, e.len, NULL);
			if (!err)
				ar->recorded += e.len;
			fed_now = 0;
		}
		err = err ? rep_reap_fail(ar, err, what) : rep_reap_step(ar, what);
	}
	/* the last records committed: the AG is fit to be seen again */
	err = rep_account_end(ar, err, what, state);
	if (err)
		return err;
	mfs_buf_put(ar->agh_bp);
	ar->agh_bp = NULL;
	return 0;
}

/*
 * C = the extents of B (block order) by length, then block: the short ones — nearly all of
 * them when there are many, since they share the AG — are placed by counting, one write
 * stream per length, in block order within each; the long ones (fewer than the AG's
 * blocks / BYLEN_SHORT) are sorted apart in X and follow.  No sort of the whole array.  An
 * empty extent (free_walk never makes one) is refused as corruption.
 */
#define BYLEN_SHORT 12u

static int sort_by_len(struct agrep *ar, struct mfs_xfarray *B, struct mfs_xfarray *C,
		       struct mfs_xfarray *X)
{
	uint64_t n = mfs_xfarray_count(B), pos[BYLEN_SHORT + 1], nx, at = 0;
	struct rext e;
	int err = 0;

	memset(pos, 0, sizeof(pos));
	for (uint64_t i = 0; i < n && !err; i++) {
		err = mfs_xfarray_get(B, i, &e);
		if (!err && !e.len)
			/* pos[0] is no slot: an empty record would overwrite another */
			return rep_fail(ar->r, -EFSCORRUPTED, "AG %u: free extent %llu of %llu, at "
					"block %u, has length 0: not loaded into the by-length tree",
					ar->agno, (unsigned long long)i, (unsigned long long)n,
					e.start);
		if (!err && e.len <= BYLEN_SHORT)
			pos[e.len]++;
		else if (!err)
			err = mfs_xfarray_append(X, &e, NULL);
		if (!err && i % 65536 == 65535)
			err = rep_poll(ar->r);
	}
	for (unsigned l = 1; l <= BYLEN_SHORT; l++) {
		uint64_t c = pos[l];

		pos[l] = at;
		at += c;
	}
	for (uint64_t i = 0; i < n && !err; i++) {
		err = mfs_xfarray_get(B, i, &e);
		if (!err && e.len <= BYLEN_SHORT)
			err = mfs_xfarray_set(C, pos[e.len]++, &e);
		if (!err && i % 65536 == 65535)
			err = rep_poll(ar->r);
	}
	if (!err)
		err = rep_sort(ar->r, X, cmp_by_len, "sorting the free extents by length");
	nx = mfs_xfarray_count(X);
	for (uint64_t i = 0; i < nx && !err; i++) {
		err = mfs_xfarray_get(X, i, &e);
		if (!err)
			err = mfs_xfarray_set(C, at++, &e);
	}
	return err && !ar->r->rc->reason[0] ?
	       rep_scratch_err(ar->r, err, "sorting the free extents by length") : err;
}

/* The free-space rebuild: the ordered plan when it fits (unless a test forces the logged
 * one). */
int rep_allocbt(struct rep *r)
{
	const int logged = rep_abt_force_logged;
	struct agrep ar;
	struct gather g;
	struct abt_plan p;
	struct blocks b = { NULL, 0, 0, 0, NULL };
	struct mfs_xfarray *S, *F, *O, *B, *C, *U, *X;
	struct mfs_btree_root broot, croot;
	struct mfs_agh *agh;
	struct rep_lenhist h;
	struct rep_addset N = { NULL, 0, 0, NULL };   /* ordered: the pieces of F taken */
	uint64_t rmapblks, fed = 0, spare = 0;
	/* a sweep: the blocks it reads in leave the cache when let go, or (changed by its
	 * commit or its reap) once written home (mfs_bcache_sweep) */
	int err, sweep = mfs_bcache_sweep(1);

	memset(&h, 0, sizeof(h));
	err = rep_ag_begin(r, &ar, 1);
	if (err)
		goto out;
	{
		/* U: the old bytes of the free blocks the new trees are written into (a cancel
		 * puts them back); at most the trees of nf + no records and the pool's (at most
		 * no: abt_plan_mode), and a plan that does not settle takes a few more */
		uint64_t nf = ar.nrmap + 1, no = ar.own_blocks[OWN_I_AG] + 1;
		uint64_t mmax = abt_blocks(ar.fs->geo.blocksize, nf + 2 * no);
		const struct rep_array_plan plan[9] = {
			{ sizeof(uint32_t), ar.rmap_blocks + MFS_AGFL_SIZE_MAX },
			{ sizeof(struct rext), nf }, { sizeof(struct rext), no },
			{ sizeof(struct rext), nf + no }, { sizeof(struct rext), nf + no },
			{ MFS_TRANS_UNDO_RECSIZE(ar.fs->geo.blocksize),
			  (mmax == UINT64_MAX ? 0 : mmax) + 16 },
			/* the long free extents, sorted apart (sort_by_len) */
			{ sizeof(struct rext), ar.aglen / (BYLEN_SHORT + 1) + 1 },
			/* N, the pieces of F taken (at most one per block of the trees), and the
			 * new trees' blocks with the AGFL's extras */
			{ sizeof(struct rext), (mmax == UINT64_MAX ? 0 : mmax) + 16 },
			{ sizeof(uint32_t), (mmax == UINT64_MAX ? 0 : mmax) + MFS_AGFL_SIZE_MAX + 16 },
		};

		err = rep_reserve(r, plan, 9);
		if (!err)
			err = rep_hook(r, MFS_REPAIR_AT_RESERVED);
		if (!err)
			err = rep_array(r, plan[0].recsize, plan[0].max_nr, &S);
		if (!err)
			err = rep_array(r, plan[1].recsize, plan[1].max_nr, &F);
		if (!err)
			err = rep_array(r, plan[2].recsize, plan[2].max_nr, &O);
		if (!err)
			err = rep_array(r, plan[3].recsize, plan[3].max_nr, &B);
		if (!err)
			err = rep_array(r, plan[4].recsize, plan[4].max_nr, &C);
		if (!err)
			err = rep_array(r, plan[5].recsize, plan[5].max_nr, &U);
		if (!err)
			err = rep_array(r, plan[6].recsize, plan[6].max_nr, &X);
		if (!err)
			err = rep_array(r, plan[7].recsize, plan[7].max_nr, &N.x);
		if (!err)
			err = rep_array(r, plan[8].recsize, plan[8].max_nr, &b.x);
		if (err)
			goto out;
	}
	memset(&g, 0, sizeof(g));
	g.ar = &ar;
	g.S = S;
	g.F = F;
	g.O = O;
	g.h = &h;
	err = rep_lh_init(r, &h);
	if (!err)
		err = gather_s(&g);
	if (!err)
		err = gather_free(&g);
	if (!err)
		err = rep_hook(r, MFS_REPAIR_AT_GATHERED);
	if (!err) {
		rep_lh_sort(&h);
		err = abt_plan(&ar, F, O, &h, &N, &p, logged);
	}
	/* Logged, the new trees are most of the transaction: refuse now if it cannot fit.
	 * Ordered, it logs the header, the free list and the reverse-map leaves that change:
	 * counted exactly once those changes are made, before the trees are built. */
	if (!err && !p.ordered)
		err = rep_log_fits(&ar, p.m, p.no > p.take_o ? p.no - p.take_o : 0,
				   "free-space btrees");
	if (err)
		goto out;
	/* The blocks: the trees' first (ordered: from F; else from O, then F), the AGFL
	 * extras last.  Ordered blocks are not joined: nothing is logged or saved for them. */
	b.cap = p.m + p.extra;
	ar.ordered = p.ordered;
	if (p.ordered)
		mfs_trans_ordered_undo(ar.tp, U);
	if (!p.ordered)
		err = rep_ext_pieces(&ar, O, 0, p.take_o, rep_blocks_add, &b);
	if (!err && !p.ordered)
		err = rep_ext_pieces(&ar, F, 0, p.take_f, rep_blocks_add, &b);
	for (uint64_t i = 0; !err && p.ordered && i < N.n; i++) {
		struct rext e;

		err = rep_addset_get(&N, i, &e);
		err = err ? rep_scratch_err(r, err, "reading the new trees' pieces") :
		      rep_blocks_add(&ar, e.start, e.len, &b);
	}
	if (!err && p.ordered)
		err = rep_ext_pieces(&ar, O, 0, p.take_o, rep_blocks_add, &b);
	for (uint64_t i = 0; !err && i < b.n; i++) {
		uint32_t blk;

		if (p.ordered && i < p.m)
			continue;
		err = rep_blocks_get(&b, i, &blk);
		if (err)
			err = rep_scratch_err(r, err, "reading the new trees' blocks");
		else if (i < p.m)
			err = rep_join_block(&ar, blk);
		else
			err = rep_agfl_put_old(&ar, blk);
	}
	if (!err && !p.ordered)
		err = rep_ext_pieces(&ar, F, 0, p.take_f, rmap_join, NULL);
	if (!err && !p.ordered)
		err = rep_ext_pieces(&ar, O, p.take_o, UINT64_MAX, rep_rmap_cut, NULL);
	if (!err && !p.ordered)
		err = rep_ext_pieces(&ar, O, p.take_o, UINT64_MAX, release_old, NULL);
	if (err)
		goto out;
	/* The new records, by block (ordered: F - N, O's blocks being reaped after the commit),
	 * then a copy sorted by length. */
	err = free_walk(&ar, F, O, p.take_o, p.ordered ? 0 : p.no - p.take_o, p.take_f,
			p.ordered ? &N : NULL, B, &p.sum);
	if (!err)
		err = sort_by_len(&ar, B, C, X);
	if (!err)
		err = rep_poll(r);
	if (!err && p.ordered) {
		/* blocks the trees turn out not to need (AG-owned already) are reaped with O */
		uint64_t m = abt_blocks(ar.fs->geo.blocksize, p.sum.nrecs);

		if (m > p.m)
			err = rep_fail(r, -EFSCORRUPTED, "internal: the new free-space trees "
				       "need %llu blocks, %llu were planned",
				       (unsigned long long)m, (unsigned long long)p.m);
		spare = p.m;
		p.m = m;
	}
	if (!err && p.ordered) {
		uint64_t nimg, nrev;

		mfs_trans_log_size(ar.tp, &nimg, &nrev);
		err = rep_log_fits(&ar, nimg, nrev, "free-space btrees");
	}
	if (err)
		goto out;
	b.n = p.m;
	err = rep_load_tree(&ar, MFS_BT_CNT, C, &b, &croot);
	if (!err)
		err = rep_load_tree(&ar, MFS_BT_BNO, B, &b, &broot);
	if (!err && b.next != b.n)
		err = rep_fail(r, -EFSCORRUPTED, "internal: the new trees used %llu of %llu "
			       "planned blocks", (unsigned long long)b.next,
			       (unsigned long long)b.n);
	if (!err)
		err = tree_blocks(&ar, MFS_BT_RMAP, &rmapblks);
	if (!err)
		err = mfs_trans_modify(ar.tp, ar.agh_bp);
	if (err)
		goto out;
	agh = rep_agh(&ar);
	rep_set_root(agh, MFS_BT_BNO, ar.fs, &broot);
	rep_set_root(agh, MFS_BT_CNT, ar.fs, &croot);
	mfs_put32(agh->freeblks, (uint32_t)p.sum.blocks);
	mfs_put32(agh->longest, p.sum.longest);
	mfs_put32(agh->btreeblks, (uint32_t)(p.m - 2 + rmapblks - 1));
	if (p.ordered)
		err = rep_reap_mark(&ar);
	else
		rep_reap_unmark(&ar);        /* every old block freed in this transaction */
	if (!err)
		err = rep_ag_finish(&ar);
	/* ordered: the new trees' blocks recorded in the reverse map, then O's blocks but
	 * those on the AGFL, and the trees' spare ones, freed */
	if (!err && ar.reap)
		err = abt_record(&ar, O, p.take_o, p.no, &N, &fed);
	if (!err && ar.reap)
		err = rep_reap_hook(&ar);
	if (!err && ar.reap)
		err = rep_ext_pieces(&ar, O, p.take_o, p.no - p.take_o - fed, rep_reap_piece,
				     NULL);
	for (uint64_t i = p.m; !err && ar.reap && i < spare; i++) {
		uint32_t blk;

		err = rep_blocks_get(&b, i, &blk);
		err = err ? rep_reap_fail(&ar, rep_scratch_err(r, err, "reading the new trees' "
							       "blocks"), "freeing the trees' spare blocks") :
		      rep_reap_piece(&ar, blk, 1, NULL);
	}
	if (!err && ar.reap)
		err = rep_reap_end(&ar);
out:
	rep_ag_cancel(&ar);
	mfs_bcache_sweep(sweep);
	rep_lh_free(&h);
	free(N.v);
	free(b.v);
	return err;
}

/* ---- inode btree ----------------------------------------------------------------------------- */
struct igather {
	struct agrep *ar;
	struct mfs_xfarray *I, *O;   /* chunk records; old inode btree extents */
	uint64_t icount, ifree;
};

/* The free mask of the chunk at agbno: inodes not in use by mfs_dinode_in_use (inode.h: a
 * zeroed mode on an inode with links or forks is an inode in use whose type is lost). */
static int chunk_mask(struct agrep *ar, uint32_t agbno, struct mfs_inobt_rec *rec)
{
	const struct mfs_geom *g = &ar->fs->geo;
	uint32_t startino = mfs_agbno_to_agino(g, agbno);
	struct mfs_buf *bp = NULL;
	uint64_t mask = 0;
	int err = 0;

	for (uint32_t k = 0; k < MFS_INODES_PER_CHUNK && !err; k++) {
		uint64_t ino = mfs_agino_to_ino(g, ar->agno, startino + k);
		uint64_t fsb = mfs_ino_to_fsb(g, ino);
		const struct mfs_dinode *d;

		if (mfs_ino_check(ar->fs, ino)) {
			mask |= 1ull << k;
			continue;
		}
		if (!bp || bp->blkno != fsb) {
			if (bp)
				mfs_buf_put(bp);
			bp = NULL;
			err = mfs_buf_read(ar->fs->bc, fsb, NULL, &bp);
			if (err) {
				err = rep_fail(ar->r, err, "AG %u: inode block %llu unreadable (%s): "
					       "its inodes' state cannot be told", ar->agno,
					       (unsigned long long)fsb, strerror(-err));
				break;
			}
		}
		d = (const void *)((const char *)bp->data + mfs_ino_to_offset(g, ino));
		if (!mfs_dinode_in_use(d))
			mask |= 1ull << k;
	}
	if (bp)
		mfs_buf_put(bp);
	memset(rec, 0, sizeof(*rec));
	mfs_put32(rec->startino, startino);
	mfs_put32(rec->freecount, (uint32_t)__builtin_popcountll(mask));
	mfs_put64(rec->freemask, mask);
	return err;
}

static int igather_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_rmap_rec *rr = rec;
	struct igather *ig = priv;
	struct agrep *ar = ig->ar;
	uint32_t s = mfs_get32(rr->startblock), l = mfs_get32(rr->blockcount);
	uint32_t cb = ar->fs->geo.chunkblocks;
	uint64_t owner = mfs_get64(rr->owner);
	int err = 0;

	if (++ar->seen % POLL_RECS == 0 && (err = rep_poll(ar->r)))
		return err;
	if (owner == MFS_OWN_INOBT)
		return rep_add_ext(ar, ig->O, s, l);
	if (owner != MFS_OWN_INODES)
		return 0;
	if (s % cb || l % cb)
		return rep_fail(ar->r, -EFSCORRUPTED, "AG %u reverse map: inode extent %u+%u is "
				"not made of whole aligned chunks of %u blocks", ar->agno, s, l, cb);
	for (uint32_t c = s; c < s + l && !err; c += cb) {
		struct mfs_inobt_rec ir;

		err = chunk_mask(ar, c, &ir);
		if (err)
			return err;
		err = mfs_xfarray_append(ig->I, &ir, NULL);
		if (err)
			return rep_scratch_err(ar->r, err, "gathering inode chunks");
		ig->icount += MFS_INODES_PER_CHUNK;
		ig->ifree += mfs_get32(ir.freecount);
	}
	return 0;
}

static int cmp_startino(const void *a, const void *b, void *priv)
{
	uint32_t x = mfs_get32(((const struct mfs_inobt_rec *)a)->startino);
	uint32_t y = mfs_get32(((const struct mfs_inobt_rec *)b)->startino);

	return x < y ? -1 : x > y;
}

/* Old inode btree blocks left over: freed by the allocator, their buffers dropped. */
static int free_old_inobt(struct agrep *ar, uint32_t s, uint32_t l, void *priv)
{
	const struct mfs_geom *g = &ar->fs->geo;
	int err = mfs_free_extent(ar->tp, mfs_agbno_to_fsb(g, ar->agno, s), l, MFS_OWN_INOBT, 0);

	if (err)
		return rep_fail(ar->r, err, "AG %u: freeing old inode btree blocks %u+%u: %s",
				ar->agno, s, l, strerror(-err));
	return rep_forget_blocks(ar, s, l);
}

/* More blocks for the new inode btree than the old one had: from the allocator. */
static int alloc_inobt(struct agrep *ar, struct blocks *b, uint64_t want)
{
	const struct mfs_geom *g = &ar->fs->geo;
	uint32_t near = mfs_get32(rep_agh(ar)->roots[MFS_BT_INO]);

	while (want) {
		struct mfs_alloc_args a;
		int err;

		memset(&a, 0, sizeof(a));
		a.type = MFS_ALLOC_NEAR;
		a.target = mfs_agbno_to_fsb(g, ar->agno, near < ar->aglen ? near : 0);
		a.minlen = 1;
		a.maxlen = want < g->agblocks ? (uint32_t)want : g->agblocks;
		a.owner = MFS_OWN_INOBT;
		err = mfs_alloc_extent_ag(ar->tp, ar->agno, ar->agh_bp, &a);
		if (!err)
			err = rep_blocks_add(ar, mfs_fsb_to_agbno(g, a.fsb), a.len, b);
		if (err)
			return rep_fail(ar->r, err, "AG %u: allocating blocks for the new inode "
					"btree: %s", ar->agno, strerror(-err));
		want -= a.len;
	}
	return 0;
}

int rep_inobt(struct rep *r)
{
	struct agrep ar;
	struct igather ig;
	struct blocks b = { NULL, 0, 0, 0, NULL };
	struct mfs_btree_root root;
	struct mfs_btree_cur cur;
	struct mfs_agh *agh;
	uint64_t m, nold, e = 0;
	int err;

	memset(&ig, 0, sizeof(ig));
	err = rep_ag_begin(r, &ar, 0);
	if (err)
		goto out;
	{
		const struct rep_array_plan plan[2] = {
			{ sizeof(struct mfs_inobt_rec),
			  ar.own_blocks[OWN_I_INODES] / ar.fs->geo.chunkblocks + 1 },
			{ sizeof(struct rext), ar.own_blocks[OWN_I_INOBT] + 1 },
		};

		err = rep_reserve(r, plan, 2);
		if (!err)
			err = rep_hook(r, MFS_REPAIR_AT_RESERVED);
		if (!err)
			err = rep_array(r, plan[0].recsize, plan[0].max_nr, &ig.I);
		if (!err)
			err = rep_array(r, plan[1].recsize, plan[1].max_nr, &ig.O);
		if (err)
			goto out;
	}
	ig.ar = &ar;
	ar.seen = 0;
	mfs_ag_cur_init(&cur, ar.fs, NULL, ar.agno, MFS_BT_RMAP, ar.agh_bp);
	cur.flags = MFS_BTREE_CUR_ONCE;
	err = mfs_btree_query_range(&cur, NULL, NULL, igather_fn, &ig);
	mfs_btree_cur_release(&cur);
	if (err && !r->rc->reason[0])
		err = rep_fail(r, err, "AG %u: walking the reverse map: %s", ar.agno, strerror(-err));
	if (!err)
		err = rep_hook(r, MFS_REPAIR_AT_GATHERED);
	if (!err)
		err = rep_sort(r, ig.I, cmp_startino, "sorting the inode chunks");
	if (err)
		goto out;
	m = rep_geo_blocks(&mfs_inobt_ops, ar.fs->geo.blocksize, mfs_xfarray_count(ig.I), NULL);
	nold = rep_ext_blocks(ig.O, &e);
	if (e) {
		err = rep_scratch_err(r, -(int)e, "counting the old inode btree blocks");
		goto out;
	}
	err = rep_log_fits(&ar, m, nold > m ? nold - m : 0, "inode btree");
	if (err)
		goto out;
	b.cap = m;
	b.v = mfs_malloc((m ? m : 1) * sizeof(*b.v));
	if (!b.v) {
		err = rep_fail(r, -ENOMEM, "no memory for the list of %llu new tree blocks",
			       (unsigned long long)m);
		goto out;
	}
	err = rep_ext_pieces(&ar, ig.O, 0, m, rep_blocks_add, &b);
	for (uint64_t i = 0; !err && i < b.n; i++)
		err = rep_join_block(&ar, b.v[i]);
	if (!err && m > nold)
		err = alloc_inobt(&ar, &b, m - nold);
	if (!err)
		err = rep_load_tree(&ar, MFS_BT_INO, ig.I, &b, &root);
	if (!err && nold > m)
		err = rep_ext_pieces(&ar, ig.O, m, UINT64_MAX, free_old_inobt, NULL);
	if (!err)
		err = mfs_trans_modify(ar.tp, ar.agh_bp);
	if (err)
		goto out;
	agh = rep_agh(&ar);
	rep_set_root(agh, MFS_BT_INO, ar.fs, &root);
	mfs_put32(agh->icount, (uint32_t)ig.icount);
	mfs_put32(agh->ifree, (uint32_t)ig.ifree);
	err = rep_ag_finish(&ar);
out:
	rep_ag_cancel(&ar);
	free(b.v);
	return err;
}
