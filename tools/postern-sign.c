/* postern-sign: prints the four signature headers of one relay request,
 * for debugging a relay with curl and for the integration tests.
 *
 *   postern-sign --key FILE --path /v1/s/nas/listen/ssh [--method POST] \
 *                [--timestamp T] [--nonce N]
 *
 * Output, one header per line ("Name: value"), fit for `curl -H @FILE`. */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "auth.h"
#include "key.h"

#define SIGN_PREFIX "postern-v1\n"

static void
sign_usage(FILE *f)
{
	fprintf(f,
	    "usage: postern-sign --key FILE --path PATH [--method METHOD]\n"
	    "                    [--timestamp UNIXSECONDS] [--nonce NONCE]\n"
	    "Prints the Postern-Key, Postern-Timestamp, Postern-Nonce and\n"
	    "Postern-Signature headers for one request, one per line, e.g.\n"
	    "  postern-sign --key laptop.key --path /v1/s/nas/connect/ssh > h.txt\n"
	    "  curl -sS -X POST -H @h.txt http://relay:8080/v1/s/nas/connect/ssh\n"
	    "METHOD defaults to POST (every call but GET /v1/status).\n"
	    "--timestamp and --nonce replace the current time and a random\n"
	    "nonce (to reproduce a stale or replayed request).\n");
}

/* A caller-chosen nonce is signed here rather than by auth_sign, which
 * always draws a fresh one; the signed text is the one auth.h defines. */
static int
sign_with_nonce(const struct key *k, const char *method, const char *path,
    time_t ts, const char *nonce, struct auth_headers *out,
    char *err, size_t errlen)
{
	unsigned char	 sig[crypto_sign_BYTES];
	char		*msg = NULL;
	int		 len;

	memset(out, 0, sizeof(*out));
	if (strlen(nonce) >= sizeof(out->ah_nonce)) {
		snprintf(err, errlen, "--nonce is %zu bytes; at most %zu",
		    strlen(nonce), sizeof(out->ah_nonce) - 1);
		return -1;
	}
	key_public_text(k->k_pub, out->ah_key);
	snprintf(out->ah_timestamp, sizeof(out->ah_timestamp), "%lld",
	    (long long)ts);
	snprintf(out->ah_nonce, sizeof(out->ah_nonce), "%s", nonce);
	len = asprintf(&msg, SIGN_PREFIX "%s\n%s\n%s\n%s", method, path,
	    out->ah_timestamp, out->ah_nonce);
	if (len < 0) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	crypto_sign_detached(sig, NULL, (const unsigned char *)msg,
	    (unsigned long long)len, k->k_sec);
	free(msg);
	sodium_bin2base64(out->ah_signature, sizeof(out->ah_signature), sig,
	    sizeof(sig), sodium_base64_VARIANT_ORIGINAL);
	return 0;
}

static int
sign_parse_time(const char *s, time_t *out)
{
	char		*end;
	long long	 v;

	errno = 0;
	v = strtoll(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0')
		return -1;
	*out = (time_t)v;
	return 0;
}

int
main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "key",	required_argument, NULL, 'k' },
		{ "method",	required_argument, NULL, 'm' },
		{ "path",	required_argument, NULL, 'p' },
		{ "timestamp",	required_argument, NULL, 't' },
		{ "nonce",	required_argument, NULL, 'n' },
		{ "help",	no_argument,	   NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	struct key		 k;
	struct auth_headers	 h;
	const char		*keyfile = NULL, *method = "POST";
	const char		*path = NULL, *nonce = NULL;
	char			 err[256];
	time_t			 ts;
	int			 c, rc;

	ts = time(NULL);
	while ((c = getopt_long(argc, argv, "k:m:p:t:n:h", opts, NULL)) != -1) {
		switch (c) {
		case 'k':
			keyfile = optarg;
			break;
		case 'm':
			method = optarg;
			break;
		case 'p':
			path = optarg;
			break;
		case 't':
			if (sign_parse_time(optarg, &ts) == -1) {
				fprintf(stderr, "postern-sign: --timestamp "
				    "'%s' is not a number of unix seconds\n",
				    optarg);
				return 2;
			}
			break;
		case 'n':
			nonce = optarg;
			break;
		case 'h':
			sign_usage(stdout);
			return 0;
		default:
			sign_usage(stderr);
			return 2;
		}
	}
	if (optind != argc || keyfile == NULL || path == NULL) {
		fprintf(stderr, "postern-sign: --key and --path are required\n");
		sign_usage(stderr);
		return 2;
	}
	if (path[0] != '/' || strchr(path, '?') != NULL) {
		fprintf(stderr, "postern-sign: --path '%s' must be the request "
		    "path as sent, starting with '/' and without a query "
		    "string, e.g. /v1/s/nas/connect/ssh\n", path);
		return 2;
	}
	if (method[0] == '\0') {
		fprintf(stderr, "postern-sign: --method is empty; use POST\n");
		return 2;
	}
	if (sodium_init() < 0) {
		fprintf(stderr, "postern-sign: libsodium failed to start\n");
		return 1;
	}
	if (key_load(&k, keyfile, err, sizeof(err)) == -1) {
		fprintf(stderr, "postern-sign: %s\n", err);
		return 1;
	}
	if (nonce != NULL)
		rc = sign_with_nonce(&k, method, path, ts, nonce, &h, err,
		    sizeof(err));
	else
		rc = auth_sign(&k, method, path, ts, &h, err, sizeof(err));
	key_wipe(&k);
	if (rc == -1) {
		fprintf(stderr, "postern-sign: %s\n", err);
		return 1;
	}
	printf("%s: %s\n%s: %s\n%s: %s\n%s: %s\n",
	    AUTH_H_KEY, h.ah_key, AUTH_H_TIMESTAMP, h.ah_timestamp,
	    AUTH_H_NONCE, h.ah_nonce, AUTH_H_SIGNATURE, h.ah_signature);
	return 0;
}
