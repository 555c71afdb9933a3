/* postern-server's command line and [server] INI section, and the
 * listen retry schedule. */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../server-proxy/server.h"

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
vparse(struct server_options *so, char *err, size_t errlen, va_list ap)
{
	char *argv[40];
	int argc = 0;
	char *a;

	argv[argc++] = "postern-server";
	while ((a = va_arg(ap, char *)) != NULL && argc < 39)
		argv[argc++] = a;
	argv[argc] = NULL;
	server_options_init(so);
	err[0] = '\0';
	return server_options_parse(so, argc, argv, err, errlen);
}

static enum popt_result
parse(struct server_options *so, char *err, size_t errlen, ...)
{
	enum popt_result r;
	va_list ap;

	va_start(ap, errlen);
	r = vparse(so, err, errlen, ap);
	va_end(ap);
	return r;
}

static void
bad_args(const char *needle, ...)
{
	struct server_options so;
	char err[512];
	va_list ap;

	va_start(ap, needle);
	ck_assert_int_eq(vparse(&so, err, sizeof(err), ap), POPT_ERROR);
	va_end(ap);
	ck_assert_msg(strstr(err, needle) != NULL, "error '%s' lacks '%s'",
	    err, needle);
	server_options_free(&so);
}

START_TEST(test_expose_forms)
{
	struct server_expose e;
	char err[256];

	ck_assert_int_eq(server_expose_parse("ssh=tcp://127.0.0.1:22", &e, err,
	    sizeof(err)), 0);
	ck_assert_str_eq(e.se_port, "ssh");
	ck_assert_str_eq(e.se_host, "127.0.0.1");
	ck_assert_uint_eq(e.se_tport, 22);
	ck_assert_int_eq(server_expose_parse("5432=tcp://[::1]:5432", &e, err,
	    sizeof(err)), 0);
	ck_assert_str_eq(e.se_port, "5432");
	ck_assert_str_eq(e.se_host, "::1");
	ck_assert_int_eq(server_expose_parse("web=localhost:8080", &e, err,
	    sizeof(err)), 0);
	ck_assert_str_eq(e.se_host, "localhost");
	ck_assert_uint_eq(e.se_tport, 8080);
}
END_TEST

static void
bad_expose(const char *s, const char *needle)
{
	struct server_expose e;
	char err[256];

	ck_assert_int_eq(server_expose_parse(s, &e, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, needle) != NULL, "'%s': error '%s' lacks "
	    "'%s'", s, err, needle);
}

START_TEST(test_expose_malformed)
{
	bad_expose("ssh", "expected PORT=tcp://HOST:PORT");
	bad_expose("=tcp://127.0.0.1:22", "port name before '='");
	bad_expose("s s=tcp://127.0.0.1:22", "may hold only letters");
	bad_expose("ssh=udp://127.0.0.1:53", "only tcp://");
	bad_expose("ssh=tcp://127.0.0.1", "expected HOST:PORT");
	bad_expose("ssh=tcp://127.0.0.1:0", "from 1 to 65535");
	bad_expose("ssh=tcp://:22", "host is empty");
}
END_TEST

#define R "--relay", "http://127.0.0.1:1"
#define K "--key", "k"
#define N "--name", "nas"
#define E "--expose", "ssh=tcp://127.0.0.1:22"

START_TEST(test_flags)
{
	struct server_options so;
	char err[256];

	ck_assert_int_eq(parse(&so, err, sizeof(err), R, K, N, E, "--expose",
	    "web=tcp://127.0.0.1:80", "--listens-per-port", "3",
	    "--connect-timeout", "2.5", NULL), POPT_OK);
	ck_assert_str_eq(so.so_name, "nas");
	ck_assert_uint_eq(so.so_nexp, 2);
	ck_assert_str_eq(so.so_exp[1].se_port, "web");
	ck_assert_uint_eq(so.so_listens_per_port, 3);
	ck_assert_uint_eq(so.so_ps.ps_connect_timeout_ms, 2500);
	server_options_free(&so);
	ck_assert_int_eq(parse(&so, err, sizeof(err), R, K, N, E, NULL),
	    POPT_OK);
	ck_assert_uint_eq(so.so_listens_per_port, 2);
	server_options_free(&so);
}
END_TEST

START_TEST(test_flags_malformed)
{
	bad_args("--name NAME is required", R, K, E, NULL);
	bad_args("at least one --expose", R, K, N, NULL);
	bad_args("--key FILE is required", R, N, E, NULL);
	bad_args("--relay URL is required", K, N, E, NULL);
	bad_args("--name: 'n/a' is not a server name", R, K, E, "--name", "n/a",
	    NULL);
	bad_args("--expose: port name 'ssh' is exposed twice", R, K, N, E, E,
	    NULL);
	bad_args("--expose: 'ssh'", R, K, N, "--expose", "ssh", NULL);
	bad_args("--listens-per-port: '0'", R, K, N, E, "--listens-per-port",
	    "0", NULL);
	bad_args("--listens-per-port: '65'", R, K, N, E, "--listens-per-port",
	    "65", NULL);
	bad_args("unknown option '-L'", R, K, N, E, "-L", "1:a/b", NULL);
	bad_args("--relay: relay URL 'ftp://x': the scheme must be http or "
	    "https", "--relay", "ftp://x", K, N, E, NULL);
}
END_TEST

START_TEST(test_ini)
{
	struct server_options so;
	char err[512];
	const char *p;

	p = write_ini("[server]\n"
	    "relay = http://127.0.0.1:9\n"
	    "name = nas\n"
	    "key = /etc/postern/nas.key\n"
	    "expose = ssh=tcp://127.0.0.1:22\n"
	    "expose = web=tcp://127.0.0.1:80\n"
	    "listens_per_port = 4\n"
	    "relay_timeout = 2\n"
	    "max_tunnels = 10\n");
	ck_assert_int_eq(parse(&so, err, sizeof(err), "--config", p, NULL),
	    POPT_OK);
	ck_assert_uint_eq(so.so_nexp, 2);
	ck_assert_uint_eq(so.so_listens_per_port, 4);
	ck_assert_uint_eq(so.so_ps.ps_relay_timeout_ms, 2000);
	ck_assert_uint_eq(so.so_ps.ps_max_tunnels, 10);
	server_options_free(&so);
	/* --expose on the command line replaces the file's list. */
	ck_assert_int_eq(parse(&so, err, sizeof(err), "--config", p, "--expose",
	    "db=tcp://127.0.0.1:5432", "--name", "other", NULL), POPT_OK);
	ck_assert_uint_eq(so.so_nexp, 1);
	ck_assert_str_eq(so.so_exp[0].se_port, "db");
	ck_assert_str_eq(so.so_name, "other");
	server_options_free(&so);
	unlink(p);

	p = write_ini("[server]\nname = nas\nforward = 1:a/b\n");
	bad_args(":3: unknown key 'forward' in [server]", R, K, E, "--config",
	    p, NULL);
	unlink(p);
	p = write_ini("[client]\nrelay = http://x\n");
	bad_args(":2: unknown section [client]; this program reads [server]",
	    R, K, N, E, "--config", p, NULL);
	unlink(p);
	p = write_ini("[server]\nexpose = ssh=tcp://h:22\nexpose = ssh=tcp://h:23\n");
	bad_args(":3: expose: port name 'ssh' is exposed twice", R, K, N,
	    "--config", p, NULL);
	unlink(p);
}
END_TEST

/* The forward proxy and resume settings are common to both programs:
 * the server reads them too, from flags and from [server]. */
START_TEST(test_resume_and_proxy)
{
	struct server_options so;
	char err[512];
	const char *p;

	ck_assert_int_eq(parse(&so, err, sizeof(err), R, K, N, E, NULL),
	    POPT_OK);
	ck_assert_ptr_null(so.so_ps.ps_proxy);
	ck_assert_int_eq(so.so_ps.ps_transport, TUNNEL_AUTO);
	ck_assert_uint_eq(so.so_ps.ps_window, 1048576);
	ck_assert_uint_eq(so.so_ps.ps_resume_grace_ms, 30000);
	ck_assert_uint_eq(so.so_ps.ps_peer_timeout_ms, 60000);
	ck_assert_uint_eq(so.so_ps.ps_segment_bytes, 262144);
	ck_assert_uint_eq(so.so_ps.ps_segment_ms, 200);
	ck_assert_uint_eq(so.so_ps.ps_probe_ms, 3000);
	server_options_free(&so);

	ck_assert_int_eq(parse(&so, err, sizeof(err), R, K, N, E, "--proxy",
	    "http://[::1]:3128", "--transport", "stream", "--peer-timeout",
	    "26", NULL), POPT_OK);
	ck_assert_str_eq(so.so_ps.ps_proxy, "http://[::1]:3128");
	ck_assert_int_eq(so.so_ps.ps_transport, TUNNEL_STREAM);
	ck_assert_uint_eq(so.so_ps.ps_peer_timeout_ms, 26000);
	server_options_free(&so);

	p = write_ini("[server]\n"
	    "proxy = http://127.0.0.1:3128\n"
	    "transport = segmented\n"
	    "window = 256k\n"
	    "resume_grace = 10\n"
	    "keepalive = 5\n"
	    "peer_timeout = 12\n"
	    "segment_bytes = 512k\n"
	    "segment_time = 1\n"
	    "probe_timeout = 2\n");
	ck_assert_int_eq(parse(&so, err, sizeof(err), R, K, N, E, "--config",
	    p, NULL), POPT_OK);
	ck_assert_str_eq(so.so_ps.ps_proxy, "http://127.0.0.1:3128");
	ck_assert_int_eq(so.so_ps.ps_transport, TUNNEL_SEGMENTED);
	ck_assert_uint_eq(so.so_ps.ps_window, 262144);
	ck_assert_uint_eq(so.so_ps.ps_resume_grace_ms, 10000);
	ck_assert_uint_eq(so.so_ps.ps_peer_timeout_ms, 12000);
	ck_assert_uint_eq(so.so_ps.ps_segment_bytes, 512 * 1024);
	ck_assert_uint_eq(so.so_ps.ps_segment_ms, 1000);
	ck_assert_uint_eq(so.so_ps.ps_probe_ms, 2000);
	server_options_free(&so);
	/* The flag wins over the file, and then the pair must agree. */
	bad_args("--peer-timeout (12 s) must be longer than --keepalive (30 "
	    "s)", R, K, N, E, "--config", p, "--keepalive", "30", NULL);
	unlink(p);

	bad_args("--proxy: proxy 'http://proxy' has no port", R, K, N, E,
	    "--proxy", "http://proxy", NULL);
	bad_args("--transport: 'x' is not a transport", R, K, N, E,
	    "--transport", "x", NULL);
	bad_args("--peer-timeout (10 s) must be longer than --keepalive (25 "
	    "s)", R, K, N, E, "--peer-timeout", "10", NULL);
}
END_TEST

/* How long a replaced server-proxy lets its tunnels run before exiting. */
START_TEST(test_replaced_grace)
{
	struct server_options so;
	char err[256];

	ck_assert_int_eq(parse(&so, err, sizeof(err), R, K, N, E, NULL),
	    POPT_OK);
	ck_assert_uint_eq(so.so_replaced_grace_ms,
	    SERVER_DEFAULT_REPLACED_GRACE_MS);
	server_options_free(&so);
	ck_assert_int_eq(parse(&so, err, sizeof(err), R, K, N, E,
	    "--replaced-grace", "0", NULL), POPT_OK);
	ck_assert_uint_eq(so.so_replaced_grace_ms, 0);
	server_options_free(&so);
	ck_assert_int_eq(parse(&so, err, sizeof(err), R, K, N, E,
	    "--replaced_grace", "250ms", NULL), POPT_OK);
	ck_assert_uint_eq(so.so_replaced_grace_ms, 250);
	server_options_free(&so);
	bad_args("--replaced-grace: '-1'", R, K, N, E, "--replaced-grace",
	    "-1", NULL);
	bad_args("--replaced-grace: '3601'", R, K, N, E, "--replaced-grace",
	    "3601", NULL);
}
END_TEST

START_TEST(test_backoff)
{
	uint64_t ms = 0, seen[12];
	int i;

	for (i = 0; i < 12; i++)
		seen[i] = ms = server_backoff_next(ms);
	ck_assert_uint_eq(seen[0], 500);
	ck_assert_uint_eq(seen[1], 1000);
	ck_assert_uint_eq(seen[2], 2000);
	ck_assert_uint_eq(seen[5], 16000);
	ck_assert_uint_eq(seen[6], 30000);
	ck_assert_uint_eq(seen[11], 30000);
}
END_TEST

static Suite *
server_options_suite(void)
{
	Suite *s = suite_create("server_options");
	TCase *tc = tcase_create("options");

	tcase_add_test(tc, test_expose_forms);
	tcase_add_test(tc, test_expose_malformed);
	tcase_add_test(tc, test_flags);
	tcase_add_test(tc, test_flags_malformed);
	tcase_add_test(tc, test_ini);
	tcase_add_test(tc, test_backoff);
	tcase_add_test(tc, test_replaced_grace);
	tcase_add_test(tc, test_resume_and_proxy);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(server_options_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
