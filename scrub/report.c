/*
 * report.c — what mendfs_scrub tells: each finding (the object, the problem, the action),
 * operational errors, the closing summary and the exit code.  Text on standard output, or
 * with --json one JSON object per line (findings, then a summary object) and notes on
 * standard error.  All output happens under run->lock, so lines never interleave.
 */
#include "scrub.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *sev_word(uint32_t flag)
{
	switch (flag) {
	case MFS_SCRUB_OFLAG_CORRUPT: return "corrupt";
	case MFS_SCRUB_OFLAG_XCORRUPT: return "xref";
	case MFS_SCRUB_OFLAG_PREEN: return "preen";
	case MFS_SCRUB_OFLAG_WARNING: return "warning";
	case MFS_SCRUB_OFLAG_INCOMPLETE: return "incomplete";
	case MFS_SCRUB_OFLAG_REPAIRED: return "repaired";
	case MFS_SCRUB_OFLAG_UNFIXED: return "unfixed";
	}
	return "error";
}

static const char *sev_title(uint32_t flag)
{
	switch (flag) {
	case MFS_SCRUB_OFLAG_CORRUPT: return "Corruption";
	case MFS_SCRUB_OFLAG_XCORRUPT: return "Cross-reference mismatch";
	case MFS_SCRUB_OFLAG_PREEN: return "Optimization possible";
	case MFS_SCRUB_OFLAG_WARNING: return "Warning";
	case MFS_SCRUB_OFLAG_INCOMPLETE: return "Check incomplete";
	case MFS_SCRUB_OFLAG_REPAIRED: return "Repaired";
	case MFS_SCRUB_OFLAG_UNFIXED: return "Not repaired";
	}
	return "Error";
}

static const char *action(const struct scrub_run *run, uint32_t flag)
{
	switch (flag) {
	case MFS_SCRUB_OFLAG_CORRUPT:
	case MFS_SCRUB_OFLAG_XCORRUPT:
		return run->o.dry_run ? "unmount and run mendfs_repair, or run mendfs_scrub "
					"without -n to repair it online" :
					"online repair follows";
	case MFS_SCRUB_OFLAG_UNFIXED:
		return "unmount and run mendfs_repair";
	case MFS_SCRUB_OFLAG_PREEN:
		return "nothing is wrong; a repair would optimise it";
	case MFS_SCRUB_OFLAG_WARNING:
		return "look into it; nothing was proven wrong";
	case MFS_SCRUB_OFLAG_INCOMPLETE:
		return "run mendfs_scrub again";
	case MFS_SCRUB_OFLAG_REPAIRED:
		return "none";
	}
	return "see the message; run mendfs_scrub again";
}

static int is_ag_type(uint32_t t)
{
	return t >= MFS_SCRUB_SB && t <= MFS_SCRUB_RMAPBT;
}

static int is_inode_type(uint32_t t)
{
	return t >= MFS_SCRUB_INODE && t <= MFS_SCRUB_SYMLINK;
}

static void object_name(char *buf, size_t len, uint32_t type, uint32_t agno, uint64_t ino)
{
	if (is_ag_type(type))
		snprintf(buf, len, "AG %u %s", agno, scrub_type_name(type));
	else if (is_inode_type(type))
		snprintf(buf, len, "inode %llu %s", (unsigned long long)ino,
			 scrub_type_name(type));
	else
		snprintf(buf, len, "%s", scrub_type_name(type));
}

static void json_str(FILE *f, const char *s, size_t len)
{
	fputc('"', f);
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (ch == '"' || ch == '\\')
			fprintf(f, "\\%c", ch);
		else if (ch == '\n')
			fputs("\\n", f);
		else if (ch == '\t')
			fputs("\\t", f);
		else if (ch < 0x20 || ch == 0x7f)
			fprintf(f, "\\u%04x", ch);
		else
			fputc(ch, f);   /* UTF-8 passes through; other bytes are the daemon's */
	}
	fputc('"', f);
}

static void json_cstr(FILE *f, const char *s)
{
	json_str(f, s, strlen(s));
}

/* One finding or error line; caller holds run->lock. */
static void emit(struct scrub_run *run, uint32_t type, uint32_t agno, uint64_t ino,
		 const char *path, uint32_t flag, const char *text, size_t len)
{
	char obj[PATH_MAX + 64];

	if (path)
		snprintf(obj, sizeof(obj), "file %s data", path);
	else
		object_name(obj, sizeof(obj), type, agno, ino);
	scrub_progress_clear(run);
	if (run->o.json) {
		fputs("{\"kind\":\"finding\",\"mountpoint\":", stdout);
		json_cstr(stdout, run->mnt);
		fprintf(stdout, ",\"phase\":%d,\"object\":", run->phase);
		json_cstr(stdout, path ? "data" : type < MFS_SCRUB_NTYPES ?
			  scrub_type_name(type) : "unknown");
		if (!path && is_ag_type(type))
			fprintf(stdout, ",\"agno\":%u", agno);
		if (!path && is_inode_type(type))
			fprintf(stdout, ",\"ino\":%llu", (unsigned long long)ino);
		if (path) {
			fputs(",\"path\":", stdout);
			json_cstr(stdout, path);
		}
		fputs(",\"name\":", stdout);
		json_cstr(stdout, obj);
		fprintf(stdout, ",\"severity\":\"%s\",\"message\":", sev_word(flag));
		json_str(stdout, text, len);
		fputs(",\"action\":", stdout);
		json_cstr(stdout, action(run, flag));
		fputs("}\n", stdout);
	} else {
		fprintf(stdout, "%s: %s: %.*s. Action: %s.\n", sev_title(flag), obj, (int)len,
			text, action(run, flag));
	}
	fflush(stdout);
}

static void count(struct scrub_run *run, uint32_t flag)
{
	switch (flag) {
	case MFS_SCRUB_OFLAG_CORRUPT: run->n.corrupt++; break;
	case MFS_SCRUB_OFLAG_UNFIXED: break;     /* its corruption is counted already */
	case MFS_SCRUB_OFLAG_XCORRUPT: run->n.xcorrupt++; break;
	case MFS_SCRUB_OFLAG_PREEN: run->n.preen++; break;
	case MFS_SCRUB_OFLAG_WARNING: run->n.warnings++; break;
	case MFS_SCRUB_OFLAG_INCOMPLETE: run->n.incomplete++; break;
	case MFS_SCRUB_OFLAG_REPAIRED: break;
	default: run->n.errors++; break;
	}
}

void scrub_finding(struct scrub_run *run, uint32_t type, uint32_t agno, uint64_t ino,
		   uint32_t flag, const char *text, size_t len)
{
	pthread_mutex_lock(&run->lock);
	count(run, flag);
	emit(run, type, agno, ino, NULL, flag, text, len);
	pthread_mutex_unlock(&run->lock);
}

void scrub_error(struct scrub_run *run, uint32_t type, uint32_t agno, uint64_t ino,
		 const char *fmt, ...)
{
	char text[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	if (n < 0)
		n = 0;
	if ((size_t)n >= sizeof(text))
		n = sizeof(text) - 1;
	pthread_mutex_lock(&run->lock);
	run->n.errors++;
	emit(run, type, agno, ino, NULL, 0, text, (size_t)n);
	pthread_mutex_unlock(&run->lock);
}

void scrub_path_error(struct scrub_run *run, const char *path, int err)
{
	const char *text = strerror(err);
	uint32_t flag = err == EIO ? MFS_SCRUB_OFLAG_CORRUPT : 0;

	pthread_mutex_lock(&run->lock);
	count(run, flag);
	emit(run, MFS_SCRUB_NTYPES, 0, 0, path, flag, text, strlen(text));
	pthread_mutex_unlock(&run->lock);
}

void scrub_repair_report(struct scrub_run *run, uint32_t type, uint32_t agno, uint64_t ino,
			 const char *result, const char *text, const char *recheck)
{
	int ok = strcmp(result, "repaired") == 0;
	const char *act = ok ? "none" : "unmount and run mendfs_repair";
	char obj[PATH_MAX + 64];

	object_name(obj, sizeof(obj), type, agno, ino);
	pthread_mutex_lock(&run->lock);
	scrub_progress_clear(run);
	if (run->o.json) {
		fputs("{\"kind\":\"repair\",\"mountpoint\":", stdout);
		json_cstr(stdout, run->mnt);
		fprintf(stdout, ",\"phase\":%d,\"object\":", run->phase);
		json_cstr(stdout, scrub_type_name(type));
		if (is_ag_type(type))
			fprintf(stdout, ",\"agno\":%u", agno);
		if (is_inode_type(type))
			fprintf(stdout, ",\"ino\":%llu", (unsigned long long)ino);
		fputs(",\"name\":", stdout);
		json_cstr(stdout, obj);
		fprintf(stdout, ",\"severity\":\"%s\",\"result\":\"%s\",\"message\":",
			ok ? "repaired" : "unfixed", result);
		json_cstr(stdout, text);
		fputs(",\"recheck\":", stdout);
		json_cstr(stdout, recheck);
		fputs(",\"action\":", stdout);
		json_cstr(stdout, act);
		fputs("}\n", stdout);
	} else {
		fprintf(stdout, "%s: %s: %s%s%s. Action: %s.\n", ok ? "Repaired" : "Not repaired",
			obj, text, recheck[0] ? "; checked again: " : "", recheck, act);
	}
	fflush(stdout);
	pthread_mutex_unlock(&run->lock);
}

void scrub_say(struct scrub_run *run, const char *fmt, ...)
{
	FILE *f = run->o.json ? stderr : stdout;
	va_list ap;

	pthread_mutex_lock(&run->lock);
	scrub_progress_clear(run);
	va_start(ap, fmt);
	vfprintf(f, fmt, ap);
	va_end(ap);
	fputc('\n', f);
	fflush(f);
	pthread_mutex_unlock(&run->lock);
}

int scrub_exit_code(const struct scrub_run *run)
{
	int code = 0;

	if (run->n.corrupt + run->n.xcorrupt > run->n.cleared)
		code |= SCRUB_EXIT_CORRUPT;
	if (run->n.preen)
		code |= SCRUB_EXIT_PREEN;
	if (run->n.errors)
		code |= SCRUB_EXIT_OPERROR;
	if (run->n.incomplete || atomic_load(&run->stop))
		code |= SCRUB_EXIT_INCOMPLETE;
	return code;
}

static void plural(char *buf, size_t len, uint64_t n, const char *one, const char *many)
{
	snprintf(buf, len, "%llu %s", (unsigned long long)n, n == 1 ? one : many);
}

void scrub_summary(struct scrub_run *run, int code, double secs)
{
	const struct scrub_counts *n = &run->n;
	char a[64], b[64], c[64], d[64], e[64], f[64];

	pthread_mutex_lock(&run->lock);
	scrub_progress_clear(run);
	if (run->o.json) {
		int first = 1;

		fputs("{\"kind\":\"summary\",\"mountpoint\":", stdout);
		json_cstr(stdout, run->mnt);
		fprintf(stdout, ",\"objects\":%llu,\"corruptions\":%llu,\"xref\":%llu,"
			"\"preen\":%llu,\"warnings\":%llu,\"incomplete\":%llu,\"errors\":%llu,"
			"\"skipped\":%llu,\"repaired\":%llu,\"unfixed\":%llu,\"unsupported\":[",
			(unsigned long long)n->objects,
			(unsigned long long)n->corrupt, (unsigned long long)n->xcorrupt,
			(unsigned long long)n->preen, (unsigned long long)n->warnings,
			(unsigned long long)n->incomplete, (unsigned long long)n->errors,
			(unsigned long long)n->skipped, (unsigned long long)n->repaired,
			(unsigned long long)n->unfixed);
		for (uint32_t t = 0; t < MFS_SCRUB_NTYPES; t++) {
			if (!(run->unsupported & (1u << t)))
				continue;
			fputs(first ? "" : ",", stdout);
			json_cstr(stdout, scrub_type_name(t));
			first = 0;
		}
		fprintf(stdout, "],\"seconds\":%.3f,\"exit\":%d}\n", secs, code);
		fflush(stdout);
		pthread_mutex_unlock(&run->lock);
		return;
	}
	plural(a, sizeof(a), n->corrupt, "corruption", "corruptions");
	plural(b, sizeof(b), n->xcorrupt, "cross-reference mismatch",
	       "cross-reference mismatches");
	plural(c, sizeof(c), n->preen, "optimization", "optimizations");
	plural(d, sizeof(d), n->warnings, "warning", "warnings");
	plural(e, sizeof(e), n->incomplete, "incomplete check", "incomplete checks");
	plural(f, sizeof(f), n->errors, "operational error", "operational errors");
	if (!code && !n->corrupt && !n->xcorrupt)
		printf("%s: no problems found (%llu objects checked in %.1f s).\n", run->mnt,
		       (unsigned long long)n->objects, secs);
	else if (!code)
		printf("%s: %s and %s found, all repaired (%llu objects checked in %.1f s).\n",
		       run->mnt, a, b, (unsigned long long)n->objects, secs);
	else
		printf("%s: %s, %s, %s, %s, %s, %s (%llu objects checked in %.1f s).\n",
		       run->mnt, a, b, c, d, e, f, (unsigned long long)n->objects, secs);
	if (run->unsupported) {
		printf("Not checked (this daemon cannot yet):");
		for (uint32_t t = 0, first = 1; t < MFS_SCRUB_NTYPES; t++)
			if (run->unsupported & (1u << t)) {
				printf("%s %s", first ? "" : ",", scrub_type_name(t));
				first = 0;
			}
		printf(".\n");
	}
	if (n->repaired || n->unfixed)
		printf("Online repair: %llu object%s repaired, %llu left damaged.\n",
		       (unsigned long long)n->repaired, n->repaired == 1 ? "" : "s",
		       (unsigned long long)n->unfixed);
	if (code & SCRUB_EXIT_CORRUPT) {
		if (run->o.dry_run)
			printf("Run mendfs_scrub without -n to repair online what can be, or "
			       "unmount %s and run mendfs_repair on its image.\n", run->mnt);
		else
			printf("Unmount %s and run mendfs_repair on its image to repair the "
			       "rest.\n", run->mnt);
	}
	if (code & SCRUB_EXIT_INCOMPLETE)
		printf("Some checks did not finish: run mendfs_scrub again.\n");
	fflush(stdout);
	pthread_mutex_unlock(&run->lock);
}
