#!/bin/bash
# t_badimage.sh — corrupt images: for each kind of metadata block (primary superblock and a
# copy, AG headers, AG free list, each AG btree root, inode clusters, directory btree root
# and leaf, an extent-map root, attribute btree and value blocks, the journal header
# copies, and a journal record after a crash), a populated image gets that block
# overwritten with random bytes (mendfs_db trash), then is mounted.  Either the mount is refused, with a message, by a daemon that exits with an
# error status (not a signal); or it mounts, and then every operation of a fixed set
# (lookups, reads, readdir, xattrs, stat, and creating, writing, reading back and removing
# a new file) either works or fails with EIO/EUCLEAN, the operation that reads the damaged
# block fails so, the root stays usable, the daemon stays up, and unmount works with the
# daemon exiting by itself (never killed by a signal).
set -u
. "$(dirname "$0")/mountlib.sh"
ml_setup t_badimage

"$MKFS" -q "$img" 256M || fail "mkfs"
mount_fs
python3 - "$mnt" >"$dir/inos" <<'PY' || fail "populating"
import os, sys
m = sys.argv[1]
os.mkdir(m + "/big")
for i in range(400):
    open(m + "/big/entry_%04d" % i, "w").close()
fd = os.open(m + "/frag", os.O_CREAT | os.O_WRONLY, 0o644)
for i in range(0, 3000, 2):                 # 1500 one-block extents: an extent btree
    os.pwrite(fd, b"x" * 4096, i * 4096)
os.close(fd)
with open(m + "/attrs", "w") as f:
    f.write("hello")
for i in range(60):                         # an attribute btree
    os.setxattr(m + "/attrs", "user.k%03d" % i, b"v" * 200)
os.setxattr(m + "/attrs", "user.bigval", b"B" * 3000)   # a value block
with open(m + "/plain", "w") as f:
    f.write("plain data")
for n in ("big", "frag", "attrs", "plain"):
    print(n, os.stat(m + "/" + n).st_ino)
PY
umount_fs
"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { cat "$dir/db.out"; fail "the populated image does not check clean"; }
cp --sparse=always "$img" "$dir/pristine"

# Where each kind of block is, from mendfs_db.
rootino=$("$DB" -c geom "$img" | sed -n 's/^rootino = //p')
[ -n "$rootino" ] || fail "no root inode number from mendfs_db geom"
"$DB" -c geom -c "inode $rootino" -c "agh 0" -c "agh 1" -c "agfl 0" -c "btree 0 rmap" \
	-c "inode $(awk '$1 == "big" {print $2}' "$dir/inos")" \
	-c "inode $(awk '$1 == "frag" {print $2}' "$dir/inos")" \
	-c "inode $(awk '$1 == "plain" {print $2}' "$dir/inos")" "$img" >"$dir/db.txt" 2>&1 ||
	fail "mendfs_db could not describe the image"
python3 - "$dir/inos" "$dir/db.txt" >"$dir/cases" <<'PY' || fail "could not find every block in mendfs_db's output"
import re, sys
inos = dict(l.split() for l in open(sys.argv[1]))
t = open(sys.argv[2]).read()
g = lambda pat, s=t: int(re.search(pat, s, re.M).group(1))
agblocks = g(r"^agblocks = (\d+)")
logstart = g(r"^logstart = (\d+)")
ag0 = t[t.index("AG 0 header:"):t.index("AG 1 header:")]
ag1 = t[t.index("AG 1 header:"):]
def inode_sect(ino): return t[t.index("inode %s (" % ino):]
def cluster(ino):
    a, b = re.search(r"inode %s \(AG (\d+) block (\d+)" % ino, t).groups()
    return int(a) * agblocks + int(b)
def dir_leaf(ino, root):
    for l in t.splitlines():
        m = re.search(r"startblock (\d+) blockcount (\d+) owner ino %s offset 0 bmbt$" % ino, l)
        if m:
            for b in range(int(m.group(1)), int(m.group(1)) + int(m.group(2))):
                if b != root:
                    return b
    raise SystemExit("no directory btree block of inode %s besides its root" % ino)
def attr_block(kind):
    for l in t.splitlines():
        m = re.search(r"startblock (\d+) blockcount \d+ owner ino %s offset \d+ (attr.*)$" % inos["attrs"], l)
        if m and (m.group(2).strip() == kind):
            return int(m.group(1))
    raise SystemExit("no %s block of the attribute inode" % kind)
# name, block, the object whose reading must fail if the image mounts ("-": none)
cases = [
    ("superblock", 0, "-"),
    ("AG 0 header", g(r"^blkno = (\d+)", ag0), "-"),
    ("AG 1 header", g(r"^blkno = (\d+)", ag1), "-"),
    ("superblock copy in AG 1", g(r"^blkno = (\d+)", ag1) - 1, "-"),
    ("AG 0 free list", g(r"^blkno = (\d+)", t[t.index("AG 0 free list"):]), "-"),
    ("AG 0 free-space-by-block root", g(r"^bno root = (\d+)", ag0), "-"),
    ("AG 0 free-space-by-length root", g(r"^cnt root = (\d+)", ag0), "-"),
    ("AG 0 inode btree root", g(r"^ino root = (\d+)", ag0), "-"),
    ("AG 0 reverse-map root", g(r"^rmap root = (\d+)", ag0), "-"),
    ("inode cluster of /plain", cluster(inos["plain"]), "plain"),
    ("inode cluster of the root", cluster(g(r"^rootino = (\d+)")), "root"),
    ("directory btree root of /big", g(r"data fork btree root (\d+)", inode_sect(inos["big"])), "big"),
    ("directory btree leaf of /big", dir_leaf(inos["big"], g(r"data fork btree root (\d+)", inode_sect(inos["big"]))), "big"),
    ("extent-map root of /frag", g(r"data fork btree root (\d+)", inode_sect(inos["frag"])), "frag"),
    ("attribute btree block of /attrs", attr_block("attr bmbt"), "attrs"),
    ("attribute value block of /attrs", attr_block("attr"), "bigval"),
    ("journal header copy 0", logstart, "-"),
    ("journal header copies 0 and 1", logstart, "-"),
]
for name, blk, touch in cases:
    print("%d|%d|%s|%s" % (blk, 2 if name.endswith("0 and 1") else 1, touch, name))
PY

# The operations run on a mounted damaged image: each one's outcome, and a verdict.
cat >"$dir/poke.py" <<'PY'
import errno, os, sys
m, touch = sys.argv[1], sys.argv[2]
ok_errs = (errno.EIO, errno.EUCLEAN)
res = {}
def run(name, f):
    try:
        f(); res[name] = 0
    except OSError as e:
        if e.errno not in ok_errs:
            sys.exit("%s: unexpected %s" % (name, e))
        res[name] = e.errno
def readall(p):
    with open(p, "rb") as f:
        while f.read(1 << 20): pass
def newfile():
    os.mkdir(m + "/new")
    p = m + "/new/f"
    data = os.urandom(100000)
    with open(p, "wb") as f:
        f.write(data); f.flush(); os.fsync(f.fileno())
    with open(p, "rb") as f:
        if f.read() != data: sys.exit("new file: read back differs")
    os.unlink(p); os.rmdir(m + "/new")
run("root", lambda: (os.stat(m), os.listdir(m)))
run("big", lambda: [os.stat(m + "/big/" + n) for n in os.listdir(m + "/big")[:50]] + [os.stat(m + "/big/entry_0399")])
run("frag", lambda: readall(m + "/frag"))
run("attrs", lambda: [os.getxattr(m + "/attrs", n) for n in os.listxattr(m + "/attrs")])
run("bigval", lambda: os.getxattr(m + "/attrs", "user.bigval"))
run("plain", lambda: (os.stat(m + "/plain"), readall(m + "/plain")))
run("new", newfile)
run("root again", lambda: (os.stat(m), os.listdir(m)))
bad = sorted(k for k, v in res.items() if v)
print("failed with EIO/EUCLEAN: %s" % (" ".join(bad) if bad else "none"))
if touch != "-" and not res.get(touch):
    sys.exit("reading the damaged %s did not fail" % touch)
if res["root again"] and touch != "root":
    sys.exit("the root is not usable")
PY

n=0
while IFS='|' read -r blk count touch name; do
	n=$((n + 1))
	cp --sparse=always "$dir/pristine" "$img"
	"$DB" -w -c "trash $blk $count random" "$img" >"$dir/trash.out" 2>&1 ||
		{ cat "$dir/trash.out"; fail "$name: mendfs_db could not trash block $blk"; }
	: >"$log"
	"$MENDFS" -f "$img" "$mnt" >>"$log" 2>&1 &
	pid=$!
	state=""
	for _ in $(seq 400); do
		mounted "$mnt" && { state=mounted; break; }
		kill -0 "$pid" 2>/dev/null || { state=exited; break; }
		sleep 0.025
	done
	[ -n "$state" ] || fail "$name: neither mounted nor refused within 10 s"
	if [ "$state" = exited ]; then
		wait "$pid"
		rc=$?
		pid=""
		[ "$rc" -ge 128 ] && fail "$name (block $blk): the daemon died of signal $((rc - 128))"
		[ "$rc" -ne 0 ] || fail "$name: the daemon exited 0 without mounting"
		[ -s "$log" ] || fail "$name: the mount was refused without a message"
		ok "$name (block $blk): mount refused: $(grep -v '^Ignoring' "$log" | tail -1)"
		continue
	fi
	out=$(timeout 60 python3 "$dir/poke.py" "$mnt" "$touch" 2>&1)
	rc=$?
	kill -0 "$pid" 2>/dev/null || fail "$name (block $blk): the daemon died during the operations ($out)"
	mounted "$mnt" || fail "$name (block $blk): the mount went away ($out)"
	[ "$rc" -eq 0 ] || fail "$name (block $blk): $out (status $rc)"
	umount_status
	[ "$rc" -ge 128 ] && fail "$name (block $blk): the daemon died of signal $((rc - 128)) at unmount"
	ok "$name (block $blk): mounted; $out; unmounted (daemon status $rc)"
done <"$dir/cases"
[ "$n" -ge 18 ] || fail "only $n cases"

# A journal record: the daemon is killed with transactions in the log (a dozen fsync'd
# files, not yet checkpointed), a block of the log 20 blocks past the tail (in the third
# record or so) is trashed, and the mount must replay the records before it, stop there
# (so not every file comes back), serve, and leave a filesystem that checks clean (a
# prefix of the history is a consistent state).
cp --sparse=always "$dir/pristine" "$img"
: >"$log"
mount_fs -o commit=0
python3 - "$mnt" <<'PY' || fail "crash workload"
import os, sys
m = sys.argv[1]
os.mkdir(m + "/c")
for i in range(12):
    p = m + "/c/f%02d" % i
    with open(p, "wb") as f:
        f.write(os.urandom(5000 + 300 * i)); f.flush(); os.fsync(f.fileno())
    if i % 3 == 0:
        os.rename(p, p + ".r")
os.unlink(m + "/c/f01")
fd = os.open(m + "/c", os.O_RDONLY); os.fsync(fd); os.close(fd)
PY
crash
logstart=$(sed -n 's/^logstart = //p' "$dir/db.txt")
bs=$(sed -n 's/^blocksize = //p' "$dir/db.txt")
blk=$(python3 - "$img" "$logstart" "$bs" <<'PY'
import struct, sys
img, logstart, bs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
best = None
with open(img, "rb") as f:
    for copy in (0, 1):
        f.seek((logstart + copy) * bs)
        h = f.read(136)
        gen, = struct.unpack_from("<Q", h, 8)
        nlog, tail = struct.unpack_from("<II", h, 48)
        if best is None or gen > best[0]:
            best = (gen, tail, nlog)
gen, tail, nlog = best
print(logstart + 2 + (tail - 2 + 20) % (nlog - 2))     # log blocks 0, 1: the headers
PY
)
"$DB" -w -c "trash $blk 1 random" "$img" >"$dir/trash.out" 2>&1 || { cat "$dir/trash.out"; fail "trashing log block $blk"; }
: >"$log"
mount_fs
out=$(timeout 60 python3 "$dir/poke.py" "$mnt" - 2>&1) || fail "journal record (block $blk): $out"
kill -0 "$pid" 2>/dev/null || fail "journal record: the daemon died"
names=$(ls "$mnt/c" 2>/dev/null | wc -l)
umount_fs
[ "$names" -lt 11 ] || fail "journal record (block $blk): all $names files came back: the replay did not stop at the damaged record"
"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { tail "$dir/db.out"; fail "journal record (block $blk): the replayed image does not check clean"; }
ok "journal record: log block $blk trashed after a crash: mounted, $names names in /c; $out; check clean"
