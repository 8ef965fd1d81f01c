/*
 * testfaults.c — test-only allocation failures in a running daemon (mendfs_int.h, "Test
 * fault injection").
 *
 * Inert unless the environment holds MENDFS_TEST_FAULTS when the daemon starts: then
 * SIGUSR1 makes one allocation in N fail (lib/mem.h, mfs_mem_fault_every; N is the
 * variable's value when it is a number >= 2, else 7) and SIGUSR2 stops it and writes the
 * number of failures injected so far to stderr as "mendfs: test faults: N injected".
 * "N,start" fails one in N from the start (opening the image, replay, mount), as if
 * SIGUSR1 had come first.
 * With MENDFS_TEST_FAULTS_ARM naming a file, a SIGUSR1 that finds a number S in it arms
 * "S allocations succeed, then every one fails until SIGUSR2" instead (lib/mem.h,
 * mfs_mem_fault_arm(S, 0)): a test sweeps S to fail an operation at each of its
 * allocations in turn, and after every later one (no file, or no number: one in N); it
 * writes "mendfs: test faults armed" when it did, so the test knows when to go on.
 * Both handlers only store atomics and open, read, close or write(2): async-signal-safe.
 * The setup runs as a constructor, before main, so the daemon's own code needs no hook.
 */
#include "mem.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t fault_every = 7;
static const char *arm_path;           /* MENDFS_TEST_FAULTS_ARM, or NULL */

/* The number at the start of arm_path into *skip: 1, or 0 (no file, no digits).  Only
 * open, read and close: async-signal-safe. */
static int read_skip(uint64_t *skip)
{
	char buf[32];
	ssize_t n;
	int fd, digits = 0;

	if (!arm_path)
		return 0;
	fd = open(arm_path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	n = read(fd, buf, sizeof(buf));
	close(fd);
	*skip = 0;
	for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++, digits++)
		*skip = *skip * 10 + (uint64_t)(buf[i] - '0');
	return digits > 0;
}

static void on_arm(int sig)
{
	uint64_t skip;
	int saved = errno;

	(void)sig;
	if (read_skip(&skip)) {
		static const char armed[] = "mendfs: test faults armed\n";

		mfs_mem_fault_arm(skip, 0);
		if (write(STDERR_FILENO, armed, sizeof(armed) - 1) < 0) {
			/* the test waiting for the line says what is missing */
		}
	} else {
		mfs_mem_fault_every(fault_every);
	}
	errno = saved;
}

static void on_disarm(int sig)
{
	static const char pre[] = "mendfs: test faults: ";
	static const char post[] = " injected\n";
	char num[24];
	size_t i = sizeof(num);
	uint64_t n;
	int saved = errno;

	(void)sig;
	mfs_mem_fault_disarm();
	n = mfs_mem_fault_injected();
	do {
		num[--i] = (char)('0' + n % 10);
		n /= 10;
	} while (n && i);
	if (write(STDERR_FILENO, pre, sizeof(pre) - 1) < 0 ||
	    write(STDERR_FILENO, num + i, sizeof(num) - i) < 0 ||
	    write(STDERR_FILENO, post, sizeof(post) - 1) < 0) {
		/* nothing to do: a test reading the log will say what is missing */
	}
	errno = saved;
}

__attribute__((constructor)) static void mfsd_test_faults_setup(void)
{
	const char *v = getenv("MENDFS_TEST_FAULTS");
	struct sigaction sa;
	unsigned long long n;
	char *end;

	if (!v || !*v)
		return;
	n = strtoull(v, &end, 10);
	if ((!*end || !strcmp(end, ",start")) && n >= 2)
		fault_every = n;
	arm_path = getenv("MENDFS_TEST_FAULTS_ARM");
	if (arm_path && !*arm_path)
		arm_path = NULL;
	memset(&sa, 0, sizeof(sa));
	sigemptyset(&sa.sa_mask);
	sa.sa_flags = SA_RESTART;
	sa.sa_handler = on_arm;
	sigaction(SIGUSR1, &sa, NULL);
	sa.sa_handler = on_disarm;
	sigaction(SIGUSR2, &sa, NULL);
	fprintf(stderr, "mendfs: test fault injection enabled: SIGUSR1 fails one allocation "
		"in %llu, SIGUSR2 stops\n", (unsigned long long)fault_every);
	if (strstr(v, ",start"))
		on_arm(SIGUSR1);         /* failing from the start: mount, replay, recovery */
}
