#!/bin/bash
# t_repair_reap_kill.sh — the daemon killed with SIGKILL while a rebuild of AG 1's
# free-space trees (type 4) or reverse map (type 7) holds at its reap's first point (the
# repair test hook's "reaped": right after the commit that marks the AG, before any old
# block is freed), 6 times.  An fsync of a file elsewhere meanwhile (rounds 2, 3, 5, 6)
# makes that commit, mark included, durable.  Each remount (journal replay, then the
# mount-time recovery when the mark is in the log; rounds 3 and 6: mendfs_repair first,
# offline) must give a consistent filesystem — mendfs_scrub -n clean, files unchanged,
# mendfs_repair -n clean after unmount — and the recovery must have run at least once.
# (Written by T1, session 9.)
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/stresslib.sh"
. "$(dirname "$0")/repairlib.sh"
repair_setup t_repair_reap_kill
hook_setup
# AG 0 filled first (so the small files' blocks, and the fragmented free space, are in
# REAP_AG); g: a file to fsync while the reap holds REAP_AG's lock (its inode, data in AG 0)
REAP_AG=${REAP_AG:-1}
prefill() {
	[ "$REAP_AG" -eq 0 ] || head -c 15M /dev/zero >"$mnt/big" || return 1
	echo x >"$mnt/g"
}
half_deleted prefill
recovered=0
for round in 1 2 3 4 5 6; do
	type=$([ $((round % 2)) -eq 1 ] && echo 4 || echo 7)
	ag=$REAP_AG
	mount_fs
	echo hold >"$hk/reaped"
	for try in 1 2 3 4 5; do
		python3 "$REPAIR_CLIENT" "$type" "$ag" >"$dir/reply" 2>&1 &
		client=$!
		for _ in $(seq 3000); do
			[ -e "$hk/held-reaped" ] && break
			kill -0 "$client" 2>/dev/null || break
			sleep 0.01
		done
		[ -e "$hk/held-reaped" ] && break
		wait "$client"
		pressure_stopped "$dir/reply" || break
		pressure_note "$try" "round $round" "$dir/reply"
	done
	[ -e "$hk/held-reaped" ] || { cat "$dir/reply"; fail "round $round: the rebuild never reached its reap"; }
	# a writer to that AG's files blocks behind the AG lock meanwhile; then the crash
	if [ "$REAP_AG" -ne 0 ] && [ $((round % 3)) -ne 1 ]; then
		timeout 20 python3 -c 'import os,sys; fd=os.open(sys.argv[1], os.O_WRONLY); os.write(fd, b"y"); os.fsync(fd)' "$mnt/g"
		echo "round $round: fsync of g: exit $?"
	fi
	crash
	wait "$client" 2>/dev/null
	rm -f "$hk/reaped" "$hk/held-reaped"
	if [ $((round % 3)) -eq 0 ]; then
		# offline: mendfs_repair -n (the journal's state), then mendfs_repair
		"$BIN/mendfs_repair" -n "$img" >"$dir/outn" 2>&1; rcn=$?
		"$BIN/mendfs_repair" "$img" >"$dir/out" 2>&1; rc=$?
		echo "round $round: mendfs_repair -n exit $rcn, mendfs_repair exit $rc: $(grep -i 'interrupted' "$dir/out" | head -1)"
		[ $rc -le 1 ] || { cat "$dir/outn" "$dir/out"; fail "round $round: mendfs_repair after the crash: exit $rc"; }
		grep -q "freed the old tree blocks" "$dir/out" && recovered=$((recovered + 1))
	fi
	: >"$log"
	mount_fs
	grep -q "AG $ag: freed the old tree blocks of an interrupted rebuild" "$log" && recovered=$((recovered + 1))
	grep -i "interrupted rebuild" "$log"
	clean_unmount "round $round (type $type, AG $ag), after the crash"
	ok "round $round: type $type AG $ag killed in its reap: consistent after the remount"
done
[ $recovered -ge 1 ] || fail "no round recovered a marked AG (the mark never became durable)"
ok "6 kills in a reap, $recovered recovered (by the mount or mendfs_repair)"
exit 0
