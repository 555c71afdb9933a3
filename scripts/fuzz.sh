#!/usr/bin/env bash
# Builds the libFuzzer targets (make fuzz-build) and runs every
# build-fuzz/fuzz_* for SECONDS each (default 60), starting from a seed
# corpus made of tests/vectors in a temporary folder.  Prints one line per
# target; exits non-zero if any target crashed or failed to run.
# Crash inputs and logs are kept in build-fuzz/artifacts/.
#
#   scripts/fuzz.sh [SECONDS]
set -uo pipefail

secs=${1:-60}
case $secs in
''|*[!0-9]*) echo "usage: scripts/fuzz.sh [SECONDS]" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.." || exit 1

if ! make --no-print-directory fuzz-build >/dev/null; then
	echo "fuzz: build failed (make fuzz-build needs clang and libclang-rt)" >&2
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/postern-fuzz.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
seeds=$tmp/seeds
mkdir -p "$seeds"
for f in tests/vectors/*.bin tests/vectors/*.txt; do
	[ -s "$f" ] && cp "$f" "$seeds/"
done
# The hex payloads and frames inside the JSON vectors are seeds too.
if command -v python3 >/dev/null; then
	python3 - "$seeds" tests/vectors/*.json <<'PY'
import json, sys, os
out = sys.argv[1]
n = 0
for path in sys.argv[2:]:
    try:
        cases = json.load(open(path))
    except Exception:
        continue
    if not isinstance(cases, list):
        continue
    for c in cases:
        for key in ("expected", "hex", "data"):
            v = c.get(key) if isinstance(c, dict) else None
            if isinstance(v, str) and v:
                try:
                    b = bytes.fromhex(v)
                except ValueError:
                    continue
                n += 1
                open(os.path.join(out, "json-%d" % n), "wb").write(b)
PY
fi

artifacts=build-fuzz/artifacts
mkdir -p "$artifacts"
status=0
found=0
for bin in build-fuzz/fuzz_*; do
	[ -x "$bin" ] && [ -f "$bin" ] || continue
	found=1
	name=$(basename "$bin")
	corpus=$tmp/corpus-$name
	log=$tmp/$name.log
	mkdir -p "$corpus"
	cp "$seeds"/* "$corpus"/ 2>/dev/null
	"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
	    -print_final_stats=1 -artifact_prefix="$artifacts/$name-" \
	    "$corpus" >"$log" 2>&1
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*')
	if [ $rc -eq 0 ]; then
		echo "$name: ok, ${runs:-?} runs in ${secs}s, coverage ${cov:-?} edges, corpus $(ls "$corpus" | wc -l) inputs"
	else
		cp "$log" "$artifacts/$name.log"
		echo "$name: FAILED (exit $rc) after ${runs:-?} runs; log: $artifacts/$name.log"
		grep -E 'ERROR|SUMMARY|fuzz_[a-z]*: .*:[0-9]+:|Test unit written' "$log" | head -n 5 | sed 's/^/    /'
		status=1
	fi
done
if [ $found -eq 0 ]; then
	echo "fuzz: no targets in build-fuzz/" >&2
	exit 1
fi
exit $status
