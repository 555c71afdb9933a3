/* M-PROXY v1 codec, byte-compatible with proxy-packer 2.0.4.
 *
 * Frame: <0xFE><hlen><header: hlen ASCII bytes><payload: datalen bytes>
 * header = family,address,port,datalen,service,serviceport,name[,connservice]
 */
#ifndef POSTERN_MPROXY_H
#define POSTERN_MPROXY_H

#include <stddef.h>
#include <stdint.h>

#define MPROXY_V1              0xFE
#define MPROXY_HEADER_MAX      255                    /* one length byte */
#define MPROXY_FRAME_HEAD_MAX  (2 + MPROXY_HEADER_MAX) /* bytes before payload */
#define MPROXY_DEFAULT_MAX_DATA (1024u * 1024u)       /* decoder default limit */
#define MPROXY_ERR_MAX         192

/* What the encoder writes, mirroring the reference's `meta` object.
 * NULL strings are written as empty fields. */
struct mproxy_meta {
	const char *family;      /* "IPv4", "IPv6" */
	const char *address;
	long        port;        /* 0..65535; MPROXY_ABSENT writes an empty field */
	const char *service;     /* "tcp", "udp", "https", ... */
	long        serviceport; /* 1..65535; 0 or MPROXY_ABSENT writes an empty
	                            field (the reference writes `serviceport || ''`) */
	const char *name;
};
#define MPROXY_ABSENT (-1L)

/* Writes <0xFE><hlen><header> for a payload of datalen bytes into out
 * (which holds at least MPROXY_FRAME_HEAD_MAX bytes), as the reference's
 * packHeader(meta, data, service) does:
 *   service NULL        -> meta->service
 *   "control"           -> ",,,datalen,control"
 *   "connection"        -> family,address,port,datalen,connection,serviceport,name,meta->service
 *   anything else       -> overrides meta->service
 * Returns the bytes written, or -1 with err filled (naming the field) when
 * the reference would corrupt the frame: header over 255 bytes, a comma or
 * a non-printable byte in a field, a port out of range. */
int mproxy_pack_header(const struct mproxy_meta *m, const char *service,
                       size_t datalen, uint8_t *out, char *err, size_t errlen);

/* The reference's pack(meta, data, service): header + payload, where an
 * empty payload becomes a single space (datalen 1).  Writes into out
 * (capacity outcap); returns total length or -1 with err filled. */
long mproxy_pack(const struct mproxy_meta *m, const char *service,
                 const uint8_t *data, size_t len,
                 uint8_t *out, size_t outcap, char *err, size_t errlen);

/* ---- decoder ---------------------------------------------------------- */

/* One frame, or one piece of a frame's payload.  Header strings point
 * into the decoder and stay valid until the next mproxy_decoder_feed();
 * absent fields are "". */
struct mproxy_frame {
	const char *family, *address, *port;
	const char *service, *serviceport, *name;
	const char *conn_service;  /* 8th field of a `connection` header, or "" */
	size_t      datalen;       /* declared payload length */
	const uint8_t *data;       /* payload bytes (piece) */
	size_t      len;           /* bytes at data */
	size_t      offset;        /* where data starts within the payload */
	int         first;         /* 1 on the first piece of a frame */
	int         last;          /* 1 on the piece that completes the frame */
};

enum mproxy_result {
	MPROXY_NEED_MORE = 0,   /* input consumed, no frame completed */
	MPROXY_FRAME     = 1,   /* *out filled */
	MPROXY_ERROR     = -1,  /* stream is broken; mproxy_decoder_error() says why */
};

enum mproxy_mode {
	/* Whole frames: a frame that lies in one chunk is handed out as a
	 * pointer into it; a split payload is copied once into the decoder. */
	MPROXY_WHOLE = 0,
	/* Pieces: payload bytes are handed out as they arrive (pointers into
	 * the caller's chunks, never copied); out->first/last mark frames.
	 * A zero-length payload yields one piece with first = last = 1. */
	MPROXY_PIECES = 1,
};

struct mproxy_decoder;

/* max_data: the largest declared payload accepted (a longer one is an
 * error); 0 means MPROXY_DEFAULT_MAX_DATA.  NULL when out of memory. */
struct mproxy_decoder *mproxy_decoder_new(enum mproxy_mode mode, size_t max_data);
void mproxy_decoder_free(struct mproxy_decoder *d);
/* Feeds up to len bytes.  *consumed says how many were used (call again
 * with the rest).  After MPROXY_ERROR every further call returns
 * MPROXY_ERROR. */
enum mproxy_result mproxy_decoder_feed(struct mproxy_decoder *d,
                                       const uint8_t *buf, size_t len,
                                       size_t *consumed, struct mproxy_frame *out);
/* "byte 1234: data length '12x' is not a number" and the like. */
const char *mproxy_decoder_error(const struct mproxy_decoder *d);
/* Bytes fed so far (the stream offset). */
uint64_t mproxy_decoder_offset(const struct mproxy_decoder *d);
/* 1 when the decoder sits between frames (a clean place for a stream to end). */
int mproxy_decoder_at_boundary(const struct mproxy_decoder *d);
/* The stream has ended: 0 when at a frame boundary, else -1 and the
 * decoder is in error ("byte 230: stream ends inside the payload of the
 * frame that starts at byte 0 (28 of 199 bytes)"). */
int mproxy_decoder_finish(struct mproxy_decoder *d);

#endif
