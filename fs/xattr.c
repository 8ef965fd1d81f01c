/*
 * xattr.c — extended attributes and POSIX ACLs in the daemon: the setxattr, getxattr,
 * listxattr and removexattr requests; the ACL xattr format (validated, compared with the
 * mode); a directory's default ACL inherited by the inodes created in it; the access ACL
 * following a chmod; and freeing an unlinked inode's attribute fork.
 *
 * Storage is lib/xattr.c's (inline after the data fork, or a hashed attribute btree with
 * large values in blocks of their own).  Every change is one transaction under the inode's
 * exclusive lock, retried on a lock-order conflict (mfsd_should_retry), and sets ctime.
 *
 * Who checks what
 * ---------------
 * Before a request reaches us the kernel has already checked (VFS, with default_permissions,
 * which FUSE_CAP_POSIX_ACL turns on in any case): the full name's length (ERANGE over 255
 * bytes), the value's size (E2BIG over 64 KiB), write permission for user.*, user.* only on
 * regular files and directories (EPERM to change, ENODATA to read elsewhere), CAP_SYS_ADMIN
 * for trusted.* (same errnos), the owner for ACLs, and an ACL's format (seen on Linux 6.18:
 * such refused requests never reach the daemon).  We check the same again, but for write
 * permission (a request is input from outside: nothing unchecked reaches the image), and do
 * what the kernel leaves to filesystems:
 *   - listxattr: trusted.* names are left out for callers without CAP_SYS_ADMIN (the kernel
 *     passes the list through);
 *   - unknown namespaces, and system.* names other than the two ACLs: EOPNOTSUPP.
 *
 * File capabilities (security.capability) go on write, truncate and chown
 * (mfsd_kill_caps, mfsd_kill_caps_in), whoever the caller, as the kernel's
 * file_remove_privs does for its own filesystems: FUSE_HANDLE_KILLPRIV_V2, which
 * fuse_io.c asks for, leaves that to the filesystem.  (Linux 6.18 still removes a
 * capability itself before a write or a truncate reaches us; the daemon's removal is for
 * the paths and kernels that do not.)  The check is free for an inode without an
 * attribute fork.  Once getxattr is served, a kernel without HANDLE_KILLPRIV_V2 asks for
 * security.capability before every write (measured: 2,000 GETXATTR for 2,000 4 KiB
 * writes, 4 KiB writes 12-35% slower); with it the superblock is SB_NOSEC and the kernel
 * asks once per inode, until the inode's mode or security attributes change (1 for 2,000).
 *
 * POSIX ACLs
 * ----------
 * They are the xattrs system.posix_acl_access and system.posix_acl_default, in the kernel's
 * xattr format, validated on every change (lib/acl.h: EINVAL, or EOPNOTSUPP for another
 * version, as Linux).  With FUSE_CAP_POSIX_ACL the kernel caches the ACLs, reads them with
 * getxattr and enforces them in its permission checks; the filesystem keeps the mode in
 * sync:
 *   - setting an access ACL sets the mode's permission bits from it (owner from USER_OBJ,
 *     group from MASK if any else GROUP_OBJ, other from OTHER); an ACL equivalent to the mode
 *     (no USER, GROUP or MASK entry) is not stored (an old one is removed); setgid is cleared
 *     when the caller is neither in the file's group nor has CAP_FSETID;
 *   - chmod rewrites the access ACL's USER_OBJ, MASK (else GROUP_OBJ) and OTHER entries
 *     (mfsd_acl_chmod);
 *   - default ACLs only on directories (EACCES elsewhere, as Linux); a new inode in a
 *     directory with a default ACL gets it as its access ACL masked by the requested mode
 *     (and a new directory also as its default ACL); the caller's umask applies only when
 *     the directory has none (mfsd_acl_inherit; FUSE_CAP_DONT_MASK makes the kernel send the
 *     mode unmasked with the umask beside it).
 */
#include "mem.h"
#include "mendfs_int.h"

#include "acl.h"
#include "log.h"
#include "mendfs_format.h"
#include "trans.h"
#include "xattr.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define CAP_FOWNER_BIT     3u
#define CAP_FSETID_BIT     4u
#define CAP_SYS_ADMIN_BIT 21u

/* ---- the caller ----------------------------------------------------------------------- */

/*
 * Does the caller hold capability `cap` in its effective set?  The kernel does not send
 * capabilities, so they are read from /proc/<tid>/status; when that fails (the caller has
 * gone, or its pid is 0 because it lives in another pid namespace) uid 0 stands for it.
 */
static int caller_capable(fuse_req_t req, unsigned cap)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	char path[48], buf[4096];
	ssize_t n = -1;
	int fd;

	if (ctx->pid > 0) {
		snprintf(path, sizeof(path), "/proc/%d/status", (int)ctx->pid);
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd >= 0) {
			n = read(fd, buf, sizeof(buf) - 1);
			close(fd);
		}
	}
	if (n > 0) {
		char *p;

		buf[n] = 0;
		p = strstr(buf, "\nCapEff:");
		if (p)
			return (int)((strtoull(p + 8, NULL, 16) >> cap) & 1);
	}
	return ctx->uid == 0;
}

/* Is the caller in group `gid` (its fsgid or a supplementary group) or holding CAP_FSETID? */
static int caller_in_group_or_fsetid(fuse_req_t req, uint32_t gid)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	gid_t groups[256];
	int n;

	if (ctx->gid == gid)
		return 1;
	n = fuse_req_getgroups(req, 256, groups);
	for (int i = 0; i < n && i < 256; i++)
		if (groups[i] == gid)
			return 1;
	return caller_capable(req, CAP_FSETID_BIT);
}

/* ---- ACLs on inodes (the format is lib/acl.c's) ----------------------------------------- */

static const char ACL_ACCESS[] = "posix_acl_access";
static const char ACL_DEFAULT[] = "posix_acl_default";

/*
 * Read and decode one of ip's ACLs (caller holds ip->lock).  -ENODATA when it has none.
 * A stored ACL that does not decode is corruption: we validate every ACL before storing.
 */
static int acl_load(struct mfs_inode *ip, const char *which, struct mfs_acl **out)
{
	unsigned len = (unsigned)strlen(which);
	uint8_t small[512];         /* most ACLs: one lookup, no allocation for the bytes */
	uint8_t *buf = small;
	size_t vlen = 0;
	int err;

	if (ip->aformat == MFS_FMT_NONE)
		return -ENODATA;
	err = mfs_xattr_get(ip, MFS_XATTR_NS_SYSTEM, which, len, small, sizeof(small), &vlen);
	if (err == -ERANGE) {
		buf = mfs_malloc(vlen);
		if (!buf)
			return -ENOMEM;
		err = mfs_xattr_get(ip, MFS_XATTR_NS_SYSTEM, which, len, buf, vlen, &vlen);
	}
	if (!err) {
		err = mfs_acl_decode(buf, vlen, out);
		if (err == -EINVAL || err == -EOPNOTSUPP)
			err = MFS_CORRUPT("inode %llu: system.%s: %zu bytes that are not a valid "
					  "POSIX ACL", (unsigned long long)ip->ino, which, vlen);
	}
	if (buf != small)
		free(buf);
	return err;
}

/* Store `a` as ip's ACL `which` inside tp. */
static int acl_store(struct mfs_trans *tp, struct mfs_inode *ip, const char *which,
		     const struct mfs_acl *a)
{
	size_t size = mfs_acl_size(a);
	uint8_t *buf = mfs_malloc(size);
	int err;

	if (!buf)
		return -ENOMEM;
	mfs_acl_encode(a, buf);
	err = mfs_xattr_set(tp, ip, MFS_XATTR_NS_SYSTEM, which, (unsigned)strlen(which), buf,
			    size, 0);
	free(buf);
	return err;
}

/* ---- changes in transactions ----------------------------------------------------------- */

struct xchange {
	unsigned ns;
	const char *name;
	unsigned len;
	const void *value;          /* NULL: remove */
	size_t size;
	int flags;
	int missing_ok;             /* removing an absent attribute is no error */
	int set_mode;               /* and the mode becomes `mode` */
	uint16_t mode;
};

/*
 * Apply one change to ip (caller holds ip->lock exclusive) in a transaction with ctime
 * set, retried a bounded number of times on a lock-order conflict; on failure the in-core
 * inode is read again.
 */
static int xchange_commit(struct mfsd *d, struct mfs_inode *ip, const struct xchange *c)
{
	unsigned tries = 0;
	int err;

	for (;;) {
		struct mfs_trans *tp;
		struct timespec now;

		mfsd_now(&now);
		err = mfs_trans_alloc(d->fs, &tp);
		if (err)
			return err;
		if (c->value)
			err = mfs_xattr_set(tp, ip, c->ns, c->name, c->len, c->value, c->size,
					    c->flags);
		else
			err = mfs_xattr_remove(tp, ip, c->ns, c->name, c->len);
		if (err == -ENODATA && c->missing_ok)
			err = 0;
		if (!err) {
			if (c->set_mode)
				ip->mode = c->mode;
			ip->ctime = now;
			err = mfs_inode_log(tp, ip);
		}
		if (!err) {
			err = mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, NULL);
			if (err)
				mfs_inode_reload(ip);
			return err;
		}
		mfs_trans_cancel(tp);
		mfs_inode_reload(ip);
		if (!mfsd_should_retry(err, &tries))
			return err;
	}
}

/*
 * Turn a request to set an ACL into the change to make (caller holds ip->lock exclusive):
 * *c->value may be replaced by *bufp (the normalized ACL, to be freed by the caller).
 */
static int acl_prepare(fuse_req_t req, struct mfs_inode *ip, struct xchange *c,
		       uint8_t **bufp)
{
	int is_default = strcmp(c->name, ACL_DEFAULT) == 0;
	struct mfs_acl *a;
	int err;

	if (S_ISLNK(ip->mode))
		return -EOPNOTSUPP;
	if (is_default && !S_ISDIR(ip->mode))
		return -EACCES;
	err = mfs_acl_decode(c->value, c->size, &a);
	if (err)
		return err;
	if (a->n == 0) {
		/* An empty ACL is no ACL. */
		c->value = NULL;
		c->missing_ok = 1;
		free(a);
		return 0;
	}
	if (!is_default) {
		uint16_t mode = ip->mode;

		if (!mfs_acl_equiv_mode(a, &mode)) {
			/* Said entirely by the mode: not stored. */
			c->value = NULL;
			c->missing_ok = 1;
		}
		if (!caller_in_group_or_fsetid(req, ip->gid))
			mode &= (uint16_t)~S_ISGID;
		c->set_mode = 1;
		c->mode = mode;
	}
	if (c->value) {
		*bufp = mfs_malloc(mfs_acl_size(a));
		if (!*bufp) {
			free(a);
			return -ENOMEM;
		}
		mfs_acl_encode(a, *bufp);
		c->value = *bufp;
		c->size = mfs_acl_size(a);
	}
	free(a);
	return 0;
}

/* ---- file capabilities ------------------------------------------------------------- */

static const char CAP_NAME[] = "capability";

/* Does ip (lock held) carry security.capability?  0, 1 or a negative errno. */
static int has_caps(struct mfs_inode *ip)
{
	int err;

	if (ip->forkoff == 0 || S_ISDIR(ip->mode))
		return 0;
	err = mfs_xattr_get(ip, MFS_XATTR_NS_SECURITY, CAP_NAME, sizeof(CAP_NAME) - 1, NULL,
			    0, NULL);
	if (err == -ENODATA)
		return 0;
	return err ? err : 1;
}

int mfsd_kill_caps_in(struct mfs_trans *tp, struct mfs_inode *ip)
{
	int err = has_caps(ip);

	if (err <= 0)
		return err;
	err = mfs_xattr_remove(tp, ip, MFS_XATTR_NS_SECURITY, CAP_NAME, sizeof(CAP_NAME) - 1);
	return err == -ENODATA ? 0 : err;
}

int mfsd_kill_caps(struct mfsd *d, struct mfs_inode *ip)
{
	struct xchange c = {
		.ns = MFS_XATTR_NS_SECURITY, .name = CAP_NAME, .len = sizeof(CAP_NAME) - 1,
		.missing_ok = 1,
	};
	int err = has_caps(ip);

	if (err <= 0)
		return err;
	return xchange_commit(d, ip, &c);
}

/* ---- requests ---------------------------------------------------------------------- */

/* Split a full name; the whole name is limited to 255 bytes as Linux does (ERANGE). */
static int xname(const char *full, unsigned *ns, const char **name, unsigned *len)
{
	int err;

	if (strlen(full) > MFS_XATTR_NAME_MAX)
		return -ERANGE;
	err = mfs_xattr_parse_name(full, ns, name);
	if (!err)
		*len = (unsigned)strlen(*name);
	return err;
}

/*
 * Namespace rules for a change (the kernel's, checked again): 0 or the errno.  Permission
 * to write the file itself (user.*) is the kernel's alone (default_permissions).
 */
static int may_change(fuse_req_t req, const struct mfs_inode *ip, unsigned ns)
{
	if (ns == MFS_XATTR_NS_USER && !S_ISREG(ip->mode) && !S_ISDIR(ip->mode))
		return -EPERM;
	if (ns == MFS_XATTR_NS_TRUSTED && !caller_capable(req, CAP_SYS_ADMIN_BIT))
		return -EPERM;
	if (ns == MFS_XATTR_NS_SYSTEM && fuse_req_ctx(req)->uid != ip->uid &&
	    !caller_capable(req, CAP_FOWNER_BIT))
		return -EPERM;      /* only the owner changes an ACL */
	return 0;
}

static int may_read(fuse_req_t req, const struct mfs_inode *ip, unsigned ns)
{
	if (ns == MFS_XATTR_NS_USER && !S_ISREG(ip->mode) && !S_ISDIR(ip->mode))
		return -ENODATA;
	if (ns == MFS_XATTR_NS_TRUSTED && !caller_capable(req, CAP_SYS_ADMIN_BIT))
		return -ENODATA;
	return 0;
}

/* The common path of setxattr and removexattr, once the change is parsed. */
static void change_request(fuse_req_t req, fuse_ino_t ino, struct xchange *c)
{
	struct mfsd *d = mfsd_of(req);
	struct mfs_inode *ip;
	uint8_t *aclbuf = NULL;
	int err = mfsd_iget(d, ino, &ip);

	if (err) {
		mfsd_reply_err(req, err);
		return;
	}
	pthread_rwlock_wrlock(&ip->lock);
	if (ip->mode == 0)
		err = -ENOENT;
	else
		err = may_change(req, ip, c->ns);
	if (!err && c->ns == MFS_XATTR_NS_SYSTEM) {
		if (c->value)
			err = acl_prepare(req, ip, c, &aclbuf);
		else if (S_ISLNK(ip->mode))
			err = -EOPNOTSUPP;
	}
	if (!err)
		err = xchange_commit(d, ip, c);
	pthread_rwlock_unlock(&ip->lock);
	mfsd_iput(d, ip);
	free(aclbuf);
	/* The kernel keeps its copy of the attributes after an xattr change (it only sets
	 * ctime itself): have it read them again (blocks, mode, ctime), before the reply so
	 * that the caller's next stat sees them. */
	if (!err && d->se)
		fuse_lowlevel_notify_inval_inode(d->se, ino, -1, 0);
	mfsd_reply_err(req, err);
}

void mfsd_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value,
		   size_t size, int flags)
{
	struct xchange c = { .value = value ? value : "", .size = size, .flags = flags };
	int err;

	if (mfsd_of(req)->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	err = xname(name, &c.ns, &c.name, &c.len);
	if (!err && size > MFS_XATTR_SIZE_MAX)
		err = -E2BIG;
	if (!err && ((flags & ~(XATTR_CREATE | XATTR_REPLACE)) ||
		     flags == (XATTR_CREATE | XATTR_REPLACE)))
		err = -EINVAL;
	if (err)
		mfsd_reply_err(req, err);
	else
		change_request(req, ino, &c);
}

void mfsd_removexattr(fuse_req_t req, fuse_ino_t ino, const char *name)
{
	struct xchange c = { .value = NULL };
	int err;

	if (mfsd_of(req)->ro) {
		fuse_reply_err(req, EROFS);
		return;
	}
	err = xname(name, &c.ns, &c.name, &c.len);
	if (err)
		mfsd_reply_err(req, err);
	else
		change_request(req, ino, &c);
}

void mfsd_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size)
{
	struct mfsd *d = mfsd_of(req);
	struct mfs_inode *ip;
	const char *n;
	unsigned ns, len;
	size_t vlen = 0, bufsize = size < MFS_XATTR_SIZE_MAX ? size : MFS_XATTR_SIZE_MAX;
	char *buf = NULL;
	int err = xname(name, &ns, &n, &len);

	if (!err && bufsize && !(buf = mfs_malloc(bufsize)))
		err = -ENOMEM;
	if (!err)
		err = mfsd_iget(d, ino, &ip);
	if (err) {
		free(buf);
		mfsd_reply_err(req, err);
		return;
	}
	pthread_rwlock_rdlock(&ip->lock);
	err = may_read(req, ip, ns);
	if (!err)
		err = mfs_xattr_get(ip, ns, n, len, buf, bufsize, &vlen);
	pthread_rwlock_unlock(&ip->lock);
	mfsd_iput(d, ip);
	if (err)
		mfsd_reply_err(req, err);
	else if (size == 0)
		fuse_reply_xattr(req, vlen);
	else
		fuse_reply_buf(req, buf, vlen);
	free(buf);
}

struct xlist {
	fuse_req_t req;
	char *buf;                  /* NULL: only count */
	size_t size, used;
	int hide_trusted;           /* -1: not asked yet (only when a trusted.* name shows) */
};

static int xlist_fn(void *priv, unsigned ns, const char *name, unsigned len, size_t valuelen)
{
	struct xlist *l = priv;
	const char *prefix = mfs_xattr_ns_prefix(ns);
	size_t pl, need;

	if (!prefix)
		return 0;
	if (ns == MFS_XATTR_NS_TRUSTED) {
		if (l->hide_trusted < 0)
			l->hide_trusted = !caller_capable(l->req, CAP_SYS_ADMIN_BIT);
		if (l->hide_trusted)
			return 0;
	}
	pl = strlen(prefix);
	need = pl + len + 1;
	if (l->buf) {
		if (l->used + need > l->size)
			return -ERANGE;
		memcpy(l->buf + l->used, prefix, pl);
		memcpy(l->buf + l->used + pl, name, len);
		l->buf[l->used + pl + len] = 0;
	}
	l->used += need;
	return 0;
}

void mfsd_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct mfsd *d = mfsd_of(req);
	struct xlist l = { .req = req, .size = size, .hide_trusted = -1 };
	struct mfs_inode *ip;
	int err = 0;

	if (size && !(l.buf = mfs_malloc(size)))
		err = -ENOMEM;
	if (!err)
		err = mfsd_iget(d, ino, &ip);
	if (err) {
		free(l.buf);
		mfsd_reply_err(req, err);
		return;
	}
	pthread_rwlock_rdlock(&ip->lock);
	err = ip->aformat == MFS_FMT_NONE ? 0 : mfs_xattr_list(ip, xlist_fn, &l);
	pthread_rwlock_unlock(&ip->lock);
	mfsd_iput(d, ip);
	if (err)
		mfsd_reply_err(req, err);
	else if (size == 0)
		fuse_reply_xattr(req, l.used);
	else
		fuse_reply_buf(req, l.buf, l.used);
	free(l.buf);
}

/* ---- helpers for the other handlers ---------------------------------------------------- */

int mfsd_acl_inherit(struct mfs_trans *tp, struct mfs_inode *dp, struct mfs_inode *ip,
		     mode_t umask)
{
	uint16_t mode = ip->mode;
	struct mfs_acl *a;
	int err;

	if (S_ISLNK(mode))
		return 0;
	err = acl_load(dp, ACL_DEFAULT, &a);
	if (err == -ENODATA || (!err && a->n == 0)) {
		if (!err)
			free(a);
		ip->mode = (uint16_t)(mode & ~(umask & 0777));
		return 0;
	}
	if (err)
		return err;
	if (S_ISDIR(mode))
		err = acl_store(tp, ip, ACL_DEFAULT, a);
	if (!err && mfs_acl_create_masq(a, &mode))
		err = acl_store(tp, ip, ACL_ACCESS, a);
	free(a);
	if (!err)
		ip->mode = mode;
	return err;
}

int mfsd_acl_chmod(struct mfs_trans *tp, struct mfs_inode *ip)
{
	struct mfs_acl *a;
	int err;

	if (S_ISLNK(ip->mode))
		return 0;
	err = acl_load(ip, ACL_ACCESS, &a);
	if (err)
		return err == -ENODATA ? 0 : err;
	mfs_acl_chmod(a, ip->mode);
	err = acl_store(tp, ip, ACL_ACCESS, a);
	free(a);
	return err;
}

int mfsd_xattr_free_all(struct mfsd *d, struct mfs_inode *ip)
{
	unsigned tries = 0;

	while (ip->aformat != MFS_FMT_NONE) {
		struct mfs_trans *tp;
		int more, err = mfs_trans_alloc(d->fs, &tp);

		if (err)
			return err;
		more = mfs_xattr_free_all(tp, ip);
		if (more < 0) {
			mfs_trans_cancel(tp);
			mfs_inode_reload(ip);
			if (mfsd_should_retry(more, &tries))
				continue;
			return more;
		}
		err = mfs_trans_commit_lsn(tp, MFS_TRANS_ASYNC, NULL);
		if (err) {
			mfs_inode_reload(ip);
			return err;
		}
	}
	return 0;
}
