# repair_client.py — a small control-socket client of the integration tests (not a test
# itself): one REPAIR request, its scratch a memfd (or an O_TMPFILE file in SCRATCH_DIR)
# passed with SCM_RIGHTS, the way mendfs_scrub sends one, but a single request at a time so
# a test knows exactly which repair runs.
#
#   python3 repair_client.py TYPE AGNO [CANCEL_WHEN]
#
# prints the reply as "oflags 0x.. error N: finding | finding..." (a REPAIR reply's findings
# say what was done or why not) or "error E: message" (an error reply), exit 0.  With
# CANCEL_WHEN, a CANCEL of the request is sent once that file exists (30 s at most; none
# when the reply comes first).
# Environment: MENDFS_RUNDIR (the daemon's socket directory, one socket in it); SCRATCH_DIR;
# OOM_ADJ (written to the client's own oom_score_adj first, as mendfs_scrub does);
# REPAIR_CLIENT_SENT=1 prints "sent" once the request is sent; REPAIR_CLIENT_TIMEOUT
# (seconds, default 300) bounds the wait for the reply.
#
# The wait is bounded and watches the daemon (its pid from SO_PEERCRED): a daemon that died
# or hangs fails the client with a message at once (exit 1), instead of leaving it, and the
# test, waiting on a socket nobody will answer (a daemon stuck in exit keeps it open).
import glob, os, select, socket, struct, sys, time

MAGIC, VERSION, CMD_CANCEL, CMD_REPAIR, CMD_ERROR = 0x4c54434d, 1, 4, 5, 0xffff
REQID = 7

typ, agno = int(sys.argv[1]), int(sys.argv[2])
cancel_when = sys.argv[3] if len(sys.argv) > 3 else None
timeout = float(os.environ.get("REPAIR_CLIENT_TIMEOUT", "300"))
if os.environ.get("OOM_ADJ"):
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write(os.environ["OOM_ADJ"])
socks = glob.glob(os.path.join(os.environ["MENDFS_RUNDIR"], "*.sock"))
if len(socks) != 1:
    sys.exit("expected one daemon socket in MENDFS_RUNDIR, found %r" % socks)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(socks[0])
daemon = struct.unpack("<iII", s.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]


def hdr(cmd, n, reqid):
    return struct.pack("<IHHIIQ", MAGIC, VERSION, cmd, 0, n, reqid)


def daemon_gone():
    """Why the daemon can no longer answer (gone, or a zombie), or None."""
    try:
        with open("/proc/%d/stat" % daemon) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return "exited"
    return "died (state %s)" % state if state in ("Z", "X") else None


deadline = time.monotonic() + timeout


def check_daemon(what):
    why = daemon_gone()
    if why:
        sys.exit("the daemon (pid %d) %s while the client waited for %s" % (daemon, why, what))
    if time.monotonic() > deadline:
        sys.exit("the daemon (pid %d) hangs: still waiting for %s after %g s"
                 % (daemon, what, timeout))


scratch = os.environ.get("SCRATCH_DIR")
if scratch:
    fd = os.open(scratch, os.O_TMPFILE | os.O_RDWR, 0o600)
else:
    fd = os.memfd_create("scratch", os.MFD_CLOEXEC)
req = struct.pack("<IIQII", typ, agno, 0, 0, 0)
socket.send_fds(s, [hdr(CMD_REPAIR, len(req), REQID) + req], [fd])
os.close(fd)
if os.environ.get("REPAIR_CLIENT_SENT"):
    print("sent", flush=True)
if cancel_when:
    # A reply before the hold (the repair refused or stopped early: real memory pressure
    # on a loaded machine) is printed like any other: no CANCEL then
    for _ in range(3000):
        if os.path.exists(cancel_when):
            s.sendall(hdr(CMD_CANCEL, 8, REQID + 1) + struct.pack("<Q", REQID))
            break
        check_daemon("the repair to be held")
        if select.select([s], [], [], 0.01)[0]:
            break
    else:
        sys.exit("the repair was never held")

s.settimeout(1.0)


def recvn(n):
    b = b""
    while len(b) < n:
        try:
            c = s.recv(n - len(b))
        except socket.timeout:
            check_daemon("the reply")
            continue
        if not c:
            sys.exit("connection closed by the daemon (pid %d) before its reply" % daemon)
        b += c
    return b


while True:
    magic, ver, cmd, flags, ln, reqid = struct.unpack("<IHHIIQ", recvn(24))
    body = recvn(ln)
    if reqid != REQID:
        continue                        # the CANCEL's own reply
    if cmd == CMD_ERROR:
        err = struct.unpack("<i", body[:4])[0]
        print("error %d: %s" % (err, body[8:].decode(errors="replace")))
        break
    oflags, error, nfindings = struct.unpack("<IiI", body[:12])
    msg, off = [], 16
    for _ in range(nfindings):
        l = struct.unpack("<I", body[off + 4:off + 8])[0]
        msg.append(body[off + 8:off + 8 + l].decode(errors="replace"))
        off += 8 + l
    print("oflags 0x%x error %d: %s" % (oflags, error, " | ".join(msg)))
    break
