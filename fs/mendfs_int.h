/*
 * mendfs_int.h — the daemon's private interface: the mount state shared by every request,
 * the kernel's references to inodes (lookup and open counts), the worker that frees unlinked
 * inodes, and the request handlers of each file.
 *
 * Nodeids are inode numbers, except that the root directory is FUSE_ROOT_ID (1) towards the
 * kernel (inode number 1 can never exist: it would lie in AG 0's superblock block).
 *
 * Lock order (outermost first):
 *   1. inode rwlocks (ip->lock), several at once only in increasing inode number;
 *   2. transaction AG locks (mfs_trans_lock_ag; inside the lib: increasing AG number);
 *   3. the node table's mutex and the worker queue's mutex (leaf locks, never held across
 *      I/O or while taking another lock).
 * There is no lock around the whole filesystem: requests on different inodes run in
 * parallel, readers of one inode share its lock.
 *
 * Test fault injection (testfaults.c): with MENDFS_TEST_FAULTS in its environment at
 * start, the daemon fails one allocation in N (lib/mem.h; N is the variable's value when
 * it is a number >= 2, else 7) after SIGUSR1, and stops after SIGUSR2, logging "mendfs:
 * test faults: <count> injected"; with "N,start" failures begin at once (opening the
 * image, journal replay, mount); with MENDFS_TEST_FAULTS_ARM=FILE holding a number S,
 * SIGUSR1 lets S allocations succeed and fails every later one.  Without the variable the
 * signals keep their default action.  tests/integration/t_nomem.sh, t_nomem_sweep.sh and
 * t_nomem_prealloc.sh use it (the last two through faultarm.py).
 */
#ifndef MENDFS_INT_H
#define MENDFS_INT_H

/* 3.12: fuse_parse_cmdline and fuse_session_loop_mt take the versioned structures that
 * fuse_loop_cfg_create makes (with 34 the loop read that structure as the old public one:
 * max_idle_threads 0, a thread created and destroyed for every request). */
#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <sys/stat.h>
#include <time.h>

#include "fs.h"
#include "inode.h"
#include "trans.h"

struct mfsd_node;
struct mfsd_work;
struct mfs_orphans;
struct mfs_trans;

struct mfsd {
	struct mfs_fs *fs;
	struct fuse_session *se;        /* for notifications to the kernel (xattr.c) */
	int ro;
	double timeout;                 /* entry and attribute timeout, seconds */
	int writeback;                  /* -o writeback_cache: the kernel's write cache */

	/* node table (node.c): inodes the kernel holds, by inode number */
	pthread_mutex_t node_lock;
	struct mfsd_node **node_hash;
	uint64_t node_buckets;
	uint64_t nnodes;

	/* the inactivation worker (node.c) */
	pthread_mutex_t work_lock;
	pthread_cond_t work_cond;       /* work queued, or stop */
	pthread_cond_t idle_cond;       /* queue empty and nothing in progress */
	struct mfsd_work *work_head, *work_tail;
	int work_busy, work_stop, work_started;
	pthread_t worker;
	uint64_t inactivated;           /* inodes freed by the worker (statistics) */

	/* mount options and state of mendfs.c (options.c, node.c) */
	int atime_mode;                 /* MFSD_ATIME_* */
	unsigned commit_secs;           /* force the journal this often (0: only on fsync) */
	uint64_t forced_commits;        /* journal commits as of the last periodic force */
	struct timespec force_due;      /* the next periodic force (CLOCK_MONOTONIC) */
	struct mfs_orphans *orphans;    /* predecessor hints of the orphan lists (orphan.h) */
	int errors_seen;                /* corruption met: the superblock is (being) marked */
	int errors_pending;             /* the worker still has to mark it */

	/* Renames of a directory into another parent, one at a time, so that the loop check
	 * (is the target under the directory moved?) sees a stable tree.  Taken before any
	 * inode lock. */
	pthread_mutex_t rename_lock;

	/* The control socket (ctl.c), NULL when there is none. */
	struct mfsd_ctl *ctl;

	/* readahead.c: the descriptor file data is read from, the streams read ahead */
	struct mfsd_ra *ra;

	/* fuse_io.c: FUSE_HANDLE_KILLPRIV_V2 asked for in the INIT reply */
	int io_state;                   /* where the INIT exchange is (atomic) */
	uint64_t io_init_unique;        /* the INIT request's unique id */
};

/* ---- mendfs.c --------------------------------------------------------------------------- */
/*
 * A transaction that met -EDEADLK (an AG below one it already held was busy, see
 * mfs_trans_lock_ag) has been cancelled and its inodes reloaded by the caller; it is tried
 * again, a bounded number of times, so a lock-order conflict never waits forever.  Before
 * each try the AG lock found busy is waited for holding no AG lock (mfs_trans_wait_busy):
 * an online rebuild holding it for long is waited out there, not with other AGs held.
 * Returns 1 when the caller should try again.
 */
#define MFSD_LOCK_RETRIES 2000u
/* Wait before try number `tries` (1, 2, ...): a yield for the first few, then a sleep that
 * grows to 1 ms, so that a conflict with a long transaction on a loaded machine is waited
 * out (about 2 s in all before the caller gives up with EAGAIN) without spinning. */
static inline void mfsd_retry_backoff(unsigned tries)
{
	if (tries < 16) {
		sched_yield();
	} else {
		struct timespec ts = { 0, (long)(tries < 256 ? tries : 256) * 4000L };

		nanosleep(&ts, NULL);
	}
}

/* End a request's transaction: commit it without waiting for the log (durable at the next
 * force: fsync, commit= or unmount) when `err` is 0, cancel it otherwise.  Returns the
 * commit's error, or `err`. */
static inline int mfsd_trans_end(struct mfs_trans *tp, int err)
{
	if (err) {
		mfs_trans_cancel(tp);
		return err;
	}
	return mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, NULL);
}

static inline int mfsd_should_retry(int err, unsigned *tries)
{
	if (err != -EDEADLK || ++*tries >= MFSD_LOCK_RETRIES)
		return 0;
	mfs_trans_wait_busy();          /* the busy AG lock, holding none (a rebuild's) */
	mfsd_retry_backoff(*tries);
	return 1;
}

static inline struct mfsd *mfsd_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}
/* FUSE node ids are inode numbers, but for the root (FUSE_ROOT_ID).  Inline: the control
 * socket's code (fs/ctl*.c, also linked alone into its fuzz target) uses them too. */
static inline uint64_t mfsd_ino(const struct mfsd *d, fuse_ino_t nodeid)
{
	return nodeid == FUSE_ROOT_ID ? d->fs->geo.rootino : (uint64_t)nodeid;
}

static inline fuse_ino_t mfsd_nodeid(const struct mfsd *d, uint64_t ino)
{
	return ino == d->fs->geo.rootino ? FUSE_ROOT_ID : (fuse_ino_t)ino;
}
/* Map a library error to the errno the kernel gets (corruption: EUCLEAN, logged). */
int mfsd_errno(int err);
/* Reply with error `err` (a negative errno or 0), mapped. */
void mfsd_reply_err(fuse_req_t req, int err);

/* Corruption seen by a request (mfsd_errno): marks the filesystem as needing a scrub
 * (MFS_STATE_ERRORS in the superblock, written by the worker) the first time. */
void mfsd_note_corruption(void);
/* health.c: the daemon whose state mfsd_note_corruption marks (NULL: none yet); a log sink
 * that reports each distinct error message once; the worker's job of writing the mark. */
void mfsd_health_init(struct mfsd *d);
void mfsd_log_once_sink(int level, const char *msg, void *priv);
void mfsd_mark_errors(struct mfsd *d);

/* fuse_io.c: after fuse_session_mount, read and write the FUSE device through callbacks
 * that ask for FUSE_HANDLE_KILLPRIV_V2 in the INIT reply when the kernel offers it (the
 * daemon kills privileges on write, truncate and chown itself).  0 or -errno (logged;
 * the session then keeps libfuse's own I/O). */
int mfsd_fuse_io_install(struct mfsd *d, struct fuse_session *se);

/* oom.c: lower this process's oom_score_adj (the scrub client is the one to kill); a
 * refusal is logged, 0 or -errno. */
int mfsd_oom_protect(void);

/* ctl_testhook.c: the repair engine's test hook (MENDFS_TEST_REPAIR_DIR; inert without it),
 * armed for the repair rc that this thread runs, with its pressure watcher (may be NULL). */
struct mfs_repair_ctx;
struct mfs_pressure;
void mfsd_test_repair_arm(struct mfs_repair_ctx *rc, struct mfs_pressure *pressure);

/* ---- atime.c: access times ------------------------------------------------------------- */
enum { MFSD_ATIME_RELATIME = 0, MFSD_ATIME_NOATIME = 1, MFSD_ATIME_STRICT = 2 };
/* A read or readdir of `ip` happened (no lock held; caller holds a reference): update the
 * access time per the mount's policy, in an asynchronous transaction. */
void mfsd_touch_atime(struct mfsd *d, struct mfs_inode *ip);
/* Would a read of `ip` now update its access time (no lock held)?  An open then drops the
 * kernel's cached pages (no keep_cache), so that the first read reaches the daemon. */
int mfsd_atime_due(struct mfsd *d, struct mfs_inode *ip);

/* ---- ctl.c: the control socket (lib/mendfs_ctl.h, mendfs(8)) ------------------------------ */
/* Make the socket for `mountpoint` (before mounting); without one (error, logged) the
 * daemon serves files but cannot be scrubbed.  Threads start with mfsd_ctl_start (after
 * daemonizing); mfsd_ctl_close (after the session loop) stops every client, removes the
 * socket and frees it all.  Safe to call when there is none. */
int mfsd_ctl_open(struct mfsd *d, const char *mountpoint);
int mfsd_ctl_start(struct mfsd *d);
void mfsd_ctl_close(struct mfsd *d);
/* Namespace changes (create, link, unlink, rename) run between these two, taken before
 * any other lock of the request, so that a link-count check can hold them back.  Begin
 * fails (-EAGAIN) only after waiting two minutes, which is logged. */
int mfsd_ns_begin(struct mfsd *d);
void mfsd_ns_end(struct mfsd *d);

/* ---- node.c: the kernel's references ------------------------------------------------------ */
int mfsd_nodes_init(struct mfsd *d);
/* The kernel got one more reference to `ip` (an entry reply): count it; the table keeps
 * its own inode reference while the kernel holds any. */
int mfsd_node_lookup(struct mfsd *d, struct mfs_inode *ip);
void mfsd_node_forget(struct mfsd *d, uint64_t ino, uint64_t nlookup);
/* Open count (files and directories opened through the kernel). */
int mfsd_node_open(struct mfsd *d, struct mfs_inode *ip);
void mfsd_node_release(struct mfsd *d, uint64_t ino);
/* Drop a reference of the caller's: an unlinked inode whose last user this was is queued to
 * the worker instead of being put. */
void mfsd_iput(struct mfsd *d, struct mfs_inode *ip);
/* At unmount: drop every reference the kernel still had, and free unlinked inodes. */
void mfsd_nodes_shutdown(struct mfsd *d);
/* After the worker stopped: free the table. */
void mfsd_nodes_free(struct mfsd *d);
int mfsd_worker_start(struct mfsd *d);
/* Read-write mount, after journal replay and before serving: free every inode left on the
 * AGs' orphan lists (unlinked while open when the filesystem went down). */
int mfsd_orphans_recover(struct mfsd *d);
/* An inode whose link count the transaction `tp` dropped to 0 (exclusive lock held,
 * before logging it): put it on its AG's orphan list. */
int mfsd_orphan_add(struct mfsd *d, struct mfs_trans *tp, struct mfs_inode *ip);
/* Wait until no inactivation is queued or running. */
void mfsd_worker_drain(struct mfsd *d);
void mfsd_worker_stop(struct mfsd *d);

/* ---- attr.c ------------------------------------------------------------------------------- */
void mfsd_fill_stat(const struct mfs_inode *ip, struct stat *st);
/* Fill an entry reply for `ip` (caller holds at least its shared lock). */
void mfsd_fill_entry(struct mfsd *d, struct mfs_inode *ip, struct fuse_entry_param *e);
/* Count the reference and send the entry reply; drops the caller's reference to ip. */
void mfsd_reply_entry(fuse_req_t req, struct mfs_inode *ip);
void mfsd_now(struct timespec *ts);
void mfsd_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mfsd_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		  struct fuse_file_info *fi);
void mfsd_statfs(fuse_req_t req, fuse_ino_t ino);
/* Before serving: statfs's view of every AG taken once, so that a statfs during a rebuild
 * never waits for it (an AG that cannot be read is left to the first statfs). */
void mfsd_statfs_prime(struct mfs_fs *fs);
/* Read an inode from a request's nodeid (the kernel holds it: it exists). */
int mfsd_iget(struct mfsd *d, fuse_ino_t nodeid, struct mfs_inode **ipp);

/* ---- namei.c: names ---------------------------------------------------------------------- */
void mfsd_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void mfsd_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev);
void mfsd_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode);
void mfsd_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		 struct fuse_file_info *fi);
void mfsd_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name);
void mfsd_readlink(fuse_req_t req, fuse_ino_t ino);
void mfsd_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname);
void mfsd_unlink(fuse_req_t req, fuse_ino_t parent, const char *name);
void mfsd_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name);
void mfsd_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		 const char *newname, unsigned int flags);
void mfsd_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mfsd_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		  struct fuse_file_info *fi);
void mfsd_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		      struct fuse_file_info *fi);
void mfsd_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mfsd_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);

/* ---- fileio.c: file data ----------------------------------------------------------------- */
void mfsd_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mfsd_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mfsd_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
	       struct fuse_file_info *fi);
void mfsd_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		struct fuse_file_info *fi);
void mfsd_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
void mfsd_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi);
void mfsd_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
		    struct fuse_file_info *fi);
void mfsd_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		struct fuse_file_info *fi);
/* Change the size of a regular file (caller holds ip->lock exclusive): zero the tail of the
 * new last block, free the blocks past it in bounded transactions, log the size and times. */
int mfsd_truncate(struct mfsd *d, struct mfs_inode *ip, uint64_t size, int killpriv);
/* Free every data block of an inode (inactivation), in bounded transactions. */
int mfsd_free_all_blocks(struct mfsd *d, struct mfs_inode *ip);
/* Read [off, off + len) of an extent-mapped inode (holes read as zeroes); shared lock. */
int mfsd_read_data(struct mfs_inode *ip, char *buf, uint64_t off, uint64_t len);
/* Map and write `len` bytes as the whole contents of an empty extent-mapped inode, inside
 * the caller's transaction (a long symlink target); the data reaches the device before
 * the caller commits.  Sets ip->size. */
int mfsd_write_new(struct mfs_trans *tp, struct mfs_inode *ip, const char *data,
		   uint64_t len);
/* Make every committed transaction durable (fsync, and after freeing data blocks). */
int mfsd_force(struct mfsd *d);
/* Clear setuid (and setgid when group-executable) of a regular file, as the kernel does on
 * write or truncate by an unprivileged caller.  Returns 1 if the mode changed. */
int mfsd_kill_suid(struct mfs_inode *ip);

/* ---- readahead.c: the image read ahead for sequential readers ------------------------------ */
struct mfsd_ra;
/* -o readahead=KiB: the default (off), and the largest accepted. */
#define MFSD_READAHEAD_KB 0u
#define MFSD_READAHEAD_MAX_KB (1u << 20)
/* The image ranges one read asks to be read ahead. */
#define MFSD_RA_RANGES 8u
struct mfsd_ra_range {
	uint64_t pos, len;              /* bytes of the image */
};
struct mfsd_ra_plan {
	unsigned n;
	struct mfsd_ra_range r[MFSD_RA_RANGES];
};
/* Set the largest window (bytes; 0: no readahead, data read with the device's descriptor)
 * and open the data descriptor.  Returns 0 or -ENOMEM; without a descriptor of its own,
 * data is read with the device's and nothing is read ahead. */
int mfsd_ra_init(struct mfsd *d, uint64_t max_bytes);
void mfsd_ra_fini(struct mfsd *d);
/* The descriptor that file data is spliced from. */
int mfsd_data_fd(const struct mfsd *d);
/* Note a read of [off, off + len) of regular file ip (its lock held shared, off + len <=
 * size) and find the image ranges to read ahead for it. */
void mfsd_ra_plan(struct mfsd *d, struct mfs_inode *ip, uint64_t off, uint64_t len,
		  struct mfsd_ra_plan *plan);
/* Read them ahead: called with no lock held (readahead(2) may wait for the device queue). */
void mfsd_ra_issue(struct mfsd *d, const struct mfsd_ra_plan *plan);

/* ---- xattr.c: extended attributes and POSIX ACLs ------------------------------------------ */
void mfsd_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		   size_t size, int flags);
void mfsd_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size);
void mfsd_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void mfsd_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name);
/* A new inode `ip` in directory `dp` (both locked exclusive, inside the creating
 * transaction, ip->mode set to the requested mode): inherit dp's default ACL (access ACL
 * masked by the mode; a directory also gets the default ACL), or, when dp has none, apply
 * the caller's umask.  Updates ip->mode.  Not for symlinks (a no-op). */
int mfsd_acl_inherit(struct mfs_trans *tp, struct mfs_inode *dp, struct mfs_inode *ip,
		     mode_t umask);
/* After ip->mode changed by chmod (exclusive lock, inside tp): the access ACL, if any,
 * takes the new owner, group-class and other bits. */
int mfsd_acl_chmod(struct mfs_trans *tp, struct mfs_inode *ip);
/* Remove the file capability (security.capability) of a non-directory, as the kernel
 * does on write, truncate and chown whoever the caller (exclusive lock held): in a
 * transaction of its own (on failure the inode is reloaded: call it before changing the
 * in-core inode), or inside `tp` (the caller cancels on error).  Free when the inode
 * has no attribute fork. */
int mfsd_kill_caps(struct mfsd *d, struct mfs_inode *ip);
int mfsd_kill_caps_in(struct mfs_trans *tp, struct mfs_inode *ip);
/* Free an unlinked inode's attribute fork in bounded transactions (exclusive lock). */
int mfsd_xattr_free_all(struct mfsd *d, struct mfs_inode *ip);

#endif
