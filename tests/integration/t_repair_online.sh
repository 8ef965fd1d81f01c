#!/bin/bash
# t_repair_online.sh — the REPAIR command of the control socket on a mounted, busy
# filesystem: an image whose AG 0 free-space trees (fragmented, two levels) and inode btree
# were damaged offline (mendfs_db) is mounted; while a writer keeps creating and removing
# files, REPAIR (repair_client.py, scratch in a memfd passed with SCM_RIGHTS) rebuilds them: the reply says repaired, mendfs_scrub -n is then clean, the
# writer never failed, and after unmount mendfs_repair -n is clean and every file reads back
# the same.  A repair whose scratch is a file on a full tmpfs (root only) is refused with the
# reason and changes nothing (the damage is still reported), and the one after it succeeds.
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/repairlib.sh"        # repair_reply: again when memory pressure stopped it
ml_setup t_repair_online
mkdir "$dir/run"
export MENDFS_RUNDIR=$dir/run
pop=$dir/pop.img
tmpfs=$dir/tmpfs
ml_extra_cleanup=cleanup_tmpfs
cleanup_tmpfs() { mountpoint -q "$tmpfs" 2>/dev/null && umount -l "$tmpfs"; }

"$MKFS" -q -a 4 -b 1024 "$img" 64M || fail "mkfs"
mount_fs
mkdir -p "$mnt/d/e" "$mnt/w" || fail "mkdir"
head -c 300000 /dev/urandom >"$mnt/d/data" || fail "data"
for i in $(seq 400); do head -c 1000 /dev/urandom >"$mnt/d/e/f$i" || fail "f$i"; done
for i in $(seq 1 2 400); do rm "$mnt/d/e/f$i" || fail "rm f$i"; done
(cd "$mnt" && find d -type f -print0 | sort -z | xargs -0 md5sum) >"$dir/sums" || fail "md5sum"
umount_fs
cp --sparse=always "$img" "$pop"

agfield() { db_field "$pop" "agh $1" "$2"; }
bno0=$(agfield 0 "bno root") ino0=$(agfield 0 "ino root")
bnolv=$("$DB" -c "agh 0" "$pop" | sed -n 's/^bno root = [0-9]*, levels = \([0-9]*\).*/\1/p')
[ "${bnolv:-0}" -ge 2 ] || fail "AG 0's bnobt has ${bnolv:-?} levels, expected 2 or more"
[ -n "$bno0" ] && [ -n "$ino0" ] || fail "cannot read the roots"
"$DB" -w -c "fuzz block $bno0 numrecs sub 1" -c "fuzz block $ino0 rec[0].freecount add 1" \
	"$img" >"$dir/wout" 2>&1 || { cat "$dir/wout"; fail "damage"; }

mount_fs
"$BIN/mendfs_scrub" -n "$mnt" >"$dir/out" 2>&1; rc=$?
[ $((rc & 1)) -eq 1 ] || { cat "$dir/out"; fail "the damage is not seen: exit $rc"; }

# A writer in another directory during the repairs.  Until they are done, creating files
# may hit the damaged inode btree (EUCLEAN) and is allowed to fail; after them, nothing may.
( i=0; while [ ! -e "$dir/stop" ]; do
	fixed=0; [ -e "$dir/repaired" ] && fixed=1
	if ! { head -c 5000 /dev/urandom >"$mnt/w/x$((i % 50))"; } 2>/dev/null; then
		[ $fixed = 1 ] && { echo "write $i failed" >"$dir/wfail"; break; }
	fi
	[ $((i % 3)) -eq 0 ] && rm -f "$mnt/w/x$(((i + 25) % 50))"
	i=$((i + 1))
	[ $fixed = 1 ] && echo $i >>"$dir/after"
  done ) &
writer=$!

if [ "$(id -u)" = 0 ] && mkdir "$tmpfs" && mount -t tmpfs -o size=8k tmpfs "$tmpfs"; then
	SCRATCH_DIR=$tmpfs repair_reply '^oflags 0x40 error -(28|12): .*(scratch|reserve)' "$dir/r" \
		python3 "$REPAIR_CLIENT" 6 0 || { cat "$dir/r"; fail "a full tmpfs scratch: not refused as expected"; }
	ok "scratch on a full tmpfs refused: $(cut -c1-150 "$dir/r")"
	umount "$tmpfs"
	"$BIN/mendfs_scrub" -n "$mnt" >"$dir/out" 2>&1; rc=$?
	[ $((rc & 1)) -eq 1 ] || { cat "$dir/out"; fail "the refused repair changed something"; }
else
	echo "note: not root or no tmpfs: the full-scratch case is not run"
fi
for t in 4 6; do
	repair_reply '^oflags 0x20 error 0: rebuilt' "$dir/r" python3 "$REPAIR_CLIENT" $t 0 ||
		{ cat "$dir/r"; fail "REPAIR type $t"; }
	ok "online REPAIR type $t: $(cat "$dir/r")"
done
touch "$dir/repaired"
lines() { [ -e "$1" ] && wc -l <"$1" || echo 0; }
# (bounded for a loaded machine: each write forks a process; at once when it is done)
for _ in $(seq 1200); do [ "$(lines "$dir/after")" -ge 100 ] && break; sleep 0.05; done
python3 "$REPAIR_CLIENT" 0 0 >"$dir/r" 2>&1     # the probe: nothing to rebuild
grep -q '^error 95: repair is not available yet' "$dir/r" || { cat "$dir/r"; fail "unsupported type"; }
touch "$dir/stop"
wait "$writer"
[ -e "$dir/wfail" ] && fail "the writer failed after the repair: $(cat "$dir/wfail")"
[ "$(lines "$dir/after")" -ge 100 ] || fail "the writer made no progress after the repair"
"$BIN/mendfs_scrub" -n "$mnt" >"$dir/out" 2>&1; rc=$?
[ $rc -eq 0 ] || { cat "$dir/out"; fail "scrub after the repair: exit $rc"; }
ok "scrub clean after the online repair (bno levels were $bnolv)"
(cd "$mnt" && md5sum --quiet -c "$dir/sums") >"$dir/md5" 2>&1 || { cat "$dir/md5"; fail "file contents"; }
umount_fs
"$BIN/mendfs_repair" -n "$img" >"$dir/out" 2>&1; rc=$?
[ $rc -eq 0 ] || { cat "$dir/out"; fail "mendfs_repair -n after unmount: exit $rc"; }
ok "mendfs_repair -n clean after unmount, files unchanged"
exit 0
