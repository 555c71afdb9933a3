"""Real faults: cut and silenced HTTP connections, a relay that dies, a
server-proxy that freezes, and abusive callers.  Each test checks that the
bytes that went in came out (sha256), or that a tunnel that cannot go on
ends promptly and says why, and prints one line of figures starting with
"faults:" for the record.

The contract these tests hold the programs to is docs/protocol.md,
"Resuming tunnels": a tunnel survives its HTTP connections being cut
(generations, seq/ack re-sending), a silent path is detected by
peer_timeout, a side that stays away longer than resume_grace ends the
tunnel, a restarted relay that lost a tunnel answers 404
unknown_connection, and the newest server-proxy registration wins.

Faults are made by tests/integration/faultproxy.py, a forwarder put between
a proxy and the relay (self-test: python3 tests/integration/faultproxy.py).

Settings (environment):
  POSTERN_IT_FAULT_MB  MiB each way per tunnel in the cut tests (64)

The relay restart test of test_limits.py (proxies come back after a
restart) is extended here with tunnels open across the restart; the
abuse tests add to test_limits.py's limits and test_wire.py's bad frames
(which covers garbage at the start of a body)."""

import base64
import calendar
import ctypes
import ctypes.util
import hashlib
import http.client
import json
import os
import random
import re
import selectors
import signal
import socket
import threading
import time

from faultproxy import FaultProxy
from harness import (Env, Pattern, TestFailure, check, connect, echo_once,
                     echo_round, free_port, proc_rss_kib, timeout,
                     wait_closed, wait_until)
from rawclient import Connect, Stream, conn_frame, data_frame, frame
from services import Echo, echo_duplex

MIB = 1 << 20
FAULT_MB = int(os.environ.get("POSTERN_IT_FAULT_MB", "64"))
RSS_BOUND_KIB = 64 * 1024


# -- helpers ------------------------------------------------------------------

class Signer:
    """Signs relay requests in-process (libsodium through ctypes), for the
    tests that send thousands of them: postern-sign costs a process per
    request.  Checked against postern-sign by check_against()."""

    def __init__(self, keyfile):
        sk = None
        with open(keyfile) as f:
            for line in f:
                if line.startswith("ed25519-secret:"):
                    sk = base64.b64decode(line.split(":", 1)[1].strip())
        check(sk is not None and len(sk) == 64,
              "%s holds no 64-byte ed25519-secret line" % keyfile)
        name = ctypes.util.find_library("sodium") or "libsodium.so.23"
        self.lib = ctypes.CDLL(name)
        check(self.lib.sodium_init() >= 0, "sodium_init failed")
        self.sk = ctypes.create_string_buffer(sk, 64)
        self.pub = "ed25519:" + base64.b64encode(sk[32:]).decode()

    def headers(self, method, path, ts=None, nonce=None):
        ts = str(int(time.time() if ts is None else ts))
        if nonce is None:
            nonce = base64.urlsafe_b64encode(os.urandom(16)).decode() \
                .rstrip("=")
        msg = ("postern-v1\n%s\n%s\n%s\n%s" % (method, path, ts, nonce)) \
            .encode()
        sig = ctypes.create_string_buffer(64)
        rc = self.lib.crypto_sign_detached(sig, None, msg,
                                           ctypes.c_ulonglong(len(msg)),
                                           self.sk)
        check(rc == 0, "crypto_sign_detached failed")
        return {"Postern-Key": self.pub, "Postern-Timestamp": ts,
                "Postern-Nonce": nonce,
                "Postern-Signature": base64.b64encode(sig.raw).decode()}

    def check_against(self, env, key_name):
        path = "/v1/s/nas/listen/x"
        ts = int(time.time())
        nonce = "AAAAAAAAAAAAAAAAAAAAAA"
        theirs = env.sign(key_name, path, timestamp=ts, nonce=nonce)
        ours = self.headers("POST", path, ts=ts, nonce=nonce)
        check(theirs == ours, "in-process signing differs from "
              "postern-sign: %r vs %r" % (ours, theirs))


def _topology(env, exposes, settings=None, server_args=(), client_args=(),
              server_via=None, client_via=None, listen="127.0.0.1:0"):
    """Keys nas + laptop, relay, server-proxy 'nas', client-proxy forwarding
    nas/NAME for each exposed NAME.  server_via / client_via: a FaultProxy
    the proxy reaches the relay through.  Returns (server, client, {name:
    local port})."""
    env.keygen("nas")
    env.keygen("laptop")
    env.write_relay_ini({"nas": ("nas", None)},
                        {"laptop": ("laptop", "nas/*")}, settings)
    env.start_relay(listen=listen)
    server = env.start_server("nas", "nas", exposes, args=list(server_args),
                              relay_url=server_via.url if server_via
                              else None)
    client, ports = env.start_client(
        "laptop", ["nas/" + n for n in exposes], args=list(client_args),
        relay_url=client_via.url if client_via else None)
    return server, client, dict((k.split("/", 1)[1], v)
                                for k, v in ports.items())


def _via(env, seed, name):
    """A pass-through FaultProxy in front of the relay."""
    return env.service(FaultProxy((env.relay.host, env.relay.port),
                                  seed=seed, name=name))


def _tunnel_ids(proc, start=0):
    return re.findall(r"tunnel open id=(\S+)", proc.log()[start:])


def _closed_line(proc, tid, start=0):
    m = re.search(r"[^\n]*tunnel closed id=%s\b[^\n]*" % re.escape(tid),
                  proc.log()[start:])
    return m.group(0) if m else None


def _ended(env, client, tid, t0):
    """Waits for the relay to count 0 tunnels, by 16 s after t0, and for
    the client's 'tunnel closed' line of tid: (seconds from t0 to the
    relay's 0, the line)."""
    env.relay.wait_status(lambda st: st.get("tunnels") == 0,
                          max(1, 16 - (time.monotonic() - t0)),
                          "the relay to count 0 tunnels")
    t_relay = time.monotonic() - t0
    line = wait_until(lambda: _closed_line(client, tid), 5,
                      "client 'tunnel closed id=%s'" % tid)
    return t_relay, line


def _log_time(line):
    """Seconds (epoch) of a log line's ISO timestamp."""
    m = re.match(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)\.(\d{3})Z", line)
    check(m, "no timestamp at the start of %r" % line[:80])
    return calendar.timegm(time.strptime(m.group(1), "%Y-%m-%dT%H:%M:%S")) \
        + int(m.group(2)) / 1000.0


class RunningEcho:
    """One echo tunnel kept busy in a thread for the length of a test: it
    writes a pattern piece, reads the same number of bytes back and
    compares them (so a lost, doubled or reordered byte is caught where it
    happens), over and over until finish().  If the tunnel ends, `ended`
    says how ("reset", "eof", ...) and when."""

    def __init__(self, port, seed=4242, piece=32 * 1024):
        self.sock = connect(port, timeout=10)
        self.pat = random.Random(seed)
        self.piece = piece
        self.moved = 0
        self.last = time.monotonic()
        self.error = None
        self.ended = None
        self.sent_h = hashlib.sha256()
        self.recv_h = hashlib.sha256()
        self.stopping = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        s = self.sock
        s.settimeout(0.5)
        while not self.stopping.is_set():
            d = self.pat.randbytes(self.pat.randint(1, self.piece))
            try:
                s.sendall(d)
            except OSError as e:
                self._end("reset" if isinstance(
                    e, (ConnectionResetError, BrokenPipeError)) else repr(e))
                return
            self.sent_h.update(d)
            got = bytearray()
            while len(got) < len(d):
                try:
                    r = s.recv(len(d) - len(got))
                except socket.timeout:
                    if self.stopping.is_set() and self.ended is None and \
                            time.monotonic() - self.last > 30:
                        self._end("stuck")
                        return
                    continue
                except OSError as e:
                    self._end("reset" if isinstance(
                        e, ConnectionResetError) else repr(e))
                    return
                if not r:
                    self._end("eof")
                    return
                got += r
                self.last = time.monotonic()
            self.recv_h.update(got)
            if bytes(got) != d:
                self.error = ("echo piece %d bytes at offset %d came back "
                              "different" % (len(d), self.moved))
                return
            self.moved += len(d)

    def _end(self, how):
        self.ended = (how, time.monotonic())

    def wait_moved(self, n, timeout, what):
        start = self.moved
        wait_until(lambda: self.moved - start >= n or self.error or
                   self.ended, timeout, what)
        check(self.error is None, "background echo: %s" % self.error)
        check(self.ended is None, "background echo tunnel ended (%s) while "
              "waiting for %s" % (self.ended and self.ended[0], what))

    def finish(self, timeout=20):
        """Stops writing, half-closes, reads to EOF; fails unless the
        tunnel carried everything intact and ends cleanly."""
        self.stopping.set()
        self.t.join(timeout)
        check(not self.t.is_alive(), "background echo thread stuck")
        check(self.error is None, "background echo: %s" % self.error)
        check(self.ended is None, "background echo tunnel ended (%s) "
              "after %d bytes" % (self.ended and self.ended[0], self.moved))
        self.sock.shutdown(socket.SHUT_WR)
        self.sock.settimeout(timeout)
        rest = b""
        while True:
            try:
                d = self.sock.recv(65536)
            except OSError as e:
                raise TestFailure("background echo: %r at the end" % e)
            if not d:
                break
            rest += d
        self.sock.close()
        check(rest == b"", "background echo: %d extra bytes at the end"
              % len(rest))
        check(self.sent_h.digest() == self.recv_h.digest(),
              "background echo: sha256 differs")
        return self.moved


class RssWatch:
    """Samples a process's RSS every 0.2 s in a thread; peak() - base."""

    def __init__(self, pid):
        self.pid = pid
        self.base = proc_rss_kib(pid)
        self.max = self.base
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _run(self):
        while not self.stop_ev.wait(0.2):
            try:
                self.max = max(self.max, proc_rss_kib(self.pid))
            except (OSError, TestFailure):
                return

    def growth(self):
        try:
            self.max = max(self.max, proc_rss_kib(self.pid))
        except (OSError, TestFailure):
            pass
        return self.max - self.base

    def stop(self):
        self.stop_ev.set()


def _fault_stats(*fps):
    cuts = sum(fp.stats()["cuts"] for fp in fps)
    return cuts, ", ".join("%s %s" % (fp.name, fp.stats()) for fp in fps)


@timeout(60)
def test_faults_forwarder(bindir):
    """The forwarder itself (faultproxy.py's self-test): bytes intact in
    pass mode, over 100 MiB/s, cuts by FIN and by reset within their
    lifetime, blackhole holds then delivers, refuse refuses."""
    import faultproxy
    check(faultproxy._selftest() == 0, "faultproxy self-test failed (see "
          "the FAIL lines above)")


# -- 1. connections cut every 100-500 ms ------------------------------------

def _cut_test(bindir, name, n, each):
    with Env(bindir, name) as env:
        echo = env.service(Echo())
        env.keygen("nas")
        env.keygen("laptop")
        env.write_relay_ini({"nas": ("nas", None)},
                            {"laptop": ("laptop", "nas/*")},
                            {"max_pending_connects": "64"})
        env.start_relay()
        fs = _via(env, 11, "fp-server")
        fc = _via(env, 12, "fp-client")
        server = env.start_server("nas", "nas", {"echo": echo.addr},
                                  relay_url=fs.url)
        client, ports = env.start_client("laptop", ["nas/echo"],
                                         relay_url=fc.url)
        lport = ports["nas/echo"]
        # The tunnels open on a quiet path (opening is not what is tested
        # here: a connect cut before the server accepted has nothing to
        # resume), then every HTTP connection of both proxies is cut.
        socks = []
        for i in range(n):
            s = connect(lport, timeout=10)
            echo_round(s, b"hello %d" % i)
            socks.append(s)
        env.relay.wait_status(lambda st: st.get("tunnels") == n, 10,
                              "the relay to count %d tunnels" % n)
        ids = _tunnel_ids(client)
        check(len(ids) == n, "client logged %d tunnel open lines, expected "
              "%d" % (len(ids), n))
        fs.cut(100, 500, how="mix")
        fc.cut(100, 500, how="mix")
        t0 = time.monotonic()
        # Writes of mixed sizes, one RNG for all the sockets.
        wr = random.Random(99)

        def sizes():
            return wr.choice((1000, 65536, 1 << 18))
        plans = [(500 + i, each, sizes) for i in range(n)]

        def on_stall():
            return "; %s; client log tail: %s" % (
                _fault_stats(fs, fc)[1], client.log()[-800:])
        total = echo_duplex(socks, plans, timeout=150, stall=40,
                            on_stall=on_stall)
        dt = time.monotonic() - t0
        fs.pass_through()
        fc.pass_through()
        cuts, detail = _fault_stats(fs, fc)
        check(cuts >= max(5, int(dt / 0.5)), "only %d cuts in %.1f s: "
              "the forwarders did not cut" % (cuts, dt))
        env.relay.wait_status(lambda st: st.get("tunnels") == 0, 30,
                              "the relay to count 0 tunnels after the "
                              "transfers")
        resumed = len(re.findall(r"tunnel id=\S+ [^\n]*(?:resum|generation)",
                                 client.log() + server.log(), re.I))
        print("faults: tunnels=%d cuts=%d bytes=%d seconds=%.1f "
              "rate=%.1fMiB/s resume_notes=%d"
              % (n, cuts, 2 * total, dt, 2 * total / MIB / dt, resumed))
        print("forwarders: %s" % detail)
        # Every byte arrived, so every tunnel ended cleanly, on both sides.
        for tid in ids:
            for p in (client, server):
                line = wait_until(lambda: _closed_line(p, tid), 10,
                                  "%s 'tunnel closed id=%s'" % (p.name, tid))
                print("%s: %s" % (p.name, line))
                check(re.search(r"reason=done\b", line),
                      "tunnel %s carried every byte but %s says it did not "
                      "end cleanly: %s" % (tid, p.name, line))


@timeout(180)
def test_faults_cuts_one(bindir):
    """One echo tunnel, both proxies reaching the relay through forwarders
    that cut every connection after 100-500 ms (FIN or reset at random):
    4 x FAULT_MB MiB each way (one tunnel alone moves 64 MiB in well under
    a second, too few cuts) arrive intact, the tunnel ends cleanly on both
    sides, the relay counts 0 tunnels afterwards."""
    _cut_test(bindir, "cuts1", 1, 4 * FAULT_MB * MIB)


@timeout(180)
def test_faults_cuts_eight(bindir):
    """Eight concurrent echo tunnels through the cutting forwarders,
    FAULT_MB MiB each way each, all intact."""
    _cut_test(bindir, "cuts8", 8, FAULT_MB * MIB)


# -- 2. the relay dies and comes back -----------------------------------------

@timeout(120)
def test_faults_relay_restart(bindir):
    """SIGKILL the relay with two tunnels open (one busy, one idle) and
    start it again on the same port: each client socket is closed (reset
    or FIN, not left hanging), the client log names each tunnel and says
    the relay lost it (404 unknown_connection on re-attach), the
    server-proxy re-registers (its log says so) and a new tunnel works
    within 10 s of the restart."""
    with Env(bindir, "relaykill") as env:
        echo = env.service(Echo())
        addr = "127.0.0.1:%d" % free_port()
        server, client, lp = _topology(env, {"echo": echo.addr},
                                       listen=addr)
        idle = connect(lp["echo"])
        echo_round(idle, b"idle tunnel")
        busy = RunningEcho(lp["echo"])
        busy.wait_moved(2 * MIB, 20, "the busy tunnel to move 2 MiB")
        ids = _tunnel_ids(client)
        check(len(ids) == 2, "client logged %d tunnels open: %s"
              % (len(ids), ids))
        cmark = client.log_size()
        smark = server.log_size()
        env.relay.proc.signal(signal.SIGKILL)
        env.relay.proc.wait_exit(5)
        t_kill = time.monotonic()
        env.start_relay(listen=addr, name="relay2")
        t_up = time.monotonic()
        # A new tunnel, as soon as the server-proxy is back.
        t_new = None
        while time.monotonic() - t_up < 15:
            try:
                echo_once(lp["echo"], b"after the restart", timeout=3)
                t_new = time.monotonic() - t_up
                break
            except (OSError, TestFailure):
                time.sleep(0.2)
        check(t_new is not None, "no tunnel worked within 15 s of the relay "
              "restart; server log tail: %s" % server.log()[-800:])
        check(t_new < 10, "the first tunnel after the restart worked only "
              "after %.1f s" % t_new)
        m = server.wait_log(r"[^\n]*reachable again[^\n]*", 10, start=smark,
                            what="the server-proxy saying the relay is "
                            "reachable again")
        print("server: %s" % m.group(0))
        # The two old tunnels: gone at the relay, and said so.
        t_wait = time.monotonic()
        how_idle, dt_idle, _ = wait_closed(idle, 20)
        idle.close()
        idle_at = t_wait + dt_idle - t_kill
        check(how_idle != "open", "the idle tunnel's client socket was "
              "still open 20 s after the relay restart")
        wait_until(lambda: busy.ended or busy.error, 20,
                   "the busy tunnel's client socket to close")
        check(busy.error is None, "busy tunnel: %s" % busy.error)
        busy.stopping.set()
        lines = []
        for tid in ids:
            line = wait_until(lambda: _closed_line(client, tid, cmark), 20,
                              "client 'tunnel closed id=%s'" % tid)
            lines.append(line)
            check(re.search(r"unknown_connection|\blost\b", line),
                  "the client log does not say the relay lost tunnel %s: %s"
                  % (tid, line))
        check(busy.ended[0] in ("reset", "eof"),
              "the busy tunnel's socket ended by %s" % busy.ended[0])
        print("faults: tunnels=2 restart_to_new_tunnel=%.2fs "
              "idle_closed=%s@%.1fs busy_closed=%s@%.1fs (after the kill)"
              % (t_new, how_idle, idle_at, busy.ended[0],
                 busy.ended[1] - t_kill))
        for ln in lines:
            print("client: %s" % ln)
        check(server.alive() and client.alive(),
              "a proxy exited over the relay restart")


# -- 3. the server-proxy freezes (half-open), a new one takes over ---------

@timeout(120)
def test_faults_server_frozen(bindir):
    """SIGSTOP the server-proxy mid-tunnel (keepalive 1 s, peer_timeout
    3 s, resume_grace 3 s everywhere): the tunnel ends within 15 s (bound:
    peer_timeout + resume_grace + the client's re-attach, about 7-8 s), the
    client's socket is closed, the relay counts 0 tunnels.  Meanwhile a
    second postern-server with the same key takes over at once (newest
    registration wins: new connects go to it, never 'name already in
    use').  SIGCONT the first: it logs that it was replaced and exits 1,
    and the second keeps serving."""
    pargs = ["--keepalive", "1", "--peer-timeout", "3", "--resume-grace", "3"]
    with Env(bindir, "frozen") as env:
        echo = env.service(Echo())
        server1, client, lp = _topology(
            env, {"echo": echo.addr},
            settings={"peer_timeout": "3", "resume_grace": "3"},
            server_args=pargs, client_args=pargs)
        s = connect(lp["echo"])
        echo_round(s, b"before the freeze")
        env.relay.wait_status(lambda st: st.get("tunnels") == 1, 5,
                              "the relay to count 1 tunnel")
        tid = _tunnel_ids(client)[0]
        server1.signal(signal.SIGSTOP)
        t0 = time.monotonic()
        server2 = env.start_server("nas", "nas", {"echo": echo.addr},
                                   args=pargs, wait=False,
                                   proc_name="server-nas-2")
        server2.wait_log(r"serving nas/echo", what="'serving nas/echo'")
        time.sleep(0.5)      # its listens reach the relay
        t1 = time.monotonic()
        echo_once(lp["echo"], b"served by the new instance", timeout=8)
        t_new = time.monotonic() - t1
        server2.wait_log(r"tunnel open id=", 5,
                         what="the new instance serving the new tunnel")
        check(t_new < 3, "the new instance served a connect only after "
              "%.1f s" % t_new)
        # The frozen tunnel ends by the timeouts.
        how, _, _ = wait_closed(s, max(0.5, 15 - (time.monotonic() - t0)))
        t_end = time.monotonic() - t0
        s.close()
        check(how != "open", "the client socket of the frozen server's "
              "tunnel was still open 15 s after the SIGSTOP")
        t_relay, line = _ended(env, client, tid, t0)
        for p in (env.relay.proc, client, server2):
            check("already in use" not in p.log(),
                  "%s says 'already in use'" % p.name)
        # The first instance wakes up: replaced, it leaves.
        server1.expect_fail = True
        server1.signal(signal.SIGCONT)
        m = server1.wait_log(r"[^\n]*another postern-server with the same "
                             r"key took over server 'nas'[^\n]*", 10,
                             what="the replaced instance saying so")
        rc = server1.wait_exit(15)
        check(rc == 1, "the replaced instance exited with %s, expected 1"
              % rc)
        echo_once(lp["echo"], b"still served by the new instance")
        check(server2.alive() and "took over" not in server2.log(),
              "the new instance was replaced in turn when the old one woke "
              "up; its log: %s" % server2.log()[-600:])
        print("faults: frozen tunnel closed (%s) after %.1f s, relay 0 "
              "tunnels after %.1f s, takeover served a connect in %.2f s"
              % (how, t_end, t_relay, t_new))
        print("client: %s" % line)
        print("old server: %s" % m.group(0))


@timeout(90)
def test_faults_replaced_drain(bindir):
    """A second postern-server with the same key starts while the first is
    alive and carries two tunnels: the first logs that it was replaced and
    stops listening (new connects go to the second), its tunnels keep
    working; one that ends by itself ends cleanly, the other is reset when
    --replaced-grace (2 s) runs out (reason=replaced); then the first
    exits with status 1.  The client learns of the reset tunnel when the
    relay gives up on the server side (resume_grace, 2 s here)."""
    with Env(bindir, "replaced") as env:
        echo = env.service(Echo())
        server1, client, lp = _topology(env, {"echo": echo.addr},
                                        settings={"resume_grace": "2"},
                                        server_args=["--replaced-grace",
                                                     "2"])
        a = connect(lp["echo"])
        echo_round(a, b"tunnel a")
        b = connect(lp["echo"])
        echo_round(b, b"tunnel b")
        ids = _tunnel_ids(server1)
        check(len(ids) == 2, "server 1 logged %d tunnels" % len(ids))
        server1.expect_fail = True
        server2 = env.start_server("nas", "nas", {"echo": echo.addr},
                                   wait=False, proc_name="server-nas-2")
        m = server1.wait_log(r"[^\n]*another postern-server with the same "
                             r"key took over server 'nas'[^\n]*", 10,
                             what="the first instance saying it was "
                             "replaced")
        t0 = time.monotonic()
        echo_once(lp["echo"], b"new connect", timeout=8)
        server2.wait_log(r"tunnel open id=", 5,
                         what="the new instance serving the new connect")
        # The old tunnels still work during replaced_grace.
        echo_round(a, b"a still works")
        echo_round(b, b"b still works")
        a.shutdown(socket.SHUT_WR)
        rest, how_a = b"", None
        a.settimeout(5)
        while True:
            d = a.recv(100)
            if not d:
                how_a = "eof"
                break
            rest += d
        a.close()
        how_b, dt_b, _ = wait_closed(b, 10)
        t_b = time.monotonic() - t0
        b.close()
        check(how_b != "open", "tunnel b's client socket was still open 10 s "
              "after the takeover (replaced_grace 2 s + resume_grace 2 s)")
        rc = server1.wait_exit(10)
        t_exit = _log_time(server1.wait_log(
            r"[^\n]*no tunnels left; exiting", 1,
            what="'no tunnels left; exiting'").group(0)) - \
            _log_time(m.group(0))
        check(rc == 1, "the replaced instance exited with %s, expected 1"
              % rc)
        line_a = _closed_line(server1, ids[0])
        line_b = _closed_line(server1, ids[1])
        check(line_a and re.search(r"reason=done\b", line_a),
              "tunnel a, ended by its client, did not end cleanly: %s"
              % line_a)
        check(line_b and re.search(r"reason=replaced\b", line_b),
              "tunnel b was not ended with reason=replaced: %s" % line_b)
        t_rep = _log_time(line_b) - _log_time(m.group(0))
        check(1.8 <= t_rep <= 3.5, "the replaced instance reset tunnel b "
              "%.1f s after the takeover, replaced_grace is 2 s" % t_rep)
        check(t_b <= 8, "tunnel b's client socket closed %.1f s after the "
              "takeover (replaced_grace 2 s + resume_grace 2 s)" % t_b)
        echo_once(lp["echo"], b"served by the new instance")
        check(server2.alive(), "the new instance exited")
        print("faults: replaced: tunnel a %s, tunnel b reset by the old "
              "instance after %.1f s, its client socket %s after %.1f s, "
              "exit status %d after %.1f s"
              % (how_a, t_rep, how_b, t_b, rc, t_exit))
        print("old server: %s" % m.group(0))


# -- 4. a blackholed path between client-proxy and relay -------------------

def _blackhole(env, grace):
    """keepalive 1 s, peer_timeout 3 s and resume_grace `grace` on the
    relay and both proxies; the client-proxy reaches the relay through a
    forwarder, which goes silent once a busy echo tunnel has moved 2 MiB.
    Returns (forwarder, client, local port, echo, tunnel ID, client log
    mark, time of the silence)."""
    pargs = ["--keepalive", "1", "--peer-timeout", "3", "--resume-grace",
             str(grace)]
    echo = env.service(Echo())
    env.keygen("nas")
    env.keygen("laptop")
    env.write_relay_ini({"nas": ("nas", None)},
                        {"laptop": ("laptop", "nas/*")},
                        {"peer_timeout": "3", "resume_grace": str(grace)})
    env.start_relay()
    fc = _via(env, 21, "fp-client")
    env.start_server("nas", "nas", {"echo": echo.addr}, args=pargs)
    client, ports = env.start_client("laptop", ["nas/echo"], args=pargs,
                                     relay_url=fc.url)
    lport = ports["nas/echo"]
    bg = RunningEcho(lport)
    bg.wait_moved(2 * MIB, 20, "the tunnel to move 2 MiB")
    tid = _tunnel_ids(client)[0]
    mark = client.log_size()
    fc.blackhole()
    return fc, client, lport, bg, tid, mark, time.monotonic()


@timeout(120)
def test_faults_blackhole_resume(bindir):
    """The path between client-proxy and relay goes silent (no FIN, no
    reset) for 6 s: peer_timeout (3 s) detects it on both sides, and once
    the path is back the tunnel resumes: every byte intact, within a few
    seconds, and it ends cleanly."""
    with Env(bindir, "blackhole-resume") as env:
        fc, client, lport, bg, tid, mark, t0 = _blackhole(env, 20)
        moved0 = bg.moved
        # Detected: the client-proxy notes the broken stream (peer_timeout)
        # while the path is still silent.
        m = client.wait_log(r"[^\n]*tunnel id=%s\b[^\n]*" % re.escape(tid),
                            8, start=mark, what="a note that tunnel %s's "
                            "stream broke (peer_timeout)" % tid)
        t_detect = time.monotonic() - t0
        check(t_detect >= 2.0, "the break was noted %.1f s into the "
              "silence, before peer_timeout (3 s)" % t_detect)
        time.sleep(max(0, 6 - (time.monotonic() - t0)))
        check(bg.moved - moved0 < 4 * MIB, "%d bytes moved through a "
              "blackholed path" % (bg.moved - moved0))
        fc.pass_through()
        t1 = time.monotonic()
        bg.wait_moved(2 * MIB, 15, "the tunnel to move again after the path "
                      "came back")
        t_resume = time.monotonic() - t1
        total = bg.finish()
        env.relay.wait_status(lambda st: st.get("tunnels") == 0, 15,
                              "the relay to count 0 tunnels")
        line = wait_until(lambda: _closed_line(client, tid), 10,
                          "client 'tunnel closed id=%s'" % tid)
        check(re.search(r"reason=done\b", line), "the resumed tunnel did not "
              "end cleanly: %s" % line)
        print("faults: blackhole 6 s: detected after %.1f s (%s), moving "
              "again %.2f s after the path came back, %d bytes intact"
              % (t_detect, m.group(0).strip(), t_resume, total))
        print("forwarder: %s" % fc.stats())


@timeout(120)
def test_faults_blackhole_ends(bindir):
    """The path between client-proxy and relay goes silent for good: the
    tunnel ends after peer_timeout + resume_grace (3 + 4 s; asserted < 15
    s), the TCP client's socket is closed (not left hanging), the relay
    counts 0 tunnels, and once the path is back the client-proxy serves
    new tunnels."""
    with Env(bindir, "blackhole-ends") as env:
        fc, client, lport, bg, tid, mark, t0 = _blackhole(env, 4)
        wait_until(lambda: bg.ended or bg.error, 20,
                   "the tunnel's client socket to close")
        check(bg.error is None, "before the end: %s" % bg.error)
        how, at = bg.ended
        t_client = at - t0
        check(how in ("reset", "eof"), "the client socket ended by %s" % how)
        check(t_client < 15, "the client socket closed %.1f s into the "
              "silence (bound 15 s)" % t_client)
        t_relay, line = _ended(env, client, tid, t0)
        fc.pass_through()
        t1 = time.monotonic()
        ok = None
        while time.monotonic() - t1 < 15:
            try:
                echo_once(lport, b"after the silence", timeout=3)
                ok = time.monotonic() - t1
                break
            except (OSError, TestFailure):
                time.sleep(0.2)
        check(ok is not None, "no new tunnel within 15 s of the path coming "
              "back")
        print("faults: blackhole for good: client socket %s after %.1f s, "
              "relay 0 tunnels after %.1f s, new tunnel %.2f s after the "
              "path came back" % (how, t_client, t_relay, ok))
        print("client: %s" % line)


# -- 5. abuse ------------------------------------------------------------------

def _abuse_env(env, settings=None):
    echo = env.service(Echo())
    server, client, lp = _topology(env, {"echo": echo.addr},
                                   settings=settings)
    bg = RunningEcho(lp["echo"])
    bg.wait_moved(MIB, 20, "the background tunnel to move 1 MiB")
    rss = RssWatch(env.relay.proc.pid)
    return server, client, lp, bg, rss


def _abuse_end(env, bg, rss, lp, what):
    bg.wait_moved(256 * 1024, 15, "the background tunnel to keep moving "
                  "after %s" % what)
    moved = bg.finish()
    echo_once(lp["echo"], b"a new tunnel after " + what.encode())
    grew = rss.growth()
    rss.stop()
    check(grew <= RSS_BOUND_KIB, "the relay grew %d KiB (bound %d KiB) "
          "over %s" % (grew, RSS_BOUND_KIB, what))
    env.relay.wait_status(lambda st: st.get("tunnels") == 0, 10,
                          "the relay to count 0 tunnels")
    return moved, grew


def _raw(env, timeout=10):
    s = socket.create_connection((env.relay.host, env.relay.port),
                                 timeout=timeout)
    return s


def _read_status(sock, timeout):
    """Reads until a status line and headers arrive or the connection
    ends: (status or None, how, text)."""
    sock.settimeout(timeout)
    buf = b""
    try:
        while b"\r\n\r\n" not in buf:
            d = sock.recv(65536)
            if not d:
                break
            buf += d
    except socket.timeout:
        return None, "timeout", buf
    except (ConnectionResetError, BrokenPipeError):
        return None, "reset", buf
    m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
    return (int(m.group(1)) if m else None), ("answer" if m else "closed"), \
        buf


@timeout(90)
def test_faults_abuse_slowloris(bindir):
    """20 connections send a request head at 1 byte a second: the relay
    cuts each within header_timeout (5 s here; idle_timeout stays at its
    300 s default) + 5 s; the background tunnel and new tunnels are
    unaffected; the relay's RSS stays bounded."""
    n = 20
    with Env(bindir, "slowloris") as env:
        server, client, lp, bg, rss = _abuse_env(env, {"header_timeout": "5"})
        head = (b"POST /v1/s/nas/listen/echo HTTP/1.1\r\nHost: relay\r\n"
                b"Postern-Key: " + b"A" * 400 + b"\r\n\r\n")
        socks = [_raw(env) for _ in range(n)]
        closed = [None] * n
        t0 = time.monotonic()
        i = 0
        new_tunnel_ms = None
        while time.monotonic() - t0 < 20 and None in closed and \
                i < len(head):
            for k, s in enumerate(socks):
                if closed[k] is not None:
                    continue
                try:
                    s.send(head[i:i + 1])
                    s.settimeout(0.001)
                    d = s.recv(4096)
                    closed[k] = ("answer" if d else "eof",
                                 time.monotonic() - t0)
                except socket.timeout:
                    pass
                except OSError:
                    closed[k] = ("reset", time.monotonic() - t0)
            if i == 2:
                a = time.monotonic()
                echo_once(lp["echo"], b"during the slow loris")
                new_tunnel_ms = (time.monotonic() - a) * 1000
            i += 1
            time.sleep(1.0)
        for s in socks:
            s.close()
        still = [k for k, c in enumerate(closed) if c is None]
        check(not still, "%d of %d slow connections still open after %.0f s"
              " (header_timeout 5 s)" % (len(still), n,
                                       time.monotonic() - t0))
        latest = max(c[1] for c in closed)
        check(latest <= 10.5, "a slow connection was cut only after %.1f s "
              "(header_timeout 5 s)" % latest)
        moved, grew = _abuse_end(env, bg, rss, lp, "the slow loris")
        print("faults: slowloris=%d cut after %.1f-%.1f s (%s); a new tunnel "
              "meanwhile took %.0f ms; background moved %d bytes; relay RSS "
              "+%d KiB" % (n, min(c[1] for c in closed), latest,
                           sorted(set(c[0] for c in closed)),
                           new_tunnel_ms or -1, moved, grew))


@timeout(90)
def test_faults_abuse_big_body(bindir):
    """64 MiB of body on connect (chunked) and a 1 GiB Content-Length on
    listen, signed: the relay answers 400/413 or closes the connection
    after reading at most about 1 MiB (plus socket buffers), quickly; the
    background tunnel is unaffected; RSS bounded."""
    with Env(bindir, "bigbody") as env:
        server, client, lp, bg, rss = _abuse_env(env)
        results = []
        for call, key, chunked in (("connect/echo", "laptop", True),
                                   ("listen/echo", "nas", False),
                                   ("connect/echo", "laptop", False)):
            path = "/v1/s/nas/" + call
            h = env.sign(key, path)
            lines = ["POST %s HTTP/1.1" % path, "Host: relay",
                     "Expect:"] + ["%s: %s" % kv for kv in h.items()]
            lines.append("Transfer-Encoding: chunked" if chunked else
                         "Content-Length: %d" % (1 << 30))
            s = _raw(env)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
            block = b"x" * 65536
            if chunked:
                block = b"10000\r\n" + block + b"\r\n"
            sent = 0
            t0 = time.monotonic()
            how = None
            s.setblocking(False)
            sel = selectors.DefaultSelector()
            sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
            buf = b""
            while time.monotonic() - t0 < 20 and sent < 64 * MIB:
                evs = sel.select(0.5)
                if not evs:
                    continue
                ev = evs[0][1]
                if ev & selectors.EVENT_READ:
                    try:
                        d = s.recv(65536)
                    except OSError:
                        how = "reset"
                        break
                    if not d:
                        how = "eof"
                        break
                    buf += d
                    if b"\r\n\r\n" in buf:
                        how = "answer"
                        break
                if ev & selectors.EVENT_WRITE:
                    try:
                        sent += s.send(block)
                    except BlockingIOError:
                        pass
                    except OSError:
                        how = "reset"
                        break
            dt = time.monotonic() - t0
            sel.close()
            s.close()
            m = re.match(rb"HTTP/1\.[01] (\d{3})", buf)
            status = int(m.group(1)) if m else None
            results.append((call, "chunked" if chunked else "length",
                            how, status, sent, dt))
            check(how is not None, "%s with a %s body: the relay took %d "
                  "bytes in %.0f s without answering or closing"
                  % (call, "chunked" if chunked else "1 GiB", sent, dt))
            check(how != "answer" or status in (400, 413),
                  "%s with a big body answered %r" % (call, buf[:200]))
            check(sent <= 16 * MIB, "%s: the relay read %d bytes of a body "
                  "it does not want (bound 16 MiB incl. socket buffers)"
                  % (call, sent))
            check(dt < 10, "%s: the big body took %.1f s to be refused"
                  % (call, dt))
        moved, grew = _abuse_end(env, bg, rss, lp, "the big bodies")
        print("faults: big bodies %s; background moved %d bytes; relay RSS "
              "+%d KiB" % (["%s/%s %s %s after %.1f MiB in %.2f s"
                            % (c, k, h, st, n / MIB, d)
                            for c, k, h, st, n, d in results], moved, grew))


@timeout(120)
def test_faults_abuse_bogus_ids(bindir):
    """5000 signed stream requests naming IDs that never existed (accept,
    downstream, refuse with the server's key; upstream, receive with the
    client's): each is 404 unknown_connection, quickly; the background
    tunnel is unaffected; RSS bounded."""
    total = 5000
    with Env(bindir, "bogusids") as env:
        server, client, lp, bg, rss = _abuse_env(env)
        signers = {"nas": Signer(env.keys["nas"][0]),
                   "laptop": Signer(env.keys["laptop"][0])}
        signers["nas"].check_against(env, "nas")
        calls = (("accept", "nas"), ("downstream", "nas"), ("refuse", "nas"),
                 ("upstream", "laptop"), ("receive", "laptop"))
        bad = []
        lat = []
        reconnects = [0]
        lock = threading.Lock()

        def worker(k, count):
            rng = random.Random(k)
            c = http.client.HTTPConnection(env.relay.host, env.relay.port,
                                           timeout=10)
            for j in range(count):
                call, key = calls[(k + j) % len(calls)]
                tid = base64.urlsafe_b64encode(rng.randbytes(16)).decode() \
                    .rstrip("=")
                path = "/v1/s/nas/%s/%s" % (call, tid)
                h = signers[key].headers("POST", path)
                h["Content-Length"] = "0"
                a = time.monotonic()
                for attempt in (1, 2):
                    try:
                        c.request("POST", path, headers=h)
                        r = c.getresponse()
                        body = r.read()
                        st = r.status
                        if r.getheader("Connection", "").lower() == "close":
                            c.close()
                        break
                    except (OSError, http.client.HTTPException) as e:
                        c.close()
                        with lock:
                            reconnects[0] += 1
                        if attempt == 2:
                            st, body = None, repr(e).encode()
                        h = signers[key].headers("POST", path)
                        h["Content-Length"] = "0"
                d = time.monotonic() - a
                code = None
                try:
                    code = json.loads(body).get("code")
                except (ValueError, AttributeError):
                    pass
                with lock:
                    lat.append(d)
                    if st != 404 or code != "unknown_connection":
                        bad.append("%s -> %s %s %r" % (call, st, code,
                                                       body[:120]))
            c.close()
        t0 = time.monotonic()
        threads = [threading.Thread(target=worker, args=(k, total // 4),
                                    daemon=True) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        dt = time.monotonic() - t0
        check(not any(t.is_alive() for t in threads),
              "bogus ID requests still running after 90 s")
        check(len(lat) == total, "%d of %d requests done" % (len(lat), total))
        lat.sort()
        p99 = lat[int(len(lat) * 0.99)]
        print("faults: bogus_ids=%d in %.1f s (%.0f/s), median %.1f ms p99 "
              "%.1f ms, %d reconnects, %d wrong answers"
              % (total, dt, total / dt, lat[len(lat) // 2] * 1000,
                 p99 * 1000, reconnects[0], len(bad)))
        by_call = {}
        for b in bad:
            by_call[b.split(" ")[0]] = by_call.get(b.split(" ")[0], 0) + 1
        check(not bad, "%d of %d bogus-ID requests not answered 404 "
              "unknown_connection (%s), e.g. %s"
              % (len(bad), total, by_call, bad[:3]))
        check(dt < 60, "%d bogus-ID requests took %.1f s" % (total, dt))
        check(p99 < 0.5, "bogus-ID answers slow: p99 %.0f ms" % (p99 * 1000))
        moved, grew = _abuse_end(env, bg, rss, lp, "the bogus IDs")
        print("background moved %d bytes; relay RSS +%d KiB" % (moved, grew))


def _control(payload):
    p = json.dumps(payload, separators=(",", ":")).encode()
    return frame(",,,%d,control" % len(p), p)


@timeout(90)
def test_faults_abuse_bad_frames_midstream(bindir):
    """A client that sends good frames (connection, seq, 64 KiB of data
    echoed back) and then garbage in the middle of its upstream body: that
    tunnel fails, the server-proxy logs an error naming the tunnel and the
    byte offset of the garbage, the background tunnel is unaffected, new
    tunnels work; RSS bounded."""
    with Env(bindir, "badmid") as env:
        # The failed tunnel's relay side waits resume_grace for proxies
        # that will not come back: 3 s, so that the test need not wait the
        # default 30.
        server, client, lp, bg, rss = _abuse_env(env, {"resume_grace": "3"})
        mark = server.log_size()
        c = Connect(env, "laptop", "nas", "echo")
        check(c.status == 200, "connect answered %d" % c.status)
        up = Stream(env, "laptop", "/v1/s/nas/upstream/%s" % c.id)
        data = Pattern(77, 64 * 1024).chunk(64 * 1024)
        good = conn_frame("nas", "echo") + _control([1, "seq", 0])
        for k in range(0, len(data), 8192):
            good += data_frame(data[k:k + 8192])
        up.send(good)
        echoed = bytearray()

        def got_echo(frames):
            echoed[:] = b"".join(p for svc, _, p in frames if svc == "tcp")
            return len(echoed) >= len(data)
        frames, how = c.frames(got_echo, timeout=15)
        check(bytes(echoed[:len(data)]) == data,
              "the good part came back as %d bytes (%s), expected the %d "
              "sent" % (len(echoed), how, len(data)))
        garbage = b"\x01this is not a frame" + b"\x00" * 100
        up.send(garbage)
        frames, how = c.frames(lambda fs: False, timeout=15)
        check(how in ("cut", "end"), "after the garbage the connect body %s"
              % how)
        check(not any(svc == "end" for svc, _, _ in frames),
              "the tunnel ended cleanly (end frame) after garbage")
        up.end()
        up.wait(15)
        c.close()
        m = server.wait_log(r"[^\n]*?(?:byte|offset) (\d+)[^\n]*", 10,
                            start=mark, what="an error naming the byte "
                            "offset of the garbage")
        line = m.group(0)
        named = int(m.group(1))
        check(len(good) <= named <= len(good) + 2,
              "the log names byte %d, the garbage starts at byte %d: %s"
              % (named, len(good), line))
        check(c.id in line or re.search(r"id=%s\b" % re.escape(c.id),
                                        server.log()[mark:]),
              "the server log does not name tunnel %s: %s" % (c.id, line))
        check(" error: " in line or " warn: " in line,
              "the garbage is not logged at warn/error: %s" % line)
        moved, grew = _abuse_end(env, bg, rss, lp, "the garbage")
        print("faults: garbage at byte %d -> connect body %s; server: %s; "
              "background moved %d bytes; relay RSS +%d KiB"
              % (len(good), how, line.strip(), moved, grew))


@timeout(90)
def test_faults_abuse_big_headers(bindir):
    """Request heads of 100 KiB (one huge header; 2000 small ones): the
    relay answers 431/400 or closes the connection, quickly; the
    background tunnel is unaffected; RSS bounded."""
    with Env(bindir, "bigheaders") as env:
        server, client, lp, bg, rss = _abuse_env(env)
        results = []
        path = "/v1/s/nas/listen/echo"
        for name, extra in (
                ("one 100 KiB header", b"X-Big: " + b"a" * (100 * 1024) +
                 b"\r\n"),
                ("2000 headers", b"".join(b"X-H%d: %s\r\n" % (k, b"b" * 40)
                                          for k in range(2000)))):
            h = env.sign("nas", path)
            head = ("POST %s HTTP/1.1\r\nHost: relay\r\n" % path).encode() + \
                "".join("%s: %s\r\n" % kv for kv in h.items()).encode() + \
                extra + b"Content-Length: 0\r\n\r\n"
            s = _raw(env)
            t0 = time.monotonic()
            try:
                s.sendall(head)
            except OSError:
                pass
            status, how, buf = _read_status(s, 10)
            dt = time.monotonic() - t0
            s.close()
            results.append((name, how, status, dt))
            check(how != "timeout", "%s: no answer and no close within 10 s"
                  % name)
            check(status in (None, 400, 413, 431),
                  "%s: answered %r" % (name, buf[:200]))
            check(dt < 5, "%s: took %.1f s" % (name, dt))
        moved, grew = _abuse_end(env, bg, rss, lp, "the big headers")
        print("faults: big headers %s; background moved %d bytes; relay RSS "
              "+%d KiB" % (["%s: %s %s in %.2f s" % r for r in results],
                           moved, grew))
