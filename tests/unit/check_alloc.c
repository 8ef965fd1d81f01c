/*
 * check_alloc.c — the extent allocator against a model of who owns every block: EXACT /
 * NEAR / ANY semantics, alignment, partial frees and reverse-map merging, seeded random
 * alloc/free (100k operations, transactions of 1..3 operations, some cancelled) with the
 * whole AG checked after each phase (both free-space trees record for record, the reverse
 * map block for block, header counters, mfs_btree_verify on all four trees), ENOSPC when
 * full, and a cancelled transaction leaving the image byte-for-byte unchanged.
 * Near-full AGs: small AGs filled to the brim with short extents while earlier ones are
 * freed (free space in 1-block pieces), every ENOSPC with nothing joined to the transaction
 * and sampled ones cancelled to a byte-identical image, every free succeeding, the AGs
 * checked when full and back to their fresh counts when everything is freed; and the
 * free-space trees walked back and forth across a height boundary for thousands of steps.
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

#include <time.h>

static int alloc1(struct mfs_trans *tp, enum mfs_alloc_type type, uint64_t target,
		  uint32_t minlen, uint32_t maxlen, uint32_t align, uint64_t owner,
		  uint64_t offset, uint64_t *fsb, uint32_t *len)
{
	struct mfs_alloc_args a;
	int err;

	memset(&a, 0, sizeof(a));
	a.type = type;
	a.target = target;
	a.minlen = minlen;
	a.maxlen = maxlen;
	a.align = align;
	a.owner = owner;
	a.offset = offset;
	err = mfs_alloc_extent(tp, &a);
	*fsb = a.fsb;
	*len = a.len;
	return err;
}

/* One allocation in its own transaction; the model learns it. */
static int alloc_commit(struct tu_agfs *t, enum mfs_alloc_type type, uint64_t target,
			uint32_t minlen, uint32_t maxlen, uint32_t align, uint64_t owner,
			uint64_t offset, uint64_t *fsb, uint32_t *len)
{
	struct mfs_trans *tp;
	int err;

	CK_OK(mfs_trans_alloc(t->fs, &tp));
	err = alloc1(tp, type, target, minlen, maxlen, align, owner, offset, fsb, len);
	if (err) {
		mfs_trans_cancel(tp);
		return err;
	}
	CK_OK(mfs_trans_commit(tp));
	tu_model_set(t, *fsb, *len, owner, offset);
	return 0;
}

static int free_commit(struct tu_agfs *t, uint64_t fsb, uint32_t len, uint64_t owner,
		       uint64_t offset)
{
	struct mfs_trans *tp;
	int err;

	CK_OK(mfs_trans_alloc(t->fs, &tp));
	err = mfs_free_extent(tp, fsb, len, owner, offset);
	if (err) {
		mfs_trans_cancel(tp);
		return err;
	}
	CK_OK(mfs_trans_commit(tp));
	tu_model_set(t, fsb, len, TU_OWN_FREE, 0);
	return 0;
}

static uint32_t ag_free(struct tu_agfs *t, uint32_t agno)
{
	struct mfs_buf *bp;
	uint32_t n;

	CK_OK(mfs_read_agh(t->fs, agno, &bp));
	n = mfs_get32(((struct mfs_agh *)bp->data)->freeblks);
	mfs_buf_put(bp);
	return n;
}

static uint64_t rmap_count(struct tu_agfs *t, uint32_t agno)
{
	uint64_t nrecs[MFS_AG_NTREES];

	tu_check_ag(t, agno, nrecs, NULL);
	return nrecs[MFS_BT_RMAP];
}

static uint64_t ino_of(const struct mfs_geom *g, uint32_t agno, uint32_t agbno)
{
	return mfs_agino_to_ino(g, agno, mfs_agbno_to_agino(g, agbno));
}

/* ---- a fresh AG ---------------------------------------------------------------------- */
START_TEST(test_format_fresh)
{
	struct tu_agfs t;
	uint32_t base;

	tu_agfs_open(&t, 4096, 65536, 4, 4ull * 65536 - 1000);    /* the last AG is shorter */
	tu_agfs_format_all(&t);
	tu_check_all(&t);
	base = MFS_AG_FIXED_BLOCKS + mfs_ag_format_blocks(&t.fs->geo);
	for (uint32_t a = 0; a < 4; a++)
		CK_EQ(ag_free(&t, a), mfs_ag_length(&t.fs->geo, a) - base);
	CK_EQ(rmap_count(&t, 0), 3);   /* headers, inode btree block, AG blocks + AGFL */
	tu_agfs_close(&t);
}
END_TEST

/* ---- the three kinds of allocation, alignment, partial frees, merging --------------------- */
START_TEST(test_semantics)
{
	struct tu_agfs t;
	const struct mfs_geom *g;
	uint64_t fsb, fsb2, own, own2;
	uint32_t len, len2, base;
	struct mfs_trans *tp;

	tu_agfs_open(&t, 4096, 65536, 4, 4ull * 65536);
	tu_agfs_format_all(&t);
	g = &t.fs->geo;
	base = MFS_AG_FIXED_BLOCKS + mfs_ag_format_blocks(g);
	own = ino_of(g, 1, 100);
	own2 = ino_of(g, 2, 200);

	/* EXACT: exactly there, as long as asked */
	CK_OK(alloc_commit(&t, MFS_ALLOC_EXACT, mfs_agbno_to_fsb(g, 1, 1000), 10, 20, 0, own, 0,
			   &fsb, &len));
	CK_EQ(fsb, mfs_agbno_to_fsb(g, 1, 1000));
	CK_EQ(len, 20);
	/* EXACT on used space, on the headers, and misaligned: ENOSPC */
	CK_EQ(alloc_commit(&t, MFS_ALLOC_EXACT, fsb + 5, 1, 1, 0, own, 0, &fsb2, &len2), -ENOSPC);
	CK_EQ(alloc_commit(&t, MFS_ALLOC_EXACT, mfs_agbno_to_fsb(g, 1, 1), 1, 1, 0, own, 0, &fsb2,
			   &len2), -ENOSPC);
	CK_EQ(alloc_commit(&t, MFS_ALLOC_EXACT, mfs_agbno_to_fsb(g, 1, 3001), 1, 1, 8, own, 0,
			   &fsb2, &len2), -ENOSPC);
	/* EXACT right after it, same owner, next offset: one reverse-map record */
	CK_OK(alloc_commit(&t, MFS_ALLOC_EXACT, fsb + 20, 5, 5, 0, own, 20, &fsb2, &len2));
	CK_EQ(rmap_count(&t, 1), 4);
	/* and right before it (merges with the right neighbour) */
	CK_OK(alloc_commit(&t, MFS_ALLOC_EXACT, mfs_agbno_to_fsb(g, 1, 990), 10, 10, 0, own2, 0,
			   &fsb2, &len2));
	CK_EQ(rmap_count(&t, 1), 5);
	/* a hole then filled from both sides merges three records into one */
	CK_OK(alloc_commit(&t, MFS_ALLOC_EXACT, mfs_agbno_to_fsb(g, 1, 1030), 5, 5, 0, own, 30,
			   &fsb2, &len2));
	CK_EQ(rmap_count(&t, 1), 6);
	CK_OK(alloc_commit(&t, MFS_ALLOC_EXACT, mfs_agbno_to_fsb(g, 1, 1025), 5, 5, 0, own, 25,
			   &fsb2, &len2));
	CK_EQ(rmap_count(&t, 1), 5);
	tu_check_all(&t);

	/* EXACT limited by the free extent: minlen..maxlen gives what is there */
	CK_OK(alloc_commit(&t, MFS_ALLOC_EXACT, mfs_agbno_to_fsb(g, 1, 980), 5, 50, 0, own2, 100,
			   &fsb2, &len2));
	CK_EQ(len2, 10);
	CK_EQ(alloc_commit(&t, MFS_ALLOC_EXACT, mfs_agbno_to_fsb(g, 1, 970), 11, 50, 0, own2, 200,
			   &fsb2, &len2), -ENOSPC);

	/* NEAR inside used space: the nearest free block, on either side */
	CK_OK(alloc_commit(&t, MFS_ALLOC_NEAR, mfs_agbno_to_fsb(g, 1, 1032), 1, 1, 0, own2, 300,
			   &fsb2, &len2));
	CK_EQ(fsb2, mfs_agbno_to_fsb(g, 1, 1035));
	CK_OK(alloc_commit(&t, MFS_ALLOC_NEAR, mfs_agbno_to_fsb(g, 1, 982), 1, 1, 0, own2, 301,
			   &fsb2, &len2));
	CK_EQ(fsb2, mfs_agbno_to_fsb(g, 1, 979));
	/* NEAR with alignment */
	CK_OK(alloc_commit(&t, MFS_ALLOC_NEAR, mfs_agbno_to_fsb(g, 1, 1037), 4, 4, 16, own2, 400,
			   &fsb2, &len2));
	CK_EQ(fsb2, mfs_agbno_to_fsb(g, 1, 1040));
	CK_EQ(len2, 4);
	/* ANY: the target's AG first, aligned */
	CK_OK(alloc_commit(&t, MFS_ALLOC_ANY, mfs_agbno_to_fsb(g, 3, 0), 7, 64, 32, own2, 500,
			   &fsb2, &len2));
	CK_EQ(mfs_fsb_to_agno(g, fsb2), 3);
	CK_EQ(mfs_fsb_to_agbno(g, fsb2) % 32, 0);
	CK_EQ(len2, 64);
	tu_check_all(&t);

	/* partial frees: middle (splits the record), head, tail; offsets follow */
	CK_EQ(rmap_count(&t, 1), 9);
	CK_OK(free_commit(&t, mfs_agbno_to_fsb(g, 1, 1010), 3, own, 10));
	CK_EQ(rmap_count(&t, 1), 10);
	CK_OK(free_commit(&t, mfs_agbno_to_fsb(g, 1, 1000), 2, own, 0));
	CK_OK(free_commit(&t, mfs_agbno_to_fsb(g, 1, 1033), 2, own, 33));
	tu_check_all(&t);

	/* wrong owner, wrong offset, double free, free space: corruption, nothing changed */
	mfs_log_quiet();
	CK_EQ(free_commit(&t, mfs_agbno_to_fsb(g, 1, 1015), 1, own2, 15), -EFSCORRUPTED);
	CK_EQ(free_commit(&t, mfs_agbno_to_fsb(g, 1, 1015), 1, own, 16), -EFSCORRUPTED);
	CK_EQ(free_commit(&t, mfs_agbno_to_fsb(g, 1, 1010), 1, own, 10), -EFSCORRUPTED);
	CK_EQ(free_commit(&t, mfs_agbno_to_fsb(g, 1, 5000), 4, own, 0), -EFSCORRUPTED);
	CK_EQ(free_commit(&t, mfs_agbno_to_fsb(g, 1, 1), 1, own, 0), -EINVAL);
	mfs_log_set_level(MFS_LOG_INFO);
	tu_check_all(&t);

	/* bad arguments */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_EQ(alloc1(tp, MFS_ALLOC_ANY, 0, 0, 1, 0, own, 0, &fsb2, &len2), -EINVAL);
	CK_EQ(alloc1(tp, MFS_ALLOC_ANY, 0, 2, 1, 0, own, 0, &fsb2, &len2), -EINVAL);
	CK_EQ(alloc1(tp, MFS_ALLOC_ANY, 0, 1, 1, 0, MFS_OWN_NULL, 0, &fsb2, &len2), -EINVAL);
	CK_EQ(alloc1(tp, MFS_ALLOC_ANY, 0, 1, 1, 0, MFS_OWN_LOG, 5, &fsb2, &len2), -EINVAL);
	CK_EQ(alloc1(tp, MFS_ALLOC_ANY, g->dblocks, 1, 1, 0, own, 0, &fsb2, &len2), -EINVAL);
	CK_EQ(mfs_trans_nbufs(tp), 0);
	mfs_trans_cancel(tp);
	(void)base;
	tu_agfs_close(&t);
}
END_TEST

/* ---- seeded random allocation and freeing ------------------------------------------------ */
struct ext {
	uint64_t fsb;
	uint32_t len;             /* 0: tombstone */
	uint64_t owner, offset;
};

enum { U_ALLOC, U_FREE };
struct undo {
	int kind;
	size_t idx;               /* ext changed (FREE) or added (ALLOC) */
	struct ext old;           /* FREE: the ext before */
	size_t pushed;            /* FREE: index of a right piece pushed, or SIZE_MAX */
	uint64_t fsb;             /* FREE: the piece freed */
	uint32_t len;
	uint64_t owner, offset;
};

struct rnd {
	struct tu_agfs *t;
	struct ext *e;
	size_t n, cap, live;
	uint64_t owners[8];
	uint64_t next_off[8];
	uint64_t nalloc, nfree, nenospc, ncancel, blocks_used, blocks_total;
	uint32_t lenmax;          /* allocation lengths 1..lenmax */
	unsigned free1;           /* percent of frees that free a single block */
	uint64_t seed;            /* named in failure messages */
};

static size_t ext_push(struct rnd *r, struct ext x)
{
	if (r->n == r->cap) {
		r->cap = r->cap ? 2 * r->cap : 1024;
		r->e = realloc(r->e, r->cap * sizeof(*r->e));
		CK_TRUE(r->e != NULL);
	}
	r->e[r->n] = x;
	r->live++;
	return r->n++;
}

static void ext_compact(struct rnd *r)
{
	size_t j = 0;

	for (size_t i = 0; i < r->n; i++)
		if (r->e[i].len)
			r->e[j++] = r->e[i];
	r->n = j;
	CK_EQ(r->n, r->live);
}

static uint64_t off_add(uint64_t owner, uint64_t off, uint32_t n)
{
	return owner >= MFS_OWN_MIN ? off : off + n;
}

/*
 * One allocation for owner r->owners[oi] (or `owner`, continuing an extent) inside tp: 1 and
 * the model and undo record updated, 0 on ENOSPC, which must leave tp exactly as it was
 * (no buffer joined), or a negative errno.
 */
static int rnd_do_alloc(struct rnd *r, struct mfs_trans *tp, struct undo *u,
			enum mfs_alloc_type type, uint64_t target, uint32_t minlen, uint32_t maxlen,
			uint32_t align, uint32_t oi, uint64_t owner)
{
	const struct mfs_geom *g = &r->t->fs->geo;
	unsigned nbufs = mfs_trans_nbufs(tp);
	uint64_t offset, fsb;
	uint32_t len;
	int err;

	offset = owner >= MFS_OWN_MIN ? 0 : r->next_off[oi];
	if (target >= g->dblocks)
		target = 0;
	err = alloc1(tp, type, target, minlen, maxlen, align, owner, offset, &fsb, &len);
	if (err == -ENOSPC) {
		if (mfs_trans_nbufs(tp) != nbufs)
			ck_assert_msg(0, "ENOSPC (type %d, target %llu, %u..%u blocks, align %u) "
				      "with %u buffers joined to the transaction, %u before "
				      "(seed %llu)", (int)type, (unsigned long long)target, minlen,
				      maxlen, align, mfs_trans_nbufs(tp), nbufs,
				      (unsigned long long)r->seed);
		r->nenospc++;
		return 0;
	}
	if (err)
		return err;
	/* what the allocator promised */
	CK_TRUE(len >= minlen && len <= maxlen);
	CK_EQ(mfs_fsb_to_agno(g, fsb), mfs_fsb_to_agno(g, fsb + len - 1));
	CK_TRUE(mfs_fsb_to_agbno(g, fsb) >= MFS_AG_FIXED_BLOCKS);
	if (align)
		CK_EQ(mfs_fsb_to_agbno(g, fsb) % align, 0);
	if (type == MFS_ALLOC_EXACT)
		CK_EQ(fsb, target);
	for (uint32_t i = 0; i < len; i++)
		if (r->t->owner[fsb + i] != TU_OWN_FREE)
			ck_assert_msg(0, "allocated block %llu is already owned by %llx",
				      (unsigned long long)(fsb + i),
				      (unsigned long long)r->t->owner[fsb + i]);
	tu_model_set(r->t, fsb, len, owner, offset);
	if (oi < 8 && owner < MFS_OWN_MIN)
		r->next_off[oi] = offset + len + tu_rand_below(2) * 1000;
	u->kind = U_ALLOC;
	u->idx = ext_push(r, (struct ext){ fsb, len, owner, offset });
	r->blocks_used += len;
	r->nalloc++;
	return 1;
}

static int rnd_alloc(struct rnd *r, struct mfs_trans *tp, struct undo *u)
{
	const struct mfs_geom *g = &r->t->fs->geo;
	uint32_t k = tu_rand_below(100), oi = tu_rand_below(8);
	enum mfs_alloc_type type = k < 20 ? MFS_ALLOC_EXACT : k < 60 ? MFS_ALLOC_NEAR
							 : MFS_ALLOC_ANY;
	uint32_t minlen = 1 + tu_rand_below(r->lenmax);
	uint32_t maxlen = minlen + tu_rand_below(r->lenmax + 1 - minlen);
	uint32_t align = tu_rand_below(4) == 0 ? 1u << (1 + tu_rand_below(4)) : 0;
	uint64_t target = tu_rand() % g->dblocks, owner = r->owners[oi];

	if (type == MFS_ALLOC_EXACT && r->live && tu_rand_below(2)) {
		/* right after an existing extent, continuing its offsets: rmap merges */
		const struct ext *x = &r->e[tu_rand_below((uint32_t)r->n)];

		if (x->len && mfs_fsb_to_agno(g, x->fsb + x->len) == mfs_fsb_to_agno(g, x->fsb)) {
			target = x->fsb + x->len;
			owner = x->owner;
			align = 0;
			for (oi = 0; oi < 8 && r->owners[oi] != owner; oi++)
				;
		}
	}
	return rnd_do_alloc(r, tp, u, type, target, minlen, maxlen, align, oi, owner);
}

static int rnd_free(struct rnd *r, struct mfs_trans *tp, struct undo *u)
{
	struct ext *x = NULL;
	size_t idx = 0;
	uint32_t pf, pl, mode;
	int err;

	for (int tries = 0; tries < 16 && r->n; tries++) {
		idx = tu_rand_below((uint32_t)r->n);
		if (r->e[idx].len) {
			x = &r->e[idx];
			break;
		}
	}
	if (!x)
		return 0;
	mode = x->len >= 3 ? tu_rand_below(5) : 0;
	if (r->free1 && tu_rand_below(100) < r->free1)
		mode = 5;
	switch (mode) {
	case 5:                               /* one block */
		pf = tu_rand_below(x->len), pl = 1;
		break;
	case 1:                               /* head */
		pf = 0, pl = 1 + tu_rand_below(x->len - 1);
		break;
	case 2:                               /* tail */
		pl = 1 + tu_rand_below(x->len - 1), pf = x->len - pl;
		break;
	case 3:                               /* middle */
		pf = 1 + tu_rand_below(x->len - 2);
		pl = 1 + tu_rand_below(x->len - pf - 1);
		break;
	default:                              /* whole */
		pf = 0, pl = x->len;
		break;
	}
	err = mfs_free_extent(tp, x->fsb + pf, pl, x->owner, off_add(x->owner, x->offset, pf));
	if (err)
		ck_assert_msg(0, "freeing %llu+%u of owner %llx offset 0x%llx (allocated by this "
			      "test): %s (seed %llu)", (unsigned long long)(x->fsb + pf), pl,
			      (unsigned long long)x->owner,
			      (unsigned long long)off_add(x->owner, x->offset, pf), strerror(-err),
			      (unsigned long long)r->seed);
	u->kind = U_FREE;
	u->idx = idx;
	u->old = *x;
	u->pushed = SIZE_MAX;
	u->fsb = x->fsb + pf;
	u->len = pl;
	u->owner = x->owner;
	u->offset = off_add(x->owner, x->offset, pf);
	tu_model_set(r->t, u->fsb, pl, TU_OWN_FREE, 0);
	if (pl == x->len) {
		x->len = 0;
		r->live--;
	} else if (pf == 0) {
		x->fsb += pl;
		x->offset = off_add(x->owner, x->offset, pl);
		x->len -= pl;
	} else if (pf + pl == x->len) {
		x->len = pf;
	} else {
		struct ext right = { x->fsb + pf + pl, x->len - pf - pl, x->owner,
				     off_add(x->owner, x->offset, pf + pl) };

		x->len = pf;
		u->pushed = ext_push(r, right);
	}
	r->blocks_used -= pl;
	r->nfree++;
	return 1;
}

static void rnd_undo(struct rnd *r, const struct undo *u)
{
	if (u->kind == U_ALLOC) {
		struct ext *x = &r->e[u->idx];

		tu_model_set(r->t, x->fsb, x->len, TU_OWN_FREE, 0);
		r->blocks_used -= x->len;
		x->len = 0;
		r->live--;
		return;
	}
	if (u->pushed != SIZE_MAX) {
		r->e[u->pushed].len = 0;
		r->live--;
	}
	if (!r->e[u->idx].len)
		r->live++;
	r->e[u->idx] = u->old;
	tu_model_set(r->t, u->fsb, u->len, u->owner, u->offset);
	r->blocks_used += u->len;
}

/* Free everything the model holds, then the AGs must be back to their fresh state. */
static void rnd_free_all(struct rnd *r)
{
	for (size_t i = 0; i < r->n; i++) {
		struct ext *x = &r->e[i];

		if (!x->len)
			continue;
		CK_OK(free_commit(r->t, x->fsb, x->len, x->owner, x->offset));
		x->len = 0;
		r->live--;
	}
	r->n = 0;
	r->blocks_used = 0;
}

static void run_random(uint32_t bs, uint32_t agblocks, uint32_t lenmax, unsigned nops)
{
	struct tu_agfs t;
	struct rnd r;
	struct undo u[3];
	char what[64];
	uint64_t seed;
	const struct mfs_geom *g;
	double t0 = 0;
	struct timespec ts;

	snprintf(what, sizeof(what), "check_alloc random, %u-byte blocks", bs);
	seed = tu_seed("MFS_SEED", what);
	tu_srand(seed);
	tu_agfs_open(&t, bs, agblocks, 4, 4ull * agblocks);
	tu_agfs_format_all(&t);
	g = &t.fs->geo;
	memset(&r, 0, sizeof(r));
	r.t = &t;
	r.seed = seed;
	r.lenmax = lenmax;
	r.blocks_total = g->dblocks;
	for (int i = 0; i < 8; i++)
		r.owners[i] = i == 7 ? MFS_OWN_INODES : ino_of(g, (uint32_t)i % 4, 64 + 64 * i);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	t0 = ts.tv_sec + ts.tv_nsec / 1e9;

	for (unsigned op = 0; op < nops;) {
		struct mfs_trans *tp;
		unsigned nu = 0, k = 1 + tu_rand_below(3);
		int err = 0;

		CK_OK(mfs_trans_alloc(t.fs, &tp));
		for (unsigned i = 0; i < k && !err; i++, op++) {
			double util = (double)r.blocks_used / (double)r.blocks_total;
			int want_alloc = tu_rand_below(100) < (util < 0.7 ? 60u : 40u);
			int done;

			memset(&u[nu], 0, sizeof(u[nu]));
			done = want_alloc || !r.live ? rnd_alloc(&r, tp, &u[nu])
						     : rnd_free(&r, tp, &u[nu]);
			if (done < 0)
				err = done;
			else if (done)
				nu++;
		}
		if (err)
			ck_assert_msg(0, "op %u: %s (seed %llu)", op, strerror(-err),
				      (unsigned long long)seed);
		if (tu_rand_below(20) == 0) {
			mfs_trans_cancel(tp);
			while (nu)
				rnd_undo(&r, &u[--nu]);
			r.ncancel++;
		} else {
			CK_OK(mfs_trans_commit(tp));
		}
		if (r.n > 2 * r.live + 1024)
			ext_compact(&r);
		if (op % 10000 < k)
			tu_check_all(&t);
	}
	tu_check_all(&t);
	clock_gettime(CLOCK_MONOTONIC, &ts);
	fprintf(stderr, "check_alloc random: %u ops in %.2f s: %llu allocs, %llu frees, %llu "
		"ENOSPC, %llu cancelled transactions, %llu blocks in use at the end\n", nops,
		ts.tv_sec + ts.tv_nsec / 1e9 - t0, (unsigned long long)r.nalloc,
		(unsigned long long)r.nfree, (unsigned long long)r.nenospc,
		(unsigned long long)r.ncancel, (unsigned long long)r.blocks_used);
	for (uint32_t a = 0; a < g->agcount; a++) {
		unsigned levels[MFS_AG_NTREES];
		uint64_t nrecs[MFS_AG_NTREES];

		tu_check_ag(&t, a, nrecs, levels);
		fprintf(stderr, "  AG %u: %llu free extents (height %u/%u), %llu rmap records "
			"(height %u)\n", a, (unsigned long long)nrecs[MFS_BT_BNO],
			levels[MFS_BT_BNO], levels[MFS_BT_CNT], (unsigned long long)nrecs[MFS_BT_RMAP],
			levels[MFS_BT_RMAP]);
	}
	rnd_free_all(&r);
	tu_check_all(&t);
	/* everything free again: only headers, tree blocks and the AGFL stock are used */
	for (uint32_t a = 0; a < g->agcount; a++)
		CK_TRUE(ag_free(&t, a) >= mfs_ag_length(g, a) - 64);
	free(r.e);
	tu_agfs_close(&t);
}

START_TEST(test_random)
{
	run_random(4096, 65536, 64, UNDER_ASAN ? 20000 : 100000);
}
END_TEST

/* Small blocks and short extents: the trees get three levels under random load. */
START_TEST(test_random_1k)
{
	run_random(1024, 65536, 8, UNDER_ASAN ? 20000 : 100000);
}
END_TEST

/* ---- full filesystem, and a cancelled transaction changes nothing ------------------------ */
START_TEST(test_enospc_and_cancel)
{
	struct tu_agfs t;
	const struct mfs_geom *g;
	struct mfs_trans *tp;
	struct ext *e = NULL;
	size_t n = 0, cap = 0;
	uint64_t fsb, own;
	uint32_t len, crc0, crc1, freeblks0[4];
	int err;

	tu_srand(tu_seed("MFS_SEED", "check_alloc"));
	tu_agfs_open(&t, 4096, 2048, 4, 4ull * 2048);
	tu_agfs_format_all(&t);
	g = &t.fs->geo;
	own = ino_of(g, 0, 300);
	for (uint32_t a = 0; a < 4; a++)
		freeblks0[a] = ag_free(&t, a);

	/* fill with single-block NEAR allocations alternating with random-length ANY ones */
	for (unsigned i = 0;; i++) {
		uint32_t maxlen = i % 2 ? 1 : 1 + tu_rand_below(64);

		err = alloc_commit(&t, i % 2 ? MFS_ALLOC_NEAR : MFS_ALLOC_ANY, tu_rand() % g->dblocks,
				   1, maxlen, 0, own, (uint64_t)i << 8, &fsb, &len);
		if (err == -ENOSPC)
			break;
		CK_OK(err);
		if (n == cap) {
			cap = cap ? 2 * cap : 256;
			e = realloc(e, cap * sizeof(*e));
			CK_TRUE(e != NULL);
		}
		e[n++] = (struct ext){ fsb, len, own, (uint64_t)i << 8 };
	}
	tu_check_all(&t);
	/* full: every AG down to its reserve for the free list, and ENOSPC is clean */
	for (uint32_t a = 0; a < 4; a++)
		CK_TRUE(ag_free(&t, a) <= 2 * MFS_AGFL_SIZE_MAX);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_EQ(alloc1(tp, MFS_ALLOC_ANY, 0, 1, 1, 0, own, 0, &fsb, &len), -ENOSPC);
	CK_EQ(alloc1(tp, MFS_ALLOC_NEAR, 5000, 1, 8, 0, own, 0, &fsb, &len), -ENOSPC);
	CK_EQ(mfs_trans_nbufs(tp), 0);
	mfs_trans_cancel(tp);

	/* free every other extent: fragmented free space */
	for (size_t i = 0; i < n; i += 2) {
		CK_OK(free_commit(&t, e[i].fsb, e[i].len, e[i].owner, e[i].offset));
		e[i].len = 0;
	}
	tu_check_all(&t);

	/* a big transaction, then cancelled: the image is byte-for-byte what it was */
	crc0 = tu_image_crc(t.fs, t.path);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (size_t i = 1; i < n; i += 4) {
		CK_OK(mfs_free_extent(tp, e[i].fsb, e[i].len, e[i].owner, e[i].offset));
	}
	for (int i = 0; i < 200; i++) {
		err = alloc1(tp, i % 3 ? MFS_ALLOC_NEAR : MFS_ALLOC_ANY, tu_rand() % g->dblocks, 1,
			     1 + tu_rand_below(16), i % 5 ? 0 : 4, own, 1ull << 40 | (uint64_t)i << 8,
			     &fsb, &len);
		CK_TRUE(err == 0 || err == -ENOSPC);
	}
	CK_TRUE(mfs_trans_nbufs(tp) > 10);
	mfs_trans_cancel(tp);
	crc1 = tu_image_crc(t.fs, t.path);
	CK_EQ(crc0, crc1);
	tu_check_all(&t);

	/* also after an error in the middle: a double free, cancelled */
	mfs_log_quiet();
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_free_extent(tp, e[1].fsb, e[1].len, e[1].owner, e[1].offset));
	CK_EQ(mfs_free_extent(tp, e[1].fsb, e[1].len, e[1].owner, e[1].offset), -EFSCORRUPTED);
	mfs_trans_cancel(tp);
	mfs_log_set_level(MFS_LOG_INFO);
	CK_EQ(tu_image_crc(t.fs, t.path), crc0);

	/* free the rest: all space comes back */
	for (size_t i = 0; i < n; i++)
		if (e[i].len)
			CK_OK(free_commit(&t, e[i].fsb, e[i].len, e[i].owner, e[i].offset));
	tu_check_all(&t);
	for (uint32_t a = 0; a < 4; a++)
		CK_TRUE(ag_free(&t, a) + MFS_AGFL_SIZE_MAX >= freeblks0[a]);
	free(e);
	tu_agfs_close(&t);
}
END_TEST

/* ---- the AG free list running short ---------------------------------------------------- */
/* Take blocks off AG agno's free list (committed), leaving `left`; the model keeps them as
 * the AG's own blocks (they stay MFS_OWN_AG in the reverse map).  Returns need. */
static uint32_t agfl_drain(struct tu_agfs *t, uint32_t agno, uint32_t left)
{
	struct mfs_trans *tp;
	struct mfs_buf *bp;
	struct mfs_agh *agh;
	uint32_t need, b;

	CK_OK(mfs_trans_alloc(t->fs, &tp));
	CK_OK(mfs_trans_lock_ag(tp, agno, 0));
	CK_OK(mfs_read_agh(t->fs, agno, &bp));
	agh = bp->data;
	need = mfs_agfl_need(t->fs, agh);
	while (mfs_get32(agh->fl_count) > left) {
		CK_OK(mfs_agfl_get(tp, agno, bp, &b));
		tu_model_set(t, mfs_agbno_to_fsb(&t->fs->geo, agno, b), 1, MFS_OWN_AG, 0);
	}
	mfs_buf_put(bp);
	CK_OK(mfs_trans_commit(tp));
	return need;
}

/*
 * Regression: the free list short of need, and the only extent that can hold the request
 * is also the only one that can refill the list in one go (the list is emptied by hand).  The refill used to eat that
 * extent, the second search then failed, and ENOSPC came back with the transaction
 * already changed.  Now the refill leaves the chosen extent alone and the allocation
 * succeeds there.
 */
START_TEST(test_refill_spares_choice)
{
	struct tu_agfs t;
	const struct mfs_geom *g;
	struct mfs_trans *tp;
	uint64_t fsb, e, own, pos;
	uint32_t len, elen, resv, need;
	int err;

	tu_agfs_open(&t, 4096, 2048, 1, 2048);
	tu_agfs_format_all(&t);
	g = &t.fs->geo;
	own = ino_of(g, 0, 300);
	/* everything allocatable as one extent; the reserve stays free at the AG's end */
	CK_OK(alloc_commit(&t, MFS_ALLOC_ANY, 0, 1, 2048, 0, own, 0, &e, &elen));
	resv = ag_free(&t, 0);
	CK_TRUE(elen > 200 && resv > 0);
	/* free 20 pieces of 6 blocks and one of 10 (A), each followed by a used block */
	pos = e;
	for (int i = 0; i < 20; i++, pos += 7)
		CK_OK(free_commit(&t, pos, 6, own, pos - e));
	CK_OK(free_commit(&t, pos, 10, own, pos - e));
	/* then take the reserve: free space is 20 x 6 blocks and A */
	CK_OK(alloc_commit(&t, MFS_ALLOC_EXACT, e + elen, resv, resv, 0, own, elen, &fsb, &len));
	CK_EQ(fsb, e + elen);
	CK_EQ(ag_free(&t, 0), 130);
	/* the list empty: a refill wants `need` (> 6) blocks, and only A holds that many */
	need = agfl_drain(&t, 0, 0);
	CK_TRUE(need > 6 && need <= 10);
	tu_check_all(&t);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	err = alloc1(tp, MFS_ALLOC_ANY, 0, 10, 10, 0, ino_of(g, 0, 400), 0, &fsb, &len);
	if (err == -ENOSPC)
		ck_assert_msg(mfs_trans_nbufs(tp) == 0, "ENOSPC after changing %u buffers",
			      mfs_trans_nbufs(tp));
	CK_OK(err);
	CK_EQ(fsb, pos);
	CK_EQ(len, 10);
	CK_OK(mfs_trans_commit(tp));
	tu_model_set(&t, fsb, len, ino_of(g, 0, 400), 0);
	tu_check_all(&t);
	tu_agfs_close(&t);
}
END_TEST

/*
 * Regression: trouble in the middle of an allocation is not "AG full".  AG 0's header
 * claims 100 more free blocks than its trees hold and its free list is empty, so the search
 * finds a block but stocking the list runs dry half-way.  That used to be ENOSPC, and the
 * allocator went on to AG 1 and succeeded, leaving AG 0 half-changed in a transaction the
 * caller would commit.  Now it is -EFSCORRUPTED and a cancel restores everything.  An
 * empty free list asked for a block in the middle of a change is -EFSCORRUPTED as well.
 */
START_TEST(test_midway_trouble_not_enospc)
{
	struct tu_agfs t;
	const struct mfs_geom *g;
	struct mfs_trans *tp;
	struct mfs_buf *bp;
	struct mfs_agh *agh;
	uint64_t fsb, e, own;
	uint32_t len, elen, resv, b, crc0;

	tu_agfs_open(&t, 4096, 2048, 2, 2 * 2048);
	tu_agfs_format_all(&t);
	g = &t.fs->geo;
	own = ino_of(g, 0, 300);
	CK_OK(alloc_commit(&t, MFS_ALLOC_ANY, 0, 1, 2048, 0, own, 0, &e, &elen));
	CK_EQ(mfs_fsb_to_agno(g, e), 0);
	resv = ag_free(&t, 0);
	CK_TRUE(resv > 3);

	/* the header lies: 100 blocks more than the trees hold */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_trans_lock_ag(tp, 0, 0));
	CK_OK(mfs_read_agh(t.fs, 0, &bp));
	CK_OK(mfs_trans_modify(tp, bp));
	agh = bp->data;
	mfs_put32(agh->freeblks, mfs_get32(agh->freeblks) + 100);
	mfs_buf_put(bp);
	CK_OK(mfs_trans_commit(tp));
	/* leave 3 blocks in the trees (the lie lets the allocator take the reserve) */
	CK_OK(alloc_commit(&t, MFS_ALLOC_EXACT, e + elen, resv - 3, resv - 3, 0, own, elen, &fsb,
			   &len));
	CK_EQ(len, resv - 3);
	/* the empty list, asked for a block inside a change */
	agfl_drain(&t, 0, 0);
	mfs_log_quiet();
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_trans_lock_ag(tp, 0, 0));
	CK_OK(mfs_read_agh(t.fs, 0, &bp));
	CK_EQ(mfs_agfl_get(tp, 0, bp, &b), -EFSCORRUPTED);
	mfs_buf_put(bp);
	mfs_trans_cancel(tp);
	mfs_log_set_level(MFS_LOG_INFO);

	crc0 = tu_image_crc(t.fs, t.path);
	mfs_log_quiet();
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_EQ(alloc1(tp, MFS_ALLOC_ANY, 0, 1, 1, 0, own, 0, &fsb, &len), -EFSCORRUPTED);
	mfs_trans_cancel(tp);
	mfs_log_set_level(MFS_LOG_INFO);
	CK_EQ(tu_image_crc(t.fs, t.path), crc0);
	tu_check_ag(&t, 1, NULL, NULL);
	tu_agfs_close(&t);
}
END_TEST

/* ---- near-full, fragmented AGs ----------------------------------------------------------- */
/* The header fields the near-full tests follow. */
struct agstate {
	uint32_t freeblks, fl_count, btreeblks;
	uint32_t levels[MFS_AG_NTREES];
};

static void ag_state(struct tu_agfs *t, uint32_t agno, struct agstate *s)
{
	struct mfs_buf *bp;
	const struct mfs_agh *agh;

	CK_OK(mfs_read_agh(t->fs, agno, &bp));
	agh = bp->data;
	s->freeblks = mfs_get32(agh->freeblks);
	s->fl_count = mfs_get32(agh->fl_count);
	s->btreeblks = mfs_get32(agh->btreeblks);
	for (int i = 0; i < MFS_AG_NTREES; i++)
		s->levels[i] = mfs_get32(agh->levels[i]);
	mfs_buf_put(bp);
}

/*
 * Everything freed: each AG holds only its headers, tree blocks and free-list stock again.
 * Free blocks, list blocks and tree blocks beyond the roots add up to what the fresh AG
 * had (nothing leaked, nothing counted twice); the list is back under its trim limit, so
 * free space is within one list of the fresh AG's; tu_check_all (run by the caller) has
 * already held the reverse map to a model in which every block is free.
 */
static void check_back_to_format(struct tu_agfs *t, const struct agstate *fresh)
{
	for (uint32_t a = 0; a < t->fs->geo.agcount; a++) {
		struct agstate s;

		ag_state(t, a, &s);
		CK_EQ(s.freeblks + s.fl_count + s.btreeblks,
		      fresh[a].freeblks + fresh[a].fl_count + fresh[a].btreeblks);
		CK_TRUE(s.freeblks + MFS_AGFL_SIZE_MAX >= fresh[a].freeblks);
		CK_EQ(s.levels[MFS_BT_INO], fresh[a].levels[MFS_BT_INO]);
	}
}

/* Per-run counters of the near-full driver. */
struct brim_stats {
	uint64_t crc_tx, crc_tx_enospc;   /* CRC-checked cancelled transactions, with ENOSPC */
	unsigned crc_budget;
	int last_enospc;                  /* the last transaction met ENOSPC */
};

/*
 * `nops` random operations in transactions of 1..3: an allocation (1..lenmax blocks, EXACT /
 * NEAR / ANY, a quarter aligned) with probability palloc %, else a free of (part of) an
 * earlier extent.  Every allocation succeeds or is ENOSPC with no buffer joined
 * (rnd_do_alloc); every free succeeds (rnd_free).  One transaction in 20 is cancelled; and
 * while the AGs are nearly full (over 90 % used, the last transaction met ENOSPC) one in 6
 * is a CRC probe: the image CRC before it, cancelled at the end, and the flushed image must
 * be byte-identical.
 */
static void brim_ops(struct rnd *r, struct brim_stats *st, unsigned nops, unsigned palloc)
{
	struct tu_agfs *t = r->t;
	struct undo u[3];

	for (unsigned op = 0; op < nops;) {
		struct mfs_trans *tp;
		unsigned nu = 0, k = 1 + tu_rand_below(3);
		uint64_t enospc0 = r->nenospc;
		int probe = st->last_enospc && st->crc_budget &&
			    r->blocks_used * 10 > r->blocks_total * 9 && tu_rand_below(6) == 0;
		uint32_t crc0 = 0;

		if (probe) {
			crc0 = tu_image_crc(t->fs, t->path);
			st->crc_budget--;
		}
		CK_OK(mfs_trans_alloc(t->fs, &tp));
		for (unsigned i = 0; i < k; i++, op++) {
			int done;

			memset(&u[nu], 0, sizeof(u[nu]));
			done = tu_rand_below(100) < palloc || !r->live ? rnd_alloc(r, tp, &u[nu])
								      : rnd_free(r, tp, &u[nu]);
			if (done < 0)
				ck_assert_msg(0, "op %u: %s (seed %llu)", op, strerror(-done),
					      (unsigned long long)r->seed);
			nu += (unsigned)done;
		}
		if (probe || tu_rand_below(20) == 0) {
			mfs_trans_cancel(tp);
			while (nu)
				rnd_undo(r, &u[--nu]);
			r->ncancel++;
			if (probe) {
				uint32_t crc1 = tu_image_crc(t->fs, t->path);

				if (crc1 != crc0)
					ck_assert_msg(0, "op %u: image changed by a cancelled transaction"
						      " (%s ENOSPC): crc %08x, was %08x (seed %llu)", op,
						      r->nenospc > enospc0 ? "with" : "without", crc1,
						      crc0, (unsigned long long)r->seed);
				st->crc_tx++;
				st->crc_tx_enospc += r->nenospc > enospc0;
			}
		} else {
			CK_OK(mfs_trans_commit(tp));
		}
		st->last_enospc = r->nenospc > enospc0;
		if (r->n > 2 * r->live + 1024)
			ext_compact(r);
		if (op % 4096 < k)
			tu_check_all(t);
	}
}

/*
 * Fill the last corners: single-block ANY allocations (which try every AG), and when one is
 * ENOSPC, NEAR ones at a random block of each AG (the AG-full decision depends on the
 * extent the search picked, which differs between the kinds), until all of them are
 * ENOSPC.  Then a CRC-checked transaction asks each AG for one block NEAR a random target,
 * EXACT at a random block, and aligned: all ENOSPC with no buffer joined (a request that is
 * still served takes its block and the check starts again), and the cancel leaves the image
 * byte-identical.
 */
static void brim_fill_last(struct rnd *r)
{
	struct tu_agfs *t = r->t;
	const struct mfs_geom *g = &t->fs->geo;
	struct mfs_trans *tp;
	struct undo u;
	uint32_t crc0;
	int done;

	do {
		CK_OK(mfs_trans_alloc(t->fs, &tp));
		done = rnd_do_alloc(r, tp, &u, MFS_ALLOC_ANY, tu_rand() % g->dblocks, 1, 1, 0,
				    0, r->owners[0]);
		for (uint32_t a = 0; !done && a < g->agcount; a++)
			done = rnd_do_alloc(r, tp, &u, MFS_ALLOC_NEAR,
					    mfs_agbno_to_fsb(g, a, tu_rand_below(mfs_ag_length(g, a))),
					    1, 1, 0, 0, r->owners[0]);
		CK_TRUE(done >= 0);
		if (done)
			CK_OK(mfs_trans_commit(tp));
		else
			mfs_trans_cancel(tp);
	} while (done);

	/*
	 * Whether an AG counts as full depends on the extent the search picks for the target
	 * (the free-list refill must avoid it), so a request at another target may still be
	 * served.  Each such success takes a block and the round starts again (bounded by
	 * the free space); the final round must be ENOSPC for every kind in every AG.
	 */
	for (unsigned round = 0;; round++) {
		int got = 0;

		CK_TRUE(round < 100000);
		crc0 = tu_image_crc(t->fs, t->path);
		CK_OK(mfs_trans_alloc(t->fs, &tp));
		for (uint32_t a = 0; !got && a < g->agcount; a++) {
			uint64_t base = mfs_agbno_to_fsb(g, a, 0);
			uint32_t aglen = mfs_ag_length(g, a);
			struct {
				enum mfs_alloc_type type;
				uint32_t align;
			} q[3] = { { MFS_ALLOC_NEAR, 0 }, { MFS_ALLOC_EXACT, 0 },
				   { MFS_ALLOC_ANY, 4 } };

			for (int i = 0; !got && i < 3; i++) {
				done = rnd_do_alloc(r, tp, &u, q[i].type, base + tu_rand_below(aglen),
						    1, 1, q[i].align, 1, r->owners[1]);
				if (done < 0)
					ck_assert_msg(0, "AG %u full, a 1-block request (type %d): %d "
						      "(seed %llu)", a, (int)q[i].type, done,
						      (unsigned long long)r->seed);
				got = done > 0;
			}
		}
		if (got) {
			CK_OK(mfs_trans_commit(tp));
			continue;
		}
		CK_EQ(mfs_trans_nbufs(tp), 0);
		mfs_trans_cancel(tp);
		CK_EQ(tu_image_crc(t->fs, t->path), crc0);
		break;
	}
}

/* Report the full AGs; they must be full: little free space left, in small pieces. */
static void brim_report(struct rnd *r, const char *when)
{
	struct tu_agfs *t = r->t;

	tu_check_all(t);
	for (uint32_t a = 0; a < t->fs->geo.agcount; a++) {
		uint64_t nrecs[MFS_AG_NTREES];
		unsigned levels[MFS_AG_NTREES];
		struct agstate s;

		tu_check_ag(t, a, nrecs, levels);
		ag_state(t, a, &s);
		fprintf(stderr, "  %s, AG %u: %u blocks free in %llu extents (bno/cnt height "
			"%u/%u), list %u, %llu rmap records (height %u)\n", when, a, s.freeblks,
			(unsigned long long)nrecs[MFS_BT_BNO], levels[MFS_BT_BNO],
			levels[MFS_BT_CNT], s.fl_count, (unsigned long long)nrecs[MFS_BT_RMAP],
			levels[MFS_BT_RMAP]);
		CK_TRUE(s.freeblks <= 2 * MFS_AGFL_SIZE_MAX);
	}
}

/*
 * Frees in a full AG whose free list is short.  An operation may begin with the list at
 * exactly need (no refill) and take from it whatever its splits cost; at the brim the
 * free-space trees are single leaves far from full, so only the reverse map can split:
 * every level and a new root, rmap height + 1 blocks.  A free may therefore find the list
 * that far under need, and its refill must come from the reserve (R) the allocations left,
 * which at the brim is 1-block pieces, every one of them costing a reverse-map insert.
 * For each AG, in one transaction: the list drained to need - (rmap height + 1), then single
 * blocks of a few extents freed (all must succeed); cancelled, and the first AG's cancel is
 * CRC-checked.
 */
static void brim_short_list_frees(struct rnd *r)
{
	struct tu_agfs *t = r->t;
	const struct mfs_geom *g = &t->fs->geo;

	ext_compact(r);
	for (uint32_t a = 0; a < g->agcount; a++) {
		struct mfs_trans *tp;
		struct mfs_buf *bp;
		const struct mfs_agh *agh;
		uint32_t crc0 = a == 0 ? tu_image_crc(t->fs, t->path) : 0, b;
		unsigned nfreed = 0, need, low;

		CK_OK(mfs_trans_alloc(t->fs, &tp));
		CK_OK(mfs_trans_lock_ag(tp, a, 0));
		CK_OK(mfs_read_agh(t->fs, a, &bp));
		agh = bp->data;
		need = mfs_agfl_need(t->fs, agh);
		low = need - (mfs_get32(agh->levels[MFS_BT_RMAP]) + 1);
		CK_TRUE(mfs_get32(agh->levels[MFS_BT_BNO]) == 1 &&
			mfs_get32(agh->levels[MFS_BT_CNT]) == 1);
		while (mfs_get32(agh->fl_count) > low)
			CK_OK(mfs_agfl_get(tp, a, bp, &b));
		mfs_buf_put(bp);
		for (size_t i = tu_rand_below((uint32_t)r->n); nfreed < 4 && i < r->n; i++) {
			const struct ext *x = &r->e[i];
			uint32_t pf = tu_rand_below(x->len);
			int err;

			if (mfs_fsb_to_agno(g, x->fsb) != a)
				continue;
			err = mfs_free_extent(tp, x->fsb + pf, 1, x->owner,
					      off_add(x->owner, x->offset, pf));
			if (err)
				ck_assert_msg(0, "AG %u full, free list drained to %u (need %u): freeing "
					      "%llu of owner %llx: %s (seed %llu)", a, low, need,
					      (unsigned long long)(x->fsb + pf),
					      (unsigned long long)x->owner, strerror(-err),
					      (unsigned long long)r->seed);
			nfreed++;
		}
		mfs_trans_cancel(tp);
		if (a == 0)
			CK_EQ(tu_image_crc(t->fs, t->path), crc0);
	}
}

/* After the holes are punched: free space is mostly 1-block extents (mean length <= 2). */
static void brim_report_holes(struct rnd *r)
{
	struct tu_agfs *t = r->t;

	for (uint32_t a = 0; a < t->fs->geo.agcount; a++) {
		uint64_t nrecs[MFS_AG_NTREES];
		unsigned levels[MFS_AG_NTREES];
		struct agstate s;

		tu_check_ag(t, a, nrecs, levels);
		ag_state(t, a, &s);
		fprintf(stderr, "  holed, AG %u: %u blocks free in %llu extents (bno/cnt height "
			"%u/%u), %llu rmap records (height %u)\n", a, s.freeblks,
			(unsigned long long)nrecs[MFS_BT_BNO], levels[MFS_BT_BNO],
			levels[MFS_BT_CNT], (unsigned long long)nrecs[MFS_BT_RMAP],
			levels[MFS_BT_RMAP]);
		CK_TRUE(2 * nrecs[MFS_BT_BNO] >= s.freeblks);
	}
}

/* Free every extent the model holds, in random order, a third of them in random pieces,
 * in transactions of 1..3 frees; every one must succeed. */
static void brim_free_all(struct rnd *r)
{
	struct ext *p = NULL;
	size_t n = 0, cap = 0;

	ext_compact(r);
	for (size_t i = 0; i < r->n; i++) {
		struct ext x = r->e[i];

		while (x.len) {
			uint32_t l = x.len > 1 && tu_rand_below(3) == 0 ? 1 + tu_rand_below(x.len - 1)
									  : x.len;

			if (n == cap) {
				cap = cap ? 2 * cap : 1024;
				p = realloc(p, cap * sizeof(*p));
				CK_TRUE(p != NULL);
			}
			p[n++] = (struct ext){ x.fsb, l, x.owner, x.offset };
			x.fsb += l;
			x.offset = off_add(x.owner, x.offset, l);
			x.len -= l;
		}
	}
	for (size_t i = n; i > 1; i--) {
		size_t j = tu_rand_below((uint32_t)i);
		struct ext tmp = p[i - 1];

		p[i - 1] = p[j];
		p[j] = tmp;
	}
	for (size_t i = 0; i < n;) {
		struct mfs_trans *tp;
		size_t k = 1 + tu_rand_below(3), j;

		CK_OK(mfs_trans_alloc(r->t->fs, &tp));
		for (j = i; j < n && j < i + k; j++) {
			int err = mfs_free_extent(tp, p[j].fsb, p[j].len, p[j].owner, p[j].offset);

			if (err)
				ck_assert_msg(0, "freeing %llu+%u of owner %llx offset 0x%llx "
					      "(allocated by this test): %s (seed %llu)",
					      (unsigned long long)p[j].fsb, p[j].len,
					      (unsigned long long)p[j].owner,
					      (unsigned long long)p[j].offset, strerror(-err),
					      (unsigned long long)r->seed);
		}
		CK_OK(mfs_trans_commit(tp));
		for (; i < j; i++)
			tu_model_set(r->t, p[i].fsb, p[i].len, TU_OWN_FREE, 0);
	}
	r->n = r->live = 0;
	r->blocks_used = 0;
	free(p);
}

/*
 * Four small AGs filled to the brim with short extents while earlier ones are freed, so
 * free space ends up in many 1-block pieces; twice over (the second round starts with the
 * tree blocks and list stock scattered by the first):
 *   fill and churn at the brim, then 1-block requests until every AG refuses; frees with
 *   the free list short (brim_short_list_frees);
 *   punch 1-block holes into a fifth of the used space and fill those again;
 *   free everything in random order: back to the fresh AGs' counts.
 */
static void run_brim(uint32_t bs, uint32_t agblocks, unsigned rounds)
{
	struct tu_agfs t;
	struct rnd r;
	struct brim_stats st;
	struct agstate fresh[4];
	char what[80];
	uint64_t seed;
	const struct mfs_geom *g;
	unsigned nops = agblocks * (UNDER_ASAN ? 2 : 5);
	double t0 = tu_now();

	snprintf(what, sizeof(what), "check_alloc brim, %u-byte blocks, 4 AGs of %u", bs,
		 agblocks);
	seed = tu_seed("MFS_SEED", what);
	tu_srand(seed);
	tu_agfs_open(&t, bs, agblocks, 4, 4ull * agblocks);
	tu_agfs_format_all(&t);
	g = &t.fs->geo;
	for (uint32_t a = 0; a < 4; a++)
		ag_state(&t, a, &fresh[a]);
	memset(&r, 0, sizeof(r));
	memset(&st, 0, sizeof(st));
	r.t = &t;
	r.seed = seed;
	r.lenmax = 8;
	r.free1 = 80;
	r.blocks_total = g->dblocks;
	for (int i = 0; i < 8; i++)
		r.owners[i] = i == 7 ? MFS_OWN_INODES : ino_of(g, (uint32_t)i % 4, 64 + 64 * i);
	st.crc_budget = UNDER_ASAN ? 4 : 12;

	for (unsigned round = 0; round < rounds; round++) {
		brim_ops(&r, &st, nops, 75);
		brim_fill_last(&r);
		brim_report(&r, "full");
		brim_short_list_frees(&r);
		/* a fifth of the used blocks freed one at a time, then filled again */
		r.free1 = 100;
		brim_ops(&r, &st, (unsigned)(r.blocks_used / 5), 0);
		r.free1 = 80;
		brim_report_holes(&r);
		brim_ops(&r, &st, nops, 85);
		brim_fill_last(&r);
		brim_report(&r, "full again");
		brim_short_list_frees(&r);
		brim_free_all(&r);
		tu_check_all(&t);
		check_back_to_format(&t, fresh);
		st.crc_budget += UNDER_ASAN ? 4 : 12;
	}
	fprintf(stderr, "check_alloc brim %u/%u: %u rounds in %.2f s: %llu allocs, %llu frees, "
		"%llu ENOSPC, %llu cancelled transactions, %llu CRC probes (%llu with ENOSPC)\n",
		bs, agblocks, rounds, tu_now() - t0, (unsigned long long)r.nalloc,
		(unsigned long long)r.nfree, (unsigned long long)r.nenospc,
		(unsigned long long)r.ncancel, (unsigned long long)st.crc_tx,
		(unsigned long long)st.crc_tx_enospc);
	CK_TRUE(st.crc_tx_enospc > 0);
	free(r.e);
	tu_agfs_close(&t);
}

START_TEST(test_brim_1k)
{
	run_brim(1024, 1024, 2);
	run_brim(1024, 4096, 2);
}
END_TEST

START_TEST(test_brim_4k)
{
	run_brim(4096, 1024, 2);
	run_brim(4096, 4096, 2);
}
END_TEST

/* ---- the free-space trees at a height boundary ------------------------------------------- */
static int inode_owned(const struct tu_agfs *t, uint64_t fsb)
{
	return t->owner[fsb] != TU_OWN_FREE && t->owner[fsb] < MFS_OWN_MIN;
}

/* A block of AG agno owned by an inode, preferably with both neighbours owned by inodes
 * too (freeing it makes a new free extent): 1 and *fsb, or 0 if none was found. */
static int pick_used(const struct tu_agfs *t, uint32_t agno, uint64_t *fsb)
{
	const struct mfs_geom *g = &t->fs->geo;
	uint64_t base = mfs_agbno_to_fsb(g, agno, 0), end = base + mfs_ag_length(g, agno);
	uint64_t any = 0;

	for (int tries = 0; tries < 64; tries++) {
		uint64_t b = base + MFS_AG_FIXED_BLOCKS +
			     tu_rand_below(mfs_ag_length(g, agno) - MFS_AG_FIXED_BLOCKS);

		if (!inode_owned(t, b))
			continue;
		if (!any)
			any = b;
		if (b + 1 < end && inode_owned(t, b - 1) && inode_owned(t, b + 1)) {
			*fsb = b;
			return 1;
		}
	}
	*fsb = any;
	return any != 0;
}

/* Free everything inode-owned in the model, as maximal runs of one owner with contiguous
 * offsets, a third of them cut into random pieces, in random order; all must succeed. */
static void model_free_all(struct tu_agfs *t, uint64_t seed)
{
	const struct mfs_geom *g = &t->fs->geo;
	struct ext *p = NULL;
	size_t n = 0, cap = 0;

	for (uint64_t b = 0; b < g->dblocks;) {
		uint64_t s = b, o = t->owner[b];
		int cut = tu_rand_below(3) == 0;

		if (!inode_owned(t, b)) {
			b++;
			continue;
		}
		for (b++; b < g->dblocks && t->owner[b] == o &&
			  t->offset[b] == t->offset[b - 1] + 1 &&
			  mfs_fsb_to_agno(g, b) == mfs_fsb_to_agno(g, s) &&
			  !(cut && tu_rand_below(4) == 0); b++)
			;
		if (n == cap) {
			cap = cap ? 2 * cap : 1024;
			p = realloc(p, cap * sizeof(*p));
			CK_TRUE(p != NULL);
		}
		p[n++] = (struct ext){ s, (uint32_t)(b - s), o, t->offset[s] };
	}
	for (size_t i = n; i > 1; i--) {
		size_t j = tu_rand_below((uint32_t)i);
		struct ext tmp = p[i - 1];

		p[i - 1] = p[j];
		p[j] = tmp;
	}
	for (size_t i = 0; i < n; i++) {
		int err = free_commit(t, p[i].fsb, p[i].len, p[i].owner, p[i].offset);

		if (err)
			ck_assert_msg(0, "freeing %llu+%u of owner %llx offset 0x%llx: %s (seed %llu)",
				      (unsigned long long)p[i].fsb, p[i].len,
				      (unsigned long long)p[i].owner, (unsigned long long)p[i].offset,
				      strerror(-err), (unsigned long long)seed);
	}
	free(p);
}

/*
 * The free-space trees at a height boundary.  Each of two AGs is given whole to one owner
 * (all but the reserve), then every other block is freed until bno and cnt have two levels
 * and a few records more: free space is 1-block extents, and taking a few of them (an
 * allocation, or a refill of the free list, which takes whole extents) joins the two leaves
 * and drops the height, freeing a few splits them again.  need follows the heights (bno and
 * cnt together: 4 blocks), so the list is refilled and trimmed in turn, the situation in
 * which the fix-up that chased need both ways never settled.  Thousands of 1- and 2-block
 * allocations (EXACT at a hole, NEAR, ANY, some aligned) and 1-block frees walk the record
 * count back and forth across the boundary (allocations favoured at two levels, frees at
 * one); each allocation succeeds or is ENOSPC with nothing joined, each free succeeds, the
 * heights must flip many times, and a cancelled transaction every so often leaves the image
 * byte-identical.  Then everything is freed: the AGs' counts are the fresh ones again.
 */
static void run_boundary(uint32_t bs, uint32_t agblocks, unsigned steps)
{
	struct tu_agfs t;
	const struct mfs_geom *g;
	struct agstate fresh[2];
	char what[80];
	uint64_t seed, e[2], own[2], own2[2], next_off[2] = { 1u << 20, 1u << 20 };
	uint64_t ring[2][64], nalloc = 0, nfree = 0, nenospc = 0, ncrc = 0;
	uint64_t flips[MFS_AG_NTREES] = { 0 };
	unsigned nring[2] = { 0, 0 };
	uint32_t elen[2];
	double t0 = tu_now();

	snprintf(what, sizeof(what), "check_alloc height boundary, %u-byte blocks", bs);
	seed = tu_seed("MFS_SEED", what);
	tu_srand(seed);
	tu_agfs_open(&t, bs, agblocks, 2, 2ull * agblocks);
	tu_agfs_format_all(&t);
	g = &t.fs->geo;
	for (uint32_t a = 0; a < 2; a++) {
		struct agstate s;
		unsigned extra = 0;

		ag_state(&t, a, &fresh[a]);
		own[a] = ino_of(g, a, 64);
		own2[a] = ino_of(g, a, 128);
		CK_OK(alloc_commit(&t, MFS_ALLOC_ANY, mfs_agbno_to_fsb(g, a, 0), 1, agblocks, 0,
				   own[a], 0, &e[a], &elen[a]));
		CK_EQ(mfs_fsb_to_agno(g, e[a]), a);
		for (uint32_t i = 1; i + 1 < elen[a] && extra < 4; i += 2) {
			int err = free_commit(&t, e[a] + i, 1, own[a], i);

			if (err)
				ck_assert_msg(0, "AG %u: freeing hole %u: %s (seed %llu)", a, i,
					      strerror(-err), (unsigned long long)seed);
			ag_state(&t, a, &s);
			extra += s.levels[MFS_BT_BNO] >= 2 && s.levels[MFS_BT_CNT] >= 2;
		}
		ag_state(&t, a, &s);
		CK_EQ(s.levels[MFS_BT_BNO], 2);
		CK_EQ(s.levels[MFS_BT_CNT], 2);
	}
	tu_check_all(&t);

	for (unsigned step = 0; step < steps; step++) {
		uint32_t a = tu_rand_below(2), aglen = mfs_ag_length(g, a);
		uint64_t base = mfs_agbno_to_fsb(g, a, 0), fsb;
		struct agstate s0, s1;
		struct mfs_trans *tp;
		int err;

		ag_state(&t, a, &s0);
		if (tu_rand_below(100) < (s0.levels[MFS_BT_BNO] >= 2 ? 75u : 25u)) {
			uint32_t k = tu_rand_below(100), len, align = 0;
			uint32_t maxlen = 1 + (tu_rand_below(4) == 0);
			enum mfs_alloc_type type = MFS_ALLOC_ANY;
			uint64_t target = base + tu_rand_below(aglen), owner = own2[a];
			uint64_t offset = next_off[a];

			if (k < 40 && nring[a]) {
				type = MFS_ALLOC_EXACT;
				target = ring[a][tu_rand_below(nring[a] < 64 ? nring[a] : 64)];
				if (target >= e[a] && target < e[a] + elen[a]) {
					owner = own[a];        /* back to its first owner: rmap merges */
					offset = target - e[a];
				}
			} else if (k < 80) {
				type = MFS_ALLOC_NEAR;
				align = tu_rand_below(4) == 0 ? 2 : 0;
			}
			CK_OK(mfs_trans_alloc(t.fs, &tp));
			err = alloc1(tp, type, target, 1, maxlen, align, owner, offset, &fsb, &len);
			if (err == -ENOSPC) {
				if (mfs_trans_nbufs(tp) != 0)
					ck_assert_msg(0, "step %u: ENOSPC with %u buffers joined "
						      "(seed %llu)", step, mfs_trans_nbufs(tp),
						      (unsigned long long)seed);
				mfs_trans_cancel(tp);
				nenospc++;
			} else {
				if (err)
					ck_assert_msg(0, "step %u: allocation type %d at %llu: %s "
						      "(seed %llu)", step, (int)type,
						      (unsigned long long)target, strerror(-err),
						      (unsigned long long)seed);
				CK_OK(mfs_trans_commit(tp));
				for (uint32_t i = 0; i < len; i++)
					T_UEQ(t.owner[fsb + i], TU_OWN_FREE);
				if (type == MFS_ALLOC_EXACT)
					T_UEQ(fsb, target);
				if (align)
					T_UEQ(mfs_fsb_to_agbno(g, fsb) % align, 0);
				tu_model_set(&t, fsb, len, owner, offset);
				if (owner == own2[a])
					next_off[a] += len;
				nalloc++;
			}
		} else if (pick_used(&t, a, &fsb)) {
			err = free_commit(&t, fsb, 1, t.owner[fsb], t.offset[fsb]);
			if (err)
				ck_assert_msg(0, "step %u: freeing block %llu: %s (seed %llu)", step,
					      (unsigned long long)fsb, strerror(-err),
					      (unsigned long long)seed);
			ring[a][nring[a]++ % 64] = fsb;
			nfree++;
		}
		ag_state(&t, a, &s1);
		for (int tr = 0; tr < MFS_AG_NTREES; tr++)
			flips[tr] += s1.levels[tr] != s0.levels[tr];

		if (step % 2000 == 1999) {
			/* a probe: allocations and a free, cancelled, change nothing */
			uint32_t crc0 = tu_image_crc(t.fs, t.path), len;

			tu_check_all(&t);
			CK_OK(mfs_trans_alloc(t.fs, &tp));
			for (int i = 0; i < 8; i++) {
				err = alloc1(tp, i % 2 ? MFS_ALLOC_NEAR : MFS_ALLOC_ANY,
					     base + tu_rand_below(aglen), 1, 2, 0, own2[a],
					     next_off[a] + 16 * (uint64_t)i, &fsb, &len);
				CK_TRUE(err == 0 || err == -ENOSPC);
			}
			if (pick_used(&t, a, &fsb))
				CK_OK(mfs_free_extent(tp, fsb, 1, t.owner[fsb], t.offset[fsb]));
			mfs_trans_cancel(tp);
			CK_EQ(tu_image_crc(t.fs, t.path), crc0);
			ncrc++;
		}
	}
	tu_check_all(&t);
	fprintf(stderr, "check_alloc height boundary, %u-byte blocks: %u steps in %.2f s: %llu "
		"allocs, %llu frees, %llu ENOSPC, %llu CRC probes; height changes bno %llu, cnt "
		"%llu, rmap %llu\n", bs, steps, tu_now() - t0, (unsigned long long)nalloc,
		(unsigned long long)nfree, (unsigned long long)nenospc, (unsigned long long)ncrc,
		(unsigned long long)flips[MFS_BT_BNO], (unsigned long long)flips[MFS_BT_CNT],
		(unsigned long long)flips[MFS_BT_RMAP]);
	CK_TRUE(flips[MFS_BT_BNO] >= steps / 200);
	CK_TRUE(flips[MFS_BT_CNT] >= steps / 200);
	model_free_all(&t, seed);
	tu_check_all(&t);
	check_back_to_format(&t, fresh);
	tu_agfs_close(&t);
}

START_TEST(test_height_boundary_1k)
{
	run_boundary(1024, 1024, UNDER_ASAN ? 4000 : 20000);
}
END_TEST

START_TEST(test_height_boundary_4k)
{
	run_boundary(4096, 4096, UNDER_ASAN ? 4000 : 20000);
}
END_TEST

static Suite *alloc_suite(void)
{
	Suite *s = suite_create("alloc");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, UNDER_ASAN ? 600 : 120);
	tcase_add_test(tc, test_format_fresh);
	tcase_add_test(tc, test_semantics);
	tcase_add_test(tc, test_enospc_and_cancel);
	tcase_add_test(tc, test_refill_spares_choice);
	tcase_add_test(tc, test_midway_trouble_not_enospc);
	tcase_add_test(tc, test_random);
	tcase_add_test(tc, test_random_1k);
	tcase_add_test(tc, test_brim_1k);
	tcase_add_test(tc, test_brim_4k);
	tcase_add_test(tc, test_height_boundary_1k);
	tcase_add_test(tc, test_height_boundary_4k);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(alloc_suite());
}
