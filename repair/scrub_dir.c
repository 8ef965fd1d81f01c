/*
 * scrub_dir.c — the directory checker: a directory's names as stored, and each entry
 * against the inode it names.
 *
 * The storage (inline entries or name btree) must pass mfs_dir_check: entries in bounds
 * and sorted by hash, names hashing to their keys, continuations complete, the stored count
 * and size matching the entries.  In the same walk (mfs_dir_check_iterate), every entry in
 * hash order with the directory's lock shared: a valid name (1..255 bytes, no '/' or NUL, neither "." nor
 * ".."), a valid inode number that is allocated, whose file type matches the entry's, and
 * never the directory itself.  ".." must name an allocated directory (the root's is the
 * root).  Whether the parent really holds this directory is counted by the NLINKS checker.
 * Each block of a name btree is reverse-mapped to the directory (btree block), not free.
 */
#include "ag.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "dir.h"
#include "mendfs_format.h"
#include "fs.h"
#include "geom.h"
#include "ialloc.h"
#include "inode.h"
#include "log.h"
#include "scrub_priv.h"
#include "verify.h"

#include <dirent.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* The dirent type of a mode. */
static uint8_t ftype_of(uint16_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: return DT_REG;
	case S_IFDIR: return DT_DIR;
	case S_IFLNK: return DT_LNK;
	case S_IFCHR: return DT_CHR;
	case S_IFBLK: return DT_BLK;
	case S_IFIFO: return DT_FIFO;
	case S_IFSOCK: return DT_SOCK;
	}
	return DT_UNKNOWN;
}

/*
 * The inode chunk records (inobt) last looked up for this directory's entries: their first
 * inode and free mask as they were under the AG lock.  With the directory locked, an inode
 * an entry names cannot be freed (the entry would have to go first), so an inode a record
 * showed allocated is still allocated while the walk lasts: entries naming inodes of the
 * same chunks (the usual case, children are allocated near their parent) need no lookup.
 * A free bit is never trusted from the cache: such an entry is looked up again.  Entries
 * come in hash order, alternating between the few chunks that hold the children, so a
 * few records (and chunk copies, see mode_of) are kept, replaced in turn.
 */
#define DIR_CHUNK_SLOTS 4
struct chunk_rec {
	uint64_t first;         /* inode number of the chunk's first inode */
	uint64_t freemask;
	int valid;
};
#define DIR_BLOCK_SLOTS 8           /* 40 children of 512 bytes lie in 5 or 6 blocks */
struct chunk_cache {
	struct chunk_rec rec[DIR_CHUNK_SLOTS];
	unsigned next_rec, next_cl;
	struct scrub_cluster *cl;   /* NULL, or DIR_BLOCK_SLOTS one-block copies (mode_of) */
	struct scrub_census_chunk *census;  /* NULL, or the census's records of a chunk */
	int have_census;
};

struct dir_walk {
	struct mfs_scrub_ctx *ctx;
	struct mfs_inode *dp;
	uint64_t n;
	struct chunk_cache cc;
	struct scrub_recs *kids;    /* NULL, or every entry's inode number (for the census) */
};

/* 0 when the inobt says `ino` is allocated, -ENOENT when it lies in no chunk or is free,
 * or a read or corruption error (like mfs_iget's MFS_IGET_UNTRUSTED check). */
static int ino_allocated(struct mfs_scrub_ctx *ctx, struct chunk_cache *cc, uint64_t ino)
{
	struct mfs_fs *fs = ctx->fs;
	uint32_t agno = mfs_ino_to_agno(&fs->geo, ino);
	struct chunk_rec *r;
	uint64_t first, freemask;
	int err;

	for (unsigned i = 0; i < DIR_CHUNK_SLOTS; i++) {
		r = &cc->rec[i];
		if (r->valid && ino >= r->first && ino - r->first < MFS_INODES_PER_CHUNK &&
		    !((r->freemask >> (ino - r->first)) & 1))
			return 0;
	}
	mfs_ag_lock(fs, agno, MFS_AGL_INODES);         /* the inode btree holds still */
	err = mfs_inobt_chunk_locked(fs, ino, &first, &freemask);
	mfs_ag_unlock(fs, agno, MFS_AGL_INODES);
	if (err)
		return err;
	r = &cc->rec[cc->next_rec++ % DIR_CHUNK_SLOTS];
	r->first = first;
	r->freemask = freemask;
	r->valid = 1;
	return (freemask >> (ino - first)) & 1 ? -ENOENT : 0;
}

/* The copy among cc's that holds `ino`, else the next one to replace. */
static struct scrub_cluster *cluster_for(struct mfs_scrub_ctx *ctx, struct chunk_cache *cc,
					 uint64_t ino)
{
	uint64_t fsb = mfs_ino_to_fsb(&ctx->fs->geo, ino);

	for (unsigned i = 0; i < DIR_BLOCK_SLOTS; i++)
		if (cc->cl[i].nblk && fsb >= cc->cl[i].fsb && fsb - cc->cl[i].fsb < cc->cl[i].nblk)
			return &cc->cl[i];
	return &cc->cl[cc->next_cl++ % DIR_BLOCK_SLOTS];
}

/*
 * The mode of inode `ino` (0 with -ENOENT when not allocated), from its committed on-disk
 * copy (its cluster buffer, read under the AG lock) rather than the inode cache: a file
 * type is set when the inode is made, in the transaction that adds its first entry, and
 * never changes while the inode is allocated — and an entry of this directory, locked,
 * keeps it allocated.  A walk of a large tree thus does not churn the inode cache.
 * The child's lock is never taken (a rename holding it may wait for this directory), nor
 * is mfs_iget called.  An inode that does not verify or whose fields are insane:
 * -EFSCORRUPTED (its own checker names the damage).
 */
static int mode_of(struct mfs_scrub_ctx *ctx, struct mfs_inode *dp, struct chunk_cache *cc,
		   uint64_t ino, uint16_t *mode)
{
	struct mfs_fs *fs = ctx->fs;
	const struct mfs_geom *g = &fs->geo;
	uint32_t agno = mfs_ino_to_agno(g, ino);
	const struct mfs_dinode *d;
	const struct scrub_census_ino *cr = NULL;
	struct scrub_census_ino ci;
	struct mfs_buf *bp;
	int err;

	*mode = 0;
	if (ino == dp->ino) {
		*mode = dp->mode;
		return 0;
	}
	/* The census's record, current: the committed state now, as a locked read would see
	 * it (a copy of its chunk's records serves the directory's other children in it). */
	if (cc->census && (!cc->have_census || ino - cc->census->first >= MFS_INODES_PER_CHUNK ||
			   !scrub_census_current(ctx, cc->census->seq))) {
		cc->have_census = scrub_census_chunk(ctx, ino, cc->census);
		/* The directory's other children are mostly in this chunk too: its records
		 * fetched together rather than one miss each. */
		for (size_t off = 0; cc->have_census && off < sizeof(*cr) * MFS_INODES_PER_CHUNK;
		     off += 64)
			__builtin_prefetch((const char *)cc->census->ino + off);
	}
	if (cc->census && cc->have_census)
		cr = &cc->census->ino[ino - cc->census->first];
	else if (scrub_census_get(ctx, ino, &ci))
		cr = &ci;
	if (cr && (cr->flags & SCRUB_CI_FREE))
		return -ENOENT;
	if (cr && (cr->flags & SCRUB_CI_USABLE)) {
		*mode = cr->mode;
		return 0;
	}
	err = ino_allocated(ctx, cc, ino);
	if (err)
		return err;
	if (cc->cl) {
		/* The copy of the inode chunk serves the directory's other children in it:
		 * each is kept allocated, its mode unchanged, by its entry (the directory is
		 * locked) since before the copy was taken. */
		err = scrub_cluster_dinode(ctx, cluster_for(ctx, cc, ino), ino, &d);
		if (!err)
			err = mfs_dinode_verify(d, g->inodesize, ino, g->uuid);
		if (!err)
			err = mfs_dinode_check(d, g->inodesize, ino);
		if (err)
			return err;
		*mode = mfs_get16(d->mode);
		return *mode ? 0 : -ENOENT;
	}
	scrub_ag_lock(fs, agno);
	err = mfs_buf_read(fs->bc, mfs_ino_to_fsb(g, ino), NULL, &bp);
	if (!err) {
		d = (const void *)((const char *)bp->data + mfs_ino_to_offset(g, ino));
		err = mfs_dinode_verify(d, g->inodesize, ino, g->uuid);
		if (!err)
			err = mfs_dinode_check(d, g->inodesize, ino);
		if (!err)
			*mode = mfs_get16(d->mode);
		mfs_buf_put(bp);
	}
	scrub_ag_unlock(fs, agno);
	if (err)
		return err;
	return *mode ? 0 : -ENOENT;
}

/* The entry's name for a finding (the first 48 bytes), formatted only then. */
static const char *shown_name(char *buf, size_t size, const char *name, unsigned len)
{
	snprintf(buf, size, "%.*s%s", len < 48 ? (int)len : 48, name, len < 48 ? "" : "...");
	return buf;
}

#define SHOWN shown_name(shown, sizeof(shown), name, len)
static int entry_fn(void *priv, const char *name, unsigned len, uint64_t ino, uint8_t ftype,
		    uint64_t next_cookie)
{
	struct dir_walk *w = priv;
	struct mfs_scrub_ctx *ctx = w->ctx;
	unsigned long long d = (unsigned long long)w->dp->ino;
	char shown[64];
	uint16_t mode;
	int err;

	if (next_cookie <= MFS_DIR_COOKIE_DOTDOT)
		return 0;               /* "." and "..": checked by the caller */
	err = scrub_cancelled(ctx);
	if (err)
		return err;
	if (w->kids && scrub_recs_add(w->kids, &ino) != 0) {
		scrub_recs_free(w->kids);
		w->kids = NULL;         /* no memory: the census goes without them */
	}
	w->n++;
	for (unsigned i = 0; i < len; i++)
		if (name[i] == '/' || name[i] == '\0') {
			scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "directory %llu entry '%s': the "
				     "name holds a '/' or NUL byte", d, SHOWN);
			break;
		}
	if (len == 0 || len > MFS_NAME_MAX || (len == 1 && name[0] == '.') ||
	    (len == 2 && name[0] == '.' && name[1] == '.'))
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "directory %llu entry '%s': name of %u "
			     "bytes is not a storable name", d, SHOWN, len);
	if (ino == w->dp->ino) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "directory %llu entry '%s': names the "
			     "directory itself", d, SHOWN);
		return 0;
	}
	if (mfs_ino_check(ctx->fs, ino)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "directory %llu entry '%s': inode "
			     "number %llu is not valid", d, SHOWN, (unsigned long long)ino);
		return 0;
	}
	err = mode_of(ctx, w->dp, &w->cc, ino, &mode);
	if (err == -ENOENT || mfs_is_corruption(err)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "directory %llu entry '%s': inode %llu "
			     "%s", d, SHOWN, (unsigned long long)ino,
			     err == -ENOENT ? "is not allocated" : "cannot be loaded");
		return 0;
	}
	if (err)
		return err;
	if (ftype_of(mode) != ftype)
		scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "directory %llu entry '%s': file type "
			     "%u, inode %llu has mode 0%o (type %u)", d, SHOWN, ftype,
			     (unsigned long long)ino, mode, ftype_of(mode));
	return 0;
}
#undef SHOWN

/* ".." names an allocated directory (*parent: what it names). */
static int check_parent(struct mfs_scrub_ctx *ctx, struct mfs_inode *dp, uint64_t *parentp)
{
	unsigned long long d = (unsigned long long)dp->ino;
	struct chunk_cache cc = { 0 };
	uint64_t parent;
	uint16_t mode;
	int err;

	err = mfs_dir_get_parent(dp, &parent);
	if (err)
		return err;
	*parentp = parent;
	if (dp->ino == ctx->fs->geo.rootino || parent == dp->ino) {
		if (dp->ino != ctx->fs->geo.rootino || parent != dp->ino)
			scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "directory %llu: parent (\"..\") "
				     "is %llu%s", d, (unsigned long long)parent,
				     dp->ino == ctx->fs->geo.rootino ? ", the root's must be itself"
								     : ", itself");
		return 0;
	}
	if (dp->nlink == 0)
		return 0;       /* removed while open: its parent may be gone */
	if (mfs_ino_check(ctx->fs, parent)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "directory %llu: parent (\"..\") %llu is "
			     "not a valid inode number", d, (unsigned long long)parent);
		return 0;
	}
	err = mode_of(ctx, dp, &cc, parent, &mode);
	if (err == -ENOENT || mfs_is_corruption(err)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "directory %llu: parent (\"..\") %llu "
			     "%s", d, (unsigned long long)parent,
			     err == -ENOENT ? "is not allocated" : "cannot be loaded");
		return 0;
	}
	if (err)
		return err;
	if (!S_ISDIR(mode))
		scrub_report(ctx, MFS_SCRUB_OFLAG_XCORRUPT, "directory %llu: parent (\"..\") %llu "
			     "has mode 0%o, not a directory", d, (unsigned long long)parent, mode);
	return 0;
}

/* Has the reverse-map check of phase 2 done the cross-reference of dp's one-block name
 * tree (SCRUB_CI_ROOTMAP in the census, current: nothing committed since)? */
static int root_xrefed(struct mfs_scrub_ctx *ctx, struct mfs_inode *dp)
{
	struct scrub_census_ino ci;
	struct mfs_dir_root dr;

	if (dp->litsize < sizeof(dr))
		return 0;
	memcpy(&dr, dp->lit, sizeof(dr));
	return scrub_census_get(ctx, dp->ino, &ci) &&
	       (ci.flags & (SCRUB_CI_FREE | SCRUB_CI_DIRROOT | SCRUB_CI_ROOTMAP)) ==
	       (SCRUB_CI_DIRROOT | SCRUB_CI_ROOTMAP) &&
	       mfs_get32(dr.levels) == 1 && ci.fsb == mfs_get64(dr.rootblock);
}

int scrub_dir(struct mfs_scrub_ctx *ctx)
{
	struct mfs_inode *dp;
	struct dir_walk w;
	struct scrub_cluster cl[DIR_BLOCK_SLOTS];
	struct scrub_census_chunk census;
	struct scrub_recs kids;
	uint64_t count, parent = 0, seq;
	int err, have_parent = 1;

	err = scrub_iget(ctx, &dp);
	if (err || !dp)
		return err;
	seq = mfs_fs_changes(ctx->fs);     /* with the directory locked */
	if (!S_ISDIR(dp->mode))
		goto out;
	memset(&w, 0, sizeof(w));
	memset(cl, 0, sizeof(cl));
	for (unsigned i = 0; i < DIR_BLOCK_SLOTS; i++)
		cl[i].one_block = 1;    /* a directory's children: a few blocks of a chunk */
	w.ctx = ctx;
	w.dp = dp;
	w.cc.cl = cl;
	w.cc.census = ctx->census ? &census : NULL;
	scrub_recs_init(&kids, sizeof(uint64_t));
	if (ctx->census)
		w.kids = &kids;
	/* The storage checked and each entry against its inode in one walk of the names:
	 * a damaged directory's entries before the damage have been looked at too. */
	err = mfs_dir_check_iterate(dp, entry_fn, &w);
	for (unsigned i = 0; i < DIR_BLOCK_SLOTS; i++)
		scrub_cluster_release(&cl[i]);
	if (mfs_is_corruption(err)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "directory %llu: names (%s format, size "
			     "%llu): %s", (unsigned long long)dp->ino,
			     dp->dformat == MFS_FMT_LOCAL ? "inline" : "btree",
			     (unsigned long long)dp->size, scrub_errstr(err));
		err = 0;
		goto out_kids;
	}
	if (err)
		goto out_kids;
	if (dp->dformat == MFS_FMT_BTREE && !root_xrefed(ctx, dp)) {
		char what[64];

		snprintf(what, sizeof(what), "directory %llu name btree",
			 (unsigned long long)dp->ino);
		err = scrub_xref_tree_blocks(ctx, dp, 0, what);
		if (err)
			goto out_kids;
	}
	err = check_parent(ctx, dp, &parent);
	if (err)
		have_parent = 0;
	if (mfs_is_corruption(err)) {
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "directory %llu: parent unreadable: %s",
			     (unsigned long long)dp->ino, scrub_errstr(err));
		err = 0;
	}
	if (err)
		goto out_kids;
	/* The entries as committed at change count seq, when nothing committed meanwhile:
	 * the link-count check takes them from the census instead of reading them again. */
	if (w.kids && have_parent)
		scrub_census_put_dir(ctx, dp->ino, parent, w.kids, seq);
	if (!mfs_dir_count(dp, &count) && count != w.n)
		scrub_report(ctx, MFS_SCRUB_OFLAG_CORRUPT, "directory %llu: %llu entries counted, "
			     "%llu checked", (unsigned long long)dp->ino,
			     (unsigned long long)count, (unsigned long long)w.n);
out_kids:
	scrub_recs_free(&kids);
out:
	scrub_irele(dp);
	return err;
}
