/*
 * check_scrub.c — the checkers of repair/ (mfs_scrub), in process.
 *
 * Each test formats a small image (4 AGs, 1 KiB blocks) through lib/format, populates it
 * through the library (directories in both formats, hard links, a file of several extents
 * and one whose map is a btree, symlinks, attributes), and first asserts that every checker
 * on every object reports nothing.  Then it damages exactly one structure — in the buffer
 * cache, resealing the CRC so that the damage is logical — and asserts that the checker of
 * that structure reports it (CORRUPT or XCORRUPT) with a message naming the object.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
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
#include "fs.h"
#include "geom.h"
#include "ialloc.h"
#include "inode.h"
#include "log.h"
#include "mem.h"
#include "mendfs_format.h"
#include "trans.h"
#include "verify.h"
#include "xattr.h"

#include "format.h"
#include "scrub.h"
#include "scrub_priv.h"
#include "tu.h"

/* ---- findings collected from ctx->report ---------------------------------------------------- */
struct findings {
	unsigned n;
	uint32_t flags;
	char first[512];
	char all[4096];         /* every finding, one a line, as far as they fit */
};

static void collect(void *arg, uint32_t flag, const char *msg)
{
	struct findings *f = arg;

	size_t len = strlen(f->all);

	if (!f->n)
		snprintf(f->first, sizeof(f->first), "%s", msg);
	snprintf(f->all + len, sizeof(f->all) - len, "%s\n", msg);
	f->n++;
	f->flags |= flag;
	if (getenv("MFS_SCRUB_VERBOSE"))
		fprintf(stderr, "finding 0x%x: %s\n", flag, msg);
}

/* The memo run() shares between checks (as the daemon does within one request), or NULL:
 * each check gets a fresh one (as a request of its own). */
static struct mfs_scrub_memo *shared_memo;

/* The census run() gives every check (the daemon shares one between its clients), or NULL. */
static struct mfs_scrub_census *shared_census;

/* Run one check with a memo, as the daemon does; returns its errno, the findings in *f. */
static int run(struct mfs_fs *fs, uint32_t type, uint32_t agno, uint64_t ino,
	       struct findings *f)
{
	struct mfs_scrub_memo *memo = shared_memo;
	struct mfs_scrub_ctx ctx;
	int err;

	if (!memo && mfs_scrub_memo_new(&memo) != 0)
		memo = NULL;            /* (allocation faults injected) checked without one */
	memset(&ctx, 0, sizeof(ctx));
	memset(f, 0, sizeof(*f));
	ctx.fs = fs;
	ctx.type = type;
	ctx.agno = agno;
	ctx.ino = ino;
	ctx.report = collect;
	ctx.hook_arg = f;
	ctx.memo = memo;
	ctx.census = shared_census;
	if (type == MFS_SCRUB_BMAP && memo != shared_memo)
		/* the batch's look (mfs_scrub_memo_prepare_bmap) first, as the daemon does */
		(void)mfs_scrub_memo_prepare_bmap(&ctx, &ino, 1);
	err = mfs_scrub(&ctx);
	ck_assert_uint_eq(ctx.oflags, f->flags);
	if (memo != shared_memo)
		mfs_scrub_memo_free(memo);
	return err;
}

static void ignore(void *arg, uint32_t flag, const char *msg)
{
}

/*
 * A census of the filesystem as it is now, as phases 2 to 4 of a scrub leave it in the
 * daemon: each AG's trees walked once and kept (an AGH check, SCRUB_SHARE), every AG taken
 * by its inode listing (which then comes from it), and each directory's entries put in it
 * by a DIR check (findings ignored); NULL when there is no memory for it (allocation
 * faults).
 */
static struct mfs_scrub_census *census_now(struct mfs_fs *fs)
{
	struct mfs_scrub_census *c;
	struct mfs_ctl_inode out[64];
	struct mfs_scrub_ctx ctx;

	if (mfs_scrub_census_new(fs, &c) != 0)
		return NULL;
	memset(&ctx, 0, sizeof(ctx));
	ctx.fs = fs;
	ctx.census = c;
	ctx.report = ignore;
	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++) {
		uint64_t first = mfs_agino_to_ino(&fs->geo, agno, 0), cursor = first, next;
		uint32_t n;
		int end = 0;

		ctx.type = MFS_SCRUB_AGH;
		ctx.agno = agno;
		(void)mfs_scrub(&ctx);
		while (!end && mfs_scrub_list_inodes(&ctx, agno, cursor, out, 64, &n, &next,
						     &end) == 0) {
			for (uint32_t i = 0; i < n; i++) {
				if (!S_ISDIR(out[i].mode))
					continue;
				ctx.type = MFS_SCRUB_DIR;
				ctx.ino = out[i].ino;
				(void)mfs_scrub(&ctx);
			}
			cursor = next;
		}
	}
	return c;
}

/* run() with a census of the filesystem as it is (census_now). */
static int run_census(struct mfs_fs *fs, uint32_t type, uint32_t agno, uint64_t ino,
		      struct findings *f)
{
	int err;

	shared_census = census_now(fs);
	err = run(fs, type, agno, ino, f);
	mfs_scrub_census_free(shared_census);
	shared_census = NULL;
	return err;
}

/* ---- the populated image --------------------------------------------------------------------- */
struct img {
	struct tu_img t;
	uint64_t d1, d2, f1, f2, big, sl, xf, xb;
};

/* A new inode of `mode` named `name` in directory `dpino`, with nlink set; returned ino. */
static uint64_t mk(struct img *m, uint64_t dpino, const char *name, uint16_t mode)
{
	return tu_mknode(m->t.fs, dpino, name, mode, 0, NULL);
}

static void link_to(struct img *m, uint64_t dpino, const char *name, uint64_t ino)
{
	struct mfs_fs *fs = m->t.fs;
	struct mfs_trans *tp;
	struct mfs_inode *dp, *ip;

	CK_OK(mfs_iget(fs, dpino, 0, &dp));
	pthread_rwlock_wrlock(&dp->lock);
	CK_OK(mfs_iget(fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	CK_OK(mfs_trans_alloc(fs, &tp));
	ip->nlink++;
	CK_OK(mfs_inode_log(tp, ip));
	CK_OK(mfs_dir_add(tp, dp, name, (unsigned)strlen(name), ino, DT_REG));
	CK_OK(mfs_inode_log(tp, dp));
	CK_OK(mfs_trans_commit(tp));
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	pthread_rwlock_unlock(&dp->lock);
	mfs_iput(dp);
}

/* Give file `ino` `n` extents of `len` blocks with a one-block hole between them. */
static void give_extents(struct img *m, uint64_t ino, unsigned n, uint64_t len)
{
	struct mfs_inode *ip;

	CK_OK(mfs_iget(m->t.fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	for (unsigned i = 0; i < n; i++) {
		uint64_t off = i * (len + 1), got = 0;

		while (got < len) {
			struct mfs_trans *tp;
			struct mfs_bmap_ext ext;

			CK_OK(mfs_trans_alloc(m->t.fs, &tp));
			CK_OK(mfs_bmap_alloc(tp, ip, off + got, len - got, 0, &ext));
			CK_OK(mfs_trans_commit(tp));
			got += ext.len;
		}
	}
	ip->size = (uint64_t)n * (len + 1) * m->t.fs->geo.blocksize;
	{
		struct mfs_trans *tp;

		CK_OK(mfs_trans_alloc(m->t.fs, &tp));
		CK_OK(mfs_inode_log(tp, ip));
		CK_OK(mfs_trans_commit(tp));
	}
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
}

/* Four unwritten blocks of which the last two are then written: two extents in the map,
 * one record in the reverse map (which does not record the state), the second extent
 * starting two blocks into it. */
static void give_split_extent(struct img *m, uint64_t ino)
{
	struct mfs_inode *ip;
	struct mfs_trans *tp;
	struct mfs_bmap_ext ext;
	uint64_t done = 0;

	CK_OK(mfs_iget(m->t.fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	CK_OK(mfs_trans_alloc(m->t.fs, &tp));
	CK_OK(mfs_bmap_alloc(tp, ip, 0, 4, MFS_BMAP_UNWRITTEN, &ext));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(ext.len, 4);
	CK_OK(mfs_trans_alloc(m->t.fs, &tp));
	CK_OK(mfs_bmap_convert_written(tp, ip, 2, 2, &done));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(done, 2);
	ip->size = 4ull * m->t.fs->geo.blocksize;
	CK_OK(mfs_trans_alloc(m->t.fs, &tp));
	CK_OK(mfs_inode_log(tp, ip));
	CK_OK(mfs_trans_commit(tp));
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
}

static void set_symlink(struct img *m, uint64_t ino, const char *target)
{
	struct mfs_inode *ip;
	struct mfs_trans *tp;

	CK_OK(mfs_iget(m->t.fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	ip->dformat = MFS_FMT_LOCAL;
	memset(ip->lit, 0, ip->litsize);
	memcpy(ip->lit, target, strlen(target));
	ip->size = strlen(target);
	CK_OK(mfs_trans_alloc(m->t.fs, &tp));
	CK_OK(mfs_inode_log(tp, ip));
	CK_OK(mfs_trans_commit(tp));
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
}

static void set_xattr(struct img *m, uint64_t ino, const char *name, size_t vlen)
{
	struct mfs_inode *ip;
	struct mfs_trans *tp;
	char *v = malloc(vlen + 1);

	CK_TRUE(v);
	memset(v, 'v', vlen);
	CK_OK(mfs_iget(m->t.fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	CK_OK(mfs_trans_alloc(m->t.fs, &tp));
	CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, name, (unsigned)strlen(name), v, vlen, 0));
	CK_OK(mfs_trans_commit(tp));
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	free(v);
}

static void img_make(struct img *m)
{
	struct mfs_format_opts o = { .blocksize = 1024, .agcount = 4 };
	uint64_t root;
	char name[48];

	memset(m, 0, sizeof(*m));
	tu_img_make(&m->t, "mendfs_scrub", 64ull << 20, &o, 0);
	tu_sb_mark_dirty(m->t.fs);
	root = m->t.fs->geo.rootino;
	m->d1 = mk(m, root, "d1", S_IFDIR | 0755);
	m->d2 = mk(m, m->d1, "d2", S_IFDIR | 0755);
	m->f1 = mk(m, m->d1, "f1", S_IFREG | 0644);
	m->f2 = mk(m, root, "f2", S_IFREG | 0644);
	link_to(m, m->d2, "f2link", m->f2);
	m->sl = mk(m, m->d1, "sl", S_IFLNK | 0777);
	set_symlink(m, m->sl, "../f2");
	give_extents(m, m->f1, 2, 3);              /* inline: 3 extents fit */
	m->big = mk(m, root, "big", S_IFREG | 0644);
	give_extents(m, m->big, 60, 2);               /* more than fit inline: a btree */
	give_split_extent(m, mk(m, root, "split", S_IFREG | 0644));
	m->xf = mk(m, root, "xf", S_IFREG | 0600);
	set_xattr(m, m->xf, "small", 10);
	m->xb = mk(m, root, "xb", S_IFREG | 0600);     /* an attribute btree, a remote value */
	for (int i = 0; i < 12; i++) {
		snprintf(name, sizeof(name), "attribute-%02d", i);
		set_xattr(m, m->xb, name, i == 5 ? 3000 : 90);
	}
	for (int i = 0; i < 15; i++) {                 /* a one-leaf name btree in d2 */
		snprintf(name, sizeof(name), "entry-with-a-longish-name-%03d", i);
		mk(m, m->d2, name, S_IFREG | 0644);
	}
	CK_OK(mfs_bcache_flush(m->t.fs->bc));
}

static void img_destroy(struct img *m)
{
	tu_img_destroy(&m->t);
}

/* Every inode in use, by walking every AG's inode btree. */
struct ino_list {
	uint64_t *v;
	size_t n;
};

static int ino_collect(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_inobt_rec *r = rec;
	struct ino_list *l = priv;
	uint64_t mask = mfs_get64(r->freemask);

	for (unsigned i = 0; i < MFS_INODES_PER_CHUNK; i++) {
		if (mask >> i & 1)
			continue;
		l->v = realloc(l->v, (l->n + 1) * sizeof(*l->v));
		CK_TRUE(l->v);
		l->v[l->n++] = mfs_agino_to_ino(&cur->fs->geo, cur->agno,
						mfs_get32(r->startino) + i);
	}
	return 0;
}

static void inodes_in_use(struct mfs_fs *fs, struct ino_list *l)
{
	memset(l, 0, sizeof(*l));
	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++) {
		struct mfs_btree_cur cur;
		struct mfs_buf *hbp;

		CK_OK(mfs_read_agh(fs, agno, &hbp));
		mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_INO, hbp);
		CK_OK(mfs_btree_query_range(&cur, NULL, NULL, ino_collect, l));
		mfs_btree_cur_release(&cur);
		mfs_buf_put(hbp);
	}
}

static const uint32_t ag_types[] = { MFS_SCRUB_SB, MFS_SCRUB_AGH, MFS_SCRUB_AGFL,
				     MFS_SCRUB_BNOBT, MFS_SCRUB_CNTBT, MFS_SCRUB_INOBT,
				     MFS_SCRUB_RMAPBT };
static const uint32_t ino_types[] = { MFS_SCRUB_INODE, MFS_SCRUB_BMAP, MFS_SCRUB_DIR,
				      MFS_SCRUB_XATTR, MFS_SCRUB_SYMLINK };
static const uint32_t fs_types[] = { MFS_SCRUB_JOURNAL, MFS_SCRUB_NLINKS, MFS_SCRUB_ORPHANS,
				     MFS_SCRUB_SUMMARY };

/* Every checker on every object: nothing reported. */
static void assert_all_clean_once(struct mfs_fs *fs);

/* Every check finds nothing, read the slow way and with a census taken now. */
static void assert_all_clean(struct mfs_fs *fs)
{
	assert_all_clean_once(fs);
	shared_census = census_now(fs);
	assert_all_clean_once(fs);
	mfs_scrub_census_free(shared_census);
	shared_census = NULL;
}

static void assert_all_clean_once(struct mfs_fs *fs)
{
	struct findings f;
	struct ino_list l;
	int err;

	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++)
		for (size_t i = 0; i < sizeof(ag_types) / sizeof(ag_types[0]); i++) {
			err = run(fs, ag_types[i], agno, 0, &f);
			ck_assert_msg(err == 0 && f.n == 0, "type %u AG %u: err %d, %u findings: %s",
				      ag_types[i], agno, err, f.n, f.first);
		}
	inodes_in_use(fs, &l);
	ck_assert_uint_gt(l.n, 15);
	for (size_t j = 0; j < l.n; j++)
		for (size_t i = 0; i < sizeof(ino_types) / sizeof(ino_types[0]); i++) {
			err = run(fs, ino_types[i], 0, l.v[j], &f);
			ck_assert_msg(err == 0 && f.n == 0, "type %u inode %llu: err %d, %u "
				      "findings: %s", ino_types[i], (unsigned long long)l.v[j], err,
				      f.n, f.first);
		}
	free(l.v);
	for (size_t i = 0; i < sizeof(fs_types) / sizeof(fs_types[0]); i++) {
		err = run(fs, fs_types[i], 0, 0, &f);
		ck_assert_msg(err == 0 && f.n == 0, "type %u: err %d, %u findings: %s", fs_types[i],
			      err, f.n, f.first);
	}
}

/* Assert that a check reports the damage, naming `what` in the first message: read the
 * slow way, and with a census taken of the damaged filesystem. */
static void assert_found(struct mfs_fs *fs, uint32_t type, uint32_t agno, uint64_t ino,
			 const char *what)
{
	for (int census = 0; census < 2; census++) {
		struct findings f;
		int err = census ? run_census(fs, type, agno, ino, &f) : run(fs, type, agno, ino, &f);

		ck_assert_msg(err == 0, "type %u: err %d", type, err);
		ck_assert_msg(f.flags & (MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT),
			      "type %u AG %u inode %llu%s: damage not reported (flags 0x%x)", type,
			      agno, (unsigned long long)ino, census ? " (census)" : "", f.flags);
		/* Any finding: the order of a checker's findings is not part of its contract. */
		ck_assert_msg(strstr(f.all, what), "type %u%s: no finding names '%s'; the first: "
			      "'%s'", type, census ? " (census)" : "", what, f.first);
	}
}

/* ---- damaging one structure in the buffer cache ----------------------------------------------- */

/* Read block fsb raw, let `fn` change it, mark it dirty; `meta` reseals at write-back. */
static void *blk_get(struct mfs_fs *fs, uint64_t fsb, struct mfs_buf **bp)
{
	CK_OK(mfs_buf_read(fs->bc, fsb, NULL, bp));
	return (*bp)->data;
}

static void blk_put(struct mfs_fs *fs, struct mfs_buf *bp)
{
	mfs_blk_seal(bp->data, fs->geo.blocksize);
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
}


/* The fsblock of the first leaf of one of AG agno's trees. */
struct leaf_find {
	uint64_t fsb;
	int found;
};

static int leaf_fn(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	struct leaf_find *lf = priv;

	if (level == 0 && !lf->found) {
		lf->fsb = fsb;
		lf->found = 1;
	}
	return 0;
}

static uint64_t first_leaf(struct mfs_fs *fs, uint32_t agno, enum mfs_ag_tree t)
{
	struct mfs_btree_cur cur;
	struct mfs_buf *hbp;
	struct leaf_find lf = { 0, 0 };

	CK_OK(mfs_read_agh(fs, agno, &hbp));
	mfs_ag_cur_init(&cur, fs, NULL, agno, t, hbp);
	CK_OK(mfs_btree_visit_blocks(&cur, leaf_fn, &lf));
	mfs_btree_cur_release(&cur);
	mfs_buf_put(hbp);
	CK_TRUE(lf.found);
	return lf.fsb;
}

/* Record i of a leaf block. */
static void *leaf_rec(void *blk, size_t reclen, unsigned i)
{
	return (uint8_t *)blk + sizeof(struct mfs_btree_block) + (size_t)i * reclen;
}

/* The leaf block and index of the rmap record that starts at fsb. */
static uint64_t rmap_rec_at(struct mfs_fs *fs, uint64_t fsb, unsigned *idx)
{
	uint32_t agno = mfs_fsb_to_agno(&fs->geo, fsb);
	struct mfs_btree_cur cur;
	struct mfs_buf *hbp;
	struct mfs_rmap_key key;
	struct mfs_rmap_rec rec;
	uint64_t leaf;
	int stat;

	mfs_put32(key.startblock, mfs_fsb_to_agbno(&fs->geo, fsb));
	CK_OK(mfs_read_agh(fs, agno, &hbp));
	mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_RMAP, hbp);
	CK_OK(mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_EQ, &rec, &stat));
	CK_TRUE(stat);
	leaf = cur.path[0].bp->blkno;
	*idx = (unsigned)cur.path[0].idx;
	mfs_btree_cur_release(&cur);
	mfs_buf_put(hbp);
	return leaf;
}

/* The disk block of file block `off` of inode `ino`. */
static uint64_t file_block(struct mfs_fs *fs, uint64_t ino, uint64_t off)
{
	struct mfs_inode *ip;
	struct mfs_bmap_ext ext;

	CK_OK(mfs_iget(fs, ino, 0, &ip));
	pthread_rwlock_rdlock(&ip->lock);
	CK_OK(mfs_bmap_lookup(ip, off, &ext));
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	CK_TRUE(ext.startblock != MFS_BMAP_HOLE);
	return ext.startblock + (off - ext.startoff);
}

START_TEST(test_clean)
{
	struct img m;

	img_make(&m);
	assert_all_clean(m.t.fs);
	img_destroy(&m);
}
END_TEST

START_TEST(test_sb)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_sb *sb;

	img_make(&m);
	fs = m.t.fs;
	sb = blk_get(fs, mfs_agbno_to_fsb(&fs->geo, 2, MFS_SB_AGBNO), &bp);
	mfs_put32(sb->agblocks, mfs_get32(sb->agblocks) - 8);
	blk_put(fs, bp);
	assert_found(fs, MFS_SCRUB_SB, 2, 0, "AG 2 superblock");
	sb = blk_get(fs, mfs_agbno_to_fsb(&fs->geo, 1, MFS_SB_AGBNO), &bp);
	mfs_put64(sb->reserved[3], 1);
	blk_put(fs, bp);
	assert_found(fs, MFS_SCRUB_SB, 1, 0, "AG 1 superblock: reserved");
	img_destroy(&m);
}
END_TEST

START_TEST(test_agh)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_agh *agh;

	img_make(&m);
	fs = m.t.fs;
	agh = blk_get(fs, mfs_agbno_to_fsb(&fs->geo, 1, MFS_AGH_AGBNO), &bp);
	mfs_put32(agh->freeblks, mfs_get32(agh->freeblks) + 1);
	blk_put(fs, bp);
	assert_found(fs, MFS_SCRUB_AGH, 1, 0, "AG 1 header: freeblks");
	agh = blk_get(fs, mfs_agbno_to_fsb(&fs->geo, 0, MFS_AGH_AGBNO), &bp);
	mfs_put32(agh->ifree, mfs_get32(agh->ifree) + 1);
	blk_put(fs, bp);
	assert_found(fs, MFS_SCRUB_AGH, 0, 0, "AG 0 header: ifree");
	agh = blk_get(fs, mfs_agbno_to_fsb(&fs->geo, 3, MFS_AGH_AGBNO), &bp);
	mfs_put32(agh->roots[MFS_BT_RMAP], mfs_get32(agh->roots[MFS_BT_BNO]));
	blk_put(fs, bp);
	assert_found(fs, MFS_SCRUB_AGH, 3, 0, "AG 3 header: rmapbt root");
	img_destroy(&m);
}
END_TEST


START_TEST(test_agfl)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp, *hbp;
	struct mfs_agfl *fl;
	uint32_t first;

	img_make(&m);
	fs = m.t.fs;
	CK_OK(mfs_read_agh(fs, 2, &hbp));
	CK_TRUE(mfs_get32(((struct mfs_agh *)hbp->data)->fl_count) > 0);
	first = mfs_get32(((struct mfs_agh *)hbp->data)->fl_first);
	fl = blk_get(fs, mfs_agbno_to_fsb(&fs->geo, 2, MFS_AGFL_AGBNO), &bp);
	mfs_put32(fl->bno[first], mfs_get32(((struct mfs_agh *)hbp->data)->roots[MFS_BT_CNT]));
	mfs_buf_put(hbp);
	blk_put(fs, bp);
	assert_found(fs, MFS_SCRUB_AGFL, 2, 0, "AG 2 free list slot");
	img_destroy(&m);
}
END_TEST

START_TEST(test_bnobt)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_alloc_rec *r;

	img_make(&m);
	fs = m.t.fs;
	r = leaf_rec(blk_get(fs, first_leaf(fs, 1, MFS_BT_BNO), &bp), sizeof(*r), 0);
	mfs_put32(r->blockcount, mfs_get32(r->blockcount) - 1);
	blk_put(fs, bp);
	assert_found(fs, MFS_SCRUB_BNOBT, 1, 0, "AG 1 bnobt block ");
	img_destroy(&m);
}
END_TEST

START_TEST(test_cntbt)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_alloc_rec *r;

	img_make(&m);
	fs = m.t.fs;
	r = leaf_rec(blk_get(fs, first_leaf(fs, 0, MFS_BT_CNT), &bp), sizeof(*r), 0);
	mfs_put32(r->startblock, mfs_get32(r->startblock) + 1);
	blk_put(fs, bp);
	assert_found(fs, MFS_SCRUB_CNTBT, 0, 0, "AG 0 cntbt");
	img_destroy(&m);
}
END_TEST

START_TEST(test_inobt)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_inobt_rec *r;
	char what[64];

	img_make(&m);
	fs = m.t.fs;
	r = leaf_rec(blk_get(fs, first_leaf(fs, 0, MFS_BT_INO), &bp), sizeof(*r), 0);
	/* inode 0 of the root chunk is the root directory: mark it free */
	mfs_put64(r->freemask, mfs_get64(r->freemask) | 1);
	mfs_put32(r->freecount, mfs_get32(r->freecount) + 1);
	blk_put(fs, bp);
	snprintf(what, sizeof(what), "record 0: inode %llu is free",
		 (unsigned long long)fs->geo.rootino);
	assert_found(fs, MFS_SCRUB_INOBT, 0, 0, what);
	img_destroy(&m);
}
END_TEST

START_TEST(test_rmapbt)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_rmap_rec *r;
	uint64_t fsb, leaf;
	unsigned idx = 0;

	img_make(&m);
	fs = m.t.fs;
	/* f1's first extent said to belong to f2 */
	fsb = file_block(fs, m.f1, 0);
	leaf = rmap_rec_at(fs, fsb, &idx);
	r = leaf_rec(blk_get(fs, leaf, &bp), sizeof(*r), idx);
	CK_EQ(mfs_get64(r->owner), m.f1);
	mfs_put64(r->owner, m.f2);
	blk_put(fs, bp);
	assert_found(fs, MFS_SCRUB_RMAPBT, mfs_fsb_to_agno(&fs->geo, fsb), 0, "rmapbt extent");
	img_destroy(&m);
}
END_TEST


static int first_ag_owned(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_rmap_rec *r = rec;

	(void)cur;
	if (mfs_get64(r->owner) != MFS_OWN_AG)
		return 0;
	*(uint32_t *)priv = mfs_get32(r->startblock);
	return 1;
}

/* Blocks of the AG's own trees the reverse map gives to another special owner (the inobt):
 * each is named as no block of that owner's tree (asked of the trees, with no list of their
 * blocks), and the AG's count of its own no longer adds up. */
START_TEST(test_rmapbt_special_owner)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp, *hbp;
	struct mfs_btree_cur cur;
	struct mfs_rmap_rec *r;
	uint32_t start = UINT32_MAX;
	unsigned idx = 0;
	uint64_t leaf;
	char what[96];

	img_make(&m);
	fs = m.t.fs;
	CK_OK(mfs_read_agh(fs, 0, &hbp));
	mfs_ag_cur_init(&cur, fs, NULL, 0, MFS_BT_RMAP, hbp);
	CK_EQ(mfs_btree_query_range(&cur, NULL, NULL, first_ag_owned, &start), 1);
	mfs_btree_cur_release(&cur);
	mfs_buf_put(hbp);
	leaf = rmap_rec_at(fs, mfs_agbno_to_fsb(&fs->geo, 0, start), &idx);
	r = leaf_rec(blk_get(fs, leaf, &bp), sizeof(*r), idx);
	mfs_put64(r->owner, MFS_OWN_INOBT);
	blk_put(fs, bp);
	snprintf(what, sizeof(what), "block %u is owned by inobt but is no block of the inobt",
		 start);
	assert_found(fs, MFS_SCRUB_RMAPBT, 0, 0, what);
	assert_found(fs, MFS_SCRUB_RMAPBT, 0, 0, "bnobt/cntbt/rmapbt/free list blocks");
	img_destroy(&m);
}
END_TEST

/* The on-disk inode `ino` in its cluster buffer, to damage; dino_put reseals its CRC and
 * makes the inode cache read it again. */
static struct mfs_dinode *dino_get(struct mfs_fs *fs, uint64_t ino, struct mfs_buf **bp)
{
	uint8_t *blk = blk_get(fs, mfs_ino_to_fsb(&fs->geo, ino), bp);

	return (struct mfs_dinode *)(blk + mfs_ino_to_offset(&fs->geo, ino));
}

static void dino_put(struct mfs_fs *fs, struct mfs_buf *bp, struct mfs_dinode *d)
{
	uint64_t ino = mfs_get64(d->ino);

	mfs_dinode_seal(d, fs->geo.inodesize);
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
	mfs_inode_invalidate(fs, ino);
}

static uint8_t *lit(struct mfs_dinode *d)
{
	return (uint8_t *)(d + 1);
}

START_TEST(test_inode)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_dinode *d;
	char what[64];

	img_make(&m);
	fs = m.t.fs;
	d = dino_get(fs, m.f1, &bp);
	mfs_put32(d->mtime.nsec, 2000000000u);
	dino_put(fs, bp, d);
	snprintf(what, sizeof(what), "inode %llu: core fields", (unsigned long long)m.f1);
	assert_found(fs, MFS_SCRUB_INODE, 0, m.f1, what);
	d = dino_get(fs, m.f2, &bp);
	mfs_put64(d->reserved[1], 7);
	dino_put(fs, bp, d);
	snprintf(what, sizeof(what), "inode %llu: padding", (unsigned long long)m.f2);
	assert_found(fs, MFS_SCRUB_INODE, 0, m.f2, what);
	d = dino_get(fs, m.d2, &bp);
	mfs_put32(d->nlink, 1);
	dino_put(fs, bp, d);
	snprintf(what, sizeof(what), "inode %llu: directory with 1", (unsigned long long)m.d2);
	assert_found(fs, MFS_SCRUB_INODE, 0, m.d2, what);
	img_destroy(&m);
}
END_TEST

/*
 * The INOBT check's look at each inode of a chunk (taken from the census's sweep when there
 * is one): a free slot that fails its verifier, and one the free mask calls free that is
 * in use.
 */
START_TEST(test_inobt_inodes)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_dinode *d;
	const struct mfs_inobt_rec *r;
	uint64_t mask, ino, ino2;
	uint32_t start;
	char what[96];

	img_make(&m);
	fs = m.t.fs;
	r = leaf_rec(blk_get(fs, first_leaf(fs, 0, MFS_BT_INO), &bp), sizeof(*r), 0);
	mask = mfs_get64(r->freemask);
	start = mfs_get32(r->startino);
	mfs_buf_put(bp);
	CK_TRUE(__builtin_popcountll(mask) >= 2);
	ino = mfs_agino_to_ino(&fs->geo, 0, start + (uint32_t)__builtin_ctzll(mask));
	mask &= mask - 1;
	ino2 = mfs_agino_to_ino(&fs->geo, 0, start + (uint32_t)__builtin_ctzll(mask));
	/* A free slot whose checksum no longer matches (not resealed). */
	d = dino_get(fs, ino, &bp);
	mfs_put32(d->generation, mfs_get32(d->generation) ^ 0x5a5a);
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
	mfs_inode_invalidate(fs, ino);
	snprintf(what, sizeof(what), "inode %llu fails its verifier", (unsigned long long)ino);
	assert_found(fs, MFS_SCRUB_INOBT, 0, 0, what);
	/* A slot free in the mask with a link count. */
	d = dino_get(fs, ino2, &bp);
	mfs_put32(d->nlink, 1);
	dino_put(fs, bp, d);
	snprintf(what, sizeof(what), "inode %llu is free in the free mask, but in use",
		 (unsigned long long)ino2);
	assert_found(fs, MFS_SCRUB_INOBT, 0, 0, what);
	img_destroy(&m);
}
END_TEST

/* The INOBT check's cross-reference of each chunk with the reverse map: the root chunk's
 * blocks said to belong to the inode btree. */
START_TEST(test_inobt_rmap)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	const struct mfs_inobt_rec *ir;
	struct mfs_rmap_rec *r;
	uint64_t leaf;
	uint32_t agbno;
	unsigned idx = 0;

	img_make(&m);
	fs = m.t.fs;
	ir = leaf_rec(blk_get(fs, first_leaf(fs, 0, MFS_BT_INO), &bp), sizeof(*ir), 0);
	agbno = mfs_agino_to_agbno(&fs->geo, mfs_get32(ir->startino));
	mfs_buf_put(bp);
	leaf = rmap_rec_at(fs, mfs_agbno_to_fsb(&fs->geo, 0, agbno), &idx);
	r = leaf_rec(blk_get(fs, leaf, &bp), sizeof(*r), idx);
	CK_EQ(mfs_get64(r->owner), MFS_OWN_INODES);
	mfs_put64(r->owner, MFS_OWN_INOBT);
	blk_put(fs, bp);
	assert_found(fs, MFS_SCRUB_INOBT, 0, 0, "is owned by inobt in the rmapbt, expected inodes");
	img_destroy(&m);
}
END_TEST

START_TEST(test_bmap)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_dinode *d;
	struct mfs_bmbt_rec r;
	char what[64];

	img_make(&m);
	fs = m.t.fs;
	d = dino_get(fs, m.f1, &bp);
	CK_EQ(d->dformat, MFS_FMT_EXTENTS);
	memcpy(&r, lit(d) + sizeof(r), sizeof(r));       /* the second extent moves by one */
	mfs_put64(r.startblock, mfs_get64(r.startblock) + 1);
	memcpy(lit(d) + sizeof(r), &r, sizeof(r));
	dino_put(fs, bp, d);
	snprintf(what, sizeof(what), "inode %llu data extent at file block 4",
		 (unsigned long long)m.f1);
	assert_found(fs, MFS_SCRUB_BMAP, 0, m.f1, what);
	d = dino_get(fs, m.big, &bp);
	CK_EQ(d->dformat, MFS_FMT_BTREE);
	mfs_put64(d->nblocks, mfs_get64(d->nblocks) + 1);
	dino_put(fs, bp, d);
	snprintf(what, sizeof(what), "inode %llu: nblocks", (unsigned long long)m.big);
	assert_found(fs, MFS_SCRUB_BMAP, 0, m.big, what);
	img_destroy(&m);
}
END_TEST

/* Does the shared census say the reverse-map check matched ino's one extent exactly
 * (SCRUB_CI_ROOTMAP on a SCRUB_CI_EXT1 file)? */
static int census_rmapped(struct mfs_fs *fs, uint64_t ino)
{
	struct mfs_scrub_ctx ctx;
	struct scrub_census_ino ci;

	memset(&ctx, 0, sizeof(ctx));
	ctx.fs = fs;
	ctx.census = shared_census;
	CK_TRUE(scrub_census_get(&ctx, ino, &ci));
	CK_TRUE(ci.flags & SCRUB_CI_EXT1);
	return !!(ci.flags & SCRUB_CI_ROOTMAP);
}

/*
 * The extent map's batch skips the cross-reference of a file's one extent that the
 * reverse-map check of a clean AG matched to a record of exactly that extent.  Here the
 * record is cut in two (both halves its own, in order, no block free: the reverse-map
 * check finds nothing): the extent is covered by no one record, which the extent map's
 * check reports, so its reference must not be taken as done.
 */
START_TEST(test_bmap_rmapped)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_btree_block *bb;
	struct mfs_rmap_rec *r, half;
	struct findings f;
	uint64_t ino, fsb, leaf;
	uint32_t agno;
	unsigned idx = 0, n;

	img_make(&m);
	fs = m.t.fs;
	ino = mk(&m, m.d1, "one", S_IFREG | 0644);
	give_extents(&m, ino, 1, 2);
	fsb = file_block(fs, ino, 0);
	CK_EQ(file_block(fs, ino, 1), fsb + 1);
	agno = mfs_fsb_to_agno(&fs->geo, fsb);
	/* clean: matched, and nothing to report */
	shared_census = census_now(fs);
	CK_OK(run(fs, MFS_SCRUB_RMAPBT, agno, 0, &f));
	CK_EQ(f.n, 0);
	CK_TRUE(census_rmapped(fs, ino));
	CK_OK(run(fs, MFS_SCRUB_BMAP, 0, ino, &f));
	CK_EQ(f.n, 0);
	mfs_scrub_census_free(shared_census);
	shared_census = NULL;
	/* the record [fsb, 2 blocks) at file block 0 cut into [fsb, 1) at 0 and [fsb + 1, 1)
	 * at 1, the leaf's later records moved up by one */
	leaf = rmap_rec_at(fs, fsb, &idx);
	bb = blk_get(fs, leaf, &bp);
	n = mfs_get16(bb->numrecs);
	CK_TRUE(sizeof(*bb) + (n + 1) * sizeof(*r) <= fs->geo.blocksize);
	r = leaf_rec(bb, sizeof(*r), idx);
	CK_EQ(mfs_get64(r->owner), ino);
	CK_EQ(mfs_get32(r->blockcount), 2);
	half = *r;
	memmove(r + 2, r + 1, (n - idx - 1) * sizeof(*r));
	mfs_put32(r->blockcount, 1);
	mfs_put32(half.startblock, mfs_get32(half.startblock) + 1);
	mfs_put32(half.blockcount, 1);
	mfs_put64(half.offset, 1);
	r[1] = half;
	mfs_put16(bb->numrecs, n + 1);
	blk_put(fs, bp);
	shared_census = census_now(fs);
	CK_OK(run(fs, MFS_SCRUB_RMAPBT, agno, 0, &f));
	CK_EQ(f.n, 0);
	CK_TRUE(!census_rmapped(fs, ino));
	CK_OK(run(fs, MFS_SCRUB_BMAP, 0, ino, &f));
	ck_assert_msg(f.flags & (MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT),
		      "extent covered by two records not reported (flags 0x%x)", f.flags);
	mfs_scrub_census_free(shared_census);
	shared_census = NULL;
	img_destroy(&m);
}
END_TEST

START_TEST(test_dir)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_dinode *d;
	struct mfs_dir_root root;
	struct mfs_dir_rec *rec;
	char what[64];

	img_make(&m);
	fs = m.t.fs;
	/* d1 (inline): the first entry's file type */
	d = dino_get(fs, m.d1, &bp);
	CK_EQ(d->dformat, MFS_FMT_LOCAL);
	lit(d)[MFS_DIR_LOCAL_HDR + 8] = DT_SOCK;
	dino_put(fs, bp, d);
	snprintf(what, sizeof(what), "directory %llu entry", (unsigned long long)m.d1);
	assert_found(fs, MFS_SCRUB_DIR, 0, m.d1, what);
	/* d2 (name btree): the first entry names an inode that is not allocated */
	d = dino_get(fs, m.d2, &bp);
	CK_EQ(d->dformat, MFS_FMT_BTREE);
	memcpy(&root, lit(d), sizeof(root));
	mfs_buf_put(bp);
	CK_EQ(mfs_get32(root.levels), 1);
	rec = leaf_rec(blk_get(fs, mfs_get64(root.rootblock), &bp), sizeof(*rec), 0);
	mfs_put64(rec->ino, m.big + 20);
	blk_put(fs, bp);
	mfs_inode_invalidate(fs, m.d2);
	snprintf(what, sizeof(what), "directory %llu entry", (unsigned long long)m.d2);
	assert_found(fs, MFS_SCRUB_DIR, 0, m.d2, what);
	img_destroy(&m);
}
END_TEST

START_TEST(test_symlink)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_dinode *d;
	char what[64];

	img_make(&m);
	fs = m.t.fs;
	d = dino_get(fs, m.sl, &bp);
	lit(d)[2] = 0;
	dino_put(fs, bp, d);
	snprintf(what, sizeof(what), "symlink %llu", (unsigned long long)m.sl);
	assert_found(fs, MFS_SCRUB_SYMLINK, 0, m.sl, what);
	img_destroy(&m);
}
END_TEST

/* A symlink whose target block is not mapped: corrupt while it has links; once unlinked
 * (on its orphan list, its blocks freed before the inode) its target is not checked. */
START_TEST(test_symlink_orphan)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_dinode *d;
	struct findings f;
	char what[80];

	img_make(&m);
	fs = m.t.fs;
	d = dino_get(fs, m.sl, &bp);
	d->dformat = MFS_FMT_EXTENTS;
	mfs_put32(d->dnext, 0);
	memset(lit(d), 0, 16);
	mfs_put64(d->size, fs->geo.inodesize + 100);    /* too long to be inline */
	dino_put(fs, bp, d);
	snprintf(what, sizeof(what), "symlink %llu: target block 0 is not mapped",
		 (unsigned long long)m.sl);
	assert_found(fs, MFS_SCRUB_SYMLINK, 0, m.sl, what);
	d = dino_get(fs, m.sl, &bp);
	mfs_put32(d->nlink, 0);
	dino_put(fs, bp, d);
	CK_OK(run(fs, MFS_SCRUB_SYMLINK, 0, m.sl, &f));
	CK_EQ(f.n, 0);
	img_destroy(&m);
}
END_TEST

START_TEST(test_xattr)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_dinode *d;
	char what[64];

	img_make(&m);
	fs = m.t.fs;
	d = dino_get(fs, m.xf, &bp);
	CK_EQ(d->aformat, MFS_FMT_LOCAL);
	lit(d)[mfs_get16(d->forkoff) * 8u] = 9;         /* the first entry's namespace */
	dino_put(fs, bp, d);
	snprintf(what, sizeof(what), "inode %llu attribute fork", (unsigned long long)m.xf);
	assert_found(fs, MFS_SCRUB_XATTR, 0, m.xf, what);
	img_destroy(&m);
}
END_TEST


START_TEST(test_nlinks)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_dinode *d;
	char what[64];

	img_make(&m);
	fs = m.t.fs;
	d = dino_get(fs, m.f2, &bp);
	CK_EQ(mfs_get32(d->nlink), 2);
	mfs_put32(d->nlink, 3);
	dino_put(fs, bp, d);
	snprintf(what, sizeof(what), "inode %llu: link count 3, counted 2",
		 (unsigned long long)m.f2);
	assert_found(fs, MFS_SCRUB_NLINKS, 0, 0, what);
	img_destroy(&m);
}
END_TEST

START_TEST(test_nlinks_disconnected)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_dinode *d;

	img_make(&m);
	fs = m.t.fs;
	/* d1's entry for d2 renamed to a free inode: d2 and all below are cut off */
	d = dino_get(fs, m.d1, &bp);
	for (unsigned off = MFS_DIR_LOCAL_HDR; off + 11 <= mfs_get64(d->size);
	     off += 11 + lit(d)[off + 9]) {
		uint64_t ino;

		memcpy(&ino, lit(d) + off, 8);
		if (mfs_get64(ino) == m.d2) {
			mfs_put64(ino, m.f1);
			memcpy(lit(d) + off, &ino, 8);
			lit(d)[off + 8] = DT_REG;
		}
	}
	dino_put(fs, bp, d);
	assert_found(fs, MFS_SCRUB_NLINKS, 0, 0, "inode");
	img_destroy(&m);
}
END_TEST

/*
 * The census stands for the committed state only while nothing has committed since it was
 * taken: a damage written behind the transactions' back (as these tests do) is not seen
 * through it — it is used — while after a commit the checks read afresh.
 */
START_TEST(test_census)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_dinode *d;
	struct findings f;
	uint64_t seq, ino;

	img_make(&m);
	fs = m.t.fs;
	shared_census = census_now(fs);
	CK_TRUE(shared_census != NULL);
	/* used while current: f2's link count changed under it is not seen... */
	d = dino_get(fs, m.f2, &bp);
	mfs_put32(d->nlink, 3);
	dino_put(fs, bp, d);
	CK_OK(run(fs, MFS_SCRUB_NLINKS, 0, 0, &f));
	CK_EQ(f.n, 0);
	CK_OK(run(fs, MFS_SCRUB_INODE, 0, m.f2, &f));
	CK_EQ(f.n, 0);
	/* ...until a commit: a new file in d2 (whose entries the census holds too) */
	seq = mfs_fs_changes(fs);
	ino = mk(&m, m.d2, "after the census", S_IFREG | 0644);
	CK_TRUE(mfs_fs_changes(fs) != seq);
	CK_OK(run(fs, MFS_SCRUB_NLINKS, 0, 0, &f));
	CK_TRUE(strstr(f.all, "link count 3, counted 2") != NULL);
	CK_TRUE(strstr(f.all, "not reachable") == NULL);
	d = dino_get(fs, m.f2, &bp);
	mfs_put32(d->nlink, 2);
	dino_put(fs, bp, d);
	/* stale: every check reads afresh and finds nothing, the new file included */
	assert_all_clean_once(fs);
	CK_OK(run(fs, MFS_SCRUB_INODE, 0, ino, &f));
	CK_EQ(f.n, 0);
	mfs_scrub_census_free(shared_census);
	shared_census = NULL;
	img_destroy(&m);
}
END_TEST

/* The inode listing from the census and the slow way (inode btree and chunks) agree,
 * in batches of 7 (a cursor inside a chunk). */
START_TEST(test_list_inodes)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_scrub_ctx ctx[2];
	size_t total = 0;

	img_make(&m);
	fs = m.t.fs;
	memset(ctx, 0, sizeof(ctx));
	ctx[0].fs = ctx[1].fs = fs;
	CK_OK(mfs_scrub_census_new(fs, &ctx[1].census));
	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++) {
		uint64_t cursor[2], next[2];
		int end[2] = { 0, 0 };

		cursor[0] = cursor[1] = mfs_agino_to_ino(&fs->geo, agno, 0);
		while (!end[0]) {
			struct mfs_ctl_inode out[2][7];
			uint32_t n[2];

			for (int k = 0; k < 2; k++)
				CK_OK(mfs_scrub_list_inodes(&ctx[k], agno, cursor[k], out[k], 7, &n[k],
							    &next[k], &end[k]));
			CK_EQ(n[0], n[1]);
			CK_EQ(end[0], end[1]);
			CK_EQ(next[0], next[1]);
			CK_TRUE(memcmp(out[0], out[1], n[0] * sizeof(out[0][0])) == 0);
			total += n[0];
			cursor[0] = next[0];
			cursor[1] = next[1];
		}
	}
	CK_TRUE(total > 15);
	CK_EQ(mfs_scrub_list_inodes(&ctx[0], fs->geo.agcount, 0, NULL, 1, NULL, NULL, NULL),
	      -EINVAL);
	mfs_scrub_census_free(ctx[1].census);
	img_destroy(&m);
}
END_TEST

START_TEST(test_orphans)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_dinode *d;
	struct mfs_agh *agh;
	char what[64];

	img_make(&m);
	fs = m.t.fs;
	/* an inode without links that is not on the list */
	d = dino_get(fs, m.f1, &bp);
	mfs_put32(d->nlink, 0);
	dino_put(fs, bp, d);
	snprintf(what, sizeof(what), "inode %llu: in use", (unsigned long long)m.f1);
	assert_found(fs, MFS_SCRUB_INODE, 0, m.f1, what);
	assert_found(fs, MFS_SCRUB_ORPHANS, 0, 0, "AG 0 orphan list: holds 0");
	/* a list head naming an inode with links */
	agh = blk_get(fs, mfs_agbno_to_fsb(&fs->geo, 0, MFS_AGH_AGBNO), &bp);
	mfs_put64(agh->unlinked, m.f2);
	blk_put(fs, bp);
	assert_found(fs, MFS_SCRUB_ORPHANS, 0, 0, "AG 0 orphan list (head");
	img_destroy(&m);
}
END_TEST

START_TEST(test_summary)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_sb *sb;
	struct mfs_agh *agh;
	struct findings f;

	img_make(&m);
	fs = m.t.fs;
	/* dirty superblock: its counters are not compared */
	sb = blk_get(fs, mfs_agbno_to_fsb(&fs->geo, 0, MFS_SB_AGBNO), &bp);
	mfs_put64(sb->fdblocks, 12345);
	blk_put(fs, bp);
	CK_OK(run(fs, MFS_SCRUB_SUMMARY, 0, 0, &f));
	CK_EQ(f.n, 0);
	sb = blk_get(fs, mfs_agbno_to_fsb(&fs->geo, 0, MFS_SB_AGBNO), &bp);
	mfs_put32(sb->state, MFS_STATE_CLEAN);
	blk_put(fs, bp);
	assert_found(fs, MFS_SCRUB_SUMMARY, 0, 0, "summary counters: the clean superblock");
	agh = blk_get(fs, mfs_agbno_to_fsb(&fs->geo, 2, MFS_AGH_AGBNO), &bp);
	mfs_put32(agh->icount, 64);
	blk_put(fs, bp);
	assert_found(fs, MFS_SCRUB_SUMMARY, 0, 0, "summary counters: AG 2 header");
	img_destroy(&m);
}
END_TEST

START_TEST(test_journal)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	uint8_t *b;

	img_make(&m);
	fs = m.t.fs;
	for (int i = 0; i < 2; i++) {
		b = blk_get(fs, fs->geo.logstart + (uint64_t)i, &bp);
		memset(b + 16, 0x5a, 64);
		mfs_buf_mark_dirty(bp);
		mfs_buf_put(bp);
	}
	CK_OK(mfs_bcache_flush(fs->bc));
	assert_found(fs, MFS_SCRUB_JOURNAL, 0, 0, "journal");
	img_destroy(&m);
}
END_TEST


/* ---- no false positives under concurrent changes ------------------------------------------------ */
/*
 * Two writer threads change the filesystem through the library, with the daemon's locking
 * rules (directory lock, then the inode's, exclusive; transactions lock AGs; -EDEADLK:
 * cancel, read the inodes again, retry), each in its own directory: create files, hard link
 * them, grow their extent maps (written and unwritten), convert and punch them, set
 * attributes.  Meanwhile the main thread runs every checker on every object, again and
 * again.  Nothing may be reported.  Namespace changes hold `ns` shared; the link-count
 * checker's quiesce hook takes it exclusive.
 */
#define CW_FILES 24u

struct cworker {
	struct img *m;
	uint64_t dir, sub;
	uint64_t files[CW_FILES];
	unsigned nfiles;
	uint64_t seed;
	unsigned ops;
};

static pthread_rwlock_t ns = PTHREAD_RWLOCK_INITIALIZER;
static volatile int cw_stop;

static uint64_t cw_rand(struct cworker *w)
{
	w->seed ^= w->seed << 13;
	w->seed ^= w->seed >> 7;
	w->seed ^= w->seed << 17;
	return w->seed;
}

static int quiesce_hook(void *arg, int on)
{
	if (on)
		pthread_rwlock_wrlock(&ns);
	else
		pthread_rwlock_unlock(&ns);
	return 0;
}

/* Run fn in a transaction until it does not meet -EDEADLK; inodes ips[0..n) are held
 * exclusive by the caller and read again after a cancel. */
typedef int (*cw_fn)(struct mfs_trans *tp, struct mfs_inode **ips, void *arg);

static int cw_trans(struct mfs_fs *fs, struct mfs_inode **ips, unsigned n, cw_fn fn, void *arg)
{
	for (unsigned tries = 0;; tries++) {
		struct mfs_trans *tp;
		int err;

		CK_OK(mfs_trans_alloc(fs, &tp));
		err = fn(tp, ips, arg);
		if (!err)
			return mfs_trans_commit(tp);
		mfs_trans_cancel(tp);
		for (unsigned i = 0; i < n; i++)
			CK_OK(mfs_inode_reload(ips[i]));
		if (err != -EDEADLK || tries > 100000)
			return err;
		sched_yield();
	}
}

struct cw_create {
	const char *name;
	uint16_t mode;
	uint64_t ino;
};

static int cw_create_fn(struct mfs_trans *tp, struct mfs_inode **ips, void *arg)
{
	struct cw_create *c = arg;
	struct mfs_inode *dp = ips[0], *ip;
	int err;

	err = mfs_trans_lock_ag(tp, mfs_ino_to_agno(&dp->fs->geo, dp->ino), 0);
	if (!err)
		err = mfs_ialloc(tp, dp->ino, c->mode, &c->ino);
	if (err)
		return err;
	err = mfs_iget(dp->fs, c->ino, 0, &ip);
	if (err)
		return err;
	pthread_rwlock_wrlock(&ip->lock);
	ip->nlink = 1;
	err = mfs_inode_log(tp, ip);
	if (!err)
		err = mfs_dir_add(tp, dp, c->name, (unsigned)strlen(c->name), c->ino, DT_REG);
	if (!err)
		err = mfs_inode_log(tp, dp);
	if (err)
		mfs_inode_invalidate(dp->fs, c->ino);
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	return err;
}

struct cw_link {
	const char *name;
	uint64_t ino;
};

static int cw_link_fn(struct mfs_trans *tp, struct mfs_inode **ips, void *arg)
{
	struct cw_link *l = arg;
	int err;

	ips[1]->nlink++;
	err = mfs_inode_log(tp, ips[1]);
	if (!err)
		err = mfs_dir_add(tp, ips[0], l->name, (unsigned)strlen(l->name), l->ino, DT_REG);
	if (!err)
		err = mfs_inode_log(tp, ips[0]);
	return err;
}

struct cw_ext {
	uint64_t off, len;
	int punch;
};

static int cw_ext_fn(struct mfs_trans *tp, struct mfs_inode **ips, void *arg)
{
	struct cw_ext *e = arg;
	struct mfs_bmap_ext ext;
	uint64_t done;

	if (e->punch == 1)
		return mfs_bmap_punch(tp, ips[0], e->off, e->len, &done);
	if (e->punch == 2)
		return mfs_bmap_convert_written(tp, ips[0], e->off, e->len, &done);
	return mfs_bmap_alloc(tp, ips[0], e->off, e->len, e->punch == 3 ? MFS_BMAP_UNWRITTEN : 0,
			      &ext);
}

static int cw_xattr_fn(struct mfs_trans *tp, struct mfs_inode **ips, void *arg)
{
	static const char val[1000] = "value";
	unsigned n = *(const unsigned *)arg;
	char name[16];
	int err;

	snprintf(name, sizeof(name), "a%u", n % 7);
	if (n % 3 == 0) {
		err = mfs_xattr_remove(tp, ips[0], MFS_XATTR_NS_USER, name, (unsigned)strlen(name));
		return err == -ENODATA ? 0 : err;
	}
	return mfs_xattr_set(tp, ips[0], MFS_XATTR_NS_USER, name, (unsigned)strlen(name), val,
			     (n * 37) % 1000, 0);
}

static void cw_step(struct cworker *w)
{
	struct mfs_fs *fs = w->m->t.fs;
	struct mfs_inode *ips[2];
	unsigned what = (unsigned)(cw_rand(w) % 8);
	char name[48];
	int err;

	if (w->nfiles < 2 || (what == 0 && w->nfiles < CW_FILES)) {
		struct cw_create c = { name, S_IFREG | 0644, 0 };

		snprintf(name, sizeof(name), "f%u", w->ops);
		pthread_rwlock_rdlock(&ns);
		CK_OK(mfs_iget(fs, w->dir, 0, &ips[0]));
		pthread_rwlock_wrlock(&ips[0]->lock);
		err = cw_trans(fs, ips, 1, cw_create_fn, &c);
		pthread_rwlock_unlock(&ips[0]->lock);
		mfs_iput(ips[0]);
		pthread_rwlock_unlock(&ns);
		if (err != -ENOSPC) {
			CK_OK(err);
			w->files[w->nfiles++] = c.ino;
		}
	} else if (what == 1) {
		struct cw_link l = { name, w->files[cw_rand(w) % w->nfiles] };

		snprintf(name, sizeof(name), "l%u", w->ops);
		pthread_rwlock_rdlock(&ns);
		CK_OK(mfs_iget(fs, w->sub, 0, &ips[0]));
		CK_OK(mfs_iget(fs, l.ino, 0, &ips[1]));
		pthread_rwlock_wrlock(&ips[0]->lock);
		pthread_rwlock_wrlock(&ips[1]->lock);
		err = cw_trans(fs, ips, 2, cw_link_fn, &l);
		pthread_rwlock_unlock(&ips[1]->lock);
		pthread_rwlock_unlock(&ips[0]->lock);
		mfs_iput(ips[1]);
		mfs_iput(ips[0]);
		pthread_rwlock_unlock(&ns);
		CK_TRUE(err == 0 || err == -ENOSPC);
	} else {
		struct cw_ext e = { cw_rand(w) % 200, 1 + cw_rand(w) % 6,
				    what == 7 ? 1 : what == 6 ? (int)(cw_rand(w) % 3) + 1 : 0 };
		unsigned n = w->ops;

		CK_OK(mfs_iget(fs, w->files[cw_rand(w) % w->nfiles], 0, &ips[0]));
		pthread_rwlock_wrlock(&ips[0]->lock);
		if (what == 5)
			err = cw_trans(fs, ips, 1, cw_xattr_fn, &n);
		else
			err = cw_trans(fs, ips, 1, cw_ext_fn, &e);
		pthread_rwlock_unlock(&ips[0]->lock);
		mfs_iput(ips[0]);
		CK_TRUE(err == 0 || err == -ENOSPC);
	}
	w->ops++;
}

static void *cw_main(void *arg)
{
	struct cworker *w = arg;

	while (!cw_stop)
		cw_step(w);
	return NULL;
}

/* Every checker on every object once; returns the number of findings (printed).
 * `batched`: the inodes' checks share a memo 16 inodes at a time, as in the daemon's
 * batches (the memo's copies are then older than the checks that use them). */
static unsigned scrub_everything(struct mfs_fs *fs, int batched)
{
	struct findings f;
	struct ino_list l;
	struct mfs_scrub_ctx ctx;
	unsigned n = 0;
	int err;

	/* Batched rounds with a census too, as the daemon's checks share one (the writers
	 * make it stale, mostly: then the checks read the slow way). */
	if (batched)
		shared_census = census_now(fs);
	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++)
		for (size_t i = 0; i < sizeof(ag_types) / sizeof(ag_types[0]); i++) {
			CK_OK(run(fs, ag_types[i], agno, 0, &f));
			if (f.n)
				fprintf(stderr, "under load: %s\n", f.first);
			n += f.n;
		}
	memset(&l, 0, sizeof(l));
	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++) {
		struct mfs_btree_cur cur;
		struct mfs_buf *hbp;

		/* the inode btree is read under the AG lock: writers are running */
		mfs_ag_lock(fs, agno, MFS_AGL_INODES);
		CK_OK(mfs_read_agh(fs, agno, &hbp));
		mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_INO, hbp);
		CK_OK(mfs_btree_query_range(&cur, NULL, NULL, ino_collect, &l));
		mfs_btree_cur_release(&cur);
		mfs_buf_put(hbp);
		mfs_ag_unlock(fs, agno, MFS_AGL_INODES);
	}
	if (batched)
		CK_OK(mfs_scrub_memo_new(&shared_memo));
	for (size_t j = 0; j < l.n; j++) {
		if (j % 16 == 0 && batched) {
			struct mfs_scrub_ctx pc;

			mfs_scrub_memo_reset(shared_memo);
			memset(&pc, 0, sizeof(pc));
			pc.fs = fs;
			pc.memo = shared_memo;
			(void)mfs_scrub_memo_prepare_bmap(&pc, &l.v[j], l.n - j < 16 ? l.n - j : 16);
		}
		for (size_t i = 0; i < sizeof(ino_types) / sizeof(ino_types[0]); i++) {
			err = run(fs, ino_types[i], 0, l.v[j], &f);
			CK_TRUE(err == 0 || err == -ENOENT);
			if (f.n)
				fprintf(stderr, "under load: %s\n", f.first);
			n += f.n;
		}
	}
	mfs_scrub_memo_free(shared_memo);
	shared_memo = NULL;
	free(l.v);
	for (size_t i = 0; i < sizeof(fs_types) / sizeof(fs_types[0]); i++) {
		memset(&ctx, 0, sizeof(ctx));
		memset(&f, 0, sizeof(f));
		ctx.fs = fs;
		ctx.type = fs_types[i];
		ctx.report = collect;
		ctx.quiesce = quiesce_hook;
		ctx.hook_arg = &f;
		ctx.census = shared_census;
		CK_OK(mfs_scrub(&ctx));
		if (f.n)
			fprintf(stderr, "under load: %s\n", f.first);
		n += f.n;
	}
	mfs_scrub_census_free(shared_census);
	shared_census = NULL;
	return n;
}

START_TEST(test_concurrent)
{
	struct img m;
	struct cworker w[2];
	pthread_t th[2];
	unsigned rounds = 0, findings = 0;
	double t0;

	img_make(&m);
	for (int i = 0; i < 2; i++) {
		char name[16];

		memset(&w[i], 0, sizeof(w[i]));
		w[i].m = &m;
		snprintf(name, sizeof(name), "w%d", i);
		w[i].dir = mk(&m, m.t.fs->geo.rootino, name, S_IFDIR | 0755);
		w[i].sub = mk(&m, w[i].dir, "sub", S_IFDIR | 0755);
		w[i].seed = 0x9e3779b97f4a7c15ull * (uint64_t)(i + 1);
	}
	cw_stop = 0;
	for (int i = 0; i < 2; i++)
		ck_assert_int_eq(pthread_create(&th[i], NULL, cw_main, &w[i]), 0);
	t0 = tu_now();
	while (tu_now() - t0 < (UNDER_ASAN ? 6.0 : 3.0) || rounds < 3) {
		findings += scrub_everything(m.t.fs, rounds % 2);
		rounds++;
	}
	cw_stop = 1;
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	printf("check_scrub concurrent: %u full scrubs while the writers made %u + %u changes\n",
	       rounds, w[0].ops, w[1].ops);
	ck_assert_uint_gt(w[0].ops + w[1].ops, 50);
	ck_assert_uint_eq(findings, 0);
	/* and at rest, still clean */
	assert_all_clean(m.t.fs);
	img_destroy(&m);
}
END_TEST


/* ---- garbage never crashes a checker ---------------------------------------------------------- */
/*
 * Random damage to one metadata block at a time — AG headers and free lists, superblock
 * copies, every AG btree block, inode cluster blocks (one inode, resealed), extent-btree
 * and name-btree blocks — as a few random bytes or one random 1/2/4/8-byte field, with
 * the CRC recomputed so that the checkers' own logic (not the verifier) meets it; every
 * checker then runs on every object.  Any outcome but a crash or a hang is fine: the test
 * asserts that each check returned 0 or an errno, and that a fair share of the damage was
 * reported.  The block is restored after each round, and the image ends clean.
 */
struct blk_list {
	uint64_t *v;
	size_t n;
};

static void blk_add(struct blk_list *b, uint64_t fsb)
{
	b->v = realloc(b->v, (b->n + 1) * sizeof(*b->v));
	CK_TRUE(b->v);
	b->v[b->n++] = fsb;
}

static int blk_visit_fn(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	blk_add(priv, fsb);
	return 0;
}

static int rmap_meta_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_rmap_rec *r = rec;
	uint64_t owner = mfs_get64(r->owner);

	if (owner == MFS_OWN_INODES || (owner < MFS_OWN_MIN &&
					(mfs_get64(r->offset) & MFS_RMAP_BMBT_BLOCK)))
		for (uint32_t i = 0; i < mfs_get32(r->blockcount); i++)
			blk_add(priv, mfs_agbno_to_fsb(&cur->fs->geo, cur->agno,
						       mfs_get32(r->startblock) + i));
	return 0;
}

static void metadata_blocks(struct mfs_fs *fs, struct blk_list *b)
{
	memset(b, 0, sizeof(*b));
	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++) {
		struct mfs_buf *hbp;

		for (uint32_t k = 0; k < MFS_AG_FIXED_BLOCKS; k++)
			blk_add(b, mfs_agbno_to_fsb(&fs->geo, agno, k));
		CK_OK(mfs_read_agh(fs, agno, &hbp));
		for (int t = 0; t < MFS_AG_NTREES; t++) {
			struct mfs_btree_cur cur;

			mfs_ag_cur_init(&cur, fs, NULL, agno, (enum mfs_ag_tree)t, hbp);
			CK_OK(mfs_btree_visit_blocks(&cur, blk_visit_fn, b));
			if (t == MFS_BT_RMAP)
				CK_OK(mfs_btree_query_range(&cur, NULL, NULL, rmap_meta_fn, b));
			mfs_btree_cur_release(&cur);
		}
		mfs_buf_put(hbp);
	}
}

START_TEST(test_garbage)
{
	struct img m;
	struct mfs_fs *fs;
	struct blk_list b;
	struct ino_list l;
	uint8_t *saved;
	unsigned rounds = 0, reported = 0;
	double t0;

	tu_srand(tu_seed("MFS_SEED", "check_scrub garbage"));
	img_make(&m);
	fs = m.t.fs;
	metadata_blocks(fs, &b);
	inodes_in_use(fs, &l);
	saved = malloc(fs->geo.blocksize);
	CK_TRUE(saved);
	t0 = tu_now();
	while (tu_now() - t0 < (UNDER_ASAN ? 8.0 : 4.0) && rounds < 400) {
		uint64_t fsb = b.v[tu_rand_below((uint32_t)b.n)];
		struct mfs_buf *bp;
		uint8_t *blk = blk_get(fs, fsb, &bp);
		struct mfs_blkhdr *h = (void *)blk;
		int inode_blk = mfs_get32(h->magic) == MFS_DINODE_MAGIC;
		int meta = mfs_buf_is_meta(bp);
		uint32_t lo = 0, len = fs->geo.blocksize, n;
		struct findings f;
		unsigned found = 0;

		memcpy(saved, blk, fs->geo.blocksize);
		if (inode_blk) {        /* one inode of the cluster */
			len = fs->geo.inodesize;
			lo = tu_rand_below(fs->geo.blocksize / len) * len;
		}
		/* Past the self-describing header most of the time: logical damage. */
		n = tu_rand_below(4);
		for (uint32_t k = 0; k <= n; k++) {
			uint32_t sz = 1u << tu_rand_below(4);
			uint32_t at = lo + (len > 64 && tu_rand_below(8) ? 48 : 8) +
				      tu_rand_below(len - (len > 64 ? 56 : 16) - sz);

			for (uint32_t j = 0; j < sz; j++)
				blk[at + j] = (uint8_t)tu_rand();
		}
		if (inode_blk)
			mfs_dinode_seal(blk + lo, len);
		else
			mfs_blk_seal(blk, fs->geo.blocksize);
		mfs_buf_set_meta_state(bp, 0);
		mfs_buf_mark_dirty(bp);
		mfs_buf_put(bp);
		CK_OK(mfs_bcache_flush(fs->bc));
		for (size_t j = 0; j < l.n; j++)
			mfs_inode_invalidate(fs, l.v[j]);
		for (uint32_t agno = 0; agno < fs->geo.agcount; agno++)
			for (size_t i = 0; i < sizeof(ag_types) / sizeof(ag_types[0]); i++) {
				int err = run(fs, ag_types[i], agno, 0, &f);

				CK_TRUE(err <= 0);
				found += f.n;
			}
		for (size_t j = 0; j < l.n; j++)
			for (size_t i = 0; i < sizeof(ino_types) / sizeof(ino_types[0]); i++) {
				int err = run(fs, ino_types[i], 0, l.v[j], &f);

				CK_TRUE(err <= 0);
				found += f.n;
			}
		for (size_t i = 0; i < sizeof(fs_types) / sizeof(fs_types[0]); i++) {
			int err = run(fs, fs_types[i], 0, 0, &f);

			CK_TRUE(err <= 0);
			found += f.n;
		}
		reported += found > 0;
		if (!found && getenv("MFS_SCRUB_VERBOSE"))
			fprintf(stderr, "unseen: block %llu magic %.4s numrecs %u inode %d\n",
				(unsigned long long)fsb, (const char *)saved, saved[50] | saved[51] << 8,
				inode_blk);
		/* restore (a cached metadata block's CRC is only sealed at write-back) */
		blk = blk_get(fs, fsb, &bp);
		memcpy(blk, saved, fs->geo.blocksize);
		mfs_buf_set_meta_state(bp, meta);
		mfs_buf_mark_dirty(bp);
		mfs_buf_put(bp);
		CK_OK(mfs_bcache_flush(fs->bc));
		for (size_t j = 0; j < l.n; j++)
			mfs_inode_invalidate(fs, l.v[j]);
		rounds++;
	}
	printf("check_scrub garbage: %u rounds over %zu metadata blocks, %u reported\n", rounds,
	       b.n, reported);
	ck_assert_uint_gt(rounds, 20);
	/* A floor only: much of a block is unused space (past a leaf's records, free inodes,
	 * free-list slots not in use) where damage is harmless and invisible. */
	ck_assert_uint_gt(reported * 4, rounds);
	assert_all_clean(fs);                          /* and the restored image is clean */
	free(saved);
	free(b.v);
	free(l.v);
	img_destroy(&m);
}
END_TEST


START_TEST(test_fork_blocks)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_buf *bp;
	struct mfs_dinode *d;
	struct mfs_rmap_rec *r;
	struct mfs_dir_root droot;
	struct mfs_fork_root aroot;
	uint64_t leaf;
	unsigned idx = 0;
	char what[64];

	img_make(&m);
	fs = m.t.fs;
	/* d2's name-btree root said to be a data block of d2 */
	d = dino_get(fs, m.d2, &bp);
	memcpy(&droot, lit(d), sizeof(droot));
	mfs_buf_put(bp);
	leaf = rmap_rec_at(fs, mfs_get64(droot.rootblock), &idx);
	r = leaf_rec(blk_get(fs, leaf, &bp), sizeof(*r), idx);
	CK_EQ(mfs_get64(r->owner), m.d2);
	mfs_put64(r->offset, 0);
	blk_put(fs, bp);
	snprintf(what, sizeof(what), "directory %llu name btree block", (unsigned long long)m.d2);
	assert_found(fs, MFS_SCRUB_DIR, 0, m.d2, what);
	/* xb's attribute-btree root said to belong to xf */
	d = dino_get(fs, m.xb, &bp);
	CK_EQ(d->aformat, MFS_FMT_BTREE);
	memcpy(&aroot, lit(d) + mfs_get16(d->forkoff) * 8u, sizeof(aroot));
	mfs_buf_put(bp);
	leaf = rmap_rec_at(fs, mfs_get64(aroot.rootblock), &idx);
	r = leaf_rec(blk_get(fs, leaf, &bp), sizeof(*r), idx);
	CK_EQ(mfs_get64(r->owner), m.xb);
	mfs_put64(r->owner, m.xf);
	blk_put(fs, bp);
	snprintf(what, sizeof(what), "inode %llu attribute btree block", (unsigned long long)m.xb);
	assert_found(fs, MFS_SCRUB_XATTR, 0, m.xb, what);
	/* a data extent of big (whose map is a btree) said to be extent-btree blocks: blocks
	 * the reverse map gives to a tree that does not hold them (leaked) */
	leaf = rmap_rec_at(fs, file_block(fs, m.big, 0), &idx);
	r = leaf_rec(blk_get(fs, leaf, &bp), sizeof(*r), idx);
	CK_EQ(mfs_get64(r->owner), m.big);
	mfs_put64(r->offset, MFS_RMAP_BMBT_BLOCK);
	blk_put(fs, bp);
	snprintf(what, sizeof(what), "is not a block of inode %llu's extent btree (leaked?)",
		 (unsigned long long)m.big);
	assert_found(fs, MFS_SCRUB_RMAPBT, mfs_fsb_to_agno(&fs->geo, file_block(fs, m.big, 0)),
		     0, what);
	img_destroy(&m);
}
END_TEST

/* ---- the contract: errors, cancellation, allocation failures ------------------------------------- */
static int cancel_now(void *arg)
{
	return 1;
}

START_TEST(test_contract)
{
	struct img m;
	struct mfs_fs *fs;
	struct mfs_scrub_ctx ctx;
	struct findings f;

	img_make(&m);
	fs = m.t.fs;
	/* unknown type, AG out of range, bad inode numbers, a free inode, no fs */
	CK_EQ(run(fs, MFS_SCRUB_NTYPES, 0, 0, &f), -EINVAL);
	CK_EQ(run(fs, MFS_SCRUB_AGH, fs->geo.agcount, 0, &f), -EINVAL);
	CK_EQ(run(fs, MFS_SCRUB_INODE, 0, 0, &f), -EINVAL);
	CK_EQ(run(fs, MFS_SCRUB_BMAP, 0, 1ull << 60, &f), -EINVAL);
	CK_EQ(run(fs, MFS_SCRUB_INODE, 0, m.f1 + 200, &f), -ENOENT);
	CK_EQ(run(fs, MFS_SCRUB_DIR, 0, m.f1 + 200, &f), -ENOENT);
	CK_OK(run(fs, MFS_SCRUB_PROBE, 0, 0, &f));
	memset(&ctx, 0, sizeof(ctx));
	ctx.type = MFS_SCRUB_SB;
	CK_EQ(mfs_scrub(&ctx), -EINVAL);
	CK_EQ(mfs_scrub(NULL), -EINVAL);
	/* a client that went away: long checks stop with -ECANCELED */
	for (uint32_t t = MFS_SCRUB_SB; t < MFS_SCRUB_NTYPES; t++) {
		int err;

		memset(&ctx, 0, sizeof(ctx));
		memset(&f, 0, sizeof(f));
		ctx.fs = fs;
		ctx.type = t;
		ctx.ino = m.d2;
		ctx.report = collect;
		ctx.hook_arg = &f;
		ctx.cancelled = cancel_now;
		err = mfs_scrub(&ctx);
		CK_TRUE(err == 0 || err == -ECANCELED);
		CK_EQ(f.n, 0);
		if (t == MFS_SCRUB_AGH || t == MFS_SCRUB_RMAPBT || t == MFS_SCRUB_NLINKS ||
		    t == MFS_SCRUB_DIR || t == MFS_SCRUB_SUMMARY)
			CK_EQ(err, -ECANCELED);
	}
	img_destroy(&m);
}
END_TEST

/* Allocation failures at every point of every checker: -ENOMEM or a result, never a
 * crash, a false finding or a leak (the sanitizer build checks leaks). */
START_TEST(test_enomem)
{
	struct img m;
	struct mfs_fs *fs;
	struct findings f;
	unsigned failed = 0;
	const uint32_t types[] = { MFS_SCRUB_AGH, MFS_SCRUB_AGFL, MFS_SCRUB_BNOBT,
				   MFS_SCRUB_CNTBT, MFS_SCRUB_INOBT, MFS_SCRUB_RMAPBT,
				   MFS_SCRUB_BMAP, MFS_SCRUB_DIR, MFS_SCRUB_XATTR, MFS_SCRUB_NLINKS,
				   MFS_SCRUB_ORPHANS, MFS_SCRUB_SUMMARY };

	img_make(&m);
	fs = m.t.fs;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++)
		for (uint64_t skip = 0; skip < 40; skip++) {
			uint64_t ino = types[i] == MFS_SCRUB_BMAP ? m.big :
				       types[i] == MFS_SCRUB_XATTR ? m.xf : m.d2;
			int err;

			mfs_mem_fault_arm(skip, 1);
			err = run(fs, types[i], 0, ino, &f);
			mfs_mem_fault_disarm();
			CK_TRUE(err == 0 || err == -ENOMEM);
			failed += err == -ENOMEM;
			ck_assert_msg(f.n == 0 || err == 0 || (f.flags & MFS_SCRUB_OFLAG_INCOMPLETE),
				      "type %u skip %llu: finding under ENOMEM: %s", types[i],
				      (unsigned long long)skip, f.first);
			if (!err)
				ck_assert_msg(f.n == 0 || (f.flags & ~MFS_SCRUB_OFLAG_INCOMPLETE) == 0,
					      "type %u skip %llu: %s", types[i],
					      (unsigned long long)skip, f.first);
		}
	ck_assert_uint_gt(failed, 10);
	assert_all_clean(fs);
	img_destroy(&m);
}
END_TEST

static Suite *scrub_suite(void)
{
	Suite *s = suite_create("scrub");
	TCase *tc = tcase_create("checkers");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_clean);
	tcase_add_test(tc, test_sb);
	tcase_add_test(tc, test_agh);
	tcase_add_test(tc, test_agfl);
	tcase_add_test(tc, test_bnobt);
	tcase_add_test(tc, test_cntbt);
	tcase_add_test(tc, test_inobt);
	tcase_add_test(tc, test_inobt_inodes);
	tcase_add_test(tc, test_inobt_rmap);
	tcase_add_test(tc, test_rmapbt);
	tcase_add_test(tc, test_rmapbt_special_owner);
	tcase_add_test(tc, test_inode);
	tcase_add_test(tc, test_bmap);
	tcase_add_test(tc, test_bmap_rmapped);
	tcase_add_test(tc, test_dir);
	tcase_add_test(tc, test_symlink);
	tcase_add_test(tc, test_symlink_orphan);
	tcase_add_test(tc, test_xattr);
	tcase_add_test(tc, test_nlinks);
	tcase_add_test(tc, test_nlinks_disconnected);
	tcase_add_test(tc, test_census);
	tcase_add_test(tc, test_list_inodes);
	tcase_add_test(tc, test_orphans);
	tcase_add_test(tc, test_summary);
	tcase_add_test(tc, test_journal);
	tcase_add_test(tc, test_fork_blocks);
	tcase_add_test(tc, test_contract);
	tcase_add_test(tc, test_enomem);
	suite_add_tcase(s, tc);
	tc = tcase_create("concurrent");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, test_concurrent);
	tcase_add_test(tc, test_garbage);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(scrub_suite());
}
