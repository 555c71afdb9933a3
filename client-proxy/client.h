/* postern-client: local ports (-L) forwarded through the relay. */
#ifndef POSTERN_CLIENT_H
#define POSTERN_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "key.h"
#include "loop.h"
#include "net.h"
#include "proxyconf.h"
#include "relaycall.h"

#define CLIENT_FORWARDS_MAX 256
#define CLIENT_DEFAULT_BIND "127.0.0.1"

/* One -L [BIND:]LPORT:SERVER/PORT. */
struct client_forward {
	char     cf_bind[NET_HOST_MAX];
	uint16_t cf_lport;                        /* 0: any free port */
	char     cf_server[RELAYCALL_NAME_MAX + 1];
	char     cf_port[RELAYCALL_NAME_MAX + 1];
};

struct client_options {
	struct proxy_settings  co_ps;     /* first: the common setters use it */
	struct client_forward *co_fwd;
	size_t                 co_nfwd;
};

/* ---- options.c ----------------------------------------------------- */

void client_options_init(struct client_options *co);
void client_options_free(struct client_options *co);
/* Command line and [client] section of --config; checks that what is
 * required is there.  POPT_HELP for -h. */
enum popt_result client_options_parse(struct client_options *co, int argc,
                                      char **argv, char *err, size_t errlen);
int  client_forward_parse(const char *s, struct client_forward *f,
                          char *err, size_t errlen);
void client_usage(FILE *f);

/* ---- client.c ------------------------------------------------------ */

struct client;

/* Binds every forward (logging "listening on ADDR -> SERVER/PORT") and
 * starts serving on l.  NULL with err when a port cannot be bound. */
struct client *client_new(struct loop *l, const struct client_options *co,
                          const struct key *k, char *err, size_t errlen);
/* Closes the listeners and ends every tunnel (reason "shutdown"). */
void client_shutdown(struct client *c);
/* SIGTERM: closes the listening ports, tells every open tunnel's server
 * that the client-proxy is going away, and stops the loop once they have
 * it (or after shutdown_grace).  0 when there is nothing to wait for. */
int  client_drain(struct client *c);
void client_free(struct client *c);

#endif
