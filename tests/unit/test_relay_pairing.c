/* The relay's calls as a server-proxy and a client-proxy see them: pairing
 * listens with connects, piping bytes both ways through accept, downstream,
 * connect and upstream, and each way that goes wrong (no listen, no accept,
 * refusal, reuse, foreign keys).  The relay runs on its own loop in a
 * thread; the test speaks HTTP/1.1 to it over loopback with signed
 * requests, and checks /v1/status returns to zero after each case. */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "key.h"
#include "log.h"
#include "loop.h"
#include "../../relay/relay.h"
#include "relay_thread.h"
#include "relay_http.h"

enum { K_NAS, K_LAPTOP, K_OTHER, K_STRANGER, NKEYS };

static struct key keys[NKEYS];
static struct relay_thread rt;
static int port;

/* ---- the relay, on its own thread ------------------------------------ */

static void
setup(void)
{
	char text[2048], pub[NKEYS][KEY_PUBLIC_TEXT_MAX];

	log_init("relay-test", LOG_ERROR);
	hc_keys_make(keys, pub, NKEYS);
	snprintf(text, sizeof(text),
	    "[relay]\nlisten = 127.0.0.1:0\nstatus = on\nlisten_timeout = 0.4\n"
	    "listen_grace = 2\nconnect_wait = 1\naccept_timeout = 0.5\n"
	    "pipe_buffer = 4k\nmax_pending_connects = 1\nresume_grace = 0.5\n"
	    "[server nas]\nkey = %s\nports = ssh web\n"
	    "[client laptop]\nkey = %s\nallow = nas/*\n"
	    "[client other]\nkey = %s\nallow = nas/web\n",
	    pub[K_NAS], pub[K_LAPTOP], pub[K_OTHER]);
	relay_thread_start(&rt, text);
	port = rt.rt_port;
}

static void
teardown(void)
{
	relay_thread_stop(&rt);
	hc_keys_wipe(keys, NKEYS);
}

/* ---- requests --------------------------------------------------------- */

/* Sends a request signed by key k (or unsigned, k < 0).  body NULL with
 * chunked set starts a chunked upload. */
static struct hc *
hc_request(int k, const char *method, const char *path, const char *body, int chunked)
{
	return hc_send(port, k >= 0 ? &keys[k] : NULL, method, path, NULL, body,
	    chunked);
}

/* status and body of a one-shot request */
static int
call(int k, const char *method, const char *path, const char *body, char *out,
     size_t outlen)
{
	struct hc *h = hc_request(k, method, path, body, 0);
	int st = hc_status(h);

	hc_body(h, out, outlen);
	hc_close(h);
	return st;
}

static void
assert_status_zero(void)
{
	char body[512], want[] = "\"tunnels\":0,\"pending_connects\":0,\"listens\":0,";
	int i;

	for (i = 0; i < 100; i++) {
		ck_assert_int_eq(call(-1, "GET", "/v1/status", NULL, body, sizeof(body)), 200);
		if (strstr(body, want) != NULL && strstr(body, "\"buffered_bytes\":0}"))
			return;
		usleep(20000);
	}
	ck_abort_msg("status did not return to zero: %s", body);
}

/* listen + connect: the listen's JSON, the connect still waiting. */
static struct hc *
paired(const char *port_name, int client, char id[RELAY_ID_TEXT + 1])
{
	struct hc *l, *c;
	char path[128], body[512];

	snprintf(path, sizeof(path), "/v1/s/nas/listen/%s", port_name);
	l = hc_request(K_NAS, "POST", path, NULL, 0);
	usleep(50000);
	snprintf(path, sizeof(path), "/v1/s/nas/connect/%s", port_name);
	c = hc_request(client, "POST", path, NULL, 0);
	hc_listen_id(l, body, sizeof(body), id, RELAY_ID_TEXT + 1);
	ck_assert(strstr(body, "\"client\":\"") != NULL);
	ck_assert(strstr(body, "\"client_key\":\"ed25519:") != NULL);
	return c;
}

/* ---- cases ------------------------------------------------------------ */

START_TEST(listen_times_out)
{
	char body[256];

	ck_assert_int_eq(call(K_NAS, "POST", "/v1/s/nas/listen/ssh", NULL, body,
	    sizeof(body)), 204);
	assert_status_zero();
}
END_TEST

START_TEST(connect_without_listen)
{
	char body[512];

	ck_assert_int_eq(call(K_LAPTOP, "POST", "/v1/s/nas/connect/ssh", NULL, body,
	    sizeof(body)), 503);
	ck_assert_msg(strstr(body, "\"code\":\"not_listening\"") != NULL, "%s", body);
	assert_status_zero();
}
END_TEST

START_TEST(bytes_both_ways)
{
	struct hc *c, *a, *d, *u;
	char id[RELAY_ID_TEXT + 1], path[128], hdr[64];
	static char up[200000], down[200000], got[200000];
	size_t i, n;

	for (i = 0; i < sizeof(up); i++) {
		up[i] = (char)(i * 7);
		down[i] = (char)(i * 13 + 1);
	}
	c = paired("ssh", K_LAPTOP, id);
	snprintf(path, sizeof(path), "/v1/s/nas/accept/%s", id);
	a = hc_request(K_NAS, "POST", path, NULL, 0);
	snprintf(path, sizeof(path), "/v1/s/nas/downstream/%s", id);
	d = hc_request(K_NAS, "POST", path, NULL, 1);
	ck_assert_int_eq(hc_status(c), 200);
	ck_assert_str_eq(hc_header(c, "Postern-Connection:", hdr, sizeof(hdr)), id);
	ck_assert_str_eq(hc_header(c, "Cache-Control:", hdr, sizeof(hdr)), "no-store");
	ck_assert_str_eq(hc_header(c, "X-Accel-Buffering:", hdr, sizeof(hdr)), "no");
	ck_assert_int_eq(hc_status(a), 200);
	ck_assert_str_eq(hc_header(a, "X-Accel-Buffering:", hdr, sizeof(hdr)), "no");
	snprintf(path, sizeof(path), "/v1/s/nas/upstream/%s", id);
	u = hc_request(K_LAPTOP, "POST", path, NULL, 1);

	/* Far more than pipe_buffer (4k) each way, in pieces bigger than
	 * it, so both writers are suspended and resumed many times. */
	for (i = 0; i < sizeof(up); i += n) {
		n = sizeof(up) - i < 7000 ? sizeof(up) - i : 7000;
		hc_chunk(u, up + i, n);
		hc_chunk(d, down + i, n);
		hc_read_n(a, got + i, n);
		ck_assert(memcmp(got + i, up + i, n) == 0);
		hc_read_n(c, got + i, n);
		ck_assert(memcmp(got + i, down + i, n) == 0);
	}
	hc_end(u);
	hc_end(d);
	ck_assert_int_eq(hc_read(a, got, sizeof(got)), 0);   /* clean ends */
	ck_assert_int_eq(hc_read(c, got, sizeof(got)), 0);
	ck_assert_int_eq(hc_status(u), 200);
	ck_assert_int_eq(hc_status(d), 200);
	hc_close(u);
	hc_close(d);
	hc_close(a);
	hc_close(c);
	assert_status_zero();
}
END_TEST

START_TEST(abort_cuts_the_others)
{
	struct hc *c, *a, *d;
	char id[RELAY_ID_TEXT + 1], path[128], buf[64];

	c = paired("ssh", K_LAPTOP, id);
	snprintf(path, sizeof(path), "/v1/s/nas/accept/%s", id);
	a = hc_request(K_NAS, "POST", path, NULL, 0);
	snprintf(path, sizeof(path), "/v1/s/nas/downstream/%s", id);
	d = hc_request(K_NAS, "POST", path, NULL, 1);
	ck_assert_int_eq(hc_status(c), 200);
	ck_assert_int_eq(hc_status(a), 200);
	hc_chunk(d, "hello", 5);
	ck_assert_int_eq(hc_read(c, buf, sizeof(buf)), 5);
	hc_close(a);   /* the server-proxy's accept stream fails: a break */
	ck_assert_int_eq(hc_read(c, buf, sizeof(buf)), -1);   /* cut, not ended */
	hc_close(c);
	hc_close(d);
	/* Nobody re-attaches: the tunnel ends after resume_grace. */
	assert_status_zero();
}
END_TEST

START_TEST(accept_timeout)
{
	struct hc *c;
	char id[RELAY_ID_TEXT + 1], body[512], path[128];

	c = paired("ssh", K_LAPTOP, id);
	ck_assert_int_eq(hc_status(c), 504);
	hc_body(c, body, sizeof(body));
	ck_assert_msg(strstr(body, "\"code\":\"accept_timeout\"") != NULL, "%s", body);
	hc_close(c);
	snprintf(path, sizeof(path), "/v1/s/nas/accept/%s", id);
	ck_assert_int_eq(call(K_NAS, "POST", path, NULL, body, sizeof(body)), 404);
	ck_assert(strstr(body, "\"code\":\"unknown_connection\"") != NULL);
	assert_status_zero();
}
END_TEST

START_TEST(refused)
{
	struct hc *c;
	char id[RELAY_ID_TEXT + 1], body[512], path[128];

	c = paired("web", K_LAPTOP, id);
	snprintf(path, sizeof(path), "/v1/s/nas/refuse/%s", id);
	ck_assert_int_eq(call(K_NAS, "POST", path, "{\"message\": 42}", body,
	    sizeof(body)), 400);
	ck_assert_int_eq(call(K_NAS, "POST", path, "{\"message\": \"connect "
	    "ECONNREFUSED 127.0.0.1:80\", \"code\": \"ECONNREFUSED\"}", body,
	    sizeof(body)), 200);
	ck_assert_int_eq(hc_status(c), 502);
	hc_body(c, body, sizeof(body));
	ck_assert_str_eq(body, "{\"error\":\"connect ECONNREFUSED 127.0.0.1:80\","
	    "\"code\":\"ECONNREFUSED\"}");
	hc_close(c);
	assert_status_zero();
}
END_TEST

START_TEST(streams_open_once_by_their_keys)
{
	struct hc *c, *a;
	char id[RELAY_ID_TEXT + 1], body[512], path[128];

	c = paired("web", K_LAPTOP, id);
	snprintf(path, sizeof(path), "/v1/s/nas/accept/%s", id);
	a = hc_request(K_NAS, "POST", path, NULL, 0);
	ck_assert_int_eq(hc_status(a), 200);
	ck_assert_int_eq(call(K_NAS, "POST", path, NULL, body, sizeof(body)), 409);
	ck_assert(strstr(body, "\"code\":\"already_used\"") != NULL);
	snprintf(path, sizeof(path), "/v1/s/nas/refuse/%s", id);
	ck_assert_int_eq(call(K_NAS, "POST", path, "{}", body, sizeof(body)), 409);
	ck_assert_int_eq(hc_status(c), 200);
	snprintf(path, sizeof(path), "/v1/s/nas/upstream/%s", id);
	ck_assert_int_eq(call(K_OTHER, "POST", path, NULL, body, sizeof(body)), 403);
	ck_assert_int_eq(call(K_STRANGER, "POST", path, NULL, body, sizeof(body)), 401);
	ck_assert_int_eq(call(K_LAPTOP, "POST", "/v1/s/nas/upstream/"
	    "AAAAAAAAAAAAAAAAAAAAAA", NULL, body, sizeof(body)), 404);
	hc_close(a);
	hc_close(c);
	assert_status_zero();
}
END_TEST

START_TEST(who_may_call)
{
	char body[512];

	ck_assert_int_eq(call(-1, "POST", "/v1/s/nas/listen/ssh", NULL, body,
	    sizeof(body)), 401);
	ck_assert(strstr(body, "\"code\":\"unauthenticated\"") != NULL);
	ck_assert_int_eq(call(K_LAPTOP, "POST", "/v1/s/nas/listen/ssh", NULL, body,
	    sizeof(body)), 403);
	ck_assert_int_eq(call(K_NAS, "POST", "/v1/s/nas/listen/ftp", NULL, body,
	    sizeof(body)), 403);
	ck_assert_int_eq(call(K_NAS, "POST", "/v1/s/box/listen/ssh", NULL, body,
	    sizeof(body)), 404);
	ck_assert_int_eq(call(K_OTHER, "POST", "/v1/s/nas/connect/ssh", NULL, body,
	    sizeof(body)), 403);
	ck_assert_int_eq(call(K_LAPTOP, "POST", "/v1/s/nas/connect/ftp", NULL, body,
	    sizeof(body)), 404);
	ck_assert(strstr(body, "\"code\":\"unknown_port\"") != NULL);
	ck_assert_int_eq(call(K_LAPTOP, "POST", "/v1/s/box/connect/ssh", NULL, body,
	    sizeof(body)), 404);
	ck_assert(strstr(body, "\"code\":\"unknown_server\"") != NULL);
	ck_assert_int_eq(call(K_NAS, "POST", "/v1/s/nas/listen/ssh", "x", body,
	    sizeof(body)), 400);
	ck_assert_int_eq(call(K_NAS, "GET", "/v1/s/nas/listen/ssh", NULL, body,
	    sizeof(body)), 405);
	assert_status_zero();
}
END_TEST

/* A connect that finds no listen, within listen_grace of the last one,
 * waits for the next poll; one more than max_pending_connects is busy. */
START_TEST(connect_waits_for_the_next_poll)
{
	struct hc *c, *c2, *l;
	char body[512];

	ck_assert_int_eq(call(K_NAS, "POST", "/v1/s/nas/listen/ssh", NULL, body,
	    sizeof(body)), 204);
	c = hc_request(K_LAPTOP, "POST", "/v1/s/nas/connect/ssh", NULL, 0);
	usleep(100000);
	ck_assert_int_eq(call(K_LAPTOP, "POST", "/v1/s/nas/connect/ssh", NULL, body,
	    sizeof(body)), 503);
	ck_assert_msg(strstr(body, "\"code\":\"busy\"") != NULL, "%s", body);
	l = hc_request(K_NAS, "POST", "/v1/s/nas/listen/ssh", NULL, 0);
	ck_assert_int_eq(hc_status(l), 200);
	hc_close(l);
	ck_assert_int_eq(hc_status(c), 504);   /* paired, never accepted */
	hc_close(c);
	/* Past connect_wait with no poll: not listening. */
	c2 = hc_request(K_LAPTOP, "POST", "/v1/s/nas/connect/ssh", NULL, 0);
	ck_assert_int_eq(hc_status(c2), 503);
	hc_body(c2, body, sizeof(body));
	ck_assert_msg(strstr(body, "\"code\":\"not_listening\"") != NULL, "%s", body);
	hc_close(c2);
	assert_status_zero();
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("relay_pairing");
	TCase *tc = tcase_create("pairing");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 20);
	tcase_add_test(tc, listen_times_out);
	tcase_add_test(tc, connect_without_listen);
	tcase_add_test(tc, bytes_both_ways);
	tcase_add_test(tc, abort_cuts_the_others);
	tcase_add_test(tc, accept_timeout);
	tcase_add_test(tc, refused);
	tcase_add_test(tc, streams_open_once_by_their_keys);
	tcase_add_test(tc, who_may_call);
	tcase_add_test(tc, connect_waits_for_the_next_poll);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
