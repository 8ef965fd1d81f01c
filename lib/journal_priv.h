/*
 * journal_priv.h — the journal's in-memory state, shared by journal.c (commit, group
 * commit, checkpoint) and journal_replay.c (header reading, replay, open).  Not an
 * interface: nothing outside those two files includes it.
 */
#ifndef MFS_JOURNAL_PRIV_H
#define MFS_JOURNAL_PRIV_H

#include <pthread.h>
#include <stdint.h>
#include "journal.h"
#include "list.h"

struct mfs_dev;
struct mfs_bcache;
struct mfs_busy;
struct ckpt_item;
struct jslab;
struct mfs_geom;

/* A committed block image, shared by its record (until written) and the block map.  A
 * borrowed image (journal.c, "borrowed images") is the committed buffer's own bytes. */
struct jimg {
	unsigned refs;              /* under the journal lock */
	unsigned readers;           /* writers streaming a borrowed image now (lock) */
	void *data;                 /* `own`, or a borrowed buffer's bytes (lock) */
	void *own;                  /* a block of its slab's mapping, for its life */
	struct mfs_buf *bp;         /* borrowed: the buffer, held (lock); else NULL */
	struct jimg *next_free;     /* on its slab's free list (journal.c, jimg_alloc) */
	struct jslab *slab;         /* the slab it belongs to, for its life */
};

/* A transaction's record, from reservation until the tail passes it. */
struct jrec {
	struct jrec *next;
	uint64_t seq, lpos;
	uint32_t len;               /* log blocks */
	uint32_t raw;               /* log blocks its transactions would take unjoined */
	uint32_t nimg, nrev;
	uint32_t nborrow;           /* borrowed images it got (an upper bound: some may have
	                               been frozen or dropped since) */
	int ready;                  /* filled: the writer may take it */
	uint64_t fseq;              /* flush_started at its last commit that orders data (0:
	                               none, all MFS_JCOMMIT_NODATA): once a flush numbered
	                               above it completed, every write issued before those
	                               commits is durable (batch_write needs no first flush) */
	int open;                   /* not taken by a writer: later transactions may join it
	                               while it is the last record (journal.c, rec_join) */
	uint64_t pin_first;         /* oldest first_lsn of the map entries its revokes forgot
	                               (0: none): until this record is durable a checkpoint
	                               keeps the tail at or below it (those blocks' homes were
	                               never written; a crash must still replay their images) */
	uint32_t cap_img, cap_blk;  /* allocated entries of imgs/bps and of blknos */
	struct jimg **imgs;         /* nimg images, freed once written */
	struct mfs_buf **bps;
	uint64_t *blknos;           /* nimg image blocks, then nrev revoked blocks */
};

/* The latest committed image of a block not yet checkpointed. */
struct jent {
	struct jent *next;
	uint64_t blkno;
	uint64_t lsn;               /* sequence of the latest change (img) */
	uint64_t first_lsn;         /* oldest sequence whose change is not in place */
	struct jimg *img;
	int busy;                   /* the checkpoint is writing it in place right now */
	uint32_t ridx;              /* index of `img` in the record of sequence `lsn` (a hint
	                               for joins, checked before use) */
};

struct mfs_journal {
	struct mfs_fs *fs;
	struct mfs_dev *dev;
	struct mfs_bcache *bc;
	uint32_t bs, logblocks, usable;
	uint64_t logstart;

	pthread_mutex_t lock;
	pthread_cond_t cv;          /* a batch became durable, a record ready, tail moved,
	                               a checkpoint ended */
	pthread_mutex_t ckpt_lock;
	int ckpt_running;           /* a checkpoint holds ckpt_lock (set and read under lock) */

	/* The log thread (journal.c, "the log thread"): writes queued batches once
	 * `write_thresh` blocks are queued and starts a checkpoint once more than
	 * `ckpt_thresh` log blocks are in use.  Under `lock`. */
	pthread_t logd;
	pthread_cond_t logd_cv;     /* wakes the log thread */
	int logd_running;           /* started and not yet joined */
	int logd_respawn;           /* a forked child: start one at the next commit */
	struct mfs_journal *logd_reg_next;  /* the registry of journals with a thread */
	int logd_stop;              /* asked to exit */
	int logd_idle;              /* waiting on logd_cv: a commit past a threshold wakes it */
	uint32_t write_thresh, ckpt_thresh;
	uint32_t raw_thresh;        /* pending_raw that makes the queue due (queue_due) */

	uint64_t next_seq;          /* the next sequence to give */
	uint64_t durable_seq;       /* every record up to this one is durable */
	uint64_t head_lpos;         /* where the next record goes */
	uint64_t tail_lpos, tail_seq;   /* as in the durable header */
	uint64_t hdr_gen;           /* gen of the last header written */
	uint64_t pending_blocks;    /* reserved, not yet written */
	uint64_t pending_raw;       /* the same, as if no transaction had joined a record */
	int writing;                /* a writer is doing a batch */
	uint64_t flush_started;     /* device flushes begun (mfs_jflush numbers them) */
	uint64_t flush_covered;     /* the highest number of a flush that completed */
	int sync_flushing;          /* an fsync's own flush is in flight (mfs_journal_sync) */
	int err;                    /* sticky log I/O error (stored atomically: read without the
				     * lock by mfs_journal_error) */
	const struct jrec *room_claim;  /* the commit first in line for log room (commit) */

	struct jrec *rec_first, *rec_last, *unwritten;
	struct jent **map;
	size_t map_mask, map_count;

	struct mfs_busy *busy;      /* freed extents until their sequence is durable */
	void *wbuf;                 /* the writer's stream buffer (only the writer uses it) */
	uint32_t wbuf_blocks;
	void *hbuf;                 /* one block for header writes (checkpoint, open, close) */
	/* Allocating a sparse log on its image file (journal.c, "the log's first lap"): log
	 * blocks from fill_blk to the end may still be holes of the image file; the writer
	 * writes zeroes ahead of the head from there, FILL_BLOCKS at a time, out of zbuf
	 * (allocated at open only when there are holes, freed once none are left).  Only the
	 * writer uses them. */
	uint32_t fill_blk;
	void *zbuf;
	struct ckpt_item *ckpt_items;   /* the checkpoint's list: usable entries (ckpt_lock) */

	pthread_mutex_t pool_lock;  /* a leaf: the image slabs (journal.c, jimg_alloc) */
	struct mfs_list slabs;      /* the slabs with a free image (jslab.link) */
	unsigned npool;             /* free images, in all slabs */
	unsigned nslabs;            /* slabs allocated */
	unsigned nborrowed;         /* borrowed images alive (atomic) */
	uint64_t borrows, freezes;  /* images ever borrowed (atomic), borrowed images frozen (lock) */
	uint64_t slab_allocs;       /* slabs ever allocated */

	struct mfs_journal_stats st;
	mfs_journal_ckpt_hook ckpt_hook;    /* tests only */
	void *ckpt_hook_arg;
	mfs_journal_io_hook io_hook;        /* tests only; set while the journal is idle */
	void *io_hook_arg;
};

/*
 * The journal's I/O, all through these (journal.c): buffers of whole blocks aligned for
 * any device; log blocks by position in the region (`logblk`) or by record position
 * (`lpos`, wrapping round the end of the log: one or two transfers); a block written home
 * in place; and the device flush, counted.  Each returns 0 or a negative errno, after a
 * message naming the blocks.
 */
void *mfs_jbuf_alloc(uint32_t bs, size_t nblocks);
int mfs_jlog_io(struct mfs_journal *j, uint32_t logblk, uint32_t n, void *buf, int write);
int mfs_jlog_io_lpos(struct mfs_journal *j, uint64_t lpos, uint32_t n, void *buf, int write);
int mfs_jhome_write(struct mfs_journal *j, uint64_t blkno, const void *img);
int mfs_jflush(struct mfs_journal *j);

uint32_t mfs_jtags_per_desc(uint32_t bs);
uint32_t mfs_jrec_blocks(uint32_t bs, uint32_t nimg, uint32_t nrev);
uint64_t mfs_jlog_offset(const struct mfs_journal *j, uint32_t logblk);
void mfs_jhdr_build(void *blk, uint32_t bs, const struct mfs_geom *geo, uint64_t gen,
		    uint32_t tail_blk, uint64_t tail_seq, uint32_t flags);
uint32_t mfs_jlpos_blk(const struct mfs_journal *j, uint64_t lpos);
/* Write the next header copy (alternating slots, gen + 1) and flush. */
int mfs_jhdr_write(struct mfs_journal *j, uint64_t tail_lpos, uint64_t tail_seq,
		   uint32_t flags);
int mfs_journal_alloc(struct mfs_fs *fs, struct mfs_journal **out);
/* Stops the log thread first if it runs. */
void mfs_journal_free(struct mfs_journal *j);
void mfs_journal_attach(struct mfs_journal *j);
/* Start the log thread (open, once the journal is ready for commits; close, discard and
 * free stop it, after the batch or checkpoint it has in hand). */
int mfs_jlogd_start(struct mfs_journal *j);
/* At open, once the head is set: find where the log's holes in an image file begin (a
 * block device has none) and get ready to fill them (see fill_blk).  Never fails: without
 * memory for the buffer the holes are left (the log works as well, only slower). */
void mfs_jfill_init(struct mfs_journal *j);

#endif
