/* The relay's certificate and key files for HTTPS.
 *
 * libmicrohttpd hands both to GnuTLS as PEM text, and GnuTLS's complaint
 * about either ("Base64 decoding error.") names neither file.  So they
 * are read and checked here first: each must be PEM, each block's base64
 * must decode to one whole DER object, the key must be a private key and
 * unencrypted.  Whether the key belongs to the certificate is left to
 * GnuTLS when the daemons start (http_start), whose message then names
 * both files. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "errbuf.h"
#include "relay.h"

#define TLS_BEGIN "-----BEGIN "
#define TLS_END   "-----END "
#define TLS_DASH  "-----"

struct tls_block {
	const char *tb_label;     /* "CERTIFICATE", "EC PRIVATE KEY", ... */
	size_t      tb_label_len;
	const char *tb_body;      /* base64, possibly with header lines */
	size_t      tb_body_len;
	int         tb_line;      /* of its BEGIN line, from 1 */
};

/* Reads a whole file of at most TLS_FILE_MAX bytes, NUL-terminated. */
static char *
tls_read(const char *what, const char *path, size_t *lenp, char *err,
    size_t errlen)
{
	struct stat st;
	char *buf = NULL;
	size_t len = 0;
	ssize_t n;
	int fd;

	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) == -1) {
		errbuf_set(err, errlen, "cannot read %s %s: %s", what, path,
		    strerror(errno));
		return NULL;
	}
	if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
		errbuf_set(err, errlen, "cannot read %s %s: not a regular file",
		    what, path);
		goto fail;
	}
	if (st.st_size > TLS_FILE_MAX) {
		errbuf_set(err, errlen, "%s %s is larger than %d KiB: not a "
		    "PEM file", what, path, TLS_FILE_MAX / 1024);
		goto fail;
	}
	if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
		errbuf_set(err, errlen, "out of memory reading %s", path);
		goto fail;
	}
	/* Read until EOF, not st_size: a file may change underneath. */
	while (len < (size_t)st.st_size) {
		n = read(fd, buf + len, (size_t)st.st_size - len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1) {
			errbuf_set(err, errlen, "cannot read %s %s: %s", what,
			    path, strerror(errno));
			goto fail;
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	close(fd);
	buf[len] = '\0';
	*lenp = len;
	return buf;
fail:
	if (buf != NULL) {
		sodium_memzero(buf, (size_t)st.st_size + 1);
		free(buf);
	}
	close(fd);
	return NULL;
}

static int
tls_line_of(const char *text, const char *at)
{
	int line = 1;

	for (; text < at; text++)
		if (*text == '\n')
			line++;
	return line;
}

/* The next PEM block from *pos: 1, 0 for none, -1 for a BEGIN line
 * without its END line (b->tb_line and the label are set). */
static int
tls_next_block(const char *text, size_t len, size_t *pos, struct tls_block *b)
{
	const char *p, *lab, *lab_end, *body, *end, *limit = text + len;
	char want[96];
	size_t wl;

	for (p = text + *pos; (p = memmem(p, (size_t)(limit - p), TLS_BEGIN,
	    strlen(TLS_BEGIN))) != NULL; p++) {
		/* Only at the start of a line. */
		if (p != text && p[-1] != '\n')
			continue;
		lab = p + strlen(TLS_BEGIN);
		lab_end = memmem(lab, (size_t)(limit - lab), TLS_DASH,
		    strlen(TLS_DASH));
		if (lab_end == NULL || lab_end - lab > 64 ||
		    memchr(lab, '\n', (size_t)(lab_end - lab)) != NULL)
			continue;
		b->tb_label = lab;
		b->tb_label_len = (size_t)(lab_end - lab);
		b->tb_line = tls_line_of(text, p);
		body = lab_end + strlen(TLS_DASH);
		wl = (size_t)snprintf(want, sizeof(want), "%s%.*s%s", TLS_END,
		    (int)b->tb_label_len, lab, TLS_DASH);
		if ((end = memmem(body, (size_t)(limit - body), want, wl)) == NULL)
			return -1;
		b->tb_body = body;
		b->tb_body_len = (size_t)(end - body);
		*pos = (size_t)(end + wl - text);
		return 1;
	}
	*pos = len;
	return 0;
}

static int
tls_label_is(const struct tls_block *b, const char *label)
{
	return b->tb_label_len == strlen(label) &&
	    memcmp(b->tb_label, label, b->tb_label_len) == 0;
}

/* "...PRIVATE KEY": PKCS#8, RSA, EC, and the encrypted forms. */
static int
tls_label_is_key(const struct tls_block *b)
{
	static const char k[] = "PRIVATE KEY";

	return b->tb_label_len >= sizeof(k) - 1 &&
	    memcmp(b->tb_label + b->tb_label_len - (sizeof(k) - 1), k,
	    sizeof(k) - 1) == 0;
}

/* Does the block's base64 decode to exactly one DER SEQUENCE? */
static int
tls_block_der_ok(const struct tls_block *b)
{
	unsigned char *der;
	size_t n = 0, len, hdr, i, k;
	int ok = 0;

	if ((der = malloc(b->tb_body_len / 4 * 3 + 3)) == NULL)
		return 0;
	if (sodium_base642bin(der, b->tb_body_len / 4 * 3 + 3, b->tb_body,
	    b->tb_body_len, " \t\r\n", &n, NULL,
	    sodium_base64_VARIANT_ORIGINAL) != 0 || n < 2 || der[0] != 0x30)
		goto done;
	if (der[1] < 0x80) {
		len = der[1];
		hdr = 2;
	} else {
		k = der[1] & 0x7f;
		if (k == 0 || k > 4 || n < 2 + k)
			goto done;
		for (len = 0, i = 0; i < k; i++)
			len = len << 8 | der[2 + i];
		hdr = 2 + k;
	}
	ok = hdr + len == n;
done:
	sodium_memzero(der, b->tb_body_len / 4 * 3 + 3);
	free(der);
	return ok;
}

static int
tls_check_cert(const char *path, const char *text, size_t len, char *err,
    size_t errlen)
{
	struct tls_block b;
	size_t pos = 0;
	int r, ncerts = 0, has_key = 0;

	if (len == 0) {
		errbuf_set(err, errlen, "TLS certificate %s is empty", path);
		return -1;
	}
	if (memchr(text, '\0', len) != NULL) {
		errbuf_set(err, errlen, "TLS certificate %s is not PEM text (a "
		    "DER file? convert it: openssl x509 -inform DER -in %s "
		    "-out cert.pem)", path, path);
		return -1;
	}
	while ((r = tls_next_block(text, len, &pos, &b)) != 0) {
		if (r == -1) {
			errbuf_set(err, errlen, "TLS certificate %s: the PEM block "
			    "on line %d has no '-----END %.*s-----' line "
			    "(truncated file?)", path, b.tb_line,
			    (int)b.tb_label_len, b.tb_label);
			return -1;
		}
		if (tls_label_is_key(&b))
			has_key = 1;
		if (!tls_label_is(&b, "CERTIFICATE"))
			continue;
		if (!tls_block_der_ok(&b)) {
			errbuf_set(err, errlen, "TLS certificate %s: the "
			    "certificate on line %d does not decode (damaged or "
			    "cut base64)", path, b.tb_line);
			return -1;
		}
		ncerts++;
	}
	if (ncerts > 0)
		return 0;
	if (has_key)
		errbuf_set(err, errlen, "TLS certificate %s holds a private key, "
		    "not a certificate (are the certificate and key files "
		    "swapped?)", path);
	else
		errbuf_set(err, errlen, "TLS certificate %s has no PEM "
		    "certificate (no '-----BEGIN CERTIFICATE-----' line)", path);
	return -1;
}

static int
tls_check_key(const char *path, const char *text, size_t len, char *err,
    size_t errlen)
{
	struct tls_block b;
	size_t pos = 0;
	int r, has_cert = 0, has_pub = 0;

	if (len == 0) {
		errbuf_set(err, errlen, "TLS key %s is empty", path);
		return -1;
	}
	if (memchr(text, '\0', len) != NULL) {
		errbuf_set(err, errlen, "TLS key %s is not PEM text (a DER "
		    "file? convert it: openssl pkey -inform DER -in %s -out "
		    "key.pem)", path, path);
		return -1;
	}
	while ((r = tls_next_block(text, len, &pos, &b)) != 0) {
		if (r == -1) {
			errbuf_set(err, errlen, "TLS key %s: the PEM block on "
			    "line %d has no '-----END %.*s-----' line (truncated "
			    "file?)", path, b.tb_line, (int)b.tb_label_len,
			    b.tb_label);
			return -1;
		}
		if (tls_label_is(&b, "CERTIFICATE"))
			has_cert = 1;
		if (tls_label_is(&b, "PUBLIC KEY"))
			has_pub = 1;
		if (!tls_label_is_key(&b))
			continue;
		/* PKCS#8 "ENCRYPTED PRIVATE KEY", or the traditional form's
		 * "Proc-Type: 4,ENCRYPTED" header inside the block. */
		if (tls_label_is(&b, "ENCRYPTED PRIVATE KEY") ||
		    memmem(b.tb_body, b.tb_body_len, "Proc-Type:", 10) != NULL) {
			errbuf_set(err, errlen, "TLS key %s is encrypted with a "
			    "passphrase; the relay needs it unencrypted: openssl "
			    "pkey -in %s -out plain.key (then chmod 600 "
			    "plain.key)", path, path);
			return -1;
		}
		if (!tls_block_der_ok(&b)) {
			errbuf_set(err, errlen, "TLS key %s: the private key on "
			    "line %d does not decode (damaged or cut base64)",
			    path, b.tb_line);
			return -1;
		}
		return 0;
	}
	if (has_cert)
		errbuf_set(err, errlen, "TLS key %s holds a certificate, not a "
		    "private key (are the certificate and key files swapped?)",
		    path);
	else if (has_pub)
		errbuf_set(err, errlen, "TLS key %s holds a public key; the "
		    "relay needs the private key", path);
	else
		errbuf_set(err, errlen, "TLS key %s has no PEM private key (no "
		    "'-----BEGIN ... PRIVATE KEY-----' line)", path);
	return -1;
}

int
tls_load(struct relay_tls *tl, const char *cert_path, const char *key_path,
    char *err, size_t errlen)
{
	size_t clen = 0;

	memset(tl, 0, sizeof(*tl));
	if ((tl->tl_cert = tls_read("TLS certificate", cert_path, &clen, err,
	    errlen)) == NULL)
		return -1;
	if (tls_check_cert(cert_path, tl->tl_cert, clen, err, errlen) == -1)
		goto fail;
	if ((tl->tl_key = tls_read("TLS key", key_path, &tl->tl_key_len, err,
	    errlen)) == NULL)
		goto fail;
	if (tls_check_key(key_path, tl->tl_key, tl->tl_key_len, err,
	    errlen) == -1)
		goto fail;
	return 0;
fail:
	tls_free(tl);
	return -1;
}

void
tls_free(struct relay_tls *tl)
{
	if (tl->tl_key != NULL) {
		sodium_memzero(tl->tl_key, tl->tl_key_len);
		free(tl->tl_key);
	}
	free(tl->tl_cert);
	memset(tl, 0, sizeof(*tl));
}
