/* Request signing.  Every relay call carries four headers:
 *   Postern-Key:       ed25519:BASE64 (the caller's public key)
 *   Postern-Timestamp: unix seconds, decimal
 *   Postern-Nonce:     22 chars, URL-safe base64 of 16 random bytes, no padding
 *   Postern-Signature: standard base64 of the 64-byte Ed25519 signature of
 *       "postern-v1\n" METHOD "\n" PATH "\n" TIMESTAMP "\n" NONCE
 * PATH is the request path exactly as sent (no query string). */
#ifndef POSTERN_AUTH_H
#define POSTERN_AUTH_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include "key.h"

#define AUTH_H_KEY       "Postern-Key"
#define AUTH_H_TIMESTAMP "Postern-Timestamp"
#define AUTH_H_NONCE     "Postern-Nonce"
#define AUTH_H_SIGNATURE "Postern-Signature"

#define AUTH_NONCE_TEXT_MAX 32
#define AUTH_SIG_TEXT_MAX   96
#define AUTH_TS_TEXT_MAX    24
#define AUTH_METHOD_MAX     16    /* longest METHOD signed or verified */
#define AUTH_PATH_MAX       1024  /* longest PATH signed or verified */
#define AUTH_MAX_SKEW_LIMIT 86400 /* auth_verifier_new refuses more */
#define AUTH_MAX_NONCES_LIMIT (1u << 24)

struct auth_headers {
	char ah_key[KEY_PUBLIC_TEXT_MAX];
	char ah_timestamp[AUTH_TS_TEXT_MAX];
	char ah_nonce[AUTH_NONCE_TEXT_MAX];
	char ah_signature[AUTH_SIG_TEXT_MAX];
};

/* Fills *out for one request. Returns 0, or -1 with err filled. */
int auth_sign(const struct key *k, const char *method, const char *path,
              time_t now, struct auth_headers *out, char *err, size_t errlen);

/* Replay protection: remembers (key, nonce) pairs until their timestamp
 * falls out of the accepted window.  Bounded: when full, new requests are
 * refused (never silently accepted). */
struct auth_verifier;

/* NULL when out of memory, or when max_skew_seconds > AUTH_MAX_SKEW_LIMIT
 * or max_nonces is 0 or > AUTH_MAX_NONCES_LIMIT.  Memory is 28 to 36 bytes
 * per nonce plus 8 per second of max_skew, reserved up front.  Not
 * thread-safe: one verifier per thread, or a lock around it. */
struct auth_verifier *auth_verifier_new(unsigned max_skew_seconds, size_t max_nonces);
void auth_verifier_free(struct auth_verifier *v);
/* Nonces held now (entries expire lazily, at the next auth_verify). */
size_t auth_verifier_count(const struct auth_verifier *v);

/* Optional: is this public key one the relay knows?  Returns nonzero if
 * so.  When set, auth_verify asks it before checking the signature and
 * answers AUTH_UNKNOWN_KEY for keys it rejects, so that valid signatures
 * from made-up keys can never fill the nonce store. */
typedef int (*auth_key_known_fn)(void *arg, const uint8_t pub[KEY_PUBLIC_BYTES]);
void auth_verifier_set_key_check(struct auth_verifier *v, auth_key_known_fn fn,
                                 void *arg);

enum auth_result {
	AUTH_OK = 0,
	AUTH_MISSING,      /* a header is absent */
	AUTH_MALFORMED,    /* a header cannot be parsed */
	AUTH_STALE,        /* timestamp outside +-max_skew */
	AUTH_BAD_SIGNATURE,
	AUTH_REPLAY,       /* nonce already seen for this key */
	AUTH_BUSY,         /* nonce store full: try again later (503) */
	AUTH_UNKNOWN_KEY,  /* the key check rejected the key (401) */
};

/* Checks one request.  Header values may be NULL (absent).  On AUTH_OK the
 * caller's public key is in pub (also filled, for logs, on any later
 * failure once the key header has parsed; pub may be NULL).  err says what
 * was wrong for the 401 body.  No allocation. */
enum auth_result auth_verify(struct auth_verifier *v, const char *method,
                             const char *path, const char *key,
                             const char *timestamp, const char *nonce,
                             const char *signature, time_t now,
                             uint8_t pub[KEY_PUBLIC_BYTES],
                             char *err, size_t errlen);

#endif
