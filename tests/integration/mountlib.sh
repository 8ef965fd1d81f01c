# mountlib.sh — helpers sourced by the integration tests that mount mendfs for real (not a
# test itself: `make check` runs only t_*.sh).
#
#   . "$(dirname "$0")/mountlib.sh"; ml_setup NAME
#
# gives $dir (a fresh temporary directory, removed at exit), $img, $mnt (created), $log
# (the daemon's output) and $pid (the daemon in the foreground), and these functions:
#   fail MSG / ok MSG             report; fail exits 1 with the end of the daemon's log
#   mounted DIR                   whether DIR is a mendfs mount now
#   mount_fs ARGS...              start `mendfs -f ARGS... $img $mnt`, wait (bounded) for it
#   mount_refused ARGS...         the same must exit non-zero without mounting ($dir/out)
#   wait_exit                     wait (bounded) for the daemon to exit, with status 0
#   umount_fs                     fusermount3 -u, then wait_exit
#   umount_status                 fusermount3 -u, wait (bounded); the exit status in $rc
#   crash                         SIGKILL the daemon and drop its mount
#   db_field IMAGE CMD FIELD      the number `mendfs_db -c CMD IMAGE` prints for FIELD
#   bounded SECS CMD...           run CMD, waiting at most SECS s; a CMD still running then
#                                 means the filesystem hangs: print the daemon's threads
#                                 (gdb, if installed), crash it (its pending requests fail)
#                                 and fail; else CMD's exit status
# and $REPAIR_CLIENT, the one-REPAIR control-socket client (repair_client.py: its reply
# wait is bounded and fails at once if the daemon dies).
# At exit every mount is undone, the daemon killed, the test's own cleanup run
# ($ml_extra_cleanup), every process the test started and left running killed with all its
# descendants (ml_kill_children: a loop that waits for a file a failed test never wrote
# would keep the exit waiting forever; a killed loop's mendfs_stress would keep writing)
# and $dir removed.
BIN=${BIN:?BIN must name the directory of the built programs}
MKFS=$BIN/mkfs.mendfs
DB=$BIN/mendfs_db
MENDFS=$BIN/mendfs
REPAIR_CLIENT=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/repair_client.py

[ -c /dev/fuse ] || { echo "skip: /dev/fuse is missing"; exit 77; }
command -v fusermount3 >/dev/null || { echo "skip: fusermount3 is missing"; exit 77; }
command -v python3 >/dev/null || { echo "skip: python3 is missing"; exit 77; }

ml_cleanup() {
	cd /
	grep -q " $mnt fuse" /proc/self/mounts &&
		{ fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"; }
	[ -n "$pid" ] && { kill -9 "$pid"; wait "$pid"; } 2>/dev/null
	[ -n "${ml_extra_cleanup:-}" ] && $ml_extra_cleanup
	ml_kill_children 2>/dev/null
	rm -rf "$dir"
}

# ml_stat PID: $ml_st (state letter, empty when PID is gone) and $ml_pp (parent PID) of
# PID, read from /proc/PID/stat (builtins only: no command substitution, whose own
# process would be a child of the shell).  The name field may hold spaces and ')'.
ml_stat() {
	local line
	ml_st="" ml_pp=""
	{ read -r line <"/proc/$1/stat"; } 2>/dev/null || return 0
	line=${line##*) }
	ml_st=${line%% *}
	line=${line#* }
	ml_pp=${line%% *}
}

# ml_kill_children: SIGKILL every process the test started that still runs — each child
# of this shell (background jobs, the processes of a background pipeline) and all their
# descendants (a stress loop's mendfs_stress and its workers, a python client...), which
# killing a job's subshell alone leaves running, busy in the mount or writing into $dir.
# The tree is frozen a layer at a time before it is listed: each process is sent SIGSTOP
# and, once it has stopped, can neither fork nor reap a child, so its listed children are
# all it has (a fork in progress when the stop came has returned before it stopped) and
# their PIDs cannot be reused by another process before the SIGKILL.  Only descendants of
# this shell are named, never a process found by name.  Bounded: a process that does not
# stop within ~2 s (blocked in the kernel, unable to fork meanwhile) is listed as it is;
# the wait for the killed ones to be gone is bounded too, and only children already
# gone are waited for, so a process that does not die cannot hang the exit.
ml_kill_children() {
	local layer=() all=() roots next p f i busy
	local -A in_layer
	for f in /proc/[0-9]*/stat; do
		p=${f#/proc/}; p=${p%/stat}
		ml_stat "$p"
		[ "$ml_pp" = "$BASHPID" ] && layer+=("$p")
	done
	roots=("${layer[@]}")
	while [ ${#layer[@]} -gt 0 ]; do
		kill -STOP "${layer[@]}" 2>/dev/null
		for ((i = 0; i < 200; i++)); do
			busy=0
			for p in "${layer[@]}"; do
				ml_stat "$p"
				case $ml_st in ""|T|t|Z|X) ;; *) busy=1; break ;; esac
			done
			[ $busy -eq 0 ] && break
			sleep 0.01
		done
		all+=("${layer[@]}")
		in_layer=()
		for p in "${layer[@]}"; do in_layer[$p]=1; done
		next=()
		for f in /proc/[0-9]*/stat; do
			p=${f#/proc/}; p=${p%/stat}
			ml_stat "$p"
			[ -n "$ml_pp" ] && [ -n "${in_layer[$ml_pp]:-}" ] && next+=("$p")
		done
		layer=("${next[@]}")
	done
	[ ${#all[@]} -gt 0 ] || return 0
	# Each listed process's parent must still be this shell or another listed process
	# kept (stopped: it cannot have changed): a child of the shell that ended and was
	# reaped between the first scan and its stop would have left its PID free for another
	# process (it would need the PID space to wrap, but then that one is let go, and so
	# are its children).  `all` lists a layer after the one above it: a parent is judged
	# before its children.
	in_layer=([$BASHPID]=1)
	next=()
	for p in "${all[@]}"; do
		ml_stat "$p"
		if [ -n "$ml_pp" ] && [ -n "${in_layer[$ml_pp]:-}" ]; then
			in_layer[$p]=1
			next+=("$p")
		elif [ -n "$ml_pp" ]; then
			kill -CONT "$p" 2>/dev/null
		fi
	done
	all=("${next[@]}")
	[ ${#all[@]} -gt 0 ] || return 0
	kill -KILL "${all[@]}" 2>/dev/null
	for ((i = 0; i < 500; i++)); do
		busy=0
		for p in "${all[@]}"; do
			ml_stat "$p"
			case $ml_st in ""|Z|X) ;; *) busy=1; break ;; esac
		done
		[ $busy -eq 0 ] && break
		sleep 0.01
	done
	# reap this shell's own (a job reaped already is waited for too: its end is not
	# reported later)
	for p in "${roots[@]}"; do
		ml_stat "$p"
		case $ml_st in ""|Z|X) wait "$p" 2>/dev/null ;; esac
	done
	return 0
}

ml_setup() {
	dir=$(mktemp -d "/tmp/$1.XXXXXX") || exit 1
	img=$dir/img
	mnt=$dir/m
	log=$dir/log
	pid=""
	mkdir "$mnt"
	trap ml_cleanup EXIT
}

fail() { echo "FAIL: $*"; [ -s "$log" ] && { echo "--- daemon log"; tail -20 "$log"; }; exit 1; }
ok() { echo "ok: $*"; }
mounted() { grep -q " $1 fuse.mendfs " /proc/self/mounts; }

mount_fs() {
	"$MENDFS" -f "$@" "$img" "$mnt" >>"$log" 2>&1 &
	pid=$!
	for _ in $(seq 400); do
		mounted "$mnt" && return 0
		kill -0 "$pid" 2>/dev/null || fail "the daemon exited before mounting ($*)"
		sleep 0.025
	done
	fail "no mount after 10 s"
}

mount_refused() {
	"$MENDFS" -f "$@" "$img" "$mnt" >"$dir/out" 2>&1 &
	local p=$! rc
	for _ in $(seq 400); do
		kill -0 "$p" 2>/dev/null || break
		mounted "$mnt" && { pid=$p; fail "mounted with $*"; }
		sleep 0.025
	done
	kill -0 "$p" 2>/dev/null && { pid=$p; fail "still running with $*"; }
	wait "$p"
	rc=$?
	[ "$rc" -ne 0 ] || fail "exit status 0 with $*"
}

# ml_wait_gone: wait (bounded) for the daemon to exit; its exit status in $rc, no verdict
ml_wait_gone() {
	for _ in $(seq 1200); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.025
	done
	kill -0 "$pid" 2>/dev/null && fail "the daemon did not exit within 30 s"
	wait "$pid"
	rc=$?
	pid=""
}

wait_exit() {
	local rc
	ml_wait_gone
	[ "$rc" -eq 0 ] || fail "the daemon exited with status $rc"
}

umount_fs() {
	cd /
	fusermount3 -u "$mnt" || fail "fusermount3 -u failed"
	wait_exit
}

# umount_status: fusermount3 -u, then ml_wait_gone ($rc: the daemon's exit status)
umount_status() {
	cd /
	fusermount3 -u "$mnt" || fail "fusermount3 -u failed"
	ml_wait_gone
}

crash() {
	kill -9 "$pid"
	wait "$pid" 2>/dev/null
	pid=""
	fusermount3 -uz "$mnt" 2>/dev/null
}

bounded() {
	local secs=$1 p
	shift
	"$@" &
	p=$!
	for _ in $(seq $((secs * 10))); do
		kill -0 "$p" 2>/dev/null || break
		sleep 0.1
	done
	if kill -0 "$p" 2>/dev/null; then
		echo "FAIL: '$*' still running after $secs s: the filesystem hangs"
		if [ -n "$pid" ] && command -v gdb >/dev/null; then
			echo "--- the daemon's threads"
			timeout 60 gdb -p "$pid" "/proc/$pid/exe" -batch -ex "thread apply all bt" \
				2>/dev/null | grep -E '^(Thread|#)' | head -100
		fi
		[ -n "$pid" ] && crash
		kill -9 "$p" 2>/dev/null
		wait "$p" 2>/dev/null
		fail "hang"
	fi
	wait "$p"
}

# db_field IMAGE CMD FIELD: the number mendfs_db's CMD ("agh 1", "sb"...) prints as
# "FIELD = N" (empty when it prints none)
db_field() { "$DB" -c "$2" "$1" | sed -n "s/^$3 = \([0-9]*\).*/\1/p"; }
