#!/bin/bash
# torture.sh — `make torture DURATION=SECONDS PROCS=N`: mendfs_stress on a mounted image for
# that long with two loops beside it, a checking scrub and a forced online rebuild of
# everything the daemon can rebuild; then the offline checks and a check of every surviving
# name and byte after a remount.  t_torture.sh runs a short one in `make check`.
#
#   torture.sh BIN TOOLS DURATION [PROCS]
#
# 1. mkfs a sparse image (TORTURE_SIZE, 8G), mount it;
# 2. mendfs_stress -p PROCS (4) -t DURATION -m MANIFEST: every result and read checked against
#    its model, a final check of everything, then the manifest of what is left.  Beside it,
#    until it ends:
#      - `mendfs_scrub -n --json` over and over: any finding or a status other than 0 is a
#        false positive or a real corruption;
#      - `mendfs_scrub --force-rebuild --json` over and over: every object of every type the
#        daemon can rebuild online is rebuilt (whatever rebuilders it has: the client skips
#        the types it answers EOPNOTSUPP for) and checked again; each rebuild is counted by
#        type, and anything but "repaired", any finding or a status other than 0 is a failure;
#    the daemon must stay alive all along (one process, never restarted);
# 3. unmount, the daemon's exit (status 0), `mendfs_repair -n` and `mendfs_db -c check` clean;
# 4. remount: `mendfs_stress -M` finds every name of the manifest with its inode, mode,
#    owner, links, size, content and xattrs, and nothing else; a scrub of the idle mount is
#    clean; unmount;
# 5. t_scale.sh with MENDFS_SCALE=full (1,000,000 entries) unless TORTURE_SCALE=0.
# Prints a summary table; exit 0 only when all of it held.  The first finding stops the load
# and the loops; the run still unmounts and runs the offline checks, then fails.  On any
# failure the evidence (the image, the daemon's log, the stress output and seed, the failing
# scrubs' JSON, the offline checks' output, the manifest) is kept in TORTURE_KEEP (default
# $O/torture-evidence.DATE).
# TORTURE_SEED=N repeats the stress load; TORTURE_STRESS_ARGS adds options (-z 4M, -e 100...).
set -u
BIN=$(cd "${1:?usage: torture.sh BIN TOOLS DURATION [PROCS]}" && pwd)
TOOLS=$(cd "${2:?}" && pwd)
DURATION=${3:?}
PROCS=${4:-4}
export BIN TOOLS O=${O:-$(dirname "$TOOLS")}
here=$(cd "$(dirname "$0")" && pwd)

# mountlib gives ml_setup, mount_fs, umount_fs, fail, ok, bounded; stresslib check_clean,
# scrub_idle, daemon_alive
. "$here/integration/mountlib.sh"
. "$here/integration/stresslib.sh"
[ -x "$BIN/mendfs_scrub" ] || { echo "skip: mendfs_scrub is not built"; exit 77; }
[ -x "$BIN/mendfs_repair" ] || { echo "skip: mendfs_repair is not built"; exit 77; }
ml_setup torture
mkdir "$dir/run"
export MENDFS_RUNDIR=$dir/run
passed=0 spid="" loops=""
keep=${TORTURE_KEEP:-$O/torture-evidence.$(date +%Y%m%d-%H%M%S)}

# mendfs_stress forks its workers: stop them by their parent's id, then the parent
stop_load() {
	[ -n "$spid" ] || return 0
	kill $(pgrep -P "$spid") "$spid" 2>/dev/null
	for _ in $(seq 400); do [ -z "$(pgrep -P "$spid")" ] && break; sleep 0.025; done
}
# the loops, then the scrubs they started (by their parents' ids)
stop_loops() {
	local l
	touch "$dir/stop"
	for l in $loops; do
		kill $(pgrep -P "$l") "$l" 2>/dev/null
	done
}
# at exit, after mountlib has undone the mount: on a failure keep the evidence
torture_cleanup() {
	[ "$passed" = 1 ] && return 0
	mkdir -p "$keep" || return 0
	cp --sparse=always "$img" "$keep/img" 2>/dev/null
	cp "$dir"/*.out "$dir"/*.cur "$dir"/*.err "$dir"/*.fail.* "$dir"/*.runs "$dir"/*.tsv "$dir/manifest" "$dir/findings" \
		"$keep/" 2>/dev/null
	cp "$log" "$keep/daemon.log" 2>/dev/null
	{
		echo "torture failed: $DURATION s, $PROCS processes, $(date)"
		echo "stress: $(grep -o 'seed [0-9]*' "$dir/stress.out" 2>/dev/null | head -1)" \
			"(TORTURE_SEED=N repeats the load, not the timing)"
		cat "$dir/findings" 2>/dev/null
	} >"$keep/README"
	echo "torture: evidence kept in $keep"
}
ml_extra_cleanup=torture_cleanup
# the load and the loops stop before mountlib's cleanup (which waits for every child)
trap 'stop_load; stop_loops; ml_cleanup' EXIT
# a signal (a closed pipe, ^C) ends the run through exit, so the EXIT trap unmounts
trap 'exit 1' INT TERM HUP PIPE

# finding WHAT: record a failure and stop the run (the load, then the loops)
finding() {
	echo "$*" >>"$dir/findings"
	touch "$dir/stop"
}

# scrub_loop NAME ARGS...: mendfs_scrub ARGS --json until $dir/stop.  Each run is a line of
# $dir/NAME.runs ("run status findings rebuilds-not-repaired milliseconds refused"), its
# rebuilds are counted by result and type in $dir/NAME.tsv ("count<TAB>result<TAB>type"); a
# failing run's output is kept as $dir/NAME.fail.RUN and stops the torture.  A rebuild the
# engine refused under memory pressure ("stopped before changing anything", the object
# checked clean after) is its designed answer on a loaded machine: result "pressure",
# counted, not a failure (the client's exit status 4 then counts only those).
scrub_loop() {
	local name=$1 n=0 rc t nf nbad npress nerr
	shift
	: >"$dir/$name.runs"
	: >"$dir/$name.tsv"
	while [ ! -e "$dir/stop" ]; do
		n=$((n + 1))
		t=$(date +%s%N)
		"$BIN/mendfs_scrub" "$@" --json "$mnt" >"$dir/$name.cur" 2>"$dir/$name.err"
		rc=$?
		# (the message names the source since e978888: "memory pressure (psi-system): ...")
		sed -i 's/"result":"unfixed","message":"memory pressure\(\( ([a-z0-9-]*)\)\{0,1\}: .*"recheck":"clean"\)/"result":"pressure","message":"memory pressure\1/' \
			"$dir/$name.cur"
		nf=$(grep -c '"kind":"finding"' "$dir/$name.cur")
		# a rebuild line: its type and result (the mountpoint holds no quote)
		sed -n 's/^{"kind":"repair","mountpoint":"[^"]*","phase":[0-9]*,"object":"\([^"]*\)".*,"severity":"[a-z]*","result":"\([a-z]*\)".*/\2\t\1/p' \
			"$dir/$name.cur" | sort | uniq -c |
			sed 's/^ *\([0-9]*\) /\1\t/' >>"$dir/$name.tsv"
		nbad=$(grep '"kind":"repair"' "$dir/$name.cur" | grep -v '"result":"repaired"' |
			grep -vc '"result":"pressure"')
		npress=$(grep -c '"kind":"repair".*"result":"pressure"' "$dir/$name.cur")
		nerr=$(sed -n 's/^{"kind":"summary".*,"errors":\([0-9]*\),.*/\1/p' "$dir/$name.cur")
		[ "$rc" -eq 4 ] && [ "$npress" -gt 0 ] && [ "${nerr:-x}" = "$npress" ] && rc=0
		echo "$n $rc $nf $nbad $(( ($(date +%s%N) - t) / 1000000 )) $npress" >>"$dir/$name.runs"
		if [ "$rc" -ne 0 ] || [ "$nf" -ne 0 ] || [ "$nbad" -ne 0 ]; then
			cat "$dir/$name.cur" "$dir/$name.err" >"$dir/$name.fail.$n"
			finding "$name run $n ($*): status $rc, $nf findings, $nbad rebuilds not" \
				"repaired (evidence: $name.fail.$n)"
			return
		fi
	done
}

# watch: until the load ends, a finding stops it, or the daemon dies
watch_run() {
	while kill -0 "$spid" 2>/dev/null && [ ! -e "$dir/stop" ]; do
		kill -0 "$pid" 2>/dev/null || { finding "the daemon died during the load"; return; }
		sleep 1
	done
}
loops_done() {
	local l
	for l in $loops; do
		while kill -0 "$l" 2>/dev/null; do sleep 0.2; done
	done
}

t0=$(date +%s)
echo "torture: $PROCS stress processes for $DURATION s beside a mendfs_scrub -n loop and a" \
	"--force-rebuild loop"
"$MKFS" -q "$img" "${TORTURE_SIZE:-8G}" >"$dir/mkfs.out" 2>&1 || { cat "$dir/mkfs.out"; fail "mkfs"; }
mount_fs -o allow_other
"$STRESS" -p "$PROCS" -t "$DURATION" -m "$dir/manifest" ${TORTURE_SEED:+-s "$TORTURE_SEED"} \
	${TORTURE_STRESS_ARGS:-} "$mnt" >"$dir/stress.out" 2>&1 &
spid=$!
scrub_loop scrub -n &
loops=$!
scrub_loop force --force-rebuild &
loops="$loops $!"

# The load ends by itself after DURATION and its final check; much longer is a hang
# (bounded prints the daemon's threads and fails).
bounded $((DURATION + 900)) watch_run
[ -e "$dir/stop" ] && stop_load
wait "$spid"
src=$?
spid=""
touch "$dir/stop"
# a scrub runs to its end; one still running after 10 minutes is a hang
bounded 600 loops_done
wait $loops
loops=""
grep -v '^ ' "$dir/stress.out" | tail -40
[ "$src" -eq 0 ] || finding "mendfs_stress: status $src"
daemon_alive "at the end of the load"
grep -Eqi "corrupt|checksum|EUCLEAN|structure needs|bad magic" "$log" &&
	finding "the daemon's log reports damaged metadata"
umount_fs
"$BIN/mendfs_repair" -n "$img" >"$dir/repair.out" 2>&1
rc=$?
[ "$rc" -eq 0 ] || { tail -20 "$dir/repair.out"; finding "mendfs_repair -n: status $rc (repair.out)"; }
"$DB" -c check "$img" >"$dir/db.out" 2>&1
rc=$?
[ "$rc" -eq 0 ] || { tail -20 "$dir/db.out"; finding "mendfs_db -c check: status $rc (db.out)"; }
mverify="not run"
if [ ! -s "$dir/findings" ]; then
	mount_fs -o allow_other
	bounded 900 "$STRESS" -M "$dir/manifest" "$mnt" >"$dir/manifest.out" 2>&1 ||
		{ head -40 "$dir/manifest.out"; finding "the remounted files differ from the manifest"; }
	mverify=$(sed -n 's/^manifest: \([0-9]* names .*\) checked after the remount: \(.*\)/\1: \2/p' \
		"$dir/manifest.out")
	scrub_idle "after the remount"
	umount_fs
fi

# --- the summary ---
runs() { wc -l <"$dir/$1.runs"; }
sum_col() { awk -v c="$2" '{ s += $c } END { print s + 0 }' "$dir/$1.runs"; }
avg_secs() { awk '{ s += $5 } END { printf "%.1f", NR ? s / NR / 1000 : 0 }' "$dir/$1.runs"; }
sl=$(grep '^mendfs_stress: seed' "$dir/stress.out" | tail -1)
seed=$(echo "$sl" | sed -n 's/^mendfs_stress: seed \([0-9]*\).*/\1/p')
ops=$(echo "$sl" | sed -n 's/.* \([0-9]*\) operations in.*/\1/p')
nrebuilds=$(awk -F'\t' '$2 == "repaired" { s += $1 } END { print s + 0 }' "$dir/force.tsv")
nfindings=$(( $(sum_col scrub 3) + $(sum_col force 3) ))
{
	echo "=== torture summary: $DURATION s, $PROCS stress processes, seed ${seed:-?}, image ${TORTURE_SIZE:-8G}"
	printf '  %-34s %s\n' "stress operations" "${ops:-?} (every result checked: ${sl##*: })"
	printf '  %-34s %s\n' "mendfs_scrub -n runs" "$(runs scrub) (avg $(avg_secs scrub) s), findings $(sum_col scrub 3), non-zero exits $(awk '$2 != 0' "$dir/scrub.runs" | wc -l)"
	printf '  %-34s %s\n' "mendfs_scrub --force-rebuild runs" "$(runs force) (avg $(avg_secs force) s), findings $(sum_col force 3), non-zero exits $(awk '$2 != 0' "$dir/force.runs" | wc -l)"
	printf '  %-34s %s\n' "forced online rebuilds" "$nrebuilds, not repaired $(sum_col force 4), refused under memory pressure $(sum_col force 6)"
	awk -F'\t' '{ n[$2 "\t" $3] += $1 } END { for (k in n) { split(k, a, "\t"); printf "      %-40s %8d %s\n", a[2], n[k], a[1] } }' \
		"$dir/force.tsv" | sort
	printf '  %-34s %s\n' "scrub findings (both loops)" "$nfindings"
	printf '  %-34s %s\n' "daemon crashes / restarts" "$(grep -q 'the daemon died' "$dir/findings" 2>/dev/null && echo 1 || echo 0) (one daemon process for the whole load, exit status 0)"
	printf '  %-34s %s\n' "mendfs_repair -n" "$(grep -q mendfs_repair "$dir/findings" 2>/dev/null && echo FAILED || echo clean)"
	printf '  %-34s %s\n' "mendfs_db -c check" "$(grep -q mendfs_db "$dir/findings" 2>/dev/null && echo FAILED || echo clean)"
	printf '  %-34s %s\n' "verified after the remount" "$mverify"
	printf '  %-34s %s\n' "elapsed" "$(( $(date +%s) - t0 )) s"
} | tee "$dir/summary.out"
if [ -s "$dir/findings" ]; then
	echo "--- findings:"
	cat "$dir/findings"
	for f in "$dir"/*.fail.*; do
		[ -e "$f" ] && { echo "--- $(basename "$f")"; head -20 "$f"; }
	done
	fail "the torture run found $(wc -l <"$dir/findings") problem(s)"
fi

if [ "${TORTURE_SCALE:-1}" != 0 ]; then
	MENDFS_SCALE=full bash "$here/integration/t_scale.sh" || fail "t_scale (1,000,000 entries)"
	echo "  t_scale with 1,000,000 entries passed ($(( $(date +%s) - t0 )) s in all)"
fi
passed=1
exit 0
