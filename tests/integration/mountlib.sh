# mountlib.sh — sourced by the integration tests that mount mendfs for real (not a test of
# its own: run-tests.sh runs only t_*.sh).
#
# The caller sets BIN (built programs), img (the image), mnt (the mount point), log (the
# daemon's output) and defines fail MESSAGE (print, exit nonzero).  Provides:
#   mount_fs [mendfs options...]  start the daemon in the foreground with allow_other and
#                                 wait (bounded, 10 s) for the mount; $pid is the daemon
#   umount_fs                     fusermount3 -u, then wait (bounded, 30 s) for the daemon
#                                 to exit with status 0: the unmount returns before the
#                                 daemon has flushed and marked the image clean, and only
#                                 its exit releases the image
#   mounted DIR                   is a mendfs mounted at DIR?
#   ml_cleanup                    for an EXIT trap: unmount if mounted, wait for (and at
#                                 last kill) the daemon
pid=""

mounted() { grep -q " $1 fuse.mendfs " /proc/self/mounts; }

mount_fs() {
	"$BIN/mendfs" -f -o allow_other "$@" "$img" "$mnt" >>"$log" 2>&1 &
	pid=$!
	for _ in $(seq 400); do
		mounted "$mnt" && return 0
		kill -0 "$pid" 2>/dev/null || fail "the daemon exited before mounting"
		sleep 0.025
	done
	fail "no mount after 10 s"
}

umount_fs() {
	local rc
	cd / || return
	fusermount3 -u "$mnt" || fail "fusermount3 -u failed"
	for _ in $(seq 1200); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.025
	done
	kill -0 "$pid" 2>/dev/null && fail "the daemon did not exit within 30 s of the unmount"
	wait "$pid"
	rc=$?
	pid=""
	[ "$rc" -eq 0 ] || fail "the daemon exited with status $rc"
}

ml_cleanup() {
	cd /
	grep -q " $mnt fuse" /proc/self/mounts && { fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"; }
	if [ -n "$pid" ]; then
		for _ in $(seq 400); do kill -0 "$pid" 2>/dev/null || break; sleep 0.025; done
		kill -9 "$pid" 2>/dev/null
	fi
	wait 2>/dev/null
}
