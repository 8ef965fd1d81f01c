# stresslib.sh — helpers sourced, after mountlib.sh (whose `bounded` they use), by the tests
# that load a mount with mendfs_stress (not a test itself: `make check` runs only t_*.sh).
#
#   STRESS                  the mendfs_stress program ($TOOLS, else $O/tools); skip without it
#   check_clean WHEN        mendfs_db -c check of the unmounted image must be clean
#   scrub_idle WHEN         mendfs_scrub -n of the idle mount (when built) finds nothing
#   daemon_alive            fail unless the daemon still runs
TOOLS=${TOOLS:-${O:+$O/tools}}
STRESS=${TOOLS:+$TOOLS/mendfs_stress}
[ -n "$STRESS" ] && [ -x "$STRESS" ] || { echo "skip: mendfs_stress is not built (TOOLS=${TOOLS:-})"; exit 77; }

check_clean() {
	"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { tail -20 "$dir/db.out"; fail "mendfs_db check: $1"; }
}

# scrub_idle WHEN: `mendfs_scrub -n` of the idle mount (when built) finds nothing (status 0,
# or 2: optimizations only); prints its summary line
scrub_idle() {
	[ -x "$BIN/mendfs_scrub" ] || return 0
	bounded 300 "$BIN/mendfs_scrub" -n "$mnt" >"$dir/scrub.out" 2>&1
	local rc=$?
	[ "$rc" -eq 0 ] || [ "$rc" -eq 2 ] || { cat "$dir/scrub.out"; fail "mendfs_scrub -n: status $rc ($1)"; }
	scrub_said=$(tail -1 "$dir/scrub.out")
}

daemon_alive() {
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || fail "the daemon died ($1)"
}
