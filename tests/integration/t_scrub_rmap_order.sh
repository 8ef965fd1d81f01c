#!/bin/bash
# t_scrub_rmap_order.sh — an AG's reverse map damaged and its rebuild refused (here: the
# daemon's memory-pressure watcher fired by the repair test hook at the rmap rebuild's
# "gathered" point, as real PSI pressure on a loaded machine does; every other repair goes
# through): mendfs_scrub must not rebuild what is rebuilt from that reverse map, nor report
# the reverse map "set right".  Three rounds (and the second's damage offline), each on a
# fresh copy of one populated image:
#   1. a file's extent record moved onto the free extent after it, the rmap's rebuild
#      stopped every time: neither the AG's free-space trees (they would give the file's
#      block to free space) nor the file's extent map (it would take the moved record) are
#      rebuilt; the files read back the same; a later scrub (no pressure) repairs
#      everything.  Failed before scrub/fix.c held those rebuilds (FIX_HELD): scrub 1 said
#      "all repaired" (bno, cnt, inode 148's extent map rebuilt from the damaged reverse
#      map, the reverse map "set right by the repairs after it") and d0/f18 no longer read
#      back — what failed t_scrub_repair's "a reverse-map record moved onto free space"
#      round once in three under load, with real pressure;
#   2. a record of the AG's own blocks (owner ag) moved past one of its free-list blocks,
#      onto the blocks after it (a file's, or free), the rmap's rebuild stopped every time:
#      the free list is not rebuilt either (its stock is the reverse map's "ag" blocks), and
#      none of those blocks is on it.  Failed before the free list was held and rebuilt
#      after the reverse map: its rebuild, first, put them on the list (a tree's next split
#      writes over them); a file's block there, the reverse map could never be rebuilt
#      again (cross-linked: the scrub after failed).  Offline, mendfs_repair (no pressure)
#      must rebuild the map, then the list: it rebuilt the list first, from the damaged map,
#      the same way, and exited 4;
#   3. round 1's damage, the rmap's rebuild stopped only on its first two tries (those of
#      the AG's repairs): the pending phase tries it once more, and what it held is then
#      rebuilt — the scrub repairs everything.  Failed before the pending phase retried a
#      reverse map stopped by memory pressure (4 left damaged).
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/stresslib.sh"
. "$(dirname "$0")/repairlib.sh"
repair_setup t_scrub_rmap_order
hk=$dir/hooks
mkdir "$hk"
populate_ags 200000 150
agfield() { db_field "$pop" "agh $1" "$2"; }
root=$(agfield 0 'rmap root')
lev=$("$DB" -c "agh 0" "$pop" | sed -n 's/^rmap root = [0-9]*, levels = \([0-9]*\).*/\1/p')
if [ "$lev" = 1 ]; then leaves=("$root"); else
	mapfile -t leaves < <("$DB" -c "fields block $root" "$pop" | awk '$1 ~ /^ptr\[/ { print $3 }')
fi
# AG 0's reverse-map leaves, each as `fields block` lists it after a line "LEAF fsb"
rmap_leaves() { local l; for l in "${leaves[@]}"; do echo "LEAF $l"; "$DB" -c "fields block $l" "$pop"; done; }
# damage 1 (as t_scrub_repair's rmap_before_free): a file's extent just before free space
starts=" $("$DB" -c "btree 0 bno" "$pop" | awk '$2 == "startblock" { printf "%s ", $3 }')"
read -r rleaf ri <<<"$(rmap_leaves | awk -v starts="$starts" '
	$1 == "LEAF" { leaf = $2 }
	$1 ~ /^rec\[[0-9]+\]\.startblock$/ { s = $3 }
	$1 ~ /^rec\[[0-9]+\]\.blockcount$/ { c = $3 }
	$1 ~ /^rec\[[0-9]+\]\.owner$/ && $3 < 1e18 && index(starts, " " (s + c) " ") {
		split($1, p, /[][]/); print leaf, p[2]; exit }')"
[ -n "${ri:-}" ] || fail "no record of a file's extent before free space in AG 0"
# damage 2: an "ag" record (not a leaf's first: its key stays) holding a free-list block b
# before its last block, moved by k = b + 1 - start: b is then nobody's (the free list
# disagrees), and the record covers the k blocks from its end (aend) on: a file's, free...
agfl=" $("$DB" -c "agfl 0" "$pop" | sed -n 's/^slot\[[0-9]*\] = \([0-9]*\)$/\1/p' | tr '\n' ' ')"
read -r aleaf ai aend ak <<<"$(rmap_leaves | awk -v agfl="$agfl" '
	$1 == "LEAF" { leaf = $2 }
	$1 ~ /^rec\[[0-9]+\]\.startblock$/ { s = $3 }
	$1 ~ /^rec\[[0-9]+\]\.blockcount$/ { c = $3 }
	$1 ~ /^rec\[[0-9]+\]\.owner$/ && $3 == "18446744073709551612" && $1 !~ /^rec\[0\]/ {
		for (b = s; b < s + c - 1; b++)
			if (index(agfl, " " b " ")) {
				if (best == "" || b + 1 - s < k) {
					split($1, p, /[][]/); best = leaf " " p[2] " " s + c; k = b + 1 - s
				}
				break
			}
	}
	END { if (best != "") print best, k }')"
[ -n "${ak:-}" ] || fail "no record of the AG's own blocks holding a free-list block in AG 0"

# held_scrub N DAMAGE OUT: $pop damaged (a mendfs_db command) into $img, mounted, and
# scrubbed (repairing) into OUT with every repair held at "reserved", the reverse map's
# stopped by (test) memory pressure at "gathered" on its first N tries (-1: every one),
# the others going on; $dir/ctl.log lists the repairs ("type agno" each), and the daemon's
# log (appended to at each mount) goes on from line $logpos + 1.
export MENDFS_TEST_REPAIR_DIR=$hk
held_scrub() {
	local n=$1
	cp --sparse=always "$pop" "$img"
	"$DB" -w -c "$2" "$img" >/dev/null 2>&1 || fail "damage: $2"
	rm -f "$dir/ctl.stop" "$dir/ctl.log" "$hk"/*
	logpos=$(cat "$log" 2>/dev/null | wc -l)
	mount_fs
	echo hold >"$hk/reserved"
	( while [ ! -e "$dir/ctl.stop" ]; do
		if [ -e "$hk/held-reserved" ]; then
			read -r type agno <"$hk/held-reserved"
			if [ "$type" = 7 ] && [ "$n" != 0 ]; then
				echo pressure >"$hk/gathered"
				n=$((n - 1))
			else
				rm -f "$hk/gathered"
			fi
			echo "$type $agno" >>"$dir/ctl.log"
			rm -f "$hk/reserved"
			while [ -e "$hk/held-reserved" ]; do sleep 0.005; done
			echo hold >"$hk/reserved"
		fi
		sleep 0.005
	  done ) &
	local ctl=$!
	"$SCRUB" "$mnt" >"$3" 2>&1
	local rc=$?
	touch "$dir/ctl.stop"; wait "$ctl"
	rm -f "$hk/reserved" "$hk/gathered"
	cat "$3"
	echo "--- repairs (type agno): $(tr '\n' ' ' <"$dir/ctl.log")"
	return $rc
}
# after a held scrub: a load that allocates in AG 0 (its damaged reverse map may refuse
# part of it: EUCLEAN ends the loop), then a scrub repairs everything; unmounted
repaired_after() {
	checksums "$1: the scrub whose reverse-map rebuild was stopped"
	mkdir "$mnt/d0/new" && for i in $(seq 200); do head -c 3000 /dev/urandom >"$mnt/d0/new/n$i" || break; done
	checksums "$1: after the scrub whose reverse-map rebuild was stopped"
	scrub_repairing "$dir/out2" || { cat "$dir/out2.all"; fail "$1: the scrub after"; }
	"$SCRUB" -n "$mnt" >"$dir/out3" 2>&1 || { cat "$dir/out3"; fail "$1: scrub -n after"; }
	checksums "$1: after the second scrub"
	umount_fs
	"$BIN/mendfs_repair" -n "$img" >"$dir/rep" 2>&1 || { cat "$dir/rep"; fail "$1: mendfs_repair -n"; }
}
# how often this held scrub's test pressure stopped the reverse map's rebuild
stopped() { tail -n +$((logpos + 1)) "$log" | grep -c "repair of object type 7 AG 0: memory pressure (test)"; }

# 1. a file's record moved onto free space
held_scrub -1 "fuzz block $rleaf rec[$ri].startblock add 1" "$dir/out"
[ "$(stopped)" -ge 1 ] || fail "1: the reverse map's repair was not stopped"
grep -q "^Repaired: AG 0 free space\|^Repaired: inode [0-9]* extent map" "$dir/out" &&
	fail "1: rebuilt from the damaged reverse map"
repaired_after 1
ok "1: a file's record moved, the reverse map's rebuild stopped: files unchanged; repaired by the next scrub"

# 2. a record of the AG's own blocks moved past a free-list block
held_scrub -1 "fuzz block $aleaf rec[$ai].startblock add $ak" "$dir/out"
[ "$(stopped)" -ge 1 ] || fail "2: the reverse map's repair was not stopped"
grep -q "^Not repaired: AG 0 AG free list: could not repair: it is rebuilt from the reverse map of AG 0" "$dir/out" ||
	fail "2: the free list was not held"
# none of the blocks the record was moved onto went on the free list (nothing allocated
# meanwhile: the list is as it was)
umount_any
for b in $("$DB" -c "agfl 0" "$img" | sed -n 's/^slot\[[0-9]*\] = \([0-9]*\)$/\1/p'); do
	[ "$b" -lt "$aend" ] || [ "$b" -ge $((aend + ak)) ] || [[ "$agfl" == *" $b "* ]] ||
		fail "2: block $b, which the moved record took ($aend..$((aend + ak - 1))), is on the free list"
done
mount_fs
repaired_after 2
ok "2: the AG's own blocks' record moved, the reverse map's rebuild stopped: free list held, files unchanged; repaired by the next scrub"

# 2, offline: mendfs_repair rebuilds that reverse map first (from the free list as it is),
# then the list (before, the list first took those blocks, and with a file's among them
# the map could not be rebuilt: exit 4)
cp --sparse=always "$pop" "$img"
"$DB" -w -c "fuzz block $aleaf rec[$ai].startblock add $ak" "$img" >/dev/null 2>&1 || fail "damage"
"$BIN/mendfs_repair" "$img" >"$dir/rep" 2>&1
rc=$?
if [ $rc -ne 1 ] && grep -q "stopped by memory pressure before any change$" "$dir/rep"; then
	echo "note: 2 offline: real memory pressure stopped a rebuild after its tries"
	"$BIN/mendfs_repair" "$img" >"$dir/rep" 2>&1
	rc=$?
fi
[ $rc -eq 1 ] || { cat "$dir/rep"; fail "2 offline: mendfs_repair exit $rc, expected 1 (all fixed)"; }
"$BIN/mendfs_repair" -n "$img" >"$dir/rep" 2>&1 || { cat "$dir/rep"; fail "2 offline: mendfs_repair -n after"; }
mount_fs
checksums "2 offline: after mendfs_repair"
umount_fs
ok "2 offline: mendfs_repair rebuilt the reverse map, then the free list; files unchanged"

# 3. round 1's damage, the reverse map's rebuild stopped twice: tried again when pending
if held_scrub 2 "fuzz block $rleaf rec[$ri].startblock add 1" "$dir/out"; then :; else
	pressure_stopped "$dir/out" || fail "3: the scrub did not repair everything"
	echo "note: 3: real memory pressure stopped a repair"
fi
[ "$(grep -c '^7 0$' "$dir/ctl.log")" -ge 3 ] || fail "3: the reverse map was not tried again"
"$SCRUB" -n "$mnt" >"$dir/out3" 2>&1 || pressure_stopped "$dir/out" ||
	{ cat "$dir/out3"; fail "3: scrub -n after"; }
checksums "3: after the scrub"
umount_any
ok "3: the reverse map's rebuild stopped twice: tried again, what it held rebuilt"
