/* The relay's calls as a server-proxy and a client-proxy see them: pairing
 * listens with connects, piping bytes both ways through accept, downstream,
 * connect and upstream, and each way that goes wrong (no listen, no accept,
 * refusal, reuse, foreign keys).  The relay runs on its own loop in a
 * thread; the test speaks HTTP/1.1 to it over loopback with signed
 * requests, and checks /v1/status returns to zero after each case. */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "auth.h"
#include "key.h"
#include "log.h"
#include "loop.h"
#include "../../relay/relay.h"
#include "relay_thread.h"

enum { K_NAS, K_LAPTOP, K_OTHER, K_STRANGER, NKEYS };

static struct key keys[NKEYS];
static struct relay_thread rt;
static int port;
static char err[512];

/* ---- the relay, on its own thread ------------------------------------ */

static void
setup(void)
{
	char text[2048], pub[NKEYS][KEY_PUBLIC_TEXT_MAX];
	int i;

	ck_assert_int_ge(sodium_init(), 0);
	log_init("relay-test", LOG_ERROR);
	for (i = 0; i < NKEYS; i++) {
		ck_assert_int_eq(key_generate(&keys[i], err, sizeof(err)), 0);
		key_public_text(keys[i].k_pub, pub[i]);
	}
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
	int i;

	relay_thread_stop(&rt);
	for (i = 0; i < NKEYS; i++)
		key_wipe(&keys[i]);
}

/* ---- a small blocking HTTP/1.1 client -------------------------------- */

struct hc {
	int    fd;
	int    status;
	char   head[4096];
	char   buf[1 << 16];
	size_t len;
	int    chunked;
	long   left;       /* bytes left in the current chunk, -1 between */
};

static struct hc *
hc_open(void)
{
	struct sockaddr_in sin;
	struct timeval tv = { 5, 0 };
	struct hc *h = calloc(1, sizeof(*h));
	int one = 1;

	ck_assert_ptr_nonnull(h);
	h->fd = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_ge(h->fd, 0);
	setsockopt(h->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(h->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(connect(h->fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	h->left = -1;
	return h;
}

static void
hc_close(struct hc *h)
{
	close(h->fd);
	free(h);
}

static void
hc_write(struct hc *h, const void *p, size_t n)
{
	ck_assert_int_eq(send(h->fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Sends a request signed by key k (or unsigned, k < 0).  body NULL with
 * chunked set starts a chunked upload. */
static struct hc *
hc_request(int k, const char *method, const char *path, const char *body, int chunked)
{
	struct auth_headers ah;
	struct hc *h = hc_open();
	char req[2048];
	int n;

	n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: relay\r\n", method, path);
	if (k >= 0) {
		ck_assert_int_eq(auth_sign(&keys[k], method, path, time(NULL), &ah,
		    err, sizeof(err)), 0);
		n += snprintf(req + n, sizeof(req) - (size_t)n, "%s: %s\r\n%s: %s\r\n"
		    "%s: %s\r\n%s: %s\r\n", AUTH_H_KEY, ah.ah_key, AUTH_H_TIMESTAMP,
		    ah.ah_timestamp, AUTH_H_NONCE, ah.ah_nonce, AUTH_H_SIGNATURE,
		    ah.ah_signature);
	}
	if (chunked)
		n += snprintf(req + n, sizeof(req) - (size_t)n,
		    "Transfer-Encoding: chunked\r\n\r\n");
	else
		n += snprintf(req + n, sizeof(req) - (size_t)n,
		    "Content-Length: %zu\r\n\r\n%s", body ? strlen(body) : 0,
		    body ? body : "");
	hc_write(h, req, (size_t)n);
	return h;
}

static void
hc_chunk(struct hc *h, const void *p, size_t n)
{
	char line[32];

	snprintf(line, sizeof(line), "%zx\r\n", n);
	hc_write(h, line, strlen(line));
	hc_write(h, p, n);
	hc_write(h, "\r\n", 2);
}

static void
hc_end(struct hc *h)
{
	hc_write(h, "0\r\n\r\n", 5);
}

/* 0, or -1 on EOF/timeout. */
static int
hc_fill(struct hc *h)
{
	ssize_t n;

	if (h->len == sizeof(h->buf))
		return 0;
	n = recv(h->fd, h->buf + h->len, sizeof(h->buf) - h->len, 0);
	if (n <= 0)
		return -1;
	h->len += (size_t)n;
	return 0;
}

static void
hc_consume(struct hc *h, size_t n)
{
	memmove(h->buf, h->buf + n, h->len - n);
	h->len -= n;
}

static int
hc_status(struct hc *h)
{
	char *end;
	size_t n;

	while ((end = memmem(h->buf, h->len, "\r\n\r\n", 4)) == NULL)
		ck_assert_msg(hc_fill(h) == 0, "no response head");
	n = (size_t)(end - h->buf) + 4;
	ck_assert_uint_lt(n, sizeof(h->head));
	memcpy(h->head, h->buf, n);
	h->head[n] = '\0';
	hc_consume(h, n);
	h->status = atoi(h->head + 9);
	h->chunked = strcasestr(h->head, "transfer-encoding: chunked") != NULL;
	return h->status;
}

static const char *
hc_header(struct hc *h, const char *name, char *out, size_t outlen)
{
	char *p = strcasestr(h->head, name);
	size_t n;

	if (p == NULL)
		return NULL;
	p += strlen(name) + 1;
	while (*p == ' ')
		p++;
	n = strcspn(p, "\r\n");
	snprintf(out, outlen, "%.*s", (int)n, p);
	return out;
}

/* Reads up to max body bytes into out: the count, 0 at a clean end of a
 * chunked body, -1 when the body is cut (EOF inside it). */
static long
hc_read(struct hc *h, char *out, size_t max)
{
	char *eol;
	size_t n;

	for (;;) {
		if (h->left > 0) {
			while (h->len == 0)
				if (hc_fill(h) == -1)
					return -1;
			n = h->len < (size_t)h->left ? h->len : (size_t)h->left;
			n = n < max ? n : max;
			memcpy(out, h->buf, n);
			hc_consume(h, n);
			h->left -= (long)n;
			return (long)n;
		}
		if (h->left == 0) {   /* the CRLF after a chunk */
			while (h->len < 2)
				if (hc_fill(h) == -1)
					return -1;
			hc_consume(h, 2);
			h->left = -1;
		}
		while ((eol = memmem(h->buf, h->len, "\r\n", 2)) == NULL)
			if (hc_fill(h) == -1)
				return -1;
		h->left = strtol(h->buf, NULL, 16);
		hc_consume(h, (size_t)(eol - h->buf) + 2);
		if (h->left == 0) {
			while (h->len < 2)
				if (hc_fill(h) == -1)
					return -1;
			hc_consume(h, 2);
			return 0;
		}
	}
}

/* A whole small body (Content-Length or chunked) as a string. */
static const char *
hc_body(struct hc *h, char *out, size_t outlen)
{
	char cl[32];
	size_t want, got = 0;
	long n;

	if (!h->chunked) {
		want = hc_header(h, "Content-Length:", cl, sizeof(cl)) ? (size_t)atol(cl) : 0;
		ck_assert_uint_lt(want, outlen);
		while (h->len < want)
			ck_assert_msg(hc_fill(h) == 0, "short body");
		memcpy(out, h->buf, want);
		hc_consume(h, want);
		out[want] = '\0';
		return out;
	}
	while ((n = hc_read(h, out + got, outlen - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	return out;
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
	char path[128], body[512], *p;

	snprintf(path, sizeof(path), "/v1/s/nas/listen/%s", port_name);
	l = hc_request(K_NAS, "POST", path, NULL, 0);
	usleep(50000);
	snprintf(path, sizeof(path), "/v1/s/nas/connect/%s", port_name);
	c = hc_request(client, "POST", path, NULL, 0);
	ck_assert_int_eq(hc_status(l), 200);
	hc_body(l, body, sizeof(body));
	p = strstr(body, "\"id\":\"");
	ck_assert_msg(p != NULL, "%s", body);
	snprintf(id, RELAY_ID_TEXT + 1, "%s", p + 6);
	ck_assert(strstr(body, "\"client\":\"") != NULL);
	ck_assert(strstr(body, "\"client_key\":\"ed25519:") != NULL);
	hc_close(l);
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
	size_t i, n, got_a, got_c;
	long r;

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
		for (got_a = i; got_a < i + n; got_a += (size_t)r) {
			r = hc_read(a, got + got_a, i + n - got_a);
			ck_assert_int_gt(r, 0);
		}
		ck_assert(memcmp(got + i, up + i, n) == 0);
		for (got_c = i; got_c < i + n; got_c += (size_t)r) {
			r = hc_read(c, got + got_c, i + n - got_c);
			ck_assert_int_gt(r, 0);
		}
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
