#!/bin/bash
# bench_fs.sh — the filesystem benchmark: the same workloads on mendfs, fuse2fs (Debian's,
# on an ext4 image), our own lowlevel passthrough (tests/bench/passthrough_ll.c: the FUSE
# ceiling, no filesystem work), bindfs (-o big_writes --multithreaded) and the kernel
# filesystem underneath; one table, each figure the median of BENCH_RUNS runs, with the
# ratios mendfs/fuse2fs and mendfs/ceiling, the ceiling's own ratio to fuse2fs, and a
# verdict per row against the aims of issue 8 (met, short, or transport-bound: even the
# ceiling misses it), all from the run's medians.  Never pass/fail.
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
#               (default all; mendfs_wb is mendfs -o writeback_cache), and mendfs_b
#   BENCH_B_BIN the programs of another build, for a column mendfs_b (name it in
#               BENCH_ONLY): before/after comparisons in the same runs, taking turns
#   BENCH_SKIP  workloads to leave out, of: seq rand meta tree mount
#   BENCH_MENDFS_OPTS  extra -o options for mendfs (e.g. to compare a setting)
#   BENCH_PERRUN 1: after the table, every run's figures (rate CPU, in run order), to see
#               how far they spread before trusting a median
#   BENCH_SAVE  a directory to keep the raw results in (every run's figures), for
#   BENCH_TABLE a directory kept by BENCH_SAVE: print its table again and run nothing
#
# CPU: seconds of the daemon (utime + stime from /proc/PID/stat, all its threads) per GiB
# moved or per 1,000 operations; for the kernel column, the client's CPU (its system time
# is the filesystem's).  Cold reads, stats, readdirs, unlinks and the tree deletion run
# after `sync` and dropping the page, dentry and inode caches (as root).  Random 4 KiB
# reads are O_DIRECT (for FUSE: every request goes to the daemon) on a file read once
# before, so that the image, or the ceiling's file underneath (opened without O_DIRECT,
# passthrough_ll.c), is in the host's page cache for every FUSE column; everything else is
# buffered.  The rates of fio's workloads are over fio's own run time (fio_secs: for
# writes it includes the end_fsync), other rates over the time the command took.
set -u
RUNS=${BENCH_RUNS:-3}
QUICK=${BENCH_QUICK:-0}
TMPFS=${BENCH_TMPFS:-0}
ONLY=${BENCH_ONLY:-mendfs mendfs_wb fuse2fs ceiling bindfs kernel}
SKIP=${BENCH_SKIP:-}
MOPTS=${BENCH_MENDFS_OPTS:-}
PERRUN=${BENCH_PERRUN:-0}
SAVE=${BENCH_SAVE:-}

if [ "$QUICK" = 1 ]; then
	SEQ_MB=256 NFILES=10000 NDIRS=100 RT=3 TREE_FILES=2000 TREE_DIRS=150 SYNC_MB=16
else
	SEQ_MB=1024 NFILES=100000 NDIRS=100 RT=10 TREE_FILES=20000 TREE_DIRS=1500 SYNC_MB=64
fi
IMG_SIZE=64G
# 16 TiB less 1 MiB: a file on ext4 (the disk here) stops 4 KiB short of 16 TiB.
BIG_SIZE=$((16 * 1024 ** 4 - 1024 ** 2))
TICK=$(getconf CLK_TCK)

# ---- the table -------------------------------------------------------------------------
# The rows: key|label|unit|aim against fuse2fs|aim against the ceiling|CPU aim (at most
# that many times the ceiling's)|the 1-job row a 4-job row should scale from.  The aims
# are issue 8's.
ROWS="seqwrite1|seq write 1M x1|MiB/s|2|0.8|1.5|
seqwrite4|seq write 1M x4|MiB/s|2|0.8|1.5|seqwrite1
seqread1|seq read 1M x1 cold|MiB/s|2|0.8|1.5|
seqread4|seq read 1M x4 cold|MiB/s|2|0.8|1.5|seqread1
randread|4K rand read O_DIRECT|IOPS|2|||
randwrite|4K rand write|IOPS|4|||
fsyncwrite|4K write+fsync|IOPS|4|||
create1|create, one dir|ops/s|4|||
stat1|stat cold, one dir|ops/s|4|||
readdir1|readdir cold, one dir|entries/s|4|||
unlink1|unlink cold, one dir|ops/s|4|||
createN|create, NDIRS dirs|ops/s|4|||
statN|stat cold, NDIRS dirs|ops/s|4|||
unlinkN|unlink cold, NDIRS dirs|ops/s|4|||
createN4|create x4 threads|ops/s|4|||
unlinkN4|unlink x4 threads|ops/s|4|||
untar|untar+syncfs|entries/s|4|||
rmtree|rm -rf cold|entries/s|4|||
mount|mount 16 TiB (seconds)|s||||"

# median FILE FIELD: the median of a column of the result file ("-" if none)
median() {
	[ -s "$1" ] || { echo "-"; return; }
	cut -d' ' -f"$2" "$1" | sort -g | awk '{ v[NR] = $1 } END {
		if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# print_table DIR: the table of the results in DIR/res (one file per column.workload) for
# the run described by DIR/info.  Beside mendfs's ratios to fuse2fs and to the ceiling it
# prints the ceiling's own ratio to fuse2fs, and a verdict per row against the aims, all
# from this run's medians: a row whose fuse2fs aim even the ceiling misses, while mendfs
# runs at the ceiling's rate (0.8 to 1.5 times it: the rates of one run swing that much),
# is marked transport-bound: an empty FUSE daemon cannot meet it on this machine, so no
# FUSE daemon can.  Below 0.8 times the ceiling the row is short of the transport too.  Where mendfs runs well above the ceiling (creates: the ceiling creates each
# file in the filesystem underneath, on the disk), the ceiling bounds nothing and the row
# is only short.  A 4-job row that does not scale says when mendfs's 1-job rate is already
# at or above the ceiling's 4-job rate (nothing left to scale into on this machine).
print_table() {
	local dir=$1 c key f
	. "$dir/info"
	for key in $(echo "$ROWS" | cut -d'|' -f1); do
		for c in $cols; do
			f=$dir/res/$c.$key
			[ -s "$f" ] && echo "$key $c $(median "$f" 1) $(median "$f" 2)"
		done
	done >"$dir/medians"
	echo
	echo "Results ($where; median of $RUNS; rate (daemon CPU s/GiB or s/1000 ops); ratios of rates;"
	echo "c/fuse2fs: the ceiling's own rate over fuse2fs's; cpu m/c: mendfs's CPU over the ceiling's):"
	echo "$ROWS" | sed "s/NDIRS/$NDIRS/" | awk -F'|' -v cols="$cols" -v medians="$dir/medians" '
	function ratio(a, b) { return (a == "" || b == "" || a <= 0 || b <= 0) ? "" : a / b }
	function fmt(x) { return x == "" ? "-" : sprintf("%.2f", x) }
	function add(v, s) { return v == "" ? s : v "; " s }
	function addaim(v, s) { return v == "" ? s : v "," s }
	BEGIN {
		n = split(cols, col, " ")
		while ((getline l < medians) > 0) {
			split(l, w, " ")
			rate[w[1], w[2]] = w[3]; cpu[w[1], w[2]] = w[4]; have[w[1]] = 1
		}
		printf "%-22s %-9s", "workload", "unit"
		for (i = 1; i <= n; i++) printf " %-16s", col[i]
		printf " %9s %6s %9s %8s  %-31s %s\n", "m/fuse2fs", "m/ceil", "c/fuse2fs", "cpu m/c",
			"aim", "verdict"
	}
	!($1 in have) { next }
	{
		k = $1; fa = $4; ca = $5; cpua = $6; base = $7
		printf "%-22s %-9s", $2, $3
		for (i = 1; i <= n; i++) {
			c = col[i]
			if (!((k, c) in rate)) cell = "-"
			else if (k == "mount") cell = rate[k, c]
			else cell = rate[k, c] " (" cpu[k, c] ")"
			printf " %-16s", cell
		}
		m = rate[k, "mendfs"]; fu = rate[k, "fuse2fs"]; ce = rate[k, "ceiling"]
		if (k == "mount") {     # seconds: the ratio says how many times faster
			printf " %9s %6s %9s %8s  %-31s %s\n", fmt(ratio(fu, m)), "-", "-", "-", "",
				"(times faster than fuse2fs)"
			next
		}
		mf = ratio(m, fu); mc = ratio(m, ce); cf = ratio(ce, fu)
		cm = ratio(cpu[k, "mendfs"], cpu[k, "ceiling"])
		aim = ""; v = ""; miss = 0; unk = 0; ok = 0
		if (fa != "") {
			aim = addaim(aim, ">=" fa "xf")
			if (mf == "") { v = add(v, "no fuse2fs figure"); unk = 1 }
			else if (mf + 0 >= fa) { v = add(v, sprintf("%.2fx fuse2fs", mf)); ok = 1 }
			else if (cf != "" && cf < fa + 0 && mc >= 0.8 && mc <= 1.5) {
				v = add(v, sprintf("transport-bound: the ceiling itself is %.2fx fuse2fs < %sx (the aim needs %.2fx the ceiling)", cf, fa, fa / cf))
				miss = 1
			} else if (cf != "" && cf < fa + 0 && mc < 0.8) {
				v = add(v, sprintf("SHORT %.2fx < %sx fuse2fs, and %.2fx < 0.8x the ceiling (itself %.2fx fuse2fs: the transport bounds the aim, but mendfs is below the transport)", mf, fa, mc, cf))
				miss = 1
			} else if (cf != "" && cf < fa + 0) {
				v = add(v, sprintf("SHORT %.2fx < %sx fuse2fs (the ceiling, %.2fx fuse2fs, bounds nothing here: mendfs is %.2fx it)", mf, fa, cf, mc))
				miss = 1
			} else {
				v = add(v, sprintf("SHORT %.2fx < %sx fuse2fs", mf, fa))
				miss = 1
			}
		}
		if (ca != "") {
			aim = addaim(aim, ">=" ca "xc")
			if (mc == "") { v = add(v, "no ceiling figure"); unk = 1 }
			else if (mc + 0 >= ca) { v = add(v, sprintf("%.2fx ceiling", mc)); ok = 1 }
			else { v = add(v, sprintf("SHORT %.2fx < %sx ceiling", mc, ca)); miss = 1 }
		}
		if (cpua != "") {
			aim = addaim(aim, "cpu<=" cpua "xc")
			if (cm == "") { v = add(v, "no CPU figure"); unk = 1 }
			else if (cm + 0 <= cpua) { v = add(v, sprintf("cpu %.2fx", cm)); ok = 1 }
			else { v = add(v, sprintf("CPU %.2fx > %sx the ceiling", cm, cpua)); miss = 1 }
		}
		if (base != "") {
			aim = addaim(aim, "x4>x1")
			s = ratio(m, rate[base, "mendfs"]); sc = ratio(ce, rate[base, "ceiling"])
			if (s == "") { v = add(v, "no 1-job figure"); unk = 1 }
			else if (s > 1) { v = add(v, sprintf("scales %.2fx (ceiling %sx)", s, fmt(sc))); ok = 1 }
			else {
				# A 1-job rate already at or above the 4-job rate of the ceiling leaves
				# nothing to scale into on this machine: say so.
				x = ratio(rate[base, "mendfs"], ce)
				v = add(v, sprintf("DOES NOT SCALE %.2fx (ceiling %sx%s)", s, fmt(sc),
					x != "" && x >= 1 ? sprintf("; 1 job already %.2fx 4 jobs on the ceiling", x) : ""))
				miss = 1
			}
		}
		# No mendfs figure (its runs failed, or a rate of 0): the aims are missed, not
		# unknown (the empty ratios read as missing fuse2fs or ceiling figures).  And a
		# row whose every aim lacks a figure met nothing.
		if (m == "" || m <= 0) { v = "NO MENDFS FIGURE"; miss = 1 }
		printf " %9s %6s %9s %8s  %-31s %s%s\n", fmt(mf), fmt(mc), fmt(cf), fmt(cm), aim,
			miss || !ok ? "" : unk ? "met where measured: " : "met: ", v
	}'
}

# BENCH_TABLE=DIR: print the table of results kept by an earlier run (BENCH_SAVE=DIR), run
# nothing.
if [ -n "${BENCH_TABLE:-}" ]; then
	[ -s "$BENCH_TABLE/info" ] || { echo "bench_fs: no results in $BENCH_TABLE"; exit 2; }
	print_table "$BENCH_TABLE"
	exit 0
fi
BIN=${BIN:?BIN must name the directory of the built programs}
BENCH_BIN=${BENCH_BIN:?BENCH_BIN must name the directory of passthrough_ll and metaops}

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
	mendfs_b) [ -n "${BENCH_B_BIN:-}" ] || { echo "bench_fs: mendfs_b needs BENCH_B_BIN"; exit 2; } ;;
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
printf 'cols=%q\nRUNS=%q\nwhere=%q\nNDIRS=%q\n' "$cols" "$RUNS" "$where" "$NDIRS" >"$work/info"
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
	mendfs|mendfs_wb|mendfs_b)
		local b=$BIN
		[ $col = mendfs_b ] && b=$BENCH_B_BIN
		"$b/mkfs.mendfs" -f -q "$area/img" $IMG_SIZE || return 1
		o=allow_other${MOPTS:+,$MOPTS}
		[ $col = mendfs_wb ] && o=$o,writeback_cache
		"$b/mendfs" -f -o $o "$area/img" "$mnt" 2>>"$work/daemon.log" &
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
# squeeze every column's rate towards the same figure.  Writes too: even with fio in the
# page cache, its start and exit take ~0.3 s (measured on the disk's own filesystem: 512
# MiB with end_fsync, wall 0.65 s, fio's run time 0.37 s including the fsync), a third or
# more of a quick 1-job write on the faster columns and a fraction of it on the slow ones.
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
	end $col seqwrite$j $SEQ_MB MiB "$(fio_secs "$f" write)"
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
	record $col randwrite "$(fio_ios "$f" write)" ops "$(fio_secs "$f" write)"
	begin
	fio_run "$f" --name=sync --filename="$root/syncw" --rw=write --bs=4k --fsync=1 \
		--size=${SYNC_MB}M --time_based --runtime=$RT || return 1
	stop
	record $col fsyncwrite "$(fio_ios "$f" write)" ops "$(fio_secs "$f" write)"
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
print_table "$work"
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
if [ -n "$SAVE" ]; then
	mkdir -p "$SAVE" && cp -a "$work/res" "$work/info" "$SAVE/" && echo "bench_fs: results kept in $SAVE"
fi
exit 0
