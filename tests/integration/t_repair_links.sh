#!/bin/bash
# t_repair_links.sh — link counts and orphan lists repaired online and offline.  A populated
# image is damaged offline (mendfs_db -w) in each round; mounted with mendfs_stress loading a
# subdirectory, `mendfs_scrub MNT` reports the link counts and/or the orphan list repaired
# and exits 0, a second `mendfs_scrub -n` is clean, the files read back the same, and after
# unmount `mendfs_repair -n` is clean (repairlib.sh's `round`).  Then the results are looked
# at offline and after a remount:
#   links:   a hard-linked file's count too low, a file's and a directory's too high, a
#            directory's and the root's too low (never under 2: that is the inode
#            checker's finding); an inline directory's entry pointed at
#            another file (that file gains a name, the one it named is left with a count and
#            no name) and another's entry for a subdirectory pointed at a file (the
#            subdirectory is left with no name): both land in /lost+found as "#<ino>" (made
#            by the repair, mode 0700, owner root), the directory with ".." = /lost+found,
#            their contents unchanged, every count as counted;
#   named twice: an inline directory's entry for its subdirectory pointed at another
#            directory's subdirectory: the false entry dropped (the directory rebuilt), the
#            orphaned subdirectory joined again under its name, nothing in /lost+found;
#   orphans: AG 0's list head pointing at a live inode, then at a named inode with no links
#            (its link count is set back, and it leaves the list in the same transaction),
#            and an allocated inode with no link and no name that is on no list: the list
#            becomes exactly that inode;
#   orphans: a live inode and such an orphan chained in a loop from AG 0's head, and AG 1's
#            head an inode number outside that AG;
#   offline: link counts wrong, a nameless directory, a live inode at AG 0's orphan list
#            head and an orphan on no list, fixed by mendfs_repair (exit 1: the orphan lists
#            are rebuilt before the inodes are checked), which uses the same rebuilders;
#            then mendfs_repair -n finds nothing.
set -u
. "$(dirname "$0")/mountlib.sh"
. "$(dirname "$0")/stresslib.sh"
. "$(dirname "$0")/repairlib.sh"
repair_setup t_repair_links

# ---- a populated image ----------------------------------------------------------------------
"$MKFS" -q -a 4 -b 1024 "$img" 64M || fail "mkfs"
mount_fs
for a in 0 1; do
	mkdir "$mnt/d$a" || fail "mkdir"
	for i in $(seq 20); do head -c $((i * 700)) /dev/urandom >"$mnt/d$a/f$i" || fail "f$i"; done
done
# L: a directory in btree format (too many names for the inode): a, h (hard link of a), b,
# subdirectories s1 and s2.  M and N: inline directories (their entries are inode fields).
mkdir -p "$mnt/L/s1" "$mnt/L/s2" "$mnt/M" "$mnt/N/t" "$mnt/stress" || fail "mkdir"
for f in L/a L/b M/p M/q N/r N/s N/t/x; do head -c 5000 /dev/urandom >"$mnt/$f" || fail "$f"; done
ln "$mnt/L/a" "$mnt/L/h" || fail "ln"
(cd "$mnt" && find d? L M/p N/r N/s -type f -print0 | sort -z | xargs -0 md5sum) >"$dir/sums" ||
	fail "md5sum"
for v in ROOT:. L:L A:L/a B:L/b M:M P:M/p Q:M/q N:N R:N/r T:N/t S1:L/s1; do
	eval "${v%%:*}=\$(stat -c %i \"\$mnt/${v#*:}\")"
done
md5q=$(md5sum <"$mnt/M/q")
md5x=$(md5sum <"$mnt/N/t/x")
umount_fs
cp --sparse=always "$img" "$pop"

# dirent DIR CHILD: the index of DIR's inline entry naming CHILD
dirent() {
	"$DB" -c "fields inode $1" "$pop" |
		sed -n "s/^dirent\[\([0-9]*\)\]\.ino 8 $2\$/\1/p"
}
iq=$(dirent "$M" "$Q")
it=$(dirent "$N" "$T")
[ -n "$iq" ] && [ -n "$it" ] || fail "M and N are not inline directories"
# field INO NAME: a field of an inode of $img
field() { "$DB" -c "inode $1" "$img" | sed -n "s/^$2 = \([0-9]*\).*/\1/p"; }
agfield() { db_field "$img" "agh $1" "$2"; }
want_links() {      # want_links WHEN INO N...
	local when=$1
	shift
	while [ $# -gt 1 ]; do
		local n
		n=$(field "$1" nlink)
		[ "$n" = "$2" ] || fail "$when: inode $1 has $n links, expected $2"
		shift 2
	done
}

# ---- link counts ----------------------------------------------------------------------------------
round "link counts" "link counts" \
	"write inode $A nlink 1" "write inode $B nlink 3" "write inode $L nlink 3" \
	"write inode $N nlink 9" "write inode $ROOT nlink 2" \
	"write inode $M dirent[$iq].ino $P" \
	"write inode $N dirent[$it].ino $R" "write inode $N dirent[$it].ftype 8"
# root: d0 d1 L M N stress lost+found; L: s1 s2; N: no subdirectory left
want_links "link counts" "$ROOT" 9 "$A" 2 "$B" 1 "$L" 4 "$P" 2 "$R" 2 "$N" 2 "$Q" 1 "$T" 2
mount_fs -o ro
lf=$mnt/lost+found
[ "$(stat -c '%a %u %g %F' "$lf")" = "700 0 0 directory" ] ||
	fail "/lost+found: $(stat -c '%a %u %g %F' "$lf")"
[ "$(md5sum <"$lf/#$Q")" = "$md5q" ] || fail "/lost+found/#$Q is not the lost file"
[ "$(md5sum <"$lf/#$T/x")" = "$md5x" ] || fail "/lost+found/#$T/x is not the lost directory's file"
[ "$(stat -c %i "$lf/#$T/..")" = "$(stat -c %i "$lf")" ] || fail "#$T/.. is not /lost+found"
[ "$(ls "$lf" | sort | tr '\n' ' ')" = "$(printf '#%s\n' "$Q" "$T" | sort | tr '\n' ' ')" ] ||
	fail "/lost+found holds: $(ls "$lf" | tr '\n' ' ')"
checksums "link counts, remounted"
umount_fs
ok "link counts: every count as counted, the two nameless inodes in /lost+found, contents unchanged"

# The kernel's cached attributes follow an online repair: a count seen wrong (cached for the
# daemon's timeout, a day by default) reads right after the repair, without a remount.
cp --sparse=always "$pop" "$img"
"$DB" -w -c "write inode $B nlink 3" "$img" >/dev/null 2>&1 || fail "damage for the cache"
mount_fs
[ "$(stat -c %h "$mnt/L/b")" = 3 ] || fail "L/b: $(stat -c %h "$mnt/L/b") links before the repair"
for try in 1 2 3 4 5; do        # again when memory pressure stopped it (it changed nothing)
	"$SCRUB" "$mnt" >"$dir/out" 2>&1 && break
	grep -Eq "memory pressure( \([a-z0-9-]*\))?: the repair stopped" "$dir/out" || try=5
	[ $try -lt 5 ] || { cat "$dir/out"; fail "the repair for the cache"; }
done
[ "$(stat -c %h "$mnt/L/b")" = 1 ] || fail "L/b: still $(stat -c %h "$mnt/L/b") links seen after the repair"
umount_fs
ok "the kernel's cached link count follows the online repair"

# A directory named twice: N's entry "t" pointed at L/s1 (whose ".." is L).  The entry in L
# is s1's own; the link-count repair has N rebuilt, which drops "t" -> s1 and joins the
# orphaned t again under its name: every name where it was.
round "a directory named twice" "link counts" "write inode $N dirent[$it].ino $S1"
want_links "named twice" "$ROOT" 8 "$L" 4 "$N" 3 "$T" 2
mount_fs -o ro
[ "$(stat -c %i "$mnt/N/t")" = "$T" ] && [ "$(stat -c %i "$mnt/L/s1")" = "$S1" ] ||
	fail "named twice: N/t is $(stat -c %i "$mnt/N/t"), L/s1 $(stat -c %i "$mnt/L/s1")"
[ "$(md5sum <"$mnt/N/t/x")" = "$md5x" ] || fail "named twice: N/t/x changed"
[ ! -e "$mnt/lost+found" ] || fail "named twice: /lost+found holds $(ls "$mnt/lost+found")"
umount_fs
ok "a directory named twice: the false entry dropped, the orphan joined again under its name"

# ---- orphan lists -------------------------------------------------------------------------------
# Q without a name and without links: an orphan that no list holds.  The list: the live A
# at the head (the mount's orphan recovery stops there), then B, named but with no links (the
# link count rebuild gives it its link back and takes it off the list, through A).  The inode
# checker finds Q not on a list and A's pointer first; the inode record cannot fix those, the
# rebuilds after it do (the second scrub -n is clean).
round "orphan: head live, one missing" "link counts;orphan list" \
	"write agh 0 unlinked $A" "write inode $A next_unlinked $B" "write inode $B nlink 0" \
	"write inode $M dirent[$iq].ino $P" "write inode $Q nlink 0"
[ "$(agfield 0 unlinked)" = "$Q" ] || fail "AG 0's orphan list head is $(agfield 0 unlinked), expected $Q"
for i in "$Q" "$A" "$B"; do
	[ "$(field "$i" next_unlinked)" = 0 ] || fail "inode $i: next_unlinked $(field "$i" next_unlinked)"
done
want_links "orphan list" "$A" 2 "$B" 1 "$P" 2 "$Q" 0
ok "orphan list: the live head dropped, the named inode without links relinked and off it, the missing orphan listed"

# A loop through a live inode at the head (so that the mount's orphan recovery stops at once
# and leaves the list alone) and the orphan Q; AG 1's head not one of its inodes.  The inode
# checker finds A's pointer; the orphan list's rebuild clears it.
round "orphan: a loop, a bad head" "link counts;orphan list" \
	"write inode $M dirent[$iq].ino $P" "write inode $Q nlink 0" \
	"write inode $A next_unlinked $Q" "write inode $Q next_unlinked $A" \
	"write agh 0 unlinked $A" "write agh 1 unlinked $ROOT"
[ "$(agfield 0 unlinked)" = "$Q" ] && [ "$(field "$Q" next_unlinked)" = 0 ] &&
	[ "$(field "$A" next_unlinked)" = 0 ] && [ "$(agfield 1 unlinked)" = 0 ] ||
	fail "orphan lists: AG 0 $(agfield 0 unlinked) -> $(field "$Q" next_unlinked)," \
		"A -> $(field "$A" next_unlinked), AG 1 $(agfield 1 unlinked)"
ok "orphan lists: the loop is a list of its one orphan, AG 1's is empty"

# ---- offline: mendfs_repair uses the same rebuilders -------------------------------------------
cp --sparse=always "$pop" "$img"
"$DB" -w -c "write inode $A nlink 1" -c "write inode $L nlink 9" -c "write inode $ROOT nlink 2" \
	-c "write inode $N dirent[$it].ino $R" -c "write inode $N dirent[$it].ftype 8" \
	-c "write agh 0 unlinked $B" -c "write inode $M dirent[$iq].ino $P" -c "write inode $Q nlink 0" \
	"$img" >"$dir/wout" 2>&1 || { cat "$dir/wout"; fail "offline: damage"; }
"$BIN/mendfs_repair" "$img" >"$dir/rep" 2>&1
rc=$?
[ $rc -eq 1 ] || { cat "$dir/rep"; fail "offline: mendfs_repair exit $rc, expected 1 (fixed)"; }
grep -q "link counts: rebuilt" "$dir/rep" && grep -Eq "orphan lists?: rebuilt" "$dir/rep" ||
	{ cat "$dir/rep"; fail "offline: link counts and orphan list not both rebuilt"; }
"$BIN/mendfs_repair" -n "$img" >"$dir/rep2" 2>&1 || { cat "$dir/rep2"; fail "offline: mendfs_repair -n after"; }
want_links "offline" "$ROOT" 9 "$A" 2 "$L" 4 "$N" 2 "$P" 2 "$T" 2 "$Q" 0
[ "$(agfield 0 unlinked)" = "$Q" ] && [ "$(field "$Q" next_unlinked)" = 0 ] ||
	fail "offline: AG 0's orphan list head $(agfield 0 unlinked)"
mount_fs
checksums "offline"
[ "$(md5sum <"$mnt/lost+found/#$T/x")" = "$md5x" ] || fail "offline: /lost+found/#$T/x"
umount_fs
ok "offline: mendfs_repair fixed both, mendfs_repair -n clean, contents unchanged"

# ---- rebuilds under a namespace load ----------------------------------------------------------
# mendfs_stress creating, linking, renaming and unlinking (open files among them: orphans on
# the lists) while the link counts and the orphan lists are rebuilt over and over, damaged or
# not (REPAIR requests of the raw control client): every rebuild succeeds and is checked
# clean by the daemon (inside the namespace quiesce) — or is stopped by memory pressure
# before changing anything, which a loaded machine may signal — the load's own model of
# every name, link count and content holds, and the idle filesystem is clean afterwards.
CTL=$TOOLS/ctl_client
[ -x "$CTL" ] || fail "ctl_client is not built"
cp --sparse=always "$pop" "$img"
mount_fs
nr=0 nstopped=0
rebuild() {     # rebuild TYPE: 0 rebuilt, 1 stopped by memory pressure; anything else fails
	bounded 60 "$CTL" "$mnt" repair "$1:0:0" >"$dir/ctl.out" 2>&1
	grep -q "oflags 0x20 error 0 " "$dir/ctl.out" && { nr=$((nr + 1)); return 0; }
	grep -q "oflags 0x40 error -$(errno_of ECANCELED) " "$dir/ctl.out" &&
		{ nstopped=$((nstopped + 1)); return 1; }
	cat "$dir/ctl.out"
	fail "rebuild of type $1 under load (after $nr)"
}
errno_of() { python3 -c "import errno; print(errno.$1)"; }
"$STRESS" -p 3 -t 8 -n 3000 -e 60 -z 64K -S \
	-f creat=4,mkdir=2,link=4,unlink=4,rename=4,rmdir=1,orphan=4,write=2,stat=2,readdir=1 \
	"$mnt/stress" >"$dir/stress.out" 2>&1 &
spid=$!
while kill -0 "$spid" 2>/dev/null && [ $nr -lt 200 ]; do
	rebuild 14
	rebuild 15
done
wait "$spid" || { tail "$dir/stress.out"; fail "the load beside the rebuilds"; }
spid=""
for t in 14 15; do          # once more each, idle: a few tries if memory pressure stops it
	for _ in 1 2 3 4 5; do rebuild $t && break; done ||
		fail "type $t: every rebuild stopped by memory pressure"
done
scrub_idle "after $nr rebuilds"
checksums "rebuilds under load"
umount_fs
"$BIN/mendfs_repair" -n "$img" >"$dir/rep" 2>&1 || { cat "$dir/rep"; fail "mendfs_repair -n after the rebuilds"; }
ok "$nr rebuilds of link counts and orphan lists beside a namespace load ($nstopped stopped by" \
	"memory pressure): load verified, clean after"
