/*
 * synclog.c — the fsync record of mendfs_stress -l FILE, and its check (-V FILE DIR), for
 * crash tests: the daemon is killed while the stress runs, remounted (journal replay), and
 * every file fsync'd and not touched since must be there with exactly that content.
 *
 * The record is a text file outside the filesystem, appended with one write() per line
 * (O_APPEND: the processes' lines never mix; each process's own lines stay in order):
 *   S <path> <size> <crc32c>   after an fsync or fdatasync of the file at <path> returned 0
 *                              (size and checksum computed from the model);
 *   D <path>                   before any operation that may change the content or the name
 *                              of <path> or of anything below it (write, truncate, punch,
 *                              rename, unlink, rmdir...; every name of a changed file).
 * Paths are relative to the stress directory.  An S line followed by no D line for its path
 * or a parent's is a promise the filesystem must keep through the crash.  Each line ends with
 * " @<ns>", CLOCK_MONOTONIC when it was written (after the fsync returned; before the
 * change): the crash-point test keeps the lines older than a point of the daemon's write log
 * (t_crashpoints.sh); -V ignores it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <time.h>
#include "crc32c.h"
#include "stress.h"

/* One line: a D line when synced is 0, else an S line. */
static void logline(struct proc *p, int synced, const char *path, uint64_t size, uint32_t crc)
{
	char line[4300];
	struct timespec ts;
	unsigned long long now;
	int n;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	now = (unsigned long long)ts.tv_sec * 1000000000ull + (unsigned long long)ts.tv_nsec;
	n = synced ? snprintf(line, sizeof(line), "S %s/%s %llu %08x @%llu\n", p->rootname, path,
			      (unsigned long long)size, crc, now)
		   : snprintf(line, sizeof(line), "D %s/%s @%llu\n", p->rootname, path, now);

	if (n > 0 && (size_t)n < sizeof(line) && write(p->synclogfd, line, (size_t)n) != n) {
		fprintf(stderr, "mendfs_stress: writing the sync log: %s\n", strerror(errno));
		exit(2);
	}
}

void synclog_dirty(struct proc *p, const struct dent *d)
{
	char path[4096];

	if (p->synclogfd < 0)
		return;
	dent_path(d, path, sizeof(path));
	logline(p, 0, path, 0, 0);
}

void synclog_dirty_obj(struct proc *p, const struct obj *ob)
{
	if (p->synclogfd < 0)
		return;
	for (size_t i = 0; i < p->ndents; i++)
		if (p->dents[i]->obj == ob)
			synclog_dirty(p, p->dents[i]);
}

void synclog_synced(struct proc *p, const struct dent *d)
{
	char path[4096];
	uint32_t crc = 0;
	const struct obj *ob = d->obj;

	if (p->synclogfd < 0 || model_has_unknown(ob))
		return;
	for (uint64_t off = 0; off < ob->size; off += BUFSZ) {
		size_t n = ob->size - off < BUFSZ ? (size_t)(ob->size - off) : BUFSZ;
		model_expect(p, ob, off, p->buf2, n);
		crc = mfs_crc32c(crc, p->buf2, n);
	}
	dent_path(d, path, sizeof(path));
	logline(p, 1, path, ob->size, crc);
}

struct promise {
	char *path;
	unsigned long long size;
	uint32_t crc;
	unsigned line;
};

static int under(const char *path, const char *top)
{
	size_t n = strlen(top);

	return !strncmp(path, top, n) && (path[n] == 0 || path[n] == '/');
}

/* Check one promise: 0 kept, 1 broken (printed). */
static int keep(int dirfd, const struct promise *pr, unsigned char *buf)
{
	unsigned long long size = 0;
	uint32_t crc = 0;
	int fd = openat(dirfd, pr->path, O_RDONLY | O_NOFOLLOW);
	ssize_t n;

	if (fd < 0) {
		printf("synclog: %s (fsync'd, line %u): open: %s\n", pr->path, pr->line,
		       strerror(errno));
		return 1;
	}
	while ((n = read(fd, buf, BUFSZ)) > 0) {
		crc = mfs_crc32c(crc, buf, (size_t)n);
		size += (unsigned long long)n;
	}
	if (n < 0) {
		printf("synclog: %s: read: %s\n", pr->path, strerror(errno));
		close(fd);
		return 1;
	}
	close(fd);
	if (size != pr->size || crc != pr->crc) {
		printf("synclog: %s (fsync'd, line %u): %llu bytes, crc %08x; expected %llu, %08x\n",
		       pr->path, pr->line, size, crc, pr->size, pr->crc);
		return 1;
	}
	return 0;
}

int synclog_verify(const char *log, const char *dir)
{
	FILE *f = fopen(log, "r");
	struct promise *pr = NULL;
	size_t npr = 0, cap = 0;
	char line[4400], path[4300];
	unsigned lineno = 0, nsync = 0;
	int dirfd, bad = 0;
	unsigned char *buf;

	if (!f) {
		fprintf(stderr, "mendfs_stress: %s: %s\n", log, strerror(errno));
		return 2;
	}
	while (fgets(line, sizeof(line), f)) {
		unsigned long long size;
		unsigned crc;
		lineno++;
		if (sscanf(line, "S %4299s %llu %x", path, &size, &crc) == 3) {
			nsync++;
		} else if (sscanf(line, "D %4299s", path) != 1) {
			fprintf(stderr, "mendfs_stress: %s:%u: unreadable line\n", log, lineno);
			fclose(f);
			return 2;
		}
		/* either kind retires every promise on or under this path */
		for (size_t i = 0; i < npr;)
			if (under(pr[i].path, path)) {
				free(pr[i].path);
				pr[i] = pr[--npr];
			} else {
				i++;
			}
		if (line[0] != 'S')
			continue;
		if (npr == cap) {
			cap = cap ? 2 * cap : 256;
			pr = realloc(pr, cap * sizeof(*pr));
		}
		if (!pr || !(pr[npr].path = strdup(path))) {
			fprintf(stderr, "mendfs_stress: out of memory\n");
			exit(2);
		}
		pr[npr].size = size;
		pr[npr].crc = crc;
		pr[npr].line = lineno;
		npr++;
	}
	fclose(f);
	dirfd = open(dir, O_RDONLY | O_DIRECTORY);
	buf = malloc(BUFSZ);
	if (dirfd < 0 || !buf) {
		fprintf(stderr, "mendfs_stress: %s: %s\n", dir, strerror(errno));
		return 2;
	}
	for (size_t i = 0; i < npr; i++) {
		bad += keep(dirfd, &pr[i], buf);
		free(pr[i].path);
	}
	printf("synclog: %u fsyncs recorded, %zu files fsync'd and untouched since: %s\n", nsync,
	       npr, bad ? "BROKEN" : "all intact");
	if (bad)
		printf("synclog: %d of %zu fsync'd files differ\n", bad, npr);
	free(pr);
	free(buf);
	close(dirfd);
	return bad ? 1 : 0;
}
