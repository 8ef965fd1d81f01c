#!/bin/sh
# Installs the Debian packages mendfs needs to build and test, when any is missing.
# Used by `make run`, `make check` and .ci/run; a no-op on a machine that has them.
set -e
need=""
have_pc() { pkg-config --exists "$1" 2>/dev/null; }
command -v pkg-config >/dev/null 2>&1 || need="$need pkg-config"
command -v cc >/dev/null 2>&1 || need="$need gcc"
command -v make >/dev/null 2>&1 || need="$need make"
have_pc fuse3 || need="$need libfuse3-dev"
have_pc blkid || need="$need libblkid-dev"
have_pc check || need="$need check"
command -v fusermount3 >/dev/null 2>&1 || need="$need fuse3"
command -v mkfs.ext4 >/dev/null 2>&1 || need="$need e2fsprogs"
command -v blkid >/dev/null 2>&1 || need="$need util-linux"
command -v clang >/dev/null 2>&1 || need="$need clang"   # the fuzz targets (t_fuzz)
command -v setfattr >/dev/null 2>&1 || need="$need attr"; command -v setfacl >/dev/null 2>&1 || need="$need acl"
[ -z "$need" ] && exit 0
if [ "$(id -u)" != 0 ]; then
	echo "mendfs: missing packages:$need" >&2
	echo "mendfs: install them as root: apt-get install$need" >&2
	exit 1
fi
echo "mendfs: installing:$need"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends $need
