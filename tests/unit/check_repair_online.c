/*
 * check_repair_online.c — a rebuild of one AG's space trees does not stop the changes of
 * that AG's inodes (DESIGN.md "Scrub and repair"; fs.h's two AG locks).
 *
 * The free-space trees and the reverse map of the AG holding a few files' inodes are
 * rebuilt (tu_repair_one, memfd scratch) and held at the test hook with the new trees built
 * and not committed, the AG's space lock held all the while.  Meanwhile another thread, in
 * its own transactions:
 *   - (first, in a thread of its own) unmaps and frees the blocks of a file of the AG, which
 *     needs the AG's space: it must not wait for it holding the AG's inode lock (its
 *     transaction is refused at once, cancelled, waits holding nothing: mfs_trans_wait_busy,
 *     and goes through once the rebuild is done);
 *   - logs a new mtime of one file (its inode's cluster buffer lies in the AG);
 *   - maps a new block to another file of the AG: the allocator's bounded wait sends the
 *     block to another AG;
 *   - asks the inode btree of the AG whether an inode is in use (MFS_IGET_UNTRUSTED on an
 *     inode not in the cache).
 * The thread must finish while the rebuild is still held (bounded: 20 s, then a failure —
 * before the split it waited for the rebuild's commit).  Then the rebuild commits, every
 * checker of the AG and of the files is clean, the new mtime and block are there, and
 * mendfs_db's check of the unmounted image passes.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bmap.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "mendfs_format.h"
#include "trans.h"

#include "format.h"
#include "repair.h"
#include "scrub.h"
#include "tu.h"

#define MTIME_SEC 1234567890

struct online {
	struct mfs_fs *fs;
	uint32_t agno;             /* the AG rebuilt */
	uint64_t touched, grown, untrusted, punched;
	uint64_t off;              /* the block `grown` gets */
	/* the thread's outcome */
	pthread_t th;
	atomic_int done;
	int err;
	_Atomic(const char *) step;    /* the change under way */
	const char *stuck;             /* the one under way when the hook gave up */
	uint64_t fsb;
	/* the punch's */
	pthread_t pth;
	atomic_int tried;          /* its first try came back */
	int perr, pretries;
	/* the hook's view */
	int finished_while_held;
	unsigned held;
};

static int touch(struct online *o)
{
	struct mfs_inode *ip;
	struct mfs_trans *tp;
	int err = mfs_iget(o->fs, o->touched, 0, &ip);

	if (err)
		return err;
	pthread_rwlock_wrlock(&ip->lock);
	ip->mtime.tv_sec = MTIME_SEC;
	ip->mtime.tv_nsec = 0;
	err = mfs_trans_alloc(o->fs, &tp);
	if (!err) {
		err = mfs_inode_log(tp, ip);
		err = err ? (mfs_trans_cancel(tp), err) : mfs_trans_commit(tp);
	}
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	return err;
}

static int grow(struct online *o)
{
	struct mfs_bmap_ext ext;
	struct mfs_inode *ip;
	struct mfs_trans *tp;
	int err = mfs_iget(o->fs, o->grown, 0, &ip);

	if (err)
		return err;
	pthread_rwlock_wrlock(&ip->lock);
	err = mfs_trans_alloc(o->fs, &tp);
	if (!err) {
		err = mfs_bmap_alloc(tp, ip, o->off, 1, 0, &ext);
		if (!err) {
			o->fsb = ext.startblock;
			err = mfs_inode_log(tp, ip);
		}
		err = err ? (mfs_trans_cancel(tp), err) : mfs_trans_commit(tp);
	}
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	return err;
}

static int ask(struct online *o)
{
	struct mfs_inode *ip;
	int err = mfs_iget(o->fs, o->untrusted, MFS_IGET_UNTRUSTED, &ip);

	if (!err)
		mfs_iput(ip);
	return err;
}

static void *changer(void *arg)
{
	struct online *o = arg;

	atomic_store(&o->step, "touch");
	o->err = touch(o);
	if (!o->err) {
		atomic_store(&o->step, "grow");
		o->err = grow(o);
	}
	if (!o->err) {
		atomic_store(&o->step, "ask");
		o->err = ask(o);
	}
	atomic_store(&o->done, 1);
	return NULL;
}

/* Unmap and free every block of `punched` (o->off of them), in transactions tried again
 * after a lock conflict as the daemon does (cancel, reload, wait for the busy lock). */
static void *puncher(void *arg)
{
	struct online *o = arg;
	struct mfs_inode *ip;
	struct mfs_trans *tp;
	uint64_t off = 0, done;
	int err = mfs_iget(o->fs, o->punched, 0, &ip);

	if (err) {
		o->perr = err;
		atomic_store(&o->tried, 1);
		return NULL;
	}
	pthread_rwlock_wrlock(&ip->lock);
	while (!err && off < o->off) {
		err = mfs_trans_alloc(o->fs, &tp);
		if (err)
			break;
		err = mfs_bmap_punch(tp, ip, off, o->off - off, &done);
		if (!err)
			err = mfs_inode_log(tp, ip);
		atomic_store(&o->tried, 1);
		if (err) {
			mfs_trans_cancel(tp);
			mfs_inode_reload(ip);
			if (err == -EDEADLK && ++o->pretries < 100) {
				mfs_trans_wait_busy();
				err = 0;
			}
			continue;
		}
		err = mfs_trans_commit(tp);
		off += done;
	}
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	o->perr = err;
	return NULL;
}

/* At the built point (space lock held, nothing committed): the changes in another thread,
 * which must finish before the hook lets the rebuild go on. */
static int hold_fn(void *arg, enum mfs_repair_point at)
{
	struct online *o = arg;
	double end;

	if (at != MFS_REPAIR_AT_BUILT || o->held++)
		return 0;
	/* the punch first: once its first try came back (or it is stuck), the changes */
	atomic_init(&o->tried, 0);
	CK_EQ(pthread_create(&o->pth, NULL, puncher, o), 0);
	end = tu_now() + 5;
	while (!atomic_load(&o->tried) && tu_now() < end)
		usleep(2000);
	atomic_init(&o->done, 0);
	CK_EQ(pthread_create(&o->th, NULL, changer, o), 0);
	end = tu_now() + 20;
	while (!atomic_load(&o->done) && tu_now() < end)
		usleep(2000);
	o->finished_while_held = atomic_load(&o->done);
	o->stuck = atomic_load(&o->step);
	return 0;
}

static void clean(struct mfs_fs *fs, uint32_t agno, const uint64_t *inos, unsigned n)
{
	static const uint32_t types[] = { MFS_SCRUB_AGH, MFS_SCRUB_AGFL, MFS_SCRUB_BNOBT,
					  MFS_SCRUB_CNTBT, MFS_SCRUB_INOBT, MFS_SCRUB_RMAPBT };
	struct tu_findings f;

	for (unsigned t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		int err = tu_scrub_one(fs, types[t], agno, 0, 0, &f);

		ck_assert_msg(err == 0 && f.n == 0, "type %u AG %u: err %d, %u findings: %s",
			      types[t], agno, err, f.n, f.first);
	}
	for (unsigned i = 0; i < n; i++) {
		CK_OK(tu_scrub_one(fs, MFS_SCRUB_INODE, 0, inos[i], 0, &f));
		ck_assert_msg(f.n == 0, "inode %llu: %s", (unsigned long long)inos[i], f.first);
		CK_OK(tu_scrub_one(fs, MFS_SCRUB_BMAP, 0, inos[i], 0, &f));
		ck_assert_msg(f.n == 0, "extent map of inode %llu: %s", (unsigned long long)inos[i],
			      f.first);
	}
}

/* Blocks 0..n-1 of ino mapped, in separate transactions (a few extents near the inode). */
static void give_blocks(struct mfs_fs *fs, uint64_t ino, uint64_t n)
{
	struct mfs_bmap_ext ext;
	struct mfs_inode *ip;
	struct mfs_trans *tp;

	CK_OK(mfs_iget(fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	for (uint64_t off = 0; off < n; off += ext.len) {
		CK_OK(mfs_trans_alloc(fs, &tp));
		CK_OK(mfs_bmap_alloc(tp, ip, off, n - off, 0, &ext));
		CK_OK(mfs_inode_log(tp, ip));
		CK_OK(mfs_trans_commit(tp));
	}
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
}

static void rebuild_held(uint32_t type)
{
	struct mfs_format_opts opts = { .blocksize = 1024, .agcount = 4 };
	const struct mfs_geom *g;
	struct mfs_repair_ctx rc;
	struct online o;
	struct tu_img t;
	struct mfs_inode *ip;
	uint64_t inos[4];
	char name[16];
	int err;

	memset(&o, 0, sizeof(o));
	tu_img_make(&t, "mendfs_ronline", 64ull << 20, &opts, 0);
	tu_sb_mark_dirty(t.fs);         /* its summary counters are not kept up to date here */
	g = &t.fs->geo;
	for (unsigned i = 0; i < 4; i++) {
		snprintf(name, sizeof(name), "f%u", i);
		inos[i] = tu_mknode(t.fs, g->rootino, name, S_IFREG | 0644, 0, NULL);
		ck_assert_uint_eq(mfs_ino_to_agno(g, inos[i]), mfs_ino_to_agno(g, inos[0]));
	}
	o.fs = t.fs;
	o.agno = mfs_ino_to_agno(g, inos[0]);
	o.touched = inos[0];
	o.grown = inos[1];
	o.untrusted = inos[2];
	o.punched = inos[3];
	o.off = 40;
	give_blocks(t.fs, inos[1], o.off);
	give_blocks(t.fs, inos[3], o.off);
	/* the asked inode must come from the disk: out of the cache */
	tu_img_close(&t);
	tu_img_open(&t);
	o.fs = t.fs;
	g = &t.fs->geo;

	err = tu_repair_one(t.fs, type, o.agno, 0, hold_fn, &o, &rc);
	ck_assert_msg(err == 0, "rebuild of type %u AG %u: %d: %s", type, o.agno, err, rc.reason);
	ck_assert_uint_eq(o.held, 1);
	if (!o.finished_while_held) {
		/* it is stuck behind the rebuild: let it end before failing */
		CK_EQ(pthread_join(o.th, NULL), 0);
		CK_EQ(pthread_join(o.pth, NULL), 0);
		ck_abort_msg("type %u: a change of an inode of AG %u (%s) waited for the rebuild "
			     "of the AG's space trees", type, o.agno, o.stuck);
	}
	CK_EQ(pthread_join(o.th, NULL), 0);
	CK_EQ(pthread_join(o.pth, NULL), 0);
	ck_assert_msg(o.perr == 0, "type %u: the punch: %d after %d tries", type, o.perr,
		      o.pretries);
	ck_assert_msg(o.err == 0, "type %u: %s: %d", type, atomic_load(&o.step), o.err);
	ck_assert_msg(mfs_fsb_to_agno(g, o.fsb) != o.agno,
		      "type %u: the new block %llu was placed in the AG being rebuilt", type,
		      (unsigned long long)o.fsb);
	clean(t.fs, o.agno, inos, 4);
	CK_OK(mfs_iget(t.fs, inos[0], 0, &ip));
	ck_assert_int_eq(ip->mtime.tv_sec, MTIME_SEC);
	mfs_iput(ip);
	{
		struct mfs_bmap_ext ext;

		CK_OK(mfs_iget(t.fs, inos[3], 0, &ip));
		CK_OK(mfs_bmap_lookup(ip, 0, &ext));
		ck_assert_msg(ext.startblock == MFS_BMAP_HOLE && ext.len >= o.off,
			      "type %u: the punched file still maps blocks", type);
		mfs_iput(ip);
	}
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}

START_TEST(test_bnobt_rebuild_lets_inodes_change)
{
	rebuild_held(MFS_SCRUB_BNOBT);
}
END_TEST

START_TEST(test_rmapbt_rebuild_lets_inodes_change)
{
	rebuild_held(MFS_SCRUB_RMAPBT);
}
END_TEST

static Suite *repair_online_suite(void)
{
	Suite *s = suite_create("repair_online");
	TCase *tc = tcase_create("space rebuild held");

	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, test_bnobt_rebuild_lets_inodes_change);
	tcase_add_test(tc, test_rmapbt_rebuild_lets_inodes_change);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite_needing("mendfs_db", repair_online_suite());
}
