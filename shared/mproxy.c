/* M-PROXY v1 codec, byte-compatible with proxy-packer 2.0.4.
 *
 * The encoder writes what the reference's packHeader()/pack() write and
 * refuses the inputs the reference would silently corrupt.  The decoder is
 * a resumable state machine in the manner of picohttpparser: it never
 * allocates on the header path, copies a payload at most once (only when a
 * frame straddles chunks in MPROXY_WHOLE mode) and never resynchronises
 * after an error.
 */
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "errbuf.h"
#include "mproxy.h"

/* Header fields the decoder names; a header may carry more (ignored). */
#define FIELD_FAMILY       0
#define FIELD_ADDRESS      1
#define FIELD_PORT         2
#define FIELD_DATALEN      3
#define FIELD_SERVICE      4
#define FIELD_SERVICEPORT  5
#define FIELD_NAME         6
#define FIELD_CONNSERVICE  7
#define FIELDS_KNOWN       8
/* A header without a service field cannot be dispatched. */
#define FIELDS_MIN         5

/* A whole-mode payload buffer larger than this is released once its frame
 * has been handed out, so a single big frame does not pin memory for the
 * life of a stream. */
#define DECODER_KEEP_BUF   (64u * 1024u)

/* ---- encoder ---------------------------------------------------------- */

struct hdr {
	uint8_t    *h_buf;   /* where the header text goes (out + 2) */
	size_t      h_len;   /* bytes the header needs, may pass the limit */
	const char *h_big;   /* longest variable field, for the error */
	size_t      h_biglen;
};

static void
hdr_put(struct hdr *h, const char *s, size_t n)
{
	size_t room;

	if (h->h_len < MPROXY_HEADER_MAX) {
		room = MPROXY_HEADER_MAX - h->h_len;
		memcpy(h->h_buf + h->h_len, s, n < room ? n : room);
	}
	h->h_len += n;
}

static void
hdr_comma(struct hdr *h)
{
	hdr_put(h, ",", 1);
}

static void
hdr_field(struct hdr *h, const char *field, const char *s)
{
	size_t n;

	if (s == NULL)
		return;
	n = strlen(s);
	if (n > h->h_biglen) {
		h->h_big = field;
		h->h_biglen = n;
	}
	hdr_put(h, s, n);
}

static size_t
fmt_u64(char *buf, uint64_t v)
{
	char tmp[24];
	size_t n = 0, i;

	do {
		tmp[n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	for (i = 0; i < n; i++)
		buf[i] = tmp[n - 1 - i];
	return n;
}

static void
hdr_number(struct hdr *h, uint64_t v)
{
	char buf[24];

	hdr_put(h, buf, fmt_u64(buf, v));
}

/* A field must be printable ASCII without commas: a comma would shift every
 * later field and a byte outside 0x20..0x7e is not what the reference's
 * readers expect (it would even change the header's byte length). */
static int
field_check(const char *field, const char *s, char *err, size_t errlen)
{
	const unsigned char *p;
	size_t i;

	if (s == NULL)
		return 0;
	p = (const unsigned char *)s;
	for (i = 0; p[i] != '\0'; i++) {
		if (p[i] == ',') {
			errbuf_set(err, errlen, "%s: '%.40s' has a comma at position "
			    "%zu; commas separate M-PROXY header fields",
			    field, s, i);
			return -1;
		}
		if (p[i] < 0x20 || p[i] > 0x7e) {
			errbuf_set(err, errlen, "%s: byte 0x%02x at position %zu "
			    "is not printable ASCII; M-PROXY header fields "
			    "are printable ASCII", field, p[i], i);
			return -1;
		}
	}
	return 0;
}

static const char *
str_or_null(const char *s)
{
	return (s != NULL && s[0] != '\0') ? s : NULL;
}

int
mproxy_pack_header(const struct mproxy_meta *m, const char *service,
    size_t datalen, uint8_t *out, char *err, size_t errlen)
{
	static const struct mproxy_meta empty = {
		NULL, NULL, MPROXY_ABSENT, NULL, MPROXY_ABSENT, NULL
	};
	struct hdr h;
	const char *svc;
	int control, connection;

	if (out == NULL) {
		errbuf_set(err, errlen, "no output buffer");
		return -1;
	}
	if (m == NULL)
		m = &empty;
	/* The reference tests `service &&`, so "" means "not given". */
	service = str_or_null(service);
	control = service != NULL && strcmp(service, "control") == 0;
	connection = service != NULL && strcmp(service, "connection") == 0;

	memset(&h, 0, sizeof(h));
	h.h_buf = out + 2;

	if (control) {
		/* The reference ignores meta entirely here. */
		hdr_put(&h, ",,,", 3);
		hdr_number(&h, datalen);
		hdr_put(&h, ",control", 8);
		goto done;
	}

	svc = (service != NULL && !connection) ? service : m->service;
	if (field_check("family", m->family, err, errlen) == -1 ||
	    field_check("address", m->address, err, errlen) == -1 ||
	    field_check("service", svc, err, errlen) == -1 ||
	    field_check("name", m->name, err, errlen) == -1)
		return -1;
	if (m->port != MPROXY_ABSENT && (m->port < 0 || m->port > 65535)) {
		errbuf_set(err, errlen, "port: %ld is out of range (0..65535, "
		    "or absent)", m->port);
		return -1;
	}
	if (m->serviceport != MPROXY_ABSENT &&
	    (m->serviceport < 0 || m->serviceport > 65535)) {
		errbuf_set(err, errlen, "serviceport: %ld is out of range "
		    "(1..65535, or 0/absent for none)", m->serviceport);
		return -1;
	}

	hdr_field(&h, "family", m->family);
	hdr_comma(&h);
	hdr_field(&h, "address", m->address);
	hdr_comma(&h);
	if (m->port != MPROXY_ABSENT)
		hdr_number(&h, (uint64_t)m->port);
	hdr_comma(&h);
	hdr_number(&h, datalen);
	hdr_comma(&h);
	if (connection)
		hdr_put(&h, "connection", 10);
	else
		hdr_field(&h, "service", svc);
	hdr_comma(&h);
	/* `meta.serviceport || ''`: 0 is written as nothing. */
	if (m->serviceport > 0)
		hdr_number(&h, (uint64_t)m->serviceport);
	hdr_comma(&h);
	hdr_field(&h, "name", m->name);
	if (connection) {
		hdr_comma(&h);
		hdr_field(&h, "service", m->service);
	}

done:
	if (h.h_len > MPROXY_HEADER_MAX) {
		if (h.h_big != NULL)
			errbuf_set(err, errlen, "header: %zu bytes, over the "
			    "%d-byte limit of M-PROXY v1 (%s is %zu bytes; "
			    "shorten it)", h.h_len, MPROXY_HEADER_MAX,
			    h.h_big, h.h_biglen);
		else
			errbuf_set(err, errlen, "header: %zu bytes, over the "
			    "%d-byte limit of M-PROXY v1", h.h_len,
			    MPROXY_HEADER_MAX);
		return -1;
	}
	out[0] = MPROXY_V1;
	out[1] = (uint8_t)h.h_len;
	return (int)(2 + h.h_len);
}

long
mproxy_pack(const struct mproxy_meta *m, const char *service,
    const uint8_t *data, size_t len, uint8_t *out, size_t outcap,
    char *err, size_t errlen)
{
	uint8_t head[MPROXY_FRAME_HEAD_MAX];
	int hl;

	if (data == NULL && len != 0) {
		errbuf_set(err, errlen, "data: NULL with a length of %zu", len);
		return -1;
	}
	/* pack() replaces an empty payload with one space. */
	if (len == 0) {
		data = (const uint8_t *)" ";
		len = 1;
	}
	if ((hl = mproxy_pack_header(m, service, len, head, err,
	    errlen)) == -1)
		return -1;
	if (len > (size_t)LONG_MAX - MPROXY_FRAME_HEAD_MAX ||
	    outcap < (size_t)hl || outcap - (size_t)hl < len) {
		errbuf_set(err, errlen, "output buffer: %zu bytes, the frame "
		    "needs %d + %zu", outcap, hl, len);
		return -1;
	}
	memcpy(out, head, (size_t)hl);
	memcpy(out + hl, data, len);
	return (long)((size_t)hl + len);
}

/* ---- decoder ---------------------------------------------------------- */

enum dec_state {
	DS_VERSION,
	DS_HLEN,
	DS_HEADER,
	DS_DATA,
	DS_ERROR,
};

struct mproxy_decoder {
	enum mproxy_mode d_mode;
	size_t           d_max_data;
	enum dec_state   d_state;
	uint64_t         d_offset;     /* bytes consumed by earlier feeds */
	uint64_t         d_frame_off;  /* stream offset of the version byte */
	size_t           d_hlen;
	size_t           d_hgot;
	char             d_hbuf[MPROXY_HEADER_MAX + 1];
	const char      *d_field[FIELDS_KNOWN];
	size_t           d_datalen;
	size_t           d_got;        /* payload bytes received so far */
	uint8_t         *d_buf;        /* whole mode: a split payload */
	size_t           d_bufcap;
	char             d_err[MPROXY_ERR_MAX];
};

struct mproxy_decoder *
mproxy_decoder_new(enum mproxy_mode mode, size_t max_data)
{
	struct mproxy_decoder *d;

	if (mode != MPROXY_WHOLE && mode != MPROXY_PIECES)
		return NULL;
	if ((d = calloc(1, sizeof(*d))) == NULL)
		return NULL;
	d->d_mode = mode;
	d->d_max_data = max_data != 0 ? max_data : MPROXY_DEFAULT_MAX_DATA;
	d->d_state = DS_VERSION;
	return d;
}

void
mproxy_decoder_free(struct mproxy_decoder *d)
{
	if (d == NULL)
		return;
	free(d->d_buf);
	free(d);
}

const char *
mproxy_decoder_error(const struct mproxy_decoder *d)
{
	return d->d_state == DS_ERROR ? d->d_err : "";
}

uint64_t
mproxy_decoder_offset(const struct mproxy_decoder *d)
{
	return d->d_offset;
}

int
mproxy_decoder_at_boundary(const struct mproxy_decoder *d)
{
	return d->d_state == DS_VERSION;
}

static void
dec_fail(struct mproxy_decoder *d, uint64_t at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
dec_fail(struct mproxy_decoder *d, uint64_t at, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(d->d_err, sizeof(d->d_err), "byte %llu: ",
	    (unsigned long long)at);
	if (n > 0 && (size_t)n < sizeof(d->d_err)) {
		va_start(ap, fmt);
		vsnprintf(d->d_err + n, sizeof(d->d_err) - (size_t)n, fmt, ap);
		va_end(ap);
	}
	d->d_state = DS_ERROR;
}

int
mproxy_decoder_finish(struct mproxy_decoder *d)
{
	switch (d->d_state) {
	case DS_VERSION:
		return 0;
	case DS_ERROR:
		return -1;
	case DS_HLEN:
	case DS_HEADER:
		dec_fail(d, d->d_offset, "stream ends inside the header of "
		    "the frame that starts at byte %llu",
		    (unsigned long long)d->d_frame_off);
		return -1;
	case DS_DATA:
		dec_fail(d, d->d_offset, "stream ends inside the payload of "
		    "the frame that starts at byte %llu (%zu of %zu bytes)",
		    (unsigned long long)d->d_frame_off, d->d_got,
		    d->d_datalen);
		return -1;
	}
	return -1;
}

/* Splits the collected header into fields and checks it.  The reference
 * accepts anything here; we accept any printable header with at least a
 * service field, and insist on a decimal data length, since a wrong length
 * is how a stream loses sync. */
static int
dec_header(struct mproxy_decoder *d)
{
	uint64_t hstart = d->d_frame_off + 2;
	char *h = d->d_hbuf;
	const char *dl;
	size_t i, nf, v;
	unsigned char c;
	int over;

	for (i = 0; i < FIELDS_KNOWN; i++)
		d->d_field[i] = "";
	d->d_field[0] = h;
	nf = 1;
	for (i = 0; i < d->d_hlen; i++) {
		c = (unsigned char)h[i];
		if (c == ',') {
			h[i] = '\0';
			if (nf < FIELDS_KNOWN)
				d->d_field[nf] = h + i + 1;
			nf++;
		} else if (c < 0x20 || c > 0x7e) {
			dec_fail(d, hstart + i, "header byte 0x%02x is not "
			    "printable ASCII (header of the frame that starts "
			    "at byte %llu)", c,
			    (unsigned long long)d->d_frame_off);
			return -1;
		}
	}
	h[d->d_hlen] = '\0';
	if (nf < FIELDS_MIN) {
		/* Undo the split so the message shows the header. */
		for (i = 0; i < d->d_hlen; i++)
			if (h[i] == '\0')
				h[i] = ',';
		dec_fail(d, hstart, "header '%.64s' has %zu field%s, at least "
		    "%d expected (family,address,port,datalen,service)", h,
		    nf, nf == 1 ? "" : "s", FIELDS_MIN);
		return -1;
	}

	/* `parseInt(x, 10) || 0`, minus the leniency: empty is 0, anything
	 * but decimal digits is an error. */
	dl = d->d_field[FIELD_DATALEN];
	v = 0;
	over = 0;
	for (i = 0; dl[i] != '\0'; i++) {
		if (dl[i] < '0' || dl[i] > '9') {
			dec_fail(d, hstart + (size_t)(dl - h), "data length "
			    "'%.32s' is not a number", dl);
			return -1;
		}
		if (!over) {
			v = v * 10 + (size_t)(dl[i] - '0');
			if (v > d->d_max_data)
				over = 1;
		}
	}
	if (over) {
		dec_fail(d, hstart + (size_t)(dl - h), "data length %.32s is "
		    "over the limit of %zu bytes", dl, d->d_max_data);
		return -1;
	}
	d->d_datalen = v;
	if (strcmp(d->d_field[FIELD_SERVICE], "connection") != 0)
		d->d_field[FIELD_CONNSERVICE] = "";
	return 0;
}

static void
dec_frame(const struct mproxy_decoder *d, struct mproxy_frame *out)
{
	out->family = d->d_field[FIELD_FAMILY];
	out->address = d->d_field[FIELD_ADDRESS];
	out->port = d->d_field[FIELD_PORT];
	out->service = d->d_field[FIELD_SERVICE];
	out->serviceport = d->d_field[FIELD_SERVICEPORT];
	out->name = d->d_field[FIELD_NAME];
	out->conn_service = d->d_field[FIELD_CONNSERVICE];
	out->datalen = d->d_datalen;
}

static int
dec_reserve(struct mproxy_decoder *d, size_t n)
{
	uint8_t *p;

	if (n <= d->d_bufcap)
		return 0;
	if (n < DECODER_KEEP_BUF)
		n = DECODER_KEEP_BUF;
	/* The old contents are never needed: free first, so a failure does
	 * not leave two buffers alive. */
	free(d->d_buf);
	d->d_buf = NULL;
	d->d_bufcap = 0;
	if ((p = malloc(n)) == NULL)
		return -1;
	d->d_buf = p;
	d->d_bufcap = n;
	return 0;
}

enum mproxy_result
mproxy_decoder_feed(struct mproxy_decoder *d, const uint8_t *buf,
    size_t len, size_t *consumed, struct mproxy_frame *out)
{
	size_t pos = 0, n, need;
	enum mproxy_result r = MPROXY_NEED_MORE;

	*consumed = 0;
	if (d->d_state == DS_ERROR)
		return MPROXY_ERROR;
	if (buf == NULL && len != 0) {
		dec_fail(d, d->d_offset, "NULL buffer fed to the decoder");
		return MPROXY_ERROR;
	}
	/* The last frame handed out may have used a big buffer. */
	if (d->d_state == DS_VERSION && d->d_bufcap > DECODER_KEEP_BUF) {
		free(d->d_buf);
		d->d_buf = NULL;
		d->d_bufcap = 0;
	}

	while (pos < len) {
		if (d->d_state == DS_VERSION) {
			if (buf[pos] != MPROXY_V1) {
				dec_fail(d, d->d_offset + pos, "version byte "
				    "0x%02x is not 0x%02x (M-PROXY v1): not an "
				    "M-PROXY stream, or a frame's length was "
				    "wrong", buf[pos], MPROXY_V1);
				r = MPROXY_ERROR;
				break;
			}
			d->d_frame_off = d->d_offset + pos;
			d->d_state = DS_HLEN;
			pos++;
			continue;
		}
		if (d->d_state == DS_HLEN) {
			d->d_hlen = buf[pos];
			if (d->d_hlen == 0) {
				dec_fail(d, d->d_offset + pos, "header length "
				    "is 0 (frame that starts at byte %llu)",
				    (unsigned long long)d->d_frame_off);
				r = MPROXY_ERROR;
				break;
			}
			d->d_hgot = 0;
			d->d_state = DS_HEADER;
			pos++;
			continue;
		}
		if (d->d_state == DS_HEADER) {
			n = d->d_hlen - d->d_hgot;
			if (n > len - pos)
				n = len - pos;
			memcpy(d->d_hbuf + d->d_hgot, buf + pos, n);
			d->d_hgot += n;
			pos += n;
			if (d->d_hgot < d->d_hlen)
				break;
			if (dec_header(d) == -1) {
				r = MPROXY_ERROR;
				break;
			}
			d->d_got = 0;
			if (d->d_datalen == 0) {
				/* No payload: the frame is complete now. */
				dec_frame(d, out);
				out->data = buf + pos;
				out->len = 0;
				out->offset = 0;
				out->first = 1;
				out->last = 1;
				d->d_state = DS_VERSION;
				r = MPROXY_FRAME;
				break;
			}
			d->d_state = DS_DATA;
			continue;
		}
		/* DS_DATA */
		need = d->d_datalen - d->d_got;
		n = len - pos < need ? len - pos : need;
		if (d->d_mode == MPROXY_PIECES) {
			dec_frame(d, out);
			out->data = buf + pos;
			out->len = n;
			out->offset = d->d_got;
			out->first = d->d_got == 0;
			d->d_got += n;
			out->last = d->d_got == d->d_datalen;
			pos += n;
			if (out->last)
				d->d_state = DS_VERSION;
			r = MPROXY_FRAME;
			break;
		}
		if (d->d_got == 0 && n == need) {
			/* Whole frame in this chunk: hand out a pointer. */
			dec_frame(d, out);
			out->data = buf + pos;
			out->len = n;
			pos += n;
		} else {
			/* Split frame: its one copy, into our buffer. */
			if (d->d_got == 0 && dec_reserve(d, d->d_datalen) == -1) {
				dec_fail(d, d->d_offset + pos, "out of memory "
				    "for a payload of %zu bytes",
				    d->d_datalen);
				r = MPROXY_ERROR;
				break;
			}
			memcpy(d->d_buf + d->d_got, buf + pos, n);
			d->d_got += n;
			pos += n;
			if (d->d_got < d->d_datalen)
				break;
			dec_frame(d, out);
			out->data = d->d_buf;
			out->len = d->d_datalen;
		}
		out->offset = 0;
		out->first = 1;
		out->last = 1;
		d->d_state = DS_VERSION;
		r = MPROXY_FRAME;
		break;
	}
	*consumed = pos;
	d->d_offset += pos;
	return r;
}
