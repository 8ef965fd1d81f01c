#!/bin/bash
# t_fieldfuzz.sh — a sample of the metadata field fuzzing (tests/tools/fieldfuzz.sh; the full
# walk is `make fieldfuzz`): about 50 cases, every 127th of the list of fields × verbs of a
# populated image (a prime stride, so that the verbs rotate over the fields).  Each fuzzed
# copy must be refused cleanly or mount; mounted, the scrub must find every damage the
# offline check finds (detection 100%: no MISS), and no daemon, scrub or mendfs_db may
# crash or hang (fieldfuzz.sh exits 1 otherwise).  The online repair rate is printed (the
# table per structure and the reasons of what was not repaired), not asserted: the sample
# is too small for a rate.  The table goes to $O/fieldfuzz-check.tsv.
#
# Then a primary superblock whose geometry is the damage (agblocks, root inode changed
# before its CRC, as `mendfs_db fuzz` does): the offline repair must refuse and leave AG 1's
# header and the superblock copies as they were (it used to write the copies over the AG
# headers, and the primary's wrong root into every copy).
BIN=${BIN:?BIN must name the directory of the built programs}
O=${O:-build}
bash "$(dirname "$0")/../tools/fieldfuzz.sh" -s 127 -o "$O/fieldfuzz-check.tsv"
rc=$?
[ "$rc" = 0 ] || exit "$rc"

t=$(mktemp -d /tmp/t_fieldfuzz.XXXXXX) || exit 1
trap 'rm -rf "$t"' EXIT
fail() { echo "FAIL: $*"; exit 1; }
"$BIN/mkfs.mendfs" -q "$t/base" 48M || fail "mkfs"
field() { "$BIN/mendfs_db" -c "$1" "$2" | sed -n "s/^$3 = //p"; }
agblocks=$(field sb "$t/base" agblocks)
[ -n "$agblocks" ] || fail "no geometry in the superblock"
blk() { dd if="$1" bs=4096 skip="$2" count=1 status=none | md5sum; }
for f in "agblocks add" "rootino add" "rootino lastbit"; do
	cp --sparse=always "$t/base" "$t/img"
	"$BIN/mendfs_db" -w -c "fuzz sb 0 $f" "$t/img" >/dev/null || fail "fuzz sb 0 $f"
	# the superblock copies and AG headers where the true geometry puts them
	blocks=""
	for ag in 1 2 3; do blocks="$blocks $((ag * agblocks)) $((ag * agblocks + 1))"; done
	before=$(for b in $blocks; do blk "$t/img" "$b"; done)
	timeout 120 "$BIN/mendfs_repair" "$t/img" >"$t/out" 2>&1
	[ $? -lt 124 ] || fail "sb 0 $f: mendfs_repair crashed or hung"
	grep -q "geometry seems wrong\|the primary seems damaged" "$t/out" ||
		{ tail -5 "$t/out"; fail "sb 0 $f: the repair did not say the geometry is wrong"; }
	[ "$(for b in $blocks; do blk "$t/img" "$b"; done)" = "$before" ] ||
		fail "sb 0 $f: a superblock copy or AG header (blocks$blocks) was rewritten"
	echo "ok: sb 0 $f: the offline repair refuses, the copies and AG headers unchanged"
done
exit 0
