/*
 * log.c — the message sink of libmendfs (see log.h).
 */
#include "log.h"

#include <stdio.h>
#include <string.h>

static mfs_log_sink_fn log_sink;
static void *log_priv;
static int log_max = MFS_LOG_INFO;

void mfs_log_set_sink(mfs_log_sink_fn fn, void *priv)
{
	log_sink = fn;
	log_priv = priv;
}

void mfs_log_set_level(int max_level)
{
	log_max = max_level;
}

int mfs_log_quiet(void)
{
	int old = log_max;

	log_max = -1;
	return old;
}

static void log_emit(int level, const char *fmt, va_list ap)
{
	char msg[1024];

	if (level > log_max)
		return;
	vsnprintf(msg, sizeof(msg), fmt, ap);
	if (log_sink)
		log_sink(level, msg, log_priv);
	else
		fprintf(stderr, "%s\n", msg);
}

void mfs_log(int level, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_emit(level, fmt, ap);
	va_end(ap);
}

int mfs_corrupt_at(const char *file, int line, const char *fmt, ...)
{
	char msg[900];
	va_list ap;
	const char *base = strrchr(file, '/');

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	mfs_log(MFS_LOG_ERR, "corruption: %s [%s:%d]", msg, base ? base + 1 : file, line);
	return -EFSCORRUPTED;
}
