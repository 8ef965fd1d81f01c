/*
 * repair_xattr.c — the extended-attribute rebuilder (MFS_SCRUB_XATTR): an inode's attribute
 * fork rebuilt online from the attributes that can still be read, in one transaction under
 * the inode's exclusive lock.
 *
 *   1. count, then gather from the reverse map, every block of the attribute fork (btree
 *      blocks and value blocks: also those a damaged node no longer reaches);
 *   2. salvage: the inline entries up to the first that does not decode (from the one
 *      offset where they parse to the count, when the fork offset frames them wrongly:
 *      repair_ilit.h); the records of every attribute-btree block that still verifies as
 *      a leaf of this inode (raw into a scratch array, sorted by key, heads joined with
 *      their continuations), a remote value read from its value blocks and kept only when
 *      they verify and its CRC matches.  An attribute is kept when its namespace is
 *      known, its name 1..255 bytes without NUL and its value at most 64 KiB.  Keys
 *      (namespace, hash, value length, blob cookie) go to a scratch array, each name and
 *      value to one xblob entry, both in the client's descriptor;
 *   3. sort by (namespace, hash); one transaction frees every old block of the fork, drops
 *      the fork (the data fork gets the literal area back), sets each kept attribute again
 *      through lib/xattr.c (inline while they fit next to the data fork, else a new
 *      attribute btree and value blocks in new blocks), sets the block count and commits.
 *
 * An attribute whose record or value block is lost is gone; the file's data and names are
 * not touched.
 */
#include "repair_ilit.h"
#include "repair_priv.h"

#include "bcache.h"
#include "byteorder.h"
#include "crc32c.h"
#include "dir.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "mem.h"
#include "trans.h"
#include "verify.h"
#include "xattr.h"
#include "xblob.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define STREAM_MAX   (MFS_XATTR_NAME_MAX + MFS_XATTR_INREC_MAX)
#define ENTRY_MAX    (2u + MFS_XATTR_NAME_MAX + MFS_XATTR_SIZE_MAX)   /* one blob */

/* One kept attribute (scratch record; the cookie is never 0). */
struct xkeep {
	uint64_t blob;              /* [ns][namelen][name][value] */
	uint32_t hash;
	uint32_t vlen;
	uint8_t ns, namelen;
	uint8_t pad[6];
};

struct xrep {
	struct rep *r;
	struct mfs_inode *ip;
	struct rep_iscratch s;      /* old extents, raw records, kept keys, names+values */
	uint8_t *buf;               /* ENTRY_MAX bytes: the entry being kept */
	uint32_t afrom;             /* first byte of the literal area the old fork used */
	uint64_t kept, lost, unreadable;
};

static unsigned long long ULL(uint64_t v)
{
	return (unsigned long long)v;
}

static int want_attr(uint64_t off)
{
	return (off & MFS_RMAP_ATTR_FORK) != 0;
}

static int want_attr_tree(uint64_t off)
{
	return (off & MFS_RMAP_ATTR_FORK) && (off & MFS_RMAP_BMBT_BLOCK);
}

/* Keep one attribute whose value is in x->buf + 2 + len, or count it lost. */
static int keep(struct xrep *x, unsigned ns, const uint8_t *name, unsigned len, uint32_t vlen)
{
	struct xkeep k;
	int err;

	if (ns < 1 || ns > MFS_XATTR_NS_MAX || len == 0 || len > MFS_XATTR_NAME_MAX ||
	    memchr(name, 0, len) || vlen > MFS_XATTR_SIZE_MAX) {
		x->lost++;
		return 0;
	}
	x->buf[0] = (uint8_t)ns;
	x->buf[1] = (uint8_t)len;
	memmove(x->buf + 2, name, len);
	memset(&k, 0, sizeof(k));
	k.ns = (uint8_t)ns;
	k.namelen = (uint8_t)len;
	k.vlen = vlen;
	k.hash = mfs_dir_hash(x->ip->fs->geo.uuid, (const char *)name, len);
	err = mfs_xblob_store(x->s.blob, x->buf, 2u + len + vlen, &k.blob);
	if (!err)
		err = mfs_xfarray_append(x->s.keep, &k, NULL);
	if (err)
		return rep_scratch_err(x->r, err, "storing a salvaged attribute");
	x->kept++;
	return 0;
}

/* ---- inline entries ----------------------------------------------------------------------- */
/*
 * A fork offset one unit off still loads (the data fork fits either way) but frames the
 * entries wrongly.  When they do not parse to the count where the offset says, the one
 * offset where they do (repair_ilit.h, as the inode record rebuild searches) is where
 * they are salvaged from; the old fork is taken to begin at the lower of the two.
 */
static int salvage_local(struct xrep *x)
{
	struct mfs_inode *ip = x->ip;
	uint32_t base = (uint32_t)ip->forkoff * 8u, cap, off = 0, nfo;
	int err = 0;

	if (!ip->forkoff || base >= ip->litsize) {
		x->lost += ip->anext;
		return 0;
	}
	if (rep_local_attrs_count(ip->lit, ip->litsize, base) != (long)ip->anext &&
	    (nfo = rep_local_attrs_find(ip->lit, ip->litsize, ip->dformat, ip->dnext, ip->size,
					ip->anext)) != 0 && nfo != ip->forkoff) {
		mfs_log(MFS_LOG_WARN, "repair: inode %llu: its inline attributes found at offset "
			"%u (the fork offset said %u)", ULL(ip->ino), nfo, ip->forkoff);
		base = nfo * 8u;
		if (base < x->afrom)
			x->afrom = base;
	}
	cap = ip->litsize - base;
	for (uint32_t i = 0; i < ip->anext && !err; i++) {
		const uint8_t *p = ip->lit + base + off;
		unsigned len = 0;
		uint32_t vlen = 0;

		if (off + sizeof(struct mfs_xattr_lent) <= cap) {
			len = p[1];
			vlen = (uint32_t)p[2] | (uint32_t)p[3] << 8;
		}
		if (len == 0 || off + sizeof(struct mfs_xattr_lent) + len + vlen > cap) {
			x->lost += ip->anext - i;   /* the rest cannot be decoded */
			break;
		}
		memcpy(x->buf + 2 + len, p + sizeof(struct mfs_xattr_lent) + len, vlen);
		err = keep(x, p[0], p + sizeof(struct mfs_xattr_lent), len, vlen);
		off += (uint32_t)sizeof(struct mfs_xattr_lent) + len + vlen;
	}
	return err;
}

/* ---- the attribute btree's leaves ---------------------------------------------------------- */
/* A remote value (descriptor at desc) into x->buf + off: 0, or 1 when it cannot be read. */
static int read_remote(struct xrep *x, uint64_t key0, const uint8_t *desc, uint32_t vlen,
		       uint32_t off)
{
	struct mfs_fs *fs = x->ip->fs;
	uint32_t per = fs->geo.blocksize - (uint32_t)sizeof(struct mfs_xattr_vblk), n, crc;
	struct mfs_blk_expect ex = { MFS_XATTRV_MAGIC, x->ip->ino, MFS_LEVEL_ANY,
				     "attribute value block" };
	struct mfs_xattr_remote rd;
	uint64_t fsb;

	memcpy(&rd, desc, sizeof(rd));
	fsb = mfs_get64(rd.fsblock);
	n = mfs_get32(rd.blocks);
	crc = mfs_get32(rd.crc);
	if (n != (vlen + per - 1) / per || fsb >= fs->geo.dblocks || n > fs->geo.dblocks - fsb)
		return 1;
	for (uint32_t i = 0; i < n; i++) {
		const struct mfs_xattr_vblk *h;
		uint32_t at = i * per, want = vlen - at < per ? vlen - at : per;
		struct mfs_buf *bp;
		int bad;

		if (mfs_buf_read(fs->bc, fsb + i, &ex, &bp))
			return 1;
		h = bp->data;
		bad = mfs_get64(h->key) != key0 || mfs_get32(h->offset) != at ||
		      mfs_get32(h->bytes) != want;
		if (!bad)
			memcpy(x->buf + off + at, h + 1, want);
		mfs_buf_put(bp);
		if (bad)
			return 1;
	}
	return mfs_crc32c(0, x->buf + off, vlen) != crc;
}

/* A complete entry (stream s of slen bytes) found in the btree. */
static int btree_entry(struct xrep *x, uint64_t key0, const struct mfs_xattr_rec *h,
		       const uint8_t *s)
{
	unsigned len = h->namelen;
	uint32_t vlen = mfs_get32(h->valuelen);

	if (vlen > MFS_XATTR_SIZE_MAX || len == 0 ||
	    !!(h->flags & MFS_XATTR_REMOTE) != (vlen > MFS_XATTR_INREC_MAX)) {
		x->lost++;
		return 0;
	}
	if (vlen > MFS_XATTR_INREC_MAX) {
		if (read_remote(x, key0, s + len, vlen, 2u + len)) {
			x->lost++;
			return 0;
		}
	} else {
		memcpy(x->buf + 2 + len, s + len, vlen);
	}
	return keep(x, (unsigned)(key0 >> 56), s, len, vlen);
}

static unsigned stream_parts(unsigned slen)
{
	if (slen <= MFS_XATTR_HEAD_DATA)
		return 1;
	return 1 + (slen - MFS_XATTR_HEAD_DATA + MFS_XATTR_CONT_DATA - 1) / MFS_XATTR_CONT_DATA;
}

static int salvage_btree(struct xrep *x)
{
	uint8_t rec[MFS_XATTR_REC_SIZE], s[STREAM_MAX + MFS_XATTR_CONT_DATA];
	struct mfs_xattr_rec head;
	unsigned parts = 0, next = 0, slen = 0;
	uint64_t cursor = 0, key0 = 0;
	int pending = 0, err;

	err = rep_inode_leaves(x->r, x->ip, x->s.old, want_attr_tree, MFS_XATTRBT_MAGIC,
			       MFS_XATTR_REC_SIZE, "attribute btree", x->s.raw, &x->unreadable);
	if (!err)
		err = rep_sort(x->r, x->s.raw, rep_cmp_le64, "sorting attribute records");
	if (err)
		return err;
	while ((err = mfs_xfarray_iter(x->s.raw, &cursor, rec, NULL)) == 1) {
		uint64_t key;

		memcpy(&key, rec, 8);
		key = mfs_get64(key);
		if ((key & 0xff) == 0) {
			uint32_t vlen;

			if (pending)
				x->lost++;
			memcpy(&head, rec, sizeof(head));
			vlen = mfs_get32(head.valuelen);
			slen = head.namelen + (vlen > MFS_XATTR_INREC_MAX ?
					       (unsigned)sizeof(struct mfs_xattr_remote) : vlen);
			pending = head.namelen != 0 && slen <= STREAM_MAX;
			if (!pending) {
				x->lost++;
				continue;
			}
			key0 = key;
			parts = stream_parts(slen);
			next = 1;
			memcpy(s, head.data, MFS_XATTR_HEAD_DATA);
		} else if (pending && (key & ~0xffull) == key0 && (key & 0xff) == next) {
			memcpy(s + MFS_XATTR_HEAD_DATA + (next - 1) * MFS_XATTR_CONT_DATA, rec + 8,
			       MFS_XATTR_CONT_DATA);
			next++;
		} else {
			if (pending)
				x->lost++;
			pending = 0;
			continue;
		}
		if (pending && next == parts) {
			pending = 0;
			err = btree_entry(x, key0, &head, s);
			if (err)
				return err;
		}
	}
	if (err < 0)
		return rep_scratch_err(x->r, err, "reading attribute records back");
	if (pending)
		x->lost++;
	return 0;
}

/* ---- the new fork ---------------------------------------------------------------------------- */
static int cmp_keep(const void *a, const void *b, void *priv)
{
	const struct xkeep *p = a, *q = b;

	(void)priv;
	if (p->ns != q->ns)
		return p->ns < q->ns ? -1 : 1;
	if (p->hash != q->hash)
		return p->hash < q->hash ? -1 : 1;
	return p->blob < q->blob ? -1 : p->blob > q->blob;
}

static int build(struct xrep *x, const struct rep_iblocks *nb)
{
	struct rep *r = x->r;
	struct mfs_inode *ip = x->ip;
	uint32_t per = r->fs->geo.blocksize - (uint32_t)sizeof(struct mfs_xattr_vblk);
	uint64_t cursor = 0, dups = 0, n = 0, vblocks = 0, recs = 0;
	struct mfs_trans *tp;
	struct xkeep k;
	int err;

	while ((err = mfs_xfarray_iter(x->s.keep, &cursor, &k, NULL)) == 1) {
		recs += 1 + (k.namelen + (k.vlen > MFS_XATTR_INREC_MAX ? 16 : k.vlen)) /
			    MFS_XATTR_CONT_DATA;
		if (k.vlen > MFS_XATTR_INREC_MAX)
			vblocks += (k.vlen + per - 1) / per;
	}
	if (err < 0)
		return rep_scratch_err(r, err, "reading the kept attributes back");
	err = rep_inode_log_fits(r, ip, vblocks + 2 * recs * MFS_XATTR_REC_SIZE /
				 r->fs->geo.blocksize + 8, nb->attr, "attribute fork");
	if (!err)
		err = rep_inode_trans(r, ip, x->s.old, &tp);
	if (err)
		return err;
	err = rep_inode_free(r, tp, ip, x->s.old);
	if (err)
		goto cancel;
	/* No attribute fork: the data fork gets the literal area back (from where the old
	 * fork's bytes began: salvage_local may have found them before the offset). */
	if (x->afrom < ip->litsize)
		memset(ip->lit + x->afrom, 0, ip->litsize - x->afrom);
	ip->forkoff = 0;
	ip->aformat = MFS_FMT_NONE;
	ip->anext = 0;
	ip->nblocks = nb->data + nb->data_bt;
	cursor = 0;
	while ((err = mfs_xfarray_iter(x->s.keep, &cursor, &k, NULL)) == 1) {
		size_t got;

		if (++n % 64 == 0 && (err = rep_poll(r)) != 0)
			break;
		err = mfs_xblob_load(x->s.blob, k.blob, x->buf, ENTRY_MAX, &got);
		if (err) {
			err = rep_scratch_err(r, err, "loading a salvaged attribute");
			break;
		}
		err = mfs_xattr_set(tp, ip, k.ns, (const char *)x->buf + 2, k.namelen,
				    x->buf + 2 + k.namelen, k.vlen, XATTR_CREATE);
		if (err == -EEXIST) {
			dups++;             /* the same name twice: the first one stays */
			err = 0;
		}
		if (err) {
			rep_fail(r, err, "inode %llu: setting a salvaged attribute: %s",
				 ULL(ip->ino), strerror(-err));
			break;
		}
	}
	if (err < 0)
		goto cancel;
	x->kept -= dups;
	x->lost += dups;
	return rep_inode_commit(r, tp, ip, "attribute fork");
cancel:
	rep_inode_cancel(tp, ip);
	return err;
}

int rep_xattr(struct rep *r)
{
	struct xrep *x = mfs_calloc(1, sizeof(*x));
	struct rep_iblocks nb;
	uint64_t nrec, nent, blob;
	uint32_t per_leaf;
	int err, inline_fork;

	if (!x)
		return rep_fail(r, -ENOMEM, "no memory for the attribute rebuild");
	x->r = r;
	x->buf = mfs_malloc(ENTRY_MAX);
	if (!x->buf) {
		err = rep_fail(r, -ENOMEM, "no memory for the attribute rebuild");
		goto out;
	}
	err = rep_inode_take(r, 0, "inode", &x->ip);
	if (err || !x->ip)
		goto out;
	x->afrom = x->ip->forkoff ? (uint32_t)x->ip->forkoff * 8u : x->ip->litsize;
	/* No attribute fork, or an inline one, owns no block: the inode's are the data fork's. */
	inline_fork = x->ip->aformat == MFS_FMT_NONE || x->ip->aformat == MFS_FMT_LOCAL;
	memset(&nb, 0, sizeof(nb));
	nb.data = x->ip->nblocks;
	err = inline_fork ? 0 : rep_inode_rmap(r, x->ip->ino, want_attr, NULL, &nb);
	if (err)
		goto out;
	per_leaf = (r->fs->geo.blocksize - (uint32_t)sizeof(struct mfs_btree_block)) /
		   MFS_XATTR_REC_SIZE;
	nrec = nb.attr * per_leaf + 1;
	nent = nrec + x->ip->litsize / 5 + 1;
	/* Every byte the fork holds, twice over (power-of-two slots), a slot header each. */
	blob = 2 * ((uint64_t)nb.attr * r->fs->geo.blocksize + x->ip->litsize) + nent * 128 +
	       (1u << 18);
	err = rep_inode_scratch(r, x->ip, inline_fork ? NULL : want_attr, &nb, nrec,
				MFS_XATTR_REC_SIZE, nent,
				sizeof(struct xkeep), blob, &x->s);
	if (err)
		goto out;
	if (x->ip->aformat == MFS_FMT_LOCAL)
		err = salvage_local(x);
	else if (x->ip->aformat != MFS_FMT_BTREE && x->ip->aformat != MFS_FMT_NONE)
		x->lost++;
	if (!err && nb.attr)
		err = salvage_btree(x);
	if (!err)
		err = rep_hook(r, MFS_REPAIR_AT_GATHERED);
	if (!err)
		err = rep_sort(r, x->s.keep, cmp_keep, "sorting the salvaged attributes");
	if (!err)
		err = build(x, &nb);
	if (err)
		goto out;
	r->rc->records = x->kept;
	if (x->lost || x->unreadable)
		mfs_log(MFS_LOG_WARN, "inode %llu attributes rebuilt: %llu kept, %llu lost, %llu "
			"unreadable blocks", ULL(x->ip->ino), ULL(x->kept), ULL(x->lost),
			ULL(x->unreadable));
out:
	rep_inode_scratch_done(&x->s);
	rep_inode_done(r, x->ip, !err);
	free(x->buf);
	free(x);
	return err;
}
