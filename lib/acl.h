/*
 * acl.h — POSIX ACLs in the form Linux keeps them in the xattrs system.posix_acl_access and
 * system.posix_acl_default: decoding with full validation, encoding, and the arithmetic of
 * an ACL against a file's mode (equivalence, the masking of a default ACL inherited by a
 * new inode, chmod).  Pure functions on memory: the daemon stores the bytes as extended
 * attributes (lib/xattr.c), checkers may validate them.
 *
 * The xattr form: a little-endian u32 version (MFS_ACL_VERSION), then entries of
 * { le16 tag, le16 perm, le32 id }, sorted: one USER_OBJ, USER entries by increasing uid,
 * one GROUP_OBJ, GROUP entries by increasing gid, a MASK (required when there is any USER or
 * GROUP entry), one OTHER.  perm holds only r (4), w (2), x (1).  The id of the unnamed
 * entries is MFS_ACL_UNDEFINED (decoding ignores what is there and normalizes it).
 *
 * The group class is the MASK entry when there is one, else GROUP_OBJ: it is what the
 * mode's group bits show.
 */
#ifndef MFS_ACL_H
#define MFS_ACL_H

#include <stddef.h>
#include <stdint.h>

#define MFS_ACL_VERSION     2u
#define MFS_ACL_HDR_SIZE    4u
#define MFS_ACL_ENT_SIZE    8u
#define MFS_ACL_UNDEFINED   0xffffffffu
enum {
	MFS_ACL_USER_OBJ = 0x01, MFS_ACL_USER = 0x02, MFS_ACL_GROUP_OBJ = 0x04,
	MFS_ACL_GROUP = 0x08, MFS_ACL_MASK = 0x10, MFS_ACL_OTHER = 0x20,
};

struct mfs_acl_ent {
	uint16_t tag, perm;
	uint32_t id;
};

struct mfs_acl {
	unsigned n;                     /* 0: an empty ACL (a header alone), i.e. none */
	struct mfs_acl_ent e[];
};

/*
 * Decode and validate `size` bytes into *out (mfs_malloc'ed, freed by the caller with
 * free()).  -EOPNOTSUPP for a version other than 2 (as Linux); -EINVAL for a size that is
 * not a header plus whole entries or is over 64 KiB, an unknown tag, permission bits
 * beyond rwx, entries out of order, a missing or repeated USER_OBJ/GROUP_OBJ/OTHER, named
 * entries without a MASK, a repeated MASK or named entry; -ENOMEM.
 */
int mfs_acl_decode(const void *value, size_t size, struct mfs_acl **out);
/* Bytes of the xattr form, and the encoding into buf (that many bytes). */
size_t mfs_acl_size(const struct mfs_acl *a);
void mfs_acl_encode(const struct mfs_acl *a, void *buf);
/*
 * The permission bits an access ACL gives the mode, into *mode (its other bits kept):
 * owner from USER_OBJ, group from the group class, other from OTHER.  Returns 1 when the
 * ACL says more than the mode can (a USER, GROUP or MASK entry), 0 when it is equivalent
 * to the mode (and need not be stored).
 */
int mfs_acl_equiv_mode(const struct mfs_acl *a, uint16_t *mode);
/*
 * A directory's default ACL (a copy, changed in place) becoming a new inode's access ACL:
 * USER_OBJ, the group class and OTHER limited by the permission bits of *mode (the mode
 * asked for), and those bits limited by them in turn.  Returns what mfs_acl_equiv_mode
 * would for the result: 1 when it must be stored.
 */
int mfs_acl_create_masq(struct mfs_acl *a, uint16_t *mode);
/* chmod: USER_OBJ, the group class and OTHER take the permission bits of `mode`. */
void mfs_acl_chmod(struct mfs_acl *a, uint16_t mode);

#endif
