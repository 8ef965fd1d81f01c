/*
 * headroom.h — how much scratch memory a repair may take, and taking it safely.
 *
 * Three pieces:
 *  - estimates: the scratch-file bytes (and the small heap) that arrays and blob stores of
 *    a given size need, and the reserve to take for them (1.5 times, per the design);
 *  - the headroom probe: MemAvailable + SwapFree from /proc/meminfo, and for the memory
 *    cgroup of this process (found through /proc/self/cgroup and /proc/self/mountinfo) the
 *    room left under its limit: v1 memory.limit_in_bytes - memory.usage_in_bytes, v2
 *    memory.max - memory.current, for the cgroup and every ancestor; the headroom is the
 *    smallest of these.  A daemon reserving scratch for a client also counts the client's
 *    memory cgroup (found through /proc/PID/cgroup): a client confined to a small cgroup
 *    is refused although the daemon, which fallocates, is charged in its own;
 *  - the reserve: fallocate() the scratch file in chunks.  On a memory-backed file (memfd,
 *    tmpfs, hugetlbfs) the pages are charged to the memory cgroup of the caller, and
 *    fallocate past the cgroup's limit does NOT fail with ENOMEM: the cgroup's OOM killer
 *    runs.  So the estimate is checked against the headroom up front, and the headroom is
 *    probed again before every chunk; the reserve stops with -ENOMEM as soon as a chunk
 *    would leave less than the margin.  On a disk-backed file the headroom is not
 *    consulted, and -ENOSPC comes back from fallocate as such.  Whatever a failed reserve
 *    allocated is released (punched, and the file truncated back to its original size).
 */
#ifndef MFS_HEADROOM_H
#define MFS_HEADROOM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define MFS_HEADROOM_UNLIMITED UINT64_MAX

struct mfs_headroom {
	uint64_t mem_available;		/* MemAvailable + SwapFree, bytes */
	uint64_t cgroup_room;		/* tightest cgroup limit - usage; UNLIMITED if none */
	uint64_t headroom;		/* min of the two */
	int cgroup_version;		/* version of the tightest cgroup, 0 if none limits */
	char cgroup_dir[512];		/* its directory, "" if none */
	pid_t cgroup_pid;		/* it is the cgroup of this process; 0: ours */
};

/* Probe the headroom now.  Missing cgroup files are skipped; -errno only when
 * /proc/meminfo cannot be read. */
int mfs_headroom_probe(struct mfs_headroom *h);
/* The same, with the memory cgroup of process pid (and its ancestors) counted too; pid 0
 * or our own: mfs_headroom_probe().  A pid that is gone adds nothing. */
int mfs_headroom_probe_pid(pid_t pid, struct mfs_headroom *h);

/*
 * Directory of this process's cgroup in the v1 "memory" hierarchy (version 1) or in the
 * v2 unified hierarchy (version 2); -ENOENT when that hierarchy is not mounted.
 */
int mfs_headroom_cgroup_dir(int version, char *buf, size_t len);

/* ---- estimates ---------------------------------------------------------------------------- */

struct mfs_reserve_estimate {
	uint64_t file_bytes;		/* scratch file bytes */
	uint64_t heap_bytes;		/* daemon heap, bounded per structure */
};

/* Add an xfarray of nr records of recsize bytes (its cache and sort buffer included). */
void mfs_reserve_estimate_xfarray(struct mfs_reserve_estimate *e, uint64_t nr, size_t recsize);
/* Add an xblob store of nblobs blobs holding payload_bytes in all. */
void mfs_reserve_estimate_xblob(struct mfs_reserve_estimate *e, uint64_t nblobs,
				uint64_t payload_bytes);
/* The reserve to take for e: 1.5 times its file bytes, rounded up to 1 MiB. */
uint64_t mfs_reserve_estimate_bytes(const struct mfs_reserve_estimate *e);

/* ---- reserve ------------------------------------------------------------------------------ */

#define MFS_RESERVE_CHUNK_DEFAULT  (8ull << 20)
#define MFS_RESERVE_MARGIN_DEFAULT (64ull << 20)

struct mfs_reserve_opts {
	uint64_t chunk;			/* bytes per fallocate; 0 = 8 MiB */
	uint64_t margin;		/* headroom to leave; 0 = 64 MiB */
	const atomic_int *abort;	/* checked before every chunk: -ECANCELED; may be NULL */
	/* Called after every chunk (progress, tests); a non-zero return stops the reserve
	 * with that value, which must be a negative errno.  May be NULL. */
	int (*after_chunk)(void *priv, uint64_t done);
	void *priv;
	pid_t peer;			/* the client the scratch is for: its memory cgroup's
					 * room counts too (mfs_headroom_probe_pid); 0: none */
};

struct mfs_reserve_result {
	uint64_t needed;		/* bytes still to allocate + margin, at refusal */
	uint64_t available;		/* headroom at the last probe */
	uint64_t reserved;		/* bytes allocated and kept (0 after a failure) */
	int memory_backed;		/* the file's pages are memory (tmpfs, memfd...) */
	char msg[1024];			/* why it failed, with both figures; "" on success */
};

/*
 * Reserve [offset, offset + bytes) of fd.  0 on success; -ENOMEM when the headroom does
 * not allow it (up front, or before a chunk), -ENOSPC / -EFBIG / -EIO... from fallocate,
 * -ECANCELED from the abort flag.  res (required) receives both figures and a message.
 */
int mfs_reserve(int fd, uint64_t offset, uint64_t bytes, const struct mfs_reserve_opts *opts,
		struct mfs_reserve_result *res);

#endif /* MFS_HEADROOM_H */
