#!/bin/bash
# The main job of `make run`: format a default image (unless one is there already), mount it
# with the daemon in the background, check that it works (write, flush, read back through
# the daemon), leave it mounted, and say how to use and unmount it.  A second `make run`
# while it is mounted only says so.
# Usage: tests/demo.sh BINDIR IMAGE SIZE        (environment: FRESH=1 formats anew)
set -u
bin=$(realpath "$1") img=$(realpath -m "$2") size=$3
mnt=${img%.img}.mnt
mounted=0
die() {
	echo "make run: $*" >&2
	if [ "$mounted" = 1 ]; then
		echo "make run: unmounting $mnt" >&2
		fusermount3 -u "$mnt" 2>/dev/null || umount "$mnt"
	fi
	exit 1
}
is_mounted() { grep -q " $mnt fuse.mendfs " /proc/self/mounts; }

# The daemon serving $img: the mendfs process with the image on its command line.
daemon_pid() {
	local p
	for p in /proc/[0-9]*; do
		tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -q "^[^ ]*mendfs $img " &&
			{ echo "${p#/proc/}"; return 0; }
	done
	return 1
}

how_to() {
	local p
	p=$(daemon_pid) || p="?"
	cat <<EOT

mendfs is mounted at $mnt
  image:   $img ($(du -h --apparent-size "$img" | cut -f1) sparse, $(du -h "$img" | cut -f1) used on the host)
  daemon:  pid $p, in the background (messages go to syslog)
Use it like any directory:
  ls -la $mnt; cp -r SOMETHING $mnt/; df -h $mnt
Unmount it (the daemon flushes everything, marks the image clean and exits):
  fusermount3 -u $mnt            (or: umount $mnt)
Check it online while it is mounted (-n: report only; without -n it repairs what it finds):
  $bin/mendfs_scrub -n $mnt
Then check it offline, or mount it again (make run, or by hand):
  $bin/mendfs_db -c check $img
  $bin/mendfs $img $mnt
EOT
}

if is_mounted; then
	echo "make run: $img is already mounted on $mnt: nothing to do."
	how_to
	exit 0
fi
if grep -q " $mnt fuse" /proc/self/mounts; then
	die "$mnt is a stale FUSE mount (its daemon is gone): fusermount3 -uz $mnt, then make run"
fi

if [ ! -e "$img" ] || [ "${FRESH:-0}" = 1 ]; then
	"$bin/mkfs.mendfs" -f "$img" "$size" || die "mkfs failed"
else
	echo "make run: keeping the existing image $img (make run FRESH=1 formats a new one)"
fi
"$bin/mendfs_db" -c sb -c "agh 0" -c freesp "$img" >"$img.db" 2>&1 ||
	{ cat "$img.db"; rm -f "$img.db"; die "mendfs_db cannot read $img: make run FRESH=1 formats it anew"; }
grep -E "^(blocksize|dblocks|agcount|state) =" "$img.db" | head -4 | sed 's/^/  /'
rm -f "$img.db"

mkdir -p "$mnt"
"$bin/mendfs" "$img" "$mnt" || die "the daemon could not mount $img on $mnt"
# The daemon mounts before it goes to the background: the mount is there once it returns.
is_mounted || die "no mendfs mount on $mnt after the daemon started"
mounted=1
echo "== mounted $img on $mnt"

# Check that it works: files written, flushed, and read back through the daemon (O_DIRECT
# bypasses the kernel's page cache, so the bytes come from the image).
mkdir -p "$mnt/demo" || die "mkdir failed"
echo "Written by make run on $(date)." >"$mnt/demo/README" || die "write failed"
dd if=/dev/urandom of="$mnt/demo/random.bin" bs=1M count=16 status=none conv=fsync ||
	die "writing 16 MiB failed"
set -o pipefail
want=$(dd if="$mnt/demo/random.bin" bs=1M status=none | md5sum) || die "reading back failed"
got=$(dd if="$mnt/demo/random.bin" bs=1M iflag=direct status=none | md5sum) ||
	die "reading back with O_DIRECT failed"
set +o pipefail
[ "$got" = "$want" ] || die "reading the file back through the daemon gave other bytes"
ls -la "$mnt/demo" || die "listing failed"
df -h "$mnt"
# And check its metadata online, while it stays mounted (exit 0: nothing found).
echo "== mendfs_scrub -n $mnt"
"$bin/mendfs_scrub" -n "$mnt" || die "the online scrub found problems or could not run (exit $?)"
echo "make run: mounted, written, flushed, read back and scrubbed online: it works."
how_to
