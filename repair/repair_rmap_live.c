/*
 * repair_rmap_live.c — the inode owners' records of one AG's reverse map, gathered while
 * the filesystem is mounted and busy, for the online reverse-map rebuild (repair_rmapbt.c).
 *
 * The problem
 * -----------
 * The reverse map of AG a says, for every allocated block of a, who owns it.  The special
 * owners (the AG's own trees, free list, inode chunks, the journal) are read from the AG's
 * structures under its lock.  The inode owners are the hard part: their records come from
 * every inode's forks, which can only be read under each inode's lock, and the lock order
 * (inode locks before AG locks; never wait for an inode lock while holding an AG lock) forbids
 * reading them under the AG lock, which is what keeps a's reverse map still.  Meanwhile every
 * inode may allocate or free space in a.
 *
 * The design: scan optimistically, validate under the lock, rescan what moved
 * --------------------------------------------------------------------------------
 *   1. Scan (no AG lock held): list the in-use inodes of every AG from its inode btree (its
 *      lock held for the listing only), and for each, under its own lock (shared), record
 *      what it owns in a.  Each inode's records are right at the moment of its scan; by the
 *      end some may be out of date.
 *   2. Settle (AG a locked: a's reverse map holds still, and so does every inode's space in
 *      a, since every change of it goes through a's allocator under a's lock): read the old
 *      tree's inode records, and compare them owner by owner with what the owners said.
 *      An owner whose records agree is current: had it changed its space in a since its
 *      scan, the same transaction would have changed its records in the old tree, and they
 *      would now differ (the allocator applies to the old tree exactly the change it makes
 *      to the owner; an old tree that was damaged for this owner only differs more).  An
 *      owner that disagrees — it moved, or the old tree is damaged there, or it was
 *      allocated after the listing — is scanned again now, while a is locked, if its lock
 *      can be had without waiting: that scan is current.  When some owners' locks are busy
 *      (their writers may well be waiting for a), a is let go, those owners are scanned
 *      again waiting for their locks, and settling starts over: at most LIVE_MAX_ROUNDS
 *      rounds, then the rebuild gives up (-EBUSY, "try again"), changing nothing.  Each round
 *      holds a only for the comparison and the rescans of free owners.
 *   3. Build, still under a's lock and in the same transaction: the special owners, the
 *      owners' current records, the new tree, one commit (repair_rmapbt.c).
 * Allocations that need a wait for its lock like for any rebuild of a's trees (bounded, or
 * another AG); other AGs, and readers of every file, never wait.
 *
 * A later scan supersedes an earlier one: records carry the scan's epoch, and only an
 * owner's latest epoch counts (an owner found free leaves an empty marker).
 *
 * Which side is right when they disagree for good
 * -------------------------------------------------
 * After settling, an owner's map and the old tree disagree only through damage, on one side
 * or the other.  The owner's map wins (that is what a rebuild from owners means), except
 * where that would destroy data because the owner is the damaged side:
 *   - the owner claims free space or another owner's blocks: the merge refuses (cross-link);
 *   - the old tree gives the owner blocks that nobody has in the new map and that are not
 *     free: the owner's map lost them (a fuzzed extent length or start) — rebuilding would
 *     leave its data unowned (rep_live_check_gaps: -EFSCORRUPTED, repair the owner first,
 *     from this very reverse map);
 *   - the owner and the old tree hold the same data blocks at other file offsets: nothing
 *     tells which is right (-EFSCORRUPTED; the extent map rebuilder refuses that too).
 */
#include "repair_rmap_live.h"

#include "ag.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "mem.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define LIVE_MAX_ROUNDS  16u
#define LIVE_POLL_EVERY  64u

static int vec_add(struct rep *r, uint64_t **v, size_t *n, size_t *cap, uint64_t x)
{
	if (*n == *cap) {
		size_t nc = *cap ? 2 * *cap : 64;
		uint64_t *nv = mfs_realloc(*v, nc * sizeof(*nv));

		if (!nv)
			return rep_fail(r, -ENOMEM, "no memory for the list of inodes to scan again");
		*v = nv;
		*cap = nc;
	}
	(*v)[(*n)++] = x;
	return 0;
}

/* ---- scanning owners --------------------------------------------------------------------- */
struct sadd {
	struct rep_live *lv;
	uint32_t epoch;
};

static int put_srec(struct rep_live *lv, uint64_t ino, uint32_t agbno, uint32_t len,
		    uint64_t offset, uint32_t epoch)
{
	struct rep_srec s;
	int err;

	if (len && (agbno < MFS_AG_FIXED_BLOCKS || (uint64_t)agbno + len > lv->aglen))
		return rep_fail(lv->r, -EFSCORRUPTED, "AG %u: inode %llu claims blocks %u+%u "
				"outside the AG", lv->agno, (unsigned long long)ino, agbno, len);
	memset(&s, 0, sizeof(s));
	mfs_put32(s.rec.startblock, agbno);
	mfs_put32(s.rec.blockcount, len);
	mfs_put64(s.rec.owner, ino);
	mfs_put64(s.rec.offset, offset);
	s.epoch = epoch;
	err = mfs_xfarray_append(lv->S, &s, NULL);
	return err ? rep_scratch_err(lv->r, err, "gathering the owners' records") : 0;
}

static int sadd_fn(void *priv, uint64_t ino, uint32_t agbno, uint32_t len, uint64_t offset)
{
	struct sadd *a = priv;

	return put_srec(a->lv, ino, agbno, len, offset, a->epoch);
}

/*
 * Scan inode ino for what it owns in the AG, as scan `epoch` (> 0: a rescan, which first
 * leaves an empty marker so that it supersedes older scans even when it finds nothing).
 * nowait: never wait for its lock (1 = busy).  must: an inode that does not load is an
 * error (listed in use); otherwise it owns nothing as far as this rebuild can tell (a
 * number from a damaged old record; the check of the gaps catches a real owner's loss).
 */
static int scan_owner(struct rep_live *lv, uint64_t ino, uint32_t epoch, int nowait, int must)
{
	struct sadd a = { lv, epoch };
	struct mfs_inode *ip;
	int err;

	if (mfs_ino_check(lv->fs, ino))
		return epoch ? put_srec(lv, ino, 0, 0, 0, epoch) : 0;
	err = mfs_iget(lv->fs, ino, nowait ? MFS_IGET_NOWAIT : 0, &ip);
	if (err == -EDEADLK && nowait)
		return 1;
	if (err == -ENOENT || (!must && mfs_is_corruption(err)))
		return epoch ? put_srec(lv, ino, 0, 0, 0, epoch) : 0;
	if (err)
		return rep_fail(lv->r, err, "inode %llu cannot be loaded (%s): its space cannot be "
				"told; repair it first", (unsigned long long)ino, strerror(-err));
	if (nowait) {
		if (pthread_rwlock_tryrdlock(&ip->lock)) {
			mfs_iput(ip);
			return 1;
		}
	} else {
		pthread_rwlock_rdlock(&ip->lock);
	}
	err = epoch ? put_srec(lv, ino, 0, 0, 0, epoch) : 0;
	if (!err && ip->mode) {
		err = rep_inode_owned(ip, lv->agno, sadd_fn, &a);
		if (err && !lv->r->rc->reason[0])
			rep_fail(lv->r, err, "inode %llu: its forks cannot be read (%s): repair it "
				 "first", (unsigned long long)ino, strerror(-err));
	}
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	return err;
}

/* The allocated chunks of an AG are listed LIVE_CHUNK_BATCH at a time (64 KiB), its lock
 * held for each listing only: a list of them all would grow with the AG's inodes (16 bytes
 * a chunk: 25 MiB for 100M inodes).  Tests make batches smaller (rep_live_chunk_batch). */
#define LIVE_CHUNK_BATCH 4096u
unsigned rep_live_chunk_batch = LIVE_CHUNK_BATCH;

struct chunks {
	struct mfs_inobt_rec *v;
	size_t n;
};

static int chunk_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	struct chunks *c = priv;

	(void)cur;
	c->v[c->n++] = *(const struct mfs_inobt_rec *)rec;
	/* full: stop, the rest next time */
	return c->n >= LIVE_CHUNK_BATCH || c->n >= rep_live_chunk_batch;
}

/* The next allocated chunks of AG b from agino `from` on; *more: the batch was filled, so
 * more may follow. */
static int list_chunks(struct rep_live *lv, uint32_t b, uint32_t from, struct chunks *c,
		       int *more)
{
	struct mfs_btree_cur cur;
	struct mfs_inobt_key lo;
	struct mfs_buf *hbp;
	int err;

	c->n = 0;
	memset(&lo, 0, sizeof(lo));
	mfs_put32(lo.startino, from);
	mfs_ag_lock(lv->fs, b, MFS_AGL_INODES);     /* the inode btree holds still: fs.h */
	err = mfs_read_agh_inodes(lv->fs, b, &hbp);
	if (!err) {
		mfs_ag_cur_init(&cur, lv->fs, NULL, b, MFS_BT_INO, hbp);
		err = mfs_btree_query_range(&cur, &lo, NULL, chunk_fn, c);
		mfs_btree_cur_release(&cur);
		mfs_buf_put(hbp);
	}
	mfs_ag_unlock(lv->fs, b, MFS_AGL_INODES);
	*more = err > 0;
	if (err < 0)
		return rep_fail(lv->r, err, "AG %u: its inodes cannot be listed (%s): repair its "
				"header and inode btree first", b, strerror(-err));
	return 0;
}

int rep_live_scan(struct rep_live *lv)
{
	const struct mfs_geom *g = &lv->fs->geo;
	struct chunks c = { mfs_malloc(LIVE_CHUNK_BATCH * sizeof(*c.v)), 0 };
	int err = c.v ? 0 : rep_fail(lv->r, -ENOMEM, "no memory to list the inode chunks");

	for (uint32_t b = 0; b < g->agcount && !err; b++) {
		uint32_t from = 0;
		int more = 1;

		while (more && !err) {
			err = list_chunks(lv, b, from, &c, &more);
			for (size_t k = 0; k < c.n && !err; k++) {
				uint32_t start = mfs_get32(c.v[k].startino);
				uint64_t mask = mfs_get64(c.v[k].freemask);

				for (unsigned i = 0; i < MFS_INODES_PER_CHUNK && !err; i++) {
					uint64_t ino = mfs_agino_to_ino(g, b, start + i);

					if (mask >> i & 1 || mfs_ino_check(lv->fs, ino))
						continue;
					err = scan_owner(lv, ino, 0, 0, 1);
					if (!err && ++lv->seen % LIVE_POLL_EVERY == 0)
						err = rep_poll(lv->r);
				}
			}
			/* the next batch starts past the last chunk listed: chunks are aligned
			 * and never overlap, so none is listed twice */
			if (c.n)
				from = mfs_get32(c.v[c.n - 1].startino) + MFS_INODES_PER_CHUNK;
			if (c.n && from < MFS_INODES_PER_CHUNK)
				more = 0;            /* the last agino: nothing can follow */
		}
	}
	free(c.v);
	return err;
}

/* ---- comparing with the old tree -------------------------------------------------------- */
static int owner_rec(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_rmap_rec *rr = rec;
	struct rep_live *lv = priv;
	int err;

	if (mfs_get64(rr->owner) >= MFS_OWN_MIN || !mfs_get32(rr->blockcount))
		return 0;
	err = mfs_xfarray_append(lv->C, rr, NULL);
	return err ? rep_scratch_err(lv->r, err, "reading the old reverse map") : 0;
}

/* S: owner up, then the latest scan first, then block order. */
static int cmp_s(const void *a, const void *b, void *priv)
{
	const struct rep_srec *x = a, *y = b;
	uint64_t ox = mfs_get64(x->rec.owner), oy = mfs_get64(y->rec.owner);
	uint32_t sx = mfs_get32(x->rec.startblock), sy = mfs_get32(y->rec.startblock);

	if (ox != oy)
		return ox < oy ? -1 : 1;
	if (x->epoch != y->epoch)
		return x->epoch > y->epoch ? -1 : 1;
	return sx < sy ? -1 : sx > sy;
}

/* C: owner up, then block order (cmp_c); or block order alone (cmp_start). */
static int cmp_c(const void *a, const void *b, void *priv)
{
	const struct mfs_rmap_rec *x = a, *y = b;
	uint64_t ox = mfs_get64(x->owner), oy = mfs_get64(y->owner);
	uint32_t sx = mfs_get32(x->startblock), sy = mfs_get32(y->startblock);

	if (ox != oy)
		return ox < oy ? -1 : 1;
	return sx < sy ? -1 : sx > sy;
}

static int cmp_start(const void *a, const void *b, void *priv)
{
	uint32_t sx = mfs_get32(((const struct mfs_rmap_rec *)a)->startblock);
	uint32_t sy = mfs_get32(((const struct mfs_rmap_rec *)b)->startblock);

	return sx < sy ? -1 : sx > sy;
}

/* S in cmp_s order; not again when nothing was appended since. */
static int sort_s(struct rep_live *lv)
{
	int err;

	if (lv->s_sorted && lv->s_sorted == mfs_xfarray_count(lv->S))
		return 0;
	err = rep_sort(lv->r, lv->S, cmp_s, "sorting the owners' records");
	lv->s_sorted = err ? 0 : mfs_xfarray_count(lv->S);
	return err;
}

/* One owner's records from S (its latest scan) or C, merged as the tree would hold them;
 * blocks_only: its data blocks alone, merged whatever their file offsets. */
struct rstream {
	struct rep_live *lv;
	int is_s, blocks_only;
	uint64_t i, n, owner;
	uint32_t epoch;
	struct mfs_rmap_rec peek;
	int have_peek, started;
};

static void rs_init(struct rstream *s, struct rep_live *lv, int is_s, uint64_t from,
		    uint64_t owner, int blocks_only)
{
	memset(s, 0, sizeof(*s));
	s->lv = lv;
	s->is_s = is_s;
	s->blocks_only = blocks_only;
	s->i = from;
	s->n = mfs_xfarray_count(is_s ? lv->S : lv->C);
	s->owner = owner;
}

/* The next raw record of the group (*got 0 at its end). */
static int rs_raw(struct rstream *s, struct mfs_rmap_rec *out, int *got)
{
	*got = 0;
	while (s->i < s->n) {
		struct rep_srec sr;
		int err;

		if (s->is_s) {
			err = mfs_xfarray_get(s->lv->S, s->i, &sr);
		} else {
			err = mfs_xfarray_get(s->lv->C, s->i, &sr.rec);
			sr.epoch = 0;
		}
		if (err)
			return rep_scratch_err(s->lv->r, err, "reading gathered records");
		if (mfs_get64(sr.rec.owner) != s->owner)
			return 0;
		if (s->is_s) {
			if (!s->started) {
				s->started = 1;
				s->epoch = sr.epoch;
			} else if (sr.epoch != s->epoch) {
				return 0;       /* an older scan of the owner */
			}
		}
		s->i++;
		if (!mfs_get32(sr.rec.blockcount) ||
		    (s->blocks_only && (mfs_get64(sr.rec.offset) & (MFS_RMAP_ATTR_FORK |
								     MFS_RMAP_BMBT_BLOCK))))
			continue;
		*out = sr.rec;
		*got = 1;
		return 0;
	}
	return 0;
}

static int rs_follows(const struct rstream *s, const struct mfs_rmap_rec *a,
		      const struct mfs_rmap_rec *b)
{
	if (s->blocks_only)
		return mfs_get32(a->startblock) + mfs_get32(a->blockcount) ==
		       mfs_get32(b->startblock);
	return rep_rmap_follows(a, b);
}

static int rs_next(struct rstream *s, struct mfs_rmap_rec *out, int *got)
{
	struct mfs_rmap_rec nx;
	int err = 0, g;

	*got = 0;
	if (!s->have_peek) {
		err = rs_raw(s, &s->peek, &s->have_peek);
		if (err || !s->have_peek)
			return err;
	}
	*out = s->peek;
	*got = 1;
	s->have_peek = 0;
	while (!(err = rs_raw(s, &nx, &g)) && g) {
		if (!rs_follows(s, out, &nx)) {
			s->peek = nx;
			s->have_peek = 1;
			break;
		}
		mfs_put32(out->blockcount, mfs_get32(out->blockcount) + mfs_get32(nx.blockcount));
	}
	if (s->blocks_only)
		out->offset = 0;
	return err;
}

/* Do the owner's records in S (from index si) and in C (from ci) agree?  *any: whether
 * there were records at all (of the kind looked at). */
static int same_recs(struct rep_live *lv, uint64_t owner, uint64_t si, uint64_t ci,
		     int blocks_only, int *same, int *any)
{
	struct rstream a, b;
	int err = 0;

	rs_init(&a, lv, 1, si, owner, blocks_only);
	rs_init(&b, lv, 0, ci, owner, blocks_only);
	*same = 1;
	*any = 0;
	while (!err && *same) {
		struct mfs_rmap_rec x, y;
		int gx, gy;

		err = rs_next(&a, &x, &gx);
		if (!err)
			err = rs_next(&b, &y, &gy);
		if (err || (!gx && !gy))
			break;
		*any = 1;
		*same = gx && gy && !memcmp(&x, &y, sizeof(x));
	}
	return err;
}

static int get_owner(struct rep_live *lv, int is_s, uint64_t i, uint64_t *owner)
{
	struct rep_srec sr;
	int err = is_s ? mfs_xfarray_get(lv->S, i, &sr) : mfs_xfarray_get(lv->C, i, &sr.rec);

	if (err)
		return rep_scratch_err(lv->r, err, "reading gathered records");
	*owner = mfs_get64(sr.rec.owner);
	return 0;
}

/* Past the records of `owner` from index *i. */
static int skip_owner(struct rep_live *lv, int is_s, uint64_t *i, uint64_t owner)
{
	uint64_t n = mfs_xfarray_count(is_s ? lv->S : lv->C), o = 0;
	int err = 0;

	while (*i < n && !(err = get_owner(lv, is_s, *i, &o)) && o == owner)
		(*i)++;
	return err;
}

static int in_todo(const struct rep_live *lv, uint64_t owner)
{
	size_t lo = 0, hi = lv->ntodo;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (lv->todo[mid] == owner)
			return 1;
		if (lv->todo[mid] < owner)
			lo = mid + 1;
		else
			hi = mid;
	}
	return 0;
}

/*
 * Walk the owners of S and C together (both sorted).  check 0: every owner whose records
 * differ (all of them when the old tree did not read whole) goes on the todo list, in
 * order.  check 1: an owner of the todo list whose data blocks are the same in both, at
 * other offsets, is refused.
 */
static int compare(struct rep_live *lv, int check)
{
	uint64_t ns = mfs_xfarray_count(lv->S), nc = mfs_xfarray_count(lv->C), si = 0, ci = 0;
	int err = 0;

	while (!err && (si < ns || ci < nc)) {
		uint64_t so = UINT64_MAX, co = UINT64_MAX, o;
		int same = 0, same_blocks = 0, any = 0;

		if (si < ns)
			err = get_owner(lv, 1, si, &so);
		if (!err && ci < nc)
			err = get_owner(lv, 0, ci, &co);
		if (err)
			break;
		o = so < co ? so : co;
		if (!check && lv->c_ok)
			err = same_recs(lv, o, si, ci, 0, &same, &any);
		if (!err && !check && !same)
			err = vec_add(lv->r, &lv->todo, &lv->ntodo, &lv->captodo, o);
		if (!err && check && in_todo(lv, o)) {
			err = same_recs(lv, o, si, ci, 0, &same, &any);
			if (!err && !same)
				err = same_recs(lv, o, si, ci, 1, &same_blocks, &any);
			if (!err && !same && same_blocks && any)
				return rep_fail(lv->r, -EFSCORRUPTED, "AG %u: inode %llu and the reverse "
						"map hold the same data blocks at different file "
						"offsets: which is right cannot be told; nothing was "
						"changed", lv->agno, (unsigned long long)o);
		}
		if (!err)
			err = skip_owner(lv, 1, &si, o);
		if (!err)
			err = skip_owner(lv, 0, &ci, o);
		if (!err && ++lv->seen % 4096 == 0)
			err = rep_poll(lv->r);
	}
	return err;
}

/* Empty C (unset from the end: each unset of the last slot shrinks the count). */
static int clear_c(struct rep_live *lv)
{
	uint64_t n = mfs_xfarray_count(lv->C);

	while (n) {
		int err = mfs_xfarray_unset(lv->C, n - 1);

		if (err && err != -ENODATA)
			return rep_scratch_err(lv->r, err, "emptying the old records");
		n = mfs_xfarray_count(lv->C);
		if (err == -ENODATA)
			break;
	}
	return 0;
}

int rep_live_settle(struct rep_live *lv, struct agrep *ar, int *settled)
{
	struct mfs_btree_cur cur;
	int err;

	*settled = 0;
	lv->ntodo = lv->nbusy = 0;
	if (++lv->rounds > LIVE_MAX_ROUNDS)
		return rep_fail(lv->r, -EBUSY, "AG %u: the inodes owning its space kept changing "
				"through %u rounds: nothing was changed; try again", lv->agno,
				LIVE_MAX_ROUNDS);
	err = clear_c(lv);
	if (err)
		return err;
	mfs_ag_cur_init(&cur, lv->fs, NULL, lv->agno, MFS_BT_RMAP, ar->agh_bp);
	err = mfs_btree_query_range(&cur, NULL, NULL, owner_rec, lv);
	mfs_btree_cur_release(&cur);
	lv->c_ok = !err;
	if (err && !mfs_is_corruption(err))
		return err;
	err = sort_s(lv);
	if (!err)
		err = rep_sort(lv->r, lv->C, cmp_c, "sorting the old records");
	if (!err)
		err = compare(lv, 0);
	for (size_t k = 0; k < lv->ntodo && !err; k++) {
		err = scan_owner(lv, lv->todo[k], ++lv->epoch, 1, 0);
		lv->rescanned += err == 0;
		if (err == 1)
			err = vec_add(lv->r, &lv->busy, &lv->nbusy, &lv->capbusy, lv->todo[k]);
	}
	if (err || lv->nbusy)
		return err;
	if (lv->c_ok) {
		err = sort_s(lv);
		if (!err)
			err = compare(lv, 1);
	}
	*settled = !err;
	return err;
}

int rep_live_wait_busy(struct rep_live *lv)
{
	int err = 0;

	for (size_t k = 0; k < lv->nbusy && !err; k++)
		err = scan_owner(lv, lv->busy[k], ++lv->epoch, 0, 0);
	lv->waited += lv->nbusy;
	return err;
}

int rep_live_emit(struct rep_live *lv, int (*fn)(void *priv, const struct mfs_rmap_rec *rec),
		  void *priv)
{
	uint64_t ns = mfs_xfarray_count(lv->S), si = 0;
	int err = sort_s(lv);

	while (!err && si < ns) {
		struct rstream s;
		uint64_t o = 0;
		int got;

		err = get_owner(lv, 1, si, &o);
		rs_init(&s, lv, 1, si, o, 0);
		while (!err) {
			struct mfs_rmap_rec rec;

			err = rs_raw(&s, &rec, &got);
			if (err || !got)
				break;
			err = fn(priv, &rec);
		}
		if (!err)
			err = skip_owner(lv, 1, &si, o);
	}
	return err;
}

/* An old record of an inode over a gap: its map lost those blocks. */
static int gap_lost(struct rep_live *lv, const struct mfs_rmap_rec *c)
{
	return rep_fail(lv->r, -EFSCORRUPTED, "AG %u: blocks %u+%u, inode %llu's in the reverse "
			"map, are no longer in its map, nor free, nor anyone's: its map seems "
			"damaged; repair inode %llu's extent map first (it is rebuilt from this "
			"reverse map)", lv->agno, mfs_get32(c->startblock),
			mfs_get32(c->blockcount), (unsigned long long)mfs_get64(c->owner),
			(unsigned long long)mfs_get64(c->owner));
}

static int gap_rec(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_rmap_rec *c = rec;

	(void)cur;
	return mfs_get64(c->owner) < MFS_OWN_MIN ? gap_lost(priv, c) : 0;
}

/* The old tree (read whole, unchanged since: the AG is locked) over each gap. */
static int gaps_in_tree(struct rep_live *lv, struct agrep *ar, struct mfs_xfarray *G)
{
	uint64_t ngaps = mfs_xfarray_count(G);
	struct mfs_btree_cur cur;
	int err = 0;

	mfs_ag_cur_init(&cur, lv->fs, NULL, lv->agno, MFS_BT_RMAP, ar->agh_bp);
	for (uint64_t i = 0; i < ngaps && !err; i++) {
		struct mfs_rmap_key lo, hi;
		struct mfs_rmap_rec c;
		struct rext gap;
		int stat = 0;

		err = mfs_xfarray_get(G, i, &gap);
		if (err) {
			err = rep_scratch_err(lv->r, err, "reading the old reverse map's blocks");
			break;
		}
		/* the record before the gap may reach into it; the others start in it */
		mfs_put32(lo.startblock, gap.start);
		mfs_put32(hi.startblock, gap.start + gap.len - 1);
		err = mfs_btree_lookup_get(&cur, &lo, MFS_LOOKUP_LE, &c, &stat);
		if (!err && stat && mfs_get32(c.startblock) + mfs_get32(c.blockcount) >
		    gap.start)
			err = gap_rec(&cur, &c, lv);
		if (!err)
			err = mfs_btree_query_range(&cur, &lo, &hi, gap_rec, lv);
		if (err && !lv->r->rc->reason[0])
			err = rep_fail(lv->r, err, "AG %u: reading the old reverse map: %s",
				       lv->agno, strerror(-err));
		if (i % 256 == 255 && !err)
			err = rep_poll(lv->r);
	}
	mfs_btree_cur_release(&cur);
	return err;
}

int rep_live_check_gaps(struct rep_live *lv, struct agrep *ar, struct mfs_xfarray *G)
{
	uint64_t nc = mfs_xfarray_count(lv->C), ngaps = mfs_xfarray_count(G), gi = 0;
	struct rext gap = { 0, 0 };
	int err;

	if (lv->c_ok)
		return gaps_in_tree(lv, ar, G);
	err = rep_sort(lv->r, lv->C, cmp_start, "sorting the old records");
	if (err)
		return err;
	if (ngaps)
		err = mfs_xfarray_get(G, 0, &gap);
	for (uint64_t i = 0; i < nc && gi < ngaps && !err; i++) {
		struct mfs_rmap_rec c;
		uint32_t s, e;

		err = mfs_xfarray_get(lv->C, i, &c);
		if (err)
			return rep_scratch_err(lv->r, err, "reading the old records");
		s = mfs_get32(c.startblock);
		e = s + mfs_get32(c.blockcount);
		while (!err && gi < ngaps && gap.start + gap.len <= s)
			if (++gi < ngaps)
				err = mfs_xfarray_get(G, gi, &gap);
		if (!err && gi < ngaps && gap.start < e)
			return gap_lost(lv, &c);
	}
	return err ? rep_scratch_err(lv->r, err, "reading the old reverse map's blocks") : 0;
}

void rep_live_release(struct rep_live *lv)
{
	free(lv->todo);
	free(lv->busy);
	lv->todo = lv->busy = NULL;
	lv->ntodo = lv->nbusy = lv->captodo = lv->capbusy = 0;
}
