#!/bin/bash
# bench_fs.sh — the filesystem benchmark: the same workloads on mendfs, fuse2fs (Debian's,
# on an ext4 image), our own lowlevel passthrough (tests/bench/passthrough_ll.c: the FUSE
# ceiling, no filesystem work), bindfs (-o big_writes --multithreaded) and the kernel
# filesystem underneath; one table, each figure the median of BENCH_RUNS runs, with the
# ratios mendfs/fuse2fs and mendfs/ceiling beside the aims of issue 8.  Never pass/fail.
#
# A full run (6 columns, 3 runs) takes one to two hours on the 2-core machine kind;
# BENCH_QUICK=1 about 15 minutes.
#
# Environment:
#   BIN         the built programs (mkfs.mendfs, mendfs)         (required)
#   BENCH_BIN   passthrough_ll and metaops                        (required)
#   BENCH_RUNS  runs per figure (default 3)
#   BENCH_QUICK 1: small sizes (256 MiB files, 10,000 files, a 2,000-file tree, 3 s runs)
#   BENCH_TMPFS 1: images and directories on a tmpfs mounted for the run (not the disk)
#   BENCH_DIR   where the images go on the disk (default /var/tmp)
#   BENCH_ONLY  the columns to run, of: mendfs mendfs_wb fuse2fs ceiling bindfs kernel
#               (default all; mendfs_wb is mendfs -o writeback_cache)
#   BENCH_SKIP  workloads to leave out, of: seq rand meta tree mount
#   BENCH_MENDFS_OPTS  extra -o options for mendfs (e.g. to compare a setting)
#   BENCH_PERRUN 1: after the table, every run's figures (rate CPU, in run order), to see
#               how far they spread before trusting a median
#
# CPU: seconds of the daemon (utime + stime from /proc/PID/stat, all its threads) per GiB
# moved or per 1,000 operations; for the kernel column, the client's CPU (its system time
# is the filesystem's).  Cold reads, stats, readdirs, unlinks and the tree deletion run
# after `sync` and dropping the page, dentry and inode caches (as root).  Random 4 KiB
# reads are O_DIRECT (for FUSE: every request goes to the daemon) on a file read once
# before, so that the image, or the ceiling's file underneath (opened without O_DIRECT,
# passthrough_ll.c), is in the host's page cache for every FUSE column; everything else is
# buffered.  Read rates are over fio's own run time (fio_secs), other rates over the time
# the command took.
set -u
BIN=${BIN:?BIN must name the directory of the built programs}
BENCH_BIN=${BENCH_BIN:?BENCH_BIN must name the directory of passthrough_ll and metaops}
RUNS=${BENCH_RUNS:-3}
QUICK=${BENCH_QUICK:-0}
TMPFS=${BENCH_TMPFS:-0}
ONLY=${BENCH_ONLY:-mendfs mendfs_wb fuse2fs ceiling bindfs kernel}
SKIP=${BENCH_SKIP:-}
MOPTS=${BENCH_MENDFS_OPTS:-}
PERRUN=${BENCH_PERRUN:-0}

if [ "$QUICK" = 1 ]; then
	SEQ_MB=256 NFILES=10000 NDIRS=100 RT=3 TREE_FILES=2000 TREE_DIRS=150 SYNC_MB=16
else
	SEQ_MB=1024 NFILES=100000 NDIRS=100 RT=10 TREE_FILES=20000 TREE_DIRS=1500 SYNC_MB=64
fi
IMG_SIZE=64G
# 16 TiB less 1 MiB: a file on ext4 (the disk here) stops 4 KiB short of 16 TiB.
BIG_SIZE=$((16 * 1024 ** 4 - 1024 ** 2))
TICK=$(getconf CLK_TCK)

for t in fio python3 fusermount3 mkfs.ext4; do
	command -v $t >/dev/null || { echo "bench_fs: $t is missing: skipped"; exit 0; }
done
[ -c /dev/fuse ] || { echo "bench_fs: /dev/fuse is missing: skipped"; exit 0; }
cols=""
for c in $ONLY; do
	case $c in
	fuse2fs) command -v fuse2fs >/dev/null || { echo "(no fuse2fs: column left out)"; continue; } ;;
	bindfs) command -v bindfs >/dev/null || { echo "(no bindfs: column left out)"; continue; } ;;
	mendfs|mendfs_wb|ceiling|kernel) ;;
	*) echo "bench_fs: unknown column $c"; exit 2 ;;
	esac
	cols="$cols $c"
done
skipped() { case " $SKIP " in *" $1 "*) return 0 ;; esac; return 1; }

base=${BENCH_DIR:-/var/tmp}
work=$(mktemp -d "$base/mendfs-bench.XXXXXX") || exit 1
tmpfs_mnt=""
if [ "$TMPFS" = 1 ]; then
	mkdir "$work/tmpfs"
	mount -t tmpfs -o size=12g tmpfs "$work/tmpfs" || { echo "bench_fs: cannot mount tmpfs"; exit 1; }
	tmpfs_mnt=$work/tmpfs
	area=$tmpfs_mnt
	where="tmpfs"
else
	area=$work
	where="$(findmnt -no FSTYPE -T "$work" 2>/dev/null) disk ($base)"
fi
mnt=$work/mnt
mkdir -p "$mnt"
dpid=""

cleanup() {
	cd /
	if grep -q " $mnt fuse" /proc/self/mounts; then
		fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt"
	fi
	[ -n "$dpid" ] && { wait_gone "$dpid" || kill -9 "$dpid" 2>/dev/null; }
	[ -n "$tmpfs_mnt" ] && umount "$tmpfs_mnt"
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_gone PID: bounded wait (60 s) for a process to exit
wait_gone() {
	for _ in $(seq 2400); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.025
	done
	return 1
}

# wait_mounted: bounded wait (20 s) for the FUSE mount at $mnt; fails if the daemon died
wait_mounted() {
	for _ in $(seq 2000); do
		grep -q " $mnt fuse" /proc/self/mounts && return 0
		[ -n "$dpid" ] && ! kill -0 "$dpid" 2>/dev/null && return 1
		sleep 0.01
	done
	return 1
}

drop_caches() {
	sync
	echo 3 >/proc/sys/vm/drop_caches 2>/dev/null
}

# ---- the columns: mount_COL and umount_COL ------------------------------------------------
# Each mount starts the daemon in the foreground (so that $dpid is the daemon) on a fresh
# image or directory under $area and waits for the mount.

mount_col() {
	local col=$1
	rm -rf "$area/img" "$area/src" "$area/kdir"
	dpid=""
	case $col in
	mendfs|mendfs_wb)
		"$BIN/mkfs.mendfs" -f -q "$area/img" $IMG_SIZE || return 1
		o=allow_other${MOPTS:+,$MOPTS}
		[ $col = mendfs_wb ] && o=$o,writeback_cache
		"$BIN/mendfs" -f -o $o "$area/img" "$mnt" 2>>"$work/daemon.log" &
		dpid=$! ;;
	fuse2fs)
		truncate -s $IMG_SIZE "$area/img" && mkfs.ext4 -F -q "$area/img" || return 1
		fuse2fs "$area/img" "$mnt" -f -o allow_other >>"$work/daemon.log" 2>&1 &
		dpid=$! ;;
	ceiling)
		mkdir "$area/src"
		"$BENCH_BIN/passthrough_ll" -f -o allow_other,default_permissions,source="$area/src" \
			"$mnt" 2>>"$work/daemon.log" &
		dpid=$! ;;
	bindfs)
		mkdir "$area/src"
		bindfs -f -o big_writes,allow_other --multithreaded "$area/src" "$mnt" \
			2>>"$work/daemon.log" &
		dpid=$! ;;
	kernel)
		mkdir "$area/kdir"
		root=$area/kdir
		return 0 ;;
	esac
	root=$mnt
	wait_mounted || { echo "bench_fs: $col did not mount (see below)"; tail -5 "$work/daemon.log"; return 1; }
}

umount_col() {
	if [ -n "$dpid" ]; then
		fusermount3 -u "$mnt" || fusermount3 -uz "$mnt"
		wait_gone "$dpid" || { echo "bench_fs: daemon $dpid still running; killed"; kill -9 "$dpid"; }
		wait "$dpid" 2>/dev/null
		dpid=""
	fi
	rm -rf "$area/img" "$area/src" "$area/kdir"
}

# CPU clock ticks: of the daemon, or (kernel column) of this shell's waited-for children.
cpu_ticks() {
	if [ -n "$dpid" ]; then
		awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$dpid/stat"
	else
		awk '{ sub(/^.*\) /, ""); print $14 + $15 }' "/proc/$$/stat"
	fi
}

now() { date +%s.%N; }

# ---- measuring -------------------------------------------------------------------------
# Results: one file per (column, workload) under $work/res, one "rate cpu" line per run.
mkdir -p "$work/res"
t0="" c0="" t1="" c1=""
begin() { c0=$(cpu_ticks); t0=$(now); }
stop() { t1=$(now); c1=$(cpu_ticks); }
# record COL WORKLOAD AMOUNT UNIT [SECONDS] (after begin and stop): AMOUNT is MiB (rate
# MiB/s, CPU s/GiB) or operations (rate ops/s, CPU s per 1000 ops); the rate is over
# SECONDS when given (fio's own run time), else over the time between begin and stop.
# The CPU is always the daemon's between begin and stop.
record() {
	awk -v a="$3" -v u="$4" -v t0="$t0" -v t1="$t1" -v c0="$c0" -v c1="$c1" -v hz="$TICK" \
		-v secs="${5:-}" \
		'BEGIN { s = secs != "" ? secs : t1 - t0; c = (c1 - c0) / hz; if (s <= 0) s = 1e-9;
			 if (u == "MiB") printf "%.1f %.3f\n", a / s, (a > 0 ? c * 1024 / a : 0);
			 else printf "%.0f %.3f\n", a / s, (a > 0 ? c * 1000 / a : 0) }' \
		>>"$work/res/$1.$2"
}
end() { stop; record "$@"; }

# fio_run OUT ARGS...: run fio with JSON output into OUT; 1 on failure
fio_run() {
	local out=$1
	shift
	fio --output-format=json --output="$out" --fallocate=none --ioengine=psync "$@" \
		>/dev/null 2>"$out.err" || { echo "bench_fs: fio failed:"; tail -3 "$out.err"; return 1; }
}
# fio_ios FILE read|write: total I/Os of every job
fio_ios() {
	python3 -c 'import json,sys; d=json.load(open(sys.argv[1]));
print(sum(j[sys.argv[2]]["total_ios"] for j in d["jobs"]))' "$1" "$2"
}
# fio_secs FILE read|write: the run time of the I/O (seconds; the longest of the jobs, which
# run in parallel) as fio measured it, without fio's own start.  Reads are timed so: after
# the caches are dropped fio starts by reading itself and its 60-odd libraries from the
# disk (0.2-0.5 s on the loaded machine, as long as a quick run's 256 MiB), which would
# squeeze every column's rate towards the same figure.
fio_secs() {
	python3 -c 'import json,sys; d=json.load(open(sys.argv[1]));
print(max(j[sys.argv[2]]["runtime"] for j in d["jobs"]) / 1000.0)' "$1" "$2"
}

run_seq() {
	local col=$1 j=$2 f=$work/fio.json
	mkdir -p "$root/seq$j"
	begin
	fio_run "$f" --name=seq$j --directory="$root/seq$j" --rw=write --bs=1M --numjobs=$j \
		--size=$((SEQ_MB / j))M --end_fsync=1 || return 1
	end $col seqwrite$j $SEQ_MB MiB
	drop_caches
	begin
	fio_run "$f" --name=seq$j --directory="$root/seq$j" --rw=read --bs=1M --numjobs=$j \
		--size=$((SEQ_MB / j))M || return 1
	end $col seqread$j $SEQ_MB MiB "$(fio_secs "$f" read)"
}

run_rand() {
	local col=$1 f=$work/fio.json file=$root/seq1/seq1.0.0
	if [ ! -f "$file" ]; then       # the sequential workloads were skipped: lay it out
		mkdir -p "$root/seq1"
		fio_run "$f" --name=seq1 --directory="$root/seq1" --rw=write --bs=1M \
			--size=${SEQ_MB}M --end_fsync=1 || return 1
	fi
	# The file is read once through the mount first, with O_DIRECT: the image (or, for the
	# ceiling, the file underneath) is then in the host's page cache for every FUSE column
	# alike, and the O_DIRECT reads measure the request path, not how fast each column's
	# cold backing store happens to warm up during the run.  Not a buffered read: the
	# FUSE device may move (not copy) the backing pages it is handed into the mount's
	# page cache, leaving the backing store cold again.
	dd if="$file" of=/dev/null bs=1M iflag=direct status=none || return 1
	begin
	fio_run "$f" --name=rr --filename="$file" --rw=randread --bs=4k --direct=1 \
		--size=${SEQ_MB}M --time_based --runtime=$RT || return 1
	stop
	record $col randread "$(fio_ios "$f" read)" ops "$(fio_secs "$f" read)"
	begin
	fio_run "$f" --name=rw --filename="$file" --rw=randwrite --bs=4k --size=${SEQ_MB}M \
		--time_based --runtime=$RT --end_fsync=1 || return 1
	stop
	record $col randwrite "$(fio_ios "$f" write)" ops
	begin
	fio_run "$f" --name=sync --filename="$root/syncw" --rw=write --bs=4k --fsync=1 \
		--size=${SYNC_MB}M --time_based --runtime=$RT || return 1
	stop
	record $col fsyncwrite "$(fio_ios "$f" write)" ops
	rm -rf "$root/seq1" "$root/seq4" "$root/syncw"
}

# metaops OP DIR NDIRS [THREADS]: one metadata phase; ends the measurement with its count
meta() {
	local col=$1 name=$2 op=$3 dir=$4 nd=$5 th=${6:-1} out
	[ "$op" = create ] || drop_caches
	begin
	out=$("$BENCH_BIN/metaops" "$op" "$dir" $NFILES "$nd" "$th") ||
		{ echo "bench_fs: metaops $op failed on $col"; return 1; }
	stop
	record $col "$name" "${out%% *}" ops
}

run_meta() {
	local col=$1
	mkdir "$root/one" "$root/many" "$root/par" || return 1
	meta $col create1 create "$root/one" 1 || return 1
	meta $col stat1 stat "$root/one" 1 || return 1
	meta $col readdir1 readdir "$root/one" 1 || return 1
	meta $col unlink1 unlink "$root/one" 1 || return 1
	meta $col createN create "$root/many" $NDIRS || return 1
	meta $col statN stat "$root/many" $NDIRS || return 1
	meta $col unlinkN unlink "$root/many" $NDIRS || return 1
	meta $col createN4 create "$root/par" $NDIRS 4 || return 1
	meta $col unlinkN4 unlink "$root/par" $NDIRS 4 || return 1
	rmdir "$root/one" "$root/many" "$root/par"
}

# A tarball shaped like a source tree, made once, deterministically: TREE_FILES files in
# TREE_DIRS directories (depth up to 6), sizes log-normal around 6 KiB (mean ~14 KiB, at
# most 2 MiB, a few empty), contents pseudo-random.  Kept on tmpfs when there is one.
make_tree() {
	local tdir=/dev/shm
	[ -d $tdir ] && [ -w $tdir ] || tdir=$work
	tarball=$(mktemp "$tdir/mendfs-bench-tree.XXXXXX.tar") || return 1
	python3 - "$tarball" $TREE_FILES $TREE_DIRS <<'EOF'
import io, math, random, sys, tarfile
path, nfiles, ndirs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rnd = random.Random(8)
blob = bytes(rnd.getrandbits(8) for _ in range(1 << 21))
dirs, depth = ["src"], [0]
for i in range(1, ndirs):
    while True:
        p = rnd.randrange(len(dirs))
        if depth[p] < 6:
            break
    dirs.append("%s/d%d" % (dirs[p], i))
    depth.append(depth[p] + 1)
total = 0
with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tf:
    for d in dirs:
        ti = tarfile.TarInfo(d); ti.type = tarfile.DIRTYPE; ti.mode = 0o755; ti.mtime = 1700000000
        tf.addfile(ti)
    for i in range(nfiles):
        size = 0 if rnd.random() < 0.02 else min(int(rnd.lognormvariate(math.log(6000), 1.3)), 1 << 21)
        ti = tarfile.TarInfo("%s/f%d.c" % (dirs[rnd.randrange(len(dirs))], i))
        ti.size, ti.mode, ti.mtime = size, 0o644, 1700000000 + i
        off = rnd.randrange((1 << 21) - size + 1)
        tf.addfile(ti, io.BytesIO(blob[off:off + size]))
        total += size
print("%d %d" % (nfiles + ndirs, total))
EOF
}

run_tree() {
	local col=$1
	mkdir "$root/tree" || return 1
	begin
	tar -xf "$tarball" -C "$root/tree" || { echo "bench_fs: tar failed on $col"; return 1; }
	sync -f "$root/tree"
	end $col untar $((TREE_FILES + TREE_DIRS)) ops
	drop_caches
	begin
	rm -rf "$root/tree" || return 1
	sync -f "$root"
	end $col rmtree $((TREE_FILES + TREE_DIRS)) ops
}

# Mount time of a 16 TiB sparse image (mendfs; fuse2fs on ext4): from the daemon's start
# to the mount being listed, image in the host's page cache after the first run.
run_mount_time() {
	local col=$1 t
	rm -f "$area/big"
	case $col in
	mendfs) "$BIN/mkfs.mendfs" -f -q "$area/big" $BIG_SIZE || return 1 ;;
	fuse2fs) truncate -s $BIG_SIZE "$area/big" && mkfs.ext4 -F -q "$area/big" || return 1 ;;
	*) return 0 ;;
	esac
	for _ in $(seq $RUNS); do
		t0=$(now)
		if [ $col = mendfs ]; then
			"$BIN/mendfs" -f -o allow_other "$area/big" "$mnt" 2>>"$work/daemon.log" &
		else
			fuse2fs "$area/big" "$mnt" -f -o allow_other >>"$work/daemon.log" 2>&1 &
		fi
		dpid=$!
		wait_mounted || { echo "bench_fs: the 16 TiB $col image did not mount"; umount_col; return 1; }
		t=$(now)
		awk -v a="$t0" -v b="$t" 'BEGIN { printf "%.3f 0\n", b - a }' >>"$work/res/$col.mount"
		umount_col
	done
	rm -f "$area/big"
}

# ---- the run -----------------------------------------------------------------------------
echo "bench_fs: images on $where; $RUNS run(s) per figure; quick=$QUICK; columns:$cols"
echo "bench_fs: files ${SEQ_MB} MiB, $NFILES files (many dirs: $NDIRS), tree $TREE_FILES files" \
	"in $TREE_DIRS dirs, ${RT} s timed runs; $(nproc) CPUs"
skipped tree || { make_tree >"$work/tree.info" || exit 1; trap 'rm -f "$tarball"; cleanup' EXIT; }
# The columns take turns within each run, in an order rotated from run to run: the
# machine's load and the host's state drift over minutes (cold reads swing by +-50%), so
# running one column's runs back to back and then the next's skewed the ratios by whatever
# the machine did in between.  A column that fails is left out of the later runs.
# rotate K WORDS...: the words, starting from the K-th (0-based), wrapping around
rotate() {
	local k=$1 i
	shift
	local w=("$@")
	for ((i = 0; i < ${#w[@]}; i++)); do printf '%s ' "${w[(i + k) % ${#w[@]}]}"; done
}
failed=""
for r in $(seq $RUNS); do
	for col in $(rotate $((r - 1)) $cols); do
		case " $failed " in *" $col "*) continue ;; esac
		printf '  %-8s run %d/%d:' "$col" "$r" "$RUNS"
		mount_col $col || { echo " mount failed"; umount_col; failed="$failed $col"; continue; }
		ok=1
		skipped seq || { printf ' seq'; { run_seq $col 1 && run_seq $col 4; } || ok=0; }
		skipped rand || [ $ok = 0 ] || { printf ' rand'; run_rand $col || ok=0; }
		skipped meta || [ $ok = 0 ] || { printf ' meta'; run_meta $col || ok=0; }
		skipped tree || [ $ok = 0 ] || { printf ' tree'; run_tree $col || ok=0; }
		umount_col
		echo
		[ $ok = 1 ] || { echo "  $col: a workload failed; column incomplete"; failed="$failed $col"; }
	done
done
skipped mount || for col in $cols; do run_mount_time $col; done

# ---- the table ---------------------------------------------------------------------------
# median FILE FIELD: the median of a column of the result file ("-" if none)
median() {
	[ -s "$1" ] || { echo "-"; return; }
	cut -d' ' -f"$2" "$1" | sort -g | awk '{ v[NR] = $1 } END {
		if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

rows="seqwrite1:seq write 1M x1:MiB/s:>=2x, >=0.8x
seqwrite4:seq write 1M x4:MiB/s:>=2x, >=0.8x
seqread1:seq read 1M x1 cold:MiB/s:>=2x, >=0.8x
seqread4:seq read 1M x4 cold:MiB/s:>=2x, >=0.8x
randread:4K rand read O_DIRECT:IOPS:>=2x
randwrite:4K rand write:IOPS:>=4x
fsyncwrite:4K write+fsync:IOPS:>=4x
create1:create, one dir:ops/s:>=4x
stat1:stat cold, one dir:ops/s:>=4x
readdir1:readdir cold, one dir:entries/s:>=4x
unlink1:unlink cold, one dir:ops/s:>=4x
createN:create, $NDIRS dirs:ops/s:>=4x
statN:stat cold, $NDIRS dirs:ops/s:>=4x
unlinkN:unlink cold, $NDIRS dirs:ops/s:>=4x
createN4:create x4 threads:ops/s:>=4x
unlinkN4:unlink x4 threads:ops/s:>=4x
untar:untar+syncfs:entries/s:>=4x
rmtree:rm -rf cold:entries/s:>=4x
mount:mount 16 TiB (seconds):s:"

echo
echo "Results ($where; median of $RUNS; rate (CPU s/GiB or s/1000 ops); ratios of rates):"
printf '%-24s %-9s' "workload" "unit"
for c in $cols; do printf ' %-16s' "$c"; done
printf ' %9s %7s  %s\n' "m/fuse2fs" "m/ceil" "aim (m/fuse2fs, m/ceil)"
echo "$rows" | while IFS=: read -r key label unit aims; do
	any=0
	for c in $cols; do [ -s "$work/res/$c.$key" ] && any=1; done
	[ $any = 1 ] || continue
	printf '%-24s %-9s' "$label" "$unit"
	for c in $cols; do
		rate=$(median "$work/res/$c.$key" 1)
		cpu=$(median "$work/res/$c.$key" 2)
		if [ "$rate" = - ]; then cell="-"
		elif [ "$key" = mount ]; then cell=$rate
		else cell="$rate ($cpu)"; fi
		printf ' %-16s' "$cell"
		eval "r_$c=\$rate"
	done
	ratio() {
		local a=$1 b=$2
		[ "$a" = - ] || [ "$b" = - ] || [ -z "$a" ] || [ -z "$b" ] && { echo "-"; return; }
		awk -v a="$a" -v b="$b" -v k="$key" 'BEGIN { if (b <= 0 || a <= 0) { print "-"; exit }
			printf "%.2f", k == "mount" ? b / a : a / b }'
	}
	printf ' %9s %7s  %s\n' "$(ratio "${r_mendfs:--}" "${r_fuse2fs:--}")" \
		"$(ratio "${r_mendfs:--}" "${r_ceiling:--}")" "$aims"
	unset r_mendfs r_fuse2fs r_ceiling
done
if [ -s "$work/daemon.log" ] && grep -qiE 'error|corrupt' "$work/daemon.log"; then
	echo "daemon messages:"
	grep -iE 'error|corrupt' "$work/daemon.log" | head -10
fi
if [ "$PERRUN" = 1 ]; then
	echo "Every run (rate CPU, in run order):"
	for f in "$work"/res/*; do
		[ -s "$f" ] && printf '  %-22s %s\n' "$(basename "$f")" "$(paste -sd'|' "$f" | sed 's/|/ | /g')"
	done
fi
exit 0
