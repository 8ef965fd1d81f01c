/*
 * ops.c — mendfs_stress's operations.  Each one picks its targets from the model with the
 * process's random numbers, works out from the model what the filesystem must answer (success,
 * or the errno POSIX and Linux give: EEXIST, ENOTEMPTY, EISDIR, ENOTDIR, EINVAL, EPERM,
 * ENOENT, ENODATA), makes the system call, compares, and only then updates the model.  Reads
 * are verified byte for byte.  ENOSPC is an answer only with -S, and then the model is
 * re-synchronised: a namespace change must not have happened at all (checked), a content
 * change leaves its range SEG_UNKNOWN.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <sys/mman.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <sys/xattr.h>
#include "stress.h"

const char *const op_names[NOPS] = {
	"creat", "mkdir", "write", "append", "read", "mmapr", "mmapw", "truncate",
	"falloc", "punch", "zero", "rename", "exchange", "link", "unlink", "rmdir",
	"symlink", "mknod", "setxattr", "rmxattr", "chmod", "chown", "utimes",
	"fsync", "fdatasync", "readdir", "stat", "orphan",
};

const unsigned op_default_weights[NOPS] = {
	[OP_CREAT] = 8, [OP_MKDIR] = 3, [OP_WRITE] = 14, [OP_APPEND] = 3, [OP_READ] = 12,
	[OP_MMAPR] = 3, [OP_MMAPW] = 3, [OP_TRUNCATE] = 4, [OP_FALLOC] = 2, [OP_PUNCH] = 3,
	[OP_ZERO] = 2, [OP_RENAME] = 6, [OP_EXCHANGE] = 2, [OP_LINK] = 3, [OP_UNLINK] = 6,
	[OP_RMDIR] = 2, [OP_SYMLINK] = 3, [OP_MKNOD] = 2, [OP_SETXATTR] = 3, [OP_RMXATTR] = 1,
	[OP_CHMOD] = 2, [OP_CHOWN] = 2, [OP_UTIMES] = 2, [OP_FSYNC] = 3, [OP_FDATASYNC] = 2,
	[OP_READDIR] = 3, [OP_STAT] = 4, [OP_ORPHAN] = 1,
};

enum { OUT_OK, OUT_EXPECTED, OUT_NOSPC, OUT_NOTSUP, OUT_FAIL = -1, OUT_GONE = -2 };
#define PAGE 4096u
#define MAXDEPTH 40

/*
 * Classify a system call's result (errno is read first thing) against the model's expectation (0: success, else an
 * errno).  OUT_OK and OUT_EXPECTED mean the filesystem agreed; OUT_NOSPC and OUT_NOTSUP are
 * tolerated answers the caller must handle; OUT_FAIL has been reported; OUT_GONE: the
 * filesystem went away under -k.
 */
static int outcome(struct proc *p, enum op_kind k, int ret, int expect, const char *what)
{
	int err = errno;	/* of the call made just before, or in the arguments */

	if (ret >= 0 && !expect) {
		p->st->ok[k]++;
		return OUT_OK;
	}
	if (ret < 0 && err == expect) {
		p->st->experr[k]++;
		return OUT_EXPECTED;
	}
	if (ret < 0 && is_gone(err) && p->o->gone_ok) {
		p->st->gone = 1;
		return OUT_GONE;
	}
	if (ret < 0 && err == ENOSPC && p->o->allow_enospc) {
		p->st->enospc[k]++;
		return OUT_NOSPC;
	}
	if (ret < 0 && (err == ENOTSUP || err == EOPNOTSUPP) &&
	    (k == OP_SETXATTR || k == OP_RMXATTR)) {
		p->st->notsup[k]++;
		p->xattr_off = 1;
		return OUT_NOTSUP;
	}
	if (ret >= 0)
		fail(p, "%s succeeded, expected %s", what, strerror(expect));
	else if (expect)
		fail(p, "%s: %s, expected %s", what, strerror(err), strerror(expect));
	else
		fail(p, "%s: %s", what, strerror(err));
	return OUT_FAIL;
}

/* a later step of an operation (close, fstat...) failed: gone or a failure */
static int step_failed(struct proc *p, int err, const char *what, const char *path)
{
	if (is_gone(err) && p->o->gone_ok) {
		p->st->gone = 1;
		return OUT_GONE;
	}
	return fail(p, "%s %s: %s", what, path, strerror(err));
}

static int depth_of(const struct dent *d)
{
	int n = 0;

	for (; d->parent; d = d->parent)
		n++;
	return n;
}

/* How far below d its subtree reaches (0 for a leaf). */
static int height_of(const struct proc *p, const struct dent *d)
{
	int h = 0, base = depth_of(d);

	if (!S_ISDIR(d->obj->type) || !d->obj->nchildren)
		return 0;
	for (size_t i = 0; i < p->ndents; i++)
		if (dent_is_ancestor(d, p->dents[i]->parent)) {
			int x = depth_of(p->dents[i]) - base;
			if (x > h)
				h = x;
		}
	return h;
}

/* A random live dent whose type is in mask (a bit per S_IF* >> 12), or NULL. */
#define T(x) (1u << ((x) >> 12))
#define T_ANY 0xffffu
static struct dent *pick(struct proc *p, unsigned mask)
{
	if (!p->ndents)
		return NULL;
	for (int tries = 0; tries < 40; tries++) {
		struct dent *d = p->dents[rng_below(p, p->ndents)];
		if (mask & T(d->obj->type))
			return d;
	}
	return NULL;
}

static struct dent *pick_dir(struct proc *p)
{
	struct dent *d;

	if (rng_below(p, 4) == 0 || !(d = pick(p, T(S_IFDIR))) || depth_of(d) >= MAXDEPTH)
		return &p->root;
	return d;
}

/* A random existing child of dir, or NULL. */
static struct dent *pick_child(struct proc *p, struct dent *dir)
{
	size_t n = (size_t)dir->obj->nchildren, want, seen = 0;

	if (!n)
		return NULL;
	want = rng_below(p, n);
	for (size_t i = 0; i < p->ndents; i++)
		if (p->dents[i]->parent == dir && seen++ == want)
			return p->dents[i];
	return NULL;
}

/* A name new in dir: a letter, a serial number, sometimes padded to up to 255 bytes
 * (never for directories, so paths stay short). */
static void new_name(struct proc *p, char *buf, char kind)
{
	int n = snprintf(buf, 256, "%c%llu", kind, (unsigned long long)p->nextname++);

	if (kind != 'd' && rng_below(p, 10) == 0) {
		int len = 40 + (int)rng_below(p, 216);
		for (; n < len; n++)
			buf[n] = (char)('a' + (n * 7 + len) % 26);
		buf[n] = 0;
	}
}

/* For creating ops: a new name in dir, or (sometimes) an existing one, which must give EEXIST.
 * Returns the errno expected. */
static int target_name(struct proc *p, struct dent *dir, char *name, char kind)
{
	struct dent *c;

	if (rng_below(p, 12) == 0 && (c = pick_child(p, dir))) {
		snprintf(name, 256, "%s", c->name);
		return EEXIST;
	}
	new_name(p, name, kind);
	return 0;
}

static void join(const struct dent *dir, const char *name, char *path, size_t size)
{
	size_t n = dent_path(dir, path, size);

	if (!dir->parent)
		snprintf(path, size, "%s", name);
	else
		snprintf(path + n, size - n, "/%s", name);
}

/* After an ENOSPC from a namespace change, the name must not exist. */
static int check_absent(struct proc *p, const char *path, const char *what)
{
	struct stat st;

	if (!fstatat(p->rootfd, path, &st, AT_SYMLINK_NOFOLLOW))
		return fail(p, "%s gave ENOSPC but %s exists", what, path);
	if (errno != ENOENT)
		return step_failed(p, errno, "stat after ENOSPC", path);
	return 0;
}

/* Record a newly created object's inode number and owner from the filesystem. */
static int adopt(struct proc *p, struct dent *d, const char *path)
{
	struct stat st;

	if (fstatat(p->rootfd, path, &st, AT_SYMLINK_NOFOLLOW))
		return step_failed(p, errno, "stat new", path);
	d->obj->ino = (uint64_t)st.st_ino;
	d->obj->uid = geteuid();
	d->obj->gid = getegid();
	return check_stat(p, d, "after create");
}

/* Byte ranges for data operations: mostly in the first MiB, sometimes far out (sparse). */
static void pick_range(struct proc *p, uint64_t size, uint64_t *off, size_t *len, size_t maxlen)
{
	uint64_t max = p->o->max_size, o;
	size_t l;

	switch (rng_below(p, 10)) {
	case 0:		/* far out, sparse */
		o = rng_below(p, max);
		l = 1 + rng_below(p, 8192);
		break;
	case 1: case 2:	/* block aligned */
		o = rng_below(p, (size + 65536) / PAGE + 1) * PAGE;
		l = (1 + rng_below(p, 64)) * PAGE;
		break;
	default:
		o = rng_below(p, size + 65536 < (1u << 20) ? size + 65536 : (1u << 20));
		l = 1 + rng_below(p, rng_below(p, 4) ? 16384 : 262144);
	}
	if (l > maxlen)
		l = maxlen;
	if (o > max)
		o = max;
	if (o + l > max)
		l = (size_t)(max - o);
	*off = o;
	*len = l;
}

static int file_open(struct proc *p, struct dent *d, int flags, char *path, size_t size)
{
	int fd;

	dent_path(d, path, size);
	fd = openat(p->rootfd, path, flags);
	if (fd < 0)
		return step_failed(p, errno, "open", path);
	if (S_ISREG(d->obj->type))
		p->touched = d->obj;
	return fd;
}

static int file_close(struct proc *p, int fd, const char *path)
{
	if (close(fd))
		return step_failed(p, errno, "close", path);
	return 0;
}

/* The end of an operation on an open file: r (a failure) or the close's outcome. */
static int finish(struct proc *p, int fd, const char *path, int r)
{
	if (r) {
		close(fd);
		return r;
	}
	return file_close(p, fd, path);
}

/* ENOSPC in the middle of a content change: believe the size the filesystem reports and
 * forget what [start, end) holds. */
static int content_unknown(struct proc *p, struct obj *ob, int fd, const char *path,
			   uint64_t start, uint64_t end)
{
	struct stat st;

	if (fstat(fd, &st))
		return step_failed(p, errno, "fstat", path);
	if ((uint64_t)st.st_size < ob->size)
		obj_truncate(ob, (uint64_t)st.st_size);
	ob->size = (uint64_t)st.st_size;
	if (end > ob->size)
		end = ob->size;
	if (start < end)
		seg_write(ob, start, end, SEG_UNKNOWN);
	return 0;
}

/*
 * Write len bytes of a new pattern at off (append: at the end, which must be off) through fd
 * and record them in the model.  A short count is an answer only under -S (ENOSPC part way):
 * what was written is known, the rest of the range is not.  0, or OUT_FAIL / OUT_GONE.
 */
static int model_pwrite(struct proc *p, struct obj *ob, int fd, const char *path, uint64_t off,
			size_t len, int append)
{
	uint64_t tag = p->nexttag++;
	ssize_t n;
	int r;

	pattern_fill(p->o->seed, tag, off, p->buf, len);
	n = append ? write(fd, p->buf, len) : pwrite(fd, p->buf, len, (off_t)off);
	r = outcome(p, append ? OP_APPEND : OP_WRITE, n < 0 ? -1 : 0, 0, "write");
	if (r == OUT_NOSPC)
		return content_unknown(p, ob, fd, path, off, off + len);
	if (r != OUT_OK)
		return r;
	obj_write(ob, off, (uint64_t)n, tag);
	p->st->bytes_written += (uint64_t)n;
	if ((size_t)n == len)
		return 0;
	if (!p->o->allow_enospc)
		return fail(p, "write %s at %llu: %zd of %zu bytes", path, (unsigned long long)off,
			    n, len);
	p->st->enospc[append ? OP_APPEND : OP_WRITE]++;
	return content_unknown(p, ob, fd, path, off + (uint64_t)n, off + len);
}

/* ------------------------------------------------------------------------------------------ */

static int op_creat(struct proc *p)
{
	struct dent *dir = pick_dir(p), *d;
	char name[256], path[4096];
	static const mode_t perms[] = { 0644, 0600, 0755, 0640, 0444, 0666 };
	mode_t perm = perms[rng_below(p, 6)];
	int expect = target_name(p, dir, name, 'f'), fd, r;

	join(dir, name, path, sizeof(path));
	note_op(p, "creat %s 0%o%s", path, perm, expect ? " (exists)" : "");
	fd = openat(p->rootfd, path, O_CREAT | O_EXCL | O_RDWR, perm);
	r = outcome(p, OP_CREAT, fd, expect, "creat");
	if (r == OUT_NOSPC)
		return check_absent(p, path, "creat");
	if (r != OUT_OK)
		return r < 0 ? r : 0;
	d = dent_add(p, dir, name, obj_new(S_IFREG, perm));
	if ((r = adopt(p, d, path))) {
		close(fd);
		return r;
	}
	if (rng_below(p, 2))	/* some first content through the creating descriptor */
		r = model_pwrite(p, d->obj, fd, path, 0, 1 + rng_below(p, 16384), 0);
	return finish(p, fd, path, r);
}

static int op_mkdir(struct proc *p)
{
	struct dent *dir = pick_dir(p), *d;
	char name[256], path[4096];
	mode_t perm = rng_below(p, 3) ? 0755 : 0700;
	int expect = target_name(p, dir, name, 'd'), r;

	join(dir, name, path, sizeof(path));
	note_op(p, "mkdir %s%s", path, expect ? " (exists)" : "");
	r = outcome(p, OP_MKDIR, mkdirat(p->rootfd, path, perm), expect, "mkdir");
	if (r == OUT_NOSPC)
		return check_absent(p, path, "mkdir");
	if (r != OUT_OK)
		return r < 0 ? r : 0;
	d = dent_add(p, dir, name, obj_new(S_IFDIR, perm));
	if ((r = adopt(p, d, path)))
		return r;
	return check_stat(p, dir, "parent after mkdir");
}

static int op_symlink(struct proc *p)
{
	struct dent *dir = pick_dir(p), *d;
	char name[256], path[4096], target[2048];
	int expect = target_name(p, dir, name, 's'), r;
	size_t tlen = rng_below(p, 4) ? 1 + rng_below(p, 60) : 1 + rng_below(p, sizeof(target) - 1);

	for (size_t i = 0; i < tlen; i++)
		target[i] = (char)(i % 9 == 8 ? '/' : 'a' + (int)rng_below(p, 26));
	target[tlen] = 0;
	join(dir, name, path, sizeof(path));
	note_op(p, "symlink %s (%zu bytes)%s", path, tlen, expect ? " (exists)" : "");
	r = outcome(p, OP_SYMLINK, symlinkat(target, p->rootfd, path), expect, "symlink");
	if (r == OUT_NOSPC)
		return check_absent(p, path, "symlink");
	if (r != OUT_OK)
		return r < 0 ? r : 0;
	d = dent_add(p, dir, name, obj_new(S_IFLNK, 0777));
	d->obj->target = strdup(target);
	if (!d->obj->target)
		return fail(p, "out of memory");
	return adopt(p, d, path);
}

static int op_mknod(struct proc *p)
{
	struct dent *dir = pick_dir(p), *d;
	char name[256], path[4096];
	int expect = target_name(p, dir, name, 'n'), r;
	unsigned choice = (unsigned)rng_below(p, geteuid() == 0 ? 4 : 2);
	static const mode_t types[] = { S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK };
	mode_t type = types[choice];
	dev_t rdev = choice >= 2 ? makedev(1 + rng_below(p, 250), rng_below(p, 256)) : 0;

	join(dir, name, path, sizeof(path));
	note_op(p, "mknod %s type 0%o%s", path, type, expect ? " (exists)" : "");
	r = outcome(p, OP_MKNOD, mknodat(p->rootfd, path, type | 0640, rdev), expect,
		    "mknod");
	if (r == OUT_NOSPC)
		return check_absent(p, path, "mknod");
	if (r != OUT_OK)
		return r < 0 ? r : 0;
	d = dent_add(p, dir, name, obj_new(type, 0640));
	d->obj->rdev = rdev;
	return adopt(p, d, path);
}

static int op_link(struct proc *p)
{
	struct dent *src = pick(p, T_ANY & ~T(S_IFDIR)), *dir = pick_dir(p), *d;
	char name[256], path[4096], spath[4096];
	int expect, r;

	if (rng_below(p, 20) == 0)
		src = pick(p, T(S_IFDIR));
	if (!src)
		return 0;
	expect = target_name(p, dir, name, 'l');
	if (!expect && S_ISDIR(src->obj->type))
		expect = EPERM;
	dent_path(src, spath, sizeof(spath));
	join(dir, name, path, sizeof(path));
	note_op(p, "link %s %s", spath, path);
	r = outcome(p, OP_LINK, linkat(p->rootfd, spath, p->rootfd, path, 0), expect,
		    "link");
	if (r == OUT_NOSPC)
		return check_absent(p, path, "link");
	if (r != OUT_OK)
		return r < 0 ? r : 0;
	d = dent_add(p, dir, name, src->obj);
	return check_stat(p, d, "after link");
}

static int op_unlink(struct proc *p)
{
	struct dent *d = pick(p, T_ANY);
	char path[4096];
	int expect, r;

	if (!d)
		return 0;
	expect = S_ISDIR(d->obj->type) ? EISDIR : 0;
	dent_path(d, path, sizeof(path));
	note_op(p, "unlink %s", path);
	if (!expect)
		synclog_dirty(p, d);
	r = outcome(p, OP_UNLINK, unlinkat(p->rootfd, path, 0), expect, "unlink");
	if (r == OUT_NOSPC)
		return check_stat(p, d, "after unlink ENOSPC");
	if (r != OUT_OK)
		return r < 0 ? r : 0;
	struct obj *ob = d->obj;
	struct dent *other = NULL;
	ob->nlink++;		/* hold it to look for another name */
	dent_del(p, d);
	for (size_t i = 0; i < p->ndents && !other; i++)
		if (p->dents[i]->obj == ob)
			other = p->dents[i];
	ob->nlink--;
	obj_put(ob);
	return other ? check_stat(p, other, "other name after unlink") : 0;
}

static int op_rmdir(struct proc *p)
{
	struct dent *d = pick(p, rng_below(p, 20) ? T(S_IFDIR) : T_ANY);
	char path[4096];
	int expect, r;

	if (!d)
		return 0;
	expect = !S_ISDIR(d->obj->type) ? ENOTDIR : d->obj->nchildren ? ENOTEMPTY : 0;
	dent_path(d, path, sizeof(path));
	note_op(p, "rmdir %s", path);
	if (!expect)
		synclog_dirty(p, d);
	r = outcome(p, OP_RMDIR, unlinkat(p->rootfd, path, AT_REMOVEDIR), expect,
		    "rmdir");
	if (r == OUT_NOSPC)
		return check_stat(p, d, "after rmdir ENOSPC");
	if (r != OUT_OK)
		return r < 0 ? r : 0;
	struct dent *parent = d->parent;
	dent_del(p, d);
	return check_stat(p, parent, "parent after rmdir");
}

/*
 * rename and exchange.  What Linux answers, in the order it checks (do_renameat2, then
 * vfs_rename, then the filesystem): ENOENT for an exchange with a missing target, EEXIST for
 * NOREPLACE onto an existing one; EINVAL when the source is an ancestor of the target's
 * directory; when the target is an ancestor of the source, ENOTEMPTY (EINVAL for an
 * exchange); success with no change when both names are the same object; then for a plain
 * rename ENOTDIR (directory onto non-directory), EISDIR (the reverse), ENOTEMPTY (onto a
 * non-empty directory).
 */
static int rename_expect(struct dent *src, struct dent *dstdir, struct dent *dst,
			 unsigned flags)
{
	if ((flags & RENAME_EXCHANGE) && !dst)
		return ENOENT;
	if ((flags & RENAME_NOREPLACE) && dst)
		return EEXIST;
	if (dent_is_ancestor(src, dstdir))
		return EINVAL;
	if (dst && dent_is_ancestor(dst, src->parent))
		return (flags & RENAME_EXCHANGE) ? EINVAL : ENOTEMPTY;
	if (!dst || dst->obj == src->obj || (flags & RENAME_EXCHANGE))
		return 0;
	if (S_ISDIR(src->obj->type) && !S_ISDIR(dst->obj->type))
		return ENOTDIR;
	if (!S_ISDIR(src->obj->type) && S_ISDIR(dst->obj->type))
		return EISDIR;
	if (S_ISDIR(dst->obj->type) && dst->obj->nchildren)
		return ENOTEMPTY;
	return 0;
}

static int do_rename(struct proc *p, enum op_kind k)
{
	struct dent *src = pick(p, T_ANY), *dstdir = pick_dir(p), *dst = NULL;
	char name[256], spath[4096], dpath[4096];
	unsigned flags = 0;
	int expect, r;

	if (!src)
		return 0;
	if (k == OP_EXCHANGE) {
		flags = RENAME_EXCHANGE;
		dst = rng_below(p, 10) ? pick_child(p, dstdir) : NULL;
	} else {
		if (rng_below(p, 2))
			dst = pick_child(p, dstdir);
		if (rng_below(p, 6) == 0)
			flags = RENAME_NOREPLACE;
	}
	if (dst)
		snprintf(name, sizeof(name), "%s", dst->name);
	else
		new_name(p, name, S_ISDIR(src->obj->type) ? 'd' : 'r');
	/* keep trees shallow: a directory moves only where its subtree stays under MAXDEPTH
	 * (both ways for an exchange) */
	if (S_ISDIR(src->obj->type) && depth_of(dstdir) + 1 + height_of(p, src) > MAXDEPTH)
		return 0;
	if (dst && k == OP_EXCHANGE && S_ISDIR(dst->obj->type) &&
	    depth_of(src->parent) + 1 + height_of(p, dst) > MAXDEPTH)
		return 0;
	expect = rename_expect(src, dstdir, dst, flags);
	dent_path(src, spath, sizeof(spath));
	join(dstdir, name, dpath, sizeof(dpath));
	note_op(p, "%s %s %s%s", op_names[k], spath, dpath,
		flags == RENAME_NOREPLACE ? " NOREPLACE" : "");
	if (!expect) {
		synclog_dirty(p, src);
		if (dst)
			synclog_dirty(p, dst);
	}
	r = outcome(p, k, renameat2(p->rootfd, spath, p->rootfd, dpath, flags), expect,
		    op_names[k]);
	if (r == OUT_NOSPC) {
		if ((r = check_stat(p, src, "source after rename ENOSPC")))
			return r;
		return dst ? check_stat(p, dst, "target after rename ENOSPC")
			   : check_absent(p, dpath, "rename");
	}
	if (r != OUT_OK)
		return r < 0 ? r : 0;
	if (dst == src || (dst && dst->obj == src->obj && k != OP_EXCHANGE))
		return check_stat(p, src, "after a rename onto the same file");
	struct dent *oldparent = src->parent;
	if (k == OP_EXCHANGE) {
		struct dent *sp = src->parent;
		char *sn = src->name;
		src->name = dst->name;
		dst->name = sn;
		/* dent_move keeps the names it is given; swap the parents with the counts */
		dent_move(src, dst->parent, src->name);
		dent_move(dst, sp, dst->name);
		if ((r = check_stat(p, dst, "after exchange")))
			return r;
	} else {
		if (dst)
			dent_del(p, dst);
		dent_move(src, dstdir, name);
	}
	if ((r = check_stat(p, src, "after rename")))
		return r;
	return check_stat(p, oldparent, "old parent after rename");
}

/* ------------------------------------------------------------------------------------------ */

static int op_write(struct proc *p, int append)
{
	struct dent *d = pick(p, T(S_IFREG));
	struct obj *ob;
	char path[4096];
	uint64_t off;
	size_t len;
	int fd, r;

	if (!d)
		return op_creat(p);
	ob = d->obj;
	pick_range(p, ob->size, &off, &len, BUFSZ);
	if (append) {
		off = ob->size;
		if (off >= p->o->max_size)
			return 0;
		if (off + len > p->o->max_size)
			len = (size_t)(p->o->max_size - off);
	}
	if (!len)
		return 0;
	fd = file_open(p, d, append ? O_WRONLY | O_APPEND : rng_below(p, 2) ? O_WRONLY : O_RDWR,
		       path, sizeof(path));
	if (fd < 0)
		return fd;
	note_op(p, "%s %s off=%llu len=%zu", append ? "append" : "write", path,
		(unsigned long long)off, len);
	synclog_dirty_obj(p, ob);
	r = model_pwrite(p, ob, fd, path, off, len, append);
	if (!r && rng_below(p, 5) == 0)	/* the size, at once */
		r = check_stat(p, d, "after write");
	return finish(p, fd, path, r);
}

static int op_read(struct proc *p)
{
	struct dent *d = pick(p, T(S_IFREG));
	struct obj *ob;
	char path[4096];
	uint64_t off;
	size_t len, want;
	ssize_t n;
	int fd, r = 0;

	if (!d)
		return 0;
	ob = d->obj;
	fd = file_open(p, d, O_RDONLY, path, sizeof(path));
	if (fd < 0)
		return fd;
	if (rng_below(p, 10) == 0) {
		note_op(p, "read %s whole (%llu bytes)", path, (unsigned long long)ob->size);
		r = check_content(p, d, fd);
		if (!r)
			p->st->ok[OP_READ]++;
		close(fd);
		return r;
	}
	pick_range(p, ob->size, &off, &len, BUFSZ);
	note_op(p, "read %s off=%llu len=%zu", path, (unsigned long long)off, len);
	if (rng_below(p, 2))	/* half the reads reach the daemon, not the page cache */
		posix_fadvise(fd, (off_t)off, (off_t)len, POSIX_FADV_DONTNEED);
	n = pread(fd, p->buf, len, (off_t)off);
	want = off >= ob->size ? 0 : (size_t)(ob->size - off < len ? ob->size - off : len);
	r = outcome(p, OP_READ, n < 0 ? -1 : 0, 0, "read");
	if (r == OUT_OK) {
		r = 0;
		if ((size_t)n != want) {
			r = fail(p, "read %s at %llu: %zd bytes, expected %zu (size %llu)", path,
				 (unsigned long long)off, n, want, (unsigned long long)ob->size);
		} else {
			long bad = model_compare(p, ob, off, p->buf, want);
			if (bad >= 0) {
				model_expect(p, ob, off + (uint64_t)bad, p->buf2, 1);
				r = fail(p, "read %s: byte %llu is 0x%02x, expected 0x%02x", path,
					 (unsigned long long)(off + (uint64_t)bad), p->buf[bad],
					 p->buf2[0]);
			}
			p->st->reads_verified++;
			p->st->bytes_verified += want;
		}
	}
	return finish(p, fd, path, r);
}

/* A fault on a mapping: with -k and the filesystem gone, the end of the run; else a failure
 * (the mapping never reaches past the size the model knows). */
static int sigbus_rootfd = -1;
static struct pstat *sigbus_st;
static void on_sigbus(int sig)
{
	static const char msg[] = "mendfs_stress: SIGBUS on a mapping\n";
	struct statfs sf;

	(void)sig;
	if (sigbus_st && fstatfs(sigbus_rootfd, &sf) && is_gone(errno)) {
		sigbus_st->gone = 1;
		_exit(0);
	}
	if (write(2, msg, sizeof(msg) - 1) < 0)
		_exit(3);
	_exit(3);
}

static int op_mmap(struct proc *p, int wr)
{
	struct dent *d = pick(p, T(S_IFREG));
	struct obj *ob;
	char path[4096];
	uint64_t a, b, moff;
	size_t mlen;
	unsigned char *m;
	int fd, r = 0;

	if (!d || !d->obj->size)
		return 0;
	ob = d->obj;
	a = rng_below(p, ob->size);
	b = a + 1 + rng_below(p, ob->size - a < 262144 ? ob->size - a : 262144);
	moff = a & ~(uint64_t)(PAGE - 1);
	mlen = (size_t)(b - moff);
	sigbus_rootfd = p->rootfd;
	sigbus_st = p->o->gone_ok ? p->st : NULL;
	signal(SIGBUS, on_sigbus);
	fd = file_open(p, d, wr ? O_RDWR : O_RDONLY, path, sizeof(path));
	if (fd < 0)
		return fd;
	note_op(p, "mmap%s %s [%llu, %llu)", wr ? "w" : "r", path, (unsigned long long)a,
		(unsigned long long)b);
	m = mmap(NULL, mlen, wr ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, (off_t)moff);
	r = outcome(p, wr ? OP_MMAPW : OP_MMAPR, m == MAP_FAILED ? -1 : 0, 0, "mmap");
	if (r != OUT_OK) {
		close(fd);
		return r < 0 ? r : 0;
	}
	if (!wr) {
		long bad = model_compare(p, ob, a, m + (a - moff), (size_t)(b - a));
		if (bad >= 0) {
			model_expect(p, ob, a + (uint64_t)bad, p->buf2, 1);
			r = fail(p, "mmap read %s: byte %llu is 0x%02x, expected 0x%02x", path,
				 (unsigned long long)(a + (uint64_t)bad), m[a - moff + (uint64_t)bad],
				 p->buf2[0]);
		}
		p->st->bytes_verified += b - a;
	} else {
		uint64_t tag = p->nexttag++;
		synclog_dirty_obj(p, ob);
		pattern_fill(p->o->seed, tag, a, m + (a - moff), (size_t)(b - a));
		if (p->o->allow_enospc || rng_below(p, 2)) {
			if (msync(m, mlen, MS_SYNC)) {
				int err = errno;
				if (err == ENOSPC && p->o->allow_enospc) {
					p->st->enospc[OP_MMAPW]++;
					r = content_unknown(p, ob, fd, path, a, b);
					tag = 0;
				} else {
					r = step_failed(p, err, "msync", path);
				}
			}
		}
		if (!r && tag) {
			seg_write(ob, a, b, tag);
			p->st->bytes_written += b - a;
		}
	}
	munmap(m, mlen);
	return finish(p, fd, path, r);
}

static int op_truncate(struct proc *p)
{
	struct dent *d = pick(p, T(S_IFREG));
	struct obj *ob;
	char path[4096];
	uint64_t size;
	int fd, r, viaopen = 0;

	if (!d)
		return 0;
	ob = d->obj;
	switch (rng_below(p, 5)) {
	case 0: case 1:
		size = rng_below(p, ob->size + 1);
		break;
	case 2: case 3:
		size = ob->size + rng_below(p, 1u << 20);
		break;
	default:
		size = rng_below(p, 2) ? 0 : rng_below(p, 64) * PAGE;
		viaopen = size == 0;
	}
	if (size > p->o->max_size)
		size = p->o->max_size;
	dent_path(d, path, sizeof(path));
	note_op(p, "truncate %s %llu -> %llu%s", path, (unsigned long long)ob->size,
		(unsigned long long)size, viaopen ? " (O_TRUNC)" : "");
	synclog_dirty_obj(p, ob);
	p->touched = ob;
	fd = openat(p->rootfd, path, O_WRONLY | (viaopen ? O_TRUNC : 0));
	if (fd < 0)
		r = outcome(p, OP_TRUNCATE, -1, 0, "open for truncate");
	else
		r = outcome(p, OP_TRUNCATE, viaopen ? 0 : ftruncate(fd, (off_t)size), 0,
			    "truncate");
	if (fd < 0)
		return r == OUT_NOSPC ? check_stat(p, d, "after open O_TRUNC ENOSPC") : r;
	if (r == OUT_NOSPC) {
		r = content_unknown(p, ob, fd, path, size < ob->size ? size : ob->size,
				    size < ob->size ? ob->size : size);
	} else if (r == OUT_OK) {
		obj_truncate(ob, size);
		r = rng_below(p, 3) ? 0 : check_stat(p, d, "after truncate");
	} else {
		r = r < 0 ? r : 0;
	}
	return finish(p, fd, path, r);
}

/* fallocate: k is OP_FALLOC (allocate, maybe keeping the size), OP_PUNCH or OP_ZERO. */
static int op_falloc(struct proc *p, enum op_kind k)
{
	struct dent *d = pick(p, T(S_IFREG));
	struct obj *ob;
	char path[4096];
	uint64_t off, end;
	size_t len;
	int fd, r, mode, keep = (int)rng_below(p, 2);

	if (!d)
		return 0;
	ob = d->obj;
	pick_range(p, ob->size, &off, &len, 4u << 20);
	if (!len)
		return 0;
	end = off + len;
	mode = k == OP_PUNCH ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
	     : k == OP_ZERO ? FALLOC_FL_ZERO_RANGE | (keep ? FALLOC_FL_KEEP_SIZE : 0)
	     : keep ? FALLOC_FL_KEEP_SIZE : 0;
	fd = file_open(p, d, O_RDWR, path, sizeof(path));
	if (fd < 0)
		return fd;
	note_op(p, "%s %s mode 0x%x off=%llu len=%zu", op_names[k], path, mode,
		(unsigned long long)off, len);
	synclog_dirty_obj(p, ob);
	r = outcome(p, k, fallocate(fd, mode, (off_t)off, (off_t)len), 0, "fallocate");
	if (r == OUT_NOSPC) {
		r = content_unknown(p, ob, fd, path, k == OP_FALLOC ? 0 : off,
				    k == OP_FALLOC ? 0 : end);
	} else if (r == OUT_OK) {
		if (k != OP_FALLOC)
			seg_write(ob, off, end < ob->size ? end : ob->size, 0);
		if (!(mode & FALLOC_FL_KEEP_SIZE) && end > ob->size)
			ob->size = end;
		r = rng_below(p, 3) ? 0 : check_stat(p, d, "after fallocate");
	} else {
		r = r < 0 ? r : 0;
	}
	return finish(p, fd, path, r);
}

/* ------------------------------------------------------------------------------------------ */

static int xattr_path(struct proc *p, struct dent *d, char *full, size_t size)
{
	char path[4096];

	dent_path(d, path, sizeof(path));
	return snprintf(full, size, "/proc/self/fd/%d/%s", p->rootfd, path);
}

static int xattr_find(const struct obj *ob, const char *name)
{
	for (int i = 0; i < ob->nxattrs; i++)
		if (!strcmp(ob->xattrs[i].name, name))
			return i;
	return -1;
}

static void xattr_pick_name(struct proc *p, char *name, size_t size)
{
	if (geteuid() == 0 && rng_below(p, 4) == 0)
		snprintf(name, size, "trusted.t%u", (unsigned)rng_below(p, 3));
	else
		snprintf(name, size, "user.a%u", (unsigned)rng_below(p, 6));
}

static int op_setxattr(struct proc *p)
{
	struct dent *d = pick(p, T(S_IFREG) | T(S_IFDIR));
	char full[4200], name[40];
	uint32_t len;
	int flags, expect = 0, i, r;

	if (!d || p->xattr_off)
		return 0;
	xattr_pick_name(p, name, sizeof(name));
	i = xattr_find(d->obj, name);
	if (i < 0 && d->obj->nxattrs == MAXXATTRS)
		return 0;
	len = rng_below(p, 10) < 6 ? (uint32_t)rng_below(p, 100)
	    : rng_below(p, 4) ? (uint32_t)rng_below(p, 2000) : (uint32_t)rng_below(p, 16000);
	flags = rng_below(p, 3) == 0 ? XATTR_CREATE : rng_below(p, 3) == 0 ? XATTR_REPLACE : 0;
	if (flags == XATTR_CREATE && i >= 0)
		expect = EEXIST;
	if (flags == XATTR_REPLACE && i < 0)
		expect = ENODATA;
	uint64_t tag = p->nexttag++;
	pattern_fill(p->o->seed, tag, 0, p->buf, len);
	xattr_path(p, d, full, sizeof(full));
	note_op(p, "setxattr %s %s len=%u flags=%d", full, name, len, flags);
	r = outcome(p, OP_SETXATTR, lsetxattr(full, name, p->buf, len, flags), expect,
		    "setxattr");
	if (r == OUT_NOSPC || r == OUT_NOTSUP)
		return 0;
	if (r != OUT_OK)
		return r < 0 ? r : 0;
	if (i < 0)
		i = d->obj->nxattrs++;
	snprintf(d->obj->xattrs[i].name, sizeof(d->obj->xattrs[i].name), "%s", name);
	d->obj->xattrs[i].tag = tag;
	d->obj->xattrs[i].len = len;
	return rng_below(p, 4) ? 0 : check_xattrs(p, d);
}

static int op_rmxattr(struct proc *p)
{
	struct dent *d = pick(p, T(S_IFREG) | T(S_IFDIR));
	char full[4200], name[40];
	int i, r;

	if (!d || p->xattr_off)
		return 0;
	if (d->obj->nxattrs && rng_below(p, 4))
		snprintf(name, sizeof(name), "%s",
			 d->obj->xattrs[rng_below(p, (uint64_t)d->obj->nxattrs)].name);
	else
		xattr_pick_name(p, name, sizeof(name));
	i = xattr_find(d->obj, name);
	xattr_path(p, d, full, sizeof(full));
	note_op(p, "removexattr %s %s", full, name);
	r = outcome(p, OP_RMXATTR, lremovexattr(full, name), i < 0 ? ENODATA : 0,
		    "removexattr");
	if (r != OUT_OK)
		return r < 0 ? r : 0;
	d->obj->xattrs[i] = d->obj->xattrs[--d->obj->nxattrs];
	return 0;
}

static int op_chmod(struct proc *p)
{
	struct dent *d = pick(p, T_ANY & ~T(S_IFLNK));
	char path[4096];
	mode_t perm;
	int r;

	if (!d)
		return 0;
	perm = (mode_t)rng_below(p, 01000);
	if (S_ISDIR(d->obj->type))
		perm |= 0700 | (rng_below(p, 4) ? 0 : 01000);
	dent_path(d, path, sizeof(path));
	note_op(p, "chmod %s 0%o", path, perm);
	r = outcome(p, OP_CHMOD, fchmodat(p->rootfd, path, perm, 0), 0, "chmod");
	if (r == OUT_NOSPC)
		return 0;
	if (r != OUT_OK)
		return r < 0 ? r : 0;
	d->obj->perm = perm;
	return check_stat(p, d, "after chmod");
}

static int op_chown(struct proc *p)
{
	static const unsigned ids[] = { 0, 1, 2, 1000, 65534 };
	struct dent *d = pick(p, T_ANY);
	char path[4096];
	uid_t uid;
	gid_t gid;
	int r;

	if (!d)
		return 0;
	uid = geteuid() == 0 ? ids[rng_below(p, 5)] : geteuid();
	gid = geteuid() == 0 ? ids[rng_below(p, 5)] : getegid();
	dent_path(d, path, sizeof(path));
	note_op(p, "chown %s %u:%u", path, uid, gid);
	r = outcome(p, OP_CHOWN, fchownat(p->rootfd, path, uid, gid, AT_SYMLINK_NOFOLLOW),
		    0, "chown");
	if (r == OUT_NOSPC)
		return 0;
	if (r != OUT_OK)
		return r < 0 ? r : 0;
	d->obj->uid = uid;
	d->obj->gid = gid;
	return check_stat(p, d, "after chown");
}

static int op_utimes(struct proc *p)
{
	struct dent *d = pick(p, T_ANY);
	char path[4096];
	struct timespec ts[2];
	struct stat st;
	int r;

	if (!d)
		return 0;
	for (int i = 0; i < 2; i++) {
		ts[i].tv_sec = (time_t)rng_below(p, 1ull << 31);
		ts[i].tv_nsec = (long)rng_below(p, 1000000000);
	}
	dent_path(d, path, sizeof(path));
	note_op(p, "utimes %s %lld.%09ld %lld.%09ld", path, (long long)ts[0].tv_sec,
		ts[0].tv_nsec, (long long)ts[1].tv_sec, ts[1].tv_nsec);
	r = outcome(p, OP_UTIMES, utimensat(p->rootfd, path, ts, AT_SYMLINK_NOFOLLOW), 0,
		    "utimensat");
	if (r != OUT_OK)
		return r < 0 ? r : 0;
	if (fstatat(p->rootfd, path, &st, AT_SYMLINK_NOFOLLOW))
		return step_failed(p, errno, "stat after utimes", path);
	if (st.st_atim.tv_sec != ts[0].tv_sec || st.st_atim.tv_nsec != ts[0].tv_nsec ||
	    st.st_mtim.tv_sec != ts[1].tv_sec || st.st_mtim.tv_nsec != ts[1].tv_nsec)
		return fail(p, "utimes %s: times read back as %lld.%09ld %lld.%09ld", path,
			    (long long)st.st_atim.tv_sec, st.st_atim.tv_nsec,
			    (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec);
	return 0;
}

static int op_fsync(struct proc *p, int data)
{
	struct dent *d = pick(p, rng_below(p, 5) ? T(S_IFREG) : T(S_IFDIR));
	char path[4096];
	int fd, r;

	if (!d)
		d = &p->root;
	fd = file_open(p, d, S_ISDIR(d->obj->type) ? O_RDONLY | O_DIRECTORY : O_RDONLY, path,
		       sizeof(path));
	if (fd < 0)
		return fd;
	note_op(p, "%s %s", data ? "fdatasync" : "fsync", path);
	r = outcome(p, data ? OP_FDATASYNC : OP_FSYNC, data ? fdatasync(fd) : fsync(fd),
		    0, "fsync");
	if (r == OUT_OK && S_ISREG(d->obj->type))
		synclog_synced(p, d);
	if (r < 0 || r == OUT_NOSPC) {
		close(fd);
		return r < 0 ? r : 0;
	}
	return file_close(p, fd, path);
}

/* Unlink a name of an open file and keep using the file through its descriptor: when that
 * was the last name, the inode lives on as an orphan until the close. */
static int op_orphan(struct proc *p)
{
	struct dent *d = pick(p, T(S_IFREG));
	struct obj *ob;
	struct stat st;
	char path[4096];
	uint64_t off;
	size_t len;
	int fd, r;

	if (!d)
		return 0;
	ob = d->obj;
	fd = file_open(p, d, O_RDWR, path, sizeof(path));
	if (fd < 0)
		return fd;
	note_op(p, "orphan %s (%d names)", path, ob->nlink);
	synclog_dirty_obj(p, ob);
	r = outcome(p, OP_ORPHAN, unlinkat(p->rootfd, path, 0), 0, "unlink open file");
	if (r != OUT_OK) {
		close(fd);
		return r < 0 ? r : r == OUT_NOSPC ? check_stat(p, d, "after unlink ENOSPC") : 0;
	}
	ob->nlink++;		/* the descriptor's hold */
	dent_del(p, d);
	pick_range(p, ob->size, &off, &len, 65536);
	r = len ? model_pwrite(p, ob, fd, path, off, len, 0) : 0;
	if (!r && fstat(fd, &st))
		r = step_failed(p, errno, "fstat unlinked", path);
	if (!r && ((int)st.st_nlink != ob->nlink - 1 || (uint64_t)st.st_size != ob->size))
		r = fail(p, "unlinked %s: %lu links, size %lld; expected %d, %llu", path,
			 (unsigned long)st.st_nlink, (long long)st.st_size, ob->nlink - 1,
			 (unsigned long long)ob->size);
	if (!r) {
		/* the whole content through the descriptor, as a temporary dent */
		struct dent tmp = { .name = path, .obj = ob, .parent = NULL };
		r = check_content(p, &tmp, fd);
	}
	ob->nlink--;
	obj_put(ob);
	p->touched = NULL;	/* it may be gone */
	return finish(p, fd, path, r);
}

int run_op(struct proc *p, enum op_kind k)
{
	struct dent *d;

	/* at the population limit, creating operations turn into removals */
	if (p->ndents >= p->o->max_entries &&
	    (k == OP_CREAT || k == OP_MKDIR || k == OP_SYMLINK || k == OP_MKNOD || k == OP_LINK))
		k = rng_below(p, 4) ? OP_UNLINK : OP_RMDIR;
	switch (k) {
	case OP_CREAT: return op_creat(p);
	case OP_MKDIR: return op_mkdir(p);
	case OP_WRITE: return op_write(p, 0);
	case OP_APPEND: return op_write(p, 1);
	case OP_READ: return op_read(p);
	case OP_MMAPR: return op_mmap(p, 0);
	case OP_MMAPW: return op_mmap(p, 1);
	case OP_TRUNCATE: return op_truncate(p);
	case OP_FALLOC: case OP_PUNCH: case OP_ZERO: return op_falloc(p, k);
	case OP_RENAME: case OP_EXCHANGE: return do_rename(p, k);
	case OP_LINK: return op_link(p);
	case OP_UNLINK: return op_unlink(p);
	case OP_RMDIR: return op_rmdir(p);
	case OP_SYMLINK: return op_symlink(p);
	case OP_MKNOD: return op_mknod(p);
	case OP_SETXATTR: return op_setxattr(p);
	case OP_RMXATTR: return op_rmxattr(p);
	case OP_CHMOD: return op_chmod(p);
	case OP_CHOWN: return op_chown(p);
	case OP_UTIMES: return op_utimes(p);
	case OP_FSYNC: return op_fsync(p, 0);
	case OP_FDATASYNC: return op_fsync(p, 1);
	case OP_READDIR:
		if (!(d = pick(p, T(S_IFDIR))) || !rng_below(p, 3))
			d = &p->root;
		note_op(p, "readdir %s", d->name);
		if (check_dir(p, d))
			return -1;
		p->st->ok[k]++;
		return 0;
	case OP_STAT:
		if (!(d = pick(p, T_ANY)))
			return 0;
		note_op(p, "stat %s", d->name);
		if (check_stat(p, d, "stat") || check_xattrs(p, d))
			return -1;
		p->st->ok[k]++;
		return 0;
	case OP_ORPHAN: return op_orphan(p);
	case NOPS: break;
	}
	return 0;
}
