#!/bin/bash
# t_repair_dir.sh — mendfs_scrub rebuilds directories, extended attributes and symlinks
# online.  A populated image (1 KiB blocks: a 300-entry directory is a two-level name
# btree) is damaged offline with mendfs_db -w, mounted, and `mendfs_scrub MNT` runs beside a
# mendfs_stress load (repairlib.sh's round): every damaged object is reported repaired,
# `mendfs_scrub -n` is then clean, every file whose directory survived reads back the same
# (md5), and `mendfs_repair -n` after unmount is clean.  Then, by name:
#   directories   the root node of a name btree trashed and a record key flipped out of hash
#                 order (all 302 names resolve), a subdirectory entry's inode number
#                 damaged (joined again under its name), ".." wrong (the parent found again);
#   lost entries  a trashed name-btree leaf (the one naming a subdirectory) and a file
#                 entry's inode number: the files they reach are in /lost+found (the link-
#                 count rebuild), contents unchanged;
#   symlinks      a NUL in an inline target and in a target block: the bytes before it;
#   attributes    a trashed attribute-btree leaf (the others read back), a bad inline entry
#                 (the one before it kept);
#   writers       files created, removed and read in the directory while it is rebuilt
#                 (damaged, then a dozen rebuilds asked for with ctl_client): all clean.
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/stresslib.sh"
. "$(dirname "$0")/repairlib.sh"
repair_setup t_repair_dir
command -v getfattr >/dev/null && command -v setfattr >/dev/null ||
	{ echo "skip: getfattr/setfattr (attr) are missing"; exit 77; }

# ---- the population -------------------------------------------------------------------------
"$MKFS" -q -a 2 -b 1024 "$img" 48M || fail "mkfs"
mount_fs
cd "$mnt" || fail "cd"
mkdir big p p/q p2 p2/r x stress || fail "mkdir"
for i in $(seq 300); do head -c $((i * 7)) /dev/urandom >"big/file$i" || fail "big/file$i"; done
mkdir big/sub1 big/sub2 || fail "mkdir sub"
echo one >big/sub1/inner || fail "inner"
echo qf >p/q/qf && echo f1 >p/f1 && echo rf >p2/r/rf && echo g >p2/g || fail "files"
ln -s abcdefgh p/sl || fail "symlink"
long=$(printf 'L%.0s' $(seq 150))/target
ln -s "$long" p2/long || fail "long symlink"
touch x/many x/few || fail "touch"
for i in $(seq 40); do setfattr -n "user.k$i" -v "value-$i" x/many || fail "setfattr k$i"; done
setfattr -n user.a -v 1 x/few && setfattr -n user.b -v 22 x/few || fail "setfattr few"
(find big p p2 x -type f -print0 | sort -z | xargs -0 md5sum) >"$dir/sums" || fail "md5sum"
find big p -printf '%i %p\n' >"$dir/inos" || fail "inode list"
ino() { stat -c %i "$mnt/$1"; }
BIG=$(ino big) Q=$(ino p/q) P2=$(ino p2) SL=$(ino p/sl) LONG=$(ino p2/long)
MANY=$(ino x/many) FEW=$(ino x/few) R=$(ino p2/r) P=$(ino p) F1=$(ino p/f1) SUB1=$(ino big/sub1)
cd /
umount_fs
cp --sparse=always "$img" "$pop"

# ---- where the damage goes --------------------------------------------------------------------
field() { db_fields "$pop" "$@"; }
root_of() { fork_root "$pop" "$@"; }
owned() { owned_blocks "$pop" "$1"; }      # blocks of inode $1 (its btrees, its data)
bigroot=$(root_of "$BIG" data)
[ -n "$bigroot" ] || fail "no name btree root for big"
bigleaf=""
for b in $(owned "$BIG"); do
	[ "$b" = "$bigroot" ] && continue
	[ "$(field "block $b" level)" = 0 ] && [ "$(field "block $b" numrecs)" -gt 4 ] && { bigleaf=$b; break; }
done
[ -n "$bigleaf" ] || fail "no leaf of big"
# r's entry in p2 (inline): its index
ri=$("$DB" -c "fields inode $P2" "$pop" | awk -v r="$R" '$1 ~ /^dirent\[[0-9]+\]\.ino$/ && $3 == r { sub(/^dirent\[/, "", $1); sub(/\].*/, "", $1); print $1 }')
[ -n "$ri" ] || fail "no dirent of r in p2"

round "directories" "inode $BIG directory;inode $Q directory;inode $P2 directory" \
	"trash $bigroot 1 random" "fuzz block $bigleaf rec[2].key bitflip 63" \
	"write inode $Q lit[7] 0x7f" "write inode $P2 dirent[$ri].ino 0xffffffffff"

# The names resolve after the rebuild (round unmounted: mount again, read-only checks).
mount_fs
for i in 1 150 300; do [ -f "$mnt/big/file$i" ] || fail "big/file$i is gone"; done
[ "$(ls "$mnt/big" | wc -l)" = 302 ] || fail "big holds $(ls "$mnt/big" | wc -l) names, not 302"
[ "$(cat "$mnt/big/sub1/inner")" = one ] || fail "big/sub1/inner"
[ "$(stat -c %i "$mnt/p2/r")" = "$R" ] || fail "p2/r is not joined again"
[ "$(ls -ia "$mnt/p/q" | awk '$2 == ".." { print $1 }')" = "$(stat -c %i "$mnt/p")" ] || fail "p/q/.. is not p"
umount_fs
ok "directories: every name resolves"

# ---- lost entries: a trashed leaf, a file entry's inode number: the link counts put the
# ---- files they named into /lost+found, contents unchanged ---------------------------------------
f1i=$("$DB" -c "fields inode $P" "$pop" | awk -v r="$F1" '$1 ~ /^dirent\[[0-9]+\]\.ino$/ && $3 == r { sub(/^dirent\[/, "", $1); sub(/\].*/, "", $1); print $1 }')
[ -n "$f1i" ] || fail "no dirent of f1 in p"
# the leaf naming sub1: a lost subdirectory too
subleaf=""
for b in $(owned "$BIG"); do
	[ "$(field "block $b" level)" = 0 ] &&
		"$DB" -c "fields block $b" "$pop" | grep -Eq "^rec\[[0-9]+\]\.ino 8 $SUB1\$" && { subleaf=$b; break; }
done
[ -n "$subleaf" ] || fail "no leaf of big names sub1"
lost=$("$DB" -c "fields block $subleaf" "$pop" | awk '$1 ~ /^rec\[[0-9]+\]\.ino$/ { print $3 }')
lost="$lost $F1"
# the files the lost names reach (a lost subdirectory takes its files along): "ino rest"
cp "$dir/sums" "$dir/sums.all"
: >"$dir/moved"
for i in $lost; do
	p=$(awk -v i="$i" '$1 == i { print $2 }' "$dir/inos")
	[ -n "$p" ] || continue
	awk -v p="$p" -v i="$i" '$2 == p { print i, "" } index($2, p "/") == 1 { print i, substr($2, length(p) + 2) }' \
		"$dir/sums.all" >>"$dir/moved"
	awk -v p="$p" '$2 != p && index($2, p "/") != 1' "$dir/sums" >"$dir/sums.tmp"
	mv "$dir/sums.tmp" "$dir/sums"
done
nlost=$(wc -l <"$dir/moved")
[ "$nlost" -gt 1 ] || fail "the trashed leaf named no file"
round "lost entries" "inode $BIG directory;inode $P directory;link counts" \
	"trash $subleaf 1 random" "write inode $P dirent[$f1i].ino 0xffffffffff"
mount_fs
while read -r i rest; do
	p=$(awk -v i="$i" '$1 == i { print $2 }' "$dir/inos")
	want=$(awk -v p="$p${rest:+/$rest}" '$2 == p { print $1 }' "$dir/sums.all")
	f="$mnt/lost+found/#$i${rest:+/$rest}"
	[ -f "$f" ] || fail "$p${rest:+/$rest} (inode $i) is not in lost+found"
	[ "$(md5sum <"$f" | cut -d' ' -f1)" = "$want" ] || fail "$f (was $p${rest:+/$rest}) changed"
done <"$dir/moved"
umount_fs
cp "$dir/sums.all" "$dir/sums"
ok "lost entries: the $nlost files they reach (big/sub1/inner too) are in lost+found, unchanged"

# ---- symlinks: a NUL in an inline target, and in a target of its own block -------------------
longblk=$(owned "$LONG" | head -1)
[ -n "$longblk" ] || fail "no block of the long symlink"
round "symlinks" "inode $SL symbolic link;inode $LONG symbolic link" \
	"write inode $SL lit[3] 0" "write -c block $longblk byte[100] 0"
mount_fs
[ "$(readlink "$mnt/p/sl")" = abc ] || fail "p/sl reads '$(readlink "$mnt/p/sl")', not abc"
[ "$(readlink "$mnt/p2/long")" = "${long:0:100}" ] || fail "p2/long reads '$(readlink "$mnt/p2/long")'"
umount_fs
ok "symlinks: the bytes before the NUL are the target"

# ---- extended attributes: a trashed leaf of an attribute btree, a bad inline entry ------------
manyleaf=""
for b in $(owned "$MANY"); do
	[ "$(field "block $b" magic)" = 1413568589 ] || continue          # MXAT
	[ "$(field "block $b" level)" = 0 ] && { manyleaf=$b; break; }
done
[ -n "$manyleaf" ] || fail "no attribute leaf of x/many"
fewoff=$(( $(field "inode $FEW" forkoff) * 8 + 6 ))              # user.b's namespace byte
round "attributes" "inode $MANY extended attributes;inode $FEW extended attributes" \
	"trash $manyleaf 1 random" "write inode $FEW lit[$fewoff] 9"
mount_fs
[ "$(getfattr --absolute-names --only-values -n user.a "$mnt/x/few")" = 1 ] || fail "x/few lost user.a"
getfattr --absolute-names -n user.b "$mnt/x/few" >/dev/null 2>&1 && fail "x/few still has the damaged user.b"
n=0
for i in $(seq 40); do
	v=$(getfattr --absolute-names --only-values -n "user.k$i" "$mnt/x/many" 2>/dev/null) || continue
	[ "$v" = "value-$i" ] || fail "x/many user.k$i reads '$v'"
	n=$((n + 1))
done
[ "$n" -gt 0 ] && [ "$n" -lt 40 ] || fail "x/many kept $n of 40 attributes"
umount_fs
ok "attributes: $n of 40 kept from the surviving leaves, the inline one before the damage kept"

# ---- writers in the very directory being rebuilt ----------------------------------------------
cp --sparse=always "$pop" "$img"
"$DB" -w -c "trash $bigroot 1 random" "$img" >/dev/null 2>&1 || fail "damage"
mount_fs
rm -f "$dir/stop"
( i=0; while [ ! -e "$dir/stop" ] && [ $i -lt 3000 ]; do
	i=$((i + 1))
	{ echo "$i" >"$mnt/big/w$i"
	  [ $i -gt 8 ] && rm -f "$mnt/big/w$((i - 8))"
	  cat "$mnt/big/file$((i % 300 + 1))" >/dev/null; } 2>/dev/null
  done; echo "$i" >"$dir/wn" ) &
spid=$!
scrub_repairing "$dir/out1" || { cat "$dir/out1.all"; fail "writers: mendfs_scrub"; }
grep -Eq "^Repaired: inode $BIG directory: " "$dir/out1.all" ||
	{ cat "$dir/out1.all"; fail "writers: big not repaired"; }
# then rebuilds of the clean directory, asked for directly, while the writers go on
# (memory pressure on a loaded machine may stop one: ECANCELED, nothing changed, retried)
nreb=0
for k in $(seq 30); do
	bounded 60 "$TOOLS/ctl_client" "$mnt" repair 11:0:$BIG >"$dir/r" 2>&1
	if grep -q "oflags 0x20 error 0" "$dir/r"; then
		nreb=$((nreb + 1))
		[ $nreb -ge 12 ] && break
	else
		grep -q "error -125 " "$dir/r" || { cat "$dir/r"; fail "writers: rebuild $k of big"; }
	fi
done
[ $nreb -ge 6 ] || fail "writers: only $nreb of $k rebuilds of big went through"
touch "$dir/stop"
wait "$spid"
spid=""
rm -f "$mnt"/big/w* || fail "writers: cleaning up"
"$SCRUB" -n "$mnt" >"$dir/out2" 2>&1 ||
	{ cat "$dir/out1.all" "$dir/out2"; fail "writers: second scrub -n"; }
checksums "writers"
umount_fs
"$BIN/mendfs_repair" -n "$img" >"$dir/rep" 2>&1 || { cat "$dir/rep"; fail "writers: mendfs_repair -n"; }
ok "writers in the directory during $nreb rebuilds ($(cat "$dir/wn") operations): repaired, clean, files unchanged"
