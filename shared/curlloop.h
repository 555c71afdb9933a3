/* libcurl's multi interface driven by our loop: curl's sockets become
 * loop watchers, curl's timeout becomes a loop timer, and every finished
 * transfer is handed to its own completion callback.
 *
 * Completion callbacks run from the loop, never from inside a curl call,
 * so they may add, remove and free transfers (their own included).  Curl's
 * transfer callbacks (read, write, header) must not call curlloop_add or
 * curlloop_remove: defer that work to a loop timer. */
#ifndef POSTERN_CURLLOOP_H
#define POSTERN_CURLLOOP_H

#include <stddef.h>
#include <stdint.h>
#include <curl/curl.h>

#include "loop.h"

struct curlloop;
struct curlloop_xfer;

/* The transfer has been removed from the multi handle when this runs; the
 * easy handle is the caller's again (to inspect, reuse or clean up). */
typedef void (*curlloop_done_fn)(struct curlloop_xfer *x, CURLcode result,
                                 void *arg);

/* Called from inside curl (a transfer callback: the same rules apply)
 * once the transfer has a connection, new or reused, and its request is
 * about to go out. */
typedef void (*curlloop_ready_fn)(struct curlloop_xfer *x, void *arg);

/* One transfer, embedded in its owner.  Set cx_easy, cx_done and cx_arg
 * (and optionally cx_ready, cx_errbuf) before curlloop_add. */
struct curlloop_xfer {
	CURL             *cx_easy;
	curlloop_done_fn  cx_done;
	void             *cx_arg;
	curlloop_ready_fn cx_ready;   /* or NULL */
	char             *cx_errbuf;  /* the CURLOPT_ERRORBUFFER, or NULL */
	int               cx_active;  /* added and not yet done or removed */
	/* internal */
	struct curlloop  *cx_c;
	struct loop_timer cx_deadline;
};

/* maxconnects: CURLMOPT_MAXCONNECTS (idle connections kept for reuse). */
struct curlloop *curlloop_new(struct loop *l, long maxconnects,
                              char *err, size_t errlen);
/* Every transfer must have been removed (or have completed) first. */
void curlloop_free(struct curlloop *c);
/* The time a transfer may take to get its connection (name lookup, TCP
 * and TLS handshakes; 0, the default, is curl's own 300 s).  A transfer
 * that runs out completes with CURLE_OPERATION_TIMEDOUT and cx_errbuf
 * saying so.  This replaces CURLOPT_CONNECTTIMEOUT, which leaves its timer
 * armed after the connection is made in curl 7.88: every transfer would
 * wake the process once more, that long after it started. */
void curlloop_set_connect_timeout(struct curlloop *c, uint64_t ms);
/* Starts the transfer (CURLOPT_PRIVATE, CURLOPT_PREREQFUNCTION and
 * CURLOPT_OPENSOCKETFUNCTION are taken for x). */
int  curlloop_add(struct curlloop *c, struct curlloop_xfer *x,
                  char *err, size_t errlen);
/* Stops a running transfer without calling its completion callback.
 * Harmless on a transfer that is not active. */
void curlloop_remove(struct curlloop *c, struct curlloop_xfer *x);
/* Transfers added and not yet finished. */
size_t curlloop_active(const struct curlloop *c);
/* Lets curl start transfers added (or unpaused) just now, at once rather
 * than when its timer fires at the end of this loop iteration: what is
 * latency-critical goes out before other work of the iteration.
 * Finished transfers are reaped from the loop later, as usual.  Not from
 * inside a curl callback. */
void curlloop_flush(struct curlloop *c);

#endif
