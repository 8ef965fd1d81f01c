#!/bin/bash
# t_fuzz.sh — a bounded run of each libFuzzer target (tests/fuzz): built with clang,
# libFuzzer, ASan and UBSan into $O/fuzzbuild (or $FUZZ_O), each run for
# $FUZZ_TIME seconds (default 30) from the seed corpus.  Fails on any crash, sanitizer
# report, leak or hang, printing the path of the input that did it (replay it with
# `$O/fuzzbuild/fuzz/fuzz_<name> PATH`).  Skipped (77) when clang or its libFuzzer runtime is
# missing; .ci/deps.sh installs clang.
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
command -v clang >/dev/null 2>&1 || { echo "t_fuzz: no clang: skipped"; exit 77; }
probe=$(mktemp -d) || exit 1
trap 'rm -rf "$probe"' EXIT
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n);\nint LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }\n' >"$probe/p.c"
if ! clang -fsanitize=fuzzer,address,undefined -o "$probe/p" "$probe/p.c" >/dev/null 2>&1; then
	echo "t_fuzz: clang has no libFuzzer runtime: skipped"
	exit 77
fi
fo=${FUZZ_O:-${O:-$top/build}/fuzzbuild}
echo "t_fuzz: building the fuzz targets into $fo"
# Not the flags of a make this runs under (make asan's O and SANITIZE, its jobserver).
if ! env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL make -C "$top" --no-print-directory -j2 O="$fo" CC=clang FUZZ=1 fuzz-build >"$probe/build.log" 2>&1; then
	tail -n 40 "$probe/build.log"
	echo "t_fuzz: FAIL: the fuzz targets do not build"
	exit 1
fi
FUZZ_TIME=${FUZZ_TIME:-30} bash "$top/tests/fuzz/run.sh" "$fo" "$fo"/fuzz/fuzz_*
rc=$?
if [ $rc -ne 0 ]; then
	echo "t_fuzz: FAIL: crash inputs:"
	ls -1 "$fo"/crash/* 2>/dev/null
	exit 1
fi
echo "t_fuzz: PASS"
