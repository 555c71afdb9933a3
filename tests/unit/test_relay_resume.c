/* Resuming tunnels at the relay, as the proxies see it (docs/protocol.md,
 * "Resuming tunnels"): generations (stale, newer, equal), a break cutting
 * every stream and emptying the pipes, bytes after a resume reaching the
 * new reader, Postern-Eof for a finished direction, download segments
 * bounded by bytes and by time, upload segments leaving their slot,
 * peer_timeout (and not while the relay holds the upload back),
 * resume_grace ending a tunnel nobody came back to, a tunnel ending
 * "done" once both sides finished, receive before accept, and "newest
 * registration wins" for listens.  The relay runs on its own loop in a
 * thread; the test speaks raw HTTP/1.1 to it over loopback. */
#include <check.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "auth.h"
#include "key.h"
#include "log.h"
#include "loop.h"
#include "../../relay/relay.h"
#include "relay_thread.h"
#include "relay_http.h"

enum { K_NAS, K_LAPTOP, NKEYS };

static struct key keys[NKEYS];
static struct relay_thread rt;
static int port;

/* ---- the relay, on its own thread ------------------------------------ */

static void
start(const char *settings)
{
	char text[2048], pub[NKEYS][KEY_PUBLIC_TEXT_MAX];

	log_init("relay-test", LOG_ERROR);
	hc_keys_make(keys, pub, NKEYS);
	snprintf(text, sizeof(text),
	    "[relay]\nlisten = 127.0.0.1:0\nstatus = on\nlisten_timeout = 2\n"
	    "accept_timeout = 2\npipe_buffer = 4k\n%s"
	    "[server nas]\nkey = %s\nports = ssh\n"
	    "[client laptop]\nkey = %s\nallow = nas/*\n",
	    settings, pub[K_NAS], pub[K_LAPTOP]);
	relay_thread_start(&rt, text);
	port = rt.rt_port;
}

/* Most cases: short grace, short segments, no peer_timeout. */
static void
setup(void)
{
	start("resume_grace = 1\npeer_timeout = 0\nsegment_bytes = 1k\n"
	    "segment_time = 0.3\npoll_time = 0.6\n");
}

/* peer_timeout cases: a short one, a grace that does not get in the way. */
static void
setup_peer(void)
{
	start("resume_grace = 10\npeer_timeout = 0.5\n");
}

static void
teardown(void)
{
	relay_thread_stop(&rt);
	hc_keys_wipe(keys, NKEYS);
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- requests --------------------------------------------------------- */

/* A request signed by key k.  extra: more header lines ("Name: v\r\n"),
 * or NULL.  chunked starts a chunked upload; otherwise the body is
 * empty. */
static struct hc *
hc_req(int k, const char *path, const char *extra, int chunked)
{
	return hc_send(port, &keys[k], "POST", path, extra, NULL, chunked);
}

/* The same for a call on connection id: "accept", "upstream"... with
 * generation gen (0: no header) and Postern-Segment seg (0: none). */
static struct hc *
hc_stream(int k, const char *call, const char *id, unsigned gen, unsigned seg)
{
	char path[128], extra[256];
	int n = 0;

	snprintf(path, sizeof(path), "/v1/s/nas/%s/%s", call, id);
	extra[0] = '\0';
	if (gen != 0)
		n += snprintf(extra + n, sizeof(extra) - (size_t)n,
		    "Postern-Generation: %u\r\n", gen);
	if (seg != 0)
		snprintf(extra + n, sizeof(extra) - (size_t)n,
		    "Postern-Segment: %u\r\n", seg);
	return hc_req(k, path, extra, strcmp(call, "upstream") == 0 ||
	    strcmp(call, "downstream") == 0);
}

/* The response's Postern-Generation, 0 when absent. */
static int
hc_gen(struct hc *h)
{
	char v[32];

	return hc_header(h, "Postern-Generation:", v, sizeof(v)) ? atoi(v) : 0;
}

enum hc_end { HC_OPEN, HC_EOF, HC_RESET, HC_FAILED };

/* How the relay ended this connection within 3 s, whatever came
 * before: HC_OPEN when it did not. */
static enum hc_end
hc_ended(struct hc *h)
{
	double t0 = now_s();
	char b[4096];
	ssize_t n;

	while (now_s() - t0 < 3) {
		n = recv(h->fd, b, sizeof(b), 0);
		if (n == 0)
			return HC_EOF;
		if (n < 0 && errno == ECONNRESET)
			return HC_RESET;
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
		    errno != EINTR)
			return HC_FAILED;
	}
	return HC_OPEN;
}

/* The relay closed this connection (cut its stream): EOF or a reset. */
static int
hc_cut(struct hc *h)
{
	return hc_ended(h) != HC_OPEN;
}

/* Cut with a TCP reset (not a FIN, which an HTTP/1.0 middlebox would
 * pass on as a clean end). */
static int
hc_reset(struct hc *h)
{
	return hc_ended(h) == HC_RESET;
}

/* Still open: nothing arrives and no EOF for ms. */
static int
hc_quiet(struct hc *h, int ms)
{
	struct pollfd pfd = { h->fd, POLLIN, 0 };

	return poll(&pfd, 1, ms) == 0;
}

static int
status_get(char *body, size_t len)
{
	struct hc *h = hc_open(port);
	int st;

	hc_write(h, "GET /v1/status HTTP/1.1\r\nHost: r\r\n\r\n", 36);
	st = hc_status(h);
	hc_body(h, body, len);
	hc_close(h);
	return st;
}

/* A number from /v1/status. */
static long
status_field(const char *name)
{
	char body[512], key[64], *p;

	ck_assert_int_eq(status_get(body, sizeof(body)), 200);
	snprintf(key, sizeof(key), "\"%s\":", name);
	p = strstr(body, key);
	ck_assert_msg(p != NULL, "%s", body);
	return atol(p + strlen(key));
}

/* Waits (bounded) for the relay to count want tunnels; seconds taken. */
static double
wait_tunnels(long want, double within)
{
	double t0 = now_s();

	while (status_field("tunnels") != want) {
		ck_assert_msg(now_s() - t0 < within, "still %ld tunnels after %.1f s "
		    "(want %ld)", status_field("tunnels"), within, want);
		usleep(20000);
	}
	return now_s() - t0;
}

/* Waits (bounded) for the relay to hold want HTTP connections, counting
 * the one asking. */
static void
wait_connections(long want)
{
	double t0 = now_s();

	while (status_field("connections") != want) {
		ck_assert_msg(now_s() - t0 < 3, "the relay holds %ld connections, not "
		    "%ld", status_field("connections"), want);
		usleep(20000);
	}
}

/* Nothing left: no tunnel, no waiting request, no buffered byte, and no
 * HTTP connection but the one asking (cut streams are closed, not left
 * half-open). */
static void
assert_status_zero(void)
{
	char body[512], want[] = "\"tunnels\":0,\"pending_connects\":0,\"listens\":0,"
	    "\"connections\":1,";
	int i;

	for (i = 0; i < 200; i++) {
		ck_assert_int_eq(status_get(body, sizeof(body)), 200);
		if (strstr(body, want) != NULL && strstr(body, "\"buffered_bytes\":0}"))
			return;
		usleep(20000);
	}
	ck_abort_msg("status did not return to zero: %s", body);
}

/* A JSON error body's code, checked. */
static void
assert_code(struct hc *h, const char *code)
{
	char body[1024], want[128];

	hc_body(h, body, sizeof(body));
	snprintf(want, sizeof(want), "\"code\":\"%s\"", code);
	ck_assert_msg(strstr(body, want) != NULL, "want %s, got %s", code, body);
}

/* One call's status (empty body), its error code checked when code. */
static int
call(int k, const char *what, const char *id, unsigned gen, const char *code,
     int *gen_out)
{
	struct hc *h = hc_stream(k, what, id, gen, 0);
	int st;

	if (strcmp(what, "upstream") == 0 || strcmp(what, "downstream") == 0)
		hc_end(h);
	st = hc_status(h);
	if (gen_out != NULL)
		*gen_out = hc_gen(h);
	if (code != NULL)
		assert_code(h, code);
	hc_close(h);
	return st;
}

/* A tunnel up to its four streams: connect (c), accept (a), downstream
 * (d), upstream (u), all in generation 1. */
struct tun {
	char       id[RELAY_ID_TEXT + 1];
	struct hc *c, *a, *d, *u;
};

/* connect_extra: more headers on the connect, or NULL. */
static void
tun_pair_with(struct tun *tn, const char *connect_extra)
{
	struct hc *l;
	char body[512];

	l = hc_req(K_NAS, "/v1/s/nas/listen/ssh", NULL, 0);
	usleep(50000);
	tn->c = hc_req(K_LAPTOP, "/v1/s/nas/connect/ssh", connect_extra, 0);
	hc_listen_id(l, body, sizeof(body), tn->id, sizeof(tn->id));
}

static void
tun_pair(struct tun *tn)
{
	tun_pair_with(tn, NULL);
}

static void
tun_open(struct tun *tn)
{
	tun_pair(tn);
	tn->a = hc_stream(K_NAS, "accept", tn->id, 0, 0);
	tn->d = hc_stream(K_NAS, "downstream", tn->id, 0, 0);
	ck_assert_int_eq(hc_status(tn->c), 200);
	ck_assert_int_eq(hc_gen(tn->c), 1);
	ck_assert_int_eq(hc_status(tn->a), 200);
	ck_assert_int_eq(hc_gen(tn->a), 1);
	tn->u = hc_stream(K_LAPTOP, "upstream", tn->id, 0, 0);
	/* Both uploads are attached once a byte went through each. */
	hc_chunk(tn->u, "u", 1);
	hc_chunk(tn->d, "d", 1);
	{
		char b[1];

		hc_read_n(tn->a, b, 1);
		hc_read_n(tn->c, b, 1);
	}
}

static void
tun_close(struct tun *tn)
{
	struct hc **hs[] = { &tn->c, &tn->a, &tn->d, &tn->u };
	size_t i;

	for (i = 0; i < 4; i++)
		if (*hs[i] != NULL) {
			hc_close(*hs[i]);
			*hs[i] = NULL;
		}
}

/* ---- generations -------------------------------------------------------- */

START_TEST(generations)
{
	struct tun tn = { 0 };
	struct hc *a2, *r2, *u2;
	char b[64];
	int gen;

	tun_open(&tn);
	/* Equal generation, slot taken. */
	ck_assert_int_eq(call(K_NAS, "accept", tn.id, 1, "already_used", &gen), 409);
	ck_assert_int_eq(gen, 1);
	/* No header means generation 1. */
	ck_assert_int_eq(call(K_NAS, "accept", tn.id, 0, NULL, NULL), 409);
	/* Malformed generations. */
	{
		struct hc *h;
		char path[128];

		snprintf(path, sizeof(path), "/v1/s/nas/accept/%s", tn.id);
		h = hc_req(K_NAS, path, "Postern-Generation: 0\r\n", 0);
		ck_assert_int_eq(hc_status(h), 400);
		assert_code(h, "bad_request");
		hc_close(h);
		h = hc_req(K_NAS, path, "Postern-Generation: 2x\r\n", 0);
		ck_assert_int_eq(hc_status(h), 400);
		hc_close(h);
		h = hc_req(K_NAS, path, "Postern-Generation: 99999999999\r\n", 0);
		ck_assert_int_eq(hc_status(h), 400);
		hc_close(h);
	}
	/* A newer generation from the client: every stream of 1 is cut. */
	u2 = hc_stream(K_LAPTOP, "upstream", tn.id, 2, 0);
	ck_assert(hc_reset(tn.c));
	ck_assert(hc_reset(tn.a));
	ck_assert(hc_cut(tn.d));
	ck_assert(hc_cut(tn.u));
	/* The relay closed its ends of the four (reset, so that a middlebox
	 * in between does not take the cut for a clean end): left are u2
	 * and the status request. */
	wait_connections(2);
	tun_close(&tn);
	/* Older generation: 409 naming the current one. */
	ck_assert_int_eq(call(K_NAS, "accept", tn.id, 1, "stale_generation", &gen), 409);
	ck_assert_int_eq(gen, 2);
	ck_assert_int_eq(call(K_NAS, "downstream", tn.id, 0, "stale_generation", &gen),
	    409);
	ck_assert_int_eq(gen, 2);
	/* Equal: attached, answered in generation 2. */
	a2 = hc_stream(K_NAS, "accept", tn.id, 2, 0);
	ck_assert_int_eq(hc_status(a2), 200);
	ck_assert_int_eq(hc_gen(a2), 2);
	r2 = hc_stream(K_LAPTOP, "receive", tn.id, 2, 0);
	ck_assert_int_eq(hc_status(r2), 200);
	ck_assert_int_eq(hc_gen(r2), 2);
	ck_assert(hc_header(r2, "Postern-Connection:", b, sizeof(b)) == NULL);
	ck_assert_int_eq(call(K_LAPTOP, "receive", tn.id, 2, "already_used", NULL), 409);
	hc_chunk(u2, "after", 5);
	hc_read_n(a2, b, 5);
	ck_assert(memcmp(b, "after", 5) == 0);
	/* An upload's 200 carries the generation too. */
	hc_end(u2);
	ck_assert_int_eq(hc_status(u2), 200);
	ck_assert_int_eq(hc_gen(u2), 2);
	hc_close(u2);
	hc_close(a2);
	hc_close(r2);
	assert_status_zero();
}
END_TEST

/* A break (here: a stream failing at the relay) cuts the other streams
 * and drops what the pipes held; the bytes written after the resume, and
 * only those, reach the new reader. */
START_TEST(break_empties_pipes)
{
	struct tun tn = { 0 };
	struct hc *d2, *d3, *r3, *a3, *u3;
	char b[4096];
	int gen;

	tun_open(&tn);
	hc_close(tn.c);   /* the client's download fails: a break */
	tn.c = NULL;
	ck_assert(hc_cut(tn.a));
	ck_assert(hc_cut(tn.d));
	ck_assert(hc_cut(tn.u));
	tun_close(&tn);
	ck_assert_int_eq(call(K_LAPTOP, "upstream", tn.id, 1, "stale_generation", &gen),
	    409);
	ck_assert_int_eq(gen, 2);
	/* The server re-attaches its upload; with no client download its
	 * bytes wait in the relay. */
	d2 = hc_stream(K_NAS, "downstream", tn.id, 2, 0);
	hc_chunk(d2, "old bytes", 9);
	{
		double t0 = now_s();

		while (status_field("buffered_bytes") != 9)
			ck_assert_msg(now_s() - t0 < 3, "the 9 bytes never showed in "
			    "buffered_bytes");
	}
	/* The client saw a break too, and comes back in generation 3: the
	 * server's generation-2 upload is cut and its bytes dropped. */
	r3 = hc_stream(K_LAPTOP, "receive", tn.id, 3, 0);
	ck_assert_int_eq(hc_status(r3), 200);
	ck_assert_int_eq(hc_gen(r3), 3);
	ck_assert(hc_cut(d2));
	hc_close(d2);
	ck_assert_int_eq(status_field("buffered_bytes"), 0);
	d3 = hc_stream(K_NAS, "downstream", tn.id, 3, 0);
	a3 = hc_stream(K_NAS, "accept", tn.id, 3, 0);
	ck_assert_int_eq(hc_status(a3), 200);
	u3 = hc_stream(K_LAPTOP, "upstream", tn.id, 3, 0);
	hc_chunk(d3, "new", 3);
	hc_read_n(r3, b, 3);
	ck_assert(memcmp(b, "new", 3) == 0);
	hc_chunk(u3, "up", 2);
	hc_read_n(a3, b, 2);
	ck_assert(memcmp(b, "up", 2) == 0);
	/* Both sides finish: done, long before resume_grace. */
	hc_end(u3);
	hc_end(d3);
	ck_assert_int_eq(hc_status(u3), 200);
	ck_assert_int_eq(hc_status(d3), 200);
	ck_assert_int_eq(hc_drain(a3, b, sizeof(b)), 0);
	ck_assert_int_eq(hc_drain(r3, b, sizeof(b)), 0);
	ck_assert(wait_tunnels(0, 2) < 0.5);
	hc_close(u3);
	hc_close(d3);
	hc_close(a3);
	hc_close(r3);
	assert_status_zero();
}
END_TEST

START_TEST(receive_before_accept)
{
	struct tun tn = { 0 };

	tun_pair(&tn);
	ck_assert_int_eq(call(K_LAPTOP, "receive", tn.id, 0, "not_accepted", NULL), 409);
	/* The server's key may not receive. */
	ck_assert_int_eq(call(K_NAS, "receive", tn.id, 0, "forbidden", NULL), 403);
	/* Not a failure: the tunnel opens as usual. */
	tn.a = hc_stream(K_NAS, "accept", tn.id, 0, 0);
	ck_assert_int_eq(hc_status(tn.c), 200);
	ck_assert_int_eq(hc_status(tn.a), 200);
	tun_close(&tn);
	assert_status_zero();
}
END_TEST

/* ---- finishing ------------------------------------------------------------ */

/* The server finished (its last upload ended cleanly); the client's
 * download failed (it may have lost the end), so the client re-attaches
 * in generation 2.  The pipe is emptied but the direction keeps its end:
 * the client's download is answered Postern-Eof at once, and the tunnel
 * ends "done" when the client finishes. */
START_TEST(eof_answer)
{
	struct tun tn = { 0 };
	struct hc *r, *a2, *u2;
	char b[256], v[16];
	int gen;

	tun_open(&tn);
	hc_chunk(tn.d, "bye", 3);
	hc_end(tn.d);
	ck_assert_int_eq(hc_status(tn.d), 200);
	ck_assert_int_eq(hc_gen(tn.d), 1);
	hc_close(tn.c);
	tn.c = NULL;
	r = hc_stream(K_LAPTOP, "receive", tn.id, 2, 0);
	ck_assert_int_eq(hc_status(r), 200);
	ck_assert_str_eq(hc_header(r, "Postern-Eof:", v, sizeof(v)), "1");
	ck_assert_int_eq(hc_gen(r), 2);
	ck_assert_str_eq(hc_body(r, b, sizeof(b)), "");
	hc_close(r);
	ck_assert(hc_cut(tn.a));
	ck_assert(hc_cut(tn.u));
	tun_close(&tn);
	ck_assert_int_eq(call(K_NAS, "accept", tn.id, 1, "stale_generation", &gen), 409);
	ck_assert_int_eq(gen, 2);
	/* In segments too. */
	r = hc_stream(K_LAPTOP, "receive", tn.id, 2, 100);
	ck_assert_int_eq(hc_status(r), 200);
	ck_assert(hc_header(r, "Postern-Eof:", v, sizeof(v)) != NULL);
	hc_close(r);
	/* The server's download and the client's last upload. */
	a2 = hc_stream(K_NAS, "accept", tn.id, 2, 0);
	ck_assert_int_eq(hc_status(a2), 200);
	ck_assert(hc_header(a2, "Postern-Eof:", v, sizeof(v)) == NULL);
	u2 = hc_stream(K_LAPTOP, "upstream", tn.id, 2, 0);
	hc_chunk(u2, "last", 4);
	hc_end(u2);
	ck_assert_int_eq(hc_status(u2), 200);
	ck_assert_int_eq(hc_drain(a2, b, sizeof(b)), 4);
	ck_assert(wait_tunnels(0, 2) < 0.5);
	ck_assert_int_eq(call(K_NAS, "accept", tn.id, 2, "unknown_connection", NULL), 404);
	hc_close(u2);
	hc_close(a2);
	assert_status_zero();
}
END_TEST

/* Both sides finished and got everything: "done" at once. */
START_TEST(done_when_both_finished)
{
	struct tun tn = { 0 };
	char b[256];

	tun_open(&tn);
	hc_chunk(tn.u, "ping", 4);
	hc_end(tn.u);
	ck_assert_int_eq(hc_status(tn.u), 200);
	/* Only one side finished: the tunnel stays. */
	ck_assert_int_eq(hc_read(tn.a, b, 4), 4);
	usleep(200000);
	ck_assert_int_eq(status_field("tunnels"), 1);
	hc_chunk(tn.d, "pong", 4);
	hc_end(tn.d);
	ck_assert_int_eq(hc_status(tn.d), 200);
	ck_assert_int_eq(hc_drain(tn.a, b, sizeof(b)), 0);
	ck_assert_int_eq(hc_drain(tn.c, b, sizeof(b)), 4);
	ck_assert(wait_tunnels(0, 2) < 0.5);
	tun_close(&tn);
	assert_status_zero();
}
END_TEST

/* ---- segments -------------------------------------------------------------- */

/* Reads a download segment to its end; the bytes, and the seconds from
 * its first byte (or from the start when none came) to its end. */
static long
seg_read(struct hc *h, char *out, size_t max, double *secs)
{
	double t0 = now_s(), first = 0;
	size_t got = 0;
	long n;

	ck_assert_int_eq(hc_status(h), 200);
	while ((n = hc_read(h, out + got, max - got)) > 0) {
		if (got == 0)
			first = now_s();
		got += (size_t)n;
		ck_assert_uint_lt(got, max);
	}
	ck_assert_msg(n == 0, "a segment was cut instead of ending");
	*secs = now_s() - (got > 0 ? first : t0);
	return (long)got;
}

/* A download segment ends cleanly after its byte count, capped at
 * segment_bytes (1k here), or segment_time (0.3 s) after its first byte,
 * or poll_time (0.6 s) without a byte; the next one goes on where it
 * stopped, in the same generation. */
START_TEST(download_segments)
{
	struct tun tn = { 0 };
	struct hc *r;
	static char data[3000], got[4096];
	size_t off = 0, i;
	double secs;
	long n;

	for (i = 0; i < sizeof(data); i++)
		data[i] = (char)('a' + i % 26);
	/* The connect is the client's first download segment. */
	tun_pair_with(&tn, "Postern-Segment: 5\r\n");
	tn.a = hc_stream(K_NAS, "accept", tn.id, 0, 0);
	tn.d = hc_stream(K_NAS, "downstream", tn.id, 0, 0);
	ck_assert_int_eq(hc_status(tn.a), 200);
	hc_chunk(tn.d, data, sizeof(data));
	n = seg_read(tn.c, got, sizeof(got), &secs);
	ck_assert_int_eq(n, 5);
	ck_assert(memcmp(got, data, 5) == 0);
	off = 5;
	{
		static const unsigned asks[] = { 100000, 10, 100000 };
		static const long gets[] = { 1024, 10, 1024 };

		for (i = 0; i < 3; i++) {
			r = hc_stream(K_LAPTOP, "receive", tn.id, 1, asks[i]);
			n = seg_read(r, got, sizeof(got), &secs);
			ck_assert_int_eq(n, gets[i]);
			ck_assert(memcmp(got, data + off, (size_t)n) == 0);
			ck_assert_msg(secs < 0.25, "a full segment took %.2f s", secs);
			off += (size_t)n;
			hc_close(r);
		}
	}
	/* What is left (937 bytes) comes at once, then segment_time. */
	r = hc_stream(K_LAPTOP, "receive", tn.id, 1, 2000);
	n = seg_read(r, got, sizeof(got), &secs);
	ck_assert_int_eq(n, (long)(sizeof(data) - off));
	ck_assert(memcmp(got, data + off, (size_t)n) == 0);
	ck_assert_msg(secs > 0.25 && secs < 1.5, "segment_time 0.3 s took %.2f s", secs);
	hc_close(r);
	/* Nothing: poll_time. */
	r = hc_stream(K_LAPTOP, "receive", tn.id, 1, 100);
	n = seg_read(r, got, sizeof(got), &secs);
	ck_assert_int_eq(n, 0);
	ck_assert_msg(secs > 0.5 && secs < 2, "poll_time 0.6 s took %.2f s", secs);
	hc_close(r);
	/* A byte arriving while the segment waits: it ends segment_time
	 * after that byte. */
	r = hc_stream(K_LAPTOP, "receive", tn.id, 1, 100);
	usleep(100000);
	hc_chunk(tn.d, "late", 4);
	n = seg_read(r, got, sizeof(got), &secs);
	ck_assert_int_eq(n, 4);
	ck_assert_msg(secs > 0.25 && secs < 1.5, "segment_time 0.3 s took %.2f s", secs);
	hc_close(r);
	/* Segments are no break. */
	ck_assert_int_eq(call(K_NAS, "accept", tn.id, 1, "already_used", NULL), 409);
	tun_close(&tn);
	assert_status_zero();
}
END_TEST

/* An upload segment's clean end leaves the slot to the next segment and
 * does not end the direction; a last body (no Postern-Segment) does. */
START_TEST(upload_segments)
{
	struct tun tn = { 0 };
	struct hc *u;
	char b[64];
	int i;

	tun_pair(&tn);
	tn.a = hc_stream(K_NAS, "accept", tn.id, 0, 0);
	tn.d = hc_stream(K_NAS, "downstream", tn.id, 0, 0);
	ck_assert_int_eq(hc_status(tn.c), 200);
	ck_assert_int_eq(hc_status(tn.a), 200);
	for (i = 0; i < 3; i++) {
		u = hc_stream(K_LAPTOP, "upstream", tn.id, 1, 1);
		snprintf(b, sizeof(b), "seg%d", i);
		hc_chunk(u, b, 4);
		hc_end(u);
		ck_assert_int_eq(hc_status(u), 200);
		ck_assert_int_eq(hc_gen(u), 1);
		hc_close(u);
		memset(b, 0, sizeof(b));
		hc_read_n(tn.a, b, 4);
		snprintf(b + 8, 8, "seg%d", i);
		ck_assert(memcmp(b, b + 8, 4) == 0);
	}
	/* The accept did not end: nothing more comes for now. */
	ck_assert(hc_quiet(tn.a, 300));
	u = hc_stream(K_LAPTOP, "upstream", tn.id, 1, 0);
	hc_chunk(u, "fin", 3);
	hc_end(u);
	ck_assert_int_eq(hc_status(u), 200);
	hc_close(u);
	ck_assert_int_eq(hc_drain(tn.a, b, sizeof(b)), 3);
	/* The client finished: a further upload of it is taken and dropped. */
	u = hc_stream(K_LAPTOP, "upstream", tn.id, 1, 0);
	hc_chunk(u, "again", 5);
	hc_end(u);
	ck_assert_int_eq(hc_status(u), 200);
	hc_close(u);
	hc_chunk(tn.d, "x", 1);
	hc_end(tn.d);
	ck_assert_int_eq(hc_status(tn.d), 200);
	ck_assert_int_eq(hc_drain(tn.c, b, sizeof(b)), 1);
	wait_tunnels(0, 2);
	tun_close(&tn);
	assert_status_zero();
}
END_TEST

/* ---- vanished peers --------------------------------------------------------- */

/* A side that stays away for resume_grace (1 s) ends the tunnel; one that
 * comes back within it keeps it. */
START_TEST(resume_grace_ends)
{
	struct tun tn = { 0 };
	struct hc *a2, *d2, *r2, *u2;
	char b[64];
	double t0, dt;

	tun_open(&tn);
	hc_close(tn.c);
	tn.c = NULL;
	ck_assert(hc_cut(tn.a));
	tun_close(&tn);
	/* Back within the grace: the tunnel goes on. */
	usleep(400000);
	r2 = hc_stream(K_LAPTOP, "receive", tn.id, 2, 0);
	ck_assert_int_eq(hc_status(r2), 200);
	u2 = hc_stream(K_LAPTOP, "upstream", tn.id, 2, 0);
	a2 = hc_stream(K_NAS, "accept", tn.id, 2, 0);
	ck_assert_int_eq(hc_status(a2), 200);
	d2 = hc_stream(K_NAS, "downstream", tn.id, 2, 0);
	usleep(1200000);
	ck_assert_int_eq(status_field("tunnels"), 1);
	hc_chunk(u2, "hi", 2);
	hc_read_n(a2, b, 2);
	/* Now the client goes for good (its download fails): the server
	 * comes back, the client does not. */
	hc_close(r2);
	ck_assert(hc_cut(a2));
	ck_assert(hc_cut(u2));
	ck_assert(hc_cut(d2));
	t0 = now_s();
	hc_close(a2);
	hc_close(d2);
	hc_close(u2);
	a2 = hc_stream(K_NAS, "accept", tn.id, 3, 0);
	ck_assert_int_eq(hc_status(a2), 200);
	d2 = hc_stream(K_NAS, "downstream", tn.id, 3, 0);
	wait_tunnels(0, 4);
	dt = now_s() - t0;
	ck_assert_msg(dt > 0.8 && dt < 2.5, "resume_grace 1 s ended it after %.2f s", dt);
	ck_assert(hc_cut(a2));
	hc_close(a2);
	hc_close(d2);
	ck_assert_int_eq(call(K_LAPTOP, "receive", tn.id, 3, "unknown_connection", NULL),
	    404);
	assert_status_zero();
}
END_TEST

/* An upload that brings nothing for peer_timeout (0.5 s) is a failed
 * stream: a break, not the end of the tunnel. */
START_TEST(peer_timeout_breaks)
{
	struct tun tn = { 0 };
	struct hc *a2;
	double t0 = 0, dt;
	int gen;

	tun_open(&tn);
	t0 = now_s();
	ck_assert(hc_cut(tn.a));
	dt = now_s() - t0;
	ck_assert_msg(dt > 0.3 && dt < 2, "peer_timeout 0.5 s cut after %.2f s", dt);
	ck_assert(hc_cut(tn.u));
	ck_assert(hc_cut(tn.c));
	tun_close(&tn);
	ck_assert_int_eq(call(K_NAS, "accept", tn.id, 1, "stale_generation", &gen), 409);
	ck_assert_int_eq(gen, 2);
	a2 = hc_stream(K_NAS, "accept", tn.id, 2, 0);
	ck_assert_int_eq(hc_status(a2), 200);
	hc_close(a2);
	/* Nobody keeps it up: it ends after resume_grace (10 s here); the
	 * test does not wait for that. */
}
END_TEST

/* While the relay holds an upload back (its pipe is full because nobody
 * reads), its silence is the relay's doing: no peer_timeout. */
START_TEST(peer_timeout_not_while_held)
{
	struct tun tn = { 0 };
	static char data[20000], got[20000];
	struct hc *a2;
	double t0;
	size_t i;
	int gen;

	for (i = 0; i < sizeof(data); i++)
		data[i] = (char)(i * 7);
	tun_pair(&tn);
	/* The server's first download is a 1-byte segment: after it, nobody
	 * reads the upstream pipe. */
	tn.a = hc_stream(K_NAS, "accept", tn.id, 0, 1);
	tn.d = hc_stream(K_NAS, "downstream", tn.id, 0, 0);
	ck_assert_int_eq(hc_status(tn.c), 200);
	tn.u = hc_stream(K_LAPTOP, "upstream", tn.id, 0, 0);
	hc_chunk(tn.u, data, sizeof(data));
	ck_assert_int_eq(hc_status(tn.a), 200);
	ck_assert_int_eq(hc_drain(tn.a, got, sizeof(got)), 1);
	/* 3 × peer_timeout; the downstream keeps talking meanwhile. */
	for (t0 = now_s(); now_s() - t0 < 1.5; usleep(100000))
		hc_chunk(tn.d, "p", 1);
	a2 = hc_stream(K_NAS, "accept", tn.id, 1, 0);
	ck_assert_int_eq(hc_status(a2), 200);
	ck_assert_int_eq(hc_gen(a2), 1);
	hc_read_n(a2, got + 1, sizeof(data) - 1);
	ck_assert(memcmp(got, data, sizeof(data)) == 0);
	ck_assert_int_eq(call(K_NAS, "accept", tn.id, 1, "already_used", &gen), 409);
	ck_assert_int_eq(gen, 1);
	hc_close(a2);
	tun_close(&tn);
}
END_TEST

/* ---- newest registration wins ------------------------------------------------ */

START_TEST(replaced_listens)
{
	const char *path = "/v1/s/nas/listen/ssh";
	struct hc *one, *two, *two_b, *anon, *three, *h;
	char body[512];

	one = hc_req(K_NAS, path, "Postern-Instance: one\r\n", 0);
	usleep(100000);
	ck_assert_int_eq(status_field("listens"), 1);
	two = hc_req(K_NAS, path, "Postern-Instance: two\r\n", 0);
	ck_assert_int_eq(hc_status(one), 409);
	hc_body(one, body, sizeof(body));
	ck_assert_msg(strstr(body, "\"code\":\"replaced\"") != NULL, "%s", body);
	ck_assert_msg(strstr(body, "another postern-server with the same key registered "
	    "server 'nas'; this one was replaced") != NULL, "%s", body);
	hc_close(one);
	/* The old instance comes back (SIGSTOP, SIGCONT): still replaced. */
	h = hc_req(K_NAS, path, "Postern-Instance: one\r\n", 0);
	ck_assert_int_eq(hc_status(h), 409);
	assert_code(h, "replaced");
	hc_close(h);
	h = hc_req(K_NAS, path, "Postern-Instance: not a token\r\n", 0);
	ck_assert_int_eq(hc_status(h), 400);
	assert_code(h, "bad_request");
	hc_close(h);
	/* Anonymous listens (older proxies) and more of the same instance. */
	anon = hc_req(K_NAS, path, NULL, 0);
	two_b = hc_req(K_NAS, path, "Postern-Instance: two\r\n", 0);
	usleep(100000);
	ck_assert_int_eq(status_field("listens"), 3);
	three = hc_req(K_NAS, path, "Postern-Instance: three\r\n", 0);
	ck_assert_int_eq(hc_status(two), 409);
	assert_code(two, "replaced");
	ck_assert_int_eq(hc_status(two_b), 409);
	assert_code(two_b, "replaced");
	usleep(100000);
	ck_assert_int_eq(status_field("listens"), 2);
	hc_close(two);
	hc_close(two_b);
	/* They time out as usual (listen_timeout 2 s). */
	ck_assert_int_eq(hc_status(anon), 204);
	ck_assert_int_eq(hc_status(three), 204);
	hc_close(anon);
	hc_close(three);
	assert_status_zero();
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("relay_resume");
	TCase *tc = tcase_create("resume"), *tp = tcase_create("peer");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, generations);
	tcase_add_test(tc, break_empties_pipes);
	tcase_add_test(tc, receive_before_accept);
	tcase_add_test(tc, eof_answer);
	tcase_add_test(tc, done_when_both_finished);
	tcase_add_test(tc, download_segments);
	tcase_add_test(tc, upload_segments);
	tcase_add_test(tc, resume_grace_ends);
	tcase_add_test(tc, replaced_listens);
	suite_add_tcase(s, tc);
	tcase_add_checked_fixture(tp, setup_peer, teardown);
	tcase_set_timeout(tp, 30);
	tcase_add_test(tp, peer_timeout_breaks);
	tcase_add_test(tp, peer_timeout_not_while_held);
	suite_add_tcase(s, tp);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
