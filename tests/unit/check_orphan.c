/*
 * check_orphan.c — the per-AG orphan lists (lib/orphan.h): inodes added in order and taken
 * off in random order (with the hint table and without it), the list and mendfs_db's check
 * agreeing after every step; a removal without its predecessor (or with another inode)
 * names it with -EAGAIN and a cancel restores every byte; a cancelled removal leaves a stale hint that is caught; an unlinked inode not on
 * the list is -ENOENT; damaged lists (a loop, a head outside the AG, a member with links)
 * are -EFSCORRUPTED; sets taken off together (runs of neighbours and scattered ones) leave
 * exactly the others, and a loop among a set's members is -EFSCORRUPTED.
 */
#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "ialloc.h"
#include "inode.h"
#include "log.h"
#include "mendfs_format.h"
#include "orphan.h"
#include "trans.h"
#include "format.h"
#include "tu.h"

#include <pthread.h>
#include <string.h>
#include <sys/stat.h>

#define NINO 24

static struct tu_img t;

static void img_make(void)
{
	struct mfs_format_opts o = { .agcount = 2 };

	tu_img_make(&t, "mendfs_orphan", 32 << 20, &o, 0);
	tu_sb_mark_dirty(t.fs);     /* as mounted: the summary counters are not kept */
}

/* A new regular file with one link, in the root's AG. */
static uint64_t new_file(void)
{
	struct mfs_trans *tp;
	struct mfs_inode *ip;
	uint64_t ino;

	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_ialloc(tp, t.fs->geo.rootino, S_IFREG | 0644, &ino));
	CK_OK(mfs_trans_commit(tp));
	CK_OK(mfs_iget(t.fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	ip->nlink = 1;
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_inode_log(tp, ip));
	CK_OK(mfs_trans_commit(tp));
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	return ino;
}

/* Drop the last link of `ino` and put it on the list, in one transaction. */
static void unlink_ino(struct mfs_orphans *o, uint64_t ino)
{
	struct mfs_trans *tp;
	struct mfs_inode *ip;

	CK_OK(mfs_iget(t.fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	ip->nlink = 0;
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_orphan_add(tp, o, ip));
	CK_OK(mfs_inode_log(tp, ip));
	CK_OK(mfs_trans_commit(tp));
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
}

/* Take `ino` off its list and free it, in one transaction: the first try tells which
 * predecessor to lock (if any), the second succeeds. */
static void free_ino(struct mfs_orphans *o, uint64_t ino)
{
	struct mfs_inode *ip, *pred = NULL;
	struct mfs_trans *tp;
	uint64_t need;
	int err;

	CK_OK(mfs_iget(t.fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	err = mfs_orphan_remove(tp, o, ip, NULL, &need);
	if (err == -EAGAIN) {
		mfs_trans_cancel(tp);
		T_TRUE(need != 0);
		CK_OK(mfs_iget(t.fs, need, 0, &pred));
		pthread_rwlock_wrlock(&pred->lock);
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		err = mfs_orphan_remove(tp, o, ip, pred, &need);
	}
	CK_OK(err);
	CK_OK(mfs_ifree(tp, ino));
	CK_OK(mfs_trans_commit(tp));
	if (pred) {
		pthread_rwlock_unlock(&pred->lock);
		mfs_iput(pred);
	}
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	mfs_inode_invalidate(t.fs, ino);
}

static uint64_t list_count(uint32_t agno)
{
	uint64_t n;

	CK_OK(mfs_orphan_check(t.fs, agno, &n));
	return n;
}

/* The on-disk next pointer of `ino`. */
static uint64_t disk_next(uint64_t ino)
{
	const struct mfs_geom *g = &t.fs->geo;
	struct mfs_buf *bp;
	uint64_t next;

	CK_OK(mfs_buf_read(t.fs->bc, mfs_ino_to_fsb(g, ino), NULL, &bp));
	next = mfs_get64(((const struct mfs_dinode *)((const char *)bp->data +
				mfs_ino_to_offset(g, ino)))->next_unlinked);
	mfs_buf_put(bp);
	return next;
}

/* Patch the on-disk next pointer of `ino` (and reseal), behind every cache's back. */
static void poke_next(uint64_t ino, uint64_t next)
{
	const struct mfs_geom *g = &t.fs->geo;
	struct mfs_buf *bp;
	struct mfs_dinode *d;

	CK_OK(mfs_buf_read(t.fs->bc, mfs_ino_to_fsb(g, ino), NULL, &bp));
	d = (void *)((char *)bp->data + mfs_ino_to_offset(g, ino));
	mfs_put64(d->next_unlinked, next);
	mfs_dinode_seal(d, g->inodesize);
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
	mfs_inode_invalidate(t.fs, ino);
}

/* A new image with NINO files (inos), the random seed of `what`, and a hint table when
 * `hints` (else NULL). */
static struct mfs_orphans *files_make(int hints, const char *what, uint64_t *inos)
{
	struct mfs_orphans *o = NULL;

	img_make();
	if (hints)
		CK_OK(mfs_orphans_create(&o));
	tu_srand(tu_seed("SEED", what));
	for (unsigned i = 0; i < NINO; i++)
		inos[i] = new_file();
	return o;
}

/* Every file freed: the list is empty, the image checks clean; drop it all. */
static void files_done(struct mfs_orphans *o)
{
	uint64_t head;

	CK_OK(mfs_orphan_head(t.fs, 0, &head));
	CK_EQ(head, 0);
	mfs_orphans_free(o);
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}

/* Added in order, removed in a random order; `hints`: with the table or without. */
static void add_remove(int hints)
{
	uint64_t inos[NINO], head;
	struct mfs_orphans *o = files_make(hints, "orphan add/remove", inos);
	unsigned n = NINO;

	for (unsigned i = 0; i < NINO; i++) {
		unlink_ino(o, inos[i]);
		CK_OK(mfs_orphan_head(t.fs, 0, &head));
		CK_EQ(head, inos[i]);
		CK_EQ(disk_next(inos[i]), i ? inos[i - 1] : 0);
	}
	CK_EQ(list_count(0), NINO);
	tu_img_db_check(&t);
	while (n) {
		unsigned k = tu_rand_below(n);

		free_ino(o, inos[k]);
		inos[k] = inos[--n];
		CK_EQ(list_count(0), n);
		if (n % 8 == 0)
			tu_img_db_check(&t);
	}
	files_done(o);
}

START_TEST(test_hints)
{
	add_remove(1);
}
END_TEST

START_TEST(test_walk)
{
	add_remove(0);
}
END_TEST

/* Without its predecessor: -EAGAIN naming it, and the cancel restores the image exactly;
 * with the wrong one the same; with the right one it goes. */
START_TEST(test_need_pred)
{
	struct mfs_orphans *o;
	struct mfs_inode *a, *b, *c;
	struct mfs_trans *tp;
	uint64_t ia, ib, ic, need;
	uint32_t crc;

	img_make();
	CK_OK(mfs_orphans_create(&o));
	ia = new_file();
	ib = new_file();
	ic = new_file();
	unlink_ino(o, ia);
	unlink_ino(o, ib);
	unlink_ino(o, ic);                 /* list: ic -> ib -> ia */
	crc = tu_image_crc(t.fs, t.path);
	CK_OK(mfs_iget(t.fs, ia, 0, &a));
	CK_OK(mfs_iget(t.fs, ib, 0, &b));
	CK_OK(mfs_iget(t.fs, ic, 0, &c));
	pthread_rwlock_wrlock(&a->lock);
	pthread_rwlock_wrlock(&b->lock);
	pthread_rwlock_wrlock(&c->lock);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_EQ(mfs_orphan_remove(tp, o, a, NULL, &need), -EAGAIN);
	CK_EQ(need, ib);
	CK_EQ(mfs_orphan_remove(tp, o, a, c, &need), -EAGAIN);
	CK_EQ(need, ib);
	mfs_trans_cancel(tp);
	CK_EQ(a->next_unlinked, 0);
	CK_EQ(tu_image_crc(t.fs, t.path), crc);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_orphan_remove(tp, o, a, b, &need));
	CK_EQ(b->next_unlinked, 0);
	CK_OK(mfs_ifree(tp, ia));
	CK_OK(mfs_trans_commit(tp));
	pthread_rwlock_unlock(&c->lock);
	pthread_rwlock_unlock(&b->lock);
	pthread_rwlock_unlock(&a->lock);
	mfs_iput(a);
	mfs_iput(b);
	mfs_iput(c);
	mfs_inode_invalidate(t.fs, ia);
	CK_EQ(list_count(0), 2);
	CK_EQ(disk_next(ib), 0);
	free_ino(o, ib);
	free_ino(o, ic);
	CK_EQ(list_count(0), 0);
	mfs_orphans_free(o);
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}
END_TEST

/* A cancelled removal leaves a hint that is wrong; the next removal still finds the truth. */
START_TEST(test_stale_hint)
{
	struct mfs_orphans *o;
	struct mfs_inode *ip, *pred;
	struct mfs_trans *tp;
	uint64_t i1, i2, i3, need;

	img_make();
	CK_OK(mfs_orphans_create(&o));
	i1 = new_file();
	i2 = new_file();
	i3 = new_file();
	unlink_ino(o, i1);
	unlink_ino(o, i2);
	unlink_ino(o, i3);                 /* list: i3 -> i2 -> i1 */
	CK_OK(mfs_iget(t.fs, i2, 0, &ip));
	CK_OK(mfs_iget(t.fs, i3, 0, &pred));
	pthread_rwlock_wrlock(&ip->lock);
	pthread_rwlock_wrlock(&pred->lock);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_orphan_remove(tp, o, ip, pred, &need));   /* hint: i1 follows i3 */
	mfs_trans_cancel(tp);
	CK_OK(mfs_inode_reload(pred));
	CK_OK(mfs_inode_reload(ip));
	CK_EQ(ip->next_unlinked, i1);
	CK_EQ(pred->next_unlinked, i2);
	pthread_rwlock_unlock(&pred->lock);
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(pred);
	mfs_iput(ip);
	CK_EQ(list_count(0), 3);
	CK_EQ(disk_next(i3), i2);
	free_ino(o, i1);                   /* the stale hint says i3; the truth is i2 */
	CK_EQ(disk_next(i2), 0);
	free_ino(o, i3);
	free_ino(o, i2);
	CK_EQ(list_count(0), 0);
	mfs_orphans_free(o);
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}
END_TEST

/* Not on the list: -ENOENT, nothing changed. */
START_TEST(test_not_listed)
{
	struct mfs_inode *ip;
	struct mfs_trans *tp;
	uint64_t i1, i2, need;
	int q;

	img_make();
	i1 = new_file();
	i2 = new_file();
	unlink_ino(NULL, i1);
	CK_OK(mfs_iget(t.fs, i2, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	q = mfs_log_quiet();
	CK_EQ(mfs_orphan_remove(tp, NULL, ip, NULL, &need), -ENOENT);
	mfs_log_set_level(q);
	mfs_trans_cancel(tp);
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	CK_EQ(list_count(0), 1);
	free_ino(NULL, i1);
	tu_img_destroy(&t);
}
END_TEST

/* Damaged lists are corruption, never a hang. */
START_TEST(test_damaged)
{
	struct mfs_buf *bp;
	uint64_t i1, i2, n, head;
	int q;

	img_make();
	i1 = new_file();
	i2 = new_file();
	unlink_ino(NULL, i1);
	unlink_ino(NULL, i2);              /* i2 -> i1 */
	q = mfs_log_quiet();
	poke_next(i1, i2);                 /* a loop */
	CK_EQ(mfs_orphan_check(t.fs, 0, &n), -EFSCORRUPTED);
	poke_next(i1, 0);
	CK_OK(mfs_orphan_check(t.fs, 0, &n));
	CK_EQ(n, 2);
	poke_next(i1, mfs_agino_to_ino(&t.fs->geo, 1, mfs_ino_to_agino(&t.fs->geo, i1)));
	CK_EQ(mfs_orphan_check(t.fs, 0, &n), -EFSCORRUPTED);   /* into another AG */
	poke_next(i1, 0);
	/* a head outside the AG */
	CK_OK(mfs_read_agh(t.fs, 0, &bp));
	head = mfs_get64(((struct mfs_agh *)bp->data)->unlinked);
	CK_EQ(head, i2);
	mfs_put64(((struct mfs_agh *)bp->data)->unlinked, ~0ull >> 8);
	mfs_buf_mark_dirty(bp);
	CK_EQ(mfs_orphan_head(t.fs, 0, &n), -EFSCORRUPTED);
	mfs_put64(((struct mfs_agh *)bp->data)->unlinked, head);
	mfs_buf_put(bp);
	/* a member that has links */
	{
		struct mfs_inode *ip;
		struct mfs_trans *tp;

		CK_OK(mfs_iget(t.fs, i1, 0, &ip));
		pthread_rwlock_wrlock(&ip->lock);
		ip->nlink = 1;
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_OK(mfs_inode_log(tp, ip));
		CK_OK(mfs_trans_commit(tp));
		CK_EQ(mfs_orphan_check(t.fs, 0, &n), -EFSCORRUPTED);
		ip->nlink = 0;
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		CK_OK(mfs_inode_log(tp, ip));
		CK_OK(mfs_trans_commit(tp));
		pthread_rwlock_unlock(&ip->lock);
		mfs_iput(ip);
	}
	mfs_log_set_level(q);
	CK_OK(mfs_orphan_check(t.fs, 0, &n));
	CK_EQ(n, 2);
	free_ino(NULL, i1);
	free_ino(NULL, i2);
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}
END_TEST

/*
 * Take the inodes inos[0..n) off the list together (mfs_orphan_remove_set) and free them,
 * in one transaction: the tries before tell which predecessors to hold; they are never
 * members, never asked for twice, and the last try goes.
 */
static void free_set(struct mfs_orphans *o, const uint64_t *inos, unsigned n)
{
	struct mfs_inode *set[NINO], *preds[NINO];
	unsigned npreds = 0, nneed;
	uint64_t need[3];
	struct mfs_trans *tp;
	int err;

	for (unsigned i = 0; i < n; i++) {
		CK_OK(mfs_iget(t.fs, inos[i], 0, &set[i]));
		pthread_rwlock_wrlock(&set[i]->lock);
	}
	for (;;) {
		CK_OK(mfs_trans_alloc(t.fs, &tp));
		err = mfs_orphan_remove_set(tp, o, set, n, preds, npreds, need, 3, &nneed);
		if (err != -EAGAIN)
			break;
		mfs_trans_cancel(tp);
		T_TRUE(nneed > 0 && nneed <= 3);
		for (unsigned k = 0; k < nneed; k++) {
			for (unsigned i = 0; i < n; i++)
				T_TRUE(need[k] != inos[i]);
			for (unsigned i = 0; i < npreds; i++)
				T_TRUE(need[k] != preds[i]->ino);
			T_TRUE(npreds < NINO);
			CK_OK(mfs_iget(t.fs, need[k], 0, &preds[npreds]));
			pthread_rwlock_wrlock(&preds[npreds++]->lock);
		}
	}
	CK_OK(err);
	for (unsigned i = 0; i < n; i++) {
		CK_EQ(set[i]->next_unlinked, 0);
		CK_OK(mfs_ifree(tp, inos[i]));
	}
	CK_OK(mfs_trans_commit(tp));
	for (unsigned i = 0; i < npreds; i++) {
		pthread_rwlock_unlock(&preds[i]->lock);
		mfs_iput(preds[i]);
	}
	for (unsigned i = 0; i < n; i++) {
		pthread_rwlock_unlock(&set[i]->lock);
		mfs_iput(set[i]);
		mfs_inode_invalidate(t.fs, inos[i]);
	}
}

/* Sets of 1-8 taken off at once, half the time a run of neighbours on the list, else
 * anywhere; the list holds exactly the others after each (count and mendfs_db). */
static void set_remove(int hints)
{
	uint64_t inos[NINO];
	struct mfs_orphans *o = files_make(hints, "orphan sets", inos);
	unsigned n = NINO;

	for (unsigned i = 0; i < NINO; i++)
		unlink_ino(o, inos[i]);     /* list order: inos[NINO - 1] first */
	while (n) {
		unsigned k = 1 + tu_rand_below(n < 8 ? n : 8), at = tu_rand_below(n - k + 1);
		uint64_t pick[8];

		for (unsigned j = 0; j < k; j++) {
			unsigned idx = tu_rand_below(2) ? at : tu_rand_below(n);

			pick[j] = inos[idx];
			memmove(&inos[idx], &inos[idx + 1], (n - idx - 1) * sizeof(*inos));
			n--;
		}
		free_set(o, pick, k);
		CK_EQ(list_count(0), n);
		for (unsigned i = 0; i + 1 < n; i++)
			CK_EQ(disk_next(inos[i + 1]), inos[i]);
		if (n % 8 == 0)
			tu_img_db_check(&t);
	}
	files_done(o);
}

START_TEST(test_set_hints)
{
	set_remove(1);
}
END_TEST

START_TEST(test_set_walk)
{
	set_remove(0);
}
END_TEST

/* Members that link to each other in a loop are corruption, with nothing changed. */
START_TEST(test_set_loop)
{
	struct mfs_inode *set[2];
	struct mfs_trans *tp;
	uint64_t i1, i2, i3, need;
	unsigned nneed;
	int q;

	img_make();
	i1 = new_file();
	i2 = new_file();
	i3 = new_file();
	unlink_ino(NULL, i1);
	unlink_ino(NULL, i2);
	unlink_ino(NULL, i3);              /* i3 -> i2 -> i1 */
	q = mfs_log_quiet();
	poke_next(i1, i2);                 /* i3 -> i2 -> i1 -> i2 ... */
	CK_OK(mfs_iget(t.fs, i1, 0, &set[0]));
	CK_OK(mfs_iget(t.fs, i2, 0, &set[1]));
	pthread_rwlock_wrlock(&set[0]->lock);
	pthread_rwlock_wrlock(&set[1]->lock);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_EQ(mfs_orphan_remove_set(tp, NULL, set, 2, NULL, 0, &need, 1, &nneed),
	      -EFSCORRUPTED);
	mfs_trans_cancel(tp);
	mfs_log_set_level(q);
	pthread_rwlock_unlock(&set[1]->lock);
	pthread_rwlock_unlock(&set[0]->lock);
	mfs_iput(set[0]);
	mfs_iput(set[1]);
	poke_next(i1, 0);
	free_ino(NULL, i1);
	free_ino(NULL, i2);
	free_ino(NULL, i3);
	CK_EQ(list_count(0), 0);
	tu_img_destroy(&t);
}
END_TEST

static Suite *orphan_suite(void)
{
	Suite *s = suite_create("orphan");
	TCase *tc = tcase_create("orphan");

	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, test_hints);
	tcase_add_test(tc, test_walk);
	tcase_add_test(tc, test_need_pred);
	tcase_add_test(tc, test_stale_hint);
	tcase_add_test(tc, test_not_listed);
	tcase_add_test(tc, test_damaged);
	tcase_add_test(tc, test_set_hints);
	tcase_add_test(tc, test_set_walk);
	tcase_add_test(tc, test_set_loop);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite_needing("mendfs_db", orphan_suite());
}
