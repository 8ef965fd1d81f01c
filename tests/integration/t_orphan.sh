#!/bin/bash
# t_orphan.sh — unlinked-but-open files (the orphan lists): a file unlinked while open keeps
# its data for its users and is freed at the last close (statfs back to its baseline), in
# any order of closes (removals from the middle of a list); files unlinked while open when
# the daemon is killed (SIGKILL) are freed by the next mount, after journal replay; every
# image is then clean for `mendfs_db check` (which also checks the lists).  A file and a
# directory still named but with their link counts damaged to 0 offline are reported when
# looked up and never freed when the kernel forgets them; the scrub counts their links.
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/repairlib.sh"        # scrub_repairing
ml_setup t_orphan

db_check() {
	"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { cat "$dir/db.out"; fail "mendfs_db check: $1"; }
	for a in 0 1 2 3; do
		"$DB" -c "agh $a" "$img" 2>/dev/null | grep -qx "unlinked = 0" ||
			fail "$1: AG $a orphan list not empty"
	done
}

counts() { stat -f -c "%f %d" "$mnt"; }

wait_counts() {         # bounded (30 s: the daemon's worker frees them, a loaded machine)
	for _ in $(seq 1200); do
		[ "$(counts)" = "$1" ] && return 0
		sleep 0.025
	done
	return 1
}

"$MKFS" -q -a 4 "$img" 256M >/dev/null || fail "mkfs"
mount_fs
base=$(counts)

# 1. one file: unlinked while open, written and read after, freed at the close
python3 - "$mnt" <<'PY' || fail "unlinked-but-open file"
import os, sys
m = sys.argv[1]
fd = os.open(m + "/a", os.O_CREAT | os.O_RDWR, 0o644)
data = os.urandom(1 << 20) * 4
os.write(fd, data)
os.unlink(m + "/a")
assert not os.path.exists(m + "/a")
assert os.fstat(fd).st_nlink == 0
os.pwrite(fd, b"tail" * 1024, len(data))
os.fsync(fd)
assert os.pread(fd, len(data), 0) == data, "data of the unlinked file changed"
assert os.pread(fd, 4096, len(data)) == b"tail" * 1024
st = os.statvfs(m)
print(st.f_bfree)
os.close(fd)
PY
wait_counts "$base" || fail "space not back after the last close: $(counts), baseline $base"
ok "unlinked-but-open file usable, freed at the last close"

# 2. several orphans (files and an open directory) closed in an order that takes them off
#    the middle of the list
python3 - "$mnt" <<'PY' || fail "several orphans"
import os, sys
m = sys.argv[1]
fds = []
for i in range(8):
    fd = os.open("%s/f%d" % (m, i), os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, bytes([65 + i]) * (100000 * (i + 1)))
    fds.append(fd)
os.mkdir(m + "/d")
dfd = os.open(m + "/d", os.O_RDONLY | os.O_DIRECTORY)
for i in range(8):
    os.unlink("%s/f%d" % (m, i))
os.rmdir(m + "/d")
for i in (3, 6, 0, 5, 1, 7, 2, 4):
    assert os.pread(fds[i], 10, 1000) == bytes([65 + i]) * 10
    os.close(fds[i])
os.close(dfd)
PY
wait_counts "$base" || fail "space not back after closing 8 orphans: $(counts), baseline $base"
ok "eight orphans and a removed directory freed, closed out of order"

# 3. the same while renames replace open files
python3 - "$mnt" <<'PY' || fail "rename over open files"
import os, sys
m = sys.argv[1]
fds = []
for i in range(4):
    fd = os.open("%s/r%d" % (m, i), os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, b"r" * 300000)
    fds.append(fd)
    open("%s/n%d" % (m, i), "w").write("new")
    os.rename("%s/n%d" % (m, i), "%s/r%d" % (m, i))
for fd in reversed(fds):
    assert os.pread(fd, 3, 0) == b"rrr"
    os.close(fd)
for i in range(4):
    os.unlink("%s/r%d" % (m, i))
PY
wait_counts "$base" || fail "space not back after rename over open files: $(counts), baseline $base"
ok "files replaced by rename while open are freed at their close"
umount_fs
db_check "after clean unmount"
mount_fs

# 3b. six threads creating, unlinking while open and closing in random order at once
python3 - "$mnt" <<'PY' || fail "concurrent orphans"
import os, random, sys, threading
m = sys.argv[1]
errors = []
def worker(t):
    r = random.Random(t)
    held = []
    try:
        for i in range(150):
            p = "%s/t%d_%d" % (m, t, i)
            fd = os.open(p, os.O_CREAT | os.O_RDWR, 0o644)
            data = bytes([i % 251]) * r.randint(1, 40000)
            os.write(fd, data)
            if r.random() < 0.7:
                os.unlink(p)
                held.append((fd, data))
            else:
                os.close(fd)
                os.unlink(p)
            if held and r.random() < 0.4:
                fd, data = held.pop(r.randrange(len(held)))
                assert os.pread(fd, len(data), 0) == data, "orphan data changed"
                os.close(fd)
        r.shuffle(held)
        for fd, data in held:
            assert os.pread(fd, len(data), 0) == data, "orphan data changed"
            os.close(fd)
    except Exception as e:
        errors.append(repr(e))
ts = [threading.Thread(target=worker, args=(t,)) for t in range(6)]
for t in ts: t.start()
for t in ts: t.join()
assert not errors, errors
assert os.listdir(m) == [], os.listdir(m)
PY
umount_fs
db_check "after concurrent orphans"
"$DB" -c check "$img" | grep -q "check: clean (4 AGs, [0-9]* free blocks, 64 inodes, 63 free)" ||
	fail "inodes left after concurrent orphans: $("$DB" -c check "$img" | tail -1)"
for a in 0 1 2 3; do
	"$DB" -c "btree $a rmap" "$img" | grep -q "owner [0-9]" &&
		fail "AG $a: blocks still owned by an inode after concurrent orphans"
done
ok "900 files from six threads, most unlinked while open, all freed"

# 4. crash with orphans open: the next mount frees them
mount_fs
base=$(counts)       # the AG trees may keep a few more blocks after the load above
python3 - "$mnt" "$pid" <<'PY' || fail "orphans at crash"
import os, sys, signal
m, daemon = sys.argv[1], int(sys.argv[2])
fds = []
for i in range(5):
    fd = os.open("%s/c%d" % (m, i), os.O_CREAT | os.O_RDWR, 0o644)
    os.write(fd, os.urandom(700000))
    fds.append(fd)
open(m + "/keep", "w").write("kept")
for i in range(5):
    os.unlink("%s/c%d" % (m, i))
os.write(fds[2], b"more" * 10000)
os.fsync(fds[2])              # forces the journal: the unlinks are durable
os.kill(daemon, signal.SIGKILL)
PY
wait "$pid" 2>/dev/null
pid=""
fusermount3 -uz "$mnt" 2>/dev/null
mount_fs
grep -q "freed 5 inodes unlinked while in use" "$log" || fail "the mount did not report freeing 5 orphans"
[ "$(cat "$mnt/keep")" = kept ] || fail "a file written before the crash is missing"
rm "$mnt/keep"
wait_counts "$base" || fail "space not back after recovery: $(counts), baseline $base"
ok "orphans left by a crash freed by the next mount"
umount_fs
db_check "after recovery"

# 5. a crash without orphans: nothing to free, nothing reported
mount_fs
echo x > "$mnt/y"
sync "$mnt/y"
kill -9 "$pid"; wait "$pid" 2>/dev/null; pid=""
fusermount3 -uz "$mnt" 2>/dev/null
: >"$log"
mount_fs
grep -q "unlinked while in use" "$log" && fail "a mount after a crash without orphans freed some"
umount_fs
db_check "after a crash without orphans"
ok "clean images after every step"

# 6. a link count damaged to 0 is not an unlink: a file and a directory still named, with
#    nlink 0 written offline, are looked up (reported as corruption), forgotten by the kernel
#    (drop_caches) and left alone — not freed — by the daemon; their data and the directory's
#    children survive a remount, and the scrub counts their links again.
mount_fs
mkdir "$mnt/D" || fail "mkdir D"
head -c 300000 /dev/urandom >"$mnt/F" || fail "F"
for i in 1 2 3; do head -c $((i * 40000)) /dev/urandom >"$mnt/D/c$i" || fail "D/c$i"; done
(cd "$mnt" && md5sum F D/c1 D/c2 D/c3) >"$dir/sums" || fail "md5sum"
fino=$(stat -c %i "$mnt/F") dino=$(stat -c %i "$mnt/D")
umount_fs
"$DB" -w -c "write inode $fino nlink 0" -c "write inode $dino nlink 0" "$img" >"$dir/wout" 2>&1 ||
	{ cat "$dir/wout"; fail "damaging the link counts"; }
: >"$log"
mount_fs
stat "$mnt/F" "$mnt/D" >/dev/null || fail "stat of the damaged inodes"
ls -l "$mnt/D" >/dev/null || fail "ls of the damaged directory"
(cd "$mnt" && md5sum -c --quiet "$dir/sums") || fail "contents with link count 0"
grep -q "inode $fino: link count 0, but directory" "$log" && grep -q "inode $dino: link count 0" "$log" ||
	{ cat "$log"; fail "the damaged link counts were not reported"; }
cd /
sync
echo 2 >/proc/sys/vm/drop_caches      # the kernel forgets them
umount_fs
mount_fs
(cd "$mnt" && md5sum -c --quiet "$dir/sums") || fail "contents after forget and remount"
[ "$(ls "$mnt/D" | tr '\n' ' ')" = "c1 c2 c3 " ] || fail "D holds: $(ls "$mnt/D" | tr '\n' ' ')"
scrub_repairing "$dir/scrub"      # again when memory pressure stopped the repair
rc=$?
[ $rc -eq 0 ] || { cat "$dir/scrub.all"; fail "mendfs_scrub exit $rc after the link count damage"; }
grep -q "link counts" "$dir/scrub.all" || { cat "$dir/scrub.all"; fail "mendfs_scrub did not repair the link counts"; }
[ "$(stat -c %h "$mnt/F") $(stat -c %h "$mnt/D")" = "1 2" ] ||
	fail "links after the scrub: F $(stat -c %h "$mnt/F"), D $(stat -c %h "$mnt/D")"
umount_fs
"$BIN/mendfs_repair" -n "$img" >"$dir/rep" 2>&1 || { cat "$dir/rep"; fail "mendfs_repair -n after the scrub"; }
ok "a named inode with link count 0 reported, not freed at forget; the scrub counts its links"
exit 0
