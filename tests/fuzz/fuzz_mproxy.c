/* libFuzzer target for the M-PROXY decoder (and an encoder round trip).
 *
 * The input is a stream.  It is decoded whole, then again cut at
 * pseudo-random points (derived from the input) in both modes and one
 * byte at a time; every run must produce the same frames, the same
 * payload bytes and the same error at the same offset.  Any difference,
 * or a broken promise of mproxy.h, aborts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mproxy.h"

#define must(cond) do {							\
	if (!(cond)) {							\
		fprintf(stderr, "fuzz_mproxy: %s:%d: %s\n", __FILE__,	\
		    __LINE__, #cond);					\
		abort();						\
	}								\
} while (0)

/* What a run produced, folded into comparable values. */
struct run {
	size_t   r_frames;
	size_t   r_paylen;
	uint64_t r_payhash;
	uint64_t r_hdrhash;
	char     r_err[MPROXY_ERR_MAX];
	int      r_failed;
	int      r_open;      /* pieces: inside a frame */
	size_t   r_got;       /* pieces: bytes of the current frame */
};

static uint64_t
fnv(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;
	size_t i;

	for (i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static void
header_check(const struct mproxy_frame *f, size_t max)
{
	const char *fields[] = { f->family, f->address, f->port, f->service,
	    f->serviceport, f->name, f->conn_service };
	size_t i, j;

	for (i = 0; i < sizeof(fields) / sizeof(fields[0]); i++)
		for (j = 0; fields[i][j] != '\0'; j++)
			must(fields[i][j] >= 0x20 && fields[i][j] <= 0x7e &&
			    fields[i][j] != ',');
	must(f->datalen <= max);
	if (strcmp(f->service, "connection") != 0)
		must(f->conn_service[0] == '\0');
}

static uint64_t
header_hash(const struct mproxy_frame *f)
{
	uint64_t h = 0xcbf29ce484222325ull;

	h = fnv(h, f->family, strlen(f->family) + 1);
	h = fnv(h, f->address, strlen(f->address) + 1);
	h = fnv(h, f->port, strlen(f->port) + 1);
	h = fnv(h, f->service, strlen(f->service) + 1);
	h = fnv(h, f->serviceport, strlen(f->serviceport) + 1);
	h = fnv(h, f->name, strlen(f->name) + 1);
	h = fnv(h, f->conn_service, strlen(f->conn_service) + 1);
	return fnv(h, &f->datalen, sizeof(f->datalen));
}

static void
take(struct run *r, enum mproxy_mode mode, const struct mproxy_frame *f,
    const uint8_t *chunk, size_t clen, size_t used, size_t max)
{
	must(f->data != NULL);
	must(f->len <= f->datalen);
	if (mode == MPROXY_PIECES) {
		/* Pieces always point into the chunk, right before what
		 * the call consumed last. */
		must(f->data == chunk + used - f->len);
		must(f->first == !r->r_open);
		if (f->first) {
			header_check(f, max);
			r->r_hdrhash = fnv(r->r_hdrhash, &(uint64_t){
			    header_hash(f) }, 8);
			r->r_got = 0;
		}
		must(f->offset == r->r_got);
		must(f->len > 0 || f->datalen == 0);
		r->r_got += f->len;
		must(r->r_got <= f->datalen);
		must(f->last == (r->r_got == f->datalen));
		r->r_open = !f->last;
		if (f->last)
			r->r_frames++;
	} else {
		must(f->first && f->last && f->offset == 0);
		must(f->len == f->datalen);
		header_check(f, max);
		r->r_hdrhash = fnv(r->r_hdrhash, &(uint64_t){
		    header_hash(f) }, 8);
		r->r_frames++;
		/* A payload that arrived within this call is handed out in
		 * place; one that began in an earlier chunk was copied. */
		if (f->len > 0 && used >= f->len)
			must(f->data == chunk + used - f->len);
		else if (f->len > 0)
			must(f->data + f->len <= chunk ||
			    f->data >= chunk + clen);
	}
	r->r_payhash = fnv(r->r_payhash, f->data, f->len);
	r->r_paylen += f->len;
}

/* Decodes buf in chunks whose sizes come from *seed (0: whole). */
static void
decode(enum mproxy_mode mode, size_t max, const uint8_t *buf, size_t len,
    uint32_t seed, int bytewise, struct run *r)
{
	struct mproxy_decoder *d = mproxy_decoder_new(mode, max);
	struct mproxy_frame f;
	enum mproxy_result res;
	size_t pos = 0, end, used, at;

	must(d != NULL);
	memset(r, 0, sizeof(*r));
	r->r_payhash = r->r_hdrhash = 0xcbf29ce484222325ull;
	while (pos < len) {
		if (bytewise)
			end = pos + 1;
		else if (seed == 0)
			end = len;
		else {
			seed = seed * 1664525u + 1013904223u;
			end = pos + 1 + (seed >> 8) % ((seed & 3) == 0 ? 4096 :
			    64);
			if (end > len)
				end = len;
		}
		for (at = pos; ; at += used) {
			must(mproxy_decoder_offset(d) == at);
			res = mproxy_decoder_feed(d, buf + at, end - at, &used,
			    &f);
			must(used <= end - at);
			if (res == MPROXY_ERROR) {
				snprintf(r->r_err, sizeof(r->r_err), "%s",
				    mproxy_decoder_error(d));
				must(strncmp(r->r_err, "byte ", 5) == 0);
				r->r_failed = 1;
				/* No resync, ever. */
				must(mproxy_decoder_feed(d, buf, len, &used,
				    &f) == MPROXY_ERROR && used == 0);
				goto out;
			}
			if (res == MPROXY_NEED_MORE) {
				must(used == end - at);
				break;
			}
			take(r, mode, &f, buf + at, end - at, used, max);
		}
		pos = end;
	}
	if (mproxy_decoder_finish(d) == -1) {
		snprintf(r->r_err, sizeof(r->r_err), "%s",
		    mproxy_decoder_error(d));
		r->r_failed = 1;
	} else
		must(!r->r_open);
out:
	mproxy_decoder_free(d);
}

static void
same(const struct run *a, const struct run *b)
{
	must(a->r_failed == b->r_failed);
	must(strcmp(a->r_err, b->r_err) == 0);
	must(a->r_paylen == b->r_paylen);
	must(a->r_payhash == b->r_payhash);
	/* Pieces mode counts a frame once it completes; a frame cut by an
	 * error or the end counts in neither. */
	must(a->r_frames == b->r_frames);
	must(a->r_hdrhash == b->r_hdrhash);
}

/* Pieces mode also hands out the bytes of a frame the stream cut short;
 * whole mode never does. */
static void
pieces_same(const struct run *whole, const struct run *pieces)
{
	if (!pieces->r_open) {
		same(whole, pieces);
		return;
	}
	must(whole->r_failed && pieces->r_failed);
	must(strcmp(whole->r_err, pieces->r_err) == 0);
	must(whole->r_frames == pieces->r_frames);
	must(pieces->r_paylen > whole->r_paylen);
}

/* Encoder round trip: fields cut from the input at NUL bytes. */
static void
roundtrip(const uint8_t *data, size_t len)
{
	const char *f[6] = { "", "", "", "", "", "" };
	char copy[512], err[MPROXY_ERR_MAX];
	uint8_t out[MPROXY_FRAME_HEAD_MAX + 64];
	struct mproxy_meta m;
	struct mproxy_decoder *d;
	struct mproxy_frame fr;
	size_t n, i, k, used;
	long r;
	char port[16];

	n = len < sizeof(copy) - 1 ? len : sizeof(copy) - 1;
	memcpy(copy, data, n);
	copy[n] = '\0';
	for (i = 0, k = 0; k < 6 && i <= n; k++) {
		f[k] = copy + i;
		i += strlen(copy + i) + 1;
	}
	m.family = f[0];
	m.address = f[1];
	m.port = n > 1 ? (long)(data[0] << 8 | data[1]) - 1 : MPROXY_ABSENT;
	m.service = f[2];
	m.serviceport = n > 3 ? (long)(data[2] << 8 | data[3]) : 0;
	m.name = f[3];
	r = mproxy_pack(&m, f[4][0] ? f[4] : NULL, (const uint8_t *)f[5],
	    strlen(f[5]) > 64 ? 64 : strlen(f[5]), out, sizeof(out), err,
	    sizeof(err));
	if (r == -1)
		return;
	d = mproxy_decoder_new(MPROXY_WHOLE, 0);
	must(d != NULL);
	must(mproxy_decoder_feed(d, out, (size_t)r, &used, &fr) ==
	    MPROXY_FRAME);
	must(used == (size_t)r);
	if (strcmp(fr.service, "control") != 0) {
		must(strcmp(fr.family, m.family) == 0);
		must(strcmp(fr.address, m.address) == 0);
		snprintf(port, sizeof(port), "%ld", m.port);
		must(strcmp(fr.port, m.port < 0 ? "" : port) == 0);
		must(strcmp(fr.name, m.name) == 0);
	}
	mproxy_decoder_free(d);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct run whole, other;
	uint32_t seed;
	size_t max;

	seed = (uint32_t)fnv(0xcbf29ce484222325ull, data, size) | 1;
	/* Mostly the default limit; sometimes a tiny one. */
	max = (seed & 7) == 0 ? 1 + (seed >> 3) % 300 :
	    MPROXY_DEFAULT_MAX_DATA;

	decode(MPROXY_WHOLE, max, data, size, 0, 0, &whole);
	decode(MPROXY_WHOLE, max, data, size, seed, 0, &other);
	same(&whole, &other);
	decode(MPROXY_PIECES, max, data, size, seed * 7, 0, &other);
	pieces_same(&whole, &other);
	if (size <= 4096) {
		decode(MPROXY_PIECES, max, data, size, 0, 1, &other);
		pieces_same(&whole, &other);
		decode(MPROXY_WHOLE, max, data, size, 0, 1, &other);
		same(&whole, &other);
	}
	roundtrip(data, size);
	return 0;
}
