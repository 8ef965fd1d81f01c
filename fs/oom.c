/*
 * oom.c — the daemon protects itself from the OOM killer (DESIGN.md, "Scrub and repair",
 * step 6).
 *
 * A repair's scratch is memory (the client's memfd) that the daemon fills; when memory runs
 * out, the process to kill is the scrub client (it sets its own oom_score_adj to 1000: its
 * death only cancels the repair, which then aborts cleanly), never the daemon, whose death
 * takes the mount with it.  So at start the daemon lowers its own oom_score_adj to
 * MFSD_OOM_SCORE_ADJ, not to -1000: a daemon that leaks must still be killable rather than
 * take the whole machine down.  A value already lower (set by systemd, or by whoever
 * started us) is kept.  Lowering below the lowest value the process was ever given needs
 * CAP_SYS_RESOURCE: without it (a user's mount, a container) the daemon comes down as far as
 * it may (0, undoing a raise it inherited), logs the refusal and goes on.
 */
#include "mendfs_int.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MFSD_OOM_SCORE_ADJ (-500)

/* The current value of /proc/self/oom_score_adj into *v; 0 or -errno. */
static int oom_read(int fd, int *v)
{
	char buf[32];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	char *end;
	long l;

	if (n < 0)
		return -errno;
	buf[n] = '\0';
	errno = 0;
	l = strtol(buf, &end, 10);
	if (errno || end == buf || l < -1000 || l > 1000)
		return -EINVAL;
	*v = (int)l;
	return 0;
}

/* Write v; 0 or -errno. */
static int oom_write(int fd, int v)
{
	char val[16];
	int len = snprintf(val, sizeof(val), "%d\n", v);

	if (pwrite(fd, val, (size_t)len, 0) == len)
		return 0;
	return errno ? -errno : -EIO;
}

int mfsd_oom_protect(void)
{
	int fd = open("/proc/self/oom_score_adj", O_RDWR | O_CLOEXEC);
	int cur = 0, err;

	if (fd < 0) {
		err = -errno;
		mfs_log(MFS_LOG_WARN, "cannot open /proc/self/oom_score_adj (%s): the OOM killer "
			"may choose this daemon before a scrub client", strerror(-err));
		return err;
	}
	err = oom_read(fd, &cur);
	if (!err && cur <= MFSD_OOM_SCORE_ADJ) {
		close(fd);
		return 0;                       /* already protected as much or more */
	}
	err = oom_write(fd, MFSD_OOM_SCORE_ADJ);
	if (err && cur > 0 && oom_write(fd, 0) == 0) {
		/* Without CAP_SYS_RESOURCE a process may only come back down to the lowest value
		 * it was given: at least undo a raise inherited from whoever started us. */
		mfs_log(MFS_LOG_WARN, "cannot lower oom_score_adj to %d (%s): lowered from %d to 0 "
			"only, and the OOM killer may choose this daemon before a scrub client",
			MFSD_OOM_SCORE_ADJ, strerror(-err), cur);
	} else if (err) {
		mfs_log(MFS_LOG_WARN, "cannot lower oom_score_adj to %d (%s): it stays %d, and "
			"the OOM killer may choose this daemon before a scrub client",
			MFSD_OOM_SCORE_ADJ, strerror(-err), cur);
	} else {
		mfs_log(MFS_LOG_INFO, "oom_score_adj lowered from %d to %d", cur,
			MFSD_OOM_SCORE_ADJ);
	}
	close(fd);
	return err;
}
