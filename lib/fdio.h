/*
 * fdio.h — whole-buffer pread/pwrite on a file descriptor: EINTR and partial transfers
 * are retried, so a caller sees "all of it", an errno, or "the file ended first".  Shared
 * by the device layer and the scratch structures, which differ only in what a short file
 * means to them (zeroes past the end of an image; "scratch exhausted" for a scratch file).
 */
#ifndef MFS_FDIO_H
#define MFS_FDIO_H

#include <stddef.h>
#include <stdint.h>

/* Read `len` bytes at `off`.  0 when all were read; -ENODATA when the file ended first
 * (*done, if given, says how many were read); otherwise -errno. */
int mfs_pread_full(int fd, void *buf, size_t len, uint64_t off, size_t *done);

/* Write `len` bytes at `off`.  0 or -errno (-EIO if the kernel accepted nothing). */
int mfs_pwrite_full(int fd, const void *buf, size_t len, uint64_t off);

#endif
