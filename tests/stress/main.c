/*
 * main.c — mendfs_stress: options, the worker processes, the failure report and the
 * summary.  See stress.h for the model, ops.c for the operations, synclog.c for -l/-V,
 * manifest.c for -m/-M.
 *
 * Exit status: 0 when every operation did what the model said and every surviving file,
 * directory and attribute was verified at the end; 1 on any failure (reported with the seed,
 * the process, the operation number and the last operations); 2 on a usage or setup error.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include "stress.h"

static void usage(FILE *f)
{
	fprintf(f,
"usage: mendfs_stress [options] DIR\n"
"       mendfs_stress -V LOG DIR\n"
"       mendfs_stress -M MANIFEST DIR\n"
"Runs N processes of seeded random filesystem operations in DIR (each in its own DIR/pN),\n"
"checks every result and every read against a model of what each process wrote, verifies\n"
"everything left at the end, and prints the operation counts and a summary.  Run it as root\n"
"(devices, chown, trusted.* attributes).\n"
"  -p N        processes (default 4)\n"
"  -n M        operations per process (default 10000 unless -t)\n"
"  -t SECONDS  run for this long (with -n: whichever comes first)\n"
"  -s SEED     seed (default: from the clock; always printed)\n"
"  -f SPEC     weights: op=W[,op=W...]; 'none' first sets every weight to 0.  Ops:\n"
"              ");
	for (int i = 0; i < NOPS; i++)
		fprintf(f, "%s%s", op_names[i], i + 1 < NOPS ? (i % 9 == 8 ? "\n              " : ",") : "\n");
	fprintf(f,
"  -e N        at most N names per process (default 200)\n"
"  -z BYTES    largest file size (default 16M; K, M, G suffixes)\n"
"  -S          ENOSPC is an allowed answer (the model re-synchronises)\n"
"  -k          the filesystem may go away (crash tests): ENOTCONN ends the run, status 0\n"
"  -l LOG      append 'S path size crc32c' after each file fsync and 'D path' before each\n"
"              change, for a check after a crash\n"
"  -V LOG      check DIR against LOG: every file fsync'd and not changed since is intact\n"
"  -m FILE     after the final check, append to FILE a manifest of everything left (every\n"
"              name, its inode, mode, owner, links, size, content crc32c, xattrs)\n"
"  -M FILE     check DIR against the manifest FILE (after a remount, say): everything\n"
"              listed intact, nothing else there\n"
"  -c          remove everything after the final check (not with -m)\n"
"  -P          paranoid: after each operation, check the whole file it changed\n"
"  -v          print every operation\n");
}

static struct opts o = {
	.nprocs = 4, .max_entries = 200, .max_size = 16u << 20,
};
static struct pstat *stats;

double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int is_gone(int err)
{
	return err == ENOTCONN || err == ECONNABORTED;
}

void note_op(struct proc *p, const char *fmt, ...)
{
	va_list ap;
	char *s = p->ring[p->opno % RING];
	int n = snprintf(s, sizeof(p->ring[0]), "#%llu ", (unsigned long long)p->opno);

	va_start(ap, fmt);
	vsnprintf(s + n, sizeof(p->ring[0]) - (size_t)n, fmt, ap);
	va_end(ap);
	if (p->o->verbose)
		fprintf(stderr, "p%d %s\n", p->idx, s);
}

int fail(struct proc *p, const char *fmt, ...)
{
	va_list ap;

	if (p->st->failed)
		return -1;
	va_start(ap, fmt);
	vsnprintf(p->failmsg, sizeof(p->failmsg), fmt, ap);
	va_end(ap);
	p->st->failed = 1;
	return -1;
}

static void report_failure(struct proc *p)
{
	uint64_t first = p->opno >= RING ? p->opno - RING + 1 : 0;

	fprintf(stderr, "mendfs_stress: p%d FAILED at operation #%llu: %s\n", p->idx,
		(unsigned long long)p->opno, p->failmsg);
	fprintf(stderr, "  seed %llu: mendfs_stress -s %llu -p %d -n %llu ... reproduces it\n",
		(unsigned long long)o.seed, (unsigned long long)o.seed, o.nprocs,
		(unsigned long long)p->opno + 1);
	fprintf(stderr, "  last operations of p%d:\n", p->idx);
	for (uint64_t i = first; i <= p->opno; i++)
		if (p->ring[i % RING][0])
			fprintf(stderr, "    %s\n", p->ring[i % RING]);
}

/* Has the filesystem gone away (daemon killed)?  Only asked under -k. */
static int fs_gone(struct proc *p)
{
	struct statfs sf;

	return fstatfs(p->rootfd, &sf) && is_gone(errno);
}

/* Remove everything the model holds, children before their directories. */
static int cleanup(struct proc *p)
{
	char path[4096];

	while (p->ndents) {
		struct dent *d = NULL;
		for (size_t i = 0; i < p->ndents && !d; i++)
			if (!S_ISDIR(p->dents[i]->obj->type) || !p->dents[i]->obj->nchildren)
				d = p->dents[i];
		dent_path(d, path, sizeof(path));
		if (unlinkat(p->rootfd, path, S_ISDIR(d->obj->type) ? AT_REMOVEDIR : 0))
			return fail(p, "cleanup: remove %s: %s", path, strerror(errno));
		dent_del(p, d);
	}
	return check_dir(p, &p->root);
}

/* -P: the whole content of the file the last operation changed, through one of its names. */
static int check_touched(struct proc *p)
{
	char path[4096];

	for (size_t i = 0; i < p->ndents; i++)
		if (p->dents[i]->obj == p->touched) {
			dent_path(p->dents[i], path, sizeof(path));
			int fd = openat(p->rootfd, path, O_RDONLY);
			if (fd < 0)
				return fail(p, "open %s: %s", path, strerror(errno));
			int r = check_content(p, p->dents[i], fd);
			close(fd);
			return r;
		}
	return 0;
}

static int worker(int idx, double t0, int dirfd)
{
	struct proc *p = calloc(1, sizeof(*p));
	unsigned total = 0, cum[NOPS];
	struct stat st;

	if (!p || !(p->buf = malloc(BUFSZ)) || !(p->buf2 = malloc(BUFSZ)))
		return 2;
	p->idx = idx;
	p->o = &o;
	p->st = &stats[idx];
	p->t0 = t0;
	p->synclogfd = -1;
	p->nexttag = 1;
	rng_seed(p, o.seed, idx);
	snprintf(p->rootname, sizeof(p->rootname), "p%d", idx);
	if (o.synclog) {
		p->synclogfd = open(o.synclog, O_WRONLY | O_APPEND | O_CREAT, 0644);
		if (p->synclogfd < 0) {
			fprintf(stderr, "mendfs_stress: %s: %s\n", o.synclog, strerror(errno));
			return 2;
		}
	}
	if (mkdirat(dirfd, p->rootname, 0755) ||
	    (p->rootfd = openat(dirfd, p->rootname, O_RDONLY | O_DIRECTORY)) < 0 ||
	    fstat(p->rootfd, &st)) {
		fprintf(stderr, "mendfs_stress: %s/%s: %s\n", o.dir, p->rootname, strerror(errno));
		return is_gone(errno) && o.gone_ok ? 0 : 2;
	}
	p->root.name = p->rootname;
	p->root.obj = obj_new(S_IFDIR, st.st_mode & 07777);
	p->root.obj->ino = (uint64_t)st.st_ino;
	p->root.obj->uid = st.st_uid;
	p->root.obj->gid = st.st_gid;
	p->root.obj->nlink = 1;
	for (int k = 0; k < NOPS; k++)
		cum[k] = total += o.weights[k];

	int r = 0;
	for (p->opno = 0; !o.nops || p->opno < o.nops; p->opno++) {
		if (o.seconds && now_sec() - t0 >= o.seconds)
			break;
		uint64_t x = rng_below(p, total);
		int k = 0;
		while (x >= cum[k])
			k++;
		p->st->ops++;
		p->touched = NULL;
		if ((r = run_op(p, (enum op_kind)k)))
			break;
		if (o.paranoid && p->touched && (r = check_touched(p)))
			break;
	}
	if (!r && !p->st->failed) {
		note_op(p, "final check");
		r = check_all(p);
		if (!r && o.manifest) {
			note_op(p, "manifest");
			r = manifest_write(p, o.manifest);
		}
		if (!r && o.cleanup) {
			note_op(p, "cleanup");
			r = cleanup(p);
			if (!r && unlinkat(dirfd, p->rootname, AT_REMOVEDIR))
				r = fail(p, "rmdir %s: %s", p->rootname, strerror(errno));
		}
	}
	if ((r || p->st->failed) && o.gone_ok && (p->st->gone || fs_gone(p))) {
		/* what failed was the filesystem going away */
		p->st->gone = 1;
		p->st->failed = 0;
		return 0;
	}
	if (r || p->st->failed) {
		if (!p->failmsg[0])
			snprintf(p->failmsg, sizeof(p->failmsg), "(no message)");
		report_failure(p);
		return 1;
	}
	p->st->done = 1;
	return 0;
}

static int parse_weights(const char *spec)
{
	char *s = strdup(spec), *save = NULL;

	for (char *t = strtok_r(s, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(t, '=');
		int k;
		if (!strcmp(t, "none")) {
			memset(o.weights, 0, sizeof(o.weights));
			continue;
		}
		if (!eq)
			goto bad;
		*eq = 0;
		for (k = 0; k < NOPS && strcmp(op_names[k], t); k++)
			;
		if (k == NOPS)
			goto bad;
		o.weights[k] = (unsigned)strtoul(eq + 1, NULL, 10);
	}
	free(s);
	return 0;
bad:
	fprintf(stderr, "mendfs_stress: -f: bad item '%s'\n", spec);
	free(s);
	return -1;
}

static uint64_t parse_size(const char *s)
{
	char *end;
	uint64_t v = strtoull(s, &end, 0);

	switch (*end) {
	case 'k': case 'K': return v << 10;
	case 'm': case 'M': return v << 20;
	case 'g': case 'G': return v << 30;
	}
	return v;
}

static void summary(double secs)
{
	struct pstat t = { 0 };
	int failed = 0, gone = 0, done = 0;

	for (int i = 0; i < o.nprocs; i++) {
		struct pstat *s = &stats[i];
		for (int k = 0; k < NOPS; k++) {
			t.ok[k] += s->ok[k];
			t.experr[k] += s->experr[k];
			t.enospc[k] += s->enospc[k];
			t.notsup[k] += s->notsup[k];
		}
		t.ops += s->ops;
		t.bytes_written += s->bytes_written;
		t.bytes_verified += s->bytes_verified;
		t.reads_verified += s->reads_verified;
		t.files_verified += s->files_verified;
		t.dirs_verified += s->dirs_verified;
		failed += s->failed;
		gone += s->gone;
		done += s->done;
	}
	printf("%-10s %10s %10s %8s %8s\n", "op", "ok", "errno-ok", "ENOSPC", "ENOTSUP");
	for (int k = 0; k < NOPS; k++)
		if (t.ok[k] + t.experr[k] + t.enospc[k] + t.notsup[k])
			printf("%-10s %10llu %10llu %8llu %8llu\n", op_names[k],
			       (unsigned long long)t.ok[k], (unsigned long long)t.experr[k],
			       (unsigned long long)t.enospc[k], (unsigned long long)t.notsup[k]);
	printf("mendfs_stress: seed %llu, %d processes, %llu operations in %.1f s (%.0f/s), "
	       "%.1f MiB written, %llu reads and %.1f MiB verified, final check of %llu files "
	       "and %llu directories: %s\n",
	       (unsigned long long)o.seed, o.nprocs, (unsigned long long)t.ops, secs,
	       secs > 0 ? (double)t.ops / secs : 0.0, (double)t.bytes_written / 1048576.0,
	       (unsigned long long)t.reads_verified, (double)t.bytes_verified / 1048576.0,
	       (unsigned long long)t.files_verified, (unsigned long long)t.dirs_verified,
	       failed ? "FAILED" : gone ? "filesystem gone (-k)" :
	       done == o.nprocs ? "all verified" : "INCOMPLETE");
}

int main(int argc, char **argv)
{
	const char *verify = NULL, *mverify = NULL;
	int c, seeded = 0, status = 0;
	pid_t pids[MAXPROCS];

	memcpy(o.weights, op_default_weights, sizeof(o.weights));
	for (int i = 1; i < argc; i++)
		if (!strcmp(argv[i], "--help")) {
			usage(stdout);
			return 0;
		}
	while ((c = getopt(argc, argv, "p:n:t:s:f:e:z:SkcPvVl:m:Mh")) != -1) {
		switch (c) {
		case 'p': o.nprocs = atoi(optarg); break;
		case 'n': o.nops = strtoull(optarg, NULL, 0); break;
		case 't': o.seconds = atof(optarg); break;
		case 's': o.seed = strtoull(optarg, NULL, 0); seeded = 1; break;
		case 'f': if (parse_weights(optarg)) return 2; break;
		case 'e': o.max_entries = (unsigned)atoi(optarg); break;
		case 'z': o.max_size = parse_size(optarg); break;
		case 'S': o.allow_enospc = 1; break;
		case 'k': o.gone_ok = 1; break;
		case 'c': o.cleanup = 1; break;
		case 'P': o.paranoid = 1; break;
		case 'v': o.verbose = 1; break;
		case 'V': verify = ""; break;
		case 'l': o.synclog = optarg; break;
		case 'm': o.manifest = optarg; break;
		case 'M': mverify = ""; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (verify || mverify) {
		if (argc - optind != 2 || (verify && mverify)) {
			usage(stderr);
			return 2;
		}
		return verify ? synclog_verify(argv[optind], argv[optind + 1]) :
				manifest_verify(argv[optind], argv[optind + 1]);
	}
	if (argc - optind != 1 || (o.manifest && o.cleanup) || o.nprocs < 1 || o.nprocs > MAXPROCS || o.max_entries < 1 ||
	    o.max_size < 4096) {
		usage(stderr);
		return 2;
	}
	unsigned total = 0;
	for (int k = 0; k < NOPS; k++)
		total += o.weights[k];
	if (!total) {
		fprintf(stderr, "mendfs_stress: every weight is 0\n");
		return 2;
	}
	o.dir = argv[optind];
	if (!o.nops && !o.seconds)
		o.nops = 10000;
	if (!seeded)
		o.seed = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
	int dirfd = open(o.dir, O_RDONLY | O_DIRECTORY);
	if (dirfd < 0) {
		fprintf(stderr, "mendfs_stress: %s: %s\n", o.dir, strerror(errno));
		return 2;
	}
	stats = mmap(NULL, sizeof(*stats) * (size_t)o.nprocs, PROT_READ | PROT_WRITE,
		     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (stats == MAP_FAILED) {
		perror("mendfs_stress: mmap");
		return 2;
	}
	umask(0);
	printf("mendfs_stress: seed %llu, %d processes, ", (unsigned long long)o.seed, o.nprocs);
	if (o.nops)
		printf("%llu operations each%s", (unsigned long long)o.nops, o.seconds ? " or " : "");
	if (o.seconds)
		printf("%.0f s", o.seconds);
	printf(", in %s\n", o.dir);
	fflush(stdout);
	double t0 = now_sec(), last = t0;
	for (int i = 0; i < o.nprocs; i++) {
		pids[i] = fork();
		if (pids[i] < 0) {
			perror("mendfs_stress: fork");
			return 2;
		}
		if (pids[i] == 0)
			_exit(worker(i, t0, dirfd));
	}
	int left = o.nprocs;
	while (left) {
		int ws;
		pid_t w = waitpid(-1, &ws, WNOHANG);
		if (w > 0) {
			int i;
			for (i = 0; i < o.nprocs && pids[i] != w; i++)
				;
			left--;
			if (WIFSIGNALED(ws)) {
				fprintf(stderr, "mendfs_stress: p%d killed by signal %d\n", i,
					WTERMSIG(ws));
				status = 1;
			} else if (WEXITSTATUS(ws)) {
				if (!(o.gone_ok && i < o.nprocs && stats[i].gone))
					status = status ? status : WEXITSTATUS(ws);
			}
			continue;
		}
		if (w < 0 && errno != EINTR)
			break;
		/* progress of long runs: a line a minute */
		if (o.seconds >= 120 && now_sec() - last >= 60) {
			uint64_t ops = 0;
			last = now_sec();
			for (int i = 0; i < o.nprocs; i++)
				ops += stats[i].ops;
			printf("mendfs_stress: %.0f s, %llu operations\n", last - t0,
			       (unsigned long long)ops);
			fflush(stdout);
		}
		struct timespec ts = { 0, 100 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	summary(now_sec() - t0);
	for (int i = 0; i < o.nprocs; i++)
		if (stats[i].failed && !stats[i].gone)
			status = 1;
	return status;
}
