"""Real middleboxes for the integration tests: Debian's squid as a forward
proxy and nginx as a reverse proxy, each started by the test on 127.0.0.1
with its configuration, logs and pid file in a directory of the test's own.

Both run in the foreground (squid -N, nginx 'daemon off') as children of
the test, so the runner's process-group kill is the last resort; stop()
sends SIGTERM, waits at most STOP_TIMEOUT and then SIGKILLs.  Every wait
here is bounded and fails with the tail of the program's log.

Run as root (as the tests do here), squid switches to the `proxy` user and
nginx's workers to `nobody`: their directory is handed to that user and the
test directories above it are made traversable (o+x, not readable) so that
they can reach it.
"""

import os
import pwd
import re
import shutil
import signal
import socket
import stat
import subprocess
import time

from harness import TestFailure, check, free_port, tail

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0
BIND_ATTEMPTS = 4     # a free_port() taken by someone else meanwhile


def _require(prog):
    path = shutil.which(prog) or (os.path.join("/usr/sbin", prog)
                                  if os.access(os.path.join("/usr/sbin",
                                                            prog), os.X_OK)
                                  else None)
    check(path is not None, "%s is not installed (scripts/install-deps.sh "
          "installs squid and nginx-light)" % prog)
    return path


def _hand_over(path, user):
    """Makes path owned by user (when we are root) and every directory
    above it traversable by others, so that a program that dropped its
    privileges to user can write there."""
    if os.geteuid() != 0:
        return
    pw = pwd.getpwnam(user)
    os.chown(path, pw.pw_uid, pw.pw_gid)
    d = os.path.dirname(os.path.abspath(path))
    while d and d != "/":
        st = os.stat(d)
        if not st.st_mode & stat.S_IXOTH:
            os.chmod(d, stat.S_IMODE(st.st_mode) | stat.S_IXOTH)
        d = os.path.dirname(d)


def _port_open(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


class _Daemon:
    """A foreground server process with logs in self.dir."""

    name = "daemon"

    def __init__(self, parent_dir, name):
        self.dir = os.path.join(parent_dir, name)
        os.makedirs(self.dir, exist_ok=True)
        os.chmod(self.dir, 0o755)
        self.p = None
        self.port = None
        self.out = None

    def _log_path(self):
        raise NotImplementedError

    def _started(self):
        """True once the process serves; raise on a fatal start error."""
        raise NotImplementedError

    def _spawn(self, argv):
        self.out = open(os.path.join(self.dir, "stderr.txt"), "ab")
        with open(os.path.join(self.dir, "command.txt"), "a") as f:
            f.write(" ".join(argv) + "\n")
        self.p = subprocess.Popen(argv, stdout=self.out, stderr=self.out,
                                  stdin=subprocess.DEVNULL, cwd=self.dir)

    def _wait_started(self):
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._started():
                return True
            if self.p.poll() is not None:
                return False
            if time.monotonic() >= deadline:
                raise TestFailure("%s did not start within %.0f s; log:\n%s"
                                  % (self.name, START_TIMEOUT,
                                     tail(self._log_path())))
            time.sleep(0.05)

    def log(self):
        try:
            with open(self._log_path(), errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def stop(self):
        """SIGTERM, then SIGKILL after STOP_TIMEOUT; never raises."""
        if self.p is None:
            return
        if self.p.poll() is None:
            try:
                self.p.send_signal(signal.SIGTERM)
                self.p.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.p.kill()
                try:
                    self.p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        if self.out is not None:
            self.out.close()
            self.out = None


class Squid(_Daemon):
    """squid as a forward proxy on 127.0.0.1:self.port for clients on
    127.0.0.1.  connect_ports: the ports CONNECT may reach (none by
    default: only absolute-URI requests).  tls: (cert, key) PEM files to
    make it an HTTPS proxy (clients speak TLS to squid itself; self.url is
    then https://).  access.log has one line per request: 'TIME ELAPSED
    CLIENT CODE/STATUS BYTES METHOD URL ...'."""

    name = "squid"

    def __init__(self, parent_dir, connect_ports=(), name="squid", tls=None):
        super().__init__(parent_dir, name)
        self.bin = _require("squid")
        self.connect_ports = list(connect_ports)
        self.tls = None
        _hand_over(self.dir, "proxy")
        if tls is not None:
            # Squid reads them as the proxy user.
            self.tls = (os.path.join(self.dir, "proxy.crt"),
                        os.path.join(self.dir, "proxy.key"))
            for src, dst in zip(tls, self.tls):
                shutil.copyfile(src, dst)
                os.chmod(dst, 0o600)
                _hand_over(dst, "proxy")
        self.access_log = os.path.join(self.dir, "access.log")
        self.cache_log = os.path.join(self.dir, "cache.log")
        for _ in range(BIND_ATTEMPTS):
            self.port = free_port()
            self._write_conf()
            self._spawn([self.bin, "-N", "-f", self.conf, "-n",
                         "postern%d" % os.getpid()])
            if self._wait_started():
                self.url = "%s://127.0.0.1:%d" % (
                    "https" if self.tls else "http", self.port)
                return
            self.stop()
            if "Cannot bind socket" not in self.log():
                break
        raise TestFailure("squid exited with %s at start; cache.log:\n%s"
                          % (self.p.returncode, tail(self.cache_log, 25)))

    def _log_path(self):
        return self.cache_log

    def _write_conf(self):
        d = self.dir
        lines = [
            "# written by tests/integration/middleboxes.py",
            ("https_port 127.0.0.1:%d tls-cert=%s tls-key=%s"
             % ((self.port,) + self.tls)) if self.tls else
            "http_port 127.0.0.1:%d" % self.port,
            "pid_filename %s/squid.pid" % d,
            "cache_log %s" % self.cache_log,
            "access_log stdio:%s" % self.access_log,
            "cache_store_log none",
            "logfile_rotate 0",
            "coredump_dir %s" % d,
            "netdb_filename none",
            "shutdown_lifetime 0 seconds",
            # A proxy, not a cache: no cache_dir, nothing kept.
            "cache deny all",
            "cache_mem 8 MB",
            # Nothing leaves loopback, not even a DNS query.
            "dns_nameservers 127.0.0.1",
            "udp_incoming_address 127.0.0.1",
            "udp_outgoing_address 127.0.0.1",
            "pinger_enable off",
            "visible_hostname postern-test",
            "acl localclients src 127.0.0.1/32",
            "acl CONNECT method CONNECT",
        ]
        if self.connect_ports:
            lines += ["acl relay_ports port %s"
                      % " ".join(str(p) for p in self.connect_ports),
                      "http_access deny CONNECT !relay_ports"]
        else:
            lines.append("http_access deny CONNECT")
        lines += ["http_access allow localclients", "http_access deny all"]
        self.conf = os.path.join(d, "squid.conf")
        with open(self.conf, "w") as f:
            f.write("\n".join(lines) + "\n")

    def _started(self):
        text = self.log()
        if "FATAL" in text:
            return False
        return re.search(r"Accepting HTTPS? Socket connections", text) and \
            _port_open(self.port)

    def requests(self):
        """[(method, url, status)] from access.log, oldest first; the
        start-up probe of the port (a connection without a request,
        method '-') is left out."""
        out = []
        try:
            with open(self.access_log, errors="replace") as f:
                for line in f:
                    fs = line.split()
                    if len(fs) >= 7 and "/" in fs[3] and fs[5] != "-":
                        out.append((fs[5], fs[6], fs[3].split("/")[1]))
        except OSError:
            pass
        return out


# What docs/deployment.md recommends for streamed bodies (keep the two
# in step).
NGINX_STREAMING = """
        proxy_http_version 1.1;
        proxy_set_header Connection "";
        proxy_buffering off;
        proxy_request_buffering off;
        client_max_body_size 0;
        proxy_read_timeout 300s;
        proxy_send_timeout 300s;
        client_body_timeout 300s;
        send_timeout 300s;
"""


class Nginx(_Daemon):
    """nginx as a reverse proxy on 127.0.0.1:self.port in front of
    127.0.0.1:upstream_port.  location: the directives of `location /`
    after proxy_pass (NGINX_STREAMING, or "" for nginx's defaults)."""

    name = "nginx"

    def __init__(self, parent_dir, upstream_port, location="",
                 name="nginx", keepalive=64):
        super().__init__(parent_dir, name)
        self.bin = _require("nginx")
        self.upstream_port = upstream_port
        self.location = location
        self.keepalive = keepalive
        # The workers (nobody) write request bodies to the temp paths;
        # the master creates those and hands them over.
        _hand_over(self.dir, "nobody")
        self.error_log = os.path.join(self.dir, "error.log")
        self.access_log = os.path.join(self.dir, "access.log")
        self.pid_file = os.path.join(self.dir, "nginx.pid")
        for _ in range(BIND_ATTEMPTS):
            self.port = free_port()
            self._write_conf()
            self._spawn([self.bin, "-p", self.dir, "-c", self.conf, "-g",
                         "daemon off; pid %s;" % self.pid_file])
            if self._wait_started():
                self.url = "http://127.0.0.1:%d" % self.port
                return
            self.stop()
            if "Address already in use" not in self.log():
                break
        raise TestFailure("nginx exited with %s at start; error.log:\n%s"
                          % (self.p.returncode, tail(self.error_log, 25)))

    def _log_path(self):
        return self.error_log

    def _write_conf(self):
        d = self.dir
        # With keepalive, the upstream connections are reused (and the
        # Connection header must be cleared, which NGINX_STREAMING does);
        # without, proxy_pass names the relay itself: nginx as shipped.
        if self.keepalive:
            upstream = ("upstream postern_relay {\n"
                        "        server 127.0.0.1:%d;\n"
                        "        keepalive %d;\n    }"
                        % (self.upstream_port, self.keepalive))
            target = "http://postern_relay"
        else:
            upstream = ""
            target = "http://127.0.0.1:%d" % self.upstream_port
        text = """# written by tests/integration/middleboxes.py
worker_processes 1;
error_log %(d)s/error.log info;
lock_file %(d)s/nginx.lock;
events { worker_connections 4096; }
http {
    access_log %(d)s/access.log;
    client_body_temp_path %(d)s/body;
    proxy_temp_path %(d)s/proxy;
    fastcgi_temp_path %(d)s/fastcgi;
    uwsgi_temp_path %(d)s/uwsgi;
    scgi_temp_path %(d)s/scgi;
    %(upstream)s
    server {
        listen 127.0.0.1:%(port)d;
        location / {
            proxy_pass %(target)s;
%(location)s
        }
    }
}
""" % {"d": d, "port": self.port, "upstream": upstream, "target": target,
       "location": self.location}
        self.conf = os.path.join(d, "nginx.conf")
        with open(self.conf, "w") as f:
            f.write(text)

    def _started(self):
        text = self.log()
        if "[emerg]" in text:
            return False
        return "start worker process" in text and _port_open(self.port)

    def statuses(self, path_part):
        """Status codes of the access log's requests whose line contains
        path_part."""
        out = []
        try:
            with open(self.access_log, errors="replace") as f:
                for line in f:
                    if path_part in line:
                        m = re.search(r'" (\d{3}) ', line)
                        if m:
                            out.append(int(m.group(1)))
        except OSError:
            pass
        return out
