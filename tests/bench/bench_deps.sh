#!/bin/sh
# Installs the Debian packages the benchmarks compare against or drive (fio, fuse2fs,
# bindfs; xfsprogs for bench_repair's xfs_repair columns), when any is missing.  Only
# `make bench` runs it: building and testing mendfs needs none of them.  Each is optional:
# without it, its columns are skipped with the reason.
need=""
command -v fio >/dev/null 2>&1 || need="$need fio"
command -v fuse2fs >/dev/null 2>&1 || need="$need fuse2fs"
command -v bindfs >/dev/null 2>&1 || need="$need bindfs"
command -v python3 >/dev/null 2>&1 || need="$need python3"
{ command -v mkfs.xfs && command -v xfs_repair; } >/dev/null 2>&1 || need="$need xfsprogs"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "bench: missing packages:$need (apt-get install$need); their columns are skipped" >&2
	exit 0
fi
echo "bench: installing:$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq --no-install-recommends $need ||
	echo "bench: could not install$need; their columns are skipped" >&2
exit 0
