"""A fault-injecting TCP forwarder for the integration tests.

    fp = FaultProxy(("127.0.0.1", relay_port), seed=1)
    url = "http://127.0.0.1:%d" % fp.port     # give this to a proxy
    fp.cut(100, 500, how="mix")   # cut every connection after 100-500 ms
    fp.blackhole()                # stop forwarding, close nothing
    fp.pass_through()             # forward normally (held bytes go on)
    fp.refuse()                   # new connections are refused
    fp.stats()                    # connections, cuts, bytes each way
    fp.stop()

It listens on 127.0.0.1 (an ephemeral port) and forwards each accepted
connection to the target.  One thread runs every connection with a
selector, so the modes can change at any moment from the test's thread
without racing a blocked recv(): a cut closes both sockets of a
connection from the loop itself, either with a FIN (shutdown, close) or
with a reset (SO_LINGER 0, close), as a middlebox or a flaky link would.

Modes (each applies to the connections open now and to new ones):

- pass: bytes are copied both ways; a half-close (EOF) is passed on as
  shutdown(SHUT_WR), a reset as a reset.
- cut lo hi how: as pass, but every connection lives a random time,
  uniform in [lo, hi] ms (from its accept, or from the mode change for
  those already open), then is cut; how is "fin", "rst" or "mix" (each
  cut picks one at random).  The RNG is seeded, so a run's lifetimes and
  kinds of cut repeat (their effect depends on timing, of course).
- blackhole: nothing is read or written on any connection, and nothing
  is closed: the peers see a path that has gone silent (their kernels
  still take what fits in the socket buffers, as a vanished host's
  last router would not, but nothing arrives).  New connections are
  accepted and held the same way.  With drop=True the bytes that arrive
  are read and thrown away instead (the sockets never fill up).
  Switching back to pass (or cut) forwards what was held.
- refuse: the listening socket is closed, so connects are refused
  (ECONNREFUSED); open connections carry on.  Any other mode listens
  again on the same port.

Throughput on loopback, one connection, 2-core VM: about 1000 MiB/s one
way, 750 MiB/s each way at once (the self-test measures it:
python3 tests/integration/faultproxy.py)."""

import errno
import heapq
import random
import selectors
import socket
import struct
import threading
import time

BUF = 256 * 1024


def _linger0(s):
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                     struct.pack("ii", 1, 0))
    except OSError:
        pass


class _Dir:
    """One direction of a connection: src -> dst, with the bytes read from
    src and not yet written to dst."""

    __slots__ = ("src", "dst", "buf", "view", "off", "end", "eof", "shut",
                 "name")

    def __init__(self, src, dst, name):
        self.src = src
        self.dst = dst
        self.buf = bytearray(BUF)
        self.view = memoryview(self.buf)
        self.off = 0      # bytes of buf already written to dst
        self.end = 0      # bytes of buf read from src
        self.eof = False  # src sent FIN
        self.shut = False  # FIN passed on to dst
        self.name = name

    def pending(self):
        return self.end - self.off


class _Conn:
    __slots__ = ("id", "down", "up", "up_dir", "down_dir", "connecting",
                 "deadline", "closed", "events")

    def __init__(self, cid, down, up):
        self.id = cid
        self.down = down            # the accepted socket (the proxy)
        self.up = up
        self.connecting = True
        self.up_dir = _Dir(down, up, "up")      # proxy -> target
        self.down_dir = _Dir(up, down, "down")  # target -> proxy
        self.deadline = None
        self.closed = False
        self.events = {}


class FaultProxy:
    def __init__(self, target, seed=0, host="127.0.0.1", port=0,
                 name="faultproxy"):
        self.target = tuple(target)
        self.name = name
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.mode = "pass"
        self.cut_lo = self.cut_hi = 0
        self.cut_how = "mix"
        self.drop = False
        self.counts = {"connections": 0, "cuts": 0, "cuts_fin": 0,
                       "cuts_rst": 0, "up": 0, "down": 0, "dropped": 0,
                       "refused_target": 0, "closed": 0}
        self.conns = {}
        self.next_id = 1
        self.timers = []            # (deadline, conn id)
        self.sel = selectors.DefaultSelector()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.wake_w.setblocking(False)
        self.sel.register(self.wake_r, selectors.EVENT_READ, ("wake", None))
        self.host = host
        self.lsock = None
        self._listen(port)
        self.port = self.lsock.getsockname()[1]
        self.addr = (host, self.port)
        self.url = "http://%s:%d" % (host, self.port)
        self.stopping = False
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True,
                                       name=name)
        self.thread.start()

    # -- control (any thread) --------------------------------------------

    def _set(self, **kw):
        with self.lock:
            for k, v in kw.items():
                setattr(self, k, v)
            self._changed = True
        self._wake()

    def pass_through(self):
        self._set(mode="pass")

    def cut(self, lo_ms, hi_ms, how="mix"):
        if how not in ("fin", "rst", "mix"):
            raise ValueError("how must be fin, rst or mix")
        if not 0 <= lo_ms <= hi_ms:
            raise ValueError("need 0 <= lo <= hi")
        self._set(mode="cut", cut_lo=lo_ms, cut_hi=hi_ms, cut_how=how)

    def blackhole(self, drop=False):
        self._set(mode="blackhole", drop=drop)

    def refuse(self):
        self._set(mode="refuse")

    def stats(self):
        with self.lock:
            d = dict(self.counts)
            d["active"] = len(self.conns)
            d["mode"] = self.mode
        return d

    def stop(self):
        self.stopping = True
        self._wake()
        self.thread.join(5)
        for c in list(self.conns.values()):
            for s in (c.down, c.up):
                try:
                    s.close()
                except OSError:
                    pass
        if self.lsock is not None:
            self.lsock.close()
        self.wake_r.close()
        self.wake_w.close()
        self.sel.close()

    def _wake(self):
        try:
            self.wake_w.send(b"x")
        except (BlockingIOError, OSError):
            pass

    # -- the loop ---------------------------------------------------------

    def _listen(self, port):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, port))
        s.listen(512)
        s.setblocking(False)
        self.lsock = s
        self.sel.register(s, selectors.EVENT_READ, ("listen", None))

    def _run(self):
        self._changed = True
        try:
            while not self.stopping:
                if self._changed:
                    with self.lock:
                        self._changed = False
                    self._apply_mode()
                timeout = None
                now = time.monotonic()
                while self.timers:
                    dl, cid = self.timers[0]
                    c = self.conns.get(cid)
                    if c is None or c.deadline != dl:
                        heapq.heappop(self.timers)
                        continue
                    if dl <= now:
                        heapq.heappop(self.timers)
                        self._cut(c)
                        continue
                    timeout = dl - now
                    break
                for key, ev in self.sel.select(timeout):
                    kind, c = key.data
                    if kind == "wake":
                        try:
                            while self.wake_r.recv(4096):
                                pass
                        except BlockingIOError:
                            pass
                    elif kind == "listen":
                        self._accept()
                    elif not c.closed:
                        self._io(c, key.fileobj, ev)
        except Exception as e:  # a bug here must not hang the test
            self.error = repr(e)
            raise

    def _apply_mode(self):
        mode = self.mode
        if mode == "refuse":
            if self.lsock is not None:
                self.sel.unregister(self.lsock)
                self.lsock.close()
                self.lsock = None
        elif self.lsock is None:
            try:
                self._listen(self.port)
            except OSError as e:
                # Someone took the port meanwhile: connects fail, and the
                # test sees why.
                self.error = "cannot listen on port %d again: %s" % (
                    self.port, e)
        now = time.monotonic()
        for c in list(self.conns.values()):
            if mode == "cut":
                if c.deadline is None:
                    self._arm(c, now)
            else:
                c.deadline = None
            self._interest(c)

    def _arm(self, c, now):
        life = self.rng.uniform(self.cut_lo, self.cut_hi) / 1000.0
        c.deadline = now + life
        heapq.heappush(self.timers, (c.deadline, c.id))

    def _accept(self):
        while True:
            try:
                down, _ = self.lsock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            down.setblocking(False)
            down.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            up = socket.socket()
            up.setblocking(False)
            up.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            rc = up.connect_ex(self.target)
            c = _Conn(self.next_id, down, up)
            self.next_id += 1
            with self.lock:
                self.counts["connections"] += 1
                self.conns[c.id] = c
            if rc not in (0, errno.EINPROGRESS):
                with self.lock:
                    self.counts["refused_target"] += 1
                self._close(c, reset=True)
                continue
            if self.mode == "cut":
                self._arm(c, time.monotonic())
            self._interest(c)

    def _interest(self, c):
        """Registers what each socket of c waits for in the current
        mode."""
        if c.closed:
            return
        want = {c.down: 0, c.up: 0}
        hole = self.mode == "blackhole"
        if c.connecting:
            want[c.up] = selectors.EVENT_WRITE
            if hole and self.drop:
                want[c.down] |= selectors.EVENT_READ
        elif hole:
            if self.drop:
                for d in (c.up_dir, c.down_dir):
                    if not d.eof:
                        want[d.src] |= selectors.EVENT_READ
        else:
            for d in (c.up_dir, c.down_dir):
                if d.pending():
                    want[d.dst] |= selectors.EVENT_WRITE
                elif not d.eof:
                    want[d.src] |= selectors.EVENT_READ
        for s, ev in want.items():
            old = c.events.get(s, 0)
            if ev == old:
                continue
            if old == 0:
                self.sel.register(s, ev, ("conn", c))
            elif ev == 0:
                self.sel.unregister(s)
            else:
                self.sel.modify(s, ev, ("conn", c))
            c.events[s] = ev

    def _io(self, c, s, ev):
        if c.connecting:
            if s is c.up and ev & selectors.EVENT_WRITE:
                err = c.up.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    with self.lock:
                        self.counts["refused_target"] += 1
                    self._close(c, reset=True)
                    return
                c.connecting = False
            elif self.mode == "blackhole" and self.drop:
                self._drop(c, s)
            self._interest(c)
            return
        if self.mode == "blackhole":
            if self.drop:
                self._drop(c, s)
            self._interest(c)
            return
        for d in (c.up_dir, c.down_dir):
            if c.closed:
                return
            if s is d.dst and ev & selectors.EVENT_WRITE and d.pending():
                self._write(c, d)
            if c.closed:
                return
            if s is d.src and ev & selectors.EVENT_READ and \
                    not d.pending() and not d.eof:
                self._read(c, d)
        if not c.closed:
            self._interest(c)

    def _drop(self, c, s):
        try:
            n = len(s.recv(BUF))
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(c, reset=True)
            return
        if n == 0:
            d = c.up_dir if s is c.down else c.down_dir
            d.eof = True
        with self.lock:
            self.counts["dropped"] += n

    def _read(self, c, d):
        try:
            n = d.src.recv_into(d.buf, BUF)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            # The peer reset (or the socket failed): a reset for the other
            # side too, as a transparent path would show it.
            self._close(c, reset=True)
            return
        if n == 0:
            d.eof = True
            self._flush_eof(c, d)
            return
        d.off = 0
        d.end = n
        with self.lock:
            self.counts[d.name] += n
        self._write(c, d)

    def _write(self, c, d):
        try:
            k = d.dst.send(d.view[d.off:d.end])
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(c, reset=True)
            return
        d.off += k
        if not d.pending():
            d.off = d.end = 0
            if d.eof:
                self._flush_eof(c, d)

    def _flush_eof(self, c, d):
        if d.pending() or d.shut:
            return
        d.shut = True
        try:
            d.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        if c.up_dir.shut and c.down_dir.shut:
            self._close(c, reset=False)

    def _cut(self, c):
        how = self.cut_how
        if how == "mix":
            how = self.rng.choice(("fin", "rst"))
        with self.lock:
            self.counts["cuts"] += 1
            self.counts["cuts_" + how] += 1
        self._close(c, reset=how == "rst", shutdown=True)

    def _close(self, c, reset, shutdown=False):
        if c.closed:
            return
        c.closed = True
        c.deadline = None
        # Counted before the sockets close: whoever sees the close sees
        # the counts that go with it.
        with self.lock:
            self.conns.pop(c.id, None)
            self.counts["closed"] += 1
        for s in (c.down, c.up):
            if c.events.get(s):
                self.sel.unregister(s)
            if reset:
                _linger0(s)
            elif shutdown:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            try:
                s.close()
            except OSError:
                pass
        c.events.clear()


# -- self-test: python3 faultproxy.py -----------------------------------------

def _selftest():
    import os

    # The test services (run as a script, this file's folder is on the
    # path).
    from services import Echo, Sink

    MIB = 1 << 20
    failures = []

    def check(cond, msg):
        if not cond:
            failures.append(msg)
            print("FAIL " + msg)

    def send_total(s, block, total):
        """Writes total bytes in blocks, then half-closes."""
        sent = 0
        while sent < total:
            s.sendall(block)
            sent += len(block)
        s.shutdown(socket.SHUT_WR)

    def silent(s, secs, what):
        """Nothing arrives on s for secs."""
        s.settimeout(secs)
        try:
            d = s.recv(100)
            check(False, "blackhole: %s got %r" % (what, d))
        except socket.timeout:
            pass

    def echo_round(port, data, timeout=10):
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        got = bytearray()

        def reader():
            try:
                while True:
                    d = s.recv(BUF)
                    if not d:
                        return
                    got.extend(d)
            except OSError:
                pass
        t = threading.Thread(target=reader, daemon=True)
        t.start()
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        t.join(timeout)
        s.close()
        return bytes(got)

    # 1. pass-through: bytes intact both ways, half-close passed on.
    echo = Echo()
    fp = FaultProxy(echo.addr, seed=1)
    data = os.urandom(3 * MIB + 17)
    check(echo_round(fp.port, data) == data, "pass: echo differs")
    st = fp.stats()
    check(st["up"] == len(data) and st["down"] == len(data),
          "pass: counted %s" % st)

    # 2. throughput, one direction into a sink.
    sink = Sink()
    fp2 = FaultProxy(sink.addr, seed=2)
    total = 1024 * MIB
    block = os.urandom(4 * MIB)
    s = socket.create_connection(("127.0.0.1", fp2.port))
    t0 = time.monotonic()
    send_total(s, block, total)
    ans = s.recv(200)
    dt = time.monotonic() - t0
    s.close()
    check(ans.split()[0] == b"%d" % total, "throughput: sink got %r" % ans)
    rate = total / MIB / dt
    print("throughput: %d MiB in %.2f s = %.0f MiB/s through the forwarder"
          % (total // MIB, dt, rate))
    check(rate > 100, "throughput %.0f MiB/s is under 100 MiB/s" % rate)
    fp2.stop()
    sink.stop()

    # 3. duplex throughput through the echo.
    total = 256 * MIB
    s = socket.create_connection(("127.0.0.1", fp.port))
    got = [0]

    def rd():
        while True:
            d = s.recv(1 << 20)
            if not d:
                return
            got[0] += len(d)
    t = threading.Thread(target=rd, daemon=True)
    t.start()
    t0 = time.monotonic()
    send_total(s, block, total)
    t.join(60)
    dt = time.monotonic() - t0
    s.close()
    check(got[0] == total, "duplex: got %d of %d" % (got[0], total))
    print("duplex: %d MiB each way in %.2f s = %.0f MiB/s each way"
          % (total // MIB, dt, total / MIB / dt))

    # 4. cuts: every connection ends within hi ms, by FIN or by reset.
    fp.cut(50, 150, how="mix")
    kinds = {"eof": 0, "reset": 0}
    for i in range(20):
        s = socket.create_connection(("127.0.0.1", fp.port), timeout=5)
        t0 = time.monotonic()
        how = None
        try:
            while True:
                s.sendall(b"x" * 1000)
                d = s.recv(65536)
                if not d:
                    how = "eof"
                    break
        except (ConnectionResetError, BrokenPipeError):
            how = "reset"
        except socket.timeout:
            how = "timeout"
        dt = time.monotonic() - t0
        s.close()
        check(how in kinds and dt < 0.5,
              "cut: connection %d ended by %s after %.3f s" % (i, how, dt))
        if how in kinds:
            kinds[how] += 1
    st = fp.stats()
    print("cuts: %s; client saw %s" % (st, kinds))
    check(st["cuts"] >= 20 and st["cuts_fin"] > 0 and st["cuts_rst"] > 0,
          "cut: counted %s" % st)
    check(kinds["eof"] > 0 and kinds["reset"] > 0,
          "cut: the client saw %s (want both kinds)" % kinds)

    # 5. blackhole: nothing arrives, nothing is closed; pass resumes.
    fp.pass_through()
    s = socket.create_connection(("127.0.0.1", fp.port), timeout=5)
    s.sendall(b"before")
    check(s.recv(100) == b"before", "blackhole: no echo before")
    fp.blackhole()
    time.sleep(0.1)
    s.sendall(b"held")
    silent(s, 0.5, "an open connection")
    s2 = socket.create_connection(("127.0.0.1", fp.port), timeout=5)
    s2.sendall(b"new")
    silent(s2, 0.3, "a new connection")
    fp.pass_through()
    s.settimeout(5)
    check(s.recv(100) == b"held", "blackhole: held bytes not delivered "
          "after pass")
    s2.settimeout(5)
    check(s2.recv(100) == b"new", "blackhole: new connection's bytes not "
          "delivered after pass")
    s.close()
    s2.close()

    # 5b. blackhole with drop: bytes vanish, the connection stays open.
    s = socket.create_connection(("127.0.0.1", fp.port), timeout=5)
    fp.blackhole(drop=True)
    time.sleep(0.1)
    s.sendall(b"lost" * 1000)
    wait_end = time.monotonic() + 5
    while fp.stats()["dropped"] < 4000 and time.monotonic() < wait_end:
        time.sleep(0.05)
    check(fp.stats()["dropped"] >= 4000, "drop: %s" % fp.stats())
    fp.pass_through()
    s.sendall(b"kept")
    s.settimeout(5)
    check(s.recv(100) == b"kept", "drop: dropped bytes came through, or "
          "nothing after pass")
    s.close()

    # 6. refuse: connects fail; back to pass, connects work again.
    fp.refuse()
    time.sleep(0.1)
    try:
        socket.create_connection(("127.0.0.1", fp.port), timeout=2).close()
        check(False, "refuse: a connect succeeded")
    except ConnectionRefusedError:
        pass
    fp.pass_through()
    time.sleep(0.1)
    check(echo_round(fp.port, b"again") == b"again", "refuse: no echo after")
    print("final stats: %s" % fp.stats())
    fp.stop()
    echo.stop()
    check(fp.error is None, "loop error: %s" % fp.error)
    print("faultproxy self-test: %s" % ("FAIL" if failures else "ok"))
    return 1 if failures else 0


if __name__ == "__main__":
    import sys
    sys.exit(_selftest())
