#!/bin/bash
# t_repair_offsets.sh — an extent and its reverse-map record that agree on the blocks but
# not on the file offset (repair_bmap.c: offsets_dispute).  Both are checksummed and each
# reads as a sane map on its own; the file's size is the evidence: written data lies
# inside it, so the side that puts the blocks past the end of file is the damaged one.
# The reverse map's rebuild refuses such an owner (it cannot tell); the extent map's
# rebuild settles it, in one transaction: the map rebuilt from the reverse map when the
# map is the damaged side, the reverse-map records corrected from the map when they are.
# Each round (repairlib's round: damaged offline with mendfs_db, mounted, `mendfs_scrub`
# repairs beside a load, a second scrub -n clean, every file reads back the same,
# mendfs_repair -n clean after unmount):
#   - a reverse-map record's offset past the end of an inline-extent file;
#   - an inline extent's start offset past the end of that file;
#   - the last record of an extent btree leaf moved past the end of its file;
#   - the reverse-map record of that extent moved past the end;
# then offline: both kinds at once, mendfs_repair fixes them (exit 1), -n clean, the files
# the same.
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/stresslib.sh"
. "$(dirname "$0")/repairlib.sh"
repair_setup t_repair_offsets

# ---- the population: files appended in turn, one extent per append (1 KiB blocks) -------------
"$MKFS" -q -a 4 -b 1024 "$img" 64M || fail "mkfs"
mount_fs
mkdir -p "$mnt/d" "$mnt/stress" || fail "mkdir"
for i in $(seq 12); do
	head -c 1024 /dev/urandom >>"$mnt/d/tree" || fail "tree"
	[ $i -le 2 ] && { head -c 1024 /dev/urandom >>"$mnt/d/inl" || fail "inl"; }
done
(cd "$mnt" && find d -type f -print0 | sort -z | xargs -0 md5sum) >"$dir/sums" || fail "md5sum"
INL=$(stat -c %i "$mnt/d/inl") TREE=$(stat -c %i "$mnt/d/tree")
umount_fs
cp --sparse=always "$img" "$pop"

agb=$(db_field "$pop" sb agblocks)
# rrec INO OFF: "LEAF INDEX" of the reverse-map record of INO's data at file block OFF
rrec() {
	local fsb a root lv
	fsb=$(owned_blocks "$pop" "$1" | head -1)
	a=$((fsb / agb))
	root=$(db_field "$pop" "agh $a" "rmap root")
	lv=$("$DB" -c "btree $a rmap" "$pop" | sed -n 's/.*root [0-9]*, \([0-9]*\) levels.*/\1/p')
	[ "$lv" = 1 ] || fail "AG $a reverse map of ${lv:-?} levels, expected 1"
	"$DB" -c "fields block $((a * agb + root))" "$pop" | awk -v o="$1" -v f="$2" -v L=$((a * agb + root)) '
		$1 ~ /\.owner$/ { split($1, p, "."); own[p[1]] = $3 }
		$1 ~ /\.offset$/ { split($1, p, "."); if (own[p[1]] == o && $3 == f) {
			gsub(/[^0-9]/, "", p[1]); print L, p[1] } }'
}
read -r rl_inl ri_inl <<<"$(rrec "$INL" 0)"
read -r rl_tree ri_tree <<<"$(rrec "$TREE" 11)"
[ -n "$ri_inl" ] && [ -n "$ri_tree" ] || fail "cannot find the reverse-map records"
"$DB" -c "inode $INL" "$pop" | grep -q "^dformat = 3 (extents)" || fail "inl: extents not inline"
troot=$(fork_root "$pop" "$TREE" data)
[ -n "$troot" ] || fail "tree: no extent btree"
tlast=$(( $(db_fields "$pop" "block $troot" numrecs) - 1 ))
[ "$(db_fields "$pop" "block $troot" "rec[$tlast].startoff")" = 11 ] ||
	fail "tree: a one-level extent btree whose last record is file block 11 expected"

em="extent map"
rm_="AG [0-9]+ reverse map btree"
round "reverse-map offset past the end (inline extents)" "inode $INL $em;$rm_" \
	"write block $rl_inl rec[$ri_inl].offset 40"
round "extent offset past the end (inline extents)" "inode $INL $em;$rm_" \
	"write inode $INL ext[1].startoff 40"
round "extent btree record past the end" "inode $TREE $em;$rm_" \
	"write block $troot rec[$tlast].startoff 300"
round "reverse-map offset past the end (extent btree)" "inode $TREE $em;$rm_" \
	"write block $rl_tree rec[$ri_tree].offset 300"

# ---- offline: both kinds at once -------------------------------------------------------------
cp --sparse=always "$pop" "$img"
"$DB" -w -c "write block $rl_inl rec[$ri_inl].offset 40" \
	-c "write block $troot rec[$tlast].startoff 300" "$img" >"$dir/wout" 2>&1 ||
	{ cat "$dir/wout"; fail "offline: damage"; }
"$BIN/mendfs_repair" -n "$img" >"$dir/rep0" 2>&1 && fail "offline: the damage was not seen"
"$BIN/mendfs_repair" "$img" >"$dir/rep1" 2>&1
rc=$?
[ $rc -eq 1 ] || { cat "$dir/rep1"; fail "offline: mendfs_repair exit $rc, expected 1"; }
"$BIN/mendfs_repair" -n "$img" >"$dir/rep2" 2>&1 || { cat "$dir/rep2"; fail "offline: -n after the repair"; }
mount_fs
checksums "offline"
umount_fs
ok "offline: both disputes settled by mendfs_repair, -n clean, files unchanged"
