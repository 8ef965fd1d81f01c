#!/bin/bash
# t_enospc.sh — filling a small (64 MiB) filesystem: ENOSPC, never EIO and never a hang
# (every step under `timeout`), and deleting gives the space back exactly.
#   1. data: files written in 1 MiB pieces until ENOSPC, then the last blocks with ever
#      smaller writes down to one byte; a full filesystem answers ENOSPC (not EIO) to a write,
#      fallocate and setxattr, and to creat, mkdir and symlink once the last free inodes and
#      directory leaves are used; everything reads back;
#   2. inodes: data up to ~2 MiB from the end, then empty files until ENOSPC, so that the
#      last inode chunks (and directory blocks) take the last blocks;
#   3. mendfs_stress -S (3 processes, 12 s; ENOSPC allowed, everything else verified against
#      its model, mmap'd writes included) on the filesystem kept nearly full;
#   after each phase everything is deleted and statfs (free blocks, available blocks,
#   inodes, free inodes) returns exactly to its baseline;
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
# Creating on a full filesystem: the free inodes left in existing chunks go first, and a
# name may still fit a directory leaf another does not (hashed); every refusal must be
# ENOSPC, and 50 refusals in a row (different names) end each kind.
def fill(what, fn):
    refused, made = 0, 0
    for i in range(200000):
        try:
            fn(i)
            made += 1
            refused = 0
        except OSError as e:
            if e.errno != errno.ENOSPC:
                sys.exit('%s: %s, expected ENOSPC' % (what, e))
            refused += 1
            if refused == 50:
                return made
    sys.exit('200000 %s on a full filesystem' % what)
fill('creat', lambda i: os.close(os.open('e%06d' % i, os.O_CREAT | os.O_WRONLY, 0o644)))
fill('mkdir', lambda i: os.mkdir('m%06d' % i))
fill('symlink', lambda i: os.symlink('x' * 2000, 'l%06d' % i))
try:
    os.setxattr('d00000', 'user.big', b'v' * 30000)
except OSError as e:
    if e.errno not in (errno.ENOSPC, errno.EOPNOTSUPP):
        sys.exit('setxattr: %s' % e)
" || fail "operations on a full filesystem"
timeout -k 5 120 find "$mnt" -type f -exec cat {} + >/dev/null || fail "reading back the full filesystem"
ok "full: write, fallocate, setxattr give ENOSPC; creat, mkdir, symlink only ENOSPC once the last inodes and leaves are used; all reads back"
back_to_base "after the data fill"

# --- 2. inodes until ENOSPC ------------------------------------------------------------------
fsop 240 "
st = os.statvfs('.')
room = st.f_bavail * st.f_frsize - (2 << 20)
fd = os.open('big', os.O_CREAT | os.O_WRONLY, 0o644)
os.posix_fallocate(fd, 0, room)
os.close(fd)
# names hash into different leaves of the directory: one may still fit where another does
# not, so the fill ends after 50 ENOSPC in a row
n, refused, i = 0, 0, 0
while refused < 50:
    try:
        os.close(os.open('e%06d' % i, os.O_CREAT | os.O_WRONLY, 0o644))
        n += 1
        refused = 0
    except OSError as e:
        if e.errno != errno.ENOSPC:
            sys.exit('creat: %s' % e)
        refused += 1
    i += 1
    if n > 1000000:
        sys.exit('a million empty files in 2 MiB')
print('%d empty files (then 50 ENOSPC in a row), %d inodes still free' % (n, os.statvfs('.').f_ffree))
" >"$dir/inodes.out" || { cat "$dir/inodes.out"; fail "inode fill"; }
ok "inode fill: $(cat "$dir/inodes.out") until ENOSPC; statfs '$(statfs)'"
back_to_base "after the inode fill"

# --- 3. concurrent load on the nearly full filesystem ------------------------------------------
# mendfs_stress -S: ENOSPC is an allowed answer (the tool forgets the content of the range an
# ENOSPC write may have half done, and checks that a refused create, link or rename changed
# nothing); everything else, including every byte read back, must match its model.
if [ -x "${TOOLS:-${O:+$O/tools}}/mendfs_stress" ]; then
	stress=${TOOLS:-$O/tools}/mendfs_stress
	bounded 300 "$stress" -S -p 3 -t 12 -z 8M -f falloc=10,write=25,append=8 ${ENOSPC_SEED:+-s "$ENOSPC_SEED"} \
		"$mnt" >"$dir/stress.out" 2>&1 || { cat "$dir/stress.out"; fail "mendfs_stress -S on the 64 MiB filesystem"; }
	nospc=$(awk '$1 != "op" && NF == 5 { n += $4 } END { print n + 0 }' "$dir/stress.out")
	ok "mendfs_stress -S, 3 processes for 12 s: $nospc ENOSPC answers, everything else verified ($(grep -o 'seed [0-9]*' "$dir/stress.out" | head -1))"
	back_to_base "after the concurrent load"
else
	echo "note: mendfs_stress not built (TOOLS), the concurrent ENOSPC load is skipped"
fi

umount_fs
"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { tail "$dir/db.out"; fail "mendfs_db check after the fills"; }
grep -Ei "corrupt|checksum|EUCLEAN|structure needs|I/O error" "$log" && fail "the daemon reported damage"
mount_fs
[ "$(statfs)" = "$base" ] || fail "after a remount statfs is '$(statfs)', baseline '$base'"
umount_fs
ok "clean unmount, check clean ($(tail -1 "$dir/db.out")), the baseline survives a remount"
exit 0
