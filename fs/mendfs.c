/*
 * mendfs.c — the FUSE daemon: command line, opening the image, mounting, the session loop
 * and the clean unmount.
 *
 *   mendfs [-f] [-d] [-s] [-o opts] IMAGE|DEVICE MOUNTPOINT
 *
 * Life of a mount:
 *   1. open the image with the exclusive lock, so a second mendfs, mkfs.mendfs or a writing
 *      repair is refused while we run.  Read-write: replay the journal (a damaged one
 *      refuses the mount, pointing at ro,norecovery).  Read-only: a journal holding
 *      records is replayed first (the image opened read-write for that moment), unless
 *      norecovery, which serves the image exactly as it is on disk;
 *   2. read-write: mark the superblock DIRTY in a journaled transaction, so a crash is seen
 *      at the next mount, and free the inodes left on the orphan lists (files unlinked
 *      while open when the filesystem went down, node.c);
 *   3. mount, daemonize (unless -f), start the worker, serve requests (multithreaded unless
 *      -s) until the kernel ends the session (fusermount3 -u, umount, a signal);
 *   4. drop every inode the kernel still held (freeing unlinked ones), drain the worker,
 *      recompute the superblock's summary counters from the AG headers, mark it CLEAN
 *      (keeping an ERRORS mark, health.c), checkpoint the journal, flush and close.  Only
 *      then does the process exit and release the lock: `fusermount3 -u` returns before
 *      that, so scripts wait for the daemon's exit before touching the image.
 *
 * Options: besides FUSE's own, those of mendfs(8) (ro/rw, norecovery, relatime, noatime,
 * strictatime, commit=, timeout=, cache_size=, readahead=, writeback_cache,
 * nokillpriv_v2); what mount(8) and fstab lines carry for mount itself (noauto, _netdev,
 * nofail, x-*, ...) is accepted and dropped, so that `mount -t fuse.mendfs` and fstab
 * lines work through mount.fuse3.
 */
#include "mendfs_int.h"

#include "byteorder.h"
#include "bcache.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "journal.h"
#include "log.h"
#include "mem.h"
#include "mendfs_format.h"
#include "orphan.h"
#include "repair.h"
#include "trans.h"

#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static const char *progname = "mendfs";

int mfsd_errno(int err)
{
	if (err >= 0)
		return 0;
	if (err == -EFSBADCRC || err == -EFSCORRUPTED) {
		mfsd_note_corruption();
		return EUCLEAN;
	}
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
	/* The errors mark stays until a repair clears it. */
	mfs_put32(sb->state, state | (mfs_get32(sb->state) & MFS_STATE_ERRORS));
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
	struct mfsd *d = userdata;

	/* We clear setuid/setgid ourselves on write, truncate and chown (HANDLE_KILLPRIV,
	 * libfuse's default when the kernel offers it), and file capabilities too:
	 * HANDLE_KILLPRIV_V2, which libfuse 3.14 cannot ask for, is set in the INIT reply by
	 * fuse_io.c (unless -o nokillpriv_v2).
	 *
	 * Writeback cache: write() fills the kernel's page cache, which the kernel writes back
	 * in large requests (and before fsync and close return).  The kernel then owns the
	 * file's size and times while it has dirty pages: it sends mtime and ctime with a
	 * SETATTR (fileio.c logs no times for its writeback), and asks for the pages it must
	 * fill around a partial write with READ even on a file opened write-only (mfsd_read
	 * does not look at the open mode).  Appends are placed by the kernel.  Off unless
	 * -o writeback_cache: errors (ENOSPC, EIO) then surface at fsync or close instead of
	 * write, and reads served from the cache do not update access times. */
	if (d->writeback && (conn->capable & FUSE_CAP_WRITEBACK_CACHE))
		conn->want |= FUSE_CAP_WRITEBACK_CACHE;
	else
		conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	if (conn->capable & FUSE_CAP_PARALLEL_DIROPS)
		conn->want |= FUSE_CAP_PARALLEL_DIROPS;
	/* Read replies name the image's descriptor (fileio.c): splice them into the kernel's
	 * request pages instead of reading them into a buffer and writing that out. */
	conn->want |= conn->capable & (FUSE_CAP_SPLICE_WRITE | FUSE_CAP_SPLICE_MOVE);
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
	int ro, norecovery, atime_mode;
	unsigned commit_secs;
	double timeout;
	int writeback;
	int nokillpriv_v2;
	unsigned long cache_mb;
	unsigned long readahead_kb;
	int help, version;
};

enum { KEY_RO, KEY_RW, KEY_NORECOVERY, KEY_NOATIME, KEY_RELATIME, KEY_STRICTATIME,
       KEY_IGNORE, KEY_HELP, KEY_VERSION };

static const struct fuse_opt mfsd_opts[] = {
	{ "timeout=%lf", offsetof(struct cmdline, timeout), 0 },
	{ "writeback_cache", offsetof(struct cmdline, writeback), 1 },
	{ "nokillpriv_v2", offsetof(struct cmdline, nokillpriv_v2), 1 },
	{ "cache_size=%lu", offsetof(struct cmdline, cache_mb), 0 },
	{ "readahead=%lu", offsetof(struct cmdline, readahead_kb), 0 },
	{ "commit=%u", offsetof(struct cmdline, commit_secs), 0 },
	FUSE_OPT_KEY("ro", KEY_RO),
	FUSE_OPT_KEY("rw", KEY_RW),
	FUSE_OPT_KEY("norecovery", KEY_NORECOVERY),
	FUSE_OPT_KEY("noatime", KEY_NOATIME),
	FUSE_OPT_KEY("relatime", KEY_RELATIME),
	FUSE_OPT_KEY("atime", KEY_RELATIME),
	FUSE_OPT_KEY("strictatime", KEY_STRICTATIME),
	/* What mount(8) and fstab lines carry for mount itself, not for the filesystem. */
	FUSE_OPT_KEY("defaults", KEY_IGNORE),
	FUSE_OPT_KEY("auto", KEY_IGNORE),
	FUSE_OPT_KEY("noauto", KEY_IGNORE),
	FUSE_OPT_KEY("_netdev", KEY_IGNORE),
	FUSE_OPT_KEY("nofail", KEY_IGNORE),
	FUSE_OPT_KEY("user", KEY_IGNORE),
	FUSE_OPT_KEY("users", KEY_IGNORE),
	FUSE_OPT_KEY("nouser", KEY_IGNORE),
	FUSE_OPT_KEY("owner", KEY_IGNORE),
	FUSE_OPT_KEY("group", KEY_IGNORE),
	FUSE_OPT_KEY("comment=", KEY_IGNORE),
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
	case KEY_RW:
		c->ro = 0;
		return 1;
	case KEY_NORECOVERY:
		c->norecovery = 1;
		return 0;
	case KEY_NOATIME:
		c->atime_mode = MFSD_ATIME_NOATIME;
		return 1;                    /* the kernel's mount flag too (shown in mounts) */
	case KEY_RELATIME:
		c->atime_mode = MFSD_ATIME_RELATIME;
		return 0;
	case KEY_STRICTATIME:
		c->atime_mode = MFSD_ATIME_STRICT;
		return 0;
	case KEY_IGNORE:
		return 0;
	case KEY_HELP:
		c->help = 1;
		return 0;
	case KEY_VERSION:
		c->version = 1;
		return 0;
	default:
		/* x-systemd.*, x-gvfs-* and the like belong to other programs. */
		if (key == FUSE_OPT_KEY_OPT && strncmp(arg, "x-", 2) == 0)
			return 0;
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
		"  -o ro              mount read-only (a journal holding changes is replayed "
		"first)\n"
		"  -o rw              mount read-write (the default)\n"
		"  -o norecovery      with ro only: do not replay the journal\n"
		"  -o relatime        update access times when older than the modification or "
		"change time, or a day old (the default)\n"
		"  -o noatime         never update access times\n"
		"  -o strictatime     update the access time on every read and readdir\n"
		"  -o timeout=SECS    entry and attribute cache timeout (default 86400)\n"
		"  -o cache_size=MiB  metadata buffer cache size (default 64)\n"
		"  -o readahead=KiB   read the image this far ahead of sequential readers "
		"(default %u: off)\n"
		"  -o writeback_cache the kernel caches writes (faster small writes; errors\n"
		"                     show at fsync or close; cached reads keep access times)\n"
		"  -o commit=SECS     make committed changes durable at least this often "
		"(default 5; 0: only on fsync)\n"
		"  -o nokillpriv_v2   let the kernel check file capabilities before every "
		"write\n"
		"                     (do not ask for FUSE_HANDLE_KILLPRIV_V2)\n"
		"  -o allow_other, default_permissions, fsname=, ... as for every FUSE "
		"filesystem\n"
		"See mendfs(8).\n", progname, MFSD_READAHEAD_KB);
}

/* ---- opening the image ------------------------------------------------------------------- */

static void say_journal_damaged(const char *image)
{
	fprintf(stderr, "%s: %s: the journal is damaged (see the message above): refusing to "
		"mount read-write.  Mount with -o ro,norecovery to read the filesystem as it "
		"is on disk (without the changes still in the journal), or run mendfs_repair.\n",
		progname, image);
}

static void say_open_failed(const char *image, int err)
{
	if (err == -EBUSY || err == -EWOULDBLOCK)
		fprintf(stderr, "%s: %s is in use (mounted, or being checked or formatted); "
			"refusing to mount it twice\n", progname, image);
	else
		fprintf(stderr, "%s: cannot open %s: %s\n", progname, image,
			strerror(mfsd_errno(err)));
}

/* Read-write, with the journal replayed and attached. */
static int open_rw(const struct cmdline *c, struct mfs_fs **out)
{
	struct mfs_fs *fs;
	int err;

	err = mfs_fs_open(c->image, MFS_OPEN_EXCL, (size_t)c->cache_mb << 20, &fs);
	if (err) {
		say_open_failed(c->image, err);
		return err;
	}
	err = mfs_journal_open(fs, 0, NULL);
	if (err) {
		if (mfs_is_corruption(err))
			say_journal_damaged(c->image);
		else
			fprintf(stderr, "%s: %s: replaying the journal failed: %s\n", progname,
				c->image, strerror(mfsd_errno(err)));
		/* Nothing of a failed replay may reach the disk. */
		mfs_bcache_discard(fs->bc);
		fs->bc = NULL;
		mfs_fs_close(fs);
		return err;
	}
	*out = fs;
	return 0;
}

/*
 * Read-only.  Unless norecovery, a journal that holds committed changes is replayed first
 * (the device opened read-write for that moment only), so that what is served is the
 * filesystem as last committed; a damaged journal refuses, pointing at norecovery.
 */
static int open_ro(const struct cmdline *c, struct mfs_fs **out)
{
	struct mfs_journal_info ji;
	unsigned flags = MFS_OPEN_RDONLY | MFS_OPEN_EXCL;
	size_t cache = (size_t)c->cache_mb << 20;
	struct mfs_fs *fs;
	int err, perr;

	err = mfs_fs_open(c->image, flags, cache, &fs);
	if (err) {
		say_open_failed(c->image, err);
		return err;
	}
	perr = mfs_journal_peek(fs, &ji);
	if (c->norecovery) {
		if (perr || ji.records)
			fprintf(stderr, "%s: %s: norecovery: %s; what is served may be out of "
				"date or inconsistent\n", progname, c->image,
				perr ? "the journal is unreadable" :
				"committed changes in the journal are not replayed");
		*out = fs;
		return 0;
	}
	if (perr) {
		mfs_fs_close(fs);
		if (mfs_is_corruption(perr))
			fprintf(stderr, "%s: %s: the journal is damaged (see the message above): "
				"it cannot be replayed.  Mount with -o ro,norecovery to read the "
				"filesystem as it is on disk, or run mendfs_repair.\n", progname,
				c->image);
		else
			fprintf(stderr, "%s: %s: reading the journal failed: %s\n", progname,
				c->image, strerror(mfsd_errno(perr)));
		return perr;
	}
	if (ji.records == 0) {
		*out = fs;
		return 0;
	}
	/* Replay, then start again read-only. */
	mfs_fs_close(fs);
	err = mfs_fs_open(c->image, MFS_OPEN_EXCL | MFS_OPEN_JOURNAL, cache, &fs);
	if (err) {
		if (err == -EROFS || err == -EACCES || err == -EPERM)
			fprintf(stderr, "%s: %s: the journal holds %llu committed transaction%s "
				"to replay but the image cannot be written (%s).  Mount with -o "
				"ro,norecovery to read it without them.\n", progname, c->image,
				(unsigned long long)ji.records, ji.records == 1 ? "" : "s",
				strerror(-err));
		else if (mfs_is_corruption(err))
			say_journal_damaged(c->image);
		else
			say_open_failed(c->image, err);
		return err;
	}
	err = mfs_fs_close(fs);
	if (err) {
		fprintf(stderr, "%s: %s: writing the replayed journal failed: %s\n", progname,
			c->image, strerror(mfsd_errno(err)));
		return err;
	}
	err = mfs_fs_open(c->image, flags, cache, out);
	if (err)
		say_open_failed(c->image, err);
	return err;
}

/* A filesystem marked as damaged is served, with a word about it. */
static void warn_if_errors(struct mfs_fs *fs, const char *image)
{
	struct mfs_buf *bp;

	if (mfs_read_sb(fs, 0, &bp) != 0)
		return;
	if (mfs_get32(((const struct mfs_sb *)bp->data)->state) & MFS_STATE_ERRORS)
		mfs_log(MFS_LOG_WARN, "%s: corruption was found earlier and not yet repaired: "
			"run mendfs_scrub on the mount point (or mendfs_repair unmounted)", image);
	mfs_buf_put(bp);
}

int main(int argc, char **argv)
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts fo;
	struct cmdline c = { .timeout = 86400.0, .commit_secs = 5,
			     .readahead_kb = MFSD_READAHEAD_KB };
	struct fuse_session *se = NULL;
	struct mfsd d;
	char *fsopts = NULL;
	int err, ret = 1, mounted = 0;

	mfs_mem_tune();                      /* before any thread: see mem.h */
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
	if (c.readahead_kb > MFSD_READAHEAD_MAX_KB) {
		fprintf(stderr, "%s: readahead=%lu: at most %u KiB\n", progname, c.readahead_kb,
			MFSD_READAHEAD_MAX_KB);
		goto out_args;
	}
	if (c.norecovery && !c.ro) {
		fprintf(stderr, "%s: norecovery is only allowed with ro: a read-write mount must "
			"replay the journal first (use -o ro,norecovery)\n", progname);
		goto out_args;
	}
	if (fo.debug) {
		mfs_log_set_level(MFS_LOG_DEBUG);
		fo.foreground = 1;
	}
	mfs_log_set_sink(mfsd_log_once_sink, NULL);

	/* Our defaults first, so that options given on the command line override them. */
	if (asprintf(&fsopts, "-osubtype=mendfs,fsname=%s,default_permissions", c.image) < 0 ||
	    fuse_opt_insert_arg(&args, 1, fsopts) != 0) {
		fprintf(stderr, "%s: out of memory\n", progname);
		goto out_args;
	}

	err = c.ro ? open_ro(&c, &d.fs) : open_rw(&c, &d.fs);
	if (err)
		goto out_args;
	d.ro = c.ro;
	d.timeout = c.timeout;
	d.writeback = c.writeback;
	d.atime_mode = c.atime_mode;
	d.commit_secs = c.commit_secs;
	mfsd_health_init(&d);
	warn_if_errors(d.fs, c.image);
	err = mfs_icache_init(d.fs, 0);
	if (!err)
		err = mfsd_nodes_init(&d);
	if (!err)
		err = mfsd_ra_init(&d, (uint64_t)c.readahead_kb << 10);
	if (!err)
		err = mfs_orphans_create(&d.orphans);
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
	/* Files unlinked while open when the filesystem went down: freed before serving.  A
	 * damaged list is reported (and marks the filesystem) but does not stop the mount. */
	if (!d.ro)
		mfsd_orphans_recover(&d);
	/* A rebuild's reap cut short: its AGs' old tree blocks are freed before serving
	 * (nothing else runs yet; a failure is logged and leaves them unused). */
	if (!d.ro) {
		uint32_t nreaped;

		(void)mfs_repair_reap_pending(d.fs, MFS_REPAIR_OFFLINE, &nreaped);
	}
	mfsd_statfs_prime(d.fs);         /* statfs's view of every AG, for rebuilds' time */

	se = fuse_session_new(&args, &mfsd_ops, sizeof(mfsd_ops), &d);
	if (!se)
		goto out_close;
	d.se = se;
	if (fuse_set_signal_handlers(se) != 0)
		goto out_close;
	/* The control socket before the mount appears: a client that sees the mount finds
	 * it (a failure is logged: files are served, scrub is not). */
	mfsd_ctl_open(&d, fo.mountpoint);
	if (fuse_session_mount(se, fo.mountpoint) != 0)
		goto out_close;
	mounted = 1;
	/* Before anything reads the device: the kernel's INIT waits there (a failure is
	 * logged; the mount works without it). */
	if (!c.nokillpriv_v2)
		(void)mfsd_fuse_io_install(&d, se);
	if (!fo.foreground) {
		openlog(progname, LOG_PID, LOG_DAEMON);
		mfs_log_set_sink(mfsd_log_once_sink, (void *)1);
	}
	fuse_daemonize(fo.foreground);
	/* Serving now: the OOM killer should take a scrub client rather than us (a refusal
	 * is logged, not fatal; not earlier, so that a refused mount logs only why). */
	(void)mfsd_oom_protect();
	/* Threads only now: they would not survive daemonize's fork. */
	err = mfsd_worker_start(&d);
	if (err) {
		mfs_log(MFS_LOG_ERR, "cannot start the worker thread: %s", strerror(-err));
		goto out_close;
	}
	mfsd_ctl_start(&d);
	if (fo.singlethread) {
		ret = fuse_session_loop(se);
	} else {
		struct fuse_loop_config *cfg = fuse_loop_cfg_create();

		if (!cfg) {
			mfs_log(MFS_LOG_ERR, "out of memory");
			goto out_close;
		}
		fuse_loop_cfg_set_clone_fd(cfg, (unsigned)fo.clone_fd);
		if (fo.max_idle_threads != UINT_MAX)    /* UINT_MAX: keep every thread */
			fuse_loop_cfg_set_idle_threads(cfg, fo.max_idle_threads);
		fuse_loop_cfg_set_max_threads(cfg, fo.max_threads);
		ret = fuse_session_loop_mt(se, cfg);
		fuse_loop_cfg_destroy(cfg);
	}
	ret = ret < 0 ? 1 : 0;

out_close:
	mfsd_ctl_close(&d);          /* clients stopped, socket removed: before the fs goes */
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
	mfsd_health_init(NULL);
	mfsd_ra_fini(&d);
	mfs_orphans_free(d.orphans);
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
