#!/bin/bash
# t_mountlib_cleanup: mountlib's exit cleanup kills every process the test started and left
# running, with all its descendants (killing a job's subshell alone left its children
# running), and no process the test did not start; it returns within seconds.
# A test (this script run again as "inner") leaves a subshell with a child, a background
# pipeline, a tree four deep and a loop forking a long-lived child every 10 ms, lists its
# descendants (PID and start time) and fails.  Then none of them may run, and a process
# this script started beside it must still run.  (Every process of the inner test ends by
# itself within a minute and those found running are killed here: a failure leaks none.)
BIN=${BIN:?BIN must name the directory of the built programs}
. "$(dirname "$0")/mountlib.sh"

# alive LIST: the processes of LIST ("PID STARTTIME" lines) still running, one a line
alive() {
	local p st line
	while read -r p st; do
		{ read -r line <"/proc/$p/stat"; } 2>/dev/null || continue
		set -- ${line##*) }
		[ "${20}" = "$st" ] && [ "$1" != Z ] && echo "$p"
	done <"$1"
}

if [ "${1:-}" != inner ]; then
	ml_setup t_mountlib_cleanup
	sleep 120 &
	by=$!
	cleanup_extra() {
		[ -s "$dir/list" ] && kill -9 $(alive "$dir/list") 2>/dev/null
		[ -n "${fp:-}" ] && kill -9 "$fp" "$fc" 2>/dev/null
	}
	ml_extra_cleanup=cleanup_extra
	start=$SECONDS
	ML_CHILD_LIST=$dir/list bash "$0" inner >"$dir/inner.out" 2>&1
	rc=$?
	[ $rc -eq 1 ] || { cat "$dir/inner.out"; fail "the inner test exited $rc, expected 1"; }
	[ $((SECONDS - start)) -lt 30 ] || fail "the inner test's exit took $((SECONDS - start)) s"
	n=$(wc -l <"$dir/list")
	[ "$n" -ge 13 ] || { cat "$dir/list"; fail "only $n descendants listed"; }
	left=$(alive "$dir/list" | wc -l)
	[ "$left" -eq 0 ] || fail "$left of $n descendants of the test still run after its exit"
	ok "all $n descendants of the failed test are gone ($((SECONDS - start)) s)"
	kill -0 "$by" 2>/dev/null || fail "a process the test did not start was killed"
	ok "a process beside it still runs"

	# A child of the shell that ends and is reaped between the cleanup's first scan and
	# its stop leaves its PID free: a process the test did not start may take it (the PID
	# space wraps).  That process is let go, and so are its children.  Simulated: ml_stat
	# reports a process started outside the test's tree (setsid -f: its parent is not
	# this shell) as this shell's child at the first scan only.
	setsid -f bash -c 'sleep 120 & echo "$$ $!" >"$1/foreign.tmp"
		mv "$1/foreign.tmp" "$1/foreign"; wait' _ "$dir"
	for _ in $(seq 300); do [ -s "$dir/foreign" ] && break; sleep 0.1; done
	read -r fp fc <"$dir/foreign" || fail "the foreign process tree did not start"
	eval "$(declare -f ml_stat | sed '1s/^ml_stat /ml_stat_real /')"
	(
		fake=1
		ml_stat() {
			ml_stat_real "$1"
			if [ "$1" = "$fp" ] && [ $fake = 1 ]; then fake=0; ml_pp=$BASHPID; fi
		}
		ml_kill_children
	)
	for p in "$fp" "$fc"; do
		for _ in $(seq 100); do
			ml_stat "$p"
			[ -n "$ml_st" ] && [ "$ml_st" != T ] && [ "$ml_st" != t ] && break
			sleep 0.1
		done
		case $ml_st in
		""|Z|X) fail "process $p of a tree the test did not start was killed" ;;
		T|t) fail "process $p of a tree the test did not start was left stopped" ;;
		esac
	done
	ok "a process that took a listed PID is let go with its children"
	exit 0
fi

ml_setup t_mountlib_cleanup_inner
( sleep 60; : ) &
sleep 61 | sleep 62 &
( bash -c 'sleep 63 & (sleep 64; :) & wait'; : ) &
( for ((i = 0; i < 3000; i++)); do sleep 65 & sleep 0.01; done ) &
( for ((i = 0; i < 3000; i++)); do /bin/true; done ) &
# List the descendants (PID and start time) once every one of the tree's is there (four
# deep) and the forking loop has forked two: at least 13 (bounded wait: 30 s).
listed() {
	local f p line
	for f in /proc/[0-9]*/stat; do
		{ read -r line <"$f"; } 2>/dev/null || continue
		p=${f#/proc/}; p=${p%/stat}
		set -- ${line##*) }
		echo "$p $2 ${20}"
	done >"$dir/all"
	# the closure of this shell's children (the listing's own processes are gone now)
	awk -v root=$$ '{ pp[$1] = $2; st[$1] = $3 }
		END { for (p in pp) { q = p; d = 0; while ((q in pp) && q != root) { q = pp[q]; d++ }
			if (q == root && p != root) { print p, st[p]; n++; if (d > deep) deep = d } }
			exit !(n >= 13 && deep >= 4) }' "$dir/all" >"$ML_CHILD_LIST"
}
for _ in $(seq 300); do listed && break; sleep 0.1; done
fail "left running on purpose"
