/*
 * fuzz_ctl.c — libFuzzer target for the daemon's control protocol: framing (header
 * magic, version, length, a message cut short), dispatch, each command's payload checks
 * and what it then runs (HELLO, SCRUB, SCRUB_BATCH, INODES, CANCEL, REPAIR), as in
 * fs/ctl_conn.c and fs/ctl_cmd.c, on the pristine image of fz.h opened read-only.
 *
 * The input is the byte stream a client sends.  No listening socket and no thread: a
 * client connection is made as the acceptor makes it (fs/ctl.c ctl_admit), on one end of a
 * socketpair, and served in this thread by mfsd_ctl_client_main() until it closes the
 * connection.  The other end is the client: a helper thread writes the input, then a
 * trailer of 0xff bytes longer than any payload plus two headers (so that whatever the
 * input left unfinished is completed and the next header has a bad magic: the daemon
 * answers and closes, without waiting for a client that will send no more), and reads and
 * drops every reply until the daemon closes.  The peer does not hang up first, so checks
 * run to their end instead of being cancelled; a CANCEL in the input is seen as the daemon
 * sees one.
 */
#include "ctl_int.h"

#include "fs.h"
#include "log.h"
#include "mem.h"

#include "fz.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define TRAILER (MFS_CTL_MAX_REQUEST + 2 * sizeof(struct mfs_ctl_hdr))

static struct mfsd daemon_state;
static struct mfsd_ctl ctl;
static int verbose;               /* FUZZ_VERBOSE set: the library's messages, the replies */

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static char path[FZ_PATH_MAX];
	int err;

	(void)argc;
	(void)argv;
	verbose = getenv("FUZZ_VERBOSE") != NULL;
	if (!verbose)
		mfs_log_quiet();
	fz_image_make(path);
	err = mfs_fs_open(path, MFS_OPEN_RDONLY, 4u << 20, &daemon_state.fs);
	if (err)
		fz_die("open the image", err);
	err = mfs_icache_init(daemon_state.fs, 0);
	if (err)
		fz_die("inode cache", err);
	daemon_state.ro = 1;
	daemon_state.ctl = &ctl;
	ctl.d = &daemon_state;
	ctl.mountpoint = "/nonexistent/mendfs-fuzz";
	ctl.lfd = -1;
	ctl.owner = getuid();
	ctl.stopfd = eventfd(0, EFD_CLOEXEC);
	if (ctl.stopfd < 0)
		fz_die("eventfd", errno);
	pthread_mutex_init(&ctl.lock, NULL);
	pthread_cond_init(&ctl.gone_cond, NULL);
	pthread_rwlock_init(&ctl.ns_lock, NULL);
	pthread_mutex_init(&ctl.dev_lock, NULL);
	return 0;
}

/* ---- the client's end ------------------------------------------------------------------------ */

struct peer {
	int fd;
	const uint8_t *data;
	size_t size;
	/* verbose: where the reply being read stands */
	struct mfs_ctl_hdr hdr;
	size_t hdr_got, payload_left;
};

/* Verbose: one line per reply (command, request id, length; an error's errno). */
static void show_replies(struct peer *p, const uint8_t *buf, size_t n)
{
	while (n > 0) {
		size_t take;

		if (p->payload_left) {
			take = n < p->payload_left ? n : p->payload_left;
			p->payload_left -= take;
		} else {
			take = sizeof(p->hdr) - p->hdr_got;
			take = n < take ? n : take;
			memcpy((uint8_t *)&p->hdr + p->hdr_got, buf, take);
			p->hdr_got += take;
			if (p->hdr_got == sizeof(p->hdr)) {
				int32_t e = 0;

				if (p->hdr.command == MFS_CTL_ERROR && n - take >= sizeof(e))
					memcpy(&e, buf + take, sizeof(e));
				fprintf(stderr, "reply: command 0x%x reqid %llu, %u bytes%s%s\n",
					p->hdr.command, (unsigned long long)p->hdr.reqid,
					p->hdr.len, e ? ", error " : "", e ? strerror(e) : "");
				p->payload_left = p->hdr.len;
				p->hdr_got = 0;
			}
		}
		buf += take;
		n -= take;
	}
}

/* Write the input and the trailer, reading (and dropping) replies all along so that
 * neither side blocks on a full socket; then read until the daemon closes. */
static void *peer_main(void *arg)
{
	static uint8_t trailer[TRAILER];
	static uint8_t sink[65536];
	struct peer *p = arg;
	size_t sent = 0, total = p->size + TRAILER;

	memset(trailer, 0xff, sizeof(trailer));
	for (;;) {
		struct pollfd pf = { .fd = p->fd, .events = POLLIN | (sent < total ? POLLOUT : 0) };
		ssize_t n;

		if (poll(&pf, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf.revents & POLLIN) {
			n = read(p->fd, sink, sizeof(sink));
			if (n > 0 && verbose)
				show_replies(p, sink, (size_t)n);
			if (n == 0 || (n < 0 && errno != EINTR && errno != EAGAIN))
				break;
		}
		if (sent < total && (pf.revents & POLLOUT)) {
			const uint8_t *src = sent < p->size ? p->data + sent : trailer + (sent - p->size);
			size_t len = sent < p->size ? p->size - sent : total - sent;

			n = send(p->fd, src, len, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (n > 0)
				sent += (size_t)n;
			else if (n < 0 && errno != EINTR && errno != EAGAIN)
				sent = total;   /* the daemon has gone: only read what is left */
		} else if (pf.revents & (POLLHUP | POLLERR) && !(pf.revents & POLLIN)) {
			break;
		}
	}
	return NULL;
}

/* ---- one input --------------------------------------------------------------------------------- */

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct peer p = { .data = data, .size = size };
	struct mfsd_client *c;
	pthread_t tid;
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0)
		fz_die("socketpair", errno);
	c = mfs_calloc(1, sizeof(*c));
	if (!c)
		fz_die("client", ENOMEM);
	c->ctl = &ctl;
	c->fd = sv[0];
	c->pid = getpid();
	c->uid = getuid();
	/* on the client list, as ctl_admit puts it there */
	pthread_mutex_lock(&ctl.lock);
	c->next = ctl.clients;
	if (c->next)
		c->next->pprev = &c->next;
	c->pprev = &ctl.clients;
	ctl.clients = c;
	ctl.nclients++;
	pthread_mutex_unlock(&ctl.lock);

	p.fd = sv[1];
	if (pthread_create(&tid, NULL, peer_main, &p) != 0)
		fz_die("peer thread", EAGAIN);
	mfsd_ctl_client_main(c);        /* closes sv[0] and frees c */
	pthread_join(tid, NULL);
	close(sv[1]);
	return 0;
}
