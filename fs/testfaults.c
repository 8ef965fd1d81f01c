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
 * Both handlers only store atomics and write(2): async-signal-safe.  The setup runs as a
 * constructor, before main, so the daemon's own code needs no hook.
 */
#include "mem.h"

#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t fault_every = 7;

static void on_arm(int sig)
{
	(void)sig;
	mfs_mem_fault_every(fault_every);
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
