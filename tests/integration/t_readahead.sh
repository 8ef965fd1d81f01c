#!/bin/bash
# t_readahead.sh — the daemon's readahead of the image for sequential readers
# (fs/readahead.c, -o readahead=8192), mounted for real, with tests/tools/ra_check:
#   1. a sequential O_DIRECT read of a file makes the daemon read more of the image than
#      was asked (the host's cache of the image dropped first; polled, bounded);
#   2. a file of data, holes, unwritten blocks and a partial last block reads back as
#      written, O_DIRECT and buffered, in requests of 4 KiB to 1 MiB;
#   3. readers streaming through files while they are overwritten, truncated short and
#      grown back, and while another file takes the freed blocks, see only each file's own
#      bytes or zeroes;
#   4. the same two without readahead= (the default: the host's readahead of the image),
#      and readahead= beyond its limit refused;
# then a clean unmount and `mendfs_db check`.
set -u
# shellcheck source=mountlib.sh
. "$(dirname "$0")/mountlib.sh"
TOOLS=${TOOLS:-${O:-$(dirname "$BIN")}/tools}
RA=$TOOLS/ra_check

[ -x "$RA" ] || { echo "FAIL: $RA is not built"; exit 1; }
ml_setup t_readahead

"$MKFS" -q "$img" 1G >"$dir/mkfs.out" 2>&1 || { cat "$dir/mkfs.out"; fail "mkfs"; }

mount_fs -o readahead=8192
for i in 1 2 3; do
	dd if=/dev/urandom of="$mnt/big$i" bs=1M count=8 status=none conv=fsync || fail "writing big$i"
done
bounded 60 "$RA" ahead "$img" "$mnt/big1" "$mnt/big2" "$mnt/big3" || fail "no readahead seen"
bounded 120 "$RA" sparse "$mnt" || fail "sparse file read back wrong"
bounded 120 "$RA" race "$mnt" 6 || fail "reads racing writes and truncates"
umount_fs
"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { cat "$dir/db.out"; fail "mendfs_db check"; }
grep -Ei "corrupt|failed|error" "$log" && fail "the daemon reported errors"
ok "readahead: data read ahead, sparse file and racing truncates read right, check clean"

mount_fs
bounded 120 "$RA" sparse "$mnt" || fail "sparse file read back wrong, no readahead="
bounded 120 "$RA" race "$mnt" 3 || fail "reads racing writes and truncates, no readahead="
umount_fs
ok "without readahead=: the same reads right"

mount_refused -o readahead=2000000
grep -q "readahead" "$dir/out" || fail "readahead=2000000: no word about it: $(cat "$dir/out")"
ok "readahead=2000000 refused: $(head -1 "$dir/out")"
