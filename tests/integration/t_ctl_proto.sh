#!/bin/bash
# t_ctl_proto.sh — bad input on the mendfs control socket: a truncated header, a wrong magic
# or version, absurd lengths, garbage, unknown commands, payloads of the wrong size or with
# bad values, descriptors that are not regular files, read-only, on the mendfs itself,
# sealed, open for appending, too many, none, or sent with the wrong command, and a peer that is neither root
# nor the mounting user: each gets an error reply naming the problem (the connection is
# closed where its framing cannot be trusted), at both protocol versions' limits, each
# answered in its version.  A running link count check stops (ECANCELED) on a CANCEL queued
# behind it; one whose client shuts its side is answered.
# Afterwards the daemon is alive, a normal mendfs_scrub finds nothing, and an unmount with
# clients connected closes them, exits 0 and removes the socket file.
set -u
. "$(dirname "$0")/mountlib.sh"
O=${O:-$(dirname "$BIN")}
TOOLS=${TOOLS:-$O/tools}
CLIENT=$TOOLS/ctl_client
[ -x "$CLIENT" ] || { echo "skip: $CLIENT is not built"; exit 77; }

ml_setup t_ctl_proto
mkdir "$dir/run"
chmod 755 "$dir" "$dir/run"          # the non-root peer must reach the socket
export MENDFS_RUNDIR=$dir/run

"$MKFS" -q -a 4 "$img" 64M || fail "mkfs"
mount_fs
sock=$(ls "$dir/run"/*.sock 2>/dev/null)
[ -S "$sock" ] || fail "no control socket in $dir/run"
ok "control socket $sock"
mkdir "$mnt/d" && echo data >"$mnt/d/f" || fail "populate"

# expect CASE REGEX [ARG]: the client's output must match (one reply, or an error)
expect() {
	local case=$1 re=$2 out
	out=$("$CLIENT" "$mnt" "$case" ${3:+"$3"} 2>&1 | tr "\n" " ")
	echo "$out" | grep -Eq "$re" || fail "$case: expected /$re/, got: $out"
	kill -0 "$pid" 2>/dev/null || fail "the daemon died after $case"
	ok "$case: $out"
}

expect hello '^reply 1 [0-9]+ speaks 2 v2 '
expect truncated-header '^error EPROTO: truncated header.*closed'
expect bad-magic '^error EPROTO: bad magic'
expect bad-version '^error EPROTONOSUPPORT: protocol version 99 is not supported \(this daemon speaks 1 to 2\)'
expect huge-length '^error EMSGSIZE: payload of 4294967280 bytes'
expect garbage '^error EPROTO'
expect unknown-command '^error EBADRQC: unknown command 77'
"$CLIENT" "$mnt" unknown-command | grep -q '^reply 1 ' || fail "the connection was not served after an unknown command"
expect short-payload '^error EINVAL: payload of 4 bytes'
expect truncated-payload '^error EPROTO: truncated message'
expect bad-type '^error EINVAL: unknown object type 999'
expect bad-agno '^error EINVAL: AG 1000000 does not exist'
expect bad-ino '^error EINVAL: 1 is not a valid inode number'
expect bad-flags '^error EINVAL: unknown scrub flags'
expect fd-pipe '^error EINVAL: descriptor 0 is not a regular file'
expect fd-readonly '^error EBADF: descriptor 0 is not open read-write'
expect fd-self '^error EDEADLK: descriptor 0 lies on the filesystem being repaired' "$mnt/scratch"
expect fd-sealed '^error EPERM: descriptor 0 is sealed'
expect fd-append '^error EINVAL: descriptor 0 is open for appending'
expect fd-too-many '^error E2BIG: too many descriptors'
expect fd-none '^error EINVAL: REPAIR needs 1 to 2 scratch descriptors'
expect fd-with-hello '^error EINVAL: descriptors come only with REPAIR'
expect fd-good '^error EOPNOTSUPP: repair is not available yet'
expect bad-batch '^error EINVAL: a batch is 1 to 2048 checks of 24 bytes, not 25 bytes'
expect batch '^reply 6 32 v2'
# Protocol versions: version 1 is still served, with its own limits, answered as version 1;
# version 2's limits are 16 times larger (lib/mendfs_ctl.h, "Versions").
expect hello-v1 '^reply 1 [0-9]+ speaks 2 v1 '
expect batch-v1-max '^reply 6 2048 v1 '
expect batch-v1-over '^error EINVAL: a batch is 1 to 128 checks of 24 bytes, not 3096 bytes'
expect batch-max '^reply 6 32768 v2 '
expect batch-over '^error EINVAL: a batch is 1 to 2048 checks of 24 bytes, not 49176 bytes'
expect huge-v1 '^error EMSGSIZE: payload of 4097 bytes is over the limit of 4096 \(protocol version 1\) closed'
expect huge-v2 '^error EMSGSIZE: payload of 65537 bytes is over the limit of 65536 \(protocol version 2\) closed'
expect inodes '^reply 3 '
expect cancel '^reply 4 8 cancelled 0'
expect scrub '^reply 2 16 oflags 0x0 error 0 findings 0' 1:0:0
# Cancelling a running check: by CANCEL, and by the client going away.
expect cancel-running '^reply 2 16 oflags 0x0 error -125 findings 0 v2 reply 4 8 cancelled 1 v2'
# (The hang-up races with the check's first look at the socket on so small a filesystem:
# the check may have finished first.  CANCEL above is queued before the check starts.)
expect hangup-running '^reply 2 16 oflags 0x0 error (-125|0) findings 0'
expect scrub '^reply 2 16 oflags 0x0 error 0 findings 0' 14:0:0

# A peer that is neither root nor the mounting user (root here) is refused with a reason.
if command -v setpriv >/dev/null && id nobody >/dev/null 2>&1; then
	out=$(setpriv --reuid=nobody --regid="$(id -g nobody)" --clear-groups "$CLIENT" "$mnt" hello 2>/dev/null)
	echo "$out" | grep -q '^error EACCES: only root or the user that mounted' ||
		fail "non-root peer: got: $out"
	ok "non-root peer: $out"
else
	echo "note: setpriv or user nobody missing: the non-root peer case is not run"
fi

# Many clients at once, each doing a little; the daemon serves them all.
for i in $(seq 8); do "$CLIENT" "$mnt" scrub 2:$((i % 4)):0 >"$dir/par.$i" 2>&1 & done
wait_ok=1
for i in $(seq 8); do
	for _ in $(seq 400); do grep -q . "$dir/par.$i" 2>/dev/null && break; sleep 0.025; done
	grep -q '^reply 2 ' "$dir/par.$i" || wait_ok=0
done
[ $wait_ok = 1 ] || fail "parallel clients: $(cat "$dir"/par.*)"
ok "8 clients at once"

kill -0 "$pid" 2>/dev/null || fail "the daemon is gone"
"$BIN/mendfs_scrub" "$mnt" >"$dir/scrub.out" 2>&1
rc=$?
[ $rc -eq 0 ] || { cat "$dir/scrub.out"; fail "mendfs_scrub after the bad input: exit $rc"; }
ok "mendfs_scrub after it all: $(tail -1 "$dir/scrub.out")"

# Two clients stay connected across the unmount: the daemon closes them and exits.
for i in 1 2; do "$CLIENT" "$mnt" idle >"$dir/idle.$i" 2>&1 & done
for i in 1 2; do
	for _ in $(seq 400); do grep -q '^reply 1 ' "$dir/idle.$i" 2>/dev/null && break; sleep 0.025; done
done
umount_fs
for i in 1 2; do
	for _ in $(seq 400); do grep -q '^closed' "$dir/idle.$i" && break; sleep 0.025; done
	grep -q '^closed' "$dir/idle.$i" || fail "connected client $i: $(cat "$dir/idle.$i")"
done
wait
[ -e "$sock" ] && fail "the socket $sock is still there after unmount"
ok "unmount with two clients connected: they are closed, the daemon exits 0, the socket is removed"
exit 0
