/*
 * check_xattr.c — extended attributes (lib/xattr.c) against a model: seeded random
 * set / replace / remove / get / list across the four namespaces with names of 1..255 bytes
 * and values of 0..65536 bytes, through the inline → btree → inline transitions; thousands
 * of attributes on one inode (also with forced hash collisions); a directory with inline
 * entries and a file with inline extents next to the attribute fork (their data forks stay
 * intact); a file's extent btree left only its root's bytes by an inline attribute fork
 * freed with its last extent; the whole fork freed in bounded steps; a cancelled transaction
 * leaving the image byte-identical; argument errors; damaged records reported as corruption.
 *
 * After each phase: the model against get and list, mfs_xattr_check (btree verify, hashes,
 * value CRCs), the inode's block count, the reverse map's attribute-fork records of the
 * inode against the fork's blocks, and mendfs_db -c check on the flushed image.
 * MFS_SEED=n replays a seed.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ag.h"
#include "bcache.h"
#include "bmap.h"
#include "btree.h"
#include "byteorder.h"
#include "dir.h"
#include "format.h"
#include "fs.h"
#include "ialloc.h"
#include "inode.h"
#include "log.h"
#include "mendfs_format.h"
#include "trans.h"
#include "xattr.h"
#include "tu.h"

#if UNDER_ASAN
#define MODEL_OPS  4000u
#define MANY       5000u
#else
#define MODEL_OPS  12000u
#define MANY       20000u
#endif

/* ---- images ------------------------------------------------------------------------------- */
struct ximg {
	char path[TU_PATH_MAX];
	struct mfs_fs *fs;
};

static void ximg_open(struct ximg *t)
{
	struct mfs_buf *bp;

	t->fs = tu_fs_open(t->path, 0);
	CK_OK(mfs_icache_init(t->fs, 0));
	/* as a mounted filesystem's: summary counters are not expected to match the AGs */
	CK_OK(mfs_read_sb(t->fs, 0, &bp));
	mfs_put32(((struct mfs_sb *)bp->data)->state, MFS_STATE_DIRTY);
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
}

static void ximg_close(struct ximg *t)
{
	CK_OK(mfs_icache_destroy(t->fs));
	tu_fs_close(t->fs);
	t->fs = NULL;
}

static void ximg_make(struct ximg *t, uint32_t bs, uint32_t isz, uint64_t bytes)
{
	struct mfs_format_opts o;

	memset(&o, 0, sizeof(o));
	o.blocksize = bs;
	o.inodesize = isz;
	o.agcount = 2;
	tu_format_new(t->path, "mendfs_xattr", bytes, &o);
	ximg_open(t);
}

static void ximg_destroy(struct ximg *t)
{
	if (t->fs)
		ximg_close(t);
	tu_image_remove(t->path);
}

/* Flush, run mendfs_db's check (free space against the reverse map...), reopen. */
static void db_check(struct ximg *t)
{
	char db[512];

	ximg_close(t);
	if (tu_program("mendfs_db", db, sizeof(db)) == 0)
		CK_EQ(tu_run("'%s' -c check %s >/dev/null", db, t->path), 0);
	ximg_open(t);
}

/* A new inode of type `mode` (a directory is initialised empty), referenced and locked
 * exclusive. */
static struct mfs_inode *make_inode(struct ximg *t, uint16_t mode)
{
	struct mfs_trans *tp;
	struct mfs_inode *ip;
	uint64_t ino;

	CK_OK(mfs_trans_alloc(t->fs, &tp));
	CK_OK(mfs_ialloc(tp, t->fs->geo.rootino, mode, &ino));
	CK_OK(mfs_trans_commit(tp));
	CK_OK(mfs_iget(t->fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	CK_OK(mfs_trans_alloc(t->fs, &tp));
	ip->nlink = 1;
	if (S_ISDIR(mode))
		CK_OK(mfs_dir_init(tp, ip, t->fs->geo.rootino));
	else
		CK_OK(mfs_inode_log(tp, ip));
	CK_OK(mfs_trans_commit(tp));
	return ip;
}

static void put_inode(struct mfs_inode *ip)
{
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
}

/* Re-get inode `ino` after a reopen, locked exclusive. */
static struct mfs_inode *get_inode(struct ximg *t, uint64_t ino)
{
	struct mfs_inode *ip;

	CK_OK(mfs_iget(t->fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	return ip;
}

/* ---- reverse map: the blocks of `ino` mapped to its attribute fork ------------------------ */
struct rmsum {
	uint64_t ino, attr_blocks, bmbt_attr, all_blocks;
};

static int rm_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_rmap_rec *r = rec;
	struct rmsum *s = priv;
	uint64_t off = mfs_get64(r->offset);

	(void)cur;
	if (mfs_get64(r->owner) == s->ino)
		s->all_blocks += mfs_get32(r->blockcount);
	if (mfs_get64(r->owner) == s->ino && (off & MFS_RMAP_ATTR_FORK)) {
		s->attr_blocks += mfs_get32(r->blockcount);
		if (off & MFS_RMAP_BMBT_BLOCK)
			s->bmbt_attr += mfs_get32(r->blockcount);
	}
	return 0;
}

static struct rmsum rmap_sum(struct mfs_fs *fs, uint64_t ino)
{
	struct rmsum s = { .ino = ino };

	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++) {
		struct mfs_btree_cur cur;
		struct mfs_buf *agh;

		CK_OK(mfs_read_agh(fs, agno, &agh));
		mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_RMAP, agh);
		CK_OK(mfs_btree_query_range(&cur, NULL, NULL, rm_fn, &s));
		mfs_btree_cur_release(&cur);
		mfs_buf_put(agh);
	}
	return s;
}

static uint64_t rmap_attr_blocks(struct mfs_fs *fs, uint64_t ino)
{
	return rmap_sum(fs, ino).attr_blocks;
}

/* ---- the model ---------------------------------------------------------------------------- */
struct mattr {
	unsigned ns, len;
	char name[MFS_XATTR_NAME_MAX];
	uint32_t vlen;
	uint8_t *value;
	int seen;
};

struct model {
	struct mattr *v;
	size_t n, cap;
	unsigned long sets, replaces, removes, gets, errs;
	int saw_local, saw_btree, back_local;
};

static void model_free(struct model *m)
{
	for (size_t i = 0; i < m->n; i++)
		free(m->v[i].value);
	free(m->v);
	memset(m, 0, sizeof(*m));
}

static int model_find(const struct model *m, unsigned ns, const char *name, unsigned len)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->v[i].ns == ns && m->v[i].len == len && !memcmp(m->v[i].name, name, len))
			return (int)i;
	return -1;
}

static void model_put(struct model *m, unsigned ns, const char *name, unsigned len,
		      const uint8_t *value, uint32_t vlen)
{
	int i = model_find(m, ns, name, len);
	struct mattr *a;

	if (i < 0) {
		if (m->n == m->cap) {
			m->cap = m->cap ? 2 * m->cap : 64;
			m->v = realloc(m->v, m->cap * sizeof(*m->v));
			CK_TRUE(m->v);
		}
		a = &m->v[m->n++];
		a->ns = ns;
		a->len = len;
		memcpy(a->name, name, len);
		a->value = NULL;
	} else {
		a = &m->v[i];
		free(a->value);
	}
	a->vlen = vlen;
	a->value = malloc(vlen ? vlen : 1);
	CK_TRUE(a->value);
	if (vlen)
		memcpy(a->value, value, vlen);
}

static void model_copy(struct model *dst, const struct model *src)
{
	memset(dst, 0, sizeof(*dst));
	for (size_t i = 0; i < src->n; i++)
		model_put(dst, src->v[i].ns, src->v[i].name, src->v[i].len, src->v[i].value,
			  src->v[i].vlen);
}

static void model_del(struct model *m, int i)
{
	free(m->v[i].value);
	m->v[i] = m->v[--m->n];
}

/* A random name of 1..255 bytes (no NUL); mostly short. */
static unsigned rand_name(char *buf)
{
	unsigned r = tu_rand_below(100), len;

	if (r < 60)
		len = 1 + tu_rand_below(12);
	else if (r < 85)
		len = 13 + tu_rand_below(60);
	else if (r < 95)
		len = 73 + tu_rand_below(182);
	else
		len = MFS_XATTR_NAME_MAX;
	for (unsigned i = 0; i < len; i++)
		buf[i] = (char)(1 + tu_rand_below(255));
	if (len < 4)    /* few short names: repeat them often, to replace and collide */
		for (unsigned i = 0; i < len; i++)
			buf[i] = (char)('a' + tu_rand_below(3));
	return len;
}

/* A random value length: mostly small, sometimes at the boundaries and up to 64 KiB. */
static uint32_t rand_vlen(unsigned big_pct)
{
	unsigned r = tu_rand_below(100);

	if (r < big_pct) {
		switch (tu_rand_below(6)) {
		case 0: return MFS_XATTR_SIZE_MAX;
		case 1: return MFS_XATTR_INREC_MAX + 1;
		default: return MFS_XATTR_INREC_MAX + 1 + tu_rand_below(MFS_XATTR_SIZE_MAX -
									 MFS_XATTR_INREC_MAX);
		}
	}
	if (r < 50)
		return tu_rand_below(16);
	if (r < 80)
		return tu_rand_below(100);
	if (r < 95)
		return tu_rand_below(MFS_XATTR_INREC_MAX + 1);
	return MFS_XATTR_INREC_MAX;
}

static void rand_fill(uint8_t *p, uint32_t n)
{
	for (uint32_t i = 0; i < n; i += 8) {
		uint64_t v = tu_rand();

		memcpy(p + i, &v, n - i < 8 ? n - i : 8);
	}
}

static void note_format(struct model *m, const struct mfs_inode *ip)
{
	if (ip->aformat == MFS_FMT_BTREE)
		m->saw_btree = 1;
	if (ip->aformat == MFS_FMT_LOCAL) {
		m->saw_local = 1;
		if (m->saw_btree)
			m->back_local = 1;
	}
}

static uint8_t vbuf[MFS_XATTR_SIZE_MAX + 16];

/* One random operation in tp, checked against the model. */
static void random_op(struct mfs_trans *tp, struct mfs_inode *ip, struct model *m,
		      unsigned add_pct, unsigned big_pct)
{
	static uint8_t val[MFS_XATTR_SIZE_MAX];
	char name[MFS_XATTR_NAME_MAX];
	unsigned ns = 1 + tu_rand_below(MFS_XATTR_NS_MAX), len, r = tu_rand_below(100);
	int i;

	if (m->n && tu_rand_below(100) < 40) {
		/* an existing one */
		struct mattr *a = &m->v[tu_rand_below((uint32_t)m->n)];

		ns = a->ns;
		len = a->len;
		memcpy(name, a->name, len);
	} else {
		len = rand_name(name);
	}
	i = model_find(m, ns, name, len);
	if (r < add_pct) {
		uint32_t vlen = rand_vlen(big_pct);
		int flags = tu_rand_below(3) == 0 ? 0 : (i >= 0 ? XATTR_REPLACE : XATTR_CREATE);
		int wrong = tu_rand_below(10) == 0;

		rand_fill(val, vlen);
		if (wrong) {
			/* the opposite flag: refused, nothing changes */
			flags = i >= 0 ? XATTR_CREATE : XATTR_REPLACE;
			CK_EQ(mfs_xattr_set(tp, ip, ns, name, len, val, vlen, flags),
			      i >= 0 ? -EEXIST : -ENODATA);
			m->errs++;
			return;
		}
		CK_OK(mfs_xattr_set(tp, ip, ns, name, len, val, vlen, flags));
		model_put(m, ns, name, len, val, vlen);
		if (i >= 0)
			m->replaces++;
		else
			m->sets++;
	} else if (r < add_pct + 30) {
		if (i < 0) {
			CK_EQ(mfs_xattr_remove(tp, ip, ns, name, len), -ENODATA);
			m->errs++;
			return;
		}
		CK_OK(mfs_xattr_remove(tp, ip, ns, name, len));
		model_del(m, i);
		m->removes++;
	} else {
		size_t vl = 0;
		int err = mfs_xattr_get(ip, ns, name, len, vbuf, sizeof(vbuf), &vl);

		if (i < 0) {
			CK_EQ(err, -ENODATA);
		} else {
			CK_OK(err);
			T_UEQ(vl, m->v[i].vlen);
			T_TRUE(vl == 0 || !memcmp(vbuf, m->v[i].value, vl));
		}
		m->gets++;
	}
	note_format(m, ip);
}

struct listck {
	struct model *m;
	size_t n;
};

static int list_fn(void *priv, unsigned ns, const char *name, unsigned len, size_t valuelen)
{
	struct listck *l = priv;
	int i = model_find(l->m, ns, name, len);

	T_TRUE(i >= 0);
	T_UEQ(valuelen, l->m->v[i].vlen);
	T_IEQ(l->m->v[i].seen, 0);
	l->m->v[i].seen = 1;
	l->n++;
	return 0;
}

/* The blocks the data fork owns (0 for an empty file or an inline directory). */
static uint64_t data_blocks;

/* Everything that must hold between phases. */
static void compare(struct mfs_inode *ip, struct model *m)
{
	struct listck l = { m, 0 };
	uint64_t nblk, count;

	for (size_t i = 0; i < m->n; i++) {
		size_t vl = 0;

		m->v[i].seen = 0;
		CK_OK(mfs_xattr_get(ip, m->v[i].ns, m->v[i].name, m->v[i].len, NULL, 0, &vl));
		T_UEQ(vl, m->v[i].vlen);
		CK_OK(mfs_xattr_get(ip, m->v[i].ns, m->v[i].name, m->v[i].len, vbuf, vl + 1,
				    &vl));
		T_TRUE(vl == 0 || !memcmp(vbuf, m->v[i].value, vl));
	}
	CK_OK(mfs_xattr_list(ip, list_fn, &l));
	T_UEQ(l.n, m->n);
	CK_OK(mfs_xattr_check(ip, &nblk, &count));
	T_UEQ(count, m->n);
	T_UEQ(ip->nblocks, data_blocks + nblk);
	T_UEQ(rmap_attr_blocks(ip->fs, ip->ino), nblk);
	if (m->n == 0) {
		T_UEQ(ip->aformat, MFS_FMT_NONE);
		T_UEQ(ip->forkoff, 0);
	}
}

/* Drive the inode towards `target` attributes with `ops` random operations, one transaction
 * each (sometimes several operations in one). */
static void drive(struct mfs_fs *fs, struct mfs_inode *ip, struct model *m, size_t target,
		  unsigned ops, unsigned big_pct)
{
	for (unsigned k = 0; k < ops; k++) {
		struct mfs_trans *tp;
		unsigned add = m->n < target ? 70 : 25;
		unsigned nops = tu_rand_below(8) == 0 ? 1 + tu_rand_below(8) : 1;

		CK_OK(mfs_trans_alloc(fs, &tp));
		for (unsigned j = 0; j < nops; j++)
			random_op(tp, ip, m, add, big_pct);
		CK_OK(mfs_trans_commit(tp));
	}
}

/* ---- tests -------------------------------------------------------------------------------- */
static const struct { uint32_t bs, isz; } geoms[] = {
	{ 4096, 256 }, { 1024, 512 }, { 4096, 2048 },
};

START_TEST(test_model)
{
	struct ximg t;
	struct model m;
	struct mfs_inode *ip;
	uint64_t ino;
	double t0 = tu_now();

	tu_srand(tu_seed("MFS_SEED", "xattr model"));
	mfs_dir_test_set_hash_mask(0xffffffffu);
	memset(&m, 0, sizeof(m));
	ximg_make(&t, geoms[_i].bs, geoms[_i].isz, 256ull << 20);
	ip = make_inode(&t, S_IFREG | 0644);
	ino = ip->ino;
	data_blocks = 0;
	/* phase 1: a few small attributes (inline, then past the literal area) */
	drive(t.fs, ip, &m, 6, MODEL_OPS / 8, 0);
	compare(ip, &m);
	/* phase 2: hundreds, with large values */
	drive(t.fs, ip, &m, 300, MODEL_OPS / 2, 8);
	compare(ip, &m);
	put_inode(ip);
	db_check(&t);
	ip = get_inode(&t, ino);
	compare(ip, &m);
	/* phase 3: back down to a handful, then none, the largest first and a tiny one last:
	 * the fork must go back inline on the way */
	drive(t.fs, ip, &m, 0, MODEL_OPS / 4, 8);
	compare(ip, &m);
	{
		struct mfs_trans *tp;

		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, "\xff", 1, "1", 1, 0));
		CK_OK(mfs_trans_commit(tp));
		model_put(&m, MFS_XATTR_NS_USER, "\xff", 1, (const uint8_t *)"1", 1);
	}
	while (m.n) {
		struct mfs_trans *tp;
		size_t big = 0;

		for (size_t i = 1; i < m.n; i++)
			if (m.v[i].len + m.v[i].vlen > m.v[big].len + m.v[big].vlen)
				big = i;
		if (big != m.n - 1) {
			struct mattr x = m.v[big];

			m.v[big] = m.v[m.n - 1];
			m.v[m.n - 1] = x;
		}

		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_OK(mfs_xattr_remove(tp, ip, m.v[m.n - 1].ns, m.v[m.n - 1].name,
				       m.v[m.n - 1].len));
		CK_OK(mfs_trans_commit(tp));
		model_del(&m, (int)m.n - 1);
		note_format(&m, ip);
	}
	compare(ip, &m);
	CK_TRUE(m.saw_local && m.saw_btree && m.back_local);
	CK_EQ(ip->nblocks, 0);
	put_inode(ip);
	db_check(&t);
	printf("  xattr model bs %u isz %u: %lu sets, %lu replaces, %lu removes, %lu gets, "
	       "%lu refused, %.2f s\n", geoms[_i].bs, geoms[_i].isz, m.sets, m.replaces,
	       m.removes, m.gets, m.errs, tu_now() - t0);
	model_free(&m);
	ximg_destroy(&t);
}
END_TEST

/* Thousands of attributes on one inode; hash mask 0xff forces long collision chains. */
static const uint32_t many_masks[] = { 0xffffffffu, 0xffu, 0 };

START_TEST(test_many)
{
	struct ximg t;
	struct model m;
	struct mfs_inode *ip;
	uint8_t val[700];
	char name[MFS_XATTR_NAME_MAX];
	double t0, tset, tget, tlist, trm;
	uint64_t nblk, ino;
	struct listck l;
	/* mask 0: one collision chain per namespace, every lookup walks it */
	unsigned nmany = many_masks[_i] ? MANY : MANY / 10;

	tu_srand(tu_seed("MFS_SEED", "xattr many"));
	mfs_dir_test_set_hash_mask(many_masks[_i]);
	memset(&m, 0, sizeof(m));
	ximg_make(&t, 4096, 256, 256ull << 20);
	ip = make_inode(&t, S_IFREG | 0644);
	ino = ip->ino;
	data_blocks = 0;
	t0 = tu_now();
	for (unsigned i = 0; i < nmany; i++) {
		struct mfs_trans *tp;
		unsigned ns = 1 + i % MFS_XATTR_NS_MAX;
		int len = snprintf(name, sizeof(name), "attribute-%06u", i);
		uint32_t vlen = i % 97 == 0 ? 600 : i % 40;

		if (i % 101 == 0) {     /* a few long names */
			memset(name + len, 'x', 200);
			len += 200;
		}
		rand_fill(val, vlen);
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_OK(mfs_xattr_set(tp, ip, ns, name, (unsigned)len, val, vlen, XATTR_CREATE));
		CK_OK(mfs_trans_commit(tp));
		model_put(&m, ns, name, (unsigned)len, val, vlen);
	}
	tset = tu_now() - t0;
	CK_EQ(ip->aformat, MFS_FMT_BTREE);
	CK_TRUE(ip->anext >= 2);
	t0 = tu_now();
	for (size_t i = 0; i < m.n; i++) {
		size_t vl;

		CK_OK(mfs_xattr_get(ip, m.v[i].ns, m.v[i].name, m.v[i].len, vbuf, sizeof(vbuf),
				    &vl));
		T_UEQ(vl, m.v[i].vlen);
		T_TRUE(vl == 0 || !memcmp(vbuf, m.v[i].value, vl));
	}
	tget = tu_now() - t0;
	t0 = tu_now();
	l.m = &m;
	l.n = 0;
	for (size_t i = 0; i < m.n; i++)
		m.v[i].seen = 0;
	CK_OK(mfs_xattr_list(ip, list_fn, &l));
	tlist = tu_now() - t0;
	T_UEQ(l.n, m.n);
	compare(ip, &m);
	put_inode(ip);
	db_check(&t);
	ip = get_inode(&t, ino);
	compare(ip, &m);
	CK_OK(mfs_xattr_check(ip, &nblk, NULL));
	t0 = tu_now();
	while (m.n) {
		struct mfs_trans *tp;
		size_t k = tu_rand_below((uint32_t)m.n);

		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_OK(mfs_xattr_remove(tp, ip, m.v[k].ns, m.v[k].name, m.v[k].len));
		CK_OK(mfs_trans_commit(tp));
		model_del(&m, (int)k);
		if (m.n == nmany / 2)
			compare(ip, &m);
	}
	trm = tu_now() - t0;
	compare(ip, &m);
	CK_EQ(ip->nblocks, 0);
	printf("  %u attributes (mask 0x%x, %llu blocks): %.0f sets/s, %.0f gets/s, "
	       "list %.0f names/s, %.0f removes/s\n", nmany, many_masks[_i],
	       (unsigned long long)nblk, nmany / tset, nmany / tget, nmany / tlist, nmany / trm);
	put_inode(ip);
	db_check(&t);
	mfs_dir_test_set_hash_mask(0xffffffffu);
	model_free(&m);
	ximg_destroy(&t);
}
END_TEST

/* A directory with inline entries: the attribute fork takes only the bytes the entries do
 * not use; lookups keep working through every transition, and the directory can still grow
 * (into its name btree) and shrink next to an attribute btree. */
START_TEST(test_dir_inline)
{
	struct ximg t;
	struct model m;
	struct mfs_inode *dp;
	struct mfs_trans *tp;
	uint8_t val[64];
	uint64_t ino;
	char name[32];

	tu_srand(tu_seed("MFS_SEED", "xattr dir"));
	mfs_dir_test_set_hash_mask(0xffffffffu);
	memset(&m, 0, sizeof(m));
	ximg_make(&t, 4096, 256, 64ull << 20);
	dp = make_inode(&t, S_IFDIR | 0755);
	data_blocks = 0;
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_dir_add(tp, dp, "ab", 2, 1000, DT_REG));
	CK_OK(mfs_dir_add(tp, dp, "cd", 2, 1001, DT_REG));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(dp->dformat, MFS_FMT_LOCAL);
	CK_EQ(dp->size, 8 + 2 * 13);
	/* a small attribute fits inline next to the 34 bytes of entries */
	memset(val, 7, sizeof(val));
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_xattr_set(tp, dp, MFS_XATTR_NS_USER, "u", 1, val, 10, 0));
	CK_OK(mfs_trans_commit(tp));
	model_put(&m, MFS_XATTR_NS_USER, "u", 1, val, 10);
	CK_EQ(dp->aformat, MFS_FMT_LOCAL);
	CK_TRUE(dp->forkoff * 8u >= dp->size);
	CK_OK(mfs_dir_lookup(dp, "ab", 2, &ino, NULL));
	CK_EQ(ino, 1000);
	CK_OK(mfs_dir_check(dp));
	compare(dp, &m);
	/* an ACL-sized one does not: the fork becomes a btree, the entries stay */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_xattr_set(tp, dp, MFS_XATTR_NS_SYSTEM, "posix_acl_default", 17, val, 44, 0));
	CK_OK(mfs_trans_commit(tp));
	model_put(&m, MFS_XATTR_NS_SYSTEM, "posix_acl_default", 17, val, 44);
	CK_EQ(dp->aformat, MFS_FMT_BTREE);
	CK_EQ(dp->dformat, MFS_FMT_LOCAL);
	CK_OK(mfs_dir_lookup(dp, "cd", 2, &ino, NULL));
	CK_EQ(ino, 1001);
	CK_OK(mfs_dir_check(dp));
	compare(dp, &m);
	/* the directory grows: into its name btree, next to the attribute btree */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (unsigned i = 0; i < 300; i++) {
		int len = snprintf(name, sizeof(name), "entry-%u", i);

		CK_OK(mfs_dir_add(tp, dp, name, (unsigned)len, 2000 + i, DT_REG));
	}
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(dp->dformat, MFS_FMT_BTREE);
	drive(t.fs, dp, &m, 40, 300, 5);
	CK_OK(mfs_dir_check(dp));
	for (unsigned i = 0; i < 300; i += 7) {
		int len = snprintf(name, sizeof(name), "entry-%u", i);

		CK_OK(mfs_dir_lookup(dp, name, (unsigned)len, &ino, NULL));
		CK_EQ(ino, 2000 + i);
	}
	/* data_blocks: the name btree's blocks */
	{
		uint64_t nblk;

		CK_OK(mfs_xattr_check(dp, &nblk, NULL));
		data_blocks = dp->nblocks - nblk;
	}
	compare(dp, &m);
	/* and shrinks back inline */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (unsigned i = 0; i < 300; i++) {
		int len = snprintf(name, sizeof(name), "entry-%u", i);

		CK_OK(mfs_dir_remove(tp, dp, name, (unsigned)len, &ino));
	}
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(dp->dformat, MFS_FMT_LOCAL);
	data_blocks = 0;
	CK_OK(mfs_dir_check(dp));
	CK_OK(mfs_dir_lookup(dp, "ab", 2, &ino, NULL));
	CK_EQ(ino, 1000);
	compare(dp, &m);
	/* every attribute removed: the data fork has the whole literal area again */
	drive(t.fs, dp, &m, 0, 200, 5);
	while (m.n) {
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_OK(mfs_xattr_remove(tp, dp, m.v[0].ns, m.v[0].name, m.v[0].len));
		CK_OK(mfs_trans_commit(tp));
		model_del(&m, 0);
	}
	compare(dp, &m);
	CK_EQ(dp->nblocks, 0);
	CK_OK(mfs_dir_check(dp));
	CK_OK(mfs_dir_lookup(dp, "cd", 2, &ino, NULL));
	CK_EQ(ino, 1001);
	put_inode(dp);
	db_check(&t);
	model_free(&m);
	ximg_destroy(&t);
}
END_TEST

/* An empty directory given an attribute (an ACL, say) that would fit inline only right after
 * its 8-byte header keeps room for its name btree's root: entries can still be added
 * (inline, then into the btree) and removed. */
START_TEST(test_dir_empty_grows)
{
	struct ximg t;
	struct model m;
	struct mfs_inode *dp;
	struct mfs_trans *tp;
	uint8_t val[512];
	unsigned vlen;
	uint64_t ino;
	char name[32];

	mfs_dir_test_set_hash_mask(0xffffffffu);
	memset(&m, 0, sizeof(m));
	ximg_make(&t, 4096, 256, 64ull << 20);
	dp = make_inode(&t, S_IFDIR | 0755);
	data_blocks = 0;
	/* an entry that would fit inline only if it took everything past the 8-byte header */
	memset(val, 5, sizeof(val));
	vlen = dp->litsize - 24;
	ck_assert_uint_le(vlen, sizeof(val));
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_xattr_set(tp, dp, MFS_XATTR_NS_USER, "a", 1, val, vlen, 0));
	CK_OK(mfs_trans_commit(tp));
	model_put(&m, MFS_XATTR_NS_USER, "a", 1, val, vlen);
	CK_EQ(dp->dformat, MFS_FMT_LOCAL);
	CK_TRUE(dp->forkoff * 8u >= sizeof(struct mfs_dir_root));
	for (unsigned i = 0; i < 100; i++) {
		int len = snprintf(name, sizeof(name), "e%u", i);

		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_OK(mfs_dir_add(tp, dp, name, (unsigned)len, 3000 + i, DT_REG));
		CK_OK(mfs_trans_commit(tp));
		if (i == 0)
			CK_EQ(dp->dformat, MFS_FMT_LOCAL);
	}
	CK_EQ(dp->dformat, MFS_FMT_BTREE);
	CK_OK(mfs_dir_check(dp));
	CK_OK(mfs_dir_lookup(dp, "e57", 3, &ino, NULL));
	CK_EQ(ino, 3057);
	{
		uint64_t nblk;

		CK_OK(mfs_xattr_check(dp, &nblk, NULL));
		data_blocks = dp->nblocks - nblk;
	}
	compare(dp, &m);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (unsigned i = 0; i < 100; i++) {
		int len = snprintf(name, sizeof(name), "e%u", i);

		CK_OK(mfs_dir_remove(tp, dp, name, (unsigned)len, &ino));
	}
	CK_OK(mfs_trans_commit(tp));
	data_blocks = 0;
	CK_OK(mfs_dir_check(dp));
	compare(dp, &m);
	put_inode(dp);
	db_check(&t);
	model_free(&m);
	ximg_destroy(&t);
}
END_TEST

struct walkck {
	struct mfs_bmap_ext e[8];
	unsigned n;
};

static int walk_fn(struct mfs_inode *ip, const struct mfs_bmap_ext *ext, void *priv)
{
	struct walkck *w = priv;

	(void)ip;
	if (w->n < 8)
		w->e[w->n] = *ext;
	w->n++;
	return 0;
}

/* A directory whose inline entries fill the literal area: its entries move into its name
 * btree to make room (a cancel restores everything), lookups keep working, and it goes back
 * inline next to the attribute fork when it shrinks.  An inline symlink target filling the
 * literal area leaves no way: -ENOSPC. */
START_TEST(test_dir_full)
{
	struct ximg t;
	struct model m;
	struct mfs_inode *dp, *lp;
	struct mfs_trans *tp;
	uint64_t ino;
	uint32_t crc0;
	char name[4] = "a0";

	mfs_dir_test_set_hash_mask(0xffffffffu);
	memset(&m, 0, sizeof(m));
	ximg_make(&t, 4096, 256, 64ull << 20);
	dp = make_inode(&t, S_IFDIR | 0755);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (unsigned i = 1; i <= 4; i++) {
		name[1] = (char)('0' + i);
		CK_OK(mfs_dir_add(tp, dp, name, 2, 1000 + i, DT_REG));
	}
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(dp->dformat, MFS_FMT_LOCAL);
	CK_EQ(dp->size, 8 + 4 * 13);
	crc0 = tu_image_crc(t.fs, t.path);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_xattr_set(tp, dp, MFS_XATTR_NS_USER, "x", 1, "0123456789", 10, 0));
	CK_EQ(dp->dformat, MFS_FMT_BTREE);
	CK_EQ(dp->aformat, MFS_FMT_LOCAL);
	mfs_trans_cancel(tp);
	CK_OK(mfs_inode_reload(dp));
	CK_EQ(tu_image_crc(t.fs, t.path), crc0);
	CK_EQ(dp->aformat, MFS_FMT_NONE);
	CK_EQ(dp->dformat, MFS_FMT_LOCAL);
	CK_OK(mfs_dir_check(dp));

	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_xattr_set(tp, dp, MFS_XATTR_NS_USER, "x", 1, "0123456789", 10, 0));
	CK_OK(mfs_trans_commit(tp));
	model_put(&m, MFS_XATTR_NS_USER, "x", 1, (const uint8_t *)"0123456789", 10);
	CK_EQ(dp->dformat, MFS_FMT_BTREE);
	CK_OK(mfs_dir_check(dp));
	for (unsigned i = 1; i <= 4; i++) {
		name[1] = (char)('0' + i);
		CK_OK(mfs_dir_lookup(dp, name, 2, &ino, NULL));
		CK_EQ(ino, 1000 + i);
	}
	data_blocks = 1;                            /* the name btree's root */
	compare(dp, &m);
	/* shrinking: back inline in the data fork that the attribute fork leaves */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (unsigned i = 1; i <= 3; i++) {
		name[1] = (char)('0' + i);
		CK_OK(mfs_dir_remove(tp, dp, name, 2, &ino));
	}
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(dp->dformat, MFS_FMT_LOCAL);
	CK_OK(mfs_dir_check(dp));
	CK_OK(mfs_dir_lookup(dp, "a4", 2, &ino, NULL));
	CK_EQ(ino, 1004);
	data_blocks = 0;
	compare(dp, &m);

	/* a symlink whose inline target fills the literal area */
	lp = make_inode(&t, S_IFLNK | 0777);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	lp->dformat = MFS_FMT_LOCAL;
	lp->size = lp->litsize - 2;
	memset(lp->lit, 't', lp->size);
	CK_OK(mfs_inode_log(tp, lp));
	CK_OK(mfs_trans_commit(tp));
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_EQ(mfs_xattr_set(tp, lp, MFS_XATTR_NS_SECURITY, "selinux", 7, "ctx", 3, 0), -ENOSPC);
	mfs_trans_cancel(tp);
	CK_OK(mfs_inode_reload(lp));
	CK_EQ(lp->aformat, MFS_FMT_NONE);
	put_inode(lp);
	put_inode(dp);
	db_check(&t);
	model_free(&m);
	ximg_destroy(&t);
}
END_TEST

/* A regular file whose inline extents fill the literal area: they move into an extent
 * btree to make room and read back the same. */
START_TEST(test_file_full)
{
	struct ximg t;
	struct model m;
	struct mfs_inode *ip;
	struct mfs_trans *tp;
	struct mfs_bmap_ext e;
	struct walkck w0, w1;

	tu_srand(tu_seed("MFS_SEED", "xattr file full"));
	mfs_dir_test_set_hash_mask(0xffffffffu);
	memset(&m, 0, sizeof(m));
	ximg_make(&t, 4096, 256, 64ull << 20);
	ip = make_inode(&t, S_IFREG | 0644);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_bmap_alloc(tp, ip, 0, 2, 0, &e));
	CK_OK(mfs_bmap_alloc(tp, ip, 100, 3, 0, &e));
	CK_OK(mfs_bmap_alloc(tp, ip, 1000, 1, MFS_BMAP_UNWRITTEN, &e));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(ip->dformat, MFS_FMT_EXTENTS);
	CK_EQ(ip->dnext, 3);
	CK_EQ(ip->dnext * sizeof(struct mfs_bmbt_rec), ip->litsize);
	memset(&w0, 0, sizeof(w0));
	CK_OK(mfs_bmap_walk(ip, walk_fn, &w0));
	CK_EQ(w0.n, 3);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_SYSTEM, "posix_acl_access", 16, vbuf, 28, 0));
	CK_OK(mfs_trans_commit(tp));
	model_put(&m, MFS_XATTR_NS_SYSTEM, "posix_acl_access", 16, vbuf, 28);
	CK_EQ(ip->dformat, MFS_FMT_BTREE);
	data_blocks = 6 + 1;                        /* the extents and the extent btree root */
	compare(ip, &m);
	memset(&w1, 0, sizeof(w1));
	CK_OK(mfs_bmap_walk(ip, walk_fn, &w1));
	CK_EQ(w1.n, 3);
	for (unsigned i = 0; i < 3; i++) {
		CK_EQ(w1.e[i].startoff, w0.e[i].startoff);
		CK_EQ(w1.e[i].len, w0.e[i].len);
		CK_EQ(w1.e[i].startblock, w0.e[i].startblock);
		CK_EQ(w1.e[i].unwritten, w0.e[i].unwritten);
	}
	/* both forks keep working */
	drive(t.fs, ip, &m, 20, 200, 5);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_bmap_alloc(tp, ip, 2000, 4, 0, &e));
	CK_OK(mfs_trans_commit(tp));
	{
		uint64_t nblk;

		CK_OK(mfs_xattr_check(ip, &nblk, NULL));
		data_blocks = ip->nblocks - nblk;
		CK_EQ(data_blocks, 6 + 4 + 1);
	}
	compare(ip, &m);
	memset(&w1, 0, sizeof(w1));
	CK_OK(mfs_bmap_walk(ip, walk_fn, &w1));
	CK_EQ(w1.n, 4);
	put_inode(ip);
	db_check(&t);
	model_free(&m);
	ximg_destroy(&t);
}
END_TEST

/* A regular file with inline extents: the attribute fork never takes their bytes, and the
 * extent map reads the same through every transition. */
START_TEST(test_file_extents)
{
	struct ximg t;
	struct model m;
	struct mfs_inode *ip;
	struct mfs_trans *tp;
	struct mfs_bmap_ext e;
	struct walkck w0, w1;

	tu_srand(tu_seed("MFS_SEED", "xattr extents"));
	mfs_dir_test_set_hash_mask(0xffffffffu);
	memset(&m, 0, sizeof(m));
	ximg_make(&t, 4096, 256, 64ull << 20);
	ip = make_inode(&t, S_IFREG | 0644);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_bmap_alloc(tp, ip, 0, 2, 0, &e));
	CK_OK(mfs_bmap_alloc(tp, ip, 100, 3, 0, &e));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(ip->dformat, MFS_FMT_EXTENTS);
	CK_EQ(ip->dnext, 2);
	data_blocks = 5;
	memset(&w0, 0, sizeof(w0));
	CK_OK(mfs_bmap_walk(ip, walk_fn, &w0));
	CK_EQ(w0.n, 2);
	drive(t.fs, ip, &m, 30, 400, 5);
	CK_TRUE(ip->forkoff * 8u >= 2 * sizeof(struct mfs_bmbt_rec));
	memset(&w1, 0, sizeof(w1));
	CK_OK(mfs_bmap_walk(ip, walk_fn, &w1));
	CK_EQ(w1.n, 2);
	for (unsigned i = 0; i < 2; i++) {
		CK_EQ(w1.e[i].startoff, w0.e[i].startoff);
		CK_EQ(w1.e[i].len, w0.e[i].len);
		CK_EQ(w1.e[i].startblock, w0.e[i].startblock);
	}
	compare(ip, &m);
	/* a third extent: the data fork (56 bytes next to the attribute btree root) becomes a
	 * btree or stays inline as room allows; either way both forks read back */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_bmap_alloc(tp, ip, 200, 1, 0, &e));
	CK_OK(mfs_trans_commit(tp));
	{
		uint64_t nblk;

		CK_OK(mfs_xattr_check(ip, &nblk, NULL));
		data_blocks = ip->nblocks - nblk;
		CK_TRUE(data_blocks >= 6);
	}
	memset(&w1, 0, sizeof(w1));
	CK_OK(mfs_bmap_walk(ip, walk_fn, &w1));
	CK_EQ(w1.n, 3);
	for (unsigned i = 0; i < 2; i++) {
		CK_EQ(w1.e[i].startoff, w0.e[i].startoff);
		CK_EQ(w1.e[i].len, w0.e[i].len);
		CK_EQ(w1.e[i].startblock, w0.e[i].startblock);
	}
	compare(ip, &m);
	drive(t.fs, ip, &m, 0, 300, 5);
	compare(ip, &m);
	memset(&w1, 0, sizeof(w1));
	CK_OK(mfs_bmap_walk(ip, walk_fn, &w1));
	CK_EQ(w1.n, 3);
	put_inode(ip);
	db_check(&t);
	model_free(&m);
	ximg_destroy(&t);
}
END_TEST

/* An inline attribute fork that leaves the data fork only its btree root (no room for one
 * inline record): the data fork is an extent btree even when it maps one block, and when
 * its last extent goes the tree goes too — back to an empty inline list, its root freed and
 * gone from the reverse map (it used to stay, an empty leaf that outlived the file: the
 * leak mendfs_stress found with setxattr and writes).  A new extent makes a tree again. */
START_TEST(test_file_empty_btree)
{
	struct ximg t;
	struct mfs_inode *ip;
	struct mfs_trans *tp;
	struct mfs_bmap_ext e;
	struct rmsum s;
	uint8_t val[512];
	size_t vl = 0;
	uint32_t v;
	uint64_t done;

	ximg_make(&t, 4096, 256, 64ull << 20);
	ip = make_inode(&t, S_IFREG | 0644);
	/* 20 one-block extents: more than fit inline, an extent btree */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (uint64_t off = 0; off < 40; off += 2)
		CK_OK(mfs_bmap_alloc(tp, ip, off, 1, 0, &e));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(ip->dformat, MFS_FMT_BTREE);
	CK_EQ(ip->nblocks, 21);
	memset(val, 0xa5, sizeof(val));
	/* the smallest inline value that leaves the data fork only its root */
	for (v = 1; v < ip->litsize && mfs_bmap_inline_max(ip) > 0; v++) {
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_TRUSTED, "t2", 2, val, v, 0));
		CK_OK(mfs_trans_commit(tp));
	}
	CK_EQ(mfs_bmap_inline_max(ip), 0);
	CK_EQ(ip->aformat, MFS_FMT_LOCAL);
	CK_EQ(ip->dformat, MFS_FMT_BTREE);
	CK_EQ(ip->nblocks, 21);
	for (uint64_t off = 0; off < 64;) {
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_OK(mfs_bmap_punch(tp, ip, off, 64 - off, &done));
		CK_OK(mfs_trans_commit(tp));
		off += done;
	}
	CK_EQ(ip->dformat, MFS_FMT_EXTENTS);
	CK_EQ(ip->dnext, 0);
	CK_EQ(ip->nblocks, 0);
	s = rmap_sum(t.fs, ip->ino);
	CK_EQ(s.all_blocks, 0);
	/* a write maps a block through a new tree; the attribute is untouched throughout */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_bmap_alloc(tp, ip, 5, 1, 0, &e));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(ip->dformat, MFS_FMT_BTREE);
	CK_EQ(ip->nblocks, 2);
	CK_EQ(rmap_sum(t.fs, ip->ino).all_blocks, 2);
	CK_OK(mfs_xattr_get(ip, MFS_XATTR_NS_TRUSTED, "t2", 2, val, sizeof(val), &vl));
	CK_EQ(vl, v - 1);
	put_inode(ip);
	db_check(&t);
	ximg_destroy(&t);
}
END_TEST

/* The whole fork freed in bounded steps. */
START_TEST(test_free_all)
{
	struct ximg t;
	struct model m;
	struct mfs_inode *ip, *small;
	struct mfs_trans *tp;
	unsigned calls = 0;
	int r;

	tu_srand(tu_seed("MFS_SEED", "xattr free_all"));
	mfs_dir_test_set_hash_mask(0xffffffffu);
	memset(&m, 0, sizeof(m));
	ximg_make(&t, 4096, 256, 256ull << 20);
	ip = make_inode(&t, S_IFREG | 0644);
	small = make_inode(&t, S_IFREG | 0644);
	data_blocks = 0;
	drive(t.fs, ip, &m, 500, 900, 10);
	compare(ip, &m);
	CK_TRUE(m.n > 3 * MFS_XATTR_FREE_PER_CALL);
	do {
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		r = mfs_xattr_free_all(tp, ip);
		CK_TRUE(r == 0 || r == 1);
		CK_OK(mfs_trans_commit(tp));
		calls++;
	} while (r == 1);
	CK_TRUE(calls >= m.n / MFS_XATTR_FREE_PER_CALL);
	CK_TRUE(calls <= m.n / MFS_XATTR_FREE_PER_CALL + 1);
	model_free(&m);
	compare(ip, &m);
	CK_EQ(ip->nblocks, 0);
	/* an inline fork goes in one call; no fork: nothing to do */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_xattr_set(tp, small, MFS_XATTR_NS_TRUSTED, "t", 1, "12", 2, 0));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(small->aformat, MFS_FMT_LOCAL);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_EQ(mfs_xattr_free_all(tp, small), 0);
	CK_EQ(mfs_xattr_free_all(tp, small), 0);
	CK_OK(mfs_trans_commit(tp));
	compare(small, &m);
	put_inode(small);
	put_inode(ip);
	db_check(&t);
	ximg_destroy(&t);
}
END_TEST

/* A transaction that converts, splits, writes and frees value blocks, then cancels, leaves
 * every byte of the image as it was. */
START_TEST(test_cancel_exact)
{
	struct ximg t;
	struct model m, m2;
	struct mfs_inode *ip, *other;
	struct mfs_trans *tp;
	uint32_t crc0;
	uint64_t nblocks0;

	tu_srand(tu_seed("MFS_SEED", "xattr cancel"));
	mfs_dir_test_set_hash_mask(0xffffffffu);
	memset(&m, 0, sizeof(m));
	memset(&m2, 0, sizeof(m2));
	ximg_make(&t, 4096, 256, 256ull << 20);
	ip = make_inode(&t, S_IFREG | 0644);
	other = make_inode(&t, S_IFREG | 0644);
	data_blocks = 0;
	drive(t.fs, ip, &m, 150, 400, 8);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_xattr_set(tp, other, MFS_XATTR_NS_USER, "one", 3, "1", 1, 0));
	CK_OK(mfs_trans_commit(tp));
	nblocks0 = ip->nblocks;
	crc0 = tu_image_crc(t.fs, t.path);

	/* work on a copy of the model: the cancel makes it wrong */
	model_copy(&m2, &m);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (unsigned i = 0; i < 600; i++)
		random_op(tp, ip, &m2, 60, 10);
	for (unsigned i = 0; i < 20; i++) {
		char name[16];
		int len = snprintf(name, sizeof(name), "n%u", i);

		CK_OK(mfs_xattr_set(tp, other, MFS_XATTR_NS_USER, name, (unsigned)len, vbuf,
				    100 + 400 * i, 0));
	}
	CK_EQ(other->aformat, MFS_FMT_BTREE);
	CK_TRUE(mfs_xattr_free_all(tp, ip) >= 0);
	mfs_trans_cancel(tp);
	CK_OK(mfs_inode_reload(ip));
	CK_OK(mfs_inode_reload(other));
	CK_EQ(tu_image_crc(t.fs, t.path), crc0);
	CK_EQ(other->aformat, MFS_FMT_LOCAL);
	CK_EQ(ip->nblocks, nblocks0);
	compare(ip, &m);
	model_free(&m2);
	model_free(&m);
	put_inode(other);
	put_inode(ip);
	db_check(&t);
	ximg_destroy(&t);
}
END_TEST

static int count_fn(void *priv, unsigned ns, const char *name, unsigned len, size_t vl)
{
	(*(unsigned *)priv)++;
	return 0;
}

/* Argument errors, get's buffer rules, full-name parsing. */
START_TEST(test_api)
{
	struct ximg t;
	struct mfs_inode *ip;
	struct mfs_trans *tp;
	char longname[MFS_XATTR_NAME_MAX + 2], full[300];
	static uint8_t big[MFS_XATTR_SIZE_MAX + 1];
	uint8_t buf[8];
	size_t vl = 99;
	unsigned ns = 0, n = 0;
	const char *nm;

	mfs_dir_test_set_hash_mask(0xffffffffu);
	ximg_make(&t, 4096, 256, 64ull << 20);
	ip = make_inode(&t, S_IFREG | 0644);
	memset(longname, 'n', sizeof(longname));
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_EQ(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, longname, 256, "v", 1, 0), -ERANGE);
	CK_EQ(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, longname, 0, "v", 1, 0), -EINVAL);
	CK_EQ(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, "a\0b", 3, "v", 1, 0), -EINVAL);
	CK_EQ(mfs_xattr_set(tp, ip, 0, "a", 1, "v", 1, 0), -EINVAL);
	CK_EQ(mfs_xattr_set(tp, ip, 5, "a", 1, "v", 1, 0), -EINVAL);
	CK_EQ(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, "a", 1, big, sizeof(big), 0), -E2BIG);
	CK_EQ(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, "a", 1, "v", 1, 4), -EINVAL);
	CK_EQ(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, "a", 1, "v", 1, XATTR_REPLACE),
	      -ENODATA);
	CK_EQ(mfs_xattr_remove(tp, ip, MFS_XATTR_NS_USER, "a", 1), -ENODATA);
	CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, longname, 255, big, sizeof(big) - 1,
			    XATTR_CREATE));
	CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, "e", 1, NULL, 0, XATTR_CREATE));
	CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_TRUSTED, "e", 1, "tt", 2, XATTR_CREATE));
	CK_EQ(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, "e", 1, "x", 1, XATTR_CREATE), -EEXIST);
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(mfs_xattr_get(ip, MFS_XATTR_NS_USER, longname, 256, buf, 8, &vl), -ERANGE);
	CK_EQ(mfs_xattr_get(ip, MFS_XATTR_NS_SECURITY, "e", 1, buf, 8, &vl), -ENODATA);
	CK_OK(mfs_xattr_get(ip, MFS_XATTR_NS_USER, "e", 1, buf, 8, &vl));
	CK_EQ(vl, 0);
	CK_OK(mfs_xattr_get(ip, MFS_XATTR_NS_TRUSTED, "e", 1, NULL, 0, &vl));
	CK_EQ(vl, 2);
	CK_EQ(mfs_xattr_get(ip, MFS_XATTR_NS_TRUSTED, "e", 1, buf, 1, &vl), -ERANGE);
	CK_OK(mfs_xattr_get(ip, MFS_XATTR_NS_TRUSTED, "e", 1, buf, 2, &vl));
	CK_TRUE(!memcmp(buf, "tt", 2));
	CK_OK(mfs_xattr_get(ip, MFS_XATTR_NS_USER, longname, 255, NULL, 0, &vl));
	CK_EQ(vl, MFS_XATTR_SIZE_MAX);
	CK_OK(mfs_xattr_list(ip, count_fn, &n));
	CK_EQ(n, 3);

	CK_OK(mfs_xattr_parse_name("user.foo", &ns, &nm));
	CK_EQ(ns, MFS_XATTR_NS_USER);
	CK_TRUE(!strcmp(nm, "foo"));
	CK_OK(mfs_xattr_parse_name("security.selinux", &ns, &nm));
	CK_EQ(ns, MFS_XATTR_NS_SECURITY);
	CK_OK(mfs_xattr_parse_name("trusted.x", &ns, &nm));
	CK_EQ(ns, MFS_XATTR_NS_TRUSTED);
	CK_OK(mfs_xattr_parse_name("system.posix_acl_access", &ns, &nm));
	CK_EQ(ns, MFS_XATTR_NS_SYSTEM);
	CK_OK(mfs_xattr_parse_name("system.posix_acl_default", &ns, &nm));
	CK_EQ(mfs_xattr_parse_name("system.other", &ns, &nm), -EOPNOTSUPP);
	CK_EQ(mfs_xattr_parse_name("bogus.x", &ns, &nm), -EOPNOTSUPP);
	CK_EQ(mfs_xattr_parse_name("user", &ns, &nm), -EOPNOTSUPP);
	CK_EQ(mfs_xattr_parse_name("user.", &ns, &nm), -EINVAL);
	memset(full, 'z', sizeof(full));
	memcpy(full, "user.", 5);
	full[5 + 256] = 0;
	CK_EQ(mfs_xattr_parse_name(full, &ns, &nm), -ERANGE);
	full[5 + 255] = 0;
	CK_OK(mfs_xattr_parse_name(full, &ns, &nm));
	CK_TRUE(!strcmp(mfs_xattr_ns_prefix(MFS_XATTR_NS_SECURITY), "security."));
	CK_TRUE(mfs_xattr_ns_prefix(0) == NULL);
	put_inode(ip);
	ximg_destroy(&t);
}
END_TEST

/* ---- damaged attribute forks: every path reports corruption, nothing crashes ------------- */
/* Corruption messages naming the inode under test ("inode N"). */
static char msg_want[32];
static unsigned msg_count;

static void msg_sink(int level, const char *msg, void *priv)
{
	(void)level;
	(void)priv;
	if (strstr(msg, msg_want))
		msg_count++;
}

#define expect_corrupt(t, ip, ns, probe, plen) expect_corrupt_(t, ip, ns, probe, plen, __LINE__)
static void expect_corrupt_(struct ximg *t, struct mfs_inode *ip, unsigned ns,
			    const char *probe, unsigned plen, int line)
{
	struct mfs_trans *tp;
	unsigned n = 0;
	size_t vl;

	(void)line;
	msg_count = 0;
	CK_EQ(mfs_xattr_get(ip, ns, probe, plen, vbuf, sizeof(vbuf), &vl), -EFSCORRUPTED);
	CK_EQ(msg_count, 1);
	CK_EQ(mfs_xattr_check(ip, NULL, NULL), -EFSCORRUPTED);
	CK_EQ(msg_count, 2);
	CK_EQ(mfs_xattr_list(ip, count_fn, &n), -EFSCORRUPTED);
	CK_EQ(msg_count, 3);
	CK_OK(mfs_trans_alloc(t->fs, &tp));
	CK_EQ(mfs_xattr_set(tp, ip, ns, probe, plen, "v", 1, 0), -EFSCORRUPTED);
	CK_EQ(mfs_xattr_remove(tp, ip, ns, probe, plen), -EFSCORRUPTED);
	mfs_trans_cancel(tp);
	CK_OK(mfs_inode_reload(ip));
}

/* Rewrite block `fsb` with `fn` applied, sealed as a correct block, and drop the cache so
 * that the next read comes from the image. */
static void reseal(struct ximg *t, uint64_t fsb, uint8_t *saved, const uint8_t *newdata)
{
	struct mfs_buf *bp;

	CK_OK(mfs_buf_read(t->fs->bc, fsb, NULL, &bp));
	if (saved)
		memcpy(saved, bp->data, t->fs->geo.blocksize);
	memcpy(bp->data, newdata, t->fs->geo.blocksize);
	mfs_buf_set_meta(bp);
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
	CK_OK(mfs_bcache_flush(t->fs->bc));
}

START_TEST(test_corrupt)
{
	struct ximg t;
	struct mfs_inode *ip;
	struct mfs_trans *tp;
	struct mfs_fork_root fr;
	uint8_t lit[MFS_MAX_INODESIZE], blk[4096], saved[4096];
	char longname[100];
	uint64_t root, ino, rfsb = 0;
	unsigned nrecs, ilong = 0, ishort = 0, iremote = 0;

	mfs_dir_test_set_hash_mask(0xffffffffu);
	ximg_make(&t, 4096, 512, 64ull << 20);
	ip = make_inode(&t, S_IFREG | 0644);
	ino = ip->ino;
	snprintf(msg_want, sizeof(msg_want), "inode %llu", (unsigned long long)ino);
	mfs_log_set_sink(msg_sink, NULL);
	/* local: two entries */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, "aa", 2, "11", 2, 0));
	CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, "bb", 2, "22", 2, 0));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(ip->aformat, MFS_FMT_LOCAL);
	memcpy(lit, ip->lit, ip->litsize);
	ip->lit[ip->forkoff * 8 + 1] = 250;        /* the first name overruns the fork */
	expect_corrupt(&t, ip, MFS_XATTR_NS_USER, "zz", 2);
	memcpy(ip->lit, lit, ip->litsize);
	ip->lit[ip->forkoff * 8] = 9;              /* unknown namespace */
	expect_corrupt(&t, ip, MFS_XATTR_NS_USER, "zz", 2);
	memcpy(ip->lit, lit, ip->litsize);
	ip->anext = 40;                             /* more entries than bytes */
	expect_corrupt(&t, ip, MFS_XATTR_NS_USER, "zz", 2);
	memcpy(ip->lit, lit, ip->litsize);
	ip->lit[ip->forkoff * 8 + 4 + 2 + 2 + 4] = 'a'; /* "bb" renamed "ab"... */
	ip->lit[ip->forkoff * 8 + 4 + 2 + 2 + 5] = 'a'; /* ..."aa": a duplicate */
	CK_EQ(mfs_xattr_check(ip, NULL, NULL), -EFSCORRUPTED);
	CK_OK(mfs_inode_reload(ip));
	CK_OK(mfs_xattr_check(ip, NULL, NULL));
	/* "aa" of 8 bytes, then "bb" of 7: a stray byte in the padding after them */
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, "bb", 2, "2", 1, XATTR_REPLACE));
	CK_OK(mfs_trans_commit(tp));
	CK_OK(mfs_xattr_check(ip, NULL, NULL));
	ip->lit[ip->forkoff * 8 + 15] = 1;
	CK_EQ(mfs_xattr_check(ip, NULL, NULL), -EFSCORRUPTED);
	CK_OK(mfs_xattr_get(ip, MFS_XATTR_NS_USER, "bb", 2, NULL, 0, NULL));
	CK_OK(mfs_inode_reload(ip));
	CK_OK(mfs_xattr_check(ip, NULL, NULL));

	/* btree of one leaf: 20 short names, one of 100 bytes, one remote value */
	memset(longname, 'L', sizeof(longname));
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (unsigned i = 0; i < 20; i++) {
		char name[16];

		snprintf(name, sizeof(name), "short%02u", i);
		CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, name, 7, "val", 3, 0));
	}
	CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, longname, sizeof(longname), "v", 1, 0));
	memset(vbuf, 0x5a, 5000);
	CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_SECURITY, "big", 3, vbuf, 5000, 0));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(ip->aformat, MFS_FMT_BTREE);
	CK_EQ(ip->anext, 1);
	CK_OK(mfs_xattr_check(ip, NULL, NULL));
	memcpy(&fr, ip->lit + ip->forkoff * 8, sizeof(fr));
	root = mfs_get64(fr.rootblock);
	memcpy(lit, ip->lit, ip->litsize);
	put_inode(ip);
	ximg_close(&t);
	ximg_open(&t);
	ip = get_inode(&t, ino);
	{
		struct mfs_buf *bp;

		CK_OK(mfs_buf_read(t.fs->bc, root, NULL, &bp));
		memcpy(saved, bp->data, sizeof(saved));
		mfs_buf_put(bp);
	}
	nrecs = mfs_get16(((struct mfs_btree_block *)saved)->numrecs);
	CK_EQ(nrecs, 2 + 20 + 2 + 1);
	for (unsigned i = 0; i < nrecs; i++) {
		struct mfs_xattr_rec *h = (void *)(saved + 64 + i * MFS_XATTR_REC_SIZE);

		if ((mfs_get64(h->key) & 0xff) != 0)
			continue;
		if (h->namelen == sizeof(longname))
			ilong = i;
		if (h->namelen == 7 && h->data[0] == 's')
			ishort = i;
		if (h->flags & MFS_XATTR_REMOTE) {
			struct mfs_xattr_remote rd;

			iremote = i;
			memcpy(&rd, h->data + 3, sizeof(rd));
			rfsb = mfs_get64(rd.fsblock);
		}
	}
	CK_TRUE(ilong + 1 < nrecs && rfsb);
#define REC(i) ((struct mfs_xattr_rec *)(blk + 64 + (i) * MFS_XATTR_REC_SIZE))
	/* the long head claims a short name: its continuations are orphans */
	memcpy(blk, saved, sizeof(blk));
	REC(ilong)->namelen = 10;
	reseal(&t, root, NULL, blk);
	expect_corrupt(&t, ip, MFS_XATTR_NS_USER, longname, sizeof(longname));
	/* the last continuation renumbered: the entry is incomplete */
	memcpy(blk, saved, sizeof(blk));
	blk[64 + (ilong + 1) * MFS_XATTR_REC_SIZE] = 7;
	reseal(&t, root, NULL, blk);
	expect_corrupt(&t, ip, MFS_XATTR_NS_USER, longname, sizeof(longname));
	/* a short name changed: no longer at its hash (the verifier refuses the block) */
	memcpy(blk, saved, sizeof(blk));
	REC(ishort)->data[5] ^= 1;
	reseal(&t, root, NULL, blk);
	CK_EQ(mfs_xattr_check(ip, NULL, NULL), -EFSCORRUPTED);
	/* a small value marked remote */
	memcpy(blk, saved, sizeof(blk));
	REC(ishort)->flags = MFS_XATTR_REMOTE;
	reseal(&t, root, NULL, blk);
	CK_EQ(mfs_xattr_check(ip, NULL, NULL), -EFSCORRUPTED);
	/* the remote descriptor points at an AG header */
	memcpy(blk, saved, sizeof(blk));
	{
		struct mfs_xattr_remote rd;

		memcpy(&rd, REC(iremote)->data + 3, sizeof(rd));
		mfs_put64(rd.fsblock, 1);
		memcpy(REC(iremote)->data + 3, &rd, sizeof(rd));
	}
	reseal(&t, root, NULL, blk);
	{
		/* listing needs no value: only the paths that read or free it fail */
		size_t vl;
		unsigned n = 0;

		CK_EQ(mfs_xattr_get(ip, MFS_XATTR_NS_SECURITY, "big", 3, vbuf, sizeof(vbuf), &vl),
		      -EFSCORRUPTED);
		CK_EQ(mfs_xattr_check(ip, NULL, NULL), -EFSCORRUPTED);
		CK_OK(mfs_xattr_list(ip, count_fn, &n));
		CK_EQ(n, 2 + 20 + 1 + 1);
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_EQ(mfs_xattr_remove(tp, ip, MFS_XATTR_NS_SECURITY, "big", 3), -EFSCORRUPTED);
		mfs_trans_cancel(tp);
		CK_OK(mfs_inode_reload(ip));
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_EQ(mfs_xattr_set(tp, ip, MFS_XATTR_NS_SECURITY, "big", 3, "x", 1, 0),
		      -EFSCORRUPTED);
		mfs_trans_cancel(tp);
		CK_OK(mfs_inode_reload(ip));
	}
	reseal(&t, root, NULL, saved);
	CK_OK(mfs_xattr_check(ip, NULL, NULL));
	/* the value block's key and then its bytes changed, resealed */
	{
		uint8_t vb[4096], vsaved[4096];
		struct mfs_xattr_vblk *h = (void *)vb;
		size_t vl;

		CK_OK(mfs_xattr_get(ip, MFS_XATTR_NS_SECURITY, "big", 3, vbuf, sizeof(vbuf), &vl));
		reseal(&t, rfsb, vsaved, vsaved);
		memcpy(vb, vsaved, sizeof(vb));
		mfs_put64(h->key, mfs_get64(h->key) + 256);
		reseal(&t, rfsb, NULL, vb);
		CK_EQ(mfs_xattr_get(ip, MFS_XATTR_NS_SECURITY, "big", 3, vbuf, sizeof(vbuf), &vl),
		      -EFSCORRUPTED);
		CK_EQ(mfs_xattr_check(ip, NULL, NULL), -EFSCORRUPTED);
		memcpy(vb, vsaved, sizeof(vb));
		vb[100] ^= 0xff;                     /* value bytes: the CRC in the entry */
		reseal(&t, rfsb, NULL, vb);
		CK_EQ(mfs_xattr_get(ip, MFS_XATTR_NS_SECURITY, "big", 3, vbuf, sizeof(vbuf), &vl),
		      -EFSCORRUPTED);
		reseal(&t, rfsb, NULL, vsaved);
	}
	/* the root in the inode */
	ip->anext = 2;                              /* levels disagree */
	expect_corrupt(&t, ip, MFS_XATTR_NS_USER, "short01", 7);
	mfs_put64(fr.rootblock, 1);                 /* a fixed AG block */
	memcpy(ip->lit + ip->forkoff * 8, &fr, sizeof(fr));
	expect_corrupt(&t, ip, MFS_XATTR_NS_USER, "short01", 7);
	ip->aformat = 7;                            /* unknown format */
	expect_corrupt(&t, ip, MFS_XATTR_NS_USER, "short01", 7);
	CK_OK(mfs_xattr_check(ip, NULL, NULL));
	CK_OK(mfs_xattr_get(ip, MFS_XATTR_NS_USER, longname, sizeof(longname), NULL, 0, NULL));
	mfs_log_set_sink(NULL, NULL);
	put_inode(ip);
	db_check(&t);
	ximg_destroy(&t);
}
END_TEST

static Suite *xattr_suite(void)
{
	Suite *s = suite_create("xattr");
	TCase *tc = tcase_create("xattr");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_api);
	tcase_add_test(tc, test_corrupt);
	tcase_add_test(tc, test_cancel_exact);
	tcase_add_test(tc, test_dir_inline);
	tcase_add_test(tc, test_dir_empty_grows);
	tcase_add_test(tc, test_dir_full);
	tcase_add_test(tc, test_file_extents);
	tcase_add_test(tc, test_file_full);
	tcase_add_test(tc, test_file_empty_btree);
	tcase_add_test(tc, test_free_all);
	tcase_add_loop_test(tc, test_model, 0, sizeof(geoms) / sizeof(geoms[0]));
	tcase_add_loop_test(tc, test_many, 0, 3);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(xattr_suite());
}
