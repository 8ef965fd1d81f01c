/*
 * list.h — an intrusive doubly-linked list: a struct mfs_list node embedded in each
 * element, a struct mfs_list head standing for the list (used by the buffer cache's dirty
 * lists and the inode cache's LRU).
 *
 * Invariants: the list is a ring through the head; an empty list is a head pointing at
 * itself (mfs_list_init); a node on no list points at itself too once initialised or
 * removed (mfs_list_del), so mfs_list_linked() tells whether it is on one, and removing it
 * again changes nothing.  A node must be initialised when its element is made (a zeroed
 * node is neither: it would read as linked and crash mfs_list_del).  Nothing allocates or
 * locks: the owner's lock guards the list and every node on it.
 */
#ifndef MFS_LIST_H
#define MFS_LIST_H

#include <stddef.h>

struct mfs_list {
	struct mfs_list *prev, *next;
};

/* The element holding node `p`, whose node is `member` of `type`. */
#define mfs_list_entry(p, type, member) \
	((type *)(void *)((char *)(p) - offsetof(type, member)))

static inline void mfs_list_init(struct mfs_list *h)
{
	h->prev = h->next = h;
}

static inline int mfs_list_empty(const struct mfs_list *h)
{
	return h->next == h;
}

/* Whether node `n` (initialised or removed since) is on a list. */
static inline int mfs_list_linked(const struct mfs_list *n)
{
	return n->next != n;
}

static inline void mfs_list_insert_(struct mfs_list *n, struct mfs_list *prev,
				    struct mfs_list *next)
{
	n->prev = prev;
	n->next = next;
	prev->next = n;
	next->prev = n;
}

/* Add `n` first (mfs_list_add) or last (mfs_list_add_tail) on list `h`. */
static inline void mfs_list_add(struct mfs_list *h, struct mfs_list *n)
{
	mfs_list_insert_(n, h, h->next);
}

static inline void mfs_list_add_tail(struct mfs_list *h, struct mfs_list *n)
{
	mfs_list_insert_(n, h->prev, h);
}

/* Take `n` off its list; it then points at itself. */
static inline void mfs_list_del(struct mfs_list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->prev = n->next = n;
}

/* The first or last node of `h`, NULL when it is empty. */
static inline struct mfs_list *mfs_list_first(const struct mfs_list *h)
{
	return h->next != h ? h->next : NULL;
}

static inline struct mfs_list *mfs_list_last(const struct mfs_list *h)
{
	return h->prev != h ? h->prev : NULL;
}

/* Every node `pos` of `h`, first to last; the loop body must not remove `pos`. */
#define mfs_list_foreach(pos, h) \
	for ((pos) = (h)->next; (pos) != (h); (pos) = (pos)->next)

#endif
