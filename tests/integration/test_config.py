"""Start-up errors a person makes while setting Postern up: each program
exits non-zero at once with a message naming the file (and line) and what
to fix.  Also postern-keygen's contract."""

import os
import re
import socket
import stat
import subprocess

from harness import Env, check, free_port, timeout

BASE_INI = """[relay]
listen = 127.0.0.1:0
status = on

[server nas]
key = {nas}
ports = ssh web

[client laptop]
key = {laptop}
allow = nas/ssh nas/web
"""


def _run(argv, timeout=15):
    try:
        return subprocess.run(argv, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        check(False, "%s did not exit within %d s (expected a start-up "
              "error)" % (" ".join(argv), timeout))


def _bad_ini(env, name, text, line, what):
    path = env.path(name)
    with open(path, "w") as f:
        f.write(text)
    r = _run([env.bin("postern-relay"), "--config", path, "--listen",
              "127.0.0.1:0"])
    check(r.returncode != 0, "relay started with %s (exit 0); stderr: %s"
          % (what, r.stderr[-400:]))
    want = "%s:%d" % (name, line)
    check(want in r.stderr, "relay's error for %s does not name %s: %r"
          % (what, want, r.stderr[-400:]))
    check("AddressSanitizer" not in r.stderr and
          "LeakSanitizer" not in r.stderr and
          "runtime error:" not in r.stderr,
          "sanitizer report on a config error: %s" % r.stderr[-800:])
    print("%s -> exit %d: %s" % (what, r.returncode,
                                 r.stderr.strip().splitlines()[-1]))


@timeout(60)
def test_relay_config_errors(bindir):
    with Env(bindir, "relayconfig") as env:
        _, nas = env.keygen("nas")
        _, laptop = env.keygen("laptop")
        good = BASE_INI.format(nas=nas, laptop=laptop)
        lines = good.splitlines()

        def edit(lineno, text):
            ls = list(lines)
            ls.insert(lineno - 1, text)
            return "\n".join(ls) + "\n"
        _bad_ini(env, "unknown-key.ini", edit(3, "frobnicate = yes"), 3,
                 "an unknown key in [relay]")
        _bad_ini(env, "unknown-section.ini", edit(5, "[gateway]"), 5,
                 "an unknown section")
        _bad_ini(env, "bad-number.ini", edit(4, "idle_timeout = soon"), 4,
                 "idle_timeout = soon")
        bad_key = good.replace("key = " + nas, "key = ed25519:nonsense")
        _bad_ini(env, "bad-key.ini", bad_key, 6, "a malformed public key")
        _bad_ini(env, "server-key-key.ini", edit(9, "keyy = x"), 9,
                 "an unknown key in [server nas]")
        # A file that does not exist: non-zero, names the file.
        missing = env.path("nope.ini")
        r = _run([env.bin("postern-relay"), "--config", missing])
        check(r.returncode != 0 and "nope.ini" in r.stderr,
              "missing config: exit %d, stderr %r" % (r.returncode,
                                                      r.stderr[-300:]))
        # The good file starts.
        with open(env.path("relay.ini"), "w") as f:
            f.write(good)
        env.start_relay()


def _refuses_key(env, argv, keyfile, prog):
    r = _run(argv)
    check(r.returncode != 0, "%s accepted a key file of mode 0644; "
          "stderr: %s" % (prog, r.stderr[-400:]))
    msg = r.stderr
    check(os.path.basename(keyfile) in msg,
          "%s's error does not name the key file: %r" % (prog, msg[-400:]))
    check(re.search(r"0?644|mode|permission|readable|chmod", msg, re.I),
          "%s's error does not say the mode is wrong: %r"
          % (prog, msg[-400:]))
    print("%s: %s" % (prog, msg.strip().splitlines()[-1]))


@timeout(60)
def test_key_mode_refused(bindir):
    """A key file of mode 0644 is refused by every program that reads
    one."""
    with Env(bindir, "keymode") as env:
        path, _ = env.keygen("loose")
        os.chmod(path, 0o644)
        url = "http://127.0.0.1:%d" % free_port()
        _refuses_key(env, [env.bin("postern-server"), "--relay", url,
                           "--name", "nas", "--key", path, "--expose",
                           "ssh=tcp://127.0.0.1:22"], path, "postern-server")
        _refuses_key(env, [env.bin("postern-client"), "--relay", url,
                           "--key", path, "-L", "127.0.0.1:0:nas/ssh"],
                     path, "postern-client")
        _refuses_key(env, [env.bin("postern-sign"), "--key", path,
                           "--path", "/v1/s/nas/listen/ssh"], path,
                     "postern-sign")


@timeout(60)
def test_keygen_basics(bindir):
    """postern-keygen -o writes a 0600 key and prints its public key;
    --public prints the same; it never overwrites a key."""
    with Env(bindir, "keygen") as env:
        path, pub = env.keygen("a")
        mode = stat.S_IMODE(os.stat(path).st_mode)
        check(mode == 0o600, "key file mode is %o, expected 600" % mode)
        r = _run([env.bin("postern-keygen"), "--public", path])
        check(r.returncode == 0 and r.stdout.strip() == pub,
              "--public printed %r (exit %d), -o printed %r"
              % (r.stdout, r.returncode, pub))
        with open(path, "rb") as f:
            before = f.read()
        r = _run([env.bin("postern-keygen"), "-o", path])
        check(r.returncode != 0, "postern-keygen -o overwrote an existing "
              "key (exit 0)")
        with open(path, "rb") as f:
            check(f.read() == before, "the existing key file changed")
        _, pub2 = env.keygen("b")
        check(pub2 != pub, "two keys have the same public key")


def _fails_clearly(argv, want, what):
    """argv must exit non-zero within 15 s with every regex of want in its
    stderr."""
    r = _run(argv)
    check(r.returncode != 0, "%s: exit 0; stderr: %s" % (what,
                                                        r.stderr[-300:]))
    for rx in want:
        check(re.search(rx, r.stderr, re.I),
              "%s: stderr does not match %r: %r" % (what, rx,
                                                    r.stderr[-400:]))
    for pat in ("AddressSanitizer", "LeakSanitizer", "runtime error:"):
        check(pat not in r.stderr, "%s: sanitizer report: %s"
              % (what, r.stderr[-800:]))
    first = r.stderr.strip().splitlines()[0] if r.stderr.strip() else ""
    print("%s -> exit %d: %s" % (what, r.returncode, first))


@timeout(60)
def test_startup_errors(bindir):
    """Mistakes on the command line: each program exits non-zero at once
    and names what is wrong."""
    with Env(bindir, "startup") as env:
        key, _ = env.keygen("k")
        _, nas = env.keygen("nas")
        _, laptop = env.keygen("laptop")
        with open(env.path("relay.ini"), "w") as f:
            f.write(BASE_INI.format(nas=nas, laptop=laptop))
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        bport = busy.getsockname()[1]
        url = "http://127.0.0.1:%d" % free_port()
        srv = [env.bin("postern-server"), "--relay", url, "--key", key]
        cli = [env.bin("postern-client"), "--relay", url, "--key", key]
        try:
            _fails_clearly([env.bin("postern-relay"), "--config",
                            env.path("relay.ini"), "--listen",
                            "127.0.0.1:%d" % bport],
                           [str(bport), r"in use|bind"],
                           "relay on a port in use")
            _fails_clearly(cli + ["-L", "127.0.0.1:%d:nas/ssh" % bport],
                           [str(bport), r"in use|bind"],
                           "client -L on a port in use")
            _fails_clearly(cli + ["-L", "2222"], [r"2222", r"SERVER/PORT"],
                           "client -L without a destination")
            _fails_clearly(cli + ["-L", "0:nas/bad port"], [r"bad port"],
                           "client -L with a bad port name")
            _fails_clearly(cli, [r"-L"], "client without -L")
            _fails_clearly(srv + ["--expose", "ssh=tcp://127.0.0.1:22"],
                           [r"--name"], "server without --name")
            _fails_clearly(srv + ["--name", "nas"], [r"--expose"],
                           "server without --expose")
            _fails_clearly(srv + ["--name", "nas", "--expose", "ssh"],
                           [r"ssh"], "server --expose without a target")
            _fails_clearly(srv + ["--name", "nas", "--expose",
                                  "ssh=tcp://127.0.0.1:99999"],
                           [r"99999"], "server --expose with port 99999")
            _fails_clearly(srv + ["--name", "nas", "--expose",
                                  "ssh=tcp://127.0.0.1:22", "--frobnicate"],
                           [r"frobnicate"], "server with an unknown option")
            _fails_clearly(cli + ["-L", "0:nas/ssh", "--relay",
                                  "ftp://relay.example"],
                           [r"ftp|http"], "client with an ftp:// relay")
            _fails_clearly(cli[:3] + ["--key", env.path("missing.key"),
                                      "-L", "0:nas/ssh"],
                           [r"missing\.key"], "client with a missing key")
        finally:
            busy.close()
