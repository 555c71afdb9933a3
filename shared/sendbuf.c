/* Unacknowledged bytes of a tunnel; see sendbuf.h. */
#include <stdlib.h>
#include <string.h>

#include "sendbuf.h"

#define SENDBUF_MIN 16384   /* first allocation: one curl chunk */

void
sendbuf_init(struct sendbuf *b, size_t cap)
{
	memset(b, 0, sizeof(*b));
	b->sb_cap = cap;
}

void
sendbuf_free(struct sendbuf *b)
{
	free(b->sb_buf);
	b->sb_buf = NULL;
	b->sb_size = 0;
	b->sb_head = 0;
	b->sb_len = 0;
}

void
sendbuf_release(struct sendbuf *b)
{
	if (b->sb_len == 0)
		sendbuf_free(b);
}

size_t
sendbuf_len(const struct sendbuf *b)
{
	return b->sb_len;
}

size_t
sendbuf_cap(const struct sendbuf *b)
{
	return b->sb_cap;
}

size_t
sendbuf_space(const struct sendbuf *b)
{
	return b->sb_cap - b->sb_len;
}

/* Makes room for need bytes in all, moving the kept bytes to the front
 * of a bigger block. */
static int
sendbuf_grow(struct sendbuf *b, size_t need)
{
	size_t size = b->sb_size ? b->sb_size : SENDBUF_MIN, first;
	uint8_t *nb;

	while (size < need)
		size *= 2;
	if (size > b->sb_cap)
		size = b->sb_cap;
	if (size < need)
		return -1;
	if ((nb = malloc(size)) == NULL)
		return -1;
	if (b->sb_len > 0) {
		first = b->sb_size - b->sb_head;
		if (first > b->sb_len)
			first = b->sb_len;
		memcpy(nb, b->sb_buf + b->sb_head, first);
		memcpy(nb + first, b->sb_buf, b->sb_len - first);
	}
	free(b->sb_buf);
	b->sb_buf = nb;
	b->sb_size = size;
	b->sb_head = 0;
	return 0;
}

int
sendbuf_append(struct sendbuf *b, const void *data, size_t len)
{
	size_t tail, first;

	if (len == 0)
		return 0;
	if (len > sendbuf_space(b))
		return -1;
	if (b->sb_len + len > b->sb_size && sendbuf_grow(b, b->sb_len + len) == -1)
		return -1;
	tail = (b->sb_head + b->sb_len) % b->sb_size;
	first = b->sb_size - tail;
	if (first > len)
		first = len;
	memcpy(b->sb_buf + tail, data, first);
	memcpy(b->sb_buf, (const uint8_t *)data + first, len - first);
	b->sb_len += len;
	return 0;
}

void
sendbuf_ack(struct sendbuf *b, size_t n)
{
	if (n >= b->sb_len) {
		/* All acknowledged: the storage stays for the next bytes (a
		 * busy tunnel would otherwise pay malloc, brk and page faults
		 * on every ack); sendbuf_release() returns it once quiet. */
		b->sb_head = 0;
		b->sb_len = 0;
		return;
	}
	b->sb_head = (b->sb_head + n) % b->sb_size;
	b->sb_len -= n;
}

const uint8_t *
sendbuf_at(const struct sendbuf *b, size_t off, size_t *len)
{
	size_t pos;

	*len = 0;
	if (off >= b->sb_len)
		return NULL;
	pos = (b->sb_head + off) % b->sb_size;
	*len = b->sb_len - off;
	if (*len > b->sb_size - pos)
		*len = b->sb_size - pos;
	return b->sb_buf + pos;
}
