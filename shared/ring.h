/* A bounded byte FIFO: the pipe between two streams.  Writers must respect
 * ring_space(): that is the backpressure invariant (stop reading the
 * source when the ring is full, start again when the reader drains it).
 *
 * Storage is allocated on first write, RING_START_SIZE bytes, and doubles
 * whenever it is full, up to the capacity: a ring whose reader keeps up
 * never needs more than one piece.  When the ring drains it keeps its
 * storage if one of its last RING_LIGHT_DRAINS fills carried more than
 * RING_LIGHT_BYTES (a busy pipe then pays no malloc/free, brk and page
 * faults per drain) and if empty rings of the process keep less than
 * ring_keep_limit() bytes in all (RING_KEEP_DEFAULT); otherwise it
 * releases it, so that idle and chatty tunnels hold no buffer memory.
 * Owners release the storage of a ring that has gone quiet with
 * ring_release() (from an idle timer, or once the writer has finished). */
#ifndef POSTERN_RING_H
#define POSTERN_RING_H

#include <stddef.h>
#include <stdint.h>

/* Defaults of the storage policy (see above). */
#define RING_START_SIZE     16384                /* bytes, first storage */
#define RING_KEEP_DEFAULT   (16u * 1024 * 1024)  /* bytes, whole process */
#define RING_LIGHT_BYTES    2048                 /* bytes per fill */
#define RING_LIGHT_DRAINS   16                   /* fills */

struct ring {
	uint8_t *r_buf;     /* NULL while no storage is held */
	size_t   r_cap;     /* hard maximum, fixed at init */
	size_t   r_head;    /* index of first byte */
	size_t   r_len;     /* bytes stored */
	size_t   r_size;    /* bytes of storage, up to r_cap; 0 without */
	size_t   r_fill;    /* bytes committed since the ring was last empty */
	size_t   r_kept;    /* bytes counted in ring_kept(); 0 unless idle */
	unsigned r_light;   /* light fills since the last heavy one */
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
/* The contiguous run of stored bytes starting off bytes after the
 * oldest (a window re-sent from the middle); NULL and *len 0 when off is
 * not below ring_len(). */
const uint8_t *ring_peek_at(const struct ring *r, size_t off, size_t *len);
/* The first contiguous free run, for zero-copy recv(); allocates or
 * grows storage if needed, so the run may be shorter than ring_space().
 * Returns NULL with *len 0 when full or out of memory. */
uint8_t *ring_reserve(struct ring *r, size_t *len);
void   ring_commit(struct ring *r, size_t len);  /* after ring_reserve */
void   ring_drop(struct ring *r, size_t len);    /* after ring_peek */

/* Releases the storage of an empty ring (no-op while it holds bytes).
 * Call it when the ring's stream has been quiet for a while, e.g. from an
 * idle or keepalive timer; the next write allocates again. */
void   ring_release(struct ring *r);
/* Bytes of storage the ring holds now (0 .. its capacity). */
size_t ring_storage(const struct ring *r);
/* Process-wide bound on storage kept by empty rings; 0 releases storage
 * at every drain.  Lowering it does not release storage already kept. */
void   ring_keep_limit(size_t bytes);
/* Bytes of storage that empty rings keep now, in the whole process. */
size_t ring_kept(void);

#endif
