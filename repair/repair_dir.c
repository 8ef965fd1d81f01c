/*
 * repair_dir.c — the directory rebuilder (MFS_SCRUB_DIR): a directory's names rebuilt
 * online from what survives of them, in one transaction.
 *
 *   0. entries naming a directory whose mode says regular file: that child's inode record
 *      repaired first (repair_inode.c tells its type from its data fork and its entries),
 *      so that step 2 keeps the entry when the mode was the damage;
 *   1. take the directory (its lock exclusive until the end: lookups in it wait, the rest of
 *      the filesystem keeps serving); count, then gather from the reverse map, the blocks
 *      of its name btree — every block, also those a damaged node no longer reaches — and
 *      of its attribute fork (never from nblocks, which may be the damage);
 *   2. salvage: the inline entries up to the first that does not decode, and every record
 *      of every name-btree block that still verifies as a leaf of this directory (raw
 *      records into a scratch array, sorted by key, heads joined with their continuations);
 *      an entry is kept when its name is storable, its inode allocated (committed on-disk
 *      copy) with the entry's file type, and, for a subdirectory, its ".." is this
 *      directory or no directory at all (else the entry would be a second link to a
 *      directory that lives elsewhere).  Kept entries go to a scratch array of (hash, seq,
 *      inode, type, name cookie), their names to an xblob, both in the client's descriptor;
 *   3. "..": the stored parent when it is an allocated directory holding an entry for this
 *      one; else the directory found holding such an entry (every directory searched);
 *      else the root.  The root's is itself;
 *   4. when entries were lost, subdirectories whose ".." is this directory but which no
 *      kept entry names are orphans: one orphan and one dropped subdirectory entry (its
 *      inode number damaged) are joined again under that name; the others are left to the
 *      link-count rebuilder (lost+found), and named in the log;
 *   5. sort by (hash, old seq); one transaction frees the old name-btree blocks, makes the
 *      fork an empty inline directory with the chosen "..", adds every entry in that order
 *      (lib/dir.c: inline while they fit, else a new name btree in new blocks), sets the
 *      block count (attribute-fork blocks + the new tree's), logs the inode and commits.
 *
 * Readdir cookies (hash << 24 | seq, + 3) survive for every entry whose seq is the lowest
 * of its hash chain in the rebuilt directory, i.e. every entry but later members of a hash
 * collision chain.  Link counts are not changed here: the NLINKS checker compares them.
 */
#include "repair_dirwalk.h"
#include "repair_priv.h"
#include "scrub_priv.h"

#include "ag.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "dir.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "mem.h"
#include "trans.h"
#include "verify.h"
#include "xblob.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SEQ_UNKNOWN     (MFS_DIR_SEQ_MAX + 1u)  /* the key did not match the name */
#define MAX_ORPHANS     1024u                   /* subdirectories tracked for step 4 */
#define MAX_DROPPED     64u                     /* dropped subdirectory names tracked */
#define LOCK_TRIES      200u                    /* tries for another directory's lock */
#define NAME_SLOT_BYTES 128u                    /* xblob bytes per name record, at most */

/* One kept entry (scratch record, never all zero: the name cookie is not 0). */
struct dent {
	uint32_t hash;
	uint32_t seq;
	uint64_t ino;
	uint64_t name;              /* xblob cookie */
	uint8_t ftype, namelen;
	uint8_t pad[6];
};

struct dropped {
	uint8_t len;
	char name[MFS_NAME_MAX];
};

struct dirrep {
	struct rep *r;
	struct mfs_inode *dp;
	struct rep_iscratch s;      /* old extents, raw records, kept entries, names */
	uint64_t kept, lost, unreadable;
	uint64_t parent;            /* the ".." chosen */
	int busy_skipped;           /* a candidate parent's lock could not be had */
	uint64_t orph[MAX_ORPHANS]; /* subdirectories whose ".." is this directory */
	unsigned norph;
	int orph_overflow;
	struct dropped drop[MAX_DROPPED];   /* dropped entries of type directory */
	unsigned ndrop;
};

static unsigned long long ULL(uint64_t v)
{
	return (unsigned long long)v;
}

static uint32_t fork_size(const struct mfs_inode *ip)
{
	return ip->forkoff ? (uint32_t)ip->forkoff * 8u : ip->litsize;
}

static int name_ok(const uint8_t *name, unsigned len)
{
	if (len == 0 || len > MFS_NAME_MAX || (len == 1 && name[0] == '.') ||
	    (len == 2 && name[0] == '.' && name[1] == '.'))
		return 0;
	for (unsigned i = 0; i < len; i++)
		if (name[i] == '/' || name[i] == 0)
			return 0;
	return 1;
}

static unsigned parts_for(unsigned namelen)
{
	if (namelen <= MFS_DIR_HEAD_NAME)
		return 1;
	return 1 + (namelen - MFS_DIR_HEAD_NAME + MFS_DIR_CONT_NAME - 1) / MFS_DIR_CONT_NAME;
}

static int want_names(uint64_t off)
{
	return !(off & MFS_RMAP_ATTR_FORK) && (off & MFS_RMAP_BMBT_BLOCK);
}

/* ---- step 2: one candidate entry -------------------------------------------------------- */
static void note_dropped_dir(struct dirrep *d, const uint8_t *name, unsigned len)
{
	if (d->ndrop < MAX_DROPPED) {
		d->drop[d->ndrop].len = (uint8_t)len;
		memcpy(d->drop[d->ndrop].name, name, len);
	}
	d->ndrop++;
}

/* Keep or drop one entry found in the old storage (key_hash/key_seq from its key, when it
 * had one).  0, or a scratch / operational error. */
static int consider(struct dirrep *d, const uint8_t *name, unsigned len, uint64_t ino,
		    uint8_t ftype, int have_key, uint32_t key_hash, uint32_t key_seq)
{
	struct mfs_inode *dp = d->dp;
	struct mfs_fs *fs = dp->fs;
	struct dent e;
	uint64_t cparent = 0, pp = 0;
	uint16_t mode = 0, pmode = 0;
	int err;

	if (!name_ok(name, len)) {
		d->lost++;
		return 0;
	}
	err = ino == dp->ino ? -EINVAL : rep_inode_peek(fs, ino, &mode, &cparent);
	if (err == -EINVAL || err == -ENOENT || mfs_is_corruption(err) ||
	    (!err && IFTODT(mode) != ftype)) {
		if (ftype == DT_DIR)
			note_dropped_dir(d, name, len);
		d->lost++;
		return 0;
	}
	if (err)
		return rep_fail(d->r, err, "directory %llu: reading inode %llu: %s", ULL(dp->ino),
				ULL(ino), strerror(-err));
	/* A subdirectory whose ".." names another, real directory lives there: this entry's
	 * inode number is the damage (it named an orphan of ours, maybe: step 4). */
	if (S_ISDIR(mode) && cparent != dp->ino && cparent != 0 &&
	    rep_inode_peek(fs, cparent, &pmode, &pp) == 0 && S_ISDIR(pmode)) {
		note_dropped_dir(d, name, len);
		d->lost++;
		return 0;
	}
	memset(&e, 0, sizeof(e));
	e.hash = mfs_dir_hash(fs->geo.uuid, (const char *)name, len);
	e.seq = have_key && key_hash == e.hash ? key_seq : SEQ_UNKNOWN;
	e.ino = ino;
	e.ftype = ftype;
	e.namelen = (uint8_t)len;
	err = mfs_xblob_store(d->s.blob, name, len, &e.name);
	if (!err)
		err = mfs_xfarray_append(d->s.keep, &e, NULL);
	if (err)
		return rep_scratch_err(d->r, err, "storing a salvaged entry");
	d->kept++;
	return 0;
}

/* ---- step 2: the inline entries ---------------------------------------------------------- */
static int salvage_local(struct dirrep *d)
{
	struct mfs_inode *dp = d->dp;
	uint32_t end = dp->size < fork_size(dp) ? (uint32_t)dp->size : fork_size(dp), off;
	int err = 0;

	for (off = MFS_DIR_LOCAL_HDR; off + sizeof(struct mfs_dir_lent) <= end && !err; ) {
		const uint8_t *p = dp->lit + off;
		unsigned len = p[9];
		uint64_t ino;

		if (len == 0 || off + sizeof(struct mfs_dir_lent) + len > end) {
			d->lost++;          /* the rest cannot be decoded */
			break;
		}
		memcpy(&ino, p, 8);
		err = consider(d, p + sizeof(struct mfs_dir_lent), len, mfs_get64(ino), p[8], 0, 0,
			       0);
		off += (uint32_t)sizeof(struct mfs_dir_lent) + len;
	}
	if (!err && off < end)
		d->lost++;
	return err;
}

/* ---- step 2: the name-btree leaves -------------------------------------------------------- */
/* Join heads and continuations (records sorted by key) into entries. */
static int salvage_btree(struct dirrep *d)
{
	uint8_t rec[MFS_DIR_REC_SIZE], name[MFS_NAME_MAX];
	struct mfs_dir_rec head;
	unsigned parts = 0, next = 0;
	uint64_t cursor = 0, key0 = 0;
	int pending = 0, err;

	err = rep_inode_leaves(d->r, d->dp, d->s.old, want_names, MFS_DIRBT_MAGIC, MFS_DIR_REC_SIZE,
			       "directory name btree", d->s.raw, &d->unreadable);
	if (!err)
		err = rep_sort(d->r, d->s.raw, rep_cmp_le64, "sorting name records");
	if (err)
		return err;
	while ((err = mfs_xfarray_iter(d->s.raw, &cursor, rec, NULL)) == 1) {
		uint64_t key;

		memcpy(&key, rec, 8);
		key = mfs_get64(key);
		if ((key & 0xff) == 0) {
			if (pending)
				d->lost++;          /* a name that lost its continuation */
			memcpy(&head, rec, sizeof(head));
			pending = head.namelen != 0;
			if (!pending) {
				d->lost++;
				continue;
			}
			key0 = key;
			parts = parts_for(head.namelen);
			next = 1;
			memcpy(name, head.name, head.namelen < MFS_DIR_HEAD_NAME ? head.namelen
									   : MFS_DIR_HEAD_NAME);
		} else if (pending && (key & ~0xffull) == key0 && (key & 0xff) == next) {
			unsigned off = MFS_DIR_HEAD_NAME + (next - 1) * MFS_DIR_CONT_NAME;
			unsigned n = head.namelen - off < MFS_DIR_CONT_NAME ? head.namelen - off
									     : MFS_DIR_CONT_NAME;

			memcpy(name + off, rec + 8, n);
			next++;
		} else {
			if (pending)
				d->lost++;
			pending = 0;
			continue;           /* a continuation of nothing */
		}
		if (pending && next == parts) {
			pending = 0;
			err = consider(d, name, head.namelen, mfs_get64(head.ino), head.ftype, 1,
				       (uint32_t)(key0 >> 32), (uint32_t)(key0 >> 8) & MFS_DIR_SEQ_MAX);
			if (err)
				return err;
		}
	}
	if (err < 0)
		return rep_scratch_err(d->r, err, "reading name records back");
	if (pending)
		d->lost++;
	return 0;
}

/* ---- step 3: ".." ----------------------------------------------------------------------- */
/*
 * Does directory pino hold an entry naming this directory?  1 yes, 0 no, -EAGAIN when its
 * lock could not be had, or an error.  Its lock is only tried, whatever its number, never
 * waited for while ours is held: a lower-numbered one by the lock order (an rmdir of this
 * directory holds its parent and waits for ours), a higher-numbered one because a rename
 * holding it may be walking ".." up through ours (fs/namei.c is_under takes those shared
 * locks as it goes, under the rename lock: seen deadlocked in t_torture, this waiting for
 * the parent and the rename for this directory).  That goes for mfs_iget too, which reads
 * the mode under the shared lock (and reloads a stale copy under the exclusive one):
 * MFS_IGET_NOWAIT, its -EDEADLK a busy lock like the other.
 */
static int parent_holds(struct dirrep *d, uint64_t pino)
{
	struct mfs_inode *pp;
	struct rep_names h;
	int err;
	unsigned tries = 0;

	for (;;) {
		err = mfs_iget(d->dp->fs, pino, MFS_IGET_UNTRUSTED | MFS_IGET_NOWAIT, &pp);
		if (err == -ENOENT || err == -EINVAL || mfs_is_corruption(err))
			return 0;
		if (!err && !pthread_rwlock_tryrdlock(&pp->lock))
			break;
		if (!err)
			mfs_iput(pp);
		else if (err != -EDEADLK)
			return err;
		if (++tries >= LOCK_TRIES)
			return -EAGAIN;
		sched_yield();
	}
	memset(&h, 0, sizeof(h));
	err = rep_dir_names(pp, d->dp->ino, &h);
	if (mfs_is_corruption(err))
		err = 0;                    /* a damaged parent is its own repair's */
	pthread_rwlock_unlock(&pp->lock);
	mfs_iput(pp);
	return err ? err : h.n > 0;
}

static int find_parent_fn(void *priv, uint64_t ino, uint64_t parent)
{
	struct dirrep *d = priv;
	int err;

	(void)parent;
	if (ino == d->dp->ino)
		return 0;
	err = parent_holds(d, ino);
	if (err == 1) {
		d->parent = ino;
		return 1;               /* found: stop */
	}
	if (err == -EAGAIN)
		d->busy_skipped = 1;
	return err == -EAGAIN ? 0 : err;
}

static int orphan_fn(void *priv, uint64_t ino, uint64_t parent)
{
	struct dirrep *d = priv;

	if (parent != d->dp->ino || ino == d->dp->ino)
		return 0;
	if (d->norph < MAX_ORPHANS)
		d->orph[d->norph++] = ino;
	else
		d->orph_overflow = 1;
	return 0;
}

static int choose_parent(struct dirrep *d, uint64_t stored)
{
	struct mfs_inode *dp = d->dp;
	uint64_t root = dp->fs->geo.rootino, pp;
	uint16_t mode;
	int err;

	if (dp->ino == root || dp->nlink == 0) {
		/* An unlinked directory (being freed) keeps what it has, if anything. */
		d->parent = dp->ino == root ? root : stored && stored != dp->ino ? stored : root;
		return 0;
	}
	if (stored && stored != dp->ino && rep_inode_peek(dp->fs, stored, &mode, &pp) == 0 &&
	    S_ISDIR(mode)) {
		err = parent_holds(d, stored);
		if (err == 1 || err == -EAGAIN) {
			d->parent = stored;     /* unverifiable while busy: trust it */
			return 0;
		}
		if (err < 0)
			return rep_fail(d->r, err, "directory %llu: reading its parent %llu: %s",
					ULL(dp->ino), ULL(stored), strerror(-err));
	}
	d->parent = 0;
	err = rep_walk_dirs(d->r, find_parent_fn, d);
	if (err)
		return err;
	if (!d->parent && d->busy_skipped)
		return rep_fail(d->r, -EAGAIN, "directory %llu: a directory that may hold its entry "
				"was busy: nothing changed, try again", ULL(dp->ino));
	if (!d->parent) {
		mfs_log(MFS_LOG_WARN, "directory %llu: no directory holds an entry for it; its "
			".. is now the root", ULL(dp->ino));
		d->parent = root;
	}
	return 0;
}

/* ---- step 4: subdirectories that lost their entry ------------------------------------------ */
static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Drop from d->orph the subdirectories a kept entry names; leave the orphans. */
static int find_orphans(struct dirrep *d)
{
	uint64_t cursor = 0, keep = 0;
	struct dent e;
	int err;

	d->norph = 0;
	err = rep_walk_dirs(d->r, orphan_fn, d);
	if (err || !d->norph)
		return err;
	qsort(d->orph, d->norph, sizeof(d->orph[0]), cmp_u64);
	while ((err = mfs_xfarray_iter(d->s.keep, &cursor, &e, NULL)) == 1) {
		uint64_t *hit;

		if (e.ftype != DT_DIR)
			continue;
		hit = bsearch(&e.ino, d->orph, d->norph, sizeof(d->orph[0]), cmp_u64);
		if (hit)
			*hit = 0;
	}
	if (err < 0)
		return rep_scratch_err(d->r, err, "reading the kept entries back");
	for (unsigned i = 0; i < d->norph; i++)
		if (d->orph[i])
			d->orph[keep++] = d->orph[i];
	d->norph = (unsigned)keep;
	return 0;
}

/* ---- step 5: the new fork, in one transaction ---------------------------------------------- */
static int cmp_dent(const void *a, const void *b, void *priv)
{
	const struct dent *x = a, *y = b;

	(void)priv;
	if (x->hash != y->hash)
		return x->hash < y->hash ? -1 : 1;
	if (x->seq != y->seq)
		return x->seq < y->seq ? -1 : 1;
	if (x->ino != y->ino)
		return x->ino < y->ino ? -1 : 1;
	return x->name < y->name ? -1 : x->name > y->name;
}

static int build(struct dirrep *d, uint64_t attr_blocks, uint64_t old_blocks)
{
	struct rep *r = d->r;
	struct mfs_inode *dp = d->dp;
	struct mfs_trans *tp;
	char name[MFS_NAME_MAX];
	uint64_t cursor = 0, dups = 0, n = 0, recs;
	struct dent e;
	int err;

	/* The new tree: two records an entry (most names fit one), leaves half full, nodes. */
	recs = d->kept * 2;
	err = rep_inode_log_fits(r, dp, 2 * recs * MFS_DIR_REC_SIZE / dp->fs->geo.blocksize + 8,
				 old_blocks, "directory name btree");
	if (!err)
		err = rep_inode_trans(r, dp, d->s.old, &tp);
	if (err)
		return err;
	err = rep_inode_free(r, tp, dp, d->s.old);
	if (err)
		goto cancel;
	/* An empty inline directory, the attribute fork untouched. */
	memset(dp->lit, 0, fork_size(dp));
	dp->dformat = MFS_FMT_LOCAL;
	dp->dnext = 0;
	dp->size = 0;
	dp->nblocks = attr_blocks;
	err = mfs_dir_init(tp, dp, d->parent);
	while (!err && (err = mfs_xfarray_iter(d->s.keep, &cursor, &e, NULL)) == 1) {
		if (++n % 256 == 0 && (err = rep_poll(r)) != 0)
			break;
		err = mfs_xblob_load(d->s.blob, e.name, name, sizeof(name), NULL);
		if (err) {
			err = rep_scratch_err(r, err, "loading a salvaged name");
			break;
		}
		err = mfs_dir_add(tp, dp, name, e.namelen, e.ino, e.ftype);
		if (err == -EEXIST) {
			dups++;             /* the same name twice: the first one stays */
			err = 0;
		}
	}
	if (err < 0 && !r->rc->reason[0])
		rep_fail(r, err, "directory %llu: adding the salvaged entries: %s", ULL(dp->ino),
			 strerror(-err));
	/* One orphan and one dropped subdirectory name: joined again. */
	if (err >= 0 && d->norph == 1 && d->ndrop == 1 && !d->orph_overflow) {
		err = mfs_dir_add(tp, dp, d->drop[0].name, d->drop[0].len, d->orph[0], DT_DIR);
		if (!err) {
			mfs_log(MFS_LOG_INFO, "directory %llu: subdirectory %llu joined again under "
				"its name '%.*s' (the entry's inode number was damaged)", ULL(dp->ino),
				ULL(d->orph[0]), d->drop[0].len, d->drop[0].name);
			d->norph = 0;
			d->kept++;
		} else if (err == -EEXIST) {
			err = 0;
		}
	}
	if (err < 0)
		goto cancel;
	d->kept -= dups;
	d->lost += dups;
	return rep_inode_commit(r, tp, dp, "directory");
cancel:
	rep_inode_cancel(tp, dp);
	return err;
}

/* ---- step 0: subdirectories whose mode is the damage ----------------------------------------- */
#define MAX_RETYPE 8u

struct retype {
	struct mfs_fs *fs;
	uint64_t ino[MAX_RETYPE];
	unsigned n;
};

static int retype_fn(void *priv, const char *name, unsigned len, uint64_t ino, uint8_t ftype,
		     uint64_t next_cookie)
{
	struct retype *t = priv;
	uint16_t mode = 0;

	(void)name;
	(void)len;
	if (next_cookie <= MFS_DIR_COOKIE_DOTDOT || ftype != DT_DIR || t->n == MAX_RETYPE)
		return 0;
	if (rep_inode_peek(t->fs, ino, &mode, NULL) == 0 && S_ISREG(mode))
		t->ino[t->n++] = ino;
	return 0;
}

/*
 * An entry naming a directory whose mode says regular file: the entry is dropped in step 2
 * (a file type that does not match) unless the mode is the damage — the inode record's
 * repair tells that from the child's data fork and the entries naming it
 * (repair_inode.c), so it is run first on each such child (a few), before this directory
 * is locked for the rebuild (that repair searches every directory, this one too).
 */
static void retype_children(struct rep *r)
{
	struct retype t;
	struct mfs_inode *dp;
	int err;

	memset(&t, 0, sizeof(t));
	t.fs = r->fs;
	if (mfs_iget_locked(r->fs, r->rc->ino, MFS_IGET_UNTRUSTED, 0, &dp))
		return;                     /* rep_inode_take says why */
	err = S_ISDIR(dp->mode) && dp->nlink ? mfs_dir_iterate(dp, 0, retype_fn, &t) : 0;
	pthread_rwlock_unlock(&dp->lock);
	mfs_iput(dp);
	for (unsigned i = 0; i < t.n && (!err || mfs_is_corruption(err)); i++) {
		struct mfs_repair_ctx sub;

		if (rep_nested(r, &sub, MFS_SCRUB_INODE, t.ino[i]))
			mfs_log(MFS_LOG_INFO, "directory %llu: its entry naming inode %llu (a "
				"directory, whose mode says a file) stays in doubt: %s",
				ULL(r->rc->ino), ULL(sub.ino), sub.reason);
	}
}

/* ---- the rebuilder ------------------------------------------------------------------------ */
static uint64_t stored_parent(const struct mfs_inode *dp)
{
	uint64_t v = 0;

	if (dp->dformat == MFS_FMT_LOCAL && dp->size == 0)
		return dp->ino;
	if (dp->dformat == MFS_FMT_LOCAL && dp->size >= MFS_DIR_LOCAL_HDR &&
	    fork_size(dp) >= MFS_DIR_LOCAL_HDR)
		memcpy(&v, dp->lit, 8);
	else if (dp->dformat == MFS_FMT_BTREE && fork_size(dp) >= sizeof(struct mfs_dir_root))
		memcpy(&v, dp->lit + offsetof(struct mfs_dir_root, parent), 8);
	return mfs_get64(v);
}

int rep_dir(struct rep *r)
{
	struct dirrep *d = mfs_calloc(1, sizeof(*d));
	struct rep_iblocks nb;
	uint64_t nrec, nent, blob;
	uint32_t per_leaf;
	int err, no_walk;

	if (!d)
		return rep_fail(r, -ENOMEM, "no memory for the directory rebuild");
	d->r = r;
	retype_children(r);
	err = rep_inode_take(r, S_IFDIR, "directory", &d->dp);
	if (err || !d->dp)
		goto out;
	/* Count, plan the scratch, reserve, then gather.  The blocks are counted in the
	 * reverse map, never taken from nblocks (the damaged field, maybe).  An inline
	 * directory without attribute blocks that counts none owns none: no walk (a forced
	 * rebuild of every directory stays cheap); one that counts some, or has an attribute
	 * fork in blocks, is counted there too — and name-btree blocks found for it (its
	 * format was the damage) are salvaged and freed like a btree directory's. */
	no_walk = d->dp->dformat == MFS_FMT_LOCAL && d->dp->nblocks == 0 &&
		      d->dp->aformat != MFS_FMT_EXTENTS && d->dp->aformat != MFS_FMT_BTREE;
	memset(&nb, 0, sizeof(nb));
	err = no_walk ? 0 : rep_inode_rmap(r, d->dp->ino, want_names, NULL, &nb);
	if (err)
		goto out;
	per_leaf = (r->fs->geo.blocksize - (uint32_t)sizeof(struct mfs_btree_block)) /
		   MFS_DIR_REC_SIZE;
	nrec = nb.data_bt * per_leaf + 1;
	nent = nrec + (d->dp->dformat == MFS_FMT_LOCAL ? fork_size(d->dp) / 12 + 1 : 0);
	blob = nent * NAME_SLOT_BYTES + 65536;
	err = rep_inode_scratch(r, d->dp, no_walk ? NULL : want_names, &nb, nrec,
				MFS_DIR_REC_SIZE, nent,
				sizeof(struct dent), blob, &d->s);
	if (err)
		goto out;
	/* Salvage. */
	if (d->dp->dformat == MFS_FMT_LOCAL)
		err = salvage_local(d);
	else if (d->dp->dformat != MFS_FMT_BTREE)
		d->lost++;
	if (!err && nb.data_bt)
		err = salvage_btree(d);
	if (!err)
		err = rep_hook(r, MFS_REPAIR_AT_GATHERED);
	if (!err)
		err = choose_parent(d, stored_parent(d->dp));
	if (!err && (d->lost || d->unreadable))
		err = find_orphans(d);
	if (!err)
		err = rep_sort(r, d->s.keep, cmp_dent, "sorting the salvaged entries");
	if (!err)
		err = build(d, nb.attr, nb.data_bt);
	if (err)
		goto out;
	r->rc->records = d->kept;
	if (d->lost || d->unreadable || d->norph)
		mfs_log(MFS_LOG_WARN, "directory %llu rebuilt: %llu entries kept, %llu lost, %llu "
			"unreadable blocks; %u subdirectories without an entry (first: %llu) left "
			"to the link count repair%s", ULL(d->dp->ino), ULL(d->kept), ULL(d->lost),
			ULL(d->unreadable), d->norph, ULL(d->norph ? d->orph[0] : 0),
			d->orph_overflow ? " (and more)" : "");
out:
	rep_inode_scratch_done(&d->s);
	rep_inode_done(r, d->dp, !err);
	free(d);
	return err;
}
