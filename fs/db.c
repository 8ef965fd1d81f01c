/*
 * db.c — mendfs_db: an inspector for mendfs images, in the manner of xfs_db; with -w it
 * also damages them on purpose (write, fuzz, trash: for the checkers' tests and the fuzzer).
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
#include "crc32c.h"
#include "dev.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "journal.h"
#include "log.h"
#include "mendfs_format.h"
#include "orphan.h"
#include "scrub.h"
#include "verify.h"

#include <ctype.h>
#include <stdarg.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stddef.h>
#include <sys/stat.h>
#include <time.h>
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
	printf("flags = 0x%x%s\n", mfs_get32(agh->flags),
	       (mfs_get32(agh->flags) & MFS_AGH_REAP) ? " (reap: old tree blocks still to free)" : "");
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
	if (!err && d->aformat == MFS_FMT_BTREE && mfs_get16(d->forkoff) &&
	    mfs_get16(d->forkoff) * 8u + sizeof(struct mfs_fork_root) <= fs->geo.inodesize -
									 sizeof(*d)) {
		struct mfs_fork_root r;

		memcpy(&r, (const char *)(d + 1) + mfs_get16(d->forkoff) * 8u, sizeof(r));
		printf("attribute fork btree root %" PRIu64 ", %u levels\n",
		       mfs_get64(r.rootblock), mfs_get32(r.levels));
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
/*
 * One implementation of the checks: the checkers of repair/ (mfs_scrub, scrub.h), the same
 * the daemon runs online.  Per AG: superblock copy, AG header, free list, the four trees;
 * then the journal, orphan lists and summary counters.  With -f ("full") also every inode
 * in use (found through the inode btrees): core, extent map, directory, attributes,
 * symlink, the reverse map's inode owners, and the link counts.  (Without -f the check is
 * structural, as for images whose inodes are synthetic: tests that allocate extents for
 * made-up owners.)
 * Each finding is printed on its own line; CORRUPT, XCORRUPT and INCOMPLETE ones count as
 * problems.
 */
struct check_state {
	unsigned problems;          /* findings that count, since the last reset */
	unsigned total;
};

static void check_report(void *arg, uint32_t flag, const char *msg)
{
	struct check_state *st = arg;
	const char *tag = "";

	if (flag & (MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT |
		    MFS_SCRUB_OFLAG_INCOMPLETE)) {
		st->problems++;
		st->total++;
	}
	if (flag & MFS_SCRUB_OFLAG_XCORRUPT)
		tag = " (cross-reference)";
	else if (flag & MFS_SCRUB_OFLAG_INCOMPLETE)
		tag = " (check incomplete)";
	else if (flag & MFS_SCRUB_OFLAG_WARNING)
		tag = " (warning)";
	else if (flag & MFS_SCRUB_OFLAG_PREEN)
		tag = " (could be optimised)";
	printf("%s%s\n", msg, tag);
}

static const char *const scrub_names[MFS_SCRUB_NTYPES] = {
	"probe", "superblock", "AG header", "free list", "bnobt", "cntbt", "inobt", "rmapbt",
	"journal", "inode", "extent map", "directory", "attributes", "symlink", "link counts",
	"orphan lists", "summary counters",
};

static void check_one(struct check_state *st, uint32_t type, uint32_t agno, uint64_t ino)
{
	struct mfs_scrub_ctx ctx;
	int err;

	memset(&ctx, 0, sizeof(ctx));
	ctx.fs = fs;
	ctx.type = type;
	ctx.agno = agno;
	ctx.ino = ino;
	ctx.report = check_report;
	ctx.hook_arg = st;
	err = mfs_scrub(&ctx);
	if (err && err != -ENOENT) {
		printf("%s check of %s %llu could not run: %s\n", scrub_names[type],
		       ino ? "inode" : "AG", ino ? (unsigned long long)ino : agno, errstr(err));
		st->problems++;
		st->total++;
	}
}

struct check_inodes {
	struct check_state *st;
};

static int check_chunk_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	static const uint32_t types[] = { MFS_SCRUB_INODE, MFS_SCRUB_BMAP, MFS_SCRUB_DIR,
					  MFS_SCRUB_XATTR, MFS_SCRUB_SYMLINK };
	const struct mfs_inobt_rec *r = rec;
	struct check_inodes *ci = priv;
	uint64_t mask = mfs_get64(r->freemask);

	for (uint32_t i = 0; i < MFS_INODES_PER_CHUNK; i++) {
		uint64_t ino = mfs_agino_to_ino(&fs->geo, cur->agno, mfs_get32(r->startino) + i);

		if (mask >> i & 1 || mfs_ino_check(fs, ino))
			continue;
		for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++)
			check_one(ci->st, types[t], 0, ino);
	}
	return 0;
}

/* The inodes in use of AG agno, found through its inode btree (read without the AG lock:
 * mendfs_db is alone on the image; each checker takes its own locks). */
static void check_ag_inodes(struct check_state *st, uint32_t agno)
{
	struct check_inodes ci = { st };
	struct mfs_btree_cur cur;
	struct mfs_buf *hbp;

	if (ag_cursor(agno, MFS_BT_INO, &hbp, &cur))
		return;         /* reported by the AG header checker */
	mfs_btree_query_range(&cur, NULL, NULL, check_chunk_fn, &ci);
	mfs_btree_cur_release(&cur);
	mfs_buf_put(hbp);
}

static int cmd_check(int argc, char **argv)
{
	static const uint32_t ag_types[] = { MFS_SCRUB_SB, MFS_SCRUB_AGH, MFS_SCRUB_AGFL,
					     MFS_SCRUB_BNOBT, MFS_SCRUB_CNTBT, MFS_SCRUB_INOBT,
					     MFS_SCRUB_RMAPBT };
	const struct mfs_geom *g = &fs->geo;
	uint32_t lo = 0, hi = g->agcount - 1;
	uint64_t freeblks = 0, icount = 0, ifree = 0;
	struct check_state st = { 0, 0 };
	unsigned bad_ags = 0;
	int full = 0, whole = 1, err;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "-f")) {
			full = 1;
			continue;
		}
		if (parse_agno(argv[i], &lo))
			return 1;
		hi = lo;
		whole = 0;
	}
	/* Without an inode cache the reverse-map checker skips its inode owners and the
	 * inode checkers do not run: the structural check. */
	if (full && !fs->icache) {
		err = mfs_icache_init(fs, 0);
		if (err)
			return err_msg(err, "check: no inode cache");
	}
	for (uint32_t agno = lo; agno <= hi; agno++) {
		struct mfs_buf *hbp;

		st.problems = 0;
		for (size_t t = 0; t < sizeof(ag_types) / sizeof(ag_types[0]); t++)
			check_one(&st, ag_types[t], agno, 0);
		bad_ags += st.problems > 0;
		if (mfs_read_agh(fs, agno, &hbp) == 0) {
			const struct mfs_agh *agh = hbp->data;

			freeblks += mfs_get32(agh->freeblks);
			icount += mfs_get32(agh->icount);
			ifree += mfs_get32(agh->ifree);
			mfs_buf_put(hbp);
		}
	}
	for (uint32_t agno = lo; full && agno <= hi; agno++)
		check_ag_inodes(&st, agno);
	if (whole) {
		struct mfs_journal_info ji;

		check_one(&st, MFS_SCRUB_JOURNAL, 0, 0);
		if (full)
			check_one(&st, MFS_SCRUB_NLINKS, 0, 0);
		check_one(&st, MFS_SCRUB_ORPHANS, 0, 0);
		check_one(&st, MFS_SCRUB_SUMMARY, 0, 0);
		if (g->logblocks && !mfs_journal_peek(fs, &ji) && (!ji.clean || ji.records))
			printf("journal: not clean (%" PRIu64 " records to replay from sequence %"
			       PRIu64 "): mount or repair to replay it\n", ji.records, ji.tail_seq);
	}
	if (fs->icache) {
		err = mfs_icache_destroy(fs);
		if (err)
			return err_msg(err, "check: inode cache");
	}
	if (st.total) {
		printf("check: %u problem%s found (%u of %u AGs damaged)\n", st.total,
		       st.total == 1 ? "" : "s", bad_ags, hi - lo + 1);
		return 1;
	}
	printf("check: clean (%u AG%s, %" PRIu64 " free blocks, %" PRIu64 " inodes, %" PRIu64
	       " free%s)\n", hi - lo + 1, hi > lo ? "s" : "", freeblks, icount, ifree,
	       full ? "; every inode, link counts" : "");
	return 0;
}

/* ---- write, fuzz, trash ------------------------------------------------------------------- */
/*
 * Changing the image on purpose, for tests (the checkers' and the fuzzer's): refused unless
 * mendfs_db was started with -w.  An object is named as in the printing commands:
 *
 *     sb AGNO | agh AGNO | agfl AGNO | block FSBLOCK | inode INO | log N
 *
 * and a field by its name as printed (freeblks, roots[2], atime.nsec...), or inside a
 * block: rec[N].FIELD of a btree leaf (by the block's magic), key[N] and ptr[N] of a node;
 * inside an inode: ext[N].FIELD (inline extents), dirent[N].FIELD (inline directory
 * entries: ino, ftype, namelen, seq, name), lit[N] (a byte of the literal area); in any
 * object byte[N].  After the change the object's CRC is computed again (the damage is
 * logical, not a checksum error) unless -c is given or the field is the CRC itself.
 */
static int writable;
static uint64_t rng_state;

static uint64_t db_rand(void)
{
	uint64_t x = rng_state;

	if (!x) {
		const char *s = getenv("MFS_DB_SEED");

		x = s ? strtoull(s, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
		x = x * 0x9e3779b97f4a7c15ull + 1;
	}
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	rng_state = x;
	return x * 0x2545f4914f6cdd1dull;
}

struct field {
	const char *name;
	uint32_t off, size;         /* bytes */
	uint32_t count;             /* 0: a scalar; n: an array name[0..n) */
};

#define FLD(type, m) { #m, (uint32_t)offsetof(type, m), (uint32_t)sizeof(((type *)0)->m), 0 }
#define ARR(type, m) { #m, (uint32_t)offsetof(type, m), (uint32_t)sizeof(((type *)0)->m[0]), \
		       (uint32_t)(sizeof(((type *)0)->m) / sizeof(((type *)0)->m[0])) }
#define FEND { NULL, 0, 0, 0 }

static const struct field hdr_fields[] = {
	FLD(struct mfs_blkhdr, magic), FLD(struct mfs_blkhdr, crc), FLD(struct mfs_blkhdr, blkno),
	FLD(struct mfs_blkhdr, owner), FLD(struct mfs_blkhdr, lsn), FLD(struct mfs_blkhdr, uuid),
	FEND
};
static const struct field sb_fields[] = {
	FLD(struct mfs_sb, version), FLD(struct mfs_sb, blocksize), FLD(struct mfs_sb, dblocks),
	FLD(struct mfs_sb, agblocks), FLD(struct mfs_sb, agcount), FLD(struct mfs_sb, inodesize),
	FLD(struct mfs_sb, blocklog), FLD(struct mfs_sb, inopblog), FLD(struct mfs_sb, agblklog),
	FLD(struct mfs_sb, rootino), FLD(struct mfs_sb, logstart), FLD(struct mfs_sb, logblocks),
	FLD(struct mfs_sb, sunit), FLD(struct mfs_sb, swidth), FLD(struct mfs_sb, state),
	FLD(struct mfs_sb, features_compat), FLD(struct mfs_sb, features_ro_compat),
	FLD(struct mfs_sb, features_incompat), FLD(struct mfs_sb, icount),
	FLD(struct mfs_sb, ifree), FLD(struct mfs_sb, fdblocks), FLD(struct mfs_sb, ctime),
	FLD(struct mfs_sb, wtime), FLD(struct mfs_sb, label), ARR(struct mfs_sb, reserved),
	FEND
};
static const struct field agh_fields[] = {
	FLD(struct mfs_agh, seqno), FLD(struct mfs_agh, length), ARR(struct mfs_agh, roots),
	ARR(struct mfs_agh, levels), FLD(struct mfs_agh, freeblks), FLD(struct mfs_agh, longest),
	FLD(struct mfs_agh, btreeblks), FLD(struct mfs_agh, icount), FLD(struct mfs_agh, ifree),
	FLD(struct mfs_agh, fl_first), FLD(struct mfs_agh, fl_count), FLD(struct mfs_agh, flags),
	FLD(struct mfs_agh, unlinked), ARR(struct mfs_agh, reserved), FEND
};
static const struct field agfl_fields[] = { ARR(struct mfs_agfl, bno), FEND };
static const struct field btb_fields[] = {
	FLD(struct mfs_btree_block, level), FLD(struct mfs_btree_block, numrecs),
	FLD(struct mfs_btree_block, pad), FLD(struct mfs_btree_block, reserved), FEND
};
static const struct field alloc_rec_fields[] = {
	FLD(struct mfs_alloc_rec, startblock), FLD(struct mfs_alloc_rec, blockcount), FEND
};
static const struct field inobt_rec_fields[] = {
	FLD(struct mfs_inobt_rec, startino), FLD(struct mfs_inobt_rec, freecount),
	FLD(struct mfs_inobt_rec, freemask), FEND
};
static const struct field rmap_rec_fields[] = {
	FLD(struct mfs_rmap_rec, startblock), FLD(struct mfs_rmap_rec, blockcount),
	FLD(struct mfs_rmap_rec, owner), FLD(struct mfs_rmap_rec, offset), FEND
};
static const struct field bmbt_rec_fields[] = {
	FLD(struct mfs_bmbt_rec, startoff), FLD(struct mfs_bmbt_rec, startblock),
	FLD(struct mfs_bmbt_rec, blockcount), FLD(struct mfs_bmbt_rec, flags), FEND
};
static const struct field dir_rec_fields[] = {
	FLD(struct mfs_dir_rec, key), FLD(struct mfs_dir_rec, ino), FLD(struct mfs_dir_rec, ftype),
	FLD(struct mfs_dir_rec, namelen), FLD(struct mfs_dir_rec, name), FEND
};
static const struct field xattr_rec_fields[] = {
	FLD(struct mfs_xattr_rec, key), FLD(struct mfs_xattr_rec, valuelen),
	FLD(struct mfs_xattr_rec, namelen), FLD(struct mfs_xattr_rec, flags),
	FLD(struct mfs_xattr_rec, pad), FLD(struct mfs_xattr_rec, data), FEND
};
static const struct field dinode_fields[] = {
	FLD(struct mfs_dinode, magic), FLD(struct mfs_dinode, crc), FLD(struct mfs_dinode, ino),
	FLD(struct mfs_dinode, lsn), FLD(struct mfs_dinode, uuid), FLD(struct mfs_dinode, mode),
	FLD(struct mfs_dinode, dformat), FLD(struct mfs_dinode, aformat),
	FLD(struct mfs_dinode, nlink), FLD(struct mfs_dinode, uid), FLD(struct mfs_dinode, gid),
	FLD(struct mfs_dinode, size), FLD(struct mfs_dinode, nblocks),
	FLD(struct mfs_dinode, atime.sec), FLD(struct mfs_dinode, atime.nsec),
	FLD(struct mfs_dinode, mtime.sec), FLD(struct mfs_dinode, mtime.nsec),
	FLD(struct mfs_dinode, ctime.sec), FLD(struct mfs_dinode, ctime.nsec),
	FLD(struct mfs_dinode, btime.sec), FLD(struct mfs_dinode, btime.nsec),
	FLD(struct mfs_dinode, flags), FLD(struct mfs_dinode, generation),
	FLD(struct mfs_dinode, dnext), FLD(struct mfs_dinode, anext),
	FLD(struct mfs_dinode, forkoff), FLD(struct mfs_dinode, pad0), FLD(struct mfs_dinode, rdev),
	FLD(struct mfs_dinode, next_unlinked), ARR(struct mfs_dinode, reserved), FEND
};
static const struct field jhdr_fields[] = {
	FLD(struct mfs_jhdr, magic), FLD(struct mfs_jhdr, crc), FLD(struct mfs_jhdr, gen),
	FLD(struct mfs_jhdr, uuid), FLD(struct mfs_jhdr, version), FLD(struct mfs_jhdr, blocksize),
	FLD(struct mfs_jhdr, logstart), FLD(struct mfs_jhdr, logblocks),
	FLD(struct mfs_jhdr, tail_blk), FLD(struct mfs_jhdr, tail_seq), FLD(struct mfs_jhdr, flags),
	FEND
};
static const struct field dirent_fields[] = {
	FLD(struct mfs_dir_lent, ino), FLD(struct mfs_dir_lent, ftype),
	FLD(struct mfs_dir_lent, namelen), FLD(struct mfs_dir_lent, seq), FEND
};

/* Btree blocks by magic: leaf record fields and sizes, node key and pointer sizes. */
static const struct {
	uint32_t magic;
	const struct field *rec;
	uint32_t rec_len, key_len, ptr_len;
} bt_kinds[] = {
	{ MFS_BNOBT_MAGIC, alloc_rec_fields, 8, 8, 4 },
	{ MFS_CNTBT_MAGIC, alloc_rec_fields, 8, 8, 4 },
	{ MFS_INOBT_MAGIC, inobt_rec_fields, 16, 4, 4 },
	{ MFS_RMAPBT_MAGIC, rmap_rec_fields, 24, 4, 4 },
	{ MFS_BMBT_MAGIC, bmbt_rec_fields, 24, 8, 8 },
	{ MFS_DIRBT_MAGIC, dir_rec_fields, MFS_DIR_REC_SIZE, 8, 8 },
	{ MFS_XATTRBT_MAGIC, xattr_rec_fields, MFS_XATTR_REC_SIZE, 8, 8 },
};

enum wobj { W_BLOCK, W_INODE, W_LOG };

/* The object being changed: its buffer, the bytes of the object in it, how to reseal. */
struct wtarget {
	enum wobj kind;
	struct mfs_buf *bp;
	uint8_t *base;              /* the object's first byte */
	uint32_t len;               /* its bytes */
	const struct field *fields; /* besides the block header */
	int has_hdr;                /* a self-describing metadata block (mfs_blkhdr) */
	char desc[64];
};

/* Parse "OBJECT ARG": fills t and returns the number of argv words used, or -1. */
static int wtarget_get(char **argv, int argc, struct wtarget *t)
{
	const struct mfs_geom *g = &fs->geo;
	uint64_t v, fsb;
	uint32_t agno;

	memset(t, 0, sizeof(*t));
	if (argc < 2) {
		err_msg(0, "name an object: sb|agh|agfl AGNO, block FSBLOCK, inode INO or log N");
		return -1;
	}
	if (!strcmp(argv[0], "sb") || !strcmp(argv[0], "agh") || !strcmp(argv[0], "agfl")) {
		if (parse_agno(argv[1], &agno))
			return -1;
		fsb = mfs_agbno_to_fsb(g, agno, argv[0][1] == 'b' ? MFS_SB_AGBNO :
					  !strcmp(argv[0], "agh") ? MFS_AGH_AGBNO : MFS_AGFL_AGBNO);
		t->fields = argv[0][1] == 'b' ? sb_fields : !strcmp(argv[0], "agh") ? agh_fields
										       : agfl_fields;
		t->has_hdr = 1;
		snprintf(t->desc, sizeof(t->desc), "%s %u", argv[0], agno);
	} else if (!strcmp(argv[0], "block")) {
		if (parse_u64(argv[1], &fsb)) {
			err_msg(0, "'%s' is not a block number", argv[1]);
			return -1;
		}
		t->fields = btb_fields;
		snprintf(t->desc, sizeof(t->desc), "block %" PRIu64, fsb);
	} else if (!strcmp(argv[0], "inode")) {
		if (parse_u64(argv[1], &v) || mfs_ino_check(fs, v)) {
			err_msg(0, "'%s' is not an inode number of this filesystem", argv[1]);
			return -1;
		}
		if (read_raw(mfs_ino_to_fsb(g, v), &t->bp))
			return -1;
		t->kind = W_INODE;
		t->base = (uint8_t *)t->bp->data + mfs_ino_to_offset(g, v);
		t->len = g->inodesize;
		t->fields = dinode_fields;
		snprintf(t->desc, sizeof(t->desc), "inode %" PRIu64, v);
		return 2;
	} else if (!strcmp(argv[0], "log")) {
		if (parse_u64(argv[1], &v) || !g->logblocks || v >= g->logblocks) {
			err_msg(0, "'%s' is not a block of the journal (%u blocks)", argv[1],
				g->logblocks);
			return -1;
		}
		fsb = g->logstart + v;
		t->kind = W_LOG;
		t->fields = v < MFS_JHDR_COPIES ? jhdr_fields : NULL;
		snprintf(t->desc, sizeof(t->desc), "log block %" PRIu64, v);
	} else {
		err_msg(0, "unknown object '%s' (sb, agh, agfl, block, inode, log)", argv[0]);
		return -1;
	}
	if (read_raw(fsb, &t->bp))
		return -1;
	t->base = t->bp->data;
	t->len = g->blocksize;
	if (t->kind == W_BLOCK && !t->has_hdr) {
		uint32_t magic = mfs_get32(((const struct mfs_blkhdr *)t->base)->magic);

		for (size_t i = 0; i < sizeof(bt_kinds) / sizeof(bt_kinds[0]); i++)
			if (bt_kinds[i].magic == magic)
				t->has_hdr = 1;
		if (magic == MFS_XATTRV_MAGIC || magic == MFS_SB_MAGIC || magic == MFS_AGH_MAGIC ||
		    magic == MFS_AGFL_MAGIC)
			t->has_hdr = 1;
	}
	return 2;
}

static void wtarget_put(struct wtarget *t)
{
	if (t->bp)
		mfs_buf_put(t->bp);
	t->bp = NULL;
}

/* "name[3].sub" -> name, 3 (or -1) and sub (or NULL) */
static int split_field(char *s, char **name, long *idx, char **sub)
{
	char *br = strchr(s, '['), *dot;

	*name = s;
	*idx = -1;
	*sub = NULL;
	if (br) {
		char *end;

		*br = '\0';
		errno = 0;
		*idx = strtol(br + 1, &end, 10);
		if (errno || end == br + 1 || *end != ']' || *idx < 0)
			return -1;
		dot = end + 1;
	} else {
		/* "atime.nsec" is one field of the inode; "rec.x" would be a sub-field */
		dot = strchr(s, '.');
		if (!dot || (dot - s == 5 && strchr("amcb", s[0]) && !strncmp(s + 1, "time", 4)))
			return 0;
		*dot = '\0';
		*sub = dot + 1;
		return 0;
	}
	if (*dot == '.')
		*sub = dot + 1;
	else if (*dot)
		return -1;
	return 0;
}

static const struct field *find_field(const struct field *tab, const char *name)
{
	for (; tab && tab->name; tab++)
		if (!strcmp(tab->name, name))
			return tab;
	return NULL;
}

/* Locate a field of the target: its offset from t->base and its size. */
static int locate(struct wtarget *t, const char *spec, uint32_t *off, uint32_t *size)
{
	char buf[96], *name, *sub;
	const struct field *f;
	long idx;
	uint64_t o;

	snprintf(buf, sizeof(buf), "%s", spec);
	if (split_field(buf, &name, &idx, &sub))
		return err_msg(0, "%s: cannot parse field '%s'", t->desc, spec);
	if (!strcmp(name, "byte") || (!strcmp(name, "lit") && t->kind == W_INODE)) {
		o = (uint64_t)idx + (name[0] == 'l' ? sizeof(struct mfs_dinode) : 0);
		if (idx < 0 || sub || o >= t->len)
			return err_msg(0, "%s: %s[N] with N below %u", t->desc, name,
				       t->len - (name[0] == 'l' ? (uint32_t)sizeof(struct mfs_dinode)
								 : 0));
		*off = (uint32_t)o;
		*size = 1;
		return 0;
	}
	if (t->kind == W_INODE && (!strcmp(name, "ext") || !strcmp(name, "dirent"))) {
		const struct mfs_dinode *d = (const void *)t->base;
		uint32_t lit = t->len - (uint32_t)sizeof(*d);

		if (idx < 0 || !sub)
			return err_msg(0, "%s: %s[N].FIELD", t->desc, name);
		if (name[0] == 'e') {
			f = find_field(bmbt_rec_fields, sub);
			o = (uint64_t)idx * sizeof(struct mfs_bmbt_rec);
			if (!f || o + sizeof(struct mfs_bmbt_rec) > lit)
				return err_msg(0, "%s: no extent field %s[%ld].%s", t->desc, name,
					       idx, sub);
		} else {
			/* walk the packed local entries to the idx-th one */
			uint64_t pos = MFS_DIR_LOCAL_HDR, end = mfs_get64(d->size);
			const uint8_t *l = (const uint8_t *)(d + 1);

			if (end > lit)
				end = lit;
			for (long i = 0; i < idx && pos + sizeof(struct mfs_dir_lent) <= end; i++)
				pos += sizeof(struct mfs_dir_lent) + l[pos + 9];
			if (pos + sizeof(struct mfs_dir_lent) > end)
				return err_msg(0, "%s: no inline directory entry %ld", t->desc, idx);
			if (!strcmp(sub, "name")) {
				*off = (uint32_t)(sizeof(*d) + pos + sizeof(struct mfs_dir_lent));
				*size = l[pos + 9];
				if (!*size || *off + *size > t->len)
					return err_msg(0, "%s: entry %ld's name is out of bounds",
						       t->desc, idx);
				return 0;
			}
			f = find_field(dirent_fields, sub);
			if (!f)
				return err_msg(0, "%s: no directory entry field '%s'", t->desc, sub);
			o = pos;
		}
		*off = (uint32_t)(sizeof(*d) + o + f->off);
		*size = f->size;
		return 0;
	}
	if (t->kind == W_BLOCK && t->has_hdr && (!strcmp(name, "rec") || !strcmp(name, "key") ||
						 !strcmp(name, "ptr"))) {
		uint32_t magic = mfs_get32(((const struct mfs_blkhdr *)t->base)->magic);
		uint32_t level = mfs_get16(((const struct mfs_btree_block *)t->base)->level);
		size_t k = 0;

		while (k < sizeof(bt_kinds) / sizeof(bt_kinds[0]) && bt_kinds[k].magic != magic)
			k++;
		if (k == sizeof(bt_kinds) / sizeof(bt_kinds[0]) || idx < 0)
			return err_msg(0, "%s: not a btree block, or no index", t->desc);
		if (name[0] == 'r') {
			if (level || !sub || !(f = find_field(bt_kinds[k].rec, sub)))
				return err_msg(0, "%s: rec[N].FIELD of a leaf", t->desc);
			o = sizeof(struct mfs_btree_block) + (uint64_t)idx * bt_kinds[k].rec_len +
			    f->off;
			*size = f->size;
		} else {
			uint32_t per = bt_kinds[k].key_len + bt_kinds[k].ptr_len;
			uint32_t cap = (t->len - (uint32_t)sizeof(struct mfs_btree_block)) / per;

			if (!level || sub || (uint64_t)idx >= cap)
				return err_msg(0, "%s: key[N] or ptr[N] of a node, N below %u",
					       t->desc, cap);
			o = sizeof(struct mfs_btree_block) + (name[0] == 'k' ?
				(uint64_t)idx * bt_kinds[k].key_len :
				(uint64_t)cap * bt_kinds[k].key_len + (uint64_t)idx * bt_kinds[k].ptr_len);
			*size = name[0] == 'k' ? bt_kinds[k].key_len : bt_kinds[k].ptr_len;
		}
		if (o + *size > t->len)
			return err_msg(0, "%s: %s[%ld] lies past the block's end", t->desc, name,
				       idx);
		*off = (uint32_t)o;
		return 0;
	}
	f = t->has_hdr || t->kind == W_BLOCK ? find_field(hdr_fields, name) : NULL;
	if (!f || (t->kind == W_BLOCK && !t->has_hdr))
		f = find_field(t->fields, name);
	if (!f || (f->count && (idx < 0 || (uint64_t)idx >= f->count)) || (!f->count && idx >= 0) ||
	    sub)
		return err_msg(0, "%s: no field '%s'%s", t->desc, spec,
			       f && f->count ? " (give an index in range)" : "");
	*off = f->off + (f->count ? (uint32_t)idx * f->size : 0);
	*size = f->size;
	return 0;
}

static uint64_t get_le(const uint8_t *p, uint32_t size)
{
	uint64_t v = 0;

	for (uint32_t i = size; i-- > 0;)
		v = v << 8 | p[i];
	return v;
}

static void put_le(uint8_t *p, uint32_t size, uint64_t v)
{
	for (uint32_t i = 0; i < size; i++, v >>= 8)
		p[i] = (uint8_t)v;
}

/* Reseal (unless nocrc), write the object back, report. */
static int wtarget_commit(struct wtarget *t, int nocrc)
{
	int err;

	if (!nocrc) {
		if (t->kind == W_INODE)
			mfs_dinode_seal(t->base, t->len);
		else if (t->has_hdr || t->kind == W_LOG)
			mfs_blk_seal(t->base, t->len);
	}
	/* Sealed (or left stale) by hand: the cache must not reseal it at write-back. */
	mfs_buf_set_meta_state(t->bp, 0);
	mfs_buf_mark_dirty(t->bp);
	wtarget_put(t);
	err = mfs_bcache_flush(fs->bc);
	if (err)
		return err_msg(err, "%s: write", t->desc);
	return 0;
}

static int parse_value(const char *s, uint64_t *v)
{
	char *end;

	errno = 0;
	if (*s == '-')
		*v = (uint64_t)strtoll(s, &end, 0);
	else
		*v = strtoull(s, &end, 0);
	return errno || end == s || *end ? -EINVAL : 0;
}

/* Leading options of write and fuzz: -c (keep the old CRC).  Returns the first argument. */
static int write_opts(int argc, char **argv, int *nocrc)
{
	int i = 1;

	*nocrc = 0;
	if (i < argc && !strcmp(argv[i], "-c")) {
		*nocrc = 1;
		i++;
	}
	return i;
}

static int refuse_readonly(const char *cmd)
{
	if (writable)
		return 0;
	return err_msg(0, "%s: the image is open read-only (start mendfs_db with -w to write)",
		       cmd);
}

static int cmd_write(int argc, char **argv)
{
	struct wtarget t;
	uint32_t off, size;
	uint64_t v, old;
	int nocrc, i, n;

	if (refuse_readonly("write"))
		return 1;
	i = write_opts(argc, argv, &nocrc);
	n = wtarget_get(argv + i, argc - i, &t);
	if (n < 0)
		return 1;
	i += n;
	if (argc - i != 2) {
		wtarget_put(&t);
		return err_msg(0, "usage: write [-c] OBJECT ARG FIELD VALUE");
	}
	if (locate(&t, argv[i], &off, &size)) {
		wtarget_put(&t);
		return 1;
	}
	if (size > 8) {
		/* strings and byte arrays (label, uuid, names): the value's bytes, zero-padded */
		size_t l = strlen(argv[i + 1]);

		memset(t.base + off, 0, size);
		memcpy(t.base + off, argv[i + 1], l < size ? l : size);
		printf("%s %s = \"%.*s\"\n", t.desc, argv[i], (int)(l < size ? l : size),
		       argv[i + 1]);
	} else {
		if (parse_value(argv[i + 1], &v)) {
			wtarget_put(&t);
			return err_msg(0, "write: '%s' is not a number", argv[i + 1]);
		}
		old = get_le(t.base + off, size);
		put_le(t.base + off, size, v);
		printf("%s %s = %" PRIu64 " (was %" PRIu64 ")\n", t.desc, argv[i],
		       get_le(t.base + off, size), old);
	}
	return wtarget_commit(&t, nocrc || !strcmp(argv[i], "crc"));
}

static int cmd_fuzz(int argc, char **argv)
{
	struct wtarget t;
	uint32_t off, size;
	uint64_t arg = 0, old = 0;
	const char *verb;
	uint8_t *p;
	int nocrc, i, n, has_arg;

	if (refuse_readonly("fuzz"))
		return 1;
	i = write_opts(argc, argv, &nocrc);
	n = wtarget_get(argv + i, argc - i, &t);
	if (n < 0)
		return 1;
	i += n;
	if (argc - i < 2 || argc - i > 3) {
		wtarget_put(&t);
		return err_msg(0, "usage: fuzz [-c] OBJECT ARG FIELD zeroes|ones|random|firstbit|"
			       "middlebit|lastbit|add [N]|sub [N]|bitflip [N]");
	}
	if (locate(&t, argv[i], &off, &size)) {
		wtarget_put(&t);
		return 1;
	}
	verb = argv[i + 1];
	has_arg = argc - i == 3;
	if (has_arg && parse_value(argv[i + 2], &arg)) {
		wtarget_put(&t);
		return err_msg(0, "fuzz: '%s' is not a number", argv[i + 2]);
	}
	p = t.base + off;
	if (size <= 8)
		old = get_le(p, size);
	if (!strcmp(verb, "zeroes")) {
		memset(p, 0, size);
	} else if (!strcmp(verb, "ones")) {
		memset(p, 0xff, size);
	} else if (!strcmp(verb, "random")) {
		for (uint32_t k = 0; k < size; k++)
			p[k] = (uint8_t)db_rand();
	} else if (!strcmp(verb, "add") || !strcmp(verb, "sub")) {
		if (size > 8) {
			wtarget_put(&t);
			return err_msg(0, "fuzz: %s needs a numeric field", verb);
		}
		if (!has_arg)
			arg = 1;
		put_le(p, size, verb[0] == 'a' ? old + arg : old - arg);
	} else if (!strcmp(verb, "bitflip") || !strcmp(verb, "firstbit") ||
		   !strcmp(verb, "middlebit") || !strcmp(verb, "lastbit")) {
		uint64_t bit = verb[1] == 'i' ? (has_arg ? arg : db_rand() % (size * 8ull)) :
			       verb[0] == 'f' ? 0 : verb[0] == 'm' ? size * 4ull : size * 8ull - 1;

		if (bit >= size * 8ull) {
			wtarget_put(&t);
			return err_msg(0, "fuzz: bit %" PRIu64 " is outside the %u-bit field", bit,
				       size * 8);
		}
		p[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	} else {
		wtarget_put(&t);
		return err_msg(0, "fuzz: unknown verb '%s'", verb);
	}
	if (size <= 8)
		printf("%s %s: %" PRIu64 " -> %" PRIu64 " (%s)\n", t.desc, argv[i], old,
		       get_le(p, size), verb);
	else
		printf("%s %s: %u bytes fuzzed (%s)\n", t.desc, argv[i], size, verb);
	return wtarget_commit(&t, nocrc || !strcmp(argv[i], "crc"));
}

/* ---- fields: every field the write and fuzz commands can name in one object ---------------- */

static uint64_t get_le(const uint8_t *p, uint32_t size);

/* One line: name, size, and the value of a numeric field (at most 8 bytes) at base + off. */
static void list_one(const char *name, uint32_t size, const uint8_t *base, uint32_t off)
{
	if (size <= 8)
		printf("%s %u %" PRIu64 "\n", name, size, get_le(base + off, size));
	else
		printf("%s %u -\n", name, size);
}

/* The fields of a table at base (a record or the object); prefix names the record. */
static void list_table(const struct field *tab, const char *prefix, const uint8_t *base)
{
	char name[64];

	for (; tab && tab->name; tab++) {
		if (!tab->count) {
			snprintf(name, sizeof(name), "%s%s", prefix, tab->name);
			list_one(name, tab->size, base, tab->off);
			continue;
		}
		for (uint32_t i = 0; i < tab->count; i++) {
			snprintf(name, sizeof(name), "%s%s[%u]", prefix, tab->name, i);
			list_one(name, tab->size, base, tab->off + i * tab->size);
		}
	}
}

/*
 * One line per field, "NAME SIZE VALUE" (SIZE in bytes, VALUE "-" for a field wider than
 * 8 bytes), NAME as write and fuzz take it: the block
 * header's fields, the object's own (arrays one line per element), and the records in use:
 * rec[N].FIELD of a btree leaf or key[N]/ptr[N] of a node (N below numrecs, bounded by the
 * block's capacity), ext[N].FIELD of an inode's inline extents (N below dnext) and
 * dirent[N].FIELD of an inline directory.  byte[N] and lit[N] are not listed.
 */
static int cmd_fields(int argc, char **argv)
{
	struct wtarget t;
	int n;

	n = wtarget_get(argv + 1, argc - 1, &t);
	if (n < 0)
		return 1;
	if (argc != 3) {
		wtarget_put(&t);
		return err_msg(0, "usage: fields OBJECT ARG");
	}
	if (t.has_hdr && t.kind == W_BLOCK)
		list_table(hdr_fields, "", t.base);
	if (t.kind == W_INODE) {
		const struct mfs_dinode *d = (const void *)t.base;
		uint32_t lit = t.len - (uint32_t)sizeof(*d);

		list_table(t.fields, "", t.base);
		if (d->dformat == MFS_FMT_EXTENTS) {
			uint32_t next = mfs_get32(d->dnext);
			char pfx[32];

			for (uint32_t i = 0; i < next && (i + 1) * sizeof(struct mfs_bmbt_rec) <= lit;
			     i++) {
				snprintf(pfx, sizeof(pfx), "ext[%u].", i);
				list_table(bmbt_rec_fields, pfx,
					   (const uint8_t *)(d + 1) + i * sizeof(struct mfs_bmbt_rec));
			}
		} else if (d->dformat == MFS_FMT_LOCAL && S_ISDIR(mfs_get16(d->mode))) {
			const uint8_t *l = (const uint8_t *)(d + 1);
			uint64_t pos = MFS_DIR_LOCAL_HDR, end = mfs_get64(d->size);
			char pfx[32];

			if (end > lit)
				end = lit;
			for (uint32_t i = 0; pos + sizeof(struct mfs_dir_lent) <= end; i++) {
				snprintf(pfx, sizeof(pfx), "dirent[%u].", i);
				list_table(dirent_fields, pfx, l + pos);
				if (l[pos + 9])
					printf("dirent[%u].name %u -\n", i, l[pos + 9]);
				pos += sizeof(struct mfs_dir_lent) + l[pos + 9];
			}
		}
	} else if (t.kind == W_BLOCK && t.has_hdr && t.fields == btb_fields) {
		uint32_t magic = mfs_get32(((const struct mfs_blkhdr *)t.base)->magic);
		const struct mfs_btree_block *b = (const void *)t.base;
		uint32_t level = mfs_get16(b->level), nr = mfs_get16(b->numrecs);
		size_t k = 0;

		while (k < sizeof(bt_kinds) / sizeof(bt_kinds[0]) && bt_kinds[k].magic != magic)
			k++;
		if (k < sizeof(bt_kinds) / sizeof(bt_kinds[0])) {
			uint32_t room = t.len - (uint32_t)sizeof(*b);
			uint32_t cap = level ? room / (bt_kinds[k].key_len + bt_kinds[k].ptr_len)
					     : room / bt_kinds[k].rec_len;
			char pfx[32];

			list_table(btb_fields, "", t.base);
			for (uint32_t i = 0; i < nr && i < cap; i++) {
				const uint8_t *recs = t.base + sizeof(*b);

				if (level) {
					snprintf(pfx, sizeof(pfx), "key[%u]", i);
					list_one(pfx, bt_kinds[k].key_len, recs, i * bt_kinds[k].key_len);
					snprintf(pfx, sizeof(pfx), "ptr[%u]", i);
					list_one(pfx, bt_kinds[k].ptr_len, recs,
						 cap * bt_kinds[k].key_len + i * bt_kinds[k].ptr_len);
					continue;
				}
				snprintf(pfx, sizeof(pfx), "rec[%u].", i);
				list_table(bt_kinds[k].rec, pfx, recs + i * bt_kinds[k].rec_len);
			}
		}
	} else if (t.fields != btb_fields) {
		list_table(t.fields, "", t.base);
	}
	wtarget_put(&t);
	return 0;
}

/* Whole blocks of garbage: the CRC is left as it falls (a torn or rotten block). */
static int cmd_trash(int argc, char **argv)
{
	struct mfs_buf *bp;
	uint64_t fsb, count = 1;
	const char *how = "random";
	int err;

	if (refuse_readonly("trash"))
		return 1;
	if (parse_u64(argv[1], &fsb))
		return err_msg(0, "'%s' is not a block number", argv[1]);
	for (int i = 2; i < argc; i++) {
		if (!strcmp(argv[i], "random") || !strcmp(argv[i], "zeroes") ||
		    !strcmp(argv[i], "ones"))
			how = argv[i];
		else if (parse_u64(argv[i], &count) || count == 0)
			return err_msg(0, "trash: '%s' is neither a count nor random|zeroes|ones",
				       argv[i]);
	}
	for (uint64_t b = fsb; b < fsb + count; b++) {
		if (read_raw(b, &bp))
			return 1;
		if (how[0] == 'r')
			for (uint32_t k = 0; k < fs->geo.blocksize; k++)
				((uint8_t *)bp->data)[k] = (uint8_t)db_rand();
		else
			memset(bp->data, how[0] == 'z' ? 0 : 0xff, fs->geo.blocksize);
		mfs_buf_set_meta_state(bp, 0);
		mfs_buf_mark_dirty(bp);
		mfs_buf_put(bp);
	}
	err = mfs_bcache_flush(fs->bc);
	if (err)
		return err_msg(err, "trash: write");
	printf("blocks %" PRIu64 "..%" PRIu64 ": %s\n", fsb, fsb + count - 1, how);
	return 0;
}

/* ---- command table and loop ----------------------------------------------------------------- */

/* ---- metasum ------------------------------------------------------------------------------- */
/*
 * One line per metadata block with a CRC32C of its bytes as they are on disk (not verified:
 * a damaged block is summed like any other), for tests that must show that a failed
 * repair changed nothing: the superblock of every AG (without the fields a mount and an
 * unmount rewrite: its header CRC and LSN, state and wtime), every AG header and free list,
 * every block of the four AG btrees and of every inode chunk.  A tree that cannot be
 * walked gives one line saying so (the same damage gives the same line).
 */
static uint32_t block_sum(const struct mfs_buf *bp)
{
	return mfs_crc32c(0, bp->data, fs->geo.blocksize);
}

static void sum_fixed(const char *what, uint32_t agno, uint32_t agbno)
{
	uint64_t fsb = mfs_agbno_to_fsb(&fs->geo, agno, agbno);
	struct mfs_buf *bp;

	if (mfs_buf_read(fs->bc, fsb, NULL, &bp)) {
		printf("%s %u %" PRIu64 " unreadable\n", what, agno, fsb);
		return;
	}
	if (agbno == MFS_SB_AGBNO) {
		uint8_t *copy = malloc(fs->geo.blocksize);
		struct mfs_sb *sb = (struct mfs_sb *)copy;

		if (!copy) {
			printf("%s %u %" PRIu64 " no memory\n", what, agno, fsb);
			mfs_buf_put(bp);
			return;
		}
		memcpy(copy, bp->data, fs->geo.blocksize);
		memset(&sb->hdr.crc, 0, sizeof(sb->hdr.crc));
		memset(&sb->hdr.lsn, 0, sizeof(sb->hdr.lsn));
		memset(&sb->state, 0, sizeof(sb->state));
		memset(&sb->wtime, 0, sizeof(sb->wtime));
		printf("%s %u %" PRIu64 " %08x\n", what, agno, fsb,
		       mfs_crc32c(0, copy, fs->geo.blocksize));
		free(copy);
	} else {
		printf("%s %u %" PRIu64 " %08x\n", what, agno, fsb, block_sum(bp));
	}
	mfs_buf_put(bp);
}

struct sum_ctx {
	const char *what;
	uint32_t agno;
};

static int sum_block_fn(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	struct sum_ctx *sc = priv;
	struct mfs_buf *bp;

	(void)cur;
	if (mfs_buf_read(fs->bc, fsb, NULL, &bp)) {
		printf("%s %u %" PRIu64 " level %u unreadable\n", sc->what, sc->agno, fsb, level);
		return 0;
	}
	printf("%s %u %" PRIu64 " level %u %08x\n", sc->what, sc->agno, fsb, level,
	       block_sum(bp));
	mfs_buf_put(bp);
	return 0;
}

static int sum_chunk_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_inobt_rec *r = rec;
	uint32_t agno = *(const uint32_t *)priv;
	uint32_t agbno = mfs_agino_to_agbno(&fs->geo, mfs_get32(r->startino));

	(void)cur;
	for (uint32_t b = 0; b < fs->geo.chunkblocks; b++) {
		uint64_t fsb = mfs_agbno_to_fsb(&fs->geo, agno, agbno + b);
		struct mfs_buf *bp;

		if (agbno + b >= mfs_ag_length(&fs->geo, agno)) {
			printf("inodes %u %u+%u past the AG's end\n", agno, agbno, b);
			break;
		}
		if (mfs_buf_read(fs->bc, fsb, NULL, &bp)) {
			printf("inodes %u %" PRIu64 " unreadable\n", agno, fsb);
			continue;
		}
		printf("inodes %u %" PRIu64 " %08x\n", agno, fsb, block_sum(bp));
		mfs_buf_put(bp);
	}
	return 0;
}

static int cmd_metasum(int argc, char **argv)
{
	int rc = 0;

	(void)argc;
	(void)argv;
	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++) {
		struct mfs_btree_cur cur;
		struct mfs_buf *hbp;
		int err;

		sum_fixed("sb", agno, MFS_SB_AGBNO);
		sum_fixed("agh", agno, MFS_AGH_AGBNO);
		sum_fixed("agfl", agno, MFS_AGFL_AGBNO);
		err = mfs_read_agh(fs, agno, &hbp);
		if (err) {
			printf("AG %u header unusable: no tree walked\n", agno);
			rc = err_msg(err, "AG %u header", agno);
			continue;
		}
		for (int t = 0; t < MFS_AG_NTREES; t++) {
			struct sum_ctx sc = { tree_names[t], agno };

			mfs_ag_cur_init(&cur, fs, NULL, agno, (enum mfs_ag_tree)t, hbp);
			err = mfs_btree_visit_blocks(&cur, sum_block_fn, &sc);
			if (!err && t == MFS_BT_INO)
				err = mfs_btree_query_range(&cur, NULL, NULL, sum_chunk_fn, &agno);
			mfs_btree_cur_release(&cur);
			if (err < 0) {
				printf("%s %u walk stopped: %s\n", tree_names[t], agno, errstr(err));
				rc = err_msg(err, "AG %u %s btree", agno, tree_names[t]);
			}
		}
		mfs_buf_put(hbp);
	}
	return rc;
}

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
	{ "check", cmd_check, 0, 2, "[-f] [agno]",
	  "the checkers of repair/ (AG metadata, journal, orphans, counters); -f: and "
	  "every inode, link counts" },
	{ "write", cmd_write, 4, 5, "[-c] OBJ ARG FIELD VALUE",
	  "set a field (-w; OBJ: sb|agh|agfl AGNO, block FSB, inode INO, log N)" },
	{ "fuzz", cmd_fuzz, 4, 6, "[-c] OBJ ARG FIELD VERB [N]",
	  "damage a field (-w; VERB: zeroes ones random add sub bitflip firstbit...)" },
	{ "fields", cmd_fields, 2, 2, "OBJ ARG",
	  "list the fields write and fuzz can name in an object (NAME SIZE VALUE)" },
	{ "trash", cmd_trash, 1, 3, "FSBLOCK [COUNT] [HOW]",
	  "overwrite whole blocks with garbage (-w; HOW: random, zeroes or ones)" },
	{ "metasum", cmd_metasum, 0, 0, "",
	  "a CRC32C of every metadata block (AG headers, trees, inode chunks)" },
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
	fprintf(stderr, "Usage: %s [-w] [-c command]... IMAGE\n"
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
	while ((c = getopt(argc, argv, "c:hw")) != -1) {
		switch (c) {
		case 'c':
			cmds[ncmds++] = optarg;
			break;
		case 'w':
			writable = 1;
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
	err = mfs_fs_open(argv[optind], writable ? MFS_OPEN_EXCL : MFS_OPEN_RDONLY, 0, &fs);
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
