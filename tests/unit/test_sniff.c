/* SNI and Host extraction: the reference's answers on its own vectors,
 * and nothing read out of bounds on truncated or hostile input (run this
 * under ASan: every input is an exact-size heap copy). */
#include <check.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sniff.h"

/* Check records every passing ck_assert; loops use this instead. */
#define expect(cond, ...) do {						\
	if (!(cond))							\
		ck_abort_msg(__VA_ARGS__);				\
} while (0)

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
		snprintf(probe, sizeof(probe), "%s/sniff-cases.json", tries[i]);
		if (access(probe, R_OK) == 0) {
			snprintf(vecdir, sizeof(vecdir), "%s", tries[i]);
			return;
		}
	}
	fprintf(stderr, "test_sniff: tests/vectors not found; run from the "
	    "source tree or set POSTERN_VECTORS\n");
	exit(1);
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

/* An exact-size heap copy, so ASan sees any read past the end. */
static uint8_t *
dup_exact(const void *p, size_t n)
{
	uint8_t *b = malloc(n == 0 ? 1 : n);

	expect(b != NULL, "out of memory");
	if (n > 0)
		memcpy(b, p, n);
	else
		b[0] = 0;
	return b;
}

static uint8_t *
hex_decode(const char *hex, size_t *lenp)
{
	size_t n = strlen(hex) / 2, i;
	uint8_t *b = malloc(n + 1);
	unsigned int v;

	expect(b != NULL, "out of memory");
	for (i = 0; i < n; i++) {
		expect(sscanf(hex + 2 * i, "%2x", &v) == 1, "bad hex");
		b[i] = (uint8_t)v;
	}
	*lenp = n;
	return b;
}

static int
has_high(const char *s, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++)
		if ((unsigned char)s[i] > 0x7f)
			return 1;
	return 0;
}

/* Compares a C answer with the reference's (a JSON string or null).  A
 * reference answer outside ASCII (from bytes the reference decodes as
 * UTF-8) only has to be outside ASCII here too: the encoder refuses it. */
static void
same_answer(const char *note, const char *what, json_t *want, long got,
    const char *out)
{
	size_t wlen;

	if (json_is_null(want)) {
		expect(got == -1, "%s: %s: got '%s', expected none", note, what,
		    out);
		return;
	}
	expect(got >= 0, "%s: %s: got none, expected '%s'", note, what,
	    json_string_value(want));
	wlen = json_string_length(want);
	if (has_high(json_string_value(want), wlen)) {
		expect(has_high(out, (size_t)got), "%s: %s: got ASCII '%s' for "
		    "a non-ASCII name", note, what, out);
		return;
	}
	expect((size_t)got == wlen && memcmp(out, json_string_value(want),
	    wlen) == 0 && out[wlen] == '\0', "%s: %s: got '%s' (%ld), "
	    "expected '%s'", note, what, out, got, json_string_value(want));
}

START_TEST(t_reference_cases)
{
	json_t *all = vec_json("sniff-cases.json"), *c;
	char out[70000];
	const char *note;
	uint8_t *raw, *buf;
	size_t i, len, nsni = 0, nhost = 0;
	long n;

	ck_assert_uint_gt(json_array_size(all), 300);
	json_array_foreach(all, i, c) {
		note = json_string_value(json_object_get(c, "note"));
		raw = hex_decode(json_string_value(json_object_get(c, "hex")),
		    &len);
		buf = dup_exact(raw, len);
		n = sniff_tls_sni(buf, len, out, sizeof(out));
		same_answer(note, "sni", json_object_get(c, "sni"), n, out);
		nsni += n > 0;
		n = sniff_http_host(buf, len, out, sizeof(out));
		same_answer(note, "host", json_object_get(c, "host"), n, out);
		nhost += n > 0;
		n = sniff_name(buf, len, out, sizeof(out));
		same_answer(note, "name", json_object_get(c, "name"), n, out);
		free(buf);
		free(raw);
	}
	/* The vectors exercise both paths. */
	ck_assert_uint_gt(nsni, 50);
	ck_assert_uint_gt(nhost, 30);
	json_decref(all);
}
END_TEST

/* Every case cut at every length: whatever comes out lies inside the
 * input, and nothing reads past it. */
START_TEST(t_truncated_every_length)
{
	json_t *all = vec_json("sniff-cases.json"), *c;
	char out[70000];
	uint8_t *raw, *buf;
	size_t i, len, cut;
	long n;

	json_array_foreach(all, i, c) {
		raw = hex_decode(json_string_value(json_object_get(c, "hex")),
		    &len);
		for (cut = 0; cut < len; cut++) {
			buf = dup_exact(raw, cut);
			n = sniff_tls_sni(buf, cut, out, sizeof(out));
			expect(n == -1 || (size_t)n + 43 < cut, "sni of %zu "
			    "bytes is %ld bytes", cut, n);
			n = sniff_http_host(buf, cut, out, sizeof(out));
			expect(n == -1 || (size_t)n + 6 <= cut, "host of %zu "
			    "bytes is %ld bytes", cut, n);
			n = sniff_name(buf, cut, out, sizeof(out));
			expect(n >= 0 && (size_t)n <= cut, "name of %zu bytes "
			    "is %ld bytes", cut, n);
			free(buf);
		}
		free(raw);
	}
	json_decref(all);
}
END_TEST

/* The seed ClientHello holds its extensions to the last byte, so any
 * truncation loses the name (the reference checks the extensions'
 * length first). */
START_TEST(t_seed_truncated)
{
	char path[1200], out[256];
	uint8_t hello[512], *buf;
	size_t len, cut;
	FILE *f;

	snprintf(path, sizeof(path), "%s/sni.tcp.bin", vecdir);
	ck_assert_ptr_nonnull(f = fopen(path, "rb"));
	len = fread(hello, 1, sizeof(hello), f);
	fclose(f);
	ck_assert_uint_eq(len, 199);
	for (cut = 0; cut <= len; cut++) {
		buf = dup_exact(hello, cut);
		expect(sniff_tls_sni(buf, cut, out, sizeof(out)) ==
		    (cut == len ? 20 : -1), "cut at %zu", cut);
		free(buf);
	}
	ck_assert_str_eq(out, "pokemap.hellabit.com");
}
END_TEST

START_TEST(t_host_truncated)
{
	static const char req[] = "GET / HTTP/1.1\r\nHost: WWW.Example.com:80"
	    "\r\n\r\n";
	const char *value = strstr(req, "Host: ") + 6;
	size_t v = (size_t)(value - req), colon = (size_t)(strchr(value, ':') -
	    req), len = strlen(req), cut, want;
	char out[64], expected[64];
	uint8_t *buf;
	long n;

	for (cut = 0; cut <= len; cut++) {
		buf = dup_exact(req, cut);
		n = sniff_http_host(buf, cut, out, sizeof(out));
		if (cut <= v) {
			expect(n == -1, "cut %zu: '%s'", cut, out);
		} else {
			want = (cut < colon ? cut : colon) - v;
			memcpy(expected, "www.example.com", want);
			expected[want] = '\0';
			expect(n == (long)want && strcmp(out, expected) == 0,
			    "cut %zu: '%s', expected '%s'", cut, out,
			    expected);
		}
		free(buf);
	}
}
END_TEST

/* Hostile lengths: buffers of 0xff (every length field at its maximum),
 * of zeros, and pseudo-random bytes, at every size up to 600. */
START_TEST(t_hostile)
{
	uint8_t pat[600], *buf;
	char out[70000];
	unsigned seed = 99;
	size_t len, i;
	int fill;

	for (fill = 0; fill < 4; fill++) {
		for (len = 0; len <= sizeof(pat); len++) {
			for (i = 0; i < len; i++) {
				seed = seed * 1103515245 + 12345;
				pat[i] = fill == 0 ? 0xff : fill == 1 ? 0 :
				    fill == 2 ? (uint8_t)(seed >> 16) :
				    (uint8_t)"\r\nHost: a:\xe2\x84\xaa\x80"
				    [(seed >> 16) % 14];
			}
			buf = dup_exact(pat, len);
			expect(sniff_tls_sni(buf, len, out, sizeof(out)) <
			    (long)len, "sni longer than its input");
			expect(sniff_http_host(buf, len, out, sizeof(out)) <
			    (long)len, "host longer than its input");
			sniff_name(buf, len, out, sizeof(out));
			free(buf);
		}
	}
	ck_assert_int_eq(sniff_tls_sni(NULL, 0, out, sizeof(out)), -1);
	ck_assert_int_eq(sniff_http_host(NULL, 0, out, sizeof(out)), -1);
	ck_assert_int_eq(sniff_name(NULL, 0, out, sizeof(out)), 0);
	ck_assert_str_eq(out, "");
}
END_TEST

/* Outputs copy like snprintf: truncated, terminated, full length back. */
START_TEST(t_small_output)
{
	static const char req[] = "Host: Example.ORG\r\n";
	char out[8];
	long n;

	memset(out, 'x', sizeof(out));
	n = sniff_http_host((const uint8_t *)req, strlen(req), out, 5);
	ck_assert_int_eq(n, 11);
	ck_assert_str_eq(out, "exam");
	ck_assert_int_eq(out[5], 'x');
	n = sniff_http_host((const uint8_t *)req, strlen(req), out, 1);
	ck_assert_int_eq(n, 11);
	ck_assert_str_eq(out, "");
	out[0] = 'x';
	n = sniff_name((const uint8_t *)req, strlen(req), out, 0);
	ck_assert_int_eq(n, 11);
	ck_assert_int_eq(out[0], 'x');
}
END_TEST

static Suite *
sniff_suite(void)
{
	Suite *s = suite_create("sniff");
	TCase *tc = tcase_create("sniff");

	tcase_set_timeout(tc, 120);
	tcase_add_test(tc, t_reference_cases);
	tcase_add_test(tc, t_truncated_every_length);
	tcase_add_test(tc, t_seed_truncated);
	tcase_add_test(tc, t_host_truncated);
	tcase_add_test(tc, t_hostile);
	tcase_add_test(tc, t_small_output);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr;
	int failed;

	vec_find();
	sr = srunner_create(sniff_suite());
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
