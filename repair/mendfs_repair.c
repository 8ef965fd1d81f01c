/*
 * mendfs_repair.c — the offline checker and repairer (also installed as fsck.mendfs): every
 * checker of repair/scrub.h on every object of an unmounted filesystem, and the online
 * engine's rebuilders (repair/repair.h) on every object they can rebuild, with scratch in a
 * memfd (or an O_TMPFILE file in the directory given with -T).
 *
 * Opening: a primary superblock that is unusable is replaced by the first copy that
 * verifies (MFS_OPEN_SB_COPY), and the primary is then rebuilt from it; a journal that cannot
 * be opened is reset when the filesystem was unmounted cleanly (repair_journal.c).
 *
 * A pass checks every object, and (unless -n) rebuilds each damaged one as soon as what it
 * is rebuilt from has had its turn, in this order — later steps trust the earlier ones:
 *   1. per AG: superblock copy, AG header, reverse map, free list, free-space trees, inode
 *      btree (the header first, then the reverse map, the free list, the reverse map again
 *      when it refused for the list's sake, both free-space trees, the inode btree; the
 *      trees also when the header's counters disagree with them);
 *   2. the orphan lists (the check of an inode without links looks it up on its list);
 *   3. every inode in use, listed from the inode btrees chunk by chunk (the listing starts
 *      again after each chunk, so that rebuilds that free or allocate inodes meanwhile do not
 *      disturb it): its core (an inode beyond repair is freed), then its extent map (from
 *      the reverse map), its extended attributes and its symbolic link target;
 *   4. every directory, once every inode has been set right (a directory check looks at the
 *      inodes its entries name);
 *   5. link counts (an inode no directory names goes to /lost+found), the orphan lists again
 *      when anything was rebuilt since step 2, the journal, the summary counters.
 * A rebuild may be refused because what it is rebuilt from is damaged too (a reverse map
 * whose disagreement is an owner's damaged extent map, set right in step 3): so when the
 * first pass found anything, a second pass checks everything again and rebuilds what is
 * still damaged (when the first rebuilt anything: else it only checks); when that second
 * pass rebuilt anything, a last check-only pass says what is left.  The engine's hooks for a daemon (quiesce, changed, cancelled) stay NULL: nobody
 * else uses the filesystem (the device is locked) and no kernel caches its inodes.  Memory
 * pressure stops a rebuild before its commit (nothing changed): it is tried again, a few
 * times, once the pressure is gone.
 *
 * Exit status, as fsck(8): 0 clean, 1 errors corrected, 4 errors left uncorrected (-n:
 * anything found), 8 operational error, 16 usage error (bits combine: 1|4 when some were
 * fixed and some not).
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
#include "mem.h"
#include "mendfs_format.h"
#include "pressure.h"
#include "repair.h"
#include "scrub.h"
#include "scrub_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define EX_CLEAN      0
#define EX_FIXED      1
#define EX_UNFIXED    4
#define EX_OPERROR    8
#define EX_USAGE     16

#define INODE_BATCH   256u      /* inodes listed at a time (one AG, from a cursor) */
#define PRESSURE_TRIES  4u      /* a rebuild memory pressure stopped is tried this often */

struct tool {
	const char *image;
	struct mfs_fs *fs;
	int dry_run, verbose;
	const char *tmpdir;
	struct mfs_pressure *pressure;
	int scratch;                 /* the scratch descriptor, made at the first rebuild */
	/* the pass in progress */
	int repairing;               /* it rebuilds what it finds damaged */
	const char *prefix;          /* before each finding it prints */
	unsigned damaged;            /* objects it found damaged */
	unsigned rebuilt;            /* rebuilds that succeeded, in every pass */
	unsigned operr;              /* checks or rebuilds that could not run */
	uint8_t *rmap_left;          /* [agno]: a damaged reverse map whose rebuild could not
	                                run (see rmap_holds); NULL until one is */
};

struct run {
	struct tool *t;
	unsigned n;
};

static const char *type_name(uint32_t type)
{
	static const char *const names[MFS_SCRUB_NTYPES] = {
		"probe", "superblock", "AG header", "AG free list", "bnobt", "cntbt", "inobt",
		"rmapbt", "journal", "inode record", "extent map", "directory", "xattrs",
		"symlink", "link counts", "orphan lists", "summary counters",
	};

	return type < MFS_SCRUB_NTYPES ? names[type] : "?";
}

static int is_ag_type(uint32_t type)
{
	return type >= MFS_SCRUB_SB && type <= MFS_SCRUB_RMAPBT;
}

/* "AG 2 bnobt", "inode 134 extent map", "link counts". */
static void obj_name(char *buf, size_t len, uint32_t type, uint32_t agno, uint64_t ino)
{
	if (ino)
		snprintf(buf, len, "inode %llu %s", (unsigned long long)ino, type_name(type));
	else if (is_ag_type(type))
		snprintf(buf, len, "AG %u %s", agno, type_name(type));
	else
		snprintf(buf, len, "%s", type_name(type));
}

/* The library's messages: on stderr, each at most once in a while (a damaged inode is
 * reported by the loader every time a checker tries it); all of them with -v. */
#define LOG_RECENT 16u
static struct {
	int verbose;
	unsigned next;
	char recent[LOG_RECENT][160];
} logs;

static void log_sink(int level, const char *msg, void *priv)
{
	(void)level;
	(void)priv;
	if (!logs.verbose) {
		for (unsigned i = 0; i < LOG_RECENT; i++)
			if (strncmp(logs.recent[i], msg, sizeof(logs.recent[i]) - 1) == 0)
				return;
		snprintf(logs.recent[logs.next], sizeof(logs.recent[0]), "%s", msg);
		logs.next = (logs.next + 1) % LOG_RECENT;
	}
	fprintf(stderr, "mendfs_repair: %s\n", msg);
}

static void on_report(void *arg, uint32_t flag, const char *msg)
{
	struct run *r = arg;
	int bad = !!(flag & (MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT));

	r->n += bad;
	if (bad || r->t->verbose)
		printf("%s%s: %s\n", r->t->prefix, flag & MFS_SCRUB_OFLAG_CORRUPT ? "corrupt" :
		       flag & MFS_SCRUB_OFLAG_XCORRUPT ? "disagrees" :
		       flag & MFS_SCRUB_OFLAG_INCOMPLETE ? "not checked" :
		       flag & MFS_SCRUB_OFLAG_PREEN ? "could be optimised" : "warning", msg);
}

/* Run one checker: the number of corruptions it reported (printed), or -errno (an
 * operational error, told and counted).  A free inode is clean (0). */
static int check(struct tool *t, uint32_t type, uint32_t agno, uint64_t ino)
{
	struct run r = { t, 0 };
	struct mfs_scrub_ctx ctx;
	char name[64];
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
		return 0;                    /* a free inode (maybe freed by its rebuild) */
	if (err) {
		obj_name(name, sizeof(name), type, agno, ino);
		fprintf(stderr, "mendfs_repair: checking the %s: %s\n", name, strerror(-err));
		t->operr++;
		return err;
	}
	return (int)r.n;
}

/* The scratch descriptor, made once: a memfd, or an unnamed file in -T's directory (the
 * engine gives back what a rebuild used, so every rebuild can have it). */
static int scratch_fd(struct tool *t)
{
	if (t->scratch >= 0)
		return t->scratch;
	if (t->tmpdir)
		t->scratch = open(t->tmpdir, O_TMPFILE | O_RDWR | O_EXCL | O_CLOEXEC, 0600);
	else
		t->scratch = memfd_create("mendfs_repair", MFD_CLOEXEC);
	if (t->scratch < 0)
		fprintf(stderr, "mendfs_repair: scratch file%s%s: %s\n", t->tmpdir ? " in " : "",
			t->tmpdir ? t->tmpdir : "", strerror(errno));
	return t->scratch;
}

/* Memory pressure stopped a rebuild (nothing changed): wait for it to pass, a little
 * longer each time, before the next try. */
static void pressure_pause(unsigned try)
{
	struct timespec ts = { 0, 250000000L * (long)try };

	while (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	nanosleep(&ts, NULL);
}

/*
 * The free list, the free-space trees and the inode btree of an AG are rebuilt from its
 * reverse map, every fork's blocks (extent maps, directories, symlinks, xattrs) from the
 * reverse maps of all AGs (mfs_scrub_from_rmap).  A reverse map found damaged whose own
 * rebuild could not run (memory pressure, no memory or scratch: not a refusal after
 * looking, which leaves the disagreement to the rebuilds after it) would write its damage
 * into them — a record moved onto free space gives a file's block away, an "ag" record
 * moved onto a file's block puts that block on the free list — so they wait for it: 1
 * (and the AG in *held) when type in agno waits for a reverse map so left.  The second
 * pass tries that reverse map again.
 */
static int rmap_holds(const struct tool *t, uint32_t type, uint32_t agno, uint32_t *held)
{
	uint32_t lo = 0, hi = t->fs->geo.agcount;

	if (!t->rmap_left)
		return 0;
	switch (mfs_scrub_from_rmap(type)) {
	case 1:                 /* that AG's map */
		lo = agno;
		hi = agno + 1 < hi ? agno + 1 : hi;
		break;
	case 2:                 /* every AG's */
		break;
	default:
		return 0;
	}
	for (uint32_t a = lo; a < hi; a++)
		if (t->rmap_left[a]) {
			*held = a;
			return 1;
		}
	return 0;
}

/* After a reverse map's rebuild: err 0 lets what it held go on; an error that stopped it
 * before it could look holds them (rmap_holds). */
static void rmap_settle(struct tool *t, uint32_t agno, int err)
{
	int unseen = mfs_repair_err_unseen(err);

	if (agno >= t->fs->geo.agcount)
		return;
	if (!t->rmap_left && unseen)
		t->rmap_left = mfs_calloc(t->fs->geo.agcount, 1);
	if (t->rmap_left)
		t->rmap_left[agno] = (uint8_t)unseen;
}

/*
 * Rebuild one object with the engine: 0 when rebuilt (and checked clean by the engine), or
 * its error.  Offline, the hooks a daemon gives (quiesce, changed, cancelled) are NULL —
 * nothing else runs, no kernel caches the inodes — and MFS_REPAIR_OFFLINE says so.
 */
static int rebuild(struct tool *t, uint32_t type, uint32_t agno, uint64_t ino)
{
	struct mfs_repair_ctx *rc;
	char name[64];
	uint32_t held;
	int err = -ENOMEM;

	obj_name(name, sizeof(name), type, agno, ino);
	if (rmap_holds(t, type, agno, &held)) {
		printf("%s: not rebuilt: it is rebuilt from the reverse map of AG %u, found damaged, "
		       "whose own rebuild could not run\n", name, held);
		return -EAGAIN;
	}
	rc = scratch_fd(t) < 0 ? NULL : mfs_calloc(1, sizeof(*rc));
	if (!rc) {
		printf("%s: could not rebuild: %s\n", name, t->scratch < 0 ? "no scratch file" :
		       "out of memory");
		t->operr++;
		err = t->scratch < 0 ? -EIO : -ENOMEM;
		if (type == MFS_SCRUB_RMAPBT)
			rmap_settle(t, agno, err);
		return err;
	}
	for (unsigned try = 0; try < PRESSURE_TRIES; try++) {
		memset(rc, 0, sizeof(*rc));
		rc->fs = t->fs;
		rc->type = type;
		rc->agno = agno;
		rc->ino = ino;
		rc->fds[0] = t->scratch;
		rc->nfds = 1;
		rc->flags = MFS_REPAIR_OFFLINE;      /* the device is locked: nothing else runs */
		if (t->pressure) {
			mfs_pressure_reset(t->pressure);
			rc->abort = mfs_pressure_flag(t->pressure);
		}
		err = mfs_repair(rc);
		if (err != -ECANCELED || !t->pressure || !mfs_pressure_aborted(t->pressure))
			break;
		printf("%s: stopped by memory pressure before any change%s\n", name,
		       try + 1 < PRESSURE_TRIES ? ", tried again" : "");
		pressure_pause(try + 1);
	}
	if (err == -ENOENT && ino) {
		err = 0;                     /* freed since it was listed: nothing to rebuild */
	} else if (err) {
		printf("%s: could not rebuild: %s\n", name, rc->reason);
	} else {
		printf("%s: rebuilt (%llu records, %llu bytes of scratch)\n", name,
		       (unsigned long long)rc->records, (unsigned long long)rc->scratch_used);
		t->rebuilt++;
	}
	free(rc);
	if (type == MFS_SCRUB_RMAPBT)
		rmap_settle(t, agno, err);
	return err;
}

/* Check one object; rebuild it when damaged (and the pass repairs).  Its findings. */
static int fix(struct tool *t, uint32_t type, uint32_t agno, uint64_t ino)
{
	int n = check(t, type, agno, ino);

	if (n <= 0)
		return n;
	t->damaged++;
	if (t->repairing && mfs_repair_supported(type))
		rebuild(t, type, agno, ino);
	return n;
}

/* ---- one AG's objects ----------------------------------------------------------------------- */
static const uint32_t ag_types[] = { MFS_SCRUB_SB, MFS_SCRUB_AGH, MFS_SCRUB_AGFL,
				     MFS_SCRUB_RMAPBT, MFS_SCRUB_BNOBT, MFS_SCRUB_CNTBT,
				     MFS_SCRUB_INOBT };
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))

static void do_ag(struct tool *t, uint32_t agno)
{
	unsigned bad[MFS_SCRUB_NTYPES] = { 0 };
	int rmap_ok = 0, agfl_ok = 0;

	for (size_t i = 0; i < NELEM(ag_types); i++) {
		int n = check(t, ag_types[i], agno, 0);

		if (n > 0) {
			bad[ag_types[i]] = (unsigned)n;
			t->damaged++;
		} else if (n == 0 && ag_types[i] == MFS_SCRUB_RMAPBT) {
			rmap_settle(t, agno, 0);     /* set right since: what it held goes on */
		}
	}
	if (!t->repairing)
		return;
	/* The superblock (from the geometry in use) and the AG header (its roots found, its
	 * counters recomputed) first: every other rebuild reads the header.  Then the reverse
	 * map: the other rebuilds trust it — the free list too (its stock is the map's "ag"
	 * blocks: held with the others when the map's rebuild could not run).  The map's
	 * rebuild reads the free list as it is and refuses when the list is what is wrong: it
	 * is tried again once the list is rebuilt.  The header's counters are rewritten by the
	 * tree rebuilds too: a header that disagrees is worth a rebuild of both kinds of
	 * tree. */
	if (bad[MFS_SCRUB_SB])
		rebuild(t, MFS_SCRUB_SB, agno, 0);
	if (bad[MFS_SCRUB_AGH])
		rebuild(t, MFS_SCRUB_AGH, agno, 0);
	if (bad[MFS_SCRUB_RMAPBT])
		rmap_ok = rebuild(t, MFS_SCRUB_RMAPBT, agno, 0) == 0;
	if (bad[MFS_SCRUB_AGFL])
		agfl_ok = rebuild(t, MFS_SCRUB_AGFL, agno, 0) == 0;
	if (bad[MFS_SCRUB_RMAPBT] && !rmap_ok && agfl_ok)   /* it needed the free list */
		rebuild(t, MFS_SCRUB_RMAPBT, agno, 0);
	if (bad[MFS_SCRUB_BNOBT] || bad[MFS_SCRUB_CNTBT] || bad[MFS_SCRUB_AGH])
		rebuild(t, MFS_SCRUB_BNOBT, agno, 0);
	if (bad[MFS_SCRUB_INOBT] || bad[MFS_SCRUB_AGH])
		rebuild(t, MFS_SCRUB_INOBT, agno, 0);
}

/* ---- the inodes ------------------------------------------------------------------------------ */
/* A batch of inodes in use of one AG, from a cursor on, with the mode their records hold
 * (maybe damaged: the checkers say). */
struct ibatch {
	uint64_t cursor;             /* first inode number wanted */
	uint64_t ino[INODE_BATCH];
	uint16_t mode[INODE_BATCH];
	unsigned n;
};

static int batch_fn(void *priv, uint64_t ino, const struct mfs_dinode *d, int isfree)
{
	struct ibatch *b = priv;

	if (isfree || ino < b->cursor)
		return 0;
	if (b->n == INODE_BATCH)
		return 1;                    /* full: this inode starts the next batch */
	b->ino[b->n] = ino;
	b->mode[b->n] = mfs_get16(d->mode);
	b->n++;
	return 0;
}

struct bwalk {
	struct mfs_scrub_ctx sc;     /* scrub_chunk_walk's context: only the filesystem */
	uint32_t agno;
	struct ibatch *b;
	uint64_t bad_fsb;
};

static int bwalk_chunk(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	struct bwalk *w = priv;

	(void)cur;
	return scrub_chunk_walk(&w->sc, w->agno, rec, batch_fn, w->b, &w->bad_fsb);
}

/* The next batch of AG agno's inodes in use from b->cursor on (b->n = 0: none left); the
 * AG locked meanwhile, as the daemon's listing does. */
static int next_batch(struct tool *t, uint32_t agno, struct ibatch *b)
{
	struct mfs_fs *fs = t->fs;
	uint32_t agino = mfs_ino_to_agino(&fs->geo, b->cursor);
	struct mfs_inobt_key lo;
	struct mfs_btree_cur cur;
	struct mfs_buf *hbp;
	struct bwalk w;
	int err;

	memset(&w, 0, sizeof(w));
	w.sc.fs = fs;
	w.agno = agno;
	w.b = b;
	b->n = 0;
	/* The chunk holding the cursor starts at most 63 inodes before it. */
	mfs_put32(lo.startino, agino >= MFS_INODES_PER_CHUNK ?
		  agino - (MFS_INODES_PER_CHUNK - 1) : 0);
	mfs_ag_lock(fs, agno, MFS_AGL_ALL);
	err = mfs_read_agh(fs, agno, &hbp);
	if (!err) {
		mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_INO, hbp);
		err = mfs_btree_query_range(&cur, &lo, NULL, bwalk_chunk, &w);
		mfs_btree_cur_release(&cur);
		mfs_buf_put(hbp);
	}
	mfs_ag_unlock(fs, agno, MFS_AGL_ALL);
	if (err < 0) {
		printf("%snot checked: the inodes of AG %u from inode %llu on (its header, inode "
		       "btree or inode block %llu: %s)\n", t->prefix, agno,
		       (unsigned long long)b->cursor, (unsigned long long)w.bad_fsb,
		       strerror(-err));
		t->damaged++;
		return err;
	}
	return 0;
}

/* One inode's objects: dirs = 0 its core, extent map, attributes and symlink target (as
 * mendfs_scrub's phase 3: the forks of a record whose mode is 0 are its check's to
 * report); dirs = 1 its directory (phase 4). */
static void do_inode(struct tool *t, uint64_t ino, uint16_t mode, int dirs)
{
	if (dirs) {
		if (S_ISDIR(mode))
			fix(t, MFS_SCRUB_DIR, 0, ino);
		return;
	}
	fix(t, MFS_SCRUB_INODE, 0, ino);
	if (!mode)
		return;
	fix(t, MFS_SCRUB_BMAP, 0, ino);
	fix(t, MFS_SCRUB_XATTR, 0, ino);
	if (S_ISLNK(mode))
		fix(t, MFS_SCRUB_SYMLINK, 0, ino);
}

static void do_inodes(struct tool *t, int dirs)
{
	struct ibatch *b = mfs_malloc(sizeof(*b));
	const struct mfs_geom *g = &t->fs->geo;

	if (!b) {
		fprintf(stderr, "mendfs_repair: out of memory: the inodes are not checked\n");
		t->operr++;
		return;
	}
	for (uint32_t agno = 0; agno < g->agcount; agno++) {
		b->cursor = mfs_agino_to_ino(g, agno, 0);
		while (next_batch(t, agno, b) == 0 && b->n) {
			/* The mode each record held when listed: an inode record's rebuild
			 * keeps the file type (or frees the inode: its checks then pass). */
			for (unsigned i = 0; i < b->n; i++)
				do_inode(t, b->ino[i], b->mode[i], dirs);
			b->cursor = b->ino[b->n - 1] + 1;
		}
	}
	free(b);
}

/* ---- passes ------------------------------------------------------------------------------------ */
/* Every object once, in the order of the file's top comment; the damaged objects found. */
static unsigned pass(struct tool *t, int repairing, const char *prefix)
{
	unsigned rebuilt0;

	t->repairing = repairing;
	t->prefix = prefix;
	t->damaged = 0;
	for (uint32_t agno = 0; agno < t->fs->geo.agcount; agno++)
		do_ag(t, agno);
	fix(t, MFS_SCRUB_ORPHANS, 0, 0);
	rebuilt0 = t->rebuilt;
	do_inodes(t, 0);
	do_inodes(t, 1);
	fix(t, MFS_SCRUB_NLINKS, 0, 0);
	/* The link-count rebuild keeps the orphan lists right, but an inode freed or rebuilt
	 * since step 2 may have left one wrong: checked again then. */
	if (t->rebuilt != rebuilt0)
		fix(t, MFS_SCRUB_ORPHANS, 0, 0);
	fix(t, MFS_SCRUB_JOURNAL, 0, 0);
	fix(t, MFS_SCRUB_SUMMARY, 0, 0);
	return t->damaged;
}

/*
 * The journal could not be opened (its header, or a record in it, is damaged): open without
 * it, check it, reset it when the filesystem was unmounted cleanly (repair_journal.c says
 * why not otherwise), and open again with it.  *found / *left: 1 when it was damaged / still
 * is.
 */
static int open_reset_journal(struct tool *t, unsigned flags, unsigned *found, unsigned *left)
{
	int n, err = mfs_fs_open(t->image, flags & ~MFS_OPEN_JOURNAL, 0, &t->fs);

	if (err)
		return err;
	t->prefix = "";
	n = check(t, MFS_SCRUB_JOURNAL, 0, 0);
	if (n > 0) {
		*found = 1;
		*left = rebuild(t, MFS_SCRUB_JOURNAL, 0, 0) != 0;
	}
	err = mfs_fs_close(t->fs);
	t->fs = NULL;
	if (!err)
		err = mfs_fs_open(t->image, flags, 0, &t->fs);
	return err;
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
	unsigned flags = MFS_OPEN_EXCL | MFS_OPEN_SB_COPY, found = 0, left = 0, passes = 0;
	int c, err, ex;

	mfs_mem_tune();                      /* before any thread: see mem.h */
	/* Lines whole, in order with the library's messages on stderr (2>&1 logs, tests). */
	setvbuf(stdout, NULL, _IOLBF, 0);
	memset(&t, 0, sizeof(t));
	t.scratch = -1;
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
	/* A scratch directory that cannot hold one is said before anything is looked at. */
	if (!t.dry_run && t.tmpdir && scratch_fd(&t) < 0)
		return EX_OPERROR;
	logs.verbose = t.verbose;
	mfs_log_set_sink(log_sink, NULL);
	flags |= t.dry_run ? MFS_OPEN_RDONLY : MFS_OPEN_JOURNAL;
	err = mfs_fs_open(t.image, flags, 0, &t.fs);
	if (mfs_is_corruption(err) && !t.dry_run)
		err = open_reset_journal(&t, flags, &found, &left);
	if (err) {
		fprintf(stderr, "mendfs_repair: %s: cannot open%s: %s\n", t.image,
			err == -EBUSY ? " (mounted, or in use by another mendfs program)" : "",
			strerror(-err));
		if (t.scratch >= 0)
			close(t.scratch);
		return EX_OPERROR | (left ? EX_UNFIXED : 0);   /* a journal not reset */
	}
	if (t.dry_run) {
		struct mfs_journal_info ji;

		if (mfs_journal_peek(t.fs, &ji) == 0 && ji.records) {
			printf("the journal holds %llu committed transactions not yet applied: "
			       "the check below sees the filesystem without them (mount it once, "
			       "or run without -n, to apply them)\n",
			       (unsigned long long)ji.records);
			found++;
			left++;
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
	/* -n: one pass, what it finds is left.  Else a first pass repairs; a second one checks
	 * everything again and rebuilds what is still damaged (a rebuild the first refused
	 * because what it is rebuilt from was damaged too) — only checks when the first
	 * rebuilt nothing; when the second rebuilt anything, a last pass only checks.  The
	 * last pass that rebuilt nothing says what is left. */
	/* A rebuild's reap cut short by a crash: finished first, as a mount would.  One that
	 * cannot run yet (what it is rebuilt from is damaged too: logged) is no operational
	 * error: the pass finds the mark (the by-block tree's check) and rebuilds in order. */
	if (!t.dry_run) {
		uint32_t nreaped = 0;

		(void)mfs_repair_reap_pending(t.fs, MFS_REPAIR_OFFLINE, &nreaped);
		if (nreaped)
			printf("freed the old tree blocks of %u interrupted rebuild%s\n", nreaped,
			       nreaped == 1 ? "" : "s");
		found += nreaped;
	}
	found += pass(&t, !t.dry_run, "");
	passes = 1;
	if (t.dry_run) {
		left += t.damaged;
	} else if (found > left) {
		/* Without a rebuild in the first pass, another would meet what they met. */
		unsigned rebuilt = t.rebuilt, n = pass(&t, t.rebuilt > 0, "still ");

		passes++;
		if (n && t.rebuilt != rebuilt) {
			n = pass(&t, 0, "left after repair: ");
			passes++;
		}
		left += n;
	}
	mfs_pressure_stop(t.pressure);
	free(t.rmap_left);
	if (t.scratch >= 0)
		close(t.scratch);
	err = mfs_icache_destroy(t.fs);
	if (!err)
		err = mfs_fs_close(t.fs);
	else
		mfs_fs_close(t.fs);
	if (err) {
		fprintf(stderr, "mendfs_repair: %s: closing: %s\n", t.image, strerror(-err));
		t.operr++;
	}
	ex = (left ? EX_UNFIXED : found ? EX_FIXED : 0) | (left && t.rebuilt ? EX_FIXED : 0) |
	     (t.operr ? EX_OPERROR : 0);
	if (t.verbose || found || t.operr)
		printf("%s: %u damaged object(s) found, %u rebuilt, %u left damaged (%u "
		       "pass%s)%s\n", t.image, found, t.rebuilt, left, passes,
		       passes > 1 ? "es" : "", t.operr ? ", and operational errors" : "");
	return ex;
}
