"""The relay behind nginx as shipped: a location with nothing but
proxy_pass.  nginx then buffers every request body before passing it on
(so a streamed upload never reaches the relay while it lasts), refuses
bodies over 1 MiB (413), speaks HTTP/1.0 to the relay and cuts a request
silent for 60 s.  Postern gets through with segments (docs/protocol.md,
"Segments"): found by --transport auto, or asked for with --transport
segmented."""

import os
import time

from harness import Env, check, timeout
from middleboxes import Nginx
from services import Echo, EchoClients

MIB = 1 << 20
ECHO_MB = int(os.environ.get("POSTERN_IT_MIDDLEBOX_MB", "64"))

NO_PROXY_ENV = {"http_proxy": "", "https_proxy": "", "HTTPS_PROXY": "",
                "all_proxy": "", "ALL_PROXY": "", "no_proxy": "",
                "NO_PROXY": ""}


def _through_default_nginx(bindir, name, transport):
    with Env(bindir, name) as env:
        env.child_env.update(NO_PROXY_ENV)
        echo = env.service(Echo())
        env.keygen("nas")
        env.keygen("laptop")
        env.write_relay_ini({"nas": ("nas", None)},
                            {"laptop": ("laptop", "nas/*")})
        relay = env.start_relay()
        nginx = env.service(Nginx(env.dir, relay.port, location="",
                                  keepalive=0))
        # The proxies know only nginx; the harness asks the relay itself.
        relay.url = nginx.url
        args = ["--transport", transport]
        env.start_server("nas", "nas", {"echo": echo.addr}, args=args)
        _, lp = env.start_client("laptop", ["nas/echo"], args=args)
        t0 = time.monotonic()
        moved = EchoClients(lp["nas/echo"],
                            [(1, ECHO_MB * MIB, lambda: MIB)],
                            timeout=150).run()
        dt = time.monotonic() - t0
        print("default nginx, --transport %s: %d MiB each way in %.2f s "
              "(%.1f MiB/s)" % (transport, moved // MIB, dt,
                                moved / MIB / dt))
        big = [s for s in nginx.statuses("/v1/") if s == 413]
        print("nginx answered 413 to %d requests" % len(big))
        # A second tunnel: auto remembers that streams do not get through.
        t0 = time.monotonic()
        EchoClients(lp["nas/echo"], [(2, 4 * MIB, lambda: 65536)],
                    timeout=60).run()
        print("second tunnel, 4 MiB each way in %.2f s"
              % (time.monotonic() - t0))
        env.relay.wait_status(lambda s: s.get("tunnels") == 0, 30,
                              "the relay to count 0 tunnels")
        check(echo.accepted == 2, "echo service saw %d connections, "
              "expected 2" % echo.accepted)


@timeout(240)
def test_nginx_defaults_auto(bindir):
    """--transport auto finds that streamed uploads do not get through
    default nginx and falls back to segments: ECHO_MB MiB each way
    intact."""
    _through_default_nginx(bindir, "ngxauto", "auto")


@timeout(240)
def test_nginx_defaults_segmented(bindir):
    """--transport segmented through default nginx: ECHO_MB MiB each way
    intact."""
    _through_default_nginx(bindir, "ngxseg", "segmented")
