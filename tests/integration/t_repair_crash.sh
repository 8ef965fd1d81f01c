#!/bin/bash
# t_repair_crash.sh — crashes around online rebuilds: 20 times, REPAIR of AG 0's free-space
# trees, inode btree or reverse map (in turn; the space trees and the reverse map are written
# as ordered new blocks in free space, swapped in by the commit) is sent through the control
# socket and the daemon is killed with SIGKILL after a random delay (before, during or after
# the rebuild); each remount (journal replay) must show a consistent filesystem — the old
# trees or the new, never a mix: mendfs_scrub -n is clean — and the files read back the
# same.  At the end, mendfs_repair -n after unmount is clean.
set -u
. "$(dirname "$0")/mountlib.sh"
ml_setup t_repair_crash
mkdir "$dir/run"
export MENDFS_RUNDIR=$dir/run

"$MKFS" -q -a 4 -b 1024 "$img" 64M || fail "mkfs"
mount_fs
mkdir -p "$mnt/d" || fail "mkdir"
for i in $(seq 300); do head -c 1000 /dev/urandom >"$mnt/d/f$i" || fail "f$i"; done
for i in $(seq 1 2 300); do rm "$mnt/d/f$i" || fail "rm f$i"; done
(cd "$mnt" && find d -type f -print0 | sort -z | xargs -0 md5sum) >"$dir/sums" || fail "md5sum"
sync
replied=0
types=(4 6 7)
for round in $(seq 20); do
	type=${types[round % 3]}
	REPAIR_CLIENT_SENT=1 python3 "$REPAIR_CLIENT" $type 0 >"$dir/reply" 2>&1 &
	client=$!
	for _ in $(seq 500); do grep -q sent "$dir/reply" 2>/dev/null && break; sleep 0.01; done
	[ $((RANDOM % 4)) -eq 0 ] || sleep "0.00$((RANDOM % 10))"
	crash
	wait "$client" 2>/dev/null
	grep -Eq '^(oflags|error -?[0-9]+:)' "$dir/reply" && replied=$((replied + 1))
	mount_fs
	"$BIN/mendfs_scrub" -n "$mnt" >"$dir/out" 2>&1; rc=$?
	[ $rc -eq 0 ] || { cat "$dir/out"; fail "round $round (type $type): scrub after the crash: exit $rc"; }
	(cd "$mnt" && md5sum --quiet -c "$dir/sums") >"$dir/md5" 2>&1 ||
		{ cat "$dir/md5"; fail "round $round: file contents changed"; }
done
ok "20 crashes around rebuilds ($replied answered before the crash): each remount consistent, files unchanged"
umount_fs
"$BIN/mendfs_repair" -n "$img" >"$dir/out" 2>&1; rc=$?
[ $rc -eq 0 ] || { cat "$dir/out"; fail "mendfs_repair -n: exit $rc"; }
ok "mendfs_repair -n clean"
exit 0
