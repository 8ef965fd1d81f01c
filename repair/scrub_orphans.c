/*
 * scrub_orphans.c — the orphan list checker (lib/orphan.h): in every AG, under its lock,
 * the list from the AG header is well formed (members are allocated inodes of the AG with
 * no links, and it ends: mfs_orphan_check), and it holds every in-use inode of the AG that
 * has no links — counted from the inode chunks' committed cluster buffers.  Also the
 * membership test the inode checker uses for an inode without links.
 */
#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "orphan.h"
#include "scrub_priv.h"

static int nolinks_fn(void *priv, uint64_t ino, const struct mfs_dinode *d, int isfree)
{
	if (!isfree && mfs_get16(d->mode) && mfs_get32(d->nlink) == 0)
		(*(uint64_t *)priv)++;
	return 0;
}

static int census_nolinks_fn(void *priv, uint64_t ino, const struct scrub_census_ino *ci)
{
	if (!(ci->flags & SCRUB_CI_FREE) && ci->mode && ci->nlink == 0)
		(*(uint64_t *)priv)++;
	return 0;
}

/* In-use inodes without links in the collected inode chunks of one AG (AG locked). */
static int count_nolinks(struct mfs_scrub_ctx *ctx, const struct scrub_ag *sa, uint64_t *n)
{
	const struct scrub_recs *ir = &sa->recs[MFS_BT_INO];
	uint64_t fsb;
	int err = 0;

	*n = 0;
	for (size_t i = 0; i < ir->n && !err; i++)
		err = scrub_chunk_walk(ctx, sa->agno, scrub_rec(ir, i), nolinks_fn, n, &fsb);
	return err;
}

int scrub_orphans(struct mfs_scrub_ctx *ctx)
{
	int err = 0;

	for (uint32_t agno = 0; agno < ctx->fs->geo.agcount && !err; agno++) {
		struct scrub_ag sa;
		uint64_t listed = 0, nolinks = 0;
		int counted;

		err = scrub_cancelled(ctx);
		if (err)
			break;
		scrub_ag_lock(ctx->fs, agno);
		/* The census's count, when current, is that of the chunks now (AG locked). */
		counted = scrub_census_walk(ctx, agno, 0, census_nolinks_fn, &nolinks, NULL) == 0;
		err = scrub_ag_scan(ctx, agno, counted ? SCRUB_NO_RECS(MFS_BT_INO) : SCRUB_WANT_INO,
				    &sa);
		if (err || !sa.agh)
			goto next;      /* an unreadable header is the AGH checker's finding */
		err = mfs_orphan_check(ctx->fs, agno, &listed);
		if (mfs_is_corruption(err)) {
			scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "AG %u orphan list (head %llu): %s",
				     agno, (unsigned long long)mfs_get64(sa.agh->unlinked),
				     scrub_errstr(err));
			err = 0;
			goto next;
		}
		if (err || (!counted && !(sa.have & SCRUB_WANT_INO)))
			goto next;
		if (!counted)
			err = count_nolinks(ctx, &sa, &nolinks);
		if (mfs_is_corruption(err)) {
			err = 0;        /* unreadable inode blocks: the INOBT checker's */
			goto next;
		}
		if (!err && nolinks != listed)
			scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u orphan list: holds %llu "
				     "inodes, the AG has %llu in use without links", agno,
				     (unsigned long long)listed, (unsigned long long)nolinks);
next:
		scrub_ag_release(&sa);
		scrub_ag_unlock(ctx->fs, agno);
	}
	return err;
}

int scrub_orphan_listed(struct mfs_scrub_ctx *ctx, uint64_t ino, int *listed)
{
	struct mfs_fs *fs = ctx->fs;
	const struct mfs_geom *g = &fs->geo;
	uint32_t agno = mfs_ino_to_agno(g, ino);
	uint64_t cur, n = 0;
	int err;

	*listed = 0;
	err = mfs_orphan_head(fs, agno, &cur);
	/* Bounded by the inodes an AG can hold: a loop ends the walk. */
	while (!err && cur && n++ < (1ull << (g->agblklog + g->inopblog))) {
		struct mfs_buf *bp;
		const struct mfs_dinode *d;

		if (cur == ino) {
			*listed = 1;
			break;
		}
		if (mfs_ino_check(fs, cur) || mfs_ino_to_agno(g, cur) != agno)
			break;
		err = mfs_buf_read(fs->bc, mfs_ino_to_fsb(g, cur), NULL, &bp);
		if (err)
			break;
		d = (const void *)((const char *)bp->data + mfs_ino_to_offset(g, cur));
		cur = mfs_get64(d->next_unlinked);
		mfs_buf_put(bp);
	}
	return err;
}
