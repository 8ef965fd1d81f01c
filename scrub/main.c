/*
 * main.c — mendfs_scrub: check every piece of metadata of a mounted mendfs, online.
 *
 *   mendfs_scrub [-n] [-v] [-x] [-b] [-C fd] [-T scratchdir] [--force-rebuild] [--json]
 *                MOUNTPOINT
 *
 * The checks run in the daemon (SCRUB requests over its control socket); this program
 * decides what to check in which order, in phases as xfs_scrub does:
 *   1 filesystem metadata: the superblock of each AG, the journal;
 *   2 per-AG metadata: header, free list, both free-space btrees, inode btree, reverse map
 *     (in parallel, AG by AG and tree by tree);
 *   3 every allocated inode: core, extent map, attributes, symlink target (in parallel);
 *   4 every directory;
 *   5 link counts, orphan list, summary counters;
 *   6 (-x) the data of every regular file, read through the mount.
 * Later phases trust what earlier ones checked (a directory check walks names the inode
 * checks already vouched for), which is why the order is fixed.  Unless -n, what a check
 * finds damaged is repaired online (fix.c) before the next phase: phase 2's objects once
 * the whole phase is checked, AG by AG in dependency order; the others right after their
 * check.  What is still damaged then (a rebuild refused until another object is repaired:
 * a reverse map whose owner cannot be loaded) is checked again, and rebuilt again, after
 * phase 4, once every repair it may wait for is done (as xfs_scrub's phase 4 does), and
 * only then reported repaired or not.
 */
#include "scrub.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/ioprio.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static const char *progname = "mendfs_scrub";
static struct scrub_run *the_run;       /* for the signal handler */

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [-n] [-v] [-x] [-b] [-C fd] [-T scratchdir] [--force-rebuild] [--json]\n"
		"       MOUNTPOINT\n"
		"  -n          check only (default: repair online what is found damaged)\n"
		"  -v          say what each phase does and how long it took\n"
		"  -x          also read the data of every regular file\n"
		"  -b          background: lowest CPU and I/O priority, one request at a time\n"
		"  -C fd       write \"phase current max mountpoint\" progress lines to fd\n"
		"  -T dir      directory for repair scratch files (default: memory files)\n"
		"  --force-rebuild  rebuild every object that can be, damaged or not (tests)\n"
		"  --json      one JSON object per finding or repair, then a summary object\n"
		"Exit status: 0 clean, 1 corruption, 2 optimizations possible, 4 operational\n"
		"error, 8 usage error, 16 incomplete (bits combine).  See mendfs_scrub(8).\n",
		progname);
}

static void on_signal(int sig)
{
	struct scrub_run *run = the_run;

	if (run)
		scrub_stop(run);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- phases 1, 2 and 5 --------------------------------------------------------------------- */

/* Check one object, then repair it if it needs it (and unless -n). */
static void check_fix(struct scrub_run *run, struct scrub_conn *c, uint32_t type,
		      uint32_t agno)
{
	unsigned nbad;

	if (scrub_check_n(run, c, type, agno, 0, &nbad, NULL) == 0)
		scrub_fix(run, c, type, agno, 0, nbad);
}

static void fs_meta_job(struct scrub_run *run, struct scrub_conn *c, size_t job)
{
	if (job < run->info.h.agcount)
		check_fix(run, c, MFS_SCRUB_SB, (uint32_t)job);
	else
		check_fix(run, c, MFS_SCRUB_JOURNAL, 0);
	scrub_progress_add(run, 1);
}

static const uint32_t ag_types[] = {
	MFS_SCRUB_AGH, MFS_SCRUB_AGFL, MFS_SCRUB_BNOBT, MFS_SCRUB_CNTBT, MFS_SCRUB_INOBT,
	MFS_SCRUB_RMAPBT,
};
#define N_AG_TYPES (sizeof(ag_types) / sizeof(ag_types[0]))

/* One object of one AG: the jobs are (AG, kind) pairs, so that the big trees of a busy AG
 * (its reverse map above all) are checked side by side rather than one after another. */
static void ag_job(struct scrub_run *run, struct scrub_conn *c, size_t job)
{
	uint32_t type = ag_types[job % N_AG_TYPES], agno = (uint32_t)(job / N_AG_TYPES);
	unsigned nbad = 0, ncor = 0;

	if (scrub_check_n(run, c, type, agno, 0, &nbad, &ncor) == 0 && run->agbad)
		run->agbad[(size_t)agno * MFS_SCRUB_NTYPES + type] =
			(struct scrub_agfound){ nbad, ncor };
	scrub_progress_add(run, 1);
}

static const uint32_t summary_types[] = {
	MFS_SCRUB_NLINKS, MFS_SCRUB_ORPHANS, MFS_SCRUB_SUMMARY,
};

static void summary_job(struct scrub_run *run, struct scrub_conn *c, size_t job)
{
	check_fix(run, c, summary_types[job], 0);
	scrub_progress_add(run, 1);
}

/* ---- setup ------------------------------------------------------------------------------------ */

static void go_background(void)
{
	if (setpriority(PRIO_PROCESS, 0, 19) != 0)
		perror("setpriority");
	if (syscall(SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0,
		    IOPRIO_PRIO_VALUE(IOPRIO_CLASS_IDLE, 0)) != 0)
		perror("ioprio_set");
}

/* If memory runs out, this process should be the one killed, not the daemon or anything
 * else: its death only cancels the checks (DESIGN.md, repair step 6). */
static void prefer_oom_kill(void)
{
	int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);

	if (fd >= 0) {
		if (write(fd, "1000", 4) != 4 && errno != EACCES)
			perror("oom_score_adj");
		close(fd);
	}
}

/* The workers' connections: the first one is made, the others join it. */
static int open_conns(struct scrub_run *run)
{
	unsigned flags = run->o.background ? MFS_CTL_HELLO_BACKGROUND : 0;
	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	char msg[700];
	unsigned want;
	int err;

	want = run->o.background ? 1 : ncpu > 0 ? (unsigned)ncpu : 1;
	if (want > SCRUB_MAX_THREADS)
		want = SCRUB_MAX_THREADS;
	run->conns = calloc(want, sizeof(*run->conns));
	if (!run->conns)
		return -ENOMEM;
	for (unsigned i = 0; i < want; i++)
		run->conns[i].fd = -1;
	err = scrub_connect(run->mnt, flags, &run->conns[0], &run->info, msg, sizeof(msg));
	if (err) {
		fprintf(stderr, "%s: %s\n", progname, msg);
		return err;
	}
	run->nthreads = 1;
	run->max_batch = run->conns[0].max_batch;
	for (unsigned i = 1; i < want; i++) {
		if (scrub_reconnect(&run->info, run->mnt, flags, &run->conns[i], msg,
				    sizeof(msg)) != 0)
			break;
		run->nthreads++;
		if (run->conns[i].max_batch < run->max_batch)
			run->max_batch = run->conns[i].max_batch;
	}
	return 0;
}

/* -T: scratch files will be O_TMPFILE files there; on the filesystem being repaired they
 * would deadlock it (the daemon refuses them too). */
static int check_tmpdir(const struct scrub_run *run)
{
	struct stat st;
	int fd;

	if (stat(run->o.tmpdir, &st) == 0 && (uint64_t)st.st_dev == run->info.h.dev) {
		fprintf(stderr, "%s: -T %s lies on the filesystem being scrubbed\n", progname,
			run->o.tmpdir);
		return -1;
	}
	fd = open(run->o.tmpdir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "%s: -T %s: cannot make a scratch file there: %s\n", progname,
			run->o.tmpdir, strerror(errno));
		return -1;
	}
	close(fd);
	return 0;
}

static int parse_fd(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || end == s || v < 0 || v > 1000000 || fcntl((int)v, F_GETFD) < 0)
		return -1;
	return (int)v;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'J' },
		{ "force-rebuild", no_argument, NULL, 'F' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct scrub_run run;
	struct sigaction sa;
	double t0 = now();
	char *canon;
	int opt, code;

	memset(&run, 0, sizeof(run));
	run.o.cfd = -1;
	pthread_mutex_init(&run.lock, NULL);
	pthread_mutex_init(&run.enum_lock, NULL);
	while ((opt = getopt_long(argc, argv, "nvxbC:T:hV", longopts, NULL)) != -1) {
		switch (opt) {
		case 'n': run.o.dry_run = 1; break;
		case 'v': run.o.verbose = 1; break;
		case 'x': run.o.media = 1; break;
		case 'b': run.o.background = 1; break;
		case 'J': run.o.json = 1; break;
		case 'F': run.o.force_rebuild = 1; break;
		case 'C':
			run.o.cfd = parse_fd(optarg);
			if (run.o.cfd < 0) {
				fprintf(stderr, "%s: -C %s: not an open descriptor\n", progname,
					optarg);
				return SCRUB_EXIT_USAGE;
			}
			break;
		case 'T': {
			struct stat st;

			if (stat(optarg, &st) != 0 || !S_ISDIR(st.st_mode) ||
			    access(optarg, W_OK) != 0) {
				fprintf(stderr, "%s: -T %s: not a writable directory\n", progname,
					optarg);
				return SCRUB_EXIT_USAGE;
			}
			run.o.tmpdir = optarg;
			break;
		}
		case 'V':
			printf("%s (control protocol %u)\n", progname, MFS_CTL_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return SCRUB_EXIT_USAGE;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return SCRUB_EXIT_USAGE;
	}
	canon = realpath(argv[optind], NULL);
	if (!canon || strlen(canon) >= sizeof(run.mnt)) {
		fprintf(stderr, "%s: %s: %s\n", progname, argv[optind],
			canon ? "path too long" : strerror(errno));
		free(canon);
		return SCRUB_EXIT_OPERROR;
	}
	strcpy(run.mnt, canon);
	free(canon);
	if (scrub_set_reply_timeout(getenv("MENDFS_SCRUB_REPLY_TIMEOUT")) != 0) {
		fprintf(stderr, "%s: MENDFS_SCRUB_REPLY_TIMEOUT=%s: not a number of seconds "
			"(0 to %u; 0: no bound)\n", progname, getenv("MENDFS_SCRUB_REPLY_TIMEOUT"),
			SCRUB_REPLY_TIMEOUT_MAX);
		return SCRUB_EXIT_USAGE;
	}
	if (run.o.background)
		go_background();
	prefer_oom_kill();
	if (open_conns(&run) != 0) {
		free(run.conns);
		return SCRUB_EXIT_OPERROR;
	}
	if (run.o.force_rebuild && run.o.dry_run) {
		fprintf(stderr, "%s: --force-rebuild and -n contradict each other\n", progname);
		code = SCRUB_EXIT_USAGE;
		goto out_conns;
	}
	if (!run.o.dry_run && (run.info.h.fsflags & MFS_CTL_FS_RDONLY)) {
		fprintf(stderr, "%s: %s is mounted read-only: checking only\n", progname, run.mnt);
		run.o.dry_run = 1;
		run.o.force_rebuild = 0;
	}
	if (!run.o.dry_run) {
		run.agbad = calloc((size_t)run.info.h.agcount * MFS_SCRUB_NTYPES,
				   sizeof(*run.agbad));
		run.rmapleft = calloc(run.info.h.agcount, sizeof(*run.rmapleft));
		if (!run.agbad || !run.rmapleft) {
			fprintf(stderr, "%s: out of memory\n", progname);
			code = SCRUB_EXIT_OPERROR;
			goto out_conns;
		}
	}
	if (run.o.tmpdir && check_tmpdir(&run) != 0) {
		code = SCRUB_EXIT_USAGE;
		goto out_conns;
	}

	the_run = &run;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	scrub_progress_init(&run);
	if (run.o.verbose)
		scrub_say(&run, "%s: %u AGs, %llu inodes in use; %u worker%s%s", run.mnt,
			  run.info.h.agcount,
			  (unsigned long long)(run.info.h.icount - run.info.h.ifree),
			  run.nthreads, run.nthreads == 1 ? "" : "s",
			  run.o.dry_run ? "; checking only" : run.o.force_rebuild ?
			  "; repairing, and rebuilding every rebuildable object" : "; repairing");

	struct {
		int phase;
		const char *label;
	} phases[] = {
		{ 1, "filesystem metadata" }, { 2, "AG metadata" }, { 3, "inodes" },
		{ 4, "directories" }, { 5, "link counts and summaries" }, { 6, "file data" },
	};
	for (size_t i = 0; i < sizeof(phases) / sizeof(phases[0]); i++) {
		uint32_t agc = run.info.h.agcount;
		double ts = now();

		if (atomic_load(&run.stop))
			break;
		if (phases[i].phase == 6 && !run.o.media)
			break;
		switch (phases[i].phase) {
		case 1:
			scrub_progress_phase(&run, 1, (uint64_t)agc + 1, phases[i].label);
			scrub_run_jobs(&run, (size_t)agc + 1, fs_meta_job);
			scrub_progress_done(&run);
			break;
		case 2:
			scrub_progress_phase(&run, 2, (uint64_t)agc * N_AG_TYPES, phases[i].label);
			scrub_run_jobs(&run, (size_t)agc * N_AG_TYPES, ag_job);
			scrub_progress_done(&run);
			if (!run.o.dry_run && !atomic_load(&run.stop))
				scrub_run_jobs(&run, agc, scrub_fix_ag);
			break;
		case 3:
			scrub_phase_inodes(&run);
			break;
		case 4:
			scrub_phase_dirs(&run);
			/* what was left damaged, once the repairs after it are done (before the
			 * link counts and summaries, which count what those repairs left) */
			if (!run.o.dry_run && !atomic_load(&run.stop))
				scrub_fix_pending(&run, 0);
			break;
		case 5:
			/* One at a time: the link count check holds namespace changes back. */
			scrub_progress_phase(&run, 5, 3, phases[i].label);
			for (size_t j = 0; j < 3 && !atomic_load(&run.stop); j++)
				summary_job(&run, &run.conns[0], j);
			if (!run.o.dry_run && !atomic_load(&run.stop))
				scrub_fix_pending(&run, 1);
			scrub_progress_done(&run);
			break;
		case 6:
			scrub_phase_media(&run);
			break;
		}
		if (run.o.verbose)
			scrub_say(&run, "Phase %d: %s: done in %.2f s", phases[i].phase,
				  phases[i].label, now() - ts);
	}
	code = scrub_exit_code(&run);
	scrub_summary(&run, code, now() - t0);
	the_run = NULL;
out_conns:
	for (unsigned i = 0; i < run.nthreads; i++)
		scrub_disconnect(&run.conns[i]);
	free(run.conns);
	free(run.dirs);
	free(run.agbad);
	free(run.rmapleft);
	free(run.pend);
	return code;
}
