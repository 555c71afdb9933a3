/* The relay's TLS certificate and key files as an operator gets them
 * wrong: every file that cannot serve is refused before libmicrohttpd
 * sees it, with a message that names the file and says what is wrong
 * (and what to do, where there is one thing to do).  Good files, chains
 * and the usual openssl outputs load. */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "../../relay/relay.h"

/* A self-signed EC P-256 certificate and its key (never used to serve:
 * made for this test with openssl req -x509 -newkey ec). */
static const char CERT[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIIBjTCCATOgAwIBAgIUDptrdtlN2RVXKj9C2TgKJpZN/kgwCgYIKoZIzj0EAwIw\n"
    "HDEaMBgGA1UEAwwRcG9zdGVybiB1bml0IHRlc3QwHhcNMjYxMTIyMDMwNDE5WhcN\n"
    "MzYxMTE5MDMwNDE5WjAcMRowGAYDVQQDDBFwb3N0ZXJuIHVuaXQgdGVzdDBZMBMG\n"
    "ByqGSM49AgEGCCqGSM49AwEHA0IABBHhHXhC/l9XrLlQO7j9OZCb3FZ8ra+NZ7Uc\n"
    "cz/NdO4hojQrKVkqccaa7QWVLuSFuCdU6oSJ16MzssISuQpcTQujUzBRMB0GA1Ud\n"
    "DgQWBBTs8VYJPrieRqUxWsfme+H40ECkajAfBgNVHSMEGDAWgBTs8VYJPrieRqUx\n"
    "Wsfme+H40ECkajAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49BAMCA0gAMEUCIQCn\n"
    "EutUqLFbGFT51qGacC6Sn0FTS5iYBLIopujI5PL7OAIgVtY1aQwKUwyfbZ0S2KYf\n"
    "WDrsgvaKHESwDRaHidVqGIU=\n"
    "-----END CERTIFICATE-----\n";

static const char KEY[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQglsD8i2ZAbLen+INW\n"
    "1/HVRm5xHk4krcnsTFrXw1hhAcahRANCAAQR4R14Qv5fV6y5UDu4/TmQm9xWfK2v\n"
    "jWe1HHM/zXTuIaI0KylZKnHGmu0FlS7khbgnVOqEidejM7LCErkKXE0L\n"
    "-----END PRIVATE KEY-----\n";

/* openssl ecparam -genkey writes the parameters first. */
static const char EC_KEY[] =
    "-----BEGIN EC PARAMETERS-----\n"
    "BggqhkjOPQMBBw==\n"
    "-----END EC PARAMETERS-----\n"
    "-----BEGIN EC PRIVATE KEY-----\n"
    "MHcCAQEEIANSwUNe7tZvkpp1m35r3L/IXB+1WL6lO0WPFmon1aFooAoGCCqGSM49\n"
    "AwEHoUQDQgAE+zBAt1qs+RE3gme3SKFyo5LP0HFEPhjB0JQcXDzB91zIIxsOH9g6\n"
    "MKi2KOJ/mKHmNcI1ZLOYkUaDqqbLlK55XQ==\n"
    "-----END EC PRIVATE KEY-----\n";

static char dir[64];
static char err[1024];

static void
setup(void)
{
	ck_assert_int_ge(sodium_init(), 0);
	snprintf(dir, sizeof(dir), "/tmp/postern-tls-XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
}

static void
teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	ck_assert_int_eq(system(cmd), 0);
}

/* Writes len bytes of text to dir/name; returns the path (static, one
 * of the last PATHS made). */
#define PATHS 64
static const char *
put(const char *name, const char *text, size_t len)
{
	static char paths[PATHS][128];
	static int next;
	char *p = paths[next++ % PATHS];
	FILE *f;

	snprintf(p, 128, "%s/%s", dir, name);
	f = fopen(p, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_uint_eq(fwrite(text, 1, len, f), len);
	ck_assert_int_eq(fclose(f), 0);
	return p;
}

static const char *
puts_(const char *name, const char *text)
{
	return put(name, text, strlen(text));
}

/* Loading must fail with a message that starts with the path's role and
 * contains want (with %s standing for the failing file's path). */
static void
refused(const char *cert, const char *key, const char *bad, const char *want)
{
	struct relay_tls tl;
	char expect[512];

	snprintf(expect, sizeof(expect), want, bad);
	err[0] = '\0';
	ck_assert_int_eq(tls_load(&tl, cert, key, err, sizeof(err)), -1);
	ck_assert_ptr_null(tl.tl_cert);
	ck_assert_ptr_null(tl.tl_key);
	ck_assert_msg(strstr(err, expect) != NULL, "\n got: %s\nwant: ...%s...",
	    err, expect);
}

static void
loads(const char *cert, const char *key)
{
	struct relay_tls tl;

	err[0] = '\0';
	ck_assert_msg(tls_load(&tl, cert, key, err, sizeof(err)) == 0, "%s", err);
	ck_assert_ptr_nonnull(tl.tl_cert);
	ck_assert_ptr_nonnull(tl.tl_key);
	ck_assert_uint_eq(tl.tl_key_len, strlen(tl.tl_key));
	tls_free(&tl);
	ck_assert_ptr_null(tl.tl_key);
}

START_TEST(good_files)
{
	char chain[4096], text[4096];

	loads(puts_("c.pem", CERT), puts_("k.pem", KEY));
	/* A chain, and openssl x509 -text output (text before the block). */
	snprintf(chain, sizeof(chain), "%s%s", CERT, CERT);
	loads(puts_("chain.pem", chain), puts_("k.pem", KEY));
	snprintf(text, sizeof(text), "Certificate:\n    Data: ...\n%s", CERT);
	loads(puts_("text.pem", text), puts_("k.pem", KEY));
	loads(puts_("c.pem", CERT), puts_("ec.pem", EC_KEY));
	/* CRLF line ends. */
	{
		char crlf[4096];
		size_t i, o = 0;

		for (i = 0; CERT[i] != '\0'; i++) {
			if (CERT[i] == '\n')
				crlf[o++] = '\r';
			crlf[o++] = CERT[i];
		}
		crlf[o] = '\0';
		loads(puts_("crlf.pem", crlf), puts_("k.pem", KEY));
	}
	/* Certificate and key in one file, given for both. */
	snprintf(chain, sizeof(chain), "%s%s", CERT, KEY);
	loads(puts_("both.pem", chain), puts_("both.pem", chain));
}
END_TEST

START_TEST(unreadable)
{
	char missing[128];
	const char *k = puts_("k.pem", KEY);

	snprintf(missing, sizeof(missing), "%s/nope.crt", dir);
	refused(missing, k, missing, "cannot read TLS certificate %s: No such "
	    "file or directory");
	refused(puts_("c.pem", CERT), missing, missing, "cannot read TLS key "
	    "%s: No such file or directory");
	refused(dir, k, dir, "cannot read TLS certificate %s: not a regular "
	    "file");
	if (geteuid() != 0) {
		const char *c = puts_("c.pem", CERT);

		ck_assert_int_eq(chmod(c, 0), 0);
		refused(c, k, c, "cannot read TLS certificate %s: Permission "
		    "denied");
	}
}
END_TEST

START_TEST(not_pem)
{
	static const char der[] = { 0x30, (char)0x82, 0x01, (char)0x8d, 0x30, 0x00 };
	const char *k = puts_("k.pem", KEY), *c = puts_("c.pem", CERT), *p;
	char *big;

	p = puts_("empty.pem", "");
	refused(p, k, p, "TLS certificate %s is empty");
	refused(c, p, p, "TLS key %s is empty");
	p = put("c.der", der, sizeof(der));
	refused(p, k, p, "TLS certificate %s is not PEM text (a DER file? "
	    "convert it: openssl x509 -inform DER");
	refused(c, p, p, "TLS key %s is not PEM text (a DER file? convert it: "
	    "openssl pkey -inform DER");
	p = puts_("junk.pem", "hello\n");
	refused(p, k, p, "TLS certificate %s has no PEM certificate (no "
	    "'-----BEGIN CERTIFICATE-----' line)");
	refused(c, p, p, "TLS key %s has no PEM private key (no '-----BEGIN "
	    "... PRIVATE KEY-----' line)");
	/* A BEGIN line must start a line. */
	p = puts_("indent.pem", " -----BEGIN CERTIFICATE-----\nAAAA\n"
	    "-----END CERTIFICATE-----\n");
	refused(p, k, p, "TLS certificate %s has no PEM certificate");
	big = calloc(1, TLS_FILE_MAX + 2);
	ck_assert_ptr_nonnull(big);
	memset(big, 'A', TLS_FILE_MAX + 1);
	p = put("big.pem", big, TLS_FILE_MAX + 1);
	free(big);
	refused(p, k, p, "TLS certificate %s is larger than 256 KiB");
}
END_TEST

START_TEST(wrong_kind)
{
	const char *k = puts_("k.pem", KEY), *c = puts_("c.pem", CERT), *p;

	refused(k, c, k, "TLS certificate %s holds a private key, not a "
	    "certificate (are the certificate and key files swapped?)");
	refused(c, c, c, "TLS key %s holds a certificate, not a private key "
	    "(are the certificate and key files swapped?)");
	p = puts_("pub.pem", "-----BEGIN PUBLIC KEY-----\n"
	    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEeEdeEL+X1esuVA7uP05kJvcVnyt\n"
	    "r41ntRxzP8107iGiNCspWSpxxprtBZUu5IW4J1TqhInXozOywhK5ClxNCw==\n"
	    "-----END PUBLIC KEY-----\n");
	refused(c, p, p, "TLS key %s holds a public key; the relay needs the "
	    "private key");
	p = puts_("enc8.pem", "-----BEGIN ENCRYPTED PRIVATE KEY-----\n"
	    "MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAhOr3Iqg8Lm2QICCAAw\n"
	    "-----END ENCRYPTED PRIVATE KEY-----\n");
	refused(c, p, p, "TLS key %s is encrypted with a passphrase; the relay "
	    "needs it unencrypted: openssl pkey -in");
	p = puts_("encold.pem", "-----BEGIN EC PRIVATE KEY-----\n"
	    "Proc-Type: 4,ENCRYPTED\n"
	    "DEK-Info: AES-256-CBC,0123456789ABCDEF0123456789ABCDEF\n\n"
	    "AAAA\n"
	    "-----END EC PRIVATE KEY-----\n");
	refused(c, p, p, "TLS key %s is encrypted with a passphrase");
}
END_TEST

START_TEST(damaged)
{
	const char *k = puts_("k.pem", KEY), *c = puts_("c.pem", CERT), *p;
	char buf[4096];
	char *at;

	/* Cut in the middle: no END line. */
	snprintf(buf, sizeof(buf), "%.*s", (int)(sizeof(CERT) / 2), CERT);
	p = puts_("cut.pem", buf);
	refused(p, k, p, "TLS certificate %s: the PEM block on line 1 has no "
	    "'-----END CERTIFICATE-----' line (truncated file?)");
	snprintf(buf, sizeof(buf), "%.*s", (int)(sizeof(KEY) / 2), KEY);
	p = puts_("cutkey.pem", buf);
	refused(c, p, p, "TLS key %s: the PEM block on line 1 has no "
	    "'-----END PRIVATE KEY-----' line (truncated file?)");
	/* A character that is not base64. */
	snprintf(buf, sizeof(buf), "%s", CERT);
	at = strstr(buf, "HDEa");
	ck_assert_ptr_nonnull(at);
	*at = '*';
	p = puts_("bad64.pem", buf);
	refused(p, k, p, "TLS certificate %s: the certificate on line 1 does "
	    "not decode (damaged or cut base64)");
	/* Whole base64, but a line of it missing: the DER is cut short. */
	snprintf(buf, sizeof(buf), "%s", CERT);
	at = strstr(buf, "HDEa");
	memmove(at, at + 65, strlen(at + 65) + 1);
	p = puts_("short.pem", buf);
	refused(p, k, p, "TLS certificate %s: the certificate on line 1 does "
	    "not decode");
	/* The second certificate of a chain, on line 12. */
	snprintf(buf, sizeof(buf), "%s%s", CERT, CERT);
	at = strstr(buf + sizeof(CERT), "HDEa");
	*at = '*';
	p = puts_("chain.pem", buf);
	refused(p, k, p, "TLS certificate %s: the certificate on line 12 does "
	    "not decode");
	snprintf(buf, sizeof(buf), "%s", KEY);
	at = strstr(buf, "1/HV");
	*at = '*';
	p = puts_("badkey.pem", buf);
	refused(c, p, p, "TLS key %s: the private key on line 1 does not decode "
	    "(damaged or cut base64)");
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("relay_tls");
	TCase *tc = tcase_create("tls");
	SRunner *sr;
	int failed;

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, good_files);
	tcase_add_test(tc, unreadable);
	tcase_add_test(tc, not_pem);
	tcase_add_test(tc, wrong_kind);
	tcase_add_test(tc, damaged);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
