/*
 * fdio.c — whole-buffer pread/pwrite (see fdio.h).
 */
#include "fdio.h"

#include <errno.h>
#include <unistd.h>

int mfs_pread_full(int fd, void *buf, size_t len, uint64_t off, size_t *done)
{
	unsigned char *p = buf;
	size_t got = 0;
	int err = 0;

	while (got < len) {
		ssize_t n = pread(fd, p + got, len - got, (off_t)(off + got));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			err = -errno;
			break;
		}
		if (n == 0) {
			err = -ENODATA;
			break;
		}
		got += (size_t)n;
	}
	if (done)
		*done = got;
	return err;
}

int mfs_pwrite_full(int fd, const void *buf, size_t len, uint64_t off)
{
	const unsigned char *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0)
			return -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}
