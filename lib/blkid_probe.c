/*
 * blkid_probe.c — signature detection and wiping through libblkid, plus our own magic
 * (see blkid_probe.h).
 */
#include "blkid_probe.h"
#include "byteorder.h"
#include "log.h"
#include "mendfs_format.h"

#include <blkid.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Bound on the wipe loop: a device never carries this many signatures. */
#define WIPE_MAX 64

static int fd_is_empty(int fd)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	return S_ISREG(st.st_mode) && st.st_size == 0;
}

/* Our own superblock at offset 0?  1 (with its label in desc), 0, or -errno. */
static int probe_mendfs(int fd, char *desc, size_t desclen)
{
	struct mfs_sb sb;
	ssize_t n = pread(fd, &sb, sizeof(sb), 0);
	char label[sizeof(sb.label) + 1];

	if (n < 0)
		return -errno;
	if ((size_t)n < sizeof(sb) || mfs_get32(sb.hdr.magic) != MFS_SB_MAGIC)
		return 0;
	memcpy(label, sb.label, sizeof(sb.label));
	label[sizeof(sb.label)] = '\0';
	if (label[0])
		snprintf(desc, desclen, "a mendfs filesystem labelled '%s'", label);
	else
		snprintf(desc, desclen, "a mendfs filesystem");
	return 1;
}

static const char *lookup(blkid_probe pr, const char *name)
{
	const char *v = NULL;

	if (blkid_probe_lookup_value(pr, name, &v, NULL) < 0)
		return NULL;
	return v;
}

static blkid_probe new_probe(int fd, int magic)
{
	blkid_probe pr = blkid_new_probe();

	if (!pr)
		return NULL;
	if (blkid_probe_set_device(pr, fd, 0, 0) < 0) {
		blkid_free_probe(pr);
		return NULL;
	}
	blkid_probe_enable_superblocks(pr, 1);
	blkid_probe_set_superblocks_flags(pr, BLKID_SUBLKS_LABEL | BLKID_SUBLKS_TYPE |
					  BLKID_SUBLKS_USAGE |
					  (magic ? BLKID_SUBLKS_MAGIC | BLKID_SUBLKS_BADCSUM : 0));
	blkid_probe_enable_partitions(pr, 1);
	blkid_probe_set_partitions_flags(pr, magic ? BLKID_PARTS_MAGIC | BLKID_PARTS_FORCE_GPT
						   : 0);
	return pr;
}

int mfs_probe_signatures(int fd, char *desc, size_t desclen)
{
	blkid_probe pr;
	const char *type, *label, *usage, *pttype;
	int rc;

	rc = fd_is_empty(fd);
	if (rc)
		return rc < 0 ? rc : 0;
	rc = probe_mendfs(fd, desc, desclen);
	if (rc)
		return rc;
	pr = new_probe(fd, 0);
	if (!pr)
		return -ENOMEM;
	rc = blkid_do_fullprobe(pr);
	if (rc < 0) {
		blkid_free_probe(pr);
		return -EIO;
	}
	if (rc == 1) {
		blkid_free_probe(pr);
		return 0;
	}
	type = lookup(pr, "TYPE");
	label = lookup(pr, "LABEL");
	usage = lookup(pr, "USAGE");
	pttype = lookup(pr, "PTTYPE");
	if (type) {
		const char *kind = "filesystem";

		if (usage && !strcmp(usage, "raid"))
			kind = "RAID member";
		else if (usage && !strcmp(usage, "crypto"))
			kind = "encrypted volume";
		else if (usage && strcmp(usage, "filesystem"))
			kind = "signature";
		if (label && label[0])
			snprintf(desc, desclen, "a%s %s %s labelled '%s'",
				 strchr("aeiouAEIOU", type[0]) ? "n" : "", type, kind, label);
		else
			snprintf(desc, desclen, "a%s %s %s",
				 strchr("aeiouAEIOU", type[0]) ? "n" : "", type, kind);
	} else if (pttype) {
		snprintf(desc, desclen, "a %s partition table", pttype);
	} else {
		snprintf(desc, desclen, "an unknown signature");
	}
	blkid_free_probe(pr);
	return 1;
}

int mfs_wipe_signatures(int fd)
{
	static const uint8_t zero[4];
	blkid_probe pr;
	uint32_t magic;
	int n = 0;

	if (fd_is_empty(fd) > 0)
		return 0;
	pr = new_probe(fd, 1);
	if (!pr)
		return -ENOMEM;
	while (n < WIPE_MAX && blkid_do_probe(pr) == 0) {
		const char *type = lookup(pr, "TYPE");

		if (!type)
			type = lookup(pr, "PTTYPE");
		if (blkid_do_wipe(pr, 0) < 0) {
			int err = errno ? -errno : -EIO;

			mfs_log(MFS_LOG_ERR, "cannot erase the %s signature: %s",
				type ? type : "unknown", strerror(-err));
			blkid_free_probe(pr);
			return err;
		}
		n++;
	}
	blkid_free_probe(pr);
	/* Our own magic last: libblkid cannot see it. */
	if (pread(fd, &magic, sizeof(magic), 0) == (ssize_t)sizeof(magic) &&
	    mfs_get32(magic) == MFS_SB_MAGIC) {
		if (pwrite(fd, zero, sizeof(zero), 0) != (ssize_t)sizeof(zero))
			return errno ? -errno : -EIO;
		n++;
	}
	if (fsync(fd) < 0)
		return -errno;
	return n;
}
