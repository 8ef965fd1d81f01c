/*
 * progress.c — progress of mendfs_scrub: a bar redrawn on standard output when it is a
 * terminal (and not --json), and fsck-style "phase current maximum label" lines on the
 * descriptor of -C (label: the mount point).  Both at most ten times a second, and once
 * more at the end of each phase.  One run per process: the state is this file's.
 */
#include "scrub.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct {
	int tty, drawn;
	int nphases;                    /* 5, or 6 with -x */
	int phase;
	uint64_t max;
	atomic_uint_fast64_t cur;
	const char *label;
	atomic_uint_fast64_t last;      /* ns of the last drawing */
} pg;

#define PERIOD_NS 100000000u

static uint64_t now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void scrub_progress_init(struct scrub_run *run)
{
	pg.tty = !run->o.json && isatty(STDOUT_FILENO);
	pg.nphases = run->o.media ? 6 : 5;
}

void scrub_progress_clear(struct scrub_run *run)
{
	if (pg.drawn) {
		fputs("\r\033[K", stdout);
		pg.drawn = 0;
	}
}

/* Caller holds run->lock. */
static void draw(struct scrub_run *run, int force)
{
	uint64_t cur = atomic_load(&pg.cur), max = pg.max;
	uint64_t t = now();

	if (!force && t - atomic_load(&pg.last) < PERIOD_NS)
		return;
	atomic_store(&pg.last, t);
	if (cur > max)
		max = cur;
	if (run->o.cfd >= 0)
		dprintf(run->o.cfd, "%d %llu %llu %s\n", pg.phase, (unsigned long long)cur,
			(unsigned long long)max, run->mnt);
	if (pg.tty) {
		char bar[41];
		unsigned fill = max ? (unsigned)(cur * 40 / max) : 40;

		memset(bar, '=', fill);
		memset(bar + fill, ' ', 40 - fill);
		bar[40] = 0;
		printf("\r[%s] %3u%% phase %d/%d: %s", bar, max ? (unsigned)(cur * 100 / max) : 100,
		       pg.phase, pg.nphases, pg.label);
		fflush(stdout);
		pg.drawn = 1;
	}
}

void scrub_progress_phase(struct scrub_run *run, int phase, uint64_t max, const char *label)
{
	pthread_mutex_lock(&run->lock);
	run->phase = phase;
	pg.phase = phase;
	pg.max = max;
	pg.label = label;
	atomic_store(&pg.cur, 0);
	draw(run, 1);
	pthread_mutex_unlock(&run->lock);
}

void scrub_progress_add(struct scrub_run *run, uint64_t n)
{
	atomic_fetch_add(&pg.cur, n);
	if (run->o.cfd < 0 && !pg.tty)
		return;
	if (now() - atomic_load(&pg.last) < PERIOD_NS)
		return;
	pthread_mutex_lock(&run->lock);
	draw(run, 0);
	pthread_mutex_unlock(&run->lock);
}

void scrub_progress_done(struct scrub_run *run)
{
	pthread_mutex_lock(&run->lock);
	if (atomic_load(&pg.cur) < pg.max && !atomic_load(&run->stop))
		atomic_store(&pg.cur, pg.max);
	draw(run, 1);
	scrub_progress_clear(run);
	pthread_mutex_unlock(&run->lock);
}
