/*
 * scrub_sb.c — the superblock checker: the primary (AG 0) and the copy at agbno 0 of every
 * other AG.  Each must verify, carry a sane geometry, and that geometry must be the one the
 * filesystem runs with (the primary's, read at open); feature bits, state and the reserved
 * fields must hold known values.  The summary counters are the SUMMARY checker's.
 */
#include "bcache.h"
#include "byteorder.h"
#include "dev.h"
#include "fs.h"
#include "geom.h"
#include "log.h"
#include "scrub_priv.h"

#include <string.h>

#define SB_KNOWN_STATE (MFS_STATE_CLEAN | MFS_STATE_DIRTY | MFS_STATE_ERRORS)

/* Compare one geometry field; a copy disagreeing with the primary is a cross-reference
 * failure, the primary disagreeing with the geometry in use is corruption of the primary. */
#define GEO_FIELD(name, fmt, a, b)                                                      \
	do {                                                                            \
		if ((a) != (b))                                                         \
			scrub_report(ctx, flag, "AG %u superblock: " name " " fmt           \
				     ", the filesystem uses " fmt, agno, a, b);             \
	} while (0)

static void check_geometry(struct mfs_scrub_ctx *ctx, uint32_t agno, const struct mfs_sb *sb)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	uint32_t flag = agno ? MFS_SCRUB_OFLAG_XCORRUPT : MFS_SCRUB_OFLAG_CORRUPT;
	struct mfs_geom cg;

	if (mfs_geom_from_sb(&cg, sb, mfs_dev_size(ctx->fs->dev))) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "AG %u superblock: the geometry is not "
			     "valid (block size %u, %llu blocks, %u AGs of %u blocks, inode size %u)",
			     agno, mfs_get32(sb->blocksize),
			     (unsigned long long)mfs_get64(sb->dblocks), mfs_get32(sb->agcount),
			     mfs_get32(sb->agblocks), mfs_get16(sb->inodesize));
		return;
	}
	GEO_FIELD("block size", "%u", cg.blocksize, g->blocksize);
	GEO_FIELD("blocks", "%llu", (unsigned long long)cg.dblocks,
		  (unsigned long long)g->dblocks);
	GEO_FIELD("AG blocks", "%u", cg.agblocks, g->agblocks);
	GEO_FIELD("AG count", "%u", cg.agcount, g->agcount);
	GEO_FIELD("inode size", "%u", cg.inodesize, g->inodesize);
	GEO_FIELD("root inode", "%llu", (unsigned long long)cg.rootino,
		  (unsigned long long)g->rootino);
	GEO_FIELD("journal start", "%llu", (unsigned long long)cg.logstart,
		  (unsigned long long)g->logstart);
	GEO_FIELD("journal blocks", "%u", cg.logblocks, g->logblocks);
	GEO_FIELD("stripe unit", "%u", cg.sunit, g->sunit);
	GEO_FIELD("stripe width", "%u", cg.swidth, g->swidth);
	if (memcmp(sb->hdr.uuid, g->uuid, sizeof(g->uuid)))
		scrub_report(ctx, flag, "AG %u superblock: UUID differs from the filesystem's",
			     agno);
}

static void check_fields(struct mfs_scrub_ctx *ctx, uint32_t agno, const struct mfs_sb *sb)
{
	const uint32_t C = MFS_SCRUB_OFLAG_CORRUPT;
	size_t i;

	if (mfs_get32(sb->features_incompat) & ~MFS_FEAT_INCOMPAT_SUPPORTED)
		scrub_report(ctx, C, "AG %u superblock: unknown incompatible features 0x%x", agno,
			     mfs_get32(sb->features_incompat) & ~MFS_FEAT_INCOMPAT_SUPPORTED);
	if (mfs_get32(sb->features_ro_compat) & ~MFS_FEAT_RO_COMPAT_SUPPORTED)
		scrub_report(ctx, C, "AG %u superblock: unknown read-only features 0x%x", agno,
			     mfs_get32(sb->features_ro_compat) & ~MFS_FEAT_RO_COMPAT_SUPPORTED);
	if (mfs_get32(sb->features_compat) & ~MFS_FEAT_COMPAT_SUPPORTED)
		scrub_report(ctx, MFS_SCRUB_OFLAG_WARNING, "AG %u superblock: unknown compatible "
			     "features 0x%x", agno,
			     mfs_get32(sb->features_compat) & ~MFS_FEAT_COMPAT_SUPPORTED);
	if (mfs_get32(sb->state) & ~SB_KNOWN_STATE)
		scrub_report(ctx, C, "AG %u superblock: state 0x%x has unknown bits (known: 0x%x)",
			     agno, mfs_get32(sb->state), SB_KNOWN_STATE);
	if ((mfs_get32(sb->state) & MFS_STATE_CLEAN) && (mfs_get32(sb->state) & MFS_STATE_DIRTY))
		scrub_report(ctx, C, "AG %u superblock: state 0x%x is both clean and dirty", agno,
			     mfs_get32(sb->state));
	for (i = 0; i < sizeof(sb->pad0); i++)
		if (sb->pad0[i])
			break;
	if (i < sizeof(sb->pad0) || sb->pad1)
		scrub_report(ctx, C, "AG %u superblock: padding is not zero", agno);
	for (i = 0; i < sizeof(sb->reserved) / sizeof(sb->reserved[0]); i++)
		if (sb->reserved[i]) {
			scrub_report(ctx, C, "AG %u superblock: reserved word %zu is 0x%llx, "
				     "expected 0", agno, i,
				     (unsigned long long)mfs_get64(sb->reserved[i]));
			break;
		}
	for (i = 0; i < sizeof(sb->label) && sb->label[i]; i++)
		;
	for (; i < sizeof(sb->label); i++)
		if (sb->label[i]) {
			scrub_report(ctx, C, "AG %u superblock: label has bytes after its NUL",
				     agno);
			break;
		}
}

int scrub_sb(struct mfs_scrub_ctx *ctx)
{
	uint32_t agno = ctx->agno;
	struct mfs_buf *bp;
	int err;

	scrub_ag_lock(ctx->fs, agno);
	err = mfs_read_sb(ctx->fs, agno, &bp);
	if (err) {
		scrub_ag_unlock(ctx->fs, agno);
		if (!mfs_is_corruption(err))
			return err;
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "AG %u superblock (block %llu): %s",
			     agno, (unsigned long long)mfs_agbno_to_fsb(&ctx->fs->geo, agno,
									MFS_SB_AGBNO),
			     scrub_errstr(err));
		return 0;
	}
	check_geometry(ctx, agno, bp->data);
	check_fields(ctx, agno, bp->data);
	if (scrub_nonzero(bp->data, sizeof(struct mfs_sb), ctx->fs->geo.blocksize) >= 0)
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "AG %u superblock: byte %ld, past the "
			     "superblock, is not zero", agno,
			     scrub_nonzero(bp->data, sizeof(struct mfs_sb), ctx->fs->geo.blocksize));
	mfs_buf_put(bp);
	scrub_ag_unlock(ctx->fs, agno);
	return 0;
}
