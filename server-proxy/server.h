/* postern-server: offers local targets to clients through the relay. */
#ifndef POSTERN_SERVER_H
#define POSTERN_SERVER_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "key.h"
#include "loop.h"
#include "net.h"
#include "proxyconf.h"
#include "relaycall.h"

#define SERVER_EXPOSES_MAX               256
#define SERVER_DEFAULT_LISTENS_PER_PORT  2
#define SERVER_LISTENS_PER_PORT_MAX      64
#define SERVER_BACKOFF_MIN_MS            500
#define SERVER_BACKOFF_MAX_MS            30000
#define SERVER_BACKOFF_FLOOR_MS          100     /* shortest jittered wait */
#define SERVER_DEFAULT_REPLACED_GRACE_MS 30000
#define SERVER_INSTANCE_RAW              16      /* random bytes */
#define SERVER_INSTANCE_LEN              22      /* their URL-safe base64 */

/* One --expose PORT=tcp://HOST:PORT. */
struct server_expose {
	char     se_port[RELAYCALL_NAME_MAX + 1];   /* the name clients use */
	char     se_host[NET_HOST_MAX];
	uint16_t se_tport;
};

struct server_options {
	struct proxy_settings so_ps;     /* first: the common setters use it */
	char    *so_name;
	struct server_expose *so_exp;
	size_t   so_nexp;
	unsigned so_listens_per_port;
	uint64_t so_replaced_grace_ms;   /* tunnels may finish after a
	                                  * takeover; 0 = end them at once */
};

/* ---- options.c ----------------------------------------------------- */

void server_options_init(struct server_options *so);
void server_options_free(struct server_options *so);
enum popt_result server_options_parse(struct server_options *so, int argc,
                                      char **argv, char *err, size_t errlen);
int  server_expose_parse(const char *s, struct server_expose *e,
                         char *err, size_t errlen);
void server_usage(FILE *f);

/* ---- server.c ------------------------------------------------------ */

struct server;

/* Resolves the targets and starts the listens.  NULL with err. */
struct server *server_new(struct loop *l, const struct server_options *so,
                          const struct key *k, char *err, size_t errlen);
/* Stops the listens and dials, ends every tunnel ("shutdown"). */
void server_shutdown(struct server *sv);
/* SIGTERM: stops listening, tells every open tunnel's client that the
 * server-proxy is going away, and stops the loop once they have it (or
 * after shutdown_grace).  0 when there is nothing to wait for. */
int  server_drain(struct server *sv);
void server_free(struct server *sv);

/* 1 when the server stopped because another instance with its key took
 * over its name (409 replaced): the process exits with this. */
int server_exit_status(const struct server *sv);

/* The ceiling of the next wait after a failure: 0.5 s, doubling, at most
 * 30 s. */
uint64_t server_backoff_next(uint64_t prev_ms);
/* The wait itself: uniform in [SERVER_BACKOFF_FLOOR_MS, ceiling] (at most
 * SERVER_BACKOFF_MAX_MS), drawn from the random number r. */
uint64_t server_backoff_jitter(uint64_t ceiling_ms, uint32_t r);
/* This process's Postern-Instance token: SERVER_INSTANCE_RAW random
 * bytes, URL-safe base64 without padding; out holds at least
 * SERVER_INSTANCE_LEN + 1 bytes. */
void server_instance_token(char *out, size_t outlen);

#endif
