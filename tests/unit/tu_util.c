/*
 * tu_util.c — the unit-test harness's random numbers, clock, temporary images, programs and
 * suite runner (see tu.h).
 */
#include "tu.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bcache.h"
#include "crc32c.h"
#include "fs.h"

/* ---- random numbers -------------------------------------------------------------------------- */
static uint64_t tu_rng_state = 0x9e3779b97f4a7c15ull;

void tu_srand(uint64_t seed)
{
	/* splitmix64 of the seed: unrelated streams for nearby seeds, never the stuck state 0 */
	uint64_t z = seed + 0x9e3779b97f4a7c15ull;

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	z ^= z >> 31;
	tu_rng_state = z ? z : 0x9e3779b97f4a7c15ull;
}

uint64_t tu_rand(void)
{
	/* xorshift64* */
	tu_rng_state ^= tu_rng_state >> 12;
	tu_rng_state ^= tu_rng_state << 25;
	tu_rng_state ^= tu_rng_state >> 27;
	return tu_rng_state * 2685821657736338717ull;
}

uint32_t tu_rand_below(uint32_t n)
{
	return n ? (uint32_t)(tu_rand() % n) : 0;
}

uint64_t tu_seed(const char *env, const char *what)
{
	const char *s = env ? getenv(env) : NULL;
	uint64_t seed;

	if (s && *s) {
		seed = strtoull(s, NULL, 0);
	} else {
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		seed = ((uint64_t)ts.tv_sec * 2654435761u) ^ (uint64_t)ts.tv_nsec ^
		       ((uint64_t)getpid() << 32);
	}
	if (!seed)
		seed = 1;
	printf("%s: seed %" PRIu64 " (set %s=%" PRIu64 " to repeat)\n", what, seed,
	       env ? env : "the seed", seed);
	fflush(stdout);
	return seed;
}

double tu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- temporary images and programs ---------------------------------------------------------- */
/*
 * The image is unlinked as soon as it is made and reached through its descriptor:
 * /proc/self/fd/N names the same file in this process and in the programs it runs (the
 * descriptor is inherited: not close-on-exec), so nothing is left in /tmp whatever happens
 * to a test — a failed assertion skips its teardown, a timeout kills its process.
 * tu_image_remove closes the descriptor.
 */
#define TU_FD_PATH "/proc/self/fd/"

void tu_image_create(char *path, const char *tag, uint64_t bytes)
{
	char tmpl[TU_PATH_MAX];
	int fd;

	ck_assert_int_lt(snprintf(tmpl, TU_PATH_MAX, "/tmp/%s.XXXXXX", tag), TU_PATH_MAX);
	fd = mkstemp(tmpl);
	ck_assert_msg(fd >= 0, "mkstemp %s: %s", tmpl, strerror(errno));
	unlink(tmpl);
	ck_assert_msg(ftruncate(fd, (off_t)bytes) == 0, "truncating %s to %" PRIu64 ": %s", tmpl,
		      bytes, strerror(errno));
	snprintf(path, TU_PATH_MAX, TU_FD_PATH "%d", fd);
}

void tu_image_remove(const char *path)
{
	char *end;
	long fd;

	if (strncmp(path, TU_FD_PATH, strlen(TU_FD_PATH))) {
		unlink(path);
		return;
	}
	fd = strtol(path + strlen(TU_FD_PATH), &end, 10);
	if (end != path + strlen(TU_FD_PATH) && !*end && fd > 2)
		close((int)fd);
}

uint32_t tu_image_crc(struct mfs_fs *fs, const char *path)
{
	static char buf[1 << 16];
	uint32_t crc = 0;
	ssize_t n;
	int fd;

	if (fs)
		CK_OK(mfs_bcache_flush(fs->bc));
	fd = open(path, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	while ((n = read(fd, buf, sizeof(buf))) > 0)
		crc = mfs_crc32c(crc, buf, (size_t)n);
	close(fd);
	return crc;
}

int tu_program(const char *name, char *buf, size_t len)
{
	const char *bin = getenv("BIN");

	snprintf(buf, len, "%s/%s", bin && *bin ? bin : "build/bin", name);
	return access(buf, X_OK) ? -ENOENT : 0;
}

int tu_run(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	st = system(cmd);
	if (st == -1)
		return 127;
	if (WIFSIGNALED(st))
		return 128 + WTERMSIG(st);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

int tu_run_suite(Suite *s)
{
	SRunner *sr = srunner_create(s);
	int nf;

	srunner_run_all(sr, CK_NORMAL);
	nf = srunner_ntests_failed(sr);
	srunner_free(sr);
	return nf ? EXIT_FAILURE : EXIT_SUCCESS;
}

int tu_run_suite_needing(const char *prog, Suite *s)
{
	char path[512];

	if (tu_program(prog, path, sizeof(path))) {
		printf("%s: skipped: no %s at %s (set BIN)\n", program_invocation_short_name, prog,
		       path);
		srunner_free(srunner_create(s));      /* frees the suite */
		return 77;
	}
	return tu_run_suite(s);
}

int tu_scratch_fd(int tmpfile)
{
	int fd = tmpfile ? open("/var/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600)
			 : memfd_create("tu_scratch", MFD_CLOEXEC);

	ck_assert_msg(fd >= 0, "scratch fd (%s): %s", tmpfile ? "O_TMPFILE" : "memfd",
		      strerror(errno));
	return fd;
}

int tu_count_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	ck_assert_ptr_nonnull(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}
