/*
 * journal.c — the metadata journal: commit, group commit, checkpoint, header (see
 * journal.h for the design; replay lives in journal_replay.c).
 *
 * In memory:
 *
 *   records   every record from the log tail to the head, in sequence order: those written
 *             (durable) and those reserved but not yet written.  A record gets its
 *             sequence and its place in the log (lpos) together, under the lock, so the
 *             list is ordered by both.  `unwritten` points at the first not yet written.
 *             A reserved record is "filled" (images stamped and sealed) outside the lock
 *             and then marked ready; the writer takes only the ready prefix.  While the
 *             last record is ready and not yet taken ("open"), later transactions join it
 *             (rec_join) instead of reserving records of their own.
 *   map       fsblock -> the latest committed image of that block, its lsn, and first_lsn,
 *             the oldest sequence whose change to it is not yet in place.  The log tail may
 *             not pass min(first_lsn): those records are still needed by a replay.
 *   lpos      a 64-bit position that only grows; log block = 2 + lpos % usable.  The free
 *             room is usable - (head_lpos - tail_lpos), with tail_lpos the durable header's.
 *
 * Locks: `lock` guards all of the above; the cache lock nests inside it (marking buffers
 * dirty, mfs_bcache_checkpointed).  `ckpt_lock` serialises checkpoints and is taken
 * without `lock`.  No I/O is done under `lock`.
 *
 * The log thread (one a journal, from open to close) takes only these locks, in the same
 * order, and never a lock of the caller's (AG, inode): a committer that waits for it while
 * holding its own locks (for log room) cannot deadlock with it.  It sleeps on `logd_cv`
 * while idle; a commit that takes the queue past `write_thresh` or the log past
 * `ckpt_thresh` wakes it (see logd_main).
 */
#include "mem.h"
#include "journal.h"
#include "journal_priv.h"
#include "bcache.h"
#include "busy.h"
#include "byteorder.h"
#include "crc32c.h"
#include "dev.h"
#include "fs.h"
#include "log.h"
#include "verify.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define RESERVE_TRIES 16     /* checkpoints in a row that free nothing before -ENOSPC */
#define WBUF_BLOCKS   256    /* the writer's stream buffer (at most the log's size) */
/* The log thread writes the queue once 1/WRITE_FRAC of the log is queued (so a batch is a
 * few MiB with a default-size log: two flushes carry hundreds of transactions), and
 * checkpoints once 1/CKPT_FRAC of the log is in use, leaving the other half for the
 * commits that arrive during the checkpoint.  A committer forces the queue itself only
 * beyond 1/THROTTLE_FRAC of the log (the thread is far behind). */
#define WRITE_FRAC    8
#define RAW_MAX       128    /* blocks of changes queued (unjoined) before a write, at most */
#define CKPT_FRAC     2
#define THROTTLE_FRAC 4      /* of the log: the queue may reach 3/4 before a committer waits */

/* ---- images and the block map -------------------------------------------------------- */

/*
 * Images are recycled.  A commit allocates an image for every block of its transaction
 * before it takes the lock, and when it joins the open record most of them replace the
 * record's images of the same blocks, which are dropped at once; an image is also dropped
 * each time its record is written or checkpointed.  A free list turns that churn into a
 * pop and a push.  `pool_lock` is a leaf: jimg_put takes it under the journal lock,
 * jimg_alloc without.
 *
 * Images come from slabs: one anonymous mapping of SLAB_BYTES (page-aligned: an image of
 * a block of 4 KiB or more is page-aligned too) carved into slab_images() blocks, with the
 * images' headers in the slab's own array.  An image costs its block in resident memory;
 * one posix_memalign(4096, 4096) each cost about twice that in the heap, and the heap
 * freed after a large commit (a repair's: a thousand images and more) was not given back.
 *
 * Invariants (under pool_lock):
 *   - an image belongs to one slab for its life (im->slab): free, it is on that slab's
 *     free list; in use, on none.  npool counts the free images of every slab.
 *   - `slabs` lists, doubly linked, exactly the slabs with a free image.  jimg_alloc takes
 *     from the first; a new slab goes first, a full one that gets an image back goes last,
 *     so that images allocated together (which the journal drops together, as their
 *     records are written and checkpointed) share slabs.
 *   - a slab goes back to the system when its last image comes back and POOL_KEEP free
 *     images or more remain in the others; so once every image is free, at most
 *     POOL_KEEP / slab_images() slabs are left (each was kept while fewer than POOL_KEEP
 *     others were free), and a burst of commits beyond that is returned as it drains.
 */
#if defined(__SANITIZE_ADDRESS__)
/* One image a slab, from the heap, none kept: ASan sees every image's use after free. */
#define POOL_KEEP  0
#else
#define POOL_KEEP  256
#define SLAB_BYTES (256u << 10)
#endif

struct jslab {
	struct mfs_list link;       /* in j->slabs while it has a free image */
	struct jimg *free;          /* its free images */
	unsigned nfree, n;
	void *data;                 /* n blocks: image i's is the i-th */
	struct jimg img[];
};

static unsigned slab_images(const struct mfs_journal *j)
{
#ifdef SLAB_BYTES
	return SLAB_BYTES > j->bs ? SLAB_BYTES / j->bs : 1;
#else
	(void)j;
	return 1;
#endif
}

/* A new slab, every image free; NULL on ENOMEM (injected faults reach both parts). */
static struct jslab *slab_new(struct mfs_journal *j)
{
	unsigned n = slab_images(j);
	struct jslab *s = mfs_calloc(1, sizeof(*s) + n * sizeof(s->img[0]));

	if (!s)
		return NULL;
#ifdef SLAB_BYTES
	s->data = mfs_mem_should_fail() ? MAP_FAILED :
		  mmap(NULL, (size_t)n * j->bs, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (s->data == MAP_FAILED) {
		free(s);
		return NULL;
	}
#else
	s->data = mfs_jbuf_alloc(j->bs, n);
	if (!s->data) {
		free(s);
		return NULL;
	}
#endif
	mfs_list_init(&s->link);
	s->n = s->nfree = n;
	for (unsigned i = n; i-- > 0;) {
		struct jimg *im = &s->img[i];

		im->slab = s;
		im->own = im->data = (char *)s->data + (size_t)i * j->bs;
		im->next_free = s->free;
		s->free = im;
	}
	return s;
}

static void slab_release(struct mfs_journal *j, struct jslab *s)
{
#ifdef SLAB_BYTES
	munmap(s->data, (size_t)s->n * j->bs);
#else
	(void)j;
	free(s->data);
#endif
	free(s);
}

static struct jimg *jimg_alloc(struct mfs_journal *j)
{
	struct jslab *s;
	struct jimg *im;

	pthread_mutex_lock(&j->pool_lock);
	if (mfs_list_empty(&j->slabs)) {
		/* (Two committers may both add one: the spare stays listed, free.) */
		pthread_mutex_unlock(&j->pool_lock);
		s = slab_new(j);
		if (!s)
			return NULL;
		pthread_mutex_lock(&j->pool_lock);
		mfs_list_add(&j->slabs, &s->link);
		j->nslabs++;
		j->slab_allocs++;
		j->npool += s->n;
	}
	s = mfs_list_entry(mfs_list_first(&j->slabs), struct jslab, link);
	im = s->free;
	s->free = im->next_free;
	j->npool--;
	if (--s->nfree == 0)
		mfs_list_del(&s->link);
	pthread_mutex_unlock(&j->pool_lock);
	im->refs = 1;
	im->readers = 0;
	return im;
}

/* Image `im` no longer borrows its buffer (lock held, or the image not shared): it holds
 * its own bytes, or none if it is being freed.  Returns the buffer, whose reference the
 * caller drops (mfs_buf_put: the cache lock nests inside the journal's). */
static struct mfs_buf *img_unborrow(struct mfs_journal *j, struct jimg *im)
{
	struct mfs_buf *bp = im->bp;

	im->bp = NULL;
	im->data = im->own;
	__atomic_sub_fetch(&j->nborrowed, 1, __ATOMIC_RELEASE);
	return bp;
}

/* Lock held (or the image not yet shared). */
static void jimg_put(struct mfs_journal *j, struct jimg *im)
{
	struct jslab *s, *gone = NULL;

	if (!im || --im->refs != 0)
		return;
	if (im->bp)
		mfs_buf_put(img_unborrow(j, im));
	s = im->slab;
	pthread_mutex_lock(&j->pool_lock);
	im->next_free = s->free;
	s->free = im;
	j->npool++;
	if (s->nfree++ == 0)
		mfs_list_add_tail(&j->slabs, &s->link);
	if (s->nfree == s->n && j->npool >= POOL_KEEP + s->n) {
		mfs_list_del(&s->link);
		j->nslabs--;
		j->npool -= s->n;
		gone = s;
	}
	pthread_mutex_unlock(&j->pool_lock);
	if (gone)
		slab_release(j, gone);
}

/* At free: every image is back by then (each record's and map entry's put). */
static void pool_free(struct mfs_journal *j)
{
	struct mfs_list *n;

	while ((n = mfs_list_first(&j->slabs))) {
		struct jslab *s = mfs_list_entry(n, struct jslab, link);

		mfs_list_del(n);
		if (s->nfree != s->n)
			mfs_log(MFS_LOG_WARN, "journal: %u images of a slab still in use at close",
				s->n - s->nfree);
		slab_release(j, s);
		j->nslabs--;
	}
	/* A slab whose every image is in use is on no list: only the count knows of it. */
	if (j->nslabs)
		mfs_log(MFS_LOG_WARN, "journal: %u image slabs wholly in use at close (left "
			"mapped)", j->nslabs);
	j->npool = 0;
}

static size_t map_slot(const struct mfs_journal *j, uint64_t blkno)
{
	return (size_t)((blkno * 0x9e3779b97f4a7c15ull) >> 24) & j->map_mask;
}

/* The link that points at block `blkno`'s entry, or at the NULL ending its chain: one
 * walk serves a lookup and then an insertion or removal there (nothing else changes the
 * chain in between: the lock is held). */
static struct jent **map_link(struct mfs_journal *j, uint64_t blkno)
{
	struct jent **pp = &j->map[map_slot(j, blkno)];

	while (*pp && (*pp)->blkno != blkno)
		pp = &(*pp)->next;
	return pp;
}

static struct jent *map_find(struct mfs_journal *j, uint64_t blkno)
{
	return *map_link(j, blkno);
}

/* Remove the entry at `pp` (from map_link; not NULL). */
static void map_unlink(struct mfs_journal *j, struct jent **pp)
{
	struct jent *e = *pp;

	*pp = e->next;
	jimg_put(j, e->img);
	free(e);
	j->map_count--;
}

static void map_remove(struct mfs_journal *j, uint64_t blkno)
{
	struct jent **pp = map_link(j, blkno);

	if (*pp)
		map_unlink(j, pp);
}

/* Record at `pp` (from map_link) that `img` is the block's latest committed contents, as
 * of `lsn`, and return its entry.  Lock held.  A new entry is the caller's *spare,
 * allocated before the lock (then *spare is NULLed), so this cannot fail. */
static struct jent *map_set(struct mfs_journal *j, struct jent **pp, struct jent **spare,
			    uint64_t blkno, struct jimg *img, uint64_t lsn)
{
	struct jent *e = *pp;

	img->refs++;
	if (e) {
		/* (Equal: a later transaction joined the same record: its image is newer.) */
		if (lsn >= e->lsn) {
			jimg_put(j, e->img);
			e->img = img;
			e->lsn = lsn;
		} else {
			jimg_put(j, img);
		}
		return e;
	}
	e = *spare;
	*spare = NULL;
	e->blkno = blkno;
	e->img = img;
	e->lsn = e->first_lsn = lsn;
	e->busy = 0;
	e->ridx = UINT32_MAX;
	e->next = NULL;
	*pp = e;
	j->map_count++;
	return e;
}

/* A revoke in record r forgets entry e: until r is durable, the records from e->first_lsn
 * on must stay in the log (the block's home was never written). */
static void revoke_pin(struct jrec *r, const struct jent *e)
{
	if (!r->pin_first || e->first_lsn < r->pin_first)
		r->pin_first = e->first_lsn;
}

/* ---- records ------------------------------------------------------------------------- */

static void rec_free_images(struct mfs_journal *j, struct jrec *r)
{
	if (r->imgs)
		for (unsigned i = 0; i < r->nimg; i++)
			jimg_put(j, r->imgs[i]);
	free(r->imgs);
	free(r->blknos);
	free(r->bps);
	r->imgs = NULL;
	r->blknos = NULL;
	r->bps = NULL;
}

static void rec_free(struct mfs_journal *j, struct jrec *r)
{
	rec_free_images(j, r);
	free(r);
}

/* Tags one descriptor block holds. */
uint32_t mfs_jtags_per_desc(uint32_t bs)
{
	return (bs - (uint32_t)sizeof(struct mfs_jdesc)) / (uint32_t)sizeof(struct mfs_jtag);
}

uint32_t mfs_jrec_blocks(uint32_t bs, uint32_t nimg, uint32_t nrev)
{
	uint32_t tpd = mfs_jtags_per_desc(bs);
	uint32_t ntags = nimg + nrev;
	uint32_t nd = ntags ? (ntags + tpd - 1) / tpd : 1;

	return nd + nimg + 1;
}

uint64_t mfs_jlog_offset(const struct mfs_journal *j, uint32_t logblk)
{
	return (j->logstart + logblk) * (uint64_t)j->bs;
}

uint32_t mfs_jlpos_blk(const struct mfs_journal *j, uint64_t lpos)
{
	return MFS_JHDR_COPIES + (uint32_t)(lpos % j->usable);
}

/* Bounded wait: waits are short (I/O of a batch, a memcpy); a long one is reported. */
static void jwait(struct mfs_journal *j, const char *what)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += MFS_JOURNAL_WAIT_WARN;
	if (pthread_cond_timedwait(&j->cv, &j->lock, &ts) == ETIMEDOUT)
		mfs_log(MFS_LOG_WARN, "journal: still waiting for %s after %d s", what,
			MFS_JOURNAL_WAIT_WARN);
}

/* ---- I/O (see journal_priv.h) --------------------------------------------------------- */

void *mfs_jbuf_alloc(uint32_t bs, size_t nblocks)
{
	void *p;

	return mfs_posix_memalign(&p, 4096, nblocks * bs) ? NULL : p;
}

int mfs_jlog_io(struct mfs_journal *j, uint32_t logblk, uint32_t n, void *buf, int write)
{
	size_t len = (size_t)n * j->bs;
	int err = write ? mfs_dev_pwrite(j->dev, buf, len, mfs_jlog_offset(j, logblk))
			: mfs_dev_pread(j->dev, buf, len, mfs_jlog_offset(j, logblk));

	if (err)
		mfs_log(MFS_LOG_ERR, "journal: %s log blocks %u..%u failed: %s",
			write ? "writing" : "reading", logblk, logblk + n - 1, strerror(-err));
	else if (write && j->io_hook)
		j->io_hook(j->io_hook_arg, MFS_JIO_LOG_WRITE, logblk, n);
	return err;
}

int mfs_jlog_io_lpos(struct mfs_journal *j, uint64_t lpos, uint32_t n, void *buf, int write)
{
	int err = 0;

	for (uint32_t done = 0; done < n && !err;) {
		uint32_t blk = mfs_jlpos_blk(j, lpos + done);
		uint32_t run = j->logblocks - blk;

		if (run > n - done)
			run = n - done;
		err = mfs_jlog_io(j, blk, run, (char *)buf + (size_t)done * j->bs, write);
		done += run;
	}
	return err;
}

int mfs_jhome_write(struct mfs_journal *j, uint64_t blkno, const void *img)
{
	int err = mfs_dev_pwrite(j->dev, img, j->bs, blkno * (uint64_t)j->bs);

	if (err)
		mfs_log(MFS_LOG_ERR, "journal: writing block %llu in place failed: %s",
			(unsigned long long)blkno, strerror(-err));
	else if (j->io_hook)
		j->io_hook(j->io_hook_arg, MFS_JIO_HOME_WRITE, blkno, 1);
	return err;
}

/*
 * Flushes are numbered as they start; flush_covered is the highest number of one that
 * completed, so every write completed before that flush began is durable.
 *
 * A failed flush is sticky at the device (mfs_dev_flush: every later flush fails, whoever
 * issued the failed one — the journal, the buffer cache, an fsync without a journal), and
 * it kills the journal (j->err), as a failed log write: nothing written before it may
 * ever be taken as durable again — not by a later flush raising flush_covered past it,
 * not by a later fsync.  Only a successful flush raises flush_covered, and none after the
 * journal died.
 */
int mfs_jflush(struct mfs_journal *j)
{
	uint64_t my;
	int err;

	pthread_mutex_lock(&j->lock);
	my = ++j->flush_started;
	pthread_mutex_unlock(&j->lock);
	err = mfs_dev_flush(j->dev);
	pthread_mutex_lock(&j->lock);
	j->st.flushes++;
	if (err) {
		if (!j->err)
			__atomic_store_n(&j->err, err, __ATOMIC_RELEASE);
		pthread_cond_broadcast(&j->cv);     /* forces waiting for a batch: it is over */
	} else if (!j->err && my > j->flush_covered) {
		j->flush_covered = my;
	}
	pthread_mutex_unlock(&j->lock);
	if (err)
		mfs_log(MFS_LOG_ERR, "journal: flushing the device failed: %s", strerror(-err));
	else if (j->io_hook)
		j->io_hook(j->io_hook_arg, MFS_JIO_FLUSH, 0, 0);
	return err;
}

/* ---- header -------------------------------------------------------------------------- */

void mfs_jhdr_build(void *blk, uint32_t bs, const struct mfs_geom *geo, uint64_t gen,
		    uint32_t tail_blk, uint64_t tail_seq, uint32_t flags)
{
	struct mfs_jhdr *h = blk;

	memset(blk, 0, bs);
	mfs_put32(h->magic, MFS_JHDR_MAGIC);
	mfs_put64(h->gen, gen);
	memcpy(h->uuid, geo->uuid, 16);
	mfs_put32(h->version, MFS_JOURNAL_VERSION);
	mfs_put32(h->blocksize, bs);
	mfs_put64(h->logstart, geo->logstart);
	mfs_put32(h->logblocks, geo->logblocks);
	mfs_put32(h->tail_blk, tail_blk);
	mfs_put64(h->tail_seq, tail_seq);
	mfs_put32(h->flags, flags);
	mfs_blk_seal(blk, bs);       /* the crc sits at the same offset as in mfs_blkhdr */
}

/* Write the next header copy (the slot the current one is not in), then flush. */
int mfs_jhdr_write(struct mfs_journal *j, uint64_t tail_lpos, uint64_t tail_seq,
		      uint32_t flags)
{
	void *blk = j->hbuf;           /* preallocated: a header write never fails for memory */
	uint64_t gen = ++j->hdr_gen;
	int err;

	mfs_jhdr_build(blk, j->bs, &j->fs->geo, gen, mfs_jlpos_blk(j, tail_lpos), tail_seq, flags);
	err = mfs_jlog_io(j, (uint32_t)(gen % 2), 1, blk, 1);
	if (!err)
		err = mfs_jflush(j);
	if (err)
		mfs_log(MFS_LOG_ERR, "journal: writing the header failed: %s", strerror(-err));
	return err;
}

int mfs_journal_format(struct mfs_fs *fs)
{
	const struct mfs_geom *g = &fs->geo;
	uint32_t bs = g->blocksize;
	void *blk;
	int err = 0;

	if (g->logblocks < MFS_JOURNAL_MIN_BLOCKS || g->logstart + g->logblocks > g->dblocks) {
		mfs_log(MFS_LOG_ERR, "journal: log of %u blocks at %llu does not fit (at least %u "
			"blocks inside the %llu-block filesystem)", g->logblocks,
			(unsigned long long)g->logstart, MFS_JOURNAL_MIN_BLOCKS,
			(unsigned long long)g->dblocks);
		return -EINVAL;
	}
	blk = mfs_jbuf_alloc(bs, 1);
	if (!blk)
		return -ENOMEM;
	/* Copy 0 (gen 2) is current; copy 1 (gen 1) the same, older.  The first record
	 * block is zeroed so that nothing from a previous filesystem can look like one. */
	for (uint32_t slot = 0; slot < MFS_JHDR_COPIES && !err; slot++) {
		mfs_jhdr_build(blk, bs, g, slot == 0 ? 2 : 1, MFS_JHDR_COPIES, 1, MFS_JHDR_CLEAN);
		err = mfs_dev_pwrite(fs->dev, blk, bs, (g->logstart + slot) * (uint64_t)bs);
	}
	if (!err) {
		memset(blk, 0, bs);
		err = mfs_dev_pwrite(fs->dev, blk, bs,
				     (g->logstart + MFS_JHDR_COPIES) * (uint64_t)bs);
	}
	free(blk);
	if (!err)
		err = mfs_dev_flush(fs->dev);
	if (err)
		mfs_log(MFS_LOG_ERR, "journal: formatting the log failed: %s", strerror(-err));
	return err;
}

/* ---- commit -------------------------------------------------------------------------- */

/*
 * Joining the open record.  Transactions committed while the last record is still queued
 * (not taken by a writer) join it instead of making records of their own: the record's
 * image of a block they change is replaced by theirs, the blocks new to it are added,
 * their revokes added.  A record then carries many transactions under one sequence (each
 * is given that sequence as its lsn), all replayed or none; the log holds each block once
 * per record instead of once per transaction, so a directory block, an inode cluster or
 * an AG header changed by hundreds of transactions between two batches is written once.
 * Replay needs nothing new: within a record the last image of a block is the state after
 * every transaction of the record, and a block both freed and logged by the record keeps
 * only its last fate — an image (the revoke dropped: the image is written over whatever
 * older records left) or a revoke (the image dropped).
 *
 * The whole join runs under the lock (a transaction's copies are a few blocks): the
 * record may be taken by a writer the moment the lock is released, so it must be complete
 * by then.  A record grows by joins only while it is the last one, up to JOIN_MAX_FRAC of
 * the log, and only if the log has room for it; otherwise the commit makes a new record.
 */
#define JOIN_MAX_FRAC 8

static uint32_t rec_find(const uint64_t *v, uint32_t from, uint32_t to, uint64_t blkno)
{
	for (uint32_t k = from; k < to; k++)
		if (v[k] == blkno)
			return k;
	return UINT32_MAX;
}

/* Room in r's arrays for `nimg` more images and `nblk` more entries (lock held; r not
 * being read by a writer).  0, or -ENOMEM with r unchanged. */
static int rec_reserve(struct jrec *r, uint32_t nimg, uint32_t nblk)
{
	uint32_t want_img = r->nimg + nimg, want_blk = r->nimg + r->nrev + nblk;

	if (want_img > r->cap_img) {
		uint32_t cap = want_img * 2;
		struct jimg **imgs = mfs_realloc(r->imgs, cap * sizeof(*imgs));
		struct mfs_buf **bps;

		if (!imgs)
			return -ENOMEM;
		r->imgs = imgs;
		bps = mfs_realloc(r->bps, cap * sizeof(*bps));
		if (!bps)
			return -ENOMEM;
		r->bps = bps;
		r->cap_img = cap;
	}
	if (want_blk > r->cap_blk) {
		uint32_t cap = want_blk * 2;
		uint64_t *b = mfs_realloc(r->blknos, cap * sizeof(*b));

		if (!b)
			return -ENOMEM;
		r->blknos = b;
		r->cap_blk = cap;
	}
	return 0;
}

/* The index of block `blkno`'s image in record `r`, or UINT32_MAX, given the block's map
 * entry `e` (NULL: none): an entry of r's sequence is r's image, at the entry's hint
 * (checked; a scan if stale). */
static uint32_t rec_img_index(const struct jrec *r, const struct jent *e, uint64_t blkno)
{
	if (!e || e->lsn != r->seq)
		return UINT32_MAX;
	if (e->ridx < r->nimg && r->blknos[e->ridx] == blkno)
		return e->ridx;
	return rec_find(r->blknos, 0, r->nimg, blkno);
}

/*
 * Drop image `k` from record `r` (its block was freed by a joining transaction).  Images
 * and revokes within a record are sets (each block once), so the last image takes its
 * place and the last revoke the freed slot: no shift, one hint to fix.
 */
static void rec_drop_img(struct mfs_journal *j, struct jrec *r, uint32_t k)
{
	uint32_t last = r->nimg - 1;

	jimg_put(j, r->imgs[k]);
	if (k != last) {
		struct jent *e;

		r->imgs[k] = r->imgs[last];
		r->bps[k] = r->bps[last];
		r->blknos[k] = r->blknos[last];
		e = map_find(j, r->blknos[k]);
		if (e)
			e->ridx = k;
	}
	if (r->nrev)
		r->blknos[last] = r->blknos[last + r->nrev];
	r->nimg--;
}

/* Stamp `seq` into the buffer (metadata) and copy it into its image, or (borrow) seal the
 * buffer itself and make it the image's bytes (see "borrowed images"). */
static void img_fill(struct mfs_journal *j, struct jimg *im, struct mfs_buf *bp,
		     uint64_t seq, int borrow)
{
	int meta = mfs_buf_is_meta(bp);

	if (meta)
		mfs_put64(((struct mfs_blkhdr *)bp->data)->lsn, seq);
	if (borrow) {
		if (meta)
			mfs_blk_seal(bp->data, j->bs);
		mfs_buf_hold(bp);       /* the committer holds one: no cache lock */
		im->bp = bp;
		im->data = bp->data;
		__atomic_add_fetch(&j->nborrowed, 1, __ATOMIC_RELEASE);
		__atomic_add_fetch(&j->borrows, 1, __ATOMIC_RELAXED);
		return;
	}
	memcpy(im->data, bp->data, j->bs);
	if (meta)
		mfs_blk_seal(im->data, j->bs);
}

/*
 * Join transaction `t` (images allocated, not filled; `spares` for the map) to the last
 * record if it can: returns 1 with everything done (t's images now the record's or
 * dropped, used spares NULLed) and the record's sequence in *seq, 0 with nothing changed.
 * Lock held throughout.
 */
static int rec_join(struct mfs_journal *j, struct jrec *t, struct jent **spares,
		    unsigned flags, uint64_t *seq)
{
	struct jrec *r = j->rec_last;
	uint32_t worst, len;

	if (!r || !r->open || !r->ready || j->err)
		return 0;
	worst = mfs_jrec_blocks(j->bs, r->nimg + t->nimg, r->nrev + t->nrev);
	if (worst > j->usable / JOIN_MAX_FRAC ||
	    j->head_lpos - r->len + worst - j->tail_lpos > j->usable)
		return 0;
	/* A block being written in place by a checkpoint cannot be freed yet (see commit):
	 * leave the wait to the ordinary path. */
	for (uint32_t i = 0; i < t->nrev; i++) {
		struct jent *e = map_find(j, t->blknos[t->nimg + i]);

		if (e && e->busy)
			return 0;
	}
	if (rec_reserve(r, t->nimg, t->nimg + t->nrev))
		return 0;

	/* One map walk a block (map_link): it finds the entry, its image in r by the hint,
	 * and where a new entry goes. */
	for (uint32_t i = 0; i < t->nimg; i++) {
		uint64_t blkno = t->blknos[i];
		struct jent **pp = map_link(j, blkno);
		uint32_t k = rec_img_index(r, *pp, blkno);

		img_fill(j, t->imgs[i], t->bps[i], r->seq, !!(flags & MFS_JCOMMIT_BORROW));
		if (k != UINT32_MAX) {
			jimg_put(j, r->imgs[k]);
		} else {
			uint64_t *rev = r->blknos + r->nimg;
			uint32_t kr = rec_find(rev, 0, r->nrev, blkno);

			if (kr != UINT32_MAX)           /* freed, now logged again: an image */
				rev[kr] = rev[--r->nrev];
			/* The first revoke moves to the end, making room for the new image. */
			if (r->nrev)
				rev[r->nrev] = rev[0];
			k = r->nimg++;
			r->blknos[k] = blkno;
		}
		r->imgs[k] = t->imgs[i];
		r->bps[k] = t->bps[i];
		t->imgs[i] = NULL;
		map_set(j, pp, &spares[i], blkno, r->imgs[k], r->seq)->ridx = k;
		mfs_buf_mark_dirty_lsn(r->bps[k], r->seq);
	}
	for (uint32_t i = 0; i < t->nrev; i++) {
		uint64_t blkno = t->blknos[t->nimg + i];
		struct jent **pp = map_link(j, blkno);
		uint32_t k = rec_img_index(r, *pp, blkno);

		if (k != UINT32_MAX)                    /* logged, now freed: a revoke */
			rec_drop_img(j, r, k);
		if (rec_find(r->blknos, r->nimg, r->nimg + r->nrev, blkno) == UINT32_MAX)
			r->blknos[r->nimg + r->nrev++] = blkno;
		if (*pp) {
			revoke_pin(r, *pp);
			map_unlink(j, pp);
		}
	}
	len = mfs_jrec_blocks(j->bs, r->nimg, r->nrev);
	j->head_lpos = j->head_lpos - r->len + len;
	j->pending_blocks = j->pending_blocks - r->len + len;
	r->len = len;
	r->raw += t->len;
	if (flags & MFS_JCOMMIT_BORROW)
		r->nborrow += t->nimg;
	j->pending_raw += t->len;
	j->st.commits++;
	j->st.joins++;
	if (!(flags & MFS_JCOMMIT_NODATA))
		r->fseq = j->flush_started;
	*seq = r->seq;
	return 1;
}

/*
 * Whether the queue is due to be written (lock held): when it fills an eighth of the log,
 * or when its transactions would, had they not joined records.  The second keeps how far
 * durability trails asynchronous changes where it was before joins (an eighth of the log
 * of changes, not of the much smaller records they make), at the cost of writing joined
 * records sooner than the log's room needs.
 */
static int queue_due(const struct mfs_journal *j)
{
	return !j->writing && (j->pending_blocks >= j->write_thresh ||
			       j->pending_raw >= j->raw_thresh);
}

/* Whether the log thread has work: enough queued to write, or a log to checkpoint.  Lock
 * held. */
static int logd_has_work(const struct mfs_journal *j)
{
	if (j->err)
		return 0;
	if (queue_due(j))
		return 1;
	return !j->ckpt_running && j->head_lpos - j->tail_lpos > j->ckpt_thresh;
}

static void logd_respawn(struct mfs_journal *j);

/* Wake the log thread if it sleeps and has work (lock held).  Cheap when it is awake.
 * In a forked child, start its log thread first (see "fork()" below). */
static void logd_kick(struct mfs_journal *j)
{
	if (j->logd_respawn)
		logd_respawn(j);
	if (j->logd_idle && logd_has_work(j)) {
		j->logd_idle = 0;
		pthread_cond_signal(&j->logd_cv);
	}
}

int mfs_journal_commit(struct mfs_journal *j, const struct mfs_jitem *items, unsigned n,
		       const uint64_t *revs, uint64_t nrevs, unsigned flags, uint64_t *lsn)
{
	struct jrec *r;
	struct jent **spares = NULL;
	uint32_t nimg = 0, nrev = 0, len;
	int err = 0;

	*lsn = 0;
	for (unsigned i = 0; i < n; i++) {
		if (items[i].bp)
			nimg++;
		else
			nrev++;
	}
	/* (refused before the sums below: more tags than the whole log holds descriptors
	 * for cannot fit, and could overflow them) */
	if (nrevs > (uint64_t)j->usable * mfs_jtags_per_desc(j->bs)) {
		mfs_log(MFS_LOG_ERR, "journal: a transaction freeing %llu blocks does not fit the "
			"%u-block log", (unsigned long long)nrevs, j->usable);
		return -ENOSPC;
	}
	nrev += (uint32_t)nrevs;
	len = mfs_jrec_blocks(j->bs, nimg, nrev);
	if (len > j->usable) {
		mfs_log(MFS_LOG_ERR, "journal: a transaction of %u blocks (%u changed, %u freed) "
			"does not fit the %u-block log", len, nimg, nrev, j->usable);
		return -ENOSPC;
	}

	/* Copy the images (the caller's locks keep the buffers still) and allocate
	 * everything the locked part needs, so that it cannot fail. */
	r = mfs_calloc(1, sizeof(*r));
	if (!r)
		return -ENOMEM;
	r->len = len;
	r->open = 1;
	r->cap_img = nimg ? nimg : 1;
	r->cap_blk = nimg + nrev ? nimg + nrev : 1;
	r->imgs = mfs_calloc(r->cap_img, sizeof(*r->imgs));
	r->bps = mfs_calloc(r->cap_img, sizeof(*r->bps));
	r->blknos = mfs_calloc(r->cap_blk, sizeof(*r->blknos));
	spares = mfs_calloc(nimg ? nimg : 1, sizeof(*spares));
	if (!r->imgs || !r->bps || !r->blknos || !spares)
		goto nomem;
	for (unsigned i = 0; i < n; i++) {
		if (!items[i].bp) {
			r->blknos[nimg + r->nrev++] = items[i].blkno;
			continue;
		}
		r->imgs[r->nimg] = jimg_alloc(j);
		spares[r->nimg] = mfs_malloc(sizeof(**spares));
		if (!r->imgs[r->nimg] || !spares[r->nimg]) {
			free(spares[r->nimg]);
			spares[r->nimg] = NULL;
			jimg_put(j, r->imgs[r->nimg]);
			r->imgs[r->nimg] = NULL;
			goto nomem;
		}
		r->bps[r->nimg] = items[i].bp;
		r->blknos[r->nimg] = items[i].bp->blkno;
		r->nimg++;
	}
	for (uint64_t i = 0; i < nrevs; i++)
		r->blknos[nimg + r->nrev++] = revs[i];

	/* Join the open record, or reserve a sequence and the log space together. */
	pthread_mutex_lock(&j->lock);
	if (rec_join(j, r, spares, flags, lsn)) {
		logd_kick(j);
		pthread_mutex_unlock(&j->lock);
		goto out;               /* r: the emptied shell, freed below */
	}
	/*
	 * Room for the record: wait for a running checkpoint, or run one.  There is one queue
	 * for room, of one: the first commit that finds none claims the room to come
	 * (room_claim), and until it has it, every other commit that needs log space waits
	 * behind it, even where there is room (joins of the open record stay: bounded, and
	 * no record is open once a checkpoint forced the log).  So the room its own
	 * checkpoint frees is its own, and it goes in after one, whatever the load: without
	 * the claim, small commits took it each time and a big one waited for ever.  It gives
	 * up (-ENOSPC) only when its own checkpoints free nothing RESERVE_TRIES times in a row
	 * (the log cannot drain: it never happens to a live journal, whose checkpoint forces
	 * and writes back every record).
	 */
	for (uint64_t tail = j->tail_lpos, stuck = 0;;) {
		if (j->err) {
			err = j->err;
			break;
		}
		if (j->room_claim && j->room_claim != r) {
			j->st.room_waits++;
			jwait(j, "an earlier commit to get log room");
			continue;
		}
		if (j->head_lpos + len - j->tail_lpos <= j->usable)
			break;
		j->room_claim = r;
		if (j->tail_lpos != tail) {
			tail = j->tail_lpos;    /* the log drains, if not enough yet */
			stuck = 0;
		}
		if (j->ckpt_running) {
			/* The log thread (or another caller) is checkpointing: its end moves the
			 * tail; wait for it rather than queue up a second one behind it. */
			j->st.room_waits++;
			jwait(j, "a checkpoint to free log space");
			continue;
		}
		if (stuck == RESERVE_TRIES) {
			mfs_log(MFS_LOG_ERR, "journal: no room for a %u-block transaction: %d "
				"checkpoints in a row freed no log space", len, RESERVE_TRIES);
			err = -ENOSPC;
			break;
		}
		pthread_mutex_unlock(&j->lock);
		err = mfs_journal_checkpoint(j);
		pthread_mutex_lock(&j->lock);
		if (err)
			break;
		stuck++;
	}
	if (j->room_claim == r) {
		j->room_claim = NULL;
		pthread_cond_broadcast(&j->cv);         /* the commits behind it */
	}
	if (err) {
		pthread_mutex_unlock(&j->lock);
		goto out;
	}
	r->seq = j->next_seq++;
	r->lpos = j->head_lpos;
	j->head_lpos += len;
	if (j->rec_last)
		j->rec_last->next = r;
	else
		j->rec_first = r;
	j->rec_last = r;
	if (!j->unwritten)
		j->unwritten = r;
	pthread_mutex_unlock(&j->lock);

	/* Fill: stamp the sequence into each metadata block, copy and seal. */
	for (unsigned i = 0; i < r->nimg; i++)
		img_fill(j, r->imgs[i], r->bps[i], r->seq, !!(flags & MFS_JCOMMIT_BORROW));
	if (flags & MFS_JCOMMIT_BORROW)
		r->nborrow = r->nimg;

	pthread_mutex_lock(&j->lock);
	for (unsigned i = 0; i < r->nimg; i++) {
		struct jent **pp = map_link(j, r->blknos[i]);

		map_set(j, pp, &spares[i], r->blknos[i], r->imgs[i], r->seq)->ridx = i;
		mfs_buf_mark_dirty_lsn(r->bps[i], r->seq);
	}
	for (unsigned i = 0; i < r->nrev; i++) {
		uint64_t blkno = r->blknos[r->nimg + i];
		struct jent *e;

		/* Freed while the checkpoint writes its old image in place: once this commit
		 * returns, the block may be reused, so that write must be over first. */
		while ((e = map_find(j, blkno)) && e->busy) {
			j->st.revoke_waits++;
			jwait(j, "a checkpoint write of a freed block");
		}
		if (e)
			revoke_pin(r, e);
		map_remove(j, blkno);
	}
	r->ready = 1;
	r->fseq = flags & MFS_JCOMMIT_NODATA ? 0 : j->flush_started;
	r->raw = len;
	j->st.commits++;
	j->pending_blocks += len;
	j->pending_raw += len;
	*lsn = r->seq;          /* now: once unlocked, r may be written, checkpointed, freed */
	pthread_cond_broadcast(&j->cv);
	logd_kick(j);
	pthread_mutex_unlock(&j->lock);
	/* Queued: from here on the change is committed in memory and this returns 0.  Any
	 * wait for the log is the caller's, after it has released its locks. */
	r = NULL;
	goto out;

nomem:
	err = -ENOMEM;
out:
	if (spares)
		for (unsigned i = 0; i < nimg; i++)
			free(spares[i]);
	free(spares);
	if (r)
		rec_free(j, r);
	return err;
}

/* ---- borrowed images ------------------------------------------------------------------ */

/*
 * A commit with MFS_JCOMMIT_BORROW (a rebuild's: thousands of changed leaves, each already
 * a pinned buffer of the cache) does not copy its buffers: each image's `data` is the
 * buffer's own bytes (sealed in place), and the image holds a reference to the buffer
 * until it is freed.  The image's own block of its slab is still reserved, never touched
 * (an untouched page of an anonymous mapping costs no memory), so that giving the image
 * its copy later cannot fail.
 *
 * Invariants (under the lock):
 *   - a borrowed image whose buffer is still in the cache's hash is its block's map entry
 *     (e->img).  A newer image of the block needs a transaction that joined the buffer,
 *     which froze it first (mfs_journal_freeze, from mfs_trans_modify/get_new); a revoke
 *     removes the entry, but its transaction then forgets the block (the buffer leaves the
 *     hash, unwritten and unchanged; the image's reference keeps its bytes until the
 *     record holding them is written); a checkpoint removes the entry only once the image
 *     is in place, and puts it.
 *   - the bytes are read, outside the lock, by the writer of the record holding the image
 *     (im->readers > 0, from batch_take to the end of its batch) and by a checkpoint
 *     writing the block in place (its entry's `busy`).  A freeze waits for both, so a
 *     buffer changes only once nothing reads it as an image.
 *   - nborrowed counts the borrowed images; while it is 0, a freeze is one atomic load.
 */
void mfs_journal_freeze(struct mfs_journal *j, uint64_t blkno)
{
	struct mfs_buf *bp = NULL;
	struct jent *e;

	if (!j || !__atomic_load_n(&j->nborrowed, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&j->lock);
	while ((e = map_find(j, blkno)) && e->img->bp) {
		struct jimg *im = e->img;

		if (im->readers || e->busy) {
			jwait(j, "a log or checkpoint write reading a buffer about to change");
			continue;
		}
		memcpy(im->own, im->data, j->bs);
		bp = img_unborrow(j, im);
		j->freezes++;
		break;
	}
	pthread_mutex_unlock(&j->lock);
	/* The caller holds the buffer or its block is being allocated anew (get_new): either
	 * way this is not a write, at most the cache freeing an unhashed buffer. */
	mfs_buf_put(bp);
}

/* ---- writing a batch of records ------------------------------------------------------- */

static void jblk_fill(void *blk, uint32_t magic, uint64_t seq, const uint8_t uuid[16],
		      uint32_t index)
{
	struct mfs_jblk *h = blk;

	memset(h, 0, sizeof(*h));
	mfs_put32(h->magic, magic);
	mfs_put64(h->seq, seq);
	memcpy(h->uuid, uuid, 16);
	mfs_put32(h->index, index);
}

/*
 * The writer's stream: log blocks are laid out one at a time in the journal's own buffer
 * (allocated at open, WBUF_BLOCKS blocks) and written out each time it fills, so that
 * writing a batch never allocates.  A force that failed for want of memory would have to
 * either leave committed transactions unwritable or kill the log; with no allocation on
 * this path, the only errors here are the device's.
 */
struct jstream {
	struct mfs_journal *j;
	uint64_t lpos;              /* log position of the first buffered block */
	uint32_t used;              /* blocks buffered */
	int err;
};

static int js_flush(struct jstream *st)
{
	if (st->used && !st->err)
		st->err = mfs_jlog_io_lpos(st->j, st->lpos, st->used, st->j->wbuf, 1);
	st->lpos += st->used;
	st->used = 0;
	return st->err;
}

/* The next block of the stream (its bytes undefined). */
static void *js_next(struct jstream *st)
{
	if (st->used == st->j->wbuf_blocks)
		js_flush(st);
	return (char *)st->j->wbuf + (size_t)st->used++ * st->j->bs;
}

/* Lay record `r` out in the stream: descriptors, images, and the commit block whose CRC
 * covers every block before it. */
static void rec_stream(struct jstream *st, const struct jrec *r)
{
	struct mfs_journal *j = st->j;
	uint32_t bs = j->bs, tpd = mfs_jtags_per_desc(bs);
	uint32_t ntags = r->nimg + r->nrev;
	uint32_t nd = r->len - r->nimg - 1;
	const uint8_t *uuid = j->fs->geo.uuid;
	struct mfs_jcommit *c;
	uint32_t crc = 0;

	for (uint32_t d = 0; d < nd; d++) {
		struct mfs_jdesc *dh = js_next(st);
		struct mfs_jtag *tags = (struct mfs_jtag *)(dh + 1);
		uint32_t first = d * tpd;
		uint32_t cnt = ntags - first < tpd ? ntags - first : tpd;

		memset(dh, 0, bs);
		jblk_fill(dh, MFS_JDESC_MAGIC, r->seq, uuid, d);
		mfs_put32(dh->ndesc, nd);
		mfs_put32(dh->ntags, cnt);
		mfs_put32(dh->ntags_total, ntags);
		mfs_put32(dh->nimages, r->nimg);
		for (uint32_t t = 0; t < cnt; t++) {
			uint32_t k = first + t;

			mfs_put64(tags[t].fsblock, r->blknos[k]);
			if (k < r->nimg)
				memcpy(tags[t].head, r->imgs[k]->data, MFS_JBLK_SIZE);
			else
				mfs_put32(tags[t].flags, MFS_JTAG_REVOKE);
		}
		mfs_blk_seal(dh, bs);
		crc = mfs_crc32c(crc, dh, bs);
	}
	for (uint32_t i = 0; i < r->nimg; i++) {
		char *b = js_next(st);

		memcpy(b, r->imgs[i]->data, bs);
		jblk_fill(b, MFS_JIMG_MAGIC, r->seq, uuid, nd + i);
		mfs_blk_seal(b, bs);
		crc = mfs_crc32c(crc, b, bs);
	}
	c = js_next(st);
	memset(c, 0, bs);
	jblk_fill(c, MFS_JCMT_MAGIC, r->seq, uuid, r->len - 1);
	mfs_put32(c->nblocks, r->len);
	mfs_put32(c->ntags, ntags);
	mfs_put32(c->data_crc, crc);
	mfs_put64(c->time, (uint64_t)time(NULL));
	mfs_blk_seal(c, bs);
}

/*
 * The log's first lap on an image file.  mkfs leaves the log region sparse (holes cost
 * nothing), so each batch of the first lap writes into holes: the host filesystem
 * allocates blocks for it, and the batch's flush (fdatasync) then writes the host's own
 * metadata too, synchronously — for a small forced batch (an fsync) that costs as much as
 * the batch.  So a batch whose end reaches the holes (fill_blk) also writes zeroes over the
 * FILL_BLOCKS log blocks after it, in the same flush: the host allocates once per
 * FILL_BLOCKS, and the batches that follow overwrite allocated blocks.  The zeroes go
 * only into free log space (from this batch's end, short of the tail): they read as the
 * holes did, and replay stops at them as at any block that is not the next record.  A
 * failure only stops the filling (the host may be short of space where the records still
 * fit): the log is the same without it.  The writer's alone (j->writing).
 */
#define FILL_BLOCKS 256

void mfs_jfill_init(struct mfs_journal *j)
{
	uint64_t start = mfs_jlog_offset(j, MFS_JHDR_COPIES);
	off_t hole;

	j->fill_blk = j->logblocks;
	if (mfs_dev_is_blockdev(j->dev))
		return;
	hole = lseek(mfs_dev_fd(j->dev), (off_t)start, SEEK_HOLE);
	if (hole < 0 || (uint64_t)hole >= mfs_jlog_offset(j, j->logblocks))
		return;
	j->zbuf = mfs_jbuf_alloc(j->bs, FILL_BLOCKS);
	if (!j->zbuf)
		return;
	memset(j->zbuf, 0, (size_t)FILL_BLOCKS * j->bs);
	j->fill_blk = (uint32_t)(((uint64_t)hole - mfs_jlog_offset(j, 0)) / j->bs);
}

static void fill_stop(struct mfs_journal *j)
{
	free(j->zbuf);
	j->zbuf = NULL;
	j->fill_blk = j->logblocks;
}

/* After a batch that ends at `end_lpos`, with the tail at `tail_lpos`. */
static void fill_ahead(struct mfs_journal *j, uint64_t end_lpos, uint64_t tail_lpos)
{
	uint32_t nb = mfs_jlpos_blk(j, end_lpos), to;
	uint64_t room = tail_lpos + j->usable - end_lpos;     /* free blocks from the end */
	int err;

	if (!j->zbuf || nb < j->fill_blk)
		return;
	to = j->logblocks - nb < FILL_BLOCKS ? j->logblocks : nb + FILL_BLOCKS;
	if (to - nb > room)
		to = nb + (uint32_t)room;
	if (to > nb) {
		err = mfs_dev_pwrite(j->dev, j->zbuf, (size_t)(to - nb) * j->bs,
				     mfs_jlog_offset(j, nb));
		if (err) {
			mfs_log(MFS_LOG_INFO, "journal: writing zeroes over log blocks %u..%u "
				"failed (%s): the rest of the log is left sparse", nb, to - 1,
				strerror(-err));
			fill_stop(j);
			return;
		}
		if (j->io_hook)
			j->io_hook(j->io_hook_arg, MFS_JIO_LOG_FILL, nb, to - nb);
		pthread_mutex_lock(&j->lock);
		j->st.blocks_filled += to - nb;
		pthread_mutex_unlock(&j->lock);
	}
	j->fill_blk = to;
	if (to == j->logblocks)
		fill_stop(j);
}

/* The writer streams record r's borrowed images (+1) or is done with them (-1): a
 * freeze waits for it meanwhile (lock held). */
static void rec_readers(struct jrec *r, int d)
{
	if (r->nborrow)
		for (uint32_t i = 0; i < r->nimg; i++)
			if (r->imgs[i]->bp)
				r->imgs[i]->readers += d;
}

/*
 * Write records first..last (contiguous in the log) between two device flushes.  No lock
 * held: the records are ready and nobody changes or frees them until durable_seq passes
 * them; only the one writer (j->writing) uses the stream buffer.
 *
 * Ordered data, as jbd2 and XFS do it: every data block a record maps was written (pwrite)
 * by its committer before the commit queued the record, but a write is only in the
 * device's volatile cache until a flush.  The flush BEFORE the log write makes those data
 * blocks durable before any commit block that maps them can be; the flush AFTER makes the
 * records themselves durable before anyone is told so.  Group commit keeps this at two
 * flushes per batch, however many transactions it carries.
 *
 * The first flush is left out when one that began after the batch's last commit has
 * already completed (`preflush` 0, decided by batch_take from the records' fseq): it
 * covered every write issued before those commits, which is all the ordering needs.  A
 * batch whose transactions committed while the previous batch waited for its second
 * flush, or a force right after another thread's fsync, thus costs one flush.
 */
static int batch_write(struct mfs_journal *j, struct jrec *first, struct jrec *last,
		       uint64_t tail_lpos, int preflush)
{
	uint64_t nblocks = last->lpos + last->len - first->lpos;
	struct jstream st = { j, first->lpos, 0, 0 };
	int err;

	err = preflush ? mfs_jflush(j) : 0;
	if (!err) {
		for (struct jrec *r = first;; r = r->next) {
			rec_stream(&st, r);
			if (r == last || st.err)
				break;
		}
	}
	/* The borrowed bytes are in the stream buffer (or never will be): a freeze need not
	 * wait for the writes and the flush. */
	pthread_mutex_lock(&j->lock);
	for (struct jrec *r = first;; r = r->next) {
		rec_readers(r, -1);
		if (r == last)
			break;
	}
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->lock);
	if (!err)
		err = js_flush(&st);
	if (!err)
		fill_ahead(j, last->lpos + last->len, tail_lpos);
	if (!err)
		err = mfs_jflush(j);
	if (err)
		mfs_log(MFS_LOG_ERR, "journal: writing records %llu..%llu failed: %s; the "
			"filesystem must stop writing", (unsigned long long)first->seq,
			(unsigned long long)last->seq, strerror(-err));
	pthread_mutex_lock(&j->lock);
	j->st.blocks_logged += nblocks;
	j->st.writes++;
	pthread_mutex_unlock(&j->lock);
	return err;
}

/*
 * Become the writer and write the ready prefix of the queue as one batch.  Lock held on
 * entry and exit, dropped for the I/O.  Returns 0 when there was nothing to take (another
 * writer at work, a dead log, or the next record still being filled), 1 when a batch was
 * written or failed (the failure is then the sticky error).  Allocates nothing.
 */
static int batch_take(struct mfs_journal *j)
{
	struct jrec *first = j->unwritten, *last = NULL, *r;
	uint64_t tail_lpos = j->tail_lpos;
	int err, preflush = 0;

	if (j->writing || j->err)
		return 0;
	for (r = first; r && r->ready; r = r->next)
		last = r;
	if (!last)
		return 0;
	j->writing = 1;
	j->unwritten = last->next;
	for (r = first;; r = r->next) {
		r->open = 0;            /* taken: nothing joins it any more */
		if (r->fseq >= j->flush_covered)
			preflush = 1;   /* no flush begun since its commit has completed */
		rec_readers(r, 1);
		if (r == last)
			break;
	}
	if (!preflush)
		j->st.preflushes_saved++;
	pthread_mutex_unlock(&j->lock);

	err = batch_write(j, first, last, tail_lpos, preflush);

	pthread_mutex_lock(&j->lock);
	j->writing = 0;
	if (err) {
		__atomic_store_n(&j->err, err, __ATOMIC_RELEASE);
	} else {
		j->durable_seq = last->seq;
		mfs_busy_durable(j->busy, last->seq);
		for (r = first;; r = r->next) {
			j->pending_blocks -= r->len;
			j->pending_raw -= r->raw;
			rec_free_images(j, r);
			if (r == last)
				break;
		}
	}
	pthread_cond_broadcast(&j->cv);
	logd_kick(j);           /* queued meanwhile past the mark, or the log past half */
	return 1;
}

int mfs_journal_force_lsn(struct mfs_journal *j, uint64_t lsn)
{
	int err;

	pthread_mutex_lock(&j->lock);
	if (lsn >= j->next_seq) {
		/* Never handed out: no record will ever carry it, so waiting would never end.
		 * (A record being filled already has its sequence, below next_seq.) */
		uint64_t next = j->next_seq;

		pthread_mutex_unlock(&j->lock);
		mfs_log(MFS_LOG_ERR, "journal: asked to make sequence %llu durable, but the last "
			"one given is %llu", (unsigned long long)lsn, (unsigned long long)next - 1);
		return -EINVAL;
	}
	/* Group commit: the log thread's batch, or another caller's, may carry `lsn`; if
	 * nobody is writing, this thread writes whatever is ready itself. */
	while (j->durable_seq < lsn && !j->err) {
		if (j->writing)
			jwait(j, "the log writer");
		else if (!batch_take(j))
			jwait(j, "a transaction being filled");   /* (a memcpy) */
	}
	err = j->durable_seq >= lsn ? 0 : j->err;
	pthread_mutex_unlock(&j->lock);
	return err;
}

int mfs_journal_throttle(struct mfs_journal *j, uint64_t lsn)
{
	int err, behind;

	pthread_mutex_lock(&j->lock);
	err = j->err;
	behind = j->pending_blocks > j->usable - j->usable / THROTTLE_FRAC;
	if (!err && behind)
		j->st.throttle_forces++;
	pthread_mutex_unlock(&j->lock);
	if (err)
		return err;
	/* The log thread writes the queue long before this; a queue this long means it is
	 * far behind the committers: wait with it (and write, if it is between batches). */
	return behind ? mfs_journal_force_lsn(j, lsn) : 0;
}

int mfs_journal_force(struct mfs_journal *j)
{
	uint64_t lsn;

	pthread_mutex_lock(&j->lock);
	lsn = j->next_seq - 1;
	pthread_mutex_unlock(&j->lock);
	return mfs_journal_force_lsn(j, lsn);
}

int mfs_journal_sync(struct mfs_journal *j)
{
	uint64_t started;
	int err;

	pthread_mutex_lock(&j->lock);
	started = j->flush_started;
	err = j->err;           /* a failed flush: earlier writes may never reach the disk */
	pthread_mutex_unlock(&j->lock);
	if (!err)
		err = mfs_journal_force(j);
	if (err)
		return err;
	/*
	 * A flush that began after this call did (the log's own, when the force wrote a
	 * batch, or another fsync's) covers every write issued before it.  Otherwise flush,
	 * one fsync at a time: those that arrive while one flushes wait for it, and the next
	 * flush (begun after their calls) covers them all, so concurrent fsyncs of data
	 * overwritten in place share flushes as commits share batches.
	 */
	pthread_mutex_lock(&j->lock);
	while (j->flush_covered <= started && j->sync_flushing && !j->err)
		jwait(j, "another fsync's flush");
	if (j->err || j->flush_covered > started) {
		err = j->err;
		pthread_mutex_unlock(&j->lock);
		return err;
	}
	j->sync_flushing = 1;
	pthread_mutex_unlock(&j->lock);
	err = mfs_jflush(j);
	pthread_mutex_lock(&j->lock);
	j->sync_flushing = 0;
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->lock);
	return err;
}

/* ---- checkpoint ---------------------------------------------------------------------- */

struct ckpt_item {
	uint64_t blkno, lsn;
	struct jimg *img;
};

static int ckpt_cmp(const void *a, const void *b)
{
	const struct ckpt_item *x = a, *y = b;

	return x->blkno < y->blkno ? -1 : x->blkno > y->blkno;
}

int mfs_journal_checkpoint(struct mfs_journal *j)
{
	struct ckpt_item *items = NULL, *own = NULL;
	size_t n = 0, written = 0;
	uint64_t min_first, new_tail_seq, new_tail_lpos, old_tail_seq;
	int err;

	pthread_mutex_lock(&j->ckpt_lock);
	pthread_mutex_lock(&j->lock);
	j->ckpt_running = 1;
	pthread_mutex_unlock(&j->lock);
	err = mfs_journal_force(j);
	if (err)
		goto out_unlock;

	/* Take every block whose latest image is durable.  The list is the journal's own,
	 * allocated at open: each entry of the map has its image in a live record, so there
	 * are never more than the log's usable blocks, and a checkpoint needs no memory (a
	 * larger map, which would be a bug, gets an allocation of its own). */
	pthread_mutex_lock(&j->lock);
	items = j->ckpt_items;
	if (j->map_count > j->usable) {
		items = own = mfs_malloc(j->map_count * sizeof(*items));
		if (!items) {
			pthread_mutex_unlock(&j->lock);
			err = -ENOMEM;
			goto out_unlock;
		}
	}
	for (size_t s = 0; s <= j->map_mask; s++)
		for (struct jent *e = j->map[s]; e; e = e->next)
			if (e->lsn <= j->durable_seq) {
				e->img->refs++;
				items[n].blkno = e->blkno;
				items[n].lsn = e->lsn;
				items[n].img = e->img;
				n++;
			}
	pthread_mutex_unlock(&j->lock);

	if (n)
		qsort(items, n, sizeof(*items), ckpt_cmp);
	for (size_t i = 0; i < n && !err; i++) {
		struct jent *e;

		if (j->ckpt_hook)
			j->ckpt_hook(j->ckpt_hook_arg, items[i].blkno, 0);
		/*
		 * Freed since the snapshot (and maybe reused): the entry is gone, or is a new
		 * one whose history starts after the chosen image.  Writing the old image now
		 * could land over the block's new contents: skip it.  Otherwise mark the entry
		 * busy: a free of the block waits until the write is over (see commit), and
		 * only a revoke removes an entry outside this checkpoint, so `e` stays valid.
		 */
		pthread_mutex_lock(&j->lock);
		e = map_find(j, items[i].blkno);
		if (!e || e->first_lsn > items[i].lsn) {
			pthread_mutex_unlock(&j->lock);
			continue;
		}
		e->busy = 1;
		pthread_mutex_unlock(&j->lock);
		if (j->ckpt_hook)
			j->ckpt_hook(j->ckpt_hook_arg, items[i].blkno, 1);
		err = mfs_jhome_write(j, items[i].blkno, items[i].img->data);
		written += !err;
		pthread_mutex_lock(&j->lock);
		e->busy = 0;
		pthread_cond_broadcast(&j->cv);
		pthread_mutex_unlock(&j->lock);
	}
	if (!err)
		err = mfs_jflush(j);

	pthread_mutex_lock(&j->lock);
	for (size_t i = 0; i < n; i++) {
		struct jent *e = err ? NULL : map_find(j, items[i].blkno);

		if (e && e->lsn == items[i].lsn) {
			mfs_bcache_checkpointed(j->bc, e->blkno, e->lsn);
			map_remove(j, e->blkno);
		} else if (e && e->first_lsn <= items[i].lsn) {
			e->first_lsn = items[i].lsn + 1;
		}
		jimg_put(j, items[i].img);
	}
	if (err) {
		__atomic_store_n(&j->err, err, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&j->lock);
		mfs_log(MFS_LOG_ERR, "journal: checkpoint write failed: %s; the filesystem must "
			"stop writing", strerror(-err));
		goto out_unlock;
	}
	j->st.checkpoints++;
	j->st.blocks_checkpointed += written;

	/* The new tail: the oldest change not in place, or every durable record. */
	min_first = j->durable_seq + 1;
	for (const struct jrec *r = j->rec_first; r; r = r->next)
		if (r->seq > j->durable_seq && r->pin_first && r->pin_first < min_first)
			min_first = r->pin_first;
	for (size_t s = 0; s <= j->map_mask; s++)
		for (struct jent *e = j->map[s]; e; e = e->next)
			if (e->first_lsn < min_first)
				min_first = e->first_lsn;
	new_tail_seq = min_first;
	while (j->rec_first && j->rec_first->seq < new_tail_seq) {
		struct jrec *r = j->rec_first;

		j->rec_first = r->next;
		if (!j->rec_first)
			j->rec_last = NULL;
		rec_free(j, r);
	}
	new_tail_lpos = j->rec_first ? j->rec_first->lpos : j->head_lpos;
	if (j->rec_first && j->rec_first->seq != new_tail_seq)
		new_tail_seq = j->rec_first->seq;
	else if (!j->rec_first)
		new_tail_seq = j->next_seq;
	old_tail_seq = j->tail_seq;
	pthread_mutex_unlock(&j->lock);

	if (new_tail_seq != old_tail_seq) {
		/* The images are in place and flushed; only now may the header forget the
		 * records, and only once the header is durable may their space be reused. */
		err = mfs_jhdr_write(j, new_tail_lpos, new_tail_seq, 0);
		pthread_mutex_lock(&j->lock);
		if (err) {
			__atomic_store_n(&j->err, err, __ATOMIC_RELEASE);
		} else {
			j->tail_lpos = new_tail_lpos;
			j->tail_seq = new_tail_seq;
		}
		pthread_cond_broadcast(&j->cv);
		pthread_mutex_unlock(&j->lock);
		if (!err && j->ckpt_hook)
			j->ckpt_hook(j->ckpt_hook_arg, 0, 2);
	}
out_unlock:
	pthread_mutex_lock(&j->lock);
	j->ckpt_running = 0;
	pthread_cond_broadcast(&j->cv);         /* committers waiting for room re-check */
	logd_kick(j);                           /* the log may be past the mark again */
	pthread_mutex_unlock(&j->lock);
	pthread_mutex_unlock(&j->ckpt_lock);
	free(own);
	return err;
}

int mfs_journal_rewrite_header(struct mfs_journal *j)
{
	uint64_t tail_lpos, tail_seq;
	int err = mfs_journal_checkpoint(j);

	if (err)
		return err;
	pthread_mutex_lock(&j->ckpt_lock);      /* no other header write meanwhile */
	pthread_mutex_lock(&j->lock);
	tail_lpos = j->tail_lpos;
	tail_seq = j->tail_seq;
	err = j->err;
	pthread_mutex_unlock(&j->lock);
	for (uint32_t i = 0; i < MFS_JHDR_COPIES && !err; i++)
		err = mfs_jhdr_write(j, tail_lpos, tail_seq, 0);
	if (err) {
		pthread_mutex_lock(&j->lock);
		if (!j->err)
			/* as a failed checkpoint header write */
			__atomic_store_n(&j->err, err, __ATOMIC_RELEASE);
		pthread_mutex_unlock(&j->lock);
	}
	pthread_mutex_unlock(&j->ckpt_lock);
	return err;
}

/* ---- the log thread ------------------------------------------------------------------- */

/*
 * The log thread takes the log's own I/O off the committers: it writes the queue as a
 * batch once WRITE_FRAC of the log is queued, and checkpoints once more than CKPT_FRAC of
 * the log is in use, so that a committer finds room without waiting unless the
 * committers outrun the device.  A force (fsync) still writes the queue itself when the
 * thread is not writing: it need not wait for a wake-up.  After a failed checkpoint that
 * left the log alive (no memory for an oversized map, which is a bug), it waits a second
 * before the next try rather than spin.  It exits when asked, after the work in hand.
 */
static void *logd_main(void *arg)
{
	struct mfs_journal *j = arg;

	pthread_setname_np(pthread_self(), "mfs-journal");      /* for ps, perf, gdb */
	pthread_mutex_lock(&j->lock);
	while (!j->logd_stop) {
		if (!logd_has_work(j)) {
			j->logd_idle = 1;
			pthread_cond_wait(&j->logd_cv, &j->lock);
			j->logd_idle = 0;
			continue;
		}
		if (queue_due(j)) {
			if (batch_take(j))
				j->st.bg_writes++;
			else
				jwait(j, "a transaction being filled");   /* (a memcpy) */
			continue;
		}
		pthread_mutex_unlock(&j->lock);
		if (mfs_journal_checkpoint(j)) {
			struct timespec ts;

			pthread_mutex_lock(&j->lock);
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += 1;
			if (!j->logd_stop)
				pthread_cond_timedwait(&j->logd_cv, &j->lock, &ts);
			continue;
		}
		pthread_mutex_lock(&j->lock);
		j->st.bg_checkpoints++;
	}
	pthread_mutex_unlock(&j->lock);
	return NULL;
}

/*
 * fork().  A daemon opens its filesystem (and journal) before it daemonizes, and only the
 * forking thread survives a fork: the child would have no log thread, maybe a lock held
 * by the vanished one, and a join that never returns.  So every journal with a thread is
 * registered, and around a fork (pthread_atfork) each is quiesced: its checkpoint lock,
 * lock and image pool's lock taken, after any batch in flight ended, so that nothing is
 * half done.  The
 * parent just lets go; the child gets fresh condition variables (the vanished thread's
 * wait is no longer theirs), and a new log thread at its first commit (logd_kick: not in
 * the fork handler, where creating a thread is not safe).  If that cannot start, the child
 * runs without one: committers then write and checkpoint themselves (throttle, log full).
 */
static pthread_mutex_t logd_reg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct mfs_journal *logd_reg;        /* journals with a log thread */
static pthread_once_t logd_atfork_once = PTHREAD_ONCE_INIT;

static void logd_fork_prepare(void)
{
	pthread_mutex_lock(&logd_reg_lock);
	for (struct mfs_journal *j = logd_reg; j; j = j->logd_reg_next) {
		pthread_mutex_lock(&j->ckpt_lock);
		pthread_mutex_lock(&j->lock);
		while (j->writing || j->sync_flushing)
			jwait(j, "the log writer before a fork");
		pthread_mutex_lock(&j->pool_lock);
	}
}

static void logd_fork_parent(void)
{
	for (struct mfs_journal *j = logd_reg; j; j = j->logd_reg_next) {
		pthread_mutex_unlock(&j->pool_lock);
		pthread_mutex_unlock(&j->lock);
		pthread_mutex_unlock(&j->ckpt_lock);
	}
	pthread_mutex_unlock(&logd_reg_lock);
}

static void logd_fork_child(void)
{
	struct mfs_journal **pp = &logd_reg;

	for (; *pp; pp = &(*pp)->logd_reg_next) {
		struct mfs_journal *j = *pp;

		pthread_cond_init(&j->cv, NULL);
		pthread_cond_init(&j->logd_cv, NULL);
		j->room_claim = NULL;           /* its committer did not come along */
		j->logd_idle = 0;
		j->logd_stop = 0;
		j->logd_respawn = j->logd_running;
		j->logd_running = 0;
		pthread_mutex_unlock(&j->pool_lock);
		pthread_mutex_unlock(&j->lock);
		pthread_mutex_unlock(&j->ckpt_lock);
	}
	pthread_mutex_unlock(&logd_reg_lock);
}

static void logd_atfork_init(void)
{
	pthread_atfork(logd_fork_prepare, logd_fork_parent, logd_fork_child);
}

/* The child's log thread, at its first commit after a fork (lock held: the new thread
 * waits for it).  A failure is reported once; the journal then works without it. */
static void logd_respawn(struct mfs_journal *j)
{
	int err = pthread_create(&j->logd, NULL, logd_main, j);

	j->logd_respawn = 0;
	if (err)
		mfs_log(MFS_LOG_ERR, "journal: cannot restart the log thread after fork: %s; "
			"committers will write the log themselves", strerror(err));
	else
		j->logd_running = 1;
}

int mfs_jlogd_start(struct mfs_journal *j)
{
	int err;

	pthread_once(&logd_atfork_once, logd_atfork_init);
	err = pthread_create(&j->logd, NULL, logd_main, j);
	if (err) {
		mfs_log(MFS_LOG_ERR, "journal: cannot start the log thread: %s", strerror(err));
		return -err;
	}
	j->logd_running = 1;            /* not shared yet: no lock needed */
	pthread_mutex_lock(&logd_reg_lock);
	j->logd_reg_next = logd_reg;
	logd_reg = j;
	pthread_mutex_unlock(&logd_reg_lock);
	return 0;
}

/* Stop the log thread and wait for it: work it has begun (a batch, a checkpoint) ends
 * first.  Idempotent (close and discard call it before free does). */
static void jlogd_stop(struct mfs_journal *j)
{
	int running;

	pthread_mutex_lock(&logd_reg_lock);
	for (struct mfs_journal **pp = &logd_reg; *pp; pp = &(*pp)->logd_reg_next)
		if (*pp == j) {
			*pp = j->logd_reg_next;
			break;
		}
	pthread_mutex_unlock(&logd_reg_lock);
	pthread_mutex_lock(&j->lock);
	running = j->logd_running;
	j->logd_running = 0;
	j->logd_respawn = 0;
	j->logd_stop = 1;
	pthread_cond_signal(&j->logd_cv);
	pthread_mutex_unlock(&j->lock);
	if (running)
		pthread_join(j->logd, NULL);
}

/* The cache's flush hook. */
static int journal_sync(void *priv)
{
	return mfs_journal_checkpoint(priv);
}

/* ---- open, close --------------------------------------------------------------------- */

int mfs_journal_alloc(struct mfs_fs *fs, struct mfs_journal **out)
{
	const struct mfs_geom *g = &fs->geo;
	struct mfs_journal *j;
	size_t nslots = 256;

	*out = NULL;
	if (!g->agblocks)
		return MFS_CORRUPT("journal: geometry with 0-block AGs");
	if (g->logblocks < MFS_JOURNAL_MIN_BLOCKS || g->logstart > g->dblocks ||
	    g->logblocks > g->dblocks - g->logstart)
		return MFS_CORRUPT("journal: log of %u blocks at block %llu does not fit the "
				   "%llu-block filesystem (at least %u blocks)", g->logblocks,
				   (unsigned long long)g->logstart,
				   (unsigned long long)g->dblocks, MFS_JOURNAL_MIN_BLOCKS);
	j = mfs_calloc(1, sizeof(*j));
	if (!j)
		return -ENOMEM;
	mfs_list_init(&j->slabs);
	while (nslots < g->logblocks && nslots < (1u << 20))
		nslots <<= 1;
	j->map = mfs_calloc(nslots, sizeof(*j->map));
	if (!j->map) {
		free(j);
		return -ENOMEM;
	}
	j->wbuf_blocks = g->logblocks - MFS_JHDR_COPIES < WBUF_BLOCKS ?
			 g->logblocks - MFS_JHDR_COPIES : WBUF_BLOCKS;
	j->wbuf = mfs_jbuf_alloc(g->blocksize, j->wbuf_blocks);
	j->hbuf = mfs_jbuf_alloc(g->blocksize, 1);
	j->ckpt_items = mfs_malloc((size_t)(g->logblocks - MFS_JHDR_COPIES) *
				   sizeof(struct ckpt_item));
	if (!j->wbuf || !j->hbuf || !j->ckpt_items ||
	    mfs_busy_create(g->agcount ? g->agcount : 1, &j->busy)) {
		free(j->ckpt_items);
		free(j->wbuf);
		free(j->hbuf);
		free(j->map);
		free(j);
		return -ENOMEM;
	}
	j->map_mask = nslots - 1;
	j->fs = fs;
	j->dev = fs->dev;
	j->bc = fs->bc;
	j->bs = g->blocksize;
	j->logstart = g->logstart;
	j->logblocks = g->logblocks;
	j->usable = g->logblocks - MFS_JHDR_COPIES;
	j->write_thresh = j->usable / WRITE_FRAC ? j->usable / WRITE_FRAC : 1;
	j->ckpt_thresh = j->usable / CKPT_FRAC;
	j->raw_thresh = j->write_thresh < RAW_MAX ? j->write_thresh : RAW_MAX;
	pthread_mutex_init(&j->lock, NULL);
	pthread_mutex_init(&j->ckpt_lock, NULL);
	pthread_mutex_init(&j->pool_lock, NULL);
	pthread_cond_init(&j->cv, NULL);
	pthread_cond_init(&j->logd_cv, NULL);
	*out = j;
	return 0;
}

void mfs_journal_free(struct mfs_journal *j)
{
	struct jrec *r, *next;

	jlogd_stop(j);
	for (r = j->rec_first; r; r = next) {
		next = r->next;
		rec_free(j, r);
	}
	for (size_t s = 0; s <= j->map_mask; s++) {
		struct jent *e, *en;

		for (e = j->map[s]; e; e = en) {
			en = e->next;
			jimg_put(j, e->img);
			free(e);
		}
	}
	free(j->map);
	free(j->wbuf);
	free(j->hbuf);
	free(j->zbuf);
	free(j->ckpt_items);
	pool_free(j);
	mfs_busy_destroy(j->busy);
	pthread_mutex_destroy(&j->lock);
	pthread_mutex_destroy(&j->ckpt_lock);
	pthread_mutex_destroy(&j->pool_lock);
	pthread_cond_destroy(&j->cv);
	pthread_cond_destroy(&j->logd_cv);
	free(j);
}

void mfs_journal_attach(struct mfs_journal *j)
{
	j->fs->log = j;
	mfs_bcache_set_log(j->bc, journal_sync, j);
}

static void journal_detach(struct mfs_journal *j)
{
	if (j->fs->log == j)
		j->fs->log = NULL;
	if (j->bc)
		mfs_bcache_set_log(j->bc, NULL, NULL);
}

int mfs_journal_close(struct mfs_journal *j)
{
	int err;

	if (!j)
		return 0;
	jlogd_stop(j);      /* its batch or checkpoint in hand ends first */
	err = mfs_journal_checkpoint(j);
	if (!err) {
		pthread_mutex_lock(&j->lock);
		err = j->map_count || j->rec_first ? -EBUSY : 0;   /* commits during close */
		pthread_mutex_unlock(&j->lock);
		if (err)
			mfs_log(MFS_LOG_ERR, "journal: transactions committed during close");
	}
	if (!err)
		err = mfs_jhdr_write(j, j->tail_lpos, j->tail_seq, MFS_JHDR_CLEAN);
	journal_detach(j);
	mfs_journal_free(j);
	return err;
}

void mfs_journal_kill(struct mfs_journal *j, int err)
{
	(void)mfs_journal_force(j);     /* a failure here is the sticky error already */
	pthread_mutex_lock(&j->lock);
	/* EIO whatever the cause (named in the log): callers take EINTR, EAGAIN or ENOMEM for
	 * something to wait out and try again, which a dead journal never is */
	if (!j->err)
		__atomic_store_n(&j->err, -EIO, __ATOMIC_RELEASE);
	pthread_cond_broadcast(&j->cv);
	pthread_mutex_unlock(&j->lock);
	mfs_log(MFS_LOG_ERR, "journal stopped (%s): every change fails with EIO until the "
		"filesystem is mounted again, whose recovery finishes what was cut short",
		strerror(err < 0 ? -err : EIO));
}

int mfs_journal_error(struct mfs_journal *j)
{
	/* no lock: every allocation and free asks (lib/alloc.c); the error is stored
	 * atomically, under the lock, and never cleared */
	return __atomic_load_n(&j->err, __ATOMIC_ACQUIRE);
}

void mfs_journal_discard(struct mfs_journal *j)
{
	if (!j)
		return;
	jlogd_stop(j);
	journal_detach(j);
	mfs_journal_free(j);
}

void mfs_journal_set_ckpt_hook(struct mfs_journal *j, mfs_journal_ckpt_hook fn, void *arg)
{
	pthread_mutex_lock(&j->ckpt_lock);
	j->ckpt_hook = fn;
	j->ckpt_hook_arg = arg;
	pthread_mutex_unlock(&j->ckpt_lock);
}

struct mfs_busy *mfs_journal_busy(struct mfs_journal *j)
{
	return j->busy;
}

void mfs_journal_set_io_hook(struct mfs_journal *j, mfs_journal_io_hook fn, void *arg)
{
	j->io_hook = fn;
	j->io_hook_arg = arg;
}

void mfs_journal_get_stats(struct mfs_journal *j, struct mfs_journal_stats *st)
{
	pthread_mutex_lock(&j->lock);
	*st = j->st;
	st->durable_lsn = j->durable_seq;
	st->log_used = (uint32_t)(j->head_lpos - j->tail_lpos);
	st->log_size = j->usable;
	pthread_mutex_lock(&j->pool_lock);
	st->img_slabs = j->nslabs;
	st->img_per_slab = slab_images(j);
	st->img_free = j->npool;
	st->img_slab_allocs = j->slab_allocs;
	st->img_borrowed = __atomic_load_n(&j->nborrowed, __ATOMIC_RELAXED);
	st->img_borrows = __atomic_load_n(&j->borrows, __ATOMIC_RELAXED);
	st->img_freezes = j->freezes;
	pthread_mutex_unlock(&j->pool_lock);
	pthread_mutex_unlock(&j->lock);
}
