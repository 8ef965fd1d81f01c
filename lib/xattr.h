/*
 * xattr.h — extended attributes: the names and values of an inode's attribute fork, inline
 * in the literal area after the data fork or in a hashed attribute btree with large values
 * in blocks of their own.
 *
 * The on-disk format is in mendfs_format.h ("Extended attributes") and mendfs(5).  Names are
 * given without their namespace prefix: (MFS_XATTR_NS_USER, "foo") is "user.foo".
 *
 * Rules of use
 * ------------
 * - The caller holds ip->lock: shared for get, list and check; exclusive for every change.
 * - Changes happen inside the caller's transaction `tp`: the inode's AG is locked in tp
 *   first (waiting only when tp holds no higher AG, else -EDEADLK: cancel and retry);
 *   blocks are allocated near the inode (reverse-map owner = ino, MFS_RMAP_ATTR_FORK) and
 *   counted in ip->nblocks; the inode is logged (mfs_inode_log) before returning.  ctime is
 *   the caller's business.
 * - On any error from a change, the caller cancels the transaction and reloads the inode
 *   (mfs_inode_reload / mfs_inode_invalidate): the in-core copy may be half changed.
 * - The attribute fork only ever takes literal-area bytes the data fork does not use
 *   (inline extents, inline directory entries, a btree root), and gives them back when it
 *   shrinks.  When the data fork leaves no room even for the 16-byte attribute btree root,
 *   set first moves it into its own btree format: a directory's inline entries into its
 *   name btree (mfs_dir_to_btree), a regular file's inline extents into an extent btree,
 *   so its contents stay where bmap and dir look for them.  Only an inline symlink target
 *   filling the literal area leaves no way: -ENOSPC.
 *
 * The btree's name hash is the directory name hash (mfs_dir_hash), so the tests' hash mask
 * (mfs_dir_test_set_hash_mask) forces attribute-name collisions too.
 *
 * Errors: -ENODATA (no such attribute), -EEXIST (XATTR_CREATE and it exists), -ERANGE (a
 * name longer than 255 bytes; get: buffer too small), -E2BIG (value over 64 KiB), -EINVAL
 * (empty name, a NUL in it, unknown namespace or flags), -ENOSPC, I/O errors, and
 * -EFSCORRUPTED / -EFSBADCRC after a message naming the inode and the entry.
 */
#ifndef MFS_XATTR_H
#define MFS_XATTR_H

#include <stddef.h>
#include <stdint.h>

struct mfs_trans;
struct mfs_inode;

/* setxattr flags (the values of <sys/xattr.h>) */
#ifndef XATTR_CREATE
#define XATTR_CREATE  0x1
#define XATTR_REPLACE 0x2
#endif

/*
 * The value of (ns, name) into buf.  *valuelen (may be NULL) gets the value's length.
 * bufsize 0: only the length; a nonzero bufsize smaller than the value: -ERANGE.
 */
int mfs_xattr_get(struct mfs_inode *ip, unsigned ns, const char *name, unsigned len,
		  void *buf, size_t bufsize, size_t *valuelen);

/* Create or replace (ns, name) with vlen bytes of value (0 .. 65536). */
int mfs_xattr_set(struct mfs_trans *tp, struct mfs_inode *ip, unsigned ns, const char *name,
		  unsigned len, const void *value, size_t vlen, int flags);

/* Remove (ns, name); -ENODATA if absent. */
int mfs_xattr_remove(struct mfs_trans *tp, struct mfs_inode *ip, unsigned ns,
		     const char *name, unsigned len);

/*
 * Call fn for every attribute (in an unspecified but stable order): its namespace, name
 * (not NUL-terminated) and value length.  fn returns 0 to go on, > 0 to stop (returned),
 * < 0 an error (returned).
 */
typedef int (*mfs_xattr_list_fn)(void *priv, unsigned ns, const char *name, unsigned len,
				 size_t valuelen);
int mfs_xattr_list(struct mfs_inode *ip, mfs_xattr_list_fn fn, void *priv);

/*
 * Free the attribute fork (the inode is being freed): at most MFS_XATTR_FREE_PER_CALL
 * attributes per call.  Returns 0 when the fork is gone (aformat NONE, forkoff 0), 1 when
 * more remains (commit, then call again in a new transaction), or a negative error.
 */
#define MFS_XATTR_FREE_PER_CALL 64u
int mfs_xattr_free_all(struct mfs_trans *tp, struct mfs_inode *ip);

/*
 * Split a full name ("user.foo") into its namespace and the name after the prefix (a
 * pointer into `full`).  -EOPNOTSUPP for an unknown prefix (and for system.* names other
 * than posix_acl_access / posix_acl_default), -EINVAL for an empty name, -ERANGE for a name
 * longer than 255 bytes.
 */
int mfs_xattr_parse_name(const char *full, unsigned *ns, const char **name);
/* "user.", "trusted.", "security.", "system.", or NULL for an unknown namespace. */
const char *mfs_xattr_ns_prefix(unsigned ns);

/*
 * Full check of the attribute fork (scrub, tests): local entries in bounds, valid and
 * unique; the btree passes mfs_btree_verify, every entry's records are complete and in
 * order, names hash to their keys and are unique, value blocks verify and match their CRC.
 * *nblocks (may be NULL) gets the blocks the fork owns (btree and value blocks), *count
 * (may be NULL) the number of attributes.  0 or -EFSCORRUPTED / -EFSBADCRC with a message.
 */
int mfs_xattr_check(struct mfs_inode *ip, uint64_t *nblocks, uint64_t *count);

#endif
