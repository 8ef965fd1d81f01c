#!/bin/bash
# t_repair_headers.sh — online repair of the superblocks, the AG headers, the journal header
# and the summary counters; offline repair of a primary superblock, a journal header and AG
# headers.
#
# A populated image (4 AGs, a large journal) is damaged with mendfs_db -w, mounted, and
# `mendfs_scrub` repairs it under a mendfs_stress load (repairlib.sh's `round`): fields of
# the primary and of copies, copies trashed whole; AG header counters, a free-space root
# pointing at garbage, a reverse-map height (its root searched for); AG headers trashed
# whole (roots found, trees rebuilt: the scrub then says some checks could not run, exit 16,
# and the second `mendfs_scrub -n` — which runs them — is clean).  Each time: every damaged
# object reported repaired, `mendfs_scrub -n` clean, files unchanged, `mendfs_repair -n`
# clean after unmount.  The journal header (both copies) is trashed under a mounted
# filesystem (a mount rewrites it, so it cannot be damaged before): `-n` reports it, the
# repair under load rewrites it from the journal in memory (the load is bounded so that it
# cannot fill the log, whose checkpoint would rewrite a copy itself).  The summary counters'
# rebuilder, asked for online (ctl_client) under load, recounts a wrong AG header.  Rebuilds
# of those objects when clean, under load, all succeed and leave the filesystem clean.  Offline:
# a trashed primary superblock, journal header, AG headers: `mendfs_repair` finds a copy and
# rebuilds the primary, resets the clean journal, rebuilds the headers (exit 1), then `-n` is
# clean and the files mount intact; the journal of a filesystem that was not unmounted
# cleanly is not reset (exit 12: 4 left uncorrected, 8 it cannot be opened).
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/stresslib.sh"
. "$(dirname "$0")/repairlib.sh"
repair_setup t_repair_headers
[ -x "$STRESS" ] || { echo "skip: no mendfs_stress"; exit 77; }
CLIENT=$TOOLS/ctl_client

# ---- a populated image ----------------------------------------------------------------------
populate_ags 100000 80 -J 8M

agfield() { db_field "$pop" "agh $1" "$2"; }
sbfield() { db_field "$pop" sb "$1"; }
agblocks=$(agfield 1 length) logstart=$(sbfield logstart) bs=$(sbfield blocksize)
free1=$(agfield 1 freeblks) icount0=$(agfield 0 icount)
for v in agblocks logstart bs free1 icount0; do [ -n "${!v}" ] || fail "cannot read $v"; done

# ---- online, damaged before the mount --------------------------------------------------------
round "superblocks" "AG 0 superblock;AG 1 superblock;AG 2 superblock;AG 3 superblock" \
	"write sb 0 reserved[3] 5" "write sb 1 byte[400] 7" "fuzz sb 2 agblocks add 1" \
	"trash $((3 * agblocks)) 1 random"
round "AG header fields" "AG 0 AG header;AG 1 AG header;AG 2 AG header;AG 3 AG header" \
	"write agh 0 icount $((icount0 + 64))" "write agh 1 freeblks $((free1 + 1))" \
	"write agh 2 roots[0] 9" "write agh 3 levels[3] 4"
# Whole headers: the checks of their AGs' other objects could not run (exit 16); the second
# scrub, with -n, runs them all.
ROUND_SCRUB_OK=16 round "AG headers trashed" "AG 0 AG header;AG 1 AG header;AG 3 AG header" \
	"trash 1 1 random" "trash $((agblocks + 1)) 1 zeroes" "trash $((3 * agblocks + 1)) 1 ones"

# ---- the journal header, damaged under the mount ---------------------------------------------
cp --sparse=always "$pop" "$img"
mount_fs
dd if=/dev/urandom of="$img" bs="$bs" seek="$logstart" count=2 conv=notrunc status=none ||
	fail "trashing the journal header"
"$SCRUB" -n "$mnt" >"$dir/out" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "^Corruption: journal: .*header unusable" "$dir/out" ||
	{ cat "$dir/out"; fail "journal: scrub -n exit $rc, the damage not reported"; }
# A bounded load (it cannot fill the 8 MiB log: no checkpoint rewrites the header meanwhile)
"$STRESS" -p 2 -n 100 -e 20 -z 32K -S "$mnt/stress" >"$dir/stress.out" 2>&1 &
spid=$!
scrub_repairing "$dir/out"; rc=$?
wait "$spid"; src=$?; spid=""
[ $src -eq 0 ] || { tail "$dir/stress.out"; fail "journal: the load failed"; }
[ $rc -eq 0 ] && grep -q "^Repaired: journal: " "$dir/out.all" ||
	{ cat "$dir/out.all"; fail "journal: scrub exit $rc, not repaired"; }
"$SCRUB" -n "$mnt" >"$dir/out2" 2>&1 || { cat "$dir/out2"; fail "journal: second scrub -n"; }
checksums "journal"
umount_fs
"$BIN/mendfs_repair" -n "$img" >"$dir/rep" 2>&1 || { cat "$dir/rep"; fail "journal: mendfs_repair -n"; }
ok "journal header trashed under the mount: reported, rewritten under load, clean after"

# ---- the summary counters' rebuilder online ----------------------------------------------------
cp --sparse=always "$pop" "$img"
"$DB" -w -c "write agh 2 freeblks $(($(agfield 2 freeblks) + 3))" "$img" >/dev/null ||
	fail "summary: damage"
mount_fs
"$SCRUB" -n "$mnt" >"$dir/out" 2>&1
grep -q "^Cross-reference mismatch: summary counters: .*AG 2 header says" "$dir/out" ||
	{ cat "$dir/out"; fail "summary: the AG 2 counters not reported"; }
"$STRESS" -p 2 -n 100 -e 20 -z 32K -S "$mnt/stress" >"$dir/stress.out" 2>&1 &
spid=$!
repair_reply "oflags 0x20 error 0 " "$dir/r" "$CLIENT" "$mnt" repair 16:0:0; rrc=$?
wait "$spid"; src=$?; spid=""
[ $src -eq 0 ] || { tail "$dir/stress.out"; fail "summary: the load failed"; }
[ $rrc -eq 0 ] || { cat "$dir/r"; fail "summary: the REPAIR failed"; }
"$SCRUB" -n "$mnt" >"$dir/out2" 2>&1 || { cat "$dir/out2"; fail "summary: scrub -n after"; }
checksums "summary"
umount_fs
"$BIN/mendfs_repair" -n "$img" >"$dir/rep" 2>&1 || { cat "$dir/rep"; fail "summary: mendfs_repair -n"; }
ok "summary counters rebuilt online under load (AG 2 header recounted): $(cat "$dir/r")"

# ---- rebuilds of clean objects under load: each must succeed and change nothing visible --------
# (a header changed since its last write has a stale CRC in memory: a rebuild that checked the
# raw bytes took it for trashed and emptied its orphan list)
cp --sparse=always "$pop" "$img"
mount_fs
"$STRESS" -p 3 -n 600 -e 40 -z 32K -S "$mnt/stress" >"$dir/stress.out" 2>&1 &
spid=$!
n=0
for _ in 1 2 3; do
	for spec in 1:0:0 1:2:0 2:0:0 2:1:0 2:2:0 2:3:0 8:0:0 16:0:0; do
		repair_reply "oflags 0x20 error 0 " "$dir/r" "$CLIENT" "$mnt" repair $spec ||
			{ cat "$dir/r"; fail "forced rebuild $spec"; }
		n=$((n + 1))
	done
done
wait "$spid"; src=$?; spid=""
[ $src -eq 0 ] || { tail "$dir/stress.out"; fail "forced: the load failed"; }
"$SCRUB" -n "$mnt" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "forced: scrub -n after"; }
checksums "forced"
umount_fs
"$BIN/mendfs_repair" -n "$img" >"$dir/rep" 2>&1 || { cat "$dir/rep"; fail "forced: mendfs_repair -n"; }
ok "$n rebuilds of clean superblocks, AG headers, the journal header and the summary counters under load: clean"

# ---- offline: a trashed primary superblock (and a copy); a trashed journal header -------------
offline() {
	local name=$1 want=$2
	shift 2
	cp --sparse=always "$pop" "$img"
	"$DB" -w "$@" "$img" >/dev/null || fail "$name: damage"
	"$BIN/mendfs_repair" "$img" >"$dir/rep" 2>&1; rc=$?
	[ $rc -eq 1 ] || { cat "$dir/rep"; fail "$name: mendfs_repair exit $rc, expected 1"; }
	local IFS=';'
	for w in $want; do
		grep -q "^$w: rebuilt" "$dir/rep" || { cat "$dir/rep"; fail "$name: $w not rebuilt"; }
	done
	unset IFS
	"$BIN/mendfs_repair" -n "$img" >"$dir/rep2" 2>&1 || { cat "$dir/rep2"; fail "$name: -n after"; }
	mount_fs
	checksums "$name"
	"$SCRUB" -n "$mnt" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "$name: scrub -n after"; }
	umount_fs
	ok "offline, $name: $(grep -c ': rebuilt' "$dir/rep") rebuilt, mendfs_repair -n and scrub -n clean, files unchanged"
}
offline "primary superblock and a copy trashed" "AG 0 superblock;AG 2 superblock" \
	-c "trash 0 1 random" -c "trash $((2 * agblocks)) 1 zeroes"
offline "journal header trashed" "journal" -c "trash $logstart 2 random"
offline "AG headers trashed" "AG 0 AG header;AG 1 AG header" \
	-c "trash 1 1 random" -c "trash $((agblocks + 1)) 1 zeroes"

# A filesystem not unmounted cleanly: its journal may hold what is nowhere else, no reset.
cp --sparse=always "$pop" "$img"
"$DB" -w -c "write sb 0 state 2" -c "trash $logstart 2 random" "$img" >/dev/null ||
	fail "dirty: damage"
"$BIN/mendfs_repair" "$img" >"$dir/rep" 2>&1; rc=$?
[ $((rc & 4)) -eq 4 ] && grep -q "not unmounted cleanly" "$dir/rep" ||
	{ cat "$dir/rep"; fail "dirty journal: exit $rc, expected 4 and the reason"; }
ok "the damaged journal of a filesystem in use is not reset (exit $rc)"
exit 0
