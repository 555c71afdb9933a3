/* Fuzzes the request verifier, the replay store and the key file parser.
 * The first byte picks what the rest means:
 *   0: raw headers, "\n"-separated: method, path, key, timestamp, nonce,
 *      signature; then verified
 *   1: sign a fresh request (method, path from the input; timestamp and
 *      relay clock offsets from 4 bytes) and verify it: must pass unless
 *      stale or the store is full
 *   2: replay the last signed request at a clock from the input: never OK
 *      once it has passed
 *   3: the rest is a key file
 * The store is kept across inputs (small, short window) so clock steps,
 * expiry and fullness all happen. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth.h"
#include "key.h"

#define FUZZ_NOW   1700000000
#define FUZZ_SKEW  4

static struct auth_verifier *fz_v;
static struct key fz_key;
static struct auth_headers fz_last;
static char fz_last_method[AUTH_METHOD_MAX + 1], fz_last_path[AUTH_PATH_MAX + 1];
static int fz_have_last, fz_last_ok;
static int64_t fz_clock = FUZZ_NOW;
static int64_t fz_high = -1;   /* the latest clock the verifier has seen */

static void
fuzz_init(void)
{
	char err[256];

	if (fz_v != NULL)
		return;
	fz_v = auth_verifier_new(FUZZ_SKEW, 8);
	if (fz_v == NULL || key_generate(&fz_key, err, sizeof(err)) == -1)
		abort();
}

/* Called with each auth_verify: what the verifier has seen. */
static void
fuzz_seen(void)
{
	if (fz_clock > fz_high)
		fz_high = fz_clock;
}

/* Splits s (NUL-terminated, writable) at '\n' into up to n fields. */
static void
fuzz_fields(char *s, char **f, int n)
{
	int i;

	for (i = 0; i < n; i++) {
		f[i] = s;
		if (s == NULL)
			continue;
		s = strchr(s, '\n');
		if (s != NULL)
			*s++ = '\0';
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char err[512], *buf, *f[6];
	struct auth_headers h;
	struct key k;
	enum auth_result r;
	int8_t dts, dnow;

	fuzz_init();
	if (size < 1)
		return 0;
	if ((buf = malloc(size)) == NULL)
		return 0;
	memcpy(buf, data + 1, size - 1);
	buf[size - 1] = '\0';

	switch (data[0] % 4) {
	case 0:
		fuzz_fields(buf, f, 6);
		fuzz_seen();
		r = auth_verify(fz_v, f[0], f[1], f[2], f[3], f[4], f[5],
		    fz_clock, NULL, err, sizeof(err));
		/* Nobody but fz_key's holder can make a valid signature. */
		if (r == AUTH_OK || r == AUTH_REPLAY || r == AUTH_BUSY)
			abort();
		break;
	case 1:
		if (size < 3)
			break;
		dts = (int8_t)data[1] % 8;
		dnow = (int8_t)data[2] % 8;
		fz_clock += dnow;
		fuzz_fields(buf + 2, f, 2);
		if (auth_sign(&fz_key, f[0], f[1] ? f[1] : "/", fz_clock + dts,
		    &h, err, sizeof(err)) == -1)
			break;
		fuzz_seen();
		r = auth_verify(fz_v, f[0], f[1] ? f[1] : "/", h.ah_key,
		    h.ah_timestamp, h.ah_nonce, h.ah_signature, fz_clock, NULL,
		    err, sizeof(err));
		/* Stale: outside the window, or (the clock having stepped
		 * back) older than the window around the latest time seen. */
		if (dts > FUZZ_SKEW || dts < -FUZZ_SKEW ||
		    fz_clock + dts + FUZZ_SKEW < fz_high) {
			if (r != AUTH_STALE)
				abort();
		} else if (r != AUTH_OK && r != AUTH_BUSY)
			abort();
		fz_last = h;
		snprintf(fz_last_method, sizeof(fz_last_method), "%s", f[0]);
		snprintf(fz_last_path, sizeof(fz_last_path), "%s",
		    f[1] ? f[1] : "/");
		fz_have_last = 1;
		fz_last_ok = r == AUTH_OK;
		break;
	case 2:
		if (!fz_have_last || size < 2)
			break;
		fz_clock += (int8_t)data[1] % 8;
		fuzz_seen();
		r = auth_verify(fz_v, fz_last_method, fz_last_path, fz_last.ah_key,
		    fz_last.ah_timestamp, fz_last.ah_nonce, fz_last.ah_signature,
		    fz_clock, NULL, err, sizeof(err));
		if (r == AUTH_OK && fz_last_ok)
			abort();
		if (r == AUTH_OK)
			fz_last_ok = 1;
		break;
	case 3:
		if (key_parse(&k, buf, size - 1, "fuzz.key", err,
		    sizeof(err)) == 0)
			key_wipe(&k);
		break;
	}
	if (auth_verifier_count(fz_v) > 8)
		abort();
	free(buf);
	return 0;
}
