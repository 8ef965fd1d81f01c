/*
 * scrub_priv.h — what the checkers (repair/scrub_*.c) share: reporting findings, record
 * arrays, and one AG's trees walked and collected under the AG's lock.
 *
 * Locking rules of every checker (see scrub.h):
 *   - AG objects: scrub_ag_lock() (the AG's mutex, the one transactions take through
 *     mfs_trans_lock_ag) around every read of the AG's header, free list and trees, so the
 *     checker sees only committed states;
 *   - inode objects: a referenced inode (mfs_iget) and ip->lock shared; AGs are then locked
 *     one at a time for cross-references (inode lock before AG lock, like transactions);
 *   - never an inode lock while holding an AG lock: a checker that must look at inodes from
 *     an AG walk (the reverse map's owners) collects under the AG lock, drops it, takes the
 *     inode, re-takes the AG and re-checks that what it collected is still there.
 * Nothing read from the image is trusted: every number is range-checked before use.
 */
#ifndef MFS_SCRUB_PRIV_H
#define MFS_SCRUB_PRIV_H

#include <stddef.h>
#include <stdint.h>

#include "btree.h"
#include "mendfs_format.h"
#include "scrub.h"

struct mfs_fs;
struct mfs_buf;
struct mfs_inode;

/* ---- findings ---------------------------------------------------------------------------- */
/* One finding: the message names the object, the problem, expected versus found. */
void scrub_report(struct mfs_scrub_ctx *ctx, uint32_t flag, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* -ECANCELED when the caller asked to stop, else 0. */
int scrub_cancelled(struct mfs_scrub_ctx *ctx);
/* strerror with the two corruption codes spelled out. */
const char *scrub_errstr(int err);

/* ---- growable arrays of fixed-size records ------------------------------------------------- */
struct scrub_recs {
	uint8_t *v;
	size_t n, cap, len;        /* len: bytes per record */
};
void scrub_recs_init(struct scrub_recs *r, size_t len);
int scrub_recs_add(struct scrub_recs *r, const void *rec);    /* 0 or -ENOMEM */
void scrub_recs_free(struct scrub_recs *r);
static inline const void *scrub_rec(const struct scrub_recs *r, size_t i)
{
	return r->v + i * r->len;
}
/* Sort an array of host-order uint32_t values. */
void scrub_sort_u32(struct scrub_recs *r);

/* ---- one AG, walked under its lock ----------------------------------------------------------- */
#define SCRUB_WANT_BNO    (1u << MFS_BT_BNO)
#define SCRUB_WANT_CNT    (1u << MFS_BT_CNT)
#define SCRUB_WANT_INO    (1u << MFS_BT_INO)
#define SCRUB_WANT_RMAP   (1u << MFS_BT_RMAP)
#define SCRUB_WANT_TREES  0xfu
#define SCRUB_WANT_AGFL   0x10u
/* With a wanted tree t: walk it all the same (same tree_err, same blocks) but keep none of
 * its records (recs[t] and where[t] stay empty), or keep its records but not where each
 * lies (findings then name records by index).  Memory: a million records are 8 MiB of
 * locations, 8–24 MiB of records. */
#define SCRUB_NO_RECS(t)  (1u << (8 + (t)))
#define SCRUB_NO_WHERE(t) (1u << (12 + (t)))
/* ... nor the numbers of its blocks (blocks[t] stays empty; nblocks[t] counts them). */
#define SCRUB_NO_BLOCKS(t) (1u << (20 + (t)))
/* With ctx->census: the AG's whole walk (every tree and the free list, every record and
 * where it lies) is made once and kept in the census for the AG's other checkers, which
 * borrow it (scrub_ag_scan with any want borrows a walk kept at the current change count,
 * whether or not it asks for this).  The phase-2 checkers of one AG (header, free list,
 * inode btree, reverse map) then walk its trees once instead of each on its own. */
#define SCRUB_SHARE       (1u << 16)

struct scrub_ag {
	struct mfs_fs *fs;
	uint32_t agno;
	uint32_t len;                       /* blocks in the AG (geometry) */
	struct mfs_buf *agh_bp;             /* NULL when the header is unreadable */
	const struct mfs_agh *agh;
	int agh_err;
	unsigned have;                      /* SCRUB_WANT_* walked without error */
	int tree_err[MFS_AG_NTREES];        /* the walk's error for each wanted tree */
	struct scrub_recs recs[MFS_AG_NTREES];     /* records, in key order */
	struct scrub_recs where[MFS_AG_NTREES];    /* struct scrub_recloc of each record */
	struct scrub_recs blocks[MFS_AG_NTREES];   /* uint32_t agbno of each tree block, sorted */
	uint64_t nblocks[MFS_AG_NTREES];    /* blocks of each tree walked clean */
	struct scrub_recs agfl;             /* uint32_t agbno of each valid free-list slot */
	int agfl_err;
	int borrowed;                       /* the census's walk (SCRUB_SHARE): read only, and
					       scrub_ag_release leaves it to the census */
};

/* Where a collected record lies: its leaf block (agbno) and index in that leaf. */
struct scrub_recloc {
	uint32_t agbno;
	uint32_t idx;
};
/* "block 1234 record 7" for record i of tree t, into buf (with the AG still locked: a
 * location not kept is looked up). */
const char *scrub_rec_where(const struct scrub_ag *sa, int t, size_t i, char *buf, size_t len);

void scrub_ag_lock(struct mfs_fs *fs, uint32_t agno);
void scrub_ag_unlock(struct mfs_fs *fs, uint32_t agno);
/*
 * With the AG locked: read its header and walk the wanted trees (mfs_btree_verify, then
 * every block and every record), and the free list.  Damage is recorded in the struct
 * (agh_err, tree_err, agfl_err), not returned: the return is 0 or an operational error
 * (-ENOMEM, -ECANCELED).  Release with scrub_ag_release() (before unlocking).
 */
int scrub_ag_scan(struct mfs_scrub_ctx *ctx, uint32_t agno, unsigned want, struct scrub_ag *sa);
void scrub_ag_release(struct scrub_ag *sa);
/* With the AG locked since the walk: make a borrowed walk the caller's own (the census
 * forgets it), so that it may change it; 0, or -EAGAIN if the census does not keep it. */
int scrub_ag_own(struct mfs_scrub_ctx *ctx, struct scrub_ag *sa);
/* The tree names used in findings: "bnobt", "cntbt", "inobt", "rmapbt". */
extern const char *const scrub_tree_names[MFS_AG_NTREES];

/* Index of the last record of a collected, startblock-sorted tree (bno or rmap) that starts
 * at or before agbno, or -1. */
long scrub_find_le(const struct scrub_recs *r, uint32_t agbno);
/* Is any block of [agbno, agbno + len) free in the collected bno records? */
int scrub_any_free(const struct scrub_recs *bno, uint32_t agbno, uint32_t len);
/*
 * A tree read forward by a cursor instead of collected (the reverse map or the free space by
 * block: records that start with le32 startblock and blockcount, in start order), with the
 * AG locked: `at` is the last record starting at or before the point reached (have_at),
 * `next` the one after it (have_next).  open: on the first record (t: MFS_BT_RMAP or
 * MFS_BT_BNO); step: `next` becomes `at`; upto: to the last record starting at or before
 * agbno (which never decreases); seek: there by a lookup from the root, whatever the
 * position (have_at = 0: no record starts at or before agbno).  0 or an error; close
 * releases the cursor.
 */
struct scrub_stream {
	struct mfs_btree_cur cur;
	union {
		struct mfs_rmap_rec r;
		struct mfs_alloc_rec a;
	} at, next;
	int have_at, have_next;
};
int scrub_stream_open(struct scrub_stream *s, struct mfs_fs *fs, uint32_t agno, int t,
		      struct mfs_buf *agh_bp);
int scrub_stream_step(struct scrub_stream *s);
int scrub_stream_upto(struct scrub_stream *s, uint32_t agbno);
int scrub_stream_seek(struct scrub_stream *s, uint32_t agbno);
void scrub_stream_close(struct scrub_stream *s);

/* The collected rmap record that covers all of [agbno, agbno + len), or NULL. */
const struct mfs_rmap_rec *scrub_rmap_covering(const struct scrub_recs *rmap, uint32_t agbno,
					       uint32_t len);
/* Is v in a sorted uint32_t array? */
int scrub_u32_has(const struct scrub_recs *r, uint32_t v);

/*
 * Cross-reference one extent an inode uses ([fsb, fsb + len), e.g. "inode 131 data extent
 * at file block 8"): locks its AG, and reports (XCORRUPT) unless a single reverse-map record
 * covers it with `owner` and, for data extents (`data`), the file offset `offset` at the
 * extent's first block (the record's own offset is that of its first block), else exactly
 * the offset `offset`; and unless none of it is free.  0 or an operational
 * error; damaged AG trees are reported as INCOMPLETE cross-references.
 */
int scrub_xref_extent(struct mfs_scrub_ctx *ctx, uint64_t fsb, uint32_t len, uint64_t owner,
		      uint64_t offset, int data, const char *what);

/*
 * Call fn for each of the 64 inodes of inode chunk c of AG agno (the caller holds the AG
 * lock: the cluster buffers are the committed ones), with the on-disk inode and whether
 * the chunk's free mask says it is free.  fn returns 0 to go on, else that is returned;
 * otherwise 0 or a read error (-EFSCORRUPTED... for an unreadable cluster block).
 */
typedef int (*scrub_dinode_fn)(void *priv, uint64_t ino, const struct mfs_dinode *d,
			       int isfree);
int scrub_chunk_walk(struct mfs_scrub_ctx *ctx, uint32_t agno, const struct mfs_inobt_rec *c,
		     scrub_dinode_fn fn, void *priv, uint64_t *bad_fsb);

/* Offset of the first nonzero byte of blk[from, to), or -1 (blocks are zeroed at init:
 * bytes past a header structure stay zero). */
long scrub_nonzero(const void *blk, size_t from, size_t to);

/*
 * The btrees an inode owns besides its extent map's inline form: its data fork's tree (the
 * extent btree of a file, the name btree of a directory: attr 0) or its attribute btree
 * (attr 1).  scrub_fork_cur sets up a read-only cursor on it (-EINVAL when that fork is not
 * a btree; `ops` must outlive the cursor); ip->lock held shared throughout.
 */
struct mfs_btree_ops;
struct mfs_btree_cur;
int scrub_fork_cur(struct mfs_inode *ip, int attr, struct mfs_btree_ops *ops,
		   struct mfs_btree_cur *cur);
/* Every block of that tree cross-referenced like scrub_xref_extent (owner ip->ino, offset
 * btree block, attribute fork for attr).  Its structure is its own checker's: a block that
 * cannot be read ends the walk quietly. */
int scrub_xref_tree_blocks(struct mfs_scrub_ctx *ctx, struct mfs_inode *ip, int attr,
			   const char *what);

/* "fs", "log", "ag", "inobt", "inodes", or "inode N" into buf. */
const char *scrub_owner_name(uint64_t owner, char *buf, size_t len);

/* ---- the checkers ------------------------------------------------------------------------------ */
int scrub_sb(struct mfs_scrub_ctx *ctx);
int scrub_agh(struct mfs_scrub_ctx *ctx);
int scrub_agfl(struct mfs_scrub_ctx *ctx);
int scrub_bnobt(struct mfs_scrub_ctx *ctx);
int scrub_cntbt(struct mfs_scrub_ctx *ctx);
int scrub_inobt(struct mfs_scrub_ctx *ctx);
int scrub_rmapbt(struct mfs_scrub_ctx *ctx);
int scrub_journal(struct mfs_scrub_ctx *ctx);
int scrub_inode(struct mfs_scrub_ctx *ctx);
int scrub_bmap(struct mfs_scrub_ctx *ctx);
int scrub_dir(struct mfs_scrub_ctx *ctx);
int scrub_xattr(struct mfs_scrub_ctx *ctx);
int scrub_symlink(struct mfs_scrub_ctx *ctx);
int scrub_nlinks(struct mfs_scrub_ctx *ctx);
int scrub_orphans(struct mfs_scrub_ctx *ctx);
int scrub_summary(struct mfs_scrub_ctx *ctx);

/* ---- inode objects ---------------------------------------------------------------------------- */
/*
 * Take inode ctx->ino for an inode checker: referenced and locked shared.  0 with *ipp set;
 * -ENOENT for a free inode; an inode the library refuses to load as corrupt is reported
 * (CORRUPT) and *ipp left NULL with 0 returned, so the checker just returns.
 */
int scrub_iget(struct mfs_scrub_ctx *ctx, struct mfs_inode **ipp);
void scrub_irele(struct mfs_inode *ip);
/*
 * With ip->lock held (shared): is the in-core inode still the one on disk — allocated
 * there, same generation?  An inode freed while we waited for its lock (the daemon frees
 * unlinked inodes under the exclusive lock, writing the free inode to disk only) is not:
 * the checkers then treat it as gone (-ENOENT).  0: current; -ENOENT; or a read error.
 */
int scrub_inode_current(struct mfs_scrub_ctx *ctx, struct mfs_inode *ip);
/*
 * Committed on-disk inodes, without the inode cache.  The checkers that look at many inodes
 * (the inode core, extent map and attribute checks of every inode, the reverse map's owner
 * check) first look at the committed copy: its cluster buffer read under the inode's AG
 * lock, which every transaction that logs the inode holds until it commits.  A copy that
 * shows nothing wrong ends the check; anything else (a mismatch, a form the quick look does
 * not handle, damage) is looked at again the slow way, with the inode taken and locked,
 * and only that look reports.  So the quick look never reports, and no inode is loaded
 * into the cache (where a million inodes would evict each other) unless it needs to be.
 *
 * scrub_dinode_read: the inodesize bytes of inode `ino` into buf; 0 or a read error.
 * scrub_dinode_usable: the copy is in use (mode != 0), verifies and passes the loader's
 * field checks (the ones mfs_iget would make).
 * scrub_dinode_extents: the inline extent list of its data fork (dformat EXTENTS): the
 * number of records at *recs (unaligned: read with memcpy), or -1 for another format.
 */
int scrub_dinode_read(struct mfs_scrub_ctx *ctx, uint64_t ino, void *buf);
int scrub_dinode_usable(struct mfs_scrub_ctx *ctx, uint64_t ino, const struct mfs_dinode *d);
long scrub_dinode_extents(struct mfs_scrub_ctx *ctx, const struct mfs_dinode *d,
			  const uint8_t **recs);

/*
 * A copy of the inode chunk last read (its chunkblocks blocks, one mfs_bcache_read_range):
 * walks that look at many inodes in number order (a directory's children, the reverse
 * map's owners, the inodes of phase 3) take each chunk once under its AG lock instead of
 * each inode, and without filling the buffer cache with the inode tables.  The copy is a
 * committed state of every inode in it as of when it was taken; the caller says why that
 * is recent enough.  scrub_cluster_dinode points *d at inode ino in the copy (taken anew
 * when ino lies in another chunk): 0, -ENOMEM, -EINVAL (invalid number) or a read error.
 * Zero-initialise; release with scrub_cluster_release.
 */
struct scrub_cluster {
	uint64_t seq;               /* the change count (mfs_fs_changes) the copy is of */
	uint64_t fsb;               /* first block of the copy */
	uint32_t nblk;              /* blocks copied (0: nothing yet) */
	uint8_t *blk;               /* chunkblocks * blocksize bytes, or NULL */
	int one_block;              /* set by the caller: copy only the block of the inode
				       (a few inodes wanted from each chunk, not all) */
};
int scrub_cluster_dinode(struct mfs_scrub_ctx *ctx, struct scrub_cluster *cl, uint64_t ino,
			 const struct mfs_dinode **d);
/* The same, the AG of ino locked by the caller. */
int scrub_cluster_dinode_locked(struct mfs_scrub_ctx *ctx, struct scrub_cluster *cl,
				uint64_t ino, const struct mfs_dinode **d);
void scrub_cluster_release(struct scrub_cluster *cl);

/*
 * The quick looks' committed copy of inode `ino` (scrub_priv.h, "Committed on-disk
 * inodes"): from ctx->memo's copy of its chunk when there is a memo (the chunk is copied
 * once, with its inode btree record, for all the checks of its inodes in one request),
 * else read now into buf (inodesize bytes), as also when the memo cannot answer for it (the
 * memo's copy shows it free: freed since it was listed).  0 with *d set, or a read error.
 * *usable (may be NULL) is scrub_dinode_usable's answer, computed once per inode while the
 * memo holds it.
 */
int scrub_dinode_quick(struct mfs_scrub_ctx *ctx, uint64_t ino, void *buf,
		       const struct mfs_dinode **d, int *usable);

/* What the memo (scrub.h) holds: the chunk copy of scrub_dinode_quick, and the verdicts of
 * a batch's extent-map quick looks (scrub_bmap_batch.c). */
struct scrub_bmap_verdict {
	uint64_t ino;
	int verdict;                    /* as bmap_quick's: 1, 0 or -ENOENT */
};
/* A batch of 2048 checks spans some 11 chunks; a request keeps up to this many copies (the
 * quick looks of the batch's extent maps go first, the other checks reuse their copies;
 * 32 KiB each with 512-byte inodes, kept by the memo from one request to the next). */
#define SCRUB_MEMO_CHUNKS 32u
struct scrub_memo_chunk {
	struct scrub_cluster cl;        /* a chunk's copy */
	uint64_t first, freemask;       /* its inode btree record when copied */
	uint64_t known, usable;         /* bit k: scrub_dinode_usable's answer for inode
					   first + k is known, and is yes */
};
struct mfs_scrub_memo {
	struct scrub_memo_chunk ch[SCRUB_MEMO_CHUNKS];
	unsigned nch;                   /* slots holding a chunk (ch[0..nch)) */
	unsigned last, next;            /* the slot last used; the one to replace next */
	struct scrub_bmap_verdict *verdicts;    /* sorted by ino */
	size_t nverdicts, verdicts_cap;
	size_t vnext;                   /* the verdict after the one last taken (a batch's
					   extent-map checks come in inode order) */
};

/*
 * BMAP's quick look at the committed copy d of inode ino (usable: scrub_dinode_usable's
 * answer), up to its cross-references: 1 clean without any (a directory, no extent map and
 * no blocks), 0 the full look must decide, -ENOENT free; 2 when its inline extents
 * *recs[0..*nrecs) — sane, sorted, adding up to nblocks — must still be cross-referenced
 * (each mapped by one reverse-map record of ino at its offset, none of it free).
 */
int scrub_bmap_quick_dinode(struct mfs_scrub_ctx *ctx, uint64_t ino, const struct mfs_dinode *d,
			    int usable, const uint8_t **recs, long *nrecs);
/* The verdict a batch's look (mfs_scrub_memo_prepare_bmap) left for ino in memo m (may be
 * NULL): 1, 0 or -ENOENT as bmap_quick's; 2 when there is none. */
int scrub_bmap_batch_verdict(const struct mfs_scrub_memo *m, uint64_t ino);

/*
 * The inode census (scrub_census.c, and scrub.h): each inode's record, current while the
 * filesystem's change count is the one it was taken at.
 */
struct scrub_census_ino {
	uint64_t fsb;                   /* SCRUB_CI_EXT1: the extent's first block;
					   SCRUB_CI_DIRROOT: the name btree's one block */
	uint32_t len;                   /* SCRUB_CI_EXT1: its length */
	uint32_t nlink;
	uint16_t mode;
	uint16_t flags;                 /* SCRUB_CI_* */
	uint32_t pad;
};
#define SCRUB_CI_FREE    0x1u       /* free in the inode btree's mask */
#define SCRUB_CI_USABLE  0x2u       /* scrub_dinode_usable (the flags below need it) */
#define SCRUB_CI_CLEAN   0x4u       /* in use, linked, and the INODE check finds nothing */
#define SCRUB_CI_NOCHUNK 0x8u       /* in no chunk of the inode btree */
#define SCRUB_CI_NOATTR  0x10u      /* no attribute fork */
#define SCRUB_CI_NOMAP   0x20u      /* the BMAP quick look needs no cross-reference: clean */
#define SCRUB_CI_EXT1    0x40u      /* the BMAP quick look's one inline extent, at file
				       block 0, is [fsb, fsb + len): to cross-reference */
#define SCRUB_CI_DIRROOT 0x80u      /* a directory whose name btree is one block, fsb */
#define SCRUB_CI_LNKOK   0x100u     /* a symlink whose inline target passes its check */
#define SCRUB_CI_ROOTMAP 0x200u     /* SCRUB_CI_DIRROOT, and the reverse-map check of the
				       block's AG found nothing, the block among its records
				       as exactly the directory's one btree block: the
				       directory's own cross-reference of it is done; or
				       SCRUB_CI_EXT1, and that check found the extent's AG
				       clean and a record of exactly the extent (file block
				       0): the extent map's cross-reference of it is done */
#define SCRUB_CI_SEEN    0x400u     /* the sweep looked at it (a number mfs_ino_check
				       refuses is left out, by the INOBT checker too) */
#define SCRUB_CI_IOK     0x800u     /* the INOBT checker's look finds nothing: the copy
				       verifies, and is in use (mfs_dinode_in_use) exactly
				       when the free mask says it is not free */
/* Take AG agno's part (ctx->census), the AG locked by the caller: 0 (also when it is
 * current already), -EAGAIN when the AG's inode btree or chunks will not do, -ENOMEM.
 * scrub_census_take_at also gives the change count the part is of (*seq): while the AG
 * stays locked, the part is the AG's committed state, whatever the count becomes. */
int scrub_census_take(struct mfs_scrub_ctx *ctx, uint32_t agno);
int scrub_census_take_at(struct mfs_scrub_ctx *ctx, uint32_t agno, uint64_t *seq);
/* The 64 records of the chunk starting at agino startino of AG agno in the part taken at
 * count seq, with the free mask the part saw for it; NULL when there is none.  The records
 * stay readable until the census is dropped. */
const struct scrub_census_ino *scrub_census_chunk_at(struct mfs_scrub_ctx *ctx, uint32_t agno,
						     uint32_t startino, uint64_t seq,
						     uint64_t *freemask);
/* 1 with *out = the current record of ino; 0 when the census has none current.
 * scrub_census_get_at: the record as of change count seq (the census's part of the AG of
 * ino was taken at seq, whatever the count is now), else 0: a copy of the inode also taken
 * at seq is the same inode, and the census's verdicts on it stand. */
int scrub_census_get(struct mfs_scrub_ctx *ctx, uint64_t ino, struct scrub_census_ino *out);
int scrub_census_get_at(struct mfs_scrub_ctx *ctx, uint64_t ino, uint64_t seq,
			struct scrub_census_ino *out);
/* The current records of the chunk holding ino (for walks that ask about many inodes of a
 * few chunks: a directory's children): 1, or 0 when the census has none current.  They
 * stand while the change count is still out->seq (out->ino points into the census, which
 * keeps every part it took until it is dropped). */
struct scrub_census_chunk {
	uint64_t first, seq;
	const struct scrub_census_ino *ino;     /* MFS_INODES_PER_CHUNK records */
};
int scrub_census_chunk(struct mfs_scrub_ctx *ctx, uint64_t ino, struct scrub_census_chunk *out);
/* fn for each inode of AG agno's chunks from inode `from` on, in number order, from a
 * current census (its change count into *seq, may be NULL): fn's first nonzero return, 0,
 * or -EAGAIN when none is current (then fn was never called). */
typedef int (*scrub_census_fn)(void *priv, uint64_t ino, const struct scrub_census_ino *ci);
int scrub_census_walk(struct mfs_scrub_ctx *ctx, uint32_t agno, uint64_t from,
		      scrub_census_fn fn, void *priv, uint64_t *seq);
/* The AG walks kept for SCRUB_SHARE, with the AG locked: get (a copy of the kept struct,
 * borrowed: 0, or -EAGAIN when none is kept at the current count), put (the census takes
 * sa, a full walk made at count seq, which the caller then borrows: 0, or -ENOSPC when
 * the census keeps no more, and sa stays the caller's), take back (the census forgets
 * the walk sa borrows, which becomes the caller's: 0, or -EAGAIN). */
int scrub_census_scan_get(struct mfs_scrub_ctx *ctx, uint32_t agno, struct scrub_ag *sa);
int scrub_census_scan_put(struct mfs_scrub_ctx *ctx, uint32_t agno, struct scrub_ag *sa,
			  uint64_t seq);
int scrub_census_scan_take_back(struct mfs_scrub_ctx *ctx, uint32_t agno, struct scrub_ag *sa);
/* Add flag to the records of inodes inos[0..n) in the census parts taken at
 * count seq (others are left alone). */
void scrub_census_mark(struct mfs_scrub_ctx *ctx, const uint64_t *inos, size_t n, uint64_t seq,
		       uint16_t flag);
/* Is the change count still seq? */
int scrub_census_current(struct mfs_scrub_ctx *ctx, uint64_t seq);
/* A directory's entries (kids: uint64_t inode numbers, "." and ".." left out) and its ".."
 * as read with it locked shared, all at change count seq (read before and after). */
void scrub_census_put_dir(struct mfs_scrub_ctx *ctx, uint64_t dir, uint64_t dotdot,
			  const struct scrub_recs *kids, uint64_t seq);
/* fn for each entry of directory dir recorded at the current change count, *dotdot set:
 * fn's first nonzero return or 0; -EAGAIN when there is no such record. */
typedef int (*scrub_census_kid_fn)(void *priv, uint64_t ino);
int scrub_census_dir(struct mfs_scrub_ctx *ctx, uint64_t dir, uint64_t *dotdot,
		     scrub_census_kid_fn fn, void *priv);
/* The INODE check's quick verdict on a usable committed copy d of inode ino: 1 when it
 * would find nothing (and needs no orphan list: linked), else 0.  Reports nothing. */
int scrub_dinode_core_clean(struct mfs_scrub_ctx *ctx, uint64_t ino, const struct mfs_dinode *d);

/* The SYMLINK check's quick verdict on a usable committed copy d: 1 when it is a symlink
 * whose inline target is sane (nothing to report), else 0. */
int scrub_symlink_inline_ok(struct mfs_scrub_ctx *ctx, const struct mfs_dinode *d);

/* Is `ino` on its AG's orphan list (the caller holds that AG's lock)?  0 or an error (a
 * damaged list). */
int scrub_orphan_listed(struct mfs_scrub_ctx *ctx, uint64_t ino, int *listed);

#endif
