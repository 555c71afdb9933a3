/* One direction of a tunnel: upload bodies in, response bodies out.
 *
 * Backpressure invariant: the ring never holds more than pipe_buffer
 * bytes.  A writer whose data does not fit leaves the rest with
 * libmicrohttpd (*size) and is suspended, so its socket stops being read;
 * the reader resumes it once the ring is half empty.  A reader that finds
 * the ring empty is suspended (returning 0 without suspending would make
 * libmicrohttpd call it again at once, a busy loop) and the writer resumes
 * it when bytes arrive.
 *
 * Writers and readers come and go: after a break the pipe is emptied
 * (the sending proxy still holds every unacknowledged byte and sends it
 * again), and a download segment ends after a bounded number of bytes or
 * time.  The relay never looks inside the frames beyond counting their
 * payload for its log. */
#include <string.h>

#include "log.h"
#include "mproxy.h"
#include "relay.h"

void
pipe_init(struct pipe *p, size_t cap)
{
	memset(p, 0, sizeof(*p));
	ring_init(&p->pp_ring, cap);
	p->pp_dec = mproxy_decoder_new(MPROXY_PIECES, 0);
}

void
pipe_free(struct relay *rl, struct pipe *p)
{
	rl->rl_buffered -= ring_len(&p->pp_ring);
	ring_free(&p->pp_ring);
	mproxy_decoder_free(p->pp_dec);
	p->pp_dec = NULL;
}

void
pipe_empty(struct relay *rl, struct pipe *p)
{
	rl->rl_buffered -= ring_len(&p->pp_ring);
	ring_free(&p->pp_ring);
	/* The next body starts at a frame boundary; the one cut may have
	 * stopped inside a frame. */
	if (p->pp_dec != NULL) {
		mproxy_decoder_free(p->pp_dec);
		p->pp_dec = mproxy_decoder_new(MPROXY_PIECES, 0);
	}
}

uint64_t
pipe_payload(const struct pipe *p)
{
	return p->pp_dec != NULL ? p->pp_payload : p->pp_bytes;
}

/* Walks frame headers (payload is skipped, not copied) to count the
 * payload of data frames. */
static void
pipe_count(struct pipe *p, const char *data, size_t n)
{
	const uint8_t *b = (const uint8_t *)data;
	struct mproxy_frame f;
	enum mproxy_result r;
	size_t used;

	p->pp_bytes += n;
	while (p->pp_dec != NULL && n > 0) {
		r = mproxy_decoder_feed(p->pp_dec, b, n, &used, &f);
		if (r == MPROXY_ERROR) {
			log_debug("stream does not decode as M-PROXY (%s); logging body "
			    "bytes", mproxy_decoder_error(p->pp_dec));
			mproxy_decoder_free(p->pp_dec);
			p->pp_dec = NULL;
			return;
		}
		if (r == MPROXY_FRAME && strcmp(f.service, "connection") != 0 &&
		    strcmp(f.service, "end") != 0 && strcmp(f.service, "error") != 0 &&
		    strcmp(f.service, "control") != 0)
			p->pp_payload += f.len;
		if (used == 0 && r != MPROXY_FRAME)
			return;
		b += used;
		n -= used;
	}
}

void
pipe_write(struct relay_req *rq, struct pipe *p, const char *data, size_t *size)
{
	struct relay *rl = rq->rq_relay;
	struct circuit *t = rq->rq_circuit;
	struct relay_req *rd;
	size_t n;

	/* A reader that writes its socket itself (direct.c) may empty the
	 * ring at once: then more of the body fits.  Each round takes bytes
	 * or stops, and *size left over always means a full ring (which
	 * the reader's progress will half empty and wake us for). */
	while (*size > 0) {
		/* Cut by a break, or the circuit ended: nobody takes these. */
		if (t == NULL || t->ci_state == CS_ENDED || p->pp_writer != rq) {
			rq->rq_abort = 1;
			return;
		}
		n = ring_write(&p->pp_ring, data, *size);
		if (n == 0 && ring_space(&p->pp_ring) > 0) {
			log_warn("tunnel %s: out of memory for its pipe buffer",
			    t->ci_idtext);
			circuit_fail(t, "out_of_memory", 503, "busy",
			    "the relay is out of memory");
			rq->rq_abort = 1;
			return;
		}
		if (n == 0)
			break;
		pipe_count(p, data, n);
		data += n;
		*size -= n;
		rl->rl_buffered += n;
		rq->rq_last_ms = loop_now_ms();
		circuit_activity(t);
		rd = p->pp_reader;
		if (rd == NULL || !rd->rq_suspended)
			break;
		if (!rd->rq_dw_live) {
			http_resume(rd);
			break;
		}
		/* Written now, without waking libmicrohttpd. */
		(void)direct_flush(rd, p);
		direct_after(rd);
	}
	if (*size > 0)
		http_suspend(rq, 0);
}

void
pipe_write_end(struct pipe *p)
{
	p->pp_eof = 1;
	if (p->pp_reader != NULL && p->pp_reader->rq_suspended)
		http_resume(p->pp_reader);
}

/* A download segment's poll_time (no byte yet) or segment_time (since
 * its first byte) passed: it ends at the reader's next call. */
static void
pipe_segment_timer(struct loop *l, void *arg)
{
	struct relay_req *rq = arg;

	(void)l;
	rq->rq_seg_over = 1;
	if (rq->rq_suspended)
		http_resume(rq);
}

void
pipe_reader_start(struct relay_req *rq, struct pipe *p)
{
	struct relay *rl = rq->rq_relay;

	p->pp_reader = rq;
	rq->rq_direct = direct_eligible(rq);
	rq->rq_dw_live = 0;
	rq->rq_dw_len = 0;
	rq->rq_dw_sent = 0;
	if (!rq->rq_segment)
		return;
	loop_timer_init(&rq->rq_timer, pipe_segment_timer, rq);
	loop_timer_start(rl->rl_loop, &rq->rq_timer, rl->rl_cf->cf_poll_time_ms);
}

void
pipe_taken(struct relay_req *rq, struct pipe *p, size_t n)
{
	struct relay *rl = rq->rq_relay;
	struct circuit *t = rq->rq_circuit;
	struct relay_req *w;

	rl->rl_buffered -= n;
	circuit_activity(t);
	if (rq->rq_segment) {
		rq->rq_seg_left -= n;
		if (!rq->rq_seg_started) {
			rq->rq_seg_started = 1;
			loop_timer_start(rl->rl_loop, &rq->rq_timer,
			    rl->rl_cf->cf_segment_time_ms);
		}
	}
	w = p->pp_writer;
	if (w != NULL && w->rq_suspended &&
	    ring_len(&p->pp_ring) <= p->pp_ring.r_cap / 2) {
		/* Read again from now: peer_timeout counts from here. */
		w->rq_last_ms = loop_now_ms();
		http_resume(w);
		circuit_schedule(t);
	}
}

struct pipe *
pipe_of_reader(const struct relay_req *rq)
{
	struct circuit *t = rq->rq_circuit;

	if (t == NULL)
		return NULL;
	return rq->rq_stream == ST_ACCEPT ? &t->ci_up : &t->ci_down;
}

int
pipe_reader_ok(const struct relay_req *rq, const struct pipe *p)
{
	const struct circuit *t = rq->rq_circuit;

	return t != NULL && p != NULL && !t->ci_failed && !rq->rq_abort &&
	    p->pp_reader == rq;
}

long
pipe_reader_end(struct relay_req *rq, struct pipe *p)
{
	if (p->pp_eof && ring_len(&p->pp_ring) == 0) {
		ring_release(&p->pp_ring);   /* the direction is over */
		return PIPE_EOF;
	}
	if (rq->rq_segment && (rq->rq_seg_over || rq->rq_seg_left == 0))
		return PIPE_END;
	return 0;
}

size_t
pipe_reader_room(const struct relay_req *rq, size_t avail)
{
	if (rq->rq_segment && avail > rq->rq_seg_left)
		return (size_t)rq->rq_seg_left;
	return avail;
}

long
pipe_read(struct relay_req *rq, struct pipe *p, char *buf, size_t max)
{
	size_t n;
	long end;

	if (!pipe_reader_ok(rq, p))
		return PIPE_ERROR;
	if (rq->rq_direct)
		return direct_read(rq, p);
	if ((end = pipe_reader_end(rq, p)) != 0)
		return end;
	n = ring_read(&p->pp_ring, buf, pipe_reader_room(rq, max));
	if (n > 0) {
		pipe_taken(rq, p, n);
		return (long)n;
	}
	http_suspend(rq, 1);
	return 0;
}
