/*
 * ctl_conn.c — one client connection of the control socket: reading a framed message and
 * the descriptors that come with it, answering, dispatching to the commands, and telling a
 * running check that its client has gone or cancelled it.
 *
 * Invariant: every message that arrives gets exactly one answer (a reply or an error),
 * unless the peer is gone; a message whose framing cannot be trusted (bad magic, version,
 * length, or cut short) is answered and then the connection is closed.  Every descriptor
 * received is closed before the next message is read.
 */
#include "ctl_int.h"

#include "log.h"
#include "mem.h"
#include "scrub.h"

#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

/* ---- sending ------------------------------------------------------------------------------- */

/*
 * The protocol version replies go out with: the version of the request being answered
 * (lib/mendfs_ctl.h, "Versions"), set by read_msg once a header is accepted; before that
 * (an error about the header itself, the acceptor's refusals) the oldest.  Per thread: a
 * connection is served by one thread, and a thread serves one connection.
 */
static __thread uint16_t reply_version = MFS_CTL_VERSION_MIN;

static int send_all(int fd, struct iovec *iov, int n)
{
	while (n > 0) {
		struct msghdr mh = { .msg_iov = iov, .msg_iovlen = (size_t)n };
		ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (char *)iov->iov_base + w;
			iov->iov_len -= (size_t)w;
		}
	}
	return 0;
}

static int send_msg(int fd, uint16_t cmd, uint64_t reqid, const void *p1, size_t n1,
		    const void *p2, size_t n2)
{
	struct mfs_ctl_hdr h = {
		.magic = MFS_CTL_MAGIC, .version = reply_version, .command = cmd,
		.len = (uint32_t)(n1 + n2), .reqid = reqid,
	};
	struct iovec iov[3] = {
		{ &h, sizeof(h) }, { (void *)p1, n1 }, { (void *)p2, n2 },
	};

	return send_all(fd, iov, 3);
}

int mfsd_ctl_reply(struct mfsd_client *c, const struct mfs_ctl_hdr *req, const void *p1,
		   size_t n1, const void *p2, size_t n2)
{
	return send_msg(c->fd, (uint16_t)(req->command | MFS_CTL_REPLY), req->reqid, p1, n1,
			p2, n2);
}

int mfsd_ctl_error(int fd, uint64_t reqid, int err, const char *fmt, ...)
{
	struct mfs_ctl_error e = { .error = err };
	char text[512];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(text))
		n = sizeof(text) - 1;
	return send_msg(fd, MFS_CTL_ERROR, reqid, &e, sizeof(e), text, (size_t)n);
}

/* ---- receiving ------------------------------------------------------------------------------ */

static void close_fds(struct mfsd_msg *m)
{
	for (unsigned i = 0; i < m->nfds; i++)
		close(m->fds[i]);
	m->nfds = 0;
	m->fds_overflow = 0;
}

/* Keep the descriptors of a control message (at most MFS_CTL_MAX_FDS; the rest closed). */
static void take_fds(struct mfsd_msg *m, struct msghdr *mh)
{
	if (mh->msg_flags & MSG_CTRUNC)
		m->fds_overflow = 1;
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(mh); cm; cm = CMSG_NXTHDR(mh, cm)) {
		size_t n;

		if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
			continue;
		n = (cm->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(cm) + i * sizeof(int), sizeof(int));
			if (m->nfds < MFS_CTL_MAX_FDS) {
				m->fds[m->nfds++] = fd;
			} else {
				close(fd);
				m->fds_overflow = 1;
			}
		}
	}
}

uint64_t mfsd_ctl_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * When the message being read must be whole: `first_by` the connection's bound on its first
 * request (0: none, or met), `rest_by` MFSD_CTL_MSG_TIMEOUT after the message's first byte
 * (0: no byte of it yet).  Absolute times of mfsd_ctl_now_ns(): a client that trickles a
 * byte at a time cannot stretch either.
 */
struct msg_clock {
	uint64_t first_by, rest_by;
};

/* The poll timeout (ms) the clock leaves: -1 for none, 0 when a bound has passed. */
static int clock_left_ms(const struct msg_clock *k)
{
	uint64_t by = k->first_by, now;

	if (k->rest_by && (!by || k->rest_by < by))
		by = k->rest_by;
	if (!by)
		return -1;
	now = mfsd_ctl_now_ns();
	if (now >= by)
		return 0;
	/* rounded up: a poll that ends early would be taken for a timeout */
	return (int)((by - now + 999999u) / 1000000u);
}

/*
 * Read exactly `len` bytes into buf.  The first byte of a message may be waited for without
 * end (an idle client between requests) but not past the connection's first-request bound
 * or a shutdown; the rest must come within the bounds of `k` (its first byte starts
 * k->rest_by).  Returns the bytes read (less than len: end of file), or -errno
 * (-ETIMEDOUT, -ESHUTDOWN).
 */
static ssize_t recv_exact(struct mfsd_client *c, void *buf, size_t len, struct msg_clock *k)
{
	union {
		char buf[CMSG_SPACE(sizeof(int) * 16)];
		struct cmsghdr align;
	} cbuf;
	size_t got = 0;

	while (got < len) {
		struct pollfd p[2] = { { .fd = c->fd, .events = POLLIN },
				       { .fd = c->ctl->stopfd, .events = POLLIN } };
		struct iovec iov = { (char *)buf + got, len - got };
		struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
				     .msg_control = cbuf.buf, .msg_controllen = sizeof(cbuf.buf) };
		int left = clock_left_ms(k), r = left == 0 ? 0 : poll(p, 2, left);
		ssize_t n;

		if (r < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (atomic_load(&c->ctl->stopping))
			return -ESHUTDOWN;
		if (r == 0) {
			if (clock_left_ms(k) != 0)
				continue;       /* woken early (the coarse clock) */
			return -ETIMEDOUT;
		}
		n = recvmsg(c->fd, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR || errno == EAGAIN)
				continue;
			return -errno;
		}
		take_fds(&c->msg, &mh);
		if (n == 0)
			break;
		if (!k->rest_by)
			k->rest_by = mfsd_ctl_now_ns() + MFSD_CTL_MSG_TIMEOUT * 1000000ull;
		got += (size_t)n;
	}
	return (ssize_t)got;
}

/* A connection that sent no whole request within ctl->first_ms of connecting: told why; the
 * first such one is logged, the others not (a client looping on it must not fill the log). */
static void first_timeout(struct mfsd_client *c, int partial)
{
	unsigned secs = (c->ctl->first_ms + 999u) / 1000u;

	mfsd_ctl_error(c->fd, 0, ETIMEDOUT, "no whole request within %u s of connecting (%s): "
		       "closed", secs, partial ? "part of a message came" : "nothing came");
	if (!atomic_exchange(&c->ctl->first_said, 1))
		mfs_log(MFS_LOG_WARN, "control socket: closing connections that send no whole "
			"request within %u s of connecting (said once; the first is pid %d's)",
			secs, (int)c->pid);
}

/* Read one message into c->msg.  0: one is there; 1: the client closed between messages;
 * < 0: the connection must end (the client was told why when it could be). */
static int read_msg(struct mfsd_client *c)
{
	struct mfsd_msg *m = &c->msg;
	struct mfs_ctl_hdr *h = &m->hdr;
	struct msg_clock k = { 0, 0 };
	uint32_t limit;
	ssize_t n;

	if (!c->served && c->ctl->first_ms)
		k.first_by = c->accepted_ns + c->ctl->first_ms * 1000000ull;
	reply_version = MFS_CTL_VERSION_MIN;
	n = recv_exact(c, h, sizeof(*h), &k);
	if (n == 0)
		return 1;
	if (n == -ESHUTDOWN)
		return (int)n;
	if (n == -ETIMEDOUT && k.first_by && mfsd_ctl_now_ns() >= k.first_by) {
		first_timeout(c, k.rest_by != 0);
		return (int)n;
	}
	if (n < 0 || (size_t)n < sizeof(*h)) {
		if (n == -ETIMEDOUT || n >= 0)
			mfsd_ctl_error(c->fd, 0, EPROTO, "truncated header: %zd of %zu bytes%s",
				       n < 0 ? (ssize_t)0 : n, sizeof(*h),
				       n < 0 ? " before the time limit" : "");
		return n < 0 ? (int)n : -EPROTO;
	}
	if (h->magic != MFS_CTL_MAGIC) {
		mfsd_ctl_error(c->fd, 0, EPROTO, "bad magic 0x%08x (expected 0x%08x): not a "
			       "mendfs control message", h->magic, MFS_CTL_MAGIC);
		return -EPROTO;
	}
	if (h->version < MFS_CTL_VERSION_MIN || h->version > MFS_CTL_VERSION) {
		mfsd_ctl_error(c->fd, h->reqid, EPROTONOSUPPORT, "protocol version %u is not "
			       "supported (this daemon speaks %u to %u)", h->version,
			       MFS_CTL_VERSION_MIN, MFS_CTL_VERSION);
		return -EPROTONOSUPPORT;
	}
	reply_version = h->version;
	limit = h->version == 1 ? MFS_CTL_MAX_REQUEST_V1 : MFS_CTL_MAX_REQUEST;
	if (h->len > limit) {
		mfsd_ctl_error(c->fd, h->reqid, EMSGSIZE, "payload of %u bytes is over the limit "
			       "of %u (protocol version %u)", h->len, limit, h->version);
		return -EMSGSIZE;
	}
	if (h->len) {
		n = recv_exact(c, m->payload, h->len, &k);
		if (n == -ESHUTDOWN)
			return (int)n;
		if (n == -ETIMEDOUT && k.first_by && mfsd_ctl_now_ns() >= k.first_by) {
			first_timeout(c, 1);
			return (int)n;
		}
		if (n < 0 || (size_t)n < h->len) {
			mfsd_ctl_error(c->fd, h->reqid, EPROTO, "truncated message: %zd of %u "
				       "payload bytes", n < 0 ? (ssize_t)0 : n, h->len);
			return -EPROTO;
		}
	}
	c->served = 1;
	return 0;
}

/* ---- cancellation ---------------------------------------------------------------------------- */

/*
 * Called often by a running check: looks at the socket at most every 20 ms.  A hang-up or
 * error means the client is gone; a CANCEL message waiting (peeked, left in the socket to
 * be answered after the request) for this request or for any stops it.
 */
int mfsd_ctl_cancelled(struct mfsd_client *c)
{
	struct { struct mfs_ctl_hdr h; struct mfs_ctl_cancel_req r; } peek;
	struct pollfd p = { .fd = c->fd, .events = POLLIN | POLLRDHUP };
	uint64_t t;
	ssize_t n;

	if (atomic_load(&c->ctl->stopping) || c->peer_gone || c->cancel_seen)
		return 1;
	t = mfsd_ctl_now_ns();
	if (t - c->last_poll_ns < 20000000u)
		return 0;
	c->last_poll_ns = t;
	if (poll(&p, 1, 0) <= 0)
		return 0;
	if (p.revents & (POLLHUP | POLLERR | POLLRDHUP)) {
		c->peer_gone = 1;
		return 1;
	}
	n = recv(c->fd, &peek, sizeof(peek), MSG_PEEK | MSG_DONTWAIT);
	if (n == 0) {
		c->peer_gone = 1;
		return 1;
	}
	if (n == (ssize_t)sizeof(peek) && peek.h.magic == MFS_CTL_MAGIC &&
	    peek.h.command == MFS_CTL_CANCEL && peek.h.len == sizeof(peek.r) &&
	    (peek.r.reqid == 0 || peek.r.reqid == c->running)) {
		c->cancel_seen = 1;
		return 1;
	}
	return 0;
}

static int do_cancel(struct mfsd_client *c)
{
	struct mfs_ctl_cancel_reply r = { .cancelled = (uint32_t)c->cancel_seen };

	if (c->msg.hdr.len != sizeof(struct mfs_ctl_cancel_req))
		return mfsd_ctl_error(c->fd, c->msg.hdr.reqid, EINVAL, "CANCEL takes %zu bytes, "
				      "not %u", sizeof(struct mfs_ctl_cancel_req), c->msg.hdr.len);
	c->cancel_seen = 0;
	return mfsd_ctl_reply(c, &c->msg.hdr, &r, sizeof(r), NULL, 0);
}

/* ---- the connection's thread ------------------------------------------------------------------ */

static int dispatch(struct mfsd_client *c)
{
	struct mfs_ctl_hdr *h = &c->msg.hdr;

	if (c->msg.fds_overflow)
		return mfsd_ctl_error(c->fd, h->reqid, E2BIG, "too many descriptors (at most %u "
				      "with one request)", MFS_CTL_MAX_FDS);
	if (c->msg.nfds && h->command != MFS_CTL_REPAIR)
		return mfsd_ctl_error(c->fd, h->reqid, EINVAL, "descriptors come only with "
				      "REPAIR, not with command %u", h->command);
	if (h->flags)
		return mfsd_ctl_error(c->fd, h->reqid, EINVAL, "unknown header flags 0x%x",
				      h->flags);
	c->running = h->reqid;
	c->peer_gone = 0;
	switch (h->command) {
	case MFS_CTL_HELLO:
		return mfsd_ctl_hello(c);
	case MFS_CTL_SCRUB:
		return mfsd_ctl_scrub(c);
	case MFS_CTL_INODES:
		return mfsd_ctl_inodes(c);
	case MFS_CTL_CANCEL:
		return do_cancel(c);
	case MFS_CTL_REPAIR:
		return mfsd_ctl_repair(c);
	case MFS_CTL_SCRUB_BATCH:
		return mfsd_ctl_scrub_batch(c);
	}
	return mfsd_ctl_error(c->fd, h->reqid, EBADRQC, "unknown command %u", h->command);
}

void *mfsd_ctl_client_main(void *arg)
{
	struct mfsd_client *c = arg;
	struct mfsd_ctl *ctl = c->ctl;

	for (;;) {
		int err = read_msg(c);

		if (err == 0) {
			err = dispatch(c);
			if (c->quiesced) {
				mfs_log(MFS_LOG_ERR, "control: a check left namespace changes held "
					"back; released");
				mfsd_ctl_quiesce(c, 0);
			}
		}
		close_fds(&c->msg);
		if (err || c->peer_gone)
			break;
	}
	/* Off the list before the descriptor is closed: mfsd_ctl_close shuts down the
	 * descriptors of listed clients, and a closed number may be reused. */
	pthread_mutex_lock(&ctl->lock);
	*c->pprev = c->next;
	if (c->next)
		c->next->pprev = c->pprev;
	ctl->nclients--;
	/* Nobody scrubs: the census's memory goes back — before the count is seen at zero
	 * (mfsd_ctl_close frees the census then) and before another client is admitted. */
	if (ctl->nclients == 0)
		mfs_scrub_census_drop(ctl->census);
	pthread_cond_broadcast(&ctl->gone_cond);
	pthread_mutex_unlock(&ctl->lock);
	close(c->fd);
	mfs_scrub_memo_free(c->memo);
	free(c);
	return NULL;
}
