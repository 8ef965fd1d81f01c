/*
 * check_alloc_wait.c — the allocator's bounded wait for a busy AG (lib/alloc.c): while
 * another transaction holds an AG's lock for long (as an online rebuild of its trees does),
 *   - a NEAR allocation aimed at that AG is made in another AG that has room, without
 *     waiting for the lock to be released;
 *   - when no other AG has room and the lock order forbids waiting for the busy AG (it has
 *     tried, and locked, AGs above it), the allocation fails with -EDEADLK (retry), never
 *     -ENOSPC, and succeeds there once the lock is released;
 *   - when the order allows it (the busy AG is above every AG tried), it waits for the lock
 *     and succeeds there;
 *   - a transaction holding an AG's inode lock never stays queued for its space lock
 *     behind a long holder (a rebuild: mfs_trans_hold_long), whether that one queued
 *     first or became a long holder while it waited.
 * The holder is the test's main thread; the allocation runs in a second thread.  Nothing
 * asserts on time: a wait that should not happen is seen as a thread that never finishes
 * (bounded by 30 s, then a failure).
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "ag.h"
#include "alloc.h"
#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "trans.h"

#include "tu.h"

#define AGBLOCKS 4096u
#define WANT     2000u          /* more than the filled AGs keep, less than a fresh AG */

static uint64_t owner_ino(struct mfs_fs *fs, unsigned k);

struct job {
	struct mfs_fs *fs;
	uint64_t target;
	int err;
	uint64_t fsb;
	uint32_t len;
	atomic_int done;
};

/* NEAR allocation of exactly WANT blocks at job->target, committed (or cancelled). */
static void *alloc_job(void *arg)
{
	struct job *j = arg;
	struct mfs_alloc_args a;
	struct mfs_trans *tp;

	memset(&a, 0, sizeof(a));
	a.type = MFS_ALLOC_NEAR;
	a.target = j->target;
	a.minlen = a.maxlen = WANT;
	a.owner = owner_ino(j->fs, 1);
	j->err = mfs_trans_alloc(j->fs, &tp);
	if (!j->err) {
		j->err = mfs_alloc_extent(tp, &a);
		if (j->err)
			mfs_trans_cancel(tp);
		else
			j->err = mfs_trans_commit(tp);
	}
	j->fsb = a.fsb;
	j->len = a.len;
	atomic_store(&j->done, 1);
	return NULL;
}

static void job_start(struct job *j, pthread_t *th, struct mfs_fs *fs, uint32_t agno)
{
	memset(j, 0, sizeof(*j));
	j->fs = fs;
	j->target = mfs_agbno_to_fsb(&fs->geo, agno, 100);
	atomic_init(&j->done, 0);
	CK_EQ(pthread_create(th, NULL, alloc_job, j), 0);
}

/* Poll (bounded) until the job is done; whether it is. */
static int job_wait(struct job *j, double secs)
{
	double end = tu_now() + secs;

	while (!atomic_load(&j->done) && tu_now() < end)
		usleep(2000);
	return atomic_load(&j->done);
}

/* An inode number to own test extents (the reverse map wants a plausible one). */
static uint64_t owner_ino(struct mfs_fs *fs, unsigned k)
{
	return mfs_agino_to_ino(&fs->geo, 0, 64 * k);
}

static uint32_t ag_of(struct mfs_fs *fs, uint64_t fsb)
{
	return mfs_fsb_to_agno(&fs->geo, fsb);
}

/* Leave AG agno fewer than WANT free blocks: one extent takes the rest. */
static void fill_ag(struct tu_agfs *t, uint32_t agno)
{
	struct mfs_alloc_args a;
	struct mfs_trans *tp;
	struct mfs_buf *bp;
	uint32_t freeblks;

	CK_OK(mfs_read_agh(t->fs, agno, &bp));
	freeblks = mfs_get32(((struct mfs_agh *)bp->data)->freeblks);
	mfs_buf_put(bp);
	CK_TRUE(freeblks > WANT);
	memset(&a, 0, sizeof(a));
	a.type = MFS_ALLOC_NEAR;
	a.target = mfs_agbno_to_fsb(&t->fs->geo, agno, 0);
	a.minlen = a.maxlen = freeblks - WANT / 2;
	a.owner = owner_ino(t->fs, 2 + agno);
	CK_OK(mfs_trans_alloc(t->fs, &tp));
	CK_OK(mfs_alloc_extent(tp, &a));
	CK_EQ(ag_of(t->fs, a.fsb), agno);
	CK_OK(mfs_trans_commit(tp));
	tu_model_set(t, a.fsb, a.len, a.owner, 0);
}

/* Hold AG agno's lock in a transaction of this thread. */
static struct mfs_trans *hold_ag(struct mfs_fs *fs, uint32_t agno)
{
	struct mfs_trans *tp;

	CK_OK(mfs_trans_alloc(fs, &tp));
	CK_OK(mfs_trans_lock_ag(tp, agno, 0));
	return tp;
}

/* Four fresh AGs; with `full`, every AG but `busy` left without room for WANT blocks; AG
 * `busy` held by this thread (the transaction returned). */
static struct mfs_trans *setup(struct tu_agfs *t, uint32_t busy, int full)
{
	tu_agfs_open(t, 4096, AGBLOCKS, 4, 4ull * AGBLOCKS);
	tu_agfs_format_all(t);
	for (uint32_t a = 0; full && a < 4; a++)
		if (a != busy)
			fill_ag(t, a);
	return hold_ag(t->fs, busy);
}

/* The job finished, made its extent of WANT blocks in AG agno: into the model, all checked. */
static void job_done(struct tu_agfs *t, struct job *j, pthread_t th, uint32_t agno)
{
	ck_assert_msg(job_wait(j, 30), "the allocation did not finish");
	CK_EQ(pthread_join(th, NULL), 0);
	CK_OK(j->err);
	CK_EQ(j->len, WANT);
	CK_EQ(ag_of(t->fs, j->fsb), agno);
	tu_model_set(t, j->fsb, j->len, owner_ino(t->fs, 1), 0);
	tu_check_all(t);
	tu_agfs_close(t);
}

START_TEST(test_moves_on)
{
	struct tu_agfs t;
	struct mfs_trans *hold;
	struct job j;
	pthread_t th;

	hold = setup(&t, 1, 0);
	job_start(&j, &th, t.fs, 1);
	ck_assert_msg(job_wait(&j, 30), "an allocation waited for a busy AG it did not need");
	mfs_trans_cancel(hold);
	job_done(&t, &j, th, 2);           /* the next AG after the target's */
}
END_TEST

START_TEST(test_no_room_elsewhere_retry)
{
	struct tu_agfs t;
	struct mfs_trans *hold;
	struct job j;
	pthread_t th;

	hold = setup(&t, 1, 1);
	job_start(&j, &th, t.fs, 1);
	ck_assert_msg(job_wait(&j, 30), "the allocation waited although it could not");
	CK_EQ(pthread_join(th, NULL), 0);
	CK_EQ(j.err, -EDEADLK);          /* AGs 2 and 3 tried and locked: retry, not ENOSPC */
	mfs_trans_cancel(hold);
	job_start(&j, &th, t.fs, 1);        /* the retry */
	job_done(&t, &j, th, 1);
}
END_TEST

START_TEST(test_no_room_elsewhere_wait)
{
	struct tu_agfs t;
	struct mfs_trans *hold;
	struct job j;
	pthread_t th;

	hold = setup(&t, 3, 1);
	job_start(&j, &th, t.fs, 3);
	/* It tries AGs 0..2 (below 3) after the bound, then may wait for AG 3: give it the
	 * time to get there (if it finished, it must not have failed). */
	if (job_wait(&j, 0.3))
		CK_OK(j.err);
	mfs_trans_cancel(hold);
	job_done(&t, &j, th, 3);
}
END_TEST

/* ---- a long holder of an AG lock (an online rebuild: mfs_trans_hold_long) ------------------ */
struct longhold {
	struct mfs_fs *fs;
	int err;
	atomic_int asking;
	atomic_int locked, release;
};

/* Takes AG 1's space lock as a rebuild does (marked as a long holder before it waits),
 * holds it until told to let it go. */
static void *long_holder(void *arg)
{
	struct longhold *h = arg;
	struct mfs_trans *tp;

	h->err = mfs_trans_alloc(h->fs, &tp);
	if (h->err)
		return NULL;
	mfs_trans_hold_long(tp);
	atomic_store(&h->asking, 1);
	h->err = mfs_trans_lock_agl(tp, 1, MFS_AGL_SPACE, 0);
	atomic_store(&h->locked, 1);
	while (!atomic_load(&h->release))
		usleep(1000);
	mfs_trans_cancel(tp);
	return NULL;
}

struct taker {
	struct mfs_fs *fs;
	int err;                    /* of its space-lock request */
	atomic_int asking, done;
};

/* Holds AG 1's inode lock (as an inode change does), then asks for its space lock (as a
 * free there does) through the ordered lock; cancels either way. */
static void *taker(void *arg)
{
	struct taker *k = arg;
	struct mfs_trans *tp;

	k->err = mfs_trans_alloc(k->fs, &tp);
	if (!k->err)
		k->err = mfs_trans_lock_agl_ordered(tp, 1, MFS_AGL_INODES);
	if (!k->err) {
		atomic_store(&k->asking, 1);
		k->err = mfs_trans_lock_agl_ordered(tp, 1, MFS_AGL_SPACE);
		mfs_trans_cancel(tp);
	}
	atomic_store(&k->asking, 1);
	atomic_store(&k->done, 1);
	return NULL;
}

/*
 * A transaction holding an AG's inode lock that asks for its space lock never stays queued
 * behind a long holder of it (a rebuild), but gets -EDEADLK (and waits for it holding
 * nothing: mfs_trans_wait_busy):
 *   - queued_first: a short holder has the space lock; the long holder, marked before it
 *     waits, queues for it; then the asker comes: it does not queue at all, or gets the
 *     lock before the long holder does;
 *   - marked_while_waited: the asker waits for a space lock whose holder becomes a long
 *     holder meanwhile (as a rebuild that queued unmarked would): its wait, which looks
 *     again every 10 ms, gives up.
 * Nothing asserts on time: a taker stuck behind the long holder is seen not to finish
 * within 10 s.  (queued_first orders its threads with a pause; either order must pass.)
 */
START_TEST(test_long_holder_queued_first)
{
	struct tu_agfs t;
	struct mfs_trans *shorth;
	struct longhold h;
	struct taker k;
	pthread_t hth, kth;
	double end;

	memset(&h, 0, sizeof(h));
	memset(&k, 0, sizeof(k));
	shorth = setup(&t, 1, 0);
	mfs_trans_cancel(shorth);          /* the short holder: the space lock only */
	CK_OK(mfs_trans_alloc(t.fs, &shorth));
	CK_OK(mfs_trans_lock_agl(shorth, 1, MFS_AGL_SPACE, 0));
	h.fs = k.fs = t.fs;
	CK_EQ(pthread_create(&hth, NULL, long_holder, &h), 0);
	end = tu_now() + 10;
	while (!atomic_load(&h.asking) && tu_now() < end)
		usleep(1000);
	usleep(20000);                       /* let it reach its wait */
	CK_EQ(pthread_create(&kth, NULL, taker, &k), 0);
	while (!atomic_load(&k.asking) && tu_now() < end)
		usleep(1000);
	mfs_trans_cancel(shorth);            /* both may go now: one of them wins */
	end = tu_now() + 10;
	while (!atomic_load(&k.done) && tu_now() < end)
		usleep(2000);
	ck_assert_msg(atomic_load(&k.done) || !atomic_load(&h.locked),
		      "a transaction holding AG 1's inode lock waited behind a long holder of "
		      "its space lock");
	atomic_store(&h.release, 1);
	CK_EQ(pthread_join(hth, NULL), 0);
	CK_EQ(pthread_join(kth, NULL), 0);
	CK_OK(h.err);
	ck_assert_msg(k.err == 0 || k.err == -EDEADLK, "taker: %d", k.err);
	CK_EQ(t.fs->ag[1].long_held[1], 0);   /* let go with its lock */
	tu_agfs_close(&t);
}
END_TEST

START_TEST(test_long_holder_marked_while_waited)
{
	struct tu_agfs t;
	struct mfs_trans *holder;
	struct taker k;
	pthread_t kth;
	double end;

	memset(&k, 0, sizeof(k));
	holder = setup(&t, 1, 0);
	mfs_trans_cancel(holder);
	CK_OK(mfs_trans_alloc(t.fs, &holder));
	CK_OK(mfs_trans_lock_agl(holder, 1, MFS_AGL_SPACE, 0));
	k.fs = t.fs;
	CK_EQ(pthread_create(&kth, NULL, taker, &k), 0);
	end = tu_now() + 10;
	while (!atomic_load(&k.asking) && tu_now() < end)
		usleep(1000);
	usleep(20000);                       /* let it reach its wait */
	ck_assert_msg(!atomic_load(&k.done), "the taker got a held lock: %d", k.err);
	mfs_trans_hold_long(holder);         /* now a long holder */
	end = tu_now() + 10;
	while (!atomic_load(&k.done) && tu_now() < end)
		usleep(2000);
	ck_assert_msg(atomic_load(&k.done), "a transaction holding AG 1's inode lock stayed "
		      "queued for its space lock after the holder became a long holder");
	CK_EQ(pthread_join(kth, NULL), 0);
	CK_EQ(k.err, -EDEADLK);
	CK_EQ(t.fs->ag[1].long_held[1], 1);
	mfs_trans_cancel(holder);
	CK_EQ(t.fs->ag[1].long_held[1], 0);
	tu_agfs_close(&t);
}
END_TEST

static Suite *alloc_wait_suite(void)
{
	Suite *s = suite_create("alloc_wait");
	TCase *tc = tcase_create("busy AG");

	tcase_set_timeout(tc, 90);
	tcase_add_test(tc, test_moves_on);
	tcase_add_test(tc, test_no_room_elsewhere_retry);
	tcase_add_test(tc, test_no_room_elsewhere_wait);
	tcase_add_test(tc, test_long_holder_queued_first);
	tcase_add_test(tc, test_long_holder_marked_while_waited);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(alloc_wait_suite());
}
