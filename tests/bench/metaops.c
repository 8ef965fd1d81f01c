/*
 * metaops.c — the metadata workloads of the filesystem benchmark (bench_fs.sh): create,
 * stat, readdir and unlink of many empty files, in one directory or spread over several,
 * by one or more threads.  One operation per run, so that the caller can drop the caches
 * and read the daemon's CPU time between them.
 *
 *   metaops create|stat|readdir|unlink DIR NFILES NDIRS [THREADS]
 *
 * Files are DIR/NAME (NDIRS = 1) or DIR/dNNNN/NAME with file i in directory i % NDIRS;
 * create makes the directories, unlink removes them.  Thread t handles the files
 * i ≡ t (mod THREADS); readdir lists every directory once, split the same way.
 * Prints "OPS SECONDS": the operations done (files, or entries read) and the wall time.
 * Exits 1 on the first failing call, naming it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

enum op { OP_CREATE, OP_STAT, OP_READDIR, OP_UNLINK };

struct job {
	pthread_t thread;
	enum op op;
	const char *dir;
	long nfiles, ndirs, nthreads, t;
	long done;
	int failed;
};

static void dir_path(char *buf, size_t len, const struct job *j, long d)
{
	if (j->ndirs > 1)
		snprintf(buf, len, "%s/d%04ld", j->dir, d);
	else
		snprintf(buf, len, "%s", j->dir);
}

static void file_path(char *buf, size_t len, const struct job *j, long i)
{
	if (j->ndirs > 1)
		snprintf(buf, len, "%s/d%04ld/file-%07ld", j->dir, i % j->ndirs, i);
	else
		snprintf(buf, len, "%s/file-%07ld", j->dir, i);
}

static int fail(struct job *j, const char *what, const char *path)
{
	fprintf(stderr, "metaops: %s %s: %s\n", what, path, strerror(errno));
	j->failed = 1;
	return -1;
}

static int one(struct job *j, long i)
{
	char path[4096];
	struct stat st;
	int fd;

	file_path(path, sizeof(path), j, i);
	switch (j->op) {
	case OP_CREATE:
		fd = open(path, O_CREAT | O_EXCL | O_WRONLY, 0644);
		if (fd < 0)
			return fail(j, "create", path);
		close(fd);
		return 0;
	case OP_STAT:
		return stat(path, &st) < 0 ? fail(j, "stat", path) : 0;
	case OP_UNLINK:
		return unlink(path) < 0 ? fail(j, "unlink", path) : 0;
	default:
		return 0;
	}
}

static void *run(void *arg)
{
	struct job *j = arg;

	if (j->op == OP_READDIR) {
		for (long d = j->t; d < j->ndirs; d += j->nthreads) {
			char path[4096];
			struct dirent *de;
			DIR *dp;

			dir_path(path, sizeof(path), j, d);
			dp = opendir(path);
			if (!dp) {
				fail(j, "opendir", path);
				return NULL;
			}
			while ((errno = 0, de = readdir(dp)) != NULL)
				j->done++;
			if (errno)
				fail(j, "readdir", path);
			closedir(dp);
		}
		return NULL;
	}
	for (long i = j->t; i < j->nfiles && !j->failed; i += j->nthreads)
		if (one(j, i) == 0)
			j->done++;
	return NULL;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	static const char *names[] = { "create", "stat", "readdir", "unlink" };
	struct job *jobs;
	long nfiles, ndirs, nthreads = 1, total = 0;
	int op = -1, failed = 0;
	double t0, t1;

	if (argc < 5 || argc > 6) {
		fprintf(stderr, "usage: metaops create|stat|readdir|unlink DIR NFILES NDIRS "
			"[THREADS]\n");
		return 2;
	}
	for (int k = 0; k < 4; k++)
		if (!strcmp(argv[1], names[k]))
			op = k;
	nfiles = atol(argv[3]);
	ndirs = atol(argv[4]);
	if (argc == 6)
		nthreads = atol(argv[5]);
	if (op < 0 || nfiles < 0 || ndirs < 1 || ndirs > 9999 || nthreads < 1 || nthreads > 64) {
		fprintf(stderr, "metaops: bad arguments\n");
		return 2;
	}
	jobs = calloc((size_t)nthreads, sizeof(*jobs));
	if (!jobs)
		return 1;
	t0 = now();
	if (op == OP_CREATE && ndirs > 1) {
		for (long d = 0; d < ndirs; d++) {
			char path[4096];

			snprintf(path, sizeof(path), "%s/d%04ld", argv[2], d);
			if (mkdir(path, 0755) < 0) {
				fprintf(stderr, "metaops: mkdir %s: %s\n", path, strerror(errno));
				return 1;
			}
		}
	}
	for (long t = 0; t < nthreads; t++) {
		jobs[t] = (struct job){ .op = op, .dir = argv[2], .nfiles = nfiles,
					.ndirs = ndirs, .nthreads = nthreads, .t = t };
		if (pthread_create(&jobs[t].thread, NULL, run, &jobs[t]) != 0) {
			fprintf(stderr, "metaops: cannot start a thread\n");
			return 1;
		}
	}
	for (long t = 0; t < nthreads; t++) {
		pthread_join(jobs[t].thread, NULL);
		total += jobs[t].done;
		failed |= jobs[t].failed;
	}
	if (op == OP_UNLINK && ndirs > 1 && !failed) {
		for (long d = 0; d < ndirs; d++) {
			char path[4096];

			snprintf(path, sizeof(path), "%s/d%04ld", argv[2], d);
			if (rmdir(path) < 0) {
				fprintf(stderr, "metaops: rmdir %s: %s\n", path, strerror(errno));
				return 1;
			}
		}
	}
	t1 = now();
	free(jobs);
	printf("%ld %.6f\n", total, t1 - t0);
	return failed;
}
