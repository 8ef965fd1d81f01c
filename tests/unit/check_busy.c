/*
 * check_busy.c — busy extents (lib/busy.c) and the allocator's use of them.
 *
 * The list: gaps around overlapping entries, commit / cancel / durable semantics, a seeded
 * random run against a model (every gap query compared with a per-block count of covering
 * entries), and threads stamping commits while another marks sequences durable (no entry
 * may be left waiting for a sequence that already passed).
 *
 * The allocator, on a formatted image with its journal: a data extent freed by a
 * transaction that is not yet durable is not handed to file data (NEAR picks other space
 * and the log is not forced; EXACT forces the log once, and only then gets it), metadata
 * may take it at once, a cancelled free leaves nothing busy, and a transaction's own free
 * stays busy for its own data allocations.
 */
#include <check.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "busy.h"
#include "fs.h"
#include "geom.h"
#include "journal.h"
#include "mendfs_format.h"
#include "trans.h"

#include "tu.h"

static uint64_t nentries(struct mfs_busy *b)
{
	struct mfs_busy_stats st;

	mfs_busy_get_stats(b, &st);
	return st.entries;
}

/* ---- the list ----------------------------------------------------------------------------- */
START_TEST(test_gaps_and_life)
{
	struct mfs_busy *b;
	int ta, tb, tc;            /* three "transactions": their addresses tag the entries */
	uint32_t gs, ge;

	CK_OK(mfs_busy_create(2, &b));
	CK_EQ(mfs_busy_insert(b, 2, 10, 5, &ta), -EINVAL);
	CK_EQ(mfs_busy_insert(b, 0, 10, 0, &ta), -EINVAL);
	CK_OK(mfs_busy_insert(b, 0, 10, 10, &ta));      /* [10, 20) */
	CK_OK(mfs_busy_insert(b, 0, 15, 15, &tb));      /* [15, 30), overlapping */
	CK_OK(mfs_busy_insert(b, 0, 40, 1, &tb));       /* [40, 41) */
	CK_OK(mfs_busy_insert(b, 1, 10, 10, &tc));      /* another AG */

	CK_TRUE(mfs_busy_gap(b, 0, 0, 100, &gs, &ge));
	CK_EQ(gs, 0);
	CK_EQ(ge, 10);
	CK_TRUE(mfs_busy_gap(b, 0, 10, 100, &gs, &ge));  /* past both overlapping entries */
	CK_EQ(gs, 30);
	CK_EQ(ge, 40);
	CK_TRUE(mfs_busy_gap(b, 0, 35, 100, &gs, &ge));
	CK_EQ(gs, 35);
	CK_EQ(ge, 40);
	CK_TRUE(mfs_busy_gap(b, 0, 40, 100, &gs, &ge));
	CK_EQ(gs, 41);
	CK_EQ(ge, 100);
	CK_TRUE(!mfs_busy_gap(b, 0, 12, 30, &gs, &ge));  /* busy to the end */
	CK_TRUE(mfs_busy_overlaps(b, 0, 19, 21));
	CK_TRUE(!mfs_busy_overlaps(b, 0, 30, 40));
	CK_TRUE(mfs_busy_overlaps(b, 1, 0, 11));
	CK_TRUE(!mfs_busy_overlaps(b, 1, 0, 10));
	CK_EQ(nentries(b), 4);

	/* A cancel drops its transaction's entries only. */
	mfs_busy_cancel(b, 0, &ta);
	CK_TRUE(!mfs_busy_overlaps(b, 0, 10, 15));
	CK_TRUE(mfs_busy_overlaps(b, 0, 15, 16));
	CK_EQ(nentries(b), 3);

	/* Committed entries wait for their sequence. */
	mfs_busy_commit(b, 0, &tb, 7);
	mfs_busy_commit(b, 1, &tc, 9);
	{
		struct mfs_busy_stats st;

		mfs_busy_get_stats(b, &st);
		CK_EQ(st.committed, 3);
	}
	mfs_busy_durable(b, 6);
	CK_EQ(nentries(b), 3);
	mfs_busy_durable(b, 7);
	CK_EQ(nentries(b), 1);
	CK_TRUE(!mfs_busy_overlaps(b, 0, 0, 100));
	CK_TRUE(mfs_busy_overlaps(b, 1, 10, 11));
	mfs_busy_durable(b, 5);                         /* never goes backwards */
	mfs_busy_durable(b, 9);
	CK_EQ(nentries(b), 0);

	/* A commit whose sequence is already durable drops its entries at once; a commit
	 * with no sequence (nothing to wait for) too. */
	CK_OK(mfs_busy_insert(b, 0, 50, 5, &ta));
	mfs_busy_commit(b, 0, &ta, 8);
	CK_EQ(nentries(b), 0);
	CK_OK(mfs_busy_insert(b, 0, 50, 5, &ta));
	mfs_busy_commit(b, 0, &ta, 0);
	CK_EQ(nentries(b), 0);
	/* Commits of other transactions leave pending entries alone. */
	CK_OK(mfs_busy_insert(b, 0, 50, 5, &ta));
	mfs_busy_commit(b, 0, &tb, 20);
	mfs_busy_durable(b, 30);
	CK_EQ(nentries(b), 1);
	mfs_busy_destroy(b);
}
END_TEST

/* Model: entries as the test sees them; a block is busy while one covers it. */
#define MAG     600u
#define MAXE    256
struct ment { uint32_t s, l; uint64_t lsn; int owner; };

static int model_busy(const struct ment *m, unsigned n, uint32_t blk)
{
	for (unsigned i = 0; i < n; i++)
		if (blk >= m[i].s && blk < m[i].s + m[i].l)
			return 1;
	return 0;
}

START_TEST(test_random_model)
{
	static struct ment m[MAXE];
	static int owners[8];
	unsigned n = 0, peak = 0;
	uint64_t next_lsn = 1, durable = 0;
	struct mfs_busy *b;
	uint64_t seed = tu_seed("BUSY_SEED", "check_busy random");
	unsigned steps = UNDER_ASAN ? 3000 : 20000;

	tu_srand(seed);
	CK_OK(mfs_busy_create(1, &b));
	for (unsigned step = 0; step < steps; step++) {
		unsigned op = tu_rand_below(100);

		if (op < 45 && n < MAXE) {
			uint32_t l = 1 + tu_rand_below(tu_rand_below(4) ? 8 : 80);
			uint32_t s = tu_rand_below(MAG - l);
			int o = (int)tu_rand_below(8);

			CK_OK(mfs_busy_insert(b, 0, s, l, &owners[o]));
			m[n++] = (struct ment){ s, l, 0, o };
		} else if (op < 75) {
			int o = (int)tu_rand_below(8);
			uint64_t lsn = next_lsn++;

			if (tu_rand_below(5) == 0) {
				mfs_busy_cancel(b, 0, &owners[o]);
				lsn = 0;
			} else {
				mfs_busy_commit(b, 0, &owners[o], lsn);
			}
			for (unsigned i = 0; i < n;) {
				if (m[i].lsn == 0 && m[i].owner == o && (lsn == 0 || lsn <= durable)) {
					m[i] = m[--n];
					continue;
				}
				if (m[i].lsn == 0 && m[i].owner == o)
					m[i].lsn = lsn;
				i++;
			}
		} else if (op < 85) {
			if (next_lsn > 1)
				durable = durable + tu_rand_below((uint32_t)(next_lsn - durable));
			mfs_busy_durable(b, durable);
			for (unsigned i = 0; i < n;) {
				if (m[i].lsn && m[i].lsn <= durable)
					m[i] = m[--n];
				else
					i++;
			}
		} else {
			/* Compare every gap of a random window with the model. */
			uint32_t s = tu_rand_below(MAG), e = s + 1 + tu_rand_below(MAG - s);
			uint32_t cur = s, gs, ge;

			while (cur < e && mfs_busy_gap(b, 0, cur, e, &gs, &ge)) {
				T_TRUE(gs >= cur && gs < ge && ge <= e);
				for (uint32_t k = cur; k < gs; k++)
					T_TRUE(model_busy(m, n, k));
				for (uint32_t k = gs; k < ge; k++)
					T_TRUE(!model_busy(m, n, k));
				T_TRUE(ge == e || model_busy(m, n, ge));
				cur = ge;
			}
			for (uint32_t k = cur; k < e; k++)
				T_TRUE(model_busy(m, n, k));
		}
		T_UEQ(nentries(b), n);
		if (n > peak)
			peak = n;
	}
	printf("check_busy random: %u steps, up to %u entries at once\n", steps, peak);
	CK_TRUE(peak >= 20);                      /* the model was exercised */
	mfs_busy_destroy(b);
}
END_TEST

/* Committers stamp increasing sequences while a "journal" thread marks them durable. */
#define RACE_THREADS 3
#define RACE_PER     2000
struct racer {
	struct mfs_busy *b;
	unsigned t;
	atomic_uint_fast64_t *next;
};

static void *race_main(void *arg)
{
	struct racer *r = arg;

	for (unsigned i = 0; i < RACE_PER; i++) {
		uint64_t lsn;

		if (mfs_busy_insert(r->b, r->t, i % 100, 1, r))
			return (void *)1;
		lsn = atomic_fetch_add(r->next, 1);
		mfs_busy_commit(r->b, r->t, r, lsn);
	}
	return NULL;
}

START_TEST(test_stamp_vs_durable)
{
	struct mfs_busy *b;
	atomic_uint_fast64_t next = 1;
	struct racer r[RACE_THREADS];
	pthread_t th[RACE_THREADS];

	CK_OK(mfs_busy_create(RACE_THREADS, &b));
	for (unsigned t = 0; t < RACE_THREADS; t++) {
		r[t] = (struct racer){ b, t, &next };
		CK_EQ(pthread_create(&th[t], NULL, race_main, &r[t]), 0);
	}
	/* Durable trails the sequences handed out (a sequence is given before its stamp). */
	for (unsigned i = 0; i < 20000; i++)
		mfs_busy_durable(b, atomic_load(&next) - 1);
	for (unsigned t = 0; t < RACE_THREADS; t++) {
		void *ret;

		pthread_join(th[t], &ret);
		CK_TRUE(ret == NULL);
	}
	mfs_busy_durable(b, atomic_load(&next) - 1);
	CK_EQ(nentries(b), 0);
	mfs_busy_destroy(b);
}
END_TEST

/* ---- the allocator -------------------------------------------------------------------------- */
#define OWNER 4242ull          /* an inode number; the test frees all it takes */

static int alloc_in(struct mfs_trans *tp, enum mfs_alloc_type type, uint64_t target,
		    uint32_t len, uint64_t offset, uint64_t *fsb)
{
	struct mfs_alloc_args a;
	int err;

	memset(&a, 0, sizeof(a));
	a.type = type;
	a.target = target;
	a.minlen = len;
	a.maxlen = len;
	a.owner = OWNER;
	a.offset = offset;
	err = mfs_alloc_extent(tp, &a);
	*fsb = a.fsb;
	if (!err)
		CK_EQ(a.len, len);
	return err;
}

static uint64_t alloc_tx(struct mfs_fs *fs, enum mfs_alloc_type type, uint64_t target,
			 uint32_t len, uint64_t offset, uint64_t *lsn)
{
	struct mfs_trans *tp;
	uint64_t fsb;

	CK_OK(mfs_trans_alloc(fs, &tp));
	CK_OK(alloc_in(tp, type, target, len, offset, &fsb));
	CK_OK(mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, lsn));
	return fsb;
}

static void free_tx(struct mfs_fs *fs, uint64_t fsb, uint32_t len, uint64_t offset,
		    uint64_t *lsn)
{
	struct mfs_trans *tp;

	CK_OK(mfs_trans_alloc(fs, &tp));
	CK_OK(mfs_free_extent(tp, fsb, len, OWNER, offset));
	CK_OK(mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, lsn));
}

static uint64_t durable(struct mfs_fs *fs)
{
	struct mfs_journal_stats st;

	mfs_journal_get_stats(fs->log, &st);
	return st.durable_lsn;
}

static int overlap(uint64_t a, uint32_t al, uint64_t b, uint32_t bl)
{
	return a < b + bl && b < a + al;
}

START_TEST(test_alloc_skips_busy)
{
	char path[TU_PATH_MAX];
	struct mfs_fs *fs;
	struct mfs_busy *b;
	struct mfs_busy_stats st;
	struct mfs_trans *tp;
	uint64_t a, a2, m, c, x, lsn, free_lsn;

	tu_format_new(path, "mendfs_busy", 64 << 20, NULL);
	fs = tu_fs_open(path, MFS_OPEN_JOURNAL);
	ck_assert_ptr_nonnull(fs->log);
	b = mfs_journal_busy(fs->log);

	/* A data extent, durable; then freed asynchronously: busy. */
	a = alloc_tx(fs, MFS_ALLOC_NEAR, 1000, 16, 0, &lsn);
	CK_OK(mfs_journal_force_lsn(fs->log, lsn));
	free_tx(fs, a, 16, 0, &free_lsn);
	CK_TRUE(durable(fs) < free_lsn);
	mfs_busy_get_stats(b, &st);
	CK_EQ(st.committed, 1);
	CK_TRUE(mfs_busy_overlaps(b, mfs_fsb_to_agno(&fs->geo, a), mfs_fsb_to_agbno(&fs->geo, a),
				  mfs_fsb_to_agbno(&fs->geo, a) + 1));

	/* File data near it: other space, and no force was needed. */
	a2 = alloc_tx(fs, MFS_ALLOC_NEAR, a, 16, 100, &lsn);
	CK_TRUE(!overlap(a2, 16, a, 16));
	CK_TRUE(durable(fs) < free_lsn);
	mfs_busy_get_stats(b, &st);
	CK_EQ(st.forces, 0);
	CK_TRUE(st.trims > 0);

	/* Metadata (an extent-map block) may take busy space at once. */
	m = alloc_tx(fs, MFS_ALLOC_EXACT, a, 1, MFS_RMAP_BMBT_BLOCK, &lsn);
	CK_EQ(m, a);
	CK_TRUE(durable(fs) < free_lsn);

	/* File data exactly there: only after the free is durable (one force). */
	x = alloc_tx(fs, MFS_ALLOC_EXACT, a + 1, 15, 200, &lsn);
	CK_EQ(x, a + 1);
	CK_TRUE(durable(fs) >= free_lsn);
	mfs_busy_get_stats(b, &st);
	CK_EQ(st.forces, 1);
	CK_EQ(st.committed, 0);
	CK_EQ(st.entries, 0);

	/* A cancelled free leaves nothing busy. */
	CK_OK(mfs_trans_alloc(fs, &tp));
	CK_OK(mfs_free_extent(tp, x, 15, OWNER, 200));
	CK_EQ(nentries(b), 1);
	mfs_trans_cancel(tp);
	CK_EQ(nentries(b), 0);

	/* A transaction's own free stays busy for its own file data, even after a force. */
	CK_OK(mfs_trans_alloc(fs, &tp));
	CK_OK(mfs_free_extent(tp, x, 15, OWNER, 200));
	CK_EQ(alloc_in(tp, MFS_ALLOC_EXACT, x, 15, 300, &c), -ENOSPC);
	CK_OK(alloc_in(tp, MFS_ALLOC_NEAR, x, 15, 300, &c));
	CK_TRUE(!overlap(c, 15, x, 15));
	CK_OK(mfs_trans_commit_lsn(tp, 0, &lsn));          /* durable: clears the entry */
	CK_EQ(nentries(b), 0);

	/* Give everything back and close cleanly. */
	free_tx(fs, a2, 16, 100, &lsn);
	free_tx(fs, m, 1, MFS_RMAP_BMBT_BLOCK, &lsn);
	free_tx(fs, c, 15, 300, &lsn);
	tu_fs_close(fs);
	tu_image_remove(path);
}
END_TEST

/* mfs_trans_busy_hull: two separate frees of one transaction are one busy entry, entered
 * at the commit, covering the space between them too, and gone once durable; a cancel
 * enters nothing. */
START_TEST(test_busy_hull)
{
	char path[TU_PATH_MAX];
	struct mfs_fs *fs;
	struct mfs_busy *b;
	struct mfs_trans *tp;
	uint64_t a, c, lsn;
	uint32_t agno, abno, cbno;

	tu_format_new(path, "mendfs_busy", 64 << 20, NULL);
	fs = tu_fs_open(path, MFS_OPEN_JOURNAL);
	ck_assert_ptr_nonnull(fs->log);
	b = mfs_journal_busy(fs->log);
	a = alloc_tx(fs, MFS_ALLOC_NEAR, 1000, 4, 0, &lsn);
	c = alloc_tx(fs, MFS_ALLOC_NEAR, a + 100, 4, 100, &lsn);
	CK_OK(mfs_journal_force_lsn(fs->log, lsn));
	CK_EQ(nentries(b), 0);
	agno = mfs_fsb_to_agno(&fs->geo, a);
	CK_EQ(mfs_fsb_to_agno(&fs->geo, c), agno);
	abno = mfs_fsb_to_agbno(&fs->geo, a);
	cbno = mfs_fsb_to_agbno(&fs->geo, c);
	CK_TRUE(abno + 4 < cbno);

	/* cancelled: nothing was ever busy */
	CK_OK(mfs_trans_alloc(fs, &tp));
	mfs_trans_busy_hull(tp);
	CK_OK(mfs_free_extent(tp, a, 4, OWNER, 0));
	CK_OK(mfs_free_extent(tp, c, 4, OWNER, 100));
	CK_EQ(nentries(b), 0);
	mfs_trans_cancel(tp);
	CK_EQ(nentries(b), 0);

	/* committed: one entry from a to the end of c, until durable */
	CK_OK(mfs_trans_alloc(fs, &tp));
	mfs_trans_busy_hull(tp);
	CK_OK(mfs_free_extent(tp, a, 4, OWNER, 0));
	CK_OK(mfs_free_extent(tp, c, 4, OWNER, 100));
	CK_OK(mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, &lsn));
	CK_TRUE(durable(fs) < lsn);       /* as test_alloc_skips_busy: not forced yet */
	CK_EQ(nentries(b), 1);
	CK_TRUE(mfs_busy_overlaps(b, agno, abno + 4, abno + 5));
	CK_TRUE(!mfs_busy_overlaps(b, agno, cbno + 4, cbno + 5));
	CK_TRUE(!mfs_busy_overlaps(b, agno, abno - 1, abno));
	CK_OK(mfs_journal_force_lsn(fs->log, lsn));
	CK_EQ(nentries(b), 0);
	tu_fs_close(fs);
	tu_image_remove(path);
}
END_TEST

static Suite *busy_suite(void)
{
	Suite *s = suite_create("busy");
	TCase *tc = tcase_create("list");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_gaps_and_life);
	tcase_add_test(tc, test_random_model);
	tcase_add_test(tc, test_stamp_vs_durable);
	suite_add_tcase(s, tc);
	tc = tcase_create("alloc");
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_alloc_skips_busy);
	tcase_add_test(tc, test_busy_hull);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(busy_suite());
}
