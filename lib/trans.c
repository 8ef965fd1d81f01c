/*
 * trans.c — transactions over the buffer cache (see trans.h).
 *
 * A transaction keeps one item per joined buffer: its own reference to the buffer and,
 * for blocks that existed before, a copy of their bytes as they were when first joined.
 * Items are found by block number through a small open-addressing table that grows with
 * the transaction (bulk loads join thousands of new blocks).  A block freed without being
 * joined (mfs_trans_forget: a rebuild frees every block of an old tree) is only a block
 * number in a set of its own (fset): 8-16 bytes, not an item and its slots.  A block is
 * in at most one of the two: joining a block of the set moves it to the items.
 *
 * Commit marks every joined buffer dirty and drops every forgotten block; cancel copies
 * the saved bytes back (new blocks are simply dropped) so the cache holds exactly what it
 * held before the transaction began.  Both release the AG locks the transaction took.
 * A transaction marked with mfs_trans_reread (a rebuild's, which joins a block per
 * changed leaf of a large tree) saves nothing for a block that is clean when joined: its
 * old bytes are the device's until the commit, and a cancel reads them back.
 *
 * Busy extents (busy.h): space the transaction gives back is entered in the busy list
 * tagged with the transaction (mfs_trans_busy, from the allocator); commit stamps the
 * entries with its journal sequence and cancel drops them, both while the AG locks are
 * still held, so no other transaction ever sees an entry of a transaction that is gone.
 * A transaction marked with mfs_trans_busy_hull keeps, instead of an entry per piece, the
 * span from its first freed block to its last in each AG, entered at the commit: a
 * rebuild frees a piece per block of an old tree, scattered over the AG.
 *
 * With a journal attached (fs->log), commit first hands the joined buffers and the
 * forgotten blocks to mfs_journal_commit(), while the AG locks still keep the buffers
 * still; the journal copies them, stamps the commit sequence into each metadata block's
 * header and marks them dirty with that sequence.  If the journal refuses (no log space,
 * no memory, a dead log), the transaction is cancelled instead, exactly.  Once it accepts,
 * the transaction is committed: the locks are released, and only then does commit wait for
 * the log (a synchronous commit, or an asynchronous one that finds too much queued), so
 * that other threads' transactions can join the same group commit and no log I/O happens
 * under the AG locks.  An error from that wait is reported but never undoes the change.
 *
 * Ordered new blocks (mfs_trans_ordered_write, for bulk loads of whole new trees) are not
 * items at all: written in place at once, counted, and left out of the log.  Their order
 * against the commit comes from the journal's force, which flushes the device before it
 * writes any commit block; without a journal, nothing orders anything (mfs_bcache_flush
 * makes it all durable).  Cancel need not undo them (free space, which nothing reads), but
 * with an undo array (mfs_trans_ordered_undo: the old bytes, saved in the caller's
 * scratch before each write) it writes the old bytes back, so that an aborted repair
 * leaves the device exactly as it found it.
 */
#include "mem.h"
#include "trans.h"
#include "bcache.h"
#include "busy.h"
#include "dev.h"
#include "fs.h"
#include "journal.h"
#include "log.h"
#include "verify.h"
#include "xfarray.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define TI_NEW     0x1u     /* block allocated by this transaction: nothing to restore */
#define TI_FORGET  0x2u     /* block freed by this transaction: drop at commit */
#define TI_REREAD  0x4u     /* joined clean (mfs_trans_reread): no saved bytes, a cancel
			     * reads the old ones back from the device */

struct trans_item {
	struct mfs_buf *bp;     /* NULL for a forget-only item */
	uint64_t blkno;
	void *old;              /* saved bytes (not for TI_NEW, TI_REREAD) */
	int was_meta;           /* whether the saved block was sealed as metadata */
	unsigned flags;
};

struct busy_hull {
	uint32_t agno;
	uint64_t lo, hi;        /* [lo, hi): from the first block freed to the last */
};

struct mfs_trans {
	struct mfs_fs *fs;
	struct trans_item *items;
	unsigned nitems, cap;
	unsigned *slots;        /* open addressing: index+1 into items, 0 = empty */
	unsigned nslots;        /* power of two, >= 2 * cap */
	uint64_t *fset;         /* blocks freed and never joined: blkno + 1, 0 = empty slot;
	                           at commit, fset_compact: the block numbers, fset[0..nfset) */
	uint64_t nfset, fslots; /* entries; slots (a power of two >= 2 * entries, or 0) */
	uint32_t *ags;          /* AG locks held, as keys (agl_key), in locking order */
	unsigned nags, agcap;
	int long_hold;          /* mfs_trans_hold_long: its AG locks counted as held long */
	int busy;               /* space given back: busy entries tagged with tp (busy.h) */
	int hull;               /* mfs_trans_busy_hull: busy space kept as one span an AG */
	struct busy_hull *hulls;        /* the spans so far, entered at the commit */
	unsigned nhulls, hullcap;
	int nodata;             /* mfs_trans_nodata: the record orders no data */
	int reread;             /* mfs_trans_reread: clean blocks joined without a copy */
	uint64_t nordered;      /* blocks written by mfs_trans_ordered_write */
	struct mfs_xfarray *undo; /* their old bytes (block number, then the block), or NULL */
	uint8_t *ubuf;          /* one undo record */
};

/* The AG lock this thread last found busy since its last mfs_trans_alloc
 * (mfs_trans_wait_busy), or NULL. */
static __thread pthread_mutex_t *busy_seen;

int mfs_trans_alloc(struct mfs_fs *fs, struct mfs_trans **out)
{
	struct mfs_trans *tp = mfs_calloc(1, sizeof(*tp));

	busy_seen = NULL;
	*out = NULL;
	if (!tp)
		return -ENOMEM;
	tp->fs = fs;
	*out = tp;
	return 0;
}

struct mfs_fs *mfs_trans_fs(const struct mfs_trans *tp) { return tp->fs; }
void mfs_trans_nodata(struct mfs_trans *tp) { tp->nodata = 1; }
void mfs_trans_reread(struct mfs_trans *tp) { tp->reread = 1; }
void mfs_trans_busy_hull(struct mfs_trans *tp) { tp->hull = 1; }
unsigned mfs_trans_nbufs(const struct mfs_trans *tp)
{
	return tp->nitems + (unsigned)tp->nfset;
}

static unsigned slot_of(const struct mfs_trans *tp, uint64_t blkno)
{
	return (unsigned)((blkno * 0x9e3779b97f4a7c15ull) >> 32) & (tp->nslots - 1);
}

static struct trans_item *item_find(struct mfs_trans *tp, uint64_t blkno)
{
	if (!tp->nslots)
		return NULL;
	for (unsigned s = slot_of(tp, blkno);; s = (s + 1) & (tp->nslots - 1)) {
		unsigned i = tp->slots[s];

		if (!i)
			return NULL;
		if (tp->items[i - 1].blkno == blkno)
			return &tp->items[i - 1];
	}
}

static void slot_insert(struct mfs_trans *tp, unsigned idx)
{
	unsigned s = slot_of(tp, tp->items[idx].blkno);

	while (tp->slots[s])
		s = (s + 1) & (tp->nslots - 1);
	tp->slots[s] = idx + 1;
}

/* Room for one more item; the table is rebuilt when it would be over half full. */
static int items_grow(struct mfs_trans *tp)
{
	if (tp->nitems < tp->cap)
		return 0;
	unsigned ncap = tp->cap ? tp->cap * 2 : 16;
	unsigned nslots = ncap * 2;
	struct trans_item *items = mfs_realloc(tp->items, ncap * sizeof(*items));
	unsigned *slots;

	if (!items)
		return -ENOMEM;
	tp->items = items;
	slots = mfs_calloc(nslots, sizeof(*slots));
	if (!slots)
		return -ENOMEM;
	free(tp->slots);
	tp->slots = slots;
	tp->nslots = nslots;
	tp->cap = ncap;
	for (unsigned i = 0; i < tp->nitems; i++)
		slot_insert(tp, i);
	return 0;
}

/* ---- the set of blocks freed without being joined ---- */
static uint64_t fset_slot(uint64_t nslots, uint64_t blkno)
{
	return ((blkno * 0x9e3779b97f4a7c15ull) >> 29) & (nslots - 1);
}

static int fset_has(const struct mfs_trans *tp, uint64_t blkno)
{
	if (!tp->fslots)
		return 0;
	for (uint64_t s = fset_slot(tp->fslots, blkno);; s = (s + 1) & (tp->fslots - 1)) {
		if (!tp->fset[s])
			return 0;
		if (tp->fset[s] == blkno + 1)
			return 1;
	}
}

static void fset_put(uint64_t *v, uint64_t nslots, uint64_t key)
{
	uint64_t s = fset_slot(nslots, key - 1);

	while (v[s])
		s = (s + 1) & (nslots - 1);
	v[s] = key;
}

/* Add blkno (not in the set); the table doubles before it would be over half full. */
static int fset_add(struct mfs_trans *tp, uint64_t blkno)
{
	if (2 * (tp->nfset + 1) > tp->fslots) {
		uint64_t n = tp->fslots ? 2 * tp->fslots : 64;
		uint64_t *v = mfs_calloc(n, sizeof(*v));

		if (!v)
			return -ENOMEM;
		for (uint64_t i = 0; i < tp->fslots; i++)
			if (tp->fset[i])
				fset_put(v, n, tp->fset[i]);
		free(tp->fset);
		tp->fset = v;
		tp->fslots = n;
	}
	fset_put(tp->fset, tp->fslots, blkno + 1);
	tp->nfset++;
	return 0;
}

/* Take blkno out of the set if it is there (backward-shift deletion: no tombstones);
 * whether it was. */
static int fset_take(struct mfs_trans *tp, uint64_t blkno)
{
	uint64_t m = tp->fslots - 1, i, j;

	if (!tp->fslots)
		return 0;
	for (i = fset_slot(tp->fslots, blkno); tp->fset[i] != blkno + 1; i = (i + 1) & m)
		if (!tp->fset[i])
			return 0;
	for (j = (i + 1) & m; tp->fset[j]; j = (j + 1) & m) {
		uint64_t h = fset_slot(tp->fslots, tp->fset[j] - 1);

		/* the entry at j may fill the hole at i when its home is not in (i, j] */
		if (i <= j ? (h <= i || h > j) : (h <= i && h > j)) {
			tp->fset[i] = tp->fset[j];
			i = j;
		}
	}
	tp->fset[i] = 0;
	tp->nfset--;
	return 1;
}

/* At commit (once: nothing looks a block up any more, and cancel only frees the set): the
 * set becomes the array of its block numbers (fset[0..nfset), no longer +1), in place, so
 * that the journal takes it as it is (revokes) and the commit walks it. */
static void fset_compact(struct mfs_trans *tp)
{
	uint64_t k = 0;

	for (uint64_t s = 0; s < tp->fslots; s++)
		if (tp->fset[s])
			tp->fset[k++] = tp->fset[s] - 1;
}

static struct trans_item *item_add(struct mfs_trans *tp, uint64_t blkno, int *err)
{
	struct trans_item *it;

	*err = items_grow(tp);
	if (*err)
		return NULL;
	it = &tp->items[tp->nitems];
	memset(it, 0, sizeof(*it));
	it->blkno = blkno;
	slot_insert(tp, tp->nitems);
	tp->nitems++;
	return it;
}

int mfs_trans_modify(struct mfs_trans *tp, struct mfs_buf *bp)
{
	uint32_t bs = tp->fs->geo.blocksize;
	struct trans_item *it = item_find(tp, bp->blkno);
	void *old;
	int reread, err;

	if (it && it->bp)
		return 0;
	/* A committed image may borrow these bytes (a rebuild's commit): it gets its own
	 * copy before they change. */
	mfs_journal_freeze(tp->fs->log, bp->blkno);
	/*
	 * A clean block's bytes are the device's (no change since it was read or written
	 * back, no write in flight), and stay so until this transaction commits: nothing
	 * writes a held, undirtied buffer, and its next change needs the AG lock tp holds.
	 */
	reread = tp->reread && mfs_buf_is_clean(bp);
	old = NULL;
	if (!reread) {
		old = mfs_malloc(bs);
		if (!old)
			return -ENOMEM;
		memcpy(old, bp->data, bs);
	}
	if (!it) {
		it = item_add(tp, bp->blkno, &err);
		if (!it) {
			free(old);
			return err;
		}
	}
	it->old = old;
	it->was_meta = mfs_buf_is_meta(bp);
	it->bp = bp;
	it->flags &= ~TI_FORGET;
	if (reread)
		it->flags |= TI_REREAD;
	mfs_buf_hold(bp);
	fset_take(tp, bp->blkno);      /* freed earlier, changed now: an item from here on */
	return 0;
}

int mfs_trans_get_new(struct mfs_trans *tp, uint64_t blkno, int meta, struct mfs_buf **out)
{
	struct trans_item *it = item_find(tp, blkno);
	struct mfs_buf *bp;
	int err;

	*out = NULL;
	if (it ? !it->bp : fset_has(tp, blkno)) {
		/*
		 * Freed earlier in this transaction without being changed, and now reused: the
		 * block was live when the transaction began, so a cancel must bring its bytes
		 * back.  Join it as a modification first (which takes it out of the freed set).
		 * (An item without a buffer is one a failed get_new left: joined the same way.)
		 */
		err = mfs_buf_read(tp->fs->bc, blkno, NULL, &bp);
		if (err)
			return err;
		err = mfs_trans_modify(tp, bp);
		mfs_buf_put(bp);       /* the transaction holds its own reference */
		if (err)
			return err;
		it = item_find(tp, blkno);
	}
	if (!it) {
		/* A block this transaction has not seen: free when it began, nothing to keep. */
		it = item_add(tp, blkno, &err);
		if (!it)
			return err;
		mfs_journal_freeze(tp->fs->log, blkno);    /* (cannot borrow a free block) */
		err = mfs_buf_get_new(tp->fs->bc, blkno, meta, &bp);
		if (err)
			return err;    /* the item stays empty: harmless */
		it->bp = bp;
		it->flags = TI_NEW;
		*out = bp;
		return 0;
	}
	/* Reused inside the transaction: start from zeroes; the saved bytes stay. */
	memset(it->bp->data, 0, tp->fs->geo.blocksize);
	mfs_buf_set_meta_state(it->bp, meta);
	it->flags &= ~TI_FORGET;
	*out = it->bp;
	return 0;
}

int mfs_trans_forget(struct mfs_trans *tp, uint64_t blkno)
{
	struct trans_item *it = item_find(tp, blkno);

	if (!it)
		return fset_has(tp, blkno) ? 0 : fset_add(tp, blkno);
	it->flags |= TI_FORGET;
	return 0;
}

int mfs_trans_ordered_write(struct mfs_trans *tp, uint64_t blkno, void *data, int meta)
{
	const struct mfs_geom *g = &tp->fs->geo;
	int err;

	if (blkno >= g->dblocks || item_find(tp, blkno) || fset_has(tp, blkno)) {
		mfs_log(MFS_LOG_ERR, "ordered write of block %llu: %s",
			(unsigned long long)blkno, blkno >= g->dblocks ? "outside the filesystem" :
			"the transaction has joined it");
		return -EINVAL;
	}
	if (!tp->nordered && tp->fs->log) {
		/* frees of earlier transactions durable before their blocks are overwritten */
		err = mfs_journal_force(tp->fs->log);
		if (err)
			return err;
	}
	/* no stale cached copy outlives the write (waits for a write-back in flight) */
	mfs_bcache_forget(tp->fs->bc, blkno);
	if (tp->undo) {
		if (!tp->ubuf) {
			tp->ubuf = mfs_malloc(MFS_TRANS_UNDO_RECSIZE(g->blocksize));
			if (!tp->ubuf)
				return -ENOMEM;
		}
		memcpy(tp->ubuf, &blkno, 8);
		err = mfs_dev_pread(mfs_bcache_dev(tp->fs->bc), tp->ubuf + 8, g->blocksize,
				    blkno * g->blocksize);
		if (!err)
			err = mfs_xfarray_append(tp->undo, tp->ubuf, NULL);
		if (err)
			return err;
	}
	if (meta)
		mfs_blk_seal(data, g->blocksize);
	err = mfs_dev_pwrite(mfs_bcache_dev(tp->fs->bc), data, g->blocksize,
			     blkno * g->blocksize);
	if (err) {
		mfs_log(MFS_LOG_ERR, "ordered write of block %llu: %s", (unsigned long long)blkno,
			strerror(-err));
		return err;
	}
	tp->nordered++;
	return 0;
}

uint64_t mfs_trans_nordered(const struct mfs_trans *tp) { return tp->nordered; }

void mfs_trans_log_size(const struct mfs_trans *tp, uint64_t *nimg, uint64_t *nrev)
{
	*nimg = 0;
	*nrev = tp->nfset;
	for (unsigned i = 0; i < tp->nitems; i++) {
		if (tp->items[i].flags & TI_FORGET)
			(*nrev)++;
		else if (tp->items[i].bp)
			(*nimg)++;
	}
}

unsigned mfs_trans_nheld(const struct mfs_trans *tp)
{
	return tp->nitems;
}

void mfs_trans_ordered_undo(struct mfs_trans *tp, struct mfs_xfarray *undo)
{
	tp->undo = undo;
}

/* Cancel: the ordered blocks' old bytes back in place (see mfs_trans_ordered_undo).  A
 * failure is reported and the rest still restored: the blocks are free space either way. */
static void trans_ordered_restore(struct mfs_trans *tp)
{
	uint32_t bs = tp->fs->geo.blocksize;
	uint64_t n = tp->undo ? mfs_xfarray_count(tp->undo) : 0, blkno;
	int err = 0, e;

	for (uint64_t i = 0; i < n; i++) {
		e = tp->ubuf ? mfs_xfarray_get(tp->undo, i, tp->ubuf) : -ENOMEM;
		if (!e) {
			memcpy(&blkno, tp->ubuf, 8);
			mfs_bcache_forget(tp->fs->bc, blkno);
			e = mfs_dev_pwrite(mfs_bcache_dev(tp->fs->bc), tp->ubuf + 8, bs,
					   blkno * bs);
		}
		if (e && !err)
			err = e;
	}
	if (err)
		mfs_log(MFS_LOG_WARN, "cancelled transaction: putting back the old bytes of its "
			"%llu ordered blocks (free space) failed: %s", (unsigned long long)n,
			strerror(-err));
}

/*
 * The AG locks a transaction holds are keys: (agno << 1) | class, class 0 the AG's inode
 * lock and 1 its space lock (fs.h), so that the keys' order is the lock order.
 */
static uint32_t agl_key(uint32_t agno, unsigned cls)
{
	return agno << 1 | cls;
}

static pthread_mutex_t *agl_mutex(struct mfs_fs *fs, uint32_t key)
{
	struct mfs_perag *pag = &fs->ag[key >> 1];

	return key & 1 ? &pag->lock : &pag->ilock;
}

static void mark_long(struct mfs_fs *fs, uint32_t key, int by)
{
	__atomic_add_fetch(&fs->ag[key >> 1].long_held[key & 1], (unsigned)by, __ATOMIC_RELAXED);
}

static int held_long(struct mfs_fs *fs, uint32_t key)
{
	return __atomic_load_n(&fs->ag[key >> 1].long_held[key & 1], __ATOMIC_RELAXED) != 0;
}

static int try_note(pthread_mutex_t *m)
{
	if (pthread_mutex_trylock(m)) {
		busy_seen = m;
		return -EDEADLK;
	}
	return 0;
}

void mfs_trans_wait_busy(void)
{
	pthread_mutex_t *m = busy_seen;

	busy_seen = NULL;
	if (m) {
		pthread_mutex_lock(m);
		pthread_mutex_unlock(m);
	}
}

void mfs_trans_hold_long(struct mfs_trans *tp)
{
	if (tp->long_hold)
		return;
	tp->long_hold = 1;
	for (unsigned i = 0; i < tp->nags; i++)
		mark_long(tp->fs, tp->ags[i], 1);
}

static int holds_key(const struct mfs_trans *tp, uint32_t key)
{
	for (unsigned i = 0; i < tp->nags; i++)
		if (tp->ags[i] == key)
			return 1;
	return 0;
}

/* The lowest key of `what` (of agno) tp does not hold yet; UINT32_MAX: all are held. */
static uint32_t lowest_missing(const struct mfs_trans *tp, uint32_t agno, unsigned what)
{
	if ((what & MFS_AGL_INODES) && !holds_key(tp, agl_key(agno, 0)))
		return agl_key(agno, 0);
	if ((what & MFS_AGL_SPACE) && !holds_key(tp, agl_key(agno, 1)))
		return agl_key(agno, 1);
	return UINT32_MAX;
}

static int holds_above(const struct mfs_trans *tp, uint32_t key)
{
	for (unsigned i = 0; i < tp->nags; i++)
		if (tp->ags[i] > key)
			return 1;
	return 0;
}

static int agl_room(struct mfs_trans *tp, unsigned n)
{
	if (tp->nags + n > tp->agcap) {
		unsigned ncap = tp->agcap ? tp->agcap * 2 : 4;
		uint32_t *ags = mfs_realloc(tp->ags, ncap * sizeof(*ags));

		if (!ags)
			return -ENOMEM;
		tp->ags = ags;
		tp->agcap = ncap;
	}
	return 0;
}

int mfs_trans_lock_agl(struct mfs_trans *tp, uint32_t agno, unsigned what, int trylock)
{
	struct mfs_fs *fs = tp->fs;
	uint32_t ik = agl_key(agno, 0), sk = agl_key(agno, 1);
	int wi, ws, err;

	if (agno >= fs->geo.agcount || !what || (what & ~MFS_AGL_ALL))
		return -EINVAL;
	wi = (what & MFS_AGL_INODES) && !holds_key(tp, ik);
	ws = (what & MFS_AGL_SPACE) && !holds_key(tp, sk);
	if (!wi && !ws)
		return 0;
	err = agl_room(tp, 2);
	if (err)
		return err;
	if (trylock) {
		if (wi && try_note(&fs->ag[agno].ilock))
			return -EDEADLK;
		if (ws && try_note(&fs->ag[agno].lock)) {
			if (wi)
				pthread_mutex_unlock(&fs->ag[agno].ilock);
			return -EDEADLK;
		}
	} else {
		uint32_t low = wi ? ik : sk;

		if (holds_above(tp, low)) {
			mfs_log(MFS_LOG_ERR, "AG %u %s lock wanted after a higher lock: lock order "
				"violated", agno, wi ? "inode" : "space");
			return -EDEADLK;
		}
		/* a long holder is marked before it waits: whoever queues behind it meanwhile
		 * sees it (mfs_ag_lock_watch) */
		if (tp->long_hold && wi)
			mark_long(fs, ik, 1);
		if (tp->long_hold && ws)
			mark_long(fs, sk, 1);
		mfs_ag_lock(fs, agno, (wi ? MFS_AGL_INODES : 0) | (ws ? MFS_AGL_SPACE : 0));
	}
	if (wi)
		tp->ags[tp->nags++] = ik;
	if (ws)
		tp->ags[tp->nags++] = sk;
	if (trylock && tp->long_hold && wi)
		mark_long(fs, ik, 1);
	if (trylock && tp->long_hold && ws)
		mark_long(fs, sk, 1);
	return 0;
}

int mfs_trans_lock_ag(struct mfs_trans *tp, uint32_t agno, int trylock)
{
	return mfs_trans_lock_agl(tp, agno, MFS_AGL_ALL, trylock);
}

int mfs_trans_ag_may_wait(const struct mfs_trans *tp, uint32_t agno, unsigned what)
{
	uint32_t low = lowest_missing(tp, agno, what);

	return low == UINT32_MAX || !holds_above(tp, low);
}

int mfs_trans_ag_held_long(const struct mfs_trans *tp, uint32_t agno, unsigned what)
{
	if (agno >= tp->fs->geo.agcount)
		return 0;
	return ((what & MFS_AGL_INODES) && !holds_key(tp, agl_key(agno, 0)) &&
		held_long(tp->fs, agl_key(agno, 0))) ||
	       ((what & MFS_AGL_SPACE) && !holds_key(tp, agl_key(agno, 1)) &&
		held_long(tp->fs, agl_key(agno, 1)));
}

/*
 * Holding locks already, never stay queued behind a long holder (the caller cancels and
 * waits for it holding nothing: mfs_trans_wait_busy), not even one that comes after we
 * began to wait: each lock tp lacks is waited for while it is not held long
 * (mfs_ag_lock_watch), let go, and then all are tried together, until that succeeds.
 */
static int lock_agl_watching(struct mfs_trans *tp, uint32_t agno, unsigned what)
{
	static const unsigned one[2] = { MFS_AGL_INODES, MFS_AGL_SPACE };
	int err;

	for (;;) {
		err = mfs_trans_lock_agl(tp, agno, what, 1);
		if (err != -EDEADLK)
			return err;
		for (unsigned c = 0; c < 2; c++) {
			if (!(what & one[c]) || holds_key(tp, agl_key(agno, c)))
				continue;
			err = mfs_ag_lock_watch(tp->fs, agno, one[c]);
			if (err == -EBUSY) {
				busy_seen = agl_mutex(tp->fs, agl_key(agno, c));
				return -EDEADLK;
			}
			if (err)
				return err;
			mfs_ag_unlock(tp->fs, agno, one[c]);
		}
	}
}

int mfs_trans_lock_agl_ordered(struct mfs_trans *tp, uint32_t agno, unsigned what)
{
	if (agno >= tp->fs->geo.agcount)
		return -EINVAL;
	if (!mfs_trans_ag_may_wait(tp, agno, what))
		return mfs_trans_lock_agl(tp, agno, what, 1);
	if (!tp->nags)
		return mfs_trans_lock_agl(tp, agno, what, 0);   /* holding nothing: wait */
	return lock_agl_watching(tp, agno, what);
}

int mfs_trans_holds_agl(const struct mfs_trans *tp, uint32_t agno, unsigned what)
{
	return lowest_missing(tp, agno, what) == UINT32_MAX;
}

int mfs_trans_holds_ag(const struct mfs_trans *tp, uint32_t agno)
{
	return holds_key(tp, agl_key(agno, 1));
}

/* mfs_trans_busy_hull: [agbno, agbno + len) joins AG agno's span. */
static int hull_add(struct mfs_trans *tp, uint32_t agno, uint32_t agbno, uint32_t len)
{
	uint64_t lo = agbno, hi = (uint64_t)agbno + len;
	struct busy_hull *h = NULL;

	for (unsigned i = 0; i < tp->nhulls && !h; i++)
		if (tp->hulls[i].agno == agno)
			h = &tp->hulls[i];
	if (!h) {
		if (tp->nhulls == tp->hullcap) {
			unsigned ncap = tp->hullcap ? tp->hullcap * 2 : 2;
			struct busy_hull *v = mfs_realloc(tp->hulls, ncap * sizeof(*v));

			if (!v)
				return -ENOMEM;
			tp->hulls = v;
			tp->hullcap = ncap;
		}
		h = &tp->hulls[tp->nhulls++];
		*h = (struct busy_hull){ agno, lo, hi };
	}
	if (lo < h->lo)
		h->lo = lo;
	if (hi > h->hi)
		h->hi = hi;
	return 0;
}

int mfs_trans_busy(struct mfs_trans *tp, uint32_t agno, uint32_t agbno, uint32_t len)
{
	int err;

	if (!tp->fs->log)
		return 0;
	if (!mfs_trans_holds_ag(tp, agno))
		return -EINVAL;
	if (!len)
		return -EINVAL;
	if (tp->hull)
		return hull_add(tp, agno, agbno, len);
	err = mfs_busy_insert(mfs_journal_busy(tp->fs->log), agno, agbno, len, tp);
	if (!err)
		tp->busy = 1;
	return err;
}

/* Commit, before the journal: the spans become busy entries of tp like any other (stamped
 * or dropped by trans_busy_done).  An error: the caller cancels, which drops those entered. */
static int trans_hulls_enter(struct mfs_trans *tp)
{
	struct mfs_busy *b = mfs_journal_busy(tp->fs->log);

	for (unsigned i = 0; i < tp->nhulls; i++) {
		const struct busy_hull *h = &tp->hulls[i];
		int err = mfs_busy_insert(b, h->agno, (uint32_t)h->lo, (uint32_t)(h->hi - h->lo),
					  tp);

		if (err)
			return err;
		tp->busy = 1;
	}
	tp->nhulls = 0;
	return 0;
}

/* Stamp (lsn) or drop (cancel) tp's busy entries; the AG locks are still held. */
static void trans_busy_done(struct mfs_trans *tp, uint64_t lsn, int cancel)
{
	struct mfs_busy *b;

	if (!tp->busy || !tp->fs->log)
		return;
	b = mfs_journal_busy(tp->fs->log);
	for (unsigned i = 0; i < tp->nags; i++) {
		if (!(tp->ags[i] & 1))
			continue;            /* an inode lock: no space of it */
		if (cancel)
			mfs_busy_cancel(b, tp->ags[i] >> 1, tp);
		else
			mfs_busy_commit(b, tp->ags[i] >> 1, tp, lsn);
	}
	tp->busy = 0;
}

static void trans_free(struct mfs_trans *tp)
{
	for (unsigned i = tp->nags; i-- > 0;) {
		if (tp->long_hold)
			mark_long(tp->fs, tp->ags[i], -1);
		pthread_mutex_unlock(agl_mutex(tp->fs, tp->ags[i]));
	}
	free(tp->ags);
	free(tp->items);
	free(tp->slots);
	free(tp->ubuf);
	free(tp->hulls);
	free(tp->fset);
	free(tp);
}

/* Hand the transaction to the journal: images of the joined buffers, revokes of the
 * forgotten blocks (the freed-block set already compacted). */
static int trans_log(struct mfs_trans *tp, uint64_t *lsn)
{
	struct mfs_jitem *items;
	unsigned n = 0;
	int err;

	*lsn = 0;
	if (!tp->nitems && !tp->nfset)
		return 0;
	items = mfs_malloc((tp->nitems ? tp->nitems : 1) * sizeof(*items));
	if (!items)
		return -ENOMEM;
	for (unsigned i = 0; i < tp->nitems; i++) {
		struct trans_item *it = &tp->items[i];

		if (it->flags & TI_FORGET)
			items[n++] = (struct mfs_jitem){ NULL, it->blkno };
		else if (it->bp)
			items[n++] = (struct mfs_jitem){ it->bp, it->blkno };
	}
	/* Ordered tree blocks were written before the commit: the record orders them.  A
	 * rebuild's transaction (reread) lends its buffers to the log instead of copying
	 * them: every later change of those buffers freezes them first (mfs_trans_modify). */
	err = n || tp->nfset ?
	      mfs_journal_commit(tp->fs->log, items, n, tp->fset, tp->nfset,
				 (tp->nodata && !tp->nordered ? MFS_JCOMMIT_NODATA : 0) |
				 (tp->reread ? MFS_JCOMMIT_BORROW : 0), lsn) : 0;
	free(items);
	return err;
}

int mfs_trans_commit(struct mfs_trans *tp)
{
	return mfs_trans_commit_lsn(tp, 0, NULL);
}

/* A commit short of memory tries again after 10, 20, ... 320 ms (0.63 s in all). */
#define COMMIT_NOMEM_TRIES 6u

static void nomem_pause(unsigned t)
{
	struct timespec ts = { 0, (10L * 1000 * 1000) << t };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* Commit tp; with an heir, the heir takes over tp's AG locks instead of their release. */
static int trans_commit(struct mfs_trans *tp, unsigned flags, uint64_t *lsnp,
			struct mfs_trans *heir)
{
	struct mfs_journal *log = tp->fs->log;
	uint64_t lsn = 0;
	int err;

	if (lsnp)
		*lsnp = 0;
	fset_compact(tp);
	if (log) {
		err = trans_hulls_enter(tp);
		/* Memory short: the journal took nothing (journal.h).  A rebuild's transaction
		 * (reread) waits a little and tries again, a bounded number of times, before
		 * it is undone: its work after its commit cannot be undone but by stopping the
		 * journal (repair_reap.c).  Others fail at once, as their callers expect. */
		for (unsigned t = 0; !err; t++) {
			err = trans_log(tp, &lsn);
			if (err != -ENOMEM || !tp->reread || t == COMMIT_NOMEM_TRIES)
				break;
			nomem_pause(t);
			err = 0;
		}
		if (err) {
			mfs_trans_cancel(tp);
			return err;
		}
		trans_busy_done(tp, lsn, 0);
	}
	for (unsigned i = 0; i < tp->nitems; i++) {
		struct trans_item *it = &tp->items[i];

		if (it->bp) {
			if (!(it->flags & TI_FORGET) && !log)
				mfs_buf_mark_dirty(it->bp);
			mfs_buf_put(it->bp);
		}
		if (it->flags & TI_FORGET)
			mfs_bcache_forget(tp->fs->bc, it->blkno);
		free(it->old);
	}
	for (uint64_t i = 0; i < tp->nfset; i++)
		mfs_bcache_forget(tp->fs->bc, tp->fset[i]);
	if (tp->nitems || tp->nfset)    /* before the AG locks go: see mfs_fs.changes */
		__atomic_add_fetch(&tp->fs->changes, 1, __ATOMIC_RELEASE);
	if (heir) {
		heir->ags = tp->ags;
		heir->nags = tp->nags;
		heir->agcap = tp->agcap;
		tp->ags = NULL;
		tp->nags = tp->agcap = 0;
	}
	trans_free(tp);
	if (lsnp)
		*lsnp = lsn;
	/* Committed.  Waiting for the log happens only now, with the AG locks released; its
	 * error is one of durability, never a reason to undo (see journal.h). */
	if (!log || !lsn)
		return 0;
	if (flags & MFS_TRANS_ASYNC)
		return mfs_journal_throttle(log, lsn);
	return mfs_journal_force_lsn(log, lsn);
}

/* Cancel: a block joined clean gets its bytes back from the device (the same, but for a
 * CRC that the live buffer may carry stale and every write seals anew).  On a read error
 * the buffer leaves the cache instead: a later read sees the device's bytes, the old
 * ones, or the same error — never this transaction's change. */
static void trans_reread(struct mfs_trans *tp, struct trans_item *it)
{
	uint32_t bs = tp->fs->geo.blocksize;
	int err = mfs_dev_pread(mfs_bcache_dev(tp->fs->bc), it->bp->data, bs,
				it->blkno * bs);

	if (!err && it->was_meta && !mfs_blk_crc_ok(it->bp->data, bs))
		err = -EFSBADCRC;
	mfs_buf_set_meta_state(it->bp, it->was_meta);
	if (err) {
		mfs_log(MFS_LOG_WARN, "cancelled transaction: re-reading block %llu failed (%s): "
			"its buffer is dropped", (unsigned long long)it->blkno, strerror(-err));
		mfs_bcache_forget(tp->fs->bc, it->blkno);
	}
	mfs_buf_put(it->bp);
}

int mfs_trans_commit_lsn(struct mfs_trans *tp, unsigned flags, uint64_t *lsnp)
{
	return trans_commit(tp, flags, lsnp, NULL);
}

int mfs_trans_roll(struct mfs_trans **tpp, unsigned flags)
{
	struct mfs_trans *tp = *tpp, *heir;
	int err = mfs_trans_alloc(tp->fs, &heir);

	*tpp = NULL;
	if (err) {
		mfs_trans_cancel(tp);
		return err;
	}
	heir->reread = tp->reread;
	heir->hull = tp->hull;
	heir->long_hold = tp->long_hold;
	heir->nodata = tp->nodata;
	err = trans_commit(tp, flags, NULL, heir);
	if (err && !heir->nags) {
		/* not committed (cancelled with its locks): the heir holds nothing */
		mfs_trans_cancel(heir);
		return err;
	}
	*tpp = heir;
	return err;
}

void mfs_trans_cancel(struct mfs_trans *tp)
{
	uint32_t bs;

	if (!tp)
		return;
	bs = tp->fs->geo.blocksize;
	trans_busy_done(tp, 0, 1);
	trans_ordered_restore(tp);
	for (unsigned i = 0; i < tp->nitems; i++) {
		struct trans_item *it = &tp->items[i];

		if (!it->bp)
			continue;
		if (it->flags & TI_NEW) {
			mfs_buf_put(it->bp);
			mfs_bcache_forget(tp->fs->bc, it->blkno);
		} else if (it->flags & TI_REREAD) {
			trans_reread(tp, it);
		} else {
			memcpy(it->bp->data, it->old, bs);
			mfs_buf_set_meta_state(it->bp, it->was_meta);
			mfs_buf_put(it->bp);
		}
		free(it->old);
	}
	trans_free(tp);
}
