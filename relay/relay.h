/* postern-relay: the declarations its files share.
 *
 * Everything here runs on one thread (the loop's): libmicrohttpd is polled
 * from our epoll loop and every callback, timer and signal is dispatched
 * from it, so no structure below is locked. */
#ifndef POSTERN_RELAY_H
#define POSTERN_RELAY_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include "key.h"
#include "loop.h"
#include "ring.h"

#define RELAY_NAME_MAX   64   /* server and port names: 1..64 bytes */
#define RELAY_ID_BYTES   16
#define RELAY_ID_TEXT    22   /* URL-safe base64 of 16 bytes, no padding */
#define RELAY_ERR_MAX    256
/* Bytes of an unwanted request body read and dropped so that the error
 * answer can still be sent; past this the connection is closed. */
#define RELAY_DISCARD_MAX (1024 * 1024)

/* ---- config.c: relay.ini ------------------------------------------- */

struct relay_allow {
	char    *al_server;
	char    *al_port;       /* NULL: every port of al_server */
	int      al_line;
};

struct relay_server {
	char    *sv_name;
	uint8_t  sv_key[KEY_PUBLIC_BYTES];
	char   **sv_ports;      /* NULL: any port name */
	size_t   sv_nports;
	int      sv_line;       /* of the section header */
	int      sv_key_line;   /* 0: no key line yet */
	int      sv_ports_line;
};

struct relay_client {
	char    *cl_name;
	uint8_t  cl_key[KEY_PUBLIC_BYTES];
	struct relay_allow *cl_allow;
	size_t   cl_nallow;
	int      cl_line;
	int      cl_key_line;
};

struct relay_config {
	char    *cf_listen;               /* HOST:PORT */
	uint64_t cf_listen_timeout_ms;
	uint64_t cf_listen_grace_ms;
	uint64_t cf_connect_wait_ms;
	uint64_t cf_accept_timeout_ms;
	uint64_t cf_idle_timeout_ms;
	uint64_t cf_header_timeout_ms;    /* a new connection's first request head */
	uint64_t cf_clock_skew;           /* seconds */
	uint64_t cf_max_nonces;
	uint64_t cf_pipe_buffer;          /* bytes per direction per tunnel */
	uint64_t cf_max_tunnels;
	uint64_t cf_max_connections;
	int      cf_max_connections_set;  /* given in relay.ini (else default) */
	uint64_t cf_max_pending_connects; /* per server/port */
	uint64_t cf_max_refuse_body;
	uint64_t cf_connection_memory;
	uint64_t cf_upload_memory;        /* an upload connection's (sort.c) */
	int      cf_status;               /* GET /v1/status served */
	int      cf_direct_write;         /* relay writes stream chunks (direct.c) */
	char    *cf_tls_cert;             /* PEM file; NULL: plain HTTP */
	char    *cf_tls_key;              /* PEM file; set with cf_tls_cert */
	/* Resuming tunnels (docs/protocol.md, "Resuming tunnels"). */
	uint64_t cf_resume_grace_ms;      /* a side away this long: peer_lost */
	uint64_t cf_peer_timeout_ms;      /* a silent upload breaks; 0 = off */
	uint64_t cf_segment_bytes;        /* most bytes of a download segment */
	uint64_t cf_segment_time_ms;      /* a segment's life from its first byte */
	uint64_t cf_poll_time_ms;         /* a segment with no byte ends then */
	struct relay_server *cf_servers;
	size_t   cf_nservers;
	struct relay_client *cf_clients;
	size_t   cf_nclients;
};

/* Defaults, also documented in docs/relay.md. */
#define CONFIG_DEFAULT_LISTEN            "127.0.0.1:8080"
#define CONFIG_DEFAULT_LISTEN_TIMEOUT_MS 25000
#define CONFIG_DEFAULT_LISTEN_GRACE_MS   10000
#define CONFIG_DEFAULT_CONNECT_WAIT_MS   5000
#define CONFIG_DEFAULT_ACCEPT_TIMEOUT_MS 10000
#define CONFIG_DEFAULT_IDLE_TIMEOUT_MS   300000
#define CONFIG_DEFAULT_HEADER_TIMEOUT_MS 10000
#define CONFIG_DEFAULT_CLOCK_SKEW        300
#define CONFIG_DEFAULT_MAX_NONCES        500000
#define CONFIG_DEFAULT_PIPE_BUFFER       262144
#define CONFIG_DEFAULT_MAX_TUNNELS       4096
#define CONFIG_DEFAULT_MAX_CONNECTIONS   20000
#define CONFIG_DEFAULT_MAX_PENDING       1024
#define CONFIG_DEFAULT_MAX_REFUSE_BODY   4096
#define CONFIG_DEFAULT_CONNECTION_MEMORY 12288
#define CONFIG_DEFAULT_UPLOAD_MEMORY     262144
#define CONFIG_DEFAULT_RESUME_GRACE_MS   30000
#define CONFIG_DEFAULT_PEER_TIMEOUT_MS   60000
#define CONFIG_DEFAULT_SEGMENT_BYTES     262144
#define CONFIG_DEFAULT_SEGMENT_TIME_MS   200
#define CONFIG_DEFAULT_POLL_TIME_MS      20000

/* Both return NULL with err ("relay.ini:7: unknown key 'lsten' in
 * [relay]") on any problem; name is the file name used in messages. */
struct relay_config *config_load(const char *path, char *err, size_t errlen);
struct relay_config *config_load_stream(FILE *f, const char *name,
                                        char *err, size_t errlen);
void config_free(struct relay_config *cf);
const struct relay_server *config_server(const struct relay_config *cf,
                                         const char *name);
const struct relay_server *config_server_by_key(const struct relay_config *cf,
                                                const uint8_t key[KEY_PUBLIC_BYTES]);
const struct relay_client *config_client_by_key(const struct relay_config *cf,
                                                const uint8_t key[KEY_PUBLIC_BYTES]);
int config_server_offers(const struct relay_server *sv, const char *port);
int config_client_may(const struct relay_client *cl, const char *server,
                      const char *port);
/* "host", "port" from "host:port" / "[v6]:port"; 0 or -1 with err. */
int config_split_hostport(const char *s, char *host, size_t hostlen,
                          char *port, size_t portlen, char *err, size_t errlen);

/* ---- tls.c: the certificate and key for HTTPS ---------------------- */

/* Largest certificate or key file read: a chain and its key take a few
 * KiB. */
#define TLS_FILE_MAX (256 * 1024)

struct relay_tls {
	char    *tl_cert;     /* PEM text, NUL-terminated; NULL: plain HTTP */
	char    *tl_key;      /* PEM text, NUL-terminated; wiped when freed */
	size_t   tl_key_len;
};

/* Reads both files and checks that they hold what they should (PEM
 * certificates; one unencrypted PEM private key; base64 that decodes).
 * 0, or -1 with err naming the file and what is wrong with it.  Whether
 * the key belongs to the certificate is checked by GnuTLS when the
 * daemons start (http_start). */
int  tls_load(struct relay_tls *tl, const char *cert_path,
              const char *key_path, char *err, size_t errlen);
void tls_free(struct relay_tls *tl);

/* ---- route.c: which call a request is ------------------------------ */

enum relay_call {
	CALL_LISTEN = 0,
	CALL_ACCEPT,
	CALL_DOWNSTREAM,
	CALL_REFUSE,
	CALL_CONNECT,
	CALL_UPSTREAM,
	CALL_RECEIVE,      /* the client's download after its first */
	CALL_STATUS,
};

struct relay_route {
	enum relay_call rt_call;
	char     rt_server[RELAY_NAME_MAX + 1];
	char     rt_arg[RELAY_NAME_MAX + 1];   /* port name or connection ID */
};

/* 0 when the request names a call, else the HTTP status to answer (400,
 * 404, 405) with *code and err filled. */
int route_parse(const char *method, const char *path, struct relay_route *rt,
                const char **code, char *err, size_t errlen);
int route_name_valid(const char *s, size_t len);
const char *route_call_name(enum relay_call c);
/* 1 for calls made by a server-proxy, 0 for a client-proxy's. */
int route_call_is_server(enum relay_call c);

/* ---- idtable.c: connection ID -> circuit --------------------------- */

struct idtable;

struct idtable *idtable_new(void);
void   idtable_free(struct idtable *t);
/* -1 when out of memory or the ID is present already. */
int    idtable_add(struct idtable *t, const uint8_t id[RELAY_ID_BYTES], void *val);
void  *idtable_find(const struct idtable *t, const uint8_t id[RELAY_ID_BYTES]);
void  *idtable_remove(struct idtable *t, const uint8_t id[RELAY_ID_BYTES]);
size_t idtable_count(const struct idtable *t);
/* Text form <-> bytes.  Decoding refuses anything but 22 URL-safe
 * base64 characters. */
void   idtable_id_text(const uint8_t id[RELAY_ID_BYTES], char out[RELAY_ID_TEXT + 1]);
int    idtable_id_parse(const char *text, uint8_t id[RELAY_ID_BYTES]);

/* ---- the daemon ------------------------------------------------------- */

struct MHD_Connection;
struct MHD_Daemon;
struct auth_verifier;
struct mproxy_decoder;

/* A circuit's requests, one slot each.  The four stream slots hold at
 * most one request of the current generation each; a stream may be
 * re-issued (after a break, or segment after segment) once its slot is
 * free. */
enum relay_stream {
	ST_LISTEN = 0,   /* the listen that returned the ID */
	ST_CONNECT,      /* client download (connect, then receive): the
	                  * downstream pipe */
	ST_ACCEPT,       /* server download: the upstream pipe */
	ST_DOWNSTREAM,   /* server upload into the downstream pipe */
	ST_UPSTREAM,     /* client upload into the upstream pipe */
	ST_REFUSE,
	ST_COUNT,
	ST_NONE = -1,
};
#define ST_BIT(s) (1u << (s))
#define ST_FOUR   (ST_BIT(ST_CONNECT) | ST_BIT(ST_ACCEPT) | \
                   ST_BIT(ST_DOWNSTREAM) | ST_BIT(ST_UPSTREAM))

/* One direction: an upload's body feeds pp_ring, a streaming response
 * drains it.  The writer is suspended while the ring is full, the reader
 * while it is empty: memory per direction is bounded by pipe_buffer. */
struct pipe {
	struct ring        pp_ring;
	struct relay_req  *pp_writer;
	struct relay_req  *pp_reader;
	unsigned           pp_eof:1;    /* the writer finished (a last body
	                                 * ended cleanly): for good */
	unsigned           pp_delivered:1;  /* EOF reached the reader: the
	                                 * download that ended there completed,
	                                 * or a Postern-Eof answer went out */
	uint64_t           pp_bytes;    /* body bytes in */
	/* Frames are the proxies' business; the relay only walks their
	 * headers to log payload bytes as the proxies do.  NULL once the
	 * stream did not decode (the log then counts body bytes). */
	struct mproxy_decoder *pp_dec;
	uint64_t           pp_payload;
};

enum circuit_state { CS_PAIRED, CS_OPEN, CS_ENDED };

/* The two proxies of a tunnel. */
enum circuit_side { SIDE_CLIENT = 0, SIDE_SERVER, SIDE_COUNT };

/* The relay's side of one tunnel: everything a connection ID names. */
struct circuit {
	struct relay      *ci_relay;
	uint8_t            ci_id[RELAY_ID_BYTES];
	char               ci_idtext[RELAY_ID_TEXT + 1];
	const struct relay_server *ci_server;
	const struct relay_client *ci_client;
	char               ci_port[RELAY_NAME_MAX + 1];
	enum circuit_state  ci_state;
	int                ci_failed;
	struct relay_req  *ci_req[ST_COUNT];
	unsigned           ci_opened;   /* ST_BIT: stream ever opened */
	unsigned           ci_refs;     /* requests pointing here (slotted or
	                                 * finishing after they left a slot) */
	uint32_t           ci_gen;      /* current generation, from 1 */
	struct pipe        ci_up;       /* upstream body -> accept response */
	struct pipe        ci_down;     /* downstream body -> connect response */
	/* One timer for every deadline: accept_timeout while PAIRED, then
	 * idle_timeout, resume_grace per side and peer_timeout per upload;
	 * it fires at the earliest and re-arms for the next. */
	struct loop_timer  ci_timer;
	uint64_t           ci_due;      /* when ci_timer fires (armed) */
	uint64_t           ci_start_ms;
	uint64_t           ci_active_ms;
	uint64_t           ci_away_ms[SIDE_COUNT];  /* no stream since; 0: one
	                                 * is attached */
	LIST_ENTRY(circuit) ci_entry;
};

/* One (server, port): its outstanding listens and waiting connects. */
struct relay_port {
	struct relay      *po_relay;
	const struct relay_server *po_server;
	char               po_name[RELAY_NAME_MAX + 1];
	TAILQ_HEAD(, relay_req) po_listens;    /* oldest first */
	TAILQ_HEAD(, relay_req) po_connects;   /* oldest first */
	size_t             po_nlistens;
	size_t             po_nconnects;
	uint64_t           po_seen_ms;  /* a listen was outstanding until then */
	struct loop_timer  po_gc;
	LIST_ENTRY(relay_port) po_entry;
};

/* The relay accepts connections itself and spreads them over this many
 * libmicrohttpd daemons, all polled from the loop's thread.  libmicrohttpd
 * 0.9.75 walks a daemon's whole list of suspended connections whenever one
 * of them is resumed, and every idle tunnel holds two suspended (its empty
 * response streams): with one daemon each byte through any tunnel cost
 * O(open tunnels).  Spread over the shards, a walk covers 1/RELAY_SHARDS
 * of them. */
#define RELAY_SHARDS 32

struct sorting;   /* sort.c */

struct relay_shard {
	struct relay      *sh_relay;
	struct MHD_Daemon *sh_mhd;
	int                sh_upload;    /* upload_memory per connection (sort.c) */
	int                sh_fd;        /* its epoll descriptor, on our loop */
	unsigned           sh_conns;     /* connections it holds */
	int                sh_kick;      /* MHD_run() due at once */
};

/* One TCP connection (libmicrohttpd's socket context).  Its timer closes
 * the connection once it has sat idle between requests, or taken too long
 * over one, for idle_timeout.  It is stopped while a request is parked or
 * carries a tunnel stream: the relay times those itself.  (Per-connection
 * timeouts in libmicrohttpd would do, but 0.9.75 walks every connection
 * with a timeout other than the daemon's on every MHD_run(), which made
 * each event cost O(open tunnels).) */
struct relay_conn {
	struct relay_shard *rc_shard;
	int                rc_fd;
	int                rc_head_seen;  /* a whole request head arrived */
	struct loop_timer  rc_timer;
};

/* One HTTP request (MHD's per-request con_cls). */
struct relay_req {
	struct relay      *rq_relay;
	struct relay_shard *rq_shard;           /* the daemon serving it */
	struct MHD_Connection *rq_conn;
	struct relay_conn *rq_rc;               /* NULL: out of memory at accept */
	int                rq_fd;
	struct relay_route rq_route;
	char               rq_peer[64];
	char               rq_what[96];         /* "POST /v1/s/nas/listen/ssh", for logs */
	const struct relay_server *rq_server;   /* the path's server */
	const struct relay_client *rq_client;   /* the caller, on client calls */
	struct circuit     *rq_circuit;
	enum relay_stream  rq_stream;
	unsigned           rq_in_handler:1;     /* inside our access handler */
	unsigned           rq_suspended:1;
	unsigned           rq_watched:1;        /* fd on our loop while suspended */
	unsigned           rq_waiting:1;        /* parked for pairing or accept */
	unsigned           rq_pending:1;        /* an answer waits for the handler */
	unsigned           rq_answered:1;       /* a response is queued */
	unsigned           rq_abort:1;          /* close at the next chance */
	unsigned           rq_counted:1;        /* in rl_npending */
	unsigned           rq_streaming:1;      /* its response is a pipe's reader */
	unsigned           rq_bad_body:1;       /* a body where none belongs */
	unsigned           rq_segment:1;        /* Postern-Segment: a segment */
	unsigned           rq_seg_started:1;    /* a download segment's first byte */
	unsigned           rq_seg_over:1;       /* its segment_time/poll_time passed */
	unsigned           rq_at_eof:1;         /* a download that ended at EOF */
	unsigned           rq_eof_answer:1;     /* answered 200 Postern-Eof: 1 */
	unsigned           rq_discard:1;        /* an upload into a finished
	                                         * direction: its bytes are dropped */
	unsigned           rq_http11:1;         /* asked in HTTP/1.1 */
	/* direct.c: a download whose chunks the relay writes itself */
	unsigned           rq_direct:1;
	unsigned           rq_dw_live:1;        /* its headers are out: the
	                                         * content reader was called */
	unsigned           rq_dw_failed:1;      /* writing failed: end it */
	unsigned           rq_dw_noread:1;      /* pipelined bytes wait */
	/* The chunk under way: "<hex>\r\n", rq_dw_len data bytes (the
	 * ring's oldest), "\r\n"; rq_dw_len 0 when none is. */
	uint8_t            rq_dw_hlen;
	char               rq_dw_hdr[24];
	size_t             rq_dw_len;
	size_t             rq_dw_sent;          /* bytes of it written */
	uint32_t           rq_gen;              /* Postern-Generation asked, then
	                                         * the one answered */
	uint32_t           rq_instance;         /* listen: its server-proxy instance
	                                         * (pairing.c); 0: anonymous */
	uint64_t           rq_seg_left;         /* download segment: bytes left */
	uint64_t           rq_last_ms;          /* upload: last byte (peer_timeout) */
	/* listens and connects waiting in a port's queue */
	struct relay_port *rq_port;
	TAILQ_ENTRY(relay_req) rq_wait;
	/* their connect_wait or listen_timeout; a download segment's
	 * poll_time, then segment_time */
	struct loop_timer  rq_timer;
	/* the answer decided while suspended: "CODE\0MESSAGE", allocated
	 * only for answers that carry text (most parked answers are 200s, and
	 * every tunnel holds four requests) */
	int                rq_status;
	char              *rq_text;
	/* refuse body, and bytes of a body being discarded */
	char              *rq_body;
	size_t             rq_body_len;
	size_t             rq_discarded;
	LIST_ENTRY(relay_req) rq_entry;
};

struct relay {
	const struct relay_config *rl_cf;
	struct loop       *rl_loop;
	/* RELAY_SHARDS daemons for every connection, then (plain HTTP,
	 * upload_memory above connection_memory) RELAY_SHARDS for uploads */
	struct relay_shard rl_shards[2 * RELAY_SHARDS];
	size_t             rl_nshards;       /* started */
	int                rl_sort;          /* upload daemons run: sort.c */
	LIST_HEAD(, sorting) rl_sorting;     /* accepted, first bytes awaited */
	size_t             rl_nsorting;
	int                rl_listen_fd;
	int                rl_accepting;     /* rl_listen_fd on the loop */
	unsigned           rl_conns;         /* HTTP connections open */
	struct loop_timer  rl_kick_timer;    /* runs the kicked shards */
	struct loop_timer  rl_accept_timer;  /* accepting again after EMFILE */
	char               rl_address[128];
	struct auth_verifier *rl_auth;
	struct idtable    *rl_ids;
	LIST_HEAD(, relay_port) rl_ports;
	struct relay_instance *rl_instances;  /* per configured server, made
	                                       * on first use (pairing.c) */
	LIST_HEAD(, relay_req)  rl_reqs;
	LIST_HEAD(, circuit)     rl_circuits;
	size_t             rl_ncircuits;
	size_t             rl_nlistens;      /* outstanding listens */
	size_t             rl_npending;      /* connects not yet answered */
	uint64_t           rl_buffered;      /* bytes in all pipes */
	unsigned           rl_max_connections;
	int                rl_stopping;
	/* HTTPS (http.c): the certificate and key given to every daemon,
	 * and an epoll set of parked TLS sockets watched for EPOLLRDHUP
	 * (-1 for plain HTTP). */
	struct relay_tls   rl_tls;
	int                rl_hup_fd;
	/* libmicrohttpd's last message while the daemons start: the reason
	 * GnuTLS refused a certificate or key. */
	int                rl_starting;
	char               rl_mhd_error[RELAY_ERR_MAX];
};

/* Starts listening (the address in cf->cf_listen) and registers with the
 * loop; cf stays owned by the caller and must outlive the relay. */
struct relay *relay_new(struct loop *l, const struct relay_config *cf,
                        char *err, size_t errlen);
/* The bound address, e.g. "127.0.0.1:41234" (the real port for :0). */
const char *relay_address(const struct relay *rl);
/* Ends every tunnel and request, stops libmicrohttpd, frees everything. */
void relay_free(struct relay *rl);

/* Has the shard's daemon run again right after the current callbacks:
 * its resumes take effect only inside MHD_run(), and in external-polling
 * mode nothing wakes its epoll descriptor for them. */
void relay_mhd_kick(struct relay_shard *sh);
/* An accepted socket to a daemon of the kind asked (upload: sort.c). */
void relay_hand_over(struct relay *rl, int fd, const struct sockaddr *sa,
                     socklen_t sl, int upload);

/* sort.c: accepted sockets wait here for their request line. */
int  sort_add(struct relay *rl, int fd, const struct sockaddr *sa, socklen_t sl);
void sort_free_all(struct relay *rl);
int  sort_is_upload(const char *b, size_t n);
/* A connection closed: accepting may go on if it had stopped at
 * max_connections. */
void relay_conn_closed(struct relay *rl);

/* http.c: starts sh's daemon (no listening socket: relay.c accepts and
 * hands connections over with MHD_add_connection()). */
int  http_start(struct relay_shard *sh, char *err, size_t errlen);
/* The nonce store and signature checks, once for all shards. */
int  http_auth_start(struct relay *rl, char *err, size_t errlen);
/* HTTPS when cf_tls_cert is set: reads and checks the certificate and
 * key (before the shards start, which then serve TLS).  0 or -1 with
 * err.  http_tls_stop() after the daemons stopped. */
int  http_tls_start(struct relay *rl, char *err, size_t errlen);
void http_tls_stop(struct relay *rl);
void http_suspend(struct relay_req *rq, int watch);
void http_unwatch(struct relay_req *rq);
/* A parked socket woke up: -1 its peer left (EOF or an error), 1 request
 * bytes wait (pipelining), 0 nothing after all. */
int  http_peer_peek(int fd);
void http_resume(struct relay_req *rq);
/* Answers now when inside rq's handler, else parks the answer and
 * resumes rq so that its handler sends it. */
void http_reply(struct relay_req *rq, int status, const char *code,
                const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* Ends rq abnormally: its handler returns MHD_NO, its reader an error. */
void http_abort(struct relay_req *rq);
/* Streams of a circuit are timed by the circuit (idle_timeout over both
 * directions), not by their connection's timer. */
void http_untimed(struct relay_req *rq);
/* A request header's value, or NULL. */
const char *http_header(struct relay_req *rq, const char *name);
int  http_queue_json(struct relay_req *rq, int status, const char *body);
int  http_queue_stream(struct relay_req *rq);

/* calls.c: the per-call logic.  They answer through http_reply() and
 * set rq_abort to close the connection. */
void calls_open(struct relay_req *rq);
void calls_body(struct relay_req *rq, const char *data, size_t *size);
void calls_final(struct relay_req *rq);
void calls_peer_gone(struct relay_req *rq);

/* pairing.c */
/* A listen's Postern-Instance (newest registration wins): 0, or -1 when
 * rq was answered (400 for a bad token, 409 replaced). */
int  pairing_instance(struct relay_req *rq);
void pairing_listen(struct relay *rl, struct relay_req *rq);
void pairing_connect(struct relay *rl, struct relay_req *rq);
void pairing_drop(struct relay_req *rq);
void pairing_free_all(struct relay *rl);

/* circuit.c */
struct circuit *circuit_new(struct relay *rl, struct relay_req *listen,
                          struct relay_req *connect);
void circuit_attach(struct circuit *t, struct relay_req *rq, enum relay_stream s);
/* rq's request ended (clean: completed normally; how: in words). */
void circuit_detach(struct relay_req *rq, int clean, const char *how);
/* rq leaves its slot but stays referenced until it completes: an upload
 * whose body ended, a download that reached its end (at_eof: the end of
 * the direction), so the next request of that stream finds the slot
 * free. */
void circuit_unslot(struct relay_req *rq, int at_eof);
/* A stream request of generation gen (> ci_gen) from side: a proxy saw a
 * break.  Cuts the streams attached, empties the pipes, moves to gen. */
void circuit_resume(struct circuit *t, uint32_t gen, enum circuit_side side);
/* rq, attached, failed at the relay (why: in words): on an OPEN circuit
 * a break (the others are cut, the generation moves on); before accept
 * the circuit fails with reason. */
void circuit_stream_failed(struct relay_req *rq, const char *reason,
                           const char *why);
/* Ends the circuit "done" once both sides finished and both directions
 * were delivered. */
void circuit_check_done(struct circuit *t);
/* A deadline may have moved earlier (an upload attached or resumed, a
 * side left): re-arm the circuit's timer if so. */
void circuit_schedule(struct circuit *t);
enum circuit_side circuit_side_of(enum relay_stream s);
void circuit_accepted(struct circuit *t);
/* Ends a circuit that failed.  reason is one word for the log
 * (accept_timeout, idle_timeout, stream_failed, ...), why says what
 * happened; a connect still waiting for its answer gets status, code and
 * why (status 0: it is cut instead). */
void circuit_fail(struct circuit *t, const char *reason, int status,
                  const char *code, const char *why);
/* Ends a circuit without error: refused, or every stream done. */
void circuit_end(struct circuit *t, const char *reason, const char *detail);
void circuit_activity(struct circuit *t);

/* pipe.c: pipe_read returns bytes, 0 (parked until the writer adds
 * some), PIPE_EOF (the direction ended and is drained), PIPE_END (rq's
 * download segment is over) or PIPE_ERROR. */
#define PIPE_EOF   (-1L)
#define PIPE_ERROR (-2L)
#define PIPE_END   (-3L)
void pipe_init(struct pipe *p, size_t cap);
/* Drops the bytes held (a break: their senders still have them); the
 * writer's EOF stays. */
void pipe_empty(struct relay *rl, struct pipe *p);
/* rq's response starts reading p: a segment's poll_time starts. */
void pipe_reader_start(struct relay_req *rq, struct pipe *p);
/* Payload bytes of data frames through p (body bytes if undecodable). */
uint64_t pipe_payload(const struct pipe *p);
void pipe_free(struct relay *rl, struct pipe *p);
void pipe_write(struct relay_req *rq, struct pipe *p, const char *data, size_t *size);
void pipe_write_end(struct pipe *p);
long pipe_read(struct relay_req *rq, struct pipe *p, char *buf, size_t max);
/* n bytes left p for rq (reader): accounting, timers, the writer woken. */
void pipe_taken(struct relay_req *rq, struct pipe *p, size_t n);
/* The pipe a download (connect/receive, accept) reads; NULL without a
 * circuit. */
struct pipe *pipe_of_reader(const struct relay_req *rq);
/* May rq read p still (no break, failure or abort since)? */
int  pipe_reader_ok(const struct relay_req *rq, const struct pipe *p);
/* Does rq's body end now: PIPE_EOF (the direction is over and drained;
 * the ring's storage goes back), PIPE_END (its segment is over) or 0. */
long pipe_reader_end(struct relay_req *rq, struct pipe *p);
/* The bytes of avail rq may take now: a segment's rest bounds them. */
size_t pipe_reader_room(const struct relay_req *rq, size_t avail);

/* direct.c: a plain HTTP/1.1 download's chunks written by the relay. */
int  direct_eligible(struct relay_req *rq);
/* Writes what the socket takes from p, rq's pipe; -1 once the stream
 * must end in error. */
int  direct_flush(struct relay_req *rq, struct pipe *p);
/* After bytes or an end reached a suspended direct reader. */
void direct_after(struct relay_req *rq);
/* The content reader's turn: PIPE_* or 0 (suspended, nothing for MHD). */
long direct_read(struct relay_req *rq, struct pipe *p);

#endif
