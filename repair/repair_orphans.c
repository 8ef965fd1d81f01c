/*
 * repair_orphans.c — rebuilding the per-AG orphan lists (lib/orphan.h) from the inodes
 * themselves, and the walk over an AG's inodes that the link-count rebuild shares.
 *
 * What the list must be (the checker's rule, scrub_orphans.c, and orphan.h's invariant):
 * exactly the allocated inodes of the AG whose link count is 0 — open in the daemon or not
 * (one not open is freed by the next mount) — each once, the chain ending.  An inode that
 * is not a member has next_unlinked 0.  So the new list is taken from the inode chunks, not
 * from the old chain, which may loop, point anywhere, or miss members.
 *
 * One AG at a time:
 *   1. under the AG lock, walk its inode chunks (committed cluster buffers) and gather the
 *      candidates into a scratch array, in inode order: every allocated inode without links
 *      (a member) and every inode with a non-zero next_unlinked (to be cleared or rechained);
 *      an AG whose list already holds exactly the members, with no stray pointer, is left
 *      alone;
 *   2. without the AG lock, take every candidate's lock exclusive in increasing inode number
 *      (an inode's next_unlinked changes only under its lock and the AG lock; inode locks
 *      come before AG locks, and in that order, so the daemon's inactivation worker, which
 *      frees members, cannot deadlock with us: it waits or has finished);
 *   3. in one transaction, the AG locked: recount the AG's members on disk — under the
 *      locks they can only have been freed (quiesced: no new unlink), so the count must match
 *      the candidates still without links, else cancel and start the AG again — then chain
 *      the members in increasing inode number, clear the others' pointers, set the head, and
 *      commit.
 * The in-core copies are changed under their locks, so the daemon's view stays the disk's.
 * The daemon's table of predecessor hints may then be stale: orphan.c checks a hint against
 * the disk before believing it.
 */
#include "repair_priv.h"

#include "ag.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "orphan.h"
#include "scrub_priv.h"
#include "trans.h"

#include <assert.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

/* ---- walking an AG's inodes ---------------------------------------------------------------- */

struct iwalk {
	struct mfs_scrub_ctx sc;     /* scrub_chunk_walk's context: only the filesystem */
	uint32_t agno;
	rep_dinode_fn fn;
	void *priv;
	uint64_t bad_fsb;
};

static int iwalk_chunk(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	struct iwalk *w = priv;

	(void)cur;
	return scrub_chunk_walk(&w->sc, w->agno, rec, w->fn, w->priv, &w->bad_fsb);
}

int rep_walk_inodes(struct rep *r, uint32_t agno, int locked, rep_dinode_fn fn, void *priv)
{
	struct mfs_fs *fs = r->fs;
	struct mfs_btree_cur cur;
	struct mfs_buf *hbp;
	struct iwalk w;
	int err;

	memset(&w, 0, sizeof(w));
	w.sc.fs = fs;
	w.agno = agno;
	w.fn = fn;
	w.priv = priv;
	if (!locked)
		mfs_ag_lock(fs, agno, MFS_AGL_ALL);
	err = mfs_read_agh(fs, agno, &hbp);
	if (!err) {
		mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_INO, hbp);
		err = mfs_btree_query_range(&cur, NULL, NULL, iwalk_chunk, &w);
		mfs_btree_cur_release(&cur);
		mfs_buf_put(hbp);
	}
	if (!locked)
		mfs_ag_unlock(fs, agno, MFS_AGL_ALL);
	if (mfs_is_corruption(err))
		return rep_fail(r, err, "AG %u: the inodes cannot all be read (its header, inode "
				"btree or inode block %llu: %s): repair those first", agno,
				(unsigned long long)w.bad_fsb, scrub_errstr(err));
	if (err < 0)
		return rep_fail(r, err, "AG %u: reading the inodes: %s", agno, strerror(-err));
	return 0;
}

/* ---- the orphan lists ---------------------------------------------------------------------- */

#define ORPH_MEMBER   0x1u       /* allocated, no links: belongs on the list */
#define ORPH_TRIES    4u         /* an AG whose members keep changing is given up */

/* A candidate.  ptr: the in-core inode while we hold it (this process's address). */
struct orph_rec {
	uint64_t ino;
	uint64_t ptr;
	uint32_t flags;
	uint32_t pad;
};

static_assert(sizeof(struct orph_rec) == REP_ORPHAN_RECSIZE, "orph_rec");

struct orph_scan {
	struct rep *r;
	struct mfs_xfarray *C;      /* NULL: count only */
	uint64_t members, strays, cands;
	int err;
};

static int orph_fn(void *priv, uint64_t ino, const struct mfs_dinode *d, int isfree)
{
	struct orph_scan *s = priv;
	int member = !isfree && mfs_get16(d->mode) && mfs_get32(d->nlink) == 0;
	uint64_t next = mfs_get64(d->next_unlinked);
	struct orph_rec rec;
	int err;

	if (!member && !next)
		return 0;
	s->members += member;
	s->strays += !member;
	s->cands++;
	if (!s->C)
		return 0;
	memset(&rec, 0, sizeof(rec));
	rec.ino = ino;
	rec.flags = member ? ORPH_MEMBER : 0;
	err = mfs_xfarray_append(s->C, &rec, NULL);
	return err ? rep_scratch_err(s->r, err, "gathering the orphan list's inodes") : 0;
}

int rep_orphans_count(struct rep *r, uint32_t agno, uint64_t *cands)
{
	struct orph_scan s = { r, NULL, 0, 0, 0, 0 };
	int err = rep_walk_inodes(r, agno, 0, orph_fn, &s);

	*cands = s.cands;
	return err;
}

/* Drop every candidate of [start, end): unlock and release those held, unset the slots. */
static void orph_release(struct mfs_xfarray *C, uint64_t start, uint64_t end)
{
	struct orph_rec rec;

	for (uint64_t i = end; i-- > start;) {
		if (mfs_xfarray_get(C, i, &rec) == 0 && rec.ptr) {
			struct mfs_inode *ip = (struct mfs_inode *)(uintptr_t)rec.ptr;

			pthread_rwlock_unlock(&ip->lock);
			mfs_iput(ip);
		}
		(void)mfs_xfarray_unset(C, i);
	}
}

/* 2: every candidate locked exclusive, in increasing inode number (the array's order). */
static int orph_lock_all(struct rep *r, struct mfs_xfarray *C, uint64_t start, uint64_t end)
{
	struct orph_rec rec;
	int err;

	for (uint64_t i = start; i < end; i++) {
		struct mfs_inode *ip;

		err = mfs_xfarray_get(C, i, &rec);
		if (err)
			return rep_scratch_err(r, err, "reading the orphan list's inodes");
		err = mfs_iget(r->fs, rec.ino, MFS_IGET_FREE, &ip);
		if (err)
			return rep_fail(r, err, "orphan list: inode %llu cannot be read: %s",
					(unsigned long long)rec.ino, scrub_errstr(err));
		pthread_rwlock_wrlock(&ip->lock);
		rec.ptr = (uint64_t)(uintptr_t)ip;
		err = mfs_xfarray_set(C, i, &rec);
		if (err) {
			pthread_rwlock_unlock(&ip->lock);
			mfs_iput(ip);
			return rep_scratch_err(r, err, "recording the orphan list's inodes");
		}
	}
	return 0;
}

/* The transaction's size: a block per candidate at most, the header, and a margin. */
static int orph_log_fits(struct rep *r, uint32_t agno, uint64_t n)
{
	const struct mfs_geom *g = &r->fs->geo;
	uint64_t need = n + 8 + n / ((g->blocksize - 64) / 56) + 2;

	if (!r->fs->log || need + 2 <= g->logblocks)
		return 0;
	return rep_fail(r, -ENOSPC, "AG %u: rewriting an orphan list of %llu inodes takes one "
			"journal transaction of about %llu blocks, and the journal holds %u: nothing "
			"was changed", agno, (unsigned long long)n, (unsigned long long)need,
			g->logblocks);
}

/* 3: recount, chain, commit.  -EAGAIN: the members changed under us (start again). */
static int orph_rewrite(struct rep *r, uint32_t agno, struct mfs_xfarray *C, uint64_t start,
			uint64_t end, uint64_t *listed)
{
	struct orph_scan s = { r, NULL, 0, 0, 0, 0 };
	struct mfs_trans *tp;
	struct mfs_buf *hbp;
	struct orph_rec rec;
	uint64_t next = 0, members = 0;
	int err;

	for (uint64_t i = start; i < end; i++) {
		const struct mfs_inode *ip;

		err = mfs_xfarray_get(C, i, &rec);
		if (err)
			return rep_scratch_err(r, err, "reading the orphan list's inodes");
		ip = (const struct mfs_inode *)(uintptr_t)rec.ptr;
		members += ip->mode && ip->nlink == 0;
	}
	err = mfs_trans_alloc(r->fs, &tp);
	if (err)
		return rep_fail(r, err, "no transaction: %s", strerror(-err));
	err = mfs_trans_lock_ag(tp, agno, 0);
	if (!err)
		err = rep_walk_inodes(r, agno, 1, orph_fn, &s);
	if (!err && s.members != members) {
		mfs_trans_cancel(tp);
		return -EAGAIN;
	}
	/* Backwards, so that each member's successor is known: members chained in increasing
	 * inode number, everyone else pointing nowhere. */
	for (uint64_t i = end; !err && i-- > start;) {
		struct mfs_inode *ip;
		uint64_t want = 0;

		err = mfs_xfarray_get(C, i, &rec);
		if (err) {
			err = rep_scratch_err(r, err, "reading the orphan list's inodes");
			break;
		}
		ip = (struct mfs_inode *)(uintptr_t)rec.ptr;
		if (ip->mode && ip->nlink == 0) {
			want = next;
			next = ip->ino;
		}
		if (ip->next_unlinked != want) {
			ip->next_unlinked = want;
			err = mfs_inode_log(tp, ip);
		}
	}
	if (!err)
		err = mfs_read_agh(r->fs, agno, &hbp);
	if (!err) {
		err = mfs_trans_modify(tp, hbp);
		if (!err)
			mfs_put64(((struct mfs_agh *)hbp->data)->unlinked, next);
		mfs_buf_put(hbp);
	}
	err = rep_commit(r, tp, err, "AG %u's new orphan list", agno);
	if (err) {
		/* Cancelled: the in-core copies go back to the restored blocks. */
		for (uint64_t i = start; i < end; i++)
			if (mfs_xfarray_get(C, i, &rec) == 0 && rec.ptr)
				mfs_inode_reload((struct mfs_inode *)(uintptr_t)rec.ptr);
		if (mfs_is_corruption(err))
			rep_fail(r, err, "AG %u: rewriting the orphan list: %s", agno,
				 scrub_errstr(err));
		return err;
	}
	*listed = members;
	return 0;
}

int rep_orphans_ag(struct rep *r, uint32_t agno, struct mfs_xfarray *C, uint64_t *listed)
{
	*listed = 0;
	for (unsigned tries = 0; tries < ORPH_TRIES; tries++) {
		struct orph_scan s = { r, C, 0, 0, 0, 0 };
		uint64_t start = mfs_xfarray_count(C), end, onlist = 0;
		int err, clean;

		err = rep_poll(r);
		if (err)
			return err;
		/* 1 */
		mfs_ag_lock(r->fs, agno, MFS_AGL_ALL);
		err = rep_walk_inodes(r, agno, 1, orph_fn, &s);
		clean = !err && !s.strays && mfs_orphan_check(r->fs, agno, &onlist) == 0 &&
			onlist == s.members;
		mfs_ag_unlock(r->fs, agno, MFS_AGL_ALL);
		end = mfs_xfarray_count(C);
		if (err || clean) {
			orph_release(C, start, end);
			*listed = s.members;
			return err;
		}
		err = orph_log_fits(r, agno, end - start);
		if (!err)
			err = rep_hook(r, MFS_REPAIR_AT_GATHERED);
		/* 2, 3 */
		if (!err)
			err = orph_lock_all(r, C, start, end);
		if (!err)
			err = orph_rewrite(r, agno, C, start, end, listed);
		orph_release(C, start, end);
		if (err != -EAGAIN)
			return err;
		mfs_log(MFS_LOG_INFO, "AG %u orphan list: inodes were freed while it was being "
			"rebuilt, starting again", agno);
	}
	return rep_fail(r, -EAGAIN, "AG %u: the orphan list's inodes kept changing during %u "
			"tries: try again later", agno, ORPH_TRIES);
}

int rep_orphans(struct rep *r)
{
	struct mfs_repair_ctx *rc = r->rc;
	struct mfs_xfarray *C = NULL;
	uint64_t most = 0;
	int err = 0, quiesced = 0;

	if (!r->fs->icache)
		return rep_fail(r, -EINVAL, "the orphan lists are rebuilt with an inode cache");
	/* No unlink meanwhile: the members can only leave (freed), never arrive. */
	if (rc->quiesce) {
		err = rc->quiesce(rc->hook_arg, 1);
		if (err)
			return rep_fail(r, err, "namespace changes could not be held back: %s",
					strerror(-err));
		quiesced = 1;
	}
	for (uint32_t agno = 0; agno < r->fs->geo.agcount && !err; agno++) {
		uint64_t n;

		err = rep_orphans_count(r, agno, &n);
		if (n > most)
			most = n;
	}
	if (!err) {
		/* Room for the largest AG's candidates (the array is emptied after each AG);
		 * quiesced, members can only leave, but a margin covers inodes made without a
		 * name (O_TMPFILE) meanwhile. */
		const struct rep_array_plan plan[1] = {
			{ REP_ORPHAN_RECSIZE, most + most / 4 + 64 },
		};

		err = rep_reserve(r, plan, 1);
		if (!err)
			err = rep_hook(r, MFS_REPAIR_AT_RESERVED);
		if (!err)
			err = rep_array(r, plan[0].recsize, plan[0].max_nr, &C);
	}
	for (uint32_t agno = 0; agno < r->fs->geo.agcount && !err; agno++) {
		uint64_t listed;

		err = rep_orphans_ag(r, agno, C, &listed);
		rc->records += listed;
	}
	if (quiesced)
		rc->quiesce(rc->hook_arg, 0);
	return err;
}
