#!/bin/bash
# t_enospc.sh — filling a small (64 MiB) filesystem: ENOSPC, never EIO and never a hang
# (every step under `timeout`), and deleting gives the space back exactly.
#   1. data: files written in 1 MiB pieces until ENOSPC, then the last blocks with ever
#      smaller writes down to one byte; a full filesystem still answers ENOSPC (not EIO) to
#      creat, mkdir, symlink, a write, fallocate and setxattr, and reads everything back;
#   2. inodes: data up to ~2 MiB from the end, then empty files until ENOSPC, so that the
#      last inode chunks (and directory blocks) take the last blocks;
#   3. after each phase everything is deleted and statfs (free blocks, available blocks,
#      inodes, free inodes) returns exactly to its baseline;
# then a clean unmount, `mendfs_db -c check` clean, and a remount shows the same baseline.
set -u
. "$(dirname "$0")/mountlib.sh"
ml_setup t_enospc

"$MKFS" -q "$img" 64M >"$dir/mkfs.out" 2>&1 || { cat "$dir/mkfs.out"; fail "mkfs 64M"; }
mount_fs
statfs() { stat -f -c '%f %a %c %d' "$mnt"; }
base=$(statfs)
read -r bfree0 _ _ ffree0 <<<"$base"
ok "64 MiB filesystem: baseline free blocks, available, inodes, free inodes: $base"

# fsop SECONDS 'python code': run python3 in the mount with a helper `enospc(fn, *args)` that
# must raise ENOSPC (any other outcome fails), under a timeout.
fsop() {
	local secs=$1
	shift
	(cd "$mnt" && timeout -k 5 "$secs" python3 -c "
import os, errno, sys
def enospc(what, fn, *args):
    try:
        fn(*args)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            sys.exit('%s: %s, expected ENOSPC' % (what, e))
        return
    sys.exit('%s succeeded on a full filesystem' % what)
$1")
	local rc=$?
	[ "$rc" -eq 124 ] || [ "$rc" -eq 137 ] && fail "a step did not finish within $secs s (hang)"
	return "$rc"
}

# back_to_base WHAT: remove everything, then statfs must come back exactly (the daemon frees
# unlinked inodes in the background: bounded polling)
back_to_base() {
	timeout -k 5 120 find "$mnt" -mindepth 1 -delete || fail "$1: deleting everything"
	local now
	for _ in $(seq 400); do
		now=$(statfs)
		[ "$now" = "$base" ] && break
		sleep 0.05
	done
	[ "$now" = "$base" ] || fail "$1: statfs after deleting everything is '$now', baseline '$base'"
	ok "$1: everything deleted, statfs back to the baseline exactly"
}

# --- 1. data until ENOSPC ------------------------------------------------------------------
fsop 180 "
size, i, total, flen = 1 << 20, 1, 0, 0
buf = os.urandom(1 << 20)
fd = os.open('d00000', os.O_CREAT | os.O_WRONLY, 0o644)
while size >= 1:
    if flen >= 8 << 20:          # a new file every 8 MiB (the last one takes the tail)
        try:
            nfd = os.open('d%05d' % i, os.O_CREAT | os.O_WRONLY, 0o644)
            os.close(fd)
            fd, flen, i = nfd, 0, i + 1
        except OSError as e:
            if e.errno != errno.ENOSPC:
                sys.exit('creat: %s, expected ENOSPC' % e)
    try:
        n = os.write(fd, buf[:size])
        total += n
        flen += n
        if n < size:
            size //= 4
    except OSError as e:
        if e.errno != errno.ENOSPC:
            sys.exit('writing %d bytes: %s, expected ENOSPC' % (size, e))
        size //= 4
os.close(fd)
print('wrote %d bytes in %d files' % (total, i))
" >"$dir/fill.out" || { cat "$dir/fill.out"; fail "data fill"; }
full=$(statfs)
read -r _ bavail1 _ _ <<<"$full"
ok "data fill: $(cat "$dir/fill.out") until ENOSPC at every size down to 1 byte; statfs '$full'"
# ENOSPC must mean full: at most 1% of the blocks may still be reported available (the
# allocator keeps a few per AG for its free lists; statfs ought to leave them out too).
[ "$bavail1" -le $((bfree0 / 100)) ] || fail "ENOSPC with $bavail1 blocks reported available"
[ "$bavail1" -eq 0 ] || echo "note: statfs reports $bavail1 blocks available at ENOSPC"
fsop 60 "
enospc('a write', lambda: os.write(os.open('d00000', os.O_WRONLY | os.O_APPEND), b'x' * 65536))
enospc('fallocate', lambda: os.posix_fallocate(os.open('d00001', os.O_WRONLY), 64 << 20, 1 << 20))
for i in range(200000):          # the free inodes left in existing chunks go first
    try:
        os.close(os.open('e%06d' % i, os.O_CREAT | os.O_WRONLY, 0o644))
    except OSError as e:
        if e.errno != errno.ENOSPC:
            sys.exit('creat: %s' % e)
        break
else:
    sys.exit('200000 creats on a full filesystem')
enospc('creat', os.open, 'last', os.O_CREAT | os.O_WRONLY, 0o644)
enospc('mkdir', os.mkdir, 'lastdir')
enospc('symlink', os.symlink, 'x' * 2000, 'lastlink')
try:
    os.setxattr('d00000', 'user.big', b'v' * 30000)
except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EOPNOTSUPP):
        sys.exit('setxattr: %s' % e)
" || fail "operations on a full filesystem"
timeout -k 5 120 find "$mnt" -type f -exec cat {} + >/dev/null || fail "reading back the full filesystem"
ok "full: write, fallocate, creat (after the last free inodes), mkdir, symlink, setxattr give ENOSPC; all reads back"
back_to_base "after the data fill"

# --- 2. inodes until ENOSPC ------------------------------------------------------------------
fsop 240 "
st = os.statvfs('.')
room = st.f_bavail * st.f_frsize - (2 << 20)
fd = os.open('big', os.O_CREAT | os.O_WRONLY, 0o644)
os.posix_fallocate(fd, 0, room)
os.close(fd)
n = 0
while True:
    try:
        os.close(os.open('e%06d' % n, os.O_CREAT | os.O_WRONLY, 0o644))
        n += 1
    except OSError as e:
        if e.errno != errno.ENOSPC:
            sys.exit('creat: %s' % e)
        break
    if n > 1000000:
        sys.exit('a million empty files in 2 MiB')
enospc('creat', os.open, 'last', os.O_CREAT | os.O_WRONLY, 0o644)
enospc('mkdir', os.mkdir, 'lastdir')
print('%d empty files, %d inodes still free' % (n, os.statvfs('.').f_ffree))
" >"$dir/inodes.out" || { cat "$dir/inodes.out"; fail "inode fill"; }
ok "inode fill: $(cat "$dir/inodes.out") until ENOSPC; statfs '$(statfs)'"
back_to_base "after the inode fill"

umount_fs
"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { tail "$dir/db.out"; fail "mendfs_db check after the fills"; }
grep -Ei "corrupt|checksum|EUCLEAN|structure needs|I/O error" "$log" && fail "the daemon reported damage"
mount_fs
[ "$(statfs)" = "$base" ] || fail "after a remount statfs is '$(statfs)', baseline '$base'"
umount_fs
ok "clean unmount, check clean ($(tail -1 "$dir/db.out")), the baseline survives a remount"
exit 0
