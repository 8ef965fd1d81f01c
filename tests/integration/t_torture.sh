#!/bin/bash
# t_torture.sh — a short run of tests/torture.sh (`make torture` runs long ones): 2
# mendfs_stress processes for TORTURE_SECONDS (default 25) on a 2 GiB image beside a
# `mendfs_scrub -n` loop and a `mendfs_scrub --force-rebuild` loop; the daemon never dies,
# no scrub finds anything, every forced rebuild is repaired, `mendfs_repair -n` and
# `mendfs_db -c check` are clean, and every name and byte the stress left is intact after a
# remount.  Besides torture.sh's own verdict: at least one run of each loop, at least one
# rebuild, and the remount's manifest check said "all intact".  On failure torture.sh keeps
# the evidence in $O/t_torture.evidence.DATE.  TORTURE_SEED=N repeats the stress load.
set -u
: "${BIN:?BIN must name the directory of the built programs}" "${O:?O must name the build directory}"
here=$(cd "$(dirname "$0")" && pwd)
out=$(mktemp /tmp/t_torture.XXXXXX) || exit 1
trap 'rm -f "$out"' EXIT

TORTURE_SCALE=0 TORTURE_SIZE=2G TORTURE_STRESS_ARGS="-z 2M -e 100" \
	TORTURE_KEEP="$O/t_torture.evidence.$(date +%Y%m%d-%H%M%S)" \
	bash "$here/../torture.sh" "$BIN" "${TOOLS:-$O/tools}" "${TORTURE_SECONDS:-25}" 2 >"$out" 2>&1
rc=$?
[ "$rc" -eq 77 ] && { cat "$out"; exit 77; }
# the stress's per-operation table is long: the summary and what follows it
sed -n '/^=== torture summary/,$p' "$out"
if [ "$rc" -ne 0 ]; then
	grep -q '^=== torture summary' "$out" || tail -60 "$out"
	echo "FAIL: torture.sh exit status $rc"
	exit 1
fi
field() { sed -n "s/^  $1 *//p" "$out"; }
scrubs=$(field 'mendfs_scrub -n runs' | cut -d' ' -f1)
forced=$(field 'mendfs_scrub --force-rebuild runs' | cut -d' ' -f1)
rebuilds=$(field 'forced online rebuilds' | cut -d, -f1)
[ "${scrubs:-0}" -ge 1 ] && [ "${forced:-0}" -ge 1 ] ||
	{ echo "FAIL: the loops did not run (scrubs '$scrubs', forced rebuild runs '$forced')"; exit 1; }
[ "${rebuilds:-0}" -ge 1 ] || { echo "FAIL: no forced rebuild was done"; exit 1; }
field 'verified after the remount' | grep -q ': all intact$' ||
	{ echo "FAIL: no manifest check after the remount"; exit 1; }
echo "ok: torture: $scrubs scrubs, $forced forced-rebuild runs ($rebuilds rebuilds), all clean and verified"
exit 0
