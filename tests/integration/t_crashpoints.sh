#!/bin/bash
# t_crashpoints.sh — crash points from the daemon's write log (issue 7; like dm-log-writes
# with fstests' replay-log).  Format a small image and keep a copy; mount it with
# MENDFS_WRITELOG (lib/dev.h: every write and flush of the image is logged in order), run a
# short metadata- and fsync-heavy mendfs_stress load with its fsync record (-l, lines stamped
# with CLOCK_MONOTONIC), unmount.  Then rebuild with tests/tools/replaylog the image a crash
# would have left at flush points (every one, or an evenly spread sample of CP_POINTS, default
# 40, when there are more) and at CP_INSIDE (default 8) random points inside segments between
# flushes (the segment of a random write), with unflushed writes dropped or torn.  Each state: mount (the journal is
# replayed), every file fsync'd before that point and not changed since is intact (mendfs_stress
# -V on the fsync record cut at the state's bounds), every file reads back, clean unmount
# (waiting for the daemon), `mendfs_db -c "check -f"` clean.  Prints one line per state and a
# summary; on a bad state, the command that rebuilds it and where the log and base image were
# kept.  CP_SEED=N repeats the load's seed and the choice of states (the log itself depends on
# thread timing: a kept log is the exact reproduction); CP_PROCS and CP_OPS size the load,
# CP_MKFS_OPTS (default -J 128K: checkpoints and log wraps inside the load) the image.
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/stresslib.sh"
ml_setup t_crashpoints
REPLAY=$TOOLS/replaylog
[ -x "$REPLAY" ] || { echo "skip: replaylog is not built"; exit 77; }

seed=${CP_SEED:-$(( $(date +%s) % 100000 ))}
npoints=${CP_POINTS:-40}
ninside=${CP_INSIDE:-8}
RANDOM=$seed
t_start=$(date +%s)
echo "t_crashpoints: seed $seed"
mix="none,creat=10,mkdir=4,write=8,append=4,truncate=3,punch=2,falloc=1,rename=6,exchange=2"
mix="$mix,link=3,unlink=5,rmdir=2,symlink=3,setxattr=2,chmod=1,fsync=10,fdatasync=5,stat=2"

"$MKFS" -q ${CP_MKFS_OPTS--J 128K} "$img" 64M >"$dir/mkfs.out" 2>&1 || { cat "$dir/mkfs.out"; fail "mkfs"; }
cp --sparse=always "$img" "$dir/base" || fail "copying the base image"
export MENDFS_WRITELOG=$dir/wlog
mount_fs
unset MENDFS_WRITELOG
mkdir "$mnt/w" || fail "mkdir w"
bounded 60 "$STRESS" -p "${CP_PROCS:-2}" -n "${CP_OPS:-60}" -z 1M -s "$seed" -f "$mix" -l "$dir/sync" "$mnt/w" \
	>"$dir/stress.out" 2>&1 || { cat "$dir/stress.out"; fail "the logged load failed"; }
umount_fs
check_clean "the logged run"
"$REPLAY" -i "$dir/wlog" >"$dir/info" || fail "replaylog -i"
nflush=$(sed -n 's/^records .* flushes \([0-9]*\)$/\1/p' "$dir/info")
[ -n "$nflush" ] && [ "$nflush" -gt 0 ] || { cat "$dir/info"; fail "no flushes in the write log"; }
# the segments with writes, each as many times as it has writes (a random write's segment)
segs=()
for sw in $(sed -n 's/^segments with writes://p' "$dir/info"); do
	for _ in $(seq "${sw#*:}"); do segs+=("${sw%%:*}"); done
done
echo "write log: $(head -1 "$dir/info"); $(grep -c '^S ' "$dir/sync") fsyncs recorded"
sed -n 2p "$dir/info"

# the flush points to try: all of 0..nflush+1, or npoints of them evenly spread with a
# random phase (the first and the last always)
last=$((nflush + 1))
points=()
if [ "$last" -lt "$npoints" ]; then
	points=($(seq 0 "$last"))
else
	phase=$((RANDOM % (last / (npoints - 1) + 1)))
	for i in $(seq 0 $((npoints - 1))); do
		k=$(( i * last / (npoints - 1) + phase ))
		[ "$i" -eq 0 ] && k=0
		[ "$k" -gt "$last" ] || [ "$i" -eq $((npoints - 1)) ] && k=$last
		points+=("$k")
	done
fi

nbad=0 nstates=0 npromised=0
keep=""
bad() {
	nbad=$((nbad + 1))
	echo "  BAD: $1"
	echo "  reproduce: $REPLAY $2 WLOG BASE IMG; mendfs -f IMG MNT; mendfs_stress -V SYNC.cut MNT/w"
	if [ -z "$keep" ]; then
		keep=$(mktemp -d /tmp/t_crashpoints.kept.XXXXXX)
		cp --sparse=always "$dir/wlog" "$dir/base" "$dir/sync" "$keep/"
	fi
	cp "$dir/sync.cut" "$keep/sync.cut.$nstates" 2>/dev/null
	echo "  (WLOG BASE SYNC kept in $keep; the cut fsync record of this state: sync.cut.$nstates)"
}

# state LABEL REPLAY-ARGS...: rebuild, mount, verify, unmount, check
state() {
	local label=$1 args="${*:2}" ts tc np desc
	nstates=$((nstates + 1))
	"$REPLAY" "${@:2}" "$dir/wlog" "$dir/base" "$img" >"$dir/replay.out" 2>&1 ||
		{ cat "$dir/replay.out"; fail "replaylog $args"; }
	desc=$(head -1 "$dir/replay.out")
	read -r _ ts tc < <(grep '^bounds ' "$dir/replay.out")
	# promises: fsync'd before ts; retired by a change begun before tc
	awk -v s="$ts" -v c="$tc" '{ t = substr($NF, 2) + 0 }
		$1 == "S" && t < s { print; next } $1 == "D" && t < c { print }' \
		"$dir/sync" >"$dir/sync.cut"
	np=$(grep -c '^S ' "$dir/sync.cut")
	npromised=$((npromised + np))
	: >"$log"
	"$MENDFS" -f "$img" "$mnt" >>"$log" 2>&1 &
	pid=$!
	for _ in $(seq 400); do
		mounted "$mnt" && break
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.025
	done
	if ! mounted "$mnt"; then
		kill -0 "$pid" 2>/dev/null && crash
		pid=""
		echo "$label: $desc"
		bad "the image does not mount: $(tail -3 "$log" | tr '\n' ' ')" "$args"
		return
	fi
	local problem=""
	if [ "$np" -gt 0 ]; then
		bounded 60 "$STRESS" -V "$dir/sync.cut" "$mnt/w" >"$dir/verify.out" 2>&1 ||
			problem="fsync'd data lost: $(grep -v '^synclog: [0-9]* fsyncs' "$dir/verify.out" | head -5 | tr '\n' ' ')"
	fi
	bounded 60 find "$mnt" -xdev -type f -exec cat {} + >/dev/null 2>"$dir/read.err" ||
		problem="$problem reading back failed: $(head -3 "$dir/read.err" | tr '\n' ' ')"
	cd /
	fusermount3 -u "$mnt" || fail "$label: fusermount3 -u failed"
	ml_wait_gone
	[ "$rc" -eq 0 ] || problem="$problem the daemon exited with status $rc"
	"$DB" -c "check -f" "$img" >"$dir/db.out" 2>&1 ||
		problem="$problem check -f: $(grep -v '^check: ' "$dir/db.out" | head -5 | tr '\n' ' ')"
	grep -Eiq "corrupt|EUCLEAN|structure needs" "$log" &&
		problem="$problem the daemon reported: $(grep -Ei 'corrupt|EUCLEAN|structure needs' "$log" | head -3 | tr '\n' ' ')"
	if [ -n "$problem" ]; then
		echo "$label: $desc"
		bad "$problem" "$args"
	else
		echo "$label: ok ($np fsync'd files intact; $desc)"
	fi
}

for k in "${points[@]}"; do
	state "flush point $k/$last" -p "$k"
done
# the verification can fail: the base image (point 0) with every promise of the load
if grep -q '^S ' "$dir/sync"; then
	"$REPLAY" -p 0 "$dir/wlog" "$dir/base" "$img" >/dev/null || fail "replaylog -p 0"
	mount_fs
	bounded 60 "$STRESS" -V "$dir/sync" "$mnt/w" >"$dir/verify.out" 2>&1 &&
		fail "the base image kept promises made after it: the check cannot fail"
	umount_fs
fi
for i in $(seq "$ninside"); do
	[ "${#segs[@]}" -gt 0 ] || break
	s=${segs[$((RANDOM % ${#segs[@]}))]}
	state "inside segment $s" -m "$s" -r "$((seed * 100 + i))"
done

el=$(( $(date +%s) - t_start ))
[ "$nbad" -eq 0 ] ||
	fail "$nbad of $nstates crash states bad (seed $seed; WLOG BASE SYNC kept in $keep) ($el s)"
ok "$nstates crash states ($((${#points[@]})) of $((last + 1)) flush points, $ninside inside) mounted, $npromised fsync promises kept, check -f clean ($el s)"
exit 0
