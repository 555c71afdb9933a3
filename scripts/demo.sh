#!/usr/bin/env bash
# The body of `make demo`: a whole Postern tunnel on loopback, explained.
#
# Makes a temporary directory with two keys and a relay.ini, starts
# postern-relay, a small web server and an echo service, postern-server
# exposing both, and postern-client forwarding local ports to them; then
# fetches a page through the tunnel with curl, pushes DEMO_MB MiB through
# the echo service comparing sha256 sums, shows what a refused tunnel
# looks like, and stops everything it started (also on Ctrl-C or error).
#
# Settings (environment): POSTERN_BIN (programs, default build),
# DEMO_MB (echo transfer size, default 64), DEMO_KEEP=1 (keep the
# temporary directory with the logs).
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${POSTERN_BIN:-build}
DEMO_MB=${DEMO_MB:-64}
WAIT=15		# seconds to wait for any program to become ready

tmp=$(mktemp -d "${TMPDIR:-/tmp}/postern-demo.XXXXXX")
pids=()
names=()

cleanup() {
	local i pid n rc
	set +e
	if [ ${#pids[@]} -gt 0 ]; then
		echo
		echo "== Stopping what the demo started"
		for i in "${!pids[@]}"; do
			kill -TERM "${pids[$i]}" 2>/dev/null
		done
		for i in "${!pids[@]}"; do
			pid=${pids[$i]}
			n=0
			while kill -0 "$pid" 2>/dev/null && [ $n -lt 50 ]; do
				sleep 0.1
				n=$((n + 1))
			done
			if kill -0 "$pid" 2>/dev/null; then
				kill -KILL "$pid" 2>/dev/null
				echo "${names[$i]} (pid $pid) did not stop on SIGTERM; killed it"
			else
				wait "$pid" 2>/dev/null
				rc=$?
				case ${names[$i]} in
				postern-*) echo "${names[$i]} (pid $pid) stopped, exit status $rc" ;;
				*) echo "${names[$i]} (pid $pid) stopped" ;;
				esac
			fi
		done
	fi
	if [ "${DEMO_KEEP:-0}" = 1 ]; then
		echo "Logs and keys kept in $tmp"
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say() { printf '\n== %s\n' "$*"; }
shown() { printf '  $ %s\n' "$*"; }

# start NAME LOGFILE COMMAND...: runs COMMAND in the background.
start() {
	local name=$1 log=$2
	shift 2
	shown "$* >$(basename "$log") 2>&1 &"
	"$@" >"$log" 2>&1 &
	pids+=($!)
	names+=("$name")
}

# wait_for LOGFILE REGEX WHAT: prints the first match of REGEX (grep -E -o)
# once it appears in LOGFILE; fails after $WAIT seconds or if the last
# started program died.
wait_for() {
	local log=$1 re=$2 what=$3 n=0 m
	while [ $n -lt $((WAIT * 10)) ]; do
		m=$(grep -E -o "$re" "$log" 2>/dev/null | head -n 1 || true)
		if [ -n "$m" ]; then
			printf '%s\n' "$m"
			return 0
		fi
		if ! kill -0 "${pids[-1]}" 2>/dev/null; then
			echo "demo: ${names[-1]} exited before $what; its log:" >&2
			sed 's/^/    /' "$log" >&2
			return 1
		fi
		sleep 0.1
		n=$((n + 1))
	done
	echo "demo: no $what within $WAIT s; log $log:" >&2
	sed 's/^/    /' "$log" >&2
	return 1
}

indent() { sed 's/^/    /'; }

missing=()
for p in postern-keygen postern-relay postern-server postern-client; do
	[ -x "$BIN/$p" ] || missing+=("$p")
done

say "Keys"
echo "Each proxy has an Ed25519 key; the relay's config lists only public keys."
if [ -x "$BIN/postern-keygen" ]; then
	shown "postern-keygen -o nas.key"
	nas_pub=$("$BIN/postern-keygen" -o "$tmp/nas.key" 2>"$tmp/keygen.log")
	echo "    $nas_pub"
	shown "postern-keygen -o laptop.key"
	laptop_pub=$("$BIN/postern-keygen" -o "$tmp/laptop.key" 2>>"$tmp/keygen.log")
	echo "    $laptop_pub"
	echo "Both files are mode $(stat -c %a "$tmp/nas.key"): the programs refuse a key others can read."
else
	echo "postern-keygen is not built ($BIN/postern-keygen missing)."
	nas_pub="ed25519:(not built)"
	laptop_pub="ed25519:(not built)"
fi

say "relay.ini"
cat >"$tmp/relay.ini" <<EOF
[relay]
listen = 127.0.0.1:0
status = on

[server nas]
key = $nas_pub

[client laptop]
key = $laptop_pub
allow = nas/*
EOF
indent <"$tmp/relay.ini"

if [ ${#missing[@]} -gt 0 ]; then
	echo
	echo "NOT DEMONSTRATED: the tunnel itself. These programs are not built in $BIN/"
	echo "yet: ${missing[*]}. What works today is shown above; run 'make demo'"
	echo "again once they build."
	exit 1
fi

say "Local services (stand-ins for ssh or a NAS web interface)"
mkdir -p "$tmp/www"
cat >"$tmp/www/index.html" <<'EOF'
<!doctype html>
<title>behind the firewall</title>
<p>Hello from a web server that only makes outbound connections.</p>
EOF
start "web server" "$tmp/web.log" python3 -u -m http.server --bind 127.0.0.1 \
    --directory "$tmp/www" 0
web_port=$(wait_for "$tmp/web.log" 'port [0-9]+' "the web server's port")
web_port=${web_port#port }
echo "    a web server on 127.0.0.1:$web_port"

cat >"$tmp/echo.py" <<'EOF'
# Echo service: sends back every byte; half-closes after the client's EOF.
import socket, threading
ls = socket.socket()
ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0))
ls.listen(16)
print("echo listening on port %d" % ls.getsockname()[1], flush=True)
def serve(c):
    with c:
        while True:
            d = c.recv(1 << 18)
            if not d:
                c.shutdown(socket.SHUT_WR)
                return
            c.sendall(d)
while True:
    c, _ = ls.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
EOF
start "echo service" "$tmp/echo.log" python3 -u "$tmp/echo.py"
echo_port=$(wait_for "$tmp/echo.log" 'port [0-9]+' "the echo service's port")
echo_port=${echo_port#port }
echo "    an echo service on 127.0.0.1:$echo_port"
down_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "    and nothing on 127.0.0.1:$down_port (to show a refused tunnel)"

say "The relay (public, in real life)"
start "postern-relay" "$tmp/relay.log" "$BIN/postern-relay" --config \
    "$tmp/relay.ini" --listen 127.0.0.1:0
relay=$(wait_for "$tmp/relay.log" 'http://[0-9.]+:[0-9]+' "the relay's 'listening on' line")
echo "    relay at $relay"

say "The server-proxy (next to the services; only makes outbound HTTP requests)"
start "postern-server" "$tmp/server.log" "$BIN/postern-server" --relay "$relay" \
    --name nas --key "$tmp/nas.key" \
    --expose "web=tcp://127.0.0.1:$web_port" \
    --expose "echo=tcp://127.0.0.1:$echo_port" \
    --expose "down=tcp://127.0.0.1:$down_port"
n=0
listens=0
while [ $n -lt $((WAIT * 10)) ]; do
	listens=$(curl -s --max-time 2 "$relay/v1/status" |
	    grep -o '"listens": *[0-9]*' | grep -o '[0-9]*$' || true)
	[ "${listens:-0}" -ge 3 ] && break
	kill -0 "${pids[-1]}" 2>/dev/null || break
	sleep 0.1
	n=$((n + 1))
done
if [ "${listens:-0}" -lt 3 ]; then
	echo "demo: the server-proxy did not register its 3 ports within $WAIT s; its log:" >&2
	indent <"$tmp/server.log" >&2
	exit 1
fi
shown "curl $relay/v1/status"
curl -s --max-time 5 "$relay/v1/status" | indent
echo
echo "'listens' counts the long-poll calls the server-proxy keeps waiting at the"
echo "relay for its exposed ports: a client's connect is paired with one at once."

say "The client-proxy (on the laptop)"
start "postern-client" "$tmp/client.log" "$BIN/postern-client" --relay "$relay" \
    --key "$tmp/laptop.key" -L 127.0.0.1:0:nas/web -L 127.0.0.1:0:nas/echo \
    -L 127.0.0.1:0:nas/down
web_local=$(wait_for "$tmp/client.log" 'listening on 127\.0\.0\.1:[0-9]+ -> nas/web' "the nas/web forward")
echo_local=$(wait_for "$tmp/client.log" 'listening on 127\.0\.0\.1:[0-9]+ -> nas/echo' "the nas/echo forward")
down_local=$(wait_for "$tmp/client.log" 'listening on 127\.0\.0\.1:[0-9]+ -> nas/down' "the nas/down forward")
echo "    $web_local"
echo "    $echo_local"
echo "    $down_local"
web_local=$(sed 's/.*:\([0-9]*\) ->.*/\1/' <<<"$web_local")
echo_local=$(sed 's/.*:\([0-9]*\) ->.*/\1/' <<<"$echo_local")
down_local=$(sed 's/.*:\([0-9]*\) ->.*/\1/' <<<"$down_local")

say "A web page through the tunnel"
shown "curl http://127.0.0.1:$web_local/"
t0=$(date +%s.%N)
if ! page=$(curl -sS --max-time 20 "http://127.0.0.1:$web_local/"); then
	echo "demo: curl through the tunnel failed; client log:" >&2
	indent <"$tmp/client.log" >&2
	exit 1
fi
t1=$(date +%s.%N)
printf '%s\n' "$page" | indent
echo "Fetched ${#page} bytes in $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", b - a }') s: curl -> postern-client -> relay -> postern-server -> web server."

say "$DEMO_MB MiB through the echo service, both directions at once"
cat >"$tmp/push.py" <<'EOF'
import hashlib, os, socket, sys, threading, time
port, mb = int(sys.argv[1]), int(sys.argv[2])
total = mb << 20
block = os.urandom(1 << 20)
s = socket.create_connection(("127.0.0.1", port), timeout=60)
got = hashlib.sha256()
n = [0]
def reader():
    while True:
        d = s.recv(1 << 20)
        if not d:
            return
        got.update(d)
        n[0] += len(d)
t = threading.Thread(target=reader)
t0 = time.monotonic()
t.start()
sent = hashlib.sha256()
for i in range(mb):
    chunk = bytes([i & 255]) + block[1:]
    sent.update(chunk)
    s.sendall(chunk)
s.shutdown(socket.SHUT_WR)
t.join(120)
dt = time.monotonic() - t0
s.close()
print("sent     %d bytes, sha256 %s" % (total, sent.hexdigest()))
print("received %d bytes, sha256 %s" % (n[0], got.hexdigest()))
print("%.2f s, %.1f MiB/s each way" % (dt, mb / dt))
ok = n[0] == total and got.digest() == sent.digest()
print("The sums match: every byte came back intact." if ok else
      "MISMATCH: the bytes that came back differ from those sent.")
sys.exit(0 if ok else 1)
EOF
shown "python3 push.py $echo_local $DEMO_MB   # writes random data, reads the echo"
if ! python3 "$tmp/push.py" "$echo_local" "$DEMO_MB" | indent; then
	echo "demo: the echo transfer failed; client log:" >&2
	indent <"$tmp/client.log" >&2
	exit 1
fi

say "A tunnel whose target is down"
shown "curl http://127.0.0.1:$down_local/"
curl -sS --max-time 10 "http://127.0.0.1:$down_local/" 2>&1 | indent || true
sleep 0.5
echo "The client-proxy closed the socket and logged why:"
grep -E 'nas/down' "$tmp/client.log" | grep -v 'listening on' | indent || true

say "What the client-proxy logged, one line per tunnel"
grep -E 'tunnel (open|closed)' "$tmp/client.log" | indent || true
echo
echo "And the server-proxy, for the same tunnels (the IDs are the relay's):"
grep -E 'tunnel (open|closed)|refusing' "$tmp/server.log" | indent || true
echo
shown "curl $relay/v1/status"
curl -s --max-time 5 "$relay/v1/status" | indent
echo
echo
echo "The tunnel works. Everything ran on 127.0.0.1; in real life the relay is"
echo "public and the two proxies are on machines that only make outbound"
echo "HTTP(S) requests. See docs/quickstart.md."
