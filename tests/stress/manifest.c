/*
 * manifest.c — mendfs_stress -m FILE (write, after the final check, a manifest of everything
 * the processes left) and -M FILE DIR (check DIR against it later: after an unmount and a
 * remount, offline checks or repairs in between).  The torture test's last word on the data.
 *
 * The manifest is a text file outside the filesystem; each process appends its own lines,
 * one write() per line (O_APPEND: lines never mix).  Paths are relative to the stress
 * directory and start with the process's pN; names and symlink targets hold no blanks
 * (ops.c makes them of letters, digits and '/').
 *   <kind> <path> <ino> <mode> <uid> <gid> <nlink> <size> <data>
 *       kind f (regular file: data is the crc32c of its content, '-' when some bytes are
 *       unknown after an ENOSPC), d (directory), l (symlink: data is the target), c and b
 *       (devices: data is major:minor), p (fifo), s (socket); mode in octal (the 07777 bits);
 *       size is checked for files only; data '-' when there is nothing to say.
 *   x <path> <name> <len> <crc32c>   one user.* or trusted.* attribute of <path>
 * Every name the manifest lists must exist with these attributes and content, every xattr of
 * those namespaces must be listed, and nothing else may exist under DIR (a name the repair
 * moved, say to lost+found, is a difference).  -M prints each difference (the first 30) and
 * a summary; exit 0 when all is intact, 1 on any difference, 2 on a setup error.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include "crc32c.h"
#include "stress.h"

static char kind_of(mode_t type)
{
	switch (type) {
	case S_IFREG: return 'f';
	case S_IFDIR: return 'd';
	case S_IFLNK: return 'l';
	case S_IFCHR: return 'c';
	case S_IFBLK: return 'b';
	case S_IFIFO: return 'p';
	case S_IFSOCK: return 's';
	}
	return '?';
}

static int put(int fd, const char *line, int n)
{
	if (n <= 0 || n >= 8192 || write(fd, line, (size_t)n) != n)
		return -1;
	return 0;
}

/* The lines of one name (and its xattrs). */
static int write_one(struct proc *p, int fd, const struct dent *d)
{
	char path[4096], data[2100], line[8192];
	const struct obj *ob = d->obj;
	int nlink = S_ISDIR(ob->type) ? 2 + ob->nsubdirs : ob->nlink;
	uint32_t crc = 0;

	if (d == &p->root)
		snprintf(path, sizeof(path), "%s", p->rootname);
	else {
		size_t n = (size_t)snprintf(path, sizeof(path), "%s/", p->rootname);
		dent_path(d, path + n, sizeof(path) - n);
	}
	snprintf(data, sizeof(data), "-");
	if (S_ISREG(ob->type) && !model_has_unknown(ob)) {
		for (uint64_t off = 0; off < ob->size; off += BUFSZ) {
			size_t n = ob->size - off < BUFSZ ? (size_t)(ob->size - off) : BUFSZ;
			model_expect(p, ob, off, p->buf2, n);
			crc = mfs_crc32c(crc, p->buf2, n);
		}
		snprintf(data, sizeof(data), "%08x", crc);
	} else if (S_ISLNK(ob->type)) {
		snprintf(data, sizeof(data), "%s", ob->target);
	} else if (S_ISCHR(ob->type) || S_ISBLK(ob->type)) {
		snprintf(data, sizeof(data), "%u:%u", major(ob->rdev), minor(ob->rdev));
	}
	if (put(fd, line, snprintf(line, sizeof(line), "%c %s %llu %o %u %u %d %llu %s\n",
				   kind_of(ob->type), path, (unsigned long long)ob->ino,
				   (unsigned)ob->perm, (unsigned)ob->uid, (unsigned)ob->gid, nlink,
				   (unsigned long long)ob->size, data)))
		return -1;
	for (int i = 0; i < ob->nxattrs; i++) {
		pattern_fill(p->o->seed, ob->xattrs[i].tag, 0, p->buf2, ob->xattrs[i].len);
		crc = mfs_crc32c(0, p->buf2, ob->xattrs[i].len);
		if (put(fd, line, snprintf(line, sizeof(line), "x %s %s %u %08x\n", path,
					   ob->xattrs[i].name, ob->xattrs[i].len, crc)))
			return -1;
	}
	return 0;
}

int manifest_write(struct proc *p, const char *file)
{
	int fd = open(file, O_WRONLY | O_APPEND | O_CREAT, 0644), r;

	if (fd < 0)
		return fail(p, "manifest %s: %s", file, strerror(errno));
	r = write_one(p, fd, &p->root);
	for (size_t i = 0; !r && i < p->ndents; i++)
		r = write_one(p, fd, p->dents[i]);
	if (r)
		r = fail(p, "manifest %s: write: %s", file, strerror(errno));
	close(fd);
	return r;
}

/* --- -M: the check ------------------------------------------------------------------- */

struct ment {
	char kind;
	char *path, *data;
	unsigned long long ino, size;
	unsigned mode, uid, gid;
	int nlink, nx, seen;
};

struct mx {
	char *path, *name;
	unsigned len;
	uint32_t crc;
};

struct mcheck {
	struct ment *e;
	size_t ne;
	struct mx *x;
	size_t nx;
	int dirfd, bad;
	unsigned char *buf;
	unsigned long long bytes;
	unsigned count[8];		/* f d l c b p s, x */
};

static const char kinds[] = "fdlcbps";

static int by_path(const void *a, const void *b)
{
	return strcmp(((const struct ment *)a)->path, ((const struct ment *)b)->path);
}

static int by_path_name(const void *a, const void *b)
{
	const struct mx *x = a, *y = b;
	int c = strcmp(x->path, y->path);

	return c ? c : strcmp(x->name, y->name);
}

static void differ(struct mcheck *m, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void differ(struct mcheck *m, const char *fmt, ...)
{
	va_list ap;

	if (m->bad++ >= 30)
		return;
	va_start(ap, fmt);
	fputs("manifest: ", stdout);
	vprintf(fmt, ap);
	fputc('\n', stdout);
	va_end(ap);
}

static int load(struct mcheck *m, const char *file)
{
	FILE *f = fopen(file, "r");
	char line[8300], kind[4], path[4200], data[2200];
	size_t cape = 0, capx = 0;
	unsigned lineno = 0;

	if (!f) {
		fprintf(stderr, "mendfs_stress: %s: %s\n", file, strerror(errno));
		return 2;
	}
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		if (line[0] == 'x') {
			struct mx x;
			unsigned len, crc;
			if (sscanf(line, "x %4199s %2199s %u %x", path, data, &len, &crc) != 4)
				goto bad;
			x.path = strdup(path);
			x.name = strdup(data);
			x.len = len;
			x.crc = crc;
			if (m->nx == capx) {
				capx = capx ? 2 * capx : 256;
				m->x = realloc(m->x, capx * sizeof(*m->x));
			}
			if (!m->x || !x.path || !x.name)
				goto nomem;
			m->x[m->nx++] = x;
			continue;
		}
		struct ment e = { 0 };
		if (sscanf(line, "%3s %4199s %llu %o %u %u %d %llu %2199s", kind, path, &e.ino,
			   &e.mode, &e.uid, &e.gid, &e.nlink, &e.size, data) != 9 || kind[1] ||
		    !strchr(kinds, kind[0]))
			goto bad;
		e.kind = kind[0];
		e.path = strdup(path);
		e.data = strdup(data);
		if (m->ne == cape) {
			cape = cape ? 2 * cape : 1024;
			m->e = realloc(m->e, cape * sizeof(*m->e));
		}
		if (!m->e || !e.path || !e.data)
			goto nomem;
		m->e[m->ne++] = e;
	}
	fclose(f);
	qsort(m->e, m->ne, sizeof(*m->e), by_path);
	qsort(m->x, m->nx, sizeof(*m->x), by_path_name);
	for (size_t i = 0; i < m->nx; i++) {
		struct ment key = { .path = m->x[i].path };
		struct ment *e = bsearch(&key, m->e, m->ne, sizeof(*m->e), by_path);
		if (!e) {
			fprintf(stderr, "mendfs_stress: %s: an attribute of %s, which is not listed\n",
				file, m->x[i].path);
			return 2;
		}
		e->nx++;
	}
	return 0;
bad:
	fprintf(stderr, "mendfs_stress: %s:%u: unreadable line\n", file, lineno);
	fclose(f);
	return 2;
nomem:
	fprintf(stderr, "mendfs_stress: out of memory\n");
	fclose(f);
	return 2;
}

static void check_data(struct mcheck *m, const struct ment *e)
{
	unsigned long long size = 0;
	uint32_t crc = 0;
	ssize_t n;
	int fd = openat(m->dirfd, e->path, O_RDONLY | O_NOFOLLOW);

	if (fd < 0) {
		differ(m, "%s: open: %s", e->path, strerror(errno));
		return;
	}
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	while ((n = read(fd, m->buf, BUFSZ)) > 0) {
		crc = mfs_crc32c(crc, m->buf, (size_t)n);
		size += (unsigned long long)n;
	}
	if (n < 0)
		differ(m, "%s: read at %llu: %s", e->path, size, strerror(errno));
	else if (size != e->size)
		differ(m, "%s: %llu bytes read, expected %llu", e->path, size, e->size);
	else if (strcmp(e->data, "-") && crc != (uint32_t)strtoul(e->data, NULL, 16))
		differ(m, "%s: content crc32c %08x, expected %s", e->path, crc, e->data);
	m->bytes += size;
	close(fd);
}

static void check_xattrs_of(struct mcheck *m, const struct ment *e)
{
	char full[4300], list[4096];
	ssize_t n;
	int count = 0;

	snprintf(full, sizeof(full), "/proc/self/fd/%d/%s", m->dirfd, e->path);
	n = llistxattr(full, list, sizeof(list));
	if (n < 0) {
		if (errno != ENOTSUP || e->nx)
			differ(m, "%s: listxattr: %s", e->path, strerror(errno));
		return;
	}
	for (char *s = list; s < list + n; s += strlen(s) + 1) {
		if (strncmp(s, "user.", 5) && strncmp(s, "trusted.", 8))
			continue;
		struct mx key = { .path = e->path, .name = s };
		struct mx *x = bsearch(&key, m->x, m->nx, sizeof(*m->x), by_path_name);
		if (!x) {
			differ(m, "%s: unexpected attribute %s", e->path, s);
			continue;
		}
		count++;
		ssize_t v = lgetxattr(full, s, m->buf, BUFSZ);
		if (v < 0)
			differ(m, "%s: getxattr %s: %s", e->path, s, strerror(errno));
		else if ((unsigned)v != x->len || mfs_crc32c(0, m->buf, (size_t)v) != x->crc)
			differ(m, "%s: attribute %s: %zd bytes, crc32c %08x; expected %u, %08x",
			       e->path, s, v, mfs_crc32c(0, m->buf, (size_t)v), x->len, x->crc);
		else
			m->count[7]++;
	}
	if (count != e->nx)
		differ(m, "%s: %d attributes, expected %d", e->path, count, e->nx);
}

static void check_entry(struct mcheck *m, struct ment *e)
{
	struct stat st;
	char t[4096];

	e->seen = 1;
	if (fstatat(m->dirfd, e->path, &st, AT_SYMLINK_NOFOLLOW)) {
		differ(m, "%s: stat: %s", e->path, strerror(errno));
		return;
	}
	if (kind_of(st.st_mode & S_IFMT) != e->kind) {
		differ(m, "%s: kind %c, expected %c", e->path, kind_of(st.st_mode & S_IFMT),
		       e->kind);
		return;
	}
	if ((unsigned long long)st.st_ino != e->ino || (st.st_mode & 07777) != e->mode ||
	    st.st_uid != e->uid || st.st_gid != e->gid || (int)st.st_nlink != e->nlink ||
	    (e->kind == 'f' && (unsigned long long)st.st_size != e->size))
		differ(m, "%s: inode %llu mode %o owner %u:%u links %lu size %lld; expected "
		       "%llu %o %u:%u %d %llu", e->path, (unsigned long long)st.st_ino,
		       st.st_mode & 07777, st.st_uid, st.st_gid, (unsigned long)st.st_nlink,
		       (long long)st.st_size, e->ino, e->mode, e->uid, e->gid, e->nlink,
		       e->kind == 'f' ? e->size : (unsigned long long)st.st_size);
	if (e->kind == 'f') {
		check_data(m, e);
	} else if (e->kind == 'l') {
		ssize_t n = readlinkat(m->dirfd, e->path, t, sizeof(t) - 1);
		if (n < 0)
			differ(m, "%s: readlink: %s", e->path, strerror(errno));
		else if (t[n] = 0, strcmp(t, e->data))
			differ(m, "%s: symlink to '%s', expected '%s'", e->path, t, e->data);
	} else if (e->kind == 'c' || e->kind == 'b') {
		snprintf(t, sizeof(t), "%u:%u", major(st.st_rdev), minor(st.st_rdev));
		if (strcmp(t, e->data))
			differ(m, "%s: device %s, expected %s", e->path, t, e->data);
	}
	check_xattrs_of(m, e);
	m->count[strchr(kinds, e->kind) - kinds]++;
}

/* Every name below path ("" for DIR itself) must be listed, and is checked. */
static void walk(struct mcheck *m, const char *path)
{
	int fd = openat(m->dirfd, path[0] ? path : ".", O_RDONLY | O_DIRECTORY);
	DIR *dir = fd < 0 ? NULL : fdopendir(fd);
	struct dirent *de;
	char child[4200];

	if (!dir) {
		differ(m, "%s: opendir: %s", path[0] ? path : ".", strerror(errno));
		if (fd >= 0)
			close(fd);
		return;
	}
	for (;;) {
		errno = 0;
		if (!(de = readdir(dir)))
			break;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(child, sizeof(child), "%s%s%s", path, path[0] ? "/" : "", de->d_name);
		struct ment key = { .path = child };
		struct ment *e = bsearch(&key, m->e, m->ne, sizeof(*m->e), by_path);
		if (!e) {
			differ(m, "%s: exists (inode %llu), not in the manifest", child,
			       (unsigned long long)de->d_ino);
			continue;
		}
		if (e->seen) {
			differ(m, "%s: listed twice in its directory", child);
			continue;
		}
		check_entry(m, e);
		if (e->kind == 'd')
			walk(m, child);
	}
	if (errno)
		differ(m, "%s: readdir: %s", path[0] ? path : ".", strerror(errno));
	closedir(dir);
}

int manifest_verify(const char *file, const char *dir)
{
	struct mcheck m = { 0 };
	int r = load(&m, file);
	size_t missing = 0;

	if (r)
		return r;
	m.dirfd = open(dir, O_RDONLY | O_DIRECTORY);
	m.buf = malloc(BUFSZ);
	if (m.dirfd < 0 || !m.buf) {
		fprintf(stderr, "mendfs_stress: %s: %s\n", dir, strerror(errno));
		return 2;
	}
	walk(&m, "");
	for (size_t i = 0; i < m.ne; i++)
		if (!m.e[i].seen) {
			differ(&m, "%s: missing", m.e[i].path);
			missing++;
		}
	printf("manifest: %zu names (%u files with %.1f MiB, %u directories, %u symlinks, %u "
	       "special files, %u attributes) checked after the remount: ", m.ne, m.count[0],
	       (double)m.bytes / 1048576.0, m.count[1], m.count[2],
	       m.count[3] + m.count[4] + m.count[5] + m.count[6], m.count[7]);
	if (m.bad)
		printf("%d DIFFERENCES (%zu names missing)\n", m.bad, missing);
	else
		printf("all intact\n");
	for (size_t i = 0; i < m.ne; i++) {
		free(m.e[i].path);
		free(m.e[i].data);
	}
	for (size_t i = 0; i < m.nx; i++) {
		free(m.x[i].path);
		free(m.x[i].name);
	}
	free(m.e);
	free(m.x);
	free(m.buf);
	close(m.dirfd);
	return m.bad ? 1 : 0;
}
