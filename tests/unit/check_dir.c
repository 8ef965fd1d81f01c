/*
 * check_dir.c — directories (lib/dir.c) against a model: seeded random add / remove /
 * replace / lookup with names of 1..255 bytes and forced hash collisions, growing one
 * directory to 100,000 entries and back to empty, with readdir compared to the model and
 * the directory checked (btree verify, hashes, sizes, counts) after each phase; readdir
 * cookies stable while the directory changes between chunks (also across the inline ↔
 * btree conversions); name errors; a cancelled transaction leaving the image byte-for-byte
 * unchanged; and the rate of adds and lookups.
 *
 * Images are formatted in process (tu_format: lib/format, the code of mkfs.mendfs) and
 * checked by the built mendfs_db ($BIN, default build/bin); without it the program skips
 * (exit 77).  SEED=n replays a seed.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bcache.h"
#include "byteorder.h"
#include "dir.h"
#include "fs.h"
#include "geom.h"
#include "ialloc.h"
#include "inode.h"
#include "log.h"
#include "mendfs_format.h"
#include "trans.h"

#include "format.h"
#include "tu.h"

#if UNDER_ASAN
#define BIG 10000u
#define STABLE_N 1500u
#define TIMED 10000u
#else
#define BIG 100000u
#define STABLE_N 5000u
#define TIMED 100000u
#endif

/* ---- images ----------------------------------------------------------------------------- */
/* A fresh image of `bytes` in 4 AGs with block size bs, opened with an inode cache, its
 * superblock dirty as a mounted filesystem's is. */
static void timg_make(struct tu_img *t, uint32_t bs, uint64_t bytes)
{
	struct mfs_format_opts o = { .blocksize = bs, .agcount = 4 };

	tu_img_make(t, "mendfs_dir", bytes, &o, 0);
	tu_sb_mark_dirty(t->fs);
}

/* A new, empty directory under the root, returned referenced and locked exclusive. */
static struct mfs_inode *make_dir(struct tu_img *t)
{
	struct mfs_trans *tp;
	struct mfs_inode *dp;
	uint64_t ino;

	CK_OK(mfs_trans_alloc(t->fs, &tp));
	CK_OK(tu_ialloc_linked(tp, t->fs->geo.rootino, S_IFDIR | 0755, &ino));
	CK_OK(mfs_trans_commit(tp));
	CK_OK(mfs_iget(t->fs, ino, 0, &dp));
	pthread_rwlock_wrlock(&dp->lock);
	CK_OK(mfs_trans_alloc(t->fs, &tp));
	CK_OK(mfs_dir_init(tp, dp, t->fs->geo.rootino));
	CK_OK(mfs_trans_commit(tp));
	return dp;
}

static void put_dir(struct mfs_inode *dp)
{
	pthread_rwlock_unlock(&dp->lock);
	mfs_iput(dp);
}

/* ---- the model: name -> (ino, ftype) ------------------------------------------------------ */
struct ment {
	uint8_t len;
	char name[MFS_NAME_MAX];
	uint64_t ino;
	uint8_t ftype;
	int next;                   /* hash chain */
	unsigned seen;              /* readdir */
	int orig;                   /* present when the iteration started */
};

#define MBUCKETS (1u << 18)

struct model {
	struct ment *v;
	size_t n, cap;
	int *b;
};

static void model_init(struct model *m)
{
	memset(m, 0, sizeof(*m));
	m->b = malloc(MBUCKETS * sizeof(int));
	CK_TRUE(m->b);
	for (unsigned i = 0; i < MBUCKETS; i++)
		m->b[i] = -1;
}

static void model_free(struct model *m)
{
	free(m->v);
	free(m->b);
}

static unsigned mhash(const char *name, unsigned len)
{
	uint32_t h = 2166136261u;

	for (unsigned i = 0; i < len; i++)
		h = (h ^ (uint8_t)name[i]) * 16777619u;
	return h & (MBUCKETS - 1);
}

static int model_find(const struct model *m, const char *name, unsigned len)
{
	for (int i = m->b[mhash(name, len)]; i >= 0; i = m->v[i].next)
		if (m->v[i].len == len && !memcmp(m->v[i].name, name, len))
			return i;
	return -1;
}

static void model_add(struct model *m, const char *name, unsigned len, uint64_t ino,
		      uint8_t ftype)
{
	struct ment *e;
	unsigned h = mhash(name, len);

	if (m->n == m->cap) {
		m->cap = m->cap ? 2 * m->cap : 1024;
		m->v = realloc(m->v, m->cap * sizeof(*m->v));
		CK_TRUE(m->v);
	}
	e = &m->v[m->n];
	e->len = (uint8_t)len;
	memcpy(e->name, name, len);
	e->ino = ino;
	e->ftype = ftype;
	e->seen = 0;
	e->orig = 0;
	e->next = m->b[h];
	m->b[h] = (int)m->n++;
}

static void unlink_idx(struct model *m, int idx)
{
	int *pp = &m->b[mhash(m->v[idx].name, m->v[idx].len)];

	while (*pp != idx)
		pp = &m->v[*pp].next;
	*pp = m->v[idx].next;
}

static void model_del(struct model *m, int idx)
{
	int last = (int)m->n - 1;

	unlink_idx(m, idx);
	if (idx != last) {
		int *pp = &m->b[mhash(m->v[last].name, m->v[last].len)];

		while (*pp != last)
			pp = &m->v[*pp].next;
		m->v[idx] = m->v[last];
		*pp = idx;
	}
	m->n--;
}

static const uint8_t ftypes[] = { DT_REG, DT_DIR, DT_LNK, DT_FIFO, DT_CHR, DT_BLK, DT_SOCK };

static uint64_t rand_ino(void)
{
	return 1 + tu_rand() % ((1ull << 56) - 1);
}

/* A random name not in the model: mostly short, many long, bytes 1..255 except '/'. */
static unsigned rand_name(const struct model *m, char *buf)
{
	for (;;) {
		unsigned r = (unsigned)(tu_rand() % 100), len;

		if (r < 50)
			len = 1 + (unsigned)(tu_rand() % MFS_DIR_HEAD_NAME);
		else if (r < 85)
			len = 1 + (unsigned)(tu_rand() % MFS_NAME_MAX);
		else
			len = 200 + (unsigned)(tu_rand() % 56);
		for (unsigned i = 0; i < len; i++) {
			uint8_t c;

			do
				c = (uint8_t)(1 + tu_rand() % 255);
			while (c == '/');
			buf[i] = (char)c;
		}
		if ((len == 1 && buf[0] == '.') || (len == 2 && buf[0] == '.' && buf[1] == '.'))
			continue;
		if (!m || model_find(m, buf, len) < 0)
			return len;
	}
}

/* ---- comparing a directory with the model ----------------------------------------------- */
struct walk {
	struct model *m;
	struct mfs_inode *dp;
	uint64_t last_cookie;
	uint64_t n;
	int dots;
	int bad;
	char msg[256];
	unsigned limit;             /* stop after this many (0: none) */
	unsigned taken;
	uint64_t resume;
};

static int walk_fn(void *priv, const char *name, unsigned len, uint64_t ino, uint8_t ftype,
		   uint64_t next)
{
	struct walk *w = priv;
	int i;

	if (w->limit && w->taken == w->limit)
		return 1;
	if (next <= w->last_cookie) {
		snprintf(w->msg, sizeof(w->msg), "cookie %" PRIu64 " after %" PRIu64, next,
			 w->last_cookie);
		w->bad = 1;
		return -EINVAL;
	}
	w->last_cookie = next;
	w->taken++;
	w->resume = next;
	if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.')) {
		w->dots++;
		return 0;
	}
	i = model_find(w->m, name, len);
	if (i < 0 || w->m->v[i].ino != ino || w->m->v[i].ftype != ftype ||
	    w->m->v[i].seen) {
		snprintf(w->msg, sizeof(w->msg), "entry of length %u: model index %d, ino %" PRIu64
			 " type %u, %s", len, i, ino, ftype,
			 i >= 0 && w->m->v[i].seen ? "returned twice" : "mismatch");
		w->bad = 1;
		return -EINVAL;
	}
	w->m->v[i].seen = 1;
	w->n++;
	return 0;
}

/* readdir returns every model entry exactly once (and ".", ".."); the directory checks out;
 * count and size agree. */
static void compare(struct mfs_inode *dp, struct model *m)
{
	struct walk w;
	uint64_t count, bytes = 8;
	int err;

	memset(&w, 0, sizeof(w));
	w.m = m;
	for (size_t i = 0; i < m->n; i++) {
		m->v[i].seen = 0;
		bytes += 11 + m->v[i].len;
	}
	err = mfs_dir_iterate(dp, 0, walk_fn, &w);
	if (w.bad)
		ck_assert_msg(0, "readdir: %s", w.msg);
	CK_OK(err);
	CK_EQ(w.dots, 2);
	CK_EQ(w.n, m->n);
	CK_OK(mfs_dir_count(dp, &count));
	CK_EQ(count, m->n);
	CK_EQ(dp->size, bytes);
	CK_EQ(mfs_dir_is_empty(dp), m->n == 0);
	CK_OK(mfs_dir_check(dp));
}

/* One random operation against the directory and the model. */
static void random_op(struct mfs_trans *tp, struct mfs_inode *dp, struct model *m,
		      unsigned add_pct)
{
	char name[MFS_NAME_MAX + 1];
	unsigned r = (unsigned)(tu_rand() % 100), len;
	uint64_t ino, old;
	uint8_t ft;
	int i;

	if (r < add_pct || m->n == 0) {
		if (m->n && tu_rand() % 16 == 0) {          /* an existing name */
			i = (int)(tu_rand() % m->n);
			CK_EQ(mfs_dir_add(tp, dp, m->v[i].name, m->v[i].len, rand_ino(), DT_REG),
			      -EEXIST);
			return;
		}
		len = rand_name(m, name);
		ino = rand_ino();
		ft = ftypes[tu_rand() % sizeof(ftypes)];
		CK_OK(mfs_dir_add(tp, dp, name, len, ino, ft));
		model_add(m, name, len, ino, ft);
	} else if (r < add_pct + (100 - add_pct) / 2) {
		i = (int)(tu_rand() % m->n);
		CK_OK(mfs_dir_remove(tp, dp, m->v[i].name, m->v[i].len, &old));
		CK_EQ(old, m->v[i].ino);
		model_del(m, i);
	} else if (r % 3 == 0) {
		i = (int)(tu_rand() % m->n);
		ino = rand_ino();
		ft = ftypes[tu_rand() % sizeof(ftypes)];
		CK_OK(mfs_dir_replace(tp, dp, m->v[i].name, m->v[i].len, ino, ft, &old));
		CK_EQ(old, m->v[i].ino);
		m->v[i].ino = ino;
		m->v[i].ftype = ft;
	} else if (r % 3 == 1) {
		i = (int)(tu_rand() % m->n);
		CK_OK(mfs_dir_lookup(dp, m->v[i].name, m->v[i].len, &ino, &ft));
		CK_EQ(ino, m->v[i].ino);
		CK_EQ(ft, m->v[i].ftype);
	} else {
		len = rand_name(m, name);
		CK_EQ(mfs_dir_lookup(dp, name, len, &ino, &ft), -ENOENT);
		CK_EQ(mfs_dir_remove(tp, dp, name, len, &old), -ENOENT);
	}
}

/* Run random operations (1..8 per transaction) until the model has `target` entries. */
static void drive(struct tu_img *t, struct mfs_inode *dp, struct model *m, size_t target,
		  unsigned add_pct)
{
	while (m->n != target) {
		struct mfs_trans *tp;
		unsigned k = 1 + (unsigned)(tu_rand() % 8);

		CK_OK(mfs_trans_alloc(t->fs, &tp));
		while (k-- && m->n != target)
			random_op(tp, dp, m, add_pct);
		CK_OK(mfs_trans_commit(tp));
	}
}

/* ---- tests ---------------------------------------------------------------------------------- */
START_TEST(test_hash_vectors)
{
	uint8_t key[16], msg[15];
	uint32_t h0, h15;

	for (unsigned i = 0; i < 16; i++)
		key[i] = (uint8_t)i;
	for (unsigned i = 0; i < 15; i++)
		msg[i] = (uint8_t)i;
	mfs_dir_test_set_hash_mask(0xffffffffu);
	/* SipHash-2-4 reference outputs for key 00..0f: "" and 00..0e, folded */
	h0 = mfs_dir_hash(key, (const char *)msg, 0);
	h15 = mfs_dir_hash(key, (const char *)msg, 15);
	CK_EQ(h0, 0x726fdb47u ^ 0xdd0e0e31u);
	CK_EQ(h15, 0xa129ca61u ^ 0x49be45e5u);
	mfs_dir_test_set_hash_mask(0xfu);
	CK_EQ(mfs_dir_hash(key, (const char *)msg, 15), (0xa129ca61u ^ 0x49be45e5u) & 0xf);
	mfs_dir_test_set_hash_mask(0xffffffffu);
}
END_TEST

/* Grow one directory to BIG entries and back to empty, against the model. */
static const uint32_t model_masks[] = { 0xfffu, 0xffffffffu };

START_TEST(test_model_big)
{
	static const size_t marks[] = { 3, 60, 1000, 10000, BIG };
	struct tu_img t;
	struct model m;
	struct mfs_inode *dp;
	double t0;
	char what[64];

	snprintf(what, sizeof(what), "dir model (hash mask 0x%x)", model_masks[_i]);
	tu_srand(tu_seed("SEED", what));
	mfs_dir_test_set_hash_mask(model_masks[_i]);
	timg_make(&t, 4096, 512ull << 20);
	model_init(&m);
	dp = make_dir(&t);
	compare(dp, &m);
	t0 = tu_now();
	for (size_t k = 0; k < sizeof(marks) / sizeof(marks[0]); k++) {
		drive(&t, dp, &m, marks[k], 75);
		compare(dp, &m);
		CK_EQ(dp->dformat, marks[k] > 100 ? MFS_FMT_BTREE : dp->dformat);
	}
	printf("  grew to %zu entries in %.2f s (%u levels, %" PRIu64 " blocks)\n", m.n,
	       tu_now() - t0, dp->dnext, dp->nblocks);
	t0 = tu_now();
	for (size_t k = sizeof(marks) / sizeof(marks[0]) - 1; k-- > 0; ) {
		drive(&t, dp, &m, marks[k], 25);
		compare(dp, &m);
	}
	drive(&t, dp, &m, 0, 25);
	compare(dp, &m);
	printf("  shrank to empty in %.2f s\n", tu_now() - t0);
	CK_EQ(dp->dformat, MFS_FMT_LOCAL);
	CK_EQ(dp->nblocks, 0);
	CK_EQ(dp->size, 8);
	put_dir(dp);
	tu_img_db_check(&t);
	tu_img_destroy(&t);
	model_free(&m);
	mfs_dir_test_set_hash_mask(0xffffffffu);
}
END_TEST

/* Every name in one collision chain (hash mask 0): seqs past 255, long names, a chain
 * spanning many leaves; 1K blocks. */
START_TEST(test_one_chain)
{
	struct tu_img t;
	struct model m;
	struct mfs_inode *dp;

	tu_srand(tu_seed("SEED", "dir one collision chain"));
	mfs_dir_test_set_hash_mask(0);
	timg_make(&t, 1024, 64ull << 20);
	model_init(&m);
	dp = make_dir(&t);
	drive(&t, dp, &m, 600, 80);
	compare(dp, &m);
	drive(&t, dp, &m, 3, 20);
	compare(dp, &m);
	drive(&t, dp, &m, 300, 80);
	compare(dp, &m);
	drive(&t, dp, &m, 0, 20);
	compare(dp, &m);
	CK_EQ(dp->dformat, MFS_FMT_LOCAL);
	CK_EQ(dp->nblocks, 0);
	put_dir(dp);
	tu_img_db_check(&t);
	tu_img_destroy(&t);
	model_free(&m);
	mfs_dir_test_set_hash_mask(0xffffffffu);
}
END_TEST

/*
 * readdir in chunks while entries are added and removed between chunks: every entry present
 * throughout is returned exactly once; nothing is returned twice or that is not there.
 * Sizes: from inline (crossing into a btree and back) and a big btree; with and without
 * forced collisions.
 */
static void stability_run(struct tu_img *t, struct mfs_inode *dp, struct model *m, size_t start,
			  unsigned churn, unsigned add_pct)
{
	struct walk w;
	uint64_t cookie = 0;
	unsigned rounds = 0;

	drive(t, dp, m, start, 90);
	for (size_t i = 0; i < m->n; i++) {
		m->v[i].orig = 1;
		m->v[i].seen = 0;
	}
	memset(&w, 0, sizeof(w));
	w.m = m;
	for (;;) {
		struct mfs_trans *tp;
		int err;

		w.limit = 1 + (unsigned)(tu_rand() % 40);
		w.taken = 0;
		w.resume = cookie;
		err = mfs_dir_iterate(dp, cookie, walk_fn, &w);
		if (w.bad)
			ck_assert_msg(0, "readdir round %u: %s", rounds, w.msg);
		CK_OK(err);
		if (w.taken < w.limit)
			break;                  /* the end */
		cookie = w.resume;
		rounds++;
		/* change the directory between chunks */
		CK_OK(mfs_trans_alloc(t->fs, &tp));
		for (unsigned k = 0; k < churn; k++)
			if (m->n)
				random_op(tp, dp, m, add_pct);
		CK_OK(mfs_trans_commit(tp));
	}
	for (size_t i = 0; i < m->n; i++)
		if (m->v[i].orig && m->v[i].seen != 1)
			ck_assert_msg(0, "an entry present throughout was returned %u times "
				      "(after %u rounds)", m->v[i].seen, rounds);
	CK_EQ(w.dots, 2);
	CK_OK(mfs_dir_check(dp));
}

static const uint32_t stab_masks[] = { 0xffffffffu, 0xfu };

START_TEST(test_readdir_stable)
{
	struct tu_img t;
	struct model m;
	struct mfs_inode *dp;
	char what[64];

	snprintf(what, sizeof(what), "dir readdir stability (hash mask 0x%x)", stab_masks[_i]);
	tu_srand(tu_seed("SEED", what));
	mfs_dir_test_set_hash_mask(stab_masks[_i]);
	timg_make(&t, 4096, 128ull << 20);
	for (int variant = 0; variant < 4; variant++) {
		model_init(&m);
		dp = make_dir(&t);
		switch (variant) {
		case 0:     /* inline, growing into a btree while listed */
			stability_run(&t, dp, &m, 2, 3, 90);
			break;
		case 1:     /* a small btree shrinking back inline while listed */
			stability_run(&t, dp, &m, 40, 3, 5);
			break;
		case 2:     /* a big btree, growing */
			stability_run(&t, dp, &m, STABLE_N, 30, 70);
			break;
		default:    /* a big btree, shrinking */
			stability_run(&t, dp, &m, STABLE_N, 60, 20);
			break;
		}
		compare(dp, &m);
		put_dir(dp);
		model_free(&m);
	}
	tu_img_destroy(&t);
	mfs_dir_test_set_hash_mask(0xffffffffu);
}
END_TEST

static int count_fn(void *priv, const char *name, unsigned len, uint64_t ino, uint8_t ftype,
		    uint64_t next)
{
	(*(unsigned *)priv)++;
	return 0;
}

static int first_cookie_fn(void *priv, const char *name, unsigned len, uint64_t ino,
			   uint8_t ftype, uint64_t next)
{
	uint64_t *c = priv;

	if (len == 3 && !memcmp(name, "abc", 3)) {
		c[0] = next;
		c[1] = ino;
	}
	return 0;
}

START_TEST(test_names)
{
	struct tu_img t;
	struct mfs_inode *dp, *root, *reg;
	struct mfs_trans *tp;
	char name[300];
	uint64_t ino, c1[2] = { 0, 0 }, c2[2] = { 0, 0 };
	uint8_t ft;
	unsigned n;

	mfs_dir_test_set_hash_mask(0xffffffffu);
	timg_make(&t, 4096, 64ull << 20);
	dp = make_dir(&t);
	memset(name, 'x', sizeof(name));
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_EQ(mfs_dir_add(tp, dp, name, 256, 1000, DT_REG), -ENAMETOOLONG);
	CK_EQ(mfs_dir_lookup(dp, name, 256, &ino, &ft), -ENAMETOOLONG);
	CK_EQ(mfs_dir_remove(tp, dp, name, 256, &ino), -ENAMETOOLONG);
	CK_EQ(mfs_dir_replace(tp, dp, name, 256, 5, DT_REG, &ino), -ENAMETOOLONG);
	CK_EQ(mfs_dir_lookup(dp, "a/b", 3, &ino, &ft), -EINVAL);
	CK_EQ(mfs_dir_lookup(dp, "a\0b", 3, &ino, &ft), -EINVAL);
	CK_EQ(mfs_dir_lookup(dp, "", 0, &ino, &ft), -EINVAL);
	CK_EQ(mfs_dir_add(tp, dp, "a/b", 3, 1000, DT_REG), -EINVAL);
	CK_EQ(mfs_dir_add(tp, dp, ".", 1, 1000, DT_REG), -EINVAL);
	CK_EQ(mfs_dir_add(tp, dp, "..", 2, 1000, DT_REG), -EINVAL);
	CK_EQ(mfs_dir_remove(tp, dp, "..", 2, &ino), -EINVAL);
	CK_EQ(mfs_dir_add(tp, dp, "ok", 2, 0, DT_REG), -EINVAL);
	CK_EQ(mfs_dir_add(tp, dp, "ok", 2, 1000, 3), -EINVAL);
	CK_OK(mfs_dir_lookup(dp, ".", 1, &ino, &ft));
	CK_EQ(ino, dp->ino);
	CK_EQ(ft, DT_DIR);
	CK_OK(mfs_dir_lookup(dp, "..", 2, &ino, &ft));
	CK_EQ(ino, t.fs->geo.rootino);
	CK_EQ(mfs_dir_lookup(dp, "abc", 3, &ino, &ft), -ENOENT);
	/* 255 bytes works, and duplicates are refused */
	CK_OK(mfs_dir_add(tp, dp, name, 255, 1000, DT_REG));
	CK_EQ(mfs_dir_add(tp, dp, name, 255, 1001, DT_REG), -EEXIST);
	CK_OK(mfs_dir_add(tp, dp, "abc", 3, 1002, DT_DIR));
	CK_OK(mfs_dir_lookup(dp, name, 255, &ino, &ft));
	CK_EQ(ino, 1000);
	CK_EQ(mfs_dir_lookup(dp, name, 254, &ino, &ft), -ENOENT);
	/* replace keeps the cookie */
	CK_OK(mfs_dir_iterate(dp, 0, first_cookie_fn, c1));
	CK_OK(mfs_dir_replace(tp, dp, "abc", 3, 2002, DT_REG, &ino));
	CK_EQ(ino, 1002);
	CK_OK(mfs_dir_iterate(dp, 0, first_cookie_fn, c2));
	CK_EQ(c1[0], c2[0]);
	CK_EQ(c2[1], 2002);
	CK_EQ(mfs_dir_replace(tp, dp, "abd", 3, 5, DT_REG, &ino), -ENOENT);
	/* set_parent */
	CK_OK(mfs_dir_set_parent(tp, dp, 4242));
	CK_OK(mfs_dir_lookup(dp, "..", 2, &ino, &ft));
	CK_EQ(ino, 4242);
	CK_OK(mfs_dir_check(dp));
	CK_OK(mfs_dir_remove(tp, dp, name, 255, &ino));
	CK_OK(mfs_dir_lookup(dp, "..", 2, &ino, &ft));
	CK_EQ(ino, 4242);
	CK_OK(mfs_trans_commit(tp));
	/* iteration from the end-of-directory cookie returns nothing */
	n = 0;
	CK_OK(mfs_dir_iterate(dp, MFS_DIR_COOKIE_EOF, count_fn, &n));
	CK_EQ(n, 0);
	n = 0;
	CK_OK(mfs_dir_iterate(dp, 2, count_fn, &n));
	CK_EQ(n, 1);
	put_dir(dp);

	/* the root as mkfs wrote it (size 0): "..", iteration, then a first entry */
	CK_OK(mfs_iget(t.fs, t.fs->geo.rootino, 0, &root));
	pthread_rwlock_wrlock(&root->lock);
	CK_EQ(root->size, 0);
	CK_OK(mfs_dir_check(root));
	CK_OK(mfs_dir_lookup(root, "..", 2, &ino, &ft));
	CK_EQ(ino, root->ino);
	n = 0;
	CK_OK(mfs_dir_iterate(root, 0, count_fn, &n));
	CK_EQ(n, 2);
	CK_EQ(mfs_dir_is_empty(root), 1);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_dir_add(tp, root, "d", 1, 777, DT_DIR));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(mfs_dir_is_empty(root), 0);
	CK_OK(mfs_dir_lookup(root, "..", 2, &ino, &ft));
	CK_EQ(ino, root->ino);
	CK_OK(mfs_dir_check(root));

	/* not a directory */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(tu_ialloc_linked(tp, root->ino, S_IFREG | 0644, &ino));
	CK_OK(mfs_trans_commit(tp));
	CK_OK(mfs_iget(t.fs, ino, 0, &reg));
	CK_EQ(mfs_dir_lookup(reg, "x", 1, &ino, &ft), -ENOTDIR);
	mfs_iput(reg);
	put_dir(root);
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}
END_TEST

/* A transaction that converts, splits, removes and replaces, then cancels, leaves every byte
 * of the image as it was; the reloaded directory is the old one. */
START_TEST(test_cancel_exact)
{
	struct tu_img t;
	struct model m;
	struct mfs_inode *dp, *small;
	struct mfs_trans *tp;
	uint32_t crc0;
	size_t n0;
	uint64_t nblocks0;

	tu_srand(tu_seed("SEED", "dir cancel"));
	mfs_dir_test_set_hash_mask(0xffffffffu);
	timg_make(&t, 4096, 64ull << 20);
	model_init(&m);
	dp = make_dir(&t);
	small = make_dir(&t);
	drive(&t, dp, &m, 500, 100);
	n0 = m.n;
	nblocks0 = dp->nblocks;
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_dir_add(tp, small, "one", 3, 11, DT_REG));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(small->dformat, MFS_FMT_LOCAL);
	crc0 = tu_image_crc(t.fs, t.path);

	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (unsigned i = 0; i < 3000; i++)
		random_op(tp, dp, &m, 80);
	for (unsigned i = 0; i < 20; i++) {
		char name[MFS_NAME_MAX];
		unsigned len = rand_name(NULL, name);

		CK_OK(mfs_dir_add(tp, small, name, len, 100 + i, DT_REG));
	}
	CK_EQ(small->dformat, MFS_FMT_BTREE);
	mfs_trans_cancel(tp);
	CK_OK(mfs_inode_reload(dp));
	CK_OK(mfs_inode_reload(small));
	CK_EQ(tu_image_crc(t.fs, t.path), crc0);
	CK_EQ(small->dformat, MFS_FMT_LOCAL);
	CK_EQ(dp->nblocks, nblocks0);
	CK_OK(mfs_dir_check(dp));
	CK_OK(mfs_dir_check(small));
	(void)n0;
	put_dir(small);
	put_dir(dp);
	tu_img_db_check(&t);
	tu_img_destroy(&t);
	model_free(&m);
}
END_TEST

/* Rates for a directory of TIMED short names, one transaction per add/remove (no journal). */
START_TEST(test_rates)
{
	struct tu_img t;
	struct mfs_inode *dp;
	char name[64];
	double t0, tadd, tlook, tlist, trm;
	unsigned n;
	uint64_t ino;
	uint8_t ft;

	tu_srand(tu_seed("SEED", "dir rates"));
	mfs_dir_test_set_hash_mask(0xffffffffu);
	timg_make(&t, 4096, 256ull << 20);
	dp = make_dir(&t);
	t0 = tu_now();
	for (unsigned i = 0; i < TIMED; i++) {
		struct mfs_trans *tp;
		int len = snprintf(name, sizeof(name), "file-%08u.dat", i);

		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_OK(mfs_dir_add(tp, dp, name, (unsigned)len, 100 + i, DT_REG));
		CK_OK(mfs_trans_commit(tp));
	}
	tadd = tu_now() - t0;
	t0 = tu_now();
	for (unsigned i = 0; i < TIMED; i++) {
		unsigned k = (unsigned)(tu_rand() % TIMED);
		int len = snprintf(name, sizeof(name), "file-%08u.dat", k);

		CK_OK(mfs_dir_lookup(dp, name, (unsigned)len, &ino, &ft));
		CK_EQ(ino, 100 + k);
	}
	tlook = tu_now() - t0;
	t0 = tu_now();
	n = 0;
	CK_OK(mfs_dir_iterate(dp, 0, count_fn, &n));
	tlist = tu_now() - t0;
	CK_EQ(n, TIMED + 2);
	CK_OK(mfs_dir_check(dp));
	t0 = tu_now();
	for (unsigned i = 0; i < TIMED; i++) {
		struct mfs_trans *tp;
		int len = snprintf(name, sizeof(name), "file-%08u.dat", i);

		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_OK(mfs_dir_remove(tp, dp, name, (unsigned)len, &ino));
		CK_OK(mfs_trans_commit(tp));
	}
	trm = tu_now() - t0;
	printf("  %u entries: %.0f adds/s, %.0f lookups/s, %.0f removes/s, readdir %.0f "
	       "entries/s\n", TIMED, TIMED / tadd, TIMED / tlook, TIMED / trm,
	       (TIMED + 2) / tlist);
	CK_EQ(dp->dformat, MFS_FMT_LOCAL);
	CK_EQ(dp->nblocks, 0);
	put_dir(dp);
	tu_img_destroy(&t);
}
END_TEST

/* ---- damaged directories: every path reports corruption, nothing crashes ------------------ */
static int iter_nop(void *priv, const char *name, unsigned len, uint64_t ino, uint8_t ftype,
		    uint64_t next)
{
	return 0;
}

/* Every read path fails with -EFSCORRUPTED (lookup of `probe`, iterate, check). */
static void expect_corrupt(struct mfs_inode *dp, const char *probe, unsigned plen)
{
	uint64_t ino;

	CK_EQ(mfs_dir_lookup(dp, probe, plen, &ino, NULL), -EFSCORRUPTED);
	CK_EQ(mfs_dir_iterate(dp, 0, iter_nop, NULL), -EFSCORRUPTED);
	CK_EQ(mfs_dir_check(dp), -EFSCORRUPTED);
}

START_TEST(test_corrupt)
{
	struct tu_img t;
	struct mfs_inode *dp;
	struct mfs_trans *tp;
	struct mfs_dir_root r;
	struct mfs_buf *bp;
	uint8_t lit[MFS_MAX_INODESIZE], *blk, saved[MFS_DEFAULT_BLOCKSIZE];
	char longname[200], name[16];
	uint64_t size0, ino;
	unsigned nrecs, ilong = 0, ishort = 0;

	mfs_dir_test_set_hash_mask(0xffffffffu);
	timg_make(&t, 4096, 64ull << 20);
	dp = make_dir(&t);
	/* local: "aa", "bb", "cc" */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_dir_add(tp, dp, "aa", 2, 100, DT_REG));
	CK_OK(mfs_dir_add(tp, dp, "bb", 2, 101, DT_REG));
	CK_OK(mfs_dir_add(tp, dp, "cc", 2, 102, DT_REG));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(dp->dformat, MFS_FMT_LOCAL);
	memcpy(lit, dp->lit, dp->litsize);
	size0 = dp->size;
	dp->lit[8 + 9] = 200;                       /* first name overruns the size */
	expect_corrupt(dp, "zz", 2);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_EQ(mfs_dir_add(tp, dp, "zz", 2, 5, DT_REG), -EFSCORRUPTED);
	mfs_trans_cancel(tp);
	memcpy(dp->lit, lit, dp->litsize);
	dp->lit[8 + 9] = 0;                         /* empty name */
	expect_corrupt(dp, "zz", 2);
	memcpy(dp->lit, lit, dp->litsize);
	dp->size = 5;                               /* shorter than the parent field */
	expect_corrupt(dp, "zz", 2);
	dp->size = size0;
	dp->lit[8 + 11] = '/';                      /* a '/' in a stored name */
	CK_EQ(mfs_dir_check(dp), -EFSCORRUPTED);
	memcpy(dp->lit, lit, dp->litsize);
	memcpy(dp->lit + 8, lit + 8 + 13, 13);      /* first two entries swapped: out of order */
	memcpy(dp->lit + 8 + 13, lit + 8, 13);
	CK_EQ(mfs_dir_check(dp), -EFSCORRUPTED);
	memcpy(dp->lit, lit, dp->litsize);
	memset(dp->lit + 8, 0, 8);                  /* inode 0 */
	CK_EQ(mfs_dir_check(dp), -EFSCORRUPTED);
	memcpy(dp->lit, lit, dp->litsize);
	CK_OK(mfs_dir_check(dp));

	/* btree of one leaf: 20 short names and one of 200 bytes (6 records) */
	memset(longname, 'L', sizeof(longname));
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (unsigned i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "short%02u", i);
		CK_OK(mfs_dir_add(tp, dp, name, 7, 200 + i, DT_REG));
	}
	CK_OK(mfs_dir_add(tp, dp, longname, sizeof(longname), 300, DT_DIR));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(dp->dformat, MFS_FMT_BTREE);
	CK_EQ(dp->dnext, 1);
	CK_OK(mfs_dir_check(dp));
	memcpy(&r, dp->lit, sizeof(r));
	memcpy(lit, dp->lit, dp->litsize);
	CK_OK(mfs_buf_read(t.fs->bc, mfs_get64(r.rootblock), NULL, &bp));
	blk = bp->data;
	memcpy(saved, blk, sizeof(saved));
	nrecs = mfs_get16(((struct mfs_btree_block *)blk)->numrecs);
	CK_EQ(nrecs, 3 + 20 + 6);
	for (unsigned i = 0; i < nrecs; i++) {
		struct mfs_dir_rec *h = (void *)(blk + 64 + i * MFS_DIR_REC_SIZE);

		if ((mfs_get64(h->key) & 0xff) == 0 && h->namelen == 200)
			ilong = i;
		if ((mfs_get64(h->key) & 0xff) == 0 && h->namelen == 7 && h->name[0] == 's')
			ishort = i;
	}
	CK_TRUE(ilong + 5 < nrecs);
	/* the long head claims a short name: its continuations are orphans */
	((struct mfs_dir_rec *)(blk + 64 + ilong * MFS_DIR_REC_SIZE))->namelen = 10;
	CK_EQ(mfs_dir_iterate(dp, 0, iter_nop, NULL), -EFSCORRUPTED);
	CK_EQ(mfs_dir_check(dp), -EFSCORRUPTED);
	memcpy(blk, saved, sizeof(saved));
	/* the last continuation renumbered: the name is incomplete */
	blk[64 + (ilong + 5) * MFS_DIR_REC_SIZE] = 6;
	expect_corrupt(dp, longname, sizeof(longname));
	memcpy(blk, saved, sizeof(saved));
	/* a short name changed: no longer at its hash */
	((struct mfs_dir_rec *)(blk + 64 + ishort * MFS_DIR_REC_SIZE))->name[5] ^= 1;
	CK_EQ(mfs_dir_check(dp), -EFSCORRUPTED);
	memcpy(blk, saved, sizeof(saved));
	mfs_buf_put(bp);
	CK_OK(mfs_dir_check(dp));
	/* the root in the inode */
	mfs_put64(r.count, 99);
	memcpy(dp->lit, &r, sizeof(r));
	CK_EQ(mfs_dir_check(dp), -EFSCORRUPTED);
	memcpy(dp->lit, lit, dp->litsize);
	dp->dnext = 2;                              /* levels disagree */
	expect_corrupt(dp, "aa", 2);
	dp->dnext = 1;
	memcpy(&r, lit, sizeof(r));
	mfs_put64(r.rootblock, 1);                  /* a fixed AG block */
	memcpy(dp->lit, &r, sizeof(r));
	expect_corrupt(dp, "aa", 2);
	memcpy(dp->lit, lit, dp->litsize);
	CK_OK(mfs_dir_lookup(dp, longname, sizeof(longname), &ino, NULL));
	CK_EQ(ino, 300);
	CK_OK(mfs_dir_check(dp));
	put_dir(dp);
	tu_img_destroy(&t);
}
END_TEST

/* What a listing hands over, folded in order (names, inodes, types, cookies). */
struct fold {
	uint64_t n, sum;
	uint64_t stop_at;           /* 0, or the entry whose call returns stop_rc */
	int stop_rc;
};

static int fold_fn(void *priv, const char *name, unsigned len, uint64_t ino, uint8_t ftype,
		   uint64_t next)
{
	struct fold *f = priv;

	if (len <= 2 && name[0] == '.' && (len == 1 || name[1] == '.'))
		return 0;               /* mfs_dir_iterate's "." and ".." */
	f->n++;
	f->sum = (f->sum ^ ino ^ (uint64_t)ftype << 56 ^ next << 8 ^ len) * 1000003u;
	for (unsigned i = 0; i < len; i++)
		f->sum = (f->sum ^ (uint8_t)name[i]) * 1099511628211ull;
	return f->n == f->stop_at ? f->stop_rc : 0;
}

static void expect_same_listing(struct mfs_inode *dp, uint64_t want_n)
{
	struct fold a = { 0 }, b = { 0 };

	CK_OK(mfs_dir_iterate(dp, 0, fold_fn, &a));
	CK_OK(mfs_dir_check_iterate(dp, fold_fn, &b));
	CK_EQ(a.n, want_n);
	CK_EQ(b.n, want_n);
	CK_EQ(a.sum, b.sum);
}

/* mfs_dir_check_iterate: the check and the listing in one walk give the listing of
 * mfs_dir_iterate (inline, one-leaf and deeper trees, long names), stop and fail when fn
 * says so, and fail on damage after handing over only the entries before it. */
START_TEST(test_check_iterate)
{
	struct tu_img t;
	struct mfs_inode *dp;
	struct mfs_trans *tp;
	struct mfs_dir_root r;
	struct mfs_buf *bp;
	struct fold f = { 0 };
	char name[300];
	uint8_t *blk;
	unsigned nrecs, last = 0;

	mfs_dir_test_set_hash_mask(0xffffffffu);
	timg_make(&t, 4096, 64ull << 20);
	dp = make_dir(&t);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (unsigned i = 0; i < 3; i++) {
		static const uint8_t types[3] = { DT_REG, DT_LNK, DT_DIR };

		snprintf(name, sizeof(name), "in%u", i);
		CK_OK(mfs_dir_add(tp, dp, name, 3, 100 + i, types[i]));
	}
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(dp->dformat, MFS_FMT_LOCAL);
	expect_same_listing(dp, 3);
	/* fn's error and stop end the walk and are returned */
	f.stop_at = 2;
	f.stop_rc = -EIO;
	CK_EQ(mfs_dir_check_iterate(dp, fold_fn, &f), -EIO);
	CK_EQ(f.n, 2);
	/* one leaf of short names: the last head's name no longer at its hash */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (unsigned i = 0; i < 20; i++) {
		snprintf(name, sizeof(name), "short%02u", i);
		CK_OK(mfs_dir_add(tp, dp, name, 7, 200 + i, DT_REG));
	}
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(dp->dformat, MFS_FMT_BTREE);
	CK_EQ(dp->dnext, 1);
	expect_same_listing(dp, 23);
	memset(&f, 0, sizeof(f));
	f.stop_at = 7;
	f.stop_rc = 1;
	CK_EQ(mfs_dir_check_iterate(dp, fold_fn, &f), 1);
	CK_EQ(f.n, 7);
	memcpy(&r, dp->lit, sizeof(r));
	CK_OK(mfs_buf_read(t.fs->bc, mfs_get64(r.rootblock), NULL, &bp));
	blk = bp->data;
	nrecs = mfs_get16(((struct mfs_btree_block *)blk)->numrecs);
	CK_EQ(nrecs, 23);
	for (unsigned i = 0; i < nrecs; i++)
		if (((struct mfs_dir_rec *)(blk + 64 + i * MFS_DIR_REC_SIZE))->name[0] == 's')
			last = i;
	CK_TRUE(last > 0);
	((struct mfs_dir_rec *)(blk + 64 + last * MFS_DIR_REC_SIZE))->name[6] ^= 1;
	memset(&f, 0, sizeof(f));
	CK_EQ(mfs_dir_check_iterate(dp, fold_fn, &f), -EFSCORRUPTED);
	CK_EQ(f.n, last);
	((struct mfs_dir_rec *)(blk + 64 + last * MFS_DIR_REC_SIZE))->name[6] ^= 1;
	mfs_buf_put(bp);
	/* a deeper tree with names of every length class (continuations) */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (unsigned i = 0; i < 600; i++) {
		int len = snprintf(name, sizeof(name), "%0*u", (int)(1 + (i * 37) % 250), i);

		CK_OK(mfs_dir_add(tp, dp, name, (unsigned)len, 1000 + i, DT_REG));
		if (i % 100 == 99) {
			CK_OK(mfs_trans_commit(tp));
			CK_OK(mfs_trans_alloc(t.fs, &tp));
		}
	}
	CK_OK(mfs_trans_commit(tp));
	CK_TRUE(dp->dnext >= 2);
	expect_same_listing(dp, 623);
	CK_OK(mfs_dir_check(dp));
	put_dir(dp);
	tu_img_destroy(&t);
}
END_TEST

/* Lookups and readdir from several threads under the shared lock of one btree directory. */
#define PAR_THREADS 4
#if UNDER_ASAN
#define PAR_N 3000u
#else
#define PAR_N 20000u
#endif

struct par {
	struct mfs_inode *dp;
	uint64_t seed;
	int errors;
};

static int par_count(void *priv, const char *name, unsigned len, uint64_t ino, uint8_t ftype,
		     uint64_t next)
{
	(*(unsigned *)priv)++;
	return 0;
}

static void *par_worker(void *arg)
{
	struct par *p = arg;
	uint64_t x = p->seed | 1;

	for (unsigned i = 0; i < PAR_N; i++) {
		char name[32];
		uint64_t ino;
		unsigned k, n = 0;
		int len;

		x ^= x >> 12;
		x ^= x << 25;
		x ^= x >> 27;
		k = (unsigned)((x * 2685821657736338717ull) >> 33) % PAR_N;
		len = snprintf(name, sizeof(name), "entry.%u", k);
		pthread_rwlock_rdlock(&p->dp->lock);
		if (mfs_dir_lookup(p->dp, name, (unsigned)len, &ino, NULL) || ino != 1000 + k)
			p->errors++;
		if (i % 4000 == 0 && (mfs_dir_iterate(p->dp, 0, par_count, &n) || n != PAR_N + 2))
			p->errors++;
		pthread_rwlock_unlock(&p->dp->lock);
	}
	return NULL;
}

START_TEST(test_parallel_readers)
{
	struct tu_img t;
	struct mfs_inode *dp;
	struct mfs_trans *tp;
	pthread_t th[PAR_THREADS];
	struct par p[PAR_THREADS];

	mfs_dir_test_set_hash_mask(0xffffffffu);
	timg_make(&t, 4096, 64ull << 20);
	dp = make_dir(&t);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (unsigned i = 0; i < PAR_N; i++) {
		char name[32];
		int len = snprintf(name, sizeof(name), "entry.%u", i);

		CK_OK(mfs_dir_add(tp, dp, name, (unsigned)len, 1000 + i, DT_REG));
	}
	CK_OK(mfs_trans_commit(tp));
	pthread_rwlock_unlock(&dp->lock);
	/* a cold cache: every thread reads blocks in */
	CK_OK(mfs_bcache_flush(t.fs->bc));
	for (int i = 0; i < PAR_THREADS; i++) {
		p[i].dp = dp;
		p[i].seed = 77 + (uint64_t)i * 1000003;
		p[i].errors = 0;
		CK_EQ(pthread_create(&th[i], NULL, par_worker, &p[i]), 0);
	}
	for (int i = 0; i < PAR_THREADS; i++) {
		pthread_join(th[i], NULL);
		CK_EQ(p[i].errors, 0);
	}
	pthread_rwlock_wrlock(&dp->lock);
	CK_OK(mfs_dir_check(dp));
	put_dir(dp);
	tu_img_destroy(&t);
}
END_TEST

static Suite *dir_suite(void)
{
	Suite *s = suite_create("dir");
	TCase *tc = tcase_create("dir");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_hash_vectors);
	tcase_add_test(tc, test_names);
	tcase_add_test(tc, test_cancel_exact);
	tcase_add_test(tc, test_corrupt);
	tcase_add_test(tc, test_check_iterate);
	tcase_add_test(tc, test_parallel_readers);
	tcase_add_loop_test(tc, test_readdir_stable, 0, 2);
	tcase_add_test(tc, test_one_chain);
	tcase_add_loop_test(tc, test_model_big, 0, 2);
	tcase_add_test(tc, test_rates);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite_needing("mendfs_db", dir_suite());
}
