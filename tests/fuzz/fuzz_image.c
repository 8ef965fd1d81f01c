/*
 * fuzz_image.c — libFuzzer target for the image-open path: superblock decode and
 * validation, AG headers, AG free lists, every block verifier, the AG btree walks and
 * every checker of repair/ (mfs_scrub on each object, as `mendfs_db check -f` runs them).
 *
 * The image.  At start-up a small filesystem (4 AGs of 1 KiB blocks, a fixed UUID and
 * time, so it is the same on every run) is formatted in memory (a memfd) and given some
 * content: a few hundred short extents in AG 1 (its free-space and reverse-map trees get
 * two levels).  Its metadata is then
 * described as a list of "windows": for each block that is not all zeroes, its bytes up to
 * the last non-zero one plus a margin.  A fuzz input is laid over those windows in order,
 * so that each input byte lands on a byte of metadata that means something:
 *
 *     input[0]        flags: bit 0 reseal the CRC of every block (and inode) touched, so
 *                     that the structural checks behind the CRC are reached; bit 1
 *                     open read-write with the journal (replay, as the daemon mounts),
 *                     after which the whole image is restored;
 *     input[1..]      the bytes of the windows, in order; a shorter input leaves the rest
 *                     of the image as formatted, a longer one is cut.
 *
 * Each input: the windows are restored from the pristine copy, the input is laid over
 * them, the image is opened read-only (mfs_fs_open: primary superblock), the inode cache
 * attached, and then every checker runs: per AG superblock copy, AG header, free list and
 * the four trees; per allocated inode (found through each AG's inode btree) its core,
 * extent map, directory, attributes and symlink; then journal, link counts, orphan lists
 * and summary counters; last the journal header (mfs_journal_peek).  Results do not
 * matter; a crash, a sanitizer report or a leak does.
 *
 * `FUZZ_IMAGE_SEED=path fuzz_image -runs=0` writes the pristine windows (flags byte 1)
 * to path: the seed corpus generator (tests/fuzz/gen_corpus.sh).
 */
#include "ag.h"
#include "alloc.h"
#include "bcache.h"
#include "btree.h"
#include "byteorder.h"
#include "dev.h"
#include "format.h"
#include "fs.h"
#include "geom.h"
#include "inode.h"
#include "journal.h"
#include "log.h"
#include "mendfs_format.h"
#include "scrub.h"
#include "trans.h"
#include "verify.h"

#include "fz.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FZ_MARGIN    32u          /* bytes kept after a block's last non-zero byte */
#define FZ_CACHE     (2u << 20)

#define FZ_RESEAL    0x1u
#define FZ_REPLAY    0x2u

struct window {
	uint64_t off;                 /* byte offset in the image */
	uint32_t len;
};

static int img_fd = -1;
static char img_path[FZ_PATH_MAX];
static uint8_t *pristine;         /* the whole image as formatted */
static struct window *win;
static size_t nwin, win_bytes;
static int verbose;               /* FUZZ_VERBOSE set: the library's messages, results */

/* Read the pristine image back and make the windows: every non-zero block's bytes up to
 * its last non-zero byte, plus a margin. */
static void make_windows(void)
{
	size_t cap = 0;

	pristine = malloc(FZ_BYTES);
	if (!pristine)
		fz_die("pristine copy", ENOMEM);
	if (pread(img_fd, pristine, FZ_BYTES, 0) != (ssize_t)FZ_BYTES)
		fz_die("read the image", EIO);
	for (uint64_t b = 0; b < FZ_BYTES / FZ_BS; b++) {
		const uint8_t *p = pristine + b * FZ_BS;
		uint32_t last = FZ_BS;

		while (last > 0 && p[last - 1] == 0)
			last--;
		if (last == 0)
			continue;
		last = last + FZ_MARGIN > FZ_BS ? FZ_BS : last + FZ_MARGIN;
		if (nwin == cap) {
			cap = cap ? 2 * cap : 256;
			win = realloc(win, cap * sizeof(*win));
			if (!win)
				fz_die("windows", ENOMEM);
		}
		win[nwin].off = b * FZ_BS;
		win[nwin].len = last;
		nwin++;
		win_bytes += last;
	}
}

static void write_seed(const char *path)
{
	FILE *f = fopen(path, "w");

	if (!f)
		fz_die(path, errno);
	fputc(FZ_RESEAL, f);
	for (size_t i = 0; i < nwin; i++)
		fwrite(pristine + win[i].off, 1, win[i].len, f);
	if (fclose(f) != 0)
		fz_die(path, errno);
	fprintf(stderr, "fuzz_image: seed of %zu bytes (%zu windows) written to %s\n",
		win_bytes + 1, nwin, path);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	const char *seed = getenv("FUZZ_IMAGE_SEED");

	(void)argc;
	(void)argv;
	img_fd = fz_image_make(img_path);
	make_windows();
	if (seed)
		write_seed(seed);
	verbose = getenv("FUZZ_VERBOSE") != NULL;
	if (verbose)
		fprintf(stderr, "fuzz_image: %zu windows, %zu bytes\n", nwin, win_bytes);
	if (!verbose)
		mfs_log_quiet();
	return 0;
}

/* ---- one input ------------------------------------------------------------------------------ */

static int is_block_magic(uint32_t m)
{
	switch (m) {
	case MFS_SB_MAGIC: case MFS_AGH_MAGIC: case MFS_AGFL_MAGIC: case MFS_BNOBT_MAGIC:
	case MFS_CNTBT_MAGIC: case MFS_INOBT_MAGIC: case MFS_RMAPBT_MAGIC: case MFS_BMBT_MAGIC:
	case MFS_JHDR_MAGIC: case MFS_DIRBT_MAGIC: case MFS_XATTRBT_MAGIC:
	case MFS_XATTRV_MAGIC:
		return 1;
	}
	return 0;
}

/* Reseal a block touched by the input: a metadata block's CRC, or each inode's in an
 * inode chunk block. */
static void reseal(uint8_t *blk)
{
	uint32_t magic = mfs_get32(((const struct mfs_blkhdr *)blk)->magic);

	if (is_block_magic(magic)) {
		mfs_blk_seal(blk, FZ_BS);
		return;
	}
	for (uint32_t o = 0; o + 256u <= FZ_BS; o += 256u)
		if (mfs_get32(((const struct mfs_blkhdr *)(blk + o))->magic) == MFS_DINODE_MAGIC)
			mfs_dinode_seal(blk + o, 256u);
}

/* Lay the input over the windows (from the pristine copy) and write them. */
static void lay_input(const uint8_t *data, size_t size)
{
	static uint8_t blk[FZ_BS];
	unsigned flags = size ? data[0] : 0;
	size_t pos = 1;

	for (size_t i = 0; i < nwin; i++) {
		const struct window *w = &win[i];
		size_t take = 0;

		memcpy(blk, pristine + w->off, FZ_BS);
		if (pos < size) {
			take = size - pos < w->len ? size - pos : w->len;
			memcpy(blk, data + pos, take);
			pos += take;
			if (flags & FZ_RESEAL)
				reseal(blk);
		}
		if (pwrite(img_fd, blk, FZ_BS, (off_t)w->off) != (ssize_t)FZ_BS)
			fz_die("write the image", errno);
	}
}

/* Each finding's text is read through (a bad one is ASan's to see), and shown when verbose. */
static void on_report(void *arg, uint32_t flag, const char *msg)
{
	size_t n = strlen(msg);

	(void)arg;
	if (verbose)
		fprintf(stderr, "finding 0x%x: %.*s\n", flag, (int)n, msg);
}

static void run_check(struct mfs_fs *fs, uint32_t type, uint32_t agno, uint64_t ino)
{
	struct mfs_scrub_ctx ctx;

	memset(&ctx, 0, sizeof(ctx));
	ctx.fs = fs;
	ctx.type = type;
	ctx.agno = agno;
	ctx.ino = ino;
	ctx.report = on_report;
	if (mfs_scrub(&ctx) && verbose)
		fprintf(stderr, "check %u of AG %u inode %llu could not run\n", type, agno,
			(unsigned long long)ino);
	if (ctx.oflags && verbose)
		fprintf(stderr, "check %u of AG %u inode %llu: flags 0x%x\n", type, agno,
			(unsigned long long)ino, ctx.oflags);
}

static int inode_chunk_fn(struct mfs_btree_cur *cur, const void *rec, void *priv)
{
	static const uint32_t types[] = { MFS_SCRUB_INODE, MFS_SCRUB_BMAP, MFS_SCRUB_DIR,
					  MFS_SCRUB_XATTR, MFS_SCRUB_SYMLINK };
	const struct mfs_inobt_rec *r = rec;
	struct mfs_fs *fs = priv;
	uint64_t freemask = mfs_get64(r->freemask);
	for (uint32_t i = 0; i < MFS_INODES_PER_CHUNK; i++) {
		uint64_t ino = mfs_agino_to_ino(&fs->geo, cur->agno, mfs_get32(r->startino) + i);

		if (freemask >> i & 1 || mfs_ino_check(fs, ino))
			continue;
		if (verbose)
			fprintf(stderr, "inode %llu\n", (unsigned long long)ino);
		for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++)
			run_check(fs, types[t], 0, ino);
	}
	return 0;
}

static void check_everything(struct mfs_fs *fs)
{
	static const uint32_t ag_types[] = { MFS_SCRUB_SB, MFS_SCRUB_AGH, MFS_SCRUB_AGFL,
					     MFS_SCRUB_BNOBT, MFS_SCRUB_CNTBT, MFS_SCRUB_INOBT,
					     MFS_SCRUB_RMAPBT };
	struct mfs_journal_info ji;

	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++)
		for (size_t t = 0; t < sizeof(ag_types) / sizeof(ag_types[0]); t++)
			run_check(fs, ag_types[t], agno, 0);
	for (uint32_t agno = 0; agno < fs->geo.agcount; agno++) {
		struct mfs_btree_cur cur;
		struct mfs_buf *hbp;

		if (mfs_read_agh(fs, agno, &hbp))
			continue;
		mfs_ag_cur_init(&cur, fs, NULL, agno, MFS_BT_INO, hbp);
		mfs_btree_query_range(&cur, NULL, NULL, inode_chunk_fn, fs);
		mfs_btree_cur_release(&cur);
		mfs_buf_put(hbp);
	}
	run_check(fs, MFS_SCRUB_JOURNAL, 0, 0);
	run_check(fs, MFS_SCRUB_NLINKS, 0, 0);
	run_check(fs, MFS_SCRUB_ORPHANS, 0, 0);
	run_check(fs, MFS_SCRUB_SUMMARY, 0, 0);
	if (fs->geo.logblocks)
		mfs_journal_peek(fs, &ji);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned flags = size ? data[0] : 0;
	struct mfs_fs *fs = NULL;
	int err;

	lay_input(data, size);
	err = mfs_fs_open(img_path, flags & FZ_REPLAY ? MFS_OPEN_JOURNAL : MFS_OPEN_RDONLY,
			  FZ_CACHE, &fs);
	if (err) {
		if (verbose)
			fprintf(stderr, "open: %s\n", strerror(-err));
		goto out;
	}
	if (mfs_icache_init(fs, 0) == 0) {
		check_everything(fs);
		mfs_icache_destroy(fs);
	}
	mfs_fs_close(fs);
out:
	/* A replay writes anywhere; the windows are restored by the next input anyway. */
	if ((flags & FZ_REPLAY) && pwrite(img_fd, pristine, FZ_BYTES, 0) != (ssize_t)FZ_BYTES)
		fz_die("restore the image", errno);
	return 0;
}
