/*
 * check_repair_links.c — the link-count and orphan-list rebuilders (repair/repair_nlinks.c,
 * repair_orphans.c, repair_lostfound.c) through mfs_repair, on an image opened in-process:
 *   - many files and directories with wrong counts, at sizes that take the scratch arrays
 *     past one window: every count set to what was counted, the checkers clean;
 *   - an unreferenced directory holding a subdirectory and a file: linked into /lost+found
 *     (made, mode 0700 root), its ".." /lost+found, the counts of the root, /lost+found and
 *     the directory right;
 *   - orphans: inodes without links and names, off their lists, in every AG, and a live inode
 *     at a head: the lists become exactly the orphans, in one transaction per AG;
 *   - abort: the test hook failing at each point before the first change leaves the image
 *     bit-for-bit unchanged, and the repair afterwards succeeds.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
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
#include "orphan.h"
#include "trans.h"

#include "format.h"
#include "repair.h"
#include "scrub.h"
#include "tu.h"

/* ---- building ---------------------------------------------------------------------------------- */

static void img(struct tu_img *t)
{
	struct mfs_format_opts o = { .blocksize = 1024, .agcount = 4 };

	tu_srand(tu_seed("MFS_TEST_SEED", "check_repair_links"));
	tu_img_make(t, "mendfs_links", 64ull << 20, &o, 0);
	tu_sb_mark_dirty(t->fs);
}

/* A new inode named `name` in dir (a directory gets "." and ".." and its parent a link).
 * nlink: the count written (0: the right one). */
static uint64_t mk(struct mfs_fs *fs, uint64_t dir, const char *name, uint16_t mode,
		   uint32_t nlink)
{
	return tu_mknode(fs, dir, name, mode, nlink, NULL);
}

/* Set an inode's link count and/or orphan pointer straight (damage). */
static void set_inode(struct mfs_fs *fs, uint64_t ino, uint32_t nlink, uint64_t next)
{
	struct mfs_inode *ip;
	struct mfs_trans *tp;

	CK_OK(mfs_iget(fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	ip->nlink = nlink;
	ip->next_unlinked = next;
	CK_OK(mfs_trans_alloc(fs, &tp));
	CK_OK(mfs_inode_log(tp, ip));
	CK_OK(mfs_trans_commit(tp));
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
}

static uint32_t links(struct mfs_fs *fs, uint64_t ino)
{
	struct mfs_inode *ip;
	uint32_t n;

	CK_OK(mfs_iget(fs, ino, 0, &ip));
	n = ip->nlink;
	mfs_iput(ip);
	return n;
}

/* Drop the entry `name` of dir (damage: its inode keeps its count). */
static void unname(struct mfs_fs *fs, uint64_t dir, const char *name)
{
	struct mfs_inode *dp;
	struct mfs_trans *tp;

	CK_OK(mfs_iget(fs, dir, 0, &dp));
	pthread_rwlock_wrlock(&dp->lock);
	CK_OK(mfs_trans_alloc(fs, &tp));
	CK_OK(mfs_dir_remove(tp, dp, name, (unsigned)strlen(name), NULL));
	CK_OK(mfs_inode_log(tp, dp));
	CK_OK(mfs_trans_commit(tp));
	pthread_rwlock_unlock(&dp->lock);
	mfs_iput(dp);
}

static void set_head(struct mfs_fs *fs, uint32_t agno, uint64_t ino)
{
	struct mfs_trans *tp;
	struct mfs_buf *bp;

	CK_OK(mfs_trans_alloc(fs, &tp));
	CK_OK(mfs_trans_lock_ag(tp, agno, 0));
	CK_OK(mfs_read_agh(fs, agno, &bp));
	CK_OK(mfs_trans_modify(tp, bp));
	mfs_put64(((struct mfs_agh *)bp->data)->unlinked, ino);
	mfs_buf_put(bp);
	CK_OK(mfs_trans_commit(tp));
}

/* ---- checking and repairing --------------------------------------------------------------------- */

static unsigned check(struct mfs_fs *fs, uint32_t type, uint64_t ino, char *first)
{
	struct tu_findings f;

	CK_OK(tu_scrub_one(fs, type, 0, ino, MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT,
			   &f));
	if (first)
		snprintf(first, sizeof(f.first), "%s", f.first);
	return f.n;
}

static void assert_clean(struct mfs_fs *fs, uint32_t type)
{
	char first[512];
	unsigned n = check(fs, type, 0, first);

	ck_assert_msg(n == 0, "type %u: %u findings: %s", type, n, first);
}

struct hook {
	enum mfs_repair_point at;
	int fired;
};

static int hook_fn(void *arg, enum mfs_repair_point at)
{
	struct hook *h = arg;

	if (at != h->at)
		return 0;
	h->fired = 1;
	return -ECANCELED;
}

static int repair(struct mfs_fs *fs, uint32_t type, struct hook *h, uint64_t *records)
{
	struct mfs_repair_ctx rc;
	int err = tu_repair_one(fs, type, 0, 0, h ? hook_fn : NULL, h, &rc);

	ck_assert_msg(h || !err, "repair of type %u: %s", type, rc.reason);
	if (records)
		*records = rc.records;
	return err;
}

/* ---- tests ----------------------------------------------------------------------------------- */

#define NDIRS   24u
#define NFILES  40u          /* per directory: ~1000 inodes, ~2000 entries with the links */

/* Counts wrong everywhere, arrays of several windows: all set to what is counted. */
START_TEST(test_counts_at_size)
{
	struct tu_img t;
	uint64_t root, dirs[NDIRS], first[NDIRS], fixed = 0, ndamaged = 0;
	char name[32];

	img(&t);
	root = t.fs->geo.rootino;
	for (unsigned d = 0; d < NDIRS; d++) {
		snprintf(name, sizeof(name), "dir%02u", d);
		dirs[d] = mk(t.fs, root, name, S_IFDIR | 0755, 0);
		for (unsigned i = 0; i < NFILES; i++) {
			uint64_t ino;

			snprintf(name, sizeof(name), "f%03u", i);
			ino = mk(t.fs, dirs[d], name, S_IFREG | 0644, 0);
			if (!i)
				first[d] = ino;
		}
		snprintf(name, sizeof(name), "sub%02u", d);
		mk(t.fs, dirs[d], name, S_IFDIR | 0755, 0);
	}
	/* every directory's first file named once more in the next directory (hard links) */
	for (unsigned d = 0; d < NDIRS; d++) {
		struct mfs_inode *dp;
		struct mfs_trans *tp;

		CK_OK(mfs_iget(t.fs, dirs[(d + 1) % NDIRS], 0, &dp));
		pthread_rwlock_wrlock(&dp->lock);
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		snprintf(name, sizeof(name), "link%02u", d);
		CK_OK(mfs_dir_add(tp, dp, name, (unsigned)strlen(name), first[d], DT_REG));
		CK_OK(mfs_inode_log(tp, dp));
		CK_OK(mfs_trans_commit(tp));
		pthread_rwlock_unlock(&dp->lock);
		mfs_iput(dp);
		set_inode(t.fs, first[d], 2, 0);
	}
	assert_clean(t.fs, MFS_SCRUB_NLINKS);
	/* damage: the linked files one too few or many, directories off by some, the root */
	for (unsigned d = 0; d < NDIRS; d++) {
		set_inode(t.fs, first[d], d % 2 ? 1 : 7, 0);
		set_inode(t.fs, dirs[d], 2 + tu_rand_below(2) * 5, 0);   /* right: 3 */
		ndamaged += 2;
	}
	set_inode(t.fs, root, 3, 0);
	ndamaged++;
	ck_assert_uint_ge(check(t.fs, MFS_SCRUB_NLINKS, 0, NULL), ndamaged / 2);
	CK_OK(repair(t.fs, MFS_SCRUB_NLINKS, NULL, &fixed));
	ck_assert_uint_ge(fixed, NDIRS + 1);        /* the files and the root at least */
	assert_clean(t.fs, MFS_SCRUB_NLINKS);
	assert_clean(t.fs, MFS_SCRUB_ORPHANS);
	for (unsigned d = 0; d < NDIRS; d++) {
		CK_EQ(links(t.fs, first[d]), 2);
		CK_EQ(links(t.fs, dirs[d]), 3);
	}
	CK_EQ(links(t.fs, root), 2 + NDIRS);
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}
END_TEST

/* An unreferenced directory with a subdirectory and a file goes into /lost+found. */
START_TEST(test_lostfound_dir)
{
	struct tu_img t;
	struct mfs_inode *lf, *ip;
	uint64_t root, d, lfino, parent, got;
	char name[32];

	img(&t);
	root = t.fs->geo.rootino;
	d = mk(t.fs, root, "gone", S_IFDIR | 0755, 0);
	mk(t.fs, d, "sub", S_IFDIR | 0755, 0);
	mk(t.fs, d, "file", S_IFREG | 0644, 0);
	unname(t.fs, root, "gone");
	set_inode(t.fs, root, 2, 0);                    /* as if its entry had never been */
	ck_assert_uint_ge(check(t.fs, MFS_SCRUB_NLINKS, 0, NULL), 1);
	CK_OK(repair(t.fs, MFS_SCRUB_NLINKS, NULL, NULL));
	assert_clean(t.fs, MFS_SCRUB_NLINKS);
	CK_EQ(check(t.fs, MFS_SCRUB_DIR, d, NULL), 0);

	CK_OK(mfs_iget(t.fs, root, 0, &ip));
	CK_OK(mfs_dir_lookup(ip, "lost+found", 10, &lfino, NULL));
	CK_EQ(ip->nlink, 3);
	mfs_iput(ip);
	CK_OK(mfs_iget(t.fs, lfino, 0, &lf));
	CK_EQ(lf->mode, S_IFDIR | 0700);
	CK_EQ(lf->uid, 0);
	CK_EQ(lf->gid, 0);
	CK_EQ(lf->nlink, 3);                            /* ".", its entry, #d's ".." */
	snprintf(name, sizeof(name), "#%llu", (unsigned long long)d);
	CK_OK(mfs_dir_lookup(lf, name, (unsigned)strlen(name), &got, NULL));
	CK_EQ(got, d);
	mfs_iput(lf);
	CK_OK(mfs_iget(t.fs, d, 0, &ip));
	CK_OK(mfs_dir_get_parent(ip, &parent));
	CK_EQ(parent, lfino);
	CK_EQ(ip->nlink, 3);
	mfs_iput(ip);
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}
END_TEST

/* Point dir's entry `name` at inode `to` (damage: an entry's inode number changed). */
static void retarget(struct mfs_fs *fs, uint64_t dir, const char *name, uint64_t to)
{
	struct mfs_inode *dp;
	struct mfs_trans *tp;
	unsigned len = (unsigned)strlen(name);

	CK_OK(mfs_iget(fs, dir, 0, &dp));
	pthread_rwlock_wrlock(&dp->lock);
	CK_OK(mfs_trans_alloc(fs, &tp));
	CK_OK(mfs_dir_remove(tp, dp, name, len, NULL));
	CK_OK(mfs_dir_add(tp, dp, name, len, to, DT_DIR));
	CK_OK(mfs_inode_log(tp, dp));
	CK_OK(mfs_trans_commit(tp));
	pthread_rwlock_unlock(&dp->lock);
	mfs_iput(dp);
}

static uint64_t named(struct mfs_fs *fs, uint64_t dir, const char *name)
{
	struct mfs_inode *dp;
	uint64_t ino = 0;

	CK_OK(mfs_iget(fs, dir, 0, &dp));
	pthread_rwlock_rdlock(&dp->lock);
	CK_OK(mfs_dir_lookup(dp, name, (unsigned)strlen(name), &ino, NULL));
	pthread_rwlock_unlock(&dp->lock);
	mfs_iput(dp);
	return ino;
}

/*
 * A directory named twice, an entry's inode number turned into another's subdirectory:
 *   0: root's "b" names a/kid: the entry in a (kid's "..") is its own, root's is dropped
 *      and b, orphaned, joined again under "b";
 *   1: a's "kid" names the root (named by no entry): dropped, kid joined again;
 *   2: root's "b" names a: both entries in the root, a's ".." — which is a's own cannot
 *      be told: refused with the reason.
 */
START_TEST(test_dir_named_twice)
{
	struct tu_img t;
	struct mfs_repair_ctx rc;
	uint64_t root, a, b, kid, records = 0;
	int err;

	img(&t);
	root = t.fs->geo.rootino;
	a = mk(t.fs, root, "a", S_IFDIR | 0755, 0);
	b = mk(t.fs, root, "b", S_IFDIR | 0755, 0);
	kid = mk(t.fs, a, "kid", S_IFDIR | 0755, 0);
	mk(t.fs, b, "file", S_IFREG | 0644, 0);
	if (_i == 0)
		retarget(t.fs, root, "b", kid);
	else if (_i == 1)
		retarget(t.fs, a, "kid", root);
	else
		retarget(t.fs, root, "b", a);
	CK_OK(mfs_bcache_flush(t.fs->bc));
	CK_TRUE(check(t.fs, MFS_SCRUB_NLINKS, 0, NULL) >= 1);
	if (_i == 2) {
		err = tu_repair_one(t.fs, MFS_SCRUB_NLINKS, 0, 0, NULL, NULL, &rc);
		CK_EQ(err, -EFSCORRUPTED);
		ck_assert_msg(strstr(rc.reason, "cannot be told"), "%s", rc.reason);
		tu_img_destroy(&t);
		return;
	}
	CK_OK(repair(t.fs, MFS_SCRUB_NLINKS, NULL, &records));
	CK_TRUE(records >= 1);
	assert_clean(t.fs, MFS_SCRUB_NLINKS);
	CK_EQ(check(t.fs, MFS_SCRUB_DIR, root, NULL), 0);
	CK_EQ(check(t.fs, MFS_SCRUB_DIR, a, NULL), 0);
	CK_EQ(named(t.fs, root, "a"), a);
	CK_EQ(named(t.fs, root, "b"), b);
	CK_EQ(named(t.fs, a, "kid"), kid);
	CK_EQ(links(t.fs, root), 4);
	CK_EQ(links(t.fs, a), 3);
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}
END_TEST

/* Orphans in every AG off their lists, a live inode at AG 0's head. */
START_TEST(test_orphans)
{
	struct tu_img t;
	uint64_t root, live, members = 0, listed = 0, got = 0;

	img(&t);
	root = t.fs->geo.rootino;
	live = mk(t.fs, root, "live", S_IFREG | 0644, 0);
	for (uint32_t a = 0; a < t.fs->geo.agcount; a++) {
		/* near a number of AG a: in that AG when it can */
		for (unsigned i = 0; i < 30; i++) {
			struct mfs_trans *tp;
			uint64_t ino;

			CK_OK(mfs_trans_alloc(t.fs, &tp));
			CK_OK(mfs_ialloc(tp, mfs_agino_to_ino(&t.fs->geo, a, 128), S_IFREG | 0600,
					 &ino));
			CK_OK(mfs_trans_commit(tp));
			members++;
		}
	}
	set_head(t.fs, 0, live);
	ck_assert_uint_ge(check(t.fs, MFS_SCRUB_ORPHANS, 0, NULL), 1);
	CK_OK(repair(t.fs, MFS_SCRUB_ORPHANS, NULL, &listed));
	CK_EQ(listed, members);
	assert_clean(t.fs, MFS_SCRUB_ORPHANS);
	for (uint32_t a = 0; a < t.fs->geo.agcount; a++) {
		uint64_t n;

		CK_OK(mfs_orphan_check(t.fs, a, &n));
		got += n;
	}
	CK_EQ(got, members);
	/* clean: nothing to do, nothing changed */
	{
		uint32_t crc = tu_image_crc(t.fs, t.path);

		CK_OK(repair(t.fs, MFS_SCRUB_ORPHANS, NULL, &listed));
		CK_EQ(listed, members);
		CK_EQ(tu_image_crc(t.fs, t.path), crc);
	}
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}
END_TEST

/* The hook fails at each point before the first change: the image is unchanged. */
START_TEST(test_abort)
{
	static const enum mfs_repair_point pts[] = { MFS_REPAIR_AT_RESERVED,
		MFS_REPAIR_AT_GATHERED, MFS_REPAIR_AT_SORTING, MFS_REPAIR_AT_BUILT };
	uint32_t type = _i < 4 ? MFS_SCRUB_NLINKS : MFS_SCRUB_ORPHANS;
	struct hook h = { pts[_i % 4], 0 };
	struct tu_img t;
	uint64_t root, a, b;
	uint32_t crc;
	int err;

	if (type == MFS_SCRUB_ORPHANS && h.at == MFS_REPAIR_AT_SORTING)
		return;                 /* the orphan rebuild sorts nothing */
	img(&t);
	root = t.fs->geo.rootino;
	a = mk(t.fs, root, "a", S_IFREG | 0644, 5);
	b = mk(t.fs, root, "b", S_IFDIR | 0755, 0);
	mk(t.fs, b, "c", S_IFREG | 0644, 0);
	mk(t.fs, b, "d", S_IFREG | 0644, 0);
	unname(t.fs, b, "d");                           /* d: a count, no name */
	set_head(t.fs, 0, a);
	crc = tu_image_crc(t.fs, t.path);
	err = repair(t.fs, type, &h, NULL);
	ck_assert_msg(h.fired, "point %d never reached", (int)h.at);
	CK_EQ(err, -ECANCELED);
	CK_EQ(tu_image_crc(t.fs, t.path), crc);
	CK_OK(repair(t.fs, type, NULL, NULL));
	assert_clean(t.fs, type);
	tu_img_destroy(&t);
}
END_TEST

static Suite *links_suite(void)
{
	Suite *s = suite_create("repair_links");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, UNDER_ASAN ? 120 : 30);
	tcase_add_test(tc, test_counts_at_size);
	tcase_add_test(tc, test_lostfound_dir);
	tcase_add_test(tc, test_orphans);
	tcase_add_loop_test(tc, test_dir_named_twice, 0, 3);
	tcase_add_loop_test(tc, test_abort, 0, 8);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite_needing("mendfs_db", links_suite());
}
