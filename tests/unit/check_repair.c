/*
 * check_repair.c — the repair engine (repair/repair.h), in process.
 *
 * Each test formats a small image (4 AGs, 1 KiB blocks), populates it (a file whose 600
 * blocks are punched every other block, so AG 0's free space is 300+ one-block extents in
 * two-level trees, with a pattern written into the blocks it keeps; 120 more files for
 * several inode chunks), and checks every checker is clean.  Then:
 *
 *   - repairs: one tree (bno, cnt, inode btree) is damaged — a field, a whole block of
 *     garbage, or blocks lost from the tree — the checker sees it, mfs_repair() with a
 *     memfd rebuilds it, and every checker on every object is clean again, the file's
 *     mapping and data unchanged;
 *   - aborts: a scratch file that cannot grow (sealed memfd; a full tmpfs when root), a
 *     headroom refusal, memory pressure raised inside the sort, a cancel, an error just
 *     before the commit: each one fails with a reason, and the image is bit for bit what it
 *     was (CRC of the whole image after a flush); a repair after it succeeds.
 */
#include <check.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ag.h"
#include "bcache.h"
#include "bmap.h"
#include "btree.h"
#include "byteorder.h"
#include "dir.h"
#include "fs.h"
#include "geom.h"
#include "ialloc.h"
#include "inode.h"
#include "log.h"
#include "mem.h"
#include "mendfs_format.h"
#include "pressure.h"
#include "trans.h"
#include "verify.h"
#include "xattr.h"

#include "format.h"
#include "repair.h"
#include "scrub.h"
#include "tu.h"

#define FRAG_BLOCKS 600u
#define NFILES      120u

struct rimg {
	struct tu_img t;
	uint64_t frag;              /* the punched file */
	uint32_t data_crc;          /* of its remaining blocks' contents */
};

/* ---- population ------------------------------------------------------------------------------ */
static uint64_t new_inode(struct mfs_fs *fs, uint64_t dir, const char *name, uint16_t mode)
{
	return tu_mknode(fs, dir, name, mode, 0, NULL);
}

/* The fragmented file: FRAG_BLOCKS blocks allocated, then every odd one punched out. */
static uint64_t make_frag(struct mfs_fs *fs, uint64_t dir)
{
	uint64_t ino = new_inode(fs, dir, "frag", S_IFREG | 0644), off = 0;
	struct mfs_inode *ip;
	struct mfs_trans *tp;

	CK_OK(mfs_iget(fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	while (off < FRAG_BLOCKS) {
		struct mfs_bmap_ext ext;

		CK_OK(mfs_trans_alloc(fs, &tp));
		CK_OK(mfs_bmap_alloc(tp, ip, off, FRAG_BLOCKS - off, 0, &ext));
		CK_OK(mfs_trans_commit(tp));
		off += ext.len;
	}
	for (uint64_t b = 1; b < FRAG_BLOCKS; b += 2) {
		uint64_t done = 0;

		CK_OK(mfs_trans_alloc(fs, &tp));
		CK_OK(mfs_bmap_punch(tp, ip, b, 1, &done));
		CK_OK(mfs_trans_commit(tp));
		CK_EQ(done, 1);
	}
	ip->size = (uint64_t)FRAG_BLOCKS * fs->geo.blocksize;
	CK_OK(mfs_trans_alloc(fs, &tp));
	CK_OK(mfs_inode_log(tp, ip));
	CK_OK(mfs_trans_commit(tp));
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	return ino;
}

/* Write (pattern != 0) or CRC the contents of the frag file's blocks, straight on the image. */
static uint32_t frag_data(struct rimg *m, int write_pattern)
{
	struct mfs_fs *fs = m->t.fs;
	uint32_t bs = fs->geo.blocksize, crc = 0;
	char *buf = malloc(bs);
	struct mfs_inode *ip;
	int fd = open(m->t.path, O_RDWR);

	CK_TRUE(buf && fd >= 0);
	CK_OK(mfs_iget(fs, m->frag, 0, &ip));
	pthread_rwlock_rdlock(&ip->lock);
	for (uint64_t b = 0; b < FRAG_BLOCKS; b += 2) {
		struct mfs_bmap_ext ext;
		off_t pos;

		CK_OK(mfs_bmap_lookup(ip, b, &ext));
		CK_TRUE(ext.startblock != MFS_BMAP_HOLE);
		pos = (off_t)((ext.startblock + (b - ext.startoff)) * bs);
		if (write_pattern) {
			for (uint32_t k = 0; k < bs; k++)
				buf[k] = (char)(tu_rand() >> 24);
			CK_EQ(pwrite(fd, buf, bs, pos), bs);
		}
		CK_EQ(pread(fd, buf, bs, pos), bs);
		crc = crc * 31 + (uint32_t)ext.startblock;
		for (uint32_t k = 0; k < bs; k++)
			crc = crc * 131 + (uint8_t)buf[k];
	}
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	close(fd);
	free(buf);
	return crc;
}

/* ---- checking --------------------------------------------------------------------------------- */
static int check(struct mfs_fs *fs, uint32_t type, uint32_t agno, uint64_t ino,
		 struct tu_findings *f)
{
	return tu_scrub_one(fs, type, agno, ino, 0, f);
}

static int inode_in_use_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	const struct mfs_inobt_rec *r = rec;
	struct tu_findings *all = priv;
	uint64_t mask = mfs_get64(r->freemask);
	static const uint32_t types[] = { MFS_SCRUB_INODE, MFS_SCRUB_BMAP, MFS_SCRUB_DIR,
					  MFS_SCRUB_XATTR, MFS_SCRUB_SYMLINK };

	for (unsigned i = 0; i < MFS_INODES_PER_CHUNK; i++) {
		uint64_t ino = mfs_agino_to_ino(&cur->fs->geo, cur->agno,
						mfs_get32(r->startino) + i);

		if (mask >> i & 1)
			continue;
		for (unsigned t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
			struct tu_findings f;
			int err = check(cur->fs, types[t], 0, ino, &f);

			ck_assert_msg(err == 0 && f.n == 0, "type %u inode %llu: err %d: %s",
				      types[t], (unsigned long long)ino, err, f.first);
		}
		all->n++;
	}
	return 0;
}

/* Every checker on every object finds nothing. */
static void assert_all_clean(struct mfs_fs *fs)
{
	static const uint32_t ag_types[] = { MFS_SCRUB_SB, MFS_SCRUB_AGH, MFS_SCRUB_AGFL,
					     MFS_SCRUB_BNOBT, MFS_SCRUB_CNTBT, MFS_SCRUB_INOBT,
					     MFS_SCRUB_RMAPBT };
	static const uint32_t fs_types[] = { MFS_SCRUB_JOURNAL, MFS_SCRUB_NLINKS,
					     MFS_SCRUB_ORPHANS, MFS_SCRUB_SUMMARY };
	struct tu_findings f, inodes = { 0, 0, "" };

	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++) {
		struct mfs_btree_cur cur;
		struct mfs_buf *hbp;

		for (unsigned t = 0; t < sizeof(ag_types) / sizeof(ag_types[0]); t++) {
			int err = check(fs, ag_types[t], agno, 0, &f);

			ck_assert_msg(err == 0 && f.n == 0, "type %u AG %u: err %d, %u findings: %s",
				      ag_types[t], agno, err, f.n, f.first);
		}
		CK_OK(mfs_read_agh(fs, agno, &hbp));
		mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_INO, hbp);
		CK_OK(mfs_btree_query_range(&cur, NULL, NULL, inode_in_use_fn, &inodes));
		mfs_btree_cur_release(&cur);
		mfs_buf_put(hbp);
	}
	ck_assert_uint_ge(inodes.n, NFILES);
	for (unsigned t = 0; t < sizeof(fs_types) / sizeof(fs_types[0]); t++) {
		int err = check(fs, fs_types[t], 0, 0, &f);

		ck_assert_msg(err == 0 && f.n == 0, "type %u: err %d: %s", fs_types[t], err,
			      f.first);
	}
}

/* The damage is seen: by the tree's own checker, or (blocks lost from a tree leave a tree
 * that is valid on its own) by one of the AG's others that cross-reference it. */
static void assert_damaged(struct mfs_fs *fs, uint32_t type, uint32_t agno)
{
	static const uint32_t others[] = { MFS_SCRUB_AGH, MFS_SCRUB_BNOBT, MFS_SCRUB_CNTBT,
					   MFS_SCRUB_INOBT, MFS_SCRUB_RMAPBT };
	struct tu_findings f;
	uint32_t seen = 0;
	int err = check(fs, type, agno, 0, &f);

	CK_OK(err);
	seen |= f.flags;
	for (unsigned i = 0; i < sizeof(others) / sizeof(others[0]); i++) {
		CK_OK(check(fs, others[i], agno, 0, &f));
		seen |= f.flags;
	}
	ck_assert_msg(seen & (MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT),
		      "type %u AG %u: damage not seen by any checker (flags 0x%x)", type, agno,
		      seen);
}

static void img_make_flags(struct rimg *m, unsigned flags)
{
	struct mfs_format_opts o = { .blocksize = 1024, .agcount = 4 };
	char name[32];

	memset(m, 0, sizeof(*m));
	tu_srand(tu_seed("MFS_TEST_SEED", "check_repair"));
	tu_img_make(&m->t, "mendfs_repair", 64ull << 20, &o, flags);
	tu_sb_mark_dirty(m->t.fs);
	m->frag = make_frag(m->t.fs, m->t.fs->geo.rootino);
	for (unsigned i = 0; i < NFILES; i++) {
		snprintf(name, sizeof(name), "file-%03u", i);
		new_inode(m->t.fs, m->t.fs->geo.rootino, name, S_IFREG | 0644);
	}
	{
		/* attributes in an attribute btree, one value in value blocks */
		uint64_t ino = new_inode(m->t.fs, m->t.fs->geo.rootino, "attrs", S_IFREG | 0644);
		static char big[3000];
		struct mfs_inode *ip;
		struct mfs_trans *tp;

		memset(big, 'v', sizeof(big));
		CK_OK(mfs_iget(m->t.fs, ino, 0, &ip));
		pthread_rwlock_wrlock(&ip->lock);
		for (unsigned i = 0; i < 6; i++) {
			snprintf(name, sizeof(name), "attr-%u", i);
			CK_OK(mfs_trans_alloc(m->t.fs, &tp));
			CK_OK(mfs_xattr_set(tp, ip, MFS_XATTR_NS_USER, name, (unsigned)strlen(name),
					    big, i ? 200 : sizeof(big), 0));
			CK_OK(mfs_trans_commit(tp));
		}
		CK_EQ(ip->aformat, MFS_FMT_BTREE);
		pthread_rwlock_unlock(&ip->lock);
		mfs_iput(ip);
	}
	CK_OK(mfs_bcache_flush(m->t.fs->bc));
	m->data_crc = frag_data(m, 1);
	assert_all_clean(m->t.fs);
}

static void img_make(struct rimg *m)
{
	img_make_flags(m, 0);
}

/* ---- damage ---------------------------------------------------------------------------------- */
struct blkpick {
	unsigned level;
	uint64_t fsb;
	unsigned seen;
	int found;
};

static int pick_fn(struct mfs_btree_cur *cur, uint64_t fsb, unsigned level, void *priv)
{
	struct blkpick *p = priv;

	if (level == p->level && !p->found) {
		p->fsb = fsb;
		p->found = 1;
	}
	return 0;
}

/* The first block at `level` of one of AG agno's trees. */
static uint64_t tree_block(struct mfs_fs *fs, uint32_t agno, enum mfs_ag_tree t, unsigned level)
{
	struct blkpick p = { level, 0, 0, 0 };
	struct mfs_btree_cur cur;
	struct mfs_buf *hbp;

	CK_OK(mfs_read_agh(fs, agno, &hbp));
	mfs_ag_cur_init(&cur, fs, NULL, agno, t, hbp);
	CK_OK(mfs_btree_visit_blocks(&cur, pick_fn, &p));
	mfs_btree_cur_release(&cur);
	mfs_buf_put(hbp);
	CK_TRUE(p.found);
	return p.fsb;
}

static unsigned tree_levels(struct mfs_fs *fs, uint32_t agno, enum mfs_ag_tree t)
{
	struct mfs_buf *hbp;
	unsigned lv;

	CK_OK(mfs_read_agh(fs, agno, &hbp));
	lv = mfs_get32(((struct mfs_agh *)hbp->data)->levels[t]);
	mfs_buf_put(hbp);
	return lv;
}

enum damage { D_FIELD, D_GARBAGE, D_LOST };

/* Damage tree t of AG agno in the cache (resealed unless garbage), then flush. */
static void damage(struct mfs_fs *fs, uint32_t agno, enum mfs_ag_tree t, enum damage how)
{
	unsigned levels = tree_levels(fs, agno, t);
	struct mfs_buf *bp;
	uint8_t *blk;
	void *rec;

	CK_OK(mfs_buf_read(fs->bc, tree_block(fs, agno, t, how == D_LOST ? levels - 1 : 0),
			   NULL, &bp));
	blk = bp->data;
	rec = blk + sizeof(struct mfs_btree_block);
	switch (how) {
	case D_FIELD:
		if (t == MFS_BT_INO) {
			struct mfs_inobt_rec *r = rec;    /* the root directory's bit: free */

			mfs_put64(r->freemask, mfs_get64(r->freemask) | 1);
			mfs_put32(r->freecount, mfs_get32(r->freecount) + 1);
		} else {
			struct mfs_alloc_rec *r = rec;

			mfs_put32(r->blockcount, mfs_get32(r->blockcount) + 1);
		}
		mfs_blk_seal(blk, fs->geo.blocksize);
		break;
	case D_GARBAGE:
		for (uint32_t k = 0; k < fs->geo.blocksize; k++)
			blk[k] = (uint8_t)tu_rand();
		break;
	case D_LOST: {
		/* the root forgets its last child (or, for a one-block tree, its last records) */
		struct mfs_btree_block *h = (void *)blk;
		unsigned n = mfs_get16(h->numrecs);

		CK_TRUE(n >= 2);
		mfs_put16(h->numrecs, levels > 1 ? n - 1 : n / 2);
		mfs_blk_seal(blk, fs->geo.blocksize);
		break;
	}
	}
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
	CK_OK(mfs_bcache_flush(fs->bc));
}

/* ---- repairing ------------------------------------------------------------------------------- */
struct hooks {
	struct mfs_pressure *pressure;
	int fire_at;                 /* enum mfs_repair_point, 0: none */
	int fail_at;
	int fail_err;
	unsigned cancel_after;       /* cancelled() polls before it says yes, 0: never */
	unsigned polls;
	unsigned seen;               /* points the hook saw (bits) */
};

static int hook_fn(void *arg, enum mfs_repair_point at)
{
	struct hooks *h = arg;

	h->seen |= 1u << at;
	if (h->pressure && (int)at == h->fire_at) {
		double end = tu_now() + 5;

		CK_OK(mfs_pressure_fire_for_test(h->pressure));
		while (!mfs_pressure_aborted(h->pressure) && tu_now() < end)
			usleep(1000);
		CK_TRUE(mfs_pressure_aborted(h->pressure));
	}
	return (int)at == h->fail_at ? h->fail_err : 0;
}

static int cancel_fn(void *arg)
{
	struct hooks *h = arg;

	return h->cancel_after && ++h->polls >= h->cancel_after;
}

static unsigned repair_flags;       /* MFS_REPAIR_* for every repair of the test */

static int repair(struct mfs_fs *fs, uint32_t type, uint32_t agno, int fd, struct hooks *h,
		  uint64_t margin, char *reason, size_t rlen)
{
	struct mfs_repair_ctx rc;
	int err;

	memset(&rc, 0, sizeof(rc));
	rc.fs = fs;
	rc.type = type;
	rc.agno = agno;
	rc.fds[0] = fd;
	rc.nfds = 1;
	rc.margin = margin ? margin : 1;
	rc.flags = repair_flags;
	if (h) {
		rc.test_hook = hook_fn;
		rc.cancelled = cancel_fn;
		rc.hook_arg = h;
		rc.abort = h->pressure ? mfs_pressure_flag(h->pressure) : NULL;
	}
	err = mfs_repair(&rc);
	if (reason)
		snprintf(reason, rlen, "%s", rc.reason);
	if (!err) {
		ck_assert_str_eq(rc.reason, "");
		ck_assert_uint_gt(rc.estimate, 0);
		ck_assert_uint_ge(rc.reserved, rc.estimate);
		ck_assert_uint_le(rc.scratch_used, rc.estimate);
	} else {
		ck_assert_msg(rc.reason[0], "failure %d without a reason", err);
	}
	return err;
}

static void repair_ok(struct rimg *m, uint32_t type, uint32_t agno)
{
	char reason[1024];
	int fd = tu_scratch_fd(0), err;
	struct stat st;

	err = repair(m->t.fs, type, agno, fd, NULL, 0, reason, sizeof(reason));
	ck_assert_msg(err == 0, "repair of type %u AG %u: %d: %s", type, agno, err, reason);
	CK_EQ(fstat(fd, &st), 0);
	CK_EQ(st.st_size, 0);            /* scratch given back */
	CK_EQ(st.st_blocks, 0);
	close(fd);
}

/* The whole check after a repair: every checker, the file's data, and again from disk. */
static void assert_repaired(struct rimg *m)
{
	assert_all_clean(m->t.fs);
	CK_EQ(frag_data(m, 0), m->data_crc);
	tu_img_close(&m->t);
	tu_img_open(&m->t);
	assert_all_clean(m->t.fs);
	CK_EQ(frag_data(m, 0), m->data_crc);
}

static const uint32_t tree_type[] = { MFS_SCRUB_BNOBT, MFS_SCRUB_CNTBT, MFS_SCRUB_INOBT };
static const enum mfs_ag_tree tree_of[] = { MFS_BT_BNO, MFS_BT_CNT, MFS_BT_INO };

/* _i: tree (0 bno, 1 cnt, 2 ino) * 3 + damage. */
START_TEST(test_repair)
{
	unsigned tree = (unsigned)_i / 3;
	enum damage how = (enum damage)(_i % 3);
	struct rimg m;

	img_make(&m);
	if (tree < 2)
		ck_assert_uint_ge(tree_levels(m.t.fs, 0, tree_of[tree]), 2);
	damage(m.t.fs, 0, tree_of[tree], how);
	assert_damaged(m.t.fs, tree_type[tree], 0);
	repair_ok(&m, tree_type[tree], 0);
	assert_repaired(&m);
	tu_img_destroy(&m.t);
}
END_TEST

/* A clean tree rebuilt (force-rebuild): still clean, in every AG, twice; with the journal
 * (the rebuilds are logged, and replayed at the reopen when _i is 1, from a copy of the image
 * taken before the cache was written back: what a crash right after the commits leaves). */
START_TEST(test_rebuild_clean)
{
	struct rimg m;

	img_make_flags(&m, MFS_OPEN_JOURNAL);
	for (int round = 0; round < 2; round++)
		for (uint32_t agno = 0; agno < m.t.fs->geo.agcount; agno++)
			for (unsigned t = 0; t < 3; t++)
				repair_ok(&m, tree_type[t], agno);
	if (_i == 1) {
		struct rimg c = m;      /* the image as a crash now would leave it */

		tu_image_create(c.t.path, "mendfs_repair_crash", 0);
		CK_EQ(tu_run("cp --sparse=always %s %s", m.t.path, c.t.path), 0);
		tu_img_destroy(&m.t);
		c.t.fs = NULL;
		tu_img_open(&c.t);
		m = c;
	}
	assert_repaired(&m);
	tu_img_destroy(&m.t);
}
END_TEST

/* Damage the bno tree, fail a repair in the way `_i` says, image unchanged, then repair. */
enum abort_kind { A_SEALED, A_HEADROOM, A_PRESSURE, A_CANCEL, A_BEFORE_COMMIT, A_TMPFS,
		  A_NKINDS };

START_TEST(test_abort)
{
	enum abort_kind kind = (enum abort_kind)_i;
	struct hooks h;
	struct rimg m;
	char reason[1024], dir[] = "/tmp/mendfs_repair_tmpfs.XXXXXX";
	uint32_t crc0, crc1;
	uint64_t margin = 0;
	int fd = -1, err;
	uint32_t type = kind == A_CANCEL ? MFS_SCRUB_INOBT : MFS_SCRUB_BNOBT;

	img_make(&m);
	damage(m.t.fs, 0, type == MFS_SCRUB_INOBT ? MFS_BT_INO : MFS_BT_BNO, D_FIELD);
	crc0 = tu_image_crc(m.t.fs, m.t.path);
	memset(&h, 0, sizeof(h));
	switch (kind) {
	case A_SEALED:
		fd = memfd_create("sealed", MFD_CLOEXEC | MFD_ALLOW_SEALING);
		CK_TRUE(fd >= 0);
		CK_EQ(fcntl(fd, F_ADD_SEALS, F_SEAL_GROW), 0);
		break;
	case A_HEADROOM:
		fd = tu_scratch_fd(0);
		margin = UINT64_MAX / 4;
		break;
	case A_PRESSURE:
		fd = tu_scratch_fd(0);
		CK_OK(mfs_pressure_start(&(struct mfs_pressure_opts){ .sources =
							MFS_PRESSURE_TEST }, &h.pressure));
		h.fire_at = MFS_REPAIR_AT_SORTING;
		break;
	case A_CANCEL:
		fd = tu_scratch_fd(0);
		h.cancel_after = 3;
		break;
	case A_BEFORE_COMMIT:
		fd = tu_scratch_fd(1);
		h.fail_at = MFS_REPAIR_AT_BUILT;
		h.fail_err = -EINTR;
		break;
	case A_TMPFS:
		CK_TRUE(mkdtemp(dir));
		if (geteuid() != 0 || mount("tmpfs", dir, "tmpfs", 0, "size=16k") != 0) {
			fprintf(stderr, "test_abort tmpfs: not root or no tmpfs, skipped\n");
			rmdir(dir);
			tu_img_destroy(&m.t);
			return;
		}
		fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
		/* detached at once: the descriptor keeps the tmpfs, and a failing test leaves no
		 * mount behind */
		CK_EQ(umount2(dir, MNT_DETACH), 0);
		rmdir(dir);
		CK_TRUE(fd >= 0);
		break;
	default:
		ck_abort();
	}
	err = repair(m.t.fs, type, 0, fd, &h, margin, reason, sizeof(reason));
	switch (kind) {
	case A_SEALED:
		CK_EQ(err, -EPERM);
		break;
	case A_HEADROOM:
		CK_EQ(err, -ENOMEM);
		ck_assert_msg(strstr(reason, "refused") && strstr(reason, "-T"), "%s", reason);
		break;
	case A_PRESSURE:
	case A_CANCEL:
		CK_EQ(err, -ECANCELED);
		break;
	case A_BEFORE_COMMIT:
		CK_EQ(err, -EINTR);
		CK_TRUE(h.seen & (1u << MFS_REPAIR_AT_BUILT));
		break;
	case A_TMPFS:
		CK_TRUE(err == -ENOSPC || err == -ENOMEM);
		break;
	default:
		break;
	}
	ck_assert_msg(reason[0], "no reason given");
	crc1 = tu_image_crc(m.t.fs, m.t.path);
	CK_EQ(crc1, crc0);
	assert_damaged(m.t.fs, type, 0);
	close(fd);
	if (h.pressure)
		mfs_pressure_stop(h.pressure);
	repair_ok(&m, type, 0);
	assert_repaired(&m);
	tu_img_destroy(&m.t);
}
END_TEST

/* Bad requests: refused, nothing changed. */
START_TEST(test_bad_requests)
{
	struct mfs_repair_ctx rc;
	struct rimg m;
	uint32_t crc0;
	int fd;

	img_make(&m);
	crc0 = tu_image_crc(m.t.fs, m.t.path);
	memset(&rc, 0, sizeof(rc));
	rc.fs = m.t.fs;
	rc.type = MFS_SCRUB_BNOBT;
	rc.nfds = 0;
	CK_EQ(mfs_repair(&rc), -EINVAL);                  /* no scratch */
	rc.nfds = 1;
	rc.fds[0] = open("/dev/null", O_RDWR);
	CK_EQ(mfs_repair(&rc), -EINVAL);                  /* not a regular file */
	close(rc.fds[0]);
	fd = open(m.t.path, O_RDONLY);
	rc.fds[0] = fd;
	CK_EQ(mfs_repair(&rc), -EINVAL);                  /* read-only */
	close(fd);
	rc.fds[0] = tu_scratch_fd(0);
	rc.agno = 99;
	CK_EQ(mfs_repair(&rc), -EINVAL);                  /* AG out of range */
	rc.agno = 0;
	rc.type = MFS_SCRUB_PROBE;                       /* nothing to rebuild */
	CK_EQ(mfs_repair(&rc), -EOPNOTSUPP);
	ck_assert_msg(rc.reason[0], "no reason");
	close(rc.fds[0]);
	CK_EQ(tu_image_crc(m.t.fs, m.t.path), crc0);
	tu_img_destroy(&m.t);
}
END_TEST

extern unsigned rep_live_chunk_batch;        /* repair/repair_rmap_live.h (private) */

/* The reverse map, damaged in each way: rebuilt online (the owners scanned, then settled
 * under the AG lock: repair_rmap_live.c), then clean ones offline in every AG. */
START_TEST(test_repair_rmap)
{
	enum damage how = (enum damage)_i;
	struct rimg m;

	img_make(&m);
	ck_assert_uint_ge(tree_levels(m.t.fs, 0, MFS_BT_RMAP), 2);
	damage(m.t.fs, 0, MFS_BT_RMAP, how);
	assert_damaged(m.t.fs, MFS_SCRUB_RMAPBT, 0);
	repair_flags = 0;
	repair_ok(&m, MFS_SCRUB_RMAPBT, 0);
	assert_repaired(&m);
	repair_flags = MFS_REPAIR_OFFLINE;
	for (uint32_t agno = 0; agno < m.t.fs->geo.agcount; agno++)
		repair_ok(&m, MFS_SCRUB_RMAPBT, agno);
	assert_repaired(&m);
	tu_img_destroy(&m.t);
}
END_TEST

static char rmap_info[512];

static void rmap_sink(int level, const char *msg, void *priv)
{
	(void)priv;
	if (level == MFS_LOG_INFO && strstr(msg, "reverse map rebuilt"))
		snprintf(rmap_info, sizeof(rmap_info), "%s", msg);
}

/* The owners' scan lists each AG's inode chunks a batch at a time (the list of them all
 * grew with the AG's inodes): listed one chunk at a time, a rebuild of a clean reverse map
 * still finds every owner in that first scan — none is left for the settle under the AG
 * lock to scan again (which would hide a chunk skipped). */
START_TEST(test_rmap_owners_batched)
{
	uint64_t chunks = 0;
	struct rimg m;

	img_make(&m);
	for (unsigned i = 0; i < 200; i++) {
		/* files that own a block each: an owner the scan skipped would be missed */
		uint64_t ino;
		struct mfs_inode *ip;
		struct mfs_trans *tp;
		struct mfs_bmap_ext ext;
		char name[32];

		snprintf(name, sizeof(name), "more%u", i);
		ino = new_inode(m.t.fs, m.t.fs->geo.rootino, name, S_IFREG | 0644);
		CK_OK(mfs_iget(m.t.fs, ino, 0, &ip));
		pthread_rwlock_wrlock(&ip->lock);
		CK_OK(mfs_trans_alloc(m.t.fs, &tp));
		CK_OK(mfs_bmap_alloc(tp, ip, 0, 1, 0, &ext));
		ip->size = m.t.fs->geo.blocksize;
		CK_OK(mfs_inode_log(tp, ip));
		CK_OK(mfs_trans_commit(tp));
		pthread_rwlock_unlock(&ip->lock);
		mfs_iput(ip);
	}
	for (uint32_t agno = 0; agno < m.t.fs->geo.agcount; agno++) {
		struct mfs_buf *bp;
		uint64_t n;

		CK_OK(mfs_read_agh(m.t.fs, agno, &bp));
		n = mfs_get32(((struct mfs_agh *)bp->data)->icount) / 64;
		chunks = n > chunks ? n : chunks;
		mfs_buf_put(bp);
	}
	ck_assert_uint_ge(chunks, 3);       /* an AG lists several */
	repair_flags = 0;
	rep_live_chunk_batch = 1;
	rmap_info[0] = 0;
	mfs_log_set_sink(rmap_sink, NULL);
	mfs_log_set_level(MFS_LOG_INFO);
	for (uint32_t agno = 0; agno < m.t.fs->geo.agcount; agno++) {
		repair_ok(&m, MFS_SCRUB_RMAPBT, agno);
		ck_assert_msg(strstr(rmap_info, ", 0 owner(s) scanned again"), "AG %u: %s", agno,
			      rmap_info);
	}
	mfs_log_set_sink(NULL, NULL);
	mfs_log_quiet();
	rep_live_chunk_batch = 4096;
	assert_repaired(&m);
	tu_img_destroy(&m.t);
}
END_TEST

/* The AG free list: a slot naming a tree block, a garbage block, blocks lost from the list
 * (its count lowered: they stay AG-owned and on no list). */
START_TEST(test_repair_agfl)
{
	struct mfs_fs *fs;
	struct mfs_buf *bp, *hbp;
	struct mfs_agh *agh;
	struct rimg m;

	img_make(&m);
	fs = m.t.fs;
	CK_OK(mfs_buf_read(fs->bc, mfs_agbno_to_fsb(&fs->geo, 0, MFS_AGH_AGBNO), NULL, &hbp));
	agh = hbp->data;
	CK_OK(mfs_buf_read(fs->bc, mfs_agbno_to_fsb(&fs->geo, 0, MFS_AGFL_AGBNO), NULL, &bp));
	ck_assert_uint_ge(mfs_get32(agh->fl_count), 3);
	if (_i == 0) {
		struct mfs_agfl *fl = bp->data;

		mfs_put32(fl->bno[mfs_get32(agh->fl_first)], mfs_get32(agh->roots[MFS_BT_CNT]));
		mfs_blk_seal(bp->data, fs->geo.blocksize);
	} else if (_i == 1) {
		for (uint32_t k = 0; k < fs->geo.blocksize; k++)
			((uint8_t *)bp->data)[k] = (uint8_t)tu_rand();
	} else {
		mfs_put32(agh->fl_count, mfs_get32(agh->fl_count) - 2);
		mfs_blk_seal(hbp->data, fs->geo.blocksize);
		mfs_buf_mark_dirty(hbp);
	}
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
	mfs_buf_put(hbp);
	CK_OK(mfs_bcache_flush(fs->bc));
	assert_damaged(fs, MFS_SCRUB_AGFL, 0);
	repair_ok(&m, MFS_SCRUB_AGFL, 0);
	assert_repaired(&m);
	tu_img_destroy(&m.t);
}
END_TEST

/* Every allocation of a repair failing in turn: each failure before the commit leaves the
 * image unchanged; the walk ends with a repair that met no failure (or failed only in the
 * check after its commit), and the result is clean. */
START_TEST(test_enomem)
{
	struct rimg m;
	char reason[1024];
	uint32_t crc0;
	uint64_t skip = 0, fails = 0;
	int fd, err = -1, done = 0;

	img_make(&m);
	damage(m.t.fs, 0, _i ? MFS_BT_INO : MFS_BT_BNO, D_FIELD);
	crc0 = tu_image_crc(m.t.fs, m.t.path);
	fd = tu_scratch_fd(0);
	while (!done && skip < 20000) {
		uint64_t before = mfs_mem_fault_injected();

		mfs_mem_fault_arm(skip, 1);
		err = repair(m.t.fs, _i ? MFS_SCRUB_INOBT : MFS_SCRUB_BNOBT, 0, fd, NULL, 0, reason,
			     sizeof(reason));
		mfs_mem_fault_disarm();
		if (mfs_mem_fault_injected() == before || !err ||
		    !strncmp(reason, "rebuilt,", 8)) {
			done = 1;
			break;
		}
		fails++;
		ck_assert_msg(err == -ENOMEM, "allocation %llu failing: %d (%s)",
			      (unsigned long long)skip, err, reason);
		CK_EQ(tu_image_crc(m.t.fs, m.t.path), crc0);
		skip += skip < 300 ? 1 : 1 + skip / 50;
	}
	CK_TRUE(done);
	ck_assert_uint_gt(fails, 10);
	close(fd);
	if (err)
		repair_ok(&m, _i ? MFS_SCRUB_INOBT : MFS_SCRUB_BNOBT, 0);
	assert_repaired(&m);
	tu_img_destroy(&m.t);
}
END_TEST

static Suite *repair_suite(void)
{
	Suite *s = suite_create("repair");
	TCase *tc = tcase_create("core");

	tcase_set_timeout(tc, UNDER_ASAN ? 300 : 120);   /* a hang bound: the ENOMEM runs took 15-29 s on a loaded machine */
	tcase_add_loop_test(tc, test_repair, 0, 9);
	tcase_add_loop_test(tc, test_rebuild_clean, 0, 2);
	tcase_add_loop_test(tc, test_abort, 0, A_NKINDS);
	tcase_add_test(tc, test_bad_requests);
	tcase_add_loop_test(tc, test_enomem, 0, 2);
	suite_add_tcase(s, tc);
	tc = tcase_create("rmap");
	tcase_set_timeout(tc, UNDER_ASAN ? 300 : 120);   /* a hang bound: the ENOMEM runs took 15-29 s on a loaded machine */
	tcase_add_test(tc, test_rmap_owners_batched);
	tcase_add_loop_test(tc, test_repair_rmap, 0, 3);
	tcase_add_loop_test(tc, test_repair_agfl, 0, 3);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	mfs_log_quiet();
	return tu_run_suite(repair_suite());
}
