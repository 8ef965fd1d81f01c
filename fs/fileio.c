/*
 * fileio.c — file data: open/release, read, write, truncate, fallocate, lseek and fsync.
 *
 * Data blocks are read and written straight on the device (mfs_dev_pread/pwrite), never
 * through the metadata buffer cache.  Readers take the inode's lock shared, writers
 * exclusive; different files never share a lock.
 *
 * Ordered data: a block newly mapped into a file (allocated, or converted from unwritten)
 * gets its data written to the device BEFORE the transaction that maps it is committed, so
 * a crash can never expose a block's stale contents.  Blocks already mapped and written
 * are overwritten in place.  The part of a block the write does not cover is zero in a new
 * or unwritten block, and read back from the device in a written one.
 *
 * Invariant: the bytes of the last block past the end of file are zero (writes pad new
 * blocks with zeroes, truncate zeroes the tail of the new last block), so growing a file
 * never needs to zero anything in it.
 *
 * Blocks past the end of file: a truncate has happened once its new size is committed
 * (its first transaction), and so it succeeds even when it cannot unmap every block past
 * that size afterwards (no memory, after its retries): failing then would report a
 * truncate that did change the file.  So written blocks may stay mapped past the end of
 * file; they are unmapped (clear_past_eof) before a write, truncate or fallocate makes the
 * file grow over them, or a fallocate preallocates over them, which fails, with nothing
 * visible changed, if that cannot be done.
 *
 * Freed blocks: a data block freed by truncate or punch must not be reused for another
 * file's data before the transaction that freed it is durable.  The allocator sees to it
 * (busy extents, lib/busy.h): frees need no log force here.
 *
 * Transactions are bounded: one new extent per allocation transaction, at most
 * MFS_BMAP_MAX_EXTENTS_PER_CALL extents per punch or conversion; long operations roll
 * through several transactions, each consistent on its own.
 */
#include "mem.h"
#include "mendfs_int.h"

#include "bmap.h"
#include "dev.h"
#include "journal.h"
#include "log.h"
#include "trans.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/falloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static uint64_t max_bytes(const struct mfs_fs *fs)
{
	/* 2^63 would not fit in off_t: the last byte of the last block is left out. */
	return (mfs_bmap_max_blocks(fs) << fs->geo.blocklog) - 1;
}

/* Everything committed durable and every data write before the call on stable storage:
 * the journal's own flushes serve when it writes a batch (mfs_journal_sync). */
int mfsd_force(struct mfsd *d)
{
	if (d->fs->log)
		return mfs_journal_sync(d->fs->log);
	return mfs_dev_flush(d->fs->dev);
}

static int has_extents(const struct mfs_inode *ip)
{
	return ip->dformat == MFS_FMT_EXTENTS || ip->dformat == MFS_FMT_BTREE;
}

/* Log ip's in-core fields in a transaction of their own.  On failure the in-core inode is
 * reloaded from its buffer: the caller's changes are undone, as the reply says.
 * `nodata`: the caller changed no size (only times, or a mode bit): the record makes
 * nothing reachable that was written on the device before it, so the journal need not
 * flush the device first (mfs_trans_nodata).  A size grown over blocks holding data
 * (a truncate up over a tail zeroed earlier, a write into blocks mapped past the end of
 * file) does make such bytes part of the file: never `nodata`. */
static int log_inode(struct mfsd *d, struct mfs_inode *ip, int nodata)
{
	struct mfs_trans *tp;
	int err = mfs_trans_alloc(d->fs, &tp);

	if (err) {
		mfs_inode_reload(ip);
		return err;
	}
	if (nodata)
		mfs_trans_nodata(tp);
	err = mfs_inode_log(tp, ip);
	if (err) {
		mfs_trans_cancel(tp);
		mfs_inode_reload(ip);
		return err;
	}
	err = mfsd_trans_end(tp, 0);
	if (err)
		mfs_inode_reload(ip);
	return err;
}

/*
 * The modification and change time of a write.  Like the kernel's for its own
 * filesystems, it comes from the coarse clock (one tick, a few milliseconds): the writes
 * to a file within one tick find its times already set to it and need no transaction for
 * them, so that an overwrite inside the mapped blocks costs no journal work at all.  A
 * time of the inode set earlier in this same tick by the fine clock (attr.c's mfsd_now:
 * create, chmod, truncate, or a read's access time) lies between the coarse clock and
 * the fine one: the write takes the latest such time instead, so that no time moves back
 * and a write is never older than a read before it (relatime compares them, atime.c).
 */
static int ts_after(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec > b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec > b->tv_nsec);
}

static void write_time(const struct mfs_inode *ip, struct timespec *w)
{
	const struct timespec *t[3] = { &ip->ctime, &ip->mtime, &ip->atime };
	struct timespec fine;

	clock_gettime(CLOCK_REALTIME_COARSE, w);
	clock_gettime(CLOCK_REALTIME, &fine);
	for (int i = 0; i < 3; i++)
		if (ts_after(t[i], w) && !ts_after(t[i], &fine))
			*w = *t[i];
}

static int ts_same(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

/* Set the write's times (0 when they were set already: nothing to log for them). */
static int set_write_time(struct mfs_inode *ip, const struct timespec *w)
{
	if (ts_same(&ip->mtime, w) && ts_same(&ip->ctime, w))
		return 0;
	ip->mtime = *w;
	ip->ctime = *w;
	return 1;
}

/*
 * Write the part of [pos, end) (bytes; user data `buf` starts at file byte `bufpos`) that
 * falls in file blocks [b, b + n), mapped from disk block `fsb`.  `fresh`: the blocks hold
 * nothing yet (new or unwritten): partial blocks are padded with zeroes; otherwise they are
 * read, patched and written back.  `tmp` is one block of scratch.
 */
static int write_mapped(struct mfs_fs *fs, uint64_t fsb, uint64_t b, uint64_t n,
			uint64_t pos, uint64_t end, const char *buf, uint64_t bufpos, int fresh,
			char *tmp)
{
	uint32_t bs = fs->geo.blocksize, blog = fs->geo.blocklog;
	uint64_t cur = pos > (b << blog) ? pos : b << blog;
	uint64_t stop = (b + n) << blog;
	int err;

	if (end < stop)
		stop = end;
	while (cur < stop) {
		uint64_t blk = cur >> blog, boff = cur & (bs - 1);
		uint64_t disk = (fsb + (blk - b)) << blog;

		if (boff == 0 && stop - cur >= bs) {
			uint64_t len = (stop - cur) & ~(uint64_t)(bs - 1);

			err = mfs_dev_pwrite(fs->dev, buf + (cur - bufpos), len, disk);
			if (err)
				return err;
			cur += len;
		} else {
			uint64_t take = bs - boff;

			if (take > stop - cur)
				take = stop - cur;
			if (fresh)
				memset(tmp, 0, bs);
			else if ((err = mfs_dev_pread(fs->dev, tmp, bs, disk)) != 0)
				return err;
			memcpy(tmp + boff, buf + (cur - bufpos), take);
			err = mfs_dev_pwrite(fs->dev, tmp, bs, disk);
			if (err)
				return err;
			cur += take;
		}
	}
	return 0;
}

/*
 * Map a hole at file block b (at most n blocks) and write data into it, in one transaction
 * committed after the data is on the device.  *mapped gets the blocks mapped.  The inode
 * is logged with the size reached by this piece and, unless `times` is NULL, the write's
 * modification and change times (so that an append needs no second transaction).
 */
static int write_alloc(struct mfsd *d, struct mfs_inode *ip, uint64_t b, uint64_t n,
		       uint64_t pos, uint64_t end, const char *buf, uint64_t bufpos, char *tmp,
		       const struct timespec *times, uint64_t *mapped)
{
	struct mfs_fs *fs = d->fs;
	struct mfs_bmap_ext ext;
	struct mfs_trans *tp;
	int err;
	unsigned tries = 0;

again:
	err = mfs_trans_alloc(fs, &tp);
	if (err)
		return err;
	err = mfs_bmap_alloc(tp, ip, b, n, 0, &ext);
	if (!err)
		err = write_mapped(fs, ext.startblock, b, ext.len, pos, end, buf, bufpos, 1, tmp);
	if (!err) {
		uint64_t piece_end = (b + ext.len) << fs->geo.blocklog;

		if (piece_end > end)
			piece_end = end;
		if (piece_end > ip->size)
			ip->size = piece_end;
		if (times)
			set_write_time(ip, times);
		err = mfs_inode_log(tp, ip);
	}
	if (err) {
		mfs_trans_cancel(tp);
		mfs_inode_reload(ip);
		if (mfsd_should_retry(err, &tries))
			goto again;
		return err;
	}
	err = mfsd_trans_end(tp, 0);
	if (err) {
		mfs_inode_reload(ip);
		return err;
	}
	*mapped = ext.len;
	return 0;
}

/* Mark [b, b + n) written, in as many bounded transactions as it takes. */
static int convert_written(struct mfsd *d, struct mfs_inode *ip, uint64_t b, uint64_t n)
{
	uint64_t done = 0;
	unsigned tries = 0;

	while (done < n) {
		struct mfs_trans *tp;
		uint64_t got = 0;
		int err = mfs_trans_alloc(d->fs, &tp);

		if (err)
			return err;
		err = mfs_bmap_convert_written(tp, ip, b + done, n - done, &got);
		err = mfsd_trans_end(tp, err);
		if (err) {
			mfs_inode_reload(ip);
			if (mfsd_should_retry(err, &tries))
				continue;
			return err;
		}
		done += got;
		if (got == 0)
			break;
	}
	return 0;
}

int mfsd_write_new(struct mfs_trans *tp, struct mfs_inode *ip, const char *data,
		   uint64_t len)
{
	struct mfs_fs *fs = ip->fs;
	uint32_t bs = fs->geo.blocksize, blog = fs->geo.blocklog;
	uint64_t nb = (len + bs - 1) >> blog, b = 0;
	char *tmp = mfs_malloc(bs);
	int err = 0;

	if (!tmp)
		return -ENOMEM;
	while (b < nb && !err) {
		struct mfs_bmap_ext ext;

		err = mfs_bmap_alloc(tp, ip, b, nb - b, 0, &ext);
		if (err)
			break;
		err = write_mapped(fs, ext.startblock, b, ext.len, 0, len, data, 0, 1, tmp);
		b += ext.len;
	}
	free(tmp);
	if (!err)
		ip->size = len;
	return err;
}

static int zero_mapped(struct mfs_inode *ip, uint64_t from, uint64_t to, char *tmp);
static int clear_past_eof(struct mfsd *d, struct mfs_inode *ip, uint64_t from, uint64_t to);

/*
 * A write or an O_TRUNC open cleared setuid or setgid (`changed`: the mode bits that
 * moved): the kernel's copy of the mode must go, before the reply.  Neither reply carries
 * attributes, and after them the kernel drops only its size and times; with
 * FUSE_HANDLE_KILLPRIV_V2 (fuse_io.c) the kernel no longer sends the new mode itself, so
 * `stat -c %a` (a statx for the mode alone) went on showing 6777 (t_mount).
 */
static void notify_mode(struct mfsd *d, fuse_ino_t ino, uint16_t changed)
{
	if (changed && d->se)
		(void)fuse_lowlevel_notify_inval_inode(d->se, ino, -1, 0);
}

/* Write [off, off + size) of a file whose lock the caller holds exclusive.  *written gets
 * the bytes written (all, or a prefix when an error stopped the write).  `cached`: the
 * kernel's writeback of its page cache (FUSE_WRITE_CACHE): the kernel keeps the times of
 * such writes itself and sends them with a SETATTR, so an overwrite inside the logged
 * size that changes no privilege needs no transaction at all.  Other writes log their
 * times only when they moved (write_time: once a clock tick per file). */
static int do_write(struct mfsd *d, struct mfs_inode *ip, const char *buf, size_t size,
		    uint64_t off, int killpriv, int cached, size_t *written)
{
	struct mfs_fs *fs = d->fs;
	uint32_t bs = fs->geo.blocksize, blog = fs->geo.blocklog;
	uint64_t end = off + size, pos = off, logged = ip->size;
	struct timespec now;
	char *tmp;
	int err = 0, times_logged = 0;

	*written = 0;
	if (!has_extents(ip))
		return -EINVAL;
	if (size == 0)
		return 0;
	if (end < off || end > max_bytes(fs))
		return -EFBIG;
	/* A file capability goes before the data changes, whoever writes (with
	 * FUSE_HANDLE_KILLPRIV_V2, fuse_io.c, that is ours to do).  Not for the kernel's
	 * writeback: it removed the capability at write(2) time itself (and a local
	 * filesystem keeps it across writes through a shared mapping). */
	if (!cached) {
		err = mfsd_kill_caps(d, ip);
		if (err)
			return err;
	}
	if (end > ip->size) {
		err = clear_past_eof(d, ip, (ip->size + bs - 1) >> blog, (end + bs - 1) >> blog);
		if (err)
			return err;
	}
	write_time(ip, &now);
	tmp = mfs_malloc(bs);
	if (!tmp)
		return -ENOMEM;
	while (pos < end) {
		uint64_t b = pos >> blog, eb = (end + bs - 1) >> blog, n;
		struct mfs_bmap_ext ext;

		err = mfs_bmap_lookup(ip, b, &ext);
		if (err)
			break;
		n = (ext.startoff + ext.len < eb ? ext.startoff + ext.len : eb) - b;
		if (ext.startblock == MFS_BMAP_HOLE) {
			err = write_alloc(d, ip, b, n, pos, end, buf, off, tmp,
					  cached ? NULL : &now, &n);
			if (!err && ip->size > logged)
				logged = ip->size;       /* logged with the mapping */
			if (!err && !cached)
				times_logged = 1;        /* and so were the times */
		} else {
			uint64_t fsb = ext.startblock + (b - ext.startoff);

			err = write_mapped(fs, fsb, b, n, pos, end, buf, off, ext.unwritten, tmp);
			if (!err && ext.unwritten)
				err = convert_written(d, ip, b, n);
		}
		if (err)
			break;
		pos = (b + n) << blog;
	}
	if (pos > end)
		pos = end;
	if (pos == off) {
		free(tmp);
		return err;
	}
	/* Whatever was written counts: size, times and privileges move with it.  A failed
	 * log reloads the inode; a transient failure (no memory) is retried a few times. */
	for (unsigned tries = 0;; tries++) {
		int err2, dirty;

		if (pos > ip->size)
			ip->size = pos;
		dirty = ip->size != logged;
		if (!cached && !times_logged && set_write_time(ip, &now))
			dirty = 1;
		if (killpriv && mfsd_kill_suid(ip))
			dirty = 1;
		if (!dirty)
			break;
		/* Times and mode only (the data went in place, or was mapped and logged with
		 * its size by write_alloc): no device flush needs to precede this record. */
		err2 = log_inode(d, ip, ip->size == logged);
		if (!err2)
			break;
		if (!err)
			err = err2;
		if (err2 != -ENOMEM || tries == 3) {
			/* The size stayed where it was logged: bytes past it are not the file's
			 * (the count says so), and must be zero again on the device (see the
			 * invariant at the top), or growing the file later would show them.
			 * `logged`, not ip->size: the reload after the failure may have failed
			 * too (then the inode is marked stale and reloaded at its next use). */
			ip->size = logged;
			if (pos > logged) {
				uint64_t keep = logged > off ? logged : off;
				int err3 = zero_mapped(ip, keep, pos, tmp);

				if (err3)
					mfs_log(MFS_LOG_ERR, "inode %llu: zeroing bytes %llu..%llu past "
						"the end of file after a failed write failed: %s",
						(unsigned long long)ip->ino,
						(unsigned long long)keep,
						(unsigned long long)pos, strerror(-err3));
				pos = keep;
			}
			break;
		}
	}
	free(tmp);
	if (pos > off)
		*written = (size_t)(pos - off);
	/* A short count is how write(2) learns of an ENOSPC part way, but the kernel's
	 * writeback (cached: pages of a mapping or of the writeback cache) ignores the count
	 * of its requests: there the error must be the answer, or the data of the pages not
	 * written is dropped without a word (found by mendfs_stress -S: mmap'd writes into
	 * holes lost on a nearly full filesystem, msync and fsync returning 0). */
	return *written && !cached ? 0 : err;
}

void mfsd_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		struct fuse_file_info *fi)
{
	struct mfsd *d = mfsd_of(req);
	struct mfs_inode *ip;
	size_t written = 0;
	uint16_t mode;
	int err;

	if (d->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	err = mfsd_iget(d, ino, &ip);
	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	pthread_rwlock_wrlock(&ip->lock);
	mode = ip->mode;
	err = do_write(d, ip, buf, size, (uint64_t)off, fuse_req_ctx(req)->uid != 0,
		       fi->writepage, &written);
	mode ^= ip->mode;
	pthread_rwlock_unlock(&ip->lock);
	mfsd_iput(d, ip);
	notify_mode(d, ino, mode);
	if (err)
		mfsd_reply_err(req, err);
	else
		fuse_reply_write(req, written);
}

/* Read [off, off + len) into buf (the caller clipped it to the file size). */
int mfsd_read_data(struct mfs_inode *ip, char *buf, uint64_t off, uint64_t len)
{
	struct mfs_fs *fs = ip->fs;
	uint32_t blog = fs->geo.blocklog;
	uint64_t pos = off, end = off + len;

	while (pos < end) {
		uint64_t b = pos >> blog;
		struct mfs_bmap_ext ext;
		uint64_t stop;
		int err = mfs_bmap_lookup(ip, b, &ext);

		if (err)
			return err;
		stop = (ext.startoff + ext.len) << blog;
		if (stop > end || stop == 0)
			stop = end;
		if (ext.startblock == MFS_BMAP_HOLE || ext.unwritten) {
			memset(buf + (pos - off), 0, stop - pos);
		} else {
			uint64_t disk = ((ext.startblock + (b - ext.startoff)) << blog) +
					(pos & (fs->geo.blocksize - 1));

			err = mfs_dev_pread(fs->dev, buf + (pos - off), stop - pos, disk);
			if (err)
				return err;
		}
		pos = stop;
	}
	return 0;
}

/*
 * Reads are answered with the device's file descriptor: a vector of (image fd, offset)
 * pieces for written extents and zeroes for holes and unwritten ones, which libfuse splices
 * or reads straight into the reply (no copy through a buffer of ours).  It is sent while
 * the caller holds the inode's lock shared, so no truncate can free and reuse the blocks
 * before they are read.  A range in more than READ_MAX_PIECES pieces, or longer than the
 * zero page run, is copied the old way.
 */
#define READ_MAX_PIECES 16
#define READ_ZEROES (1u << 20)
static const char read_zeroes[READ_ZEROES];

/*
 * A descriptor of its own for each open of a file of OWN_FD_MIN bytes or more for reading
 * (the image opened again, read-only; at most OWN_FD_MAX at once, else the shared one):
 * the host keeps its readahead state per open file, and on the descriptor every file and
 * every metadata read share, that state carries over from whatever was read before, so
 * a file read from its start met a window (and folio size) set by others; pieces in large
 * folios cannot be moved into the FUSE file's cache by the splice and are copied (the
 * likely cause, not proven).  1-job cold reads, alternated with the shared descriptor,
 * ran 805 and 457 MiB/s
 * at 0.38 and 1.02 s/GiB of daemon CPU against 1,049 and 1,105 at 0.38 and 0.32 (the
 * ceiling, which opens its file at every open: 1,051 and 1,146 at 0.32 and 0.28).  Only
 * while readahead= is off (with it, readahead.c's descriptor serves every read).  Kept
 * in fi->fh, plus one (0: none); closed at release, which the kernel sends once no
 * request of that open file is in flight.
 */
#define OWN_FD_MIN (1u << 20)
#define OWN_FD_MAX 64u
static unsigned own_fds;                /* open now (atomic) */

static void own_fd_open(struct mfsd *d, struct mfs_inode *ip, struct fuse_file_info *fi)
{
	int fd;

	fi->fh = 0;
	if (!S_ISREG(ip->mode) || (fi->flags & O_ACCMODE) == O_WRONLY ||
	    ip->size < OWN_FD_MIN || mfsd_data_fd(d) != mfs_dev_fd(d->fs->dev))
		return;
	if (__atomic_add_fetch(&own_fds, 1, __ATOMIC_RELAXED) > OWN_FD_MAX) {
		__atomic_sub_fetch(&own_fds, 1, __ATOMIC_RELAXED);
		return;
	}
	fd = mfs_dev_reopen_rdonly(d->fs->dev);
	if (fd < 0) {
		__atomic_sub_fetch(&own_fds, 1, __ATOMIC_RELAXED);
		return;
	}
	fi->fh = (uint64_t)fd + 1;
}

static void own_fd_close(struct fuse_file_info *fi)
{
	if (!fi->fh)
		return;
	close((int)(fi->fh - 1));
	fi->fh = 0;
	__atomic_sub_fetch(&own_fds, 1, __ATOMIC_RELAXED);
}

/* Returns 0 when the reply was sent, 1 when the caller must copy instead, or a negative
 * errno (nothing sent). */
static int reply_read_fd(fuse_req_t req, struct mfsd *d, struct mfs_inode *ip, uint64_t off,
			 uint64_t len, int fd)
{
	struct mfs_fs *fs = ip->fs;
	uint32_t blog = fs->geo.blocklog;
	struct fuse_bufvec *bv;
	uint64_t pos = off, end = off + len;
	size_t n = 0;
	int err = 0;

	if (len > READ_ZEROES)
		return 1;
	bv = mfs_calloc(1, sizeof(*bv) + (READ_MAX_PIECES - 1) * sizeof(bv->buf[0]));
	if (!bv)
		return 1;
	while (pos < end && !err) {
		uint64_t b = pos >> blog, stop;
		struct mfs_bmap_ext ext;
		struct fuse_buf *fb;

		err = mfs_bmap_lookup(ip, b, &ext);
		if (err)
			break;
		if (n == READ_MAX_PIECES) {
			err = 1;
			break;
		}
		stop = (ext.startoff + ext.len) << blog;
		if (stop > end || stop == 0)
			stop = end;
		fb = &bv->buf[n++];
		fb->size = stop - pos;
		if (ext.startblock == MFS_BMAP_HOLE || ext.unwritten) {
			fb->mem = (void *)read_zeroes;
		} else {
			fb->flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK | FUSE_BUF_FD_RETRY;
			fb->fd = fd;
			fb->pos = (off_t)(((ext.startblock + (b - ext.startoff)) << blog) +
					  (pos & (fs->geo.blocksize - 1)));
		}
		pos = stop;
	}
	if (!err) {
		bv->count = n;
		fuse_reply_data(req, bv, FUSE_BUF_SPLICE_MOVE);
	}
	free(bv);
	return err;
}

void mfsd_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
	       struct fuse_file_info *fi)
{
	struct mfsd *d = mfsd_of(req);
	struct mfsd_ra_plan plan = { 0 };
	struct mfs_inode *ip;
	char *buf = NULL;
	uint64_t len = 0;
	int err, replied = 0;

	err = mfsd_iget(d, ino, &ip);
	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	/* The access time first: the reply may leave before this function returns. */
	mfsd_touch_atime(d, ip);
	pthread_rwlock_rdlock(&ip->lock);
	if (!has_extents(ip))
		err = S_ISDIR(ip->mode) ? -EISDIR : -EINVAL;
	else if (off >= 0 && (uint64_t)off < ip->size) {
		len = ip->size - (uint64_t)off;
		if (len > size)
			len = size;
		err = reply_read_fd(req, d, ip, (uint64_t)off, len,
				    fi && fi->fh ? (int)(fi->fh - 1) : mfsd_data_fd(d));
		replied = err == 0;
		if (err == 1) {
			buf = mfs_malloc(len);
			err = buf ? mfsd_read_data(ip, buf, (uint64_t)off, len) : -ENOMEM;
		}
		if (!err && S_ISREG(ip->mode))
			mfsd_ra_plan(d, ip, (uint64_t)off, len, &plan);
	}
	pthread_rwlock_unlock(&ip->lock);
	mfsd_iput(d, ip);
	if (err)
		mfsd_reply_err(req, err);
	else if (!replied)
		fuse_reply_buf(req, buf, len);
	free(buf);
	/* After the reply and with no lock held (readahead.c). */
	if (!err)
		mfsd_ra_issue(d, &plan);
}

/* ---- freeing blocks --------------------------------------------------------------------- */

/*
 * Unmap [first, last) blocks in bounded transactions.  `log_first`: the first transaction
 * also logs the in-core fields the caller changed (size, times); *logged (may be NULL) is
 * set once it has committed.  (After a failure the in-core inode is reloaded, but a reload
 * can fail too: only this flag says what was logged.)
 */
/*
 * Once a truncate's new size is logged, the rest of its punch should happen: blocks left
 * mapped past the end of file cost a punch when the file grows over them (clear_past_eof)
 * and hold space until then.  A transient lack of memory there is retried, a bounded
 * number of times (yielding in between); after that the truncate succeeds all the same.
 */
#define PUNCH_NOMEM_RETRIES 1000u
static int punch_must_go_on(int err, const int *logged, unsigned *nomem)
{
	if (err != -ENOMEM || !logged || !*logged || ++*nomem >= PUNCH_NOMEM_RETRIES)
		return 0;
	sched_yield();
	return 1;
}

static int punch_blocks(struct mfsd *d, struct mfs_inode *ip, uint64_t first, uint64_t last,
			int log_first, int *logged)
{
	uint64_t off = first;
	int err = 0;
	unsigned tries = 0, nomem = 0;
	/* The in-core changes the first transaction must log (a truncate's size, times and
	 * mode): a cancelled try reloads the inode from its buffer, which undoes them, so they
	 * are put back before the next try. */
	const uint64_t want_size = ip->size;
	const struct timespec want_mtime = ip->mtime, want_ctime = ip->ctime;
	const uint16_t want_mode = ip->mode;

	while (off < last || log_first) {
		struct mfs_trans *tp;
		uint64_t done = 0;

		if (log_first) {
			ip->size = want_size;
			ip->mtime = want_mtime;
			ip->ctime = want_ctime;
			ip->mode = want_mode;
		}

		err = mfs_trans_alloc(d->fs, &tp);
		if (err && punch_must_go_on(err, logged, &nomem))
			continue;
		if (err) {
			/* Nothing of the first transaction's changes is logged: undo them in
			 * core too (a truncate that fails leaves the size as it was; before,
			 * the new size stayed in core and the next transaction logged it). */
			if (log_first)
				mfs_inode_reload(ip);
			break;
		}
		if (off < last)
			err = mfs_bmap_punch(tp, ip, off, last - off, &done);
		if (!err && log_first)
			err = mfs_inode_log(tp, ip);
		if (err) {
			mfs_trans_cancel(tp);
			mfs_inode_reload(ip);
			if (mfsd_should_retry(err, &tries) || punch_must_go_on(err, logged, &nomem))
				continue;
			break;
		}
		err = mfsd_trans_end(tp, 0);
		if (err) {
			mfs_inode_reload(ip);
			if (punch_must_go_on(err, logged, &nomem))
				continue;       /* not committed (no memory to queue it) */
			break;
		}
		if (log_first && logged)
			*logged = 1;
		log_first = 0;
		off += done;
		if (done == 0 && off < last) {
			err = -EIO;   /* no progress: never loop forever */
			mfs_log(MFS_LOG_ERR, "inode %llu: punch made no progress at block %llu",
				(unsigned long long)ip->ino, (unsigned long long)off);
			break;
		}
	}
	return err;
}

int mfsd_free_all_blocks(struct mfsd *d, struct mfs_inode *ip)
{
	if (!has_extents(ip))
		return 0;
	return punch_blocks(d, ip, 0, mfs_bmap_max_blocks(d->fs), 0, NULL);
}

/*
 * Unmap the written extents met in blocks [from, to), from `from` to their ends (all of
 * it past the end of file), before the file grows over them (see "Blocks past the end of file" at the top).  Unwritten
 * extents (fallocate's, kept past the end) read as zeroes and stay.  Nothing visible
 * changes, so a caller that gets an error gives up with nothing to undo.  For a file
 * without such blocks this is one lookup.
 */
static int clear_past_eof(struct mfsd *d, struct mfs_inode *ip, uint64_t from, uint64_t to)
{
	while (from < to) {
		struct mfs_bmap_ext ext;
		uint64_t stop;
		int err = mfs_bmap_lookup(ip, from, &ext);

		if (err)
			return err;
		stop = ext.startoff + ext.len;
		if (stop <= from)
			stop = to;
		if (ext.startblock != MFS_BMAP_HOLE && !ext.unwritten) {
			/* to the extent's end, even past `to`: those blocks lie past the end of
			 * file too, and unmapping the extent's whole tail splits no extent (a
			 * split needs a new record, for which a full filesystem may have no
			 * block) */
			err = punch_blocks(d, ip, from, stop, 0, NULL);
			if (err)
				return err;
		} else if (stop > to) {
			stop = to;
		}
		from = stop;
	}
	return 0;
}

/* Zero bytes [from, to) where they lie in mapped, written blocks (`tmp`: one block). */
static int zero_mapped(struct mfs_inode *ip, uint64_t from, uint64_t to, char *tmp)
{
	struct mfs_fs *fs = ip->fs;
	uint32_t bs = fs->geo.blocksize, blog = fs->geo.blocklog;

	while (from < to) {
		uint64_t b = from >> blog, boff = from & (bs - 1), take = bs - boff, disk;
		struct mfs_bmap_ext ext;
		int err = mfs_bmap_lookup(ip, b, &ext);

		if (err)
			return err;
		if (take > to - from)
			take = to - from;
		if (ext.startblock != MFS_BMAP_HOLE && !ext.unwritten) {
			disk = (ext.startblock + (b - ext.startoff)) << blog;
			err = take == bs ? 0 : mfs_dev_pread(fs->dev, tmp, bs, disk);
			if (!err) {
				memset(tmp + boff, 0, take);
				err = mfs_dev_pwrite(fs->dev, tmp, bs, disk);
			}
			if (err)
				return err;
		}
		from += take;
	}
	return 0;
}

/* Zero bytes [from, to) of one block (inside a single block) if it is mapped and written. */
static int zero_partial(struct mfs_inode *ip, uint64_t from, uint64_t to)
{
	char *tmp;
	int err;

	if (from >= to)
		return 0;
	tmp = mfs_malloc(ip->fs->geo.blocksize);
	if (!tmp)
		return -ENOMEM;
	err = zero_mapped(ip, from, to, tmp);
	free(tmp);
	return err;
}

int mfsd_truncate(struct mfsd *d, struct mfs_inode *ip, uint64_t size, int killpriv)
{
	struct mfs_fs *fs = d->fs;
	uint32_t bs = fs->geo.blocksize, blog = fs->geo.blocklog;
	struct timespec now;
	char *tmp = NULL;
	uint64_t tail = 0;          /* the new last block's device offset, if written */
	int err, logged = 0;

	if (size > max_bytes(fs))
		return -EFBIG;
	if (!has_extents(ip))
		return -EINVAL;
	err = mfsd_kill_caps(d, ip);        /* first: on failure it reloads the inode */
	if (err)
		return err;
	if (size > ip->size) {
		/* before any in-core change: its punches log the inode */
		err = clear_past_eof(d, ip, (ip->size + bs - 1) >> blog, (size + bs - 1) >> blog);
		if (err)
			return err;
	}
	mfsd_now(&now);
	ip->mtime = now;
	ip->ctime = now;
	if (killpriv)
		mfsd_kill_suid(ip);
	if (size >= ip->size) {
		ip->size = size;
		return log_inode(d, ip, 0);
	}
	/* The tail of the new last block is zeroed once the new size is logged (the first
	 * punch transaction), never before: a truncate that fails (no memory) changes
	 * nothing.  Its buffer is taken and the block looked up first, so that after the
	 * commit only a device error can fail it. */
	if (size & (bs - 1)) {
		struct mfs_bmap_ext ext;
		uint64_t b = size >> blog;

		tmp = mfs_malloc(bs);
		err = tmp ? mfs_bmap_lookup(ip, b, &ext) : -ENOMEM;
		if (err) {
			free(tmp);
			mfs_inode_reload(ip);
			return err;
		}
		if (ext.startblock != MFS_BMAP_HOLE && !ext.unwritten)
			tail = (ext.startblock + (b - ext.startoff)) << blog;
	}
	ip->size = size;
	err = punch_blocks(d, ip, (size + bs - 1) >> blog, mfs_bmap_max_blocks(fs), 1, &logged);
	if (!logged) {
		free(tmp);
		return err;
	}
	/* The new size is committed: the truncate has happened.  Blocks it could not unmap
	 * stay past the end of file until the file grows over them (clear_past_eof). */
	if (err)
		mfs_log(MFS_LOG_WARN, "inode %llu: truncated to %llu, but unmapping the blocks "
			"past it stopped (%s); they go before the file grows over them",
			(unsigned long long)ip->ino, (unsigned long long)size, strerror(-err));
	err = 0;
	if (tail) {
		uint32_t boff = (uint32_t)(size & (bs - 1));

		err = mfs_dev_pread(fs->dev, tmp, bs, tail);
		if (!err) {
			memset(tmp + boff, 0, bs - boff);
			err = mfs_dev_pwrite(fs->dev, tmp, bs, tail);
		}
		if (err)
			mfs_log(MFS_LOG_ERR, "inode %llu: zeroing the tail of the last block after "
				"truncating to %llu failed: %s", (unsigned long long)ip->ino,
				(unsigned long long)size, strerror(-err));
	}
	free(tmp);
	return err;
}

/* ---- open, release, flush, fsync ------------------------------------------------------- */

void mfsd_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mfsd *d = mfsd_of(req);
	struct mfs_inode *ip;
	int err;

	if (d->ro && (fi->flags & O_ACCMODE) != O_RDONLY) {
		fuse_reply_err(req, EROFS);
		return;
	}
	err = mfsd_iget(d, ino, &ip);
	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	if ((fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY) {
		uint16_t mode;

		pthread_rwlock_wrlock(&ip->lock);
		mode = ip->mode;
		if (S_ISREG(ip->mode))
			err = mfsd_truncate(d, ip, 0, fuse_req_ctx(req)->uid != 0);
		mode ^= ip->mode;
		pthread_rwlock_unlock(&ip->lock);
		notify_mode(d, ino, mode);
	}
	if (!err)
		err = mfsd_node_open(d, ip);
	/* The kernel serves reads from its page cache without telling us: when a read would
	 * update the access time (every read with strictatime; with relatime, the first since
	 * a change or in a day — a change of mtime drops the cache anyway, one of ctime or of
	 * atime alone does not), the open drops the cached pages so the reads reach the
	 * daemon, which sees them (atime.c). */
	fi->keep_cache = (fi->flags & O_ACCMODE) == O_WRONLY || !mfsd_atime_due(d, ip);
	fi->fh = 0;
	if (!err)
		own_fd_open(d, ip, fi);
	mfsd_iput(d, ip);
	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	if (fuse_reply_open(req, fi) != 0) {
		own_fd_close(fi);
		mfsd_node_release(d, mfsd_ino(d, ino));
	}
}

void mfsd_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct mfsd *d = mfsd_of(req);

	own_fd_close(fi);
	mfsd_node_release(d, mfsd_ino(d, ino));
	fuse_reply_err(req, 0);
}

void mfsd_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	/* Every write reached the device before its reply: nothing is buffered here, and
	 * ENOSYS tells the kernel to send no FLUSH again (one round trip less per close; the
	 * kernel still writes its cached pages back before close returns). */
	fuse_reply_err(req, ENOSYS);
}

void mfsd_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	struct mfsd *d = mfsd_of(req);

	if (d->ro) {
		fuse_reply_err(req, 0);
		return;
	}
	mfsd_reply_err(req, mfsd_force(d));
}

/* ---- fallocate, lseek -------------------------------------------------------------------- */

/* Map every hole of blocks [b, e) as unwritten extents. */
static int alloc_unwritten(struct mfsd *d, struct mfs_inode *ip, uint64_t b, uint64_t e)
{
	unsigned tries = 0;

	while (b < e) {
		struct mfs_bmap_ext ext;
		struct mfs_trans *tp;
		int err = mfs_bmap_lookup(ip, b, &ext);

		if (err)
			return err;
		if (ext.startblock != MFS_BMAP_HOLE) {
			b = ext.startoff + ext.len;
			continue;
		}
		err = mfs_trans_alloc(d->fs, &tp);
		if (err)
			return err;
		err = mfs_bmap_alloc(tp, ip, b, (ext.startoff + ext.len < e ?
						 ext.startoff + ext.len : e) - b,
				     MFS_BMAP_UNWRITTEN, &ext);
		err = mfsd_trans_end(tp, err);
		if (err) {
			mfs_inode_reload(ip);
			if (mfsd_should_retry(err, &tries))
				continue;
			return err;
		}
		b += ext.len;
	}
	return 0;
}

static int do_fallocate(struct mfsd *d, struct mfs_inode *ip, int mode, uint64_t off,
			uint64_t len)
{
	struct mfs_fs *fs = d->fs;
	uint32_t bs = fs->geo.blocksize, blog = fs->geo.blocklog;
	uint64_t end = off + len;
	struct timespec now;
	int err = 0;

	if (!S_ISREG(ip->mode))
		return S_ISDIR(ip->mode) ? -EISDIR : -ENODEV;
	if (end < off || end > max_bytes(fs))
		return -EFBIG;
	/* Written blocks past the end of file go before the file grows over them, and before
	 * a preallocation past it too (KEEP_SIZE): alloc_unwritten keeps what is mapped, so
	 * the range would keep them, and growing the file over them later punches them: the
	 * preallocation loses their space, its writes allocate again (t_nomem_prealloc: a
	 * truncate up freed 504 of its 1288 sectors).  A punch that keeps the size needs none. */
	if (end > ip->size &&
	    (mode & (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) !=
	    (FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE)) {
		uint64_t from = (ip->size + bs - 1) >> blog;

		if ((mode & FALLOC_FL_KEEP_SIZE) && (off >> blog) > from)
			from = off >> blog;     /* the size stays: only the range matters */
		err = clear_past_eof(d, ip, from, (end + bs - 1) >> blog);
		if (err)
			return err;
	}
	mfsd_now(&now);
	if (mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
		uint64_t fb = (off + bs - 1) >> blog, lb = end >> blog;

		if (fb > lb) {                  /* inside one block */
			err = zero_partial(ip, off, end);
		} else {
			err = zero_partial(ip, off, fb << blog);
			if (!err)
				err = zero_partial(ip, lb << blog, end);
		}
		if (!err && fb < lb)
			err = punch_blocks(d, ip, fb, lb, 0, NULL);
		if (!err && (mode & FALLOC_FL_ZERO_RANGE) && fb < lb)
			err = alloc_unwritten(d, ip, fb, lb);
		if (err)
			return err;
		ip->mtime = now;
	} else {
		err = alloc_unwritten(d, ip, off >> blog, (end + bs - 1) >> blog);
		if (err)
			return err;
	}
	if (!(mode & FALLOC_FL_KEEP_SIZE) && end > ip->size)
		ip->size = end;
	ip->ctime = now;
	return log_inode(d, ip, 0);
}

void mfsd_fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
		    struct fuse_file_info *fi)
{
	struct mfsd *d = mfsd_of(req);
	struct mfs_inode *ip;
	int err;

	if (d->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (mode & ~(FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE)) {
		fuse_reply_err(req, EOPNOTSUPP);
		return;
	}
	if (offset < 0 || length <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	err = mfsd_iget(d, ino, &ip);
	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	pthread_rwlock_wrlock(&ip->lock);
	err = do_fallocate(d, ip, mode, (uint64_t)offset, (uint64_t)length);
	pthread_rwlock_unlock(&ip->lock);
	mfsd_iput(d, ip);
	mfsd_reply_err(req, err);
}

void mfsd_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		struct fuse_file_info *fi)
{
	struct mfsd *d = mfsd_of(req);
	uint32_t blog = d->fs->geo.blocklog;
	struct mfs_inode *ip;
	uint64_t res = 0, pos = 0;
	int err;

	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	/* With the writeback cache the kernel holds data (and a size) we have not seen yet and
	 * does not write it back before asking: ENOSYS makes it answer from its own size,
	 * the whole file being data (POSIX allows that), instead of our map missing it. */
	if (d->writeback) {
		fuse_reply_err(req, ENOSYS);
		return;
	}
	err = mfsd_iget(d, ino, &ip);
	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	pthread_rwlock_rdlock(&ip->lock);
	if (off < 0 || (uint64_t)off >= ip->size) {
		err = -ENXIO;
	} else if (!has_extents(ip)) {
		pos = whence == SEEK_DATA ? (uint64_t)off : ip->size;
	} else {
		err = mfs_bmap_seek(ip, (uint64_t)off >> blog, whence, &res);
		if (!err) {
			pos = res << blog;
			if (pos < (uint64_t)off)
				pos = (uint64_t)off;
			if (pos > ip->size || res >= mfs_bmap_max_blocks(d->fs))
				pos = ip->size;
			if (whence == SEEK_DATA && pos >= ip->size)
				err = -ENXIO;
		}
	}
	pthread_rwlock_unlock(&ip->lock);
	mfsd_iput(d, ip);
	if (err)
		mfsd_reply_err(req, err);
	else
		fuse_reply_lseek(req, (off_t)pos);
}
