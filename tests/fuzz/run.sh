#!/bin/bash
# run.sh — runs each libFuzzer target for $FUZZ_TIME seconds (make fuzz, t_fuzz.sh).
#
#   run.sh OUTDIR BIN...
#
# Target BIN (named fuzz_<name>) starts from the seeds in tests/fuzz/corpus/<name> and what
# earlier runs kept in OUTDIR/corpus/<name> (new inputs go there, never into the tree).  A
# crash, sanitizer report, leak or timeout stops that target: its input is written as
# OUTDIR/crash/<name>-… and the path printed; the exit status is then 1.  The summary line
# of each target (executions per second, coverage) is printed at the end.
set -u
out=$1; shift
time=${FUZZ_TIME:-60}
here=$(cd "$(dirname "$0")" && pwd)
status=0
summary=""
mkdir -p "$out/crash" || exit 1
for bin in "$@"; do
	name=$(basename "$bin"); name=${name#fuzz_}
	work=$out/corpus/$name
	log=$out/fuzz_$name.log
	mkdir -p "$work" || exit 1
	# The image target's input covers all the image's metadata (about 69 KB: fuzz_image.c);
	# a conversation of the other is short.
	case $name in
	image) maxlen=72000 ;;
	*) maxlen=8192 ;;
	esac
	echo "== fuzz_$name for ${time}s (log $log)"
	# -timeout: one input taking 25 s is a hang; -rss_limit_mb: the machine is shared.
	"$bin" -max_total_time="$time" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 -max_len=$maxlen \
		-artifact_prefix="$out/crash/$name-" "$work" "$here/corpus/$name" >"$log" 2>&1
	rc=$?
	last=$(grep -E '^#[0-9]+' "$log" | tail -n 1)
	execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}')
	speed=$(grep -E '^stat::average_exec_per_sec' "$log" | awk '{print $2}')
	summary+="fuzz_$name: ${execs:-?} runs, ${speed:-?} exec/s, last: ${last:-none}"$'\n'
	if [ $rc -ne 0 ]; then
		status=1
		echo "fuzz_$name FAILED (exit $rc):"
		grep -E 'ERROR: |SUMMARY: |Test unit written to|runtime error' "$log" | head -n 20
		tail -n 30 "$log"
	fi
done
printf '%s' "$summary"
exit $status
