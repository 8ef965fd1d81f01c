#!/bin/bash
# t_crash.sh — the daemon killed with SIGKILL in the middle of a metadata- and fsync-heavy
# mendfs_stress load, CRASH_ROUNDS times (default 20) at random points (a random delay of
# 0.3-2.8 s into the run).  Each round: mount, start the load in a new directory rN (it
# records every successful fsync, with the file's size and checksum, and every later change,
# in a log outside the filesystem), kill -9 the daemon, drop the dead mount, check that the
# superblock says dirty, remount (the journal is replayed), verify that every file fsync'd and
# not changed since is intact, in this round's directory and every earlier one, read every
# file and directory back (no EIO, no EUCLEAN), `mendfs_scrub -n` finds nothing (when built),
# unmount cleanly (waiting for the daemon) and `mendfs_db -c check` must be clean.  CRASH_SEED=N repeats the delays and the loads.
#
# A SIGKILL loses what the daemon had not written yet but not what it wrote into the image
# (the kernel keeps it); dropped device writes are the crash-point replayer's (issue 7).
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/stresslib.sh"
ml_setup t_crash

rounds=${CRASH_ROUNDS:-20}
seed=${CRASH_SEED:-$(( $(date +%s) % 100000 ))}
RANDOM=$seed
echo "t_crash: seed $seed, $rounds rounds"
mix="none,creat=10,mkdir=4,write=8,append=4,truncate=3,punch=2,falloc=1,rename=6,exchange=2"
mix="$mix,link=3,unlink=5,rmdir=2,symlink=3,mknod=1,setxattr=2,chmod=1,utimes=1,fsync=10"
mix="$mix,fdatasync=5,stat=2,readdir=1"

"$MKFS" -q "$img" 2G >"$dir/mkfs.out" 2>&1 || { cat "$dir/mkfs.out"; fail "mkfs"; }
t_start=$(date +%s)
total_promises=0
for r in $(seq "$rounds"); do
	mount_fs
	mkdir "$mnt/r$r" || fail "round $r: mkdir r$r"
	"$STRESS" -k -p 3 -t 60 -e 150 -z 2M -s $((seed * 100 + r)) -f "$mix" \
		-l "$dir/sync.$r" "$mnt/r$r" >"$dir/stress.$r" 2>&1 &
	spid=$!
	delay=$(printf '%d.%02d' $((RANDOM % 3)) $((RANDOM % 100)))
	[ "${delay%%.*}" -eq 0 ] && delay=0.$(( 30 + RANDOM % 70 ))
	sleep "$delay"    # the random crash point
	kill -0 "$spid" 2>/dev/null || { cat "$dir/stress.$r"; fail "round $r: the load ended before the crash"; }
	daemon_alive "round $r, before the kill"
	crash
	for _ in $(seq 400); do kill -0 "$spid" 2>/dev/null || break; sleep 0.025; done
	kill -0 "$spid" 2>/dev/null && { kill -9 "$spid"; fail "round $r: the load did not stop within 10 s of the crash"; }
	wait "$spid"
	src=$?
	[ "$src" -eq 0 ] || { cat "$dir/stress.$r"; fail "round $r: mendfs_stress failed before or at the crash (status $src)"; }
	grep -q "filesystem gone" "$dir/stress.$r" || { cat "$dir/stress.$r"; fail "round $r: the load did not see the crash"; }
	"$DB" -c sb "$img" | grep -q '^state = 2' || fail "round $r: the superblock is not dirty after the crash"
	fsyncs=$(grep -c '^S ' "$dir/sync.$r")

	mount_fs
	kept=0
	for k in $(seq "$r"); do
		bounded 120 "$STRESS" -V "$dir/sync.$k" "$mnt/r$k" >"$dir/verify.out" 2>&1 ||
			{ cat "$dir/verify.out"; fail "round $r: fsync'd data of round $k lost or damaged"; }
		kept=$((kept + $(sed -n 's/.* \([0-9]*\) files fsync.d and untouched since.*/\1/p' "$dir/verify.out")))
	done
	# everything the replayed filesystem holds reads back without an error
	bounded 120 find "$mnt" -xdev -type f -exec cat {} + >/dev/null 2>"$dir/read.err" ||
		{ head "$dir/read.err"; fail "round $r: reading the replayed filesystem failed"; }
	nent=$(bounded 60 find "$mnt" -xdev | wc -l)
	scrub_said=""
	scrub_idle "round $r, after the replay"
	umount_fs
	check_clean "round $r, after replay and a clean unmount"
	total_promises=$kept
	echo "round $r: killed ${delay}s into the load ($fsyncs fsyncs), replayed; $kept fsync'd files intact (rounds 1-$r), $nent names read back${scrub_said:+, scrub clean}, check clean"
done
grep -Ei "corrupt|checksum|EUCLEAN|structure needs|bad magic" "$log" &&
	fail "the daemon reported damaged metadata"
ok "$rounds SIGKILLs mid-load: every remount replayed, $total_promises fsync'd files intact, check clean each time ($(( $(date +%s) - t_start )) s)"
exit 0
