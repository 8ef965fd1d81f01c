/*
 * inodes.c — phases 3 and 4 of mendfs_scrub: every allocated inode, listed through the
 * daemon (INODES, AG by AG, in batches after a cursor), is checked by the workers in
 * parallel (its core fields, extent map, attributes, symlink target); the directories seen
 * are checked in phase 4, once every inode has been looked at.
 *
 * The listing is shared: a worker takes the enumeration lock, fetches the next batch over
 * its own connection, and checks that batch after letting go, so listing one batch
 * overlaps checking others.
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
				atomic_store(&run->stop, 1);
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

static void inode_job(struct scrub_run *run, struct scrub_conn *c, size_t job)
{
	struct mfs_ctl_inode *batch = malloc(SCRUB_INODE_BATCH * sizeof(*batch));
	uint32_t n;

	if (!batch) {
		scrub_error(run, MFS_SCRUB_INODE, 0, 0, "out of memory");
		return;
	}
	while ((n = next_batch(run, c, batch)) != 0) {
		for (uint32_t i = 0; i < n && !atomic_load(&run->stop); i++) {
			uint64_t ino = batch[i].ino;
			mode_t mode = batch[i].mode;

			/* A freed inode (-ENOENT) has nothing more to check; a kind the
			 * daemon cannot check yet does not stop the others. */
			int err = scrub_check(run, c, MFS_SCRUB_INODE, 0, ino);

			if (err != -ENOENT && !c->broken && mode) {
				if (S_ISREG(mode) || S_ISDIR(mode) || S_ISLNK(mode))
					scrub_check(run, c, MFS_SCRUB_BMAP, 0, ino);
				scrub_check(run, c, MFS_SCRUB_XATTR, 0, ino);
				if (S_ISLNK(mode))
					scrub_check(run, c, MFS_SCRUB_SYMLINK, 0, ino);
				if (S_ISDIR(mode))
					add_dir(run, ino);
			}
			scrub_progress_add(run, 1);
		}
	}
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
	scrub_check(run, c, MFS_SCRUB_DIR, 0, run->dirs[job]);
	scrub_progress_add(run, 1);
}

void scrub_phase_dirs(struct scrub_run *run)
{
	scrub_progress_phase(run, 4, run->ndirs, "directories");
	scrub_run_jobs(run, run->ndirs, dir_job);
	scrub_progress_done(run);
}
