#!/bin/bash
# t_options.sh — mount options and damaged images, mounted for real: the argument shapes
# mount(8) and fstab lines give (rw, dev, suid, noauto, _netdev, x-*: accepted or ignored);
# access times (relatime by default, strictatime, noatime; kept across a remount);
# `-o ro` replays a journal left by a crash while `-o ro,norecovery` serves the image as
# it is on disk; `rw,norecovery` is refused; a damaged journal refuses a read-write (and a
# recovering read-only) mount with a message pointing at ro,norecovery, which then works;
# a directory block damaged on disk fails only the operations on that directory (EUCLEAN
# or EIO), reported once in the log, while the rest works, and the superblock is then
# marked with errors.
set -u
. "$(dirname "$0")/mountlib.sh"
ml_setup t_options

atime() { stat -c %x "$1"; }
# A read that reaches the daemon: the kernel may serve a plain read from its page cache,
# which the daemon never sees (mendfs(8), NOTES).
rd() { dd if="$1" of=/dev/null bs=4096 iflag=direct status=none || fail "O_DIRECT read of $1"; }

"$MKFS" -q "$img" 256M >/dev/null || fail "mkfs"

# 1. what mount(8), mount.fuse3 and fstab lines pass: accepted or ignored
mount_fs -o rw,dev,suid,exec,async,noauto,_netdev,nofail,defaults,x-systemd.automount,comment=x
echo data >"$mnt/f" || fail "write with fstab-style options"
umount_fs
ok "fstab-style options accepted"

mount_refused -o rw,norecovery
grep -q "ro,norecovery" "$dir/out" || fail "rw,norecovery: no word about ro,norecovery: $(cat "$dir/out")"
ok "rw,norecovery refused: $(head -1 "$dir/out")"

# 2. access times
mount_fs
printf 'x%.0s' $(seq 100) >"$mnt/a"
mkdir "$mnt/dir"; : >"$mnt/dir/e"
t0=$(atime "$mnt/a")
rd "$mnt/a"
t1=$(atime "$mnt/a")
[ "$t1" != "$t0" ] || fail "relatime: a read after a write did not update the access time"
rd "$mnt/a"
[ "$(atime "$mnt/a")" = "$t1" ] || fail "relatime: a second read updated the access time"
echo more >>"$mnt/a"
rd "$mnt/a"
t2=$(atime "$mnt/a")
[ "$t2" != "$t1" ] || fail "relatime: a read after another write did not update it"
d0=$(atime "$mnt/dir")
ls "$mnt/dir" >/dev/null
[ "$(atime "$mnt/dir")" != "$d0" ] || fail "relatime: readdir after a change did not update it"
umount_fs
mount_fs
[ "$(atime "$mnt/a")" = "$t2" ] || fail "the access time did not survive a remount: $(atime "$mnt/a") vs $t2"
umount_fs
ok "relatime: updated after changes only, kept across a remount"

mount_fs -o strictatime
rd "$mnt/a"; s1=$(atime "$mnt/a")
sleep 0.01
rd "$mnt/a"; s2=$(atime "$mnt/a")
[ "$s1" != "$s2" ] && [ "$s1" != "$t2" ] || fail "strictatime: reads did not update the access time ($t2, $s1, $s2)"
ls "$mnt/dir" >/dev/null; s3=$(atime "$mnt/dir")
sleep 0.01
ls "$mnt/dir" >/dev/null
[ "$(atime "$mnt/dir")" != "$s3" ] || fail "strictatime: readdir did not update the access time"
umount_fs
ok "strictatime: every read and readdir"

mount_fs -o noatime
grep -q " $mnt fuse.mendfs [^ ]*noatime" /proc/self/mounts || fail "noatime not shown in the mount table"
echo again >>"$mnt/a"
n1=$(atime "$mnt/a")
rd "$mnt/a"; ls "$mnt/dir" >/dev/null
[ "$(atime "$mnt/a")" = "$n1" ] || fail "noatime: a read updated the access time"
umount_fs
ok "noatime: never"

# 3. read-only mounts and the journal
mount_fs
echo committed >"$mnt/c"
sync "$mnt/c"
crash
: >"$log"
mount_fs -o ro,norecovery
grep -q "not replayed" "$log" || fail "ro,norecovery over a journal with records: no warning"
touch "$mnt/new" 2>/dev/null && fail "ro,norecovery mount is writable"
umount_fs
mount_fs -o ro
[ "$(cat "$mnt/c" 2>/dev/null)" = committed ] || fail "ro: the journal was not replayed first"
touch "$mnt/new" 2>/dev/null && fail "ro mount is writable"
umount_fs
"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { cat "$dir/db.out"; fail "check after the ro replay"; }
grep -q "records to replay" "$dir/db.out" && fail "ro left records in the journal"
ok "ro replays a journal left by a crash; ro,norecovery serves the image as it is"

# a damaged journal header (both copies)
bs=$("$DB" -c sb "$img" | sed -n 's/^blocksize = //p')
ls=$("$DB" -c sb "$img" | sed -n 's/^logstart = //p')
[ -n "$bs" ] && [ -n "$ls" ] || fail "no blocksize/logstart from mendfs_db"
dd if=/dev/urandom of="$img" bs="$bs" seek="$ls" count=2 conv=notrunc status=none
mount_refused
grep -q "journal" "$dir/out" && grep -q "ro,norecovery" "$dir/out" ||
	fail "damaged journal, rw: the message does not name the journal and ro,norecovery: $(cat "$dir/out")"
ok "damaged journal refuses rw: $(grep -m1 refusing "$dir/out")"
mount_refused -o ro
grep -q "ro,norecovery" "$dir/out" || fail "damaged journal, ro: no word about norecovery"
mount_fs -o ro,norecovery
[ "$(cat "$mnt/c")" = committed ] || fail "ro,norecovery over a damaged journal: the data is not readable"
umount_fs
ok "damaged journal: ro,norecovery reads the files"

# 4. a directory block damaged on disk: only that directory fails, reported once
rm -f "$img"
"$MKFS" -q "$img" 256M >/dev/null || fail "mkfs"
: >"$log"
mount_fs
mkdir "$mnt/bad" "$mnt/good"
for i in $(seq 300); do : >"$mnt/bad/a_rather_long_file_name_number_$i"; done
echo fine >"$mnt/good/f"
dino=$(stat -c %i "$mnt/bad")
umount_fs
root=$("$DB" -c "inode $dino" "$img" | sed -n 's/^data fork btree root \([0-9]*\),.*/\1/p')
[ -n "$root" ] || fail "directory $dino is not in btree format"
dd if=/dev/urandom of="$img" bs="$bs" seek="$root" count=1 conv=notrunc status=none
: >"$log"
mount_fs
for i in 1 2 3; do
	out=$(ls "$mnt/bad" 2>&1) && fail "listing the damaged directory succeeded"
	echo "$out" | grep -q "Structure needs cleaning\|Input/output error" ||
		fail "listing the damaged directory: $out"
done
stat "$mnt/bad/a_rather_long_file_name_number_7" >/dev/null 2>&1 && fail "lookup in the damaged directory worked"
[ "$(cat "$mnt/good/f")" = fine ] || fail "a file in another directory is unreadable"
echo new >"$mnt/good/g" && [ "$(cat "$mnt/good/g")" = new ] || fail "creating a file elsewhere failed"
n=$(grep -c "block $root" "$log")
[ "$n" -ge 1 ] || fail "the damaged block $root is not named in the log"
[ "$n" -eq 1 ] || fail "the damaged block was reported $n times, expected once"
umount_fs
"$DB" -c sb "$img" | grep -q "^state = .*errors" || fail "the superblock is not marked with errors: $("$DB" -c sb "$img" | grep state)"
: >"$log"
mount_fs -o ro
grep -q "not yet repaired" "$log" || fail "no warning at the next mount about the errors"
umount_fs
ok "damaged directory: EUCLEAN/EIO for it only, one message, superblock marked with errors"

# 5. commit=SECS: changes committed without fsync reach the journal on disk by themselves
#    (the kernel never sends syncfs to FUSE); commit=0 leaves them to fsync
rm -f "$img"
"$MKFS" -q "$img" 256M >/dev/null || fail "mkfs"
: >"$log"
mount_fs -o commit=0
name0=unforced_marker_$$
: >"$mnt/$name0"
sleep 1.5
grep -qa "$name0" "$img" && fail "commit=0: a change reached the disk without fsync"
umount_fs
mount_fs -o commit=1
name1=forced_marker_$$
: >"$mnt/$name1"
# durable = a complete journal record with it, as a replay would see it in a copy taken now
found=0
for _ in $(seq 100); do
	if grep -qa "$name1" "$img"; then
		cp --sparse=always "$img" "$dir/snap"
		"$DB" -c check "$dir/snap" 2>/dev/null | grep -q "not clean ([1-9][0-9]* records" &&
			{ found=1; break; }
	fi
	sleep 0.2
done
rm -f "$dir/snap"
[ "$found" = 1 ] || fail "commit=1: the new name did not reach the journal on disk within 20 s"
crash
mount_fs
[ -e "$mnt/$name1" ] || fail "commit=1: the file is gone after a crash"
umount_fs
ok "commit=1 makes changes durable without fsync; commit=0 leaves them to fsync"
exit 0
