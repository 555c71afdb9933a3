#!/usr/bin/env bash
# The `mproxy` tool against the reference vectors in tests/vectors:
# pack must write what proxy-packer's test/pack.js writes, unpack must
# print what the reference decoder reads, and bad input must fail clearly.
#
#   tests/integration/test_mproxy_tool.sh [BUILD_DIR]   (default: build)
#
# Prints one line per check and a summary "test_mproxy_tool: N passed, M
# failed"; exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/../.." || exit 1

build=${1:-${BUILD:-build}}
mproxy=${MPROXY:-$build/mproxy}
mproxy_abs=$(cd "$(dirname "$mproxy")" && pwd)/$(basename "$mproxy")
vec=tests/vectors
if [ ! -x "$mproxy" ]; then
	echo "test_mproxy_tool: $mproxy not found; build it first (make BUILD=$build)" >&2
	exit 1
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/postern-mproxy.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $1"; }
fail() { failed=$((failed + 1)); echo "FAIL $1"; [ $# -gt 1 ] && printf '%s\n' "$2" | head -n 10 | sed 's/^/     /'; }

# Runs mproxy with a time limit; sets rc, out (stdout), err (stderr).
run() {
	timeout 20 "$mproxy" "$@" >"$tmp/out" 2>"$tmp/err"
	rc=$?
	out=$(cat "$tmp/out")
	err=$(cat "$tmp/err")
}

expect_fail() {  # what, wanted exit code, wanted stderr text, args...
	local what=$1 code=$2 text=$3
	shift 3
	run "$@"
	if [ "$rc" -eq "$code" ] && grep -qF -- "$text" <<<"$err"; then
		ok "$what"
	else
		fail "$what (exit $rc, wanted $code and '$text')" "$err"
	fi
}

# ---- pack: byte for byte what the reference's test/pack.js writes
for json in "$vec"/pack-*.json; do
	name=$(basename "$json" .json)
	run pack "$json" "$tmp/$name.bin"
	if [ "$rc" -eq 0 ] && cmp -s "$tmp/$name.bin" "$vec/$name.expected.bin"; then
		ok "pack $name"
	else
		fail "pack $name (exit $rc)" "$err$(cmp "$tmp/$name.bin" "$vec/$name.expected.bin" 2>&1)"
	fi
done

# filepath is relative to the JSON file's folder, not to the cwd
abs=$(pwd)/$vec/pack-sni.json
(cd "$tmp" && timeout 20 "$mproxy_abs" pack "$abs" sni-cwd.bin >/dev/null 2>"$tmp/err")
if cmp -s "$tmp/sni-cwd.bin" "$vec/pack-sni.expected.bin"; then
	ok "pack resolves filepath against the JSON file's folder"
else
	fail "pack resolves filepath against the JSON file's folder" "$(cat "$tmp/err")"
fi

# ---- unpack: what the reference decoder reads (JSON lines)
for jsonl in "$vec"/*.jsonl; do
	name=$(basename "$jsonl" .jsonl)
	run unpack "$vec/$name.bin"
	if [ "$rc" -eq 0 ] && [ "$out" = "$(cat "$jsonl")" ]; then
		ok "unpack $name"
	else
		fail "unpack $name (exit $rc)" "$err$(diff <(printf '%s\n' "$out") "$jsonl")"
	fi
done

run unpack - <"$vec/sni.tunneled.bin"
if [ "$rc" -eq 0 ] && [ "$out" = "$(cat "$vec/sni.tunneled.jsonl")" ]; then
	ok "unpack - reads stdin"
else
	fail "unpack - reads stdin (exit $rc)" "$err"
fi

# pack and unpack agree; the name comes from the payload
run unpack "$vec/pack-http.expected.bin"
if [ "$rc" -eq 0 ] && grep -qF '"name":"www.example.com"' <<<"$out" &&
    grep -qF '"family":"IPv6","address":"::ffff:10.0.0.9","port":"61000"' <<<"$out"; then
	ok "unpack of a packed HTTP request names its Host"
else
	fail "unpack of a packed HTTP request names its Host" "$out$err"
fi
run unpack "$vec/pack-empty.expected.bin"
if [ "$rc" -eq 0 ] && grep -qF '"datalen":1,' <<<"$out" && grep -qF '"data":"IA=="' <<<"$out"; then
	ok "an empty payload is packed as one space"
else
	fail "an empty payload is packed as one space" "$out$err"
fi

: >"$tmp/empty.bin"
run unpack "$tmp/empty.bin"
if [ "$rc" -eq 0 ] && [ -z "$out" ]; then ok "unpack of an empty stream"; else fail "unpack of an empty stream" "$err"; fi

# ---- malformed streams: frames before the error, then a clear message
cat "$vec/sni.tunneled.bin" >"$tmp/trailing.bin"
printf 'X' >>"$tmp/trailing.bin"
run unpack "$tmp/trailing.bin"
if [ "$rc" -eq 1 ] && [ "$(wc -l <<<"$out")" -eq 1 ] &&
    grep -qF "malformed M-PROXY stream: byte 227: version byte 0x58 is not 0xfe" <<<"$err"; then
	ok "a bad version byte after a frame: frame printed, error at byte 227"
else
	fail "a bad version byte after a frame (exit $rc)" "$out$err"
fi

head -c 100 "$vec/sni.tunneled.bin" >"$tmp/short.bin"
expect_fail "a truncated stream" 1 \
    "byte 100: stream ends inside the payload of the frame that starts at byte 0 (72 of 199 bytes)" \
    unpack "$tmp/short.bin"
head -c 10 "$vec/sni.tunneled.bin" >"$tmp/short.bin"
expect_fail "a truncated header" 1 "byte 10: stream ends inside the header" unpack "$tmp/short.bin"

expect_fail "--max-data below the data length" 1 \
    "byte 21: data length 199 is over the limit of 100 bytes" \
    unpack --max-data 100 "$vec/sni.tunneled.bin"
run unpack --max-data 199 "$vec/sni.tunneled.bin"
if [ "$rc" -eq 0 ]; then ok "--max-data is inclusive"; else fail "--max-data is inclusive" "$err"; fi

printf '\xfe\x14IPv4,1.2.3.4,5,12x,t' >"$tmp/garbage.bin"
expect_fail "a non-numeric data length" 1 "byte 17: data length '12x' is not a number" unpack "$tmp/garbage.bin"
printf '\xfe\x00' >"$tmp/zero.bin"
expect_fail "a zero header length" 1 "byte 1: header length is 0" unpack "$tmp/zero.bin"
printf 'GET / HTTP/1.1\r\n' >"$tmp/http.bin"
expect_fail "not M-PROXY at all" 1 "byte 0: version byte 0x47 is not 0xfe" unpack "$tmp/http.bin"
expect_fail "a missing input" 1 "nope.bin: No such file or directory" unpack "$tmp/nope.bin"

# ---- pack refuses what the reference would corrupt
printf 'GET / HTTP/1.1\r\nHost: comma,host\r\n\r\n' >"$tmp/comma.txt"
printf '{"version":1,"address":{"family":"IPv4","address":"1.2.3.4","port":5},"filepath":"comma.txt"}' >"$tmp/comma.json"
expect_fail "pack refuses a Host with a comma" 1 "name: 'comma,host' has a comma at position 5" pack "$tmp/comma.json" "$tmp/x.bin"
printf '{"version":1,"address":{"family":"IPv4","address":"1.2.3.4","port":70000},"filepath":"comma.txt"}' >"$tmp/port.json"
expect_fail "pack refuses a port out of range" 1 "address.port must be an integer from 0 to 65535" pack "$tmp/port.json" "$tmp/x.bin"
printf '{"version":1,"address":{"family":"IPv4","address":"1.2.3.4","port":1},"filepath":"missing.bin"}' >"$tmp/missing.json"
expect_fail "pack names a missing payload file" 1 "missing.bin: No such file or directory" pack "$tmp/missing.json" "$tmp/x.bin"
printf '{"version":1,"address":' >"$tmp/broken.json"
expect_fail "pack names bad JSON" 1 "broken.json: line 1" pack "$tmp/broken.json" "$tmp/x.bin"
printf '{"version":2,"address":{},"filepath":"comma.txt"}' >"$tmp/v2.json"
expect_fail "pack refuses version 2" 1 '"version" must be 1' pack "$tmp/v2.json" "$tmp/x.bin"

# ---- usage errors exit 2 with the usage text
expect_fail "no arguments" 2 "usage: mproxy pack" 
expect_fail "unknown command" 2 "usage: mproxy pack" frob
expect_fail "pack without an output" 2 "usage: mproxy pack" pack "$vec/pack-sni.json"
expect_fail "unpack with two inputs" 2 "usage: mproxy pack" unpack a.bin b.bin
expect_fail "--max-data not a number" 2 "--max-data: 'lots' is not a byte count" unpack --max-data lots "$vec/sni.tunneled.bin"
run --help
if [ "$rc" -eq 0 ] && grep -qF "usage: mproxy" <<<"$out"; then ok "--help"; else fail "--help (exit $rc)"; fi

echo "test_mproxy_tool: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
