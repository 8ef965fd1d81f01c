#!/bin/bash
# t_repair_inodes.sh — online repair of inodes and of the reverse map they are rebuilt from
# (repair_bmap.c, repair_inode.c, repair_rmapbt.c with repair_rmap_live.c).  A populated
# image (files whose extents are inline, or an extent btree of one or two levels; a symlink
# whose target is in a block; a file with an inline attribute) is damaged offline with
# mendfs_db in each round, mounted, and `mendfs_scrub MNT` repairs it beside a mendfs_stress
# load (repairlib's round): every damaged object reported repaired, a load after it
# passes, `mendfs_scrub -n` is then clean, every file reads back the same, and after unmount
# `mendfs_repair -n` is clean.
#   - extent maps: an inline extent's start and length fuzzed, an extent btree leaf record
#     fuzzed, the block count fuzzed;
#   - extent btree blocks trashed (a two-level tree's root, another's leaf);
#   - inode records that no longer load: data fork format fuzzed (a btree file, an inline
#     one, one with an inline attribute, which keeps its attribute), all flags set; a
#     symlink's size zeroed;
#   - file types: modes whose type bits are lost or say another type (a symlink whose target
#     is in a block, a file, an inline directory, a fifo with a size too), told again from
#     the data fork and the entries naming them; a fork offset on a directory without
#     attributes, an inline directory's block count; modes zeroed whole (a file with
#     extents, a directory, a symlink: still in use, not free inodes);
#   - reverse-map records: an owner, a start and a length fuzzed, a record lost.
# The extent map damage also makes the reverse map's check report its owners' mismatches in
# phase 2, before the inodes are looked at: the reverse map's rebuild then refuses (the
# owner's map is the damaged side; rebuilding from it would free data), and the extent map's
# rebuild in phase 3 sets both right: mendfs_scrub checks the reverse map again after phase 4
# and reports it repaired (set right by the repairs after it), so every round ends with
# everything repaired and exit 0 (no "Not repaired" line is accepted).
# Last, 12 reverse-map rebuilds of the busiest AG, forced through the control socket while
# mendfs_stress writes into it: each is rebuilt (or gives up after its bounded rounds with
# EBUSY, or stops on memory pressure with ECANCELED, nothing changed); at least one is
# rebuilt; the load's own checks pass, scrub -n and mendfs_repair -n clean.
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/stresslib.sh"
. "$(dirname "$0")/repairlib.sh"
O=${O:-$(dirname "$BIN")}
CLIENT=${TOOLS:-$O/tools}/ctl_client
repair_setup t_repair_inodes
command -v setfattr >/dev/null && command -v getfattr >/dev/null && have_xattr=1 || have_xattr=0

# ---- the population --------------------------------------------------------------------------
"$MKFS" -q -a 4 -b 1024 "$img" 64M || fail "mkfs"
mount_fs
mkdir -p "$mnt/d" "$mnt/stress" || fail "mkdir"
# files appended in turn: one extent per append (1 KiB blocks: 3 extents fit inline)
for i in $(seq 100); do
	head -c 1024 /dev/urandom >>"$mnt/d/frag1" || fail "frag1"
	head -c 1024 /dev/urandom >>"$mnt/d/frag2" || fail "frag2"
	if [ $i -le 40 ]; then head -c 2048 /dev/urandom >>"$mnt/d/frag3" || fail "frag3"; fi
done
head -c 5000 /dev/urandom >"$mnt/d/small" || fail "small"
head -c 100000 /dev/urandom >"$mnt/d/big" || fail "big"
head -c 3000 /dev/urandom >"$mnt/d/xf" || fail "xf"
[ $have_xattr = 1 ] && { setfattr -n user.kept -v "an inline value" "$mnt/d/xf" || fail "setfattr"; }
target=$(printf 'long-target-%.0s' $(seq 12))
ln -s "$target" "$mnt/d/sym" || fail "symlink"
mkdir -p "$mnt/e/sub" "$mnt/e2/sub2" || fail "mkdir e"
: >"$mnt/e/sub/x" && : >"$mnt/e2/sub2/y" || fail "touch"
mknod "$mnt/e/fifo" p || fail "mknod"
(cd "$mnt" && find d -type f -print0 | sort -z | xargs -0 md5sum) >"$dir/sums" || fail "md5sum"
for f in frag1 frag2 frag3 small big xf sym; do eval "i_$f=$(stat -c %i "$mnt/d/$f")"; done
for f in esub:e/sub fifo:e/fifo e2:e2 e2sub:e2/sub2; do eval "i_${f%%:*}=$(stat -c %i "$mnt/${f#*:}")"; done
(cd "$mnt" && find . -path ./stress -prune -o -printf '%p %y %m %n %s\n' | sort) >"$dir/tree" ||
	fail "listing"
umount_fs
cp --sparse=always "$img" "$pop"

root() { "$DB" -c "inode $1" "$pop" | sed -n 's/^data fork btree root \([0-9]*\), \([0-9]*\) levels.*/\1 \2/p'; }
field() { "$DB" -c "fields block $1" "$pop" | awk -v f="$2" '$1 == f { print $3 }'; }
read -r r1 l1 <<<"$(root "$i_frag1")"
read -r r2 l2 <<<"$(root "$i_frag2")"
[ "${l1:-0}" -ge 2 ] && [ "${l2:-0}" -ge 2 ] || fail "frag1/frag2: extent btrees of ${l1:-?}/${l2:-?} levels, expected 2"
[ -n "$(root "$i_frag3")" ] || fail "frag3 has no extent btree"
leaf2=$(field "$r2" "ptr[1]")
rroot=$("$DB" -c "agh 0" "$pop" | sed -n 's/^rmap root = \([0-9]*\).*/\1/p')
rl0=$(field "$rroot" "ptr[0]")
rlast=$("$DB" -c "fields block $rroot" "$pop" | awk '$1 ~ /^ptr\[/ { p = $3 } END { print p }')
[ -n "$leaf2" ] && [ -n "$rl0" ] && [ -n "$rlast" ] || fail "cannot find the tree blocks"
[ "$(field "$rlast" numrecs)" -gt "$(field "$rl0" numrecs)" ] ||
	fail "the reverse map's last leaf has no record to spare"
"$DB" -c "inode $i_sym" "$pop" | grep -q "^dformat = 3" || fail "the symlink's target is not in a block"

# ---- damage rounds -----------------------------------------------------------------------------
em="extent map"
round "extent fields" "inode $i_small $em;inode $i_big $em;inode $i_frag2 $em;inode $i_frag3 $em" \
	"fuzz inode $i_small ext[0].startblock add 1" "fuzz inode $i_big ext[0].blockcount sub 1" \
	"fuzz block $leaf2 rec[3].startblock add 1" "fuzz inode $i_frag3 nblocks add 7"
round "trashed extent btree blocks" "inode $i_frag1 $em;inode $i_frag2 $em" \
	"trash $r1 1 random" "trash $leaf2 1 zeroes"
ir="inode record"
round "inode records" "inode $i_frag3 $ir;inode $i_small $ir;inode $i_big $ir;inode $i_xf $ir;inode $i_sym $ir" \
	"write inode $i_frag3 dformat 1" "write inode $i_small dformat 2" \
	"fuzz inode $i_big flags ones" "write inode $i_xf dformat 0" "write inode $i_sym size 0"
mount_fs
[ "$(readlink "$mnt/d/sym")" = "$target" ] || fail "the symlink's target changed: $(readlink "$mnt/d/sym")"
if [ $have_xattr = 1 ]; then
	v=$(cd "$mnt/d" && getfattr --only-values -n user.kept xf 2>&1)
	[ "$v" = "an inline value" ] || fail "the inline attribute was not kept: $v"
fi
umount_fs
ok "the symlink's target and the inline attribute survived their inodes' repair"
# the whole tree (names, types, permissions, link counts, sizes) as before
same_tree() {
	mount_fs
	(cd "$mnt" && find . -path ./stress -prune -o -printf '%p %y %m %n %s\n' | sort) >"$dir/tree2"
	umount_fs
	diff "$dir/tree" "$dir/tree2" || fail "$1: the tree changed"
}
round "file types" "inode $i_sym $ir;inode $i_small $ir;inode $i_esub $ir;inode $i_fifo $ir" \
	"fuzz inode $i_sym mode lastbit" "write inode $i_small mode 420" \
	"fuzz inode $i_esub mode lastbit" "fuzz inode $i_fifo mode lastbit" \
	"fuzz inode $i_fifo size ones"
same_tree "file types"
round "fork offset, block count" "inode $i_e2 $ir;inode $i_e2sub directory" \
	"write inode $i_e2 forkoff 1" "write inode $i_e2sub nblocks 3"
same_tree "fork offset, block count"
ok "file types, fork offset, block count: the tree as it was"
# modes zeroed whole: inodes still in use (links, forks: mfs_dinode_in_use), not free ones
# for the inode btree's check and rebuild; the type told again from the fork and the
# entries, the permissions the owner's alone (a symlink's 777).  The reverse map's check
# finds owners that cannot be loaded in phase 2 and its rebuild refuses until they are
# repaired (phase 3): checked again after phase 4, it is reported set right.
round "zeroed modes" "inode $i_big $ir;inode $i_esub $ir;inode $i_sym $ir;AG [0-9]+ reverse map btree" \
	"fuzz inode $i_big mode zeroes" "fuzz inode $i_esub mode zeroes" "fuzz inode $i_sym mode zeroes"
grep -Eq "^Repaired: AG [0-9]+ reverse map btree: set right by the repairs after it" "$dir/out" ||
	{ cat "$dir/out"; fail "zeroed modes: the reverse map not reported set right by the inodes' repair"; }
awk '$1 == "./d/big" { $3 = 600 } $1 == "./e/sub" { $3 = 700 } { print }' "$dir/tree" >"$dir/tree.z"
mount_fs
(cd "$mnt" && find . -path ./stress -prune -o -printf '%p %y %m %n %s\n' | sort) >"$dir/tree2"
[ "$(readlink "$mnt/d/sym")" = "$target" ] || fail "zeroed modes: the symlink's target changed"
[ "$(cat "$mnt/e/sub/x")" = "" ] || fail "zeroed modes: e/sub/x changed"
umount_fs
diff "$dir/tree.z" "$dir/tree2" || fail "zeroed modes: the tree changed"
ok "zeroed modes: a file with extents, a directory, a symlink: types back, the tree as it was"
# Zeroed modes again with one check a round trip (MENDFS_SCRUB_MAX_BATCH=1: as to a daemon
# taking no more than that): an inode's checks are split, and a retyped inode's checks that
# its listing missed (here the extent map damaged beside the mode) are made in this run.
MENDFS_SCRUB_MAX_BATCH=1 round "zeroed modes, one check a round trip" \
	"inode $i_big $ir;inode $i_big $em;inode $i_sym $ir" \
	"fuzz inode $i_big mode zeroes" "fuzz inode $i_big ext[0].blockcount sub 1" \
	"fuzz inode $i_sym mode zeroes"
round "reverse map records" "AG 0 reverse map btree" \
	"fuzz block $rl0 rec[5].owner add 1" "fuzz block $rl0 rec[9].startblock add 1" \
	"fuzz block $rlast numrecs sub 1" "fuzz block $rl0 rec[12].blockcount sub 1"

# ---- forced reverse-map rebuilds under a load in the same AG ------------------------------------
if [ -x "$CLIENT" ]; then
	cp --sparse=always "$pop" "$img"
	mount_fs
	"$STRESS" -p 3 -n 600 -e 40 -z 64K -S "$mnt/stress" >"$dir/stress.out" 2>&1 &
	spid=$!
	built=0 busy=0
	for i in $(seq 12); do
		out=$("$CLIENT" "$mnt" repair 7:0:0 2>&1 | tr "\n" " ")
		case "$out" in
		"reply 5 "*" oflags 0x20 error 0 "*) built=$((built + 1)) ;;
		"reply 5 "*" oflags 0x40 error -16 "*) busy=$((busy + 1)) ;;
		# stopped by memory pressure (a loaded machine): nothing changed, as when busy
		"reply 5 "*" oflags 0x40 error -125 "*) busy=$((busy + 1)) ;;
		*) fail "forced reverse-map rebuild $i: $out" ;;
		esac
		daemon_alive "forced rebuild $i"
	done
	wait "$spid"; src=$?; spid=""
	[ $src -eq 0 ] || { tail "$dir/stress.out"; fail "the load beside the rebuilds failed: exit $src"; }
	[ $built -ge 1 ] || fail "no forced rebuild succeeded ($busy gave up)"
	"$SCRUB" -n "$mnt" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "scrub -n after the forced rebuilds"; }
	checksums "forced rebuilds"
	umount_fs
	"$BIN/mendfs_repair" -n "$img" >"$dir/rep" 2>&1 || { cat "$dir/rep"; fail "mendfs_repair -n after the forced rebuilds"; }
	ok "AG 0's reverse map rebuilt $built times beside mendfs_stress ($busy gave up: busy or memory pressure):" \
		"the load's checks, scrub -n and mendfs_repair -n clean, files unchanged"
else
	echo "note: $CLIENT is not built: the forced rebuilds are not run"
fi
exit 0
