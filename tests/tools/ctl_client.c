/*
 * ctl_client.c — a raw client of the mendfs control socket for tests: sends one
 * well-formed or deliberately malformed message and prints what came back.
 *
 *   ctl_client MOUNTPOINT CASE [ARG]
 *
 * The socket is found as mendfs_scrub finds it ($MENDFS_RUNDIR or /run/mendfs, named after
 * the canonical mount point).  Prints one line per reply: "reply CMD LEN" or
 * "error NAME: message" (NAME as strerrorname_np gives it), then "closed" if the daemon
 * ended the connection.  Exit 0 when a reply of either kind came, 1 when none did, 2 for a
 * usage error.  CASEs: hello, truncated-header, bad-magic, bad-version, huge-length,
 * unknown-command (then a HELLO on the same connection), short-payload, truncated-payload,
 * garbage, bad-type, bad-agno, bad-ino, bad-flags, bad-batch, batch, idle (HELLO, then wait
 * up to 60 s for the daemon to close the connection), inodes, cancel, cancel-running (a link
 * count check with a CANCEL behind it), hangup-running (the same, write side shut instead),
 * fd-pipe, fd-readonly,
 * fd-self FILE (a file on the mendfs itself), fd-sealed, fd-append (open O_APPEND),
 * fd-too-many, fd-none, fd-with-hello,
 * fd-good (a type without a rebuilder), scrub TYPE:AGNO:INO, repair TYPE:AGNO:INO (one
 * memfd as scratch).  Requests go as protocol version MFS_CTL_VERSION, except in the
 * version cases: hello-v1, batch-v1-max / batch-v1-over (128 / 129 probes as version 1),
 * batch-max / batch-over (MFS_CTL_MAX_BATCH probes, and one more), huge-v1 / huge-v2 (a
 * length one over each version's request limit).  A reply line ends with the version of
 * its header ("v2"); a HELLO reply's also says the version the daemon speaks.
 */
#include "mendfs_ctl.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static int sock;

static int connect_to(const char *mnt)
{
	const char *dir = getenv(MFS_CTL_RUNDIR_ENV);
	char name[MFS_CTL_SOCK_NAME_LEN], *canon = realpath(mnt, NULL);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	if (!canon) {
		perror(mnt);
		return -1;
	}
	mfs_ctl_sock_name(canon, name);
	free(canon);
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/%s", dir && *dir ? dir : MFS_CTL_RUNDIR,
		 name);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
		perror(sa.sun_path);
		return -1;
	}
	return fd;
}

/* Send bytes, with descriptors on the first byte. */
static void send_raw(const void *buf, size_t len, const int *fds, unsigned nfds)
{
	union {
		char b[CMSG_SPACE(sizeof(int) * 8)];
		struct cmsghdr align;
	} cbuf;
	struct iovec iov = { (void *)buf, len };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (nfds) {
		struct cmsghdr *cm;

		memset(&cbuf, 0, sizeof(cbuf));
		mh.msg_control = cbuf.b;
		mh.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
		cm = CMSG_FIRSTHDR(&mh);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
		memcpy(CMSG_DATA(cm), fds, sizeof(int) * nfds);
	}
	if (sendmsg(sock, &mh, MSG_NOSIGNAL) != (ssize_t)len)
		perror("sendmsg");
}

static void send_msg(uint32_t magic, uint16_t version, uint16_t cmd, uint32_t len,
		     const void *payload, size_t plen, const int *fds, unsigned nfds)
{
	uint8_t buf[sizeof(struct mfs_ctl_hdr) + 256];
	struct mfs_ctl_hdr h = { .magic = magic, .version = version, .command = cmd,
				 .len = len, .reqid = 42 };

	memcpy(buf, &h, sizeof(h));
	if (plen > 256)
		plen = 256;
	if (plen)
		memcpy(buf + sizeof(h), payload, plen);
	send_raw(buf, sizeof(h) + plen, fds, nfds);
}

static void send_req(uint16_t cmd, const void *payload, size_t plen, const int *fds,
		     unsigned nfds)
{
	send_msg(MFS_CTL_MAGIC, MFS_CTL_VERSION, cmd, (uint32_t)plen, payload, plen, fds, nfds);
}

static int read_full(void *buf, size_t len)
{
	char *p = buf;

	while (len) {
		struct pollfd pfd = { .fd = sock, .events = POLLIN };
		ssize_t n;

		if (poll(&pfd, 1, 20000) <= 0)
			return -ETIMEDOUT;
		n = recv(sock, p, len, 0);
		if (n <= 0)
			return n == 0 ? -ECONNRESET : -errno;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read and print one reply; 1 if one came. */
static int show_reply(void)
{
	struct mfs_ctl_hdr h;
	uint8_t *buf;

	if (read_full(&h, sizeof(h)) != 0) {
		printf("closed\n");
		return 0;
	}
	if (h.magic != MFS_CTL_MAGIC || h.len > MFS_CTL_MAX_REPLY) {
		printf("bad reply header\n");
		return 0;
	}
	buf = calloc(1, h.len + 1);
	if (!buf || read_full(buf, h.len) != 0) {
		printf("short reply\n");
		free(buf);
		return 0;
	}
	if (h.command == MFS_CTL_ERROR && h.len >= sizeof(struct mfs_ctl_error)) {
		struct mfs_ctl_error e;
		const char *nm;

		memcpy(&e, buf, sizeof(e));
		nm = strerrorname_np(e.error);
		printf("error %s: %s\n", nm ? nm : "?", (char *)buf + sizeof(e));
	} else {
		printf("reply %u %u", h.command & ~MFS_CTL_REPLY, h.len);
		if (h.command == (MFS_CTL_HELLO | MFS_CTL_REPLY) &&
		    h.len >= sizeof(struct mfs_ctl_hello_reply)) {
			struct mfs_ctl_hello_reply r;

			memcpy(&r, buf, sizeof(r));
			printf(" speaks %u", r.version);
		}
		if ((h.command == (MFS_CTL_SCRUB | MFS_CTL_REPLY) ||
		     h.command == (MFS_CTL_REPAIR | MFS_CTL_REPLY)) &&
		    h.len >= sizeof(struct mfs_ctl_scrub_reply)) {
			struct mfs_ctl_scrub_reply r;

			memcpy(&r, buf, sizeof(r));
			printf(" oflags 0x%x error %d findings %u", r.oflags, r.error, r.nfindings);
		}
		if (h.command == (MFS_CTL_CANCEL | MFS_CTL_REPLY) &&
		    h.len >= sizeof(struct mfs_ctl_cancel_reply)) {
			struct mfs_ctl_cancel_reply r;

			memcpy(&r, buf, sizeof(r));
			printf(" cancelled %u", r.cancelled);
		}
		printf(" v%u\n", h.version);
	}
	free(buf);
	return 1;
}

/* After a reply that ends the connection: is it closed? */
static void show_closed(void)
{
	char c;
	struct pollfd pfd = { .fd = sock, .events = POLLIN };

	ssize_t n;

	/* End of file, or a reset when the daemon closed with our bytes unread. */
	if (poll(&pfd, 1, 5000) > 0 &&
	    ((n = recv(sock, &c, 1, 0)) == 0 || (n < 0 && errno == ECONNRESET)))
		printf("closed\n");
}

/* A SCRUB_BATCH of n probes as protocol `version`, whole (the payload can be large). */
static void send_probes(uint16_t version, unsigned n)
{
	struct mfs_ctl_hdr h = { .magic = MFS_CTL_MAGIC, .version = version,
				 .command = MFS_CTL_SCRUB_BATCH,
				 .len = n * (uint32_t)sizeof(struct mfs_ctl_scrub_req), .reqid = 42 };
	size_t len = sizeof(h) + h.len, off = 0;
	uint8_t *buf = calloc(1, len);        /* zeroes: n PROBE requests */

	if (!buf) {
		perror("calloc");
		return;
	}
	memcpy(buf, &h, sizeof(h));
	while (off < len) {
		ssize_t w = send(sock, buf + off, len - off, MSG_NOSIGNAL);

		if (w <= 0) {
			perror("send");
			break;
		}
		off += (size_t)w;
	}
	free(buf);
}

static int memfd(unsigned seals)
{
	int fd = memfd_create("ctl_client", MFD_CLOEXEC | MFD_ALLOW_SEALING);

	if (fd >= 0 && seals)
		fcntl(fd, F_ADD_SEALS, seals);
	return fd;
}

int main(int argc, char **argv)
{
	struct mfs_ctl_hello_req hq = { 0 };
	struct mfs_ctl_scrub_req sq = { .type = MFS_SCRUB_SB };
	const char *c;
	int got, fds[4];

	if (argc < 3) {
		fprintf(stderr, "usage: ctl_client MOUNTPOINT CASE [ARG]\n");
		return 2;
	}
	sock = connect_to(argv[1]);
	if (sock < 0)
		return 1;
	c = argv[2];
	if (!strcmp(c, "hello")) {
		send_req(MFS_CTL_HELLO, &hq, sizeof(hq), NULL, 0);
	} else if (!strcmp(c, "truncated-header")) {
		send_raw("MCTL\x01\x00\x01\x00\x00\x00", 10, NULL, 0);
		shutdown(sock, SHUT_WR);
	} else if (!strcmp(c, "bad-magic")) {
		send_msg(0xdeadbeef, MFS_CTL_VERSION, MFS_CTL_HELLO, sizeof(hq), &hq, sizeof(hq),
			 NULL, 0);
	} else if (!strcmp(c, "bad-version")) {
		send_msg(MFS_CTL_MAGIC, 99, MFS_CTL_HELLO, sizeof(hq), &hq, sizeof(hq), NULL, 0);
	} else if (!strcmp(c, "huge-length")) {
		send_msg(MFS_CTL_MAGIC, MFS_CTL_VERSION, MFS_CTL_SCRUB, 0xfffffff0u, NULL, 0,
			 NULL, 0);
	} else if (!strcmp(c, "hello-v1")) {
		send_msg(MFS_CTL_MAGIC, 1, MFS_CTL_HELLO, sizeof(hq), &hq, sizeof(hq), NULL, 0);
	} else if (!strcmp(c, "batch-v1-max") || !strcmp(c, "batch-v1-over")) {
		send_probes(1, MFS_CTL_MAX_BATCH_V1 + !strcmp(c, "batch-v1-over"));
	} else if (!strcmp(c, "batch-max") || !strcmp(c, "batch-over")) {
		send_probes(MFS_CTL_VERSION, MFS_CTL_MAX_BATCH + !strcmp(c, "batch-over"));
	} else if (!strcmp(c, "huge-v1")) {
		send_msg(MFS_CTL_MAGIC, 1, MFS_CTL_SCRUB_BATCH, MFS_CTL_MAX_REQUEST_V1 + 1, NULL, 0,
			 NULL, 0);
	} else if (!strcmp(c, "huge-v2")) {
		send_msg(MFS_CTL_MAGIC, 2, MFS_CTL_SCRUB_BATCH, MFS_CTL_MAX_REQUEST + 1, NULL, 0,
			 NULL, 0);
	} else if (!strcmp(c, "unknown-command")) {
		send_req(77, NULL, 0, NULL, 0);
		got = show_reply();
		send_req(MFS_CTL_HELLO, &hq, sizeof(hq), NULL, 0);   /* still served? */
		return show_reply() && got ? 0 : 1;
	} else if (!strcmp(c, "short-payload")) {
		send_req(MFS_CTL_SCRUB, &sq, 4, NULL, 0);
	} else if (!strcmp(c, "truncated-payload")) {
		send_msg(MFS_CTL_MAGIC, MFS_CTL_VERSION, MFS_CTL_SCRUB, sizeof(sq), &sq, 8, NULL, 0);
		shutdown(sock, SHUT_WR);
	} else if (!strcmp(c, "garbage")) {
		char junk[4096];

		for (size_t i = 0; i < sizeof(junk); i++)
			junk[i] = (char)(i * 131 + 7);
		send_raw(junk, sizeof(junk), NULL, 0);
	} else if (!strcmp(c, "bad-type")) {
		sq.type = 999;
		send_req(MFS_CTL_SCRUB, &sq, sizeof(sq), NULL, 0);
	} else if (!strcmp(c, "bad-agno")) {
		sq.agno = 1000000;
		send_req(MFS_CTL_SCRUB, &sq, sizeof(sq), NULL, 0);
	} else if (!strcmp(c, "bad-ino")) {
		sq.type = MFS_SCRUB_INODE;
		sq.ino = 1;
		send_req(MFS_CTL_SCRUB, &sq, sizeof(sq), NULL, 0);
	} else if (!strcmp(c, "bad-flags")) {
		sq.flags = 0x80;
		send_req(MFS_CTL_SCRUB, &sq, sizeof(sq), NULL, 0);
	} else if (!strcmp(c, "idle")) {
		/* HELLO, then stay connected until the daemon closes (its unmount). */
		struct pollfd pfd = { .fd = sock, .events = POLLIN };
		char byte;

		send_req(MFS_CTL_HELLO, &hq, sizeof(hq), NULL, 0);
		if (!show_reply())
			return 1;
		fflush(stdout);
		if (poll(&pfd, 1, 60000) == 1 && recv(sock, &byte, 1, 0) <= 0) {
			printf("closed\n");
			return 0;
		}
		return 1;
	} else if (!strcmp(c, "bad-batch")) {
		uint8_t odd[sizeof(sq) + 1] = { 0 };

		send_req(MFS_CTL_SCRUB_BATCH, odd, sizeof(odd), NULL, 0);
	} else if (!strcmp(c, "batch")) {
		struct mfs_ctl_scrub_req two[2] = { { .type = MFS_SCRUB_SB },
						    { .type = MFS_SCRUB_AGH, .agno = 1 } };

		send_req(MFS_CTL_SCRUB_BATCH, two, sizeof(two), NULL, 0);
	} else if (!strcmp(c, "inodes")) {
		struct mfs_ctl_inodes_req iq = { .agno = 0, .max = 16 };

		send_req(MFS_CTL_INODES, &iq, sizeof(iq), NULL, 0);
	} else if (!strcmp(c, "cancel")) {
		struct mfs_ctl_cancel_req cq = { 0 };

		send_req(MFS_CTL_CANCEL, &cq, sizeof(cq), NULL, 0);
	} else if (!strcmp(c, "cancel-running") || !strcmp(c, "hangup-running")) {
		/* A link count check with a CANCEL already waiting behind it, or with our
		 * side of the connection shut: it must stop (ECANCELED) at its first poll. */
		uint8_t two[2 * sizeof(struct mfs_ctl_hdr) + sizeof(sq) +
			    sizeof(struct mfs_ctl_cancel_req)];
		struct mfs_ctl_hdr h = { .magic = MFS_CTL_MAGIC, .version = MFS_CTL_VERSION,
					 .command = MFS_CTL_SCRUB, .len = sizeof(sq), .reqid = 7 };
		struct mfs_ctl_cancel_req cq = { .reqid = 7 };
		size_t len = sizeof(h) + sizeof(sq);

		sq.type = MFS_SCRUB_NLINKS;
		memcpy(two, &h, sizeof(h));
		memcpy(two + sizeof(h), &sq, sizeof(sq));
		if (!strcmp(c, "cancel-running")) {
			h.command = MFS_CTL_CANCEL;
			h.len = sizeof(cq);
			h.reqid = 8;
			memcpy(two + len, &h, sizeof(h));
			memcpy(two + len + sizeof(h), &cq, sizeof(cq));
			len += sizeof(h) + sizeof(cq);
		}
		send_raw(two, len, NULL, 0);
		if (!strcmp(c, "hangup-running"))
			shutdown(sock, SHUT_WR);
		got = show_reply();
		if (!strcmp(c, "cancel-running"))
			got &= show_reply();
		return got ? 0 : 1;
	} else if (!strcmp(c, "scrub") && argc > 3) {
		unsigned t, a;
		unsigned long long ino;

		if (sscanf(argv[3], "%u:%u:%llu", &t, &a, &ino) != 3)
			return 2;
		sq.type = t;
		sq.agno = a;
		sq.ino = ino;
		send_req(MFS_CTL_SCRUB, &sq, sizeof(sq), NULL, 0);
	} else if (!strncmp(c, "fd-", 3) || !strcmp(c, "repair")) {
		unsigned n = 1;
		uint16_t cmd = MFS_CTL_REPAIR;

		if (!strcmp(c, "fd-pipe")) {
			int p[2];

			if (pipe(p) != 0)
				return 1;
			fds[0] = p[0];
		} else if (!strcmp(c, "fd-readonly")) {
			char path[] = "/tmp/ctl_client.XXXXXX";
			int w = mkstemp(path);

			if (w < 0)
				return 1;
			fds[0] = open(path, O_RDONLY | O_CLOEXEC);
			unlink(path);
			close(w);
		} else if (!strcmp(c, "fd-self") && argc > 3) {
			fds[0] = open(argv[3], O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		} else if (!strcmp(c, "fd-sealed")) {
			fds[0] = memfd(F_SEAL_GROW);
		} else if (!strcmp(c, "fd-append")) {
			/* read-write, but every write lands at the end whatever its offset */
			sq.type = MFS_SCRUB_PROBE;
			fds[0] = memfd(0);
			if (fds[0] >= 0 && fcntl(fds[0], F_SETFL, O_APPEND) != 0)
				return 1;
		} else if (!strcmp(c, "fd-too-many")) {
			n = 3;
			for (unsigned i = 0; i < n; i++)
				fds[i] = memfd(0);
		} else if (!strcmp(c, "fd-none")) {
			n = 0;
		} else if (!strcmp(c, "fd-with-hello")) {
			cmd = MFS_CTL_HELLO;
			fds[0] = memfd(0);
		} else if (!strcmp(c, "fd-good")) {
			/* good descriptors for a type that has no rebuilder: they are checked,
			 * then the request is refused (EOPNOTSUPP), nothing rebuilt */
			sq.type = MFS_SCRUB_PROBE;
			fds[0] = memfd(0);
		} else if (!strcmp(c, "repair") && argc > 3) {
			unsigned t, a;
			unsigned long long ino;

			if (sscanf(argv[3], "%u:%u:%llu", &t, &a, &ino) != 3)
				return 2;
			sq.type = t;
			sq.agno = a;
			sq.ino = ino;
			fds[0] = memfd(0);
		} else {
			return 2;
		}
		for (unsigned i = 0; i < n; i++)
			if (fds[i] < 0) {
				perror("scratch descriptor");
				return 1;
			}
		if (cmd == MFS_CTL_HELLO)
			send_req(cmd, &hq, sizeof(hq), fds, n);
		else
			send_req(cmd, &sq, sizeof(sq), fds, n);
	} else {
		fprintf(stderr, "ctl_client: unknown case %s\n", c);
		return 2;
	}
	got = show_reply();
	if (got && (!strcmp(c, "bad-magic") || !strcmp(c, "bad-version") ||
		    !strcmp(c, "huge-length") || !strcmp(c, "garbage") ||
		    !strncmp(c, "huge-v", 6) ||
		    !strncmp(c, "truncated-", 10)))
		show_closed();
	return got ? 0 : 1;
}
