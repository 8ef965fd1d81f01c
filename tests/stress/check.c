/*
 * check.c — mendfs_stress's comparisons of the filesystem with the model: one name's
 * attributes (type, permissions, inode number, link count, owner, size, symlink target,
 * device number), a directory's full listing (names, inode numbers, types; nothing missing,
 * nothing extra, no duplicates), a file's whole content, an object's xattrs; and the final
 * walk of everything a process owns.  Every mismatch is a failure (fail() in main.c).
 * Whole-file checks drop the file's cached pages first, so they read what the daemon has.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include "stress.h"

int check_stat(struct proc *p, struct dent *d, const char *why)
{
	char path[4096];
	struct stat st;
	struct obj *ob = d->obj;
	int nlink = S_ISDIR(ob->type) ? 2 + ob->nsubdirs : ob->nlink;

	dent_path(d, path, sizeof(path));
	if (fstatat(p->rootfd, path, &st, AT_SYMLINK_NOFOLLOW))
		return fail(p, "%s: stat %s: %s", why, path, strerror(errno));
	if ((st.st_mode & S_IFMT) != ob->type)
		return fail(p, "%s: %s has type 0%o, expected 0%o", why, path,
			    st.st_mode & S_IFMT, ob->type);
	if ((uint64_t)st.st_ino != ob->ino)
		return fail(p, "%s: %s has inode %llu, expected %llu", why, path,
			    (unsigned long long)st.st_ino, (unsigned long long)ob->ino);
	if ((st.st_mode & 07777) != ob->perm)
		return fail(p, "%s: %s has mode 0%o, expected 0%o", why, path, st.st_mode & 07777,
			    ob->perm);
	if ((int)st.st_nlink != nlink)
		return fail(p, "%s: %s has %lu links, expected %d", why, path,
			    (unsigned long)st.st_nlink, nlink);
	if (st.st_uid != ob->uid || st.st_gid != ob->gid)
		return fail(p, "%s: %s is owned by %u:%u, expected %u:%u", why, path, st.st_uid,
			    st.st_gid, ob->uid, ob->gid);
	if (S_ISREG(ob->type) && (uint64_t)st.st_size != ob->size)
		return fail(p, "%s: %s has size %llu, expected %llu", why, path,
			    (unsigned long long)st.st_size, (unsigned long long)ob->size);
	if (S_ISLNK(ob->type)) {
		char t[4096];
		ssize_t n = readlinkat(p->rootfd, path, t, sizeof(t));
		if (n < 0)
			return fail(p, "%s: readlink %s: %s", why, path, strerror(errno));
		if ((size_t)n != strlen(ob->target) || memcmp(t, ob->target, (size_t)n) ||
		    (uint64_t)st.st_size != (uint64_t)n)
			return fail(p, "%s: symlink %s points at '%.*s' (size %lld), expected '%s'",
				    why, path, (int)n, t, (long long)st.st_size, ob->target);
	}
	if ((S_ISCHR(ob->type) || S_ISBLK(ob->type)) && st.st_rdev != ob->rdev)
		return fail(p, "%s: device %s is %u:%u, expected %u:%u", why, path,
			    major(st.st_rdev), minor(st.st_rdev), major(ob->rdev), minor(ob->rdev));
	return 0;
}

static unsigned char dtype_of(mode_t type)
{
	switch (type) {
	case S_IFREG: return DT_REG;
	case S_IFDIR: return DT_DIR;
	case S_IFLNK: return DT_LNK;
	case S_IFIFO: return DT_FIFO;
	case S_IFSOCK: return DT_SOCK;
	case S_IFCHR: return DT_CHR;
	case S_IFBLK: return DT_BLK;
	}
	return DT_UNKNOWN;
}

int check_dir(struct proc *p, struct dent *d)
{
	char path[4096];
	int fd, seen = 0, dots = 0;
	DIR *dir;
	struct dirent *e;

	dent_path(d, path, sizeof(path));
	fd = openat(p->rootfd, path, O_RDONLY | O_DIRECTORY);
	if (fd < 0)
		return fail(p, "opendir %s: %s", path, strerror(errno));
	dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return fail(p, "fdopendir %s: %s", path, strerror(errno));
	}
	for (;;) {
		errno = 0;
		e = readdir(dir);
		if (!e)
			break;
		if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) {
			dots++;
			continue;
		}
		struct dent *c = dent_child(p, d, e->d_name);
		if (!c) {
			closedir(dir);
			return fail(p, "readdir %s: unexpected entry '%s' (inode %llu)", path,
				    e->d_name, (unsigned long long)e->d_ino);
		}
		if ((uint64_t)e->d_ino != c->obj->ino) {
			closedir(dir);
			return fail(p, "readdir %s: '%s' has inode %llu, expected %llu", path,
				    e->d_name, (unsigned long long)e->d_ino,
				    (unsigned long long)c->obj->ino);
		}
		if (e->d_type != DT_UNKNOWN && e->d_type != dtype_of(c->obj->type)) {
			closedir(dir);
			return fail(p, "readdir %s: '%s' has type %u, expected %u", path, e->d_name,
				    e->d_type, dtype_of(c->obj->type));
		}
		seen++;
	}
	if (errno) {
		int err = errno;
		closedir(dir);
		return fail(p, "readdir %s: %s", path, strerror(err));
	}
	closedir(dir);
	if (seen != d->obj->nchildren || dots != 2)
		return fail(p, "readdir %s: %d entries and %d dots, expected %d entries", path, seen,
			    dots, d->obj->nchildren);
	return 0;
}

int check_content(struct proc *p, struct dent *d, int fd)
{
	char path[4096];
	uint64_t off = 0, size = d->obj->size;

	dent_path(d, path, sizeof(path));
	/* from the daemon, not the kernel's page cache (which FUSE keeps across opens) */
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	while (off <= size) {
		size_t want = BUFSZ;
		ssize_t n = pread(fd, p->buf, want, (off_t)off);
		if (n < 0)
			return fail(p, "read %s at %llu: %s", path, (unsigned long long)off,
				    strerror(errno));
		if (off + (uint64_t)n > size)
			return fail(p, "read %s at %llu returned %zd bytes past the size %llu", path,
				    (unsigned long long)off, n, (unsigned long long)size);
		if (n == 0) {
			if (off != size)
				return fail(p, "read %s: end of file at %llu, expected %llu", path,
					    (unsigned long long)off, (unsigned long long)size);
			break;
		}
		long bad = model_compare(p, d->obj, off, p->buf, (size_t)n);
		if (bad >= 0) {
			model_expect(p, d->obj, off + (uint64_t)bad, p->buf2, 1);
			return fail(p, "content of %s differs at byte %llu: 0x%02x, expected 0x%02x",
				    path, (unsigned long long)(off + (uint64_t)bad), p->buf[bad],
				    p->buf2[0]);
		}
		p->st->bytes_verified += (uint64_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int check_xattrs(struct proc *p, struct dent *d)
{
	char path[4096], list[4096];
	struct obj *ob = d->obj;
	ssize_t n;
	int count = 0;

	if (p->xattr_off)
		return 0;
	dent_path(d, path, sizeof(path));
	{
		/* the l*xattr calls take a path: go through /proc/self/fd of the root */
		char full[4200];
		snprintf(full, sizeof(full), "/proc/self/fd/%d/%s", p->rootfd, path);
		n = llistxattr(full, list, sizeof(list));
		if (n < 0) {
			if (errno == ENOTSUP)
				return 0;
			return fail(p, "listxattr %s: %s", path, strerror(errno));
		}
		for (char *s = list; s < list + n; s += strlen(s) + 1) {
			if (strncmp(s, "user.", 5) && strncmp(s, "trusted.", 8))
				continue;	/* security.* and friends set by others */
			int found = -1;
			for (int i = 0; i < ob->nxattrs; i++)
				if (!strcmp(ob->xattrs[i].name, s))
					found = i;
			if (found < 0)
				return fail(p, "listxattr %s: unexpected '%s'", path, s);
			count++;
			ssize_t v = lgetxattr(full, s, p->buf, BUFSZ);
			if (v < 0)
				return fail(p, "getxattr %s %s: %s", path, s, strerror(errno));
			pattern_fill(p->o->seed, ob->xattrs[found].tag, 0, p->buf2,
				     ob->xattrs[found].len);
			if ((uint32_t)v != ob->xattrs[found].len || memcmp(p->buf, p->buf2, (size_t)v))
				return fail(p, "getxattr %s %s: %zd bytes that differ from the %u "
					    "written", path, s, v, ob->xattrs[found].len);
		}
	}
	if (count != ob->nxattrs)
		return fail(p, "listxattr %s: %d attributes, expected %d", path, count, ob->nxattrs);
	return 0;
}

int check_all(struct proc *p)
{
	char path[4096];

	if (check_dir(p, &p->root))
		return -1;
	p->st->dirs_verified++;
	for (size_t i = 0; i < p->ndents; i++) {
		struct dent *d = p->dents[i];
		if (check_stat(p, d, "final check") || check_xattrs(p, d))
			return -1;
		if (S_ISDIR(d->obj->type)) {
			if (check_dir(p, d))
				return -1;
			p->st->dirs_verified++;
		} else if (S_ISREG(d->obj->type)) {
			dent_path(d, path, sizeof(path));
			int fd = openat(p->rootfd, path, O_RDONLY);
			if (fd < 0)
				return fail(p, "open %s: %s", path, strerror(errno));
			int r = check_content(p, d, fd);
			close(fd);
			if (r)
				return -1;
			p->st->files_verified++;
		}
	}
	return 0;
}
