/*
 * mendfs_repair.c — the offline checker and repairer (also installed as fsck.mendfs): every
 * checker of repair/scrub.h on every object of an unmounted filesystem, and the online
 * engine's rebuilders (repair/repair.h) on what they can rebuild, with scratch in a memfd
 * (or an O_TMPFILE file in the directory given with -T).
 *
 * Opening: a primary superblock that is unusable is replaced by the first copy that
 * verifies (MFS_OPEN_SB_COPY), and the primary is then rebuilt from it; a journal that cannot
 * be opened is reset when the filesystem was unmounted cleanly (repair_journal.c).
 *
 * Order: per AG, the superblock copy, header, free list and reverse map are checked first,
 * then the free-space and inode btrees.  A damaged superblock and AG header are rebuilt
 * first, then a damaged free list (from the reverse map and the trees), then a damaged
 * reverse map (from every owner; the other
 * rebuilds trust it), then the free-space and inode btrees when damaged —
 * or when the AG header's counters disagree with them, since a rebuild rewrites those —
 * and the AG is checked again.  Then every inode in use, then the whole-filesystem
 * checks (journal, link counts, orphan lists, summary counters; the superblock's summary
 * counters are rewritten from the AG headers when they disagree, a damaged journal header
 * from the journal in memory).
 *
 * Exit status, as fsck(8): 0 clean, 1 errors corrected, 4 errors left uncorrected,
 * 8 operational error, 16 usage error (bits combine: 1|4 when some were fixed and some not).
 */
#include "ag.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "journal.h"
#include "log.h"
#include "mendfs_format.h"
#include "pressure.h"
#include "repair.h"
#include "scrub.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define EX_CLEAN      0
#define EX_FIXED      1
#define EX_UNFIXED    4
#define EX_OPERROR    8
#define EX_USAGE     16

struct tool {
	const char *image;
	struct mfs_fs *fs;
	int dry_run, verbose;
	const char *tmpdir;
	struct mfs_pressure *pressure;
	unsigned found, fixed, unfixed, operr;
};

struct run {
	struct tool *t;
	const char *prefix;          /* "" or "still: " */
	unsigned n;
};

static const char *type_name(uint32_t type)
{
	static const char *const names[MFS_SCRUB_NTYPES] = {
		"probe", "superblock", "AG header", "AG free list", "bnobt", "cntbt", "inobt",
		"rmapbt", "journal", "inode", "extent map", "directory", "xattrs", "symlink",
		"link counts", "orphan lists", "summary counters",
	};

	return type < MFS_SCRUB_NTYPES ? names[type] : "?";
}

static void on_report(void *arg, uint32_t flag, const char *msg)
{
	struct run *r = arg;
	int bad = !!(flag & (MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT));

	r->n += bad;
	if (bad || r->t->verbose)
		printf("%s%s: %s\n", r->prefix, flag & MFS_SCRUB_OFLAG_CORRUPT ? "corrupt" :
		       flag & MFS_SCRUB_OFLAG_XCORRUPT ? "disagrees" :
		       flag & MFS_SCRUB_OFLAG_INCOMPLETE ? "not checked" :
		       flag & MFS_SCRUB_OFLAG_PREEN ? "could be optimised" : "warning", msg);
}

/* Run one checker: the number of corruptions it reported (printed), or -errno (an
 * operational error, told and counted). */
static int check(struct tool *t, uint32_t type, uint32_t agno, uint64_t ino, const char *prefix)
{
	struct run r = { t, prefix, 0 };
	struct mfs_scrub_ctx ctx;
	int err;

	memset(&ctx, 0, sizeof(ctx));
	ctx.fs = t->fs;
	ctx.type = type;
	ctx.agno = agno;
	ctx.ino = ino;
	ctx.report = on_report;
	ctx.hook_arg = &r;
	err = mfs_scrub(&ctx);
	if (err == -ENOENT && ino)
		return 0;                    /* a free inode */
	if (err) {
		fprintf(stderr, "mendfs_repair: checking the %s (AG %u, inode %llu): %s\n",
			type_name(type), agno, (unsigned long long)ino, strerror(-err));
		t->operr++;
		return err;
	}
	return (int)r.n;
}

/* A scratch descriptor: a memfd, or an unnamed file in -T's directory. */
static int scratch_fd(struct tool *t)
{
	int fd;

	if (t->tmpdir)
		fd = open(t->tmpdir, O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
	else
		fd = memfd_create("mendfs_repair", MFD_CLOEXEC);
	if (fd < 0)
		fprintf(stderr, "mendfs_repair: scratch file%s%s: %s\n", t->tmpdir ? " in " : "",
			t->tmpdir ? t->tmpdir : "", strerror(errno));
	return fd;
}

/* Rebuild one object (AG objects: agno; others: where = ""); 0 when rebuilt (and checked
 * clean by the engine). */
static int rebuild_obj(struct tool *t, uint32_t type, uint32_t agno, const char *where)
{
	struct mfs_repair_ctx *rc = calloc(1, sizeof(*rc));
	int err;

	if (!rc)
		return -ENOMEM;
	rc->fs = t->fs;
	rc->type = type;
	rc->agno = agno;
	rc->fds[0] = scratch_fd(t);
	rc->nfds = 1;
	rc->flags = MFS_REPAIR_OFFLINE;      /* the device is locked: nothing else runs */
	rc->abort = t->pressure ? mfs_pressure_flag(t->pressure) : NULL;
	if (rc->fds[0] < 0) {
		free(rc);
		return -EIO;
	}
	err = mfs_repair(rc);
	if (err)
		printf("%s%s: could not rebuild: %s\n", where, type_name(type), rc->reason);
	else
		printf("%s%s: rebuilt (%llu records, %llu bytes of scratch)\n", where,
		       type_name(type), (unsigned long long)rc->records,
		       (unsigned long long)rc->scratch_used);
	close(rc->fds[0]);
	free(rc);
	return err;
}

static int rebuild(struct tool *t, uint32_t type, uint32_t agno)
{
	char where[32];

	snprintf(where, sizeof(where), "AG %u ", agno);
	return rebuild_obj(t, type, agno, where);
}

static int rebuild_fs(struct tool *t, uint32_t type)
{
	return rebuild_obj(t, type, 0, "");
}

static const uint32_t ag_first[] = { MFS_SCRUB_SB, MFS_SCRUB_AGH, MFS_SCRUB_AGFL,
				     MFS_SCRUB_RMAPBT };
static const uint32_t ag_trees[] = { MFS_SCRUB_BNOBT, MFS_SCRUB_CNTBT, MFS_SCRUB_INOBT };
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static void do_ag(struct tool *t, uint32_t agno)
{
	unsigned bad_first = 0, bad_tree[NELEM(ag_trees)] = { 0 }, total, left = 0;
	int sb_bad = 0, agh_bad = 0, rmap_bad = 0, agfl_bad = 0, agfl_ok = 0, rebuilt = 0;

	for (size_t i = 0; i < NELEM(ag_first); i++) {
		int n = check(t, ag_first[i], agno, 0, "");

		if (n > 0) {
			bad_first += (unsigned)n;
			sb_bad |= ag_first[i] == MFS_SCRUB_SB;
			agh_bad |= ag_first[i] == MFS_SCRUB_AGH;
			rmap_bad |= ag_first[i] == MFS_SCRUB_RMAPBT;
			agfl_bad |= ag_first[i] == MFS_SCRUB_AGFL;
		}
	}
	for (size_t i = 0; i < NELEM(ag_trees); i++) {
		int n = check(t, ag_trees[i], agno, 0, "");

		bad_tree[i] = n > 0 ? (unsigned)n : 0;
	}
	total = bad_first + bad_tree[0] + bad_tree[1] + bad_tree[2];
	t->found += total;
	if (!total || t->dry_run) {
		t->unfixed += total;
		return;
	}
	/* The superblock (from the geometry in use) and the AG header (its roots found, its
	 * counters recomputed) first: every other rebuild reads the header.  Then the reverse
	 * map: the other rebuilds trust it.  The header's counters are rewritten by the
	 * rebuilds too: a header that disagrees is worth a rebuild of both kinds of tree. */
	if (sb_bad)
		rebuilt |= rebuild(t, MFS_SCRUB_SB, agno) == 0;
	if (agh_bad)
		rebuilt |= rebuild(t, MFS_SCRUB_AGH, agno) == 0;
	if (agfl_bad)
		rebuilt |= agfl_ok = rebuild(t, MFS_SCRUB_AGFL, agno) == 0;
	if (rmap_bad)
		rebuilt |= rebuild(t, MFS_SCRUB_RMAPBT, agno) == 0;
	if (agfl_bad && !agfl_ok)            /* it needed the reverse map */
		rebuilt |= rebuild(t, MFS_SCRUB_AGFL, agno) == 0;
	if (bad_tree[0] || bad_tree[1] || agh_bad)
		rebuilt |= rebuild(t, MFS_SCRUB_BNOBT, agno) == 0;
	if (bad_tree[2] || agh_bad)
		rebuilt |= rebuild(t, MFS_SCRUB_INOBT, agno) == 0;
	for (size_t i = 0; i < NELEM(ag_first); i++) {
		int n = check(t, ag_first[i], agno, 0, "still ");

		left += n > 0 ? (unsigned)n : 0;
	}
	for (size_t i = 0; i < NELEM(ag_trees); i++) {
		int n = check(t, ag_trees[i], agno, 0, "still ");

		left += n > 0 ? (unsigned)n : 0;
	}
	if (left) {
		t->unfixed += left;
		t->fixed += rebuilt && total > left ? total - left : 0;
	} else {
		t->fixed += total;
	}
}

/* Every inode in use of AG agno (from its inode btree, if it can be read), checked. */
struct inode_walk {
	struct tool *t;
	uint32_t agno;
};

static int inode_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	static const uint32_t types[] = { MFS_SCRUB_INODE, MFS_SCRUB_BMAP, MFS_SCRUB_DIR,
					  MFS_SCRUB_XATTR, MFS_SCRUB_SYMLINK };
	const struct mfs_inobt_rec *ir = rec;
	struct inode_walk *w = priv;
	uint64_t mask = mfs_get64(ir->freemask);

	for (unsigned i = 0; i < MFS_INODES_PER_CHUNK; i++) {
		uint64_t ino = mfs_agino_to_ino(&cur->fs->geo, w->agno,
						mfs_get32(ir->startino) + i);

		if (mask >> i & 1 || mfs_ino_check(cur->fs, ino))
			continue;
		for (size_t k = 0; k < NELEM(types); k++) {
			int n = check(w->t, types[k], 0, ino, "");

			if (n > 0) {
				w->t->found += (unsigned)n;
				w->t->unfixed += (unsigned)n;
			}
		}
	}
	return 0;
}

static void do_inodes(struct tool *t, uint32_t agno)
{
	struct inode_walk w = { t, agno };
	struct mfs_btree_cur cur;
	struct mfs_buf *hbp;
	int err = mfs_read_agh(t->fs, agno, &hbp);

	if (!err) {
		mfs_ag_cur_init(&cur, t->fs, NULL, agno, MFS_BT_INO, hbp);
		err = mfs_btree_query_range(&cur, NULL, NULL, inode_fn, &w);
		mfs_btree_cur_release(&cur);
		mfs_buf_put(hbp);
	}
	if (err) {
		printf("not checked: the inodes of AG %u (its header or inode btree: %s)\n", agno,
		       strerror(-err));
		t->unfixed++;
	}
}

/*
 * The journal could not be opened (its header, or a record in it, is damaged): open without
 * it, check it, reset it when the filesystem was unmounted cleanly (repair_journal.c says
 * why not otherwise), and open again with it.
 */
static int open_reset_journal(struct tool *t, unsigned flags)
{
	int n, err = mfs_fs_open(t->image, flags & ~MFS_OPEN_JOURNAL, 0, &t->fs);

	if (err)
		return err;
	n = check(t, MFS_SCRUB_JOURNAL, 0, 0, "");
	if (n > 0) {
		t->found += (unsigned)n;
		if (rebuild_fs(t, MFS_SCRUB_JOURNAL) == 0)
			t->fixed += (unsigned)n;
		else
			t->unfixed += (unsigned)n;
	}
	err = mfs_fs_close(t->fs);
	t->fs = NULL;
	if (!err)
		err = mfs_fs_open(t->image, flags, 0, &t->fs);
	return err;
}

/* A whole-filesystem object: checked, and rebuilt when damaged and the engine can. */
static void do_fs(struct tool *t, uint32_t type)
{
	int n = check(t, type, 0, 0, "");

	if (n <= 0)
		return;
	t->found += (unsigned)n;
	if (!t->dry_run && mfs_repair_supported(type) && rebuild_fs(t, type) == 0 &&
	    check(t, type, 0, 0, "still ") == 0)
		t->fixed += (unsigned)n;
	else
		t->unfixed += (unsigned)n;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: mendfs_repair [-n] [-v] [-T dir] image|device\n"
		"  -n      check only, change nothing\n"
		"  -v      verbose: every finding, also warnings\n"
		"  -T dir  scratch files in dir (O_TMPFILE) instead of memory (memfd)\n"
		"exit: 0 clean, 1 fixed, 4 left uncorrected, 8 operational error, 16 usage\n");
}

int main(int argc, char **argv)
{
	struct tool t;
	unsigned flags = MFS_OPEN_EXCL | MFS_OPEN_SB_COPY;
	int c, err, ex;

	memset(&t, 0, sizeof(t));
	while ((c = getopt(argc, argv, "hnvT:apyfC:")) != -1) {
		switch (c) {
		case 'a':                    /* fsck(8)'s: repair without asking, as always */
		case 'p':
		case 'y':
		case 'f':                    /* force a check: every run checks everything */
		case 'C':                    /* progress descriptor: not drawn */
			break;
		case 'n':
			t.dry_run = 1;
			break;
		case 'v':
			t.verbose = 1;
			break;
		case 'T':
			t.tmpdir = optarg;
			break;
		case 'h':
			usage(stdout);
			return EX_CLEAN;
		default:
			usage(stderr);
			return EX_USAGE;
		}
	}
	if (optind != argc - 1) {
		usage(stderr);
		return EX_USAGE;
	}
	t.image = argv[optind];
	flags |= t.dry_run ? MFS_OPEN_RDONLY : MFS_OPEN_JOURNAL;
	err = mfs_fs_open(t.image, flags, 0, &t.fs);
	if (mfs_is_corruption(err) && !t.dry_run)
		err = open_reset_journal(&t, flags);
	if (err) {
		fprintf(stderr, "mendfs_repair: %s: cannot open%s: %s\n", t.image,
			err == -EBUSY ? " (mounted, or in use by another mendfs program)" : "",
			strerror(-err));
		return EX_OPERROR | (t.unfixed ? EX_UNFIXED : 0);   /* a journal not reset */
	}
	if (t.dry_run) {
		struct mfs_journal_info ji;

		if (mfs_journal_peek(t.fs, &ji) == 0 && ji.records) {
			printf("the journal holds %llu committed transactions not yet applied: "
			       "the check below sees the filesystem without them (mount it once, "
			       "or run without -n, to apply them)\n",
			       (unsigned long long)ji.records);
			t.found++;
			t.unfixed++;
		}
	}
	err = mfs_icache_init(t.fs, 0);
	if (err) {
		fprintf(stderr, "mendfs_repair: %s: %s\n", t.image, strerror(-err));
		mfs_fs_close(t.fs);
		return EX_OPERROR;
	}
	if (!t.dry_run && mfs_pressure_start(NULL, &t.pressure) != 0)
		t.pressure = NULL;
	for (uint32_t agno = 0; agno < t.fs->geo.agcount; agno++)
		do_ag(&t, agno);
	/* The orphan lists depend on nothing but the inodes' link counts: settled before the
	 * inodes are checked, since an inode without links is looked up on its list (the link
	 * count rebuild after keeps them right: an inode given links back leaves its list in
	 * the same transaction). */
	do_fs(&t, MFS_SCRUB_ORPHANS);
	for (uint32_t agno = 0; agno < t.fs->geo.agcount; agno++)
		do_inodes(&t, agno);
	{
		static const uint32_t fs_types[] = { MFS_SCRUB_JOURNAL, MFS_SCRUB_NLINKS,
						     MFS_SCRUB_SUMMARY };

		for (size_t i = 0; i < NELEM(fs_types); i++)
			do_fs(&t, fs_types[i]);
	}
	mfs_pressure_stop(t.pressure);
	err = mfs_icache_destroy(t.fs);
	if (!err)
		err = mfs_fs_close(t.fs);
	else
		mfs_fs_close(t.fs);
	if (err) {
		fprintf(stderr, "mendfs_repair: %s: closing: %s\n", t.image, strerror(-err));
		t.operr++;
	}
	ex = (t.fixed ? EX_FIXED : 0) | (t.unfixed ? EX_UNFIXED : 0) |
	     (t.operr ? EX_OPERROR : 0);
	if (t.verbose || t.found || t.operr)
		printf("%s: %u problem(s) found, %u fixed, %u left%s\n", t.image, t.found,
		       t.fixed, t.unfixed, t.operr ? ", and operational errors" : "");
	return ex;
}
