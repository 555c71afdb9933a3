"""Scale: thousands of idle tunnels through one relay with its default
settings, and a burst of simultaneous connects.

Settings (environment):
  POSTERN_IT_SCALE_TUNNELS  idle tunnels held at once (default 2000).  It
                            is lowered, with a note, when the open-file
                            limit cannot hold that many: the relay needs 4
                            descriptors per tunnel, each proxy 3 and this
                            test 2 (its socket and the echo service's).
  POSTERN_IT_SCALE_BURST    simultaneous connects in the burst test
                            (default 300)
"""

import os
import resource
import selectors
import socket
import threading
import time

from harness import Env, TestFailure, check, proc_rss_kib, timeout

TUNNELS = int(os.environ.get("POSTERN_IT_SCALE_TUNNELS", "2000"))
BURST = int(os.environ.get("POSTERN_IT_SCALE_BURST", "300"))
# Tunnels opened at once while filling up: well under the relay's
# max_pending_connects, so that none is turned away as busy.
WAVE = 100
# A correctness bound, not a speed target: an idle tunnel must not cost
# the relay more than this (ASan builds included; see docs/relay.md for
# the measured figure).
RSS_BOUND_KIB = 128


class SelectEcho:
    """Echo service on one thread with a selector, for thousands of
    connections (services.Echo spends a thread on each)."""

    def __init__(self):
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(4096)
        self.lsock.setblocking(False)
        self.addr = ("127.0.0.1", self.lsock.getsockname()[1])
        self.sel = selectors.DefaultSelector()
        self.sel.register(self.lsock, selectors.EVENT_READ, None)
        self.accepted = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self.stopping:
            try:
                events = self.sel.select(timeout=0.2)
            except (OSError, ValueError):
                return
            for key, _ in events:
                if key.data is None:
                    self._accept()
                else:
                    self._echo(key.fileobj)

    def _accept(self):
        while True:
            try:
                c, _ = self.lsock.accept()
            except (BlockingIOError, OSError):
                return
            c.setblocking(False)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.sel.register(c, selectors.EVENT_READ, True)
            self.accepted += 1

    def _echo(self, c):
        try:
            d = c.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            d = b""
        if not d:
            self.sel.unregister(c)
            c.close()
            return
        try:
            # Small messages: the socket buffer always takes them.
            c.sendall(d)
        except OSError:
            self.sel.unregister(c)
            c.close()

    def stop(self):
        self.stopping = True
        self.thread.join(5)
        for key in list(self.sel.get_map().values()):
            key.fileobj.close()
        self.sel.close()


def _nofile_room():
    """Raises this process's soft open-file limit to the hard one (the
    programs it starts inherit it) and returns the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def _echo_all(socks, payload, deadline, what):
    """Sends payload(i) on every socket at once, waits for each echo."""
    sel = selectors.DefaultSelector()
    want = {}
    for i, s in socks.items():
        data = payload(i)
        s.sendall(data)
        want[s] = [data, b"", i]
        sel.register(s, selectors.EVENT_READ)
    try:
        while want:
            left = deadline - time.monotonic()
            if left <= 0:
                w = next(iter(want.values()))
                raise TestFailure("%s: %d of %d tunnels did not echo in time "
                                  "(e.g. #%d got %r of %r)"
                                  % (what, len(want), len(socks), w[2], w[1], w[0]))
            for key, _ in sel.select(timeout=min(left, 0.5)):
                s = key.fileobj
                w = want[s]
                try:
                    d = s.recv(65536)
                except OSError as e:
                    raise TestFailure("%s: tunnel #%d failed: %r" % (what, w[2], e))
                check(d, "%s: tunnel #%d ended after %r of %r"
                      % (what, w[2], w[1], w[0]))
                w[1] += d
                if len(w[1]) >= len(w[0]):
                    check(w[1] == w[0], "%s: tunnel #%d echoed %r, sent %r"
                          % (what, w[2], w[1], w[0]))
                    sel.unregister(s)
                    del want[s]
    finally:
        sel.close()


def _open(port, n, first, deadline):
    """n new tunnels at once: connected, and each has echoed once."""
    socks = {}
    for i in range(first, first + n):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        socks[i] = s
    _echo_all(socks, lambda i: b"open %d\n" % i, deadline, "opening")
    return socks


def _setup(env, echo, max_tunnels):
    env.keygen("nas")
    env.keygen("laptop")
    # The relay's defaults: they are what is being tested.
    env.write_relay_ini({"nas": ("nas", None)}, {"laptop": ("laptop", "nas/*")})
    env.start_relay()
    args = ["--max-tunnels", str(max_tunnels)]
    env.start_server("nas", "nas", {"echo": echo.addr}, args=args)
    client, ports = env.start_client("laptop", ["nas/echo"], args=args)
    return client, ports["nas/echo"]


@timeout(170)
def test_many_idle_tunnels(bindir):
    """2000 idle tunnels at once through one relay (default settings):
    every one echoes after all are open, the relay's status counts them
    all, its RSS per tunnel stays under a generous bound, and when they
    close the count returns to 0."""
    n = TUNNELS
    hard = _nofile_room()
    # The relay holds 4 descriptors per tunnel, each proxy 3, this
    # process 2; keep some for everything else.
    fit = (hard - 256) // 4
    if fit < n:
        print("note: the open-file limit (%d) holds about %d tunnels on the "
              "relay; testing %d instead of %d" % (hard, fit, fit, n))
        n = fit
    check(n >= 100, "the open-file limit (%d) is too low for this test" % hard)
    with Env(bindir, "scale") as env:
        echo = env.service(SelectEcho())
        client, lport = _setup(env, echo, n + 64)
        relay = env.relay
        # One tunnel first, so that start-up allocations (and the first
        # of everything) are not counted per tunnel.
        warm = _open(lport, 1, -1, time.monotonic() + 20)
        warm[-1].close()
        relay.wait_status(lambda st: st.get("tunnels") == 0, 10,
                          "the warm-up tunnel to close")
        rss0 = proc_rss_kib(relay.proc.pid)

        t0 = time.monotonic()
        deadline = t0 + 120
        socks = {}
        while len(socks) < n:
            socks.update(_open(lport, min(WAVE, n - len(socks)), len(socks),
                               deadline))
        t_open = time.monotonic() - t0
        relay.wait_status(lambda st: st.get("tunnels") == n, 20,
                          "the relay to count %d tunnels" % n)
        st = relay.status()
        rss1 = proc_rss_kib(relay.proc.pid)
        fds = len(os.listdir("/proc/%d/fd" % relay.proc.pid))
        per = (rss1 - rss0) / n
        print("%d tunnels opened in %.1f s (%.0f/s); relay status %s; relay "
              "RSS %d -> %d KiB: %.1f KiB per tunnel; relay fds %d"
              % (n, t_open, n / t_open, st, rss0, rss1, per, fds))

        t0 = time.monotonic()
        _echo_all(socks, lambda i: b"still there %d?\n" % i,
                  time.monotonic() + 60, "after all were open")
        print("all %d echoed again in %.1f s" % (n, time.monotonic() - t0))
        check(per <= RSS_BOUND_KIB, "the relay's RSS grew %.1f KiB per idle "
              "tunnel (%d -> %d KiB for %d), over the %d KiB bound"
              % (per, rss0, rss1, n, RSS_BOUND_KIB))

        t0 = time.monotonic()
        for s in socks.values():
            s.close()
        relay.wait_status(lambda st: st.get("tunnels") == 0, 60,
                          "the relay to count 0 tunnels after %d closed" % n)
        print("all closed in %.1f s; relay RSS %d KiB"
              % (time.monotonic() - t0, proc_rss_kib(relay.proc.pid)))
        check(client.alive(), "the client-proxy exited")


@timeout(120)
def test_connect_burst(bindir):
    """300 local connections at once, with the relay's and the proxies'
    default settings (2 listens per port): the connects beyond the
    outstanding listens wait in the relay's queue (max_pending_connects)
    instead of failing busy, and every tunnel echoes."""
    n = BURST
    _nofile_room()
    with Env(bindir, "burst") as env:
        echo = env.service(SelectEcho())
        _, lport = _setup(env, echo, max(1024, n + 64))
        relay = env.relay
        t0 = time.monotonic()
        socks = {}
        for i in range(n):
            s = socket.socket()
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(10)
            s.connect(("127.0.0.1", lport))
            socks[i] = s
        # Every local connection asks for its tunnel at once; the data
        # waits in the client-proxy until the tunnel is up.
        _echo_all(socks, lambda i: b"burst %d\n" % i, time.monotonic() + 90,
                  "burst of %d" % n)
        print("%d tunnels at once: all echoed %.1f s after the first connect"
              % (n, time.monotonic() - t0))
        check(echo.accepted == n, "the target accepted %d connections, "
              "expected %d" % (echo.accepted, n))
        for s in socks.values():
            s.close()
        relay.wait_status(lambda st: st.get("tunnels") == 0, 30,
                          "the relay to count 0 tunnels")
        busy = [line for line in relay.proc.log().splitlines()
                if " 503 POST " in line]
        check(not busy, "the relay answered 503 during the burst: %s"
              % busy[:3])
