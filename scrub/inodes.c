/*
 * inodes.c — phases 3 and 4 of mendfs_scrub: every allocated inode, listed through the
 * daemon (INODES, AG by AG, in batches after a cursor), is checked by the workers in
 * parallel (its core fields, extent map, attributes, symlink target); the directories seen
 * are checked in phase 4, once every inode has been looked at.
 *
 * The listing is shared: a worker takes the enumeration lock, fetches the next batch over
 * its own connection, and checks that batch after letting go, so listing one batch
 * overlaps checking others.  An inode listed with a damaged mode gets its record check
 * alone; once that record is repaired, it is listed again and gets its other checks.
 */
#include "scrub.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* The next batch into out[]; 0 when every AG is done (or the run stops). */
static uint32_t next_batch(struct scrub_run *run, struct scrub_conn *c,
			   struct mfs_ctl_inode *out)
{
	uint32_t n = 0;

	pthread_mutex_lock(&run->enum_lock);
	while (!n && run->enum_ag < run->info.h.agcount && !atomic_load(&run->stop)) {
		struct mfs_ctl_inodes_req q = { .agno = run->enum_ag, .max = SCRUB_INODE_BATCH,
						.cursor = run->enum_cursor };
		struct mfs_ctl_inodes_reply r;
		struct scrub_reply rep;

		if (scrub_rpc(c, MFS_CTL_INODES, &q, sizeof(q), &rep) != 0) {
			if (c->broken)
				scrub_stop(run);
			if (rep.err == EUCLEAN || rep.err == EBADMSG) {
				/* Damage phase 2 reported: these inodes go unchecked. */
				char text[700];
				int len = snprintf(text, sizeof(text), "the inodes of this AG were "
						   "not checked: %s", rep.msg);

				scrub_finding(run, MFS_SCRUB_INOBT, run->enum_ag, 0,
					      MFS_SCRUB_OFLAG_INCOMPLETE, text,
					      len < 0 ? 0 : (size_t)len < sizeof(text) ? (size_t)len
					      : sizeof(text) - 1);
			} else {
				scrub_error(run, MFS_SCRUB_INOBT, run->enum_ag, 0, "listing the "
					    "inodes of this AG: %s", rep.msg);
			}
			run->enum_ag++;
			run->enum_cursor = 0;
			continue;
		}
		if (rep.len < sizeof(r)) {
			free(rep.buf);
			scrub_error(run, MFS_SCRUB_INOBT, run->enum_ag, 0, "short INODES reply");
			run->enum_ag++;
			run->enum_cursor = 0;
			continue;
		}
		memcpy(&r, rep.buf, sizeof(r));
		if (r.count > SCRUB_INODE_BATCH ||
		    rep.len - sizeof(r) != (size_t)r.count * sizeof(*out)) {
			free(rep.buf);
			scrub_error(run, MFS_SCRUB_INOBT, run->enum_ag, 0, "malformed INODES reply");
			run->enum_ag++;
			run->enum_cursor = 0;
			continue;
		}
		memcpy(out, rep.buf + sizeof(r), (size_t)r.count * sizeof(*out));
		free(rep.buf);
		n = r.count;
		if ((r.flags & MFS_CTL_INODES_END) || r.next <= run->enum_cursor) {
			run->enum_ag++;
			run->enum_cursor = 0;
		} else {
			run->enum_cursor = r.next;
		}
	}
	pthread_mutex_unlock(&run->enum_lock);
	return n;
}

static void add_dir(struct scrub_run *run, uint64_t ino)
{
	pthread_mutex_lock(&run->enum_lock);
	if (run->ndirs == run->dirs_cap) {
		size_t nc = run->dirs_cap ? run->dirs_cap * 2 : 1024;
		uint64_t *nv = realloc(run->dirs, nc * sizeof(*nv));

		if (!nv) {
			pthread_mutex_unlock(&run->enum_lock);
			scrub_error(run, MFS_SCRUB_DIR, 0, ino, "out of memory: this directory "
				    "will not be checked");
			return;
		}
		run->dirs = nv;
		run->dirs_cap = nc;
	}
	run->dirs[run->ndirs++] = ino;
	pthread_mutex_unlock(&run->enum_lock);
}

/* The mode inode `ino` has now (listed again, alone): 0 when it is still damaged, free, or
 * the listing fails (nothing is reported: its record check has said what there is). */
static uint32_t mode_now(struct scrub_run *run, struct scrub_conn *c, uint64_t ino)
{
	uint32_t bits = run->info.h.agino_bits;
	struct mfs_ctl_inodes_req q = { .agno = bits < 64 ? (uint32_t)(ino >> bits) : 0,
					.max = 1, .cursor = ino };
	struct mfs_ctl_inodes_reply r;
	struct mfs_ctl_inode in;
	struct scrub_reply rep;
	uint32_t mode = 0;

	if (scrub_rpc(c, MFS_CTL_INODES, &q, sizeof(q), &rep) != 0) {
		if (c->broken)
			scrub_stop(run);
		return 0;
	}
	if (rep.len == sizeof(r) + sizeof(in)) {
		memcpy(&r, rep.buf, sizeof(r));
		memcpy(&in, rep.buf + sizeof(r), sizeof(in));
		if (r.count == 1 && in.ino == ino)
			mode = in.mode;
	}
	free(rep.buf);
	return mode;
}

/*
 * Checks q[0..n) in round trips of at most c->max_batch checks each: the most the daemon
 * takes at the protocol version this connection speaks (conn.c), whatever it is, so an
 * inode's checks may go in more than one.  errs[] holds every result when it returns 0;
 * the first round trip that fails ends it (scrub_check_batch has reported it) and its
 * error is returned.  c->max_batch is at least 1 on a connected connection (conn.c sets
 * it to the version's limit, or to MENDFS_SCRUB_MAX_BATCH only when that is 1 or more),
 * so the loop advances.
 */
static int check_split(struct scrub_run *run, struct scrub_conn *c,
		       const struct mfs_ctl_scrub_req *q, unsigned n, int *errs)
{
	unsigned per = c->max_batch < MFS_CTL_MAX_BATCH ? c->max_batch : MFS_CTL_MAX_BATCH;

	for (unsigned at = 0; at < n; at += per) {
		int err = scrub_check_batch(run, c, q + at, n - at < per ? n - at : per, errs + at);

		if (err)
			return err;
	}
	return 0;
}

/*
 * An inode listed with a damaged mode (0) had its record checked alone, and repaired unless
 * -n.  When it has a mode now (its type told again from its forks and names), the checks it
 * missed are made, and a directory goes to phase 4: so that this run, not the next, looks at
 * what the repaired inode holds.
 */
static void recheck_retyped(struct scrub_run *run, struct scrub_conn *c, uint64_t ino)
{
	struct mfs_ctl_scrub_req q[3];
	int errs[3];
	unsigned n = 0;
	uint32_t mode;

	if (run->o.dry_run || atomic_load(&run->stop))
		return;
	mode = mode_now(run, c, ino);
	if (!mode)
		return;
	q[n++] = (struct mfs_ctl_scrub_req){ .type = MFS_SCRUB_BMAP, .ino = ino };
	q[n++] = (struct mfs_ctl_scrub_req){ .type = MFS_SCRUB_XATTR, .ino = ino };
	if (S_ISLNK(mode))
		q[n++] = (struct mfs_ctl_scrub_req){ .type = MFS_SCRUB_SYMLINK, .ino = ino };
	if (check_split(run, c, q, n, errs) == 0 && S_ISDIR(mode) && errs[0] != -ENOENT)
		add_dir(run, ino);
}

/* Check inodes batch[0..n): their checks go to the daemon run->max_batch at a time, whole
 * inodes (at most 4 checks each) in one round trip unless the batch is smaller than that. */
static void check_inodes(struct scrub_run *run, struct scrub_conn *c,
			 const struct mfs_ctl_inode *batch, uint32_t n)
{
	struct mfs_ctl_scrub_req q[MFS_CTL_MAX_BATCH];
	int errs[MFS_CTL_MAX_BATCH];
	unsigned at[MFS_CTL_MAX_BATCH];     /* batch[first + k]'s INODE check is q[at[k]] */
	unsigned cap = run->max_batch < MFS_CTL_MAX_BATCH ? run->max_batch : MFS_CTL_MAX_BATCH;
	uint32_t i = 0;

	while (i < n && !atomic_load(&run->stop)) {
		unsigned nq = 0, first = i;

		/* Whole inodes only, at least one (check_split splits it if it must). */
		for (; i < n && (nq + 4 <= cap || i == first); i++) {
			mode_t mode = batch[i].mode;
			uint64_t ino = batch[i].ino;

			at[i - first] = nq;
			q[nq++] = (struct mfs_ctl_scrub_req){ .type = MFS_SCRUB_INODE, .ino = ino };
			if (!mode)      /* damaged: its record check says how */
				continue;
			/* every file type: a special file's block count is checked there too */
			q[nq++] = (struct mfs_ctl_scrub_req){ .type = MFS_SCRUB_BMAP, .ino = ino };
			q[nq++] = (struct mfs_ctl_scrub_req){ .type = MFS_SCRUB_XATTR, .ino = ino };
			if (S_ISLNK(mode))
				q[nq++] = (struct mfs_ctl_scrub_req){ .type = MFS_SCRUB_SYMLINK,
								      .ino = ino };
		}
		if (check_split(run, c, q, nq, errs) != 0)
			return;
		/* Directories go to phase 4 unless freed meanwhile. */
		for (uint32_t b = first; b < i; b++)
			if (S_ISDIR(batch[b].mode) && errs[at[b - first]] != -ENOENT)
				add_dir(run, batch[b].ino);
			else if (!batch[b].mode && errs[at[b - first]] == 0)
				recheck_retyped(run, c, batch[b].ino);
		scrub_progress_add(run, i - first);
	}
}

static void inode_job(struct scrub_run *run, struct scrub_conn *c, size_t job)
{
	struct mfs_ctl_inode *batch = malloc(SCRUB_INODE_BATCH * sizeof(*batch));
	uint32_t n;

	if (!batch) {
		scrub_error(run, MFS_SCRUB_INODE, 0, 0, "out of memory");
		return;
	}
	while ((n = next_batch(run, c, batch)) != 0 && !atomic_load(&run->stop))
		check_inodes(run, c, batch, n);
	free(batch);
}

void scrub_phase_inodes(struct scrub_run *run)
{
	uint64_t inuse = run->info.h.icount - run->info.h.ifree;

	if (run->info.h.ifree > run->info.h.icount)
		inuse = 0;
	run->enum_ag = 0;
	run->enum_cursor = 0;
	scrub_progress_phase(run, 3, inuse, "inodes");
	scrub_run_jobs(run, run->nthreads, inode_job);
	scrub_progress_done(run);
}

static void dir_job(struct scrub_run *run, struct scrub_conn *c, size_t job)
{
	struct mfs_ctl_scrub_req q[MFS_CTL_MAX_BATCH];
	int errs[MFS_CTL_MAX_BATCH];
	size_t first = job * run->max_batch;
	unsigned n = 0;

	for (; n < run->max_batch && first + n < run->ndirs; n++)
		q[n] = (struct mfs_ctl_scrub_req){ .type = MFS_SCRUB_DIR, .ino = run->dirs[first + n] };
	if (scrub_check_batch(run, c, q, n, errs) == 0)
		scrub_progress_add(run, n);
}

void scrub_phase_dirs(struct scrub_run *run)
{
	scrub_progress_phase(run, 4, run->ndirs, "directories");
	scrub_run_jobs(run, (run->ndirs + run->max_batch - 1) / run->max_batch, dir_job);
	scrub_progress_done(run);
}
