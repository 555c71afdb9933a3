#!/usr/bin/env python3
"""make bench: Postern side by side with direct loopback and GNU httptunnel.

Every path is measured in the same run, against the same target service
(bench/pbench.c `server`), several repetitions each; the table reports the
median and the spread (min..max). Results go to bench/results/ as Markdown
and CSV, with a PNG chart of Postern's ratios to direct loopback.

Settings (environment):
  BENCH_REPS      repetitions per figure (default 3)
  BENCH_BYTES     bytes per single-stream run (default 1 GiB)
  BENCH_AGG_BYTES bytes per aggregate run (default 1 GiB)
  BENCH_RTT       round trips per RTT run (default 5000)
  BENCH_CONNECTS  new tunnels per connect run (default 500)
  BENCH_IDLE      idle tunnel counts for RSS (default "1 100 1000 2000")
  BENCH_SKIP_HTTPTUNNEL=1 to leave GNU httptunnel out
  BENCH_SKIP_SEGMENTED=1 to leave out Postern with --transport segmented
  BENCH_SKIP_HTTPS=1 to leave out Postern over HTTPS (a relay serving TLS
                  with a self-signed certificate made by openssl, proxies
                  trusting it with --cacert)
  BENCH_SECTIONS  which figures to measure (default "throughput latency idle")
  BENCH_RELAY_CONF extra lines for the relay's [relay] section (a literal
                  \\n separates lines), e.g. "connection_memory = 32768"
                  (default: none)
  BENCH_TUNABLES  GLIBC_TUNABLES for the three Postern programs only, e.g.
                  "glibc.malloc.mmap_threshold=131072" (default: none); the
                  same as a mallopt() in their main()
"""
import csv
import datetime
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "build"))
PBENCH = os.path.join(BIN, "pbench")
REPS = int(os.environ.get("BENCH_REPS", "3"))
BYTES = int(os.environ.get("BENCH_BYTES", str(1 << 30)))
AGG_BYTES = int(os.environ.get("BENCH_AGG_BYTES", str(1 << 30)))
RTT_COUNT = int(os.environ.get("BENCH_RTT", "5000"))
CONNECTS = int(os.environ.get("BENCH_CONNECTS", "500"))
IDLE_COUNTS = [int(x) for x in os.environ.get("BENCH_IDLE", "1 100 1000 2000").split()]
SECTIONS = os.environ.get("BENCH_SECTIONS", "throughput latency idle").split()
TUNABLES = os.environ.get("BENCH_TUNABLES", "")
RELAY_CONF = os.environ.get("BENCH_RELAY_CONF", "").replace("\\n", "\n")
RUN_TIMEOUT = 120  # seconds: any single measurement that takes longer failed
CLK_TCK = os.sysconf("SC_CLK_TCK")

procs = []


def log(msg):
    print(f"bench: {msg}", flush=True)


def start(args, name, tmp, **kw):
    out = open(os.path.join(tmp, name + ".log"), "w")
    p = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, **kw)
    p.logname = os.path.join(tmp, name + ".log")
    procs.append(p)
    return p


def wait_log(p, pattern, timeout=15):
    deadline = time.time() + timeout
    rx = re.compile(pattern)
    while time.time() < deadline:
        with open(p.logname) as f:
            m = rx.search(f.read())
        if m:
            return m
        if p.poll() is not None:
            break
        time.sleep(0.05)
    with open(p.logname) as f:
        tail = f.read()[-2000:]
    raise RuntimeError(f"{p.args[0]} did not log /{pattern}/ in {timeout}s:\n{tail}")


def stop_all():
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            p.kill()
    procs.clear()


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def pbench(*args, timeout=RUN_TIMEOUT):
    r = subprocess.run([PBENCH, *map(str, args)], capture_output=True, text=True, timeout=timeout)
    if r.returncode not in (0, 1) or not r.stdout:
        raise RuntimeError(f"pbench {' '.join(map(str, args))}: {r.stderr.strip()}")
    return dict(kv.split("=") for kv in r.stdout.split())


class Path:
    """One way to reach the target: direct, httptunnel or postern."""

    def __init__(self, name, addr, pids=None, concurrent=True, sections=None):
        self.name = name
        self.addr = addr
        self.pids = pids or {}
        self.concurrent = concurrent
        self.sections = sections   # None: all of BENCH_SECTIONS


def setup_direct(tmp, target_port):
    return Path("direct", f"127.0.0.1:{target_port}")


def setup_httptunnel(tmp, target_port):
    if os.environ.get("BENCH_SKIP_HTTPTUNNEL") or not shutil.which("hts"):
        return None
    hport, cport = free_port(), free_port()
    hts = start(["hts", "-w", "-F", f"127.0.0.1:{target_port}", f"127.0.0.1:{hport}"], "hts", tmp)
    time.sleep(0.3)
    htc = start(["htc", "-w", "-F", str(cport), f"127.0.0.1:{hport}"], "htc", tmp)
    time.sleep(0.5)
    # GNU httptunnel carries one TCP connection at a time.
    return Path("httptunnel", f"127.0.0.1:{cport}", {"hts": hts.pid, "htc": htc.pid}, concurrent=False)


def free_port():
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def setup_postern(tmp, target_port, name="postern", proxy_args=(), sections=None, tls=False):
    tmp = os.path.join(tmp, name)
    os.makedirs(tmp, exist_ok=True)
    keygen = os.path.join(BIN, "postern-keygen")
    keys = {}
    for who in ("server", "client"):
        path = os.path.join(tmp, who + ".key")
        keys[who] = subprocess.run([keygen, "-o", path], capture_output=True, text=True,
                                   check=True).stdout.strip()
    tls_conf = ""
    if tls:
        cert, key = os.path.join(tmp, "relay.crt"), os.path.join(tmp, "relay.key")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                        "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                        "-keyout", key, "-out", cert], capture_output=True, check=True)
        tls_conf = f"tls_cert = {cert}\ntls_key = {key}"
        proxy_args = (*proxy_args, "--cacert", cert)
    ini = os.path.join(tmp, "relay.ini")
    with open(ini, "w") as f:
        f.write(f"""[relay]
listen = 127.0.0.1:0
status = on
max_tunnels = 8192
max_connections = 40000
max_pending_connects = 4096
{tls_conf}
{RELAY_CONF}

[server bench]
key = {keys['server']}

[client laptop]
key = {keys['client']}
allow = bench/*
""")
    env = dict(os.environ, GLIBC_TUNABLES=TUNABLES) if TUNABLES else None
    relay = start([os.path.join(BIN, "postern-relay"), "--config", ini], "relay", tmp, env=env)
    relay_addr = wait_log(relay, r"listening on (https?://[0-9.]+:\d+)").group(1)
    server = start([os.path.join(BIN, "postern-server"), "--relay", relay_addr, "--name", "bench",
                    "--key", os.path.join(tmp, "server.key"),
                    "--expose", f"b=tcp://127.0.0.1:{target_port}", "--max-tunnels", "4096",
                    *proxy_args], "server", tmp, env=env)
    client = start([os.path.join(BIN, "postern-client"), "--relay", relay_addr,
                    "--key", os.path.join(tmp, "client.key"), "-L", "0:bench/b", "--max-tunnels", "4096",
                    *proxy_args], "client", tmp, env=env)
    m = wait_log(client, r"listening on ([0-9.]+):(\d+)")
    time.sleep(0.5)  # let the server-proxy post its listens
    return Path(name, f"{m.group(1)}:{m.group(2)}",
                {"relay": relay.pid, "server-proxy": server.pid, "client-proxy": client.pid},
                sections=sections)


def setup_postern_segmented(tmp, target_port):
    """Postern forced into bounded requests (--transport segmented), the
    mode it falls back to behind middleboxes that buffer bodies: its
    throughput and latency beside streaming."""
    if os.environ.get("BENCH_SKIP_SEGMENTED") == "1":
        return None
    return setup_postern(tmp, target_port, "postern-segmented",
                         ("--transport", "segmented"), ("throughput", "latency"))


def setup_postern_https(tmp, target_port):
    """Postern with the relay serving HTTPS itself (TLS 1.3, ECDSA P-256
    certificate): what TLS costs beside plain HTTP."""
    if os.environ.get("BENCH_SKIP_HTTPS") == "1":
        return None
    if not shutil.which("openssl"):
        raise RuntimeError("openssl is missing (scripts/install-deps.sh installs it)")
    return setup_postern(tmp, target_port, "postern-https", (), None, tls=True)


def ratio(results, path, metric):
    """path's median over direct's for metric, or None."""
    d, p = results.get(("direct", metric)), results.get((path, metric))
    return p[0] / d[0] if d and p and d[0] else None


def med(values):
    return statistics.median(values) if values else None


def spread(values):
    return f"{min(values):.1f}..{max(values):.1f}" if values else ""


def measure(path, results):
    """Fills results[(path, metric)] = (median, spread, unit).  A figure
    that cannot be measured on a path is noted, and the others still are."""
    for section in (measure_throughput, measure_latency, measure_idle):
        name = section.__name__.replace("measure_", "")
        if name not in SECTIONS or (path.sections is not None and
                                    name not in path.sections):
            continue
        try:
            section(path, results)
        except Exception as e:
            results.setdefault("notes", set()).add(
                f"{path.name}: {section.__name__} failed: {str(e).strip()[:200]}")


def rec_into(results, path):
    def rec(metric, vals, unit):
        results[(path.name, metric)] = (med(vals), spread(vals), unit)
    return rec


def measure_throughput(path, results):
    rec = rec_into(results, path)

    cpu = {k: 0.0 for k in path.pids}
    moved = 0
    for direction in ("up", "down"):
        vals = []
        for _ in range(REPS):
            before = {k: cpu_seconds(p) for k, p in path.pids.items()}
            r = pbench(direction, path.addr, BYTES, 1)
            after = {k: cpu_seconds(p) for k, p in path.pids.items()}
            for k in cpu:
                cpu[k] += after[k] - before[k]
            moved += BYTES
            vals.append(float(r["mbps"]))
            if r.get("ok") != "1":
                results.setdefault("notes", set()).add(
                    f"{path.name} {direction}: the byte count did not come back (no half-close)")
        rec(f"1 stream {direction} MB/s", vals, "MB/s")
    for k, v in cpu.items():
        results[(path.name, f"CPU s/GiB {k}")] = (v / (moved / (1 << 30)), "", "s/GiB")

    if path.concurrent:
        for n in (8, 64):
            vals = []
            before = {k: cpu_seconds(p) for k, p in path.pids.items()}
            for _ in range(REPS):
                vals.append(float(pbench("down", path.addr, AGG_BYTES, n)["mbps"]))
            after = {k: cpu_seconds(p) for k, p in path.pids.items()}
            rec(f"{n} streams MB/s", vals, "MB/s")
            for k in path.pids:
                results[(path.name, f"CPU s/GiB {k} @{n} streams")] = (
                    (after[k] - before[k]) / (REPS * AGG_BYTES / (1 << 30)), "", "s/GiB")



def measure_latency(path, results):
    rec = rec_into(results, path)
    p50, p99 = [], []
    for _ in range(REPS):
        r = pbench("rtt", path.addr, RTT_COUNT)
        p50.append(float(r["p50_us"]))
        p99.append(float(r["p99_us"]))
    rec("RTT p50 us", p50, "us")
    rec("RTT p99 us", p99, "us")

    c50, c99, rate = [], [], []
    for _ in range(REPS):
        r = pbench("connect", path.addr, CONNECTS if path.concurrent else min(CONNECTS, 50))
        c50.append(float(r["p50_us"]))
        c99.append(float(r["p99_us"]))
        rate.append(float(r["per_s"]))
    rec("connect p50 us", c50, "us")
    rec("connect p99 us", c99, "us")
    rec("new tunnels/s", rate, "/s")



def measure_idle(path, results):
    if path.pids and path.concurrent:
        for n in IDLE_COUNTS:
            idle = subprocess.Popen([PBENCH, "idle", path.addr, str(n)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, text=True)
            line = idle.stdout.readline()
            if not line.startswith("ready"):
                raise RuntimeError(f"{n} idle tunnels did not open")
            time.sleep(1.0)
            for k, pid in path.pids.items():
                results[(path.name, f"RSS KiB {k} @{n} idle")] = (rss_kib(pid), "", "KiB")
            if n == max(IDLE_COUNTS):
                before = {k: cpu_seconds(p) for k, p in path.pids.items()}
                time.sleep(5)
                for k, pid in path.pids.items():
                    results[(path.name, f"idle CPU s/5s {k} @{n}")] = (
                        cpu_seconds(pid) - before[k], "", "s")
            idle.stdin.close()
            out = idle.stdout.read()
            idle.wait(timeout=60)
            if not out.startswith(f"ok {n}"):
                results.setdefault("notes", set()).add(f"{path.name}: only '{out.strip()}' of {n} idle tunnels still echoed")
        lo, hi = min(IDLE_COUNTS), max(IDLE_COUNTS)
        if hi > lo:
            for k in path.pids:
                a = results[(path.name, f"RSS KiB {k} @{lo} idle")][0]
                b = results[(path.name, f"RSS KiB {k} @{hi} idle")][0]
                results[(path.name, f"RSS KiB per tunnel {k}")] = ((b - a) / (hi - lo), "", "KiB")


LOAD_START = os.getloadavg()


def main():
    if not os.access(PBENCH, os.X_OK):
        sys.exit(f"bench: {PBENCH} is missing: run `make bench`")
    unknown = [x for x in SECTIONS if x not in ("throughput", "latency", "idle")]
    if unknown or not SECTIONS:
        sys.exit(f"bench: BENCH_SECTIONS={' '.join(SECTIONS)!r}: use any of "
                 "'throughput latency idle'")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    tmp = tempfile.mkdtemp(prefix="postern-bench-")
    results = {}
    paths = []
    try:
        target = start([PBENCH, "server", "127.0.0.1:0"], "target", tmp)
        tport = int(wait_log(target, r"listening (\d+)").group(1))
        for setup in (setup_direct, setup_httptunnel, setup_postern, setup_postern_https,
                      setup_postern_segmented):
            try:
                p = setup(tmp, tport)
            except Exception as e:  # a path that cannot start is reported, not fatal
                log(f"{setup.__name__}: {e}")
                continue
            if p is None:
                continue
            log(f"measuring {p.name} via {p.addr}")
            measure(p, results)
            paths.append(p.name)
    finally:
        stop_all()
        shutil.rmtree(tmp, ignore_errors=True)
    write_results(paths, results)


def write_results(paths, results):
    outdir = os.path.join(ROOT, "bench", "results")
    os.makedirs(outdir, exist_ok=True)
    metrics = []
    for (pname, metric) in [k for k in results if k != "notes"]:
        if metric not in metrics:
            metrics.append(metric)
    stamp = datetime.datetime.utcnow().strftime("%Y-%m-%dT%H%MZ")
    ratio_paths = [pn for pn in paths if pn.startswith("postern")]
    machine = f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores, kernel {platform.release()}"
    load = " / ".join(" ".join(f"{x:.2f}" for x in la) for la in (LOAD_START, os.getloadavg()))
    lines = [f"# Postern benchmark {stamp}", "", f"Machine: {machine}; load average (1, 5, 15 min)"
             f" at the start / end {load}."
             + (f" Postern ran with GLIBC_TUNABLES={TUNABLES}." if TUNABLES else "")
             + (" Relay settings added: `" + RELAY_CONF.replace("\n", "`, `") + "`."
                if RELAY_CONF else ""),
             f"Repetitions: {REPS}; single stream {BYTES >> 20} MiB, aggregate {AGG_BYTES >> 20} MiB,"
             f" {RTT_COUNT} round trips, {CONNECTS} new tunnels.", "",
             "| figure | " + " | ".join(paths) + " | "
             + " | ".join(f"{r} / direct" for r in ratio_paths) + " |",
             "| --- | " + " | ".join("---" for _ in paths + ratio_paths) + " |"]
    rows = []
    for metric in metrics:
        cells = []
        for pname in paths:
            v = results.get((pname, metric))
            cells.append("" if v is None else (f"{v[0]:.1f}" + (f" ({v[1]})" if v[1] else "")))
        ratios = [("" if r is None else f"{r:.2f}x")
                  for r in (ratio(results, rp, metric) for rp in ratio_paths)]
        lines.append(f"| {metric} | " + " | ".join(cells + ratios) + " |")
        rows.append([metric] + [("" if results.get((pn, metric)) is None else results[(pn, metric)][0])
                                for pn in paths])
    lines += ["", "Targets (issue 4), from this run:", ""] + targets(results)
    if results.get("notes"):
        lines += ["", "Notes:"] + [f"- {n}" for n in sorted(results["notes"])]
    md = "\n".join(lines) + "\n"
    for name in (f"{stamp}.md", "latest.md"):
        with open(os.path.join(outdir, name), "w") as f:
            f.write(md)
    for name in (f"{stamp}.csv", "latest.csv"):
        with open(os.path.join(outdir, name), "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["figure"] + paths)
            w.writerows(rows)
    chart(outdir, results)
    print(md)


def targets(results):
    """The issue's targets, checked against this run's medians."""
    def get(path, metric):
        v = results.get((path, metric))
        return v[0] if v else None

    out = []

    def check(name, ok, detail):
        out.append(f"- {name}: {'met' if ok else 'NOT met'} ({detail})")

    for d in ("up", "down"):
        p, dr, h = (get("postern", f"1 stream {d} MB/s"), get("direct", f"1 stream {d} MB/s"),
                    get("httptunnel", f"1 stream {d} MB/s"))
        if p and dr:
            extra = f", {p / h:.1f}x GNU httptunnel" if h else ""
            check(f"one stream {d} >= 0.35x direct", p >= 0.35 * dr, f"{p / dr:.2f}x{extra}")
    p, dr = get("postern", "RTT p50 us"), get("direct", "RTT p50 us")
    if p and dr:
        check("RTT p50 <= direct + 100 us", p <= dr + 100, f"direct + {p - dr:.0f} us")
    p = get("postern", "connect p50 us")
    if p:
        check("connect-to-first-byte p50 <= 1 ms", p <= 1000, f"{p:.0f} us")
    per = get("postern", "RSS KiB per tunnel relay")
    if per is not None:
        check("relay RSS <= 64 KiB per tunnel", per <= 64, f"{per:.1f} KiB")
    idle = [v[0] for k, v in results.items()
            if k != "notes" and k[0] == "postern" and k[1].startswith("idle CPU")]
    if idle:
        check("idle tunnels cost no CPU", max(idle) <= 0.02, f"max {max(idle):.2f} s over 5 s")
    return out


def chart(outdir, results):
    if not shutil.which("gnuplot"):
        log("gnuplot missing: no chart")
        return
    keys = ["1 stream up MB/s", "1 stream down MB/s", "8 streams MB/s", "64 streams MB/s",
            "RTT p50 us", "connect p50 us"]
    series = [pn for pn in ("postern", "postern-https", "postern-segmented")
              if any((pn, k) in results for k in keys)]
    data = os.path.join(outdir, "latest-ratios.dat")
    with open(data, "w") as f:
        f.write("# figure " + " ".join(series) + "\n")
        for k in keys:
            d = results.get(("direct", k))
            if not d or not d[0]:
                continue
            vals = [("NaN" if r is None else f"{r:.3f}")
                    for r in (ratio(results, pn, k) for pn in series)]
            f.write(f"\"{k}\" " + " ".join(vals) + "\n")
    plots = ", ".join(f"'{data}' using {i + 2}:xtic(1) title '{pn}'" for i, pn in enumerate(series))
    script = f"""set terminal png size 1000,450
set output '{os.path.join(outdir, 'latest-ratios.png')}'
set title 'Postern as a ratio of direct loopback (throughput: higher is better; latency: lower is better)'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8
set key top left
set logscale y
set yrange [0.01:*]
set xtics rotate by -20
set grid y
plot {plots}
"""
    subprocess.run(["gnuplot"], input=script, text=True, check=False)


if __name__ == "__main__":
    main()
