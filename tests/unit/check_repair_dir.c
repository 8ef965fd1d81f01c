/*
 * check_repair_dir.c — the rebuilders of one inode's forks (repair_dir.c, repair_xattr.c,
 * repair_symlink.c) on an image in process.  Each object is damaged (a name-btree node
 * trashed on disk and a record's key moved out of hash order; an inline entry's inode
 * number; ".."; an attribute-btree leaf trashed; inline attributes a fork offset one unit
 * off frames wrongly; a NUL in a symlink target), its checker must see it, a repair
 * stopped by the test hook at each point of the engine must leave the image bit for bit as
 * it was, and the repair after that must leave the checker clean with what survived in
 * place: every name, the subdirectory joined again under its name, the parent found again,
 * the attributes of the surviving leaves (every inline one), the target's prefix.  A
 * directory's rebuild while another thread holds its parent (as an rmdir of it does) never
 * waits for the parent's lock.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

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
#include "verify.h"
#include "xattr.h"

#include "format.h"
#include "repair.h"
#include "scrub.h"
#include "tu.h"

#define NBIG   150u         /* entries of the btree directory: two levels of 1 KiB blocks */
#define NATTR  40u          /* attributes of the btree attribute fork */

struct dimg {
	struct tu_img t;
	uint64_t big, sub, kid, file, ln, attrs;
};

/* ---- population ------------------------------------------------------------------------------ */
static uint64_t mk(struct mfs_fs *fs, uint64_t dir, const char *name, uint16_t mode,
		   const char *target)
{
	return tu_mknode(fs, dir, name, mode, 0, target);
}

static void img_make(struct dimg *m)
{
	struct mfs_format_opts o = { .blocksize = 1024, .agcount = 2 };
	struct mfs_fs *fs;
	struct mfs_inode *ip;
	char name[32];

	memset(m, 0, sizeof(*m));
	tu_srand(tu_seed("MFS_TEST_SEED", "check_repair_dir"));
	tu_img_make(&m->t, "mendfs_repair_dir", 32ull << 20, &o, 0);
	fs = m->t.fs;
	tu_sb_mark_dirty(fs);
	m->big = mk(fs, fs->geo.rootino, "big", S_IFDIR | 0755, NULL);
	for (unsigned i = 0; i < NBIG; i++) {
		snprintf(name, sizeof(name), "n-%03u", i);
		mk(fs, m->big, name, S_IFREG | 0644, NULL);
	}
	m->sub = mk(fs, fs->geo.rootino, "sub", S_IFDIR | 0755, NULL);
	m->kid = mk(fs, m->sub, "kid", S_IFDIR | 0755, NULL);
	m->file = mk(fs, m->sub, "f", S_IFREG | 0644, NULL);
	m->ln = mk(fs, fs->geo.rootino, "ln", S_IFLNK | 0777, "abcdefgh");
	m->attrs = mk(fs, fs->geo.rootino, "attrs", S_IFREG | 0644, NULL);
	CK_OK(mfs_iget(fs, m->attrs, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	for (unsigned i = 0; i < NATTR; i++) {
		struct mfs_trans *tp;

		snprintf(name, sizeof(name), "k%u", i);
		CK_OK(mfs_trans_alloc(fs, &tp));
		CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, name, (unsigned)strlen(name), name,
				    strlen(name), 0));
		CK_OK(mfs_trans_commit(tp));
	}
	CK_EQ(ip->aformat, MFS_FMT_BTREE);
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	CK_OK(mfs_bcache_flush(fs->bc));
}

/* ---- checks -------------------------------------------------------------------------------- */
static unsigned findings(struct mfs_fs *fs, uint32_t type, uint64_t ino)
{
	struct tu_findings f;

	CK_OK(tu_scrub_one(fs, type, 0, ino, MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT,
			   &f));
	return f.n;
}

static int fail_at;

static int hook_fn(void *arg, enum mfs_repair_point at)
{
	(void)arg;
	return (int)at == fail_at ? -ECANCELED : 0;
}

static int repair(struct mfs_fs *fs, uint32_t type, uint64_t ino, int hook, char *reason,
		  size_t len)
{
	struct mfs_repair_ctx rc;
	int err = tu_repair_one(fs, type, 0, ino, hook ? hook_fn : NULL, NULL, &rc);

	snprintf(reason, len, "%s", rc.reason);
	return err;
}

/* Stopped at each point: nothing changes; then the repair leaves the checker clean. */
static void abort_then_repair(struct dimg *m, uint32_t type, uint64_t ino)
{
	/* The sort last: with fewer than two records to sort it is never reached, and that
	 * repair goes through. */
	static const int points[] = { MFS_REPAIR_AT_RESERVED, MFS_REPAIR_AT_GATHERED,
				      MFS_REPAIR_AT_BUILT, MFS_REPAIR_AT_SORTING };
	char reason[1024];
	uint32_t crc = tu_image_crc(m->t.fs, m->t.path);
	int err;

	ck_assert_msg(findings(m->t.fs, type, ino) > 0, "type %u inode %llu: damage not seen",
		      type, (unsigned long long)ino);
	for (unsigned i = 0; i < sizeof(points) / sizeof(points[0]); i++) {
		fail_at = points[i];
		err = repair(m->t.fs, type, ino, 1, reason, sizeof(reason));
		if (points[i] == MFS_REPAIR_AT_SORTING && err == 0)
			break;                  /* nothing to sort had two records: not reached */
		ck_assert_msg(err == -ECANCELED, "stopped at %d: %d: %s", points[i], err, reason);
		CK_EQ(tu_image_crc(m->t.fs, m->t.path), crc);
		CK_TRUE(findings(m->t.fs, type, ino) > 0);
	}
	err = repair(m->t.fs, type, ino, 0, reason, sizeof(reason));
	ck_assert_msg(err == 0, "repair: %d: %s", err, reason);
	CK_EQ(findings(m->t.fs, type, ino), 0);
	tu_img_close(&m->t);            /* and from disk */
	tu_img_open(&m->t);
	CK_EQ(findings(m->t.fs, type, ino), 0);
}

/* ---- damage ---------------------------------------------------------------------------------- */
/* Change an inode's in-core fields with fn, then log and commit them. */
static void edit_inode(struct mfs_fs *fs, uint64_t ino, void (*fn)(struct mfs_inode *ip,
							      void *priv), void *priv)
{
	struct mfs_inode *ip;
	struct mfs_trans *tp;

	CK_OK(mfs_iget(fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	fn(ip, priv);
	CK_OK(mfs_trans_alloc(fs, &tp));
	CK_OK(mfs_inode_log(tp, ip));
	CK_OK(mfs_trans_commit(tp));
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	CK_OK(mfs_bcache_flush(fs->bc));
}

/* The root block of a btree fork (data: a directory's name btree; attr: attributes). */
static uint64_t fork_root(struct mfs_fs *fs, uint64_t ino, int attr)
{
	struct mfs_inode *ip;
	uint64_t v;

	CK_OK(mfs_iget(fs, ino, 0, &ip));
	pthread_rwlock_rdlock(&ip->lock);
	CK_EQ(attr ? ip->aformat : ip->dformat, MFS_FMT_BTREE);
	memcpy(&v, ip->lit + (attr ? ip->forkoff * 8u : 0), 8);
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	return mfs_get64(v);
}

/* Read (buf != NULL: write) one block straight on the image, the filesystem closed. */
static void raw_block(struct dimg *m, uint64_t fsb, void *rd, const void *wr)
{
	uint32_t bs = m->t.fs->geo.blocksize;
	int fd;

	tu_img_close(&m->t);
	fd = open(m->t.path, O_RDWR);
	CK_TRUE(fd >= 0);
	if (rd)
		CK_EQ(pread(fd, rd, bs, (off_t)(fsb * bs)), bs);
	if (wr)
		CK_EQ(pwrite(fd, wr, bs, (off_t)(fsb * bs)), bs);
	close(fd);
	tu_img_open(&m->t);
}

static void trash(struct dimg *m, uint64_t fsb)
{
	uint8_t buf[4096];

	for (unsigned i = 0; i < sizeof(buf); i++)
		buf[i] = (uint8_t)tu_rand();
	raw_block(m, fsb, NULL, buf);
}

/* The child pointer i of node block fsb (8-byte keys and pointers). */
static uint64_t node_ptr(struct dimg *m, uint64_t fsb, unsigned i)
{
	uint8_t buf[4096];
	const struct mfs_btree_block *h = (const void *)buf;
	uint32_t maxkeys = (m->t.fs->geo.blocksize - (uint32_t)sizeof(*h)) / 16u;   /* 8 + 8 */
	uint64_t v;

	raw_block(m, fsb, buf, NULL);
	CK_TRUE(mfs_get16(h->level) > 0 && i < mfs_get16(h->numrecs));
	memcpy(&v, buf + sizeof(*h) + maxkeys * 8u + i * 8u, 8);
	return mfs_get64(v);
}

static int lookup(struct mfs_fs *fs, uint64_t dir, const char *name, uint64_t *ino)
{
	struct mfs_inode *dp;
	int err;

	CK_OK(mfs_iget(fs, dir, 0, &dp));
	pthread_rwlock_rdlock(&dp->lock);
	err = mfs_dir_lookup(dp, name, (unsigned)strlen(name), ino, NULL);
	pthread_rwlock_unlock(&dp->lock);
	mfs_iput(dp);
	return err;
}

/* ---- the tests -------------------------------------------------------------------------------- */
/* A name-btree root trashed on disk and a leaf record's key moved out of hash order. */
START_TEST(test_dir_btree)
{
	struct dimg m;
	uint8_t buf[4096];
	uint64_t root, leaf, key, ino;
	char name[32];

	img_make(&m);
	root = fork_root(m.t.fs, m.big, 0);
	leaf = node_ptr(&m, root, 1);
	raw_block(&m, leaf, buf, NULL);
	memcpy(&key, buf + sizeof(struct mfs_btree_block) + 2 * MFS_DIR_REC_SIZE, 8);
	key = mfs_get64(key) ^ (1ull << 63);            /* its hash's top bit */
	key = mfs_get64(key);
	memcpy(buf + sizeof(struct mfs_btree_block) + 2 * MFS_DIR_REC_SIZE, &key, 8);
	mfs_blk_seal(buf, m.t.fs->geo.blocksize);
	raw_block(&m, leaf, NULL, buf);
	trash(&m, root);
	abort_then_repair(&m, MFS_SCRUB_DIR, m.big);
	for (unsigned i = 0; i < NBIG; i++) {
		snprintf(name, sizeof(name), "n-%03u", i);
		ck_assert_msg(lookup(m.t.fs, m.big, name, &ino) == 0, "%s lost", name);
	}
	tu_img_destroy(&m.t);
}
END_TEST

static void bad_kid_ino(struct mfs_inode *ip, void *priv)
{
	uint64_t kid = *(uint64_t *)priv;

	/* the inline entries: [le64 parent][ino 8, type, len, seq, name]... */
	for (uint32_t off = MFS_DIR_LOCAL_HDR; off < ip->size; off += 11u + ip->lit[off + 9]) {
		uint64_t v;

		memcpy(&v, ip->lit + off, 8);
		if (mfs_get64(v) == kid) {
			v = mfs_get64(0xffffffffffull);
			memcpy(ip->lit + off, &v, 8);
		}
	}
}

static void bad_parent(struct mfs_inode *ip, void *priv)
{
	uint64_t v = mfs_get64(*(uint64_t *)priv);

	memcpy(ip->lit, &v, 8);
}

/* An inline entry's inode number; a directory's "..". */
START_TEST(test_dir_inline)
{
	struct dimg m;
	uint64_t ino, notdir;

	img_make(&m);
	edit_inode(m.t.fs, m.sub, bad_kid_ino, &m.kid);
	abort_then_repair(&m, MFS_SCRUB_DIR, m.sub);
	CK_OK(lookup(m.t.fs, m.sub, "kid", &ino));
	CK_EQ(ino, m.kid);                       /* joined again under its name */
	CK_OK(lookup(m.t.fs, m.sub, "f", &ino));
	CK_EQ(ino, m.file);

	notdir = m.file;
	edit_inode(m.t.fs, m.kid, bad_parent, &notdir);
	abort_then_repair(&m, MFS_SCRUB_DIR, m.kid);
	CK_OK(lookup(m.t.fs, m.kid, "..", &ino));
	CK_EQ(ino, m.sub);                       /* found again: sub names it */
	tu_img_destroy(&m.t);
}
END_TEST

struct listed {
	unsigned n;
	int bad;
};

static int list_fn(void *priv, unsigned ns, const char *name, unsigned len, size_t vlen)
{
	struct listed *l = priv;

	l->n++;
	if (ns != MFS_XATTR_NS_USER || vlen != len || len < 2 || name[0] != 'k')
		l->bad = 1;
	return 0;
}

/* A trashed leaf of the attribute btree: the others' attributes kept, values intact. */
START_TEST(test_xattr)
{
	struct dimg m;
	struct listed l = { 0, 0 };
	struct mfs_inode *ip;
	char name[32], val[32];
	uint64_t root;
	size_t vlen;

	img_make(&m);
	root = fork_root(m.t.fs, m.attrs, 1);
	trash(&m, node_ptr(&m, root, 0));
	abort_then_repair(&m, MFS_SCRUB_XATTR, m.attrs);
	CK_OK(mfs_iget(m.t.fs, m.attrs, 0, &ip));
	pthread_rwlock_rdlock(&ip->lock);
	CK_OK(mfs_xattr_list(ip, list_fn, &l));
	CK_TRUE(!l.bad && l.n > 0 && l.n < NATTR);
	for (unsigned i = 0; i < NATTR; i++) {
		snprintf(name, sizeof(name), "k%u", i);
		if (mfs_xattr_get(ip, MFS_XATTR_NS_USER, name, (unsigned)strlen(name), val,
				  sizeof(val), &vlen))
			continue;
		ck_assert_msg(vlen == strlen(name) && !memcmp(val, name, vlen), "%s", name);
	}
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	tu_img_destroy(&m.t);
}
END_TEST

static void nul_in_target(struct mfs_inode *ip, void *priv)
{
	(void)priv;
	ip->lit[3] = 0;
}

/* A NUL in an inline target: the bytes before it stay. */
START_TEST(test_symlink)
{
	struct dimg m;
	struct mfs_inode *ip;

	img_make(&m);
	edit_inode(m.t.fs, m.ln, nul_in_target, NULL);
	abort_then_repair(&m, MFS_SCRUB_SYMLINK, m.ln);
	CK_OK(mfs_iget(m.t.fs, m.ln, 0, &ip));
	pthread_rwlock_rdlock(&ip->lock);
	CK_EQ(ip->size, 3);
	CK_TRUE(!memcmp(ip->lit, "abc", 3));
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	tu_img_destroy(&m.t);
}
END_TEST

static void set_nblocks(struct mfs_inode *ip, void *priv)
{
	ip->nblocks = *(uint64_t *)priv;
}

/* An inline directory's block count damaged (a small and a huge value): the rebuild counts
 * the blocks it owns in the reverse map (none), the names all stay. */
START_TEST(test_dir_inline_nblocks)
{
	struct dimg m;
	char reason[1024];
	uint64_t ino, n = 5;
	struct mfs_inode *ip;

	img_make(&m);
	edit_inode(m.t.fs, m.sub, set_nblocks, &n);
	abort_then_repair(&m, MFS_SCRUB_DIR, m.sub);
	n = ~0ull - 7;                  /* once planned the scratch from it: refused */
	edit_inode(m.t.fs, m.sub, set_nblocks, &n);
	CK_TRUE(findings(m.t.fs, MFS_SCRUB_DIR, m.sub) > 0);
	ck_assert_msg(repair(m.t.fs, MFS_SCRUB_DIR, m.sub, 0, reason, sizeof(reason)) == 0, "%s",
		      reason);
	CK_EQ(findings(m.t.fs, MFS_SCRUB_DIR, m.sub), 0);
	CK_OK(mfs_iget(m.t.fs, m.sub, 0, &ip));
	CK_EQ(ip->nblocks, 0);
	mfs_iput(ip);
	CK_OK(lookup(m.t.fs, m.sub, "kid", &ino));
	CK_EQ(ino, m.kid);
	CK_OK(lookup(m.t.fs, m.sub, "f", &ino));
	CK_EQ(ino, m.file);
	tu_img_db_check(&m.t);
	tu_img_destroy(&m.t);
}
END_TEST

/* ---- a parent held by another thread ------------------------------------------------------------ */
/* What an rmdir of a directory holds while it waits for that directory's lock (its parent's,
 * exclusive: fs/namei.c takes both in increasing inode number), or a rename holding the
 * parent while it walks ".." up through the directory: taken and let go by one thread, held
 * until hold_stop(). */
struct holder {
	struct mfs_inode *ip;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int held, release;
	pthread_t th;
};

static void *hold_fn(void *arg)
{
	struct holder *h = arg;

	pthread_rwlock_wrlock(&h->ip->lock);
	pthread_mutex_lock(&h->mu);
	h->held = 1;
	pthread_cond_broadcast(&h->cv);
	while (!h->release)
		pthread_cond_wait(&h->cv, &h->mu);
	pthread_mutex_unlock(&h->mu);
	pthread_rwlock_unlock(&h->ip->lock);
	return NULL;
}

static void hold_start(struct holder *h, struct mfs_fs *fs, uint64_t ino)
{
	memset(h, 0, sizeof(*h));
	pthread_mutex_init(&h->mu, NULL);
	pthread_cond_init(&h->cv, NULL);
	CK_OK(mfs_iget(fs, ino, 0, &h->ip));
	CK_EQ(pthread_create(&h->th, NULL, hold_fn, h), 0);
	pthread_mutex_lock(&h->mu);
	while (!h->held)
		pthread_cond_wait(&h->cv, &h->mu);
	pthread_mutex_unlock(&h->mu);
}

static void hold_stop(struct holder *h)
{
	pthread_mutex_lock(&h->mu);
	h->release = 1;
	pthread_cond_broadcast(&h->cv);
	pthread_mutex_unlock(&h->mu);
	CK_EQ(pthread_join(h->th, NULL), 0);
	mfs_iput(h->ip);
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mu);
}

struct rjob {
	struct mfs_fs *fs;
	uint64_t ino;
	int err;
	char reason[1024];
};

static void *rjob_fn(void *arg)
{
	struct rjob *j = arg;

	j->err = repair(j->fs, MFS_SCRUB_DIR, j->ino, 0, j->reason, sizeof(j->reason));
	return NULL;
}

/* Rebuild directory ino in another thread; it must answer within a bound (a rebuild that
 * waits for a lock the holder keeps never does: the test fails instead of hanging). */
static int repair_bounded(struct mfs_fs *fs, uint64_t ino, char *reason, size_t len)
{
	struct rjob j = { .fs = fs, .ino = ino };
	struct timespec ts;
	pthread_t th;
	int secs = UNDER_ASAN ? 60 : 10, err;

	CK_EQ(pthread_create(&th, NULL, rjob_fn, &j), 0);
	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += secs;
	err = pthread_timedjoin_np(th, NULL, &ts);
	ck_assert_msg(err == 0, "the rebuild of directory %llu has not answered in %d s while "
		      "another thread holds its parent's lock: it waits for it (%s)",
		      (unsigned long long)ino, secs, strerror(err));
	snprintf(reason, len, "%s", j.reason);
	return j.err;
}

/* A directory's rebuild while another thread holds its parent exclusive (an rmdir of the
 * directory holds it and waits for the directory's lock, which the rebuild holds): the
 * rebuild never waits for the parent.  Its stored ".." right: trusted, the rebuild goes
 * through; its stored ".." the damage: the search passes over the busy parent and fails
 * with EAGAIN, nothing changed; once let go, the parent is found again. */
START_TEST(test_dir_parent_busy)
{
	struct dimg m;
	struct holder h;
	char reason[1024];
	uint64_t ino, n = 5, notdir;
	uint32_t crc;
	int err;

	img_make(&m);
	edit_inode(m.t.fs, m.kid, set_nblocks, &n);
	CK_TRUE(findings(m.t.fs, MFS_SCRUB_DIR, m.kid) > 0);
	hold_start(&h, m.t.fs, m.sub);
	err = repair_bounded(m.t.fs, m.kid, reason, sizeof(reason));
	hold_stop(&h);
	ck_assert_msg(err == 0, "stored parent busy: %d: %s", err, reason);
	CK_EQ(findings(m.t.fs, MFS_SCRUB_DIR, m.kid), 0);
	CK_OK(lookup(m.t.fs, m.kid, "..", &ino));
	CK_EQ(ino, m.sub);

	notdir = m.file;
	edit_inode(m.t.fs, m.kid, bad_parent, &notdir);
	CK_TRUE(findings(m.t.fs, MFS_SCRUB_DIR, m.kid) > 0);
	crc = tu_image_crc(m.t.fs, m.t.path);
	hold_start(&h, m.t.fs, m.sub);
	err = repair_bounded(m.t.fs, m.kid, reason, sizeof(reason));
	hold_stop(&h);
	ck_assert_msg(err == -EAGAIN, "parent searched, busy: %d: %s", err, reason);
	CK_EQ(tu_image_crc(m.t.fs, m.t.path), crc);
	err = repair(m.t.fs, MFS_SCRUB_DIR, m.kid, 0, reason, sizeof(reason));
	ck_assert_msg(err == 0, "parent searched, let go: %d: %s", err, reason);
	CK_EQ(findings(m.t.fs, MFS_SCRUB_DIR, m.kid), 0);
	CK_OK(lookup(m.t.fs, m.kid, "..", &ino));
	CK_EQ(ino, m.sub);
	tu_img_destroy(&m.t);
}
END_TEST

/* Change inode ino's committed copy with fn, straight on the image (resealed). */
static void raw_dinode(struct dimg *m, uint64_t ino, void (*fn)(struct mfs_dinode *d, void *priv),
		       void *priv)
{
	const struct mfs_geom *g = &m->t.fs->geo;
	uint64_t fsb = mfs_ino_to_fsb(g, ino);
	uint32_t off = mfs_ino_to_offset(g, ino), isz = g->inodesize;
	uint8_t buf[4096];

	raw_block(m, fsb, buf, NULL);
	fn((struct mfs_dinode *)(buf + off), priv);
	mfs_dinode_seal(buf + off, isz);
	raw_block(m, fsb, NULL, buf);
}

static void put_mode(struct mfs_dinode *d, void *priv)
{
	mfs_put16(d->mode, *(uint16_t *)priv);
}

/* A mode whose file type is the damage (none, or one that does not fit the data fork, or a
 * directory's on a file or symlink, which loads): the inode repair tells the type from the
 * data fork and the entries naming the inode, keeps the permission bits (not set-ID), and
 * the inode's contents stay. */
START_TEST(test_inode_type)
{
	static const struct { uint16_t bad, want; } c[] = {
		{ 0140755, S_IFDIR | 0755 },        /* sub: socket, inline names */
		{ 0020777, S_IFLNK | 0777 },        /* ln: character device, inline target */
		{ 0000644, S_IFREG | 0644 },        /* f: no type, an extent list */
		{ 0177777, S_IFDIR | 01777 },       /* the root: no type; set-ID dropped */
		{ 0110644, S_IFIFO | 0644 },        /* a fifo: no type, DEV */
		{ 0140700, S_IFDIR | 0700 },        /* big: socket, a name btree */
		{ 0040644, S_IFREG | 0644 },        /* f: a directory (loads, one link) */
		{ 0040777, S_IFLNK | 0777 },        /* ln: a directory (loads, one link) */
	};
	struct dimg m;
	char reason[1024], name[32];
	uint64_t ino = 0, got;
	uint16_t bad = c[_i].bad;
	struct mfs_inode *ip;

	img_make(&m);
	switch (_i) {
	case 0: ino = m.sub; break;
	case 1: ino = m.ln; break;
	case 2: ino = m.file; break;
	case 3: ino = m.t.fs->geo.rootino; break;
	case 4: ino = mk(m.t.fs, m.sub, "fifo", S_IFIFO | 0644, NULL); break;
	case 5: ino = m.big; break;
	case 6: ino = m.file; break;
	case 7: ino = m.ln; break;
	}
	raw_dinode(&m, ino, put_mode, &bad);
	CK_TRUE(findings(m.t.fs, MFS_SCRUB_INODE, ino) > 0);
	ck_assert_msg(repair(m.t.fs, MFS_SCRUB_INODE, ino, 0, reason, sizeof(reason)) == 0, "%s",
		      reason);
	CK_OK(mfs_iget(m.t.fs, ino, 0, &ip));
	CK_EQ(ip->mode, c[_i].want);
	mfs_iput(ip);
	CK_EQ(findings(m.t.fs, MFS_SCRUB_INODE, ino), 0);
	CK_EQ(findings(m.t.fs, MFS_SCRUB_BMAP, ino), 0);
	if (S_ISDIR(c[_i].want))
		CK_EQ(findings(m.t.fs, MFS_SCRUB_DIR, ino), 0);
	if (S_ISLNK(c[_i].want))
		CK_EQ(findings(m.t.fs, MFS_SCRUB_SYMLINK, ino), 0);
	CK_EQ(findings(m.t.fs, MFS_SCRUB_NLINKS, 0), 0);
	if (_i == 0) {
		CK_OK(lookup(m.t.fs, m.sub, "kid", &got));
		CK_EQ(got, m.kid);
	}
	for (unsigned i = 0; _i == 5 && i < NBIG; i++) {
		snprintf(name, sizeof(name), "n-%03u", i);
		ck_assert_msg(lookup(m.t.fs, m.big, name, &got) == 0, "%s lost", name);
	}
	tu_img_db_check(&m.t);
	tu_img_destroy(&m.t);
}
END_TEST

/* An inline directory whose mode says regular file: its parent's entry is kept (the child's
 * mode repaired first, from its names and the entry), nothing moves. */
START_TEST(test_dir_child_mode)
{
	struct dimg m;
	char reason[1024];
	uint16_t bad = S_IFREG | 0755;
	uint64_t root, got;
	struct mfs_inode *ip;

	img_make(&m);
	root = m.t.fs->geo.rootino;
	raw_dinode(&m, m.sub, put_mode, &bad);
	CK_TRUE(findings(m.t.fs, MFS_SCRUB_DIR, root) > 0);
	ck_assert_msg(repair(m.t.fs, MFS_SCRUB_DIR, root, 0, reason, sizeof(reason)) == 0, "%s",
		      reason);
	CK_OK(mfs_iget(m.t.fs, m.sub, 0, &ip));
	CK_EQ(ip->mode, S_IFDIR | 0755);
	mfs_iput(ip);
	CK_OK(lookup(m.t.fs, root, "sub", &got));
	CK_EQ(got, m.sub);
	CK_OK(lookup(m.t.fs, m.sub, "kid", &got));
	CK_EQ(got, m.kid);
	CK_EQ(findings(m.t.fs, MFS_SCRUB_DIR, m.sub), 0);
	CK_EQ(findings(m.t.fs, MFS_SCRUB_NLINKS, 0), 0);
	tu_img_db_check(&m.t);
	tu_img_destroy(&m.t);
}
END_TEST

static void no_type_dev(struct mfs_dinode *d, void *priv)
{
	(void)priv;
	mfs_put16(d->mode, 0644);
	d->dformat = MFS_FMT_DEV;
	mfs_put32(d->dnext, 0);
}

/* The data fork (DEV) and the entry (a regular file) disagree about a mode without type:
 * refused with the reason, nothing changed. */
START_TEST(test_inode_type_refused)
{
	struct dimg m;
	char reason[1024];
	uint32_t crc;

	img_make(&m);
	raw_dinode(&m, m.file, no_type_dev, NULL);
	crc = tu_image_crc(m.t.fs, m.t.path);
	CK_EQ(repair(m.t.fs, MFS_SCRUB_INODE, m.file, 0, reason, sizeof(reason)), -EFSCORRUPTED);
	ck_assert_msg(strstr(reason, "disagrees") && strstr(reason, "a regular file"), "%s",
		      reason);
	CK_EQ(tu_image_crc(m.t.fs, m.t.path), crc);
	tu_img_destroy(&m.t);
}
END_TEST

static void put_forkoff(struct mfs_dinode *d, void *priv)
{
	mfs_put16(d->forkoff, *(uint16_t *)priv);
}

static void put_size(struct mfs_dinode *d, void *priv)
{
	mfs_put64(d->size, *(uint64_t *)priv);
}

/* A fork offset on inodes without attributes (a name btree's root and inline names behind
 * it: they stay), a fork offset out of the inode on inline attributes (found again where
 * they parse), and a fifo's size past 2^63 (0 again). */
START_TEST(test_inode_forkoff_size)
{
	struct dimg m;
	char reason[1024], name[32], val[32];
	uint16_t fo = 1;
	uint64_t got, size = ~0ull, fifo, xf;
	uint64_t inos[2];
	struct mfs_inode *ip;
	struct mfs_trans *tp;
	size_t vlen;

	img_make(&m);
	inos[0] = m.big;
	inos[1] = m.sub;
	for (unsigned k = 0; k < 2; k++) {
		raw_dinode(&m, inos[k], put_forkoff, &fo);
		CK_TRUE(findings(m.t.fs, MFS_SCRUB_INODE, inos[k]) > 0);
		ck_assert_msg(repair(m.t.fs, MFS_SCRUB_INODE, inos[k], 0, reason,
				     sizeof(reason)) == 0, "%s", reason);
		CK_EQ(findings(m.t.fs, MFS_SCRUB_INODE, inos[k]), 0);
		CK_EQ(findings(m.t.fs, MFS_SCRUB_DIR, inos[k]), 0);
	}
	for (unsigned i = 0; i < NBIG; i++) {
		snprintf(name, sizeof(name), "n-%03u", i);
		ck_assert_msg(lookup(m.t.fs, m.big, name, &got) == 0, "%s lost", name);
	}
	CK_OK(lookup(m.t.fs, m.sub, "kid", &got));
	CK_EQ(got, m.kid);
	fifo = mk(m.t.fs, m.sub, "fifo", S_IFIFO | 0644, NULL);
	raw_dinode(&m, fifo, put_size, &size);
	CK_TRUE(findings(m.t.fs, MFS_SCRUB_INODE, fifo) > 0);
	ck_assert_msg(repair(m.t.fs, MFS_SCRUB_INODE, fifo, 0, reason, sizeof(reason)) == 0, "%s",
		      reason);
	CK_OK(mfs_iget(m.t.fs, fifo, 0, &ip));
	CK_EQ(ip->size, 0);
	CK_EQ(ip->mode, S_IFIFO | 0644);
	mfs_iput(ip);
	CK_EQ(findings(m.t.fs, MFS_SCRUB_INODE, fifo), 0);

	xf = mk(m.t.fs, m.sub, "xf", S_IFREG | 0644, NULL);
	CK_OK(mfs_iget(m.t.fs, xf, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	for (unsigned i = 0; i < 2; i++) {
		snprintf(name, sizeof(name), "x%u", i);
		CK_OK(mfs_trans_alloc(m.t.fs, &tp));
		CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, name, 2, name, 2, 0));
		CK_OK(mfs_trans_commit(tp));
	}
	CK_EQ(ip->aformat, MFS_FMT_LOCAL);
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	CK_OK(mfs_bcache_flush(m.t.fs->bc));
	fo = 0xffff;
	raw_dinode(&m, xf, put_forkoff, &fo);
	ck_assert_msg(repair(m.t.fs, MFS_SCRUB_INODE, xf, 0, reason, sizeof(reason)) == 0, "%s",
		      reason);
	CK_EQ(findings(m.t.fs, MFS_SCRUB_INODE, xf), 0);
	CK_EQ(findings(m.t.fs, MFS_SCRUB_XATTR, xf), 0);
	CK_OK(mfs_iget(m.t.fs, xf, 0, &ip));
	pthread_rwlock_rdlock(&ip->lock);
	for (unsigned i = 0; i < 2; i++) {
		snprintf(name, sizeof(name), "x%u", i);
		CK_OK(mfs_xattr_get(ip, MFS_XATTR_NS_USER, name, 2, val, sizeof(val), &vlen));
		CK_TRUE(vlen == 2 && !memcmp(val, name, 2));
	}
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	tu_img_db_check(&m.t);
	tu_img_destroy(&m.t);
}
END_TEST

static void shift_forkoff(struct mfs_dinode *d, void *priv)
{
	mfs_put16(d->forkoff, (uint16_t)(mfs_get16(d->forkoff) + *(int *)priv));
}

/* Attribute i of test_xattr_forkoff: "user.xa<i>" = i + 3 bytes of 'a' + i. */
static void xa(unsigned i, char *name, char *val, size_t *vlen)
{
	snprintf(name, 16, "xa%u", i);
	*vlen = i + 3;
	memset(val, 'a' + (int)i, *vlen);
}

/* Inline attributes framed wrongly by a fork offset one unit off (_i 0: past the entries,
 * 1: before them), which still loads: the attribute rebuild salvages them from where they
 * parse to the count (repair_ilit.h) instead of losing them; values intact. */
START_TEST(test_xattr_forkoff)
{
	struct dimg m;
	struct mfs_inode *ip;
	struct mfs_trans *tp;
	char name[16], want[16], got[16];
	size_t wlen, glen;
	int delta = _i ? -1 : 1;
	uint64_t xf;

	img_make(&m);
	xf = mk(m.t.fs, m.sub, "xf", S_IFREG | 0644, NULL);
	CK_OK(mfs_iget(m.t.fs, xf, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	for (unsigned i = 0; i < 3; i++) {
		xa(i, name, want, &wlen);
		CK_OK(mfs_trans_alloc(m.t.fs, &tp));
		CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, name, (unsigned)strlen(name), want,
				    wlen, 0));
		CK_OK(mfs_trans_commit(tp));
	}
	CK_EQ(ip->aformat, MFS_FMT_LOCAL);
	ck_assert_uint_gt(ip->forkoff, 1);
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	CK_OK(mfs_bcache_flush(m.t.fs->bc));
	raw_dinode(&m, xf, shift_forkoff, &delta);
	CK_OK(mfs_iget(m.t.fs, xf, 0, &ip));    /* it still loads */
	mfs_iput(ip);
	abort_then_repair(&m, MFS_SCRUB_XATTR, xf);
	CK_EQ(findings(m.t.fs, MFS_SCRUB_INODE, xf), 0);
	CK_OK(mfs_iget(m.t.fs, xf, 0, &ip));
	pthread_rwlock_rdlock(&ip->lock);
	for (unsigned i = 0; i < 3; i++) {
		xa(i, name, want, &wlen);
		ck_assert_msg(mfs_xattr_get(ip, MFS_XATTR_NS_USER, name, (unsigned)strlen(name), got,
					    sizeof(got), &glen) == 0, "%s lost", name);
		ck_assert_msg(glen == wlen && !memcmp(got, want, wlen), "%s: wrong value", name);
	}
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	tu_img_db_check(&m.t);
	tu_img_destroy(&m.t);
}
END_TEST

/* Asked for an inode of another type, a rebuilder has nothing to do, like its checker. */
START_TEST(test_other_types)
{
	struct dimg m;
	char reason[1024];
	uint32_t crc;

	img_make(&m);
	crc = tu_image_crc(m.t.fs, m.t.path);
	CK_OK(repair(m.t.fs, MFS_SCRUB_DIR, m.file, 0, reason, sizeof(reason)));
	CK_OK(repair(m.t.fs, MFS_SCRUB_SYMLINK, m.big, 0, reason, sizeof(reason)));
	CK_EQ(tu_image_crc(m.t.fs, m.t.path), crc);
	tu_img_destroy(&m.t);
}
END_TEST

static Suite *repair_dir_suite(void)
{
	Suite *s = suite_create("repair_dir");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, UNDER_ASAN ? 120 : 30);
	tcase_add_test(tc, test_dir_btree);
	tcase_add_test(tc, test_dir_inline);
	tcase_add_test(tc, test_xattr);
	tcase_add_test(tc, test_symlink);
	tcase_add_test(tc, test_other_types);
	tcase_add_test(tc, test_dir_inline_nblocks);
	tcase_add_test(tc, test_dir_parent_busy);
	tcase_add_loop_test(tc, test_inode_type, 0, 8);
	tcase_add_test(tc, test_inode_type_refused);
	tcase_add_test(tc, test_dir_child_mode);
	tcase_add_test(tc, test_inode_forkoff_size);
	tcase_add_loop_test(tc, test_xattr_forkoff, 0, 2);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	mfs_log_quiet();
	return tu_run_suite(repair_dir_suite());
}
