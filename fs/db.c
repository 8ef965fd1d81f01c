/*
 * db.c — mendfs_db: a read-only inspector for mendfs images, in the manner of xfs_db.
 *
 * Commands come from -c options, or from standard input when there is none (with a prompt
 * on a terminal).  Every command reads through the verifying buffer cache; a structure
 * that fails verification is reported with the library's message naming it ("AG 2 header
 * block 32769: magic ..."), the command fails, and commands that walk several AGs go on
 * with the next one.  The exit status is 1 when any command failed.
 *
 * Nothing read from the image is trusted: record counts are checked against the block's
 * capacity and numbers against the geometry before they are used.
 */
#include "ag.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "dev.h"
#include "fs.h"
#include "geom.h"
#include "journal.h"
#include "log.h"
#include "mendfs_format.h"
#include "orphan.h"
#include "verify.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *progname = "mendfs_db";
static struct mfs_fs *fs;

static const char *const tree_names[MFS_AG_NTREES] = { "bno", "cnt", "ino", "rmap" };

/* ---- small helpers ---------------------------------------------------------------------- */

/* strerror() with our two corruption codes spelled out. */
static const char *errstr(int err)
{
	if (err == -EFSBADCRC)
		return "checksum does not match (damaged block)";
	if (err == -EFSCORRUPTED)
		return "corrupt metadata";
	return strerror(-err);
}

static int err_msg(int err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int err_msg(int err, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	if (err)
		fprintf(stderr, ": %s", errstr(err));
	fputc('\n', stderr);
	return 1;
}

static int parse_u64(const char *s, uint64_t *v)
{
	char *end;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	*v = strtoull(s, &end, 0);
	if (errno || *end)
		return -EINVAL;
	return 0;
}

static int parse_agno(const char *s, uint32_t *agno)
{
	uint64_t v;

	if (parse_u64(s, &v))
		return err_msg(0, "'%s' is not an AG number", s);
	if (v >= fs->geo.agcount)
		return err_msg(0, "AG %" PRIu64 " does not exist (the filesystem has %u)", v,
			       fs->geo.agcount);
	*agno = (uint32_t)v;
	return 0;
}

static int parse_tree(const char *s, enum mfs_ag_tree *t)
{
	for (int i = 0; i < MFS_AG_NTREES; i++)
		if (!strcmp(s, tree_names[i])) {
			*t = (enum mfs_ag_tree)i;
			return 0;
		}
	return err_msg(0, "unknown tree '%s' (bno, cnt, ino or rmap)", s);
}

static void format_uuid(const uint8_t u[16], char *out)
{
	sprintf(out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
		u[13], u[14], u[15]);
}

static const char *owner_name(uint64_t owner, char *buf, size_t len)
{
	switch (owner) {
	case MFS_OWN_NULL: return "null";
	case MFS_OWN_FS: return "fs";
	case MFS_OWN_LOG: return "log";
	case MFS_OWN_AG: return "ag";
	case MFS_OWN_INOBT: return "inobt";
	case MFS_OWN_INODES: return "inodes";
	}
	if (owner >= MFS_OWN_MIN)
		snprintf(buf, len, "special-%" PRIu64, ~owner);
	else
		snprintf(buf, len, "ino %" PRIu64, owner);
	return buf;
}

static void magic_str(uint32_t magic, char *out)
{
	for (int i = 0; i < 4; i++) {
		int c = (int)((magic >> (8 * i)) & 0xff);

		out[i] = isprint(c) ? (char)c : '.';
	}
	out[4] = '\0';
}

static void print_blkhdr(const struct mfs_blkhdr *h, uint64_t blkno)
{
	char m[5], u[40];

	magic_str(mfs_get32(h->magic), m);
	format_uuid(h->uuid, u);
	printf("magic = 0x%08x (%s)\n", mfs_get32(h->magic), m);
	printf("crc = 0x%08x (%s)\n", mfs_get32(h->crc),
	       mfs_blk_crc_ok(h, fs->geo.blocksize) ? "correct" : "BAD");
	printf("blkno = %" PRIu64 "%s\n", mfs_get64(h->blkno),
	       mfs_get64(h->blkno) == blkno ? "" : " (WRONG: this is another block)");
	printf("owner = %" PRIu64 "\n", mfs_get64(h->owner));
	printf("lsn = %" PRIu64 "\n", mfs_get64(h->lsn));
	printf("uuid = %s%s\n", u, memcmp(h->uuid, fs->geo.uuid, 16) ? " (NOT this filesystem)"
								       : "");
}

/* Read a block without verifying it (for printing what is there after a failed read). */
static int read_raw(uint64_t fsb, struct mfs_buf **bp)
{
	if (fsb >= fs->geo.dblocks)
		return err_msg(0, "block %" PRIu64 " is past the end of the filesystem (%" PRIu64
			       " blocks)", fsb, fs->geo.dblocks);
	if (mfs_buf_read(fs->bc, fsb, NULL, bp))
		return err_msg(0, "block %" PRIu64 ": read failed", fsb);
	return 0;
}

/* ---- sb --------------------------------------------------------------------------------- */

static void print_sb(const struct mfs_sb *sb, uint64_t blkno)
{
	char label[sizeof(sb->label) + 1];

	print_blkhdr(&sb->hdr, blkno);
	memcpy(label, sb->label, sizeof(sb->label));
	label[sizeof(sb->label)] = '\0';
	printf("version = %u\n", mfs_get32(sb->version));
	printf("blocksize = %u\n", mfs_get32(sb->blocksize));
	printf("dblocks = %" PRIu64 "\n", mfs_get64(sb->dblocks));
	printf("agblocks = %u\n", mfs_get32(sb->agblocks));
	printf("agcount = %u\n", mfs_get32(sb->agcount));
	printf("inodesize = %u\n", mfs_get16(sb->inodesize));
	printf("blocklog = %u\n", sb->blocklog);
	printf("inopblog = %u\n", sb->inopblog);
	printf("agblklog = %u\n", sb->agblklog);
	printf("rootino = %" PRIu64 "\n", mfs_get64(sb->rootino));
	printf("logstart = %" PRIu64 "\n", mfs_get64(sb->logstart));
	printf("logblocks = %u\n", mfs_get32(sb->logblocks));
	printf("sunit = %u\n", mfs_get32(sb->sunit));
	printf("swidth = %u\n", mfs_get32(sb->swidth));
	printf("state = %u (%s%s%s)\n", mfs_get32(sb->state),
	       mfs_get32(sb->state) & MFS_STATE_CLEAN ? "clean" : "",
	       mfs_get32(sb->state) & MFS_STATE_DIRTY ? "dirty" : "",
	       mfs_get32(sb->state) & MFS_STATE_ERRORS ? ",errors" : "");
	printf("features_compat = 0x%x\n", mfs_get32(sb->features_compat));
	printf("features_ro_compat = 0x%x\n", mfs_get32(sb->features_ro_compat));
	printf("features_incompat = 0x%x\n", mfs_get32(sb->features_incompat));
	printf("icount = %" PRIu64 "\n", mfs_get64(sb->icount));
	printf("ifree = %" PRIu64 "\n", mfs_get64(sb->ifree));
	printf("fdblocks = %" PRIu64 "\n", mfs_get64(sb->fdblocks));
	printf("ctime = %" PRIu64 "\n", mfs_get64(sb->ctime));
	printf("wtime = %" PRIu64 "\n", mfs_get64(sb->wtime));
	printf("label = \"%s\"\n", label);
}

static int cmd_sb(int argc, char **argv)
{
	uint32_t agno = 0;
	struct mfs_buf *bp;
	int err;

	if (argc > 1 && parse_agno(argv[1], &agno))
		return 1;
	err = mfs_read_sb(fs, agno, &bp);
	if (err) {
		if (!read_raw(mfs_agbno_to_fsb(&fs->geo, agno, MFS_SB_AGBNO), &bp)) {
			printf("AG %u superblock (DAMAGED, as found):\n", agno);
			print_sb(bp->data, bp->blkno);
			mfs_buf_put(bp);
		}
		return err_msg(err, "AG %u superblock", agno);
	}
	printf("AG %u superblock:\n", agno);
	print_sb(bp->data, bp->blkno);
	mfs_buf_put(bp);
	return 0;
}

/* ---- agh, agfl -------------------------------------------------------------------------- */

static void print_agh(const struct mfs_agh *agh, uint64_t blkno)
{
	print_blkhdr(&agh->hdr, blkno);
	printf("seqno = %u\n", mfs_get32(agh->seqno));
	printf("length = %u\n", mfs_get32(agh->length));
	for (int t = 0; t < MFS_AG_NTREES; t++)
		printf("%s root = %u, levels = %u\n", tree_names[t], mfs_get32(agh->roots[t]),
		       mfs_get32(agh->levels[t]));
	printf("freeblks = %u\n", mfs_get32(agh->freeblks));
	printf("longest = %u\n", mfs_get32(agh->longest));
	printf("btreeblks = %u\n", mfs_get32(agh->btreeblks));
	printf("icount = %u\n", mfs_get32(agh->icount));
	printf("ifree = %u\n", mfs_get32(agh->ifree));
	printf("fl_first = %u\n", mfs_get32(agh->fl_first));
	printf("fl_count = %u\n", mfs_get32(agh->fl_count));
	printf("unlinked = %" PRIu64 "\n", mfs_get64(agh->unlinked));
}

static int cmd_agh(int argc, char **argv)
{
	uint32_t agno;
	struct mfs_buf *bp;
	int err;

	if (parse_agno(argv[1], &agno))
		return 1;
	err = mfs_read_agh(fs, agno, &bp);
	if (err) {
		if (!read_raw(mfs_agbno_to_fsb(&fs->geo, agno, MFS_AGH_AGBNO), &bp)) {
			printf("AG %u header (DAMAGED, as found):\n", agno);
			print_agh(bp->data, bp->blkno);
			mfs_buf_put(bp);
		}
		return err_msg(err, "AG %u header", agno);
	}
	printf("AG %u header:\n", agno);
	print_agh(bp->data, bp->blkno);
	mfs_buf_put(bp);
	return 0;
}

static int cmd_agfl(int argc, char **argv)
{
	uint32_t agno, first, count;
	struct mfs_buf *hbp, *bp;
	const struct mfs_agfl *fl;
	int err;

	if (parse_agno(argv[1], &agno))
		return 1;
	err = mfs_read_agh(fs, agno, &hbp);
	if (err)
		return err_msg(err, "AG %u header", agno);
	first = mfs_get32(((struct mfs_agh *)hbp->data)->fl_first);
	count = mfs_get32(((struct mfs_agh *)hbp->data)->fl_count);
	mfs_buf_put(hbp);
	err = mfs_read_agfl(fs, agno, &bp);
	if (err)
		return err_msg(err, "AG %u free list", agno);
	fl = bp->data;
	printf("AG %u free list: %u blocks from slot %u\n", agno, count, first);
	print_blkhdr(&fl->hdr, bp->blkno);
	for (uint32_t i = 0; i < count && i < MFS_AGFL_SIZE_MAX; i++) {
		uint32_t slot = (first + i) % MFS_AGFL_SIZE_MAX;

		printf("slot[%u] = %u\n", slot, mfs_get32(fl->bno[slot]));
	}
	mfs_buf_put(bp);
	return 0;
}

/* ---- btree records ------------------------------------------------------------------------ */

static void print_rec(enum mfs_ag_tree t, const void *rec)
{
	char ob[32];

	switch (t) {
	case MFS_BT_BNO:
	case MFS_BT_CNT: {
		const struct mfs_alloc_rec *r = rec;

		printf("startblock %u blockcount %u\n", mfs_get32(r->startblock),
		       mfs_get32(r->blockcount));
		break;
	}
	case MFS_BT_INO: {
		const struct mfs_inobt_rec *r = rec;

		printf("startino %u freecount %u freemask 0x%016" PRIx64 "\n",
		       mfs_get32(r->startino), mfs_get32(r->freecount), mfs_get64(r->freemask));
		break;
	}
	case MFS_BT_RMAP: {
		const struct mfs_rmap_rec *r = rec;
		uint64_t off = mfs_get64(r->offset);

		printf("startblock %u blockcount %u owner %s offset %" PRIu64 "%s%s\n",
		       mfs_get32(r->startblock), mfs_get32(r->blockcount),
		       owner_name(mfs_get64(r->owner), ob, sizeof(ob)), (uint64_t)(off & MFS_RMAP_OFF_MASK),
		       off & MFS_RMAP_ATTR_FORK ? " attr" : "",
		       off & MFS_RMAP_BMBT_BLOCK ? " bmbt" : "");
		break;
	}
	default:
		break;
	}
}

struct print_ctx {
	enum mfs_ag_tree tree;
	uint64_t n;
};

static int print_rec_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	struct print_ctx *pc = priv;

	printf("[%" PRIu64 "] ", pc->n++);
	print_rec(pc->tree, rec);
	return 0;
}

/* Read AG `agno`'s header and set up a read-only cursor on one of its trees. */
static int ag_cursor(uint32_t agno, enum mfs_ag_tree t, struct mfs_buf **hbp,
		     struct mfs_btree_cur *cur)
{
	int err = mfs_read_agh(fs, agno, hbp);

	if (err)
		return err;
	mfs_ag_cur_init(cur, fs, NULL, agno, t, *hbp);
	return 0;
}

static int cmd_btree(int argc, char **argv)
{
	struct mfs_btree_cur cur;
	struct mfs_buf *hbp;
	struct print_ctx pc = { 0, 0 };
	uint32_t agno;
	int err;

	if (parse_agno(argv[1], &agno) || parse_tree(argv[2], &pc.tree))
		return 1;
	err = ag_cursor(agno, pc.tree, &hbp, &cur);
	if (err)
		return err_msg(err, "AG %u header", agno);
	printf("AG %u %s: root %" PRIu64 ", %u levels\n", agno, cur.ops->name,
	       cur.root.fsb, cur.root.levels);
	err = mfs_btree_query_range(&cur, NULL, NULL, print_rec_fn, &pc);
	mfs_btree_cur_release(&cur);
	mfs_buf_put(hbp);
	if (err < 0)
		return err_msg(err, "AG %u %s btree: walk stopped after %" PRIu64 " records",
			       agno, tree_names[pc.tree], pc.n);
	printf("%" PRIu64 " records\n", pc.n);
	return 0;
}

/* ---- block -------------------------------------------------------------------------------- */

static void print_key(enum mfs_ag_tree t, const struct mfs_btree_ops *ops, const uint8_t *k)
{
	uint32_t w[2];

	if (ops->key_len >= 8 && (t == MFS_BT_BNO || t == MFS_BT_CNT)) {
		memcpy(w, k, 8);
		printf("startblock %u blockcount %u", mfs_get32(w[0]), mfs_get32(w[1]));
	} else if (ops->key_len >= 4) {
		memcpy(w, k, 4);
		printf("%s %u", t == MFS_BT_INO ? "startino" : "startblock", mfs_get32(w[0]));
	}
}

static int cmd_block(int argc, char **argv)
{
	static const uint32_t magics[MFS_AG_NTREES] = { MFS_BNOBT_MAGIC, MFS_CNTBT_MAGIC,
							MFS_INOBT_MAGIC, MFS_RMAPBT_MAGIC };
	const struct mfs_btree_ops *ops;
	const struct mfs_btree_block *b;
	struct mfs_buf *bp;
	enum mfs_ag_tree t = MFS_AG_NTREES;
	uint64_t fsb;
	unsigned level, numrecs, cap;
	const uint8_t *base;
	int rc = 0;

	if (parse_u64(argv[1], &fsb))
		return err_msg(0, "'%s' is not a block number", argv[1]);
	if (argc > 2 && parse_tree(argv[2], &t))
		return 1;
	if (read_raw(fsb, &bp))
		return 1;
	b = bp->data;
	if (t == MFS_AG_NTREES) {
		for (int i = 0; i < MFS_AG_NTREES; i++)
			if (mfs_get32(b->hdr.magic) == magics[i])
				t = (enum mfs_ag_tree)i;
	}
	printf("block %" PRIu64 " (AG %u block %u):\n", fsb, mfs_fsb_to_agno(&fs->geo, fsb),
	       mfs_fsb_to_agbno(&fs->geo, fsb));
	print_blkhdr(&b->hdr, fsb);
	if (t == MFS_AG_NTREES) {
		mfs_buf_put(bp);
		return err_msg(0, "block %" PRIu64 ": not a btree block of a known kind (give the "
			       "tree: bno, cnt, ino or rmap)", fsb);
	}
	ops = mfs_ag_tree_ops(t);
	{
		struct mfs_blk_expect e;
		char what[64];
		uint32_t agno = mfs_fsb_to_agno(&fs->geo, fsb);

		snprintf(what, sizeof(what), "AG %u %s", agno, ops->name);
		e.magic = magics[t];
		e.owner = agno;
		e.level = MFS_LEVEL_ANY;
		e.what = what;
		if (mfs_blk_verify(b, fs->geo.blocksize, fsb, fs->geo.uuid, &e, 0)) {
			printf("(the block fails its verifier; decoding it as found)\n");
			rc = 1;
		}
	}
	level = mfs_get16(b->level);
	numrecs = mfs_get16(b->numrecs);
	cap = mfs_btree_maxrecs(ops, fs->geo.blocksize, level == 0);
	printf("level = %u\nnumrecs = %u (capacity %u)\n", level, numrecs, cap);
	if (level >= MFS_BTREE_MAXLEVELS || numrecs > cap) {
		mfs_buf_put(bp);
		return err_msg(0, "AG %u %s block %" PRIu64 ": %s",
			       mfs_fsb_to_agno(&fs->geo, fsb), ops->name, fsb,
			       level >= MFS_BTREE_MAXLEVELS ? "level out of range"
							    : "more records than fit");
	}
	base = (const uint8_t *)bp->data + sizeof(struct mfs_btree_block);
	for (unsigned i = 0; i < numrecs; i++) {
		if (level == 0) {
			printf("rec[%u] ", i);
			print_rec(t, base + (size_t)i * ops->rec_len);
		} else {
			const uint8_t *p = base + (size_t)cap * ops->key_len + (size_t)i * ops->ptr_len;
			uint64_t ptr;
			uint32_t p32;

			if (ops->ptr_len == 4) {
				memcpy(&p32, p, 4);
				ptr = mfs_get32(p32);
			} else {
				memcpy(&ptr, p, 8);
				ptr = mfs_get64(ptr);
			}
			printf("key[%u] ", i);
			print_key(t, ops, base + (size_t)i * ops->key_len);
			printf(" -> ptr %" PRIu64 "\n", ptr);
		}
	}
	mfs_buf_put(bp);
	return rc;
}

/* ---- inode -------------------------------------------------------------------------------- */

static const char *fmt_name(unsigned f)
{
	static const char *const n[] = { "none", "dev", "local", "extents", "btree" };

	return f < 5 ? n[f] : "INVALID";
}

static void print_time(const char *name, const struct mfs_timestamp *t)
{
	printf("%s = %" PRId64 ".%09u\n", name, (int64_t)mfs_get64(t->sec), mfs_get32(t->nsec));
}

static int cmd_inode(int argc, char **argv)
{
	const struct mfs_geom *g = &fs->geo;
	const struct mfs_dinode *d;
	struct mfs_buf *bp;
	uint64_t ino;
	uint32_t agno, agbno, lit;
	char u[40];
	int err;

	if (parse_u64(argv[1], &ino))
		return err_msg(0, "'%s' is not an inode number", argv[1]);
	agno = mfs_ino_to_agno(g, ino);
	if (ino == 0 || ino >= (1ull << 56) || agno >= g->agcount)
		return err_msg(0, "inode %" PRIu64 " lies outside the filesystem", ino);
	agbno = mfs_agino_to_agbno(g, mfs_ino_to_agino(g, ino));
	if (agbno >= mfs_ag_length(g, agno))
		return err_msg(0, "inode %" PRIu64 " lies outside AG %u", ino, agno);
	if (read_raw(mfs_ino_to_fsb(g, ino), &bp))
		return 1;
	d = (const void *)((const char *)bp->data + mfs_ino_to_offset(g, ino));
	err = mfs_dinode_verify(d, g->inodesize, ino, g->uuid);
	format_uuid(d->uuid, u);
	printf("inode %" PRIu64 " (AG %u block %u offset %u)%s:\n", ino, agno, agbno,
	       mfs_ino_to_offset(g, ino), err ? " (DAMAGED, as found)" : "");
	printf("magic = 0x%08x\n", mfs_get32(d->magic));
	printf("crc = 0x%08x\n", mfs_get32(d->crc));
	printf("ino = %" PRIu64 "\n", mfs_get64(d->ino));
	printf("lsn = %" PRIu64 "\n", mfs_get64(d->lsn));
	printf("uuid = %s\n", u);
	printf("mode = 0%o%s\n", mfs_get16(d->mode), mfs_get16(d->mode) ? "" : " (free)");
	printf("dformat = %u (%s)\n", d->dformat, fmt_name(d->dformat));
	printf("aformat = %u (%s)\n", d->aformat, fmt_name(d->aformat));
	printf("nlink = %u\n", mfs_get32(d->nlink));
	printf("uid = %u\n", mfs_get32(d->uid));
	printf("gid = %u\n", mfs_get32(d->gid));
	printf("size = %" PRIu64 "\n", mfs_get64(d->size));
	printf("nblocks = %" PRIu64 "\n", mfs_get64(d->nblocks));
	print_time("atime", &d->atime);
	print_time("mtime", &d->mtime);
	print_time("ctime", &d->ctime);
	print_time("btime", &d->btime);
	printf("flags = 0x%x\n", mfs_get32(d->flags));
	printf("generation = %u\n", mfs_get32(d->generation));
	printf("dnext = %u\n", mfs_get32(d->dnext));
	printf("anext = %u\n", mfs_get32(d->anext));
	printf("forkoff = %u\n", mfs_get16(d->forkoff));
	printf("rdev = 0x%x\n", mfs_get32(d->rdev));
	printf("next_unlinked = %" PRIu64 "\n", mfs_get64(d->next_unlinked));
	lit = g->inodesize - (uint32_t)sizeof(*d);
	printf("literal area = %u bytes\n", lit);
	if (!err && d->dformat == MFS_FMT_EXTENTS) {
		uint32_t dlen = mfs_get16(d->forkoff) ? mfs_get16(d->forkoff) * 8u : lit;
		uint32_t n = mfs_get32(d->dnext);

		if (dlen > lit || n > dlen / sizeof(struct mfs_bmbt_rec)) {
			printf("data fork: %u extents do not fit in %u bytes\n", n, dlen);
		} else {
			for (uint32_t i = 0; i < n; i++) {
				struct mfs_bmbt_rec r;

				memcpy(&r, (const char *)(d + 1) + i * sizeof(r), sizeof(r));
				printf("extent[%u] startoff %" PRIu64 " startblock %" PRIu64
				       " blockcount %u%s\n", i, mfs_get64(r.startoff),
				       mfs_get64(r.startblock), mfs_get32(r.blockcount),
				       mfs_get32(r.flags) & MFS_EXT_UNWRITTEN ? " unwritten" : "");
			}
		}
	} else if (!err && d->dformat == MFS_FMT_BTREE) {
		struct mfs_fork_root r;

		memcpy(&r, d + 1, sizeof(r));
		printf("data fork btree root %" PRIu64 ", %u levels\n", mfs_get64(r.rootblock),
		       mfs_get32(r.levels));
	}
	mfs_buf_put(bp);
	if (err)
		return err_msg(err, "inode %" PRIu64, ino);
	return 0;
}

/* ---- freesp ------------------------------------------------------------------------------- */

#define NBUCKETS 33

struct freesp_ctx {
	uint64_t extents[NBUCKETS], blocks[NBUCKETS];
	uint64_t total_ext, total_blk;
};

static int freesp_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_alloc_rec *r = rec;
	struct freesp_ctx *c = priv;
	uint32_t len = mfs_get32(r->blockcount);
	unsigned b = 0;

	while (b + 1 < NBUCKETS && (2ull << b) <= len)
		b++;
	c->extents[b]++;
	c->blocks[b] += len;
	c->total_ext++;
	c->total_blk += len;
	return 0;
}

static int cmd_freesp(int argc, char **argv)
{
	struct freesp_ctx c;
	uint32_t lo = 0, hi = fs->geo.agcount - 1;
	int rc = 0;

	if (argc > 1) {
		if (parse_agno(argv[1], &lo))
			return 1;
		hi = lo;
	}
	memset(&c, 0, sizeof(c));
	for (uint32_t agno = lo; agno <= hi; agno++) {
		struct mfs_btree_cur cur;
		struct mfs_buf *hbp;
		int err = ag_cursor(agno, MFS_BT_BNO, &hbp, &cur);

		if (err) {
			rc = err_msg(err, "AG %u header (skipping this AG)", agno);
			continue;
		}
		err = mfs_btree_query_range(&cur, NULL, NULL, freesp_fn, &c);
		mfs_btree_cur_release(&cur);
		mfs_buf_put(hbp);
		if (err < 0)
			rc = err_msg(err, "AG %u free-space btree (its counts are partial)", agno);
	}
	printf("%10s %10s %10s %12s %7s\n", "from", "to", "extents", "blocks", "pct");
	for (unsigned b = 0; b < NBUCKETS; b++) {
		if (!c.extents[b])
			continue;
		printf("%10llu %10llu %10" PRIu64 " %12" PRIu64 " %7.2f\n", 1ull << b,
		       (2ull << b) - 1, c.extents[b], c.blocks[b],
		       c.total_blk ? 100.0 * (double)c.blocks[b] / (double)c.total_blk : 0.0);
	}
	printf("total free extents %" PRIu64 "\n", c.total_ext);
	printf("total free blocks %" PRIu64 "\n", c.total_blk);
	printf("average free extent size %g\n",
	       c.total_ext ? (double)c.total_blk / (double)c.total_ext : 0.0);
	return rc;
}

/* ---- geom --------------------------------------------------------------------------------- */

static int cmd_geom(int argc, char **argv)
{
	const struct mfs_geom *g = &fs->geo;
	char u[40];

	format_uuid(g->uuid, u);
	printf("blocksize = %u\nblocklog = %u\ndblocks = %" PRIu64 "\n", g->blocksize,
	       g->blocklog, g->dblocks);
	printf("agblocks = %u\nagcount = %u\nagblklog = %u\n", g->agblocks, g->agcount,
	       g->agblklog);
	printf("last AG blocks = %u\n", mfs_ag_length(g, g->agcount - 1));
	printf("inodesize = %u\ninopblog = %u\nchunkblocks = %u\n", g->inodesize, g->inopblog,
	       g->chunkblocks);
	printf("rootino = %" PRIu64 "\nlogstart = %" PRIu64 "\nlogblocks = %u\n", g->rootino,
	       g->logstart, g->logblocks);
	printf("sunit = %u\nswidth = %u\nuuid = %s\n", g->sunit, g->swidth, u);
	return 0;
}

/* ---- check -------------------------------------------------------------------------------- */

/* A growable array of fixed-size records collected from a tree walk. */
struct recs {
	uint8_t *v;
	size_t n, cap, len;
};

static int collect_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	struct recs *r = priv;

	if (r->n == r->cap) {
		size_t nc = r->cap ? r->cap * 2 : 64;
		uint8_t *nv = realloc(r->v, nc * r->len);

		if (!nv)
			return -ENOMEM;
		r->v = nv;
		r->cap = nc;
	}
	memcpy(r->v + r->n * r->len, rec, r->len);
	r->n++;
	return 0;
}

/* One AG's trees, walked and collected. */
struct ag_scan {
	struct recs t[MFS_AG_NTREES];
	uint64_t nblocks[MFS_AG_NTREES];
	int ok[MFS_AG_NTREES];
};

static int problem(uint32_t agno, int *nprob, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int problem(uint32_t agno, int *nprob, const char *fmt, ...)
{
	va_list ap;

	printf("AG %u: ", agno);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	putchar('\n');
	(*nprob)++;
	return 0;
}

static int cmp_alloc_bno(const void *a, const void *b)
{
	uint32_t x = mfs_get32(((const struct mfs_alloc_rec *)a)->startblock);
	uint32_t y = mfs_get32(((const struct mfs_alloc_rec *)b)->startblock);

	return x < y ? -1 : x > y;
}

/* Blocks owned by `owner` in the reverse map, and whether [agbno, agbno+len) lies inside
 * one record of that owner. */
static uint64_t rmap_owned(const struct recs *rm, uint64_t owner)
{
	uint64_t sum = 0;

	for (size_t i = 0; i < rm->n; i++) {
		const struct mfs_rmap_rec *r = (const void *)(rm->v + i * rm->len);

		if (mfs_get64(r->owner) == owner)
			sum += mfs_get32(r->blockcount);
	}
	return sum;
}

static int rmap_covers(const struct recs *rm, uint32_t agbno, uint32_t len, uint64_t owner)
{
	for (size_t i = 0; i < rm->n; i++) {
		const struct mfs_rmap_rec *r = (const void *)(rm->v + i * rm->len);
		uint64_t s = mfs_get32(r->startblock), e = s + mfs_get32(r->blockcount);

		if (mfs_get64(r->owner) == owner && s <= agbno && agbno + (uint64_t)len <= e)
			return 1;
	}
	return 0;
}

/*
 * Every block of the AG is exactly once either free (by-block tree) or owned (reverse
 * map): walk both sorted lists and check they tile [0, length).
 */
static void check_coverage(uint32_t agno, uint32_t len, const struct recs *bno,
			   const struct recs *rm, int *nprob)
{
	size_t i = 0, j = 0;
	uint64_t pos = 0;

	while (i < bno->n || j < rm->n) {
		const struct mfs_alloc_rec *f = i < bno->n ? (const void *)(bno->v + i * bno->len)
							   : NULL;
		const struct mfs_rmap_rec *r = j < rm->n ? (const void *)(rm->v + j * rm->len)
							 : NULL;
		uint64_t fs_ = f ? mfs_get32(f->startblock) : UINT64_MAX;
		uint64_t rs = r ? mfs_get32(r->startblock) : UINT64_MAX;
		uint64_t start, n;
		const char *what;

		if (fs_ <= rs) {
			start = fs_;
			n = mfs_get32(f->blockcount);
			what = "free extent";
			i++;
		} else {
			start = rs;
			n = mfs_get32(r->blockcount);
			what = "reverse-map record";
			j++;
		}
		if (start > pos) {
			problem(agno, nprob, "blocks %" PRIu64 "..%" PRIu64 " are neither free nor "
				"in the reverse map (leaked)", pos, start - 1);
		} else if (start < pos) {
			problem(agno, nprob, "%s at block %" PRIu64 " (%" PRIu64 " blocks) overlaps "
				"space already free or owned up to block %" PRIu64, what, start, n,
				pos - 1);
			if (start + n <= pos)
				continue;
		}
		pos = start + n;
	}
	if (pos < len)
		problem(agno, nprob, "blocks %" PRIu64 "..%u are neither free nor in the reverse "
			"map (leaked)", pos, len - 1);
	else if (pos > len)
		problem(agno, nprob, "free space or reverse map reaches block %" PRIu64
			", past the AG's end (%u blocks)", pos - 1, len);
}

/* In-use inodes without links (they must all be on the AG's orphan list). */
static uint64_t check_nolinks;

static void check_inodes(uint32_t agno, const struct mfs_inobt_rec *c, int *nprob)
{
	const struct mfs_geom *g = &fs->geo;
	uint32_t startino = mfs_get32(c->startino);
	uint64_t mask = mfs_get64(c->freemask);

	for (uint32_t i = 0; i < MFS_INODES_PER_CHUNK; i++) {
		uint64_t ino = mfs_agino_to_ino(g, agno, startino + i);
		struct mfs_buf *bp;
		const struct mfs_dinode *d;
		int isfree = (int)((mask >> i) & 1);

		if (mfs_buf_read(fs->bc, mfs_ino_to_fsb(g, ino), NULL, &bp)) {
			problem(agno, nprob, "inode %" PRIu64 ": read failed", ino);
			continue;
		}
		d = (const void *)((const char *)bp->data + mfs_ino_to_offset(g, ino));
		if (mfs_dinode_verify(d, g->inodesize, ino, g->uuid))
			problem(agno, nprob, "inode %" PRIu64 ": fails its verifier", ino);
		else if (isfree != (mfs_get16(d->mode) == 0))
			problem(agno, nprob, "inode %" PRIu64 ": the inode btree says %s, the inode "
				"has mode 0%o", ino, isfree ? "free" : "in use", mfs_get16(d->mode));
		else if (!isfree && mfs_get32(d->nlink) == 0)
			check_nolinks++;
		mfs_buf_put(bp);
	}
}

/* Check AG `agno`; adds its counters to the totals.  Returns the number of problems. */
static int check_ag(uint32_t agno, uint64_t *freeblks, uint64_t *icount, uint64_t *ifree)
{
	const struct mfs_geom *g = &fs->geo;
	struct mfs_buf *bp, *hbp;
	struct mfs_geom cg;
	struct ag_scan s;
	const struct mfs_agh *agh;
	uint32_t len = mfs_ag_length(g, agno);
	uint64_t sum, longest, btreeblks;
	int nprob = 0, err;

	check_nolinks = 0;

	memset(&s, 0, sizeof(s));
	/* Superblock copy: verifies and carries the same geometry as the primary. */
	err = mfs_read_sb(fs, agno, &bp);
	if (err) {
		problem(agno, &nprob, "superblock copy unreadable: %s", errstr(err));
	} else {
		err = mfs_geom_from_sb(&cg, bp->data, mfs_dev_size(fs->dev));
		cg.chunkblocks = g->chunkblocks;
		if (err || memcmp(&cg, g, sizeof(cg)))
			problem(agno, &nprob, "superblock copy disagrees with the primary's geometry");
		mfs_buf_put(bp);
	}

	err = mfs_read_agh(fs, agno, &hbp);
	if (err) {
		problem(agno, &nprob, "AG header unreadable, trees not checked: %s", errstr(err));
		return nprob;
	}
	agh = hbp->data;

	for (int t = 0; t < MFS_AG_NTREES; t++) {
		struct mfs_btree_cur cur;
		uint64_t nrecs = 0;
		static const size_t reclen[MFS_AG_NTREES] = {
			sizeof(struct mfs_alloc_rec), sizeof(struct mfs_alloc_rec),
			sizeof(struct mfs_inobt_rec), sizeof(struct mfs_rmap_rec) };

		s.t[t].len = reclen[t];
		mfs_ag_cur_init(&cur, fs, NULL, agno, (enum mfs_ag_tree)t, hbp);
		err = mfs_btree_verify(&cur, &nrecs, &s.nblocks[t]);
		if (!err)
			err = mfs_btree_query_range(&cur, NULL, NULL, collect_fn, &s.t[t]);
		mfs_btree_cur_release(&cur);
		if (err < 0) {
			problem(agno, &nprob, "%s btree is damaged: %s", tree_names[t],
				errstr(err));
			continue;
		}
		s.ok[t] = 1;
		if (s.t[t].n != nrecs)
			problem(agno, &nprob, "%s btree: verify counted %" PRIu64 " records, the walk "
				"%zu", tree_names[t], nrecs, s.t[t].n);
	}

	/* Free space: both trees hold the same extents, and the header's counters match. */
	if (s.ok[MFS_BT_BNO]) {
		sum = longest = 0;
		for (size_t i = 0; i < s.t[MFS_BT_BNO].n; i++) {
			const struct mfs_alloc_rec *r = (const void *)(s.t[MFS_BT_BNO].v + i * 8);
			uint32_t n = mfs_get32(r->blockcount);

			sum += n;
			if (n > longest)
				longest = n;
		}
		*freeblks += sum;
		if (sum != mfs_get32(agh->freeblks))
			problem(agno, &nprob, "header says %u free blocks, the by-block btree holds "
				"%" PRIu64, mfs_get32(agh->freeblks), sum);
		if (longest != mfs_get32(agh->longest))
			problem(agno, &nprob, "header says the longest free extent is %u blocks, the "
				"by-block btree's is %" PRIu64, mfs_get32(agh->longest), longest);
	}
	if (s.ok[MFS_BT_BNO] && s.ok[MFS_BT_CNT]) {
		struct recs *c = &s.t[MFS_BT_CNT];

		qsort(c->v, c->n, c->len, cmp_alloc_bno);
		if (c->n != s.t[MFS_BT_BNO].n || memcmp(c->v, s.t[MFS_BT_BNO].v, c->n * c->len))
			problem(agno, &nprob, "the by-block (%zu extents) and by-length (%zu extents) "
				"btrees do not hold the same free extents", s.t[MFS_BT_BNO].n, c->n);
	}
	if (s.ok[MFS_BT_BNO] && s.ok[MFS_BT_CNT] && s.ok[MFS_BT_RMAP]) {
		btreeblks = s.nblocks[MFS_BT_BNO] + s.nblocks[MFS_BT_CNT] + s.nblocks[MFS_BT_RMAP] - 3;
		if (btreeblks != mfs_get32(agh->btreeblks))
			problem(agno, &nprob, "header says %u btree blocks beyond the roots, the "
				"trees have %" PRIu64, mfs_get32(agh->btreeblks), btreeblks);
	}

	/* Inodes: the header's counters, each chunk's free count, each inode's state. */
	if (s.ok[MFS_BT_INO]) {
		uint64_t ic = 0, ifr = 0;

		for (size_t i = 0; i < s.t[MFS_BT_INO].n; i++) {
			const struct mfs_inobt_rec *r = (const void *)(s.t[MFS_BT_INO].v + i * 16);
			uint32_t startino = mfs_get32(r->startino);
			uint32_t agbno = mfs_agino_to_agbno(g, startino);

			ic += MFS_INODES_PER_CHUNK;
			ifr += mfs_get32(r->freecount);
			if ((uint32_t)__builtin_popcountll(mfs_get64(r->freemask)) !=
			    mfs_get32(r->freecount))
				problem(agno, &nprob, "inode chunk %u: free count %u, free mask has %d "
					"bits", startino, mfs_get32(r->freecount),
					__builtin_popcountll(mfs_get64(r->freemask)));
			if (startino % MFS_INODES_PER_CHUNK || agbno % g->chunkblocks ||
			    agbno + g->chunkblocks > len) {
				problem(agno, &nprob, "inode chunk %u: misaligned or outside the AG",
					startino);
				continue;
			}
			if (s.ok[MFS_BT_RMAP] &&
			    !rmap_covers(&s.t[MFS_BT_RMAP], agbno, g->chunkblocks, MFS_OWN_INODES))
				problem(agno, &nprob, "inode chunk %u (block %u): not owned by inodes "
					"in the reverse map", startino, agbno);
			check_inodes(agno, r, &nprob);
		}
		*icount += ic;
		*ifree += ifr;
		if (ic != mfs_get32(agh->icount) || ifr != mfs_get32(agh->ifree))
			problem(agno, &nprob, "header says %u inodes, %u free; the inode btree has "
				"%" PRIu64 ", %" PRIu64 " free", mfs_get32(agh->icount),
				mfs_get32(agh->ifree), ic, ifr);
	}

	/* Reverse map: tiles the AG with the free space; the AG's own blocks are accounted. */
	if (s.ok[MFS_BT_RMAP]) {
		const struct recs *rm = &s.t[MFS_BT_RMAP];
		uint64_t own_ag = s.nblocks[MFS_BT_BNO] + s.nblocks[MFS_BT_CNT] +
				  s.nblocks[MFS_BT_RMAP] + mfs_get32(agh->fl_count);

		if (s.ok[MFS_BT_BNO])
			check_coverage(agno, len, &s.t[MFS_BT_BNO], rm, &nprob);
		if (!rmap_covers(rm, 0, MFS_AG_FIXED_BLOCKS, MFS_OWN_FS))
			problem(agno, &nprob, "the fixed header blocks 0..%u are not owned by the "
				"filesystem in the reverse map", MFS_AG_FIXED_BLOCKS - 1);
		if (s.ok[MFS_BT_BNO] && s.ok[MFS_BT_CNT] && rmap_owned(rm, MFS_OWN_AG) != own_ag)
			problem(agno, &nprob, "reverse map gives %" PRIu64 " blocks to the AG's trees "
				"and free list, they use %" PRIu64, rmap_owned(rm, MFS_OWN_AG), own_ag);
		if (s.ok[MFS_BT_INO] && rmap_owned(rm, MFS_OWN_INOBT) != s.nblocks[MFS_BT_INO])
			problem(agno, &nprob, "reverse map gives %" PRIu64 " blocks to the inode "
				"btree, it has %" PRIu64, rmap_owned(rm, MFS_OWN_INOBT),
				s.nblocks[MFS_BT_INO]);
		if (g->logblocks && mfs_fsb_to_agno(g, g->logstart) == agno &&
		    !rmap_covers(rm, mfs_fsb_to_agbno(g, g->logstart), g->logblocks, MFS_OWN_LOG))
			problem(agno, &nprob, "the journal (block %" PRIu64 ", %u blocks) is not "
				"owned by the log in the reverse map", g->logstart, g->logblocks);
	}

	/* Free list: slots point inside the AG, past the fixed blocks, owned by the AG. */
	err = mfs_read_agfl(fs, agno, &bp);
	if (err) {
		problem(agno, &nprob, "free list unreadable: %s", errstr(err));
	} else {
		const struct mfs_agfl *fl = bp->data;
		uint32_t first = mfs_get32(agh->fl_first), count = mfs_get32(agh->fl_count);

		for (uint32_t i = 0; i < count; i++) {
			uint32_t b = mfs_get32(fl->bno[(first + i) % MFS_AGFL_SIZE_MAX]);

			if (b < MFS_AG_FIXED_BLOCKS || b >= len)
				problem(agno, &nprob, "free list slot %u: block %u outside %u..%u",
					(first + i) % MFS_AGFL_SIZE_MAX, b, MFS_AG_FIXED_BLOCKS,
					len - 1);
			else if (s.ok[MFS_BT_RMAP] &&
				 !rmap_covers(&s.t[MFS_BT_RMAP], b, 1, MFS_OWN_AG))
				problem(agno, &nprob, "free list block %u is not owned by the AG in "
					"the reverse map", b);
		}
		mfs_buf_put(bp);
	}
	/* Orphan list: well formed, and holding every in-use inode without links. */
	{
		uint64_t norph = 0;

		err = mfs_orphan_check(fs, agno, &norph);
		if (err)
			problem(agno, &nprob, "orphan list: %s", errstr(err));
		else if (s.ok[MFS_BT_INO] && norph != check_nolinks)
			problem(agno, &nprob, "%" PRIu64 " in-use inodes have no links, the orphan "
				"list holds %" PRIu64, check_nolinks, norph);
		check_nolinks = 0;
	}
	mfs_buf_put(hbp);
	for (int t = 0; t < MFS_AG_NTREES; t++)
		free(s.t[t].v);
	return nprob;
}

static int cmd_check(int argc, char **argv)
{
	const struct mfs_geom *g = &fs->geo;
	uint32_t lo = 0, hi = g->agcount - 1;
	uint64_t freeblks = 0, icount = 0, ifree = 0;
	int total = 0, bad_ags = 0;
	struct mfs_buf *bp;

	if (argc > 1) {
		if (parse_agno(argv[1], &lo))
			return 1;
		hi = lo;
	}
	for (uint32_t agno = lo; agno <= hi; agno++) {
		int n = check_ag(agno, &freeblks, &icount, &ifree);

		total += n;
		bad_ags += n > 0;
	}
	/* Whole-filesystem checks. */
	if (argc == 1) {
		struct mfs_buf *ibp;
		struct mfs_journal_info ji;
		uint64_t rino = g->rootino;
		int err;

		if (mfs_read_sb(fs, 0, &bp) == 0) {
			const struct mfs_sb *sb = bp->data;

			if ((mfs_get32(sb->state) & MFS_STATE_CLEAN) &&
			    (mfs_get64(sb->fdblocks) != freeblks || mfs_get64(sb->icount) != icount ||
			     mfs_get64(sb->ifree) != ifree)) {
				printf("superblock: summary says %" PRIu64 " free blocks, %" PRIu64
				       " inodes, %" PRIu64 " free; the AGs have %" PRIu64 ", %" PRIu64
				       ", %" PRIu64 "\n", mfs_get64(sb->fdblocks),
				       mfs_get64(sb->icount), mfs_get64(sb->ifree), freeblks, icount,
				       ifree);
				total++;
			}
			mfs_buf_put(bp);
		}
		err = mfs_journal_peek(fs, &ji);
		if (err) {
			printf("journal: header unusable: %s\n", errstr(err));
			total++;
		} else if (!ji.clean || ji.records) {
			printf("journal: not clean (%" PRIu64 " records to replay from sequence %"
			       PRIu64 "): mount or repair to replay it\n", ji.records, ji.tail_seq);
		}
		err = mfs_buf_read(fs->bc, mfs_ino_to_fsb(g, rino), NULL, &ibp);
		if (err) {
			printf("root inode %" PRIu64 ": read failed\n", rino);
			total++;
		} else {
			const struct mfs_dinode *d =
				(const void *)((const char *)ibp->data + mfs_ino_to_offset(g, rino));

			if (mfs_dinode_verify(d, g->inodesize, rino, g->uuid)) {
				printf("root inode %" PRIu64 ": fails its verifier\n", rino);
				total++;
			} else if (!S_ISDIR(mfs_get16(d->mode))) {
				printf("root inode %" PRIu64 ": mode 0%o is not a directory\n", rino,
				       mfs_get16(d->mode));
				total++;
			}
			mfs_buf_put(ibp);
		}
	}
	if (total) {
		printf("check: %d problem%s found (%d of %u AGs damaged)\n", total,
		       total == 1 ? "" : "s", bad_ags, hi - lo + 1);
		return 1;
	}
	printf("check: clean (%u AG%s, %" PRIu64 " free blocks, %" PRIu64 " inodes, %" PRIu64
	       " free)\n", hi - lo + 1, hi > lo ? "s" : "", freeblks, icount, ifree);
	return 0;
}

/* ---- command table and loop ----------------------------------------------------------------- */

static int cmd_help(int argc, char **argv);

struct command {
	const char *name;
	int (*fn)(int argc, char **argv);
	int min_args, max_args;
	const char *args;
	const char *help;
};

static const struct command commands[] = {
	{ "sb", cmd_sb, 0, 1, "[agno]", "superblock (primary, or the copy in AG agno)" },
	{ "agh", cmd_agh, 1, 1, "agno", "AG header" },
	{ "agfl", cmd_agfl, 1, 1, "agno", "AG free list" },
	{ "btree", cmd_btree, 2, 2, "agno bno|cnt|ino|rmap", "every record of an AG btree" },
	{ "block", cmd_block, 1, 2, "fsblock [bno|cnt|ino|rmap]",
	  "decode one btree block (header, keys and pointers, or records)" },
	{ "inode", cmd_inode, 1, 1, "ino", "every field of an inode" },
	{ "freesp", cmd_freesp, 0, 1, "[agno]", "free extents: histogram and totals" },
	{ "geom", cmd_geom, 0, 0, "", "the geometry in use" },
	{ "check", cmd_check, 0, 1, "[agno]",
	  "verify every AG header and btree and cross-check their counters" },
	{ "help", cmd_help, 0, 0, "", "this list" },
};

static int cmd_help(int argc, char **argv)
{
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		printf("  %-7s %-28s %s\n", commands[i].name, commands[i].args, commands[i].help);
	printf("  %-7s %-28s %s\n", "quit", "", "leave (interactive mode)");
	return 0;
}

#define MAX_ARGS 8

static int run_command(char *line)
{
	char *argv[MAX_ARGS + 1];
	int argc = 0;
	char *save = NULL;

	for (char *tok = strtok_r(line, " \t\r\n", &save); tok;
	     tok = strtok_r(NULL, " \t\r\n", &save)) {
		if (argc == MAX_ARGS)
			return err_msg(0, "too many arguments");
		argv[argc++] = tok;
	}
	argv[argc] = NULL;
	if (!argc)
		return 0;
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		const struct command *c = &commands[i];

		if (strcmp(argv[0], c->name))
			continue;
		if (argc - 1 < c->min_args || argc - 1 > c->max_args)
			return err_msg(0, "usage: %s %s", c->name, c->args);
		return c->fn(argc, argv);
	}
	return err_msg(0, "unknown command '%s' (try help)", argv[0]);
}

static void usage(void)
{
	fprintf(stderr, "Usage: %s [-c command]... IMAGE\n"
		"Without -c, commands are read from standard input.  Commands:\n", progname);
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(stderr, "  %-7s %-28s %s\n", commands[i].name, commands[i].args,
			commands[i].help);
}

int main(int argc, char **argv)
{
	char **cmds;
	int ncmds = 0, c, rc = 0, err;

	cmds = calloc((size_t)argc, sizeof(*cmds));
	if (!cmds)
		return 1;
	while ((c = getopt(argc, argv, "c:h")) != -1) {
		switch (c) {
		case 'c':
			cmds[ncmds++] = optarg;
			break;
		case 'h':
			usage();
			free(cmds);
			return 0;
		default:
			usage();
			free(cmds);
			return 1;
		}
	}
	if (optind != argc - 1) {
		usage();
		free(cmds);
		return 1;
	}
	err = mfs_fs_open(argv[optind], MFS_OPEN_RDONLY, 0, &fs);
	if (err) {
		err_msg(err, "%s: cannot open", argv[optind]);
		free(cmds);
		return 1;
	}
	if (ncmds) {
		for (int i = 0; i < ncmds; i++) {
			char *line = strdup(cmds[i]);

			if (!line) {
				rc = 1;
				break;
			}
			rc |= run_command(line);
			free(line);
		}
	} else {
		char line[1024];
		int tty = isatty(0);

		for (;;) {
			if (tty) {
				printf("mendfs_db> ");
				fflush(stdout);
			}
			if (!fgets(line, sizeof(line), stdin))
				break;
			if (!strncmp(line, "quit", 4) || !strncmp(line, "q\n", 2) ||
			    !strncmp(line, "exit", 4))
				break;
			rc |= run_command(line);
			fflush(stdout);
		}
	}
	free(cmds);
	mfs_fs_close(fs);
	return rc ? 1 : 0;
}
