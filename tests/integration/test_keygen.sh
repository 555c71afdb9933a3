#!/usr/bin/env bash
# postern-keygen as a user runs it.  Usage: test_keygen.sh [BIN_DIR]
# (default build).  Prints one line per check; exits 1 if any failed.
set -u

BIN=${1:-build}
KEYGEN="$BIN/postern-keygen"
if [ ! -x "$KEYGEN" ]; then
	echo "test_keygen: $KEYGEN not found: run make first" >&2
	exit 1
fi

tmp=$(mktemp -d /tmp/postern-test-keygen.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
pass=0
fail=0

ok() {
	pass=$((pass + 1))
	echo "ok   $1"
}

bad() {
	fail=$((fail + 1))
	echo "FAIL $1" >&2
	[ -n "${2:-}" ] && echo "     $2" >&2
}

# run EXPECTED_RC NAME ARGS...: runs keygen, keeps stdout/stderr in $out/$errout
run() {
	local want=$1 name=$2 rc
	shift 2
	out=$(timeout 10 "$KEYGEN" "$@" 2>"$tmp/stderr")
	rc=$?
	errout=$(cat "$tmp/stderr")
	if [ "$rc" -eq "$want" ]; then
		ok "$name (exit $rc)"
	else
		bad "$name: exit $rc, want $want" "stdout: $out / stderr: $errout"
	fi
}

has() {
	case "$2" in
	*"$3"*) ok "$1" ;;
	*) bad "$1: no '$3' in" "$2" ;;
	esac
}

mode() {
	stat -c %a "$1"
}

pubre='^ed25519:[A-Za-z0-9+/]{43}=$'

run 0 "--help" --help
has "--help shows usage" "$out" "usage: postern-keygen -o FILE"
run 0 "-h" -h
[ -z "$errout" ] && ok "-h writes nothing to stderr" || bad "-h stderr" "$errout"

run 2 "no arguments" 
has "no arguments says what to do" "$errout" "-o FILE"
run 2 "unknown option" --frobnicate
has "unknown option named" "$errout" "--frobnicate"
run 2 "-o without FILE" -o
has "-o without FILE explained" "$errout" "needs a FILE"
run 2 "stray argument" -o "$tmp/x.key" extra
run 2 "-o and --public together" -o "$tmp/x.key" --public "$tmp/x.key"
run 2 "--force without -o" --force --public "$tmp/x.key"
[ ! -e "$tmp/x.key" ] && ok "bad usage writes no file" || bad "bad usage wrote $tmp/x.key"

key="$tmp/server.key"
run 0 "make a key" -o "$key"
[[ "$out" =~ $pubre ]] && ok "public key printed as ed25519:BASE64" ||
    bad "public key format" "$out"
[ "$(printf '%s\n' "$out" | wc -l)" -eq 1 ] && ok "stdout is one line" ||
    bad "stdout is not one line" "$out"
pub1=$out
[ "$(mode "$key")" = 600 ] && ok "key file mode 0600" ||
    bad "key file mode $(mode "$key")"
grep -q '^ed25519-secret:' "$key" && ok "key file has the secret line" ||
    bad "key file content" "$(head -c 200 "$key")"

(umask 000; "$KEYGEN" -o "$tmp/umask.key" >/dev/null 2>&1)
[ "$(mode "$tmp/umask.key")" = 600 ] && ok "mode 0600 even with umask 000" ||
    bad "mode with umask 000: $(mode "$tmp/umask.key")"

run 0 "--public" --public "$key"
[ "$out" = "$pub1" ] && ok "--public matches the key made" ||
    bad "--public differs" "$out vs $pub1"
run 0 "-p" -p "$key"
[ "$out" = "$pub1" ] && ok "-p matches" || bad "-p differs"

before=$(cat "$key")
run 1 "refuses to overwrite" -o "$key"
has "overwrite refusal explained" "$errout" "already exists"
has "overwrite refusal mentions --force" "$errout" "--force"
[ "$(cat "$key")" = "$before" ] && ok "existing key untouched" ||
    bad "existing key was changed"
[ -z "$out" ] && ok "nothing on stdout when refused" || bad "stdout: $out"

run 0 "--force replaces" --force -o "$key"
[[ "$out" =~ $pubre ]] && [ "$out" != "$pub1" ] &&
    ok "--force made a new key" || bad "--force output" "$out"
pub2=$out
[ "$(mode "$key")" = 600 ] && ok "replaced key mode 0600" ||
    bad "replaced key mode $(mode "$key")"
run 0 "--public after --force" --public "$key"
[ "$out" = "$pub2" ] && ok "--public matches the new key" || bad "--public after --force"
leftover=$(find "$tmp" -name 'server.key.*' | head -1)
[ -z "$leftover" ] && ok "no temporary file left" || bad "left $leftover"

for m in 644 640 604 660; do
	cp -p "$key" "$tmp/open.key"
	chmod "$m" "$tmp/open.key"
	run 1 "refuses mode 0$m" --public "$tmp/open.key"
	has "mode 0$m refusal says chmod 600" "$errout" "chmod 600 $tmp/open.key"
	[ -z "$out" ] && ok "no public key printed for mode 0$m" ||
	    bad "printed $out for mode 0$m"
	rm -f "$tmp/open.key"
done

run 1 "missing file" --public "$tmp/nope.key"
has "missing file named" "$errout" "$tmp/nope.key"

printf 'ed25519-secret:AAAA\n' >"$tmp/short.key"
chmod 600 "$tmp/short.key"
run 1 "damaged file" --public "$tmp/short.key"
has "damaged file explained" "$errout" "88-character base64"

printf '%s\n' "$pub1" >"$tmp/pub.key"
chmod 600 "$tmp/pub.key"
run 1 "public key given as key file" --public "$tmp/pub.key"
has "public key file explained" "$errout" "this is a public key"

run 1 "unwritable place" -o "$tmp/no/such/dir/k.key"
has "unwritable place explained" "$errout" "cannot create key file"

echo "test_keygen: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
