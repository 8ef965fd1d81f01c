#!/bin/bash
# t_scale.sh — scale on a real mount:
#   1. one directory of N entries: created (O_CREAT|O_EXCL), a sample of 10,000 looked up
#      (and 1,000 absent names: ENOENT), a full readdir that must return exactly the N names
#      (no duplicate, none missing), every entry deleted, the directory removed;
#   2. a sparse 1 TiB file: truncate to 1 TiB, data written at a few offsets including the
#      last byte, read back, SEEK_DATA/SEEK_HOLE exact, a handful of blocks allocated, its
#      deletion gives every block back;
# then a clean unmount and `mendfs_db -c check` clean.
#
# N is 1,000,000 (SCALE_ENTRIES=N sets another count; MENDFS_SCALE=full, which `make
# torture` passes, is the same million).  The cost of a create or unlink does not grow with
# the directory (session 3: the inode allocator's free-chunk list, the inode cache's growing
# hash): the rates are printed by quarter of N.  Each create is four FUSE requests (GETATTR
# of the directory, LOOKUP, CREATE, RELEASE) and each unlink three plus the inactivation
# worker's batched free.  Since session 4 (the journal joins transactions into the queued
# record and writes from its own thread; frees are batched) the million takes ~4.8 minutes
# in all on the shared 2-core machine under a load of ~11: creates ~7k/s, unlinks ~7.3k/s
# (session 3: ~3k/s and ~1.5k/s, 17 minutes, so `make check` then did 200,000).
set -u
. "$(dirname "$0")/mountlib.sh"
ml_setup t_scale

n=${SCALE_ENTRIES:-1000000}
[ "${MENDFS_SCALE:-}" = full ] && n=1000000
echo "t_scale: a directory of $n entries"
"$MKFS" -q "$img" 8G >"$dir/mkfs.out" 2>&1 || { cat "$dir/mkfs.out"; fail "mkfs"; }
mount_fs
base=$(stat -f -c '%f %d' "$mnt")

# --- 1. a directory of n entries ---------------------------------------------------------------
# Each phase is bounded at 400 entries a second at least (10x below the measured rate).
phase() {
	local what=$1 secs=$2
	shift 2
	local t0=$(date +%s.%N)
	bounded "$secs" python3 -c "
import os, sys, errno, random
n = $n
os.chdir('$mnt')
name = lambda i: 'e%07d' % i
import time
quarters, tq = [], [time.time()]
def tick(i):
    # the rate of each quarter of n, to show whether it falls as the directory grows
    if (i + 1) % (n // 4 or 1) == 0 and len(tq) < 5:
        tq.append(time.time())
        quarters.append('%.0f' % ((n // 4 or 1) / (tq[-1] - tq[-2])))
$*" >"$dir/phase.out" 2>&1 || { cat "$dir/phase.out"; fail "$what"; }
	local t1=$(date +%s.%N)
	ok "$what: $(cat "$dir/phase.out") in $(printf '%.1f' "$(echo "$t1 - $t0" | bc)") s"
}
mkdir "$mnt/big" || fail "mkdir big"
phase "create $n entries" $((n / 400 + 60)) "
t0 = time.time()
for i in range(n):
    os.close(os.open('big/' + name(i), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    tick(i)
print('%.0f creates/s (by quarter: %s)' % (n / (time.time() - t0), ' '.join(quarters)))"
[ "$(stat -c %s "$mnt/big")" -gt 0 ] || fail "the directory's size is 0"
phase "lookups" $((n / 4000 + 60)) "
rnd = random.Random(1)
k = min(n, 10000)
for i in rnd.sample(range(n), k):
    st = os.lstat('big/' + name(i))
    assert st.st_size == 0, name(i)
for i in range(n, n + 1000):
    try:
        os.lstat('big/' + name(i))
        sys.exit('%s exists' % name(i))
    except FileNotFoundError:
        pass
print('%d present names found, 1,000 absent ones ENOENT' % k)"
phase "readdir" $((n / 2000 + 60)) "
got = [e.name for e in os.scandir('big')]
if len(got) != n:
    sys.exit('readdir returned %d entries, expected %d' % (len(got), n))
s = set(got)
if len(s) != n:
    sys.exit('readdir returned %d duplicates' % (n - len(s)))
if s != set(name(i) for i in range(n)):
    sys.exit('readdir returned names that were never created')
print('exactly %d names, no duplicate, none missing' % n)"
phase "delete all" $((n / 400 + 60)) "
t0 = time.time()
for i in range(n):
    os.unlink('big/' + name(i))
    tick(i)
os.rmdir('big')
print('%.0f unlinks/s (by quarter: %s), directory removed' % (n / (time.time() - t0), ' '.join(quarters)))"

# --- 2. a sparse 1 TiB file -----------------------------------------------------------------------
bounded 120 python3 -c "
import os, sys, errno
T = 1 << 40
os.chdir('$mnt')
fd = os.open('sparse', os.O_CREAT | os.O_RDWR, 0o644)
os.ftruncate(fd, T)
writes = {0: b'first', (1 << 30) + 123: b'one GiB', 512 << 30: b'half a TiB' * 500, T - 1: b'Z'}
for off, data in writes.items():
    if os.pwrite(fd, data, off) != len(data):
        sys.exit('short write at %d' % off)
st = os.fstat(fd)
if st.st_size != T:
    sys.exit('size %d after writing the last byte, expected %d' % (st.st_size, T))
for off, data in writes.items():
    if os.pread(fd, len(data), off) != data:
        sys.exit('data at %d reads back wrong' % off)
if os.pread(fd, 4096, 700 << 30) != bytes(4096):
    sys.exit('a hole does not read as zeroes')
if os.pread(fd, 10, T) != b'':
    sys.exit('a read at the end of the file returned data')
bs = os.statvfs('.').f_bsize
for off, data in writes.items():
    d = os.lseek(fd, off, os.SEEK_DATA)
    if d != off:
        sys.exit('SEEK_DATA from %d (in data): %d' % (off, d))
    d = os.lseek(fd, off - off % bs - 1, os.SEEK_DATA) if off >= bs else 0
    if d != off - off % bs:
        sys.exit('SEEK_DATA before %d: %d, expected %d' % (off, d, off - off % bs))
    h = os.lseek(fd, off, os.SEEK_HOLE)
    e = min(T, (off + len(data) + bs - 1) // bs * bs)
    if h != e:
        sys.exit('SEEK_HOLE from %d: %d, expected %d' % (off, h, e))
if os.lseek(fd, 4096, os.SEEK_DATA) != (1 << 30):
    sys.exit('SEEK_DATA from 4096 skips to %d' % os.lseek(fd, 4096, os.SEEK_DATA))
try:
    os.lseek(fd, T, os.SEEK_DATA)
    sys.exit('SEEK_DATA at the end succeeded')
except OSError as e:
    if e.errno != errno.ENXIO:
        sys.exit('SEEK_DATA at the end: %s' % e)
blocks = os.fstat(fd).st_blocks
if blocks * 512 > 1 << 20:
    sys.exit('%d bytes allocated for a 1 TiB sparse file with 5 KiB of data' % (blocks * 512))
os.close(fd)
print('1 TiB sparse file: size exact, 4 writes incl. the last byte read back, holes zero, SEEK_DATA/SEEK_HOLE exact, %d KiB allocated' % (blocks // 2))
" >"$dir/sparse.out" 2>&1 || { cat "$dir/sparse.out"; fail "sparse 1 TiB file"; }
ok "$(cat "$dir/sparse.out")"
du_k=$(du -k "$mnt/sparse" | cut -f1)
[ "$du_k" -le 1024 ] || fail "du says $du_k KiB for the sparse file"
rm "$mnt/sparse" || fail "rm sparse"
# The daemon frees unlinked inodes in the background (a million of them take a while):
# poll until statfs is back, failing when it stops moving for 15 s without getting there.
last="" still=0
while now=$(stat -f -c '%f %d' "$mnt") && [ "$now" != "$base" ] && [ "$still" -lt 75 ]; do
	if [ "$now" = "$last" ]; then still=$((still + 1)); else still=0; last=$now; fi
	sleep 0.2
done
[ "$now" = "$base" ] || fail "statfs '$now' after deleting everything (unchanged for 15 s), baseline '$base'"
ok "du $du_k KiB; after deleting everything statfs is back at its baseline"

umount_fs
"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { tail "$dir/db.out"; fail "mendfs_db check"; }
ok "clean unmount, $(tail -1 "$dir/db.out")"
exit 0
