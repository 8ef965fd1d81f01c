/*
 * dir.c — directories (see dir.h; the format is in mendfs_format.h, "Directories").
 *
 * Two formats of the data fork:
 *
 *   local   [le64 parent][entry][entry]...   entries sorted by id = hash << 24 | seq,
 *           each struct mfs_dir_lent + name; dp->size bytes in use.
 *   btree   struct mfs_dir_root in the fork; a name btree of 48-byte records keyed by
 *           hash << 32 | seq << 8 | part.
 *
 * Invariants (checked by mfs_dir_check):
 *   - an entry's id (hash, seq) is unique in the directory and never changes while the
 *     entry lives — this is what keeps readdir cookies (id + 3) valid;
 *   - a name is stored at most once; names sharing a hash ("a collision chain") have
 *     distinct seqs, each taken as the lowest seq free in the chain when the entry was added;
 *   - in the btree, the head record (part 0) of an entry is followed directly by its
 *     continuation records 1 .. nparts-1, nparts = parts_for(namelen);
 *   - dp->size == 8 + sum(11 + namelen) in both formats; the btree root's count is the
 *     number of head records; dp->dnext == the tree's levels.
 *
 * A directory becomes a btree when an addition would make its local bytes exceed the data
 * fork, and goes back to local when, after a removal, its entries fit again and every seq is
 * below 256 (a local entry stores seq in one byte).
 */
#include "mem.h"
#include "dir.h"
#include "alloc.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "mendfs_format.h"
#include "trans.h"
#include "verify.h"

#include <dirent.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static uint32_t hash_mask = 0xffffffffu;

void mfs_dir_test_set_hash_mask(uint32_t mask)
{
	hash_mask = mask;
}

/* ---- the name hash: SipHash-2-4 keyed with the UUID, folded to 32 bits ------------------- */
static inline uint64_t rotl64(uint64_t x, unsigned b)
{
	return (x << b) | (x >> (64 - b));
}

static inline uint64_t load_le64(const uint8_t *p)
{
	uint64_t v;

	memcpy(&v, p, 8);
	return le64toh(v);
}

static inline void store_le64(uint8_t *p, uint64_t v)
{
	v = htole64(v);
	memcpy(p, &v, 8);
}

#define SIPROUND do { \
		v0 += v1; v1 = rotl64(v1, 13); v1 ^= v0; v0 = rotl64(v0, 32); \
		v2 += v3; v3 = rotl64(v3, 16); v3 ^= v2; \
		v0 += v3; v3 = rotl64(v3, 21); v3 ^= v0; \
		v2 += v1; v1 = rotl64(v1, 17); v1 ^= v2; v2 = rotl64(v2, 32); \
	} while (0)

/* SipHash-2-4 of `len` bytes under the 16-byte key `k`. */
static uint64_t siphash24(const uint8_t k[16], const uint8_t *m, size_t len)
{
	uint64_t k0 = load_le64(k), k1 = load_le64(k + 8);
	uint64_t v0 = k0 ^ 0x736f6d6570736575ull, v1 = k1 ^ 0x646f72616e646f6dull;
	uint64_t v2 = k0 ^ 0x6c7967656e657261ull, v3 = k1 ^ 0x7465646279746573ull;
	uint64_t b = (uint64_t)len << 56, t = 0;
	size_t i, full = len & ~(size_t)7;

	for (i = 0; i < full; i += 8) {
		uint64_t w = load_le64(m + i);

		v3 ^= w;
		SIPROUND;
		SIPROUND;
		v0 ^= w;
	}
	for (size_t j = 0; i + j < len; j++)
		t |= (uint64_t)m[i + j] << (8 * j);
	b |= t;
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

uint32_t mfs_dir_hash(const uint8_t uuid[16], const char *name, unsigned len)
{
	uint64_t h = siphash24(uuid, (const uint8_t *)name, len);

	return ((uint32_t)h ^ (uint32_t)(h >> 32)) & hash_mask;
}

static uint32_t dp_hash(const struct mfs_inode *dp, const void *name, unsigned len)
{
	return mfs_dir_hash(dp->fs->geo.uuid, name, len);
}

/* ---- small helpers -------------------------------------------------------------------------- */
#define KEY(hash, seq, part) ((uint64_t)(hash) << 32 | (uint64_t)(seq) << 8 | (part))
#define KEY_HASH(k)  ((uint32_t)((k) >> 32))
#define KEY_SEQ(k)   ((uint32_t)((k) >> 8) & MFS_DIR_SEQ_MAX)
#define KEY_PART(k)  ((unsigned)((k) & 0xff))
#define ID(hash, seq) ((uint64_t)(hash) << 24 | (seq))
#define LENT_SIZE(len) ((uint32_t)sizeof(struct mfs_dir_lent) + (len))

static unsigned parts_for(unsigned namelen)
{
	if (namelen <= MFS_DIR_HEAD_NAME)
		return 1;
	return 1 + (namelen - MFS_DIR_HEAD_NAME + MFS_DIR_CONT_NAME - 1) / MFS_DIR_CONT_NAME;
}

static int ftype_ok(unsigned t)
{
	return t == DT_FIFO || t == DT_CHR || t == DT_DIR || t == DT_BLK || t == DT_REG ||
	       t == DT_LNK || t == DT_SOCK;
}

static int name_bytes_ok(const uint8_t *p, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		if (p[i] == '/' || p[i] == 0)
			return 0;
	return 1;
}

static int is_dot(const char *n, unsigned len)
{
	return len == 1 && n[0] == '.';
}

static int is_dotdot(const char *n, unsigned len)
{
	return len == 2 && n[0] == '.' && n[1] == '.';
}

/* A name given by the caller: -ENAMETOOLONG first, then -EINVAL for empty, '/' or NUL. */
static int name_check(const char *name, unsigned len)
{
	if (len > MFS_NAME_MAX)
		return -ENAMETOOLONG;
	if (len == 0 || !name || !name_bytes_ok((const uint8_t *)name, len))
		return -EINVAL;
	return 0;
}

static int dir_ok(const struct mfs_inode *dp)
{
	return S_ISDIR(dp->mode) ? 0 : -ENOTDIR;
}

static uint32_t fork_size(const struct mfs_inode *dp)
{
	return dp->forkoff ? (uint32_t)dp->forkoff * 8u : dp->litsize;
}

static unsigned long long ULL(uint64_t v)
{
	return (unsigned long long)v;
}

/* ---- local format --------------------------------------------------------------------------- */
struct lent {
	uint32_t off;               /* of the entry in the fork */
	uint64_t ino;
	uint8_t ftype, namelen, seq;
	const uint8_t *name;
};

/* Check the local fork's bounds; *empty_root = 1 for the size-0 root that mkfs writes. */
static int local_check_size(const struct mfs_inode *dp)
{
	if (dp->size == 0) {
		if (dp->ino == dp->fs->geo.rootino)
			return 0;
		return MFS_CORRUPT("directory %llu: inline size 0 (only the root may have no "
				   "parent stored)", ULL(dp->ino));
	}
	if (dp->size < MFS_DIR_LOCAL_HDR || dp->size > fork_size(dp))
		return MFS_CORRUPT("directory %llu: inline size %llu outside %u..%u",
				   ULL(dp->ino), ULL(dp->size), MFS_DIR_LOCAL_HDR, fork_size(dp));
	return 0;
}

/* Decode the entry at `off` (MFS_DIR_LOCAL_HDR <= off < size), bounds-checked. */
static int local_get(const struct mfs_inode *dp, uint32_t off, struct lent *e)
{
	const uint8_t *p = dp->lit + off;
	uint32_t size = (uint32_t)dp->size;

	if (off + sizeof(struct mfs_dir_lent) > size)
		return MFS_CORRUPT("directory %llu: inline entry at byte %u overruns the size %u",
				   ULL(dp->ino), off, size);
	e->off = off;
	e->ino = load_le64(p);
	e->ftype = p[8];
	e->namelen = p[9];
	e->seq = p[10];
	e->name = p + sizeof(struct mfs_dir_lent);
	if (e->namelen == 0 || off + LENT_SIZE(e->namelen) > size)
		return MFS_CORRUPT("directory %llu: inline entry at byte %u has name length %u "
				   "(the directory ends at %u)", ULL(dp->ino), off, e->namelen,
				   size);
	return 0;
}

static uint64_t local_parent(const struct mfs_inode *dp)
{
	return dp->size == 0 ? dp->ino : load_le64(dp->lit);
}

/* Give the size-0 root its header. */
static void local_materialize(struct mfs_inode *dp)
{
	if (dp->size == 0) {
		memset(dp->lit, 0, fork_size(dp));
		store_le64(dp->lit, dp->ino);
		dp->size = MFS_DIR_LOCAL_HDR;
	}
}

/*
 * Find `name` in a local directory.  Returns 0 with *found and, when found, the entry.
 * Also computes, for an addition: *pos (byte offset where an entry of this name's id
 * goes) and *seq (the lowest seq free among entries of the same hash).
 */
static int local_find(const struct mfs_inode *dp, const char *name, unsigned len,
		      uint32_t hash, int *found, struct lent *out, uint32_t *pos, uint32_t *seq)
{
	uint8_t used[32];
	uint32_t off, end = dp->size ? (uint32_t)dp->size : MFS_DIR_LOCAL_HDR, s = 0;
	int err;

	*found = 0;
	memset(used, 0, sizeof(used));
	for (off = MFS_DIR_LOCAL_HDR; off < end; ) {
		struct lent e;

		err = local_get(dp, off, &e);
		if (err)
			return err;
		if (e.namelen == len && !memcmp(e.name, name, len)) {
			*found = 1;
			*out = e;
			return 0;
		}
		if (pos && dp_hash(dp, e.name, e.namelen) == hash)
			used[e.seq >> 3] |= (uint8_t)(1u << (e.seq & 7));
		off += LENT_SIZE(e.namelen);
	}
	if (!pos)
		return 0;
	while (s < 256 && (used[s >> 3] >> (s & 7) & 1))
		s++;
	*seq = s;
	/* the new entry goes before the first entry whose id is above (hash, s) */
	for (off = MFS_DIR_LOCAL_HDR; off < end; ) {
		struct lent e;

		err = local_get(dp, off, &e);
		if (err)
			return err;
		if (ID(dp_hash(dp, e.name, e.namelen), e.seq) > ID(hash, s))
			break;
		off += LENT_SIZE(e.namelen);
	}
	*pos = off;
	return 0;
}

static void local_put(uint8_t *p, uint64_t ino, uint8_t ftype, const char *name, unsigned len,
		      uint8_t seq)
{
	store_le64(p, ino);
	p[8] = ftype;
	p[9] = (uint8_t)len;
	p[10] = seq;
	memcpy(p + sizeof(struct mfs_dir_lent), name, len);
}

/* ---- the name btree ------------------------------------------------------------------------- */
static int dirbt_cmp(const void *k1, const void *k2)
{
	uint64_t a = load_le64(k1), b = load_le64(k2);

	return a < b ? -1 : a > b;
}

static void dirbt_rec_key(const void *rec, void *key)
{
	memcpy(key, rec, 8);
}

/* A record on its own; a short head's name hashed to its key when `hash`. */
static int dirbt_rec_sane(struct mfs_btree_cur *cur, const void *rec, int hash)
{
	struct mfs_inode *dp = cur->priv;
	const uint8_t *r = rec;
	uint64_t key = load_le64(r);
	unsigned part = KEY_PART(key);

	if (part >= MFS_DIR_MAX_PARTS)
		return MFS_CORRUPT("directory %llu name btree: record key 0x%llx has part %u "
				   "(at most %u)", ULL(dp->ino), ULL(key), part,
				   MFS_DIR_MAX_PARTS - 1);
	if (part == 0) {
		struct mfs_dir_rec h;
		unsigned n;

		memcpy(&h, rec, sizeof(h));
		n = h.namelen < MFS_DIR_HEAD_NAME ? h.namelen : MFS_DIR_HEAD_NAME;
		if (h.namelen == 0 || !name_bytes_ok(h.name, n))
			return MFS_CORRUPT("directory %llu name btree: entry 0x%llx has a name of "
					   "length %u with '/' or NUL or none", ULL(dp->ino),
					   ULL(key), h.namelen);
		for (unsigned i = n; i < MFS_DIR_HEAD_NAME; i++)
			if (h.name[i])
				return MFS_CORRUPT("directory %llu name btree: entry 0x%llx has "
						   "bytes after its %u-byte name", ULL(dp->ino),
						   ULL(key), h.namelen);
		if (mfs_get64(h.ino) == 0 || mfs_get64(h.ino) >= (1ull << 56) ||
		    !ftype_ok(h.ftype))
			return MFS_CORRUPT("directory %llu name btree: entry 0x%llx names inode "
					   "%llu of type %u", ULL(dp->ino), ULL(key),
					   ULL(mfs_get64(h.ino)), h.ftype);
		if (hash && h.namelen <= MFS_DIR_HEAD_NAME &&
		    dp_hash(dp, h.name, h.namelen) != KEY_HASH(key))
			return MFS_CORRUPT("directory %llu name btree: entry 0x%llx: the name hashes "
					   "to 0x%x, not 0x%x", ULL(dp->ino), ULL(key),
					   dp_hash(dp, h.name, h.namelen), KEY_HASH(key));
	}
	return 0;
}

static int dirbt_check_rec(struct mfs_btree_cur *cur, const void *rec)
{
	return dirbt_rec_sane(cur, rec, 1);
}

/* mfs_dir_check's: each head is hashed once, with its whole name, when the one-pass walk
 * assembles its entry (chk_entry); a head whose entry never completes fails the walk. */
static int dirbt_check_rec_nohash(struct mfs_btree_cur *cur, const void *rec)
{
	return dirbt_rec_sane(cur, rec, 0);
}

static int dirbt_alloc_block(struct mfs_btree_cur *cur, uint64_t *fsb)
{
	return mfs_inode_btree_alloc(cur, cur->priv, MFS_RMAP_BMBT_BLOCK, fsb);
}

static int dirbt_free_block(struct mfs_btree_cur *cur, uint64_t fsb)
{
	return mfs_inode_btree_free(cur, cur->priv, MFS_RMAP_BMBT_BLOCK, fsb);
}

static void root_get(const struct mfs_inode *dp, struct mfs_dir_root *r)
{
	memcpy(r, dp->lit, sizeof(*r));
}

static void root_put(struct mfs_inode *dp, const struct mfs_dir_root *r)
{
	memcpy(dp->lit, r, sizeof(*r));
}

static int dirbt_set_root(struct mfs_btree_cur *cur)
{
	struct mfs_inode *dp = cur->priv;
	struct mfs_dir_root r;

	root_get(dp, &r);
	mfs_put64(r.rootblock, cur->root.fsb);
	mfs_put32(r.levels, cur->root.levels);
	root_put(dp, &r);
	dp->dnext = cur->root.levels;
	return 0;
}

/* The name btree's shape, for both cursors below. */
#define DIRBT_SHAPE							\
	.name = "directory name btree",					\
	.magic = MFS_DIRBT_MAGIC,					\
	.rec_len = MFS_DIR_REC_SIZE,					\
	.key_len = sizeof(struct mfs_dir_key),				\
	.ptr_len = 8,							\
	.cmp_keys = dirbt_cmp,						\
	.rec_key = dirbt_rec_key

static const struct mfs_btree_ops dirbt_ops = {
	DIRBT_SHAPE,
	.check_rec = dirbt_check_rec,
	.alloc_block = dirbt_alloc_block,
	.free_block = dirbt_free_block,
	.set_root = dirbt_set_root,
};

/* The read-only cursor of mfs_dir_check's walk: the names hashed as entries, not records. */
static const struct mfs_btree_ops dirbt_check_ops = {
	DIRBT_SHAPE,
	.check_rec = dirbt_check_rec_nohash,
};

/* A cursor on dp's name btree, after checking the fork root. */
static int bt_cur(struct mfs_inode *dp, struct mfs_trans *tp, struct mfs_btree_cur *cur)
{
	struct mfs_dir_root r;
	struct mfs_btree_root root;

	if (fork_size(dp) < sizeof(r))
		return MFS_CORRUPT("directory %llu: a name btree root needs %zu bytes of data "
				   "fork, it has %u", ULL(dp->ino), sizeof(r), fork_size(dp));
	root_get(dp, &r);
	root.fsb = mfs_get64(r.rootblock);
	root.levels = mfs_get32(r.levels);
	if (root.levels != dp->dnext)
		return MFS_CORRUPT("directory %llu: name btree root says %u levels, the inode %u",
				   ULL(dp->ino), root.levels, dp->dnext);
	mfs_btree_cur_init(cur, dp->fs, tp, &dirbt_ops, dp->ino, 0, &root, dp);
	return 0;
}

/*
 * Walking a collision chain (every record of one hash) to find a name and the lowest free
 * seq.  Records arrive in key order: a head, then its continuations.
 */
struct chain {
	struct mfs_inode *dp;
	const uint8_t *name;
	unsigned len;
	/* results */
	int found;
	uint32_t seq;               /* of the match */
	unsigned nparts;
	uint64_t ino;
	uint8_t ftype;
	uint32_t free_seq;          /* lowest free seq */
	int have_free;
	/* state */
	uint32_t expect_seq;        /* seqs 0 .. expect_seq-1 are used (when !have_free) */
	int pending;                /* a head whose continuations are still to come */
	int cand;                   /* the pending head still matches the name */
	uint32_t p_seq;
	unsigned p_parts, p_next;
	uint64_t p_ino;
	uint8_t p_ftype;
};

static int chain_done_entry(struct chain *c)
{
	c->pending = 0;
	if (c->cand) {
		c->found = 1;
		c->seq = c->p_seq;
		c->nparts = c->p_parts;
		c->ino = c->p_ino;
		c->ftype = c->p_ftype;
		return 1;
	}
	return 0;
}

static int chain_rec(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	struct chain *c = priv;
	uint64_t key = load_le64(rec);
	uint32_t seq = KEY_SEQ(key);
	unsigned part = KEY_PART(key);

	if (part == 0) {
		struct mfs_dir_rec h;
		unsigned n;

		if (c->pending)
			return MFS_CORRUPT("directory %llu name btree: entry 0x%llx ends after part "
					   "%u of %u", ULL(c->dp->ino), ULL(KEY(KEY_HASH(key),
					   c->p_seq, 0)), c->p_next - 1, c->p_parts);
		memcpy(&h, rec, sizeof(h));
		if (h.namelen == 0)
			return MFS_CORRUPT("directory %llu name btree: entry 0x%llx has an empty name",
					   ULL(c->dp->ino), ULL(key));
		if (!c->have_free) {
			if (seq > c->expect_seq) {
				c->free_seq = c->expect_seq;
				c->have_free = 1;
			} else {
				c->expect_seq = seq + 1;
			}
		}
		n = c->len < MFS_DIR_HEAD_NAME ? c->len : MFS_DIR_HEAD_NAME;
		c->pending = 1;
		c->cand = h.namelen == c->len && !memcmp(h.name, c->name, n);
		c->p_seq = seq;
		c->p_parts = parts_for(h.namelen);
		c->p_next = 1;
		c->p_ino = mfs_get64(h.ino);
		c->p_ftype = h.ftype;
	} else {
		unsigned off, n;

		if (!c->pending || seq != c->p_seq || part != c->p_next)
			return MFS_CORRUPT("directory %llu name btree: record 0x%llx continues no "
					   "entry (expected part %u of seq %u)", ULL(c->dp->ino),
					   ULL(key), c->pending ? c->p_next : 0,
					   c->pending ? c->p_seq : 0);
		if (c->cand) {
			off = MFS_DIR_HEAD_NAME + (part - 1) * MFS_DIR_CONT_NAME;
			n = c->len - off < MFS_DIR_CONT_NAME ? c->len - off : MFS_DIR_CONT_NAME;
			if (memcmp((const uint8_t *)rec + 8, c->name + off, n))
				c->cand = 0;
		}
		c->p_next++;
	}
	if (c->p_next == c->p_parts && c->pending)
		if (chain_done_entry(c))
			return 1;       /* found: stop */
	(void)cur;
	return 0;
}

static int bt_chain(struct mfs_btree_cur *cur, struct chain *c, uint32_t hash)
{
	uint8_t lo[8], hi[8];
	int err;

	store_le64(lo, KEY(hash, 0, 0));
	store_le64(hi, KEY(hash, MFS_DIR_SEQ_MAX, 0xff));
	err = mfs_btree_query_range(cur, lo, hi, chain_rec, c);
	if (err < 0)
		return err;
	if (err == 0 && c->pending)
		return MFS_CORRUPT("directory %llu name btree: entry 0x%llx has %u of %u parts",
				   ULL(c->dp->ino), ULL(KEY(hash, c->p_seq, 0)), c->p_next,
				   c->p_parts);
	if (!c->have_free) {
		c->free_seq = c->expect_seq;
		c->have_free = 1;
	}
	return 0;
}

/* Insert the records of one entry. */
static int bt_insert_entry(struct mfs_btree_cur *cur, uint32_t hash, uint32_t seq,
			   const uint8_t *name, unsigned len, uint64_t ino, uint8_t ftype)
{
	unsigned nparts = parts_for(len);
	int err;

	for (unsigned part = 0; part < nparts; part++) {
		uint8_t rec[MFS_DIR_REC_SIZE];

		memset(rec, 0, sizeof(rec));
		store_le64(rec, KEY(hash, seq, part));
		if (part == 0) {
			struct mfs_dir_rec *h = (void *)rec;
			unsigned n = len < MFS_DIR_HEAD_NAME ? len : MFS_DIR_HEAD_NAME;

			store_le64(rec + offsetof(struct mfs_dir_rec, ino), ino);
			h->ftype = ftype;
			h->namelen = (uint8_t)len;
			memcpy(h->name, name, n);
		} else {
			unsigned off = MFS_DIR_HEAD_NAME + (part - 1) * MFS_DIR_CONT_NAME;
			unsigned n = len - off < MFS_DIR_CONT_NAME ? len - off : MFS_DIR_CONT_NAME;

			memcpy(rec + 8, name + off, n);
		}
		err = mfs_btree_insert(cur, rec);
		if (err == -EEXIST)
			return MFS_CORRUPT("directory %llu name btree: key 0x%llx already present",
					   ULL(cur->owner), ULL(KEY(hash, seq, part)));
		if (err)
			return err;
	}
	return 0;
}

static int root_adjust(struct mfs_inode *dp, int64_t dcount)
{
	struct mfs_dir_root r;

	root_get(dp, &r);
	mfs_put64(r.count, mfs_get64(r.count) + (uint64_t)dcount);
	root_put(dp, &r);
	return 0;
}

/* ---- assembling whole entries from the tree (iterate, convert, check) -------------------- */
struct asm_state {
	struct mfs_inode *dp;
	int pending;
	uint64_t key0;              /* head key of the pending entry */
	unsigned parts, next;
	struct mfs_dir_rec head;
	uint8_t name[MFS_NAME_MAX + 1];
	/* the consumer of complete entries */
	int (*emit)(struct asm_state *s, uint64_t key0, const uint8_t *name, unsigned len,
		    uint64_t ino, uint8_t ftype);
	void *priv;
};

static int asm_rec(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	struct asm_state *s = priv;
	uint64_t key = load_le64(rec);
	unsigned part = KEY_PART(key);

	(void)cur;
	if (part == 0) {
		unsigned n;

		if (s->pending)
			return MFS_CORRUPT("directory %llu name btree: entry 0x%llx ends after part "
					   "%u of %u", ULL(s->dp->ino), ULL(s->key0), s->next - 1,
					   s->parts);
		memcpy(&s->head, rec, sizeof(s->head));
		if (s->head.namelen == 0)
			return MFS_CORRUPT("directory %llu name btree: entry 0x%llx has an empty name",
					   ULL(s->dp->ino), ULL(key));
		n = s->head.namelen < MFS_DIR_HEAD_NAME ? s->head.namelen : MFS_DIR_HEAD_NAME;
		memcpy(s->name, s->head.name, n);
		s->key0 = key;
		s->parts = parts_for(s->head.namelen);
		s->next = 1;
		s->pending = 1;
	} else {
		unsigned off, n;

		if (!s->pending || (key & ~0xffull) != s->key0 || part != s->next)
			return MFS_CORRUPT("directory %llu name btree: record 0x%llx continues no "
					   "entry", ULL(s->dp->ino), ULL(key));
		off = MFS_DIR_HEAD_NAME + (part - 1) * MFS_DIR_CONT_NAME;
		n = s->head.namelen - off < MFS_DIR_CONT_NAME ? s->head.namelen - off :
								MFS_DIR_CONT_NAME;
		memcpy(s->name + off, (const uint8_t *)rec + 8, n);
		s->next++;
	}
	if (s->pending && s->next == s->parts) {
		s->pending = 0;
		return s->emit(s, s->key0, s->name, s->head.namelen, mfs_get64(s->head.ino),
			       s->head.ftype);
	}
	return 0;
}

/* Walk every entry with id >= from_id. Returns emit's positive stop value, 0, or an error. */
static int bt_walk(struct mfs_btree_cur *cur, struct asm_state *s, uint64_t from_id)
{
	uint8_t lo[8];
	int err;

	store_le64(lo, from_id << 8);
	s->pending = 0;
	err = mfs_btree_query_range(cur, lo, NULL, asm_rec, s);
	if (err == 0 && s->pending)
		return MFS_CORRUPT("directory %llu name btree: entry 0x%llx has %u of %u parts",
				   ULL(s->dp->ino), ULL(s->key0), s->next, s->parts);
	return err;
}

/* ---- conversions ---------------------------------------------------------------------------- */
/* Local → btree: a new root leaf near the inode, then every local entry inserted with its
 * id.  Afterwards dp is a btree directory with the same entries, size unchanged. */
static int convert_to_btree(struct mfs_trans *tp, struct mfs_inode *dp)
{
	struct mfs_fs *fs = dp->fs;
	uint32_t fsz = fork_size(dp), end = (uint32_t)dp->size, off;
	uint8_t *saved;
	uint64_t parent = local_parent(dp), count = 0;
	struct mfs_alloc_args a = {
		.type = MFS_ALLOC_NEAR, .target = mfs_ino_to_fsb(&fs->geo, dp->ino),
		.minlen = 1, .maxlen = 1, .owner = dp->ino, .offset = MFS_RMAP_BMBT_BLOCK,
	};
	struct mfs_dir_root r;
	struct mfs_btree_cur cur;
	struct mfs_buf *bp;
	int err;

	if (fsz < sizeof(r))
		return -ENOSPC;
	if (dp->size == 0)
		end = MFS_DIR_LOCAL_HDR;
	saved = mfs_malloc(fsz);
	if (!saved)
		return -ENOMEM;
	memcpy(saved, dp->lit, fsz);

	err = mfs_alloc_extent(tp, &a);
	if (err)
		goto out;
	dp->nblocks++;
	err = mfs_trans_get_new(tp, a.fsb, 1, &bp);
	if (err)
		goto out;
	mfs_blk_init(bp->data, fs->geo.blocksize, MFS_DIRBT_MAGIC, a.fsb, dp->ino, fs->geo.uuid);

	memset(dp->lit, 0, fsz);
	memset(&r, 0, sizeof(r));
	mfs_put64(r.rootblock, a.fsb);
	mfs_put32(r.levels, 1);
	mfs_put64(r.parent, parent);
	root_put(dp, &r);
	dp->dformat = MFS_FMT_BTREE;
	dp->dnext = 1;

	err = bt_cur(dp, tp, &cur);
	if (err)
		goto out;
	for (off = MFS_DIR_LOCAL_HDR; off < end && !err; ) {
		/* decode from the saved copy: dp->lit now holds the root */
		struct mfs_dir_lent le;
		const uint8_t *p = saved + off;
		struct lent e;

		if (off + sizeof(le) > end) {
			err = MFS_CORRUPT("directory %llu: inline entry at byte %u overruns the "
					  "size %u", ULL(dp->ino), off, end);
			break;
		}
		e.ino = load_le64(p);
		e.ftype = p[8];
		e.namelen = p[9];
		e.seq = p[10];
		e.name = p + sizeof(le);
		if (e.namelen == 0 || off + LENT_SIZE(e.namelen) > end) {
			err = MFS_CORRUPT("directory %llu: inline entry at byte %u has name length "
					  "%u", ULL(dp->ino), off, e.namelen);
			break;
		}
		err = bt_insert_entry(&cur, dp_hash(dp, e.name, e.namelen), e.seq, e.name,
				      e.namelen, e.ino, e.ftype);
		count++;
		off += LENT_SIZE(e.namelen);
	}
	mfs_btree_cur_release(&cur);
	if (!err) {
		root_get(dp, &r);
		mfs_put64(r.count, count);
		root_put(dp, &r);
		dp->size = end;
	}
out:
	free(saved);
	return err;
}

struct tolocal {
	uint8_t *buf;               /* the new fork */
	uint32_t off, cap;
	int fits;
};

static int tolocal_emit(struct asm_state *s, uint64_t key0, const uint8_t *name, unsigned len,
			uint64_t ino, uint8_t ftype)
{
	struct tolocal *t = s->priv;

	if (KEY_SEQ(key0) > 255 || t->off + LENT_SIZE(len) > t->cap) {
		t->fits = 0;
		return 1;
	}
	local_put(t->buf + t->off, ino, ftype, (const char *)name, len, (uint8_t)KEY_SEQ(key0));
	t->off += LENT_SIZE(len);
	return 0;
}

static int collect_block(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	uint64_t **v = priv;

	(void)cur;
	(void)level;
	*(*v)++ = fsb;
	return 0;
}

/* Btree → local when the entries fit and every seq is below 256; otherwise nothing. */
static int maybe_convert_to_local(struct mfs_trans *tp, struct mfs_inode *dp)
{
	uint32_t fsz = fork_size(dp);
	struct tolocal t;
	struct asm_state s;
	struct mfs_btree_cur cur;
	struct mfs_dir_root r;
	uint64_t *blocks = NULL, *bend, nblk;
	int err;

	if (dp->size > fsz)
		return 0;
	t.buf = mfs_calloc(1, fsz);
	if (!t.buf)
		return -ENOMEM;
	root_get(dp, &r);
	store_le64(t.buf, mfs_get64(r.parent));
	t.off = MFS_DIR_LOCAL_HDR;
	t.cap = fsz;
	t.fits = 1;
	memset(&s, 0, sizeof(s));
	s.dp = dp;
	s.emit = tolocal_emit;
	s.priv = &t;
	err = bt_cur(dp, tp, &cur);
	if (err)
		goto out;
	err = bt_walk(&cur, &s, 0);
	if (err < 0 || !t.fits) {
		mfs_btree_cur_release(&cur);
		goto out;
	}
	err = mfs_btree_verify(&cur, NULL, &nblk);
	if (!err) {
		blocks = mfs_calloc(nblk ? nblk : 1, sizeof(*blocks));
		bend = blocks;
		err = blocks ? mfs_btree_visit_blocks(&cur, collect_block, &bend) : -ENOMEM;
		if (!err && (uint64_t)(bend - blocks) != nblk)
			err = MFS_CORRUPT("directory %llu name btree: %llu blocks visited, %llu "
					  "verified", ULL(dp->ino), ULL((uint64_t)(bend - blocks)),
					  ULL(nblk));
	}
	mfs_btree_cur_release(&cur);
	if (err)
		goto out;
	for (uint64_t i = 0; i < nblk && !err; i++) {
		err = mfs_free_extent(tp, blocks[i], 1, dp->ino, MFS_RMAP_BMBT_BLOCK);
		if (!err)
			err = mfs_trans_forget(tp, blocks[i]);
		if (!err)
			dp->nblocks--;
	}
	if (err)
		goto out;
	memcpy(dp->lit, t.buf, fsz);
	dp->dformat = MFS_FMT_LOCAL;
	dp->dnext = 0;
	if (dp->size != t.off)
		err = MFS_CORRUPT("directory %llu: size %llu, but its entries take %u bytes",
				  ULL(dp->ino), ULL(dp->size), t.off);
out:
	free(blocks);
	free(t.buf);
	return err < 0 ? err : 0;
}

/* ---- public operations ---------------------------------------------------------------------- */
static int fmt_known(const struct mfs_inode *dp)
{
	if (dp->dformat == MFS_FMT_LOCAL)
		return local_check_size(dp);
	if (dp->dformat == MFS_FMT_BTREE)
		return 0;
	return MFS_CORRUPT("directory %llu: data fork format %u is neither local nor btree",
			   ULL(dp->ino), dp->dformat);
}

int mfs_dir_init(struct mfs_trans *tp, struct mfs_inode *dp, uint64_t parent_ino)
{
	int err = dir_ok(dp);

	if (err)
		return err;
	if (dp->dformat == MFS_FMT_BTREE || parent_ino == 0 || parent_ino >= (1ull << 56))
		return -EINVAL;
	if (fork_size(dp) < MFS_DIR_LOCAL_HDR)
		return -ENOSPC;
	dp->dformat = MFS_FMT_LOCAL;
	dp->dnext = 0;
	memset(dp->lit, 0, fork_size(dp));
	store_le64(dp->lit, parent_ino);
	dp->size = MFS_DIR_LOCAL_HDR;
	return mfs_inode_log(tp, dp);
}

int mfs_dir_get_parent(struct mfs_inode *dp, uint64_t *parent)
{
	struct mfs_dir_root r;
	int err = dir_ok(dp);

	if (!err)
		err = fmt_known(dp);
	if (err)
		return err;
	if (dp->dformat == MFS_FMT_LOCAL) {
		*parent = local_parent(dp);
	} else {
		if (fork_size(dp) < sizeof(r))
			return MFS_CORRUPT("directory %llu: data fork of %u bytes holds no name "
					   "btree root", ULL(dp->ino), fork_size(dp));
		root_get(dp, &r);
		*parent = mfs_get64(r.parent);
	}
	if (*parent == 0 || *parent >= (1ull << 56))
		return MFS_CORRUPT("directory %llu: parent inode %llu", ULL(dp->ino),
				   ULL(*parent));
	return 0;
}

int mfs_dir_set_parent(struct mfs_trans *tp, struct mfs_inode *dp, uint64_t parent)
{
	struct mfs_dir_root r;
	int err = dir_ok(dp);

	if (!err)
		err = fmt_known(dp);
	if (err)
		return err;
	if (parent == 0 || parent >= (1ull << 56))
		return -EINVAL;
	if (dp->dformat == MFS_FMT_LOCAL) {
		local_materialize(dp);
		store_le64(dp->lit, parent);
	} else {
		root_get(dp, &r);
		mfs_put64(r.parent, parent);
		root_put(dp, &r);
	}
	return mfs_inode_log(tp, dp);
}

int mfs_dir_lookup(struct mfs_inode *dp, const char *name, unsigned len, uint64_t *ino,
		   uint8_t *ftype)
{
	uint64_t i = 0;
	uint8_t t = DT_DIR;
	int err = name_check(name, len);

	if (!err)
		err = dir_ok(dp);
	if (!err)
		err = fmt_known(dp);
	if (err)
		return err;
	if (is_dot(name, len)) {
		i = dp->ino;
	} else if (is_dotdot(name, len)) {
		err = mfs_dir_get_parent(dp, &i);
	} else if (dp->dformat == MFS_FMT_LOCAL) {
		struct lent e;
		int found;

		err = local_find(dp, name, len, 0, &found, &e, NULL, NULL);
		if (!err && !found)
			err = -ENOENT;
		if (!err) {
			i = e.ino;
			t = e.ftype;
		}
	} else {
		struct mfs_btree_cur cur;
		struct chain c;

		memset(&c, 0, sizeof(c));
		c.dp = dp;
		c.name = (const uint8_t *)name;
		c.len = len;
		err = bt_cur(dp, NULL, &cur);
		if (err)
			return err;
		err = bt_chain(&cur, &c, dp_hash(dp, name, len));
		mfs_btree_cur_release(&cur);
		if (!err && !c.found)
			err = -ENOENT;
		if (!err) {
			i = c.ino;
			t = c.ftype;
		}
	}
	if (err)
		return err;
	if (ino)
		*ino = i;
	if (ftype)
		*ftype = t;
	return 0;
}

/* Checks shared by add, remove and replace. */
static int change_check(struct mfs_trans *tp, struct mfs_inode *dp, const char *name,
			unsigned len)
{
	int err = name_check(name, len);

	if (!err && (is_dot(name, len) || is_dotdot(name, len)))
		err = -EINVAL;
	if (!err)
		err = dir_ok(dp);
	if (!err)
		err = fmt_known(dp);
	if (!err)
		err = mfs_inode_lock_ag(tp, dp);
	return err;
}

static int bt_add(struct mfs_trans *tp, struct mfs_inode *dp, const char *name, unsigned len,
		  uint64_t ino, uint8_t ftype)
{
	uint32_t hash = dp_hash(dp, name, len);
	struct mfs_btree_cur cur;
	struct chain c;
	int err;

	memset(&c, 0, sizeof(c));
	c.dp = dp;
	c.name = (const uint8_t *)name;
	c.len = len;
	err = bt_cur(dp, tp, &cur);
	if (err)
		return err;
	err = bt_chain(&cur, &c, hash);
	if (!err && c.found)
		err = -EEXIST;
	if (!err && c.free_seq > MFS_DIR_SEQ_MAX)
		err = -ENOSPC;
	if (!err)
		err = bt_insert_entry(&cur, hash, c.free_seq, (const uint8_t *)name, len, ino,
				      ftype);
	mfs_btree_cur_release(&cur);
	if (!err) {
		root_adjust(dp, 1);
		dp->size += LENT_SIZE(len);
	}
	return err;
}

int mfs_dir_add(struct mfs_trans *tp, struct mfs_inode *dp, const char *name, unsigned len,
		uint64_t ino, uint8_t ftype)
{
	int err = change_check(tp, dp, name, len);

	if (err)
		return err;
	if (ino == 0 || ino >= (1ull << 56) || !ftype_ok(ftype))
		return -EINVAL;
	if (dp->dformat == MFS_FMT_LOCAL) {
		uint32_t hash = dp_hash(dp, name, len), pos, seq;
		struct lent e;
		int found;

		err = local_find(dp, name, len, hash, &found, &e, &pos, &seq);
		if (err)
			return err;
		if (found)
			return -EEXIST;
		if ((dp->size ? dp->size : MFS_DIR_LOCAL_HDR) + LENT_SIZE(len) <= fork_size(dp) &&
		    seq < 256) {
			uint32_t end;

			local_materialize(dp);
			end = (uint32_t)dp->size;
			memmove(dp->lit + pos + LENT_SIZE(len), dp->lit + pos, end - pos);
			local_put(dp->lit + pos, ino, ftype, name, len, (uint8_t)seq);
			dp->size += LENT_SIZE(len);
			return mfs_inode_log(tp, dp);
		}
		err = convert_to_btree(tp, dp);
		if (err)
			return err;
	}
	err = bt_add(tp, dp, name, len, ino, ftype);
	if (err)
		return err;
	return mfs_inode_log(tp, dp);
}

int mfs_dir_remove(struct mfs_trans *tp, struct mfs_inode *dp, const char *name,
		   unsigned len, uint64_t *ino)
{
	struct mfs_btree_cur cur;
	struct chain c;
	int err = change_check(tp, dp, name, len);

	if (err)
		return err;
	if (dp->dformat == MFS_FMT_LOCAL) {
		struct lent e;
		int found;
		uint32_t sz;

		err = local_find(dp, name, len, 0, &found, &e, NULL, NULL);
		if (err)
			return err;
		if (!found)
			return -ENOENT;
		sz = LENT_SIZE(e.namelen);
		memmove(dp->lit + e.off, dp->lit + e.off + sz, (uint32_t)dp->size - e.off - sz);
		dp->size -= sz;
		memset(dp->lit + dp->size, 0, sz);
		if (ino)
			*ino = e.ino;
		return mfs_inode_log(tp, dp);
	}

	memset(&c, 0, sizeof(c));
	c.dp = dp;
	c.name = (const uint8_t *)name;
	c.len = len;
	err = bt_cur(dp, tp, &cur);
	if (err)
		return err;
	err = bt_chain(&cur, &c, dp_hash(dp, name, len));
	if (!err && !c.found)
		err = -ENOENT;
	for (unsigned part = 0; !err && part < c.nparts; part++) {
		uint8_t key[8];
		int stat = 0;

		store_le64(key, KEY(dp_hash(dp, name, len), c.seq, part));
		err = mfs_btree_lookup(&cur, key, MFS_LOOKUP_EQ, &stat);
		if (!err && !stat)
			err = MFS_CORRUPT("directory %llu name btree: record 0x%llx vanished",
					  ULL(dp->ino), ULL(load_le64(key)));
		if (!err)
			err = mfs_btree_delete(&cur);
	}
	mfs_btree_cur_release(&cur);
	if (err)
		return err;
	root_adjust(dp, -1);
	dp->size -= LENT_SIZE(len);
	if (ino)
		*ino = c.ino;
	err = maybe_convert_to_local(tp, dp);
	if (err)
		return err;
	return mfs_inode_log(tp, dp);
}

int mfs_dir_replace(struct mfs_trans *tp, struct mfs_inode *dp, const char *name,
		    unsigned len, uint64_t new_ino, uint8_t new_ftype, uint64_t *old_ino)
{
	struct mfs_btree_cur cur;
	struct chain c;
	int err = change_check(tp, dp, name, len);

	if (err)
		return err;
	if (new_ino == 0 || new_ino >= (1ull << 56) || !ftype_ok(new_ftype))
		return -EINVAL;
	if (dp->dformat == MFS_FMT_LOCAL) {
		struct lent e;
		int found;

		err = local_find(dp, name, len, 0, &found, &e, NULL, NULL);
		if (err)
			return err;
		if (!found)
			return -ENOENT;
		store_le64(dp->lit + e.off, new_ino);
		dp->lit[e.off + 8] = new_ftype;
		if (old_ino)
			*old_ino = e.ino;
		return mfs_inode_log(tp, dp);
	}
	memset(&c, 0, sizeof(c));
	c.dp = dp;
	c.name = (const uint8_t *)name;
	c.len = len;
	err = bt_cur(dp, tp, &cur);
	if (err)
		return err;
	err = bt_chain(&cur, &c, dp_hash(dp, name, len));
	if (!err && !c.found)
		err = -ENOENT;
	if (!err) {
		uint8_t key[8];
		struct mfs_dir_rec h;
		int stat = 0;

		store_le64(key, KEY(dp_hash(dp, name, len), c.seq, 0));
		err = mfs_btree_lookup_get(&cur, key, MFS_LOOKUP_EQ, &h, &stat);
		if (!err && !stat)
			err = MFS_CORRUPT("directory %llu name btree: record 0x%llx vanished",
					  ULL(dp->ino), ULL(load_le64(key)));
		if (!err) {
			mfs_put64(h.ino, new_ino);
			h.ftype = new_ftype;
			err = mfs_btree_update(&cur, &h);
		}
	}
	mfs_btree_cur_release(&cur);
	if (err)
		return err;
	if (old_ino)
		*old_ino = c.ino;
	return mfs_inode_log(tp, dp);
}

int mfs_dir_count(struct mfs_inode *dp, uint64_t *count)
{
	int err = dir_ok(dp);

	if (!err)
		err = fmt_known(dp);
	if (err)
		return err;
	*count = 0;
	if (dp->dformat == MFS_FMT_LOCAL) {
		uint32_t off = MFS_DIR_LOCAL_HDR;

		while (dp->size && off < dp->size) {
			struct lent e;

			err = local_get(dp, off, &e);
			if (err)
				return err;
			(*count)++;
			off += LENT_SIZE(e.namelen);
		}
	} else {
		struct mfs_dir_root r;

		if (fork_size(dp) < sizeof(r))
			return MFS_CORRUPT("directory %llu: data fork of %u bytes holds no name "
					   "btree root", ULL(dp->ino), fork_size(dp));
		root_get(dp, &r);
		*count = mfs_get64(r.count);
	}
	return 0;
}

int mfs_dir_is_empty(struct mfs_inode *dp)
{
	uint64_t n;
	int err = mfs_dir_count(dp, &n);

	return err ? err : n == 0;
}

int mfs_dir_to_btree(struct mfs_trans *tp, struct mfs_inode *dp)
{
	int err = dir_ok(dp);

	if (!err)
		err = fmt_known(dp);
	if (err || dp->dformat == MFS_FMT_BTREE)
		return err;
	err = mfs_inode_lock_ag(tp, dp);
	if (!err)
		err = convert_to_btree(tp, dp);
	if (!err)
		err = mfs_inode_log(tp, dp);
	return err;
}

/* ---- readdir -------------------------------------------------------------------------------- */
struct iter {
	mfs_dir_iter_fn fn;
	void *priv;
	uint64_t from;              /* the first entry id asked for */
};

static int iter_emit(struct asm_state *s, uint64_t key0, const uint8_t *name, unsigned len,
		     uint64_t ino, uint8_t ftype)
{
	struct iter *it = s->priv;
	uint64_t id = key0 >> 8;

	/*
	 * The range query hands back ids >= from in a well-ordered tree.  An earlier one means
	 * node keys out of order: emitting it would move the cookie backwards, and a listing
	 * resumed from it would never end.
	 */
	if (id < it->from)
		return MFS_CORRUPT("directory %llu name btree: entry 0x%llx returned for a "
				   "listing from 0x%llx (keys out of order)", ULL(s->dp->ino),
				   ULL(id), ULL(it->from));
	return it->fn(it->priv, (const char *)name, len, ino, ftype,
		      id + 1 + MFS_DIR_COOKIE_FIRST);
}

int mfs_dir_iterate(struct mfs_inode *dp, uint64_t cookie, mfs_dir_iter_fn fn, void *priv)
{
	uint64_t parent, from;
	int err = dir_ok(dp);

	if (!err)
		err = fmt_known(dp);
	if (err)
		return err;
	if (cookie >= MFS_DIR_COOKIE_EOF)
		return 0;
	if (cookie == 0) {
		err = fn(priv, ".", 1, dp->ino, DT_DIR, MFS_DIR_COOKIE_DOT);
		if (err)
			return err < 0 ? err : 0;
		cookie = MFS_DIR_COOKIE_DOT;
	}
	if (cookie == MFS_DIR_COOKIE_DOT) {
		err = mfs_dir_get_parent(dp, &parent);
		if (!err)
			err = fn(priv, "..", 2, parent, DT_DIR, MFS_DIR_COOKIE_DOTDOT);
		if (err)
			return err < 0 ? err : 0;
		cookie = MFS_DIR_COOKIE_DOTDOT;
	}
	/* cookie 2: from the first entry; cookie 3 + id: from entry id on */
	from = cookie >= MFS_DIR_COOKIE_FIRST ? cookie - MFS_DIR_COOKIE_FIRST : 0;

	if (dp->dformat == MFS_FMT_LOCAL) {
		uint32_t off = MFS_DIR_LOCAL_HDR;

		while (dp->size && off < dp->size) {
			struct lent e;
			uint64_t id;

			err = local_get(dp, off, &e);
			if (err)
				return err;
			off += LENT_SIZE(e.namelen);
			id = ID(dp_hash(dp, e.name, e.namelen), e.seq);
			if (id < from)
				continue;
			err = fn(priv, (const char *)e.name, e.namelen, e.ino, e.ftype,
				 id + 1 + MFS_DIR_COOKIE_FIRST);
			if (err)
				return err < 0 ? err : 0;
		}
		return 0;
	} else {
		struct mfs_btree_cur cur;
		struct asm_state s;
		struct iter it = { fn, priv, from };

		memset(&s, 0, sizeof(s));
		s.dp = dp;
		s.emit = iter_emit;
		s.priv = &it;
		err = bt_cur(dp, NULL, &cur);
		if (err)
			return err;
		err = bt_walk(&cur, &s, from);
		mfs_btree_cur_release(&cur);
		return err < 0 ? err : 0;
	}
}

/* ---- full check ----------------------------------------------------------------------------- */
struct chk {
	struct mfs_inode *dp;
	mfs_dir_iter_fn fn;         /* NULL, or given each entry once it passed its checks */
	void *priv;
	uint64_t count, bytes;
	uint32_t chain_hash;
	int have_chain;
	/* names of the current collision chain, to find duplicates */
	uint8_t (*names)[MFS_NAME_MAX + 1];
	size_t nnames, cap;
};

static int chk_dup(struct chk *k, uint32_t hash, uint64_t id, const uint8_t *name, unsigned len)
{
	if (!k->have_chain || hash != k->chain_hash) {
		k->nnames = 0;
		k->chain_hash = hash;
		k->have_chain = 1;
	}
	for (size_t i = 0; i < k->nnames; i++)
		if (k->names[i][0] == len && !memcmp(k->names[i] + 1, name, len))
			return MFS_CORRUPT("directory %llu: name of entry 0x%llx appears twice",
					   ULL(k->dp->ino), ULL(id));
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

/* One entry; `hashed`: its id was made from the name's hash (the inline format), which
 * need not be taken again. */
static int chk_entry(struct chk *k, uint64_t id, const uint8_t *name, unsigned len,
		     uint64_t ino, uint8_t ftype, int hashed)
{
	uint32_t h = (uint32_t)(id >> 24), nh;
	int err;

	if (!name_bytes_ok(name, len) || (len == 1 && name[0] == '.') ||
	    (len == 2 && name[0] == '.' && name[1] == '.'))
		return MFS_CORRUPT("directory %llu: entry 0x%llx has an invalid name",
				   ULL(k->dp->ino), ULL(id));
	if (!hashed && (nh = dp_hash(k->dp, name, len)) != h)
		return MFS_CORRUPT("directory %llu: entry 0x%llx: its name hashes to 0x%x, not "
				   "0x%x", ULL(k->dp->ino), ULL(id), nh, h);
	if (ino == 0 || ino >= (1ull << 56) || !ftype_ok(ftype))
		return MFS_CORRUPT("directory %llu: entry 0x%llx names inode %llu of type %u",
				   ULL(k->dp->ino), ULL(id), ULL(ino), ftype);
	k->count++;
	k->bytes += LENT_SIZE(len);
	err = chk_dup(k, h, id, name, len);
	if (!err && k->fn)
		err = k->fn(k->priv, (const char *)name, len, ino, ftype,
			    id + 1 + MFS_DIR_COOKIE_FIRST);
	return err;
}

static int chk_emit(struct asm_state *s, uint64_t key0, const uint8_t *name, unsigned len,
		    uint64_t ino, uint8_t ftype)
{
	return chk_entry(s->priv, key0 >> 8, name, len, ino, ftype, 0);
}

/* The check walk's visit of a block, after mfs_btree_verify's checks of it: a leaf's
 * records, in key order (depth first, leaves left to right), assembled into entries. */
static int chk_leaf(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	const uint8_t *rec;
	unsigned n;
	int err = 0;

	(void)fsb;
	if (level)
		return 0;
	rec = mfs_btree_leaf_recs(cur, &n);
	for (unsigned i = 0; i < n && !err; i++)
		err = asm_rec(cur, rec + (size_t)i * MFS_DIR_REC_SIZE, priv);
	return err;
}

int mfs_dir_check(struct mfs_inode *dp)
{
	return mfs_dir_check_iterate(dp, NULL, NULL);
}

int mfs_dir_check_iterate(struct mfs_inode *dp, mfs_dir_iter_fn fn, void *priv)
{
	struct chk k;
	uint64_t parent;
	int err = dir_ok(dp);

	if (!err)
		err = fmt_known(dp);
	if (!err)
		err = mfs_dir_get_parent(dp, &parent);
	if (err)
		return err;
	memset(&k, 0, sizeof(k));
	k.dp = dp;
	k.fn = fn;
	k.priv = priv;
	k.bytes = MFS_DIR_LOCAL_HDR;
	if (dp->dformat == MFS_FMT_LOCAL) {
		uint32_t off = MFS_DIR_LOCAL_HDR;
		uint64_t prev = 0;
		int first = 1;

		if (dp->size == 0)
			return 0;
		while (off < dp->size && !err) {
			struct lent e;
			uint64_t id;

			err = local_get(dp, off, &e);
			if (err)
				break;
			id = ID(dp_hash(dp, e.name, e.namelen), e.seq);
			if (!first && id <= prev)
				err = MFS_CORRUPT("directory %llu: inline entry at byte %u (id 0x%llx) "
						  "is not above the previous (0x%llx)", ULL(dp->ino),
						  off, ULL(id), ULL(prev));
			if (!err)
				err = chk_entry(&k, id, e.name, e.namelen, e.ino, e.ftype, 1);
			prev = id;
			first = 0;
			off += LENT_SIZE(e.namelen);
		}
		if (!err && dp->nblocks != 0 && dp->aformat != MFS_FMT_EXTENTS &&
		    dp->aformat != MFS_FMT_BTREE)
			err = MFS_CORRUPT("directory %llu: inline but counts %llu blocks",
					  ULL(dp->ino), ULL(dp->nblocks));
	} else {
		struct mfs_btree_cur cur;
		struct asm_state s;
		struct mfs_dir_root r;
		uint64_t nblocks = 0;

		err = bt_cur(dp, NULL, &cur);
		if (err)
			return err;
		/* One walk: each block verified, then a leaf's records made into entries. */
		cur.ops = &dirbt_check_ops;
		memset(&s, 0, sizeof(s));
		s.dp = dp;
		s.emit = chk_emit;
		s.priv = &k;
		err = mfs_btree_verify_visit(&cur, chk_leaf, &s, NULL, &nblocks);
		if (err == 0 && s.pending)
			err = MFS_CORRUPT("directory %llu name btree: entry 0x%llx has %u of %u parts",
					  ULL(dp->ino), ULL(s.key0), s.next, s.parts);
		mfs_btree_cur_release(&cur);
		root_get(dp, &r);
		if (!err && mfs_get64(r.count) != k.count)
			err = MFS_CORRUPT("directory %llu: the name btree root counts %llu entries, "
					  "the tree holds %llu", ULL(dp->ino),
					  ULL(mfs_get64(r.count)), ULL(k.count));
		if (!err && dp->nblocks != nblocks && dp->aformat != MFS_FMT_EXTENTS &&
		    dp->aformat != MFS_FMT_BTREE)
			err = MFS_CORRUPT("directory %llu: counts %llu blocks, its name btree has "
					  "%llu", ULL(dp->ino), ULL(dp->nblocks), ULL(nblocks));
	}
	if (!err && k.bytes != dp->size)
		err = MFS_CORRUPT("directory %llu: size %llu, but its entries take %llu bytes",
				  ULL(dp->ino), ULL(dp->size), ULL(k.bytes));
	free(k.names);
	return err;
}
