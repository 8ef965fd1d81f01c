#!/bin/sh
# Installs the Debian packages the filesystem benchmark compares against or drives (fio,
# fuse2fs, bindfs), when any is missing.  Only `make bench` runs it: building and testing
# mendfs needs none of them.  bindfs is optional (its column is left out without it).
need=""
command -v fio >/dev/null 2>&1 || need="$need fio"
command -v fuse2fs >/dev/null 2>&1 || need="$need fuse2fs"
command -v bindfs >/dev/null 2>&1 || need="$need bindfs"
command -v python3 >/dev/null 2>&1 || need="$need python3"
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
