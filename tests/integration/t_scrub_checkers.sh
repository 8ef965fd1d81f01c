#!/bin/bash
# t_scrub_checkers.sh — every checker, online: a populated image is damaged in exactly one
# structure at a time with mendfs_db's write commands (superblock copy, AG header, AG free
# list, each of the four AG btrees, an inode's core, an extent map, a directory entry, a
# link count, the orphan list, a symlink target, an inline attribute, the journal header,
# the superblock's summary counters), mounted, scrubbed with mendfs_scrub -n --json: the
# damaged object is reported (corrupt or cross-reference mismatch, naming its AG or inode)
# and the exit status has bit 1.  The undamaged image scrubs clean with status 0.  The
# journal and the summary counters are mounted read-only (see there).
set -u
. "$(dirname "$0")/mountlib.sh"
ml_setup t_scrub_checkers
mkdir "$dir/run"
export MENDFS_RUNDIR=$dir/run
pop=$dir/pop.img

# A populated image, made through the daemon.
"$MKFS" -q -a 4 "$img" 64M || fail "mkfs"
mount_fs
mkdir -p "$mnt/dir/sub" || fail "mkdir"
for i in 1 2 3; do echo "file $i" >"$mnt/dir/f$i"; done
head -c 200000 /dev/urandom >"$mnt/data" && ln "$mnt/dir/f1" "$mnt/hard" && ln -s dir/f2 "$mnt/sym" ||
	fail "populate"
dirino=$(stat -c %i "$mnt/dir") dataino=$(stat -c %i "$mnt/data") f1ino=$(stat -c %i "$mnt/dir/f1")
symino=$(stat -c %i "$mnt/sym") f3ino=$(stat -c %i "$mnt/dir/f3")
have_xattr=0
command -v setfattr >/dev/null && setfattr -n user.hello -v world "$mnt/dir/f3" && have_xattr=1
"$BIN/mendfs_scrub" "$mnt" >"$dir/out" 2>&1 || { cat "$dir/out"; fail "the populated fs is not clean"; }
ok "populated: $(cat "$dir/out")"
umount_fs
cp "$img" "$pop"

agfield() { db_field "$pop" "agh $1" "$2"; }
agblocks=$(agfield 1 length)
bnoroot1=$(agfield 1 "bno root") cntroot2=$(agfield 2 "cnt root")
inoroot0=$(agfield 0 "ino root") rmaproot3=$(agfield 3 "rmap root") flfirst2=$(agfield 2 fl_first)
freeblks1=$(agfield 1 freeblks)
rootino=$("$DB" -c "sb" "$pop" | sed -n 's/^rootino = \([0-9]*\).*/\1/p')
logstart=$("$DB" -c "sb" "$pop" | sed -n 's/^logstart = \([0-9]*\).*/\1/p')
forkoff3=$("$DB" -c "inode $f3ino" "$pop" | sed -n 's/^forkoff = \([0-9]*\).*/\1/p')
for v in agblocks bnoroot1 cntroot2 inoroot0 rmaproot3 flfirst2 freeblks1 rootino logstart; do
	[ -n "${!v}" ] || fail "cannot read $v from mendfs_db"
done

# The daemon of a damaged filesystem may end with status 1 (it could not mark it clean).
umount_damaged() {
	cd /
	fusermount3 -u "$mnt" || fail "fusermount3 -u failed"
	for _ in $(seq 1200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.025; done
	kill -0 "$pid" 2>/dev/null && fail "the daemon did not exit within 30 s"
	wait "$pid"
	pid=""
}

# damage DESC OBJECT KEY=VALUE -- DB-COMMANDS...: OBJECT is the JSON "object" expected
# in a corrupt or xref finding, KEY=VALUE (agno=N or ino=N, or -) its place.  DAMAGE_MOUNT:
# the daemon's mount options.
damage() {
	local desc=$1 object=$2 where=$3
	shift 4
	local args=()
	for c in "$@"; do args+=(-c "$c"); done
	cp "$pop" "$img"
	"$DB" -w "${args[@]}" "$img" >"$dir/wout" 2>&1 || { cat "$dir/wout"; fail "$desc: the write failed"; }
	mount_fs ${DAMAGE_MOUNT:-}
	"$BIN/mendfs_scrub" -n --json "$mnt" >"$dir/out" 2>"$dir/err"
	local rc=$?
	umount_damaged
	[ $((rc & 1)) -eq 1 ] && [ $((rc & 12)) -eq 0 ] ||
		{ cat "$dir/out" "$dir/err"; fail "$desc: exit $rc, expected bit 1 (and no 4 or 8)"; }
	local hit
	hit=$(python3 - "$dir/out" "$object" "$where" <<'EOF'
import json, sys
objs = [json.loads(l) for l in open(sys.argv[1]).read().splitlines()]
want, where = sys.argv[2], sys.argv[3]
key, _, val = where.partition("=")
hits = [o for o in objs if o["kind"] == "finding" and o["object"] == want and
        o["severity"] in ("corrupt", "xref") and (key == "-" or o.get(key) == int(val))]
assert hits, "no %s finding at %s" % (want, where)
print(hits[0]["name"] + ": " + hits[0]["message"][:110])
EOF
) || { cat "$dir/out"; fail "$desc: $object not reported"; }
	ok "$desc (exit $rc): $hit"
}

damage "superblock copy" "superblock" agno=2 -- "fuzz sb 2 agblocks add 1"
damage "AG header" "AG header" agno=1 -- "write agh 1 freeblks $((freeblks1 + 1))"
damage "unreadable AG header" "AG header" agno=1 -- "write agh 1 freeblks $((freeblks1 - 6))"
damage "AG free list" "AG free list" agno=2 -- "write agfl 2 bno[$flfirst2] $cntroot2"
damage "free space by block" "free space by block btree" agno=1 -- \
	"fuzz block $((agblocks + bnoroot1)) rec[0].blockcount sub 3"
damage "free space by length" "free space by length btree" agno=2 -- \
	"fuzz block $((2 * agblocks + cntroot2)) rec[0].startblock bitflip 4"
damage "inode btree" "inode btree" agno=0 -- \
	"fuzz block $inoroot0 rec[0].freecount add 1"
damage "reverse map" "reverse map btree" agno=3 -- \
	"write block $((3 * agblocks + rmaproot3)) rec[0].owner 12345"
damage "inode core" "inode record" ino=$f1ino -- "write inode $f1ino mtime.nsec 1000000001"
damage "extent map" "extent map" ino=$dataino -- "fuzz inode $dataino ext[0].startblock add 1"
damage "directory entry" "directory" ino=$dirino -- "write inode $dirino dirent[0].ftype 12"
damage "link count" "link counts" - -- "write inode $f1ino nlink 1"
damage "orphan list" "orphan list" - -- "write agh 0 unlinked $rootino"
damage "symlink target" "symbolic link" ino=$symino -- "write inode $symino lit[2] 0"
# A read-write mount rewrites the journal header (and refuses one it cannot read), and the
# superblock's summary counters are compared only while it says clean: both are mounted
# read-only (the journal without recovery), as a rescue would.
DAMAGE_MOUNT="-o ro,norecovery" damage "journal header" "journal" - -- "trash $logstart 2 random"
DAMAGE_MOUNT="-o ro" damage "summary counters" "summary counters" - -- "fuzz sb 0 fdblocks add 7"
if [ $have_xattr = 1 ] && [ -n "$forkoff3" ] && [ "$forkoff3" -gt 0 ]; then
	# the first byte of the inline attribute fork: the first entry's namespace
	damage "inline attribute" "extended attributes" ino=$f3ino -- \
		"fuzz inode $f3ino lit[$((forkoff3 * 8))] ones"
else
	echo "note: no setfattr (or no inline attribute fork): the attribute case is not run"
fi
exit 0
