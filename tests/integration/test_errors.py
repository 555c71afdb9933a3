"""Tunnels that cannot open: the client-proxy closes the local socket and
logs the relay's status, code and message so a person knows what to fix."""

import http.client
import json
import re
import socket
import threading
import time

from harness import (Env, TestFailure, check, connect, free_port, timeout,
                     wait_closed, wait_until)
from services import Echo


def _expect_failure(client, lport, fw, status, code, within=10.0):
    """Connects to the client-proxy's local port for fw; the socket must be
    closed within `within` seconds and the client log must say, at warn or
    error level, that the tunnel to fw failed with status and code."""
    start = client.log_size()
    s = connect(lport)
    how, dt, n = wait_closed(s, within)
    s.close()
    check(how != "open", "local socket for %s still open %.0f s after the "
          "relay refused (expected %d %s); client log tail: %s"
          % (fw, within, status, code, client.log()[-600:]))
    check(n == 0, "%d bytes arrived on a tunnel that failed" % n)
    rx = r"[^\n]*%s[^\n]*\b%d\b[^\n]*%s[^\n]*" % (re.escape(fw), status,
                                                  re.escape(code))
    m = client.wait_log(rx, timeout=5, start=start,
                        what="a line naming %s, %d and %s" % (fw, status,
                                                              code))
    line = m.group(0)
    check(" warn: " in line or " error: " in line,
          "the failure is not logged at warn/error level: %s" % line)
    # The message after the code is a sentence, not just the code.
    rest = line[line.index(code) + len(code):].strip(" :")
    check(len(rest) >= 8, "no human message after the code: %s" % line)
    print("%.2f s, socket %s: %s" % (dt, how, line))
    return line


@timeout(60)
def test_error_target_refused(bindir):
    """Target not listening: 502 ECONNREFUSED; the port stays usable."""
    with Env(bindir, "refused") as env:
        echo = env.service(Echo())
        _, client, lp = env.standard({"refused": ("127.0.0.1", free_port()),
                                      "echo": echo.addr})
        _expect_failure(client, lp["refused"], "nas/refused", 502,
                        "ECONNREFUSED")
        # The server-proxy keeps serving: the refusal happens again, and a
        # good port still works.
        _expect_failure(client, lp["refused"], "nas/refused", 502,
                        "ECONNREFUSED")
        s = connect(lp["echo"])
        s.sendall(b"still here")
        s.settimeout(10)
        check(s.recv(100) == b"still here", "echo after refusals failed")
        s.close()


@timeout(60)
def test_error_unknown_server(bindir):
    """A server name the relay's config does not know: 404 unknown_server."""
    with Env(bindir, "unknownserver") as env:
        echo = env.service(Echo())
        _, client, lp = env.standard({"echo": echo.addr},
                                     forwards=["nas/echo", "ghost/ssh"])
        _expect_failure(client, lp["ghost/ssh"], "ghost/ssh", 404,
                        "unknown_server")


@timeout(60)
def test_error_unknown_port(bindir):
    """A port outside the server's `ports`: 404 unknown_port."""
    with Env(bindir, "unknownport") as env:
        echo = env.service(Echo())
        _, client, lp = env.standard({"echo": echo.addr}, ports="echo",
                                     forwards=["nas/echo", "nas/nope"])
        _expect_failure(client, lp["nope"], "nas/nope", 404, "unknown_port")


@timeout(60)
def test_error_not_listening(bindir):
    """A configured server whose proxy is not running: 503 not_listening."""
    with Env(bindir, "notlistening") as env:
        env.keygen("idle")
        echo = env.service(Echo())
        _, client, lp = env.standard(
            {"echo": echo.addr}, forwards=["nas/echo", "idle/ssh"],
            extra_servers={"idle": ("idle", None)}, allow="nas/* idle/*")
        _expect_failure(client, lp["idle/ssh"], "idle/ssh", 503,
                        "not_listening")


class FakeServer:
    """Holds a listen for server/port with signatures from postern-sign and
    never accepts what it is given."""

    def __init__(self, env, key_name, server, port):
        self.env = env
        self.key = key_name
        self.path = "/v1/s/%s/listen/%s" % (server, port)
        self.got = []
        self.errors = []
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        relay = self.env.relay
        for _ in range(20):
            try:
                h = self.env.sign(self.key, self.path)
                c = http.client.HTTPConnection(relay.host, relay.port,
                                               timeout=120)
                c.request("POST", self.path, headers=h)
                r = c.getresponse()
                body = r.read()
                c.close()
            except Exception as e:
                self.errors.append(repr(e))
                return
            if r.status == 200:
                self.got.append(body)
            elif r.status != 204:
                self.errors.append("listen answered %d: %r"
                                   % (r.status, body[:200]))
                return


@timeout(60)
def test_error_accept_timeout(bindir):
    """A server-proxy that listens but never accepts: 504 accept_timeout
    after accept_timeout seconds (2 here)."""
    with Env(bindir, "accepttimeout") as env:
        env.keygen("fake")
        echo = env.service(Echo())
        env.keygen("nas")
        env.keygen("laptop")
        env.write_relay_ini({"nas": ("nas", None), "fake": ("fake", None)},
                            {"laptop": ("laptop", "nas/* fake/*")},
                            settings={"accept_timeout": "2"})
        env.start_relay()
        env.start_server("nas", "nas", {"echo": echo.addr})
        before = env.relay.status()["listens"]
        fake = FakeServer(env, "fake", "fake", "p")
        env.relay.wait_status(lambda s: s.get("listens", 0) > before, 10,
                              "the fake server's listen")
        client, ports = env.start_client("laptop", ["fake/p"])
        t0 = time.monotonic()
        _expect_failure(client, ports["fake/p"], "fake/p", 504,
                        "accept_timeout", within=15)
        dt = time.monotonic() - t0
        check(dt >= 1.5, "504 came after %.1f s, before accept_timeout (2 s)"
              % dt)
        wait_until(lambda: fake.got or fake.errors, 5,
                   "the fake's listen to return")
        check(not fake.errors, "fake server: %s" % fake.errors)
        # The listen response names the connection and the client.
        j = json.loads(fake.got[0])
        check(re.fullmatch(r"[A-Za-z0-9_-]{22}", j.get("id", "")),
              "listen response id is not 22 URL-safe chars: %r" % j)
        check(j.get("port") == "p", "listen response port: %r" % j)
        check(j.get("client") == "laptop", "listen response client: %r" % j)
        check(j.get("client_key") == env.keys["laptop"][1],
              "listen response client_key %r is not laptop's key %r"
              % (j.get("client_key"), env.keys["laptop"][1]))


@timeout(60)
def test_error_client_not_allowed(bindir):
    """A known client key outside its `allow`: 403 forbidden."""
    with Env(bindir, "forbidden") as env:
        env.keygen("guest")
        echo = env.service(Echo())
        _, _, _ = env.standard({"echo": echo.addr, "secret": echo.addr},
                               extra_clients={"guest": ("guest",
                                                        "nas/echo")})
        client, ports = env.start_client("guest", ["nas/echo", "nas/secret"],
                                         name="guest")
        _expect_failure(client, ports["nas/secret"], "nas/secret", 403,
                        "forbidden")
        # Its allowed port works.
        s = connect(ports["nas/echo"])
        s.sendall(b"allowed")
        s.settimeout(10)
        check(s.recv(100) == b"allowed", "guest's allowed port failed")
        s.close()


class Blackhole:
    """A TCP address whose connects hang: a listener with backlog 0 whose
    one queue slot is taken and never accepted, so the kernel drops further
    SYNs."""

    def __init__(self):
        self.l = socket.socket()
        self.l.bind(("127.0.0.1", 0))
        self.l.listen(0)
        self.addr = self.l.getsockname()
        self.filler = socket.create_connection(self.addr, timeout=5)

    def stop(self):
        self.filler.close()
        self.l.close()


@timeout(60)
def test_error_target_timeout(bindir):
    """A target that never answers the TCP handshake: after the
    server-proxy's --connect-timeout (1 s here) the client gets 502
    ETIMEDOUT."""
    with Env(bindir, "targettimeout") as env:
        hole = env.service(Blackhole())
        env.keygen("nas")
        env.keygen("laptop")
        env.write_relay_ini({"nas": ("nas", None)},
                            {"laptop": ("laptop", "nas/*")})
        env.start_relay()
        env.start_server("nas", "nas", {"hole": hole.addr},
                         args=["--connect-timeout", "1"])
        client, ports = env.start_client("laptop", ["nas/hole"])
        t0 = time.monotonic()
        _expect_failure(client, ports["nas/hole"], "nas/hole", 502,
                        "ETIMEDOUT", within=8)
        dt = time.monotonic() - t0
        check(dt >= 0.8, "ETIMEDOUT after %.1f s, before the 1 s "
              "connect timeout" % dt)
