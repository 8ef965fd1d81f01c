/*
 * btree.h — the generic btree engine and its bulk loader.
 *
 * One engine serves every tree of mendfs (free space by block and by length, inode chunks,
 * reverse map, inode extent maps); what differs between trees is a small ops table:
 * record and key sizes, the key comparison, where new blocks come from, and where the root
 * pointer lives.  Blocks have the layout of struct mfs_btree_block (mendfs_format.h).
 *
 * Keys are unique in every mendfs tree (records never overlap), so a key identifies one
 * record.  A tree always has a root block; an empty tree is one empty leaf.
 *
 * A cursor holds the path from the root to its current position.  Changing a tree needs a
 * transaction (trans.h) in the cursor; read-only cursors have tp == NULL.  The caller holds
 * the lock that protects the tree (AG lock or inode lock) for the cursor's whole life.
 * After mfs_trans_cancel() release the cursor and start a new one from the restored root:
 * the buffers it holds may describe blocks the cancel dropped.
 */
#ifndef MFS_BTREE_H
#define MFS_BTREE_H

#include <stdint.h>
#include "mendfs_format.h"

struct mfs_fs;
struct mfs_trans;
struct mfs_buf;
struct mfs_btree_cur;

struct mfs_btree_ops {
	const char *name;           /* "free-space-by-block btree", used in messages */
	uint32_t magic;
	uint16_t rec_len;           /* bytes per leaf record */
	uint16_t key_len;           /* bytes per node key */
	uint8_t ptr_len;            /* 4: agbno inside cur->agno; 8: fsblock */

	int (*cmp_keys)(const void *k1, const void *k2);     /* <0, 0, >0 */
	void (*rec_key)(const void *rec, void *key);         /* the key of a record */

	/* Optional: is this record sane on its own (in range, non-empty...)?  0 or
	 * -EFSCORRUPTED after a message naming the record.  Used by verify. */
	int (*check_rec)(struct mfs_btree_cur *cur, const void *rec);

	/* A block for a new node (split, new root), and giving one back (merge, root
	 * collapse).  Required for trees that are modified through the cursor. */
	int (*alloc_block)(struct mfs_btree_cur *cur, uint64_t *fsb);
	int (*free_block)(struct mfs_btree_cur *cur, uint64_t fsb);

	/* The root block or the height changed (cur->root has the new values): record them
	 * (in the AG header, the inode...) inside cur->tp. */
	int (*set_root)(struct mfs_btree_cur *cur);
};

struct mfs_btree_root {
	uint64_t fsb;               /* fsblock of the root block */
	unsigned levels;            /* >= 1; 1 means the root is a leaf */
};

struct mfs_btree_level {
	struct mfs_buf *bp;         /* held buffer of the block at this level, or NULL */
	int idx;                    /* index of the current record/key in it */
};

struct mfs_btree_cur {
	struct mfs_fs *fs;
	struct mfs_trans *tp;       /* NULL: read-only */
	const struct mfs_btree_ops *ops;
	uint64_t owner;             /* block header owner: AG number or inode number */
	uint32_t agno;              /* AG of 4-byte pointers */
	struct mfs_btree_root root;
	void *priv;                 /* for the ops */
	unsigned flags;             /* MFS_BTREE_CUR_*, set after mfs_btree_cur_init */
	/* private to btree.c */
	struct mfs_btree_level path[MFS_BTREE_MAXLEVELS];   /* [0] is the leaf */
	int valid;                  /* positioned on a record */
	unsigned maxrecs[2];        /* [0] leaf, [1] node capacity (set by mfs_btree_cur_init) */
};

/* A read-only cursor (tp NULL) that sweeps a tree once: blocks it brings into the buffer
 * cache leave it again when the cursor lets go of them (mfs_buf_read_once), so a walk of a
 * tree larger than the cache neither grows the cache nor evicts everything else. */
#define MFS_BTREE_CUR_ONCE  0x1u

void mfs_btree_cur_init(struct mfs_btree_cur *cur, struct mfs_fs *fs, struct mfs_trans *tp,
			const struct mfs_btree_ops *ops, uint64_t owner, uint32_t agno,
			const struct mfs_btree_root *root, void *priv);
/* Release the buffers the cursor holds.  Always call, also after errors. */
void mfs_btree_cur_release(struct mfs_btree_cur *cur);

/* Records (leaf) and key/pointer pairs (node) that fit in one block. */
unsigned mfs_btree_maxrecs(const struct mfs_btree_ops *ops, uint32_t blocksize, int leaf);
unsigned mfs_btree_minrecs(const struct mfs_btree_ops *ops, uint32_t blocksize, int leaf);

enum mfs_btree_lookup {
	MFS_LOOKUP_EQ,              /* the record with exactly this key */
	MFS_LOOKUP_LE,              /* the last record with key <= the key */
	MFS_LOOKUP_GE,              /* the first record with key >= the key */
};

/* Position the cursor.  *stat = 1 when a record satisfies the lookup, 0 otherwise. */
int mfs_btree_lookup(struct mfs_btree_cur *cur, const void *key, enum mfs_btree_lookup how,
		     int *stat);
/* mfs_btree_lookup, then mfs_btree_get of the record found: *stat = 1 with `rec` filled
 * when a record satisfies the lookup, 0 otherwise (rec untouched). */
int mfs_btree_lookup_get(struct mfs_btree_cur *cur, const void *key, enum mfs_btree_lookup how,
			 void *rec, int *stat);
/* The record under the cursor (*stat = 0: not positioned on one). */
int mfs_btree_get(struct mfs_btree_cur *cur, void *rec, int *stat);
/* Move to the next / previous record (*stat = 0 at the end). */
int mfs_btree_next(struct mfs_btree_cur *cur, int *stat);
int mfs_btree_prev(struct mfs_btree_cur *cur, int *stat);

/* Insert a record; -EEXIST if its key is present.  The cursor is left unpositioned. */
int mfs_btree_insert(struct mfs_btree_cur *cur, const void *rec);
/* Replace the record under the cursor; the new key must keep the order of the tree. */
int mfs_btree_update(struct mfs_btree_cur *cur, const void *rec);
/* Delete the record under the cursor, merging or rebalancing blocks that fall under
 * minrecs and collapsing the root.  The cursor is left unpositioned. */
int mfs_btree_delete(struct mfs_btree_cur *cur);

/* Call fn on every record with lo <= key <= hi (NULL bounds are open), in key order.
 * fn returns 0 to go on, > 0 to stop (returned), < 0 an error (returned). */
typedef int (*mfs_btree_rec_fn)(struct mfs_btree_cur *cur, const void *rec, void *priv);
int mfs_btree_query_range(struct mfs_btree_cur *cur, const void *lo, const void *hi,
			  mfs_btree_rec_fn fn, void *priv);

/* Call fn on every block of the tree (root first, then depth first).  Only each block's own
 * checks are made, and a set of the blocks seen (memory that grows with the tree) stops
 * the walk at a block reached twice. */
typedef int (*mfs_btree_blk_fn)(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level,
				void *priv);
int mfs_btree_visit_blocks(struct mfs_btree_cur *cur, mfs_btree_blk_fn fn, void *priv);
/* Inside such an fn at level 0: the leaf's records and their count (the count was bounded
 * by the block's capacity when the block was read, so all n records lie in the block). */
const void *mfs_btree_leaf_recs(const struct mfs_btree_cur *cur, unsigned *n);

/* Full structural check: every block passes its verifier (magic, CRC, UUID, self, owner,
 * level), all leaves at the same depth, numrecs within [minrecs, maxrecs] except the root,
 * keys strictly increasing across the whole tree, each node key equal to the first key of
 * its child, ops->check_rec on every record, and no block reached twice (a shared child or
 * a loop: found by the checks above, with no set of the blocks seen, so the walk's memory
 * does not grow with the tree; btree.c says why).  Returns 0 or -EFSCORRUPTED /
 * -EFSBADCRC with a message naming the tree, block and problem.  Optionally counts records
 * and blocks. */
int mfs_btree_verify(struct mfs_btree_cur *cur, uint64_t *nrecs, uint64_t *nblocks);
/* Is block fsb a block of the tree (*found)?  Found by the descent from the root by the
 * block's own first key, so without a list of the tree's blocks whatever its size (the
 * reverse map's check of an owner's tree blocks).  A block of another kind, owner or tree,
 * or one no pointer leads to, is not; 0 or an error met on the way down. */
int mfs_btree_has_block(struct mfs_btree_cur *cur, uint64_t fsb, int *found);
/* For a tree that passed mfs_btree_verify under a lock still held and was changed since
 * only through this engine: fn on every block, depth first, without reading the leaves
 * (fn at level 0 gets a leaf's number only: no mfs_btree_leaf_recs there) and with no set
 * of the blocks seen, so no memory grows with the tree.  Shared children in a tree changed
 * behind the engine's back would be visited twice, never looped on: more than max blocks
 * (e.g. the count verify gave, or the AG's size) is -EFSCORRUPTED.  nblocks (may be NULL):
 * the blocks visited, 0 after an error. */
int mfs_btree_visit_trusted(struct mfs_btree_cur *cur, uint64_t max, mfs_btree_blk_fn fn,
			    void *priv, uint64_t *nblocks);
/* mfs_btree_visit_trusted's count alone: 1 + the entries of every node. */
int mfs_btree_count_trusted(struct mfs_btree_cur *cur, uint64_t max, uint64_t *nblocks);
/* mfs_btree_verify and mfs_btree_visit_blocks in one walk: fn is called on each block
 * after the block passed its checks (a leaf's records are then in order after every record
 * fn saw before).  A tree that fails the check part way has had fn called on the blocks
 * before the damage; a node reached a second time through a damaged pointer may be among
 * them (with the nodes down to its first leaf), a leaf never. */
int mfs_btree_verify_visit(struct mfs_btree_cur *cur, mfs_btree_blk_fn fn, void *priv,
			   uint64_t *nrecs, uint64_t *nblocks);

/* ---- bulk loader ------------------------------------------------------------------------ */
/*
 * Build a whole tree from a sorted stream of records into blocks reserved beforehand:
 * first ask mfs_bload_geometry() how many blocks the tree needs, reserve them, then call
 * mfs_bload_build(), which takes exactly that many blocks from claim_block and asks
 * get_recs for the records in key order.  Leaves and nodes are filled to fill_pct percent
 * of their capacity (0: the default, 75), spread so that no block but the root falls
 * under minrecs.  Nothing is linked anywhere: the caller stores the returned root.
 */
struct mfs_bload {
	const struct mfs_btree_ops *ops;
	uint64_t owner;
	uint32_t agno;
	uint64_t nrecs;
	unsigned fill_pct;
	unsigned flags;              /* MFS_BLOAD_ORDERED */
	/* Copy the next n records, in key order, into recs. */
	int (*get_recs)(void *priv, void *recs, unsigned n);
	/* The next reserved block. */
	int (*claim_block)(void *priv, uint64_t *fsb);
	void *priv;
};

#define MFS_BLOAD_DEFAULT_FILL 75u
/* Ordered new blocks (needs a transaction): every block is built in the loader's memory
 * and written in place as soon as it is finished (mfs_trans_ordered_write), never joined to
 * the transaction or kept in the cache.  Only for blocks that are free space nothing on disk
 * points at until the transaction storing the new root commits (see trans.h). */
#define MFS_BLOAD_ORDERED      0x1u

int mfs_bload_geometry(const struct mfs_btree_ops *ops, uint32_t blocksize, uint64_t nrecs,
		       unsigned fill_pct, uint64_t *nblocks, unsigned *levels);
/* With tp NULL the new blocks are written through the cache (mkfs, offline tools);
 * with a transaction they join it, or with MFS_BLOAD_ORDERED are written in place. */
int mfs_bload_build(struct mfs_fs *fs, struct mfs_trans *tp, struct mfs_bload *bl,
		    struct mfs_btree_root *root);

#endif
