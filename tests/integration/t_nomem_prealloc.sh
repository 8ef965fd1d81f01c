#!/bin/bash
# t_nomem_prealloc.sh — a preallocation (fallocate KEEP_SIZE) over written blocks that a
# truncate left mapped past the end of file keeps its space.  A truncate whose unmapping
# stops once its size is committed (every allocation failing: MENDFS_TEST_FAULTS_ARM,
# fs/testfaults.c) succeeds and leaves blocks past the end of file; those go when the file
# grows over them (fs/fileio.c, clear_past_eof).  A fallocate KEEP_SIZE over them used to
# keep them as they were (it maps holes only), so the truncate up that follows it punched
# them: the preallocated range lost their space, and writes into it had to allocate again.
# Checked: the truncate up leaves the file's block count as the fallocate made it; after a
# one-byte write into every block of the range the file reads as zeroes but for those
# bytes (and its first 7000); `mendfs_db check -f` is clean.
set -u
. "$(dirname "$0")/mountlib.sh"
ml_setup t_nomem_prealloc

"$MKFS" -q "$img" 64M || fail "mkfs"
MENDFS_TEST_FAULTS=7 MENDFS_TEST_FAULTS_ARM="$dir/arm" mount_fs

timeout 300 python3 - "$mnt" "$pid" "$log" "$dir/arm" "$(dirname "$0")" <<'PY' || fail "the checks"
import ctypes, errno, os, sys
mnt, pid, logpath, armpath = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
sys.path.insert(0, sys.argv[5])
from faultarm import Faults, content       # arm(S), disarm(): faultarm.py
faults = Faults(pid, logpath, armpath)
libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]
FALLOC_FL_KEEP_SIZE = 1
BS = 4096
SIZE, END = 7000, 2 * BS * 80

p = os.path.join(mnt, "f")
faults.disarm()
# A truncate down of a fragmented file (an extent every other block), cut at each of its
# allocations in turn until one succeeds with its unmapping stopped.
for skip in range(400):
    fd = os.open(p, os.O_CREAT | os.O_TRUNC | os.O_WRONLY, 0o644)
    for k in range(80):
        os.pwrite(fd, b"\x55" * 10, 2 * BS * k + 100)
    os.close(fd)
    faults.arm(skip)
    try:
        os.truncate(p, SIZE)
        err = 0
    except OSError as e:
        err = e.errno
    if err not in (0, errno.ENOMEM):
        sys.exit("truncate cut after %d allocations: %s" % (skip, os.strerror(err)))
    if b"unmapping the blocks past it stopped" in faults.disarm()[1]:
        if err:
            sys.exit("a truncate whose unmapping stopped failed: %s" % os.strerror(err))
        break
else:
    sys.exit("no truncate had its unmapping stopped")
fd = os.open(p, os.O_RDWR)
left = os.fstat(fd).st_blocks
if left * 512 <= 2 * BS:
    sys.exit("no blocks left past the end of file (%d sectors)" % left)
if libc.fallocate(fd, FALLOC_FL_KEEP_SIZE, SIZE, END - SIZE) != 0:
    sys.exit("fallocate KEEP_SIZE: %s" % os.strerror(ctypes.get_errno()))
pre = os.fstat(fd).st_blocks
os.ftruncate(fd, END)
up = os.fstat(fd).st_blocks
if up < pre:
    sys.exit("the truncate up over the preallocated range freed %d of its sectors "
             "(%d after the fallocate, %d after the truncate)" % (pre - up, pre, up))

# A byte into every block of the range (the block count may change by the extent map's
# own blocks: not checked).
for blk in range(2, END // BS):
    os.pwrite(fd, b"\x77", blk * BS + 1)
os.close(fd)
got = content(p)
exp = bytearray(END)
for k in range(80):
    if 2 * BS * k + 100 < SIZE:
        exp[2 * BS * k + 100:2 * BS * k + 110] = b"\x55" * 10
for blk in range(2, END // BS):
    exp[blk * BS + 1] = 0x77
if got != bytes(exp):
    i = next((i for i in range(min(len(got), len(exp))) if got[i] != exp[i]), None)
    sys.exit("the file differs from byte %r (size %d, expected %d)" % (i, len(got), END))
print("ok: %d sectors mapped with %d bytes in the file; the preallocation kept its "
      "%d sectors" % (left, SIZE, pre))
PY
umount_fs
"$DB" -c "check -f" "$img" >"$dir/db.out" 2>&1 || { cat "$dir/db.out"; fail "mendfs_db check"; }
ok "unmount, mendfs_db check -f clean"
