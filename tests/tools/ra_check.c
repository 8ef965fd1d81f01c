/*
 * ra_check.c — the bytes a sequential reader gets while the daemon reads the image ahead
 * of it (fs/readahead.c), for t_readahead.sh.
 *
 *   ra_check sparse DIR          a file of data, holes, unwritten blocks and a partial last
 *                                block, read sequentially (O_DIRECT, then buffered after
 *                                dropping the kernel's cache of it) in several request
 *                                sizes: every byte as written, zeroes elsewhere
 *   ra_check race DIR SECONDS    readers stream through files while writers overwrite them,
 *                                truncate them (short, then back to full length) and write
 *                                a second file that takes the freed blocks: a reader sees,
 *                                in every 4 KiB block, that file's own pattern for that
 *                                offset (any generation) or zeroes, never another file's
 *                                bytes nor a block mixing two generations
 *   ra_check ahead IMAGE FILE... the first MiB of FILE (on the mount of IMAGE, at least 2
 *                                MiB long) read with O_DIRECT after IMAGE was dropped from
 *                                the host's page cache: waits (bounded, 10 s) until more of
 *                                IMAGE is cached than was read, i.e. the daemon read ahead;
 *                                exit 0 then; each FILE is tried in turn; 1 if none showed
 *
 * Block contents: 8-byte words ((file id << 56) | (generation << 40) | word index in the
 * file); a block written in one pwrite of whole blocks is all of one generation.
 * Exit status 0 when everything was as expected, 1 otherwise (the first few wrong blocks
 * are printed), 2 for bad usage or a failing system call.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define BS 4096u
#define MIB (1u << 20)

static int bad_count;

static void die(const char *what)
{
	fprintf(stderr, "ra_check: %s: %s\n", what, strerror(errno));
	exit(2);
}

static uint64_t word(unsigned id, unsigned gen, uint64_t off)
{
	return ((uint64_t)id << 56) | ((uint64_t)(gen & 0xffff) << 40) | (off / 8);
}

static void fill(char *buf, size_t len, unsigned id, unsigned gen, uint64_t off)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t w = word(id, gen, off + i);

		memcpy(buf + i, &w, 8);
	}
}

static void *xalloc(size_t len)
{
	void *p;

	if (posix_memalign(&p, BS, len) != 0) {
		errno = ENOMEM;
		die("posix_memalign");
	}
	return p;
}

static void pwrite_all(int fd, const void *buf, size_t len, off_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, buf, len, off);

		if (n < 0)
			die("pwrite");
		buf = (const char *)buf + n;
		len -= (size_t)n;
		off += n;
	}
}

static void report(const char *what, const char *name, uint64_t off, uint64_t got,
		   uint64_t want)
{
	if (__atomic_fetch_add(&bad_count, 1, __ATOMIC_RELAXED) < 8)
		printf("%s: %s at byte %llu: 0x%016llx, expected 0x%016llx\n", what, name,
		       (unsigned long long)off, (unsigned long long)got,
		       (unsigned long long)want);
}

/* ---- sparse ------------------------------------------------------------------------------- */

/* The layout: what each byte of the file should read as (id 1, generation 1; 0: zero). */
struct piece {
	uint64_t off, len;
	int data;               /* 1: written, 0: hole, 2: unwritten (fallocated) */
};

static const struct piece layout[] = {
	{ 0, 1 * MIB, 1 },
	{ 1 * MIB, 2 * MIB, 0 },
	{ 3 * MIB, 1 * MIB + 3 * BS, 1 },
	{ 4 * MIB + 3 * BS, 2 * MIB, 2 },
	{ 6 * MIB + 3 * BS, 5000, 1 },          /* ends inside a block */
	{ 6 * MIB + 3 * BS + 5000, 3 * MIB, 0 },  /* a hole to the end of file */
};
#define NPIECES (sizeof(layout) / sizeof(layout[0]))

static uint64_t expect_at(uint64_t off)
{
	for (size_t i = 0; i < NPIECES; i++)
		if (off >= layout[i].off && off < layout[i].off + layout[i].len)
			return layout[i].data == 1 ? word(1, 1, off & ~7ull) : 0;
	return 0;
}

static void check_range(const char *name, const char *buf, uint64_t off, size_t len)
{
	for (size_t i = 0; i < len; i += 8) {
		uint64_t got, want = expect_at(off + i);

		memcpy(&got, buf + i, 8);
		if (got != want)
			report("sparse", name, off + i, got, want);
	}
}

static int do_sparse(const char *dir)
{
	static const size_t sizes[] = { 4096, 65536, 131072, MIB };
	uint64_t size = layout[NPIECES - 1].off + layout[NPIECES - 1].len;
	char path[4096];
	char *buf = xalloc(MIB + BS);
	int fd;

	snprintf(path, sizeof(path), "%s/sparse", dir);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0)
		die(path);
	for (size_t i = 0; i < NPIECES; i++) {
		const struct piece *p = &layout[i];

		if (p->data == 1) {
			for (uint64_t o = 0; o < p->len; o += MIB) {
				size_t n = p->len - o < MIB ? (size_t)(p->len - o) : MIB;

				fill(buf, (n + 7) & ~(size_t)7, 1, 1, p->off + o);
				pwrite_all(fd, buf, n, (off_t)(p->off + o));
			}
		} else if (p->data == 2) {
			if (fallocate(fd, 0, (off_t)p->off, (off_t)p->len) != 0)
				die("fallocate");
		}
	}
	if (ftruncate(fd, (off_t)size) != 0)
		die("ftruncate");
	if (fsync(fd) != 0)
		die("fsync");
	close(fd);

	for (int direct = 1; direct >= 0; direct--) {
		for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++) {
			uint64_t off = 0;

			fd = open(path, O_RDONLY | (direct ? O_DIRECT : 0));
			if (fd < 0)
				die(path);
			if (!direct)
				(void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
			for (;;) {
				ssize_t n = pread(fd, buf, sizes[s], (off_t)off);

				if (n < 0)
					die("pread");
				if (n == 0)
					break;
				check_range(direct ? "O_DIRECT read" : "buffered read", buf, off,
					    ((size_t)n + 7) & ~(size_t)7);
				off += (uint64_t)n;
			}
			close(fd);
			if (off != size) {
				printf("sparse: read %llu bytes of %llu\n", (unsigned long long)off,
				       (unsigned long long)size);
				bad_count++;
			}
		}
	}
	free(buf);
	if (bad_count == 0)
		printf("sparse: %llu bytes read back 8 times (4 KiB to 1 MiB requests, "
		       "O_DIRECT and buffered): as written\n", (unsigned long long)size);
	return bad_count ? 1 : 0;
}

/* ---- race --------------------------------------------------------------------------------- */

#define RACE_SIZE (24u * MIB)
#define RACE_FILES 2

struct race {
	char path[RACE_FILES][4096];
	char other[4096];
	time_t end;
	int stop;
	unsigned long blocks_checked, passes;
};

static int race_over(struct race *r)
{
	return __atomic_load_n(&r->stop, __ATOMIC_RELAXED) || time(NULL) >= r->end;
}

/* Check one block read from file `id` at `off`: its own pattern, one generation, or 0.
 * `strict` (O_DIRECT: the daemon answers under the file's lock, writes wait for it): the
 * whole block of one generation.  Otherwise (a page of the kernel's cache, which a
 * buffered write can be copying into while we copy out of it) each word on its own. */
static void check_block(const char *name, unsigned id, const char *b, uint64_t off,
			int strict)
{
	uint64_t first;

	if (!strict) {
		for (size_t i = 0; i < BS; i += 8) {
			uint64_t w;

			memcpy(&w, b + i, 8);
			if (w != 0 && (w >> 56 != id || (w & ((1ull << 40) - 1)) != (off + i) / 8))
				report("race", name, off + i, w, word(id, 0, off + i));
		}
		return;
	}
	memcpy(&first, b, 8);
	if (first == 0) {
		for (size_t i = 8; i < BS; i += 8) {
			uint64_t w;

			memcpy(&w, b + i, 8);
			if (w != 0) {
				report("race: a zero block with data", name, off + i, w, 0);
				return;
			}
		}
		return;
	}
	unsigned gen = (unsigned)((first >> 40) & 0xffff);

	for (size_t i = 0; i < BS; i += 8) {
		uint64_t w, want = word(id, gen, off + i);

		memcpy(&w, b + i, 8);
		if (w != want) {
			report("race", name, off + i, w, want);
			return;
		}
	}
}

static void *race_reader(void *arg)
{
	struct race *r = arg;
	char *buf = xalloc(MIB);
	unsigned k = 0;

	while (!race_over(r)) {
		unsigned id = k % RACE_FILES;
		int direct = (k / RACE_FILES) % 2;
		int fd = open(r->path[id], O_RDONLY | (direct ? O_DIRECT : 0));
		uint64_t off = 0;

		k++;
		if (fd < 0)
			die(r->path[id]);
		if (!direct)
			(void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
		while (!race_over(r)) {
			ssize_t n = pread(fd, buf, 256 * 1024, (off_t)off);

			if (n < 0)
				die("pread");
			if (n == 0)
				break;
			for (size_t i = 0; i + BS <= (size_t)n; i += BS)
				check_block(r->path[id], (unsigned)id + 1, buf + i, off + i,
					    direct);
			__atomic_fetch_add(&r->blocks_checked, (unsigned long)n / BS,
					   __ATOMIC_RELAXED);
			off += (uint64_t)n;
		}
		close(fd);
		__atomic_fetch_add(&r->passes, 1, __ATOMIC_RELAXED);
	}
	free(buf);
	return NULL;
}

/* Overwrite, truncate short and grow back, rewrite: generations go up. */
static void *race_writer(void *arg)
{
	struct race *r = arg;
	char *buf = xalloc(MIB);
	unsigned gen = 2, round = 0;

	while (!race_over(r)) {
		unsigned id = round % RACE_FILES;
		int fd = open(r->path[id], O_RDWR);
		uint64_t cut = (uint64_t)(round * 7 % 20 + 1) * MIB;

		round++;
		if (fd < 0)
			die(r->path[id]);
		/* Part of the file rewritten in place, at a moving offset. */
		for (uint64_t o = cut; o < cut + 2 * MIB && o < RACE_SIZE; o += MIB) {
			fill(buf, MIB, id + 1, gen, o);
			pwrite_all(fd, buf, MIB, (off_t)o);
		}
		gen++;
		/* Shorter, then the full length again: the tail reads as zeroes until rewritten. */
		if (ftruncate(fd, (off_t)cut) != 0 || ftruncate(fd, RACE_SIZE) != 0)
			die("ftruncate");
		for (uint64_t o = cut; o < RACE_SIZE && !race_over(r); o += MIB) {
			fill(buf, MIB, id + 1, gen, o);
			pwrite_all(fd, buf, MIB, (off_t)o);
		}
		gen++;
		close(fd);
	}
	free(buf);
	return NULL;
}

/* A third file written and removed over and over: it takes the blocks truncate freed. */
static void *race_other(void *arg)
{
	struct race *r = arg;
	char *buf = xalloc(MIB);

	fill(buf, MIB, 0x7f, 0x7f7f, 0);
	while (!race_over(r)) {
		int fd = open(r->other, O_WRONLY | O_CREAT | O_TRUNC, 0644);

		if (fd < 0)
			die(r->other);
		for (unsigned i = 0; i < 8; i++)
			pwrite_all(fd, buf, MIB, (off_t)i * MIB);
		close(fd);
		if (unlink(r->other) != 0)
			die("unlink");
	}
	free(buf);
	return NULL;
}

static int do_race(const char *dir, int secs)
{
	struct race r = { 0 };
	pthread_t th[4];
	char *buf = xalloc(MIB);

	for (int i = 0; i < RACE_FILES; i++) {
		int fd;

		snprintf(r.path[i], sizeof(r.path[i]), "%s/race%d", dir, i);
		fd = open(r.path[i], O_RDWR | O_CREAT | O_TRUNC, 0644);
		if (fd < 0)
			die(r.path[i]);
		for (uint64_t o = 0; o < RACE_SIZE; o += MIB) {
			fill(buf, MIB, (unsigned)i + 1, 1, o);
			pwrite_all(fd, buf, MIB, (off_t)o);
		}
		close(fd);
	}
	free(buf);
	snprintf(r.other, sizeof(r.other), "%s/other", dir);
	r.end = time(NULL) + secs;
	pthread_create(&th[0], NULL, race_reader, &r);
	pthread_create(&th[1], NULL, race_reader, &r);
	pthread_create(&th[2], NULL, race_writer, &r);
	pthread_create(&th[3], NULL, race_other, &r);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	printf("race: %lu blocks checked in %lu passes over %d s: %d wrong\n",
	       r.blocks_checked, r.passes, secs, bad_count);
	if (r.passes < 2) {
		printf("race: fewer than 2 passes: nothing was shown\n");
		return 1;
	}
	return bad_count ? 1 : 0;
}

/* ---- ahead -------------------------------------------------------------------------------- */

static size_t resident(const unsigned char *vec, size_t pages)
{
	size_t n = 0;

	for (size_t i = 0; i < pages; i++)
		n += vec[i] & 1;
	return n;
}

/* One try: drop IMAGE from the host's cache, read the first MiB of `file` with O_DIRECT,
 * then poll (bounded) for more than 1.5 MiB of IMAGE to be cached.  1 when it was. */
static int ahead_once(const char *file, int ifd, void *map, size_t len, unsigned char *vec)
{
	long pg = sysconf(_SC_PAGESIZE);
	size_t pages = (len + (size_t)pg - 1) / (size_t)pg;
	long long before, now = 0, want = 3 * MIB / 2 / pg;
	struct timespec nap = { 0, 40 * 1000 * 1000 };
	char *buf = xalloc(256 * 1024);
	int fd = open(file, O_RDONLY | O_DIRECT);

	if (fd < 0)
		die(file);
	if (fdatasync(ifd) != 0 || posix_fadvise(ifd, 0, 0, POSIX_FADV_DONTNEED) != 0)
		die("dropping the image's cache");
	if (mincore(map, len, vec) != 0)
		die("mincore");
	before = (long long)resident(vec, pages);
	for (off_t o = 0; o < (off_t)MIB; o += 256 * 1024)
		if (pread(fd, buf, 256 * 1024, o) != 256 * 1024)
			die("pread");
	/* The metadata the daemon reads to serve it is a few blocks, the data 1 MiB: more
	 * than 1.5 MiB new in the cache is data read ahead. */
	for (int i = 0; i < 250; i++) {
		if (mincore(map, len, vec) != 0)
			die("mincore");
		now = (long long)resident(vec, pages);
		if (now - before > want)
			break;
		nanosleep(&nap, NULL);
	}
	printf("ahead: %s: 1 MiB read, %lld KiB of the image cached since (before: %lld KiB)\n",
	       file, (now - before) * pg / 1024, before * pg / 1024);
	close(fd);
	free(buf);
	return now - before > want;
}

/* Each FILE in turn until one shows readahead: another process dropping the host's caches
 * (a benchmark next door) can empty it between our reads and our look. */
static int do_ahead(const char *image, char **files, int nfiles)
{
	int ifd = open(image, O_RDONLY), seen = 0;
	struct stat st;
	unsigned char *vec;
	void *map;

	if (ifd < 0 || fstat(ifd, &st) != 0)
		die(image);
	map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, ifd, 0);
	vec = malloc((size_t)st.st_size / (size_t)sysconf(_SC_PAGESIZE) + 1);
	if (map == MAP_FAILED || !vec)
		die("mmap");
	for (int i = 0; i < nfiles && !seen; i++)
		seen = ahead_once(files[i], ifd, map, (size_t)st.st_size, vec);
	munmap(map, (size_t)st.st_size);
	close(ifd);
	free(vec);
	return seen ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "sparse") == 0)
		return do_sparse(argv[2]);
	if (argc == 4 && strcmp(argv[1], "race") == 0)
		return do_race(argv[2], atoi(argv[3]));
	if (argc >= 4 && strcmp(argv[1], "ahead") == 0)
		return do_ahead(argv[2], argv + 3, argc - 3);
	fprintf(stderr, "usage: ra_check sparse DIR | race DIR SECONDS | ahead IMAGE FILE...\n");
	return 2;
}
