/* Streaming downloads written by the relay itself, whole chunks at a time.
 *
 * libmicrohttpd 0.9.75 writes a response body out of its per-connection
 * buffer (part of connection_memory), so a stream went out in pieces of
 * 6-9 KiB with the default 12 KiB: one sendto(), one epoll round and one
 * resume/suspend pair per piece made the relay the costliest process per
 * GiB (docs/performance.md).  A bigger buffer costs every idle
 * connection that memory, for good.  So, on plain HTTP/1.1, the relay
 * gives libmicrohttpd only a stream's headers and its last chunk: every
 * chunk in between is written here, straight from the pipe's ring, with
 * one sendmsg() per chunk of whatever the ring holds.
 *
 * Why this is safe: libmicrohttpd calls the content reader only when all
 * it wrote before has gone out (the headers: the reader never hands it a
 * body byte), and it neither reads nor writes a suspended connection.
 * The reader suspends the connection before writing here and resumes it
 * only with no chunk half-written, so the bytes on the wire are exactly
 * libmicrohttpd's headers, our chunks, then its "0" chunk.  Nothing is
 * written before libmicrohttpd's first call of the reader (rq_dw_live):
 * a download parked before that may still have its headers to send.
 *
 * Not used over TLS (bytes must pass through GnuTLS), nor when the
 * request was HTTP/1.0 or asked to close (libmicrohttpd then ends the
 * body by closing instead of chunking it), nor with direct_write = off. */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <microhttpd.h>

#include "log.h"
#include "relay.h"

/* A call finishes the chunk left half-written, if any, then writes one
 * of all the ring holds by then (the ring fills only between calls);
 * EINTR retries count against the same bound. */
#define DIRECT_ROUNDS 2

static const char direct_crlf[] = "\r\n";

static void direct_event(struct loop *l, int fd, int events, void *arg);

/* Does "close" appear among the Connection header's tokens? */
static int
direct_wants_close(const char *v)
{
	const char *s = v;
	size_t n;

	while (s != NULL && *s != '\0') {
		s += strspn(s, " \t,");
		n = strcspn(s, " \t,");
		if (n == 5 && strncasecmp(s, "close", 5) == 0)
			return 1;
		s += n;
	}
	return 0;
}

int
direct_eligible(struct relay_req *rq)
{
	const struct relay *rl = rq->rq_relay;

	if (!rl->rl_cf->cf_direct_write || rl->rl_tls.tl_cert != NULL ||
	    !rq->rq_http11 || rq->rq_fd < 0)
		return 0;
	return !direct_wants_close(MHD_lookup_connection_value(rq->rq_conn,
	    MHD_HEADER_KIND, MHD_HTTP_HEADER_CONNECTION));
}

/* Starts a chunk of the bytes the reader may take now; 0 if none. */
static int
direct_chunk_start(struct relay_req *rq, struct pipe *p)
{
	size_t n;

	if (pipe_reader_end(rq, p) != 0)
		return 0;
	if ((n = pipe_reader_room(rq, ring_len(&p->pp_ring))) == 0)
		return 0;
	rq->rq_dw_hlen = (uint8_t)snprintf(rq->rq_dw_hdr, sizeof(rq->rq_dw_hdr),
	    "%zx\r\n", n);
	rq->rq_dw_len = n;
	rq->rq_dw_sent = 0;
	return 1;
}

/* Data bytes of the chunk under way written after `sent` bytes of it. */
static size_t
direct_data_sent(const struct relay_req *rq, size_t sent)
{
	size_t d = sent > rq->rq_dw_hlen ? sent - rq->rq_dw_hlen : 0;

	return d < rq->rq_dw_len ? d : rq->rq_dw_len;
}

int
direct_flush(struct relay_req *rq, struct pipe *p)
{
	struct iovec iov[4];
	struct msghdr msg;
	const uint8_t *piece;
	size_t hl, len, off, done, left, tail;
	ssize_t w;
	int round, n;

	if (!pipe_reader_ok(rq, p) || rq->rq_dw_failed)
		return -1;
	for (round = 0; round < DIRECT_ROUNDS; round++) {
		if (rq->rq_dw_len == 0 && !direct_chunk_start(rq, p))
			return 0;
		hl = rq->rq_dw_hlen;
		done = direct_data_sent(rq, rq->rq_dw_sent);
		left = rq->rq_dw_len - done;   /* at the head of the ring */
		if (left > ring_len(&p->pp_ring)) {
			/* The pipe was emptied under a chunk: only a break
			 * does that, and it cuts this stream too. */
			rq->rq_dw_failed = 1;
			return -1;
		}
		n = 0;
		if (rq->rq_dw_sent < hl) {
			iov[n].iov_base = rq->rq_dw_hdr + rq->rq_dw_sent;
			iov[n++].iov_len = hl - rq->rq_dw_sent;
		}
		for (off = 0; off < left && n < 3; off += len) {
			piece = ring_peek_at(&p->pp_ring, off, &len);
			if (piece == NULL)
				break;
			if (len > left - off)
				len = left - off;
			iov[n].iov_base = (void *)(uintptr_t)piece;
			iov[n++].iov_len = len;
		}
		if (off >= left) {
			tail = rq->rq_dw_sent > hl + rq->rq_dw_len ?
			    rq->rq_dw_sent - hl - rq->rq_dw_len : 0;
			iov[n].iov_base = (void *)(uintptr_t)(direct_crlf + tail);
			iov[n++].iov_len = 2 - tail;
		}
		memset(&msg, 0, sizeof(msg));
		msg.msg_iov = iov;
		msg.msg_iovlen = (size_t)n;
		w = sendmsg(rq->rq_fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			log_debug("%s from %s: writing its stream: %s", rq->rq_what,
			    rq->rq_peer, strerror(errno));
			rq->rq_dw_failed = 1;
			return -1;
		}
		rq->rq_dw_sent += (size_t)w;
		if ((len = direct_data_sent(rq, rq->rq_dw_sent) - done) > 0) {
			ring_drop(&p->pp_ring, len);
			pipe_taken(rq, p, len);
		}
		if (rq->rq_dw_sent < hl + rq->rq_dw_len + 2)
			return 0;    /* the socket is full */
		rq->rq_dw_len = 0;
	}
	return 0;
}

/* Is it libmicrohttpd's turn: an error to report, or the body's end (its
 * last chunk and keep-alive are libmicrohttpd's)? */
static int
direct_done(struct relay_req *rq, struct pipe *p)
{
	if (!pipe_reader_ok(rq, p) || rq->rq_dw_failed)
		return 1;
	return rq->rq_dw_len == 0 && pipe_reader_end(rq, p) != 0;
}

/* While suspended: read for the peer leaving, write while a chunk is
 * half out. */
static void
direct_watch(struct relay_req *rq)
{
	int ev = (rq->rq_dw_noread ? 0 : LOOP_READ) |
	    (rq->rq_dw_len > 0 ? LOOP_WRITE : 0);

	if (loop_watch(rq->rq_relay->rl_loop, rq->rq_fd, ev, direct_event, rq) == 0)
		rq->rq_watched = 1;
}

void
direct_after(struct relay_req *rq)
{
	if (!rq->rq_suspended)
		return;
	if (direct_done(rq, pipe_of_reader(rq)))
		http_resume(rq);
	else
		direct_watch(rq);
}

long
direct_read(struct relay_req *rq, struct pipe *p)
{
	long end;

	/* libmicrohttpd asks for body bytes only once the headers are out:
	 * from now on the socket is ours between its calls.  (Before, a
	 * suspended reader may still have its headers to send.) */
	rq->rq_dw_live = 1;
	(void)direct_flush(rq, p);
	if (rq->rq_dw_failed)
		return PIPE_ERROR;
	if (rq->rq_dw_len == 0 && (end = pipe_reader_end(rq, p)) != 0)
		return end;
	http_suspend(rq, 0);
	direct_watch(rq);
	return 0;
}

static void
direct_event(struct loop *l, int fd, int events, void *arg)
{
	struct relay_req *rq = arg;
	int peer;

	(void)l;
	if (events & LOOP_READ) {
		if ((peer = http_peer_peek(fd)) < 0) {
			http_unwatch(rq);
			log_debug("%s from %s: peer closed while streaming", rq->rq_what,
			    rq->rq_peer);
			calls_peer_gone(rq);
			return;
		}
		/* More request bytes (pipelining) are libmicrohttpd's, later:
		 * stop waking up for them. */
		if (peer > 0)
			rq->rq_dw_noread = 1;
	}
	if (events & LOOP_WRITE)
		(void)direct_flush(rq, pipe_of_reader(rq));
	direct_after(rq);
}
