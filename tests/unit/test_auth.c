/* Request signing as the relay sees it: signed requests pass once, and
 * every way a request can be missing, damaged, altered, late, replayed or
 * one too many is refused with a message that says what to fix. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "auth.h"

#define NOW     1700000000
#define SKEW    300
#define METHOD  "POST"
#define PATH    "/v1/s/nas/connect/ssh"

static struct key k1, k2;
static struct auth_verifier *v;
static char err[512];

static void
setup(void)
{
	ck_assert_int_eq(key_generate(&k1, err, sizeof(err)), 0);
	ck_assert_int_eq(key_generate(&k2, err, sizeof(err)), 0);
	v = auth_verifier_new(SKEW, 1000);
	ck_assert_ptr_nonnull(v);
}

static void
teardown(void)
{
	auth_verifier_free(v);
	key_wipe(&k1);
	key_wipe(&k2);
}

static void
sign(const struct key *k, const char *method, const char *path, time_t t,
    struct auth_headers *h)
{
	ck_assert_msg(auth_sign(k, method, path, t, h, err, sizeof(err)) == 0,
	    "%s", err);
}

static enum auth_result
check(const char *method, const char *path, const struct auth_headers *h,
    time_t now)
{
	uint8_t pub[KEY_PUBLIC_BYTES];

	err[0] = '\0';
	return auth_verify(v, method, path, h->ah_key, h->ah_timestamp,
	    h->ah_nonce, h->ah_signature, now, pub, err, sizeof(err));
}

#define assert_err_has(s) \
	ck_assert_msg(strstr(err, (s)) != NULL, "no '%s' in: %s", (s), err)

START_TEST(test_round_trip)
{
	struct auth_headers h;
	uint8_t pub[KEY_PUBLIC_BYTES];
	char text[KEY_PUBLIC_TEXT_MAX];
	size_t i;

	sign(&k1, METHOD, PATH, NOW, &h);
	key_public_text(k1.k_pub, text);
	ck_assert_str_eq(h.ah_key, text);
	ck_assert_str_eq(h.ah_timestamp, "1700000000");
	ck_assert_int_eq(strlen(h.ah_nonce), 22);
	for (i = 0; i < 22; i++)
		ck_assert(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstu"
		    "vwxyz0123456789-_", h.ah_nonce[i]) != NULL);
	ck_assert_int_eq(strlen(h.ah_signature), 88);

	memset(pub, 0, sizeof(pub));
	ck_assert_int_eq(auth_verify(v, METHOD, PATH, h.ah_key, h.ah_timestamp,
	    h.ah_nonce, h.ah_signature, NOW, pub, err, sizeof(err)), AUTH_OK);
	ck_assert_mem_eq(pub, k1.k_pub, KEY_PUBLIC_BYTES);
	ck_assert_uint_eq(auth_verifier_count(v), 1);
}
END_TEST

/* The signature is exactly the one protocol.md describes, so another
 * implementation can produce it. */
START_TEST(test_message_layout)
{
	struct auth_headers h;
	uint8_t sig[64];
	char msg[256];
	size_t n;

	sign(&k1, METHOD, PATH, NOW, &h);
	n = snprintf(msg, sizeof(msg), "postern-v1\nPOST\n%s\n%s\n%s", PATH,
	    h.ah_timestamp, h.ah_nonce);
	ck_assert_int_eq(sodium_base642bin(sig, sizeof(sig), h.ah_signature,
	    strlen(h.ah_signature), NULL, NULL, NULL,
	    sodium_base64_VARIANT_ORIGINAL), 0);
	ck_assert_int_eq(crypto_sign_verify_detached(sig, (uint8_t *)msg, n,
	    k1.k_pub), 0);
}
END_TEST

START_TEST(test_nonces_differ)
{
	struct auth_headers a, b;

	sign(&k1, METHOD, PATH, NOW, &a);
	sign(&k1, METHOD, PATH, NOW, &b);
	ck_assert_str_ne(a.ah_nonce, b.ah_nonce);
	ck_assert_int_eq(check(METHOD, PATH, &a, NOW), AUTH_OK);
	ck_assert_int_eq(check(METHOD, PATH, &b, NOW), AUTH_OK);
}
END_TEST

START_TEST(test_sign_refuses_bad_request)
{
	struct auth_headers h;
	char longpath[AUTH_PATH_MAX + 2];

	ck_assert_int_eq(auth_sign(&k1, "POST", "v1/no-slash", NOW, &h, err,
	    sizeof(err)), -1);
	assert_err_has("path");
	ck_assert_int_eq(auth_sign(&k1, "POST", "/a\nb", NOW, &h, err,
	    sizeof(err)), -1);
	ck_assert_int_eq(auth_sign(&k1, "PO\nST", "/a", NOW, &h, err,
	    sizeof(err)), -1);
	assert_err_has("method");
	ck_assert_int_eq(auth_sign(&k1, "", "/a", NOW, &h, err,
	    sizeof(err)), -1);
	ck_assert_int_eq(auth_sign(&k1, "POST", "/a", -1, &h, err,
	    sizeof(err)), -1);
	assert_err_has("clock");
	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	ck_assert_int_eq(auth_sign(&k1, "POST", longpath, NOW, &h, err,
	    sizeof(err)), -1);
	/* The longest path allowed signs and verifies. */
	longpath[AUTH_PATH_MAX] = '\0';
	sign(&k1, METHOD, longpath, NOW, &h);
	ck_assert_int_eq(check(METHOD, longpath, &h, NOW), AUTH_OK);
}
END_TEST

static const char *header_names[] = { "Postern-Key", "Postern-Timestamp",
    "Postern-Nonce", "Postern-Signature" };

START_TEST(test_missing_header)
{
	struct auth_headers h;
	const char *val[4];
	int empty;

	sign(&k1, METHOD, PATH, NOW, &h);
	for (empty = 0; empty < 2; empty++) {
		val[0] = h.ah_key;
		val[1] = h.ah_timestamp;
		val[2] = h.ah_nonce;
		val[3] = h.ah_signature;
		val[_i] = empty ? "" : NULL;
		err[0] = '\0';
		ck_assert_int_eq(auth_verify(v, METHOD, PATH, val[0], val[1],
		    val[2], val[3], NOW, NULL, err, sizeof(err)), AUTH_MISSING);
		assert_err_has(header_names[_i]);
	}
	ck_assert_uint_eq(auth_verifier_count(v), 0);
	/* The request itself was fine all along. */
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_OK);
}
END_TEST

struct bad_header {
	int         bh_which;   /* 0 key, 1 timestamp, 2 nonce, 3 signature */
	const char *bh_value;
	const char *bh_expect;
};

static const struct bad_header bad_headers[] = {
	{ 0, "+fiZpeE24ru5Ku/cL+OwVny9qxpX2pMS/LVnrBgKzf4=", "Postern-Key" },
	{ 0, "ed25519:+fiZpeE24ru5Ku/cL+OwVny9qxpX2pMS/LVnrBgKzf4",
	    "Postern-Key" },
	{ 0, "ed25519:not base64 at all!!!!!!!!!!!!!!!!!!!!!!", "Postern-Key" },
	{ 1, "17000000000x", "Postern-Timestamp '17000000000x'" },
	{ 1, "-1700000000", "Postern-Timestamp" },
	{ 1, "+1700000000", "Postern-Timestamp" },
	{ 1, " 1700000000", "Postern-Timestamp" },
	{ 1, "1700000000 ", "Postern-Timestamp" },
	{ 1, "01700000000", "Postern-Timestamp" },
	{ 1, "1.7e9", "Postern-Timestamp" },
	{ 1, "1700000000.5", "Postern-Timestamp" },
	{ 1, "9999999999999999999999999999", "Postern-Timestamp" },
	{ 1, "0x6553f100", "Postern-Timestamp" },
	{ 2, "AAAAAAAAAAAAAAAAAAAAA", "Postern-Nonce" },
	{ 2, "AAAAAAAAAAAAAAAAAAAAAAA", "Postern-Nonce" },
	{ 2, "AAAAAAAAAAAAAAAAAAAAAA==", "Postern-Nonce" },
	{ 2, "AAAAAAAAAAAAAAAAAAAA+/", "Postern-Nonce" },
	{ 2, "AAAAAAAAAAAAAAAAAAAAAB", "Postern-Nonce" },
	{ 2, "AAAAAAAAAAAAAAAAAAAA A", "Postern-Nonce" },
	{ 3, "AAAA", "Postern-Signature" },
	{ 3, "not a signature", "Postern-Signature" },
	/* 63 bytes, then 65 bytes, then 64 bytes URL-safe. */
	{ 3, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAAAAAAAAAAAAAAA", "Postern-Signature" },
	{ 3, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAAAAAAAAAAAAAAAAAA=", "Postern-Signature" },
	{ 3, "-_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	    "AAAAAAAAAAAAAAAAAAAAAA==", "Postern-Signature" },
};

START_TEST(test_malformed_header)
{
	const struct bad_header *bh = &bad_headers[_i];
	struct auth_headers h;
	const char *val[4];

	sign(&k1, METHOD, PATH, NOW, &h);
	val[0] = h.ah_key;
	val[1] = h.ah_timestamp;
	val[2] = h.ah_nonce;
	val[3] = h.ah_signature;
	val[bh->bh_which] = bh->bh_value;
	err[0] = '\0';
	ck_assert_int_eq(auth_verify(v, METHOD, PATH, val[0], val[1], val[2],
	    val[3], NOW, NULL, err, sizeof(err)), AUTH_MALFORMED);
	assert_err_has(bh->bh_expect);
	ck_assert_uint_eq(auth_verifier_count(v), 0);
}
END_TEST

START_TEST(test_malformed_request_line)
{
	struct auth_headers h;

	sign(&k1, METHOD, PATH, NOW, &h);
	ck_assert_int_eq(check(METHOD, "/v1/s/nas\n/x", &h, NOW),
	    AUTH_MALFORMED);
	assert_err_has("path");
	ck_assert_int_eq(check(METHOD, NULL, &h, NOW), AUTH_MALFORMED);
	ck_assert_int_eq(check(NULL, PATH, &h, NOW), AUTH_MALFORMED);
	ck_assert_int_eq(check("POST POST", PATH, &h, NOW), AUTH_MALFORMED);
	assert_err_has("method");
}
END_TEST

START_TEST(test_wrong_key)
{
	struct auth_headers h;
	char text[KEY_PUBLIC_TEXT_MAX];

	/* Signed by k1 but claims to be k2. */
	sign(&k1, METHOD, PATH, NOW, &h);
	key_public_text(k2.k_pub, text);
	strcpy(h.ah_key, text);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_BAD_SIGNATURE);
	assert_err_has("signature does not verify for key ");
	assert_err_has(text);
	assert_err_has("altered or signed with another key");
	ck_assert_uint_eq(auth_verifier_count(v), 0);
}
END_TEST

START_TEST(test_altered_request)
{
	struct auth_headers h, other;

	sign(&k1, METHOD, PATH, NOW, &h);
	ck_assert_int_eq(check("PUT", PATH, &h, NOW), AUTH_BAD_SIGNATURE);
	ck_assert_int_eq(check(METHOD, "/v1/s/nas/connect/web", &h, NOW),
	    AUTH_BAD_SIGNATURE);
	ck_assert_int_eq(check(METHOD, "/v1/s/nas/connect/ssh/", &h, NOW),
	    AUTH_BAD_SIGNATURE);

	other = h;
	strcpy(other.ah_timestamp, "1700000001");
	ck_assert_int_eq(check(METHOD, PATH, &other, NOW), AUTH_BAD_SIGNATURE);

	/* Another valid nonce, as an attacker dodging the replay check
	 * would send. */
	other = h;
	other.ah_nonce[0] = other.ah_nonce[0] == 'A' ? 'B' : 'A';
	ck_assert_int_eq(check(METHOD, PATH, &other, NOW), AUTH_BAD_SIGNATURE);

	/* One flipped bit of the signature. */
	other = h;
	other.ah_signature[10] = other.ah_signature[10] == 'A' ? 'B' : 'A';
	ck_assert_int_eq(check(METHOD, PATH, &other, NOW), AUTH_BAD_SIGNATURE);

	ck_assert_uint_eq(auth_verifier_count(v), 0);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_OK);
}
END_TEST

START_TEST(test_stale)
{
	struct auth_headers h;

	/* The caller's clock is behind. */
	sign(&k1, METHOD, PATH, NOW - SKEW - 1, &h);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_STALE);
	assert_err_has("timestamp 1699999699 is 301 s behind the relay's clock");
	assert_err_has("300 s");
	assert_err_has("check the clock of the calling machine");

	/* The caller's clock is ahead. */
	sign(&k1, METHOD, PATH, NOW + SKEW + 1, &h);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_STALE);
	assert_err_has("301 s ahead of");

	sign(&k1, METHOD, PATH, NOW - 4000, &h);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_STALE);
	assert_err_has("4000 s");
	sign(&k1, METHOD, PATH, 0, &h);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_STALE);
	ck_assert_uint_eq(auth_verifier_count(v), 0);

	/* The edges of the window are inside it. */
	sign(&k1, METHOD, PATH, NOW - SKEW, &h);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_OK);
	sign(&k1, METHOD, PATH, NOW + SKEW, &h);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_OK);
}
END_TEST

START_TEST(test_stale_with_huge_now)
{
	struct auth_headers h;

	sign(&k1, METHOD, PATH, NOW, &h);
	ck_assert_int_eq(check(METHOD, PATH, &h, (time_t)INT64_MAX), AUTH_STALE);
	ck_assert_int_eq(check(METHOD, PATH, &h, (time_t)INT64_MIN), AUTH_STALE);
}
END_TEST

START_TEST(test_replay)
{
	struct auth_headers h, other;
	char text[KEY_PUBLIC_TEXT_MAX];

	sign(&k1, METHOD, PATH, NOW, &h);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_OK);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_REPLAY);
	key_public_text(k1.k_pub, text);
	assert_err_has(h.ah_nonce);
	assert_err_has(text);
	assert_err_has("replayed");

	/* Still refused at the last second its timestamp is acceptable. */
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW + SKEW), AUTH_REPLAY);
	/* After that the timestamp itself is too old. */
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW + SKEW + 1), AUTH_STALE);
	ck_assert_uint_eq(auth_verifier_count(v), 0);

	/* The same nonce under another key is another request. */
	sign(&k1, METHOD, PATH, NOW + 1000, &h);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW + 1000), AUTH_OK);
	sign(&k2, METHOD, PATH, NOW + 1000, &other);
	strcpy(other.ah_nonce, h.ah_nonce);
	/* (re-signed below with that nonce: build it by hand) */
	{
		uint8_t sig[64];
		char msg[256];
		int n;

		n = snprintf(msg, sizeof(msg), "postern-v1\nPOST\n%s\n%s\n%s",
		    PATH, other.ah_timestamp, other.ah_nonce);
		crypto_sign_detached(sig, NULL, (uint8_t *)msg, n, k2.k_sec);
		sodium_bin2base64(other.ah_signature,
		    sizeof(other.ah_signature), sig, sizeof(sig),
		    sodium_base64_VARIANT_ORIGINAL);
	}
	ck_assert_int_eq(check(METHOD, PATH, &other, NOW + 1000), AUTH_OK);
	ck_assert_int_eq(check(METHOD, PATH, &other, NOW + 1000), AUTH_REPLAY);
}
END_TEST

START_TEST(test_replay_of_future_request)
{
	struct auth_headers h;

	/* A request from a clock that runs ahead stays remembered until its
	 * own timestamp leaves the window, not the relay's now. */
	sign(&k1, METHOD, PATH, NOW + SKEW, &h);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_OK);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW + SKEW), AUTH_REPLAY);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW + 2 * SKEW), AUTH_REPLAY);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW + 2 * SKEW + 1),
	    AUTH_STALE);
}
END_TEST

START_TEST(test_store_full_then_expiry)
{
	struct auth_headers h[4], late;
	int i;

	auth_verifier_free(v);
	v = auth_verifier_new(SKEW, 3);
	ck_assert_ptr_nonnull(v);
	for (i = 0; i < 4; i++)
		sign(&k1, METHOD, PATH, NOW + i, &h[i]);
	for (i = 0; i < 3; i++)
		ck_assert_int_eq(check(METHOD, PATH, &h[i], NOW + i), AUTH_OK);
	ck_assert_int_eq(check(METHOD, PATH, &h[3], NOW + 3), AUTH_BUSY);
	assert_err_has("nonce store is full");
	assert_err_has("retry");
	ck_assert_uint_eq(auth_verifier_count(v), 3);
	/* Replays are still told apart from the store being full. */
	ck_assert_int_eq(check(METHOD, PATH, &h[0], NOW + 3), AUTH_REPLAY);

	/* At NOW + SKEW the three are still live. */
	sign(&k1, METHOD, PATH, NOW + SKEW, &late);
	ck_assert_int_eq(check(METHOD, PATH, &late, NOW + SKEW), AUTH_BUSY);
	/* One second later h[0] has expired and frees its room. */
	ck_assert_int_eq(check(METHOD, PATH, &late, NOW + SKEW + 1), AUTH_OK);
	ck_assert_uint_eq(auth_verifier_count(v), 3);
	ck_assert_int_eq(check(METHOD, PATH, &h[3], NOW + SKEW + 1), AUTH_BUSY);
	/* h[3] was refused, not remembered: once there is room it passes. */
	ck_assert_int_eq(check(METHOD, PATH, &h[3], NOW + SKEW + 2), AUTH_OK);
	ck_assert_int_eq(check(METHOD, PATH, &h[3], NOW + SKEW + 2), AUTH_REPLAY);
	/* Long after, everything has gone. */
	sign(&k1, METHOD, PATH, NOW + 10 * SKEW, &late);
	ck_assert_int_eq(check(METHOD, PATH, &late, NOW + 10 * SKEW), AUTH_OK);
	ck_assert_uint_eq(auth_verifier_count(v), 1);
}
END_TEST

START_TEST(test_garbage_does_not_fill_store)
{
	struct auth_headers h, bad;
	int i;

	auth_verifier_free(v);
	v = auth_verifier_new(SKEW, 1);
	ck_assert_ptr_nonnull(v);
	for (i = 0; i < 20; i++) {
		sign(&k1, METHOD, PATH, NOW, &bad);
		bad.ah_signature[5] = bad.ah_signature[5] == 'A' ? 'B' : 'A';
		ck_assert_int_eq(check(METHOD, PATH, &bad, NOW),
		    AUTH_BAD_SIGNATURE);
	}
	sign(&k1, METHOD, PATH, NOW, &h);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_OK);
}
END_TEST

static int
only_k1(void *arg, const uint8_t pub[KEY_PUBLIC_BYTES])
{
	(*(int *)arg)++;
	return memcmp(pub, k1.k_pub, KEY_PUBLIC_BYTES) == 0;
}

START_TEST(test_unknown_key)
{
	struct auth_headers h;
	char text[KEY_PUBLIC_TEXT_MAX];
	int calls = 0, i;

	auth_verifier_free(v);
	v = auth_verifier_new(SKEW, 1);
	ck_assert_ptr_nonnull(v);
	auth_verifier_set_key_check(v, only_k1, &calls);
	/* Valid signatures by a key nobody listed cannot fill the store. */
	for (i = 0; i < 5; i++) {
		sign(&k2, METHOD, PATH, NOW, &h);
		ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_UNKNOWN_KEY);
	}
	key_public_text(k2.k_pub, text);
	assert_err_has(text);
	assert_err_has("not in the relay's config");
	ck_assert_int_eq(calls, 5);
	ck_assert_uint_eq(auth_verifier_count(v), 0);
	sign(&k1, METHOD, PATH, NOW, &h);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_OK);
}
END_TEST

START_TEST(test_clock_steps)
{
	struct auth_headers h, g, f;

	/* The relay's clock steps back less than the window: fresh requests
	 * pass, remembered nonces stay remembered. */
	sign(&k1, METHOD, PATH, NOW, &h);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_OK);
	sign(&k1, METHOD, PATH, NOW - 100, &g);
	ck_assert_int_eq(check(METHOD, PATH, &g, NOW - 100), AUTH_OK);
	ck_assert_int_eq(check(METHOD, PATH, &g, NOW - 100), AUTH_REPLAY);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW - 100), AUTH_REPLAY);
	ck_assert_uint_eq(auth_verifier_count(v), 2);

	/* Time passes, h and g are forgotten, then the clock steps back an
	 * hour: h would look fresh again, but must not pass. */
	sign(&k1, METHOD, PATH, NOW + 3600, &f);
	ck_assert_int_eq(check(METHOD, PATH, &f, NOW + 3600), AUTH_OK);
	ck_assert_uint_eq(auth_verifier_count(v), 1);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_STALE);
	assert_err_has("clock stepped back 3600 s");
	sign(&k1, METHOD, PATH, NOW, &g);
	ck_assert_int_eq(check(METHOD, PATH, &g, NOW), AUTH_STALE);
	/* Within max_skew of the latest time seen it works again. */
	sign(&k1, METHOD, PATH, NOW + 3600 - SKEW, &g);
	ck_assert_int_eq(check(METHOD, PATH, &g, NOW + 3600 - SKEW), AUTH_OK);

	/* A jump far ahead releases everything at once. */
	sign(&k1, METHOD, PATH, NOW + 86400 * 30, &g);
	ck_assert_int_eq(check(METHOD, PATH, &g, NOW + 86400 * 30), AUTH_OK);
	ck_assert_uint_eq(auth_verifier_count(v), 1);
}
END_TEST

START_TEST(test_zero_skew)
{
	struct auth_headers h;

	auth_verifier_free(v);
	v = auth_verifier_new(0, 10);
	ck_assert_ptr_nonnull(v);
	sign(&k1, METHOD, PATH, NOW, &h);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW - 1), AUTH_STALE);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_OK);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW), AUTH_REPLAY);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW + 1), AUTH_STALE);
	ck_assert_uint_eq(auth_verifier_count(v), 0);
	sign(&k1, METHOD, PATH, NOW + 1, &h);
	ck_assert_int_eq(check(METHOD, PATH, &h, NOW + 1), AUTH_OK);
	ck_assert_uint_eq(auth_verifier_count(v), 1);
}
END_TEST

START_TEST(test_verifier_limits)
{
	struct auth_verifier *w;

	ck_assert_ptr_null(auth_verifier_new(SKEW, 0));
	ck_assert_ptr_null(auth_verifier_new(AUTH_MAX_SKEW_LIMIT + 1, 10));
	ck_assert_ptr_null(auth_verifier_new(SKEW, AUTH_MAX_NONCES_LIMIT + 1));
	w = auth_verifier_new(AUTH_MAX_SKEW_LIMIT, AUTH_MAX_NONCES_LIMIT);
	ck_assert_ptr_nonnull(w);
	auth_verifier_free(w);
	auth_verifier_free(NULL);
}
END_TEST

/* The store against a plain model: a list of (request, expiry) pairs.
 * Small table, short window, many keys and times, so that probe runs
 * wrap, collide and are deleted from in every order. */
#define MODEL_REQS   400
#define MODEL_STEPS  20000
#define MODEL_MAX    20
#define MODEL_SKEW   5

START_TEST(test_store_matches_model)
{
	static struct auth_headers req[MODEL_REQS];
	static int64_t ts[MODEL_REQS], live_until[MODEL_REQS];
	struct key keys[4];
	enum auth_result want, got;
	int64_t now = NOW;
	int i, step, live, r;
	uint32_t seed = 12345;
	int seen[AUTH_UNKNOWN_KEY + 1] = { 0 };

	auth_verifier_free(v);
	v = auth_verifier_new(MODEL_SKEW, MODEL_MAX);
	ck_assert_ptr_nonnull(v);
	for (i = 0; i < 4; i++)
		ck_assert_int_eq(key_generate(&keys[i], err, sizeof(err)), 0);
	/* Four requests a second over the run, with jitter so that expiry
	 * order is not arrival order; about 44 are fresh at any time, more
	 * than the store holds. */
	for (i = 0; i < MODEL_REQS; i++) {
		ts[i] = NOW + (int64_t)i * (MODEL_STEPS / 200) / MODEL_REQS +
		    (i % 7) - 3;
		sign(&keys[i % 4], METHOD, PATH, ts[i], &req[i]);
		live_until[i] = -1;
	}
	for (step = 0; step < MODEL_STEPS; step++) {
		seed = seed * 1103515245 + 12345;
		if ((seed >> 16) % 200 == 0)
			now++;
		seed = seed * 1103515245 + 12345;
		r = (int)((seed >> 8) % MODEL_REQS);

		live = 0;
		for (i = 0; i < MODEL_REQS; i++)
			if (live_until[i] >= now)
				live++;
		if (ts[r] - now > MODEL_SKEW || now - ts[r] > MODEL_SKEW)
			want = AUTH_STALE;
		else if (live_until[r] >= now)
			want = AUTH_REPLAY;
		else if (live >= MODEL_MAX)
			want = AUTH_BUSY;
		else {
			want = AUTH_OK;
			live_until[r] = ts[r] + MODEL_SKEW;
		}
		got = check(METHOD, PATH, &req[r], now);
		ck_assert_msg(got == want, "step %d now %lld req %d ts %lld: "
		    "got %d, want %d (%s)", step, (long long)now, r,
		    (long long)ts[r], got, want, err);
		seen[got]++;
		ck_assert_uint_eq(auth_verifier_count(v), live +
		    (got == AUTH_OK));
	}
	for (i = 0; i < 4; i++)
		key_wipe(&keys[i]);
	/* Every outcome happened. */
	ck_assert_int_gt(seen[AUTH_OK], 100);
	ck_assert_int_gt(seen[AUTH_REPLAY], 100);
	ck_assert_int_gt(seen[AUTH_BUSY], 100);
	ck_assert_int_gt(seen[AUTH_STALE], 100);
}
END_TEST

static Suite *
auth_suite(void)
{
	Suite *s = suite_create("auth");
	TCase *tc = tcase_create("auth");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_message_layout);
	tcase_add_test(tc, test_nonces_differ);
	tcase_add_test(tc, test_sign_refuses_bad_request);
	tcase_add_loop_test(tc, test_missing_header, 0, 4);
	tcase_add_loop_test(tc, test_malformed_header, 0,
	    sizeof(bad_headers) / sizeof(bad_headers[0]));
	tcase_add_test(tc, test_malformed_request_line);
	tcase_add_test(tc, test_wrong_key);
	tcase_add_test(tc, test_altered_request);
	tcase_add_test(tc, test_stale);
	tcase_add_test(tc, test_stale_with_huge_now);
	tcase_add_test(tc, test_replay);
	tcase_add_test(tc, test_replay_of_future_request);
	tcase_add_test(tc, test_store_full_then_expiry);
	tcase_add_test(tc, test_garbage_does_not_fill_store);
	tcase_add_test(tc, test_unknown_key);
	tcase_add_test(tc, test_clock_steps);
	tcase_add_test(tc, test_zero_skew);
	tcase_add_test(tc, test_verifier_limits);
	tcase_add_test(tc, test_store_matches_model);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(auth_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
