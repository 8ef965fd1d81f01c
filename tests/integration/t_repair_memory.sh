#!/bin/bash
# t_repair_memory.sh — online repair and memory: the promises of DESIGN.md "Scrub and
# repair" step 6 on a mounted filesystem, with the daemon's repair test hook
# (MENDFS_TEST_REPAIR_DIR, fs/ctl_testhook.c) to act while a rebuild is at a known step.
#
#   - the daemon lowers its oom_score_adj at start (-500, or 0 without CAP_SYS_RESOURCE:
#     it is started with 300 here), and mendfs_scrub runs with 1000 while it repairs;
#   - rebuilding one AG's free-space trees blocks only allocations that need that AG: with
#     the rebuild of AG X held before its commit, appending to a file whose last extent is
#     in AG X completes (the allocator's bounded wait sends it to another AG), and a reader
#     is not blocked; released, the rebuild commits and the file reads back intact;
#   - nor changes of the inodes living in the AG being rebuilt: with the rebuild of AG 0's
#     free-space trees, then of its reverse map, held before the commit, a touch, a chmod,
#     an append and a create (its inode in another AG) in a directory of AG 0, a statfs
#     and a listing complete, also while a
#     truncate of a file of AG 0 (which frees there) waits for the rebuild;
#   - abort triggers, each a REPAIR of AG 0's free-space trees on an idle mount (noatime),
#     with `mendfs_db metasum` (a CRC of every metadata block) of the unmounted image the
#     same before and after, the daemon serving (files read back the same) all along:
#       scratch (O_TMPFILE) on a 32 KiB tmpfs: ENOSPC;
#       the client in a child memory cgroup of 32 MiB: the reserve is refused up front by
#         the headroom check, which reads the client's cgroup (SO_PEERCRED pid); the same
#         for mendfs_scrub --force-rebuild in it (AG trees and free lists unchanged);
#       a client in a child memory cgroup of 256 MiB, held mid-rebuild while a memory hog
#         in the same cgroup passes the limit: the cgroup's OOM killer takes the client
#         (oom_score_adj 1000), never the daemon (outside the cgroup);
#       memory pressure fired inside the sort (the hook fires the daemon's watcher);
#       the client killed with SIGKILL mid-rebuild (held after the new trees are built);
#       CANCEL sent on the control socket mid-rebuild;
#     then the same REPAIR from the child cgroup raised to 512 MiB succeeds, a scrub -n is
#     clean, and mendfs_repair -n after unmount is clean.
# A real memory-pressure notification (the kernel's PSI, a cgroup event: the reply names
# the source) may stop any of these repairs before the step it is meant to reach: it
# changed nothing, as promised, and the step is tried again (5 tries, 2 s apart: PSI's
# window) with a note; the test hook's own pressure is named "test".
# Every child cgroup is removed at exit, whatever happened.  Skips (77) without root or
# without a memory cgroup hierarchy in which a child can be made and limited.
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/repairlib.sh"     # checksums, pressure_stopped/_note, repair_reply
[ "$(id -u)" = 0 ] || { echo "skip: needs root (memory cgroups, tmpfs, oom_score_adj)"; exit 77; }
ml_setup t_repair_memory
hk=$dir/hooks
mkdir "$dir/run" "$hk"
export MENDFS_RUNDIR=$dir/run MENDFS_TEST_REPAIR_DIR=$hk
tmpfs=$dir/tmpfs
cg="" cgparent=""
ml_extra_cleanup=cleanup_extra
trap 'exit 1' INT TERM HUP

# ---- the child memory cgroup ------------------------------------------------------------------
# cg_find: $cgparent = this shell's memory cgroup directory (v1 "memory" hierarchy, else
# cgroup v2), $cgver its version; 1 when there is none.
cg_find() {
	local line pre post root mp fstype super rel want
	for want in 1 2; do
		mp="" root=""
		while read -r line; do
			pre=${line%% - *} post=${line#* - }
			set -- $post; fstype=$1 super=${3:-}
			if [ $want = 1 ]; then
				[ "$fstype" = cgroup ] && [[ ",$super," == *,memory,* ]] || continue
			else
				[ "$fstype" = cgroup2 ] || continue
			fi
			set -- $pre; root=$4 mp=$5
			break
		done </proc/self/mountinfo
		[ -n "$mp" ] || continue
		if [ $want = 1 ]; then
			rel=$(sed -n 's/^[0-9]*:\([^:]*,\)\{0,1\}memory\(,[^:]*\)\{0,1\}:\(.*\)$/\3/p' /proc/self/cgroup)
		else
			rel=$(sed -n 's/^0:://p' /proc/self/cgroup)
		fi
		[ -n "$rel" ] || continue
		[ "$root" != / ] && rel=${rel#"$root"}
		[ "$rel" = / ] && rel=""
		cgparent=$mp$rel cgver=$want
		[ -d "$cgparent" ] && return 0
	done
	return 1
}
cg_limit() {   # cg_limit BYTES
	if [ "$cgver" = 1 ]; then echo "$1" >"$cg/memory.limit_in_bytes"
	else echo "$1" >"$cg/memory.max"; fi
}
cg_oom_kills() {
	if [ "$cgver" = 1 ]; then sed -n 's/^oom_kill //p' "$cg/memory.oom_control"
	else sed -n 's/^oom_kill //p' "$cg/memory.events"; fi
}
# "${cg_exec[@]}" CMD...: CMD run inside the child cgroup (a command, not a function: its
# pid is CMD's); cg_run CMD...: the same in the background ($! is its pid)
cg_exec=(sh -c 'echo $$ >"$0/cgroup.procs" && exec "$@"')
cg_run() { "${cg_exec[@]}" "$cg" "$@" & }
cleanup_extra() {
	mountpoint -q "$tmpfs" 2>/dev/null && umount -l "$tmpfs"
	[ -n "$cg" ] && [ -d "$cg" ] || return 0
	local p
	for p in $(cat "$cg/cgroup.procs" 2>/dev/null); do    # only what this test started
		kill -9 "$p" 2>/dev/null
		echo "$p" >"$cgparent/cgroup.procs" 2>/dev/null
	done
	for _ in $(seq 100); do rmdir "$cg" 2>/dev/null && break; sleep 0.05; done
	[ -d "$cg" ] && echo "WARNING: could not remove the cgroup $cg"
}
cg_find || { echo "skip: no memory cgroup hierarchy mounted"; exit 77; }
cg=$cgparent/mendfs-t_repair_memory-$$
if ! mkdir "$cg" 2>/dev/null; then
	cg=""
	echo "skip: cannot create a child cgroup under $cgparent"; exit 77
fi
if ! cg_limit $((32 << 20)) 2>/dev/null; then
	echo "skip: cannot limit the memory of a child cgroup ($cg)"; exit 77
fi
[ "$cgver" = 2 ] && echo 0 >"$cg/memory.swap.max" 2>/dev/null
[ "$cgver" = 1 ] && echo 0 >"$cg/memory.swappiness" 2>/dev/null

# ---- the filesystem ------------------------------------------------------------------------------
# The daemon starts with oom_score_adj 300 (as if its starter had raised it): it must come down.
cat >"$dir/mendfs" <<EOF
#!/bin/sh
echo 300 >/proc/self/oom_score_adj
exec "$MENDFS" "\$@"
EOF
chmod +x "$dir/mendfs"
MENDFS=$dir/mendfs
"$MKFS" -q -a 4 -b 1024 "$img" 64M || fail "mkfs"
mount_fs -o noatime
mkdir -p "$mnt/d" || fail "mkdir"
for i in $(seq 120); do head -c 1500 /dev/urandom >"$mnt/d/f$i" || fail "f$i"; done
for i in $(seq 1 2 120); do rm "$mnt/d/f$i" || fail "rm"; done
# a file from AG 0 into the next AG: its last extent's AG is the one rebuilt in the last part
head -c 20000000 /dev/urandom >"$mnt/big" || fail "big"
(cd "$mnt" && md5sum big d/*) >"$dir/sums" || fail "md5sum"
bigino=$(stat -c %i "$mnt/big")
umount_fs
# last_ag: the AG of the big file's last extent (from the reverse maps: any fork format)
last_ag() {
	for a in 0 1 2 3; do
		"$DB" -c "btree $a rmap" "$img" | sed -n "s/.* owner ino $bigino offset \([0-9]*\)\$/\1 $a/p"
	done | sort -n | tail -1 | cut -d' ' -f2
}
x=$(last_ag)
[ -n "$x" ] || fail "cannot find the big file's last extent"
[ "$x" -gt 0 ] || fail "the big file's last extent is in AG 0 (expected a later AG)"

serving() {       # the small files only: the big one is read back at the end
	kill -0 "$pid" 2>/dev/null || fail "$1: the daemon is gone"
	ls "$mnt/d" >/dev/null || fail "$1: ls"
	(cd "$mnt" && grep ' d/' "$dir/sums" | md5sum --quiet -c) >"$dir/md5" 2>&1 ||
		{ cat "$dir/md5"; fail "$1: files do not read back the same"; }
}
# pressure_pause TRY WHAT: after a real pressure stop (repairlib's pressure_stopped), its
# note and PSI's window; fails at the last try
pressure_pause() {
	[ "$1" -lt "$PRESSURE_TRIES" ] ||
		{ cat "$dir/out"; fail "$2: stopped by real memory pressure $1 times"; }
	pressure_note "$1" "$2" "$dir/out"
}
alive() { local s; s=$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null) && [ "$s" != Z ]; }
# held POINT CMD...: start CMD in the background (output in $dir/out, pid in $cpid) and
# wait (bounded) until the daemon holds its repair at POINT; again when real memory
# pressure stopped the repair before it got there
held() {
	local point=$1 try
	shift
	for ((try = 1; try <= PRESSURE_TRIES; try++)); do
		"$@" >"$dir/out" 2>&1 &
		cpid=$!
		for _ in $(seq 3000); do
			[ -e "$hk/held-$point" ] && return 0
			alive "$cpid" || break
			sleep 0.02
		done
		[ -e "$hk/held-$point" ] && return 0
		{ wait "$cpid"; } 2>/dev/null
		pressure_stopped "$dir/out" || { cat "$dir/out"; fail "no repair was held at $point"; }
		pressure_pause $try "held at $point"
	done
}
# client WANT CMD...: repairlib's repair_reply into $dir/out, failing on another reply
client() {
	repair_reply "$1" "$dir/out" "${@:2}" || { cat "$dir/out"; fail "client ${*:2}: expected $1"; }
}
# abort_done NAME [REGEXP]: after the trigger ran on the mount: daemon serving, unmount,
# metadata unchanged (the metasum lines matching REGEXP only, when given)
abort_done() {
	serving "$1"
	umount_fs
	"$DB" -c metasum "$img" >"$dir/sum.after" 2>&1
	if [ -n "${2:-}" ]; then
		grep -E "$2" "$dir/sum.before" >"$dir/sum.b" && mv "$dir/sum.b" "$dir/sum.before"
		grep -E "$2" "$dir/sum.after" >"$dir/sum.a" && mv "$dir/sum.a" "$dir/sum.after"
	fi
	cmp -s "$dir/sum.before" "$dir/sum.after" ||
		{ diff "$dir/sum.before" "$dir/sum.after" | head; cat "$dir/out"; fail "$1: metadata changed"; }
	ok "$1: metadata unchanged ($(wc -l <"$dir/sum.after") blocks), daemon serving"
}
abort_begin() {
	"$DB" -c metasum "$img" >"$dir/sum.before" 2>&1 || { cat "$dir/sum.before"; fail "metasum"; }
	mount_fs -o noatime
}

# ---- oom_score_adj ---------------------------------------------------------------------------------
abort_begin
# (lowered once it serves, just after the mount appears: polled)
for _ in $(seq 250); do
	adj=$(cat "/proc/$pid/oom_score_adj")
	[ "$adj" = -500 ] || grep -q "oom_score_adj to -500" "$log" && break
	sleep 0.02
done
adj=$(cat "/proc/$pid/oom_score_adj")
if grep -q "cannot lower oom_score_adj to -500" "$log"; then
	[ "$adj" = 0 ] || fail "daemon: oom_score_adj $adj, expected 0 (lowering to -500 refused)"
else
	[ "$adj" = -500 ] || fail "daemon: oom_score_adj $adj, expected -500"
fi
ok "the daemon started with oom_score_adj 300 runs with $adj"
echo hold >"$hk/reserved"
held reserved "$SCRUB" --force-rebuild "$mnt"
cadj=$(cat "/proc/$cpid/oom_score_adj")
kill -TERM "$cpid"                # it stops; the held repair sees the hang-up
wait "$cpid"
rm "$hk/reserved"
[ "$cadj" = 1000 ] || fail "mendfs_scrub repairing with oom_score_adj $cadj, expected 1000"
ok "mendfs_scrub repairs with oom_score_adj 1000"
umount_fs

# released_rebuilt TYPE AGNO: the REPAIR of TYPE in AGNO held at "built" and released (its
# client $cpid) replied "rebuilt"; real memory pressure while it was held stops it at the
# commit (nothing changed): then it is held and released again
released_rebuilt() {
	local try=1
	while ! grep -q '^oflags 0x20 error 0: rebuilt' "$dir/out" && pressure_stopped "$dir/out"; do
		pressure_pause $try "the held rebuild of type $1 in AG $2, released"
		try=$((try + 1))
		echo hold >"$hk/built"
		held built python3 "$REPAIR_CLIENT" "$1" "$2"
		rm "$hk/built"
		wait "$cpid"
	done
	grep -q '^oflags 0x20 error 0: rebuilt' "$dir/out" ||
		{ cat "$dir/out"; fail "the held rebuild of type $1 in AG $2"; }
}

# ---- one AG rebuilding does not block allocations that can go elsewhere --------------------------------
mount_fs -o noatime
echo hold >"$hk/built"
held built python3 "$REPAIR_CLIENT" 4 "$x"
rpid=$cpid
head -c 1000000 /dev/urandom >"$dir/tail"
( cat "$dir/tail" >>"$mnt/big" && sync "$mnt/big" && touch "$dir/appended" ) &
wpid=$!
( md5sum "$mnt/d/f2" >/dev/null && touch "$dir/read" ) &
reader=$!
for _ in $(seq 3000); do [ -e "$dir/appended" ] && [ -e "$dir/read" ] && break; sleep 0.02; done
[ -e "$dir/appended" ] && stillheld=$(ls "$hk" | grep -c held-built)
rm "$hk/built"
wait "$wpid" || fail "the append failed"
wait "$reader" || fail "the read failed"
wait "$rpid"
[ -e "$dir/appended" ] && [ "${stillheld:-0}" = 1 ] ||
	fail "the append to a file in AG $x did not complete while AG $x was being rebuilt"
# Real memory pressure while it was held stops it at the commit (nothing changed): held
# and released again
released_rebuilt 4 "$x"
"$SCRUB" -n "$mnt" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "scrub -n after the held rebuild"; }
[ "$(head -c 20000000 "$mnt/big" | md5sum | cut -d' ' -f1)" = "$(sed -n 's/  big$//p' "$dir/sums")" ] &&
	tail -c 1000000 "$mnt/big" | cmp -s - "$dir/tail" || fail "the big file does not read back"
(cd "$mnt" && md5sum big d/*) >"$dir/sums" || fail "md5sum"
umount_fs
newx=$(last_ag)
[ -n "$newx" ] && [ "$newx" -ne "$x" ] || fail "the appended extent went to AG ${newx:-?}, expected another than $x"
"$BIN/mendfs_repair" -n "$img" >"$dir/rep" 2>&1 || { cat "$dir/rep"; fail "mendfs_repair -n"; }
ok "appending to a file in AG $x (new extent in AG $newx) and reading completed while AG $x's rebuild was held; mendfs_repair -n clean"
# ---- one AG rebuilding does not stop the changes of the inodes living in it ------------------------------
# AG 0 holds every inode here.  Its free-space trees (type 4), then its reverse map (7),
# rebuilt and held before the commit (the AG's space lock held), a truncate of a file of
# AG 0 started first (it frees there: it waits, holding no AG lock): a create (its inode
# goes to another AG), a touch, a chmod and an
# append (AG 0 is full: the new blocks go elsewhere) to files of AG 0, a statfs and a
# listing complete while it is held (before the AG's two locks they waited for the commit).
for typ in 4 7; do
	mount_fs -o noatime
	mv "$mnt/d/f$((typ == 4 ? 8 : 10))" "$mnt/tr$typ" || fail "mv"
	rm -f "$dir/changed" "$dir/truncated"
	echo hold >"$hk/built"
	held built python3 "$REPAIR_CLIENT" $typ 0
	rpid=$cpid
	# a truncate first: it frees in AG 0, so it waits for the rebuild, holding no AG lock
	# (but its file's lock: the file is moved out of the directory listed below)
	tf=$mnt/tr$typ
	( truncate -s 0 "$tf" && touch "$dir/truncated" ) &
	tpid=$!
	( touch -m -d @123456789$typ "$mnt/d/f2" && chmod 60$typ "$mnt/d/f4" &&
	  echo new >"$mnt/d/new$typ" &&
	  head -c 5000 /dev/urandom >>"$mnt/d/f6" && sync "$mnt/d/f6" && df "$mnt" >/dev/null &&
	  ls -l "$mnt/d" >/dev/null && touch "$dir/changed" ) &
	wpid=$!
	for _ in $(seq 1500); do [ -e "$dir/changed" ] && break; sleep 0.02; done
	stillheld=0
	[ -e "$dir/changed" ] && stillheld=$(ls "$hk" | grep -c held-built)
	trwaited=0
	[ -e "$dir/truncated" ] || trwaited=1
	rm "$hk/built"
	wait "$wpid" || fail "type $typ: the changes of files in AG 0 failed"
	wait "$rpid"
	[ -e "$dir/changed" ] && [ "$stillheld" = 1 ] ||
		fail "type $typ: changes of inodes in AG 0 waited for the rebuild of AG 0's space"
	released_rebuilt $typ 0
	wait "$tpid" || fail "type $typ: the truncate during the rebuild failed"
	[ "$(stat -c %s "$tf")" = 0 ] || fail "type $typ: $tf not truncated"
	[ "$trwaited" = 1 ] || fail "type $typ: the truncate did not wait for AG 0 (its blocks elsewhere?)"
	[ "$(stat -c %Y.%a "$mnt/d/f2")" = "123456789$typ.644" ] &&
		[ "$(stat -c %a "$mnt/d/f4")" = 60$typ ] && [ "$(cat "$mnt/d/new$typ")" = new ] ||
		fail "type $typ: the changes made during the rebuild are not there"
	"$SCRUB" -n "$mnt" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "type $typ: scrub -n after the held rebuild"; }
	(cd "$mnt" && md5sum big d/*) >"$dir/sums" || fail "md5sum"
	umount_fs
	"$BIN/mendfs_repair" -n "$img" >"$dir/rep" 2>&1 || { cat "$dir/rep"; fail "type $typ: mendfs_repair -n"; }
done
ok "create, touch, chmod, append in a directory of AG 0, statfs and ls completed (a truncate there waiting) while AG 0's free-space trees, then its reverse map, were rebuilt and held; scrub -n and mendfs_repair -n clean"

# ---- abort: scratch on a full tmpfs -----------------------------------------------------------------
# Each abort is one REPAIR of AG 0's free-space trees from the small client: a mendfs_scrub
# --force-rebuild also rebuilds objects that need no scratch (superblock copies refreshed
# from the primary, AG headers), which may change blocks for good reasons.
abort_begin
mkdir "$tmpfs" && mount -t tmpfs -o size=32k tmpfs "$tmpfs" || fail "tmpfs"
SCRATCH_DIR=$tmpfs client "^oflags 0x40 error -(28|12): .*(scratch|reserve)" python3 "$REPAIR_CLIENT" 4 0
umount "$tmpfs"
abort_done "scratch on a 32 KiB tmpfs"

# ---- abort: the client in a child memory cgroup too small: refused up front -----------------------------
abort_begin
client "^oflags 0x40 error -12: refused.*memory cgroup $cg.* of the client" \
	"${cg_exec[@]}" "$cg" python3 "$REPAIR_CLIENT" 4 0
abort_done "client in a 32 MiB memory cgroup: refused, $(grep -m1 -o 'only [0-9.]* MiB of memory is available' "$dir/out")"
# mendfs_scrub itself in that cgroup: every rebuild that needs scratch refused, naming the
# cgroup; the AG trees and free lists unchanged (what needs no scratch may be rebuilt)
abort_begin
for try in 1 2 3 4 5; do
	cg_run "$SCRUB" --force-rebuild "$mnt" >"$dir/out" 2>&1
	cpid=$!
	{ wait "$cpid"; } 2>/dev/null
	grep -Eq "^Repaired: AG [0-9]+ (free space|inode btree|AG free list)" "$dir/out" &&
		{ cat "$dir/out"; fail "mendfs_scrub in a 32 MiB cgroup: an AG tree was rebuilt"; }
	grep -Eq "^Not repaired: AG 0 free space by (block|length) btree: .*refused.*memory cgroup $cg.* of the client" \
		"$dir/out" && break
	pressure_stopped "$dir/out" || { cat "$dir/out"; fail "mendfs_scrub in a 32 MiB cgroup: not refused"; }
	pressure_pause $try "mendfs_scrub --force-rebuild in a 32 MiB cgroup"
done
abort_done "mendfs_scrub --force-rebuild in a 32 MiB memory cgroup: refused" '^(bno|cnt|ino|rmap|agfl) '

# ---- abort: the client OOM-killed in its cgroup mid-rebuild ----------------------------------------------
abort_begin
cg_limit $((256 << 20)) || fail "raising the cgroup's limit"
kills0=$(cg_oom_kills)
echo hold >"$hk/built"
OOM_ADJ=1000 held built "${cg_exec[@]}" "$cg" python3 "$REPAIR_CLIENT" 4 0
# a hog in the same cgroup goes past its limit; the client (oom_score_adj 1000) goes first
cg_run python3 -c 'import os; os.posix_fallocate(os.memfd_create("hog"), 0, 400 << 20)'
hog=$!
{ wait "$cpid"; } 2>/dev/null; rc=$?
{ wait "$hog"; } 2>/dev/null
rm "$hk/built"
[ $rc -eq 137 ] || { cat "$dir/out"; fail "OOM: the client exited $rc, expected a SIGKILL"; }
[ "$(cg_oom_kills)" -gt "${kills0:-0}" ] || fail "OOM: the cgroup's OOM killer did not run"
for _ in $(seq 250); do [ -e "$hk/held-built" ] || break; sleep 0.02; done
abort_done "client OOM-killed in its 256 MiB cgroup mid-rebuild ($(( $(cg_oom_kills) - ${kills0:-0} )) OOM kills)"

# ---- abort: memory pressure fired inside the sort ----------------------------------------------------
abort_begin
echo pressure >"$hk/sorting"
for t in 4 6; do       # AG 0's free-space trees and inode btree: both sort records
	client "^oflags 0x40 error -125: memory pressure \(test\)" python3 "$REPAIR_CLIENT" $t 0
done
rm "$hk/sorting"
abort_done "memory pressure mid-sort"

# ---- abort: the client killed with SIGKILL mid-rebuild -------------------------------------------------
abort_begin
echo hold >"$hk/built"
held built python3 "$REPAIR_CLIENT" 4 0
{ kill -9 "$cpid"; wait "$cpid"; } 2>/dev/null
for _ in $(seq 250); do [ -e "$hk/held-built" ] || break; sleep 0.02; done
rm "$hk/built"
abort_done "client killed (SIGKILL) mid-rebuild"

# ---- abort: CANCEL mid-rebuild ------------------------------------------------------------------------
abort_begin
echo hold >"$hk/built"
client "^oflags 0x40 error -125: cancelled" python3 "$REPAIR_CLIENT" 4 0 "$hk/held-built"
rm "$hk/built"
abort_done "CANCEL mid-rebuild"

# ---- a later repair with enough memory ------------------------------------------------------------------
mount_fs -o noatime
cg_limit $((512 << 20)) || fail "raising the cgroup's limit"
client '^oflags 0x20 error 0: rebuilt' "${cg_exec[@]}" "$cg" python3 "$REPAIR_CLIENT" 4 0
"$SCRUB" -n "$mnt" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "scrub -n after the rebuild"; }
checksums "after the rebuild"
umount_fs
"$BIN/mendfs_repair" -n "$img" >"$dir/rep" 2>&1 || { cat "$dir/rep"; fail "mendfs_repair -n"; }
ok "the client in a 512 MiB cgroup rebuilt AG 0's free-space trees; scrub -n clean, mendfs_repair -n clean"

exit 0
