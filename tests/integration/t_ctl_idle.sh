#!/bin/bash
# t_ctl_idle.sh — a client that connects to the control socket and sends no whole request
# does not keep one of its 64 slots until unmount: the daemon answers it with an ETIMEDOUT
# error and closes it once MFSD_CTL_FIRST_TIMEOUT (30 s; MENDFS_TEST_CTL_FIRST_TIMEOUT=3
# here) has passed since it connected, whether it sent nothing or trickles a header a byte
# at a time; this is logged once.  Meanwhile the acceptor keeps answering (a client past
# the 64 is refused with EBUSY, not left waiting), and a client that was served once is
# never closed for being idle.  Afterwards mendfs_scrub runs clean and the unmount is clean.
set -u
. "$(dirname "$0")/mountlib.sh"
O=${O:-$(dirname "$BIN")}
TOOLS=${TOOLS:-$O/tools}
CLIENT=$TOOLS/ctl_client
[ -x "$CLIENT" ] || { echo "skip: $CLIENT is not built"; exit 77; }
ml_setup t_ctl_idle
mkdir "$dir/run"
export MENDFS_RUNDIR=$dir/run MENDFS_TEST_CTL_FIRST_TIMEOUT=3
"$MKFS" -q -a 4 "$img" 64M || fail "mkfs"
mount_fs
sock=$(ls "$dir/run"/*.sock 2>/dev/null)
[ -S "$sock" ] || fail "no control socket in $dir/run"

# One client served (HELLO), then idle for the rest of the test.
"$CLIENT" "$mnt" idle >"$dir/idle" 2>&1 &
for _ in $(seq 500); do grep -q '^reply 1 ' "$dir/idle" 2>/dev/null && break; sleep 0.02; done
grep -q '^reply 1 ' "$dir/idle" || fail "the idle client got no HELLO reply: $(cat "$dir/idle")"

# 63 more that never send a whole request (59 silent, 4 trickling a HELLO header a byte every
# 0.5 s, the last 4 made: their first byte goes out within the bound even when making the 63
# was slow): every slot is taken.  The helper waits (at most 60 s) until the daemon has
# closed them all, and prints how each ended.
python3 - "$sock" "$dir/full" >"$dir/py" 2>&1 <<'PY' &
import os, socket, struct, sys, time
path, full = sys.argv[1], sys.argv[2]
hdr = struct.pack("=IHHIIQ", 0x4c54434d, 1, 1, 0, 0, 7)      # HELLO, version 1
conns = []
for i in range(63):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.setblocking(False)
    conns.append({"s": s, "trickle": i >= 59, "sent": 0, "got": b"", "closed": False})
open(full, "w").close()
t0 = time.monotonic()
while time.monotonic() - t0 < 60 and not all(c["closed"] for c in conns):
    for c in conns:
        if c["closed"]:
            continue
        if c["trickle"] and c["sent"] < len(hdr) and time.monotonic() - t0 >= 0.5 * c["sent"]:
            try:
                c["s"].send(hdr[c["sent"]:c["sent"] + 1])
                c["sent"] += 1
            except OSError:
                pass
        try:
            b = c["s"].recv(4096)
            if b:
                c["got"] += b
            else:
                c["closed"] = True
        except BlockingIOError:
            pass
        except OSError:
            c["closed"] = True
    time.sleep(0.02)
left = sum(not c["closed"] for c in conns)
timed = sum(b"no whole request within 3 s of connecting" in c["got"] for c in conns)
part = sum(b"part of a message came" in c["got"] for c in conns if c["trickle"])
print("closed %d of 63, %d told ETIMEDOUT, %d tricklers cut short, after %.1f s" %
      (63 - left, timed, part, time.monotonic() - t0))
sys.exit(0 if left == 0 and timed == 63 and part == 4 else 1)
PY
pypid=$!
for _ in $(seq 1500); do [ -e "$dir/full" ] && break; kill -0 $pypid 2>/dev/null || break; sleep 0.02; done
[ -e "$dir/full" ] || fail "the 63 connections were not made: $(cat "$dir/py")"
# The acceptor still answers at once: refused while all 64 slots are held (or served, if
# the bound has passed already), never left waiting.
out=$(bounded 30 "$CLIENT" "$mnt" hello 2>&1 | tr '\n' ' ')
echo "$out" | grep -Eq '(error EBUSY: too many clients|^reply 1 )' || fail "a client beyond the 64: $out"
ok "a client beyond the 64 answered: $out"
for _ in $(seq 4500); do kill -0 $pypid 2>/dev/null || break; sleep 0.02; done
kill -0 $pypid 2>/dev/null && fail "the helper did not end within 90 s"
wait $pypid || fail "the silent connections: $(cat "$dir/py")"
ok "$(cat "$dir/py")"
n=$(grep -c "closing connections that send no whole request within 3 s" "$log")
[ "$n" = 1 ] || fail "the closures were logged $n times, expected once"
ok "logged once: $(grep "closing connections that send no whole" "$log")"
grep -q '^closed' "$dir/idle" && fail "the served idle client was closed: $(cat "$dir/idle")"
ok "the client served once and idle since is still connected"

bounded 120 "$BIN/mendfs_scrub" -n "$mnt" >"$dir/scrub" 2>&1 || { cat "$dir/scrub"; fail "mendfs_scrub"; }
ok "mendfs_scrub afterwards: $(tail -1 "$dir/scrub")"
umount_fs
for _ in $(seq 500); do grep -q '^closed' "$dir/idle" && break; sleep 0.02; done
grep -q '^closed' "$dir/idle" || fail "the idle client was not closed at unmount: $(cat "$dir/idle")"
wait
ok "unmounted; the idle client closed"
exit 0
