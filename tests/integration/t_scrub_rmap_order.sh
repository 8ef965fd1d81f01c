#!/bin/bash
# t_scrub_rmap_order.sh — an AG's reverse map damaged (a file's extent record moved onto the
# free extent after it) and its rebuild refused (here: the daemon's memory-pressure watcher
# fired by the repair test hook at the rmap rebuild's "gathered" point, as real PSI
# pressure on a loaded machine does; every other repair goes through): mendfs_scrub must
# not rebuild what is rebuilt from that reverse map — the AG's free-space trees (they give
# the file's block to free space) nor the file's extent map (it takes the moved record) —
# nor report the reverse map "set right".  The files must read back the same after that
# scrub; a later scrub (no pressure) repairs everything.  Failed before scrub/fix.c held
# those rebuilds (FIX_HELD): scrub 1 said "all repaired" (bno, cnt, inode 148's extent map
# rebuilt from the damaged reverse map, the reverse map "set right by the repairs after
# it") and d0/f18 no longer read back — what failed t_scrub_repair's "a reverse-map record
# moved onto free space" round once in three under load, with real pressure.
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/stresslib.sh"
. "$(dirname "$0")/repairlib.sh"
repair_setup t_scrub_rmap_order
hk=$dir/hooks
mkdir "$hk"
populate_ags 200000 150
agfield() { db_field "$pop" "agh $1" "$2"; }
agblocks=$(agfield 1 length)
# (as t_scrub_repair's rmap_before_free, AG 0)
root=$(agfield 0 'rmap root')
lev=$("$DB" -c "agh 0" "$pop" | sed -n 's/^rmap root = [0-9]*, levels = \([0-9]*\).*/\1/p')
if [ "$lev" = 1 ]; then leaves=("$root"); else
	mapfile -t leaves < <("$DB" -c "fields block $root" "$pop" | awk '$1 ~ /^ptr\[/ { print $3 }')
fi
starts=" $("$DB" -c "btree 0 bno" "$pop" | awk '$2 == "startblock" { printf "%s ", $3 }')"
read -r rleaf ri <<<"$(for l in "${leaves[@]}"; do
	"$DB" -c "fields block $l" "$pop" | awk -v starts="$starts" -v fsb=$l '
		$1 ~ /^rec\[[0-9]+\]\.startblock$/ { split($1, p, /[][]/); s[p[2]] = $3 }
		$1 ~ /^rec\[[0-9]+\]\.blockcount$/ { split($1, p, /[][]/); c[p[2]] = $3 }
		$1 ~ /^rec\[[0-9]+\]\.owner$/ { split($1, p, /[][]/); i = p[2]
			if ($3 < 1e18 && index(starts, " " (s[i] + c[i]) " ")) { print fsb, i; exit } }'
done | head -1)"
[ -n "${ri:-}" ] || fail "no record of a file's extent before free space in AG 0"
cp --sparse=always "$pop" "$img"
"$DB" -w -c "fuzz block $rleaf rec[$ri].startblock add 1" "$img" >/dev/null 2>&1 || fail "damage"

# Every repair held at "reserved"; the reverse map's is stopped by (test) memory pressure at
# "gathered", the others go on.
export MENDFS_TEST_REPAIR_DIR=$hk
mount_fs
echo hold >"$hk/reserved"
( while [ ! -e "$dir/ctl.stop" ]; do
	if [ -e "$hk/held-reserved" ]; then
		read -r type agno <"$hk/held-reserved"
		if [ "$type" = 7 ]; then echo pressure >"$hk/gathered"; else rm -f "$hk/gathered"; fi
		echo "$type $agno" >>"$dir/ctl.log"
		rm -f "$hk/reserved"
		while [ -e "$hk/held-reserved" ]; do sleep 0.005; done
		echo hold >"$hk/reserved"
	fi
	sleep 0.005
  done ) &
ctl=$!
"$SCRUB" "$mnt" >"$dir/out" 2>&1
touch "$dir/ctl.stop"; wait "$ctl"
rm -f "$hk/reserved" "$hk/gathered"
cat "$dir/out"
echo "--- repairs held: $(tr '\n' ' ' <"$dir/ctl.log")"
grep -q "repair of object type 7 AG 0: memory pressure (test)" "$log" ||
	fail "the reverse map's repair was not stopped"
checksums "the scrub whose reverse-map rebuild was stopped"
# a load that allocates in AG 0 (its damaged reverse map may refuse part of it: EUCLEAN stops the loop)
mkdir "$mnt/d0/new" && for i in $(seq 200); do head -c 3000 /dev/urandom >"$mnt/d0/new/n$i" || break; done
checksums "after the scrub whose reverse-map rebuild was stopped"
scrub_repairing "$dir/out2" || { cat "$dir/out2.all"; fail "the scrub after"; }
"$SCRUB" -n "$mnt" >"$dir/out3" 2>&1 || { cat "$dir/out3"; fail "scrub -n after"; }
checksums "after the second scrub"
umount_fs
ok "the reverse map's rebuild stopped: files unchanged; repaired by the next scrub"
