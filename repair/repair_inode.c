/*
 * repair_inode.c — rebuilder of an inode's core fields (MFS_SCRUB_INODE).
 *
 * Two cases, told apart by whether the inode loads:
 *
 * It loads (mfs_iget): its fields pass the loader's checks, and what the checker may still
 * find is what the in-core inode does not carry or carries wrongly — padding and reserved
 * words not zero (logging the inode writes them as zeroes), an orphan list pointer on an
 * inode with links (cleared: the orphan lists are rebuilt from the inodes without links),
 * a symlink whose size is not its target's length (measured from the target), a device's
 * size, a directory's mode on a file or symlink or a file's on a directory (the type told
 * from the evidence, as below: incore_type).  Changed
 * under the inode's exclusive lock and logged: the daemon's cached inode is the one fixed.
 *
 * It does not load (corrupt fields, bad checksum): no in-core copy can exist (a failed
 * load is never cached), so nobody can read or change it while it is fixed from the
 * committed cluster buffer, in ONE transaction under its AG lock:
 *   - the header's magic, self number and UUID set right when two of them are (a damaged
 *     field); fewer: beyond repair, below;
 *   - a mode whose file type is lost or does not fit the data fork: the type told from the
 *     data fork and the entries naming the inode (decide_type: they must agree, else the
 *     repair is refused and nothing changes; nothing to tell it by: beyond repair); a
 *     mode zeroed whole is such a mode on an inode still in use (mfs_dinode_in_use: links
 *     or fork content), which gets the owner's permissions alone.  When the type was all
 *     that was wrong (the core fields then pass the loader's checks, the block count is
 *     the reverse map's), the forks are kept as they are and the rest below is skipped;
 *   - unknown flags cleared, impossible nanoseconds zeroed, a link count over the maximum
 *     set to 1 (2 for a directory: the link count rebuild counts the real one), an orphan
 *     pointer outside the filesystem or on a linked inode cleared, padding zeroed;
 *   - the attribute fork: a btree when the reverse map gives the inode attribute blocks and
 *     the root in its place is sane; inline when the entries there parse to exactly the
 *     count, or at the one other offset where they do; a fork offset without an attribute
 *     fork cleared (the data fork's bytes behind it kept); otherwise dropped (its blocks
 *     freed), with a warning in the log;
 *   - the data fork from the file type and the reverse map: a regular file's extent map, a
 *     symlink's target extent, rebuilt from the reverse map (repair_bmap.h); a directory's
 *     name btree root kept when its levels are sane, else inline with the entries that
 *     parse (size recomputed); device files DEV, size 0;
 *   - size: a regular file's past 2^63 from its last extent, an inline symlink's from its
 *     target; the block count from the reverse map.
 * The result must pass the loader's checks, else nothing is written.
 *
 * Beyond repair: every block the reverse map gives the inode is freed, and the inode is
 * freed in its chunk (mfs_ifree), in one transaction; the reason says so.  Entries that
 * still name it are the directory and link-count rebuilders' to drop.
 */
#include "repair_bmap.h"
#include "repair_dirwalk.h"
#include "repair_ilit.h"
#include "repair_ag.h"
#include "scrub_priv.h"

#include "alloc.h"
#include "bcache.h"
#include "bmap.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "ialloc.h"
#include "inode.h"
#include "log.h"
#include "mem.h"
#include "trans.h"
#include "verify.h"

#include <dirent.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define SYMLINK_MAX     4095u
#define KNOWN_DIFLAGS   (MFS_DIFLAG_IMMUTABLE | MFS_DIFLAG_APPEND | MFS_DIFLAG_NODUMP | \
			 MFS_DIFLAG_NOATIME)

/* ---- an inode that loads -------------------------------------------------------------------- */

/* A symlink's target length: inline, or in its first data block. */
static int symlink_len(struct rep *r, struct mfs_inode *ip, uint64_t *len)
{
	uint32_t forksize = ip->forkoff ? ip->forkoff * 8u : ip->litsize;
	struct mfs_bmap_ext e;
	struct mfs_buf *bp;
	int err;

	if (ip->dformat == MFS_FMT_LOCAL) {
		*len = strnlen((const char *)ip->lit, forksize < SYMLINK_MAX ? forksize :
			       SYMLINK_MAX);
		return 0;
	}
	err = mfs_bmap_lookup(ip, 0, &e);
	if (!err && e.startblock == MFS_BMAP_HOLE)
		err = -EFSCORRUPTED;
	if (!err)
		err = mfs_buf_read(r->fs->bc, e.startblock, NULL, &bp);
	if (err)
		return rep_fail(r, err, "symlink %llu: its target cannot be read (%s): repair its "
				"extent map first", (unsigned long long)ip->ino, strerror(-err));
	*len = strnlen(bp->data, r->fs->geo.blocksize < SYMLINK_MAX ? r->fs->geo.blocksize :
		       SYMLINK_MAX);
	mfs_buf_put(bp);
	return 0;
}

static int inode_incore(struct rep *r, struct mfs_inode *ip)
{
	struct mfs_trans *tp;
	int err = 0;

	if (ip->nlink && ip->next_unlinked)
		ip->next_unlinked = 0;
	if (!S_ISREG(ip->mode) && !S_ISDIR(ip->mode) && !S_ISLNK(ip->mode))
		ip->size = 0;           /* a device, fifo or socket holds no data */
	if (S_ISLNK(ip->mode) && (ip->size == 0 || ip->size > SYMLINK_MAX)) {
		uint64_t len = 0;

		err = symlink_len(r, ip, &len);
		if (!err && len == 0)
			err = rep_fail(r, -EFSCORRUPTED, "symlink %llu: its target is empty",
				       (unsigned long long)ip->ino);
		if (err)
			return err;
		ip->size = len;
	}
	err = mfs_trans_alloc(r->fs, &tp);
	if (err)
		return rep_fail(r, err, "no memory for the repair's transaction");
	err = mfs_inode_log(tp, ip);
	if (err)
		rep_fail(r, err, "inode %llu: logging it: %s", (unsigned long long)ip->ino,
			 strerror(-err));
	err = rep_ino_finish(r, tp, ip->ino, err);
	if (err && mfs_inode_reload(ip))
		mfs_inode_invalidate(r->fs, ip->ino);
	return err;
}

/* ---- an inode that does not load ------------------------------------------------------------- */

struct raw {
	struct rep *r;
	struct mfs_fs *fs;
	uint64_t ino;
	uint32_t litsize;
	struct rep_fmap *m;
	const struct rep_owned_sum *s;
	uint8_t buf[MFS_MAX_INODESIZE];     /* the dinode being fixed */
	int drop_attr;                      /* free the attribute fork's blocks */
	const char *beyond;                 /* why it is beyond repair, NULL: it is not */
	uint16_t oldmode;                   /* the damaged mode the type was decided for */
	uint16_t newtype;                   /* its file type from the evidence (0: none) */
};

static struct mfs_dinode *rd(struct raw *x)
{
	return (struct mfs_dinode *)x->buf;
}

static uint8_t *rlit(struct raw *x)
{
	return x->buf + sizeof(struct mfs_dinode);
}

/* An inline attribute fork whose offset is the damage: where its entries parse
 * (repair_ilit.h), 0 when nowhere or in several places. */
static uint32_t find_local_attrs(struct raw *x)
{
	struct mfs_dinode *d = rd(x);

	return rep_local_attrs_find(rlit(x), x->litsize, d->dformat, mfs_get32(d->dnext),
				    mfs_get64(d->size), mfs_get32(d->anext));
}

static void fix_attr(struct raw *x)
{
	struct mfs_dinode *d = rd(x);
	uint32_t fo = mfs_get16(d->forkoff), nfo;
	struct mfs_fork_root fr;

	if (x->s->attr_recs) {
		uint32_t bfo = (x->litsize - (uint32_t)sizeof(fr)) / 8;

		memcpy(&fr, rlit(x) + bfo * 8, sizeof(fr));
		if (mfs_get32(fr.levels) >= 1 && mfs_get32(fr.levels) <= MFS_BTREE_MAXLEVELS &&
		    mfs_get64(fr.rootblock) < x->fs->geo.dblocks) {
			mfs_put16(d->forkoff, (uint16_t)bfo);
			d->aformat = MFS_FMT_BTREE;
			mfs_put32(d->anext, mfs_get32(fr.levels));
			return;
		}
	} else if (fo && (uint64_t)fo * 8 < x->litsize && d->aformat == MFS_FMT_LOCAL &&
		   rep_local_attrs_count(rlit(x), x->litsize, fo * 8) ==
		   (long)mfs_get32(d->anext)) {
		return;
	} else if (d->aformat == MFS_FMT_LOCAL && (nfo = find_local_attrs(x)) != 0) {
		mfs_log(MFS_LOG_WARN, "repair: inode %llu: its inline attributes found at offset "
			"%u (the fork offset said %u)", (unsigned long long)x->ino, nfo, fo);
		mfs_put16(d->forkoff, (uint16_t)nfo);
		return;
	} else if (d->aformat == MFS_FMT_NONE && !mfs_get32(d->anext)) {
		/* No attribute fork and no attribute block: a fork offset is the damage.  The
		 * bytes past it are the data fork's (a name btree root, inline entries): the
		 * offset goes, the literal area stays as it is. */
		mfs_put16(d->forkoff, 0);
		return;
	}
	if (fo || d->aformat != MFS_FMT_NONE || x->s->attr_recs)
		mfs_log(MFS_LOG_WARN, "repair: inode %llu: its attribute fork (offset %u, format "
			"%u, %llu blocks) cannot be told: dropped", (unsigned long long)x->ino, fo,
			d->aformat, (unsigned long long)x->s->attr_blocks);
	if (fo && fo * 8u < x->litsize)
		memset(rlit(x) + fo * 8u, 0, x->litsize - fo * 8u);
	mfs_put16(d->forkoff, 0);
	d->aformat = MFS_FMT_NONE;
	mfs_put32(d->anext, 0);
	x->drop_attr = x->s->attr_recs != 0;
}

/* The size of an inline directory: 8 + its entries that parse, each (11 + name). */
static uint64_t local_dir_size(struct raw *x, uint32_t forksize)
{
	const uint8_t *p = rlit(x);
	uint32_t pos = MFS_DIR_LOCAL_HDR;

	if (forksize < MFS_DIR_LOCAL_HDR)
		return 0;
	while (pos + sizeof(struct mfs_dir_lent) <= forksize) {
		const struct mfs_dir_lent *e = (const void *)(p + pos);

		if (e->namelen == 0 || pos + sizeof(*e) + e->namelen > forksize)
			break;
		pos += (uint32_t)sizeof(*e) + e->namelen;
	}
	return pos;
}

/* The data fork by the file type; 0 or an error (x->beyond set: clear it). */
static int fix_data(struct raw *x, struct mfs_trans *tp, uint64_t *tree_blocks)
{
	struct mfs_dinode *d = rd(x);
	uint16_t mode = mfs_get16(d->mode);
	uint32_t fo = mfs_get16(d->forkoff), forksize = fo ? fo * 8u : x->litsize;
	struct rep_dfork *df;
	int err;

	*tree_blocks = x->s->tree_blocks;
	if (S_ISREG(mode) || (S_ISLNK(mode) && x->s->data_recs)) {
		df = mfs_malloc(sizeof(*df));
		if (!df)
			return rep_fail(x->r, -ENOMEM, "no memory for the new data fork");
		err = rep_fmap_build(x->m, tp, forksize, S_ISREG(mode), df);
		if (!err) {
			memset(rlit(x), 0, forksize);
			memcpy(rlit(x), df->lit, forksize);
			d->dformat = df->format;
			mfs_put32(d->dnext, df->next);
			*tree_blocks = df->tree_blocks;
		}
		free(df);
		if (err)
			return err;
		if (S_ISREG(mode) && mfs_get64(d->size) > (uint64_t)INT64_MAX) {
			uint64_t n = 0;
			struct mfs_bmbt_rec e;

			/* the end of the last extent (inline: in the fork; else recount) */
			if (d->dformat == MFS_FMT_EXTENTS && mfs_get32(d->dnext)) {
				memcpy(&e, rlit(x) + (mfs_get32(d->dnext) - 1) * sizeof(e), sizeof(e));
				n = mfs_get64(e.startoff) + mfs_get32(e.blockcount);
			} else {
				n = x->s->data_blocks;
			}
			mfs_put64(d->size, n << x->fs->geo.blocklog);
		}
		if (S_ISLNK(mode) && (mfs_get64(d->size) == 0 || mfs_get64(d->size) > SYMLINK_MAX))
			x->beyond = "symlink whose target length is lost";
		return 0;
	}
	if (S_ISLNK(mode)) {
		uint64_t len = strnlen((const char *)rlit(x), forksize < SYMLINK_MAX ? forksize :
				       SYMLINK_MAX);

		if (!len)
			x->beyond = "inline symlink without a target";
		d->dformat = MFS_FMT_LOCAL;
		mfs_put32(d->dnext, 0);
		mfs_put64(d->size, len);
		return 0;
	}
	if (S_ISDIR(mode)) {
		if (x->s->tree_recs) {
			struct mfs_dir_root dr;

			memcpy(&dr, rlit(x), sizeof(dr));
			if (forksize < sizeof(dr) || mfs_get32(dr.levels) < 1 ||
			    mfs_get32(dr.levels) > MFS_BTREE_MAXLEVELS) {
				x->beyond = "directory whose name btree root is lost";
				return 0;
			}
			d->dformat = MFS_FMT_BTREE;
			mfs_put32(d->dnext, mfs_get32(dr.levels));
			if (mfs_get64(d->size) > (uint64_t)INT64_MAX)
				mfs_put64(d->size, MFS_DIR_LOCAL_HDR);
			return 0;
		}
		d->dformat = MFS_FMT_LOCAL;
		mfs_put32(d->dnext, 0);
		if (mfs_get64(d->size) > forksize)
			mfs_put64(d->size, local_dir_size(x, forksize));
		return 0;
	}
	/* A device, fifo or socket: no data, size 0. */
	d->dformat = MFS_FMT_DEV;
	mfs_put32(d->dnext, 0);
	mfs_put64(d->size, 0);
	*tree_blocks = 0;
	return 0;
}

/* Everything but the forks. */
static void fix_core(struct raw *x)
{
	struct mfs_dinode *d = rd(x);
	uint16_t mode = mfs_get16(d->mode);
	struct mfs_timestamp *ts[4] = { &d->atime, &d->mtime, &d->ctime, &d->btime };
	uint64_t nu = mfs_get64(d->next_unlinked);

	mfs_put32(d->flags, mfs_get32(d->flags) & KNOWN_DIFLAGS);
	for (int i = 0; i < 4; i++) {
		if (mfs_get32(ts[i]->nsec) >= 1000000000u)
			mfs_put32(ts[i]->nsec, 0);
		ts[i]->pad = 0;
	}
	if (mfs_get32(d->nlink) > MFS_LINK_MAX)
		mfs_put32(d->nlink, S_ISDIR(mode) ? 2 : 1);
	if (nu && (mfs_get32(d->nlink) || mfs_ino_check(x->fs, nu)))
		mfs_put64(d->next_unlinked, 0);
	d->pad0 = 0;
	d->reserved[0] = d->reserved[1] = 0;
}

static int type_known(uint16_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFREG: case S_IFDIR: case S_IFLNK: case S_IFCHR: case S_IFBLK: case S_IFIFO:
	case S_IFSOCK:
		return 1;
	}
	return 0;
}

/* The header: its three identity fields are known from where the inode sits; two of them
 * right mean a damaged field (set right here), fewer a block that holds no inode of ours
 * (0: beyond repair). */
static int header_fix(struct raw *x)
{
	struct mfs_dinode *d = rd(x);
	int ok = (mfs_get32(d->magic) == MFS_DINODE_MAGIC) + (mfs_get64(d->ino) == x->ino) +
		 !memcmp(d->uuid, x->fs->geo.uuid, sizeof(d->uuid));

	if (ok < 2)
		return 0;
	mfs_put32(d->magic, MFS_DINODE_MAGIC);
	mfs_put64(d->ino, x->ino);
	memcpy(d->uuid, x->fs->geo.uuid, sizeof(d->uuid));
	return 1;
}

/* Read the committed dinode into x->buf (the caller holds its AG in tp). */
static int raw_read(struct raw *x, struct mfs_buf **bpp)
{
	const struct mfs_geom *g = &x->fs->geo;
	int err = mfs_buf_read(x->fs->bc, mfs_ino_to_fsb(g, x->ino), NULL, bpp);

	if (err)
		return rep_fail(x->r, err, "inode %llu: its block %llu cannot be read: %s",
				(unsigned long long)x->ino,
				(unsigned long long)mfs_ino_to_fsb(g, x->ino), strerror(-err));
	memcpy(x->buf, (const uint8_t *)(*bpp)->data + mfs_ino_to_offset(g, x->ino),
	       g->inodesize);
	return 0;
}

/* ---- the file type, when the mode's is the damage ---------------------------------------- */

/*
 * A mode whose file type is unknown, or does not fit the data fork's format (a directory
 * whose type bits say socket, a symlink's that say character device), lost its type, not
 * the inode: the type is told again from the evidence, the way a reader would —
 *   - the data fork: DEV is a device, fifo or socket; inline bytes that parse as a
 *     directory (a ".." naming an allocated directory, or the root's own, and entries
 *     adding up to the size) or as a symlink target (size bytes without a NUL, then a NUL
 *     or the fork's end); an extent list is a file's, or a symlink's (one block at file
 *     block 0 holding a target of `size` bytes); a btree of names (reverse map: tree
 *     blocks, no data) a directory's, one with data extents a file's;
 *   - the entries naming the inode, and the file type each gives.
 * They must agree: the entries' one type, one the fork allows; without entries, the fork's
 * one type.  Entries that disagree among themselves or with the fork: refused, nothing
 * changed (which is right cannot be told).  Neither: beyond repair, as before.
 * The permission bits are kept, but for set-user-ID and set-group-ID: a damaged mode must
 * not give privileges.
 */
#define TBIT(ifmt)      (1u << ((ifmt) >> 12))
#define SPECIAL_TYPES   (TBIT(S_IFCHR) | TBIT(S_IFBLK) | TBIT(S_IFIFO) | TBIT(S_IFSOCK))

static int type_fits(uint16_t mode, uint8_t fmt)
{
	switch (mode & S_IFMT) {
	case S_IFREG:
	case S_IFDIR:
		return fmt == MFS_FMT_LOCAL || fmt == MFS_FMT_EXTENTS || fmt == MFS_FMT_BTREE;
	case S_IFLNK:
		return fmt == MFS_FMT_LOCAL || fmt == MFS_FMT_EXTENTS;
	case S_IFCHR: case S_IFBLK: case S_IFIFO: case S_IFSOCK:
		return fmt == MFS_FMT_DEV;
	}
	return 0;
}

static uint16_t ifmt_of_dt(unsigned dt)
{
	switch (dt) {
	case DT_REG: return S_IFREG;
	case DT_DIR: return S_IFDIR;
	case DT_LNK: return S_IFLNK;
	case DT_CHR: return S_IFCHR;
	case DT_BLK: return S_IFBLK;
	case DT_FIFO: return S_IFIFO;
	case DT_SOCK: return S_IFSOCK;
	}
	return 0;
}

static const char *type_name(unsigned bits)
{
	switch (bits) {
	case TBIT(S_IFREG): return "a regular file";
	case TBIT(S_IFDIR): return "a directory";
	case TBIT(S_IFLNK): return "a symlink";
	case TBIT(S_IFCHR): return "a character device";
	case TBIT(S_IFBLK): return "a block device";
	case TBIT(S_IFIFO): return "a fifo";
	case TBIT(S_IFSOCK): return "a socket";
	case 0: return "nothing known";
	}
	return (bits & ~SPECIAL_TYPES) ? "several types" : "a device, fifo or socket";
}

/* The data fork's size in the literal area (a damaged fork offset: the whole area). */
static uint32_t ev_forksize(struct raw *x)
{
	uint32_t fo = mfs_get16(rd(x)->forkoff);

	return fo && fo * 8u < x->litsize ? fo * 8u : x->litsize;
}

/* Inline bytes that are a directory's: its ".." and entries adding up to the size. */
static int ev_local_dir(struct raw *x)
{
	uint64_t size = mfs_get64(rd(x)->size), parent;
	uint32_t forksize = ev_forksize(x);
	uint16_t pmode = 0;

	if (size == 0)
		return x->ino == x->fs->geo.rootino;        /* mkfs's empty root */
	if (size < MFS_DIR_LOCAL_HDR || size > forksize || local_dir_size(x, forksize) != size)
		return 0;
	memcpy(&parent, rlit(x), 8);
	parent = mfs_get64(parent);
	if (parent == x->ino)
		return x->ino == x->fs->geo.rootino;
	return rep_inode_peek(x->fs, parent, &pmode, NULL) == 0 && S_ISDIR(pmode);
}

/* A symlink target of `size` bytes in `p` (room bytes): no NUL in it, a NUL or the end after. */
static int ev_target(const uint8_t *p, uint32_t room, uint64_t size)
{
	return size >= 1 && size <= SYMLINK_MAX && size <= room &&
	       strnlen((const char *)p, room) == size;
}

/* An extent list that could be a symlink's: one block at file block 0 holding a target. */
static int ev_extent_link(struct raw *x)
{
	struct mfs_dinode *d = rd(x);
	struct mfs_bmbt_rec e;
	struct mfs_buf *bp;
	uint64_t fsb;
	int ok;

	if (x->s->data_recs != 1 || x->s->data_blocks != 1 || x->s->tree_recs ||
	    mfs_get32(d->dnext) != 1 || ev_forksize(x) < sizeof(e))
		return 0;
	memcpy(&e, rlit(x), sizeof(e));
	fsb = mfs_get64(e.startblock);
	if (mfs_get64(e.startoff) != 0 || mfs_get32(e.blockcount) != 1 || !fsb ||
	    fsb >= x->fs->geo.dblocks)
		return 0;
	if (mfs_buf_read(x->fs->bc, fsb, NULL, &bp))
		return 0;
	ok = ev_target(bp->data, x->fs->geo.blocksize, mfs_get64(d->size));
	mfs_buf_put(bp);
	return ok;
}

/* The types the data fork allows, as TBIT()s. */
static unsigned ev_fork(struct raw *x)
{
	struct mfs_dinode *d = rd(x);
	unsigned t = 0;

	switch (d->dformat) {
	case MFS_FMT_DEV:
		return SPECIAL_TYPES;
	case MFS_FMT_LOCAL:
		if (ev_local_dir(x))
			t |= TBIT(S_IFDIR);
		if (ev_target(rlit(x), ev_forksize(x), mfs_get64(d->size)))
			t |= TBIT(S_IFLNK);
		return t;
	case MFS_FMT_EXTENTS:
		return TBIT(S_IFREG) | (ev_extent_link(x) ? TBIT(S_IFLNK) : 0);
	case MFS_FMT_BTREE:
		if (x->s->data_recs)
			return TBIT(S_IFREG);
		return x->s->tree_recs ? TBIT(S_IFDIR) : 0;
	}
	return 0;
}

/* Decide x->newtype for an inode whose mode lost its type (nothing to do otherwise): 0, or
 * -EFSCORRUPTED with the reason when the evidence disagrees.  No lock held: it reads the
 * committed copy (nobody changes an inode nobody can load) and searches the directories. */
static int decide_type(struct raw *x, int loaded)
{
	struct mfs_dinode *d = rd(x);
	struct mfs_buf *bp = NULL;
	struct rep_names nm;
	uint16_t mode;
	unsigned fork, cur, ent = 0;
	uint32_t agno = mfs_ino_to_agno(&x->fs->geo, x->ino);
	int err;

	scrub_ag_lock(x->fs, agno);
	err = raw_read(x, &bp);
	if (!err)
		mfs_buf_put(bp);
	scrub_ag_unlock(x->fs, agno);
	if (err)
		return err;
	mode = mfs_get16(d->mode);
	if (!header_fix(x) || !mfs_dinode_in_use(d) ||
	    (!loaded && type_known(mode) && type_fits(mode, d->dformat)))
		return 0;
	cur = type_known(mode) ? TBIT(mode & S_IFMT) : 0;
	fork = ev_fork(x);
	if (loaded && (fork & cur))
		return 0;           /* the fork is the type's: something else is the damage */
	err = rep_inode_named(x->r, x->ino, &nm);
	if (err)
		return err;
	for (unsigned dt = 0; dt < 16; dt++)
		if (nm.dtypes >> dt & 1)
			ent |= ifmt_of_dt(dt) ? TBIT(ifmt_of_dt(dt)) : 0;
	if (cur && ent == cur)
		return 0;           /* the entries confirm the type: the format is the damage */
	if ((ent & (ent - 1)) || (ent && !(ent & fork)))
		return rep_fail(x->r, -EFSCORRUPTED, "inode %llu: its mode 0%o %s, and the "
				"evidence disagrees: its data fork (format %u) holds %s, the %llu "
				"entries naming it say %s: which is right cannot be told; nothing "
				"was changed", (unsigned long long)x->ino, mode,
				cur ? "does not fit its data fork" : "has no file type", d->dformat,
				type_name(fork), (unsigned long long)nm.n, type_name(ent));
	if (!ent && (!fork || (fork & (fork - 1)) || (fork & cur)))
		return 0;           /* nothing to tell it by: as before (beyond repair, or the
				     * data fork rebuilt for the type the mode has) */
	x->oldmode = mode;
	x->newtype = (uint16_t)(__builtin_ctz(ent ? ent : fork) << 12);
	return 0;
}

/*
 * The decided type into the mode: permission bits kept, set-ID bits dropped.  A mode
 * zeroed whole lost its permissions too: the owner's alone are given back (read and write,
 * and search for a directory; a symlink's are never looked at), nobody else's.
 * Returns 1 when the type was all that was wrong: with it (and the core fields set right:
 * fix_core) the inode passes the loader's checks and its block count is what the reverse
 * map gives it.  Its forks are then kept as they are, not rebuilt: the data fork's map
 * would come back from the reverse map, which does not know which extents are unwritten
 * (they would read as the old contents of their blocks, not as zeroes).
 */
static int set_type(struct raw *x)
{
	const struct mfs_geom *g = &x->fs->geo;
	struct mfs_dinode *d = rd(x);
	uint16_t perm = x->oldmode & 07777 & ~(S_ISUID | S_ISGID), mode;
	int only;

	if (x->oldmode == 0)
		perm = x->newtype == S_IFDIR ? 0700 : x->newtype == S_IFLNK ? 0777 : 0600;
	mode = (uint16_t)(x->newtype | perm);

	mfs_put16(d->mode, mode);
	fix_core(x);
	only = mfs_get64(d->nblocks) == x->s->data_blocks + x->s->tree_blocks +
				       x->s->attr_blocks &&
	       mfs_dinode_check(d, g->inodesize, x->ino) == 0;
	mfs_log(MFS_LOG_WARN, "repair: inode %llu: mode 0%o lost its file type: 0%o from its "
		"data fork and the entries naming it%s", (unsigned long long)x->ino, x->oldmode,
		mode, only ? " (its forks kept: nothing else was wrong)" : "");
	return only;
}

static int raw_fix(struct raw *x, struct mfs_trans *tp)
{
	const struct mfs_geom *g = &x->fs->geo;
	struct mfs_dinode *d = rd(x);
	struct mfs_buf *bp = NULL;
	uint64_t tree = 0;
	int err, type_only = 0;

	err = raw_read(x, &bp);
	if (err)
		return err;
	/* The inode btree first, under the AG lock tp holds: the client listed the inode as
	 * allocated, but its whole chunk may have been freed since and its blocks reused
	 * (file data: not an inode to fix or clear; found by torture). */
	if (mfs_ino_in_use_locked(x->fs, x->ino) == -ENOENT) {
		mfs_buf_put(bp);
		return rep_fail(x->r, -ENOENT, "inode %llu is free (its chunk was freed since it "
				"was listed)", (unsigned long long)x->ino);
	}
	if (!header_fix(x))
		x->beyond = "its header is not an inode's of this filesystem";
	else if (!mfs_dinode_in_use(d))
		err = rep_fail(x->r, -ENOENT, "inode %llu is free", (unsigned long long)x->ino);
	else if (x->newtype && mfs_get16(d->mode) == x->oldmode)
		type_only = set_type(x);
	else if (!type_known(mfs_get16(d->mode)))
		x->beyond = "its mode has no file type";
	if (!err && !x->beyond && !type_only) {
		fix_core(x);
		fix_attr(x);
		err = fix_data(x, tp, &tree);
	}
	if (!err && x->beyond) {
		mfs_buf_put(bp);
		return 1;
	}
	if (!err) {
		if (!type_only)
			mfs_put64(d->nblocks, x->s->data_blocks + tree +
				  (x->drop_attr ? 0 : x->s->attr_blocks));
		err = mfs_dinode_check(d, g->inodesize, x->ino);
		if (err)
			rep_fail(x->r, err, "inode %llu: its fields cannot be made valid: nothing "
				 "was changed", (unsigned long long)x->ino);
	}
	if (!err)
		err = mfs_trans_modify(tp, bp);
	if (!err) {
		uint8_t *slot = (uint8_t *)bp->data + mfs_ino_to_offset(g, x->ino);

		memcpy(x->buf + offsetof(struct mfs_dinode, lsn),
		       slot + offsetof(struct mfs_dinode, lsn), sizeof(d->lsn));
		mfs_dinode_seal(d, g->inodesize);
		memcpy(slot, d, g->inodesize);
	}
	mfs_buf_put(bp);
	return err;
}

static int inode_raw(struct rep *r)
{
	struct raw *x = mfs_calloc(1, sizeof(*x));
	struct mfs_trans *tp = NULL;
	int err;

	if (!x)
		return rep_fail(r, -ENOMEM, "no memory to repair the inode");
	x->r = r;
	x->fs = r->fs;
	x->ino = r->rc->ino;
	x->litsize = r->fs->geo.inodesize - (uint32_t)sizeof(struct mfs_dinode);
	err = rep_fmap_gather(r, x->ino, NULL, &x->m);
	if (!err) {
		x->s = rep_fmap_sum(x->m);
		err = decide_type(x, 0);
	}
	if (!err) {
		err = mfs_trans_alloc(r->fs, &tp);
		if (err)
			rep_fail(r, err, "no memory for the repair's transaction");
	}
	if (!err)
		err = rep_fmap_lock(x->m, tp, 1);
	if (!err)
		err = raw_fix(x, tp);
	if (err == 1) {
		/* beyond repair: a fresh transaction (the fix may have begun) */
		mfs_trans_cancel(tp);
		tp = NULL;
		err = mfs_trans_alloc(r->fs, &tp);
		if (err) {
			tp = NULL;
			rep_fail(r, err, "no memory for the repair's transaction");
		}
		if (!err)
			err = rep_fmap_lock(x->m, tp, 1);
		if (!err)
			err = rep_fmap_free_all(x->m, tp);
		if (!err) {
			err = mfs_ifree(tp, x->ino);
			if (err)
				rep_fail(r, err, "inode %llu: freeing it: %s",
					 (unsigned long long)x->ino, strerror(-err));
		}
		if (!err)
			mfs_log(MFS_LOG_WARN, "repair: inode %llu is beyond repair (%s): cleared, "
				"%llu blocks freed", (unsigned long long)x->ino, x->beyond,
				(unsigned long long)(x->s->data_blocks + x->s->tree_blocks +
						     x->s->attr_blocks));
	} else if (!err && x->drop_attr) {
		err = rep_fmap_free_attr(x->m, tp);
	}
	if (tp)
		err = rep_ino_finish(r, tp, x->ino, err);
	mfs_inode_invalidate(r->fs, x->ino);
	if (!err)
		rep_changed(r, x->ino);
	rep_fmap_free(x->m);
	free(x);
	return err;
}

/*
 * An inode that loads with a type its data fork does not hold: a mode that says directory
 * on a file, a symlink (their type fits the formats a directory may have, so the loader
 * takes them; the checker sees a directory with one link), or a regular file's on a
 * directory (rep_file_holds_names, repair_ilit.h).  Told as for an inode that does
 * not load (decide_type), with the inode's lock dropped meanwhile (the walk of every
 * directory takes their locks; an unlink holding one may wait for this inode's); then, the
 * lock taken again and the mode unchanged, the new type set in the in-core inode.  0 (and
 * nothing changed when nothing could be told), or the refusal.
 */
static int incore_type(struct rep *r, struct mfs_inode *ip)
{
	struct raw *x = mfs_calloc(1, sizeof(*x));
	uint16_t mode = ip->mode;
	int err;

	if (!x)
		return rep_fail(r, -ENOMEM, "no memory to repair the inode");
	x->r = r;
	x->fs = r->fs;
	x->ino = ip->ino;
	x->litsize = r->fs->geo.inodesize - (uint32_t)sizeof(struct mfs_dinode);
	pthread_rwlock_unlock(&ip->lock);
	err = rep_fmap_gather(r, x->ino, NULL, &x->m);
	if (!err) {
		x->s = rep_fmap_sum(x->m);
		err = decide_type(x, 1);
	}
	pthread_rwlock_wrlock(&ip->lock);
	if (!err && x->newtype && ip->mode == mode && mfs_get16(rd(x)->mode) == mode &&
	    ip->nlink) {
		ip->mode = (uint16_t)(x->newtype | (mode & 07777 & ~(S_ISUID | S_ISGID)));
		mfs_log(MFS_LOG_WARN, "repair: inode %llu: mode 0%o does not fit its data fork: "
			"0%o from the fork and the entries naming it", (unsigned long long)ip->ino,
			mode, ip->mode);
	}
	rep_fmap_free(x->m);
	free(x);
	return err;
}

int rep_inode(struct rep *r)
{
	struct mfs_inode *ip;
	uint32_t agno;
	int err;

	/* An inode whose chunk was freed (and maybe reused) since the client listed it is not
	 * loaded: the loader's verifier would log the slot's new bytes as corruption. */
	agno = mfs_ino_to_agno(&r->fs->geo, r->rc->ino);
	mfs_ag_lock(r->fs, agno, MFS_AGL_INODES);      /* the inode btree holds still */
	err = mfs_ino_in_use_locked(r->fs, r->rc->ino);
	mfs_ag_unlock(r->fs, agno, MFS_AGL_INODES);
	if (err == -ENOENT)
		return rep_fail(r, err, "inode %llu: it is free", (unsigned long long)r->rc->ino);
	/* (not MFS_IGET_UNTRUSTED: a damaged inode btree must not read as a damaged inode;
	 * the client asks only for inodes the inode btree lists) */
	err = mfs_iget_locked(r->fs, r->rc->ino, 0, 1, &ip);
	if (mfs_is_corruption(err))
		return inode_raw(r);
	if (err)
		return rep_fail(r, err, "inode %llu: %s", (unsigned long long)r->rc->ino,
				err == -ENOENT ? "it is free" : strerror(-err));
	err = 0;
	if ((S_ISDIR(ip->mode) && ip->nlink == 1) || rep_file_holds_names(r->fs, ip))
		err = incore_type(r, ip);       /* (a directory has two links at least) */
	if (!err)
		err = inode_incore(r, ip);
	pthread_rwlock_unlock(&ip->lock);
	if (!err)
		rep_changed(r, ip->ino);        /* size, block count, as the kernel caches them */
	mfs_iput(ip);
	return err;
}
