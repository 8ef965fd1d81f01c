/*
 * fix.c — online repair in mendfs_scrub: for an object a check found damaged (or every
 * object with --force-rebuild), scratch descriptors are made (memfd_create, or O_TMPFILE
 * files in the -T directory), sent with a REPAIR request (SCM_RIGHTS), the daemon's answer
 * is reported, and the object is checked again.
 *
 * Accounting (report.c turns it into the exit code): the corrupt and xref findings of an
 * object are counted when its check reports them; an object found clean when checked
 * again after a repair adds them to `cleared`, so "corruption left" is corrupt + xref >
 * cleared.  A recheck's findings are not counted again for an object already counted;
 * an object that was clean and is damaged after a forced rebuild is counted then.
 *
 * Which types the daemon can rebuild online is its business: a type it answers
 * EOPNOTSUPP for (no rebuilder, or offline only) is remembered with the reason, and later
 * objects of that type are not sent.
 */
#include "scrub.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum fix_outcome {
	FIX_NONE = -1,          /* not tried */
	FIX_DONE = 0,           /* the daemon rebuilt it */
	FIX_FAILED,             /* refused or failed: why says */
	FIX_UNSUPPORTED,        /* the daemon cannot rebuild this type online */
	FIX_STOPPED,            /* the run stops (signal, the daemon is gone) */
	FIX_GONE,               /* the inode was freed since it was listed: nothing to do */
	FIX_HELD,               /* not asked: what it is rebuilt from is damaged (why says) */
};

struct fixobj {
	uint32_t type, agno;
	uint64_t ino;
	unsigned bad;           /* corrupt + xref findings counted for it */
	int outcome;            /* enum fix_outcome */
	int err;                /* the failed repair's error (negative), 0 */
	char why[700];          /* the daemon's message (done: what was rebuilt) */
};

/* nfds scratch files: memfds, or O_TMPFILE files in the -T directory.  0 or -errno. */
static int make_scratch(const struct scrub_run *run, int *fds, unsigned nfds, char *msg,
			size_t len)
{
	for (unsigned i = 0; i < nfds; i++) {
		fds[i] = run->o.tmpdir ?
			open(run->o.tmpdir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600) :
			memfd_create("mendfs_scrub-scratch", MFD_CLOEXEC);
		if (fds[i] < 0) {
			int err = -errno;

			snprintf(msg, len, "cannot make a scratch file%s%s: %s",
				 run->o.tmpdir ? " in " : "", run->o.tmpdir ? run->o.tmpdir : "",
				 strerror(-err));
			while (i--)
				close(fds[i]);
			return err;
		}
	}
	return 0;
}

static void mark_norepair(struct scrub_run *run, uint32_t type, const char *why)
{
	if (type >= MFS_SCRUB_NTYPES)
		return;
	pthread_mutex_lock(&run->lock);
	if (!(run->norepair & (1u << type))) {
		run->norepair |= 1u << type;
		snprintf(run->norepair_why[type], sizeof(run->norepair_why[type]), "%.299s", why);
	}
	pthread_mutex_unlock(&run->lock);
}

static int is_norepair(struct scrub_run *run, uint32_t type, char *why, size_t len)
{
	int no;

	pthread_mutex_lock(&run->lock);
	no = type < MFS_SCRUB_NTYPES && (run->norepair & (1u << type));
	if (no && why)
		snprintf(why, len, "%s", run->norepair_why[type]);
	pthread_mutex_unlock(&run->lock);
	return no;
}

/* The first finding of a SCRUB/REPAIR reply (after its header) into text. */
static void first_finding(const uint8_t *buf, size_t len, const struct mfs_ctl_scrub_reply *sr,
			  uint32_t want, char *text, size_t tlen)
{
	size_t off = sizeof(*sr);

	text[0] = 0;
	for (uint32_t i = 0; i < sr->nfindings; i++) {
		struct mfs_ctl_finding f;

		if (len - off < sizeof(f))
			return;
		memcpy(&f, buf + off, sizeof(f));
		off += sizeof(f);
		if (f.len > len - off)
			return;
		if (!want || (f.flag & want)) {
			snprintf(text, tlen, "%.*s", (int)f.len, (const char *)buf + off);
			return;
		}
		off += f.len;
	}
}

/*
 * The reverse map is what the free list (its "ag" blocks that are no tree's), the
 * free-space trees, the inode btree and every fork's blocks (extent maps, directories,
 * symlinks, xattrs) are rebuilt from (mfs_scrub_from_rmap).  Once an AG's reverse map
 * was found damaged and its own rebuild could not run (memory pressure, no scratch:
 * mfs_repair_err_unseen; a rebuild that looked and refused to guess leaves the
 * disagreement to the rebuilds after it, which settle it with their own checks),
 * rebuilding those from it would write its damage into them: a record moved onto free
 * space gives the file's real block to the free-space trees and the moved block to the
 * file; an "ag" record moved onto a file's block puts that block on the free list.  So
 * they wait (FIX_HELD) until that reverse map is rebuilt or checks clean;
 * run->rmapleft says which AGs, and why.  An AG's trees wait for that AG's map, a
 * fork for any AG's (its blocks may be in any).
 */
static void rmap_left_set(struct scrub_run *run, uint32_t agno, int left, const char *why)
{
	if (!run->rmapleft || agno >= run->info.h.agcount)
		return;
	pthread_mutex_lock(&run->lock);
	run->rmapleft[agno].left = left;
	snprintf(run->rmapleft[agno].why, sizeof(run->rmapleft[agno].why), "%.399s", left ? why : "");
	pthread_mutex_unlock(&run->lock);
}

/* 1 (o->why saying so) when o is rebuilt from a reverse map left damaged. */
static int held_by_rmap(struct scrub_run *run, struct fixobj *o)
{
	uint32_t lo = 0, hi = 0, held = UINT32_MAX;
	char why[sizeof(run->rmapleft->why)];

	if (!run->rmapleft)
		return 0;
	switch (mfs_scrub_from_rmap(o->type)) {
	case 1:                 /* that AG's map */
		if (o->agno >= run->info.h.agcount)
			return 0;
		lo = o->agno;
		hi = o->agno + 1;
		break;
	case 2:                 /* every AG's */
		hi = run->info.h.agcount;
		break;
	default:
		return 0;
	}
	pthread_mutex_lock(&run->lock);
	for (uint32_t a = lo; a < hi && held == UINT32_MAX; a++)
		if (run->rmapleft[a].left) {
			held = a;
			memcpy(why, run->rmapleft[a].why, sizeof(why));
		}
	pthread_mutex_unlock(&run->lock);
	if (held == UINT32_MAX)
		return 0;
	snprintf(o->why, sizeof(o->why), "it is rebuilt from the reverse map of AG %u, found "
		 "damaged, whose own rebuild could not run: %.400s", held, why);
	return 1;
}

/* Ask the daemon to rebuild o; o->outcome and o->why say how it went. */
static void ask_repair(struct scrub_run *run, struct scrub_conn *c, struct fixobj *o)
{
	struct mfs_ctl_scrub_req q = { .type = o->type, .agno = o->agno, .ino = o->ino };
	struct mfs_ctl_scrub_reply sr;
	int fds[MFS_CTL_MAX_FDS];
	struct scrub_reply r;
	int err;

	if (is_norepair(run, o->type, o->why, sizeof(o->why))) {
		o->outcome = FIX_UNSUPPORTED;
		return;
	}
	if (atomic_load(&run->stop)) {
		o->outcome = FIX_STOPPED;
		return;
	}
	if (held_by_rmap(run, o)) {
		o->outcome = FIX_HELD;
		return;
	}
	if (make_scratch(run, fds, MFS_CTL_MAX_FDS, o->why, sizeof(o->why)) != 0) {
		o->outcome = FIX_FAILED;
		return;
	}
	err = scrub_rpc_fds(c, MFS_CTL_REPAIR, &q, sizeof(q), fds, MFS_CTL_MAX_FDS, &r);
	for (unsigned i = 0; i < MFS_CTL_MAX_FDS; i++)
		close(fds[i]);
	o->err = 0;
	if (err) {
		snprintf(o->why, sizeof(o->why), "%s", r.msg);
		o->err = -r.err;
		if (c->broken) {
			o->outcome = FIX_STOPPED;
			if (scrub_stop(run))
				scrub_error(run, o->type, o->agno, o->ino, "%s", r.msg);
		} else if (r.err == EOPNOTSUPP) {
			o->outcome = FIX_UNSUPPORTED;
			mark_norepair(run, o->type, r.msg);
		} else {
			o->outcome = FIX_FAILED;
			snprintf(o->why, sizeof(o->why), "the daemon refused the repair: %s", r.msg);
		}
		return;
	}
	if (r.len < sizeof(sr)) {
		free(r.buf);
		o->outcome = FIX_FAILED;
		snprintf(o->why, sizeof(o->why), "short REPAIR reply from the daemon");
		return;
	}
	memcpy(&sr, r.buf, sizeof(sr));
	first_finding(r.buf, r.len, &sr, 0, o->why, sizeof(o->why));
	free(r.buf);
	if (!o->why[0])
		snprintf(o->why, sizeof(o->why), "%s", sr.error ? strerror(-sr.error) : "rebuilt");
	o->err = sr.error;
	if (sr.error == 0 && (sr.oflags & MFS_SCRUB_OFLAG_REPAIRED)) {
		o->outcome = FIX_DONE;
	} else if (sr.error == -EOPNOTSUPP) {
		o->outcome = FIX_UNSUPPORTED;
		mark_norepair(run, o->type, o->why);
	} else if (sr.error == -ECANCELED && atomic_load(&run->stop)) {
		o->outcome = FIX_STOPPED;
	} else if (sr.error == -ENOENT && o->ino) {
		o->outcome = FIX_GONE;  /* as a recheck answering ENOENT, below */
	} else {
		o->outcome = FIX_FAILED;
	}
}

/* ask_repair, and a damaged reverse map whose rebuild could not run holds what is rebuilt
 * from it */
static void try_repair(struct scrub_run *run, struct scrub_conn *c, struct fixobj *o)
{
	ask_repair(run, c, o);
	if (o->type == MFS_SCRUB_RMAPBT && o->outcome != FIX_STOPPED)
		rmap_left_set(run, o->agno, o->bad && o->outcome == FIX_FAILED &&
			      mfs_repair_err_unseen(o->err), o->why);
}

/* Check o again without reporting: its corrupt and xref findings (>= 0), the first one's
 * text in text; or a negative errno when the check could not run. */
static int recheck(struct scrub_run *run, struct scrub_conn *c, const struct fixobj *o,
		   char *text, size_t tlen)
{
	struct mfs_ctl_scrub_req q = { .type = o->type, .agno = o->agno, .ino = o->ino };
	const uint32_t badf = MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT;
	struct mfs_ctl_scrub_reply sr;
	struct scrub_reply r;
	size_t off = sizeof(sr);
	int n = 0, err;

	text[0] = 0;
	err = scrub_rpc(c, MFS_CTL_SCRUB, &q, sizeof(q), &r);
	if (err) {
		snprintf(text, tlen, "%s", r.msg);
		if (c->broken)
			scrub_stop(run);
		return err;
	}
	if (r.len < sizeof(sr)) {
		free(r.buf);
		snprintf(text, tlen, "short reply from the daemon");
		return -EPROTO;
	}
	memcpy(&sr, r.buf, sizeof(sr));
	if (sr.error) {
		free(r.buf);
		snprintf(text, tlen, "%s", strerror(-sr.error));
		return sr.error;
	}
	for (uint32_t i = 0; i < sr.nfindings; i++) {
		struct mfs_ctl_finding f;

		if (r.len - off < sizeof(f))
			break;
		memcpy(&f, r.buf + off, sizeof(f));
		off += sizeof(f);
		if (f.len > r.len - off)
			break;
		n += (f.flag & badf) != 0;
		off += f.len;
	}
	if (!n && (sr.oflags & badf))
		n = 1;
	first_finding(r.buf, r.len, &sr, badf, text, tlen);
	if (n && !text[0])
		snprintf(text, tlen, "flagged by the daemon without a message");
	free(r.buf);
	if (o->type == MFS_SCRUB_RMAPBT && n == 0)
		rmap_left_set(run, o->agno, 0, "");     /* clean: what it held goes on */
	return n;
}

/* o found clean when checked again: counted and reported repaired, `text` saying how. */
static void report_fixed(struct scrub_run *run, const struct fixobj *o, const char *text)
{
	pthread_mutex_lock(&run->lock);
	run->n.repaired++;
	run->n.cleared += o->bad;
	pthread_mutex_unlock(&run->lock);
	scrub_repair_report(run, o->type, o->agno, o->ino, "repaired", text, "clean");
}

/* o could not be checked again (err < 0, the reason in first): an operational error. */
static void report_unchecked(struct scrub_run *run, const struct fixobj *o, const char *first)
{
	char text[1400];

	snprintf(text, sizeof(text), "%s%.650s; it could not be checked again: %.550s",
		 o->outcome == FIX_DONE ? "" : "not repaired: ", o->why, first);
	pthread_mutex_lock(&run->lock);
	run->n.errors++;
	if (o->bad)
		run->n.unfixed++;
	pthread_mutex_unlock(&run->lock);
	scrub_repair_report(run, o->type, o->agno, o->ino, "unfixed", text, "");
}

/* o still has n findings when checked again (the first in `first`): counted and reported
 * not repaired, with why.  `by` names what else was rebuilt. */
static void report_left(struct scrub_run *run, const struct fixobj *o, int n, const char *first,
			const char *by)
{
	char text[1400];

	switch (o->outcome) {
	case FIX_UNSUPPORTED:
		snprintf(text, sizeof(text), "not rebuildable online yet: %.700s", o->why);
		break;
	case FIX_FAILED: case FIX_HELD:
		snprintf(text, sizeof(text), "could not repair: %.700s", o->why);
		break;
	case FIX_DONE:
		snprintf(text, sizeof(text), "rebuilt (%.650s), but checking it again still "
			 "finds: %.550s", o->why, first);
		break;
	default:
		snprintf(text, sizeof(text), "still damaged after the rebuild of %.100s: %.550s",
			 by, first);
		break;
	}
	pthread_mutex_lock(&run->lock);
	if (o->bad)
		run->n.unfixed++;
	else
		run->n.corrupt += (unsigned)n;  /* clean before, damaged by the rebuild */
	pthread_mutex_unlock(&run->lock);
	scrub_repair_report(run, o->type, o->agno, o->ino,
			    o->outcome == FIX_UNSUPPORTED ? "unsupported" : "unfixed", text,
			    "corrupt");
}

/* Keep damaged o for scrub_fix_pending: 1, or 0 when that is over or full (report now).
 * A reverse map is kept past SCRUB_MAX_PENDING (one per AG at most): reported now, it
 * would not be tried again, and what it holds (held_by_rmap) would wait to the end. */
static int defer(struct scrub_run *run, const struct fixobj *o)
{
	int kept = 0;

	pthread_mutex_lock(&run->lock);
	if (!run->pend_closed &&
	    (run->npend < SCRUB_MAX_PENDING || o->type == MFS_SCRUB_RMAPBT)) {
		if (run->npend == run->pendcap) {
			size_t nc = run->pendcap ? 2 * run->pendcap : 16;
			struct fixobj *np = realloc(run->pend, nc * sizeof(*np));

			if (np) {
				run->pend = np;
				run->pendcap = nc;
			}
		}
		if (run->npend < run->pendcap) {
			run->pend[run->npend++] = *o;
			kept = 1;
		}
	}
	pthread_mutex_unlock(&run->lock);
	return kept;
}

/*
 * What became of o: checked again (once more after a second repair when `retry` and the
 * first could not be done — another object it depends on may have been rebuilt since),
 * reported and counted.  `by` names what else was rebuilt, for an object set right by
 * another's rebuild.  Still damaged, it waits for the end of phase 4 (defer), where it is
 * checked again after every repair that may set it right.
 */
static void verdict(struct scrub_run *run, struct scrub_conn *c, struct fixobj *o, int retry,
		    const char *by)
{
	char text[1400], first[600];
	int n;

	if (o->outcome == FIX_STOPPED || o->outcome == FIX_GONE || atomic_load(&run->stop))
		return;
	n = recheck(run, c, o, first, sizeof(first));
	if (n > 0 && retry && (o->outcome == FIX_NONE || o->outcome == FIX_FAILED ||
				o->outcome == FIX_HELD)) {
		try_repair(run, c, o);
		if (o->outcome == FIX_STOPPED)
			return;
		n = recheck(run, c, o, first, sizeof(first));
	}
	if (n == -ENOENT || atomic_load(&run->stop))
		return;                 /* an inode freed meanwhile; or the run stops */
	if (n < 0) {
		report_unchecked(run, o, first);
		return;
	}
	if (n == 0) {
		if (!o->bad && o->outcome != FIX_DONE) {
			/* A forced rebuild that could not run is an operational error; one asked
			 * for the sake of a damaged neighbour is reported with that one. */
			if (o->outcome == FIX_FAILED && run->o.force_rebuild) {
				pthread_mutex_lock(&run->lock);
				run->n.errors++;
				pthread_mutex_unlock(&run->lock);
				scrub_repair_report(run, o->type, o->agno, o->ino, "unfixed", o->why,
						    "clean");
			}
			return;
		}
		if (o->outcome == FIX_DONE)
			snprintf(text, sizeof(text), "%s", o->why);
		else
			snprintf(text, sizeof(text), "set right by the rebuild of %.100s", by);
		report_fixed(run, o, text);
		return;
	}
	if (o->bad && defer(run, o))
		return;
	report_left(run, o, n, first, by);
}

static void obj_init(struct fixobj *o, uint32_t type, uint32_t agno, uint64_t ino,
		     unsigned bad)
{
	memset(o, 0, sizeof(*o));
	o->type = type;
	o->agno = agno;
	o->ino = ino;
	o->bad = bad;
	o->outcome = FIX_NONE;
}

void scrub_fix(struct scrub_run *run, struct scrub_conn *c, uint32_t type, uint32_t agno,
	       uint64_t ino, unsigned nbad)
{
	struct fixobj *o;

	if (run->o.dry_run || atomic_load(&run->stop) || (!nbad && !run->o.force_rebuild))
		return;
	if (!nbad && is_norepair(run, type, NULL, 0))
		return;                 /* forced, but this type cannot be rebuilt online */
	o = malloc(sizeof(*o));
	if (!o) {
		scrub_error(run, type, agno, ino, "out of memory: not repaired");
		return;
	}
	obj_init(o, type, agno, ino, nbad);
	try_repair(run, c, o);
	if (!(o->outcome == FIX_UNSUPPORTED && !nbad))
		verdict(run, c, o, 0, "");
	free(o);
}

/* The AG objects in the order their verdicts are given: the rebuildable ones first, in the
 * order they are rebuilt from one another, then those another rebuild may have set right
 * (the header's counters). */
static const uint32_t ag_order[] = {
	MFS_SCRUB_RMAPBT, MFS_SCRUB_AGFL, MFS_SCRUB_BNOBT, MFS_SCRUB_CNTBT, MFS_SCRUB_INOBT,
	MFS_SCRUB_AGH, MFS_SCRUB_SB,
};
#define N_AG_ORDER (sizeof(ag_order) / sizeof(ag_order[0]))

/* Both free-space trees in one rebuild, asked for the damaged one. */
static void repair_space(struct scrub_run *run, struct scrub_conn *c, struct fixobj *o,
			 const struct scrub_agfound *f)
{
	uint32_t t = f[MFS_SCRUB_CNTBT].bad && !f[MFS_SCRUB_BNOBT].bad ? MFS_SCRUB_CNTBT :
		     MFS_SCRUB_BNOBT;
	uint32_t other = t == MFS_SCRUB_BNOBT ? MFS_SCRUB_CNTBT : MFS_SCRUB_BNOBT;

	try_repair(run, c, &o[t]);
	o[other].outcome = o[t].outcome;
	o[other].err = o[t].err;
	memcpy(o[other].why, o[t].why, sizeof(o[other].why));
	if (o[t].outcome == FIX_DONE)
		snprintf(o[other].why, sizeof(o[other].why), "rebuilt with the %s",
			 scrub_type_name(t));
}

/*
 * The order of an AG's rebuilds follows what each is rebuilt from:
 *   - the header first: every other object of the AG is read through it (its rebuild finds
 *     lost roots, recounts, and rebuilds a tree whose root it lost); then the free list
 *     (the trees' rebuilds take blocks from it) — but after the reverse map when that map
 *     is damaged: the list's stock is the map's "ag" blocks (an "ag" record moved onto a
 *     file's block would put that block on the list), while the map's rebuild reads the
 *     list as it is and refuses when the list is what is wrong (a block on it also free,
 *     or another's; the list is then rebuilt, and the map tried again with the verdicts);
 *   - the reverse map before the trees rebuilt from it: the free space is its gaps, the
 *     inode chunks its "inodes" records.  It is rebuilt from the owners themselves (every
 *     inode's forks, the AG's trees), and refuses rather than guess when an owner or the
 *     free space disagrees with it, whereas a free-space tree rebuilt from a damaged reverse
 *     map would hand out blocks that hold data.  Rebuilt after them, as before, a reverse
 *     map that lost a record had the free-space rebuild give that record's blocks away;
 *   - but a free-space tree or inode btree whose own structure is broken (corrupt, not only
 *     disagreeing) comes before the reverse map: its rebuild reads them (what is free, which
 *     inodes to scan), and would refuse;
 *   - the inode btree after the free-space trees (its rebuild may allocate);
 * with a damaged header also the trees whose counters it holds, when its own rebuild could
 * not be done.  Then every object that was damaged or rebuilt is checked again (and one whose
 * rebuild could not be done is tried once more: what it waited for may be rebuilt now).
 */
void scrub_fix_ag(struct scrub_run *run, struct scrub_conn *c, size_t job)
{
	const struct scrub_agfound *f = run->agbad + job * MFS_SCRUB_NTYPES;
	uint32_t agno = (uint32_t)job;
	int force = run->o.force_rebuild, any = force, agh_left = f[MFS_SCRUB_AGH].bad != 0;
	int agfl, agfl_after, space, inobt, space_first, inobt_first;
	struct fixobj *o;

	for (size_t i = 0; i < N_AG_ORDER; i++)
		any |= f[ag_order[i]].bad != 0;
	if (!any || run->o.dry_run || atomic_load(&run->stop))
		return;
	o = calloc(MFS_SCRUB_NTYPES, sizeof(*o));
	if (!o) {
		scrub_error(run, MFS_SCRUB_AGH, agno, 0, "out of memory: not repaired");
		return;
	}
	for (size_t i = 0; i < N_AG_ORDER; i++)
		obj_init(&o[ag_order[i]], ag_order[i], agno, 0, f[ag_order[i]].bad);

	if (f[MFS_SCRUB_AGH].bad) {
		try_repair(run, c, &o[MFS_SCRUB_AGH]);
		agh_left = o[MFS_SCRUB_AGH].outcome != FIX_DONE;
	}
	agfl = f[MFS_SCRUB_AGFL].bad || force;
	agfl_after = f[MFS_SCRUB_RMAPBT].bad != 0;
	if (agfl && !agfl_after)
		try_repair(run, c, &o[MFS_SCRUB_AGFL]);
	space = f[MFS_SCRUB_BNOBT].bad || f[MFS_SCRUB_CNTBT].bad || agh_left || force;
	inobt = f[MFS_SCRUB_INOBT].bad || agh_left || force;
	space_first = f[MFS_SCRUB_BNOBT].corrupt || f[MFS_SCRUB_CNTBT].corrupt;
	inobt_first = f[MFS_SCRUB_INOBT].corrupt != 0;
	if (space && space_first)
		repair_space(run, c, o, f);
	if (inobt && inobt_first)
		try_repair(run, c, &o[MFS_SCRUB_INOBT]);
	if (f[MFS_SCRUB_RMAPBT].bad || (force && !is_norepair(run, MFS_SCRUB_RMAPBT, NULL, 0)))
		try_repair(run, c, &o[MFS_SCRUB_RMAPBT]);
	if (agfl && agfl_after)
		try_repair(run, c, &o[MFS_SCRUB_AGFL]);    /* held if the map's could not run */
	if (space && !space_first)
		repair_space(run, c, o, f);
	if (inobt && !inobt_first)
		try_repair(run, c, &o[MFS_SCRUB_INOBT]);

	for (size_t i = 0; i < N_AG_ORDER && !atomic_load(&run->stop); i++) {
		struct fixobj *x = &o[ag_order[i]];

		if (x->bad || x->outcome == FIX_DONE || x->outcome == FIX_FAILED)
			verdict(run, c, x, 1, "this AG's other structures");
	}
	free(o);
}

/* ---- after phase 4: what was left damaged ---------------------------------------------------- */

/* The order objects are settled in: what others are rebuilt from first (as in an AG's
 * rebuilds), the inodes before the directories that name them. */
static int pend_rank(uint32_t type)
{
	static const uint32_t order[] = {
		MFS_SCRUB_SB, MFS_SCRUB_JOURNAL, MFS_SCRUB_AGH, MFS_SCRUB_RMAPBT, MFS_SCRUB_AGFL,
		MFS_SCRUB_BNOBT, MFS_SCRUB_CNTBT, MFS_SCRUB_INOBT, MFS_SCRUB_INODE, MFS_SCRUB_BMAP,
		MFS_SCRUB_XATTR, MFS_SCRUB_SYMLINK, MFS_SCRUB_DIR,
	};

	for (size_t i = 0; i < sizeof(order) / sizeof(order[0]); i++)
		if (order[i] == type)
			return (int)i;
	return (int)(sizeof(order) / sizeof(order[0]));
}

static int cmp_pend(const void *a, const void *b)
{
	const struct fixobj *x = a, *y = b;
	int rx = pend_rank(x->type), ry = pend_rank(y->type);

	if (rx != ry)
		return rx < ry ? -1 : 1;
	if (x->agno != y->agno)
		return x->agno < y->agno ? -1 : 1;
	return x->ino < y->ino ? -1 : x->ino > y->ino;
}

/* A refusal worth asking again once other objects are rebuilt: one that named damage
 * elsewhere, or a busy filesystem — not a lack of memory or scratch, nor a type the daemon
 * cannot rebuild (asked again right away, they would answer the same).  But a reverse map
 * stopped by memory pressure (ECANCELED: a cancel of ours stops the run instead) is asked
 * again: pressure passes, and until that map is rebuilt it holds its AG's free list and
 * trees and every fork (held_by_rmap). */
static int worth_retrying(const struct fixobj *o)
{
	if (o->outcome == FIX_NONE || o->outcome == FIX_HELD)
		return 1;               /* (held: asked again if what held it is rebuilt) */
	if (o->outcome != FIX_FAILED && o->outcome != FIX_DONE)
		return 0;
	if (o->type == MFS_SCRUB_RMAPBT && o->err == -ECANCELED)
		return 1;
	switch (-o->err) {
	case ENOMEM: case ENOSPC: case EFBIG: case ECANCELED: case EOPNOTSUPP: case ENOENT:
		return 0;
	}
	return 1;
}

#define PEND_PASSES 3

void scrub_fix_pending(struct scrub_run *run, int last)
{
	struct scrub_conn *c = &run->conns[0];
	struct fixobj *p;
	char (*first)[600] = NULL;
	int *left = NULL, *tried = NULL;
	size_t np, nleft;
	int progress = 1;

	pthread_mutex_lock(&run->lock);
	run->pend_closed = 1;
	p = run->pend;
	np = run->npend;
	run->pend = NULL;
	run->npend = run->pendcap = 0;
	pthread_mutex_unlock(&run->lock);
	if (!np) {
		free(p);
		pthread_mutex_lock(&run->lock);
		run->pend_closed = !!last;
		pthread_mutex_unlock(&run->lock);
		return;
	}
	first = calloc(np, sizeof(*first));
	left = calloc(np, sizeof(*left));
	tried = calloc(np, sizeof(*tried));
	if (!first || !left || !tried) {
		/* no room to settle them: reported as they were left */
		for (size_t i = 0; i < np; i++)
			report_left(run, &p[i], 1, "(not checked again: out of memory)", "");
		goto out;       /* (and nothing is kept for later) */
	}
	qsort(p, np, sizeof(*p), cmp_pend);
	if (run->o.verbose)
		scrub_say(run, "%zu damaged object%s left: checked again now that the repairs after "
			  "%s are done%s", np, np == 1 ? "" : "s", np == 1 ? "it" : "them",
			  last ? " (last look)" : "");
	for (size_t i = 0; i < np; i++)
		left[i] = 1;
	nleft = np;
	/* Passes while one sets something right: a rebuild refused for another object's damage
	 * may go through once that one is rebuilt, in this pass or the next. */
	for (int pass = 0; pass < PEND_PASSES && progress && nleft; pass++) {
		progress = 0;
		for (size_t i = 0; i < np && !atomic_load(&run->stop); i++) {
			struct fixobj *o = &p[i];
			char text[1400];
			int n;

			if (!left[i])
				continue;
			n = recheck(run, c, o, first[i], sizeof(first[i]));
			if (n > 0 && !tried[i] && worth_retrying(o)) {
				int before = o->outcome;
				char why[sizeof(o->why)];

				memcpy(why, o->why, sizeof(why));
				try_repair(run, c, o);
				if (o->outcome == FIX_STOPPED)
					break;
				/* held again: not asked, so its one try is kept for a later pass
				 * (the reverse map that holds it may be rebuilt in this one) */
				tried[i] = o->outcome != FIX_HELD;
				n = recheck(run, c, o, first[i], sizeof(first[i]));
				if (n == 0 && o->outcome == FIX_DONE)
					snprintf(text, sizeof(text), "%.500s (its first rebuild: %.650s)",
						 o->why, before == FIX_DONE ? "done, not enough" : why);
				else if (n == 0)
					snprintf(text, sizeof(text), "set right by the repairs after it "
						 "(its own rebuild could not be done: %.650s)", o->why);
			} else if (n == 0) {
				snprintf(text, sizeof(text), "set right by the repairs after it%s%.650s%s",
					 o->outcome == FIX_DONE ? " (rebuilt: " :
					 o->outcome == FIX_NONE ? "" : " (its own rebuild could not be "
					 "done: ", o->outcome == FIX_NONE ? "" : o->why,
					 o->outcome == FIX_NONE ? "" : ")");
			}
			if (n == -ENOENT) {             /* an inode freed meanwhile */
				left[i] = 0;
				nleft--;
			} else if (n < 0) {
				report_unchecked(run, o, first[i]);
				left[i] = 0;
				nleft--;
			} else if (n == 0) {
				report_fixed(run, o, text);
				left[i] = 0;
				nleft--;
				progress = 1;
			}
		}
	}
	if (!last) {
		/* kept for the last look, after the link counts and summaries */
		size_t k = 0;

		for (size_t i = 0; i < np; i++)
			if (left[i])
				p[k++] = p[i];
		pthread_mutex_lock(&run->lock);
		run->pend = p;
		run->npend = run->pendcap = k;
		run->pend_closed = 0;
		pthread_mutex_unlock(&run->lock);
		p = NULL;
		goto out;
	}
	for (size_t i = 0; i < np && !atomic_load(&run->stop); i++)
		if (left[i])
			report_left(run, &p[i], 1, first[i], "the objects repaired after it");
out:
	free(first);
	free(left);
	free(tried);
	free(p);
}
