/*
 * mendfs_ctl.h — the control protocol between the daemon and its clients (mendfs_scrub,
 * mendfs_scrub_all): the only header the scrub/ folder includes.
 *
 * The object kinds and result flags come first, then the socket's location and the framing
 * (also described in mendfs(8)).  Every value here is on the wire: never renumber, only
 * append; a change of any layout is a new MFS_CTL_VERSION.
 */
#ifndef MFS_CTL_H
#define MFS_CTL_H

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Metadata objects the daemon can check (and later rebuild).  "AG" objects take an AG
 * number, "inode" objects an inode number, the others neither. */
enum mfs_scrub_type {
	MFS_SCRUB_PROBE     = 0,   /* does nothing: is the daemon there, is the object valid */
	MFS_SCRUB_SB        = 1,   /* AG: superblock copy in that AG (AG 0: the primary) */
	MFS_SCRUB_AGH       = 2,   /* AG: AG header counters and roots */
	MFS_SCRUB_AGFL      = 3,   /* AG: free list */
	MFS_SCRUB_BNOBT     = 4,   /* AG: free space by block, x-ref cnt and rmap */
	MFS_SCRUB_CNTBT     = 5,   /* AG: free space by length, x-ref bno */
	MFS_SCRUB_INOBT     = 6,   /* AG: inode chunks, x-ref inodes and rmap */
	MFS_SCRUB_RMAPBT    = 7,   /* AG: reverse map, x-ref owners and free space */
	MFS_SCRUB_JOURNAL   = 8,   /* fs: journal header and state */
	MFS_SCRUB_INODE     = 9,   /* inode: core fields */
	MFS_SCRUB_BMAP      = 10,  /* inode: extent map, x-ref rmap and free space */
	MFS_SCRUB_DIR       = 11,  /* inode: directory entries, hash order, . and .. */
	MFS_SCRUB_XATTR     = 12,  /* inode: extended attributes */
	MFS_SCRUB_SYMLINK   = 13,  /* inode: symlink target */
	MFS_SCRUB_NLINKS    = 14,  /* fs: counted references vs nlink, reachability */
	MFS_SCRUB_ORPHANS   = 15,  /* fs: orphan (unlinked-but-open) lists */
	MFS_SCRUB_SUMMARY   = 16,  /* fs: summary counters vs the AG trees */
	MFS_SCRUB_NTYPES
};

/*
 * What a rebuild of `type` reads the reverse map for (so that a client holds it while a
 * damaged reverse map could not be rebuilt: mendfs_scrub's scrub/fix.c, mendfs_repair):
 * 1 for an AG's free list (its stock is the map's "ag" blocks that are no tree's),
 * free-space trees and inode btree (that AG's map), 2 for a fork's blocks (extent map,
 * directory, symlink, xattrs: every AG's map), 0 for the others.
 */
static inline int mfs_scrub_from_rmap(uint32_t type)
{
	switch (type) {
	case MFS_SCRUB_AGFL: case MFS_SCRUB_BNOBT: case MFS_SCRUB_CNTBT: case MFS_SCRUB_INOBT:
		return 1;
	case MFS_SCRUB_BMAP: case MFS_SCRUB_DIR: case MFS_SCRUB_SYMLINK: case MFS_SCRUB_XATTR:
		return 2;
	}
	return 0;
}

/* A rebuild's error (negative) that stopped it before it could look at, or read, what it
 * rebuilds from — memory pressure, a cancel, no memory or scratch, a busy filesystem, an
 * I/O error — as opposed to one that looked and refused to guess (-EFSCORRUPTED). */
static inline int mfs_repair_err_unseen(int err)
{
	switch (-err) {
	case ECANCELED: case ENOMEM: case ENOSPC: case EFBIG: case EBUSY: case EAGAIN:
	case ETIMEDOUT: case EINTR: case EIO:
		return 1;
	}
	return 0;
}

/* Result flags of one check (several may be set; none = clean). */
#define MFS_SCRUB_OFLAG_CORRUPT     0x01u  /* the object is wrong */
#define MFS_SCRUB_OFLAG_XCORRUPT    0x02u  /* it disagrees with another object */
#define MFS_SCRUB_OFLAG_PREEN       0x04u  /* correct but could be optimised */
#define MFS_SCRUB_OFLAG_WARNING     0x08u  /* suspicious, not provably wrong */
#define MFS_SCRUB_OFLAG_INCOMPLETE  0x10u  /* the check could not finish (why: message) */
#define MFS_SCRUB_OFLAG_REPAIRED    0x20u  /* a repair rebuilt it (repair issue) */
#define MFS_SCRUB_OFLAG_UNFIXED     0x40u  /* a repair was asked and could not be done */

/* ==== the control socket =====================================================================
 *
 * Where it is
 * -----------
 * One Unix stream socket per mount, created by the daemon before the mount appears and
 * removed at unmount, named after the mount point's canonical path (realpath(3)):
 *
 *     RUNDIR/<16 hex digits of mfs_ctl_hash(path)>.sock
 *
 * RUNDIR is $MENDFS_RUNDIR when set (daemon and client alike: tests); otherwise the daemon
 * uses /run/mendfs when running as root and /run/user/<uid>/mendfs for another user, and
 * the client tries /run/mendfs, then /run/user/<user_id>/mendfs with the user_id option of
 * the FUSE mount (/proc/self/mountinfo).  A hash can collide and a socket can be stale, so
 * the client trusts it only after HELLO: the mount point in the reply must be the path it
 * asked for, and the st_dev in the reply the st_dev of stat(2) on that path.
 *
 * Versions
 * --------
 * Version 2 (this header) differs from version 1 only in its limits: a request payload of
 * up to MFS_CTL_MAX_REQUEST bytes (version 1: MFS_CTL_MAX_REQUEST_V1) and up to
 * MFS_CTL_MAX_BATCH checks in a SCRUB_BATCH (version 1: MFS_CTL_MAX_BATCH_V1).  The daemon
 * serves both: each request is held to the limits of the version in its header and
 * answered with that version; what it cannot place (a bad magic or version, a header cut
 * short) is answered as version 1.  A client sends HELLO, the same in both, as version 1,
 * and then speaks the lower of its version and the one the HELLO reply names.
 *
 * Framing
 * -------
 * Every message, both ways, is a struct mfs_ctl_hdr followed by `len` payload bytes.
 * Fields are in host byte order (the socket is local) and payloads are read with memcpy
 * (no alignment is promised).  A reply echoes the request's reqid; its command is the
 * request's | MFS_CTL_REPLY, or MFS_CTL_ERROR with a struct mfs_ctl_error and a message.
 * Requests on one connection are answered in order, one at a time: a client that wants
 * parallel checks opens several connections.
 *
 * Bad input: a header with the wrong magic or version, or a length over its version's
 * request limit, is answered with an error and the connection closed (its framing
 * cannot be trusted); an unknown command, a payload of the wrong size, bad values or
 * descriptors where none belong are answered with an error and the connection goes on.
 *
 * Descriptors (SCM_RIGHTS) travel with the first byte of a REPAIR request, at most
 * MFS_CTL_MAX_FDS; each must be a regular file opened read-write, not on this mendfs, and
 * not sealed against growth or writes (F_SEAL_GROW, F_SEAL_WRITE, F_SEAL_FUTURE_WRITE).
 * Descriptors that come with any other message, or too many, are closed and the message
 * refused.
 *
 * Who may connect: root, or the user the daemon runs as (the user that mounted), checked
 * with SO_PEERCRED; others get an EACCES error and the connection is closed.
 *
 * Time limits: the first whole request must come within 30 s of connecting (ETIMEDOUT
 * error, then closed: an idle connection must not hold one of the daemon's client slots),
 * and the rest of every message within 10 s of its first byte (EPROTO, then closed); a
 * connection that has been served may be idle between requests without limit.
 *
 * A client that disconnects cancels what its connection was doing; so does CANCEL.
 */
#define MFS_CTL_MAGIC      0x4c54434du      /* "MCTL" read as little-endian */
#define MFS_CTL_VERSION    2u               /* the newest */
#define MFS_CTL_VERSION_MIN 1u              /* the oldest the daemon still serves */
#define MFS_CTL_RUNDIR     "/run/mendfs"
#define MFS_CTL_RUNDIR_ENV "MENDFS_RUNDIR"

#define MFS_CTL_MAX_REQUEST  65536u         /* request payload bytes */
#define MFS_CTL_MAX_REQUEST_V1 4096u        /* ... in version 1 */
#define MFS_CTL_MAX_REPLY    (1u << 20)     /* reply payload bytes */
#define MFS_CTL_MAX_FDS      2u             /* descriptors with one REPAIR request */
#define MFS_CTL_MAX_INODES   4096u          /* inodes in one INODES reply */

struct mfs_ctl_hdr {
	uint32_t magic;             /* MFS_CTL_MAGIC */
	uint16_t version;           /* MFS_CTL_VERSION (or 1, see "Versions") */
	uint16_t command;           /* enum mfs_ctl_cmd, | MFS_CTL_REPLY in replies */
	uint32_t flags;             /* none defined: 0 */
	uint32_t len;               /* payload bytes that follow */
	uint64_t reqid;             /* the client's, echoed in the reply */
};

enum mfs_ctl_cmd {
	MFS_CTL_HELLO   = 1,        /* mfs_ctl_hello_req -> mfs_ctl_hello_reply + mountpoint */
	MFS_CTL_SCRUB   = 2,        /* mfs_ctl_scrub_req -> mfs_ctl_scrub_reply + findings */
	MFS_CTL_INODES  = 3,        /* mfs_ctl_inodes_req -> mfs_ctl_inodes_reply + inodes */
	MFS_CTL_CANCEL  = 4,        /* mfs_ctl_cancel_req -> mfs_ctl_cancel_reply */
	MFS_CTL_REPAIR  = 5,        /* mfs_ctl_scrub_req + descriptors (repair issue; for now
	                               every REPAIR gets an EOPNOTSUPP error) */
	MFS_CTL_SCRUB_BATCH = 6,    /* 1..MFS_CTL_MAX_BATCH mfs_ctl_scrub_req (version 1:
	                               MFS_CTL_MAX_BATCH_V1) -> for each, in order,
	                               mfs_ctl_scrub_reply + its findings */
	MFS_CTL_REPLY   = 0x8000,   /* bit set in the command of every successful reply */
	MFS_CTL_ERROR   = 0xffff,   /* error reply: mfs_ctl_error + message text */
};

struct mfs_ctl_error {
	int32_t error;              /* a positive errno */
	uint32_t pad;
	/* then the message, payload length - 8 bytes, no NUL */
};

/* HELLO: who are you.  The first request of a client, though any order is served. */
#define MFS_CTL_HELLO_BACKGROUND 0x1u   /* this connection's work runs at idle priority */
struct mfs_ctl_hello_req {
	uint32_t flags;             /* MFS_CTL_HELLO_* */
	uint32_t pad;
};
#define MFS_CTL_FS_RDONLY 0x1u
struct mfs_ctl_hello_reply {
	uint32_t version;           /* the newest protocol version the daemon speaks */
	uint32_t pid;               /* the daemon's */
	uint64_t dev;               /* st_dev of the mount's root as the daemon sees it (0:
	                               could not tell) */
	uint32_t agcount;
	uint32_t agino_bits;        /* inode numbers of AG a: [a << bits, (a + 1) << bits) */
	uint32_t blocksize;
	uint32_t inodesize;
	uint64_t dblocks;
	uint64_t rootino;
	uint64_t icount;            /* inodes in allocated chunks (sum of the AG headers) */
	uint64_t ifree;             /* of which free */
	uint32_t fsflags;           /* MFS_CTL_FS_* */
	uint32_t mntlen;            /* bytes of the mount point's path that follow (no NUL) */
};

/* SCRUB: check one object.  `agno` for AG objects, `ino` for inode objects. */
struct mfs_ctl_scrub_req {
	uint32_t type;              /* enum mfs_scrub_type */
	uint32_t agno;
	uint64_t ino;
	uint32_t flags;             /* none defined: 0 */
	uint32_t pad;
};
struct mfs_ctl_scrub_reply {
	uint32_t oflags;            /* MFS_SCRUB_OFLAG_* */
	int32_t error;              /* 0: the check ran; else a negative errno: -ENOENT the
	                               inode is free (freed since it was listed), -ECANCELED */
	uint32_t nfindings;         /* struct mfs_ctl_finding records that follow */
	uint32_t ndropped;          /* findings not sent (reply size bound) */
};
struct mfs_ctl_finding {
	uint32_t flag;              /* one MFS_SCRUB_OFLAG_* */
	uint32_t len;               /* text bytes that follow (no NUL) */
};

/* SCRUB_BATCH: several checks in one round trip (the inodes of phase 3, the directories of
 * phase 4; version 2 allows 16 times as many as version 1: a round trip costs the daemon
 * and the client more than most checks).  An invalid
 * object anywhere refuses the whole batch (error reply); otherwise each check's result is
 * as SCRUB's, its error field holding what the single request's error reply would have
 * said (-EINVAL).  A cancelled batch answers -ECANCELED for every check not run. */
#define MFS_CTL_MAX_BATCH 2048u
#define MFS_CTL_MAX_BATCH_V1 128u

/* INODES: allocated inodes of AG `agno` with numbers >= `cursor` (0: from the start),
 * at most `max` (1..MFS_CTL_MAX_INODES), in increasing order. */
struct mfs_ctl_inodes_req {
	uint32_t agno;
	uint32_t max;
	uint64_t cursor;
};
#define MFS_CTL_INODES_END 0x1u     /* no allocated inode after these in this AG */
struct mfs_ctl_inodes_reply {
	uint64_t next;              /* cursor for the next batch */
	uint32_t count;             /* struct mfs_ctl_inode records that follow */
	uint32_t flags;             /* MFS_CTL_INODES_* */
};
struct mfs_ctl_inode {
	uint64_t ino;
	uint32_t mode;              /* as on disk (0 would mean a damaged inode) */
	uint32_t pad;
};

/* CANCEL: stop the request `reqid` (0: whatever runs) of this connection.  Sent while a
 * request runs, it stops it (that request's reply: error ECANCELED), then gets its own
 * reply. */
struct mfs_ctl_cancel_req {
	uint64_t reqid;
};
struct mfs_ctl_cancel_reply {
	uint32_t cancelled;         /* 1 if a running request was stopped */
	uint32_t pad;
};

/* FNV-1a, 64 bits: the socket's name from the mount point's canonical path. */
static inline uint64_t mfs_ctl_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ull;

	for (; *s; s++) {
		h ^= (uint8_t)*s;
		h *= 0x100000001b3ull;
	}
	return h;
}

/* Decode, in place, the octal escapes (\040 for a space...) of a path field of
 * /proc/self/mounts or /proc/self/mountinfo. */
static inline void mfs_ctl_unescape(char *s)
{
	char *o = s;

	for (; *s; s++, o++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 | (s[3] - '0'));
			s += 3;
		} else {
			*o = *s;
		}
	}
	*o = 0;
}

/* One line of /proc/self/mountinfo, split in place. */
struct mfs_ctl_mountinfo {
	unsigned major, minor;      /* st_dev of the mount */
	char *mountpoint;           /* unescaped */
	char *fstype;               /* "fuse.mendfs" for ours */
	char *options;              /* super options: "rw,user_id=0,group_id=0,..." */
};

/* 0, or -1 for a line of another shape. */
static inline int mfs_ctl_mountinfo_line(char *line, struct mfs_ctl_mountinfo *mi)
{
	char *field[5], *sep = strstr(line, " - "), *p = line, *end;
	int n;

	if (!sep)
		return -1;
	*sep = 0;
	for (n = 0; n < 5 && p; n++) {          /* id parent major:minor root mountpoint */
		field[n] = p;
		p = strchr(p, ' ');
		if (p)
			*p++ = 0;
	}
	if (n < 5)
		return -1;
	mi->major = (unsigned)strtoul(field[2], &end, 10);
	if (*end != ':')
		return -1;
	mi->minor = (unsigned)strtoul(end + 1, NULL, 10);
	mfs_ctl_unescape(field[4]);
	mi->mountpoint = field[4];
	mi->fstype = sep + 3;                   /* fstype source options */
	p = strchr(mi->fstype, ' ');
	if (!p)
		return -1;
	*p++ = 0;
	p = strchr(p, ' ');
	if (!p)
		return -1;
	mi->options = p + 1;
	mi->options[strcspn(mi->options, " \n")] = 0;
	return 0;
}

/* "<16 hex digits>.sock" into name[22]. */
#define MFS_CTL_SOCK_NAME_LEN 22
static inline void mfs_ctl_sock_name(const char *canon_mnt, char name[MFS_CTL_SOCK_NAME_LEN])
{
	static const char hex[] = "0123456789abcdef";
	uint64_t h = mfs_ctl_hash(canon_mnt);

	for (int i = 0; i < 16; i++)
		name[i] = hex[(h >> (60 - 4 * i)) & 15];
	name[16] = '.'; name[17] = 's'; name[18] = 'o'; name[19] = 'c'; name[20] = 'k';
	name[21] = 0;
}

#endif
