/*
 * pressure.h — the memory-pressure watcher: one thread that turns kernel memory-pressure
 * notifications into an abort flag that the repair engine's long loops check cheaply.
 *
 * Sources (each armed if present and accepted, silently skipped otherwise — see
 * mfs_pressure_armed() / mfs_pressure_describe()):
 *   PSI_SYSTEM  a PSI trigger on /proc/pressure/memory (window >= 2 s: the kernel refuses
 *               smaller windows from us; the trigger is written with a trailing newline)
 *   PSI_CGROUP  the same trigger on the cgroup v2 memory.pressure file of this process
 *   V1_LEVEL    cgroup v1 memory.pressure_level, through an eventfd and cgroup.event_control,
 *               in "local" mode: reclaim at this cgroup's own limit, not a child cgroup's
 *   V1_OOM      cgroup v1 memory.oom_control (an OOM in our cgroup), the same way
 *   V2_EVENTS   cgroup v2 memory.events: POLLPRI, then the oom / oom_kill counters compared
 *   TEST        mfs_pressure_fire_for_test(), always armed
 *
 * The flag is a C11 atomic_int: 0 while all is well, else the MFS_PRESSURE_* bit of the
 * first source that fired.  Give it to an xfarray with
 * mfs_xfarray_set_abort(a, mfs_pressure_flag(p)); its sort then stops with -ECANCELED.
 * The flag stays raised until mfs_pressure_reset().
 *
 * mfs_pressure_stop() wakes the thread through an eventfd, joins it and closes every
 * descriptor; it never waits on the kernel.
 */
#ifndef MFS_PRESSURE_H
#define MFS_PRESSURE_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mfs_pressure;

enum {
	MFS_PRESSURE_PSI_SYSTEM = 1 << 0,
	MFS_PRESSURE_PSI_CGROUP = 1 << 1,
	MFS_PRESSURE_V1_LEVEL = 1 << 2,
	MFS_PRESSURE_V1_OOM = 1 << 3,
	MFS_PRESSURE_V2_EVENTS = 1 << 4,
	MFS_PRESSURE_TEST = 1 << 5,
	MFS_PRESSURE_ALL = (1 << 6) - 1,
};

struct mfs_pressure_opts {
	const char *psi_trigger;	/* NULL = "some 150000 2000000\n" (150 ms stall in 2 s) */
	const char *v1_level;		/* NULL = "medium" (low, medium or critical) */
	unsigned sources;		/* MFS_PRESSURE_* to try; 0 = all */
};

/* Arm the sources and start the thread.  opts may be NULL.  -errno only if the thread or
 * its wake-up descriptors cannot be created; unavailable sources are not errors. */
int mfs_pressure_start(const struct mfs_pressure_opts *opts, struct mfs_pressure **out);
/* Stop and join the thread, close everything, free p.  NULL is fine. */
void mfs_pressure_stop(struct mfs_pressure *p);

/* The abort flag (for mfs_xfarray_set_abort and friends); lives as long as p. */
const atomic_int *mfs_pressure_flag(const struct mfs_pressure *p);
/* Has any source fired since start or the last reset? */
bool mfs_pressure_aborted(const struct mfs_pressure *p);
/* The MFS_PRESSURE_* bit that raised the flag, 0 if none. */
unsigned mfs_pressure_reason(const struct mfs_pressure *p);
/* Lower the flag (before the next repair). */
void mfs_pressure_reset(struct mfs_pressure *p);
/* Notifications seen so far (all sources). */
uint64_t mfs_pressure_events(const struct mfs_pressure *p);

/* MFS_PRESSURE_* bits of the armed sources. */
unsigned mfs_pressure_armed(const struct mfs_pressure *p);
/* "psi-system(/proc/pressure/memory) v1-oom(...) test", for logs; returns p's armed bits. */
unsigned mfs_pressure_describe(const struct mfs_pressure *p, char *buf, size_t len);
/* Name of one source bit. */
const char *mfs_pressure_source_name(unsigned bit);

/* Test hook: make the thread raise the flag as if memory pressure had been seen. */
int mfs_pressure_fire_for_test(struct mfs_pressure *p);

#endif /* MFS_PRESSURE_H */
