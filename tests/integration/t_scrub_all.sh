#!/bin/bash
# t_scrub_all.sh — mendfs_scrub_all over two mounts (restricted with --under to this test's
# own: other mendfs mounts may exist on the machine).  Both clean: a "clean" line for each,
# status 0.  Then one is remounted with its AG 1 free-space btree root overwritten: its line
# says corruption and its report follows, the other stays clean, the status is the OR
# (1, with 16 when checks could not finish), the --on-failure hook gets the mount point,
# the status and the report; -j 1 gives the same.  Usage errors exit 8; no mount under the
# directory: a message and 0.  The systemd units pass `systemd-analyze verify` (skipped
# without it) and `make install` puts units and the cron file in place.
set -u
. "$(dirname "$0")/mountlib.sh"
ml_setup t_scrub_all
ALL=$BIN/mendfs_scrub_all
SRC=$(cd "$(dirname "$0")/../.." && pwd)
mkdir "$dir/run" "$dir/m2"
export MENDFS_RUNDIR=$dir/run
img1=$img mnt1=$mnt img2=$dir/img2 mnt2=$dir/m2 pid1="" pid2=""

# mountlib knows one mount ($img, $mnt, $pid): point them at the one in use.
second_cleanup() {
	for m in "$mnt1" "$mnt2"; do
		grep -q " $m fuse" /proc/self/mounts &&
			{ fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m"; }
	done
	for p in $pid1 $pid2; do kill -9 "$p" 2>/dev/null; done
}
ml_extra_cleanup=second_cleanup
mount_n() { img=$1 mnt=$2; mount_fs; }
umount_n() { img=$1 mnt=$2 pid=$3; umount_fs; }

"$MKFS" -q -a 4 "$img1" 64M && "$MKFS" -q -a 4 "$img2" 64M || fail "mkfs"
mount_n "$img1" "$mnt1"; pid1=$pid
mount_n "$img2" "$mnt2"; pid2=$pid
for m in "$mnt1" "$mnt2"; do mkdir "$m/d" && echo hello >"$m/d/f" || fail "populate $m"; done

"$ALL" --under "$dir" >"$dir/out" 2>&1
rc=$?
[ $rc -eq 0 ] || { cat "$dir/out"; fail "two clean mounts: status $rc"; }
grep -qx "$mnt1: clean (status 0)" "$dir/out" && grep -qx "$mnt2: clean (status 0)" "$dir/out" &&
	[ "$(wc -l <"$dir/out")" -eq 2 ] || { cat "$dir/out"; fail "two clean mounts: lines"; }
ok "both clean: $(tr '\n' ' ' <"$dir/out")"

# Damage mount 2's image while it is unmounted.
umount_n "$img2" "$mnt2" "$pid2"; pid2=""
bno=$("$DB" -c "agh 1" "$img2" | sed -n 's/^bno root = \([0-9]*\),.*/\1/p')
agblocks=$("$DB" -c "agh 1" "$img2" | sed -n 's/^length = \([0-9]*\)$/\1/p')
[ -n "$bno" ] && [ -n "$agblocks" ] || fail "cannot find AG 1's bno root"
"$DB" -w -c "trash $((agblocks + bno)) 1 random" "$img2" >/dev/null || fail "trash"
mount_n "$img2" "$mnt2"; pid2=$pid

hook='echo "$1 $2 $MENDFS_SCRUB_STATUS" >>"$HOOKDIR/hook"; cat >"$HOOKDIR/report.$2"'
HOOKDIR=$dir "$ALL" -n --under "$dir" --on-failure "$hook" >"$dir/out" 2>&1
rc=$?
[ $((rc & ~16)) -eq 1 ] || { cat "$dir/out"; fail "one corrupt mount: status $rc, expected 1 or 17"; }
grep -qx "$mnt1: clean (status 0)" "$dir/out" || { cat "$dir/out"; fail "the clean mount's line"; }
grep -qx "$mnt2: corruption found.* (status $rc)" "$dir/out" ||
	{ cat "$dir/out"; fail "the corrupt mount's line"; }
grep -q "^Corruption: AG 1 free space by block btree" "$dir/out" ||
	{ cat "$dir/out"; fail "the failed scrub's report is not shown"; }
[ "$(cat "$dir/hook" 2>/dev/null)" = "$mnt2 $rc $rc" ] || fail "hook arguments: $(cat "$dir/hook" 2>&1)"
grep -q "^Corruption: AG 1 free space by block btree" "$dir/report.$rc" || fail "hook input"
ok "one corrupt: status $rc; $(grep -x "$mnt2: .*(status [0-9]*)" "$dir/out"); hook called once with the report"

"$ALL" -j 1 -n --under "$dir" >"$dir/out1" 2>&1
rc1=$?
[ $rc1 -eq $rc ] && [ "$(grep -c '(status' "$dir/out1")" -eq 2 ] ||
	{ cat "$dir/out1"; fail "-j 1: status $rc1"; }
ok "-j 1: the same"

"$ALL" --under "$dir/nothing-here" >"$dir/out" 2>&1
rc=$?
[ $rc -eq 0 ] && grep -q "no mendfs filesystem is mounted" "$dir/out" || fail "nothing mounted: $rc"
"$ALL" -j 0 >/dev/null 2>&1
[ $? -eq 8 ] || fail "-j 0 should be a usage error"
"$ALL" --bogus >/dev/null 2>&1
[ $? -eq 8 ] || fail "an unknown option should be a usage error"
ok "usage errors 8, nothing mounted 0"

umount_n "$img2" "$mnt2" "$pid2"; pid2=""
umount_n "$img1" "$mnt1" "$pid1"; pid1=""
img=$img1 mnt=$mnt1

# The units as make install writes them.
inst=$dir/inst
# -o all: install what is built, never rebuild (the programs under test stay as they are)
make -s -o all -C "$SRC" O="$O" install DESTDIR="$inst" PREFIX=/usr CRONDIR=/etc/cron.d \
	>"$dir/make.out" 2>&1 ||
	{ cat "$dir/make.out"; fail "make install"; }
for f in usr/lib/systemd/system/mendfs_scrub_all.service usr/lib/systemd/system/mendfs_scrub_all.timer \
	etc/cron.d/mendfs_scrub_all usr/sbin/mendfs_scrub_all usr/share/man/man8/mendfs_scrub_all.8; do
	[ -f "$inst/$f" ] || fail "make install did not write $f"
done
grep -q "/usr/sbin/mendfs_scrub_all" "$inst/etc/cron.d/mendfs_scrub_all" &&
	grep -q "^ExecStart=/usr/sbin/mendfs_scrub_all" "$inst/usr/lib/systemd/system/mendfs_scrub_all.service" ||
	fail "@SBINDIR@ not replaced"
ok "make install: units, cron file, program and page"
if command -v systemd-analyze >/dev/null; then
	mkdir "$dir/units"
	for u in service timer; do
		sed "s|@SBINDIR@|$BIN|g" "$SRC/scrub/mendfs_scrub_all.$u" >"$dir/units/mendfs_scrub_all.$u"
	done
	out=$(systemd-analyze verify --man=no "$dir/units/mendfs_scrub_all.service" \
		"$dir/units/mendfs_scrub_all.timer" 2>&1)
	rc=$?
	[ $rc -eq 0 ] && [ -z "$out" ] || fail "systemd-analyze verify: $rc: $out"
	ok "systemd-analyze verify: no complaint"
else
	echo "note: systemd-analyze is missing: the units are not verified"
fi
exit 0
