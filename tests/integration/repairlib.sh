# repairlib.sh — helpers sourced, after mountlib.sh and stresslib.sh, by the tests of online
# repair (not a test itself: `make check` runs only t_*.sh).
#
#   repair_setup NAME         ml_setup NAME, MENDFS_RUNDIR=$dir/run made, $pop named
#   SCRUB                     the mendfs_scrub program
#   checksums WHEN            every file listed in $dir/sums (md5sum format, paths relative
#                             to the mount) still reads back the same
#   umount_any                unmount and wait for the daemon, whatever its exit status (the
#                             daemon of a damaged filesystem may end with status 1)
#   stress_start/stress_stop  short mendfs_stress runs in $mnt/stress/rN beside a repair
#   round NAME WANT DB-CMDS.. copy $pop to $img, damage it with `mendfs_db -w -c CMD...`,
#                             mount, scrub (repairing) under load: every object matching the
#                             ';'-separated regexps WANT reported repaired, exit 0; then a
#                             load, `mendfs_scrub -n` clean, checksums, unmount,
#                             `mendfs_repair -n` clean.  A scrub whose repair memory
#                             pressure stopped (changing nothing) is run again (5 at
#                             most).  ROUND_SCRUB_OK=BITS: those exit bits
#                             of the scrub accepted too when it left nothing damaged (16: checks
#                             that could not run before a repair).  ROUND_LEFT=REGEXP: "Not repaired"
#                             lines matching it are allowed (exit 1 then), for findings
#                             that a later repair of another object fixes
#   pressure_stopped FILE     FILE (mendfs_scrub's output, text or --json; a repair_client.py
#                             reply) says real memory pressure stopped a repair (below)
#   scrub_repairing OUT ARGS..  `mendfs_scrub ARGS $mnt` (bounded) into OUT, tried again
#                             while a repair was stopped by real memory pressure (below)
#   repair_reply WANT OUT CMD..  a REPAIR client CMD into OUT until the reply matches WANT,
#                             tried again while real memory pressure stopped it (below)
#   populate_ags DATA NFILES MKFS-ARGS...  $pop: an image made with `mkfs.mendfs -q -a 4
#                             -b 1024 MKFS-ARGS $img 64M`, each AG's directory d0..d3 holding a
#                             DATA-byte file and NFILES 1500-byte files of which the odd ones
#                             are removed (fragmented free space), $mnt/stress made; $dir/sums
#   hook_setup                $hk, a directory of repair test hooks (fs/ctl_testhook.c),
#                             exported as MENDFS_TEST_REPAIR_DIR for the daemons mounted next
#   half_deleted [CMD ARGS..] $img: `mkfs.mendfs -q -a 4 -b 1024 $img 64M`, mounted, CMD run
#                             (if given), then d/f1..f300 of 1000 random bytes, the odd ones
#                             removed (fragmented free space), $dir/sums; unmounted
#   clean_unmount WHEN        on the mounted $img: `mendfs_scrub -n` clean, checksums, unmount,
#                             `mendfs_repair -n` clean (WHEN names the step in a failure)
#   db_fields IMAGE OBJ FIELD the value `mendfs_db -c "fields OBJ"` lists for FIELD (OBJ:
#                             "block FSB", "inode INO"...)
#   fork_root IMAGE INO data|attr  the root block of that fork's btree (empty: not a btree)
#   owned_blocks IMAGE INO    every block the reverse maps give inode INO, one a line
# The caller provides $pop (a populated, unmounted image) and $dir/sums, and creates
# $mnt/stress in $pop (populate_ags does all three).
SCRUB=${SCRUB:-$BIN/mendfs_scrub}

# repair_setup NAME: ml_setup NAME, a control-socket directory of the test's own for its
# daemons and their clients (MENDFS_RUNDIR=$dir/run), and the name of the populated image,
# $pop ($dir/pop.img).  A load left running (stress_start's loop, its mendfs_stress) needs
# no cleanup of the test's: mountlib kills every process the test left at exit.
repair_setup() {
	ml_setup "$1"
	mkdir "$dir/run" || fail "mkdir $dir/run"
	export MENDFS_RUNDIR=$dir/run
	pop=$dir/pop.img
}

hook_setup() {
	hk=$dir/hooks
	mkdir "$hk" || fail "mkdir $hk"
	export MENDFS_TEST_REPAIR_DIR=$hk
}

half_deleted() {
	local i
	"$MKFS" -q -a 4 -b 1024 "$img" 64M || fail "mkfs"
	mount_fs
	[ $# -eq 0 ] || "$@" || fail "$*"
	mkdir "$mnt/d" || fail "mkdir"
	for i in $(seq 300); do head -c 1000 /dev/urandom >"$mnt/d/f$i" || fail "f$i"; done
	for i in $(seq 1 2 300); do rm "$mnt/d/f$i" || fail "rm f$i"; done
	(cd "$mnt" && find d -type f -print0 | sort -z | xargs -0 md5sum) >"$dir/sums" ||
		fail "md5sum"
	umount_fs
}

clean_unmount() {
	local rc
	"$SCRUB" -n "$mnt" >"$dir/out" 2>&1; rc=$?
	[ $rc -eq 0 ] || { cat "$dir/out"; fail "$1: mendfs_scrub -n: exit $rc"; }
	checksums "$1"
	umount_fs
	"$BIN/mendfs_repair" -n "$img" >"$dir/out" 2>&1; rc=$?
	[ $rc -eq 0 ] || { cat "$dir/out"; fail "$1: mendfs_repair -n: exit $rc"; }
}

checksums() { (cd "$mnt" && md5sum --quiet -c "$dir/sums") >"$dir/md5" 2>&1 ||
	{ cat "$dir/md5"; fail "$1: file contents changed"; }; }

# The daemon of a damaged filesystem may end with status 1 (it could not mark it clean).
umount_any() {
	cd /
	fusermount3 -u "$mnt" || fail "fusermount3 -u failed"
	ml_wait_gone
}

# A load beside the repair: short mendfs_stress runs one after another, each in a fresh
# subdirectory, until $dir/stop appears.  Before the repair they may meet the damage
# (EUCLEAN) and fail; the count of runs and of failures is reported.
stress_start() {
	rm -f "$dir/stop" "$dir/stress.out"
	( n=0 bad=0
	  while [ ! -e "$dir/stop" ] && [ $n -lt 200 ]; do
		n=$((n + 1))
		if ! { mkdir "$mnt/stress/r$n" && "$STRESS" -p 2 -n 100 -e 20 -z 32K -S \
			"$mnt/stress/r$n" >>"$dir/stress.out" 2>&1; } 2>/dev/null; then
			bad=$((bad + 1))
			sleep 0.02              # a damaged fs fails at once: do not spin
		fi
	  done
	  echo "$n runs, $bad failed" >"$dir/stress.n" ) &
	spid=$!
}
stress_stop() {
	touch "$dir/stop"
	wait "$spid"
	spid=""
}

# ---- memory pressure ------------------------------------------------------------------------
# The daemon stops a repair when a memory-pressure source fires (the kernel's PSI, a cgroup
# event: repair/repair.c rep_poll); the repair then changed nothing, and its reply names the
# source: "memory pressure (psi-system): the repair stopped before changing anything".  A
# loaded machine may see real pressure at any moment (another test's memory cgroup at its
# limit, page cache thrashing), so a step that needs a repair to go through is tried again
# then, with a note; the test hook's own pressure ("test") is never taken for it.
PRESSURE_TRIES=${PRESSURE_TRIES:-5}
pressure_stopped() { grep -Eq "memory pressure \((psi|v1|v2)-[a-z0-9-]*\): the repair stopped" "$1"; }
# pressure_note TRY WHAT FILE: the note between tries, and PSI's window (2 s) to pass
pressure_note() {
	local src
	src=$(grep -Eom1 'memory pressure \([a-z0-9-]*\)' "$3") || src="ECANCELED"
	echo "note: $2: try $1 stopped by real memory pressure ($src): nothing changed; again"
	sleep 2
}

# scrub_repairing OUT [ARGS...]: `mendfs_scrub ARGS $mnt`, bounded, its output in OUT (the
# last try) and OUT.all (every try); tried again (PRESSURE_TRIES in all) while it failed
# and a repair was stopped by real memory pressure.  The last try's exit status; $tries.
scrub_repairing() {
	local out=$1 rc
	shift
	tries=1
	: >"$out.all"
	while :; do
		bounded 180 "$SCRUB" "$@" "$mnt" >"$out" 2>&1
		rc=$?
		cat "$out" >>"$out.all"
		[ $rc -ne 0 ] && [ $tries -lt "$PRESSURE_TRIES" ] && pressure_stopped "$out" || break
		pressure_note $tries "mendfs_scrub $*" "$out"
		tries=$((tries + 1))
	done
	return $rc
}

# repair_reply WANT OUT CMD...: run the REPAIR client CMD (repair_client.py, or ctl_client
# `repair`, whose reply has no text: its ECANCELED, -125, is taken for pressure — nothing
# else cancels a request no CANCEL was sent for) into OUT until the reply matches WANT (an
# extended regexp); again (PRESSURE_TRIES in all) when real memory pressure stopped it.
# 0 when it matched; 1 on another reply, OUT kept.
repair_reply() {
	local want=$1 out=$2 try
	shift 2
	for ((try = 1; try <= PRESSURE_TRIES; try++)); do
		"$@" >"$out" 2>&1
		grep -Eq "$want" "$out" && return 0
		pressure_stopped "$out" || grep -q "^reply 5 .* oflags 0x40 error -125 " "$out" || return 1
		[ $try -lt "$PRESSURE_TRIES" ] && pressure_note $try "$*" "$out"
	done
	return 1
}

# round NAME WANT DB-COMMANDS...: WANT = extended regexps of the objects ("AG n name") that
# must be reported repaired, separated by ';'.
round() {
	local name=$1 want=$2 args=() t0=$SECONDS
	shift 2
	for c in "$@"; do args+=(-c "$c"); done
	cp --sparse=always "$pop" "$img"
	"$DB" -w "${args[@]}" "$img" >"$dir/wout" 2>&1 || { cat "$dir/wout"; fail "$name: damage"; }
	mount_fs
	stress_start
	# A repair stopped by memory pressure (a loaded machine) changed nothing: scrub again
	# ($dir/out1: the last try, $dir/out: all of them)
	scrub_repairing "$dir/out1"
	local rc=$? try=$tries
	cp "$dir/out1.all" "$dir/out"
	stress_stop
	daemon_alive "$name"
	# ROUND_LEFT (a regexp): objects the scrub may leave unrepaired when their findings
	# are fixed by a later repair of another object (the second scrub -n proves it)
	if [ $rc -eq 1 ] && [ -n "${ROUND_LEFT:-}" ] && grep -q '^Not repaired: ' "$dir/out1" &&
		! grep '^Not repaired: ' "$dir/out1" | grep -Evq "$ROUND_LEFT"; then
		rc=0
	fi
	# ROUND_SCRUB_OK=BITS: exit bits accepted too when nothing was left damaged (16: checks
	# that could not run until a header was repaired; the second scrub -n runs them)
	if [ $rc -ne 0 ] && [ -n "${ROUND_SCRUB_OK:-}" ] && [ $((rc & ~ROUND_SCRUB_OK)) -eq 0 ] &&
		grep -q "repaired, 0 left damaged" "$dir/out1"; then
		rc=0
	fi
	[ $rc -eq 0 ] || { cat "$dir/out"; fail "$name: mendfs_scrub exit $rc, expected 0"; }
	local IFS=';'
	for w in $want; do
		grep -Eq "^Repaired: $w: " "$dir/out" || { cat "$dir/out"; fail "$name: '$w' not repaired"; }
	done
	unset IFS
	grep -Eq "all repaired|repaired, 0 left damaged" "$dir/out1" || [ -n "${ROUND_LEFT:-}" ] ||
		{ [ $try -gt 1 ] && grep -q "no problems found" "$dir/out1"; } ||
		{ cat "$dir/out"; fail "$name: no 'all repaired'"; }
	# a short load after the repair must succeed whatever happened before
	mkdir "$mnt/after" || fail "$name: mkdir after the repair"
	"$STRESS" -p 2 -n 150 -e 30 -z 32K -S -c "$mnt/after" >"$dir/stress2.out" 2>&1 ||
		{ tail "$dir/stress2.out"; fail "$name: load after the repair failed"; }
	rmdir "$mnt/after" || fail "$name: rmdir after the load"
	"$SCRUB" -n "$mnt" >"$dir/out2" 2>&1 || { cat "$dir/out2"; fail "$name: second scrub -n not clean"; }
	checksums "$name"
	umount_fs
	"$BIN/mendfs_repair" -n "$img" >"$dir/rep" 2>&1 || { cat "$dir/rep"; fail "$name: mendfs_repair -n"; }
	ok "$name: $(grep -c '^Repaired' "$dir/out") repaired (load beside it: $(cat "$dir/stress.n")), second scrub," \
		"mendfs_repair -n clean, files unchanged ($((SECONDS - t0)) s)"
}

populate_ags() {
	local data=$1 n=$2 a i
	shift 2
	"$MKFS" -q -a 4 -b 1024 "$@" "$img" 64M || fail "mkfs"
	mount_fs
	for a in 0 1 2 3; do
		mkdir -p "$mnt/d$a" || fail "mkdir"
		head -c "$data" /dev/urandom >"$mnt/d$a/data" || fail "data"
		for i in $(seq "$n"); do head -c 1500 /dev/urandom >"$mnt/d$a/f$i" || fail "f$i"; done
		for i in $(seq 1 2 "$n"); do rm "$mnt/d$a/f$i" || fail "rm"; done
	done
	mkdir "$mnt/stress" || fail "mkdir stress"
	(cd "$mnt" && find d? -type f -print0 | sort -z | xargs -0 md5sum) >"$dir/sums" || fail "md5sum"
	umount_fs
	cp --sparse=always "$img" "$pop"
}

db_fields() { "$DB" -c "fields $2" "$1" | awk -v f="$3" '$1 == f { print $3 }'; }
fork_root() { "$DB" -c "inode $2" "$1" | sed -n "s/^$3 fork btree root \([0-9]*\),.*/\1/p"; }
owned_blocks() {
	local agb agc a
	agb=$(db_field "$1" sb agblocks) agc=$(db_field "$1" sb agcount)
	for a in $(seq 0 $((agc - 1))); do "$DB" -c "btree $a rmap" "$1" |
		awk -v o="$2" -v base=$((a * agb)) '$7 == "ino" && $8 == o { for (i = 0; i < $5; i++) print base + $3 + i }'
	done
}
