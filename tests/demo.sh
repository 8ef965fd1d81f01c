#!/bin/bash
# The main job of `make run`: format a default image, inspect it, mount it with the daemon,
# use it, unmount it (waiting for the daemon to finish flushing) and check it offline.
# The online scrub joins here when mendfs_scrub exists.
# Usage: tests/demo.sh BINDIR IMAGE SIZE
set -u
bin=$(realpath "$1") img=$(realpath -m "$2") size=$3
mnt=${img%.img}.mnt
pid=""
cleanup() {
	if grep -q " $mnt fuse.mendfs " /proc/self/mounts; then
		fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"
	fi
	[ -n "$pid" ] && kill "$pid" 2>/dev/null
}
trap cleanup EXIT
die() { echo "make run: $*" >&2; exit 1; }

"$bin/mkfs.mendfs" -f "$img" "$size" || die "mkfs failed"
"$bin/mendfs_db" -c sb -c "agh 0" -c freesp "$img" || die "mendfs_db failed"
mkdir -p "$mnt"
"$bin/mendfs" -f "$img" "$mnt" &
pid=$!
for _ in $(seq 400); do
	grep -q " $mnt fuse.mendfs " /proc/self/mounts && break
	kill -0 "$pid" 2>/dev/null || die "the daemon exited before mounting"
	sleep 0.025
done
grep -q " $mnt fuse.mendfs " /proc/self/mounts || die "no mount after 10 s"
echo "== mounted $img on $mnt"
mkdir -p "$mnt/demo/sub" && cp -r "$(dirname "$0")/../lib" "$mnt/demo/sub/" || die "copy failed"
dd if=/dev/urandom of="$mnt/demo/random.bin" bs=1M count=16 status=none conv=fsync || die "dd failed"
sum=$(md5sum <"$mnt/demo/random.bin")
df -h "$mnt"
ls -la "$mnt/demo"
fusermount3 -u "$mnt" || die "unmount failed"
for _ in $(seq 1200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.025; done
kill -0 "$pid" 2>/dev/null && die "the daemon did not exit within 30 s"
wait "$pid" || die "the daemon exited with an error"
pid=""
echo "== unmounted; offline check:"
"$bin/mendfs_db" -c check "$img" || die "mendfs_db check found problems"
echo "== remount and verify"
"$bin/mendfs" -f -o ro "$img" "$mnt" &
pid=$!
for _ in $(seq 400); do grep -q " $mnt fuse.mendfs " /proc/self/mounts && break; sleep 0.025; done
[ "$(md5sum <"$mnt/demo/random.bin")" = "$sum" ] || die "file content changed across remount"
fusermount3 -u "$mnt"
for _ in $(seq 1200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.025; done
wait "$pid"; pid=""
echo "make run: all done: $img formatted, mounted, used, unmounted clean, checked"
