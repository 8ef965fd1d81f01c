#!/bin/bash
# torture.sh — `make torture DURATION=SECONDS`: a long mendfs_stress run on a mounted image
# with the online checker looping beside it, then the offline checks.
#
#   torture.sh BIN TOOLS DURATION [PROCS]
#
# 1. mkfs an 8 GiB sparse image, mount it;
# 2. mendfs_stress -p PROCS (4) -t DURATION on it, every result and read verified against
#    its model; meanwhile `mendfs_scrub -n` runs over and over (when built): any corruption it
#    reports fails the run;
# 3. the daemon must still be running; unmount, wait for its exit (status 0), `mendfs_db -c
#    check` clean (and `mendfs_repair -n` when built);
# 4. t_scale.sh with MENDFS_SCALE=full (a directory of 1,000,000 entries) unless
#    TORTURE_SCALE=0.
# Prints a summary; exit 0 only when all of it held.  TORTURE_SEED=N repeats the stress load.
# Next steps (issue 7): forced online repair looping beside the scrubs.
set -u
BIN=$(cd "${1:?usage: torture.sh BIN TOOLS DURATION [PROCS]}" && pwd)
TOOLS=$(cd "${2:?}" && pwd)
DURATION=${3:?}
PROCS=${4:-4}
export BIN TOOLS O=${O:-$(dirname "$TOOLS")}
here=$(cd "$(dirname "$0")" && pwd)

# mountlib gives ml_setup, mount_fs, umount_fs, fail, ok, bounded; stresslib check_clean
. "$here/integration/mountlib.sh"
. "$here/integration/stresslib.sh"
ml_setup torture
# a signal (a closed pipe, ^C) ends the run through exit, so the EXIT trap unmounts
trap 'exit 1' INT TERM HUP PIPE
t0=$(date +%s)
echo "torture: $PROCS stress processes for $DURATION s, scrub loop: $([ -x "$BIN/mendfs_scrub" ] && echo yes || echo 'no (not built)')"

"$MKFS" -q "$img" 8G >"$dir/mkfs.out" 2>&1 || { cat "$dir/mkfs.out"; fail "mkfs"; }
mount_fs -o allow_other

"$STRESS" -p "$PROCS" -t "$DURATION" ${TORTURE_SEED:+-s "$TORTURE_SEED"} "$mnt" >"$dir/stress.out" 2>&1 &
spid=$!
scrubs=0 scrub_bad=0 scrub_other=0
if [ -x "$BIN/mendfs_scrub" ]; then
	while kill -0 "$spid" 2>/dev/null; do
		# a scrub still running after the whole run's time is a hang: bounded reports it
		bounded $((DURATION + 600)) "$BIN/mendfs_scrub" -n "$mnt" >"$dir/scrub.out" 2>&1
		rc=$?
		scrubs=$((scrubs + 1))
		if [ $((rc & 1)) -ne 0 ]; then
			scrub_bad=$((scrub_bad + 1))
			echo "--- scrub $scrubs reported corruption (status $rc):"
			head -20 "$dir/scrub.out"
		elif [ "$rc" -ne 0 ]; then
			scrub_other=$((scrub_other + 1))
			[ "$scrub_other" -le 3 ] && { echo "--- scrub $scrubs: status $rc"; head -5 "$dir/scrub.out"; }
		fi
	done
fi
# the stress run ends by itself after DURATION and its final check; a longer wait is a hang
# (bounded prints the daemon's threads and fails)
bounded $((DURATION + 600)) sh -c "while kill -0 $spid 2>/dev/null; do sleep 1; done"
wait "$spid"
src=$?
grep -v '^ ' "$dir/stress.out" | tail -40
daemon_alive "during the torture run"
[ "$src" -eq 0 ] || fail "mendfs_stress failed (status $src)"
[ "$scrub_bad" -eq 0 ] || fail "$scrub_bad of $scrubs scrubs reported corruption"
umount_fs
check_clean "after the torture run"
repair=skipped
if [ -x "$BIN/mendfs_repair" ]; then
	"$BIN/mendfs_repair" -n "$img" >"$dir/repair.out" 2>&1 || { tail -20 "$dir/repair.out"; fail "mendfs_repair -n"; }
	repair=clean
fi
grep -Ei "corrupt|checksum|EUCLEAN|structure needs|bad magic" "$log" && fail "the daemon reported damaged metadata"
summary="torture: $DURATION s, $PROCS processes: $(grep -o 'seed [0-9]*' "$dir/stress.out" | head -1), $(grep -o '[0-9]* operations in' "$dir/stress.out" | tail -1 | cut -d' ' -f1) operations, all verified; 0 daemon crashes; $scrubs scrubs, $scrub_bad with corruption, $scrub_other other non-zero; mendfs_db check clean; mendfs_repair -n $repair"

if [ "${TORTURE_SCALE:-1}" != 0 ]; then
	MENDFS_SCALE=full bash "$here/integration/t_scale.sh" || fail "t_scale (1,000,000 entries)"
	summary="$summary; t_scale with 1,000,000 entries passed"
fi
echo "$summary ($(( $(date +%s) - t0 )) s in all)"
exit 0
