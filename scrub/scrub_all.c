/*
 * scrub_all.c — mendfs_scrub_all: scrub every mounted mendfs, a few at a time, for cron and
 * systemd timers.
 *
 *   mendfs_scrub_all [-j N] [-n] [-x] [-b] [-v] [--under DIR] [--on-failure CMD]
 *
 * The filesystems are the fuse.mendfs lines of /proc/self/mounts (each mount point once).
 * Each gets its own mendfs_scrub (found beside this program, else in PATH; $MENDFS_SCRUB
 * overrides), whose output is kept in a memory file; at its end one line goes to syslog
 * and standard output: "MOUNTPOINT: clean" or the meaning of its exit status.  A failed
 * scrub's report is printed after its line (every report with -v), and the --on-failure
 * command runs as `sh -c CMD mendfs_scrub_all MOUNTPOINT STATUS` with the report on its
 * standard input.  The exit status is the OR of the scrubs' (4 when one could not run).
 */
#include "mendfs_ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <syslog.h>
#include <unistd.h>

#define EXIT_OPERROR 4
#define EXIT_USAGE   8
#define EXIT_INCOMPLETE 16

static const char *progname = "mendfs_scrub_all";

struct fsjob {
	char *mnt;
	pid_t pid;                  /* 0: not started or done */
	int outfd;                  /* memory file with the scrub's output */
	int status;                 /* exit status, once done */
};

static struct {
	int jobs, verbose;
	int dry_run, media, background;
	const char *under, *on_failure;
	char scrub[PATH_MAX];
} opt = { .jobs = 2 };

static volatile sig_atomic_t stopping;

static void on_signal(int sig)
{
	stopping = 1;
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [-j N] [-n] [-x] [-b] [-v] [--under DIR] [--on-failure CMD]\n"
		"  -j N              scrub at most N filesystems at once (default 2)\n"
		"  -n, -x, -b        passed to each mendfs_scrub\n"
		"  -v                print every scrub's report, not only failed ones\n"
		"  --under DIR       only filesystems mounted at or below DIR\n"
		"  --on-failure CMD  run sh -c CMD %s MOUNTPOINT STATUS for each failed\n"
		"                    scrub, its report on standard input\n"
		"See mendfs_scrub_all(8).\n", progname, progname);
}

/* ---- the filesystems ------------------------------------------------------------------------ */

static int under(const char *mnt, const char *dir)
{
	size_t n = strlen(dir);

	while (n > 1 && dir[n - 1] == '/')
		n--;
	return strncmp(mnt, dir, n) == 0 && (mnt[n] == 0 || mnt[n] == '/' || n == 1);
}

/* The mendfs mount points, each once, in mount order. */
static int list_mounts(struct fsjob **out, size_t *n)
{
	FILE *f = fopen("/proc/self/mounts", "re");
	char *line = NULL;
	size_t cap = 0, nj = 0;
	struct fsjob *v = NULL;

	if (!f) {
		fprintf(stderr, "%s: /proc/self/mounts: %s\n", progname, strerror(errno));
		return -1;
	}
	while (getline(&line, &cap, f) > 0) {
		char *save = NULL, *mnt, *type;
		struct fsjob *nv;
		int dup = 0;

		strtok_r(line, " ", &save);
		mnt = strtok_r(NULL, " ", &save);
		type = strtok_r(NULL, " ", &save);
		if (!mnt || !type || strcmp(type, "fuse.mendfs") != 0)
			continue;
		mfs_ctl_unescape(mnt);
		if (opt.under && !under(mnt, opt.under))
			continue;
		for (size_t i = 0; i < nj; i++)
			dup |= strcmp(v[i].mnt, mnt) == 0;
		if (dup)
			continue;
		nv = realloc(v, (nj + 1) * sizeof(*v));
		if (!nv || !(mnt = strdup(mnt))) {
			free(nv ? nv : v);
			fclose(f);
			free(line);
			fprintf(stderr, "%s: out of memory\n", progname);
			return -1;
		}
		v = nv;
		v[nj++] = (struct fsjob){ .mnt = mnt, .outfd = -1 };
	}
	free(line);
	fclose(f);
	*out = v;
	*n = nj;
	return 0;
}

/* mendfs_scrub: $MENDFS_SCRUB, beside us, or from PATH. */
static void find_scrub(void)
{
	const char *env = getenv("MENDFS_SCRUB");
	char self[PATH_MAX];
	ssize_t n;

	if (env && *env) {
		snprintf(opt.scrub, sizeof(opt.scrub), "%s", env);
		return;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		char *slash;

		self[n] = 0;
		slash = strrchr(self, '/');
		if (slash) {
			slash[1] = 0;
			if (snprintf(opt.scrub, sizeof(opt.scrub), "%smendfs_scrub", self) <
			    (int)sizeof(opt.scrub) && access(opt.scrub, X_OK) == 0)
				return;
		}
	}
	snprintf(opt.scrub, sizeof(opt.scrub), "mendfs_scrub");
}

/* ---- running the scrubs --------------------------------------------------------------------- */

static int start(struct fsjob *j)
{
	char *argv[8];
	int argc = 0;

	j->outfd = memfd_create("mendfs_scrub_all", MFD_CLOEXEC);
	if (j->outfd < 0) {
		fprintf(stderr, "%s: memfd_create: %s\n", progname, strerror(errno));
		return -1;
	}
	argv[argc++] = opt.scrub;
	if (opt.dry_run)
		argv[argc++] = "-n";
	if (opt.media)
		argv[argc++] = "-x";
	if (opt.background)
		argv[argc++] = "-b";
	argv[argc++] = j->mnt;
	argv[argc] = NULL;
	j->pid = fork();
	if (j->pid < 0) {
		fprintf(stderr, "%s: fork: %s\n", progname, strerror(errno));
		j->pid = 0;
		return -1;
	}
	if (j->pid == 0) {
		int nul = open("/dev/null", O_RDONLY);

		if (nul >= 0)
			dup2(nul, STDIN_FILENO);
		dup2(j->outfd, STDOUT_FILENO);
		dup2(j->outfd, STDERR_FILENO);
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		execvp(argv[0], argv);
		fprintf(stderr, "%s: cannot run %s: %s\n", progname, argv[0], strerror(errno));
		_exit(127);
	}
	return 0;
}

static void describe(int status, char *buf, size_t len)
{
	static const char *const bits[] = {
		"corruption found", "optimizations possible", "operational error",
		"usage error", "incomplete",
	};
	size_t off = 0;

	if (status == 0) {
		snprintf(buf, len, "clean");
		return;
	}
	buf[0] = 0;
	for (int b = 0; b < 5; b++)
		if (status & (1 << b))
			off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "%s%s",
						off ? ", " : "", bits[b]);
	if (off >= len)
		buf[len - 1] = 0;
}

/* Copy the scrub's report to `out`. */
static void copy_report(int from, int to)
{
	char buf[8192];
	ssize_t n;
	off_t off = 0;

	while ((n = pread(from, buf, sizeof(buf), off)) > 0) {
		if (write(to, buf, (size_t)n) != n)
			break;
		off += n;
	}
}

static void run_hook(const struct fsjob *j)
{
	char code[16];
	pid_t pid;
	int st;

	snprintf(code, sizeof(code), "%d", j->status);
	fflush(stdout);
	pid = fork();
	if (pid == 0) {
		if (lseek(j->outfd, 0, SEEK_SET) == 0)
			dup2(j->outfd, STDIN_FILENO);
		setenv("MENDFS_MOUNTPOINT", j->mnt, 1);
		setenv("MENDFS_SCRUB_STATUS", code, 1);
		execl("/bin/sh", "sh", "-c", opt.on_failure, progname, j->mnt, code, (char *)NULL);
		_exit(127);
	}
	if (pid < 0 || waitpid(pid, &st, 0) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
		syslog(LOG_WARNING, "%s: the --on-failure command failed", j->mnt);
}

static void finish(struct fsjob *j, int wstatus)
{
	char words[160];

	j->pid = 0;
	if (WIFEXITED(wstatus))
		j->status = WEXITSTATUS(wstatus) == 127 ? EXIT_OPERROR : WEXITSTATUS(wstatus);
	else
		j->status = EXIT_OPERROR | EXIT_INCOMPLETE;      /* killed */
	if (j->status > 31)
		j->status = EXIT_OPERROR;
	describe(j->status, words, sizeof(words));
	syslog(j->status ? LOG_ERR : LOG_INFO, "%s: %s (status %d)", j->mnt, words, j->status);
	printf("%s: %s (status %d)\n", j->mnt, words, j->status);
	fflush(stdout);
	if (j->status || opt.verbose)
		copy_report(j->outfd, STDOUT_FILENO);
	if (j->status && opt.on_failure)
		run_hook(j);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "under", required_argument, NULL, 'U' },
		{ "on-failure", required_argument, NULL, 'F' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct fsjob *fs = NULL;
	struct sigaction sa;
	size_t nfs = 0, next = 0, running = 0;
	int c, code = 0;

	while ((c = getopt_long(argc, argv, "j:nxbvh", longopts, NULL)) != -1) {
		switch (c) {
		case 'j': {
			char *end;
			long v = strtol(optarg, &end, 10);

			if (*end || v < 1 || v > 64) {
				fprintf(stderr, "%s: -j takes 1..64\n", progname);
				return EXIT_USAGE;
			}
			opt.jobs = (int)v;
			break;
		}
		case 'n': opt.dry_run = 1; break;
		case 'x': opt.media = 1; break;
		case 'b': opt.background = 1; break;
		case 'v': opt.verbose = 1; break;
		case 'U': opt.under = optarg; break;
		case 'F': opt.on_failure = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return EXIT_USAGE;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return EXIT_USAGE;
	}
	openlog(progname, LOG_PID, LOG_DAEMON);
	find_scrub();
	if (list_mounts(&fs, &nfs) != 0)
		return EXIT_OPERROR;
	if (nfs == 0) {
		printf("%s: no mendfs filesystem is mounted%s%s\n", progname,
		       opt.under ? " under " : "", opt.under ? opt.under : "");
		return 0;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);

	while (next < nfs || running) {
		int wst;
		pid_t pid;

		while (!stopping && next < nfs && running < (size_t)opt.jobs) {
			if (start(&fs[next]) == 0)
				running++;
			else
				code |= EXIT_OPERROR;
			next++;
		}
		if (stopping && next < nfs) {
			code |= EXIT_INCOMPLETE;       /* never started */
			next = nfs;
		}
		if (!running)
			break;
		pid = wait(&wst);
		if (pid < 0) {
			if (errno == EINTR && stopping) {
				for (size_t i = 0; i < nfs; i++)
					if (fs[i].pid > 0)
						kill(fs[i].pid, SIGTERM);
			}
			if (errno == ECHILD)
				break;
			continue;
		}
		for (size_t i = 0; i < nfs; i++)
			if (fs[i].pid == pid) {
				finish(&fs[i], wst);
				code |= fs[i].status;
				running--;
			}
	}
	for (size_t i = 0; i < nfs; i++) {
		if (fs[i].outfd >= 0)
			close(fs[i].outfd);
		free(fs[i].mnt);
	}
	free(fs);
	closelog();
	return code;
}
