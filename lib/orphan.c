/*
 * orphan.c — the per-AG lists of unlinked inodes still in use (see orphan.h for the
 * structure, its invariant and its locks), and the table of predecessor hints.
 */
#include "orphan.h"

#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "mem.h"
#include "mendfs_format.h"
#include "trans.h"
#include "verify.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

/* ---- hints: inode -> the inode before it on its list --------------------------------- */

struct hent {
	uint64_t ino, prev;
	struct hent *next;
};

struct mfs_orphans {
	pthread_mutex_t lock;       /* leaf lock: never held while taking another */
	struct hent **b;
	uint64_t nb, n;
};

#define HINT_BUCKETS_MIN 256u

int mfs_orphans_create(struct mfs_orphans **out)
{
	struct mfs_orphans *o = mfs_calloc(1, sizeof(*o));

	*out = NULL;
	if (!o)
		return -ENOMEM;
	o->nb = HINT_BUCKETS_MIN;
	o->b = mfs_calloc(o->nb, sizeof(*o->b));
	if (!o->b) {
		free(o);
		return -ENOMEM;
	}
	pthread_mutex_init(&o->lock, NULL);
	*out = o;
	return 0;
}

void mfs_orphans_free(struct mfs_orphans *o)
{
	if (!o)
		return;
	for (uint64_t i = 0; i < o->nb; i++)
		while (o->b[i]) {
			struct hent *e = o->b[i];

			o->b[i] = e->next;
			free(e);
		}
	free(o->b);
	pthread_mutex_destroy(&o->lock);
	free(o);
}

static struct hent **hint_find(struct mfs_orphans *o, uint64_t ino)
{
	struct hent **pp = &o->b[(ino * 0x9e3779b97f4a7c15ull >> 24) & (o->nb - 1)];

	while (*pp && (*pp)->ino != ino)
		pp = &(*pp)->next;
	return pp;
}

/* Double the buckets when crowded; failing to is harmless (longer chains). */
static void hint_grow(struct mfs_orphans *o)
{
	uint64_t onb = o->nb;
	struct hent **ob = o->b, **nb = mfs_calloc(onb * 2, sizeof(*nb));

	if (!nb)
		return;
	o->b = nb;
	o->nb = onb * 2;
	for (uint64_t i = 0; i < onb; i++)
		while (ob[i]) {
			struct hent *e = ob[i], **pp;

			ob[i] = e->next;
			pp = hint_find(o, e->ino);
			e->next = *pp;
			*pp = e;
		}
	free(ob);
}

/* prev 0: forget the hint.  A hint that cannot be stored is simply missing. */
static void hint_set(struct mfs_orphans *o, uint64_t ino, uint64_t prev)
{
	struct hent **pp, *e;

	if (!o || !ino)
		return;
	pthread_mutex_lock(&o->lock);
	pp = hint_find(o, ino);
	e = *pp;
	if (e && prev) {
		e->prev = prev;
	} else if (e) {
		*pp = e->next;
		o->n--;
		free(e);
	} else if (prev && (e = mfs_malloc(sizeof(*e))) != NULL) {
		e->ino = ino;
		e->prev = prev;
		e->next = NULL;
		*pp = e;
		if (++o->n > 2 * o->nb)
			hint_grow(o);
	}
	pthread_mutex_unlock(&o->lock);
}

static uint64_t hint_get(struct mfs_orphans *o, uint64_t ino)
{
	struct hent *e;
	uint64_t prev = 0;

	if (!o)
		return 0;
	pthread_mutex_lock(&o->lock);
	e = *hint_find(o, ino);
	if (e)
		prev = e->prev;
	pthread_mutex_unlock(&o->lock);
	return prev;
}

/* ---- on-disk pieces --------------------------------------------------------------------- */

static int in_ag(const struct mfs_fs *fs, uint64_t ino, uint32_t agno)
{
	return mfs_ino_check(fs, ino) == 0 && mfs_ino_to_agno(&fs->geo, ino) == agno;
}

/* Read the AG header and its list head (checked). */
static int read_head(struct mfs_fs *fs, uint32_t agno, struct mfs_buf **bpp, uint64_t *head)
{
	struct mfs_buf *bp;
	int err = mfs_read_agh(fs, agno, &bp);

	if (err)
		return err;
	*head = mfs_get64(((const struct mfs_agh *)bp->data)->unlinked);
	if (*head && !in_ag(fs, *head, agno)) {
		mfs_buf_put(bp);
		return MFS_CORRUPT("AG %u header: orphan list head %llu is not an inode of the AG",
				   agno, (unsigned long long)*head);
	}
	if (bpp)
		*bpp = bp;
	else
		mfs_buf_put(bp);
	return 0;
}

struct link_info {
	uint64_t next;
	uint16_t mode;
	uint32_t nlink;
};

/* The on-disk inode `ino` of AG `agno`, verified: its list link, mode and link count. */
static int read_link(struct mfs_fs *fs, uint64_t ino, uint32_t agno, struct link_info *li)
{
	const struct mfs_geom *g = &fs->geo;
	const struct mfs_dinode *d;
	struct mfs_buf *bp;
	int err;

	err = mfs_buf_read(fs->bc, mfs_ino_to_fsb(g, ino), NULL, &bp);
	if (err)
		return err;
	d = (const void *)((const char *)bp->data + mfs_ino_to_offset(g, ino));
	err = mfs_dinode_verify(d, g->inodesize, ino, g->uuid);
	if (!err) {
		li->next = mfs_get64(d->next_unlinked);
		li->mode = mfs_get16(d->mode);
		li->nlink = mfs_get32(d->nlink);
	}
	mfs_buf_put(bp);
	if (!err && li->next && !in_ag(fs, li->next, agno))
		err = MFS_CORRUPT("AG %u orphan list: inode %llu links to %llu, not an inode of "
				  "the AG", agno, (unsigned long long)ino,
				  (unsigned long long)li->next);
	return err;
}

/*
 * In `tp`: lock AG `agno` (the caller holds no higher AG, or has locked this one already:
 * the lock order), read its header and head, and join the header to the transaction.
 */
static int head_for_change(struct mfs_trans *tp, uint32_t agno, struct mfs_buf **bpp,
			   uint64_t *head)
{
	int err = mfs_trans_lock_ag(tp, agno, 0);

	if (!err)
		err = read_head(mfs_trans_fs(tp), agno, bpp, head);
	return err;
}

/* Set the head (the header is held by the caller and released here). */
static int set_head(struct mfs_trans *tp, struct mfs_buf *bp, uint64_t ino)
{
	int err = mfs_trans_modify(tp, bp);

	if (!err)
		mfs_put64(((struct mfs_agh *)bp->data)->unlinked, ino);
	mfs_buf_put(bp);
	return err;
}

/* The most inodes a list of AG `agno` can hold: a longer walk is a loop. */
static uint64_t list_bound(struct mfs_buf *agh_bp)
{
	return (uint64_t)mfs_get32(((const struct mfs_agh *)agh_bp->data)->icount) + 1;
}

/* ---- changing the list ------------------------------------------------------------------ */

int mfs_orphan_add(struct mfs_trans *tp, struct mfs_orphans *o, struct mfs_inode *ip)
{
	struct mfs_fs *fs = ip->fs;
	uint32_t agno = mfs_ino_to_agno(&fs->geo, ip->ino);
	struct mfs_buf *bp;
	uint64_t head;
	int err;

	err = head_for_change(tp, agno, &bp, &head);
	if (err)
		return err;
	if (head == ip->ino) {
		mfs_buf_put(bp);
		return MFS_CORRUPT("inode %llu: already at the head of AG %u's orphan list",
				   (unsigned long long)ip->ino, agno);
	}
	err = set_head(tp, bp, ip->ino);
	if (err)
		return err;
	ip->next_unlinked = head;
	/* Hints describe the list as of this transaction; a cancel leaves stale ones, which
	 * the check before every use catches. */
	hint_set(o, head, ip->ino);
	hint_set(o, ip->ino, 0);
	return 0;
}

/* Find the inode whose on-disk link is `ino`: the hint first, else walk from `head`. */
static int find_pred(struct mfs_fs *fs, struct mfs_orphans *o, uint32_t agno, uint64_t head,
		     uint64_t bound, uint64_t ino, uint64_t *pred)
{
	struct link_info li;
	uint64_t cur = hint_get(o, ino), steps = 0;
	int err;

	if (cur && in_ag(fs, cur, agno) && read_link(fs, cur, agno, &li) == 0 &&
	    li.next == ino && li.mode != 0 && li.nlink == 0) {
		*pred = cur;
		return 0;
	}
	for (cur = head; cur; cur = li.next) {
		if (++steps > bound)
			return MFS_CORRUPT("AG %u orphan list: more than %llu inodes (a loop?)",
					   agno, (unsigned long long)(bound - 1));
		err = read_link(fs, cur, agno, &li);
		if (err)
			return err;
		if (li.next == ino) {
			*pred = cur;
			return 0;
		}
	}
	mfs_log(MFS_LOG_WARN, "inode %llu: unlinked but not on AG %u's orphan list",
		(unsigned long long)ino, agno);
	return -ENOENT;
}

/* Is `ino` one of set[0..n)?  (Sets are small: a batch of the worker's.) */
static struct mfs_inode *member(struct mfs_inode **set, unsigned n, uint64_t ino)
{
	for (unsigned i = 0; ino && i < n; i++)
		if (set[i]->ino == ino)
			return set[i];
	return NULL;
}

/* The first inode after `ip` on the list that is not in the set (0: the end).  A chain of
 * members longer than the set is a loop among them. */
static int run_end(struct mfs_inode **set, unsigned n, struct mfs_inode *ip, uint32_t agno,
		   uint64_t *end)
{
	uint64_t next = ip->next_unlinked;
	struct mfs_inode *m;
	unsigned steps = 0;

	while ((m = member(set, n, next)) != NULL) {
		if (++steps > n)
			return MFS_CORRUPT("AG %u orphan list: inodes %llu... link in a loop", agno,
					   (unsigned long long)ip->ino);
		next = m->next_unlinked;
	}
	*end = next;
	return 0;
}

/*
 * Where the set's inodes lie on the list: pred[i] gets the inode before set[i] (0: set[i]
 * is the head).  The on-disk links are the committed ones (AG locked in tp, nothing of the
 * list changed yet).
 */
static int find_preds(struct mfs_trans *tp, struct mfs_orphans *o, uint32_t agno,
		      uint64_t head, uint64_t bound, struct mfs_inode **set, unsigned n,
		      uint64_t *pred)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);

	for (unsigned i = 0; i < n; i++) {
		uint64_t ino = set[i]->ino, next = set[i]->next_unlinked;
		int err;

		if (next && !in_ag(fs, next, agno))
			return MFS_CORRUPT("inode %llu: next unlinked inode %llu is not an inode of "
					   "AG %u", (unsigned long long)ino,
					   (unsigned long long)next, agno);
		if (mfs_ino_to_agno(&fs->geo, ino) != agno)
			return -EINVAL;
		pred[i] = 0;
		if (head == ino)
			continue;
		/* Another member's link (held, so in core is on disk) saves a read. */
		for (unsigned j = 0; j < n && !pred[i]; j++)
			if (set[j]->next_unlinked == ino)
				pred[i] = set[j]->ino;
		if (pred[i])
			continue;
		err = find_pred(fs, o, agno, head, bound, ino, &pred[i]);
		if (err)
			return err;
		if (pred[i] == ino)
			return MFS_CORRUPT("AG %u orphan list: inode %llu links to itself", agno,
					   (unsigned long long)ino);
	}
	return 0;
}

int mfs_orphan_remove_set(struct mfs_trans *tp, struct mfs_orphans *o,
			  struct mfs_inode **set, unsigned n, struct mfs_inode **preds,
			  unsigned npreds, uint64_t *need, unsigned needmax, unsigned *nneed)
{
	struct mfs_fs *fs;
	uint32_t agno;
	uint64_t head, newhead, *pred, covered = 0;
	struct mfs_buf *bp;
	int err, head_changes = 0;

	*nneed = 0;
	if (n == 0)
		return 0;
	fs = set[0]->fs;
	agno = mfs_ino_to_agno(&fs->geo, set[0]->ino);
	pred = mfs_malloc(n * sizeof(*pred));
	if (!pred)
		return -ENOMEM;
	err = head_for_change(tp, agno, &bp, &head);
	if (err)
		goto out_free;
	newhead = head;
	err = find_preds(tp, o, agno, head, list_bound(bp), set, n, pred);

	/* Each run of members is unlinked at the inode before it, which must be held. */
	for (unsigned i = 0; !err && i < n; i++) {
		uint64_t end = 0;
		struct mfs_inode *p = NULL;

		if (member(set, n, pred[i]))
			continue;               /* inside a run */
		err = run_end(set, n, set[i], agno, &end);
		if (err)
			break;
		for (uint64_t c = set[i]->ino; member(set, n, c); c = member(set, n, c)->next_unlinked)
			covered++;
		if (!pred[i]) {
			newhead = end;
			head_changes = 1;
			continue;
		}
		for (unsigned j = 0; j < npreds; j++)
			if (preds[j]->ino == pred[i])
				p = preds[j];
		if (!p) {
			if (*nneed < needmax)
				need[(*nneed)++] = pred[i];
			continue;
		}
		if (p->next_unlinked != set[i]->ino)
			mfs_inode_reload(p);    /* an in-core copy marked stale meanwhile */
		if (p->next_unlinked != set[i]->ino)
			err = MFS_CORRUPT("inode %llu: in core it links to %llu, on disk to %llu",
					  (unsigned long long)p->ino,
					  (unsigned long long)p->next_unlinked,
					  (unsigned long long)set[i]->ino);
	}
	if (!err && !*nneed && covered != n)
		err = MFS_CORRUPT("AG %u orphan list: %u inodes taken off, but the list reaches "
				  "%llu of them from its head (a loop?)", agno, n,
				  (unsigned long long)covered);
	if (!err && *nneed)
		err = -EAGAIN;
	if (err) {
		mfs_buf_put(bp);
		goto out_free;
	}

	/* Nothing changed so far: now unlink every run. */
	if (head_changes)
		err = set_head(tp, bp, newhead);
	else
		mfs_buf_put(bp);
	for (unsigned i = 0; !err && i < n; i++) {
		uint64_t end = 0;

		if (member(set, n, pred[i]))
			continue;
		err = run_end(set, n, set[i], agno, &end);
		if (!err && pred[i]) {
			struct mfs_inode *p = NULL;

			for (unsigned j = 0; j < npreds; j++)
				if (preds[j]->ino == pred[i])
					p = preds[j];
			p->next_unlinked = end;
			err = mfs_inode_log(tp, p);
		}
		if (!err)
			hint_set(o, end, pred[i]);
	}
	if (!err)
		for (unsigned i = 0; i < n; i++) {
			hint_set(o, set[i]->ino, 0);
			set[i]->next_unlinked = 0;
		}
out_free:
	free(pred);
	return err;
}

int mfs_orphan_remove(struct mfs_trans *tp, struct mfs_orphans *o, struct mfs_inode *ip,
		      struct mfs_inode *pred, uint64_t *need)
{
	unsigned nneed;

	*need = 0;
	return mfs_orphan_remove_set(tp, o, &ip, 1, &pred, pred ? 1 : 0, need, 1, &nneed);
}

int mfs_orphan_lock_pred(struct mfs_inode *ip, uint64_t need, struct mfs_inode **pred)
{
	struct mfs_inode *p;
	int err;

	*pred = NULL;
	pthread_rwlock_unlock(&ip->lock);
	err = mfs_iget(ip->fs, need, 0, &p);
	if (err) {
		pthread_rwlock_wrlock(&ip->lock);
		return err == -ENOENT ? MFS_CORRUPT("orphan list: inode %llu, before inode %llu, "
						    "is free", (unsigned long long)need,
						    (unsigned long long)ip->ino) : err;
	}
	if (need < ip->ino) {
		pthread_rwlock_wrlock(&p->lock);
		pthread_rwlock_wrlock(&ip->lock);
	} else {
		pthread_rwlock_wrlock(&ip->lock);
		pthread_rwlock_wrlock(&p->lock);
	}
	*pred = p;
	return 0;
}

void mfs_orphan_unlock_pred(struct mfs_inode **pred)
{
	if (*pred) {
		pthread_rwlock_unlock(&(*pred)->lock);
		mfs_iput(*pred);
		*pred = NULL;
	}
}

/* ---- reading the list -------------------------------------------------------------------- */

int mfs_orphan_head(struct mfs_fs *fs, uint32_t agno, uint64_t *ino)
{
	*ino = 0;
	if (agno >= fs->geo.agcount)
		return -EINVAL;
	return read_head(fs, agno, NULL, ino);
}

int mfs_orphan_check(struct mfs_fs *fs, uint32_t agno, uint64_t *count)
{
	struct link_info li;
	struct mfs_buf *bp;
	uint64_t cur, bound, n = 0;
	int err;

	*count = 0;
	if (agno >= fs->geo.agcount)
		return -EINVAL;
	err = read_head(fs, agno, &bp, &cur);
	if (err)
		return err;
	bound = list_bound(bp);
	mfs_buf_put(bp);
	for (; cur; cur = li.next) {
		if (++n > bound)
			return MFS_CORRUPT("AG %u orphan list: more than %llu inodes (a loop?)",
					   agno, (unsigned long long)(bound - 1));
		err = read_link(fs, cur, agno, &li);
		if (err)
			return err;
		if (li.mode == 0)
			return MFS_CORRUPT("AG %u orphan list: inode %llu is free", agno,
					   (unsigned long long)cur);
		if (li.nlink != 0)
			return MFS_CORRUPT("AG %u orphan list: inode %llu has %u links, expected 0",
					   agno, (unsigned long long)cur, li.nlink);
	}
	*count = n;
	return 0;
}
