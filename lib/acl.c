/*
 * acl.c — POSIX ACLs in their xattr form: decoding with validation, encoding, and the
 * ACL-versus-mode arithmetic of Linux's ACL code (see acl.h).
 */
#include "acl.h"

#include "byteorder.h"
#include "mem.h"
#include "mendfs_format.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* The xattr form, little-endian (mfs_get/mfs_put): a header, then the entries. */
struct acl_xattr_ent {
	uint16_t tag, perm;
	uint32_t id;
};
static_assert(sizeof(struct acl_xattr_ent) == MFS_ACL_ENT_SIZE, "acl_xattr_ent");

/*
 * Validation walks through the states USER_OBJ → USER* → GROUP_OBJ → GROUP* → MASK? →
 * OTHER: each tag is accepted only in its state (which it may advance), and the ids of the
 * named entries strictly increase within their tag.
 */
int mfs_acl_decode(const void *value, size_t size, struct mfs_acl **out)
{
	const uint8_t *p = value;
	uint32_t version;
	struct mfs_acl *a;
	unsigned n, state = MFS_ACL_USER_OBJ, named = 0, mask = 0;
	uint32_t last_id = 0;
	int have_last = 0;

	if (size < MFS_ACL_HDR_SIZE || (size - MFS_ACL_HDR_SIZE) % MFS_ACL_ENT_SIZE ||
	    size > MFS_XATTR_SIZE_MAX)
		return -EINVAL;
	memcpy(&version, p, sizeof(version));
	if (mfs_get32(version) != MFS_ACL_VERSION)
		return -EOPNOTSUPP;     /* as the kernel's posix_acl_from_xattr */
	n = (unsigned)((size - MFS_ACL_HDR_SIZE) / MFS_ACL_ENT_SIZE);
	a = mfs_malloc(sizeof(*a) + n * sizeof(a->e[0]));
	if (!a)
		return -ENOMEM;
	a->n = n;
	for (unsigned i = 0; i < n; i++) {
		struct mfs_acl_ent *e = &a->e[i];
		struct acl_xattr_ent x;

		memcpy(&x, p + MFS_ACL_HDR_SIZE + i * MFS_ACL_ENT_SIZE, sizeof(x));
		e->tag = mfs_get16(x.tag);
		e->perm = mfs_get16(x.perm);
		e->id = mfs_get32(x.id);
		if (e->perm & ~7u)
			goto bad;
		switch (e->tag) {
		case MFS_ACL_USER_OBJ:
			if (state != MFS_ACL_USER_OBJ)
				goto bad;
			state = MFS_ACL_USER;
			have_last = 0;
			break;
		case MFS_ACL_USER:
		case MFS_ACL_GROUP:
			if (e->tag == MFS_ACL_USER ? state != MFS_ACL_USER
					       : state != MFS_ACL_GROUP)
				goto bad;
			if (have_last && e->id <= last_id)
				goto bad;
			last_id = e->id;
			have_last = 1;
			named++;
			break;
		case MFS_ACL_GROUP_OBJ:
			if (state != MFS_ACL_USER)
				goto bad;
			state = MFS_ACL_GROUP;
			have_last = 0;
			break;
		case MFS_ACL_MASK:
			if (state != MFS_ACL_GROUP)
				goto bad;
			state = MFS_ACL_MASK;
			mask = 1;
			break;
		case MFS_ACL_OTHER:
			if (state != MFS_ACL_GROUP && state != MFS_ACL_MASK)
				goto bad;
			state = MFS_ACL_OTHER + 1;     /* nothing may follow */
			break;
		default:
			goto bad;
		}
		if (e->tag != MFS_ACL_USER && e->tag != MFS_ACL_GROUP)
			e->id = MFS_ACL_UNDEFINED;
	}
	if (n && (state != MFS_ACL_OTHER + 1 || (named && !mask)))
		goto bad;
	*out = a;
	return 0;
bad:
	free(a);
	return -EINVAL;
}

size_t mfs_acl_size(const struct mfs_acl *a)
{
	return MFS_ACL_HDR_SIZE + (size_t)a->n * MFS_ACL_ENT_SIZE;
}

void mfs_acl_encode(const struct mfs_acl *a, void *out)
{
	uint8_t *buf = out;
	uint32_t version;

	mfs_put32(version, MFS_ACL_VERSION);
	memcpy(buf, &version, sizeof(version));
	for (unsigned i = 0; i < a->n; i++) {
		struct acl_xattr_ent x;

		mfs_put16(x.tag, a->e[i].tag);
		mfs_put16(x.perm, a->e[i].perm);
		mfs_put32(x.id, a->e[i].id);
		memcpy(buf + MFS_ACL_HDR_SIZE + i * MFS_ACL_ENT_SIZE, &x, sizeof(x));
	}
}

int mfs_acl_equiv_mode(const struct mfs_acl *a, uint16_t *mode)
{
	unsigned u = 0, g = 0, o = 0, m = 0;
	int has_mask = 0, not_equiv = 0;

	for (unsigned i = 0; i < a->n; i++) {
		const struct mfs_acl_ent *e = &a->e[i];

		switch (e->tag) {
		case MFS_ACL_USER_OBJ: u = e->perm; break;
		case MFS_ACL_GROUP_OBJ: g = e->perm; break;
		case MFS_ACL_OTHER: o = e->perm; break;
		case MFS_ACL_MASK: m = e->perm; has_mask = 1; not_equiv = 1; break;
		default: not_equiv = 1; break;
		}
	}
	*mode = (uint16_t)((*mode & ~0777u) | u << 6 | (has_mask ? m : g) << 3 | o);
	return not_equiv;
}

/* The entry that stands for the group class (MASK if any, else GROUP_OBJ). */
static struct mfs_acl_ent *group_class(struct mfs_acl *a)
{
	struct mfs_acl_ent *g = NULL;

	for (unsigned i = 0; i < a->n; i++) {
		if (a->e[i].tag == MFS_ACL_MASK)
			return &a->e[i];
		if (a->e[i].tag == MFS_ACL_GROUP_OBJ)
			g = &a->e[i];
	}
	return g;
}

int mfs_acl_create_masq(struct mfs_acl *a, uint16_t *mode)
{
	unsigned req = *mode & 0777u, got = 0;
	struct mfs_acl_ent *gc = group_class(a);

	for (unsigned i = 0; i < a->n; i++) {
		struct mfs_acl_ent *e = &a->e[i];

		if (e->tag == MFS_ACL_USER_OBJ) {
			e->perm &= (uint16_t)((req >> 6) & 7);
			got |= (unsigned)e->perm << 6;
		} else if (e->tag == MFS_ACL_OTHER) {
			e->perm &= (uint16_t)(req & 7);
			got |= e->perm;
		}
	}
	if (gc) {
		gc->perm &= (uint16_t)((req >> 3) & 7);
		got |= (unsigned)gc->perm << 3;
	}
	*mode = (uint16_t)((*mode & ~0777u) | got);
	return mfs_acl_equiv_mode(a, &(uint16_t){ 0 });
}

void mfs_acl_chmod(struct mfs_acl *a, uint16_t mode)
{
	struct mfs_acl_ent *gc = group_class(a);

	for (unsigned i = 0; i < a->n; i++) {
		if (a->e[i].tag == MFS_ACL_USER_OBJ)
			a->e[i].perm = (uint16_t)((mode >> 6) & 7);
		else if (a->e[i].tag == MFS_ACL_OTHER)
			a->e[i].perm = (uint16_t)(mode & 7);
	}
	if (gc)
		gc->perm = (uint16_t)((mode >> 3) & 7);
}

