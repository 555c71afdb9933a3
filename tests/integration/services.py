"""TCP services the tests expose through the tunnel: echo, hashing sink,
pattern source, half-close responder, and a selector-driven many-socket
echo client (echo_duplex, EchoClients).  All bind 127.0.0.1 on an
ephemeral port; all threads are daemons and stop() closes every socket,
so a failing test cannot hang on them."""

import hashlib
import selectors
import socket
import threading
import time

from harness import Pattern, TestFailure


class TcpService:
    """Accept loop in a thread; handler(conn, service) per connection in its
    own thread."""

    def __init__(self, name):
        self.name = name
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(512)
        self.port = self.lsock.getsockname()[1]
        self.addr = ("127.0.0.1", self.port)
        self.conns = []
        self.errors = []
        self.accepted = 0
        self.lock = threading.Lock()
        self.stopping = False
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self.lock:
                self.conns.append(c)
                self.accepted += 1
            threading.Thread(target=self._run, args=(c,), daemon=True).start()

    def _run(self, c):
        try:
            self.handle(c)
        except OSError as e:
            if not self.stopping:
                with self.lock:
                    self.errors.append(repr(e))
        finally:
            try:
                c.close()
            except OSError:
                pass

    def handle(self, c):
        raise NotImplementedError

    def stop(self):
        self.stopping = True
        try:
            self.lsock.close()
        except OSError:
            pass
        with self.lock:
            for c in self.conns:
                try:
                    c.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                try:
                    c.close()
                except OSError:
                    pass


class Echo(TcpService):
    """Echoes everything; on EOF, half-closes after the last byte."""

    def __init__(self):
        super().__init__("echo")

    def handle(self, c):
        while True:
            d = c.recv(1 << 18)
            if not d:
                c.shutdown(socket.SHUT_WR)
                # Wait for the peer to close before close(), so unread data
                # cannot turn the close into a reset.
                c.settimeout(30)
                while c.recv(1 << 16):
                    pass
                return
            c.sendall(d)


class Sink(TcpService):
    """Reads to EOF, then answers 'COUNT SHA256\\n' and closes."""

    def __init__(self):
        super().__init__("sink")
        self.results = []

    def handle(self, c):
        h = hashlib.sha256()
        n = 0
        while True:
            d = c.recv(1 << 20)
            if not d:
                break
            h.update(d)
            n += len(d)
        with self.lock:
            self.results.append((n, h.hexdigest()))
        c.sendall(("%d %s\n" % (n, h.hexdigest())).encode())
        c.shutdown(socket.SHUT_WR)


class Source(TcpService):
    """On connect, writes `total` pattern bytes (seed = connection number,
    from 1), then half-closes and waits for the peer's EOF.  `sent` counts
    bytes handed to the kernel so far (for 'is the writer blocked?'); with
    endless=True it writes until the socket fails."""

    def __init__(self, total, chunk=1 << 16, endless=False):
        super().__init__("source")
        self.total = total
        self.chunk = chunk
        self.endless = endless
        self.sent = 0
        self.digests = {}
        self.finished = threading.Event()
        self.failed = threading.Event()

    def handle(self, c):
        with self.lock:
            seed = self.accepted
        if self.endless:
            block = Pattern(seed, 1 << 20).chunk(1 << 20)
            try:
                while not self.stopping:
                    c.sendall(block)
                    self.sent += len(block)
            except OSError:
                self.failed.set()
            return
        p = Pattern(seed, self.total)
        h = hashlib.sha256()
        while p.left:
            d = p.chunk(self.chunk)
            h.update(d)
            c.sendall(d)
            self.sent += len(d)
        self.digests[seed] = h.hexdigest()
        c.shutdown(socket.SHUT_WR)
        self.finished.set()
        c.settimeout(60)
        while c.recv(1 << 16):
            pass


class HalfClose(TcpService):
    """Reads to EOF (recording that it saw EOF), then sends an answer that
    names what it read, then closes."""

    def __init__(self):
        super().__init__("halfclose")
        self.saw_eof = threading.Event()
        self.received = b""

    def handle(self, c):
        buf = bytearray()
        c.settimeout(30)
        while True:
            d = c.recv(1 << 16)
            if not d:
                break
            buf += d
        self.received = bytes(buf)
        self.saw_eof.set()
        # The answer goes out after the client's EOF arrived: only a real
        # half-close lets it through.
        time.sleep(0.2)
        ans = b"answer: got %d bytes sha256 %s\n" % (
            len(buf), hashlib.sha256(buf).hexdigest().encode())
        c.sendall(ans)
        c.shutdown(socket.SHUT_WR)


class Silent(TcpService):
    """Accepts and holds connections open without a byte."""

    def __init__(self):
        super().__init__("silent")

    def handle(self, c):
        c.settimeout(120)
        while not self.stopping:
            try:
                if not c.recv(1 << 16):
                    return
            except socket.timeout:
                return


def echo_duplex(socks, plans, timeout, stall=None, on_stall=None):
    """Drives connected echo sockets at once from one thread with
    selectors.  plans[i] is (seed, total bytes, write sizes function) for
    socks[i]: each socket writes its pattern in the planned write sizes
    while reading back, then half-closes and reads to EOF.  Fails unless
    every socket got back exactly what it sent (same length and sha256)
    within timeout seconds, and (with stall) with no byte moving for
    stall seconds at most; on_stall() adds to that failure's message.
    Returns the bytes each way, all sockets together."""
    sel = selectors.DefaultSelector()
    states = []
    for i, (s, (seed, total, sizes)) in enumerate(zip(socks, plans)):
        s.setblocking(False)
        st = {"i": i, "sock": s, "pat": Pattern(seed, total),
              "sizes": sizes, "pending": b"", "sent_h": hashlib.sha256(),
              "recv_h": hashlib.sha256(), "sent": 0, "recvd": 0,
              "total": total, "wr_done": False, "eof": False,
              "error": None}
        states.append(st)
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, st)
    live = len(states)
    deadline = time.monotonic() + timeout
    last_progress = time.monotonic()
    while live:
        now = time.monotonic()
        stalled = stall is not None and now - last_progress > stall
        if now > deadline or stalled:
            stuck = [st for st in states if not st["eof"]]
            ex = stuck[0]
            extra = on_stall() if on_stall else ""
            for st in states:
                st["sock"].close()
            raise TestFailure(
                "%d of %d echo sockets unfinished (%s; e.g. #%d: sent %d/%d,"
                " received %d)%s" % (
                    len(stuck), len(states),
                    "after %.0f s" % timeout if now > deadline
                    else "no byte moved for %.0f s" % stall,
                    ex["i"], ex["sent"], ex["total"], ex["recvd"], extra))
        for key, ev in sel.select(timeout=0.5):
            st = key.data
            s = st["sock"]
            if ev & selectors.EVENT_READ:
                try:
                    d = s.recv(1 << 18)
                except BlockingIOError:
                    d = None
                except OSError as e:
                    st["error"] = "read: %r" % e
                    d = b""
                if d:
                    st["recv_h"].update(d)
                    st["recvd"] += len(d)
                    last_progress = time.monotonic()
                elif d == b"":
                    st["eof"] = True
                    sel.unregister(s)
                    s.close()
                    live -= 1
                    continue
            if ev & selectors.EVENT_WRITE and not st["wr_done"]:
                if not st["pending"]:
                    st["pending"] = st["pat"].chunk(st["sizes"]())
                    st["sent_h"].update(st["pending"])
                try:
                    k = s.send(st["pending"])
                except BlockingIOError:
                    k = 0
                except OSError as e:
                    st["error"] = "write: %r" % e
                    k = 0
                    st["pending"] = b""
                    st["pat"].left = 0
                if k:
                    last_progress = time.monotonic()
                st["pending"] = st["pending"][k:]
                st["sent"] += k
                if not st["pending"] and st["pat"].left == 0:
                    st["wr_done"] = True
                    try:
                        s.shutdown(socket.SHUT_WR)
                    except OSError:
                        pass
                    sel.modify(s, selectors.EVENT_READ, st)
    sel.close()
    bad = []
    for st in states:
        same = st["recv_h"].digest() == st["sent_h"].digest()
        if st["error"] or st["recvd"] != st["total"] or not same:
            bad.append("#%d sent %d received %d%s%s" % (
                st["i"], st["sent"], st["recvd"],
                "" if same else " (sha256 differs)",
                " " + st["error"] if st["error"] else ""))
    if bad:
        raise TestFailure("%d of %d echo sockets wrong: %s"
                          % (len(bad), len(states), "; ".join(bad[:5])))
    return sum(st["total"] for st in states)


class EchoClients:
    """Opens one socket per plan to 127.0.0.1:port and drives them all
    with echo_duplex.  Each plan is (seed, total bytes, write sizes
    function)."""

    def __init__(self, port, plans, timeout):
        self.port = port
        self.plans = plans
        self.timeout = timeout

    def run(self):
        socks = []
        for _ in self.plans:
            s = socket.socket()
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.settimeout(10)
            s.connect(("127.0.0.1", self.port))
            socks.append(s)
        return echo_duplex(socks, self.plans, self.timeout)
