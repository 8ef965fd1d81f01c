/*
 * xattr.c — extended attributes (see xattr.h; the format is in mendfs_format.h, "Extended
 * attributes").
 *
 * Two formats of the attribute fork, which is the literal area from forkoff * 8 on:
 *
 *   local   packed entries [ns][namelen][le16 valuelen][name][value], anext of them; the fork
 *           is exactly roundup8(their bytes) long, so the data fork keeps the rest.
 *   btree   struct mfs_fork_root (16 bytes) of an attribute btree of 64-byte records keyed by
 *           ns << 56 | hash << 24 | seq << 8 | part; an entry's bytes (name, then the value or
 *           a remote descriptor) fill its head record and continuations; values over
 *           MFS_XATTR_INREC_MAX bytes live in one extent of value blocks.
 *
 * Invariants (checked by mfs_xattr_check):
 *   - (ns, name) is stored at most once; in the btree, names of one (ns, hash) have distinct
 *     seqs, each the lowest free in the chain when the attribute was created;
 *   - a head record (part 0) is followed directly by its continuations 1 .. parts-1, where
 *     parts follows from namelen and valuelen alone;
 *   - the data fork never loses a byte it uses: forkoff * 8 >= data_used(ip) at all times;
 *   - ip->nblocks counts attribute btree blocks and value blocks (with the data fork's).
 *
 * The fork goes local → btree when an entry does not fit inline next to what the data fork
 * uses, and btree → local after a change that leaves one leaf whose entries fit inline and
 * have no value blocks.  The name hash is the directory name hash (mfs_dir_hash in dir.h),
 * shared rather than copied.
 */
#include "mem.h"
#include "xattr.h"
#include "alloc.h"
#include "bcache.h"
#include "bmap.h"
#include "btree.h"
#include "byteorder.h"
#include "crc32c.h"
#include "dir.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "mendfs_format.h"
#include "trans.h"
#include "verify.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define KEY(ns, h, seq, part) \
	((uint64_t)(ns) << 56 | (uint64_t)(h) << 24 | (uint64_t)(seq) << 8 | (uint64_t)(part))
#define KEY_NS(k)    ((unsigned)((k) >> 56))
#define KEY_HASH(k)  ((uint32_t)((k) >> 24))
#define KEY_SEQ(k)   ((uint32_t)((k) >> 8) & 0xffffu)
#define KEY_PART(k)  ((unsigned)((k) & 0xff))
#define LENT_SIZE(nl, vl) ((uint32_t)sizeof(struct mfs_xattr_lent) + (nl) + (vl))
#define ROUND8(x)    (((x) + 7u) & ~7u)
#define STREAM_MAX   (MFS_XATTR_NAME_MAX + MFS_XATTR_INREC_MAX)
#define ROOT_SIZE    ((uint32_t)sizeof(struct mfs_fork_root))
#define VBLK_HDR     ((uint32_t)sizeof(struct mfs_xattr_vblk))

static unsigned long long ULL(uint64_t v)
{
	return (unsigned long long)v;
}

static uint64_t ld64(const void *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

static void st64(void *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

static uint32_t xhash(const struct mfs_inode *ip, const void *name, unsigned len)
{
	return mfs_dir_hash(ip->fs->geo.uuid, name, len);
}

/* Bytes of an entry's stream: the name, then the value or its remote descriptor. */
static unsigned stream_len(unsigned namelen, uint32_t valuelen)
{
	return namelen + (valuelen > MFS_XATTR_INREC_MAX ?
			  (unsigned)sizeof(struct mfs_xattr_remote) : valuelen);
}

static unsigned parts_for(unsigned slen)
{
	if (slen <= MFS_XATTR_HEAD_DATA)
		return 1;
	return 1 + (slen - MFS_XATTR_HEAD_DATA + MFS_XATTR_CONT_DATA - 1) / MFS_XATTR_CONT_DATA;
}

/* Arguments of every call naming an attribute. */
static int name_check(unsigned ns, const char *name, unsigned len)
{
	if (ns < 1 || ns > MFS_XATTR_NS_MAX)
		return -EINVAL;
	if (len > MFS_XATTR_NAME_MAX)
		return -ERANGE;
	if (len == 0 || !name || memchr(name, 0, len))
		return -EINVAL;
	return 0;
}

/* ---- the literal area split --------------------------------------------------------------- */
/* Bytes at the start of the literal area the data fork uses now (at least 8, rounded to 8):
 * the attribute fork must never start below this.  An extent list and a directory's inline
 * entries count at least their btree root, so that the file can always grow: bmap and dir
 * turn a full inline fork into a btree, which needs the root's bytes of fork (an 8-byte
 * fork made every write of such a file, every entry added to an empty directory, ENOSPC). */
static uint32_t data_used(const struct mfs_inode *ip)
{
	uint64_t u = 0;

	switch (ip->dformat) {
	case MFS_FMT_EXTENTS:
		u = (uint64_t)ip->dnext * sizeof(struct mfs_bmbt_rec);
		if (u < ROOT_SIZE)
			u = ROOT_SIZE;
		break;
	case MFS_FMT_BTREE:
		u = S_ISDIR(ip->mode) ? sizeof(struct mfs_dir_root) : sizeof(struct mfs_fork_root);
		break;
	case MFS_FMT_LOCAL:
		u = ip->size;
		if (S_ISDIR(ip->mode) && u < sizeof(struct mfs_dir_root))
			u = sizeof(struct mfs_dir_root);
		break;
	default:
		break;
	}
	if (u < 8)
		u = 8;
	if (u > ip->litsize)
		u = ip->litsize;
	return ROUND8((uint32_t)u);
}

static uint8_t *afork(struct mfs_inode *ip)
{
	return ip->lit + (uint32_t)ip->forkoff * 8u;
}

static uint32_t asize(const struct mfs_inode *ip)
{
	return ip->forkoff ? ip->litsize - (uint32_t)ip->forkoff * 8u : 0;
}

/* Would `used` bytes of local entries fit inline next to the data fork? */
static int local_fits(const struct mfs_inode *ip, uint32_t used)
{
	return used == 0 || (uint64_t)ROUND8(used) + data_used(ip) <= ip->litsize;
}

/*
 * Make the attribute fork `bytes` long (a multiple of 8; 0: no fork), of format fmt with
 * `next`, holding `content`.  Bytes that change hands between the forks are zeroed.  The
 * caller made sure the data fork keeps data_used(ip).
 */
static void set_fork(struct mfs_inode *ip, unsigned fmt, uint32_t bytes, const void *content,
		     uint32_t clen, uint32_t next)
{
	uint32_t nfo = bytes ? (ip->litsize - bytes) / 8u : 0;
	uint32_t from = ip->litsize;

	if (ip->forkoff)
		from = (uint32_t)ip->forkoff * 8u;
	if (nfo && nfo * 8u < from)
		from = nfo * 8u;
	memset(ip->lit + from, 0, ip->litsize - from);
	ip->forkoff = (uint16_t)nfo;
	ip->aformat = (uint8_t)(bytes ? fmt : MFS_FMT_NONE);
	ip->anext = bytes ? next : 0;
	if (bytes && clen)
		memcpy(afork(ip), content, clen);
}

/* The attribute fork's header fields are consistent (the inode verifier checked the
 * offsets; this guards an in-core inode a caller may have changed). */
static int fork_ok(const struct mfs_inode *ip)
{
	switch (ip->aformat) {
	case MFS_FMT_NONE:
		if (ip->forkoff || ip->anext)
			return MFS_CORRUPT("inode %llu: no attribute fork, but fork offset %u and "
					   "%u entries", ULL(ip->ino), ip->forkoff, ip->anext);
		return 0;
	case MFS_FMT_LOCAL:
		if (!ip->forkoff || (uint32_t)ip->forkoff * 8u >= ip->litsize)
			return MFS_CORRUPT("inode %llu: inline attribute fork at byte %u of a %u-byte "
					   "literal area", ULL(ip->ino), ip->forkoff * 8u,
					   ip->litsize);
		return 0;
	case MFS_FMT_BTREE:
		if (!ip->forkoff || asize(ip) < ROOT_SIZE)
			return MFS_CORRUPT("inode %llu: attribute btree root at byte %u of a %u-byte "
					   "literal area", ULL(ip->ino), ip->forkoff * 8u,
					   ip->litsize);
		return 0;
	}
	return MFS_CORRUPT("inode %llu: attribute fork format %u is neither local nor btree",
			   ULL(ip->ino), ip->aformat);
}

/* ---- local format ------------------------------------------------------------------------- */
struct lent {
	uint32_t off, size;
	unsigned ns, namelen;
	uint32_t valuelen;
	const uint8_t *name, *value;
};

/* Decode the entry at `off` of a local image of `cap` bytes, bounds-checked. */
static int local_get(const struct mfs_inode *ip, const uint8_t *base, uint32_t cap,
		     uint32_t off, struct lent *e)
{
	const uint8_t *p = base + off;

	if ((uint64_t)off + sizeof(struct mfs_xattr_lent) > cap)
		return MFS_CORRUPT("inode %llu: inline attribute at byte %u overruns the %u-byte "
				   "attribute fork", ULL(ip->ino), off, cap);
	e->off = off;
	e->ns = p[0];
	e->namelen = p[1];
	e->valuelen = (uint32_t)p[2] | (uint32_t)p[3] << 8;
	e->name = p + sizeof(struct mfs_xattr_lent);
	e->value = e->name + e->namelen;
	e->size = LENT_SIZE(e->namelen, e->valuelen);
	if (e->ns < 1 || e->ns > MFS_XATTR_NS_MAX || e->namelen == 0 ||
	    (uint64_t)off + e->size > cap)
		return MFS_CORRUPT("inode %llu: inline attribute at byte %u: namespace %u, name "
				   "length %u, value length %u (the fork ends at %u)", ULL(ip->ino),
				   off, e->ns, e->namelen, e->valuelen, cap);
	if (memchr(e->name, 0, e->namelen))
		return MFS_CORRUPT("inode %llu: inline attribute at byte %u has a NUL in its name",
				   ULL(ip->ino), off);
	return 0;
}

/* Call fn on each of the `count` entries of a local image; returns fn's stop value, an
 * error, or 0 with *used set to the bytes the entries take. */
typedef int (*local_fn)(const struct lent *e, void *priv);
static int local_walk(const struct mfs_inode *ip, const uint8_t *base, uint32_t cap,
		      uint32_t count, local_fn fn, void *priv, uint32_t *used)
{
	uint32_t off = 0;
	int err;

	for (uint32_t i = 0; i < count; i++) {
		struct lent e;

		err = local_get(ip, base, cap, off, &e);
		if (err)
			return err;
		off += e.size;
		if (fn) {
			err = fn(&e, priv);
			if (err)
				return err;
		}
	}
	if (used)
		*used = off;
	return 0;
}

struct lfind {
	unsigned ns, len;
	const char *name;
	struct lent e;
	int found;
};

static int lfind_fn(const struct lent *e, void *priv)
{
	struct lfind *f = priv;

	if (e->ns == f->ns && e->namelen == f->len && !memcmp(e->name, f->name, f->len)) {
		f->e = *e;
		f->found = 1;
	}
	return 0;       /* go on: the walk also checks and measures every entry */
}

/* Find (ns, name) in the local fork (aformat LOCAL or NONE); *used = the fork's bytes. */
static int local_find(struct mfs_inode *ip, struct lfind *f, uint32_t *used)
{
	f->found = 0;
	if (ip->aformat == MFS_FMT_NONE) {
		*used = 0;
		return 0;
	}
	return local_walk(ip, afork(ip), asize(ip), ip->anext, lfind_fn, f, used);
}

static void lent_put(uint8_t *p, unsigned ns, const char *name, unsigned len,
		     const void *value, uint32_t vlen)
{
	p[0] = (uint8_t)ns;
	p[1] = (uint8_t)len;
	p[2] = (uint8_t)vlen;
	p[3] = (uint8_t)(vlen >> 8);
	memcpy(p + 4, name, len);
	if (vlen)
		memcpy(p + 4 + len, value, vlen);
}

/* Install a local image of `used` bytes and `count` entries (0: drop the fork). */
static void local_install(struct mfs_inode *ip, const uint8_t *img, uint32_t used,
			  uint32_t count)
{
	set_fork(ip, MFS_FMT_LOCAL, ROUND8(used), img, used, count);
}

/* ---- the attribute btree ------------------------------------------------------------------ */
static int xabt_cmp(const void *k1, const void *k2)
{
	uint64_t a = ld64(k1), b = ld64(k2);

	return a < b ? -1 : a > b;
}

static void xabt_rec_key(const void *rec, void *key)
{
	memcpy(key, rec, 8);
}

/* One record on its own. */
static int rec_check(const struct mfs_inode *ip, const uint8_t *r)
{
	uint64_t key = ld64(r);
	unsigned ns = KEY_NS(key), part = KEY_PART(key);
	uint32_t seq = KEY_SEQ(key);

	if (ns < 1 || ns > MFS_XATTR_NS_MAX || part >= MFS_XATTR_MAX_PARTS ||
	    seq > MFS_XATTR_SEQ_MAX)
		return MFS_CORRUPT("inode %llu attribute btree: record key 0x%llx has namespace %u, "
				   "seq %u, part %u", ULL(ip->ino), ULL(key), ns, seq, part);
	if (part == 0) {
		struct mfs_xattr_rec h;
		uint32_t vlen;
		unsigned slen, n;

		memcpy(&h, r, sizeof(h));
		vlen = mfs_get32(h.valuelen);
		if (h.namelen == 0 || vlen > MFS_XATTR_SIZE_MAX ||
		    (h.flags & ~MFS_XATTR_REMOTE) || h.pad ||
		    !!(h.flags & MFS_XATTR_REMOTE) != (vlen > MFS_XATTR_INREC_MAX))
			return MFS_CORRUPT("inode %llu attribute btree: entry 0x%llx has name length "
					   "%u, value length %u, flags 0x%x", ULL(ip->ino),
					   ULL(key), h.namelen, vlen, h.flags);
		slen = stream_len(h.namelen, vlen);
		n = slen < MFS_XATTR_HEAD_DATA ? slen : MFS_XATTR_HEAD_DATA;
		for (unsigned i = n; i < MFS_XATTR_HEAD_DATA; i++)
			if (h.data[i])
				return MFS_CORRUPT("inode %llu attribute btree: entry 0x%llx has bytes "
						   "after its end", ULL(ip->ino), ULL(key));
		if (h.namelen <= MFS_XATTR_HEAD_DATA) {
			if (memchr(h.data, 0, h.namelen))
				return MFS_CORRUPT("inode %llu attribute btree: entry 0x%llx has a NUL "
						   "in its name", ULL(ip->ino), ULL(key));
			if (xhash(ip, h.data, h.namelen) != KEY_HASH(key))
				return MFS_CORRUPT("inode %llu attribute btree: entry 0x%llx: the name "
						   "hashes to 0x%x, not 0x%x", ULL(ip->ino), ULL(key),
						   xhash(ip, h.data, h.namelen), KEY_HASH(key));
		}
	}
	return 0;
}

static int xabt_check_rec(struct mfs_btree_cur *cur, const void *rec)
{
	return rec_check(cur->priv, rec);
}

static int xabt_alloc_block(struct mfs_btree_cur *cur, uint64_t *fsb)
{
	return mfs_inode_btree_alloc(cur, cur->priv, MFS_RMAP_ATTR_FORK | MFS_RMAP_BMBT_BLOCK,
				     fsb);
}

/* (the engine drops the freed block's buffer from the transaction itself) */
static int xabt_free_block(struct mfs_btree_cur *cur, uint64_t fsb)
{
	return mfs_inode_btree_free(cur, cur->priv, MFS_RMAP_ATTR_FORK | MFS_RMAP_BMBT_BLOCK,
				    fsb);
}

static int xabt_set_root(struct mfs_btree_cur *cur)
{
	struct mfs_inode *ip = cur->priv;
	struct mfs_fork_root fr;

	memset(&fr, 0, sizeof(fr));
	mfs_put64(fr.rootblock, cur->root.fsb);
	mfs_put32(fr.levels, cur->root.levels);
	memcpy(afork(ip), &fr, sizeof(fr));
	ip->anext = cur->root.levels;
	return 0;
}

static const struct mfs_btree_ops xabt_ops = {
	.name = "attribute btree",
	.magic = MFS_XATTRBT_MAGIC,
	.rec_len = MFS_XATTR_REC_SIZE,
	.key_len = sizeof(struct mfs_xattr_key),
	.ptr_len = 8,
	.cmp_keys = xabt_cmp,
	.rec_key = xabt_rec_key,
	.check_rec = xabt_check_rec,
	.alloc_block = xabt_alloc_block,
	.free_block = xabt_free_block,
	.set_root = xabt_set_root,
};

/* A cursor on ip's attribute btree, after checking the fork root. */
static int bt_cur(struct mfs_inode *ip, struct mfs_trans *tp, struct mfs_btree_cur *cur)
{
	struct mfs_fork_root fr;
	struct mfs_btree_root root;
	int err = fork_ok(ip);

	if (err)
		return err;
	memcpy(&fr, afork(ip), sizeof(fr));
	root.fsb = mfs_get64(fr.rootblock);
	root.levels = mfs_get32(fr.levels);
	if (root.levels != ip->anext || root.levels < 1 || root.levels > MFS_BTREE_MAXLEVELS)
		return MFS_CORRUPT("inode %llu: attribute btree root says %u levels, the inode %u "
				   "(1..%u allowed)", ULL(ip->ino), root.levels, ip->anext,
				   MFS_BTREE_MAXLEVELS);
	mfs_btree_cur_init(cur, ip->fs, tp, &xabt_ops, ip->ino, 0, &root, ip);
	return 0;
}

/* ---- whole entries from the records ------------------------------------------------------- */
struct xent {
	uint64_t key0;              /* head key */
	unsigned ns, namelen, flags, parts, slen;
	uint32_t hash, seq, valuelen;
	uint8_t s[STREAM_MAX];      /* name, then the value or the remote descriptor */
};

struct asm_state {
	struct mfs_inode *ip;
	int pending;
	unsigned next;
	struct xent e;
	int (*emit)(struct asm_state *s, const struct xent *e);
	void *priv;
};

static int asm_rec(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	struct asm_state *s = priv;
	struct xent *e = &s->e;
	const uint8_t *r = rec;
	uint64_t key = ld64(r);
	unsigned part = KEY_PART(key);
	int err = rec_check(s->ip, r);

	(void)cur;
	if (err)
		return err;
	if (part == 0) {
		struct mfs_xattr_rec h;

		if (s->pending)
			return MFS_CORRUPT("inode %llu attribute btree: entry 0x%llx ends after part "
					   "%u of %u", ULL(s->ip->ino), ULL(e->key0), s->next - 1,
					   e->parts);
		memcpy(&h, r, sizeof(h));
		e->key0 = key;
		e->ns = KEY_NS(key);
		e->hash = KEY_HASH(key);
		e->seq = KEY_SEQ(key);
		e->namelen = h.namelen;
		e->flags = h.flags;
		e->valuelen = mfs_get32(h.valuelen);
		e->slen = stream_len(e->namelen, e->valuelen);
		e->parts = parts_for(e->slen);
		memcpy(e->s, h.data, e->slen < MFS_XATTR_HEAD_DATA ? e->slen : MFS_XATTR_HEAD_DATA);
		s->next = 1;
		s->pending = 1;
	} else {
		unsigned off, n;

		if (!s->pending || (key & ~0xffull) != e->key0 || part != s->next)
			return MFS_CORRUPT("inode %llu attribute btree: record 0x%llx continues no "
					   "entry", ULL(s->ip->ino), ULL(key));
		off = MFS_XATTR_HEAD_DATA + (part - 1) * MFS_XATTR_CONT_DATA;
		n = e->slen - off < MFS_XATTR_CONT_DATA ? e->slen - off : MFS_XATTR_CONT_DATA;
		memcpy(e->s + off, r + 8, n);
		for (unsigned i = n; i < MFS_XATTR_CONT_DATA; i++)
			if (r[8 + i])
				return MFS_CORRUPT("inode %llu attribute btree: record 0x%llx has "
						   "bytes after the entry's end", ULL(s->ip->ino),
						   ULL(key));
		s->next++;
	}
	if (s->pending && s->next == e->parts) {
		s->pending = 0;
		if (e->namelen > MFS_XATTR_HEAD_DATA) {
			if (memchr(e->s, 0, e->namelen))
				return MFS_CORRUPT("inode %llu attribute btree: entry 0x%llx has a NUL "
						   "in its name", ULL(s->ip->ino), ULL(e->key0));
			if (xhash(s->ip, e->s, e->namelen) != e->hash)
				return MFS_CORRUPT("inode %llu attribute btree: entry 0x%llx: the name "
						   "hashes to 0x%x, not 0x%x", ULL(s->ip->ino),
						   ULL(e->key0), xhash(s->ip, e->s, e->namelen),
						   e->hash);
		}
		return s->emit(s, e);
	}
	return 0;
}

/* Walk the entries with keys in [lo, hi]; emit's positive stop value, 0, or an error. */
static int bt_walk(struct mfs_btree_cur *cur, struct asm_state *s, uint64_t lo, uint64_t hi)
{
	uint8_t klo[8], khi[8];
	int err;

	st64(klo, lo);
	st64(khi, hi);
	s->pending = 0;
	err = mfs_btree_query_range(cur, klo, khi, asm_rec, s);
	if (err == 0 && s->pending)
		return MFS_CORRUPT("inode %llu attribute btree: entry 0x%llx has %u of %u parts",
				   ULL(s->ip->ino), ULL(s->e.key0), s->next, s->e.parts);
	return err;
}

/* Looking for a name in its collision chain, and the lowest free seq there. */
struct bfind {
	const uint8_t *name;
	unsigned len;
	int found;
	struct xent *out;
	uint32_t expect_seq, free_seq;
	int have_free;
};

static int bfind_emit(struct asm_state *s, const struct xent *e)
{
	struct bfind *f = s->priv;

	if (!f->have_free) {
		if (e->seq > f->expect_seq) {
			f->free_seq = f->expect_seq;
			f->have_free = 1;
		} else {
			f->expect_seq = e->seq + 1;
		}
	}
	if (e->namelen == f->len && !memcmp(e->s, f->name, f->len)) {
		f->found = 1;
		*f->out = *e;
		return 1;
	}
	return 0;
}

static int bt_find(struct mfs_btree_cur *cur, struct mfs_inode *ip, unsigned ns,
		   const char *name, unsigned len, struct bfind *f, struct xent *out)
{
	uint32_t hash = xhash(ip, name, len);
	struct asm_state s;
	int err;

	memset(f, 0, sizeof(*f));
	f->name = (const uint8_t *)name;
	f->len = len;
	f->out = out;
	memset(&s, 0, sizeof(s));
	s.ip = ip;
	s.emit = bfind_emit;
	s.priv = f;
	err = bt_walk(cur, &s, KEY(ns, hash, 0, 0), KEY(ns, hash, 0xffff, 0xff));
	if (err < 0)
		return err;
	if (!f->have_free)
		f->free_seq = f->expect_seq;
	return 0;
}

/* ---- value blocks ------------------------------------------------------------------------- */
static uint32_t vblk_bytes(const struct mfs_fs *fs)
{
	return fs->geo.blocksize - VBLK_HDR;
}

static uint32_t vblocks_for(const struct mfs_fs *fs, uint32_t vlen)
{
	return (vlen + vblk_bytes(fs) - 1) / vblk_bytes(fs);
}

static uint64_t vblk_rmap_off(const struct xent *e)
{
	return MFS_RMAP_ATTR_FORK | MFS_XATTR_RMAP_OFF(e->ns, e->hash, e->seq, 0);
}

/* The remote descriptor of an entry, checked against the geometry. */
static int remote_get(const struct mfs_inode *ip, const struct xent *e, uint64_t *fsb,
		      uint32_t *n, uint32_t *crc)
{
	const struct mfs_geom *g = &ip->fs->geo;
	struct mfs_xattr_remote rd;
	uint32_t agbno;

	memcpy(&rd, e->s + e->namelen, sizeof(rd));
	*fsb = mfs_get64(rd.fsblock);
	*n = mfs_get32(rd.blocks);
	*crc = mfs_get32(rd.crc);
	if (*n != vblocks_for(ip->fs, e->valuelen) || *fsb >= g->dblocks)
		goto bad;
	agbno = mfs_fsb_to_agbno(g, *fsb);
	if (agbno < MFS_AG_FIXED_BLOCKS ||
	    (uint64_t)agbno + *n > mfs_ag_length(g, mfs_fsb_to_agno(g, *fsb)))
		goto bad;
	return 0;
bad:
	return MFS_CORRUPT("inode %llu attribute btree: entry 0x%llx keeps its %u-byte value in "
			   "%u blocks at fsblock %llu (expected %u blocks inside one AG)",
			   ULL(ip->ino), ULL(e->key0), e->valuelen, *n, ULL(*fsb),
			   vblocks_for(ip->fs, e->valuelen));
}

/* Read a remote value into buf (valuelen bytes). */
static int remote_read(struct mfs_inode *ip, const struct xent *e, uint8_t *buf)
{
	struct mfs_fs *fs = ip->fs;
	uint32_t n, crc, per = vblk_bytes(fs);
	uint64_t fsb;
	struct mfs_blk_expect exp = {
		.magic = MFS_XATTRV_MAGIC, .owner = ip->ino, .level = MFS_LEVEL_ANY,
		.what = "attribute value block",
	};
	int err = remote_get(ip, e, &fsb, &n, &crc);

	for (uint32_t i = 0; !err && i < n; i++) {
		struct mfs_buf *bp;
		const struct mfs_xattr_vblk *h;
		uint32_t off = i * per, want = e->valuelen - off < per ? e->valuelen - off : per;

		err = mfs_buf_read(fs->bc, fsb + i, &exp, &bp);
		if (err)
			break;
		h = bp->data;
		if (mfs_get64(h->key) != e->key0 || mfs_get32(h->offset) != off ||
		    mfs_get32(h->bytes) != want)
			err = MFS_CORRUPT("inode %llu attribute value block %llu: key 0x%llx, bytes "
					  "%u at %u; expected key 0x%llx, %u bytes at %u",
					  ULL(ip->ino), ULL(fsb + i), ULL(mfs_get64(h->key)),
					  mfs_get32(h->bytes), mfs_get32(h->offset), ULL(e->key0),
					  want, off);
		else
			memcpy(buf + off, (const uint8_t *)bp->data + VBLK_HDR, want);
		mfs_buf_put(bp);
	}
	if (!err && mfs_crc32c(0, buf, e->valuelen) != crc)
		err = MFS_CORRUPT("inode %llu attribute btree: entry 0x%llx: value CRC 0x%08x, "
				  "expected 0x%08x", ULL(ip->ino), ULL(e->key0),
				  mfs_crc32c(0, buf, e->valuelen), crc);
	return err;
}

/* Write a value into new value blocks; the descriptor goes to rd. */
static int remote_write(struct mfs_trans *tp, struct mfs_inode *ip, const struct xent *e,
			const uint8_t *value, struct mfs_xattr_remote *rd)
{
	struct mfs_fs *fs = ip->fs;
	uint32_t per = vblk_bytes(fs), n = vblocks_for(fs, e->valuelen);
	struct mfs_alloc_args a = {
		.type = MFS_ALLOC_NEAR, .target = mfs_ino_to_fsb(&fs->geo, ip->ino),
		.minlen = n, .maxlen = n, .owner = ip->ino, .offset = vblk_rmap_off(e),
	};
	int err = mfs_alloc_extent(tp, &a);

	if (err)
		return err;
	if (a.len != n)
		return MFS_CORRUPT("inode %llu: the allocator gave %u blocks for a value, %u asked",
				   ULL(ip->ino), a.len, n);
	ip->nblocks += n;
	for (uint32_t i = 0; i < n; i++) {
		struct mfs_buf *bp;
		struct mfs_xattr_vblk *h;
		uint32_t off = i * per, len = e->valuelen - off < per ? e->valuelen - off : per;

		err = mfs_trans_get_new(tp, a.fsb + i, 1, &bp);
		if (err)
			return err;
		mfs_blk_init(bp->data, fs->geo.blocksize, MFS_XATTRV_MAGIC, a.fsb + i, ip->ino,
			     fs->geo.uuid);
		h = bp->data;
		mfs_put64(h->key, e->key0);
		mfs_put32(h->offset, off);
		mfs_put32(h->bytes, len);
		memcpy((uint8_t *)bp->data + VBLK_HDR, value + off, len);
	}
	memset(rd, 0, sizeof(*rd));
	mfs_put64(rd->fsblock, a.fsb);
	mfs_put32(rd->blocks, n);
	mfs_put32(rd->crc, mfs_crc32c(0, value, e->valuelen));
	return 0;
}

static int remote_free(struct mfs_trans *tp, struct mfs_inode *ip, const struct xent *e)
{
	uint64_t fsb;
	uint32_t n, crc;
	int err = remote_get(ip, e, &fsb, &n, &crc);

	if (!err && ip->nblocks < n)
		err = MFS_CORRUPT("inode %llu: counts %llu blocks, freeing a %u-block value",
				  ULL(ip->ino), ULL(ip->nblocks), n);
	if (!err)
		err = mfs_free_extent(tp, fsb, n, ip->ino, vblk_rmap_off(e));
	for (uint32_t i = 0; !err && i < n; i++)
		err = mfs_trans_forget(tp, fsb + i);
	if (!err)
		ip->nblocks -= n;
	return err;
}

/* ---- btree changes ------------------------------------------------------------------------ */
/* Insert the records of (ns, name) = value with id (hash, seq). */
static int bt_insert(struct mfs_btree_cur *cur, struct mfs_inode *ip, unsigned ns,
		     uint32_t hash, uint32_t seq, const char *name, unsigned len,
		     const uint8_t *value, uint32_t vlen)
{
	struct xent e;
	int err;

	e.key0 = KEY(ns, hash, seq, 0);
	e.ns = ns;
	e.hash = hash;
	e.seq = seq;
	e.namelen = len;
	e.valuelen = vlen;
	e.flags = vlen > MFS_XATTR_INREC_MAX ? MFS_XATTR_REMOTE : 0;
	e.slen = stream_len(len, vlen);
	e.parts = parts_for(e.slen);
	memcpy(e.s, name, len);
	if (e.flags & MFS_XATTR_REMOTE) {
		struct mfs_xattr_remote rd;

		err = remote_write(cur->tp, ip, &e, value, &rd);
		if (err)
			return err;
		memcpy(e.s + len, &rd, sizeof(rd));
	} else if (vlen) {
		memcpy(e.s + len, value, vlen);
	}
	for (unsigned part = 0; part < e.parts; part++) {
		uint8_t rec[MFS_XATTR_REC_SIZE];

		memset(rec, 0, sizeof(rec));
		st64(rec, e.key0 | part);
		if (part == 0) {
			struct mfs_xattr_rec *h = (void *)rec;

			mfs_put32(h->valuelen, vlen);
			h->namelen = (uint8_t)len;
			h->flags = (uint8_t)e.flags;
			memcpy(h->data, e.s, e.slen < MFS_XATTR_HEAD_DATA ? e.slen :
					     MFS_XATTR_HEAD_DATA);
		} else {
			unsigned off = MFS_XATTR_HEAD_DATA + (part - 1) * MFS_XATTR_CONT_DATA;
			unsigned n = e.slen - off < MFS_XATTR_CONT_DATA ? e.slen - off :
									  MFS_XATTR_CONT_DATA;

			memcpy(rec + 8, e.s + off, n);
		}
		err = mfs_btree_insert(cur, rec);
		if (err == -EEXIST)
			return MFS_CORRUPT("inode %llu attribute btree: key 0x%llx already present",
					   ULL(ip->ino), ULL(e.key0 | part));
		if (err)
			return err;
	}
	return 0;
}

/* Delete the records of entry e, and its value blocks. */
static int bt_delete(struct mfs_btree_cur *cur, struct mfs_inode *ip, const struct xent *e)
{
	int err = 0;

	for (unsigned part = 0; !err && part < e->parts; part++) {
		uint8_t key[8];
		int stat = 0;

		st64(key, e->key0 | part);
		err = mfs_btree_lookup(cur, key, MFS_LOOKUP_EQ, &stat);
		if (!err && !stat)
			err = MFS_CORRUPT("inode %llu attribute btree: record 0x%llx vanished",
					  ULL(ip->ino), ULL(e->key0 | part));
		if (!err)
			err = mfs_btree_delete(cur);
	}
	if (!err && (e->flags & MFS_XATTR_REMOTE))
		err = remote_free(cur->tp, ip, e);
	return err;
}

/* Local → btree: a new root leaf near the inode, then every local entry inserted. */
static int convert_to_btree(struct mfs_trans *tp, struct mfs_inode *ip)
{
	struct mfs_fs *fs = ip->fs;
	struct mfs_alloc_args a = {
		.type = MFS_ALLOC_NEAR, .target = mfs_ino_to_fsb(&fs->geo, ip->ino),
		.minlen = 1, .maxlen = 1, .owner = ip->ino,
		.offset = MFS_RMAP_ATTR_FORK | MFS_RMAP_BMBT_BLOCK,
	};
	uint32_t cap = asize(ip), count = ip->anext, off = 0;
	struct mfs_fork_root fr;
	struct mfs_btree_cur cur;
	struct mfs_buf *bp;
	uint8_t *saved;
	int err;

	if ((uint64_t)data_used(ip) + ROOT_SIZE > ip->litsize)
		return -ENOSPC;
	saved = mfs_malloc(cap ? cap : 1);
	if (!saved)
		return -ENOMEM;
	if (ip->aformat == MFS_FMT_NONE)
		count = 0;
	else
		memcpy(saved, afork(ip), cap);
	err = mfs_alloc_extent(tp, &a);
	if (err)
		goto out;
	ip->nblocks++;
	err = mfs_trans_get_new(tp, a.fsb, 1, &bp);
	if (err)
		goto out;
	mfs_blk_init(bp->data, fs->geo.blocksize, MFS_XATTRBT_MAGIC, a.fsb, ip->ino,
		     fs->geo.uuid);
	memset(&fr, 0, sizeof(fr));
	mfs_put64(fr.rootblock, a.fsb);
	mfs_put32(fr.levels, 1);
	set_fork(ip, MFS_FMT_BTREE, ROOT_SIZE, &fr, sizeof(fr), 1);

	err = bt_cur(ip, tp, &cur);
	if (err)
		goto out;
	for (uint32_t i = 0; i < count && !err; i++) {
		struct lent e;
		struct bfind f;
		struct xent x;

		err = local_get(ip, saved, cap, off, &e);
		if (!err)
			err = bt_find(&cur, ip, e.ns, (const char *)e.name, e.namelen, &f, &x);
		if (!err && f.found)
			err = MFS_CORRUPT("inode %llu: inline attribute at byte %u appears twice",
					  ULL(ip->ino), off);
		if (!err)
			err = bt_insert(&cur, ip, e.ns, xhash(ip, e.name, e.namelen), f.free_seq,
					(const char *)e.name, e.namelen, e.value, e.valuelen);
		off += e.size;
	}
	mfs_btree_cur_release(&cur);
out:
	free(saved);
	return err;
}

struct tolocal {
	uint8_t *buf;
	uint32_t off, cap, count;
	int fits;
};

static int tolocal_emit(struct asm_state *s, const struct xent *e)
{
	struct tolocal *t = s->priv;
	uint32_t sz = LENT_SIZE(e->namelen, e->valuelen);

	if ((e->flags & MFS_XATTR_REMOTE) || t->off + sz > t->cap) {
		t->fits = 0;
		return 1;
	}
	lent_put(t->buf + t->off, e->ns, (const char *)e->s, e->namelen, e->s + e->namelen,
		 e->valuelen);
	t->off += sz;
	t->count++;
	return 0;
}

/* Btree → local when the tree is one leaf whose entries fit inline without value blocks;
 * otherwise nothing. */
static int maybe_convert_to_local(struct mfs_trans *tp, struct mfs_inode *ip)
{
	struct mfs_btree_cur cur;
	struct asm_state s;
	struct tolocal t;
	struct mfs_fork_root fr;
	uint64_t fsb;
	int err;

	if (ip->aformat != MFS_FMT_BTREE || ip->anext != 1)
		return 0;
	memset(&t, 0, sizeof(t));
	t.cap = ip->litsize - data_used(ip);
	t.cap &= ~7u;
	t.fits = 1;
	t.buf = mfs_calloc(1, t.cap ? t.cap : 1);
	if (!t.buf)
		return -ENOMEM;
	memset(&s, 0, sizeof(s));
	s.ip = ip;
	s.emit = tolocal_emit;
	s.priv = &t;
	err = bt_cur(ip, tp, &cur);
	if (!err) {
		err = bt_walk(&cur, &s, 0, ~0ull);
		mfs_btree_cur_release(&cur);
	}
	if (err < 0 || !t.fits)
		goto out;
	memcpy(&fr, afork(ip), sizeof(fr));
	fsb = mfs_get64(fr.rootblock);
	if (ip->nblocks == 0) {
		err = MFS_CORRUPT("inode %llu: block count 0 with an attribute btree",
				  ULL(ip->ino));
		goto out;
	}
	err = mfs_free_extent(tp, fsb, 1, ip->ino, MFS_RMAP_ATTR_FORK | MFS_RMAP_BMBT_BLOCK);
	if (!err)
		err = mfs_trans_forget(tp, fsb);
	if (err)
		goto out;
	ip->nblocks--;
	local_install(ip, t.buf, t.off, t.count);
out:
	free(t.buf);
	return err < 0 ? err : 0;
}

/* ---- room in the literal area -------------------------------------------------------------- */
/*
 * Make the data fork use at most litsize - need bytes, for an attribute fork of `need` bytes.
 * A directory's inline entries that are in the way move into its name btree (dir.h:
 * mfs_dir_to_btree); a regular file's inline extent list becomes an extent btree — bmap's
 * own btree format, built through the extent-btree engine (bmap.h: mfs_bmbt_ops and
 * mfs_bmbt_cur_init), so the fork then holds only its 16-byte root and bmap finds a tree it
 * made itself (with more records than fit inline next to the attribute fork, so it does not
 * convert it straight back).  Anything else that fills the literal area (a long inline
 * symlink target): -ENOSPC.
 */
static int data_make_room(struct mfs_trans *tp, struct mfs_inode *ip, uint32_t need)
{
	struct mfs_fs *fs = ip->fs;
	uint32_t n = ip->dnext, fsz = ip->forkoff ? (uint32_t)ip->forkoff * 8u : ip->litsize;
	struct mfs_alloc_args a = {
		.type = MFS_ALLOC_NEAR, .target = mfs_ino_to_fsb(&fs->geo, ip->ino),
		.minlen = 1, .maxlen = 1, .owner = ip->ino, .offset = MFS_RMAP_BMBT_BLOCK,
	};
	struct mfs_bmbt_rec *saved;
	struct mfs_fork_root fr;
	struct mfs_btree_cur cur;
	struct mfs_buf *bp;
	int err;

	if ((uint64_t)data_used(ip) + need <= ip->litsize)
		return 0;
	if (S_ISDIR(ip->mode) && ip->dformat == MFS_FMT_LOCAL &&
	    sizeof(struct mfs_dir_root) + need <= ip->litsize)
		return mfs_dir_to_btree(tp, ip);
	if (!S_ISREG(ip->mode) || ip->dformat != MFS_FMT_EXTENTS ||
	    (uint64_t)ROOT_SIZE + need > ip->litsize)
		return -ENOSPC;
	if ((uint64_t)n * sizeof(*saved) > fsz)
		return MFS_CORRUPT("inode %llu: %u extents inline in a %u-byte data fork",
				   ULL(ip->ino), n, fsz);
	saved = mfs_malloc(n * sizeof(*saved) + 1);
	if (!saved)
		return -ENOMEM;
	memcpy(saved, ip->lit, n * sizeof(*saved));
	err = mfs_alloc_extent(tp, &a);
	if (err)
		goto out;
	ip->nblocks++;
	err = mfs_trans_get_new(tp, a.fsb, 1, &bp);
	if (err)
		goto out;
	mfs_blk_init(bp->data, fs->geo.blocksize, MFS_BMBT_MAGIC, a.fsb, ip->ino, fs->geo.uuid);
	memset(ip->lit, 0, fsz);
	memset(&fr, 0, sizeof(fr));
	mfs_put64(fr.rootblock, a.fsb);
	mfs_put32(fr.levels, 1);
	memcpy(ip->lit, &fr, sizeof(fr));
	ip->dformat = MFS_FMT_BTREE;
	ip->dnext = 1;
	err = mfs_bmbt_cur_init(&cur, tp, ip);
	if (err)
		goto out;
	for (uint32_t i = 0; i < n && !err; i++) {
		err = mfs_bmbt_check_rec(fs, ip->ino, &saved[i]);
		if (!err)
			err = mfs_btree_insert(&cur, &saved[i]);
		if (err == -EEXIST)
			err = MFS_CORRUPT("inode %llu: inline extent %u repeats a file offset",
					  ULL(ip->ino), i);
	}
	mfs_btree_cur_release(&cur);
out:
	free(saved);
	return err;
}

/* ---- public operations -------------------------------------------------------------------- */
int mfs_xattr_get(struct mfs_inode *ip, unsigned ns, const char *name, unsigned len,
		  void *buf, size_t bufsize, size_t *valuelen)
{
	int err = name_check(ns, name, len);

	if (!err)
		err = fork_ok(ip);
	if (err)
		return err;
	if (ip->aformat != MFS_FMT_BTREE) {
		struct lfind f = { .ns = ns, .len = len, .name = name };
		uint32_t used;

		err = local_find(ip, &f, &used);
		if (err)
			return err;
		if (!f.found)
			return -ENODATA;
		if (valuelen)
			*valuelen = f.e.valuelen;
		if (bufsize == 0)
			return 0;
		if (bufsize < f.e.valuelen)
			return -ERANGE;
		if (f.e.valuelen)
			memcpy(buf, f.e.value, f.e.valuelen);
		return 0;
	} else {
		struct mfs_btree_cur cur;
		struct bfind f;
		struct xent *x = mfs_malloc(sizeof(*x));

		if (!x)
			return -ENOMEM;
		err = bt_cur(ip, NULL, &cur);
		if (!err) {
			err = bt_find(&cur, ip, ns, name, len, &f, x);
			mfs_btree_cur_release(&cur);
		}
		if (!err && !f.found)
			err = -ENODATA;
		if (!err && valuelen)
			*valuelen = x->valuelen;
		if (!err && bufsize) {
			if (bufsize < x->valuelen)
				err = -ERANGE;
			else if (x->flags & MFS_XATTR_REMOTE)
				err = remote_read(ip, x, buf);
			else if (x->valuelen)
				memcpy(buf, x->s + x->namelen, x->valuelen);
		}
		free(x);
		return err;
	}
}

/* Set in the local fork: 0 done, 1 does not fit inline (nothing changed). */
static int local_set(struct mfs_inode *ip, unsigned ns, const char *name, unsigned len,
		     const void *value, uint32_t vlen, int flags)
{
	struct lfind f = { .ns = ns, .len = len, .name = name };
	uint32_t used, nused, count;
	uint8_t *img;
	int err = local_find(ip, &f, &used);

	if (err)
		return err;
	if (f.found && (flags & XATTR_CREATE))
		return -EEXIST;
	if (!f.found && (flags & XATTR_REPLACE))
		return -ENODATA;
	if (vlen > 0xffffu)
		return 1;
	nused = used - (f.found ? f.e.size : 0) + LENT_SIZE(len, vlen);
	if (!local_fits(ip, nused))
		return 1;
	img = mfs_calloc(1, ip->litsize);
	if (!img)
		return -ENOMEM;
	count = ip->aformat == MFS_FMT_LOCAL ? ip->anext : 0;
	if (f.found) {
		memcpy(img, afork(ip), f.e.off);
		memcpy(img + f.e.off, afork(ip) + f.e.off + f.e.size, used - f.e.off - f.e.size);
		count--;
	} else if (used) {
		memcpy(img, afork(ip), used);
	}
	lent_put(img + nused - LENT_SIZE(len, vlen), ns, name, len, value, vlen);
	local_install(ip, img, nused, count + 1);
	free(img);
	return 0;
}

static int bt_set(struct mfs_trans *tp, struct mfs_inode *ip, unsigned ns, const char *name,
		  unsigned len, const void *value, uint32_t vlen, int flags)
{
	struct mfs_btree_cur cur;
	struct bfind f;
	struct xent *x = mfs_malloc(sizeof(*x));
	uint32_t seq;
	int err;

	if (!x)
		return -ENOMEM;
	err = bt_cur(ip, tp, &cur);
	if (err)
		goto out_free;
	err = bt_find(&cur, ip, ns, name, len, &f, x);
	if (err)
		goto out;
	if (f.found && (flags & XATTR_CREATE)) {
		err = -EEXIST;
		goto out;
	}
	if (!f.found && (flags & XATTR_REPLACE)) {
		err = -ENODATA;
		goto out;
	}
	if (f.found) {
		seq = x->seq;
		err = bt_delete(&cur, ip, x);
	} else {
		seq = f.free_seq;
		if (seq > MFS_XATTR_SEQ_MAX)
			err = -ENOSPC;
	}
	if (!err)
		err = bt_insert(&cur, ip, ns, xhash(ip, name, len), seq, name, len, value, vlen);
out:
	mfs_btree_cur_release(&cur);
out_free:
	free(x);
	return err;
}

int mfs_xattr_set(struct mfs_trans *tp, struct mfs_inode *ip, unsigned ns, const char *name,
		  unsigned len, const void *value, size_t vlen, int flags)
{
	int err = name_check(ns, name, len);

	if (err)
		return err;
	if (vlen > MFS_XATTR_SIZE_MAX)
		return -E2BIG;
	if ((flags & ~(XATTR_CREATE | XATTR_REPLACE)) ||
	    flags == (XATTR_CREATE | XATTR_REPLACE) || (vlen && !value))
		return -EINVAL;
	err = fork_ok(ip);
	if (!err)
		err = mfs_inode_lock_ag(tp, ip);
	if (err)
		return err;
	if (ip->aformat != MFS_FMT_BTREE) {
		err = local_set(ip, ns, name, len, value, (uint32_t)vlen, flags);
		if (err == 1) {
			/* not inline next to the data fork as it is: make room for at least the
			 * btree root, then try inline again (the data fork may now be smaller) */
			err = data_make_room(tp, ip, ROOT_SIZE);
			if (!err)
				err = local_set(ip, ns, name, len, value, (uint32_t)vlen, flags);
		}
		if (err <= 0)
			return err ? err : mfs_inode_log(tp, ip);
		err = convert_to_btree(tp, ip);
		if (err)
			return err;
	}
	err = bt_set(tp, ip, ns, name, len, value, (uint32_t)vlen, flags);
	if (!err)
		err = maybe_convert_to_local(tp, ip);
	if (!err)
		err = mfs_inode_log(tp, ip);
	return err;
}

int mfs_xattr_remove(struct mfs_trans *tp, struct mfs_inode *ip, unsigned ns,
		     const char *name, unsigned len)
{
	int err = name_check(ns, name, len);

	if (!err)
		err = fork_ok(ip);
	if (!err)
		err = mfs_inode_lock_ag(tp, ip);
	if (err)
		return err;
	if (ip->aformat != MFS_FMT_BTREE) {
		struct lfind f = { .ns = ns, .len = len, .name = name };
		uint32_t used;
		uint8_t *img;

		err = local_find(ip, &f, &used);
		if (err)
			return err;
		if (!f.found)
			return -ENODATA;
		img = mfs_calloc(1, ip->litsize);
		if (!img)
			return -ENOMEM;
		memcpy(img, afork(ip), f.e.off);
		memcpy(img + f.e.off, afork(ip) + f.e.off + f.e.size, used - f.e.off - f.e.size);
		local_install(ip, img, used - f.e.size, ip->anext - 1);
		free(img);
	} else {
		struct mfs_btree_cur cur;
		struct bfind f;
		struct xent *x = mfs_malloc(sizeof(*x));

		if (!x)
			return -ENOMEM;
		err = bt_cur(ip, tp, &cur);
		if (!err) {
			err = bt_find(&cur, ip, ns, name, len, &f, x);
			if (!err && !f.found)
				err = -ENODATA;
			if (!err)
				err = bt_delete(&cur, ip, x);
			mfs_btree_cur_release(&cur);
		}
		free(x);
		if (!err)
			err = maybe_convert_to_local(tp, ip);
		if (err)
			return err;
	}
	return mfs_inode_log(tp, ip);
}

/* ---- listing ------------------------------------------------------------------------------ */
struct list_ctx {
	mfs_xattr_list_fn fn;
	void *priv;
};

static int list_local_fn(const struct lent *e, void *priv)
{
	struct list_ctx *l = priv;

	return l->fn(l->priv, e->ns, (const char *)e->name, e->namelen, e->valuelen);
}

static int list_bt_emit(struct asm_state *s, const struct xent *e)
{
	struct list_ctx *l = s->priv;

	return l->fn(l->priv, e->ns, (const char *)e->s, e->namelen, e->valuelen);
}

int mfs_xattr_list(struct mfs_inode *ip, mfs_xattr_list_fn fn, void *priv)
{
	struct list_ctx l = { fn, priv };
	int err = fork_ok(ip);

	if (err)
		return err;
	if (ip->aformat == MFS_FMT_NONE)
		return 0;
	if (ip->aformat == MFS_FMT_LOCAL) {
		return local_walk(ip, afork(ip), asize(ip), ip->anext, list_local_fn, &l, NULL);
	} else {
		struct mfs_btree_cur cur;
		struct asm_state *s = mfs_calloc(1, sizeof(*s));

		if (!s)
			return -ENOMEM;
		s->ip = ip;
		s->emit = list_bt_emit;
		s->priv = &l;
		err = bt_cur(ip, NULL, &cur);
		if (!err) {
			err = bt_walk(&cur, s, 0, ~0ull);
			mfs_btree_cur_release(&cur);
		}
		free(s);
		return err;
	}
}

/* ---- freeing the whole fork --------------------------------------------------------------- */
static int first_emit(struct asm_state *s, const struct xent *e)
{
	*(struct xent *)s->priv = *e;
	return 1;
}

int mfs_xattr_free_all(struct mfs_trans *tp, struct mfs_inode *ip)
{
	struct mfs_btree_cur cur;
	struct asm_state *s;
	struct xent *x;
	unsigned done = 0;
	int err = fork_ok(ip);

	if (!err)
		err = mfs_inode_lock_ag(tp, ip);
	if (err)
		return err;
	if (ip->aformat != MFS_FMT_BTREE) {
		if (ip->aformat == MFS_FMT_NONE)
			return 0;
		set_fork(ip, MFS_FMT_NONE, 0, NULL, 0, 0);
		return mfs_inode_log(tp, ip);
	}
	s = mfs_calloc(1, sizeof(*s));
	x = mfs_malloc(sizeof(*x));
	if (!s || !x) {
		err = -ENOMEM;
		goto out_free;
	}
	err = bt_cur(ip, tp, &cur);
	if (err)
		goto out_free;
	for (;;) {
		memset(s, 0, sizeof(*s));
		s->ip = ip;
		s->emit = first_emit;
		s->priv = x;
		err = bt_walk(&cur, s, 0, ~0ull);
		if (err <= 0)
			break;          /* 0: the tree is empty */
		if (done == MFS_XATTR_FREE_PER_CALL) {
			err = 1;
			break;
		}
		err = bt_delete(&cur, ip, x);
		if (err)
			break;
		done++;
	}
	mfs_btree_cur_release(&cur);
	if (err == 0) {
		/* empty: only the root leaf is left */
		struct mfs_fork_root fr;
		uint64_t fsb;

		memcpy(&fr, afork(ip), sizeof(fr));
		fsb = mfs_get64(fr.rootblock);
		if (ip->anext != 1 || ip->nblocks == 0)
			err = MFS_CORRUPT("inode %llu: empty attribute btree of %u levels, %llu "
					  "blocks counted", ULL(ip->ino), ip->anext,
					  ULL(ip->nblocks));
		if (!err)
			err = mfs_free_extent(tp, fsb, 1, ip->ino,
					      MFS_RMAP_ATTR_FORK | MFS_RMAP_BMBT_BLOCK);
		if (!err)
			err = mfs_trans_forget(tp, fsb);
		if (!err) {
			ip->nblocks--;
			set_fork(ip, MFS_FMT_NONE, 0, NULL, 0, 0);
		}
	}
	if (err >= 0) {
		int lerr = mfs_inode_log(tp, ip);

		if (lerr)
			err = lerr;
	}
out_free:
	free(s);
	free(x);
	return err;
}

/* ---- names -------------------------------------------------------------------------------- */
static const char *const ns_prefix[MFS_XATTR_NS_MAX + 1] = {
	[MFS_XATTR_NS_USER] = "user.",
	[MFS_XATTR_NS_TRUSTED] = "trusted.",
	[MFS_XATTR_NS_SECURITY] = "security.",
	[MFS_XATTR_NS_SYSTEM] = "system.",
};

const char *mfs_xattr_ns_prefix(unsigned ns)
{
	return ns >= 1 && ns <= MFS_XATTR_NS_MAX ? ns_prefix[ns] : NULL;
}

int mfs_xattr_parse_name(const char *full, unsigned *ns, const char **name)
{
	for (unsigned i = 1; i <= MFS_XATTR_NS_MAX; i++) {
		size_t pl = strlen(ns_prefix[i]);
		const char *n;
		size_t len;

		if (strncmp(full, ns_prefix[i], pl))
			continue;
		n = full + pl;
		len = strlen(n);
		if (len == 0)
			return -EINVAL;
		if (len > MFS_XATTR_NAME_MAX)
			return -ERANGE;
		if (i == MFS_XATTR_NS_SYSTEM && strcmp(n, "posix_acl_access") &&
		    strcmp(n, "posix_acl_default"))
			return -EOPNOTSUPP;
		*ns = i;
		*name = n;
		return 0;
	}
	return -EOPNOTSUPP;
}

/* ---- full check --------------------------------------------------------------------------- */
struct chk {
	struct mfs_inode *ip;
	uint64_t count, blocks;
	uint8_t *vbuf;              /* MFS_XATTR_SIZE_MAX bytes for remote values */
	/* names of the current (ns, hash) chain, to find duplicates */
	uint64_t chain;
	int have_chain;
	uint8_t (*names)[MFS_XATTR_NAME_MAX + 1];
	size_t nnames, cap;
};

static int chk_dup(struct chk *k, uint64_t chain, uint64_t id, const uint8_t *name,
		   unsigned len)
{
	if (!k->have_chain || chain != k->chain) {
		k->nnames = 0;
		k->chain = chain;
		k->have_chain = 1;
	}
	for (size_t i = 0; i < k->nnames; i++)
		if (k->names[i][0] == len && !memcmp(k->names[i] + 1, name, len))
			return MFS_CORRUPT("inode %llu: attribute 0x%llx: its name appears twice",
					   ULL(k->ip->ino), ULL(id));
	if (k->nnames == k->cap) {
		size_t nc = k->cap ? 2 * k->cap : 16;
		void *nv = mfs_realloc(k->names, nc * sizeof(*k->names));

		if (!nv)
			return -ENOMEM;
		k->names = nv;
		k->cap = nc;
	}
	k->names[k->nnames][0] = (uint8_t)len;
	memcpy(k->names[k->nnames] + 1, name, len);
	k->nnames++;
	return 0;
}

static int chk_emit(struct asm_state *s, const struct xent *e)
{
	struct chk *k = s->priv;
	int err = chk_dup(k, e->key0 >> 24, e->key0, e->s, e->namelen);

	if (!err && (e->flags & MFS_XATTR_REMOTE)) {
		err = remote_read(k->ip, e, k->vbuf);
		k->blocks += vblocks_for(k->ip->fs, e->valuelen);
	}
	k->count++;
	return err;
}

/* Local forks are small: each entry against every later one. */
static int chk_local(struct chk *k)
{
	struct mfs_inode *ip = k->ip;
	uint32_t cap = asize(ip), off = 0;
	int err = 0;

	for (uint32_t i = 0; !err && i < ip->anext; i++) {
		struct lent a, b;
		uint32_t o2;

		err = local_get(ip, afork(ip), cap, off, &a);
		o2 = off + (err ? 0 : a.size);
		for (uint32_t j = i + 1; !err && j < ip->anext; j++) {
			err = local_get(ip, afork(ip), cap, o2, &b);
			if (!err && a.ns == b.ns && a.namelen == b.namelen &&
			    !memcmp(a.name, b.name, a.namelen))
				err = MFS_CORRUPT("inode %llu: inline attributes at bytes %u and %u "
						  "have the same name", ULL(ip->ino), off, o2);
			o2 += err ? 0 : b.size;
		}
		off += err ? 0 : a.size;
		k->count++;
	}
	if (!err && ip->anext == 0)
		err = MFS_CORRUPT("inode %llu: inline attribute fork with no entry", ULL(ip->ino));
	/* the fork is exactly as large as its entries need, and zero after them */
	if (!err && cap != ROUND8(off))
		err = MFS_CORRUPT("inode %llu: inline attribute fork of %u bytes, its entries need "
				  "%u", ULL(ip->ino), cap, ROUND8(off));
	for (uint32_t i = off; !err && i < cap; i++)
		if (afork(ip)[i])
			err = MFS_CORRUPT("inode %llu: inline attribute fork has a nonzero byte at %u, "
					  "after its last entry", ULL(ip->ino), i);
	return err;
}

int mfs_xattr_check(struct mfs_inode *ip, uint64_t *nblocks, uint64_t *count)
{
	struct chk k;
	int err = fork_ok(ip);

	if (err)
		return err;
	memset(&k, 0, sizeof(k));
	k.ip = ip;
	if (ip->aformat == MFS_FMT_LOCAL) {
		err = chk_local(&k);
	} else if (ip->aformat == MFS_FMT_BTREE) {
		struct mfs_btree_cur cur;
		struct asm_state *s = mfs_calloc(1, sizeof(*s));
		uint64_t nblk = 0;

		k.vbuf = mfs_malloc(MFS_XATTR_SIZE_MAX);
		if (!s || !k.vbuf) {
			free(s);
			free(k.vbuf);
			return -ENOMEM;
		}
		err = bt_cur(ip, NULL, &cur);
		if (!err) {
			err = mfs_btree_verify(&cur, NULL, &nblk);
			if (!err) {
				s->ip = ip;
				s->emit = chk_emit;
				s->priv = &k;
				err = bt_walk(&cur, s, 0, ~0ull);
			}
			mfs_btree_cur_release(&cur);
		}
		k.blocks += nblk;
		free(s);
		free(k.vbuf);
		if (!err && ip->nblocks < k.blocks)
			err = MFS_CORRUPT("inode %llu: counts %llu blocks, its attribute fork alone "
					  "owns %llu", ULL(ip->ino), ULL(ip->nblocks),
					  ULL(k.blocks));
	}
	free(k.names);
	if (err)
		return err;
	if (nblocks)
		*nblocks = k.blocks;
	if (count)
		*count = k.count;
	return 0;
}
