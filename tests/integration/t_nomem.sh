#!/bin/bash
# t_nomem.sh — the daemon under allocation failures: mounted with MENDFS_TEST_FAULTS, one
# allocation in 7 fails (SIGUSR1) while a seeded random workload creates, writes, mkdirs,
# renames, symlinks, unlinks, rmdirs, truncates, chmods, utimes, sets and removes extended
# attributes against a model.  Every operation
# must either succeed or fail with ENOMEM and then have changed nothing (the model is not
# updated); no EIO, no hang, no crash.  Then failures stop (SIGUSR2) and the same kinds of
# operations must all succeed; the tree is compared with the model (names, types, sizes,
# modes, contents); unmount (the daemon exits 0), `mendfs_db -c check` is clean, and after
# a remount the tree still matches the model.  Then the same at one failure in 40 (more
# operations get far enough to fail late).  Finally mount and journal replay themselves
# under allocation failures, after a crash; and unmount under allocation failures.  NOMEM_SEED repeats a run; NOMEM_TRACE=file
# logs every operation and its result.
set -u
. "$(dirname "$0")/mountlib.sh"
ml_setup t_nomem

alive() { kill -0 "$pid" 2>/dev/null || fail "the daemon died ($1)"; mounted "$mnt" || fail "the mount is gone ($1)"; }

"$MKFS" -q "$img" 256M || fail "mkfs"
MENDFS_TEST_FAULTS=7 mount_fs
grep -q "test fault injection enabled" "$log" || fail "MENDFS_TEST_FAULTS did not enable the signals"

seed=${NOMEM_SEED:-$(( ($(date +%s) ^ $$) % 1000000 ))}
echo "seed $seed (set NOMEM_SEED=$seed to repeat)"

# The workload: phase "faults" (ENOMEM allowed), phase "clean" (everything must succeed),
# phase "verify" (compare with the model saved by the earlier phases).
cat >"$dir/work.py" <<'PY'
import errno, json, os, random, stat, sys
mnt, phase, seed, nops, state = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rng = random.Random("%s-%d" % (phase, seed))
if os.path.exists(state):
    with open(state) as f:
        st = json.load(f)
    files = {k: bytearray.fromhex(v["d"]) for k, v in st["files"].items()}
    modes = {k: v["m"] for k, v in st["files"].items()}
    xattrs = {k: {n: bytes.fromhex(x) for n, x in v["x"].items()} for k, v in st["files"].items()}
    dirs = set(st["dirs"])
    links = st["links"]
else:
    files, modes, dirs, links, xattrs = {}, {}, {""}, {}, {}
enomem = 0
counts = {}

def P(rel): return os.path.join(mnt, rel) if rel else mnt
def newname(): return "n%d" % rng.randrange(10**6)
def pick_dir(): return rng.choice(sorted(dirs))
def children(d):
    pre = d + "/" if d else ""
    return [p for p in list(files) + list(dirs) + list(links) if p != d and p.startswith(pre) and "/" not in p[len(pre):]]

def op_create():
    d = pick_dir(); p = (d + "/" if d else "") + newname()
    if p in files or p in dirs or p in links: return
    global desc; desc = p
    fd = os.open(P(p), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    os.close(fd)
    files[p] = bytearray(); modes[p] = 0o644; xattrs[p] = {}
def op_write():
    if not files: return
    p = rng.choice(sorted(files)); off = rng.randrange(0, 65536); n = rng.randrange(1, 20000)
    data = bytes([rng.randrange(256)]) * n
    global desc; desc = "%s off %d len %d byte %d" % (p, off, n, data[0])
    fd = os.open(P(p), os.O_WRONLY)
    try:
        w = os.pwrite(fd, data, off)
    finally:
        os.close(fd)
    b = files[p]
    if off + w > len(b): b.extend(b"\0" * (off + w - len(b)))
    b[off:off + w] = data[:w]
def op_sparse():
    # one byte every other block: an extent per byte, so a truncate takes several
    # transactions (at most 16 extents each)
    if not files: return
    p = rng.choice(sorted(files)); v = bytes([rng.randrange(1, 256)])
    global desc; desc = "%s sparse byte %d" % (p, v[0])
    fd = os.open(P(p), os.O_WRONLY)
    try:
        for k in range(40):
            off = 8192 * k + 100
            os.pwrite(fd, v, off)
            b = files[p]
            if off + 1 > len(b): b.extend(b"\0" * (off + 1 - len(b)))
            b[off] = v[0]
    finally:
        os.close(fd)
def op_mkdir():
    d = pick_dir(); p = (d + "/" if d else "") + newname()
    if p in files or p in dirs or p in links or p.count("/") > 3: return
    global desc; desc = p
    os.mkdir(P(p), 0o755)
    dirs.add(p)
def op_rename():
    allp = sorted(list(files) + list(links))
    if not allp: return
    src = rng.choice(allp); d = pick_dir(); dst = (d + "/" if d else "") + newname()
    if dst in files or dst in dirs or dst in links: return
    global desc; desc = "%s -> %s" % (src, dst)
    os.rename(P(src), P(dst))
    if src in files:
        files[dst] = files.pop(src); modes[dst] = modes.pop(src); xattrs[dst] = xattrs.pop(src)
    else:
        links[dst] = links.pop(src)
def op_unlink():
    allp = sorted(list(files) + list(links))
    if not allp: return
    p = rng.choice(allp)
    global desc; desc = p
    os.unlink(P(p))
    if p in files: del files[p]; del modes[p]; del xattrs[p]
    else: del links[p]
def op_rmdir():
    empty = [d for d in dirs if d and not children(d)]
    if not empty: return
    d = rng.choice(sorted(empty))
    global desc; desc = d
    os.rmdir(P(d))
    dirs.discard(d)
def op_truncate():
    if not files: return
    p = rng.choice(sorted(files)); n = rng.randrange(0, max(80000, len(files[p])))
    global desc; desc = "%s to %d" % (p, n)
    os.truncate(P(p), n)
    b = files[p]
    if n < len(b): del b[n:]
    else: b.extend(b"\0" * (n - len(b)))
def op_chmod():
    if not files: return
    p = rng.choice(sorted(files)); m = rng.choice([0o600, 0o644, 0o640, 0o755])
    os.chmod(P(p), m); modes[p] = m
def op_utime():
    if not files: return
    p = rng.choice(sorted(files))
    os.utime(P(p), ns=(rng.randrange(10**18), rng.randrange(10**18)))
def op_symlink():
    d = pick_dir(); p = (d + "/" if d else "") + newname()
    if p in files or p in dirs or p in links: return
    t = "t" * rng.choice([5, 60, 300])
    global desc; desc = "%s len %d" % (p, len(t))
    os.symlink(t, P(p)); links[p] = t
def op_setxattr():
    if not files: return
    p = rng.choice(sorted(files)); n = "user.a%d" % rng.randrange(12)
    v = bytes([rng.randrange(256)]) * rng.choice([10, 300, 2000])
    global desc; desc = "%s %s %d" % (p, n, len(v))
    os.setxattr(P(p), n, v); xattrs[p][n] = v
def op_rmxattr():
    cand = sorted((p, n) for p in xattrs for n in xattrs[p])
    if not cand: return
    p, n = rng.choice(cand)
    global desc; desc = "%s %s" % (p, n)
    os.removexattr(P(p), n); del xattrs[p][n]
def op_stat():
    allp = sorted(list(files) + list(dirs))
    p = rng.choice(allp)
    os.stat(P(p))
def op_readdir():
    os.listdir(P(pick_dir()))

ops = [(op_create, 14), (op_write, 20), (op_sparse, 3), (op_mkdir, 6), (op_rename, 10), (op_unlink, 8),
       (op_rmdir, 3), (op_truncate, 8), (op_chmod, 6), (op_utime, 5), (op_symlink, 5),
       (op_setxattr, 6), (op_rmxattr, 3), (op_stat, 8), (op_readdir, 5)]
table = [f for f, w in ops for _ in range(w)]

def verify():
    seen_f, seen_d, seen_l = {}, set(), {}
    for root, ds, fs in os.walk(mnt):
        rel = os.path.relpath(root, mnt)
        rel = "" if rel == "." else rel
        seen_d.add(rel)
        for n in fs + ds:
            p = (rel + "/" if rel else "") + n
            s = os.lstat(P(p))
            if stat.S_ISLNK(s.st_mode): seen_l[p] = os.readlink(P(p))
            elif stat.S_ISREG(s.st_mode):
                with open(P(p), "rb") as f:
                    os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)   # the daemon's bytes, not the page cache's
                    seen_f[p] = f.read()
                got = {n: os.getxattr(P(p), n) for n in os.listxattr(P(p)) if n.startswith("user.")}
                if got != xattrs.get(p):
                    sys.exit("xattrs of %s: %s, model %s" % (p, sorted(got), sorted(xattrs.get(p, {}))))
                if stat.S_IMODE(s.st_mode) != modes.get(p):
                    sys.exit("mode of %s: %o, model %o" % (p, stat.S_IMODE(s.st_mode), modes.get(p, 0)))
    if set(seen_f) != set(files): sys.exit("files differ: extra %s missing %s" % (sorted(set(seen_f) - set(files))[:5], sorted(set(files) - set(seen_f))[:5]))
    if seen_d != dirs: sys.exit("dirs differ: extra %s missing %s" % (sorted(seen_d - dirs)[:5], sorted(dirs - seen_d)[:5]))
    if seen_l != links: sys.exit("symlinks differ: %s" % sorted((k, len(seen_l.get(k, "")), len(links.get(k, ""))) for k in set(seen_l) | set(links) if seen_l.get(k) != links.get(k))[:5])
    for p, b in files.items():
        if seen_f[p] != bytes(b):
            a = seen_f[p]; k = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
            sys.exit("content of %s differs from byte %d (size %d, model %d)" % (p, k, len(a), len(b)))
    print("verified: %d files, %d dirs, %d symlinks" % (len(files), len(dirs), len(links)))

if phase == "verify":
    verify(); sys.exit(0)
trace = open(os.environ["NOMEM_TRACE"], "a") if os.environ.get("NOMEM_TRACE") else None
for i in range(nops):
    f = rng.choice(table)
    desc = ""
    try:
        f()
        counts[f.__name__] = counts.get(f.__name__, 0) + 1
        if trace: trace.write("%s %d %s ok %s\n" % (phase, i, f.__name__, desc))
    except OSError as e:
        if trace: trace.write("%s %d %s %s %s\n" % (phase, i, f.__name__, desc, e))
        if phase == "faults" and e.errno == errno.ENOMEM:
            enomem += 1
            continue
        sys.exit("op %d %s (%s): unexpected %s" % (i, f.__name__, desc, e))
with open(state, "w") as f:
    json.dump({"files": {k: {"d": bytes(v).hex(), "m": modes[k], "x": {n: x.hex() for n, x in xattrs[k].items()}} for k, v in files.items()},
               "dirs": sorted(dirs), "links": links}, f)
print("%s: %d ops, %d ENOMEM; done: %s" % (phase, nops, enomem, " ".join("%s=%d" % (k[3:], v) for k, v in sorted(counts.items()))))
if phase == "faults" and enomem == 0: sys.exit("no operation met an allocation failure")
PY

# faults EVERY OPS: a workload of OPS operations while one allocation in EVERY fails
faults() {
	local every=$1 ops=$2 rc injected before
	kill -USR1 "$pid"
	timeout 300 python3 "$dir/work.py" "$mnt" faults "$seed$every" "$ops" "$dir/state"
	rc=$?
	alive "after the workload under allocation failures (one in $every)"
	[ $rc -eq 0 ] || fail "workload under allocation failures, one in $every (status $rc)"
	before=$(grep -c "test faults: [0-9]* injected" "$log")
	kill -USR2 "$pid"
	for _ in $(seq 200); do
		[ "$(grep -c "test faults: [0-9]* injected" "$log")" -gt "$before" ] && break
		sleep 0.025
	done
	injected=$(sed -n 's/.*test faults: \([0-9]*\) injected.*/\1/p' "$log" | sed -n "$((before + 1))p")
	[ -n "$injected" ] && [ "$injected" -gt 0 ] || fail "no allocation failure was injected"
	ok "one allocation in $every failing: $injected failures injected (so far); every operation succeeded or failed with ENOMEM"
	python3 "$dir/work.py" "$mnt" verify 0 0 "$dir/state" || fail "tree differs from the model after failures"
}

python3 "$dir/work.py" "$mnt" clean "$seed" 200 "$dir/state" || fail "setup workload"
faults 7 1500
umount_fs
"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { cat "$dir/db.out"; fail "mendfs_db check after one failure in 7"; }
ok "unmount, mendfs_db check clean"
MENDFS_TEST_FAULTS=40 mount_fs
faults 40 1500
timeout 300 python3 "$dir/work.py" "$mnt" clean "$seed" 500 "$dir/state" || fail "operations after the failures stopped"
alive "after the clean workload"
python3 "$dir/work.py" "$mnt" verify 0 0 "$dir/state" || fail "tree differs from the model"
ok "after failures stop every operation works; the tree matches the model"
umount_fs
"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { cat "$dir/db.out"; fail "mendfs_db check after the workload"; }
ok "clean unmount, mendfs_db check clean"
mount_fs
python3 "$dir/work.py" "$mnt" verify 0 0 "$dir/state" || fail "tree differs from the model after remount"
umount_fs
ok "remount: the tree matches the model"

# Mount and journal replay under allocation failures: the daemon is killed with fsync'd
# files in the log, then started with one allocation in N failing from the start
# (MENDFS_TEST_FAULTS=N,start), N growing until it mounts.  Each refusal is an exit status
# of 1 with a message (never a signal) and leaves the image replayable; once mounted (and
# failures stopped) every fsync'd file is there, and the image checks clean.
for round in 1 2; do
	mount_fs -o commit=0
	python3 - "$mnt" "$round" <<'PY' || fail "crash workload $round"
import os, sys
m, r = sys.argv[1], sys.argv[2]
os.mkdir("%s/crash%s" % (m, r))
for k in range(20):
    with open("%s/crash%s/f%02d" % (m, r, k), "wb") as f:
        f.write(os.urandom(3000)); f.flush(); os.fsync(f.fileno())
fd = os.open("%s/crash%s" % (m, r), os.O_RDONLY); os.fsync(fd); os.close(fd)
PY
	crash
	mounted_at=""
	for n in 40 70 100 130 160 190 220 250 280 310 400 800; do
		: >"$log"
		MENDFS_TEST_FAULTS=$n,start "$MENDFS" -f "$img" "$mnt" >>"$log" 2>&1 &
		pid=$!
		for _ in $(seq 400); do
			mounted "$mnt" && break
			kill -0 "$pid" 2>/dev/null || break
			sleep 0.025
		done
		if mounted "$mnt"; then
			mounted_at=$n
			break
		fi
		kill -0 "$pid" 2>/dev/null && fail "one allocation in $n failing: neither mounted nor refused in 10 s"
		wait "$pid"
		rc=$?
		pid=""
		[ "$rc" -eq 1 ] || fail "one allocation in $n failing at mount: exit status $rc"
		grep -v "test fault injection enabled" "$log" | grep -q . ||
			fail "one allocation in $n failing at mount: refused without a message"
	done
	[ -n "$mounted_at" ] || fail "no mount even with one allocation in 800 failing"
	kill -USR2 "$pid"
	for _ in $(seq 200); do grep -q "test faults: [0-9]* injected" "$log" && break; sleep 0.025; done
	n=$(ls "$mnt/crash$round" 2>/dev/null | wc -l)
	[ "$n" -eq 20 ] || fail "crash $round: $n of 20 fsync'd files after the replay"
	umount_fs
	"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { cat "$dir/db.out"; fail "mendfs_db check after replay under failures"; }
	ok "crash $round: mount and replay refused cleanly while allocations failed, mounted at one in $mounted_at, 20 fsync'd files, check clean"
done

# Unmount under allocation failures: the daemon flushes what it can and exits by itself
# (status 0, or 1 with a message when it could not mark the filesystem clean); the next
# mount finds every file, and the image checks clean.
for n in 7 20; do
	MENDFS_TEST_FAULTS=$n mount_fs
	python3 - "$mnt" "$n" <<'PY' || fail "workload before the unmount under failures"
import os, sys
m, n = sys.argv[1], sys.argv[2]
os.mkdir("%s/u%s" % (m, n))
for k in range(30):
    with open("%s/u%s/f%02d" % (m, n, k), "wb") as f:
        f.write(os.urandom(7000))
for k in range(0, 30, 3):
    os.unlink("%s/u%s/f%02d" % (m, n, k))
PY
	kill -USR1 "$pid"
	umount_status
	[ "$rc" -le 1 ] || fail "unmount with one allocation in $n failing: exit status $rc"
	mount_fs
	got=$(ls "$mnt/u$n" | wc -l)
	umount_fs
	[ "$got" -eq 20 ] || fail "after an unmount under failures: $got of 20 files"
	"$DB" -c check "$img" >"$dir/db.out" 2>&1 || { cat "$dir/db.out"; fail "mendfs_db check after an unmount under failures"; }
	ok "unmount with one allocation in $n failing: daemon status $rc; remount finds every file; check clean"
done
