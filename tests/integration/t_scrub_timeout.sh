#!/bin/bash
# t_scrub_timeout.sh — mendfs_scrub does not wait for ever on a daemon that does not answer:
# each reply is waited for at most MENDFS_SCRUB_REPLY_TIMEOUT seconds (default 30 min; 2 s
# here), then the scrub stops with a message naming the mount point, the request and the
# time waited, and exit status 4 (operational error; | 16 when checks were left undone).
#   - a socket that accepts and never answers (python, in the place of the control socket):
#     HELLO times out, exit 4;
#   - a relay in its place that withholds the replies of one worker's connection, and later
#     those of another: at the first one's timeout both are shut down (the daemon sees the
#     hang-ups at once), the scrub does not wait for the second one's bound, exit 20;
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
mkdir "$dir/run" "$dir/fake" "$dir/proxy" "$hk"
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

# ---- one connection stuck, another answered slowly, then stuck too -------------------------------
# A relay in the place of the control socket (python: each connection passed on to the
# daemon, each reply held 0.3 s so that the workers stay busy) withholds the replies of the
# first connection from its first check of phase 2 on (t0), and those of the second from
# t0 + 4.5 s on.  The first connection's timeout (t0 + 6 s) ends the whole run then: every
# connection is shut down (the daemon sees the hang-ups and cancels what it runs for
# nobody), the second is not left waiting for its own bound (t0 + 10.5 s: with N workers a
# stuck daemon could hold a scrub for N bounds).
python3 - "$dir/proxy/$(basename "$sock")" "$sock" "$dir/proxy.ready" <<'PY' &
import select, socket, struct, sys, time
lpath, upath, ready = sys.argv[1:4]
ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ls.bind(lpath)
ls.listen(8)
log = open(ready + ".log", "w", buffering=1)
open(ready, "w").close()
conns = []                      # [client, daemon, bytes from the client, withheld]
t0, end = None, time.monotonic() + 60
while time.monotonic() < end and not (conns and all(k[0] is None for k in conns)):
    now = time.monotonic()
    if t0 is not None and len(conns) > 1 and not conns[1][3] and now >= t0 + 4.5:
        conns[1][3] = True
        log.write("second withheld %.3f\n" % (now - t0))
    socks = [ls] + [s for k in conns if k[0] for s in k[:2]]
    for s in select.select(socks, [], [], 0.05)[0]:
        if s is ls:
            c = ls.accept()[0]
            d = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            d.connect(upath)
            conns.append([c, d, b"", False])
            continue
        i, k = next((i, k) for i, k in enumerate(conns) if s in k[:2])
        data = s.recv(65536)
        if not data:
            log.write("gone %d %.3f\n" % (i, now - t0 if t0 else -1))
            k[0].close(); k[1].close(); k[0] = None
        elif s is k[1]:
            if not k[3]:
                time.sleep(0.3)
                k[0].sendall(data)
        else:
            k[1].sendall(data)
            k[2] += data
            while len(k[2]) >= 24 and len(k[2]) >= 24 + struct.unpack_from("<I", k[2], 12)[0]:
                cmd, n = struct.unpack_from("<H", k[2], 6)[0], struct.unpack_from("<I", k[2], 12)[0]
                kind = struct.unpack_from("<I", k[2], 24)[0] if n >= 4 else 0
                if i == 0 and t0 is None and cmd == 2 and 2 <= kind <= 7:   # SCRUB, AG object
                    k[3], t0 = True, now
                    log.write("first withheld\n")
                k[2] = k[2][24 + n:]
log.write("connections %d\n" % len(conns))
PY
proxypid=$!
for _ in $(seq 500); do [ -e "$dir/proxy.ready" ] && break; sleep 0.02; done
[ -e "$dir/proxy.ready" ] || fail "the relay did not start"
MENDFS_RUNDIR=$dir/proxy MENDFS_SCRUB_REPLY_TIMEOUT=6 bounded 60 scrub -n
rc=$?
for _ in $(seq 1500); do kill -0 "$proxypid" 2>/dev/null || break; sleep 0.02; done
kill "$proxypid" 2>/dev/null; wait "$proxypid" 2>/dev/null
echo "relay: $(tr '\n' ';' <"$dir/proxy.ready.log")"
gone0=$(sed -n 's/^gone 0 //p' "$dir/proxy.ready.log")
gone1=$(sed -n 's/^gone 1 //p' "$dir/proxy.ready.log")
[ $rc -eq 20 ] && grep -q "sent no reply to SCRUB of AG .* within [0-9.]* s (MENDFS_SCRUB_REPLY_TIMEOUT=6)" "$dir/out" ||
	{ cat "$dir/out"; fail "one connection stuck: exit $rc, expected 20 (4 | 16) and its timeout"; }
[ -n "$gone0" ] && awk -v g="$gone0" 'BEGIN { exit !(g < 8.5) }' ||
	fail "the stuck connection was hung up $gone0 s after it was stuck (bound 6 s): not at its timeout"
if grep -q "^connections 1$" "$dir/proxy.ready.log"; then
	echo "note: one worker only (one CPU): its connection is the only one"
else
	grep -q "^second withheld" "$dir/proxy.ready.log" ||
		fail "the relay did not withhold the second connection's replies before the first's timeout"
	[ -n "$gone1" ] && awk -v g="$gone1" 'BEGIN { exit !(g < 8.5) }' ||
		fail "the second connection was hung up $gone1 s after the first was stuck: at its own bound, not at the first's timeout (6 s)"
fi
ok "one connection stuck: the run ended at its timeout (hang-ups at $gone0 and ${gone1:-(none)} s), exit 20"

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
