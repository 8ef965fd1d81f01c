/*
 * integrity.c — the data-integrity model test: seeded random writes, appends, writes
 * through shared mappings, truncates, punches, zero ranges and preallocations across many
 * files on a mounted filesystem, with every file's expected content kept in a model and
 * verified against it.
 *
 *   integrity run    [-s SEED] [-f FILES] [-n OPS] [-p PHASES] [-j THREADS] DIR STATE
 *   integrity verify DIR STATE
 *
 * `run` starts from STATE when it exists (the model saved by an earlier run, e.g. before a
 * remount) or from FILES new empty files; it does OPS operations in PHASES phases and
 * verifies every file after each phase, then saves the model to STATE.  `verify` checks
 * DIR against STATE: the names in DIR, each file's size and content.  Before verifying, a
 * file's page cache is dropped (POSIX_FADV_DONTNEED), so its content is read from the
 * daemon, not from the kernel's copy.
 *
 * The seed (option -s, else $INTEGRITY_SEED, else the clock) is printed; the same seed and
 * options replay the same operations.  Each of THREADS threads owns the files whose index
 * is its number modulo THREADS, with its own random stream, so the operations on each file
 * are the same whatever the interleaving.
 *
 * The model: a file is its size and a sorted list of disjoint segments [start, end) that
 * hold data written by write number `gen`; the byte at offset p of such a segment is
 * pat(gen, p), every other byte up to the size is zero.  Files with index divisible by 10
 * also get writes and sizes past 4 GiB (sparse); they are verified segment by segment and
 * through SEEK_DATA/SEEK_HOLE (every region the filesystem calls data is read), the others
 * are read whole.
 *
 * Exit status: 0 when everything matched, 1 on a mismatch (the first few are printed with
 * the file, offset, expected and found bytes, and the operations that touched the offset),
 * 2 on a usage or I/O error.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KIB (1ULL << 10)
#define MIB (1ULL << 20)
#define GIB (1ULL << 30)
#define SMALL_MAX (4 * MIB)          /* offsets of ordinary files stay below about this */
#define FAR_BASE (4 * GIB - 2 * MIB)  /* far writes land in [FAR_BASE, FAR_BASE + 2 GiB) */
#define WHOLE_MAX (16 * MIB)          /* files up to this size are verified whole */
#define MAX_REPORTS 8

struct seg {
	uint64_t start, end, gen;
};

struct mfile {
	uint64_t size;
	struct seg *v;
	size_t n, max;
};

/* What an operation did, for the report of a mismatch. */
enum op_kind { OP_WRITE, OP_APPEND, OP_MMAP, OP_TRUNC, OP_PUNCH, OP_ZERO, OP_ZERO_KEEP,
	       OP_FALLOC, OP_FALLOC_KEEP, OP_READ };
static const char *const op_names[] = { "write", "append", "mmap-write", "truncate", "punch",
					"zero-range", "zero-range-keep", "fallocate",
					"fallocate-keep", "read-check" };

struct oprec {
	uint32_t file;
	uint8_t kind;
	uint32_t phase;
	uint64_t off, len, gen;
};

static struct mfile *files;
static unsigned nfiles = 50;
static char *dirpath;
static uint64_t seed, round_no;      /* round: how many `run`s the state has seen */
static int failures;
static pthread_mutex_t report_lock = PTHREAD_MUTEX_INITIALIZER;

static struct oprec *oplog;
static size_t oplog_n, oplog_max;
static pthread_mutex_t oplog_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- randomness and content ------------------------------------------------------------ */

static uint64_t mix(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ULL;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
	return x ^ (x >> 31);
}

struct rng {
	uint64_t s;
};

static uint64_t rnd(struct rng *r)
{
	r->s += 0x9e3779b97f4a7c15ULL;
	return mix(r->s);
}

static uint64_t below(struct rng *r, uint64_t n)
{
	return n ? rnd(r) % n : 0;
}

/* A length: mostly small, sometimes block-sized or around block edges, sometimes large. */
static uint64_t some_len(struct rng *r, uint64_t max)
{
	static const uint64_t edges[] = { 1, 511, 512, 4095, 4096, 4097, 8192, 65536, 131072 };
	uint64_t l;

	switch (below(r, 6)) {
	case 0:
		l = edges[below(r, sizeof(edges) / sizeof(edges[0]))];
		break;
	case 1:
		l = 1 + below(r, 256);
		break;
	case 2:
	case 3:
		l = 1 + below(r, 16 * KIB);
		break;
	case 4:
		l = 1 + below(r, 128 * KIB);
		break;
	default:
		l = 4 * KIB * (1 + below(r, 64));
		break;
	}
	return l > max ? max : l;
}

static unsigned char pat(uint64_t gen, uint64_t pos)
{
	return (unsigned char)(mix(gen * 0x2545f4914f6cdd1dULL ^ (pos >> 3)) >> ((pos & 7) * 8));
}

static void fill_pat(unsigned char *buf, uint64_t gen, uint64_t pos, size_t n)
{
	size_t i = 0;

	while (i < n && ((pos + i) & 7))
		buf[i] = pat(gen, pos + i), i++;
	for (; i + 8 <= n; i += 8) {
		uint64_t x = mix(gen * 0x2545f4914f6cdd1dULL ^ ((pos + i) >> 3));

		memcpy(buf + i, &x, 8);      /* little-endian: byte k is x >> 8k */
	}
	for (; i < n; i++)
		buf[i] = pat(gen, pos + i);
}

/* ---- the model ---------------------------------------------------------------------------- */

static int far_file(unsigned i)
{
	return i % 10 == 0;
}

/* Room for one more segment. */
static int seg_room(struct mfile *f)
{
	size_t nm = f->max ? f->max * 2 : 16;
	struct seg *nv;

	if (f->n < f->max)
		return 0;
	nv = realloc(f->v, nm * sizeof(*nv));
	if (!nv)
		return -1;
	f->v = nv;
	f->max = nm;
	return 0;
}

/* Remove [a, b) from f's segments (splitting those that straddle an edge). */
static int seg_cut(struct mfile *f, uint64_t a, uint64_t b)
{
	size_t w = 0;
	struct seg extra = { 0, 0, 0 };
	int have_extra = 0;

	if (a >= b)
		return 0;
	for (size_t i = 0; i < f->n; i++) {
		struct seg s = f->v[i];

		if (s.end <= a || s.start >= b) {
			f->v[w++] = s;
			continue;
		}
		if (s.start < a && s.end > b) {       /* a hole in the middle: split */
			extra = (struct seg){ b, s.end, s.gen };
			have_extra = 1;
			s.end = a;
			f->v[w++] = s;
			continue;
		}
		if (s.start < a)
			s.end = a;
		else if (s.end > b)
			s.start = b;
		else
			continue;                     /* wholly inside: gone */
		f->v[w++] = s;
	}
	f->n = w;
	if (have_extra) {
		size_t i;

		if (seg_room(f) != 0)
			return -1;
		for (i = f->n; i > 0 && f->v[i - 1].start > extra.start; i--)
			f->v[i] = f->v[i - 1];
		f->v[i] = extra;
		f->n++;
	}
	return 0;
}

static int seg_put(struct mfile *f, uint64_t a, uint64_t b, uint64_t gen)
{
	size_t i;

	if (seg_cut(f, a, b) != 0)
		return -1;
	if (seg_room(f) != 0)
		return -1;
	for (i = f->n; i > 0 && f->v[i - 1].start > a; i--)
		f->v[i] = f->v[i - 1];
	f->v[i] = (struct seg){ a, b, gen };
	f->n++;
	return 0;
}

/* The expected bytes of [off, off + n) (the caller clipped it to the size). */
static void expect(const struct mfile *f, uint64_t off, unsigned char *buf, size_t n)
{
	memset(buf, 0, n);
	for (size_t i = 0; i < f->n; i++) {
		const struct seg *s = &f->v[i];
		uint64_t a = s->start > off ? s->start : off;
		uint64_t b = s->end < off + n ? s->end : off + n;

		if (s->start >= off + n)
			break;
		if (a < b)
			fill_pat(buf + (a - off), s->gen, a, (size_t)(b - a));
	}
}

static void log_op(unsigned file, int kind, uint32_t phase, uint64_t off, uint64_t len,
		   uint64_t gen)
{
	pthread_mutex_lock(&oplog_lock);
	if (oplog_n == oplog_max) {
		size_t nm = oplog_max ? oplog_max * 2 : 4096;
		struct oprec *nv = realloc(oplog, nm * sizeof(*nv));

		if (nv) {
			oplog = nv;
			oplog_max = nm;
		}
	}
	if (oplog_n < oplog_max)
		oplog[oplog_n++] = (struct oprec){ file, (uint8_t)kind, phase, off, len, gen };
	pthread_mutex_unlock(&oplog_lock);
}

/* ---- reporting --------------------------------------------------------------------------- */

static void mismatch(unsigned fi, uint64_t off, unsigned char want, unsigned char got,
		     const char *when)
{
	const struct mfile *f = &files[fi];
	uint64_t gen = 0;
	int shown = 0;

	pthread_mutex_lock(&report_lock);
	if (failures++ >= MAX_REPORTS) {
		pthread_mutex_unlock(&report_lock);
		return;
	}
	for (size_t i = 0; i < f->n; i++)
		if (f->v[i].start <= off && off < f->v[i].end)
			gen = f->v[i].gen;
	printf("MISMATCH %s: file f%03u offset %llu (size %llu): expected %02x (%s), found %02x\n",
	       when, fi, (unsigned long long)off, (unsigned long long)f->size, want,
	       gen ? "data" : "zero", got);
	if (gen)
		printf("  the byte was written by write #%llx\n", (unsigned long long)gen);
	pthread_mutex_lock(&oplog_lock);
	for (size_t i = oplog_n; i-- > 0 && shown < 12;) {
		const struct oprec *o = &oplog[i];
		int touches = o->kind == OP_TRUNC ? 1 : (o->off <= off && off < o->off + o->len);

		if (o->file != fi || !touches)
			continue;
		printf("  op %zu (phase %u): %s off %llu len %llu gen %llx\n", i, o->phase,
		       op_names[o->kind], (unsigned long long)o->off, (unsigned long long)o->len,
		       (unsigned long long)o->gen);
		shown++;
	}
	pthread_mutex_unlock(&oplog_lock);
	fflush(stdout);
	pthread_mutex_unlock(&report_lock);
}

static void problem(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void problem(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&report_lock);
	if (failures++ < MAX_REPORTS) {
		printf("PROBLEM: ");
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
		printf("\n");
		fflush(stdout);
	}
	pthread_mutex_unlock(&report_lock);
}

/* ---- verification ------------------------------------------------------------------------ */

static int open_file(unsigned i, int flags)
{
	char p[4096];

	snprintf(p, sizeof(p), "%s/f%03u", dirpath, i);
	return open(p, flags, 0644);
}

/* Compare [off, off + len) of file i (clipped to the model's size) with the model.
 * Returns 0, or -1 after reporting a difference or an error. */
static int verify_range(unsigned fi, int fd, uint64_t off, uint64_t len, const char *when)
{
	const struct mfile *f = &files[fi];
	size_t chunk = 1 * MIB;
	unsigned char *want = malloc(chunk), *got = malloc(chunk);
	int ret = 0;

	if (!want || !got) {
		problem("out of memory");
		free(want);
		free(got);
		return -1;
	}
	if (off > f->size)
		off = f->size;
	if (len > f->size - off)
		len = f->size - off;
	while (len > 0 && ret == 0) {
		size_t n = len < chunk ? (size_t)len : chunk;
		ssize_t r = pread(fd, got, n, (off_t)off);

		if (r != (ssize_t)n) {
			problem("%s: file f%03u: read of %zu bytes at %llu returned %zd (%s)", when, fi,
				n, (unsigned long long)off, r, r < 0 ? strerror(errno) : "short");
			ret = -1;
			break;
		}
		expect(f, off, want, n);
		if (memcmp(want, got, n) != 0) {
			for (size_t k = 0; k < n; k++)
				if (want[k] != got[k]) {
					mismatch(fi, off + k, want[k], got[k], when);
					break;
				}
			ret = -1;
		}
		off += n;
		len -= n;
	}
	free(want);
	free(got);
	return ret;
}

static int verify_file(unsigned fi, const char *when)
{
	const struct mfile *f = &files[fi];
	struct stat st;
	int fd = open_file(fi, O_RDONLY), ret = 0;

	if (fd < 0) {
		problem("%s: open f%03u: %s", when, fi, strerror(errno));
		return -1;
	}
	/* Read from the daemon, not from the kernel's cached pages. */
	posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != f->size) {
		problem("%s: file f%03u: size %lld, expected %llu", when, fi,
			(long long)st.st_size, (unsigned long long)f->size);
		close(fd);
		return -1;
	}
	if (f->size <= WHOLE_MAX) {
		ret = verify_range(fi, fd, 0, f->size, when);
	} else {
		uint64_t pos = 0;

		ret |= verify_range(fi, fd, 0, WHOLE_MAX, when);
		ret |= verify_range(fi, fd, f->size - (f->size < 64 * KIB ? f->size : 64 * KIB),
				    64 * KIB, when);
		for (size_t i = 0; i < f->n && !ret; i++) {
			uint64_t a = f->v[i].start > 8 * KIB ? f->v[i].start - 8 * KIB : 0;

			ret |= verify_range(fi, fd, a, f->v[i].end - a + 8 * KIB, when);
		}
		/* Whatever the filesystem calls data must match too (zeroes outside the
		 * model's segments). */
		while (!ret && pos < f->size) {
			off_t d = lseek(fd, (off_t)pos, SEEK_DATA), h;

			if (d < 0) {
				if (errno != ENXIO) {
					problem("%s: f%03u: SEEK_DATA at %llu: %s", when, fi,
						(unsigned long long)pos, strerror(errno));
					ret = -1;
				}
				break;
			}
			h = lseek(fd, d, SEEK_HOLE);
			if (h <= d) {
				problem("%s: f%03u: SEEK_HOLE at %lld gave %lld (%s)", when, fi,
					(long long)d, (long long)h, h < 0 ? strerror(errno) : "");
				ret = -1;
				break;
			}
			ret |= verify_range(fi, fd, (uint64_t)d, (uint64_t)(h - d), when);
			pos = (uint64_t)h;
		}
	}
	close(fd);
	return ret;
}

/* Every file, and the names in the directory: exactly f000 .. f(n-1). */
static int verify_all(const char *when, unsigned from, unsigned step)
{
	int ret = 0;

	for (unsigned i = from; i < nfiles; i += step)
		ret |= verify_file(i, when);
	return ret;
}

static int verify_names(const char *when)
{
	DIR *d = opendir(dirpath);
	struct dirent *de;
	unsigned seen = 0;
	int ret = 0;

	if (!d) {
		problem("%s: opendir %s: %s", when, dirpath, strerror(errno));
		return -1;
	}
	while ((de = readdir(d))) {
		unsigned i;
		char extra;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (sscanf(de->d_name, "f%3u%c", &i, &extra) != 1 || i >= nfiles) {
			problem("%s: unexpected name '%s'", when, de->d_name);
			ret = -1;
			continue;
		}
		seen++;
	}
	closedir(d);
	if (seen != nfiles) {
		problem("%s: %u names, expected %u", when, seen, nfiles);
		ret = -1;
	}
	return ret;
}

/* ---- operations ------------------------------------------------------------------------- */

struct worker {
	unsigned id, nthreads;
	uint64_t ops;
	unsigned phases;
	int err;
	pthread_t th;
};

static pthread_barrier_t phase_barrier;

static int do_op(struct worker *w, struct rng *r, unsigned phase, uint64_t *gen_ctr)
{
	unsigned fi = w->id + w->nthreads * (unsigned)below(r, (nfiles - w->id + w->nthreads - 1) /
							     w->nthreads);
	struct mfile *f = &files[fi];
	int far = far_file(fi) && below(r, 3) == 0;
	uint64_t space = f->size + 256 * KIB, off, len, gen;
	unsigned k = (unsigned)below(r, 100);
	int kind, fd, ret = 0;
	unsigned char *buf = NULL;

	if (space > SMALL_MAX && !far)
		space = SMALL_MAX;
	off = far ? FAR_BASE + below(r, 2 * GIB) : below(r, space);
	len = some_len(r, 1 * MIB);
	gen = ((round_no + 1) << 48) | ((uint64_t)w->id << 40) | ++*gen_ctr;
	kind = k < 34 ? OP_WRITE : k < 42 ? OP_APPEND : k < 46 ? OP_MMAP : k < 56 ? OP_TRUNC :
	       k < 68 ? OP_PUNCH : k < 73 ? OP_ZERO : k < 78 ? OP_ZERO_KEEP :
	       k < 83 ? OP_FALLOC : k < 88 ? OP_FALLOC_KEEP : OP_READ;
	fd = open_file(fi, kind == OP_APPEND ? O_WRONLY | O_APPEND : O_RDWR);
	if (fd < 0) {
		problem("open f%03u: %s", fi, strerror(errno));
		return -1;
	}
	switch (kind) {
	case OP_APPEND:
		off = f->size;
		/* fall through */
	case OP_WRITE:
		buf = malloc(len);
		if (!buf)
			break;
		fill_pat(buf, gen, off, len);
		if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len) {
			problem("%s f%03u at %llu, %llu bytes: %s", op_names[kind], fi,
				(unsigned long long)off, (unsigned long long)len, strerror(errno));
			ret = -1;
			break;
		}
		seg_put(f, off, off + len, gen);
		if (off + len > f->size)
			f->size = off + len;
		break;
	case OP_MMAP: {
		/* Inside the file (a mapping does not extend it), up to 256 KiB. */
		uint64_t moff, mlen;
		long pg = sysconf(_SC_PAGESIZE);
		unsigned char *m;

		if (f->size == 0)
			break;
		off = below(r, f->size);
		len = 1 + below(r, f->size - off < 256 * KIB ? f->size - off : 256 * KIB);
		moff = off & ~(uint64_t)(pg - 1);
		mlen = off + len - moff;
		m = mmap(NULL, mlen, PROT_READ | PROT_WRITE, MAP_SHARED, fd, (off_t)moff);
		if (m == MAP_FAILED) {
			problem("mmap f%03u at %llu: %s", fi, (unsigned long long)moff,
				strerror(errno));
			ret = -1;
			break;
		}
		fill_pat(m + (off - moff), gen, off, len);
		if (msync(m, mlen, MS_SYNC) != 0) {
			problem("msync f%03u: %s", fi, strerror(errno));
			ret = -1;
		}
		munmap(m, mlen);
		seg_put(f, off, off + len, gen);
		break;
	}
	case OP_TRUNC:
		if (far)
			off = FAR_BASE + below(r, 2 * GIB);
		else if (below(r, 2) || f->size > SMALL_MAX)
			off = below(r, f->size + 1);
		else
			off = f->size + below(r, 1 * MIB);
		len = 0;
		if (ftruncate(fd, (off_t)off) != 0) {
			problem("truncate f%03u to %llu: %s", fi, (unsigned long long)off,
				strerror(errno));
			ret = -1;
			break;
		}
		seg_cut(f, off, UINT64_MAX);
		f->size = off;
		break;
	case OP_PUNCH:
	case OP_ZERO:
	case OP_ZERO_KEEP: {
		int mode = kind == OP_PUNCH ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE :
			   kind == OP_ZERO ? FALLOC_FL_ZERO_RANGE :
			   FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

		if (!far && f->size)
			off = below(r, f->size + 64 * KIB);
		len = some_len(r, 2 * MIB);
		if (fallocate(fd, mode, (off_t)off, (off_t)len) != 0) {
			problem("%s f%03u at %llu, %llu bytes: %s", op_names[kind], fi,
				(unsigned long long)off, (unsigned long long)len, strerror(errno));
			ret = -1;
			break;
		}
		seg_cut(f, off, off + len);
		if (kind == OP_ZERO && off + len > f->size)
			f->size = off + len;
		break;
	}
	case OP_FALLOC:
	case OP_FALLOC_KEEP:
		if (fallocate(fd, kind == OP_FALLOC ? 0 : FALLOC_FL_KEEP_SIZE, (off_t)off,
			      (off_t)len) != 0) {
			problem("%s f%03u at %llu, %llu bytes: %s", op_names[kind], fi,
				(unsigned long long)off, (unsigned long long)len, strerror(errno));
			ret = -1;
			break;
		}
		if (kind == OP_FALLOC && off + len > f->size)
			f->size = off + len;
		break;
	case OP_READ:
		if (!far && f->size)
			off = below(r, f->size);
		ret = verify_range(fi, fd, off, len, "read-check");
		break;
	}
	if (!buf && (kind == OP_WRITE || kind == OP_APPEND)) {
		problem("out of memory");
		ret = -1;
	}
	free(buf);
	close(fd);
	log_op(fi, kind, phase, off, len, gen);
	return ret;
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct rng r = { mix(seed ^ mix(round_no * 1000 + w->id)) };
	uint64_t gen_ctr = 0;

	for (unsigned p = 0; p < w->phases; p++) {
		uint64_t n = w->ops / w->phases + (p < w->ops % w->phases);
		char when[64];

		for (uint64_t i = 0; i < n && !w->err; i++)
			if (do_op(w, &r, p, &gen_ctr) != 0)
				w->err = 1;
		pthread_barrier_wait(&phase_barrier);
		snprintf(when, sizeof(when), "after phase %u", p + 1);
		if (verify_all(when, w->id, w->nthreads) != 0)
			w->err = 1;
		pthread_barrier_wait(&phase_barrier);
	}
	return NULL;
}

/* ---- the state file ---------------------------------------------------------------------- */

static int save_state(const char *path)
{
	char tmp[4096];
	FILE *f;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	f = fopen(tmp, "w");
	if (!f)
		return -1;
	fprintf(f, "mendfs-integrity 1\nseed %" PRIu64 "\nround %" PRIu64 "\nfiles %u\n", seed,
		round_no, nfiles);
	for (unsigned i = 0; i < nfiles; i++) {
		fprintf(f, "file %u %" PRIu64 " %zu\n", i, files[i].size, files[i].n);
		for (size_t k = 0; k < files[i].n; k++)
			fprintf(f, "%" PRIu64 " %" PRIu64 " %" PRIu64 "\n", files[i].v[k].start,
				files[i].v[k].end, files[i].v[k].gen);
	}
	if (fclose(f) != 0)
		return -1;
	return rename(tmp, path);
}

static int load_state(const char *path)
{
	FILE *f = fopen(path, "r");
	int ver;

	if (!f)
		return -1;
	if (fscanf(f, "mendfs-integrity %d seed %" SCNu64 " round %" SCNu64 " files %u", &ver,
		   &seed, &round_no, &nfiles) != 4 || ver != 1 || nfiles == 0 || nfiles > 1000)
		goto bad;
	files = calloc(nfiles, sizeof(*files));
	if (!files)
		goto bad;
	for (unsigned i = 0; i < nfiles; i++) {
		unsigned idx;
		size_t n;

		if (fscanf(f, " file %u %" SCNu64 " %zu", &idx, &files[i].size, &n) != 3 ||
		    idx != i)
			goto bad;
		for (size_t k = 0; k < n; k++) {
			uint64_t a, b, g;

			if (fscanf(f, "%" SCNu64 " %" SCNu64 " %" SCNu64, &a, &b, &g) != 3 ||
			    seg_put(&files[i], a, b, g) != 0)
				goto bad;
		}
	}
	fclose(f);
	return 0;
bad:
	fprintf(stderr, "integrity: %s: not a state file of this program\n", path);
	fclose(f);
	return -2;
}

/* ---- main ----------------------------------------------------------------------------- */

static void usage(void)
{
	fprintf(stderr,
		"usage: integrity run [-s SEED] [-f FILES] [-n OPS] [-p PHASES] [-j THREADS] DIR STATE\n"
		"       integrity verify DIR STATE\n");
	exit(2);
}

int main(int argc, char **argv)
{
	uint64_t ops = 3000;
	unsigned phases = 4, nthreads = 2;
	const char *statepath, *env = getenv("INTEGRITY_SEED");
	int run, c, have_seed = 0, err;
	struct timespec t0, t1;

	if (argc < 2)
		usage();
	run = strcmp(argv[1], "run") == 0;
	if (!run && strcmp(argv[1], "verify") != 0)
		usage();
	optind = 2;
	while ((c = getopt(argc, argv, "s:f:n:p:j:")) != -1) {
		switch (c) {
		case 's': seed = strtoull(optarg, NULL, 0); have_seed = 1; break;
		case 'f': nfiles = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'n': ops = strtoull(optarg, NULL, 0); break;
		case 'p': phases = (unsigned)strtoul(optarg, NULL, 0); break;
		case 'j': nthreads = (unsigned)strtoul(optarg, NULL, 0); break;
		default: usage();
		}
	}
	if (optind + 2 != argc || nfiles == 0 || nfiles > 1000 || phases == 0 || nthreads == 0 ||
	    nthreads > 16 || nthreads > nfiles)
		usage();
	dirpath = argv[optind];
	statepath = argv[optind + 1];
	setvbuf(stdout, NULL, _IOLBF, 0);
	clock_gettime(CLOCK_MONOTONIC, &t0);

	err = load_state(statepath);
	if (err == -2)
		return 2;
	if (err == 0) {
		printf("integrity: state %s: seed %" PRIu64 ", round %" PRIu64 ", %u files\n",
		       statepath, seed, round_no, nfiles);
	} else if (!run) {
		fprintf(stderr, "integrity: %s: %s\n", statepath, strerror(errno));
		return 2;
	} else {
		if (!have_seed)
			seed = env && *env ? strtoull(env, NULL, 0) :
			       (uint64_t)time(NULL) ^ (uint64_t)getpid() << 20;
		files = calloc(nfiles, sizeof(*files));
		if (!files)
			return 2;
		for (unsigned i = 0; i < nfiles; i++) {
			int fd = open_file(i, O_CREAT | O_EXCL | O_WRONLY);

			if (fd < 0) {
				fprintf(stderr, "integrity: create f%03u in %s: %s\n", i, dirpath,
					strerror(errno));
				return 2;
			}
			close(fd);
		}
		printf("integrity: seed %" PRIu64 " (replay: INTEGRITY_SEED=%" PRIu64 "), %u files\n",
		       seed, seed, nfiles);
	}

	if (run) {
		struct worker *w = calloc(nthreads, sizeof(*w));
		int bad = 0;

		if (!w || pthread_barrier_init(&phase_barrier, NULL, nthreads) != 0)
			return 2;
		for (unsigned t = 0; t < nthreads; t++) {
			w[t] = (struct worker){ .id = t, .nthreads = nthreads, .phases = phases,
						.ops = ops / nthreads + (t < ops % nthreads) };
			if (pthread_create(&w[t].th, NULL, worker_main, &w[t]) != 0)
				return 2;
		}
		for (unsigned t = 0; t < nthreads; t++) {
			pthread_join(w[t].th, NULL);
			bad |= w[t].err;
		}
		free(w);
		round_no++;
		if (verify_names("after the run") != 0)
			bad = 1;
		if (save_state(statepath) != 0) {
			fprintf(stderr, "integrity: saving %s: %s\n", statepath, strerror(errno));
			return 2;
		}
		if (bad && !failures)
			failures = 1;
	} else {
		verify_names("verify");
		verify_all("verify", 0, 1);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	{
		uint64_t bytes = 0, segs = 0;

		for (unsigned i = 0; i < nfiles; i++) {
			for (size_t k = 0; k < files[i].n; k++)
				bytes += files[i].v[k].end - files[i].v[k].start;
			segs += files[i].n;
		}
		printf("integrity: %s%s: %u files, %" PRIu64 " data segments, %.1f MiB of data, "
		       "%.1f s%s\n", run ? "run" : "verify",
		       run ? "" : " (page cache dropped)", nfiles, segs, (double)bytes / MIB,
		       (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9,
		       failures ? ": FAILED" : ": all content matches the model");
	}
	return failures ? 1 : 0;
}
