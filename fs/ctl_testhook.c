/*
 * ctl_testhook.c — test-only control of the online repair engine's points (repair.h,
 * enum mfs_repair_point) in a running daemon, for integration tests that must act while a
 * rebuild is at a known step: hold it there, fire the memory-pressure watcher, or fail.
 *
 * Inert unless MENDFS_TEST_REPAIR_DIR names a directory in the daemon's environment at
 * start.  Then at each point of each repair the daemon reads the file DIR/<point>
 * (reserved, gathered, sorting, built, reaped); when it is missing nothing happens, else by its
 * first word:
 *   hold      DIR/held-<point> is created (holding "type agno"), and the repair waits
 *             there, polling every 10 ms, until DIR/<point> is removed, the client goes
 *             away or sends CANCEL, or 120 s have passed; then held-<point> is removed and
 *             the repair goes on (its next poll sees a cancel or a disconnect);
 *   pressure  the repair's memory-pressure watcher is fired (lib/pressure.h) as if the
 *             kernel had reported pressure, and the repair goes on to meet the flag;
 *   fail      the repair fails there with EINTR.
 * The file is read afresh at every point, so a test changes what happens between repairs
 * without remounting.  The hook runs on the control-socket thread that runs the repair
 * (a ctl_ file: the control socket's fuzz target links it with the others).
 */
#include "mendfs_int.h"
#include "ctl_int.h"

#include "log.h"
#include "pressure.h"
#include "repair.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HOLD_POLL_NS   10000000L       /* 10 ms */
#define HOLD_MAX_POLLS 12000           /* 120 s */

static const char *const point_names[] = {
	[MFS_REPAIR_AT_RESERVED] = "reserved",
	[MFS_REPAIR_AT_GATHERED] = "gathered",
	[MFS_REPAIR_AT_SORTING] = "sorting",
	[MFS_REPAIR_AT_BUILT] = "built",
	[MFS_REPAIR_AT_REAPED] = "reaped",
	[MFS_REPAIR_AT_ACCOUNTING] = "accounting",
};

/* The repair this thread runs (the hook is only given the client). */
static __thread const struct mfs_repair_ctx *cur_rc;
static __thread struct mfs_pressure *cur_pressure;

/* The first word of DIR/name into word; 0, or -errno (-ENOENT: no file). */
static int read_word(const char *dir, const char *name, char *word, size_t len)
{
	char path[4096], buf[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n < 0)
		return -errno;
	buf[n] = '\0';
	buf[strcspn(buf, " \t\n")] = '\0';
	if (strlen(buf) >= len)
		buf[len - 1] = '\0';
	memcpy(word, buf, strlen(buf) + 1);
	return 0;
}

static void hold(const char *dir, const char *pname, struct mfsd_client *c)
{
	char held[4096], tmp[4096], word[16];
	struct timespec ts = { 0, HOLD_POLL_NS };
	FILE *f;

	snprintf(held, sizeof(held), "%s/held-%s", dir, pname);
	snprintf(tmp, sizeof(tmp), "%s/.held-%s", dir, pname);
	f = fopen(tmp, "we");
	if (f) {
		fprintf(f, "%u %u\n", cur_rc ? cur_rc->type : 0, cur_rc ? cur_rc->agno : 0);
		if (fclose(f) == 0)
			(void)rename(tmp, held);
	}
	mfs_log(MFS_LOG_INFO, "test: repair held at %s", pname);
	for (int i = 0; i < HOLD_MAX_POLLS; i++) {
		if (read_word(dir, pname, word, sizeof(word)) != 0 || strcmp(word, "hold") != 0)
			break;
		if (mfsd_ctl_cancelled(c))
			break;
		nanosleep(&ts, NULL);
	}
	(void)unlink(held);
	mfs_log(MFS_LOG_INFO, "test: repair released at %s", pname);
}

static int test_hook(void *arg, enum mfs_repair_point at)
{
	const char *dir = getenv("MENDFS_TEST_REPAIR_DIR");
	const char *pname;
	char word[16];

	if (!dir || (unsigned)at >= sizeof(point_names) / sizeof(point_names[0]) ||
	    !(pname = point_names[at]))
		return 0;
	if (read_word(dir, pname, word, sizeof(word)) != 0)
		return 0;
	if (!strcmp(word, "hold")) {
		hold(dir, pname, arg);
	} else if (!strcmp(word, "pressure")) {
		struct timespec ts = { 0, 1000000L };

		if (!cur_pressure || mfs_pressure_fire_for_test(cur_pressure) != 0)
			return -EINTR;           /* no watcher: fail rather than pass unnoticed */
		for (int i = 0; i < 5000 && !mfs_pressure_aborted(cur_pressure); i++)
			nanosleep(&ts, NULL);
		mfs_log(MFS_LOG_INFO, "test: memory pressure fired at %s", pname);
	} else if (!strcmp(word, "fail")) {
		return -EINTR;
	}
	return 0;
}

void mfsd_test_repair_arm(struct mfs_repair_ctx *rc, struct mfs_pressure *pressure)
{
	const char *dir = getenv("MENDFS_TEST_REPAIR_DIR");

	cur_rc = rc;
	cur_pressure = pressure;
	if (dir && *dir)
		rc->test_hook = test_hook;
}
