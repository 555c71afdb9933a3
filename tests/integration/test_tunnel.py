"""Bytes through a working tunnel: large transfers both ways, many
concurrent tunnels, half-close, a slow reader's memory, idle CPU."""

import hashlib
import os
import random
import re
import socket
import struct
import threading
import time

from harness import (Env, Pattern, TestFailure, check, connect, proc_cpu_ticks,
                     proc_rss_kib, recv_all, recv_hashed, send_pattern,
                     timeout, wait_until)
from services import Echo, EchoClients, HalfClose, Sink, Source, TcpService

MIB = 1 << 20
BIG_MB = int(os.environ.get("POSTERN_IT_BIG_MB", "256"))


def _tunnel_lines(proc):
    return [ln for ln in proc.log().splitlines() if "tunnel " in ln]


@timeout(420)
def test_large_transfer(bindir):
    """BIG_MB MiB client->server into a hashing sink, then BIG_MB MiB
    server->client from a pattern source; sha256 equal both ways."""
    total = BIG_MB * MIB
    with Env(bindir, "large") as env:
        sink = env.service(Sink())
        source = env.service(Source(total, chunk=MIB))
        _, client, lp = env.standard({"sink": sink.addr,
                                      "source": source.addr})
        # Upload.
        s = connect(lp["sink"], timeout=120)
        t0 = time.monotonic()
        sent = send_pattern(s, 7, total)
        s.shutdown(socket.SHUT_WR)
        ans, how = recv_all(s, 120)
        up_s = time.monotonic() - t0
        s.close()
        check(how == "eof", "upload: answer ended by %s, got %r" % (how, ans))
        check(ans.decode(errors="replace").strip() ==
              "%d %s" % (total, sent),
              "upload: sink received %r, sent %d bytes sha256 %s"
              % (ans, total, sent))
        # Download.
        s = connect(lp["source"], timeout=120)
        t0 = time.monotonic()
        n, got = recv_hashed(s, 120)
        down_s = time.monotonic() - t0
        s.close()
        check(source.finished.wait(10), "source never finished writing")
        want = list(source.digests.values())[0]
        check(n == total and got == want,
              "download: received %d bytes sha256 %s, source sent %d sha256"
              " %s" % (n, got, total, want))
        print("upload %d MiB in %.2f s (%.0f MiB/s), download in %.2f s "
              "(%.0f MiB/s)" % (BIG_MB, up_s, BIG_MB / up_s, down_s,
                                BIG_MB / down_s))
        # Both tunnels logged open and closed with their byte counts.
        wait_until(lambda: len(re.findall(r"tunnel closed id=",
                                          client.log())) >= 2,
                   10, "two 'tunnel closed' lines in the client log")
        closed = [ln for ln in client.log().splitlines()
                  if "tunnel closed id=" in ln]
        for ln in closed:
            check(re.search(r"\bup=\d+\b", ln) and re.search(r"\bdown=\d+",
                                                              ln)
                  and re.search(r"\bduration=[0-9.]+s", ln)
                  and re.search(r"\breason=\S", ln),
                  "tunnel closed line lacks up=/down=/duration=/reason=: %s"
                  % ln)
        ups = [int(re.search(r"\bup=(\d+)", ln).group(1)) for ln in closed]
        downs = [int(re.search(r"\bdown=(\d+)", ln).group(1))
                 for ln in closed]
        check(total in ups, "no tunnel closed line says up=%d: %s"
              % (total, closed))
        check(total in downs, "no tunnel closed line says down=%d: %s"
              % (total, closed))


@timeout(240)
def test_concurrent_echo(bindir):
    """200 sockets at once through one client-proxy, each its own tunnel,
    distinct data of mixed sizes in tiny and large writes."""
    n = 200
    rng = random.Random(2024)
    sizes = [0, 1, 17, 1000, 4096, 65535, 65536, 65537, 300 * 1024,
             1 * MIB, 3 * MIB]

    def writer(seed):
        r = random.Random(seed)
        return lambda: r.choice((1, 2, 7, 100, 1460, 16384, 65536, 200000))

    plans = [(1000 + i, rng.choice(sizes), writer(5000 + i))
             for i in range(n)]
    with Env(bindir, "concurrent") as env:
        echo = env.service(Echo())
        # A burst of 200 connects for one port outruns the server-proxy's
        # listens; the relay queues at most max_pending_connects of them
        # (default 64) and answers the rest 503 busy, by design.  This
        # test is about carrying 200 tunnels at once, so it raises the
        # queue to fit the burst.
        _, client, lp = env.standard(
            {"echo": echo.addr}, settings={"max_pending_connects": "256"})
        t0 = time.monotonic()
        total = EchoClients(lp["echo"], plans, timeout=150).run()
        dt = time.monotonic() - t0
        print("%d tunnels, %d bytes each way in %.1f s" % (n, total, dt))
        check(echo.accepted == n, "echo service accepted %d connections, "
              "expected %d" % (echo.accepted, n))
        check(not echo.errors, "echo service errors: %s" % echo.errors[:3])
        env.relay.wait_status(lambda s: s.get("tunnels") == 0, 20,
                              "the relay to count 0 tunnels")
        wait_until(lambda: client.log().count("tunnel closed id=") >= n,
                   20, "%d 'tunnel closed' lines in the client log" % n)


@timeout(90)
def test_half_close(bindir):
    """Client writes then shuts down its write side; the target sees EOF
    and only then answers; the client reads the answer, then EOF."""
    with Env(bindir, "halfclose") as env:
        svc = env.service(HalfClose())
        _, client, lp = env.standard({"hc": svc.addr})
        s = connect(lp["hc"])
        data = b"question: " + Pattern(3, 100000).chunk(100000)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        check(svc.saw_eof.wait(15),
              "the target never saw EOF after the client's SHUT_WR (client "
              "log tail: %s)" % client.log()[-500:])
        check(svc.received == data, "target received %d bytes, sent %d"
              % (len(svc.received), len(data)))
        ans, how = recv_all(s, 15)
        s.close()
        want = b"answer: got %d bytes sha256 %s\n" % (
            len(data), hashlib.sha256(data).hexdigest().encode())
        check(ans == want, "client read %r, expected %r" % (ans, want))
        check(how == "eof", "after the answer the client socket ended by %s,"
              " expected a clean EOF" % how)
        # A second round on a fresh tunnel: half-close with no data at all.
        s = connect(lp["hc"])
        svc.saw_eof.clear()
        s.shutdown(socket.SHUT_WR)
        check(svc.saw_eof.wait(15), "empty half-close: target saw no EOF")
        ans, how = recv_all(s, 15)
        s.close()
        check(ans.startswith(b"answer: got 0 bytes") and how == "eof",
              "empty half-close: client read %r then %s" % (ans, how))


def _rss(procs):
    return dict((p.name, proc_rss_kib(p.pid)) for p in procs)


@timeout(300)
def test_slow_reader(bindir):
    """The TCP client stops reading while the target writes 200 MiB: the
    RSS of relay, server-proxy and client-proxy stays bounded while the
    writer is blocked; after resuming, every byte arrives intact."""
    total = 200 * MIB
    bound_kib = 64 * 1024
    with Env(bindir, "slowreader") as env:
        source = env.service(Source(total, chunk=256 * 1024))
        server, client, lp = env.standard({"source": source.addr})
        procs = [env.relay.proc, server, client]
        s = connect(lp["source"], timeout=60)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        h = hashlib.sha256()
        got = 0
        s.settimeout(30)
        while got < MIB:
            d = s.recv(MIB - got)
            check(d, "tunnel ended after %d bytes" % got)
            h.update(d)
            got += len(d)
        base = _rss(procs)
        # Stop reading; wait for the source to block.
        last = [source.sent, time.monotonic()]

        def blocked():
            if source.sent != last[0]:
                last[0] = source.sent
                last[1] = time.monotonic()
                return False
            return time.monotonic() - last[1] >= 2.0
        wait_until(blocked, 60, "the target's writer to block", 0.1)
        check(source.sent < total, "the writer never blocked: all %d bytes "
              "left the target while the client read nothing" % total)
        peak = dict(base)
        for _ in range(10):
            for name, v in _rss(procs).items():
                peak[name] = max(peak[name], v)
            time.sleep(0.2)
        buffered = source.sent - got
        print("writer blocked with %.1f MiB in flight; RSS KiB base %s peak "
              "%s" % (buffered / MIB, base, peak))
        over = dict((n, peak[n] - base[n]) for n in peak)
        for name, d in over.items():
            check(d <= bound_kib, "%s grew %d KiB (> %d KiB) while the "
                  "reader was stalled (%.1f MiB in flight)"
                  % (name, d, bound_kib, buffered / MIB))
        # Resume and check the whole stream.
        s.settimeout(120)
        while True:
            d = s.recv(MIB)
            if not d:
                break
            h.update(d)
            got += len(d)
        s.close()
        check(source.finished.wait(10), "the source did not finish")
        want = list(source.digests.values())[0]
        check(got == total and h.hexdigest() == want,
              "after resuming: %d bytes sha256 %s, expected %d sha256 %s"
              % (got, h.hexdigest(), total, want))


@timeout(90)
def test_idle_cpu(bindir):
    """With one idle tunnel open, relay and proxies use (near) no CPU over
    5 s."""
    with Env(bindir, "idlecpu") as env:
        echo = env.service(Echo())
        server, client, lp = env.standard({"echo": echo.addr})
        s = connect(lp["echo"])
        s.sendall(b"ping\n")
        ans = b""
        s.settimeout(10)
        while len(ans) < 5:
            d = s.recv(100)
            check(d, "echo tunnel ended early")
            ans += d
        check(ans == b"ping\n", "echo answered %r" % ans)
        time.sleep(1.0)
        procs = [env.relay.proc, server, client]
        t0 = dict((p.name, proc_cpu_ticks(p.pid)) for p in procs)
        time.sleep(5.0)
        t1 = dict((p.name, proc_cpu_ticks(p.pid)) for p in procs)
        used = dict((n, t1[n] - t0[n]) for n in t0)
        print("CPU ticks over 5 s with one idle tunnel: %s" % used)
        for n, v in used.items():
            check(v <= 5, "%s used %d ticks (%.2f s) of CPU in 5 s while idle"
                  % (n, v, v / os.sysconf("SC_CLK_TCK")))
        # The tunnel still works after the idle period.
        s.sendall(b"again\n")
        ans = b""
        while len(ans) < 6:
            d = s.recv(100)
            check(d, "echo tunnel ended during the idle period")
            ans += d
        s.close()


@timeout(60)
def test_tunnel_log_lines(bindir):
    """Relay, server-proxy and client-proxy each log one 'tunnel open
    id=ID' and one 'tunnel closed id=ID ... up=B down=B duration=Ss
    reason=R' line per tunnel, with the relay's ID and the right byte
    counts (payload bytes for the proxies, frame bytes for the relay)."""
    with Env(bindir, "loglines") as env:
        echo = env.service(Echo())
        server, client, lp = env.standard({"echo": echo.addr})
        s = connect(lp["echo"])
        data = Pattern(5, 12345).chunk(12345)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        back, how = recv_all(s, 15)
        s.close()
        check(back == data and how == "eof", "echo returned %d bytes then %s"
              % (len(back), how))
        # The relay last: the proxies' lines show the tunnel is over.
        procs = [client, server, env.relay.proc]
        ids = {}
        for p in procs:
            m = p.wait_log(r"tunnel closed id=(\S+)[^\n]*", timeout=5,
                           what="'tunnel closed id=...' (per the brief's "
                           "log contract)")
            line = m.group(0)
            tid = m.group(1)
            ids[p.name] = tid
            check(re.search(r"tunnel open id=%s\b" % re.escape(tid),
                            p.log()),
                  "%s logged no 'tunnel open id=%s' line" % (p.name, tid))
            for field in ("up", "down"):
                fm = re.search(r"\b%s=(\d+)\b" % field, line)
                check(fm, "%s: no %s= in: %s" % (p.name, field, line))
                n = int(fm.group(1))
                if p is env.relay.proc:
                    # The relay pipes bodies without decoding them, so it
                    # counts M-PROXY frame bytes: the payload plus a few
                    # dozen bytes of headers per frame.
                    check(len(data) <= n <= len(data) + 2048,
                          "relay: %s=%d is not the %d payload bytes plus "
                          "frame headers: %s" % (field, n, len(data), line))
                else:
                    check(n == len(data), "%s: %s= is not %d in: %s"
                          % (p.name, field, len(data), line))
            check(re.search(r"\bduration=[0-9.]+s\b", line),
                  "%s: no duration=...s in: %s" % (p.name, line))
            check(re.search(r"\breason=\S+", line),
                  "%s: no reason=... in: %s" % (p.name, line))
            print("%s: %s" % (p.name, line))
        check(len(set(ids.values())) == 1,
              "the three logs name different tunnel IDs: %s" % ids)
        check(re.fullmatch(r"[A-Za-z0-9_-]{22}", ids["relay"]),
              "tunnel id %r is not the relay's 22-character ID" % ids["relay"])


class _BannerThenRead(TcpService):
    """Sends a banner, shuts down its write side at once, then reads to EOF
    (the reverse half-close: the server side finishes first)."""

    def __init__(self):
        super().__init__("banner")
        self.received = None
        self.done = threading.Event()

    def handle(self, c):
        c.sendall(b"banner: this side is done writing\n")
        c.shutdown(socket.SHUT_WR)
        buf = bytearray()
        c.settimeout(30)
        while True:
            d = c.recv(65536)
            if not d:
                break
            buf += d
        self.received = bytes(buf)
        self.done.set()


class _Resetter(TcpService):
    """Reads one chunk, then resets the connection (SO_LINGER 0)."""

    def __init__(self):
        super().__init__("resetter")

    def handle(self, c):
        c.settimeout(30)
        c.recv(65536)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))
        c.close()


@timeout(60)
def test_half_close_reverse(bindir):
    """The target writes and shuts down first; the client reads to EOF,
    then still sends, and the target receives every byte."""
    with Env(bindir, "halfclose-rev") as env:
        svc = env.service(_BannerThenRead())
        _, client, lp = env.standard({"banner": svc.addr})
        s = connect(lp["banner"])
        got, how = recv_all(s, 15)
        check(got == b"banner: this side is done writing\n" and how == "eof",
              "client read %r then %s, expected the banner then EOF"
              % (got, how))
        data = Pattern(9, 300000).chunk(300000)
        s.sendall(data)
        s.shutdown(socket.SHUT_WR)
        check(svc.done.wait(15), "the target never saw EOF; client log: %s"
              % client.log()[-500:])
        check(svc.received == data, "the target received %d bytes, the "
              "client sent %d after its EOF" % (len(svc.received),
                                                len(data)))
        rest, how = recv_all(s, 10)
        s.close()
        check(rest == b"" and how == "eof", "after both ends finished the "
              "client read %r then %s" % (rest[:100], how))


@timeout(60)
def test_target_reset(bindir):
    """The target resets its connection: the client's local socket is
    reset too (not a clean EOF) and the client log says so."""
    with Env(bindir, "targetreset") as env:
        svc = env.service(_Resetter())
        _, client, lp = env.standard({"rst": svc.addr})
        s = connect(lp["rst"])
        s.sendall(b"hello")
        got, how = recv_all(s, 10)
        s.close()
        check(how == "reset", "the client's socket ended by %s (read %r), "
              "expected a reset as the target's" % (how, got[:100]))
        m = client.wait_log(r"tunnel closed id=[^\n]*", 10,
                            what="a 'tunnel closed' line")
        check(re.search(r"reset|ECONNRESET", m.group(0), re.I),
              "the client log does not say the target reset: %s"
              % m.group(0))
        print(m.group(0))


@timeout(240)
def test_duplex_echo(bindir):
    """128 MiB through an echo with both directions moving at once (writes
    of mixed sizes), sha256 equal."""
    total = min(128, BIG_MB) * MIB
    with Env(bindir, "duplex") as env:
        echo = env.service(Echo())
        _, client, lp = env.standard({"echo": echo.addr})
        r = random.Random(77)
        t0 = time.monotonic()
        EchoClients(lp["echo"], [(77, total, lambda: r.choice(
            (1, 1000, 65536, 1 << 20)))], timeout=180).run()
        dt = time.monotonic() - t0
        print("%d MiB each way at once in %.2f s (%.0f MiB/s each way)"
              % (total // MIB, dt, total / MIB / dt))


@timeout(240)
def test_relay_io_paths(bindir):
    """The relay's two ways of moving a stream give the same bytes: its
    own chunked writes and upload daemons (the defaults), and
    libmicrohttpd's buffers alone (direct_write = off, upload_memory no
    bigger than connection_memory).  Four tunnels at once each way echo
    32 MiB in writes of mixed sizes, sha256 checked."""
    total = min(32, BIG_MB) * MIB
    for name, settings in (("direct", {}),
                           ("mhd", {"direct_write": "off",
                                    "upload_memory": "12k"})):
        with Env(bindir, "iopaths-" + name) as env:
            echo = env.service(Echo())
            _, client, lp = env.standard({"echo": echo.addr},
                                         settings=settings)
            r = random.Random(5)
            t0 = time.monotonic()
            EchoClients(lp["echo"], [(s, total, lambda: r.choice(
                (1, 700, 16384, 65536, 1 << 20))) for s in range(4)],
                timeout=180).run()
            dt = time.monotonic() - t0
            print("%s: 4 x %d MiB each way in %.2f s"
                  % (name, total // MIB, dt))
