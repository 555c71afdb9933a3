/* The pump between one local TCP socket and two HTTP streams, and the
 * end-to-end reliability that lets a tunnel outlive a cut stream
 * (docs/protocol.md, "Resuming tunnels").
 *
 * Everything runs on the loop's thread.  Curl's callbacks (read, write,
 * header) may run inside curl_multi_socket_action or inside our own
 * curl_easy_pause, so they only change flags, move bytes and arm the
 * "kick" timer; starting a transfer, unpausing the other transfer,
 * re-attaching after a break and tearing the tunnel down happen in the
 * kick, outside curl.  A tunnel is freed only from the kick (or
 * tunnel_close, which callers use outside curl), so no callback ever sees
 * freed memory.
 *
 * Units: each direction numbers its payload bytes from 0, and its final
 * end or error frame is one unit more.  What we sent stays in tn_sb until
 * the peer acknowledges it; a new body starts with a seq frame and sends
 * again from the oldest unacknowledged unit. */
#include <errno.h>
#include <inttypes.h>
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
#define TUNNEL_CTL_MAX      128     /* control frame payload we read */
#define TUNNEL_RECV_MIN     16384   /* curl's smallest buffers */
#define TUNNEL_RECV_MAX     (512 * 1024)       /* CURLOPT_BUFFERSIZE limit */
#define TUNNEL_SEND_MAX     (2 * 1024 * 1024)  /* CURLOPT_UPLOAD_BUFFERSIZE */
#define TUNNEL_PING         "[1,\"ping\"]"
#define TUNNEL_ACK_DELAY_MS 20      /* an ack goes out this soon at most */
#define TUNNEL_RETRY_MIN_MS 50      /* re-attach backoff: first wait */
#define TUNNEL_RETRY_MAX_MS 2000    /* re-attach backoff: longest wait */
/* What a user can do about a peer that breaks the protocol. */
#define TUNNEL_PROTO_HINT "; the other proxy (or something between it " \
    "and the relay) does not follow Postern's protocol: run the same " \
    "Postern version on both sides"

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
	int                  ts_segment;   /* a bounded request (segments) */
	struct curlloop     *ts_curl;      /* the multi it runs on, once added */
	int                  ts_final;     /* upload: the direction's last body */
	uint64_t             ts_gen;       /* Postern-Generation answered */
	int                  ts_eof;       /* Postern-Eof: 1 answered */
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
	int      tn_up_started;            /* a body is in flight */
	unsigned tn_gen_bodies;            /* bodies started in this generation */
	int      tn_up_paused;             /* read callback paused: want READ */
	int      tn_read_kept;             /* READ still watched after unpause */
	int      tn_conn_pending;          /* connection frame not written */
	int      tn_ping_pending;
	int      tn_rd_eof;                /* the socket said end of stream */
	int      tn_sock_err;              /* errno of a failed socket */
	int      tn_sock_dead;             /* socket reset: read or write no more */
	int      tn_body_done;             /* this body has ended */
	int      tn_finished;              /* our last body completed: 200 */
	uint64_t tn_up_last;               /* ms: last upload bytes */
	uint64_t tn_body_start;            /* ms: first byte of this body, or 0 */
	size_t   tn_body_bytes;            /* bytes in this body */

	/* our direction: units we send */
	struct ring tn_sb;                 /* unacknowledged payload (window) */
	uint64_t tn_produced;              /* payload bytes read from the socket */
	uint64_t tn_acked;                 /* units the peer acknowledged */
	uint64_t tn_snd_next;              /* next unit this body carries */
	int      tn_seq_pending;           /* a seq frame is due */

	/* the peer's direction: units we receive */
	uint64_t tn_rcv;                   /* units received */
	uint64_t tn_rcv_cur;               /* unit number of the next one in */
	uint64_t tn_peer_gen;              /* generation of the peer's last seq */
	uint64_t tn_ack_sent;              /* the last ack we wrote */
	int      tn_ack_pending;           /* an ack frame is due */
	int      tn_peer_final;            /* end or error unit received */
	int      tn_end_rcvd;              /* ... and it was end */
	int      tn_shut;                  /* shutdown(SHUT_WR) done */
	int      tn_down_paused;           /* write callback paused: want WRITE */
	int      tn_down_finished;         /* the relay said: all delivered */
	int      tn_have_peer;
	uint8_t  tn_ctl[TUNNEL_CTL_MAX];   /* control frame payload */
	size_t   tn_ctl_len;
	char    *tn_errjson;               /* TUNNEL_ERRJSON_MAX, on use */
	size_t   tn_errjson_len;
	char     tn_peer_error[200];       /* the peer's error frame, in words */
	char     tn_abort[160];            /* tunnel_abort's why, or "" */
	uint64_t tn_down_last;             /* ms: last download byte */

	/* resuming */
	uint64_t tn_gen;                   /* generation we are in */
	uint64_t tn_gen_join;              /* relay's newer generation to join */
	int      tn_accepted;              /* the relay accepted: resumable */
	int      tn_segmented;             /* this tunnel uses segments */
	int      tn_probe_ok;              /* an ack named our generation */
	int      tn_want_break;
	int      tn_want_down;             /* start the next download */
	int      tn_breaking;              /* streams stopped, re-attach due */
	uint64_t tn_break_ms;              /* first unhealed break, or 0 */
	uint64_t tn_backoff_ms;
	uint64_t tn_resent;
	char     tn_break_why[TUNNEL_REASON_MAX];

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
	struct loop_timer tn_ack_timer;
	struct loop_timer tn_watchdog;     /* peer timeout, probe */
	struct loop_timer tn_retry;        /* re-attach */

	uint64_t tn_up_bytes, tn_down_bytes, tn_start;
};

static void tunnel_kick(struct tunnel *t);
static void tunnel_check_done(struct tunnel *t);
static void tunnel_batch_flush(struct tunnel_batch *b);
static void tunnel_break(struct tunnel *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void tunnel_note(struct tunnel *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void tunnel_upload_wake(struct tunnel *t);
static int  tunnel_can_read(const struct tunnel *t);
static int  tunnel_final_made(const struct tunnel *t);
static void tunnel_sock_gone(struct tunnel *t, int reset_now);

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

static const char *
tunnel_down_call(const struct tunnel *t)
{
	if (t->tn_side == TUNNEL_SERVER)
		return "accept";
	return t->tn_gen == 1 && !t->tn_opened ? "connect" : "receive";
}

static const char *
tunnel_up_call(const struct tunnel *t)
{
	return t->tn_side == TUNNEL_CLIENT ? "upstream" : "downstream";
}

static void
tunnel_note(struct tunnel *t, const char *fmt, ...)
{
	char what[TUNNEL_REASON_MAX + 64];
	va_list ap;

	if (t->tn_cbs.tc_note == NULL)
		return;
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	t->tn_cbs.tc_note(t, what, t->tn_arg);
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
	if (!t->tn_closing && !t->tn_sock_dead) {
		/* The read watch outlives an unpause: the upload mostly
		 * pauses again within one message, and dropping and adding
		 * the watch would cost two epoll_ctl calls every time.
		 * tunnel_on_io drops it when it fires for nothing. */
		if ((t->tn_up_paused || t->tn_read_kept) &&
		    tunnel_can_read(t))
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

/* The multi handle for a new stream: streaming uploads run apart
 * (tunnel.h, te_curl_up).  Upload segments do not: short requests one
 * after the other, they would churn through the few connections kept
 * there, and a relay gives them no bigger buffer. */
static struct curlloop *
tunnel_curl(const struct tunnel *t, const struct tunnel_stream *s)
{
	if (s == &t->tn_up && !s->ts_segment && t->tn_env->te_curl_up != NULL)
		return t->tn_env->te_curl_up;
	return t->tn_env->te_curl;
}

void
tunnel_env_flush(const struct tunnel_env *te)
{
	curlloop_flush(te->te_curl);
	if (te->te_curl_up != NULL)
		curlloop_flush(te->te_curl_up);
}

static void
tunnel_stream_free(struct tunnel_stream *s)
{
	if (s->ts_x.cx_easy != NULL) {
		if (s->ts_curl != NULL)
			curlloop_remove(s->ts_curl, &s->ts_x);
		s->ts_curl = NULL;
		curl_easy_cleanup(s->ts_x.cx_easy);
		s->ts_x.cx_easy = NULL;
	}
	curl_slist_free_all(s->ts_hdrs);
	s->ts_hdrs = NULL;
	free(s->ts_body);
	s->ts_body = NULL;
	s->ts_body_len = 0;
	s->ts_status = 0;
	s->ts_gen = 0;
	s->ts_eof = 0;
	s->ts_errbuf[0] = '\0';
}

static void
tunnel_teardown(struct tunnel *t)
{
	struct loop *l = t->tn_env->te_loop;

	loop_timer_stop(l, &t->tn_kick);
	loop_timer_stop(l, &t->tn_ping);
	loop_timer_stop(l, &t->tn_ack_timer);
	loop_timer_stop(l, &t->tn_watchdog);
	loop_timer_stop(l, &t->tn_retry);
	tunnel_batch_drop(t);
	tunnel_stream_free(&t->tn_down);
	tunnel_stream_free(&t->tn_up);
	if (t->tn_fd >= 0) {
		loop_unwatch(l, t->tn_fd);
		if (t->tn_reset)
			net_reset_close(t->tn_fd);
		else
			close(t->tn_fd);
		t->tn_fd = -1;
	}
	ring_free(&t->tn_out);
	ring_free(&t->tn_sb);
	mproxy_decoder_free(t->tn_dec);
	t->tn_dec = NULL;
	free(t->tn_errjson);
	t->tn_errjson = NULL;
	if (t->tn_cbs.tc_closed != NULL)
		t->tn_cbs.tc_closed(t, t->tn_reason, t->tn_arg);
	free(t);
}

void
tunnel_abort(struct tunnel *t, const char *why)
{
	if (t->tn_closing)
		return;
	if (!t->tn_accepted || t->tn_down_finished || t->tn_finished) {
		tunnel_close(t, why);
		return;
	}
	snprintf(t->tn_abort, sizeof(t->tn_abort), "%s", why);
	if (!tunnel_final_made(t))
		t->tn_sock_err = ECONNABORTED;
	tunnel_sock_gone(t, 1);
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
	if (t->tn_sock_err == 0 && !t->tn_rd_eof)
		t->tn_sock_err = e;
	tunnel_sock_gone(t, 0);
	tunnel_check_done(t);
}

/* The local socket is out of the tunnel (failed, or reset now when
 * reset_now): nothing more is read from it or written to it, and the
 * streams carry on to tell the peer and finish. */
static void
tunnel_sock_gone(struct tunnel *t, int reset_now)
{
	if (reset_now && !t->tn_sock_dead && t->tn_fd >= 0) {
		loop_unwatch(t->tn_env->te_loop, t->tn_fd);
		t->tn_watch = 0;
		net_reset_close(t->tn_fd);
		t->tn_fd = -1;
	}
	t->tn_sock_dead = 1;
	t->tn_shut = 1;
	tunnel_batch_drop(t);
	ring_free(&t->tn_out);
	if (t->tn_down_paused) {
		t->tn_down_paused = 0;
		t->tn_want_unpause = 1;
		tunnel_kick(t);
	}
	tunnel_upload_wake(t);
	tunnel_watch(t);
}

/* ---- the state of the two directions ------------------------------------ */

/* Our final unit (end or error) exists: the socket said EOF or failed. */
static int
tunnel_final_made(const struct tunnel *t)
{
	return t->tn_rd_eof || t->tn_sock_err != 0;
}

/* Every unit we will ever send has been acknowledged. */
static int
tunnel_all_acked(const struct tunnel *t)
{
	return tunnel_final_made(t) && t->tn_acked == t->tn_produced + 1;
}

/* The condition for our last body to end (docs/protocol.md): our final
 * unit acknowledged, the peer's received, and its ack written. */
static int
tunnel_finish_ready(const struct tunnel *t)
{
	return tunnel_all_acked(t) && t->tn_peer_final &&
	    t->tn_ack_sent == t->tn_rcv && !t->tn_ack_pending;
}

/* ---- the kick: deferred work, outside curl --------------------------- */

static int  tunnel_start_upload(struct tunnel *t, char *err, size_t errlen);
static int  tunnel_start_download(struct tunnel *t, char *err, size_t errlen);
static void tunnel_do_break(struct tunnel *t);

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
	if (t->tn_want_break) {
		t->tn_want_break = 0;
		tunnel_do_break(t);
		if (t->tn_closing)
			tunnel_teardown(t);
		return;
	}
	if (t->tn_breaking)
		return;   /* the re-attach timer takes it from here */
	if (t->tn_want_down) {
		t->tn_want_down = 0;
		tunnel_stream_free(&t->tn_down);
		if (tunnel_start_download(t, err, sizeof(err)) == -1) {
			tunnel_break(t, "cannot start the %s: %s",
			    tunnel_down_call(t), err);
			return;
		}
	}
	if (t->tn_want_upload) {
		t->tn_want_upload = 0;
		if (!t->tn_up_started &&
		    tunnel_start_upload(t, err, sizeof(err)) == -1) {
			tunnel_break(t, "cannot start the %s: %s",
			    tunnel_up_call(t), err);
			return;
		}
		/* The first bytes wait for this request (and for the
		 * download started with it): out with them. */
		tunnel_env_flush(t->tn_env);
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
		if (t->tn_up.ts_x.cx_active && !t->tn_body_done) {
			t->tn_up_paused = 0;
			curl_easy_pause(t->tn_up.ts_x.cx_easy, CURLPAUSE_CONT);
		}
		if (!t->tn_closing && t->tn_down.ts_x.cx_active &&
		    !t->tn_down_paused)
			curl_easy_pause(t->tn_down.ts_x.cx_easy, CURLPAUSE_CONT);
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

/* Something is due in the upload (an ack, a ping, a seq, the end of the
 * last body): have curl ask for body bytes again. */
static void
tunnel_upload_wake(struct tunnel *t)
{
	if (t->tn_up_paused) {
		t->tn_up_paused = 0;
		t->tn_want_unpause = 1;
		tunnel_kick(t);
	}
}

static void
tunnel_check_done(struct tunnel *t)
{
	if (t->tn_closing || t->tn_breaking)
		return;
	if (!t->tn_finished || !t->tn_down_finished)
		return;
	if (!t->tn_sock_dead && (!t->tn_shut || ring_len(&t->tn_out) > 0 ||
	    tunnel_batched(t) > 0))
		return;
	if (t->tn_abort[0] != '\0')
		tunnel_fail(t, 1, "%s", t->tn_abort);
	else if (t->tn_peer_error[0] != '\0')
		tunnel_fail(t, 1, "peer error: %s", t->tn_peer_error);
	else if (t->tn_sock_err == ECONNRESET || t->tn_sock_err == EPIPE)
		tunnel_fail(t, 1, "%s reset", tunnel_local_role(t));
	else if (t->tn_sock_err != 0)
		tunnel_fail(t, 1, "%s socket error: %s", tunnel_local_role(t),
		    strerror(t->tn_sock_err));
	else
		tunnel_fail(t, 0, "done");
}

/* ---- keepalive, acks, watchdog ------------------------------------------ */

static void
tunnel_on_ping(struct loop *l, void *arg)
{
	struct tunnel *t = arg;
	uint64_t now = loop_now_ms(), ka = t->tn_env->te_keepalive_ms, idle;

	if (t->tn_closing || ka == 0)
		return;
	/* Quiet for a while: buffers kept for speed go back. */
	ring_release(&t->tn_sb);
	ring_release(&t->tn_out);
	idle = now - t->tn_up_last;
	if (idle + 5 < ka) {
		loop_timer_start(l, &t->tn_ping, ka - idle);
		return;
	}
	if (t->tn_up_started && !t->tn_body_done) {
		t->tn_ping_pending = 1;
		t->tn_up_last = now;
		tunnel_upload_wake(t);
	}
	loop_timer_start(l, &t->tn_ping, ka);
}

static void
tunnel_on_ack_timer(struct loop *l, void *arg)
{
	struct tunnel *t = arg;

	(void)l;
	if (t->tn_closing || t->tn_rcv == t->tn_ack_sent)
		return;
	t->tn_ack_pending = 1;
	tunnel_upload_wake(t);
}

/* Units arrived: ack at once past a quarter of the window or at the
 * peer's final unit, else within TUNNEL_ACK_DELAY_MS. */
static void
tunnel_ack_due(struct tunnel *t, int now)
{
	size_t quarter = t->tn_sb.r_cap / 4;

	if (now || t->tn_rcv - t->tn_ack_sent >= (quarter ? quarter : 1)) {
		loop_timer_stop(t->tn_env->te_loop, &t->tn_ack_timer);
		t->tn_ack_pending = 1;
		tunnel_upload_wake(t);
	} else if (!loop_timer_armed(&t->tn_ack_timer))
		loop_timer_start(t->tn_env->te_loop, &t->tn_ack_timer,
		    TUNNEL_ACK_DELAY_MS);
}

/* Peer timeout: a download that brought nothing for te_peer_timeout_ms
 * while we were taking bytes is broken.  Probe: in auto mode, a stream
 * whose generation no ack names within te_probe_ms does not get through. */
static void
tunnel_on_watchdog(struct loop *l, void *arg)
{
	struct tunnel *t = arg;
	const struct tunnel_env *env = t->tn_env;
	uint64_t now = loop_now_ms(), next = UINT64_MAX, quiet, since;

	if (t->tn_closing || t->tn_breaking || !t->tn_accepted)
		return;
	/* Every generation is probed until one ack proves streaming: the
	 * peer re-attaching after our break is a matter of milliseconds. */
	if (!t->tn_segmented && !t->tn_probe_ok &&
	    env->te_transport == TUNNEL_AUTO && env->te_probe_ms > 0 &&
	    t->tn_body_start > 0) {
		since = now - t->tn_body_start;
		if (since >= env->te_probe_ms) {
			t->tn_segmented = 1;
			if (env->te_fallback != NULL)
				*env->te_fallback = 1;
			tunnel_break(t, "streaming does not get through (no "
			    "acknowledgement within %" PRIu64 " ms): using "
			    "segments", env->te_probe_ms);
			return;
		}
		next = env->te_probe_ms - since;
	}
	if (env->te_peer_timeout_ms > 0 && t->tn_down.ts_x.cx_active &&
	    !t->tn_down_finished) {
		quiet = now - t->tn_down_last;
		if (t->tn_down_paused)
			t->tn_down_last = now, quiet = 0;
		if (quiet >= env->te_peer_timeout_ms) {
			tunnel_break(t, "no byte from the relay on %s for "
			    "%" PRIu64 " ms (peer_timeout)", t->tn_down.ts_call,
			    quiet);
			return;
		}
		if (env->te_peer_timeout_ms - quiet < next)
			next = env->te_peer_timeout_ms - quiet;
	}
	if (next != UINT64_MAX)
		loop_timer_start(l, &t->tn_watchdog, next + 1);
}

static void
tunnel_watchdog_arm(struct tunnel *t)
{
	const struct tunnel_env *env = t->tn_env;

	if (env->te_peer_timeout_ms == 0 && (env->te_transport != TUNNEL_AUTO ||
	    t->tn_segmented || t->tn_probe_ok))
		return;
	if (!loop_timer_armed(&t->tn_watchdog))
		loop_timer_start(env->te_loop, &t->tn_watchdog, 100);
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

/* [1,"seq",N,G] or [1,"ack",N,G]. */
static size_t
tunnel_put_number(struct tunnel *t, const char *what, uint64_t n, uint64_t g,
    uint8_t *buf, size_t room)
{
	char json[96];
	int len;

	len = snprintf(json, sizeof(json), "[1,\"%s\",%" PRIu64 ",%" PRIu64 "]",
	    what, n, g);
	return tunnel_put_frame(t, "control", json, (size_t)len, buf, room);
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
	if (t->tn_abort[0] != '\0') {
		snprintf(msg, sizeof(msg), "%s", t->tn_abort);
		code = "shutdown";
	} else if (t->tn_side == TUNNEL_CLIENT)
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

/* One data frame of n payload bytes at buf (header first). */
static int
tunnel_put_data_header(struct tunnel *t, const struct mproxy_meta *m,
    size_t n, uint8_t *buf, size_t hlen)
{
	uint8_t head[MPROXY_FRAME_HEAD_MAX];
	char err[MPROXY_ERR_MAX];

	if (mproxy_pack_header(m, "tcp", n, head, err, sizeof(err)) !=
	    (int)hlen) {
		tunnel_fail(t, 1, "cannot make a data frame: %s", err);
		return -1;
	}
	memcpy(buf, head, hlen);
	return 0;
}

/* 1 while this body should take no more: a segment at its bounds. */
static int
tunnel_segment_full(const struct tunnel *t, size_t more)
{
	const struct tunnel_env *env = t->tn_env;

	if (!t->tn_up.ts_segment)
		return 0;
	if (t->tn_body_bytes + more >= (env->te_segment_bytes > 0 ?
	    env->te_segment_bytes : TUNNEL_SEGMENT_BYTES_DEFAULT))
		return 1;
	return t->tn_body_start > 0 && loop_now_ms() - t->tn_body_start >=
	    (env->te_segment_ms > 0 ? env->te_segment_ms :
	    TUNNEL_SEGMENT_MS_DEFAULT);
}

/* The socket may be read: the window has room and nothing older waits. */
static int
tunnel_can_read(const struct tunnel *t)
{
	return !t->tn_rd_eof && !t->tn_sock_dead && t->tn_sock_err == 0 &&
	    t->tn_snd_next == t->tn_produced && ring_space(&t->tn_sb) > 0;
}

size_t
tunnel_upload_fill(struct tunnel *t, uint8_t *buf, size_t room)
{
	uint8_t head[MPROXY_FRAME_HEAD_MAX];
	char err[MPROXY_ERR_MAX];
	struct mproxy_meta m, cm;
	size_t off = 0, lead, want, hres, hl, hlen0, run;
	const uint8_t *p;
	uint64_t now;
	ssize_t r;
	int n, content = 0, seg = t->tn_up.ts_segment;

	if (t->tn_closing || t->tn_breaking)
		return TUNNEL_FILL_PAUSE;
	if (t->tn_body_done)
		return 0;
	tunnel_meta(t, &m);
	/* Leading frames: they go out only with content, except that a
	 * streaming body opens with its seq (the peer's ack of it is the
	 * probe that streaming gets through). */
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
		content = 1;
	}
	if (t->tn_seq_pending) {
		if ((n = (int)tunnel_put_number(t, "seq", t->tn_snd_next,
		    t->tn_gen, buf + off, room - off)) == 0)
			return TUNNEL_FILL_PAUSE;
		off += (size_t)n;
		if (!seg)
			content = 1;
	}
	if (t->tn_ack_pending || t->tn_rcv != t->tn_ack_sent) {
		if ((n = (int)tunnel_put_number(t, "ack", t->tn_rcv,
		    t->tn_peer_gen, buf + off, room - off)) == 0)
			return TUNNEL_FILL_PAUSE;
		off += (size_t)n;
		content = 1;
	}
	if (t->tn_ping_pending) {
		if ((n = (int)tunnel_put_frame(t, "control", TUNNEL_PING,
		    strlen(TUNNEL_PING), buf + off, room - off)) == 0)
			return TUNNEL_FILL_PAUSE;
		off += (size_t)n;
		content = 1;
	}
	lead = off;
	/* Header length for a payload of n bytes: hlen0 - 1 + digits(n). */
	n = mproxy_pack_header(&m, "tcp", 0, head, err, sizeof(err));
	if (n < 0) {
		tunnel_fail(t, 1, "cannot make a data frame: %s", err);
		return TUNNEL_FILL_PAUSE;
	}
	hlen0 = (size_t)n;
	for (;;) {
		if (tunnel_segment_full(t, off))
			break;
		if (room - off < hlen0 + 1)
			break;
		if (t->tn_snd_next < t->tn_produced) {
			/* Sent before a break: from the window, again. */
			p = ring_peek_at(&t->tn_sb, (size_t)(t->tn_snd_next -
			    t->tn_acked), &run);
			want = room - off - hlen0;
			if (want > t->tn_env->te_frame_max)
				want = t->tn_env->te_frame_max;
			if (run > want)
				run = want;
			if (run > t->tn_produced - t->tn_snd_next)
				run = (size_t)(t->tn_produced - t->tn_snd_next);
			hl = hlen0 - 1 + tunnel_digits(run);
			if (p == NULL || run == 0 || hl + run > room - off)
				break;
			if (tunnel_put_data_header(t, &m, run, buf + off, hl) == -1)
				return TUNNEL_FILL_PAUSE;
			memcpy(buf + off + hl, p, run);
			off += hl + run;
			t->tn_snd_next += run;
			t->tn_resent += run;
			continue;
		}
		if (t->tn_snd_next == t->tn_produced && tunnel_final_made(t)) {
			size_t f;

			if (t->tn_sock_err != 0 && !t->tn_rd_eof)
				f = tunnel_put_error(t, buf + off, room - off);
			else
				f = tunnel_put_frame(t, "end", NULL, 0,
				    buf + off, room - off);
			if (f > 0) {
				off += f;
				t->tn_snd_next++;
			}
			break;
		}
		if (!tunnel_can_read(t))
			break;
		/* Reserve the header for the largest read, recv() the
		 * payload right behind it; a short read with fewer digits
		 * slides its (small) payload back a byte or two. */
		want = room - off - hlen0;
		if (want > t->tn_env->te_frame_max)
			want = t->tn_env->te_frame_max;
		if (want > ring_space(&t->tn_sb))
			want = ring_space(&t->tn_sb);
		hres = hlen0 - 1 + tunnel_digits(want);
		if (hres + want > room - off)
			want = room - off - hres;
		if (want == 0)
			break;
		hres = hlen0 - 1 + tunnel_digits(want);
		r = recv(t->tn_fd, buf + off + hres, want, 0);
		if (r > 0) {
			hl = hlen0 - 1 + tunnel_digits((size_t)r);
			if (hl < hres)
				memmove(buf + off + hl, buf + off + hres,
				    (size_t)r);
			if (tunnel_put_data_header(t, &m, (size_t)r, buf + off,
			    hl) == -1)
				return TUNNEL_FILL_PAUSE;
			if (ring_write(&t->tn_sb, buf + off + hl,
			    (size_t)r) != (size_t)r) {
				tunnel_fail(t, 1, "out of memory for the "
				    "unacknowledged bytes");
				return TUNNEL_FILL_PAUSE;
			}
			off += hl + (size_t)r;
			t->tn_produced += (uint64_t)r;
			t->tn_snd_next += (uint64_t)r;
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
		t->tn_sock_err = errno;
		t->tn_sock_dead = 1;
		t->tn_shut = 1;
		ring_free(&t->tn_out);
	}
	if (off > lead)
		content = 1;
	now = loop_now_ms();
	if (content) {
		t->tn_conn_pending = 0;
		t->tn_seq_pending = 0;
		t->tn_ping_pending = 0;
		if (t->tn_ack_pending || t->tn_rcv != t->tn_ack_sent) {
			t->tn_ack_pending = 0;
			t->tn_ack_sent = t->tn_rcv;
			loop_timer_stop(t->tn_env->te_loop, &t->tn_ack_timer);
		}
		if (t->tn_body_start == 0)
			t->tn_body_start = now;
		t->tn_body_bytes += off;
		t->tn_up_last = now;
		return off;
	}
	/* Nothing to send now. */
	if (t->tn_up.ts_final ? tunnel_finish_ready(t) :
	    (t->tn_body_bytes > 0 || tunnel_segment_full(t, 0) ||
	    (tunnel_all_acked(t) && t->tn_peer_final))) {
		t->tn_body_done = 1;
		return 0;
	}
	t->tn_up_paused = 1;
	tunnel_watch(t);
	return TUNNEL_FILL_PAUSE;
}

static size_t
tunnel_read_cb(char *buf, size_t size, size_t nitems, void *arg)
{
	return tunnel_upload_fill(arg, (uint8_t *)buf, size * nitems);
}

/* Curl rewinds a body to resend it on a fresh connection when a reused
 * one turned out dead.  Every body can start over: what it carried is
 * still in the window. */
static int
tunnel_seek_cb(void *arg, curl_off_t offset, int origin)
{
	struct tunnel *t = arg;

	if (offset != 0 || origin != SEEK_SET)
		return CURL_SEEKFUNC_CANTSEEK;
	t->tn_snd_next = t->tn_acked < t->tn_produced + 1 ? t->tn_acked :
	    t->tn_produced + 1;
	t->tn_seq_pending = 1;
	t->tn_ack_pending = 1;
	t->tn_conn_pending = t->tn_side == TUNNEL_CLIENT &&
	    t->tn_gen_bodies == 1;
	t->tn_body_bytes = 0;
	t->tn_body_start = 0;
	t->tn_body_done = 0;
	return CURL_SEEKFUNC_OK;
}

/* ---- frames we receive ----------------------------------------------- */

static void
tunnel_shut_if_due(struct tunnel *t)
{
	if (t->tn_end_rcvd && !t->tn_shut && tunnel_batched(t) > 0)
		tunnel_batch_flush(t->tn_env->te_batch);
	if (t->tn_end_rcvd && !t->tn_shut && ring_len(&t->tn_out) == 0 &&
	    !t->tn_sock_dead) {
		if (shutdown(t->tn_fd, SHUT_WR) == -1 && errno != ENOTCONN) {
			tunnel_sock_failed(t, errno);
			return;
		}
		t->tn_shut = 1;
		ring_release(&t->tn_out);
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
	if (!t->tn_sock_dead && !t->tn_closing)
		(void)tunnel_send(t, b->tb_buf, n);
}

static void
tunnel_deliver(struct tunnel *t, const uint8_t *p, size_t n)
{
	struct tunnel_batch *b = t->tn_env->te_batch;
	size_t cap, take;

	t->tn_down_bytes += n;
	if (t->tn_sock_dead)
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
		if (t->tn_sock_dead || t->tn_closing)
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

/* The peer's error frame: its words for the log, and our socket is reset
 * (the peer's is gone).  Our side still finishes the protocol, with end
 * as its final unit, so that the peer learns we have its error. */
static void
tunnel_peer_error(struct tunnel *t)
{
	char msg[160], code[32];
	json_t *j, *v;
	size_t n;

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
	snprintf(t->tn_peer_error, sizeof(t->tn_peer_error), "%s%s%s%s", msg,
	    code[0] ? " (" : "", code, code[0] ? ")" : "");
	if (!tunnel_final_made(t))
		t->tn_rd_eof = 1;
	tunnel_sock_gone(t, 1);
}

static void
tunnel_frame_error(struct tunnel *t, const struct mproxy_frame *fr)
{
	size_t n;

	/* Allocated here: an idle tunnel should not carry error space. */
	if (fr->first)
		t->tn_errjson_len = 0;
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
}

/* The peer's final unit (end or error) is the unit at tn_rcv_cur. */
static void
tunnel_final_unit(struct tunnel *t, int is_error)
{
	if (t->tn_rcv_cur < t->tn_rcv) {
		t->tn_rcv_cur++;   /* again, after a break */
		return;
	}
	t->tn_rcv_cur++;
	t->tn_rcv++;
	t->tn_peer_final = 1;
	if (is_error)
		tunnel_peer_error(t);
	else {
		t->tn_end_rcvd = 1;
		tunnel_shut_if_due(t);
	}
	tunnel_ack_due(t, 1);
}

static int
tunnel_ctl_number(json_t *a, size_t i, uint64_t *out)
{
	json_t *v = json_array_get(a, i);

	if (v == NULL || !json_is_integer(v) || json_integer_value(v) < 0)
		return -1;
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static void
tunnel_frame_ack(struct tunnel *t, uint64_t n, uint64_t g)
{
	uint64_t max = t->tn_produced + (tunnel_final_made(t) ? 1 : 0);
	uint64_t had, now;

	if (g == t->tn_gen)
		t->tn_probe_ok = 1;
	if (n > max) {
		tunnel_fail(t, 1, "protocol error from the peer: it acknowledged "
		    "%" PRIu64 " units of %" PRIu64 " sent%s", n, max,
		    TUNNEL_PROTO_HINT);
		return;
	}
	if (n <= t->tn_acked) {
		tunnel_upload_wake(t);
		return;
	}
	had = t->tn_acked < t->tn_produced ? t->tn_acked : t->tn_produced;
	now = n < t->tn_produced ? n : t->tn_produced;
	ring_drop(&t->tn_sb, (size_t)(now - had));
	t->tn_acked = n;
	if (t->tn_snd_next < n) {
		/* The peer had these from an earlier generation. */
		t->tn_snd_next = n;
		t->tn_seq_pending = 1;
	}
	tunnel_upload_wake(t);
}

static void
tunnel_frame_control(struct tunnel *t, const struct mproxy_frame *fr)
{
	json_t *a;
	const char *what;
	uint64_t n, g = 0;
	size_t take;
	int is_ack;

	if (fr->first)
		t->tn_ctl_len = 0;
	take = fr->len;
	if (take > sizeof(t->tn_ctl) - t->tn_ctl_len)
		take = sizeof(t->tn_ctl) - t->tn_ctl_len;
	memcpy(t->tn_ctl + t->tn_ctl_len, fr->data, take);
	t->tn_ctl_len += take;
	if (!fr->last)
		return;
	/* Controls we do not know (and pings) are ignored, as M-PROXY asks. */
	a = json_loadb((const char *)t->tn_ctl, t->tn_ctl_len, 0, NULL);
	if (a == NULL || !json_is_array(a) ||
	    (what = json_string_value(json_array_get(a, 1))) == NULL ||
	    (strcmp(what, "seq") != 0 && strcmp(what, "ack") != 0)) {
		json_decref(a);
		return;
	}
	is_ack = strcmp(what, "ack") == 0;
	if (tunnel_ctl_number(a, 2, &n) == -1 ||
	    (json_array_size(a) > 3 && tunnel_ctl_number(a, 3, &g) == -1)) {
		json_decref(a);
		tunnel_fail(t, 1, "protocol error from the peer: malformed %s "
		    "frame%s", is_ack ? "ack" : "seq", TUNNEL_PROTO_HINT);
		return;
	}
	json_decref(a);
	if (is_ack) {
		tunnel_frame_ack(t, n, g);
		return;
	}
	if (n > t->tn_rcv) {
		tunnel_fail(t, 1, "protocol error from the peer: it resumes at "
		    "unit %" PRIu64 " but only %" PRIu64 " arrived (bytes were "
		    "lost)%s", n, t->tn_rcv, TUNNEL_PROTO_HINT);
		return;
	}
	t->tn_rcv_cur = n;
	t->tn_peer_gen = g;
	/* The peer's ack of our seq is its proof that our body gets
	 * through: answer a seq at once. */
	tunnel_ack_due(t, 1);
}

static void
tunnel_frame_data(struct tunnel *t, const struct mproxy_frame *fr)
{
	size_t skip = 0;

	if (fr->len == 0)
		return;
	if (t->tn_rcv_cur < t->tn_rcv) {
		skip = t->tn_rcv - t->tn_rcv_cur;
		if (skip > fr->len)
			skip = fr->len;
	}
	t->tn_rcv_cur += fr->len;
	if (skip == fr->len)
		return;   /* had it before the break */
	if (t->tn_peer_final) {
		tunnel_fail(t, 1, "malformed stream from relay: data after the "
		    "end frame");
		return;
	}
	t->tn_rcv = t->tn_rcv_cur;
	tunnel_deliver(t, fr->data + skip, fr->len - skip);
	tunnel_ack_due(t, 0);
}

static void
tunnel_frame(struct tunnel *t, const struct mproxy_frame *fr)
{
	const char *svc = fr->service;

	if (strcmp(svc, "tcp") == 0)
		tunnel_frame_data(t, fr);
	else if (strcmp(svc, "end") == 0) {
		if (fr->last)
			tunnel_final_unit(t, 0);
	} else if (strcmp(svc, "error") == 0) {
		tunnel_frame_error(t, fr);
		if (fr->last)
			tunnel_final_unit(t, 1);
	} else if (strcmp(svc, "control") == 0)
		tunnel_frame_control(t, fr);
	else if (strcmp(svc, "connection") == 0)
		tunnel_frame_connection(t, fr);
	/* pause, resume and services of later versions: ignored. */
}

size_t
tunnel_download_feed(struct tunnel *t, const uint8_t *buf, size_t len)
{
	struct mproxy_frame fr;
	enum mproxy_result r;
	size_t off = 0, used;

	if (t->tn_closing || t->tn_breaking)
		return len;
	t->tn_down_last = loop_now_ms();
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
	uint64_t now = loop_now_ms();

	if (s != &t->tn_down || s->ts_status != 200 || t->tn_closing)
		return;
	t->tn_down_last = now;
	if (t->tn_break_ms != 0) {
		tunnel_note(t, "resumed as generation %" PRIu64 " after %" PRIu64
		    " ms", t->tn_gen, now - t->tn_break_ms);
		t->tn_break_ms = 0;
		t->tn_backoff_ms = 0;
	}
	if (t->tn_accepted)
		return;   /* a later download: re-attached, or a segment */
	t->tn_accepted = 1;
	tunnel_watchdog_arm(t);
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

/* The value of header `name` in the line p (len bytes), or NULL. */
static const char *
tunnel_header_value(const char *p, size_t len, const char *name, size_t *vlen)
{
	size_t nl = strlen(name), n;

	if (len <= nl || strncasecmp(p, name, nl) != 0 || p[nl] != ':')
		return NULL;
	p += nl + 1;
	len -= nl + 1;
	while (len > 0 && (*p == ' ' || *p == '\t')) {
		p++;
		len--;
	}
	for (n = 0; n < len && p[n] != '\r' && p[n] != '\n' && p[n] != ' '; n++)
		;
	*vlen = n;
	return p;
}

static uint64_t
tunnel_header_number(const char *p, size_t n)
{
	uint64_t v = 0;
	size_t i;

	if (n == 0 || n > 18)
		return 0;
	for (i = 0; i < n; i++) {
		if (p[i] < '0' || p[i] > '9')
			return 0;
		v = v * 10 + (uint64_t)(p[i] - '0');
	}
	return v;
}

static size_t
tunnel_header_cb(char *p, size_t size, size_t nmemb, void *arg)
{
	struct tunnel_stream *s = arg;
	struct tunnel *t = s->ts_t;
	size_t len = size * nmemb, n;
	const char *v;
	int code;

	if (len > 5 && strncmp(p, "HTTP/", 5) == 0) {
		const char *sp = memchr(p, ' ', len);

		s->ts_status = 0;
		s->ts_gen = 0;
		s->ts_eof = 0;
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
	if ((v = tunnel_header_value(p, len, "Postern-Generation", &n)) != NULL)
		s->ts_gen = tunnel_header_number(v, n);
	else if ((v = tunnel_header_value(p, len, "Postern-Eof", &n)) != NULL)
		s->ts_eof = n == 1 && v[0] == '1';
	else if (s == &t->tn_down && !t->tn_accepted &&
	    (v = tunnel_header_value(p, len, "Postern-Connection", &n)) != NULL &&
	    n < sizeof(t->tn_id)) {
		memcpy(t->tn_id, v, n);
		t->tn_id[n] = '\0';
	}
	return len;
}

/* A transfer failed at the network level: before the relay accepted, the
 * tunnel fails as it always did; after, it is a break to resume from. */
static void
tunnel_stream_cut(struct tunnel *t, struct tunnel_stream *s, CURLcode result)
{
	const char *why = s->ts_errbuf[0] ? s->ts_errbuf :
	    curl_easy_strerror(result);
	/* A connect that never opened closes quietly (FIN): no byte has
	 * moved, and a reset could even fail the TCP client's connect(). */
	int reset = t->tn_opened || t->tn_side == TUNNEL_SERVER;

	const char *hint = relaycall_hint(t->tn_env->te_relay, result);

	if (!t->tn_accepted) {
		tunnel_fail(t, reset, "relay stream failed (%s): %s%s%s",
		    s->ts_call, why, hint ? "; " : "", hint ? hint : "");
		return;
	}
	tunnel_break(t, "%s stream cut: %s", s->ts_call, why);
}

/* The relay answered a stream request with an error status. */
static void
tunnel_stream_refused(struct tunnel *t, struct tunnel_stream *s)
{
	int reset = t->tn_opened || t->tn_side == TUNNEL_SERVER;
	char desc[256];

	relaycall_describe(s->ts_status, s->ts_body, s->ts_body_len, desc,
	    sizeof(desc));
	if (!t->tn_accepted) {
		tunnel_fail(t, reset, "%s", desc);
		return;
	}
	switch (s->ts_status) {
	case 404:
		if (tunnel_all_acked(t) && t->tn_peer_final) {
			/* Both sides had finished: the relay closed the
			 * tunnel while we re-attached after a last cut. */
			t->tn_finished = 1;
			t->tn_down_finished = 1;
			tunnel_check_done(t);
			return;
		}
		tunnel_fail(t, 1, "the relay ended the tunnel (%s): the other "
		    "proxy went away, the tunnel idled out or the relay "
		    "restarted", desc);
		return;
	case 409:
		if (s->ts_gen > t->tn_gen)
			t->tn_gen_join = s->ts_gen;
		tunnel_break(t, "%s: %s", s->ts_call, desc);
		return;
	case 413:
		if (t->tn_env->te_transport == TUNNEL_AUTO && !t->tn_segmented) {
			t->tn_segmented = 1;
			if (t->tn_env->te_fallback != NULL)
				*t->tn_env->te_fallback = 1;
			tunnel_break(t, "%s refused as too large (%s): using "
			    "segments", s->ts_call, desc);
			return;
		}
		break;
	case 401:
		if (relaycall_code_is(s->ts_body, s->ts_body_len,
		    "replayed_nonce")) {
			/* curl re-sent the request unchanged after a reused
			 * connection died: a fresh signature will do. */
			tunnel_break(t, "%s: %s", s->ts_call, desc);
			return;
		}
		break;
	case 400:
	case 403:
		break;
	default:
		/* 5xx and the like: a proxy or relay in trouble, try again. */
		tunnel_break(t, "%s: %s", s->ts_call, desc);
		return;
	}
	tunnel_fail(t, 1, "%s", desc);
}

static void
tunnel_down_done(struct curlloop_xfer *x, CURLcode result, void *arg)
{
	struct tunnel_stream *s = arg;
	struct tunnel *t = s->ts_t;

	(void)x;
	if (t->tn_closing || t->tn_breaking)
		return;
	if (result != CURLE_OK) {
		tunnel_stream_cut(t, s, result);
		return;
	}
	if (s->ts_status != 200) {
		tunnel_stream_refused(t, s);
		return;
	}
	if (s->ts_segment && !s->ts_eof) {
		/* A segment ended: the next one at once. */
		t->tn_want_down = 1;
		tunnel_kick(t);
		return;
	}
	/* The relay has delivered everything the peer sent, and the peer
	 * finished: its final unit must be here.  When it is not, a
	 * middlebox made a cut look like an end (a close-delimited HTTP/1.0
	 * response through a proxy ends "cleanly" when the relay cuts it):
	 * a break like any other, bounded by resume_grace. */
	if (!mproxy_decoder_at_boundary(t->tn_dec) || !t->tn_peer_final) {
		tunnel_break(t, "%s stream ended before the peer's end (%s)",
		    s->ts_call, !t->tn_peer_final ? "no end frame" :
		    "inside a frame");
		return;
	}
	/* The peer finished, so it has every unit of ours: its last ack
	 * may have been lost to a cut after it ended its body. */
	if (tunnel_final_made(t) && t->tn_acked < t->tn_produced + 1)
		tunnel_frame_ack(t, t->tn_produced + 1, t->tn_gen);
	t->tn_down_finished = 1;
	loop_timer_stop(t->tn_env->te_loop, &t->tn_watchdog);
	tunnel_check_done(t);
}

static void
tunnel_up_done(struct curlloop_xfer *x, CURLcode result, void *arg)
{
	struct tunnel_stream *s = arg;
	struct tunnel *t = s->ts_t;

	(void)x;
	if (t->tn_closing || t->tn_breaking)
		return;
	if (result != CURLE_OK) {
		tunnel_stream_cut(t, s, result);
		return;
	}
	if (s->ts_status != 200) {
		tunnel_stream_refused(t, s);
		return;
	}
	if (!t->tn_body_done) {
		tunnel_fail(t, 1, "relay answered %s before its body ended",
		    s->ts_call);
		return;
	}
	t->tn_up_started = 0;
	if (!s->ts_final) {
		t->tn_want_upload = 1;
		tunnel_kick(t);
		return;
	}
	t->tn_finished = 1;
	loop_timer_stop(t->tn_env->te_loop, &t->tn_ping);
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
	char path[RELAYCALL_PATH_MAX], gen[48], seg[48];
	const char *hdrs[5];
	size_t nh = 0;
	CURL *e;

	tunnel_stream_free(s);
	s->ts_t = t;
	s->ts_call = call;
	s->ts_segment = t->tn_segmented;
	if (upload) {
		hdrs[nh++] = "Transfer-Encoding: chunked";
		hdrs[nh++] = "Expect:";
	}
	if (strcmp(call, "connect") != 0) {
		snprintf(gen, sizeof(gen), "Postern-Generation: %" PRIu64,
		    t->tn_gen);
		hdrs[nh++] = gen;
	}
	if (s->ts_segment) {
		if (upload)
			snprintf(seg, sizeof(seg), "Postern-Segment: 1");
		else
			snprintf(seg, sizeof(seg), "Postern-Segment: %zu",
			    t->tn_env->te_segment_bytes > 0 ?
			    t->tn_env->te_segment_bytes :
			    (size_t)TUNNEL_SEGMENT_BYTES_DEFAULT);
		if (!upload || !s->ts_final)
			hdrs[nh++] = seg;
	}
	hdrs[nh] = NULL;
	snprintf(path, sizeof(path), "/v1/s/%s/%s/%s", t->tn_server, call, arg);
	e = relaycall_easy(t->tn_env->te_relay, path, hdrs, &s->ts_hdrs, err,
	    errlen);
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
	s->ts_curl = tunnel_curl(t, s);
	if (curlloop_add(s->ts_curl, &s->ts_x, err, errlen) == -1) {
		tunnel_stream_free(s);
		return -1;
	}
	return 0;
}

static int
tunnel_start_download(struct tunnel *t, char *err, size_t errlen)
{
	const char *call = tunnel_down_call(t);

	t->tn_down_last = loop_now_ms();
	if (tunnel_stream_start(t, &t->tn_down, call,
	    strcmp(call, "connect") == 0 ? t->tn_port : t->tn_id, 0, err,
	    errlen) == -1)
		return -1;
	tunnel_watchdog_arm(t);
	return 0;
}

void
tunnel_body_begin(struct tunnel *t)
{
	t->tn_up_started = 1;
	t->tn_up_paused = 0;
	t->tn_body_done = 0;
	t->tn_body_bytes = 0;
	t->tn_body_start = 0;
	t->tn_gen_bodies++;
	t->tn_conn_pending = t->tn_side == TUNNEL_CLIENT && t->tn_gen_bodies == 1;
	t->tn_seq_pending = 1;
	t->tn_up_last = loop_now_ms();
	/* A segment is the last body once nothing but acks can follow. */
	t->tn_up.ts_final = !t->tn_segmented ||
	    (tunnel_all_acked(t) && t->tn_peer_final);
}

static int
tunnel_start_upload(struct tunnel *t, char *err, size_t errlen)
{
	tunnel_body_begin(t);
	if (tunnel_stream_start(t, &t->tn_up, tunnel_up_call(t), t->tn_id, 1,
	    err, errlen) == -1) {
		t->tn_up_started = 0;
		return -1;
	}
	if (t->tn_env->te_keepalive_ms > 0 && !loop_timer_armed(&t->tn_ping))
		loop_timer_start(t->tn_env->te_loop, &t->tn_ping,
		    t->tn_env->te_keepalive_ms);
	tunnel_watchdog_arm(t);
	return 0;
}

/* ---- breaks and re-attaching --------------------------------------------- */

static void
tunnel_break(struct tunnel *t, const char *fmt, ...)
{
	va_list ap;

	if (t->tn_closing || t->tn_want_break || t->tn_breaking)
		return;
	va_start(ap, fmt);
	vsnprintf(t->tn_break_why, sizeof(t->tn_break_why), fmt, ap);
	va_end(ap);
	if (!t->tn_accepted || t->tn_env->te_resume_grace_ms == 0) {
		tunnel_fail(t, t->tn_opened || t->tn_side == TUNNEL_SERVER, "%s",
		    t->tn_break_why);
		return;
	}
	t->tn_want_break = 1;
	tunnel_kick(t);
}

/* Outside curl: both streams stop, the state goes back to the last
 * acknowledged unit, and the re-attach timer starts. */
static void
tunnel_do_break(struct tunnel *t)
{
	struct loop *l = t->tn_env->te_loop;
	uint64_t now = loop_now_ms(), wait;

	if (t->tn_break_ms == 0) {
		t->tn_break_ms = now;
		t->tn_backoff_ms = 0;
	}
	tunnel_note(t, "%s; resuming", t->tn_break_why);
	tunnel_stream_free(&t->tn_down);
	tunnel_stream_free(&t->tn_up);
	t->tn_breaking = 1;
	t->tn_up_started = 0;
	t->tn_up_paused = 0;
	t->tn_read_kept = 0;
	t->tn_down_paused = 0;
	t->tn_body_done = 0;
	t->tn_want_upload = 0;
	t->tn_want_down = 0;
	t->tn_want_unpause = 0;
	tunnel_watch(t);
	loop_timer_stop(l, &t->tn_watchdog);
	loop_timer_stop(l, &t->tn_ack_timer);
	mproxy_decoder_free(t->tn_dec);
	t->tn_dec = mproxy_decoder_new(MPROXY_PIECES, t->tn_env->te_max_data);
	if (t->tn_dec == NULL) {
		tunnel_fail(t, 1, "out of memory");
		return;
	}
	t->tn_rcv_cur = t->tn_rcv;
	t->tn_ctl_len = 0;
	t->tn_errjson_len = 0;
	t->tn_snd_next = t->tn_acked;
	t->tn_seq_pending = 1;
	t->tn_ack_pending = 1;
	/* Joining a newer generation waits too: a relay that keeps
	 * answering stale_generation must not make us spin. */
	wait = t->tn_backoff_ms;
	t->tn_backoff_ms = t->tn_backoff_ms == 0 ? TUNNEL_RETRY_MIN_MS :
	    t->tn_backoff_ms * 2;
	if (t->tn_backoff_ms > TUNNEL_RETRY_MAX_MS)
		t->tn_backoff_ms = TUNNEL_RETRY_MAX_MS;
	loop_timer_start(l, &t->tn_retry, wait);
}

static void
tunnel_on_retry(struct loop *l, void *arg)
{
	struct tunnel *t = arg;
	uint64_t now = loop_now_ms();
	char err[256];

	(void)l;
	if (t->tn_closing || !t->tn_breaking)
		return;
	if (now - t->tn_break_ms > t->tn_env->te_resume_grace_ms) {
		tunnel_fail(t, 1, "tunnel lost: %s; could not resume within "
		    "resume_grace (%" PRIu64 " ms): check the path to the relay "
		    "(--resume-grace waits longer)", t->tn_break_why,
		    t->tn_env->te_resume_grace_ms);
		tunnel_teardown(t);
		return;
	}
	if (t->tn_gen_join > t->tn_gen)
		t->tn_gen = t->tn_gen_join;
	else
		t->tn_gen++;
	t->tn_gen_join = 0;
	t->tn_gen_bodies = 0;
	t->tn_breaking = 0;
	if (tunnel_start_download(t, err, sizeof(err)) == -1 ||
	    (!t->tn_finished && tunnel_start_upload(t, err, sizeof(err)) == -1)) {
		tunnel_break(t, "cannot re-attach: %s", err);
		return;
	}
	tunnel_env_flush(t->tn_env);
	if (t->tn_closing)
		tunnel_teardown(t);
}

/* ---- the tunnel ----------------------------------------------------------- */

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
	ring_init(&t->tn_sb, env->te_window > 0 ? env->te_window :
	    TUNNEL_WINDOW_DEFAULT);
	loop_timer_init(&t->tn_kick, tunnel_on_kick, t);
	loop_timer_init(&t->tn_ping, tunnel_on_ping, t);
	loop_timer_init(&t->tn_ack_timer, tunnel_on_ack_timer, t);
	loop_timer_init(&t->tn_watchdog, tunnel_on_watchdog, t);
	loop_timer_init(&t->tn_retry, tunnel_on_retry, t);
	t->tn_start = loop_now_ms();
	t->tn_down.ts_t = t;
	t->tn_up.ts_t = t;
	t->tn_gen = 1;
	t->tn_segmented = env->te_transport == TUNNEL_SEGMENTED ||
	    (env->te_transport == TUNNEL_AUTO && env->te_fallback != NULL &&
	    *env->te_fallback);
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
	return tunnel_start_download(t, err, errlen);
}

int
tunnel_accept(struct tunnel *t, const char *id, char *err, size_t errlen)
{
	if (!relaycall_name_valid(id)) {
		snprintf(err, errlen, "invalid connection ID");
		return -1;
	}
	snprintf(t->tn_id, sizeof(t->tn_id), "%s", id);
	return tunnel_start_download(t, err, errlen);
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
		 * for the relay, or re-attaching): stop listening until it
		 * pauses again. */
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
	st->ts_gen = t->tn_gen;
	st->ts_resent = t->tn_resent;
	st->ts_segmented = t->tn_segmented;
}
