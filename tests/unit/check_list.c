/*
 * check_list.c — lib/list.h, the intrusive list of the buffer cache's dirty lists and the
 * inode cache's LRU: order of add and add_tail, first and last, removal from the head, the
 * middle and the tail, a removed node knowing it is on no list (and removing it again, or
 * one never added, changing nothing), foreach, and a list checked against an array model
 * through many random steps.
 */
#include <check.h>
#include <stdlib.h>

#include "list.h"
#include "tu.h"

struct item {
	int id;
	struct mfs_list node;
};

static int id_of(struct mfs_list *n)
{
	return mfs_list_entry(n, struct item, node)->id;
}

/* The ids of `h`, first to last, into ids[]; the count.  Checks the back links too. */
static int collect(struct mfs_list *h, int *ids, int max)
{
	struct mfs_list *n;
	int k = 0;

	mfs_list_foreach(n, h) {
		T_TRUE(k < max);
		T_TRUE(n->next->prev == n);
		T_TRUE(n->prev->next == n);
		ids[k++] = id_of(n);
	}
	return k;
}

START_TEST(empty_list)
{
	struct mfs_list h;
	struct mfs_list *n;
	int seen = 0;

	mfs_list_init(&h);
	T_TRUE(mfs_list_empty(&h));
	T_TRUE(mfs_list_first(&h) == NULL);
	T_TRUE(mfs_list_last(&h) == NULL);
	mfs_list_foreach(n, &h)
		seen++;
	T_IEQ(seen, 0);
}
END_TEST

START_TEST(order_and_removal)
{
	struct item it[5];
	struct mfs_list h;
	int ids[8], k;

	mfs_list_init(&h);
	for (int i = 0; i < 5; i++) {
		it[i].id = i;
		mfs_list_init(&it[i].node);
		T_TRUE(!mfs_list_linked(&it[i].node));
	}
	mfs_list_add_tail(&h, &it[2].node);      /* 2 */
	mfs_list_add(&h, &it[1].node);           /* 1 2 */
	mfs_list_add_tail(&h, &it[3].node);      /* 1 2 3 */
	mfs_list_add(&h, &it[0].node);           /* 0 1 2 3 */
	mfs_list_add_tail(&h, &it[4].node);      /* 0 1 2 3 4 */
	k = collect(&h, ids, 8);
	T_IEQ(k, 5);
	for (int i = 0; i < 5; i++) {
		T_IEQ(ids[i], i);
		T_TRUE(mfs_list_linked(&it[i].node));
	}
	T_IEQ(id_of(mfs_list_first(&h)), 0);
	T_IEQ(id_of(mfs_list_last(&h)), 4);

	mfs_list_del(&it[2].node);               /* the middle: 0 1 3 4 */
	T_TRUE(!mfs_list_linked(&it[2].node));
	mfs_list_del(&it[0].node);               /* the head: 1 3 4 */
	mfs_list_del(&it[4].node);               /* the tail: 1 3 */
	k = collect(&h, ids, 8);
	T_IEQ(k, 2);
	T_IEQ(ids[0], 1);
	T_IEQ(ids[1], 3);
	T_IEQ(id_of(mfs_list_first(&h)), 1);
	T_IEQ(id_of(mfs_list_last(&h)), 3);
	mfs_list_del(&it[1].node);
	mfs_list_del(&it[3].node);
	T_TRUE(mfs_list_empty(&h));
	T_TRUE(mfs_list_first(&h) == NULL);

	/* A removed node goes on another list as a fresh one. */
	mfs_list_add(&h, &it[2].node);
	T_IEQ(id_of(mfs_list_first(&h)), 2);
	T_IEQ(id_of(mfs_list_last(&h)), 2);
}
END_TEST

/* Removing a node that is on no list (never added, or removed already) changes nothing:
 * not the list, not the node. */
START_TEST(del_of_non_member)
{
	struct item it[3];
	struct mfs_list h;
	int ids[4], k;

	mfs_list_init(&h);
	for (int i = 0; i < 3; i++) {
		it[i].id = i;
		mfs_list_init(&it[i].node);
	}
	mfs_list_add_tail(&h, &it[0].node);
	mfs_list_add_tail(&h, &it[1].node);
	mfs_list_del(&it[2].node);               /* never added */
	T_TRUE(!mfs_list_linked(&it[2].node));
	mfs_list_del(&it[1].node);
	mfs_list_del(&it[1].node);               /* removed twice */
	T_TRUE(!mfs_list_linked(&it[1].node));
	k = collect(&h, ids, 4);
	T_IEQ(k, 1);
	T_IEQ(ids[0], 0);
	T_IEQ(id_of(mfs_list_last(&h)), 0);
	mfs_list_del(&it[0].node);
	mfs_list_del(&it[0].node);
	T_TRUE(mfs_list_empty(&h));
	T_TRUE(mfs_list_last(&h) == NULL);
}
END_TEST

/* Random adds at either end and removals anywhere, against an array holding the order. */
START_TEST(random_against_model)
{
	enum { N = 64, STEPS = 20000 };
	struct item it[N];
	int model[N], nm = 0, ids[N];
	struct mfs_list h;

	srandom(12345);
	mfs_list_init(&h);
	for (int i = 0; i < N; i++) {
		it[i].id = i;
		mfs_list_init(&it[i].node);
	}
	for (int step = 0; step < STEPS; step++) {
		int i = (int)(random() % N), at = -1;

		for (int j = 0; j < nm; j++)
			if (model[j] == i)
				at = j;
		if (at >= 0) {
			T_TRUE(mfs_list_linked(&it[i].node));
			mfs_list_del(&it[i].node);
			for (int j = at; j + 1 < nm; j++)
				model[j] = model[j + 1];
			nm--;
		} else if (random() & 1) {
			T_TRUE(!mfs_list_linked(&it[i].node));
			mfs_list_add(&h, &it[i].node);
			for (int j = nm; j > 0; j--)
				model[j] = model[j - 1];
			model[0] = i;
			nm++;
		} else {
			mfs_list_add_tail(&h, &it[i].node);
			model[nm++] = i;
		}
		if (step % 97 == 0 || nm <= 1) {
			int k = collect(&h, ids, N);

			T_IEQ(k, nm);
			for (int j = 0; j < k; j++)
				T_IEQ(ids[j], model[j]);
			T_TRUE(mfs_list_empty(&h) == (nm == 0));
			if (nm) {
				T_IEQ(id_of(mfs_list_first(&h)), model[0]);
				T_IEQ(id_of(mfs_list_last(&h)), model[nm - 1]);
			}
		}
	}
}
END_TEST

int main(void)
{
	Suite *s = suite_create("list");
	TCase *tc = tcase_create("core");

	tcase_add_test(tc, empty_list);
	tcase_add_test(tc, order_and_removal);
	tcase_add_test(tc, del_of_non_member);
	tcase_add_test(tc, random_against_model);
	suite_add_tcase(s, tc);
	return tu_run_suite(s);
}
