/* Pairing listens with connects, per (server, port).
 *
 * A connect takes the oldest outstanding listen.  With none outstanding
 * but one seen within listen_grace (the server-proxy is between two
 * polls), it queues for up to connect_wait; otherwise it is refused at
 * once.  Port entries are made on demand and dropped once empty for
 * longer than the grace, so made-up port names cannot pile up.
 *
 * Newest registration wins: a listen names its server-proxy process
 * (Postern-Instance).  When a new instance of a server shows up, every
 * listen of the one before is answered 409 replaced, and so is every
 * later listen of it (a process that was stopped and resumed, or a
 * second copy started by mistake): the proxy restarted last takes over
 * at once.  Listens without the header (older proxies) are anonymous:
 * they neither replace nor get replaced. */
#include <stdlib.h>
#include <string.h>

#include "errbuf.h"
#include "log.h"
#include "relay.h"

/* Replaced instances remembered per server, newest first out: one that
 * comes back after more restarts than this would take over again. */
#define PAIRING_OLD_INSTANCES 4

/* Per configured server (relay.rl_instances, indexed like cf_servers). */
struct relay_instance {
	uint32_t in_serial;        /* of in_token; 0: none seen yet */
	char     in_token[RELAY_NAME_MAX + 1];
	char     in_old[PAIRING_OLD_INSTANCES][RELAY_NAME_MAX + 1];
	unsigned in_next_old;      /* where the next replaced one goes */
};

static void pairing_gc(struct loop *l, void *arg);

static struct relay_port *
pairing_port(struct relay *rl, const struct relay_server *sv, const char *name, int create)
{
	struct relay_port *po;

	LIST_FOREACH(po, &rl->rl_ports, po_entry)
		if (po->po_server == sv && strcmp(po->po_name, name) == 0)
			return po;
	if (!create || (po = calloc(1, sizeof(*po))) == NULL)
		return NULL;
	po->po_relay = rl;
	po->po_server = sv;
	snprintf(po->po_name, sizeof(po->po_name), "%s", name);
	TAILQ_INIT(&po->po_listens);
	TAILQ_INIT(&po->po_connects);
	loop_timer_init(&po->po_gc, pairing_gc, po);
	LIST_INSERT_HEAD(&rl->rl_ports, po, po_entry);
	return po;
}

static void
pairing_port_free(struct relay_port *po)
{
	loop_timer_stop(po->po_relay->rl_loop, &po->po_gc);
	LIST_REMOVE(po, po_entry);
	free(po);
}

static void
pairing_gc(struct loop *l, void *arg)
{
	struct relay_port *po = arg;

	(void)l;
	if (po->po_nlistens == 0 && po->po_nconnects == 0)
		pairing_port_free(po);
}

static void
pairing_gc_check(struct relay_port *po)
{
	struct relay *rl = po->po_relay;

	if (po->po_nlistens == 0 && po->po_nconnects == 0)
		loop_timer_start(rl->rl_loop, &po->po_gc, rl->rl_cf->cf_listen_grace_ms + 1000);
	else
		loop_timer_stop(rl->rl_loop, &po->po_gc);
}

/* Takes rq out of its port's queue (it was paired, timed out or left). */
void
pairing_drop(struct relay_req *rq)
{
	struct relay_port *po = rq->rq_port;
	struct relay *rl = rq->rq_relay;

	if (po == NULL)
		return;
	if (rq->rq_route.rt_call == CALL_LISTEN) {
		TAILQ_REMOVE(&po->po_listens, rq, rq_wait);
		po->po_nlistens--;
		rl->rl_nlistens--;
		/* It was outstanding until now: connects within the grace
		 * from here on still wait for the next poll. */
		po->po_seen_ms = loop_now_ms();
	} else {
		TAILQ_REMOVE(&po->po_connects, rq, rq_wait);
		po->po_nconnects--;
	}
	rq->rq_port = NULL;
	rq->rq_waiting = 0;
	loop_timer_stop(rl->rl_loop, &rq->rq_timer);
	pairing_gc_check(po);
}

static void
pairing_count(struct relay_req *connect)
{
	if (!connect->rq_counted) {
		connect->rq_counted = 1;
		connect->rq_relay->rl_npending++;
	}
	connect->rq_waiting = 1;
}

static void
pairing_pair(struct relay *rl, struct relay_req *listen, struct relay_req *connect)
{
	struct circuit *t;

	if ((t = circuit_new(rl, listen, connect)) == NULL) {
		log_warn("out of memory for a new tunnel");
		http_reply(listen, 503, "busy", "the relay is out of memory");
		http_reply(connect, 503, "busy", "the relay is out of memory");
		return;
	}
	http_reply(listen, 200, NULL, NULL);
	pairing_count(connect);
	/* Parked until accept, refuse or accept_timeout; a connect that
	 * waited in the queue is parked already. */
	http_suspend(connect, 1);
}

static void
pairing_listen_timeout(struct loop *l, void *arg)
{
	struct relay_req *rq = arg;

	(void)l;
	pairing_drop(rq);
	http_reply(rq, 204, NULL, NULL);
}

static void
pairing_connect_timeout(struct loop *l, void *arg)
{
	struct relay_req *rq = arg;
	const struct relay_config *cf = rq->rq_relay->rl_cf;

	(void)l;
	pairing_drop(rq);
	http_reply(rq, 503, "not_listening", "server '%s' did not poll for port '%s' "
	    "within connect_wait (%llu ms); is postern-server overloaded or stopped?",
	    rq->rq_server->sv_name, rq->rq_route.rt_arg,
	    (unsigned long long)cf->cf_connect_wait_ms);
}

static struct relay_instance *
pairing_instances(struct relay *rl, const struct relay_server *sv)
{
	const struct relay_config *cf = rl->rl_cf;

	if (rl->rl_instances == NULL &&
	    (rl->rl_instances = calloc(cf->cf_nservers, sizeof(*rl->rl_instances))) == NULL)
		return NULL;
	return &rl->rl_instances[sv - cf->cf_servers];
}

static void
pairing_replaced(struct relay_req *rq)
{
	http_reply(rq, 409, "replaced", "another postern-server with the same key "
	    "registered server '%s'; this one was replaced", rq->rq_server->sv_name);
}

/* Answers every outstanding listen of the instance serial of sv. */
static unsigned
pairing_replace(struct relay *rl, const struct relay_server *sv, uint32_t serial)
{
	struct relay_port *po;
	struct relay_req *l, *next;
	unsigned n = 0;

	LIST_FOREACH(po, &rl->rl_ports, po_entry) {
		if (po->po_server != sv)
			continue;
		for (l = TAILQ_FIRST(&po->po_listens); l != NULL; l = next) {
			next = TAILQ_NEXT(l, rq_wait);
			if (l->rq_instance != serial)
				continue;
			pairing_drop(l);
			pairing_replaced(l);
			n++;
		}
	}
	return n;
}

int
pairing_instance(struct relay_req *rq)
{
	struct relay *rl = rq->rq_relay;
	const struct relay_server *sv = rq->rq_server;
	const char *token = http_header(rq, "Postern-Instance");
	struct relay_instance *in;
	char q[ERRBUF_QUOTE_MAX + 4];
	unsigned i, n;

	rq->rq_instance = 0;
	if (token == NULL)
		return 0;
	if (!route_name_valid(token, strlen(token))) {
		errbuf_quote(token, strlen(token), q);
		http_reply(rq, 400, "bad_request", "bad Postern-Instance header '%s': "
		    "use 1 to %d characters from A-Z a-z 0-9 . _ -", q, RELAY_NAME_MAX);
		return -1;
	}
	if ((in = pairing_instances(rl, sv)) == NULL) {
		http_reply(rq, 503, "busy", "the relay is out of memory");
		return -1;
	}
	if (in->in_serial != 0 && strcmp(in->in_token, token) == 0) {
		rq->rq_instance = in->in_serial;
		return 0;
	}
	for (i = 0; i < PAIRING_OLD_INSTANCES; i++)
		if (strcmp(in->in_old[i], token) == 0) {
			pairing_replaced(rq);
			return -1;
		}
	n = 0;
	if (in->in_serial != 0) {
		snprintf(in->in_old[in->in_next_old], sizeof(in->in_old[0]), "%s",
		    in->in_token);
		in->in_next_old = (in->in_next_old + 1) % PAIRING_OLD_INSTANCES;
		n = pairing_replace(rl, sv, in->in_serial);
		log_info("server '%s': a new postern-server instance registered from %s; "
		    "the previous one is replaced (%u listens answered 409)",
		    sv->sv_name, rq->rq_peer, n);
	}
	snprintf(in->in_token, sizeof(in->in_token), "%s", token);
	if (++in->in_serial == 0)
		in->in_serial = 1;
	rq->rq_instance = in->in_serial;
	return 0;
}

void
pairing_listen(struct relay *rl, struct relay_req *rq)
{
	struct relay_port *po;
	struct relay_req *c;
	struct relay_instance *in;

	/* Replaced between its headers and now. */
	if (rq->rq_instance != 0 && (in = pairing_instances(rl, rq->rq_server)) != NULL &&
	    in->in_serial != rq->rq_instance) {
		pairing_replaced(rq);
		return;
	}
	po = pairing_port(rl, rq->rq_server, rq->rq_route.rt_arg, 1);
	if (po == NULL) {
		http_reply(rq, 503, "busy", "the relay is out of memory");
		return;
	}
	po->po_seen_ms = loop_now_ms();
	if ((c = TAILQ_FIRST(&po->po_connects)) != NULL) {
		pairing_drop(c);
		pairing_pair(rl, rq, c);
		pairing_gc_check(po);
		return;
	}
	TAILQ_INSERT_TAIL(&po->po_listens, rq, rq_wait);
	po->po_nlistens++;
	rl->rl_nlistens++;
	rq->rq_port = po;
	rq->rq_waiting = 1;
	pairing_gc_check(po);
	loop_timer_init(&rq->rq_timer, pairing_listen_timeout, rq);
	loop_timer_start(rl->rl_loop, &rq->rq_timer, rl->rl_cf->cf_listen_timeout_ms);
	http_suspend(rq, 1);
}

void
pairing_connect(struct relay *rl, struct relay_req *rq)
{
	const struct relay_config *cf = rl->rl_cf;
	const char *server = rq->rq_server->sv_name, *port = rq->rq_route.rt_arg;
	struct relay_port *po;
	struct relay_req *l;

	if (rl->rl_ncircuits >= cf->cf_max_tunnels) {
		http_reply(rq, 503, "busy", "the relay is at its max_tunnels limit (%llu); "
		    "try again later", (unsigned long long)cf->cf_max_tunnels);
		return;
	}
	po = pairing_port(rl, rq->rq_server, port, 0);
	if (po != NULL && (l = TAILQ_FIRST(&po->po_listens)) != NULL) {
		pairing_drop(l);
		pairing_pair(rl, l, rq);
		return;
	}
	if (po != NULL && loop_now_ms() - po->po_seen_ms <= cf->cf_listen_grace_ms) {
		if (po->po_nconnects >= cf->cf_max_pending_connects) {
			http_reply(rq, 503, "busy", "%zu connects already wait for server '%s' "
			    "port '%s' (max_pending_connects); try again later",
			    po->po_nconnects, server, port);
			return;
		}
		TAILQ_INSERT_TAIL(&po->po_connects, rq, rq_wait);
		po->po_nconnects++;
		rq->rq_port = po;
		pairing_count(rq);
		pairing_gc_check(po);
		loop_timer_init(&rq->rq_timer, pairing_connect_timeout, rq);
		loop_timer_start(rl->rl_loop, &rq->rq_timer, cf->cf_connect_wait_ms);
		http_suspend(rq, 1);
		return;
	}
	http_reply(rq, 503, "not_listening", "server '%s' is not listening on port '%s' "
	    "(is postern-server running and offering it?)", server, port);
}

void
pairing_free_all(struct relay *rl)
{
	struct relay_port *po;

	while ((po = LIST_FIRST(&rl->rl_ports)) != NULL)
		pairing_port_free(po);
	free(rl->rl_instances);
	rl->rl_instances = NULL;
}
