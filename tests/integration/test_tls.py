"""HTTPS between the proxies and the relay: the relay serves TLS with
--tls-cert/--tls-key, the proxies verify it with --cacert or a --pin, and
every way of getting it wrong fails loudly (a log line naming the relay and
the reason) instead of being accepted.

Certificates are made at test time by certs.py (the openssl command, EC
P-256, a few milliseconds each) in the test's directory:

  ca.crt        a test CA
  relay.crt     for 127.0.0.1 and localhost, signed by the CA
  other.crt     for other.example only, signed by the CA
  self.crt      self-signed, for 127.0.0.1 and localhost (pinning)
"""

import os
import random
import re
import signal
import socket
import ssl
import threading
import time

from certs import Certs, openssl
from harness import (Env, TestFailure, check, connect, echo_once,
                     proc_cpu_ticks, recv_hashed, send_pattern, tail, timeout,
                     wait_closed, wait_until)
from services import Echo, EchoClients

MIB = 1 << 20
ECHO_MB = int(os.environ.get("POSTERN_IT_TLS_MB", "64"))


# -- helpers ----------------------------------------------------------------

def _start_tls_relay(env, cert, key):
    """The relay on HTTPS.  The harness's own probes (GET /v1/status) do
    not verify its certificate: the proxies are what is under test."""
    return env.start_relay(tls=(cert, key))


def _setup(env, settings=None):
    env.keygen("nas")
    env.keygen("laptop")
    env.write_relay_ini({"nas": ("nas", None)},
                        {"laptop": ("laptop", "nas/*")}, settings)


def _ca_topology(env, settings=None, client=True):
    """A relay on HTTPS with a certificate from the test CA, an echo
    service, a server-proxy 'nas' exposing it and (with client) a
    client-proxy forwarding nas/echo, both proxies with --cacert.
    Returns (relay, echo, server, client, local port); the last two are
    None without client."""
    certs = Certs(env)
    cert, key = certs.relay()
    echo = env.service(Echo())
    _setup(env, settings)
    relay = _start_tls_relay(env, cert, key)
    server = env.start_server("nas", "nas", {"echo": echo.addr},
                              args=["--cacert", certs.ca()])
    if not client:
        return relay, echo, server, None, None
    proc, lp = env.start_client("laptop", ["nas/echo"],
                                args=["--cacert", certs.ca()])
    return relay, echo, server, proc, lp["nas/echo"]


def _echo_once(port):
    echo_once(port, b"hello through TLS", timeout=15)


def _echo_both_ways(port, total, seed):
    """Sends total pattern bytes while reading the echo back; returns
    (sent sha256, received sha256, bytes received)."""
    s = connect(port, timeout=120)
    sent = {}

    def writer():
        try:
            sent["sha"] = send_pattern(s, seed, total)
            s.shutdown(socket.SHUT_WR)
        except OSError as e:
            sent["error"] = repr(e)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    n, got = recv_hashed(s, 120)
    t.join(120)
    s.close()
    check("error" not in sent, "writing to the tunnel failed: %s"
          % sent.get("error"))
    return sent.get("sha"), got, n


def _line_with(*rxs):
    """A regex for a log line that matches every one of rxs, in any
    order."""
    return r"(?m)^%s[^\n]*$" % "".join(r"(?=[^\n]*(?:%s))" % rx
                                        for rx in rxs)


def _expect_refused(env, server, client, lport, relay_url, reason_rx,
                    what):
    """Neither proxy gets through: the server-proxy logs the relay URL and
    reason_rx, registers no listen; a TCP client of the client-proxy is
    closed without data and the client logs the relay URL and reason_rx."""
    url = re.escape(relay_url)
    m = server.wait_log(_line_with(url, reason_rx),
                        timeout=20, what="a line naming %s and %s"
                        % (relay_url, what))
    line = m.group(0)
    check(" error: " in line or " warn: " in line,
          "server-proxy's line is not a warning or error: %s" % line)
    print("server-proxy: %s" % line)
    start = client.log_size()
    s = connect(lport)
    s.sendall(b"must not arrive")
    how, dt, n = wait_closed(s, 15)
    s.close()
    check(how != "open", "the TCP client's connection is still open %.0f s "
          "after connecting (client log: %s)" % (dt, tail(client.err_path)))
    check(n == 0, "%d bytes came back through a tunnel that must not "
          "exist" % n)
    m = client.wait_log(_line_with(url, reason_rx),
                        timeout=10, start=start,
                        what="a line naming %s and %s" % (relay_url, what))
    line = m.group(0)
    check(" error: " in line or " warn: " in line,
          "client-proxy's line is not a warning or error: %s" % line)
    print("client-proxy: %s" % line)
    st = env.relay.status()
    check(st.get("listens", 0) == 0 and st.get("tunnels", 0) == 0,
          "the relay holds listens or tunnels through a refused "
          "certificate: %s" % st)


# -- tests ------------------------------------------------------------------

@timeout(300)
def test_tls_cacert_echo(bindir):
    """Relay on HTTPS, both proxies with --cacert: an echo tunnel carries
    ECHO_MB MiB each way intact; an idle TLS tunnel costs the relay no
    CPU."""
    total = ECHO_MB * MIB
    with Env(bindir, "tls-cacert") as env:
        relay, _, _, client, port = _ca_topology(env)
        _echo_once(port)
        t0 = time.monotonic()
        sent, got, n = _echo_both_ways(port, total, 11)
        dt = time.monotonic() - t0
        check(n == total and sent == got,
              "echo: sent %d bytes sha256 %s, got %d bytes sha256 %s"
              % (total, sent, n, got))
        print("%d MiB each way through TLS in %.1f s (%.0f MiB/s)"
              % (ECHO_MB, dt, ECHO_MB / dt))
        # An idle tunnel: libmicrohttpd must not keep the relay busy on
        # TLS connections (data GnuTLS holds, a connection left in its
        # ready list).
        s = connect(port)
        s.sendall(b"ping")
        s.settimeout(10)
        check(s.recv(10) == b"ping", "idle tunnel: no echo")
        time.sleep(0.5)
        c0 = proc_cpu_ticks(relay.proc.pid)
        time.sleep(3)
        used = proc_cpu_ticks(relay.proc.pid) - c0
        s.close()
        print("relay CPU over 3 s with an idle TLS tunnel: %d ticks" % used)
        check(used <= 15, "the relay used %d ticks (1/100 s) of CPU in 3 s "
              "with one idle TLS tunnel: busy loop?" % used)
        wait_until(lambda: client.log().count("tunnel closed id=") >= 3,
                   20, "three 'tunnel closed' lines in the client log")


@timeout(240)
def test_tls_many_tunnels(bindir):
    """100 tunnels at once over TLS (400 TLS connections at the relay),
    mixed sizes in tiny and large writes, each echoed intact."""
    n = 100
    rng = random.Random(77)
    sizes = [0, 1, 17, 4096, 65537, 300 * 1024, MIB, 2 * MIB]

    def writer(seed):
        r = random.Random(seed)
        return lambda: r.choice((1, 7, 1460, 16384, 65536, 200000))

    plans = [(3000 + i, rng.choice(sizes), writer(4000 + i))
             for i in range(n)]
    with Env(bindir, "tls-many") as env:
        relay, echo, _, _, port = _ca_topology(
            env, settings={"max_pending_connects": "256"})
        t0 = time.monotonic()
        total = EchoClients(port, plans, timeout=180).run()
        print("%d TLS tunnels, %d bytes each way in %.1f s"
              % (n, total, time.monotonic() - t0))
        check(echo.accepted == n, "echo service accepted %d connections, "
              "expected %d" % (echo.accepted, n))
        relay.wait_status(lambda s: s.get("tunnels") == 0, 20,
                          "the relay to count 0 tunnels")


@timeout(120)
def test_tls_pin_self_signed(bindir):
    """Self-signed relay, proxies with --pin and no --cacert: the pin
    alone is trusted (the server-proxy's as sha256//BASE64, the
    client-proxy's as a PEM public key file)."""
    with Env(bindir, "tls-pin") as env:
        certs = Certs(env)
        cert, key = certs.self_signed()
        pin = certs.pin(cert)
        pubfile = env.path("self.pub.pem")
        with open(pubfile, "wb") as f:
            f.write(openssl(env, "x509", "-in", cert, "-pubkey", "-noout"))
        echo = env.service(Echo())
        _setup(env)
        _start_tls_relay(env, cert, key)
        env.start_server("nas", "nas", {"echo": echo.addr},
                         args=["--pin", pin])
        client, lp = env.start_client("laptop", ["nas/echo"],
                                      args=["--pin", pubfile])
        _echo_once(lp["nas/echo"])
        sent, got, n = _echo_both_ways(lp["nas/echo"], 4 * MIB, 12)
        check(n == 4 * MIB and sent == got, "4 MiB echo through a pinned "
              "relay: got %d bytes" % n)


@timeout(120)
def test_tls_no_trust_refused(bindir):
    """Self-signed relay, no --cacert and no --pin: nothing gets through,
    and both proxies say which relay refused and why."""
    with Env(bindir, "tls-notrust") as env:
        certs = Certs(env)
        cert, key = certs.self_signed()
        echo = env.service(Echo())
        _setup(env)
        relay = _start_tls_relay(env, cert, key)
        server = env.start_server("nas", "nas", {"echo": echo.addr},
                                  wait=False)
        client, lp = env.start_client("laptop", ["nas/echo"])
        _expect_refused(env, server, client, lp["nas/echo"], relay.url,
                        r"self-signed certificate", "a certificate problem")


@timeout(120)
def test_tls_wrong_pin(bindir):
    """A pin of another key: refused as a pin mismatch, with or without
    --cacert (a CA-valid certificate with the wrong key is refused too)."""
    with Env(bindir, "tls-wrongpin") as env:
        certs = Certs(env)
        cert, key = certs.relay()
        _, _ = certs.self_signed("stranger")
        wrong = certs.pin(env.path("stranger.crt"))
        echo = env.service(Echo())
        _setup(env)
        relay = _start_tls_relay(env, cert, key)
        server = env.start_server("nas", "nas", {"echo": echo.addr},
                                  args=["--pin", wrong], wait=False)
        client, lp = env.start_client("laptop", ["nas/echo"],
                                      args=["--pin", wrong, "--cacert",
                                            certs.ca()])
        _expect_refused(env, server, client, lp["nas/echo"], relay.url,
                        r"does not match pinned public key",
                        "a pin mismatch")


@timeout(120)
def test_tls_wrong_host(bindir):
    """A certificate from the right CA for another host name: refused."""
    with Env(bindir, "tls-wronghost") as env:
        certs = Certs(env)
        cert, key = certs.signed("other", "DNS:other.example",
                                 "other.example")
        echo = env.service(Echo())
        _setup(env)
        relay = _start_tls_relay(env, cert, key)
        server = env.start_server("nas", "nas", {"echo": echo.addr},
                                  args=["--cacert", certs.ca()], wait=False)
        client, lp = env.start_client("laptop", ["nas/echo"],
                                      args=["--cacert", certs.ca()])
        _expect_refused(env, server, client, lp["nas/echo"], relay.url,
                        r"subject name|host name", "a host name mismatch")


@timeout(180)
def test_tls_bad_cert_or_key(bindir):
    """The relay refuses to start on a missing, garbage or mismatched
    certificate or key, naming the file and the problem."""
    with Env(bindir, "tls-badfiles") as env:
        certs = Certs(env)
        cert, key = certs.relay()
        other_cert, other_key = certs.self_signed("stranger")
        _setup(env)
        with open(env.path("garbage.pem"), "w") as f:
            f.write("this is not a certificate\n")
        with open(cert) as f:
            pem = f.read()
        with open(env.path("cut.crt"), "w") as f:
            f.write(pem[:len(pem) // 2])
        # Damage the base64 in the middle of the certificate.
        lines = pem.splitlines()
        lines[3] = "!" + lines[3][1:]
        with open(env.path("damaged.crt"), "w") as f:
            f.write("\n".join(lines) + "\n")
        cases = [
            # (name, --tls-cert, --tls-key, exit status, regex)
            ("missing cert", env.path("nope.crt"), key, 1,
             r"TLS certificate \S*nope\.crt: No such file"),
            ("missing key", cert, env.path("nope.key"), 1,
             r"TLS key \S*nope\.key: No such file"),
            ("garbage cert", env.path("garbage.pem"), key, 1,
             r"TLS certificate \S*garbage\.pem has no PEM certificate"),
            ("garbage key", cert, env.path("garbage.pem"), 1,
             r"TLS key \S*garbage\.pem has no PEM private key"),
            ("cut cert", env.path("cut.crt"), key, 1,
             r"TLS certificate \S*cut\.crt: .*(truncated|does not decode)"),
            ("damaged cert", env.path("damaged.crt"), key, 1,
             r"TLS certificate \S*damaged\.crt: .*does not decode"),
            ("swapped", key, cert, 1,
             r"TLS certificate \S*relay\.key holds a private key"),
            ("key of another cert", cert, other_key, 1,
             r"certificate \S*relay\.crt and key \S*stranger\.key: .*do "
             r"not match"),
            ("cert of another key", other_cert, key, 1,
             r"certificate \S*stranger\.crt and key \S*relay\.key: .*do "
             r"not match"),
            ("cert without key", cert, None, 2,
             r"--tls-cert without --tls-key"),
        ]
        for name, c, k, status, rx in cases:
            argv = [env.bin("postern-relay"), "--config",
                    env.path("relay.ini"), "--listen", "127.0.0.1:0",
                    "--tls-cert", c]
            if k is not None:
                argv += ["--tls-key", k]
            p = env.start("relay-" + re.sub(r"\W+", "-", name), argv)
            p.expect_fail = True
            rc = p.wait_exit(20)
            err = p.log()
            check(rc == status, "%s: postern-relay exited %s, expected %d; "
                  "stderr: %s" % (name, rc, status, err.strip()[-300:]))
            check(re.search(rx, err), "%s: stderr does not match %r: %s"
                  % (name, rx, err.strip()[-300:]))
            check("listening on" not in err, "%s: the relay said it was "
                  "listening" % name)
            print("%s: %s" % (name, err.strip().splitlines()[-1]))
        # relay.ini with one of the two keys: refused with its line.
        with open(env.path("relay.ini")) as f:
            text = f.read()
        with open(env.path("half.ini"), "w") as f:
            f.write(text.replace("status = on", "status = on\ntls_cert = %s"
                                 % cert))
        p = env.start("relay-half-ini", [env.bin("postern-relay"),
                                         "--config", env.path("half.ini")])
        p.expect_fail = True
        rc = p.wait_exit(20)
        err = p.log()
        check(rc == 1 and re.search(r"half\.ini:\d+: tls_cert is set but "
                                    r"tls_key is not", err),
              "relay.ini with tls_cert alone: exit %s, stderr %s"
              % (rc, err.strip()[-300:]))
        print("ini: %s" % err.strip().splitlines()[-1])


def _client_fails(env, name, relay_url, url_rx, what, args=()):
    """A client-proxy for nas/echo given relay_url (and args): its TCP
    client is closed without a byte, and it logs a failure naming the
    relay (url_rx).  Returns that log line."""
    bad = env.start(name, [
        env.bin("postern-client"), "--relay", relay_url, "--key",
        env.keys["laptop"][0], "-L", "127.0.0.1:0:nas/echo"] + list(args))
    m = bad.wait_log(r"listening on 127\.0\.0\.1:(\d+)")
    s = connect(int(m.group(1)))
    how, _, n = wait_closed(s, 15)
    s.close()
    check(how != "open" and n == 0, "%s: socket %s, %d bytes"
          % (what, how, n))
    return bad.wait_log(_line_with(url_rx, "failed"), timeout=10,
                        what="a failure naming the relay").group(0)


def _misdirected_plain(relay_port, n):
    """Plain HTTP requests to a TLS port: each connection must be closed
    quickly with no HTTP answer."""
    for _ in range(n):
        s = connect(relay_port, timeout=10)
        s.sendall(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n\r\n")
        how, dt, got = wait_closed(s, 10)
        s.close()
        check(how != "open", "plain HTTP to the TLS port: still open after "
              "%.0f s" % dt)


def _misdirected_tls(relay_port, n):
    """TLS handshakes to a plain port: each must fail quickly."""
    ctx = ssl._create_unverified_context()
    for _ in range(n):
        s = connect(relay_port, timeout=10)
        t0 = time.monotonic()
        try:
            ctx.wrap_socket(s).close()
            raise TestFailure("a TLS handshake with a plain-HTTP relay "
                              "succeeded")
        except (ssl.SSLError, OSError):
            pass
        finally:
            s.close()
        check(time.monotonic() - t0 < 10, "a TLS handshake with a plain "
              "relay took %.1f s to fail" % (time.monotonic() - t0))


def _silent_conns(relay_port, n):
    return [connect(relay_port, timeout=10) for _ in range(n)]


@timeout(150)
def test_tls_plain_http_to_tls_port(bindir):
    """Plain HTTP (and silent connections) to the TLS relay: closed, while
    a tunnel open through the same relay keeps working and new ones
    open.  Silent connections are closed after idle_timeout."""
    with Env(bindir, "tls-plainhttp") as env:
        relay, echo, _, _, port = _ca_topology(
            env, settings={"idle_timeout": "3"})
        held = connect(port)
        held.sendall(b"before")
        held.settimeout(10)
        check(held.recv(100) == b"before", "held tunnel: no echo")
        silent = _silent_conns(relay.port, 5)
        _misdirected_plain(relay.port, 20)
        # Proxies given http:// for this relay fail, naming it; the
        # server-proxy hints at https://.
        plain_url = "http://127.0.0.1:%d" % relay.port
        bad = env.start("server-http", [
            env.bin("postern-server"), "--relay", plain_url, "--name", "nas",
            "--key", env.keys["nas"][0], "--expose",
            "echo=tcp://%s:%d" % echo.addr])
        line = bad.wait_log(_line_with(re.escape(plain_url),
                                       "its URL starts with https://"),
                            timeout=20,
                            what="a hint to use https://")
        print("http:// server-proxy: %s" % line.group(0))
        line = _client_fails(env, "client-http", plain_url,
                             re.escape(plain_url), "client with an http:// "
                             "URL for an HTTPS relay")
        print("http:// client-proxy: %s" % line)
        # The held tunnel and new tunnels still work.
        held.sendall(b"after")
        check(held.recv(100) == b"after", "held tunnel broke")
        _echo_once(port)
        # Silent connections go at idle_timeout (3 s), not never.
        for s in silent:
            how, dt, _ = wait_closed(s, 15)
            s.close()
            check(how != "open", "a silent connection to the TLS port was "
                  "still open after %.0f s (idle_timeout 3 s)" % dt)
        held.close()
        check(relay.proc.alive(), "the relay died")


@timeout(150)
def test_tls_handshake_to_plain_port(bindir):
    """TLS handshakes to a plain-HTTP relay fail fast (and a proxy given
    https:// says the handshake failed) while a tunnel through the same
    relay keeps working."""
    with Env(bindir, "tls-toplain") as env:
        echo = env.service(Echo())
        _, client, lp = env.standard({"echo": echo.addr})
        port = lp["echo"]
        held = connect(port)
        held.sendall(b"before")
        held.settimeout(10)
        check(held.recv(100) == b"before", "held tunnel: no echo")
        _misdirected_tls(env.relay.port, 20)
        line = _client_fails(env, "client-https",
                             "https://127.0.0.1:%d" % env.relay.port,
                             r"https://127\.0\.0\.1:%d\b" % env.relay.port,
                             "client with an https:// URL for a plain relay",
                             args=["--insecure"])
        print("https:// client: %s" % line)
        held.sendall(b"after")
        check(held.recv(100) == b"after", "held tunnel broke")
        _echo_once(port)
        held.close()


@timeout(90)
def test_tls_parked_peer_gone(bindir):
    """A server-proxy that stops (curl sends a TLS close_notify, then its
    FIN) has its parked listens dropped at once, as over plain HTTP, not
    after listen_timeout."""
    with Env(bindir, "tls-parked") as env:
        relay, _, server, _, _ = _ca_topology(
            env, settings={"listen_timeout": "60"}, client=False)
        check(relay.status().get("listens", 0) >= 1, "no listen parked")
        t0 = time.monotonic()
        server.signal(signal.SIGTERM)
        server.wait_exit(15)
        relay.wait_status(lambda s: s.get("listens") == 0, 5,
                          "the relay to drop the stopped server-proxy's "
                          "listens")
        print("listens dropped %.2f s after SIGTERM"
              % (time.monotonic() - t0))
