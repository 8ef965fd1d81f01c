#!/bin/bash
# t_posix.sh — the POSIX behaviour suite (tests/tools/posix_suite.c) against a real mount:
# regular files, directories, rename, links, special files, attributes and times,
# setuid/setgid clearing, name limits, statfs, unlinked-but-open files, exact lookup
# counts, readdir cookies, and the permission checks of an unprivileged user (nobody).
# The filesystem is mounted with allow_other (default_permissions is mendfs's default);
# after a clean unmount (waiting for the daemon) `mendfs_db check` must be clean and the
# daemon's log free of errors, and what the suite left must survive a remount.  Then the
# suite runs again with -o writeback_cache, and on an image of 64 KiB blocks.
set -u
# shellcheck source=mountlib.sh
. "$(dirname "$0")/mountlib.sh"
TOOLS=${TOOLS:-${O:-$(dirname "$BIN")}/tools}
SUITE=$TOOLS/posix_suite

[ "$(id -u)" = 0 ] || { echo "skip: the suite needs root (it switches to nobody)"; exit 77; }
[ -x "$SUITE" ] || { echo "FAIL: $SUITE is not built"; exit 1; }

ml_setup t_posix
chmod 755 "$dir"   # nobody must reach the mount point

"$MKFS" -q "$img" 4G >"$dir/mkfs.out" 2>&1 || { cat "$dir/mkfs.out"; fail "mkfs"; }
mount_fs -o allow_other
mkdir "$mnt/posix" && chmod 755 "$mnt/posix" || fail "mkdir in the mount"
bounded 300 "$SUITE" -v "$mnt/posix"
rc=$?
# What the suite left (names, types, modes, links, owners, sizes, device numbers,
# nanosecond modification and change times, symlink targets, contents of files under
# 100 MB) must survive a remount; access times move with the reading itself.
manifest() {
	(cd "$mnt/posix" && find . -printf '%p %y %m %n %U %G %s %T@ %C@ %l\n' | sort &&
	 find . \( -type b -o -type c \) -printf '%p ' -exec stat -c '%t %T' {} \; | sort &&
	 find . -type f -size -100M -print0 | sort -z | xargs -0 md5sum)
}
manifest >"$dir/manifest1" || fail "manifest"
umount_fs
"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { cat "$dir/db.out"; fail "mendfs_db check after the suite"; }
grep -Ei "corrupt|failed|error" "$log" && fail "the daemon reported errors"
[ "$rc" -eq 0 ] || fail "posix_suite: some tests failed"
echo "ok: posix suite passed; clean unmount; mendfs_db check clean"
mount_fs -o allow_other
manifest >"$dir/manifest2" || fail "manifest after remount"
diff "$dir/manifest1" "$dir/manifest2" >"$dir/manifest.diff" || { head -20 "$dir/manifest.diff"; fail "what the suite left changed across a remount"; }
umount_fs
echo "ok: remount: $(wc -l <"$dir/manifest1") lines of names, metadata and checksums identical"

# Again with the kernel's writeback cache (-o writeback_cache).
"$MKFS" -q -f "$img" 4G >"$dir/mkfs.out" 2>&1 || { cat "$dir/mkfs.out"; fail "mkfs"; }
mount_fs -o allow_other,writeback_cache
mkdir "$mnt/posix" && chmod 755 "$mnt/posix" || fail "mkdir in the mount"
bounded 300 "$SUITE" "$mnt/posix" >"$dir/suitewb.out"
rc=$?
umount_fs
grep -v '^ok' "$dir/suitewb.out"
"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { cat "$dir/db.out"; fail "mendfs_db check after the suite, writeback cache"; }
[ "$rc" -eq 0 ] || fail "posix_suite: some tests failed with the writeback cache"
echo "ok: posix suite passed with the writeback cache; mendfs_db check clean"

# Once more with 64 KiB blocks: blocks larger than a page, partial blocks everywhere.
"$MKFS" -q -f -b 65536 "$img" 4G >"$dir/mkfs.out" 2>&1 || { cat "$dir/mkfs.out"; fail "mkfs -b 65536"; }
mount_fs -o allow_other
mkdir "$mnt/posix" && chmod 755 "$mnt/posix" || fail "mkdir in the mount"
bounded 300 "$SUITE" "$mnt/posix" >"$dir/suite64k.out"
rc=$?
umount_fs
grep -v '^ok' "$dir/suite64k.out"
"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { cat "$dir/db.out"; fail "mendfs_db check after the suite, 64 KiB blocks"; }
[ "$rc" -eq 0 ] || fail "posix_suite: some tests failed with 64 KiB blocks"
grep -Ei "corrupt|failed|error" "$log" && fail "the daemon reported errors"
echo "ok: posix suite passed with 64 KiB blocks; mendfs_db check clean"
exit 0
