/* A bounded byte FIFO: the pipe between two streams.  Storage is
 * allocated on first write and released when the ring drains, so an idle
 * tunnel holds no buffer memory.  Writers must respect ring_space():
 * that is the backpressure invariant (stop reading the source when the
 * ring is full, start again when the reader drains it). */
#ifndef POSTERN_RING_H
#define POSTERN_RING_H

#include <stddef.h>
#include <stdint.h>

struct ring {
	uint8_t *r_buf;     /* NULL while empty */
	size_t   r_cap;     /* hard maximum, fixed at init */
	size_t   r_head;    /* index of first byte */
	size_t   r_len;     /* bytes stored */
};

void   ring_init(struct ring *r, size_t cap);
void   ring_free(struct ring *r);
size_t ring_len(const struct ring *r);
size_t ring_space(const struct ring *r);
/* Copies min(len, space) bytes in; returns how many were taken, or 0 if
 * storage could not be allocated (check ring_space first). */
size_t ring_write(struct ring *r, const void *data, size_t len);
/* Copies up to len bytes out and drops them. */
size_t ring_read(struct ring *r, void *out, size_t len);
/* The first contiguous run of stored bytes, for zero-copy send(). */
const uint8_t *ring_peek(const struct ring *r, size_t *len);
/* The first contiguous free run, for zero-copy recv(); allocates
 * storage if needed. Returns NULL with *len 0 when full or out of memory. */
uint8_t *ring_reserve(struct ring *r, size_t *len);
void   ring_commit(struct ring *r, size_t len);  /* after ring_reserve */
void   ring_drop(struct ring *r, size_t len);    /* after ring_peek */

#endif
