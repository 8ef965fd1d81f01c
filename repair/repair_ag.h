/*
 * repair_ag.h — what the rebuilders of an AG's structures share (repair_agbtree.c: the
 * free-space and inode btrees and these helpers; repair_rmapbt.c: the reverse map;
 * repair_agfl.c: the free list; repair_space.c: free-space edits): one AG being rebuilt —
 * its lock and header held in the one transaction of the rebuild — and the pieces every
 * rebuild uses: extents in scratch, the list of a new tree's blocks, the bulk load, the
 * journal-size check and the commit.
 */
#ifndef MFS_REPAIR_AG_H
#define MFS_REPAIR_AG_H

#include <stdint.h>

#include "ag.h"
#include "btree.h"
#include "repair_priv.h"

struct mfs_agh;
struct mfs_buf;
struct mfs_fs;
struct mfs_trans;

#define REP_AGFL_EXTRA_CAP  (MFS_AGFL_SIZE_MAX / 2)   /* leftover blocks put on the AGFL up to */

/* An extent in scratch, host order (start >= 3: never an all-zero record). */
struct rext {
	uint32_t start, len;
};

/* Blocks of the special owners counted by the survey of the reverse map. */
enum { OWN_I_AG, OWN_I_INODES, OWN_I_INOBT, OWN_I_N };

/* One AG being rebuilt: tp holds its lock, agh_bp its header (both from rep_ag_begin). */
struct agrep {
	struct rep *r;
	struct mfs_fs *fs;
	uint32_t agno, aglen;
	struct mfs_trans *tp;
	struct mfs_buf *agh_bp;
	uint64_t nrmap, rmap_blocks;
	uint64_t own_blocks[OWN_I_N];
	uint64_t seen;
	int fl_rewritten;            /* the free list's indices are being rewritten */
	int ordered;                 /* the new trees' blocks are free space nothing points
				      * at: rep_load_tree writes them in place, unlogged
				      * (MFS_BLOAD_ORDERED, trans.h) */
	int reap;                    /* rep_reap_mark: the commit rolls into the reap */
	uint64_t reaped;             /* old blocks the reap has freed */
	uint64_t recorded;           /* new blocks accounted for after the commit (the
				      * free-space rebuild: recorded in the reverse map; the
				      * reverse map's: taken out of free space) */
	int unsafe;                  /* after the commit, the AG not yet fit to be seen (the
				      * free-space trees list blocks in use): no test hook */
	uint64_t reap_logged;        /* blocks its batches logged since its last checkpoint */
};

/* The new trees' blocks, in the order the loaders claim them: in memory, or (x not NULL)
 * in a scratch array the rebuild reserved — a fragmented AG's trees take hundreds of
 * thousands of blocks.  rep_blocks_get: block i (0 or a scratch error, negative). */
struct blocks {
	uint32_t *v;
	uint64_t n, cap, next;
	struct mfs_xfarray *x;
};
int rep_blocks_get(const struct blocks *b, uint64_t i, uint32_t *blk);

struct mfs_agh *rep_agh(const struct agrep *ar);

/*
 * Lock the AG in a new transaction, read its header, verify the reverse map and count what
 * it holds.  counters_only: a header whose only faults are what the rebuild rewrites is
 * accepted (2: the free list's indices too); negative: the reverse map is not looked at.
 * Any but 0 (the inode btree's rebuild) takes the AG's space lock only (fs.h).
 * Every outcome ends with rep_ag_cancel() (after a commit it only releases).
 */
int rep_ag_begin(struct rep *r, struct agrep *ar, int counters_only);
void rep_ag_cancel(struct agrep *ar);
/* The last chance to stop (test hook, pressure, cancel), then the one commit. */
int rep_ag_finish(struct agrep *ar);
/* Refuse (-ENOSPC, both sizes named) a rebuild whose one transaction cannot fit the log:
 * nimg blocks changed (the new tree; a margin is added), nrev freed. */
int rep_log_fits(struct agrep *ar, uint64_t nimg, uint64_t nrev, const char *what);

/* Blocks of a tree of n records as the bulk loader builds it (UINT64_MAX on error). */
uint64_t rep_geo_blocks(const struct mfs_btree_ops *ops, uint32_t bs, uint64_t n,
			unsigned *levels);
/* Join a block the new tree will be written into, so that a cancel restores its bytes. */
int rep_join_block(struct agrep *ar, uint32_t agbno);
/* Append [s, s+l) to b (a rep_piece_fn). */
int rep_blocks_add(struct agrep *ar, uint32_t s, uint32_t l, void *priv);
/* Bulk-load tree t from a (sorted; struct rext records for the free-space trees, on-disk
 * records otherwise) into the blocks of b, in the transaction. */
int rep_load_tree(struct agrep *ar, enum mfs_ag_tree t, struct mfs_xfarray *a,
		  struct blocks *b, struct mfs_btree_root *root);
/* The same from a record source: get(priv, rec) gives the next on-disk record of nrecs. */
typedef int (*rep_rec_fn)(void *priv, void *rec);
int rep_load_tree_fn(struct agrep *ar, enum mfs_ag_tree t, uint64_t nrecs, rep_rec_fn get,
		     void *priv, struct blocks *b, struct mfs_btree_root *root);
void rep_set_root(struct mfs_agh *agh, enum mfs_ag_tree t, const struct mfs_fs *fs,
		  const struct mfs_btree_root *root);

/* Call fn on the blocks [skip, skip + limit) of the extents of `a`, in order, as pieces. */
typedef int (*rep_piece_fn)(struct agrep *ar, uint32_t start, uint32_t len, void *priv);

int rep_ext_pieces(struct agrep *ar, struct mfs_xfarray *a, uint64_t skip, uint64_t limit,
		   rep_piece_fn fn, void *priv);
/* Blocks in the extents of a; a scratch error goes to *err_out (positive errno). */
uint64_t rep_ext_blocks(struct mfs_xfarray *a, uint64_t *err_out);
/* Append the extent [s, s+l) to a. */
int rep_add_ext(struct agrep *ar, struct mfs_xfarray *a, uint32_t s, uint32_t l);
/* [s, s+l) stops being MFS_OWN_AG: cut out of the one reverse-map record that covers it (a
 * rep_piece_fn). */
int rep_rmap_cut(struct agrep *ar, uint32_t s, uint32_t l, void *priv);
/* Blocks [s, s+l) leave their tree in the transaction (freed, or put on the free list):
 * at the commit their buffers are dropped unwritten (mfs_trans_forget). */
int rep_forget_blocks(struct agrep *ar, uint32_t s, uint32_t l);
/* An old tree block (MFS_OWN_AG) onto the free list, forgotten: the list gives blocks back
 * to free space without a revoke (lib/alloc.c), so its logged images must go now, as a
 * tree's block freed onto the list has them go (the btree engine's free). */
int rep_agfl_put_old(struct agrep *ar, uint32_t agbno);

/* Extents a rebuild adds (the pieces it takes from free space), in the order pushed: in
 * memory while few, or (x not NULL) in a scratch array the rebuild reserved — a
 * fragmented AG's are hundreds of thousands.  rep_addset_get: piece i (0 or a scratch
 * error, negative); rep_addset_clear: none (a scratch array is refilled by appends). */
struct rep_addset {
	struct rext *v;
	uint64_t n, cap;
	struct mfs_xfarray *x;
};
int rep_addset_push(struct agrep *ar, struct rep_addset *a, uint32_t s, uint32_t l);
int rep_addset_get(const struct rep_addset *a, uint64_t i, struct rext *e);
void rep_addset_clear(struct rep_addset *a);

/* Free extents counted by length, to take the longest ones for a new tree: lengths below
 * REP_LH_SMALL counted, the others listed (at most the AG's blocks / REP_LH_SMALL). */
#define REP_LH_SMALL 4096u
struct rep_lenhist {
	uint64_t *small;             /* extents of each length below REP_LH_SMALL */
	uint32_t *big;               /* the lengths of the others, one per extent */
	uint64_t nbig, capbig;
	uint64_t blocks;             /* free blocks in all */
};
int rep_lh_init(struct rep *r, struct rep_lenhist *h);
int rep_lh_add(struct agrep *ar, struct rep_lenhist *h, uint32_t len);
/* The long lengths longest first: before rep_lh_pick / rep_pick_free. */
void rep_lh_sort(struct rep_lenhist *h);
/* The length L such that the extents longer than L, and enough of those of length L, hold
 * want blocks: *above = blocks in the longer ones, *pieces = extents taken; -ENOSPC when
 * all of them are too few. */
int rep_lh_pick(const struct rep_lenhist *h, uint64_t want, uint32_t *L, uint64_t *above,
		uint64_t *pieces);
/* N = want blocks of the free extents F (block order, counted in h), the longest extents
 * first, in block order among equals; each piece is a whole extent or, for the last one,
 * its end.  `what` names the new tree in the refusal when F is too small. */
int rep_pick_free(struct agrep *ar, struct mfs_xfarray *F, const struct rep_lenhist *h,
		  uint64_t want, struct rep_addset *N, const char *what);
void rep_lh_free(struct rep_lenhist *h);

/* Order of uint32_t records (tree block lists). */
int rep_cmp_u32(const void *a, const void *b, void *priv);

/* Free-space tree edits that leave the reverse map alone (repair_space.c): [s, s+l) leaves
 * one free extent, or joins free space (busy until the commit is durable, merged with its
 * neighbours); the longest free extent as the by-length tree now says. */
int rep_space_take(struct agrep *ar, uint32_t s, uint32_t l);
int rep_space_give(struct agrep *ar, uint32_t s, uint32_t l);
int rep_space_longest(struct agrep *ar, uint32_t *longest);

/*
 * The reap (repair_reap.c): a rebuild whose old tree blocks are too many to free in its one
 * transaction leaves them AG-owned (MFS_OWN_AG in the reverse map, in no tree, off the free
 * list) and marks the AG header (MFS_AGH_REAP) in that transaction: rep_reap_mark, before
 * rep_ag_finish.  Its commit then keeps the AG lock (mfs_trans_roll) and the rebuild frees
 * those blocks in bounded transactions under the same lock: rep_reap_piece on each (a
 * rep_piece_fn), then rep_reap_end, which clears the mark in the last one.  Nobody sees
 * the AG in between; after a crash the mark tells a read-write mount (or mendfs_repair) to
 * finish the job by rebuilding the free-space trees, whose old blocks include those.
 */
int rep_reap_mark(struct agrep *ar);
int rep_reap_piece(struct agrep *ar, uint32_t s, uint32_t l, void *priv);
/* The test point MFS_REPAIR_AT_REAPED: right after the commit and after each batch. */
int rep_reap_hook(struct agrep *ar);
/* The test point MFS_REPAIR_AT_ACCOUNTING (ar->unsafe): at the start of the accounting
 * and after each of its batches. */
int rep_account_hook(struct agrep *ar);
/* The accounting of a rebuild's new blocks after its commit (ar->unsafe from begin to a
 * successful end; the AG header held in ar->agh_bp, the caller's to put after end): begin
 * reads the header and calls the test point, end commits the last batch; a failure of
 * either, or err given to end, stops the journal (rep_reap_kill; state: what the AG holds
 * meanwhile). */
int rep_account_begin(struct agrep *ar, const char *state);
int rep_account_end(struct agrep *ar, int err, const char *what, const char *state);
/* After each change made after the commit (recording new blocks, freeing old ones): the
 * transaction rolled when it has logged a batch; what: the step named if that fails. */
int rep_reap_step(struct agrep *ar, const char *what);
/* Is tp's batch full (what it would log: *nimg, *nrev)?  rep_reap_step's test. */
int rep_reap_batch_full(const struct mfs_trans *tp, uint64_t *nimg, uint64_t *nrev);
/* A failure after the commit: the reason says the new trees are in place and that the
 * next read-write mount or mendfs_repair finishes the job (the mark stays). */
int rep_reap_fail(struct agrep *ar, int err, const char *what);
/* Such a failure while ar->unsafe: the journal stopped too (state: what the AG holds). */
int rep_reap_kill(struct agrep *ar, int err, const char *state);
int rep_reap_end(struct agrep *ar);
/* A rebuild that frees all the old blocks in its one transaction (the logged ways), the AG
 * header joined: an AG marked by a reap cut short has nothing left to free after it. */
void rep_reap_unmark(struct agrep *ar);

/* Tests only (check_repair_frag): blocks logged by one batch of the reap (256); old blocks
 * freed by every reap so far. */
extern uint64_t rep_reap_batch, rep_reap_freed;

/* Tests only (check_repair_frag; no option or message sets them): after rep_abt_dry_after
 * reverse-map changes the free-space rebuild's recording of its new blocks finds the old
 * blocks that feed the AG free list used up, as a real, hard-to-build case would, and
 * feeds it from the allocator: rep_abt_alloc_feeds counts those blocks;
 * rep_abt_force_logged makes every free-space rebuild take the logged plan
 * (repair_agbtree.c). */
extern uint64_t rep_abt_dry_after, rep_abt_alloc_feeds;
extern int rep_abt_force_logged;
/* Tests only (check_repair_frag): after the commit, the free-space rebuild's recording of
 * its new trees' pieces, or the reverse map's taking of its new tree's pieces out of free
 * space, fails (-EIO) after this many (repair_agbtree.c). */
extern uint64_t rep_late_fail_after;
/* Tests only (check_repair_frag): the reverse map's rebuild plans at most this many
 * special owners' records apart (the rest go with the owners', sorted whole). */
extern uint64_t rep_rmap_special_max;

#endif
