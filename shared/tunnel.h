/* One tunnel: the pump between a local TCP socket and two HTTP streams.
 *
 *   download  the response body of connect (client) or accept (server):
 *             the peer's M-PROXY frames; payload goes to the socket.
 *   upload    the chunked request body of upstream (client) or
 *             downstream (server): frames made from what the socket reads.
 *
 * Backpressure: the upload reads the socket only when curl asks for body
 * bytes (straight into curl's buffer), so the kernel holds what we have no
 * room for; the download writes payload straight to the socket, keeps
 * what the socket refuses in a ring of `buffer` bytes, and pauses the
 * transfer while the ring could not take another chunk.
 *
 * A tunnel reports to its owner through two callbacks and frees itself
 * after the second; library code, it never logs. */
#ifndef POSTERN_TUNNEL_H
#define POSTERN_TUNNEL_H

#include <stddef.h>
#include <stdint.h>

#include "curlloop.h"
#include "loop.h"
#include "net.h"
#include "relaycall.h"

struct tunnel;
struct tunnel_batch;

/* Used where a tunnel_env leaves these 0. */
#define TUNNEL_WINDOW_DEFAULT        (1024 * 1024)
#define TUNNEL_SEGMENT_BYTES_DEFAULT (256 * 1024)
#define TUNNEL_SEGMENT_MS_DEFAULT    200
/* Idle upload connections a proxy keeps for the next tunnels' uploads
 * (CURLMOPT_MAXCONNECTS of te_curl_up): each holds an upload-sized
 * buffer on the relay. */
#define TUNNEL_UPLOAD_IDLE_CONNS     16

enum tunnel_transport {
	TUNNEL_AUTO = 0,      /* stream; segments once streaming fails */
	TUNNEL_STREAM,        /* one long request per direction */
	TUNNEL_SEGMENTED,     /* bounded requests (docs/protocol.md) */
};

/* What every tunnel of a process shares. */
struct tunnel_env {
	struct loop                 *te_loop;
	struct curlloop             *te_curl;
	/* Uploads' own multi handle, or NULL (te_curl): kept apart, their
	 * connections carry nothing but uploads, which a relay serves from
	 * bigger buffers (docs/relay.md, upload_memory). */
	struct curlloop             *te_curl_up;
	const struct relaycall_conf *te_relay;
	size_t   te_frame_max;     /* payload bytes per data frame we send */
	size_t   te_buffer;        /* download ring; curl's buffers */
	uint64_t te_keepalive_ms;  /* ping an idle upload; 0 = never */
	size_t   te_max_data;      /* decoder limit; 0 = MPROXY default */
	struct tunnel_batch *te_batch;  /* or NULL: a send() per piece */
	/* Resuming (docs/protocol.md, "Resuming tunnels"). */
	size_t   te_window;        /* unacknowledged bytes kept per tunnel */
	uint64_t te_resume_grace_ms;  /* re-attach attempts stop after this */
	uint64_t te_peer_timeout_ms;  /* a silent download is broken; 0 = never */
	enum tunnel_transport te_transport;
	size_t   te_segment_bytes;
	uint64_t te_segment_ms;
	uint64_t te_probe_ms;      /* auto: no ack this long -> segments */
	int     *te_fallback;      /* or NULL: set once auto found streaming
	                            * blocked, read by every later tunnel */
};

/* Download payload gathered for one send().  Curl hands a body over in
 * pieces of at most 16 KiB; the batch collects one tunnel's pieces and
 * sends them in one go when full or once curl has returned, which saves
 * most send() calls on bulk transfers.  One batch serves every tunnel of
 * a loop (it holds one tunnel's bytes at a time); free it after the
 * last tunnel.  NULL when out of memory. */
#define TUNNEL_BATCH_SIZE (256 * 1024)
struct tunnel_batch *tunnel_batch_new(void);
void tunnel_batch_free(struct tunnel_batch *b);

enum tunnel_side {
	TUNNEL_CLIENT,   /* connect + upstream; the socket is the TCP client */
	TUNNEL_SERVER,   /* accept + downstream; the socket is the target */
};

struct tunnel_cbs {
	/* Client: the relay answered connect with 200.  Server: the
	 * connection frame arrived (tunnel_peer is known). */
	void (*tc_open)(struct tunnel *t, void *arg);
	/* The tunnel is over: "done", "client reset", "relay stream failed:
	 * ...", "peer error: ...", "relay answered 502 ...".  The tunnel is
	 * freed when this returns. */
	void (*tc_closed)(struct tunnel *t, const char *reason, void *arg);
	/* Server only, may be NULL: the relay answered accept with 200, so
	 * it is answering the client's connect now (and the downstream is
	 * being posted).  Requests posted before this would have held up
	 * that answer. */
	void (*tc_accepted)(struct tunnel *t, void *arg);
	/* May be NULL: something the owner's log should say ("stream
	 * broken (...): resuming as generation 3", "resumed", "streaming
	 * does not get through: using segments"). */
	void (*tc_note)(struct tunnel *t, const char *what, void *arg);
};

struct tunnel_stats {
	uint64_t ts_up;       /* payload bytes read from the socket */
	uint64_t ts_down;     /* payload bytes received for the socket */
	uint64_t ts_ms;       /* since tunnel_new */
	uint64_t ts_gen;      /* generation: 1 + re-attachments */
	uint64_t ts_resent;   /* payload bytes sent again after breaks */
	int      ts_segmented;
};

/* Takes fd (nonblocking, connected) unless it fails.  server/port name
 * the tunnel in paths and the connection frame. */
struct tunnel *tunnel_new(const struct tunnel_env *env, enum tunnel_side side,
                          int fd, const char *server, const char *port,
                          const struct tunnel_cbs *cbs, void *arg,
                          char *err, size_t errlen);
/* The TCP client's address (client side: from accept(); the server side
 * learns it from the connection frame). */
void tunnel_set_peer(struct tunnel *t, const struct net_peer *p);

/* Client: POST connect/{port}; the upstream follows the 200. */
int  tunnel_connect(struct tunnel *t, char *err, size_t errlen);
/* Server: POST accept/{id}; downstream/{id} follows the accept's 200.
 * The relay answers the client's connect on the accept alone, and a
 * downstream arriving with the accept would only delay that answer (the
 * relay verifies each request's signature in turn). */
int  tunnel_accept(struct tunnel *t, const char *id, char *err, size_t errlen);
/* Lets curl send the requests just started (downloads and uploads) at
 * once; not from inside a curl callback (curlloop_flush). */
void tunnel_env_flush(const struct tunnel_env *te);

/* Ends the tunnel now (shutdown of the process): resets the socket,
 * stops both transfers, reports reason.  Not from a curl callback. */
void tunnel_close(struct tunnel *t, const char *reason);
/* Ends the tunnel on purpose but tells the peer: the socket is reset now,
 * an error frame {"message": why, "code": "shutdown"} goes to the other
 * proxy, and tc_closed (reason why) follows once it has been
 * acknowledged, or at tunnel_close.  A tunnel the relay has not accepted
 * yet is closed at once.  Not from a curl callback. */
void tunnel_abort(struct tunnel *t, const char *why);

const char *tunnel_id(const struct tunnel *t);        /* "" until known */
const struct net_peer *tunnel_peer(const struct tunnel *t);
int  tunnel_opened(const struct tunnel *t);           /* tc_open was called */
void tunnel_stats(const struct tunnel *t, struct tunnel_stats *st);

/* ---- the bodies of curl's callbacks, exposed for unit tests ---------- */

#define TUNNEL_FILL_PAUSE ((size_t)0x10000001)   /* CURL_READFUNC_PAUSE */
#define TUNNEL_FEED_PAUSE ((size_t)0x10000001)   /* CURL_WRITEFUNC_PAUSE */

/* The upload body starts (curl is about to ask for its bytes). */
void tunnel_body_begin(struct tunnel *t);
/* Fills up to room bytes of upload body; 0 ends the body. */
size_t tunnel_upload_fill(struct tunnel *t, uint8_t *buf, size_t room);
/* Takes one chunk of download body: len, or TUNNEL_FEED_PAUSE (the chunk
 * was not consumed and must be offered again). */
size_t tunnel_download_feed(struct tunnel *t, const uint8_t *buf, size_t len);
/* The fd became writable (or readable): what the loop calls. */
void tunnel_on_io(struct loop *l, int fd, int events, void *arg);

#endif
