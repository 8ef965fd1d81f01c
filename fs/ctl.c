/*
 * ctl.c — the daemon's control socket: where it lives, its life from mount to unmount, the
 * acceptor thread and who may connect, and the namespace quiesce lock.
 *
 * Life: mfsd_ctl_open() before the mount appears (so a client that sees the mount finds
 * the socket: connections wait in the backlog), mfsd_ctl_start() once the daemon has
 * forked (threads do not survive fuse_daemonize), mfsd_ctl_close() after the session loop:
 * every client is woken and cancelled, waited for, and the socket file removed if it is
 * still the one we made.  The protocol is in lib/mendfs_ctl.h and mendfs(8).
 *
 * The quiesce lock: namespace changes (create, link, unlink, rename...) hold ns_lock shared
 * for their whole request (mfsd_ns_begin/end, outermost of every daemon lock); a check that
 * needs a still namespace (link counts) takes it exclusive, holding no other lock.  The
 * lock prefers writers, so a steady stream of creates cannot starve the check; both sides
 * wait a bounded time.
 */
#include "ctl_int.h"

#include "log.h"
#include "mem.h"
#include "scrub.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define NS_WAIT_STEP   10          /* s between complaints of a waiting namespace change */
#define NS_WAIT_STEPS  12          /* then it gives up with EAGAIN */

/* ---- the socket's place ------------------------------------------------------------------ */

/* RUNDIR (see mendfs_ctl.h), created if missing; it must be a directory owned by us or root
 * that nobody else may write. */
static int ctl_rundir(char *buf, size_t len)
{
	const char *env = getenv(MFS_CTL_RUNDIR_ENV);
	mode_t mode = 0755;
	struct stat st;
	int n;

	if (env && *env)
		n = snprintf(buf, len, "%s", env);
	else if (geteuid() == 0)
		n = snprintf(buf, len, "%s", MFS_CTL_RUNDIR);
	else {
		n = snprintf(buf, len, "/run/user/%u/mendfs", (unsigned)geteuid());
		mode = 0700;
	}
	if (n < 0 || (size_t)n >= len) {
		mfs_log(MFS_LOG_WARN, "control socket directory name too long");
		return -ENAMETOOLONG;
	}
	if (mkdir(buf, mode) != 0 && errno != EEXIST) {
		int err = -errno;

		mfs_log(MFS_LOG_WARN, "cannot create %s: %s", buf, strerror(-err));
		return err;
	}
	if (lstat(buf, &st) != 0)
		return -errno;
	if (!S_ISDIR(st.st_mode) || (st.st_uid != 0 && st.st_uid != geteuid()) ||
	    (st.st_mode & 022)) {
		mfs_log(MFS_LOG_WARN, "%s is not a directory owned by us or root and closed to "
			"others' writes: no control socket there", buf);
		return -EPERM;
	}
	return 0;
}

/* Bind `fd` at `path`; a stale socket (nobody accepts on it) is replaced, a live one is
 * another daemon's: -EADDRINUSE. */
static int ctl_bind(int fd, const struct sockaddr_un *sa)
{
	if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
		return 0;
	if (errno == EADDRINUSE) {
		int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int live;

		if (probe < 0)
			return -errno;
		live = connect(probe, (const struct sockaddr *)sa, sizeof(*sa)) == 0 ||
		       errno != ECONNREFUSED;
		close(probe);
		if (live)
			return -EADDRINUSE;
		if (unlink(sa->sun_path) != 0 && errno != ENOENT)
			return -errno;
		if (bind(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0)
			return 0;
	}
	return -errno;
}

/* MFSD_CTL_FIRST_TIMEOUT in ms, or MENDFS_TEST_CTL_FIRST_TIMEOUT seconds (1 to 3600). */
static unsigned first_timeout_ms(void)
{
	const char *env = getenv("MENDFS_TEST_CTL_FIRST_TIMEOUT");
	unsigned long v;
	char *end;

	if (!env || !*env)
		return MFSD_CTL_FIRST_TIMEOUT * 1000u;
	errno = 0;
	v = strtoul(env, &end, 10);
	if (errno || *end || v < 1 || v > 3600) {
		mfs_log(MFS_LOG_WARN, "MENDFS_TEST_CTL_FIRST_TIMEOUT=%s is not 1 to 3600 seconds: "
			"%u s it is", env, MFSD_CTL_FIRST_TIMEOUT);
		return MFSD_CTL_FIRST_TIMEOUT * 1000u;
	}
	return (unsigned)v * 1000u;
}

static void ctl_free(struct mfsd_ctl *ctl)
{
	if (ctl->lfd >= 0)
		close(ctl->lfd);
	if (ctl->stopfd >= 0)
		close(ctl->stopfd);
	pthread_rwlock_destroy(&ctl->ns_lock);
	pthread_mutex_destroy(&ctl->lock);
	pthread_mutex_destroy(&ctl->dev_lock);
	pthread_cond_destroy(&ctl->gone_cond);
	mfs_scrub_census_free(ctl->census);
	free(ctl->mountpoint);
	free(ctl->sockpath);
	free(ctl);
}

int mfsd_ctl_open(struct mfsd *d, const char *mountpoint)
{
	char dir[PATH_MAX], name[MFS_CTL_SOCK_NAME_LEN], *canon;
	pthread_rwlockattr_t ra;
	struct sockaddr_un sa;
	struct mfsd_ctl *ctl;
	struct stat st;
	int err, n;

	ctl = mfs_calloc(1, sizeof(*ctl));
	if (!ctl)
		return -ENOMEM;
	ctl->d = d;
	ctl->lfd = ctl->stopfd = -1;
	ctl->owner = getuid();
	ctl->first_ms = first_timeout_ms();
	pthread_mutex_init(&ctl->lock, NULL);
	pthread_mutex_init(&ctl->dev_lock, NULL);
	pthread_cond_init(&ctl->gone_cond, NULL);
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&ctl->ns_lock, &ra);
	pthread_rwlockattr_destroy(&ra);
	if (mfs_scrub_census_new(d->fs, &ctl->census) != 0)
		ctl->census = NULL;     /* checks then read everything themselves */

	/* Before mounting: realpath() of a mounted point would ask ourselves. */
	canon = realpath(mountpoint, NULL);
	ctl->mountpoint = canon ? mfs_strdup(canon) : mfs_strdup(mountpoint);
	free(canon);
	err = -ENOMEM;
	if (!ctl->mountpoint)
		goto fail;
	err = ctl_rundir(dir, sizeof(dir));
	if (err)
		goto fail;
	mfs_ctl_sock_name(ctl->mountpoint, name);
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	n = snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir, name);
	if (n < 0 || (size_t)n >= sizeof(sa.sun_path)) {
		mfs_log(MFS_LOG_WARN, "control socket path %s/%s is too long for a Unix socket",
			dir, name);
		err = -ENAMETOOLONG;
		goto fail;
	}
	err = -ENOMEM;
	ctl->sockpath = mfs_strdup(sa.sun_path);
	if (!ctl->sockpath)
		goto fail;
	ctl->stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ctl->lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ctl->stopfd < 0 || ctl->lfd < 0) {
		err = -errno;
		goto fail;
	}
	err = ctl_bind(ctl->lfd, &sa);
	if (err) {
		mfs_log(MFS_LOG_WARN, "cannot bind the control socket %s: %s%s", ctl->sockpath,
			strerror(-err), err == -EADDRINUSE ? " (another daemon serves it)" : "");
		goto fail;
	}
	/* Anyone may connect; SO_PEERCRED decides who is served (and others get told why). */
	if (chmod(ctl->sockpath, 0666) != 0 || lstat(ctl->sockpath, &st) != 0 ||
	    listen(ctl->lfd, 16) != 0) {
		err = -errno;
		unlink(ctl->sockpath);
		goto fail;
	}
	ctl->sock_dev = st.st_dev;
	ctl->sock_ino = st.st_ino;
	d->ctl = ctl;
	return 0;
fail:
	if (err != -ENOMEM)
		mfs_log(MFS_LOG_WARN, "no control socket for %s (%s): online scrub is unavailable",
			mountpoint, strerror(-err));
	ctl_free(ctl);
	return err;
}

/* ---- who may connect ---------------------------------------------------------------------- */

static void ctl_admit(struct mfsd_ctl *ctl, int fd)
{
	struct timeval tv = { .tv_sec = MFSD_CTL_SEND_TIMEOUT };
	struct mfsd_client *c;
	struct ucred cred;
	socklen_t clen = sizeof(cred);
	pthread_attr_t attr;
	pthread_t tid;
	int err;

	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &clen) != 0) {
		mfsd_ctl_error(fd, 0, errno, "cannot tell who you are: %s", strerror(errno));
		goto out_close;
	}
	if (cred.uid != 0 && cred.uid != ctl->owner) {
		mfsd_ctl_error(fd, 0, EACCES, "only root or the user that mounted %s (uid %u) may "
			       "use its control socket; you are uid %u", ctl->mountpoint,
			       (unsigned)ctl->owner, (unsigned)cred.uid);
		goto out_close;
	}
	c = mfs_calloc(1, sizeof(*c));
	if (!c) {
		mfsd_ctl_error(fd, 0, ENOMEM, "out of memory");
		goto out_close;
	}
	c->ctl = ctl;
	c->fd = fd;
	c->pid = cred.pid;
	c->uid = cred.uid;
	c->accepted_ns = mfsd_ctl_now_ns();
	pthread_mutex_lock(&ctl->lock);
	if (ctl->nclients >= MFSD_CTL_MAX_CLIENTS) {
		pthread_mutex_unlock(&ctl->lock);
		mfsd_ctl_error(fd, 0, EBUSY, "too many clients (at most %u at once)",
			       MFSD_CTL_MAX_CLIENTS);
		free(c);
		goto out_close;
	}
	c->next = ctl->clients;
	if (c->next)
		c->next->pprev = &c->next;
	c->pprev = &ctl->clients;
	ctl->clients = c;
	ctl->nclients++;
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	err = pthread_create(&tid, &attr, mfsd_ctl_client_main, c);
	pthread_attr_destroy(&attr);
	if (err) {
		*c->pprev = c->next;
		if (c->next)
			c->next->pprev = c->pprev;
		ctl->nclients--;
		pthread_mutex_unlock(&ctl->lock);
		mfsd_ctl_error(fd, 0, EAGAIN, "cannot start a thread for you: %s", strerror(err));
		free(c);
		goto out_close;
	}
	pthread_mutex_unlock(&ctl->lock);
	return;
out_close:
	close(fd);
}

static void *ctl_acceptor(void *arg)
{
	struct mfsd_ctl *ctl = arg;
	unsigned refused = 0;   /* accept failures in a row (out of descriptors) */

	while (!atomic_load(&ctl->stopping)) {
		struct pollfd p[2] = { { .fd = ctl->lfd, .events = POLLIN },
				       { .fd = ctl->stopfd, .events = POLLIN } };
		int fd;

		if (poll(p, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			mfs_log(MFS_LOG_ERR, "control socket: poll: %s", strerror(errno));
			break;
		}
		if (atomic_load(&ctl->stopping) || (p[1].revents & POLLIN))
			break;
		if (!(p[0].revents & POLLIN))
			continue;
		fd = accept4(ctl->lfd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				/* Out of descriptors: the connection stays queued; look again in
				 * a moment, or at once if we are stopping.  Said once, then every
				 * 100th try (10 s), not ten times a second into the log. */
				if (refused++ % 100 == 0)
					mfs_log(MFS_LOG_WARN, "control socket: accept: %s (%u tries; "
						"clients wait queued)", strerror(errno), refused);
				poll(&p[1], 1, 100);
			}
			continue;
		}
		if (refused)
			mfs_log(MFS_LOG_INFO, "control socket: accepting again after %u refused "
				"tries", refused);
		refused = 0;
		ctl_admit(ctl, fd);
	}
	return NULL;
}

int mfsd_ctl_start(struct mfsd *d)
{
	struct mfsd_ctl *ctl = d->ctl;
	int err;

	if (!ctl)
		return 0;
	err = pthread_create(&ctl->acceptor, NULL, ctl_acceptor, ctl);
	if (err) {
		mfs_log(MFS_LOG_WARN, "cannot start the control socket's thread: %s: online "
			"scrub is unavailable", strerror(err));
		return -err;
	}
	ctl->started = 1;
	return 0;
}

void mfsd_ctl_close(struct mfsd *d)
{
	struct mfsd_ctl *ctl = d->ctl;
	uint64_t one = 1;
	struct stat st;

	if (!ctl)
		return;
	atomic_store(&ctl->stopping, 1);
	if (write(ctl->stopfd, &one, sizeof(one)) < 0)
		mfs_log(MFS_LOG_WARN, "control socket: cannot wake the acceptor: %s",
			strerror(errno));
	if (ctl->started)
		pthread_join(ctl->acceptor, NULL);
	/* Wake every client thread (a blocked read sees end of file, a running check sees
	 * `stopping`) and wait for them all: they use the filesystem. */
	pthread_mutex_lock(&ctl->lock);
	for (struct mfsd_client *c = ctl->clients; c; c = c->next)
		shutdown(c->fd, SHUT_RDWR);
	while (ctl->nclients) {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 5;
		if (pthread_cond_timedwait(&ctl->gone_cond, &ctl->lock, &ts) == ETIMEDOUT)
			mfs_log(MFS_LOG_WARN, "unmount: waiting for %u control client(s) to stop",
				ctl->nclients);
	}
	pthread_mutex_unlock(&ctl->lock);
	if (lstat(ctl->sockpath, &st) == 0 && st.st_dev == ctl->sock_dev &&
	    st.st_ino == ctl->sock_ino)
		unlink(ctl->sockpath);
	d->ctl = NULL;
	ctl_free(ctl);
}

/* ---- the mount's device -------------------------------------------------------------------- */

/*
 * The device of the FUSE mount at `mnt` from /proc/self/mountinfo (the last one there, the
 * top of a stack), never by stat(2): that would be a request to ourselves, which nobody
 * serves once the session loop has ended.  0 or -ENOENT.
 */
static int mountinfo_dev(const char *mnt, dev_t *dev)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	int err = -ENOENT;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		struct mfs_ctl_mountinfo mi;

		if (mfs_ctl_mountinfo_line(line, &mi) == 0 && strncmp(mi.fstype, "fuse", 4) == 0 &&
		    strcmp(mi.mountpoint, mnt) == 0) {
			*dev = makedev(mi.major, mi.minor);
			err = 0;
		}
	}
	free(line);
	fclose(f);
	return err;
}

dev_t mfsd_ctl_mount_dev(struct mfsd_ctl *ctl)
{
	dev_t dev;

	pthread_mutex_lock(&ctl->dev_lock);
	if (!ctl->mnt_dev_known && mountinfo_dev(ctl->mountpoint, &ctl->mnt_dev) == 0)
		ctl->mnt_dev_known = 1;
	dev = ctl->mnt_dev_known ? ctl->mnt_dev : 0;
	pthread_mutex_unlock(&ctl->dev_lock);
	return dev;
}

/* ---- quiesce --------------------------------------------------------------------------------- */

int mfsd_ns_begin(struct mfsd *d)
{
	struct mfsd_ctl *ctl = d->ctl;

	if (!ctl)
		return 0;
	for (int step = 1; step <= NS_WAIT_STEPS; step++) {
		struct timespec ts;
		int err;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += NS_WAIT_STEP;
		err = pthread_rwlock_clockrdlock(&ctl->ns_lock, CLOCK_MONOTONIC, &ts);
		if (!err)
			return 0;
		if (err != ETIMEDOUT)
			return -err;
		mfs_log(MFS_LOG_WARN, "a namespace change has waited %d s for a link count check",
			step * NS_WAIT_STEP);
	}
	return -EAGAIN;
}

void mfsd_ns_end(struct mfsd *d)
{
	if (d->ctl)
		pthread_rwlock_unlock(&d->ctl->ns_lock);
}

int mfsd_ctl_quiesce(struct mfsd_client *c, int on)
{
	struct mfsd_ctl *ctl = c->ctl;

	if (on && !c->quiesced) {
		struct timespec ts;
		int err;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += MFSD_CTL_QUIESCE_WAIT;
		err = pthread_rwlock_clockwrlock(&ctl->ns_lock, CLOCK_MONOTONIC, &ts);
		if (err == ETIMEDOUT) {
			mfs_log(MFS_LOG_WARN, "a check could not stop namespace changes within %d s",
				MFSD_CTL_QUIESCE_WAIT);
			return -EBUSY;
		}
		if (err)
			return -err;
		c->quiesced = 1;
	} else if (!on && c->quiesced) {
		pthread_rwlock_unlock(&ctl->ns_lock);
		c->quiesced = 0;
	}
	return 0;
}
