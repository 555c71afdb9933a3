/* Bytes a tunnel sent and the other proxy has not acknowledged yet: the
 * only copy from which a broken stream can be re-sent (docs/protocol.md,
 * "Resuming tunnels").  Offsets count from the oldest byte kept.
 *
 * Storage grows on demand up to the window and stays while the tunnel is
 * busy; its owner calls sendbuf_release() when the tunnel goes quiet, so
 * a quiet tunnel holds none. */
#ifndef POSTERN_SENDBUF_H
#define POSTERN_SENDBUF_H

#include <stddef.h>
#include <stdint.h>

struct sendbuf {
	uint8_t *sb_buf;     /* NULL while empty */
	size_t   sb_size;    /* allocated (a power of two, <= sb_cap) */
	size_t   sb_cap;     /* the window: most bytes ever kept */
	size_t   sb_head;    /* index of the oldest byte */
	size_t   sb_len;     /* bytes kept */
};

void   sendbuf_init(struct sendbuf *b, size_t cap);
void   sendbuf_free(struct sendbuf *b);
/* Frees the storage if every byte has been acknowledged. */
void   sendbuf_release(struct sendbuf *b);
size_t sendbuf_len(const struct sendbuf *b);
size_t sendbuf_space(const struct sendbuf *b);
size_t sendbuf_cap(const struct sendbuf *b);
/* Copies all len bytes in (len <= sendbuf_space); -1 when out of
 * memory (nothing is taken). */
int    sendbuf_append(struct sendbuf *b, const void *data, size_t len);
/* Drops the oldest n bytes (n <= sendbuf_len): the peer has them. */
void   sendbuf_ack(struct sendbuf *b, size_t n);
/* The contiguous run of kept bytes starting off bytes after the oldest:
 * *len bytes (0 and NULL when off >= sendbuf_len). */
const uint8_t *sendbuf_at(const struct sendbuf *b, size_t off, size_t *len);

#endif
