"""Tunnels that end badly, and programs that are told to stop: every
failure reaches the other end promptly, and nothing is left behind.

A proxy that dies or stops cuts its HTTP streams; the relay keeps the
tunnel for resume_grace in case it comes back (docs/protocol.md,
"Resuming tunnels"), then ends it (reason=peer_lost) and the other proxy,
answered 404, closes its local socket.  These tests give the relay a
short resume_grace (GRACE) and check that the tunnel ends after it."""

import hashlib
import signal
import socket
import struct
import time

from harness import (Env, Pattern, check, connect, timeout, wait_closed,
                     wait_until)
from services import Echo, Sink, Source

MIB = 1 << 20
GRACE = 2.0                               # the relay's resume_grace here
SETTINGS = {"resume_grace": "%g" % GRACE}


def _read(sock, n, timeout=30):
    sock.settimeout(timeout)
    got = 0
    while got < n:
        d = sock.recv(min(MIB, n - got))
        check(d, "tunnel ended after %d of %d bytes" % (got, n))
        got += len(d)
    return got


def _closed_lines(proc, start=0):
    return [ln for ln in proc.log()[start:].splitlines()
            if "tunnel closed id=" in ln]


def _relay_closed(env, start=0):
    """The relay's 'tunnel closed' line, once there is one."""
    lines = wait_until(lambda: _closed_lines(env.relay.proc, start),
                       GRACE + 10, "a 'tunnel closed' line in the relay log")
    return lines[0]


@timeout(90)
def test_server_killed(bindir):
    """SIGKILL the server-proxy mid-transfer: the relay ends the tunnel
    resume_grace later (reason=peer_lost), the client's local socket is
    closed or reset then, and the client log says why."""
    with Env(bindir, "serverkilled") as env:
        source = env.service(Source(0, endless=True))
        server, client, lp = env.standard({"source": source.addr},
                                          settings=SETTINGS)
        s = connect(lp["source"])
        _read(s, 8 * MIB)
        mark = client.log_size()
        server.signal(signal.SIGKILL)
        server.wait_exit(5)
        how, dt, n = wait_closed(s, 15)
        s.close()
        check(how != "open", "the local socket was still open 15 s after "
              "the server-proxy died (%d bytes drained)" % n)
        check(dt <= GRACE + 8, "the local socket closed only %.1f s after "
              "the server-proxy died (resume_grace %g s)" % (dt, GRACE))
        relay_line = _relay_closed(env)
        print("relay: %s" % relay_line)
        check("reason=peer_lost" in relay_line or "reason=done" in
              relay_line, "the relay did not end the tunnel for the lost "
              "server-proxy: %s" % relay_line)
        lines = wait_until(lambda: _closed_lines(client, mark), 10,
                           "a 'tunnel closed' line in the client log")
        print("closed by %s after %.2f s; client log: %s" % (how, dt,
                                                             lines[0]))
        check("reason=" in lines[0] and
              not lines[0].rstrip().endswith("reason="),
              "the tunnel closed line gives no reason: %s" % lines[0])
        env.relay.wait_status(lambda st: st.get("tunnels") == 0, 15,
                              "the relay to count 0 tunnels")


@timeout(90)
def test_client_disconnect(bindir):
    """The TCP client closes (FIN) in the middle of an upload: every byte
    it sent reaches the target before EOF, and the relay's /v1/status
    returns to tunnels 0."""
    with Env(bindir, "clientclose") as env:
        sink = env.service(Sink())
        _, client, lp = env.standard({"sink": sink.addr},
                                     settings=SETTINGS)
        s = connect(lp["sink"])
        p = Pattern(11, 8 * MIB)
        h = hashlib.sha256()
        while p.left:
            d = p.chunk(256 * 1024)
            h.update(d)
            s.sendall(d)
        env.relay.wait_status(lambda st: st.get("tunnels") == 1, 5,
                              "the relay to count 1 tunnel")
        t0 = time.monotonic()
        s.close()
        wait_until(lambda: sink.results, 15, "the target to see EOF")
        check(sink.results[0] == (8 * MIB, h.hexdigest()),
              "the target got %r before EOF, the client sent %d bytes "
              "sha256 %s" % (sink.results[0], 8 * MIB, h.hexdigest()))
        env.relay.wait_status(lambda st: st.get("tunnels") == 0, 15,
                              "the relay to count 0 tunnels after the TCP "
                              "client left")
        dt = time.monotonic() - t0
        lines = wait_until(lambda: _closed_lines(client), 10,
                           "a 'tunnel closed' line in the client log")
        print("tunnels 0 %.2f s after the client left; %s" % (dt, lines[0]))


@timeout(90)
def test_client_reset(bindir):
    """The TCP client resets (SO_LINGER 0) while the target is writing:
    the target's socket is closed, /v1/status returns to tunnels 0, and
    the client-proxy still serves new tunnels."""
    with Env(bindir, "clientreset") as env:
        source = env.service(Source(0, endless=True))
        _, client, lp = env.standard({"source": source.addr},
                                     settings=SETTINGS)
        s = connect(lp["source"])
        _read(s, 8 * MIB)
        env.relay.wait_status(lambda st: st.get("tunnels") == 1, 5,
                              "the relay to count 1 tunnel")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))
        t0 = time.monotonic()
        s.close()
        env.relay.wait_status(lambda st: st.get("tunnels") == 0, 15,
                              "the relay to count 0 tunnels after the TCP "
                              "client reset")
        check(source.failed.wait(15), "the target's socket was not closed "
              "after the TCP client reset")
        dt = time.monotonic() - t0
        lines = wait_until(lambda: _closed_lines(client), 10,
                           "a 'tunnel closed' line in the client log")
        print("tunnels 0 and target closed %.2f s after the reset; %s"
              % (dt, lines[0]))
        s = connect(lp["source"])
        _read(s, MIB)
        s.close()


@timeout(90)
def test_client_proxy_killed(bindir):
    """SIGKILL the client-proxy mid-transfer: the relay keeps the tunnel
    for resume_grace, then ends it (reason=peer_lost); tunnels back to 0,
    the target's socket closed."""
    with Env(bindir, "clientkilled") as env:
        source = env.service(Source(0, endless=True))
        _, client, lp = env.standard({"source": source.addr},
                                     settings=SETTINGS)
        s = connect(lp["source"])
        _read(s, 8 * MIB)
        client.signal(signal.SIGKILL)
        client.wait_exit(5)
        t0 = time.monotonic()
        env.relay.wait_status(lambda st: st.get("tunnels") == 0, 15,
                              "the relay to count 0 tunnels after the "
                              "client-proxy died")
        dt = time.monotonic() - t0
        check(source.failed.wait(15), "the target's socket was not closed "
              "after the client-proxy died")
        s.close()
        relay_line = _relay_closed(env)
        check("reason=peer_lost" in relay_line, "the relay did not end the "
              "tunnel as peer_lost: %s" % relay_line)
        check(dt >= GRACE - 0.5, "the relay ended the tunnel %.2f s after the "
              "client-proxy died, before resume_grace (%g s)" % (dt, GRACE))
        print("cleaned up %.2f s after the kill; relay: %s" % (dt, relay_line))


def _sigterm(bindir, name, which):
    with Env(bindir, "sigterm-" + name) as env:
        echo = env.service(Echo())
        server, client, lp = env.standard({"echo": echo.addr},
                                          settings=SETTINGS)
        s = connect(lp["echo"])
        s.sendall(b"hello")
        s.settimeout(10)
        check(s.recv(100) == b"hello", "echo failed")
        env.relay.wait_status(lambda st: st.get("tunnels") == 1, 5,
                              "the relay to count 1 tunnel")
        procs = {"relay": env.relay.proc, "server": server,
                 "client": client}
        first = procs[which]
        first.signal(signal.SIGTERM)
        rc = first.wait_exit(10)
        check(rc == 0, "%s exited %s on SIGTERM with a tunnel open; stderr:"
              " %s" % (first.name, rc, first.log()[-800:]))
        if which != "relay":
            # The proxy told the other one before it went (shutdown_grace):
            # the far side's socket ends at once, not resume_grace later,
            # and its log says why.
            how, dt, _ = wait_closed(s, 15)
            check(how != "open", "local socket still open 15 s after %s "
                  "stopped" % first.name)
            check(dt < 1.5, "local socket ended %.1f s after %s stopped: "
                  "the other proxy was not told" % (dt, first.name))
            other = client if which == "server" else server
            other.wait_log(r"reason=peer error: the %s-proxy is shutting "
                           r"down \(shutdown\)" % which, 5,
                           what="the other proxy's close reason")
        s.close()
        # The others stop cleanly too, whatever state that left them in.
        for p in procs.values():
            if p is first:
                continue
            p.signal(signal.SIGTERM)
            rc = p.wait_exit(10)
            check(rc == 0, "%s exited %s on SIGTERM after %s stopped; "
                  "stderr: %s" % (p.name, rc, first.name, p.log()[-800:]))


@timeout(60)
def test_sigterm_relay(bindir):
    """SIGTERM the relay with a tunnel open: exit 0 (then the proxies)."""
    _sigterm(bindir, "relay", "relay")


@timeout(60)
def test_sigterm_server(bindir):
    """SIGTERM the server-proxy with a tunnel open: exit 0."""
    _sigterm(bindir, "server", "server")


@timeout(60)
def test_sigterm_client(bindir):
    """SIGTERM the client-proxy with a tunnel open: exit 0."""
    _sigterm(bindir, "client", "client")
