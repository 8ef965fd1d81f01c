/*
 * repair.c — the repair engine's core: checks the request, dispatches to the rebuilder of
 * the object's type, reserves the scratch up front, provides the abort checks and the sort
 * wrapper, returns the scratch afterwards, and re-runs the object's checker on the result.
 *
 * The promise "abort leaves the filesystem bit-for-bit unchanged" is kept by structure, not
 * by care in each rebuilder: a rebuilder makes every change inside one transaction (trans.h)
 * and commits it last; any error before that cancels the transaction, which restores every
 * block it touched.  Nothing is written to the image in between (a transaction's buffers
 * are held, so the cache cannot write them back).
 */
#include "repair_priv.h"

#include "fs.h"
#include "log.h"
#include "mem.h"
#include "pressure.h"
#include "scrub.h"
#include "trans.h"

#include <errno.h>
#include <fcntl.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REP_ALIGN        (64u * 1024)
#define REP_TRIM_RECORDS 65536u      /* records rebuilt from which the heap is trimmed after */
#define REP_POLL_EVERY   256u        /* comparisons between two polls in a sort */

int rep_fail(struct rep *r, int err, const char *fmt, ...)
{
	va_list ap;

	if (!r->rc->reason[0]) {
		va_start(ap, fmt);
		vsnprintf(r->rc->reason, sizeof(r->rc->reason), fmt, ap);
		va_end(ap);
	}
	return err;
}

int rep_scratch_err(struct rep *r, int err, const char *what)
{
	if (err == -ECANCELED && r->stop_err)
		return r->stop_err;          /* the reason was set when stop was raised */
	if (err == -ENOMEM)
		return rep_fail(r, err, "scratch exhausted while %s (a short read or write of "
				"the scratch file, or no memory): give a scratch directory on "
				"disk (-T DIR) or more memory", what);
	return rep_fail(r, err, "scratch file error while %s: %s", what, strerror(-err));
}

static void rep_raise(struct rep *r, int err)
{
	if (!r->stop_err)
		r->stop_err = err;
	atomic_store(&r->stop, 1);
}

int rep_poll(struct rep *r)
{
	struct mfs_repair_ctx *rc = r->rc;

	if (r->stop_err)
		return r->stop_err;
	if (rc->abort && atomic_load(rc->abort)) {
		/* the flag holds the MFS_PRESSURE_* bit of the source that fired: named, so
		 * that a user (or a test) can tell the kernel's PSI from a cgroup event */
		unsigned src = (unsigned)atomic_load(rc->abort);

		rep_raise(r, rep_fail(r, -ECANCELED, "memory pressure (%s): the repair stopped "
				      "before changing anything; retry later or with more memory",
				      mfs_pressure_source_name(src)));
		return r->stop_err;
	}
	if (rc->cancelled && rc->cancelled(rc->hook_arg)) {
		rep_raise(r, rep_fail(r, -ECANCELED, "cancelled: the repair stopped before "
				      "changing anything"));
		return r->stop_err;
	}
	return 0;
}

int rep_hook(struct rep *r, enum mfs_repair_point at)
{
	int err;

	if (!r->rc->test_hook)
		return 0;
	err = r->rc->test_hook(r->rc->hook_arg, at);
	if (err) {
		rep_raise(r, rep_fail(r, err < 0 ? err : -ECANCELED, "stopped by the test hook at "
				      "point %d", (int)at));
		return r->stop_err;
	}
	return 0;
}

int rep_commit(struct rep *r, struct mfs_trans *tp, int err, const char *fmt, ...)
{
	char what[160];
	va_list ap;

	if (!err)
		err = rep_hook(r, MFS_REPAIR_AT_BUILT);
	if (!err)
		err = rep_poll(r);
	if (err) {
		mfs_trans_cancel(tp);
		return err;
	}
	err = mfs_trans_commit(tp);
	if (!err)
		return 0;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	return rep_fail(r, err, "committing %s failed: %s (nothing changed unless the journal "
			"reported an I/O error)", what, strerror(-err));
}

int rep_nested(struct rep *r, struct mfs_repair_ctx *sub, uint32_t type, uint64_t ino)
{
	*sub = *r->rc;
	sub->type = type;
	sub->agno = 0;
	sub->ino = ino;
	sub->quiesce = NULL;                /* held already, by this repair */
	sub->test_hook = NULL;
	return mfs_repair(sub);
}

void rep_changed(struct rep *r, uint64_t ino)
{
	if (r->rc->changed)
		r->rc->changed(r->rc->hook_arg, ino);
}

/* ---- scratch ------------------------------------------------------------------------------ */
static uint64_t round_up(uint64_t v, uint64_t a)
{
	return (v + a - 1) / a * a;
}

int rep_reserve(struct rep *r, const struct rep_array_plan *plan, unsigned n)
{
	struct mfs_repair_ctx *rc = r->rc;
	struct mfs_reserve_estimate e = { 0, 0 };
	struct mfs_reserve_opts o;
	struct mfs_reserve_result *res;
	uint64_t layout = 0, want;
	int err;

	for (unsigned i = 0; i < n; i++) {
		mfs_reserve_estimate_xfarray(&e, plan[i].max_nr, plan[i].recsize);
		layout += round_up(plan[i].max_nr * plan[i].recsize, REP_ALIGN);
	}
	r->end = r->base0 + layout;
	want = mfs_reserve_estimate_bytes(&e);
	if (want < layout)
		want = layout;
	rc->estimate = e.file_bytes;
	res = mfs_calloc(1, sizeof(*res));
	if (!res)
		return rep_fail(r, -ENOMEM, "no memory for the scratch reserve");
	memset(&o, 0, sizeof(o));
	o.margin = rc->margin;
	o.peer = rc->client_pid;
	o.abort = rc->abort;
	err = mfs_reserve(rc->fds[0], r->base0, want, &o, res);
	if (err) {
		if (err == -ECANCELED)
			rep_poll(r);
		if (err == -ENOMEM)
			rep_fail(r, err, "refused: the repair needs about %llu bytes of scratch "
				 "(%llu reserved with headroom); %s; give a scratch directory on "
				 "disk (-T DIR) or more memory", (unsigned long long)e.file_bytes,
				 (unsigned long long)want, res->msg);
		else
			rep_fail(r, err, "could not reserve %llu bytes of scratch for an estimate "
				 "of %llu: %s%s%s; give a scratch directory with more room (-T DIR) "
				 "or more memory", (unsigned long long)want,
				 (unsigned long long)e.file_bytes, strerror(-err),
				 res->msg[0] ? ": " : "", res->msg);
		free(res);
		return err;
	}
	rc->reserved = res->reserved;
	free(res);
	r->next = r->base0;
	return 0;
}

int rep_array(struct rep *r, size_t recsize, uint64_t max_nr, struct mfs_xfarray **out)
{
	int err;

	*out = NULL;
	if (r->narr == REP_MAX_ARRAYS)
		return rep_fail(r, -EINVAL, "internal: too many scratch arrays");
	if (max_nr == 0)
		max_nr = 1;
	err = mfs_xfarray_create(r->rc->fds[0], r->next, recsize, max_nr, out);
	if (err)
		return rep_scratch_err(r, err, "creating a scratch array");
	mfs_xfarray_set_abort(*out, &r->stop);
	r->arr[r->narr++] = *out;
	r->next += round_up(max_nr * recsize, REP_ALIGN);
	return 0;
}

/* Give the scratch back: arrays freed, the bytes punched, the file at its size on entry. */
void rep_release(struct rep *r)
{
	struct mfs_repair_ctx *rc = r->rc;
	uint64_t used = 0;

	for (unsigned i = 0; i < r->narr; i++) {
		used += mfs_xfarray_count(r->arr[i]) * mfs_xfarray_recsize(r->arr[i]);
		mfs_xfarray_destroy(r->arr[i]);
		r->arr[i] = NULL;
	}
	r->narr = 0;
	if (used > rc->scratch_used)
		rc->scratch_used = used;
	if (!r->end)
		return;              /* nothing was reserved: the descriptor is untouched */
	if (r->end > r->base0)
		(void)fallocate(rc->fds[0], FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, r->base0,
				(off_t)(r->end - r->base0));
	(void)ftruncate(rc->fds[0], (off_t)r->size0);
}

/* ---- sorting ------------------------------------------------------------------------------ */
struct rep_cmp {
	struct rep *r;
	mfs_xfarray_cmp_fn cmp;
};

static int rep_cmp_fn(const void *a, const void *b, void *priv)
{
	struct rep_cmp *c = priv;
	struct rep *r = c->r;

	if (!r->sort_hooked) {
		r->sort_hooked = 1;
		rep_hook(r, MFS_REPAIR_AT_SORTING);
	}
	if (++r->ncmp % REP_POLL_EVERY == 0)
		rep_poll(r);
	return c->cmp(a, b, NULL);
}

/*
 * 1 when a is in cmp order already, found by one pass that stops at the first pair out of
 * order (or at an unset slot, which only the sort drops); 0 otherwise, or the error.  The
 * records are often gathered in order (owners scanned in inode order, an old tree read in
 * key order, a file that fills an AG), and then the pass costs one read of the array
 * instead of a sort; an array that is not is usually found out within a few records.  The
 * comparisons go through rep_cmp_fn: they poll and call the AT_SORTING hook as a sort's do.
 */
static int rep_in_order(struct rep *r, struct mfs_xfarray *a, struct rep_cmp *c)
{
	uint64_t n = mfs_xfarray_count(a);
	size_t st = (mfs_xfarray_recsize(a) + 7) & ~(size_t)7;     /* aligned slots */
	uint8_t *b;
	int err = 0, sorted = 0;

	if (n < 2 || mfs_xfarray_unset_count(a))
		return n < 2 && !mfs_xfarray_unset_count(a);
	b = mfs_malloc(2 * st);
	if (!b)
		return 0;               /* the sort alone */
	for (uint64_t i = 0; i < n && !err; i++) {
		err = mfs_xfarray_get(a, i, b + (i & 1) * st);
		if (err == -ENOENT) {
			err = 0;
			break;
		}
		if (!err && i && rep_cmp_fn(b + ((i - 1) & 1) * st, b + (i & 1) * st, c) > 0)
			break;
		if (!err && r->stop_err)
			err = r->stop_err;      /* rep_cmp_fn polls */
		sorted = !err && i + 1 == n;
	}
	free(b);
	return err ? err : sorted;
}

int rep_sort(struct rep *r, struct mfs_xfarray *a, mfs_xfarray_cmp_fn cmp, const char *what)
{
	struct rep_cmp c = { r, cmp };
	int err = rep_in_order(r, a, &c);

	if (err < 0)
		return rep_scratch_err(r, err, what);
	if (!err)
		err = mfs_xfarray_sort(a, rep_cmp_fn, &c);
	else
		err = 0;
	/* A sort small enough to run in memory may finish without looking at the flag. */
	if (!err)
		err = rep_poll(r);
	return err ? rep_scratch_err(r, err, what) : 0;
}

/* ---- the entry point ------------------------------------------------------------------------ */
/*
 * The rebuilders, one line each: the object type and the function that rebuilds it
 * (declared in repair_priv.h).  A type missing here gives -EOPNOTSUPP.
 */
static const struct {
	uint32_t type;
	int (*rebuild)(struct rep *r);
} rep_rebuilders[] = {
	{ MFS_SCRUB_BNOBT, rep_allocbt },
	{ MFS_SCRUB_CNTBT, rep_allocbt },
	{ MFS_SCRUB_INOBT, rep_inobt },
	{ MFS_SCRUB_AGFL, rep_agfl },
	{ MFS_SCRUB_RMAPBT, rep_rmapbt },
	{ MFS_SCRUB_SUMMARY, rep_summary },
	{ MFS_SCRUB_DIR, rep_dir },
	{ MFS_SCRUB_XATTR, rep_xattr },
	{ MFS_SCRUB_SYMLINK, rep_symlink },
	{ MFS_SCRUB_SB, rep_sb },
	{ MFS_SCRUB_AGH, rep_aghdr },
	{ MFS_SCRUB_JOURNAL, rep_journal },
	{ MFS_SCRUB_BMAP, rep_bmap },
	{ MFS_SCRUB_INODE, rep_inode },
	{ MFS_SCRUB_NLINKS, rep_nlinks },
	{ MFS_SCRUB_ORPHANS, rep_orphans },
};

static int (*rep_rebuilder(uint32_t type))(struct rep *)
{
	for (size_t i = 0; i < sizeof(rep_rebuilders) / sizeof(rep_rebuilders[0]); i++)
		if (rep_rebuilders[i].type == type)
			return rep_rebuilders[i].rebuild;
	return NULL;
}

int mfs_repair_supported(uint32_t type)
{
	return rep_rebuilder(type) != NULL;
}

static int check_fd(struct rep *r, unsigned i)
{
	int fd = r->rc->fds[i], fl;
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0)
		return rep_fail(r, -EINVAL, "scratch descriptor %u (%d) is not open", i, fd);
	if (!S_ISREG(st.st_mode))
		return rep_fail(r, -EINVAL, "scratch descriptor %u is not a regular file", i);
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || (fl & O_ACCMODE) != O_RDWR)
		return rep_fail(r, -EINVAL, "scratch descriptor %u is not open read-write", i);
	if (i == 0) {
		r->size0 = (uint64_t)st.st_size;
		r->base0 = round_up(r->size0, REP_ALIGN);
	}
	return 0;
}

struct recheck {
	struct mfs_repair_ctx *rc;
	unsigned n;
	uint32_t flags;
	char first[512];
};

static int recheck_quiesce(void *arg, int on)
{
	struct recheck *rk = arg;

	return rk->rc->quiesce(rk->rc->hook_arg, on);
}

static void recheck_report(void *arg, uint32_t flag, const char *msg)
{
	struct recheck *rk = arg;

	if (!(flag & (MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT)))
		return;
	if (!rk->n++)
		snprintf(rk->first, sizeof(rk->first), "%s", msg);
	rk->flags |= flag;
}

/* The checker of each object the rebuild replaced must now find it clean. */
static int revalidate(struct rep *r)
{
	struct mfs_repair_ctx *rc = r->rc;
	uint32_t types[2] = { rc->type, 0 };
	unsigned nt = 1;

	if (rc->type == MFS_SCRUB_BNOBT || rc->type == MFS_SCRUB_CNTBT) {
		types[0] = MFS_SCRUB_BNOBT;
		types[1] = MFS_SCRUB_CNTBT;
		nt = 2;
	}
	for (unsigned i = 0; i < nt; i++) {
		struct mfs_scrub_ctx sc;
		struct recheck rk;
		int err;

		memset(&sc, 0, sizeof(sc));
		memset(&rk, 0, sizeof(rk));
		sc.fs = rc->fs;
		sc.type = types[i];
		sc.agno = rc->agno;
		sc.ino = rc->ino;
		sc.report = recheck_report;
		if (rc->quiesce)
			sc.quiesce = recheck_quiesce;
		sc.hook_arg = &rk;
		rk.rc = rc;
		err = mfs_scrub(&sc);
		if (err == -ENOENT && rc->type == MFS_SCRUB_INODE)
			continue;       /* an inode beyond repair was cleared (repair_inode.c) */
		if (err)
			return rep_fail(r, err, "rebuilt, but the check afterwards failed: %s",
					strerror(-err));
		if (rk.n)
			return rep_fail(r, -EFSCORRUPTED, "rebuilt, but the check afterwards still "
					"finds %u problem(s): %s", rk.n, rk.first);
	}
	return 0;
}

int mfs_repair(struct mfs_repair_ctx *rc)
{
	struct rep *r;
	int err;

	if (!rc)
		return -EINVAL;
	rc->reason[0] = 0;
	rc->estimate = rc->reserved = rc->scratch_used = rc->records = 0;
	if (!rc->fs)
		return -EINVAL;
	r = mfs_calloc(1, sizeof(*r));
	if (!r) {
		snprintf(rc->reason, sizeof(rc->reason), "no memory to start the repair");
		return -ENOMEM;
	}
	r->rc = rc;
	r->fs = rc->fs;
	atomic_init(&r->stop, 0);
	if (!mfs_repair_supported(rc->type)) {
		err = rep_fail(r, -EOPNOTSUPP, "no rebuilder for objects of type %u yet", rc->type);
		goto out;
	}
	if (rc->agno >= rc->fs->geo.agcount) {
		err = rep_fail(r, -EINVAL, "AG %u out of range (the filesystem has %u)", rc->agno,
			       rc->fs->geo.agcount);
		goto out;
	}
	if (rc->nfds < 1 || rc->nfds > MFS_REPAIR_MAX_FDS) {
		err = rep_fail(r, -EINVAL, "a repair needs 1 to %u scratch descriptors, got %u",
			       MFS_REPAIR_MAX_FDS, rc->nfds);
		goto out;
	}
	for (unsigned i = 0; i < rc->nfds; i++) {
		err = check_fd(r, i);
		if (err)
			goto out;
	}
	err = rep_poll(r);
	if (err)
		goto out;
	err = rep_rebuilder(rc->type)(r);
	rep_release(r);
	if (!err)
		err = revalidate(r);
out:
	rep_release(r);
	if (err && !rc->reason[0])
		snprintf(rc->reason, sizeof(rc->reason), "%s", strerror(-err));
	if (err)
		mfs_log(MFS_LOG_WARN, "repair of object type %u AG %u: %s", rc->type, rc->agno,
			rc->reason);
	free(r);
#if defined(__GLIBC__)
	/* What a large rebuild freed (its scratch arrays' window caches, the journal's images
	 * of its commit once checkpointed, the check's records: ~10 MiB at 8M extents) lies
	 * in the middle of the heap, which glibc gives back only from its top: give it back
	 * now, the daemon lives on.  Not after small repairs (a scrub may make thousands):
	 * the trim walks the whole heap. */
	if (rc->records >= REP_TRIM_RECORDS)
		malloc_trim(0);
#endif
	return err;
}
