/*
 * check_agtrees.c — the per-AG btrees: record sanity checks of the four ops tables, AG
 * formatting with enough used extents and inode chunks that every tree needs several
 * blocks (and bad format input refused), trees three levels deep on 1 KiB blocks grown
 * and shrunk through the allocator (AGFL splits and merges), and the inode btree growing
 * through the allocator (its blocks owned by MFS_OWN_INOBT) and shrinking back.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "ag.h"
#include "alloc.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "dev.h"
#include "fs.h"
#include "geom.h"
#include "log.h"
#include "trans.h"

#include "tu.h"

static uint64_t ino_at(const struct mfs_geom *g, uint32_t agno, uint32_t agbno)
{
	return mfs_agino_to_ino(g, agno, mfs_agbno_to_agino(g, agbno));
}

/* ---- check_rec ----------------------------------------------------------------------------- */
static int check_alloc_rec(struct mfs_btree_cur *cur, const struct mfs_btree_ops *ops,
			   uint32_t s, uint32_t l)
{
	struct mfs_alloc_rec r;

	mfs_put32(r.startblock, s);
	mfs_put32(r.blockcount, l);
	return ops->check_rec(cur, &r);
}

static int check_ino_rec(struct mfs_btree_cur *cur, uint32_t startino, uint32_t fc,
			 uint64_t mask)
{
	struct mfs_inobt_rec r;

	mfs_put32(r.startino, startino);
	mfs_put32(r.freecount, fc);
	mfs_put64(r.freemask, mask);
	return mfs_inobt_ops.check_rec(cur, &r);
}

static int check_rmap_rec(struct mfs_btree_cur *cur, uint32_t s, uint32_t l, uint64_t owner,
			  uint64_t off)
{
	struct mfs_rmap_rec r;

	mfs_put32(r.startblock, s);
	mfs_put32(r.blockcount, l);
	mfs_put64(r.owner, owner);
	mfs_put64(r.offset, off);
	return mfs_rmapbt_ops.check_rec(cur, &r);
}

START_TEST(test_check_rec)
{
	struct tu_agfs t;
	struct mfs_btree_cur cur;
	const struct mfs_geom *g;
	uint32_t len, cb;

	tu_agfs_open(&t, 4096, 4096, 2, 2 * 4096 - 100);
	g = &t.fs->geo;
	len = mfs_ag_length(g, 1);
	cb = g->chunkblocks;
	memset(&cur, 0, sizeof(cur));
	cur.fs = t.fs;
	cur.agno = 1;
	mfs_log_quiet();
	for (int k = 0; k < 2; k++) {
		const struct mfs_btree_ops *ops = k ? &mfs_cntbt_ops : &mfs_bnobt_ops;

		cur.ops = ops;
		CK_OK(check_alloc_rec(&cur, ops, 3, len - 3));
		CK_EQ(check_alloc_rec(&cur, ops, 3, len - 2), -EFSCORRUPTED);   /* past the end */
		CK_EQ(check_alloc_rec(&cur, ops, 2, 5), -EFSCORRUPTED);         /* over AGFL */
		CK_EQ(check_alloc_rec(&cur, ops, 100, 0), -EFSCORRUPTED);       /* empty */
		CK_EQ(check_alloc_rec(&cur, ops, UINT32_MAX, 2), -EFSCORRUPTED);
	}
	cur.ops = &mfs_inobt_ops;
	CK_OK(check_ino_rec(&cur, mfs_agbno_to_agino(g, 4 * cb), 2, 0x3));
	CK_OK(check_ino_rec(&cur, mfs_agbno_to_agino(g, len - len % cb - cb), 0, 0));
	CK_EQ(check_ino_rec(&cur, mfs_agbno_to_agino(g, 4 * cb) + 1, 0, 0), -EFSCORRUPTED);
	CK_EQ(check_ino_rec(&cur, mfs_agbno_to_agino(g, 4 * cb), 3, 0x3), -EFSCORRUPTED);
	CK_EQ(check_ino_rec(&cur, mfs_agbno_to_agino(g, len), 0, 0), -EFSCORRUPTED);
	CK_EQ(check_ino_rec(&cur, 0, 0, 0), -EFSCORRUPTED);                 /* on the headers */
	cur.ops = &mfs_rmapbt_ops;
	CK_OK(check_rmap_rec(&cur, 0, 3, MFS_OWN_FS, 0));
	CK_OK(check_rmap_rec(&cur, 10, 3, ino_at(g, 0, 64), 7 | MFS_RMAP_ATTR_FORK));
	CK_OK(check_rmap_rec(&cur, 10, 1, ino_at(g, 1, 64), MFS_RMAP_BMBT_BLOCK));
	CK_EQ(check_rmap_rec(&cur, 10, 0, MFS_OWN_AG, 0), -EFSCORRUPTED);
	CK_EQ(check_rmap_rec(&cur, len - 1, 2, MFS_OWN_AG, 0), -EFSCORRUPTED);
	CK_EQ(check_rmap_rec(&cur, 10, 1, MFS_OWN_NULL, 0), -EFSCORRUPTED);
	CK_EQ(check_rmap_rec(&cur, 10, 1, MFS_OWN_MIN - 1, 0), -EFSCORRUPTED);
	CK_EQ(check_rmap_rec(&cur, 10, 1, 0, 0), -EFSCORRUPTED);
	CK_EQ(check_rmap_rec(&cur, 10, 1, ino_at(g, 2, 64), 0), -EFSCORRUPTED); /* no AG 2 */
	CK_EQ(check_rmap_rec(&cur, 10, 1, ino_at(g, 1, len + 8), 0), -EFSCORRUPTED);
	CK_EQ(check_rmap_rec(&cur, 10, 1, MFS_OWN_LOG, 5), -EFSCORRUPTED);
	CK_EQ(check_rmap_rec(&cur, 10, 1, ino_at(g, 0, 64), 1ull << 60), -EFSCORRUPTED);
	CK_EQ(check_rmap_rec(&cur, 10, 1, ino_at(g, 0, 64), MFS_RMAP_BMBT_BLOCK | 4),
	      -EFSCORRUPTED);
	CK_EQ(check_rmap_rec(&cur, 10, 4, ino_at(g, 0, 64), MFS_RMAP_OFF_MASK - 1),
	      -EFSCORRUPTED);
	mfs_log_set_level(MFS_LOG_INFO);
	CK_EQ(mfs_ag_tree_ops(MFS_BT_RMAP), &mfs_rmapbt_ops);
	CK_TRUE(mfs_ag_tree_ops(MFS_AG_NTREES) == NULL);
	tu_agfs_close(&t);
}
END_TEST

/* ---- formatting with multi-block trees ------------------------------------------------------ */
START_TEST(test_format_big)
{
	struct tu_agfs t;
	const struct mfs_geom *g;
	uint32_t base, cb, nused = 0, nchunks = 0, b;
	struct mfs_ag_extent *used = calloc(4000, sizeof(*used));
	struct mfs_inobt_rec *chunks = calloc(400, sizeof(*chunks));
	uint64_t nrecs[MFS_AG_NTREES];
	unsigned levels[MFS_AG_NTREES];
	struct mfs_ag_extent bad[2];

	CK_TRUE(used && chunks);
	tu_agfs_open(&t, 1024, 16384, 2, 2 * 16384);
	g = &t.fs->geo;
	cb = g->chunkblocks;
	base = MFS_AG_FIXED_BLOCKS + mfs_ag_format_blocks(g);
	/* 300 inode chunks (OWN_INODES), each followed by a gap; then 3000 single blocks of
	 * alternating owners with single-block gaps: thousands of records everywhere */
	b = (base + cb - 1) / cb * cb + 4 * cb;           /* leave room for claimed blocks */
	for (unsigned i = 0; i < 300; i++, b += 2 * cb) {
		used[nused++] = (struct mfs_ag_extent){ b, cb, MFS_OWN_INODES, 0 };
		mfs_put32(chunks[nchunks].startino, mfs_agbno_to_agino(g, b));
		mfs_put32(chunks[nchunks].freecount, i % 65);
		mfs_put64(chunks[nchunks].freemask, i % 65 == 64 ? ~0ull : (1ull << (i % 65)) - 1);
		nchunks++;
	}
	for (unsigned i = 0; i < 3000; i++, b += 2)
		used[nused++] = (struct mfs_ag_extent){ b, 1, ino_at(g, i % 2, 64 + i % 7), i };
	/* given in reverse order: the formatter sorts */
	for (unsigned i = 0; i < nused / 2; i++) {
		struct mfs_ag_extent x = used[i];

		used[i] = used[nused - 1 - i];
		used[nused - 1 - i] = x;
	}
	CK_OK(mfs_ag_format(t.fs, 0, used, nused, chunks, nchunks));
	CK_OK(mfs_ag_format(t.fs, 1, NULL, 0, NULL, 0));
	for (unsigned i = 0; i < nused; i++)
		tu_model_set(&t, used[i].agbno, used[i].len, used[i].owner, used[i].offset);
	tu_check_ag(&t, 0, nrecs, levels);
	tu_check_ag(&t, 1, NULL, NULL);
	CK_EQ(nrecs[MFS_BT_INO], 300);
	CK_TRUE(levels[MFS_BT_INO] >= 2 && levels[MFS_BT_BNO] >= 2 && levels[MFS_BT_RMAP] >= 2);
	{
		struct mfs_buf *bp;
		const struct mfs_agh *agh;
		uint32_t ifree = 0;

		for (unsigned i = 0; i < nchunks; i++)
			ifree += mfs_get32(chunks[i].freecount);
		CK_OK(mfs_read_agh(t.fs, 0, &bp));
		agh = bp->data;
		CK_EQ(mfs_get32(agh->icount), 300 * 64);
		CK_EQ(mfs_get32(agh->ifree), ifree);
		mfs_buf_put(bp);
	}
	/* it survives a flush and a cold cache */
	tu_agfs_reopen(&t);
	tu_check_ag(&t, 0, NULL, NULL);

	/* bad input changes nothing and says why */
	mfs_log_quiet();
	bad[0] = (struct mfs_ag_extent){ base + 10, 5, MFS_OWN_LOG, 0 };
	bad[1] = (struct mfs_ag_extent){ base + 14, 5, MFS_OWN_LOG, 0 };
	CK_EQ(mfs_ag_format(t.fs, 1, bad, 2, NULL, 0), -EINVAL);             /* overlap */
	bad[0] = (struct mfs_ag_extent){ base - 1, 5, MFS_OWN_LOG, 0 };
	CK_EQ(mfs_ag_format(t.fs, 1, bad, 1, NULL, 0), -EINVAL);             /* on our blocks */
	bad[0] = (struct mfs_ag_extent){ 16380, 5, MFS_OWN_LOG, 0 };
	CK_EQ(mfs_ag_format(t.fs, 1, bad, 1, NULL, 0), -EINVAL);             /* past the end */
	bad[0] = (struct mfs_ag_extent){ base + 10, 0, MFS_OWN_LOG, 0 };
	CK_EQ(mfs_ag_format(t.fs, 1, bad, 1, NULL, 0), -EINVAL);             /* empty */
	bad[0] = (struct mfs_ag_extent){ base + 10, 1, MFS_OWN_NULL, 0 };
	CK_EQ(mfs_ag_format(t.fs, 1, bad, 1, NULL, 0), -EINVAL);             /* no owner */
	CK_EQ(mfs_ag_format(t.fs, 1, NULL, 0, chunks, 1), -EINVAL);          /* no inode space */
	CK_EQ(mfs_ag_format(t.fs, 2, NULL, 0, NULL, 0), -EINVAL);            /* no such AG */
	mfs_log_set_level(MFS_LOG_INFO);
	tu_check_ag(&t, 1, NULL, NULL);
	free(used);
	free(chunks);
	tu_agfs_close(&t);
}
END_TEST

/* ---- deep trees through the allocator ------------------------------------------------------ */
static int alloc_one(struct tu_agfs *t, uint64_t owner, uint64_t offset, uint64_t target,
		     uint64_t *fsb)
{
	struct mfs_alloc_args a;
	struct mfs_trans *tp;
	int err;

	memset(&a, 0, sizeof(a));
	a.type = MFS_ALLOC_NEAR;
	a.target = target;
	a.minlen = a.maxlen = 1;
	a.owner = owner;
	a.offset = offset;
	CK_OK(mfs_trans_alloc(t->fs, &tp));
	err = mfs_alloc_extent(tp, &a);
	if (err) {
		mfs_trans_cancel(tp);
		return err;
	}
	CK_OK(mfs_trans_commit(tp));
	tu_model_set(t, a.fsb, 1, owner, offset);
	*fsb = a.fsb;
	return 0;
}

static void free_one(struct tu_agfs *t, uint64_t fsb)
{
	struct mfs_trans *tp;

	CK_OK(mfs_trans_alloc(t->fs, &tp));
	CK_OK(mfs_free_extent(tp, fsb, 1, t->owner[fsb], t->offset[fsb]));
	CK_OK(mfs_trans_commit(tp));
	tu_model_set(t, fsb, 1, TU_OWN_FREE, 0);
}

START_TEST(test_deep_trees)
{
	struct tu_agfs t;
	const struct mfs_geom *g;
	uint64_t *blocks = malloc(65536 * sizeof(uint64_t)), fsb, n = 0;
	uint64_t nrecs[MFS_AG_NTREES];
	unsigned levels[MFS_AG_NTREES];
	int err;

	CK_TRUE(blocks != NULL);
	tu_agfs_open(&t, 1024, 65536, 1, 65536);
	tu_agfs_format_all(&t);
	g = &t.fs->geo;
	/* single blocks, owners alternating so that no two reverse-map records merge */
	for (;;) {
		uint64_t owner = ino_at(g, 0, 64 + (uint32_t)(n % 2));

		err = alloc_one(&t, owner, n, n ? blocks[n - 1] + 1 : 0, &fsb);
		if (err == -ENOSPC)
			break;
		CK_OK(err);
		blocks[n++] = fsb;
	}
	tu_check_ag(&t, 0, nrecs, levels);
	fprintf(stderr, "check_agtrees deep: %llu single-block extents, rmap %llu records "
		"height %u\n", (unsigned long long)n, (unsigned long long)nrecs[MFS_BT_RMAP],
		levels[MFS_BT_RMAP]);
	CK_TRUE(n > 60000);
	CK_TRUE(levels[MFS_BT_RMAP] >= 3);
	/* every other one back: tens of thousands of free extents */
	for (uint64_t i = 0; i < n; i += 2)
		free_one(&t, blocks[i]);
	tu_check_ag(&t, 0, nrecs, levels);
	fprintf(stderr, "check_agtrees deep: %llu free extents, by-block height %u, by-length "
		"height %u\n", (unsigned long long)nrecs[MFS_BT_BNO], levels[MFS_BT_BNO],
		levels[MFS_BT_CNT]);
	CK_TRUE(levels[MFS_BT_BNO] >= 3 && levels[MFS_BT_CNT] >= 3);
	/* the rest, in a scattered order: every merge, every root collapse */
	for (uint64_t i = 1; i < n; i += 2) {
		uint64_t j = 1 + 2 * ((i / 2 * 7919) % (n / 2));

		if (j < n && t.owner[blocks[j]] != TU_OWN_FREE)
			free_one(&t, blocks[j]);
	}
	for (uint64_t i = 1; i < n; i += 2)
		if (t.owner[blocks[i]] != TU_OWN_FREE)
			free_one(&t, blocks[i]);
	tu_check_ag(&t, 0, nrecs, levels);
	CK_EQ(levels[MFS_BT_BNO], 1);
	CK_EQ(levels[MFS_BT_CNT], 1);
	CK_EQ(levels[MFS_BT_RMAP], 1);
	fprintf(stderr, "check_agtrees deep: all freed: %llu free extents, %llu rmap records\n",
		(unsigned long long)nrecs[MFS_BT_BNO], (unsigned long long)nrecs[MFS_BT_RMAP]);
	/* what stays used: headers, one block per tree, the AGFL stock (and its slack) */
	CK_TRUE(nrecs[MFS_BT_BNO] <= 4 + MFS_AGFL_SIZE_MAX);
	free(blocks);
	tu_agfs_close(&t);
}
END_TEST

/* ---- the inode btree grows through the allocator ---------------------------------------- */
START_TEST(test_inobt_grow_shrink)
{
	struct tu_agfs t;
	const struct mfs_geom *g;
	uint32_t cb, nchunks = 0;
	uint64_t chunk_fsb[1500];
	uint64_t nrecs[MFS_AG_NTREES];
	unsigned levels[MFS_AG_NTREES];

	tu_agfs_open(&t, 1024, 32768, 2, 2 * 32768);
	tu_agfs_format_all(&t);
	g = &t.fs->geo;
	cb = g->chunkblocks;
	for (unsigned i = 0; i < 1500; i++) {
		struct mfs_trans *tp;
		struct mfs_buf *agh_bp;
		struct mfs_btree_cur cur;
		struct mfs_alloc_args a;
		struct mfs_inobt_rec r;

		memset(&a, 0, sizeof(a));
		a.type = MFS_ALLOC_NEAR;
		a.target = mfs_agbno_to_fsb(g, 1, 100);
		a.minlen = a.maxlen = a.align = cb;
		a.owner = MFS_OWN_INODES;
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		if (mfs_alloc_extent(tp, &a) == -ENOSPC) {
			mfs_trans_cancel(tp);
			break;
		}
		CK_EQ(mfs_fsb_to_agno(g, a.fsb), 1);
		CK_OK(mfs_read_agh(t.fs, 1, &agh_bp));
		mfs_ag_cur_init(&cur, t.fs, tp, 1, MFS_BT_INO, agh_bp);
		mfs_put32(r.startino, mfs_agbno_to_agino(g, mfs_fsb_to_agbno(g, a.fsb)));
		mfs_put32(r.freecount, 64);
		mfs_put64(r.freemask, ~0ull);
		CK_OK(mfs_btree_insert(&cur, &r));
		mfs_btree_cur_release(&cur);
		mfs_buf_put(agh_bp);
		CK_OK(mfs_trans_commit(tp));
		tu_model_set(&t, a.fsb, cb, MFS_OWN_INODES, 0);
		chunk_fsb[nchunks++] = a.fsb;
	}
	tu_check_ag(&t, 1, nrecs, levels);
	fprintf(stderr, "check_agtrees inobt: %u chunks, inode btree height %u\n", nchunks,
		levels[MFS_BT_INO]);
	CK_TRUE(nchunks >= 1000);
	CK_EQ(nrecs[MFS_BT_INO], nchunks);
	CK_TRUE(levels[MFS_BT_INO] >= 2);
	/* and back: records deleted, chunks freed, inode btree blocks freed */
	for (unsigned i = 0; i < nchunks; i++) {
		struct mfs_trans *tp;
		struct mfs_buf *agh_bp;
		struct mfs_btree_cur cur;
		struct mfs_inobt_key k;
		int stat;

		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_OK(mfs_trans_lock_ag(tp, 1, 0));
		CK_OK(mfs_read_agh(t.fs, 1, &agh_bp));
		mfs_ag_cur_init(&cur, t.fs, tp, 1, MFS_BT_INO, agh_bp);
		mfs_put32(k.startino, mfs_agbno_to_agino(g, mfs_fsb_to_agbno(g, chunk_fsb[i])));
		CK_OK(mfs_btree_lookup(&cur, &k, MFS_LOOKUP_EQ, &stat));
		CK_EQ(stat, 1);
		CK_OK(mfs_btree_delete(&cur));
		mfs_btree_cur_release(&cur);
		mfs_buf_put(agh_bp);
		CK_OK(mfs_free_extent(tp, chunk_fsb[i], cb, MFS_OWN_INODES, 0));
		CK_OK(mfs_trans_commit(tp));
		tu_model_set(&t, chunk_fsb[i], cb, TU_OWN_FREE, 0);
		if (i % 500 == 0)
			tu_check_ag(&t, 1, NULL, NULL);
	}
	tu_check_ag(&t, 1, nrecs, levels);
	CK_EQ(nrecs[MFS_BT_INO], 0);
	CK_EQ(levels[MFS_BT_INO], 1);
	tu_agfs_close(&t);
}
END_TEST

static Suite *agtrees_suite(void)
{
	Suite *s = suite_create("agtrees");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, 300);
	tcase_add_test(tc, test_check_rec);
	tcase_add_test(tc, test_format_big);
	tcase_add_test(tc, test_inobt_grow_shrink);
	tcase_add_test(tc, test_deep_trees);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(agtrees_suite());
}
