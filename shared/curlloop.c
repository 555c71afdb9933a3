/* curl multi "socket" API on top of the loop.
 *
 * Curl tells us which sockets to watch (socket callback) and when to call
 * it back (timer callback); we hand it events with
 * curl_multi_socket_action and then reap finished transfers.  Completion
 * callbacks run only after curl_multi_socket_action has returned, which
 * is what makes it safe for them to free transfers. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>

#include "curlloop.h"

struct curlloop {
	struct loop      *c_loop;
	CURLM            *c_multi;
	struct loop_timer c_timer;
	struct loop_timer c_reap;     /* after curlloop_flush */
	uint64_t          c_connect_ms;
	size_t            c_active;
};

static void curlloop_reap(struct curlloop *c);

static void
curlloop_on_io(struct loop *l, int fd, int events, void *arg)
{
	struct curlloop *c = arg;
	int flags = 0, running;

	(void)l;
	if (events & LOOP_READ)
		flags |= CURL_CSELECT_IN;
	if (events & LOOP_WRITE)
		flags |= CURL_CSELECT_OUT;
	curl_multi_socket_action(c->c_multi, fd, flags, &running);
	curlloop_reap(c);
}

static void
curlloop_on_timer(struct loop *l, void *arg)
{
	struct curlloop *c = arg;
	int running;

	(void)l;
	curl_multi_socket_action(c->c_multi, CURL_SOCKET_TIMEOUT, 0, &running);
	curlloop_reap(c);
}

static void
curlloop_on_reap(struct loop *l, void *arg)
{
	(void)l;
	curlloop_reap(arg);
}

static int
curlloop_socket_cb(CURL *easy, curl_socket_t s, int what, void *userp,
    void *socketp)
{
	struct curlloop *c = userp;
	int events = 0;

	(void)easy;
	(void)socketp;
	if (what == CURL_POLL_REMOVE) {
		loop_unwatch(c->c_loop, s);
		return 0;
	}
	if (what & CURL_POLL_IN)
		events |= LOOP_READ;
	if (what & CURL_POLL_OUT)
		events |= LOOP_WRITE;
	/* Unwatching rather than watching for nothing: epoll reports
	 * hang-ups even on an empty mask, which would spin the loop. */
	if (events == 0) {
		loop_unwatch(c->c_loop, s);
		return 0;
	}
	return loop_watch(c->c_loop, s, events, curlloop_on_io, c) == 0 ? 0 : -1;
}

static int
curlloop_timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct curlloop *c = userp;

	(void)multi;
	if (timeout_ms < 0)
		loop_timer_stop(c->c_loop, &c->c_timer);
	else
		loop_timer_start(c->c_loop, &c->c_timer, (uint64_t)timeout_ms);
	return 0;
}

struct curlloop *
curlloop_new(struct loop *l, long maxconnects, char *err, size_t errlen)
{
	struct curlloop *c;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->c_loop = l;
	loop_timer_init(&c->c_timer, curlloop_on_timer, c);
	loop_timer_init(&c->c_reap, curlloop_on_reap, c);
	if ((c->c_multi = curl_multi_init()) == NULL) {
		snprintf(err, errlen, "curl_multi_init failed");
		free(c);
		return NULL;
	}
	curl_multi_setopt(c->c_multi, CURLMOPT_SOCKETFUNCTION, curlloop_socket_cb);
	curl_multi_setopt(c->c_multi, CURLMOPT_SOCKETDATA, c);
	curl_multi_setopt(c->c_multi, CURLMOPT_TIMERFUNCTION, curlloop_timer_cb);
	curl_multi_setopt(c->c_multi, CURLMOPT_TIMERDATA, c);
	curl_multi_setopt(c->c_multi, CURLMOPT_MAXCONNECTS, maxconnects);
	return c;
}

void
curlloop_free(struct curlloop *c)
{
	if (c == NULL)
		return;
	/* Closing the cached connections calls the socket callback, which
	 * needs c and its loop: clean up curl first. */
	curl_multi_cleanup(c->c_multi);
	loop_timer_stop(c->c_loop, &c->c_timer);
	loop_timer_stop(c->c_loop, &c->c_reap);
	free(c);
}

void
curlloop_set_connect_timeout(struct curlloop *c, uint64_t ms)
{
	c->c_connect_ms = ms;
}

/* No connection in time: the transfer ends as curl would end it. */
static void
curlloop_on_deadline(struct loop *l, void *arg)
{
	struct curlloop_xfer *x = arg;
	struct curlloop *c = x->cx_c;

	(void)l;
	if (!x->cx_active)
		return;
	curl_multi_remove_handle(c->c_multi, x->cx_easy);
	x->cx_active = 0;
	c->c_active--;
	if (x->cx_errbuf != NULL)
		snprintf(x->cx_errbuf, CURL_ERROR_SIZE, "no connection to the "
		    "relay within %llu ms (relay_timeout)",
		    (unsigned long long)c->c_connect_ms);
	x->cx_done(x, CURLE_OPERATION_TIMEDOUT, x->cx_arg);
}

static void
curlloop_arm(struct curlloop_xfer *x)
{
	struct curlloop *c = x->cx_c;

	if (c->c_connect_ms > 0 && !loop_timer_armed(&x->cx_deadline))
		loop_timer_start(c->c_loop, &x->cx_deadline, c->c_connect_ms);
}

/* A new connection starts (also when curl retries a reused connection
 * that turned out dead): it gets the whole connect timeout. */
static curl_socket_t
curlloop_opensocket(void *arg, curlsocktype purpose,
    struct curl_sockaddr *addr)
{
	struct curlloop_xfer *x = arg;

	(void)purpose;
	curlloop_arm(x);
	return socket(addr->family, addr->socktype | SOCK_CLOEXEC,
	    addr->protocol);
}

static int
curlloop_prereq(void *arg, char *conn_primary_ip, char *conn_local_ip,
    int conn_primary_port, int conn_local_port)
{
	struct curlloop_xfer *x = arg;

	(void)conn_primary_ip;
	(void)conn_local_ip;
	(void)conn_primary_port;
	(void)conn_local_port;
	loop_timer_stop(x->cx_c->c_loop, &x->cx_deadline);
	if (x->cx_ready != NULL)
		x->cx_ready(x, x->cx_arg);
	return CURL_PREREQFUNC_OK;
}

int
curlloop_add(struct curlloop *c, struct curlloop_xfer *x, char *err,
    size_t errlen)
{
	CURLMcode mc;

	x->cx_c = c;
	loop_timer_init(&x->cx_deadline, curlloop_on_deadline, x);
	curl_easy_setopt(x->cx_easy, CURLOPT_PRIVATE, x);
	curl_easy_setopt(x->cx_easy, CURLOPT_PREREQFUNCTION, curlloop_prereq);
	curl_easy_setopt(x->cx_easy, CURLOPT_PREREQDATA, x);
	curl_easy_setopt(x->cx_easy, CURLOPT_OPENSOCKETFUNCTION,
	    curlloop_opensocket);
	curl_easy_setopt(x->cx_easy, CURLOPT_OPENSOCKETDATA, x);
	/* From now: waiting for a pooled connection, name lookup and
	 * handshakes all count, as they do for CURLOPT_CONNECTTIMEOUT. */
	curlloop_arm(x);
	if ((mc = curl_multi_add_handle(c->c_multi, x->cx_easy)) != CURLM_OK) {
		loop_timer_stop(c->c_loop, &x->cx_deadline);
		snprintf(err, errlen, "curl_multi_add_handle: %s",
		    curl_multi_strerror(mc));
		return -1;
	}
	x->cx_active = 1;
	c->c_active++;
	return 0;
}

void
curlloop_remove(struct curlloop *c, struct curlloop_xfer *x)
{
	if (!x->cx_active)
		return;
	loop_timer_stop(c->c_loop, &x->cx_deadline);
	curl_multi_remove_handle(c->c_multi, x->cx_easy);
	x->cx_active = 0;
	c->c_active--;
}

void
curlloop_flush(struct curlloop *c)
{
	int running;

	curl_multi_socket_action(c->c_multi, CURL_SOCKET_TIMEOUT, 0, &running);
	/* Completion callbacks may free what our caller still uses: they
	 * run from a timer of their own.  (c_timer is curl's: curl does not
	 * tell us a timeout again that it believes we still hold.) */
	if (!loop_timer_armed(&c->c_reap))
		loop_timer_start(c->c_loop, &c->c_reap, 0);
}

size_t
curlloop_active(const struct curlloop *c)
{
	return c->c_active;
}

static void
curlloop_reap(struct curlloop *c)
{
	struct curlloop_xfer *x;
	CURLMsg *msg;
	CURLcode result;
	CURL *easy;
	char *priv;
	int left;

	/* A completion callback may remove other transfers; curl then drops
	 * their pending messages, so the queue never names a freed handle. */
	while ((msg = curl_multi_info_read(c->c_multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		easy = msg->easy_handle;
		result = msg->data.result;
		priv = NULL;
		curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
		x = (struct curlloop_xfer *)(void *)priv;
		curl_multi_remove_handle(c->c_multi, easy);
		if (x == NULL)
			continue;
		loop_timer_stop(c->c_loop, &x->cx_deadline);
		x->cx_active = 0;
		c->c_active--;
		x->cx_done(x, result, x->cx_arg);
	}
}
