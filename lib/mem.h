/*
 * mem.h — the one allocation entry point of libmendfs and the daemon.
 *
 * Every heap allocation of the library and of the daemon goes through these wrappers so
 * that a test can make them fail on purpose: an allocation failure must turn into -ENOMEM
 * for the one operation that met it, never into a crash or a half-done change.  Disarmed
 * (the default, and always outside tests) the cost is one relaxed atomic load.
 *
 * Arming: mfs_mem_fault_arm(skip, count) lets `skip` further allocations succeed, then
 * fails the next `count` of them (count 0 = every one until disarmed); mfs_mem_fault_every(n)
 * fails one allocation in n until disarmed.  Failures injected so far are counted.
 */
#ifndef MFS_MEM_H
#define MFS_MEM_H

#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

extern atomic_int mfs_mem_fault_armed;
/* Slow path of an armed hook: 1 if this allocation must fail. */
int mfs_mem_fault_hit(void);

void mfs_mem_fault_arm(uint64_t skip, uint64_t count);
void mfs_mem_fault_every(uint64_t n);
void mfs_mem_fault_disarm(void);
/* Allocations failed on purpose since the program started. */
uint64_t mfs_mem_fault_injected(void);

/*
 * Called once at the start of a long-running program (the daemon, mendfs_repair), before
 * its threads: fixes the C library's thresholds so that memory freed after a large,
 * short-lived array (a transaction's records, a rebuild's lists, which double as they
 * grow) goes back to the system instead of staying resident.  glibc raises its mmap
 * threshold each time an mmapped block is freed, so later large arrays come from the
 * heap, whose freed middle is never returned; a fixed threshold keeps them mmapped (and
 * realloc moves their pages with mremap).  A no-op elsewhere.
 */
void mfs_mem_tune(void);

static inline int mfs_mem_should_fail(void)
{
	return __builtin_expect(atomic_load_explicit(&mfs_mem_fault_armed,
						     memory_order_relaxed), 0) &&
	       mfs_mem_fault_hit();
}

static inline void *mfs_malloc(size_t n)
{
	return mfs_mem_should_fail() ? NULL : malloc(n);
}

static inline void *mfs_calloc(size_t n, size_t size)
{
	return mfs_mem_should_fail() ? NULL : calloc(n, size);
}

static inline void *mfs_realloc(void *p, size_t n)
{
	return mfs_mem_should_fail() ? NULL : realloc(p, n);
}

static inline char *mfs_strdup(const char *s)
{
	return mfs_mem_should_fail() ? NULL : strdup(s);
}

/* Same contract as posix_memalign: 0, or a positive errno (ENOMEM). */
static inline int mfs_posix_memalign(void **p, size_t align, size_t n)
{
	return mfs_mem_should_fail() ? 12 /* ENOMEM */ : posix_memalign(p, align, n);
}

#endif
