/*
 * fz.h — what the fuzz targets share (fz_image.c): the small pristine filesystem they run
 * on, formatted into a memfd at start-up, always the same (fixed UUID, time and content).
 */
#ifndef MFS_FZ_H
#define MFS_FZ_H

#include <stdint.h>

#define FZ_BS        1024u
#define FZ_AGBLOCKS  4096u
#define FZ_AGCOUNT   4u
#define FZ_LOGBLOCKS 64u
#define FZ_BYTES     ((uint64_t)FZ_BS * FZ_AGBLOCKS * FZ_AGCOUNT)
#define FZ_PATH_MAX  64

/* Format the pristine image into a new memfd; returns its descriptor and sets `path` to a
 * name mfs_fs_open can open (/proc/self/fd/N).  Exits on failure (start-up only). */
int fz_image_make(char path[FZ_PATH_MAX]);

/* Print "fuzz: what: strerror" and exit(1): start-up failures of the harness itself. */
void fz_die(const char *what, int err) __attribute__((noreturn));

#endif
