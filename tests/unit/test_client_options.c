/* postern-client's command line and [client] INI section: what is
 * accepted, what wins, and that every mistake is named. */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../client-proxy/client.h"

static char ini_path[64];

static const char *
write_ini(const char *text)
{
	FILE *f;
	int fd;

	snprintf(ini_path, sizeof(ini_path), "/tmp/postern-test-XXXXXX");
	fd = mkstemp(ini_path);
	ck_assert_int_ge(fd, 0);
	f = fdopen(fd, "w");
	fputs(text, f);
	fclose(f);
	return ini_path;
}

static enum popt_result
parse(struct client_options *co, char *err, size_t errlen, ...)
{
	char *argv[32];
	int argc = 0;
	va_list ap;
	char *a;

	argv[argc++] = "postern-client";
	va_start(ap, errlen);
	while ((a = va_arg(ap, char *)) != NULL && argc < 31)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	client_options_init(co);
	err[0] = '\0';
	return client_options_parse(co, argc, argv, err, errlen);
}

START_TEST(test_forward_forms)
{
	struct client_forward f;
	char err[256];

	ck_assert_int_eq(client_forward_parse("2222:nas/ssh", &f, err,
	    sizeof(err)), 0);
	ck_assert_str_eq(f.cf_bind, "127.0.0.1");
	ck_assert_uint_eq(f.cf_lport, 2222);
	ck_assert_str_eq(f.cf_server, "nas");
	ck_assert_str_eq(f.cf_port, "ssh");
	ck_assert_int_eq(client_forward_parse("0.0.0.0:0:nas/5432", &f, err,
	    sizeof(err)), 0);
	ck_assert_str_eq(f.cf_bind, "0.0.0.0");
	ck_assert_uint_eq(f.cf_lport, 0);
	ck_assert_str_eq(f.cf_port, "5432");
	ck_assert_int_eq(client_forward_parse("[::1]:8080:web.1/http-alt", &f,
	    err, sizeof(err)), 0);
	ck_assert_str_eq(f.cf_bind, "::1");
	ck_assert_uint_eq(f.cf_lport, 8080);
	ck_assert_str_eq(f.cf_server, "web.1");
	ck_assert_str_eq(f.cf_port, "http-alt");
	ck_assert_int_eq(client_forward_parse("localhost:1:a/b", &f, err,
	    sizeof(err)), 0);
	ck_assert_str_eq(f.cf_bind, "localhost");
}
END_TEST

static void
bad_forward(const char *s, const char *needle)
{
	struct client_forward f;
	char err[256];

	ck_assert_int_eq(client_forward_parse(s, &f, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, needle) != NULL, "'%s': error '%s' lacks "
	    "'%s'", s, err, needle);
}

START_TEST(test_forward_malformed)
{
	bad_forward("nas/ssh", "expected [BIND:]LPORT:SERVER/PORT");
	bad_forward(":nas/ssh", "expected [BIND:]LPORT:SERVER/PORT");
	bad_forward("2222:nas", "must be SERVER/PORT");
	bad_forward("2222:/ssh", "server name must be 1 to 64");
	bad_forward("2222:nas/", "port name after '/'");
	bad_forward("2222:nas/ss h", "port name after '/'");
	bad_forward("2222:n@s/ssh", "may hold only letters");
	bad_forward("2222:nas/a/b", "port name after '/'");
	bad_forward("70000:nas/ssh", "bad local address");
	bad_forward("x:nas/ssh", "bad local address");
	bad_forward("::1:2222:nas/ssh", "brackets");
	bad_forward(":2222:nas/ssh", "host is empty");
}
END_TEST

START_TEST(test_flags_minimal_and_defaults)
{
	struct client_options co;
	char err[256];

	ck_assert_int_eq(parse(&co, err, sizeof(err), "--relay",
	    "http://127.0.0.1:8080", "--key", "k.key", "-L", "2222:nas/ssh",
	    "-L127.0.0.1:0:nas/web", NULL), POPT_OK);
	ck_assert_str_eq(co.co_ps.ps_relay, "http://127.0.0.1:8080");
	ck_assert_str_eq(co.co_ps.ps_key, "k.key");
	ck_assert_uint_eq(co.co_nfwd, 2);
	ck_assert_str_eq(co.co_fwd[1].cf_port, "web");
	ck_assert_uint_eq(co.co_ps.ps_keepalive_ms, 25000);
	ck_assert_uint_eq(co.co_ps.ps_frame_max, 65536);
	ck_assert_uint_eq(co.co_ps.ps_buffer, 262144);
	ck_assert_uint_eq(co.co_ps.ps_max_tunnels, 1024);
	ck_assert_uint_eq(co.co_ps.ps_connect_timeout_ms, 5000);
	ck_assert_uint_eq(co.co_ps.ps_relay_timeout_ms, 10000);
	ck_assert_int_eq(co.co_ps.ps_insecure, 0);
	ck_assert_ptr_null(co.co_ps.ps_cacert);
	client_options_free(&co);
}
END_TEST

START_TEST(test_flags_settings)
{
	struct client_options co;
	char err[256];

	ck_assert_int_eq(parse(&co, err, sizeof(err), "--relay=https://r.example",
	    "--key", "k", "--forward", "1:a/b", "--keepalive", "0.5",
	    "--frame-max", "16k", "--buffer=1m", "--max_tunnels", "7",
	    "--connect-timeout", "250ms", "--relay-timeout", "3",
	    "--cacert", "/dev/null", "--insecure", "--pin", "sha256//abc",
	    "-vv", "-q", NULL), POPT_OK);
	ck_assert_uint_eq(co.co_ps.ps_keepalive_ms, 500);
	ck_assert_uint_eq(co.co_ps.ps_frame_max, 16384);
	ck_assert_uint_eq(co.co_ps.ps_buffer, 1048576);
	ck_assert_uint_eq(co.co_ps.ps_max_tunnels, 7);
	ck_assert_uint_eq(co.co_ps.ps_connect_timeout_ms, 250);
	ck_assert_uint_eq(co.co_ps.ps_relay_timeout_ms, 3000);
	ck_assert_str_eq(co.co_ps.ps_cacert, "/dev/null");
	ck_assert_int_eq(co.co_ps.ps_insecure, 1);
	ck_assert_str_eq(co.co_ps.ps_pin, "sha256//abc");
	ck_assert_int_eq(co.co_ps.ps_verbosity, 1);
	client_options_free(&co);
}
END_TEST

static void
bad_args(const char *needle, ...)
{
	struct client_options co;
	char err[512], *argv[32];
	int argc = 0;
	va_list ap;
	char *a;

	argv[argc++] = "postern-client";
	va_start(ap, needle);
	while ((a = va_arg(ap, char *)) != NULL && argc < 31)
		argv[argc++] = a;
	va_end(ap);
	argv[argc] = NULL;
	client_options_init(&co);
	ck_assert_int_eq(client_options_parse(&co, argc, argv, err,
	    sizeof(err)), POPT_ERROR);
	ck_assert_msg(strstr(err, needle) != NULL, "error '%s' lacks '%s'",
	    err, needle);
	client_options_free(&co);
}

#define R "--relay", "http://127.0.0.1:1"
#define K "--key", "k"
#define L "-L", "2222:nas/ssh"

START_TEST(test_flags_malformed)
{
	bad_args("--relay URL is required", K, L, NULL);
	bad_args("--key FILE is required", R, L, NULL);
	bad_args("at least one -L", R, K, NULL);
	bad_args("unknown option '--bogus'", R, K, L, "--bogus", NULL);
	bad_args("unknown option '-x'", R, K, L, "-x", NULL);
	bad_args("unexpected argument 'extra'", R, K, L, "extra", NULL);
	bad_args("--relay needs a value", "--relay", NULL);
	bad_args("-L needs a value", R, K, "-L", NULL);
	bad_args("-L: 'nas/ssh'", R, K, "-L", "nas/ssh", NULL);
	bad_args("--relay: relay URL 'relay.example' is not a URL",
	    "--relay", "relay.example", K, L, NULL);
	bad_args("--frame-max: '0' is not a whole number from 1 to 1048576",
	    R, K, L, "--frame-max", "0", NULL);
	bad_args("--frame-max: '2m'", R, K, L, "--frame-max", "2m", NULL);
	bad_args("--buffer: '1k' is not a whole number from 16384", R, K, L,
	    "--buffer", "1k", NULL);
	bad_args("--keepalive: 'soon' is not a number of seconds", R, K, L,
	    "--keepalive", "soon", NULL);
	bad_args("--connect-timeout: '0'", R, K, L, "--connect-timeout", "0",
	    NULL);
	bad_args("--max-tunnels: '-1'", R, K, L, "--max-tunnels", "-1", NULL);
	bad_args("--insecure: 'maybe' is not yes or no", R, K, L,
	    "--insecure=maybe", NULL);
	bad_args("--verbose takes no value", R, K, L, "--verbose=2", NULL);
	bad_args("unknown option '--listens-per-port'", R, K, L,
	    "--listens-per-port", "3", NULL);
	bad_args("--cacert: cannot read /nonexistent/ca.pem", R, K, L,
	    "--cacert", "/nonexistent/ca.pem", NULL);
	bad_args("--pin: 'pin.der' is neither sha256//BASE64 nor a readable",
	    R, K, L, "--pin", "pin.der", NULL);
}
END_TEST

START_TEST(test_help)
{
	struct client_options co;
	char err[256];

	ck_assert_int_eq(parse(&co, err, sizeof(err), "-h", NULL), POPT_HELP);
	client_options_free(&co);
	ck_assert_int_eq(parse(&co, err, sizeof(err), R, "--help", NULL),
	    POPT_HELP);
	client_options_free(&co);
}
END_TEST

START_TEST(test_ini_and_flags_override)
{
	struct client_options co;
	char err[512];
	const char *p;

	p = write_ini("; postern-client settings\n"
	    "[client]\n"
	    "relay = http://127.0.0.1:9\n"
	    "key = file.key\n"
	    "forward = 2222:nas/ssh\n"
	    "forward = 127.0.0.1:0:nas/web   ; inline comment\n"
	    "keepalive = 10\n"
	    "frame_max = 32768\n"
	    "insecure = yes\n"
	    "pinned_pubkey = sha256//x\n");
	ck_assert_int_eq(parse(&co, err, sizeof(err), "--config", p, NULL),
	    POPT_OK);
	ck_assert_str_eq(co.co_ps.ps_relay, "http://127.0.0.1:9");
	ck_assert_str_eq(co.co_ps.ps_key, "file.key");
	ck_assert_uint_eq(co.co_nfwd, 2);
	ck_assert_str_eq(co.co_fwd[1].cf_port, "web");
	ck_assert_uint_eq(co.co_ps.ps_keepalive_ms, 10000);
	ck_assert_uint_eq(co.co_ps.ps_frame_max, 32768);
	ck_assert_int_eq(co.co_ps.ps_insecure, 1);
	ck_assert_str_eq(co.co_ps.ps_pin, "sha256//x");
	client_options_free(&co);

	/* Flags win, wherever they stand; -L replaces the file's forwards. */
	ck_assert_int_eq(parse(&co, err, sizeof(err), "--relay",
	    "http://127.0.0.1:10", "-L", "3333:nas/db", "--config", p,
	    "--keepalive", "0", NULL), POPT_OK);
	ck_assert_str_eq(co.co_ps.ps_relay, "http://127.0.0.1:10");
	ck_assert_str_eq(co.co_ps.ps_key, "file.key");
	ck_assert_uint_eq(co.co_nfwd, 1);
	ck_assert_str_eq(co.co_fwd[0].cf_port, "db");
	ck_assert_uint_eq(co.co_ps.ps_keepalive_ms, 0);
	client_options_free(&co);
	unlink(p);
}
END_TEST

static void
bad_ini(const char *text, const char *needle)
{
	struct client_options co;
	char err[512], want[600];
	const char *p = write_ini(text);

	ck_assert_int_eq(parse(&co, err, sizeof(err), R, K, L, "--config", p,
	    NULL), POPT_ERROR);
	snprintf(want, sizeof(want), "%s:%s", p, needle);
	ck_assert_msg(strstr(err, want) != NULL, "error '%s' lacks '%s'", err,
	    want);
	client_options_free(&co);
	unlink(p);
}

START_TEST(test_ini_malformed)
{
	bad_ini("[client]\nrelay = http://x\nlisten = 1\n",
	    "3: unknown key 'listen' in [client]");
	bad_ini("relay = http://x\n", "1: 'relay' is outside a section");
	bad_ini("[client]\n\n[server]\nname = nas\n",
	    "4: unknown section [server]; this program reads [client]");
	bad_ini("[client]\nframe_max = lots\n", "2: frame_max: 'lots'");
	bad_ini("[client]\nforward = nope\n", "2: forward: 'nope'");
	bad_ini("[client]\nkeepalive\n", "2: syntax error");
	bad_ini("[client\n", "1: syntax error");
	bad_ini("[client]\nconfig = other.ini\n", "2: unknown key 'config'");
	bad_ini("[client]\nframe-max = 1\n", "2: unknown key 'frame-max'");
	bad_ini("[client]\nkey = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	    "\n", "2: line too long");
}
END_TEST

/* Forward proxy and resume settings: defaults, forms, limits. */
START_TEST(test_resume_and_proxy_defaults)
{
	struct client_options co;
	char err[256];

	ck_assert_int_eq(parse(&co, err, sizeof(err), R, K, L, NULL), POPT_OK);
	ck_assert_ptr_null(co.co_ps.ps_proxy);
	ck_assert_ptr_null(co.co_ps.ps_proxy_cacert);
	ck_assert_int_eq(co.co_ps.ps_transport, TUNNEL_AUTO);
	ck_assert_uint_eq(co.co_ps.ps_window, 1048576);
	ck_assert_uint_eq(co.co_ps.ps_resume_grace_ms, 30000);
	ck_assert_uint_eq(co.co_ps.ps_peer_timeout_ms, 60000);
	ck_assert_uint_eq(co.co_ps.ps_segment_bytes, 262144);
	ck_assert_uint_eq(co.co_ps.ps_segment_ms, 200);
	ck_assert_uint_eq(co.co_ps.ps_probe_ms, 3000);
	ck_assert_uint_eq(co.co_ps.ps_shutdown_grace_ms, 2000);
	client_options_free(&co);
}
END_TEST

START_TEST(test_shutdown_grace)
{
	struct client_options co;
	char err[256];

	ck_assert_int_eq(parse(&co, err, sizeof(err), R, K, L,
	    "--shutdown-grace", "0", NULL), POPT_OK);
	ck_assert_uint_eq(co.co_ps.ps_shutdown_grace_ms, 0);
	client_options_free(&co);
	ck_assert_int_eq(parse(&co, err, sizeof(err), R, K, L,
	    "--shutdown-grace", "0.5", NULL), POPT_OK);
	ck_assert_uint_eq(co.co_ps.ps_shutdown_grace_ms, 500);
	client_options_free(&co);
	bad_args("--shutdown-grace: 'soon'", R, K, L, "--shutdown-grace",
	    "soon", NULL);
	bad_args("--shutdown-grace: '-1'", R, K, L, "--shutdown-grace", "-1",
	    NULL);
}
END_TEST

START_TEST(test_resume_and_proxy_settings)
{
	struct client_options co;
	char err[256];

	ck_assert_int_eq(parse(&co, err, sizeof(err), R, K, L, "--proxy",
	    "http://127.0.0.1:3128", "--transport", "segmented", "--window",
	    "4m", "--resume-grace", "0", "--peer-timeout", "0",
	    "--segment-bytes", "900k", "--segment-time", "50ms",
	    "--probe-timeout", "0.5", NULL), POPT_OK);
	ck_assert_str_eq(co.co_ps.ps_proxy, "http://127.0.0.1:3128");
	ck_assert_int_eq(co.co_ps.ps_transport, TUNNEL_SEGMENTED);
	ck_assert_uint_eq(co.co_ps.ps_window, 4 * 1048576);
	ck_assert_uint_eq(co.co_ps.ps_resume_grace_ms, 0);
	ck_assert_uint_eq(co.co_ps.ps_peer_timeout_ms, 0);
	ck_assert_uint_eq(co.co_ps.ps_segment_bytes, 900 * 1024);
	ck_assert_uint_eq(co.co_ps.ps_segment_ms, 50);
	ck_assert_uint_eq(co.co_ps.ps_probe_ms, 500);
	client_options_free(&co);

	/* none and an empty value both mean no proxy, not even the
	 * environment's: an empty string, not NULL. */
	ck_assert_int_eq(parse(&co, err, sizeof(err), R, K, L, "--proxy",
	    "none", "--transport=stream", NULL), POPT_OK);
	ck_assert_str_eq(co.co_ps.ps_proxy, "");
	ck_assert_int_eq(co.co_ps.ps_transport, TUNNEL_STREAM);
	client_options_free(&co);
	ck_assert_int_eq(parse(&co, err, sizeof(err), R, K, L, "--proxy=",
	    "--transport", "AUTO", NULL), POPT_OK);
	ck_assert_str_eq(co.co_ps.ps_proxy, "");
	ck_assert_int_eq(co.co_ps.ps_transport, TUNNEL_AUTO);
	client_options_free(&co);

	/* Credentials in the URL; an https proxy on its default port. */
	ck_assert_int_eq(parse(&co, err, sizeof(err), R, K, L, "--proxy",
	    "http://me:secret@proxy.example:8080", NULL), POPT_OK);
	ck_assert_str_eq(co.co_ps.ps_proxy,
	    "http://me:secret@proxy.example:8080");
	client_options_free(&co);
	ck_assert_int_eq(parse(&co, err, sizeof(err), R, K, L, "--proxy",
	    "https://proxy.example", "--proxy-cacert", "/dev/null", NULL),
	    POPT_OK);
	ck_assert_str_eq(co.co_ps.ps_proxy, "https://proxy.example");
	ck_assert_str_eq(co.co_ps.ps_proxy_cacert, "/dev/null");
	client_options_free(&co);

	/* Without keepalives any peer timeout is allowed. */
	ck_assert_int_eq(parse(&co, err, sizeof(err), R, K, L, "--keepalive",
	    "0", "--peer-timeout", "5", NULL), POPT_OK);
	ck_assert_uint_eq(co.co_ps.ps_peer_timeout_ms, 5000);
	client_options_free(&co);
	/* A 1 MiB frame cannot travel in a segment, but streams carry it. */
	ck_assert_int_eq(parse(&co, err, sizeof(err), R, K, L, "--frame-max",
	    "1m", "--transport", "stream", NULL), POPT_OK);
	client_options_free(&co);
}
END_TEST

START_TEST(test_resume_and_proxy_malformed)
{
	struct client_options co;
	char err[512];

	bad_args("--proxy: proxy 'proxy.corp:3128' has no scheme; write "
	    "http://HOST:PORT", R, K, L, "--proxy", "proxy.corp:3128", NULL);
	bad_args("--proxy: proxy 'socks5://127.0.0.1:1080': the scheme must "
	    "be http or https", R, K, L, "--proxy", "socks5://127.0.0.1:1080",
	    NULL);
	bad_args("--proxy: proxy 'http://proxy.corp' has no port; add it, "
	    "e.g. http://proxy.corp:3128", R, K, L, "--proxy",
	    "http://proxy.corp", NULL);
	bad_args("--proxy: proxy 'http://p:3128/x': remove the path", R, K, L,
	    "--proxy", "http://p:3128/x", NULL);
	bad_args("--proxy: proxy 'http://p:3128/?a=b': remove the path", R, K,
	    L, "--proxy", "http://p:3128/?a=b", NULL);
	bad_args("--proxy: proxy 'http://' is not a URL", R, K, L, "--proxy",
	    "http://", NULL);
	/* A password never shows up in the message. */
	bad_args("proxy 'http://***@proxy.corp' has no port", R, K, L,
	    "--proxy", "http://me:hunter2@proxy.corp", NULL);
	client_options_init(&co);
	{
		char *argv[] = { "postern-client", "--relay",
		    "http://127.0.0.1:1", "--key", "k", "-L", "1:a/b",
		    "--proxy", "me:hunter2@proxy.corp", NULL };

		ck_assert_int_eq(client_options_parse(&co, 9, argv, err,
		    sizeof(err)), POPT_ERROR);
		ck_assert_ptr_null(strstr(err, "hunter2"));
		ck_assert_ptr_nonnull(strstr(err, "has no scheme"));
	}
	client_options_free(&co);
	bad_args("--proxy-cacert is for an https:// proxy", R, K, L,
	    "--proxy-cacert", "/dev/null", NULL);
	bad_args("--proxy-cacert is for an https:// proxy", R, K, L,
	    "--proxy", "http://p:1", "--proxy-cacert", "/dev/null", NULL);
	bad_args("--proxy-cacert: cannot read /nonexistent/ca.pem", R, K, L,
	    "--proxy", "https://p:1", "--proxy-cacert", "/nonexistent/ca.pem",
	    NULL);

	bad_args("--transport: 'fast' is not a transport; use stream, "
	    "segmented or auto", R, K, L, "--transport", "fast", NULL);
	bad_args("--window: '32k' is not a whole number from 65536 to "
	    "67108864", R, K, L, "--window", "32k", NULL);
	bad_args("--window: '65m'", R, K, L, "--window", "65m", NULL);
	bad_args("--segment-bytes: '1m' is not a whole number from 16384 to "
	    "921600", R, K, L, "--segment-bytes", "1m", NULL);
	bad_args("--segment-bytes: '8k'", R, K, L, "--segment-bytes", "8k",
	    NULL);
	bad_args("--segment-time: '0' is not a number of seconds from 0.001 "
	    "to 60", R, K, L, "--segment-time", "0", NULL);
	bad_args("--resume-grace: '-1'", R, K, L, "--resume-grace", "-1", NULL);
	bad_args("--resume-grace: '2h'", R, K, L, "--resume-grace", "2h", NULL);
	bad_args("--peer-timeout: '3601'", R, K, L, "--peer-timeout", "3601",
	    NULL);
	bad_args("--probe-timeout: '10ms' is too short", R, K, L,
	    "--probe-timeout", "10ms", NULL);
	bad_args("--peer-timeout (20 s) must be longer than --keepalive (25 "
	    "s)", R, K, L, "--peer-timeout", "20", NULL);
	bad_args("--peer-timeout (25 s) must be longer than --keepalive (25 "
	    "s)", R, K, L, "--peer-timeout", "25", NULL);
	bad_args("--peer-timeout (60 s) must be longer than --keepalive (90 "
	    "s)", R, K, L, "--keepalive", "90", NULL);
	bad_args("--window (65536) must be at least --frame-max (131072)", R,
	    K, L, "--window", "64k", "--frame-max", "128k", NULL);
	bad_args("--frame-max (1048576) must be at least 1024 bytes below "
	    "--segment-bytes (262144)", R, K, L, "--frame-max", "1m", NULL);
	bad_args("--frame-max (262144) must be at least 1024 bytes below "
	    "--segment-bytes (262144)", R, K, L, "--frame-max", "256k",
	    "--transport", "segmented", NULL);
}
END_TEST

START_TEST(test_resume_and_proxy_ini)
{
	struct client_options co;
	char err[512];
	const char *p;

	p = write_ini("[client]\n"
	    "proxy = https://proxy.example:3129\n"
	    "proxy_cacert = /dev/null\n"
	    "transport = segmented\n"
	    "window = 2m\n"
	    "resume_grace = 45\n"
	    "peer_timeout = 90\n"
	    "segment_bytes = 128k\n"
	    "segment_time = 0.1\n"
	    "probe_timeout = 5\n");
	ck_assert_int_eq(parse(&co, err, sizeof(err), R, K, L, "--config", p,
	    NULL), POPT_OK);
	ck_assert_str_eq(co.co_ps.ps_proxy, "https://proxy.example:3129");
	ck_assert_str_eq(co.co_ps.ps_proxy_cacert, "/dev/null");
	ck_assert_int_eq(co.co_ps.ps_transport, TUNNEL_SEGMENTED);
	ck_assert_uint_eq(co.co_ps.ps_window, 2 * 1048576);
	ck_assert_uint_eq(co.co_ps.ps_resume_grace_ms, 45000);
	ck_assert_uint_eq(co.co_ps.ps_peer_timeout_ms, 90000);
	ck_assert_uint_eq(co.co_ps.ps_segment_bytes, 128 * 1024);
	ck_assert_uint_eq(co.co_ps.ps_segment_ms, 100);
	ck_assert_uint_eq(co.co_ps.ps_probe_ms, 5000);
	client_options_free(&co);
	/* The command line wins; none turns the file's proxy off. */
	ck_assert_int_eq(parse(&co, err, sizeof(err), R, K, L, "--config", p,
	    "--proxy", "none", "--proxy-cacert", "", NULL), POPT_ERROR);
	ck_assert_msg(strstr(err, "--proxy-cacert: needs a value") != NULL,
	    "error '%s'", err);
	client_options_free(&co);
	unlink(p);

	/* "proxy =" with nothing after it is no proxy at all. */
	p = write_ini("[client]\nproxy =\n");
	ck_assert_int_eq(parse(&co, err, sizeof(err), R, K, L, "--config", p,
	    NULL), POPT_OK);
	ck_assert_str_eq(co.co_ps.ps_proxy, "");
	client_options_free(&co);
	unlink(p);

	bad_ini("[client]\nproxy = 127.0.0.1:3128\n",
	    "2: proxy: proxy '127.0.0.1:3128' has no scheme");
	bad_ini("[client]\ntransport = segments\n",
	    "2: transport: 'segments' is not a transport");
	bad_ini("[client]\nsegment_bytes = 2m\n", "2: segment_bytes: '2m'");
}
END_TEST

START_TEST(test_ini_missing_file)
{
	bad_args("cannot read config file /nonexistent/postern.ini", R, K, L,
	    "--config", "/nonexistent/postern.ini", NULL);
}
END_TEST

static Suite *
client_options_suite(void)
{
	Suite *s = suite_create("client_options");
	TCase *tc = tcase_create("options");

	tcase_add_test(tc, test_forward_forms);
	tcase_add_test(tc, test_forward_malformed);
	tcase_add_test(tc, test_flags_minimal_and_defaults);
	tcase_add_test(tc, test_flags_settings);
	tcase_add_test(tc, test_flags_malformed);
	tcase_add_test(tc, test_help);
	tcase_add_test(tc, test_ini_and_flags_override);
	tcase_add_test(tc, test_ini_malformed);
	tcase_add_test(tc, test_ini_missing_file);
	tcase_add_test(tc, test_resume_and_proxy_defaults);
	tcase_add_test(tc, test_resume_and_proxy_settings);
	tcase_add_test(tc, test_resume_and_proxy_malformed);
	tcase_add_test(tc, test_resume_and_proxy_ini);
	tcase_add_test(tc, test_shutdown_grace);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(client_options_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
