"""Limits and timeouts a person relies on: idle tunnels are closed (unless
kept alive), the relay's tunnel limit answers 503 busy, nothing leaks over
many tunnels, a target that stops reading does not grow memory, and the
proxies come back after the relay restarts."""

import hashlib
import os
import signal
import socket
import threading
import time

from harness import (Env, Pattern, check, connect, echo_once, echo_round,
                     free_port, proc_rss_kib, recv_all, recv_hashed, timeout,
                     wait_closed, wait_until)
from services import Echo, TcpService
from test_errors import _expect_failure

MIB = 1 << 20


def _fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


@timeout(60)
def test_idle_timeout(bindir):
    """A tunnel that moves no byte for idle_timeout (2 s here; proxies'
    keepalive at its 25 s default) is closed: the local socket ends and
    the relay counts 0 tunnels."""
    with Env(bindir, "idletimeout") as env:
        echo = env.service(Echo())
        _, client, lp = env.standard({"echo": echo.addr},
                                     settings={"idle_timeout": "2"})
        s = connect(lp["echo"])
        echo_round(s, b"before idling")
        t0 = time.monotonic()
        how, dt, n = wait_closed(s, 15)
        s.close()
        check(how != "open", "idle tunnel still open 15 s past a 2 s "
              "idle_timeout")
        check(dt >= 1.5, "idle tunnel closed after %.1f s, before the 2 s "
              "idle_timeout" % dt)
        env.relay.wait_status(lambda st: st.get("tunnels") == 0, 10,
                              "the relay to count 0 tunnels")
        m = client.wait_log(r"tunnel closed id=[^\n]*", 10,
                            what="a 'tunnel closed' line")
        print("closed (%s) %.1f s after the last byte: %s"
              % (how, time.monotonic() - t0, m.group(0)))


@timeout(60)
def test_keepalive(bindir):
    """With keepalives (1 s) more frequent than idle_timeout (3 s), an idle
    tunnel stays open for 7 s and still carries bytes."""
    with Env(bindir, "keepalive") as env:
        echo = env.service(Echo())
        env.keygen("nas")
        env.keygen("laptop")
        env.write_relay_ini({"nas": ("nas", None)},
                            {"laptop": ("laptop", "nas/*")},
                            settings={"idle_timeout": "3"})
        env.start_relay()
        env.start_server("nas", "nas", {"echo": echo.addr},
                         args=["--keepalive", "1"])
        client, ports = env.start_client("laptop", ["nas/echo"],
                                         args=["--keepalive", "1"])
        s = connect(ports["nas/echo"])
        echo_round(s, b"before idling")
        for _ in range(14):
            time.sleep(0.5)
            st = env.relay.status()
            check(st.get("tunnels") == 1, "the idle tunnel was closed "
                  "despite keepalives (status %s); client log: %s"
                  % (st, client.log()[-500:]))
        echo_round(s, b"after 7 s idle")
        s.close()


@timeout(60)
def test_error_busy(bindir):
    """At max_tunnels (2 here) a new connect is 503 busy; once a tunnel
    closes, new ones work again."""
    with Env(bindir, "busy") as env:
        echo = env.service(Echo())
        _, client, lp = env.standard({"echo": echo.addr},
                                     settings={"max_tunnels": "2"})
        a = connect(lp["echo"])
        echo_round(a, b"one")
        b = connect(lp["echo"])
        echo_round(b, b"two")
        _expect_failure(client, lp["echo"], "nas/echo", 503, "busy")
        a.close()
        env.relay.wait_status(lambda st: st.get("tunnels") == 1, 10,
                              "the relay to count 1 tunnel")
        echo_once(lp["echo"], b"three")
        b.close()


@timeout(120)
def test_many_short_tunnels(bindir):
    """500 tunnels one after another: every one works, and afterwards the
    three programs hold no more file descriptors than after the first
    few (nothing leaks per tunnel)."""
    n = 500
    with Env(bindir, "many") as env:
        echo = env.service(Echo())
        server, client, lp = env.standard({"echo": echo.addr})
        procs = [env.relay.proc, server, client]
        for i in range(10):
            echo_once(lp["echo"], b"warm-up %d" % i)
        env.relay.wait_status(lambda st: st.get("tunnels") == 0, 10,
                              "the relay to count 0 tunnels")
        time.sleep(0.3)
        fd0 = dict((p.name, _fds(p.pid)) for p in procs)
        rss0 = dict((p.name, proc_rss_kib(p.pid)) for p in procs)
        t0 = time.monotonic()
        for i in range(n):
            echo_once(lp["echo"], b"tunnel %d " % i + b"x" * (i % 700))
        dt = time.monotonic() - t0
        env.relay.wait_status(lambda st: st.get("tunnels") == 0, 10,
                              "the relay to count 0 tunnels")
        counts = {}

        def settled():
            for p in procs:
                counts[p.name] = _fds(p.pid)
            return all(counts[k] <= fd0[k] + 4 for k in fd0)
        try:
            wait_until(settled, 10, "file descriptor counts to settle")
        except Exception:
            check(False, "file descriptors after %d tunnels %s, after the "
                  "first 10 %s" % (n, counts, fd0))
        rss1 = dict((p.name, proc_rss_kib(p.pid)) for p in procs)
        print("%d tunnels in %.1f s (%.1f ms each); fds %s -> %s; RSS KiB "
              "%s -> %s" % (n, dt, dt * 1000 / n, fd0, counts, rss0, rss1))
        for k in rss0:
            check(rss1[k] - rss0[k] <= 32 * 1024,
                  "%s grew %d KiB over %d short tunnels"
                  % (k, rss1[k] - rss0[k], n))
        st = env.relay.status()
        print("relay status after: %s" % st)


class GatedSink(TcpService):
    """Reads nothing until `gate` is set, then reads to EOF and answers
    'COUNT SHA256'."""

    def __init__(self):
        super().__init__("gatedsink")
        self.gate = threading.Event()

    def handle(self, c):
        self.gate.wait(120)
        n, digest = recv_hashed(c, 120)
        c.sendall(b"%d %s\n" % (n, digest.encode()))
        c.shutdown(socket.SHUT_WR)


@timeout(300)
def test_slow_target(bindir):
    """The target stops reading while the TCP client writes 200 MiB: the
    client's writes block, the RSS of relay, server-proxy and client-proxy
    stays bounded; once the target reads again, every byte arrives."""
    total = 200 * MIB
    bound_kib = 64 * 1024
    with Env(bindir, "slowtarget") as env:
        sink = env.service(GatedSink())
        server, client, lp = env.standard({"sink": sink.addr})
        procs = [env.relay.proc, server, client]
        s = connect(lp["sink"], timeout=120)
        s.sendall(b"x")
        time.sleep(0.5)
        base = dict((p.name, proc_rss_kib(p.pid)) for p in procs)
        progress = {"sent": 1, "digest": None, "error": None}

        def writer():
            p = Pattern(21, total - 1)
            h = hashlib.sha256(b"x")
            try:
                while p.left:
                    d = p.chunk(256 * 1024)
                    h.update(d)
                    s.sendall(d)
                    progress["sent"] += len(d)
                progress["digest"] = h.hexdigest()
                s.shutdown(socket.SHUT_WR)
            except OSError as e:
                progress["error"] = repr(e)
        w = threading.Thread(target=writer, daemon=True)
        w.start()
        last = [progress["sent"], time.monotonic()]

        def blocked():
            if progress["sent"] != last[0]:
                last[:] = [progress["sent"], time.monotonic()]
                return False
            return time.monotonic() - last[1] >= 2.0
        wait_until(blocked, 60, "the client's writes to block", 0.1)
        check(progress["sent"] < total, "all %d bytes were taken while the "
              "target read nothing" % total)
        peak = dict(base)
        for _ in range(10):
            for p in procs:
                peak[p.name] = max(peak[p.name], proc_rss_kib(p.pid))
            time.sleep(0.2)
        print("writer blocked after %.1f MiB; RSS KiB base %s peak %s"
              % (progress["sent"] / MIB, base, peak))
        for k in base:
            check(peak[k] - base[k] <= bound_kib,
                  "%s grew %d KiB (> %d) while the target was not reading"
                  % (k, peak[k] - base[k], bound_kib))
        sink.gate.set()
        w.join(120)
        check(not w.is_alive(), "the writer did not finish after the target "
              "resumed (sent %d of %d)" % (progress["sent"], total))
        check(progress["error"] is None, "writer: %s" % progress["error"])
        ans, how = recv_all(s, 60)
        s.close()
        want = b"%d %s\n" % (total, progress["digest"].encode())
        check(ans == want, "target answered %r, expected %r" % (ans, want))


@timeout(120)
def test_relay_restart(bindir):
    """The relay dies (SIGKILL) and comes back on the same address: while
    it is down, a new local connection is closed promptly with a logged
    reason; once it is back, the proxies serve new tunnels without being
    restarted."""
    with Env(bindir, "relayrestart") as env:
        echo = env.service(Echo())
        env.keygen("nas")
        env.keygen("laptop")
        env.write_relay_ini({"nas": ("nas", None)},
                            {"laptop": ("laptop", "nas/*")})
        addr = "127.0.0.1:%d" % free_port()
        relay = env.start_relay(listen=addr)
        server = env.start_server("nas", "nas", {"echo": echo.addr})
        client, ports = env.start_client("laptop", ["nas/echo"])
        lport = ports["nas/echo"]
        echo_once(lport, b"before the restart")
        relay.proc.signal(signal.SIGKILL)
        relay.proc.wait_exit(5)
        mark = client.log_size()
        s = connect(lport)
        how, dt, n = wait_closed(s, 15)
        s.close()
        check(how != "open", "with the relay down, a local connection was "
              "still open after 15 s")
        m = client.wait_log(r"[^\n]*(warn|error):[^\n]*", 5, start=mark,
                            what="a warning while the relay is down")
        print("relay down: local socket %s after %.2f s; %s"
              % (how, dt, m.group(0)))
        time.sleep(1.0)
        t0 = time.monotonic()
        env.start_relay(listen=addr, name="relay2")
        env.relay.wait_status(lambda st: st.get("listens", 0) >= 1, 40,
                              "the server-proxy to listen on the new relay")
        echo_once(lport, b"after the restart")
        print("served again %.2f s after the relay came back"
              % (time.monotonic() - t0))
        check(server.alive() and client.alive(),
              "a proxy exited while the relay was down")


@timeout(60)
def test_proxy_max_tunnels(bindir):
    """--max-tunnels 1 on the server-proxy turns a second tunnel away (the
    client sees a 502 and the reason); on the client-proxy it closes a
    second local connection with a logged reason.  Both serve again once
    the first tunnel closes."""
    with Env(bindir, "proxymax") as env:
        echo = env.service(Echo())
        env.keygen("nas")
        env.keygen("laptop")
        env.write_relay_ini({"nas": ("nas", None)},
                            {"laptop": ("laptop", "nas/*")})
        env.start_relay()
        env.start_server("nas", "nas", {"echo": echo.addr},
                         args=["--max-tunnels", "1"])
        client, ports = env.start_client("laptop", ["nas/echo"])
        lport = ports["nas/echo"]
        a = connect(lport)
        echo_round(a, b"first")
        mark = client.log_size()
        b = connect(lport)
        how, dt, _ = wait_closed(b, 10)
        b.close()
        check(how != "open", "the server-proxy's second tunnel (max 1) was "
              "not turned away within 10 s")
        m = client.wait_log(r"[^\n]*nas/echo failed[^\n]*", 5, start=mark,
                            what="why the second tunnel failed")
        print("server-proxy at max: %s" % m.group(0))
        a.close()
        wait_until(lambda: env.relay.status().get("tunnels") == 0, 10,
                   "the first tunnel to close")
        echo_once(lport, b"again")

        client2, ports2 = env.start_client("laptop", ["nas/echo"],
                                           args=["--max-tunnels", "1"],
                                           name="client2")
        lport2 = ports2["nas/echo"]
        a = connect(lport2)
        echo_round(a, b"first")
        mark = client2.log_size()
        b = connect(lport2)
        how, dt, _ = wait_closed(b, 10)
        b.close()
        check(how != "open", "the client-proxy's second tunnel (max 1) was "
              "not turned away within 10 s")
        m = client2.wait_log(r"[^\n]*(warn|error):[^\n]*", 5, start=mark,
                             what="a warning about the refused connection")
        print("client-proxy at max: %s" % m.group(0))
        a.close()
        wait_until(lambda: env.relay.status().get("tunnels") == 0, 10,
                   "the first tunnel to close")
        # The client-proxy frees the slot once its own side has finished
        # (its last acknowledgement), just after the relay's.
        client2.wait_log(r"tunnel closed id=", 5, start=mark,
                         what="the client-proxy closing the first tunnel")
        echo_once(lport2, b"again")


@timeout(90)
def test_latency_under_load(bindir):
    """While one tunnel moves bulk data as fast as it can, another
    tunnel's small round trips stay quick (no head-of-line blocking in any
    of the three event loops)."""
    from services import Source
    with Env(bindir, "latency") as env:
        echo = env.service(Echo())
        source = env.service(Source(0, endless=True))
        _, client, lp = env.standard({"echo": echo.addr,
                                      "source": source.addr})
        bulk = connect(lp["source"])
        stop = threading.Event()
        moved = [0]

        def drain():
            bulk.settimeout(10)
            try:
                while not stop.is_set():
                    d = bulk.recv(MIB)
                    if not d:
                        return
                    moved[0] += len(d)
            except OSError:
                pass
        t = threading.Thread(target=drain, daemon=True)
        t.start()
        wait_until(lambda: moved[0] > 16 * MIB, 20, "bulk data to flow")
        s = connect(lp["echo"])
        rtts = []
        t0 = time.monotonic()
        m0 = moved[0]
        for i in range(40):
            a = time.monotonic()
            echo_round(s, b"ping %02d " % i + b"." * 56)
            rtts.append(time.monotonic() - a)
            time.sleep(0.05)
        rate = (moved[0] - m0) / (time.monotonic() - t0) / MIB
        stop.set()
        s.close()
        bulk.close()
        rtts.sort()
        print("round trips under a %.0f MiB/s bulk transfer: median %.1f ms,"
              " max %.1f ms" % (rate, rtts[len(rtts) // 2] * 1000,
                                rtts[-1] * 1000))
        check(rate > 1, "the bulk transfer stalled (%.1f MiB/s) while pinging"
              % rate)
        check(rtts[len(rtts) // 2] < 0.2 and rtts[-1] < 1.0,
              "small round trips are slow under load: median %.0f ms, max "
              "%.0f ms" % (rtts[len(rtts) // 2] * 1000, rtts[-1] * 1000))
