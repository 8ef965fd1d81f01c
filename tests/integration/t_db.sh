#!/bin/bash
# t_db.sh — mendfs_db on a fresh image (sb, agh, agfl, btree, block, inode, freesp, geom,
# check, help, commands from stdin), then on damaged copies: truncated, zeroed or garbled
# superblock, AG header, btree root block and inode, and files that are not mendfs at all.
# Every damaged case must give a clear error naming the structure and exit nonzero without
# dying from a signal (exit status < 128); a damaged AG must not hide the others.
set -u
BIN=${BIN:?BIN must name the directory of the built programs}
MKFS=$BIN/mkfs.mendfs
DB=$BIN/mendfs_db
dir=$(mktemp -d /tmp/t_db.XXXXXX) || exit 1
trap 'rm -rf "$dir"' EXIT

fail() { echo "FAIL: $*"; exit 1; }
ok() { echo "ok: $*"; }
field() { sed -n "s/^$1 = //p" "$2" | head -1; }

img=$dir/fresh.img
"$MKFS" -q -L dbtest "$img" 64M || fail "mkfs failed"
BS=4096

# run_ok DESC PATTERN CMD...: the command succeeds and its output matches PATTERN
run_ok() {
	local desc=$1 pat=$2
	shift 2
	"$@" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "$desc: exit $?"; }
	grep -Eq "$pat" "$dir/out" || { cat "$dir/out"; fail "$desc: output lacks /$pat/"; }
	ok "$desc"
}

run_ok "sb" '^label = "dbtest"' "$DB" -c sb "$img"
cp "$dir/out" "$dir/sb"
agblocks=$(field agblocks "$dir/sb")
rootino=$(field rootino "$dir/sb")
[ "$(field agcount "$dir/sb")" = 4 ] || fail "sb: agcount is not 4"
run_ok "sb 3 (a copy)" '^owner = 3$' "$DB" -c "sb 3" "$img"
run_ok "agh 0" '^seqno = 0$' "$DB" -c "agh 0" "$img"
cp "$dir/out" "$dir/agh0"
run_ok "agh 1" "^length = $agblocks\$" "$DB" -c "agh 1" "$img"
cp "$dir/out" "$dir/agh1"
run_ok "agfl 0" 'free list' "$DB" -c "agfl 0" "$img"
for t in bno cnt ino rmap; do
	run_ok "btree 0 $t" 'records$' "$DB" -c "btree 0 $t" "$img"
done
run_ok "btree 0 ino holds the root chunk" 'freecount 63 freemask 0xfffffffffffffffe' "$DB" -c "btree 0 ino" "$img"
run_ok "btree 0 rmap names the owners" 'owner log' "$DB" -c "btree 0 rmap" "$img"
bnoroot=$(sed -n 's/^bno root = \([0-9]*\),.*/\1/p' "$dir/agh1")
[ -n "$bnoroot" ] || fail "agh 1 shows no bno root"
bnofsb=$((agblocks + bnoroot))
run_ok "block (bno root of AG 1)" '^rec\[0\] startblock' "$DB" -c "block $bnofsb" "$img"
run_ok "inode (root)" '^mode = 040755$' "$DB" -c "inode $rootino" "$img"
run_ok "inode (a free one)" '\(free\)' "$DB" -c "inode $((rootino + 1))" "$img"
run_ok "freesp" '^total free blocks [1-9]' "$DB" -c freesp "$img"
run_ok "geom" "^rootino = $rootino\$" "$DB" -c geom "$img"
run_ok "check" '^check: clean' "$DB" -c check "$img"
run_ok "help" 'freesp' "$DB" -c help "$img"
run_ok "several -c" 'records$' "$DB" -c "agh 2" -c "btree 3 cnt" "$img"
printf 'sb\nagh 1\nquit\n' | "$DB" "$img" >"$dir/out" 2>&1 || fail "commands from stdin: exit $?"
grep -q '^seqno = 1$' "$dir/out" || fail "commands from stdin: agh 1 not printed"
ok "commands from stdin"

# Bad commands: a clear error, exit 1.
for c in "agh 4" "agh x" "btree 0 foo" "block 99999999" "inode 0" "inode 999999999999" "nosuch" "sb 1 2"; do
	"$DB" -c "$c" "$img" >"$dir/out" 2>&1
	rc=$?
	[ $rc -eq 1 ] || { cat "$dir/out"; fail "bad command '$c': exit $rc, expected 1"; }
	[ -s "$dir/out" ] || fail "bad command '$c': no message"
done
ok "bad commands give an error and exit 1"

# expect_err DESC PATTERN CMD...: exits 1..127 and says PATTERN
expect_err() {
	local desc=$1 pat=$2 rc
	shift 2
	"$@" >"$dir/out" 2>&1
	rc=$?
	[ $rc -ne 0 ] || { cat "$dir/out"; fail "$desc: exit 0 on a damaged image"; }
	[ $rc -lt 128 ] || { cat "$dir/out"; fail "$desc: killed by signal $((rc - 128))"; }
	grep -Eq "$pat" "$dir/out" || { cat "$dir/out"; fail "$desc: message lacks /$pat/"; }
	ok "$desc: exit $rc, $(grep -E "$pat" "$dir/out" | head -1)"
}
# garble FILE BLOCK OFFSET: write junk into a block (keeps the size)
garble() { printf 'GARBAGE-GARBAGE!' | dd of="$1" bs=1 seek=$(( $2 * BS + $3 )) conv=notrunc status=none; }
zero() { dd if=/dev/zero of="$1" bs=$BS seek="$2" count=1 conv=notrunc status=none; }

d=$dir/d.img
cp "$img" "$d"; truncate -s 40M "$d"
expect_err "truncated image" 'truncated' "$DB" -c sb "$d"
cp "$img" "$d"; zero "$d" 0
expect_err "zeroed superblock" 'superblock' "$DB" -c sb "$d"
cp "$img" "$d"; garble "$d" 0 200
expect_err "garbled superblock" 'superblock.*checksum|checksum.*superblock' "$DB" -c sb "$d"
cp "$img" "$d"; garble "$d" 0 48
expect_err "garbled superblock fields" 'superblock' "$DB" -c sb "$d"

cp "$img" "$d"; zero "$d" $((2 * agblocks + 1))
expect_err "zeroed AG 2 header (agh)" "AG 2 header block $((2 * agblocks + 1)): magic" "$DB" -c "agh 2" "$d"
expect_err "zeroed AG 2 header (btree)" "AG 2 header" "$DB" -c "btree 2 bno" "$d"
expect_err "zeroed AG 2 header (freesp)" "AG 2 header" "$DB" -c freesp "$d"
grep -q '^total free blocks [1-9]' "$dir/out" || fail "freesp stopped at the damaged AG"
expect_err "zeroed AG 2 header (check)" "AG 2" "$DB" -c check "$d"
grep -q "1 of 4 AGs damaged" "$dir/out" || { cat "$dir/out"; fail "check: the other AGs were not checked"; }
"$DB" -c "agh 3" "$d" >/dev/null 2>&1 || fail "AG 3 unreadable because AG 2 is damaged"
ok "a damaged AG 2 leaves AG 3 readable"
cp "$img" "$d"; garble "$d" $((2 * agblocks + 1)) 300
expect_err "garbled AG 2 header" "AG 2 header.*checksum" "$DB" -c "agh 2" "$d"

cp "$img" "$d"; garble "$d" "$bnofsb" 64
expect_err "garbled AG 1 bno root (btree)" "AG 1|by-block|free-space|checksum" "$DB" -c "btree 1 bno" "$d"
expect_err "garbled AG 1 bno root (check)" "AG 1" "$DB" -c check "$d"
expect_err "garbled AG 1 bno root (block)" "crc = .*BAD" "$DB" -c "block $bnofsb" "$d"
cp "$img" "$d"; zero "$d" "$bnofsb"
expect_err "zeroed AG 1 bno root" "magic|block $bnofsb" "$DB" -c "btree 1 bno" "$d"
# numrecs far beyond the block's capacity, with a correct magic: must not crash
cp "$img" "$d"; printf '\xff\xff' | dd of="$d" bs=1 seek=$((bnofsb * BS + 50)) conv=notrunc status=none
expect_err "huge numrecs in AG 1 bno root (block)" "more records than fit" "$DB" -c "block $bnofsb" "$d"
expect_err "huge numrecs in AG 1 bno root (btree)" "AG 1" "$DB" -c "btree 1 bno" "$d"

"$DB" -c "inode $rootino" "$img" >"$dir/out" 2>&1
rootblk=$(sed -n 's/^inode [0-9]* (AG 0 block \([0-9]*\) offset \([0-9]*\)).*/\1 \2/p' "$dir/out")
set -- $rootblk
cp "$img" "$d"; garble "$d" "$1" $(( $2 + 60 ))
expect_err "garbled root inode" "inode $rootino" "$DB" -c "inode $rootino" "$d"
expect_err "garbled root inode (check)" "root inode|inode $rootino" "$DB" -c check "$d"

logstart=$(field logstart "$dir/sb")
cp "$img" "$d"; zero "$d" "$logstart"; zero "$d" $((logstart + 1))
expect_err "zeroed journal headers (check)" "journal" "$DB" -c check "$d"

head -c 1M /dev/urandom >"$d"
expect_err "random bytes" "superblock|magic" "$DB" -c sb "$d"
: >"$d"
expect_err "empty file" "too small" "$DB" -c sb "$d"
expect_err "missing file" "cannot open" "$DB" -c sb "$dir/nonexistent"
echo "t_db: all checks passed"
exit 0
