# stresslib.sh — helpers sourced (after mountlib.sh) by the tests that load a mount with
# mendfs_stress (not a test itself: `make check` runs only t_*.sh).
#
#   STRESS                  the mendfs_stress program ($TOOLS, else $O/tools); skip without it
#   dump_daemon             the daemon's threads' backtraces (gdb, when installed): a hang's
#                           report names the locks each thread waits for
#   bounded SECS CMD...     run CMD under `timeout`; on a timeout, dump_daemon and fail
#   check_clean WHEN        mendfs_db -c check of the unmounted image must be clean
#   daemon_alive            fail unless the daemon still runs
TOOLS=${TOOLS:-${O:+$O/tools}}
STRESS=${TOOLS:+$TOOLS/mendfs_stress}
[ -n "$STRESS" ] && [ -x "$STRESS" ] || { echo "skip: mendfs_stress is not built (TOOLS=${TOOLS:-})"; exit 77; }

dump_daemon() {
	[ -n "$pid" ] && command -v gdb >/dev/null || return 0
	echo "--- backtraces of the daemon (pid $pid)"
	timeout 60 gdb -p "$pid" -batch -ex "thread apply all bt 20" 2>/dev/null |
		grep -E '^(Thread|#)' | head -200
}

bounded() {
	local secs=$1 rc
	shift
	timeout -k 5 "$secs" "$@"
	rc=$?
	if [ "$rc" -eq 124 ] || [ "$rc" -eq 137 ]; then
		echo "TIMEOUT after $secs s: $*"
		dump_daemon
		fail "hang: $* did not finish within $secs s"
	fi
	return "$rc"
}

check_clean() {
	"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { tail -20 "$dir/db.out"; fail "mendfs_db check: $1"; }
}

daemon_alive() {
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || fail "the daemon died ($1)"
}
