/*
 * pressure.c — the memory-pressure watcher thread: arming PSI triggers, cgroup v1
 * eventfds and cgroup v2 memory.events, and the poll loop that raises the abort flag.
 * See pressure.h.
 */
#include "mem.h"
#include "pressure.h"

#include "headroom.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define NSRC 6
#define DEFAULT_TRIGGER "some 150000 2000000\n"

/* One armed source: the descriptor polled, what to poll for, helpers to close. */
struct source {
	unsigned bit;
	int fd;			/* polled; -1 if not armed */
	int ctl_fd;		/* v1: the watched file, kept open while registered */
	short events;
	char path[720];
	long long oom, oom_kill;	/* v2 memory.events baseline */
};

struct mfs_pressure {
	atomic_int flag;
	atomic_uint_fast64_t nevents;
	int stop_fd;		/* eventfd: stop the thread */
	pthread_t thread;
	unsigned armed;
	struct source src[NSRC];
};

static const char *const names[NSRC] = {
	"psi-system", "psi-cgroup", "v1-pressure-level", "v1-oom", "v2-events", "test",
};

const char *mfs_pressure_source_name(unsigned bit)
{
	for (unsigned i = 0; i < NSRC; i++)
		if (bit == 1u << i)
			return names[i];
	return "none";
}

static int write_all(int fd, const char *s)
{
	size_t len = strlen(s);
	ssize_t n;

	do
		n = write(fd, s, len);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	return (size_t)n == len ? 0 : -EIO;
}

/* ---- arming ------------------------------------------------------------------------------ */

static int arm_psi(struct source *s, const char *path, const char *trigger)
{
	int fd = open(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	if (write_all(fd, trigger) < 0) {
		int err = -errno;
		close(fd);
		return err ? err : -EINVAL;
	}
	s->fd = fd;
	s->events = POLLPRI;
	snprintf(s->path, sizeof(s->path), "%s", path);
	return 0;
}

/* cgroup v1: eventfd registered through cgroup.event_control ("<efd> <fd> [args]"). */
static int arm_v1(struct source *s, const char *dir, const char *file, const char *args)
{
	char path[700], line[128];
	int efd, fd, cfd, rc;

	snprintf(path, sizeof(path), "%s/%s", dir, file);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (efd < 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	snprintf(line, sizeof(line), "%d %d%s%s", efd, fd, args ? " " : "", args ? args : "");
	snprintf(path, sizeof(path), "%s/cgroup.event_control", dir);
	cfd = open(path, O_WRONLY | O_CLOEXEC);
	rc = cfd < 0 ? -errno : write_all(cfd, line);
	if (cfd >= 0)
		close(cfd);
	if (rc) {
		close(efd);
		close(fd);
		return rc;
	}
	s->fd = efd;
	s->ctl_fd = fd;
	s->events = POLLIN;
	snprintf(s->path, sizeof(s->path), "%s/%s", dir, file);
	return 0;
}

/* Read the oom and oom_kill counters of a memory.events file. */
static int read_events(int fd, long long *oom, long long *oom_kill)
{
	char buf[1024];
	ssize_t n;

	do
		n = pread(fd, buf, sizeof(buf) - 1, 0);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	*oom = *oom_kill = 0;
	for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		long long v;

		if (sscanf(l, "oom %lld", &v) == 1)
			*oom = v;
		else if (sscanf(l, "oom_kill %lld", &v) == 1)
			*oom_kill = v;
	}
	return 0;
}

static int arm_v2_events(struct source *s, const char *dir)
{
	char path[700];
	int fd, rc;

	snprintf(path, sizeof(path), "%s/memory.events", dir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	rc = read_events(fd, &s->oom, &s->oom_kill);
	if (rc) {
		close(fd);
		return rc;
	}
	s->fd = fd;
	s->events = POLLPRI;
	snprintf(s->path, sizeof(s->path), "%s", path);
	return 0;
}

/* ---- the thread -------------------------------------------------------------------------- */

static void raise_flag(struct mfs_pressure *p, unsigned bit)
{
	int expected = 0;

	atomic_fetch_add(&p->nevents, 1);
	atomic_compare_exchange_strong(&p->flag, &expected, (int)bit);
}

static void *watch(void *arg)
{
	struct mfs_pressure *p = arg;
	struct pollfd pfd[NSRC + 1];
	struct source *map[NSRC + 1];

	for (;;) {
		nfds_t n = 0;

		pfd[n].fd = p->stop_fd;
		pfd[n].events = POLLIN;
		map[n++] = NULL;
		for (unsigned i = 0; i < NSRC; i++) {
			if (p->src[i].fd < 0)
				continue;
			pfd[n].fd = p->src[i].fd;
			pfd[n].events = p->src[i].events;
			map[n++] = &p->src[i];
		}
		int rc = poll(pfd, n, -1);

		if (rc < 0) {
			if (errno == EINTR)
				continue;
			return NULL;	/* cannot watch any more; stop() still joins us */
		}
		if (pfd[0].revents)
			return NULL;
		for (nfds_t k = 1; k < n; k++) {
			struct source *s = map[k];
			uint64_t v;

			if (!pfd[k].revents)
				continue;
			if (s->events == POLLIN) {		/* eventfds: v1 and the test hook */
				if (read(s->fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
					raise_flag(p, s->bit);
			} else if (s->bit == MFS_PRESSURE_V2_EVENTS) {
				long long oom, kills;

				if (read_events(s->fd, &oom, &kills) == 0 &&
				    (oom > s->oom || kills > s->oom_kill)) {
					s->oom = oom;
					s->oom_kill = kills;
					raise_flag(p, s->bit);
				}
			} else if (pfd[k].revents & POLLERR) {
				/* The PSI source went away (its cgroup was removed): disarm. */
				close(s->fd);
				s->fd = -1;
			} else if (pfd[k].revents & POLLPRI) {
				raise_flag(p, s->bit);
			}
		}
	}
}

/* ---- public ------------------------------------------------------------------------------ */

int mfs_pressure_start(const struct mfs_pressure_opts *opts, struct mfs_pressure **out)
{
	const char *trigger = opts && opts->psi_trigger ? opts->psi_trigger : DEFAULT_TRIGGER;
	const char *level = opts && opts->v1_level ? opts->v1_level : "medium";
	unsigned want = opts && opts->sources ? opts->sources : MFS_PRESSURE_ALL;
	struct mfs_pressure *p;
	char dir[512];
	int rc;

	*out = NULL;
	p = mfs_calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	atomic_init(&p->flag, 0);
	atomic_init(&p->nevents, 0);
	for (unsigned i = 0; i < NSRC; i++) {
		p->src[i].bit = 1u << i;
		p->src[i].fd = -1;
		p->src[i].ctl_fd = -1;
	}
	p->stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->stop_fd < 0) {
		rc = -errno;
		free(p);
		return rc;
	}
	/* The test hook is an eventfd like the v1 sources, always armed. */
	p->src[5].fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (p->src[5].fd < 0) {
		rc = -errno;
		mfs_pressure_stop(p);
		return rc;
	}
	p->src[5].events = POLLIN;
	snprintf(p->src[5].path, sizeof(p->src[5].path), "mfs_pressure_fire_for_test");

	if (want & MFS_PRESSURE_PSI_SYSTEM)
		(void)arm_psi(&p->src[0], "/proc/pressure/memory", trigger);
	if (mfs_headroom_cgroup_dir(2, dir, sizeof(dir)) == 0) {
		char path[600];

		snprintf(path, sizeof(path), "%s/memory.pressure", dir);
		if (want & MFS_PRESSURE_PSI_CGROUP)
			(void)arm_psi(&p->src[1], path, trigger);
		if (want & MFS_PRESSURE_V2_EVENTS)
			(void)arm_v2_events(&p->src[4], dir);
	}
	if (mfs_headroom_cgroup_dir(1, dir, sizeof(dir)) == 0) {
		if (want & MFS_PRESSURE_V1_LEVEL) {
			/* "local": only reclaim aimed at this cgroup's own limit.  By default
			 * the kernel hands a listener the pressure of any descendant cgroup that
			 * has no listener of its own, and a child cgroup at its own limit (a
			 * container, a test's memory hog) says nothing of the memory this
			 * process can have.  Kernels before 4.16 know no mode: plain level. */
			char local[64];

			snprintf(local, sizeof(local), "%s,local", level);
			if (arm_v1(&p->src[2], dir, "memory.pressure_level", local) == -EINVAL)
				(void)arm_v1(&p->src[2], dir, "memory.pressure_level", level);
		}
		if (want & MFS_PRESSURE_V1_OOM)
			(void)arm_v1(&p->src[3], dir, "memory.oom_control", NULL);
	}
	for (unsigned i = 0; i < NSRC; i++)
		if (p->src[i].fd >= 0)
			p->armed |= p->src[i].bit;

	rc = pthread_create(&p->thread, NULL, watch, p);
	if (rc) {
		p->armed = 0;	/* tells stop() there is no thread to join */
		mfs_pressure_stop(p);
		return -rc;
	}
	*out = p;
	return 0;
}

void mfs_pressure_stop(struct mfs_pressure *p)
{
	uint64_t one = 1;

	if (!p)
		return;
	if (p->armed) {
		/* An eventfd write of 1 cannot block or fail short of a counter overflow. */
		while (write(p->stop_fd, &one, sizeof(one)) < 0 && errno == EINTR)
			;
		pthread_join(p->thread, NULL);
	}
	for (unsigned i = 0; i < NSRC; i++) {
		if (p->src[i].fd >= 0)
			close(p->src[i].fd);
		if (p->src[i].ctl_fd >= 0)
			close(p->src[i].ctl_fd);
	}
	if (p->stop_fd >= 0)
		close(p->stop_fd);
	free(p);
}

const atomic_int *mfs_pressure_flag(const struct mfs_pressure *p)
{
	return &p->flag;
}

bool mfs_pressure_aborted(const struct mfs_pressure *p)
{
	return atomic_load_explicit(&p->flag, memory_order_relaxed) != 0;
}

unsigned mfs_pressure_reason(const struct mfs_pressure *p)
{
	return (unsigned)atomic_load(&p->flag);
}

void mfs_pressure_reset(struct mfs_pressure *p)
{
	atomic_store(&p->flag, 0);
}

uint64_t mfs_pressure_events(const struct mfs_pressure *p)
{
	return atomic_load(&p->nevents);
}

unsigned mfs_pressure_armed(const struct mfs_pressure *p)
{
	return p->armed;
}

unsigned mfs_pressure_describe(const struct mfs_pressure *p, char *buf, size_t len)
{
	size_t used = 0;

	if (len)
		buf[0] = '\0';
	for (unsigned i = 0; i < NSRC && used < len; i++) {
		if (!(p->armed & p->src[i].bit))
			continue;
		int n = snprintf(buf + used, len - used, "%s%s(%s)", used ? " " : "", names[i],
				 p->src[i].path);
		if (n < 0)
			break;
		used += (size_t)n;
	}
	return p->armed;
}

int mfs_pressure_fire_for_test(struct mfs_pressure *p)
{
	uint64_t one = 1;
	ssize_t n;

	do
		n = write(p->src[5].fd, &one, sizeof(one));
	while (n < 0 && errno == EINTR);
	return n == (ssize_t)sizeof(one) ? 0 : -errno;
}
