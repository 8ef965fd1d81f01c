/*
 * check_btree.c — the generic btree engine against an in-memory model under seeded random
 * insert/delete/update/lookup(EQ/LE/GE)/next/prev/range operations, growing trees to
 * several levels and shrinking them to nothing; transaction cancel restoring every byte;
 * and the verifier catching each kind of on-disk corruption without crashing.
 *
 * Seed: $BTREE_SEED, or the clock (printed either way).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "dev.h"
#include "fs.h"
#include "geom.h"
#include "log.h"
#include "trans.h"
#include "verify.h"

#include "tu.h"

/* The seed of every random test: $BTREE_SEED, or the clock (printed once, in main). */
static uint64_t btree_seed;

/* ---- the test tree: 16-byte records (u64 key, u64 value), 8-byte keys ---------------- */
struct ttree {
	struct tu_scratch *t;
	struct mfs_btree_root root;
	uint8_t *bitmap;            /* allocated blocks of the AG */
	uint64_t nbits, used, hint;
	uint64_t check_calls;
	int set_root_calls;
};

#define TEST_MAGIC  MFS_MAGIC('T', 'S', 'T', 'B')
#define TEST_INO    4242u

static int t_check_rec(struct mfs_btree_cur *cur, const void *rec)
{
	struct ttree *tt = cur->priv;
	uint64_t v;

	memcpy(&v, (const uint8_t *)rec + 8, 8);
	tt->check_calls++;
	if (mfs_get64(v) == 0xbadbadbadbadbadbull)
		return MFS_CORRUPT("AG %u %s: record with a poisoned value", cur->agno,
				   cur->ops->name);
	return 0;
}

static int t_alloc(struct mfs_btree_cur *cur, uint64_t *fsb)
{
	struct ttree *tt = cur->priv;

	for (uint64_t n = 0; n < tt->nbits; n++) {
		uint64_t b = (tt->hint + n) % tt->nbits;

		if (b < MFS_AG_FIXED_BLOCKS)
			continue;
		if (!(tt->bitmap[b / 8] & (1u << (b % 8)))) {
			tt->bitmap[b / 8] |= (uint8_t)(1u << (b % 8));
			tt->used++;
			tt->hint = b + 1;
			*fsb = b;
			return 0;
		}
	}
	return -ENOSPC;
}

static int t_free(struct mfs_btree_cur *cur, uint64_t fsb)
{
	struct ttree *tt = cur->priv;

	if (fsb >= tt->nbits || !(tt->bitmap[fsb / 8] & (1u << (fsb % 8))))
		return MFS_CORRUPT("test allocator: block %" PRIu64 " freed twice", fsb);
	tt->bitmap[fsb / 8] &= (uint8_t)~(1u << (fsb % 8));
	tt->used--;
	return 0;
}

static int t_set_root(struct mfs_btree_cur *cur)
{
	struct ttree *tt = cur->priv;

	tt->root = cur->root;
	tt->set_root_calls++;
	return 0;
}

static const struct mfs_btree_ops ops_ag = {
	.name = "test btree (agbno pointers)", .magic = TEST_MAGIC,
	.rec_len = 16, .key_len = 8, .ptr_len = 4,
	.cmp_keys = tu_key64_cmp, .rec_key = tu_key64_of_rec, .check_rec = t_check_rec,
	.alloc_block = t_alloc, .free_block = t_free, .set_root = t_set_root,
};

static const struct mfs_btree_ops ops_fsb = {
	.name = "test btree (fsblock pointers)", .magic = TEST_MAGIC,
	.rec_len = 16, .key_len = 8, .ptr_len = 8,
	.cmp_keys = tu_key64_cmp, .rec_key = tu_key64_of_rec, .check_rec = t_check_rec,
	.alloc_block = t_alloc, .free_block = t_free, .set_root = t_set_root,
};

static uint64_t owner_of(const struct mfs_btree_ops *ops)
{
	return ops->ptr_len == 4 ? 0 : TEST_INO;
}

/* A new, empty tree: one empty leaf as root. */
static void tt_create(struct ttree *tt, struct tu_scratch *t, const struct mfs_btree_ops *ops)
{
	struct mfs_trans *tp;
	struct mfs_buf *bp;
	uint64_t fsb;

	memset(tt, 0, sizeof(*tt));
	tt->t = t;
	tt->nbits = t->geo.agblocks;
	tt->bitmap = calloc((tt->nbits + 7) / 8, 1);
	ck_assert_ptr_nonnull(tt->bitmap);
	tt->hint = 16;
	{
		struct mfs_btree_cur cur;

		cur.priv = tt;
		T_IEQ(t_alloc(&cur, &fsb), 0);
	}
	T_IEQ(mfs_trans_alloc(t->fs, &tp), 0);
	T_IEQ(mfs_trans_get_new(tp, fsb, 1, &bp), 0);
	mfs_blk_init(bp->data, t->geo.blocksize, ops->magic, fsb, owner_of(ops), t->geo.uuid);
	T_IEQ(mfs_trans_commit(tp), 0);
	tt->root.fsb = fsb;
	tt->root.levels = 1;
}

static void tt_destroy(struct ttree *tt)
{
	free(tt->bitmap);
}

static void cur_init(struct mfs_btree_cur *cur, struct ttree *tt, struct mfs_trans *tp,
		     const struct mfs_btree_ops *ops)
{
	mfs_btree_cur_init(cur, tt->t->fs, tp, ops, owner_of(ops), 0, &tt->root, tt);
}

static void mkrec(uint8_t rec[16], uint64_t k, uint64_t v)
{
	uint64_t x;

	mfs_put64(x, k);
	memcpy(rec, &x, 8);
	mfs_put64(x, v);
	memcpy(rec + 8, &x, 8);
}

static uint64_t rec_k(const uint8_t *rec)
{
	uint64_t x;

	memcpy(&x, rec, 8);
	return mfs_get64(x);
}

static uint64_t rec_v(const uint8_t *rec)
{
	uint64_t x;

	memcpy(&x, rec + 8, 8);
	return mfs_get64(x);
}

static void mkkey(uint8_t key[8], uint64_t k)
{
	uint64_t x;

	mfs_put64(x, k);
	memcpy(key, &x, 8);
}

/* ---- the model: a domain of 2^20 ordered keys with extremes and adjacent pairs --------- */
#define DOM_BITS 20
#define DOM      (1u << DOM_BITS)

/* Domain index -> key: 0, 1, 2^44, 2^44+1, ... (adjacent pairs), the last is UINT64_MAX. */
static uint64_t dkey(uint32_t i)
{
	if (i == DOM - 1)
		return UINT64_MAX;
	return ((uint64_t)(i / 2) << 44) | (i & 1);
}

/* Smallest index whose key is >= q (DOM when none). */
static uint32_t dom_ge(uint64_t q)
{
	uint32_t lo = 0, hi = DOM;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (dkey(mid) < q)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

struct model {
	uint64_t *val;
	uint64_t bits[DOM / 64];
	uint64_t sum[DOM / 64 / 64];
	uint64_t count;
};

static int m_has(const struct model *m, uint32_t i)
{
	return (m->bits[i / 64] >> (i % 64)) & 1;
}

static void m_set(struct model *m, uint32_t i, uint64_t v)
{
	if (!m_has(m, i))
		m->count++;
	m->bits[i / 64] |= 1ull << (i % 64);
	m->sum[i / 4096] |= 1ull << ((i / 64) % 64);
	m->val[i] = v;
}

static void m_clear(struct model *m, uint32_t i)
{
	if (m_has(m, i))
		m->count--;
	m->bits[i / 64] &= ~(1ull << (i % 64));
	if (!m->bits[i / 64])
		m->sum[i / 4096] &= ~(1ull << ((i / 64) % 64));
}

/* First present index >= i, DOM if none. */
static uint32_t m_next(const struct model *m, uint32_t i)
{
	uint32_t w;

	if (i >= DOM)
		return DOM;
	w = i / 64;
	if (m->bits[w] >> (i % 64))
		return i + (uint32_t)__builtin_ctzll(m->bits[w] >> (i % 64));
	for (w = w + 1; w < DOM / 64;) {
		uint32_t sw = w / 64;
		uint64_t s = m->sum[sw] >> (w % 64);

		if (s) {
			w += (uint32_t)__builtin_ctzll(s);
			return w * 64 + (uint32_t)__builtin_ctzll(m->bits[w]);
		}
		w = (sw + 1) * 64;
	}
	return DOM;
}

/* Last present index <= i, -1 if none. */
static int64_t m_prev(const struct model *m, int64_t i)
{
	int64_t w;

	if (i < 0)
		return -1;
	w = i / 64;
	{
		uint64_t b = m->bits[w] & (((i % 64) == 63) ? ~0ull : ((2ull << (i % 64)) - 1));

		if (b)
			return w * 64 + 63 - __builtin_clzll(b);
	}
	for (w = w - 1; w >= 0;) {
		int64_t sw = w / 64;
		uint64_t s = m->sum[sw] & (((w % 64) == 63) ? ~0ull : ((2ull << (w % 64)) - 1));

		if (s) {
			w = sw * 64 + 63 - __builtin_clzll(s);
			return w * 64 + 63 - __builtin_clzll(m->bits[w]);
		}
		w = sw * 64 - 1;
	}
	return -1;
}

static struct model *m_new(void)
{
	struct model *m = calloc(1, sizeof(*m));

	ck_assert_ptr_nonnull(m);
	m->val = calloc(DOM, sizeof(uint64_t));
	ck_assert_ptr_nonnull(m->val);
	return m;
}

static void m_free(struct model *m)
{
	free(m->val);
	free(m);
}

/* ---- checking tree against model ------------------------------------------------------ */
struct collect {
	const struct model *m;
	uint32_t next;        /* next model index expected */
	uint64_t seen;
	uint64_t limit;       /* stop after this many (0: no limit) */
};

static int collect_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	struct collect *c = priv;
	uint64_t k = rec_k(rec);

	(void)cur;
	T_ULT(c->next, DOM);
	ck_assert_msg(k == dkey(c->next), "range: key %" PRIx64 ", model expects %" PRIx64,
		      k, dkey(c->next));
	T_UEQ(rec_v(rec), c->m->val[c->next]);
	c->next = m_next(c->m, c->next + 1);
	c->seen++;
	if (c->limit && c->seen == c->limit)
		return 1;
	return 0;
}

/* The blocks a walk names, in order, with their levels. */
struct blist {
	uint64_t *fsb;
	unsigned *lev;
	size_t n, cap;
};

static int blist_fn(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	struct blist *l = priv;

	(void)cur;
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 256;
		l->fsb = realloc(l->fsb, l->cap * sizeof(*l->fsb));
		l->lev = realloc(l->lev, l->cap * sizeof(*l->lev));
		ck_assert(l->fsb && l->lev);
	}
	l->fsb[l->n] = fsb;
	l->lev[l->n++] = level;
	return 0;
}

static void blist_free(struct blist *l)
{
	free(l->fsb);
	free(l->lev);
	memset(l, 0, sizeof(*l));
}

/* The trusted visit names the blocks the checked walk visits, in the same order. */
static void same_blocks(struct mfs_btree_cur *cur, uint64_t nblocks)
{
	struct blist a = { 0 }, b = { 0 };
	uint64_t n = 0;

	T_IEQ(mfs_btree_visit_blocks(cur, blist_fn, &a), 0);
	T_IEQ(mfs_btree_visit_trusted(cur, nblocks, blist_fn, &b, &n), 0);
	T_UEQ(a.n, nblocks);
	T_UEQ(b.n, nblocks);
	T_UEQ(n, nblocks);
	for (size_t i = 0; i < a.n; i++) {
		T_UEQ(a.fsb[i], b.fsb[i]);
		T_UEQ(a.lev[i], b.lev[i]);
	}
	blist_free(&a);
	blist_free(&b);
}

static void tt_verify(struct ttree *tt, const struct mfs_btree_ops *ops, const struct model *m)
{
	struct mfs_btree_cur cur;
	uint64_t nrecs = ~0ull, nblocks = 0;
	int err;

	cur_init(&cur, tt, NULL, ops);
	tt->check_calls = 0;
	err = mfs_btree_verify(&cur, &nrecs, &nblocks);
	T_IEQ(err, 0);
	T_UEQ(tt->check_calls, nrecs);
	T_UEQ(nblocks, tt->used);
	/* the nodes' count agrees; a bound one short of it is corruption */
	T_IEQ(mfs_btree_count_trusted(&cur, nblocks, &nblocks), 0);
	T_UEQ(nblocks, tt->used);
	same_blocks(&cur, nblocks);
	if (nblocks > 1) {
		int quiet = mfs_log_quiet();

		T_IEQ(mfs_btree_count_trusted(&cur, nblocks - 1, &nblocks), -EFSCORRUPTED);
		mfs_log_set_level(quiet);
	}
	if (m) {
		struct collect c = { .m = m, .next = m_next(m, 0) };

		T_UEQ(nrecs, m->count);
		T_IEQ(mfs_btree_query_range(&cur, NULL, NULL, collect_fn, &c), 0);
		T_UEQ(c.seen, m->count);
		T_UEQ(c.next, DOM);
	}
	mfs_btree_cur_release(&cur);
}

/* One lookup of each kind against the model, then a few steps of next/prev. */
static void check_lookup(struct mfs_btree_cur *cur, const struct model *m, uint64_t q, int how)
{
	uint8_t key[8], rec[16];
	int stat, err;
	int64_t want;

	mkkey(key, q);
	err = mfs_btree_lookup(cur, key, (enum mfs_btree_lookup)how, &stat);
	T_IEQ(err, 0);
	if (how == MFS_LOOKUP_EQ) {
		uint32_t i = dom_ge(q);

		want = (i < DOM && dkey(i) == q && m_has(m, i)) ? (int64_t)i : -1;
	} else if (how == MFS_LOOKUP_GE) {
		uint32_t i = m_next(m, dom_ge(q));

		want = i < DOM ? (int64_t)i : -1;
	} else {
		uint32_t i = dom_ge(q);   /* first key >= q; LE wants last key <= q */

		if (i < DOM && dkey(i) == q)
			want = m_prev(m, i);
		else
			want = m_prev(m, (int64_t)i - 1);
	}
	T_IEQ(stat, want >= 0);
	if (want < 0)
		return;
	T_IEQ(mfs_btree_get(cur, rec, &stat), 0);
	T_IEQ(stat, 1);
	T_UEQ(rec_k(rec), dkey((uint32_t)want));
	T_UEQ(rec_v(rec), m->val[want]);

	/* Walk a few records either way. */
	{
		int dir = (int)(tu_rand() % 2), steps = (int)(tu_rand() % 4);
		int64_t pos = want;

		for (int s = 0; s < steps; s++) {
			if (dir) {
				T_IEQ(mfs_btree_next(cur, &stat), 0);
				pos = m_next(m, (uint32_t)pos + 1);
				if (pos >= DOM)
					pos = -1;
			} else {
				T_IEQ(mfs_btree_prev(cur, &stat), 0);
				pos = m_prev(m, pos - 1);
			}
			T_IEQ(stat, pos >= 0);
			if (pos < 0)
				break;
			T_IEQ(mfs_btree_get(cur, rec, &stat), 0);
			T_IEQ(stat, 1);
			T_UEQ(rec_k(rec), dkey((uint32_t)pos));
		}
	}
}

struct phase {
	uint64_t ops;
	unsigned p_ins, p_del, p_upd, p_look, p_range;   /* percentages */
	uint32_t keyspace;                              /* domain indexes used: [0, keyspace) */
};

static uint32_t pick_index(uint32_t keyspace)
{
	/* Mostly uniform, sometimes an extreme or a neighbour of one. */
	switch (tu_rand() % 16) {
	case 0:
		return (uint32_t)(tu_rand() % 4);
	case 1:
		return DOM - 1 - (uint32_t)(tu_rand() % 4);
	default:
		return (uint32_t)(tu_rand() % keyspace);
	}
}

/*
 * Run random operations in transactions of `txn_ops` operations each; verify the tree
 * against the model every `verify_every` operations.
 */
static void run_phase(struct ttree *tt, const struct mfs_btree_ops *ops, struct model *m,
		      const struct phase *ph, uint64_t verify_every, uint64_t *opcount)
{
	struct mfs_trans *tp = NULL;
	struct mfs_btree_cur cur;
	unsigned txn_ops = 500, in_txn = 0;

	for (uint64_t n = 0; n < ph->ops; n++) {
		unsigned r = (unsigned)(tu_rand() % 100);
		uint8_t rec[16], key[8];
		int stat, err;

		if (!tp) {
			T_IEQ(mfs_trans_alloc(tt->t->fs, &tp), 0);
			cur_init(&cur, tt, tp, ops);
		}
		if (r < ph->p_ins) {
			uint32_t i = pick_index(ph->keyspace);
			uint64_t v = tu_rand();

			mkrec(rec, dkey(i), v);
			err = mfs_btree_insert(&cur, rec);
			if (m_has(m, i)) {
				T_IEQ(err, -EEXIST);
			} else {
				T_IEQ(err, 0);
				m_set(m, i, v);
			}
		} else if (r < ph->p_ins + ph->p_del) {
			uint32_t i = pick_index(ph->keyspace);

			/* Delete what a GE lookup finds most of the time, so that shrinking
			 * phases do shrink. */
			if (tu_rand() % 4) {
				uint32_t j = m_next(m, i);

				if (j == DOM)
					j = m_next(m, 0);
				if (j == DOM)
					continue;
				i = j;
			}
			mkkey(key, dkey(i));
			T_IEQ(mfs_btree_lookup(&cur, key, MFS_LOOKUP_EQ, &stat), 0);
			T_IEQ(stat, m_has(m, i));
			if (stat) {
				T_IEQ(mfs_btree_delete(&cur), 0);
				m_clear(m, i);
			}
		} else if (r < ph->p_ins + ph->p_del + ph->p_upd) {
			uint32_t i = m_next(m, pick_index(ph->keyspace));
			uint64_t v = tu_rand();

			if (i == DOM)
				continue;
			mkkey(key, dkey(i));
			T_IEQ(mfs_btree_lookup(&cur, key, MFS_LOOKUP_EQ, &stat), 0);
			T_IEQ(stat, 1);
			mkrec(rec, dkey(i), v);
			T_IEQ(mfs_btree_update(&cur, rec), 0);
			m_set(m, i, v);
		} else if (r < ph->p_ins + ph->p_del + ph->p_upd + ph->p_look) {
			uint64_t q;

			switch (tu_rand() % 3) {
			case 0:
				q = dkey(pick_index(ph->keyspace));
				break;
			case 1:
				q = dkey(pick_index(ph->keyspace)) + (tu_rand() % 3) - 1;
				break;
			default:
				q = tu_rand();
			}
			check_lookup(&cur, m, q, (int)(tu_rand() % 3));
		} else {
			uint32_t i = pick_index(ph->keyspace);
			uint32_t span = (uint32_t)(tu_rand() % 64);
			uint8_t lo[8], hi[8];
			struct collect c = { .m = m };
			uint32_t last = i + span >= DOM ? DOM - 1 : i + span;

			mkkey(lo, dkey(i));
			mkkey(hi, dkey(last));
			c.next = m_next(m, i);
			if (tu_rand() % 8 == 0) {
				/* Stop early through the callback's return value. */
				c.limit = 1 + tu_rand() % 5;
				err = mfs_btree_query_range(&cur, lo, hi, collect_fn, &c);
				T_IGE(err, 0);
			} else {
				err = mfs_btree_query_range(&cur, lo, hi, collect_fn, &c);
				T_IEQ(err, 0);
				ck_assert_msg(c.next > last, "range stopped early");
			}
		}
		(*opcount)++;
		if (++in_txn == txn_ops || n + 1 == ph->ops || *opcount % verify_every == 0) {
			mfs_btree_cur_release(&cur);
			T_IEQ(mfs_trans_commit(tp), 0);
			tp = NULL;
			in_txn = 0;
		}
		if (*opcount % verify_every == 0)
			tt_verify(tt, ops, m);
	}
	if (tp) {
		mfs_btree_cur_release(&cur);
		T_IEQ(mfs_trans_commit(tp), 0);
	}
	tt_verify(tt, ops, m);
}

/* Empty the tree by deleting in key order, from the front or from the back. */
static void drain(struct ttree *tt, const struct mfs_btree_ops *ops, struct model *m, int back)
{
	struct mfs_trans *tp;
	struct mfs_btree_cur cur;
	uint8_t key[8];
	int stat;
	unsigned n = 0;

	T_IEQ(mfs_trans_alloc(tt->t->fs, &tp), 0);
	cur_init(&cur, tt, tp, ops);
	while (m->count) {
		int64_t i = back ? m_prev(m, DOM - 1) : (int64_t)m_next(m, 0);

		mkkey(key, dkey((uint32_t)i));
		T_IEQ(mfs_btree_lookup(&cur, key, MFS_LOOKUP_EQ, &stat), 0);
		T_IEQ(stat, 1);
		T_IEQ(mfs_btree_delete(&cur), 0);
		m_clear(m, (uint32_t)i);
		if (++n % 2000 == 0) {
			mfs_btree_cur_release(&cur);
			T_IEQ(mfs_trans_commit(tp), 0);
			T_IEQ(mfs_trans_alloc(tt->t->fs, &tp), 0);
			cur_init(&cur, tt, tp, ops);
		}
	}
	mfs_btree_cur_release(&cur);
	T_IEQ(mfs_trans_commit(tp), 0);
}

static unsigned tree_levels_max;

static void model_test(uint32_t bs, const struct mfs_btree_ops *ops, uint64_t total_ops)
{
	struct tu_scratch t;
	struct ttree tt;
	struct model *m = m_new();
	uint64_t opcount = 0, vevery = 100000;
	uint64_t scale = UNDER_ASAN ? 4 : 1;
	unsigned maxlev = 0;

	tu_srand(btree_seed ^ bs ^ ops->ptr_len);
	tu_scratch_open(&t, "check_btree", bs, 1u << 22);
	tt_create(&tt, &t, ops);
	tt_verify(&tt, ops, m);

	/* Grow: mostly inserts over the whole domain. */
	struct phase grow = { total_ops * 45 / 100 / scale, 80, 4, 4, 7, 5, DOM };
	run_phase(&tt, ops, m, &grow, vevery, &opcount);
	printf("check_btree: bs %u: grown to %" PRIu64 " records, %u levels, %" PRIu64
	       " blocks\n", bs, m->count, tt.root.levels, tt.used);
	if (tt.root.levels > maxlev)
		maxlev = tt.root.levels;
	/* Churn at a steady size. */
	struct phase churn = { total_ops * 15 / 100 / scale, 35, 35, 5, 15, 10, DOM };
	run_phase(&tt, ops, m, &churn, vevery, &opcount);
	/* Shrink to empty: deletes dominate (merges and root collapses at every level). */
	struct phase shrink = { total_ops * 25 / 100 / scale, 15, 60, 5, 12, 8, DOM };
	run_phase(&tt, ops, m, &shrink, vevery, &opcount);
	drain(&tt, ops, m, 0);
	tt_verify(&tt, ops, m);
	T_UEQ(tt.root.levels, 1);
	T_UEQ(tt.used, 1);

	/* Dense keys (adjacent pairs, extremes): grow again in a small key space, drain from
	 * the back. */
	struct phase dense = { total_ops * 15 / 100 / scale, 60, 15, 5, 12, 8, 40000 };
	run_phase(&tt, ops, m, &dense, vevery, &opcount);
	if (tt.root.levels > maxlev)
		maxlev = tt.root.levels;
	drain(&tt, ops, m, 1);
	tt_verify(&tt, ops, m);
	T_UEQ(tt.root.levels, 1);
	T_UEQ(tt.used, 1);

	/* Everything survives a trip through the image. */
	tu_scratch_remount(&t);
	tt_verify(&tt, ops, m);

	printf("check_btree: bs %u ptr %u: %" PRIu64 " ops, up to %u levels\n", bs,
	       ops->ptr_len, opcount, maxlev);
	tree_levels_max = maxlev;
	T_UGE(opcount, total_ops / scale * 99 / 100);
	tt_destroy(&tt);
	tu_scratch_close(&t);
	m_free(m);
}

START_TEST(test_model_1k_agptr)
{
	model_test(1024, &ops_ag, 1020000);
	T_UGE(tree_levels_max, UNDER_ASAN ? 3 : 4);
}
END_TEST

START_TEST(test_model_4k_fsbptr)
{
	model_test(4096, &ops_fsb, 400000);
	T_UGE(tree_levels_max, UNDER_ASAN ? 2 : 3);
}
END_TEST

/* Sequential inserts (ascending and descending) then deletes: the split and merge
 * edge cases at each end of the tree. */
START_TEST(test_sequential)
{
	struct tu_scratch t;
	struct ttree tt;
	struct model *m = m_new();
	struct mfs_trans *tp;
	struct mfs_btree_cur cur;
	uint8_t rec[16];
	unsigned n = UNDER_ASAN ? 20000 : 100000;

	tu_srand(btree_seed + 7);
	tu_scratch_open(&t, "check_btree", 1024, 1u << 20);
	tt_create(&tt, &t, &ops_ag);
	for (int dir = 0; dir < 2; dir++) {
		T_IEQ(mfs_trans_alloc(t.fs, &tp), 0);
		cur_init(&cur, &tt, tp, &ops_ag);
		for (unsigned i = 0; i < n; i++) {
			uint32_t d = dir ? n - 1 - i : i;

			mkrec(rec, dkey(d), d);
			T_IEQ(mfs_btree_insert(&cur, rec), 0);
			m_set(m, d, d);
		}
		mfs_btree_cur_release(&cur);
		T_IEQ(mfs_trans_commit(tp), 0);
		tt_verify(&tt, &ops_ag, m);
		T_UGE(tt.root.levels, 3);
		drain(&tt, &ops_ag, m, dir);
		tt_verify(&tt, &ops_ag, m);
		T_UEQ(tt.used, 1);
		T_UEQ(tt.root.levels, 1);
	}
	tt_destroy(&tt);
	tu_scratch_close(&t);
	m_free(m);
}
END_TEST

/*
 * Regression: an update must keep the order across leaves, not only inside its own.  Keys
 * 10, 20, ... in a 3-level tree; every record is moved onto and past each neighbour's key
 * (refused: -EINVAL, nothing changed) and into the gaps on both sides (accepted, then put
 * back).  The first record of a leaf used to accept a key below the previous leaf's last.
 */
START_TEST(test_update_keeps_global_order)
{
	struct tu_scratch t;
	struct ttree tt;
	struct mfs_trans *tp;
	struct mfs_btree_cur cur;
	uint8_t rec[16], key[8];
	const uint64_t n = UNDER_ASAN ? 3000 : 6000;
	uint64_t nrecs;
	int stat;

	tu_scratch_open(&t, "check_btree", 1024, 1u << 16);
	tt_create(&tt, &t, &ops_ag);
	T_IEQ(mfs_trans_alloc(t.fs, &tp), 0);
	cur_init(&cur, &tt, tp, &ops_ag);
	for (uint64_t i = 1; i <= n; i++) {
		mkrec(rec, 10 * i, i);
		T_IEQ(mfs_btree_insert(&cur, rec), 0);
	}
	T_UGE(cur.root.levels, 3);
	for (uint64_t i = 1; i <= n; i++) {
		static const int64_t bad[] = { -10, -11, 10, 11 }, good[] = { -5, 5 };
		uint64_t k = 10 * i;

		for (unsigned b = 0; b < 4; b++) {
			if ((i == 1 && bad[b] < 0) || (i == n && bad[b] > 0))
				continue;
			mkkey(key, k);
			T_IEQ(mfs_btree_lookup(&cur, key, MFS_LOOKUP_EQ, &stat), 0);
			T_IEQ(stat, 1);
			mkrec(rec, (uint64_t)((int64_t)k + bad[b]), i);
			if (mfs_btree_update(&cur, rec) != -EINVAL)
				ck_abort_msg("record %llu: update to key %lld accepted (order broken)",
					     (unsigned long long)k, (long long)((int64_t)k + bad[b]));
		}
		for (unsigned g = 0; g < 2; g++) {
			mkkey(key, k);
			T_IEQ(mfs_btree_lookup(&cur, key, MFS_LOOKUP_EQ, &stat), 0);
			T_IEQ(stat, 1);
			mkrec(rec, (uint64_t)((int64_t)k + good[g]), i);
			T_IEQ(mfs_btree_update(&cur, rec), 0);
			mkkey(key, (uint64_t)((int64_t)k + good[g]));
			T_IEQ(mfs_btree_lookup(&cur, key, MFS_LOOKUP_EQ, &stat), 0);
			T_IEQ(stat, 1);
			mkrec(rec, k, i);
			T_IEQ(mfs_btree_update(&cur, rec), 0);
		}
	}
	T_IEQ(mfs_btree_verify(&cur, &nrecs, NULL), 0);
	T_UEQ(nrecs, n);
	mfs_btree_cur_release(&cur);
	T_IEQ(mfs_trans_commit(tp), 0);
	tt_destroy(&tt);
	tu_scratch_close(&t);
}
END_TEST

/* Lookups on an empty tree, and a read-only cursor refusing changes. */
START_TEST(test_empty_and_readonly)
{
	struct tu_scratch t;
	struct ttree tt;
	struct mfs_btree_cur cur;
	uint8_t key[8], rec[16];
	int stat;

	tu_srand(btree_seed + 11);
	tu_scratch_open(&t, "check_btree", 4096, 1u << 16);
	tt_create(&tt, &t, &ops_ag);
	cur_init(&cur, &tt, NULL, &ops_ag);
	for (int how = 0; how < 3; how++) {
		mkkey(key, 5);
		T_IEQ(mfs_btree_lookup(&cur, key, (enum mfs_btree_lookup)how, &stat), 0);
		T_IEQ(stat, 0);
		T_IEQ(mfs_btree_get(&cur, rec, &stat), 0);
		T_IEQ(stat, 0);
		T_IEQ(mfs_btree_next(&cur, &stat), 0);
		T_IEQ(stat, 0);
	}
	mkrec(rec, 1, 1);
	T_IEQ(mfs_btree_insert(&cur, rec), -EROFS);
	T_IEQ(mfs_btree_delete(&cur), -EROFS);
	mfs_btree_cur_release(&cur);
	tt_verify(&tt, &ops_ag, NULL);
	tt_destroy(&tt);
	tu_scratch_close(&t);
}
END_TEST

/* ---- transaction cancel ----------------------------------------------------------------- */
struct blkcopy {
	uint64_t n;
	uint64_t fsb[4096];
	uint8_t *data;
	uint32_t bs;
};

static int copy_fn(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	struct blkcopy *bc = priv;
	struct mfs_buf *bp;
	struct mfs_blk_expect e = { cur->ops->magic, cur->owner, (int)level, cur->ops->name };

	T_ULT(bc->n, 4096);
	T_IEQ(mfs_buf_read(cur->fs->bc, fsb, &e, &bp), 0);
	bc->fsb[bc->n] = fsb;
	memcpy(bc->data + bc->n * bc->bs, bp->data, bc->bs);
	mfs_buf_put(bp);
	bc->n++;
	return 0;
}

static void snapshot(struct ttree *tt, const struct mfs_btree_ops *ops, struct blkcopy *bc)
{
	struct mfs_btree_cur cur;

	bc->n = 0;
	bc->bs = tt->t->geo.blocksize;
	cur_init(&cur, tt, NULL, ops);
	T_IEQ(mfs_btree_visit_blocks(&cur, copy_fn, bc), 0);
	mfs_btree_cur_release(&cur);
}

START_TEST(test_cancel)
{
	struct tu_scratch t;
	struct ttree tt;
	struct model *m = m_new();
	struct mfs_trans *tp;
	struct mfs_btree_cur cur;
	struct blkcopy *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
	uint8_t rec[16], key[8];
	uint8_t *bitmap_copy;
	struct ttree saved;
	int stat;

	tu_srand(btree_seed + 13);
	tu_scratch_open(&t, "check_btree", 1024, 1u << 18);
	tt_create(&tt, &t, &ops_ag);
	a->data = malloc(4096 * 1024);
	b->data = malloc(4096 * 1024);
	/* A committed tree of a couple of thousand records (2 levels at 1 KiB). */
	T_IEQ(mfs_trans_alloc(t.fs, &tp), 0);
	cur_init(&cur, &tt, tp, &ops_ag);
	for (unsigned i = 0; i < 2000; i++) {
		uint32_t d = (uint32_t)(tu_rand() % DOM);

		mkrec(rec, dkey(d), d);
		if (mfs_btree_insert(&cur, rec) == 0)
			m_set(m, d, d);
	}
	mfs_btree_cur_release(&cur);
	T_IEQ(mfs_trans_commit(tp), 0);
	tt_verify(&tt, &ops_ag, m);
	T_UGE(tt.root.levels, 2);
	snapshot(&tt, &ops_ag, a);

	for (int round = 0; round < 2; round++) {
		/* Inserts (splits, maybe a new root) and deletes (merges), then cancel. */
		saved = tt;
		bitmap_copy = malloc((tt.nbits + 7) / 8);
		memcpy(bitmap_copy, tt.bitmap, (tt.nbits + 7) / 8);
		T_IEQ(mfs_trans_alloc(t.fs, &tp), 0);
		cur_init(&cur, &tt, tp, &ops_ag);
		for (unsigned i = 0; i < (round ? 200000u : 3000u); i++) {
			uint32_t d = (uint32_t)(tu_rand() % DOM);

			mkrec(rec, dkey(d), 1);
			(void)mfs_btree_insert(&cur, rec);
			if (round && i % 3 == 0) {
				mkkey(key, tu_rand());
				T_IEQ(mfs_btree_lookup(&cur, key, MFS_LOOKUP_GE, &stat), 0);
				if (stat)
					T_IEQ(mfs_btree_delete(&cur), 0);
			}
			/* Round 1 goes on until the root has split. */
			if (round && tt.root.levels > saved.root.levels)
				break;
		}
		if (round)
			T_UGT(tt.root.levels, saved.root.levels);
		mfs_btree_cur_release(&cur);
		mfs_trans_cancel(tp);
		/* The allocator and the root pointer are the caller's to restore. */
		memcpy(tt.bitmap, bitmap_copy, (tt.nbits + 7) / 8);
		free(bitmap_copy);
		tt.root = saved.root;
		tt.used = saved.used;
		tt.hint = saved.hint;

		snapshot(&tt, &ops_ag, b);
		T_UEQ(a->n, b->n);
		ck_assert_mem_eq(a->fsb, b->fsb, a->n * sizeof(uint64_t));
		T_IEQ(memcmp(a->data, b->data, a->n * 1024), 0);
		tt_verify(&tt, &ops_ag, m);
	}
	/* And on the image too. */
	tu_scratch_remount(&t);
	snapshot(&tt, &ops_ag, b);
	T_UEQ(a->n, b->n);
	for (uint64_t i = 0; i < a->n; i++)
		T_IEQ(memcmp(a->data + i * 1024 + 8, b->data + i * 1024 + 8, 1024 - 8), 0);
	tt_verify(&tt, &ops_ag, m);
	free(a->data);
	free(b->data);
	free(a);
	free(b);
	tt_destroy(&tt);
	tu_scratch_close(&t);
	m_free(m);
}
END_TEST

/* An allocation failure in the middle of a split: the error comes back, cancel restores. */
static int t_alloc_fail(struct mfs_btree_cur *cur, uint64_t *fsb)
{
	(void)cur;
	(void)fsb;
	return -ENOSPC;
}

START_TEST(test_alloc_failure)
{
	struct tu_scratch t;
	struct ttree tt;
	struct model *m = m_new();
	struct mfs_btree_ops ops = ops_ag;
	struct mfs_trans *tp;
	struct mfs_btree_cur cur;
	uint8_t rec[16];
	unsigned i;
	int err = 0;

	tu_srand(btree_seed + 17);
	tu_scratch_open(&t, "check_btree", 1024, 1u << 16);
	tt_create(&tt, &t, &ops_ag);
	ops.alloc_block = t_alloc_fail;
	T_IEQ(mfs_trans_alloc(t.fs, &tp), 0);
	cur_init(&cur, &tt, tp, &ops);
	for (i = 0; i < 1000 && !err; i++) {
		mkrec(rec, dkey(i), i);
		err = mfs_btree_insert(&cur, rec);
	}
	T_IEQ(err, -ENOSPC);
	T_UEQ(i, mfs_btree_maxrecs(&ops, 1024, 1) + 1);
	mfs_btree_cur_release(&cur);
	mfs_trans_cancel(tp);
	tt_verify(&tt, &ops_ag, m);
	tt_destroy(&tt);
	tu_scratch_close(&t);
	m_free(m);
}
END_TEST

START_TEST(test_maxrecs)
{
	T_UEQ(mfs_btree_maxrecs(&ops_ag, 4096, 1), (4096 - 64) / 16);
	T_UEQ(mfs_btree_maxrecs(&ops_ag, 4096, 0), (4096 - 64) / 12);
	T_UEQ(mfs_btree_maxrecs(&ops_fsb, 1024, 0), (1024 - 64) / 16);
	T_UEQ(mfs_btree_minrecs(&ops_ag, 4096, 1), (4096 - 64) / 16 / 2);
	T_UEQ(mfs_btree_minrecs(&ops_ag, 1024, 0), (1024 - 64) / 12 / 2);
}
END_TEST

/* ---- corruption -------------------------------------------------------------------------- */
/*
 * A committed 3-level tree (1 KiB blocks) on the image; the test damages one block on disk
 * with pwrite, drops the cache, and expects the verifier (and lookups, walks) to report
 * corruption without crashing.
 */
struct corrupt_env {
	struct tu_scratch t;
	struct ttree tt;
	struct model *m;
	uint64_t leaf, node, root;     /* a leaf, a level-1 node, the root (level 2+) */
};

static int find_fn(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	struct corrupt_env *ce = priv;

	(void)cur;
	if (level == 0 && !ce->leaf)
		ce->leaf = fsb;
	if (level == 1 && !ce->node)
		ce->node = fsb;
	return 0;
}

static void corrupt_setup(struct corrupt_env *ce)
{
	struct mfs_trans *tp;
	struct mfs_btree_cur cur;
	uint8_t rec[16];

	memset(ce, 0, sizeof(*ce));
	tu_srand(btree_seed + 19);
	ce->m = m_new();
	tu_scratch_open(&ce->t, "check_btree", 1024, 1u << 16);
	tt_create(&ce->tt, &ce->t, &ops_ag);
	T_IEQ(mfs_trans_alloc(ce->t.fs, &tp), 0);
	cur_init(&cur, &ce->tt, tp, &ops_ag);
	for (uint32_t i = 0; i < 8000; i++) {
		mkrec(rec, dkey(i * 3), i);
		T_IEQ(mfs_btree_insert(&cur, rec), 0);
		m_set(ce->m, i * 3, i);
	}
	mfs_btree_cur_release(&cur);
	T_IEQ(mfs_trans_commit(tp), 0);
	T_UEQ(ce->tt.root.levels, 3);
	cur_init(&cur, &ce->tt, NULL, &ops_ag);
	T_IEQ(mfs_btree_visit_blocks(&cur, find_fn, ce), 0);
	mfs_btree_cur_release(&cur);
	ce->root = ce->tt.root.fsb;
	T_TRUE(ce->leaf && ce->node);
	tu_scratch_remount(&ce->t);
	tt_verify(&ce->tt, &ops_ag, ce->m);
	tu_scratch_remount(&ce->t);
}

static void raw_rw(struct corrupt_env *ce, uint64_t fsb, uint8_t *buf, int write)
{
	int fd = open(ce->t.path, O_RDWR);
	ssize_t r;

	T_IGE(fd, 0);
	if (write)
		r = pwrite(fd, buf, 1024, (off_t)(fsb * 1024));
	else
		r = pread(fd, buf, 1024, (off_t)(fsb * 1024));
	T_IEQ(r, 1024);
	close(fd);
}

static int noop_rec(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	(void)cur;
	(void)rec;
	(*(uint64_t *)priv)++;
	return 0;
}

/* Error messages of one verify: every one must say which AG the damage is in. */
struct msgs {
	unsigned n, bad;
	char first_bad[300];
	char first[300];
};

static void msg_sink(int level, const char *msg, void *priv)
{
	struct msgs *m = priv;

	if (level > MFS_LOG_ERR)
		return;
	if (!m->n++)
		snprintf(m->first, sizeof(m->first), "%s", msg);
	if (!strstr(msg, "AG 0 ") && !m->bad++)
		snprintf(m->first_bad, sizeof(m->first_bad), "%s", msg);
}

/* Verify the tree as it is on the image (the cache dropped), with its messages. */
static int verify_logged(struct corrupt_env *ce, struct msgs *msgs)
{
	struct mfs_btree_cur cur;
	int err, quiet = mfs_log_quiet();

	memset(msgs, 0, sizeof(*msgs));
	tu_scratch_remount(&ce->t);
	mfs_log_set_sink(msg_sink, msgs);
	mfs_log_set_level(MFS_LOG_ERR);
	cur_init(&cur, &ce->tt, NULL, &ops_ag);
	err = mfs_btree_verify(&cur, NULL, NULL);
	mfs_btree_cur_release(&cur);
	mfs_log_set_sink(NULL, NULL);
	mfs_log_set_level(quiet);
	return err;
}

/* After damage: verify fails with `want`, saying which AG; lookups, walks and changes
 * fail cleanly. */
static void corrupt_expect(struct corrupt_env *ce, int want)
{
	struct mfs_btree_cur cur;
	struct mfs_trans *tp;
	uint8_t key[8], rec[16];
	uint64_t cnt = 0;
	struct msgs msgs;
	int stat, err, quiet, any_err = 0;

	err = verify_logged(ce, &msgs);
	ck_assert_msg(err == want, "verify returned %d, expected %d", err, want);
	ck_assert_msg(msgs.n > 0, "verify failed without a message");
	ck_assert_msg(!msgs.bad, "%u of %u messages do not name the AG, e.g. \"%s\"", msgs.bad,
		      msgs.n, msgs.first_bad);

	/* Nothing else may crash or loop on the damaged tree. */
	quiet = mfs_log_quiet();
	cur_init(&cur, &ce->tt, NULL, &ops_ag);
	err = mfs_btree_query_range(&cur, NULL, NULL, noop_rec, &cnt);
	T_TRUE(err == 0 || mfs_is_corruption(err));
	any_err |= err != 0;
	for (uint32_t i = 0; i < 24000; i += 7) {
		mkkey(key, dkey(i));
		err = mfs_btree_lookup(&cur, key, (enum mfs_btree_lookup)(i % 3), &stat);
		T_TRUE(err == 0 || mfs_is_corruption(err));
		any_err |= err != 0;
		if (!err && stat) {
			err = (i & 8) ? mfs_btree_next(&cur, &stat) : mfs_btree_prev(&cur, &stat);
			T_TRUE(err == 0 || mfs_is_corruption(err));
		}
	}
	err = mfs_btree_visit_blocks(&cur, NULL, NULL);
	T_TRUE(err == 0 || mfs_is_corruption(err));
	err = mfs_btree_count_trusted(&cur, ce->t.geo.agblocks, &cnt);
	T_TRUE(err == 0 || mfs_is_corruption(err));
	mfs_btree_cur_release(&cur);
	T_IEQ(mfs_trans_alloc(ce->t.fs, &tp), 0);
	cur_init(&cur, &ce->tt, tp, &ops_ag);
	for (uint32_t i = 0; i < 2000; i++) {
		mkrec(rec, dkey(i * 3 + 1), i);
		err = mfs_btree_insert(&cur, rec);
		T_TRUE(err == 0 || mfs_is_corruption(err));
	}
	mfs_btree_cur_release(&cur);
	mfs_trans_cancel(tp);
	mfs_log_set_level(quiet);
	(void)any_err;

	m_free(ce->m);
	tt_destroy(&ce->tt);
	tu_scratch_close(&ce->t);
}

/* Damage one block: `fn` edits its bytes; reseal the CRC unless `keep_crc`. */
static void damage(struct corrupt_env *ce, uint64_t fsb, void (*fn)(struct corrupt_env *,
		   uint8_t *), int reseal)
{
	uint8_t buf[1024];

	raw_rw(ce, fsb, buf, 0);
	fn(ce, buf);
	if (reseal)
		mfs_blk_seal(buf, 1024);
	raw_rw(ce, fsb, buf, 1);
}

static void d_magic(struct corrupt_env *ce, uint8_t *b) { (void)ce; b[0] ^= 0x20; }
static void d_crc(struct corrupt_env *ce, uint8_t *b) { (void)ce; b[700] ^= 1; }
static void d_self(struct corrupt_env *ce, uint8_t *b)
{
	struct mfs_blkhdr *h = (void *)b;

	(void)ce;
	mfs_put64(h->blkno, mfs_get64(h->blkno) + 1);
}
static void d_owner(struct corrupt_env *ce, uint8_t *b)
{
	struct mfs_blkhdr *h = (void *)b;

	(void)ce;
	mfs_put64(h->owner, 7);
}
static void d_uuid(struct corrupt_env *ce, uint8_t *b)
{
	(void)ce;
	((struct mfs_blkhdr *)(void *)b)->uuid[5] ^= 0xff;
}
static void d_level(struct corrupt_env *ce, uint8_t *b)
{
	(void)ce;
	mfs_put16(((struct mfs_btree_block *)(void *)b)->level, 1);
}
static void d_order(struct corrupt_env *ce, uint8_t *b)
{
	uint8_t tmp[16];

	(void)ce;
	/* swap records 3 and 4 */
	memcpy(tmp, b + 64 + 3 * 16, 16);
	memcpy(b + 64 + 3 * 16, b + 64 + 4 * 16, 16);
	memcpy(b + 64 + 4 * 16, tmp, 16);
}
static void d_numrecs(struct corrupt_env *ce, uint8_t *b)
{
	(void)ce;
	mfs_put16(((struct mfs_btree_block *)(void *)b)->numrecs,
		  (uint16_t)(mfs_btree_maxrecs(&ops_ag, 1024, 1) + 1));
}
static void d_numrecs_huge(struct corrupt_env *ce, uint8_t *b)
{
	(void)ce;
	mfs_put16(((struct mfs_btree_block *)(void *)b)->numrecs, 0xffff);
}
/* node pointers: keys at 64, cap = 80 keys of 8 bytes, pointers after them */
#define NODE_PTR_OFF (64 + 80 * 8)
static void d_ptr_range(struct corrupt_env *ce, uint8_t *b)
{
	uint32_t v;

	mfs_put32(v, ce->t.geo.agblocks + 5);
	memcpy(b + NODE_PTR_OFF + 4, &v, 4);
}
static void d_ptr_fixed(struct corrupt_env *ce, uint8_t *b)
{
	uint32_t v;

	(void)ce;
	mfs_put32(v, MFS_AGH_AGBNO);
	memcpy(b + NODE_PTR_OFF, &v, 4);
}
static void d_ptr_parent(struct corrupt_env *ce, uint8_t *b)
{
	uint32_t v;

	/* the level-1 node's second child becomes the root, its own ancestor */
	mfs_put32(v, (uint32_t)ce->root);
	memcpy(b + NODE_PTR_OFF + 4, &v, 4);
}
static void d_ptr_self(struct corrupt_env *ce, uint8_t *b)
{
	uint32_t v;

	/* the root's first child is the root itself */
	mfs_put32(v, (uint32_t)ce->root);
	memcpy(b + NODE_PTR_OFF, &v, 4);
}
static void d_ptr_dup(struct corrupt_env *ce, uint8_t *b)
{
	(void)ce;
	/* two entries share a child */
	memcpy(b + NODE_PTR_OFF + 4, b + NODE_PTR_OFF, 4);
}
static void d_nodekey(struct corrupt_env *ce, uint8_t *b)
{
	uint64_t k;

	(void)ce;
	memcpy(&k, b + 64 + 8, 8);
	mfs_put64(k, mfs_get64(k) + 1);
	memcpy(b + 64 + 8, &k, 8);
}
static void d_poison(struct corrupt_env *ce, uint8_t *b)
{
	uint64_t v;

	(void)ce;
	mfs_put64(v, 0xbadbadbadbadbadbull);
	memcpy(b + 64 + 2 * 16 + 8, &v, 8);
}
static void d_underfull(struct corrupt_env *ce, uint8_t *b)
{
	(void)ce;
	mfs_put16(((struct mfs_btree_block *)(void *)b)->numrecs, 2);
}

#define CORRUPT_TEST(name, which, fn, reseal, want)          \
START_TEST(name)                                             \
{                                                            \
	struct corrupt_env ce;                               \
	corrupt_setup(&ce);                                  \
	damage(&ce, ce.which, fn, reseal);                   \
	corrupt_expect(&ce, want);                           \
}                                                            \
END_TEST

CORRUPT_TEST(test_bad_magic, leaf, d_magic, 1, -EFSCORRUPTED)
CORRUPT_TEST(test_bad_crc, node, d_crc, 0, -EFSBADCRC)
CORRUPT_TEST(test_bad_crc_leaf, leaf, d_crc, 0, -EFSBADCRC)
CORRUPT_TEST(test_bad_self, node, d_self, 1, -EFSCORRUPTED)
CORRUPT_TEST(test_bad_owner, leaf, d_owner, 1, -EFSCORRUPTED)
CORRUPT_TEST(test_bad_uuid, root, d_uuid, 1, -EFSCORRUPTED)
CORRUPT_TEST(test_bad_level, leaf, d_level, 1, -EFSCORRUPTED)
CORRUPT_TEST(test_keys_out_of_order, leaf, d_order, 1, -EFSCORRUPTED)
CORRUPT_TEST(test_numrecs_over_max, leaf, d_numrecs, 1, -EFSCORRUPTED)
CORRUPT_TEST(test_numrecs_huge_node, node, d_numrecs_huge, 1, -EFSCORRUPTED)
CORRUPT_TEST(test_ptr_out_of_range, node, d_ptr_range, 1, -EFSCORRUPTED)
CORRUPT_TEST(test_ptr_fixed_block, root, d_ptr_fixed, 1, -EFSCORRUPTED)
CORRUPT_TEST(test_ptr_loop_to_parent, node, d_ptr_parent, 1, -EFSCORRUPTED)
CORRUPT_TEST(test_ptr_loop_to_self, root, d_ptr_self, 1, -EFSCORRUPTED)
CORRUPT_TEST(test_ptr_shared_child, node, d_ptr_dup, 1, -EFSCORRUPTED)
CORRUPT_TEST(test_node_key_mismatch, node, d_nodekey, 1, -EFSCORRUPTED)
CORRUPT_TEST(test_check_rec, leaf, d_poison, 1, -EFSCORRUPTED)
CORRUPT_TEST(test_underfull, leaf, d_underfull, 1, -EFSCORRUPTED)

static void d_ptr_all_first(struct corrupt_env *ce, uint8_t *b)
{
	unsigned n = mfs_get16(((struct mfs_btree_block *)(void *)b)->numrecs);

	(void)ce;
	for (unsigned i = 1; i < n; i++)
		memcpy(b + NODE_PTR_OFF + 4 * i, b + NODE_PTR_OFF, 4);
}

/* A shared child, which only the check finds, makes the trusted count too high: the bound
 * stops it (a root whose n entries all name its first child, a node of m entries, is
 * counted 1 + n * (1 + m): leaves are not read). */
START_TEST(test_count_trusted_shared)
{
	struct corrupt_env ce;
	struct mfs_btree_cur cur;
	uint64_t exact, n;
	uint8_t buf[1024];
	unsigned nroot, nnode;
	int quiet;

	corrupt_setup(&ce);
	cur_init(&cur, &ce.tt, NULL, &ops_ag);
	T_IEQ(mfs_btree_count_trusted(&cur, ce.t.geo.agblocks, &exact), 0);
	T_UEQ(exact, ce.tt.used);
	mfs_btree_cur_release(&cur);
	raw_rw(&ce, ce.root, buf, 0);
	nroot = mfs_get16(((struct mfs_btree_block *)(void *)buf)->numrecs);
	raw_rw(&ce, ce.node, buf, 0);      /* the root's first child (a pre-order walk's) */
	nnode = mfs_get16(((struct mfs_btree_block *)(void *)buf)->numrecs);
	damage(&ce, ce.root, d_ptr_all_first, 1);
	tu_scratch_remount(&ce.t);
	quiet = mfs_log_quiet();
	cur_init(&cur, &ce.tt, NULL, &ops_ag);
	T_IEQ(mfs_btree_verify(&cur, NULL, NULL), -EFSCORRUPTED);
	T_IEQ(mfs_btree_count_trusted(&cur, ce.t.geo.agblocks, &n), 0);
	T_UEQ(n, 1 + nroot * (1 + (uint64_t)nnode));
	T_IEQ(mfs_btree_count_trusted(&cur, n - 1, &n), -EFSCORRUPTED);
	T_UEQ(n, 0);
	mfs_btree_cur_release(&cur);
	mfs_log_set_level(quiet);
	m_free(ce.m);
	tt_destroy(&ce.tt);
	tu_scratch_close(&ce.t);
}
END_TEST

/* mfs_btree_has_block: every block of the tree is found (by the descent by its own first
 * key); a copy of a leaf in a free block — the tree's kind and owner, sealed, its own
 * address, but no pointer leads there: a leaked block — a copy of a node, and a block that
 * is no btree block are not. */
START_TEST(test_has_block)
{
	struct corrupt_env ce;
	struct mfs_btree_cur cur;
	struct blist all = { 0 };
	uint8_t buf[1024];
	uint64_t spare;
	int found, quiet;

	corrupt_setup(&ce);
	cur_init(&cur, &ce.tt, NULL, &ops_ag);
	T_IEQ(mfs_btree_visit_blocks(&cur, blist_fn, &all), 0);
	T_TRUE(all.n > 3);
	for (size_t i = 0; i < all.n; i++) {
		T_IEQ(mfs_btree_has_block(&cur, all.fsb[i], &found), 0);
		T_TRUE(found);
	}
	mfs_btree_cur_release(&cur);
	/* the first free block past the tree's */
	for (spare = ce.tt.hint; spare < ce.tt.nbits &&
	     (ce.tt.bitmap[spare / 8] & (1u << (spare % 8))); spare++)
		;
	T_TRUE(spare < ce.tt.nbits);
	quiet = mfs_log_quiet();
	for (int k = 0; k < 3; k++) {
		uint64_t from = k == 0 ? ce.leaf : ce.node;
		struct mfs_blkhdr *h = (void *)buf;

		raw_rw(&ce, from, buf, 0);
		if (k == 2)
			memset(buf, 0x5a, sizeof(buf));     /* file data */
		mfs_put64(h->blkno, spare);
		mfs_blk_seal(buf, 1024);
		raw_rw(&ce, spare, buf, 1);
		tu_scratch_remount(&ce.t);
		cur_init(&cur, &ce.tt, NULL, &ops_ag);
		T_IEQ(mfs_btree_has_block(&cur, spare, &found), 0);
		ck_assert_msg(!found, "copy %d of block %llu at %llu found", k,
			      (unsigned long long)from, (unsigned long long)spare);
		T_IEQ(mfs_btree_has_block(&cur, from, &found), 0);
		T_TRUE(found);
		mfs_btree_cur_release(&cur);
	}
	mfs_log_set_level(quiet);
	blist_free(&all);
	m_free(ce.m);
	tt_destroy(&ce.tt);
	tu_scratch_close(&ce.t);
}
END_TEST

/* ---- blocks reached twice: shared children and cycles, with every key made consistent ---- */
/*
 * The damage of the tests below passes every check of a block on its own and against the
 * key its parent holds for it: node keys stay strictly increasing and equal to the first
 * key of the child they name.  Only the walk noticing that a block is reached a second
 * time (a set of the blocks seen, or the order of the records across the whole walk)
 * finds it; a verifier that lost that check would pass these trees.
 */
static unsigned nd_n(const uint8_t *b)
{
	return mfs_get16(((const struct mfs_btree_block *)(const void *)b)->numrecs);
}

static uint64_t nd_key(const uint8_t *b, unsigned i)
{
	uint64_t k;

	memcpy(&k, b + 64 + 8 * i, 8);
	return mfs_get64(k);
}

static void nd_set_key(uint8_t *b, unsigned i, uint64_t key)
{
	uint64_t k;

	mfs_put64(k, key);
	memcpy(b + 64 + 8 * i, &k, 8);
}

static uint32_t nd_ptr(const uint8_t *b, unsigned i)
{
	uint32_t v;

	memcpy(&v, b + NODE_PTR_OFF + 4 * i, 4);
	return mfs_get32(v);
}

static void nd_set_ptr(uint8_t *b, unsigned i, uint32_t p)
{
	uint32_t v;

	mfs_put32(v, p);
	memcpy(b + NODE_PTR_OFF + 4 * i, &v, 4);
}

/* Point entry i of node `fsb` at block `to` with key `key`, resealed on disk. */
static void relink(struct corrupt_env *ce, uint64_t fsb, unsigned i, uint32_t to, uint64_t key)
{
	uint8_t buf[1024];

	raw_rw(ce, fsb, buf, 0);
	T_ULT(i, nd_n(buf));
	nd_set_ptr(buf, i, to);
	nd_set_key(buf, i, key);
	mfs_blk_seal(buf, 1024);
	raw_rw(ce, fsb, buf, 1);
}

/* Entry i of node `fsb` as it is on disk. */
static void entry(struct corrupt_env *ce, uint64_t fsb, int i, uint32_t *ptr, uint64_t *key,
		  unsigned *n)
{
	uint8_t buf[1024];

	raw_rw(ce, fsb, buf, 0);
	*n = nd_n(buf);
	if (i < 0)
		i += (int)*n;
	*ptr = nd_ptr(buf, (unsigned)i);
	*key = nd_key(buf, (unsigned)i);
}

struct bl4 {
	struct ttree *tt;
	uint32_t next;
};

static int bl4_get(void *priv, void *recs, unsigned n)
{
	struct bl4 *s = priv;

	for (unsigned i = 0; i < n; i++, s->next++)
		mkrec((uint8_t *)recs + 16 * i, dkey(s->next * 3), s->next);
	return 0;
}

static int bl4_claim(void *priv, uint64_t *fsb)
{
	struct bl4 *s = priv;
	struct mfs_btree_cur cur;

	cur.priv = s->tt;
	return t_alloc(&cur, fsb);
}

/* corrupt_setup's environment with a 4-level tree (bulk loaded half full, 1 KiB blocks):
 * at least two nodes at level 2 under the root, so that a level-1 node can have two
 * parents. */
static void corrupt_setup4(struct corrupt_env *ce)
{
	uint32_t nrec = 120000;
	struct bl4 src = { &ce->tt, 0 };
	struct mfs_bload bl = {
		.ops = &ops_ag, .owner = 0, .agno = 0, .nrecs = nrec, .fill_pct = 50,
		.get_recs = bl4_get, .claim_block = bl4_claim, .priv = &src,
	};
	struct mfs_btree_cur cur;

	memset(ce, 0, sizeof(*ce));
	tu_srand(btree_seed + 23);
	ce->m = m_new();
	tu_scratch_open(&ce->t, "check_btree", 1024, 1u << 16);
	memset(&ce->tt, 0, sizeof(ce->tt));
	ce->tt.t = &ce->t;
	ce->tt.nbits = ce->t.geo.agblocks;
	ce->tt.bitmap = calloc((ce->tt.nbits + 7) / 8, 1);
	ck_assert_ptr_nonnull(ce->tt.bitmap);
	ce->tt.hint = 16;
	T_IEQ(mfs_bload_build(ce->t.fs, NULL, &bl, &ce->tt.root), 0);
	T_UEQ(src.next, nrec);
	T_UEQ(ce->tt.root.levels, 4);
	for (uint32_t i = 0; i < nrec; i++)
		m_set(ce->m, i * 3, i);
	cur_init(&cur, &ce->tt, NULL, &ops_ag);
	T_IEQ(mfs_btree_visit_blocks(&cur, find_fn, ce), 0);
	mfs_btree_cur_release(&cur);
	ce->root = ce->tt.root.fsb;
	tu_scratch_remount(&ce->t);
	tt_verify(&ce->tt, &ops_ag, ce->m);
	tu_scratch_remount(&ce->t);
}

/* The verifier's first message names block `a` (or `b`, if not 0). */
static void expect_named(struct corrupt_env *ce, uint64_t a, uint64_t b)
{
	struct msgs m;
	const char *msg = m.first;
	char wa[48], wb[48];

	T_IEQ(verify_logged(ce, &m), -EFSCORRUPTED);
	snprintf(wa, sizeof(wa), "block %llu:", (unsigned long long)a);
	snprintf(wb, sizeof(wb), "block %llu:", (unsigned long long)b);
	ck_assert_msg(strstr(msg, wa) || (b && strstr(msg, wb)),
		      "the verifier's message does not name block %llu%s%s: \"%s\"",
		      (unsigned long long)a, b ? " or " : "", b ? wb : "", msg);
}

/* Visits of one block at level 0 by mfs_btree_verify_visit's fn. */
struct leaf_visits {
	uint64_t fsb, n;
};

static int count_leaf_fn(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	struct leaf_visits *v = priv;

	(void)cur;
	if (level == 0 && fsb == v->fsb)
		v->n++;
	return 0;
}

/* verify_visit's fn is never called on a leaf a second time (its checks fail first). */
static void expect_leaf_once(struct corrupt_env *ce, uint64_t leaf)
{
	struct mfs_btree_cur cur;
	struct leaf_visits v = { leaf, 0 };
	int quiet = mfs_log_quiet();

	cur_init(&cur, &ce->tt, NULL, &ops_ag);
	T_IEQ(mfs_btree_verify_visit(&cur, count_leaf_fn, &v, NULL, NULL), -EFSCORRUPTED);
	mfs_btree_cur_release(&cur);
	mfs_log_set_level(quiet);
	T_UEQ(v.n, 1);
}

/* The last child of the root's first child becomes the first child of its second too (its
 * key and the root's key for it made the child's).  Returns that child. */
static uint32_t share_later(struct corrupt_env *ce)
{
	uint32_t p1, p2, x;
	uint64_t k, kx;
	unsigned n, n1;

	entry(ce, ce->root, 0, &p1, &k, &n);
	entry(ce, ce->root, 1, &p2, &k, &n);
	entry(ce, p1, -1, &x, &kx, &n1);
	T_UGE(n1, 2);
	relink(ce, p2, 0, x, kx);
	relink(ce, ce->root, 1, p2, kx);
	return x;
}

/* After the damage: verify names block a (or b), verify_visit's fn sees `leaf` once, and
 * every other operation fails cleanly. */
static void expect_shared(struct corrupt_env *ce, uint64_t a, uint64_t b, uint64_t leaf)
{
	expect_named(ce, a, b);
	expect_leaf_once(ce, leaf);
	corrupt_expect(ce, -EFSCORRUPTED);
}

/* A leaf with two parents: the last leaf of the root's first child is also the first child
 * of the root's second child. */
START_TEST(test_shared_leaf_later_parent)
{
	struct corrupt_env ce;
	uint32_t lz;

	corrupt_setup(&ce);
	lz = share_later(&ce);
	{
		/* the trusted visit, which does not look, names it twice (its callers find
		 * that: repair_agbtree's gather_s sorts the blocks it names) */
		struct mfs_btree_cur cur;
		struct blist l = { 0 };
		unsigned twice = 0;

		tu_scratch_remount(&ce.t);
		cur_init(&cur, &ce.tt, NULL, &ops_ag);
		T_IEQ(mfs_btree_visit_trusted(&cur, ce.tt.used, blist_fn, &l, NULL), 0);
		mfs_btree_cur_release(&cur);
		for (size_t i = 0; i < l.n; i++)
			twice += l.fsb[i] == lz;
		T_UEQ(twice, 2);
		blist_free(&l);
	}
	expect_shared(&ce, lz, 0, lz);
}
END_TEST

/* The other way round: the first leaf of the root's second child is also the last child
 * of its first (the leaf it replaces is lost). */
START_TEST(test_shared_leaf_earlier_parent)
{
	struct corrupt_env ce;
	uint32_t p1, p2, l2, lz;
	uint64_t k, kz;
	unsigned n, n1;

	corrupt_setup(&ce);
	entry(&ce, ce.root, 0, &p1, &k, &n);
	entry(&ce, ce.root, 1, &p2, &k, &n);
	entry(&ce, p2, 0, &l2, &k, &n);
	entry(&ce, p1, -1, &lz, &kz, &n1);
	relink(&ce, p1, n1 - 1, l2, k);
	expect_shared(&ce, l2, 0, l2);
}
END_TEST

/* A level-1 node with two parents (4 levels), as in test_shared_leaf_later_parent one
 * level up.  Named: the node, or its first leaf (reached again under it). */
START_TEST(test_shared_node)
{
	struct corrupt_env ce;
	uint32_t x, xl;
	uint64_t k;
	unsigned n;

	corrupt_setup4(&ce);
	x = share_later(&ce);
	entry(&ce, x, 0, &xl, &k, &n);
	expect_shared(&ce, x, xl, xl);
}
END_TEST

/* A cycle whose keys agree: the first level-1 node's first child becomes its own parent (the
 * root in 3 levels, a level-2 node in 4).  Every key involved is the tree's first key. */
static void cycle_first(struct corrupt_env *ce)
{
	uint32_t parent = (uint32_t)ce->root, node;
	uint64_t k;
	unsigned n;

	entry(ce, parent, 0, &node, &k, &n);
	for (unsigned lev = ce->tt.root.levels - 2; lev > 1; lev--) {
		parent = node;
		entry(ce, parent, 0, &node, &k, &n);
	}
	relink(ce, node, 0, parent, k);
}

START_TEST(test_cycle_to_root)
{
	struct corrupt_env ce;

	corrupt_setup(&ce);
	cycle_first(&ce);
	corrupt_expect(&ce, -EFSCORRUPTED);
}
END_TEST

START_TEST(test_cycle_to_parent)
{
	struct corrupt_env ce;

	corrupt_setup4(&ce);
	cycle_first(&ce);
	corrupt_expect(&ce, -EFSCORRUPTED);
}
END_TEST

/* A bad root pointer in the caller's root (e.g. a damaged AG header). */
START_TEST(test_bad_root)
{
	struct corrupt_env ce;
	struct mfs_btree_cur cur;
	uint8_t key[8];
	int stat, quiet;

	corrupt_setup(&ce);
	quiet = mfs_log_quiet();
	ce.tt.root.fsb = ce.t.geo.dblocks + 3;
	cur_init(&cur, &ce.tt, NULL, &ops_ag);
	T_IEQ(mfs_btree_verify(&cur, NULL, NULL), -EFSCORRUPTED);
	mkkey(key, 3);
	T_IEQ(mfs_btree_lookup(&cur, key, MFS_LOOKUP_EQ, &stat), -EFSCORRUPTED);
	ce.tt.root.fsb = ce.root;
	ce.tt.root.levels = 2;          /* the root is really at level 2 */
	mfs_btree_cur_release(&cur);
	cur_init(&cur, &ce.tt, NULL, &ops_ag);
	T_IEQ(mfs_btree_verify(&cur, NULL, NULL), -EFSCORRUPTED);
	ce.tt.root.levels = 12;
	mfs_btree_cur_release(&cur);
	cur_init(&cur, &ce.tt, NULL, &ops_ag);
	T_IEQ(mfs_btree_verify(&cur, NULL, NULL), -EFSCORRUPTED);
	mfs_btree_cur_release(&cur);
	mfs_log_set_level(quiet);
	ce.tt.root.levels = 3;
	tt_verify(&ce.tt, &ops_ag, ce.m);
	m_free(ce.m);
	tt_destroy(&ce.tt);
	tu_scratch_close(&ce.t);
}
END_TEST

static Suite *btree_suite(void)
{
	Suite *s = suite_create("btree");
	TCase *tc = tcase_create("model");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_maxrecs);
	tcase_add_test(tc, test_empty_and_readonly);
	tcase_add_test(tc, test_model_1k_agptr);
	tcase_add_test(tc, test_model_4k_fsbptr);
	tcase_add_test(tc, test_sequential);
	tcase_add_test(tc, test_update_keeps_global_order);
	tcase_add_test(tc, test_cancel);
	tcase_add_test(tc, test_alloc_failure);
	suite_add_tcase(s, tc);

	tc = tcase_create("corruption");
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_bad_magic);
	tcase_add_test(tc, test_bad_crc);
	tcase_add_test(tc, test_bad_crc_leaf);
	tcase_add_test(tc, test_bad_self);
	tcase_add_test(tc, test_bad_owner);
	tcase_add_test(tc, test_bad_uuid);
	tcase_add_test(tc, test_bad_level);
	tcase_add_test(tc, test_keys_out_of_order);
	tcase_add_test(tc, test_numrecs_over_max);
	tcase_add_test(tc, test_numrecs_huge_node);
	tcase_add_test(tc, test_ptr_out_of_range);
	tcase_add_test(tc, test_ptr_fixed_block);
	tcase_add_test(tc, test_ptr_loop_to_parent);
	tcase_add_test(tc, test_ptr_loop_to_self);
	tcase_add_test(tc, test_ptr_shared_child);
	tcase_add_test(tc, test_node_key_mismatch);
	tcase_add_test(tc, test_check_rec);
	tcase_add_test(tc, test_underfull);
	tcase_add_test(tc, test_bad_root);
	tcase_add_test(tc, test_count_trusted_shared);
	tcase_add_test(tc, test_has_block);
	tcase_add_test(tc, test_shared_leaf_later_parent);
	tcase_add_test(tc, test_shared_leaf_earlier_parent);
	tcase_add_test(tc, test_shared_node);
	tcase_add_test(tc, test_cycle_to_root);
	tcase_add_test(tc, test_cycle_to_parent);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	btree_seed = tu_seed("BTREE_SEED", "check_btree");
	return tu_run_suite(btree_suite());
}
