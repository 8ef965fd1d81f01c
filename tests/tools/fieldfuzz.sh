#!/bin/bash
# fieldfuzz.sh — metadata field fuzzing (issue 7): every field of every structure of a
# populated image × every fuzz verb of `mendfs_db fuzz`, each on its own copy of the image:
#
#   (a) mount: a clean refusal (non-zero exit, no signal, a message) or a mount;
#   (b) if mounted: the tree is walked and read (the daemon must serve or fail requests,
#       never die), `mendfs_scrub -n` (exit bit 1 = corruption found), unmount, and the
#       daemon must exit by itself without a signal;
#   (c) the offline check `mendfs_db -c "check -f"` on the fuzzed image (before mounting)
#       and after the unmount must agree with the scrub;
#   (d) no program is killed by a signal or hangs (every step bounded by timeout);
#   (e) repair: what the scrub found is repaired online (mendfs_scrub without -n) and
#       scrubbed again: "online:repaired" or "online:unfixable"; an image still damaged
#       (the offline check finds something after the unmount, or before a refused mount)
#       goes through the offline `mendfs_repair` and is checked again: "offline:fixed" or
#       "offline:unfixable" (own column, not part of the verdict except for a crash).
#
# Each case is classified:
#   refused   the mount was refused cleanly
#   detected  mounted, and the scrub found corruption
#   benign    mounted, neither the scrub nor the offline check found anything (the new value
#             is still legal, or the field is not checked by anybody)
#   healed    mounted, the scrub found nothing, the offline check found the damage before
#             the mount and not after it: the mount recomputed the field (summary counters)
#   MISS      mounted, the offline check found damage the scrub did not report (or the
#             scrub could not run: exit status 4)
#   CRASH     a daemon, scrub or mendfs_db killed by a signal, a daemon that exited non-zero
#             after serving, or a hang
#   unchanged the fuzz left the image as it was (zeroes of a zero field): not mounted
#   HANG      mounted, and a walk of the tree (stat, read, list attributes) did not end in
#             60 s (a listing that loops, a request that never returns)
#   (skip)    the verb does not apply (add/sub of a byte string): not counted
#
# The table per structure (fieldfuzz.structures beside the TSV) counts, for each kind of
# structure (superblock, AG header, inode of each type, each kind of tree block):
#   invalid   refused + detected + healed + MISS: the fuzz made the structure invalid (a
#             benign or unchanged case does not count anywhere but "cases")
#   detected  of the invalid cases that mounted and were still invalid when the scrub ran
#             (detected + MISS; a "healed" one was set right by the mount), those the scrub
#             found: this must be 100%
#   repaired online: of those detected, the ones whose online repair left the scrub clean
#             and the offline check after the unmount clean ("online:repaired"); the others
#             are listed with the repair's reasons (TSV column "reason")
#   refused   a refused mount is no online-repair case: counted in its own column (the
#             offline repair's result is in the TSV)
#
#   fieldfuzz.sh [-s SAMPLE] [-o TSV] [-k]
#     -s N   a sample: every Nth case of the full list (deterministic), for make check
#     -o F   the TSV of results (default $O/fieldfuzz.tsv)
#     -k     keep the populated image in $O/fieldfuzz.img (reused when present with -k)
#     -m RE  only the cases whose "OBJECT FIELD VERB" matches the extended regexp RE
# Environment: BIN (the built programs), O (the build directory).  Exit status 0 when there
# was no MISS and no CRASH, 1 otherwise, 77 when FUSE is not usable.
set -u
BIN=${BIN:?BIN must name the directory of the built programs}
O=${O:-build}
SCRUB=$BIN/mendfs_scrub    # (MKFS, DB and MENDFS: mountlib.sh)
REPAIR=$BIN/mendfs_repair
sample=1
tsv=$O/fieldfuzz.tsv
keep=0
match=""
while getopts "s:o:km:" c; do
	case $c in
	s) sample=$OPTARG ;;
	o) tsv=$OPTARG ;;
	k) keep=1 ;;
	m) match=$OPTARG ;;
	*) echo "usage: $0 [-s N] [-o TSV] [-k] [-m RE]"; exit 2 ;;
	esac
done
command -v setfattr >/dev/null || { echo "skip: setfattr is missing"; exit 77; }
mkdir -p "$O" || exit 1
O=$(cd "$O" && pwd)
case $tsv in /*) ;; *) tsv=$PWD/$tsv ;; esac

VERBS="zeroes ones random add sub firstbit middlebit lastbit"
export MFS_DB_SEED=${MFS_DB_SEED:-12345}

# $dir, $mnt, $img, $pid and the cleanup at exit (every mount undone, the daemon killed)
. "$(dirname "$0")/../integration/mountlib.sh"
ml_setup fieldfuzz
# a copy of the programs: a build running meanwhile must not swap them under a case
mkdir "$dir/bin" && cp "$MKFS" "$DB" "$MENDFS" "$SCRUB" "$REPAIR" "$dir/bin/" || exit 1
MKFS=$dir/bin/mkfs.mendfs DB=$dir/bin/mendfs_db MENDFS=$dir/bin/mendfs SCRUB=$dir/bin/mendfs_scrub
REPAIR=$dir/bin/mendfs_repair
die() { echo "FAIL: $*"; exit 1; }

# start_daemon IMG LOG: 0 mounted ($pid set); 1 refused (exit status in $drc); 2 hang
start_daemon() {
	"$MENDFS" -f "$1" "$mnt" >"$2" 2>&1 &
	pid=$!
	for _ in $(seq 400); do
		mounted "$mnt" && return 0
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid"
			drc=$?
			pid=""
			return 1
		fi
		sleep 0.025
	done
	kill -9 "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	pid=""
	fusermount3 -uz "$mnt" 2>/dev/null
	drc=137
	return 2
}

# stop_daemon: unmount, wait (bounded) for the daemon; its status in $drc (124: hung)
stop_daemon() {
	cd /
	fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -uz "$mnt" 2>/dev/null
	for _ in $(seq 800); do
		kill -0 "$pid" 2>/dev/null || break
		sleep 0.025
	done
	if kill -0 "$pid" 2>/dev/null; then
		kill -9 "$pid" 2>/dev/null
		wait "$pid" 2>/dev/null
		drc=124
	else
		wait "$pid"
		drc=$?
	fi
	pid=""
}

# --- the populated image (made once) --------------------------------------------------------
base=$dir/base.img
if [ "$keep" = 1 ] && [ -s "$O/fieldfuzz.img" ]; then
	cp --sparse=always "$O/fieldfuzz.img" "$base"
else
	"$MKFS" -q "$base" 48M || die "mkfs"
	start_daemon "$base" "$dir/log.base" || die "populate: mount failed: $(tail -3 "$dir/log.base")"
	(
		set -e
		cd "$mnt"
		mkdir -p a/b/c small big
		echo hello >a/file
		head -c 20000 /dev/urandom >a/b/mid
		head -c 300 /dev/urandom >a/b/c/tiny
		ln -s file a/link
		ln -s "$(printf 'x%.0s' $(seq 300))" a/longlink
		ln a/file a/hardlink
		mknod small/fifo p
		touch small/one small/two
		setfattr -n user.small -v v1 a/file
		setfattr -n trusted.t -v 12345 a/file
		for i in $(seq 40); do setfattr -n "user.attr$i" -v "value-$i" a/b/mid; done
		setfattr -n user.big -v "0s$(head -c 3000 /dev/urandom | base64 -w0)" a/b/c/tiny
		for i in $(seq 300); do : >"big/entry-with-a-long-name-$i"; done
		# two files written in turns, block by block: each gets many small extents
		for i in $(seq 0 199); do
			dd if=/dev/urandom of=frag bs=4096 count=1 seek="$i" conv=notrunc status=none
			dd if=/dev/urandom of=frag2 bs=4096 count=1 seek="$i" conv=notrunc status=none
			[ $((i % 20)) = 0 ] && sync frag frag2
		done
		rm frag2
		sync .
	) || die "populate failed"
	stop_daemon
	[ "$drc" = 0 ] || die "populate: the daemon exited with $drc"
	[ "$keep" = 1 ] && cp --sparse=always "$base" "$O/fieldfuzz.img"
fi
timeout 60 "$DB" -c "check -f" "$base" >"$dir/out" 2>&1 || { cat "$dir/out"; die "the populated image does not check clean"; }

# --- the objects: AG headers, tree blocks, inodes, journal header ---------------------------
db() { timeout 30 "$DB" "$@" "$base" 2>&1; }
start_daemon "$base" "$dir/log.base" || die "mount to list inodes"
ino_of() { stat -c %i "$mnt/$1"; }
declare -A INO
for p in a a/file a/b/mid a/b/c/tiny a/link a/longlink small small/fifo big frag; do
	INO[$p]=$(ino_of "$p") || die "stat $p"
done
stop_daemon
[ "$drc" = 0 ] || die "the daemon exited with $drc"
rootino=$(db -c sb | sed -n 's/^rootino = //p')
# each object with the structure it is, for the table per structure ($dir/objs: OBJ<TAB>KIND)
objs=("sb 0	superblock" "sb 1	superblock copy" "agh 0	AG header" "agh 1	AG header"
      "agfl 0	AG free list" "log 0	journal header" "log 1	journal header"
      "inode $rootino	inode: directory")
declare -A KIND=([a]=directory [small]=directory [big]=directory [a/file]=file
		 [a/b/mid]=file [a/b/c/tiny]=file [frag]=file [a/link]=symlink
		 [a/longlink]=symlink [small/fifo]=special)
for p in a a/file a/b/mid a/b/c/tiny a/link a/longlink small small/fifo big frag; do
	objs+=("inode ${INO[$p]}	inode: ${KIND[$p]}")
done
# a tree block's kind, from its magic number
block_kind() {
	case $(db -c "block $1" | sed -n 's/^magic = .*(\(.*\))$/\1/p') in
	MBNO) echo "free-space btree (bno)" ;; MCNT) echo "free-space btree (cnt)" ;;
	MINO) echo "inode btree" ;; MRMP) echo "reverse-map btree" ;;
	MDIR) echo "directory btree" ;; MBMP) echo "extent-map btree" ;;
	MXAT) echo "attribute btree" ;; *) echo "tree block" ;;
	esac
}
# the roots of AG 0's trees, and a leaf under each node
for t in bno cnt ino rmap; do
	r=$(db -c "agh 0" | sed -n "s/^$t root = \([0-9]*\),.*/\1/p")
	[ -n "$r" ] || die "no $t root in agh 0"
	objs+=("block $r	$(block_kind "$r")")
	child=$(db -c "fields block $r" | sed -n 's/^ptr\[0\] [0-9]* \([0-9]*\)$/\1/p')
	[ -n "$child" ] && objs+=("block $child	$(block_kind "$child")")
done
# tree blocks of inodes (the big directory, the fragmented file, the attribute btrees):
# each root, and a leaf under a root that is a node
for p in big frag a/b/mid a/b/c/tiny; do
	while read -r r levels; do
		objs+=("block $r	$(block_kind "$r")")
		[ "$levels" -gt 1 ] || continue
		child=$(db -c "fields block $r" | sed -n 's/^ptr\[0\] [0-9]* \([0-9]*\)$/\1/p')
		[ -n "$child" ] && objs+=("block $child	$(block_kind "$child")")
	done < <(db -c "inode ${INO[$p]}" |
		 sed -n 's/.*fork btree root \([0-9][0-9]*\), \([0-9]*\) levels/\1 \2/p')
done
printf '%s\n' "${objs[@]}" | awk -F'\t' '!seen[$1]++' >"$dir/objs"

# every field of every object; arrays and record lists are cut down to their first two and
# last elements and the first two non-zero ones (the free list's slots in use; the rest
# behaves the same)
: >"$dir/cases"
while IFS=$'\t' read -r obj kind; do
	db -c "fields $obj" >"$dir/f" || { cat "$dir/f"; die "fields $obj"; }
	awk -v obj="$obj" -v kind="$kind" '
	{ name = $1; size = $2; grp = name; gsub(/\[[0-9]+\]/, "[]", grp)
	  n = ++cnt[grp]; names[grp, n] = name; sizes[grp, n] = size
	  pick[grp, n] = n <= 2 || ($3 != "-" && $3 != "0" && ++nz[grp] <= 2)
	  if (!(grp in order)) { order[grp] = ++ng; grps[ng] = grp } }
	END { for (g = 1; g <= ng; g++) { k = grps[g]; c = cnt[k]
		for (i = 1; i <= c; i++)
			if (pick[k, i] || i == c) print obj "\t" names[k, i] "\t" sizes[k, i] "\t" kind } }' \
		"$dir/f" >>"$dir/cases"
done <"$dir/objs"
nfields=$(wc -l <"$dir/cases")

# --- the walk -------------------------------------------------------------------------------
printf 'object\tfield\tverb\tchange\tresult\tmount\tscrub\tcheck_before\tcheck_after\tdaemon\trepair\tstructure\treason\n' >"$tsv"
n=0
ran=0
declare -A tot
one_case() {
	local obj=$1 field=$2 verb=$3 kind=$4 change res mnt_s="-" scrub_s="-" pre post="-"
	local dmn="-" src rep="-" why="-"
	rm -f "$img"
	cp --sparse=always "$base" "$img"
	if ! timeout 30 "$DB" -w -c "fuzz $obj $field $verb" "$img" >"$dir/fz" 2>&1; then
		src=$?
		if [ "$src" -ge 124 ]; then
			res=CRASH
			change="mendfs_db fuzz: status $src"
		else
			return 1    # the verb does not apply to this field
		fi
	fi
	change=${change:-$(sed -n 's/.*: \(.* -> .*\) (.*/\1/p; s/.*: \([0-9]* bytes fuzzed\).*/\1/p' "$dir/fz" | head -1)}
	[ -z "$change" ] && change="?"
	if [ -z "${res:-}" ] && cmp -s "$base" "$img"; then
		# the new value is the old one (zeroes of a zero field...): nothing to see
		printf '%s\t%s\t%s\t%s\tunchanged\t-\t-\t-\t-\t-\t-\t%s\t-\n' "$obj" "$field" \
			"$verb" "$change" "$kind" >>"$tsv"
		tot[unchanged]=$((${tot[unchanged]:-0} + 1))
		return 0
	fi
	timeout 60 "$DB" -c "check -f" "$img" >"$dir/pre" 2>&1
	src=$?
	case $src in 0) pre=clean ;; 1) pre=damage ;; *) pre="status$src"; res=CRASH ;; esac
	start_daemon "$img" "$dir/dlog"
	case $? in
	1)  mnt_s=refused
	    [ "$drc" -ge 128 ] && { res=CRASH; dmn="signal$((drc - 128))"; }
	    [ "$drc" = 0 ] && { res=CRASH; dmn="exit0-unmounted"; }
	    [ -s "$dir/dlog" ] || { res=${res:-CRASH}; dmn="no message"; }
	    res=${res:-refused} ;;
	2)  mnt_s=hang; res=CRASH ;;
	0)  mnt_s=mounted
	    timeout 120 "$SCRUB" -n "$mnt" >"$dir/scrub" 2>&1
	    src=$?
	    if [ "$src" -ge 124 ]; then scrub_s="status$src"; res=CRASH
	    elif [ $((src & 1)) = 1 ]; then scrub_s=found
	    elif [ $((src & 4)) = 4 ]; then scrub_s=error
	    else scrub_s=clean; fi
	    # online repair of what the scrub found (mendfs_scrub without -n), checked again
	    if [ "$scrub_s" = found ]; then
		timeout 120 "$SCRUB" "$mnt" >"$dir/orep" 2>&1
		src=$?
		if [ "$src" -ge 124 ]; then rep="online:status$src"; res=CRASH
		elif timeout 120 "$SCRUB" -n "$mnt" >"$dir/orep2" 2>&1; then rep="online:repaired"
		else rep="online:unfixable"
		     # why: the engine's reasons for the objects not repaired (each cut to 240
		     # characters), else what the scrub after the repair still finds
		     why=$(grep '^Not repaired' "$dir/orep" | cut -c1-240 | paste -sd'|')
		     [ -n "$why" ] || why=$(grep -m1 -v '^ *$' "$dir/orep2")
		     why=$(printf '%.1000s' "${why//$'\t'/ }")
		     mkdir -p "$O/fieldfuzz.fail"
		     { echo "== fuzz"; cat "$dir/fz"; echo "== scrub"; cat "$dir/scrub"
		       echo "== online repair"; cat "$dir/orep"; echo "== scrub again"
		       cat "$dir/orep2"; } >"$O/fieldfuzz.fail/unrepaired.$(echo "$obj.$field.$verb" |
			tr ' []/' '_()_').txt" 2>/dev/null
		fi
	    fi
	    # then exercise the daemon: stat, read and list the attributes of everything
	    # (a listing that never ends, a request that never returns: HANG)
	    timeout 60 find "$mnt" -exec stat {} + >/dev/null 2>&1
	    [ $? = 124 ] && { res=HANG; dmn="find/stat hangs"; }
	    timeout 60 find "$mnt" -type f -exec cat {} + >/dev/null 2>&1
	    [ $? = 124 ] && { res=HANG; dmn="find/cat hangs"; }
	    timeout 60 find "$mnt" -exec getfattr -d -m - {} + >/dev/null 2>&1
	    [ $? = 124 ] && { res=HANG; dmn="find/getfattr hangs"; }
	    kill -0 "$pid" 2>/dev/null || { dmn=died; res=CRASH; }
	    stop_daemon
	    # exit 1 with a message (flushing at unmount failed on the damage) is an orderly
	    # refusal; a signal, a hang or an exit without a message is a crash
	    if [ "$drc" -ge 124 ]; then dmn="signal/hang$drc"; res=CRASH
	    elif [ "$drc" != 0 ]; then [ "$dmn" = - ] && dmn=""; dmn="${dmn:+$dmn, }exit$drc"
		 [ -s "$dir/dlog" ] || res=CRASH
	    elif [ "$dmn" = - ]; then dmn=ok; fi
	    timeout 60 "$DB" -c "check -f" "$img" >"$dir/post" 2>&1
	    src=$?
	    case $src in 0) post=clean ;; 1) post=damage ;; *) post="status$src"; res=CRASH ;; esac
	    # repaired online: the scrub after the repair is clean and so is the offline check
	    # after the unmount
	    if [ "$rep" = online:repaired ] && [ "$post" != clean ]; then
		rep="online:unfixable"
		why="the scrub after the repair is clean, the offline check is not: $(grep -m1 -v '^ *$' "$dir/post")"
		why=$(printf '%.300s' "${why//$'\t'/ }")
	    fi
	    case $rep in
	    online:repaired) tot[orepaired]=$((${tot[orepaired]:-0} + 1)) ;;
	    online:unfixable) tot[ounfixable]=$((${tot[ounfixable]:-0} + 1)) ;;
	    esac
	    if [ -z "${res:-}" ]; then
		if [ "$scrub_s" = found ]; then res=detected
		elif [ "$pre" = clean ] && [ "$post" = clean ] && [ "$scrub_s" = clean ]; then res=benign
		elif [ "$pre" = damage ] && [ "$post" = clean ] && [ "$scrub_s" = clean ]; then
			res=healed
		else res=MISS; fi
	    fi ;;
	esac
	# offline repair of what is still damaged
	if [ "$post" = damage ] || { [ "$mnt_s" = refused ] && [ "$pre" = damage ]; }; then
		timeout 120 "$REPAIR" "$img" >"$dir/rep" 2>&1
		src=$?
		if [ "$src" -ge 124 ]; then rep="$rep;offline:status$src"; res=CRASH
		elif timeout 60 "$DB" -c "check -f" "$img" >"$dir/rcheck" 2>&1; then
			rep="$rep;offline:fixed"; tot[fixed]=$((${tot[fixed]:-0} + 1))
		else rep="$rep;offline:unfixable"; tot[unfixable]=$((${tot[unfixable]:-0} + 1)); fi
	fi
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$obj" "$field" "$verb" \
		"$change" "$res" "$mnt_s" "$scrub_s" "$pre" "$post" "$dmn" "$rep" "$kind" "$why" >>"$tsv"
	printf '%-16s %-22s %-10s %-28s %-9s %s\n' "$obj" "$field" "$verb" "$change" "$res" "${rep#-;}"
	tot[$res]=$((${tot[$res]:-0} + 1))
	if [ "$res" = MISS ] || [ "$res" = CRASH ] || [ "$res" = HANG ]; then
		mkdir -p "$O/fieldfuzz.fail"
		local tag
		tag=$(echo "$obj.$field.$verb" | tr ' []/' '_()_')
		{ echo "== fuzz"; cat "$dir/fz"; echo "== check before"; tail -5 "$dir/pre"
		  echo "== scrub"; tail -8 "$dir/scrub" 2>/dev/null; echo "== check after"
		  tail -5 "$dir/post" 2>/dev/null; echo "== daemon"; tail -8 "$dir/dlog"
		  echo "== online repair"; tail -5 "$dir/orep" 2>/dev/null
		  echo "== offline repair"; tail -5 "$dir/rep" 2>/dev/null; } \
			>"$O/fieldfuzz.fail/$tag.txt" 2>/dev/null
	fi
	return 0
}

echo "fieldfuzz: objects: $(cut -f1 "$dir/objs" | paste -sd,)"
echo "fieldfuzz: $(wc -l <"$dir/objs") objects, $nfields fields × $(echo $VERBS | wc -w) verbs, sample 1/$sample"
rm -rf "$O/fieldfuzz.fail"
start=$(date +%s)
while IFS=$'\t' read -r obj field size kind; do
	for verb in $VERBS; do
		n=$((n + 1))
		[ $((n % sample)) = 0 ] || continue
		[ -z "$match" ] || [[ "$obj $field $verb" =~ $match ]] || continue
		# add/sub/bits of byte strings longer than 8 bytes: zeroes, ones and random only
		case $verb in add|sub) [ "$size" -gt 8 ] && continue ;; esac
		one_case "$obj" "$field" "$verb" "$kind" </dev/null && ran=$((ran + 1))
	done
done <"$dir/cases"
rm -f "$img"
el=$(($(date +%s) - start))

# the table: one row per field, one column per verb
echo
awk -F'\t' -v verbs="$VERBS" '
BEGIN { nv = split(verbs, v, " ")
	ab["refused"] = "refused"; ab["detected"] = "detect"; ab["benign"] = "benign"
	ab["unchanged"] = "same"; ab["healed"] = "healed"; ab["MISS"] = "MISS"
	ab["CRASH"] = "CRASH"; ab["HANG"] = "HANG"
	printf "%-34s", "object.field"; for (i = 1; i <= nv; i++) printf " %-9s", v[i]; print "" }
NR > 1 { k = $1 "." $2; if (!(k in seen)) { seen[k] = 1; rows[++n] = k }; r[k, $3] = ab[$5] }
END { for (j = 1; j <= n; j++) { printf "%-34s", rows[j]
		for (i = 1; i <= nv; i++) printf " %-9s", ((rows[j], v[i]) in r) ? r[rows[j], v[i]] : "."
		print "" } }' "$tsv" | tee "${tsv%.tsv}.table"

# the table per structure.  invalid: the fuzz made the structure invalid (the mount refused
# it, the scrub or the offline check found it); benign and unchanged cases are not counted.
# detected: of the invalid ones that mounted and were still invalid when the scrub ran
# (not healed by the mount), those the scrub found.  repaired online: of those detected,
# the ones the online repair set right (the scrub after it clean, and the offline check
# after the unmount).  A refused mount is no online-repair case: its column says how many,
# and how many of those the offline repair fixed.
echo
awk -F'\t' '
function row(k,   d, r) {
	d = c[k, "detected"] + c[k, "MISS"]
	r = c[k, "detected"]
	printf "%-24s %5d %7d %8d %7d %8s %6d %8d %8s %7d %7d %7d\n", k, c[k, "n"], c[k, "inv"],
		c[k, "detected"], c[k, "MISS"], d ? sprintf("%d%%", int(100 * c[k, "detected"] / d)) : "-",
		c[k, "orep"], r - c[k, "orep"], r ? sprintf("%d%%", int(100 * c[k, "orep"] / r)) : "-",
		c[k, "refused"], c[k, "healed"], c[k, "CRASH"] + c[k, "HANG"]
}
NR > 1 { k = $12; if (!(k in seen)) { seen[k] = 1; ks[++nk] = k }
	 for (j = 0; j < 2; j++) {
		c[k, "n"]++; c[k, $5]++
		if ($5 == "refused" || $5 == "detected" || $5 == "healed" || $5 == "MISS") c[k, "inv"]++
		if ($11 ~ /^online:repaired/) c[k, "orep"]++
		k = "ALL"
	 } }
END {	printf "%-24s %5s %7s %8s %7s %8s %6s %8s %8s %7s %7s %7s\n", "structure", "cases",
		"invalid", "detected", "missed", "detect%", "rep.on", "unrep.on", "repair%",
		"refused", "healed", "crashes"
	for (i = 1; i <= nk; i++) row(ks[i])
	row("ALL") }' "$tsv" | tee "${tsv%.tsv}.structures"
if [ "${tot[ounfixable]:-0}" != 0 ]; then
	echo
	echo "not repaired online (the reason: the engine's, or what the scrub still finds):"
	awk -F'\t' '$11 ~ /^online:unfixable/ { printf "  %s.%s %s (%s): %s\n", $1, $2, $3, $4, $13 }' "$tsv"
fi

damaging=$((${tot[refused]:-0} + ${tot[detected]:-0} + ${tot[healed]:-0} + ${tot[MISS]:-0}))
echo
echo "fieldfuzz: $ran cases in ${el}s: refused ${tot[refused]:-0}, detected ${tot[detected]:-0}," \
	"benign ${tot[benign]:-0}, unchanged ${tot[unchanged]:-0}, healed ${tot[healed]:-0}, MISS ${tot[MISS]:-0}, CRASH ${tot[CRASH]:-0}, HANG ${tot[HANG]:-0}; online repair: repaired ${tot[orepaired]:-0}, unfixable ${tot[ounfixable]:-0};" \
	"offline repair: fixed ${tot[fixed]:-0}, unfixable ${tot[unfixable]:-0}"
[ "$damaging" -gt 0 ] &&
	echo "fieldfuzz: of the damaging fuzzes (refused+detected+healed+MISS)" \
		"$(( (damaging - ${tot[MISS]:-0}) * 100 / damaging ))% caught," \
		"detected by the scrub: $(( ${tot[detected]:-0} * 100 / damaging ))%"
scrubbed=$((${tot[detected]:-0} + ${tot[MISS]:-0}))
[ "$scrubbed" -gt 0 ] &&
	echo "fieldfuzz: invalid when the scrub ran: $scrubbed; detected by the scrub" \
		"$(( ${tot[detected]:-0} * 100 / scrubbed ))%; repaired online" \
		"${tot[orepaired]:-0} of ${tot[detected]:-0}" \
		"($(( ${tot[detected]:-0} ? ${tot[orepaired]:-0} * 100 / ${tot[detected]:-1} : 0 ))%)"
echo "fieldfuzz: table in ${tsv%.tsv}.table, results in $tsv${tot[MISS]:+, details of misses and crashes in $O/fieldfuzz.fail/}"
if [ "${tot[MISS]:-0}" != 0 ] || [ "${tot[CRASH]:-0}" != 0 ] || [ "${tot[HANG]:-0}" != 0 ]; then
	echo "misses, crashes and hangs:"
	awk -F'\t' '$5 == "MISS" || $5 == "CRASH" || $5 == "HANG" { printf "  %s.%s %s (%s): %s mount=%s scrub=%s check before=%s after=%s daemon=%s repair=%s\n", $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 }' "$tsv"
	exit 1
fi
exit 0
