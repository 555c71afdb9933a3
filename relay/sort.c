/* Which daemon a new connection goes to: uploads get big buffers.
 *
 * libmicrohttpd 0.9.75 reads a request body into its per-connection
 * buffer, one recv() of at most that buffer per read, and the buffer's
 * size is fixed per daemon when the connection is added.  At the 12 KiB
 * that keeps an idle tunnel cheap, an upload arrived in 6 KiB reads: most
 * of the relay's CPU per GiB was the fixed cost of those system calls.
 * Only uploads need big reads (downloads are written by direct.c), so a
 * plain-HTTP relay runs a second set of daemons with upload_memory per
 * connection and gives them the connections whose first request is a
 * streaming upload (POST /v1/s/SERVER/upstream/... or .../downstream/...
 * without a Postern-Segment header: segments are short requests, and
 * libmicrohttpd clears a connection's whole buffer after each request,
 * so they would keep the whole of a big buffer resident for little
 * gain).  It looks at the request head with MSG_PEEK, so libmicrohttpd
 * still reads every byte itself.  The proxies keep their uploads on connections of
 * their own (tunnel.h, te_curl_up), so a connection sorted here for its
 * first upload goes on carrying uploads.
 *
 * libmicrohttpd takes (mmap) a buffer above 32 KiB untouched: the pages of
 * an idle upload connection that only ever carried a few bytes are not
 * resident.  Those of one that carried bulk data stay resident while the
 * connection lives (libmicrohttpd also clears the whole buffer between
 * two requests), which TUNNEL_UPLOAD_IDLE_CONNS bounds on the proxies'
 * side and idle_timeout on the relay's. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "log.h"
#include "relay.h"

/* Bytes of the request head looked at: a proxy's whole head (about 500
 * bytes) fits. */
#define SORT_PEEK 2048
#define SORT_SEGMENT_HEADER "\r\npostern-segment:"

struct sorting {
	struct relay           *so_relay;
	int                     so_fd;
	struct sockaddr_storage so_ss;
	socklen_t               so_sl;
	struct loop_timer       so_timer;
	LIST_ENTRY(sorting)     so_entry;
};

static void
sort_free(struct sorting *so, int close_fd)
{
	struct relay *rl = so->so_relay;

	loop_unwatch(rl->rl_loop, so->so_fd);
	loop_timer_stop(rl->rl_loop, &so->so_timer);
	if (close_fd)
		close(so->so_fd);
	LIST_REMOVE(so, so_entry);
	rl->rl_nsorting--;
	free(so);
	relay_conn_closed(rl);
}

/* Does the head (as far as b goes) have a Postern-Segment header? */
static int
sort_has_segment(const char *b, size_t n)
{
	size_t len = strlen(SORT_SEGMENT_HEADER), i;

	for (i = 0; i + len <= n; i++) {
		if (b[i] == '\r' && i + 3 < n && memcmp(b + i, "\r\n\r\n", 4) == 0)
			return 0;   /* the body starts: no more headers */
		if (strncasecmp(b + i, SORT_SEGMENT_HEADER, len) == 0)
			return 1;
	}
	return 0;
}

/* Is the request head (or its start) that of a streaming upload? */
int
sort_is_upload(const char *b, size_t n)
{
	static const char pre[] = "POST /v1/s/";
	size_t i, call;

	if (n < sizeof(pre) - 1 || memcmp(b, pre, sizeof(pre) - 1) != 0)
		return 0;
	for (i = sizeof(pre) - 1; i < n && b[i] != '/' && b[i] != ' '; i++)
		;
	if (i >= n || b[i] != '/')
		return 0;
	call = i + 1;
	if (!(n - call >= strlen("upstream/") &&
	    memcmp(b + call, "upstream/", strlen("upstream/")) == 0) &&
	    !(n - call >= strlen("downstream/") &&
	    memcmp(b + call, "downstream/", strlen("downstream/")) == 0))
		return 0;
	return !sort_has_segment(b, n);
}

static void
sort_event(struct loop *l, int fd, int events, void *arg)
{
	struct sorting *so = arg;
	struct relay *rl = so->so_relay;
	char b[SORT_PEEK];
	ssize_t n;
	int upload;

	(void)l;
	(void)events;
	n = recv(fd, b, sizeof(b), MSG_PEEK | MSG_DONTWAIT);
	if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (n <= 0) {
		/* Gone before a byte: libmicrohttpd never needs to see it. */
		sort_free(so, 1);
		return;
	}
	/* Decided on the first bytes in, whole line or not: the rest of a
	 * line that is still on its way would wake this again at once
	 * (level-triggered), and a request line nearly always comes in one
	 * segment. */
	upload = sort_is_upload(b, (size_t)n);
	relay_hand_over(rl, fd, (struct sockaddr *)&so->so_ss, so->so_sl, upload);
	sort_free(so, 0);
}

static void
sort_timeout(struct loop *l, void *arg)
{
	struct sorting *so = arg;

	(void)l;
	log_debug("closing a connection that sent nothing within header_timeout "
	    "(%llu ms)", (unsigned long long)so->so_relay->rl_cf->cf_header_timeout_ms);
	sort_free(so, 1);
}

int
sort_add(struct relay *rl, int fd, const struct sockaddr *sa, socklen_t sl)
{
	struct sorting *so;

	if ((so = calloc(1, sizeof(*so))) == NULL)
		return -1;
	so->so_relay = rl;
	so->so_fd = fd;
	memcpy(&so->so_ss, sa, sl);
	so->so_sl = sl;
	loop_timer_init(&so->so_timer, sort_timeout, so);
	if (loop_watch(rl->rl_loop, fd, LOOP_READ, sort_event, so) == -1) {
		free(so);
		return -1;
	}
	loop_timer_start(rl->rl_loop, &so->so_timer, rl->rl_cf->cf_header_timeout_ms);
	LIST_INSERT_HEAD(&rl->rl_sorting, so, so_entry);
	rl->rl_nsorting++;
	return 0;
}

void
sort_free_all(struct relay *rl)
{
	while (!LIST_EMPTY(&rl->rl_sorting))
		sort_free(LIST_FIRST(&rl->rl_sorting), 1);
}
