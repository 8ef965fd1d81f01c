/*
 * repair_ifork.c — what the rebuilders of one inode's forks (directory names, attributes,
 * symlink target) share: the inode taken for the rebuild, the blocks the reverse map gives
 * it, a look at another inode's committed on-disk copy, and the one transaction that frees
 * the old blocks, builds the new fork and commits.
 *
 * Why the reverse map: a damaged fork cannot say which blocks it had (a trashed node hides
 * its whole subtree), but every block an inode owns is in the reverse map under (owner =
 * ino, offset with the fork and kind flags).  So a rebuild reads the surviving leaves from
 * there and frees exactly those blocks: none leaks, none is freed twice.
 *
 * Locking (the daemon's order: inode locks, then AG locks in increasing order):
 *   - the inode's lock exclusive from rep_inode_take() to rep_inode_drop(): nothing else
 *     allocates or frees its blocks meanwhile, so what the walk of the reverse map found
 *     stays true until the commit;
 *   - each AG's lock only while its reverse map (or one inode cluster) is read, never two;
 *   - the transaction locks the inode's AG and every AG holding an old block, in increasing
 *     order, before it frees or allocates anything (rep_inode_trans()).
 */
#include "repair_ag.h"
#include "repair_priv.h"
#include "scrub_priv.h"

#include "ag.h"
#include "alloc.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "ialloc.h"
#include "inode.h"
#include "log.h"
#include "mem.h"
#include "trans.h"
#include "verify.h"
#include "xblob.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static unsigned long long ULL(uint64_t v)
{
	return (unsigned long long)v;
}

int rep_inode_take(struct rep *r, uint16_t ifmt, const char *what, struct mfs_inode **ipp)
{
	uint64_t ino = r->rc->ino;
	struct mfs_scrub_ctx sc;
	struct mfs_inode *ip;
	int err;

	*ipp = NULL;
	if (mfs_ino_check(r->fs, ino))
		return rep_fail(r, -EINVAL, "inode %llu is not a valid inode number", ULL(ino));
	err = mfs_iget_locked(r->fs, ino, MFS_IGET_UNTRUSTED, 1, &ip);
	if (err == -ENOENT)
		return rep_fail(r, err, "inode %llu is not in use", ULL(ino));
	if (err)
		return rep_fail(r, err, "inode %llu (a %s to rebuild) cannot be loaded (%s): its "
				"inode record must be repaired first", ULL(ino), what, strerror(-err));
	memset(&sc, 0, sizeof(sc));
	sc.fs = r->fs;
	err = scrub_inode_current(&sc, ip);
	if (!err && ifmt && (ip->mode & S_IFMT) != ifmt) {
		rep_inode_drop(ip);         /* not a `what`: nothing to rebuild, like its checker */
		return 0;
	}
	if (err == -ENOENT)
		err = rep_fail(r, err, "inode %llu is not in use (freed meanwhile?)", ULL(ino));
	if (err) {
		rep_inode_drop(ip);
		return rep_fail(r, err, "inode %llu cannot be read: %s", ULL(ino), strerror(-err));
	}
	*ipp = ip;
	return 0;
}

void rep_inode_drop(struct mfs_inode *ip)
{
	if (!ip)
		return;
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
}

void rep_inode_done(struct rep *r, struct mfs_inode *ip, int rebuilt)
{
	uint64_t ino = ip ? ip->ino : 0;

	rep_inode_drop(ip);
	/* The kernel's cached attributes (size, blocks) are stale now: tell it, no lock held. */
	if (rebuilt && ino)
		rep_changed(r, ino);
}

/* ---- the inode's blocks, from the reverse map ------------------------------------------- */
struct rmap_walk {
	struct rep *r;
	uint64_t ino;
	uint32_t agno;
	rep_iext_want_fn want;
	struct mfs_xfarray *a;
	struct rep_iblocks *n;
};

static int rmap_rec(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_rmap_rec *rr = rec;
	struct rmap_walk *w = priv;
	uint64_t off = mfs_get64(rr->offset);
	uint32_t len = mfs_get32(rr->blockcount);
	struct rep_iext e;

	if (mfs_get64(rr->owner) != w->ino)
		return 0;
	if (off & MFS_RMAP_ATTR_FORK)
		w->n->attr += len;
	else if (off & MFS_RMAP_BMBT_BLOCK)
		w->n->data_bt += len;
	else
		w->n->data += len;
	if (!w->a || !w->want(off))
		return 0;
	memset(&e, 0, sizeof(e));
	e.fsb = mfs_agbno_to_fsb(&cur->fs->geo, w->agno, mfs_get32(rr->startblock));
	e.offset = off;
	e.len = len;
	return mfs_xfarray_append(w->a, &e, NULL);
}

int rep_inode_rmap(struct rep *r, uint64_t ino, rep_iext_want_fn want, struct mfs_xfarray *a,
		   struct rep_iblocks *n)
{
	struct mfs_fs *fs = r->fs;
	struct rmap_walk w = { r, ino, 0, want, a, n };
	int err = 0;

	memset(n, 0, sizeof(*n));
	for (uint32_t agno = 0; agno < fs->geo.agcount && !err; agno++) {
		struct mfs_btree_cur cur;
		struct mfs_buf *hbp;

		err = rep_poll(r);
		if (err)
			break;
		w.agno = agno;
		scrub_ag_lock(fs, agno);
		err = mfs_read_agh(fs, agno, &hbp);
		if (!err) {
			mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_RMAP, hbp);
			err = mfs_btree_query_range(&cur, NULL, NULL, rmap_rec, &w);
			mfs_btree_cur_release(&cur);
			mfs_buf_put(hbp);
		}
		scrub_ag_unlock(fs, agno);
		if (mfs_is_corruption(err))
			return rep_fail(r, err, "AG %u's reverse map is damaged (%s): the rebuild of "
					"inode %llu finds the inode's blocks there; rebuild it first",
					agno, strerror(-err), ULL(ino));
		if (err)
			return rep_scratch_err(r, err, "gathering the inode's blocks");
	}
	return err;
}

/* ---- another inode, as committed on disk ---------------------------------------------- */
/* The ".." a directory's on-disk literal area holds (0 when it holds none). */
static uint64_t disk_dir_parent(const struct mfs_dinode *d, uint32_t litsize, uint64_t ino)
{
	const uint8_t *lit = (const uint8_t *)d + sizeof(*d);
	uint32_t fsz = mfs_get16(d->forkoff) ? mfs_get16(d->forkoff) * 8u : litsize;
	uint64_t v;

	if (fsz > litsize)
		return 0;
	if (d->dformat == MFS_FMT_LOCAL) {
		if (mfs_get64(d->size) == 0)
			return ino;             /* mkfs's empty root */
		if (mfs_get64(d->size) < MFS_DIR_LOCAL_HDR || fsz < MFS_DIR_LOCAL_HDR)
			return 0;
		memcpy(&v, lit, 8);
		return mfs_get64(v);
	}
	if (d->dformat == MFS_FMT_BTREE && fsz >= sizeof(struct mfs_dir_root)) {
		memcpy(&v, lit + offsetof(struct mfs_dir_root, parent), 8);
		return mfs_get64(v);
	}
	return 0;
}

int rep_inode_peek(struct mfs_fs *fs, uint64_t ino, uint16_t *mode, uint64_t *parent)
{
	const struct mfs_geom *g = &fs->geo;
	uint32_t agno;
	const struct mfs_dinode *d;
	struct mfs_buf *bp;
	int err;

	*mode = 0;
	if (parent)
		*parent = 0;
	if (mfs_ino_check(fs, ino))
		return -EINVAL;
	agno = mfs_ino_to_agno(g, ino);
	scrub_ag_lock(fs, agno);
	err = mfs_ino_in_use_locked(fs, ino);
	if (!err)
		err = mfs_buf_read(fs->bc, mfs_ino_to_fsb(g, ino), NULL, &bp);
	if (!err) {
		d = (const void *)((const char *)bp->data + mfs_ino_to_offset(g, ino));
		err = mfs_dinode_verify(d, g->inodesize, ino, g->uuid);
		if (!err)
			err = mfs_dinode_check(d, g->inodesize, ino);
		if (!err) {
			*mode = mfs_get16(d->mode);
			if (parent && S_ISDIR(*mode))
				*parent = disk_dir_parent(d, g->inodesize - (uint32_t)sizeof(*d), ino);
		}
		mfs_buf_put(bp);
	}
	scrub_ag_unlock(fs, agno);
	if (!err && !*mode)
		err = -ENOENT;
	return err;
}

/* ---- scratch of a fork rebuild ---------------------------------------------------------------- */
int rep_inode_scratch(struct rep *r, struct mfs_inode *ip, rep_iext_want_fn want,
		      const struct rep_iblocks *nb, uint64_t nrec, uint32_t reclen, uint64_t nkeep,
		      uint32_t keeplen, uint64_t blob_bytes, struct rep_iscratch *s)
{
	struct rep_array_plan plan[4] = {
		{ sizeof(struct rep_iext), nb->data + nb->data_bt + nb->attr + 1 },
		{ reclen, nrec },
		{ keeplen, nkeep },
		{ 64, blob_bytes / 64 + 1 },        /* the xblob's bytes */
	};
	struct rep_iblocks again;
	int err;

	memset(s, 0, sizeof(*s));
	err = rep_reserve(r, plan, 4);
	if (!err)
		err = rep_array(r, plan[0].recsize, plan[0].max_nr, &s->old);
	if (!err)
		err = rep_array(r, plan[1].recsize, plan[1].max_nr, &s->raw);
	if (!err)
		err = rep_array(r, plan[2].recsize, plan[2].max_nr, &s->keep);
	if (!err) {
		err = mfs_xblob_create(r->rc->fds[0], r->next, &s->blob);
		if (err)
			err = rep_scratch_err(r, err, "creating the blob store");
		r->next += plan[3].max_nr * 64;
	}
	if (!err && want)
		err = rep_inode_rmap(r, ip->ino, want, s->old, &again);
	if (!err)
		err = rep_hook(r, MFS_REPAIR_AT_RESERVED);
	return err;
}

void rep_inode_scratch_done(struct rep_iscratch *s)
{
	mfs_xblob_destroy(s->blob);
	s->blob = NULL;
}

/* ---- the leaves of an inode's damaged btree -------------------------------------------------- */
int rep_inode_leaves(struct rep *r, struct mfs_inode *ip, struct mfs_xfarray *old,
		     rep_iext_want_fn want, uint32_t magic, uint32_t reclen, const char *what,
		     struct mfs_xfarray *raw, uint64_t *unreadable)
{
	struct mfs_fs *fs = ip->fs;
	uint32_t maxrecs = (fs->geo.blocksize - (uint32_t)sizeof(struct mfs_btree_block)) / reclen;
	struct mfs_blk_expect ex = { magic, ip->ino, MFS_LEVEL_ANY, what };
	uint8_t zero[MFS_XATTR_REC_SIZE > MFS_DIR_REC_SIZE ? MFS_XATTR_REC_SIZE : MFS_DIR_REC_SIZE];
	uint64_t cursor = 0;
	struct rep_iext e;
	int err;

	if (reclen > sizeof(zero))
		return rep_fail(r, -EINVAL, "internal: %u-byte records", reclen);
	memset(zero, 0, sizeof(zero));
	while ((err = mfs_xfarray_iter(old, &cursor, &e, NULL)) == 1) {
		if (!want(e.offset))
			continue;
		for (uint32_t b = 0; b < e.len; b++) {
			const struct mfs_btree_block *h;
			struct mfs_buf *bp;
			unsigned n;

			err = rep_poll(r);
			if (err)
				return err;
			err = mfs_buf_read(fs->bc, e.fsb + b, &ex, &bp);
			if (mfs_is_corruption(err)) {
				(*unreadable)++;
				continue;
			}
			if (err)
				return rep_fail(r, err, "inode %llu: reading %s block %llu: %s",
						ULL(ip->ino), what, ULL(e.fsb + b), strerror(-err));
			h = bp->data;
			n = mfs_get16(h->numrecs);
			if (mfs_get16(h->level) == 0 && n > maxrecs)
				(*unreadable)++;
			for (unsigned i = 0; mfs_get16(h->level) == 0 && n <= maxrecs && i < n &&
			     !err; i++) {
				const uint8_t *rec = (const uint8_t *)(h + 1) + (size_t)i * reclen;

				if (memcmp(rec, zero, reclen))
					err = mfs_xfarray_append(raw, rec, NULL);
			}
			mfs_buf_put(bp);
			if (err)
				return rep_scratch_err(r, err, "gathering the surviving records");
		}
	}
	return err < 0 ? rep_scratch_err(r, err, "reading the old blocks back") : 0;
}

int rep_cmp_le64(const void *a, const void *b, void *priv)
{
	uint64_t x, y;

	(void)priv;
	memcpy(&x, a, 8);
	memcpy(&y, b, 8);
	x = mfs_get64(x);
	y = mfs_get64(y);
	return x < y ? -1 : x > y;
}

/* ---- the rebuild's transaction ----------------------------------------------------------- */
int rep_inode_log_fits(struct rep *r, struct mfs_inode *ip, uint64_t nimg, uint64_t nrev,
		       const char *what)
{
	struct agrep ar;

	memset(&ar, 0, sizeof(ar));
	ar.r = r;
	ar.fs = r->fs;
	ar.agno = mfs_ino_to_agno(&r->fs->geo, ip->ino);
	return rep_log_fits(&ar, nimg, nrev, what);
}

int rep_inode_trans(struct rep *r, struct mfs_inode *ip, struct mfs_xfarray *old,
		    struct mfs_trans **tpp)
{
	struct mfs_fs *fs = r->fs;
	uint32_t agc = fs->geo.agcount;
	uint8_t *want = mfs_calloc((agc + 7) / 8, 1);
	struct mfs_trans *tp = NULL;
	uint64_t cursor = 0;
	struct rep_iext e;
	int err;

	*tpp = NULL;
	if (!want)
		return rep_fail(r, -ENOMEM, "no memory for the rebuild's transaction");
	want[mfs_ino_to_agno(&fs->geo, ip->ino) / 8] |= 1u << (mfs_ino_to_agno(&fs->geo, ip->ino) % 8);
	while (old && (err = mfs_xfarray_iter(old, &cursor, &e, NULL)) == 1) {
		uint32_t a = mfs_fsb_to_agno(&fs->geo, e.fsb);

		if (a < agc)
			want[a / 8] |= 1u << (a % 8);
	}
	if (old && err < 0) {
		free(want);
		return rep_scratch_err(r, err, "reading the old blocks back");
	}
	err = mfs_trans_alloc(fs, &tp);
	for (uint32_t a = 0; a < agc && !err; a++)
		if (want[a / 8] >> (a % 8) & 1)
			err = mfs_trans_lock_ag(tp, a, 0);
	free(want);
	if (err) {
		if (tp)
			mfs_trans_cancel(tp);
		return rep_fail(r, err, "starting the rebuild's transaction: %s", strerror(-err));
	}
	*tpp = tp;
	return 0;
}

int rep_inode_free(struct rep *r, struct mfs_trans *tp, struct mfs_inode *ip,
		   struct mfs_xfarray *old)
{
	uint64_t cursor = 0;
	struct rep_iext e;
	int err;

	while ((err = mfs_xfarray_iter(old, &cursor, &e, NULL)) == 1) {
		err = mfs_free_extent(tp, e.fsb, e.len, ip->ino, e.offset);
		for (uint32_t b = 0; b < e.len && !err; b++)
			err = mfs_trans_forget(tp, e.fsb + b);
		if (err)
			return rep_fail(r, err, "inode %llu: freeing old blocks %llu+%u: %s",
					ULL(ip->ino), ULL(e.fsb), e.len, strerror(-err));
		ip->nblocks = ip->nblocks >= e.len ? ip->nblocks - e.len : 0;
	}
	return err < 0 ? rep_scratch_err(r, err, "reading the old blocks back") : 0;
}

void rep_inode_cancel(struct mfs_trans *tp, struct mfs_inode *ip)
{
	mfs_trans_cancel(tp);
	mfs_inode_reload(ip);
}

int rep_inode_commit(struct rep *r, struct mfs_trans *tp, struct mfs_inode *ip,
		     const char *what)
{
	int err = mfs_inode_log(tp, ip);

	if (err)
		rep_fail(r, err, "inode %llu: logging the rebuilt %s failed: %s", ULL(ip->ino),
			 what, strerror(-err));
	err = rep_commit(r, tp, err, "inode %llu's rebuilt %s", ULL(ip->ino), what);
	if (err)
		mfs_inode_reload(ip);       /* the in-core fields back to what the disk holds */
	return err;
}
