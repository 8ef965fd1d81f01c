#!/bin/sh
# Runs every test program it is given (Check unit-test binaries and tests/integration/t_*.sh
# scripts), prints each one's verdict and a closing "N passed, N failed, N skipped" line.
# Exit status 77 from a program means "skipped" (the reason is printed by the program).
# Environment: BIN (built programs), O (build dir); CK_* variables pass through to Check.
# TEST_TIMEOUT (seconds, default 900) bounds each program, so a hang fails that test
# (exit 124) instead of stalling the whole run.
pass=0; fail=0; skip=0; failed=""
for t in "$@"; do
	name=$(basename "$t")
	start=$(date +%s)
	case "$t" in
	*.sh) timeout -k 10 "${TEST_TIMEOUT:-900}" bash "$t" </dev/null ;;
	*) timeout -k 10 "${TEST_TIMEOUT:-900}" "$t" </dev/null ;;
	esac
	rc=$?
	[ $rc -eq 124 ] && echo "$name: timed out after ${TEST_TIMEOUT:-900}s"
	secs=$(( $(date +%s) - start ))
	if [ $rc -eq 0 ]; then
		pass=$((pass + 1)); echo "PASS: $name (${secs}s)"
	elif [ $rc -eq 77 ]; then
		skip=$((skip + 1)); echo "SKIP: $name"
	else
		fail=$((fail + 1)); failed="$failed $name"; echo "FAIL: $name (exit $rc, ${secs}s)"
	fi
done
[ -n "$failed" ] && echo "failed:$failed"
echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
