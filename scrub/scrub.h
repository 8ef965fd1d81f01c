/*
 * scrub.h — private to mendfs_scrub: the run's state shared by its files, and their
 * interfaces.
 *
 *   main.c      options, the phases in order, the summary and the exit code
 *   conn.c      finding the control socket from the mount point, HELLO, one request
 *   work.c      worker threads (one connection each) and checking one object
 *   inodes.c    phases 3 and 4: inodes listed through the daemon, checked in parallel
 *   fix.c       online repair of what a check found (REPAIR with scratch descriptors),
 *               and the check again afterwards
 *   media.c     phase 6 (-x): read every regular file's data through the mount
 *   report.c    findings and the summary: text or JSON lines
 *   progress.c  the progress bar on a terminal, and fsck-style lines on -C fd
 *
 * Only lib/mendfs_ctl.h is shared with the daemon.
 */
#ifndef SCRUB_H
#define SCRUB_H

#include "mendfs_ctl.h"

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* Exit codes (bits combine), as xfs_scrub's. */
#define SCRUB_EXIT_CLEAN       0
#define SCRUB_EXIT_CORRUPT     1
#define SCRUB_EXIT_PREEN       2
#define SCRUB_EXIT_OPERROR     4
#define SCRUB_EXIT_USAGE       8
#define SCRUB_EXIT_INCOMPLETE  16

#define SCRUB_MAX_THREADS 16u
#define SCRUB_INODE_BATCH 1024u

/* ---- conn.c ----------------------------------------------------------------------------- */
struct scrub_conn {
	int fd;
	const char *mnt;            /* the mount point it serves (messages), or NULL */
	uint64_t next_reqid;
	int broken;                 /* a transport error: no more requests on it */
	uint16_t version;           /* protocol version spoken (0 until HELLO: version 1) */
	unsigned max_batch;         /* checks in one SCRUB_BATCH at that version */
};

/* A reply: buf/len (malloc'd) on success; on failure err (positive errno) and msg. */
struct scrub_reply {
	uint8_t *buf;
	size_t len;
	int err;
	char msg[600];
};

/* What HELLO told us, and where. */
struct scrub_fsinfo {
	struct mfs_ctl_hello_reply h;
	char sockpath[108];
};

/* How long one request may wait for its reply: MENDFS_SCRUB_REPLY_TIMEOUT seconds, by
 * default 30 min (the longest single request measured, a reverse-map rebuild of 16M extents
 * in one AG, took ~17 s of CPU; a daemon that is this slow is stuck or starved), 0 for no
 * bound.  The value of the variable (NULL or empty: the default); 0 or -EINVAL. */
#define SCRUB_REPLY_TIMEOUT     1800u
#define SCRUB_REPLY_TIMEOUT_MAX (30u * 24 * 3600)
int scrub_set_reply_timeout(const char *s);

/* Find the socket of the mendfs mounted at `mnt` (canonical), connect, HELLO and check it
 * is ours (mount point and device).  0, or -errno with the reason in msg. */
int scrub_connect(const char *mnt, unsigned hello_flags, struct scrub_conn *c,
		  struct scrub_fsinfo *info, char *msg, size_t msglen);
/* Connect again to a socket found by scrub_connect (one connection per worker); `mnt` as
 * given to scrub_connect (kept for messages). */
int scrub_reconnect(const struct scrub_fsinfo *info, const char *mnt, unsigned hello_flags,
		    struct scrub_conn *c, char *msg, size_t msglen);
/* One request and its reply.  0; -errno for an error reply (r->err, r->msg) or a transport
 * failure (c->broken set and the socket shut down, so the daemon drops what it runs for it;
 * r->msg says what; -ETIMEDOUT when the whole exchange took longer than the reply timeout).
 * Free r->buf after success. */
int scrub_rpc(struct scrub_conn *c, uint16_t cmd, const void *req, size_t len,
	      struct scrub_reply *r);
/* The same with descriptors (at most MFS_CTL_MAX_FDS) passed along the request (REPAIR);
 * they stay the caller's to close. */
int scrub_rpc_fds(struct scrub_conn *c, uint16_t cmd, const void *req, size_t len,
		  const int *fds, unsigned nfds, struct scrub_reply *r);
void scrub_disconnect(struct scrub_conn *c);

/* ---- the run ---------------------------------------------------------------------------- */
struct scrub_opts {
	int verbose, media, background, json, dry_run;
	int force_rebuild;          /* --force-rebuild: rebuild clean objects too */
	int cfd;                    /* -C fd, or -1 */
	const char *tmpdir;
};

struct scrub_counts {
	uint64_t objects;           /* checks that ran */
	uint64_t corrupt, xcorrupt, preen, warnings, incomplete, errors;
	uint64_t skipped;           /* kinds the daemon cannot check, inodes freed meanwhile */
	uint64_t repaired;          /* objects rebuilt (or set right by another's rebuild) and
	                               found clean when checked again */
	uint64_t unfixed;           /* damaged objects left damaged (not rebuildable, refused,
	                               failed, or still wrong when checked again) */
	uint64_t cleared;           /* corrupt + xref findings of the repaired objects */
};

/* What phase 2 found in one object of an AG: its corrupt and xref findings, and how many of
 * them are about its own structure (corrupt) rather than disagreements with others. */
struct scrub_agfound {
	unsigned bad, corrupt;
};

/* An AG's reverse map found damaged whose rebuild could not run: what is rebuilt from it
 * waits (fix.c), the reason given with it. */
struct scrub_rmapleft {
	int left;
	char why[400];
};

struct fixobj;

/* Damaged objects whose verdict waits for the end of phase 4 (fix.c), at most this many
 * (the others are reported at once, as they are checked again). */
#define SCRUB_MAX_PENDING 4096u

struct scrub_run {
	struct scrub_opts o;
	char mnt[PATH_MAX];         /* canonical mount point */
	struct scrub_fsinfo info;
	unsigned nthreads;
	struct scrub_conn *conns;   /* nthreads connections */
	unsigned max_batch;         /* the smallest of the connections' */

	pthread_mutex_t lock;       /* counts, output, unsupported */
	struct scrub_counts n;
	uint32_t unsupported;       /* bit per enum mfs_scrub_type the daemon lacks */
	uint32_t norepair;          /* bit per type the daemon cannot rebuild online */
	char norepair_why[MFS_SCRUB_NTYPES][300];
	struct scrub_agfound *agbad; /* phase 2: [agno * MFS_SCRUB_NTYPES + type], what that
	                               object's check found (repairs after the phase) */
	struct scrub_rmapleft *rmapleft;  /* [agno] (with agbad; run->lock) */
	struct fixobj *pend;        /* objects left damaged in phases 1-4, to be checked again
	                               (and rebuilt again) once the repairs after them are done */
	size_t npend, pendcap;
	int pend_closed;            /* the pending objects are being settled: no more */
	atomic_int stop;            /* interrupted or the daemon went away (scrub_stop) */
	int phase;

	/* phases 3-4 */
	pthread_mutex_t enum_lock;
	uint32_t enum_ag;
	uint64_t enum_cursor;
	uint64_t *dirs;             /* directories seen in phase 3 */
	size_t ndirs, dirs_cap;
	atomic_size_t next_job;
};

/* ---- work.c ----------------------------------------------------------------------------- */
/* Stop the run for good (a signal; a connection lost or timed out: the daemon cannot be
 * relied on any more): run->stop set, and every connection shut down, so that no worker
 * goes on waiting for its own request (a stuck daemon would hold each for its own timeout,
 * one after another).  1 for the call that stopped it (which says why), 0 when it was
 * stopped already.  Async-signal-safe: the signal handler calls it.  Every fatal stop goes
 * through here; plain checks of run->stop read it. */
int scrub_stop(struct scrub_run *run);
typedef void (*scrub_job_fn)(struct scrub_run *run, struct scrub_conn *c, size_t job);
/* Run jobs 0..njobs-1 on the workers, each job on one worker. */
void scrub_run_jobs(struct scrub_run *run, size_t njobs, scrub_job_fn fn);
/* Check one object and report what was found.  Returns the scrub reply's error (0, or a
 * negative errno; the caller decides nothing: this counts and reports). */
int scrub_check(struct scrub_run *run, struct scrub_conn *c, uint32_t type, uint32_t agno,
		uint64_t ino);
/* The same, and *nbad = its corrupt and xref findings (*ncorrupt: the corrupt ones alone;
 * may be NULL). */
int scrub_check_n(struct scrub_run *run, struct scrub_conn *c, uint32_t type, uint32_t agno,
		  uint64_t ino, unsigned *nbad, unsigned *ncorrupt);
/* Several checks in one round trip (SCRUB_BATCH, at most c->max_batch): each result
 * reported and counted as scrub_check's, its error in errs[i], its corrupt and xref
 * findings in nbad[i].  0, or the request's error (nothing in errs).  Then, unless -n, each
 * object found damaged (every one with --force-rebuild) goes through scrub_fix. */
int scrub_check_batch(struct scrub_run *run, struct scrub_conn *c,
		      const struct mfs_ctl_scrub_req *q, unsigned n, int *errs);
const char *scrub_type_name(uint32_t type);

/* ---- fix.c -------------------------------------------------------------------------------- */
/* One object checked with `nbad` corrupt and xref findings: unless -n, when nbad > 0 or
 * with --force-rebuild, rebuild it (REPAIR with scratch descriptors), report what was done,
 * check it again and count the outcome. */
void scrub_fix(struct scrub_run *run, struct scrub_conn *c, uint32_t type, uint32_t agno,
	       uint64_t ino, unsigned nbad);
/* After phase 2: the objects of AG `job` (run->agbad), rebuilt in dependency order (header,
 * free list, the trees whose own structure is broken, the reverse map, then the trees
 * rebuilt from it; the header's counters come with the trees), then every object that was
 * damaged or rebuilt checked again. */
void scrub_fix_ag(struct scrub_run *run, struct scrub_conn *c, size_t job);
/* After phase 4, and again (`last`) after phase 5: every object left damaged so far
 * (run->pend) checked again, and rebuilt again when what stopped its rebuild may be gone
 * (the repairs of later phases often set an earlier finding right: a reverse map whose
 * owner could not be loaded until the inode was repaired, an inode's orphan pointer the
 * orphan lists' rebuild clears), in dependency order, while that makes progress.  Those
 * set right are reported repaired (by their rebuild, or by the others'); the rest are kept
 * for the last look, which reports them not repaired with the last reason. */
void scrub_fix_pending(struct scrub_run *run, int last);

/* ---- inodes.c ----------------------------------------------------------------------------- */
void scrub_phase_inodes(struct scrub_run *run);
void scrub_phase_dirs(struct scrub_run *run);

/* ---- media.c ------------------------------------------------------------------------------ */
void scrub_phase_media(struct scrub_run *run);

/* ---- report.c ----------------------------------------------------------------------------- */
/* A finding of one check (flag: one MFS_SCRUB_OFLAG_*), counted and printed. */
void scrub_finding(struct scrub_run *run, uint32_t type, uint32_t agno, uint64_t ino,
		   uint32_t flag, const char *text, size_t len);
/* An operational error (a check that could not run, a file that could not be read). */
void scrub_error(struct scrub_run *run, uint32_t type, uint32_t agno, uint64_t ino,
		 const char *fmt, ...) __attribute__((format(printf, 5, 6)));
/* An object named by a path (phase 6). */
void scrub_path_error(struct scrub_run *run, const char *path, int err);
/* What a repair did to one object, and what checking it again found (recheck: "clean",
 * "corrupt", or "" when not checked); result: "repaired", "unfixed", "unsupported". */
void scrub_repair_report(struct scrub_run *run, uint32_t type, uint32_t agno, uint64_t ino,
			 const char *result, const char *text, const char *recheck);
void scrub_summary(struct scrub_run *run, int exitcode, double secs);
int scrub_exit_code(const struct scrub_run *run);
/* Print a line of text output (not in JSON mode), keeping the progress bar intact. */
void scrub_say(struct scrub_run *run, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- progress.c --------------------------------------------------------------------------- */
void scrub_progress_init(struct scrub_run *run);
/* Begin phase `phase` of `max` units. */
void scrub_progress_phase(struct scrub_run *run, int phase, uint64_t max, const char *label);
void scrub_progress_add(struct scrub_run *run, uint64_t n);
void scrub_progress_done(struct scrub_run *run);
/* Erase the bar before other output (caller holds run->lock). */
void scrub_progress_clear(struct scrub_run *run);

#endif
