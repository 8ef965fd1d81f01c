/*
 * busy.c — busy extents: freed space waiting for its transaction to be durable (busy.h).
 *
 * Each AG has a sorted array of entries (start, len, lsn, owner): `lsn` 0 while the
 * freeing transaction (`owner`) has not committed, then its commit sequence and no owner.
 * Invariants, under the AG list's lock:
 *   - entries are sorted by start (equal starts in any order); they may overlap;
 *   - maxlen >= the length of every entry, so an entry covering block b starts at or
 *     after b - maxlen (the gap query's binary search);
 *   - ncommitted counts the entries with lsn != 0, and the filesystem-wide `committed`
 *     is the sum over the AGs.
 *
 * Durability against stamping: mfs_busy_durable() stores the new durable sequence before
 * it reads each AG's ncommitted; a commit reads the durable sequence (under the AG lock)
 * before it counts an entry as committed.  Both are sequentially consistent atomics, so
 * either the commit sees the sequence durable and drops its entry at once, or the durable
 * pass sees the count and sweeps the AG: no entry is left waiting for a sequence that has
 * already passed.
 */
#include "mem.h"
#include "busy.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

struct bent {
	uint32_t start, len;
	uint64_t lsn;               /* 0: pending */
	const void *owner;          /* the pending transaction */
};

struct bag {
	pthread_mutex_t lock;
	struct bent *v;
	size_t n, cap;
	uint32_t maxlen;
	atomic_size_t ncommitted;
};

struct mfs_busy {
	uint32_t agcount;
	struct bag *ags;
	atomic_uint_fast64_t durable;
	atomic_uint_fast64_t committed, inserted, cleared, forces, trims;
};

int mfs_busy_create(uint32_t agcount, struct mfs_busy **out)
{
	struct mfs_busy *b;

	*out = NULL;
	if (!agcount)
		return -EINVAL;
	b = mfs_calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->ags = mfs_calloc(agcount, sizeof(*b->ags));
	if (!b->ags) {
		free(b);
		return -ENOMEM;
	}
	b->agcount = agcount;
	for (uint32_t a = 0; a < agcount; a++)
		pthread_mutex_init(&b->ags[a].lock, NULL);
	*out = b;
	return 0;
}

void mfs_busy_destroy(struct mfs_busy *b)
{
	if (!b)
		return;
	for (uint32_t a = 0; a < b->agcount; a++) {
		pthread_mutex_destroy(&b->ags[a].lock);
		free(b->ags[a].v);
	}
	free(b->ags);
	free(b);
}

/* First index whose start is >= s.  Lock held. */
static size_t lower_bound(const struct bag *g, uint32_t s)
{
	size_t lo = 0, hi = g->n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (g->v[mid].start < s)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

int mfs_busy_insert(struct mfs_busy *b, uint32_t agno, uint32_t agbno, uint32_t len,
		    const void *owner)
{
	struct bag *g;
	size_t i;

	if (agno >= b->agcount || len == 0 || !owner)
		return -EINVAL;
	g = &b->ags[agno];
	pthread_mutex_lock(&g->lock);
	if (g->n == g->cap) {
		size_t ncap = g->cap ? g->cap * 2 : 16;
		struct bent *v = mfs_realloc(g->v, ncap * sizeof(*v));

		if (!v) {
			pthread_mutex_unlock(&g->lock);
			return -ENOMEM;
		}
		g->v = v;
		g->cap = ncap;
	}
	i = lower_bound(g, agbno);
	memmove(&g->v[i + 1], &g->v[i], (g->n - i) * sizeof(*g->v));
	g->v[i] = (struct bent){ agbno, len, 0, owner };
	g->n++;
	if (len > g->maxlen)
		g->maxlen = len;
	pthread_mutex_unlock(&g->lock);
	b->inserted++;
	return 0;
}

/*
 * Drop, keeping the order, the pending entries of `owner` (SWEEP_PENDING) or the committed
 * entries up to sequence `lsn` (SWEEP_DURABLE).  Lock held.  Returns how many committed
 * entries went.
 */
enum sweep { SWEEP_PENDING, SWEEP_DURABLE };

static size_t sweep(struct bag *g, enum sweep how, const void *owner, uint64_t lsn)
{
	size_t k = 0, gone_committed = 0;

	for (size_t i = 0; i < g->n; i++) {
		const struct bent *e = &g->v[i];
		int drop = how == SWEEP_PENDING ? e->lsn == 0 && e->owner == owner
						: e->lsn != 0 && e->lsn <= lsn;

		if (!drop)
			g->v[k++] = *e;
		else if (e->lsn)
			gone_committed++;
	}
	g->n = k;
	if (!k)
		g->maxlen = 0;
	return gone_committed;
}

void mfs_busy_commit(struct mfs_busy *b, uint32_t agno, const void *owner, uint64_t lsn)
{
	struct bag *g;
	uint64_t durable;
	size_t stamped = 0;

	if (agno >= b->agcount)
		return;
	g = &b->ags[agno];
	pthread_mutex_lock(&g->lock);
	durable = atomic_load(&b->durable);
	if (lsn == 0 || lsn <= durable) {
		sweep(g, SWEEP_PENDING, owner, 0);
	} else {
		for (size_t i = 0; i < g->n; i++)
			if (g->v[i].lsn == 0 && g->v[i].owner == owner) {
				g->v[i].lsn = lsn;
				g->v[i].owner = NULL;
				stamped++;
			}
		atomic_fetch_add(&g->ncommitted, stamped);
		atomic_fetch_add(&b->committed, stamped);
	}
	pthread_mutex_unlock(&g->lock);
}

void mfs_busy_cancel(struct mfs_busy *b, uint32_t agno, const void *owner)
{
	struct bag *g;

	if (agno >= b->agcount)
		return;
	g = &b->ags[agno];
	pthread_mutex_lock(&g->lock);
	sweep(g, SWEEP_PENDING, owner, 0);
	pthread_mutex_unlock(&g->lock);
}

void mfs_busy_durable(struct mfs_busy *b, uint64_t lsn)
{
	uint64_t old = atomic_load(&b->durable);

	while (old < lsn && !atomic_compare_exchange_weak(&b->durable, &old, lsn))
		;
	if (!atomic_load(&b->committed))
		return;
	for (uint32_t a = 0; a < b->agcount; a++) {
		struct bag *g = &b->ags[a];
		size_t gone;

		if (!atomic_load(&g->ncommitted))
			continue;
		pthread_mutex_lock(&g->lock);
		gone = sweep(g, SWEEP_DURABLE, NULL, atomic_load(&b->durable));
		atomic_fetch_sub(&g->ncommitted, gone);
		atomic_fetch_sub(&b->committed, gone);
		pthread_mutex_unlock(&g->lock);
		b->cleared += gone;
	}
}

int mfs_busy_gap(struct mfs_busy *b, uint32_t agno, uint32_t start, uint32_t end,
		 uint32_t *gs, uint32_t *ge)
{
	struct bag *g;
	uint32_t cur = start, stop = end;
	int found;

	if (agno >= b->agcount || start >= end)
		return 0;
	g = &b->ags[agno];
	pthread_mutex_lock(&g->lock);
	/* Walk the entries that may reach [cur, end), in start order: each one that covers
	 * cur pushes it past its end; the first that starts beyond cur closes the gap. */
	for (size_t i = lower_bound(g, start > g->maxlen ? start - g->maxlen : 0);
	     i < g->n && g->v[i].start < end && cur < end; i++) {
		const struct bent *e = &g->v[i];
		uint64_t eend = (uint64_t)e->start + e->len;

		if (eend <= cur)
			continue;
		if (e->start > cur) {
			stop = e->start;
			break;
		}
		cur = (uint32_t)(eend < end ? eend : end);
	}
	pthread_mutex_unlock(&g->lock);
	found = cur < stop;
	if (found) {
		*gs = cur;
		*ge = stop;
	}
	return found;
}

int mfs_busy_overlaps(struct mfs_busy *b, uint32_t agno, uint32_t start, uint32_t end)
{
	uint32_t gs, ge;

	if (start >= end)
		return 0;
	return !mfs_busy_gap(b, agno, start, end, &gs, &ge) || gs != start || ge != end;
}

void mfs_busy_get_stats(struct mfs_busy *b, struct mfs_busy_stats *st)
{
	memset(st, 0, sizeof(*st));
	for (uint32_t a = 0; a < b->agcount; a++) {
		pthread_mutex_lock(&b->ags[a].lock);
		st->entries += b->ags[a].n;
		pthread_mutex_unlock(&b->ags[a].lock);
	}
	st->committed = atomic_load(&b->committed);
	st->inserted = atomic_load(&b->inserted);
	st->cleared = atomic_load(&b->cleared);
	st->forces = atomic_load(&b->forces);
	st->trims = atomic_load(&b->trims);
}

void mfs_busy_count_force(struct mfs_busy *b)
{
	b->forces++;
}

void mfs_busy_count_trim(struct mfs_busy *b)
{
	b->trims++;
}
