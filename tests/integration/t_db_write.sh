#!/bin/bash
# t_db_write.sh — mendfs_db's write commands (write, fuzz, trash) and its check, which runs
# the checkers of repair/.
#
#   1. Without -w every write command is refused and the image stays byte-identical.
#   2. On copies of a fresh image, one structure at a time is damaged (a field written or
#      fuzzed with the CRC recomputed, a field written with the CRC kept stale, whole
#      blocks trashed): the command reports the change, the structure still verifies when
#      the CRC was recomputed (logical damage), and `check` fails naming the object.
#   3. Bad objects, fields, indexes and values are refused without changing the image.
#   4. With FUSE: a filesystem populated through the daemon checks clean with `check -f`;
#      then a directory entry, an extent and a link count are damaged in turn and found.
set -u
BIN=${BIN:?BIN must name the directory of the built programs}
MKFS=$BIN/mkfs.mendfs
DB=$BIN/mendfs_db
MENDFS=$BIN/mendfs
dir=$(mktemp -d /tmp/t_db_write.XXXXXX) || exit 1
mnt=$dir/m
pid=""
cleanup() {
	cd /
	grep -q " $mnt fuse" /proc/self/mounts && { fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"; }
	[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null
	wait 2>/dev/null
	rm -rf "$dir"
}
trap cleanup EXIT

fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok: $*"; }
field() { sed -n "s/^$1 = //p" "$2" | head -1; }

img=$dir/fresh.img
d=$dir/d.img
"$MKFS" -q "$img" 64M || fail "mkfs failed"
"$DB" -c sb -c "agh 1" -c "agh 2" -c "agh 3" -c "agfl 2" "$img" >"$dir/info" 2>&1 || fail "sb/agh"
agblocks=$(field agblocks "$dir/info")
rootino=$(field rootino "$dir/info")
logstart=$(field logstart "$dir/info")
# the three AG headers printed are AGs 1, 2 and 3, in that order
bnoroot1=$(sed -n 's/^bno root = \([0-9]*\),.*/\1/p' "$dir/info" | sed -n 1p)
cntroot2=$(sed -n 's/^cnt root = \([0-9]*\),.*/\1/p' "$dir/info" | sed -n 2p)
rmaproot3=$(sed -n 's/^rmap root = \([0-9]*\),.*/\1/p' "$dir/info" | sed -n 3p)
flfirst2=$(sed -n 's/^fl_first = //p' "$dir/info" | sed -n 2p)
[ -n "$bnoroot1" ] && [ -n "$cntroot2" ] && [ -n "$rmaproot3" ] && [ -n "$flfirst2" ] ||
	fail "could not read the AG headers"
"$DB" -c "check -f" "$img" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "fresh image: check -f"; }
ok "fresh image checks clean"

# --- 1. refused without -w ------------------------------------------------------------------
sum=$(md5sum <"$img")
for c in "write agh 1 freeblks 5" "fuzz sb 2 agblocks add 1" "trash 100" \
	 "write inode $rootino nlink 7"; do
	"$DB" -c "$c" "$img" >"$dir/out" 2>&1 && { cat "$dir/out"; fail "'$c' without -w succeeded"; }
	grep -q "read-only (start mendfs_db with -w" "$dir/out" || { cat "$dir/out"; fail "'$c': no refusal message"; }
done
[ "$(md5sum <"$img")" = "$sum" ] || fail "a refused command changed the image"
ok "write, fuzz and trash are refused without -w; the image is unchanged"

# --- 2. one damage at a time ------------------------------------------------------------------
# damage DESC CHECK-PATTERN [check args] -- DB-WRITE-COMMANDS...
damage() {
	local desc=$1 pat=$2 chk=$3
	shift 4
	cp "$img" "$d"
	local args=()
	for c in "$@"; do args+=(-c "$c"); done
	"$DB" -w "${args[@]}" "$d" >"$dir/wout" 2>&1 || { cat "$dir/wout"; fail "$desc: the write failed"; }
	"$DB" -c "$chk" "$d" >"$dir/out" 2>&1
	local rc=$?
	[ $rc -eq 1 ] || { cat "$dir/wout" "$dir/out"; fail "$desc: check exit $rc, expected 1"; }
	grep -Eq "$pat" "$dir/out" || { cat "$dir/wout" "$dir/out"; fail "$desc: check output lacks /$pat/"; }
	ok "$desc: $(grep -E "$pat" "$dir/out" | head -1)"
}

damage "agh freeblks (write)" "^AG 1 header: freeblks 4090" check -- "write agh 1 freeblks 4090"
grep -q "^agh 1 freeblks = 4090 (was" "$dir/wout" || fail "write did not report the change"
"$DB" -c "agh 1" "$d" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "agh 1 does not verify after a write (CRC not recomputed)"; }
grep -q "^crc = .*(correct)" "$dir/out" || fail "agh 1: CRC not correct after write"
ok "a written AG header still verifies (logical damage)"

damage "agh longest beyond freeblks (write)" "^AG 2 header \(block [0-9]+\): fields out of range" \
	check -- "write agh 2 longest 5000"
damage "agh longest (write -c: stale CRC)" "AG 3 header \(block [0-9]+\): checksum" check -- \
	"write -c agh 3 longest 1"
"$DB" -c "agh 3" "$d" >"$dir/out" 2>&1 && fail "agh 3 verifies after write -c"
grep -q "^crc = .*BAD" "$dir/out" || { cat "$dir/out"; fail "agh 3: CRC not shown bad"; }

damage "sb copy agblocks (fuzz add)" "^AG 2 superblock" check -- "fuzz sb 2 agblocks add 1"
grep -Eq "^sb 2 agblocks: $agblocks -> $((agblocks + 1)) \(add\)" "$dir/wout" || { cat "$dir/wout"; fail "fuzz did not report old and new values"; }
damage "sb copy reserved (fuzz ones)" "^AG 1 superblock: reserved word 2" check -- \
	"fuzz sb 1 reserved[2] ones"
damage "bnobt record (fuzz sub)" "^AG 1 bnobt block $bnoroot1 record 0" check -- \
	"fuzz block $((agblocks + bnoroot1)) rec[0].blockcount sub 3"
damage "cntbt record (fuzz bitflip)" "^AG 2 (cntbt|header)" check -- \
	"fuzz block $((2 * agblocks + cntroot2)) rec[0].startblock bitflip 4"
damage "free list slot (write)" "^AG 2 free list slot $flfirst2" check -- \
	"write agfl 2 bno[$flfirst2] $cntroot2"
damage "rmapbt root (trash)" "^AG 3 " check -- "trash $((3 * agblocks + rmaproot3))"
damage "rmapbt record owner (write)" "^AG 3 rmapbt" check -- \
	"write block $((3 * agblocks + rmaproot3)) rec[0].owner 12345"
damage "journal headers (fuzz magic zeroes)" "^journal" check -- \
	"fuzz log 0 magic zeroes" "fuzz log 1 magic zeroes"
damage "root inode nsec (write)" "^inode $rootino: core fields" "check -f" -- \
	"write inode $rootino mtime.nsec 1000000001"
damage "root inode link count (fuzz add)" "^inode $rootino: link count 3, counted 2" "check -f" -- \
	"fuzz inode $rootino nlink add 1"
damage "root inode uid (fuzz -c: stale CRC)" "^inode $rootino: header .*checksum" "check -f" -- \
	"fuzz -c inode $rootino uid random"
damage "AG header unlinked (write)" "^AG 0 orphan list" check -- "write agh 0 unlinked $rootino"

# --- 3. bad requests change nothing -----------------------------------------------------------
cp "$img" "$d"
sum=$(md5sum <"$d")
for c in "write agh 9 freeblks 1" "write agh 1 nosuchfield 1" "write agh 1 roots[4] 1" \
	 "write agh 1 freeblks xyz" "fuzz agh 1 freeblks nosuchverb" "write frob 1 x 1" \
	 "fuzz inode 1 mode ones" "write block $((agblocks + bnoroot1)) rec[0].nosuch 1" \
	 "write block $((agblocks + bnoroot1)) key[0] 1" "fuzz agh 1 freeblks bitflip 32" \
	 "write log 99999999 magic 1" "trash 99999999999" "write inode $rootino dirent[0].ino 1"; do
	"$DB" -w -c "$c" "$d" >"$dir/out" 2>&1
	rc=$?
	[ $rc -eq 1 ] || { cat "$dir/out"; fail "'$c': exit $rc, expected 1"; }
	grep -q "^mendfs_db: " "$dir/out" || { cat "$dir/out"; fail "'$c': no error message"; }
done
[ "$(md5sum <"$d")" = "$sum" ] || fail "a refused write changed the image"
ok "bad objects, fields, indexes, values and verbs are refused; the image is unchanged"

# --- 4. a populated filesystem (FUSE) -----------------------------------------------------------
if [ ! -c /dev/fuse ] || ! command -v fusermount3 >/dev/null || [ ! -x "$MENDFS" ]; then
	echo "t_db_write: FUSE part skipped (no /dev/fuse, fusermount3 or mendfs)"
	echo "t_db_write: all checks passed"
	exit 0
fi
pop=$dir/pop.img
"$MKFS" -q "$pop" 64M || fail "mkfs (populated image)"
mkdir "$mnt"
"$MENDFS" -f "$pop" "$mnt" >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 400); do
	grep -q " $mnt fuse.mendfs " /proc/self/mounts && break
	kill -0 "$pid" 2>/dev/null || { cat "$dir/log"; fail "the daemon exited before mounting"; }
	sleep 0.025
done
grep -q " $mnt fuse.mendfs " /proc/self/mounts || fail "no mount after 10 s"
mkdir "$mnt/dir" "$mnt/dir/sub" || fail "mkdir"
for i in 1 2 3; do echo "file $i" >"$mnt/dir/f$i"; done
head -c 200000 /dev/urandom >"$mnt/data" || fail "write data"
ln "$mnt/dir/f1" "$mnt/hard" && ln -s dir/f2 "$mnt/sym" || fail "links"
dirino=$(stat -c %i "$mnt/dir")
dataino=$(stat -c %i "$mnt/data")
f1ino=$(stat -c %i "$mnt/dir/f1")
fusermount3 -u "$mnt" || fail "unmount"
for _ in $(seq 1200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.025; done
kill -0 "$pid" 2>/dev/null && fail "the daemon did not exit after unmount"
wait "$pid" 2>/dev/null
pid=""
"$DB" -c "check -f" "$pop" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "populated image: check -f"; }
"$DB" -c "inode $dirino" -c "inode $dataino" "$pop" >"$dir/inodes" 2>&1 ||
	{ cat "$dir/inodes"; fail "the daemon's inode numbers are not the image's"; }
ok "a filesystem populated through the daemon checks clean with check -f"
img=$pop
# random values in many fields: check -f never dies from a signal, and says something
for spec in "agh 0 roots[3]" "agh 0 levels[1]" "agh 1 fl_count" "agh 2 fl_first" \
	    "agh 0 unlinked" "sb 3 agcount" "inode $dirino dformat" "inode $dirino size" \
	    "inode $dataino dnext" "inode $dataino forkoff" "inode $dataino ext[0].blockcount" \
	    "inode $dirino dirent[0].namelen" "inode $dirino dirent[1].ino" "inode $f1ino mode" \
	    "log 1 tail_blk" "inode $dataino nblocks"; do
	cp "$pop" "$d"
	"$DB" -w -c "fuzz $spec random" "$d" >"$dir/wout" 2>&1 || { cat "$dir/wout"; fail "fuzz $spec"; }
	"$DB" -c "check -f" "$d" >"$dir/out" 2>&1
	rc=$?
	[ $rc -le 1 ] || { cat "$dir/wout" "$dir/out"; fail "check -f after fuzz $spec: exit $rc"; }
	[ -s "$dir/out" ] || fail "check -f after fuzz $spec: no output"
done
ok "random values in 16 fields: check -f never crashes"
damage "directory entry file type (write)" "^directory $dirino entry" "check -f" -- \
	"write inode $dirino dirent[0].ftype 12"
damage "extent start block (fuzz add)" "^inode $dataino data extent|^AG [0-9]+ rmapbt extent" \
	"check -f" -- "fuzz inode $dataino ext[0].startblock add 1"
damage "file link count (write)" "^inode $f1ino: link count 1, counted 2" "check -f" -- \
	"write inode $f1ino nlink 1"
echo "t_db_write: all checks passed"
exit 0
