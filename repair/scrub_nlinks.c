/*
 * scrub_nlinks.c — the link count checker: counted references against each inode's link
 * count, and reachability from the root.  It needs a stable namespace, so it runs between
 * ctx->quiesce(1) and ctx->quiesce(0) (the daemon holds new namespace changes back).
 *
 *   1. Every inode in use, with its mode and link count, from each AG's inode chunks (the
 *      committed cluster buffers, read under the AG lock).
 *   2. Every directory's entries (its lock shared): one edge parent -> child per entry, and
 *      the directory's "..".
 *   3. Counting: a file's links are the entries naming it; a directory's are the one entry
 *      naming it (a directory has exactly one), its "." and the ".." of each subdirectory:
 *      refs + 1 + subdirs (the root has no entry; its ".." is itself: 2 + subdirs).  A
 *      subdirectory's ".." names the directory that holds it.
 *   4. Reachability: breadth first from the root over the edges; an inode in use with
 *      links that is not reached is disconnected.  Inodes without links are the orphan
 *      list's.
 */
#include "byteorder.h"
#include "bcache.h"
#include "dir.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "mem.h"
#include "scrub_priv.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct nl_inode {
	uint64_t ino;
	uint32_t nlink;
	uint32_t refs;              /* entries naming it */
	uint32_t dir;               /* directories: its struct nl_dir in dirs; else NL_NODIR */
	uint16_t mode;
};

/* What only a directory has, kept aside: a million files' records are 24 bytes each, not
 * 40 (every page of them is a first touch, each a fault). */
#define NL_NODIR UINT32_MAX
struct nl_dir {
	uint64_t dotdot;            /* the stored parent */
	uint64_t holder;            /* the (last) directory seen naming it */
	uint32_t subdirs;           /* entries naming a directory */
};

struct nl_edge {
	uint64_t parent, child;
	uint64_t cidx;              /* the child's index in inodes (counting sets it; ~0: free) */
};

/* A parent's edges: edges[first] on, while their parent is this one. */
struct nl_run {
	uint64_t parent;
	size_t first;
};

struct nl_state {
	struct mfs_scrub_ctx *ctx;
	struct scrub_recs inodes;   /* struct nl_inode, sorted by ino */
	struct scrub_recs dirs;     /* struct nl_dir, of the directories among them */
	struct scrub_recs edges;    /* struct nl_edge, sorted by parent */
	struct scrub_recs groups;   /* struct nl_group: the index of inodes (nl_find) */
	size_t finger[2];           /* groups nl_find found last (a directory's children lie
				       in one or two groups: they are looked up in turn) */
	uint64_t cur_dir;
};

/*
 * Finding an inode's record: inodes[] is sorted by number; each run of it within one
 * 64-inode group (ino / 64) is a struct nl_group — the group, where its run starts, and
 * which of its 64 inodes are there — so a lookup is a binary search of the groups (some
 * 16k at a million inodes: they stay in the cache) and a population count, instead of a
 * binary search of the million records.
 */
struct nl_group {
	uint64_t key;               /* ino / 64 */
	uint64_t present;           /* bit k: inode key * 64 + k has a record */
	size_t first;               /* its first record */
};

static int cmp_ino(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static int nl_index(struct nl_state *st)
{
	struct nl_group g = { 0, 0, 0 };

	scrub_recs_free(&st->groups);
	scrub_recs_init(&st->groups, sizeof(struct nl_group));
	/* In order as collected (chunks in AG and inode order); anything else is sorted. */
	for (size_t i = 1; i < st->inodes.n; i++)
		if (((const struct nl_inode *)scrub_rec(&st->inodes, i - 1))->ino >=
		    ((const struct nl_inode *)scrub_rec(&st->inodes, i))->ino) {
			qsort(st->inodes.v, st->inodes.n, st->inodes.len, cmp_ino);
			break;
		}
	for (size_t i = 0; i < st->inodes.n; i++) {
		uint64_t ino = ((const struct nl_inode *)scrub_rec(&st->inodes, i))->ino;

		if (!i || ino / 64 != g.key) {
			if (i && scrub_recs_add(&st->groups, &g))
				return -ENOMEM;
			g.key = ino / 64;
			g.present = 0;
			g.first = i;
		}
		g.present |= 1ull << (ino % 64);
	}
	return st->inodes.n ? scrub_recs_add(&st->groups, &g) : 0;
}

static struct nl_inode *nl_find(struct nl_state *st, uint64_t ino)
{
	const struct nl_group *g = (const struct nl_group *)(const void *)st->groups.v;
	size_t lo = 0, hi = st->groups.n;
	uint64_t key = ino / 64, bit = 1ull << (ino % 64);
	struct nl_inode *n;

	if (st->finger[0] < hi && g[st->finger[0]].key == key) {
		lo = st->finger[0];
	} else if (st->finger[1] < hi && g[st->finger[1]].key == key) {
		lo = st->finger[1];
	} else {
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;

			if (g[mid].key < key)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == st->groups.n || g[lo].key != key)
			return NULL;
	}
	if (st->finger[0] != lo) {
		st->finger[1] = st->finger[0];
		st->finger[0] = lo;
	}
	if (!(g[lo].present & bit))
		return NULL;
	n = (struct nl_inode *)(void *)st->inodes.v +
	    g[lo].first + (size_t)__builtin_popcountll(g[lo].present & (bit - 1));
	return n->ino == ino ? n : NULL;        /* (a number listed twice) */
}

/* ni's directory record; NULL for an inode that is no directory (nl_add gives every
 * directory one). */
static struct nl_dir *nl_dir_of(struct nl_state *st, const struct nl_inode *ni)
{
	if (ni->dir == NL_NODIR || ni->dir >= st->dirs.n)
		return NULL;
	return (struct nl_dir *)(void *)st->dirs.v + ni->dir;
}

static int nl_add(struct nl_state *st, uint64_t ino, uint16_t mode, uint32_t nlink)
{
	struct nl_inode ni;
	int err;

	memset(&ni, 0, sizeof(ni));
	ni.ino = ino;
	ni.mode = mode;
	ni.nlink = nlink;
	ni.dir = NL_NODIR;
	if (S_ISDIR(mode)) {
		struct nl_dir nd;

		if (st->dirs.n >= NL_NODIR)
			return -ENOMEM;
		memset(&nd, 0, sizeof(nd));
		ni.dir = (uint32_t)st->dirs.n;
		err = scrub_recs_add(&st->dirs, &nd);
		if (err)
			return err;
	}
	return scrub_recs_add(&st->inodes, &ni);
}

static int inode_fn(void *priv, uint64_t ino, const struct mfs_dinode *d, int isfree)
{
	if (isfree || !mfs_get16(d->mode))
		return 0;       /* a mismatch with the mask is the INOBT checker's */
	return nl_add(priv, ino, mfs_get16(d->mode), mfs_get32(d->nlink));
}

static int census_inode_fn(void *priv, uint64_t ino, const struct scrub_census_ino *ci)
{
	if ((ci->flags & SCRUB_CI_FREE) || !ci->mode)
		return 0;
	return nl_add(priv, ino, ci->mode, ci->nlink);
}

/* 1: the inodes in use of AG agno (AG locked by the caller). */
static int collect_ag(struct nl_state *st, uint32_t agno)
{
	struct mfs_scrub_ctx *ctx = st->ctx;
	struct scrub_ag sa;
	uint64_t fsb = 0;
	int err;

	/* The census's records, when current, are the inodes' committed state now. */
	err = scrub_census_walk(ctx, agno, 0, census_inode_fn, st, NULL);
	if (err != -EAGAIN)
		return err;

	err = scrub_ag_scan(ctx, agno, SCRUB_WANT_INO, &sa);
	if (!err && !(sa.have & SCRUB_WANT_INO))
		scrub_report(ctx, MFS_SCRUB_OFLAG_INCOMPLETE, "link counts: AG %u's inodes are "
			     "not counted, its inode btree is unreadable", agno);
	for (size_t i = 0; !err && (sa.have & SCRUB_WANT_INO) && i < sa.recs[MFS_BT_INO].n; i++)
		err = scrub_chunk_walk(ctx, agno, scrub_rec(&sa.recs[MFS_BT_INO], i), inode_fn, st,
				       &fsb);
	scrub_ag_release(&sa);
	if (mfs_is_corruption(err)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_INCOMPLETE, "link counts: AG %u's inodes are "
			     "not all counted: block %llu: %s", agno, (unsigned long long)fsb,
			     scrub_errstr(err));
		err = 0;
	}
	return err;
}

static int kid_fn(void *priv, uint64_t ino)
{
	struct nl_state *st = priv;
	struct nl_edge e = { st->cur_dir, ino, ~0ull };

	return scrub_recs_add(&st->edges, &e);
}

static int edge_fn(void *priv, const char *name, unsigned len, uint64_t ino, uint8_t ftype,
		   uint64_t next_cookie)
{
	if (next_cookie <= 2)
		return 0;               /* "." and ".." */
	return kid_fn(priv, ino);
}

/* 2: the entries of every directory. */
static int collect_edges(struct nl_state *st)
{
	struct mfs_scrub_ctx *ctx = st->ctx;
	int err = 0;

	for (size_t i = 0; i < st->inodes.n && !err; i++) {
		struct nl_inode *ni = (struct nl_inode *)(st->inodes.v + i * st->inodes.len);
		struct nl_dir *nd = nl_dir_of(st, ni);
		struct mfs_inode *dp;

		if (!S_ISDIR(ni->mode) || !nd)
			continue;
		err = scrub_cancelled(ctx);
		if (err)
			break;
		/* As the directory checker read them, when nothing changed since. */
		st->cur_dir = ni->ino;
		err = scrub_census_dir(ctx, ni->ino, &nd->dotdot, kid_fn, st);
		if (err != -EAGAIN) {
			if (err)
				break;
			continue;
		}
		err = mfs_iget_locked(ctx->fs, ni->ino, 0, 0, &dp);
		if (err == -ENOENT && ni->nlink == 0) {
			err = 0;        /* removed, and freed since by the daemon's worker (not a
					 * namespace change: quiesce does not hold it back) */
			continue;
		}
		if (err == -ENOENT || mfs_is_corruption(err)) {
			scrub_report(ctx, MFS_SCRUB_OFLAG_INCOMPLETE, "link counts: directory %llu "
				     "cannot be read: %s", (unsigned long long)ni->ino,
				     scrub_errstr(err));
			err = 0;
			continue;
		}
		if (err)
			break;
		st->cur_dir = dp->ino;
		err = mfs_dir_get_parent(dp, &nd->dotdot);
		if (!err)
			err = mfs_dir_iterate(dp, 0, edge_fn, st);
		pthread_rwlock_unlock(&dp->lock);
		mfs_iput(dp);
		if (mfs_is_corruption(err)) {
			scrub_report(ctx, MFS_SCRUB_OFLAG_INCOMPLETE, "link counts: directory %llu's "
				     "entries cannot all be read: %s", (unsigned long long)ni->ino,
				     scrub_errstr(err));
			err = 0;
		}
	}
	return err;
}

static int cmp_edge(const void *a, const void *b)
{
	const struct nl_edge *x = a, *y = b;

	if (x->parent != y->parent)
		return x->parent < y->parent ? -1 : 1;
	return x->child < y->child ? -1 : x->child > y->child;
}

/* 3 and 4. */
static int count_and_walk(struct nl_state *st)
{
	struct mfs_scrub_ctx *ctx = st->ctx;
	uint64_t root = ctx->fs->geo.rootino;
	struct scrub_recs queue, runs;
	struct nl_inode *ni, *p = NULL;
	/* Two bitmaps by index in inodes: reached from the root, and is a directory named by
	 * an entry (the walk below tests these, not the records: a million records are 24 MiB,
	 * the bitmaps 256 KiB). */
	size_t words = st->inodes.n / 64 + 1;
	uint64_t *reached, *isdir;
	int err;

	scrub_recs_init(&runs, sizeof(struct nl_run));
	err = nl_index(st);
	if (err)
		return err;
	reached = mfs_calloc(2 * words, sizeof(*reached));
	if (!reached)
		return -ENOMEM;
	isdir = reached + words;

	for (size_t i = 0; i < st->edges.n; i++) {
		struct nl_edge *e = (struct nl_edge *)(st->edges.v + i * st->edges.len);
		struct nl_inode *c = nl_find(st, e->child);

		/* A directory's edges were collected together: one parent lookup for them. */
		if (!p || p->ino != e->parent)
			p = nl_find(st, e->parent);
		if (!c || !p)
			continue;       /* an entry naming a free inode: the DIR checker's */
		e->cidx = (uint64_t)(c - (struct nl_inode *)st->inodes.v);
		c->refs++;
		if (S_ISDIR(c->mode)) {
			struct nl_dir *cd = nl_dir_of(st, c), *pd = nl_dir_of(st, p);

			if (cd)
				cd->holder = e->parent;
			if (pd)
				pd->subdirs++;
			isdir[e->cidx / 64] |= 1ull << (e->cidx % 64);
		}
	}
	/* The walk below wants each parent's edges together, parents in order: as collected
	 * (directories in inode order), unless something else is found. */
	for (size_t i = 1; i < st->edges.n; i++)
		if (((const struct nl_edge *)scrub_rec(&st->edges, i - 1))->parent >
		    ((const struct nl_edge *)scrub_rec(&st->edges, i))->parent) {
			qsort(st->edges.v, st->edges.n, sizeof(struct nl_edge), cmp_edge);
			break;
		}
	/* Where each parent's edges start (a binary search of these few instead of every
	 * edge, for each directory the walk takes). */
	for (size_t i = 0; i < st->edges.n && !err; i++) {
		const struct nl_edge *e = scrub_rec(&st->edges, i);
		struct nl_run run = { e->parent, i };

		if (!i || ((const struct nl_edge *)scrub_rec(&st->edges, i - 1))->parent != e->parent)
			err = scrub_recs_add(&runs, &run);
	}
	if (err) {
		scrub_recs_free(&runs);
		free(reached);
		return err;
	}
	/* Breadth first from the root, over directories. */
	scrub_recs_init(&queue, sizeof(uint64_t));
	ni = nl_find(st, root);
	if (!ni || !S_ISDIR(ni->mode)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "link counts: the root directory %llu "
			     "is not an allocated directory", (unsigned long long)root);
	} else {
		size_t k = (size_t)(ni - (struct nl_inode *)(void *)st->inodes.v);

		reached[k / 64] |= 1ull << (k % 64);
		err = scrub_recs_add(&queue, &root);
	}
	for (size_t q = 0; q < queue.n && !err; q++) {
		uint64_t dir = *(const uint64_t *)scrub_rec(&queue, q);
		size_t lo = 0, hi = runs.n;

		while (lo < hi) {       /* this parent's run of edges (sorted by parent) */
			size_t mid = lo + (hi - lo) / 2;

			if (((const struct nl_run *)scrub_rec(&runs, mid))->parent < dir)
				lo = mid + 1;
			else
				hi = mid;
		}
		if (lo == runs.n || ((const struct nl_run *)scrub_rec(&runs, lo))->parent != dir)
			continue;       /* no entries */
		for (lo = ((const struct nl_run *)scrub_rec(&runs, lo))->first;
		     lo < st->edges.n && !err; lo++) {
			const struct nl_edge *e = scrub_rec(&st->edges, lo);
			uint64_t bit = 1ull << (e->cidx % 64);

			if (e->parent != dir)
				break;
			if (e->cidx == ~0ull || (reached[e->cidx / 64] & bit))
				continue;
			reached[e->cidx / 64] |= bit;
			if (isdir[e->cidx / 64] & bit)
				err = scrub_recs_add(&queue, &e->child);
		}
	}
	scrub_recs_free(&queue);
	scrub_recs_free(&runs);
	if (err) {
		free(reached);
		return err;
	}
	for (size_t i = 0; i < st->inodes.n; i++) {
		const struct nl_inode *n = scrub_rec(&st->inodes, i);
		unsigned long long ino = (unsigned long long)n->ino;
		uint64_t want;

		if (S_ISDIR(n->mode)) {
			static const struct nl_dir none;
			const struct nl_dir *nd = nl_dir_of(st, n) ? nl_dir_of(st, n) : &none;

			if (n->ino == root)
				want = n->refs ? 0 : 2ull + nd->subdirs;
			else
				want = n->refs ? (uint64_t)n->refs + 1 + nd->subdirs : 0;
			if (n->refs > 1 || (n->ino == root && n->refs))
				scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "directory %llu: named by "
					     "%u entries, a directory has one (the root none)", ino,
					     n->refs);
			else if (n->refs == 1 && nd->dotdot != nd->holder)
				scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "directory %llu: parent "
					     "(\"..\") is %llu, it is held by directory %llu", ino,
					     (unsigned long long)nd->dotdot,
					     (unsigned long long)nd->holder);
		} else {
			want = n->refs;
		}
		if (n->nlink && n->nlink != want && !(S_ISDIR(n->mode) && n->refs > 1))
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "inode %llu: link count %u, "
				     "counted %llu", ino, n->nlink, (unsigned long long)want);
		else if (!n->nlink && n->refs)
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "inode %llu: link count 0, but "
				     "%u entries name it", ino, n->refs);
		if (n->nlink && !(reached[i / 64] >> (i % 64) & 1))
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "inode %llu: %u links but not "
				     "reachable from the root directory", ino, n->nlink);
	}
	free(reached);
	return 0;
}

/* 1 and 2 for every AG and directory, then 3 and 4. */
static int nlinks_pass(struct nl_state *st)
{
	struct mfs_scrub_ctx *ctx = st->ctx;
	int err = 0;

	for (uint32_t agno = 0; agno < ctx->fs->geo.agcount && !err; agno++) {
		err = scrub_cancelled(ctx);
		if (err)
			break;
		scrub_ag_lock(ctx->fs, agno);
		err = collect_ag(st, agno);
		scrub_ag_unlock(ctx->fs, agno);
	}
	/* Chunks come in AG then inode order: already sorted by inode number. */
	if (!err)
		err = collect_edges(st);
	return err;
}

int scrub_nlinks(struct mfs_scrub_ctx *ctx)
{
	struct mfs_scrub_ctx exact = *ctx;
	struct nl_state st;
	uint64_t seq;
	int err = 0, quiesced = 0;

	if (!ctx->fs->icache)
		return -EINVAL;
	memset(&st, 0, sizeof(st));
	st.ctx = ctx;
	scrub_recs_init(&st.inodes, sizeof(struct nl_inode));
	scrub_recs_init(&st.dirs, sizeof(struct nl_dir));
	scrub_recs_init(&st.edges, sizeof(struct nl_edge));
	scrub_recs_init(&st.groups, sizeof(struct nl_group));
	if (ctx->quiesce) {
		err = ctx->quiesce(ctx->hook_arg, 1);
		if (err)
			return err;
		quiesced = 1;
	}
	seq = mfs_fs_changes(ctx->fs);
	err = nlinks_pass(&st);
	/* Whatever came from the census was the committed state at its reading; with the
	 * count unchanged since before the first, all of it is one state (the one the locked
	 * reads saw too).  Otherwise everything is read again without it. */
	if (!err && ctx->census && !scrub_census_current(ctx, seq)) {
		exact.census = NULL;
		st.ctx = &exact;
		st.inodes.n = st.edges.n = st.dirs.n = 0;
		err = nlinks_pass(&st);
	}
	if (!err)
		err = count_and_walk(&st);
	if (quiesced)
		ctx->quiesce(ctx->hook_arg, 0);
	scrub_recs_free(&st.inodes);
	scrub_recs_free(&st.dirs);
	scrub_recs_free(&st.edges);
	scrub_recs_free(&st.groups);
	if (exact.oflags)
		ctx->oflags |= exact.oflags;
	return err;
}
