#!/bin/bash
# t_scrub_repair.sh — mendfs_scrub repairs online: a populated image is damaged offline
# (mendfs_db -w) in each structure the daemon rebuilds online — the free-space btrees by
# block and by length, the inode btree, the AG free list — a field here, a whole block
# trashed there, several AGs per round; mounted with mendfs_stress loading a subdirectory,
# `mendfs_scrub MNT` reports every damaged object repaired and exits 0, `mendfs_scrub -n` is
# then clean, every file written before the damage reads back the same, and after unmount
# `mendfs_repair -n` is clean.  A reverse-map record moved onto the free space after it: the
# reverse map is rebuilt before the free-space trees, which are rebuilt from it (the other
# order gave a file's block to free space).  Abort triggers: scratch (-T) on a tmpfs too small for the
# repair is refused with the reason, exit 1, and the AG metadata is the same before and
# after (mendfs_db dumps), the daemon serving all along; the repair after it (memfd
# scratch) succeeds.  A client killed with SIGKILL at random points of forced rebuilds
# (--force-rebuild) leaves the daemon alive and the filesystem clean.
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/stresslib.sh"
. "$(dirname "$0")/repairlib.sh"
repair_setup t_scrub_repair
tmpfs=$dir/tmpfs
ml_extra_cleanup=cleanup_tmpfs
cleanup_tmpfs() { mountpoint -q "$tmpfs" 2>/dev/null && umount -l "$tmpfs"; }

# A populated image with fragmented free space (AG btrees of two levels) in every AG.
populate_ags 200000 150

agfield() { db_field "$pop" "agh $1" "$2"; }
agblocks=$(agfield 1 length)
[ -n "$agblocks" ] || fail "cannot read the AG length"
for a in 0 1 2 3; do
	eval "bno$a=\$(( a * agblocks + \$(agfield $a 'bno root') ))"
	eval "cnt$a=\$(( a * agblocks + \$(agfield $a 'cnt root') ))"
	eval "ino$a=\$(( a * agblocks + \$(agfield $a 'ino root') ))"
	eval "flf$a=\$(agfield $a fl_first)"
done
agfl3=$("$DB" -c "agfl 3" "$pop" | sed -n 's/^blkno = \([0-9]*\).*/\1/p')
[ -n "$agfl3" ] || fail "no AG 3 free list block"
for v in bno0 bno1 cnt0 cnt2 cnt3 ino0 flf2 flf3; do [ -n "${!v}" ] || fail "no $v"; done

# Inodes live in AG 0 only; the other AGs' trees are small but checked all the same.
fs="free space by (block|length) btree"
round "fields" "AG 0 $fs;AG 0 inode btree;AG 2 AG free list;AG 3 $fs" \
	"fuzz block $bno0 numrecs sub 1" "fuzz block $ino0 rec[0].freecount add 1" \
	"write agfl 2 bno[$flf2] $((cnt2 - 2 * agblocks))" "fuzz block $cnt3 rec[0].startblock bitflip 4"
round "trashed blocks" "AG 0 inode btree;AG 1 $fs;AG 2 $fs;AG 3 AG free list" \
	"trash $ino0 1 random" "trash $bno1 1 random" "trash $cnt2 1 zeroes" "trash $agfl3 1 random"
round "more fields" "AG 0 inode btree;AG 3 AG free list;AG 1 $fs;AG 0 $fs" \
	"fuzz block $ino0 rec[1].freemask bitflip 3" "fuzz agfl 3 bno[$flf3] ones" \
	"fuzz block $bno1 rec[0].startblock add 1" "trash $cnt0 1 ones"

# ---- the order of an AG's rebuilds: the reverse map before the trees rebuilt from it --------
# A reverse-map record of a file's extent moved one block on, onto the free extent after it:
# the file's first block reads as leaked, the free block as owned, and the free-space trees
# disagree with the reverse map too.  Rebuilt first from the damaged reverse map, the free
# space would take the file's first block (and the reverse map's rebuild then refuse: "free
# extent overlaps blocks owned"); the reverse map rebuilt first from the owners sets all
# three right.
# rmap_before_free A: "FSB I", a leaf of AG A's reverse map and the index there of a record
# of a file's extent that a free extent follows
rmap_before_free() {
	local a=$1 root lev starts leaves=()
	root=$(agfield "$a" 'rmap root')
	lev=$("$DB" -c "agh $a" "$pop" | sed -n 's/^rmap root = [0-9]*, levels = \([0-9]*\).*/\1/p')
	if [ "$lev" = 1 ]; then leaves=("$root"); else
		mapfile -t leaves < <("$DB" -c "fields block $((a * agblocks + root))" "$pop" |
			awk '$1 ~ /^ptr\[/ { print $3 }')
	fi
	starts=" $("$DB" -c "btree $a bno" "$pop" | awk '$2 == "startblock" { printf "%s ", $3 }')"
	for l in "${leaves[@]}"; do
		"$DB" -c "fields block $((a * agblocks + l))" "$pop" | awk -v starts="$starts" \
			-v fsb=$((a * agblocks + l)) '
			$1 ~ /^rec\[[0-9]+\]\.startblock$/ { split($1, p, /[][]/); s[p[2]] = $3 }
			$1 ~ /^rec\[[0-9]+\]\.blockcount$/ { split($1, p, /[][]/); c[p[2]] = $3 }
			$1 ~ /^rec\[[0-9]+\]\.owner$/ { split($1, p, /[][]/); i = p[2]
				if ($3 < 1e18 && index(starts, " " (s[i] + c[i]) " ")) { print fsb, i; exit } }'
	done | head -1
}
read -r rleaf ri <<<"$(rmap_before_free 0)"
[ -n "${ri:-}" ] || fail "no record of a file's extent before free space in AG 0"
round "a reverse-map record moved onto free space" "AG 0 reverse map btree;AG 0 $fs" \
	"fuzz block $rleaf rec[$ri].startblock add 1"
grep -Eq "^Repaired: AG 0 reverse map btree: rebuilt" "$dir/out" ||
	{ cat "$dir/out"; fail "the reverse map was not rebuilt first"; }

# ---- abort: scratch on a tmpfs too small ------------------------------------------------------
dump_meta() {
	for a in 0 1 2 3; do
		for t in bno cnt ino rmap; do "$DB" -c "btree $a $t" "$img" 2>&1; done
		"$DB" -c "agfl $a" "$img" 2>&1
		"$DB" -c "agh $a" "$img" 2>&1 | grep -v -i "time\|lsn"
	done
}
if mkdir "$tmpfs" && mount -t tmpfs -o size=32k tmpfs "$tmpfs" 2>/dev/null; then
	cp --sparse=always "$pop" "$img"
	"$DB" -w -c "fuzz block $bno0 numrecs sub 1" "$img" >/dev/null 2>&1 || fail "damage"
	dump_meta >"$dir/meta.before"
	mount_fs
	# (again when real memory pressure stopped the repair before the reserve refused it)
	for try in 1 2 3 4 5; do
		"$SCRUB" -T "$tmpfs" "$mnt" >"$dir/out" 2>&1; rc=$?
		grep -Eq "^Not repaired: AG 0 $fs: could not repair: .*(scratch|reserve)" "$dir/out" ||
			! pressure_stopped "$dir/out" || [ $try = 5 ] || { pressure_note $try "tiny scratch" "$dir/out"; continue; }
		break
	done
	# 1: damage left.  16 may join it: with AG 0's free-space trees still damaged, the
	# later checks that cross-reference against them may be reported incomplete (seen in
	# 1 run of 4 under load: ~390 directory checks), which is right, not a failure.
	[ $rc -eq 1 ] || [ $rc -eq 17 ] ||
		{ cat "$dir/out"; fail "tiny scratch: exit $rc, expected 1 (or 1|16)"; }
	grep -Eq "^Not repaired: AG 0 $fs: could not repair: .*(scratch|reserve)" \
		"$dir/out" || { cat "$dir/out"; fail "tiny scratch: no reason given"; }
	checksums "tiny scratch"               # the daemon serves
	ls "$mnt/d1" >/dev/null || fail "tiny scratch: ls"
	umount_any
	dump_meta >"$dir/meta.after"
	cmp -s "$dir/meta.before" "$dir/meta.after" ||
		{ diff "$dir/meta.before" "$dir/meta.after" | head; fail "tiny scratch: metadata changed"; }
	ok "scratch on a 32 KiB tmpfs refused, metadata unchanged: $(grep -m1 '^Not repaired' "$dir/out" | cut -c1-160)"
	umount "$tmpfs"
	mount_fs
	scrub_repairing "$dir/out" || { cat "$dir/out.all"; fail "the repair after the refused one"; }
	"$SCRUB" -n "$mnt" >"$dir/out2" 2>&1 || { cat "$dir/out2"; fail "scrub -n after the repair"; }
	umount_fs
	ok "the repair with memfd scratch after it succeeds"
else
	echo "note: cannot mount a tmpfs (not root?): the small-scratch case is not run"
fi

# ---- forced rebuilds under load; abort: the client killed at random points --------------------
cp --sparse=always "$pop" "$img"
mount_fs
"$STRESS" -p 2 -t 30 -n 800 -e 40 -z 64K -S "$mnt/stress" >"$dir/stress.out" 2>&1 &
spid=$!
# Exit 0; or 4 when the only trouble is rebuilds the engine refused under memory pressure
# (the loaded machine's PSI: each stopped before changing anything and checks clean).
"$SCRUB" --force-rebuild --json "$mnt" >"$dir/force.json" 2>&1 ||
	python3 - "$dir/force.json" <<'EOF' || { cat "$dir/force.json"; fail "--force-rebuild on a clean fs"; }
import json, sys
objs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
summ = [o for o in objs if o["kind"] == "summary"]
left = [o for o in objs if o["kind"] == "repair" and o["result"] != "repaired"]
ok = (summ and summ[-1]["exit"] == 4 and left and summ[-1]["errors"] == len(left) and
      all("memory pressure" in o["message"] and o.get("recheck") == "clean" for o in left) and
      all(summ[-1][k] == 0 for k in ("corruptions", "xref", "unfixed", "incomplete")) and
      all(o["kind"] in ("repair", "summary") for o in objs))
if ok:
    print("note: %d forced rebuilds refused under memory pressure (changed nothing, clean)"
          % len(left))
sys.exit(0 if ok else 1)
EOF
nforced=$(grep -c '"kind":"repair",.*"result":"repaired"' "$dir/force.json")
[ "$nforced" -ge 16 ] || { cat "$dir/force.json"; fail "--force-rebuild rebuilt only $nforced objects"; }
killed=0
for i in $(seq 8); do
	# killed a random 0-90 ms after its first rebuild was reported: mid-way through the
	# rebuilds of phase 2 (each takes milliseconds here)
	"$SCRUB" --force-rebuild --json "$mnt" >"$dir/k.json" 2>&1 &
	k=$!
	for _ in $(seq 400); do
		grep -q '"kind":"repair"' "$dir/k.json" 2>/dev/null && break
		kill -0 "$k" 2>/dev/null || break
		sleep 0.01
	done
	sleep "0.0$((RANDOM % 10))"
	kill -9 "$k" 2>/dev/null && killed=$((killed + 1))
	wait "$k" 2>/dev/null
	daemon_alive "client killed (round $i)"
done
wait "$spid"; src=$?; spid=""
[ $src -eq 0 ] || { tail "$dir/stress.out"; fail "the load beside the forced rebuilds failed: exit $src"; }
"$SCRUB" -n "$mnt" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "scrub -n after the kills"; }
checksums "after the kills"
umount_fs
"$BIN/mendfs_repair" -n "$img" >"$dir/rep" 2>&1 || { cat "$dir/rep"; fail "mendfs_repair -n after the kills"; }
ok "--force-rebuild rebuilt $nforced objects under load (mendfs_stress passed); client killed" \
	"$killed times ($(grep -c 'cancelled' "$log") repairs cancelled by it): daemon alive, clean"
exit 0
