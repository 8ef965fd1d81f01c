#!/bin/bash
# t_repair_offline_inodes.sh — mendfs_repair (fsck.mendfs) repairs the inode-level metadata
# of an unmounted image with the online engine's rebuilders.  A populated image (1 KiB
# blocks: files with inline extents and with an extent btree, a 300-entry directory whose
# names are a btree, inline directories, an inline and a block symlink, inline and btree
# attributes, a hard link) is damaged with mendfs_db -w, one structure per case:
#   inode records   the data fork format of a file, every flag set (the record no longer
#                   loads); magic, number and UUID all wrong: beyond repair, the inode is
#                   freed and its name dropped; modes zeroed whole (a file with extents, a
#                   directory, a symlink in a block: in use still, their types told again);
#   extent maps     an inline extent's start, a trashed extent-btree leaf, the block count;
#   directories     the root of a name btree trashed, a subdirectory entry's inode number
#                   (joined again under its name, its ".." names the directory);
#   xattrs          a trashed attribute-btree leaf (the others kept, a value in blocks of
#                   its own too), a bad inline entry (the one before it kept);
#   symlinks        a NUL in an inline target and in a target block;
#   link counts     a hard-linked file's count, the root's;
#   lost+found      an inline directory entry's inode number (the file it named lands in
#                   /lost+found);
#   orphan lists    AG 0's list head pointing at a live inode;
# and each time `mendfs_repair -n` exits 4 naming the object and changes nothing,
# `mendfs_repair` exits 1 having rebuilt it, `mendfs_repair -n` then exits 0, mendfs_db's
# `check -f` (every inode, link counts) is clean, and after a mount every file the damage
# did not destroy reads back the same (md5), with the named results looked at (symlink
# targets, attributes kept, the lost file's contents in /lost+found).  Last, several
# structures at once, with the scratch on disk (-T); a -T directory that is missing is
# refused (exit 8) before the image is touched.
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/repairlib.sh"
ml_setup t_repair_offline_inodes
REPAIR=$BIN/mendfs_repair
[ -x "$REPAIR" ] || fail "no $REPAIR"
command -v getfattr >/dev/null && command -v setfattr >/dev/null ||
	{ echo "skip: getfattr/setfattr (attr) are missing"; exit 77; }
pop=$dir/pop.img

# ---- the population --------------------------------------------------------------------------
"$MKFS" -q -a 2 -b 1024 "$img" 32M || fail "mkfs"
mount_fs
cd "$mnt" || fail "cd"
mkdir d big p p/q p2 p2/r l x || fail "mkdir"
# appended in turn: one extent per append (1 KiB blocks: 3 extents fit inline)
for i in $(seq 60); do
	head -c 1024 /dev/urandom >>d/frag1 || fail "frag1"
	head -c 1024 /dev/urandom >>d/frag2 || fail "frag2"
done
head -c 5000 /dev/urandom >d/small || fail "small"
head -c 70000 /dev/urandom >d/large || fail "large"
for i in $(seq 300); do echo "file $i" >"big/f$i" || fail "big/f$i"; done
echo inner >big/inner || fail "inner"
echo one >p/f1 && echo two >l/f2 && echo lg >l/g && echo qf >p/q/qf && echo rf >p2/r/rf && echo g >p2/g ||
	fail "files"
ln p/f1 p/f1link || fail "ln"
ln -s abcdefgh p/sl || fail "symlink"
long=$(printf 'L%.0s' $(seq 150))/target
ln -s "$long" p2/long || fail "long symlink"
# x/many: 40 attributes in a btree, one of them (k40) with a value in blocks of its own
echo many >x/many && echo few >x/few || fail "x files"
for i in $(seq 39); do setfattr -n "user.k$i" -v "value-$i" x/many || fail "setfattr k$i"; done
big40=$(printf 'v%.0s' $(seq 2500))
setfattr -n user.k40 -v "$big40" x/many || fail "setfattr k40"
setfattr -n user.a -v 1 x/few && setfattr -n user.b -v 22 x/few || fail "setfattr few"
(find . -type f -print0 | sort -z | xargs -0 md5sum) >"$dir/sums.all" || fail "md5sum"
ino() { stat -c %i "$mnt/$1"; }
ROOT=$(ino .) FRAG1=$(ino d/frag1) FRAG2=$(ino d/frag2) SMALL=$(ino d/small)
LARGE=$(ino d/large) BIG=$(ino big) P=$(ino p) P2=$(ino p2) R=$(ino p2/r) F1=$(ino p/f1)
F2=$(ino l/f2) L=$(ino l) SL=$(ino p/sl) LONG=$(ino p2/long) MANY=$(ino x/many) FEW=$(ino x/few)
cd /
umount_fs
cp --sparse=always "$img" "$pop"

# ---- where the damage goes --------------------------------------------------------------------
field() { db_fields "$pop" "$@"; }
root_of() { fork_root "$pop" "$@"; }
owned() { owned_blocks "$pop" "$1"; }
# dirent DIR CHILD: the index of inline directory DIR's entry naming CHILD
dirent() { "$DB" -c "fields inode $1" "$pop" | sed -n "s/^dirent\[\([0-9]*\)\]\.ino 8 $2\$/\1/p"; }
r2=$(root_of "$FRAG2" data)
[ -n "$r2" ] || fail "frag2 has no extent btree"
leaf2=$(field "block $r2" "ptr[0]")
bigroot=$(root_of "$BIG" data)
[ -n "$bigroot" ] || fail "big has no name btree"
manyleaf=""
for b in $(owned "$MANY"); do
	[ "$(field "block $b" magic)" = 1413568589 ] && [ "$(field "block $b" level)" = 0 ] &&
		{ manyleaf=$b; break; }                                  # MXAT, a leaf
done
longblk=$(owned "$LONG" | head -1)
ri=$(dirent "$P2" "$R") f2i=$(dirent "$L" "$F2")
fewoff=$(( $(field "inode $FEW" forkoff) * 8 + 6 ))             # user.b's namespace byte
for v in leaf2 manyleaf longblk ri f2i; do [ -n "${!v}" ] || fail "cannot find $v"; done

# ---- the cases ---------------------------------------------------------------------------------
# case_ DESC NAMES DB-COMMAND...: damage a copy of $pop; -n finds it (exit 4) naming every
# inode or object in NAMES (';'-separated extended regexps) and changes nothing; the repair
# exits 1 having rebuilt something; -n is then clean, mendfs_db check -f clean, and every
# file of $dir/sums (default: all) reads back the same through a mount, which stays up for
# the caller's own looks until it calls umount_fs (`case_` leaves it mounted).
case_() {
	local desc=$1 names=$2 args=() sum0 rc t0=$SECONDS
	shift 2
	for c in "$@"; do args+=(-c "$c"); done
	cp --sparse=always "$pop" "$img"
	"$DB" -w "${args[@]}" "$img" >"$dir/wout" 2>&1 || { cat "$dir/wout"; fail "$desc: damage"; }
	sum0=$(md5sum <"$img")
	"$REPAIR" -n "$img" >"$dir/out" 2>&1; rc=$?
	[ $rc -eq 4 ] || { cat "$dir/out"; fail "$desc: -n exit $rc, expected 4"; }
	[ "$(md5sum <"$img")" = "$sum0" ] || fail "$desc: -n changed the image"
	local IFS=';'
	for w in $names; do
		grep -Eq "($w)([^0-9]|\$)" "$dir/out" || { cat "$dir/out"; fail "$desc: -n does not name '$w'"; }
	done
	unset IFS
	"$REPAIR" ${REPAIR_ARGS:-} "$img" >"$dir/rep" 2>&1; rc=$?
	[ $rc -eq 1 ] || { cat "$dir/rep"; fail "$desc: repair exit $rc, expected 1"; }
	grep -q ": rebuilt (" "$dir/rep" || { cat "$dir/rep"; fail "$desc: nothing rebuilt"; }
	"$REPAIR" -n "$img" >"$dir/out2" 2>&1; rc=$?
	[ $rc -eq 0 ] || { cat "$dir/rep" "$dir/out2"; fail "$desc: -n after the repair: exit $rc"; }
	"$DB" -c "check -f" "$img" >"$dir/chk" 2>&1 ||
		{ cat "$dir/rep" "$dir/chk"; fail "$desc: mendfs_db check -f after the repair"; }
	mount_fs
	(cd "$mnt" && md5sum --quiet -c "$dir/sums") >"$dir/md5" 2>&1 ||
		{ cat "$dir/rep" "$dir/md5"; fail "$desc: file contents changed"; }
	ok "$desc: -n exit 4 naming it, repaired (exit 1: $(grep -c ': rebuilt (' "$dir/rep")" \
		"rebuild(s)), then clean, files unchanged ($((SECONDS - t0)) s)"
}
# without FILE...: $dir/sums is every file but those
sums_without() {
	local re=$(printf '|%s' "$@")
	grep -Ev "  \./(${re:1})\$" "$dir/sums.all" >"$dir/sums"
}
cp "$dir/sums.all" "$dir/sums"

case_ "inode record: data fork format" "inode $LARGE" "write inode $LARGE dformat 2"
umount_fs
case_ "inode record: every flag set" "inode $SMALL" "fuzz inode $SMALL flags ones"
umount_fs
sums_without d/small
case_ "inode record beyond repair: magic, number and UUID" "inode $SMALL" \
	"fuzz inode $SMALL magic ones" "fuzz inode $SMALL ino add 1" "fuzz inode $SMALL uuid random"
[ -e "$mnt/d/small" ] && fail "d/small is still named"
umount_fs
cp "$dir/sums.all" "$dir/sums"
case_ "inode record: zeroed modes (a file with extents, a directory, a symlink)" \
	"inode $LARGE;inode $P;inode $LONG" "fuzz inode $LARGE mode zeroes" \
	"fuzz inode $P mode zeroes" "fuzz inode $LONG mode zeroes"
[ "$(stat -c '%F %a' "$mnt/d/large" "$mnt/p" "$mnt/p2/long" | tr '\n' ,)" = \
	"regular file 600,directory 700,symbolic link 777," ] ||
	fail "zeroed modes: $(stat -c '%n %F %a' "$mnt/d/large" "$mnt/p" "$mnt/p2/long" | tr '\n' ,)"
[ "$(readlink "$mnt/p2/long")" = "$long" ] && [ "$(cat "$mnt/p/q/qf")" = qf ] ||
	fail "zeroed modes: p2/long or p/q/qf changed"
umount_fs
case_ "extent map: an inline extent's start" "inode $SMALL" "fuzz inode $SMALL ext[0].startblock add 1"
umount_fs
case_ "extent map: a trashed extent btree leaf" "inode $FRAG2" "trash $leaf2 1 random"
umount_fs
case_ "extent map: the block count" "inode $FRAG1" "fuzz inode $FRAG1 nblocks add 7"
umount_fs

case_ "directory: name btree root trashed" "directory $BIG" "trash $bigroot 1 random"
n=$(ls "$mnt/big" | wc -l)
[ "$n" = 301 ] || fail "big holds $n names after the repair, not 301"
umount_fs
case_ "directory: a subdirectory entry's inode number" "directory $P2" \
	"write inode $P2 dirent[$ri].ino 0xffffffffff"
[ "$(stat -c %i "$mnt/p2/r")" = "$R" ] || fail "p2/r is not joined again"
umount_fs

case_ "xattrs: a trashed attribute btree leaf" "inode $MANY" "trash $manyleaf 1 random"
k=0
for i in $(seq 40); do
	v=$(getfattr --absolute-names --only-values -n "user.k$i" "$mnt/x/many" 2>/dev/null) || continue
	want=value-$i
	[ $i = 40 ] && want=$big40
	[ "$v" = "$want" ] || fail "x/many user.k$i reads '${v:0:40}'"
	k=$((k + 1))
done
[ $k -gt 0 ] && [ $k -lt 40 ] || fail "x/many kept $k of 40 attributes"
umount_fs
case_ "xattrs: a bad inline entry" "inode $FEW" "write inode $FEW lit[$fewoff] 9"
[ "$(getfattr --absolute-names --only-values -n user.a "$mnt/x/few")" = 1 ] || fail "x/few lost user.a"
umount_fs

case_ "symlink: a NUL in an inline target" "symlink $SL" "write inode $SL lit[3] 0"
[ "$(readlink "$mnt/p/sl")" = abc ] || fail "p/sl reads '$(readlink "$mnt/p/sl")', not abc"
umount_fs
case_ "symlink: a NUL in a target block" "symlink $LONG" "write -c block $longblk byte[100] 0"
[ "$(readlink "$mnt/p2/long")" = "${long:0:100}" ] || fail "p2/long reads '$(readlink "$mnt/p2/long")'"
umount_fs

case_ "link counts: a hard-linked file's, the root's" "inode $F1: link count;inode $ROOT: link count" \
	"write inode $F1 nlink 1" "write inode $ROOT nlink 9"
[ "$(stat -c %h "$mnt/p/f1")" = 2 ] || fail "p/f1 has $(stat -c %h "$mnt/p/f1") links, not 2"
umount_fs

sums_without l/f2
case_ "lost+found: a file entry's inode number" "directory $L" \
	"write inode $L dirent[$f2i].ino 0xffffffffff"
[ -f "$mnt/lost+found/#$F2" ] || fail "l/f2 (inode $F2) is not in lost+found"
[ "$(cat "$mnt/lost+found/#$F2")" = two ] || fail "lost+found/#$F2 changed"
[ -e "$mnt/l/f2" ] && fail "l/f2 is still named"
umount_fs
cp "$dir/sums.all" "$dir/sums"

case_ "orphan list: a live inode at its head" "orphan" "write agh 0 unlinked $SMALL"
umount_fs

# ---- several at once, scratch on disk ----------------------------------------------------------
mkdir "$dir/scratch"
REPAIR_ARGS="-T $dir/scratch"
case_ "several structures at once (-T)" "inode $LARGE;inode $FRAG2;directory $BIG;inode $MANY;symlink $SL" \
	"write inode $LARGE dformat 2" "trash $leaf2 1 random" "trash $bigroot 1 random" \
	"trash $manyleaf 1 random" "write inode $SL lit[3] 0" "write inode $F1 nlink 7"
umount_fs
# a scratch directory that cannot hold a file: refused before anything is looked at
cp --sparse=always "$pop" "$img"
"$DB" -w -c "write inode $SL lit[3] 0" "$img" >/dev/null 2>&1 || fail "-T missing: damage"
sum0=$(md5sum <"$img")
"$REPAIR" -T "$dir/missing" "$img" >"$dir/out" 2>&1; rc=$?
[ $rc -eq 8 ] && grep -q "scratch file in $dir/missing" "$dir/out" ||
	{ cat "$dir/out"; fail "-T missing directory: exit $rc, expected 8 naming it"; }
[ "$(md5sum <"$img")" = "$sum0" ] || fail "-T missing directory: the image changed"
ok "-T naming a missing directory: exit 8 before anything is looked at, image unchanged"
exit 0
