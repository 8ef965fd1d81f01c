#!/bin/bash
# t_mkfs.sh — mkfs.mendfs end to end: sparse images of 16 MiB, 1 GiB, 1 TiB and 16 TiB get
# the expected geometry, stay sparse and pass `mendfs_db check` (every AG header and btree
# verified and cross-checked); an ext4 image is refused without -f and wiped with it; bad
# sizes and options are usage errors that write nothing; -n writes nothing; an existing
# mendfs is refused without -f; a locked (mounted) image is refused.
set -u
BIN=${BIN:?BIN must name the directory of the built programs}
MKFS=$BIN/mkfs.mendfs
DB=$BIN/mendfs_db
dir=$(mktemp -d /tmp/t_mkfs.XXXXXX) || exit 1
shmdir=""
loopdev=""
trap '[ -n "$loopdev" ] && losetup -d "$loopdev"; rm -rf "$dir" ${shmdir:+"$shmdir"}' EXIT

fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok: $*"; }
sum() { if [ -e "$1" ]; then sha256sum "$1" | cut -d' ' -f1; else echo absent; fi; }

# field NAME FILE: the value of "NAME = value" in mendfs_db output
field() { sed -n "s/^$1 = //p" "$2" | head -1; }

# check_size LABEL IMG SIZE AGCOUNT AGBLOCKS DBLOCKS
check_size() {
	local label=$1 img=$2 size=$3 agc=$4 agb=$5 dbl=$6 out=$dir/out kb
	"$MKFS" -q "$img" "$size" >"$out" 2>&1 || { cat "$out"; fail "$label: mkfs failed"; }
	"$DB" -c sb "$img" >"$out" 2>&1 || { cat "$out"; fail "$label: mendfs_db sb failed"; }
	[ "$(field agcount "$out")" = "$agc" ] || fail "$label: agcount $(field agcount "$out"), expected $agc"
	[ "$(field agblocks "$out")" = "$agb" ] || fail "$label: agblocks $(field agblocks "$out"), expected $agb"
	[ "$(field dblocks "$out")" = "$dbl" ] || fail "$label: dblocks $(field dblocks "$out"), expected $dbl"
	[ "$(field state "$out")" = "1 (clean)" ] || fail "$label: state $(field state "$out")"
	"$DB" -c check "$img" >"$out" 2>&1 || { cat "$out"; fail "$label: mendfs_db check found problems"; }
	kb=$(du -k "$img" | cut -f1)
	[ "$kb" -le 8192 ] || fail "$label: the image uses $kb KiB on disk (not sparse enough)"
	ok "$label: $agc AGs of $agb blocks, $dbl blocks, check clean, $kb KiB on disk"
	rm -f "$img"
}
check_size "16 MiB" "$dir/a.img" 16M 4 1024 4096
check_size "1 GiB" "$dir/a.img" 1G 4 65536 262144
check_size "1 TiB" "$dir/a.img" 1T 4 67108864 268435456
# 16 TiB: ext4 cannot hold a 16 TiB file (its limit is 16 TiB - 4 KiB); tmpfs can.
bigdir=$dir
if ! truncate -s 16T "$dir/probe" 2>/dev/null; then
	bigdir=""
	if [ -d /dev/shm ] && shmdir=$(mktemp -d /dev/shm/t_mkfs.XXXXXX) &&
	   truncate -s 16T "$shmdir/probe" 2>/dev/null; then
		bigdir=$shmdir
	fi
fi
rm -f "$dir/probe" ${shmdir:+"$shmdir/probe"}
if [ -n "$bigdir" ]; then
	check_size "16 TiB" "$bigdir/big.img" 16T 16 268435456 4294967296
else
	echo "skip: 16 TiB: neither $dir nor /dev/shm can hold a 16 TiB sparse file"
fi
# Other block and inode sizes still make valid filesystems.
for opt in "-b 1024" "-b 65536" "-b 65536 -I 2048" "-b 2048 -I 512 -a 7" "-A 32M"; do
	# shellcheck disable=SC2086
	"$MKFS" -q $opt "$dir/o.img" 256M >"$dir/out" 2>&1 || { cat "$dir/out"; fail "mkfs $opt failed"; }
	"$DB" -c check "$dir/o.img" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "mkfs $opt: check found problems"; }
	rm -f "$dir/o.img"
done
ok "block sizes 1K/64K, inode size 2048, 7 AGs, -A 32M: check clean"

# -n computes and prints, writes nothing.
"$MKFS" -n "$dir/n.img" 1G >"$dir/out" 2>&1 || { cat "$dir/out"; fail "-n failed"; }
grep -q "agcount=4" "$dir/out" || { cat "$dir/out"; fail "-n did not print the geometry"; }
[ -e "$dir/n.img" ] && fail "-n created the image"
truncate -s 64M "$dir/n.img"
before=$(sum "$dir/n.img")
"$MKFS" -n "$dir/n.img" >/dev/null 2>&1 || fail "-n on an existing image failed"
[ "$(sum "$dir/n.img")" = "$before" ] || fail "-n changed the image"
ok "-n prints the geometry and writes nothing"

# Bad sizes and options: usage error (exit 1), nothing created, an existing image unchanged.
"$MKFS" -q "$dir/m.img" 64M >/dev/null 2>&1 || fail "mkfs of m.img failed"
msum=$(sum "$dir/m.img")
label32=$(printf 'x%.0s' $(seq 32))
while IFS='|' read -r name args; do
	[ -n "$name" ] || continue
	for target in new existing; do
		if [ $target = new ]; then img=$dir/new.img; else img=$dir/m.img; fi
		# shellcheck disable=SC2086
		eval "set -- $args"
		"$MKFS" -f "$@" "$img" ${SIZE-64M} >"$dir/out" 2>&1
		rc=$?
		[ $rc -eq 1 ] || { cat "$dir/out"; fail "$name ($target): exit $rc, expected 1"; }
		grep -qi "usage" "$dir/out" || { cat "$dir/out"; fail "$name ($target): no usage message"; }
		if [ $target = new ]; then
			[ -e "$img" ] && fail "$name: the image was created"
		else
			[ "$(sum "$img")" = "$msum" ] || fail "$name: the existing image was changed"
		fi
	done
	unset SIZE
	echo "ok: refused with a usage error: $name"
done <<EOT
block size not a power of two|-b 3000
block size too small|-b 512
block size too large|-b 128K
inode size too small|-I 128
inode size larger than the block|-b 1024 -I 2048
-a with -A|-a 4 -A 16M
AG count zero|-a 0
AG size not a block multiple|-A 1000000
AG size too small|-A 16K
label longer than 31 bytes|-L $label32
bad UUID|-U not-a-uuid
journal too small|-J 4K
journal larger than AG 0|-J 60M
unknown option|-Z
EOT
for size in 1M 15M 12X 0 -5 1.5G; do
	for target in new existing; do
		if [ $target = new ]; then img=$dir/new.img; else img=$dir/m.img; fi
		"$MKFS" -f "$img" "$size" >"$dir/out" 2>&1
		rc=$?
		[ $rc -eq 1 ] || { cat "$dir/out"; fail "size $size ($target): exit $rc, expected 1"; }
		if [ $target = new ]; then
			[ -e "$img" ] && fail "size $size: the image was created"
		else
			[ "$(sum "$img")" = "$msum" ] || fail "size $size: the existing image was changed"
		fi
	done
done
ok "bad sizes (1M 15M 12X 0 -5 1.5G) refused, nothing written"

# A second mkfs on an existing mendfs refuses without -f, naming what it found.
"$MKFS" -q -L first "$dir/m.img" >"$dir/out" 2>&1
rc=$?
[ $rc -eq 1 ] || fail "mkfs over an existing mendfs: exit $rc, expected 1"
grep -q "contains a mendfs filesystem" "$dir/out" || { cat "$dir/out"; fail "no mendfs named in: $(cat "$dir/out")"; }
[ "$(sum "$dir/m.img")" = "$msum" ] || fail "the refused mkfs changed the image"
"$MKFS" -q -f -L second "$dir/m.img" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "mkfs -f over mendfs failed"; }
"$DB" -c sb "$dir/m.img" | grep -q '^label = "second"' || fail "mkfs -f did not write the new label"
ok "existing mendfs refused without -f, replaced with -f"

# A locked image (a mounted one: the daemon holds the same flock) is refused.
if command -v flock >/dev/null 2>&1; then
	msum=$(sum "$dir/m.img")
	flock -n "$dir/m.img" "$MKFS" -q -f "$dir/m.img" >"$dir/out" 2>&1
	rc=$?
	[ $rc -eq 1 ] || { cat "$dir/out"; fail "mkfs on a locked image: exit $rc, expected 1"; }
	grep -q "in use" "$dir/out" || { cat "$dir/out"; fail "locked image: no 'in use' message"; }
	[ "$(sum "$dir/m.img")" = "$msum" ] || fail "mkfs on a locked image changed it"
	ok "a locked (mounted) image is refused"
fi

# An ext4 image is refused without -f, naming it; -f wipes it so blkid no longer sees ext4.
if command -v mkfs.ext4 >/dev/null 2>&1 && command -v blkid >/dev/null 2>&1; then
	truncate -s 64M "$dir/e.img"
	mkfs.ext4 -q -F -L oldfs "$dir/e.img" >/dev/null 2>&1 || fail "mkfs.ext4 failed"
	esum=$(sum "$dir/e.img")
	"$MKFS" -q "$dir/e.img" >"$dir/out" 2>&1
	rc=$?
	[ $rc -eq 1 ] || fail "mkfs over ext4: exit $rc, expected 1"
	grep -q "contains an ext4 filesystem labelled 'oldfs'; use -f" "$dir/out" ||
		fail "ext4 not named: $(cat "$dir/out")"
	[ "$(sum "$dir/e.img")" = "$esum" ] || fail "the refused mkfs changed the ext4 image"
	"$MKFS" -q -f "$dir/e.img" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "mkfs -f over ext4 failed"; }
	if blkid -p "$dir/e.img" 2>/dev/null | grep -q ext4; then
		fail "blkid still sees ext4 after mkfs -f: $(blkid -p "$dir/e.img")"
	fi
	"$DB" -c check "$dir/e.img" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "check after mkfs -f over ext4"; }
	ok "ext4 refused without -f; -f wipes it (blkid -p no longer reports ext4)"
else
	echo "skip: ext4 refusal: mkfs.ext4 or blkid is not installed (apt-get install e2fsprogs util-linux)"
fi
# A DOS partition table is refused (named) and wiped with -f.
truncate -s 64M "$dir/p.img"
printf '\x00\x20\x21\x00\x83\xfe\xff\xff\x00\x08\x00\x00\x00\xf8\x01\x00' |
	dd of="$dir/p.img" bs=1 seek=446 conv=notrunc status=none
printf '\x55\xaa' | dd of="$dir/p.img" bs=1 seek=510 conv=notrunc status=none
if command -v blkid >/dev/null 2>&1 && blkid -p "$dir/p.img" 2>/dev/null | grep -q 'PTTYPE="dos"'; then
	"$MKFS" -q "$dir/p.img" >"$dir/out" 2>&1 && fail "mkfs over a partition table succeeded without -f"
	grep -q "contains a dos partition table" "$dir/out" || fail "partition table not named: $(cat "$dir/out")"
	"$MKFS" -q -f "$dir/p.img" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "mkfs -f over a partition table"; }
	blkid -p "$dir/p.img" 2>/dev/null | grep -q PTTYPE && fail "blkid still sees the partition table"
	ok "a dos partition table is refused without -f and wiped with -f"
else
	echo "skip: partition table: blkid missing or does not see the hand-made table"
fi

# A block device (loop): the whole device, or SIZE below it; SIZE above it is refused.
if [ "$(id -u)" = 0 ] && command -v losetup >/dev/null 2>&1 && truncate -s 128M "$dir/l.img" &&
   loopdev=$(losetup -f --show "$dir/l.img" 2>/dev/null) && [ -b "$loopdev" ]; then
	"$MKFS" -q "$loopdev" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "mkfs on $loopdev"; }
	"$DB" -c sb "$loopdev" >"$dir/out" 2>&1 || fail "mendfs_db on $loopdev"
	[ "$(field dblocks "$dir/out")" = 32768 ] || fail "$loopdev: dblocks $(field dblocks "$dir/out"), expected 32768"
	"$MKFS" -q "$loopdev" >/dev/null 2>&1 && fail "second mkfs on $loopdev succeeded without -f"
	"$MKFS" -q -f "$loopdev" 64M >"$dir/out" 2>&1 || { cat "$dir/out"; fail "mkfs -f $loopdev 64M"; }
	"$DB" -c sb -c check "$loopdev" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "check on $loopdev"; }
	[ "$(field dblocks "$dir/out")" = 16384 ] || fail "$loopdev 64M: dblocks $(field dblocks "$dir/out")"
	"$MKFS" -q -f "$loopdev" 256M >"$dir/out" 2>&1
	[ $? -eq 1 ] || fail "SIZE larger than the device was not refused"
	grep -q "larger than the device" "$dir/out" || fail "no message for SIZE > device: $(cat "$dir/out")"
	ok "block device $loopdev: whole, 64M of it, refusal of 256M and of a second mkfs"
else
	echo "skip: block device: not root, no losetup, or no free loop device"
fi
echo "t_mkfs: all checks passed"
exit 0
