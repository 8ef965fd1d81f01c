#!/bin/bash
# t_scrub_timeout.sh — mendfs_scrub does not wait for ever on a daemon that does not answer:
# each reply is waited for at most MENDFS_SCRUB_REPLY_TIMEOUT seconds (default 30 min; 2 s
# here), then the scrub stops with a message naming the mount point, the request and the
# time waited, and exit status 4 (operational error; | 16 when checks were left undone).
#   - a socket that accepts and never answers (python, in the place of the control socket):
#     HELLO times out, exit 4;
#   - the real daemon holding a repair (the repair test hook, fs/ctl_testhook.c) for longer
#     than the bound: the REPAIR times out, exit 20; the daemon sees the hang-up, lets the
#     repair go, and a scrub afterwards is clean; the unmount is clean;
#   - a stopped daemon (SIGSTOP: no thread of it answers, FUSE requests included): the
#     scrub asks the filesystem nothing before its HELLO, which times out, exit 4; and once
#     the socket's backlog is full, the connection itself is bounded the same way;
#   - a bad value of the variable is a usage error (8).
set -u
. "$(dirname "$0")/mountlib.sh"
ml_setup t_scrub_timeout
SCRUB=$BIN/mendfs_scrub
hk=$dir/hooks
mkdir "$dir/run" "$dir/fake" "$hk"
export MENDFS_RUNDIR=$dir/run MENDFS_TEST_REPAIR_DIR=$hk
"$MKFS" -q -a 4 "$img" 64M || fail "mkfs"
# timeout=0: nothing of the mount is cached, as a day after mounting (the stopped daemon)
mount_fs -o noatime,timeout=0
# scrub ARGS...: mendfs_scrub ARGS... $mnt, output in $dir/out (under `bounded`, whose own
# verdict must reach the terminal)
scrub() { "$SCRUB" "$@" "$mnt" >"$dir/out" 2>&1; }
sock=$(ls "$dir/run"/*.sock 2>/dev/null)
[ -S "$sock" ] || fail "no control socket in $dir/run"
mkdir "$mnt/d" && echo data >"$mnt/d/f" || fail "populate"

# ---- a socket that accepts and never answers ----------------------------------------------------
# (it reads what comes, holds every connection, and ends by itself after 120 s)
python3 - "$dir/fake/$(basename "$sock")" "$dir/fake.ready" <<'PY' &
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(sys.argv[1])
s.listen(16)
s.settimeout(0.2)
open(sys.argv[2], "w").close()
held, end = [], time.monotonic() + 120
while time.monotonic() < end:
    try:
        c, _ = s.accept()
        c.setblocking(False)
        held.append(c)
    except socket.timeout:
        pass
    for c in held:
        try:
            c.recv(65536)
        except (BlockingIOError, OSError):
            pass
PY
fakepid=$!
for _ in $(seq 500); do [ -e "$dir/fake.ready" ] && break; sleep 0.02; done
[ -e "$dir/fake.ready" ] || fail "the silent socket did not start"
t0=$(date +%s)
MENDFS_RUNDIR=$dir/fake MENDFS_SCRUB_REPLY_TIMEOUT=2 bounded 60 scrub -n
rc=$?
t1=$(date +%s)
kill "$fakepid" 2>/dev/null; wait "$fakepid" 2>/dev/null
[ $rc -eq 4 ] || { cat "$dir/out"; fail "silent socket: exit $rc, expected 4"; }
grep -q "the daemon of $mnt sent no reply to HELLO within [0-9.]* s (MENDFS_SCRUB_REPLY_TIMEOUT=2)" "$dir/out" ||
	{ cat "$dir/out"; fail "silent socket: no timeout message"; }
ok "silent socket: exit 4 after $((t1 - t0)) s: $(head -1 "$dir/out")"

# ---- the daemon holding a repair ------------------------------------------------------------------
# A request held past the bound; on this small filesystem every other request is answered in
# milliseconds, but should one of them be the one timed out (a load spike), or real memory
# pressure stop the repairs before the hold, the scrub is run again (up to 3 times) until
# the held REPAIR is.
echo hold >"$hk/reserved"
for try in 1 2 3; do
	MENDFS_SCRUB_REPLY_TIMEOUT=2 bounded 120 scrub --force-rebuild
	rc=$?
	grep -q "sent no reply to REPAIR of .* within [0-9.]* s (MENDFS_SCRUB_REPLY_TIMEOUT=2)" "$dir/out" && break
	if grep -q "sent no reply to" "$dir/out"; then
		echo "note: try $try: another request timed out first: $(grep -m1 'sent no reply' "$dir/out")"
	elif grep -Eq 'memory pressure \([a-z0-9-]*\)' "$dir/out"; then
		# real memory pressure stopped every repair before the hold (t_repair_memory)
		echo "note: try $try: repairs stopped by real memory pressure; again"
		sleep 2
	else
		cat "$dir/out"; fail "held repair: exit $rc, no timeout message"
	fi
	for _ in $(seq 1500); do [ -e "$hk/held-reserved" ] || break; sleep 0.02; done
done
[ $rc -eq 20 ] || { cat "$dir/out"; fail "held repair: exit $rc, expected 20 (4 | 16)"; }
grep -q "sent no reply to REPAIR of" "$dir/out" || { cat "$dir/out"; fail "held repair: 3 tries"; }
ok "held repair: exit $rc: $(grep -m1 'sent no reply' "$dir/out")"
# The daemon sees the hang-up and lets the repair go.
for _ in $(seq 1500); do [ -e "$hk/held-reserved" ] || break; sleep 0.02; done
[ -e "$hk/held-reserved" ] && fail "the held repair was not let go after the client left"
rm "$hk/reserved"
kill -0 "$pid" 2>/dev/null || fail "the daemon died"
bounded 120 scrub -n || { cat "$dir/out"; fail "scrub -n afterwards"; }
ok "the held repair let go when the client left; scrub -n clean: $(tail -1 "$dir/out")"

# ---- a stopped daemon -----------------------------------------------------------------------------
# The daemon continued at once, whatever happens (a stopped daemon would hang the cleanup).
kill -STOP "$pid"
MENDFS_SCRUB_REPLY_TIMEOUT=2 timeout -s KILL 60 "$SCRUB" -n "$mnt" >"$dir/out" 2>&1
rc=$?
kill -CONT "$pid"
[ $rc -eq 4 ] && grep -q "the daemon of $mnt sent no reply to HELLO within" "$dir/out" ||
	{ cat "$dir/out"; fail "stopped daemon: exit $rc (137: still waiting after 60 s), expected 4"; }
ok "stopped daemon: exit 4: $(head -1 "$dir/out")"
# Its listening socket's backlog filled (by connections a python helper holds), a connect
# would wait for the daemon to accept.
kill -STOP "$pid"
python3 - "$sock" "$dir/backlog.ready" <<'PY' &
import socket, sys, time
held = []
while True:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.setblocking(False)
    try:
        s.connect(sys.argv[1])
    except BlockingIOError:
        break
    held.append(s)
    if len(held) > 4096:
        sys.exit("the backlog never filled")
open(sys.argv[2], "w").close()
time.sleep(120)
PY
fillpid=$!
for _ in $(seq 1500); do [ -e "$dir/backlog.ready" ] && break; kill -0 $fillpid 2>/dev/null || break; sleep 0.02; done
rc=99
[ -e "$dir/backlog.ready" ] && { MENDFS_SCRUB_REPLY_TIMEOUT=2 timeout -s KILL 60 "$SCRUB" -n "$mnt" >"$dir/out" 2>&1; rc=$?; }
kill "$fillpid" 2>/dev/null; wait "$fillpid" 2>/dev/null
kill -CONT "$pid"
[ $rc -eq 99 ] && fail "the backlog was not filled"
[ $rc -eq 4 ] && grep -q "the daemon of $mnt accepted no connection within 2 s" "$dir/out" ||
	{ cat "$dir/out"; fail "full backlog: exit $rc (137: still waiting after 60 s), expected 4"; }
ok "full backlog: exit 4: $(head -1 "$dir/out")"
bounded 120 scrub -n || { cat "$dir/out"; fail "scrub -n after the daemon continued"; }
ok "the daemon continued: scrub -n clean"

MENDFS_SCRUB_REPLY_TIMEOUT=soon scrub -n
rc=$?
[ $rc -eq 8 ] && grep -q "MENDFS_SCRUB_REPLY_TIMEOUT=soon: not a number of seconds" "$dir/out" ||
	{ cat "$dir/out"; fail "bad MENDFS_SCRUB_REPLY_TIMEOUT: exit $rc"; }
ok "MENDFS_SCRUB_REPLY_TIMEOUT=soon: usage error"
umount_fs
ok "unmounted"
exit 0
