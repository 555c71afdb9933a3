#!/usr/bin/env bash
# The body of `make check`: build plain and with ASan+UBSan, run the unit
# tests (Check) under both, the integration tests against the sanitized
# programs, and short fuzz runs. Ends with one summary line:
#   check: N passed, M failed
# Settings (environment): JOBS (make -j, default: cores), FUZZ_CHECK_SECONDS
# (per fuzz target, default 60; 0 skips fuzzing).
set -uo pipefail
cd "$(dirname "$0")/.."

JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
FUZZ_CHECK_SECONDS=${FUZZ_CHECK_SECONDS:-60}
passed=0
failed=0
failures=()

note_fail() { failed=$((failed + 1)); failures+=("$1"); echo "FAIL $1"; }

summary() {
	echo
	if [ ${#failures[@]} -gt 0 ]; then
		echo "failures:"
		printf '  %s\n' "${failures[@]}"
	fi
	echo "check: $passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit $?
}

# Runs every Check binary in $1, counting individual checks.
run_units() {
	local dir=$1 label=$2 t out n f e
	for t in "$dir"/tests/test_*; do
		[ -x "$t" ] || continue
		out=$("$t" 2>&1)
		local rc=$?
		n=$(printf '%s\n' "$out" | sed -n 's/.*Checks: \([0-9]*\), Failures: \([0-9]*\), Errors: \([0-9]*\).*/\1 \2 \3/p' | tail -n 1)
		if [ -z "$n" ]; then
			printf '%s\n' "$out" | tail -n 20
			note_fail "$label $(basename "$t"): no Check summary (exit $rc)"
			continue
		fi
		read -r n f e <<<"$n"
		passed=$((passed + n - f - e))
		if [ "$rc" -ne 0 ] || [ "$f" -ne 0 ] || [ "$e" -ne 0 ] || grep -q 'runtime error:\|AddressSanitizer\|LeakSanitizer' <<<"$out"; then
			printf '%s\n' "$out" | grep -v '^Running suite' | tail -n 30
			note_fail "$label $(basename "$t"): $f failures, $e errors (exit $rc)"
			[ $((f + e)) -gt 1 ] && failed=$((failed + f + e - 1))
		else
			echo "ok   $label $(basename "$t"): $n checks"
		fi
	done
}

echo "== build (plain)"
if ! make -j"$JOBS" BUILD=build all; then
	note_fail "build (plain)"
	summary
fi
echo "== build (ASan+UBSan)"
if ! make -j"$JOBS" BUILD=build-asan SAN=1 all; then
	note_fail "build (ASan+UBSan)"
	summary
fi

echo "== unit tests (plain)"
run_units build plain
echo "== unit tests (ASan+UBSan)"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
run_units build-asan asan

if [ -x tests/integration/run.sh ]; then
	echo "== integration tests (ASan+UBSan programs)"
	# tee into a file, not /dev/stderr: reopening a redirected stderr
	# would truncate the caller's log.
	itlog=$(mktemp)
	bash tests/integration/run.sh build-asan 2>&1 | tee "$itlog"
	out=$(tail -n 1 "$itlog")
	rm -f "$itlog"
	n=$(sed -n 's/.*: \([0-9]*\) passed, \([0-9]*\) failed.*/\1 \2/p' <<<"$out")
	if [ -z "$n" ]; then
		note_fail "integration: no summary line"
	else
		read -r p f <<<"$n"
		passed=$((passed + p))
		[ "$f" -gt 0 ] && note_fail "integration: $f failed" && failed=$((failed + f - 1))
	fi
fi

if [ "$FUZZ_CHECK_SECONDS" -gt 0 ] && [ -x scripts/fuzz.sh ]; then
	echo "== fuzz (${FUZZ_CHECK_SECONDS} s per target)"
	if bash scripts/fuzz.sh "$FUZZ_CHECK_SECONDS"; then
		passed=$((passed + 1))
	else
		note_fail "fuzz"
	fi
fi

summary
