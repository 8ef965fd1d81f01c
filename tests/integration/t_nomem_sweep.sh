#!/bin/bash
# t_nomem_sweep.sh — truncates and writes whose allocations fail from a chosen point on.
# The daemon runs with MENDFS_TEST_FAULTS_ARM (fs/testfaults.c): for S = 0, 1, 2, ... S
# allocations succeed, then every one fails until the operation has returned, so each
# operation is cut at each of its allocations in turn (until it meets no failure 8 times
# in a row), and nothing after the cut can succeed either: a retry does not get through
# as it mostly does under t_nomem's one-in-N failures (a truncate whose size was
# committed used to fail with ENOMEM after its retries, the file truncated all the same).
# The files are fragmented (a block written every other block: an extent each), so a
# truncate takes several transactions.  POSIX is the model: an operation that fails
# (ENOMEM only) has changed neither size nor bytes; a write that returns a count wrote
# exactly that prefix; a truncate that succeeds has its size.  After each cut the file is
# grown back (a truncate up, then a write further out): what lies past the old end of file
# must read as zeroes.  Then unmount and `mendfs_db -c check` must be clean.
set -u
. "$(dirname "$0")/mountlib.sh"
ml_setup t_nomem_sweep

"$MKFS" -q "$img" 64M || fail "mkfs"
MENDFS_TEST_FAULTS=7 MENDFS_TEST_FAULTS_ARM="$dir/arm" mount_fs

timeout 600 python3 - "$mnt" "$pid" "$log" "$dir/arm" "$(dirname "$0")" <<'PY' || fail "the sweep (above)"
import errno, os, sys
mnt, pid, logpath, armpath = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
sys.path.insert(0, sys.argv[5])
from faultarm import Faults, content       # arm(S), disarm(): faultarm.py
faults = Faults(pid, logpath, armpath)
BS = 4096

def make(p, seed):
    # 80 one-byte extents (every other block) and a run of full blocks near the start
    fd = os.open(p, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
    try:
        for k in range(80):
            os.pwrite(fd, bytes([1 + (seed + k) % 255]), 2 * BS * k + 100)
        os.pwrite(fd, bytes([7 + seed % 200]) * (3 * BS + 5), 5 * BS + 9)
    finally:
        os.close(fd)
    return bytearray(content(p))

def cut_ops(b):
    size = len(b)
    return [
        # name, operation, expected bytes given its result, a write's full count
        ("truncate down", lambda p: os.truncate(p, 7000),
         lambda r: b[:7000], None),
        ("truncate down to a block", lambda p: os.truncate(p, 3 * BS),
         lambda r: b[:3 * BS], None),
        ("truncate up", lambda p: os.truncate(p, size + 5 * BS + 11),
         lambda r: b + bytes(5 * BS + 11), None),
        ("one byte into a hole", lambda p: pwrite(p, b"\xee", 2 * BS * 7 + BS + 50),
         lambda r: patch(b, 2 * BS * 7 + BS + 50, b"\xee"[:r]), 1),
        ("one byte in place", lambda p: pwrite(p, b"\xdd", 2 * BS * 9 + 100),
         lambda r: patch(b, 2 * BS * 9 + 100, b"\xdd"[:r]), 1),
        ("write across blocks and holes, past the end",
         lambda p: pwrite(p, b"\xcc" * (12 * BS + 7), size - 6 * BS - 3),
         lambda r: patch(b, size - 6 * BS - 3, (b"\xcc" * (12 * BS + 7))[:r]), 12 * BS + 7),
    ]

def pwrite(p, data, off):
    fd = os.open(p, os.O_WRONLY)
    try:
        return os.pwrite(fd, data, off)
    finally:
        os.close(fd)

def patch(b, off, data):
    n = bytearray(b)
    if off + len(data) > len(n):
        n.extend(bytes(off + len(data) - len(n)))
    n[off:off + len(data)] = data
    return n

def first_diff(a, b):
    return next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))

# S grows until the operation meets no failure 8 times in a row: every cut point is past.
# The file is made again for each S (O_TRUNC: its blocks go in the foreground, so no
# unlinked inode is being freed in the background while allocations fail).
trial, injected = 0, faults.disarm()[0]
for idx in range(6):
    untouched, skip, cuts = 0, 0, 0
    p = os.path.join(mnt, "f%d" % idx)
    while untouched < 8:
        if skip > 3000:
            sys.exit("%s: still meeting failures after 3000 allocations" % name)
        trial += 1
        b = make(p, trial)
        name, op, want, full = cut_ops(b)[idx]
        faults.arm(skip)
        try:
            r = op(p)
            err = 0
        except OSError as e:
            r, err = 0, e.errno
        before, injected = injected, faults.disarm()[0]
        if err not in (0, errno.ENOMEM):
            sys.exit("%s, cut after %d allocations: %s" % (name, skip, os.strerror(err)))
        exp = b if err else want(r)
        got = content(p)
        if got != bytes(exp):
            sys.exit("%s, cut after %d allocations: %s; the file differs from byte %d "
                     "(size %d, expected %d)" % (name, skip, "ENOMEM" if err else
                     "returned %r" % (r,), first_diff(got, exp), len(got), len(exp)))
        # grown back: past the old end of file there must be zeroes only
        end, up, far = len(got), len(b) + 2 * BS, len(b) + 9 * BS + 1
        os.truncate(p, up)
        pwrite(p, b"\x99", far)
        exp = bytes(exp[:up]) + bytes(far - min(end, up)) + b"\x99"
        got = content(p)
        if got != exp:
            sys.exit("%s, cut after %d allocations (%s): grown back from %d, the file "
                     "differs from byte %d" % (name, skip, "ENOMEM" if err else "done", end,
                                               first_diff(got, exp)))
        # a cut: ENOMEM, or a write's short count
        cuts += 1 if err or (full is not None and r != full) else 0
        untouched = untouched + 1 if injected == before else 0
        skip += 1
    print("ok: %s: %d cut points, %d of them ENOMEM or a short count" % (name, skip - 8, cuts))
PY
umount_fs
"$DB" -c "check -f" "$img" >"$dir/db.out" 2>&1 || { cat "$dir/db.out"; fail "mendfs_db check after the sweep"; }
ok "unmount, mendfs_db check -f clean"
