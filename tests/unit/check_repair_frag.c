/*
 * check_repair_frag.c — free-space rebuilds of a fully fragmented AG, again and again.
 *
 * AG 1 of a two-AG image (1 KiB blocks, a small journal) is written with mfs_ag_format():
 * a file owns every other block of the whole AG, so its free space is nothing but one-block
 * extents and its free-space trees span hundreds of blocks.  The file's extent map is
 * rebuilt from the reverse map.  Then the free-space trees of AG 1 are rebuilt several
 * times in a row (each a forced rebuild of clean trees): from the second on, the only free
 * space is one-block extents, so the new trees' blocks are hundreds of one-block pieces,
 * each a new reverse-map record, whose splits need far more blocks than the AG free list
 * holds at once, and the journal is too small to log the trees themselves.  Each rebuild
 * must succeed in its one transaction, and the AG's checkers (and the extent map's) must be
 * clean after each, and after a reopen that replays the journal; the second, stopped once
 * just before its commit, must leave the image as it was.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ag.h"
#include "alloc.h"
#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "bmap.h"
#include "inode.h"
#include "journal.h"
#include "log.h"
#include "mem.h"
#include "mendfs_format.h"
#include "trans.h"

#include "format.h"
#include "repair.h"
#include "scrub.h"
#include "tu.h"

#define AG_BYTES   (48ull << 20)     /* AG 1: 49,152 one-KiB blocks, about 24,500 extents */
#define LOG_BYTES  (256u << 10)      /* 256 journal blocks: fewer than the new trees' */
#define REBUILDS   3

static void clean(struct mfs_fs *fs, uint64_t ino)
{
	static const uint32_t types[] = { MFS_SCRUB_AGH, MFS_SCRUB_AGFL, MFS_SCRUB_BNOBT,
					  MFS_SCRUB_CNTBT, MFS_SCRUB_RMAPBT };
	struct tu_findings f;

	for (unsigned t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		int err = tu_scrub_one(fs, types[t], 1, 0, 0, &f);

		ck_assert_msg(err == 0 && f.n == 0, "type %u AG 1: err %d, %u findings: %s",
			      types[t], err, f.n, f.first);
	}
	CK_OK(tu_scrub_one(fs, MFS_SCRUB_BMAP, 0, ino, 0, &f));
	ck_assert_msg(f.n == 0, "extent map of inode %llu: %s", (unsigned long long)ino,
		      f.first);
}

/* Stops the rebuild with everything built, just before its commit. */
static int stop_at_built(void *arg, enum mfs_repair_point at)
{
	return at == MFS_REPAIR_AT_BUILT ? -ECANCELED : 0;
}

/* A rebuild; stopped: cancelled before its commit, which must leave nothing changed. */
static void rebuild_as(struct mfs_fs *fs, uint32_t type, uint32_t agno, uint64_t ino,
		       int stopped)
{
	struct mfs_repair_ctx rc;
	int err = tu_repair_one(fs, type, agno, ino, stopped ? stop_at_built : NULL, NULL, &rc);

	if (stopped)
		ck_assert_msg(err == -ECANCELED, "stopped rebuild of type %u AG %u: %d: %s", type,
			      agno, err, rc.reason);
	else
		ck_assert_msg(err == 0, "rebuild of type %u AG %u: %d: %s", type, agno, err,
			      rc.reason);
}

static void rebuild(struct mfs_fs *fs, uint32_t type, uint32_t agno, uint64_t ino)
{
	rebuild_as(fs, type, agno, ino, 0);
}

static uint32_t free_blocks(struct mfs_fs *fs, uint32_t *longest)
{
	struct mfs_buf *bp;
	uint32_t n;

	CK_OK(mfs_read_agh(fs, 1, &bp));
	n = mfs_get32(((struct mfs_agh *)bp->data)->freeblks);
	*longest = mfs_get32(((struct mfs_agh *)bp->data)->longest);
	mfs_buf_put(bp);
	return n;
}

/* The fragmented image (a journal of logbytes), its file's extent map rebuilt, reopened
 * with the journal; the file's inode number. */
static uint64_t make_frag(struct tu_img *out, uint32_t logbytes)
{
	struct mfs_format_opts o = { .blocksize = 1024, .agcount = 2, .logbytes = logbytes };
	struct mfs_ag_extent *used;
	struct tu_img t;
	struct mfs_fs *fs;
	uint32_t aglen, first, n;
	uint64_t ino;

	tu_img_make(&t, "mendfs_repair_frag", 2 * AG_BYTES, &o, 0);
	fs = t.fs;
	tu_sb_mark_dirty(fs);
	ino = tu_mknode(fs, fs->geo.rootino, "frag", S_IFREG | 0644, 0, NULL);
	aglen = mfs_ag_length(&fs->geo, 1);
	first = MFS_AG_FIXED_BLOCKS + mfs_ag_format_blocks(&fs->geo) + 2;
	n = (aglen - first) / 2;
	used = mfs_malloc(n * sizeof(*used));
	CK_TRUE(used);
	for (uint32_t i = 0; i < n; i++) {
		used[i].agbno = first + 2 * i;
		used[i].len = 1;
		used[i].owner = ino;
		used[i].offset = 2 * (uint64_t)i;
	}
	CK_OK(mfs_ag_format(fs, 1, used, n, NULL, 0));
	free(used);
	CK_OK(mfs_bcache_flush(fs->bc));
	{
		struct mfs_inode *ip;
		struct mfs_trans *tp;

		CK_OK(mfs_iget(fs, ino, 0, &ip));
		pthread_rwlock_wrlock(&ip->lock);
		ip->size = 2ull * n * fs->geo.blocksize;
		CK_OK(mfs_trans_alloc(fs, &tp));
		CK_OK(mfs_inode_log(tp, ip));
		CK_OK(mfs_trans_commit(tp));
		pthread_rwlock_unlock(&ip->lock);
		mfs_iput(ip);
	}
	/* the extent map's rebuild logs its tree: without the journal */
	rebuild(fs, MFS_SCRUB_BMAP, 0, ino);
	tu_img_close(&t);
	t.flags = MFS_OPEN_JOURNAL;
	tu_img_open(&t);
	clean(t.fs, ino);
	*out = t;
	return ino;
}

/* A crash right after the commits: the image copied and reopened (the journal replayed)
 * is clean; both images go. */
static void replayed_clean(struct tu_img *t, uint64_t ino)
{
	struct tu_img c = *t;

	tu_image_create(c.path, "mendfs_repair_frag_crash", 0);
	CK_EQ(tu_run("cp --sparse=always %s %s", t->path, c.path), 0);
	tu_img_destroy(t);
	c.fs = NULL;
	tu_img_open(&c);
	clean(c.fs, ino);
	tu_img_destroy(&c);
}

START_TEST(test_fragmented_rebuilds)
{
	struct tu_img t;
	struct mfs_fs *fs;
	uint32_t aglen, n, longest;
	uint64_t ino = make_frag(&t, LOG_BYTES);

	fs = t.fs;
	aglen = mfs_ag_length(&fs->geo, 1);
	for (int round = 0; round < REBUILDS; round++) {
		if (round == 1) {
			/* the same rebuild stopped just before its commit: nothing changed */
			uint32_t crc = tu_image_crc(fs, t.path);

			rebuild_as(fs, MFS_SCRUB_BNOBT, 1, 0, 1);
			CK_EQ(tu_image_crc(fs, t.path), crc);
			/* and the cache as it was: the old trees' blocks that the reverse map's
			 * splits took from the free list read as the old trees again */
			clean(fs, ino);
		}
		rebuild(fs, MFS_SCRUB_BNOBT, 1, 0);
		clean(fs, ino);
		n = free_blocks(fs, &longest);
		ck_assert_uint_gt(n, aglen / 3);
		ck_assert_uint_le(longest, 2);   /* nothing but crumbs, every round */
	}
	replayed_clean(&t, ino);
}
END_TEST

/*
 * The new trees' records go in after the commit, their splits fed from the old trees'
 * blocks; should those be used up (made to, after 100 of its ~1,000 changes:
 * rep_abt_dry_after), the free list is fed from the ordinary allocator (the new trees are
 * valid then): the rebuild succeeds, the AG clean, also after a crash.  (Before the
 * records went in after the commit, a dry list cancelled the attempt and the rebuild was
 * done again the logged way.)
 */
extern uint64_t rep_abt_dry_after, rep_abt_alloc_feeds;   /* repair/repair_ag.h (private) */
extern int rep_abt_force_logged;

START_TEST(test_free_list_dry_feeds_from_allocator)
{
	struct tu_img t;
	uint64_t ino = make_frag(&t, 4u << 20), fed;
	uint32_t longest;

	rebuild(t.fs, MFS_SCRUB_BNOBT, 1, 0);
	clean(t.fs, ino);
	fed = rep_abt_alloc_feeds;
	rep_abt_dry_after = 100;
	rebuild(t.fs, MFS_SCRUB_BNOBT, 1, 0);
	rep_abt_dry_after = UINT64_MAX;
	ck_assert_uint_gt(rep_abt_alloc_feeds, fed);
	clean(t.fs, ino);
	ck_assert_uint_gt(free_blocks(t.fs, &longest), mfs_ag_length(&t.fs->geo, 1) / 3);
	replayed_clean(&t, ino);
}
END_TEST

/*
 * The work after the commit cut short (as by a crash; the test hook fails there): once
 * right after the new trees' blocks are recorded in the reverse map (the hook's first
 * point; it is not called before: the AG is not fit to be seen until then), once while
 * the old trees' blocks are being freed (its first point after a batch of those).  The new
 * trees are in place, the AG header says the job is unfinished, and the by-block tree's
 * check reports just that — the reverse map's, which has more AG-owned blocks than the
 * trees and the free list hold, leaves it to that finding.  Then, on the image reopened
 * after a crash (journal replayed) and on the live one, the recovery a mount runs
 * (mfs_repair_reap_pending) finishes it: every checker clean, the mark gone.
 */
extern uint64_t rep_reap_batch, rep_reap_freed;          /* repair/repair_ag.h (private) */

struct cut {
	unsigned seen, at;           /* hook points seen; the one failed (0: the first after
				      * the reap freed blocks) */
	uint64_t freed;              /* rep_reap_freed before the rebuild */
};

static int fail_at_reaped(void *arg, enum mfs_repair_point at)
{
	struct cut *c = arg;

	if (at != MFS_REPAIR_AT_REAPED)
		return 0;
	++c->seen;
	if (!c->at)
		return __atomic_load_n(&rep_reap_freed, __ATOMIC_RELAXED) > c->freed ? -EINTR : 0;
	return c->seen == c->at ? -EINTR : 0;
}

static int reap_marked(struct mfs_fs *fs)
{
	struct mfs_buf *bp;
	int marked;

	CK_OK(mfs_read_agh(fs, 1, &bp));
	marked = !!(mfs_get32(((struct mfs_agh *)bp->data)->flags) & MFS_AGH_REAP);
	mfs_buf_put(bp);
	return marked;
}

static void reap_recovered(struct mfs_fs *fs, uint64_t ino)
{
	uint32_t n = 0;

	CK_OK(mfs_repair_reap_pending(fs, MFS_REPAIR_OFFLINE, &n));
	CK_EQ(n, 1);
	CK_EQ(reap_marked(fs), 0);
	clean(fs, ino);
	CK_OK(mfs_repair_reap_pending(fs, MFS_REPAIR_OFFLINE, &n));
	CK_EQ(n, 0);
}

/* A crash now: a copy of the image (the log forced first), reopened (the journal
 * replayed), is marked, and the recovery a mount runs leaves it clean; the copy goes. */
static void crash_recovered(const struct tu_img *t, const char *tag, uint64_t ino)
{
	struct tu_img c = *t;

	tu_image_create(c.path, tag, 0);
	CK_OK(mfs_journal_force(t->fs->log));
	CK_EQ(tu_run("cp --sparse=always %s %s", t->path, c.path), 0);
	c.fs = NULL;
	tu_img_open(&c);
	CK_EQ(reap_marked(c.fs), 1);
	reap_recovered(c.fs, ino);
	tu_img_destroy(&c);
}

/* A free-space rebuild of AG 1 (in batches of 8 logged blocks) stopped at its hook point
 * `at` after the commit (0: the first after the reap freed blocks); the reason. */
static void reap_cut(struct mfs_fs *fs, unsigned at, char *why, size_t len)
{
	struct mfs_repair_ctx rc;
	struct cut c = { 0, at, rep_reap_freed };
	int err;

	rebuild(fs, MFS_SCRUB_BNOBT, 1, 0);
	rep_reap_batch = 8;
	c.freed = __atomic_load_n(&rep_reap_freed, __ATOMIC_RELAXED);
	err = tu_repair_one(fs, MFS_SCRUB_BNOBT, 1, 0, fail_at_reaped, &c, &rc);
	rep_reap_batch = 256;
	ck_assert_msg(err == -EINTR && (!at || c.seen == at), "stopped at hook point %u: %d "
		      "(seen %u): %s", at, err, c.seen, rc.reason);
	CK_EQ(reap_marked(fs), 1);
	snprintf(why, len, "%s", rc.reason);
}

START_TEST(test_reap_interrupted)
{
	/* _i 0: right after the recording (none of the old blocks freed yet), 1: in the reap */
	static const unsigned at[2] = { 1, 0 };
	struct tu_img t;
	struct tu_findings f;
	char why[sizeof(((struct mfs_repair_ctx *)0)->reason)];
	uint64_t ino = make_frag(&t, 4u << 20);

	reap_cut(t.fs, at[_i], why, sizeof(why));
	ck_assert_msg(strstr(why, "the next read-write mount or mendfs_repair finishes the "
			     "job"), "%s", why);
	ck_assert_msg(!strstr(why, " 0 of the new trees' blocks were accounted for"), "%s", why);
	ck_assert_msg(!!strstr(why, " 0 of the old trees' blocks were freed") == !_i, "%s",
		      why);
	CK_OK(tu_scrub_one(t.fs, MFS_SCRUB_BNOBT, 1, 0, 0, &f));
	ck_assert_msg(f.n == 1 && strstr(f.first, "still to be freed"), "bnobt: %u findings: "
		      "%s", f.n, f.first);
	CK_OK(tu_scrub_one(t.fs, MFS_SCRUB_RMAPBT, 1, 0, 0, &f));
	ck_assert_msg(f.n == 0, "rmapbt: %s", f.first);
	crash_recovered(&t, "mendfs_repair_frag_reap", ino);
	reap_recovered(t.fs, ino);
	tu_img_destroy(&t);
}
END_TEST

/*
 * A marked AG whose free-space trees are rebuilt the logged way (forced here:
 * rep_abt_force_logged), which frees every old block in its one transaction: the mark
 * goes with them.  Before, it stayed: the check afterwards found it, so the rebuild
 * failed, and every mount tried again.
 */
START_TEST(test_reap_pending_logged)
{
	struct tu_img t;
	char why[sizeof(((struct mfs_repair_ctx *)0)->reason)];
	uint64_t ino = make_frag(&t, 4u << 20);

	reap_cut(t.fs, 3, why, sizeof(why));
	rep_abt_force_logged = 1;
	reap_recovered(t.fs, ino);
	rep_abt_force_logged = 0;
	tu_img_destroy(&t);
}
END_TEST

/*
 * Old tree blocks a free-space rebuild puts on the free list (the extras, the pool fed to
 * it) may have images in the journal not yet written home (leaves the previous rebuild's
 * reap changed, here).  A list block goes back to free space without a revoke
 * (lib/alloc.c agfl_trim) and may then hold file data, written in place: a checkpoint, or
 * the replay after a crash, would write the old leaf over it.  So the rebuild revokes
 * them (as a tree's block freed onto the list is): a checkpoint right after it writes no
 * block the list holds.  Before, it wrote three.
 */
struct fl_watch {
	uint64_t fsb[MFS_AGFL_SIZE_MAX];
	uint32_t n;
	unsigned hits;
};

static void fl_ckpt_hook(void *arg, uint64_t blkno, int writing)
{
	struct fl_watch *w = arg;

	for (uint32_t i = 0; writing == 1 && i < w->n; i++)
		if (w->fsb[i] == blkno)
			__atomic_add_fetch(&w->hits, 1, __ATOMIC_RELAXED);
}

START_TEST(test_agfl_no_logged_image)
{
	struct tu_img t;
	struct fl_watch w;
	struct mfs_buf *hb, *fb;
	uint64_t ino = make_frag(&t, 4u << 20);

	rebuild(t.fs, MFS_SCRUB_BNOBT, 1, 0);
	rebuild(t.fs, MFS_SCRUB_BNOBT, 1, 0);
	memset(&w, 0, sizeof(w));
	CK_OK(mfs_read_agh(t.fs, 1, &hb));
	CK_OK(mfs_read_agfl(t.fs, 1, &fb));
	{
		const struct mfs_agh *agh = hb->data;
		const struct mfs_agfl *fl = fb->data;
		uint32_t first = mfs_get32(agh->fl_first);

		w.n = mfs_get32(agh->fl_count);
		ck_assert_uint_gt(w.n, 0);
		for (uint32_t i = 0; i < w.n; i++)
			w.fsb[i] = mfs_agbno_to_fsb(&t.fs->geo, 1, mfs_get32(
				fl->bno[(first + i) % MFS_AGFL_SIZE_MAX]));
	}
	mfs_buf_put(fb);
	mfs_buf_put(hb);
	mfs_journal_set_ckpt_hook(t.fs->log, fl_ckpt_hook, &w);
	CK_OK(mfs_journal_checkpoint(t.fs->log));
	mfs_journal_set_ckpt_hook(t.fs->log, NULL, NULL);
	ck_assert_msg(w.hits == 0, "the checkpoint wrote %u of the free list's %u blocks",
		      w.hits, w.n);
	clean(t.fs, ino);
	tu_img_destroy(&t);
}
END_TEST

/*
 * The by-block tree damaged but still a valid tree (its last leaf one record short: the
 * AG's long free extent at its end, once the file's last three quarters are punched; the
 * by-length tree still has it): the reverse map's rebuild trusts the by-block
 * tree, so that free block is "neither free nor owned" to it, given to ag and reaped.  Its
 * commit must leave an AG header that verifies (its longest free extent, from the by-length
 * tree, was above its free block count, from the by-block tree: the reap's first read of the
 * header failed and the AG was left unusable — CI, t_scrub_repair, when memory pressure
 * stopped the free-space rebuild that runs first otherwise).  Whatever the reap then
 * meets, the free-space rebuild after it leaves the AG clean.
 */
START_TEST(test_rmap_rebuild_over_short_bnobt)
{
	struct tu_img t;
	struct mfs_repair_ctx rc;
	struct mfs_buf *agh_bp, *bp;
	uint64_t ino = make_frag(&t, 4u << 20), fsb;
	const struct mfs_agh *agh;

	/* the file's last three quarters punched: one long free extent ends the AG */
	{
		struct mfs_inode *ip;
		uint64_t off, end, done;

		CK_OK(mfs_iget(t.fs, ino, 0, &ip));
		pthread_rwlock_wrlock(&ip->lock);
		end = ip->size / t.fs->geo.blocksize;
		for (off = end / 4; off < end; off += done) {
			struct mfs_trans *tp;

			CK_OK(mfs_trans_alloc(t.fs, &tp));
			CK_OK(mfs_bmap_punch(tp, ip, off, end - off, &done));
			CK_OK(mfs_inode_log(tp, ip));
			CK_OK(mfs_trans_commit(tp));
		}
		pthread_rwlock_unlock(&ip->lock);
		mfs_iput(ip);
	}
	CK_OK(mfs_read_agh(t.fs, 1, &agh_bp));
	agh = agh_bp->data;
	fsb = mfs_agbno_to_fsb(&t.fs->geo, 1, mfs_get32(agh->roots[MFS_BT_BNO]));
	for (uint32_t lv = mfs_get32(agh->levels[MFS_BT_BNO]); lv > 1; lv--) {
		const struct mfs_btree_block *nb;
		uint32_t n, cap;

		CK_OK(mfs_buf_read(t.fs->bc, fsb, NULL, &bp));
		nb = bp->data;
		n = mfs_get16(nb->numrecs);
		cap = mfs_btree_maxrecs(&mfs_bnobt_ops, t.fs->geo.blocksize, 0);
		/* node: keys[cap] (struct mfs_alloc_rec) then 4-byte ptrs: the last child */
		fsb = mfs_agbno_to_fsb(&t.fs->geo, 1, mfs_get32(((const mfs_le32 *)(const void *)
			((const char *)bp->data + sizeof(*nb) +
			 (size_t)cap * sizeof(struct mfs_alloc_rec)))[n - 1]));
		mfs_buf_put(bp);
	}
	mfs_buf_put(agh_bp);
	CK_OK(mfs_buf_read(t.fs->bc, fsb, NULL, &bp));
	{
		struct mfs_btree_block *lb = bp->data;
		struct mfs_trans *tp;

		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_OK(mfs_trans_modify(tp, bp));
		ck_assert_uint_gt(mfs_get16(lb->numrecs), 1);
		mfs_put16(lb->numrecs, (uint16_t)(mfs_get16(lb->numrecs) - 1));
		CK_OK(mfs_trans_commit(tp));
	}
	mfs_buf_put(bp);

	/* the reap may meet the damage (the mark then stays): any outcome but a header
	 * that does not verify */
	(void)tu_repair_flags(t.fs, MFS_SCRUB_RMAPBT, 1, 0, MFS_REPAIR_OFFLINE, NULL, NULL, &rc);
	CK_OK(mfs_read_agh(t.fs, 1, &agh_bp));       /* the header verifies */
	mfs_buf_put(agh_bp);
	rebuild(t.fs, MFS_SCRUB_BNOBT, 1, 0);
	CK_EQ(reap_marked(t.fs), 0);
	clean(t.fs, ino);
	tu_img_destroy(&t);
}
END_TEST

/*
 * After its commit, the free-space rebuild of a fragmented AG records its new trees' blocks
 * in the reverse map, and the reverse map's rebuild takes its new tree's blocks out of free
 * space (hundreds of one-block pieces each).  One of those changes failing (made to:
 * rep_late_fail_after, as an I/O error would) leaves an AG whose trees and reverse map
 * disagree: the journal is stopped (no later commit: nothing can be allocated there), the
 * reason says so, and the image as the crash leaves it is marked; the recovery a mount
 * runs then leaves every checker clean.
 */
extern uint64_t rep_late_fail_after;                    /* repair/repair_ag.h (private) */

START_TEST(test_late_failure_stops_journal)
{
	static const uint32_t type[2] = { MFS_SCRUB_BNOBT, MFS_SCRUB_RMAPBT };
	struct tu_img t;
	struct mfs_repair_ctx rc;
	uint64_t ino = make_frag(&t, 4u << 20);
	int err;

	rep_late_fail_after = 50;
	err = tu_repair_one(t.fs, type[_i], 1, 0, NULL, NULL, &rc);
	rep_late_fail_after = UINT64_MAX;
	ck_assert_msg(err == -EIO && strstr(rc.reason, "the journal is stopped") &&
		      !strstr(rc.reason, " 0 of the new trees' blocks were accounted for"),
		      "%d: %s", err, rc.reason);
	crash_recovered(&t, "mendfs_repair_frag_late", ino);
	{
		/* nothing is allocated (before, the reverse map refused, "corruption"), and no
		 * later change commits */
		struct mfs_alloc_args a;
		struct mfs_trans *tp;
		struct mfs_buf *bp;

		memset(&a, 0, sizeof(a));
		a.type = MFS_ALLOC_NEAR;
		a.target = mfs_agbno_to_fsb(&t.fs->geo, 1, 100);
		a.minlen = a.maxlen = 1;
		a.owner = ino;
		a.offset = 1u << 20;
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_EQ(mfs_alloc_extent(tp, &a), -EIO);
		mfs_trans_cancel(tp);
		/* nor rebuilt */
		CK_EQ(tu_repair_one(t.fs, MFS_SCRUB_BNOBT, 1, 0, NULL, NULL, &rc), -EIO);
		ck_assert_msg(strstr(rc.reason, "the journal is stopped"), "%s", rc.reason);
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_OK(mfs_read_sb(t.fs, 0, &bp));
		CK_OK(mfs_trans_modify(tp, bp));
		mfs_buf_put(bp);
		CK_EQ(mfs_trans_commit(tp), -EIO);
	}
	CK_OK(mfs_icache_destroy(t.fs));
	mfs_journal_discard(t.fs->log);
	mfs_bcache_discard(t.fs->bc);
	t.fs->bc = NULL;
	CK_OK(mfs_fs_close(t.fs));
	t.fs = NULL;
	tu_img_destroy(&t);
}
END_TEST

/*
 * The reverse map's rebuild gathers the AG's own records (hundreds of tree blocks here)
 * apart from the owners' and sorts them in scratch, as many as the AG header's counts
 * plan; more (made to: rep_rmap_special_max) go on with the owners' records, which are
 * then sorted whole.  Either way the same AG comes out, every checker clean.
 */
extern uint64_t rep_rmap_special_max;                   /* repair/repair_ag.h (private) */

START_TEST(test_rmap_special_overflow)
{
	struct tu_img t;
	uint64_t ino = make_frag(&t, 4u << 20);

	rebuild(t.fs, MFS_SCRUB_RMAPBT, 1, 0);
	clean(t.fs, ino);
	rep_rmap_special_max = 5;
	rebuild(t.fs, MFS_SCRUB_RMAPBT, 1, 0);
	rep_rmap_special_max = UINT64_MAX;
	clean(t.fs, ino);
	replayed_clean(&t, ino);
}
END_TEST

/* The work after a commit rolls its transaction when it holds a batch of buffers, not only
 * when it would log one: blocks a change frees (emptied leaves) are revokes, cheap in the
 * log, but each stays held with its saved copy until the transaction ends (a reverse map's
 * late takes from one-block free extents emptied a free-space leaf every ~250 takes and
 * logged almost nothing else: one batch held them all, ~8 MiB at 48M extents). */
int rep_reap_batch_full(const struct mfs_trans *tp, uint64_t *nimg,
			uint64_t *nrev);                          /* repair/repair_ag.h (private) */

START_TEST(test_batch_counts_held_buffers)
{
	struct mfs_format_opts o = { .blocksize = 1024, .agcount = 2, .logbytes = LOG_BYTES };
	struct tu_img t;
	struct mfs_trans *tp;
	struct mfs_buf *bp;
	uint64_t nimg, nrev, base;
	unsigned n = (unsigned)rep_reap_batch + 10;

	tu_img_make(&t, "mendfs_repair_batch", 2 * AG_BYTES, &o, 0);
	/* blocks at the end of AG 1, free on a fresh image */
	base = mfs_agbno_to_fsb(&t.fs->geo, 1, mfs_ag_length(&t.fs->geo, 1) - n - 1);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	for (unsigned i = 0; i < n; i++) {
		CK_OK(mfs_trans_get_new(tp, base + i, 1, &bp));
		CK_OK(mfs_trans_forget(tp, base + i));
		if (i + 1 < rep_reap_batch)
			CK_TRUE(!rep_reap_batch_full(tp, &nimg, &nrev));
	}
	CK_TRUE(rep_reap_batch_full(tp, &nimg, &nrev));
	CK_EQ(nimg, 0);
	CK_EQ(nrev, n);
	mfs_trans_cancel(tp);
	tu_img_destroy(&t);
}
END_TEST

static Suite *frag_suite(void)
{
	Suite *s = suite_create("repair_frag");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, UNDER_ASAN ? 300 : 120);   /* a hang bound */
	tcase_add_test(tc, test_fragmented_rebuilds);
	tcase_add_test(tc, test_free_list_dry_feeds_from_allocator);
	tcase_add_loop_test(tc, test_reap_interrupted, 0, 2);
	tcase_add_test(tc, test_rmap_rebuild_over_short_bnobt);
	tcase_add_test(tc, test_reap_pending_logged);
	tcase_add_test(tc, test_agfl_no_logged_image);
	tcase_add_loop_test(tc, test_late_failure_stops_journal, 0, 2);
	tcase_add_test(tc, test_rmap_special_overflow);
	tcase_add_test(tc, test_batch_counts_held_buffers);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	mfs_log_quiet();
	return tu_run_suite(frag_suite());
}
