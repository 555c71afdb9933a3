"""A client-proxy written from docs/protocol.md alone, in Python: signed
connect and upstream calls with M-PROXY frames, for checking the relay and
a real server-proxy against the wire contract (and for feeding them
malformed frames)."""

import http.client
import json
import queue
import threading

from harness import TestFailure, check

PEER = ("IPv4", "127.0.0.1", 50312)


def frame(header, payload=b""):
    h = header.encode()
    if len(h) > 255:
        raise ValueError("header over 255 bytes")
    return b"\xfe" + bytes([len(h)]) + h + payload


def _peer():
    return "%s,%s,%d" % PEER


def conn_frame(server, port):
    return frame("%s,0,connection,,%s,%s" % (_peer(), server, port))


def data_frame(payload):
    return frame("%s,%d,tcp,," % (_peer(), len(payload)), payload)


def end_frame():
    return frame("%s,1,end,," % _peer(), b" ")


def ping_frame():
    p = b'[1,"ping"]'
    return frame(",,,%d,control" % len(p), p)


def control_frame(items):
    p = json.dumps(items, separators=(",", ":")).encode()
    return frame(",,,%d,control" % len(p), p)


def seq_frame(n, gen=1):
    """docs/protocol.md "Resuming tunnels": the next unit is n."""
    return control_frame([1, "seq", n, gen])


def ack_frame(n, gen=1):
    """We have units 0..n-1 of the peer's direction."""
    return control_frame([1, "ack", n, gen])


def control_items(frames, what):
    """The [1, what, N, G] control frames among (service, fields, payload)."""
    out = []
    for svc, _, payload in frames:
        if svc != "control":
            continue
        try:
            items = json.loads(payload)
        except ValueError:
            continue
        if isinstance(items, list) and len(items) >= 3 and items[1] == what:
            out.append(items)
    return out


class FrameReader:
    """Decodes M-PROXY frames from a byte stream: feed() returns a list of
    (service, header fields, payload)."""

    def __init__(self):
        self.buf = bytearray()
        self.offset = 0

    def feed(self, data):
        self.buf += data
        out = []
        while True:
            if len(self.buf) < 2:
                return out
            if self.buf[0] != 0xFE:
                raise TestFailure("bad frame version byte %#x at offset %d"
                                  % (self.buf[0], self.offset))
            hlen = self.buf[1]
            if len(self.buf) < 2 + hlen:
                return out
            fields = bytes(self.buf[2:2 + hlen]).decode().split(",")
            try:
                dlen = int(fields[3])
            except (IndexError, ValueError):
                raise TestFailure("bad frame header %r at offset %d"
                                  % (fields, self.offset))
            if len(self.buf) < 2 + hlen + dlen:
                return out
            payload = bytes(self.buf[2 + hlen:2 + hlen + dlen])
            del self.buf[:2 + hlen + dlen]
            self.offset += 2 + hlen + dlen
            out.append((fields[4] if len(fields) > 4 else "", fields,
                        payload))


class Stream:
    """One POST with a chunked request body fed from a queue (None ends
    it), in a thread; the response is read into .status/.headers/.body."""

    def __init__(self, env, key, path, timeout=30):
        self.q = queue.Queue()
        self.status = None
        self.headers = {}
        self.body = b""
        self.error = None
        self.done = threading.Event()
        relay = env.relay
        self.headers_sent = env.sign(key, path)
        self.c = http.client.HTTPConnection(relay.host, relay.port,
                                            timeout=timeout)
        self.path = path
        self.t = threading.Thread(target=self._run, daemon=True)
        self.t.start()

    def _gen(self):
        while True:
            item = self.q.get()
            if item is None:
                return
            yield item

    def _run(self):
        try:
            h = dict(self.headers_sent)
            h["Expect"] = ""
            self.c.request("POST", self.path, body=self._gen(), headers=h,
                           encode_chunked=True)
            r = self.c.getresponse()
            self.status = r.status
            self.headers = dict((k.lower(), v) for k, v in r.getheaders())
            self.body = r.read()
        except Exception as e:
            self.error = repr(e)
        finally:
            self.done.set()
            self.c.close()

    def send(self, data):
        self.q.put(data)

    def end(self):
        self.q.put(None)

    def wait(self, timeout):
        check(self.done.wait(timeout), "POST %s did not finish within %.0f s"
              % (self.path, timeout))


class Connect:
    """POST connect: blocks (in a thread) until the relay answers; then
    reads the streamed body frame by frame."""

    def __init__(self, env, key, server, port, timeout=30):
        relay = env.relay
        self.path = "/v1/s/%s/connect/%s" % (server, port)
        self.c = http.client.HTTPConnection(relay.host, relay.port,
                                            timeout=timeout)
        self.c.request("POST", self.path, headers=env.sign(key, self.path))
        self.r = self.c.getresponse()
        self.status = self.r.status
        self.headers = dict((k.lower(), v) for k, v in self.r.getheaders())
        self.id = self.headers.get("postern-connection")
        self.reader = FrameReader()

    def frames(self, until, timeout=15):
        """Reads frames until until(frame list) is true, or the body ends
        (returns (frames, 'end'|'cut'|'timeout'))."""
        got = []
        self.c.sock.settimeout(timeout)
        while not until(got):
            try:
                d = self.r.read1(65536)
            except http.client.IncompleteRead:
                return got, "cut"
            except (ConnectionError, OSError) as e:
                if "timed out" in str(e):
                    return got, "timeout"
                return got, "cut"
            if not d:
                return got, "end"
            got += self.reader.feed(d)
        return got, "ok"

    def close(self):
        self.c.close()
