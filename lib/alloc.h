/*
 * alloc.h — the extent allocator: finds free space in the by-block and by-length trees,
 * and keeps both of them and the reverse map in step, inside one transaction.
 */
#ifndef MFS_ALLOC_H
#define MFS_ALLOC_H

#include <stdint.h>

struct mfs_trans;

enum mfs_alloc_type {
	MFS_ALLOC_EXACT,     /* starting exactly at `target` (minlen..maxlen blocks) */
	MFS_ALLOC_NEAR,      /* as close to `target` as possible, in its AG first */
	MFS_ALLOC_ANY,       /* anywhere; `target`'s AG is tried first, then the others */
};

struct mfs_alloc_args {
	/* in */
	enum mfs_alloc_type type;
	uint64_t target;     /* fsblock hint */
	uint32_t minlen;     /* >= 1 */
	uint32_t maxlen;     /* >= minlen; the allocator gives as much as it can up to this */
	uint32_t align;      /* start agbno a multiple of this (0 or 1: none) */
	uint64_t owner;      /* reverse-map owner: inode number or MFS_OWN_* */
	uint64_t offset;     /* reverse-map offset (file block | MFS_RMAP_* flags) */
	/* out */
	uint64_t fsb;
	uint32_t len;
};

/* Allocate an extent.  -ENOSPC when nothing satisfies minlen/align; the transaction is
 * then unchanged.  Locks the AGs it uses for the rest of the transaction.  NEAR and ANY
 * wait for a busy AG only briefly (an online rebuild holds one for long) and try the
 * others; -EDEADLK (transaction unchanged: cancel and retry) when none of those had room
 * and the lock order now forbids waiting for the busy one. */
int mfs_alloc_extent(struct mfs_trans *tp, struct mfs_alloc_args *args);

/* The same inside AG `agno` only, whose header buffer the caller holds (and whose lock tp
 * holds): for the inode btree's own blocks, which need 4-byte pointers in their AG.  NEAR and
 * ANY stay in that AG; ENOSPC if it cannot satisfy the request. */
struct mfs_buf;
struct mfs_fs;
int mfs_alloc_extent_ag(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp,
			struct mfs_alloc_args *args);

/* Free an extent previously allocated to (owner, offset); it must match the reverse map
 * exactly or lie inside one of owner's records (partial free).  Merges with free
 * neighbours. -EFSCORRUPTED if the space is already free or owned by another. */
int mfs_free_extent(struct mfs_trans *tp, uint64_t fsb, uint32_t len, uint64_t owner,
		    uint64_t offset);

/*
 * The free-space trees alone, for a rebuild that changes them itself (online repair: its
 * new tree takes free space, an old tree's blocks go back): remove [agbno, agbno+len) of AG
 * `agno` from free space (it must lie inside one free extent), or add it (busy until tp is
 * durable, merged with its free neighbours; a double free is -EFSCORRUPTED), in both the
 * by-block and the by-length tree, in tp (which holds the AG's lock; the caller holds its
 * header buffer).  Nothing else: no reverse-map record and no free-list fix-up (the list
 * must already hold what the trees' splits take, and have room for what their merges give
 * back).  flags MFS_FREESP_NOCOUNT: the header's free block count and longest extent are
 * left alone too (a rebuild that sets them once all its edits are made); without it they
 * follow.  mfs_freesp_longest: the longest free extent by the by-length tree (0: none).
 */
#define MFS_FREESP_NOCOUNT 1u
int mfs_freesp_take(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp,
		    uint32_t agbno, uint32_t len, unsigned flags);
int mfs_freesp_give(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp,
		    uint32_t agbno, uint32_t len, unsigned flags);
/* Would mfs_freesp_take of [agbno, agbno+len) find what it needs (the by-block extent
 * holding it and that extent's by-length record)?  Read only: 0, or -EFSCORRUPTED with a
 * message naming what is missing. */
int mfs_freesp_check(struct mfs_fs *fs, uint32_t agno, struct mfs_buf *agh_bp, uint32_t agbno,
		     uint32_t len);
int mfs_freesp_longest(struct mfs_trans *tp, uint32_t agno, struct mfs_buf *agh_bp,
		       uint32_t *longest);

/* Free blocks in AG `agno` (from its header), and in the whole filesystem. */
int mfs_ag_freeblks(struct mfs_trans *tp, uint32_t agno, uint32_t *freeblks);

#endif
