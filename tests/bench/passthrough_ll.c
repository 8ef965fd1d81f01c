/*
 * passthrough_ll.c — the FUSE ceiling for the benchmarks: a minimal lowlevel libfuse 3
 * filesystem that mirrors a directory of the kernel filesystem underneath.  It does no
 * filesystem work of its own (no allocation, no journal, no metadata cache), so what it
 * costs is the FUSE transport: the request round trips, the copies and the threads.
 *
 *   passthrough_ll [-f] [-s] [-o source=DIR,timeout=SECS,writeback,...] MOUNTPOINT
 *
 * Nodes: every inode the kernel holds is an O_PATH descriptor in a table keyed by (device,
 * inode number); the nodeid is the node's address (the root is FUSE_ROOT_ID).  A node
 * lives while the kernel's lookup count is above zero.  Reads are answered with the file
 * descriptor (spliced when the kernel allows it), writes are copied straight into it.
 *
 * This is a benchmark tool, not a filesystem to use: no xattrs, no locks, no ioctls, no
 * hard links; permission checks are the kernel's (default_permissions).
 */
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

struct pnode {
	struct pnode *next;             /* hash chain */
	int fd;                         /* O_PATH */
	dev_t dev;
	ino_t ino;
	uint64_t nlookup;               /* under table lock */
};

#define NBUCKETS 65536u

struct pt {
	struct pnode root;
	pthread_mutex_t lock;
	struct pnode *hash[NBUCKETS];
	double timeout;
	int writeback;
};

struct pt_dir {
	DIR *dp;
	off_t off;
	struct dirent *entry;           /* read but not yet returned */
};

static struct pt *pt_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct pnode *node_of(fuse_req_t req, fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? &pt_of(req)->root : (struct pnode *)(uintptr_t)ino;
}

static unsigned bucket(dev_t dev, ino_t ino)
{
	return (unsigned)((ino * 0x9e3779b97f4a7c15ull) >> 40 ^ dev) % NBUCKETS;
}

static void proc_path(char *buf, size_t len, int fd)
{
	snprintf(buf, len, "/proc/self/fd/%d", fd);
}

/* Find or make the node of `name` in `parent` and fill the entry; counts one lookup. */
static int do_lookup(struct pt *p, struct pnode *parent, const char *name,
		     struct fuse_entry_param *e)
{
	struct pnode *n;
	unsigned h;
	int fd;

	memset(e, 0, sizeof(*e));
	fd = openat(parent->fd, name, O_PATH | O_NOFOLLOW);
	if (fd < 0)
		return errno;
	if (fstatat(fd, "", &e->attr, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0) {
		int err = errno;

		close(fd);
		return err;
	}
	h = bucket(e->attr.st_dev, e->attr.st_ino);
	pthread_mutex_lock(&p->lock);
	for (n = p->hash[h]; n; n = n->next)
		if (n->dev == e->attr.st_dev && n->ino == e->attr.st_ino)
			break;
	if (n) {
		n->nlookup++;
		pthread_mutex_unlock(&p->lock);
		close(fd);
	} else {
		n = calloc(1, sizeof(*n));
		if (!n) {
			pthread_mutex_unlock(&p->lock);
			close(fd);
			return ENOMEM;
		}
		n->fd = fd;
		n->dev = e->attr.st_dev;
		n->ino = e->attr.st_ino;
		n->nlookup = 1;
		n->next = p->hash[h];
		p->hash[h] = n;
		pthread_mutex_unlock(&p->lock);
	}
	e->ino = (fuse_ino_t)(uintptr_t)n;
	e->attr_timeout = p->timeout;
	e->entry_timeout = p->timeout;
	return 0;
}

static void forget_one(struct pt *p, fuse_ino_t ino, uint64_t nlookup)
{
	struct pnode *n = (struct pnode *)(uintptr_t)ino, **pp;

	if (ino == FUSE_ROOT_ID)
		return;
	pthread_mutex_lock(&p->lock);
	if (n->nlookup > nlookup) {
		n->nlookup -= nlookup;
		pthread_mutex_unlock(&p->lock);
		return;
	}
	for (pp = &p->hash[bucket(n->dev, n->ino)]; *pp; pp = &(*pp)->next)
		if (*pp == n) {
			*pp = n->next;
			break;
		}
	pthread_mutex_unlock(&p->lock);
	close(n->fd);
	free(n);
}

static void pt_init(void *userdata, struct fuse_conn_info *conn)
{
	struct pt *p = userdata;

	conn->want |= conn->capable & (FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE |
				       FUSE_CAP_SPLICE_READ | FUSE_CAP_PARALLEL_DIROPS);
	if (p->writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	else
		conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
}

static void pt_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct fuse_entry_param e;
	int err = do_lookup(pt_of(req), node_of(req, parent), name, &e);

	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_entry(req, &e);
}

static void pt_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	forget_one(pt_of(req), ino, nlookup);
	fuse_reply_none(req);
}

static void pt_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *f)
{
	for (size_t i = 0; i < count; i++)
		forget_one(pt_of(req), f[i].ino, f[i].nlookup);
	fuse_reply_none(req);
}

static void pt_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct stat st;

	if (fstatat(node_of(req, ino)->fd, "", &st, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_attr(req, &st, pt_of(req)->timeout);
}

static void pt_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	struct pnode *n = node_of(req, ino);
	char path[64];
	int r = 0;

	proc_path(path, sizeof(path), n->fd);
	if (to_set & FUSE_SET_ATTR_MODE)
		r = fi ? fchmod((int)fi->fh, attr->st_mode) : chmod(path, attr->st_mode);
	if (!r && (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
		uid_t u = (to_set & FUSE_SET_ATTR_UID) ? attr->st_uid : (uid_t)-1;
		gid_t g = (to_set & FUSE_SET_ATTR_GID) ? attr->st_gid : (gid_t)-1;

		r = fchownat(n->fd, "", u, g, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
	}
	if (!r && (to_set & FUSE_SET_ATTR_SIZE))
		r = fi ? ftruncate((int)fi->fh, attr->st_size) : truncate(path, attr->st_size);
	if (!r && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
		struct timespec tv[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_nsec = UTIME_OMIT } };

		if (to_set & FUSE_SET_ATTR_ATIME_NOW)
			tv[0].tv_nsec = UTIME_NOW;
		else if (to_set & FUSE_SET_ATTR_ATIME)
			tv[0] = attr->st_atim;
		if (to_set & FUSE_SET_ATTR_MTIME_NOW)
			tv[1].tv_nsec = UTIME_NOW;
		else if (to_set & FUSE_SET_ATTR_MTIME)
			tv[1] = attr->st_mtim;
		r = fi ? futimens((int)fi->fh, tv) : utimensat(AT_FDCWD, path, tv, 0);
	}
	if (r)
		fuse_reply_err(req, errno);
	else
		pt_getattr(req, ino, fi);
}

static void pt_readlink(fuse_req_t req, fuse_ino_t ino)
{
	char buf[PATH_MAX + 1];
	ssize_t len = readlinkat(node_of(req, ino)->fd, "", buf, sizeof(buf) - 1);

	if (len < 0)
		fuse_reply_err(req, errno);
	else {
		buf[len] = 0;
		fuse_reply_readlink(req, buf);
	}
}

/* mknod, mkdir and symlink: make the object, then answer with its entry. */
static void make_reply(fuse_req_t req, fuse_ino_t parent, const char *name, int r)
{
	struct fuse_entry_param e;
	int err = r < 0 ? errno : do_lookup(pt_of(req), node_of(req, parent), name, &e);

	if (err)
		fuse_reply_err(req, err);
	else
		fuse_reply_entry(req, &e);
}

static void pt_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		     dev_t rdev)
{
	make_reply(req, parent, name, mknodat(node_of(req, parent)->fd, name, mode, rdev));
}

static void pt_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	make_reply(req, parent, name, mkdirat(node_of(req, parent)->fd, name, mode));
}

static void pt_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	make_reply(req, parent, name, symlinkat(link, node_of(req, parent)->fd, name));
}

static void pt_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, unlinkat(node_of(req, parent)->fd, name, 0) < 0 ? errno : 0);
}

static void pt_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	fuse_reply_err(req, unlinkat(node_of(req, parent)->fd, name, AT_REMOVEDIR) < 0 ?
			    errno : 0);
}

static void pt_rename(fuse_req_t req, fuse_ino_t parent, const char *name,
		      fuse_ino_t newparent, const char *newname, unsigned int flags)
{
	int r = renameat2(node_of(req, parent)->fd, name, node_of(req, newparent)->fd,
			  newname, flags);

	fuse_reply_err(req, r < 0 ? errno : 0);
}

/* The open flags for the file underneath: with the writeback cache the kernel reads pages
 * of files opened write-only, and does O_APPEND itself.  O_DIRECT stays on the FUSE side
 * (the kernel sends every read and write of such a file to us) and is not passed on: the
 * file underneath is buffered, like the images of mendfs and fuse2fs, so that O_DIRECT
 * workloads compare the transport and not a disk read against a page cache hit. */
static int open_flags(struct pt *p, int flags)
{
	flags &= ~(O_NOFOLLOW | O_DIRECT);
	if (p->writeback) {
		if ((flags & O_ACCMODE) == O_WRONLY)
			flags = (flags & ~O_ACCMODE) | O_RDWR;
		flags &= ~O_APPEND;
	}
	return flags;
}

static void pt_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct pt *p = pt_of(req);
	struct fuse_entry_param e;
	int fd = openat(node_of(req, parent)->fd, name,
			open_flags(p, (int)fi->flags) | O_CREAT | O_NOFOLLOW, mode);
	int err;

	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	err = do_lookup(p, node_of(req, parent), name, &e);
	if (err) {
		close(fd);
		fuse_reply_err(req, err);
		return;
	}
	fi->fh = (uint64_t)fd;
	if (fuse_reply_create(req, &e, fi) != 0) {
		close(fd);
		forget_one(p, e.ino, 1);
	}
}

static void pt_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	char path[64];
	int fd;

	proc_path(path, sizeof(path), node_of(req, ino)->fd);
	fd = open(path, open_flags(pt_of(req), (int)fi->flags));
	if (fd < 0) {
		fuse_reply_err(req, errno);
		return;
	}
	fi->fh = (uint64_t)fd;
	if (fuse_reply_open(req, fi) != 0)
		close(fd);
}

static void pt_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	struct fuse_bufvec buf = FUSE_BUFVEC_INIT(size);

	buf.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	buf.buf[0].fd = (int)fi->fh;
	buf.buf[0].pos = off;
	fuse_reply_data(req, &buf, FUSE_BUF_SPLICE_MOVE);
}

static void pt_write_buf(fuse_req_t req, fuse_ino_t ino, struct fuse_bufvec *in, off_t off,
			 struct fuse_file_info *fi)
{
	struct fuse_bufvec out = FUSE_BUFVEC_INIT(fuse_buf_size(in));
	ssize_t r;

	out.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	out.buf[0].fd = (int)fi->fh;
	out.buf[0].pos = off;
	r = fuse_buf_copy(&out, in, 0);
	if (r < 0)
		fuse_reply_err(req, (int)-r);
	else
		fuse_reply_write(req, (size_t)r);
}

static void pt_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	/* close() of a duplicate: the file underneath sees the flush as its own close would */
	fuse_reply_err(req, close(dup((int)fi->fh)) < 0 ? errno : 0);
}

static void pt_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	close((int)fi->fh);
	fuse_reply_err(req, 0);
}

static void pt_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	int r = datasync ? fdatasync((int)fi->fh) : fsync((int)fi->fh);

	fuse_reply_err(req, r < 0 ? errno : 0);
}

static void pt_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pt_dir *dir = calloc(1, sizeof(*dir));
	int fd = openat(node_of(req, ino)->fd, ".", O_RDONLY | O_DIRECTORY);

	if (!dir || fd < 0 || !(dir->dp = fdopendir(fd))) {
		int err = dir ? errno : ENOMEM;

		if (fd >= 0)
			close(fd);
		free(dir);
		fuse_reply_err(req, err);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)dir;
	if (fuse_reply_open(req, fi) != 0) {
		closedir(dir->dp);
		free(dir);
	}
}

static void do_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi, int plus)
{
	struct pt_dir *dir = (struct pt_dir *)(uintptr_t)fi->fh;
	char *buf = malloc(size), *p = buf;
	size_t rem = size;
	int err = 0;

	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (off != dir->off) {
		seekdir(dir->dp, off);
		dir->entry = NULL;
		dir->off = off;
	}
	for (;;) {
		struct fuse_entry_param e;
		struct dirent *de = dir->entry;
		size_t len;

		if (!de) {
			errno = 0;
			de = readdir(dir->dp);
			if (!de) {
				err = errno;
				break;
			}
			dir->entry = de;
		}
		if (plus) {
			int dot = !strcmp(de->d_name, ".") || !strcmp(de->d_name, "..");

			memset(&e, 0, sizeof(e));
			if (dot) {
				e.attr.st_ino = de->d_ino;
				e.attr.st_mode = (mode_t)de->d_type << 12;
			} else if ((err = do_lookup(pt_of(req), node_of(req, ino), de->d_name,
						    &e)) != 0) {
				break;
			}
			len = fuse_add_direntry_plus(req, p, rem, de->d_name, &e, de->d_off);
			if (len > rem) {
				if (!dot)
					forget_one(pt_of(req), e.ino, 1);
				break;
			}
		} else {
			struct stat st = { .st_ino = de->d_ino, .st_mode = (mode_t)de->d_type << 12 };

			len = fuse_add_direntry(req, p, rem, de->d_name, &st, de->d_off);
			if (len > rem)
				break;
		}
		p += len;
		rem -= len;
		dir->entry = NULL;
		dir->off = de->d_off;
	}
	if (err && p == buf)
		fuse_reply_err(req, err);
	else
		fuse_reply_buf(req, buf, (size_t)(p - buf));
	free(buf);
}

static void pt_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, 0);
}

static void pt_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	do_readdir(req, ino, size, off, fi, 1);
}

static void pt_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct pt_dir *dir = (struct pt_dir *)(uintptr_t)fi->fh;

	closedir(dir->dp);
	free(dir);
	fuse_reply_err(req, 0);
}

static void pt_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync,
			struct fuse_file_info *fi)
{
	struct pt_dir *dir = (struct pt_dir *)(uintptr_t)fi->fh;

	fuse_reply_err(req, fsync(dirfd(dir->dp)) < 0 ? errno : 0);
}

static void pt_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct statvfs sv;

	if (fstatvfs(node_of(req, ino)->fd, &sv) < 0)
		fuse_reply_err(req, errno);
	else
		fuse_reply_statfs(req, &sv);
}

static const struct fuse_lowlevel_ops pt_ops = {
	.init = pt_init,
	.lookup = pt_lookup,
	.forget = pt_forget,
	.forget_multi = pt_forget_multi,
	.getattr = pt_getattr,
	.setattr = pt_setattr,
	.readlink = pt_readlink,
	.mknod = pt_mknod,
	.mkdir = pt_mkdir,
	.symlink = pt_symlink,
	.unlink = pt_unlink,
	.rmdir = pt_rmdir,
	.rename = pt_rename,
	.create = pt_create,
	.open = pt_open,
	.read = pt_read,
	.write_buf = pt_write_buf,
	.flush = pt_flush,
	.release = pt_release,
	.fsync = pt_fsync,
	.opendir = pt_opendir,
	.readdir = pt_readdir,
	.readdirplus = pt_readdirplus,
	.releasedir = pt_releasedir,
	.fsyncdir = pt_fsyncdir,
	.statfs = pt_statfs,
};

struct pt_opts {
	char *source;
	double timeout;
	int writeback;
};

static const struct fuse_opt pt_optspec[] = {
	{ "source=%s", offsetof(struct pt_opts, source), 0 },
	{ "timeout=%lf", offsetof(struct pt_opts, timeout), 0 },
	{ "writeback", offsetof(struct pt_opts, writeback), 1 },
	FUSE_OPT_END
};

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct pt_opts o = { .timeout = 86400.0 };
	struct fuse_cmdline_opts co;
	struct fuse_session *se = NULL;
	struct pt *p;
	int ret = 1;

	if (fuse_opt_parse(&args, &o, pt_optspec, NULL) == -1 ||
	    fuse_parse_cmdline(&args, &co) != 0)
		return 1;
	if (!co.mountpoint || !o.source) {
		fprintf(stderr, "usage: %s [-f] [-s] -o source=DIR[,timeout=SECS][,writeback] "
			"MOUNTPOINT\n", argv[0]);
		return 1;
	}
	p = calloc(1, sizeof(*p));
	if (!p)
		return 1;
	pthread_mutex_init(&p->lock, NULL);
	p->timeout = o.timeout;
	p->writeback = o.writeback;
	p->root.nlookup = 2;
	p->root.fd = open(o.source, O_PATH | O_DIRECTORY);
	if (p->root.fd < 0) {
		perror(o.source);
		goto out;
	}
	se = fuse_session_new(&args, &pt_ops, sizeof(pt_ops), p);
	if (!se || fuse_set_signal_handlers(se) != 0)
		goto out;
	if (fuse_session_mount(se, co.mountpoint) != 0)
		goto out_handlers;
	fuse_daemonize(co.foreground);
	if (co.singlethread) {
		ret = fuse_session_loop(se);
	} else {
		struct fuse_loop_config *cfg = fuse_loop_cfg_create();

		if (!cfg)
			goto out_unmount;
		fuse_loop_cfg_set_clone_fd(cfg, (unsigned)co.clone_fd);
		fuse_loop_cfg_set_idle_threads(cfg, co.max_idle_threads);
		fuse_loop_cfg_set_max_threads(cfg, co.max_threads);
		ret = fuse_session_loop_mt(se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
	ret = ret != 0;
out_unmount:
	fuse_session_unmount(se);
out_handlers:
	fuse_remove_signal_handlers(se);
out:
	if (se)
		fuse_session_destroy(se);
	if (p->root.fd >= 0)
		close(p->root.fd);
	free(p);
	free(co.mountpoint);
	free(o.source);
	fuse_opt_free_args(&args);
	return ret;
}
