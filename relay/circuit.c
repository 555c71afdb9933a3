/* Circuits: the relay's side of a tunnel, one per connection ID, from
 * pairing until its last request has completed.
 *
 * A circuit is PAIRED (the listen returned its ID; the connect waits for
 * accept or refuse), then OPEN (accepted: bytes flow), then ENDED (out of
 * the ID table; requests still attached finish or are cut).  The struct
 * is freed once ENDED and no request points at it any more: every
 * attached request holds a reference through ci_req[]. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "log.h"
#include "relay.h"

static void circuit_timer(struct loop *l, void *arg);

struct circuit *
circuit_new(struct relay *rl, struct relay_req *listen, struct relay_req *connect)
{
	struct circuit *t;
	int tries;

	if ((t = calloc(1, sizeof(*t))) == NULL)
		return NULL;
	for (tries = 0; tries < 4; tries++) {
		randombytes_buf(t->ci_id, sizeof(t->ci_id));
		if (idtable_add(rl->rl_ids, t->ci_id, t) == 0)
			break;
	}
	if (tries == 4) {
		free(t);
		return NULL;
	}
	t->ci_relay = rl;
	idtable_id_text(t->ci_id, t->ci_idtext);
	t->ci_server = listen->rq_server;
	t->ci_client = connect->rq_client;
	snprintf(t->ci_port, sizeof(t->ci_port), "%s", listen->rq_route.rt_arg);
	t->ci_state = CS_PAIRED;
	pipe_init(&t->ci_up, (size_t)rl->rl_cf->cf_pipe_buffer);
	pipe_init(&t->ci_down, (size_t)rl->rl_cf->cf_pipe_buffer);
	t->ci_start_ms = t->ci_active_ms = loop_now_ms();
	loop_timer_init(&t->ci_timer, circuit_timer, t);
	loop_timer_start(rl->rl_loop, &t->ci_timer, rl->rl_cf->cf_accept_timeout_ms);
	LIST_INSERT_HEAD(&rl->rl_circuits, t, ci_entry);
	rl->rl_ncircuits++;
	circuit_attach(t, listen, ST_LISTEN);
	circuit_attach(t, connect, ST_CONNECT);
	log_info("tunnel open id=%s %s/%s client=%s from %s", t->ci_idtext,
	    t->ci_server->sv_name, t->ci_port, t->ci_client->cl_name, connect->rq_peer);
	return t;
}

void
circuit_attach(struct circuit *t, struct relay_req *rq, enum relay_stream s)
{
	t->ci_req[s] = rq;
	if (ST_BIT(s) & ST_FOUR)
		http_untimed(rq);
	/* A refuse counts once it succeeded: one rejected as malformed
	 * leaves the connection open to accept or to a better refuse. */
	if (s != ST_REFUSE)
		t->ci_opened |= ST_BIT(s);
	rq->rq_circuit = t;
	rq->rq_stream = s;
	if (s == ST_DOWNSTREAM)
		t->ci_down.pp_writer = rq;
	else if (s == ST_UPSTREAM)
		t->ci_up.pp_writer = rq;
}

static void
circuit_maybe_free(struct circuit *t)
{
	struct relay *rl = t->ci_relay;
	int s;

	if (t->ci_state != CS_ENDED)
		return;
	for (s = 0; s < ST_COUNT; s++)
		if (t->ci_req[s] != NULL)
			return;
	pipe_free(rl, &t->ci_up);
	pipe_free(rl, &t->ci_down);
	LIST_REMOVE(t, ci_entry);
	rl->rl_ncircuits--;
	free(t);
}

/* reason: one word for the log's reason=; detail: what happened, in words
 * (also the answer a waiting connect gets), or NULL. */
static void
circuit_finish(struct circuit *t, const char *reason, const char *detail, int failed)
{
	struct relay *rl = t->ci_relay;
	uint64_t ms = loop_now_ms() - t->ci_start_ms;

	t->ci_state = CS_ENDED;
	t->ci_failed = failed;
	idtable_remove(rl->rl_ids, t->ci_id);
	loop_timer_stop(rl->rl_loop, &t->ci_timer);
	log_info("tunnel closed id=%s %s/%s client=%s up=%llu down=%llu "
	    "duration=%llu.%03llus reason=%s%s%s", t->ci_idtext, t->ci_server->sv_name,
	    t->ci_port, t->ci_client->cl_name,
	    (unsigned long long)pipe_payload(&t->ci_up),
	    (unsigned long long)pipe_payload(&t->ci_down), (unsigned long long)(ms / 1000),
	    (unsigned long long)(ms % 1000), reason, detail ? ": " : "",
	    detail ? detail : "");
	if (failed) {
		/* Nobody will read these bytes now. */
		pipe_free(rl, &t->ci_up);
		pipe_free(rl, &t->ci_down);
	}
}

void
circuit_end(struct circuit *t, const char *reason, const char *detail)
{
	if (t->ci_state != CS_ENDED)
		circuit_finish(t, reason, detail, 0);
	circuit_maybe_free(t);
}

void
circuit_fail(struct circuit *t, const char *reason, int status, const char *code,
             const char *why)
{
	struct relay_req *rq;
	int s;

	if (t->ci_state == CS_ENDED) {
		circuit_maybe_free(t);
		return;
	}
	circuit_finish(t, reason, why, 1);
	for (s = 0; s < ST_COUNT; s++) {
		if ((rq = t->ci_req[s]) == NULL)
			continue;
		switch (s) {
		case ST_LISTEN:
		case ST_REFUSE:
			break;   /* their answers do not depend on the tunnel */
		case ST_CONNECT:
			if (!rq->rq_answered && status != 0)
				http_reply(rq, status, code, "%s", why);
			else if (rq->rq_streaming || !rq->rq_answered)
				http_abort(rq);
			break;
		default:
			/* An upload whose body ended has its 200 on the way. */
			if (!rq->rq_answered || rq->rq_streaming)
				http_abort(rq);
			break;
		}
	}
	circuit_maybe_free(t);
}

void
circuit_accepted(struct circuit *t)
{
	struct relay *rl = t->ci_relay;
	struct relay_req *connect = t->ci_req[ST_CONNECT];

	t->ci_state = CS_OPEN;
	t->ci_active_ms = loop_now_ms();
	loop_timer_start(rl->rl_loop, &t->ci_timer, rl->rl_cf->cf_idle_timeout_ms);
	if (connect != NULL)
		http_reply(connect, 200, NULL, NULL);
}

void
circuit_activity(struct circuit *t)
{
	t->ci_active_ms = loop_now_ms();
}

/* accept_timeout while PAIRED, idle_timeout while OPEN.  The idle timer
 * is not pushed back on every byte: it re-arms for what is left. */
static void
circuit_timer(struct loop *l, void *arg)
{
	struct circuit *t = arg;
	const struct relay_config *cf = t->ci_relay->rl_cf;
	uint64_t now = loop_now_ms(), quiet = now - t->ci_active_ms;
	char why[RELAY_ERR_MAX];

	if (t->ci_state == CS_PAIRED) {
		snprintf(why, sizeof(why), "server '%s' did not accept within "
		    "accept_timeout (%llu ms)", t->ci_server->sv_name,
		    (unsigned long long)cf->cf_accept_timeout_ms);
		circuit_fail(t, "accept_timeout", 504, "accept_timeout", why);
		return;
	}
	if (quiet < cf->cf_idle_timeout_ms) {
		loop_timer_start(l, &t->ci_timer, cf->cf_idle_timeout_ms - quiet);
		return;
	}
	snprintf(why, sizeof(why), "no byte moved for idle_timeout (%llu ms)",
	    (unsigned long long)cf->cf_idle_timeout_ms);
	circuit_fail(t, "idle_timeout", 502, "tunnel_failed", why);
}

void
circuit_detach(struct relay_req *rq, int clean, const char *how)
{
	struct circuit *t = rq->rq_circuit;
	enum relay_stream s = rq->rq_stream;
	struct relay_req *connect;
	char why[RELAY_ERR_MAX];

	rq->rq_circuit = NULL;
	t->ci_req[s] = NULL;
	if (t->ci_up.pp_writer == rq)
		t->ci_up.pp_writer = NULL;
	if (t->ci_up.pp_reader == rq)
		t->ci_up.pp_reader = NULL;
	if (t->ci_down.pp_writer == rq)
		t->ci_down.pp_writer = NULL;
	if (t->ci_down.pp_reader == rq)
		t->ci_down.pp_reader = NULL;

	switch (s) {
	case ST_LISTEN:
		/* The server-proxy never got the ID: let the connect try the
		 * next listen rather than wait out accept_timeout. */
		if (!clean && t->ci_state == CS_PAIRED &&
		    !(t->ci_opened & (ST_BIT(ST_ACCEPT) | ST_BIT(ST_DOWNSTREAM) |
		    ST_BIT(ST_REFUSE))) && t->ci_req[ST_REFUSE] == NULL &&
		    (connect = t->ci_req[ST_CONNECT]) != NULL &&
		    !connect->rq_answered && !connect->rq_abort) {
			t->ci_req[ST_CONNECT] = NULL;
			connect->rq_circuit = NULL;
			connect->rq_stream = ST_NONE;
			circuit_end(t, "listen_lost", "the server-proxy dropped the listen "
			    "that carried the ID; the connect is paired again");
			pairing_connect(t->ci_relay, connect);
			return;   /* t may be gone */
		}
		break;
	case ST_REFUSE:
		break;
	default:
		if (!clean) {
			snprintf(why, sizeof(why), "the %s stream ended early (%s)",
			    route_call_name(rq->rq_route.rt_call), how);
			circuit_fail(t, "stream_failed", 502, "tunnel_failed", why);
			return;   /* t may be gone */
		}
		/* A connect answered with an error is not a finished stream. */
		if (rq->rq_streaming || s == ST_DOWNSTREAM || s == ST_UPSTREAM)
			t->ci_done |= ST_BIT(s);
		if ((t->ci_done & ST_FOUR) == ST_FOUR) {
			circuit_end(t, "done", NULL);
			return;   /* t may be gone */
		}
		break;
	}
	circuit_maybe_free(t);
}
