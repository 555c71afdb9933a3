"""The wire contract seen from a client written from docs/protocol.md
(rawclient.py) against the real relay and server-proxy: headers, frames,
ID binding, single use, and malformed frames."""

import json
import re
import threading
import time

from harness import Env, check, error_json, timeout, wait_until
from rawclient import (Connect, Stream, ack_frame, conn_frame, control_items,
                       data_frame, end_frame, seq_frame,
                       ping_frame)
from services import Echo
from test_errors import FakeServer

# A data frame header declaring ~95 MiB: over every decoder's limit.
BIG = b"IPv4,127.0.0.1,50312,99999999,tcp,,"


def _setup(env, echo, settings=None):
    env.keygen("laptop2")
    return env.standard({"echo": echo.addr}, settings=settings,
                        extra_clients={"laptop2": ("laptop2", "nas/*")})


@timeout(60)
def test_wire_tunnel(bindir):
    """connect answers 200 with Postern-Connection and the streaming
    headers; the server's frames echo our data and end with an end frame;
    upstream answers 200 once our body ended; keepalive control frames
    are ignored."""
    with Env(bindir, "wire") as env:
        echo = env.service(Echo())
        _setup(env, echo)
        c = Connect(env, "laptop", "nas", "echo")
        if c.status != 200:
            check(False, "connect answered %d: %r"
                  % (c.status, c.r.read()[:300]))
        check(c.id and re.fullmatch(r"[A-Za-z0-9_-]{22}", c.id),
              "Postern-Connection header is %r" % c.id)
        for h, want in (("cache-control", "no-store"),
                        ("x-accel-buffering", "no"),
                        ("transfer-encoding", "chunked")):
            check(want in c.headers.get(h, "").lower(),
                  "connect response header %s is %r, expected %r"
                  % (h, c.headers.get(h), want))
        up = Stream(env, "laptop", "/v1/s/nas/upstream/%s" % c.id)
        up.send(conn_frame("nas", "echo"))
        up.send(seq_frame(0))
        up.send(ping_frame())
        up.send(data_frame(b"hello "))
        up.send(ping_frame())
        up.send(data_frame(b"world"))
        frames, how = c.frames(
            lambda fs: b"".join(p for s, _, p in fs if s == "tcp")
            == b"hello world")
        check(how == "ok", "connect body %s before the echo came back "
              "(frames %s)" % (how, frames))
        for svc, fields, _ in frames:
            check(svc in ("tcp", "control"), "unexpected frame %s" % fields)
            if svc == "tcp":
                check(fields[:3] == ["IPv4", "127.0.0.1", "50312"],
                      "data frame names %s, not the TCP client's socket "
                      "IPv4,127.0.0.1,50312" % fields[:3])
        seqs = control_items(frames, "seq")
        check(seqs and seqs[0][2] == 0, "the server's body does not start "
              "with seq 0: %s" % seqs)
        up.send(end_frame())
        # 11 payload bytes and our end: 12 units to be acknowledged, and
        # the server's 11 bytes and end for us to acknowledge.
        more, how = c.frames(
            lambda fs: any(s == "end" for s, _, _ in fs) and
            any(a[2] == 12 for a in control_items(fs, "ack")))
        check(how == "ok", "no end frame and ack 12 from the server (body "
              "%s, frames %s)" % (how, frames + more))
        up.send(ack_frame(12))
        up.end()
        rest, how = c.frames(lambda fs: False, timeout=10)
        check(how == "end" and not [f for f in rest if f[0] != "control"],
              "after the end frame the connect body %s with frames %s"
              % (how, rest))
        up.wait(10)
        check(up.status == 200, "upstream answered %s (%s)"
              % (up.status, up.error or up.body[:200]))
        c.close()
        env.relay.wait_status(lambda st: st.get("tunnels") == 0, 10,
                              "the relay to count 0 tunnels")


@timeout(60)
def test_wire_id_binding(bindir):
    """An ID's upstream is for the client key that connected: another
    client's key or the server's key gets 403, a second upstream 409, an
    accept by the client 403, and a second accept by the server 409."""
    with Env(bindir, "wireid") as env:
        echo = env.service(Echo())
        _setup(env, echo)
        c = Connect(env, "laptop", "nas", "echo")
        check(c.status == 200, "connect answered %d" % c.status)
        up = Stream(env, "laptop", "/v1/s/nas/upstream/%s" % c.id)
        up.send(conn_frame("nas", "echo"))
        up.send(data_frame(b"ping"))
        frames, how = c.frames(lambda fs: any(s == "tcp" for s, _, _ in fs))
        check(how == "ok", "no echo before the checks (%s)" % how)
        relay = env.relay
        path = "/v1/s/nas/upstream/%s" % c.id
        for key, status, code, what in (
                ("laptop2", 403, "forbidden", "another client's upstream"),
                ("nas", 403, "forbidden", "the server key's upstream"),
                ("laptop", 409, "already_used", "a second upstream")):
            st, _, body = relay.request("POST", path,
                                        headers=env.sign(key, path),
                                        body=b"")
            check(st == status, "%s answered %d %r, expected %d"
                  % (what, st, body[:200], status))
            j = error_json(body)
            check(j["code"] == code, "%s: code %r, expected %r"
                  % (what, j["code"], code))
            print("%s -> %d %s: %s" % (what, st, j["code"], j["error"]))
        for key, status, code, what in (
                ("laptop", 403, "forbidden", "the client calling accept"),
                ("nas", 409, "already_used", "a second accept")):
            p = "/v1/s/nas/accept/%s" % c.id
            st, _, body = relay.request("POST", p, headers=env.sign(key, p))
            check(st == status, "%s answered %d %r, expected %d"
                  % (what, st, body[:200], status))
            j = error_json(body)
            check(j["code"] == code, "%s: code %r, expected %r"
                  % (what, j["code"], code))
            print("%s -> %d %s: %s" % (what, st, j["code"], j["error"]))
        # The tunnel survived all that.
        up.send(data_frame(b"still"))
        frames, how = c.frames(
            lambda fs: b"still" in b"".join(p for s, _, p in fs))
        check(how == "ok", "tunnel broken by the refused calls (%s)" % how)
        up.send(end_frame())
        up.end()
        c.frames(lambda fs: any(s == "end" for s, _, _ in fs))
        up.wait(10)
        c.close()


@timeout(60)
def test_wire_bad_frames(bindir):
    """Garbage instead of frames on upstream ends that tunnel (the connect
    body does not end cleanly), the server-proxy logs an error naming the
    byte offset, and everything keeps serving.  (The relay keeps each
    failed tunnel for resume_grace, 2 s here: this raw client does not
    come back.)"""
    with Env(bindir, "wirebad") as env:
        echo = env.service(Echo())
        server, client, lp = _setup(env, echo, {"resume_grace": "2"})
        for name, garbage, offset in (
                ("bad version byte", b"\x01garbage that is no frame", 0),
                ("bad header after a good frame",
                 conn_frame("nas", "echo") + b"\xfe\x05ab,cdhello",
                 len(conn_frame("nas", "echo"))),
                ("declared length over the limit",
                 conn_frame("nas", "echo") + b"\xfe" + bytes([len(BIG)]) +
                 BIG, len(conn_frame("nas", "echo")))):
            mark = server.log_size()
            c = Connect(env, "laptop", "nas", "echo")
            check(c.status == 200, "connect answered %d" % c.status)
            up = Stream(env, "laptop", "/v1/s/nas/upstream/%s" % c.id)
            up.send(garbage)
            frames, how = c.frames(lambda fs: False, timeout=15)
            check(how in ("cut", "end"), "%s: the connect body %s"
                  % (name, how))
            check(not any(s == "end" for s, _, _ in frames),
                  "%s: the server answered with a clean end frame" % name)
            up.end()
            up.wait(15)
            m = server.wait_log(r"[^\n]*(byte|offset) \d+[^\n]*", 10,
                                start=mark,
                                what="an error naming the byte offset")
            # The offset named is where the bad frame starts, or where
            # its bad part (header, length) starts.
            named = int(re.search(r"(?:byte|offset) (\d+)",
                                  m.group(0)).group(1))
            check(offset <= named <= offset + 2 + 255,
                  "%s: the log names byte %d, the bad frame starts at "
                  "byte %d: %s" % (name, named, offset, m.group(0)))
            print("%s: connect body %s; upstream %s; server: %s"
                  % (name, how, up.status, m.group(0)))
            c.close()
            env.relay.wait_status(lambda st: st.get("tunnels") == 0, 10,
                                  "the relay to count 0 tunnels")
        # A real tunnel still works.
        from harness import connect
        s = connect(lp["echo"])
        s.sendall(b"after garbage")
        s.settimeout(10)
        check(s.recv(100) == b"after garbage", "echo failed afterwards")
        s.close()


def _paired(env, fake, n):
    """Starts a raw connect to fake/p in a thread; returns (result dict,
    thread, connection ID) once the fake's listen has paired it."""
    res = {}

    def run():
        try:
            c = Connect(env, "laptop", "fake", "p")
            res["status"] = c.status
            res["body"] = c.r.read()
        except Exception as e:
            res["error"] = repr(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    wait_until(lambda: len(fake.got) >= n, 10, "the fake's listen to pair")
    return res, t, json.loads(fake.got[n - 1])["id"]


@timeout(60)
def test_wire_refuse(bindir):
    """A refuse ends the waiting connect with 502 and the server's message
    and code; a refuse body over max_refuse_body is 413 too_large and the
    waiting connect still ends within accept_timeout."""
    with Env(bindir, "wirerefuse") as env:
        env.keygen("fake")
        env.keygen("laptop")
        env.write_relay_ini({"fake": ("fake", None)},
                            {"laptop": ("laptop", "fake/*")},
                            settings={"max_refuse_body": "100",
                                      "accept_timeout": "3"})
        relay = env.start_relay()
        fake = FakeServer(env, "fake", "fake", "p")
        relay.wait_status(lambda st: st.get("listens", 0) >= 1, 10,
                          "the fake's listen")
        res, t, cid = _paired(env, fake, 1)
        p = "/v1/s/fake/refuse/%s" % cid
        msg = {"message": "connect to 10.0.0.1:22: No route to host",
               "code": "EHOSTUNREACH"}
        st, _, body = relay.request("POST", p, headers=env.sign("fake", p),
                                    body=json.dumps(msg).encode())
        check(st == 200, "refuse answered %d %r" % (st, body[:200]))
        t.join(10)
        check(res.get("status") == 502, "the waiting connect got %r" % res)
        j = error_json(res["body"])
        check(j["code"] == "EHOSTUNREACH" and msg["message"] in j["error"],
              "502 body %r does not carry the server's code and message" % j)
        print("refuse -> connect 502: %s" % j)

        relay.wait_status(lambda st: st.get("listens", 0) >= 1, 10,
                          "the fake's next listen")
        res, t, cid = _paired(env, fake, 2)
        p = "/v1/s/fake/refuse/%s" % cid
        big = json.dumps({"message": "x" * 200, "code": "EBIG"}).encode()
        st, _, body = relay.request("POST", p, headers=env.sign("fake", p),
                                    body=big)
        check(st == 413 and error_json(body)["code"] == "too_large",
              "a %d-byte refuse answered %d %r, expected 413 too_large"
              % (len(big), st, body[:200]))
        t.join(10)
        check(not t.is_alive(), "the connect whose refuse was too large "
              "was still waiting 10 s later (accept_timeout 3 s)")
        print("after a 413 refuse the connect got %s %r"
              % (res.get("status"), res.get("body", b"")[:200]))
