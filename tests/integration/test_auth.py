"""The relay's answers to raw HTTP: authentication failures (401), keys
doing what the config does not allow (403), and other protocol errors.
Valid signatures come from postern-sign."""

import base64
import time

from harness import Env, check, error_json, timeout


def _setup(env, settings=None):
    env.keygen("nas")
    env.keygen("other")
    env.keygen("laptop")
    env.keygen("stranger")
    env.write_relay_ini({"nas": ("nas", "echo ssh"),
                         "other": ("other", None)},
                        {"laptop": ("laptop", "nas/*")}, settings)
    return env.start_relay()


def _expect(relay, method, path, headers, status, code, what):
    st, hdrs, body = relay.request(method, path, headers=headers)
    check(st == status, "%s: %s %s answered %d %r, expected %d %s"
          % (what, method, path, st, body[:300], status, code))
    ctype = hdrs.get("content-type", "")
    check(ctype.startswith("application/json"),
          "%s: error Content-Type is %r, expected application/json"
          % (what, ctype))
    j = error_json(body)
    check(j["code"] == code, "%s: code %r, expected %r (body %r)"
          % (what, j["code"], code, j))
    print("%s -> %d %s: %s" % (what, st, j["code"], j["error"]))
    return j


def _flip(sig_b64):
    raw = bytearray(base64.b64decode(sig_b64))
    raw[10] ^= 0x01
    return base64.b64encode(bytes(raw)).decode()


@timeout(60)
def test_auth_failures(bindir):
    with Env(bindir, "auth") as env:
        relay = _setup(env)
        listen = "/v1/s/nas/listen/echo"
        connect = "/v1/s/nas/connect/echo"

        _expect(relay, "POST", listen, {}, 401, "unauthenticated",
                "no signature headers")

        h = env.sign("nas", listen)
        del h["Postern-Nonce"]
        _expect(relay, "POST", listen, h, 401, "unauthenticated",
                "a missing Postern-Nonce")

        _expect(relay, "POST", listen, env.sign("stranger", listen), 401,
                "unauthenticated", "a key not in relay.ini")

        h = env.sign("nas", listen)
        h["Postern-Signature"] = _flip(h["Postern-Signature"])
        _expect(relay, "POST", listen, h, 401, "unauthenticated",
                "a bad signature")

        # Signed for another path: the signature does not cover this one.
        _expect(relay, "POST", listen, env.sign("nas", "/v1/s/nas/listen/ssh"),
                401, "unauthenticated", "a signature for another path")

        _expect(relay, "POST", listen,
                env.sign("nas", listen, timestamp=time.time() - 3600), 401,
                "unauthenticated", "a timestamp an hour old")
        _expect(relay, "POST", listen,
                env.sign("nas", listen, timestamp=time.time() + 3600), 401,
                "unauthenticated", "a timestamp an hour ahead")

        # Replay: the first use is authenticated (nas is not listening, so
        # the connect answers 503 at once), the second is refused.
        h = env.sign("laptop", connect)
        _expect(relay, "POST", connect, h, 503, "not_listening",
                "a first use of a nonce")
        _expect(relay, "POST", connect, h, 401, "replayed_nonce",
                "the same nonce again")
        # The same nonce with a fresh timestamp (a new signature) is still a
        # replay of the (key, nonce) pair.
        h2 = env.sign("laptop", connect, nonce=h["Postern-Nonce"],
                      timestamp=int(h["Postern-Timestamp"]) + 1)
        _expect(relay, "POST", connect, h2, 401, "replayed_nonce",
                "the same nonce with a new timestamp")

        # Known keys doing what the config does not allow.
        _expect(relay, "POST", "/v1/s/other/listen/echo",
                env.sign("nas", "/v1/s/other/listen/echo"), 403, "forbidden",
                "nas's key listening as server 'other'")
        _expect(relay, "POST", "/v1/s/nas/listen/web",
                env.sign("nas", "/v1/s/nas/listen/web"), 403, "forbidden",
                "a listen on a port not in `ports`")
        _expect(relay, "POST", "/v1/s/other/connect/x",
                env.sign("laptop", "/v1/s/other/connect/x"), 403,
                "forbidden", "a client connecting outside its allow")
        _expect(relay, "POST", "/v1/s/nas/listen/echo",
                env.sign("laptop", "/v1/s/nas/listen/echo"), 403, "forbidden",
                "a client key listening as a server")


@timeout(60)
def test_protocol_errors(bindir):
    """Other answers protocol.md fixes: 405, 400, 404 for unknown paths
    and IDs."""
    with Env(bindir, "protocol") as env:
        relay = _setup(env)
        p = "/v1/s/nas/listen/echo"
        _expect(relay, "GET", p, env.sign("nas", p, method="GET"), 405,
                "method_not_allowed", "GET on a call")
        p = "/v1/s/nas/listen/bad%20name"
        _expect(relay, "POST", p, env.sign("nas", p), 400, "bad_request",
                "a port name with a space")
        p = "/v1/s/nas/listen/" + "x" * 65
        _expect(relay, "POST", p, env.sign("nas", p), 400, "bad_request",
                "a 65-byte port name")
        p = "/v1/s/nas/teleport/echo"
        _expect(relay, "POST", p, env.sign("nas", p), 404, "not_found",
                "an unknown call")
        p = "/v1/s/nas/accept/AAAAAAAAAAAAAAAAAAAAAA"
        _expect(relay, "POST", p, env.sign("nas", p), 404,
                "unknown_connection", "accept of an unknown ID")
        p = "/v1/s/nas/upstream/AAAAAAAAAAAAAAAAAAAAAA"
        _expect(relay, "POST", p, env.sign("laptop", p), 404,
                "unknown_connection", "upstream of an unknown ID")
        p = "/v1/s/ghost/connect/ssh"
        _expect(relay, "POST", p, env.sign("laptop", p), 404,
                "unknown_server", "connect to an unknown server")
        p = "/v1/s/nas/connect/web"
        _expect(relay, "POST", p, env.sign("laptop", p), 404,
                "unknown_port", "connect to a port outside `ports`")
        st = relay.status()
        for k in ("tunnels", "pending_connects", "listens", "connections",
                  "buffered_bytes"):
            check(isinstance(st.get(k), int), "/v1/status lacks %s: %r"
                  % (k, st))
