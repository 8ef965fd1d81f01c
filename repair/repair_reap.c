/*
 * repair_reap.c — freeing the old blocks of a rebuilt AG tree after the rebuild's commit.
 *
 * A free-space rebuild of an AG of N one-block extents replaces trees of ~N/250 blocks
 * each, scattered over the AG: freeing them inside the rebuild's one transaction changes
 * reverse-map and free-space leaves in proportion to N, every one pinned in memory until
 * that commit and logged by it (the journal must hold it whole).  Instead the rebuild
 * commits its new trees with the old blocks still AG-owned — in the reverse map as
 * MFS_OWN_AG, in no tree and off the free list — and the AG header marked MFS_AGH_REAP,
 * then frees them here, a bounded batch per transaction, the AG lock held from the
 * rebuild's first read to the last batch's commit (mfs_trans_roll): nobody else sees the
 * AG in between, and what each batch pins is bounded whatever the AG's size.
 *
 * Each block goes back the way any freed block does (mfs_free_extent: reverse map, both
 * free-space trees, the free list's fix-up, busy until durable), its buffer forgotten (the
 * journal revokes its logged images).  The last transaction clears the mark.
 *
 * Before the reap, the rebuild accounts for its new trees' blocks, which were free space
 * until the commit, in transactions of their own too (rep_reap_step): the free-space
 * rebuild records them in the reverse map (one record per piece: hundreds of thousands in
 * a fragmented AG, each changing a leaf), the reverse map's rebuild takes them out of the
 * free-space trees — rather than in the commit, which would pin every leaf they change.
 * Until that is done the AG is not fit to be seen (ar->unsafe): the test hook is not
 * called, and a failure stops the journal (rep_reap_kill), since the trees and the
 * reverse map disagree about those blocks.
 *
 * A crash in between leaves an AG whose reverse map is right but for AG-owned blocks:
 * garbage ones (the old trees'), missing ones or ones still free in the trees (the new
 * trees').  The mark says so: the next read-write mount, or mendfs_repair, rebuilds the
 * free-space trees, which reads only the reverse map, the free list and the reverse map's
 * own blocks: every AG-owned block outside those becomes free, as do the blocks of the
 * trees being replaced, and the rebuild does its own accounting and reaping.  Until then
 * the by-block tree's check reports the mark.
 */
#include "repair_ag.h"

#include "alloc.h"
#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "journal.h"
#include "log.h"
#include "mem.h"
#include "mendfs_format.h"
#include "repair.h"
#include "trans.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* A batch: about this many blocks logged (images, plus revokes by 64) per transaction
 * (tests make batches smaller: repair_ag.h). */
uint64_t rep_reap_batch = 256;
/* Old blocks freed by every reap so far (tests: where a reap is). */
uint64_t rep_reap_freed;
/* Blocks freed by one call of mfs_free_extent (their revokes are a set in the transaction). */
#define REAP_CHUNK      1024u
/* The journal is checkpointed after about this many blocks logged by the reap: the leaves it
 * changed, read in by its sweep, then leave the cache (mfs_bcache_sweep), so that what it
 * holds stays bounded, whatever the number of old blocks and the size of the log. */
#define REAP_CKPT_LOG   1024u

int rep_reap_mark(struct agrep *ar)
{
	struct mfs_agh *agh;
	int err = mfs_trans_modify(ar->tp, ar->agh_bp);

	if (err)
		return rep_fail(ar->r, err, "no memory to join AG %u's header", ar->agno);
	agh = rep_agh(ar);
	mfs_put32(agh->flags, mfs_get32(agh->flags) | MFS_AGH_REAP);
	ar->reap = 1;
	ar->reaped = 0;
	ar->recorded = 0;
	return 0;
}

static void agh_unmark(struct mfs_agh *agh)
{
	mfs_put32(agh->flags, mfs_get32(agh->flags) & ~MFS_AGH_REAP);
}

void rep_reap_unmark(struct agrep *ar)
{
	agh_unmark(rep_agh(ar));
}

/* The reason says what happened (a reason already given, as by the test hook, is kept in
 * it). */
int rep_reap_fail(struct agrep *ar, int err, const char *what)
{
	char why[sizeof(ar->r->rc->reason)];

	snprintf(why, sizeof(why), "%s", ar->r->rc->reason[0] ? ar->r->rc->reason :
		 strerror(-err));
	ar->r->rc->reason[0] = 0;
	return rep_fail(ar->r, err, "AG %u: the new trees are committed, but %s failed after "
			"%llu of the new trees' blocks were accounted for and %llu of the old "
			"trees' blocks were freed: %s; the next read-write mount or mendfs_repair "
			"finishes the job", ar->agno, what, (unsigned long long)ar->recorded,
			(unsigned long long)ar->reaped, why);
}

/*
 * A failure while the AG is not fit to be seen (ar->unsafe: the new trees' blocks not yet
 * all accounted for — missing from the reverse map, or still listed as free): the AG must
 * not be used as it stands, and undoing the batches committed is no more possible than
 * going on.  The journal is stopped (every later change fails: nothing is allocated from
 * trees that disagree with the reverse map), and the next mount, which finds the mark,
 * finishes the job from the reverse map.  `state` says what the AG holds; the header
 * buffer is let go.
 */
int rep_reap_kill(struct agrep *ar, int err, const char *state)
{
	char why[sizeof(ar->r->rc->reason)];

	snprintf(why, sizeof(why), "%s", ar->r->rc->reason);
	ar->r->rc->reason[0] = 0;
	if (ar->agh_bp)
		mfs_buf_put(ar->agh_bp);
	ar->agh_bp = NULL;
	if (!ar->fs->log)
		return rep_fail(ar->r, err, "%s; %s: the filesystem must not be written until "
				"mendfs_repair has run (no journal to stop)", why, state);
	mfs_journal_kill(ar->fs->log, err);
	return rep_fail(ar->r, err, "%s; the journal is stopped until the next mount: %s, "
			"nothing may be allocated there", why, state);
}

/* The accounting of the new blocks after the commit begins: the AG header read and held
 * (ar->agh_bp), the AG unsafe, the test point; a failure stops the journal (state: what
 * the AG holds meanwhile). */
int rep_account_begin(struct agrep *ar, const char *state)
{
	int err = mfs_read_agh(ar->fs, ar->agno, &ar->agh_bp);

	ar->unsafe = 1;
	if (err) {
		ar->agh_bp = NULL;
		return rep_reap_kill(ar, rep_reap_fail(ar, err, "reading the AG header"), state);
	}
	err = rep_account_hook(ar);
	return err ? rep_reap_kill(ar, err, state) : 0;
}

/* ... and ends (err: how its changes went, their failure given its reason): the last batch
 * committed, the AG fit to be seen again, the header still held; or the journal stopped. */
int rep_account_end(struct agrep *ar, int err, const char *what, const char *state)
{
	if (!err) {
		err = mfs_trans_roll(&ar->tp, MFS_TRANS_ASYNC);
		if (err)
			err = rep_reap_fail(ar, err, what);
	}
	if (err)
		return rep_reap_kill(ar, err, state);
	ar->unsafe = 0;
	return 0;
}

/* The test point while the new blocks are being accounted for (repair.h): its failure is
 * the caller's to turn into a stopped journal. */
int rep_account_hook(struct agrep *ar)
{
	int err = rep_hook(ar->r, MFS_REPAIR_AT_ACCOUNTING);

	return err ? rep_reap_fail(ar, err, "the test hook") : 0;
}

/* The test point after the commit and after each batch (repair.h: a failure leaves the
 * rest of the old blocks to the recovery, as a crash would). */
int rep_reap_hook(struct agrep *ar)
{
	int err = rep_hook(ar->r, MFS_REPAIR_AT_REAPED);

	return err ? rep_reap_fail(ar, err, "the test hook") : 0;
}

/* A batch is full when its commit would log rep_reap_batch blocks (images, and revokes by
 * 64: they cost the log little) or when it holds that many buffers: a btree change that
 * empties a leaf frees it, and the transaction keeps that buffer until it ends (a reverse
 * map's late takes, one block at a time out of one-block free extents, empty a free-space
 * leaf every ~250 takes and log almost nothing else: counted by the log alone, one batch
 * held every emptied leaf of the AG, ~8 MiB at 48M extents). */
int rep_reap_batch_full(const struct mfs_trans *tp, uint64_t *nimg, uint64_t *nrev)
{
	mfs_trans_log_size(tp, nimg, nrev);
	return *nimg + *nrev / 64 >= rep_reap_batch || mfs_trans_nheld(tp) >= rep_reap_batch;
}

/* After a change of the work that follows the commit: when the batch is full, its commit
 * (the journal checkpointed after every REAP_CKPT_LOG blocks so logged) and the test
 * point. */
int rep_reap_step(struct agrep *ar, const char *what)
{
	uint64_t nimg, nrev;
	int err;

	if (!rep_reap_batch_full(ar->tp, &nimg, &nrev))
		return 0;
	err = mfs_trans_roll(&ar->tp, MFS_TRANS_ASYNC);
	if (err)
		return rep_reap_fail(ar, err, what);
	err = ar->unsafe ? rep_account_hook(ar) : rep_reap_hook(ar);
	if (err)
		return err;
	ar->reap_logged += nimg + nrev / 64;
	if (ar->fs->log && ar->reap_logged >= REAP_CKPT_LOG) {
		ar->reap_logged = 0;
		err = mfs_journal_checkpoint(ar->fs->log);
		if (err)
			return rep_reap_fail(ar, err, "a checkpoint of the journal");
	}
	return 0;
}

/* One chunk of old blocks freed; the transaction rolled when the batch is full. */
static int reap_chunk(struct agrep *ar, uint32_t s, uint32_t n)
{
	int err = mfs_free_extent(ar->tp, mfs_agbno_to_fsb(&ar->fs->geo, ar->agno, s), n,
				  MFS_OWN_AG, 0);

	if (!err)
		err = rep_forget_blocks(ar, s, n);
	if (err)
		return rep_reap_fail(ar, err, "freeing an old block");
	ar->reaped += n;
	__atomic_add_fetch(&rep_reap_freed, n, __ATOMIC_RELAXED);
	return rep_reap_step(ar, "committing a batch of freed blocks");
}

/* The reap reads and changes the leaves as a sweep: those it brought into the cache leave
 * it once written home. */
int rep_reap_piece(struct agrep *ar, uint32_t s, uint32_t l, void *priv)
{
	int was = mfs_bcache_sweep(1), err = 0;

	(void)priv;
	while (l && !err) {
		uint32_t n = l < REAP_CHUNK ? l : REAP_CHUNK;

		err = reap_chunk(ar, s, n);
		s += n;
		l -= n;
	}
	mfs_bcache_sweep(was);
	return err;
}

int rep_reap_end(struct agrep *ar)
{
	struct mfs_buf *bp;
	int err = mfs_read_agh(ar->fs, ar->agno, &bp);

	if (err)
		return rep_reap_fail(ar, err, "reading the AG header to clear its reap mark");
	err = mfs_trans_modify(ar->tp, bp);
	if (!err)
		agh_unmark(bp->data);
	mfs_buf_put(bp);
	if (!err) {
		err = mfs_trans_commit(ar->tp);
		ar->tp = NULL;
	}
	ar->reap = 0;
	return err ? rep_reap_fail(ar, err, "the last commit") : 0;
}

/*
 * After a crash: the AGs whose header still carries MFS_AGH_REAP get their free-space trees
 * rebuilt (the old blocks of a rebuild include what the interrupted reap left, and that
 * rebuild reaps them), scratch in a memfd of our own.  Run before anything else uses the
 * filesystem (a mount, before serving; mendfs_repair).
 */
int mfs_repair_reap_pending(struct mfs_fs *fs, unsigned flags, uint32_t *nrebuilt)
{
	struct mfs_repair_ctx *rc = NULL;
	int fd = -1, ret = 0;

	*nrebuilt = 0;
	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++) {
		struct mfs_buf *bp;
		uint32_t aflags;
		int err = mfs_read_agh(fs, agno, &bp);

		if (err)
			continue;            /* a damaged header is the scrub's to report */
		aflags = mfs_get32(((const struct mfs_agh *)bp->data)->flags);
		mfs_buf_put(bp);
		if (!(aflags & MFS_AGH_REAP))
			continue;
		/* the errno of memfd_create, before the allocation can change it */
		if (fd < 0 && (fd = memfd_create("mendfs_reap", MFD_CLOEXEC)) < 0)
			err = -errno;
		if (!err && !rc && !(rc = mfs_calloc(1, sizeof(*rc))))
			err = -ENOMEM;
		if (err) {
			mfs_log(MFS_LOG_ERR, "AG %u: old tree blocks of an interrupted rebuild are "
				"still to be freed, and no %s for it: %s", agno,
				fd < 0 ? "scratch file" : "memory", strerror(-err));
			ret = ret ? ret : err;
			continue;
		}
		memset(rc, 0, sizeof(*rc));
		rc->fs = fs;
		rc->type = MFS_SCRUB_BNOBT;
		rc->agno = agno;
		rc->fds[0] = fd;
		rc->nfds = 1;
		rc->flags = flags;
		err = mfs_repair(rc);
		if (err) {
			mfs_log(MFS_LOG_ERR, "AG %u: freeing the old tree blocks of an interrupted "
				"rebuild failed: %s", agno, rc->reason[0] ? rc->reason :
				strerror(-err));
			ret = ret ? ret : err;
		} else {
			mfs_log(MFS_LOG_INFO, "AG %u: freed the old tree blocks of an interrupted "
				"rebuild (free-space trees rebuilt)", agno);
			++*nrebuilt;
		}
	}
	if (fd >= 0)
		close(fd);
	free(rc);
	return ret;
}
