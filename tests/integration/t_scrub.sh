#!/bin/bash
# t_scrub.sh — mendfs_scrub on a mounted filesystem: a clean, populated one reports nothing
# and exits 0 (plain, -v, -b, -x and without -n, which repairs: nothing to do); --json output is one JSON object per line ending with a
# summary; -C fd writes "phase current max mountpoint" lines for phases 1-5 (and 6 with
# -x) that end each phase at its maximum; usage errors exit 8 and a directory that is not
# a mendfs exits 4.  Then a free-space btree block of AG 1 is overwritten in the unmounted
# image: the scrub -n names that object as corrupt (text and JSON) and exits 1 (the
# repair itself: t_scrub_repair).
set -u
. "$(dirname "$0")/mountlib.sh"
ml_setup t_scrub
SCRUB=$BIN/mendfs_scrub
mkdir "$dir/run"
export MENDFS_RUNDIR=$dir/run

"$MKFS" -q -a 4 "$img" 128M || fail "mkfs"
mount_fs
# A little of everything: nested directories, small and large files, hard links, short
# and long symlinks, a fifo, extended attributes, a directory with many entries.
mkdir -p "$mnt/a/b/c" "$mnt/many" || fail "mkdir"
for i in $(seq 300); do echo "file $i" >"$mnt/many/f$i"; done
head -c 3M /dev/urandom >"$mnt/a/big" || fail "big file"
ln "$mnt/a/big" "$mnt/a/b/big.link" && ln -s ../big "$mnt/a/b/short" &&
	ln -s "$(printf 'long/%.0s' $(seq 200))" "$mnt/a/long" && mkfifo "$mnt/a/b/c/fifo" ||
	fail "links"
if command -v setfattr >/dev/null; then
	setfattr -n user.small -v 1 "$mnt/a/big" &&
		setfattr -n user.large -v "$(head -c 2000 /dev/zero | tr '\0' x)" "$mnt/a/b" ||
		fail "setfattr"
fi

# run_scrub NAME ARGS...: output in $dir/NAME.out, status in $rc
run_scrub() {
	local name=$1
	shift
	"$SCRUB" "$@" >"$dir/$name.out" 2>"$dir/$name.err"
	rc=$?
}

run_scrub plain "$mnt"
[ $rc -eq 0 ] || { cat "$dir/plain.out" "$dir/plain.err"; fail "clean scrub: exit $rc"; }
[ "$(wc -l <"$dir/plain.out")" -eq 1 ] && grep -q "no problems found" "$dir/plain.out" ||
	{ cat "$dir/plain.out"; fail "a clean scrub said more than its summary"; }
ok "clean: $(cat "$dir/plain.out")"

run_scrub verbose -v -b "$mnt"
[ $rc -eq 0 ] || { cat "$dir/verbose.out"; fail "-v -b: exit $rc"; }
for p in 1 2 3 4 5; do grep -q "^Phase $p: " "$dir/verbose.out" || fail "-v: no phase $p line"; done
grep -q "1 worker;" "$dir/verbose.out" || fail "-b: not one worker: $(head -1 "$dir/verbose.out")"
ok "-v -b: five phases, one worker"

run_scrub json --json "$mnt"
[ $rc -eq 0 ] || fail "--json: exit $rc"
python3 - "$dir/json.out" <<'EOF' || fail "--json output"
import json, sys
lines = open(sys.argv[1]).read().splitlines()
objs = [json.loads(l) for l in lines]          # every line is one JSON object
assert objs and objs[-1]["kind"] == "summary", objs
assert all(o["kind"] == "finding" for o in objs[:-1])
s = objs[-1]
assert s["exit"] == 0 and s["corruptions"] == 0 and s["errors"] == 0 and len(objs) == 1, s
assert s["objects"] > 300, s
EOF
ok "--json: $(cat "$dir/json.out")"

# -C fd: progress records, and -x reads every file's data (phase 6).
run_scrub progress -x -C 3 "$mnt" 3>"$dir/progress"
[ $rc -eq 0 ] || { cat "$dir/progress.out"; fail "-x -C 3: exit $rc"; }
python3 - "$dir/progress" "$mnt" <<'EOF' || fail "-C output: $(head -20 "$dir/progress")"
import sys, re
mnt = sys.argv[2]
last = {}
for l in open(sys.argv[1]).read().splitlines():
    m = re.fullmatch(r"([1-6]) (\d+) (\d+) (.*)", l)
    assert m, "bad line %r" % l
    ph, cur, mx, label = int(m[1]), int(m[2]), int(m[3]), m[4]
    assert label == mnt and cur <= mx, l
    assert not last or ph >= max(last), "phases out of order: %r" % l
    last[ph] = (cur, mx)
assert sorted(last) == [1, 2, 3, 4, 5, 6], last
assert all(c == m for c, m in last.values()), last
assert last[6][1] >= 3 * 1024, last            # KiB of data read: the 3 MiB file at least
EOF
ok "-x -C: $(wc -l <"$dir/progress") progress lines, phases 1-6 each ending at its maximum"

run_scrub repair "$mnt"                        # no -n: asks for repair
[ $rc -eq 0 ] || fail "without -n: exit $rc"
run_scrub usage
[ $rc -eq 8 ] || fail "no mount point: exit $rc, expected 8"
run_scrub badfd -C 77 "$mnt"
[ $rc -eq 8 ] || fail "-C on a closed descriptor: exit $rc, expected 8"
run_scrub tmpdir -T "$mnt/a" "$mnt"
[ $rc -eq 8 ] && grep -q "lies on the filesystem being scrubbed" "$dir/tmpdir.err" ||
	fail "-T on the mendfs itself: exit $rc, $(cat "$dir/tmpdir.err")"
run_scrub tmpdir2 -T "$dir" "$mnt"
[ $rc -eq 0 ] || fail "-T $dir: exit $rc, $(cat "$dir/tmpdir2.err")"
run_scrub notours "$dir"
[ $rc -eq 4 ] && grep -q "not a mount point of a mendfs" "$dir/notours.err" ||
	fail "a plain directory: exit $rc, $(cat "$dir/notours.err")"
ok "usage errors exit 8 (-T on the mendfs too), a directory that is no mendfs 4"

# Damage AG 1's free-space-by-block btree root in the unmounted image.
umount_fs
bno=$("$DB" -c "agh 1" "$img" | sed -n 's/^bno root = \([0-9]*\),.*/\1/p')
agblocks=$("$DB" -c "agh 1" "$img" | sed -n 's/^length = \([0-9]*\)$/\1/p')
[ -n "$bno" ] && [ -n "$agblocks" ] || fail "cannot find AG 1's bno root"
"$DB" -w -c "trash $((agblocks + bno)) 1 random" "$img" >/dev/null || fail "trash"
mount_fs
run_scrub corrupt -n "$mnt"
# 1 (corruption), maybe with 16 (checks that could not finish because of it)
[ $((rc & ~16)) -eq 1 ] || { cat "$dir/corrupt.out"; fail "damaged bnobt: exit $rc, expected 1 (or 17)"; }
grep -q "^Corruption: AG 1 free space by block btree: " "$dir/corrupt.out" ||
	{ cat "$dir/corrupt.out"; fail "the damaged bnobt is not named"; }
grep -q "Action: unmount and run mendfs_repair" "$dir/corrupt.out" || fail "no action said"
run_scrub corruptjson -n --json "$mnt"
[ $((rc & ~16)) -eq 1 ] || fail "damaged bnobt, --json: exit $rc"
python3 - "$dir/corruptjson.out" <<'EOF' || fail "--json on the damaged image: $(cat "$dir/corruptjson.out")"
import json, sys
objs = [json.loads(l) for l in open(sys.argv[1]).read().splitlines()]
assert any(o["kind"] == "finding" and o["severity"] == "corrupt" and o.get("agno") == 1 and
           o["object"] == "free space by block btree" for o in objs), objs
assert objs[-1]["kind"] == "summary" and objs[-1]["exit"] & ~16 == 1 and objs[-1]["corruptions"] > 0
EOF
ok "damaged bnobt of AG 1: $(grep -c . "$dir/corrupt.out") lines, exit $rc: $(grep -m1 '^Corruption' "$dir/corrupt.out" | cut -c1-150)"
umount_fs
exit 0
