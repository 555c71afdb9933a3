/* The relay's HTTP connections as a client sees them: a new one silent,
 * or slow over its first request head, is closed after header_timeout;
 * one idle between requests after idle_timeout; a parked listen is not;
 * a kept-alive connection is timed again after its request; beyond
 * max_connections new connections wait until one closes; many connections
 * at once are all served.  The relay runs on its own loop in a thread;
 * the test speaks HTTP/1.1 to it over loopback. */
#include <check.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
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

static struct key nas;
static struct relay_thread rt;
static int port;
static char err[512];

/* settings: extra [relay] lines */
static void
start(const char *settings)
{
	char text[1024], pub[KEY_PUBLIC_TEXT_MAX];

	ck_assert_int_ge(sodium_init(), 0);
	log_init("relay-test", LOG_ERROR);
	ck_assert_int_eq(key_generate(&nas, err, sizeof(err)), 0);
	key_public_text(nas.k_pub, pub);
	snprintf(text, sizeof(text), "[relay]\nlisten = 127.0.0.1:0\nstatus = on\n%s"
	    "[server nas]\nkey = %s\n", settings, pub);
	relay_thread_start(&rt, text);
	port = rt.rt_port;
}

/* header_timeout and idle_timeout 0.5 s; the listen long-poll (2 s)
 * outlasts them */
static void
setup_timed(void)
{
	start("idle_timeout = 0.5\nheader_timeout = 0.5\nlisten_timeout = 2\n");
}

static void
setup_small(void)
{
	start("max_connections = 4\n");
}

static void
teardown(void)
{
	relay_thread_stop(&rt);
	key_wipe(&nas);
}

static double
now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int
conn_open(void)
{
	struct sockaddr_in sin;
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	ck_assert_int_ge(fd, 0);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
	return fd;
}

static void
send_str(int fd, const char *s)
{
	ck_assert_int_eq(send(fd, s, strlen(s), MSG_NOSIGNAL), (ssize_t)strlen(s));
}

/* Reads until the relay closes fd or `limit` seconds pass; returns the
 * seconds it took (limit when still open) and the bytes in buf. */
static double
wait_close(int fd, double limit, char *buf, size_t buflen)
{
	double t0 = now_s(), left;
	struct pollfd p = { fd, POLLIN, 0 };
	size_t got = 0;
	ssize_t n;

	for (;;) {
		left = limit - (now_s() - t0);
		if (left <= 0)
			break;
		if (poll(&p, 1, (int)(left * 1000) + 1) <= 0)
			continue;
		n = recv(fd, buf + got, buflen - 1 - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	buf[got] = '\0';
	return now_s() - t0;
}

/* A head and its body on a kept-alive connection; the status. */
static int
read_answer(int fd, char *buf, size_t buflen)
{
	struct pollfd p = { fd, POLLIN, 0 };
	size_t got = 0;
	char *end, *cl;
	ssize_t n;

	for (;;) {
		buf[got] = '\0';
		if ((end = strstr(buf, "\r\n\r\n")) != NULL) {
			cl = strcasestr(buf, "Content-Length:");
			if (cl == NULL || (size_t)(end + 4 - buf) + (size_t)atol(cl + 15) <= got)
				return atoi(buf + 9);
		}
		ck_assert_msg(poll(&p, 1, 5000) == 1, "no answer: %s", buf);
		n = recv(fd, buf + got, buflen - 1 - got, 0);
		ck_assert_msg(n > 0, "closed before the answer: %s", buf);
		got += (size_t)n;
	}
}

static void
send_signed(int fd, const char *path)
{
	struct auth_headers ah;
	char req[1024];

	ck_assert_int_eq(auth_sign(&nas, "POST", path, time(NULL), &ah, err,
	    sizeof(err)), 0);
	snprintf(req, sizeof(req), "POST %s HTTP/1.1\r\nHost: relay\r\n%s: %s\r\n"
	    "%s: %s\r\n%s: %s\r\n%s: %s\r\nContent-Length: 0\r\n\r\n", path,
	    AUTH_H_KEY, ah.ah_key, AUTH_H_TIMESTAMP, ah.ah_timestamp, AUTH_H_NONCE,
	    ah.ah_nonce, AUTH_H_SIGNATURE, ah.ah_signature);
	send_str(fd, req);
}

START_TEST(idle_connection_closed)
{
	char buf[256];
	double t;
	int fd = conn_open();

	t = wait_close(fd, 5, buf, sizeof(buf));
	close(fd);
	ck_assert_msg(t >= 0.4 && t < 2.5, "a silent connection was closed after "
	    "%.2f s (header_timeout 0.5 s)", t);
}
END_TEST

START_TEST(slow_request_closed)
{
	char buf[256];
	double t;
	int fd = conn_open();

	send_str(fd, "POST /v1/s/nas/listen/ssh HTTP/1.1\r\nHost: re");
	t = wait_close(fd, 5, buf, sizeof(buf));
	close(fd);
	ck_assert_msg(t >= 0.4 && t < 2.5, "a half-sent request was closed after "
	    "%.2f s (header_timeout 0.5 s)", t);
}
END_TEST

/* A listen parked for 2 s is not cut at idle_timeout; once answered, its
 * connection is kept alive and then closed as idle. */
START_TEST(parked_listen_not_cut)
{
	char buf[1024];
	double t0 = now_s(), t;
	int fd = conn_open();

	send_signed(fd, "/v1/s/nas/listen/ssh");
	ck_assert_int_eq(read_answer(fd, buf, sizeof(buf)), 204);
	t = now_s() - t0;
	ck_assert_msg(t >= 1.8, "the parked listen was answered after %.2f s, "
	    "before its 2 s listen_timeout", t);
	t = wait_close(fd, 5, buf, sizeof(buf));
	close(fd);
	ck_assert_msg(t >= 0.4 && t < 2.5, "the kept-alive connection was closed "
	    "%.2f s after its answer (idle_timeout 0.5 s)", t);
}
END_TEST

/* max_connections 4: a fifth connection is not served while four are
 * open, and is served once one closes. */
START_TEST(connections_wait_at_the_limit)
{
	const char *status = "GET /v1/status HTTP/1.1\r\nHost: relay\r\n\r\n";
	char buf[1024];
	struct pollfd p;
	int fds[4], fd, i;

	for (i = 0; i < 4; i++)
		fds[i] = conn_open();
	usleep(100000);
	fd = conn_open();   /* completes in the kernel's backlog */
	send_str(fd, status);
	p.fd = fd;
	p.events = POLLIN;
	ck_assert_msg(poll(&p, 1, 500) == 0, "a fifth connection was served "
	    "with max_connections 4");
	close(fds[0]);
	ck_assert_int_eq(read_answer(fd, buf, sizeof(buf)), 200);
	ck_assert_msg(strstr(buf, "\"connections\":4") != NULL, "%s", buf);
	close(fd);
	for (i = 1; i < 4; i++)
		close(fds[i]);
}
END_TEST

/* More connections than the relay has libmicrohttpd daemons, all open at
 * once: every one is answered. */
START_TEST(many_connections_served)
{
	const char *status = "GET /v1/status HTTP/1.1\r\nHost: relay\r\n\r\n";
	enum { N = 4 * RELAY_SHARDS + 3 };
	char buf[1024];
	int fds[N], i;

	for (i = 0; i < N; i++)
		fds[i] = conn_open();
	for (i = 0; i < N; i++)
		send_str(fds[i], status);
	for (i = 0; i < N; i++) {
		ck_assert_int_eq(read_answer(fds[i], buf, sizeof(buf)), 200);
		close(fds[i]);
	}
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("relay_conns");
	TCase *timed = tcase_create("timed");
	TCase *small = tcase_create("limits");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(timed, setup_timed, teardown);
	tcase_set_timeout(timed, 20);
	tcase_add_test(timed, idle_connection_closed);
	tcase_add_test(timed, slow_request_closed);
	tcase_add_test(timed, parked_listen_not_cut);
	tcase_add_test(timed, many_connections_served);
	suite_add_tcase(s, timed);
	tcase_add_checked_fixture(small, setup_small, teardown);
	tcase_set_timeout(small, 20);
	tcase_add_test(small, connections_wait_at_the_limit);
	suite_add_tcase(s, small);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
