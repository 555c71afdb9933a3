"""Black-box harness for Postern's integration tests.

An Env owns one temporary directory, the keys and relay.ini in it, the
programs it starts (stdout/stderr to files in the directory) and the Python
services it runs; Env.close() always stops all of them, and fails the test
if a sanitizer reported anything in any program's stderr.

Every wait here is bounded: it takes a timeout and raises TestFailure with
what it was waiting for and the tail of the relevant log.
"""

import hashlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import threading
import time

PROGRAMS = ("postern-relay", "postern-server", "postern-client",
            "postern-keygen", "postern-sign")

# Lines that mean a sanitizer found a bug: any of them fails the test.
SANITIZER_PATTERNS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "LeakSanitizer",
    "runtime error:",
    "WARNING: ThreadSanitizer",
)

START_TIMEOUT = float(os.environ.get("POSTERN_IT_START_TIMEOUT", "15"))
STOP_TIMEOUT = 10.0


class TestFailure(Exception):
    pass


def timeout(seconds):
    """Decorator: the runner kills a test (and everything it started) that
    runs longer than this."""
    def deco(f):
        f.timeout = seconds
        return f
    return deco


def check(cond, msg):
    if not cond:
        raise TestFailure(msg)


def tail(path, lines=15):
    try:
        with open(path, "r", errors="replace") as f:
            data = f.read().splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(data[-lines:])


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def free_port():
    """A TCP port that was free a moment ago and now refuses connections."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_until(pred, timeout, what, interval=0.05):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() >= deadline:
            raise TestFailure("timed out after %.1f s waiting for %s"
                              % (timeout, what))
        time.sleep(interval)


class Pattern:
    """Deterministic pseudo-random bytes, produced in chunks."""

    def __init__(self, seed, total):
        self.rng = random.Random(seed)
        self.total = total
        self.left = total

    def chunk(self, n):
        n = min(n, self.left)
        self.left -= n
        return self.rng.randbytes(n)

    @staticmethod
    def digest(seed, total, step=1 << 20):
        p = Pattern(seed, total)
        h = hashlib.sha256()
        while p.left:
            h.update(p.chunk(step))
        return h.hexdigest()


def proc_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise TestFailure("no VmRSS for pid %d" % pid)


def proc_cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        data = f.read()
    fields = data[data.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); utime is field 14, stime 15.
    return int(fields[11]) + int(fields[12])


class Proc:
    """One started program; logs in DIR/NAME.out and DIR/NAME.err."""

    def __init__(self, env, name, argv, extra_env=None):
        self.env = env
        self.name = name
        self.argv = argv
        self.out_path = os.path.join(env.dir, name + ".out")
        self.err_path = os.path.join(env.dir, name + ".err")
        penv = dict(os.environ)
        penv.update(env.child_env)
        if extra_env:
            penv.update(extra_env)
        with open(os.path.join(env.dir, "commands.txt"), "a") as f:
            f.write("%s: %s\n" % (name, " ".join(argv)))
        self.out = open(self.out_path, "wb")
        self.err = open(self.err_path, "wb")
        self.p = subprocess.Popen(argv, stdout=self.out, stderr=self.err,
                                  stdin=subprocess.DEVNULL, env=penv,
                                  cwd=env.dir)
        self.pid = self.p.pid
        self.killed = False      # the test killed it on purpose
        self.expect_fail = False  # the test expects a non-zero exit

    def log(self):
        with open(self.err_path, "r", errors="replace") as f:
            return f.read()

    def stdout(self):
        with open(self.out_path, "r", errors="replace") as f:
            return f.read()

    def alive(self):
        return self.p.poll() is None

    def describe(self):
        return "%s (pid %d)" % (self.name, self.pid)

    def wait_log(self, regex, timeout=START_TIMEOUT, what=None, start=0):
        """Waits for regex in the log (from byte offset start); returns the
        match.  Fails at once if the program exits first."""
        rx = re.compile(regex)
        deadline = time.monotonic() + timeout
        while True:
            text = self.log()[start:]
            m = rx.search(text)
            if m:
                return m
            if not self.alive():
                raise TestFailure(
                    "%s exited with %s before logging %s; stderr tail:\n%s"
                    % (self.name, self.p.returncode, what or regex,
                       tail(self.err_path)))
            if time.monotonic() >= deadline:
                raise TestFailure(
                    "%s did not log %s within %.0f s; stderr tail:\n%s"
                    % (self.name, what or repr(regex), timeout,
                       tail(self.err_path)))
            time.sleep(0.05)

    def log_size(self):
        try:
            return os.path.getsize(self.err_path)
        except OSError:
            return 0

    def signal(self, sig):
        if self.alive():
            if sig == signal.SIGKILL:
                self.killed = True
            self.p.send_signal(sig)

    def wait_exit(self, timeout):
        try:
            return self.p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise TestFailure("%s did not exit within %.0f s; stderr tail:\n%s"
                              % (self.name, timeout, tail(self.err_path)))

    def stop(self):
        """SIGTERM, then SIGKILL after STOP_TIMEOUT.  Returns None, or what
        was wrong: a program the test did not kill must have exited 0 (on
        its own, or on this SIGTERM)."""
        problem = None
        if self.alive():
            try:
                self.p.send_signal(signal.SIGCONT)
                self.p.send_signal(signal.SIGTERM)
                self.p.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(timeout=5)
                problem = "%s did not exit within %.0f s of SIGTERM" % (
                    self.name, STOP_TIMEOUT)
        self.out.close()
        self.err.close()
        rc = self.p.returncode
        if problem is None and not self.killed and rc != 0 and \
                not self.expect_fail:
            problem = "%s exited with %s" % (
                self.name, "signal %d" % -rc if rc < 0 else "status %d" % rc)
        return problem

    def sanitizer_report(self):
        try:
            text = self.log()
        except OSError:
            return None
        for line in text.splitlines():
            for pat in SANITIZER_PATTERNS:
                if pat in line:
                    return line.strip()
        return None


class Relay:
    """A running relay as the harness sees it.  ctx: the ssl context of
    the harness's own requests to a relay on HTTPS (None: plain HTTP)."""

    def __init__(self, proc, host, port, ctx=None):
        self.proc = proc
        self.host = host
        self.port = port
        self.ctx = ctx
        self.url = "%s://%s:%d" % ("https" if ctx else "http", host, port)

    def request(self, method, path, headers=None, body=None, timeout=10):
        """One HTTP request on a fresh connection: (status, headers, body)."""
        if self.ctx is None:
            c = http.client.HTTPConnection(self.host, self.port,
                                           timeout=timeout)
        else:
            c = http.client.HTTPSConnection(self.host, self.port,
                                            timeout=timeout, context=self.ctx)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            data = r.read()
            return r.status, dict((k.lower(), v) for k, v in
                                  r.getheaders()), data
        finally:
            c.close()

    def status(self):
        st, _, body = self.request("GET", "/v1/status", timeout=5)
        check(st == 200, "GET /v1/status answered %d: %r" % (st, body[:200]))
        try:
            return json.loads(body)
        except ValueError:
            raise TestFailure("GET /v1/status body is not JSON: %r"
                              % body[:200])

    def wait_status(self, pred, timeout, what):
        last = [None]

        def probe():
            try:
                last[0] = self.status()
            except (OSError, http.client.HTTPException):
                return False
            return pred(last[0])
        try:
            return wait_until(probe, timeout, what, interval=0.1)
        except TestFailure as e:
            raise TestFailure("%s (last status %s)" % (e, last[0]))


class Env:
    def __init__(self, bindir, name="test"):
        self.bindir = bindir
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="%s-" % name,
                                    dir=os.environ.get("POSTERN_IT_TMP"))
        self.procs = []
        self.services = []
        self.relay = None
        self.keys = {}
        # ASan: keep going after leaks are reported on exit so the report
        # lands in stderr, and keep the quarantine small enough that RSS
        # figures mean something.
        asan = os.environ.get("ASAN_OPTIONS",
                              "detect_leaks=1:abort_on_error=0")
        if "quarantine_size_mb" not in asan:
            asan += ":quarantine_size_mb=16"
        self.child_env = {
            "ASAN_OPTIONS": asan,
            "UBSAN_OPTIONS": os.environ.get(
                "UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1"),
        }

    def __enter__(self):
        return self

    def __exit__(self, et, ev, tb):
        problems = self.close(failing=et is not None)
        if et is not None and problems:
            # Keep the test's own failure first, and say what else broke.
            raise TestFailure("%s; teardown: %s"
                              % (ev, "; ".join(problems))) from ev
        return False

    def bin(self, prog):
        path = os.path.join(self.bindir, prog)
        check(os.access(path, os.X_OK),
              "%s is missing (not built yet?)" % path)
        return path

    def path(self, name):
        return os.path.join(self.dir, name)

    # -- keys -----------------------------------------------------------

    def keygen(self, name):
        """Makes NAME.key with postern-keygen; returns (path, public text)."""
        path = self.path(name + ".key")
        r = subprocess.run([self.bin("postern-keygen"), "-o", path],
                           capture_output=True, text=True, timeout=15)
        check(r.returncode == 0, "postern-keygen -o %s failed (%d): %s"
              % (path, r.returncode, r.stderr.strip()))
        pub = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        check(re.fullmatch(r"ed25519:[A-Za-z0-9+/]{43}=", pub),
              "postern-keygen printed %r, expected ed25519:BASE64"
              % r.stdout)
        os.chmod(path, 0o600)
        self.keys[name] = (path, pub)
        return path, pub

    def sign(self, key_name, path, method="POST", timestamp=None,
             nonce=None):
        """Signature headers for one request, made by postern-sign."""
        argv = [self.bin("postern-sign"), "--key", self.keys[key_name][0],
                "--method", method, "--path", path]
        if timestamp is not None:
            argv += ["--timestamp", str(int(timestamp))]
        if nonce is not None:
            argv += ["--nonce", nonce]
        r = subprocess.run(argv, capture_output=True, text=True, timeout=15)
        check(r.returncode == 0, "postern-sign failed (%d): %s"
              % (r.returncode, r.stderr.strip()))
        headers = {}
        for line in r.stdout.splitlines():
            k, _, v = line.partition(": ")
            headers[k] = v
        for k in ("Postern-Key", "Postern-Timestamp", "Postern-Nonce",
                  "Postern-Signature"):
            check(k in headers, "postern-sign printed no %s: %r"
                  % (k, r.stdout))
        return headers

    # -- relay ----------------------------------------------------------

    def write_relay_ini(self, servers, clients, settings=None,
                        name="relay.ini"):
        """servers: {name: (key_name, ports or None)};
        clients: {name: (key_name, allow)}; settings: [relay] keys."""
        lines = ["# written by the integration harness", "[relay]",
                 "listen = 127.0.0.1:0", "status = on"]
        for k, v in (settings or {}).items():
            lines.append("%s = %s" % (k, v))
        for sname, (kname, ports) in servers.items():
            lines += ["", "[server %s]" % sname,
                      "key = %s" % self.keys[kname][1]]
            if ports:
                lines.append("ports = %s" % ports)
        for cname, (kname, allow) in clients.items():
            lines += ["", "[client %s]" % cname,
                      "key = %s" % self.keys[kname][1],
                      "allow = %s" % allow]
        path = self.path(name)
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start_relay(self, ini="relay.ini", args=(), name="relay",
                    listen="127.0.0.1:0", tls=None, cafile=None):
        """tls: (cert, key) to serve HTTPS (--tls-cert, --tls-key); the
        harness's own requests then check the relay's certificate against
        cafile, or nothing when cafile is None: the proxies are what is
        under test."""
        argv = [self.bin("postern-relay"), "--config", self.path(ini),
                "--listen", listen]
        ctx = None
        if tls is not None:
            argv += ["--tls-cert", tls[0], "--tls-key", tls[1]]
            ctx = ssl.create_default_context(cafile=cafile) if cafile \
                else ssl._create_unverified_context()
        p = self.start(name, argv + list(args))
        scheme = "https" if tls is not None else "http"
        m = p.wait_log(r"listening on %s://([0-9.]+):(\d+)" % scheme,
                       what="'listening on %s://HOST:PORT'" % scheme)
        self.relay = Relay(p, m.group(1), int(m.group(2)), ctx)
        return self.relay

    # -- proxies --------------------------------------------------------

    def start_server(self, name, key_name, exposes, args=(), wait=True,
                     proc_name=None, relay_url=None):
        """exposes: {port_name: (host, port)}.  With wait, returns once the
        relay counts at least one listen per exposed port more than
        before.  relay_url: what --relay names (a forwarder in front of
        the relay, say) instead of the relay itself."""
        before = 0
        if wait:
            before = self.relay.status().get("listens", 0)
        argv = [self.bin("postern-server"), "--relay",
                relay_url or self.relay.url,
                "--name", name, "--key", self.keys[key_name][0]]
        for pname, (host, port) in exposes.items():
            argv += ["--expose", "%s=tcp://%s:%d" % (pname, host, port)]
        p = self.start(proc_name or "server-" + name, argv + list(args))
        if wait:
            # At least one listen per port, and then no change for a
            # moment: a proxy that keeps several listens per port must not
            # be caught with all of one port's and none of another's.
            want = before + len(exposes)
            seen = {"n": -1, "since": 0.0}

            def ready():
                if not p.alive():
                    raise TestFailure(
                        "%s exited with %s while registering; stderr:\n%s"
                        % (p.name, p.p.returncode, tail(p.err_path)))
                n = self.relay.status().get("listens", 0)
                now = time.monotonic()
                if n != seen["n"]:
                    seen["n"] = n
                    seen["since"] = now
                return n >= want and now - seen["since"] >= 0.15
            try:
                wait_until(ready, START_TIMEOUT,
                           "the relay to count %d listens from %s"
                           % (want, p.name), interval=0.05)
            except TestFailure as e:
                raise TestFailure("%s; %s stderr:\n%s"
                                  % (e, p.name, tail(p.err_path)))
        return p

    def start_client(self, key_name, forwards, args=(), name="client",
                     relay_url=None):
        """forwards: ["server/port", ...], each bound on 127.0.0.1:0.
        Returns (proc, {"server/port": local_port}).  relay_url as for
        start_server."""
        argv = [self.bin("postern-client"), "--relay",
                relay_url or self.relay.url,
                "--key", self.keys[key_name][0]]
        for fw in forwards:
            argv += ["-L", "127.0.0.1:0:%s" % fw]
        p = self.start(name, argv + list(args))
        ports = {}
        for fw in forwards:
            m = p.wait_log(r"listening on 127\.0\.0\.1:(\d+) -> %s\b"
                           % re.escape(fw),
                           what="'listening on 127.0.0.1:PORT -> %s'" % fw)
            ports[fw] = int(m.group(1))
        return p, ports

    def start(self, name, argv, extra_env=None):
        p = Proc(self, name, argv, extra_env)
        self.procs.append(p)
        return p

    # -- the usual topology ---------------------------------------------

    def standard(self, exposes, ports=None, settings=None, forwards=None,
                 extra_servers=None, extra_clients=None, start_server=True,
                 allow="nas/*"):
        """Keys nas + laptop, relay.ini, relay, server-proxy 'nas' exposing
        exposes {name: (host, port)}, client-proxy forwarding nas/NAME for
        each name (or forwards).  Returns (server proc, client proc,
        {name: local port})."""
        self.keygen("nas")
        self.keygen("laptop")
        servers = {"nas": ("nas", ports)}
        servers.update(extra_servers or {})
        clients = {"laptop": ("laptop", allow)}
        clients.update(extra_clients or {})
        self.write_relay_ini(servers, clients, settings)
        self.start_relay()
        server = None
        if start_server:
            server = self.start_server("nas", "nas", exposes)
        if forwards is None:
            forwards = ["nas/" + n for n in exposes]
        client, lports = self.start_client("laptop", forwards)
        short = dict((fw.split("/", 1)[1] if fw.startswith("nas/") else fw, p)
                     for fw, p in lports.items())
        return server, client, short

    def service(self, svc):
        self.services.append(svc)
        return svc

    # -- teardown -------------------------------------------------------

    def close(self, failing=False):
        for s in self.services:
            try:
                s.stop()
            except Exception:
                pass
        problems = []
        for p in reversed(self.procs):
            why = p.stop()
            if why:
                problems.append(why)
        reports = []
        for p in self.procs:
            r = p.sanitizer_report()
            if r:
                reports.append("%s: %s" % (os.path.basename(p.err_path), r))
        if reports:
            problems.insert(0, "sanitizer report: " + "; ".join(reports))
        for why in problems:
            print("teardown: " + why)
        if problems and not failing:
            raise TestFailure("; ".join(problems))
        return problems

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def connect(port, timeout=10.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def echo_round(sock, data, timeout=10):
    """Sends data on an echo tunnel and checks the same comes back."""
    sock.sendall(data)
    sock.settimeout(timeout)
    got = b""
    while len(got) < len(data):
        d = sock.recv(65536)
        check(d, "echo tunnel ended after %d of %d bytes"
              % (len(got), len(data)))
        got += d
    check(got == data, "echo returned %r, sent %r" % (got[:60], data[:60]))


def echo_once(port, data=b"hello", timeout=10):
    """echo_round on a new connection to 127.0.0.1:port."""
    s = connect(port, timeout=timeout)
    try:
        echo_round(s, data, timeout)
    finally:
        s.close()


def send_pattern(sock, seed, total, chunk=1 << 20):
    """Writes total Pattern(seed) bytes; returns their sha256 (hex)."""
    p = Pattern(seed, total)
    h = hashlib.sha256()
    while p.left:
        d = p.chunk(chunk)
        h.update(d)
        sock.sendall(d)
    return h.hexdigest()


def recv_hashed(sock, timeout, chunk=1 << 20):
    """Reads to EOF, each read within timeout: (bytes read, sha256
    hex)."""
    h = hashlib.sha256()
    n = 0
    sock.settimeout(timeout)
    while True:
        d = sock.recv(chunk)
        if not d:
            break
        h.update(d)
        n += len(d)
    return n, h.hexdigest()


def recv_all(sock, timeout, limit=1 << 30):
    """Reads until EOF; returns (bytes, how) where how is 'eof', 'reset' or
    'timeout'."""
    sock.settimeout(timeout)
    deadline = time.monotonic() + timeout
    buf = bytearray()
    while len(buf) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            return bytes(buf), "timeout"
        sock.settimeout(left)
        try:
            d = sock.recv(1 << 16)
        except socket.timeout:
            return bytes(buf), "timeout"
        except (ConnectionResetError, BrokenPipeError):
            return bytes(buf), "reset"
        if not d:
            return bytes(buf), "eof"
        buf += d
    return bytes(buf), "limit"


def wait_closed(sock, timeout):
    """Drains sock until the peer closes or resets it; returns (how,
    seconds, bytes drained)."""
    t0 = time.monotonic()
    sock.settimeout(0.5)
    n = 0
    while time.monotonic() - t0 < timeout:
        try:
            d = sock.recv(1 << 20)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return "reset", time.monotonic() - t0, n
        if not d:
            return "eof", time.monotonic() - t0, n
        n += len(d)
    return "open", time.monotonic() - t0, n


def error_json(body):
    """Parses a relay error body; checks it has error (a sentence) and
    code."""
    try:
        j = json.loads(body)
    except ValueError:
        raise TestFailure("error body is not JSON: %r" % body[:200])
    check(isinstance(j, dict), "error body is not an object: %r" % j)
    err = j.get("error")
    check(isinstance(err, str) and len(err) >= 8 and " " in err.strip(),
          "error body has no human sentence in 'error': %r" % j)
    check(isinstance(j.get("code"), str) and j["code"],
          "error body has no 'code': %r" % j)
    return j
