/* M-PROXY v1 codec: the encoder against the reference's outputs, the
 * decoder under every way of cutting the vectors into chunks, and every
 * kind of malformed stream. */
#include <check.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mproxy.h"
#include "sniff.h"

/* Check records every passing ck_assert; loops that check millions of
 * things use this instead. */
#define expect(cond, ...) do {						\
	if (!(cond))							\
		ck_abort_msg(__VA_ARGS__);				\
} while (0)

/* ---- vectors ---------------------------------------------------------- */

static char vecdir[1024];

static void
vec_find(void)
{
	const char *env = getenv("POSTERN_VECTORS");
	static const char *tries[] = {
		"tests/vectors", "../tests/vectors", "../../tests/vectors"
	};
	char probe[1100];
	size_t i;

	if (env != NULL) {
		snprintf(vecdir, sizeof(vecdir), "%s", env);
		return;
	}
	for (i = 0; i < sizeof(tries) / sizeof(tries[0]); i++) {
		snprintf(probe, sizeof(probe), "%s/mproxy-cases.json",
		    tries[i]);
		if (access(probe, R_OK) == 0) {
			snprintf(vecdir, sizeof(vecdir), "%s", tries[i]);
			return;
		}
	}
	fprintf(stderr, "test_mproxy: tests/vectors not found; run from the "
	    "source tree or set POSTERN_VECTORS\n");
	exit(1);
}

static uint8_t *
vec_load(const char *name, size_t *lenp)
{
	char path[1200];
	FILE *f;
	uint8_t *buf;
	long n;

	snprintf(path, sizeof(path), "%s/%s", vecdir, name);
	f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = malloc((size_t)n + 1);
	ck_assert_ptr_nonnull(buf);
	ck_assert_uint_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	*lenp = (size_t)n;
	return buf;
}

static json_t *
vec_json(const char *name)
{
	char path[1200];
	json_error_t jerr;
	json_t *j;

	snprintf(path, sizeof(path), "%s/%s", vecdir, name);
	j = json_load_file(path, JSON_ALLOW_NUL, &jerr);
	ck_assert_msg(j != NULL, "%s: %s", path, jerr.text);
	return j;
}

static uint8_t *
hex_decode(const char *hex, size_t *lenp)
{
	size_t n = strlen(hex) / 2, i;
	uint8_t *b = malloc(n + 1);
	unsigned int v;

	ck_assert_ptr_nonnull(b);
	for (i = 0; i < n; i++) {
		ck_assert_int_eq(sscanf(hex + 2 * i, "%2x", &v), 1);
		b[i] = (uint8_t)v;
	}
	*lenp = n;
	return b;
}

/* A growing byte string for building streams. */
struct bytes {
	uint8_t *b_buf;
	size_t   b_len;
	size_t   b_cap;
};

static void
bytes_add(struct bytes *b, const void *p, size_t n)
{
	if (b->b_len + n > b->b_cap) {
		b->b_cap = (b->b_len + n) * 2 + 64;
		b->b_buf = realloc(b->b_buf, b->b_cap);
		expect(b->b_buf != NULL, "out of memory");
	}
	if (n > 0)
		memcpy(b->b_buf + b->b_len, p, n);
	b->b_len += n;
}

static void
bytes_frame(struct bytes *b, const char *hdr, const void *data, size_t n)
{
	uint8_t h[2] = { MPROXY_V1, (uint8_t)strlen(hdr) };

	bytes_add(b, h, 2);
	bytes_add(b, hdr, strlen(hdr));
	bytes_add(b, data, n);
}

/* ---- encoder against the reference's outputs -------------------------- */

static long
meta_int(json_t *meta, const char *key)
{
	json_t *v = json_object_get(meta, key);

	return v == NULL ? MPROXY_ABSENT : (long)json_integer_value(v);
}

static const char *
meta_str(json_t *meta, const char *key)
{
	return json_string_value(json_object_get(meta, key));
}

static void
meta_from_json(json_t *j, struct mproxy_meta *m)
{
	m->family = meta_str(j, "family");
	m->address = meta_str(j, "address");
	m->port = meta_int(j, "port");
	m->service = meta_str(j, "service");
	m->serviceport = meta_int(j, "serviceport");
	m->name = meta_str(j, "name");
}

/* The payload of a case: hex bytes, a repeated byte, or a value the
 * reference passes through JSON.stringify. */
static uint8_t *
case_data(json_t *c, size_t *lenp)
{
	json_t *v;
	uint8_t *b;
	char *s;

	if ((v = json_object_get(c, "json")) != NULL) {
		s = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
		ck_assert_ptr_nonnull(s);
		*lenp = strlen(s);
		return (uint8_t *)s;
	}
	if ((v = json_object_get(c, "data_repeat")) != NULL) {
		*lenp = (size_t)json_integer_value(json_object_get(v, "count"));
		b = malloc(*lenp);
		ck_assert_ptr_nonnull(b);
		memset(b, (int)json_integer_value(json_object_get(v, "byte")),
		    *lenp);
		return b;
	}
	return hex_decode(json_string_value(json_object_get(c, "data")),
	    lenp);
}

static void
run_cases(const char *file)
{
	json_t *all = vec_json(file), *c;
	struct mproxy_meta m;
	uint8_t *data, *expected, *out;
	size_t i, dlen, elen, cap;
	long n;
	char err[MPROXY_ERR_MAX];
	const char *fn, *service;

	ck_assert(json_array_size(all) > 0);
	json_array_foreach(all, i, c) {
		meta_from_json(json_object_get(c, "meta"), &m);
		data = case_data(c, &dlen);
		expected = hex_decode(json_string_value(json_object_get(c,
		    "expected")), &elen);
		service = json_string_value(json_object_get(c, "service"));
		fn = json_string_value(json_object_get(c, "fn"));
		cap = MPROXY_FRAME_HEAD_MAX + dlen + 1;
		out = malloc(cap);
		ck_assert_ptr_nonnull(out);
		if (strcmp(fn, "pack") == 0)
			n = mproxy_pack(&m, service, data, dlen, out, cap, err,
			    sizeof(err));
		else
			n = mproxy_pack_header(&m, service, dlen, out, err,
			    sizeof(err));
		ck_assert_msg(n >= 0, "%s case %zu: %s", file, i, err);
		ck_assert_msg((size_t)n == elen && memcmp(out, expected,
		    elen) == 0, "%s case %zu (%s): output differs from the "
		    "reference (%ld bytes, expected %zu: '%s')", file, i, fn,
		    n, elen, json_string_value(json_object_get(c,
		    "expected_text_prefix")));
		free(out);
		free(expected);
		free(data);
	}
	json_decref(all);
}

START_TEST(t_reference_cases)
{
	run_cases("mproxy-cases.json");
}
END_TEST

START_TEST(t_extra_cases)
{
	run_cases("extra-cases.json");
}
END_TEST

/* The seed's header is the older, shorter form; the reference 2.0.4 packs
 * the same meta and payload with two trailing empty fields. */
START_TEST(t_seed_vector)
{
	uint8_t *seed, *tcp, out[512];
	size_t slen, tlen, used;
	struct mproxy_decoder *d;
	struct mproxy_frame f;
	struct mproxy_meta m = { "IPv4", "127.0.1.1", 443, "foo",
	    MPROXY_ABSENT, NULL };
	char err[MPROXY_ERR_MAX];
	long n;

	seed = vec_load("sni.tunneled.bin", &slen);
	tcp = vec_load("sni.tcp.bin", &tlen);
	ck_assert_uint_eq(slen, 2 + 26 + tlen);

	d = mproxy_decoder_new(MPROXY_WHOLE, 0);
	ck_assert_int_eq(mproxy_decoder_feed(d, seed, slen, &used, &f),
	    MPROXY_FRAME);
	ck_assert_uint_eq(used, slen);
	ck_assert_str_eq(f.family, "IPv4");
	ck_assert_str_eq(f.address, "127.0.1.1");
	ck_assert_str_eq(f.port, "443");
	ck_assert_uint_eq(f.datalen, 199);
	ck_assert_str_eq(f.service, "foo");
	ck_assert_str_eq(f.serviceport, "");
	ck_assert_str_eq(f.name, "");
	ck_assert_str_eq(f.conn_service, "");
	ck_assert_uint_eq(f.len, tlen);
	ck_assert_mem_eq(f.data, tcp, tlen);
	ck_assert_ptr_eq(f.data, seed + 28);
	ck_assert_int_eq(mproxy_decoder_finish(d), 0);
	mproxy_decoder_free(d);

	n = mproxy_pack(&m, NULL, tcp, tlen, out, sizeof(out), err,
	    sizeof(err));
	ck_assert_int_eq(n, (long)slen + 2);
	ck_assert_uint_eq(out[1], 28);
	ck_assert_mem_eq(out + 2, "IPv4,127.0.1.1,443,199,foo,,", 28);
	ck_assert_mem_eq(out + 30, seed + 28, tlen);
	free(seed);
	free(tcp);
}
END_TEST

/* What proxy-packer's test/pack.js wrote for each pack-*.json: the name
 * comes from the payload's SNI or Host. */
START_TEST(t_packjs_vectors)
{
	static const char *runs[] = { "pack-sni", "pack-http",
	    "pack-http-nohost", "pack-kelvin", "pack-empty" };
	char path[300], name[MPROXY_HEADER_MAX + 2], err[MPROXY_ERR_MAX];
	struct mproxy_meta m;
	json_t *in, *addr;
	uint8_t *pay, *expected, out[4096];
	size_t i, plen, elen;
	long n;

	for (i = 0; i < sizeof(runs) / sizeof(runs[0]); i++) {
		snprintf(path, sizeof(path), "%s.json", runs[i]);
		in = vec_json(path);
		addr = json_object_get(in, "address");
		meta_from_json(addr, &m);
		/* "./file" relative to the vectors folder */
		pay = vec_load(json_string_value(json_object_get(in,
		    "filepath")) + 2, &plen);
		ck_assert_int_lt(sniff_name(pay, plen, name, sizeof(name)),
		    (long)sizeof(name));
		m.name = name;
		n = mproxy_pack(&m, NULL, pay, plen, out, sizeof(out), err,
		    sizeof(err));
		ck_assert_msg(n > 0, "%s: %s", runs[i], err);
		snprintf(path, sizeof(path), "%s.expected.bin", runs[i]);
		expected = vec_load(path, &elen);
		ck_assert_msg((size_t)n == elen && memcmp(out, expected,
		    elen) == 0, "%s: differs from pack.js", runs[i]);
		free(expected);
		free(pay);
		json_decref(in);
	}
}
END_TEST

/* ---- encoder refusals ------------------------------------------------- */

static const struct mproxy_meta good = { "IPv4", "10.0.0.1", 1234, "tcp",
    22, "nas" };

static void
refused(const struct mproxy_meta *m, const char *service,
    const char *expect)
{
	uint8_t out[MPROXY_FRAME_HEAD_MAX];
	char err[MPROXY_ERR_MAX] = "";

	ck_assert_int_eq(mproxy_pack_header(m, service, 10, out, err,
	    sizeof(err)), -1);
	ck_assert_msg(strncmp(err, expect, strlen(expect)) == 0,
	    "error '%s' does not start with '%s'", err, expect);
}

START_TEST(t_refuse_fields)
{
	struct mproxy_meta m;
	static const char *bad[] = { "a,b", "a\nb", "\x7f", "caf\xc3\xa9",
	    "\x01", "\t" };
	static const char *msg[] = { "has a comma at position 1",
	    "byte 0x0a at position 1", "byte 0x7f at position 0",
	    "byte 0xc3 at position 3", "byte 0x01 at position 0",
	    "byte 0x09 at position 0" };
	char expect[128];
	uint8_t out[MPROXY_FRAME_HEAD_MAX];
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		m = good;
		m.family = bad[i];
		snprintf(expect, sizeof(expect), "family: ");
		refused(&m, NULL, expect);
		m = good;
		m.address = bad[i];
		refused(&m, NULL, "address: ");
		m = good;
		m.service = bad[i];
		refused(&m, NULL, "service: ");
		/* The connection frame writes meta.service as its 8th. */
		refused(&m, "connection", "service: ");
		m = good;
		m.name = bad[i];
		refused(&m, NULL, "name: ");
		refused(&m, "end", "name: ");
		refused(&good, bad[i], "service: ");
		m = good;
		m.name = bad[i];
		ck_assert_int_eq(mproxy_pack_header(&m, NULL, 0, out, expect,
		    sizeof(expect)), -1);
		ck_assert_msg(strstr(expect, msg[i]) != NULL, "'%s' lacks "
		    "'%s'", expect, msg[i]);
	}
	/* Printable punctuation and spaces are fine. */
	m = good;
	m.name = "a b~!@#$%^&*()_+{}|:\"<>?";
	ck_assert_int_gt(mproxy_pack_header(&m, NULL, 0, out, expect,
	    sizeof(expect)), 0);
}
END_TEST

START_TEST(t_refuse_ports)
{
	struct mproxy_meta m = good;
	uint8_t out[MPROXY_FRAME_HEAD_MAX];
	char err[MPROXY_ERR_MAX];
	int n;

	m.port = 65536;
	refused(&m, NULL, "port: 65536 is out of range");
	m.port = -2;
	refused(&m, NULL, "port: -2 is out of range");
	m.port = 70000;
	refused(&m, "connection", "port: 70000");
	m = good;
	m.serviceport = 65536;
	refused(&m, NULL, "serviceport: 65536 is out of range");
	m.serviceport = -7;
	refused(&m, NULL, "serviceport: -7 is out of range");

	m = good;
	m.port = 0;
	m.serviceport = 65535;
	n = mproxy_pack_header(&m, NULL, 3, out, err, sizeof(err));
	ck_assert_int_eq(n, 2 + 31);
	ck_assert_mem_eq(out + 2, "IPv4,10.0.0.1,0,3,tcp,65535,nas", 31);
	m.port = MPROXY_ABSENT;
	m.serviceport = 0;
	n = mproxy_pack_header(&m, NULL, 3, out, err, sizeof(err));
	ck_assert_int_eq(n, 2 + 25);
	ck_assert_mem_eq(out + 2, "IPv4,10.0.0.1,,3,tcp,,nas", 25);
}
END_TEST

START_TEST(t_refuse_long_header)
{
	struct mproxy_meta m = { "IPv4", "1.2.3.4", 5, "tcp", MPROXY_ABSENT,
	    NULL };
	char name[300], err[MPROXY_ERR_MAX];
	uint8_t out[MPROXY_FRAME_HEAD_MAX];
	int n;

	/* "IPv4,1.2.3.4,5,1,tcp,," is 22 bytes. */
	memset(name, 'n', sizeof(name));
	name[233] = '\0';
	m.name = name;
	n = mproxy_pack_header(&m, NULL, 1, out, err, sizeof(err));
	ck_assert_int_eq(n, 257);
	ck_assert_uint_eq(out[1], 255);
	name[233] = 'n';
	name[234] = '\0';
	ck_assert_int_eq(mproxy_pack_header(&m, NULL, 1, out, err,
	    sizeof(err)), -1);
	ck_assert_str_eq(err, "header: 256 bytes, over the 255-byte limit "
	    "of M-PROXY v1 (name is 234 bytes; shorten it)");
	/* Over by the data length's digits alone. */
	name[233] = '\0';
	ck_assert_int_eq(mproxy_pack_header(&m, NULL, 10, out, err,
	    sizeof(err)), -1);
	memset(name, 'n', sizeof(name));
	name[299] = '\0';
	m.name = "";
	m.address = name;
	ck_assert_int_eq(mproxy_pack_header(&m, NULL, 1, out, err,
	    sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "address is 299 bytes"));
}
END_TEST

START_TEST(t_control_and_null_meta)
{
	struct mproxy_meta m = { "a,b", "\n", 99999, "x,y", -5, "," };
	uint8_t out[MPROXY_FRAME_HEAD_MAX];
	char err[MPROXY_ERR_MAX];

	/* control ignores meta entirely, as the reference does. */
	ck_assert_int_eq(mproxy_pack_header(&m, "control", 44, out, err,
	    sizeof(err)), 2 + 13);
	ck_assert_mem_eq(out, "\xfe\x0d,,,44,control", 15);
	ck_assert_int_eq(mproxy_pack_header(NULL, "control", 0, out, err,
	    sizeof(err)), 2 + 12);
	ck_assert_int_eq(mproxy_pack_header(NULL, NULL, 7, out, err,
	    sizeof(err)), 2 + 7);
	ck_assert_mem_eq(out + 2, ",,,7,,,", 7);
	/* An empty service argument is "not given" (`service &&`). */
	ck_assert_int_eq(mproxy_pack_header(&good, "", 1, out, err,
	    sizeof(err)), 2 + 31);
	ck_assert_mem_eq(out + 2, "IPv4,10.0.0.1,1234,1,tcp,22,nas", 31);
}
END_TEST

START_TEST(t_pack_buffer)
{
	uint8_t out[64];
	char err[MPROXY_ERR_MAX];
	long n;

	/* "IPv4,10.0.0.1,1234,5,tcp,22,nas" is 31 bytes: needs 38. */
	ck_assert_int_eq(mproxy_pack(&good, NULL, (const uint8_t *)"hello", 5,
	    out, 37, err, sizeof(err)), -1);
	ck_assert_str_eq(err, "output buffer: 37 bytes, the frame needs "
	    "33 + 5");
	n = mproxy_pack(&good, NULL, (const uint8_t *)"hello", 5, out, 38,
	    err, sizeof(err));
	ck_assert_int_eq(n, 38);
	ck_assert_mem_eq(out + 33, "hello", 5);
	ck_assert_int_eq(mproxy_pack(&good, NULL, NULL, 3, out, sizeof(out),
	    err, sizeof(err)), -1);
	/* An empty payload becomes one space. */
	n = mproxy_pack(&good, "end", NULL, 0, out, sizeof(out), err,
	    sizeof(err));
	ck_assert_int_eq(n, 2 + 31 + 1);
	ck_assert_mem_eq(out + 2, "IPv4,10.0.0.1,1234,1,end,22,nas ", 32);
}
END_TEST

/* ---- decoder: collecting frames -------------------------------------- */

struct rec {
	char     r_hdr[600];   /* the header fields, '|'-joined */
	size_t   r_datalen;
	uint8_t *r_data;
	size_t   r_len;
};

struct recs {
	struct rec *rs_r;
	size_t      rs_n;
	size_t      rs_cap;
	int         rs_open;   /* pieces mode: a frame is incomplete */
	char        rs_err[MPROXY_ERR_MAX];
	int         rs_failed;
};

static void
recs_free(struct recs *rs)
{
	size_t i;

	for (i = 0; i < rs->rs_n; i++)
		free(rs->rs_r[i].r_data);
	free(rs->rs_r);
	memset(rs, 0, sizeof(*rs));
}

static struct rec *
recs_new(struct recs *rs, const struct mproxy_frame *f)
{
	struct rec *r;

	if (rs->rs_n == rs->rs_cap) {
		rs->rs_cap = rs->rs_cap * 2 + 8;
		rs->rs_r = realloc(rs->rs_r, rs->rs_cap * sizeof(*rs->rs_r));
		expect(rs->rs_r != NULL, "out of memory");
	}
	r = &rs->rs_r[rs->rs_n++];
	memset(r, 0, sizeof(*r));
	snprintf(r->r_hdr, sizeof(r->r_hdr), "%s|%s|%s|%s|%s|%s|%s",
	    f->family, f->address, f->port, f->service, f->serviceport,
	    f->name, f->conn_service);
	r->r_datalen = f->datalen;
	r->r_data = malloc(f->datalen + 1);
	expect(r->r_data != NULL, "out of memory");
	return r;
}

/* Takes one frame or piece out of the decoder, checking the promises of
 * mproxy.h about where its bytes live. */
static void
recs_take(struct recs *rs, enum mproxy_mode mode,
    const struct mproxy_frame *f, const uint8_t *chunk, size_t clen,
    size_t at, int whole_in_chunk)
{
	struct rec *r;
	int in_chunk = f->data >= chunk && f->data + f->len <= chunk + clen;

	if (mode == MPROXY_PIECES) {
		expect(in_chunk && f->data == chunk + at,
		    "a piece must point into its chunk");
		expect(f->first == !rs->rs_open, "first is %d", f->first);
		if (f->first)
			r = recs_new(rs, f);
		else
			r = &rs->rs_r[rs->rs_n - 1];
		expect(f->offset == r->r_len, "piece offset %zu, expected %zu",
		    f->offset, r->r_len);
		expect(r->r_len + f->len <= f->datalen, "piece past the frame");
		expect(f->len > 0 || f->datalen == 0, "empty piece");
	} else {
		expect(f->first == 1 && f->last == 1 && f->offset == 0 &&
		    f->len == f->datalen, "whole mode: not a whole frame");
		expect(!whole_in_chunk || in_chunk, "a frame whole inside one "
		    "chunk must be handed out in place");
		r = recs_new(rs, f);
	}
	memcpy(r->r_data + r->r_len, f->data, f->len);
	r->r_len += f->len;
	expect(f->last == (r->r_len == f->datalen), "last is %d", f->last);
	rs->rs_open = !f->last;
}

/* Decodes buf cut at cuts[0..ncuts) (ascending). */
static void
decode_cut(enum mproxy_mode mode, size_t max, const uint8_t *buf,
    size_t len, const size_t *cuts, size_t ncuts, struct recs *rs)
{
	struct mproxy_decoder *d = mproxy_decoder_new(mode, max);
	struct mproxy_frame f;
	enum mproxy_result r;
	size_t c, start, end, pos, used;

	expect(d != NULL, "mproxy_decoder_new failed");
	memset(rs, 0, sizeof(*rs));
	for (c = 0, start = 0; c <= ncuts; c++, start = end) {
		end = c < ncuts ? cuts[c] : len;
		for (pos = start; ; pos += used) {
			expect(mproxy_decoder_offset(d) == pos, "offset %llu, "
			    "expected %zu", (unsigned long long)
			    mproxy_decoder_offset(d), pos);
			r = mproxy_decoder_feed(d, buf + pos, end - pos, &used,
			    &f);
			expect(used <= end - pos, "consumed more than given");
			expect(mproxy_decoder_offset(d) == pos + used,
			    "offset does not count consumed bytes");
			if (r == MPROXY_ERROR) {
				snprintf(rs->rs_err, sizeof(rs->rs_err), "%s",
				    mproxy_decoder_error(d));
				rs->rs_failed = 1;
				goto out;
			}
			if (r == MPROXY_NEED_MORE) {
				expect(used == end - pos, "NEED_MORE left "
				    "bytes unconsumed");
				break;
			}
			/* The frame (or piece) ends at pos + used; its
			 * payload began datalen bytes before in whole mode. */
			recs_take(rs, mode, &f, buf + pos, end - pos,
			    used - f.len, mode == MPROXY_WHOLE &&
			    pos + used - f.datalen >= start);
		}
	}
	if (mproxy_decoder_finish(d) == -1) {
		snprintf(rs->rs_err, sizeof(rs->rs_err), "%s",
		    mproxy_decoder_error(d));
		rs->rs_failed = 1;
	}
out:
	mproxy_decoder_free(d);
}

static void
recs_eq(const struct recs *a, const struct recs *b, const char *what)
{
	size_t i;

	expect(a->rs_n == b->rs_n, "%s: %zu frames, expected %zu", what,
	    a->rs_n, b->rs_n);
	expect(a->rs_failed == b->rs_failed && strcmp(a->rs_err,
	    b->rs_err) == 0, "%s: error '%s', expected '%s'", what,
	    a->rs_err, b->rs_err);
	for (i = 0; i < a->rs_n; i++) {
		expect(strcmp(a->rs_r[i].r_hdr, b->rs_r[i].r_hdr) == 0,
		    "%s: frame %zu: header '%s', expected '%s'", what, i,
		    a->rs_r[i].r_hdr, b->rs_r[i].r_hdr);
		expect(a->rs_r[i].r_datalen == b->rs_r[i].r_datalen &&
		    a->rs_r[i].r_len == b->rs_r[i].r_len &&
		    memcmp(a->rs_r[i].r_data, b->rs_r[i].r_data,
		    a->rs_r[i].r_len) == 0, "%s: frame %zu: payload differs",
		    what, i);
	}
}

/* Every stream vector, and every case's frame, end to end. */
static void
all_vectors(struct bytes *b)
{
	static const char *bins[] = { "sni.tunneled.bin", "stream-tunnel.bin",
	    "stream-parse.bin", "pack-sni.expected.bin",
	    "pack-http.expected.bin", "pack-http-nohost.expected.bin",
	    "pack-kelvin.expected.bin", "pack-empty.expected.bin" };
	static const char *jsons[] = { "mproxy-cases.json",
	    "extra-cases.json" };
	json_t *all, *c;
	uint8_t *p;
	size_t i, j, n;

	memset(b, 0, sizeof(*b));
	for (i = 0; i < sizeof(bins) / sizeof(bins[0]); i++) {
		p = vec_load(bins[i], &n);
		bytes_add(b, p, n);
		free(p);
	}
	for (j = 0; j < sizeof(jsons) / sizeof(jsons[0]); j++) {
		all = vec_json(jsons[j]);
		json_array_foreach(all, i, c) {
			/* packHeader() cases are headers without payload. */
			if (strcmp(json_string_value(json_object_get(c, "fn")),
			    "pack") != 0)
				continue;
			p = hex_decode(json_string_value(json_object_get(c,
			    "expected")), &n);
			bytes_add(b, p, n);
			free(p);
		}
		json_decref(all);
	}
}

/* ---- decoder: against the reference decoder's output ------------------ */

static void
check_jsonl(const char *bin, const char *jsonl)
{
	uint8_t *buf, *data;
	size_t len, i, dlen;
	struct recs rs;
	json_t *line;
	json_error_t jerr;
	char path[1200], hdr[600];
	const char *b64;
	FILE *f;

	buf = vec_load(bin, &len);
	decode_cut(MPROXY_WHOLE, 0, buf, len, NULL, 0, &rs);
	ck_assert_msg(!rs.rs_failed, "%s: %s", bin, rs.rs_err);
	snprintf(path, sizeof(path), "%s/%s", vecdir, jsonl);
	f = fopen(path, "r");
	ck_assert_ptr_nonnull(f);
	for (i = 0; (line = json_loadf(f, JSON_DISABLE_EOF_CHECK, &jerr)) !=
	    NULL; i++) {
		ck_assert_uint_lt(i, rs.rs_n);
		snprintf(hdr, sizeof(hdr), "%s|%s|%s|%s|%s|%s|%s",
		    json_string_value(json_object_get(line, "family")),
		    json_string_value(json_object_get(line, "address")),
		    json_string_value(json_object_get(line, "port")),
		    json_string_value(json_object_get(line, "service")),
		    json_string_value(json_object_get(line, "serviceport")),
		    json_string_value(json_object_get(line, "name")),
		    json_object_get(line, "connservice") ?
		    json_string_value(json_object_get(line, "connservice")) :
		    "");
		ck_assert_str_eq(rs.rs_r[i].r_hdr, hdr);
		ck_assert_uint_eq(rs.rs_r[i].r_datalen,
		    (size_t)json_integer_value(json_object_get(line,
		    "datalen")));
		b64 = json_string_value(json_object_get(line, "data"));
		data = malloc(strlen(b64) + 1);
		ck_assert_int_eq(sodium_base642bin(data, strlen(b64) + 1, b64,
		    strlen(b64), NULL, &dlen, NULL,
		    sodium_base64_VARIANT_ORIGINAL), 0);
		ck_assert_uint_eq(dlen, rs.rs_r[i].r_len);
		ck_assert_mem_eq(data, rs.rs_r[i].r_data, dlen);
		free(data);
		json_decref(line);
	}
	ck_assert_uint_eq(i, rs.rs_n);
	fclose(f);
	recs_free(&rs);
	free(buf);
}

START_TEST(t_decode_reference)
{
	check_jsonl("sni.tunneled.bin", "sni.tunneled.jsonl");
	check_jsonl("stream-tunnel.bin", "stream-tunnel.jsonl");
	check_jsonl("stream-parse.bin", "stream-parse.jsonl");
}
END_TEST

/* ---- decoder: every split ------------------------------------------- */

START_TEST(t_decode_every_split)
{
	struct bytes b;
	struct recs ref, got;
	size_t cut, nframes;
	int mode;

	all_vectors(&b);
	decode_cut(MPROXY_WHOLE, 0, b.b_buf, b.b_len, NULL, 0, &ref);
	ck_assert_msg(!ref.rs_failed, "%s", ref.rs_err);
	nframes = ref.rs_n;
	ck_assert_uint_gt(nframes, 25);
	for (mode = MPROXY_WHOLE; mode <= MPROXY_PIECES; mode++) {
		for (cut = 0; cut <= b.b_len; cut++) {
			decode_cut(mode, 0, b.b_buf, b.b_len, &cut, 1, &got);
			recs_eq(&got, &ref, "split");
			recs_free(&got);
		}
	}
	recs_free(&ref);
	free(b.b_buf);
}
END_TEST

START_TEST(t_decode_bytewise)
{
	struct bytes b;
	struct recs ref, got;
	size_t *cuts, i;
	int mode;

	all_vectors(&b);
	decode_cut(MPROXY_WHOLE, 0, b.b_buf, b.b_len, NULL, 0, &ref);
	cuts = malloc(b.b_len * sizeof(*cuts));
	for (i = 1; i < b.b_len; i++)
		cuts[i - 1] = i;
	for (mode = MPROXY_WHOLE; mode <= MPROXY_PIECES; mode++) {
		decode_cut(mode, 0, b.b_buf, b.b_len, cuts, b.b_len - 1, &got);
		recs_eq(&got, &ref, "bytewise");
		recs_free(&got);
	}
	free(cuts);
	recs_free(&ref);
	free(b.b_buf);
}
END_TEST

/* Two cuts everywhere in a stream with zero-length frames. */
START_TEST(t_decode_two_cuts)
{
	uint8_t *buf;
	size_t len, cuts[2];
	struct recs ref, got;
	int mode;

	buf = vec_load("stream-parse.bin", &len);
	decode_cut(MPROXY_WHOLE, 0, buf, len, NULL, 0, &ref);
	ck_assert_uint_eq(ref.rs_n, 3);
	for (mode = MPROXY_WHOLE; mode <= MPROXY_PIECES; mode++)
		for (cuts[0] = 0; cuts[0] <= len; cuts[0]++)
			for (cuts[1] = cuts[0]; cuts[1] <= len; cuts[1]++) {
				decode_cut(mode, 0, buf, len, cuts, 2, &got);
				recs_eq(&got, &ref, "two cuts");
				recs_free(&got);
			}
	recs_free(&ref);
	free(buf);
}
END_TEST

/* ---- decoder: malformed streams -------------------------------------- */

struct bad {
	const char *b_what;
	const char *b_hdr;     /* a frame header, or NULL: b_raw */
	const char *b_raw;
	size_t      b_rawlen;
	size_t      b_max;     /* decoder limit, 0: default */
	size_t      b_frames;  /* whole frames before the error */
	const char *b_err;
};

static const struct bad bads[] = {
	{ "version", NULL, "A", 1, 0, 0,
	  "byte 0: version byte 0x41 is not 0xfe (M-PROXY v1): not an M-PROXY "
	  "stream, or a frame's length was wrong" },
	{ "version 0xff (v0)", NULL, "\xff\x03" "a,b", 5, 0, 0,
	  "byte 0: version byte 0xff is not 0xfe (M-PROXY v1): not an M-PROXY "
	  "stream, or a frame's length was wrong" },
	{ "header length 0", NULL, "\xfe\x00", 2, 0, 0,
	  "byte 1: header length is 0 (frame that starts at byte 0)" },
	{ "control byte", "IPv4,1.2\n.3.4,5,0,tcp", NULL, 0, 0, 0,
	  "byte 10: header byte 0x0a is not printable ASCII (header of the "
	  "frame that starts at byte 0)" },
	{ "high byte", "IPv4,1.2.3.4,5,0,t\xc3\xa9p", NULL, 0, 0, 0,
	  "byte 20: header byte 0xc3 is not printable ASCII (header of the "
	  "frame that starts at byte 0)" },
	{ "NUL byte", "IPv4,1.2.3.4,5,0,tcp,\0", NULL, 0, 0, 0, NULL },
	{ "4 fields", "IPv4,1.2.3.4,5,0", NULL, 0, 0, 0,
	  "byte 2: header 'IPv4,1.2.3.4,5,0' has 4 fields, at least 5 "
	  "expected (family,address,port,datalen,service)" },
	{ "1 field", "garbage", NULL, 0, 0, 0,
	  "byte 2: header 'garbage' has 1 field, at least 5 expected "
	  "(family,address,port,datalen,service)" },
	{ "12x", "IPv4,1.2.3.4,5,12x,tcp", NULL, 0, 0, 0,
	  "byte 17: data length '12x' is not a number" },
	{ "-1", "IPv4,1.2.3.4,5,-1,tcp", NULL, 0, 0, 0,
	  "byte 17: data length '-1' is not a number" },
	{ "+5", "IPv4,1.2.3.4,5,+5,tcp", NULL, 0, 0, 0,
	  "byte 17: data length '+5' is not a number" },
	{ " 5", "IPv4,1.2.3.4,5, 5,tcp", NULL, 0, 0, 0,
	  "byte 17: data length ' 5' is not a number" },
	{ "0x10", ",,,0x10,control", NULL, 0, 0, 0,
	  "byte 5: data length '0x10' is not a number" },
	{ "over 1 MiB", "IPv4,1.2.3.4,5,1048577,tcp", NULL, 0, 0, 0,
	  "byte 17: data length 1048577 is over the limit of 1048576 bytes" },
	{ "huge", "IPv4,1.2.3.4,5,99999999999999999999999999,tcp", NULL, 0, 0,
	  0, "byte 17: data length 99999999999999999999999999 is over the "
	  "limit of 1048576 bytes" },
	{ "over a set limit", "IPv4,1.2.3.4,5,101,tcp", NULL, 0, 100, 0,
	  "byte 17: data length 101 is over the limit of 100 bytes" },
};

static void
bad_stream(const struct bad *t, struct bytes *b, size_t *errat)
{
	static const char ok[] = "IPv4,127.0.0.1,1,3,tcp,,";
	size_t hl;

	memset(b, 0, sizeof(*b));
	/* Two good frames first: errors name stream offsets, not frame
	 * offsets, and frames before the error still come out. */
	bytes_frame(b, ok, "abc", 3);
	bytes_frame(b, ",,,0,control", NULL, 0);
	*errat = b->b_len;
	if (t->b_hdr != NULL) {
		hl = strlen(t->b_hdr);
		if (strcmp(t->b_what, "NUL byte") == 0)
			hl += 1;
		bytes_add(b, "\xfe", 1);
		bytes_add(b, &(uint8_t){ (uint8_t)hl }, 1);
		bytes_add(b, t->b_hdr, hl);
		bytes_add(b, "payload", 7);
	} else
		bytes_add(b, t->b_raw, t->b_rawlen);
}

/* "byte 17: ..." shifted by the stream's good prefix. */
static void
shift_err(const char *err, size_t by, char *out, size_t outlen)
{
	unsigned long long at;
	int n;

	ck_assert_int_eq(sscanf(err, "byte %llu: %n", &at, &n), 1);
	snprintf(out, outlen, "byte %llu: %s", at + by, err + n);
	/* "frame that starts at byte 0" moves too. */
	if (strstr(out, "starts at byte 0)") != NULL)
		snprintf(strstr(out, "starts at byte 0)"), 32,
		    "starts at byte %zu)", by);
}

START_TEST(t_decode_malformed)
{
	const struct bad *t = &bads[_i];
	struct bytes b;
	struct recs got, rs1;
	struct mproxy_decoder *d;
	struct mproxy_frame f;
	char expect[MPROXY_ERR_MAX];
	size_t errat, used, *cuts, i;

	bad_stream(t, &b, &errat);
	decode_cut(MPROXY_WHOLE, t->b_max, b.b_buf, b.b_len, NULL, 0, &got);
	ck_assert_msg(got.rs_failed, "%s: accepted", t->b_what);
	ck_assert_uint_eq(got.rs_n, 2 + t->b_frames);
	if (t->b_err != NULL) {
		shift_err(t->b_err, errat, expect, sizeof(expect));
		ck_assert_str_eq(got.rs_err, expect);
	} else
		ck_assert_msg(strstr(got.rs_err, "not printable") != NULL,
		    "%s", got.rs_err);

	/* The same error at the same offset, however the bytes arrive. */
	cuts = malloc(b.b_len * sizeof(*cuts));
	for (i = 1; i < b.b_len; i++)
		cuts[i - 1] = i;
	decode_cut(MPROXY_PIECES, t->b_max, b.b_buf, b.b_len, cuts,
	    b.b_len - 1, &rs1);
	ck_assert_str_eq(rs1.rs_err, got.rs_err);
	ck_assert_uint_eq(rs1.rs_n, got.rs_n);
	recs_free(&rs1);
	free(cuts);

	/* Broken for good: no resync on the next good bytes. */
	d = mproxy_decoder_new(MPROXY_WHOLE, t->b_max);
	for (i = 0; i < b.b_len; i += used)
		if (mproxy_decoder_feed(d, b.b_buf + i, b.b_len - i, &used,
		    &f) == MPROXY_ERROR)
			break;
	ck_assert_uint_lt(i, b.b_len + 1);
	ck_assert_int_eq(mproxy_decoder_feed(d, b.b_buf, errat, &used, &f),
	    MPROXY_ERROR);
	ck_assert_uint_eq(used, 0);
	ck_assert_str_eq(mproxy_decoder_error(d), got.rs_err);
	ck_assert_int_eq(mproxy_decoder_at_boundary(d), 0);
	ck_assert_int_eq(mproxy_decoder_finish(d), -1);
	mproxy_decoder_free(d);
	recs_free(&got);
	free(b.b_buf);
}
END_TEST

/* The limit is inclusive; an empty data length is 0, as in the reference
 * (`parseInt('') || 0`); extra fields are ignored. */
START_TEST(t_decode_lenient)
{
	struct bytes b;
	struct recs rs;
	uint8_t pay[100];

	memset(pay, 'p', sizeof(pay));
	memset(&b, 0, sizeof(b));
	bytes_frame(&b, "IPv4,1.2.3.4,5,100,tcp", pay, 100);
	bytes_frame(&b, "IPv4,1.2.3.4,5,,end", NULL, 0);
	bytes_frame(&b, "IPv4,1.2.3.4,5,007,tcp,,,,x,y,z", pay, 7);
	bytes_frame(&b, "a,b,c,0,connection,1,n,svc", NULL, 0);
	bytes_frame(&b, "a,b,c,0,tcp,1,n,notconn", NULL, 0);
	bytes_frame(&b, " , ,~,1, ", "!", 1);
	decode_cut(MPROXY_WHOLE, 100, b.b_buf, b.b_len, NULL, 0, &rs);
	ck_assert_msg(!rs.rs_failed, "%s", rs.rs_err);
	ck_assert_uint_eq(rs.rs_n, 6);
	ck_assert_uint_eq(rs.rs_r[0].r_len, 100);
	ck_assert_str_eq(rs.rs_r[1].r_hdr, "IPv4|1.2.3.4|5|end|||");
	ck_assert_uint_eq(rs.rs_r[1].r_datalen, 0);
	ck_assert_uint_eq(rs.rs_r[2].r_datalen, 7);
	ck_assert_str_eq(rs.rs_r[3].r_hdr, "a|b|c|connection|1|n|svc");
	ck_assert_str_eq(rs.rs_r[4].r_hdr, "a|b|c|tcp|1|n|");
	ck_assert_str_eq(rs.rs_r[5].r_hdr, " | |~| |||");
	recs_free(&rs);
	free(b.b_buf);
}
END_TEST

START_TEST(t_decode_default_limit)
{
	struct mproxy_decoder *d = mproxy_decoder_new(MPROXY_WHOLE, 0);
	struct bytes b;
	struct mproxy_frame f;
	size_t used;

	memset(&b, 0, sizeof(b));
	bytes_frame(&b, "IPv4,1.2.3.4,5,1048576,tcp", NULL, 0);
	ck_assert_int_eq(mproxy_decoder_feed(d, b.b_buf, b.b_len, &used, &f),
	    MPROXY_NEED_MORE);
	ck_assert_uint_eq(used, b.b_len);
	ck_assert_int_eq(mproxy_decoder_at_boundary(d), 0);
	ck_assert_int_eq(mproxy_decoder_finish(d), -1);
	ck_assert_str_eq(mproxy_decoder_error(d), "byte 28: stream ends "
	    "inside the payload of the frame that starts at byte 0 (0 of "
	    "1048576 bytes)");
	mproxy_decoder_free(d);
	free(b.b_buf);
	ck_assert_ptr_null(mproxy_decoder_new((enum mproxy_mode)7, 0));
}
END_TEST

/* A stream that stops anywhere but between frames is an error. */
START_TEST(t_decode_truncated)
{
	uint8_t *buf;
	size_t len, cut, used, pos;
	struct mproxy_decoder *d;
	struct mproxy_frame f;
	static const size_t bounds[] = { 0, 2 + 71, 2 + 71 + 2 + 62 + 199,
	    392 };
	int boundary;
	size_t i;

	buf = vec_load("stream-parse.bin", &len);
	ck_assert_uint_eq(len, 392);
	for (cut = 0; cut <= len; cut++) {
		d = mproxy_decoder_new(MPROXY_PIECES, 0);
		for (pos = 0; pos < cut; pos += used)
			ck_assert_int_ne(mproxy_decoder_feed(d, buf + pos,
			    cut - pos, &used, &f), MPROXY_ERROR);
		boundary = 0;
		for (i = 0; i < sizeof(bounds) / sizeof(bounds[0]); i++)
			boundary |= cut == bounds[i];
		ck_assert_int_eq(mproxy_decoder_at_boundary(d), boundary);
		ck_assert_int_eq(mproxy_decoder_finish(d), boundary ? 0 : -1);
		if (cut == 200)
			ck_assert_str_eq(mproxy_decoder_error(d), "byte 200: "
			    "stream ends inside the payload of the frame that "
			    "starts at byte 73 (63 of 199 bytes)");
		if (cut == 74)
			ck_assert_str_eq(mproxy_decoder_error(d), "byte 74: "
			    "stream ends inside the header of the frame that "
			    "starts at byte 73");
		mproxy_decoder_free(d);
	}
	free(buf);
}
END_TEST

/* Encoder and decoder agree on whatever the encoder accepts. */
START_TEST(t_roundtrip)
{
	static const char *fam[] = { "IPv4", "IPv6", "", NULL };
	static const char *svc[] = { NULL, "end", "connection", "control",
	    "error", "udp" };
	struct mproxy_meta m;
	struct mproxy_decoder *d;
	struct mproxy_frame f;
	uint8_t *pay, *out;
	char addr[64], name[64], port[16], sport[16], err[MPROXY_ERR_MAX];
	size_t len, used, i;
	long n;
	unsigned seed = 12345;

	pay = malloc(70000);
	out = malloc(70000 + MPROXY_FRAME_HEAD_MAX);
	for (i = 0; i < 70000; i++)
		pay[i] = (uint8_t)(i * 7 + 3);
	d = mproxy_decoder_new(MPROXY_WHOLE, 70000);
	for (i = 0; i < 2000; i++) {
		seed = seed * 1103515245 + 12345;
		len = (seed >> 8) % 4 == 0 ? (seed >> 4) % 70001 :
		    (seed >> 12) % 40;
		snprintf(addr, sizeof(addr), "10.%u.%u.%u", seed % 256,
		    (seed >> 8) % 256, (seed >> 16) % 256);
		snprintf(name, sizeof(name), "host-%u.example", seed % 1000);
		m.family = fam[seed % 4];
		m.address = (seed >> 3) % 5 == 0 ? NULL : addr;
		m.port = (seed >> 5) % 7 == 0 ? MPROXY_ABSENT :
		    (long)((seed >> 7) % 65536);
		m.service = (seed >> 9) % 3 == 0 ? NULL : "tcp";
		m.serviceport = (long)((seed >> 11) % 3) * 8080 - 1;
		m.name = (seed >> 13) % 2 ? name : NULL;
		n = mproxy_pack(&m, svc[(seed >> 15) % 6], pay, len, out,
		    70000 + MPROXY_FRAME_HEAD_MAX, err, sizeof(err));
		ck_assert_msg(n > 0, "%s", err);
		ck_assert_int_eq(mproxy_decoder_feed(d, out, (size_t)n, &used,
		    &f), MPROXY_FRAME);
		ck_assert_uint_eq(used, (size_t)n);
		ck_assert_uint_eq(f.len, len ? len : 1);
		ck_assert_mem_eq(f.data, len ? pay : (const uint8_t *)" ",
		    f.len);
		if (strcmp(f.service, "control") == 0) {
			ck_assert_str_eq(f.family, "");
			continue;
		}
		snprintf(port, sizeof(port), "%ld", m.port);
		snprintf(sport, sizeof(sport), "%ld", m.serviceport);
		ck_assert_str_eq(f.family, m.family ? m.family : "");
		ck_assert_str_eq(f.address, m.address ? m.address : "");
		ck_assert_str_eq(f.port, m.port < 0 ? "" : port);
		ck_assert_str_eq(f.serviceport, m.serviceport <= 0 ? "" :
		    sport);
		ck_assert_str_eq(f.name, m.name ? m.name : "");
		if (strcmp(f.service, "connection") == 0)
			ck_assert_str_eq(f.conn_service, m.service ?
			    m.service : "");
	}
	mproxy_decoder_free(d);
	free(pay);
	free(out);
}
END_TEST

/* A big frame in small chunks is copied once into the decoder and comes
 * out whole; a big frame in one chunk is handed out in place. */
START_TEST(t_decode_big_frame)
{
	struct mproxy_meta m = { "IPv4", "1.1.1.1", 1, "tcp", 0, NULL };
	struct mproxy_decoder *d = mproxy_decoder_new(MPROXY_WHOLE, 0);
	struct mproxy_frame f;
	size_t len = 1048576, n, pos, used, frames = 0, i;
	uint8_t *buf = malloc(len + MPROXY_FRAME_HEAD_MAX);
	uint8_t *pay = malloc(len);
	char err[MPROXY_ERR_MAX];
	long total;

	for (i = 0; i < len; i++)
		pay[i] = (uint8_t)(i ^ (i >> 8));
	total = mproxy_pack(&m, NULL, pay, len, buf, len +
	    MPROXY_FRAME_HEAD_MAX, err, sizeof(err));
	ck_assert_int_gt(total, 0);
	for (pos = 0; pos < (size_t)total; pos += n) {
		n = (size_t)total - pos < 1500 ? (size_t)total - pos : 1500;
		for (i = 0; i < n; i += used)
			if (mproxy_decoder_feed(d, buf + pos + i, n - i,
			    &used, &f) == MPROXY_FRAME) {
				ck_assert_uint_eq(f.len, len);
				ck_assert_mem_eq(f.data, pay, len);
				frames++;
			}
	}
	ck_assert_uint_eq(frames, 1);
	ck_assert_int_eq(mproxy_decoder_feed(d, buf, (size_t)total, &used, &f),
	    MPROXY_FRAME);
	ck_assert_ptr_eq(f.data, buf + total - len);
	mproxy_decoder_free(d);
	free(buf);
	free(pay);
}
END_TEST

static Suite *
mproxy_suite(void)
{
	Suite *s = suite_create("mproxy");
	TCase *tc;

	tc = tcase_create("encoder");
	tcase_add_test(tc, t_reference_cases);
	tcase_add_test(tc, t_extra_cases);
	tcase_add_test(tc, t_seed_vector);
	tcase_add_test(tc, t_packjs_vectors);
	tcase_add_test(tc, t_refuse_fields);
	tcase_add_test(tc, t_refuse_ports);
	tcase_add_test(tc, t_refuse_long_header);
	tcase_add_test(tc, t_control_and_null_meta);
	tcase_add_test(tc, t_pack_buffer);
	suite_add_tcase(s, tc);

	tc = tcase_create("decoder");
	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, t_decode_reference);
	tcase_add_test(tc, t_decode_every_split);
	tcase_add_test(tc, t_decode_bytewise);
	tcase_add_test(tc, t_decode_two_cuts);
	tcase_add_loop_test(tc, t_decode_malformed, 0,
	    (int)(sizeof(bads) / sizeof(bads[0])));
	tcase_add_test(tc, t_decode_lenient);
	tcase_add_test(tc, t_decode_default_limit);
	tcase_add_test(tc, t_decode_truncated);
	tcase_add_test(tc, t_roundtrip);
	tcase_add_test(tc, t_decode_big_frame);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	vec_find();
	sr = srunner_create(mproxy_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
