/*
 * health.c — what the daemon does when it meets damaged metadata while serving.
 *
 * A verifier that fails during a request (a bad CRC, a block of the wrong kind, a field out
 * of range) makes that request fail: mfsd_errno() turns -EFSCORRUPTED/-EFSBADCRC into
 * EUCLEAN for the kernel, and calls mfsd_note_corruption().  The first time, the worker is
 * asked to set MFS_STATE_ERRORS in the superblock in a small asynchronous transaction (the
 * request's own thread may hold locks, so it never does that itself); the state survives
 * the clean unmount and tells mendfs_db, the scrubber and the next mount that a scrub or
 * repair is due.  Everything else keeps being served.
 *
 * The library reports every failure where it is detected, with the object's name (AG,
 * block, inode) and what was wrong.  A damaged block is not kept in the cache, so every
 * request that touches it would repeat the same message: the daemon's log sink reports
 * each distinct error or warning once and counts the repeats.
 */
#include "mendfs_int.h"

#include "bcache.h"
#include "byteorder.h"
#include "journal.h"
#include "log.h"
#include "mendfs_format.h"
#include "trans.h"

#include <stdio.h>
#include <string.h>
#include <syslog.h>

static struct mfsd *health_d;

void mfsd_health_init(struct mfsd *d)
{
	health_d = d;
}

void mfsd_note_corruption(void)
{
	struct mfsd *d = health_d;

	if (!d || __atomic_exchange_n(&d->errors_seen, 1, __ATOMIC_SEQ_CST))
		return;
	if (d->ro)
		return;            /* nothing can be written; the messages say it all */
	pthread_mutex_lock(&d->work_lock);
	d->errors_pending = 1;
	pthread_cond_signal(&d->work_cond);
	pthread_mutex_unlock(&d->work_lock);
}

void mfsd_mark_errors(struct mfsd *d)
{
	struct mfs_trans *tp;
	struct mfs_buf *bp;
	struct mfs_sb *sb;
	int err;

	err = mfs_trans_alloc(d->fs, &tp);
	if (err)
		goto out;
	err = mfs_trans_lock_ag(tp, 0, 0);
	if (!err)
		err = mfs_read_sb(d->fs, 0, &bp);
	if (err) {
		mfs_trans_cancel(tp);
		goto out;
	}
	err = mfs_trans_modify(tp, bp);
	if (!err) {
		sb = bp->data;
		mfs_put32(sb->state, mfs_get32(sb->state) | MFS_STATE_ERRORS);
	}
	mfs_buf_put(bp);
	if (err) {
		mfs_trans_cancel(tp);
		goto out;
	}
	err = mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, NULL);
	if (!err && d->fs->log)
		err = mfs_journal_force(d->fs->log);
out:
	if (err)
		mfs_log(MFS_LOG_ERR, "marking the filesystem as needing a scrub failed: %s",
			strerror(-err));
	else
		mfs_log(MFS_LOG_ERR, "metadata corruption found while serving: the filesystem "
			"is marked as needing a scrub (mendfs_scrub, or mendfs_repair unmounted)");
}

/* ---- reporting each distinct message once -------------------------------------------- */

#define SEEN_SLOTS 4096u                /* distinct messages remembered */

static pthread_mutex_t seen_lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t seen[SEEN_SLOTS];       /* hashes, open addressing; 0: empty */
static unsigned seen_n;
static uint64_t repeats;

static uint64_t msg_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
	return h ? h : 1;
}

/* 1 if `msg` was reported already (and counts the repeat). */
static int seen_before(const char *msg)
{
	uint64_t h = msg_hash(msg);
	unsigned i = (unsigned)(h % SEEN_SLOTS);
	int found = 0;

	pthread_mutex_lock(&seen_lock);
	for (unsigned n = 0; n < SEEN_SLOTS; n++, i = (i + 1) % SEEN_SLOTS) {
		if (seen[i] == h) {
			found = 1;
			repeats++;
			break;
		}
		if (seen[i] == 0) {
			/* Keep a quarter free so that probes stay short; past that, report all. */
			if (seen_n < SEEN_SLOTS / 4 * 3) {
				seen[i] = h;
				seen_n++;
			}
			break;
		}
	}
	pthread_mutex_unlock(&seen_lock);
	return found;
}

/* priv non-NULL: syslog; NULL: standard error. */
void mfsd_log_once_sink(int level, const char *msg, void *priv)
{
	if (level <= MFS_LOG_WARN && seen_before(msg))
		return;
	if (priv)
		syslog(level, "%s", msg);
	else
		fprintf(stderr, "%s\n", msg);
}
