/* libmicrohttpd glue: one relay_req per HTTP request, routing and
 * authentication on the first access-handler call (before any body is
 * read), answers, and suspend/resume.
 *
 * Suspended connections are invisible to libmicrohttpd: it neither times
 * them out nor notices their peer leaving.  So while a listen, a connect
 * or an idle response stream is parked, its socket is watched on our loop;
 * an EOF there (the peer closed) wakes the request so it can be dropped at
 * once instead of at the next pairing or timeout. */
#include <errno.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>
#include <microhttpd.h>

#include "auth.h"
#include "log.h"
#include "relay.h"

/* libmicrohttpd 0.9.75 callocs this much with every callback response
 * but fills chunked bodies straight into the connection's own buffer
 * (sized by connection_memory); the block is only read from for HTTP/1.0
 * peers (no chunking), which the proxies and nginx never are.  So it is
 * kept small: 4 KiB blocks cost 8 KiB more per idle tunnel for nothing. */
#define HTTP_STREAM_BLOCK   512
/* GnuTLS priorities for HTTPS: its NORMAL ciphers, TLS 1.2 and 1.3 only. */
#define HTTP_TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"
/* Parked TLS sockets whose peer left, handled per wakeup. */
#define HTTP_HUP_BATCH      64

static void http_answer(struct relay_req *rq, int status, const char *code,
                        const char *msg);

/* ---- responses ---------------------------------------------------------- */

static void
http_common_headers(struct MHD_Response *resp)
{
	MHD_add_response_header(resp, "Cache-Control", "no-store");
}

/* Resumption: the generation a stream request is answered in (its 200s,
 * and the 409s that tell the proxy which generation to use), and the
 * end of a finished direction. */
static void
http_resume_headers(struct relay_req *rq, struct MHD_Response *resp)
{
	char gen[16];

	if (rq->rq_gen != 0) {
		snprintf(gen, sizeof(gen), "%lu", (unsigned long)rq->rq_gen);
		MHD_add_response_header(resp, "Postern-Generation", gen);
	}
	if (rq->rq_eof_answer)
		MHD_add_response_header(resp, "Postern-Eof", "1");
}

const char *
http_header(struct relay_req *rq, const char *name)
{
	return MHD_lookup_connection_value(rq->rq_conn, MHD_HEADER_KIND, name);
}

int
http_queue_json(struct relay_req *rq, int status, const char *body)
{
	struct MHD_Response *resp;
	enum MHD_Result r;

	resp = MHD_create_response_from_buffer(strlen(body), (void *)(uintptr_t)body,
	    MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return -1;
	MHD_add_response_header(resp, "Content-Type", "application/json");
	http_common_headers(resp);
	http_resume_headers(rq, resp);
	r = MHD_queue_response(rq->rq_conn, (unsigned)status, resp);
	MHD_destroy_response(resp);
	if (r != MHD_YES)
		return -1;
	rq->rq_answered = 1;
	return 0;
}

static int
http_queue_empty(struct relay_req *rq, int status)
{
	struct MHD_Response *resp;
	enum MHD_Result r;

	resp = MHD_create_response_from_buffer(0, (void *)(uintptr_t)"",
	    MHD_RESPMEM_PERSISTENT);
	if (resp == NULL)
		return -1;
	http_common_headers(resp);
	http_resume_headers(rq, resp);
	r = MHD_queue_response(rq->rq_conn, (unsigned)status, resp);
	MHD_destroy_response(resp);
	if (r != MHD_YES)
		return -1;
	rq->rq_answered = 1;
	return 0;
}

/* Strings from the network may be anything: JSON needs UTF-8. */
static json_t *
http_json_text(const char *s)
{
	json_t *j;
	char buf[RELAY_ERR_MAX * 2];
	size_t i;

	if ((j = json_string(s)) != NULL)
		return j;
	for (i = 0; s[i] != '\0' && i < sizeof(buf) - 1; i++)
		buf[i] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	buf[i] = '\0';
	return json_string(buf);
}

/* Queues o (taken: freed here) as a JSON body. */
static int
http_queue_object(struct relay_req *rq, int status, json_t *o)
{
	char *body;
	int rc;

	if (o == NULL)
		return -1;
	body = json_dumps(o, JSON_COMPACT);
	json_decref(o);
	if (body == NULL)
		return -1;
	rc = http_queue_json(rq, status, body);
	free(body);
	return rc;
}

static int
http_queue_error(struct relay_req *rq, int status, const char *code, const char *msg)
{
	json_t *o = json_object();

	if (o != NULL) {
		json_object_set_new(o, "error", http_json_text(msg));
		json_object_set_new(o, "code", http_json_text(code));
	}
	return http_queue_object(rq, status, o);
}

static ssize_t
http_stream_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct relay_req *rq = cls;
	long n;

	(void)pos;
	if (rq->rq_circuit == NULL || rq->rq_abort)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	n = pipe_read(rq, pipe_of_reader(rq), buf, max);
	if (n == PIPE_EOF || n == PIPE_END) {
		/* A clean end: the slot is free for the next download now,
		 * before the last chunk has gone out. */
		circuit_unslot(rq, n == PIPE_EOF);
		return MHD_CONTENT_READER_END_OF_STREAM;
	}
	if (n == PIPE_ERROR)
		return MHD_CONTENT_READER_END_WITH_ERROR;
	return (ssize_t)n;
}

int
http_queue_stream(struct relay_req *rq)
{
	struct MHD_Response *resp;
	enum MHD_Result r;

	resp = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, HTTP_STREAM_BLOCK,
	    http_stream_read, rq, NULL);
	if (resp == NULL)
		return -1;
	MHD_add_response_header(resp, "Content-Type", "application/octet-stream");
	MHD_add_response_header(resp, "X-Accel-Buffering", "no");
	http_common_headers(resp);
	http_resume_headers(rq, resp);
	if (rq->rq_route.rt_call == CALL_CONNECT)
		MHD_add_response_header(resp, "Postern-Connection",
		    rq->rq_circuit->ci_idtext);
	r = MHD_queue_response(rq->rq_conn, MHD_HTTP_OK, resp);
	MHD_destroy_response(resp);
	if (r != MHD_YES)
		return -1;
	rq->rq_answered = 1;
	rq->rq_streaming = 1;
	pipe_reader_start(rq, pipe_of_reader(rq));
	return 0;
}

static int
http_queue_listen(struct relay_req *rq)
{
	struct circuit *t = rq->rq_circuit;
	char key[KEY_PUBLIC_TEXT_MAX];
	json_t *o;

	key_public_text(t->ci_client->cl_key, key);
	o = json_pack("{s:s, s:s, s:s, s:s}", "id", t->ci_idtext, "port", t->ci_port,
	    "client", t->ci_client->cl_name, "client_key", key);
	return http_queue_object(rq, MHD_HTTP_OK, o);
}

static void
http_log_answer(const struct relay_req *rq, int status, const char *msg)
{
	if (status >= 400)
		log_warn("%d %s from %s: %s", status, rq->rq_what, rq->rq_peer, msg);
	else
		log_debug("%d %s from %s", status, rq->rq_what, rq->rq_peer);
}

/* Queues the answer; only valid inside rq's access handler. */
static void
http_answer(struct relay_req *rq, int status, const char *code, const char *msg)
{
	struct circuit *t = rq->rq_circuit;
	int rc;

	if (rq->rq_answered)
		return;
	if (status == MHD_HTTP_OK && rq->rq_route.rt_call == CALL_CONNECT &&
	    (t == NULL || t->ci_failed)) {
		status = MHD_HTTP_BAD_GATEWAY;
		code = "tunnel_failed";
		msg = "the server-proxy's streams failed before the connection was set up";
	}
	/* A stream still attached is answered in the current generation. */
	if (t != NULL && (ST_BIT(rq->rq_stream) & ST_FOUR) && t->ci_req[rq->rq_stream] == rq)
		rq->rq_gen = t->ci_gen;
	else if (status == MHD_HTTP_OK && !rq->rq_eof_answer &&
	    (rq->rq_stream == ST_CONNECT || rq->rq_stream == ST_ACCEPT)) {
		rq->rq_abort = 1;   /* a download cut (by a break) meanwhile */
		return;
	}
	http_log_answer(rq, status, msg ? msg : "");
	if (status >= 400)
		rc = http_queue_error(rq, status, code, msg);
	else if (status == MHD_HTTP_OK && rq->rq_route.rt_call == CALL_LISTEN)
		rc = http_queue_listen(rq);
	else if (status == MHD_HTTP_OK && !rq->rq_eof_answer &&
	    (rq->rq_stream == ST_CONNECT || rq->rq_stream == ST_ACCEPT))
		rc = http_queue_stream(rq);
	else
		rc = http_queue_empty(rq, status);
	if (rc == -1) {
		log_warn("cannot queue the %d answer to %s (out of memory?)", status,
		    rq->rq_peer);
		rq->rq_abort = 1;
	}
}

void
http_reply(struct relay_req *rq, int status, const char *code, const char *fmt, ...)
{
	struct relay *rl = rq->rq_relay;
	char msg[RELAY_ERR_MAX];
	size_t clen, mlen;
	va_list ap;

	if (rq->rq_answered || rq->rq_abort)
		return;
	if (rl->rl_stopping) {
		http_abort(rq);
		return;
	}
	if (rq->rq_counted) {
		rq->rq_counted = 0;
		rl->rl_npending--;
	}
	rq->rq_waiting = 0;
	if (code == NULL)
		code = "";
	msg[0] = '\0';
	if (fmt != NULL) {
		va_start(ap, fmt);
		vsnprintf(msg, sizeof(msg), fmt, ap);
		va_end(ap);
	}
	if (rq->rq_in_handler) {
		http_answer(rq, status, code, msg);
		return;
	}
	free(rq->rq_text);
	rq->rq_text = NULL;
	clen = strlen(code);
	mlen = strlen(msg);
	if ((clen > 0 || mlen > 0) &&
	    (rq->rq_text = malloc(clen + 1 + mlen + 1)) == NULL) {
		log_warn("out of memory for the %d answer to %s", status, rq->rq_peer);
		http_abort(rq);
		return;
	}
	if (rq->rq_text != NULL) {
		memcpy(rq->rq_text, code, clen + 1);
		memcpy(rq->rq_text + clen + 1, msg, mlen + 1);
	}
	rq->rq_status = status;
	rq->rq_pending = 1;
	http_resume(rq);
}

/* ---- connection timers -------------------------------------------------- */

static void
http_conn_timeout(struct loop *l, void *arg)
{
	struct relay_conn *rc = arg;

	(void)l;
	/* libmicrohttpd sees the shutdown as the peer leaving, closes the
	 * connection and ends any request on it. */
	if (!rc->rc_head_seen)
		log_debug("closing a connection that sent no whole request head "
		    "within header_timeout (%llu ms)", (unsigned long long)
		    rc->rc_shard->sh_relay->rl_cf->cf_header_timeout_ms);
	else
		log_debug("closing a connection idle or slow for idle_timeout "
		    "(%llu ms)", (unsigned long long)
		    rc->rc_shard->sh_relay->rl_cf->cf_idle_timeout_ms);
	shutdown(rc->rc_fd, SHUT_RDWR);
}

static void
http_conn_time(struct relay_conn *rc)
{
	struct relay *rl;

	if (rc != NULL) {
		rl = rc->rc_shard->sh_relay;
		/* A slow-loris client trickling its first request head gets
		 * header_timeout, not the much longer idle_timeout. */
		loop_timer_start(rl->rl_loop, &rc->rc_timer, rc->rc_head_seen ?
		    rl->rl_cf->cf_idle_timeout_ms : rl->rl_cf->cf_header_timeout_ms);
	}
}

static void
http_conn_untime(struct relay_conn *rc)
{
	if (rc != NULL)
		loop_timer_stop(rc->rc_shard->sh_relay->rl_loop, &rc->rc_timer);
}

/* Every connection, from MHD_add_connection() until libmicrohttpd closes
 * it: counted (max_connections) and timed. */
static void
http_conn_notify(void *cls, struct MHD_Connection *c, void **socket_context,
                 enum MHD_ConnectionNotificationCode toe)
{
	struct relay_shard *sh = cls;
	struct relay *rl = sh->sh_relay;
	const union MHD_ConnectionInfo *ci;
	struct relay_conn *rc = *socket_context;
	int fd = -1;

	if (toe == MHD_CONNECTION_NOTIFY_CLOSED) {
		if (rc != NULL) {
			http_conn_untime(rc);
			free(rc);
			*socket_context = NULL;
		}
		sh->sh_conns--;
		rl->rl_conns--;
		relay_conn_closed(rl);
		return;
	}
	if (toe != MHD_CONNECTION_NOTIFY_STARTED)
		return;
	sh->sh_conns++;
	rl->rl_conns++;
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci != NULL)
		fd = ci->connect_fd;
	if ((rc = calloc(1, sizeof(*rc))) == NULL) {
		/* Untimed, it could sit here forever: turn it away. */
		log_warn("out of memory for a new connection; closing it");
		if (fd >= 0)
			shutdown(fd, SHUT_RDWR);
		return;
	}
	rc->rc_shard = sh;
	rc->rc_fd = fd;
	loop_timer_init(&rc->rc_timer, http_conn_timeout, rc);
	http_conn_time(rc);
	*socket_context = rc;
}

/* ---- suspend / resume ------------------------------------------------- */

static void http_peer_event(struct loop *l, int fd, int events, void *arg);

/* Watches a parked request's socket for its peer leaving.  Plain HTTP:
 * readable on the loop, where a peek tells a close (no bytes) from
 * pipelined bytes.  TLS: the bytes are records that cannot be read
 * while the connection is suspended, and a polite client (curl) sends a
 * close_notify alert before its FIN, which the peek would take for
 * pipelining.  So TLS sockets go into rl_hup_fd for EPOLLRDHUP alone,
 * which reports the FIN whatever is queued before it. */
static int
http_watch(struct relay_req *rq)
{
	struct relay *rl = rq->rq_relay;
	struct epoll_event ev;

	if (rl->rl_hup_fd < 0)
		return loop_watch(rl->rl_loop, rq->rq_fd, LOOP_READ,
		    http_peer_event, rq);
	memset(&ev, 0, sizeof(ev));
	ev.events = EPOLLRDHUP;
	ev.data.ptr = rq;
	return epoll_ctl(rl->rl_hup_fd, EPOLL_CTL_ADD, rq->rq_fd, &ev);
}

void
http_unwatch(struct relay_req *rq)
{
	struct relay *rl = rq->rq_relay;

	if (!rq->rq_watched)
		return;
	rq->rq_watched = 0;
	if (rl->rl_hup_fd < 0)
		loop_unwatch(rl->rl_loop, rq->rq_fd);
	else
		epoll_ctl(rl->rl_hup_fd, EPOLL_CTL_DEL, rq->rq_fd, NULL);
}

/* One event at a time: dropping a request may end others, and each one
 * that ends leaves the set (http_req_free), so no stale one is seen. */
static void
http_hup_event(struct loop *l, int fd, int events, void *arg)
{
	struct epoll_event ev;
	struct relay_req *rq;
	int i;

	(void)l;
	(void)events;
	(void)arg;
	for (i = 0; i < HTTP_HUP_BATCH; i++) {
		if (epoll_wait(fd, &ev, 1, 0) != 1)
			return;
		rq = ev.data.ptr;
		http_unwatch(rq);
		log_debug("%s from %s: peer closed while parked", rq->rq_what,
		    rq->rq_peer);
		calls_peer_gone(rq);
	}
}

int
http_peer_peek(int fd)
{
	ssize_t n;
	char c;

	n = recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
	if (n > 0)
		return 1;
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return 0;
	return -1;
}

static void
http_peer_event(struct loop *l, int fd, int events, void *arg)
{
	struct relay_req *rq = arg;
	int peer;

	(void)events;
	if ((peer = http_peer_peek(fd)) == 0)
		return;
	loop_unwatch(l, fd);
	rq->rq_watched = 0;
	if (peer > 0)
		return;   /* more request bytes (pipelining): not a close */
	log_debug("%s from %s: peer closed while parked", rq->rq_what, rq->rq_peer);
	calls_peer_gone(rq);
}

void
http_suspend(struct relay_req *rq, int watch)
{
	if (rq->rq_suspended)
		return;
	MHD_suspend_connection(rq->rq_conn);
	rq->rq_suspended = 1;
	/* Parked: pairing, accept_timeout or the circuit times it now. */
	http_conn_untime(rq->rq_rc);
	if (watch && rq->rq_fd >= 0 && http_watch(rq) == 0)
		rq->rq_watched = 1;
}

void
http_resume(struct relay_req *rq)
{
	if (!rq->rq_suspended)
		return;
	http_unwatch(rq);
	rq->rq_suspended = 0;
	MHD_resume_connection(rq->rq_conn);
	relay_mhd_kick(rq->rq_shard);
	/* Woken to answer: its connection's timer bounds the rest, unless it
	 * carries a stream (timed by its circuit). */
	if (rq->rq_circuit == NULL || !(ST_BIT(rq->rq_stream) & ST_FOUR))
		http_conn_time(rq->rq_rc);
}

/* A tunnel stream is cut with a TCP reset, not a FIN: a middlebox that
 * speaks HTTP/1.0 to the relay (nginx's default) takes a FIN for the end
 * of a response of unknown length and ends its own response cleanly, so
 * the proxy would see a clean end; a reset makes it abort its response.
 * connect(AF_UNSPEC) resets a TCP connection without closing the
 * descriptor, which stays libmicrohttpd's to close. */
static void
http_reset(struct relay_req *rq)
{
	struct sockaddr sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_family = AF_UNSPEC;
	(void)connect(rq->rq_fd, &sa, sizeof(sa));
}

void
http_abort(struct relay_req *rq)
{
	if (rq->rq_abort)
		return;
	rq->rq_abort = 1;
	if (rq->rq_fd >= 0 && rq->rq_circuit != NULL && (ST_BIT(rq->rq_stream) & ST_FOUR))
		http_reset(rq);
	if (rq->rq_suspended)
		http_resume(rq);
	else if (!rq->rq_in_handler && rq->rq_fd >= 0)
		/* Neither parked nor in a callback: libmicrohttpd would only
		 * look at it on the next socket event, which may never come
		 * (an idle uploader, a reader that stopped reading).  Shutting
		 * the socket down makes that event happen now. */
		shutdown(rq->rq_fd, SHUT_RDWR);
}

void
http_untimed(struct relay_req *rq)
{
	http_conn_untime(rq->rq_rc);
}

/* ---- the access handler ------------------------------------------------ */

static int
http_key_known(void *arg, const uint8_t pub[KEY_PUBLIC_BYTES])
{
	const struct relay_config *cf = arg;

	return config_server_by_key(cf, pub) != NULL ||
	    config_client_by_key(cf, pub) != NULL;
}

static void
http_status(struct relay_req *rq)
{
	struct relay *rl = rq->rq_relay;
	char body[256];
	/* Those still waiting for their first bytes (sort.c) count too. */
	unsigned conns = rl->rl_conns + (unsigned)rl->rl_nsorting;

	snprintf(body, sizeof(body), "{\"tunnels\":%zu,\"pending_connects\":%zu,"
	    "\"listens\":%zu,\"connections\":%u,\"buffered_bytes\":%llu}",
	    rl->rl_ncircuits, rl->rl_npending, rl->rl_nlistens, conns,
	    (unsigned long long)rl->rl_buffered);
	if (http_queue_json(rq, MHD_HTTP_OK, body) == -1)
		rq->rq_abort = 1;
}

/* Who is calling, and may it?  Fills rq_server / rq_client. */
static void
http_identify(struct relay_req *rq, const uint8_t pub[KEY_PUBLIC_BYTES])
{
	const struct relay_config *cf = rq->rq_relay->rl_cf;
	const struct relay_route *rt = &rq->rq_route;
	const struct relay_server *sv, *own;
	const struct relay_client *cl;
	char key[KEY_PUBLIC_TEXT_MAX];

	sv = config_server(cf, rt->rt_server);
	if (route_call_is_server(rt->rt_call)) {
		if (sv == NULL) {
			http_reply(rq, 404, "unknown_server", "the relay has no [server %s] "
			    "in its config", rt->rt_server);
			return;
		}
		if (memcmp(sv->sv_key, pub, KEY_PUBLIC_BYTES) != 0) {
			key_public_text(pub, key);
			if ((own = config_server_by_key(cf, pub)) != NULL)
				http_reply(rq, 403, "forbidden", "key %s belongs to [server %s], "
				    "not [server %s]", key, own->sv_name, rt->rt_server);
			else
				http_reply(rq, 403, "forbidden", "key %s is a client key; only "
				    "the key of [server %s] may make server calls for it", key,
				    rt->rt_server);
			return;
		}
		rq->rq_server = sv;
		return;
	}
	if ((cl = config_client_by_key(cf, pub)) == NULL) {
		key_public_text(pub, key);
		http_reply(rq, 403, "forbidden", "key %s is not a [client] key in the "
		    "relay's config, so it cannot make client calls", key);
		return;
	}
	rq->rq_client = cl;
	if (sv == NULL) {
		http_reply(rq, 404, "unknown_server", "the relay has no server named '%s'",
		    rt->rt_server);
		return;
	}
	rq->rq_server = sv;
}

static void
http_first(struct relay_req *rq, const char *url, const char *method)
{
	struct relay *rl = rq->rq_relay;
	struct MHD_Connection *c = rq->rq_conn;
	char err[RELAY_ERR_MAX];
	uint8_t pub[KEY_PUBLIC_BYTES];
	const char *code = NULL;
	enum auth_result ar;
	int status;

	status = route_parse(method, url, &rq->rq_route, &code, err, sizeof(err));
	if (status != 0) {
		http_reply(rq, status, code, "%s", err);
		return;
	}
	if (rq->rq_route.rt_call == CALL_STATUS) {
		if (!rl->rl_cf->cf_status)
			http_reply(rq, 404, "not_found", "the status page is off (status = "
			    "on in [relay] turns it on)");
		else
			http_status(rq);
		return;
	}
	ar = auth_verify(rl->rl_auth, method, url,
	    MHD_lookup_connection_value(c, MHD_HEADER_KIND, AUTH_H_KEY),
	    MHD_lookup_connection_value(c, MHD_HEADER_KIND, AUTH_H_TIMESTAMP),
	    MHD_lookup_connection_value(c, MHD_HEADER_KIND, AUTH_H_NONCE),
	    MHD_lookup_connection_value(c, MHD_HEADER_KIND, AUTH_H_SIGNATURE),
	    time(NULL), pub, err, sizeof(err));
	if (ar == AUTH_BUSY) {
		http_reply(rq, 503, "busy", "%s", err);
		return;
	}
	if (ar != AUTH_OK) {
		/* A replay has its own code: libcurl re-sends a request whose
		 * reused connection died under it with the same signed
		 * headers, and the proxies then sign afresh and go on. */
		http_reply(rq, 401, ar == AUTH_REPLAY ? "replayed_nonce" :
		    "unauthenticated", "%s", err);
		return;
	}
	http_identify(rq, pub);
	if (rq->rq_answered || rq->rq_abort)
		return;
	calls_open(rq);
}

/* Printable, bounded: the path comes from anyone. */
static void
http_describe(struct relay_req *rq, const char *method, const char *url)
{
	size_t i, n;

	n = (size_t)snprintf(rq->rq_what, sizeof(rq->rq_what), "%.10s %s", method, url);
	if (n >= sizeof(rq->rq_what) && sizeof(rq->rq_what) > 4)
		memcpy(rq->rq_what + sizeof(rq->rq_what) - 4, "...", 4);
	for (i = 0; rq->rq_what[i] != '\0'; i++)
		if (rq->rq_what[i] < 0x20 || rq->rq_what[i] >= 0x7f)
			rq->rq_what[i] = '?';
}

static struct relay_req *
http_req_new(struct relay_shard *sh, struct MHD_Connection *c)
{
	struct relay *rl = sh->sh_relay;
	const union MHD_ConnectionInfo *ci;
	struct relay_req *rq;
	char host[NI_MAXHOST], serv[NI_MAXSERV];
	socklen_t alen;

	if ((rq = calloc(1, sizeof(*rq))) == NULL)
		return NULL;
	rq->rq_relay = rl;
	rq->rq_shard = sh;
	rq->rq_conn = c;
	rq->rq_fd = -1;
	rq->rq_stream = ST_NONE;
	loop_timer_init(&rq->rq_timer, NULL, rq);
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (ci != NULL)
		rq->rq_fd = ci->connect_fd;
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	if (ci != NULL)
		rq->rq_rc = ci->socket_context;
	snprintf(rq->rq_peer, sizeof(rq->rq_peer), "?");
	ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci != NULL && ci->client_addr != NULL) {
		alen = ci->client_addr->sa_family == AF_INET6 ?
		    sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
		if (getnameinfo(ci->client_addr, alen, host, sizeof(host), serv,
		    sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV) == 0)
			snprintf(rq->rq_peer, sizeof(rq->rq_peer),
			    strchr(host, ':') ? "[%s]:%s" : "%s:%s", host, serv);
	}
	LIST_INSERT_HEAD(&rl->rl_reqs, rq, rq_entry);
	return rq;
}

static enum MHD_Result
http_access(void *cls, struct MHD_Connection *c, const char *url, const char *method,
            const char *version, const char *upload_data, size_t *upload_data_size,
            void **con_cls)
{
	struct relay_shard *sh = cls;
	struct relay *rl = sh->sh_relay;
	struct relay_req *rq = *con_cls;
	const char *text;

	if (rq == NULL) {
		if (rl->rl_stopping || (rq = http_req_new(sh, c)) == NULL)
			return MHD_NO;
		*con_cls = rq;
		rq->rq_http11 = strcmp(version, MHD_HTTP_VERSION_1_1) == 0;
		if (rq->rq_rc != NULL && !rq->rq_rc->rc_head_seen) {
			/* The head is in: idle_timeout bounds the rest. */
			rq->rq_rc->rc_head_seen = 1;
			http_conn_time(rq->rq_rc);
		}
		http_describe(rq, method, url);
		rq->rq_in_handler = 1;
		http_first(rq, url, method);
		rq->rq_in_handler = 0;
		return rq->rq_abort ? MHD_NO : MHD_YES;
	}
	if (rq->rq_abort || rl->rl_stopping)
		return MHD_NO;
	rq->rq_in_handler = 1;
	if (*upload_data_size > 0) {
		if (rq->rq_answered) {
			/* Answered early (an error): drop the body so the answer
			 * can go out, up to a bound. */
			rq->rq_discarded += *upload_data_size;
			*upload_data_size = 0;
			if (rq->rq_discarded > RELAY_DISCARD_MAX)
				rq->rq_abort = 1;
		} else
			calls_body(rq, upload_data, upload_data_size);
	} else if (rq->rq_pending) {
		rq->rq_pending = 0;
		text = rq->rq_text != NULL ? rq->rq_text : "";
		http_answer(rq, rq->rq_status, text,
		    rq->rq_text != NULL ? text + strlen(text) + 1 : "");
		free(rq->rq_text);
		rq->rq_text = NULL;
	} else if (!rq->rq_answered)
		calls_final(rq);
	rq->rq_in_handler = 0;
	return rq->rq_abort ? MHD_NO : MHD_YES;
}

/* Everything a request holds is released here, once libmicrohttpd says
 * it is over (clean: its response went out in full). */
static void
http_req_free(struct relay_req *rq, int clean, const char *how)
{
	struct relay *rl = rq->rq_relay;

	http_unwatch(rq);
	loop_timer_stop(rl->rl_loop, &rq->rq_timer);
	if (rq->rq_port != NULL)
		pairing_drop(rq);
	if (rq->rq_counted)
		rl->rl_npending--;
	if (rq->rq_circuit != NULL)
		circuit_detach(rq, clean, how);
	/* Kept alive for another request: idle from now.  (Otherwise the
	 * connection is closing and its timer goes with it.) */
	if (clean)
		http_conn_time(rq->rq_rc);
	LIST_REMOVE(rq, rq_entry);
	free(rq->rq_body);
	free(rq->rq_text);
	free(rq);
}

static void
http_completed(void *cls, struct MHD_Connection *c, void **con_cls,
               enum MHD_RequestTerminationCode toe)
{
	static const char *const how[] = {
		"completed", "error", "timed out", "daemon shutdown", "read error",
		"client aborted",
	};
	struct relay_req *rq = *con_cls;
	const char *what;

	(void)cls;
	(void)c;
	if (rq == NULL)
		return;
	*con_cls = NULL;
	what = (unsigned)toe < sizeof(how) / sizeof(how[0]) ? how[toe] : "ended";
	log_debug("%s from %s: %s", rq->rq_what, rq->rq_peer, what);
	http_req_free(rq, toe == MHD_REQUEST_TERMINATED_COMPLETED_OK, what);
}

static void
http_mhd_log(void *cls, const char *fmt, va_list ap)
{
	struct relay *rl = cls;
	char line[512];
	size_t n;

	if (!log_enabled(LOG_DEBUG) && !rl->rl_starting)
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	/* Why a daemon did not start (GnuTLS refusing the certificate or
	 * key) is only ever said here, in its first message; the ones after
	 * it say that starting failed. */
	if (rl->rl_starting && rl->rl_mhd_error[0] == '\0')
		snprintf(rl->rl_mhd_error, sizeof(rl->rl_mhd_error), "%s", line);
	log_debug("libmicrohttpd: %s", line);
}

/* The signature covers the path exactly as sent, and names never need
 * escaping: keep the URL as it came. */
static size_t
http_unescape(void *cls, struct MHD_Connection *c, char *s)
{
	(void)cls;
	(void)c;
	return strlen(s);
}

int
http_auth_start(struct relay *rl, char *err, size_t errlen)
{
	const struct relay_config *cf = rl->rl_cf;

	rl->rl_auth = auth_verifier_new((unsigned)cf->cf_clock_skew, (size_t)cf->cf_max_nonces);
	if (rl->rl_auth == NULL) {
		snprintf(err, errlen, "cannot allocate the nonce store (max_nonces = %llu)",
		    (unsigned long long)cf->cf_max_nonces);
		return -1;
	}
	auth_verifier_set_key_check(rl->rl_auth, http_key_known, (void *)(uintptr_t)cf);
	return 0;
}

int
http_tls_start(struct relay *rl, char *err, size_t errlen)
{
	const struct relay_config *cf = rl->rl_cf;

	rl->rl_hup_fd = -1;
	if (cf->cf_tls_cert == NULL)
		return 0;
	if (MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
		snprintf(err, errlen, "this libmicrohttpd was built without TLS "
		    "support: serve plain HTTP behind a TLS proxy instead");
		return -1;
	}
	if (tls_load(&rl->rl_tls, cf->cf_tls_cert, cf->cf_tls_key, err,
	    errlen) == -1)
		return -1;
	if ((rl->rl_hup_fd = epoll_create1(EPOLL_CLOEXEC)) == -1 ||
	    loop_watch(rl->rl_loop, rl->rl_hup_fd, LOOP_READ, http_hup_event,
	    rl) == -1) {
		snprintf(err, errlen, "cannot set up watching parked TLS "
		    "connections: %s", strerror(errno));
		http_tls_stop(rl);
		return -1;
	}
	return 0;
}

void
http_tls_stop(struct relay *rl)
{
	if (rl->rl_hup_fd >= 0) {
		loop_unwatch(rl->rl_loop, rl->rl_hup_fd);
		close(rl->rl_hup_fd);
	}
	rl->rl_hup_fd = -1;
	tls_free(&rl->rl_tls);
}

int
http_start(struct relay_shard *sh, char *err, size_t errlen)
{
	struct relay *rl = sh->sh_relay;
	const struct relay_config *cf = rl->rl_cf;
	const union MHD_DaemonInfo *di;
	struct MHD_OptionItem tls[4];
	unsigned int flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME |
	    MHD_USE_ITC | MHD_USE_NO_LISTEN_SOCKET | MHD_USE_ERROR_LOG;

	/* HTTPS: each daemon gets the same PEM text; GnuTLS parses it and
	 * checks that the key belongs to the certificate. */
	memset(tls, 0, sizeof(tls));
	tls[0].option = MHD_OPTION_END;
	if (rl->rl_tls.tl_cert != NULL) {
		flags |= MHD_USE_TLS;
		tls[0].option = MHD_OPTION_HTTPS_MEM_CERT;
		tls[0].ptr_value = rl->rl_tls.tl_cert;
		tls[1].option = MHD_OPTION_HTTPS_MEM_KEY;
		tls[1].ptr_value = rl->rl_tls.tl_key;
		tls[2].option = MHD_OPTION_HTTPS_PRIORITIES;
		tls[2].ptr_value = (void *)(uintptr_t)HTTP_TLS_PRIORITIES;
		tls[3].option = MHD_OPTION_END;
	}

	/* No libmicrohttpd timeouts (0, its default): HTTP connections idle
	 * between requests, or slow over one, are closed after idle_timeout
	 * by their relay_conn timer; parked requests and a circuit's streams
	 * are timed by the relay.  (A per-connection timeout would put the
	 * connection on a list libmicrohttpd 0.9.75 walks in full on every
	 * run.)  No listening socket: relay.c accepts. */
	rl->rl_starting = 1;
	rl->rl_mhd_error[0] = '\0';
	sh->sh_mhd = MHD_start_daemon(flags, 0, NULL, NULL, http_access, sh,
	    MHD_OPTION_EXTERNAL_LOGGER, http_mhd_log, rl,
	    MHD_OPTION_CONNECTION_LIMIT, rl->rl_max_connections,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(sh->sh_upload ?
	    cf->cf_upload_memory : cf->cf_connection_memory),
	    MHD_OPTION_CONNECTION_TIMEOUT, 0u,
	    MHD_OPTION_NOTIFY_CONNECTION, http_conn_notify, sh,
	    MHD_OPTION_NOTIFY_COMPLETED, http_completed, sh,
	    MHD_OPTION_UNESCAPE_CALLBACK, http_unescape, rl,
	    MHD_OPTION_SIGPIPE_HANDLED_BY_APP, 1,
	    MHD_OPTION_ARRAY, tls,
	    MHD_OPTION_END);
	rl->rl_starting = 0;
	/* The certificate and key are the first daemon's problem; a later
	 * one fails for other reasons. */
	if (sh->sh_mhd == NULL && rl->rl_tls.tl_cert != NULL &&
	    rl->rl_nshards == 0)
		snprintf(err, errlen, "cannot serve HTTPS with TLS certificate %s "
		    "and key %s: %s", cf->cf_tls_cert, cf->cf_tls_key,
		    rl->rl_mhd_error[0] ? rl->rl_mhd_error :
		    "libmicrohttpd gave no reason");
	else if (sh->sh_mhd == NULL && rl->rl_mhd_error[0])
		snprintf(err, errlen, "libmicrohttpd did not start: %s",
		    rl->rl_mhd_error);
	else if (sh->sh_mhd == NULL)
		snprintf(err, errlen, "libmicrohttpd did not start (run with -v -v "
		    "for its reason)");
	if (sh->sh_mhd == NULL)
		return -1;
	di = MHD_get_daemon_info(sh->sh_mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (di == NULL || di->epoll_fd < 0) {
		snprintf(err, errlen, "libmicrohttpd has no epoll descriptor");
		MHD_stop_daemon(sh->sh_mhd);
		sh->sh_mhd = NULL;
		return -1;
	}
	sh->sh_fd = di->epoll_fd;
	return 0;
}
