/*
 * conn.c — the client's side of the control socket: finding it from the mount point
 * alone (lib/mendfs_ctl.h says where the daemon puts it), checking with HELLO that the
 * daemon behind it serves this mount, and one framed request/reply.
 *
 * The reply to each request is waited for a bounded time (MENDFS_SCRUB_REPLY_TIMEOUT
 * seconds, default SCRUB_REPLY_TIMEOUT; 0: no bound), counted from the moment the request
 * starts to go out until the last byte of its reply: the daemon answers every request once,
 * with nothing in between, so a daemon that says nothing for that long is taken as stuck
 * and the connection as broken (a cron job must end): it is shut down at once, so that the
 * daemon sees the hang-up and cancels the request rather than finish it for nobody.
 */
#include "scrub.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

/* Seconds a reply may take (0: no bound); set once, before the first connection. */
static unsigned reply_timeout = SCRUB_REPLY_TIMEOUT;

int scrub_set_reply_timeout(const char *s)
{
	unsigned long v;
	char *end;

	if (!s || !*s)
		return 0;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || end == s || *s == '-' || v > SCRUB_REPLY_TIMEOUT_MAX)
		return -EINVAL;
	reply_timeout = (unsigned)v;
	return 0;
}

static void setmsg(char *msg, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void setmsg(char *msg, size_t len, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, len, fmt, ap);
	va_end(ap);
}

/* The FUSE mount at `mnt` in /proc/self/mountinfo (the top one): is it mendfs, and which
 * user mounted it (the user_id option).  0, -ENOENT (not a mount), -EMEDIUMTYPE. */
static int mount_owner(const char *mnt, long *uid, dev_t *dev)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char *line = NULL;
	size_t cap = 0;
	int err = -ENOENT;

	if (!f)
		return -errno;
	while (getline(&line, &cap, f) > 0) {
		struct mfs_ctl_mountinfo mi;
		char *p;

		if (mfs_ctl_mountinfo_line(line, &mi) != 0 || strcmp(mi.mountpoint, mnt) != 0)
			continue;
		if (strcmp(mi.fstype, "fuse.mendfs") != 0) {
			err = -EMEDIUMTYPE;
			continue;
		}
		err = 0;
		*dev = makedev(mi.major, mi.minor);
		p = strstr(mi.options, "user_id=");
		*uid = p ? strtol(p + 8, NULL, 10) : -1;
	}
	free(line);
	fclose(f);
	return err;
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait until `fd` is ready for `events` or the deadline (ms of now_ms(); -1: none) has
 * passed: 0 or -ETIMEDOUT.  A hang-up or error counts as ready: the call that follows
 * says what it is. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		struct pollfd p = { .fd = fd, .events = events };
		int64_t left = deadline < 0 ? -1 : deadline - now_ms();
		int r;

		if (deadline >= 0 && left <= 0)
			return -ETIMEDOUT;
		r = poll(&p, 1, left < 0 ? -1 : left > 60000 ? 60000 : (int)left);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

static int send_all(int fd, const void *buf, size_t len, int64_t deadline)
{
	const char *p = buf;

	while (len) {
		ssize_t w = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (w < 0) {
			int err = -errno;

			if (err == -EINTR)
				continue;
			if (err == -EAGAIN) {
				err = wait_fd(fd, POLLOUT, deadline);
				if (!err)
					continue;
			}
			return err;
		}
		p += w;
		len -= (size_t)w;
	}
	return 0;
}

static int recv_all(int fd, void *buf, size_t len, int64_t deadline)
{
	char *p = buf;

	while (len) {
		ssize_t r = recv(fd, p, len, MSG_DONTWAIT);

		if (r < 0) {
			int err = -errno;

			if (err == -EINTR)
				continue;
			if (err == -EAGAIN) {
				err = wait_fd(fd, POLLIN, deadline);
				if (!err)
					continue;
			}
			return err;
		}
		if (r == 0)
			return -ECONNRESET;
		p += r;
		len -= (size_t)r;
	}
	return 0;
}

/* The header with descriptors attached to its first byte (SCM_RIGHTS), the rest plainly. */
static int send_hdr_fds(int fd, const void *hdr, size_t len, const int *fds, unsigned nfds,
			int64_t deadline)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * MFS_CTL_MAX_FDS)];
		struct cmsghdr align;
	} u;
	struct iovec iov = { .iov_base = (void *)hdr, .iov_len = 1 };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *cm;
	ssize_t w;

	if (nfds > MFS_CTL_MAX_FDS)
		return -EINVAL;
	memset(&u, 0, sizeof(u));
	mh.msg_control = u.buf;
	mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
	cm = CMSG_FIRSTHDR(&mh);
	cm->cmsg_level = SOL_SOCKET;
	cm->cmsg_type = SCM_RIGHTS;
	cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
	memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	for (;;) {
		int err;

		w = sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w >= 0)
			break;
		err = -errno;
		if (err == -EAGAIN)
			err = wait_fd(fd, POLLOUT, deadline);
		if (err && err != -EINTR)
			return err;
	}
	return send_all(fd, (const char *)hdr + 1, len - 1, deadline);
}

int scrub_rpc(struct scrub_conn *c, uint16_t cmd, const void *req, size_t len,
	      struct scrub_reply *r)
{
	return scrub_rpc_fds(c, cmd, req, len, NULL, 0, r);
}

/* "SCRUB of AG 2 inode btree", "REPAIR of inode 133 extent map", "INODES of AG 1"... */
static void request_name(char *buf, size_t len, uint16_t cmd, const void *req, size_t rlen)
{
	static const char *const names[] = {
		[MFS_CTL_HELLO] = "HELLO", [MFS_CTL_SCRUB] = "SCRUB", [MFS_CTL_INODES] = "INODES",
		[MFS_CTL_CANCEL] = "CANCEL", [MFS_CTL_REPAIR] = "REPAIR",
		[MFS_CTL_SCRUB_BATCH] = "SCRUB_BATCH",
	};
	const char *name = cmd < sizeof(names) / sizeof(names[0]) && names[cmd] ? names[cmd] :
			   "request";
	struct mfs_ctl_scrub_req q;
	struct mfs_ctl_inodes_req iq;

	if ((cmd == MFS_CTL_SCRUB || cmd == MFS_CTL_REPAIR || cmd == MFS_CTL_SCRUB_BATCH) &&
	    rlen >= sizeof(q)) {
		memcpy(&q, req, sizeof(q));
		if (cmd == MFS_CTL_SCRUB_BATCH)
			setmsg(buf, len, "%s of %zu checks from inode %llu", name,
			       rlen / sizeof(q), (unsigned long long)q.ino);
		else if (q.type >= MFS_SCRUB_SB && q.type <= MFS_SCRUB_RMAPBT)
			setmsg(buf, len, "%s of AG %u %s", name, q.agno, scrub_type_name(q.type));
		else if (q.type >= MFS_SCRUB_INODE && q.type <= MFS_SCRUB_SYMLINK)
			setmsg(buf, len, "%s of inode %llu %s", name, (unsigned long long)q.ino,
			       scrub_type_name(q.type));
		else
			setmsg(buf, len, "%s of the %s", name, scrub_type_name(q.type));
	} else if (cmd == MFS_CTL_INODES && rlen >= sizeof(iq)) {
		memcpy(&iq, req, sizeof(iq));
		setmsg(buf, len, "%s of AG %u", name, iq.agno);
	} else {
		setmsg(buf, len, "%s", name);
	}
}

/* The connection is given up (a reply not waited for any longer, or a stream out of step):
 * shut down at once, not at the close when the scrub ends, so that the daemon sees the
 * hang-up now and cancels what it still runs for us (a request nobody waits for). */
static void conn_break(struct scrub_conn *c)
{
	c->broken = 1;
	shutdown(c->fd, SHUT_RDWR);
}

int scrub_rpc_fds(struct scrub_conn *c, uint16_t cmd, const void *req, size_t len,
		  const int *fds, unsigned nfds, struct scrub_reply *r)
{
	struct mfs_ctl_hdr h = { .magic = MFS_CTL_MAGIC,
				 .version = c->version ? c->version : MFS_CTL_VERSION_MIN,
				 .command = cmd, .len = (uint32_t)len,
				 .reqid = ++c->next_reqid };
	int64_t start = now_ms();
	int64_t deadline = reply_timeout ? start + (int64_t)reply_timeout * 1000 : -1;
	struct mfs_ctl_hdr rh;
	uint8_t *buf = NULL;
	int err;

	memset(r, 0, sizeof(*r));
	if (c->broken || c->fd < 0) {
		r->err = EPIPE;
		setmsg(r->msg, sizeof(r->msg), "the connection to the daemon is lost");
		return -EPIPE;
	}
	err = nfds ? send_hdr_fds(c->fd, &h, sizeof(h), fds, nfds, deadline) :
		     send_all(c->fd, &h, sizeof(h), deadline);
	if (!err && len)
		err = send_all(c->fd, req, len, deadline);
	if (!err)
		err = recv_all(c->fd, &rh, sizeof(rh), deadline);
	if (!err && (rh.magic != MFS_CTL_MAGIC || rh.version != h.version ||
		     rh.len > MFS_CTL_MAX_REPLY || rh.reqid != h.reqid ||
		     (rh.command != (cmd | MFS_CTL_REPLY) && rh.command != MFS_CTL_ERROR)))
		err = -EPROTO;
	if (!err && rh.len) {
		buf = malloc(rh.len + 1);
		err = buf ? recv_all(c->fd, buf, rh.len, deadline) : -ENOMEM;
	}
	if (err == -ETIMEDOUT) {
		char what[200];

		request_name(what, sizeof(what), cmd, req, len);
		free(buf);
		conn_break(c);
		r->err = ETIMEDOUT;
		setmsg(r->msg, sizeof(r->msg), "the daemon of %s sent no reply to %s within %.1f s "
		       "(MENDFS_SCRUB_REPLY_TIMEOUT=%u): it looks stuck; giving up",
		       c->mnt ? c->mnt : "this mount", what, (double)(now_ms() - start) / 1000.0,
		       reply_timeout);
		return err;
	}
	if (err) {
		free(buf);
		conn_break(c);
		r->err = -err;
		setmsg(r->msg, sizeof(r->msg), "talking to the daemon: %s", err == -EPROTO ?
		       "malformed reply" : err == -ECONNRESET ? "the daemon closed the connection"
		       : strerror(-err));
		return err;
	}
	if (rh.command == MFS_CTL_ERROR) {
		struct mfs_ctl_error e = { .error = EPROTO };
		size_t tl = 0;

		if (rh.len >= sizeof(e)) {
			memcpy(&e, buf, sizeof(e));
			tl = rh.len - sizeof(e);
		}
		r->err = e.error > 0 ? e.error : EPROTO;
		setmsg(r->msg, sizeof(r->msg), "%.*s", (int)(tl < 512 ? tl : 512),
		       buf ? (char *)buf + sizeof(e) : "");
		free(buf);
		return -r->err;
	}
	r->buf = buf;
	r->len = rh.len;
	return 0;
}

void scrub_disconnect(struct scrub_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
}

/* Connect to `path` and HELLO; the reply must name `mnt` (when given) and come with a
 * device equal to `dev`. */
static int try_socket(const char *path, const char *mnt, const char *name, dev_t dev,
		      unsigned flags, struct scrub_conn *c, struct scrub_fsinfo *info, char *msg,
		      size_t msglen)
{
	struct mfs_ctl_hello_req hq = { .flags = flags };
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	const char *env;
	struct scrub_reply r;
	int err;

	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	strcpy(sa.sun_path, path);
	memset(c, 0, sizeof(*c));
	c->mnt = name;
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		return -errno;
	/* A daemon that accepts nothing (stopped) leaves a connect waiting once its backlog is
	 * full: bounded by the reply timeout (SO_SNDTIMEO: a connect then fails with EAGAIN;
	 * the requests send without waiting, so it bounds nothing else). */
	if (reply_timeout) {
		struct timeval tv = { .tv_sec = (time_t)reply_timeout };

		setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	}
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		err = -errno;
		if (err == -EAGAIN)
			setmsg(msg, msglen, "%s: the daemon of %s accepted no connection within "
			       "%u s (MENDFS_SCRUB_REPLY_TIMEOUT=%u): it looks stuck; giving up",
			       path, name ? name : "this mount", reply_timeout, reply_timeout);
		else
			setmsg(msg, msglen, "cannot connect to %s: %s%s", path, strerror(-err),
			       err == -ECONNREFUSED ? ": is the daemon of this mount running?" : "");
		scrub_disconnect(c);
		return err;
	}
	err = scrub_rpc(c, MFS_CTL_HELLO, &hq, sizeof(hq), &r);
	if (err) {
		setmsg(msg, msglen, "%s: %s", path, r.msg);
		scrub_disconnect(c);
		return err;
	}
	if (r.len < sizeof(info->h)) {
		err = -EPROTO;
	} else {
		memcpy(&info->h, r.buf, sizeof(info->h));
		if (info->h.mntlen != r.len - sizeof(info->h))
			err = -EPROTO;
		else if (mnt && (strlen(mnt) != info->h.mntlen ||
				 memcmp(mnt, r.buf + sizeof(info->h), info->h.mntlen) != 0))
			err = -ESTALE;
		else if (info->h.dev != (uint64_t)dev)
			err = -ESTALE;
	}
	free(r.buf);
	if (err) {
		setmsg(msg, msglen, "%s answers for another mount (or an older one)", path);
		scrub_disconnect(c);
		return err;
	}
	snprintf(info->sockpath, sizeof(info->sockpath), "%s", path);
	/* HELLO went as version 1, which every daemon serves; now the newest both speak. */
	c->version = info->h.version >= MFS_CTL_VERSION ? MFS_CTL_VERSION :
		     info->h.version > MFS_CTL_VERSION_MIN ? (uint16_t)info->h.version :
		     MFS_CTL_VERSION_MIN;
	c->max_batch = c->version == 1 ? MFS_CTL_MAX_BATCH_V1 : MFS_CTL_MAX_BATCH;
	/* For tests: MENDFS_SCRUB_MAX_BATCH=N (1 or more) sends at most N checks a round
	 * trip, as to a daemon that took no more. */
	env = getenv("MENDFS_SCRUB_MAX_BATCH");
	if (env && strtoul(env, NULL, 10) >= 1 && strtoul(env, NULL, 10) < c->max_batch)
		c->max_batch = (unsigned)strtoul(env, NULL, 10);
	return 0;
}

int scrub_connect(const char *mnt, unsigned hello_flags, struct scrub_conn *c,
		  struct scrub_fsinfo *info, char *msg, size_t msglen)
{
	char name[MFS_CTL_SOCK_NAME_LEN], dirs[2][PATH_MAX], path[2 * PATH_MAX + 32];
	const char *env = getenv(MFS_CTL_RUNDIR_ENV);
	dev_t mdev = 0;
	long uid = -1;
	int ndirs = 0, err;

	/*
	 * The mount's device number from mountinfo, never stat(mnt): that is a request to the
	 * daemon, waited for without bound (a stopped daemon), and one it may fail (a root
	 * directory it cannot load must not keep the scrub from reaching it and saying why).
	 * It is the st_dev a stat would give, and what the daemon's HELLO reply holds.
	 */
	err = mount_owner(mnt, &uid, &mdev);
	if (err) {
		setmsg(msg, msglen, "%s is not %s", mnt, err == -EMEDIUMTYPE ?
		       "a mendfs filesystem" : "a mount point of a mendfs filesystem");
		return err;
	}
	if (env && *env) {
		snprintf(dirs[ndirs++], PATH_MAX, "%s", env);
	} else {
		snprintf(dirs[ndirs++], PATH_MAX, "%s", MFS_CTL_RUNDIR);
		if (uid > 0)
			snprintf(dirs[ndirs++], PATH_MAX, "/run/user/%ld/mendfs", uid);
	}
	mfs_ctl_sock_name(mnt, name);
	err = -ENOENT;
	setmsg(msg, msglen, "no control socket for %s (looked in %s%s%s): is its daemon "
	       "running?", mnt, dirs[0], ndirs > 1 ? " and " : "", ndirs > 1 ? dirs[1] : "");
	for (int i = 0; i < ndirs; i++) {
		char why[600];

		int n = snprintf(path, sizeof(path), "%s/%s", dirs[i], name);

		if (n < 0 || (size_t)n >= sizeof(path) || access(path, F_OK) != 0)
			continue;
		err = try_socket(path, mnt, mnt, mdev, hello_flags, c, info, why, sizeof(why));
		if (!err)
			return 0;
		setmsg(msg, msglen, "%s", why);
	}
	return err;
}

int scrub_reconnect(const struct scrub_fsinfo *info, const char *mnt, unsigned hello_flags,
		    struct scrub_conn *c, char *msg, size_t msglen)
{
	struct scrub_fsinfo again;

	return try_socket(info->sockpath, NULL, mnt, (dev_t)info->h.dev, hello_flags, c,
			  &again, msg, msglen);
}
