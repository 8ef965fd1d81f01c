/*
 * headroom.c — scratch estimates, the memory headroom probe (meminfo + memory cgroup v1/v2)
 * and the chunked, headroom-checked reserve.  See headroom.h.
 */
#include "mem.h"
#include "headroom.h"

#include "xblob.h"
#include "xfarray.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#define TMPFS_MAGIC_	0x01021994
#define RAMFS_MAGIC_	0x858458f6
#define HUGETLBFS_MAGIC_ 0x958458f6
#define V1_UNLIMITED	(1ull << 62)	/* v1 reports "no limit" as about 2^63 */

/* ---- small file readers ------------------------------------------------------------------ */

/* Read a small file into buf (NUL-terminated); -errno. */
static int read_small(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	size_t got = 0;

	if (fd < 0)
		return -errno;
	while (got + 1 < len) {
		ssize_t n = read(fd, buf + got, len - 1 - got);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			int err = -errno;
			close(fd);
			return err;
		}
		if (n == 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	close(fd);
	return 0;
}

/* A cgroup value file: a number, or "max" (UNLIMITED). */
static int read_value(const char *dir, const char *name, uint64_t *v)
{
	char path[768], buf[64];
	int rc;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	rc = read_small(path, buf, sizeof(buf));
	if (rc)
		return rc;
	if (strncmp(buf, "max", 3) == 0) {
		*v = MFS_HEADROOM_UNLIMITED;
		return 0;
	}
	char *end;
	errno = 0;
	*v = strtoull(buf, &end, 10);
	return errno || end == buf ? -EINVAL : 0;
}

/* ---- finding the memory cgroup ----------------------------------------------------------- */

/*
 * The mount point and root of the v1 "memory" hierarchy (version 1) or of cgroup2
 * (version 2), from /proc/self/mountinfo.
 */
static int find_mount(int version, char *mnt, size_t mntlen, char *root, size_t rootlen)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[4096];
	int rc = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		char r[1024], m[1024], fstype[64], src[256], super[1024];
		char *dash = strstr(line, " - ");

		if (!dash || sscanf(line, "%*s %*s %*s %1023s %1023s", r, m) != 2)
			continue;
		super[0] = '\0';
		if (sscanf(dash + 3, "%63s %255s %1023s", fstype, src, super) < 2)
			continue;
		if (version == 2 ? strcmp(fstype, "cgroup2") != 0
				 : strcmp(fstype, "cgroup") != 0)
			continue;
		if (version == 1) {
			bool memory = false;
			char *save = NULL;

			/* strtok_r: every client thread of the daemon looks this up */
			for (char *t = strtok_r(super, ",", &save); t; t = strtok_r(NULL, ",", &save))
				memory |= strcmp(t, "memory") == 0;
			if (!memory)
				continue;
		}
		snprintf(mnt, mntlen, "%s", m);
		snprintf(root, rootlen, "%s", r);
		rc = 0;
		break;
	}
	fclose(f);
	return rc;
}

/* The memory cgroup directory of process pid (0: this one), as seen from our mounts. */
static int cgroup_dir_of(pid_t pid, int version, char *buf, size_t len)
{
	char mnt[1024], root[1024], line[2048], path[1024] = "", cgfile[64];
	bool found = false;
	FILE *f;
	int rc;

	if (version != 1 && version != 2)
		return -EINVAL;
	if (pid < 0)
		return -EINVAL;
	rc = find_mount(version, mnt, sizeof(mnt), root, sizeof(root));
	if (rc)
		return rc;
	if (pid)
		snprintf(cgfile, sizeof(cgfile), "/proc/%d/cgroup", (int)pid);
	else
		snprintf(cgfile, sizeof(cgfile), "/proc/self/cgroup");
	f = fopen(cgfile, "re");
	if (!f)
		return -errno;
	while (!found && fgets(line, sizeof(line), f)) {
		char *c1 = strchr(line, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;

		if (!c2)
			continue;
		*c1 = *c2 = '\0';
		line[strcspn(line, "\0")] = '\0';
		c2[1 + strcspn(c2 + 1, "\n")] = '\0';
		if (version == 2) {
			found = strcmp(line, "0") == 0 && c1[1] == '\0';
		} else {
			char *save = NULL;

			for (char *t = strtok_r(c1 + 1, ",", &save); t && !found;
			     t = strtok_r(NULL, ",", &save))
				found = strcmp(t, "memory") == 0;
		}
		if (found)
			snprintf(path, sizeof(path), "%s", c2 + 1);
	}
	fclose(f);
	if (!found)
		return -ENOENT;
	/* The hierarchy may be mounted from below its root (containers). */
	const char *rel = path;
	size_t rl = strlen(root);
	if (strcmp(root, "/") != 0 && strncmp(path, root, rl) == 0)
		rel = path + rl;
	if (strcmp(rel, "/") == 0)
		rel = "";
	if ((size_t)snprintf(buf, len, "%s%s", mnt, rel) >= len)
		return -ENAMETOOLONG;
	return 0;
}

int mfs_headroom_cgroup_dir(int version, char *buf, size_t len)
{
	return cgroup_dir_of(0, version, buf, len);
}

/* Tightest room under the limits of pid's cgroup (0: ours) and its ancestors up to the
 * mount point. */
static void cgroup_room(pid_t pid, int version, struct mfs_headroom *h)
{
	char dir[512], mnt[1024], root[1024];

	if (cgroup_dir_of(pid, version, dir, sizeof(dir)) ||
	    find_mount(version, mnt, sizeof(mnt), root, sizeof(root)))
		return;
	for (;;) {
		uint64_t limit, usage;
		int rc;

		if (version == 1) {
			rc = read_value(dir, "memory.limit_in_bytes", &limit);
			if (!rc)
				rc = read_value(dir, "memory.usage_in_bytes", &usage);
			if (!rc && limit >= V1_UNLIMITED)
				limit = MFS_HEADROOM_UNLIMITED;
		} else {
			rc = read_value(dir, "memory.max", &limit);
			if (!rc)
				rc = read_value(dir, "memory.current", &usage);
		}
		if (!rc && limit != MFS_HEADROOM_UNLIMITED) {
			uint64_t room = usage >= limit ? 0 : limit - usage;

			if (room < h->cgroup_room) {
				h->cgroup_room = room;
				h->cgroup_version = version;
				h->cgroup_pid = pid;
				snprintf(h->cgroup_dir, sizeof(h->cgroup_dir), "%s", dir);
			}
		}
		/* Up one level, never above the mount point. */
		char *slash = strrchr(dir, '/');
		if (strlen(dir) <= strlen(mnt) || !slash)
			break;
		*slash = '\0';
	}
}

int mfs_headroom_probe(struct mfs_headroom *h)
{
	return mfs_headroom_probe_pid(0, h);
}

int mfs_headroom_probe_pid(pid_t pid, struct mfs_headroom *h)
{
	char buf[8192];
	uint64_t avail = 0, swap = 0;
	bool have_avail = false;
	int rc;

	memset(h, 0, sizeof(*h));
	rc = read_small("/proc/meminfo", buf, sizeof(buf));
	if (rc)
		return rc;
	for (char *l = buf; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL) {
		unsigned long long kb;

		if (sscanf(l, "MemAvailable: %llu kB", &kb) == 1) {
			avail = kb * 1024;
			have_avail = true;
		} else if (sscanf(l, "SwapFree: %llu kB", &kb) == 1) {
			swap = kb * 1024;
		}
	}
	if (!have_avail)
		return -ENODATA;
	h->mem_available = avail + swap;
	h->cgroup_room = MFS_HEADROOM_UNLIMITED;
	cgroup_room(0, 1, h);
	cgroup_room(0, 2, h);
	/* The process the scratch is for: a client in a smaller cgroup than ours is held to
	 * its limit, although the pages we fallocate are charged to ours.  A process that is
	 * gone (or whose cgroup we cannot see) adds nothing. */
	if (pid > 0 && pid != getpid()) {
		cgroup_room(pid, 1, h);
		cgroup_room(pid, 2, h);
	}
	h->headroom = h->mem_available < h->cgroup_room ? h->mem_available : h->cgroup_room;
	return 0;
}

/* ---- estimates ---------------------------------------------------------------------------- */

void mfs_reserve_estimate_xfarray(struct mfs_reserve_estimate *e, uint64_t nr, size_t recsize)
{
	/* Records, plus one window of slack at the end of the file. */
	e->file_bytes += nr * recsize + MFS_XFARRAY_WINDOW_BYTES;
	e->heap_bytes += MFS_XFARRAY_CACHE_BYTES + MFS_XFARRAY_SORTBUF_BYTES + 4096;
}

void mfs_reserve_estimate_xblob(struct mfs_reserve_estimate *e, uint64_t nblobs,
				uint64_t payload_bytes)
{
	/* Worst case of power-of-two slots: twice the payload, plus a header per blob. */
	e->file_bytes += 2 * (payload_bytes + nblobs * MFS_XBLOB_HDR_BYTES) + 4096;
	e->heap_bytes += 256;
}

uint64_t mfs_reserve_estimate_bytes(const struct mfs_reserve_estimate *e)
{
	uint64_t b = e->file_bytes + e->file_bytes / 2;

	return (b + (1ull << 20) - 1) & ~((1ull << 20) - 1);
}

/* ---- reserve ------------------------------------------------------------------------------ */

static void mib(char *buf, size_t len, uint64_t bytes)
{
	if (bytes == MFS_HEADROOM_UNLIMITED)
		snprintf(buf, len, "unlimited");
	else
		snprintf(buf, len, "%.1f MiB", (double)bytes / 1048576.0);
}

static void refuse_msg(struct mfs_reserve_result *res, const struct mfs_headroom *h,
		       uint64_t want, uint64_t margin, const char *when)
{
	char a[32], b[32], c[32], who[48] = "";
	bool cg = h->cgroup_room < h->mem_available;

	mib(a, sizeof(a), want);
	mib(b, sizeof(b), margin);
	mib(c, sizeof(c), h->headroom);
	if (cg && h->cgroup_pid)
		snprintf(who, sizeof(who), " of the client, pid %d", (int)h->cgroup_pid);
	snprintf(res->msg, sizeof(res->msg),
		 "scratch reserve %s: needs %s (+%s margin) but only %s of memory is available "
		 "(%s%s%s)", when, a, b, c, cg ? "memory cgroup " : "MemAvailable+SwapFree",
		 cg ? h->cgroup_dir : "", who);
}

static bool memory_backed(int fd)
{
	struct statfs sfs;

	if (fstatfs(fd, &sfs) < 0)
		return true;	/* unknown: be careful */
	return sfs.f_type == TMPFS_MAGIC_ || sfs.f_type == RAMFS_MAGIC_ ||
	       sfs.f_type == HUGETLBFS_MAGIC_;
}

/* Is [off, off+len) one hole of the file (so that punching it back loses nothing)? */
static bool all_hole(int fd, uint64_t off, uint64_t len, uint64_t size)
{
	off_t d;

	if (off >= size)
		return true;
	d = lseek(fd, (off_t)off, SEEK_DATA);
	if (d < 0)
		return errno == ENXIO;
	return (uint64_t)d >= off + len;
}

int mfs_reserve(int fd, uint64_t offset, uint64_t bytes, const struct mfs_reserve_opts *opts,
		struct mfs_reserve_result *res)
{
	static const struct mfs_reserve_opts defaults;
	const struct mfs_reserve_opts *o = opts ? opts : &defaults;
	uint64_t chunk = o->chunk ? o->chunk : MFS_RESERVE_CHUNK_DEFAULT;
	uint64_t margin = o->margin ? o->margin : MFS_RESERVE_MARGIN_DEFAULT;
	uint64_t nchunks, done = 0, pos;
	struct mfs_headroom h;
	unsigned char *punch = NULL;	/* bitmap: chunk k was a hole inside the old size */
	struct stat st;
	int rc = 0;

	memset(res, 0, sizeof(*res));
	if (fd < 0 || offset > INT64_MAX || bytes > INT64_MAX - offset)
		return -EINVAL;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if (bytes == 0)
		return 0;
	res->memory_backed = memory_backed(fd);
	nchunks = (bytes + chunk - 1) / chunk;

	/* Up front: does the whole reserve fit? */
	if (res->memory_backed) {
		rc = mfs_headroom_probe_pid(o->peer, &h);
		if (rc)
			return rc;
		res->available = h.headroom;
		if (h.headroom < margin || bytes > h.headroom - margin) {
			res->needed = bytes + margin;
			refuse_msg(res, &h, bytes, margin, "refused");
			return -ENOMEM;
		}
	}
	if (offset < (uint64_t)st.st_size) {
		punch = mfs_calloc(nchunks / 8 + 1, 1);
		if (!punch)
			return -ENOMEM;
	}

	for (uint64_t k = 0; k < nchunks; k++) {
		uint64_t len = k + 1 < nchunks ? chunk : bytes - k * chunk;

		pos = offset + k * chunk;
		if (o->abort && atomic_load(o->abort)) {
			rc = -ECANCELED;
			snprintf(res->msg, sizeof(res->msg), "scratch reserve cancelled");
			break;
		}
		/* Before every chunk: the cgroup OOM killer, not ENOMEM, is what fallocate past
		 * the limit would meet. */
		if (res->memory_backed) {
			rc = mfs_headroom_probe_pid(o->peer, &h);
			if (rc)
				break;
			res->available = h.headroom;
			if (h.headroom < margin || len > h.headroom - margin) {
				res->needed = bytes - done + margin;
				refuse_msg(res, &h, bytes - done, margin, "stopped");
				rc = -ENOMEM;
				break;
			}
		}
		if (punch && all_hole(fd, pos, len, (uint64_t)st.st_size))
			punch[k / 8] |= (unsigned char)(1u << (k % 8));
		while ((rc = fallocate(fd, 0, (off_t)pos, (off_t)len)) < 0 && errno == EINTR)
			;
		if (rc < 0) {
			rc = -errno;
			snprintf(res->msg, sizeof(res->msg),
				 "scratch reserve: fallocate of %" PRIu64 " bytes at %" PRIu64
				 " failed: %s", len, pos, strerror(-rc));
			break;
		}
		done += len;
		if (o->after_chunk && (rc = o->after_chunk(o->priv, done)) != 0)
			break;
	}

	if (rc) {
		/* Give back what this call allocated: holes it filled inside the old size, and
		 * everything past the old size. */
		for (uint64_t k = 0; punch && k < nchunks && k * chunk < done; k++) {
			uint64_t len = k + 1 < nchunks ? chunk : bytes - k * chunk;

			if (punch[k / 8] & (1u << (k % 8)))
				(void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
						(off_t)(offset + k * chunk), (off_t)len);
		}
		if (offset + done > (uint64_t)st.st_size) {
			(void)fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, st.st_size,
					(off_t)(offset + done - (uint64_t)st.st_size));
			while (ftruncate(fd, st.st_size) < 0 && errno == EINTR)
				;
		}
		res->reserved = 0;
	} else {
		res->reserved = bytes;
	}
	free(punch);
	return rc;
}
