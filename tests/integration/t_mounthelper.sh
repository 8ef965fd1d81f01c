#!/bin/bash
# t_mounthelper.sh — mendfs as mount(8) runs it: `mount -t fuse.mendfs -o OPTS IMAGE DIR`
# and an fstab line (`mount -T FSTAB DIR`).  mount(8) runs /sbin/mount.fuse3, which runs
# `mendfs IMAGE DIR -o OPTS` from a fixed PATH, so the built daemon is installed as
# /usr/local/sbin/mendfs for the test (skipped when a different mendfs is there already)
# and removed afterwards.  The daemon runs in the background, as it does for users:
# `umount` ends it, and the test waits for it to exit before checking the image.
set -u
. "$(dirname "$0")/mountlib.sh"

[ "$(id -u)" = 0 ] || { echo "skip: mount(8) needs root"; exit 77; }
[ -x /sbin/mount.fuse3 ] || [ -x /sbin/mount.fuse ] || [ -x /usr/sbin/mount.fuse3 ] ||
	{ echo "skip: no FUSE mount helper (mount.fuse3)"; exit 77; }
command -v mount >/dev/null && command -v umount >/dev/null || { echo "skip: no mount(8)"; exit 77; }
mount --help 2>&1 | grep -q -- "--fstab" || { echo "skip: mount(8) has no --fstab"; exit 77; }

# One test at a time may own the installed binary.
exec 9>/tmp/mendfs-t_mounthelper.lock
flock -w 300 9 || { echo "FAIL: another t_mounthelper held the lock for 5 minutes"; exit 1; }

inst=/usr/local/sbin/mendfs
installed=0
if [ -e "$inst" ] && ! cmp -s "$inst" "$MENDFS"; then
	echo "skip: $inst exists and is not this build"
	exit 77
fi
remove_installed() { [ "$installed" = 1 ] && rm -f "$inst"; }
ml_extra_cleanup=remove_installed
ml_setup t_mounthelper
if [ ! -e "$inst" ]; then
	install -D -m 755 "$MENDFS" "$inst" || fail "cannot install $inst"
	installed=1
fi

# The daemon started by the helper: the process whose program is mendfs with our image.
daemon_pid() {
	local p
	for p in /proc/[0-9]*; do
		tr '\0' ' ' 2>/dev/null <"$p/cmdline" | grep -q "^[^ ]*mendfs .*$img" && { echo "${p#/proc/}"; return 0; }
	done
	return 1
}

# helper_umount: umount(8), then wait (bounded) for the background daemon to exit
helper_umount() {
	local d
	d=$(daemon_pid) || fail "no daemon process for $img"
	cd /
	umount "$mnt" || fail "umount failed"
	for _ in $(seq 1200); do
		[ -d "/proc/$d" ] || return 0
		sleep 0.025
	done
	fail "the daemon $d did not exit within 30 s of umount"
}

check_clean() {
	"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { cat "$dir/db.out"; fail "mendfs_db check: $1"; }
	"$DB" -c sb "$img" | grep -q "^state = 1 (clean)" || fail "$1: not marked clean"
}

"$MKFS" -q "$img" 128M >/dev/null || fail "mkfs"

# 1. mount -t fuse.mendfs
mount -t fuse.mendfs -o rw "$img" "$mnt" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "mount -t fuse.mendfs"; }
mounted "$mnt" || fail "mount -t fuse.mendfs returned but nothing is mounted"
echo "through mount(8)" >"$mnt/hello" || fail "write"
mkdir "$mnt/sub" && cp "$mnt/hello" "$mnt/sub/copy" || fail "mkdir/cp"
[ "$(cat "$mnt/sub/copy")" = "through mount(8)" ] || fail "read back"
helper_umount
check_clean "after mount -t and umount"
ok "mount -t fuse.mendfs -o rw IMAGE DIR, then umount"

mount -t fuse.mendfs -o ro "$img" "$mnt" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "mount -o ro"; }
[ "$(cat "$mnt/hello")" = "through mount(8)" ] || fail "ro: read"
touch "$mnt/new" 2>/dev/null && fail "ro: a file could be created"
helper_umount
ok "mount -t fuse.mendfs -o ro"

# 2. an fstab line, with the options fstab lines carry
cat >"$dir/fstab" <<EOT
# a test fstab
$img	$mnt	fuse.mendfs	rw,noatime,noauto,nofail,_netdev,x-mendfs.test=1	0	0
EOT
mount -T "$dir/fstab" "$mnt" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "mount -T fstab"; }
mounted "$mnt" || fail "mount from the fstab line: nothing mounted"
grep -q " $mnt fuse.mendfs [^ ]*noatime" /proc/self/mounts || fail "fstab: noatime not applied"
[ "$(cat "$mnt/sub/copy")" = "through mount(8)" ] || fail "fstab: old data"
echo fstab >"$mnt/f2" || fail "fstab: write"
helper_umount
check_clean "after the fstab mount"
ok "fstab line (rw,noatime,noauto,nofail,_netdev,x-*) mounted with mount -T and unmounted"
exit 0
