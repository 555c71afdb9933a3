/* The pump between one local TCP socket and two HTTP streams.
 *
 * Everything runs on the loop's thread.  Curl's callbacks (read, write,
 * header) may run inside curl_multi_socket_action or inside our own
 * curl_easy_pause, so they only change flags, move bytes and arm the
 * "kick" timer; starting a transfer, unpausing the other transfer and
 * tearing the tunnel down happen in the kick, outside curl.  A tunnel is
 * freed only from the kick (or tunnel_close, which callers use outside
 * curl), so no callback ever sees freed memory. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>

#include "mproxy.h"
#include "ring.h"
#include "tunnel.h"

_Static_assert(TUNNEL_FILL_PAUSE == CURL_READFUNC_PAUSE, "read pause");
_Static_assert(TUNNEL_FEED_PAUSE == CURL_WRITEFUNC_PAUSE, "write pause");

#define TUNNEL_REASON_MAX   320
#define TUNNEL_ERRBODY_MAX  2048    /* relay error bodies we keep */
#define TUNNEL_ERRJSON_MAX  1024    /* error frame payload we keep */
#define TUNNEL_RECV_MIN     16384   /* curl's smallest buffers */
#define TUNNEL_RECV_MAX     (512 * 1024)       /* CURLOPT_BUFFERSIZE limit */
#define TUNNEL_SEND_MAX     (2 * 1024 * 1024)  /* CURLOPT_UPLOAD_BUFFERSIZE */
#define TUNNEL_PING         "[1,\"ping\"]"

struct tunnel_batch {
	struct tunnel *tb_owner;           /* whose bytes tb_buf holds */
	size_t         tb_len;
	uint8_t        tb_buf[TUNNEL_BATCH_SIZE];
};

struct tunnel_stream {
	struct curlloop_xfer ts_x;
	struct curl_slist   *ts_hdrs;
	struct tunnel       *ts_t;
	const char          *ts_call;      /* "connect", "upstream", ... */
	long                 ts_status;    /* final status, once headers end */
	int                  ts_done;      /* completed with 200 */
	char                *ts_body;      /* TUNNEL_ERRBODY_MAX, on use */
	size_t               ts_body_len;
	char                 ts_errbuf[CURL_ERROR_SIZE];
};

struct tunnel {
	const struct tunnel_env *tn_env;
	enum tunnel_side tn_side;
	int              tn_fd;
	int              tn_watch;         /* loop events now watched */
	char             tn_server[RELAYCALL_NAME_MAX + 1];
	char             tn_port[RELAYCALL_NAME_MAX + 1];
	char             tn_id[RELAYCALL_NAME_MAX + 1];
	struct net_peer  tn_peer;
	struct tunnel_cbs tn_cbs;
	void            *tn_arg;

	struct tunnel_stream tn_down, tn_up;
	struct mproxy_decoder *tn_dec;
	struct ring      tn_out;           /* download bytes the socket refused */

	/* upload */
	int      tn_up_started;
	int      tn_up_paused;             /* read callback paused: want READ */
	int      tn_read_kept;             /* READ still watched after unpause */
	int      tn_conn_pending;          /* connection frame not written */
	int      tn_ping_pending;
	int      tn_rd_eof;                /* the socket said end of stream */
	int      tn_sock_err;              /* errno of a failed socket */
	int      tn_end_sent;              /* end or error frame written */
	int      tn_body_done;             /* the body has ended */
	uint64_t tn_up_last;               /* ms: last upload bytes */

	/* download */
	int      tn_down_paused;           /* write callback paused: want WRITE */
	int      tn_end_rcvd;
	int      tn_shut;                  /* shutdown(SHUT_WR) done */
	int      tn_have_peer;
	char    *tn_errjson;               /* TUNNEL_ERRJSON_MAX, on use */
	size_t   tn_errjson_len;

	/* lifecycle */
	int      tn_opened;
	int      tn_want_open;
	int      tn_want_upload;
	int      tn_want_accepted;
	int      tn_want_unpause;
	int      tn_closing;
	int      tn_reset;                 /* close with SO_LINGER 0 */
	char     tn_reason[TUNNEL_REASON_MAX];
	struct loop_timer tn_kick;
	struct loop_timer tn_ping;

	uint64_t tn_up_bytes, tn_down_bytes, tn_start;
};

static void tunnel_kick(struct tunnel *t);
static void tunnel_check_done(struct tunnel *t);
static void tunnel_batch_flush(struct tunnel_batch *b);

struct tunnel_batch *
tunnel_batch_new(void)
{
	return calloc(1, sizeof(struct tunnel_batch));
}

void
tunnel_batch_free(struct tunnel_batch *b)
{
	free(b);
}

/* The bytes of t the batch still holds (0 without a batch). */
static size_t
tunnel_batched(const struct tunnel *t)
{
	const struct tunnel_batch *b = t->tn_env->te_batch;

	return b != NULL && b->tb_owner == t ? b->tb_len : 0;
}

static void
tunnel_batch_drop(struct tunnel *t)
{
	struct tunnel_batch *b = t->tn_env->te_batch;

	if (b != NULL && b->tb_owner == t) {
		b->tb_owner = NULL;
		b->tb_len = 0;
	}
}

static const char *
tunnel_local_role(const struct tunnel *t)
{
	return t->tn_side == TUNNEL_CLIENT ? "client" : "target";
}

/* ---- socket watching ------------------------------------------------ */

/* Watch only what we wait for; an empty mask unregisters, because epoll
 * reports hang-ups on any registered socket and would spin the loop. */
static void
tunnel_watch(struct tunnel *t)
{
	int want = 0;

	if (t->tn_fd < 0)
		return;
	if (!t->tn_closing) {
		/* The read watch outlives an unpause: the upload mostly
		 * pauses again within one message, and dropping and adding
		 * the watch would cost two epoll_ctl calls every time.
		 * tunnel_on_io drops it when it fires for nothing. */
		if (t->tn_up_paused || t->tn_read_kept)
			want |= LOOP_READ;
		if (ring_len(&t->tn_out) > 0)
			want |= LOOP_WRITE;
	}
	if (want == t->tn_watch)
		return;
	if (want == 0)
		loop_unwatch(t->tn_env->te_loop, t->tn_fd);
	else if (loop_watch(t->tn_env->te_loop, t->tn_fd, want, tunnel_on_io,
	    t) == -1) {
		/* Without a watch the tunnel would stall forever. */
		t->tn_closing = 1;
		t->tn_reset = 1;
		snprintf(t->tn_reason, sizeof(t->tn_reason),
		    "cannot watch the socket: %s", strerror(errno));
		tunnel_kick(t);
		return;
	}
	t->tn_watch = want;
}

/* ---- failure and teardown -------------------------------------------- */

static void
tunnel_fail(struct tunnel *t, int reset, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Marks the tunnel for teardown (done in the kick, outside curl). */
static void
tunnel_fail(struct tunnel *t, int reset, const char *fmt, ...)
{
	va_list ap;

	if (t->tn_closing)
		return;
	t->tn_closing = 1;
	t->tn_reset = reset;
	va_start(ap, fmt);
	vsnprintf(t->tn_reason, sizeof(t->tn_reason), fmt, ap);
	va_end(ap);
	tunnel_watch(t);
	tunnel_kick(t);
}

static void
tunnel_stream_free(struct tunnel *t, struct tunnel_stream *s)
{
	if (s->ts_x.cx_easy != NULL) {
		if (t->tn_env->te_curl != NULL)
			curlloop_remove(t->tn_env->te_curl, &s->ts_x);
		curl_easy_cleanup(s->ts_x.cx_easy);
		s->ts_x.cx_easy = NULL;
	}
	curl_slist_free_all(s->ts_hdrs);
	s->ts_hdrs = NULL;
	free(s->ts_body);
	s->ts_body = NULL;
	s->ts_body_len = 0;
}

static void
tunnel_teardown(struct tunnel *t)
{
	struct loop *l = t->tn_env->te_loop;

	loop_timer_stop(l, &t->tn_kick);
	loop_timer_stop(l, &t->tn_ping);
	tunnel_batch_drop(t);
	tunnel_stream_free(t, &t->tn_down);
	tunnel_stream_free(t, &t->tn_up);
	if (t->tn_fd >= 0) {
		loop_unwatch(l, t->tn_fd);
		if (t->tn_reset)
			net_reset_close(t->tn_fd);
		else
			close(t->tn_fd);
		t->tn_fd = -1;
	}
	ring_free(&t->tn_out);
	mproxy_decoder_free(t->tn_dec);
	t->tn_dec = NULL;
	free(t->tn_errjson);
	t->tn_errjson = NULL;
	if (t->tn_cbs.tc_closed != NULL)
		t->tn_cbs.tc_closed(t, t->tn_reason, t->tn_arg);
	free(t);
}

void
tunnel_close(struct tunnel *t, const char *reason)
{
	if (!t->tn_closing) {
		t->tn_closing = 1;
		t->tn_reset = 1;
		snprintf(t->tn_reason, sizeof(t->tn_reason), "%s", reason);
	}
	tunnel_teardown(t);
}

/* The local socket failed (reset, broken pipe): the peer must hear of
 * it through an error frame, then the tunnel ends. */
static void
tunnel_sock_failed(struct tunnel *t, int e)
{
	if (t->tn_sock_err == 0)
		t->tn_sock_err = e;
	tunnel_batch_drop(t);
	ring_free(&t->tn_out);
	t->tn_down_paused = 0;
	if (t->tn_up_paused) {
		t->tn_up_paused = 0;
		t->tn_want_unpause = 1;
		tunnel_kick(t);
	}
	tunnel_watch(t);
	tunnel_check_done(t);
}

/* ---- the kick: deferred work, outside curl --------------------------- */

static int tunnel_start_upload(struct tunnel *t, char *err, size_t errlen);

static void
tunnel_on_kick(struct loop *l, void *arg)
{
	struct tunnel *t = arg;
	char err[256];

	(void)l;
	if (t->tn_closing) {
		tunnel_teardown(t);
		return;
	}
	/* Curl has returned: what the batch holds goes out now. */
	if (tunnel_batched(t) > 0) {
		tunnel_batch_flush(t->tn_env->te_batch);
		if (t->tn_closing) {
			tunnel_teardown(t);
			return;
		}
	}
	if (t->tn_want_upload) {
		t->tn_want_upload = 0;
		if (tunnel_start_upload(t, err, sizeof(err)) == -1) {
			tunnel_fail(t, 1, "cannot start the %s: %s",
			    t->tn_side == TUNNEL_CLIENT ? "upstream" :
			    "downstream", err);
			tunnel_teardown(t);
			return;
		}
		/* The first bytes wait for this request: out with it. */
		curlloop_flush(t->tn_env->te_curl);
		if (t->tn_closing) {
			tunnel_teardown(t);
			return;
		}
	}
	if (t->tn_want_accepted) {
		t->tn_want_accepted = 0;
		if (t->tn_cbs.tc_accepted != NULL)
			t->tn_cbs.tc_accepted(t, t->tn_arg);
	}
	if (t->tn_want_open && !t->tn_opened) {
		t->tn_want_open = 0;
		t->tn_opened = 1;
		if (t->tn_cbs.tc_open != NULL)
			t->tn_cbs.tc_open(t, t->tn_arg);
	}
	if (t->tn_want_unpause) {
		t->tn_want_unpause = 0;
		if (t->tn_up.ts_x.cx_active)
			curl_easy_pause(t->tn_up.ts_x.cx_easy, CURLPAUSE_CONT);
	}
	/* The unpause may have run callbacks that closed the tunnel. */
	if (t->tn_closing)
		tunnel_teardown(t);
}

static void
tunnel_kick(struct tunnel *t)
{
	if (!loop_timer_armed(&t->tn_kick))
		loop_timer_start(t->tn_env->te_loop, &t->tn_kick, 0);
}

static void
tunnel_check_done(struct tunnel *t)
{
	if (t->tn_closing)
		return;
	if (t->tn_sock_err != 0) {
		/* Our error frame is out once the upload completed. */
		if (!t->tn_body_done || !t->tn_up.ts_done)
			return;
		if (t->tn_sock_err == ECONNRESET || t->tn_sock_err == EPIPE)
			tunnel_fail(t, 1, "%s reset", tunnel_local_role(t));
		else
			tunnel_fail(t, 1, "%s socket error: %s",
			    tunnel_local_role(t), strerror(t->tn_sock_err));
		return;
	}
	if (t->tn_body_done && t->tn_up.ts_done && t->tn_end_rcvd &&
	    t->tn_shut && t->tn_down.ts_done)
		tunnel_fail(t, 0, "done");
}

/* ---- keepalive --------------------------------------------------------- */

static void
tunnel_on_ping(struct loop *l, void *arg)
{
	struct tunnel *t = arg;
	uint64_t now = loop_now_ms(), ka = t->tn_env->te_keepalive_ms, idle;

	if (t->tn_closing || t->tn_body_done || ka == 0)
		return;
	idle = now - t->tn_up_last;
	if (idle + 5 < ka) {
		loop_timer_start(l, &t->tn_ping, ka - idle);
		return;
	}
	t->tn_ping_pending = 1;
	t->tn_up_last = now;
	if (t->tn_up_paused) {
		t->tn_up_paused = 0;
		tunnel_watch(t);
		if (t->tn_up.ts_x.cx_active)
			curl_easy_pause(t->tn_up.ts_x.cx_easy, CURLPAUSE_CONT);
	}
	if (!t->tn_closing)
		loop_timer_start(l, &t->tn_ping, ka);
}

/* ---- frames we send ------------------------------------------------------ */

static void
tunnel_meta(const struct tunnel *t, struct mproxy_meta *m)
{
	memset(m, 0, sizeof(*m));
	m->family = t->tn_peer.np_family;
	m->address = t->tn_peer.np_address;
	m->port = t->tn_peer.np_address[0] ? (long)t->tn_peer.np_port :
	    MPROXY_ABSENT;
	m->service = "tcp";
	m->serviceport = MPROXY_ABSENT;
	m->name = NULL;
}

static size_t
tunnel_digits(size_t n)
{
	size_t d = 1;

	while (n >= 10) {
		n /= 10;
		d++;
	}
	return d;
}

/* Writes a whole small frame (pack() form) if it fits; 0 if not. */
static size_t
tunnel_put_frame(struct tunnel *t, const char *service, const void *data,
    size_t len, uint8_t *buf, size_t room)
{
	struct mproxy_meta m;
	char err[MPROXY_ERR_MAX];
	long n;

	tunnel_meta(t, &m);
	n = mproxy_pack(&m, service, data, len, buf, room, err, sizeof(err));
	return n < 0 ? 0 : (size_t)n;
}

static size_t
tunnel_put_error(struct tunnel *t, uint8_t *buf, size_t room)
{
	char msg[160], where[NET_ADDR_TEXT_MAX], namebuf[16];
	const char *code;
	json_t *j;
	char *text;
	size_t n = 0;

	net_peer_text(&t->tn_peer, where, sizeof(where));
	code = net_errno_name(t->tn_sock_err, namebuf, sizeof(namebuf));
	if (t->tn_side == TUNNEL_CLIENT)
		snprintf(msg, sizeof(msg), "client %s: %s", where,
		    strerror(t->tn_sock_err));
	else
		snprintf(msg, sizeof(msg), "target of %s/%s: %s", t->tn_server,
		    t->tn_port, strerror(t->tn_sock_err));
	j = json_pack("{s:s, s:s}", "message", msg, "code", code);
	text = j ? json_dumps(j, JSON_COMPACT) : NULL;
	if (text != NULL)
		n = tunnel_put_frame(t, "error", text, strlen(text), buf, room);
	free(text);
	json_decref(j);
	return n;
}

size_t
tunnel_upload_fill(struct tunnel *t, uint8_t *buf, size_t room)
{
	uint8_t head[MPROXY_FRAME_HEAD_MAX];
	char err[MPROXY_ERR_MAX];
	struct mproxy_meta m, cm;
	size_t off = 0, want, hres, hl, hlen0;
	ssize_t r;
	int n;

	if (t->tn_closing)
		return TUNNEL_FILL_PAUSE;
	if (t->tn_body_done)
		return 0;
	tunnel_meta(t, &m);
	if (t->tn_conn_pending) {
		cm = m;
		cm.service = t->tn_port;
		cm.name = t->tn_server;
		n = mproxy_pack_header(&cm, "connection", 0, head, err,
		    sizeof(err));
		if (n < 0) {
			tunnel_fail(t, 1, "cannot make the connection frame: %s",
			    err);
			return TUNNEL_FILL_PAUSE;
		}
		if ((size_t)n > room)
			return TUNNEL_FILL_PAUSE;
		memcpy(buf, head, (size_t)n);
		off = (size_t)n;
		t->tn_conn_pending = 0;
	}
	if (t->tn_ping_pending && !t->tn_end_sent) {
		size_t p = tunnel_put_frame(t, "control", TUNNEL_PING,
		    strlen(TUNNEL_PING), buf + off, room - off);

		if (p > 0) {
			off += p;
			t->tn_ping_pending = 0;
		}
	}
	/* Header length for a payload of n bytes: hlen0 - 1 + digits(n). */
	n = mproxy_pack_header(&m, "tcp", 0, head, err, sizeof(err));
	if (n < 0) {
		tunnel_fail(t, 1, "cannot make a data frame: %s", err);
		return TUNNEL_FILL_PAUSE;
	}
	hlen0 = (size_t)n;
	while (!t->tn_end_sent) {
		size_t before = off;

		if (t->tn_sock_err != 0) {
			off += tunnel_put_error(t, buf + off, room - off);
			if (off > before)
				t->tn_end_sent = 1;
			break;
		}
		if (t->tn_rd_eof) {
			off += tunnel_put_frame(t, "end", NULL, 0, buf + off,
			    room - off);
			if (off > before)
				t->tn_end_sent = 1;
			break;
		}
		if (room - off < hlen0 + 1)
			break;
		/* Reserve the header for the largest read, recv() the
		 * payload right behind it; a short read with fewer digits
		 * slides its (small) payload back a byte or two. */
		want = room - off - hlen0;
		if (want > t->tn_env->te_frame_max)
			want = t->tn_env->te_frame_max;
		hres = hlen0 - 1 + tunnel_digits(want);
		if (hres + want > room - off)
			want = room - off - hres;
		if (want == 0)
			break;
		hres = hlen0 - 1 + tunnel_digits(want);
		r = recv(t->tn_fd, buf + off + hres, want, 0);
		if (r > 0) {
			hl = hlen0 - 1 + tunnel_digits((size_t)r);
			if (mproxy_pack_header(&m, "tcp", (size_t)r, head, err,
			    sizeof(err)) != (int)hl) {
				tunnel_fail(t, 1, "cannot make a data frame: %s",
				    err);
				return TUNNEL_FILL_PAUSE;
			}
			if (hl < hres)
				memmove(buf + off + hl, buf + off + hres,
				    (size_t)r);
			memcpy(buf + off, head, hl);
			off += hl + (size_t)r;
			t->tn_up_bytes += (uint64_t)r;
			/* A short read drained the socket: spare a recv()
			 * that would only say EAGAIN. */
			if ((size_t)r < want)
				break;
			continue;
		}
		if (r == 0) {
			t->tn_rd_eof = 1;
			continue;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN || errno == EWOULDBLOCK)
			break;
		if (t->tn_sock_err == 0)
			t->tn_sock_err = errno;
	}
	if (off == 0) {
		if (t->tn_end_sent) {
			t->tn_body_done = 1;
			loop_timer_stop(t->tn_env->te_loop, &t->tn_ping);
			return 0;
		}
		t->tn_up_paused = 1;
		tunnel_watch(t);
		return TUNNEL_FILL_PAUSE;
	}
	t->tn_up_last = loop_now_ms();
	return off;
}

static size_t
tunnel_read_cb(char *buf, size_t size, size_t nitems, void *arg)
{
	return tunnel_upload_fill(arg, (uint8_t *)buf, size * nitems);
}

/* Curl rewinds a body to resend it on a fresh connection when a reused
 * one turned out dead.  That works while nothing but the connection
 * frame has gone out. */
static int
tunnel_seek_cb(void *arg, curl_off_t offset, int origin)
{
	struct tunnel *t = arg;

	if (offset != 0 || origin != SEEK_SET || t->tn_up_bytes != 0 ||
	    t->tn_end_sent)
		return CURL_SEEKFUNC_CANTSEEK;
	t->tn_conn_pending = t->tn_side == TUNNEL_CLIENT;
	return CURL_SEEKFUNC_OK;
}

/* ---- frames we receive ----------------------------------------------- */

static void
tunnel_shut_if_due(struct tunnel *t)
{
	if (t->tn_end_rcvd && !t->tn_shut && tunnel_batched(t) > 0)
		tunnel_batch_flush(t->tn_env->te_batch);
	if (t->tn_end_rcvd && !t->tn_shut && ring_len(&t->tn_out) == 0 &&
	    t->tn_sock_err == 0) {
		if (shutdown(t->tn_fd, SHUT_WR) == -1 && errno != ENOTCONN) {
			tunnel_sock_failed(t, errno);
			return;
		}
		t->tn_shut = 1;
		tunnel_check_done(t);
	}
}

/* Sends what the ring holds; returns -1 when the socket failed. */
static int
tunnel_flush(struct tunnel *t)
{
	const uint8_t *p;
	size_t n;
	ssize_t s;

	while ((p = ring_peek(&t->tn_out, &n)) != NULL) {
		s = send(t->tn_fd, p, n, MSG_NOSIGNAL);
		if (s < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			tunnel_sock_failed(t, errno);
			return -1;
		}
		ring_drop(&t->tn_out, (size_t)s);
	}
	return 0;
}

/* Sends p (n bytes) for t now; what the socket refuses goes to the
 * ring.  Returns -1 when the socket failed or memory ran out (the tunnel
 * is then failing). */
static int
tunnel_send(struct tunnel *t, const uint8_t *p, size_t n)
{
	ssize_t s;

	while (n > 0) {
		s = send(t->tn_fd, p, n, MSG_NOSIGNAL);
		if (s < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				break;
			tunnel_sock_failed(t, errno);
			return -1;
		}
		p += s;
		n -= (size_t)s;
	}
	if (n == 0)
		return 0;
	if (ring_write(&t->tn_out, p, n) != n) {
		tunnel_fail(t, 1, "out of memory for the download buffer");
		return -1;
	}
	tunnel_watch(t);
	return 0;
}

static void
tunnel_batch_flush(struct tunnel_batch *b)
{
	struct tunnel *t = b->tb_owner;
	size_t n = b->tb_len;

	if (t == NULL)
		return;
	b->tb_owner = NULL;
	b->tb_len = 0;
	if (t->tn_sock_err == 0 && !t->tn_closing)
		(void)tunnel_send(t, b->tb_buf, n);
}

static void
tunnel_deliver(struct tunnel *t, const uint8_t *p, size_t n)
{
	struct tunnel_batch *b = t->tn_env->te_batch;
	size_t cap, take;

	t->tn_down_bytes += n;
	if (t->tn_sock_err != 0)
		return;
	if (ring_len(&t->tn_out) > 0) {
		/* Behind bytes the socket refused: keep the order. */
		if (ring_write(&t->tn_out, p, n) != n)
			tunnel_fail(t, 1, "out of memory for the download "
			    "buffer");
		return;
	}
	/* What a flush leaves goes to the ring, and the rest of curl's
	 * piece behind it: both must fit. */
	cap = t->tn_env->te_buffer > 2 * CURL_MAX_WRITE_SIZE ?
	    t->tn_env->te_buffer - CURL_MAX_WRITE_SIZE : 0;
	if (cap > TUNNEL_BATCH_SIZE)
		cap = TUNNEL_BATCH_SIZE;
	if (b == NULL || cap == 0) {
		(void)tunnel_send(t, p, n);
		return;
	}
	if (b->tb_owner != t)
		tunnel_batch_flush(b);
	while (n > 0) {
		take = cap - b->tb_len;
		if (take > n)
			take = n;
		memcpy(b->tb_buf + b->tb_len, p, take);
		b->tb_len += take;
		b->tb_owner = t;
		p += take;
		n -= take;
		if (b->tb_len < cap)
			break;
		tunnel_batch_flush(b);
		if (t->tn_sock_err != 0 || t->tn_closing)
			return;
		if (n > 0 && ring_len(&t->tn_out) > 0) {
			if (ring_write(&t->tn_out, p, n) != n)
				tunnel_fail(t, 1, "out of memory for the "
				    "download buffer");
			return;
		}
	}
	if (b->tb_len > 0)
		tunnel_kick(t);
}

static int
tunnel_port_parse(const char *s, uint16_t *port)
{
	unsigned long v = 0;

	if (*s == '\0' || strlen(s) > 5)
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		v = v * 10 + (unsigned long)(*s - '0');
	}
	if (v > 65535)
		return -1;
	*port = (uint16_t)v;
	return 0;
}

/* Server side: the connection frame names the TCP client. */
static void
tunnel_frame_connection(struct tunnel *t, const struct mproxy_frame *fr)
{
	struct net_peer p;
	size_t i;

	if (t->tn_side != TUNNEL_SERVER || t->tn_have_peer || !fr->first)
		return;
	t->tn_have_peer = 1;
	memset(&p, 0, sizeof(p));
	if ((strcmp(fr->family, "IPv4") == 0 ||
	    strcmp(fr->family, "IPv6") == 0) &&
	    strlen(fr->address) < sizeof(p.np_address) &&
	    tunnel_port_parse(fr->port, &p.np_port) == 0) {
		for (i = 0; fr->address[i] != '\0'; i++) {
			char c = fr->address[i];

			if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') ||
			    (c >= 'A' && c <= 'F') || c == '.' || c == ':'))
				break;
		}
		if (fr->address[i] == '\0' && i > 0) {
			snprintf(p.np_family, sizeof(p.np_family), "%s",
			    fr->family);
			snprintf(p.np_address, sizeof(p.np_address), "%s",
			    fr->address);
			t->tn_peer = p;
		}
	}
	t->tn_want_open = 1;
	tunnel_kick(t);
}

static void
tunnel_frame_error(struct tunnel *t, const struct mproxy_frame *fr)
{
	char msg[200], code[72];
	json_t *j, *v;
	size_t n;

	/* Allocated here: an idle tunnel should not carry error space. */
	if (t->tn_errjson == NULL)
		t->tn_errjson = malloc(TUNNEL_ERRJSON_MAX);
	n = fr->len;
	if (t->tn_errjson == NULL)
		n = 0;
	else if (n > TUNNEL_ERRJSON_MAX - t->tn_errjson_len)
		n = TUNNEL_ERRJSON_MAX - t->tn_errjson_len;
	if (n > 0)
		memcpy(t->tn_errjson + t->tn_errjson_len, fr->data, n);
	t->tn_errjson_len += n;
	if (!fr->last)
		return;
	snprintf(msg, sizeof(msg), "(no message)");
	code[0] = '\0';
	j = t->tn_errjson_len > 0 ? json_loadb(t->tn_errjson,
	    t->tn_errjson_len, 0, NULL) : NULL;
	if (j != NULL) {
		if ((v = json_object_get(j, "message")) != NULL &&
		    json_is_string(v))
			snprintf(msg, sizeof(msg), "%s", json_string_value(v));
		if ((v = json_object_get(j, "code")) != NULL &&
		    json_is_string(v))
			snprintf(code, sizeof(code), "%s", json_string_value(v));
		json_decref(j);
	}
	for (n = 0; msg[n] != '\0'; n++)
		if ((unsigned char)msg[n] < 0x20 || msg[n] == 0x7f)
			msg[n] = '?';
	for (n = 0; code[n] != '\0'; n++)
		if ((unsigned char)code[n] <= 0x20 || code[n] == 0x7f)
			code[n] = '?';
	tunnel_fail(t, 1, "peer error: %s%s%s%s", msg, code[0] ? " (" : "",
	    code, code[0] ? ")" : "");
}

static void
tunnel_frame(struct tunnel *t, const struct mproxy_frame *fr)
{
	const char *svc = fr->service;

	if (strcmp(svc, "tcp") == 0) {
		if (t->tn_end_rcvd) {
			tunnel_fail(t, 1, "malformed stream from relay: data "
			    "after the end frame");
			return;
		}
		if (fr->len > 0)
			tunnel_deliver(t, fr->data, fr->len);
	} else if (strcmp(svc, "end") == 0) {
		if (fr->last) {
			t->tn_end_rcvd = 1;
			tunnel_shut_if_due(t);
		}
	} else if (strcmp(svc, "error") == 0)
		tunnel_frame_error(t, fr);
	else if (strcmp(svc, "connection") == 0)
		tunnel_frame_connection(t, fr);
	/* control, pause, resume and services of later versions: ignored. */
}

size_t
tunnel_download_feed(struct tunnel *t, const uint8_t *buf, size_t len)
{
	struct mproxy_frame fr;
	enum mproxy_result r;
	size_t off = 0, used;

	if (t->tn_closing)
		return len;
	if (ring_len(&t->tn_out) > 0) {
		if (tunnel_flush(t) == -1)
			return len;
		/* Pause without consuming: curl keeps the chunk and offers
		 * it again once we unpause; the ring stays bounded. */
		if (ring_len(&t->tn_out) > 0 && ring_space(&t->tn_out) < len) {
			t->tn_down_paused = 1;
			tunnel_watch(t);
			return TUNNEL_FEED_PAUSE;
		}
		if (ring_len(&t->tn_out) == 0) {
			tunnel_watch(t);
			tunnel_shut_if_due(t);
		}
	}
	while (off < len && !t->tn_closing) {
		used = 0;
		r = mproxy_decoder_feed(t->tn_dec, buf + off, len - off, &used,
		    &fr);
		off += used;
		if (r == MPROXY_ERROR) {
			tunnel_fail(t, 1, "malformed stream from relay: %s",
			    mproxy_decoder_error(t->tn_dec));
			break;
		}
		if (r == MPROXY_FRAME)
			tunnel_frame(t, &fr);
		else if (used == 0)
			break;
	}
	return len;
}

/* ---- curl callbacks ------------------------------------------------------ */

static void
tunnel_keep_body(struct tunnel_stream *s, const char *p, size_t n)
{
	if (n == 0)
		return;
	/* Error bodies are rare: no space for them until one comes. */
	if (s->ts_body == NULL && (s->ts_body = malloc(TUNNEL_ERRBODY_MAX)) ==
	    NULL)
		return;
	if (n > TUNNEL_ERRBODY_MAX - s->ts_body_len)
		n = TUNNEL_ERRBODY_MAX - s->ts_body_len;
	memcpy(s->ts_body + s->ts_body_len, p, n);
	s->ts_body_len += n;
}

static size_t
tunnel_write_cb(char *p, size_t size, size_t nmemb, void *arg)
{
	struct tunnel_stream *s = arg;
	size_t len = size * nmemb;

	if (s->ts_status != 200 || s == &s->ts_t->tn_up) {
		tunnel_keep_body(s, p, len);
		return len;
	}
	return tunnel_download_feed(s->ts_t, (const uint8_t *)p, len);
}

static void
tunnel_headers_done(struct tunnel_stream *s)
{
	struct tunnel *t = s->ts_t;

	if (s != &t->tn_down || s->ts_status != 200 || t->tn_closing)
		return;
	if (t->tn_side == TUNNEL_SERVER) {
		t->tn_want_upload = 1;
		t->tn_want_accepted = 1;
		tunnel_kick(t);
		return;
	}
	if (!relaycall_name_valid(t->tn_id)) {
		tunnel_fail(t, 1, "relay answered 200 to connect without a "
		    "valid Postern-Connection header");
		return;
	}
	t->tn_want_upload = 1;
	t->tn_want_open = 1;
	tunnel_kick(t);
}

static size_t
tunnel_header_cb(char *p, size_t size, size_t nmemb, void *arg)
{
	struct tunnel_stream *s = arg;
	struct tunnel *t = s->ts_t;
	size_t len = size * nmemb, n;
	int code;

	if (len > 5 && strncmp(p, "HTTP/", 5) == 0) {
		const char *sp = memchr(p, ' ', len);

		s->ts_status = 0;
		if (sp != NULL && (size_t)(sp - p) + 4 <= len &&
		    sscanf(sp + 1, "%3d", &code) == 1)
			s->ts_status = code;
		return len;
	}
	if (len <= 2 && (p[0] == '\r' || p[0] == '\n')) {
		if (s->ts_status >= 200)
			tunnel_headers_done(s);
		return len;
	}
	if (s == &t->tn_down && len > 19 &&
	    strncasecmp(p, "Postern-Connection:", 19) == 0) {
		p += 19;
		len -= 19;
		while (len > 0 && (*p == ' ' || *p == '\t')) {
			p++;
			len--;
		}
		for (n = 0; n < len && p[n] != '\r' && p[n] != '\n' &&
		    p[n] != ' '; n++)
			;
		if (n < sizeof(t->tn_id)) {
			memcpy(t->tn_id, p, n);
			t->tn_id[n] = '\0';
		}
		return size * nmemb;
	}
	return len;
}

static void
tunnel_stream_failed(struct tunnel *t, struct tunnel_stream *s,
    CURLcode result)
{
	/* A connect that never opened closes quietly (FIN): no byte has
	 * moved, and a reset could even fail the TCP client's connect(). */
	int reset = t->tn_opened || t->tn_side == TUNNEL_SERVER;
	char desc[256];

	if (result != CURLE_OK) {
		/* curl only sees a cut body; say what cuts one. */
		tunnel_fail(t, reset, "relay stream failed (%s): the relay "
		    "ended the tunnel (the other proxy went away, the tunnel "
		    "idled out or the relay stopped) or the network failed: %s",
		    s->ts_call,
		    s->ts_errbuf[0] ? s->ts_errbuf : curl_easy_strerror(result));
		return;
	}
	relaycall_describe(s->ts_status, s->ts_body, s->ts_body_len, desc,
	    sizeof(desc));
	tunnel_fail(t, reset, "%s", desc);
}

static void
tunnel_down_done(struct curlloop_xfer *x, CURLcode result, void *arg)
{
	struct tunnel_stream *s = arg;
	struct tunnel *t = s->ts_t;

	(void)x;
	if (t->tn_closing)
		return;
	if (result != CURLE_OK || s->ts_status != 200) {
		/* Our own error frame is on its way: that is the story. */
		if (t->tn_sock_err != 0 && result != CURLE_OK)
			return;
		tunnel_stream_failed(t, s, result);
		return;
	}
	if (mproxy_decoder_finish(t->tn_dec) == -1) {
		tunnel_fail(t, 1, "relay stream failed: %s (%s)",
		    mproxy_decoder_error(t->tn_dec), s->ts_call);
		return;
	}
	if (!t->tn_end_rcvd && t->tn_sock_err == 0) {
		tunnel_fail(t, 1, "relay stream ended without an end frame "
		    "(%s): the other side vanished", s->ts_call);
		return;
	}
	s->ts_done = 1;
	tunnel_check_done(t);
}

static void
tunnel_up_done(struct curlloop_xfer *x, CURLcode result, void *arg)
{
	struct tunnel_stream *s = arg;
	struct tunnel *t = s->ts_t;

	(void)x;
	if (t->tn_closing)
		return;
	if (result != CURLE_OK || s->ts_status != 200) {
		tunnel_stream_failed(t, s, result);
		return;
	}
	if (!t->tn_body_done) {
		tunnel_fail(t, 1, "relay answered %s before its body ended",
		    s->ts_call);
		return;
	}
	s->ts_done = 1;
	tunnel_check_done(t);
}

/* ---- starting the streams ------------------------------------------------ */

static long
tunnel_clamp(size_t v, long lo, long hi)
{
	if (v < (size_t)lo)
		return lo;
	if (v > (size_t)hi)
		return hi;
	return (long)v;
}

static int
tunnel_stream_start(struct tunnel *t, struct tunnel_stream *s,
    const char *call, const char *arg, int upload, char *err, size_t errlen)
{
	static const char *const up_headers[] = {
		"Transfer-Encoding: chunked", "Expect:", NULL
	};
	char path[RELAYCALL_PATH_MAX];
	CURL *e;

	s->ts_t = t;
	s->ts_call = call;
	snprintf(path, sizeof(path), "/v1/s/%s/%s/%s", t->tn_server, call, arg);
	e = relaycall_easy(t->tn_env->te_relay, path,
	    upload ? up_headers : NULL, &s->ts_hdrs, err, errlen);
	if (e == NULL)
		return -1;
	s->ts_x.cx_easy = e;
	s->ts_x.cx_arg = s;
	s->ts_x.cx_errbuf = s->ts_errbuf;
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->ts_errbuf);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, tunnel_header_cb);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, s);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, tunnel_write_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, s);
	if (upload) {
		s->ts_x.cx_done = tunnel_up_done;
		curl_easy_setopt(e, CURLOPT_READFUNCTION, tunnel_read_cb);
		curl_easy_setopt(e, CURLOPT_READDATA, t);
		curl_easy_setopt(e, CURLOPT_SEEKFUNCTION, tunnel_seek_cb);
		curl_easy_setopt(e, CURLOPT_SEEKDATA, t);
		curl_easy_setopt(e, CURLOPT_BUFFERSIZE, (long)TUNNEL_RECV_MIN);
		curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE,
		    tunnel_clamp(t->tn_env->te_buffer, TUNNEL_RECV_MIN,
		    TUNNEL_SEND_MAX));
	} else {
		s->ts_x.cx_done = tunnel_down_done;
		curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
		curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
		curl_easy_setopt(e, CURLOPT_BUFFERSIZE,
		    tunnel_clamp(t->tn_env->te_buffer, TUNNEL_RECV_MIN,
		    TUNNEL_RECV_MAX));
	}
	if (curlloop_add(t->tn_env->te_curl, &s->ts_x, err, errlen) == -1) {
		tunnel_stream_free(t, s);
		return -1;
	}
	return 0;
}

static int
tunnel_start_upload(struct tunnel *t, char *err, size_t errlen)
{
	if (t->tn_up_started)
		return 0;
	t->tn_up_started = 1;
	t->tn_conn_pending = t->tn_side == TUNNEL_CLIENT;
	t->tn_up_last = loop_now_ms();
	if (tunnel_stream_start(t, &t->tn_up,
	    t->tn_side == TUNNEL_CLIENT ? "upstream" : "downstream", t->tn_id,
	    1, err, errlen) == -1)
		return -1;
	if (t->tn_env->te_keepalive_ms > 0)
		loop_timer_start(t->tn_env->te_loop, &t->tn_ping,
		    t->tn_env->te_keepalive_ms);
	return 0;
}

struct tunnel *
tunnel_new(const struct tunnel_env *env, enum tunnel_side side, int fd,
    const char *server, const char *port, const struct tunnel_cbs *cbs,
    void *arg, char *err, size_t errlen)
{
	struct tunnel *t;

	if (!relaycall_name_valid(server) || !relaycall_name_valid(port)) {
		snprintf(err, errlen, "invalid server or port name");
		return NULL;
	}
	if ((t = calloc(1, sizeof(*t))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	t->tn_dec = mproxy_decoder_new(MPROXY_PIECES, env->te_max_data);
	if (t->tn_dec == NULL) {
		free(t);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	t->tn_env = env;
	t->tn_side = side;
	t->tn_fd = fd;
	snprintf(t->tn_server, sizeof(t->tn_server), "%s", server);
	snprintf(t->tn_port, sizeof(t->tn_port), "%s", port);
	if (cbs != NULL)
		t->tn_cbs = *cbs;
	t->tn_arg = arg;
	ring_init(&t->tn_out, env->te_buffer);
	loop_timer_init(&t->tn_kick, tunnel_on_kick, t);
	loop_timer_init(&t->tn_ping, tunnel_on_ping, t);
	t->tn_start = loop_now_ms();
	t->tn_down.ts_t = t;
	t->tn_up.ts_t = t;
	t->tn_conn_pending = side == TUNNEL_CLIENT;
	return t;
}

void
tunnel_set_peer(struct tunnel *t, const struct net_peer *p)
{
	t->tn_peer = *p;
	t->tn_have_peer = 1;
}

int
tunnel_connect(struct tunnel *t, char *err, size_t errlen)
{
	return tunnel_stream_start(t, &t->tn_down, "connect", t->tn_port, 0,
	    err, errlen);
}

int
tunnel_accept(struct tunnel *t, const char *id, char *err, size_t errlen)
{
	if (!relaycall_name_valid(id)) {
		snprintf(err, errlen, "invalid connection ID");
		return -1;
	}
	snprintf(t->tn_id, sizeof(t->tn_id), "%s", id);
	return tunnel_stream_start(t, &t->tn_down, "accept", id, 0, err,
	    errlen);
}

/* ---- the socket's events ------------------------------------------- */

void
tunnel_on_io(struct loop *l, int fd, int events, void *arg)
{
	struct tunnel *t = arg;

	(void)l;
	(void)fd;
	if (t->tn_closing)
		return;
	if (events & LOOP_WRITE) {
		if (tunnel_flush(t) == -1)
			return;
		if (ring_len(&t->tn_out) == 0)
			tunnel_shut_if_due(t);
		tunnel_watch(t);
		if (t->tn_down_paused && !t->tn_closing &&
		    ring_space(&t->tn_out) >= CURL_MAX_WRITE_SIZE) {
			t->tn_down_paused = 0;
			/* May call the write callback right here with the
			 * chunk it kept; nothing below relies on state from
			 * before this call. */
			if (t->tn_down.ts_x.cx_active)
				curl_easy_pause(t->tn_down.ts_x.cx_easy,
				    CURLPAUSE_CONT);
		}
	}
	if (t->tn_closing)
		return;
	if (!(events & LOOP_READ))
		return;
	if (t->tn_up_paused) {
		t->tn_up_paused = 0;
		t->tn_read_kept = 1;
		if (t->tn_up.ts_x.cx_active)
			curl_easy_pause(t->tn_up.ts_x.cx_easy, CURLPAUSE_CONT);
	} else if (t->tn_read_kept) {
		/* Curl has not asked for the bytes yet (it may be waiting
		 * for the relay): stop listening until it pauses again. */
		t->tn_read_kept = 0;
		tunnel_watch(t);
	}
}

/* ---- accessors ----------------------------------------------------------- */

const char *
tunnel_id(const struct tunnel *t)
{
	return t->tn_id;
}

const struct net_peer *
tunnel_peer(const struct tunnel *t)
{
	return &t->tn_peer;
}

int
tunnel_opened(const struct tunnel *t)
{
	return t->tn_opened;
}

void
tunnel_stats(const struct tunnel *t, struct tunnel_stats *st)
{
	st->ts_up = t->tn_up_bytes;
	st->ts_down = t->tn_down_bytes;
	st->ts_ms = loop_now_ms() - t->tn_start;
}
