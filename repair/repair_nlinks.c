/*
 * repair_nlinks.c — rebuilding link counts: every reference to every inode counted against
 * its link count, the count set to what was counted, and an inode in use that nothing names
 * linked into /lost+found (repair_lostfound.c) instead of being lost.
 *
 * What is counted is what the checker (scrub_nlinks.c) counts, so that the rebuilt counts
 * pass it: a file's links are the entries naming it; a directory's the one entry naming it,
 * its "." and one for each entry in it that names a directory (refs + 1 + subdirs; the root,
 * named by none: 2 + subdirs).  A directory named by several entries, or a root named by
 * one, is settled first when its own entry can be told (twice_settle: the one in the
 * directory its ".." names; the directories holding the others are rebuilt, then all is
 * counted again), else left alone with the reason.  An inode without links that nothing
 * names is the orphan list's (repair_orphans.c).
 *
 * Everything proportional to the inode or entry count lives in scratch arrays in the
 * client's descriptor (lib/xfarray.h), never in the daemon's heap:
 *   I  (ino, nlink, mode, refs, subdirs)  every inode in use, gathered in inode order from
 *                                          the committed cluster buffers, AG by AG;
 *   E  (child, parent)                     one per stored entry of every directory (its
 *                                          lock shared while it is read), sorted by child;
 *   D  (parent)                            one per entry naming a directory (from merging E
 *                                          with I: the child's mode), sorted;
 *   F  (ino, was, want, mode, action)      the changes, from merging I with E and D;
 *   C  the orphan list rebuild's candidates, should a list need it afterwards.
 * Their sizes come from a first pass over the inodes: the inodes in use, and an upper bound
 * of each directory's entries from its size (8 + the sum of 11 + name length per entry).
 *
 * Online, all of it runs inside the namespace quiesce (rc->quiesce): no create, link,
 * unlink or rename meanwhile, so the counts stay true from the gathering to the changes.
 * What can still happen is an unlinked inode being freed by the daemon's worker; each change
 * is made under the inode's lock after checking that it is still the inode that was counted
 * (same mode, same link count), and skipped otherwise.  Each change is its own small
 * transaction that leaves the filesystem consistent: a count set (an inode going from 0
 * links to some also leaves its orphan list in the same transaction), or an inode linked into
 * /lost+found.  The counts' transactions are committed without waiting for the log; one
 * force after the last makes them all durable before the repair answers.  Nothing is changed
 * before all the counting is done, so an abort before the first change (pressure, cancel,
 * scratch) leaves the filesystem untouched.
 */
#include "repair_priv.h"

#include "byteorder.h"
#include "dir.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "journal.h"
#include "log.h"
#include "orphan.h"
#include "scrub_priv.h"
#include "trans.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/stat.h>

#define NL_POLL_EVERY  256u      /* directories or records between two abort checks */
#define NL_TRIES       8u        /* lock-order conflicts retried per change */
#define NL_TWICE_MAX   16u       /* directories named twice settled in one repair */

struct nl_ino {
	uint64_t ino;
	uint32_t nlink;
	uint32_t refs;
	uint32_t subdirs;
	uint16_t mode;
	uint16_t pad;
};

struct nl_edge {
	uint64_t child, parent;
};

enum { NL_SET = 1, NL_LOSTFOUND = 2 };

struct nl_fix {
	uint64_t ino;
	uint32_t was, want;
	uint16_t mode;
	uint16_t action;
	uint32_t pad;
};

struct nl {
	struct rep *r;
	struct mfs_xfarray *I, *E, *D, *F, *C;
	/* first pass */
	uint64_t ninodes, nentries, most_orphans;
	/* results */
	uint64_t set, linked, skipped;
	int orphans_bad;            /* a list could not be left cleanly: rebuild it after */
	uint64_t last_lsn;          /* journal sequence of the last count set */
	uint64_t cur_dir;
	unsigned seen;
	/* directories named by more than one entry (or the root, named by any) */
	uint64_t twice[NL_TWICE_MAX];
	unsigned ntwice;
	int second;                 /* the pass after the false entries were dropped */
	/* directories holding an entry that names another's subdirectory: rebuilt */
	uint64_t false_dirs[NL_TWICE_MAX];
	unsigned nfalse;
};

static int nl_poll(struct nl *st)
{
	return ++st->seen % NL_POLL_EVERY ? 0 : rep_poll(st->r);
}

/* ---- first pass: sizes ----------------------------------------------------------------- */

static int size_fn(void *priv, uint64_t ino, const struct mfs_dinode *d, int isfree)
{
	struct nl *st = priv;
	uint16_t mode = mfs_get16(d->mode);
	uint64_t size = mfs_get64(d->size);

	(void)ino;
	if (isfree || !mode)
		return 0;
	st->ninodes++;
	if (S_ISDIR(mode) && size > 8)
		st->nentries += (size - 8) / 12;
	return 0;
}

static int nl_size(struct nl *st)
{
	struct rep *r = st->r;
	int err = 0;

	for (uint32_t agno = 0; agno < r->fs->geo.agcount && !err; agno++) {
		uint64_t n = 0;

		err = rep_walk_inodes(r, agno, 0, size_fn, st);
		if (!err)
			err = rep_orphans_count(r, agno, &n);
		if (n > st->most_orphans)
			st->most_orphans = n;
		if (!err)
			err = rep_poll(r);
	}
	return err;
}

/* ---- gathering --------------------------------------------------------------------------- */

static int inode_fn(void *priv, uint64_t ino, const struct mfs_dinode *d, int isfree)
{
	struct nl *st = priv;
	struct nl_ino ni;
	int err;

	if (isfree || !mfs_get16(d->mode))
		return 0;
	memset(&ni, 0, sizeof(ni));
	ni.ino = ino;
	ni.mode = mfs_get16(d->mode);
	ni.nlink = mfs_get32(d->nlink);
	err = mfs_xfarray_append(st->I, &ni, NULL);
	return err ? rep_scratch_err(st->r, err, "gathering the inodes") : 0;
}

static int edge_fn(void *priv, const char *name, unsigned len, uint64_t ino, uint8_t ftype,
		   uint64_t next_cookie)
{
	struct nl *st = priv;
	struct nl_edge e = { ino, st->cur_dir };
	int err;

	(void)name;
	(void)len;
	(void)ftype;
	if (next_cookie <= MFS_DIR_COOKIE_DOTDOT || !ino)
		return 0;               /* "." and ".." */
	err = mfs_xfarray_append(st->E, &e, NULL);
	return err ? rep_scratch_err(st->r, err, "gathering the directory entries") : 0;
}

/* Every directory's entries, one edge each. */
static int gather_edges(struct nl *st)
{
	struct rep *r = st->r;
	uint64_t cursor = 0;
	struct nl_ino ni;
	int err;

	while ((err = mfs_xfarray_iter(st->I, &cursor, &ni, NULL)) == 1) {
		struct mfs_inode *dp;

		if (!S_ISDIR(ni.mode))
			continue;
		err = nl_poll(st);
		if (err)
			return err;
		err = mfs_iget_locked(r->fs, ni.ino, 0, 0, &dp);
		if (err == -ENOENT && ni.nlink == 0)
			continue;       /* removed, and freed since by the daemon's worker */
		if (err)
			return rep_fail(r, mfs_is_corruption(err) || err == -ENOENT ?
					-EFSCORRUPTED : err, "directory %llu cannot be read (%s): "
					"its entries cannot be counted; repair it first",
					(unsigned long long)ni.ino, scrub_errstr(err));
		st->cur_dir = dp->ino;
		err = mfs_dir_iterate(dp, 0, edge_fn, st);
		pthread_rwlock_unlock(&dp->lock);
		mfs_iput(dp);
		if (err && !r->rc->reason[0])
			err = rep_fail(r, mfs_is_corruption(err) ? -EFSCORRUPTED : err,
				       "directory %llu's entries cannot all be read (%s): repair "
				       "it first", (unsigned long long)ni.ino, scrub_errstr(err));
		if (err)
			return err;
	}
	return err < 0 ? rep_scratch_err(r, err, "reading the inodes back") : 0;
}

static int cmp_edge_child(const void *a, const void *b, void *priv)
{
	const struct nl_edge *x = a, *y = b;

	(void)priv;
	if (x->child != y->child)
		return x->child < y->child ? -1 : 1;
	return x->parent < y->parent ? -1 : x->parent > y->parent;
}

static int cmp_u64(const void *a, const void *b, void *priv)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	(void)priv;
	return x < y ? -1 : x > y;
}

/* ---- counting: two merges in inode order -------------------------------------------------- */

/*
 * A sorted array read one record ahead: the records of key k are consumed by nl_take(k).
 * Records of keys below k (an entry naming a free inode: the directory checker's) are
 * passed over.
 */
struct nl_stream {
	struct mfs_xfarray *a;
	uint64_t cursor;
	int have;                   /* 1: rec holds the next record; 0: the end */
	union {
		struct nl_edge e;
		uint64_t u;
	} rec;
};

static int nl_next(struct rep *r, struct nl_stream *s)
{
	int err = mfs_xfarray_iter(s->a, &s->cursor, &s->rec, NULL);

	if (err < 0)
		return rep_scratch_err(r, err, "reading the counted references");
	s->have = err;
	return 0;
}

static uint64_t nl_key(const struct nl_stream *s, int edges)
{
	return edges ? s->rec.e.child : s->rec.u;
}

/* 1: each inode's entries (refs); each entry naming a directory gives its parent a D. */
static int merge_refs(struct nl *st)
{
	struct rep *r = st->r;
	struct nl_stream es = { st->E, 0, 0, { { 0, 0 } } };
	uint64_t n = mfs_xfarray_count(st->I);
	struct nl_ino ni;
	int err = nl_next(r, &es);

	for (uint64_t i = 0; i < n && !err; i++) {
		err = mfs_xfarray_get(st->I, i, &ni);
		if (err)
			return rep_scratch_err(r, err, "reading the inodes back");
		while (!err && es.have && nl_key(&es, 1) < ni.ino)
			err = nl_next(r, &es);
		ni.refs = 0;
		while (!err && es.have && nl_key(&es, 1) == ni.ino) {
			ni.refs++;
			if (S_ISDIR(ni.mode)) {
				err = mfs_xfarray_append(st->D, &es.rec.e.parent, NULL);
				if (err)
					return rep_scratch_err(r, err, "gathering the subdirectories");
			}
			err = nl_next(r, &es);
		}
		if (!err && ni.refs) {
			err = mfs_xfarray_set(st->I, i, &ni);
			if (err)
				return rep_scratch_err(r, err, "recording the counts");
		}
		if (!err)
			err = nl_poll(st);
	}
	return err;
}

/* 2: each inode's subdirectories, and what its count must be: the changes, into F. */
static int merge_counts(struct nl *st)
{
	struct rep *r = st->r;
	struct nl_stream ds = { st->D, 0, 0, { { 0, 0 } } };
	uint64_t n = mfs_xfarray_count(st->I), root = r->fs->geo.rootino;
	struct nl_ino ni;
	int err = nl_next(r, &ds);

	for (uint64_t i = 0; i < n && !err; i++) {
		struct nl_fix f;
		uint64_t want;

		err = mfs_xfarray_get(st->I, i, &ni);
		if (err)
			return rep_scratch_err(r, err, "reading the inodes back");
		while (!err && ds.have && nl_key(&ds, 0) < ni.ino)
			err = nl_next(r, &ds);
		while (!err && ds.have && nl_key(&ds, 0) == ni.ino) {
			ni.subdirs++;
			err = nl_next(r, &ds);
		}
		if (err)
			break;
		memset(&f, 0, sizeof(f));
		f.ino = ni.ino;
		f.was = ni.nlink;
		f.mode = ni.mode;
		if (S_ISDIR(ni.mode)) {
			if (ni.refs > 1 || (ni.ino == root && ni.refs)) {
				/* named twice: settled by twice_settle(), or left as it is */
				if (st->ntwice < NL_TWICE_MAX)
					st->twice[st->ntwice++] = ni.ino;
				continue;
			}
			want = 2ull + ni.subdirs;
		} else {
			want = ni.refs;
		}
		if (want > MFS_LINK_MAX)
			return rep_fail(r, -EFSCORRUPTED, "inode %llu: %llu links counted, more "
					"than a link count holds", (unsigned long long)ni.ino,
					(unsigned long long)want);
		if (ni.refs || ni.ino == root) {
			f.action = ni.nlink != want ? NL_SET : 0;
		} else {
			/* Linked into /lost+found it will have that one entry; without links and
			 * without a name it is an orphan, left alone. */
			f.action = ni.nlink ? NL_LOSTFOUND : 0;
			if (!S_ISDIR(ni.mode))
				want = 1;
		}
		f.want = (uint32_t)want;
		if (f.action) {
			err = mfs_xfarray_append(st->F, &f, NULL);
			if (err)
				return rep_scratch_err(r, err, "recording the changes");
		}
		err = nl_poll(st);
	}
	return err;
}

/* ---- the changes ------------------------------------------------------------------------------- */

/*
 * Set one inode's count (ip locked exclusive, checked).  From 0 links, the inode also
 * leaves its orphan list in the same transaction; a list that cannot be walked is left
 * for the orphan rebuild afterwards (st->orphans_bad).
 */
static int set_count(struct nl *st, struct mfs_inode *ip, const struct nl_fix *f)
{
	struct rep *r = st->r;
	struct mfs_inode *pred = NULL;
	int err = 0, unlist = f->was == 0;

	for (unsigned tries = 0; tries < NL_TRIES; tries++) {
		struct mfs_trans *tp;
		uint64_t need = 0;

		if (ip->mode != f->mode || ip->nlink != f->was) {
			st->skipped++;  /* freed, or changed, while we waited for it */
			err = 0;
			break;
		}
		err = mfs_trans_alloc(r->fs, &tp);
		if (err)
			break;
		if (unlist) {
			err = mfs_orphan_remove(tp, NULL, ip, pred, &need);
			if (err == -ENOENT)
				err = 0;        /* not on a list: nothing to take off */
		}
		if (!err) {
			ip->nlink = f->want;
			err = mfs_inode_log(tp, ip);
		}
		if (!err) {
			uint64_t lsn = 0;

			/* Not waited for: the last one's force at the end covers them all. */
			err = mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, &lsn);
			if (!err) {
				if (lsn > st->last_lsn)
					st->last_lsn = lsn;
				st->set++;
				rep_changed(r, ip->ino);
				break;
			}
		} else {
			mfs_trans_cancel(tp);
		}
		mfs_inode_reload(ip);
		if (pred)
			mfs_inode_reload(pred);
		if (err == -EAGAIN && need) {
			mfs_orphan_unlock_pred(&pred);
			err = mfs_orphan_lock_pred(ip, need, &pred);
		}
		if (mfs_is_corruption(err) && unlist) {
			unlist = 0;             /* the list is damaged: rebuilt afterwards */
			st->orphans_bad = 1;
			err = 0;
			continue;
		}
		if (err && err != -EAGAIN && err != -EDEADLK)
			break;
	}
	mfs_orphan_unlock_pred(&pred);
	if (err)
		return rep_fail(r, err, "inode %llu: setting its link count from %u to %u: %s",
				(unsigned long long)f->ino, f->was, f->want, scrub_errstr(err));
	return 0;
}

static int apply(struct nl *st, int action)
{
	struct rep *r = st->r;
	uint64_t cursor = 0;
	struct nl_fix f;
	int err;

	while ((err = mfs_xfarray_iter(st->F, &cursor, &f, NULL)) == 1) {
		struct mfs_inode *ip;

		if (f.action != action)
			continue;
		err = mfs_iget(r->fs, f.ino, 0, &ip);
		if (err == -ENOENT) {
			st->skipped++;          /* freed meanwhile: nothing to count any more */
			continue;
		}
		if (err)
			return rep_fail(r, err, "inode %llu cannot be read: %s",
					(unsigned long long)f.ino, scrub_errstr(err));
		if (action == NL_SET) {
			pthread_rwlock_wrlock(&ip->lock);
			err = set_count(st, ip, &f);
			pthread_rwlock_unlock(&ip->lock);
			mfs_iput(ip);
		} else {
			int same;

			pthread_rwlock_rdlock(&ip->lock);
			same = ip->mode == f.mode && ip->nlink == f.was;
			pthread_rwlock_unlock(&ip->lock);
			mfs_iput(ip);
			if (!same) {
				st->skipped++;
				continue;
			}
			err = rep_lostfound_link(r, f.ino, f.want);
			if (err == -ENOENT) {
				st->skipped++;
				err = 0;
				r->rc->reason[0] = 0;
			} else if (!err) {
				st->linked++;
			}
		}
		if (err)
			return err;
	}
	return err < 0 ? rep_scratch_err(r, err, "reading the changes back") : 0;
}

/* ---- a directory named twice ------------------------------------------------------------- */

/*
 * A directory has one entry: the one in the directory its ".." names.  An entry elsewhere
 * naming it is damage (an entry's inode number changed into a subdirectory's, usually: the
 * subdirectory it named lost its only entry).  For each directory E names twice: when
 * exactly one of its entries is in its ".." directory, the directories holding the others
 * are rebuilt (repair_dir.c drops such an entry, and joins an orphaned subdirectory again
 * under the dropped name when there is one of each); an entry naming the root is always
 * false.  When none or several of the entries are in the ".." directory (two names of one
 * directory in its parent), which one is its own cannot be told: left as it is, and said.
 * Returns how many directories are to be rebuilt (st->false_dirs), or an error.
 */
static int twice_settle(struct nl *st)
{
	struct rep *r = st->r;
	uint64_t root = r->fs->geo.rootino, n = mfs_xfarray_count(st->E);
	struct nl_edge e;
	int err = 0;

	for (unsigned t = 0; t < st->ntwice && !err; t++) {
		uint64_t dir = st->twice[t], dotdot = 0, lo = 0, hi = n, own = 0, refs = 0;
		uint64_t other = 0;
		uint16_t mode;

		if (dir != root && rep_inode_peek(r->fs, dir, &mode, &dotdot))
			continue;
		/* its edges: E is sorted by child */
		while (lo < hi) {
			uint64_t mid = lo + (hi - lo) / 2;

			err = mfs_xfarray_get(st->E, mid, &e);
			if (err)
				return rep_scratch_err(r, err, "reading the entries back");
			if (e.child < dir)
				lo = mid + 1;
			else
				hi = mid;
		}
		for (uint64_t i = lo; i < n; i++) {
			err = mfs_xfarray_get(st->E, i, &e);
			if (err)
				return rep_scratch_err(r, err, "reading the entries back");
			if (e.child != dir)
				break;
			refs++;
			if (dir != root && e.parent == dotdot)
				own++;
			else if (!other)
				other = e.parent;
		}
		if (dir != root && own != 1) {
			rep_fail(r, 0, "directory %llu is named by %llu entries, %llu of them in "
				 "directory %llu its \"..\" names: which entry is its own cannot be "
				 "told; left as it is", (unsigned long long)dir,
				 (unsigned long long)refs, (unsigned long long)own,
				 (unsigned long long)dotdot);
			continue;
		}
		for (uint64_t i = lo; i < n; i++) {
			unsigned k;

			err = mfs_xfarray_get(st->E, i, &e);
			if (err)
				return rep_scratch_err(r, err, "reading the entries back");
			if (e.child != dir)
				break;
			if (dir != root && e.parent == dotdot)
				continue;
			for (k = 0; k < st->nfalse && st->false_dirs[k] != e.parent; k++)
				;
			if (k == st->nfalse && st->nfalse < NL_TWICE_MAX)
				st->false_dirs[st->nfalse++] = e.parent;
			mfs_log(MFS_LOG_WARN, "repair: link counts: directory %llu's entry naming "
				"directory %llu is not its own (%s): the directory is rebuilt",
				(unsigned long long)e.parent, (unsigned long long)dir,
				dir == root ? "an entry naming the root" : "its \"..\" names another");
		}
	}
	return err ? err : (int)st->nfalse;
}

/* Rebuild each directory holding a false entry (repair_dir.c, through the engine: its own
 * scratch in the same descriptor, its own check afterwards), inside this repair's quiesce. */
static int twice_drop(struct nl *st)
{
	struct rep *r = st->r;

	for (unsigned k = 0; k < st->nfalse; k++) {
		struct mfs_repair_ctx sub;
		int err = rep_nested(r, &sub, MFS_SCRUB_DIR, st->false_dirs[k]);

		if (err)
			return rep_fail(r, err, "directory %llu, holding an entry that names another's "
					"subdirectory, could not be rebuilt: %s",
					(unsigned long long)sub.ino, sub.reason);
	}
	return 0;
}

static int nl_run(struct nl *st)
{
	struct rep *r = st->r;
	int err;

	err = nl_size(st);
	if (!err) {
		const struct rep_array_plan plan[5] = {
			{ sizeof(struct nl_ino), st->ninodes + st->ninodes / 8 + 64 },
			{ sizeof(struct nl_edge), st->nentries + st->nentries / 8 + 64 },
			{ sizeof(uint64_t), st->nentries + st->nentries / 8 + 64 },
			{ sizeof(struct nl_fix), st->ninodes + st->ninodes / 8 + 64 },
			{ REP_ORPHAN_RECSIZE, st->most_orphans + st->most_orphans / 4 + 64 },
		};

		err = rep_reserve(r, plan, 5);
		if (!err)
			err = rep_hook(r, MFS_REPAIR_AT_RESERVED);
		if (!err)
			err = rep_array(r, plan[0].recsize, plan[0].max_nr, &st->I);
		if (!err)
			err = rep_array(r, plan[1].recsize, plan[1].max_nr, &st->E);
		if (!err)
			err = rep_array(r, plan[2].recsize, plan[2].max_nr, &st->D);
		if (!err)
			err = rep_array(r, plan[3].recsize, plan[3].max_nr, &st->F);
		if (!err)
			err = rep_array(r, plan[4].recsize, plan[4].max_nr, &st->C);
	}
	/* The inodes, AG by AG in inode order: I is sorted as gathered. */
	for (uint32_t agno = 0; !err && agno < r->fs->geo.agcount; agno++) {
		err = rep_walk_inodes(r, agno, 0, inode_fn, st);
		if (!err)
			err = rep_poll(r);
	}
	if (!err)
		err = gather_edges(st);
	if (!err)
		err = rep_hook(r, MFS_REPAIR_AT_GATHERED);
	if (!err)
		err = rep_sort(r, st->E, cmp_edge_child, "sorting the directory entries");
	if (!err)
		err = merge_refs(st);
	if (!err)
		err = rep_sort(r, st->D, cmp_u64, "sorting the subdirectories");
	if (!err)
		err = merge_counts(st);
	if (!err && st->ntwice && !st->second)
		err = twice_settle(st);     /* > 0: false entries to drop first */
	/* The last point where stopping leaves everything as it was. */
	if (err >= 0) {
		int e2 = rep_hook(r, MFS_REPAIR_AT_BUILT);

		if (!e2)
			e2 = rep_poll(r);
		if (e2)
			err = e2;
	}
	if (err > 0)
		return err;
	/* Counts first (the root's and /lost+found's among them), then the links into
	 * /lost+found, which add to the counts of the directories they change. */
	if (!err)
		err = apply(st, NL_SET);
	if (!err)
		err = apply(st, NL_LOSTFOUND);
	if (st->last_lsn && r->fs->log) {
		int ferr = mfs_journal_force_lsn(r->fs->log, st->last_lsn);

		if (ferr && !err)
			err = rep_fail(r, ferr, "making the new link counts durable: %s",
				       strerror(-ferr));
	}
	for (uint32_t agno = 0; !err && st->orphans_bad && agno < r->fs->geo.agcount; agno++) {
		uint64_t listed;

		err = rep_orphans_ag(r, agno, st->C, &listed);
	}
	return err;
}

int rep_nlinks(struct rep *r)
{
	struct mfs_repair_ctx *rc = r->rc;
	struct nl st;
	unsigned dropped = 0;
	int err;

	if (!r->fs->icache)
		return rep_fail(r, -EINVAL, "link counts are rebuilt with an inode cache");
	memset(&st, 0, sizeof(st));
	st.r = r;
	if (rc->quiesce) {
		err = rc->quiesce(rc->hook_arg, 1);
		if (err)
			return rep_fail(r, err, "namespace changes could not be held back: %s",
					strerror(-err));
	}
	err = nl_run(&st);
	if (err > 0) {
		dropped = st.nfalse;
		/* Directories named twice: the false entries dropped, then everything counted
		 * again (nothing else was changed yet). */
		rep_release(r);
		err = twice_drop(&st);
		if (!err) {
			memset(&st, 0, sizeof(st));
			st.r = r;
			st.second = 1;
			err = nl_run(&st);
		}
	}
	if (rc->quiesce)
		rc->quiesce(rc->hook_arg, 0);
	rc->records = st.set + st.linked + dropped;
	if (st.set || st.linked || st.skipped)
		mfs_log(MFS_LOG_INFO, "repair: link counts: %llu set, %llu inodes linked into "
			"/lost+found, %llu skipped (changed meanwhile)", (unsigned long long)st.set,
			(unsigned long long)st.linked, (unsigned long long)st.skipped);
	return err;
}
