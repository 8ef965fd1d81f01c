#!/bin/bash
# t_repair_reap.sh — a rebuild of AG 0's free-space trees (type 4) or reverse map (type 7)
# whose reap (the old tree's blocks freed after its commit, in transactions of their own:
# repair/repair_reap.c) is cut short, as a crash would cut it: the daemon's repair test
# hook fails it at its first "reaped" point, right after the commit.  The AG header then
# says old tree blocks are still to be freed: mendfs_repair -n names that, and nothing
# else in AG 0 (exit 4).  Then the next read-write mount frees them before serving
# (mendfs_scrub -n clean, the files unchanged, mendfs_repair -n clean after unmount), or
# mendfs_repair does (exit 1, then -n clean) — also when the reverse map is damaged too,
# which that rebuild needs: its pass rebuilds the map first (exit 1, not 9).  Then the
# same cut at the accounting before the reap ("accounting"), which stops the journal.
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/stresslib.sh"
. "$(dirname "$0")/repairlib.sh"
repair_setup t_repair_reap
hook_setup
half_deleted

# cut POINT TYPE WHEN TEXT: on the mounted image, a rebuild of TYPE in AG 0 stopped by the
# repair test hook failing at POINT (after its commit); the reply must say TEXT
cut() {
	echo fail >"$hk/$1"
	repair_reply '^oflags .* error -4:' "$dir/reply" python3 "$REPAIR_CLIENT" "$2" 0 ||
		{ cat "$dir/reply"; fail "$3: the rebuild was not stopped by the test hook"; }
	grep -q "$4" "$dir/reply" || { cat "$dir/reply"; fail "$3: the reply does not say '$4'"; }
	rm "$hk/$1"
}

for run in "4 mount" "7 mount" "7 mendfs_repair" "4 damaged"; do
	read -r type way <<<"$run"
	mount_fs
	# the rebuild commits, its reap is stopped
	cut reaped "$type" "type $type, $way" "the new trees are committed"
	umount_fs
	"$BIN/mendfs_repair" -n "$img" >"$dir/out" 2>&1; rc=$?
	[ $rc -eq 4 ] && grep -q "AG 0: old tree blocks of an interrupted rebuild are still to be freed" "$dir/out" ||
		{ cat "$dir/out"; fail "type $type, $way: mendfs_repair -n after the stopped reap: exit $rc"; }
	[ "$(grep -c 'AG 0' "$dir/out")" -eq 1 ] ||
		{ cat "$dir/out"; fail "type $type, $way: mendfs_repair -n reports more than the mark in AG 0"; }
	ok "type $type, $way: the stopped reap leaves AG 0 marked, named by mendfs_repair -n (exit 4)"
	if [ $way = mount ]; then
		: >"$log"
		mount_fs
		grep -q "AG 0: freed the old tree blocks of an interrupted rebuild" "$log" ||
			fail "type $type: the mount did not free the old tree blocks"
		clean_unmount "type $type, after the mount"
	elif [ $way = mendfs_repair ]; then
		"$BIN/mendfs_repair" "$img" >"$dir/out" 2>&1; rc=$?
		[ $rc -eq 1 ] && grep -q "freed the old tree blocks of 1 interrupted rebuild" "$dir/out" ||
			{ cat "$dir/out"; fail "mendfs_repair: exit $rc"; }
	else
		# the reverse map damaged too (a bad checksum): the free-space rebuild that frees
		# the blocks refuses until it is rebuilt, which the pass does first — all repaired
		# (exit 1), not an operational error
		root=$(db_field "$img" "agh 0" "rmap root")
		"$DB" -w -c "fuzz -c block $root numrecs add 1" "$img" >"$dir/wout" 2>&1 ||
			{ cat "$dir/wout"; fail "damaging the reverse map"; }
		"$BIN/mendfs_repair" "$img" >"$dir/out" 2>&1; rc=$?
		[ $rc -eq 1 ] || { cat "$dir/out"; fail "mendfs_repair, reverse map damaged too: exit $rc"; }
	fi
	if [ $way != mount ]; then
		"$BIN/mendfs_repair" -n "$img" >"$dir/out" 2>&1; rc=$?
		[ $rc -eq 0 ] || { cat "$dir/out"; fail "type $type, $way: mendfs_repair -n after the recovery: exit $rc"; }
	fi
	ok "type $type, $way: the old tree blocks freed, mendfs_repair -n clean"
done

# The accounting after the commit cut short (the test hook fails at its start: the new
# trees' blocks not yet in the reverse map, or still in the free-space trees): the daemon
# stops its journal — the reply says so, nothing new can be written, the unmount does not
# hang — and the next mount finishes the job from the mark.
for type in 4 7; do
	mount_fs
	cut accounting "$type" "type $type, accounting" "the journal is stopped until the next mount"
	# (bounded: the daemon once spun on the stopped journal's error, EINTR then)
	if bounded 30 sh -c 'echo x >"$1"' sh "$mnt/after_stop" 2>/dev/null; then
		fail "type $type, accounting: a file was created after the journal stopped"
	fi
	umount_status
	echo "type $type, accounting: the daemon exited with status $rc after the unmount"
	"$BIN/mendfs_repair" -n "$img" >"$dir/out" 2>&1; rc=$?
	[ $rc -eq 4 ] && grep -q "AG 0: old tree blocks of an interrupted rebuild are still to be freed" "$dir/out" ||
		{ cat "$dir/out"; fail "type $type, accounting: mendfs_repair -n after the stop: exit $rc"; }
	: >"$log"
	mount_fs
	grep -q "AG 0: freed the old tree blocks of an interrupted rebuild" "$log" ||
		fail "type $type, accounting: the mount did not finish the job"
	[ ! -e "$mnt/after_stop" ] || fail "type $type, accounting: the file created after the stop exists"
	clean_unmount "type $type, accounting, after the mount"
	ok "type $type: the accounting stopped, the journal with it; the next mount finished the job"
done

# The by-block tree one record short (its leaf's last: the AG's long free extent, which the
# by-length tree still holds), and the reverse map rebuilt first (as when memory pressure
# stops the free-space rebuild that a scrub runs first): that rebuild trusts the by-block
# tree and gives the extent to ag, and its reap cannot free it into trees that disagree
# (the AG header it commits must still verify: check_repair_frag
# test_rmap_rebuild_over_short_bnobt).  mendfs_scrub then repairs everything — the order
# CI met once, with real memory pressure, in t_scrub_repair.
root=$(db_field "$img" "agh 0" "bno root")
"$DB" -w -c "fuzz block $root numrecs sub 1" "$img" >"$dir/wout" 2>&1 ||
	{ cat "$dir/wout"; fail "damaging the by-block tree"; }
mount_fs
repair_reply '^oflags .* error (0|-117)' "$dir/reply" python3 "$REPAIR_CLIENT" 7 0 ||
	{ cat "$dir/reply"; fail "short by-block tree: the reverse map's rebuild"; }
scrub_repairing "$dir/out" || { cat "$dir/out.all"; fail "short by-block tree: mendfs_scrub"; }
clean_unmount "short by-block tree"
ok "a short by-block tree, the reverse map rebuilt first: all repaired by mendfs_scrub"
exit 0
