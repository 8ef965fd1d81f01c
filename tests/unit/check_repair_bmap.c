/*
 * check_repair_bmap.c — the extent map and inode core rebuilders (repair/repair_bmap.c,
 * repair/repair_inode.c) on an image in process: a rebuild from the reverse map gives the
 * same extents, keeps the unwritten ones unwritten (the reverse map does not record it), in
 * both fork formats; a reverse map that puts the very blocks at another file offset makes
 * the rebuild refuse with the image unchanged; an inode whose data fork format no longer
 * loads gets its map back from the reverse map; a damaged header field is set right, a
 * garbage inode cleared; a btree directory whose mode says regular file is refused by the
 * extent map rebuild (its names would go) and given its type back by the inode rebuild.
 */
#include "tu.h"

#include "bcache.h"
#include "bmap.h"
#include "btree.h"
#include "byteorder.h"
#include "dir.h"
#include "format.h"
#include "fs.h"
#include "ialloc.h"
#include "inode.h"
#include "log.h"
#include "mem.h"
#include "repair.h"
#include "scrub.h"
#include "alloc.h"
#include "trans.h"
#include "verify.h"

#include <dirent.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#define NBLK 60u            /* file blocks of the test file */
#define MAXEXT 64u

struct map {
	struct mfs_bmap_ext e[MAXEXT];
	unsigned n;
	uint64_t nblocks;
	uint8_t dformat;
};

/* Map [off, off + len) (unwritten or not), one transaction per extent. */
static void map_range(struct mfs_inode *ip, uint64_t off, uint64_t len, unsigned flags)
{
	while (len) {
		struct mfs_bmap_ext e;
		struct mfs_trans *tp;

		CK_OK(mfs_trans_alloc(ip->fs, &tp));
		CK_OK(mfs_bmap_alloc(tp, ip, off, len, flags, &e));
		CK_OK(mfs_trans_commit(tp));
		off += e.len;
		len -= e.len;
	}
}

static void punch(struct mfs_inode *ip, uint64_t off)
{
	struct mfs_trans *tp;
	uint64_t done = 0;

	CK_OK(mfs_trans_alloc(ip->fs, &tp));
	CK_OK(mfs_bmap_punch(tp, ip, off, 1, &done));
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(done, 1);
}

/*
 * A file of NBLK blocks: [0, 20) written, [20, 40) unwritten, [40, 60) written; with
 * `holes`, every third block punched out (an extent btree: more extents than fit inline).
 */
static uint64_t make_file(struct mfs_fs *fs, const char *name, int holes)
{
	uint64_t ino = tu_mknode(fs, fs->geo.rootino, name, S_IFREG | 0644, 0, NULL);
	struct mfs_inode *ip;

	CK_OK(mfs_iget(fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	map_range(ip, 0, 20, 0);
	map_range(ip, 20, 20, MFS_BMAP_UNWRITTEN);
	map_range(ip, 40, 20, 0);
	for (uint64_t b = 1; holes && b < NBLK; b += 3)
		punch(ip, b);
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	return ino;
}

static int snap_fn(struct mfs_inode *ip, const struct mfs_bmap_ext *ext, void *priv)
{
	struct map *m = priv;

	ck_assert_uint_lt(m->n, MAXEXT);
	m->e[m->n++] = *ext;
	return 0;
}

static void snapshot(struct mfs_fs *fs, uint64_t ino, struct map *m)
{
	struct mfs_inode *ip;

	memset(m, 0, sizeof(*m));
	CK_OK(mfs_iget(fs, ino, 0, &ip));
	pthread_rwlock_rdlock(&ip->lock);
	CK_OK(mfs_bmap_walk(ip, snap_fn, m));
	m->nblocks = ip->nblocks;
	m->dformat = ip->dformat;
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
}

static void same_map(const struct map *a, const struct map *b)
{
	CK_EQ(a->n, b->n);
	CK_EQ(a->nblocks, b->nblocks);
	for (unsigned i = 0; i < a->n; i++) {
		CK_EQ(a->e[i].startoff, b->e[i].startoff);
		CK_EQ(a->e[i].startblock, b->e[i].startblock);
		CK_EQ(a->e[i].len, b->e[i].len);
		CK_EQ(a->e[i].unwritten, b->e[i].unwritten);
	}
}

/* The map as the reverse map alone tells it: every extent written, neighbours contiguous in
 * the file and on disk merged. */
static void all_written(struct map *m)
{
	unsigned k = 0;

	for (unsigned i = 0; i < m->n; i++) {
		m->e[i].unwritten = 0;
		if (k && m->e[k - 1].startoff + m->e[k - 1].len == m->e[i].startoff &&
		    m->e[k - 1].startblock + m->e[k - 1].len == m->e[i].startblock)
			m->e[k - 1].len += m->e[i].len;
		else
			m->e[k++] = m->e[i];
	}
	m->n = k;
}

/* The corruption flags of one inode check. */
static uint32_t check(struct mfs_fs *fs, uint32_t type, uint64_t ino)
{
	const uint32_t bad = MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT;
	struct tu_findings f;

	CK_OK(tu_scrub_one(fs, type, 0, ino, bad, &f));
	return f.flags & bad;
}

static int repair(struct mfs_fs *fs, uint32_t type, uint64_t ino, char *reason, size_t len)
{
	struct mfs_repair_ctx rc;
	int err = tu_repair_one(fs, type, 0, ino, NULL, NULL, &rc);

	snprintf(reason, len, "%s", rc.reason);
	return err;
}

/* Change the on-disk inode with fn (the cache forgets it), resealed. */
static void poke_inode(struct mfs_fs *fs, uint64_t ino, void (*fn)(struct mfs_dinode *d))
{
	struct mfs_buf *bp;
	struct mfs_dinode *d;

	CK_OK(mfs_buf_read(fs->bc, mfs_ino_to_fsb(&fs->geo, ino), NULL, &bp));
	d = (void *)((char *)bp->data + mfs_ino_to_offset(&fs->geo, ino));
	fn(d);
	mfs_dinode_seal(d, fs->geo.inodesize);
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
	mfs_inode_invalidate(fs, ino);
}

static void add_nblocks(struct mfs_dinode *d)
{
	mfs_put64(d->nblocks, mfs_get64(d->nblocks) + 5);
}

static void bad_dformat(struct mfs_dinode *d)
{
	d->dformat = MFS_FMT_DEV;
}

static void bad_self(struct mfs_dinode *d)
{
	mfs_put64(d->ino, mfs_get64(d->ino) + 1);
}

static void garbage(struct mfs_dinode *d)
{
	for (size_t k = 0; k < sizeof(*d); k++)
		((uint8_t *)d)[k] = (uint8_t)tu_rand();
	mfs_put16(d->mode, S_IFREG | 0644);     /* a file type: only the header tells */
}

static void img(struct tu_img *t)
{
	struct mfs_format_opts o = { .blocksize = 1024, .agcount = 4 };

	tu_srand(tu_seed("MFS_TEST_SEED", "check_repair_bmap"));
	tu_img_make(t, "mendfs_repair_bmap", 64ull << 20, &o, 0);
	tu_sb_mark_dirty(t->fs);
}

/* repair/repair_priv.h (private): the space an inode owns in one AG. */
int rep_inode_owned(struct mfs_inode *ip, uint32_t agno,
		    int (*fn)(void *priv, uint64_t ino, uint32_t agbno, uint32_t len,
			      uint64_t offset), void *priv);

static int count_owned(void *priv, uint64_t ino, uint32_t agbno, uint32_t len, uint64_t off)
{
	(void)ino;
	(void)agbno;
	(void)off;
	*(uint64_t *)priv += len;
	return 0;
}

/* The reverse map's scan of a file's extent btree keeps no set of the tree's blocks, whose
 * memory would grow with the file (4-6 MiB at 48M extents): with its blocks cached, the
 * scan allocates nothing at all, and finds every block the file owns. */
START_TEST(test_owner_scan_allocates_nothing)
{
	struct mfs_inode *ip;
	struct tu_img t;
	uint64_t ino, warm = 0, n = 0;
	int err = 0;

	img(&t);
	ino = make_file(t.fs, "f", 1);
	CK_OK(mfs_iget(t.fs, ino, 0, &ip));
	pthread_rwlock_rdlock(&ip->lock);
	CK_EQ(ip->dformat, MFS_FMT_BTREE);
	for (uint32_t a = 0; a < t.fs->geo.agcount; a++)
		CK_OK(rep_inode_owned(ip, a, count_owned, &warm));
	mfs_mem_fault_arm(0, 0);
	for (uint32_t a = 0; a < t.fs->geo.agcount && !err; a++)
		err = rep_inode_owned(ip, a, count_owned, &n);
	mfs_mem_fault_disarm();
	CK_OK(err);
	CK_EQ(n, warm);
	CK_EQ(n, ip->nblocks);
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	tu_img_destroy(&t);
}
END_TEST

/* A wrong block count: rebuilt, the very same extents (unwritten kept), in both formats. */
START_TEST(test_rebuild_keeps_map)
{
	struct tu_img t;
	struct map before, after;
	char reason[1024];
	uint64_t ino;

	img(&t);
	ino = make_file(t.fs, "f", _i);
	snapshot(t.fs, ino, &before);
	CK_EQ(before.dformat, _i ? MFS_FMT_BTREE : MFS_FMT_EXTENTS);
	poke_inode(t.fs, ino, add_nblocks);
	ck_assert_uint_ne(check(t.fs, MFS_SCRUB_BMAP, ino), 0);
	ck_assert_msg(repair(t.fs, MFS_SCRUB_BMAP, ino, reason, sizeof(reason)) == 0, "%s",
		      reason);
	snapshot(t.fs, ino, &after);
	same_map(&before, &after);
	CK_EQ(after.dformat, before.dformat);
	CK_EQ(check(t.fs, MFS_SCRUB_BMAP, ino), 0);
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}
END_TEST

/* Inode ino's size, in blocks. */
static void set_size(struct mfs_fs *fs, uint64_t ino, uint64_t blocks)
{
	struct mfs_inode *ip;
	struct mfs_trans *tp;

	CK_OK(mfs_iget(fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	ip->size = blocks * fs->geo.blocksize;
	CK_OK(mfs_trans_alloc(fs, &tp));
	CK_OK(mfs_inode_log(tp, ip));
	CK_OK(mfs_trans_commit(tp));
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
}

/*
 * Change the reverse-map record found at (MFS_LOOKUP_EQ) or before (MFS_LOOKUP_LE) block
 * fsb by hand, in a transaction of its own: edit() sees the record (and may check it) and
 * changes it in place.
 */
static void rmap_edit(struct mfs_fs *fs, uint64_t fsb, int mode,
		      void (*edit)(struct mfs_rmap_rec *rec, void *arg), void *arg)
{
	uint32_t agno = mfs_fsb_to_agno(&fs->geo, fsb);
	struct mfs_btree_cur cur;
	struct mfs_rmap_rec rec;
	struct mfs_rmap_key key;
	struct mfs_trans *tp;
	struct mfs_buf *hbp;
	int stat = 0;

	CK_OK(mfs_trans_alloc(fs, &tp));
	CK_OK(mfs_trans_lock_ag(tp, agno, 0));
	CK_OK(mfs_read_agh(fs, agno, &hbp));
	mfs_ag_cur_init(&cur, fs, tp, agno, MFS_BT_RMAP, hbp);
	mfs_put32(key.startblock, mfs_fsb_to_agbno(&fs->geo, fsb));
	CK_OK(mfs_btree_lookup_get(&cur, &key, mode, &rec, &stat));
	CK_EQ(stat, 1);
	edit(&rec, arg);
	CK_OK(mfs_btree_update(&cur, &rec));
	mfs_btree_cur_release(&cur);
	mfs_buf_put(hbp);
	CK_OK(mfs_trans_commit(tp));
}

/* test_offset_disagreement's edit: the record of the moved extent, 100 blocks further on. */
struct moved_rec {
	struct mfs_fs *fs;
	uint64_t ino, fsb;
	uint32_t len;           /* 0: the record may cover more than the extent */
};

static void move_offset(struct mfs_rmap_rec *rec, void *arg)
{
	const struct moved_rec *m = arg;
	uint64_t rs = mfs_agbno_to_fsb(&m->fs->geo, mfs_fsb_to_agno(&m->fs->geo, m->fsb),
				       mfs_get32(rec->startblock));

	CK_EQ(mfs_get64(rec->owner), m->ino);
	if (m->len)          /* the record is that extent's alone */
		CK_TRUE(rs == m->fsb && mfs_get32(rec->blockcount) == m->len);
	mfs_put64(rec->offset, mfs_get64(rec->offset) + 100);
}

/*
 * The reverse map moves data 100 blocks further into the file; the extent map's rebuild
 * settles the dispute by the file's size (repair_bmap.c offsets_dispute):
 *   0: the record of the last extent (the file without holes: one record for its written
 *      and unwritten extents), the size NBLK blocks: the reverse map puts written data
 *      past the end: its record is corrected, the map kept as it was (unwritten flags too);
 *   1: the record of an unwritten extent alone (the file with holes, an extent btree),
 *      the same size: the reverse map's placement past the end is the damaged one: the
 *      same, the extent still unwritten;
 *   2: the last extent's record, the size 0: both placements past the end, the size tells
 *      nothing: the reverse map's word (as xfs_scrub's), the map rebuilt with that extent
 *      moved.
 * Either way both checkers are clean after it.
 */
START_TEST(test_offset_disagreement)
{
	struct tu_img t;
	struct map before, after;
	struct moved_rec m;
	char reason[1024];
	uint64_t ino, fsb;
	unsigned moved = 0;

	img(&t);
	ino = make_file(t.fs, "f", _i != 0);
	set_size(t.fs, ino, _i == 2 ? 0 : NBLK);
	snapshot(t.fs, ino, &before);
	for (unsigned k = 0; k < before.n; k++)
		if (_i == 1 ? before.e[k].unwritten : 1)
			moved = k;
	if (_i == 1)
		ck_assert_uint_gt(before.n, 6);
	fsb = before.e[moved].startblock;
	m = (struct moved_rec){ t.fs, ino, fsb, _i ? before.e[moved].len : 0 };
	rmap_edit(t.fs, fsb, MFS_LOOKUP_LE, move_offset, &m);
	CK_OK(mfs_bcache_flush(t.fs->bc));
	ck_assert_uint_ne(check(t.fs, MFS_SCRUB_BMAP, ino), 0);
	ck_assert_msg(repair(t.fs, MFS_SCRUB_BMAP, ino, reason, sizeof(reason)) == 0, "%s",
		      reason);
	snapshot(t.fs, ino, &after);
	if (_i == 2)
		before.e[moved].startoff += 100;
	same_map(&before, &after);
	CK_EQ(check(t.fs, MFS_SCRUB_BMAP, ino), 0);
	for (uint32_t a = 0; a < t.fs->geo.agcount; a++) {
		struct tu_findings f;

		CK_OK(tu_scrub_one(t.fs, MFS_SCRUB_RMAPBT, a, 0, 0, &f));
		ck_assert_msg(f.n == 0, "AG %u reverse map: %s", a, f.first);
	}
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}
END_TEST

/* Damage inode ino with fn so that it no longer loads, repair it: its map comes back from
 * the reverse map (the unwritten extents written: the old map cannot be read), and both
 * checkers find it clean. */
static void unloadable_repaired(struct tu_img *t, uint64_t ino, void (*fn)(struct mfs_dinode *))
{
	struct map before, after;
	char reason[1024];
	struct mfs_inode *ip;

	snapshot(t->fs, ino, &before);
	poke_inode(t->fs, ino, fn);
	ck_assert_int_lt(mfs_iget(t->fs, ino, 0, &ip), 0);
	ck_assert_msg(repair(t->fs, MFS_SCRUB_INODE, ino, reason, sizeof(reason)) == 0, "%s",
		      reason);
	snapshot(t->fs, ino, &after);
	all_written(&before);
	same_map(&before, &after);
	CK_EQ(check(t->fs, MFS_SCRUB_INODE, ino), 0);
	CK_EQ(check(t->fs, MFS_SCRUB_BMAP, ino), 0);
}

/* A data fork format the loader refuses, a damaged self number: repaired. */
START_TEST(test_inode_unloadable)
{
	struct tu_img t;

	img(&t);
	unloadable_repaired(&t, make_file(t.fs, "f", _i & 1), _i & 2 ? bad_self : bad_dformat);
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}
END_TEST

static uint32_t ag_free(struct mfs_fs *fs, uint32_t agno)
{
	struct mfs_trans *tp;
	uint32_t n = 0;

	CK_OK(mfs_trans_alloc(fs, &tp));
	CK_OK(mfs_ag_freeblks(tp, agno, &n));
	mfs_trans_cancel(tp);
	return n;
}

/* An inode whose header is garbage is cleared: its blocks freed, the inode free. */
START_TEST(test_inode_cleared)
{
	struct tu_img t;
	struct map m;
	char reason[1024];
	struct mfs_inode *ip;
	uint64_t ino;
	uint32_t freeb;

	img(&t);
	ino = make_file(t.fs, "f", 1);
	snapshot(t.fs, ino, &m);
	freeb = ag_free(t.fs, 0);
	poke_inode(t.fs, ino, garbage);
	ck_assert_msg(repair(t.fs, MFS_SCRUB_INODE, ino, reason, sizeof(reason)) == 0, "%s",
		      reason);
	CK_EQ(mfs_iget(t.fs, ino, 0, &ip), -ENOENT);
	CK_EQ(ag_free(t.fs, 0), freeb + m.nblocks);
	tu_img_destroy(&t);
}
END_TEST

#define NNAMES 150u        /* entries of the btree directory: a two-level name btree */

static void mode_file(struct mfs_dinode *d)
{
	mfs_put16(d->mode, S_IFREG | 0755);
}

static int has_name(struct mfs_fs *fs, uint64_t dir, const char *name)
{
	struct mfs_inode *dp;
	uint64_t ino;
	int err;

	CK_OK(mfs_iget(fs, dir, 0, &dp));
	pthread_rwlock_rdlock(&dp->lock);
	err = mfs_dir_lookup(dp, name, (unsigned)strlen(name), &ino, NULL);
	pthread_rwlock_unlock(&dp->lock);
	mfs_iput(dp);
	return err == 0;
}

/* A btree directory whose mode says regular file (it loads: a file may have a btree data
 * fork): the extent map rebuild would find no data extents in the reverse map and free the
 * name btree.  It refuses, naming the inode, with the image unchanged; the inode record
 * rebuild tells the type from the fork and the entry naming it, and every name stays. */
START_TEST(test_names_btree_as_file)
{
	struct tu_img t;
	struct mfs_inode *ip;
	char reason[1024], name[32];
	uint64_t dir;
	uint32_t crc;

	img(&t);
	dir = tu_mknode(t.fs, t.fs->geo.rootino, "d", S_IFDIR | 0755, 0, NULL);
	for (unsigned i = 0; i < NNAMES; i++) {
		snprintf(name, sizeof(name), "n-%03u", i);
		tu_mknode(t.fs, dir, name, S_IFREG | 0644, 0, NULL);
	}
	CK_OK(mfs_iget(t.fs, dir, 0, &ip));
	CK_EQ(ip->dformat, MFS_FMT_BTREE);
	mfs_iput(ip);
	poke_inode(t.fs, dir, mode_file);
	CK_OK(mfs_bcache_flush(t.fs->bc));
	CK_OK(mfs_iget(t.fs, dir, 0, &ip));     /* it loads, as a regular file */
	CK_EQ(ip->mode, S_IFREG | 0755);
	mfs_iput(ip);
	crc = tu_image_crc(t.fs, t.path);
	CK_EQ(repair(t.fs, MFS_SCRUB_BMAP, dir, reason, sizeof(reason)), -EFSCORRUPTED);
	snprintf(name, sizeof(name), "inode %llu", (unsigned long long)dir);
	ck_assert_msg(strstr(reason, name) && strstr(reason, "name btree"), "%s", reason);
	CK_EQ(tu_image_crc(t.fs, t.path), crc);
	ck_assert_msg(repair(t.fs, MFS_SCRUB_INODE, dir, reason, sizeof(reason)) == 0, "%s",
		      reason);
	CK_OK(mfs_iget(t.fs, dir, 0, &ip));
	CK_EQ(ip->mode, S_IFDIR | 0755);
	mfs_iput(ip);
	for (unsigned i = 0; i < NNAMES; i++) {
		snprintf(name, sizeof(name), "n-%03u", i);
		ck_assert_msg(has_name(t.fs, dir, name), "%s lost", name);
	}
	CK_EQ(check(t.fs, MFS_SCRUB_INODE, dir), 0);
	CK_EQ(check(t.fs, MFS_SCRUB_BMAP, dir), 0);
	CK_EQ(check(t.fs, MFS_SCRUB_DIR, dir), 0);
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}
END_TEST

static void zero_mode(struct mfs_dinode *d)
{
	mfs_put16(d->mode, 0);
}

static int dinode_in_use(struct mfs_fs *fs, uint64_t ino)
{
	struct mfs_buf *bp;
	int in_use;

	CK_OK(mfs_buf_read(fs->bc, mfs_ino_to_fsb(&fs->geo, ino), NULL, &bp));
	in_use = mfs_dinode_in_use((char *)bp->data + mfs_ino_to_offset(&fs->geo, ino));
	mfs_buf_put(bp);
	return in_use;
}

/*
 * A mode zeroed whole (_i: 0 a file with an extent btree, 1 an inline directory with
 * entries, 2 an inline symlink; t_repair_inodes has one whose target is in a block): the inode is still in use (mfs_dinode_in_use) — the
 * inode btree's checker agrees with its free mask, and a rebuild of the inode btree keeps it
 * allocated (taken for free, its chunk record would drop it and its blocks would leak); the
 * reverse map's rebuild refuses (its owner cannot be loaded) changing nothing; the inode's
 * checker reports it, and its rebuild gives the type back from the fork and the entry
 * naming it, with the owner's permissions alone, and keeps the forks (nothing else was
 * wrong): the map as it was, its unwritten extents still unwritten, names and target kept.
 */
START_TEST(test_zeroed_mode)
{
	static const char target[] = "an/inline/target";
	const uint32_t bad = MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT;
	struct tu_img t;
	struct tu_findings f;
	struct mfs_inode *ip;
	struct map before, after;
	char reason[1024], name[32];
	uint64_t ino;
	uint32_t agno, crc;
	uint16_t want;

	img(&t);
	if (_i == 0) {
		ino = make_file(t.fs, "f", 1);
		want = S_IFREG | 0600;
	} else if (_i == 1) {
		ino = tu_mknode(t.fs, t.fs->geo.rootino, "d", S_IFDIR | 0755, 0, NULL);
		for (unsigned i = 0; i < 5; i++) {
			snprintf(name, sizeof(name), "n-%u", i);
			tu_mknode(t.fs, ino, name, S_IFREG | 0644, 0, NULL);
		}
		want = S_IFDIR | 0700;
	} else {
		ino = tu_mknode(t.fs, t.fs->geo.rootino, "l", S_IFLNK | 0777, 0, target);
		want = S_IFLNK | 0777;
	}
	memset(&before, 0, sizeof(before));
	if (_i == 0) {
		snapshot(t.fs, ino, &before);
		CK_EQ(before.dformat, MFS_FMT_BTREE);
	}
	agno = mfs_ino_to_agno(&t.fs->geo, ino);
	poke_inode(t.fs, ino, zero_mode);
	CK_OK(mfs_bcache_flush(t.fs->bc));
	CK_TRUE(dinode_in_use(t.fs, ino));
	ck_assert_int_lt(mfs_iget(t.fs, ino, 0, &ip), 0);

	CK_OK(tu_scrub_one(t.fs, MFS_SCRUB_INOBT, agno, 0, bad, &f));
	ck_assert_msg(f.n == 0, "inode btree: %s", f.first);
	ck_assert_msg(tu_repair_one(t.fs, MFS_SCRUB_INOBT, agno, 0, NULL, NULL, NULL) == 0,
		      "forced inode btree rebuild");
	CK_EQ(mfs_ino_in_use_locked(t.fs, ino), 0);
	CK_OK(tu_scrub_one(t.fs, MFS_SCRUB_INOBT, agno, 0, bad, &f));
	ck_assert_msg(f.n == 0, "inode btree after its rebuild: %s", f.first);

	if (before.n) {
		uint32_t dagno = mfs_fsb_to_agno(&t.fs->geo, before.e[0].startblock);
		struct mfs_repair_ctx rc;

		CK_OK(mfs_bcache_flush(t.fs->bc));
		crc = tu_image_crc(t.fs, t.path);
		CK_EQ(tu_repair_one(t.fs, MFS_SCRUB_RMAPBT, dagno, 0, NULL, NULL, &rc),
		      -EFSCORRUPTED);
		ck_assert_msg(strstr(rc.reason, "cannot be loaded"), "%s", rc.reason);
		CK_EQ(tu_image_crc(t.fs, t.path), crc);
	}

	ck_assert_uint_ne(check(t.fs, MFS_SCRUB_INODE, ino), 0);
	ck_assert_msg(repair(t.fs, MFS_SCRUB_INODE, ino, reason, sizeof(reason)) == 0, "%s",
		      reason);
	CK_OK(mfs_iget(t.fs, ino, 0, &ip));
	CK_EQ(ip->mode, want);
	if (_i == 2)
		CK_EQ(ip->size, sizeof(target) - 1);
	mfs_iput(ip);
	if (_i == 0) {
		snapshot(t.fs, ino, &after);
		same_map(&before, &after);      /* its fork kept: the unwritten extents too */
	}
	for (unsigned i = 0; _i == 1 && i < 5; i++) {
		snprintf(name, sizeof(name), "n-%u", i);
		ck_assert_msg(has_name(t.fs, ino, name), "%s lost", name);
	}
	CK_EQ(check(t.fs, MFS_SCRUB_INODE, ino), 0);
	CK_EQ(check(t.fs, MFS_SCRUB_BMAP, ino), 0);
	CK_EQ(check(t.fs, _i == 1 ? MFS_SCRUB_DIR : _i == 2 ? MFS_SCRUB_SYMLINK : MFS_SCRUB_BMAP,
		    ino), 0);
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}
END_TEST

/*
 * A second reverse-map record of the file over a block that its first record already gives
 * it, at a file offset past its extents: the reverse map maps that block twice.  The
 * extent map's rebuild must not take both (the file would be cross-linked with itself): it
 * refuses, nothing changes, the reverse map is to be rebuilt first.
 */
START_TEST(test_rmap_overlap_refused)
{
	struct tu_img t;
	struct map before, after;
	struct mfs_btree_cur cur;
	struct mfs_rmap_rec rec;
	struct mfs_trans *tp;
	struct mfs_buf *hbp;
	char reason[1024];
	uint64_t ino, fsb;
	uint32_t agno;

	img(&t);
	ino = make_file(t.fs, "f", 0);
	snapshot(t.fs, ino, &before);
	ck_assert_uint_ge(before.e[0].len, 3);
	fsb = before.e[0].startblock + 1;
	agno = mfs_fsb_to_agno(&t.fs->geo, fsb);
	memset(&rec, 0, sizeof(rec));
	mfs_put32(rec.startblock, mfs_fsb_to_agbno(&t.fs->geo, fsb));
	mfs_put32(rec.blockcount, 1);
	mfs_put64(rec.owner, ino);
	mfs_put64(rec.offset, 1000);
	CK_OK(mfs_trans_alloc(t.fs, &tp));
	CK_OK(mfs_trans_lock_ag(tp, agno, 0));
	CK_OK(mfs_read_agh(t.fs, agno, &hbp));
	mfs_ag_cur_init(&cur, t.fs, tp, agno, MFS_BT_RMAP, hbp);
	CK_OK(mfs_btree_insert(&cur, &rec));
	mfs_btree_cur_release(&cur);
	mfs_buf_put(hbp);
	CK_OK(mfs_trans_commit(tp));
	CK_EQ(repair(t.fs, MFS_SCRUB_BMAP, ino, reason, sizeof(reason)), -EFSCORRUPTED);
	ck_assert_msg(strstr(reason, "rebuild the reverse map first"), "%s", reason);
	snapshot(t.fs, ino, &after);
	same_map(&before, &after);
	tu_img_destroy(&t);
}
END_TEST

/* Add delta to the file offset of the reverse-map record at fsb (its owner's). */
struct shift { uint64_t owner; int64_t delta; };

static void shift_offset(struct mfs_rmap_rec *rec, void *arg)
{
	const struct shift *sh = arg;

	CK_EQ(mfs_get64(rec->owner), sh->owner);
	mfs_put64(rec->offset, mfs_get64(rec->offset) + (uint64_t)sh->delta);
}

static void rmap_shift(struct mfs_fs *fs, uint64_t fsb, uint64_t owner, int64_t delta)
{
	struct shift sh = { owner, delta };

	rmap_edit(fs, fsb, MFS_LOOKUP_EQ, shift_offset, &sh);
}

/*
 * The reverse-map check against an owner whose extent map is a btree of several leaves,
 * read forward by file offset (scrub_rmap.c's struct owner bm), its records taken in one
 * window or in windows of 7 or 1 (the owner kept from one to the next): clean as built; a record
 * moved to a file offset in a hole, to the next extent's, far ahead, back to the start,
 * or past the last extent — at the first, a leaf-boundary, a middle and the last extent —
 * is reported each time, and the map is clean again once the record is set back.
 */
extern unsigned scrub_rmap_window;     /* repair/scrub_rmap.c: records per window */

START_TEST(test_rmap_check_btree_owner)
{
	static const unsigned window[] = { 65536, 7, 1 };
	static const unsigned at[] = { 0, 39, 40, 150, 299 };
	static const int64_t shift[] = { 1, 2, 150, -1000000, 1000 };
	const uint32_t bad = MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT;
	struct tu_img t;
	struct tu_findings f;
	struct mfs_inode *ip;
	uint64_t ino;
	uint32_t agno;

	scrub_rmap_window = window[_i];
	img(&t);
	ino = tu_mknode(t.fs, t.fs->geo.rootino, "many", S_IFREG | 0644, 0, NULL);
	CK_OK(mfs_iget(t.fs, ino, 0, &ip));
	pthread_rwlock_wrlock(&ip->lock);
	map_range(ip, 0, 600, 0);
	for (uint64_t b = 1; b < 600; b += 2)
		punch(ip, b);
	pthread_rwlock_unlock(&ip->lock);
	mfs_iput(ip);
	{
		/* the extents, 300 of them (snapshot keeps MAXEXT) */
		static struct mfs_bmap_ext e[300];
		unsigned n = 0;

		CK_OK(mfs_iget(t.fs, ino, 0, &ip));
		pthread_rwlock_rdlock(&ip->lock);
		CK_EQ(ip->dformat, MFS_FMT_BTREE);
		for (uint64_t off = 0; off < 600; off += 2) {
			CK_OK(mfs_bmap_lookup(ip, off, &e[n]));
			ck_assert_uint_ne(e[n].startblock, MFS_BMAP_HOLE);
			CK_EQ(e[n].startoff, off);
			CK_EQ(e[n].len, 1);
			n++;
		}
		pthread_rwlock_unlock(&ip->lock);
		mfs_iput(ip);
		agno = mfs_fsb_to_agno(&t.fs->geo, e[0].startblock);
		for (unsigned k = 0; k < n; k++)
			CK_EQ(mfs_fsb_to_agno(&t.fs->geo, e[k].startblock), agno);
		CK_OK(tu_scrub_one(t.fs, MFS_SCRUB_RMAPBT, agno, 0, bad, &f));
		ck_assert_msg(f.n == 0, "clean map: %s", f.first);
		for (unsigned a = 0; a < sizeof(at) / sizeof(at[0]); a++)
			for (unsigned s = 0; s < sizeof(shift) / sizeof(shift[0]); s++) {
				int64_t d = shift[s] == -1000000 ? -(int64_t)e[at[a]].startoff :
					    shift[s];

				if (!d)
					continue;
				rmap_shift(t.fs, e[at[a]].startblock, ino, d);
				CK_OK(tu_scrub_one(t.fs, MFS_SCRUB_RMAPBT, agno, 0, bad, &f));
				ck_assert_msg(f.n == 1 && strstr(f.first, "elsewhere"),
					      "extent %u moved by %lld: %u findings: %s", at[a],
					      (long long)d, f.n, f.first);
				rmap_shift(t.fs, e[at[a]].startblock, ino, -d);
				CK_OK(tu_scrub_one(t.fs, MFS_SCRUB_RMAPBT, agno, 0, bad, &f));
				ck_assert_msg(f.n == 0, "set back: %s", f.first);
			}
	}
	tu_img_db_check(&t);
	tu_img_destroy(&t);
	scrub_rmap_window = window[0];
}
END_TEST

/*
 * The same in windows with several owners whose extents interleave on disk (files written
 * in turn, one block each): each window's records are sorted by owner, so the owner kept
 * from one window is dropped for the next window's first owner and taken again later.
 * Windows of 1, 2, 7 and all: clean as built; a record of each file, at the first, middle
 * and last of its extents, moved to a hole is reported once, and clean once set back.
 */
#define NOWN 3u
#define OWN_EXT 40u

START_TEST(test_rmap_check_owners_interleaved)
{
	static const unsigned window[] = { 1, 2, 7, 65536 };
	static const unsigned at[] = { 0, OWN_EXT / 2, OWN_EXT - 1 };
	const uint32_t bad = MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT;
	static struct mfs_bmap_ext e[NOWN][OWN_EXT];
	struct mfs_inode *ip[NOWN];
	uint64_t ino[NOWN];
	struct tu_findings f;
	struct tu_img t;
	uint32_t agno;

	img(&t);
	for (unsigned k = 0; k < NOWN; k++) {
		char name[16];

		snprintf(name, sizeof(name), "own%u", k);
		ino[k] = tu_mknode(t.fs, t.fs->geo.rootino, name, S_IFREG | 0644, 0, NULL);
		CK_OK(mfs_iget(t.fs, ino[k], 0, &ip[k]));
	}
	/* every other file block, in turn: the extents of the files interleave on disk */
	for (unsigned x = 0; x < OWN_EXT; x++)
		for (unsigned k = 0; k < NOWN; k++) {
			pthread_rwlock_wrlock(&ip[k]->lock);
			map_range(ip[k], 2 * x, 1, 0);
			pthread_rwlock_unlock(&ip[k]->lock);
		}
	for (unsigned k = 0; k < NOWN; k++) {
		pthread_rwlock_rdlock(&ip[k]->lock);
		for (unsigned x = 0; x < OWN_EXT; x++) {
			CK_OK(mfs_bmap_lookup(ip[k], 2 * x, &e[k][x]));
			CK_EQ(e[k][x].startoff, 2 * x);
			CK_EQ(e[k][x].len, 1);
		}
		pthread_rwlock_unlock(&ip[k]->lock);
		mfs_iput(ip[k]);
	}
	agno = mfs_fsb_to_agno(&t.fs->geo, e[0][0].startblock);
	for (unsigned k = 0; k < NOWN; k++)
		for (unsigned x = 0; x < OWN_EXT; x++)
			CK_EQ(mfs_fsb_to_agno(&t.fs->geo, e[k][x].startblock), agno);
	/* interleaved: a block of owner 1 lies between two of owner 0's */
	{
		uint64_t lo = UINT64_MAX, hi = 0;

		for (unsigned x = 0; x < OWN_EXT; x++) {
			lo = e[0][x].startblock < lo ? e[0][x].startblock : lo;
			hi = e[0][x].startblock > hi ? e[0][x].startblock : hi;
		}
		ck_assert(e[1][OWN_EXT / 2].startblock > lo && e[1][OWN_EXT / 2].startblock < hi);
	}
	for (unsigned w = 0; w < sizeof(window) / sizeof(window[0]); w++) {
		scrub_rmap_window = window[w];
		CK_OK(tu_scrub_one(t.fs, MFS_SCRUB_RMAPBT, agno, 0, bad, &f));
		ck_assert_msg(f.n == 0, "window %u, clean: %s", window[w], f.first);
		for (unsigned k = 0; k < NOWN; k++)
			for (unsigned a = 0; a < sizeof(at) / sizeof(at[0]); a++) {
				rmap_shift(t.fs, e[k][at[a]].startblock, ino[k], 1);
				CK_OK(tu_scrub_one(t.fs, MFS_SCRUB_RMAPBT, agno, 0, bad, &f));
				ck_assert_msg(f.n == 1 && strstr(f.first, "elsewhere"),
					      "window %u, file %u extent %u moved: %u findings: %s",
					      window[w], k, at[a], f.n, f.first);
				rmap_shift(t.fs, e[k][at[a]].startblock, ino[k], -1);
				CK_OK(tu_scrub_one(t.fs, MFS_SCRUB_RMAPBT, agno, 0, bad, &f));
				ck_assert_msg(f.n == 0, "window %u, set back: %s", window[w], f.first);
			}
	}
	scrub_rmap_window = 65536;
	tu_img_db_check(&t);
	tu_img_destroy(&t);
}
END_TEST

/*
 * A record across the boundary of two windows: between them, the record the next window
 * starts at comes to begin a block earlier (as when its owner's extent grows at its front
 * and the record with it).  The next window must take it all the same (it covers the
 * window's first block): here the record so grown does not match its owner's map, and is
 * reported.  The record is changed by hand (scrub_rmap_between), so the AG is left damaged.
 */
extern void (*scrub_rmap_between)(struct mfs_fs *fs, uint32_t agno, uint32_t from);
static uint64_t grow_fsb;              /* the record to grow at its front (once) */

static void grow_rec(struct mfs_rmap_rec *rec, void *arg)
{
	(void)arg;
	mfs_put32(rec->startblock, mfs_get32(rec->startblock) - 1);
	mfs_put32(rec->blockcount, mfs_get32(rec->blockcount) + 1);
}

static void grow_front(struct mfs_fs *fs, uint32_t agno, uint32_t from)
{
	if (!grow_fsb || mfs_fsb_to_agno(&fs->geo, grow_fsb) != agno ||
	    mfs_fsb_to_agbno(&fs->geo, grow_fsb) != from)
		return;
	grow_fsb = 0;
	rmap_edit(fs, mfs_agbno_to_fsb(&fs->geo, agno, from), MFS_LOOKUP_EQ, grow_rec, NULL);
}

START_TEST(test_rmap_window_boundary_moves)
{
	const uint32_t bad = MFS_SCRUB_OFLAG_CORRUPT | MFS_SCRUB_OFLAG_XCORRUPT;
	struct mfs_bmap_ext e[3];
	struct mfs_inode *ip[3];
	struct tu_findings f;
	struct tu_img t;
	uint64_t ino[3];

	img(&t);
	/* three one-block files in a row, the middle one removed: a free block before the
	 * last one's record */
	for (unsigned k = 0; k < 3; k++) {
		char name[16];

		snprintf(name, sizeof(name), "g%u", k);
		ino[k] = tu_mknode(t.fs, t.fs->geo.rootino, name, S_IFREG | 0644, 0, NULL);
		CK_OK(mfs_iget(t.fs, ino[k], 0, &ip[k]));
		pthread_rwlock_wrlock(&ip[k]->lock);
		map_range(ip[k], 0, 1, 0);
		CK_OK(mfs_bmap_lookup(ip[k], 0, &e[k]));
		pthread_rwlock_unlock(&ip[k]->lock);
	}
	/* in a row, up or down the AG */
	ck_assert(e[0].startblock + e[2].startblock == 2 * e[1].startblock &&
		  (e[1].startblock == e[0].startblock + 1 || e[1].startblock + 1 == e[0].startblock));
	pthread_rwlock_wrlock(&ip[1]->lock);
	punch(ip[1], 0);
	pthread_rwlock_unlock(&ip[1]->lock);
	for (unsigned k = 0; k < 3; k++)
		mfs_iput(ip[k]);
	scrub_rmap_window = 1;
	grow_fsb = e[1].startblock + 1;       /* the record after the free block */
	scrub_rmap_between = grow_front;
	CK_OK(tu_scrub_one(t.fs, MFS_SCRUB_RMAPBT, mfs_fsb_to_agno(&t.fs->geo, grow_fsb), 0, bad,
			   &f));
	scrub_rmap_between = NULL;
	scrub_rmap_window = 65536;
	CK_EQ(grow_fsb, 0);             /* grown, between two windows */
	ck_assert_msg(f.n == 1 && strstr(f.first, "elsewhere"), "%u findings: %s", f.n, f.first);
	tu_img_destroy(&t);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("repair_bmap");
	TCase *tc = tcase_create("core");

	mfs_log_quiet();
	tcase_set_timeout(tc, 60);
	tcase_add_loop_test(tc, test_rebuild_keeps_map, 0, 2);
	tcase_add_test(tc, test_owner_scan_allocates_nothing);
	tcase_add_loop_test(tc, test_offset_disagreement, 0, 3);
	tcase_add_loop_test(tc, test_inode_unloadable, 0, 4);
	tcase_add_test(tc, test_inode_cleared);
	tcase_add_test(tc, test_names_btree_as_file);
	tcase_add_loop_test(tc, test_zeroed_mode, 0, 3);
	tcase_add_loop_test(tc, test_rmap_check_btree_owner, 0, 3);
	tcase_add_test(tc, test_rmap_check_owners_interleaved);
	tcase_add_test(tc, test_rmap_overlap_refused);
	tcase_add_test(tc, test_rmap_window_boundary_moves);
	suite_add_tcase(s, tc);
	return tu_run_suite_needing("mendfs_db", s);
}
