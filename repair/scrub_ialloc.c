/*
 * scrub_ialloc.c — the inode btree checker of one AG, under the AG lock.
 *
 * The tree passes the structural check; each record is a chunk of 64 inodes whose first
 * inode is 64-aligned, whose blocks are aligned to the chunk size and lie inside the AG past
 * its fixed blocks, and whose free count is the population of its free mask.
 * Cross-references: the chunk's blocks are owned by "inodes" in the reverse map and are not
 * free; every inode of the chunk verifies, and is free (not mfs_dinode_in_use: mode 0 and no
 * links or fork content) exactly when its bit in the free mask says so (the inode cluster buffers are read under the AG lock, which every
 * transaction logging an inode holds: committed state); the tree's own blocks are owned by
 * "inobt" in the reverse map.
 *
 * The inodes are read by the census's sweep of the AG's chunks (scrub_census.c), taken here
 * with the AG locked, whose verdicts stand for this look; a chunk where the census saw
 * anything wrong is walked again here, which words the findings.
 */
#include "bcache.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "log.h"
#include "scrub_priv.h"
#include "verify.h"

struct chunk_check {
	struct mfs_scrub_ctx *ctx;
	const struct scrub_ag *sa;
	const char *wb;
};

static int chunk_inode_fn(void *priv, uint64_t ino, const struct mfs_dinode *d, int isfree)
{
	struct chunk_check *cc = priv;
	const struct mfs_geom *g = &cc->ctx->fs->geo;

	if (mfs_dinode_verify(d, g->inodesize, ino, g->uuid))
		scrub_report(cc->ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u inobt %s: inode %llu fails "
			     "its verifier", cc->sa->agno, cc->wb, (unsigned long long)ino);
	else if (isfree == mfs_dinode_in_use(d))
		scrub_report(cc->ctx, MFS_SCRUB_OFLAG_XCORRUPT, "AG %u inobt %s: inode %llu is %s "
			     "in the free mask, but %s (mode 0%o, %u links, data fork format %u)",
			     cc->sa->agno, cc->wb, (unsigned long long)ino,
			     isfree ? "free" : "in use", isfree ? "in use" : "free",
			     mfs_get16(d->mode), mfs_get32(d->nlink), d->dformat);
	return 0;
}

/*
 * The census's verdicts on chunk c, when its part of the AG is of change count seq (taken
 * with the AG locked since: the committed state the walk below would read) and saw the
 * chunk with the same free mask: 1 when every inode the walk would look at passes there
 * (SCRUB_CI_IOK), else 0 and the walk decides (and words the findings).
 */
static int census_chunk_clean(struct mfs_scrub_ctx *ctx, uint32_t agno, uint64_t seq,
			      const struct mfs_inobt_rec *c)
{
	uint64_t mask;
	const struct scrub_census_ino *ci = scrub_census_chunk_at(ctx, agno,
								  mfs_get32(c->startino), seq,
								  &mask);

	if (!ci || mask != mfs_get64(c->freemask))
		return 0;
	for (unsigned k = 0; k < MFS_INODES_PER_CHUNK; k++)
		if ((ci[k].flags & (SCRUB_CI_SEEN | SCRUB_CI_IOK)) == SCRUB_CI_SEEN)
			return 0;
	return 1;
}

/* Every inode of the chunk verifies and is free exactly when the mask says so (have_seq:
 * the census's part of this AG is of count seq, see census_chunk_clean). */
static void check_chunk_inodes(struct mfs_scrub_ctx *ctx, const struct scrub_ag *sa,
			       size_t i, const struct mfs_inobt_rec *c, int have_seq,
			       uint64_t seq)
{
	struct chunk_check cc = { ctx, sa, NULL };
	uint64_t fsb = 0;
	char wb[48];
	int err;

	if (have_seq && census_chunk_clean(ctx, sa->agno, seq, c))
		return;
	cc.wb = scrub_rec_where(sa, MFS_BT_INO, i, wb, sizeof(wb));
	err = scrub_chunk_walk(ctx, sa->agno, c, chunk_inode_fn, &cc, &fsb);

	if (err)
		scrub_report(ctx, MFS_SCRUB_OFLAG_INCOMPLETE, "AG %u inobt %s: inode block %llu "
			     "unreadable: %s", sa->agno, wb, (unsigned long long)fsb,
			     scrub_errstr(err));
}

/*
 * scrub_rmap_covering for chunks taken in block order (the inode btree's records, keys
 * strictly increasing, lie in increasing blocks): *at, the last rmap record starting at or
 * before the previous chunk (-1 before the first), moves forward instead of a binary search
 * of the AG's records (a million at a million files) for each chunk.
 */
static const struct mfs_rmap_rec *rmap_covering_next(const struct scrub_recs *rmap, long *at,
						      uint32_t agbno, uint32_t len)
{
	const struct mfs_rmap_rec *r;

	for (; (size_t)(*at + 1) < rmap->n; (*at)++) {
		r = scrub_rec(rmap, (size_t)(*at + 1));
		if (mfs_get32(r->startblock) > agbno)
			break;
	}
	if (*at < 0)
		return NULL;
	r = scrub_rec(rmap, (size_t)*at);
	if ((uint64_t)mfs_get32(r->startblock) + mfs_get32(r->blockcount) < (uint64_t)agbno + len)
		return NULL;
	return r;
}

/* Where record i lies, formatted only for a finding. */
#define WHERE scrub_rec_where(&sa, MFS_BT_INO, i, wb, sizeof(wb))
int scrub_inobt(struct mfs_scrub_ctx *ctx)
{
	const struct mfs_geom *g = &ctx->fs->geo;
	const uint32_t C = MFS_SCRUB_OFLAG_CORRUPT, X = MFS_SCRUB_OFLAG_XCORRUPT;
	struct scrub_ag sa;
	const struct scrub_recs *ir;
	uint64_t seq = 0;
	long rm_at = -1;
	char ob[32];
	int err, have_seq = 0;

	scrub_ag_lock(ctx->fs, ctx->agno);
	err = scrub_ag_scan(ctx, ctx->agno, SCRUB_WANT_INO | SCRUB_WANT_BNO | SCRUB_WANT_RMAP,
			    &sa);
	if (err)
		goto out;
	if (!sa.agh) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_INCOMPLETE, "AG %u inobt: not checked, the AG "
			     "header is unreadable", ctx->agno);
		goto out;
	}
	if (sa.tree_err[MFS_BT_INO]) {
		scrub_report(ctx, C, "AG %u inobt (root %u, %u levels): %s", sa.agno,
			     mfs_get32(sa.agh->roots[MFS_BT_INO]),
			     mfs_get32(sa.agh->levels[MFS_BT_INO]),
			     scrub_errstr(sa.tree_err[MFS_BT_INO]));
		goto out;
	}
	/* One sweep of the chunks serves this check and the later ones (the census, which the
	 * reverse-map check then finds current unless something committed meanwhile). */
	if (ctx->census && scrub_census_take_at(ctx, ctx->agno, &seq) == 0)
		have_seq = 1;
	ir = &sa.recs[MFS_BT_INO];
	for (size_t i = 0; i < ir->n; i++) {
		const struct mfs_inobt_rec *c = scrub_rec(ir, i);
		uint32_t startino = mfs_get32(c->startino);
		uint32_t agbno = mfs_agino_to_agbno(g, startino);
		uint64_t mask = mfs_get64(c->freemask);
		const struct mfs_rmap_rec *r;
		char wb[48];

		err = scrub_cancelled(ctx);
		if (err)
			goto out;
		if (startino % MFS_INODES_PER_CHUNK || agbno % g->chunkblocks ||
		    agbno < MFS_AG_FIXED_BLOCKS ||
		    (uint64_t)agbno + g->chunkblocks > sa.len ||
		    (uint64_t)startino + MFS_INODES_PER_CHUNK > (1ull << (g->agblklog + g->inopblog))) {
			scrub_report(ctx, C, "AG %u inobt %s: chunk at agino %u (block %u) "
				     "is misaligned or outside the AG", sa.agno, WHERE, startino, agbno);
			continue;
		}
		if (mfs_get32(c->freecount) != (uint32_t)__builtin_popcountll(mask))
			scrub_report(ctx, C, "AG %u inobt %s: chunk %u free count %u, its "
				     "free mask 0x%016llx has %d bits", sa.agno, WHERE, startino,
				     mfs_get32(c->freecount), (unsigned long long)mask,
				     __builtin_popcountll(mask));
		if ((sa.have & SCRUB_WANT_BNO) &&
		    scrub_any_free(&sa.recs[MFS_BT_BNO], agbno, g->chunkblocks))
			scrub_report(ctx, X, "AG %u inobt %s: chunk %u (blocks %u+%u) lies "
				     "in free space", sa.agno, WHERE, startino, agbno, g->chunkblocks);
		if (sa.have & SCRUB_WANT_RMAP) {
			r = rmap_covering_next(&sa.recs[MFS_BT_RMAP], &rm_at, agbno,
					       g->chunkblocks);
			if (!r || mfs_get64(r->owner) != MFS_OWN_INODES)
				scrub_report(ctx, X, "AG %u inobt %s: chunk %u (blocks %u+%u) "
					     "is owned by %s in the rmapbt, expected inodes", sa.agno,
					     WHERE, startino, agbno, g->chunkblocks,
					     r ? scrub_owner_name(mfs_get64(r->owner), ob, sizeof(ob))
					       : "nobody");
		}
		check_chunk_inodes(ctx, &sa, i, c, have_seq, seq);
	}
	/* The tree's own blocks. */
	for (size_t i = 0; (sa.have & SCRUB_WANT_RMAP) && i < sa.blocks[MFS_BT_INO].n; i++) {
		uint32_t b = *(const uint32_t *)scrub_rec(&sa.blocks[MFS_BT_INO], i);
		const struct mfs_rmap_rec *r = scrub_rmap_covering(&sa.recs[MFS_BT_RMAP], b, 1);

		if (!r || mfs_get64(r->owner) != MFS_OWN_INOBT)
			scrub_report(ctx, X, "AG %u inobt block %u is owned by %s in the rmapbt, "
				     "expected inobt", sa.agno, b,
				     r ? scrub_owner_name(mfs_get64(r->owner), ob, sizeof(ob))
				       : "nobody");
	}
out:
	scrub_ag_release(&sa);
	scrub_ag_unlock(ctx->fs, ctx->agno);
	return err;
}
#undef WHERE
