/*
 * log.h — how libmendfs reports problems.
 *
 * Library functions return 0 or a negative errno; they never exit.  What went wrong, and on
 * which object, is told through mfs_log(): tools point the sink at stderr (the default),
 * the daemon at syslog.  Corruption is -EUCLEAN (EFSCORRUPTED), raised through
 * MFS_CORRUPT(), which also names the source line that detected it.
 */
#ifndef MFS_LOG_H
#define MFS_LOG_H

#include <errno.h>
#include <stdarg.h>

#ifndef EFSCORRUPTED
#define EFSCORRUPTED EUCLEAN     /* the structure is wrong */
#endif
#ifndef EFSBADCRC
#define EFSBADCRC EBADMSG        /* the checksum is wrong (torn or bit-rotted block) */
#endif

/* Whether an error means "the metadata is bad" rather than "the operation failed". */
static inline int mfs_is_corruption(int err)
{
	return err == -EFSCORRUPTED || err == -EFSBADCRC;
}

enum mfs_log_level { MFS_LOG_ERR = 3, MFS_LOG_WARN = 4, MFS_LOG_INFO = 6, MFS_LOG_DEBUG = 7 };

typedef void (*mfs_log_sink_fn)(int level, const char *msg, void *priv);

/* Route messages to `fn` (NULL: back to stderr).  Messages above `max_level` are dropped. */
void mfs_log_set_sink(mfs_log_sink_fn fn, void *priv);
void mfs_log_set_level(int max_level);
/* Silence everything (tests that provoke errors on purpose); returns the previous level. */
int mfs_log_quiet(void);

void mfs_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int mfs_corrupt_at(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Log a corruption message naming the object and return -EFSCORRUPTED. */
#define MFS_CORRUPT(...) mfs_corrupt_at(__FILE__, __LINE__, __VA_ARGS__)

#endif
