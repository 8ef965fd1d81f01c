#!/bin/bash
# t_repair_offline.sh — mendfs_repair (fsck.mendfs) on unmounted images: a populated image
# (fragmented free space: 400 one-block files, every other one deleted) is clean (exit 0);
# a mounted one is refused (exit 8); damage to the free-space trees (a field, a bad
# checksum), the inode btree, the reverse map, the AG free list, the AG header's counters
# and the superblock's summary counters, made with
# mendfs_db, is found
# by -n (exit 4, nothing changed), repaired (exit 1), and afterwards -n and mendfs_db's
# check are clean and every file reads back the same; usage errors exit 16; fsck.mendfs
# accepts fsck's -a; -T puts the scratch on disk.
set -u
. "$(dirname "$0")/mountlib.sh"
ml_setup t_repair_offline
REPAIR=$BIN/mendfs_repair
[ -x "$REPAIR" ] || fail "no $REPAIR"
pop=$dir/pop.img

"$MKFS" -q -a 4 "$img" 64M || fail "mkfs"
mount_fs
mkdir -p "$mnt/d/e" || fail "mkdir"
head -c 300000 /dev/urandom >"$mnt/d/data" || fail "data"
for i in $(seq 400); do head -c 1000 /dev/urandom >"$mnt/d/e/f$i" || fail "f$i"; done
for i in $(seq 1 2 400); do rm "$mnt/d/e/f$i" || fail "rm f$i"; done
(cd "$mnt" && find . -type f -print0 | sort -z | xargs -0 md5sum) >"$dir/sums" || fail "md5sum"
umount_fs
cp --sparse=always "$img" "$pop"

"$REPAIR" "$img" >"$dir/out" 2>&1; rc=$?
[ $rc -eq 0 ] || { cat "$dir/out"; fail "clean image: exit $rc"; }
ok "populated image clean"

mount_fs
"$REPAIR" -n "$img" >"$dir/out" 2>&1; rc=$?
[ $rc -eq 8 ] && grep -q mounted "$dir/out" || { cat "$dir/out"; fail "mounted: exit $rc"; }
umount_fs
ok "mounted filesystem refused (exit 8)"

agfield() { db_field "$pop" "agh $1" "$2"; }
agblocks=$(agfield 0 length)
bno0=$(agfield 0 "bno root") cnt0=$(agfield 0 "cnt root") ino0=$(agfield 0 "ino root")
free1=$(agfield 1 freeblks) bno2=$(agfield 2 "bno root") rmap3=$(agfield 3 "rmap root")
flfirst2=$(agfield 2 fl_first) cnt2=$(agfield 2 "cnt root")
for v in agblocks bno0 cnt0 ino0 free1 bno2 rmap3 flfirst2 cnt2; do [ -n "${!v}" ] || fail "cannot read $v"; done

# case DESC DB-COMMAND: damage a copy, -n finds it, repair fixes it, all clean after.
case_() {
	local desc=$1 sum0 sum1 rc
	cp --sparse=always "$pop" "$img"
	"$DB" -w -c "$2" "$img" >"$dir/wout" 2>&1 || { cat "$dir/wout"; fail "$desc: write"; }
	sum0=$(md5sum <"$img")
	"$REPAIR" -n "$img" >"$dir/out" 2>&1; rc=$?
	[ $rc -eq 4 ] || { cat "$dir/out"; fail "$desc: -n exit $rc, expected 4"; }
	sum1=$(md5sum <"$img")
	[ "$sum0" = "$sum1" ] || fail "$desc: -n changed the image"
	"$REPAIR" ${3:-} "$img" >"$dir/out" 2>&1; rc=$?
	[ $rc -eq 1 ] || { cat "$dir/out"; fail "$desc: repair exit $rc, expected 1"; }
	grep -q rebuilt "$dir/out" || { cat "$dir/out"; fail "$desc: nothing rebuilt"; }
	"$REPAIR" -n "$img" >"$dir/out2" 2>&1; rc=$?
	[ $rc -eq 0 ] || { cat "$dir/out" "$dir/out2"; fail "$desc: after repair -n exit $rc"; }
	"$DB" -c check "$img" >"$dir/chk" 2>&1 || { cat "$dir/chk"; fail "$desc: mendfs_db check"; }
	mount_fs
	(cd "$mnt" && md5sum --quiet -c "$dir/sums") >"$dir/md5" 2>&1 ||
		{ cat "$dir/md5"; fail "$desc: file contents changed"; }
	umount_fs
	ok "$desc: found by -n, repaired: $(grep -c rebuilt "$dir/out") rebuild(s), files unchanged"
}

case_ "bnobt record field" "fuzz block $bno0 rec[0].blockcount sub 1"
case_ "cntbt record field" "fuzz block $cnt0 rec[1].startblock add 1"
case_ "bnobt block with a bad checksum" "fuzz -c block $((2 * agblocks + bno2)) rec[0].startblock random"
case_ "inobt free count" "fuzz block $ino0 rec[0].freecount add 1"
case_ "AG header free count" "write agh 1 freeblks $((free1 - 1))"
case_ "rmapbt record owner" "write block $((3 * agblocks + rmap3)) rec[0].owner 12345"
case_ "rmapbt record length" "fuzz block $((3 * agblocks + rmap3)) rec[1].blockcount add 1"
case_ "superblock summary counter" "write sb 0 fdblocks 5"
case_ "AG free list slot naming a tree block" "write agfl 2 bno[$flfirst2] $cnt2"
case_ "bnobt numrecs, scratch on disk (-T)" "fuzz block $bno0 numrecs sub 1" "-T $dir"

"$REPAIR" >/dev/null 2>&1; rc=$?
[ $rc -eq 16 ] || fail "no argument: exit $rc"
"$REPAIR" -Z "$img" >/dev/null 2>&1; rc=$?
[ $rc -eq 16 ] || fail "bad option: exit $rc"
"$REPAIR" "$dir/nonexistent" >/dev/null 2>&1; rc=$?
[ $rc -eq 8 ] || fail "missing image: exit $rc"
ln -s "$REPAIR" "$dir/fsck.mendfs"
"$dir/fsck.mendfs" -a "$img" >"$dir/out" 2>&1; rc=$?
[ $rc -eq 0 ] || { cat "$dir/out"; fail "fsck.mendfs -a: exit $rc"; }
ok "usage 16, missing image 8, fsck.mendfs -a 0"
exit 0
