/*
 * inode.c — the in-core inode cache, and reading, checking and logging on-disk inodes
 * (see inode.h).
 *
 * The cache is split into ICACHE_SHARDS shards by inode number, so that lookups of
 * different inodes rarely meet on a lock.  Each shard has its own mutex, hash buckets, LRU
 * list of unreferenced inodes and limit on them.  A shard's bucket array doubles when it
 * holds over two inodes a bucket (the kernel can keep a million inodes referenced: fixed
 * buckets made every lookup walk a chain of 30).  Invariants, under the shard's mutex:
 *
 *   - an inode is in its shard's hash while it is LOADING or READY; a FAILED one has been
 *     unhashed and lives only until its last waiter drops its reference;
 *   - an inode is on the LRU list exactly when it is READY and refs == 0;
 *   - shard->unused == length of the LRU list <= shard->max_unused after every iput.
 *
 * An inode is read from disk by the thread that inserted it (state LOADING), outside the
 * shard lock; other threads asking for it meanwhile take a reference and wait on the
 * shard's condition variable, so the same number is never instantiated twice.
 *
 * ip->stale (atomic) says that the buffer may hold a newer (or restored) inode than the
 * in-core copy: set by mfs_inode_invalidate() (inode allocation and freeing, callers after
 * a cancel), cleared by a reload, which mfs_iget() does under the inode's exclusive lock.
 */
#include "mem.h"
#include "inode.h"
#include "ag.h"
#include "alloc.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "ialloc.h"
#include "log.h"
#include "mendfs_format.h"
#include "trans.h"
#include "verify.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define ICACHE_SHARDS   64u
#define SHARD_BUCKETS   512u            /* initial buckets per shard (a power of 2) */

enum { IS_LOADING = 1, IS_READY = 2, IS_FAILED = 3 };

struct icache_shard {
	pthread_mutex_t lock;
	pthread_cond_t loaded;            /* broadcast when a LOADING inode settles */
	struct mfs_inode **buckets;       /* nbuckets, a power of 2 */
	uint64_t nbuckets;
	struct mfs_list lru;              /* unreferenced READY inodes, most recently
					   released first */
	uint64_t cached, unused, max_unused;
	uint64_t hits, misses, evictions, reloads;
};

struct mfs_icache {
	struct mfs_fs *fs;
	uint64_t max_unused;
	struct icache_shard shards[ICACHE_SHARDS];
};

static uint64_t ino_hash(uint64_t ino)
{
	return ino * 0x9e3779b97f4a7c15ull;
}

static struct icache_shard *shard_of(struct mfs_icache *ic, uint64_t ino)
{
	return &ic->shards[(ino_hash(ino) >> 58) & (ICACHE_SHARDS - 1)];
}

static struct mfs_inode **bucket_of(struct icache_shard *sh, uint64_t ino)
{
	return &sh->buckets[(ino_hash(ino) >> 32) & (sh->nbuckets - 1)];
}

/* Double the shard's buckets (shard locked); a failed allocation keeps longer chains. */
static void shard_grow(struct icache_shard *sh)
{
	uint64_t old = sh->nbuckets;
	struct mfs_inode **oh = sh->buckets, **nh = mfs_calloc(old * 2, sizeof(*nh));

	if (!nh)
		return;
	sh->buckets = nh;
	sh->nbuckets = old * 2;
	for (uint64_t i = 0; i < old; i++) {
		struct mfs_inode *ip = oh[i], *next;

		for (; ip; ip = next) {
			struct mfs_inode **b = bucket_of(sh, ip->ino);

			next = ip->hnext;
			ip->hnext = *b;
			*b = ip;
		}
	}
	free(oh);
}

/* ---- the cache ---------------------------------------------------------------------------- */
int mfs_icache_init(struct mfs_fs *fs, unsigned max_unused)
{
	struct mfs_icache *ic;

	if (fs->icache)
		return -EEXIST;
	ic = mfs_calloc(1, sizeof(*ic));
	if (!ic)
		return -ENOMEM;
	ic->fs = fs;
	ic->max_unused = max_unused ? max_unused : MFS_ICACHE_DEFAULT_UNUSED;
	for (unsigned s = 0; s < ICACHE_SHARDS; s++) {
		struct icache_shard *sh = &ic->shards[s];

		sh->buckets = mfs_calloc(SHARD_BUCKETS, sizeof(*sh->buckets));
		if (!sh->buckets) {
			while (s--)
				free(ic->shards[s].buckets);
			free(ic);
			return -ENOMEM;
		}
		sh->nbuckets = SHARD_BUCKETS;
	}
	for (unsigned s = 0; s < ICACHE_SHARDS; s++) {
		struct icache_shard *sh = &ic->shards[s];

		mfs_list_init(&sh->lru);
		pthread_mutex_init(&sh->lock, NULL);
		pthread_cond_init(&sh->loaded, NULL);
		/* the shards share the limit; each keeps at least one */
		sh->max_unused = (ic->max_unused + ICACHE_SHARDS - 1) / ICACHE_SHARDS;
	}
	fs->icache = ic;
	return 0;
}

static void inode_free(struct mfs_inode *ip)
{
	pthread_rwlock_destroy(&ip->lock);
	free(ip);
}

static void hash_remove(struct icache_shard *sh, struct mfs_inode *ip)
{
	struct mfs_inode **pp = bucket_of(sh, ip->ino);

	while (*pp && *pp != ip)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = ip->hnext;
	ip->hnext = NULL;
	sh->cached--;
}

static void lru_remove(struct icache_shard *sh, struct mfs_inode *ip)
{
	mfs_list_del(&ip->lru);
	sh->unused--;
}

static void lru_push(struct icache_shard *sh, struct mfs_inode *ip)
{
	mfs_list_add(&sh->lru, &ip->lru);
	sh->unused++;
}

/* The least recently released unreferenced inode, NULL when there is none. */
static struct mfs_inode *lru_oldest(struct icache_shard *sh)
{
	struct mfs_list *n = mfs_list_last(&sh->lru);

	return n ? mfs_list_entry(n, struct mfs_inode, lru) : NULL;
}

int mfs_icache_destroy(struct mfs_fs *fs)
{
	struct mfs_icache *ic = fs->icache;

	if (!ic)
		return 0;
	for (unsigned s = 0; s < ICACHE_SHARDS; s++) {
		struct icache_shard *sh = &ic->shards[s];

		pthread_mutex_lock(&sh->lock);
		if (sh->cached != sh->unused) {
			pthread_mutex_unlock(&sh->lock);
			mfs_log(MFS_LOG_ERR, "inode cache: %llu inodes still referenced at unmount",
				(unsigned long long)(sh->cached - sh->unused));
			return -EBUSY;
		}
		pthread_mutex_unlock(&sh->lock);
	}
	for (unsigned s = 0; s < ICACHE_SHARDS; s++) {
		struct icache_shard *sh = &ic->shards[s];
		struct mfs_inode *ip;

		while ((ip = lru_oldest(sh))) {
			lru_remove(sh, ip);
			hash_remove(sh, ip);
			inode_free(ip);
		}
		pthread_cond_destroy(&sh->loaded);
		pthread_mutex_destroy(&sh->lock);
		free(sh->buckets);
	}
	free(ic);
	fs->icache = NULL;
	return 0;
}

void mfs_icache_get_stats(struct mfs_fs *fs, struct mfs_icache_stats *st)
{
	struct mfs_icache *ic = fs->icache;

	memset(st, 0, sizeof(*st));
	if (!ic)
		return;
	st->max_unused = ic->max_unused;
	for (unsigned s = 0; s < ICACHE_SHARDS; s++) {
		struct icache_shard *sh = &ic->shards[s];

		pthread_mutex_lock(&sh->lock);
		st->hits += sh->hits;
		st->misses += sh->misses;
		st->evictions += sh->evictions;
		st->reloads += sh->reloads;
		st->cached += sh->cached;
		st->unused += sh->unused;
		pthread_mutex_unlock(&sh->lock);
	}
}

/* ---- inode numbers and field checks --------------------------------------------------------- */
int mfs_ino_check(const struct mfs_fs *fs, uint64_t ino)
{
	const struct mfs_geom *g = &fs->geo;
	uint32_t agno, agino, agbno, first, ipb = 1u << g->inopblog;

	if (ino == 0 || ino >= (1ull << 56))
		return -EINVAL;
	/* the AG part whole: mfs_ino_to_agno keeps only its low 32 bits */
	if ((ino >> (g->agblklog + g->inopblog)) >= g->agcount)
		return -EINVAL;
	agno = mfs_ino_to_agno(g, ino);
	agino = mfs_ino_to_agino(g, ino);
	agbno = mfs_agino_to_agbno(g, agino);
	/* The chunk that would hold it.  chunkblocks is 64 >> inopblog (or 1), a power of two
	 * in every geometry mfs_geom_from_sb builds, so the mask is the common path: this runs
	 * per request, per directory entry and per quick look, and a division showed in the
	 * daemon's profile.  The modulo stays for any other value, so verdicts never change. */
	if ((g->chunkblocks & (g->chunkblocks - 1)) == 0 && g->chunkblocks)
		first = agbno & ~(g->chunkblocks - 1);
	else
		first = agbno - agbno % g->chunkblocks;
	if (first < MFS_AG_FIXED_BLOCKS ||
	    (uint64_t)first + g->chunkblocks > mfs_ag_length(g, agno))
		return -EINVAL;
	/* a block of more than 64 inodes holds a chunk only in its first 64 */
	if (ipb > MFS_INODES_PER_CHUNK && (agino & (ipb - 1)) >= MFS_INODES_PER_CHUNK)
		return -EINVAL;
	return 0;
}

static int fmt_ok_for_type(unsigned type, unsigned fmt)
{
	switch (type) {
	case S_IFREG:
	case S_IFDIR:
		return fmt == MFS_FMT_LOCAL || fmt == MFS_FMT_EXTENTS || fmt == MFS_FMT_BTREE;
	case S_IFLNK:
		return fmt == MFS_FMT_LOCAL || fmt == MFS_FMT_EXTENTS;
	case S_IFCHR:
	case S_IFBLK:
	case S_IFIFO:
	case S_IFSOCK:
		return fmt == MFS_FMT_DEV;
	}
	return 0;
}

uint8_t mfs_inode_default_dformat(uint16_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
		return MFS_FMT_EXTENTS;
	case S_IFDIR:
	case S_IFLNK:
		return MFS_FMT_LOCAL;
	default:
		return MFS_FMT_DEV;
	}
}

/* One fork's contents against its size in the literal area. */
static int fork_check(uint64_t ino, const char *which, unsigned fmt, uint32_t next,
		      uint32_t forksize, uint64_t size)
{
	switch (fmt) {
	case MFS_FMT_LOCAL:
		if (size > forksize)
			return MFS_CORRUPT("inode %llu: %s fork holds %llu bytes inline but has room "
					   "for %u", (unsigned long long)ino, which,
					   (unsigned long long)size, forksize);
		break;
	case MFS_FMT_EXTENTS:
		if ((uint64_t)next * sizeof(struct mfs_bmbt_rec) > forksize)
			return MFS_CORRUPT("inode %llu: %s fork has %u extents inline but room for "
					   "%zu", (unsigned long long)ino, which, next,
					   forksize / sizeof(struct mfs_bmbt_rec));
		break;
	case MFS_FMT_BTREE:
		if (forksize < sizeof(struct mfs_fork_root) || next < 1 ||
		    next > MFS_BTREE_MAXLEVELS)
			return MFS_CORRUPT("inode %llu: %s fork btree has %u levels (expected 1..%u) "
					   "in %u bytes", (unsigned long long)ino, which, next,
					   MFS_BTREE_MAXLEVELS, forksize);
		break;
	case MFS_FMT_DEV:
	case MFS_FMT_NONE:
		if (next)
			return MFS_CORRUPT("inode %llu: %s fork of format %u counts %u extents",
					   (unsigned long long)ino, which, fmt, next);
		break;
	}
	return 0;
}

int mfs_dinode_in_use(const void *dinode)
{
	const struct mfs_dinode *d = dinode;

	return mfs_get16(d->mode) != 0 || mfs_get32(d->nlink) != 0 ||
	       d->dformat != MFS_FMT_NONE || d->aformat != MFS_FMT_NONE ||
	       mfs_get16(d->forkoff) != 0 || mfs_get32(d->dnext) != 0 ||
	       mfs_get32(d->anext) != 0 || mfs_get64(d->nblocks) != 0;
}

int mfs_dinode_check(const void *dinode, uint32_t inodesize, uint64_t ino)
{
	const struct mfs_dinode *d = dinode;
	uint16_t mode = mfs_get16(d->mode);
	unsigned type = mode & S_IFMT;
	uint32_t litsize = inodesize - (uint32_t)sizeof(*d);
	uint32_t forkoff = mfs_get16(d->forkoff), dsize, asize;
	uint32_t nlink = mfs_get32(d->nlink), flags = mfs_get32(d->flags);
	const struct mfs_timestamp *ts[4] = { &d->atime, &d->mtime, &d->ctime, &d->btime };
	static const char *const tname[4] = { "access", "modify", "change", "birth" };
	int err;

	if (mode == 0) {
		if (mfs_dinode_in_use(d))
			return MFS_CORRUPT("inode %llu: in use with mode 0 (its type lost): fork "
					   "formats %u/%u, link count %u, fork offset %u, %u/%u "
					   "extents, %llu blocks", (unsigned long long)ino,
					   d->dformat, d->aformat, nlink, forkoff,
					   mfs_get32(d->dnext), mfs_get32(d->anext),
					   (unsigned long long)mfs_get64(d->nblocks));
		return 0;
	}
	if (type != S_IFREG && type != S_IFDIR && type != S_IFLNK && type != S_IFCHR &&
	    type != S_IFBLK && type != S_IFIFO && type != S_IFSOCK)
		return MFS_CORRUPT("inode %llu: mode 0%o has no valid file type",
				   (unsigned long long)ino, mode);
	if (!fmt_ok_for_type(type, d->dformat))
		return MFS_CORRUPT("inode %llu: data fork format %u is not valid for mode 0%o",
				   (unsigned long long)ino, d->dformat, mode);
	if (nlink > MFS_LINK_MAX)
		return MFS_CORRUPT("inode %llu: link count %u is over %u", (unsigned long long)ino,
				   nlink, MFS_LINK_MAX);
	if (flags & ~(MFS_DIFLAG_IMMUTABLE | MFS_DIFLAG_APPEND | MFS_DIFLAG_NODUMP |
		      MFS_DIFLAG_NOATIME))
		return MFS_CORRUPT("inode %llu: unknown flags 0x%x", (unsigned long long)ino,
				   flags);
	if (mfs_get64(d->size) > (uint64_t)INT64_MAX)
		return MFS_CORRUPT("inode %llu: size %llu is over 2^63-1", (unsigned long long)ino,
				   (unsigned long long)mfs_get64(d->size));
	for (int i = 0; i < 4; i++)
		if (mfs_get32(ts[i]->nsec) >= 1000000000u)
			return MFS_CORRUPT("inode %llu: %s time has %u nanoseconds",
					   (unsigned long long)ino, tname[i], mfs_get32(ts[i]->nsec));
	if (forkoff) {
		if ((uint64_t)forkoff * 8 >= litsize)
			return MFS_CORRUPT("inode %llu: attribute fork offset %u bytes is outside the "
					   "%u-byte literal area", (unsigned long long)ino,
					   forkoff * 8, litsize);
		if (d->aformat != MFS_FMT_LOCAL && d->aformat != MFS_FMT_EXTENTS &&
		    d->aformat != MFS_FMT_BTREE)
			return MFS_CORRUPT("inode %llu: attribute fork at offset %u has format %u",
					   (unsigned long long)ino, forkoff * 8, d->aformat);
		dsize = forkoff * 8;
	} else {
		if (d->aformat != MFS_FMT_NONE)
			return MFS_CORRUPT("inode %llu: no attribute fork offset but attribute fork "
					   "format %u", (unsigned long long)ino, d->aformat);
		dsize = litsize;
	}
	asize = litsize - dsize;
	err = fork_check(ino, "data", d->dformat, mfs_get32(d->dnext), dsize,
			 d->dformat == MFS_FMT_LOCAL ? mfs_get64(d->size) : 0);
	if (!err)
		err = fork_check(ino, "attribute", d->aformat, mfs_get32(d->anext), asize, 0);
	return err;
}

/* ---- decode / encode ----------------------------------------------------------------------- */
static void get_time(struct timespec *ts, const struct mfs_timestamp *t)
{
	ts->tv_sec = (time_t)(int64_t)mfs_get64(t->sec);
	ts->tv_nsec = (long)mfs_get32(t->nsec);
}

static void put_time(struct mfs_timestamp *t, const struct timespec *ts)
{
	mfs_put64(t->sec, (uint64_t)(int64_t)ts->tv_sec);
	mfs_put32(t->nsec, (uint32_t)ts->tv_nsec);
	t->pad = 0;
}

static void decode(struct mfs_inode *ip, const struct mfs_dinode *d)
{
	ip->mode = mfs_get16(d->mode);
	ip->dformat = d->dformat;
	ip->aformat = d->aformat;
	ip->nlink = mfs_get32(d->nlink);
	ip->uid = mfs_get32(d->uid);
	ip->gid = mfs_get32(d->gid);
	ip->size = mfs_get64(d->size);
	ip->nblocks = mfs_get64(d->nblocks);
	get_time(&ip->atime, &d->atime);
	get_time(&ip->mtime, &d->mtime);
	get_time(&ip->ctime, &d->ctime);
	get_time(&ip->btime, &d->btime);
	ip->flags = mfs_get32(d->flags);
	ip->generation = mfs_get32(d->generation);
	ip->dnext = mfs_get32(d->dnext);
	ip->anext = mfs_get32(d->anext);
	ip->forkoff = mfs_get16(d->forkoff);
	ip->rdev = mfs_get32(d->rdev);
	ip->next_unlinked = mfs_get64(d->next_unlinked);
	memcpy(ip->lit, (const uint8_t *)d + sizeof(*d), ip->litsize);
}

/* The whole on-disk inode from the in-core one (lsn kept from `d`), sealed. */
static void encode(const struct mfs_inode *ip, struct mfs_dinode *d, uint32_t inodesize)
{
	uint64_t lsn = mfs_get64(d->lsn);

	memset(d, 0, inodesize);
	mfs_put32(d->magic, MFS_DINODE_MAGIC);
	mfs_put64(d->ino, ip->ino);
	mfs_put64(d->lsn, lsn);
	memcpy(d->uuid, ip->fs->geo.uuid, 16);
	mfs_put16(d->mode, ip->mode);
	d->dformat = ip->dformat;
	d->aformat = ip->aformat;
	mfs_put32(d->nlink, ip->nlink);
	mfs_put32(d->uid, ip->uid);
	mfs_put32(d->gid, ip->gid);
	mfs_put64(d->size, ip->size);
	mfs_put64(d->nblocks, ip->nblocks);
	put_time(&d->atime, &ip->atime);
	put_time(&d->mtime, &ip->mtime);
	put_time(&d->ctime, &ip->ctime);
	put_time(&d->btime, &ip->btime);
	mfs_put32(d->flags, ip->flags);
	mfs_put32(d->generation, ip->generation);
	mfs_put32(d->dnext, ip->dnext);
	mfs_put32(d->anext, ip->anext);
	mfs_put16(d->forkoff, ip->forkoff);
	mfs_put32(d->rdev, ip->rdev);
	mfs_put64(d->next_unlinked, ip->next_unlinked);
	memcpy((uint8_t *)d + sizeof(*d), ip->lit, ip->litsize);
	mfs_dinode_seal(d, inodesize);
}

/* Read, verify and check inode ip->ino into `ip`.  ip->stale is cleared first, so that an
 * invalidation racing with the read is not lost. */
static int inode_load(struct mfs_inode *ip)
{
	struct mfs_fs *fs = ip->fs;
	const struct mfs_geom *g = &fs->geo;
	uint64_t buf[MFS_MAX_INODESIZE / 8];
	const struct mfs_dinode *d = (const void *)buf;
	struct mfs_buf *bp;
	uint64_t nu;
	int err;

	__atomic_store_n(&ip->stale, 0, __ATOMIC_SEQ_CST);
	err = mfs_buf_read(fs->bc, mfs_ino_to_fsb(g, ip->ino), NULL, &bp);
	if (err) {
		mfs_log(MFS_LOG_ERR, "inode %llu: reading its block failed: %s",
			(unsigned long long)ip->ino, strerror(-err));
		goto fail;
	}
	memcpy(buf, (const char *)bp->data + mfs_ino_to_offset(g, ip->ino), g->inodesize);
	mfs_buf_put(bp);
	err = mfs_dinode_verify(d, g->inodesize, ip->ino, g->uuid);
	if (!err)
		err = mfs_dinode_check(d, g->inodesize, ip->ino);
	nu = mfs_get64(d->next_unlinked);
	if (!err && nu && mfs_ino_check(fs, nu))
		err = MFS_CORRUPT("inode %llu: next unlinked inode %llu lies outside the "
				  "filesystem", (unsigned long long)ip->ino,
				  (unsigned long long)nu);
	if (err)
		goto fail;
	decode(ip, d);
	return 0;
fail:
	__atomic_store_n(&ip->stale, 1, __ATOMIC_SEQ_CST);
	return err;
}

/* MFS_IGET_UNTRUSTED: is `ino` in an allocated chunk and not free?  0, -ENOENT, or an
 * error reading the inode btree. */
static int inobt_says_inuse(struct mfs_fs *fs, uint64_t ino)
{
	uint32_t agno = mfs_ino_to_agno(&fs->geo, ino);
	int err;

	mfs_ag_lock(fs, agno, MFS_AGL_INODES);     /* the inode btree holds still */
	err = mfs_ino_in_use_locked(fs, ino);
	mfs_ag_unlock(fs, agno, MFS_AGL_INODES);
	return err;
}

/* ---- get / put ------------------------------------------------------------------------------ */
static struct mfs_inode *hash_find(struct icache_shard *sh, uint64_t ino)
{
	for (struct mfs_inode *ip = *bucket_of(sh, ino); ip; ip = ip->hnext)
		if (ip->ino == ino)
			return ip;
	return NULL;
}

/* Drop one reference with the shard locked; the last reference of an unhashed (failed)
 * inode frees it, of a cached one puts it on the LRU and trims the LRU to its limit. */
static void put_locked(struct icache_shard *sh, struct mfs_inode *ip)
{
	if (--ip->refs)
		return;
	if (ip->state != IS_READY) {
		inode_free(ip);
		return;
	}
	lru_push(sh, ip);
	while (sh->unused > sh->max_unused) {
		struct mfs_inode *victim = lru_oldest(sh);

		lru_remove(sh, victim);
		hash_remove(sh, victim);
		sh->evictions++;
		inode_free(victim);
	}
}

int mfs_iget(struct mfs_fs *fs, uint64_t ino, unsigned flags, struct mfs_inode **out)
{
	struct mfs_icache *ic = fs->icache;
	struct icache_shard *sh;
	struct mfs_inode *ip;
	int err;

	*out = NULL;
	if (!ic)
		return -EINVAL;
	if (mfs_ino_check(fs, ino)) {
		if (flags & MFS_IGET_UNTRUSTED)
			return -EINVAL;
		return MFS_CORRUPT("inode %llu: the number lies outside every AG's inode chunks",
				   (unsigned long long)ino);
	}
	if (flags & MFS_IGET_UNTRUSTED) {
		err = inobt_says_inuse(fs, ino);
		if (err)
			return err;
	}

	sh = shard_of(ic, ino);
	pthread_mutex_lock(&sh->lock);
	ip = hash_find(sh, ino);
	if (ip) {
		if (ip->refs++ == 0 && ip->state == IS_READY)
			lru_remove(sh, ip);
		while (ip->state == IS_LOADING)
			pthread_cond_wait(&sh->loaded, &sh->lock);
		if (ip->state == IS_FAILED) {
			err = ip->load_err;
			put_locked(sh, ip);
			pthread_mutex_unlock(&sh->lock);
			return err;
		}
		sh->hits++;
		pthread_mutex_unlock(&sh->lock);
	} else {
		sh->misses++;
		ip = mfs_calloc(1, sizeof(*ip) + fs->geo.inodesize - sizeof(struct mfs_dinode));
		if (!ip) {
			pthread_mutex_unlock(&sh->lock);
			return -ENOMEM;
		}
		ip->fs = fs;
		ip->ino = ino;
		mfs_list_init(&ip->lru);
		ip->litsize = fs->geo.inodesize - (uint32_t)sizeof(struct mfs_dinode);
		if (pthread_rwlock_init(&ip->lock, NULL)) {
			free(ip);
			pthread_mutex_unlock(&sh->lock);
			return -ENOMEM;
		}
		ip->refs = 1;
		ip->state = IS_LOADING;
		if (sh->cached >= 2 * sh->nbuckets)
			shard_grow(sh);
		ip->hnext = *bucket_of(sh, ino);
		*bucket_of(sh, ino) = ip;
		sh->cached++;
		pthread_mutex_unlock(&sh->lock);

		err = inode_load(ip);

		pthread_mutex_lock(&sh->lock);
		if (err) {
			ip->state = IS_FAILED;
			ip->load_err = err;
			hash_remove(sh, ip);
			put_locked(sh, ip);
		} else {
			ip->state = IS_READY;
		}
		pthread_cond_broadcast(&sh->loaded);
		pthread_mutex_unlock(&sh->lock);
		if (err)
			return err;
	}

	if (__atomic_load_n(&ip->stale, __ATOMIC_SEQ_CST)) {
		if (!(flags & MFS_IGET_NOWAIT))
			pthread_rwlock_wrlock(&ip->lock);
		else if (pthread_rwlock_trywrlock(&ip->lock)) {
			mfs_iput(ip);
			return -EDEADLK;
		}
		err = 0;
		if (__atomic_load_n(&ip->stale, __ATOMIC_SEQ_CST)) {
			err = inode_load(ip);
			pthread_mutex_lock(&sh->lock);
			sh->reloads++;
			pthread_mutex_unlock(&sh->lock);
		}
		pthread_rwlock_unlock(&ip->lock);
		if (err) {
			mfs_iput(ip);
			return err;
		}
	}
	if (!(flags & MFS_IGET_FREE)) {
		uint16_t mode;

		if (!(flags & MFS_IGET_NOWAIT))
			pthread_rwlock_rdlock(&ip->lock);
		else if (pthread_rwlock_tryrdlock(&ip->lock)) {
			mfs_iput(ip);
			return -EDEADLK;
		}
		mode = ip->mode;
		pthread_rwlock_unlock(&ip->lock);
		if (mode == 0) {
			mfs_iput(ip);
			return -ENOENT;
		}
	}
	*out = ip;
	return 0;
}

int mfs_iget_locked(struct mfs_fs *fs, uint64_t ino, unsigned flags, int excl,
		    struct mfs_inode **out)
{
	struct mfs_inode *ip;
	int err = mfs_iget(fs, ino, flags, &ip);

	*out = NULL;
	if (err)
		return err;
	if (excl)
		pthread_rwlock_wrlock(&ip->lock);
	else
		pthread_rwlock_rdlock(&ip->lock);
	if (!ip->mode) {
		pthread_rwlock_unlock(&ip->lock);
		mfs_iput(ip);
		return -ENOENT;
	}
	*out = ip;
	return 0;
}

void mfs_ihold(struct mfs_inode *ip)
{
	struct icache_shard *sh = shard_of(ip->fs->icache, ip->ino);

	pthread_mutex_lock(&sh->lock);
	ip->refs++;
	pthread_mutex_unlock(&sh->lock);
}

void mfs_iput(struct mfs_inode *ip)
{
	struct icache_shard *sh;

	if (!ip)
		return;
	sh = shard_of(ip->fs->icache, ip->ino);
	pthread_mutex_lock(&sh->lock);
	put_locked(sh, ip);
	pthread_mutex_unlock(&sh->lock);
}

int mfs_inode_needs_inactive(struct mfs_inode *ip)
{
	struct icache_shard *sh = shard_of(ip->fs->icache, ip->ino);
	unsigned refs;

	pthread_mutex_lock(&sh->lock);
	refs = ip->refs;
	pthread_mutex_unlock(&sh->lock);
	return ip->mode != 0 && ip->nlink == 0 && refs == 1;
}

void mfs_inode_invalidate(struct mfs_fs *fs, uint64_t ino)
{
	struct icache_shard *sh;
	struct mfs_inode *ip;

	if (!fs->icache)
		return;
	sh = shard_of(fs->icache, ino);
	pthread_mutex_lock(&sh->lock);
	ip = hash_find(sh, ino);
	if (ip)
		__atomic_store_n(&ip->stale, 1, __ATOMIC_SEQ_CST);
	pthread_mutex_unlock(&sh->lock);
}

int mfs_inode_reload(struct mfs_inode *ip)
{
	return inode_load(ip);
}

/* ---- logging ------------------------------------------------------------------------------ */
int mfs_inode_lock_ag(struct mfs_trans *tp, struct mfs_inode *ip)
{
	if (mfs_trans_fs(tp) != ip->fs)
		return -EINVAL;
	return mfs_trans_lock_agl_ordered(tp, mfs_ino_to_agno(&ip->fs->geo, ip->ino),
					  MFS_AGL_INODES);
}

int mfs_inode_log(struct mfs_trans *tp, struct mfs_inode *ip)
{
	struct mfs_fs *fs = ip->fs;
	const struct mfs_geom *g = &fs->geo;
	uint64_t buf[MFS_MAX_INODESIZE / 8];
	struct mfs_dinode *d = (void *)buf;
	struct mfs_buf *bp;
	char *slot;
	int err;

	if (mfs_trans_fs(tp) != fs)
		return -EINVAL;
	/* Refuse to write an inode that would not read back. */
	memset(buf, 0, g->inodesize);
	encode(ip, d, g->inodesize);
	err = mfs_dinode_check(d, g->inodesize, ip->ino);
	if (err) {
		mfs_log(MFS_LOG_ERR, "inode %llu: refusing to log invalid in-core fields",
			(unsigned long long)ip->ino);
		return -EINVAL;
	}
	err = mfs_inode_lock_ag(tp, ip);
	if (err)
		return err;
	err = mfs_buf_read(fs->bc, mfs_ino_to_fsb(g, ip->ino), NULL, &bp);
	if (err)
		return err;
	err = mfs_trans_modify(tp, bp);
	if (!err) {
		slot = (char *)bp->data + mfs_ino_to_offset(g, ip->ino);
		/* keep the on-disk lsn, then reseal */
		memcpy(&d->lsn, slot + offsetof(struct mfs_dinode, lsn), sizeof(d->lsn));
		mfs_dinode_seal(d, g->inodesize);
		memcpy(slot, d, g->inodesize);
	}
	mfs_buf_put(bp);
	return err;
}

/* ---- blocks of inode-owned btrees ----------------------------------------------------- */

int mfs_inode_btree_alloc(struct mfs_btree_cur *cur, struct mfs_inode *ip,
			  uint64_t rmap_offset, uint64_t *fsb)
{
	struct mfs_alloc_args a = {
		.type = MFS_ALLOC_NEAR,
		.minlen = 1,
		.maxlen = 1,
		.owner = ip ? ip->ino : 0,
		.offset = rmap_offset,
	};
	int err;

	if (!cur->tp || !ip)
		return -EINVAL;
	a.target = cur->root.fsb ? cur->root.fsb : mfs_ino_to_fsb(&ip->fs->geo, ip->ino);
	err = mfs_alloc_extent(cur->tp, &a);
	if (err)
		return err;
	ip->nblocks++;
	*fsb = a.fsb;
	return 0;
}

int mfs_inode_btree_free(struct mfs_btree_cur *cur, struct mfs_inode *ip,
			 uint64_t rmap_offset, uint64_t fsb)
{
	int err;

	if (!cur->tp || !ip)
		return -EINVAL;
	if (ip->nblocks == 0)
		return MFS_CORRUPT("inode %llu: block count already 0 when freeing %s block %llu",
				   (unsigned long long)ip->ino, cur->ops->name,
				   (unsigned long long)fsb);
	err = mfs_free_extent(cur->tp, fsb, 1, ip->ino, rmap_offset);
	if (err)
		return err;
	ip->nblocks--;
	return 0;
}
