/*
 * media.c — phase 6 of mendfs_scrub (-x): read the data of every regular file through the
 * mount, so that every allocated data block is read from the device by the daemon; a
 * read that fails with EIO is reported as a damaged file (by path).  Files are opened with
 * O_DIRECT when the mount allows it (the kernel's page cache would otherwise answer), else
 * their cached pages are dropped first.  One pass, one thread: it is I/O bound.
 */
#include "scrub.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define MEDIA_BUF (1u << 20)

static struct scrub_run *media_run;     /* nftw's callback has no argument */
static void *media_buf;

static void read_file(const char *path)
{
	struct scrub_run *run = media_run;
	int fd = open(path, O_RDONLY | O_DIRECT | O_NOFOLLOW | O_CLOEXEC | O_NOATIME);

	if (fd < 0 && (errno == EINVAL || errno == EPERM))
		fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		if (errno != ENOENT)    /* gone since the walk saw it */
			scrub_path_error(run, path, errno);
		return;
	}
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	for (;;) {
		ssize_t n = read(fd, media_buf, MEDIA_BUF);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			scrub_path_error(run, path, errno);
			break;
		}
		if (n == 0 || atomic_load(&run->stop))
			break;
		scrub_progress_add(run, (uint64_t)n >> 10);
	}
	close(fd);
}

static int visit(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	if (atomic_load(&media_run->stop))
		return 1;
	if (flag == FTW_F && S_ISREG(st->st_mode))
		read_file(path);
	else if (flag == FTW_DNR)
		scrub_path_error(media_run, path, EACCES);
	return 0;
}

void scrub_phase_media(struct scrub_run *run)
{
	struct statvfs sv;
	uint64_t used_kib = 0;

	if (statvfs(run->mnt, &sv) == 0)
		used_kib = (uint64_t)(sv.f_blocks - sv.f_bfree) * sv.f_frsize >> 10;
	if (posix_memalign(&media_buf, 4096, MEDIA_BUF) != 0) {
		scrub_error(run, MFS_SCRUB_NTYPES, 0, 0, "out of memory for the data scan");
		return;
	}
	media_run = run;
	scrub_progress_phase(run, 6, used_kib, "file data");
	if (nftw(run->mnt, visit, 32, FTW_PHYS | FTW_MOUNT) < 0)
		scrub_error(run, MFS_SCRUB_NTYPES, 0, 0, "walking %s: %s", run->mnt,
			    strerror(errno));
	scrub_progress_done(run);
	free(media_buf);
	media_buf = NULL;
}
