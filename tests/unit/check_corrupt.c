/*
 * check_corrupt.c — randomized corruption of every kind of metadata block, then every read
 * path of the library (and a sample of `mendfs_db -c check` runs) over the damaged image.
 *
 * The promise under test: a corrupt or truncated image gives a clear error naming the
 * structure, never a crash.  A small filesystem (1 KiB blocks, 4 AGs) is formatted in a
 * temporary image through lib/format (mkfs.mendfs's code), and populated through the
 * allocator before its superblocks are written so that its trees have two and three
 * levels.  Then, for many iterations,
 * one block of the image is damaged (or the image is truncated):
 *
 *   targets   primary superblock, superblock copies, AG headers, AG free lists, blocks of
 *             the four AG btrees (found with mfs_btree_visit_blocks), inode chunk blocks,
 *             the two journal header copies, and (truncation) the image as a whole;
 *   kinds     flip   one bit flipped, the CRC left stale
 *             flip+  one bit flipped, the CRC resealed: structural checks must see it
 *             field+ a random value in one field (1, 2, 4 or 8 bytes), CRC resealed
 *             zero   the whole block zeroed
 *             copy   another block copied over it
 *             trunc  the image cut short
 *
 * A forked child opens the image read-only and runs every read path: the superblock, AG
 * header and free list of every AG, mfs_btree_verify, full and bounded range queries,
 * block visits and random-key lookups (with next/prev) on all four trees of every AG,
 * every inode of every chunk the inode btree names, the root inode, and the journal
 * header (mfs_journal_peek).  The parent asserts: no signal and no hang; every function
 * returned 0 or a negative errno; and that the damage was reported as -EFSCORRUPTED or
 * -EFSBADCRC, with a message, whenever it must be: a stale CRC, a zeroed or copied block,
 * damage to a header's magic, self number, owner or UUID, or to a btree level (block
 * level, or the height in the AG header), and any truncation.  Other resealed field
 * changes may be legitimately invisible to structural checks (an unused field, a
 * counter only a cross-check sees) and are only counted.  The journal header is kept in
 * two copies precisely so that one damaged copy is survivable: it is counted, not asserted
 * (damage to both copies is asserted once, at the end).
 *
 * The seed is printed; MFS_SEED=n replays a run, MFS_ITER=i replays only iteration i;
 * MFS_CORRUPT_ITERS=n runs n iterations without the time bound (longer hunts).
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ag.h"
#include "alloc.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "dev.h"
#include "fs.h"
#include "geom.h"
#include "inode_init.h"
#include "journal.h"
#include "log.h"
#include "mendfs_format.h"
#include "trans.h"
#include "verify.h"

#include "format.h"
#include "tu.h"

#define BS          1024u
#define AGBLOCKS    16384u
#define AGCOUNT     4u
#define LOGBLOCKS   64u
#define ITERATIONS  (UNDER_ASAN ? 800u : 2000u)
#define TIME_BOUND  (UNDER_ASAN ? 60.0 : 30.0)     /* seconds for the iterations */
#define DB_EVERY    20u                             /* mendfs_db check on every n-th image */
#define CHILD_ALARM 20u                             /* seconds before a child is a hang */

/* Random numbers: one tu_rand stream per iteration (tu_srand), so any iteration can be
 * replayed. */

/* ---- targets and kinds ------------------------------------------------------------------ */
enum target {
	T_SB0, T_SBN, T_AGH, T_AGFL, T_BNO, T_CNT, T_INO, T_RMAP, T_INODE, T_JHDR,
	T_NBLOCK,                 /* the targets above are single blocks */
	T_IMAGE = T_NBLOCK,       /* truncation */
	T_N
};
static const char *const target_names[T_N] = {
	"primary sb", "sb copy", "AG header", "AG free list", "bno btree", "cnt btree",
	"ino btree", "rmap btree", "inode chunk", "journal hdr", "image",
};

enum kind { K_FLIP, K_FLIP_RESEAL, K_FIELD_RESEAL, K_ZERO, K_COPY, K_TRUNC, K_N };
static const char *const kind_names[K_N] = { "flip", "flip+", "field+", "zero", "copy",
					     "trunc" };

struct mblk {
	uint64_t fsb;
	unsigned level;           /* btree blocks */
};

struct blist {
	struct mblk *v;
	size_t n, cap;
};

static struct blist targets[T_NBLOCK];

static void blist_add(struct blist *l, uint64_t fsb, unsigned level)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? 2 * l->cap : 64;
		l->v = realloc(l->v, l->cap * sizeof(*l->v));
		ck_assert_ptr_nonnull(l->v);
	}
	l->v[l->n++] = (struct mblk){ fsb, level };
}

/* ---- building the pristine image ---------------------------------------------------------- */
static struct mfs_geom geo;

/* The format options of the pristine image: fixed UUID, owner, time and label. */
static void pristine_opts(struct mfs_format_opts *o)
{
	memset(o, 0, sizeof(*o));
	o->blocksize = BS;
	o->agsize = (uint64_t)AGBLOCKS * BS;
	o->logbytes = (uint64_t)LOGBLOCKS * BS;
	o->label = "corrupt";
	for (int i = 0; i < 16; i++)
		o->uuid[i] = (uint8_t)(0x5c + 13 * i);
	o->root_ids = 1;
	o->root_uid = o->root_gid = 0;
	o->time = 1700000000;
}

struct ext {
	uint64_t fsb;
	uint32_t len;
	uint64_t owner, offset;
};

/* Allocate many short extents in each AG (owners alternate and offsets do not follow on,
 * so no two reverse-map records merge), then free every third one: the reverse map gets
 * three levels in the two full AGs, the free-space trees two. */
static void populate(struct mfs_fs *fs)
{
	static const unsigned per_ag[AGCOUNT] = { 8000, 7000, 600, 40 };
	struct ext *e = calloc(8000, sizeof(*e));

	ck_assert_ptr_nonnull(e);
	for (uint32_t agno = 0; agno < AGCOUNT; agno++) {
		uint64_t owners[3] = {
			mfs_agino_to_ino(&geo, agno, 1024), mfs_agino_to_ino(&geo, agno, 2048),
			mfs_agino_to_ino(&geo, (agno + 1) % AGCOUNT, 4096),
		};
		unsigned n = 0;

		for (unsigned i = 0, full = 0; i < per_ag[agno] && !full;) {
			struct mfs_trans *tp;

			CK_OK(mfs_trans_alloc(fs, &tp));
			for (unsigned k = 0; k < 8 && i < per_ag[agno]; k++, i++) {
				struct mfs_alloc_args a;
				int err;

				memset(&a, 0, sizeof(a));
				a.type = MFS_ALLOC_NEAR;
				a.target = mfs_agbno_to_fsb(&geo, agno, 0);
				a.minlen = 1;
				a.maxlen = 1 + tu_rand_below(2);
				a.owner = owners[i % 3];
				a.offset = (uint64_t)i * 16;
				err = mfs_alloc_extent(tp, &a);
				if (err == -ENOSPC) {
					full = 1;
					break;
				}
				CK_OK(err);
				ck_assert_uint_eq(mfs_fsb_to_agno(&geo, a.fsb), agno);
				e[n++] = (struct ext){ a.fsb, a.len, a.owner, a.offset };
			}
			CK_OK(mfs_trans_commit(tp));
		}
		for (unsigned i = 0; i < n;) {
			struct mfs_trans *tp;

			CK_OK(mfs_trans_alloc(fs, &tp));
			for (unsigned k = 0; k < 8 && i < n; i++) {
				if (i % 3)
					continue;
				CK_OK(mfs_free_extent(tp, e[i].fsb, e[i].len, e[i].owner,
						      e[i].offset));
				k++;
			}
			CK_OK(mfs_trans_commit(tp));
		}
	}
	free(e);
}

static int populate_cb(struct mfs_fs *fs, void *priv)
{
	(void)priv;
	populate(fs);
	return 0;
}

/* Format `path` and populate it before the superblocks are written (so their free-block
 * count is exact), through lib/format. */
static void build_pristine(const char *path)
{
	struct mfs_format_opts o;
	struct mfs_format_layout L;
	uint64_t bytes = (uint64_t)AGBLOCKS * AGCOUNT * BS;

	pristine_opts(&o);
	CK_OK(mfs_format_layout(&o, bytes, NULL, &L));
	CK_EQ(L.geo.agblocks, AGBLOCKS);
	CK_EQ(L.geo.agcount, AGCOUNT);
	CK_EQ(L.geo.dblocks, (uint64_t)AGBLOCKS * AGCOUNT);
	CK_EQ(L.geo.logblocks, LOGBLOCKS);
	geo = L.geo;
	o.populate = populate_cb;
	tu_format(path, bytes, &o);
}

static int add_tree_block(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	(void)cur;
	blist_add(priv, fsb, level);
	return 0;
}

static int add_chunk(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_inobt_rec *r = rec;
	uint32_t agbno = mfs_agino_to_agbno(&geo, mfs_get32(r->startino));

	for (uint32_t b = 0; b < geo.chunkblocks; b++)
		blist_add(priv, mfs_agbno_to_fsb(&geo, cur->agno, agbno + b), 0);
	return 0;
}

static void collect_targets(const char *path)
{
	struct mfs_fs *fs;

	CK_OK(mfs_fs_open(path, MFS_OPEN_RDONLY, 0, &fs));
	blist_add(&targets[T_SB0], 0, 0);
	for (uint32_t agno = 0; agno < AGCOUNT; agno++) {
		struct mfs_buf *bp;
		struct mfs_btree_cur cur;
		const struct mfs_agh *agh;

		if (agno)
			blist_add(&targets[T_SBN], mfs_agbno_to_fsb(&geo, agno, MFS_SB_AGBNO), 0);
		blist_add(&targets[T_AGH], mfs_agbno_to_fsb(&geo, agno, MFS_AGH_AGBNO), 0);
		blist_add(&targets[T_AGFL], mfs_agbno_to_fsb(&geo, agno, MFS_AGFL_AGBNO), 0);
		CK_OK(mfs_read_agh(fs, agno, &bp));
		agh = bp->data;
		for (int t = 0; t < MFS_AG_NTREES; t++) {
			mfs_ag_cur_init(&cur, fs, NULL, agno, (enum mfs_ag_tree)t, bp);
			CK_OK(mfs_btree_visit_blocks(&cur, add_tree_block, &targets[T_BNO + t]));
			mfs_btree_cur_release(&cur);
		}
		mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_INO, bp);
		CK_OK(mfs_btree_query_range(&cur, NULL, NULL, add_chunk, &targets[T_INODE]));
		mfs_btree_cur_release(&cur);
		fprintf(stderr, "  AG %u: tree heights bno %u cnt %u ino %u rmap %u\n", agno,
			mfs_get32(agh->levels[MFS_BT_BNO]), mfs_get32(agh->levels[MFS_BT_CNT]),
			mfs_get32(agh->levels[MFS_BT_INO]), mfs_get32(agh->levels[MFS_BT_RMAP]));
		mfs_buf_put(bp);
	}
	blist_add(&targets[T_JHDR], geo.logstart, 0);
	blist_add(&targets[T_JHDR], geo.logstart + 1, 0);
	CK_OK(mfs_fs_close(fs));
}

/* ---- the read paths, run in a child ---------------------------------------------------------- */
struct result {
	int finished;             /* the child reached the end of its paths */
	int detected;             /* calls that returned -EFSCORRUPTED / -EFSBADCRC */
	int silent;               /* ...of which with no message logged before */
	int refused;              /* other negative errnos */
	int bad;                  /* calls that returned something else than 0 or -errno */
	int nmsgs;
	char first_det[96];       /* the first call that reported corruption */
	char first_msg[240];      /* the first message logged */
	char bad_what[96];
	char refused_what[96];
	int exec_errno;           /* mendfs_db runs: why exec failed */
};

static struct result *res;    /* shared with the child (MAP_SHARED) */

static void sink(int level, const char *msg, void *priv)
{
	(void)level;
	(void)priv;
	if (!res->nmsgs++)
		snprintf(res->first_msg, sizeof(res->first_msg), "%s", msg);
}

static void note(const char *what, int err)
{
	if (!err)
		return;
	if (err > 0 || err < -4095) {
		if (!res->bad++)
			snprintf(res->bad_what, sizeof(res->bad_what), "%s returned %d", what, err);
	} else if (mfs_is_corruption(err)) {
		if (!res->detected++)
			snprintf(res->first_det, sizeof(res->first_det), "%s: %s", what,
				 err == -EFSBADCRC ? "EFSBADCRC" : "EFSCORRUPTED");
		if (!res->nmsgs)
			res->silent++;
	} else if (!res->refused++) {
		snprintf(res->refused_what, sizeof(res->refused_what), "%s: %s", what,
			 strerror(-err));
	}
}

static int count_rec(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	(void)cur;
	(void)rec;
	++*(uint64_t *)priv;
	return 0;
}

static int count_blk(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	(void)cur;
	(void)fsb;
	(void)level;
	++*(uint64_t *)priv;
	return 0;
}

struct chunks {
	uint32_t startino[64];
	unsigned n;
};

static int collect_chunk(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	struct chunks *c = priv;

	(void)cur;
	if (c->n < 64)
		c->startino[c->n++] = mfs_get32(((const struct mfs_inobt_rec *)rec)->startino);
	return 0;
}

/* A key of tree `t` (little-endian 4-byte words; the by-length key is a struct
 * mfs_alloc_rec, its length second), mostly inside the range the trees hold. */
static void random_key(enum mfs_ag_tree t, uint32_t key[4])
{
	memset(key, 0, 4 * sizeof(uint32_t));
	for (unsigned i = 0; i < mfs_ag_tree_ops(t)->key_len / 4 && i < 4; i++)
		mfs_put32(key[i], tu_rand_below(i == 1 && t == MFS_BT_CNT ? 8 : 2 * AGBLOCKS));
	if (t == MFS_BT_INO)
		mfs_put32(key[0], tu_rand_below(AGBLOCKS << geo.inopblog));
}

static void run_tree(struct mfs_fs *fs, uint32_t agno, enum mfs_ag_tree t,
		     struct mfs_buf *agh_bp)
{
	struct mfs_btree_cur cur;
	uint64_t nrecs = 0, nblocks = 0, n = 0;
	uint32_t lo[4], hi[4];
	uint64_t rec[8];
	char what[64];
	int stat, err;

	snprintf(what, sizeof(what), "AG %u tree %d verify", agno, t);
	mfs_ag_cur_init(&cur, fs, NULL, agno, t, agh_bp);
	note(what, mfs_btree_verify(&cur, &nrecs, &nblocks));
	mfs_btree_cur_release(&cur);

	snprintf(what, sizeof(what), "AG %u tree %d query", agno, t);
	mfs_ag_cur_init(&cur, fs, NULL, agno, t, agh_bp);
	note(what, mfs_btree_query_range(&cur, NULL, NULL, count_rec, &n));
	mfs_btree_cur_release(&cur);

	random_key(t, lo);
	random_key(t, hi);
	if (mfs_ag_tree_ops(t)->cmp_keys(lo, hi) > 0) {
		uint32_t tmp[4];

		memcpy(tmp, lo, sizeof(tmp));
		memcpy(lo, hi, sizeof(tmp));
		memcpy(hi, tmp, sizeof(tmp));
	}
	snprintf(what, sizeof(what), "AG %u tree %d range query", agno, t);
	mfs_ag_cur_init(&cur, fs, NULL, agno, t, agh_bp);
	note(what, mfs_btree_query_range(&cur, lo, hi, count_rec, &n));
	mfs_btree_cur_release(&cur);

	snprintf(what, sizeof(what), "AG %u tree %d visit", agno, t);
	mfs_ag_cur_init(&cur, fs, NULL, agno, t, agh_bp);
	note(what, mfs_btree_visit_blocks(&cur, count_blk, &n));
	mfs_btree_cur_release(&cur);

	snprintf(what, sizeof(what), "AG %u tree %d lookup", agno, t);
	for (int i = 0; i < 6; i++) {
		mfs_ag_cur_init(&cur, fs, NULL, agno, t, agh_bp);
		random_key(t, lo);
		err = mfs_btree_lookup(&cur, lo, (enum mfs_btree_lookup)(i % 3), &stat);
		note(what, err);
		for (int s = 0; !err && s < 4; s++) {
			note(what, mfs_btree_get(&cur, rec, &stat));
			err = (s + i) % 2 ? mfs_btree_next(&cur, &stat) : mfs_btree_prev(&cur, &stat);
			note(what, err);
		}
		mfs_btree_cur_release(&cur);
	}
}

/* Every inode of every chunk the inode btree names (bounds checked here, as any reader
 * of inodes must). */
static void run_inodes(struct mfs_fs *fs, uint32_t agno, struct mfs_buf *agh_bp)
{
	struct mfs_btree_cur cur;
	struct chunks c = { .n = 0 };
	uint32_t aglen = mfs_ag_length(&geo, agno);
	char what[64];

	mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_INO, agh_bp);
	snprintf(what, sizeof(what), "AG %u inode chunks", agno);
	note(what, mfs_btree_query_range(&cur, NULL, NULL, collect_chunk, &c));
	mfs_btree_cur_release(&cur);
	for (unsigned i = 0; i < c.n; i++) {
		uint32_t agbno = mfs_agino_to_agbno(&fs->geo, c.startino[i]);

		if (c.startino[i] % MFS_INODES_PER_CHUNK || agbno >= aglen ||
		    aglen - agbno < fs->geo.chunkblocks)
			continue;
		for (unsigned k = 0; k < MFS_INODES_PER_CHUNK; k++) {
			uint64_t ino = mfs_agino_to_ino(&fs->geo, agno, c.startino[i] + k);
			struct mfs_buf *bp;
			int err = mfs_buf_read(fs->bc, mfs_ino_to_fsb(&fs->geo, ino), NULL, &bp);

			snprintf(what, sizeof(what), "inode %" PRIu64, ino);
			note(what, err);
			if (err)
				continue;
			note(what, mfs_dinode_verify((char *)bp->data + mfs_ino_to_offset(&fs->geo,
											   ino),
						     fs->geo.inodesize, ino, fs->geo.uuid));
			mfs_buf_put(bp);
		}
	}
}

static void run_paths(const char *path)
{
	struct mfs_fs *fs;
	struct mfs_journal_info ji;
	struct mfs_buf *bp;
	char what[64];
	int err;

	err = mfs_fs_open(path, MFS_OPEN_RDONLY, 0, &fs);
	note("open", err);
	if (err) {
		res->finished = 1;
		return;
	}
	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++) {
		snprintf(what, sizeof(what), "AG %u superblock", agno);
		err = mfs_read_sb(fs, agno, &bp);
		note(what, err);
		if (!err)
			mfs_buf_put(bp);
		snprintf(what, sizeof(what), "AG %u free list", agno);
		err = mfs_read_agfl(fs, agno, &bp);
		note(what, err);
		if (!err)
			mfs_buf_put(bp);
		snprintf(what, sizeof(what), "AG %u header", agno);
		err = mfs_read_agh(fs, agno, &bp);
		note(what, err);
		if (err)
			continue;
		for (int t = 0; t < MFS_AG_NTREES; t++)
			run_tree(fs, agno, (enum mfs_ag_tree)t, bp);
		run_inodes(fs, agno, bp);
		mfs_buf_put(bp);
	}
	if (fs->geo.rootino == geo.rootino) {
		err = mfs_buf_read(fs->bc, mfs_ino_to_fsb(&fs->geo, geo.rootino), NULL, &bp);
		note("root inode", err);
		if (!err) {
			note("root inode", mfs_dinode_verify((char *)bp->data +
							     mfs_ino_to_offset(&fs->geo, geo.rootino),
							     fs->geo.inodesize, geo.rootino,
							     fs->geo.uuid));
			mfs_buf_put(bp);
		}
	}
	note("journal peek", mfs_journal_peek(fs, &ji));
	note("close", mfs_fs_close(fs));
	res->finished = 1;
}

/* Run the paths in a child; returns a description of a crash or hang, or NULL. */
static const char *run_child(const char *path, uint64_t iter_seed)
{
	static char why[128];
	int status;
	pid_t pid;

	memset(res, 0, sizeof(*res));
	fflush(NULL);
	pid = fork();
	ck_assert_int_ge(pid, 0);
	if (pid == 0) {
		alarm(CHILD_ALARM);
		mfs_log_set_sink(sink, NULL);
		tu_srand(iter_seed ^ 0x5eed);
		run_paths(path);
		_exit(0);
	}
	ck_assert_int_eq(waitpid(pid, &status, 0), pid);
	if (WIFSIGNALED(status)) {
		snprintf(why, sizeof(why), "killed by signal %d (%s)", WTERMSIG(status),
			 WTERMSIG(status) == SIGALRM ? "hang" : strsignal(WTERMSIG(status)));
		return why;
	}
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !res->finished) {
		snprintf(why, sizeof(why), "exited with status %d (sanitizer report?)",
			 WIFEXITED(status) ? WEXITSTATUS(status) : -1);
		return why;
	}
	return NULL;
}

/* mendfs_db -c check IMAGE: its exit status, or 128 + signal.  A failed exec (seen under
 * heavy parallel load) is retried; it is not the program's answer. */
static int run_db(const char *db, const char *path)
{
	int status = 0;

	for (int attempt = 0; attempt < 5; attempt++) {
		pid_t pid;

		res->exec_errno = 0;
		fflush(NULL);
		pid = fork();
		ck_assert_int_ge(pid, 0);
		if (pid == 0) {
			int fd = open("/dev/null", O_WRONLY);

			if (fd >= 0) {
				dup2(fd, 1);
				dup2(fd, 2);
			}
			alarm(60);
			execl(db, db, "-c", "check", path, (char *)NULL);
			res->exec_errno = errno;
			_exit(127);
		}
		ck_assert_int_eq(waitpid(pid, &status, 0), pid);
		if (!(WIFEXITED(status) && WEXITSTATUS(status) == 127 && res->exec_errno))
			break;
		fprintf(stderr, "check_corrupt: exec %s: %s, retrying\n", db,
			strerror(res->exec_errno));
		usleep(100000);
	}
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return WEXITSTATUS(status);
}

/* ---- corrupting one block --------------------------------------------------------------------- */
static int overlaps(uint32_t off, uint32_t len, uint32_t lo, uint32_t hi)
{
	return off < hi && lo < off + len;
}

/* Whether changing bytes [off, off+len) of a block of target `t` must be detected even
 * with a good CRC: magic, self number, owner, UUID, btree levels. */
static int must_detect_field(enum target t, uint32_t off, uint32_t len)
{
	if (t == T_JHDR)
		return 0;
	if (t == T_INODE) {
		off %= geo.inodesize;
		return overlaps(off, len, 0, 4) || overlaps(off, len, 8, 16) ||
		       overlaps(off, len, 24, 40);
	}
	if (overlaps(off, len, 0, 4) || overlaps(off, len, 8, 24) || overlaps(off, len, 32, 48))
		return 1;
	if (t >= T_BNO && t <= T_RMAP)
		return overlaps(off, len, 48, 50);
	if (t == T_AGH)
		return overlaps(off, len, offsetof(struct mfs_agh, levels),
				offsetof(struct mfs_agh, levels) + 4 * MFS_AG_NTREES);
	return 0;
}

/* Whether any byte that differs between `a` and `b` is one must_detect_field() names. */
static int must_detect_change(enum target t, const uint8_t *a, const uint8_t *b)
{
	for (uint32_t i = 0; i < BS; i++)
		if (a[i] != b[i] && must_detect_field(t, i, 1))
			return 1;
	return 0;
}

/* Bytes of a block (or of one inode) that a field change may touch. */
static uint32_t struct_len(enum target t)
{
	switch (t) {
	case T_SB0: case T_SBN: return sizeof(struct mfs_sb);
	case T_AGH: return sizeof(struct mfs_agh);
	case T_AGFL: return sizeof(struct mfs_agfl);
	case T_INODE: return sizeof(struct mfs_dinode) + 64;
	case T_JHDR: return sizeof(struct mfs_jhdr);
	default: return BS;
	}
}

/* The CRC field, which a resealed change must leave alone. */
static int crc_field(enum target t, uint32_t off, uint32_t len)
{
	if (t == T_INODE)
		off %= geo.inodesize;
	return overlaps(off, len, 4, 8);
}

static void reseal(enum target t, uint8_t *blk, uint32_t off)
{
	if (t == T_INODE) {
		uint32_t slot = off / geo.inodesize * geo.inodesize;

		mfs_dinode_seal(blk + slot, geo.inodesize);
	} else {
		mfs_blk_seal(blk, BS);
	}
}

/* A byte offset in the asserted header fields of `t` (t != T_JHDR). */
static uint32_t header_offset(enum target t)
{
	static const uint32_t blk_ranges[][2] = { { 0, 4 }, { 8, 24 }, { 32, 48 }, { 48, 50 } };
	static const uint32_t ino_ranges[][2] = { { 0, 4 }, { 8, 16 }, { 24, 40 } };

	if (t == T_INODE) {
		unsigned r = tu_rand_below(3);

		return tu_rand_below(BS / geo.inodesize) * geo.inodesize + ino_ranges[r][0] +
		       tu_rand_below(ino_ranges[r][1] - ino_ranges[r][0]);
	}
	if (t == T_AGH && tu_rand_below(4) == 0)
		return (uint32_t)offsetof(struct mfs_agh, levels) + tu_rand_below(4 * MFS_AG_NTREES);
	{
		unsigned r = tu_rand_below(t >= T_BNO && t <= T_RMAP ? 4 : 3);

		return blk_ranges[r][0] + tu_rand_below(blk_ranges[r][1] - blk_ranges[r][0]);
	}
}

/*
 * For btree blocks: an offset (aligned to `len`) inside what the block holds — the level
 * and record count, the records of a leaf, or the keys and pointers of a node — where
 * damage reaches the engine's bounds checks rather than unused space.
 */
static uint32_t btree_live_offset(enum target t, const uint8_t *blk, uint32_t len)
{
	const struct mfs_btree_block *b = (const void *)blk;
	const struct mfs_btree_ops *ops = mfs_ag_tree_ops((enum mfs_ag_tree)(t - T_BNO));
	unsigned level = mfs_get16(b->level), n = mfs_get16(b->numrecs);
	uint32_t lo = sizeof(*b), hi;

	if (tu_rand_below(8) == 0)
		return 48 / len * len + (len < 4 ? tu_rand_below(4 / len) * len : 0);
	if (!level) {
		hi = lo + n * ops->rec_len;
	} else if (tu_rand_below(2)) {
		hi = lo + n * ops->key_len;
	} else {
		lo += mfs_btree_maxrecs(ops, BS, 0) * ops->key_len;
		hi = lo + n * ops->ptr_len;
	}
	if (hi > BS)
		hi = BS;
	if (hi < lo + len)
		return lo / len * len;
	return (lo + tu_rand_below(hi - lo - len + 1)) / len * len;
}

struct corruption {
	enum target t;
	enum kind k;
	uint64_t fsb;             /* block changed (not for trunc) */
	uint32_t off, len;        /* bytes changed (flip: the bit's byte, len 1) */
	unsigned bit;
	uint64_t value;           /* field+: the new value; copy: the source fsb; trunc: size */
	int must;                 /* detection is required */
};

static void describe(const struct corruption *c, char *buf, size_t n)
{
	switch (c->k) {
	case K_TRUNC:
		snprintf(buf, n, "image truncated to %" PRIu64 " bytes", c->value);
		break;
	case K_COPY:
		snprintf(buf, n, "%s block %" PRIu64 ": overwritten by block %" PRIu64,
			 target_names[c->t], c->fsb, c->value);
		break;
	case K_ZERO:
		snprintf(buf, n, "%s block %" PRIu64 ": zeroed", target_names[c->t], c->fsb);
		break;
	case K_FIELD_RESEAL:
		snprintf(buf, n, "%s block %" PRIu64 ": %u bytes at offset %u set to 0x%" PRIx64
			 ", resealed", target_names[c->t], c->fsb, c->len, c->off, c->value);
		break;
	default:
		snprintf(buf, n, "%s block %" PRIu64 ": bit %u of byte %u flipped%s",
			 target_names[c->t], c->fsb, c->bit, c->off,
			 c->k == K_FLIP_RESEAL ? ", resealed" : "");
		break;
	}
}

static int img_fd;            /* the working image */
static uint64_t img_bytes;

static void pread_blk(int fd, void *buf, uint64_t fsb)
{
	ck_assert_int_eq(pread(fd, buf, BS, (off_t)(fsb * BS)), BS);
}

static void pwrite_blk(int fd, const void *buf, uint64_t fsb)
{
	ck_assert_int_eq(pwrite(fd, buf, BS, (off_t)(fsb * BS)), BS);
}

/* Choose and apply one corruption to the working image; `orig` gets the block's old
 * contents for restore(). */
static void corrupt(struct corruption *c, uint8_t *orig)
{
	uint8_t blk[BS];

	memset(c, 0, sizeof(*c));
	if (tu_rand_below(16) == 0) {
		uint32_t r = tu_rand_below(3);

		c->t = T_IMAGE;
		c->k = K_TRUNC;
		c->value = r == 0 ? tu_rand() % img_bytes
			 : r == 1 ? img_bytes - 1 - tu_rand_below(64 * BS)
				  : tu_rand_below(4 * BS);
		c->must = 1;
		ck_assert_int_eq(ftruncate(img_fd, (off_t)c->value), 0);
		return;
	}
	c->t = (enum target)tu_rand_below(T_NBLOCK);
	c->k = (enum kind)tu_rand_below(K_TRUNC);
	c->fsb = targets[c->t].v[tu_rand_below((uint32_t)targets[c->t].n)].fsb;
	pread_blk(img_fd, orig, c->fsb);
	memcpy(blk, orig, BS);

	switch (c->k) {
	case K_FLIP:
		/* the structure and a little past it; in inode blocks, anywhere */
		c->off = tu_rand_below(c->t == T_INODE || struct_len(c->t) + 64 > BS
					   ? BS : struct_len(c->t) + 64);
		c->bit = tu_rand_below(8);
		c->len = 1;
		blk[c->off] ^= (uint8_t)(1u << c->bit);
		c->must = c->t != T_JHDR;     /* any bit of the block is under a CRC */
		break;
	case K_FLIP_RESEAL:
		do {
			uint32_t r = tu_rand_below(4);

			if (c->t != T_JHDR && r < 2)
				c->off = header_offset(c->t);
			else if (c->t >= T_BNO && c->t <= T_RMAP && r == 2)
				c->off = btree_live_offset(c->t, orig, 1);
			else
				c->off = tu_rand_below(struct_len(c->t));
			if (c->t == T_INODE && c->off >= BS)
				c->off %= BS;
		} while (crc_field(c->t, c->off, 1));
		c->bit = tu_rand_below(8);
		c->len = 1;
		blk[c->off] ^= (uint8_t)(1u << c->bit);
		reseal(c->t, blk, c->off);
		c->must = must_detect_change(c->t, orig, blk);
		break;
	case K_FIELD_RESEAL: {
		uint32_t lim = struct_len(c->t);
		uint64_t old = 0, v;

		do {
			c->len = 1u << tu_rand_below(4);
			if (c->t == T_INODE)
				c->off = tu_rand_below(BS / geo.inodesize) * geo.inodesize +
					 tu_rand_below(struct_len(T_INODE) / c->len) * c->len;
			else if (c->t >= T_BNO && c->t <= T_RMAP && tu_rand_below(4))
				c->off = btree_live_offset(c->t, orig, c->len);
			else
				c->off = tu_rand_below(lim / c->len) * c->len;
		} while (crc_field(c->t, c->off, c->len));
		memcpy(&old, blk + c->off, c->len);
		switch (tu_rand_below(5)) {
		case 0: v = 0; break;
		case 1: v = ~0ull; break;
		case 2: v = old + 1; break;
		case 3: v = old - 1; break;
		default: v = tu_rand(); break;
		}
		if (!memcmp(&v, &old, c->len))
			v = old ^ 1;
		memcpy(blk + c->off, &v, c->len);      /* host order: any value will do */
		c->value = v;
		reseal(c->t, blk, c->off);
		c->must = must_detect_change(c->t, orig, blk);
		break;
	}
	case K_ZERO:
		memset(blk, 0, BS);
		c->must = c->t != T_JHDR;
		break;
	case K_COPY: {
		if (tu_rand_below(10) < 7) {
			enum target s = (enum target)tu_rand_below(T_NBLOCK);

			c->value = targets[s].v[tu_rand_below((uint32_t)targets[s].n)].fsb;
		} else {
			c->value = tu_rand() % geo.dblocks;
		}
		if (c->value == c->fsb)
			c->value = (c->fsb + 1) % geo.dblocks;
		pread_blk(img_fd, blk, c->value);
		c->must = c->t != T_JHDR && memcmp(blk, orig, BS) != 0;
		break;
	}
	default:
		break;
	}
	pwrite_blk(img_fd, blk, c->fsb);
}

/* Put the working image back as it was: the block, or (truncation) the size and every
 * data extent of the pristine image past the cut. */
static void restore(const struct corruption *c, const uint8_t *orig, int pristine_fd)
{
	if (c->k != K_TRUNC) {
		pwrite_blk(img_fd, orig, c->fsb);
		return;
	}
	ck_assert_int_eq(ftruncate(img_fd, (off_t)img_bytes), 0);
	for (off_t pos = (off_t)(c->value / BS * BS); pos < (off_t)img_bytes;) {
		off_t data = lseek(pristine_fd, pos, SEEK_DATA), hole;
		static uint8_t buf[1 << 16];

		if (data < 0)
			break;
		hole = lseek(pristine_fd, data, SEEK_HOLE);
		ck_assert_int_gt(hole, data);
		for (off_t p = data; p < hole;) {
			size_t n = (size_t)(hole - p) < sizeof(buf) ? (size_t)(hole - p) : sizeof(buf);

			ck_assert_int_eq(pread(pristine_fd, buf, n, p), (ssize_t)n);
			ck_assert_int_eq(pwrite(img_fd, buf, n, p), (ssize_t)n);
			p += (off_t)n;
		}
		pos = hole;
	}
}

/* ---- the test ---------------------------------------------------------------------------------- */
struct cell {
	unsigned n, det, must, must_det, refused, db_runs, db_fail;
};

static int same_file(int a, int b)
{
	uint8_t x[1 << 16], y[1 << 16];
	off_t pos = 0;
	ssize_t n, m;

	do {
		n = pread(a, x, sizeof(x), pos);
		m = pread(b, y, sizeof(y), pos);
		if (n != m || (n > 0 && memcmp(x, y, (size_t)n)))
			return 0;
		pos += n;
	} while (n > 0);
	return 1;
}

START_TEST(test_random_corruption)
{
	char pristine[] = "/tmp/mendfs_corrupt_XXXXXX", work[] = "/tmp/mendfs_corrupt_XXXXXX";
	static struct cell cells[T_N][K_N];
	static char example[T_N][240];     /* the first message reporting each target */
	uint64_t seed = tu_seed("MFS_SEED", "check_corrupt (MFS_ITER=i replays iteration i)");
	const char *iter_env = getenv("MFS_ITER");
	char db[512];
	int have_db, pfd, failures = 0;
	unsigned iter, first = 0, last = ITERATIONS, db_runs = 0, db_only = 0;
	unsigned silent = 0, refused_must = 0;
	double t0, t_end, time_bound = TIME_BOUND;
	uint8_t orig[BS];

	memset(cells, 0, sizeof(cells));
	memset(example, 0, sizeof(example));
	res = mmap(NULL, sizeof(*res), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	ck_assert_ptr_ne(res, MAP_FAILED);

	have_db = tu_program("mendfs_db", db, sizeof(db)) == 0;
	if (!have_db)
		fprintf(stderr, "check_corrupt: %s not found (set BIN): mendfs_db runs skipped\n",
			db);

	/* the pristine image, and a working copy */
	tu_srand(seed);
	pfd = mkstemp(pristine);
	ck_assert_int_ge(pfd, 0);
	t0 = tu_now();
	build_pristine(pristine);
	collect_targets(pristine);
	img_bytes = geo.dblocks * BS;
	img_fd = mkstemp(work);
	ck_assert_int_ge(img_fd, 0);
	ck_assert_int_eq(ftruncate(img_fd, (off_t)img_bytes), 0);
	{
		struct corruption all = { .k = K_TRUNC, .value = 0 };

		restore(&all, NULL, pfd);
	}
	ck_assert_msg(same_file(pfd, img_fd), "working copy differs from the pristine image");
	fprintf(stderr, "check_corrupt: image of %" PRIu64 " blocks built in %.2f s; targets:",
		geo.dblocks, tu_now() - t0);
	for (int t = 0; t < T_NBLOCK; t++)
		fprintf(stderr, " %s %zu%s", target_names[t], targets[t].n,
			t + 1 < T_NBLOCK ? "," : "\n");
	ck_assert_uint_ge(targets[T_RMAP].n, 100);

	/* the undamaged image: every path succeeds, mendfs_db finds it clean */
	ck_assert_ptr_null(run_child(work, seed));
	ck_assert_msg(!res->detected && !res->refused && !res->bad,
		      "pristine image: %s %s %s / %s", res->first_det, res->refused_what,
		      res->bad_what, res->first_msg);
	if (have_db) {
		int rc = run_db(db, work);

		ck_assert_msg(rc == 0, "mendfs_db -c check on the pristine image: exit %d", rc);
	}

	if (getenv("MFS_CORRUPT_ITERS")) {       /* longer hunts: n iterations, no time bound */
		last = (unsigned)strtoul(getenv("MFS_CORRUPT_ITERS"), NULL, 0);
		time_bound = 1e9;
	}
	if (iter_env) {
		first = (unsigned)strtoul(iter_env, NULL, 0);
		last = first + 1;
	}
	t0 = tu_now();
	t_end = t0 + time_bound;
	for (iter = first; iter < last && tu_now() < t_end; iter++) {
		uint64_t iter_seed = seed ^ ((uint64_t)(iter + 1) * 0x9e3779b97f4a7c15ull);
		struct corruption c;
		struct cell *cl;
		const char *crash;
		char desc[160];
		int err_here = 0;

		tu_srand(iter_seed);
		corrupt(&c, orig);
		describe(&c, desc, sizeof(desc));
		cl = &cells[c.t][c.k];
		cl->n++;
		crash = run_child(work, iter_seed);
		if (crash) {
			fprintf(stderr, "FAIL iteration %u (MFS_SEED=%" PRIu64 " MFS_ITER=%u): %s: "
				"%s; last message: %s\n", iter, seed, iter, desc, crash,
				res->first_msg);
			err_here = 1;
		} else {
			if (res->bad) {
				fprintf(stderr, "FAIL iteration %u (MFS_SEED=%" PRIu64 " MFS_ITER=%u): "
					"%s: %s\n", iter, seed, iter, desc, res->bad_what);
				err_here = 1;
			}
			if (res->detected)
				cl->det++;
			if (res->detected && !example[c.t][0])
				snprintf(example[c.t], sizeof(example[c.t]), "%s", res->first_msg);
			if (res->refused)
				cl->refused++;
			if (res->detected && !res->nmsgs) {
				fprintf(stderr, "FAIL iteration %u (MFS_SEED=%" PRIu64 " MFS_ITER=%u): "
					"%s: %s reported with no message\n", iter, seed, iter, desc,
					res->first_det);
				err_here = 1;
			}
			silent += (unsigned)res->silent;
			if (c.must) {
				cl->must++;
				if (res->detected) {
					cl->must_det++;
				} else {
					fprintf(stderr, "FAIL iteration %u (MFS_SEED=%" PRIu64
						" MFS_ITER=%u): %s: not detected (%s)\n", iter, seed,
						iter, desc, res->refused ? res->refused_what
									 : "every path returned 0");
					refused_must += res->refused > 0;
					err_here = 1;
				}
			}
		}
		if (have_db && (iter % DB_EVERY == 0 || iter_env)) {
			int lib_detected = !crash && res->detected;
			int rc = run_db(db, work);

			db_runs++;
			cl->db_runs++;
			if (rc == 1 && !lib_detected)
				db_only++;
			if (rc >= 128 || rc > 1 || (lib_detected && rc != 1)) {
				fprintf(stderr, "FAIL iteration %u (MFS_SEED=%" PRIu64 " MFS_ITER=%u): "
					"%s: mendfs_db -c check exit %d (library %s)\n", iter, seed,
					iter, desc, rc, lib_detected ? "detected it" : "saw nothing");
				cl->db_fail++;
				err_here = 1;
			}
		}
		failures += err_here;
		restore(&c, orig, pfd);
	}
	ck_assert_msg(same_file(pfd, img_fd), "working copy not restored after the run");

	/* One damaged journal header copy is survivable by design; both are not. */
	{
		uint8_t j0[BS], j1[BS], z[BS];

		pread_blk(img_fd, j0, geo.logstart);
		pread_blk(img_fd, j1, geo.logstart + 1);
		memset(z, 0, sizeof(z));
		pwrite_blk(img_fd, z, geo.logstart);
		memcpy(z, j1, BS);
		z[100] ^= 4;
		pwrite_blk(img_fd, z, geo.logstart + 1);
		ck_assert_ptr_null(run_child(work, seed));
		ck_assert_msg(res->detected && res->nmsgs, "both journal header copies damaged: "
			      "not reported (%s)", res->refused_what);
		fprintf(stderr, "  both journal header copies damaged: %s\n", res->first_det);
		if (have_db)
			ck_assert_int_eq(run_db(db, work), 1);
		pwrite_blk(img_fd, j0, geo.logstart);
		pwrite_blk(img_fd, j1, geo.logstart + 1);
	}

	/* the table */
	fprintf(stderr, "check_corrupt: %u iterations in %.1f s (seed %" PRIu64 "), %u mendfs_db "
		"runs (%u found damage the library paths did not)\n", iter - first,
		tu_now() - t0, seed, db_runs, db_only);
	fprintf(stderr, "  detected/corrupted [required: detected/required]\n  %-13s", "");
	for (int k = 0; k < K_N; k++)
		fprintf(stderr, "%-17s", kind_names[k]);
	fputc('\n', stderr);
	for (int t = 0; t < T_N; t++) {
		fprintf(stderr, "  %-13s", target_names[t]);
		for (int k = 0; k < K_N; k++) {
			char cellbuf[32];
			const struct cell *x = &cells[t][k];

			if (!x->n)
				snprintf(cellbuf, sizeof(cellbuf), "-");
			else
				snprintf(cellbuf, sizeof(cellbuf), "%u/%u [%u/%u]", x->det, x->n,
					 x->must_det, x->must);
			fprintf(stderr, "%-17s", cellbuf);
		}
		fputc('\n', stderr);
	}
	fprintf(stderr, "  calls that reported corruption before any message: %u\n", silent);
	fprintf(stderr, "  a message for each target:\n");
	for (int t = 0; t < T_N; t++)
		if (example[t][0])
			fprintf(stderr, "    %-13s %s\n", target_names[t], example[t]);

	close(img_fd);
	close(pfd);
	unlink(work);
	unlink(pristine);
	for (int t = 0; t < T_NBLOCK; t++) {
		free(targets[t].v);
		memset(&targets[t], 0, sizeof(targets[t]));
	}
	munmap(res, sizeof(*res));
	(void)refused_must;
	ck_assert_msg(failures == 0, "%d of %u iterations failed (seed %" PRIu64 "; see above)",
		      failures, iter - first, seed);
}
END_TEST

static Suite *corrupt_suite(void)
{
	Suite *s = suite_create("corrupt");
	TCase *tc = tcase_create("random");

	tcase_add_test(tc, test_random_corruption);
	tcase_set_timeout(tc, UNDER_ASAN ? 600 : 120);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	return tu_run_suite(corrupt_suite());
}
