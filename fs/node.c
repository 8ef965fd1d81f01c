/*
 * node.c — the kernel's references to inodes, and the worker that frees unlinked inodes.
 *
 * The node table maps an inode number to what the kernel holds of it: its lookup count
 * (one per entry reply, minus forget) and its open count (open/opendir/create minus
 * release/releasedir).  While either is nonzero the table keeps one in-core reference
 * (mfs_iget) to the inode, so the inode stays cached and its number is never reused.
 *
 * Invariant: an inode with link count 0 is freed exactly when the table drops its entry
 * (both counts zero) — or, when the kernel held no reference at all at the time its last
 * name went away, by the request that removed the name.  Freeing (releasing every data
 * block, then mfs_ifree) is done by the worker thread, never in forget or release, which
 * the kernel may send under memory pressure: those paths only queue the reference.
 *
 * The link count of an inode only drops to 0 in unlink, rmdir and rename, which run while
 * the kernel holds the victim (it looked the name up), so forget and the last unlink do not
 * race; and a link count of 0 never rises again (link refuses such an inode).
 *
 * Only a link count this mount dropped to 0 is leave to free (ip->unlinked_here, set with
 * the orphan list entry by mfsd_orphan_add, and by the mount's orphan recovery for the
 * inodes on the lists).  An inode read from disk with link count 0 but no orphan entry is
 * damaged, not unlinked: when a directory still names it (lookup reports it) freeing it
 * at forget would lose its data, and a directory's whole subtree, before a scrub could
 * count its links again.  put_last, the worker (still_unlinked) and the batches
 * (batch_still_ready) all leave such an inode alone.
 *
 * Crash safety (lib/orphan.h): the transaction that drops a link count to 0 also puts the
 * inode on its AG's orphan list (mfsd_orphan_add), and the transaction that frees it takes
 * it off, so an inode that was unlinked while open when the filesystem went down is still
 * on a list at the next mount, which frees it (mfsd_orphans_recover) before serving.
 * Only the worker (and the recovery before it starts) takes inodes off the lists, so
 * removals never race each other.
 */
#include "mem.h"
#include "mendfs_int.h"

#include "bcache.h"
#include "bmap.h"
#include "byteorder.h"
#include "ialloc.h"
#include "journal.h"
#include "log.h"
#include "mendfs_format.h"
#include "orphan.h"
#include "trans.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

struct mfsd_node {
	uint64_t ino;
	uint64_t nlookup;
	uint64_t nopen;
	struct mfs_inode *ip;       /* the table's reference (NULL while dying) */
	int dying;                  /* unlinked, queued to (or being freed by) the worker */
	struct mfsd_node *next;
};

/*
 * Spare nodes.  A reference taken right after a namespace change has committed (create,
 * mkdir, link: the name exists) or while queueing an unlinked inode must not fail for want
 * of memory: the request would report ENOMEM for a change that happened, or the inode would
 * stay allocated.  node_alloc() draws on a small pool when the allocator fails, and tops
 * the pool up whenever it succeeds; entries that go refill it.  Under node_lock (one
 * daemon per process, so one pool).  Only a long run of failures empties it.
 */
#define SPARE_NODES 32
static struct mfsd_node *spare_nodes;
static unsigned nspare;

static struct mfsd_node *node_alloc(void)
{
	struct mfsd_node *n = mfs_calloc(1, sizeof(*n));

	if (n) {
		while (nspare < SPARE_NODES) {
			struct mfsd_node *s = mfs_calloc(1, sizeof(*s));

			if (!s)
				break;
			s->next = spare_nodes;
			spare_nodes = s;
			nspare++;
		}
		return n;
	}
	n = spare_nodes;
	if (n) {
		spare_nodes = n->next;
		nspare--;
		memset(n, 0, sizeof(*n));
	}
	return n;
}

static void node_free(struct mfsd_node *n)
{
	if (nspare < SPARE_NODES) {
		n->next = spare_nodes;
		spare_nodes = n;
		nspare++;
	} else {
		free(n);
	}
}

struct mfsd_work {
	struct mfs_inode *ip;       /* a reference handed to the worker */
	uint32_t generation;        /* of the inode that was seen unlinked */
	unsigned attempts;          /* failed tries so far (transient errors are retried) */
	struct mfsd_work *next;
};

/* Tries of one inode before it is left on its orphan list for the next mount. */
#define INACTIVE_ATTEMPTS 8u

#define NODE_BUCKETS_MIN (1u << 12)

static uint64_t node_hash(const struct mfsd *d, uint64_t ino)
{
	return (ino * 0x9e3779b97f4a7c15ull >> 20) & (d->node_buckets - 1);
}

int mfsd_nodes_init(struct mfsd *d)
{
	pthread_mutex_init(&d->node_lock, NULL);
	pthread_mutex_init(&d->work_lock, NULL);
	{
		pthread_condattr_t ca;

		/* The worker's periodic journal force waits on the monotonic clock. */
		pthread_condattr_init(&ca);
		pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
		pthread_cond_init(&d->work_cond, &ca);
		pthread_condattr_destroy(&ca);
	}
	pthread_cond_init(&d->idle_cond, NULL);
	pthread_mutex_init(&d->rename_lock, NULL);
	d->node_buckets = NODE_BUCKETS_MIN;
	d->node_hash = mfs_calloc(d->node_buckets, sizeof(*d->node_hash));
	return d->node_hash ? 0 : -ENOMEM;
}

/* Double the table when it gets crowded; a failed allocation just keeps longer chains. */
static void node_grow(struct mfsd *d)
{
	uint64_t nb = d->node_buckets * 2, old = d->node_buckets;
	struct mfsd_node **nh = mfs_calloc(nb, sizeof(*nh)), **oh = d->node_hash;

	if (!nh)
		return;
	d->node_hash = nh;
	d->node_buckets = nb;
	for (uint64_t i = 0; i < old; i++) {
		struct mfsd_node *n = oh[i], *next;

		for (; n; n = next) {
			uint64_t h = node_hash(d, n->ino);

			next = n->next;
			n->next = nh[h];
			nh[h] = n;
		}
	}
	free(oh);
}

static struct mfsd_node **node_find(struct mfsd *d, uint64_t ino)
{
	struct mfsd_node **pp = &d->node_hash[node_hash(d, ino)];

	while (*pp && (*pp)->ino != ino)
		pp = &(*pp)->next;
	return pp;
}

/* Count one more lookup (`open` 0) or open (`open` 1) of ip. */
static int node_ref(struct mfsd *d, struct mfs_inode *ip, int open)
{
	struct mfsd_node **pp, *n;

	pthread_mutex_lock(&d->node_lock);
	pp = node_find(d, ip->ino);
	n = *pp;
	if (n && n->dying) {
		/* The number was freed and already reused while the worker finished: the
		 * entry is the new inode's now. */
		n->dying = 0;
		n->ip = ip;
		mfs_ihold(ip);
	}
	if (!n) {
		n = node_alloc();
		if (!n) {
			pthread_mutex_unlock(&d->node_lock);
			return -ENOMEM;
		}
		n->ino = ip->ino;
		n->ip = ip;
		mfs_ihold(ip);
		*pp = n;
		if (++d->nnodes > 4 * d->node_buckets)
			node_grow(d);
	}
	if (open)
		n->nopen++;
	else
		n->nlookup++;
	pthread_mutex_unlock(&d->node_lock);
	return 0;
}

int mfsd_node_lookup(struct mfsd *d, struct mfs_inode *ip)
{
	return node_ref(d, ip, 0);
}

int mfsd_node_open(struct mfsd *d, struct mfs_inode *ip)
{
	return node_ref(d, ip, 1);
}

/*
 * Batches.  The worker frees unlinked inodes a batch at a time: it starts BATCH_WAIT_NS
 * after the first inode of an empty queue was queued (at once when BATCH_MAX are queued,
 * or someone drains or stops it) and takes the whole queue.  Each inode's data and
 * attribute blocks are freed on their own, in bounded transactions as before; then the
 * inodes of one AG, up to BATCH_MAX, leave their orphan list and are freed in one
 * transaction (free_batch): the AG header, the inode btree leaf and the inode clusters they
 * share are logged once for the batch instead of once per inode, and one wake-up of the
 * worker serves them all (it is woken when the queue becomes non-empty and when it holds
 * BATCH_MAX, not for every inode).  An inode that a batch cannot take (changed meanwhile,
 * or any error) goes through the one-at-a-time path (inactivate), which reports and
 * retries as before.
 *
 * The queue's length and age, and the drainers waiting, are under work_lock (one daemon
 * per process, like the spare nodes).
 */
#define BATCH_MAX 64u
#define BATCH_WAIT_NS 2000000L
static unsigned wq_len;
static struct timespec wq_since;
static unsigned wq_hurry;

/* Queue `w` at the tail (work_lock held). */
static void work_append(struct mfsd *d, struct mfsd_work *w)
{
	w->next = NULL;
	if (d->work_tail)
		d->work_tail->next = w;
	else
		d->work_head = w;
	d->work_tail = w;
	if (++wq_len == 1) {
		clock_gettime(CLOCK_MONOTONIC, &wq_since);
		pthread_cond_signal(&d->work_cond);
	} else if (wq_len == BATCH_MAX) {
		pthread_cond_signal(&d->work_cond);
	}
}

static void queue_inactive(struct mfsd *d, struct mfs_inode *ip, uint32_t gen)
{
	struct mfsd_work *w = mfs_malloc(sizeof(*w));

	if (!w) {
		/* The inode stays allocated but unreachable until a repair reclaims it; keep
		 * serving rather than free it here, in a path the kernel may drive. */
		mfs_log(MFS_LOG_ERR, "inode %llu: out of memory queueing it to be freed; it "
			"stays on its orphan list until the next mount",
			(unsigned long long)ip->ino);
		mfs_iput(ip);
		return;
	}
	w->ip = ip;
	w->generation = gen;
	w->attempts = 0;
	pthread_mutex_lock(&d->work_lock);
	work_append(d, w);
	pthread_mutex_unlock(&d->work_lock);
}

/*
 * A reference nobody else uses any more: free the inode if it has no name left.  Several
 * threads can get here for one inode (a forget racing with the unlink that dropped the
 * last name): the first one leaves a "dying" entry in the node table and queues the
 * inode; the others find an entry and only drop their reference.
 */
static void put_last(struct mfsd *d, struct mfs_inode *ip)
{
	struct mfsd_node **pp, *n;
	uint32_t nlink, gen;
	uint16_t mode;
	int here;

	pthread_rwlock_rdlock(&ip->lock);
	nlink = ip->nlink;
	mode = ip->mode;
	gen = ip->generation;
	here = ip->unlinked_here;
	pthread_rwlock_unlock(&ip->lock);
	if (nlink != 0 || mode == 0 || !here || d->ro) {
		mfs_iput(ip);
		return;
	}
	pthread_mutex_lock(&d->node_lock);
	pp = node_find(d, ip->ino);
	if (*pp) {
		/* Held by the kernel again, or already queued. */
		pthread_mutex_unlock(&d->node_lock);
		mfs_iput(ip);
		return;
	}
	n = node_alloc();
	if (!n) {
		pthread_mutex_unlock(&d->node_lock);
		mfs_log(MFS_LOG_ERR, "inode %llu: out of memory queueing it to be freed; it "
			"stays on its orphan list until the next mount",
			(unsigned long long)ip->ino);
		mfs_iput(ip);
		return;
	}
	n->ino = ip->ino;
	n->dying = 1;
	*pp = n;
	d->nnodes++;
	pthread_mutex_unlock(&d->node_lock);
	queue_inactive(d, ip, gen);
}

/* The worker is done with a dying inode: drop its entry (unless the number was reused). */
static void node_dead(struct mfsd *d, uint64_t ino)
{
	struct mfsd_node **pp, *n;

	pthread_mutex_lock(&d->node_lock);
	pp = node_find(d, ino);
	n = *pp;
	if (n && n->dying) {
		*pp = n->next;
		d->nnodes--;
		node_free(n);
	}
	pthread_mutex_unlock(&d->node_lock);
}

/* Drop count `which` by `n`; when both counts are zero the entry goes. */
static void node_unref(struct mfsd *d, uint64_t ino, uint64_t cnt, int open)
{
	struct mfsd_node **pp, *n;
	struct mfs_inode *ip = NULL;

	pthread_mutex_lock(&d->node_lock);
	pp = node_find(d, ino);
	n = *pp;
	if (!n || n->dying) {
		pthread_mutex_unlock(&d->node_lock);
		mfs_log(MFS_LOG_WARN, "inode %llu: %s of an inode the kernel does not hold",
			(unsigned long long)ino, open ? "release" : "forget");
		return;
	}
	if (open)
		n->nopen -= cnt < n->nopen ? cnt : n->nopen;
	else
		n->nlookup -= cnt < n->nlookup ? cnt : n->nlookup;
	if (n->nlookup == 0 && n->nopen == 0) {
		*pp = n->next;
		d->nnodes--;
		ip = n->ip;
		node_free(n);
	}
	pthread_mutex_unlock(&d->node_lock);
	if (ip)
		put_last(d, ip);
}

void mfsd_node_forget(struct mfsd *d, uint64_t ino, uint64_t nlookup)
{
	node_unref(d, ino, nlookup, 0);
}

void mfsd_node_release(struct mfsd *d, uint64_t ino)
{
	node_unref(d, ino, 1, 1);
}

void mfsd_iput(struct mfsd *d, struct mfs_inode *ip)
{
	int held;

	pthread_mutex_lock(&d->node_lock);
	held = *node_find(d, ip->ino) != NULL;
	pthread_mutex_unlock(&d->node_lock);
	if (held)
		mfs_iput(ip);
	else
		put_last(d, ip);
}

void mfsd_nodes_shutdown(struct mfsd *d)
{
	/* The scan goes on from the bucket where it found the last entry (the buckets before
	 * it hold only dying entries, and nothing but dying entries is added now): starting
	 * again from bucket 0 for every entry took minutes with a million inodes referenced.
	 * A table that grew meanwhile is scanned again from the start. */
	uint64_t i = 0, nb = 0;

	for (;;) {
		struct mfs_inode *ip = NULL;

		pthread_mutex_lock(&d->node_lock);
		if (nb != d->node_buckets) {
			nb = d->node_buckets;
			i = 0;
		}
		for (; i < d->node_buckets && !ip; i++) {
			struct mfsd_node **pp = &d->node_hash[i], *n;

			/* Dying entries stay: the worker removes them when it is done. */
			while (*pp && (*pp)->dying)
				pp = &(*pp)->next;
			n = *pp;
			if (n) {
				*pp = n->next;
				d->nnodes--;
				ip = n->ip;
				node_free(n);
				i--;        /* the bucket may hold more */
			}
		}
		pthread_mutex_unlock(&d->node_lock);
		if (!ip)
			break;
		put_last(d, ip);
	}
}

void mfsd_nodes_free(struct mfsd *d)
{
	for (uint64_t i = 0; d->node_hash && i < d->node_buckets; i++)
		while (d->node_hash[i]) {
			struct mfsd_node *n = d->node_hash[i];

			d->node_hash[i] = n->next;
			if (n->ip)
				mfs_iput(n->ip);
			free(n);
		}
	free(d->node_hash);
	d->node_hash = NULL;
	while (spare_nodes) {
		struct mfsd_node *n = spare_nodes;

		spare_nodes = n->next;
		free(n);
	}
	nspare = 0;
}

/* ---- the orphan lists ----------------------------------------------------------------- */

int mfsd_orphan_add(struct mfsd *d, struct mfs_trans *tp, struct mfs_inode *ip)
{
	/* Under ip->lock exclusive, with the link count just dropped to 0.  A transaction
	 * cancelled after this leaves the flag set on an inode whose reloaded count is not
	 * 0 again, which is harmless: a count only reaches 0 again through here. */
	ip->unlinked_here = 1;
	return mfs_orphan_add(tp, d->orphans, ip);
}

/*
 * The transaction that frees an unlinked inode whose blocks are gone: off its orphan list,
 * then free.  Taking it off the middle of a list changes the inode before it, whose lock
 * is taken (in order, outside the transaction) when the list says which it is.
 */
static int free_inode(struct mfsd *d, struct mfs_inode *ip)
{
	struct mfs_inode *pred = NULL;
	unsigned tries = 0;
	int err;

	for (;;) {
		struct mfs_trans *tp;
		uint64_t need = 0;

		err = mfs_trans_alloc(d->fs, &tp);
		if (err)
			break;
		mfs_trans_nodata(tp);           /* frees: nothing becomes reachable */
		err = mfs_orphan_remove(tp, d->orphans, ip, pred, &need);
		if (err == -ENOENT)
			err = 0;        /* not on a list (reported): free it all the same */
		if (!err)
			err = mfs_ifree(tp, ip->ino);
		err = mfsd_trans_end(tp, err);
		if (!err)
			break;
		mfs_inode_reload(ip);
		if (pred)
			mfs_inode_reload(pred);
		if (err == -EAGAIN && need && ++tries < MFSD_LOCK_RETRIES) {
			mfs_orphan_unlock_pred(&pred);
			mfsd_retry_backoff(tries);
			err = mfs_orphan_lock_pred(ip, need, &pred);
			if (err)
				break;
			continue;
		}
		if (!mfsd_should_retry(err, &tries))
			break;
	}
	mfs_orphan_unlock_pred(&pred);
	return err;
}

/* Does ip have data blocks to free?  (An empty file's extent list needs no transaction.) */
static int has_blocks(const struct mfs_inode *ip)
{
	return (ip->dformat == MFS_FMT_EXTENTS && ip->dnext != 0) ||
	       ip->dformat == MFS_FMT_BTREE;
}

/*
 * With ip->lock held exclusive: read the in-core copy again and check that it is still the
 * unlinked inode of generation `gen`.  The decision to free was taken on a copy that may
 * have been stale (an inode already freed, whose number may even be in use again): 1 when
 * it is not that inode any more (nothing to do), else 0 or the error.
 */
static int still_unlinked(struct mfs_inode *ip, uint32_t gen)
{
	int err = mfs_inode_reload(ip);

	if (err)
		return err;
	return ip->nlink != 0 || ip->mode == 0 || ip->generation != gen || !ip->unlinked_here;
}

/* Free ip's data and attribute blocks in bounded transactions (ip->lock exclusive). */
static int free_blocks(struct mfsd *d, struct mfs_inode *ip)
{
	int err;

	if (has_blocks(ip)) {
		err = mfsd_free_all_blocks(d, ip);
		if (err)
			return err;
	}
	return mfsd_xattr_free_all(d, ip);
}

/* Free an unlinked inode, alone: its blocks, then the inode. */
static int inactivate(struct mfsd *d, struct mfs_inode *ip, uint32_t gen)
{
	int err;

	pthread_rwlock_wrlock(&ip->lock);
	err = still_unlinked(ip, gen);
	if (!err)
		err = free_blocks(d, ip);
	if (err == 1) {
		pthread_rwlock_unlock(&ip->lock);
		return 0;
	}
	if (!err)
		err = free_inode(d, ip);
	/* Freed: the in-core copy says so (mode 0) before the lock goes.  Whoever took a
	 * reference before the free and waits for the lock (an online repair of this inode)
	 * must find it free; with the old fields it would log them over the free inode
	 * (torture: "the inode btree says free, but the inode has mode 0100640", nlink 0).
	 * Not a reload: the AG is no longer locked, and an allocation may be writing the slot
	 * now; mfs_ifree left the copy stale, so the next mfs_iget reads the disk. */
	if (!err) {
		ip->mode = 0;
		ip->unlinked_here = 0;
	} else {
		mfs_inode_invalidate(d->fs, ip->ino);
	}
	pthread_rwlock_unlock(&ip->lock);
	return err;
}

/* Errors worth another try later: memory, lock-order conflicts, a busy predecessor. */
static int transient(int err)
{
	return err == -ENOMEM || err == -EDEADLK || err == -EAGAIN;
}

/* Free the inodes on AG `agno`'s list, from the head (each removal is then O(1)). */
static int recover_ag(struct mfsd *d, uint32_t agno, uint64_t *freed)
{
	struct mfs_fs *fs = d->fs;
	struct mfs_inode *ip;
	struct mfs_buf *bp;
	uint64_t ino, bound, n = 0;
	int err;

	err = mfs_read_agh(fs, agno, &bp);
	if (err)
		return err;
	bound = (uint64_t)mfs_get32(((const struct mfs_agh *)bp->data)->icount);
	mfs_buf_put(bp);
	for (;;) {
		uint32_t nlink, gen;
		uint16_t mode;

		err = mfs_orphan_head(fs, agno, &ino);
		if (err || !ino)
			return err;
		if (++n > bound)
			return MFS_CORRUPT("AG %u orphan list: more than %llu inodes freed from it "
					   "(a loop?)", agno, (unsigned long long)bound);
		err = mfs_iget(fs, ino, 0, &ip);
		if (err == -ENOENT)
			return MFS_CORRUPT("AG %u orphan list: inode %llu is free", agno,
					   (unsigned long long)ino);
		if (err)
			return err;
		pthread_rwlock_wrlock(&ip->lock);
		nlink = ip->nlink;
		mode = ip->mode;
		gen = ip->generation;
		/* On an orphan list: unlinked before the filesystem went down; this mount
		 * finishes the job (inactivate frees only what is flagged so). */
		ip->unlinked_here = nlink == 0 && mode != 0;
		pthread_rwlock_unlock(&ip->lock);
		if (nlink != 0 || mode == 0) {
			mfs_iput(ip);
			return MFS_CORRUPT("AG %u orphan list: inode %llu has %u links, expected 0",
					   agno, (unsigned long long)ino, nlink);
		}
		err = inactivate(d, ip, gen);
		mfs_iput(ip);
		if (err)
			return err;
		++*freed;
	}
}

int mfsd_orphans_recover(struct mfsd *d)
{
	uint64_t freed = 0;
	int ret = 0;

	for (uint32_t agno = 0; agno < d->fs->geo.agcount; agno++) {
		int err = recover_ag(d, agno, &freed);

		if (err) {
			/* Leave the rest of that list to repair; keep mounting. */
			mfs_log(MFS_LOG_ERR, "AG %u: freeing the orphaned inodes failed: %s; the "
				"rest of its orphan list is left for mendfs_repair", agno,
				strerror(mfsd_errno(err)));
			if (!ret)
				ret = err;
		}
	}
	if (freed)
		mfs_log(MFS_LOG_INFO, "freed %llu inode%s unlinked while in use before the "
			"filesystem went down", (unsigned long long)freed, freed == 1 ? "" : "s");
	return ret;
}

/* ---- the worker ---------------------------------------------------------------------- */

/*
 * Asynchronous commits (most metadata changes) are durable at the next force: an fsync of
 * any file, or this one, every `commit_secs` seconds (busy or idle) when something was
 * committed since the last.  The kernel never passes syncfs(2) to a FUSE filesystem of this kind (libfuse
 * 3.14 has no such operation), so this bounds what a crash can lose.  Called with
 * work_lock held, which it drops around the force.
 */
static void periodic_force(struct mfsd *d)
{
	struct mfs_journal_stats st;
	int err;

	if (!d->fs->log)
		return;
	mfs_journal_get_stats(d->fs->log, &st);
	if (st.commits == d->forced_commits)
		return;
	d->work_busy = 1;
	pthread_mutex_unlock(&d->work_lock);
	err = mfsd_force(d);
	if (err)
		mfs_log(MFS_LOG_ERR, "periodic journal force failed: %s", strerror(mfsd_errno(err)));
	pthread_mutex_lock(&d->work_lock);
	d->work_busy = 0;
	d->forced_commits = st.commits;
}

/* The next periodic force is due at d->force_due (monotonic); 0: none scheduled. */
static int force_is_due(struct mfsd *d, struct timespec *now)
{
	clock_gettime(CLOCK_MONOTONIC, now);
	return d->commit_secs && !d->ro &&
	       (now->tv_sec > d->force_due.tv_sec ||
		(now->tv_sec == d->force_due.tv_sec && now->tv_nsec >= d->force_due.tv_nsec));
}

/* Force when due (work_lock held), whether or not the queue is busy, and plan the next. */
static void force_if_due(struct mfsd *d)
{
	struct timespec now;

	if (!force_is_due(d, &now))
		return;
	d->force_due = now;
	d->force_due.tv_sec += d->commit_secs;
	periodic_force(d);
}

/* Wait for work (work_lock held), at most until the next force is due. */
static void worker_wait(struct mfsd *d)
{
	if (!d->commit_secs || d->ro)
		pthread_cond_wait(&d->work_cond, &d->work_lock);
	else
		pthread_cond_timedwait(&d->work_cond, &d->work_lock, &d->force_due);
}

/* ---- freeing a batch ------------------------------------------------------------------ */

static int cmp_ino(const void *a, const void *b)
{
	uint64_t x = (*(struct mfs_inode *const *)a)->ino, y = (*(struct mfs_inode *const *)b)->ino;

	return x < y ? -1 : x > y;
}

/* Lock every inode of v[0..n) exclusive, in increasing inode number (sorts v). */
static void lock_sorted(struct mfs_inode **v, unsigned n)
{
	qsort(v, n, sizeof(*v), cmp_ino);
	for (unsigned i = 0; i < n; i++)
		pthread_rwlock_wrlock(&v[i]->lock);
}

static void unlock_all(struct mfs_inode **v, unsigned n)
{
	for (unsigned i = n; i-- > 0;)
		pthread_rwlock_unlock(&v[i]->lock);
}

/*
 * A small file's blocks are freed in the batch's transaction too (no transaction of its
 * own): an inline list of at most SMALL_EXTENTS extents and no attribute fork.  Larger
 * maps, and attributes, are freed first in bounded transactions of their own.
 */
#define SMALL_EXTENTS 4u

static int batchable(const struct mfs_inode *ip)
{
	return ip->aformat == MFS_FMT_NONE &&
	       (!has_blocks(ip) || (ip->dformat == MFS_FMT_EXTENTS && ip->dnext <= SMALL_EXTENTS));
}

/* How much of a batch transaction an inode takes: its extents and itself. */
static unsigned batch_weight(const struct mfs_inode *ip)
{
	return 1 + (has_blocks(ip) ? ip->dnext : 0);
}

/* Is every member still an unlinked inode of its generation that a batch can take?  (Under
 * the locks; anything else is left to the one-at-a-time path.) */
static int batch_still_ready(struct mfsd_work **ws, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		const struct mfs_inode *ip = ws[i]->ip;

		if (ip->mode == 0 || ip->nlink != 0 || ip->generation != ws[i]->generation ||
		    !ip->unlinked_here || !batchable(ip))
			return 0;
	}
	return 1;
}

/* Add `agno` to the set ags[0..*n) (at most BATCH_AGS). */
#define BATCH_AGS 64u
static int ag_set_add(uint32_t *ags, unsigned *n, uint32_t agno)
{
	for (unsigned k = 0; k < *n; k++)
		if (ags[k] == agno)
			return 0;
	if (*n == BATCH_AGS)
		return -E2BIG;              /* too spread out for a batch */
	ags[(*n)++] = agno;
	return 0;
}

/*
 * In tp, lock every AG the batch changes, in increasing order: the members' (inode btree,
 * orphan list) and those of their data blocks (free space, reverse map), found from their
 * maps.  Taken up front, a punch never meets a lower AG after a higher one (-EDEADLK).
 */
static int batch_lock_ags(struct mfs_trans *tp, struct mfs_inode **set, unsigned n)
{
	const struct mfs_geom *g = &set[0]->fs->geo;
	uint64_t max = mfs_bmap_max_blocks(set[0]->fs);
	uint32_t ags[BATCH_AGS];
	unsigned nags = 0;
	int err = 0;

	for (unsigned i = 0; !err && i < n; i++) {
		err = ag_set_add(ags, &nags, mfs_ino_to_agno(g, set[i]->ino));
		for (uint64_t off = 0; !err && has_blocks(set[i]) && off < max;) {
			struct mfs_bmap_ext ext;

			err = mfs_bmap_lookup(set[i], off, &ext);
			if (!err && ext.startblock != MFS_BMAP_HOLE)
				err = ag_set_add(ags, &nags, mfs_fsb_to_agno(g, ext.startblock));
			off = ext.startoff + ext.len;
		}
	}
	for (unsigned i = 1; i < nags; i++)
		for (unsigned j = i; j > 0 && ags[j - 1] > ags[j]; j--) {
			uint32_t t = ags[j];

			ags[j] = ags[j - 1];
			ags[j - 1] = t;
		}
	for (unsigned i = 0; !err && i < nags; i++)
		err = mfs_trans_lock_agl_ordered(tp, ags[i], MFS_AGL_ALL);
	return err;
}

/* In tp: unmap and free every data block of the members that have some (small maps). */
static int batch_punch(struct mfs_trans *tp, struct mfs_inode **set, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		uint64_t max = mfs_bmap_max_blocks(set[i]->fs), done;
		int err;

		if (!has_blocks(set[i]))
			continue;
		err = mfs_bmap_punch(tp, set[i], 0, max, &done);
		if (err)
			return err;
		if (done != max)
			return -E2BIG;              /* more than one call: not a small map */
	}
	return 0;
}

#define BATCH_NEED 8u   /* predecessors asked for per try */

/*
 * Take ws[0..n) — unlinked inodes of one AG, batchable — off their orphan list and free
 * them and their blocks, in one transaction.  The inodes before their runs on the list
 * (mfs_orphan_remove_set) are locked with them, in inode-number order.  0, or an error
 * after which nothing of the batch changed (the caller frees its inodes one at a time).
 */
static int free_batch(struct mfsd *d, struct mfsd_work **ws, unsigned n)
{
	struct mfs_inode **set, **preds, **locked;
	uint64_t need[BATCH_NEED];
	unsigned npreds = 0, nneed = 0, tries = 0;
	int err;

	set = mfs_malloc(4 * n * sizeof(*set));
	if (!set)
		return -ENOMEM;
	preds = set + n;            /* at most one per run: n */
	locked = preds + n;         /* the set and preds, sorted: 2n */
	for (unsigned i = 0; i < n; i++)
		set[i] = locked[i] = ws[i]->ip;
	lock_sorted(locked, n);
	err = batch_still_ready(ws, n) ? 0 : -ESTALE;
	while (!err) {
		struct mfs_trans *tp;

		err = mfs_trans_alloc(d->fs, &tp);
		if (err)
			break;
		mfs_trans_nodata(tp);           /* frees: nothing becomes reachable */
		err = batch_lock_ags(tp, set, n);
		if (!err)
			err = batch_punch(tp, set, n);
		if (!err)
			err = mfs_orphan_remove_set(tp, d->orphans, set, n, preds, npreds, need,
						    BATCH_NEED, &nneed);
		for (unsigned i = 0; !err && i < n; i++)
			err = mfs_ifree(tp, set[i]->ino);
		err = mfsd_trans_end(tp, err);
		if (!err)
			break;
		for (unsigned i = 0; i < n + npreds; i++)
			mfs_inode_reload(locked[i]);
		if (err == -EAGAIN && nneed && npreds + nneed <= n &&
		    ++tries < MFSD_LOCK_RETRIES) {
			/* Lock the inodes before the runs too: let everything go, take them,
			 * lock it all again in order. */
			unlock_all(locked, n + npreds);
			err = 0;
			for (unsigned i = 0; !err && i < nneed; i++) {
				err = mfs_iget(d->fs, need[i], 0, &preds[npreds]);
				if (!err) {
					locked[n + npreds] = preds[npreds];
					npreds++;
				}
			}
			lock_sorted(locked, n + npreds);
			if (!err && !batch_still_ready(ws, n))
				err = -ESTALE;
			if (err)
				break;
			continue;
		}
		if (!mfsd_should_retry(err, &tries))
			break;
		err = batch_still_ready(ws, n) ? 0 : -ESTALE;	/* reloaded: again */
	}
	/* Freed: in core mode 0 before the locks go (see inactivate). */
	for (unsigned i = 0; !err && i < n; i++) {
		set[i]->mode = 0;
		set[i]->unlinked_here = 0;
	}
	unlock_all(locked, n + npreds);
	for (unsigned i = 0; i < npreds; i++)
		mfs_iput(preds[i]);
	free(set);
	return err;
}

/* An inode the worker is done with (err: what went wrong).  A transient error puts it on
 * *retry (tried again later), up to INACTIVE_ATTEMPTS tries. */
static void work_done(struct mfsd *d, struct mfsd_work *w, int err, struct mfsd_work **retry)
{
	if (err && transient(err) && ++w->attempts < INACTIVE_ATTEMPTS) {
		/* Again after the rest of the queue (its blocks freed so far stay so). */
		w->next = *retry;
		*retry = w;
		return;
	}
	if (err)
		mfs_log(MFS_LOG_ERR, "inode %llu: freeing the unlinked inode failed: %s; it "
			"stays on its orphan list until the next mount",
			(unsigned long long)w->ip->ino, strerror(mfsd_errno(err)));
	node_dead(d, w->ip->ino);
	mfs_iput(w->ip);
	free(w);
}

static int cmp_work(const void *a, const void *b)
{
	uint64_t x = (*(struct mfsd_work *const *)a)->ip->ino;
	uint64_t y = (*(struct mfsd_work *const *)b)->ip->ino;

	return x < y ? -1 : x > y;
}

/*
 * Free the `n` inodes of the list `w`: each one's blocks, then the inodes in batches of
 * one AG.  Inodes to try again later go to *retry.
 */
static void work_batch(struct mfsd *d, struct mfsd_work *w, unsigned n,
			   struct mfsd_work **retry)
{
	const struct mfs_geom *g = &d->fs->geo;
	struct mfsd_work **ready = n > 1 ? mfs_malloc(n * sizeof(*ready)) : NULL;
	/* A batch's weight (inodes and extents) stays a small part of the log. */
	unsigned nready = 0, budget = g->logblocks / 16 < BATCH_MAX ? g->logblocks / 16 : BATCH_MAX;

	while (w) {
		struct mfsd_work *next = w->next;
		int err;

		if (!ready) {
			/* Alone (or no memory for a batch): the one-at-a-time path. */
			work_done(d, w, inactivate(d, w->ip, w->generation), retry);
			w = next;
			continue;
		}
		pthread_rwlock_wrlock(&w->ip->lock);
		err = still_unlinked(w->ip, w->generation);
		if (err == 0 && !batchable(w->ip))
			err = free_blocks(d, w->ip);
		if (err < 0)
			mfs_inode_invalidate(d->fs, w->ip->ino);
		pthread_rwlock_unlock(&w->ip->lock);
		if (err == 0) {
			ready[nready++] = w;
		} else {
			work_done(d, w, err < 0 ? err : 0, retry);
		}
		w = next;
	}
	if (!ready)
		return;
	qsort(ready, nready, sizeof(*ready), cmp_work);
	for (unsigned i = 0, j; i < nready; i = j) {
		uint32_t agno = mfs_ino_to_agno(g, ready[i]->ip->ino);
		unsigned weight = batch_weight(ready[i]->ip);
		int err;

		for (j = i + 1; j < nready && mfs_ino_to_agno(g, ready[j]->ip->ino) == agno; j++) {
			weight += batch_weight(ready[j]->ip);
			if (weight > budget)
				break;
		}
		err = free_batch(d, ready + i, j - i);
		for (unsigned k = i; k < j; k++)
			work_done(d, ready[k], err ? inactivate(d, ready[k]->ip,
								 ready[k]->generation) : 0,
				  retry);
	}
	free(ready);
}

/* Is the queue's batch due (work_lock held)?  Else *due is when it will be. */
static int batch_due(struct mfsd *d, struct timespec *due)
{
	struct timespec now;

	if (d->work_stop || wq_hurry || wq_len >= BATCH_MAX)
		return 1;
	*due = wq_since;
	due->tv_nsec += BATCH_WAIT_NS;
	if (due->tv_nsec >= 1000000000L) {
		due->tv_nsec -= 1000000000L;
		due->tv_sec++;
	}
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > due->tv_sec ||
	       (now.tv_sec == due->tv_sec && now.tv_nsec >= due->tv_nsec);
}

static void *worker_main(void *arg)
{
	struct mfsd *d = arg;

	pthread_mutex_lock(&d->work_lock);
	clock_gettime(CLOCK_MONOTONIC, &d->force_due);
	d->force_due.tv_sec += d->commit_secs;
	for (;;) {
		struct mfsd_work *w = d->work_head;

		force_if_due(d);
		if (d->errors_pending) {
			d->errors_pending = 0;
			d->work_busy = 1;
			pthread_mutex_unlock(&d->work_lock);
			mfsd_mark_errors(d);
			pthread_mutex_lock(&d->work_lock);
			d->work_busy = 0;
			continue;
		}
		if (!w) {
			pthread_cond_broadcast(&d->idle_cond);
			if (d->work_stop)
				break;
			worker_wait(d);
			continue;
		}
		{
			struct timespec due;
			struct mfsd_work *retry = NULL;
			unsigned n = wq_len;

			if (!batch_due(d, &due)) {
				/* Gather more, but never past a periodic force. */
				if (d->commit_secs && !d->ro &&
				    (d->force_due.tv_sec < due.tv_sec ||
				     (d->force_due.tv_sec == due.tv_sec &&
				      d->force_due.tv_nsec < due.tv_nsec)))
					due = d->force_due;
				pthread_cond_timedwait(&d->work_cond, &d->work_lock, &due);
				continue;
			}
			d->work_head = d->work_tail = NULL;
			wq_len = 0;
			d->work_busy = 1;
			pthread_mutex_unlock(&d->work_lock);

			work_batch(d, w, n, &retry);

			pthread_mutex_lock(&d->work_lock);
			while (retry) {
				struct mfsd_work *r = retry;

				retry = r->next;
				work_append(d, r);
				n--;
			}
			d->work_busy = 0;
			d->inactivated += n;
		}
	}
	pthread_mutex_unlock(&d->work_lock);
	return NULL;
}

int mfsd_worker_start(struct mfsd *d)
{
	int err = pthread_create(&d->worker, NULL, worker_main, d);

	if (err)
		return -err;
	d->work_started = 1;
	return 0;
}

void mfsd_worker_drain(struct mfsd *d)
{
	pthread_mutex_lock(&d->work_lock);
	wq_hurry++;             /* no batching delay while someone waits */
	pthread_cond_signal(&d->work_cond);
	while (d->work_head || d->work_busy || d->errors_pending)
		pthread_cond_wait(&d->idle_cond, &d->work_lock);
	wq_hurry--;
	pthread_mutex_unlock(&d->work_lock);
}

void mfsd_worker_stop(struct mfsd *d)
{
	if (!d->work_started)
		return;
	pthread_mutex_lock(&d->work_lock);
	d->work_stop = 1;
	pthread_cond_signal(&d->work_cond);
	pthread_mutex_unlock(&d->work_lock);
	pthread_join(d->worker, NULL);
	d->work_started = 0;
}
