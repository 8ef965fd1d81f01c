#!/bin/bash
# gen_corpus.sh — writes the seed corpus of the fuzz targets (tests/fuzz/corpus/), kept in
# the tree; run again only when the image or the protocol changes (then commit the seeds).
#
#   gen_corpus.sh BUILD_FUZZ_DIR      (after `make O=build-fuzz CC=clang FUZZ=1 fuzz-build`)
#
# image/: the pristine windows with the reseal flag (fuzz_image.c: the whole valid image),
#         their first 8 KiB (superblock, AG 0 header, free list, tree roots), and one-byte
#         inputs (the pristine image with and without resealing, and opened with its
#         journal).
# ctl/:   well-formed conversations: HELLO; SCRUB of each AG object; the whole-filesystem
#         checks; INODES then inode checks; SCRUB_BATCH; CANCEL, REPAIR without descriptors
#         and an unknown command; a wrong payload size and a wrong version.
# Crash inputs found later are added by hand as regression seeds (named crash-*).
set -eu
build=$1
here=$(cd "$(dirname "$0")" && pwd)
img=$here/corpus/image
ctl=$here/corpus/ctl
mkdir -p "$img" "$ctl"
FUZZ_IMAGE_SEED=$img/pristine "$build/fuzz/fuzz_image" -runs=0 >/dev/null 2>&1
head -c 8192 "$img/pristine" >"$img/pristine-8k"
printf '\001' >"$img/reseal-only"
printf '\003' >"$img/replay-only"
printf '\000' >"$img/plain-only"
python3 - "$ctl" <<'PY'
import os, struct, sys
out = sys.argv[1]
MAGIC = 0x4c54434d
def msg(cmd, payload=b'', reqid=1, ver=1, flags=0):
    return struct.pack('<IHHIIQ', MAGIC, ver, cmd, flags, len(payload), reqid) + payload
def scrub(t, ag, ino, r, cmd=2):
    return msg(cmd, struct.pack('<IIQII', t, ag, ino, 0, 0), r)
hello = msg(1, struct.pack('<II', 0, 0), 1)
seeds = {
    'hello': hello,
    'scrub-ag': hello + b''.join(scrub(t, 0, 0, 10 + t) for t in range(1, 8)),
    'scrub-fs': b''.join(scrub(t, 0, 0, 20 + t) for t in (8, 14, 15, 16)),
    'inodes': hello + msg(3, struct.pack('<IIQ', 0, 100, 0), 3)
              + b''.join(scrub(t, 0, ino, 30 + t) for ino in (128, 129, 131) for t in range(9, 14)),
    'batch': msg(6, b''.join(struct.pack('<IIQII', t, a, i, 0, 0)
                             for t, a, i in [(1, 0, 0), (2, 1, 0), (9, 0, 128), (11, 0, 129)]), 6),
    'cancel-repair': msg(4, struct.pack('<Q', 0), 4) + scrub(2, 0, 0, 5, cmd=5) + msg(99, b'', 7),
    'bad': msg(1, b'x' * 3, 9) + msg(1, b'', 10, ver=2),
}
for name, data in seeds.items():
    with open(os.path.join(out, name), 'wb') as f:
        f.write(data)
PY
du -cb "$img" "$ctl" | tail -n 1
