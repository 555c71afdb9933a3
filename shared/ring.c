/* Bounded byte FIFO; see ring.h for the backpressure contract. */
#include <stdlib.h>
#include <string.h>

#include "ring.h"

void
ring_init(struct ring *r, size_t cap)
{
	r->r_buf = NULL;
	r->r_cap = cap;
	r->r_head = 0;
	r->r_len = 0;
}

void
ring_free(struct ring *r)
{
	free(r->r_buf);
	r->r_buf = NULL;
	r->r_head = 0;
	r->r_len = 0;
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

/* Storage is dropped as soon as the ring empties so that thousands of
 * idle tunnels cost no buffer memory. */
static void
ring_release_if_empty(struct ring *r)
{
	if (r->r_len == 0) {
		free(r->r_buf);
		r->r_buf = NULL;
		r->r_head = 0;
	}
}

static int
ring_ensure(struct ring *r)
{
	if (r->r_buf == NULL && r->r_cap > 0) {
		r->r_buf = malloc(r->r_cap);
		if (r->r_buf == NULL)
			return -1;
		r->r_head = 0;
	}
	return 0;
}

uint8_t *
ring_reserve(struct ring *r, size_t *len)
{
	size_t tail;

	*len = 0;
	if (ring_space(r) == 0 || ring_ensure(r) == -1)
		return NULL;
	tail = (r->r_head + r->r_len) % r->r_cap;
	if (tail >= r->r_head && r->r_len > 0)
		*len = r->r_cap - tail;
	else if (r->r_len == 0) {
		r->r_head = 0;
		tail = 0;
		*len = r->r_cap;
	} else
		*len = r->r_head - tail;
	return r->r_buf + tail;
}

void
ring_commit(struct ring *r, size_t len)
{
	r->r_len += len;
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
	*len = r->r_cap - r->r_head;
	if (*len > r->r_len)
		*len = r->r_len;
	return r->r_buf + r->r_head;
}

void
ring_drop(struct ring *r, size_t len)
{
	if (len > r->r_len)
		len = r->r_len;
	r->r_head = (r->r_head + len) % r->r_cap;
	r->r_len -= len;
	ring_release_if_empty(r);
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
