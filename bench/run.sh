#!/usr/bin/env bash
# make bench: see bench/bench.py for what is measured and the settings.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/bench.py "${1:-build}"
