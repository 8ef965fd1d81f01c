/*
 * ctl_cmd.c — what each control command does in the daemon: HELLO (who we are, the
 * geometry), SCRUB (run one checker, repair/scrub.h, and send its findings), INODES (list
 * allocated inodes of an AG after a cursor: mfs_scrub_list_inodes) and
 * REPAIR (its descriptors checked as DESIGN.md says, then the object rebuilt by the repair
 * engine, repair/repair.h, with them as scratch).
 *
 * Each handler validates its payload itself: exact size, known flags, values in range.
 */
#include "ctl_int.h"

#include "ag.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "geom.h"
#include "log.h"
#include "mem.h"
#include "pressure.h"
#include "repair.h"
#include "scrub.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/ioprio.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef FUSE_SUPER_MAGIC
#define FUSE_SUPER_MAGIC 0x65735546
#endif

#define BAD_SIZE(c, want) \
	mfsd_ctl_error((c)->fd, (c)->msg.hdr.reqid, EINVAL, "payload of %u bytes, expected %zu", \
		       (c)->msg.hdr.len, (size_t)(want))

/* ---- HELLO ------------------------------------------------------------------------------------ */

/* This thread's CPU and I/O priority: idle (a background scrub). */
static void go_idle(void)
{
	pid_t tid = (pid_t)syscall(SYS_gettid);

	if (setpriority(PRIO_PROCESS, (id_t)tid, 19) != 0)
		mfs_log(MFS_LOG_DEBUG, "control: setpriority: %s", strerror(errno));
	if (syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, tid,
		    IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0)) != 0)
		mfs_log(MFS_LOG_DEBUG, "control: ioprio_set: %s", strerror(errno));
}

int mfsd_ctl_hello(struct mfsd_client *c)
{
	struct mfsd_ctl *ctl = c->ctl;
	struct mfs_fs *fs = ctl->d->fs;
	struct mfs_ctl_hello_req req;
	struct mfs_ctl_hello_reply r;
	size_t mlen = strlen(ctl->mountpoint);

	if (c->msg.hdr.len != sizeof(req))
		return BAD_SIZE(c, sizeof(req));
	memcpy(&req, c->msg.payload, sizeof(req));
	if (req.flags & ~MFS_CTL_HELLO_BACKGROUND)
		return mfsd_ctl_error(c->fd, c->msg.hdr.reqid, EINVAL, "unknown HELLO flags 0x%x",
				      req.flags);
	if ((req.flags & MFS_CTL_HELLO_BACKGROUND) && !c->background) {
		c->background = 1;
		go_idle();
	}
	memset(&r, 0, sizeof(r));
	r.version = MFS_CTL_VERSION;
	r.pid = (uint32_t)getpid();
	r.dev = (uint64_t)mfsd_ctl_mount_dev(ctl);
	r.agcount = fs->geo.agcount;
	r.agino_bits = fs->geo.agblklog + fs->geo.inopblog;
	r.blocksize = fs->geo.blocksize;
	r.inodesize = fs->geo.inodesize;
	r.dblocks = fs->geo.dblocks;
	r.rootino = fs->geo.rootino;
	r.fsflags = ctl->d->ro ? MFS_CTL_FS_RDONLY : 0;
	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++) {
		struct mfs_buf *bp;

		mfs_ag_lock(fs, agno, MFS_AGL_INODES);     /* icount, ifree: fs.h */
		if (mfs_read_agh_inodes(fs, agno, &bp) == 0) {
			const struct mfs_agh *agh = bp->data;

			r.icount += mfs_get32(agh->icount);
			r.ifree += mfs_get32(agh->ifree);
			mfs_buf_put(bp);
		}
		mfs_ag_unlock(fs, agno, MFS_AGL_INODES);
	}
	r.mntlen = (uint32_t)mlen;
	return mfsd_ctl_reply(c, &c->msg.hdr, &r, sizeof(r), ctl->mountpoint, mlen);
}

/* ---- SCRUB -------------------------------------------------------------------------------------- */

/* Append to the reply being built (c->findings); 0 or -ENOMEM. */
static int out_append(struct mfsd_findings *f, const void *p, size_t len)
{
	if (f->len + len > f->cap) {
		size_t nc = f->cap ? f->cap * 2 : 1024;
		uint8_t *nb;

		while (nc < f->len + len)
			nc *= 2;
		nb = mfs_realloc(f->buf, nc);
		if (!nb)
			return -ENOMEM;
		f->buf = nb;
		f->cap = nc;
	}
	memcpy(f->buf + f->len, p, len);
	f->len += len;
	return 0;
}

/* A finding of the running check: appended unless the reply would outgrow its bound
 * (room is kept for the result headers of a whole batch); else counted as dropped. */
static void on_report(void *arg, uint32_t flag, const char *msg)
{
	struct mfsd_client *c = arg;
	struct mfsd_findings *f = &c->findings;
	struct mfs_ctl_finding rec = { .flag = flag, .len = (uint32_t)strnlen(msg, 4096) };
	size_t need = sizeof(rec) + rec.len;

	if (f->len + need > MFS_CTL_MAX_REPLY -
			    MFS_CTL_MAX_BATCH * sizeof(struct mfs_ctl_scrub_reply) ||
	    out_append(f, &rec, sizeof(rec)) != 0) {
		f->dropped++;
		return;
	}
	if (out_append(f, msg, rec.len) != 0) {
		f->len -= sizeof(rec);
		f->dropped++;
		return;
	}
	f->n++;
}

static int on_quiesce(void *arg, int on)
{
	return mfsd_ctl_quiesce(arg, on);
}

/* A repair changed an inode's attributes: the kernel's copy goes (attributes only: no
 * lock the kernel takes for it is held by a request waiting for the quiesce). */
static void on_changed(void *arg, uint64_t ino)
{
	struct mfsd *d = ((struct mfsd_client *)arg)->ctl->d;

	if (d->se)
		(void)fuse_lowlevel_notify_inval_inode(d->se, mfsd_nodeid(d, ino), -1, 0);
}

static int on_cancelled(void *arg)
{
	return mfsd_ctl_cancelled(arg);
}

static int is_ag_type(uint32_t type)
{
	return type == MFS_SCRUB_SB || type == MFS_SCRUB_AGH || type == MFS_SCRUB_AGFL ||
	       type == MFS_SCRUB_BNOBT || type == MFS_SCRUB_CNTBT || type == MFS_SCRUB_INOBT ||
	       type == MFS_SCRUB_RMAPBT;
}

static int is_inode_type(uint32_t type)
{
	return type == MFS_SCRUB_INODE || type == MFS_SCRUB_BMAP || type == MFS_SCRUB_DIR ||
	       type == MFS_SCRUB_XATTR || type == MFS_SCRUB_SYMLINK;
}

/* The request's object, checked against the geometry: 0 or an error already answered (> 0
 * means "answered": the caller returns the send result in *sent). */
static int scrub_req_valid(struct mfsd_client *c, const struct mfs_ctl_scrub_req *q, int *sent)
{
	const struct mfs_geom *g = &c->ctl->d->fs->geo;
	uint64_t reqid = c->msg.hdr.reqid;

	*sent = 0;
	if (q->type >= MFS_SCRUB_NTYPES)
		*sent = mfsd_ctl_error(c->fd, reqid, EINVAL, "unknown object type %u", q->type);
	else if (q->flags || q->pad)
		*sent = mfsd_ctl_error(c->fd, reqid, EINVAL, "unknown scrub flags 0x%x", q->flags);
	else if (is_ag_type(q->type) && q->agno >= g->agcount)
		*sent = mfsd_ctl_error(c->fd, reqid, EINVAL, "AG %u does not exist (%u AGs)",
				       q->agno, g->agcount);
	else if (is_inode_type(q->type) && (q->ino == 0 || mfs_ino_check(c->ctl->d->fs, q->ino)))
		*sent = mfsd_ctl_error(c->fd, reqid, EINVAL, "%llu is not a valid inode number",
				       (unsigned long long)q->ino);
	else
		return 0;
	return 1;
}

/*
 * Run one check and append its result (struct mfs_ctl_scrub_reply, then its findings) to
 * the reply being built.  Returns the check's own result (0 or a negative errno), or
 * -ENOMEM with nothing appended when the result header itself did not fit.
 */
static int run_one(struct mfsd_client *c, const struct mfs_ctl_scrub_req *q, int skip)
{
	struct mfsd_findings *f = &c->findings;
	struct mfs_ctl_scrub_reply r;
	struct mfs_scrub_ctx ctx;
	size_t at = f->len;
	int err;

	memset(&r, 0, sizeof(r));
	if (out_append(f, &r, sizeof(r)) != 0)
		return -ENOMEM;
	f->n = f->dropped = 0;
	memset(&ctx, 0, sizeof(ctx));
	if (skip) {
		err = -ECANCELED;
	} else {
		ctx.fs = c->ctl->d->fs;
		ctx.type = q->type;
		ctx.agno = q->agno;
		ctx.ino = q->ino;
		ctx.report = on_report;
		ctx.quiesce = on_quiesce;
		ctx.cancelled = on_cancelled;
		ctx.hook_arg = c;
		ctx.memo = c->memo;     /* NULL when there was no memory for it: no sharing */
		ctx.census = c->ctl->census;
		err = mfs_scrub(&ctx);
		mfsd_ctl_quiesce(c, 0);
	}
	r.oflags = ctx.oflags;
	r.error = err;
	r.nfindings = f->n;
	r.ndropped = f->dropped;
	memcpy(f->buf + at, &r, sizeof(r));
	return err;
}

/* A new request: nothing its checks copied may come from an earlier one. */
static void memo_begin(struct mfsd_client *c)
{
	if (!c->memo && mfs_scrub_memo_new(&c->memo) != 0)
		c->memo = NULL;
	mfs_scrub_memo_reset(c->memo);
}

/* The batch's extent-map checks looked at together first (mfs_scrub_memo_prepare_bmap);
 * without memory for it, or after an error, each looks for itself. */
static void prepare_bmap(struct mfsd_client *c, uint32_t n)
{
	struct mfs_scrub_ctx ctx;
	uint64_t *inos;
	size_t k = 0;

	if (!c->memo || !(inos = mfs_malloc(n * sizeof(*inos))))
		return;
	for (uint32_t i = 0; i < n; i++) {
		struct mfs_ctl_scrub_req q;

		memcpy(&q, c->msg.payload + i * sizeof(q), sizeof(q));
		if (q.type == MFS_SCRUB_BMAP)
			inos[k++] = q.ino;
	}
	memset(&ctx, 0, sizeof(ctx));
	ctx.fs = c->ctl->d->fs;
	ctx.cancelled = on_cancelled;
	ctx.hook_arg = c;
	ctx.memo = c->memo;
	ctx.census = c->ctl->census;
	if (k > 1)
		(void)mfs_scrub_memo_prepare_bmap(&ctx, inos, k);
	free(inos);
}

/* Send the reply built in c->findings, and forget it. */
static int send_built(struct mfsd_client *c)
{
	struct mfsd_findings *f = &c->findings;
	int err = mfsd_ctl_reply(c, &c->msg.hdr, f->buf, f->len, NULL, 0);

	free(f->buf);
	memset(f, 0, sizeof(*f));
	return err;
}

int mfsd_ctl_scrub(struct mfsd_client *c)
{
	struct mfsd_findings *f = &c->findings;
	struct mfs_ctl_scrub_req q;
	int err, sent;

	if (c->msg.hdr.len != sizeof(q))
		return BAD_SIZE(c, sizeof(q));
	memcpy(&q, c->msg.payload, sizeof(q));
	if (scrub_req_valid(c, &q, &sent))
		return sent;
	memset(f, 0, sizeof(*f));
	memo_begin(c);
	err = run_one(c, &q, 0);
	if (err == -EINVAL || err == -ENOMEM) {
		free(f->buf);
		memset(f, 0, sizeof(*f));
		if (err == -ENOMEM)
			return mfsd_ctl_error(c->fd, c->msg.hdr.reqid, ENOMEM, "out of memory");
		return mfsd_ctl_error(c->fd, c->msg.hdr.reqid, EINVAL, "object type %u, AG %u, "
				      "inode %llu cannot be checked", q.type, q.agno,
				      (unsigned long long)q.ino);
	}
	return send_built(c);
}

int mfsd_ctl_scrub_batch(struct mfsd_client *c)
{
	struct mfsd_findings *f = &c->findings;
	struct mfs_ctl_scrub_req q;
	uint32_t n = c->msg.hdr.len / (uint32_t)sizeof(q);
	uint32_t max = c->msg.hdr.version == 1 ? MFS_CTL_MAX_BATCH_V1 : MFS_CTL_MAX_BATCH;
	int sent;

	if (c->msg.hdr.len % sizeof(q) || n == 0 || n > max)
		return mfsd_ctl_error(c->fd, c->msg.hdr.reqid, EINVAL, "a batch is 1 to %u "
				      "checks of %zu bytes, not %u bytes", max, sizeof(q),
				      c->msg.hdr.len);
	for (uint32_t i = 0; i < n; i++) {
		memcpy(&q, c->msg.payload + i * sizeof(q), sizeof(q));
		if (scrub_req_valid(c, &q, &sent))
			return sent;
	}
	memset(f, 0, sizeof(*f));
	memo_begin(c);
	prepare_bmap(c, n);
	for (uint32_t i = 0; i < n; i++) {
		memcpy(&q, c->msg.payload + i * sizeof(q), sizeof(q));
		if (run_one(c, &q, mfsd_ctl_cancelled(c)) == -ENOMEM && f->len == 0) {
			free(f->buf);
			memset(f, 0, sizeof(*f));
			return mfsd_ctl_error(c->fd, c->msg.hdr.reqid, ENOMEM, "out of memory");
		}
	}
	return send_built(c);
}

/* ---- INODES --------------------------------------------------------------------------------------- */

int mfsd_ctl_inodes(struct mfsd_client *c)
{
	struct mfs_fs *fs = c->ctl->d->fs;
	const struct mfs_geom *g = &fs->geo;
	struct mfs_ctl_inodes_reply r;
	struct mfs_ctl_inodes_req q;
	struct mfs_ctl_inode *out;
	struct mfs_scrub_ctx ctx;
	unsigned bits = g->agblklog + g->inopblog;
	uint64_t ag_first, next;
	uint32_t n;
	int err, end;

	if (c->msg.hdr.len != sizeof(q))
		return BAD_SIZE(c, sizeof(q));
	memcpy(&q, c->msg.payload, sizeof(q));
	if (q.agno >= g->agcount || q.max == 0 || q.max > MFS_CTL_MAX_INODES)
		return mfsd_ctl_error(c->fd, c->msg.hdr.reqid, EINVAL, "AG %u (of %u), batch of "
				      "%u (1..%u): out of range", q.agno, g->agcount, q.max,
				      MFS_CTL_MAX_INODES);
	ag_first = (uint64_t)q.agno << bits;
	if (q.cursor != 0 && (q.cursor < ag_first || q.cursor > ag_first + (1ull << bits)))
		return mfsd_ctl_error(c->fd, c->msg.hdr.reqid, EINVAL, "cursor %llu is not in "
				      "AG %u", (unsigned long long)q.cursor, q.agno);
	out = mfs_calloc(q.max, sizeof(*out));
	if (!out)
		return mfsd_ctl_error(c->fd, c->msg.hdr.reqid, ENOMEM, "out of memory");
	/* The census's list, or the inode btree's and chunks' (repair/scrub.h). */
	memset(&ctx, 0, sizeof(ctx));
	ctx.fs = fs;
	ctx.census = c->ctl->census;
	ctx.cancelled = on_cancelled;
	ctx.hook_arg = c;
	err = mfs_scrub_list_inodes(&ctx, q.agno, q.cursor ? q.cursor : ag_first, out, q.max, &n,
				    &next, &end);
	if (err) {
		free(out);
		return mfsd_ctl_error(c->fd, c->msg.hdr.reqid, -err, "listing the inodes of AG "
				      "%u: %s", q.agno, mfs_is_corruption(err) ?
				      "its header or inode btree is damaged" : strerror(-err));
	}
	memset(&r, 0, sizeof(r));
	r.next = next;
	r.count = n;
	r.flags = end ? MFS_CTL_INODES_END : 0;
	err = mfsd_ctl_reply(c, &c->msg.hdr, &r, sizeof(r), out, (size_t)n * sizeof(*out));
	free(out);
	return err;
}

/* ---- REPAIR ------------------------------------------------------------------------------------- */

/* One scratch descriptor as DESIGN.md (step 3) wants it; 0 or an error answered (1). */
static int check_scratch_fd(struct mfsd_client *c, unsigned idx, int fd, int *sent)
{
	uint64_t reqid = c->msg.hdr.reqid;
	struct statfs sfs;
	struct stat st;
	dev_t mdev;
	int fl, seals;

	*sent = 0;
	if (fstat(fd, &st) != 0)
		*sent = mfsd_ctl_error(c->fd, reqid, EBADF, "descriptor %u: %s", idx,
				       strerror(errno));
	else if (!S_ISREG(st.st_mode))
		*sent = mfsd_ctl_error(c->fd, reqid, EINVAL, "descriptor %u is not a regular file "
				       "(type 0%o)", idx, (unsigned)(st.st_mode & S_IFMT));
	else if ((fl = fcntl(fd, F_GETFL)) < 0 || (fl & O_PATH) || (fl & O_ACCMODE) != O_RDWR)
		*sent = mfsd_ctl_error(c->fd, reqid, EBADF, "descriptor %u is not open "
				       "read-write", idx);
	else if (fl & O_APPEND)
		/* pwrite(2) would write at the end, not where the scratch arrays ask: their
		 * records would read back as zeros (the repair fails late, with a misleading
		 * error) and the file would grow past the reservation */
		*sent = mfsd_ctl_error(c->fd, reqid, EINVAL, "descriptor %u is open for "
				       "appending (O_APPEND): scratch is written at offsets",
				       idx);
	else if (((mdev = mfsd_ctl_mount_dev(c->ctl)) != 0 && st.st_dev == mdev) ||
		 (mdev == 0 && fstatfs(fd, &sfs) == 0 && sfs.f_type == FUSE_SUPER_MAGIC))
		*sent = mfsd_ctl_error(c->fd, reqid, EDEADLK, "descriptor %u lies on the "
				       "filesystem being repaired (that would deadlock)", idx);
	else if ((seals = fcntl(fd, F_GET_SEALS)) > 0 &&
		 (seals & (F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_FUTURE_WRITE)))
		*sent = mfsd_ctl_error(c->fd, reqid, EPERM, "descriptor %u is sealed against "
				       "growth or writes", idx);
	else
		return 0;
	return 1;
}

/*
 * Rebuild the object with the engine (repair/repair.h), scratch in the client's
 * descriptors, stopped by CANCEL, the client going away or memory pressure.  The reply is a SCRUB reply:
 * oflags REPAIRED or UNFIXED, error 0 or the engine's, and one finding of that flag saying
 * what was done or why not.
 */
static int run_repair(struct mfsd_client *c, const struct mfs_ctl_scrub_req *q)
{
	struct mfsd_findings *f = &c->findings;
	struct mfs_repair_ctx *rc = mfs_calloc(1, sizeof(*rc));
	struct mfs_pressure *pressure = NULL;
	struct mfs_ctl_scrub_reply r;
	char done[256];
	int err;

	if (!rc)
		return mfsd_ctl_error(c->fd, c->msg.hdr.reqid, ENOMEM, "out of memory");
	rc->fs = c->ctl->d->fs;
	rc->type = q->type;
	rc->agno = q->agno;
	rc->ino = q->ino;
	for (unsigned i = 0; i < c->msg.nfds; i++)
		rc->fds[i] = c->msg.fds[i];
	rc->nfds = c->msg.nfds;
	rc->cancelled = on_cancelled;
	rc->quiesce = on_quiesce;
	rc->changed = on_changed;
	rc->hook_arg = c;
	rc->client_pid = c->pid;       /* its memory cgroup limits the reserve too */
	/* Memory pressure stops the repair too (PSI, cgroup events; whatever this system
	 * offers: an unavailable source is not an error, and no watcher at all only means no
	 * early stop — the headroom check before the reserve still holds). */
	if (mfs_pressure_start(NULL, &pressure) == 0)
		rc->abort = mfs_pressure_flag(pressure);
	mfsd_test_repair_arm(rc, pressure);   /* tests only */
	err = mfs_repair(rc);
	mfsd_ctl_quiesce(c, 0);
	mfs_pressure_stop(pressure);
	snprintf(done, sizeof(done), "rebuilt: %llu records; scratch estimate %llu bytes, "
		 "reserved %llu, used %llu", (unsigned long long)rc->records,
		 (unsigned long long)rc->estimate, (unsigned long long)rc->reserved,
		 (unsigned long long)rc->scratch_used);
	memset(f, 0, sizeof(*f));
	memset(&r, 0, sizeof(r));
	r.oflags = err ? MFS_SCRUB_OFLAG_UNFIXED : MFS_SCRUB_OFLAG_REPAIRED;
	r.error = err;
	if (out_append(f, &r, sizeof(r)) == 0)
		on_report(c, r.oflags, err ? rc->reason : done);
	free(rc);
	if (f->len < sizeof(r)) {
		free(f->buf);
		memset(f, 0, sizeof(*f));
		return mfsd_ctl_error(c->fd, c->msg.hdr.reqid, ENOMEM, "out of memory");
	}
	r.nfindings = f->n;
	r.ndropped = f->dropped;
	memcpy(f->buf, &r, sizeof(r));
	return send_built(c);
}

int mfsd_ctl_repair(struct mfsd_client *c)
{
	struct mfs_ctl_scrub_req q;
	int sent;

	if (c->msg.hdr.len != sizeof(q))
		return BAD_SIZE(c, sizeof(q));
	memcpy(&q, c->msg.payload, sizeof(q));
	if (scrub_req_valid(c, &q, &sent))
		return sent;
	if (c->msg.nfds == 0)
		return mfsd_ctl_error(c->fd, c->msg.hdr.reqid, EINVAL, "REPAIR needs 1 to %u "
				      "scratch descriptors (SCM_RIGHTS), none came",
				      MFS_CTL_MAX_FDS);
	for (unsigned i = 0; i < c->msg.nfds; i++)
		if (check_scratch_fd(c, i, c->msg.fds[i], &sent))
			return sent;
	if (c->ctl->d->ro)
		return mfsd_ctl_error(c->fd, c->msg.hdr.reqid, EROFS, "mounted read-only");
	if (!mfs_repair_supported(q.type))
		return mfsd_ctl_error(c->fd, c->msg.hdr.reqid, EOPNOTSUPP, "repair is not "
				      "available yet for objects of type %u", q.type);
	return run_repair(c, &q);
}
