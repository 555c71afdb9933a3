/* relay.ini as an operator writes it: a good file loads with the values
 * it says, an empty one with the documented defaults, and every mistake
 * stops the relay with "file:line: what is wrong". */
#include <check.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "key.h"
#include "../../relay/relay.h"

static char k1[KEY_PUBLIC_TEXT_MAX], k2[KEY_PUBLIC_TEXT_MAX], k3[KEY_PUBLIC_TEXT_MAX];
static uint8_t p1[KEY_PUBLIC_BYTES], p2[KEY_PUBLIC_BYTES], p3[KEY_PUBLIC_BYTES];
static char err[512];

static void
setup(void)
{
	struct key k;

	ck_assert_int_ge(sodium_init(), 0);
	ck_assert_int_eq(key_generate(&k, err, sizeof(err)), 0);
	memcpy(p1, k.k_pub, sizeof(p1));
	key_public_text(p1, k1);
	ck_assert_int_eq(key_generate(&k, err, sizeof(err)), 0);
	memcpy(p2, k.k_pub, sizeof(p2));
	key_public_text(p2, k2);
	ck_assert_int_eq(key_generate(&k, err, sizeof(err)), 0);
	memcpy(p3, k.k_pub, sizeof(p3));
	key_public_text(p3, k3);
	key_wipe(&k);
}

/* Loads text in which K1, K2, K3 stand for three real public keys. */
static struct relay_config *
load(const char *text)
{
	char buf[8192], *o = buf;
	const char *p = text;
	struct relay_config *cf;
	FILE *f;

	while (*p != '\0' && o < buf + sizeof(buf) - KEY_PUBLIC_TEXT_MAX) {
		if (p[0] == 'K' && p[1] >= '1' && p[1] <= '3') {
			const char *k = p[1] == '1' ? k1 : p[1] == '2' ? k2 : k3;
			o += sprintf(o, "%s", k);
			p += 2;
		} else
			*o++ = *p++;
	}
	*o = '\0';
	f = fmemopen(buf, strlen(buf), "r");
	ck_assert_ptr_nonnull(f);
	err[0] = '\0';
	cf = config_load_stream(f, "t.ini", err, sizeof(err));
	fclose(f);
	return cf;
}

/* The file must be refused with exactly this message. */
static void
refused(const char *text, const char *msg)
{
	struct relay_config *cf = load(text);

	ck_assert_msg(cf == NULL, "accepted: %s", text);
	ck_assert_msg(strcmp(err, msg) == 0, "\n got: %s\nwant: %s", err, msg);
}

/* The file must be refused with a message starting with prefix. */
static void
refused_like(const char *text, const char *prefix)
{
	struct relay_config *cf = load(text);

	ck_assert_msg(cf == NULL, "accepted: %s", text);
	ck_assert_msg(strncmp(err, prefix, strlen(prefix)) == 0,
	    "\n got: %s\nwant: %s...", err, prefix);
}

START_TEST(defaults)
{
	struct relay_config *cf = load("");

	ck_assert_msg(cf != NULL, "%s", err);
	ck_assert_str_eq(cf->cf_listen, "127.0.0.1:8080");
	ck_assert_uint_eq(cf->cf_listen_timeout_ms, 25000);
	ck_assert_uint_eq(cf->cf_listen_grace_ms, 10000);
	ck_assert_uint_eq(cf->cf_connect_wait_ms, 5000);
	ck_assert_uint_eq(cf->cf_accept_timeout_ms, 10000);
	ck_assert_uint_eq(cf->cf_idle_timeout_ms, 300000);
	ck_assert_uint_eq(cf->cf_header_timeout_ms, 10000);
	ck_assert_uint_eq(cf->cf_clock_skew, 300);
	ck_assert_uint_eq(cf->cf_max_nonces, 500000);
	ck_assert_uint_eq(cf->cf_pipe_buffer, 262144);
	ck_assert_uint_eq(cf->cf_max_tunnels, 4096);
	ck_assert_uint_eq(cf->cf_max_connections, 20000);
	ck_assert_int_eq(cf->cf_max_connections_set, 0);
	ck_assert_uint_eq(cf->cf_max_pending_connects, 1024);
	ck_assert_uint_eq(cf->cf_max_refuse_body, 4096);
	ck_assert_uint_eq(cf->cf_connection_memory, 12288);
	ck_assert_uint_eq(cf->cf_upload_memory, 262144);
	ck_assert_int_eq(cf->cf_direct_write, 1);
	ck_assert_int_eq(cf->cf_status, 0);
	ck_assert_uint_eq(cf->cf_resume_grace_ms, 30000);
	ck_assert_uint_eq(cf->cf_peer_timeout_ms, 60000);
	ck_assert_uint_eq(cf->cf_segment_bytes, 262144);
	ck_assert_uint_eq(cf->cf_segment_time_ms, 200);
	ck_assert_uint_eq(cf->cf_poll_time_ms, 20000);
	ck_assert_uint_eq(cf->cf_nservers, 0);
	ck_assert_uint_eq(cf->cf_nclients, 0);
	config_free(cf);
}
END_TEST

START_TEST(full_file)
{
	struct relay_config *cf = load(
	    "\xEF\xBB\xBF# relay.ini\r\n"
	    "[relay]\r\n"
	    "listen = 0.0.0.0:9000   ; public\n"
	    "  listen_timeout = 20\n"
	    "listen_grace = 0.5\n"
	    "connect_wait = 250ms\n"
	    "accept_timeout = 7s\n"
	    "idle_timeout = 600\n"
	    "clock_skew = 60\n"
	    "max_nonces = 5000\n"
	    "pipe_buffer = 1M\n"
	    "max_tunnels = 10\n"
	    "max_connections = 100\n"
	    "max_pending_connects = 0\n"
	    "max_refuse_body = 2k\n"
	    "connection_memory = 65536\n"
	    "upload_memory = 1M\n"
	    "direct_write = off\n"
	    "status = on # counters\n"
	    "resume_grace = 5\n"
	    "peer_timeout = 0\n"
	    "segment_bytes = 64k\n"
	    "segment_time = 50ms\n"
	    "poll_time = 2.5\n"
	    "\n"
	    "[server nas]\n"
	    "key = K1\n"
	    "ports = ssh web\n"
	    "ports = db, ssh\n"
	    "[server box.2]\n"
	    "key = K2\n"
	    "ports = *\n"
	    "[client laptop]\n"
	    "key = K3\n"
	    "allow = nas/ssh nas/web\n"
	    "allow = box.2/*\n");

	ck_assert_msg(cf != NULL, "%s", err);
	ck_assert_str_eq(cf->cf_listen, "0.0.0.0:9000");
	ck_assert_uint_eq(cf->cf_listen_timeout_ms, 20000);
	ck_assert_uint_eq(cf->cf_listen_grace_ms, 500);
	ck_assert_uint_eq(cf->cf_connect_wait_ms, 250);
	ck_assert_uint_eq(cf->cf_accept_timeout_ms, 7000);
	ck_assert_uint_eq(cf->cf_idle_timeout_ms, 600000);
	ck_assert_uint_eq(cf->cf_clock_skew, 60);
	ck_assert_uint_eq(cf->cf_max_nonces, 5000);
	ck_assert_uint_eq(cf->cf_pipe_buffer, 1048576);
	ck_assert_uint_eq(cf->cf_max_tunnels, 10);
	ck_assert_uint_eq(cf->cf_max_connections, 100);
	ck_assert_int_eq(cf->cf_max_connections_set, 1);
	ck_assert_uint_eq(cf->cf_max_pending_connects, 0);
	ck_assert_uint_eq(cf->cf_max_refuse_body, 2048);
	ck_assert_uint_eq(cf->cf_connection_memory, 65536);
	ck_assert_uint_eq(cf->cf_upload_memory, 1048576);
	ck_assert_int_eq(cf->cf_direct_write, 0);
	ck_assert_int_eq(cf->cf_status, 1);
	ck_assert_uint_eq(cf->cf_resume_grace_ms, 5000);
	ck_assert_uint_eq(cf->cf_peer_timeout_ms, 0);
	ck_assert_uint_eq(cf->cf_segment_bytes, 65536);
	ck_assert_uint_eq(cf->cf_segment_time_ms, 50);
	ck_assert_uint_eq(cf->cf_poll_time_ms, 2500);

	ck_assert_uint_eq(cf->cf_nservers, 2);
	ck_assert_ptr_eq(config_server(cf, "nas"), &cf->cf_servers[0]);
	ck_assert_ptr_eq(config_server_by_key(cf, p1), &cf->cf_servers[0]);
	ck_assert_ptr_eq(config_server_by_key(cf, p2), &cf->cf_servers[1]);
	ck_assert_ptr_null(config_server_by_key(cf, p3));
	ck_assert_ptr_null(config_server(cf, "NAS"));
	ck_assert_uint_eq(cf->cf_servers[0].sv_nports, 3);   /* ssh listed twice */
	ck_assert(config_server_offers(&cf->cf_servers[0], "db"));
	ck_assert(!config_server_offers(&cf->cf_servers[0], "ftp"));
	ck_assert(config_server_offers(&cf->cf_servers[1], "anything"));

	ck_assert_uint_eq(cf->cf_nclients, 1);
	ck_assert_ptr_eq(config_client_by_key(cf, p3), &cf->cf_clients[0]);
	ck_assert_ptr_null(config_client_by_key(cf, p1));
	ck_assert(config_client_may(&cf->cf_clients[0], "nas", "ssh"));
	ck_assert(!config_client_may(&cf->cf_clients[0], "nas", "db"));
	ck_assert(config_client_may(&cf->cf_clients[0], "box.2", "x"));
	ck_assert(!config_client_may(&cf->cf_clients[0], "other", "ssh"));
	config_free(cf);
}
END_TEST

/* One key may serve as a server's and as a client's (one machine doing
 * both); a server with no ports line offers any port. */
START_TEST(same_key_server_and_client)
{
	struct relay_config *cf = load("[server nas]\nkey = K1\n"
	    "[client nas]\nkey = K1\nallow = nas/anything\n");

	ck_assert_msg(cf != NULL, "%s", err);
	ck_assert(config_server_offers(&cf->cf_servers[0], "x"));
	config_free(cf);
}
END_TEST

START_TEST(unknown_keys_and_sections)
{
	refused("[relay]\nlisten = 127.0.0.1:1\nlsten = 1.2.3.4:5\n",
	    "t.ini:3: unknown key 'lsten' in [relay]");
	refused("[relays]\n", "t.ini:1: unknown section [relays] (known: [relay], "
	    "[server NAME], [client NAME])");
	refused("\n[server nas]\nkey = K1\nport = ssh\n",
	    "t.ini:4: unknown key 'port' in [server nas] (known: key, ports)");
	refused("[client c]\nkey = K1\nallow = s/p\nallows = s/q\n",
	    "t.ini:4: unknown key 'allows' in [client c] (known: key, allow)");
	refused("listen = 1.2.3.4:5\n", "t.ini:1: 'listen' is outside any section; "
	    "put settings under [relay], [server NAME] or [client NAME]");
}
END_TEST

START_TEST(syntax)
{
	refused("[relay]\nlisten 127.0.0.1:80\n", "t.ini:2: expected 'name = value', "
	    "a [section] or a comment, not 'listen 127.0.0.1:80'");
	refused("[relay]\n= 5\n", "t.ini:2: expected 'name = value', a [section] "
	    "or a comment, not '= 5'");
	refused("[server nas\n", "t.ini:1: malformed section header '[server nas': "
	    "write [relay], [server NAME] or [client NAME]");
	refused("[relay] x\n", "t.ini:1: malformed section header '[relay] x': "
	    "write [relay], [server NAME] or [client NAME]");
	refused("[relay]\nlisten =\n", "t.ini:2: 'listen' has no value");
	refused("[server]\n", "t.ini:1: section [server] needs a name: [server NAME]");
	refused("[client]\n", "t.ini:1: section [client] needs a name: [client NAME]");
	refused("[server n@s]\n", "t.ini:1: bad server name 'n@s': use 1 to 64 "
	    "characters from A-Z a-z 0-9 . _ -");
}
END_TEST

START_TEST(nul_byte)
{
	static const char text[] = "[relay]\nstatus = o\0n\n";
	FILE *f = fmemopen((void *)(uintptr_t)text, sizeof(text) - 1, "r");

	ck_assert_ptr_null(config_load_stream(f, "t.ini", err, sizeof(err)));
	ck_assert_str_eq(err, "t.ini:2: line contains a NUL byte");
	fclose(f);
}
END_TEST

START_TEST(long_line)
{
	char text[600];

	snprintf(text, sizeof(text), "[server nas]\nkey = K1\nports = %0300d\n", 7);
	refused_like(text, "t.ini:3: line is longer than ");
}
END_TEST

START_TEST(duplicates)
{
	refused("[relay]\nlisten = 1.2.3.4:5\n\nlisten = 1.2.3.4:6\n",
	    "t.ini:4: 'listen' is set twice in [relay] (first on line 2)");
	refused("[server nas]\nkey = K1\n[server nas]\nkey = K2\n",
	    "t.ini:3: duplicate section [server nas] (first on line 1)");
	refused("[client c]\nkey = K1\nallow = s/p\n[client c]\n",
	    "t.ini:4: duplicate section [client c] (first on line 1)");
	refused("[server nas]\nkey = K1\nkey = K2\n",
	    "t.ini:3: 'key' is set twice in [server nas] (first on line 2)");
	refused("[server a]\nkey = K1\n[server b]\n\nkey = K1\n",
	    "t.ini:5: [server b] has the same key as [server a] (line 2); give each "
	    "server its own key");
	refused("[server s]\nkey = K3\n[client a]\nkey = K1\nallow = s/*\n"
	    "[client b]\nkey = K1\nallow = s/*\n",
	    "t.ini:7: [client b] has the same key as [client a] (line 4); give each "
	    "client its own key");
}
END_TEST

START_TEST(bad_values)
{
	refused("[relay]\nlisten_timeout = soon\n", "t.ini:2: listen_timeout must be "
	    "a number of seconds (e.g. 25 or 0.5), not 'soon'");
	refused("[relay]\nlisten_timeout = 0.0001\n", "t.ini:2: listen_timeout must be "
	    "a number of seconds (e.g. 25 or 0.5), not '0.0001'");
	refused("[relay]\nlisten_timeout = 0\n", "t.ini:2: listen_timeout = 0 is out "
	    "of range (0.001 s to 3600 s)");
	refused("[relay]\nidle_timeout = -5\n", "t.ini:2: idle_timeout must be a "
	    "number of seconds (e.g. 25 or 0.5), not '-5'");
	refused("[relay]\nclock_skew = 1.5\n", "t.ini:2: clock_skew must be a whole "
	    "number of seconds, not '1.5'");
	refused("[relay]\nmax_tunnels = many\n", "t.ini:2: max_tunnels must be a "
	    "whole number, not 'many'");
	refused("[relay]\nmax_tunnels = 0\n", "t.ini:2: max_tunnels = 0 is out of "
	    "range (1 to 10000000)");
	refused("[relay]\npipe_buffer = 12x\n", "t.ini:2: pipe_buffer must be a "
	    "number of bytes (suffixes k, M, G allowed), not '12x'");
	refused("[relay]\npipe_buffer = 100\n", "t.ini:2: pipe_buffer = 100 is out of "
	    "range (1024 to 1073741824)");
	refused("[relay]\nmax_nonces = 99999999999999999999999\n", "t.ini:2: "
	    "max_nonces must be a whole number, not '99999999999999999999999'");
	refused("[relay]\nstatus = yes\n", "t.ini:2: status must be 'on' or 'off', "
	    "not 'yes'");
	refused("[relay]\ndirect_write = 1\n", "t.ini:2: direct_write must be 'on' or "
	    "'off', not '1'");
	refused("[relay]\nupload_memory = 4k\n", "t.ini:2: upload_memory = 4k is out "
	    "of range (8192 to 67108864)");
	refused("[relay]\nresume_grace = 0\n", "t.ini:2: resume_grace = 0 is out of "
	    "range (0.100 s to 86400 s)");
	refused("[relay]\npeer_timeout = never\n", "t.ini:2: peer_timeout must be a "
	    "number of seconds (e.g. 25 or 0.5), not 'never'");
	refused("[relay]\nsegment_bytes = 100\n", "t.ini:2: segment_bytes = 100 is out "
	    "of range (1024 to 1073741824)");
	refused("[relay]\nsegment_time = 0\n", "t.ini:2: segment_time = 0 is out of "
	    "range (0.001 s to 60 s)");
	refused("[relay]\npoll_time = 2h\n", "t.ini:2: poll_time must be a number of "
	    "seconds (e.g. 25 or 0.5), not '2h'");
	refused("[relay]\nlisten = localhost\n", "t.ini:2: listen: 'localhost' is not "
	    "HOST:PORT ([IPv6]:PORT for IPv6)");
	refused("[relay]\nlisten = 1.2.3.4:70000\n", "t.ini:2: listen: "
	    "'1.2.3.4:70000' has no valid port (0..65535)");
	refused("[relay]\nlisten = :80\n", "t.ini:2: listen: ':80' has no host (use "
	    "127.0.0.1, 0.0.0.0 or [::])");
}
END_TEST

START_TEST(servers_and_clients)
{
	refused("[server nas]\nports = ssh\n", "t.ini:1: [server nas] has no "
	    "'key = ed25519:...' line");
	refused_like("[server nas]\nkey = ed25519:nope\n", "t.ini:2: bad key in "
	    "[server nas]: ");
	refused_like("[server nas]\nkey = rsa:AAAA\n", "t.ini:2: bad key in [server nas]: ");
	refused("[server nas]\nkey = K1\nports = ssh b@d\n", "t.ini:3: bad port name "
	    "'b@d' in [server nas]: use 1 to 64 characters from A-Z a-z 0-9 . _ -");
	refused("[server nas]\nkey = K1\nports = ssh *\n", "t.ini:3: '*' (any port) "
	    "cannot be mixed with port names in [server nas]");
	refused("[server nas]\nkey = K1\nports = *\nports = ssh\n", "t.ini:4: "
	    "[server nas] allows any port ('*') already");
	refused("[client c]\nallow = nas/ssh\n", "t.ini:1: [client c] has no "
	    "'key = ed25519:...' line");
	refused("[client c]\nkey = K1\n", "t.ini:1: [client c] has no 'allow' line, "
	    "so it could connect nowhere (write e.g. allow = nas/ssh)");
	refused("[client c]\nkey = K1\nallow = nas\n", "t.ini:3: bad allow entry "
	    "'nas' in [client c]: write SERVER/PORT or SERVER/*");
	refused("[client c]\nkey = K1\nallow = nas/ssh/x\n", "t.ini:3: bad allow "
	    "entry 'nas/ssh/x' in [client c]: write SERVER/PORT or SERVER/*");
	refused("[client c]\nkey = K1\nallow = nas/ssh\n", "t.ini:3: [client c] "
	    "allows 'nas/ssh' but there is no [server nas] section");
	refused("[server nas]\nkey = K2\nports = web\n[client c]\nkey = K1\n"
	    "allow = nas/web\nallow = nas/ssh\n", "t.ini:7: [client c] allows "
	    "'nas/ssh' but [server nas] does not list port 'ssh' in its ports");
}
END_TEST

/* HTTPS: both files or neither; the files themselves are read when the
 * relay starts (test_relay_tls). */
START_TEST(tls_files)
{
	struct relay_config *cf;

	cf = load("");
	ck_assert_msg(cf != NULL, "%s", err);
	ck_assert_ptr_null(cf->cf_tls_cert);
	ck_assert_ptr_null(cf->cf_tls_key);
	config_free(cf);
	cf = load("[relay]\ntls_cert = /etc/postern/relay.crt   ; fullchain\n"
	    "tls_key = relay key.pem\n");
	ck_assert_msg(cf != NULL, "%s", err);
	ck_assert_str_eq(cf->cf_tls_cert, "/etc/postern/relay.crt");
	ck_assert_str_eq(cf->cf_tls_key, "relay key.pem");
	config_free(cf);
	refused("[relay]\nstatus = on\ntls_cert = a.crt\n", "t.ini:3: tls_cert "
	    "is set but tls_key is not: HTTPS needs both the certificate and its "
	    "key (or neither, for plain HTTP)");
	refused("[relay]\ntls_key = a.key\n", "t.ini:2: tls_key is set but "
	    "tls_cert is not: HTTPS needs both the certificate and its key (or "
	    "neither, for plain HTTP)");
	refused("[relay]\ntls_cert =\ntls_key = a.key\n", "t.ini:2: 'tls_cert' "
	    "has no value");
	refused("[relay]\ntls_cert = a\ntls_key = b\ntls_cert = c\n",
	    "t.ini:4: 'tls_cert' is set twice in [relay] (first on line 2)");
	refused_like("[server nas]\nkey = K1\ntls_cert = a.crt\n", "t.ini:3: "
	    "unknown key 'tls_cert' in [server nas]");
}
END_TEST

START_TEST(missing_file)
{
	struct relay_config *cf = config_load("/nonexistent/relay.ini", err, sizeof(err));

	ck_assert_ptr_null(cf);
	ck_assert_str_eq(err, "cannot open config /nonexistent/relay.ini: No such "
	    "file or directory");
}
END_TEST

START_TEST(hostport)
{
	char host[64], port[8];

	ck_assert_int_eq(config_split_hostport("[::1]:8080", host, sizeof(host), port,
	    sizeof(port), err, sizeof(err)), 0);
	ck_assert_str_eq(host, "::1");
	ck_assert_str_eq(port, "8080");
	ck_assert_int_eq(config_split_hostport("127.0.0.1:0", host, sizeof(host), port,
	    sizeof(port), err, sizeof(err)), 0);
	ck_assert_str_eq(port, "0");
	ck_assert_int_eq(config_split_hostport("::1:80", host, sizeof(host), port,
	    sizeof(port), err, sizeof(err)), -1);
	ck_assert_int_eq(config_split_hostport("[::1]80", host, sizeof(host), port,
	    sizeof(port), err, sizeof(err)), -1);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("relay_config");
	TCase *tc = tcase_create("config");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, NULL);
	tcase_add_test(tc, defaults);
	tcase_add_test(tc, full_file);
	tcase_add_test(tc, same_key_server_and_client);
	tcase_add_test(tc, unknown_keys_and_sections);
	tcase_add_test(tc, syntax);
	tcase_add_test(tc, nul_byte);
	tcase_add_test(tc, long_line);
	tcase_add_test(tc, duplicates);
	tcase_add_test(tc, bad_values);
	tcase_add_test(tc, servers_and_clients);
	tcase_add_test(tc, missing_file);
	tcase_add_test(tc, hostport);
	tcase_add_test(tc, tls_files);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
