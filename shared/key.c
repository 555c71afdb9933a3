/* Ed25519 key files and public key text.  See key.h for the format. */
#include <sys/stat.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "errbuf.h"
#include "key.h"

#define KEY_PUBLIC_PREFIX   "ed25519:"
#define KEY_SECRET_PREFIX   "ed25519-secret:"
#define KEY_PUBLIC_B64_LEN  44   /* 32 bytes, standard base64, padded */
#define KEY_SECRET_B64_LEN  88   /* 64 bytes */

int
key_generate(struct key *k, char *err, size_t errlen)
{
	if (sodium_init() < 0) {
		errbuf_set(err, errlen, "cannot initialise libsodium: no random source?");
		return -1;
	}
	crypto_sign_keypair(k->k_pub, k->k_sec);
	return 0;
}

void
key_wipe(struct key *k)
{
	sodium_memzero(k, sizeof(*k));
}

void
key_public_text(const uint8_t pub[KEY_PUBLIC_BYTES], char out[KEY_PUBLIC_TEXT_MAX])
{
	size_t plen = sizeof(KEY_PUBLIC_PREFIX) - 1;

	memcpy(out, KEY_PUBLIC_PREFIX, plen);
	sodium_bin2base64(out + plen, KEY_PUBLIC_TEXT_MAX - plen, pub,
	    KEY_PUBLIC_BYTES, sodium_base64_VARIANT_ORIGINAL);
}

int
key_public_parse(const char *text, uint8_t pub[KEY_PUBLIC_BYTES], char *err,
    size_t errlen)
{
	size_t plen = sizeof(KEY_PUBLIC_PREFIX) - 1, len, n;
	char q[ERRBUF_QUOTE_MAX + 4];

	if (text == NULL || text[0] == '\0') {
		errbuf_set(err, errlen, "public key is empty: expected "
		    "'ed25519:' and 44 base64 characters, as postern-keygen prints");
		return -1;
	}
	len = strlen(text);
	errbuf_quote(text, len, q);
	if (len < plen || memcmp(text, KEY_PUBLIC_PREFIX, plen) != 0) {
		errbuf_set(err, errlen, "public key '%s' does not start with "
		    "'ed25519:': copy the whole line postern-keygen prints", q);
		return -1;
	}
	if (len - plen != KEY_PUBLIC_B64_LEN ||
	    sodium_base642bin(pub, KEY_PUBLIC_BYTES, text + plen, len - plen,
	    NULL, &n, NULL, sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    n != KEY_PUBLIC_BYTES) {
		errbuf_set(err, errlen, "public key '%s' is not 'ed25519:' and the "
		    "44-character base64 of 32 bytes (%zu characters follow the "
		    "prefix): copy the whole line postern-keygen prints", q,
		    len - plen);
		return -1;
	}
	return 0;
}

/* The public half stored in a libsodium secret key is only a cache: derive
 * it again from the seed so a damaged or doctored file cannot pair one
 * secret with another identity. */
static int
key_check_secret(struct key *k, const char *name, char *err, size_t errlen)
{
	uint8_t seed[crypto_sign_SEEDBYTES];
	uint8_t pk[KEY_PUBLIC_BYTES], sk[KEY_SECRET_BYTES];
	int result = -1;

	if (sodium_init() < 0) {
		errbuf_set(err, errlen, "cannot initialise libsodium");
		return -1;
	}
	crypto_sign_ed25519_sk_to_seed(seed, k->k_sec);
	crypto_sign_seed_keypair(pk, sk, seed);
	if (sodium_memcmp(sk, k->k_sec, KEY_SECRET_BYTES) != 0) {
		errbuf_set(err, errlen, "key file %s is corrupt: its public half "
		    "does not match its secret seed; make a new key with "
		    "postern-keygen", name);
		goto out;
	}
	crypto_sign_ed25519_sk_to_pk(k->k_pub, k->k_sec);
	result = 0;
out:
	sodium_memzero(seed, sizeof(seed));
	sodium_memzero(sk, sizeof(sk));
	return result;
}

int
key_parse(struct key *k, const char *text, size_t len, const char *name,
    char *err, size_t errlen)
{
	size_t slen = sizeof(KEY_SECRET_PREFIX) - 1;
	size_t plen = sizeof(KEY_PUBLIC_PREFIX) - 1;
	const char *p = text, *end = text + len, *nl, *line;
	size_t llen, n;
	unsigned lineno = 0;
	int found = 0;

	sodium_memzero(k, sizeof(*k));
	if (len > KEY_FILE_MAX) {
		errbuf_set(err, errlen, "key file %s is larger than %d bytes: it "
		    "is not a postern key file", name, KEY_FILE_MAX);
		return -1;
	}
	while (p < end) {
		lineno++;
		line = p;
		nl = memchr(p, '\n', end - p);
		llen = (nl ? nl : end) - p;
		p = nl ? nl + 1 : end;
		while (llen > 0 && (line[llen - 1] == '\r' ||
		    line[llen - 1] == ' ' || line[llen - 1] == '\t'))
			llen--;
		if (llen == 0 || line[0] == '#')
			continue;
		if (llen >= slen && memcmp(line, KEY_SECRET_PREFIX, slen) == 0) {
			if (found) {
				errbuf_set(err, errlen, "key file %s, line %u: a "
				    "second secret key; a key file holds one",
				    name, lineno);
				goto fail;
			}
			if (llen - slen != KEY_SECRET_B64_LEN ||
			    sodium_base642bin(k->k_sec, KEY_SECRET_BYTES,
			    line + slen, llen - slen, NULL, &n, NULL,
			    sodium_base64_VARIANT_ORIGINAL) != 0 ||
			    n != KEY_SECRET_BYTES) {
				errbuf_set(err, errlen, "key file %s, line %u: the "
				    "secret key is not the 88-character base64 "
				    "of 64 bytes (%zu characters); the file is "
				    "damaged: make a new key with postern-keygen",
				    name, lineno, llen - slen);
				goto fail;
			}
			found = 1;
			continue;
		}
		if (llen >= plen && memcmp(line, KEY_PUBLIC_PREFIX, plen) == 0) {
			errbuf_set(err, errlen, "key file %s, line %u: this is a "
			    "public key; a key file holds the "
			    "'ed25519-secret:' line postern-keygen writes",
			    name, lineno);
			goto fail;
		}
		errbuf_set(err, errlen, "key file %s, line %u: expected "
		    "'ed25519-secret:' and base64 (or a '#' comment); is this "
		    "a postern key file?", name, lineno);
		goto fail;
	}
	if (!found) {
		errbuf_set(err, errlen, "key file %s has no 'ed25519-secret:' "
		    "line: make a key with postern-keygen -o %s", name, name);
		goto fail;
	}
	if (key_check_secret(k, name, err, errlen) == -1)
		goto fail;
	return 0;
fail:
	sodium_memzero(k, sizeof(*k));
	return -1;
}

int
key_load(struct key *k, const char *path, char *err, size_t errlen)
{
	char buf[KEY_FILE_MAX + 1];
	struct stat st;
	size_t len = 0;
	ssize_t r;
	int fd, result = -1;

	sodium_memzero(k, sizeof(*k));
	/* O_NONBLOCK: opening a FIFO must not wait for a writer. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd == -1) {
		errbuf_set(err, errlen, "cannot open key file %s: %s%s", path,
		    strerror(errno), errno == ENOENT ?
		    " (make one with postern-keygen -o FILE)" : "");
		return -1;
	}
	if (fstat(fd, &st) == -1) {
		errbuf_set(err, errlen, "cannot stat key file %s: %s", path,
		    strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		errbuf_set(err, errlen, "key file %s is not a regular file", path);
		goto out;
	}
	if (st.st_mode & (S_IRWXG | S_IRWXO)) {
		errbuf_set(err, errlen, "key file %s has mode %04o: group or others "
		    "may use it, so it is refused; run: chmod 600 %s (and make "
		    "a new key if others may have read it)", path,
		    (unsigned)(st.st_mode & 07777), path);
		goto out;
	}
	/* One byte more than allowed, to tell "full" from "too large". */
	while (len < sizeof(buf)) {
		r = read(fd, buf + len, sizeof(buf) - len);
		if (r == -1 && errno == EINTR)
			continue;
		if (r == -1) {
			errbuf_set(err, errlen, "cannot read key file %s: %s", path,
			    strerror(errno));
			goto out;
		}
		if (r == 0)
			break;
		len += r;
	}
	result = key_parse(k, buf, len, path, err, errlen);
out:
	sodium_memzero(buf, sizeof(buf));
	close(fd);
	return result;
}

int
key_save(const struct key *k, const char *path, char *err, size_t errlen)
{
	char pub[KEY_PUBLIC_TEXT_MAX];
	char sec[KEY_SECRET_B64_LEN + 1];
	char text[sizeof(pub) + sizeof(sec) + 128];
	size_t len, off = 0;
	ssize_t w;
	int fd, n, result = -1;

	key_public_text(k->k_pub, pub);
	sodium_bin2base64(sec, sizeof(sec), k->k_sec, KEY_SECRET_BYTES,
	    sodium_base64_VARIANT_ORIGINAL);
	n = snprintf(text, sizeof(text), "# postern ed25519 secret key; "
	    "public %s\n" KEY_SECRET_PREFIX "%s\n", pub, sec);
	sodium_memzero(sec, sizeof(sec));
	if (n < 0 || (size_t)n >= sizeof(text)) {
		errbuf_set(err, errlen, "internal error formatting key file %s",
		    path);
		goto wipe;
	}
	len = n;

	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
	    0600);
	if (fd == -1) {
		if (errno == EEXIST)
			errbuf_set(err, errlen, "key file %s already exists: "
			    "refusing to overwrite it (move it away first, or "
			    "choose another name)", path);
		else
			errbuf_set(err, errlen, "cannot create key file %s: %s",
			    path, strerror(errno));
		goto wipe;
	}
	/* The umask can only remove bits; make the mode exactly 0600. */
	if (fchmod(fd, 0600) == -1) {
		errbuf_set(err, errlen, "cannot set mode 0600 on key file %s: %s",
		    path, strerror(errno));
		goto fail;
	}
	while (off < len) {
		w = write(fd, text + off, len - off);
		if (w == -1 && errno == EINTR)
			continue;
		if (w == -1) {
			errbuf_set(err, errlen, "cannot write key file %s: %s",
			    path, strerror(errno));
			goto fail;
		}
		off += w;
	}
	if (fsync(fd) == -1) {
		errbuf_set(err, errlen, "cannot write key file %s: %s", path,
		    strerror(errno));
		goto fail;
	}
	if (close(fd) == -1) {
		fd = -1;
		errbuf_set(err, errlen, "cannot write key file %s: %s", path,
		    strerror(errno));
		goto fail;
	}
	result = 0;
	goto wipe;
fail:
	if (fd != -1)
		close(fd);
	unlink(path);
wipe:
	sodium_memzero(text, sizeof(text));
	return result;
}
