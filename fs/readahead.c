/*
 * readahead.c — the daemon's own readahead of the image for files read sequentially, and
 * the descriptor that file data is spliced from.  Off unless -o readahead=KiB (mendfs(8));
 * without it file data is spliced from the device's descriptor with the host's readahead,
 * as before.  Measured with tests/bench/bench_fs.sh: it keeps a cold sequential read's
 * daemon CPU steady at 0.5-0.6 s/GiB where the host's readahead gives 0.3-1.8 s/GiB from
 * one run to the next, but it was not faster on the benchmark machine: not the default.
 *
 * Why: the kernel sends a sequential reader's data as FUSE READ requests of a few hundred
 * KiB, which fileio.c answers by splicing pieces of the image.  Left to itself, the image's
 * readahead works on one descriptor shared by every file and by the metadata reads: with
 * several files read at once their streams interleave on that descriptor and it sees no
 * sequence; and what it reads is read into large folios (and reads the holes of a sparse
 * image around the data too), which the FUSE device cannot take over from the pipe, so
 * that every byte is copied once more into the kernel's page of the file.  Here:
 *
 *   - data is spliced from a descriptor of its own (the image opened once more, read-only,
 *     POSIX_FADV_RANDOM: the kernel reads no more than a splice asks for);
 *   - each read of a regular file is noted in a small table of streams (by inode); a read
 *     that continues its stream (it starts at most SEQ_SLACK past where the stream's
 *     furthest read ended), once SEQ_HITS did in a row or the stream began at the start of
 *     the file, widens the stream's window (doubling from WIN_START up to the mount's
 *     readahead= size) and, once less than half a window is read ahead, asks readahead(2)
 *     for the image blocks that map the next part of the file.  A read behind the
 *     furthest one, by less than the window and SEQ_SLACK, changes nothing: the kernel
 *     sends a reader's requests several at a time and our threads serve them in any
 *     order (with four files read at once, a request came more than 1 MiB late now and
 *     then, and reset its stream);
 *   - those are read into pages of the base size, which a splice with SPLICE_F_MOVE lets
 *     the FUSE device move into the file's page cache instead of copying them.
 *
 * Invariants.  Only blocks that the file maps as written, inside its size, are read ahead
 * (never holes, unwritten extents, or blocks past the end of file); the ranges are found
 * under the inode's lock (held shared by the read), and readahead(2) is called after the
 * read released it: a readahead never waits with a lock held.  Readahead only fills the
 * image's page cache, which every read and write of the image goes through: when a
 * truncate or a write changes the file between the lookup and the readahead, the pages read
 * are still the image's current blocks, merely useless; no reply is ever made from them but
 * through a mapping looked up under the lock.  The table's mutex is a leaf lock, held for a
 * few loads and stores.
 */
#include "mem.h"
#include "mendfs_int.h"

#include "bmap.h"
#include "dev.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define RA_SLOTS 64u                    /* streams followed at once (a power of two) */
#define WIN_START (512u << 10)          /* the first window of a stream */
#define SEQ_SLACK (4ull << 20)          /* how far out of order a stream's reads may come */
#define SEQ_HITS 2u                     /* reads continuing a stream before it is read ahead */

struct ra_slot {
	uint64_t ino;                   /* 0: free */
	uint64_t next;                  /* where the stream's furthest read ended */
	uint64_t ra_end;                /* file offset read ahead up to */
	uint64_t win;                   /* the window: bytes to keep read ahead (0: none) */
	unsigned hits;                  /* reads in a row that continued the stream */
};

struct mfsd_ra {
	int fd;                         /* data is spliced from this descriptor */
	uint64_t max_win;               /* readahead=, bytes (0: no readahead) */
	pthread_mutex_t lock;
	struct ra_slot slot[RA_SLOTS];
};

int mfsd_ra_init(struct mfsd *d, uint64_t max_bytes)
{
	struct mfsd_ra *ra = mfs_calloc(1, sizeof(*ra));
	int fd;

	if (!ra)
		return -ENOMEM;
	ra->max_win = max_bytes;
	ra->fd = -1;
	pthread_mutex_init(&ra->lock, NULL);
	d->ra = ra;
	if (max_bytes == 0)
		return 0;               /* the shared descriptor and the host's readahead */
	/* A descriptor of its own (mfs_dev_reopen_rdonly).  Without /proc the shared
	 * descriptor serves, with the host's readahead. */
	fd = mfs_dev_reopen_rdonly(d->fs->dev);
	if (fd < 0) {
		mfs_log(MFS_LOG_WARN, "cannot open the image again (%s): readahead= is off, file "
			"data is read with the shared descriptor", strerror(-fd));
		return 0;
	}
	if (posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM) != 0)
		mfs_log(MFS_LOG_DEBUG, "POSIX_FADV_RANDOM on the image's data descriptor failed");
	ra->fd = fd;
	return 0;
}

void mfsd_ra_fini(struct mfsd *d)
{
	struct mfsd_ra *ra = d->ra;

	if (!ra)
		return;
	if (ra->fd >= 0)
		close(ra->fd);
	pthread_mutex_destroy(&ra->lock);
	free(ra);
	d->ra = NULL;
}

int mfsd_data_fd(const struct mfsd *d)
{
	if (d->ra && d->ra->fd >= 0)
		return d->ra->fd;
	return mfs_dev_fd(d->fs->dev);
}

/*
 * Follow the stream of `ino` past a read of [off, off + len): the part of the file to read
 * ahead now, [*from, *to), or *from == *to for none.  Under the table's lock.
 */
static void follow(struct mfsd_ra *ra, uint64_t ino, uint64_t off, uint64_t len,
		   uint64_t *from, uint64_t *to)
{
	struct ra_slot *s = &ra->slot[(ino * 0x9e3779b97f4a7c15ull) >> 58];
	uint64_t end = off + len;
	int seq;

	*from = *to = 0;
	if (s->ino != ino || off == 0) {
		/* A new stream, or the file read again from its start: taken as sequential at
		 * once when it starts the file. */
		s->ino = ino;
		s->next = end;
		s->ra_end = end;
		s->win = 0;
		s->hits = off == 0 ? SEQ_HITS : 0;
		seq = off == 0;
	} else if (off < s->next && s->next - off <= s->win + SEQ_SLACK) {
		/* Behind the furthest read, within the window: one of the stream's requests
		 * served late (they come several at a time, and our threads take them in any
		 * order).  Nothing changes. */
		return;
	} else {
		seq = off >= s->next && off - s->next <= SEQ_SLACK;
		s->next = end;
		if (!seq)
			s->hits = 0;
		else if (s->hits < SEQ_HITS)
			s->hits++;
	}
	/* Random reads that happen to fall near each other now and then read nothing ahead:
	 * a stream needs SEQ_HITS reads in a row. */
	if (!seq || s->hits < SEQ_HITS) {
		s->win = 0;
		s->ra_end = end;
		return;
	}
	s->win = s->win ? s->win * 2 : WIN_START;
	if (s->win > ra->max_win)
		s->win = ra->max_win;
	if (s->ra_end < s->next)
		s->ra_end = s->next;
	/* Read ahead once less than half a window is left, up to a whole window ahead:
	 * requests of half a window or more, not a sliver per read. */
	if (s->ra_end - s->next >= s->win / 2)
		return;
	*from = s->ra_end;
	*to = s->next + s->win;
	s->ra_end = *to;
}

void mfsd_ra_plan(struct mfsd *d, struct mfs_inode *ip, uint64_t off, uint64_t len,
		  struct mfsd_ra_plan *plan)
{
	struct mfsd_ra *ra = d->ra;
	struct mfs_fs *fs = ip->fs;
	uint32_t blog = fs->geo.blocklog;
	uint64_t from, to, b, eb;

	plan->n = 0;
	if (!ra || ra->fd < 0 || ra->max_win == 0 || len == 0)
		return;
	pthread_mutex_lock(&ra->lock);
	follow(ra, ip->ino, off, len, &from, &to);
	pthread_mutex_unlock(&ra->lock);
	if (to > ip->size)
		to = ip->size;
	if (from >= to)
		return;
	/* The written extents of whole blocks [b, eb) (the last one partly inside the size:
	 * its bytes past the end are zeroes of the file's own block). */
	b = from >> blog;
	eb = (to + fs->geo.blocksize - 1) >> blog;
	while (b < eb && plan->n < MFSD_RA_RANGES) {
		struct mfs_bmap_ext ext;
		uint64_t n, pos;

		if (mfs_bmap_lookup(ip, b, &ext) != 0)
			break;          /* the read itself reports what is wrong */
		n = ext.startoff + ext.len - b;
		if (ext.len == 0 || n == 0)
			break;
		if (n > eb - b)
			n = eb - b;
		if (ext.startblock != MFS_BMAP_HOLE && !ext.unwritten) {
			pos = (ext.startblock + (b - ext.startoff)) << blog;
			if (plan->n && plan->r[plan->n - 1].pos + plan->r[plan->n - 1].len == pos)
				plan->r[plan->n - 1].len += n << blog;
			else
				plan->r[plan->n++] = (struct mfsd_ra_range){ pos, n << blog };
		}
		b += n;
	}
}

void mfsd_ra_issue(struct mfsd *d, const struct mfsd_ra_plan *plan)
{
	for (unsigned i = 0; i < plan->n; i++)
		(void)readahead(d->ra->fd, (off_t)plan->r[i].pos, (size_t)plan->r[i].len);
}
