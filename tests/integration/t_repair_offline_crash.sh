#!/bin/bash
# t_repair_offline_crash.sh — a crash during mendfs_repair leaves an image that the next
# mendfs_repair repairs.  A populated image (1 KiB blocks) is damaged with mendfs_db -w in
# several inode-level structures and an AG btree at once (an inode record that does not
# load, a trashed extent-btree leaf, a trashed directory name-btree root, a trashed
# attribute-btree leaf, a NUL in a symlink target, a wrong link count, a bnobt record) and
# repaired with MENDFS_WRITELOG (lib/dev.h: every write and flush of the image logged in
# order).  Then tests/tools/replaylog rebuilds the image a crash would have left at flush
# points of that run (every one, or an evenly spread sample of CRASH_POINTS, default 32,
# the first and the last always) and at CRASH_INSIDE (default 6) random points inside
# segments between flushes, unflushed writes dropped or torn; on each: `mendfs_repair -n`
# runs (exit 0 or 4: the old or the new structures, never an operational error),
# `mendfs_repair` then exits 0 or 1 (the journal replayed, what is left rebuilt), a second
# `mendfs_repair -n` exits 0, mendfs_db's `check -f` is clean, and every file the damage did
# not destroy reads back the same through a mount; and a state -n finds clean needs no
# repair (exit 0).  Deterministic: the repair is one process, its writes in one order, and
# the inside points come from CRASH_SEED (default 1).
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/repairlib.sh"
ml_setup t_repair_offline_crash
REPAIR=$BIN/mendfs_repair
REPLAY=${TOOLS:-${O:-$(dirname "$BIN")}/tools}/replaylog
[ -x "$REPAIR" ] || fail "no $REPAIR"
[ -x "$REPLAY" ] || { echo "skip: replaylog is not built"; exit 77; }
command -v setfattr >/dev/null || { echo "skip: setfattr (attr) is missing"; exit 77; }
seed=${CRASH_SEED:-1}
RANDOM=$seed
echo "t_repair_offline_crash: seed $seed"

# ---- a populated image, damaged ------------------------------------------------------------
"$MKFS" -q -a 2 -b 1024 "$img" 32M || fail "mkfs"
mount_fs
cd "$mnt" || fail "cd"
mkdir d big x || fail "mkdir"
for i in $(seq 60); do
	head -c 1024 /dev/urandom >>d/frag || fail "frag"
	head -c 1024 /dev/urandom >>d/other || fail "other"
done
head -c 30000 /dev/urandom >d/large || fail "large"
for i in $(seq 200); do echo "entry $i" >"big/e$i" || fail "big/e$i"; done
ln -s 0123456789 x/link || fail "symlink"
echo attrs >x/attrs || fail "x/attrs"
for i in $(seq 30); do setfattr -n "user.a$i" -v "val-$i" x/attrs || fail "setfattr a$i"; done
(find d big -type f -print0 | sort -z | xargs -0 md5sum) >"$dir/sums" || fail "md5sum"
ino() { stat -c %i "$mnt/$1"; }
FRAG=$(ino d/frag) LARGE=$(ino d/large) BIG=$(ino big) LINK=$(ino x/link) ATTRS=$(ino x/attrs)
OTHER=$(ino d/other)
cd /
umount_fs

leaf=$(db_fields "$img" "block $(fork_root "$img" "$FRAG" data)" "ptr[0]")
bigroot=$(fork_root "$img" "$BIG" data)
attrleaf=""
for b in $(owned_blocks "$img" "$ATTRS"); do
	[ "$(db_fields "$img" "block $b" magic)" = 1413568589 ] &&
		[ "$(db_fields "$img" "block $b" level)" = 0 ] && { attrleaf=$b; break; }
done
bno0=$(db_field "$img" "agh 0" "bno root")
for v in leaf bigroot attrleaf bno0; do [ -n "${!v}" ] || fail "cannot find $v"; done
"$DB" -w -c "write inode $LARGE dformat 2" -c "trash $leaf 1 random" -c "trash $bigroot 1 random" \
	-c "trash $attrleaf 1 random" -c "write inode $LINK lit[4] 0" -c "write inode $OTHER nlink 3" \
	-c "fuzz block $bno0 rec[0].blockcount sub 1" "$img" >"$dir/wout" 2>&1 ||
	{ cat "$dir/wout"; fail "damage"; }
cp --sparse=always "$img" "$dir/base" || fail "copying the base image"

# ---- the logged repair ------------------------------------------------------------------------
MENDFS_WRITELOG=$dir/wlog "$REPAIR" "$img" >"$dir/rep" 2>&1; rc=$?
[ $rc -eq 1 ] || { cat "$dir/rep"; fail "the logged repair: exit $rc, expected 1"; }
nreb=$(grep -c ': rebuilt (' "$dir/rep")
[ "$nreb" -ge 6 ] || { cat "$dir/rep"; fail "the logged repair rebuilt only $nreb objects"; }
"$REPLAY" -i "$dir/wlog" >"$dir/info" || fail "replaylog -i"
nflush=$(sed -n 's/^records .* flushes \([0-9]*\)$/\1/p' "$dir/info")
[ -n "$nflush" ] && [ "$nflush" -gt 0 ] || { cat "$dir/info"; fail "no flushes in the write log"; }
segs=()
for sw in $(sed -n 's/^segments with writes://p' "$dir/info"); do segs+=("${sw%%:*}"); done
echo "the logged repair: $nreb rebuilds; write log: $(head -1 "$dir/info")"

last=$((nflush + 1)) npoints=${CRASH_POINTS:-32}
points=()
if [ "$last" -lt "$npoints" ]; then
	points=($(seq 0 "$last"))
else
	for i in $(seq 0 $((npoints - 1))); do points+=($(( i * last / (npoints - 1) ))); done
fi

# state LABEL REPLAY-ARGS...: the image a crash there leaves, checked and repaired
nstates=0 nfixed=0
state() {
	local label=$1 rc1 rc2
	shift
	nstates=$((nstates + 1))
	"$REPLAY" "$@" "$dir/wlog" "$dir/base" "$img" >"$dir/replay.out" 2>&1 ||
		{ cat "$dir/replay.out"; fail "$label: replaylog $*"; }
	"$REPAIR" -n "$img" >"$dir/n1" 2>&1; rc1=$?
	[ $rc1 -eq 0 ] || [ $rc1 -eq 4 ] || { cat "$dir/n1"; fail "$label: -n exit $rc1, expected 0 or 4"; }
	"$REPAIR" "$img" >"$dir/r" 2>&1; rc2=$?
	[ $rc2 -eq 0 ] || [ $rc2 -eq 1 ] || { cat "$dir/r"; fail "$label: repair exit $rc2, expected 0 or 1"; }
	[ $rc1 -eq 0 ] && [ $rc2 -ne 0 ] && { cat "$dir/n1" "$dir/r"; fail "$label: -n found it clean, the repair changed it"; }
	[ $rc2 -eq 1 ] && nfixed=$((nfixed + 1))
	"$REPAIR" -n "$img" >"$dir/n2" 2>&1 || { cat "$dir/r" "$dir/n2"; fail "$label: -n after the repair"; }
	"$DB" -c "check -f" "$img" >"$dir/chk" 2>&1 || { cat "$dir/r" "$dir/chk"; fail "$label: check -f"; }
	mount_fs
	(cd "$mnt" && md5sum --quiet -c "$dir/sums") >"$dir/md5" 2>&1 ||
		{ cat "$dir/r" "$dir/md5"; fail "$label: file contents changed"; }
	[ "$(readlink "$mnt/x/link")" = 0123 ] || fail "$label: x/link reads '$(readlink "$mnt/x/link")'"
	umount_fs
	echo "$label: -n $rc1, repair $rc2 ($(grep -c ': rebuilt (' "$dir/r") rebuilds), then clean"
}

for k in "${points[@]}"; do state "flush point $k/$last" -p "$k"; done
[ ${#segs[@]} -gt 0 ] || fail "no segment with writes"
for i in $(seq "${CRASH_INSIDE:-6}"); do
	k=${segs[$((RANDOM % ${#segs[@]}))]}
	state "inside segment $k (seed $((seed + i)))" -m "$k" -r $((seed + i))
done
ok "$nstates crash states of an offline repair of $nreb objects: each repaired" \
	"($nfixed with something left to do), then clean, files unchanged"
exit 0
