#!/bin/bash
# t_integrity.sh — data integrity against a model (tests/tools/integrity.c), mounted for
# real: seeded random writes, appends, writes through shared mappings, truncates, punches,
# zero ranges and preallocations across 50 files (some sparse past 4 GiB), by two threads;
# every file verified against the model after each phase, again with the page cache
# dropped, after an unmount and remount, after a second round of operations on the
# remounted filesystem, and read-only at the end; `mendfs_db check` clean after every
# unmount and the daemon's log free of errors.
#
# Then the same with the kernel's writeback cache, and on an image of 64 KiB blocks (larger
# than a page: every write is partial).
# The seed is printed; INTEGRITY_SEED=N replays it.  INTEGRITY_OPS (default 6000) sets the
# operations of the first round (the second does half as many, the writeback and 64 KiB stages too).
set -u
# shellcheck source=mountlib.sh
. "$(dirname "$0")/mountlib.sh"
TOOLS=${TOOLS:-${O:-$(dirname "$BIN")}/tools}
TOOL=$TOOLS/integrity
[ -x "$TOOL" ] || { echo "FAIL: $TOOL is not built"; exit 1; }

ml_setup t_integrity
seed=${INTEGRITY_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
ops=${INTEGRITY_OPS:-6000}
echo "seed $seed (replay: INTEGRITY_SEED=$seed)"
state=$dir/state

db_check() {
	"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { cat "$dir/db.out"; fail "mendfs_db check $1"; }
}

# free_blocks: the free block count mendfs_db check reports for the unmounted image
free_blocks() {
	db_check "$1"
	sed -n 's/^check: clean ([0-9]* AGs, \([0-9]*\) free blocks.*/\1/p' "$dir/db.out"
}

"$MKFS" -q "$img" 4G >"$dir/mkfs.out" 2>&1 || { cat "$dir/mkfs.out"; fail "mkfs"; }
free0=$(free_blocks "of the new image")
mount_fs
mkdir "$mnt/data" || fail "mkdir in the mount"
bounded 900 "$TOOL" run -s "$seed" -f 50 -n "$ops" -p 4 -j 2 "$mnt/data" "$state" ||
	fail "round 1 (seed $seed)"
bounded 120 "$TOOL" verify "$mnt/data" "$state" || fail "verify after round 1 (seed $seed)"
umount_fs
db_check "after round 1"
ok "round 1: $ops operations in 4 phases, verified after each; check clean"

mount_fs
bounded 120 "$TOOL" verify "$mnt/data" "$state" || fail "verify after remount (seed $seed)"
ok "remount: every file matches the model"
bounded 900 "$TOOL" run -n $((ops / 2)) -p 2 -j 2 "$mnt/data" "$state" ||
	fail "round 2 on the remounted filesystem (seed $seed)"
umount_fs
db_check "after round 2"
ok "round 2: $((ops / 2)) more operations after the remount; check clean"

mount_fs -o ro
bounded 120 "$TOOL" verify "$mnt/data" "$state" || fail "verify read-only (seed $seed)"
umount_fs
db_check "after the read-only mount"
grep -Ei "corrupt|failed|error" "$log" && fail "the daemon reported errors"
ok "read-only remount: every file matches the model; check clean"

# Removing everything gives every block back (but for what the AG free lists keep).
mount_fs
rm -r "$mnt/data" || fail "rm -r"
used=""
for _ in $(seq 400); do
	used=$(( $(stat -f -c %c "$mnt") - $(stat -f -c %d "$mnt") ))
	[ "$used" -le 1 ] && break
	sleep 0.05
done
[ "$used" -le 1 ] || fail "$used inodes still in use 20 s after removing everything"
umount_fs
free1=$(free_blocks "after removing everything")
[ -n "$free1" ] && [ "$free1" -ge $((free0 - 64)) ] && [ "$free1" -le "$free0" ] ||
	fail "free blocks: $free0 on the new image, ${free1:-?} after removing everything"
ok "removing everything: free blocks $free0 -> $free1 (AG free lists refilled), check clean"

# The kernel's writeback cache (-o writeback_cache): writes and mapped pages reach the
# daemon later, in large requests; verified after a remount without it.
rm -f "$state"
mount_fs -o writeback_cache
mkdir "$mnt/wb" || fail "mkdir in the mount"
bounded 900 "$TOOL" run -s "$seed" -f 50 -n $((ops / 2)) -p 3 -j 2 "$mnt/wb" "$state" ||
	fail "writeback cache (seed $seed)"
umount_fs
db_check "after the run with the writeback cache"
mount_fs
bounded 120 "$TOOL" verify "$mnt/wb" "$state" || fail "verify after the writeback cache (seed $seed)"
umount_fs
ok "writeback cache: $((ops / 2)) operations, verified after each phase and after a remount"

"$MKFS" -q -f -b 65536 "$img" 4G >"$dir/mkfs.out" 2>&1 || { cat "$dir/mkfs.out"; fail "mkfs -b 65536"; }
rm -f "$state"
mount_fs
mkdir "$mnt/data" || fail "mkdir in the mount"
bounded 900 "$TOOL" run -s "$seed" -f 50 -n $((ops / 2)) -p 3 -j 2 "$mnt/data" "$state" ||
	fail "64 KiB blocks (seed $seed)"
umount_fs
db_check "after the run on 64 KiB blocks"
mount_fs
bounded 120 "$TOOL" verify "$mnt/data" "$state" || fail "verify 64 KiB blocks after remount (seed $seed)"
umount_fs
grep -Ei "corrupt|failed|error" "$log" && fail "the daemon reported errors"
ok "64 KiB blocks: $((ops / 2)) operations, verified after each phase and after a remount; check clean"
exit 0
