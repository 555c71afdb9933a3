/* Circuits: the relay's side of a tunnel, one per connection ID, from
 * pairing until its last request has completed.
 *
 * A circuit is PAIRED (the listen returned its ID; the connect waits for
 * accept or refuse), then OPEN (accepted: bytes flow), then ENDED (out of
 * the ID table; requests still attached finish or are cut).  The struct
 * is freed once ENDED and no request points at it any more (ci_refs).
 *
 * Resumption (docs/protocol.md, "Resuming tunnels"): an OPEN circuit
 * outlives its HTTP streams.  Each side (client: its download and
 * upstream; server: accept and downstream) may re-attach its streams;
 * a stream that fails at the relay, or a request of a newer generation,
 * is a break: every stream attached is cut (so both proxies learn of it),
 * both pipes are emptied (their senders still hold every unacknowledged
 * byte) and the generation moves on.  The relay never reads sequence
 * numbers: what to send again is the proxies' business.  A side that
 * stays away for resume_grace ends the circuit, unless it finished and
 * got everything. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "log.h"
#include "relay.h"

static void circuit_timer(struct loop *l, void *arg);
static void circuit_side_update(struct circuit *t, enum circuit_side side);

static const enum relay_stream circuit_side_slots[SIDE_COUNT][2] = {
	[SIDE_CLIENT] = { ST_CONNECT, ST_UPSTREAM },
	[SIDE_SERVER] = { ST_ACCEPT, ST_DOWNSTREAM },
};

static const char *
circuit_side_name(enum circuit_side side)
{
	return side == SIDE_CLIENT ? "client" : "server";
}

enum circuit_side
circuit_side_of(enum relay_stream s)
{
	return s == ST_CONNECT || s == ST_UPSTREAM ? SIDE_CLIENT : SIDE_SERVER;
}

/* What a side downloads from (it uploads into the other pipe). */
static struct pipe *
circuit_download(struct circuit *t, enum circuit_side side)
{
	return side == SIDE_CLIENT ? &t->ci_down : &t->ci_up;
}

/* Finished and served: nothing more can come from or go to this side. */
static int
circuit_side_done(const struct circuit *t, enum circuit_side side)
{
	const struct pipe *up = side == SIDE_CLIENT ? &t->ci_up : &t->ci_down;
	const struct pipe *down = side == SIDE_CLIENT ? &t->ci_down : &t->ci_up;

	return up->pp_eof && down->pp_delivered;
}

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
	t->ci_gen = 1;
	pipe_init(&t->ci_up, (size_t)rl->rl_cf->cf_pipe_buffer);
	pipe_init(&t->ci_down, (size_t)rl->rl_cf->cf_pipe_buffer);
	t->ci_start_ms = t->ci_active_ms = loop_now_ms();
	loop_timer_init(&t->ci_timer, circuit_timer, t);
	LIST_INSERT_HEAD(&rl->rl_circuits, t, ci_entry);
	rl->rl_ncircuits++;
	circuit_attach(t, listen, ST_LISTEN);
	circuit_attach(t, connect, ST_CONNECT);
	circuit_schedule(t);
	log_info("tunnel open id=%s %s/%s client=%s from %s", t->ci_idtext,
	    t->ci_server->sv_name, t->ci_port, t->ci_client->cl_name, connect->rq_peer);
	return t;
}

void
circuit_attach(struct circuit *t, struct relay_req *rq, enum relay_stream s)
{
	t->ci_req[s] = rq;
	t->ci_refs++;
	/* A refuse counts once it succeeded: one rejected as malformed
	 * leaves the connection open to accept or to a better refuse. */
	if (s != ST_REFUSE)
		t->ci_opened |= ST_BIT(s);
	rq->rq_circuit = t;
	rq->rq_stream = s;
	if (!(ST_BIT(s) & ST_FOUR))
		return;
	http_untimed(rq);
	rq->rq_gen = t->ci_gen;
	if (s == ST_DOWNSTREAM || s == ST_UPSTREAM) {
		rq->rq_last_ms = loop_now_ms();
		if (s == ST_DOWNSTREAM)
			t->ci_down.pp_writer = rq;
		else
			t->ci_up.pp_writer = rq;
	}
	circuit_side_update(t, circuit_side_of(s));
	circuit_schedule(t);
}

static void
circuit_maybe_free(struct circuit *t)
{
	struct relay *rl = t->ci_relay;

	if (t->ci_state != CS_ENDED || t->ci_refs > 0)
		return;
	loop_timer_stop(rl->rl_loop, &t->ci_timer);
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
			/* An upload whose body ended has its 200 on the way
			 * (and has left its slot). */
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
	struct relay_req *connect = t->ci_req[ST_CONNECT];

	t->ci_state = CS_OPEN;
	t->ci_active_ms = loop_now_ms();
	circuit_side_update(t, SIDE_CLIENT);
	circuit_side_update(t, SIDE_SERVER);
	/* Re-armed, not kept: the accept_timeout deadline would wake every
	 * new tunnel once more, accept_timeout after it opened, for
	 * nothing. */
	loop_timer_stop(t->ci_relay->rl_loop, &t->ci_timer);
	circuit_schedule(t);
	if (connect != NULL)
		http_reply(connect, 200, NULL, NULL);
}

void
circuit_activity(struct circuit *t)
{
	t->ci_active_ms = loop_now_ms();
}

void
circuit_check_done(struct circuit *t)
{
	if (t->ci_state == CS_OPEN && t->ci_up.pp_eof && t->ci_down.pp_eof &&
	    t->ci_up.pp_delivered && t->ci_down.pp_delivered)
		circuit_end(t, "done", NULL);
}

/* ---- slots and sides ---------------------------------------------------- */

static void
circuit_clear_slot(struct circuit *t, struct relay_req *rq)
{
	t->ci_req[rq->rq_stream] = NULL;
	if (t->ci_up.pp_writer == rq)
		t->ci_up.pp_writer = NULL;
	if (t->ci_up.pp_reader == rq)
		t->ci_up.pp_reader = NULL;
	if (t->ci_down.pp_writer == rq)
		t->ci_down.pp_writer = NULL;
	if (t->ci_down.pp_reader == rq)
		t->ci_down.pp_reader = NULL;
}

/* A side with no stream attached starts its resume_grace. */
static void
circuit_side_update(struct circuit *t, enum circuit_side side)
{
	const enum relay_stream *sl = circuit_side_slots[side];
	uint64_t now;

	if (t->ci_req[sl[0]] != NULL || t->ci_req[sl[1]] != NULL) {
		t->ci_away_ms[side] = 0;
		return;
	}
	if (t->ci_away_ms[side] != 0)
		return;
	now = loop_now_ms();
	t->ci_away_ms[side] = now != 0 ? now : 1;
	circuit_schedule(t);
}

void
circuit_unslot(struct relay_req *rq, int at_eof)
{
	struct circuit *t = rq->rq_circuit;
	enum relay_stream s = rq->rq_stream;

	if (t == NULL || s == ST_NONE || t->ci_req[s] != rq)
		return;
	circuit_clear_slot(t, rq);
	rq->rq_at_eof = at_eof;
	/* a download segment's timer */
	loop_timer_stop(t->ci_relay->rl_loop, &rq->rq_timer);
	if (ST_BIT(s) & ST_FOUR)
		circuit_side_update(t, circuit_side_of(s));
}

/* Cuts the streams attached (the client's connect still waiting for its
 * answer excepted: it is no stream yet), empties both pipes and moves to
 * generation gen. */
static void
circuit_cut(struct circuit *t, uint32_t gen)
{
	struct relay *rl = t->ci_relay;
	struct relay_req *rq;
	int s;

	for (s = ST_CONNECT; s <= ST_UPSTREAM; s++) {
		if ((rq = t->ci_req[s]) == NULL)
			continue;
		if (t->ci_state == CS_PAIRED && s == ST_CONNECT)
			continue;
		circuit_unslot(rq, 0);
		http_abort(rq);
	}
	pipe_empty(rl, &t->ci_up);
	pipe_empty(rl, &t->ci_down);
	t->ci_gen = gen;
	circuit_side_update(t, SIDE_CLIENT);
	circuit_side_update(t, SIDE_SERVER);
	circuit_schedule(t);
}

void
circuit_resume(struct circuit *t, uint32_t gen, enum circuit_side side)
{
	log_info("tunnel resumed id=%s gen=%lu by %s", t->ci_idtext, (unsigned long)gen,
	    circuit_side_name(side));
	circuit_cut(t, gen);
}

/* A stream of the current generation failed at the relay.  -1: the
 * circuit failed instead (out of generations) and may be gone. */
static int
circuit_break(struct circuit *t, const char *reason, const char *why)
{
	if (t->ci_gen == UINT32_MAX) {
		circuit_fail(t, reason, 502, "tunnel_failed", why);
		return -1;
	}
	log_info("tunnel break id=%s gen=%lu: %s", t->ci_idtext,
	    (unsigned long)t->ci_gen, why);
	circuit_cut(t, t->ci_gen + 1);
	return 0;
}

void
circuit_stream_failed(struct relay_req *rq, const char *reason, const char *why)
{
	struct circuit *t = rq->rq_circuit;
	enum relay_stream s = rq->rq_stream;

	if (t == NULL || t->ci_state == CS_ENDED || !(ST_BIT(s) & ST_FOUR) ||
	    t->ci_req[s] != rq)
		return;
	if (t->ci_state == CS_PAIRED) {
		/* Nothing to resume yet: the client has no ID. */
		circuit_fail(t, reason, 502, "tunnel_failed", why);
		return;
	}
	circuit_unslot(rq, 0);
	(void)circuit_break(t, reason, why);
}

/* ---- the timer ------------------------------------------------------------ */

/* When the earliest deadline falls: accept_timeout while PAIRED;
 * idle_timeout, resume_grace of a side away, peer_timeout of an upload
 * being read while OPEN. */
static uint64_t
circuit_deadline(const struct circuit *t)
{
	const struct relay_config *cf = t->ci_relay->rl_cf;
	const struct relay_req *w;
	uint64_t due, d;
	int side, i;

	if (t->ci_state == CS_PAIRED)
		return t->ci_start_ms + cf->cf_accept_timeout_ms;
	due = t->ci_active_ms + cf->cf_idle_timeout_ms;
	for (side = 0; side < SIDE_COUNT; side++) {
		if (t->ci_away_ms[side] == 0 || circuit_side_done(t, side))
			continue;
		d = t->ci_away_ms[side] + cf->cf_resume_grace_ms;
		if (d < due)
			due = d;
	}
	if (cf->cf_peer_timeout_ms == 0)
		return due;
	for (i = 0; i < 2; i++) {
		w = (i == 0 ? &t->ci_up : &t->ci_down)->pp_writer;
		if (w == NULL || w->rq_suspended)
			continue;
		d = w->rq_last_ms + cf->cf_peer_timeout_ms;
		if (d < due)
			due = d;
	}
	return due;
}

void
circuit_schedule(struct circuit *t)
{
	struct loop *l = t->ci_relay->rl_loop;
	uint64_t due, now;

	if (t->ci_state == CS_ENDED)
		return;
	due = circuit_deadline(t);
	/* Deadlines only move later on their own (bytes, activity): the
	 * timer then fires early and re-arms for what is left. */
	if (loop_timer_armed(&t->ci_timer) && t->ci_due <= due)
		return;
	now = loop_now_ms();
	t->ci_due = due;
	loop_timer_start(l, &t->ci_timer, due > now ? due - now : 0);
}

static void
circuit_timer(struct loop *l, void *arg)
{
	struct circuit *t = arg;
	const struct relay_config *cf = t->ci_relay->rl_cf;
	uint64_t now = loop_now_ms();
	struct relay_req *w;
	char why[RELAY_ERR_MAX];
	int side, i;

	(void)l;
	if (t->ci_state == CS_PAIRED) {
		if (now >= t->ci_start_ms + cf->cf_accept_timeout_ms) {
			snprintf(why, sizeof(why), "server '%s' did not accept within "
			    "accept_timeout (%llu ms)", t->ci_server->sv_name,
			    (unsigned long long)cf->cf_accept_timeout_ms);
			circuit_fail(t, "accept_timeout", 504, "accept_timeout", why);
			return;
		}
		circuit_schedule(t);
		return;
	}
	/* The timer wakes a quiet tunnel now and then: pipe storage kept
	 * while it was busy goes back (empty rings only). */
	ring_release(&t->ci_up.pp_ring);
	ring_release(&t->ci_down.pp_ring);
	if (now - t->ci_active_ms >= cf->cf_idle_timeout_ms) {
		snprintf(why, sizeof(why), "no byte moved for idle_timeout (%llu ms)",
		    (unsigned long long)cf->cf_idle_timeout_ms);
		circuit_fail(t, "idle_timeout", 502, "tunnel_failed", why);
		return;
	}
	for (side = 0; side < SIDE_COUNT; side++) {
		if (t->ci_away_ms[side] == 0 || circuit_side_done(t, side) ||
		    now - t->ci_away_ms[side] < cf->cf_resume_grace_ms)
			continue;
		snprintf(why, sizeof(why), "the %s-proxy did not come back within "
		    "resume_grace (%llu ms)", circuit_side_name(side),
		    (unsigned long long)cf->cf_resume_grace_ms);
		circuit_fail(t, "peer_lost", 502, "tunnel_failed", why);
		return;
	}
	for (i = 0; cf->cf_peer_timeout_ms != 0 && i < 2; i++) {
		w = (i == 0 ? &t->ci_up : &t->ci_down)->pp_writer;
		if (w == NULL || w->rq_suspended ||
		    now - w->rq_last_ms < cf->cf_peer_timeout_ms)
			continue;
		snprintf(why, sizeof(why), "the %s stream brought no byte for "
		    "peer_timeout (%llu ms)", route_call_name(w->rq_route.rt_call),
		    (unsigned long long)cf->cf_peer_timeout_ms);
		http_abort(w);
		circuit_stream_failed(w, "peer_timeout", why);
		return;
	}
	circuit_schedule(t);
}

/* ---- a request completes --------------------------------------------------- */

void
circuit_detach(struct relay_req *rq, int clean, const char *how)
{
	struct circuit *t = rq->rq_circuit;
	enum relay_stream s = rq->rq_stream;
	struct relay_req *connect;
	struct pipe *p;
	char why[RELAY_ERR_MAX];
	int slotted = t->ci_req[s] == rq;

	if (slotted)
		circuit_clear_slot(t, rq);
	rq->rq_circuit = NULL;
	t->ci_refs--;

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
			t->ci_refs--;
			connect->rq_circuit = NULL;
			connect->rq_stream = ST_NONE;
			connect->rq_gen = 0;
			circuit_end(t, "listen_lost", "the server-proxy dropped the listen "
			    "that carried the ID; the connect is paired again");
			pairing_connect(t->ci_relay, connect);
			return;   /* t may be gone */
		}
		break;
	case ST_REFUSE:
		break;
	default:
		if (t->ci_state == CS_ENDED)
			break;
		if (slotted && !clean) {
			snprintf(why, sizeof(why), "the %s stream ended early (%s)",
			    route_call_name(rq->rq_route.rt_call), how);
			if (t->ci_state == CS_PAIRED) {
				circuit_fail(t, "stream_failed", 502, "tunnel_failed", why);
				return;   /* t may be gone */
			}
			if (circuit_break(t, "stream_failed", why) == -1)
				return;   /* t may be gone */
			break;
		}
		if (slotted) {
			circuit_side_update(t, circuit_side_of(s));
			break;
		}
		/* A download that left its slot at the end of its direction:
		 * delivered once the end went out in full. */
		if (clean && rq->rq_at_eof) {
			p = circuit_download(t, circuit_side_of(s));
			p->pp_delivered = 1;
			circuit_check_done(t);
			return;   /* t may be gone */
		}
		break;
	}
	circuit_maybe_free(t);
}
