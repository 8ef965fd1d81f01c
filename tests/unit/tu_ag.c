/*
 * tu_ag.c — the unit-test harness's AG model (see tu.h): a filesystem handle over a sparse
 * temporary image without a superblock, a model of who owns each block, and the check of
 * an AG against the model — both free-space trees record for record, the reverse map block
 * for block, the header counters, and mfs_btree_verify on all four trees.
 */
#include "tu.h"

#include "ag.h"
#include "alloc.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "dev.h"
#include "fs.h"
#include "mendfs_format.h"

void tu_agfs_open(struct tu_agfs *t, uint32_t bs, uint32_t agblocks, uint32_t agcount,
		  uint64_t dblocks)
{
	struct mfs_geom g;

	memset(t, 0, sizeof(*t));
	tu_geom(&g, bs, agblocks, agcount, dblocks, NULL);
	tu_image_create(t->path, "mendfs_ag", dblocks * bs);
	t->fs = tu_fs_create(t->path, &g, 0);
	t->owner = calloc(dblocks, sizeof(uint64_t));
	t->offset = calloc(dblocks, sizeof(uint64_t));
	CK_TRUE(t->owner && t->offset);
}

void tu_agfs_reopen(struct tu_agfs *t)
{
	struct mfs_geom g = t->fs->geo;

	CK_OK(mfs_fs_close(t->fs));
	t->fs = tu_fs_create(t->path, &g, 0);
}

void tu_agfs_close(struct tu_agfs *t)
{
	CK_OK(mfs_fs_close(t->fs));
	tu_image_remove(t->path);
	free(t->owner);
	free(t->offset);
}

/* Record in the model that [fsb, fsb+len) belongs to (owner, offset). */
void tu_model_set(struct tu_agfs *t, uint64_t fsb, uint32_t len, uint64_t owner,
		      uint64_t offset)
{
	int positional = owner < MFS_OWN_MIN && !(offset & MFS_RMAP_BMBT_BLOCK);

	for (uint32_t i = 0; i < len; i++) {
		t->owner[fsb + i] = owner;
		t->offset[fsb + i] = positional ? offset + i : offset;
	}
}

/* Format every AG with no used extents. */
void tu_agfs_format_all(struct tu_agfs *t)
{
	for (uint32_t a = 0; a < t->fs->geo.agcount; a++)
		CK_OK(mfs_ag_format(t->fs, a, NULL, 0, NULL, 0));
}

/* ---- checking one AG against the model ------------------------------------------------- */
struct recs {
	uint8_t *v;
	size_t n, cap, sz;
};

static int collect_rec(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	struct recs *r = priv;

	(void)cur;
	if (r->n == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 256;
		r->v = realloc(r->v, r->cap * r->sz);
		if (!r->v)
			return -ENOMEM;
	}
	memcpy(r->v + r->n * r->sz, rec, r->sz);
	r->n++;
	return 0;
}

struct blkmark {
	uint64_t *exp;        /* expected owner per agbno */
	uint64_t own;
	uint64_t count;
};

static int mark_block(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	struct blkmark *m = priv;
	uint32_t agbno = mfs_fsb_to_agbno(&cur->fs->geo, fsb);

	(void)level;
	if (m->exp[agbno] != TU_OWN_FREE)
		return -EEXIST;
	m->exp[agbno] = m->own;
	m->count++;
	return 0;
}

static int cmp_alloc_start(const void *a, const void *b)
{
	uint32_t x = mfs_get32(((const struct mfs_alloc_rec *)a)->startblock);
	uint32_t y = mfs_get32(((const struct mfs_alloc_rec *)b)->startblock);

	return x < y ? -1 : x > y;
}

/* Everything about AG `agno` that must hold between operations.  Returns the number of
 * records of each tree in nrecs[] and their heights in levels[] when asked. */
void tu_check_ag(struct tu_agfs *t, uint32_t agno, uint64_t nrecs_out[MFS_AG_NTREES],
		     unsigned levels_out[MFS_AG_NTREES])
{
	struct mfs_fs *fs = t->fs;
	const struct mfs_geom *g = &fs->geo;
	uint32_t aglen = mfs_ag_length(g, agno);
	uint64_t base = mfs_agbno_to_fsb(g, agno, 0);
	struct mfs_buf *agh_bp, *agfl_bp;
	struct mfs_agh *agh;
	struct mfs_agfl *agfl;
	struct mfs_btree_cur cur;
	uint64_t nrecs[MFS_AG_NTREES], nblocks[MFS_AG_NTREES];
	struct recs bno = { NULL, 0, 0, sizeof(struct mfs_alloc_rec) };
	struct recs cnt = { NULL, 0, 0, sizeof(struct mfs_alloc_rec) };
	struct recs rmap = { NULL, 0, 0, sizeof(struct mfs_rmap_rec) };
	uint64_t *exp = calloc(aglen, sizeof(uint64_t));
	uint8_t *isfree = calloc(aglen, 1);
	uint64_t sum = 0, longest = 0;
	uint32_t first, count;

	CK_TRUE(exp && isfree);
	CK_OK(mfs_read_agh(fs, agno, &agh_bp));
	agh = agh_bp->data;

	/* structure of every tree, and the tree blocks' owners */
	for (int tr = 0; tr < MFS_AG_NTREES; tr++) {
		struct blkmark m = { exp, tr == MFS_BT_INO ? MFS_OWN_INOBT : MFS_OWN_AG, 0 };

		mfs_ag_cur_init(&cur, fs, NULL, agno, tr, agh_bp);
		CK_OK(mfs_btree_verify(&cur, &nrecs[tr], &nblocks[tr]));
		CK_OK(mfs_btree_visit_blocks(&cur, mark_block, &m));
		CK_EQ(m.count, nblocks[tr]);
		mfs_btree_cur_release(&cur);
		if (nrecs_out)
			nrecs_out[tr] = nrecs[tr];
		if (levels_out)
			levels_out[tr] = mfs_get32(agh->levels[tr]);
	}
	CK_EQ(mfs_get32(agh->btreeblks),
	      nblocks[MFS_BT_BNO] + nblocks[MFS_BT_CNT] + nblocks[MFS_BT_RMAP] - 3);

	/* the AGFL stock */
	CK_OK(mfs_read_agfl(fs, agno, &agfl_bp));
	agfl = agfl_bp->data;
	first = mfs_get32(agh->fl_first);
	count = mfs_get32(agh->fl_count);
	CK_TRUE(count <= MFS_AGFL_SIZE_MAX && first < MFS_AGFL_SIZE_MAX);
	for (uint32_t i = 0; i < count; i++) {
		uint32_t b = mfs_get32(agfl->bno[(first + i) % MFS_AGFL_SIZE_MAX]);

		CK_TRUE(b >= MFS_AG_FIXED_BLOCKS && b < aglen);
		CK_EQ(exp[b], TU_OWN_FREE);
		exp[b] = MFS_OWN_AG;
	}
	mfs_buf_put(agfl_bp);

	/* the model's extents */
	for (uint32_t b = 0; b < aglen; b++) {
		uint64_t o = t->owner[base + b];

		if (b < MFS_AG_FIXED_BLOCKS)
			o = MFS_OWN_FS;
		if (o != TU_OWN_FREE) {
			if (exp[b] != TU_OWN_FREE)
				ck_assert_msg(0, "AG %u block %u: model owner %llx but also a tree/AGFL "
					      "block (%llx)", agno, b, (unsigned long long)o,
					      (unsigned long long)exp[b]);
			exp[b] = o;
		}
	}

	/* free space: both trees, the same records, merged, matching the header */
	mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_BNO, agh_bp);
	CK_OK(mfs_btree_query_range(&cur, NULL, NULL, collect_rec, &bno));
	mfs_btree_cur_release(&cur);
	mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_CNT, agh_bp);
	CK_OK(mfs_btree_query_range(&cur, NULL, NULL, collect_rec, &cnt));
	mfs_btree_cur_release(&cur);
	CK_EQ(bno.n, cnt.n);
	if (cnt.n)
		qsort(cnt.v, cnt.n, cnt.sz, cmp_alloc_start);
	if (bno.n)
		ck_assert_msg(!memcmp(bno.v, cnt.v, bno.n * bno.sz),
			      "AG %u: by-block and by-length trees differ", agno);
	for (size_t i = 0; i < bno.n; i++) {
		const struct mfs_alloc_rec *r = (const void *)(bno.v + i * bno.sz);
		uint32_t s = mfs_get32(r->startblock), l = mfs_get32(r->blockcount);

		if (i) {
			const struct mfs_alloc_rec *p = (const void *)(bno.v + (i - 1) * bno.sz);

			CK_TRUE(mfs_get32(p->startblock) + mfs_get32(p->blockcount) < s);
		}
		for (uint32_t b = s; b < s + l; b++) {
			if (exp[b] != TU_OWN_FREE)
				ck_assert_msg(0, "AG %u block %u: free in the trees but owned by %llx",
					      agno, b, (unsigned long long)exp[b]);
			isfree[b] = 1;
		}
		sum += l;
		if (l > longest)
			longest = l;
	}
	CK_EQ(mfs_get32(agh->freeblks), sum);
	CK_EQ(mfs_get32(agh->longest), longest);

	/* the reverse map covers exactly the used blocks, with the right owners */
	mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_RMAP, agh_bp);
	CK_OK(mfs_btree_query_range(&cur, NULL, NULL, collect_rec, &rmap));
	mfs_btree_cur_release(&cur);
	{
		uint32_t next = 0;

		for (size_t i = 0; i < rmap.n; i++) {
			const struct mfs_rmap_rec *r = (const void *)(rmap.v + i * rmap.sz);
			uint32_t s = mfs_get32(r->startblock), l = mfs_get32(r->blockcount);
			uint64_t o = mfs_get64(r->owner), off = mfs_get64(r->offset);
			int positional = o < MFS_OWN_MIN && !(off & MFS_RMAP_BMBT_BLOCK);

			CK_TRUE(s >= next);
			if (i && s == next) {
				/* adjacent records never could have been one */
				const struct mfs_rmap_rec *p = (const void *)(rmap.v + (i - 1) * rmap.sz);
				uint64_t po = mfs_get64(p->offset);
				int merge = mfs_get64(p->owner) == o &&
					    (po & ~MFS_RMAP_OFF_MASK) == (off & ~MFS_RMAP_OFF_MASK) &&
					    (positional ? po + mfs_get32(p->blockcount) == off
							: po == off);

				if (merge)
					ck_assert_msg(0, "AG %u: reverse-map records at %u and %u should "
						      "have been merged", agno,
						      mfs_get32(p->startblock), s);
			}
			for (uint32_t b = next; b < s; b++)
				if (!isfree[b])
					ck_assert_msg(0, "AG %u block %u: neither free nor in the "
						      "reverse map (expected owner %llx)", agno, b,
						      (unsigned long long)exp[b]);
			for (uint32_t b = s; b < s + l; b++) {
				if (exp[b] != o)
					ck_assert_msg(0, "AG %u block %u: reverse map says owner %llx, "
						      "expected %llx", agno, b, (unsigned long long)o,
						      (unsigned long long)exp[b]);
				if (o < MFS_OWN_MIN && t->offset[base + b] !=
				    (positional ? off + (b - s) : off))
					ck_assert_msg(0, "AG %u block %u: rmap offset %llx, expected "
						      "%llx", agno, b,
						      (unsigned long long)(off + (b - s)),
						      (unsigned long long)t->offset[base + b]);
			}
			next = s + l;
		}
		for (uint32_t b = next; b < aglen; b++)
			CK_TRUE(isfree[b]);
	}
	CK_EQ(nrecs[MFS_BT_RMAP], rmap.n);
	mfs_buf_put(agh_bp);
	free(bno.v);
	free(cnt.v);
	free(rmap.v);
	free(exp);
	free(isfree);
}

void tu_check_all(struct tu_agfs *t)
{
	for (uint32_t a = 0; a < t->fs->geo.agcount; a++)
		tu_check_ag(t, a, NULL, NULL);
}
