"""Postern through real middleboxes: Debian's squid as the forward proxy of
both proxies (--proxy, the http_proxy variable, CONNECT to an HTTPS relay)
and nginx as a reverse proxy in front of the relay with the configuration
docs/deployment.md recommends.  The middleboxes come from middleboxes.py;
nginx with its default settings is test_nginx_defaults.py."""

import os
import re
import subprocess
import time

from certs import Certs
from harness import Env, TestFailure, check, connect, timeout, wait_until
from middleboxes import NGINX_STREAMING, Nginx, Squid
from services import Echo, EchoClients

MIB = 1 << 20
ECHO_MB = int(os.environ.get("POSTERN_IT_MIDDLEBOX_MB", "64"))
RTT_LIMIT_S = 0.050

# The proxies' own environment must not decide where their requests go,
# except where a test sets these on purpose.
NO_PROXY_ENV = {"http_proxy": "", "https_proxy": "", "HTTPS_PROXY": "",
                "all_proxy": "", "ALL_PROXY": "", "no_proxy": "",
                "NO_PROXY": ""}


def _keys_and_relay(env, **relay):
    """Keys nas + laptop and a relay for them; relay: Env.start_relay's
    keyword arguments."""
    env.keygen("nas")
    env.keygen("laptop")
    env.write_relay_ini({"nas": ("nas", None)},
                        {"laptop": ("laptop", "nas/*")})
    return env.start_relay(**relay)


def _echo_transfer(port, total, what, n=1, seed=1):
    """n tunnels at once, each echoing total bytes both ways; sha256 of
    what came back equals what went out.  Returns the seconds taken."""
    plans = [(seed + i, total, (lambda: MIB)) for i in range(n)]
    t0 = time.monotonic()
    moved = EchoClients(port, plans, timeout=240).run()
    dt = time.monotonic() - t0
    print("%s: %d tunnel(s), %d MiB each way in %.2f s (%.1f MiB/s each "
          "way)" % (what, n, moved // MIB, dt, moved / MIB / dt))
    return dt


def _rtt(port, what, rounds=40):
    """Round trips of 64 bytes on one open tunnel: (median, max) s."""
    s = connect(port, timeout=10)
    try:
        s.settimeout(10)
        times = []
        for i in range(rounds):
            msg = bytes([i % 256]) * 64
            t0 = time.monotonic()
            s.sendall(msg)
            got = b""
            while len(got) < len(msg):
                d = s.recv(4096)
                check(d, "%s: tunnel closed during round trip %d" % (what,
                                                                     i))
                got += d
            times.append(time.monotonic() - t0)
            check(got == msg, "%s: echo returned %r for %r" % (what, got[:8],
                                                               msg[:8]))
    finally:
        s.close()
    # The first trip may still be opening the tunnel's streams.
    times = sorted(times[1:])
    med, worst = times[len(times) // 2], times[-1]
    print("%s: round trip median %.2f ms, max %.2f ms over %d"
          % (what, med * 1000, worst * 1000, len(times)))
    return med, worst


def _squid_calls(squid):
    """{call: count} of relay calls squid saw ('listen', 'connect', ...),
    and the CONNECT count under 'CONNECT'."""
    calls = {}
    for method, url, _ in squid.requests():
        if method == "CONNECT":
            calls["CONNECT"] = calls.get("CONNECT", 0) + 1
            continue
        m = re.search(r"/v1/s/[^/]+/([a-z]+)/", url)
        if m:
            calls[m.group(1)] = calls.get(m.group(1), 0) + 1
    return calls


def _wait_squid_calls(squid, want, what):
    """Squid logs a request when it ends: waits for every call in want."""
    def seen():
        c = _squid_calls(squid)
        return c if all(c.get(k, 0) >= n for k, n in want.items()) else None
    try:
        return wait_until(seen, 15, what, interval=0.1)
    except TestFailure as e:
        raise TestFailure("%s; squid saw %s" % (e, _squid_calls(squid)))


@timeout(240)
def test_squid_forward_proxy(bindir):
    """Both proxies reach a plain-HTTP relay through squid (--proxy,
    absolute-URI requests), even with no_proxy naming the relay: an echo
    tunnel moves ECHO_MB MiB each way intact and squid logged every call."""
    with Env(bindir, "squid") as env:
        env.child_env.update(NO_PROXY_ENV)
        # --proxy is for every call: an inherited no_proxy does not apply.
        env.child_env["no_proxy"] = "127.0.0.1,localhost"
        echo = env.service(Echo())
        relay = _keys_and_relay(env)
        squid = env.service(Squid(env.dir))
        via = ["--proxy", squid.url]
        env.start_server("nas", "nas", {"echo": echo.addr}, args=via)
        _, lp = env.start_client("laptop", ["nas/echo"], args=via)
        port = lp["nas/echo"]
        dt = _echo_transfer(port, ECHO_MB * MIB, "through squid")
        _rtt(port, "through squid")
        calls = _wait_squid_calls(
            squid, {"connect": 2, "upstream": 2, "accept": 2,
                    "downstream": 2},
            "squid's access log to show connect, upstream, accept and "
            "downstream for both tunnels")
        check(not calls.get("CONNECT"), "plain HTTP relay, yet squid saw "
              "CONNECT requests: %s" % calls)
        # The server's listens go through squid as well: the one that
        # brought each tunnel has ended by now.
        check(calls.get("listen", 0) >= 2, "squid logged %d listens, "
              "expected the 2 that brought the tunnels: %s"
              % (calls.get("listen", 0), calls))
        bad = [r for r in squid.requests() if r[0] == "POST" and
               (r[2] not in ("200", "204") or
                (r[2] == "204" and "/listen/" not in r[1]))]
        check(not bad, "squid answered relay calls with an error: %s"
              % bad[:5])
        print("squid: %s; %d MiB each way took %.2f s"
              % (calls, ECHO_MB, dt))
        env.relay.wait_status(lambda s: s.get("tunnels") == 0, 20,
                              "the relay to count 0 tunnels")
        check(relay.proc.alive(), "relay died")


@timeout(240)
def test_squid_http_proxy_variable(bindir):
    """The same through the http_proxy environment variable (libcurl reads
    it for every easy handle of the proxies' multi handle); then a client
    with --proxy none bypasses squid although http_proxy names it."""
    with Env(bindir, "squidenv") as env:
        env.child_env.update(NO_PROXY_ENV)
        echo = env.service(Echo())
        _keys_and_relay(env)
        squid = env.service(Squid(env.dir))
        env.child_env["http_proxy"] = squid.url
        env.start_server("nas", "nas", {"echo": echo.addr})
        _, lp = env.start_client("laptop", ["nas/echo"])
        _echo_transfer(lp["nas/echo"], ECHO_MB * MIB, "http_proxy=squid")
        calls = _wait_squid_calls(
            squid, {"connect": 1, "upstream": 1, "accept": 1,
                    "downstream": 1, "listen": 1},
            "squid's access log to show the tunnel's calls")
        print("squid via http_proxy: %s" % calls)

        # --proxy none: not even the environment's proxy.
        _, lp2 = env.start_client("laptop", ["nas/echo"],
                                  args=["--proxy", "none"], name="client2")
        before = _squid_calls(squid).get("connect", 0)
        _echo_transfer(lp2["nas/echo"], MIB, "--proxy none", seed=50)
        time.sleep(0.5)
        after = _squid_calls(squid)
        check(after.get("connect", 0) == before, "with --proxy none the "
              "client's connect still went through squid: %s" % after)


def _relay_has_tls(env):
    r = subprocess.run([env.bin("postern-relay"), "--help"],
                       capture_output=True, text=True, timeout=15)
    return "--tls-cert" in r.stdout + r.stderr


def _make_cert(env):
    """A self-signed certificate for 127.0.0.1: (cert path, key path)."""
    return Certs(env).self_signed("relay")


@timeout(240)
def test_squid_connect_https_relay(bindir):
    """An HTTPS relay (postern-relay --tls-cert/--tls-key, self-signed,
    proxies with --cacert) reached through squid with CONNECT: the bytes
    are end to end TLS, squid sees only CONNECT to the relay's port."""
    with Env(bindir, "squidtls") as env:
        check(_relay_has_tls(env), "postern-relay --help lists no "
              "--tls-cert: the relay's TLS options have not landed yet")
        env.child_env.update(NO_PROXY_ENV)
        echo = env.service(Echo())
        cert, key = _make_cert(env)
        # The harness's status checks verify the relay's certificate.
        p = _keys_and_relay(env, tls=(cert, key), cafile=cert).proc
        squid = env.service(Squid(env.dir, connect_ports=[env.relay.port]))
        via = ["--proxy", squid.url, "--cacert", cert]
        env.start_server("nas", "nas", {"echo": echo.addr}, args=via)
        _, lp = env.start_client("laptop", ["nas/echo"], args=via)
        port = lp["nas/echo"]
        dt = _echo_transfer(port, ECHO_MB * MIB, "https relay via CONNECT")
        _rtt(port, "https relay via CONNECT")
        # Squid logs a CONNECT when its tunnel closes; the proxies keep
        # their connections to the relay, so look at what squid holds:
        # nothing but CONNECTs may have been logged, and the relay saw
        # every call arrive (its tunnel lines).
        others = [r for r in squid.requests() if r[0] != "CONNECT"]
        check(not others, "squid saw requests other than CONNECT: %s"
              % others[:5])
        wait_until(lambda: "tunnel closed" in p.log(), 15,
                   "the relay to log the tunnel closed")
        # The CONNECTs show once the proxies close their connections.
        for name in ("client", "server-nas"):
            for q in env.procs:
                if q.name == name:
                    q.stop()
        connects = wait_until(lambda: _squid_calls(squid).get("CONNECT"),
                              15, "squid to log CONNECT requests")
        bad = [r for r in squid.requests() if r[1] !=
               "127.0.0.1:%d" % env.relay.port or r[2] != "200"]
        check(not bad, "squid logged CONNECTs elsewhere or failed: %s"
              % bad[:5])
        print("squid CONNECTs: %d; %d MiB each way in %.2f s"
              % (connects, ECHO_MB, dt))


@timeout(240)
def test_squid_https_proxy(bindir):
    """squid as an HTTPS proxy (--proxy https://..., its self-signed
    certificate given with --proxy-cacert): the proxies speak TLS to
    squid, plain HTTP to the relay inside it."""
    with Env(bindir, "squidhttps") as env:
        env.child_env.update(NO_PROXY_ENV)
        echo = env.service(Echo())
        _keys_and_relay(env)
        cert, key = _make_cert(env)
        squid = env.service(Squid(env.dir, tls=(cert, key)))
        check(squid.url.startswith("https://"), "squid URL %s" % squid.url)
        via = ["--proxy", squid.url, "--proxy-cacert", cert]
        env.start_server("nas", "nas", {"echo": echo.addr}, args=via)
        _, lp = env.start_client("laptop", ["nas/echo"], args=via)
        port = lp["nas/echo"]
        _echo_transfer(port, ECHO_MB * MIB, "https proxy")
        _rtt(port, "https proxy")
        calls = _wait_squid_calls(
            squid, {"connect": 1, "upstream": 1, "accept": 1,
                    "downstream": 1},
            "squid's access log to show the tunnel's calls")
        print("squid as https proxy: %s" % calls)
        # Without the CA the proxies refuse squid's certificate.
        c2, lp2 = env.start_client("laptop", ["nas/echo"], name="client2",
                                   args=["--proxy", squid.url])
        s = connect(lp2["nas/echo"])
        s.settimeout(15)
        try:
            got = s.recv(10)
        except OSError:
            got = b""
        s.close()
        check(got == b"", "a tunnel opened through an unverified proxy")
        c2.wait_log(r"tunnel to nas/echo .*failed: .*(SSL|certificate)",
                    what="a tunnel failing on squid's certificate")


@timeout(300)
def test_nginx_reverse_proxy(bindir):
    """The relay behind nginx configured as docs/deployment.md says:
    ECHO_MB MiB each way intact, 20 tunnels at once, and a round trip on
    an open tunnel under 50 ms."""
    with Env(bindir, "nginx") as env:
        env.child_env.update(NO_PROXY_ENV)
        echo = env.service(Echo())
        relay = _keys_and_relay(env)
        nginx = env.service(Nginx(env.dir, relay.port,
                                  location=NGINX_STREAMING))
        # The proxies know only nginx; the harness still asks the relay
        # itself for its status.
        relay.url = nginx.url
        env.start_server("nas", "nas", {"echo": echo.addr})
        _, lp = env.start_client("laptop", ["nas/echo"])
        port = lp["nas/echo"]
        dt = _echo_transfer(port, ECHO_MB * MIB, "through nginx")
        med, worst = _rtt(port, "through nginx")
        check(med < RTT_LIMIT_S, "round trip through nginx took %.1f ms "
              "(median), limit %.0f ms" % (med * 1000, RTT_LIMIT_S * 1000))
        dt20 = _echo_transfer(port, 2 * MIB, "20 at once through nginx",
                              n=20, seed=100)
        check(echo.accepted >= 22, "echo service saw %d connections, "
              "expected at least 22" % echo.accepted)
        env.relay.wait_status(lambda s: s.get("tunnels") == 0, 20,
                              "the relay to count 0 tunnels")
        for call in ("listen", "connect", "upstream", "accept",
                     "downstream"):
            st = nginx.statuses("/%s/" % call)
            check(st, "nginx logged no %s request" % call)
            check(all(s in (200, 204) for s in st), "nginx answered %s "
                  "with %s" % (call, sorted(set(st))))
        check(not re.search(r"\[(error|crit|alert|emerg)\]", nginx.log()),
              "nginx logged errors:\n%s" % "\n".join(
                  ln for ln in nginx.log().splitlines()
                  if re.search(r"\[(error|crit|alert|emerg)\]", ln))[:2000])
        print("nginx: %d MiB each way %.2f s; 20 tunnels x 2 MiB %.2f s; "
              "rtt median %.2f ms max %.2f ms"
              % (ECHO_MB, dt, dt20, med * 1000, worst * 1000))
