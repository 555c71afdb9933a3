/* Address parsing and the text forms the proxies log and put in frame
 * headers; connects and the relay connect deadline. */
#include <check.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "curlloop.h"
#include "loop.h"
#include "net.h"
#include "relaycall.h"

START_TEST(test_split_hostport_good)
{
	char host[NET_HOST_MAX], err[256];
	uint16_t port;

	ck_assert_int_eq(net_split_hostport("127.0.0.1:22", host, sizeof(host),
	    &port, 0, err, sizeof(err)), 0);
	ck_assert_str_eq(host, "127.0.0.1");
	ck_assert_uint_eq(port, 22);
	ck_assert_int_eq(net_split_hostport("[::1]:65535", host, sizeof(host),
	    &port, 0, err, sizeof(err)), 0);
	ck_assert_str_eq(host, "::1");
	ck_assert_uint_eq(port, 65535);
	ck_assert_int_eq(net_split_hostport("db.internal:0", host, sizeof(host),
	    &port, 1, err, sizeof(err)), 0);
	ck_assert_str_eq(host, "db.internal");
	ck_assert_uint_eq(port, 0);
}
END_TEST

static void
bad_hostport(const char *s, int allow_zero, const char *needle)
{
	char host[NET_HOST_MAX], err[256];
	uint16_t port;

	ck_assert_int_eq(net_split_hostport(s, host, sizeof(host), &port,
	    allow_zero, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, needle) != NULL, "'%s': error '%s' lacks '%s'",
	    s, err, needle);
}

START_TEST(test_split_hostport_bad)
{
	bad_hostport("127.0.0.1", 0, "expected HOST:PORT");
	bad_hostport(":22", 0, "host is empty");
	bad_hostport("h:0", 0, "from 1 to 65535");
	bad_hostport("h:65536", 1, "from 0 to 65535");
	bad_hostport("h:22x", 0, "port must be a number");
	bad_hostport("h:", 0, "port must be a number");
	bad_hostport("::1:22", 0, "brackets");
	bad_hostport("[::1:22", 0, "missing ']'");
	bad_hostport("[::1]22", 0, "expected ':PORT'");
}
END_TEST

START_TEST(test_parse_target)
{
	char host[NET_HOST_MAX], err[256];
	uint16_t port;

	ck_assert_int_eq(net_parse_target("tcp://127.0.0.1:22", host,
	    sizeof(host), &port, err, sizeof(err)), 0);
	ck_assert_str_eq(host, "127.0.0.1");
	ck_assert_uint_eq(port, 22);
	ck_assert_int_eq(net_parse_target("localhost:5432", host, sizeof(host),
	    &port, err, sizeof(err)), 0);
	ck_assert_str_eq(host, "localhost");
	ck_assert_int_eq(net_parse_target("udp://127.0.0.1:53", host,
	    sizeof(host), &port, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "only tcp://"));
	ck_assert_int_eq(net_parse_target("tcp://127.0.0.1:0", host,
	    sizeof(host), &port, err, sizeof(err)), -1);
}
END_TEST

START_TEST(test_peer_text_forms)
{
	struct sockaddr_in s4;
	struct sockaddr_in6 s6;
	struct net_peer p;
	char out[NET_ADDR_TEXT_MAX];

	memset(&s4, 0, sizeof(s4));
	s4.sin_family = AF_INET;
	s4.sin_port = htons(50312);
	inet_pton(AF_INET, "127.0.0.1", &s4.sin_addr);
	ck_assert_int_eq(net_peer_from((struct sockaddr *)&s4, &p), 0);
	ck_assert_str_eq(p.np_family, "IPv4");
	ck_assert_str_eq(p.np_address, "127.0.0.1");
	ck_assert_uint_eq(p.np_port, 50312);
	net_peer_text(&p, out, sizeof(out));
	ck_assert_str_eq(out, "127.0.0.1:50312");

	memset(&s6, 0, sizeof(s6));
	s6.sin6_family = AF_INET6;
	s6.sin6_port = htons(22);
	inet_pton(AF_INET6, "::1", &s6.sin6_addr);
	ck_assert_int_eq(net_peer_from((struct sockaddr *)&s6, &p), 0);
	ck_assert_str_eq(p.np_family, "IPv6");
	net_sockaddr_text((struct sockaddr *)&s6, out, sizeof(out));
	ck_assert_str_eq(out, "[::1]:22");

	/* A dual-stack socket's IPv4 client is shown as IPv4. */
	inet_pton(AF_INET6, "::ffff:10.1.2.3", &s6.sin6_addr);
	ck_assert_int_eq(net_peer_from((struct sockaddr *)&s6, &p), 0);
	ck_assert_str_eq(p.np_family, "IPv4");
	ck_assert_str_eq(p.np_address, "10.1.2.3");

	memset(&p, 0, sizeof(p));
	net_peer_text(&p, out, sizeof(out));
	ck_assert_str_eq(out, "unknown");
}
END_TEST

START_TEST(test_errno_names)
{
	char buf[16];

	ck_assert_str_eq(net_errno_name(ECONNREFUSED, buf, sizeof(buf)),
	    "ECONNREFUSED");
	ck_assert_str_eq(net_errno_name(ETIMEDOUT, buf, sizeof(buf)),
	    "ETIMEDOUT");
	ck_assert_str_eq(net_errno_name(100000, buf, sizeof(buf)), "E100000");
}
END_TEST

START_TEST(test_resolve_and_connect_refused)
{
	struct net_addrs a;
	char err[256];
	int fd, e = 0, i;

	ck_assert_int_eq(net_resolve("127.0.0.1", 1, 0, &a, err, sizeof(err)),
	    0);
	ck_assert_uint_eq(a.na_count, 1);
	fd = net_connect_start((struct sockaddr *)&a.na_addr[0], a.na_len[0]);
	if (fd >= 0) {
		for (i = 0; i < 100 && (e = net_connect_error(fd)) == 0; i++)
			usleep(10000);
		close(fd);
	} else
		e = errno;
	ck_assert_int_eq(e, ECONNREFUSED);
}
END_TEST

/* A loopback listener answers a nonblocking connect at once (the case
 * the server-proxy uses to skip a trip through its loop); a closed port
 * reports the refusal, never "connected". */
START_TEST(test_connect_poll)
{
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	int ls, fd, e = EINPROGRESS, i;

	ls = socket(AF_INET, SOCK_STREAM, 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(ls, 4), 0);
	ck_assert_int_eq(getsockname(ls, (struct sockaddr *)&a, &al), 0);
	fd = net_connect_start((struct sockaddr *)&a, al);
	ck_assert_int_ge(fd, 0);
	for (i = 0; i < 100 && (e = net_connect_poll(fd)) == EINPROGRESS; i++)
		usleep(10000);
	ck_assert_int_eq(e, 0);
	close(fd);
	close(ls);

	/* The port is free now: nobody listens there. */
	fd = net_connect_start((struct sockaddr *)&a, al);
	if (fd >= 0) {
		e = EINPROGRESS;
		for (i = 0; i < 100 && (e = net_connect_poll(fd)) ==
		    EINPROGRESS; i++)
			usleep(10000);
		close(fd);
	} else
		e = errno;
	ck_assert_int_eq(e, ECONNREFUSED);
}
END_TEST

/* A relay that never completes the TCP handshake (its accept queue is
 * full): the transfer ends after the connect timeout with a message
 * naming relay_timeout, and leaves no timer behind. */
struct deadline_probe {
	struct loop *l;
	int          done;
	CURLcode     result;
	uint64_t     at;
};

static void
deadline_done(struct curlloop_xfer *x, CURLcode result, void *arg)
{
	struct deadline_probe *p = arg;

	(void)x;
	p->done++;
	p->result = result;
	p->at = loop_now_ms();
	loop_stop(p->l);
}

static void
deadline_guard(struct loop *l, void *arg)
{
	(void)arg;
	loop_stop(l);
}

START_TEST(test_curlloop_connect_deadline)
{
	struct deadline_probe p;
	struct curlloop *c;
	struct curlloop_xfer x;
	struct loop_timer guard;
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	char err[256], errbuf[CURL_ERROR_SIZE], url[64];
	int ls, fill[4], i;
	uint64_t start;

	ls = socket(AF_INET, SOCK_STREAM, 0);
	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(ls, 0), 0);
	ck_assert_int_eq(getsockname(ls, (struct sockaddr *)&a, &al), 0);
	for (i = 0; i < 4; i++) {
		fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
		(void)connect(fill[i], (struct sockaddr *)&a, al);
	}
	usleep(100000);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/",
	    (unsigned)ntohs(a.sin_port));

	memset(&p, 0, sizeof(p));
	p.l = loop_new();
	c = curlloop_new(p.l, 4, err, sizeof(err));
	ck_assert_ptr_nonnull(c);
	curlloop_set_connect_timeout(c, 300);
	memset(&x, 0, sizeof(x));
	x.cx_easy = curl_easy_init();
	curl_easy_setopt(x.cx_easy, CURLOPT_URL, url);
	curl_easy_setopt(x.cx_easy, CURLOPT_ERRORBUFFER, errbuf);
	errbuf[0] = '\0';
	x.cx_done = deadline_done;
	x.cx_arg = &p;
	x.cx_errbuf = errbuf;
	start = loop_now_ms();
	ck_assert_int_eq(curlloop_add(c, &x, err, sizeof(err)), 0);
	loop_timer_init(&guard, deadline_guard, NULL);
	loop_timer_start(p.l, &guard, 5000);
	loop_run(p.l);
	loop_timer_stop(p.l, &guard);
	ck_assert_int_eq(p.done, 1);
	ck_assert_int_eq(p.result, CURLE_OPERATION_TIMEDOUT);
	ck_assert_uint_ge(p.at - start, 290);
	ck_assert_uint_lt(p.at - start, 2000);
	ck_assert_msg(strstr(errbuf, "relay_timeout") != NULL, "%s", errbuf);
	ck_assert_int_eq(x.cx_active, 0);
	ck_assert_uint_eq(curlloop_active(c), 0);
	curl_easy_cleanup(x.cx_easy);
	curlloop_free(c);
	loop_free(p.l);
	for (i = 0; i < 4; i++)
		close(fill[i]);
	close(ls);
}
END_TEST

START_TEST(test_relay_names_and_errors)
{
	char out[256], big[80];
	const char *js;

	ck_assert_int_eq(relaycall_name_valid("nas"), 1);
	ck_assert_int_eq(relaycall_name_valid("k3J9-_x.Z"), 1);
	ck_assert_int_eq(relaycall_name_valid(""), 0);
	ck_assert_int_eq(relaycall_name_valid("a/b"), 0);
	ck_assert_int_eq(relaycall_name_valid("a b"), 0);
	memset(big, 'a', 64);
	big[64] = '\0';
	ck_assert_int_eq(relaycall_name_valid(big), 1);
	big[64] = 'a';
	big[65] = '\0';
	ck_assert_int_eq(relaycall_name_valid(big), 0);

	js = "{\"error\": \"connect to 127.0.0.1:1: "
	    "Connection refused\", \"code\": \"ECONNREFUSED\"}";
	relaycall_describe(502, js, strlen(js), out, sizeof(out));
	ck_assert_str_eq(out, "relay answered 502 ECONNREFUSED: connect to "
	    "127.0.0.1:1: Connection refused");
	relaycall_describe(503, "<html>busy\n</html>", 18, out, sizeof(out));
	ck_assert_str_eq(out, "relay answered 503: '<html>busy?</html>'");
	relaycall_describe(500, "", 0, out, sizeof(out));
	ck_assert_str_eq(out, "relay answered 500 with no body");
}
END_TEST

START_TEST(test_relay_url)
{
	struct relaycall_conf rc;
	char err[256];

	memset(&rc, 0, sizeof(rc));
	ck_assert_int_eq(relaycall_conf_url(&rc, "http://127.0.0.1:8080", err,
	    sizeof(err)), 0);
	ck_assert_str_eq(rc.rc_base, "http://127.0.0.1:8080");
	ck_assert_str_eq(rc.rc_prefix, "");
	ck_assert_int_eq(relaycall_conf_url(&rc, "https://relay.example/p/", err,
	    sizeof(err)), 0);
	ck_assert_str_eq(rc.rc_base, "https://relay.example");
	ck_assert_str_eq(rc.rc_prefix, "/p");
	ck_assert_int_eq(relaycall_conf_url(&rc, "ftp://x", err, sizeof(err)),
	    -1);
	ck_assert_ptr_nonnull(strstr(err, "http or https"));
	ck_assert_int_eq(relaycall_conf_url(&rc, "relay.example", err,
	    sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "is not a URL"));
	ck_assert_int_eq(relaycall_conf_url(&rc, "http://x/?a=b", err,
	    sizeof(err)), -1);
}
END_TEST

static Suite *
net_suite(void)
{
	Suite *s = suite_create("net");
	TCase *tc = tcase_create("net");

	tcase_add_test(tc, test_split_hostport_good);
	tcase_add_test(tc, test_split_hostport_bad);
	tcase_add_test(tc, test_parse_target);
	tcase_add_test(tc, test_peer_text_forms);
	tcase_add_test(tc, test_errno_names);
	tcase_add_test(tc, test_resolve_and_connect_refused);
	tcase_add_test(tc, test_connect_poll);
	tcase_add_test(tc, test_curlloop_connect_deadline);
	tcase_add_test(tc, test_relay_names_and_errors);
	tcase_add_test(tc, test_relay_url);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(net_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
