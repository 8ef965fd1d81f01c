/*
 * repair_priv.h — what the rebuilders (repair_*.c) share with the engine's core (repair.c):
 * one repair in progress, its scratch layout in the client's descriptor, the abort checks,
 * the sort wrapper, and the reason string.
 *
 * Scratch layout: arrays are carved one after another out of fds[0], from the descriptor's
 * size on entry (rounded up to 64 KiB) on, each bounded by the record count its estimate
 * allows (a store past it fails with -EFBIG: the estimate was wrong, the repair aborts),
 * so the reserve made up front covers all of them.  Everything written there is punched out
 * and the file truncated back to its size on entry when the repair ends, however it ends.
 */
#ifndef MFS_REPAIR_PRIV_H
#define MFS_REPAIR_PRIV_H

#include <stdatomic.h>
#include <stdint.h>

#include "headroom.h"
#include "repair.h"
#include "xfarray.h"

#define REP_MAX_ARRAYS 12u

struct rep_array_plan {
	size_t recsize;
	uint64_t max_nr;
};

struct rep {
	struct mfs_repair_ctx *rc;
	struct mfs_fs *fs;
	atomic_int stop;            /* raised by rep_poll(): the arrays' abort flag */
	int stop_err;               /* why stop was raised (a negative errno) */
	unsigned ncmp;              /* comparisons seen by the sort wrapper */
	int sort_hooked;            /* MFS_REPAIR_AT_SORTING was called */
	uint64_t base0;             /* first byte of fds[0] the repair uses */
	uint64_t size0;             /* size of fds[0] on entry */
	uint64_t next;              /* next free byte of the layout */
	uint64_t end;               /* end of the layout (what the reserve covers) */
	struct mfs_xfarray *arr[REP_MAX_ARRAYS];
	unsigned narr;
};

struct mfs_trans;

/* Record a reason (the first one wins) and return err. */
int rep_fail(struct rep *r, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A failed scratch operation: the reason names `what` and the errno (-ENOMEM for a short
 * transfer: scratch exhausted). */
int rep_scratch_err(struct rep *r, int err, const char *what);

/* Abort checks: 0, or -ECANCELED (pressure flag, cancelled hook) with the reason set; also
 * raises r->stop so that a sort in progress stops. */
int rep_poll(struct rep *r);
/* The test hook at `at` (0 without one). */
int rep_hook(struct rep *r, enum mfs_repair_point at);
/* The end of a rebuild that changes the filesystem in one transaction: unless `err` is set
 * already, the test hook at MFS_REPAIR_AT_BUILT and the abort checks (rep_poll); then commit
 * `tp`, or cancel it when any of them says stop.  `tp` is consumed either way.  A failed
 * commit's reason names the object (`fmt`, printf-style: "the AG 3 header").  0 or the
 * error, with the reason set. */
int rep_commit(struct rep *r, struct mfs_trans *tp, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* Another inode object's rebuild (type, ino), run whole by the engine from inside this one:
 * r's context (scratch, abort sources, changed) but no quiesce (held already, by this
 * repair) and no test hook.  0 or its error, its reason in sub->reason. */
int rep_nested(struct rep *r, struct mfs_repair_ctx *sub, uint32_t type, uint64_t ino);
/* Tell the caller (rc->changed) that inode ino's attributes changed in a committed rebuild. */
void rep_changed(struct rep *r, uint64_t ino);

/*
 * Plan the scratch for `n` arrays, probe the headroom and reserve 1.5 times the estimate in
 * fds[0]: 0, or the refusal (-ENOMEM headroom, -ENOSPC/-EFBIG/-EPERM... from fallocate,
 * -ECANCELED) with a reason naming the figures and what to do.  Then rep_array() hands the
 * arrays out in the planned order.
 */
int rep_reserve(struct rep *r, const struct rep_array_plan *plan, unsigned n);
int rep_array(struct rep *r, size_t recsize, uint64_t max_nr, struct mfs_xfarray **out);

/* Sort with cmp, polling the abort sources and calling the AT_SORTING hook; an array found
 * in order by one pass (stopped at the first pair out of order) is not sorted again. */
int rep_sort(struct rep *r, struct mfs_xfarray *a, mfs_xfarray_cmp_fn cmp, const char *what);

/* Rebuilders (repair_agbtree.c). */
int rep_allocbt(struct rep *r);     /* MFS_SCRUB_BNOBT and MFS_SCRUB_CNTBT: both trees */
int rep_inobt(struct rep *r);       /* MFS_SCRUB_INOBT */
int rep_rmapbt(struct rep *r);      /* MFS_SCRUB_RMAPBT (offline only) */
int rep_agfl(struct rep *r);        /* MFS_SCRUB_AGFL */
int rep_summary(struct rep *r);     /* MFS_SCRUB_SUMMARY (repair_summary.c) */
int rep_sb(struct rep *r);          /* MFS_SCRUB_SB: a superblock copy or the primary (repair_sb.c) */
int rep_geo_check(struct rep *r);   /* the geometry finds AG 1's superblock and header (repair_sb.c) */
int rep_aghdr(struct rep *r);       /* MFS_SCRUB_AGH: roots, counters, fields (repair_agh.c) */
int rep_journal(struct rep *r);     /* MFS_SCRUB_JOURNAL: header online, reset offline */

/* Give the scratch back (the engine does it after a rebuild; a rebuild that runs another
 * rebuilder after its own commit does it in between). */
void rep_release(struct rep *r);

/* An AG header's counters recounted from its trees (repair_agh.c), under the AG lock the
 * caller holds: `which` the trees to verify and count — REP_AGH_FREE (freeblks, longest,
 * btreeblks) and/or REP_AGH_INODES (icount, ifree).  A tree that does not verify, or
 * trees that disagree (the two free-space trees and the space the reverse map leaves; the
 * inode btree and the reverse map's inode chunks) fail with -EFSCORRUPTED and a reason. */
struct mfs_agh;
struct mfs_buf;
#define REP_AGH_FREE   ((1u << MFS_BT_BNO) | (1u << MFS_BT_CNT) | (1u << MFS_BT_RMAP))
#define REP_AGH_INODES (1u << MFS_BT_INO)
struct rep_agh_counts {
	uint64_t freeblks, longest, btreeblks, icount, ifree;
};
int rep_agh_counters(struct rep *r, uint32_t agno, struct mfs_buf *agh_bp, unsigned which,
		     struct rep_agh_counts *c);
/* Whether agh's counters of `which` differ from c; out (may be agh, or NULL) gets them. */
int rep_agh_put_counts(const struct mfs_agh *agh, unsigned which, const struct rep_agh_counts *c,
		       struct mfs_agh *out);
int rep_nlinks(struct rep *r);      /* MFS_SCRUB_NLINKS (repair_nlinks.c) */
int rep_orphans(struct rep *r);     /* MFS_SCRUB_ORPHANS: every AG's list (repair_orphans.c) */
int rep_bmap(struct rep *r);        /* MFS_SCRUB_BMAP: an inode's extent map (repair_bmap.c) */
int rep_inode(struct rep *r);       /* MFS_SCRUB_INODE: an inode's core (repair_inode.c) */

/*
 * Link inode `ino` into /lost+found (repair_lostfound.c), for an inode that lost its last
 * name (link counts) or whose entry a directory rebuild could not keep.  The name is
 * "#<ino>" ("#<ino>.<n>" when that is taken); /lost+found (a directory, mode 0700, owner
 * root) is made in the root when the root has no entry of that name.  A directory's ".."
 * becomes /lost+found, which gains a link.  `nlink`: the inode's link count afterwards
 * (0: left as it is, the caller counted the new entry already).  One transaction,
 * committed here.  The caller holds no inode lock and no AG lock (online: inside the
 * namespace quiesce, rc->quiesce, so that no name changes meanwhile).  0; -ENOENT (the inode
 * is free), -EINVAL (the root or /lost+found itself), -EFSCORRUPTED (the root, or a
 * /lost+found that is not a directory), or another negative errno; r's reason says why.
 */
int rep_lostfound_link(struct rep *r, uint64_t ino, uint32_t nlink);

/*
 * Call fn on every inode of AG agno's allocated chunks, from the committed cluster buffers
 * (repair_orphans.c), in inode order: fn(priv, ino, dinode, isfree) as scrub_chunk_walk's.
 * `locked`: the caller holds the AG lock (else it is taken for the walk: fn must then not
 * take an inode lock).  An unreadable header, inode btree or inode block is -EFSCORRUPTED
 * with the reason set.
 */
struct mfs_dinode;
typedef int (*rep_dinode_fn)(void *priv, uint64_t ino, const struct mfs_dinode *d, int isfree);
int rep_walk_inodes(struct rep *r, uint32_t agno, int locked, rep_dinode_fn fn, void *priv);
/* The orphan list of one AG (repair_orphans.c): *cands gets how many inodes a rebuild of
 * it gathers (the size of the array rep_orphans_ag needs, before a margin); rep_orphans_ag
 * rebuilds it if it is wrong, with C an empty array of that many records (left empty), the
 * namespace quiesced (online); *listed gets the members. */
#define REP_ORPHAN_RECSIZE 24u
int rep_orphans_count(struct rep *r, uint32_t agno, uint64_t *cands);
int rep_orphans_ag(struct rep *r, uint32_t agno, struct mfs_xfarray *C, uint64_t *listed);

/* The space inode ip owns in AG agno, as reverse-map pieces (repair_owners.c): fn is called
 * with (priv, ino, agbno, len, rmap offset) for each; its non-zero return stops the walk. */
struct mfs_inode;
typedef int (*rep_owned_fn)(void *priv, uint64_t ino, uint32_t agbno, uint32_t len,
			    uint64_t offset);
int rep_inode_owned(struct mfs_inode *ip, uint32_t agno, rep_owned_fn fn, void *priv);

/* ---- one inode's forks (repair_ifork.c; the directory, attribute and symlink rebuilders) -- */
struct mfs_trans;
/* One extent the reverse map gives an inode (scratch record; fsb is never 0). */
struct rep_iext {
	uint64_t fsb;
	uint64_t offset;            /* the rmap offset, flags included */
	uint32_t len;
	uint32_t pad;
};
/* Blocks the reverse map gives an inode, by kind. */
struct rep_iblocks {
	uint64_t data;              /* data extents */
	uint64_t data_bt;           /* blocks of the data fork's btree (extent map or names) */
	uint64_t attr;              /* attribute fork: btree and value blocks */
};
typedef int (*rep_iext_want_fn)(uint64_t offset);

/* Take inode rc->ino for a rebuild: referenced, locked exclusive, still the committed one.
 * An inode not of file type ifmt (S_IFDIR...; 0: any) has nothing to rebuild, as its checker
 * finds nothing to check: 0 with *ipp NULL. */
int rep_inode_take(struct rep *r, uint16_t ifmt, const char *what, struct mfs_inode **ipp);
void rep_inode_drop(struct mfs_inode *ip);
/* The end of a rebuild: the inode dropped, then (rebuilt: the commit went through) the
 * daemon told through rc->changed that its attributes changed behind the kernel's back. */
void rep_inode_done(struct rep *r, struct mfs_inode *ip, int rebuilt);
/* Walk every AG's reverse map (each AG locked in turn): count the inode's blocks into *n and
 * append the extents `want` accepts to `a` (a NULL: count only). */
int rep_inode_rmap(struct rep *r, uint64_t ino, rep_iext_want_fn want, struct mfs_xfarray *a,
		   struct rep_iblocks *n);
/* Another inode's committed on-disk copy (under its AG lock, never its inode lock): its mode
 * and, for a directory, the ".." it stores (0 if none).  -EINVAL bad number, -ENOENT not
 * allocated, or a read / corruption error. */
int rep_inode_peek(struct mfs_fs *fs, uint64_t ino, uint16_t *mode, uint64_t *parent);
/* The scratch of a fork rebuild, all in fds[0]: the inode's old extents (`want`), the raw
 * records of its surviving leaves, the entries kept, and an xblob for their variable parts. */
struct mfs_xblob;
struct rep_iscratch {
	struct mfs_xfarray *old, *raw, *keep;
	struct mfs_xblob *blob;
};
/* Reserve it for at most nrec raw records of reclen bytes, nkeep entries of keeplen and
 * blob_bytes of blobs (nb: the inode's blocks, as counted), gather the old extents (none
 * with want NULL: a fork stored inline owns no block, and a forced rebuild of every inode
 * then walks no reverse map) and call the MFS_REPAIR_AT_RESERVED hook.  rep_inode_scratch_done() frees the xblob's control
 * block (the arrays are the engine's). */
int rep_inode_scratch(struct rep *r, struct mfs_inode *ip, rep_iext_want_fn want,
		      const struct rep_iblocks *nb, uint64_t nrec, uint32_t reclen, uint64_t nkeep,
		      uint32_t keeplen, uint64_t blob_bytes, struct rep_iscratch *s);
void rep_inode_scratch_done(struct rep_iscratch *s);
/* The records of every leaf among the `old` extents `want` accepts that verifies as a block
 * of this inode's btree of `magic` (also leaves a damaged node no longer reaches), appended
 * to raw (reclen bytes each, all-zero ones skipped); blocks that do not verify are counted
 * in *unreadable.  Then rep_sort(raw, rep_cmp_le64) puts them in key order. */
int rep_inode_leaves(struct rep *r, struct mfs_inode *ip, struct mfs_xfarray *old,
		     rep_iext_want_fn want, uint32_t magic, uint32_t reclen, const char *what,
		     struct mfs_xfarray *raw, uint64_t *unreadable);
int rep_cmp_le64(const void *a, const void *b, void *priv);   /* records keyed by an le64 */
/* The rebuild's transaction, with the inode's AG and those of the old extents locked. */
int rep_inode_trans(struct rep *r, struct mfs_inode *ip, struct mfs_xfarray *old,
		    struct mfs_trans **tpp);
/* Free the old extents in tp (buffers forgotten), subtracting them from ip->nblocks. */
int rep_inode_free(struct rep *r, struct mfs_trans *tp, struct mfs_inode *ip,
		   struct mfs_xfarray *old);
/* Refuse a rebuild whose transaction would not fit in the journal (see rep_log_fits). */
int rep_inode_log_fits(struct rep *r, struct mfs_inode *ip, uint64_t nimg, uint64_t nrev,
		       const char *what);
/* The inode logged, then rep_commit; on any error the transaction is cancelled and the
 * in-core inode read again. */
int rep_inode_commit(struct rep *r, struct mfs_trans *tp, struct mfs_inode *ip,
		     const char *what);
void rep_inode_cancel(struct mfs_trans *tp, struct mfs_inode *ip);

/* Rebuilders of inode objects (rc->ino): repair_dir.c, repair_xattr.c, repair_symlink.c. */
int rep_dir(struct rep *r);         /* MFS_SCRUB_DIR */
int rep_xattr(struct rep *r);       /* MFS_SCRUB_XATTR */
int rep_symlink(struct rep *r);     /* MFS_SCRUB_SYMLINK */

#endif
