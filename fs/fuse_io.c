/*
 * fuse_io.c — the daemon's own reads and writes on the FUSE device, for one thing
 * libfuse 3.14 cannot do: ask the kernel for FUSE_HANDLE_KILLPRIV_V2 in the INIT reply.
 *
 * Why: without it the kernel calls file_remove_privs before every write(2), which asks us
 * for security.capability (a GETXATTR round trip per write: a 4 KiB write costs two
 * requests).  With it the kernel marks the superblock SB_NOSEC: file_remove_privs looks
 * at an inode once and then remembers (S_NOSEC) that it has nothing to kill, until the
 * inode's mode or security attributes change (measured on Linux 6.18: 1 GETXATTR for
 * 2,000 4 KiB writes instead of 2,000); and the protocol leaves the killing of privileges
 * to the filesystem.  What the daemon does itself (as before, plus the capability):
 * setuid and setgid-when-group-executable cleared on write and truncate by a caller other
 * than root and on every chown (fileio.c, attr.c); security.capability removed on write,
 * truncate and chown whoever the caller (xattr.c).
 *
 * How: mendfs.c installs these callbacks with fuse_session_custom_io() right after
 * mounting, on the same descriptor.  read() passes every message through, and notes the
 * kernel's INIT request (its unique id, and whether its flags offer HANDLE_KILLPRIV_V2,
 * protocol 7.33 or later); writev() passes every reply through except that one: for the
 * INIT reply with that unique id (a success, long enough to hold the flags) the message is
 * copied and the bit set in fuse_init_out.flags.  Anything unexpected (a short message,
 * another opcode first, an error reply, the bit not offered) leaves the exchange as
 * libfuse made it.  After the INIT reply every call is a plain read/writev/splice (one
 * relaxed load of the state more).  splice_send/splice_receive do plain splice(2): libfuse
 * uses splice for replies only when the custom I/O has it (read replies, fileio.c).
 *
 * -o nokillpriv_v2 (mendfs(8)) leaves libfuse's own I/O in place.  With -d the outcome is
 * logged at debug level.
 */
#include "mendfs_int.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fuse.h>
#include <stddef.h>
#include <string.h>
#include <sys/uio.h>
#include <unistd.h>

/* d->io_state */
enum { IO_WAIT_INIT = 0, IO_INIT_OFFERED, IO_DONE };

#define KILLPRIV_V2_MINOR 33u   /* the protocol minor that added FUSE_HANDLE_KILLPRIV_V2 */

/* The INIT reply is small (fuse_out_header + fuse_init_out: 80 bytes today). */
#define INIT_REPLY_MAX 512u

static int io_state(const struct mfsd *d)
{
	return __atomic_load_n(&d->io_state, __ATOMIC_ACQUIRE);
}

static void set_io_state(struct mfsd *d, int state)
{
	__atomic_store_n(&d->io_state, state, __ATOMIC_RELEASE);
}

/* A message read from the kernel while no INIT was seen yet. */
static void note_request(struct mfsd *d, const void *buf, size_t n)
{
	struct fuse_in_header in;
	struct fuse_init_in init;
	size_t need = sizeof(in) + offsetof(struct fuse_init_in, flags) + sizeof(init.flags);

	if (n < sizeof(in))
		return;
	memcpy(&in, buf, sizeof(in));
	if (in.opcode != FUSE_INIT)
		return;                 /* not expected before INIT: passed through */
	if (n < need || in.len < need) {
		mfs_log(MFS_LOG_DEBUG, "fuse INIT: %zu bytes, too short to read: "
			"HANDLE_KILLPRIV_V2 not asked for", n);
		set_io_state(d, IO_DONE);
		return;
	}
	memset(&init, 0, sizeof(init));
	memcpy(&init, (const char *)buf + sizeof(in), need - sizeof(in));
	if (init.major != FUSE_KERNEL_VERSION || init.minor < KILLPRIV_V2_MINOR ||
	    !(init.flags & FUSE_HANDLE_KILLPRIV_V2)) {
		mfs_log(MFS_LOG_DEBUG, "fuse INIT: kernel protocol %u.%u does not offer "
			"HANDLE_KILLPRIV_V2: the kernel checks security.capability before "
			"writes", init.major, init.minor);
		set_io_state(d, IO_DONE);
		return;
	}
	d->io_init_unique = in.unique;
	set_io_state(d, IO_INIT_OFFERED);
}

static ssize_t io_read(int fd, void *buf, size_t len, void *userdata)
{
	struct mfsd *d = userdata;
	ssize_t n = read(fd, buf, len);

	if (n > 0 && io_state(d) == IO_WAIT_INIT)
		note_request(d, buf, (size_t)n);
	return n;
}

/* Copy the first `len` bytes of the iovecs into `out`; the bytes copied. */
static size_t gather(const struct iovec *iov, int count, void *out, size_t len)
{
	size_t done = 0;

	for (int i = 0; i < count && done < len; i++) {
		size_t take = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;

		if (take)
			memcpy((char *)out + done, iov[i].iov_base, take);
		done += take;
	}
	return done;
}

/*
 * Is this the reply to the INIT noted by io_read?  Then send it with the bit set (the
 * result of write(2) in *res) and return 1; 0 to send it as it is.
 */
static int send_init_reply(struct mfsd *d, int fd, const struct iovec *iov, int count,
			   ssize_t *res)
{
	char msg[INIT_REPLY_MAX];
	size_t flags_at = sizeof(struct fuse_out_header) + offsetof(struct fuse_init_out, flags);
	struct fuse_out_header out;
	size_t total = 0;
	uint32_t flags;

	if (gather(iov, count, &out, sizeof(out)) < sizeof(out) ||
	    out.unique != d->io_init_unique)
		return 0;
	/* The reply to INIT: whatever it is, nothing later is looked at. */
	set_io_state(d, IO_DONE);
	for (int i = 0; i < count; i++) {
		if (iov[i].iov_len > INIT_REPLY_MAX - total) {
			total = INIT_REPLY_MAX + 1;
			break;
		}
		total += iov[i].iov_len;
	}
	if (out.error != 0 || total > INIT_REPLY_MAX || total != out.len ||
	    total < flags_at + sizeof(flags)) {
		mfs_log(MFS_LOG_DEBUG, "fuse INIT reply: error %d, %zu bytes: sent as it is, "
			"without HANDLE_KILLPRIV_V2", (int)out.error, total);
		return 0;
	}
	gather(iov, count, msg, total);
	memcpy(&flags, msg + flags_at, sizeof(flags));
	flags |= FUSE_HANDLE_KILLPRIV_V2;
	memcpy(msg + flags_at, &flags, sizeof(flags));
	*res = write(fd, msg, total);
	if (*res == (ssize_t)total)
		mfs_log(MFS_LOG_DEBUG, "fuse INIT reply: HANDLE_KILLPRIV_V2 asked for (flags "
			"0x%x): the daemon clears setuid, setgid and file capabilities on "
			"write, truncate and chown", (unsigned)flags);
	return 1;
}

static ssize_t io_writev(int fd, struct iovec *iov, int count, void *userdata)
{
	struct mfsd *d = userdata;
	ssize_t res;

	if (io_state(d) == IO_INIT_OFFERED && send_init_reply(d, fd, iov, count, &res))
		return res;
	return writev(fd, iov, count);
}

static ssize_t io_splice(int fdin, off_t *offin, int fdout, off_t *offout, size_t len,
			 unsigned int flags, void *userdata)
{
	(void)userdata;
	return splice(fdin, offin, fdout, offout, len, flags);
}

static const struct fuse_custom_io mfsd_io = {
	.read = io_read,
	.writev = io_writev,
	.splice_send = io_splice,
	.splice_receive = io_splice,
};

int mfsd_fuse_io_install(struct mfsd *d, struct fuse_session *se)
{
	int fd = fuse_session_fd(se), err;

	set_io_state(d, IO_WAIT_INIT);
	err = fuse_session_custom_io(se, &mfsd_io, fd);
	if (err) {
		mfs_log(MFS_LOG_WARN, "cannot install the FUSE I/O callbacks (%s): "
			"HANDLE_KILLPRIV_V2 not asked for, writes cost a capability check",
			strerror(err < 0 ? -err : EINVAL));
		return err < 0 ? err : -EINVAL;
	}
	return 0;
}
