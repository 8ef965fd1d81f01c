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
 * Steps 3 and 5 are the library's (format.h: mfs_format_layout, mfs_format_write); this
 * file is the command line around them: options, signatures, sizes, messages, exit codes.
 * The geometry rules are documented in mkfs.mendfs(8); keep the two in step.
 */
#include "blkid_probe.h"
#include "dev.h"
#include "format.h"
#include "geom.h"
#include "log.h"
#include "mendfs_format.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KiB (1ull << 10)
#define MiB (1ull << 20)
#define GiB (1ull << 30)
#define TiB (1ull << 40)

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

static void print_layout(const struct opts *o, const struct mfs_format_layout *L)
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

/* Library messages during the format: prefixed with the program name like our own; the
 * notes (MFS_LOG_INFO) are dropped under -q. */
static void format_sink(int level, const char *msg, void *priv)
{
	const struct opts *o = priv;

	if (level >= MFS_LOG_INFO && o->quiet)
		return;
	fprintf(stderr, "%s: %s\n", progname, msg);
}

static void to_format_opts(const struct opts *o, struct mfs_format_opts *f)
{
	memset(f, 0, sizeof(*f));
	f->blocksize = o->blocksize;
	f->inodesize = o->inodesize;
	f->agcount = o->agcount;
	f->agsize = o->agsize;
	f->logbytes = o->logsize;
	f->label = o->label;
	memcpy(f->uuid, o->uuid, 16);
	f->nil_uuid = 1;                 /* o->uuid is always set: given or random */
	f->name = o->path;
}

int main(int argc, char **argv)
{
	struct opts o;
	struct mfs_format_opts fo;
	struct mfs_format_layout L;
	struct mfs_dev_topology topo;
	struct mfs_dev *dev = NULL;
	struct stat st;
	uint64_t bytes;
	int exists, created = 0, err;
	char desc[256];

	parse_opts(argc, argv, &o);
	if (!o.uuid_given && mfs_format_random_uuid(o.uuid)) {
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
	to_format_opts(&o, &fo);
	mfs_log_set_sink(format_sink, &o);
	err = mfs_format_layout(&fo, bytes, &topo, &L);
	mfs_log_set_sink(NULL, NULL);
	if (err)
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
	mfs_log_set_sink(format_sink, &o);
	err = mfs_format_write(dev, &fo, &L);     /* takes dev */
	mfs_log_set_sink(NULL, NULL);
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
