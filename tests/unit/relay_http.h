/* Test harness: a small blocking HTTP/1.1 client for the relay unit tests
 * (with relay_thread.h), speaking to 127.0.0.1:port with requests signed
 * as a proxy signs them.  Every read is bounded by a 5 s receive timeout.
 * Header-only (static functions) because each test is one binary; not
 * every test uses every function, hence the unused attribute. */
#ifndef POSTERN_TEST_RELAY_HTTP_H
#define POSTERN_TEST_RELAY_HTTP_H

#include <check.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "auth.h"
#include "key.h"

#define HC_HELPER static __attribute__((unused))

/* n fresh signing keys, their public texts in pub. */
HC_HELPER void
hc_keys_make(struct key *keys, char (*pub)[KEY_PUBLIC_TEXT_MAX], int n)
{
	char err[512];
	int i;

	ck_assert_int_ge(sodium_init(), 0);
	for (i = 0; i < n; i++) {
		ck_assert_msg(key_generate(&keys[i], err, sizeof(err)) == 0, "%s",
		    err);
		key_public_text(keys[i].k_pub, pub[i]);
	}
}

HC_HELPER void
hc_keys_wipe(struct key *keys, int n)
{
	int i;

	for (i = 0; i < n; i++)
		key_wipe(&keys[i]);
}

struct hc {
	int    fd;
	int    status;
	char   head[4096];
	char   buf[1 << 16];
	size_t len;
	int    chunked;
	long   left;       /* bytes left in the current chunk, -1 between */
};

HC_HELPER struct hc *
hc_open(int port)
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

HC_HELPER void
hc_close(struct hc *h)
{
	close(h->fd);
	free(h);
}

HC_HELPER void
hc_write(struct hc *h, const void *p, size_t n)
{
	ck_assert_int_eq(send(h->fd, p, n, MSG_NOSIGNAL), (ssize_t)n);
}

/* Opens a connection and sends a request signed by k (unsigned when k is
 * NULL).  extra: more header lines ("Name: v\r\n"), or NULL.  chunked
 * starts a chunked upload; otherwise body (NULL: empty) is sent whole
 * with its Content-Length. */
HC_HELPER struct hc *
hc_send(int port, const struct key *k, const char *method, const char *path,
    const char *extra, const char *body, int chunked)
{
	struct auth_headers ah;
	struct hc *h = hc_open(port);
	char req[2048], err[512];
	int n;

	n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: relay\r\n", method,
	    path);
	if (k != NULL) {
		ck_assert_msg(auth_sign(k, method, path, time(NULL), &ah, err,
		    sizeof(err)) == 0, "%s", err);
		n += snprintf(req + n, sizeof(req) - (size_t)n, "%s: %s\r\n%s: %s\r\n"
		    "%s: %s\r\n%s: %s\r\n", AUTH_H_KEY, ah.ah_key, AUTH_H_TIMESTAMP,
		    ah.ah_timestamp, AUTH_H_NONCE, ah.ah_nonce, AUTH_H_SIGNATURE,
		    ah.ah_signature);
	}
	if (extra != NULL)
		n += snprintf(req + n, sizeof(req) - (size_t)n, "%s", extra);
	if (chunked)
		n += snprintf(req + n, sizeof(req) - (size_t)n,
		    "Transfer-Encoding: chunked\r\n\r\n");
	else
		n += snprintf(req + n, sizeof(req) - (size_t)n,
		    "Content-Length: %zu\r\n\r\n%s", body ? strlen(body) : 0,
		    body ? body : "");
	ck_assert_uint_lt((size_t)n, sizeof(req));
	hc_write(h, req, (size_t)n);
	return h;
}

HC_HELPER void
hc_chunk(struct hc *h, const void *p, size_t n)
{
	char line[32];

	snprintf(line, sizeof(line), "%zx\r\n", n);
	hc_write(h, line, strlen(line));
	hc_write(h, p, n);
	hc_write(h, "\r\n", 2);
}

HC_HELPER void
hc_end(struct hc *h)
{
	hc_write(h, "0\r\n\r\n", 5);
}

/* 0, or -1 on EOF/timeout. */
HC_HELPER int
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

HC_HELPER void
hc_consume(struct hc *h, size_t n)
{
	memmove(h->buf, h->buf + n, h->len - n);
	h->len -= n;
}

HC_HELPER int
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

/* name with its colon ("Postern-Generation:"); NULL when absent. */
HC_HELPER const char *
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
HC_HELPER long
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

/* Exactly n body bytes into out. */
HC_HELPER void
hc_read_n(struct hc *h, char *out, size_t n)
{
	size_t got = 0;
	long r;

	while (got < n) {
		r = hc_read(h, out + got, n - got);
		ck_assert_msg(r > 0, "body ended after %zu of %zu bytes", got, n);
		got += (size_t)r;
	}
}

/* The whole rest of a chunked body: its length, or -1 when cut. */
HC_HELPER long
hc_drain(struct hc *h, char *out, size_t max)
{
	size_t got = 0;
	long n;

	while ((n = hc_read(h, out + got, max - got)) > 0) {
		got += (size_t)n;
		ck_assert_uint_lt(got, max);
	}
	return n == 0 ? (long)got : -1;
}

/* A whole small body (Content-Length or chunked) as a string; a cut
 * chunked body reads as "". */
HC_HELPER const char *
hc_body(struct hc *h, char *out, size_t outlen)
{
	char cl[32];
	size_t want;
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
	n = hc_drain(h, out, outlen);
	out[n > 0 ? n : 0] = '\0';
	return out;
}

/* A listen that was answered 200 (paired): reads its JSON, puts the
 * connection id in id and closes it; the body stays in body. */
HC_HELPER void
hc_listen_id(struct hc *l, char *body, size_t bodylen, char *id, size_t idlen)
{
	char *p;

	ck_assert_int_eq(hc_status(l), 200);
	hc_body(l, body, bodylen);
	p = strstr(body, "\"id\":\"");
	ck_assert_msg(p != NULL, "%s", body);
	snprintf(id, idlen, "%s", p + 6);
	hc_close(l);
}

#undef HC_HELPER

#endif
