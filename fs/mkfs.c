/*
 * mkfs.c — mkfs.mendfs: choose a geometry for a device or image and write an empty mendfs.
 *
 * Order of work, chosen so that a bad request changes nothing:
 *   1. parse and check every option (usage errors exit 1 before anything is opened);
 *   2. open an existing device or image (exclusive lock: a mounted image is refused) and read
 *      its I/O topology; a missing image is only created once the geometry is known good;
 *   3. compute the geometry and check it with the same validator mount uses
 *      (mfs_geom_from_sb); -n stops here after printing it;
 *   4. refuse to overwrite an existing signature unless -f, which wipes them;
 *   5. write every AG (mfs_ag_format), the root inode chunk, an empty journal and the
 *      secondary superblocks, flush, and write the primary superblock last, so that an
 *      interrupted mkfs never leaves a primary superblock pointing at half-written AGs.
 *
 * The geometry rules are documented in mkfs.mendfs(8); keep the two in step.
 */
#include "ag.h"
#include "bcache.h"
#include "blkid_probe.h"
#include "byteorder.h"
#include "dev.h"
#include "fs.h"
#include "geom.h"
#include "inode_init.h"
#include "journal.h"
#include "log.h"
#include "mendfs_format.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define TiB (1ull << 40)

#define MKFS_MIN_BYTES       (16 * MiB)   /* smallest filesystem */
#define MKFS_DEFAULT_AGCOUNT 4u
#define MKFS_MAX_AG_BYTES    TiB          /* AGs are never larger than this */
#define MKFS_LOG_RATIO       1024u        /* default journal: 1/1024 of the filesystem */
#define MKFS_LOG_MIN_BYTES   MiB
#define MKFS_LOG_MAX_BYTES   (64 * MiB)
#define MKFS_LOG_MIN_BLOCKS  16u
#define MKFS_AG0_SLACK       16u          /* free blocks AG 0 keeps after the journal */

static const char *progname = "mkfs.mendfs";

struct opts {
	int force, dry_run, quiet;
	uint32_t blocksize;
	uint32_t inodesize;
	uint32_t agcount;           /* 0: not given */
	uint64_t agsize;            /* bytes, 0: not given */
	uint64_t logsize;           /* bytes, 0: default */
	const char *label;
	int uuid_given;
	uint8_t uuid[16];
	const char *path;
	uint64_t size;              /* bytes, 0: not given */
};

/* The geometry plus where mkfs puts the root chunk and the journal. */
struct layout {
	struct mfs_geom geo;
	uint32_t chunk_agbno;       /* root inode chunk in AG 0 */
	uint32_t log_agbno;         /* journal in AG 0 */
	uint64_t devbytes;          /* bytes the filesystem may use */
	uint32_t dropped_blocks;    /* a too-short last AG that was left out */
};

static void usage(void)
{
	fprintf(stderr,
		"Usage: %s [-f] [-n] [-q] [-b blocksize] [-a agcount | -A agsize] [-L label]\n"
		"       %*s [-U uuid] [-I inodesize] [-J journalsize] DEVICE|IMAGE [SIZE]\n"
		"  -f  overwrite existing filesystems or partition tables (wipes their signatures)\n"
		"  -n  compute and print the geometry, write nothing\n"
		"  -q  do not print the geometry\n"
		"  -b  block size: a power of two, 1024..65536 (default 4096)\n"
		"  -a  number of allocation groups      -A  size of an allocation group\n"
		"  -L  volume label, at most 31 bytes   -U  UUID (xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx)\n"
		"  -I  inode size: a power of two, 256..2048, at most the block size (default 256)\n"
		"  -J  journal size\n"
		"Sizes are bytes or take a K, M, G, T or P suffix (binary units).\n",
		progname, (int)strlen(progname), "");
}

static void die_usage(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", progname);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	usage();
	exit(1);
}

/* "16M", "1G", "4096", "16T": bytes; -EINVAL on bad syntax or overflow. */
static int parse_size(const char *s, uint64_t *out)
{
	uint64_t v = 0, mult = 1;
	const char *p = s;

	if (!*p)
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (v > (UINT64_MAX - 9) / 10)
			return -EINVAL;
		v = v * 10 + (uint64_t)(*p - '0');
	}
	if (p == s)
		return -EINVAL;
	switch (*p) {
	case '\0': break;
	case 'k': case 'K': mult = KiB; break;
	case 'm': case 'M': mult = MiB; break;
	case 'g': case 'G': mult = GiB; break;
	case 't': case 'T': mult = TiB; break;
	case 'p': case 'P': mult = 1024 * TiB; break;
	default: return -EINVAL;
	}
	if (*p) {
		p++;
		if (!strcmp(p, "iB") || !strcmp(p, "B"))
			p += strlen(p);
		if (*p)
			return -EINVAL;
	}
	if (v > UINT64_MAX / mult)
		return -EINVAL;
	*out = v * mult;
	return 0;
}

static int is_pow2(uint64_t v)
{
	return v && !(v & (v - 1));
}

static unsigned log2_exact(uint64_t v)
{
	unsigned l = 0;

	while ((1ull << l) < v)
		l++;
	return l;
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx */
static int parse_uuid(const char *s, uint8_t uuid[16])
{
	int n = 0;

	if (strlen(s) != 36)
		return -EINVAL;
	for (int i = 0; i < 36;) {
		if (i == 8 || i == 13 || i == 18 || i == 23) {
			if (s[i] != '-')
				return -EINVAL;
			i++;
			continue;
		}
		int hi = hexval(s[i]), lo = hexval(s[i + 1]);

		if (hi < 0 || lo < 0)
			return -EINVAL;
		uuid[n++] = (uint8_t)(hi << 4 | lo);
		i += 2;
	}
	return n == 16 ? 0 : -EINVAL;
}

static void format_uuid(const uint8_t u[16], char *out)
{
	sprintf(out, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
		u[0], u[1], u[2], u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12],
		u[13], u[14], u[15]);
}

/* A random (version 4, RFC 4122) UUID from /dev/urandom. */
static int random_uuid(uint8_t uuid[16])
{
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = read(fd, uuid, 16);
	close(fd);
	if (n != 16)
		return -EIO;
	uuid[6] = (uint8_t)((uuid[6] & 0x0f) | 0x40);
	uuid[8] = (uint8_t)((uuid[8] & 0x3f) | 0x80);
	return 0;
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
	uint64_t v;
	int c;

	memset(o, 0, sizeof(*o));
	o->blocksize = MFS_DEFAULT_BLOCKSIZE;
	o->inodesize = MFS_DEFAULT_INODESIZE;
	while ((c = getopt(argc, argv, "fnqb:a:A:L:U:I:J:h")) != -1) {
		switch (c) {
		case 'f': o->force = 1; break;
		case 'n': o->dry_run = 1; break;
		case 'q': o->quiet = 1; break;
		case 'b':
			if (parse_size(optarg, &v) || !is_pow2(v) || v < MFS_MIN_BLOCKSIZE ||
			    v > MFS_MAX_BLOCKSIZE)
				die_usage("block size '%s' is not a power of two between %u and %u",
					  optarg, MFS_MIN_BLOCKSIZE, MFS_MAX_BLOCKSIZE);
			o->blocksize = (uint32_t)v;
			break;
		case 'I':
			if (parse_size(optarg, &v) || !is_pow2(v) || v < MFS_MIN_INODESIZE ||
			    v > MFS_MAX_INODESIZE)
				die_usage("inode size '%s' is not a power of two between %u and %u",
					  optarg, MFS_MIN_INODESIZE, MFS_MAX_INODESIZE);
			o->inodesize = (uint32_t)v;
			break;
		case 'a':
			if (parse_size(optarg, &v) || v < 1 || v > MFS_MAX_AGCOUNT ||
			    strpbrk(optarg, "kKmMgGtTpP"))
				die_usage("AG count '%s' is not a number between 1 and %u", optarg,
					  MFS_MAX_AGCOUNT);
			o->agcount = (uint32_t)v;
			break;
		case 'A':
			if (parse_size(optarg, &v) || !v)
				die_usage("bad AG size '%s'", optarg);
			o->agsize = v;
			break;
		case 'J':
			if (parse_size(optarg, &v) || !v)
				die_usage("bad journal size '%s'", optarg);
			o->logsize = v;
			break;
		case 'L':
			if (strlen(optarg) > 31)
				die_usage("label '%s' is %zu bytes long, at most 31 are allowed",
					  optarg, strlen(optarg));
			o->label = optarg;
			break;
		case 'U':
			if (parse_uuid(optarg, o->uuid))
				die_usage("bad UUID '%s' (expected xxxxxxxx-xxxx-xxxx-xxxx-"
					  "xxxxxxxxxxxx)", optarg);
			o->uuid_given = 1;
			break;
		case 'h':
			usage();
			exit(0);
		default:
			usage();
			exit(1);
		}
	}
	if (o->agcount && o->agsize)
		die_usage("-a and -A cannot be used together");
	if (o->inodesize > o->blocksize)
		die_usage("inode size %u is larger than the block size %u", o->inodesize,
			  o->blocksize);
	if (optind >= argc)
		die_usage("no device or image given");
	o->path = argv[optind++];
	if (optind < argc) {
		if (parse_size(argv[optind], &o->size) || !o->size)
			die_usage("bad size '%s'", argv[optind]);
		optind++;
	}
	if (optind < argc)
		die_usage("unexpected argument '%s'", argv[optind]);
}

static uint64_t roundup64(uint64_t v, uint64_t align)
{
	return align > 1 ? (v + align - 1) / align * align : v;
}

/*
 * Compute the geometry for `bytes` bytes (see mkfs.mendfs(8), GEOMETRY).  Errors are
 * reported here and return -EINVAL: they are the user's request that cannot be met.
 */
static int compute_layout(const struct opts *o, uint64_t bytes, const struct mfs_dev_topology *topo,
			  struct layout *L)
{
	struct mfs_geom *g = &L->geo;
	uint32_t bs = o->blocksize;
	uint64_t maxag, agblocks, agcount, last, logblocks, first, ag0len;
	uint32_t min_last;
	struct mfs_sb sb;
	struct mfs_geom check;

	memset(L, 0, sizeof(*L));
	L->devbytes = bytes;
	g->blocksize = bs;
	g->blocklog = log2_exact(bs);
	g->inodesize = o->inodesize;
	g->inopblog = log2_exact(bs / o->inodesize);
	g->chunkblocks = MFS_INODES_PER_CHUNK >> g->inopblog;
	if (!g->chunkblocks)
		g->chunkblocks = 1;
	g->dblocks = bytes / bs;
	if (bytes < MKFS_MIN_BYTES) {
		fprintf(stderr, "%s: %s: %" PRIu64 " bytes is too small: a mendfs needs at least "
			"%llu MiB\n", progname, o->path, bytes, MKFS_MIN_BYTES / MiB);
		return -EINVAL;
	}

	/* Stripe geometry from the device's I/O hints (block devices only). */
	if (topo->min_io > topo->physical_sector && topo->min_io % bs == 0) {
		g->sunit = topo->min_io / bs;
		g->swidth = g->sunit;
		if (topo->opt_io > topo->min_io && topo->opt_io % topo->min_io == 0)
			g->swidth = topo->opt_io / bs;
	}

	maxag = MKFS_MAX_AG_BYTES / bs;
	if (maxag > MFS_MAX_AGBLOCKS)
		maxag = MFS_MAX_AGBLOCKS;
	if (o->agsize) {
		if (o->agsize % bs) {
			fprintf(stderr, "%s: AG size %" PRIu64 " is not a multiple of the block "
				"size %u\n", progname, o->agsize, bs);
			return -EINVAL;
		}
		agblocks = o->agsize / bs;
		if (g->sunit && agblocks % g->sunit) {
			fprintf(stderr, "%s: AG size %" PRIu64 " blocks is not a multiple of the "
				"stripe unit (%u blocks)\n", progname, agblocks, g->sunit);
			return -EINVAL;
		}
	} else {
		agcount = o->agcount ? o->agcount : MKFS_DEFAULT_AGCOUNT;
		agblocks = (g->dblocks + agcount - 1) / agcount;
		if (!o->agcount && agblocks > maxag)
			agblocks = maxag;
		agblocks = roundup64(agblocks, g->sunit);
		if (!o->agcount && agblocks > maxag)
			agblocks -= g->sunit;
	}
	if (agblocks < MFS_MIN_AGBLOCKS || agblocks > maxag) {
		fprintf(stderr, "%s: AG size of %" PRIu64 " blocks is outside %u..%" PRIu64
			" blocks (%u bytes each, AGs of at most 1 TiB)\n", progname, agblocks,
			MFS_MIN_AGBLOCKS, maxag, bs);
		return -EINVAL;
	}
	if (agblocks > g->dblocks)
		agblocks = g->dblocks;
	g->agblocks = (uint32_t)agblocks;
	g->agblklog = mfs_log2_ceil(agblocks);

	/* The last AG must hold its headers, trees and some free space; a shorter tail is
	 * left unused. */
	min_last = MFS_AG_FIXED_BLOCKS + mfs_ag_format_blocks(g) + MKFS_AG0_SLACK;
	if (min_last < MFS_MIN_AGBLOCKS)
		min_last = MFS_MIN_AGBLOCKS;
	agcount = (g->dblocks + agblocks - 1) / agblocks;
	last = g->dblocks - (agcount - 1) * agblocks;
	if (last < min_last && agcount > 1) {
		L->dropped_blocks = (uint32_t)last;
		agcount--;
		g->dblocks = agcount * agblocks;
	}
	if (agcount > MFS_MAX_AGCOUNT) {
		fprintf(stderr, "%s: %" PRIu64 " AGs are more than the %u allowed; use a larger "
			"AG size (-A)\n", progname, agcount, MFS_MAX_AGCOUNT);
		return -EINVAL;
	}
	g->agcount = (uint32_t)agcount;
	if (o->agcount && g->agcount != o->agcount && !o->quiet)
		fprintf(stderr, "%s: note: %u AGs of %u blocks instead of the %u asked for\n",
			progname, g->agcount, g->agblocks, o->agcount);

	/* AG 0: fixed headers, the tree roots and AGFL stock of mfs_ag_format, the root inode
	 * chunk (aligned to its size), then the journal (aligned to the stripe unit). */
	ag0len = mfs_ag_length(g, 0);
	first = MFS_AG_FIXED_BLOCKS + mfs_ag_format_blocks(g);
	L->chunk_agbno = (uint32_t)roundup64(first, g->chunkblocks);
	L->log_agbno = (uint32_t)roundup64(L->chunk_agbno + g->chunkblocks, g->sunit);
	if (o->logsize) {
		logblocks = (o->logsize + bs - 1) / bs;
		if (logblocks < MKFS_LOG_MIN_BLOCKS ||
		    L->log_agbno + logblocks + MKFS_AG0_SLACK > ag0len) {
			fprintf(stderr, "%s: a journal of %" PRIu64 " blocks does not fit: it needs "
				"at least %u blocks and at most %" PRIu64 " (AG 0 has %" PRIu64
				" blocks from block %u)\n", progname, logblocks,
				MKFS_LOG_MIN_BLOCKS,
				ag0len > L->log_agbno + MKFS_AG0_SLACK ?
					ag0len - L->log_agbno - MKFS_AG0_SLACK : 0,
				ag0len, L->log_agbno);
			return -EINVAL;
		}
	} else {
		uint64_t lb = bytes / MKFS_LOG_RATIO;

		if (lb < MKFS_LOG_MIN_BYTES)
			lb = MKFS_LOG_MIN_BYTES;
		if (lb > MKFS_LOG_MAX_BYTES)
			lb = MKFS_LOG_MAX_BYTES;
		logblocks = roundup64(lb / bs, g->sunit);
		if (logblocks > ag0len / 4)
			logblocks = ag0len / 4;
		if (logblocks < MKFS_LOG_MIN_BLOCKS)
			logblocks = MKFS_LOG_MIN_BLOCKS;
		if (L->log_agbno + logblocks + MKFS_AG0_SLACK > ag0len) {
			fprintf(stderr, "%s: AG 0 (%" PRIu64 " blocks) is too small for the "
				"journal\n", progname, ag0len);
			return -EINVAL;
		}
	}
	g->logstart = mfs_agbno_to_fsb(g, 0, L->log_agbno);
	g->logblocks = (uint32_t)logblocks;
	g->rootino = mfs_agino_to_ino(g, 0, mfs_agbno_to_agino(g, L->chunk_agbno));
	memcpy(g->uuid, o->uuid, 16);

	/* The same checks mount makes. */
	memset(&sb, 0, sizeof(sb));
	mfs_geom_to_sb(g, &sb);
	if (mfs_geom_from_sb(&check, &sb, bytes)) {
		fprintf(stderr, "%s: internal error: the computed geometry does not validate\n",
			progname);
		return -EINVAL;
	}
	return 0;
}

static void print_size(char *buf, size_t len, uint64_t bytes)
{
	static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)bytes;
	int u = 0;

	while (v >= 1024 && u < 5) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, "%.1f %s", v, units[u]);
}

static void print_layout(const struct opts *o, const struct layout *L)
{
	const struct mfs_geom *g = &L->geo;
	char ubuf[40], sz[32], lsz[32];

	format_uuid(g->uuid, ubuf);
	print_size(sz, sizeof(sz), g->dblocks * g->blocksize);
	print_size(lsz, sizeof(lsz), (uint64_t)g->logblocks * g->blocksize);
	printf("meta-data=%-22s size=%" PRIu64 " bytes (%s)\n", o->path,
	       g->dblocks * g->blocksize, sz);
	printf("         =%-22s bsize=%-10u blocks=%" PRIu64 "\n", "", g->blocksize, g->dblocks);
	printf("         =%-22s agcount=%-8u agsize=%u blks\n", "", g->agcount, g->agblocks);
	printf("         =%-22s isize=%-10u rootino=%" PRIu64 "\n", "", g->inodesize,
	       g->rootino);
	printf("         =%-22s sunit=%-10u swidth=%u blks\n", "", g->sunit, g->swidth);
	printf("journal  =%-22s start=%-10" PRIu64 " blocks=%u (%s)\n", "internal, AG 0",
	       g->logstart, g->logblocks, lsz);
	printf("uuid     =%s\n", ubuf);
	printf("label    =%s\n", o->label ? o->label : "");
	if (L->dropped_blocks)
		printf("note     =the last %u blocks are too few for an AG and are left unused\n",
		       L->dropped_blocks);
}

/* Write the root inode chunk: inode 0 of the chunk is the root directory, the other 63
 * are free (mode 0, valid header and CRC).  Blocks of the chunk beyond its 64 inodes (when
 * a block holds more than 64 inodes) stay zero. */
static int write_root_chunk(struct mfs_fs *fs, const struct layout *L, time_t now)
{
	const struct mfs_geom *g = &fs->geo;
	struct mfs_inode_init_args root = {
		.mode = S_IFDIR | 0755,
		.dformat = MFS_FMT_LOCAL,
		.nlink = 2,
		.uid = (uint32_t)getuid(),
		.gid = (uint32_t)getgid(),
		.time = { .tv_sec = now, .tv_nsec = 0 },
	};
	uint32_t ipb = 1u << g->inopblog;

	for (uint32_t b = 0; b < g->chunkblocks; b++) {
		struct mfs_buf *bp;
		int err = mfs_buf_get_new(fs->bc, mfs_agbno_to_fsb(g, 0, L->chunk_agbno + b), 0,
					  &bp);

		if (err)
			return err;
		for (uint32_t i = 0; i < ipb && b * ipb + i < MFS_INODES_PER_CHUNK; i++) {
			uint64_t ino = g->rootino + b * ipb + i;

			mfs_dinode_init((char *)bp->data + mfs_ino_to_offset(g, ino), g->inodesize,
					ino, g->uuid, ino == g->rootino ? &root : NULL);
		}
		mfs_buf_mark_dirty(bp);
		mfs_buf_put(bp);
	}
	return 0;
}

static int write_sb(struct mfs_fs *fs, const struct opts *o, uint32_t agno, uint64_t fdblocks,
		    time_t now)
{
	const struct mfs_geom *g = &fs->geo;
	uint64_t fsb = mfs_agbno_to_fsb(g, agno, MFS_SB_AGBNO);
	struct mfs_buf *bp;
	struct mfs_sb *sb;
	int err;

	err = mfs_buf_get_new(fs->bc, fsb, 1, &bp);
	if (err)
		return err;
	mfs_blk_init(bp->data, g->blocksize, MFS_SB_MAGIC, fsb, agno, g->uuid);
	sb = bp->data;
	mfs_geom_to_sb(g, sb);
	mfs_put32(sb->state, MFS_STATE_CLEAN);
	mfs_put64(sb->icount, MFS_INODES_PER_CHUNK);
	mfs_put64(sb->ifree, MFS_INODES_PER_CHUNK - 1);
	mfs_put64(sb->fdblocks, fdblocks);
	mfs_put64(sb->ctime, (uint64_t)now);
	mfs_put64(sb->wtime, (uint64_t)now);
	if (o->label)
		memcpy(sb->label, o->label, strlen(o->label));
	mfs_buf_mark_dirty(bp);
	mfs_buf_put(bp);
	return 0;
}

static int write_fs(struct mfs_dev *dev, const struct opts *o, const struct layout *L)
{
	const struct mfs_geom *g = &L->geo;
	struct mfs_fs *fs;
	struct mfs_ag_extent used[2];
	struct mfs_inobt_rec chunk;
	uint64_t fdblocks = 0;
	time_t now = time(NULL);
	struct mfs_buf *bp;
	int err, err2;

	err = mfs_fs_create(dev, g, 0, &fs);
	if (err) {
		mfs_dev_close(dev);
		return err;
	}

	used[0] = (struct mfs_ag_extent){ L->chunk_agbno, g->chunkblocks, MFS_OWN_INODES, 0 };
	used[1] = (struct mfs_ag_extent){ L->log_agbno, g->logblocks, MFS_OWN_LOG, 0 };
	mfs_put32(chunk.startino, mfs_agbno_to_agino(g, L->chunk_agbno));
	mfs_put32(chunk.freecount, MFS_INODES_PER_CHUNK - 1);
	mfs_put64(chunk.freemask, ~1ull);        /* all free but the root, inode 0 */

	for (uint32_t agno = 0; agno < g->agcount; agno++) {
		err = agno ? mfs_ag_format(fs, agno, NULL, 0, NULL, 0)
			   : mfs_ag_format(fs, 0, used, 2, &chunk, 1);
		if (err) {
			fprintf(stderr, "%s: formatting AG %u failed: %s\n", progname, agno,
				strerror(-err));
			goto out;
		}
		err = mfs_read_agh(fs, agno, &bp);
		if (err) {
			fprintf(stderr, "%s: AG %u header does not read back: %s\n", progname,
				agno, strerror(-err));
			goto out;
		}
		fdblocks += mfs_get32(((struct mfs_agh *)bp->data)->freeblks);
		mfs_buf_put(bp);
	}
	err = write_root_chunk(fs, L, now);
	if (err)
		goto out;
	/* An empty journal: both header copies (written straight to the device). */
	err = mfs_journal_format(fs);
	if (err) {
		fprintf(stderr, "%s: writing the journal failed: %s\n", progname, strerror(-err));
		goto out;
	}

	for (uint32_t agno = 1; agno < g->agcount; agno++) {
		err = write_sb(fs, o, agno, fdblocks, now);
		if (err)
			goto out;
	}
	/* Everything but the primary superblock is durable before the primary is written. */
	err = mfs_bcache_flush(fs->bc);
	if (err) {
		fprintf(stderr, "%s: writing %s failed: %s\n", progname, o->path, strerror(-err));
		goto out;
	}
	err = write_sb(fs, o, 0, fdblocks, now);
out:
	if (err)
		mfs_bcache_discard(fs->bc);
	err2 = mfs_fs_close(fs);
	if (!err && err2)
		fprintf(stderr, "%s: writing %s failed: %s\n", progname, o->path, strerror(-err2));
	return err ? err : err2;
}

int main(int argc, char **argv)
{
	struct opts o;
	struct layout L;
	struct mfs_dev_topology topo;
	struct mfs_dev *dev = NULL;
	struct stat st;
	uint64_t bytes;
	int exists, created = 0, err;
	char desc[256];

	parse_opts(argc, argv, &o);
	if (!o.uuid_given && random_uuid(o.uuid)) {
		fprintf(stderr, "%s: cannot read /dev/urandom for a UUID\n", progname);
		return 1;
	}

	exists = stat(o.path, &st) == 0;
	if (!exists && errno != ENOENT) {
		fprintf(stderr, "%s: %s: %s\n", progname, o.path, strerror(errno));
		return 1;
	}
	if (exists && !S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		fprintf(stderr, "%s: %s: not a regular file or block device\n", progname, o.path);
		return 1;
	}
	if (!exists && !o.size)
		die_usage("%s does not exist; give a SIZE to create an image", o.path);

	memset(&topo, 0, sizeof(topo));
	topo.logical_sector = topo.physical_sector = 512;
	bytes = o.size;
	if (exists) {
		err = mfs_dev_open(o.path, o.dry_run ? MFS_DEV_RDONLY : MFS_DEV_EXCL, &dev);
		if (err)
			return 1;
		err = mfs_dev_topology(dev, &topo);
		if (err) {
			fprintf(stderr, "%s: %s: cannot read the I/O topology: %s\n", progname,
				o.path, strerror(-err));
			goto fail;
		}
		if (mfs_dev_is_blockdev(dev)) {
			if (o.size > mfs_dev_size(dev)) {
				fprintf(stderr, "%s: %s: size %" PRIu64 " is larger than the device "
					"(%" PRIu64 " bytes)\n", progname, o.path, o.size,
					mfs_dev_size(dev));
				goto fail;
			}
			if (!o.size)
				bytes = mfs_dev_size(dev);
			if (topo.alignment_offset && !o.force) {
				fprintf(stderr, "%s: %s is misaligned: its I/O alignment offset is "
					"%" PRIu64 " bytes; use -f to format it anyway\n", progname,
					o.path, topo.alignment_offset);
				goto fail;
			}
		} else if (!o.size) {
			bytes = mfs_dev_size(dev);
		}
	}
	if (compute_layout(&o, bytes, &topo, &L))
		goto fail_usage;
	if (o.dry_run) {
		if (!o.quiet)
			print_layout(&o, &L);
		mfs_dev_close(dev);
		return 0;
	}

	if (exists) {
		err = mfs_probe_signatures(mfs_dev_fd(dev), desc, sizeof(desc));
		if (err < 0) {
			fprintf(stderr, "%s: %s: probing for existing signatures failed: %s\n",
				progname, o.path, strerror(-err));
			goto fail;
		}
		if (err > 0 && !o.force) {
			fprintf(stderr, "%s: %s contains %s; use -f to overwrite\n", progname,
				o.path, desc);
			goto fail;
		}
		if (err > 0) {
			err = mfs_wipe_signatures(mfs_dev_fd(dev));
			if (err < 0) {
				fprintf(stderr, "%s: %s: erasing old signatures failed: %s\n",
					progname, o.path, strerror(-err));
				goto fail;
			}
		}
	} else {
		err = mfs_dev_open(o.path, MFS_DEV_CREATE | MFS_DEV_EXCL, &dev);
		if (err)
			return 1;
		created = 1;
	}
	if (!mfs_dev_is_blockdev(dev) && mfs_dev_size(dev) != bytes) {
		err = mfs_dev_set_size(dev, bytes);
		if (err) {
			fprintf(stderr, "%s: %s: cannot set the image size to %" PRIu64 " bytes: %s\n",
				progname, o.path, bytes, strerror(-err));
			goto fail;
		}
	}
	err = write_fs(dev, &o, &L);     /* takes dev */
	dev = NULL;
	if (err)
		goto fail;
	if (!o.quiet)
		print_layout(&o, &L);
	return 0;

fail_usage:
	usage();
fail:
	mfs_dev_close(dev);
	if (created)
		unlink(o.path);
	return 1;
}
