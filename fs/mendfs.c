/*
 * mendfs.c — the FUSE daemon: command line, opening the image, mounting, the session loop
 * and the clean unmount.
 *
 *   mendfs [-f] [-d] [-s] [-o opts] IMAGE|DEVICE MOUNTPOINT
 *
 * Life of a mount:
 *   1. open the image with the journal (replayed here) and the exclusive lock, so a second
 *      mendfs, mkfs.mendfs or a writing repair is refused while we run;
 *   2. read-write: mark the superblock DIRTY in a journaled transaction, so a crash is seen
 *      at the next mount;
 *   3. mount, daemonize (unless -f), start the worker, serve requests (multithreaded unless
 *      -s) until the kernel ends the session (fusermount3 -u, umount, a signal);
 *   4. drop every inode the kernel still held (freeing unlinked ones), drain the worker,
 *      recompute the superblock's summary counters from the AG headers, mark it CLEAN,
 *      checkpoint the journal, flush and close.  Only then does the process exit and
 *      release the lock: `fusermount3 -u` returns before that, so scripts wait for the
 *      daemon's exit before touching the image.
 */
#include "mendfs_int.h"

#include "byteorder.h"
#include "bcache.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "journal.h"
#include "log.h"
#include "mendfs_format.h"
#include "trans.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const char *progname = "mendfs";

uint64_t mfsd_ino(const struct mfsd *d, fuse_ino_t nodeid)
{
	return nodeid == FUSE_ROOT_ID ? d->fs->geo.rootino : (uint64_t)nodeid;
}

fuse_ino_t mfsd_nodeid(const struct mfsd *d, uint64_t ino)
{
	return ino == d->fs->geo.rootino ? FUSE_ROOT_ID : (fuse_ino_t)ino;
}

int mfsd_errno(int err)
{
	if (err >= 0)
		return 0;
	if (err == -EFSBADCRC || err == -EFSCORRUPTED)
		return EUCLEAN;
	if (err == -EDEADLK)        /* lock-order retries exhausted: transient */
		return EAGAIN;
	return -err;
}

void mfsd_reply_err(fuse_req_t req, int err)
{
	fuse_reply_err(req, mfsd_errno(err));
}

/* ---- the superblock at mount and unmount ---------------------------------------------- */

/*
 * Write the superblock state in a transaction: DIRTY at mount; CLEAN at unmount, with the
 * summary counters recomputed from the AG headers (every AG locked, in order, so that the
 * sums are a consistent snapshot).
 */
static int sb_set_state(struct mfs_fs *fs, uint32_t state)
{
	uint64_t icount = 0, ifree = 0, fdblocks = 0;
	struct mfs_trans *tp;
	struct mfs_buf *bp;
	struct mfs_sb *sb;
	int err;

	err = mfs_trans_alloc(fs, &tp);
	if (err)
		return err;
	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++) {
		err = mfs_trans_lock_ag(tp, agno, 0);
		if (err)
			goto out_cancel;
		if (state == MFS_STATE_CLEAN) {
			const struct mfs_agh *agh;

			err = mfs_read_agh(fs, agno, &bp);
			if (err)
				goto out_cancel;
			agh = bp->data;
			icount += mfs_get32(agh->icount);
			ifree += mfs_get32(agh->ifree);
			fdblocks += mfs_get32(agh->freeblks);
			mfs_buf_put(bp);
		}
	}
	err = mfs_read_sb(fs, 0, &bp);
	if (err)
		goto out_cancel;
	err = mfs_trans_modify(tp, bp);
	if (err) {
		mfs_buf_put(bp);
		goto out_cancel;
	}
	sb = bp->data;
	mfs_put32(sb->state, state);
	mfs_put64(sb->wtime, (uint64_t)time(NULL));
	if (state == MFS_STATE_CLEAN) {
		mfs_put64(sb->icount, icount);
		mfs_put64(sb->ifree, ifree);
		mfs_put64(sb->fdblocks, fdblocks);
	}
	mfs_buf_put(bp);
	return mfs_trans_commit(tp);
out_cancel:
	mfs_trans_cancel(tp);
	return err;
}

/* ---- requests handled here ------------------------------------------------------------- */

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	/* We clear setuid/setgid ourselves on write, truncate and chown (HANDLE_KILLPRIV,
	 * libfuse's default when the kernel offers it). Writeback caching stays off for now:
	 * every write reaches the daemon, so sizes and times are ours. */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* POSIX ACLs (xattr.c): the kernel enforces them, we keep them in sync with the mode
	 * and inherit default ACLs; it then sends modes unmasked, with the umask beside them,
	 * which applies only where no default ACL does. */
	if (conn->capable & FUSE_CAP_POSIX_ACL)
		conn->want |= FUSE_CAP_POSIX_ACL;
	if (conn->capable & FUSE_CAP_DONT_MASK)
		conn->want |= FUSE_CAP_DONT_MASK;
	conn->time_gran = 1;
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct mfsd *d = mfsd_of(req);

	mfsd_node_forget(d, mfsd_ino(d, ino), nlookup);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *forgets)
{
	struct mfsd *d = mfsd_of(req);

	for (size_t i = 0; i < count; i++)
		mfsd_node_forget(d, mfsd_ino(d, forgets[i].ino), forgets[i].nlookup);
	fuse_reply_none(req);
}

static const struct fuse_lowlevel_ops mfsd_ops = {
	.init = op_init,
	.lookup = mfsd_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = mfsd_getattr,
	.setattr = mfsd_setattr,
	.readlink = mfsd_readlink,
	.mknod = mfsd_mknod,
	.mkdir = mfsd_mkdir,
	.unlink = mfsd_unlink,
	.rmdir = mfsd_rmdir,
	.symlink = mfsd_symlink,
	.rename = mfsd_rename,
	.link = mfsd_link,
	.open = mfsd_open,
	.read = mfsd_read,
	.write = mfsd_write,
	.flush = mfsd_flush,
	.release = mfsd_release,
	.fsync = mfsd_fsync,
	.opendir = mfsd_opendir,
	.readdir = mfsd_readdir,
	.readdirplus = mfsd_readdirplus,
	.releasedir = mfsd_releasedir,
	.fsyncdir = mfsd_fsyncdir,
	.statfs = mfsd_statfs,
	.create = mfsd_create,
	.fallocate = mfsd_fallocate,
	.lseek = mfsd_lseek,
	.setxattr = mfsd_setxattr,
	.getxattr = mfsd_getxattr,
	.listxattr = mfsd_listxattr,
	.removexattr = mfsd_removexattr,
};

/* ---- command line ---------------------------------------------------------------------- */

struct cmdline {
	const char *image;
	int nonopts;
	int ro;
	double timeout;
	unsigned long cache_mb;
	int help, version;
};

enum { KEY_RO, KEY_HELP, KEY_VERSION };

#define MFSD_OPT(t, p) { t, offsetof(struct cmdline, p), 1 }
static const struct fuse_opt mfsd_opts[] = {
	{ "timeout=%lf", offsetof(struct cmdline, timeout), 0 },
	{ "cache_size=%lu", offsetof(struct cmdline, cache_mb), 0 },
	FUSE_OPT_KEY("ro", KEY_RO),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_END
};

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct cmdline *c = data;

	switch (key) {
	case FUSE_OPT_KEY_NONOPT:
		if (c->nonopts++ == 0) {
			c->image = arg;
			return 0;            /* ours: not passed on */
		}
		return 1;                    /* the mountpoint, for fuse_parse_cmdline */
	case KEY_RO:
		c->ro = 1;
		return 1;                    /* and a mount option too */
	case KEY_HELP:
		c->help = 1;
		return 0;
	case KEY_VERSION:
		c->version = 1;
		return 0;
	default:
		return 1;
	}
}

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: %s [-f] [-d] [-s] [-o opt[,opt...]] IMAGE|DEVICE MOUNTPOINT\n"
		"  -f                 stay in the foreground\n"
		"  -d                 debug: print every request (implies -f)\n"
		"  -s                 single-threaded\n"
		"  -o ro              mount read-only (the journal is not replayed)\n"
		"  -o timeout=SECS    entry and attribute cache timeout (default 86400)\n"
		"  -o cache_size=MiB  metadata buffer cache size (default 64)\n"
		"  -o allow_other, default_permissions, fsname=, ... as for every FUSE "
		"filesystem\n"
		"See mendfs(8).\n", progname);
}

static void syslog_sink(int level, const char *msg, void *priv)
{
	syslog(level, "%s", msg);
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts fo;
	struct cmdline c = { .timeout = 86400.0 };
	struct fuse_session *se = NULL;
	struct mfsd d;
	char *fsopts = NULL;
	unsigned oflags;
	int err, ret = 1, mounted = 0;

	memset(&d, 0, sizeof(d));
	memset(&fo, 0, sizeof(fo));
	if (fuse_opt_parse(&args, &c, mfsd_opts, opt_proc) == -1)
		return 1;
	if (c.help) {
		usage(stdout);
		printf("\nFUSE options:\n");
		fuse_cmdline_help();
		fuse_lowlevel_help();
		fuse_opt_free_args(&args);
		return 0;
	}
	if (c.version) {
		printf("mendfs %d.%d (FUSE library %s)\n", MFS_VERSION, 0, fuse_pkgversion());
		fuse_opt_free_args(&args);
		return 0;
	}
	if (fuse_parse_cmdline(&args, &fo) != 0)
		goto out_args;
	if (!c.image || !fo.mountpoint) {
		usage(stderr);
		goto out_args;
	}
	if (c.timeout < 0) {
		fprintf(stderr, "%s: timeout must not be negative\n", progname);
		goto out_args;
	}
	if (fo.debug) {
		mfs_log_set_level(MFS_LOG_DEBUG);
		fo.foreground = 1;
	}

	/* Our defaults first, so that options given on the command line override them. */
	if (asprintf(&fsopts, "-osubtype=mendfs,fsname=%s,default_permissions", c.image) < 0 ||
	    fuse_opt_insert_arg(&args, 1, fsopts) != 0) {
		fprintf(stderr, "%s: out of memory\n", progname);
		goto out_args;
	}

	oflags = MFS_OPEN_EXCL | (c.ro ? MFS_OPEN_RDONLY : MFS_OPEN_JOURNAL);
	err = mfs_fs_open(c.image, oflags, (size_t)c.cache_mb << 20, &d.fs);
	if (err) {
		if (err == -EBUSY || err == -EWOULDBLOCK)
			fprintf(stderr, "%s: %s is in use (mounted, or being checked or "
				"formatted); refusing to mount it twice\n", progname, c.image);
		else
			fprintf(stderr, "%s: cannot open %s: %s\n", progname, c.image,
				strerror(mfsd_errno(err)));
		goto out_args;
	}
	d.ro = c.ro;
	d.timeout = c.timeout;
	err = mfs_icache_init(d.fs, 0);
	if (!err)
		err = mfsd_nodes_init(&d);
	if (!err && !d.ro)
		err = sb_set_state(d.fs, MFS_STATE_DIRTY);
	/* Write the DIRTY superblock in place now, not at the next checkpoint: tools that read
	 * the image without replaying the journal must see that it was in use. */
	if (!err && !d.ro && d.fs->log)
		err = mfs_journal_checkpoint(d.fs->log);
	if (err) {
		fprintf(stderr, "%s: %s: %s\n", progname, c.image, strerror(mfsd_errno(err)));
		goto out_close;
	}

	se = fuse_session_new(&args, &mfsd_ops, sizeof(mfsd_ops), &d);
	if (!se)
		goto out_close;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_close;
	if (fuse_session_mount(se, fo.mountpoint) != 0)
		goto out_close;
	mounted = 1;
	if (!fo.foreground) {
		openlog(progname, LOG_PID, LOG_DAEMON);
		mfs_log_set_sink(syslog_sink, NULL);
	}
	fuse_daemonize(fo.foreground);
	/* Threads only now: they would not survive daemonize's fork. */
	err = mfsd_worker_start(&d);
	if (err) {
		mfs_log(MFS_LOG_ERR, "cannot start the worker thread: %s", strerror(-err));
		goto out_close;
	}
	if (fo.singlethread) {
		ret = fuse_session_loop(se);
	} else {
		struct fuse_loop_config *cfg = fuse_loop_cfg_create();

		if (!cfg) {
			mfs_log(MFS_LOG_ERR, "out of memory");
			goto out_close;
		}
		fuse_loop_cfg_set_clone_fd(cfg, fo.clone_fd);
		fuse_loop_cfg_set_max_threads(cfg, fo.max_threads);
		ret = fuse_session_loop_mt(se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
	ret = ret < 0 ? 1 : 0;

out_close:
	if (se) {
		if (mounted)
			fuse_session_unmount(se);
		fuse_remove_signal_handlers(se);
		fuse_session_destroy(se);
	}
	if (d.node_hash) {
		mfsd_nodes_shutdown(&d);
		if (d.work_started) {
			mfsd_worker_drain(&d);
		} else {
			/* Nothing was served; nothing can be queued but be safe. */
			if (mfsd_worker_start(&d) == 0)
				mfsd_worker_drain(&d);
		}
		mfsd_worker_stop(&d);
		mfsd_nodes_free(&d);
	}
	if (d.fs) {
		if (!d.ro && d.fs->log) {
			err = sb_set_state(d.fs, MFS_STATE_CLEAN);
			if (err) {
				mfs_log(MFS_LOG_ERR, "%s: marking the filesystem clean failed: %s",
					c.image, strerror(mfsd_errno(err)));
				ret = 1;
			}
		}
		if (d.fs->icache && mfs_icache_destroy(d.fs) != 0) {
			mfs_log(MFS_LOG_ERR, "%s: inodes still referenced at unmount", c.image);
			ret = 1;
		}
		err = mfs_fs_close(d.fs);
		if (err) {
			mfs_log(MFS_LOG_ERR, "%s: closing the filesystem failed: %s", c.image,
				strerror(mfsd_errno(err)));
			ret = 1;
		}
	}
out_args:
	free(fsopts);
	free(fo.mountpoint);
	fuse_opt_free_args(&args);
	return ret;
}
