#!/bin/bash
# t_own_fd_limit.sh — per-open image descriptors (fs/fileio.c own_fd_open, 4c26fad) must
# not take the daemon's last descriptors: with RLIMIT_NOFILE 32 and 40 opens of a 2 MiB
# file held by a reader, `mendfs_scrub -n` must still connect and finish (the control
# socket's accept needs a descriptor).  Fails with 4c26fad: the daemon's table fills with
# per-open descriptors, accept gets EMFILE and the scrub waits until its 20 s bound.
set -u
# shellcheck source=mountlib.sh
. "$(dirname "$0")/mountlib.sh"
SCRUB=$BIN/mendfs_scrub
ml_setup t_own_fd_limit

"$MKFS" -q "$img" 256M >"$dir/mkfs.out" 2>&1 || { cat "$dir/mkfs.out"; fail "mkfs"; }
mount_fs
dd if=/dev/urandom of="$mnt/big" bs=1M count=2 status=none conv=fsync || fail "writing big"
prlimit --pid "$pid" --nofile=32:32 || { umount_fs; echo "skip: prlimit"; exit 77; }
bounded 20 "$SCRUB" -n "$mnt" >"$dir/s0" 2>&1 || fail "scrub before the opens: $(tail -3 "$dir/s0")"
# a reader holding 40 opens of the file until its stdin closes
exec 7> >(exec python3 -c '
import os, sys
fds = [os.open(sys.argv[1], os.O_RDONLY) for _ in range(40)]
for f in fds: os.pread(f, 4096, 0)
print("held", flush=True); sys.stdin.read()' "$mnt/big" >"$dir/reader.out")
rpid=$!
for _ in $(seq 400); do grep -q held "$dir/reader.out" 2>/dev/null && break; sleep 0.025; done
grep -q held "$dir/reader.out" || fail "the reader did not open its files"
n=$(ls /proc/"$pid"/fd | wc -l)
timeout 20 "$SCRUB" -n "$mnt" >"$dir/s1" 2>&1 </dev/null
rc=$?
exec 7>&-
for _ in $(seq 400); do kill -0 "$rpid" 2>/dev/null || break; sleep 0.025; done
[ "$rc" -eq 0 ] || fail "scrub while 40 opens are held (daemon descriptors: $n of 32): rc $rc"
umount_fs
ok "the control socket still serves with 40 opens held under RLIMIT_NOFILE 32"
