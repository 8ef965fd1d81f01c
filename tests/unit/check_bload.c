/*
 * check_bload.c — the btree bulk loader: trees of 0, 1, a full leaf, a full leaf plus one,
 * three and four levels, and 10M records, at fill 75/100/50 and the default, built through
 * the cache and inside a transaction; each must pass mfs_btree_verify, hold exactly the
 * input, and take exactly the blocks mfs_bload_geometry() predicted.  Also: unsorted input,
 * failing callbacks and bad parameters are refused, and a loaded tree takes changes.
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

/* ---- the record stream: u64 key, u64 value; key 0 and UINT64_MAX at the ends ----------- */
static uint64_t gen_key(uint64_t i, uint64_t n)
{
	if (i == 0)
		return 0;
	if (n > 2 && i == n - 1)
		return UINT64_MAX;
	return i * 3 + 1;
}

static uint64_t gen_val(uint64_t i)
{
	return i * 0x9e3779b97f4a7c15ull;
}

struct stream {
	uint64_t n, next;
	uint64_t claimed, reserved, first;   /* blocks handed out from [first, first+reserved) */
	int fail_recs_at, fail_claim_at, unsorted_at;
	uint64_t calls;
};

static int s_get_recs(void *priv, void *recs, unsigned cnt)
{
	struct stream *s = priv;
	uint8_t *r = recs;

	s->calls++;
	if (s->fail_recs_at && s->calls == (uint64_t)s->fail_recs_at)
		return -EIO;
	T_ULE(s->next + cnt, s->n);
	for (unsigned i = 0; i < cnt; i++, s->next++, r += 16) {
		uint64_t k = gen_key(s->next, s->n), v = gen_val(s->next), x;

		if (s->unsorted_at && s->next == (uint64_t)s->unsorted_at)
			k = 2;
		mfs_put64(x, k);
		memcpy(r, &x, 8);
		mfs_put64(x, v);
		memcpy(r + 8, &x, 8);
	}
	return 0;
}

static int s_claim(void *priv, uint64_t *fsb)
{
	struct stream *s = priv;

	if (s->fail_claim_at && s->claimed + 1 == (uint64_t)s->fail_claim_at)
		return -ENOSPC;
	if (s->claimed >= s->reserved)
		return -ENOSPC;
	*fsb = s->first + s->claimed++;
	return 0;
}

/* Blocks for changes after the load come from above the reserved range. */
static uint64_t next_free;
static uint64_t nfreed;

static int t_alloc(struct mfs_btree_cur *cur, uint64_t *fsb)
{
	(void)cur;
	*fsb = next_free++;
	return 0;
}

static int t_free(struct mfs_btree_cur *cur, uint64_t fsb)
{
	(void)cur;
	(void)fsb;
	nfreed++;
	return 0;
}

static struct mfs_btree_root *set_root_target;

static int t_set_root(struct mfs_btree_cur *cur)
{
	*set_root_target = cur->root;
	return 0;
}

static const struct mfs_btree_ops ops_ag = {
	.name = "bload test btree (agbno pointers)", .magic = MFS_MAGIC('T', 'B', 'L', 'D'),
	.rec_len = 16, .key_len = 8, .ptr_len = 4,
	.cmp_keys = tu_key64_cmp, .rec_key = tu_key64_of_rec,
	.alloc_block = t_alloc, .free_block = t_free, .set_root = t_set_root,
};

static const struct mfs_btree_ops ops_fsb = {
	.name = "bload test btree (fsblock pointers)", .magic = MFS_MAGIC('T', 'B', 'L', 'E'),
	.rec_len = 16, .key_len = 8, .ptr_len = 8,
	.cmp_keys = tu_key64_cmp, .rec_key = tu_key64_of_rec,
	.alloc_block = t_alloc, .free_block = t_free, .set_root = t_set_root,
};

static uint64_t owner_of(const struct mfs_btree_ops *ops)
{
	return ops->ptr_len == 4 ? 0 : 4242;
}

struct cmpwalk {
	uint64_t i, n;
};

static int cmp_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	struct cmpwalk *w = priv;
	uint64_t k, v;

	(void)cur;
	memcpy(&k, rec, 8);
	memcpy(&v, (const uint8_t *)rec + 8, 8);
	if (w->i >= w->n || mfs_get64(k) != gen_key(w->i, w->n) || mfs_get64(v) != gen_val(w->i))
		ck_abort_msg("record %" PRIu64 ": key %" PRIx64 " value %" PRIx64 " not the input's",
			     w->i, mfs_get64(k), mfs_get64(v));
	w->i++;
	return 0;
}

/* Check a loaded tree: verify, counts, contents in order, a few lookups. */
static void check_tree(struct tu_scratch *t, const struct mfs_btree_ops *ops,
		       const struct mfs_btree_root *root, uint64_t n, uint64_t nblocks)
{
	struct mfs_btree_cur cur;
	struct cmpwalk w = { 0, n };
	uint64_t vrecs, vblocks;
	uint8_t key[8], rec[16];
	int stat;

	mfs_btree_cur_init(&cur, t->fs, NULL, ops, owner_of(ops), 0, root, NULL);
	T_IEQ(mfs_btree_verify(&cur, &vrecs, &vblocks), 0);
	T_UEQ(vrecs, n);
	T_UEQ(vblocks, nblocks);
	T_IEQ(mfs_btree_query_range(&cur, NULL, NULL, cmp_fn, &w), 0);
	T_UEQ(w.i, n);
	for (uint64_t j = 0; j < 200 && n; j++) {
		uint64_t i = (j * 7919) % n, x;

		mfs_put64(x, gen_key(i, n));
		memcpy(key, &x, 8);
		T_IEQ(mfs_btree_lookup(&cur, key, MFS_LOOKUP_EQ, &stat), 0);
		T_IEQ(stat, 1);
		T_IEQ(mfs_btree_get(&cur, rec, &stat), 0);
		memcpy(&x, rec + 8, 8);
		T_UEQ(mfs_get64(x), gen_val(i));
	}
	mfs_btree_cur_release(&cur);
}

/* Load n records at fill_pct; returns the levels.  tp: build inside a transaction. */
static unsigned load_and_check(struct tu_scratch *t, const struct mfs_btree_ops *ops, uint64_t n,
			       unsigned fill, int use_tp, struct mfs_btree_root *rootp)
{
	struct stream s;
	struct mfs_bload bl;
	struct mfs_btree_root root;
	struct mfs_trans *tp = NULL;
	uint64_t nblocks;
	unsigned levels;

	T_IEQ(mfs_bload_geometry(ops, t->geo.blocksize, n, fill, &nblocks, &levels), 0);
	memset(&s, 0, sizeof(s));
	s.n = n;
	s.first = 16;
	s.reserved = nblocks + 10;      /* more than needed: the build must take exactly nblocks */
	memset(&bl, 0, sizeof(bl));
	bl.ops = ops;
	bl.owner = owner_of(ops);
	bl.agno = 0;
	bl.nrecs = n;
	bl.fill_pct = fill;
	bl.get_recs = s_get_recs;
	bl.claim_block = s_claim;
	bl.priv = &s;
	if (use_tp)
		T_IEQ(mfs_trans_alloc(t->fs, &tp), 0);
	T_IEQ(mfs_bload_build(t->fs, tp, &bl, &root), 0);
	if (tp)
		T_IEQ(mfs_trans_commit(tp), 0);
	T_UEQ(s.claimed, nblocks);
	T_UEQ(s.next, n);
	T_UEQ(root.levels, levels);
	check_tree(t, ops, &root, n, nblocks);
	if (rootp)
		*rootp = root;
	return levels;
}

START_TEST(test_small_sizes)
{
	static const unsigned fills[] = { 75, 100, 50, 0, 1, 99 };
	static const uint32_t bss[] = { 1024, 4096 };
	const struct mfs_btree_ops *opss[] = { &ops_ag, &ops_fsb };

	for (unsigned b = 0; b < 2; b++) {
		struct tu_scratch t;

		tu_scratch_open(&t, "check_bload", bss[b], 1u << 20);
		for (unsigned o = 0; o < 2; o++) {
			const struct mfs_btree_ops *ops = opss[o];
			uint64_t leafmax = mfs_btree_maxrecs(ops, bss[b], 1);
			uint64_t nodemax = mfs_btree_maxrecs(ops, bss[b], 0);
			const uint64_t sizes[] = { 0, 1, 2, leafmax - 1, leafmax, leafmax + 1,
						   2 * leafmax, 2 * leafmax + 1, leafmax * nodemax,
						   leafmax * nodemax + 1 };

			for (unsigned f = 0; f < sizeof(fills) / sizeof(fills[0]); f++) {
				for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
					unsigned lv = load_and_check(&t, ops, sizes[i], fills[f],
								     (int)((i + f) % 2), NULL);

					if (sizes[i] <= leafmax)
						T_UEQ(lv, 1);
					else
						T_UGE(lv, 2);
				}
			}
		}
		tu_scratch_close(&t);
	}
}
END_TEST

START_TEST(test_empty_is_one_leaf)
{
	struct tu_scratch t;
	struct mfs_btree_root root;
	uint64_t nb;
	unsigned lv;

	tu_scratch_open(&t, "check_bload", 4096, 1u << 16);
	T_IEQ(mfs_bload_geometry(&ops_ag, 4096, 0, 75, &nb, &lv), 0);
	T_UEQ(nb, 1);
	T_UEQ(lv, 1);
	load_and_check(&t, &ops_ag, 0, 75, 0, &root);
	T_UEQ(root.levels, 1);
	tu_scratch_close(&t);
}
END_TEST

/* Deep trees at 1 KiB: 3 and 4 levels, every fill. */
START_TEST(test_deep)
{
	struct tu_scratch t;
	static const unsigned fills[] = { 75, 100, 50 };

	tu_scratch_open(&t, "check_bload", 1024, 1u << 22);
	for (unsigned f = 0; f < 3; f++) {
		T_UGE(load_and_check(&t, &ops_ag, 20000, fills[f], 0, NULL), 3);
		T_UGE(load_and_check(&t, &ops_fsb, 400000,
						 fills[f], f == 1, NULL), 4);
	}
	tu_scratch_close(&t);
}
END_TEST

/* Exact geometry: fill 100 packs leaves full; fill 50 gives at least minrecs each. */
START_TEST(test_geometry_numbers)
{
	uint64_t leafmax = mfs_btree_maxrecs(&ops_ag, 4096, 1);   /* 252 */
	uint64_t nodemax = mfs_btree_maxrecs(&ops_ag, 4096, 0);   /* 336 */
	uint64_t nb;
	unsigned lv;

	T_IEQ(mfs_bload_geometry(&ops_ag, 4096, leafmax, 100, &nb, &lv), 0);
	T_UEQ(nb, 1);
	T_IEQ(mfs_bload_geometry(&ops_ag, 4096, leafmax * 10, 100, &nb, &lv), 0);
	T_UEQ(nb, 11);
	T_UEQ(lv, 2);
	T_IEQ(mfs_bload_geometry(&ops_ag, 4096, leafmax * nodemax, 100, &nb, &lv), 0);
	T_UEQ(nb, nodemax + 1);
	T_UEQ(lv, 2);
	T_IEQ(mfs_bload_geometry(&ops_ag, 4096, leafmax * nodemax + 1, 100, &nb, &lv),
			 0);
	T_UEQ(lv, 3);
	/* leafmax + 1 at 50%: two leaves, not three under-full ones */
	T_IEQ(mfs_bload_geometry(&ops_ag, 4096, leafmax + 1, 50, &nb, &lv), 0);
	T_UEQ(nb, 3);
	T_IEQ(mfs_bload_geometry(&ops_ag, 4096, 10, 101, &nb, &lv), -EINVAL);
}
END_TEST

/* A loaded tree takes inserts and deletes (full leaves at 100% split at once). */
START_TEST(test_modify_after_load)
{
	struct tu_scratch t;
	struct mfs_btree_root root;
	struct mfs_trans *tp;
	struct mfs_btree_cur cur;
	uint64_t n = 50000, vrecs;
	uint8_t rec[16], key[8];
	int stat;

	tu_scratch_open(&t, "check_bload", 1024, 1u << 20);
	load_and_check(&t, &ops_ag, n, 100, 0, &root);
	next_free = 1u << 19;
	set_root_target = &root;
	T_IEQ(mfs_trans_alloc(t.fs, &tp), 0);
	mfs_btree_cur_init(&cur, t.fs, tp, &ops_ag, 0, 0, &root, NULL);
	for (uint64_t i = 1; i < n - 1; i += 5) {
		uint64_t x;

		mfs_put64(x, gen_key(i, n) + 1);
		memcpy(rec, &x, 8);
		memset(rec + 8, 0, 8);
		T_IEQ(mfs_btree_insert(&cur, rec), 0);
	}
	for (uint64_t i = 1; i < n - 1; i += 3) {
		uint64_t x;

		mfs_put64(x, gen_key(i, n));
		memcpy(key, &x, 8);
		T_IEQ(mfs_btree_lookup(&cur, key, MFS_LOOKUP_EQ, &stat), 0);
		T_IEQ(stat, 1);
		T_IEQ(mfs_btree_delete(&cur), 0);
	}
	mfs_btree_cur_release(&cur);
	T_IEQ(mfs_trans_commit(tp), 0);
	mfs_btree_cur_init(&cur, t.fs, NULL, &ops_ag, 0, 0, &root, NULL);
	T_IEQ(mfs_btree_verify(&cur, &vrecs, NULL), 0);
	T_UEQ(vrecs, n + (n - 2 + 4) / 5 - (n - 2 + 2) / 3);
	mfs_btree_cur_release(&cur);
	tu_scratch_close(&t);
}
END_TEST

static struct mfs_bload make_bl(const struct mfs_btree_ops *ops, struct stream *s)
{
	struct mfs_bload bl = {
		.ops = ops, .owner = owner_of(ops), .agno = 0, .nrecs = s->n, .fill_pct = 75,
		.get_recs = s_get_recs, .claim_block = s_claim, .priv = s,
	};
	return bl;
}

START_TEST(test_refusals)
{
	struct tu_scratch t;
	struct stream s;
	struct mfs_bload bl;
	struct mfs_btree_root root;
	int quiet = mfs_log_quiet();

	tu_scratch_open(&t, "check_bload", 1024, 1u << 18);
	/* unsorted input */
	memset(&s, 0, sizeof(s));
	s.n = 5000;
	s.first = 16;
	s.reserved = 1000;
	s.unsorted_at = 3000;
	bl = make_bl(&ops_ag, &s);
	T_IEQ(mfs_bload_build(t.fs, NULL, &bl, &root), -EINVAL);
	/* a failing record source */
	memset(&s, 0, sizeof(s));
	s.n = 5000;
	s.first = 16;
	s.reserved = 1000;
	s.fail_recs_at = 20;
	bl = make_bl(&ops_ag, &s);
	T_IEQ(mfs_bload_build(t.fs, NULL, &bl, &root), -EIO);
	/* running out of reserved blocks */
	memset(&s, 0, sizeof(s));
	s.n = 5000;
	s.first = 16;
	s.reserved = 1000;
	s.fail_claim_at = 50;
	bl = make_bl(&ops_ag, &s);
	T_IEQ(mfs_bload_build(t.fs, NULL, &bl, &root), -ENOSPC);
	/* a reserved block outside the AG */
	memset(&s, 0, sizeof(s));
	s.n = 5000;
	s.first = (1u << 18) - 20;
	s.reserved = 1000;
	bl = make_bl(&ops_ag, &s);
	T_IEQ(mfs_bload_build(t.fs, NULL, &bl, &root), -EINVAL);
	/* bad fill */
	memset(&s, 0, sizeof(s));
	s.n = 10;
	s.first = 16;
	s.reserved = 10;
	bl = make_bl(&ops_ag, &s);
	bl.fill_pct = 150;
	T_IEQ(mfs_bload_build(t.fs, NULL, &bl, &root), -EINVAL);
	mfs_log_set_level(quiet);
	tu_scratch_close(&t);
}
END_TEST

/*
 * Regression: a build without a transaction that fails half-way writes nothing.  Finished
 * blocks used to stay dirty in the cache and reach the disk at the next flush, over blocks
 * the caller had given back.  Claim failures early (4th block: two leaves finished) and
 * late, and a failing record source; after a flush the reserved range is still all zero.
 */
START_TEST(test_failure_writes_nothing)
{
	static const int claim_at[] = { 4, 100, 0 };
	struct tu_scratch t;
	struct stream s;
	struct mfs_bload bl;
	struct mfs_btree_root root;
	int quiet = mfs_log_quiet();
	uint8_t *buf = malloc(1024 * 1000), *zero = calloc(1024, 1);
	int fd;

	T_IEQ(buf != NULL && zero != NULL, 1);
	tu_scratch_open(&t, "check_bload", 1024, 1u << 18);
	fd = open(t.path, O_RDONLY);
	T_IGE(fd, 0);
	for (unsigned c = 0; c < sizeof(claim_at) / sizeof(claim_at[0]); c++) {
		memset(&s, 0, sizeof(s));
		s.n = 5000;
		s.first = 16;
		s.reserved = 1000;
		s.fail_claim_at = claim_at[c];
		s.fail_recs_at = claim_at[c] ? 0 : 60;
		bl = make_bl(&ops_ag, &s);
		T_IEQ(mfs_bload_build(t.fs, NULL, &bl, &root), claim_at[c] ? -ENOSPC : -EIO);
		T_UGE(s.claimed, 3);
		T_IEQ(mfs_bcache_flush(t.fs->bc), 0);
		T_IEQ(pread(fd, buf, 1024 * 1000, 16 * 1024), 1024 * 1000);
		for (unsigned b = 0; b < 1000; b++)
			if (memcmp(buf + (size_t)b * 1024, zero, 1024))
				ck_abort_msg("claim failure at %d: block %u of a failed build was "
					     "written", claim_at[c], 16 + b);
	}
	close(fd);
	free(buf);
	free(zero);
	mfs_log_set_level(quiet);
	tu_scratch_close(&t);
}
END_TEST

/* 10M records at 4 KiB, fills 75, 100 and 50. */
START_TEST(test_ten_million)
{
	static const unsigned fills[] = { 75, 100, 50 };
	uint64_t n = UNDER_ASAN ? 500000 : 10000000;

	for (unsigned f = 0; f < 3; f++) {
		struct tu_scratch t;
		struct stream s;
		struct mfs_bload bl;
		struct mfs_btree_root root;
		uint64_t nblocks;
		unsigned levels;
		double t0, t1;

		tu_scratch_open(&t, "check_bload", 4096, 1u << 20);
		T_IEQ(mfs_bload_geometry(&ops_ag, 4096, n, fills[f], &nblocks, &levels),
				 0);
		memset(&s, 0, sizeof(s));
		s.n = n;
		s.first = 16;
		s.reserved = nblocks;
		bl = make_bl(&ops_ag, &s);
		bl.fill_pct = fills[f];
		t0 = tu_now();
		T_IEQ(mfs_bload_build(t.fs, NULL, &bl, &root), 0);
		t1 = tu_now();
		T_UEQ(s.claimed, nblocks);
		T_UEQ(root.levels, levels);
		check_tree(&t, &ops_ag, &root, n, nblocks);
		printf("check_bload: %" PRIu64 " records at fill %u: %u levels, %" PRIu64
		       " blocks, built in %.2f s (%.1f M records/s), verified in %.2f s\n", n,
		       fills[f], levels, nblocks, t1 - t0, (double)n / (t1 - t0) / 1e6,
		       tu_now() - t1);
		tu_scratch_close(&t);
	}
}
END_TEST

static Suite *bload_suite(void)
{
	Suite *s = suite_create("bload");
	TCase *tc = tcase_create("bload");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_geometry_numbers);
	tcase_add_test(tc, test_empty_is_one_leaf);
	tcase_add_test(tc, test_small_sizes);
	tcase_add_test(tc, test_deep);
	tcase_add_test(tc, test_modify_after_load);
	tcase_add_test(tc, test_refusals);
	tcase_add_test(tc, test_failure_writes_nothing);
	tcase_add_test(tc, test_ten_million);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	tu_srand((uint64_t)time(NULL));
	return tu_run_suite(bload_suite());
}
