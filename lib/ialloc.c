/*
 * ialloc.c — inode allocation and freeing through the inode btree (see ialloc.h).
 *
 * Invariants kept inside each transaction, for every AG it changes:
 *
 *   - one inode btree record per allocated chunk; freecount == popcount(freemask);
 *   - bit i of a chunk's freemask is set exactly when inode startino + i is written as a
 *     free inode (mode 0, valid header and CRC, nothing else: not mfs_dinode_in_use);
 *   - AG header icount == 64 * records, ifree == sum of the records' freecounts;
 *   - a chunk's blocks are owned by MFS_OWN_INODES in the reverse map.
 *
 * A new chunk is written whole (every inode a free one) with mfs_trans_get_new() before its
 * record is inserted, so no reader ever finds a record pointing at unwritten inodes.
 */
#include "mem.h"
#include "ialloc.h"
#include "ag.h"
#include "alloc.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "inode_init.h"
#include "log.h"
#include "mendfs_format.h"
#include "trans.h"
#include "verify.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* Lock AG `agno` in tp: wait only when no higher AG is held; -EDEADLK when it is busy and
 * waiting could deadlock. */
static int lock_ag(struct mfs_trans *tp, uint32_t agno)
{
	return mfs_trans_lock_agl_ordered(tp, agno, MFS_AGL_ALL);
}

static int agh_add(struct mfs_trans *tp, struct mfs_buf *agh_bp, int32_t dicount,
		   int32_t difree)
{
	struct mfs_agh *agh = agh_bp->data;
	int err = mfs_trans_modify(tp, agh_bp);

	if (err)
		return err;
	mfs_put32(agh->icount, mfs_get32(agh->icount) + (uint32_t)dicount);
	mfs_put32(agh->ifree, mfs_get32(agh->ifree) + (uint32_t)difree);
	return 0;
}

static void invalidate_chunk(struct mfs_fs *fs, uint32_t agno, uint32_t startino)
{
	if (!fs->icache)
		return;
	for (uint32_t i = 0; i < MFS_INODES_PER_CHUNK; i++)
		mfs_inode_invalidate(fs, mfs_agino_to_ino(&fs->geo, agno, startino + i));
}

/*
 * The free-chunk hint.  Every AG keeps in core (fs->ag[agno], under the AG lock) a sorted
 * array of the start inodes of chunks that may have a free inode, so that taking a free
 * inode near the parent costs a binary search and a btree lookup instead of a walk over
 * every full chunk after the parent's (with a million files in one directory: 15,000
 * records per create).
 *
 * What it promises: nothing about correctness — every candidate is checked against its
 * inode btree record before use, and one that is full or gone is dropped then.  It is
 * loaded from the tree on the first allocation from the AG; afterwards new chunks and
 * chunks that get a freed inode are added (even when their transaction is cancelled later:
 * an extra entry costs one lookup).  A chunk can be missing only after a cancelled
 * transaction had found it full or the tree was rebuilt; that costs locality, and when the
 * array runs empty while the header counts free inodes it is loaded again.  A failed
 * allocation of the array unloads it, and take_free then walks the tree as it always did.
 */
static void hint_unload(struct mfs_perag *pag)
{
	free(pag->ichunks);
	pag->ichunks = NULL;
	pag->nichunks = pag->ichunks_cap = 0;
	pag->ichunks_loaded = 0;
}

void mfs_ialloc_forget_hint(struct mfs_fs *fs, uint32_t agno)
{
	if (agno < fs->geo.agcount)
		hint_unload(&fs->ag[agno]);
}

/* Index of the first entry >= startino (nichunks if none). */
static uint32_t hint_search(const struct mfs_perag *pag, uint32_t startino)
{
	uint32_t lo = 0, hi = pag->nichunks;

	while (lo < hi) {
		uint32_t mid = lo + (hi - lo) / 2;

		if (pag->ichunks[mid] < startino)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* Add chunk `startino` (nothing to do when it is there or the hint is not loaded). */
static void hint_add(struct mfs_perag *pag, uint32_t startino)
{
	uint32_t i;

	if (!pag->ichunks_loaded)
		return;
	i = hint_search(pag, startino);
	if (i < pag->nichunks && pag->ichunks[i] == startino)
		return;
	if (pag->nichunks == pag->ichunks_cap) {
		uint32_t cap = pag->ichunks_cap ? pag->ichunks_cap * 2 : 64;
		uint32_t *v = mfs_realloc(pag->ichunks, (size_t)cap * sizeof(*v));

		if (!v) {
			hint_unload(pag);       /* it would miss a chunk: walk the tree instead */
			return;
		}
		pag->ichunks = v;
		pag->ichunks_cap = cap;
	}
	memmove(pag->ichunks + i + 1, pag->ichunks + i,
		(size_t)(pag->nichunks - i) * sizeof(*pag->ichunks));
	pag->ichunks[i] = startino;
	pag->nichunks++;
}

static void hint_drop(struct mfs_perag *pag, uint32_t i)
{
	memmove(pag->ichunks + i, pag->ichunks + i + 1,
		(size_t)(pag->nichunks - i - 1) * sizeof(*pag->ichunks));
	pag->nichunks--;
}

static int hint_load_rec(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_inobt_rec *r = rec;
	struct mfs_perag *pag = priv;

	(void)cur;
	if (mfs_get32(r->freecount) > 0) {
		hint_add(pag, mfs_get32(r->startino));
		if (!pag->ichunks_loaded)
			return -ENOMEM;
	}
	return 0;
}

/* (Re)load the hint of AG `agno` from its inode btree.  0 (loaded, or unloaded when out of
 * memory: the caller walks the tree) or an I/O / corruption error. */
static int hint_load(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	struct mfs_perag *pag = &fs->ag[agno];
	struct mfs_btree_cur cur;
	int err;

	pag->nichunks = 0;
	pag->ichunks_loaded = 1;
	mfs_ag_cur_init(&cur, fs, tp, agno, MFS_BT_INO, agh_bp);
	err = mfs_btree_query_range(&cur, NULL, NULL, hint_load_rec, pag);
	mfs_btree_cur_release(&cur);
	if (err == -ENOMEM && !pag->ichunks_loaded)
		return 0;
	if (err)
		hint_unload(pag);
	return err;
}

/*
 * Find the chunk to take from through the hint: the first one at or after `start` with a
 * free inode, wrapping round; the cursor is left on its record, in *rec.  *found = 0 when
 * there is none (after one reload of an empty hint) or the hint is not loaded.
 */
static int hint_find(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp,
		     struct mfs_btree_cur *cur, uint32_t start, struct mfs_inobt_rec *rec,
		     int *found)
{
	struct mfs_perag *pag = &mfs_trans_fs(tp)->ag[agno];
	int reloaded = 0, err, stat;

	*found = 0;
	if (!pag->ichunks_loaded) {
		err = hint_load(tp, agno, agh_bp);
		if (err || !pag->ichunks_loaded)
			return err;
		reloaded = 1;
	}
	for (;;) {
		struct mfs_inobt_key key;
		uint32_t i;

		if (!pag->nichunks) {
			if (reloaded)
				return 0;
			reloaded = 1;
			err = hint_load(tp, agno, agh_bp);
			if (err || !pag->ichunks_loaded)
				return err;
			continue;
		}
		i = hint_search(pag, start);
		if (i == pag->nichunks)
			i = 0;
		mfs_put32(key.startino, pag->ichunks[i]);
		err = mfs_btree_lookup_get(cur, &key, MFS_LOOKUP_EQ, rec, &stat);
		if (err)
			return err;
		if (stat && mfs_get32(rec->freecount) > 0) {
			*found = 1;
			return 0;
		}
		hint_drop(pag, i);
	}
}

/*
 * Take a free inode from an existing chunk of the AG: the first chunk at or after the
 * hint's with a free inode, wrapping round to the AG's first chunk.  *ino = 0 when the
 * tree has none (the header said otherwise: corruption).
 */
static int take_free(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp,
		     uint32_t hint_agino, uint64_t *ino)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	struct mfs_btree_cur cur;
	struct mfs_inobt_key key;
	struct mfs_inobt_rec rec;
	uint32_t start = hint_agino - hint_agino % MFS_INODES_PER_CHUNK;
	int err, stat = 0, wrapped = 0, found;

	*ino = 0;
	mfs_ag_cur_init(&cur, fs, tp, agno, MFS_BT_INO, agh_bp);
	err = hint_find(tp, agno, agh_bp, &cur, start, &rec, &found);
	if (err)
		goto out;
	if (found)
		goto take;
	if (fs->ag[agno].ichunks_loaded)
		goto out;                         /* none free anywhere */
	/* No hint (out of memory): walk the tree from the hint's chunk. */
	mfs_put32(key.startino, start);
	err = mfs_btree_lookup(&cur, &key, MFS_LOOKUP_GE, &stat);
	for (;;) {
		if (err)
			goto out;
		if (!stat) {
			if (wrapped || start == 0)
				goto out;         /* none free anywhere */
			wrapped = 1;
			mfs_put32(key.startino, 0);
			err = mfs_btree_lookup(&cur, &key, MFS_LOOKUP_GE, &stat);
			continue;
		}
		err = mfs_btree_get(&cur, &rec, &stat);
		if (err)
			goto out;
		if (wrapped && mfs_get32(rec.startino) >= start)
			goto out;
		if (mfs_get32(rec.freecount) > 0)
			break;
		err = mfs_btree_next(&cur, &stat);
	}
take:
	{
		uint64_t mask = mfs_get64(rec.freemask);
		uint32_t i, fc = mfs_get32(rec.freecount);

		if (!mask || (uint32_t)__builtin_popcountll(mask) != fc) {
			err = MFS_CORRUPT("AG %u inode btree: chunk at agino %u has free count %u and "
					  "free mask 0x%llx", agno, mfs_get32(rec.startino), fc,
					  (unsigned long long)mask);
			goto out;
		}
		i = (uint32_t)__builtin_ctzll(mask);
		mfs_put64(rec.freemask, mask & ~(1ull << i));
		mfs_put32(rec.freecount, fc - 1);
		err = mfs_btree_update(&cur, &rec);
		if (err)
			goto out;
		err = agh_add(tp, agh_bp, 0, -1);
		if (err)
			goto out;
		*ino = mfs_agino_to_ino(&fs->geo, agno, mfs_get32(rec.startino) + i);
	}
out:
	mfs_btree_cur_release(&cur);
	return err;
}

/* Allocate, write and record a new chunk in AG `agno` near `target_agbno`; its first inode
 * is taken.  -ENOSPC when the AG has no aligned room. */
static int new_chunk(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp,
		     uint32_t target_agbno, uint64_t *ino)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	const struct mfs_geom *g = &fs->geo;
	uint32_t ipb = 1u << g->inopblog, agbno, startino;
	struct mfs_alloc_args args;
	struct mfs_btree_cur cur;
	struct mfs_inobt_rec rec;
	int err;

	memset(&args, 0, sizeof(args));
	args.type = MFS_ALLOC_NEAR;
	args.target = mfs_agbno_to_fsb(g, agno, target_agbno);
	args.minlen = args.maxlen = g->chunkblocks;
	args.align = g->chunkblocks;
	args.owner = MFS_OWN_INODES;
	err = mfs_alloc_extent_ag(tp, agno, agh_bp, &args);
	if (err)
		return err;
	agbno = mfs_fsb_to_agbno(g, args.fsb);
	if (args.len != g->chunkblocks || agbno % g->chunkblocks)
		return MFS_CORRUPT("AG %u: the allocator gave %u blocks at %u for an inode chunk "
				   "of %u aligned blocks", agno, args.len, agbno, g->chunkblocks);
	startino = mfs_agbno_to_agino(g, agbno);

	for (uint32_t b = 0; b < g->chunkblocks; b++) {
		struct mfs_buf *bp;

		err = mfs_trans_get_new(tp, args.fsb + b, 0, &bp);
		if (err)
			return err;
		for (uint32_t i = 0; i < ipb && b * ipb + i < MFS_INODES_PER_CHUNK; i++) {
			uint64_t n = mfs_agino_to_ino(g, agno, startino + b * ipb + i);

			mfs_dinode_init((char *)bp->data + mfs_ino_to_offset(g, n), g->inodesize,
					n, g->uuid, NULL);
		}
	}
	mfs_put32(rec.startino, startino);
	mfs_put32(rec.freecount, MFS_INODES_PER_CHUNK - 1);
	mfs_put64(rec.freemask, ~1ull);
	mfs_ag_cur_init(&cur, fs, tp, agno, MFS_BT_INO, agh_bp);
	err = mfs_btree_insert(&cur, &rec);
	mfs_btree_cur_release(&cur);
	if (err == -EEXIST)
		err = MFS_CORRUPT("AG %u inode btree: a record for chunk %u exists but its blocks "
				  "were free", agno, startino);
	if (!err)
		err = agh_add(tp, agh_bp, MFS_INODES_PER_CHUNK, MFS_INODES_PER_CHUNK - 1);
	if (err)
		return err;
	hint_add(&fs->ag[agno], startino);
	invalidate_chunk(fs, agno, startino);
	*ino = mfs_agino_to_ino(g, agno, startino);
	return 0;
}

static uint32_t next_generation(void)
{
	static uint64_t seq;
	struct timespec ts;
	uint64_t x;

	clock_gettime(CLOCK_REALTIME, &ts);
	x = __atomic_add_fetch(&seq, 1, __ATOMIC_RELAXED) ^ ((uint64_t)ts.tv_nsec << 20) ^
	    (uint64_t)ts.tv_sec;
	/* splitmix64 finaliser */
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return (uint32_t)(x ^ (x >> 31));
}

/* Write the newly taken inode `ino` (a free inode on disk) as an in-use one. */
static int init_new_inode(struct mfs_trans *tp, uint64_t ino, uint16_t mode)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	const struct mfs_geom *g = &fs->geo;
	struct mfs_inode_init_args a;
	struct mfs_buf *bp;
	char *slot;
	int err;

	err = mfs_buf_read(fs->bc, mfs_ino_to_fsb(g, ino), NULL, &bp);
	if (err)
		return err;
	slot = (char *)bp->data + mfs_ino_to_offset(g, ino);
	err = mfs_dinode_verify(slot, g->inodesize, ino, g->uuid);
	if (!err && mfs_dinode_in_use(slot))
		err = MFS_CORRUPT("inode %llu: the inode btree says free, but the inode is in use "
				  "(mode 0%o, %u links, data fork format %u)",
				  (unsigned long long)ino,
				  mfs_get16(((struct mfs_dinode *)(void *)slot)->mode),
				  mfs_get32(((struct mfs_dinode *)(void *)slot)->nlink),
				  ((struct mfs_dinode *)(void *)slot)->dformat);
	if (!err)
		err = mfs_trans_modify(tp, bp);
	if (!err) {
		memset(&a, 0, sizeof(a));
		a.mode = mode;
		a.dformat = mfs_inode_default_dformat(mode);
		a.nlink = 0;
		clock_gettime(CLOCK_REALTIME, &a.time);
		a.generation = next_generation();
		mfs_dinode_init(slot, g->inodesize, ino, g->uuid, &a);
	}
	mfs_buf_put(bp);
	return err;
}

static int mode_ok(uint16_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFCHR: case S_IFBLK: case S_IFIFO:
	case S_IFSOCK:
		return 1;
	}
	return 0;
}

int mfs_ialloc(struct mfs_trans *tp, uint64_t parent_hint, uint16_t mode, uint64_t *ino)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	const struct mfs_geom *g = &fs->geo;
	uint32_t pagno = 0, pagino = 0;
	int skipped = 0, err = 0;

	*ino = 0;
	if (!mode_ok(mode))
		return -EINVAL;
	if (parent_hint && mfs_ino_check(fs, parent_hint) == 0) {
		pagno = mfs_ino_to_agno(g, parent_hint);
		pagino = mfs_ino_to_agino(g, parent_hint);
	}
	for (uint32_t i = 0; i < g->agcount; i++) {
		uint32_t agno = (pagno + i) % g->agcount;
		uint32_t hint = agno == pagno ? pagino : 0;
		struct mfs_buf *agh_bp;
		uint64_t got = 0;

		err = lock_ag(tp, agno);
		if (err == -EDEADLK) {
			skipped = 1;
			continue;
		}
		if (err)
			return err;
		err = mfs_read_agh(fs, agno, &agh_bp);
		if (err)
			return err;
		if (mfs_get32(((struct mfs_agh *)agh_bp->data)->ifree) > 0) {
			err = take_free(tp, agno, agh_bp, hint, &got);
			if (!err && !got)
				err = MFS_CORRUPT("AG %u: header counts %u free inodes but no inode "
						  "chunk has one", agno,
						  mfs_get32(((struct mfs_agh *)agh_bp->data)->ifree));
		} else {
			err = new_chunk(tp, agno, agh_bp, mfs_agino_to_agbno(g, hint), &got);
		}
		mfs_buf_put(agh_bp);
		if (err == -ENOSPC)
			continue;
		if (err)
			return err;
		err = init_new_inode(tp, got, mode);
		if (err)
			return err;
		mfs_inode_invalidate(fs, got);
		*ino = got;
		return 0;
	}
	return skipped ? -EDEADLK : -ENOSPC;
}

int mfs_ifree(struct mfs_trans *tp, uint64_t ino)
{
	struct mfs_fs *fs = mfs_trans_fs(tp);
	const struct mfs_geom *g = &fs->geo;
	uint32_t agno, agino, startino, idx, fc;
	uint64_t mask;
	struct mfs_btree_cur cur;
	struct mfs_inobt_key key;
	struct mfs_inobt_rec rec;
	struct mfs_buf *agh_bp, *bp;
	int err, stat = 0, chunk_free;

	if (mfs_ino_check(fs, ino))
		return -EINVAL;
	agno = mfs_ino_to_agno(g, ino);
	agino = mfs_ino_to_agino(g, ino);
	err = lock_ag(tp, agno);
	if (err)
		return err;
	err = mfs_read_agh(fs, agno, &agh_bp);
	if (err)
		return err;
	mfs_ag_cur_init(&cur, fs, tp, agno, MFS_BT_INO, agh_bp);
	mfs_put32(key.startino, agino);
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_LE, &rec, &stat);
	if (err)
		goto out;
	startino = stat ? mfs_get32(rec.startino) : 0;
	if (!stat || agino - startino >= MFS_INODES_PER_CHUNK) {
		err = MFS_CORRUPT("inode %llu: freeing an inode that no chunk of AG %u's inode "
				  "btree holds", (unsigned long long)ino, agno);
		goto out;
	}
	idx = agino - startino;
	mask = mfs_get64(rec.freemask);
	fc = mfs_get32(rec.freecount);
	if ((mask >> idx) & 1) {
		err = MFS_CORRUPT("inode %llu: freeing an inode that the inode btree says is free "
				  "(AG %u chunk %u)", (unsigned long long)ino, agno, startino);
		goto out;
	}

	/* the inode itself */
	err = mfs_buf_read(fs->bc, mfs_ino_to_fsb(g, ino), NULL, &bp);
	if (err)
		goto out;
	err = mfs_trans_modify(tp, bp);
	if (!err)
		mfs_dinode_init((char *)bp->data + mfs_ino_to_offset(g, ino), g->inodesize, ino,
				g->uuid, NULL);
	mfs_buf_put(bp);
	if (err)
		goto out;

	/* its chunk's record, and the chunk itself when it is now all free */
	mask |= 1ull << idx;
	fc++;
	chunk_free = mask == ~0ull;
	if (chunk_free) {
		uint64_t fsb = mfs_agbno_to_fsb(g, agno, mfs_agino_to_agbno(g, startino));

		err = mfs_btree_delete(&cur);
		if (!err)
			err = agh_add(tp, agh_bp, -(int32_t)MFS_INODES_PER_CHUNK,
				      -(int32_t)(MFS_INODES_PER_CHUNK - 1));
		for (uint32_t b = 0; !err && b < g->chunkblocks; b++)
			err = mfs_trans_forget(tp, fsb + b);
		if (!err)
			err = mfs_free_extent(tp, fsb, g->chunkblocks, MFS_OWN_INODES, 0);
		if (!err)
			invalidate_chunk(fs, agno, startino);
	} else {
		mfs_put64(rec.freemask, mask);
		mfs_put32(rec.freecount, fc);
		err = mfs_btree_update(&cur, &rec);
		if (!err)
			err = agh_add(tp, agh_bp, 0, 1);
		if (!err) {
			hint_add(&fs->ag[agno], startino);
			mfs_inode_invalidate(fs, ino);
		}
	}
out:
	mfs_btree_cur_release(&cur);
	mfs_buf_put(agh_bp);
	return err;
}

int mfs_inobt_chunk_locked(struct mfs_fs *fs, uint64_t ino, uint64_t *first,
			   uint64_t *freemask)
{
	const struct mfs_geom *g = &fs->geo;
	uint32_t agno = mfs_ino_to_agno(g, ino), agino = mfs_ino_to_agino(g, ino);
	struct mfs_inobt_key key;
	struct mfs_inobt_rec rec;
	struct mfs_btree_cur cur;
	struct mfs_buf *hbp;
	int err, stat = 0;

	err = mfs_read_agh_inodes(fs, agno, &hbp);     /* maybe under the inode lock alone */
	if (err)
		return err;
	mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_INO, hbp);
	mfs_put32(key.startino, agino);
	err = mfs_btree_lookup_get(&cur, &key, MFS_LOOKUP_LE, &rec, &stat);
	mfs_btree_cur_release(&cur);
	mfs_buf_put(hbp);
	if (err)
		return err;
	if (!stat || agino - mfs_get32(rec.startino) >= MFS_INODES_PER_CHUNK)
		return -ENOENT;
	if (first)
		*first = mfs_agino_to_ino(g, agno, mfs_get32(rec.startino));
	if (freemask)
		*freemask = mfs_get64(rec.freemask);
	return 0;
}

int mfs_ino_in_use_locked(struct mfs_fs *fs, uint64_t ino)
{
	uint64_t first, freemask;
	int err = mfs_inobt_chunk_locked(fs, ino, &first, &freemask);

	if (err)
		return err;
	return (freemask >> (ino - first)) & 1 ? -ENOENT : 0;
}
