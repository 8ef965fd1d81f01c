/*
 * work.c — the worker threads of mendfs_scrub, each with its own connection to the daemon
 * (a connection answers one request at a time), and checking one object: a SCRUB request
 * whose findings are reported and counted.  A batch of checks (phases 3 and 4) is followed
 * by the repair of what it found damaged (fix.c), on the same connection.
 */
#include "scrub.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

static const char *const type_names[MFS_SCRUB_NTYPES] = {
	[MFS_SCRUB_PROBE] = "probe",
	[MFS_SCRUB_SB] = "superblock",
	[MFS_SCRUB_AGH] = "AG header",
	[MFS_SCRUB_AGFL] = "AG free list",
	[MFS_SCRUB_BNOBT] = "free space by block btree",
	[MFS_SCRUB_CNTBT] = "free space by length btree",
	[MFS_SCRUB_INOBT] = "inode btree",
	[MFS_SCRUB_RMAPBT] = "reverse map btree",
	[MFS_SCRUB_JOURNAL] = "journal",
	[MFS_SCRUB_INODE] = "inode record",
	[MFS_SCRUB_BMAP] = "extent map",
	[MFS_SCRUB_DIR] = "directory",
	[MFS_SCRUB_XATTR] = "extended attributes",
	[MFS_SCRUB_SYMLINK] = "symbolic link",
	[MFS_SCRUB_NLINKS] = "link counts",
	[MFS_SCRUB_ORPHANS] = "orphan list",
	[MFS_SCRUB_SUMMARY] = "summary counters",
};

const char *scrub_type_name(uint32_t type)
{
	return type < MFS_SCRUB_NTYPES ? type_names[type] : "filesystem";
}

int scrub_stop(struct scrub_run *run)
{
	if (atomic_exchange(&run->stop, 1))
		return 0;
	/* Every request in flight ends at once: its worker sees the hang-up (and leaves,
	 * the run being stopped), the daemon too, and cancels it. */
	for (unsigned i = 0; i < run->nthreads; i++)
		if (run->conns[i].fd >= 0)
			shutdown(run->conns[i].fd, SHUT_RDWR);
	return 1;
}

struct worker {
	struct scrub_run *run;
	struct scrub_conn *conn;
	size_t njobs;
	scrub_job_fn fn;
};

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct scrub_run *run = w->run;

	for (;;) {
		size_t job = atomic_fetch_add(&run->next_job, 1);

		if (job >= w->njobs || atomic_load(&run->stop))
			break;
		w->fn(run, w->conn, job);
	}
	return NULL;
}

void scrub_run_jobs(struct scrub_run *run, size_t njobs, scrub_job_fn fn)
{
	struct worker w[SCRUB_MAX_THREADS];
	pthread_t tid[SCRUB_MAX_THREADS];
	int started[SCRUB_MAX_THREADS] = { 0 };
	unsigned n = run->nthreads;

	if (n > njobs)
		n = njobs ? (unsigned)njobs : 1;
	atomic_store(&run->next_job, 0);
	for (unsigned i = 0; i < n; i++) {
		w[i] = (struct worker){ .run = run, .conn = &run->conns[i], .njobs = njobs,
					.fn = fn };
		/* Thread 0 is this one; the others only when they can be had. */
		if (i > 0 && pthread_create(&tid[i], NULL, worker_main, &w[i]) == 0)
			started[i] = 1;
	}
	worker_main(&w[0]);
	for (unsigned i = 1; i < n; i++)
		if (started[i])
			pthread_join(tid[i], NULL);
}

/* The findings of one result at buf[*off...) (after its header), reported; *off moves past
 * them.  Returns the OR of their flags. */
static uint32_t report_findings(struct scrub_run *run, const struct mfs_ctl_scrub_req *q,
				const uint8_t *buf, size_t len, size_t *off,
				const struct mfs_ctl_scrub_reply *sr, unsigned *nbad,
				unsigned *ncor)
{
	uint32_t seen = 0;

	for (uint32_t i = 0; i < sr->nfindings; i++) {
		struct mfs_ctl_finding f;

		if (len - *off < sizeof(f))
			break;
		memcpy(&f, buf + *off, sizeof(f));
		*off += sizeof(f);
		if (f.len > len - *off)
			break;
		scrub_finding(run, q->type, q->agno, q->ino, f.flag, (const char *)buf + *off,
			      f.len);
		seen |= f.flag;
		*nbad += (f.flag & (MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT)) != 0;
		*ncor += (f.flag & MFS_SCRUB_OFLAG_CORRUPT) != 0;
		*off += f.len;
	}
	if (sr->ndropped) {
		char text[128];
		int n = snprintf(text, sizeof(text), "%u more findings were not sent (too many)",
				 sr->ndropped);

		scrub_finding(run, q->type, q->agno, q->ino, MFS_SCRUB_OFLAG_WARNING, text,
			      (size_t)n);
	}
	return seen;
}

/* Checks counted by outcome, added to the run's counts under its lock once per reply
 * rather than once per check (a batch holds up to 2048). */
struct tally {
	uint64_t objects, skipped, incomplete;
};

static void tally_flush(struct scrub_run *run, struct tally *t)
{
	pthread_mutex_lock(&run->lock);
	run->n.objects += t->objects;
	run->n.skipped += t->skipped;
	run->n.incomplete += t->incomplete;
	pthread_mutex_unlock(&run->lock);
	memset(t, 0, sizeof(*t));
}

/* One check's result at buf[*off...): reported and counted into *t; *off moves past it,
 * *nbad = its corrupt and xref findings, *ncor its corrupt ones.  Returns the check's error
 * (0 or negative), -EPROTO for a short reply. */
static int take_result(struct scrub_run *run, const struct mfs_ctl_scrub_req *q,
		       const uint8_t *buf, size_t len, size_t *off, unsigned *nbad,
		       unsigned *ncor, struct tally *t)
{
	static const char unexplained[] = "flagged by the daemon without a message";
	struct mfs_ctl_scrub_reply sr;
	uint32_t seen;

	*nbad = *ncor = 0;
	if (len - *off < sizeof(sr)) {
		scrub_error(run, q->type, q->agno, q->ino, "short reply from the daemon");
		return -EPROTO;
	}
	memcpy(&sr, buf + *off, sizeof(sr));
	*off += sizeof(sr);
	seen = report_findings(run, q, buf, len, off, &sr, nbad, ncor);
	/* Flags without a finding that explains them (should not happen) still count. */
	for (uint32_t bit = 1; bit <= MFS_SCRUB_OFLAG_UNFIXED; bit <<= 1)
		if ((sr.oflags & bit) && !(seen & bit)) {
			scrub_finding(run, q->type, q->agno, q->ino, bit, unexplained,
				      sizeof(unexplained) - 1);
			*nbad += (bit & (MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT)) != 0;
			*ncor += bit == MFS_SCRUB_OFLAG_CORRUPT;
		}
	switch (sr.error) {
	case 0:
		t->objects++;
		break;
	case -ENOENT:                   /* an inode freed since it was listed */
		t->skipped++;
		break;
	case -EOPNOTSUPP: {
		int first;

		pthread_mutex_lock(&run->lock);
		first = !(run->unsupported & (1u << q->type));
		run->unsupported |= 1u << q->type;
		run->n.skipped++;
		pthread_mutex_unlock(&run->lock);
		if (first && run->o.verbose)
			scrub_say(run, "note: the daemon cannot check the %s yet: skipped",
				  scrub_type_name(q->type));
		break;
	}
	case -ECANCELED:
		t->incomplete++;
		break;
	default:
		scrub_error(run, q->type, q->agno, q->ino, "the check could not run: %s",
			    strerror(-sr.error));
		break;
	}
	return sr.error;
}

/* A request that got no results: say why (once when the connection broke). */
static void rpc_failed(struct scrub_run *run, struct scrub_conn *c,
		       const struct mfs_ctl_scrub_req *q, const struct scrub_reply *r)
{
	if (!c->broken)
		scrub_error(run, q->type, q->agno, q->ino, "the daemon refused the check: %s",
			    r->msg);
	else if (scrub_stop(run))
		scrub_error(run, q->type, q->agno, q->ino, "%s", r->msg);
}

int scrub_check_n(struct scrub_run *run, struct scrub_conn *c, uint32_t type, uint32_t agno,
		  uint64_t ino, unsigned *nbad, unsigned *ncorrupt)
{
	struct mfs_ctl_scrub_req q = { .type = type, .agno = agno, .ino = ino };
	struct tally t = { 0, 0, 0 };
	struct scrub_reply r;
	unsigned ncor = 0;
	size_t off = 0;
	int err;

	*nbad = 0;
	if (ncorrupt)
		*ncorrupt = 0;
	err = scrub_rpc(c, MFS_CTL_SCRUB, &q, sizeof(q), &r);
	if (err) {
		rpc_failed(run, c, &q, &r);
		return err;
	}
	err = take_result(run, &q, r.buf, r.len, &off, nbad, &ncor, &t);
	tally_flush(run, &t);
	free(r.buf);
	if (ncorrupt)
		*ncorrupt = ncor;
	return err;
}

int scrub_check(struct scrub_run *run, struct scrub_conn *c, uint32_t type, uint32_t agno,
		uint64_t ino)
{
	unsigned nbad;

	return scrub_check_n(run, c, type, agno, ino, &nbad, NULL);
}

int scrub_check_batch(struct scrub_run *run, struct scrub_conn *c,
		      const struct mfs_ctl_scrub_req *q, unsigned n, int *errs)
{
	unsigned nbad[MFS_CTL_MAX_BATCH] = { 0 };
	struct scrub_reply r;
	size_t off = 0;
	int err;

	if (n > c->max_batch || n > MFS_CTL_MAX_BATCH)
		return -EINVAL;
	err = scrub_rpc(c, MFS_CTL_SCRUB_BATCH, q, n * sizeof(*q), &r);
	if (err == -EBADRQC && !c->broken) {
		/* A daemon from before SCRUB_BATCH: one check at a time. */
		for (unsigned i = 0; i < n; i++)
			errs[i] = scrub_check_n(run, c, q[i].type, q[i].agno, q[i].ino, &nbad[i],
						NULL);
		err = 0;
	} else if (err) {
		rpc_failed(run, c, &q[0], &r);
		return err;
	} else {
		struct tally t = { 0, 0, 0 };
		unsigned ncor;

		for (unsigned i = 0; i < n; i++) {
			errs[i] = take_result(run, &q[i], r.buf, r.len, &off, &nbad[i], &ncor, &t);
			if (errs[i] == -EPROTO) {
				while (++i < n)
					errs[i] = -EPROTO;
				err = -EPROTO;
			}
		}
		tally_flush(run, &t);
		free(r.buf);
	}
	for (unsigned i = 0; i < n && !atomic_load(&run->stop); i++)
		if (errs[i] == 0)
			scrub_fix(run, c, q[i].type, q[i].agno, q[i].ino, nbad[i]);
	return err;
}
