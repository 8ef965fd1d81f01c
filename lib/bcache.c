/*
 * bcache.c — the buffer cache (see bcache.h).
 *
 * One mutex guards the hash table, the clock ring and the dirty list.  Device reads happen
 * outside it: a buffer being filled is in the hash with BUF_LOADING set, and a second
 * reader of the same block waits on the cache's condition variable until the first has
 * finished (or failed, in which case the buffer leaves the hash and the waiter retries).
 *
 * Eviction is CLOCK, not LRU: every cached buffer sits on one circular ring, a cache hit
 * only sets the buffer's BUF_REF bit, and when the cache is over budget the hand sweeps the
 * ring, giving referenced-bit buffers a second chance and dropping the first unheld one
 * without it.  A hit therefore touches no other buffer's memory, which matters on the
 * btree lookup path (a list unlink and relink per level cost two extra cache misses).
 *
 * Journaled buffers.  When a journal is attached (journal.h), a buffer changed by a
 * committed transaction is dirty with `lsn` set to that transaction's sequence.  Such a
 * buffer is never written in place by the cache: the journal writes the committed image
 * at checkpoint (after the log holds it durably) and then calls mfs_bcache_checkpointed(),
 * which makes the buffer clean.  Until then it is not evicted either (a re-read would see
 * the stale block in place); the journal bounds how many there are by its size.
 * mfs_bcache_flush() asks the journal to force and checkpoint first (the log_sync hook).
 */
#include "bcache.h"
#include "dev.h"
#include "log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BUF_DIRTY    0x1u
#define BUF_META     0x2u    /* seal the CRC at write-back */
#define BUF_LOADING  0x4u    /* being read from the device */
#define BUF_VERIFIED 0x8u    /* contents passed a full verifier at least once */
#define BUF_HASHED   0x10u    /* in the hash table and on the clock ring */
#define BUF_REF      0x20u    /* used since the hand last passed */

struct bc_buf {
	struct mfs_buf pub;
	struct mfs_bcache *bc;
	struct bc_buf *hnext;
	struct bc_buf *ring_prev, *ring_next;     /* the clock ring, iff BUF_HASHED */
	struct bc_buf *dirty_prev, *dirty_next;   /* on the dirty list iff BUF_DIRTY */
	unsigned refs;
	unsigned flags;
	uint64_t lsn;            /* journaled: sequence of the last commit (0: not journaled) */
};

struct bc_list {
	struct bc_buf *head, *tail;
};

struct mfs_bcache {
	pthread_mutex_t lock;
	pthread_cond_t loaded;
	struct mfs_dev *dev;
	uint32_t blocksize;
	uint8_t uuid[16];
	struct bc_buf **hash;
	size_t hash_mask;
	struct bc_buf *hand;     /* the clock hand: next eviction candidate (NULL: ring empty) */
	struct bc_list dirty;
	size_t nbufs, ndirty, max_bufs;
	struct mfs_bcache_stats st;
	int (*log_sync)(void *priv);   /* journal: force the log and checkpoint */
	void *log_priv;
};

#define BUF(p) ((struct bc_buf *)(p))

/* ---- intrusive lists: one routine for both lists, parameterised by the link fields ---- */
#define LIST_OPS(name, prev, next)                                                        \
static void name##_add_tail(struct bc_list *l, struct bc_buf *b)                          \
{                                                                                         \
	b->prev = l->tail;                                                                \
	b->next = NULL;                                                                   \
	if (l->tail)                                                                      \
		l->tail->next = b;                                                        \
	else                                                                              \
		l->head = b;                                                              \
	l->tail = b;                                                                      \
}                                                                                         \
static void name##_del(struct bc_list *l, struct bc_buf *b)                               \
{                                                                                         \
	if (b->prev)                                                                      \
		b->prev->next = b->next;                                                  \
	else                                                                              \
		l->head = b->next;                                                        \
	if (b->next)                                                                      \
		b->next->prev = b->prev;                                                  \
	else                                                                              \
		l->tail = b->prev;                                                        \
	b->prev = b->next = NULL;                                                         \
}
LIST_OPS(dirtyl, dirty_prev, dirty_next)

static size_t hash_of(const struct mfs_bcache *bc, uint64_t blkno)
{
	return (size_t)((blkno * 0x9e3779b97f4a7c15ull) >> 20) & bc->hash_mask;
}

static struct bc_buf *hash_find(struct mfs_bcache *bc, uint64_t blkno)
{
	struct bc_buf *b;

	for (b = bc->hash[hash_of(bc, blkno)]; b; b = b->hnext)
		if (b->pub.blkno == blkno)
			return b;
	return NULL;
}

/* Put a new buffer on the clock ring, just behind the hand (swept last). */
static void ring_add(struct mfs_bcache *bc, struct bc_buf *b)
{
	if (!bc->hand) {
		b->ring_prev = b->ring_next = b;
		bc->hand = b;
		return;
	}
	b->ring_next = bc->hand;
	b->ring_prev = bc->hand->ring_prev;
	b->ring_prev->ring_next = b;
	bc->hand->ring_prev = b;
}

static void ring_del(struct mfs_bcache *bc, struct bc_buf *b)
{
	if (b->ring_next == b) {
		bc->hand = NULL;
	} else {
		if (bc->hand == b)
			bc->hand = b->ring_next;
		b->ring_prev->ring_next = b->ring_next;
		b->ring_next->ring_prev = b->ring_prev;
	}
	b->ring_prev = b->ring_next = NULL;
}

/* Take a buffer out of the hash and off the ring; it is freed by whoever drops the last
 * reference (now, if there is none). */
static void hash_del(struct mfs_bcache *bc, struct bc_buf *b)
{
	struct bc_buf **pp = &bc->hash[hash_of(bc, b->pub.blkno)];

	while (*pp != b)
		pp = &(*pp)->hnext;
	*pp = b->hnext;
	b->hnext = NULL;
	b->flags &= ~BUF_HASHED;
	ring_del(bc, b);
}

int mfs_bcache_create(struct mfs_dev *dev, uint32_t blocksize, size_t max_bytes,
		      struct mfs_bcache **out)
{
	struct mfs_bcache *bc;
	size_t nhash = 1024;

	*out = NULL;
	bc = calloc(1, sizeof(*bc));
	if (!bc)
		return -ENOMEM;
	bc->dev = dev;
	bc->blocksize = blocksize;
	bc->max_bufs = max_bytes / blocksize;
	if (bc->max_bufs < 64)
		bc->max_bufs = 64;
	while (nhash < bc->max_bufs && nhash < (1u << 22))
		nhash <<= 1;
	bc->hash = calloc(nhash, sizeof(*bc->hash));
	if (!bc->hash) {
		free(bc);
		return -ENOMEM;
	}
	bc->hash_mask = nhash - 1;
	pthread_mutex_init(&bc->lock, NULL);
	pthread_cond_init(&bc->loaded, NULL);
	*out = bc;
	return 0;
}

void mfs_bcache_set_uuid(struct mfs_bcache *bc, const uint8_t uuid[16])
{
	memcpy(bc->uuid, uuid, 16);
}

uint32_t mfs_bcache_blocksize(const struct mfs_bcache *bc) { return bc->blocksize; }
struct mfs_dev *mfs_bcache_dev(const struct mfs_bcache *bc) { return bc->dev; }

void mfs_bcache_get_stats(struct mfs_bcache *bc, struct mfs_bcache_stats *st)
{
	pthread_mutex_lock(&bc->lock);
	*st = bc->st;
	st->nbufs = bc->nbufs;
	st->ndirty = bc->ndirty;
	st->bytes = bc->nbufs * bc->blocksize;
	st->max_bytes = bc->max_bufs * bc->blocksize;
	pthread_mutex_unlock(&bc->lock);
}

static void buf_free(struct bc_buf *b)
{
	free(b->pub.data);
	free(b);
}

/* Write one dirty buffer (lock held: the buffer is unreferenced or held by the flusher). */
static int buf_writeback(struct mfs_bcache *bc, struct bc_buf *b)
{
	int err;

	if (b->flags & BUF_META)
		mfs_blk_seal(b->pub.data, bc->blocksize);
	err = mfs_dev_pwrite(bc->dev, b->pub.data, bc->blocksize,
			     b->pub.blkno * (uint64_t)bc->blocksize);
	if (err) {
		mfs_log(MFS_LOG_ERR, "block %llu: write failed: %s",
			(unsigned long long)b->pub.blkno, strerror(-err));
		return err;
	}
	bc->st.writes++;
	b->flags &= ~BUF_DIRTY;
	dirtyl_del(&bc->dirty, b);
	bc->ndirty--;
	return 0;
}

/*
 * Drop unheld buffers until the cache is under budget, sweeping the clock ring: a buffer
 * with BUF_REF loses the bit and is passed over once; held, loading and journaled buffers
 * (the journal writes those itself) are passed over.  A dirty buffer is written back
 * before it goes; a write error keeps it (dirty) and stops the eviction.  Two full turns
 * without a victim mean everything is held: the budget is exceeded and counted.
 */
static void bcache_shrink(struct mfs_bcache *bc)
{
	size_t budget = 2 * bc->nbufs + 1;

	while (bc->nbufs > bc->max_bufs) {
		struct bc_buf *b = bc->hand;

		if (!b || budget-- == 0) {
			bc->st.over_budget++;
			return;
		}
		bc->hand = b->ring_next;
		if (b->refs || b->lsn || (b->flags & BUF_LOADING))
			continue;
		if (b->flags & BUF_REF) {
			b->flags &= ~BUF_REF;
			continue;
		}
		if ((b->flags & BUF_DIRTY) && buf_writeback(bc, b))
			return;
		hash_del(bc, b);
		bc->nbufs--;
		bc->st.evictions++;
		buf_free(b);
	}
}

static struct bc_buf *buf_alloc(struct mfs_bcache *bc, uint64_t blkno)
{
	struct bc_buf *b = calloc(1, sizeof(*b));

	if (!b)
		return NULL;
	if (posix_memalign(&b->pub.data, 4096, bc->blocksize)) {
		free(b);
		return NULL;
	}
	b->pub.blkno = blkno;
	b->bc = bc;
	return b;
}

/* Find or create the buffer for `blkno`, referenced.  *created says whether the caller
 * must fill it (it is then BUF_LOADING).  Lock held. */
static int buf_lookup_locked(struct mfs_bcache *bc, uint64_t blkno, struct bc_buf **out,
			     int *created)
{
	struct bc_buf *b;

	for (;;) {
		b = hash_find(bc, blkno);
		if (!b)
			break;
		b->refs++;
		b->flags |= BUF_REF;
		if (!(b->flags & BUF_LOADING)) {
			bc->st.hits++;
			*created = 0;
			*out = b;
			return 0;
		}
		while (b->flags & BUF_LOADING)
			pthread_cond_wait(&bc->loaded, &bc->lock);
		if (b->flags & BUF_HASHED) {
			bc->st.hits++;
			*created = 0;
			*out = b;
			return 0;
		}
		/* The load failed and the buffer left the hash: drop our ref and retry. */
		if (--b->refs == 0)
			buf_free(b);
	}
	b = buf_alloc(bc, blkno);
	if (!b)
		return -ENOMEM;
	b->refs = 1;
	b->flags = BUF_HASHED;
	b->hnext = bc->hash[hash_of(bc, blkno)];
	bc->hash[hash_of(bc, blkno)] = b;
	ring_add(bc, b);
	bc->nbufs++;
	bc->st.misses++;
	bcache_shrink(bc);
	*created = 1;
	*out = b;
	return 0;
}

/* Verify a cached buffer; `flags` is its flags as read under the lock.  A buffer that was
 * verified before, or changed since, is not CRC-checked (its CRC is sealed at write-back). */
static int buf_check(struct mfs_bcache *bc, struct bc_buf *b, unsigned flags,
		     const struct mfs_blk_expect *exp)
{
	unsigned vflags = (flags & (BUF_DIRTY | BUF_VERIFIED)) ? MFS_VERIFY_NOCRC : 0;

	return mfs_blk_verify(b->pub.data, bc->blocksize, b->pub.blkno, bc->uuid, exp, vflags);
}

int mfs_buf_read(struct mfs_bcache *bc, uint64_t blkno, const struct mfs_blk_expect *exp,
		 struct mfs_buf **out)
{
	struct bc_buf *b;
	int created, err;

	*out = NULL;
	pthread_mutex_lock(&bc->lock);
	err = buf_lookup_locked(bc, blkno, &b, &created);
	if (err) {
		pthread_mutex_unlock(&bc->lock);
		return err;
	}
	if (!created) {
		unsigned flags = b->flags;     /* snapshot under the lock */

		pthread_mutex_unlock(&bc->lock);
		if (exp) {
			err = buf_check(bc, b, flags, exp);
			if (err) {
				mfs_buf_put(&b->pub);
				return err;
			}
			if (!(flags & BUF_META)) {
				pthread_mutex_lock(&bc->lock);
				b->flags |= BUF_META | BUF_VERIFIED;
				pthread_mutex_unlock(&bc->lock);
			}
		}
		*out = &b->pub;
		return 0;
	}
	b->flags |= BUF_LOADING;
	pthread_mutex_unlock(&bc->lock);

	err = mfs_dev_pread(bc->dev, b->pub.data, bc->blocksize, blkno * (uint64_t)bc->blocksize);
	if (err)
		mfs_log(MFS_LOG_ERR, "block %llu: read failed: %s", (unsigned long long)blkno,
			strerror(-err));
	else if (exp)
		err = mfs_blk_verify(b->pub.data, bc->blocksize, blkno, bc->uuid, exp, 0);

	pthread_mutex_lock(&bc->lock);
	bc->st.reads++;
	b->flags &= ~BUF_LOADING;
	if (err) {
		/* Not kept: the next reader reads the device again. */
		hash_del(bc, b);
		bc->nbufs--;
		if (--b->refs == 0)
			buf_free(b);
	} else if (exp) {
		b->flags |= BUF_META | BUF_VERIFIED;
	}
	pthread_cond_broadcast(&bc->loaded);
	pthread_mutex_unlock(&bc->lock);
	if (err)
		return err;
	*out = &b->pub;
	return 0;
}

int mfs_buf_get_new(struct mfs_bcache *bc, uint64_t blkno, int meta, struct mfs_buf **out)
{
	struct bc_buf *b;
	int created, err;

	*out = NULL;
	pthread_mutex_lock(&bc->lock);
	err = buf_lookup_locked(bc, blkno, &b, &created);
	if (!err) {
		memset(b->pub.data, 0, bc->blocksize);
		b->flags &= ~BUF_VERIFIED;
		if (meta)
			b->flags |= BUF_META | BUF_VERIFIED;
		else
			b->flags &= ~BUF_META;
		*out = &b->pub;
	}
	pthread_mutex_unlock(&bc->lock);
	return err;
}

void mfs_buf_hold(struct mfs_buf *bp)
{
	struct bc_buf *b = BUF(bp);

	/* The caller holds a reference, so the buffer is not on the LRU list. */
	pthread_mutex_lock(&b->bc->lock);
	b->refs++;
	pthread_mutex_unlock(&b->bc->lock);
}

void mfs_buf_put(struct mfs_buf *bp)
{
	struct bc_buf *b = BUF(bp);
	struct mfs_bcache *bc;

	if (!bp)
		return;
	bc = b->bc;
	pthread_mutex_lock(&bc->lock);
	if (--b->refs == 0) {
		if (!(b->flags & BUF_HASHED))
			buf_free(b);
		else if (bc->nbufs > bc->max_bufs)
			bcache_shrink(bc);
	}
	pthread_mutex_unlock(&bc->lock);
}

void mfs_buf_mark_dirty(struct mfs_buf *bp)
{
	mfs_buf_mark_dirty_lsn(bp, 0);
}

/* A buffer that left the hash (its block was freed and forgotten) is never made dirty:
 * it must not reach the disk, and it is freed by its last put. */
void mfs_buf_mark_dirty_lsn(struct mfs_buf *bp, uint64_t lsn)
{
	struct bc_buf *b = BUF(bp);
	struct mfs_bcache *bc = b->bc;

	pthread_mutex_lock(&bc->lock);
	if (!(b->flags & BUF_HASHED)) {
		pthread_mutex_unlock(&bc->lock);
		return;
	}
	if (!(b->flags & BUF_DIRTY)) {
		b->flags |= BUF_DIRTY;
		dirtyl_add_tail(&bc->dirty, b);
		bc->ndirty++;
	}
	if (lsn > b->lsn)
		b->lsn = lsn;
	pthread_mutex_unlock(&bc->lock);
}

void mfs_bcache_checkpointed(struct mfs_bcache *bc, uint64_t blkno, uint64_t lsn)
{
	struct bc_buf *b;

	pthread_mutex_lock(&bc->lock);
	b = hash_find(bc, blkno);
	if (b && b->lsn && b->lsn <= lsn) {
		b->lsn = 0;
		if (b->flags & BUF_DIRTY) {
			b->flags &= ~BUF_DIRTY;
			dirtyl_del(&bc->dirty, b);
			bc->ndirty--;
		}
		if (!b->refs)
			bcache_shrink(bc);
	}
	pthread_mutex_unlock(&bc->lock);
}

void mfs_bcache_set_log(struct mfs_bcache *bc, int (*sync)(void *priv), void *priv)
{
	pthread_mutex_lock(&bc->lock);
	bc->log_sync = sync;
	bc->log_priv = priv;
	pthread_mutex_unlock(&bc->lock);
}

static unsigned buf_flags(const struct mfs_buf *bp)
{
	struct bc_buf *b = BUF(bp);
	unsigned flags;

	pthread_mutex_lock(&b->bc->lock);
	flags = b->flags;
	pthread_mutex_unlock(&b->bc->lock);
	return flags;
}

int mfs_buf_is_meta(const struct mfs_buf *bp)
{
	return !!(buf_flags(bp) & BUF_META);
}

int mfs_buf_is_dirty(const struct mfs_buf *bp)
{
	return !!(buf_flags(bp) & BUF_DIRTY);
}

void mfs_buf_set_meta(struct mfs_buf *bp)
{
	mfs_buf_set_meta_state(bp, 1);
}

void mfs_buf_set_meta_state(struct mfs_buf *bp, int meta)
{
	struct bc_buf *b = BUF(bp);

	pthread_mutex_lock(&b->bc->lock);
	if (meta)
		b->flags |= BUF_META | BUF_VERIFIED;
	else
		b->flags &= ~(BUF_META | BUF_VERIFIED);
	pthread_mutex_unlock(&b->bc->lock);
}

void mfs_bcache_forget(struct mfs_bcache *bc, uint64_t blkno)
{
	struct bc_buf *b;

	pthread_mutex_lock(&bc->lock);
	b = hash_find(bc, blkno);
	if (b && !(b->flags & BUF_LOADING)) {
		if (b->flags & BUF_DIRTY) {
			b->flags &= ~BUF_DIRTY;
			dirtyl_del(&bc->dirty, b);
			bc->ndirty--;
		}
		b->lsn = 0;
		hash_del(bc, b);
		bc->nbufs--;
		if (b->refs == 0)
			buf_free(b);
		/* else: freed by the last mfs_buf_put, never written */
	}
	pthread_mutex_unlock(&bc->lock);
}

int mfs_bcache_flush(struct mfs_bcache *bc)
{
	int (*log_sync)(void *priv);
	void *log_priv;
	struct bc_buf *b, *next;
	int err = 0;

	pthread_mutex_lock(&bc->lock);
	log_sync = bc->log_sync;
	log_priv = bc->log_priv;
	pthread_mutex_unlock(&bc->lock);
	if (log_sync) {
		err = log_sync(log_priv);
		if (err)
			return err;
	}
	pthread_mutex_lock(&bc->lock);
	for (b = bc->dirty.head; b; b = next) {
		next = b->dirty_next;
		if (b->lsn)
			continue;      /* committed after the checkpoint: the journal's */
		err = buf_writeback(bc, b);
		if (err)
			break;
	}
	pthread_mutex_unlock(&bc->lock);
	if (!err)
		err = mfs_dev_flush(bc->dev);
	return err;
}

static void bcache_free_all(struct mfs_bcache *bc)
{
	for (size_t i = 0; i <= bc->hash_mask; i++) {
		struct bc_buf *b = bc->hash[i];

		while (b) {
			struct bc_buf *next = b->hnext;

			if (b->refs)
				mfs_log(MFS_LOG_WARN, "block %llu: buffer still held at cache teardown",
					(unsigned long long)b->pub.blkno);
			buf_free(b);
			b = next;
		}
	}
	free(bc->hash);
	pthread_mutex_destroy(&bc->lock);
	pthread_cond_destroy(&bc->loaded);
	free(bc);
}

int mfs_bcache_destroy(struct mfs_bcache *bc)
{
	int err;

	if (!bc)
		return 0;
	err = mfs_bcache_flush(bc);
	bcache_free_all(bc);
	return err;
}

void mfs_bcache_discard(struct mfs_bcache *bc)
{
	if (bc)
		bcache_free_all(bc);
}
