/* Bounded byte FIFO; see ring.h for the backpressure contract and the
 * storage policy.
 *
 * This ring first released its storage on every drain and allocated its
 * whole capacity (256 KiB by default) on the next write.  For a busy pipe
 * that is a free() and a malloc() per drain: glibc gave the heap top back
 * with brk() and the next write faulted every page in again, about 30% of
 * the relay's CPU with 8 busy tunnels.  Storage now starts small, grows
 * only when full and is kept by busy rings; the process-wide bound keeps
 * the idle ones cheap however many there are. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "ring.h"

/* Rings may live in several threads (tests run a relay in a thread next
 * to proxies), so the shared total is atomic. */
static _Atomic size_t ring_keep_max = RING_KEEP_DEFAULT;
static _Atomic size_t ring_kept_bytes;

void
ring_keep_limit(size_t bytes)
{
	atomic_store_explicit(&ring_keep_max, bytes, memory_order_relaxed);
}

size_t
ring_kept(void)
{
	return atomic_load_explicit(&ring_kept_bytes, memory_order_relaxed);
}

/* Counts r's storage as kept if the total stays within the bound. */
static int
ring_keep_take(struct ring *r)
{
	size_t max = atomic_load_explicit(&ring_keep_max, memory_order_relaxed);
	size_t was;

	was = atomic_fetch_add_explicit(&ring_kept_bytes, r->r_size,
	    memory_order_relaxed);
	if (was + r->r_size > max || was + r->r_size < was) {
		atomic_fetch_sub_explicit(&ring_kept_bytes, r->r_size,
		    memory_order_relaxed);
		return 0;
	}
	r->r_kept = r->r_size;
	return 1;
}

static void
ring_keep_put(struct ring *r)
{
	if (r->r_kept > 0) {
		atomic_fetch_sub_explicit(&ring_kept_bytes, r->r_kept,
		    memory_order_relaxed);
		r->r_kept = 0;
	}
}

/* Drops the storage; r_light stays: it is the ring's history. */
static void
ring_storage_free(struct ring *r)
{
	ring_keep_put(r);
	free(r->r_buf);
	r->r_buf = NULL;
	r->r_size = 0;
	r->r_head = 0;
	r->r_fill = 0;
}

void
ring_init(struct ring *r, size_t cap)
{
	r->r_buf = NULL;
	r->r_cap = cap;
	r->r_head = 0;
	r->r_len = 0;
	r->r_size = 0;
	r->r_fill = 0;
	r->r_kept = 0;
	r->r_light = RING_LIGHT_DRAINS;  /* no heavy fill yet */
}

void
ring_free(struct ring *r)
{
	ring_storage_free(r);
	r->r_len = 0;
}

void
ring_release(struct ring *r)
{
	if (r->r_len == 0 && r->r_buf != NULL)
		ring_storage_free(r);
}

size_t
ring_storage(const struct ring *r)
{
	return r->r_size;
}

size_t
ring_len(const struct ring *r)
{
	return r->r_len;
}

size_t
ring_space(const struct ring *r)
{
	return r->r_cap - r->r_len;
}

/* The ring just emptied: keep its storage for the next fill if it has
 * been moving bulk lately and idle rings do not keep enough already. */
static void
ring_drained(struct ring *r)
{
	r->r_head = 0;  /* the next fill reuses the pages just touched */
	if (r->r_fill > RING_LIGHT_BYTES)
		r->r_light = 0;
	else if (r->r_light < RING_LIGHT_DRAINS)
		r->r_light++;
	r->r_fill = 0;
	if (r->r_light >= RING_LIGHT_DRAINS || !ring_keep_take(r))
		ring_storage_free(r);
}

/* Allocates the first storage, or doubles a full one (up to r_cap),
 * moving the bytes to its start in order. */
static int
ring_grow(struct ring *r)
{
	size_t size, first;
	uint8_t *b;

	if (r->r_buf == NULL)
		size = r->r_cap < RING_START_SIZE ? r->r_cap : RING_START_SIZE;
	else
		size = r->r_size > r->r_cap / 2 ? r->r_cap : 2 * r->r_size;
	if ((b = malloc(size)) == NULL)
		return -1;
	if (r->r_len > 0) {
		first = r->r_size - r->r_head;
		if (first > r->r_len)
			first = r->r_len;
		memcpy(b, r->r_buf + r->r_head, first);
		memcpy(b + first, r->r_buf, r->r_len - first);
	}
	ring_keep_put(r);
	free(r->r_buf);
	r->r_buf = b;
	r->r_size = size;
	r->r_head = 0;
	return 0;
}

uint8_t *
ring_reserve(struct ring *r, size_t *len)
{
	size_t tail;

	*len = 0;
	if (ring_space(r) == 0)
		return NULL;
	if (r->r_len == r->r_size && ring_grow(r) == -1)
		return NULL;
	if (r->r_len == 0)
		r->r_head = 0;
	tail = r->r_head + r->r_len;
	if (tail >= r->r_size) {
		tail -= r->r_size;
		*len = r->r_head - tail;
	} else
		*len = r->r_size - tail;
	return r->r_buf + tail;
}

void
ring_commit(struct ring *r, size_t len)
{
	if (len == 0)
		return;
	ring_keep_put(r);  /* storage in use again: no longer idle */
	r->r_len += len;
	r->r_fill += len;
}

size_t
ring_write(struct ring *r, const void *data, size_t len)
{
	const uint8_t *p = data;
	size_t done = 0, n;
	uint8_t *dst;

	while (done < len) {
		dst = ring_reserve(r, &n);
		if (dst == NULL)
			break;
		if (n > len - done)
			n = len - done;
		memcpy(dst, p + done, n);
		ring_commit(r, n);
		done += n;
	}
	return done;
}

const uint8_t *
ring_peek(const struct ring *r, size_t *len)
{
	if (r->r_len == 0) {
		*len = 0;
		return NULL;
	}
	*len = r->r_size - r->r_head;
	if (*len > r->r_len)
		*len = r->r_len;
	return r->r_buf + r->r_head;
}

const uint8_t *
ring_peek_at(const struct ring *r, size_t off, size_t *len)
{
	size_t pos;

	*len = 0;
	if (off >= r->r_len)
		return NULL;
	pos = r->r_head + off;
	if (pos >= r->r_size)
		pos -= r->r_size;
	*len = r->r_len - off;
	if (*len > r->r_size - pos)
		*len = r->r_size - pos;
	return r->r_buf + pos;
}

void
ring_drop(struct ring *r, size_t len)
{
	if (len == 0 || r->r_len == 0)
		return;
	if (len > r->r_len)
		len = r->r_len;
	r->r_head += len;
	if (r->r_head >= r->r_size)
		r->r_head -= r->r_size;
	r->r_len -= len;
	if (r->r_len == 0)
		ring_drained(r);
}

size_t
ring_read(struct ring *r, void *out, size_t len)
{
	uint8_t *p = out;
	size_t done = 0, n;
	const uint8_t *src;

	while (done < len) {
		src = ring_peek(r, &n);
		if (src == NULL)
			break;
		if (n > len - done)
			n = len - done;
		memcpy(p + done, src, n);
		ring_drop(r, n);
		done += n;
	}
	return done;
}
