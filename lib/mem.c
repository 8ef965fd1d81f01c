/*
 * mem.c — the fault-injection state behind mem.h's allocation wrappers.
 */
#include "mem.h"

#if defined(__GLIBC__)
#include <malloc.h>
#endif

atomic_int mfs_mem_fault_armed;

static atomic_uint_fast64_t fault_skip;     /* allocations still allowed before failing */
static atomic_uint_fast64_t fault_left;     /* failures still to inject */
static atomic_int fault_unlimited;          /* armed with count 0: fail until disarmed */
static atomic_uint_fast64_t fault_every;    /* fail one in this many (0: use skip/left) */
static atomic_uint_fast64_t fault_tick;
static atomic_uint_fast64_t fault_count;    /* failures injected */

int mfs_mem_fault_hit(void)
{
	uint64_t every = atomic_load(&fault_every);

	if (every) {
		if (atomic_fetch_add(&fault_tick, 1) % every != every - 1)
			return 0;
		atomic_fetch_add(&fault_count, 1);
		return 1;
	}
	/* Consume one allowed allocation, if any are left. */
	uint64_t s = atomic_load(&fault_skip);
	while (s) {
		if (atomic_compare_exchange_weak(&fault_skip, &s, s - 1))
			return 0;
	}
	if (!atomic_load(&fault_unlimited)) {
		uint64_t left = atomic_load(&fault_left);

		for (;;) {
			if (!left)
				return 0;           /* the count is used up (another thread took
						       the last one after we saw the hook armed) */
			if (atomic_compare_exchange_weak(&fault_left, &left, left - 1))
				break;
		}
		if (left == 1)
			atomic_store(&mfs_mem_fault_armed, 0);
	}
	atomic_fetch_add(&fault_count, 1);
	return 1;
}

void mfs_mem_fault_arm(uint64_t skip, uint64_t count)
{
	atomic_store(&mfs_mem_fault_armed, 0);
	atomic_store(&fault_every, 0);
	atomic_store(&fault_skip, skip);
	atomic_store(&fault_left, count);
	atomic_store(&fault_unlimited, count == 0);
	atomic_store(&mfs_mem_fault_armed, 1);
}

void mfs_mem_fault_every(uint64_t n)
{
	atomic_store(&mfs_mem_fault_armed, 0);
	atomic_store(&fault_tick, 0);
	atomic_store(&fault_every, n);
	if (n)
		atomic_store(&mfs_mem_fault_armed, 1);
}

void mfs_mem_fault_disarm(void)
{
	atomic_store(&mfs_mem_fault_armed, 0);
	atomic_store(&fault_every, 0);
	atomic_store(&fault_left, 0);
	atomic_store(&fault_unlimited, 0);
	atomic_store(&fault_skip, 0);
}

uint64_t mfs_mem_fault_injected(void)
{
	return atomic_load(&fault_count);
}

/* Blocks of at least this size are mmapped, each on its own (fixed: never raised). */
#define MEM_MMAP_THRESHOLD (256u << 10)
/* Free memory at the heap's top beyond this is given back (fixed likewise). */
#define MEM_TRIM_THRESHOLD (512u << 10)

void mfs_mem_tune(void)
{
#if defined(__GLIBC__)
	/* Setting either turns glibc's dynamic adjustment off; a failure leaves the
	 * defaults, which are correct, only larger. */
	(void)mallopt(M_MMAP_THRESHOLD, MEM_MMAP_THRESHOLD);
	(void)mallopt(M_TRIM_THRESHOLD, MEM_TRIM_THRESHOLD);
#endif
}
