/*
 * scrub_inode.c — the inode core checker and the extent map (data fork) checker.
 *
 * INODE: the on-disk inode as committed (its cluster buffer, read under the inode's AG
 * lock while the inode lock is held shared) verifies (magic, CRC, self number, UUID), and
 * its fields pass the loader's checks (mfs_dinode_check: a known file type, fork formats
 * valid for it, forks inside the literal area, link count, nanoseconds < 10^9, known
 * flags, size below 2^63); besides: padding and reserved words are zero, a linked
 * directory has at least two links, an inode without links is on its AG's orphan list
 * (lib/orphan.h) and a linked one has no orphan list pointer.
 *
 * BMAP: the extent list or extent btree (mfs_bmap_walk: records sane, sorted, not
 * overlapping; the btree's blocks verify) and, for each extent and each btree block, the
 * reverse map (one record of this inode at this offset) and free space (none of it free).
 * The block count (nblocks) equals data blocks + extent-btree blocks + attribute-fork
 * blocks.  Directories' data forks are name trees, checked by the DIR checker.
 */
#include "bcache.h"
#include "bmap.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "ialloc.h"
#include "inode.h"
#include "log.h"
#include "scrub_priv.h"
#include "verify.h"
#include "xattr.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* ---- INODE --------------------------------------------------------------------------------- */

/*
 * Copy the committed on-disk inode (the caller holds the inode lock, if it has the inode)
 * and, for an inode in use without links, whether it is on its AG's orphan list — both
 * under one hold of the AG lock, so that an inode being freed meanwhile is seen either
 * before (listed) or after (free), never half way.  *listed: 1, 0, or -1 (list unreadable).
 * -ENOENT when the slot does not verify and the inode btree says the inode is free (its
 * chunk freed, and maybe reused, since the inode was listed).
 */
static int read_dinode(struct mfs_scrub_ctx *ctx, uint8_t *buf, int *listed)
{
	struct mfs_fs *fs = ctx->fs;
	uint32_t agno = mfs_ino_to_agno(&fs->geo, ctx->ino);
	const struct mfs_dinode *d = (const void *)buf;
	struct mfs_buf *bp;
	int err;

	*listed = -1;
	scrub_ag_lock(fs, agno);
	err = mfs_buf_read(fs->bc, mfs_ino_to_fsb(&fs->geo, ctx->ino), NULL, &bp);
	if (!err) {
		memcpy(buf, (const uint8_t *)bp->data + mfs_ino_to_offset(&fs->geo, ctx->ino),
		       fs->geo.inodesize);
		mfs_buf_put(bp);
		if (mfs_get32(d->magic) != MFS_DINODE_MAGIC || mfs_get64(d->ino) != ctx->ino) {
			/* A slot that is not this inode is damage only while the inode btree
			 * says the inode is allocated: since phase 3 listed it, its whole
			 * chunk may have been freed and its blocks reused (file data).  (Not
			 * mfs_dinode_verify here: it logs every failure as corruption.) */
			if (mfs_ino_in_use_locked(fs, ctx->ino) == -ENOENT)
				err = -ENOENT;
		} else if (mfs_get16(d->mode) && mfs_get32(d->nlink) == 0 &&
			   scrub_orphan_listed(ctx, ctx->ino, listed)) {
			*listed = -1;
		}
	}
	scrub_ag_unlock(fs, agno);
	return err;
}

/* `verified`: the copy is known to pass mfs_dinode_verify and mfs_dinode_check and the
 * loader's checks (scrub_dinode_usable), which are then not made again. */
static void check_dinode(struct mfs_scrub_ctx *ctx, const struct mfs_dinode *d, int loaded,
			 int listed, int verified)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	const uint32_t C = MFS_SCRUB_OFLAG_CORRUPT;
	unsigned long long ino = (unsigned long long)ctx->ino;
	uint16_t mode = mfs_get16(d->mode);
	const struct mfs_timestamp *ts[4] = { &d->atime, &d->mtime, &d->ctime, &d->btime };
	int err;

	if (verified)
		goto fields;
	err = mfs_dinode_verify(d, g->inodesize, ctx->ino, g->uuid);
	if (err) {
		scrub_report(ctx, C, "inode %llu: header (magic 0x%08x, self %llu): %s", ino,
			     mfs_get32(d->magic), (unsigned long long)mfs_get64(d->ino),
			     scrub_errstr(err));
		return;
	}
	err = mfs_dinode_check(d, g->inodesize, ctx->ino);
	if (err) {
		scrub_report(ctx, C, "inode %llu: core fields are invalid (mode 0%o, formats %u/%u, "
			     "%u links, fork offset %u, flags 0x%x): %s", ino, mode, d->dformat,
			     d->aformat, mfs_get32(d->nlink), mfs_get16(d->forkoff),
			     mfs_get32(d->flags), scrub_errstr(err));
		return;
	}
	if (!loaded) {
		scrub_report(ctx, C, "inode %llu: the inode loader refuses it", ino);
		return;
	}
fields:
	for (int i = 0; i < 4; i++)
		if (ts[i]->pad) {
			scrub_report(ctx, C, "inode %llu: timestamp padding is not zero", ino);
			break;
		}
	if (d->pad0 || d->reserved[0] || d->reserved[1])
		scrub_report(ctx, C, "inode %llu: padding or reserved words are not zero", ino);
	if (S_ISDIR(mode) && mfs_get32(d->nlink) == 1)
		scrub_report(ctx, C, "inode %llu: directory with 1 link, at least 2 expected", ino);
	/* No links exactly when on the AG's orphan list (unlinked but still in use). */
	if (mfs_get32(d->nlink) == 0) {
		if (listed == 0)
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "inode %llu: in use (mode 0%o) "
				     "with no links, and not on AG %u's orphan list", ino, mode,
				     mfs_ino_to_agno(g, ctx->ino));
	} else if (mfs_get64(d->next_unlinked)) {
		scrub_report(ctx, C, "inode %llu: %u links but an orphan list pointer %llu", ino,
			     mfs_get32(d->nlink), (unsigned long long)mfs_get64(d->next_unlinked));
	}
	if (S_ISLNK(mode) && (mfs_get64(d->size) == 0 || mfs_get64(d->size) >= 4096))
		scrub_report(ctx, C, "inode %llu: symlink size %llu, expected 1..4095", ino,
			     (unsigned long long)mfs_get64(d->size));
}

/*
 * The committed on-disk inode is what is checked: no in-core inode is needed (nor loaded
 * into the cache).  An inode freed since it was listed reads as free (-ENOENT).  The inode
 * btree's free mask against the modes is the inode btree checker's.
 */
/*
 * The quick look (scrub_priv.h) through the request's memo: 1 when the copy of the
 * inode's chunk shows it in use, with links (no orphan list to ask), usable and without
 * a finding; else 0 and the inode is read and checked afresh.  Nothing is reported here.
 */
int scrub_dinode_core_clean(struct mfs_scrub_ctx *ctx, uint64_t ino, const struct mfs_dinode *d)
{
	struct mfs_scrub_ctx quiet = *ctx;

	if (mfs_get32(d->nlink) == 0)
		return 0;
	quiet.ino = ino;
	quiet.report = NULL;
	quiet.oflags = 0;
	check_dinode(&quiet, d, 1, 1, 1);
	return quiet.oflags == 0;
}

static int inode_quick(struct mfs_scrub_ctx *ctx)
{
	uint64_t buf[MFS_MAX_INODESIZE / 8];
	const struct mfs_dinode *d;
	int usable;

	if (scrub_dinode_quick(ctx, ctx->ino, buf, &d, &usable) || !usable)
		return 0;
	return scrub_dinode_core_clean(ctx, ctx->ino, d);
}

int scrub_inode(struct mfs_scrub_ctx *ctx)
{
	uint64_t buf[MFS_MAX_INODESIZE / 8];
	const struct mfs_dinode *d = (const void *)buf;
	struct scrub_census_ino ci;
	uint64_t nu;
	int err, listed;

	/* The census's verdict, when current, is that of the committed inode now. */
	if (scrub_census_get(ctx, ctx->ino, &ci) && (ci.flags & SCRUB_CI_CLEAN))
		return 0;
	if (ctx->memo && inode_quick(ctx))
		return 0;
	err = read_dinode(ctx, (uint8_t *)buf, &listed);
	if (err == -ENOENT)
		return err;             /* its chunk freed since it was listed */
	if (err) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "inode %llu: its block %llu cannot be "
			     "read: %s", (unsigned long long)ctx->ino,
			     (unsigned long long)mfs_ino_to_fsb(&ctx->fs->geo, ctx->ino),
			     scrub_errstr(err));
		return mfs_is_corruption(err) ? 0 : err;
	}
	if (!mfs_dinode_in_use(d))
		return -ENOENT;         /* freed since it was listed (a zeroed mode on an inode
					 * with links or forks is not free: checked) */
	nu = mfs_get64(d->next_unlinked);
	check_dinode(ctx, d, !(nu && mfs_ino_check(ctx->fs, nu)), listed, 0);
	return 0;
}

/* ---- BMAP --------------------------------------------------------------------------------- */

struct bmap_walk {
	struct mfs_scrub_ctx *ctx;
	uint64_t blocks;
	int err;
};

static int bmap_ext_fn(struct mfs_inode *ip, const struct mfs_bmap_ext *ext, void *priv)
{
	struct bmap_walk *w = priv;
	char what[96];
	int err;

	err = scrub_cancelled(w->ctx);
	if (err)
		return err;
	w->blocks += ext->len;
	if (ext->len > UINT32_MAX) {
		scrub_report(w->ctx, MFS_SCRUB_OFLAG_CORRUPT, "inode %llu data extent at file block "
			     "%llu: %llu blocks", (unsigned long long)ip->ino,
			     (unsigned long long)ext->startoff, (unsigned long long)ext->len);
		return 0;
	}
	snprintf(what, sizeof(what), "inode %llu data extent at file block %llu",
		 (unsigned long long)ip->ino, (unsigned long long)ext->startoff);
	return scrub_xref_extent(w->ctx, ext->startblock, (uint32_t)ext->len, ip->ino,
				 ext->startoff, 1, what);
}

static int bmbt_blk_fn(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	struct bmap_walk *w = priv;
	char what[96];

	w->blocks++;
	snprintf(what, sizeof(what), "inode %llu extent btree block %llu (level %u)",
		 (unsigned long long)cur->owner, (unsigned long long)fsb, level);
	/* Collected errors are kept aside: a visit callback error would read as damage. */
	if (!w->err)
		w->err = scrub_xref_extent(w->ctx, fsb, 1, cur->owner, MFS_RMAP_BMBT_BLOCK, 0, what);
	return 0;
}

int scrub_bmap_quick_dinode(struct mfs_scrub_ctx *ctx, uint64_t ino, const struct mfs_dinode *d,
			    int usable, const uint8_t **recs, long *nrecs)
{
	uint64_t blocks = 0, next = 0;
	long n;

	if (!mfs_get16(d->mode))
		return -ENOENT;
	if (!usable || d->aformat != MFS_FMT_NONE)
		return 0;
	if (S_ISDIR(mfs_get16(d->mode)))
		return 1;
	n = scrub_dinode_extents(ctx, d, recs);
	if (n < 0)      /* no extent map in the data fork (an inline list that does not fit
			 * is the full look's to report) */
		return d->dformat != MFS_FMT_EXTENTS && d->dformat != MFS_FMT_BTREE &&
		       mfs_get64(d->nblocks) == 0;
	for (long i = 0; i < n; i++) {
		struct mfs_bmbt_rec e;
		uint64_t so, len;

		memcpy(&e, *recs + (size_t)i * sizeof(e), sizeof(e));
		so = mfs_get64(e.startoff);
		len = mfs_get32(e.blockcount);
		if (mfs_bmbt_check_rec(ctx->fs, ino, &e) || so < next)
			return 0;
		next = so + len;
		blocks += len;
	}
	if (blocks != mfs_get64(d->nblocks))
		return 0;
	*nrecs = n;
	return 2;
}

/*
 * The quick look (scrub_priv.h): 1 when the committed inode has no attribute fork and its
 * extent map needs no walk of a tree — a directory (its name tree is the DIR checker's),
 * a file without extents and without blocks, or an inline extent list whose records are
 * sane, sorted, add up to nblocks and are cross-referenced without a finding; 0 when the
 * full look must decide (and report); -ENOENT for a free inode; or an operational error.
 * The request's batch may have looked already (scrub_bmap_batch.c).  The cross-references
 * run on a copy of the context that reports nothing.
 */
/* The batch's verdict for ino (scrub_bmap_batch_verdict), the one after the last taken
 * tried first: no search when the checks come in the batch's order. */
static int batch_verdict(struct mfs_scrub_memo *m, uint64_t ino)
{
	if (m && m->vnext < m->nverdicts && m->verdicts[m->vnext].ino == ino)
		return m->verdicts[m->vnext++].verdict;
	if (m && m->vnext + 1 < m->nverdicts && m->verdicts[m->vnext + 1].ino == ino) {
		m->vnext += 2;          /* (an inode the batch looked at without a check) */
		return m->verdicts[m->vnext - 1].verdict;
	}
	return scrub_bmap_batch_verdict(m, ino);
}

static int bmap_quick(struct mfs_scrub_ctx *ctx)
{
	uint64_t buf[MFS_MAX_INODESIZE / 8];
	const struct mfs_dinode *d;
	struct mfs_scrub_ctx quiet = *ctx;
	const uint8_t *recs = NULL;
	long n = 0;
	int err, usable;

	err = batch_verdict(ctx->memo, ctx->ino);
	if (err != 2)
		return err;
	err = scrub_dinode_quick(ctx, ctx->ino, buf, &d, &usable);
	if (err)
		return mfs_is_corruption(err) ? 0 : err;
	err = scrub_bmap_quick_dinode(ctx, ctx->ino, d, usable, &recs, &n);
	if (err != 2)
		return err;
	quiet.report = NULL;
	quiet.oflags = 0;
	for (long i = 0; i < n; i++) {
		struct mfs_bmbt_rec e;

		memcpy(&e, recs + (size_t)i * sizeof(e), sizeof(e));
		err = scrub_xref_extent(&quiet, mfs_get64(e.startblock), mfs_get32(e.blockcount),
					ctx->ino, mfs_get64(e.startoff), 1, "quick look");
		if (err)
			return err;
		if (quiet.oflags)
			return 0;
	}
	return 1;
}

int scrub_bmap(struct mfs_scrub_ctx *ctx)
{
	struct mfs_inode *ip;
	struct bmap_walk data = { ctx, 0, 0 }, tree = { ctx, 0, 0 };
	uint64_t attr_blocks = 0;
	int err, counted = 1;

	err = bmap_quick(ctx);
	if (err)
		return err > 0 ? 0 : err;
	err = scrub_iget(ctx, &ip);
	if (err || !ip)
		return err;
	if (S_ISDIR(ip->mode) ||
	    (ip->dformat != MFS_FMT_EXTENTS && ip->dformat != MFS_FMT_BTREE))
		goto attr;      /* no extent map in the data fork */
	if (ip->dformat == MFS_FMT_BTREE) {
		struct mfs_btree_cur cur;
		uint64_t nblk = 0;

		/* verified, its inode still locked: its blocks named from its nodes, with no
		 * set of the blocks seen (which grows with the tree) */
		err = mfs_bmbt_cur_init(&cur, NULL, ip);
		if (!err)
			err = mfs_btree_verify(&cur, NULL, &nblk);
		if (!err)
			err = mfs_btree_visit_trusted(&cur, nblk, bmbt_blk_fn, &tree, NULL);
		mfs_btree_cur_release(&cur);
		if (!err)
			err = tree.err;
	}
	if (!err)
		err = mfs_bmap_walk(ip, bmap_ext_fn, &data);
	if (mfs_is_corruption(err)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "inode %llu extent %s: %s",
			     (unsigned long long)ip->ino,
			     ip->dformat == MFS_FMT_BTREE ? "btree" : "list", scrub_errstr(err));
		err = 0;
		goto out;
	}
	if (err)
		goto out;
attr:
	if (ip->aformat != MFS_FMT_NONE) {
		/* Damage is the XATTR checker's to report; here only its block count. */
		int aerr = mfs_xattr_check(ip, &attr_blocks, NULL);

		if (aerr && !mfs_is_corruption(aerr)) {
			err = aerr;
			goto out;
		}
		if (aerr)
			counted = 0;
	}
	if (S_ISDIR(ip->mode))
		counted = 0;    /* name-tree blocks: the DIR checker counts them */
	if (counted && ip->nblocks != data.blocks + tree.blocks + attr_blocks)
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "inode %llu: nblocks %llu, the forks "
			     "hold %llu (%llu data, %llu extent btree, %llu attribute)",
			     (unsigned long long)ip->ino, (unsigned long long)ip->nblocks,
			     (unsigned long long)(data.blocks + tree.blocks + attr_blocks),
			     (unsigned long long)data.blocks, (unsigned long long)tree.blocks,
			     (unsigned long long)attr_blocks);
out:
	scrub_irele(ip);
	return err;
}
