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
#include <curl/curl.h>

#include "loop.h"

struct curlloop;
struct curlloop_xfer;

/* The transfer has been removed from the multi handle when this runs; the
 * easy handle is the caller's again (to inspect, reuse or clean up). */
typedef void (*curlloop_done_fn)(struct curlloop_xfer *x, CURLcode result,
                                 void *arg);

/* One transfer, embedded in its owner.  Set cx_easy, cx_done and cx_arg
 * before curlloop_add. */
struct curlloop_xfer {
	CURL            *cx_easy;
	curlloop_done_fn cx_done;
	void            *cx_arg;
	int              cx_active;  /* added and not yet done or removed */
};

/* maxconnects: CURLMOPT_MAXCONNECTS (idle connections kept for reuse). */
struct curlloop *curlloop_new(struct loop *l, long maxconnects,
                              char *err, size_t errlen);
/* Every transfer must have been removed (or have completed) first. */
void curlloop_free(struct curlloop *c);
/* Starts the transfer (CURLOPT_PRIVATE is taken for x). */
int  curlloop_add(struct curlloop *c, struct curlloop_xfer *x,
                  char *err, size_t errlen);
/* Stops a running transfer without calling its completion callback.
 * Harmless on a transfer that is not active. */
void curlloop_remove(struct curlloop *c, struct curlloop_xfer *x);
/* Transfers added and not yet finished. */
size_t curlloop_active(const struct curlloop *c);

#endif
