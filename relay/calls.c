/* What each relay call does once routed and authenticated.  See
 * docs/protocol.md for the contract and docs/relay.md for the settings. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "errbuf.h"
#include "log.h"
#include "relay.h"

static enum relay_stream
calls_stream(enum relay_call c)
{
	switch (c) {
	case CALL_ACCEPT:     return ST_ACCEPT;
	case CALL_DOWNSTREAM: return ST_DOWNSTREAM;
	case CALL_UPSTREAM:   return ST_UPSTREAM;
	case CALL_RECEIVE:    return ST_CONNECT;
	case CALL_REFUSE:     return ST_REFUSE;
	default:              return ST_NONE;
	}
}

static void
calls_port_list(const struct relay_server *sv, char *buf, size_t len)
{
	size_t i, n = 0;

	buf[0] = '\0';
	for (i = 0; i < sv->sv_nports && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? " " : "", sv->sv_ports[i]);
}

/* A header holding a whole number from 1 to max: 1 with *out set, 0 when
 * absent, -1 when malformed. */
static int
calls_number(struct relay_req *rq, const char *name, uint64_t max, uint64_t *out)
{
	const char *v = http_header(rq, name), *p;
	uint64_t n = 0;

	if (v == NULL)
		return 0;
	for (p = v; *p >= '0' && *p <= '9'; p++) {
		if (n > (max - (uint64_t)(*p - '0')) / 10)
			return -1;
		n = n * 10 + (uint64_t)(*p - '0');
	}
	if (p == v || *p != '\0' || n == 0)
		return -1;
	*out = n;
	return 1;
}

/* The value of header name, quoted for a message. */
static const char *
calls_quote(struct relay_req *rq, const char *name, char out[ERRBUF_QUOTE_MAX + 4])
{
	const char *v = http_header(rq, name);

	errbuf_quote(v ? v : "", v ? strlen(v) : 0, out);
	return out;
}

/* Postern-Segment on a stream request: a segment (an upload's value is
 * only a flag; a download's is its byte cap).  -1 when answered 400. */
static int
calls_segment(struct relay_req *rq, int download)
{
	const struct relay_config *cf = rq->rq_relay->rl_cf;
	char q[ERRBUF_QUOTE_MAX + 4];
	uint64_t n;
	int r;

	r = calls_number(rq, "Postern-Segment", UINT64_MAX / 2, &n);
	if (r == -1) {
		http_reply(rq, 400, "bad_request", "bad Postern-Segment header '%s': "
		    "write a whole number of bytes from 1 (1 on an upload)",
		    calls_quote(rq, "Postern-Segment", q));
		return -1;
	}
	if (r == 1) {
		rq->rq_segment = 1;
		if (download)
			rq->rq_seg_left = n < cf->cf_segment_bytes ? n : cf->cf_segment_bytes;
	}
	return 0;
}

/* accept, downstream, upstream, receive, refuse: the ID must be live,
 * under this server and bound to this caller; a stream request then goes
 * by its generation (docs/protocol.md, "Generations"). */
static void
calls_open_stream(struct relay_req *rq)
{
	struct relay *rl = rq->rq_relay;
	const struct relay_route *rt = &rq->rq_route;
	enum relay_stream s = calls_stream(rt->rt_call);
	enum circuit_side side = circuit_side_of(s);
	uint8_t id[RELAY_ID_BYTES];
	struct circuit *t;
	uint64_t gen = 1;
	struct pipe *up;
	char q[ERRBUF_QUOTE_MAX + 4];

	if (s != ST_REFUSE) {
		if (calls_number(rq, "Postern-Generation", UINT32_MAX, &gen) == -1) {
			http_reply(rq, 400, "bad_request", "bad Postern-Generation header "
			    "'%s': write a whole number from 1 to %lu",
			    calls_quote(rq, "Postern-Generation", q),
			    (unsigned long)UINT32_MAX);
			return;
		}
		if (calls_segment(rq, s == ST_CONNECT || s == ST_ACCEPT) == -1)
			return;
	}
	if (idtable_id_parse(rt->rt_arg, id) == -1 ||
	    (t = idtable_find(rl->rl_ids, id)) == NULL || t->ci_server != rq->rq_server) {
		http_reply(rq, 404, "unknown_connection", "no connection %s under server "
		    "'%s' (unknown, or it has ended)", rt->rt_arg, rt->rt_server);
		return;
	}
	if (!route_call_is_server(rt->rt_call) && t->ci_client != rq->rq_client) {
		http_reply(rq, 403, "forbidden", "connection %s belongs to another client "
		    "key", rt->rt_arg);
		return;
	}
	if (s == ST_REFUSE) {
		if ((t->ci_opened & ST_BIT(s)) || t->ci_req[s] != NULL) {
			http_reply(rq, 409, "already_used", "connection %s was refused "
			    "already (or a refuse of it is being read)", rt->rt_arg);
			return;
		}
		if (t->ci_opened & (ST_BIT(ST_ACCEPT) | ST_BIT(ST_DOWNSTREAM))) {
			http_reply(rq, 409, "already_used", "connection %s was accepted "
			    "already; it cannot be refused", rt->rt_arg);
			return;
		}
		circuit_attach(t, rq, s);
		return;
	}
	if ((s == ST_ACCEPT || s == ST_DOWNSTREAM) && (t->ci_opened & ST_BIT(ST_REFUSE))) {
		http_reply(rq, 409, "already_used", "connection %s was refused already",
		    rt->rt_arg);
		return;
	}
	if (rt->rt_call == CALL_RECEIVE && t->ci_state != CS_OPEN) {
		http_reply(rq, 409, "not_accepted", "connection %s is not accepted yet: "
		    "its connect is still waiting for the server", rt->rt_arg);
		return;
	}
	if (gen < t->ci_gen) {
		rq->rq_gen = t->ci_gen;
		http_reply(rq, 409, "stale_generation", "connection %s is in generation "
		    "%lu, this %s is for generation %lu: re-attach with generation %lu",
		    rt->rt_arg, (unsigned long)t->ci_gen, route_call_name(rt->rt_call),
		    (unsigned long)gen, (unsigned long)t->ci_gen);
		return;
	}
	if (gen > t->ci_gen)
		circuit_resume(t, (uint32_t)gen, side);
	if (t->ci_req[s] != NULL) {
		rq->rq_gen = t->ci_gen;
		http_reply(rq, 409, "already_used", "the %s stream of connection %s is "
		    "already open in generation %lu (by %s)",
		    route_call_name(rt->rt_call), rt->rt_arg, (unsigned long)t->ci_gen,
		    route_call_name(t->ci_req[s]->rq_route.rt_call));
		return;
	}
	circuit_attach(t, rq, s);
	/* An upload into a direction that finished: its sender re-sends what
	 * the peer has already (its answer was lost); the bytes are dropped. */
	up = side == SIDE_CLIENT ? &t->ci_up : &t->ci_down;
	if ((s == ST_UPSTREAM || s == ST_DOWNSTREAM) && up->pp_eof)
		rq->rq_discard = 1;
}

void
calls_open(struct relay_req *rq)
{
	const struct relay_route *rt = &rq->rq_route;
	const struct relay_server *sv = rq->rq_server;
	char ports[512];

	switch (rt->rt_call) {
	case CALL_LISTEN:
		if (!config_server_offers(sv, rt->rt_arg)) {
			calls_port_list(sv, ports, sizeof(ports));
			http_reply(rq, 403, "forbidden", "[server %s] may not offer port '%s' "
			    "(its ports: %s)", sv->sv_name, rt->rt_arg, ports);
			return;
		}
		(void)pairing_instance(rq);
		return;
	case CALL_CONNECT:
		if (calls_segment(rq, 1) == -1)
			return;
		if (!config_server_offers(sv, rt->rt_arg)) {
			http_reply(rq, 404, "unknown_port", "server '%s' has no port '%s'",
			    sv->sv_name, rt->rt_arg);
			return;
		}
		if (!config_client_may(rq->rq_client, sv->sv_name, rt->rt_arg))
			http_reply(rq, 403, "forbidden", "[client %s] is not allowed to "
			    "connect to %s/%s (see its allow line)", rq->rq_client->cl_name,
			    sv->sv_name, rt->rt_arg);
		return;
	case CALL_STATUS:
		return;
	default:
		calls_open_stream(rq);
		return;
	}
}

void
calls_body(struct relay_req *rq, const char *data, size_t *size)
{
	struct relay *rl = rq->rq_relay;
	struct circuit *t = rq->rq_circuit;
	char *nb;

	switch (rq->rq_route.rt_call) {
	case CALL_DOWNSTREAM:
	case CALL_UPSTREAM:
		if (rq->rq_discard) {
			if (t == NULL || t->ci_req[rq->rq_stream] != rq) {
				rq->rq_abort = 1;
				return;
			}
			rq->rq_last_ms = loop_now_ms();
			*size = 0;
			return;
		}
		pipe_write(rq, rq->rq_stream == ST_DOWNSTREAM ? &t->ci_down : &t->ci_up,
		    data, size);
		return;
	case CALL_REFUSE:
		if (!rq->rq_bad_body &&
		    rq->rq_body_len + *size <= rl->rl_cf->cf_max_refuse_body) {
			if ((nb = realloc(rq->rq_body, rq->rq_body_len + *size)) == NULL) {
				rq->rq_abort = 1;
				return;
			}
			memcpy(nb + rq->rq_body_len, data, *size);
			rq->rq_body = nb;
			rq->rq_body_len += *size;
			*size = 0;
			return;
		}
		break;
	default:
		break;
	}
	/* A body where none belongs (or too much of one): read and drop it,
	 * up to a bound, so that the error can be answered at its end. */
	rq->rq_bad_body = 1;
	rq->rq_discarded += *size;
	*size = 0;
	if (rq->rq_discarded > RELAY_DISCARD_MAX)
		rq->rq_abort = 1;
}

/* accept and receive: a download.  The first accept opens the tunnel. */
static void
calls_download(struct relay_req *rq)
{
	struct circuit *t = rq->rq_circuit;
	struct pipe *p = pipe_of_reader(rq);

	if (t->ci_state == CS_ENDED) {
		http_reply(rq, 404, "unknown_connection", "connection %s has ended (the "
		    "client went away or the accept came too late)", t->ci_idtext);
		return;
	}
	if (t->ci_req[rq->rq_stream] != rq) {
		rq->rq_abort = 1;   /* cut by a break meanwhile */
		return;
	}
	if (t->ci_state == CS_PAIRED) {
		http_reply(rq, 200, NULL, NULL);
		if (rq->rq_answered)
			circuit_accepted(t);
		return;
	}
	if (p->pp_eof && ring_len(&p->pp_ring) == 0) {
		/* Everything the peer sent went out already. */
		rq->rq_eof_answer = 1;
		http_reply(rq, 200, NULL, NULL);
		if (!rq->rq_answered)
			return;
		p->pp_delivered = 1;
		circuit_unslot(rq, 1);
		circuit_check_done(t);
		return;
	}
	http_reply(rq, 200, NULL, NULL);
}

/* An upload's body ended: a segment leaves its slot for the next one; a
 * last body also ends its direction (the side finished). */
static void
calls_upload_end(struct relay_req *rq)
{
	struct circuit *t = rq->rq_circuit;
	struct pipe *p = rq->rq_stream == ST_DOWNSTREAM ? &t->ci_down : &t->ci_up;
	int last = !rq->rq_segment && !rq->rq_discard;

	if (t->ci_failed || t->ci_req[rq->rq_stream] != rq) {
		rq->rq_abort = 1;
		return;
	}
	if (last)
		pipe_write_end(p);
	http_reply(rq, 200, NULL, NULL);
	circuit_unslot(rq, 0);
	if (last)
		circuit_check_done(t);
}

static int
calls_code_valid(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n < 64 && route_name_valid(s, n);
}

static void
calls_refuse(struct relay_req *rq)
{
	struct circuit *t = rq->rq_circuit;
	struct relay_req *connect;
	const char *message, *code;
	json_error_t je;
	json_t *o;
	char why[RELAY_ERR_MAX];

	o = json_loadb(rq->rq_body ? rq->rq_body : "", rq->rq_body_len, 0, &je);
	message = json_string_value(json_object_get(o, "message"));
	code = json_string_value(json_object_get(o, "code"));
	if (o == NULL || message == NULL || code == NULL || !calls_code_valid(code)) {
		http_reply(rq, 400, "bad_request", "the refuse body must be JSON "
		    "{\"message\": \"...\", \"code\": \"ECONNREFUSED\"} with a code of "
		    "A-Z a-z 0-9 . _ - (%s)", o == NULL ? je.text :
		    message == NULL ? "no string 'message'" :
		    code == NULL ? "no string 'code'" : "bad 'code'");
		json_decref(o);
		return;
	}
	if (t->ci_state == CS_ENDED) {
		http_reply(rq, 404, "unknown_connection", "connection %s has ended (the "
		    "client went away or accept_timeout passed)", t->ci_idtext);
		json_decref(o);
		return;
	}
	if (t->ci_opened & (ST_BIT(ST_ACCEPT) | ST_BIT(ST_DOWNSTREAM))) {
		http_reply(rq, 409, "already_used", "connection %s was accepted "
		    "meanwhile; it cannot be refused", t->ci_idtext);
		json_decref(o);
		return;
	}
	t->ci_opened |= ST_BIT(ST_REFUSE);
	if (t->ci_state == CS_PAIRED) {
		connect = t->ci_req[ST_CONNECT];
		if (connect != NULL)
			http_reply(connect, 502, code, "%s", message);
		snprintf(why, sizeof(why), "%s %s", code, message);
		circuit_end(t, "refused", why);
	}
	json_decref(o);
	http_reply(rq, 200, NULL, NULL);
}

void
calls_final(struct relay_req *rq)
{
	struct relay *rl = rq->rq_relay;

	if (rq->rq_waiting) {
		/* Woken with nothing to say: park again. */
		http_suspend(rq, 1);
		return;
	}
	if (rq->rq_bad_body) {
		if (rq->rq_route.rt_call == CALL_REFUSE)
			http_reply(rq, 413, "too_large", "the refuse body is over "
			    "max_refuse_body (%llu bytes)",
			    (unsigned long long)rl->rl_cf->cf_max_refuse_body);
		else
			http_reply(rq, 400, "bad_request", "the %s call takes no request body",
			    route_call_name(rq->rq_route.rt_call));
		return;
	}
	switch (rq->rq_route.rt_call) {
	case CALL_LISTEN:
		pairing_listen(rl, rq);
		break;
	case CALL_CONNECT:
		pairing_connect(rl, rq);
		break;
	case CALL_ACCEPT:
	case CALL_RECEIVE:
		calls_download(rq);
		break;
	case CALL_DOWNSTREAM:
	case CALL_UPSTREAM:
		calls_upload_end(rq);
		break;
	case CALL_REFUSE:
		calls_refuse(rq);
		break;
	case CALL_STATUS:
		break;
	}
}

void
calls_peer_gone(struct relay_req *rq)
{
	struct circuit *t = rq->rq_circuit;
	char why[128];

	if (rq->rq_port != NULL)
		pairing_drop(rq);
	http_abort(rq);
	if (t == NULL)
		return;
	snprintf(why, sizeof(why), "the %s-proxy closed its %s stream",
	    route_call_is_server(rq->rq_route.rt_call) ? "server" : "client",
	    route_call_name(rq->rq_route.rt_call));
	circuit_stream_failed(rq, "stream_closed", why);
}
