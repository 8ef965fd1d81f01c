#!/bin/bash
# t_mount.sh — the mendfs daemon mounted for real through FUSE: files small, large and sparse
# past 4 GiB; directory trees; rename across directories, over files and empty directories,
# RENAME_NOREPLACE/RENAME_EXCHANGE, refusal of loops; hard links; short and long symlinks;
# fifos and devices; chmod/chown/utimensat with nanoseconds; truncate; fallocate punch and
# zero range; SEEK_DATA/SEEK_HOLE; setuid cleared on write by another user; statfs counts
# that fall and come back; ENAMETOOLONG; a directory of 20,000 entries.  Then a clean
# unmount (waiting for the daemon to exit), `mendfs_db check`, a remount that must show the
# same names, contents and metadata; a second mount of the same image is refused; and a
# daemon killed with SIGKILL after an fsync loses nothing fsync'd and replays its journal.
set -u
BIN=${BIN:?BIN must name the directory of the built programs}
MKFS=$BIN/mkfs.mendfs
DB=$BIN/mendfs_db
MENDFS=$BIN/mendfs

[ -c /dev/fuse ] || { echo "skip: /dev/fuse is missing"; exit 77; }
command -v fusermount3 >/dev/null || { echo "skip: fusermount3 is missing"; exit 77; }
command -v python3 >/dev/null || { echo "skip: python3 is missing"; exit 77; }

dir=$(mktemp -d /tmp/t_mount.XXXXXX) || exit 1
img=$dir/img
mnt=$dir/m
mnt2=$dir/m2
log=$dir/log
pid=""
mkdir "$mnt" "$mnt2"
chmod 755 "$dir"   # the setuid test runs as nobody

cleanup() {
	cd /
	for m in "$mnt" "$mnt2"; do
		grep -q " $m fuse" /proc/self/mounts && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m"; }
	done
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; [ -s "$log" ] && { echo "--- daemon log"; tail -20 "$log"; }; exit 1; }
ok() { echo "ok: $*"; }

mounted() { grep -q " $1 fuse.mendfs " /proc/self/mounts; }

# mount_fs [options...]: start the daemon in the foreground, wait (bounded) for the mount
mount_fs() {
	"$MENDFS" -f -o allow_other "$@" "$img" "$mnt" >>"$log" 2>&1 &
	pid=$!
	for _ in $(seq 400); do
		mounted "$mnt" && return 0
		kill -0 "$pid" 2>/dev/null || fail "the daemon exited before mounting"
		sleep 0.025
	done
	fail "no mount after 10 s"
}

# wait_exit: wait (bounded) for the daemon to exit; its status must be 0
wait_exit() {
	for _ in $(seq 1200); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.025
	done
	kill -0 "$pid" 2>/dev/null && fail "the daemon did not exit within 30 s of the unmount"
	wait "$pid"
	local rc=$?
	pid=""
	[ "$rc" -eq 0 ] || fail "the daemon exited with status $rc"
}

umount_fs() {
	cd /
	fusermount3 -u "$mnt" || fail "fusermount3 -u failed"
	wait_exit
}

db_check() {
	"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { cat "$dir/db.out"; fail "mendfs_db check: $1"; }
}

# The names, types, modes, link counts, owners, sizes, times (ns), symlink targets and
# file contents under the mount: compared before and after a remount.
manifest() {
	(cd "$mnt" && find . -printf '%p %y %m %n %U %G %s %T@ %C@ %l\n' | sort &&
	 find . -type f ! -name 'e*' -print0 | sort -z | xargs -0 md5sum)
}

# pyfs 'code': python3 with os, errno and a renameat2 binding, run inside the mount
pyfs() {
	(cd "$mnt" && python3 -c "
import os, errno, ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
def renameat2(a, b, flags):
    if libc.renameat2(-100, a.encode(), -100, b.encode(), flags) != 0:
        e = ctypes.get_errno(); raise OSError(e, os.strerror(e))
NOREPLACE, EXCHANGE = 1, 2
def expect_errno(code, fn, *args):
    try:
        fn(*args)
    except OSError as e:
        if e.errno != code:
            sys.exit('%s%s: errno %d, expected %d' % (fn.__name__, args, e.errno, code))
        return
    sys.exit('%s%s succeeded, expected errno %d' % (fn.__name__, args, code))
$1")
}

"$MKFS" -q "$img" 8G >"$dir/mkfs.out" 2>&1 || { cat "$dir/mkfs.out"; fail "mkfs"; }
t0=$(date +%s.%N)
mount_fs
ok "mounted in $(echo "$(date +%s.%N) - $t0" | bc 2>/dev/null || echo '?') s"

# --- a second mount of the same image is refused ---------------------------------------------
if "$MENDFS" -f "$img" "$mnt2" >"$dir/second.out" 2>&1; then
	fail "a second mount of the same image succeeded"
fi
grep -q "in use" "$dir/second.out" || { cat "$dir/second.out"; fail "no 'in use' message for a second mount"; }
mounted "$mnt2" && fail "the second daemon mounted"
"$MKFS" -q -f "$img" 8G >"$dir/second.out" 2>&1 && fail "mkfs of a mounted image succeeded"
ok "a second mount and mkfs of the mounted image are refused"

cd "$mnt" || fail "cd mount"
read -r _ bs_ _ <<<"$(stat -f -c '%s %S %b' .)"
free0=$(stat -f -c %f .)
ffree0=$(stat -f -c %d .)

# --- files: small, large, sparse past 4 GiB -------------------------------------------------
echo "hello, mendfs" >small || fail "write small"
[ "$(cat small)" = "hello, mendfs" ] || fail "small file reads back wrong"
head -c 40000000 /dev/urandom >"$dir/large.src"
t0=$(date +%s%N)
cp "$dir/large.src" large || fail "write large"
t1=$(date +%s%N)
cmp -s "$dir/large.src" large || fail "large file reads back wrong"
t2=$(date +%s%N)
ok "40 MB file: write $((40000 * 1000000 / ((t1 - t0) / 1000 + 1) / 1000)) MB/s, read+compare $((40000 * 1000000 / ((t2 - t1) / 1000 + 1) / 1000)) MB/s"
[ "$(stat -f -c %f .)" -lt $((free0 - 40000000 / bs_)) ] || fail "statfs free blocks did not fall after a 40 MB write"
truncate -s 6G sparse || fail "truncate -s 6G"
head -c 1048576 /dev/urandom >"$dir/chunk"
dd if="$dir/chunk" of=sparse bs=1M seek=5000 conv=notrunc status=none || fail "dd past 4 GiB"
dd if=sparse bs=1M skip=5000 count=1 status=none | cmp -s - "$dir/chunk" || fail "data past 4 GiB reads back wrong"
[ "$(stat -c %s sparse)" = 6442450944 ] || fail "sparse size $(stat -c %s sparse)"
[ "$(dd if=sparse bs=1M skip=4095 count=1 status=none | tr -d '\0' | wc -c)" = 0 ] || fail "a hole does not read as zeroes"
[ "$(stat -c %b sparse)" -le 4096 ] || fail "the sparse file uses $(stat -c %b sparse) sectors"
pyfs "
fd = os.open('sparse', os.O_RDONLY)
d = os.lseek(fd, 0, os.SEEK_DATA); h = os.lseek(fd, d, os.SEEK_HOLE)
assert d == 5000 << 20 and h == 5001 << 20, (d, h)
assert os.lseek(fd, 0, os.SEEK_HOLE) == 0
expect_errno(errno.ENXIO, os.lseek, fd, 5001 << 20, os.SEEK_DATA)
expect_errno(errno.ENXIO, os.lseek, fd, 6 << 30, os.SEEK_DATA)
" || fail "SEEK_DATA/SEEK_HOLE"
ok "small, 40 MB and sparse (data at 5000 MiB of 6 GiB) files; SEEK_DATA/SEEK_HOLE"

# --- O_APPEND, O_TRUNC, O_EXCL, EISDIR, ENOTDIR --------------------------------------------------
printf 'abc' >app; printf 'def' >>app
[ "$(cat app)" = abcdef ] || fail "O_APPEND"
pyfs "
fd = os.open('app', os.O_WRONLY | os.O_TRUNC); os.close(fd)
assert os.stat('app').st_size == 0
expect_errno(errno.EEXIST, os.open, 'app', os.O_CREAT | os.O_EXCL | os.O_WRONLY)
os.mkdir('adir')
expect_errno(errno.EISDIR, os.open, 'adir', os.O_WRONLY)
expect_errno(errno.ENOTDIR, os.mkdir, 'app/x')
expect_errno(errno.ENOENT, os.stat, 'nosuch')
expect_errno(errno.EEXIST, os.mkdir, 'adir')
expect_errno(errno.ENAMETOOLONG, os.open, 'n' * 256, os.O_CREAT | os.O_WRONLY)
expect_errno(errno.ENAMETOOLONG, os.mkdir, 'n' * 256)
fd = os.open('n' * 255, os.O_CREAT | os.O_WRONLY); os.close(fd)
os.rmdir('adir')
" || fail "open flags and errnos"
[ -e "$(printf 'n%.0s' $(seq 255))" ] || fail "a 255-byte name"
ok "O_APPEND, O_TRUNC, O_EXCL; EISDIR, ENOTDIR, ENOENT, EEXIST; ENAMETOOLONG past 255 bytes"

# --- directories ---------------------------------------------------------------------------------
mkdir -p tree/a/b/c tree/a/d tree/e || fail "mkdir -p"
echo x >tree/a/b/c/f
[ "$(stat -c %h tree/a)" = 4 ] || fail "link count of a directory with two subdirectories: $(stat -c %h tree/a)"
rmdir tree/a 2>/dev/null && fail "rmdir of a non-empty directory succeeded"
pyfs "expect_errno(errno.ENOTEMPTY, os.rmdir, 'tree/a')" || fail "rmdir errno"
rm -r tree/a/b || fail "rm -r"
[ "$(stat -c %h tree/a)" = 3 ] || fail "link count after rm -r: $(stat -c %h tree/a)"
rmdir tree/a/d tree/a tree/e || fail "rmdir"
[ "$(ls -A tree | wc -l)" = 0 ] || fail "tree not empty"
mkdir keep keep/sub && echo data >keep/sub/file
ok "mkdir/rmdir trees, ENOTEMPTY, directory link counts"

# --- rename ----------------------------------------------------------------------------------------
mkdir r1 r2 r2/emptydir r1/mvdir
echo one >r1/one; echo two >r2/two
mv r1/one r2/moved || fail "mv across directories"
[ "$(cat r2/moved)" = one ] && [ ! -e r1/one ] || fail "moved file"
mv r2/moved r2/two || fail "mv over a file"
[ "$(cat r2/two)" = one ] || fail "rename over an existing file"
mv -T r1/mvdir r2/emptydir || fail "mv a directory over an empty one"
[ -d r2/emptydir ] && [ ! -e r1/mvdir ] || fail "directory rename over an empty directory"
[ "$(stat -c %h r1)" = 2 ] && [ "$(stat -c %h r2)" = 3 ] || fail "link counts after directory rename: $(stat -c %h r1) $(stat -c %h r2)"
echo a >r1/xa; echo b >r2/xb
pyfs "
expect_errno(errno.EEXIST, renameat2, 'r1/xa', 'r2/xb', NOREPLACE)
renameat2('r1/xa', 'r2/xb', EXCHANGE)
assert open('r1/xa').read() == 'b\n' and open('r2/xb').read() == 'a\n'
renameat2('r1/xa', 'r2/xc', NOREPLACE)
expect_errno(errno.ENOENT, renameat2, 'r1/xa', 'r2/xb', EXCHANGE)
os.makedirs('r1/p/q')
expect_errno(errno.EINVAL, os.rename, 'r1/p', 'r1/p/q/r')
expect_errno(errno.EINVAL, os.rename, 'r1', 'r1/p/q/r')
os.mkdir('r2/full'); open('r2/full/f', 'w').close()
expect_errno(errno.ENOTEMPTY, os.rename, 'r1/p', 'r2/full')
expect_errno(errno.ENOTDIR, os.rename, 'r1/p', 'r2/xb')
expect_errno(errno.EISDIR, os.rename, 'r2/xb', 'r1/p')
renameat2('r1/p', 'r2/xb', EXCHANGE)
assert os.path.isdir('r2/xb/q') and open('r1/p').read() == 'a\n'
os.rename('r2/xb', 'r1/deep')
assert os.path.isdir('r1/deep/q')
" || fail "rename variants"
ok "rename across directories, over files and empty directories, NOREPLACE, EXCHANGE, loops refused"

# --- hard links, symlinks, special files --------------------------------------------------------
echo linked >l1
ln l1 l2 && ln l1 r1/l3 || fail "ln"
[ "$(stat -c %h l1)" = 3 ] || fail "link count $(stat -c %h l1)"
rm l2
[ "$(stat -c %h r1/l3)" = 2 ] && [ "$(cat r1/l3)" = linked ] || fail "link count after unlink"
short=short/target
long=$(printf 'long/%.0s' $(seq 200))target
ln -s "$short" s1 && ln -s "$long" s2 || fail "ln -s"
[ "$(readlink s1)" = "$short" ] && [ "$(readlink s2)" = "$long" ] || fail "readlink"
mkfifo fifo && mknod cdev c 1 3 && mknod bdev b 7 200 || fail "mkfifo/mknod"
[ "$(stat -c %F fifo)" = fifo ] || fail "fifo type $(stat -c %F fifo)"
[ "$(stat -c '%F %t %T' cdev)" = "character special file 1 3" ] || fail "char device $(stat -c '%F %t %T' cdev)"
[ "$(stat -c '%t %T' bdev)" = "7 c8" ] || fail "block device $(stat -c '%t %T' bdev)"
python3 -c "import socket; s = socket.socket(socket.AF_UNIX); s.bind('$mnt/sock')" || fail "socket"
[ "$(stat -c %F sock)" = socket ] || fail "socket type"
ok "hard links and counts; symlinks of ${#short} and ${#long} bytes; fifo, devices, socket"

# --- attributes --------------------------------------------------------------------------------------
echo attrs >at
chmod 2751 at && [ "$(stat -c %a at)" = 2751 ] || fail "chmod"
chown 123:456 at && [ "$(stat -c '%u %g %a' at)" = "123 456 751" ] || fail "chown (setgid of a group-executable file must go): $(stat -c '%u %g %a' at)"
touch -m -d '2001-02-03 04:05:06.123456789 UTC' at && touch -a -d '1999-12-31 23:59:59.987654321 UTC' at || fail "touch -d"
[ "$(stat -c '%.9Y %.9X' at)" = "981173106.123456789 946684799.987654321" ] || fail "times $(stat -c '%.9Y %.9X' at)"
c0=$(stat -c %.9Z at)
touch -a at
[ "$(stat -c %.9Y at)" = 981173106.123456789 ] || fail "touch -a changed mtime"
[ "$(stat -c %.9Z at)" != "$c0" ] || fail "ctime did not move"
echo f >suid; chown nobody suid; chmod 6777 suid
setpriv --reuid=65534 --regid=65534 --clear-groups sh -c "echo more >>'$mnt/suid'" || fail "write as nobody"
[ "$(stat -c %a suid)" = 777 ] || fail "setuid/setgid after a write by another user: $(stat -c %a suid)"
chmod 4755 suid; setpriv --reuid=65534 --regid=65534 --clear-groups truncate -s 1 "$mnt/suid" 2>/dev/null
ok "chmod, chown, nanosecond utimens, ctime, setuid/setgid cleared"

# --- truncate, fallocate ----------------------------------------------------------------------------
head -c 1000000 /dev/urandom >"$dir/t.src"
cp "$dir/t.src" tr
truncate -s 100001 tr && head -c 100001 "$dir/t.src" | cmp -s - tr || fail "truncate down"
truncate -s 300000 tr || fail "truncate up"
{ head -c 100001 "$dir/t.src"; head -c 199999 /dev/zero; } | cmp -s - tr || fail "truncate up does not read zeroes"
cp "$dir/t.src" fa
fallocate -p -o 10000 -l 500000 fa || fail "punch hole"
fallocate -z -o 600000 -l 100000 fa || fail "zero range"
python3 - "$dir/t.src" "$mnt/fa" <<'EOF' || fail "punch/zero contents"
import sys
a = bytearray(open(sys.argv[1], 'rb').read()); b = open(sys.argv[2], 'rb').read()
a[10000:510000] = bytes(500000); a[600000:700000] = bytes(100000)
sys.exit(0 if a == b else 'fallocate contents differ')
EOF
[ "$(stat -c %b fa)" -lt 1900 ] || fail "punch freed nothing: $(stat -c %b fa) sectors"
fallocate -l 8M pre && [ "$(stat -c %s pre)" = 8388608 ] && [ "$(stat -c %b pre)" -ge 16384 ] || fail "fallocate"
[ "$(tr -d '\0' <pre | wc -c)" = 0 ] || fail "fallocated blocks do not read as zeroes"
fallocate -n -o 8M -l 1M pre && [ "$(stat -c %s pre)" = 8388608 ] || fail "fallocate --keep-size"
echo tail | dd of=pre bs=1 seek=4096 conv=notrunc status=none
[ "$(dd if=pre bs=1 skip=4096 count=5 status=none)" = tail ] || fail "write into unwritten blocks"
ok "truncate down and up; punch hole, zero range, preallocation, writes into unwritten extents"

# --- statfs: free counts fall and come back ---------------------------------------------------------
ffree1=$(stat -f -c %d .)
[ "$ffree1" -lt "$ffree0" ] || fail "free inodes did not fall ($ffree0 -> $ffree1)"
rm -f large sparse fa pre tr
sync
# The space of removed files is freed by the daemon's worker once the kernel forgets them.
for _ in $(seq 200); do
	[ "$(stat -f -c %f .)" -ge $((free0 - 200)) ] && break
	sleep 0.025
done
[ "$(stat -f -c %f .)" -ge $((free0 - 200)) ] || fail "free blocks did not come back: $free0 -> $(stat -f -c %f .)"
ok "statfs: free blocks $free0 -> $(stat -f -c %f .) after deleting; free inodes $ffree0 -> $ffree1"

# --- a directory of 20,000 entries ----------------------------------------------------------------------
mkdir many
t0=$(date +%s%N)
pyfs "
for i in range(20000):
    os.close(os.open('many/e%06d' % i, os.O_CREAT | os.O_WRONLY, 0o644))
" || fail "creating 20,000 files"
t1=$(date +%s%N)
[ "$(ls many | wc -l)" = 20000 ] || fail "ls many: $(ls many | wc -l) entries"
[ "$(ls many | sort -u | wc -l)" = 20000 ] || fail "readdir returned duplicates"
pyfs "
for i in range(0, 20000, 2):
    os.unlink('many/e%06d' % i)
" || fail "unlinking 10,000 files"
[ "$(ls many | wc -l)" = 10000 ] || fail "after unlink: $(ls many | wc -l) entries"
ok "20,000 entries: create $((20000 * 1000000000 / (t1 - t0 + 1)))/s, readdir complete, 10,000 unlinked"

# --- concurrency: six writers racing creates, appends, renames, links, unlinks, rmdirs -----------
stress() {
	local M=$1 w pids=""
	mkdir -p "$M/a" "$M/b"
	for w in 1 2 3 4 5 6; do
		( end=$((SECONDS + $2)); i=0
		  while [ $SECONDS -lt $end ]; do i=$((i + 1))
			d=$([ $((i % 2)) = 0 ] && echo a || echo b)
			echo "$w $i" >"$M/$d/f$w.$i"; head -c $((i % 50 * 300)) /dev/zero >>"$M/$d/f$w.$i"
			mv "$M/$d/f$w.$i" "$M/b/g$((i % 17))"
			mkdir "$M/a/d$w.$((i % 5))"; mv "$M/a/d$w.$((i % 5))" "$M/b/"; rmdir "$M/b/d$w.$((i % 3))"
			ln "$M/b/g$((i % 7))" "$M/a/l$w.$i"; rm -f "$M/a/l$w.$((i - 3))"
			truncate -s $((i % 13 * 1000)) "$M/b/g$((i % 11))"
			ls "$M/a" "$M/b" >/dev/null
		  done ) 2>/dev/null &
		pids="$pids $!"
	done
	# shellcheck disable=SC2086
	wait $pids
}
stress "$mnt/stress" 4
ok "six concurrent writers for 4 s: no hang"

# --- unmount, check, remount, compare -------------------------------------------------------------------
manifest >"$dir/manifest1" || fail "manifest"
umount_fs
db_check "after a clean unmount"
grep -Ei "corrupt|failed" "$log" && fail "the daemon reported errors"
"$DB" -c sb "$img" | grep -q '^state = 1 (clean)' || fail "superblock not clean after unmount"
ok "clean unmount: daemon exited, mendfs_db check clean, superblock clean"
mount_fs
manifest >"$dir/manifest2" || fail "manifest after remount"
diff "$dir/manifest1" "$dir/manifest2" >"$dir/manifest.diff" || { head -20 "$dir/manifest.diff"; fail "content or metadata changed across a remount"; }
ok "remount: $(wc -l <"$dir/manifest1") lines of names, metadata and checksums identical"
"$DB" -c sb "$img" >"$dir/sb.out" 2>&1
used=$(( $(sed -n 's/^icount = //p' "$dir/sb.out") - $(sed -n 's/^ifree = //p' "$dir/sb.out") ))
reach=$(find "$mnt" -printf '%i\n' | sort -u | wc -l)
[ "$used" = "$reach" ] || fail "$used inodes in use but $reach reachable: unlinked inodes leaked"
ok "$used inodes in use, all reachable (unlinked ones were freed)"

# --- crash: SIGKILL after fsync, journal replay -------------------------------------------------------
cd "$mnt" || fail "cd"
head -c 3000000 /dev/urandom >"$dir/crash.src"
dd if="$dir/crash.src" of=synced bs=64k conv=fsync status=none || fail "dd conv=fsync"
mkdir cdir && for i in $(seq 50); do echo "$i" >"cdir/f$i"; done
sync
mv cdir/f1 cdir/renamed; rm cdir/f2
python3 -c "import os; fd = os.open('$mnt/cdir', os.O_RDONLY); os.fsync(fd)"
(for i in $(seq 200); do echo "$i" >"$mnt/cdir/g$i"; done) 2>/dev/null &
bg=$!
sleep 0.05   # let the background load start: the kill lands mid-workload
kill -9 "$pid"
wait "$bg" 2>/dev/null
wait "$pid" 2>/dev/null
pid=""
cd /
fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"
"$DB" -c sb "$img" | grep -q '^state = 2' || fail "superblock not dirty after a crash"
mount_fs
cmp -s "$dir/crash.src" "$mnt/synced" || fail "fsync'd data lost in the crash"
[ -e "$mnt/cdir/renamed" ] && [ ! -e "$mnt/cdir/f1" ] && [ ! -e "$mnt/cdir/f2" ] && [ "$(cat "$mnt/cdir/f50")" = 50 ] || fail "synced metadata lost in the crash"
[ "$(cat "$mnt/keep/sub/file")" = data ] || fail "old data lost in the crash"
umount_fs
db_check "after crash, replay and a clean unmount"
ok "SIGKILL mid-workload: journal replayed, fsync'd data and metadata intact, check clean"
exit 0
