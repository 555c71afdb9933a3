/* Request signing and verification, with a bounded replay store.
 *
 * The replay store remembers a 128-bit keyed hash (SipHash-2-4, random key
 * per verifier) of public key || nonce for every request that verified,
 * until its timestamp leaves the accepted window: expiry = timestamp +
 * max_skew.  A replay after that is stale, so nothing older is needed.
 *
 *   v_ent     fixed array of max_nonces entries (free list + high water)
 *   v_slot    open-addressed hash table (linear probing, load <= 1/2) of
 *             entry indices; deletion shifts back, so no tombstones
 *   v_bucket  timing wheel: one list per expiry second, 2 * max_skew + 2
 *             of them, covering every expiry a fresh request can have
 *
 * A check costs one hash, a short probe and, when the clock has moved, the
 * release of the entries that expired in between: O(1) on average, with no
 * allocation.  Entries expire exactly on time, so a full store means
 * max_nonces requests really were accepted within the window.  If the
 * clock steps back, requests older than the latest time seen minus
 * max_skew stay refused (their nonces may be forgotten already). */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "errbuf.h"
#include "auth.h"

#define AUTH_PREFIX          "postern-v1\n"
#define AUTH_NONCE_BYTES     16
#define AUTH_NONCE_TEXT_LEN  22   /* URL-safe base64 of 16 bytes, no padding */
#define AUTH_SIG_TEXT_LEN    88   /* base64 of 64 bytes, padded */
#define AUTH_TS_DIGITS_MAX   18   /* fits int64 with room to add max_skew */
#define AUTH_TAG_BYTES       crypto_shorthash_siphashx24_BYTES
#define AUTH_MESSAGE_MAX     (sizeof(AUTH_PREFIX) + AUTH_METHOD_MAX + \
                              AUTH_PATH_MAX + AUTH_TS_TEXT_MAX + \
                              AUTH_NONCE_TEXT_MAX + 4)

struct auth_entry {
	uint8_t  ae_tag[AUTH_TAG_BYTES];
	uint32_t ae_next;    /* next in its bucket or in the free list, +1 */
};

struct auth_verifier {
	unsigned           v_skew;
	size_t             v_max;
	size_t             v_count;
	struct auth_entry *v_ent;
	uint32_t           v_high;    /* entries ever handed out */
	uint32_t           v_free;    /* free list head, +1; 0 = empty */
	uint32_t          *v_slot;    /* entry index + 1; 0 = empty */
	size_t             v_mask;
	uint32_t          *v_bucket;  /* list head + 1 per expiry second */
	size_t             v_nbucket;
	int64_t            v_swept;   /* entries expiring up to here are gone */
	auth_key_known_fn  v_known;
	void              *v_known_arg;
	uint8_t            v_hkey[crypto_shorthash_siphashx24_KEYBYTES];
};

/* Fields are joined with '\n', so none may contain one (or any other
 * control byte): then every (method, path) has exactly one message. */
static int
auth_token_ok(const char *s, size_t max, int want_slash)
{
	size_t i;

	if (s == NULL || s[0] == '\0' || (want_slash && s[0] != '/'))
		return 0;
	for (i = 0; s[i] != '\0'; i++)
		if (i >= max || s[i] <= 0x20 || s[i] >= 0x7f)
			return 0;
	return 1;
}

static int
auth_request_ok(const char *method, const char *path, char *err, size_t errlen)
{
	if (!auth_token_ok(method, AUTH_METHOD_MAX, 0)) {
		errbuf_set(err, errlen, "request method must be 1 to %d printable "
		    "characters", AUTH_METHOD_MAX);
		return 0;
	}
	if (!auth_token_ok(path, AUTH_PATH_MAX, 1)) {
		errbuf_set(err, errlen, "request path must start with '/' and be "
		    "at most %d printable characters without spaces",
		    AUTH_PATH_MAX);
		return 0;
	}
	return 1;
}

static size_t
auth_message(char *buf, const char *method, const char *path,
    const char *timestamp, const char *nonce)
{
	const char *part[] = { AUTH_PREFIX, method, "\n", path, "\n",
	    timestamp, "\n", nonce };
	size_t i, n, off = 0;

	/* Lengths are checked by the callers; this is the only layout. */
	for (i = 0; i < sizeof(part) / sizeof(part[0]); i++) {
		n = strlen(part[i]);
		memcpy(buf + off, part[i], n);
		off += n;
	}
	return off;
}

int
auth_sign(const struct key *k, const char *method, const char *path,
    time_t now, struct auth_headers *out, char *err, size_t errlen)
{
	uint8_t nonce[AUTH_NONCE_BYTES], sig[crypto_sign_BYTES];
	char msg[AUTH_MESSAGE_MAX];
	size_t len;

	if (!auth_request_ok(method, path, err, errlen))
		return -1;
	if (now < 0) {
		errbuf_set(err, errlen, "the system clock is before 1970: set it");
		return -1;
	}
	if (sodium_init() < 0) {
		errbuf_set(err, errlen, "cannot initialise libsodium");
		return -1;
	}
	key_public_text(k->k_pub, out->ah_key);
	snprintf(out->ah_timestamp, sizeof(out->ah_timestamp), "%lld",
	    (long long)now);
	randombytes_buf(nonce, sizeof(nonce));
	sodium_bin2base64(out->ah_nonce, sizeof(out->ah_nonce), nonce,
	    sizeof(nonce), sodium_base64_VARIANT_URLSAFE_NO_PADDING);
	len = auth_message(msg, method, path, out->ah_timestamp, out->ah_nonce);
	crypto_sign_detached(sig, NULL, (const uint8_t *)msg, len, k->k_sec);
	sodium_bin2base64(out->ah_signature, sizeof(out->ah_signature), sig,
	    sizeof(sig), sodium_base64_VARIANT_ORIGINAL);
	return 0;
}

struct auth_verifier *
auth_verifier_new(unsigned max_skew_seconds, size_t max_nonces)
{
	struct auth_verifier *v;
	size_t cap;

	if (max_skew_seconds > AUTH_MAX_SKEW_LIMIT || max_nonces == 0 ||
	    max_nonces > AUTH_MAX_NONCES_LIMIT)
		return NULL;
	if (sodium_init() < 0)
		return NULL;
	for (cap = 16; cap < 2 * max_nonces; cap *= 2)
		;
	if ((v = calloc(1, sizeof(*v))) == NULL)
		return NULL;
	v->v_skew = max_skew_seconds;
	v->v_max = max_nonces;
	v->v_mask = cap - 1;
	v->v_nbucket = 2 * (size_t)max_skew_seconds + 2;
	v->v_swept = -1;
	/* calloc: pages are only touched as the store fills. */
	v->v_ent = calloc(max_nonces, sizeof(*v->v_ent));
	v->v_slot = calloc(cap, sizeof(*v->v_slot));
	v->v_bucket = calloc(v->v_nbucket, sizeof(*v->v_bucket));
	if (v->v_ent == NULL || v->v_slot == NULL || v->v_bucket == NULL) {
		auth_verifier_free(v);
		return NULL;
	}
	randombytes_buf(v->v_hkey, sizeof(v->v_hkey));
	return v;
}

void
auth_verifier_free(struct auth_verifier *v)
{
	if (v == NULL)
		return;
	free(v->v_ent);
	free(v->v_slot);
	free(v->v_bucket);
	sodium_memzero(v, sizeof(*v));
	free(v);
}

size_t
auth_verifier_count(const struct auth_verifier *v)
{
	return v->v_count;
}

void
auth_verifier_set_key_check(struct auth_verifier *v, auth_key_known_fn fn,
    void *arg)
{
	v->v_known = fn;
	v->v_known_arg = arg;
}

static size_t
auth_home(const struct auth_verifier *v, const uint8_t tag[AUTH_TAG_BYTES])
{
	uint64_t h;

	memcpy(&h, tag, sizeof(h));
	return (size_t)h & v->v_mask;
}

/* The slot holding tag, or the empty slot where it would go. */
static size_t
auth_slot_find(const struct auth_verifier *v, const uint8_t tag[AUTH_TAG_BYTES],
    int *found)
{
	size_t i = auth_home(v, tag);

	while (v->v_slot[i] != 0) {
		if (memcmp(v->v_ent[v->v_slot[i] - 1].ae_tag, tag,
		    AUTH_TAG_BYTES) == 0) {
			*found = 1;
			return i;
		}
		i = (i + 1) & v->v_mask;
	}
	*found = 0;
	return i;
}

/* Backward-shift deletion: move later members of the probe run into the
 * hole when their home slot allows, so lookups never need tombstones. */
static void
auth_slot_delete(struct auth_verifier *v, size_t i)
{
	size_t j = i, home;

	for (;;) {
		v->v_slot[i] = 0;
		for (;;) {
			j = (j + 1) & v->v_mask;
			if (v->v_slot[j] == 0)
				return;
			home = auth_home(v, v->v_ent[v->v_slot[j] - 1].ae_tag);
			/* Stay if home lies cyclically in (i, j]. */
			if (i <= j ? (i < home && home <= j) :
			    (i < home || home <= j))
				continue;
			break;
		}
		v->v_slot[i] = v->v_slot[j];
		i = j;
	}
}

static size_t
auth_bucket(const struct auth_verifier *v, int64_t second)
{
	int64_t n = (int64_t)v->v_nbucket, b = second % n;

	return (size_t)(b < 0 ? b + n : b);
}

static void
auth_bucket_release(struct auth_verifier *v, size_t b)
{
	uint32_t e, next;
	size_t slot;
	int found;

	for (e = v->v_bucket[b]; e != 0; e = next) {
		next = v->v_ent[e - 1].ae_next;
		slot = auth_slot_find(v, v->v_ent[e - 1].ae_tag, &found);
		if (found)
			auth_slot_delete(v, slot);
		v->v_ent[e - 1].ae_next = v->v_free;
		v->v_free = e;
		v->v_count--;
	}
	v->v_bucket[b] = 0;
}

/* Releases every entry that expired before now.  A clock that steps back
 * releases nothing, and v_swept keeps the latest time seen. */
static void
auth_sweep(struct auth_verifier *v, int64_t now)
{
	int64_t s, from, to = now - 1;

	if (to <= v->v_swept)
		return;
	from = v->v_swept + 1;
	if (to - from >= (int64_t)v->v_nbucket)
		from = to - (int64_t)v->v_nbucket + 1;
	for (s = from; s <= to; s++)
		auth_bucket_release(v, auth_bucket(v, s));
	v->v_swept = to;
}

static enum auth_result
auth_remember(struct auth_verifier *v, const uint8_t pub[KEY_PUBLIC_BYTES],
    const uint8_t nonce[AUTH_NONCE_BYTES], int64_t ts)
{
	uint8_t in[KEY_PUBLIC_BYTES + AUTH_NONCE_BYTES], tag[AUTH_TAG_BYTES];
	int64_t expiry;
	size_t slot, b;
	uint32_t e;
	int found;

	memcpy(in, pub, KEY_PUBLIC_BYTES);
	memcpy(in + KEY_PUBLIC_BYTES, nonce, AUTH_NONCE_BYTES);
	crypto_shorthash_siphashx24(tag, in, sizeof(in), v->v_hkey);
	slot = auth_slot_find(v, tag, &found);
	if (found)
		return AUTH_REPLAY;
	if (v->v_count >= v->v_max)
		return AUTH_BUSY;

	if (v->v_free != 0) {
		e = v->v_free;
		v->v_free = v->v_ent[e - 1].ae_next;
	} else
		e = ++v->v_high;
	memcpy(v->v_ent[e - 1].ae_tag, tag, AUTH_TAG_BYTES);
	/* auth_verify made sure that v_swept < expiry <= v_swept + 2 * skew
	 * + 1: inside the wheel, which has 2 * skew + 2 buckets. */
	expiry = ts + v->v_skew;
	b = auth_bucket(v, expiry);
	v->v_ent[e - 1].ae_next = v->v_bucket[b];
	v->v_bucket[b] = e;
	v->v_slot[slot] = e;
	v->v_count++;
	return AUTH_OK;
}

static int
auth_parse_ts(const char *s, int64_t *out)
{
	int64_t t = 0;
	size_t i;

	/* Canonical decimal only: no sign, space or leading zero. */
	if (s[0] == '\0' || (s[0] == '0' && s[1] != '\0'))
		return -1;
	for (i = 0; s[i] != '\0'; i++) {
		if (i >= AUTH_TS_DIGITS_MAX || s[i] < '0' || s[i] > '9')
			return -1;
		t = t * 10 + (s[i] - '0');
	}
	*out = t;
	return 0;
}

enum auth_result
auth_verify(struct auth_verifier *v, const char *method, const char *path,
    const char *key, const char *timestamp, const char *nonce,
    const char *signature, time_t now, uint8_t pub[KEY_PUBLIC_BYTES],
    char *err, size_t errlen)
{
	uint8_t pk[KEY_PUBLIC_BYTES], nb[AUTH_NONCE_BYTES];
	uint8_t sig[crypto_sign_BYTES];
	char msg[AUTH_MESSAGE_MAX], q[ERRBUF_QUOTE_MAX + 4];
	char keytext[KEY_PUBLIC_TEXT_MAX], kerr[256];
	const char *name = NULL;
	int64_t ts, t_now, diff;
	enum auth_result r;
	size_t n, len;

	/* Clamp so that no subtraction below can overflow; any real clock
	 * is far inside these bounds. */
	t_now = (int64_t)now;
	if (t_now > ((int64_t)1 << 62))
		t_now = (int64_t)1 << 62;
	if (t_now < -((int64_t)1 << 62))
		t_now = -((int64_t)1 << 62);
	auth_sweep(v, t_now);

	if (key == NULL || key[0] == '\0')
		name = AUTH_H_KEY;
	else if (timestamp == NULL || timestamp[0] == '\0')
		name = AUTH_H_TIMESTAMP;
	else if (nonce == NULL || nonce[0] == '\0')
		name = AUTH_H_NONCE;
	else if (signature == NULL || signature[0] == '\0')
		name = AUTH_H_SIGNATURE;
	if (name != NULL) {
		errbuf_set(err, errlen, "request has no %s header: every call "
		    "must be signed (see docs/keys.md)", name);
		return AUTH_MISSING;
	}

	if (key_public_parse(key, pk, kerr, sizeof(kerr)) == -1) {
		errbuf_set(err, errlen, "%s: %s", AUTH_H_KEY, kerr);
		return AUTH_MALFORMED;
	}
	if (pub != NULL)
		memcpy(pub, pk, KEY_PUBLIC_BYTES);

	if (auth_parse_ts(timestamp, &ts) == -1) {
		errbuf_quote(timestamp, strnlen(timestamp, ERRBUF_QUOTE_MAX + 1), q);
		errbuf_set(err, errlen, "%s '%s' is not unix seconds in decimal "
		    "digits", AUTH_H_TIMESTAMP, q);
		return AUTH_MALFORMED;
	}
	diff = ts - t_now;
	if (diff > (int64_t)v->v_skew || -diff > (int64_t)v->v_skew) {
		errbuf_set(err, errlen, "timestamp %lld is %lld s %s the relay's "
		    "clock (allowed \xc2\xb1%u s): check the clock of the "
		    "calling machine", (long long)ts,
		    (long long)(diff < 0 ? -diff : diff),
		    diff < 0 ? "behind" : "ahead of", v->v_skew);
		return AUTH_STALE;
	}
	/* After the relay's clock steps back, a request can look fresh
	 * although its nonce was already forgotten: refuse it, or it could
	 * be replayed. */
	if (ts + (int64_t)v->v_skew <= v->v_swept) {
		errbuf_set(err, errlen, "timestamp %lld is more than %u s before "
		    "the latest time the relay has seen (its clock stepped "
		    "back %lld s): check the clocks of the relay and of the "
		    "calling machine", (long long)ts, v->v_skew,
		    (long long)(v->v_swept + 1 - t_now));
		return AUTH_STALE;
	}

	len = strlen(nonce);
	if (len != AUTH_NONCE_TEXT_LEN ||
	    sodium_base642bin(nb, sizeof(nb), nonce, len, NULL, &n, NULL,
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 || n != sizeof(nb)) {
		errbuf_quote(nonce, strnlen(nonce, ERRBUF_QUOTE_MAX + 1), q);
		errbuf_set(err, errlen, "%s '%s' is not 22 characters of URL-safe "
		    "base64 without padding (16 random bytes)", AUTH_H_NONCE, q);
		return AUTH_MALFORMED;
	}

	len = strlen(signature);
	if (len != AUTH_SIG_TEXT_LEN ||
	    sodium_base642bin(sig, sizeof(sig), signature, len, NULL, &n, NULL,
	    sodium_base64_VARIANT_ORIGINAL) != 0 || n != sizeof(sig)) {
		errbuf_set(err, errlen, "%s is not the 88-character base64 of a "
		    "64-byte Ed25519 signature (%zu characters)",
		    AUTH_H_SIGNATURE, len);
		return AUTH_MALFORMED;
	}

	if (!auth_request_ok(method, path, kerr, sizeof(kerr))) {
		errbuf_set(err, errlen, "%s: postern signs no such request", kerr);
		return AUTH_MALFORMED;
	}

	if (v->v_known != NULL && !v->v_known(v->v_known_arg, pk)) {
		key_public_text(pk, keytext);
		errbuf_set(err, errlen, "key %s is not in the relay's config: "
		    "ask the relay's operator to add it", keytext);
		return AUTH_UNKNOWN_KEY;
	}

	len = auth_message(msg, method, path, timestamp, nonce);
	if (crypto_sign_verify_detached(sig, (const uint8_t *)msg, len,
	    pk) != 0) {
		key_public_text(pk, keytext);
		errbuf_set(err, errlen, "signature does not verify for key %s: "
		    "the request was altered or signed with another key",
		    keytext);
		return AUTH_BAD_SIGNATURE;
	}

	r = auth_remember(v, pk, nb, ts);
	if (r == AUTH_REPLAY) {
		key_public_text(pk, keytext);
		errbuf_set(err, errlen, "nonce %s was already used by key %s: "
		    "the request was replayed (every request needs a fresh "
		    "nonce and signature)", nonce, keytext);
	} else if (r == AUTH_BUSY)
		errbuf_set(err, errlen, "the relay's nonce store is full (%zu "
		    "requests signed within \xc2\xb1%u s): retry in a few "
		    "seconds; the operator can raise the limit", v->v_max,
		    v->v_skew);
	return r;
}
