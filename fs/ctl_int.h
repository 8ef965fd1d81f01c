/*
 * ctl_int.h — private to the control socket's files: ctl.c (the socket, the acceptor, the
 * client list, the namespace quiesce lock), ctl_conn.c (one client connection: framing,
 * descriptors, dispatch) and ctl_cmd.c (what each command does).
 *
 * Threads: one acceptor, one thread per connected client (at most MFSD_CTL_MAX_CLIENTS),
 * all detached from the FUSE session threads; a client's requests run on its own thread,
 * one at a time.  ctl->lock guards the client list and count; everything in a struct
 * mfsd_client belongs to its thread except `fd` (shut down by mfsd_ctl_close to wake it).
 */
#ifndef MENDFS_CTL_INT_H
#define MENDFS_CTL_INT_H

#include "mendfs_int.h"
#include "mendfs_ctl.h"

#include <stdatomic.h>
#include <sys/types.h>

#define MFSD_CTL_MAX_CLIENTS  64u
#define MFSD_CTL_MSG_TIMEOUT  10000   /* ms: the rest of a message once its first byte came */
#define MFSD_CTL_FIRST_TIMEOUT 30     /* s: a new connection's first whole request (a client
                                         that sends nothing must not hold one of the
                                         MFSD_CTL_MAX_CLIENTS slots until unmount); tests
                                         lower it with MENDFS_TEST_CTL_FIRST_TIMEOUT */
#define MFSD_CTL_SEND_TIMEOUT 30      /* s: a client that does not read its replies */
#define MFSD_CTL_QUIESCE_WAIT 30      /* s: a link-count check waiting for namespace ops */

struct mfsd_ctl {
	struct mfsd *d;
	char *mountpoint;             /* canonical path */
	char *sockpath;
	dev_t sock_dev;               /* the socket file we made (removed only if still ours) */
	ino_t sock_ino;
	int lfd;                      /* listening socket */
	int stopfd;                   /* eventfd: readable once the daemon is stopping */
	uid_t owner;                  /* the user that mounted: the daemon's real uid */
	unsigned first_ms;            /* MFSD_CTL_FIRST_TIMEOUT in ms (0: no bound) */
	atomic_int first_said;        /* a connection was closed for it (logged once) */
	pthread_t acceptor;
	int started;
	atomic_int stopping;

	pthread_mutex_t lock;         /* clients, nclients */
	pthread_cond_t gone_cond;     /* a client thread ended */
	struct mfsd_client *clients;
	unsigned nclients;

	/* Namespace changes take it shared (mfsd_ns_begin); a link-count check exclusive. */
	pthread_rwlock_t ns_lock;

	/* The inode census every client's checks share (repair/scrub.h; NULL without memory
	 * for it): dropped when the last client goes (under `lock`, before the count reads
	 * zero), freed with the socket. */
	struct mfs_scrub_census *census;

	pthread_mutex_t dev_lock;     /* st_dev of the mount, found at the first need */
	dev_t mnt_dev;
	int mnt_dev_known;
};

/* One received message. */
struct mfsd_msg {
	struct mfs_ctl_hdr hdr;
	uint8_t payload[MFS_CTL_MAX_REQUEST];
	int fds[MFS_CTL_MAX_FDS];
	unsigned nfds;
	int fds_overflow;             /* more descriptors came than may (closed) */
};

/* The reply of a SCRUB (or SCRUB_BATCH) being built, as it goes on the wire; n and
 * dropped count the findings of the check that runs. */
struct mfsd_findings {
	uint8_t *buf;
	size_t len, cap;
	uint32_t n, dropped;
};

struct mfsd_client {
	struct mfsd_ctl *ctl;
	struct mfsd_client *next, **pprev;
	int fd;
	pid_t pid;
	uid_t uid;
	uint64_t accepted_ns;         /* CLOCK_MONOTONIC_COARSE at accept */
	int served;                   /* a whole request has come: ctl->first_ms is met */
	int background;
	int quiesced;                 /* holds ns_lock exclusive (a check asked) */
	/* cancellation of the request that runs */
	uint64_t running;             /* its reqid */
	int cancel_seen;              /* a CANCEL for it is waiting in the socket */
	int peer_gone;                /* hang-up seen while it ran */
	uint64_t last_poll_ns;
	struct mfsd_findings findings;
	struct mfs_scrub_memo *memo;  /* committed inodes shared by one request's checks */
	struct mfsd_msg msg;
};

/* ctl_conn.c */
void *mfsd_ctl_client_main(void *arg);
/* Send a reply (command | MFS_CTL_REPLY) made of `n` pieces; an error reply.  0 or -errno. */
int mfsd_ctl_reply(struct mfsd_client *c, const struct mfs_ctl_hdr *req, const void *p1,
		   size_t n1, const void *p2, size_t n2);
int mfsd_ctl_error(int fd, uint64_t reqid, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* CLOCK_MONOTONIC_COARSE in ns. */
uint64_t mfsd_ctl_now_ns(void);
/* Nonzero when the running request should stop (peer gone, CANCEL waiting, shutdown). */
int mfsd_ctl_cancelled(struct mfsd_client *c);

/* ctl_cmd.c: each answers the request itself (reply or error) and returns 0, or a negative
 * errno when the connection must be closed. */
int mfsd_ctl_hello(struct mfsd_client *c);
int mfsd_ctl_scrub(struct mfsd_client *c);
int mfsd_ctl_scrub_batch(struct mfsd_client *c);
int mfsd_ctl_inodes(struct mfsd_client *c);
int mfsd_ctl_repair(struct mfsd_client *c);

/* ctl.c */
/* st_dev of the mount (0: not known yet: the mount is not there). */
dev_t mfsd_ctl_mount_dev(struct mfsd_ctl *ctl);
/* Hold namespace changes back (on) or let them go (off), for one client's check. */
int mfsd_ctl_quiesce(struct mfsd_client *c, int on);

#endif
