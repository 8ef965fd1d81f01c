/*
 * bcache.c — the buffer cache (see bcache.h).
 *
 * Shards.  The cache is split into 2^k shards by a hash of the block number; each shard
 * has its own mutex, hash table, clock ring, dirty list and a 1/2^k share of the budget,
 * so threads working on different blocks do not serialise on one lock.  A small cache
 * (under 64 buffers a shard) has one shard and behaves exactly like an unsharded one.
 *
 * Hash table.  Open addressing with linear probing: a slot holds the block number and the
 * buffer pointer inline, so a probe reads one cache line and never the buffer itself until
 * the block is found.  The table grows (doubling) to stay at most half full; a removal
 * shifts the following entries of its probe run back (no tombstones).
 *
 * Reads happen outside the shard lock: a buffer being filled is hashed with BUF_LOADING,
 * and a second reader of the same block waits on the shard's condition variable until the
 * first has finished (or failed, in which case the buffer leaves the hash and the waiter
 * retries).
 *
 * Writes happen outside the shard lock too.  A write-back takes a snapshot of the buffer
 * under the lock (sealed with its CRC in the snapshot, not in the live buffer), clears
 * BUF_DIRTY, sets BUF_WRITING, drops the lock and writes the snapshot.  The snapshot is
 * consistent because only unheld buffers are evicted and mfs_bcache_flush() runs with no
 * transaction open, so nobody is half-way through changing it; the live buffer stays
 * usable — readers read it and a transaction may change it and mark it dirty again — while
 * the write is in flight.  What must not happen is a second, newer write of the same block
 * reaching the disk before this older one, so:
 *   - the cache never starts a write of a buffer that is BUF_WRITING (it waits or skips);
 *   - mfs_buf_mark_dirty_lsn() with a journal sequence waits for BUF_WRITING to clear
 *     (the journal writes that block itself at checkpoint, after the commit);
 *   - mfs_bcache_forget() waits for BUF_WRITING to clear (the block may be reused and
 *     written by its next owner);
 *   - mfs_bcache_flush() waits for every write in flight before it syncs the device.
 * A failed write makes the buffer dirty again.  A BUF_WRITING buffer is never freed.
 *
 * Reference counts.  `refs` goes from 0 to 1 and from 1 to 0 only under the shard lock
 * (lookup, and the last mfs_buf_put); any other change (a hold, or a put that leaves it
 * above zero) is an atomic add without the lock.  So under the lock "refs == 0" is stable:
 * the eviction and forget decisions that test it cannot race with a holder.
 *
 * Eviction is CLOCK, not LRU: every cached buffer sits on its shard's circular ring, a hit
 * only sets the buffer's BUF_REF bit, and when the shard is over budget the hand sweeps
 * the ring, giving referenced-bit buffers a second chance and dropping the first unheld
 * one without it.  A hit therefore touches no other buffer's memory.
 *
 * Journaled buffers.  When a journal is attached (journal.h), a buffer changed by a
 * committed transaction is dirty with `lsn` set to that transaction's sequence.  Such a
 * buffer is never written in place by the cache: the journal writes the committed image
 * at checkpoint (after the log holds it durably) and then calls mfs_bcache_checkpointed(),
 * which makes the buffer clean.  Until then it is not evicted either (a re-read would see
 * the stale block in place); the journal bounds how many there are by its size.
 * mfs_bcache_flush() asks the journal to force and checkpoint first (the log_sync hook).
 */
#include "mem.h"
#include "bcache.h"
#include "dev.h"
#include "list.h"
#include "log.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#define BC_POISON(p, n)   ASAN_POISON_MEMORY_REGION(p, n)
#define BC_UNPOISON(p, n) ASAN_UNPOISON_MEMORY_REGION(p, n)
#else
#define BC_POISON(p, n)   ((void)(p), (void)(n))
#define BC_UNPOISON(p, n) ((void)(p), (void)(n))
#endif

#define BUF_DIRTY    0x1u
#define BUF_META     0x2u    /* seal the CRC at write-back */
#define BUF_LOADING  0x4u    /* being read from the device */
#define BUF_VERIFIED 0x8u    /* contents passed a full verifier at least once */
#define BUF_HASHED   0x10u   /* in the hash table and on the clock ring */
#define BUF_REF      0x20u   /* used since the hand last passed */
#define BUF_WRITING  0x40u   /* a snapshot of it is being written to the device */
#define BUF_ONCE     0x80u   /* read in by a sweep (mfs_buf_read_once): dropped at its last
			      * put unless somebody else looked it up or changed it */

#define BC_MAXSHARDS     64u
#define BC_SHARD_MINBUFS 64u   /* fewer buffers a shard than this: fewer shards */
#define BC_CHUNK_BYTES   (2u << 20)   /* block memory is allocated this much at a time */

struct bc_shard;

struct bc_buf {
	struct mfs_buf pub;
	unsigned refs;           /* see "Reference counts" above */
	unsigned flags;          /* under the shard lock */
	uint64_t lsn;            /* journaled: sequence of the last commit (0: not journaled) */
	struct bc_shard *sh;
	struct bc_buf *ring_prev, *ring_next;     /* the clock ring, iff BUF_HASHED */
	struct mfs_list dirty;                    /* on the dirty list iff BUF_DIRTY */
};

struct bc_slot {
	uint64_t blkno;
	struct bc_buf *b;        /* NULL: empty */
	void *data;              /* b->pub.data: a hit starts fetching the block at once */
	void *unused;            /* two slots to a cache line */
};

/* Buffers are carved from chunks: `n` bookkeeping structs in one array and their blocks in
 * one allocation of up to 2 MiB, see buf_alloc(). */
struct bc_chunk {
	struct bc_chunk *next;
	struct bc_buf *bufs;
	void *data;
};

struct bc_shard {
	pthread_mutex_t lock;
	pthread_cond_t done;     /* a load or a write finished */
	struct mfs_bcache *bc;
	struct bc_slot *slots;
	size_t mask;             /* slots - 1 */
	struct bc_buf *hand;     /* the clock hand: next eviction candidate (NULL: ring empty) */
	struct mfs_list dirty;   /* dirty buffers, oldest first */
	size_t nbufs, ndirty, max_bufs, nwriting;
	struct bc_buf *free_bufs;  /* unused buffers of the chunks, linked by ring_next */
	struct bc_chunk *chunks;
	unsigned chunk_bufs;       /* buffers a chunk */
	size_t peak_bufs;          /* the most buffers it has held at once */
	struct mfs_bcache_stats st;
} __attribute__((aligned(64)));

struct mfs_bcache {
	struct mfs_dev *dev;
	uint32_t blocksize;
	unsigned shard_mask;
	uint8_t uuid[16];
	pthread_mutex_t log_lock;
	int (*log_sync)(void *priv);   /* journal: force the log and checkpoint */
	void *log_priv;
	struct bc_shard *shards;
};

#define BUF(p) ((struct bc_buf *)(p))

static void buf_set_dirty(struct bc_shard *sh, struct bc_buf *b)
{
	if (!(b->flags & BUF_DIRTY)) {
		b->flags |= BUF_DIRTY;
		mfs_list_add_tail(&sh->dirty, &b->dirty);
		sh->ndirty++;
	}
}

static void buf_clear_dirty(struct bc_shard *sh, struct bc_buf *b)
{
	if (b->flags & BUF_DIRTY) {
		b->flags &= ~BUF_DIRTY;
		mfs_list_del(&b->dirty);
		sh->ndirty--;
	}
}

/* ---- hashing ---- */

/* A 64-bit mix of the block number: the low bits pick the shard, the rest the slot. */
static inline uint64_t blk_hash(uint64_t blkno)
{
	blkno ^= blkno >> 33;
	blkno *= 0xff51afd7ed558ccdull;
	blkno ^= blkno >> 33;
	return blkno;
}

static inline struct bc_shard *shard_of(const struct mfs_bcache *bc, uint64_t h)
{
	return &bc->shards[h & bc->shard_mask];
}

static inline size_t slot_home(const struct bc_shard *sh, uint64_t blkno)
{
	return (size_t)(blk_hash(blkno) >> 8) & sh->mask;
}

static struct bc_buf *hash_find(struct bc_shard *sh, uint64_t blkno)
{
	const struct bc_slot *slots = sh->slots;
	size_t i = slot_home(sh, blkno);

	for (; slots[i].b; i = (i + 1) & sh->mask) {
		if (slots[i].blkno == blkno) {
			/* The caller reads the block's header next (verify, numrecs): start
			 * that fetch now, alongside the fetch of the buffer's bookkeeping. */
			__builtin_prefetch(slots[i].data);
			return slots[i].b;
		}
	}
	return NULL;
}

static void slot_put(struct bc_slot *slots, size_t mask, size_t home, uint64_t blkno,
		     struct bc_buf *b)
{
	size_t i = home;

	while (slots[i].b)
		i = (i + 1) & mask;
	slots[i].blkno = blkno;
	slots[i].b = b;
	slots[i].data = b->pub.data;
}

/* Double the table.  Returns -ENOMEM (the table is unchanged, still usable) or 0. */
static int hash_grow(struct bc_shard *sh)
{
	size_t nsize = (sh->mask + 1) * 2, nmask = nsize - 1;
	struct bc_slot *ns = mfs_calloc(nsize, sizeof(*ns));

	if (!ns)
		return -ENOMEM;
	for (size_t i = 0; i <= sh->mask; i++) {
		struct bc_slot *s = &sh->slots[i];

		if (s->b)
			slot_put(ns, nmask, (size_t)(blk_hash(s->blkno) >> 8) & nmask, s->blkno,
				 s->b);
	}
	free(sh->slots);
	sh->slots = ns;
	sh->mask = nmask;
	return 0;
}

/* Whether slot j's entry, whose home is k, may move back to the hole at i (it may when
 * its home is not in the cyclic range (i, j]). */
static inline int slot_may_fill(size_t i, size_t j, size_t k)
{
	return i <= j ? (k <= i || k > j) : (k <= i && k > j);
}

/* Put a new buffer on the clock ring, just behind the hand (swept last). */
static void ring_add(struct bc_shard *sh, struct bc_buf *b)
{
	if (!sh->hand) {
		b->ring_prev = b->ring_next = b;
		sh->hand = b;
		return;
	}
	b->ring_next = sh->hand;
	b->ring_prev = sh->hand->ring_prev;
	b->ring_prev->ring_next = b;
	sh->hand->ring_prev = b;
}

static void ring_del(struct bc_shard *sh, struct bc_buf *b)
{
	if (b->ring_next == b) {
		sh->hand = NULL;
	} else {
		if (sh->hand == b)
			sh->hand = b->ring_next;
		b->ring_prev->ring_next = b->ring_next;
		b->ring_next->ring_prev = b->ring_prev;
	}
	b->ring_prev = b->ring_next = NULL;
}

/* Hash a new buffer and put it on the ring (room in the table assured by the caller). */
static void hash_add(struct bc_shard *sh, struct bc_buf *b)
{
	slot_put(sh->slots, sh->mask, slot_home(sh, b->pub.blkno), b->pub.blkno, b);
	b->flags |= BUF_HASHED;
	ring_add(sh, b);
	if (++sh->nbufs > sh->peak_bufs)
		sh->peak_bufs = sh->nbufs;
}

/* Take a buffer out of the hash and off the ring; it is freed by whoever drops the last
 * reference (now, if there is none). */
static void hash_del(struct bc_shard *sh, struct bc_buf *b)
{
	struct bc_slot *slots = sh->slots;
	size_t i = slot_home(sh, b->pub.blkno), j;

	while (slots[i].b != b)
		i = (i + 1) & sh->mask;
	/* Backward-shift deletion: refill the hole from later entries of the run. */
	for (j = (i + 1) & sh->mask; slots[j].b; j = (j + 1) & sh->mask) {
		if (slot_may_fill(i, j, slot_home(sh, slots[j].blkno))) {
			slots[i] = slots[j];
			i = j;
		}
	}
	memset(&slots[i], 0, sizeof(slots[i]));
	b->flags &= ~BUF_HASHED;
	ring_del(sh, b);
	sh->nbufs--;
}

/* ---- cache ---- */

int mfs_bcache_create(struct mfs_dev *dev, uint32_t blocksize, size_t max_bytes,
		      struct mfs_bcache **out)
{
	struct mfs_bcache *bc;
	size_t max_bufs = blocksize ? max_bytes / blocksize : 0;
	unsigned nshards = 1;

	*out = NULL;
	if (max_bufs < 64)
		max_bufs = 64;
	while (nshards < BC_MAXSHARDS && max_bufs / (nshards * 2) >= BC_SHARD_MINBUFS)
		nshards *= 2;
	bc = mfs_calloc(1, sizeof(*bc));
	if (!bc)
		return -ENOMEM;
	if (mfs_posix_memalign((void **)&bc->shards, 64, nshards * sizeof(*bc->shards))) {
		free(bc);
		return -ENOMEM;
	}
	memset(bc->shards, 0, nshards * sizeof(*bc->shards));
	bc->dev = dev;
	bc->blocksize = blocksize;
	bc->shard_mask = nshards - 1;
	pthread_mutex_init(&bc->log_lock, NULL);
	for (unsigned s = 0; s < nshards; s++) {
		struct bc_shard *sh = &bc->shards[s];

		sh->bc = bc;
		sh->max_bufs = max_bufs / nshards;
		sh->chunk_bufs = blocksize >= BC_CHUNK_BYTES ? 1 : BC_CHUNK_BYTES / blocksize;
		if (sh->chunk_bufs > sh->max_bufs)
			sh->chunk_bufs = (unsigned)sh->max_bufs;
		sh->mask = 63;
		sh->slots = mfs_calloc(sh->mask + 1, sizeof(*sh->slots));
		if (!sh->slots) {
			while (s--)
				free(bc->shards[s].slots);
			free(bc->shards);
			free(bc);
			return -ENOMEM;
		}
		mfs_list_init(&sh->dirty);
		pthread_mutex_init(&sh->lock, NULL);
		pthread_cond_init(&sh->done, NULL);
	}
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
	memset(st, 0, sizeof(*st));
	for (unsigned s = 0; s <= bc->shard_mask; s++) {
		struct bc_shard *sh = &bc->shards[s];

		pthread_mutex_lock(&sh->lock);
		st->hits += sh->st.hits;
		st->misses += sh->st.misses;
		st->reads += sh->st.reads;
		st->writes += sh->st.writes;
		st->evictions += sh->st.evictions;
		st->over_budget += sh->st.over_budget;
		st->nbufs += sh->nbufs;
		st->peak_bytes += sh->peak_bufs * bc->blocksize;
		st->ndirty += sh->ndirty;
		st->max_bytes += sh->max_bufs * bc->blocksize;
		pthread_mutex_unlock(&sh->lock);
	}
	st->bytes = st->nbufs * bc->blocksize;
}

/* Back to the shard's free list (shard lock held; `b` is unreferenced and unhashed). */
static void buf_free(struct bc_shard *sh, struct bc_buf *b)
{
	b->ring_next = sh->free_bufs;
	sh->free_bufs = b;
	/* Under ASan a use after free still faults, as it did with malloc'd buffers. */
	BC_POISON(b->pub.data, sh->bc->blocksize);
	BC_POISON(b, sizeof(*b));
}

/*
 * Write a dirty buffer back, without the shard lock during the write (see the top of the
 * file).  Called and returns with the lock held, which it drops in between; `snap` is a
 * blocksize scratch buffer.  The buffer must be dirty, not journaled, not BUF_WRITING, and
 * either unheld or held by nobody who is changing it.
 */
static int buf_writeback(struct bc_shard *sh, struct bc_buf *b, void *snap)
{
	struct mfs_bcache *bc = sh->bc;
	int err;

	memcpy(snap, b->pub.data, bc->blocksize);
	if (b->flags & BUF_META)
		mfs_blk_seal(snap, bc->blocksize);
	buf_clear_dirty(sh, b);
	b->flags |= BUF_WRITING;
	sh->nwriting++;
	pthread_mutex_unlock(&sh->lock);

	err = mfs_dev_pwrite(bc->dev, snap, bc->blocksize, b->pub.blkno * (uint64_t)bc->blocksize);
	if (err)
		mfs_log(MFS_LOG_ERR, "block %llu: write failed: %s",
			(unsigned long long)b->pub.blkno, strerror(-err));

	pthread_mutex_lock(&sh->lock);
	b->flags &= ~BUF_WRITING;
	sh->nwriting--;
	if (err)
		buf_set_dirty(sh, b);     /* still hashed: forget waits for BUF_WRITING */
	else
		sh->st.writes++;
	pthread_cond_broadcast(&sh->done);
	return err;
}

/* This thread's reads are a sweep (mfs_bcache_sweep). */
static __thread int bc_sweeping;

/* The reference count, read under the shard lock: stable as to "is it 0" there. */
static inline unsigned buf_refs(const struct bc_buf *b)
{
	return __atomic_load_n(&b->refs, __ATOMIC_RELAXED);
}

/* Whether an unheld buffer may leave the cache now. */
static inline int buf_evictable(const struct bc_buf *b)
{
	return !buf_refs(b) && !b->lsn && !(b->flags & (BUF_LOADING | BUF_WRITING));
}

static void buf_evict(struct bc_shard *sh, struct bc_buf *b)
{
	hash_del(sh, b);
	sh->st.evictions++;
	buf_free(sh, b);
}

/*
 * Drop unheld buffers until the shard is under budget, sweeping the clock ring: a buffer
 * with BUF_REF loses the bit and is passed over once; held, loading, writing and journaled
 * buffers (the journal writes those itself) are passed over.  A dirty buffer is written
 * back first — the lock is dropped during the write, so the caller must expect the shard
 * to have changed — and evicted afterwards if still unused and clean.  A write error stops
 * the eviction (the buffer stays, dirty).  Two full turns without a victim mean everything
 * is held: the budget is exceeded and counted.
 */
static void shard_shrink(struct bc_shard *sh)
{
	size_t budget = 2 * sh->nbufs + 1;
	void *snap = NULL;

	while (sh->nbufs > sh->max_bufs) {
		struct bc_buf *b = sh->hand;

		if (!b || budget-- == 0) {
			sh->st.over_budget++;
			break;
		}
		sh->hand = b->ring_next;
		if (!buf_evictable(b))
			continue;
		if (b->flags & BUF_REF) {
			b->flags &= ~BUF_REF;
			continue;
		}
		if (b->flags & BUF_DIRTY) {
			if (!snap && !(snap = mfs_malloc(sh->bc->blocksize)))
				break;      /* no memory to write it: stay over budget for now */
			if (buf_writeback(sh, b, snap))
				break;
			/* Used, changed or forgotten meanwhile: not a victim now. */
			if (!(b->flags & BUF_HASHED) || !buf_evictable(b) ||
			    (b->flags & (BUF_DIRTY | BUF_REF)))
				continue;
		}
		buf_evict(sh, b);
	}
	free(snap);
}

/*
 * A free buffer for `blkno`, from the shard's free list or a new chunk.  Chunks are never
 * given back before the cache goes (the cache's memory stays at its high-water mark, which
 * the budget bounds), and buffers sit densely: a chunk's bookkeeping structs share cache
 * lines and pages, so a hit costs fewer cache and TLB misses, and filling the cache costs
 * one allocation per chunk instead of two per block.  (Asking for huge pages for the
 * blocks, MADV_HUGEPAGE, made lookups ~8% faster but the first fill of the cache 4 times
 * slower here — the kernel zeroes and compacts 2 MiB at a fault — so it is not done.)
 * Shard lock held.
 */
static struct bc_buf *buf_alloc(struct bc_shard *sh, uint64_t blkno)
{
	uint32_t bs = sh->bc->blocksize;
	struct bc_buf *b;
	void *data;

	if (!sh->free_bufs) {
		struct bc_chunk *c = mfs_calloc(1, sizeof(*c));
		size_t n = sh->chunk_bufs, bytes = n * bs;

		if (!c)
			return NULL;
		c->bufs = mfs_calloc(n, sizeof(*c->bufs));
		if (!c->bufs || mfs_posix_memalign(&c->data, bytes >= BC_CHUNK_BYTES ?
					       BC_CHUNK_BYTES : 4096, bytes)) {
			free(c->bufs);
			free(c);
			return NULL;
		}
		for (size_t i = n; i-- > 0;) {
			c->bufs[i].pub.data = (char *)c->data + i * bs;
			buf_free(sh, &c->bufs[i]);
		}
		c->next = sh->chunks;
		sh->chunks = c;
	}
	b = sh->free_bufs;
	BC_UNPOISON(b, sizeof(*b));
	sh->free_bufs = b->ring_next;
	data = b->pub.data;
	BC_UNPOISON(data, bs);
	memset(b, 0, sizeof(*b));
	mfs_list_init(&b->dirty);
	b->pub.data = data;
	b->pub.blkno = blkno;
	b->sh = sh;
	return b;
}

/* Find or create the buffer for `blkno`, referenced.  *created says whether the caller
 * must fill it: it is then hashed with BUF_LOADING, which the caller clears (waking the
 * shard's waiters).  Lock held. */
static int buf_lookup_locked(struct bc_shard *sh, uint64_t blkno, int once,
			     struct bc_buf **out, int *created)
{
	struct bc_buf *b;

	for (;;) {
		b = hash_find(sh, blkno);
		if (!b)
			break;
		__atomic_add_fetch(&b->refs, 1, __ATOMIC_RELAXED);
		/* a sweep neither promotes a buffer nor makes a kept one droppable; anybody
		 * else's lookup keeps a sweep's buffer cached */
		if (!once)
			b->flags = (b->flags | BUF_REF) & ~BUF_ONCE;
		while (b->flags & BUF_LOADING)
			pthread_cond_wait(&sh->done, &sh->lock);
		if (b->flags & BUF_HASHED) {
			sh->st.hits++;
			*created = 0;
			*out = b;
			return 0;
		}
		/* The load failed and the buffer left the hash: drop our ref and retry. */
		if (__atomic_sub_fetch(&b->refs, 1, __ATOMIC_RELAXED) == 0)
			buf_free(sh, b);
	}
	if (2 * (sh->nbufs + 1) > sh->mask + 1 && hash_grow(sh))
		return -ENOMEM;
	b = buf_alloc(sh, blkno);
	if (!b)
		return -ENOMEM;
	b->refs = 1;
	b->flags = BUF_LOADING | (once ? BUF_ONCE : 0);
	hash_add(sh, b);
	sh->st.misses++;
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

static int buf_read(struct mfs_bcache *bc, uint64_t blkno, const struct mfs_blk_expect *exp,
		    int once, struct mfs_buf **out)
{
	struct bc_shard *sh = shard_of(bc, blk_hash(blkno));
	struct bc_buf *b;
	int created, err;

	*out = NULL;
	pthread_mutex_lock(&sh->lock);
	err = buf_lookup_locked(sh, blkno, once, &b, &created);
	if (err) {
		pthread_mutex_unlock(&sh->lock);
		return err;
	}
	if (!created) {
		unsigned flags = b->flags;     /* snapshot under the lock */

		pthread_mutex_unlock(&sh->lock);
		if (exp) {
			err = buf_check(bc, b, flags, exp);
			if (err) {
				mfs_buf_put(&b->pub);
				return err;
			}
			if (!(flags & BUF_META)) {
				pthread_mutex_lock(&sh->lock);
				b->flags |= BUF_META | BUF_VERIFIED;
				pthread_mutex_unlock(&sh->lock);
			}
		}
		*out = &b->pub;
		return 0;
	}
	if (sh->nbufs > sh->max_bufs)
		shard_shrink(sh);
	pthread_mutex_unlock(&sh->lock);

	err = mfs_dev_pread(bc->dev, b->pub.data, bc->blocksize, blkno * (uint64_t)bc->blocksize);
	if (err)
		mfs_log(MFS_LOG_ERR, "block %llu: read failed: %s", (unsigned long long)blkno,
			strerror(-err));
	else if (exp)
		err = mfs_blk_verify(b->pub.data, bc->blocksize, blkno, bc->uuid, exp, 0);

	pthread_mutex_lock(&sh->lock);
	sh->st.reads++;
	b->flags &= ~BUF_LOADING;
	if (err) {
		/* Not kept: the next reader reads the device again. */
		hash_del(sh, b);
		if (__atomic_sub_fetch(&b->refs, 1, __ATOMIC_RELAXED) == 0)
			buf_free(sh, b);
	} else if (exp) {
		b->flags |= BUF_META | BUF_VERIFIED;
	}
	pthread_cond_broadcast(&sh->done);
	pthread_mutex_unlock(&sh->lock);
	if (err)
		return err;
	*out = &b->pub;
	return 0;
}


int mfs_bcache_sweep(int on)
{
	int was = bc_sweeping;

	bc_sweeping = on;
	return was;
}

int mfs_buf_read(struct mfs_bcache *bc, uint64_t blkno, const struct mfs_blk_expect *exp,
		 struct mfs_buf **out)
{
	return buf_read(bc, blkno, exp, bc_sweeping, out);
}

int mfs_buf_read_once(struct mfs_bcache *bc, uint64_t blkno, const struct mfs_blk_expect *exp,
		      struct mfs_buf **out)
{
	return buf_read(bc, blkno, exp, 1, out);
}

/* The cached contents of `blkno` into dst: 1 if the cache holds it, else 0 (a block being
 * read in is waited for: its contents are the device's, but it may be a new block being
 * filled, whose buffer is what counts). */
static int copy_cached(struct mfs_bcache *bc, uint64_t blkno, void *dst)
{
	struct bc_shard *sh = shard_of(bc, blk_hash(blkno));
	struct bc_buf *b;
	int found = 0;

	pthread_mutex_lock(&sh->lock);
	while ((b = hash_find(sh, blkno)) && (b->flags & BUF_LOADING))
		pthread_cond_wait(&sh->done, &sh->lock);
	if (b) {
		memcpy(dst, b->pub.data, bc->blocksize);
		found = 1;
	}
	pthread_mutex_unlock(&sh->lock);
	return found;
}

int mfs_bcache_read_range(struct mfs_bcache *bc, uint64_t blkno, unsigned n, void *dst)
{
	uint32_t bs = bc->blocksize;
	unsigned run = 0;       /* uncached blocks just before block i, to read together */
	int err = 0;

	for (unsigned i = 0; i <= n && !err; i++) {
		if (i < n && !copy_cached(bc, blkno + i, (char *)dst + (size_t)i * bs)) {
			run++;
			continue;
		}
		if (!run)
			continue;
		err = mfs_dev_pread(bc->dev, (char *)dst + (size_t)(i - run) * bs, (size_t)run * bs,
				    (blkno + i - run) * (uint64_t)bs);
		if (err)
			mfs_log(MFS_LOG_ERR, "blocks %llu+%u: read failed: %s",
				(unsigned long long)(blkno + i - run), run, strerror(-err));
		run = 0;
	}
	return err;
}

int mfs_buf_get_new(struct mfs_bcache *bc, uint64_t blkno, int meta, struct mfs_buf **out)
{
	struct bc_shard *sh = shard_of(bc, blk_hash(blkno));
	struct bc_buf *b;
	int created, err;

	*out = NULL;
	pthread_mutex_lock(&sh->lock);
	/* a sweep's new block (a split of a tree the sweep changes) leaves the cache once
	 * written home, as the blocks it reads do */
	err = buf_lookup_locked(sh, blkno, bc_sweeping, &b, &created);
	if (!err) {
		memset(b->pub.data, 0, bc->blocksize);
		b->flags &= ~(BUF_VERIFIED | BUF_LOADING);
		if (meta)
			b->flags |= BUF_META | BUF_VERIFIED;
		else
			b->flags &= ~BUF_META;
		if (created) {
			pthread_cond_broadcast(&sh->done);
			if (sh->nbufs > sh->max_bufs)
				shard_shrink(sh);
		}
		*out = &b->pub;
	}
	pthread_mutex_unlock(&sh->lock);
	return err;
}

void mfs_buf_hold(struct mfs_buf *bp)
{
	/* The caller holds a reference, so the count is not 0: no lock (see the top). */
	__atomic_add_fetch(&BUF(bp)->refs, 1, __ATOMIC_RELAXED);
}

void mfs_buf_put(struct mfs_buf *bp)
{
	struct bc_buf *b = BUF(bp);
	struct bc_shard *sh;
	unsigned r;

	if (!bp)
		return;
	/* Above 1 the count drops without the lock; 1 -> 0 only under it (see the top). */
	r = __atomic_load_n(&b->refs, __ATOMIC_RELAXED);
	while (r > 1)
		if (__atomic_compare_exchange_n(&b->refs, &r, r - 1, 1, __ATOMIC_RELEASE,
						__ATOMIC_RELAXED))
			return;
	sh = b->sh;
	pthread_mutex_lock(&sh->lock);
	if (__atomic_sub_fetch(&b->refs, 1, __ATOMIC_RELAXED) == 0) {
		if (!(b->flags & BUF_HASHED))
			buf_free(sh, b);
		else if ((b->flags & BUF_ONCE) && buf_evictable(b) && !(b->flags & BUF_DIRTY))
			buf_evict(sh, b);
		else if (sh->nbufs > sh->max_bufs)
			shard_shrink(sh);
	}
	pthread_mutex_unlock(&sh->lock);
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
	struct bc_shard *sh = b->sh;

	pthread_mutex_lock(&sh->lock);
	/* The journal writes this block itself later: the older in-place write must land
	 * first. */
	while (lsn && (b->flags & BUF_WRITING))
		pthread_cond_wait(&sh->done, &sh->lock);
	if (b->flags & BUF_HASHED) {
		/* changed: cached as any other, unless by the sweep that read it in (dropped
		 * once written home: mfs_bcache_checkpointed) */
		if (!bc_sweeping)
			b->flags &= ~BUF_ONCE;
		buf_set_dirty(sh, b);
		if (lsn > b->lsn)
			b->lsn = lsn;
	}
	pthread_mutex_unlock(&sh->lock);
}

void mfs_bcache_checkpointed(struct mfs_bcache *bc, uint64_t blkno, uint64_t lsn)
{
	struct bc_shard *sh = shard_of(bc, blk_hash(blkno));
	struct bc_buf *b;

	pthread_mutex_lock(&sh->lock);
	b = hash_find(sh, blkno);
	if (b && b->lsn && b->lsn <= lsn) {
		b->lsn = 0;
		buf_clear_dirty(sh, b);
		if ((b->flags & BUF_ONCE) && buf_evictable(b))
			buf_evict(sh, b);
		else if (!buf_refs(b) && sh->nbufs > sh->max_bufs)
			shard_shrink(sh);
	}
	pthread_mutex_unlock(&sh->lock);
}

void mfs_bcache_set_log(struct mfs_bcache *bc, int (*sync)(void *priv), void *priv)
{
	pthread_mutex_lock(&bc->log_lock);
	bc->log_sync = sync;
	bc->log_priv = priv;
	pthread_mutex_unlock(&bc->log_lock);
}

static unsigned buf_flags(const struct mfs_buf *bp)
{
	struct bc_buf *b = BUF(bp);
	unsigned flags;

	pthread_mutex_lock(&b->sh->lock);
	flags = b->flags;
	pthread_mutex_unlock(&b->sh->lock);
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

int mfs_buf_is_clean(const struct mfs_buf *bp)
{
	unsigned f = buf_flags(bp);

	return (f & BUF_HASHED) && !(f & (BUF_DIRTY | BUF_WRITING | BUF_LOADING));
}

void mfs_buf_set_meta(struct mfs_buf *bp)
{
	mfs_buf_set_meta_state(bp, 1);
}

void mfs_buf_set_meta_state(struct mfs_buf *bp, int meta)
{
	struct bc_buf *b = BUF(bp);

	pthread_mutex_lock(&b->sh->lock);
	if (meta)
		b->flags |= BUF_META | BUF_VERIFIED;
	else
		b->flags &= ~(BUF_META | BUF_VERIFIED);
	pthread_mutex_unlock(&b->sh->lock);
}

void mfs_bcache_forget(struct mfs_bcache *bc, uint64_t blkno)
{
	struct bc_shard *sh = shard_of(bc, blk_hash(blkno));
	struct bc_buf *b;

	pthread_mutex_lock(&sh->lock);
	/* An in-place write of the old contents must land before the block is reused. */
	while ((b = hash_find(sh, blkno)) && (b->flags & BUF_WRITING))
		pthread_cond_wait(&sh->done, &sh->lock);
	if (b && !(b->flags & BUF_LOADING)) {
		buf_clear_dirty(sh, b);
		b->lsn = 0;
		hash_del(sh, b);
		if (buf_refs(b) == 0)
			buf_free(sh, b);
		/* else: freed by the last mfs_buf_put, never written */
	}
	pthread_mutex_unlock(&sh->lock);
}

/* Write back every dirty, unjournaled buffer of one shard and wait for every write in
 * flight (eviction's too) to finish. */
static int shard_flush(struct bc_shard *sh, void *snap)
{
	int err = 0;

	pthread_mutex_lock(&sh->lock);
	for (;;) {
		struct bc_buf *b = NULL;
		struct mfs_list *n;

		/* Journaled ones are the journal's (committed after the checkpoint); a buffer
		 * still being written is written again once that write is done. */
		mfs_list_foreach(n, &sh->dirty) {
			struct bc_buf *d = mfs_list_entry(n, struct bc_buf, dirty);

			if (!d->lsn && !(d->flags & BUF_WRITING)) {
				b = d;
				break;
			}
		}
		if (b) {
			err = buf_writeback(sh, b, snap);
			if (err)
				break;
			continue;
		}
		if (!sh->nwriting)
			break;
		pthread_cond_wait(&sh->done, &sh->lock);
	}
	pthread_mutex_unlock(&sh->lock);
	return err;
}

int mfs_bcache_flush(struct mfs_bcache *bc)
{
	int (*log_sync)(void *priv);
	void *log_priv, *snap;
	int err = 0;

	pthread_mutex_lock(&bc->log_lock);
	log_sync = bc->log_sync;
	log_priv = bc->log_priv;
	pthread_mutex_unlock(&bc->log_lock);
	if (log_sync) {
		err = log_sync(log_priv);
		if (err)
			return err;
	}
	snap = mfs_malloc(bc->blocksize);
	if (!snap)
		return -ENOMEM;
	for (unsigned s = 0; s <= bc->shard_mask && !err; s++)
		err = shard_flush(&bc->shards[s], snap);
	free(snap);
	if (!err)
		err = mfs_dev_flush(bc->dev);
	return err;
}

static void bcache_free_all(struct mfs_bcache *bc)
{
	for (unsigned s = 0; s <= bc->shard_mask; s++) {
		struct bc_shard *sh = &bc->shards[s];

		for (size_t i = 0; i <= sh->mask; i++) {
			struct bc_buf *b = sh->slots[i].b;

			if (!b)
				continue;
			if (buf_refs(b))
				mfs_log(MFS_LOG_WARN, "block %llu: buffer still held at cache teardown",
					(unsigned long long)b->pub.blkno);
		}
		while (sh->chunks) {
			struct bc_chunk *c = sh->chunks;

			sh->chunks = c->next;
			BC_UNPOISON(c->data, (size_t)sh->chunk_bufs * bc->blocksize);
			BC_UNPOISON(c->bufs, sh->chunk_bufs * sizeof(*c->bufs));
			free(c->data);
			free(c->bufs);
			free(c);
		}
		free(sh->slots);
		pthread_mutex_destroy(&sh->lock);
		pthread_cond_destroy(&sh->done);
	}
	pthread_mutex_destroy(&bc->log_lock);
	free(bc->shards);
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
