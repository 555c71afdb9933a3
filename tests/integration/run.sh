#!/usr/bin/env bash
# Runs every integration test against the programs in BIN.
#
#   tests/integration/run.sh BIN [PATTERN...]
#
# BIN is a build directory (build, build-asan, ...) holding postern-relay,
# postern-server, postern-client, postern-keygen and postern-sign.  Prints
# one line per test ("PASS name (1.2 s)" or "FAIL name: reason") and ends
# with exactly one line "integration: N passed, M failed"; exits non-zero
# on any failure.  PATTERNs select tests by name (substring).
#
# The Python tests are tests/integration/test_*.py (run by runner.py, each
# in its own process group with a time limit); any tests/integration/test_*.sh
# script is run too, from the repository root with BIN as $1 (relative to
# the root when BIN is inside it), and passes when it exits 0.
#
# Each Python test gets a directory $TMPDIR/postern-it-NAME-XXXXXX (keys,
# relay.ini, every program's stdout/stderr, test.log); it is removed when
# the test passes.  The whole suite takes about 1.5 minutes against ASan
# builds on 2 cores with the default sizes.
#
# Settings (environment):
#   POSTERN_IT_BIG_MB   size of each direction of the large transfer
#                       (default 256)
#   POSTERN_IT_KEEP=1   keep every test's directory (default: failing only)
#   POSTERN_IT_VERBOSE=1  print a failing test's full output
#   POSTERN_IT_SH_TIMEOUT  time limit of each .sh test in seconds (300)
set -u

here=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 1 ]; then
	echo "usage: $0 BIN [PATTERN...]" >&2
	exit 2
fi
if ! bin=$(cd "$1" 2>/dev/null && pwd); then
	echo "$0: $1 is not a directory (build first: make BUILD=$1)" >&2
	echo "integration: 0 passed, 1 failed"
	exit 1
fi
shift

passed=0
failed=0
counts=$(mktemp)
trap 'rm -f "$counts"' EXIT

python3 "$here/runner.py" --counts "$counts" "$bin" "$@"
if read -r p f < "$counts" && [ -n "${p:-}" ]; then
	passed=$((passed + p))
	failed=$((failed + f))
else
	echo "FAIL python-runner: runner.py ended without counts"
	failed=$((failed + 1))
fi

# Scripts run from the repository root and get BIN relative to it when
# BIN is inside the repository (as `make check` names it: build-asan),
# otherwise absolute.
root=$(cd "$here/../.." && pwd)
case "$bin/" in
"$root"/*) sh_bin=${bin#"$root"/}; [ -n "$sh_bin" ] || sh_bin=. ;;
*) sh_bin=$bin ;;
esac

now() { date +%s.%N; }
for t in "$here"/test_*.sh; do
	[ -e "$t" ] || continue
	name=$(basename "$t" .sh)
	name=${name#test_}
	if [ $# -gt 0 ]; then
		sel=0
		for pat in "$@"; do
			case "$name" in *"$pat"*) sel=1 ;; esac
		done
		[ $sel -eq 1 ] || continue
	fi
	log=$(mktemp "${TMPDIR:-/tmp}/postern-it-$name-XXXXXX.log")
	t0=$(now)
	(cd "$root" && timeout -k 5 "${POSTERN_IT_SH_TIMEOUT:-300}" \
	    bash "$t" "$sh_bin") >"$log" 2>&1
	rc=$?
	dt=$(awk -v a="$t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
	if [ $rc -eq 0 ]; then
		echo "PASS $name ($dt s)"
		passed=$((passed + 1))
		rm -f "$log"
	else
		why=$(tail -n 1 "$log" | tr -s '[:space:]' ' ' | cut -c1-300)
		[ $rc -eq 124 ] && why="timed out; $why"
		echo "FAIL $name: exit $rc: $why ($dt s; log: $log)"
		failed=$((failed + 1))
	fi
done

echo "integration: $passed passed, $failed failed"
[ $failed -eq 0 ]
