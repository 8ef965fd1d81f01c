/*
 * check_repair_xattr.c — the attribute rebuilder (repair/repair_xattr.c) on an inode whose
 * inline attributes are framed wrongly: a fork offset one unit off still loads (the data
 * fork fits either way), the checker sees entries that do not parse, and the rebuild must
 * salvage them from where they really are (the offset the inode record rebuild would find,
 * repair/repair_ilit.h) rather than drop them.  Each case: the damage seen, a repair
 * stopped by the test hook leaves the image bit for bit as it was, the repair leaves every
 * attribute with its value and the checkers clean, in memory and from disk.
 */
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>

#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
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

#define NX 3u               /* inline attributes of the test file */

static unsigned findings(struct mfs_fs *fs, uint32_t type, uint64_t ino)
{
	struct tu_findings f;

	CK_OK(tu_scrub_one(fs, type, 0, ino, MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT,
			   &f));
	return f.n;
}

static int stop_at;

static int hook_fn(void *arg, enum mfs_repair_point at)
{
	(void)arg;
	return (int)at == stop_at ? -ECANCELED : 0;
}

static int repair(struct mfs_fs *fs, uint32_t type, uint64_t ino, int hook, char *reason,
		  size_t len)
{
	struct mfs_repair_ctx rc;
	int err = tu_repair_one(fs, type, 0, ino, hook ? hook_fn : NULL, NULL, &rc);

	snprintf(reason, len, "%s", rc.reason);
	return err;
}

/* Attribute i: "user.xa<i>" = i + 3 bytes of 'a' + i. */
static void attr(unsigned i, char *name, char *val, size_t *vlen)
{
	snprintf(name, 16, "xa%u", i);
	*vlen = i + 3;
	memset(val, 'a' + (int)i, *vlen);
}

static uint64_t make_file(struct mfs_fs *fs)
{
	uint64_t ino = tu_mknode(fs, fs->geo.rootino, "f", S_IFREG | 0644, 0, NULL);
	struct mfs_inode *ip;
	char name[16], val[16];
	size_t vlen;

	CK_OK(mfs_iget(fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	for (unsigned i = 0; i < NX; i++) {
		struct mfs_trans *tp;

		attr(i, name, val, &vlen);
		CK_OK(mfs_trans_alloc(fs, &tp));
		CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, name, (unsigned)strlen(name), val,
				    vlen, 0));
		CK_OK(mfs_trans_commit(tp));
	}
	CK_EQ(ip->aformat, MFS_FMT_LOCAL);
	CK_EQ(ip->anext, NX);
	ck_assert_uint_gt(ip->forkoff, 1);
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	CK_OK(mfs_bcache_flush(fs->bc));
	return ino;
}

/* Move the committed inode's fork offset by delta (resealed; the cache forgets it). */
static void shift_forkoff(struct mfs_fs *fs, uint64_t ino, int delta)
{
	struct mfs_dinode *d;
	struct mfs_buf *bp;

	CK_OK(mfs_buf_read(fs->bc, mfs_ino_to_fsb(&fs->geo, ino), NULL, &bp));
	d = (void *)((char *)bp->data + mfs_ino_to_offset(&fs->geo, ino));
	mfs_put16(d->forkoff, (uint16_t)(mfs_get16(d->forkoff) + delta));
	mfs_dinode_seal(d, fs->geo.inodesize);
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
	mfs_inode_invalidate(fs, ino);
	CK_OK(mfs_bcache_flush(fs->bc));
}

static void all_there(struct mfs_fs *fs, uint64_t ino)
{
	struct mfs_inode *ip;
	char name[16], want[16], got[16];
	size_t wlen, glen;

	CK_OK(mfs_iget(fs, ino, 0, &ip));
	pthread_rwlock_rdlock(&ip->lock);
	for (unsigned i = 0; i < NX; i++) {
		attr(i, name, want, &wlen);
		ck_assert_msg(mfs_xattr_get(ip, MFS_XATTR_NS_USER, name, (unsigned)strlen(name), got,
					    sizeof(got), &glen) == 0, "%s lost", name);
		ck_assert_msg(glen == wlen && !memcmp(got, want, wlen), "%s: wrong value", name);
	}
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
}

/* _i 0: the fork offset one unit past the entries, 1: one unit before them. */
START_TEST(test_forkoff_off_by_one)
{
	static const int points[] = { MFS_REPAIR_AT_RESERVED, MFS_REPAIR_AT_GATHERED,
				      MFS_REPAIR_AT_BUILT };
	struct mfs_format_opts o = { .blocksize = 1024, .agcount = 2 };
	struct tu_img t;
	struct mfs_inode *ip;
	char reason[1024];
	uint64_t ino;
	uint32_t crc;
	int err;

	tu_srand(tu_seed("MFS_TEST_SEED", "check_repair_xattr"));
	tu_img_make(&t, "mendfs_repair_xattr", 32ull << 20, &o, 0);
	tu_sb_mark_dirty(t.fs);
	ino = make_file(t.fs);
	shift_forkoff(t.fs, ino, _i ? -1 : 1);
	CK_OK(mfs_iget(t.fs, ino, 0, &ip));     /* it still loads */
	mfs_iput(ip);
	CK_TRUE(findings(t.fs, MFS_SCRUB_XATTR, ino) > 0);
	crc = tu_image_crc(t.fs, t.path);
	for (unsigned k = 0; k < sizeof(points) / sizeof(points[0]); k++) {
		stop_at = points[k];
		err = repair(t.fs, MFS_SCRUB_XATTR, ino, 1, reason, sizeof(reason));
		ck_assert_msg(err == -ECANCELED, "stopped at %d: %d: %s", points[k], err, reason);
		CK_EQ(tu_image_crc(t.fs, t.path), crc);
	}
	err = repair(t.fs, MFS_SCRUB_XATTR, ino, 0, reason, sizeof(reason));
	ck_assert_msg(err == 0, "repair: %d: %s", err, reason);
	all_there(t.fs, ino);
	CK_EQ(findings(t.fs, MFS_SCRUB_XATTR, ino), 0);
	CK_EQ(findings(t.fs, MFS_SCRUB_INODE, ino), 0);
	CK_EQ(findings(t.fs, MFS_SCRUB_BMAP, ino), 0);
	tu_img_close(&t);               /* and from disk */
	tu_img_open(&t);
	all_there(t.fs, ino);
	CK_EQ(findings(t.fs, MFS_SCRUB_XATTR, ino), 0);
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("repair_xattr");
	TCase *tc = tcase_create("core");

	mfs_log_quiet();
	tcase_set_timeout(tc, UNDER_ASAN ? 120 : 30);
	tcase_add_loop_test(tc, test_forkoff_off_by_one, 0, 2);
	suite_add_tcase(s, tc);
	return tu_run_suite_needing("mendfs_db", s);
}
