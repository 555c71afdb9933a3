/* Key files and public key text, as a user meets them: files that
 * postern-keygen writes, files people damage or chmod wrongly, keys pasted
 * into configs. */
#include <sys/stat.h>

#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "key.h"

static char dir[64];
static char path[128];

static void
setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/postern-test-key.XXXXXX");
	ck_assert_ptr_nonnull(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/id.key", dir);
	ck_assert_int_ge(sodium_init(), 0);
}

static void
teardown(void)
{
	char p[160];

	unlink(path);
	snprintf(p, sizeof(p), "%s/other", dir);
	rmdir(p);
	rmdir(dir);
}

static void
write_file(const char *p, const char *text, size_t len, mode_t mode)
{
	int fd;

	unlink(p);
	fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0600);
	ck_assert_int_ge(fd, 0);
	ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
	ck_assert_int_eq(fchmod(fd, mode), 0);
	close(fd);
}

static size_t
read_file(const char *p, char *buf, size_t max)
{
	ssize_t n;
	int fd;

	fd = open(p, O_RDONLY);
	ck_assert_int_ge(fd, 0);
	n = read(fd, buf, max - 1);
	ck_assert_int_ge(n, 0);
	buf[n] = '\0';
	close(fd);
	return n;
}

/* A valid secret line for a fresh key. */
static void
secret_line(const struct key *k, char *out, size_t outlen)
{
	char b64[100];

	sodium_bin2base64(b64, sizeof(b64), k->k_sec, KEY_SECRET_BYTES,
	    sodium_base64_VARIANT_ORIGINAL);
	snprintf(out, outlen, "ed25519-secret:%s\n", b64);
}

START_TEST(test_round_trip)
{
	struct key k, l;
	struct stat st;
	char err[512], text[1024], pub[KEY_PUBLIC_TEXT_MAX];

	ck_assert_int_eq(key_generate(&k, err, sizeof(err)), 0);
	ck_assert_int_eq(key_save(&k, path, err, sizeof(err)), 0);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 07777, 0600);

	/* The file is what docs/keys.md shows. */
	read_file(path, text, sizeof(text));
	key_public_text(k.k_pub, pub);
	ck_assert_ptr_eq(strstr(text, "# postern ed25519 secret key; public "),
	    text);
	ck_assert_ptr_nonnull(strstr(text, pub));
	ck_assert_ptr_nonnull(strstr(text, "\ned25519-secret:"));

	ck_assert_int_eq(key_load(&l, path, err, sizeof(err)), 0);
	ck_assert_mem_eq(l.k_pub, k.k_pub, KEY_PUBLIC_BYTES);
	ck_assert_mem_eq(l.k_sec, k.k_sec, KEY_SECRET_BYTES);
}
END_TEST

START_TEST(test_two_keys_differ)
{
	struct key a, b;
	char err[256];

	ck_assert_int_eq(key_generate(&a, err, sizeof(err)), 0);
	ck_assert_int_eq(key_generate(&b, err, sizeof(err)), 0);
	ck_assert_mem_ne(a.k_pub, b.k_pub, KEY_PUBLIC_BYTES);
}
END_TEST

START_TEST(test_save_refuses_overwrite)
{
	struct key k, l;
	char err[512], before[1024], after[1024];

	ck_assert_int_eq(key_generate(&k, err, sizeof(err)), 0);
	ck_assert_int_eq(key_save(&k, path, err, sizeof(err)), 0);
	read_file(path, before, sizeof(before));
	ck_assert_int_eq(key_generate(&l, err, sizeof(err)), 0);
	err[0] = '\0';
	ck_assert_int_eq(key_save(&l, path, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, path));
	ck_assert_ptr_nonnull(strstr(err, "already exists"));
	read_file(path, after, sizeof(after));
	ck_assert_str_eq(before, after);
}
END_TEST

START_TEST(test_save_refuses_symlink)
{
	struct key k;
	char err[512], target[160];

	/* Even a dangling link: O_EXCL must not follow it. */
	snprintf(target, sizeof(target), "%s/other", dir);
	ck_assert_int_eq(symlink(target, path), 0);
	ck_assert_int_eq(key_generate(&k, err, sizeof(err)), 0);
	ck_assert_int_eq(key_save(&k, path, err, sizeof(err)), -1);
	ck_assert_int_eq(access(target, F_OK), -1);
}
END_TEST

START_TEST(test_save_mode_ignores_umask)
{
	struct key k;
	struct stat st;
	char err[512];
	mode_t old;

	old = umask(0);
	ck_assert_int_eq(key_generate(&k, err, sizeof(err)), 0);
	ck_assert_int_eq(key_save(&k, path, err, sizeof(err)), 0);
	umask(old);
	ck_assert_int_eq(stat(path, &st), 0);
	ck_assert_int_eq(st.st_mode & 07777, 0600);
}
END_TEST

static const mode_t bad_modes[] = { 0644, 0640, 0604, 0660, 0606, 0610,
    0601, 0400 | 0040 };

START_TEST(test_load_refuses_open_modes)
{
	struct key k, l;
	char err[512], want[64];

	ck_assert_int_eq(key_generate(&k, err, sizeof(err)), 0);
	ck_assert_int_eq(key_save(&k, path, err, sizeof(err)), 0);
	ck_assert_int_eq(chmod(path, bad_modes[_i]), 0);
	err[0] = '\0';
	ck_assert_int_eq(key_load(&l, path, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "mode %04o", (unsigned)bad_modes[_i]);
	ck_assert_msg(strstr(err, want) != NULL, "no '%s' in: %s", want, err);
	ck_assert_ptr_nonnull(strstr(err, "chmod 600"));
	ck_assert_ptr_nonnull(strstr(err, path));
	/* Nothing of the key is left in the output on failure. */
	ck_assert_int_eq(sodium_is_zero(l.k_sec, KEY_SECRET_BYTES), 1);
}
END_TEST

START_TEST(test_load_accepts_owner_only)
{
	struct key k, l;
	char err[512];

	ck_assert_int_eq(key_generate(&k, err, sizeof(err)), 0);
	ck_assert_int_eq(key_save(&k, path, err, sizeof(err)), 0);
	ck_assert_int_eq(chmod(path, 0400), 0);
	ck_assert_msg(key_load(&l, path, err, sizeof(err)) == 0, "%s", err);
	ck_assert_mem_eq(l.k_pub, k.k_pub, KEY_PUBLIC_BYTES);
}
END_TEST

START_TEST(test_load_missing_file)
{
	struct key k;
	char err[512];

	ck_assert_int_eq(key_load(&k, path, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, path));
	ck_assert_ptr_nonnull(strstr(err, "No such file"));
	ck_assert_ptr_nonnull(strstr(err, "postern-keygen"));
}
END_TEST

START_TEST(test_load_directory)
{
	struct key k;
	char err[512];

	ck_assert_int_eq(mkdir(path, 0700), 0);
	ck_assert_int_eq(key_load(&k, path, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "not a regular file"));
	rmdir(path);
}
END_TEST

START_TEST(test_load_fifo_does_not_hang)
{
	struct key k;
	char err[512];

	ck_assert_int_eq(mkfifo(path, 0600), 0);
	ck_assert_int_eq(key_load(&k, path, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "not a regular file"));
}
END_TEST

START_TEST(test_load_tolerates_crlf_and_comments)
{
	struct key k, l;
	char err[512], line[200], text[600];
	size_t n;

	ck_assert_int_eq(key_generate(&k, err, sizeof(err)), 0);
	secret_line(&k, line, sizeof(line));
	line[strlen(line) - 1] = '\0';
	/* The comment's public key is wrong on purpose: it is not trusted. */
	n = snprintf(text, sizeof(text), "# made by hand\r\n# public "
	    "ed25519:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\r\n\r\n"
	    "%s \r\n\n", line);
	write_file(path, text, n, 0600);
	ck_assert_msg(key_load(&l, path, err, sizeof(err)) == 0, "%s", err);
	ck_assert_mem_eq(l.k_pub, k.k_pub, KEY_PUBLIC_BYTES);
}
END_TEST

/* Each kind of damage, and a word the message must contain. */
struct bad_file {
	const char *bf_what;
	const char *bf_text;    /* %s: a valid secret line, without newline */
	const char *bf_expect;
};

static const struct bad_file bad_files[] = {
	{ "empty", "", "no 'ed25519-secret:' line" },
	{ "comments only", "# postern ed25519 secret key\n",
	    "no 'ed25519-secret:' line" },
	{ "no prefix", "QYm53PuPiMmJFmm+r/47Q7W31Im5P4z6n/iLVgOQrLz5+Jml4Tbiu7kq"
	    "79wv47BWfL2rGlfakxL8tWesGArN/g==\n", "line 1: expected" },
	{ "wrong prefix", "ed25519-seed:AAAA\n", "line 1: expected" },
	{ "public key only",
	    "ed25519:+fiZpeE24ru5Ku/cL+OwVny9qxpX2pMS/LVnrBgKzf4=\n",
	    "this is a public key" },
	{ "bad base64", "ed25519-secret:QYm53PuPiMmJFmm+r/47Q7W31Im5P4z6n/iLVg"
	    "OQrLz5+Jml4Tbiu7kq79wv47BWfL2rGlfakxL8tWesGArN/g!=\n",
	    "not the 88-character base64" },
	{ "too short", "ed25519-secret:QYm53PuPiMmJFmm+r/47Q7W31Im5P4z6n/iLVg"
	    "OQrLz5+Jml4Tbiu7kq79wv47BWfL2rGlfakxL8tWesGArN\n",
	    "not the 88-character base64" },
	{ "32 bytes", "ed25519-secret:+fiZpeE24ru5Ku/cL+OwVny9qxpX2pMS/LVnrBg"
	    "Kzf4=\n", "(44 characters)" },
	{ "empty secret", "ed25519-secret:\n", "(0 characters)" },
	{ "two keys", "%s\n%s\n", "line 2: a second secret key" },
	{ "trailing junk", "%s\nhello\n", "line 2: expected" },
	{ "leading space", " %s\n", "line 1: expected" },
	{ "binary", "\x7f" "ELF\x02\x01\x01", "line 1: expected" },
	{ "nul inside", "%s\n\0\n", "line 2: expected" },
};

START_TEST(test_load_refuses_malformed)
{
	const struct bad_file *bf = &bad_files[_i];
	struct key k, l;
	char err[512], line[200], text[1024];
	int n;

	ck_assert_int_eq(key_generate(&k, err, sizeof(err)), 0);
	secret_line(&k, line, sizeof(line));
	line[strlen(line) - 1] = '\0';
	/* Test data: the templates hold at most two %s. */
	n = snprintf(text, sizeof(text), bf->bf_text, line, line);
	if (strcmp(bf->bf_what, "nul inside") == 0) {
		/* The literal stops at its NUL: put the rest in by hand. */
		text[n] = '\0';
		text[n + 1] = '\n';
		n += 2;
	}
	write_file(path, text, n, 0600);
	err[0] = '\0';
	ck_assert_int_eq(key_load(&l, path, err, sizeof(err)), -1);
	ck_assert_msg(strstr(err, bf->bf_expect) != NULL,
	    "%s: no '%s' in: %s", bf->bf_what, bf->bf_expect, err);
	ck_assert_msg(strstr(err, path) != NULL, "%s: no file name in: %s",
	    bf->bf_what, err);
	ck_assert_int_eq(sodium_is_zero(l.k_sec, KEY_SECRET_BYTES), 1);
}
END_TEST

START_TEST(test_load_refuses_mismatched_halves)
{
	struct key a, b, l;
	char err[512], line[200];

	/* a's seed with b's public half: someone pasted two keys together. */
	ck_assert_int_eq(key_generate(&a, err, sizeof(err)), 0);
	ck_assert_int_eq(key_generate(&b, err, sizeof(err)), 0);
	memcpy(a.k_sec + 32, b.k_pub, 32);
	secret_line(&a, line, sizeof(line));
	write_file(path, line, strlen(line), 0600);
	ck_assert_int_eq(key_load(&l, path, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "corrupt"));
	ck_assert_ptr_nonnull(strstr(err, path));
}
END_TEST

START_TEST(test_load_refuses_large_file)
{
	struct key k;
	char err[512], *big;
	size_t n = KEY_FILE_MAX + 1;

	big = malloc(n);
	ck_assert_ptr_nonnull(big);
	memset(big, '#', n);
	write_file(path, big, n, 0600);
	free(big);
	ck_assert_int_eq(key_load(&k, path, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "larger than 4096 bytes"));
}
END_TEST

START_TEST(test_parse_from_memory)
{
	struct key k, l;
	char err[512], line[200];

	ck_assert_int_eq(key_generate(&k, err, sizeof(err)), 0);
	secret_line(&k, line, sizeof(line));
	ck_assert_int_eq(key_parse(&l, line, strlen(line), "inline", err,
	    sizeof(err)), 0);
	ck_assert_mem_eq(l.k_pub, k.k_pub, KEY_PUBLIC_BYTES);
	/* Without the final newline too. */
	ck_assert_int_eq(key_parse(&l, line, strlen(line) - 1, "inline", err,
	    sizeof(err)), 0);
}
END_TEST

START_TEST(test_wipe)
{
	struct key k;
	char err[256];

	ck_assert_int_eq(key_generate(&k, err, sizeof(err)), 0);
	key_wipe(&k);
	ck_assert_int_eq(sodium_is_zero((const unsigned char *)&k, sizeof(k)),
	    1);
}
END_TEST

START_TEST(test_public_text_round_trip)
{
	struct key k;
	uint8_t pub[KEY_PUBLIC_BYTES];
	char err[256], text[KEY_PUBLIC_TEXT_MAX];
	int i;

	for (i = 0; i < 50; i++) {
		ck_assert_int_eq(key_generate(&k, err, sizeof(err)), 0);
		key_public_text(k.k_pub, text);
		ck_assert_int_eq(strlen(text), 8 + 44);
		ck_assert_int_eq(strncmp(text, "ed25519:", 8), 0);
		ck_assert_int_eq(key_public_parse(text, pub, err, sizeof(err)),
		    0);
		ck_assert_mem_eq(pub, k.k_pub, KEY_PUBLIC_BYTES);
	}
}
END_TEST

struct bad_pub {
	const char *bp_text;
	const char *bp_expect;
};

static const struct bad_pub bad_pubs[] = {
	{ NULL, "empty" },
	{ "", "empty" },
	{ "+fiZpeE24ru5Ku/cL+OwVny9qxpX2pMS/LVnrBgKzf4=", "does not start" },
	{ "ED25519:+fiZpeE24ru5Ku/cL+OwVny9qxpX2pMS/LVnrBgKzf4=",
	    "does not start" },
	{ "ed25519", "does not start" },
	{ " ed25519:+fiZpeE24ru5Ku/cL+OwVny9qxpX2pMS/LVnrBgKzf4=",
	    "does not start" },
	{ "ed25519:", "(0 characters" },
	{ "ed25519:+fiZpeE24ru5Ku/cL+OwVny9qxpX2pMS/LVnrBgKzf4",
	    "(43 characters" },
	{ "ed25519:+fiZpeE24ru5Ku/cL+OwVny9qxpX2pMS/LVnrBgKzf4==",
	    "(45 characters" },
	{ "ed25519:+fiZpeE24ru5Ku/cL+OwVny9qxpX2pMS/LVnrBgKzf4= ",
	    "(45 characters" },
	{ "ed25519:-fiZpeE24ru5Ku_cL+OwVny9qxpX2pMS/LVnrBgKzf4=",
	    "not 'ed25519:' and the" },
	/* Last character with stray low bits: not canonical base64. */
	{ "ed25519:+fiZpeE24ru5Ku/cL+OwVny9qxpX2pMS/LVnrBgKzf5=",
	    "not 'ed25519:' and the" },
	/* Valid base64 of 33 bytes. */
	{ "ed25519:+fiZpeE24ru5Ku/cL+OwVny9qxpX2pMS/LVnrBgKzf4A",
	    "not 'ed25519:' and the" },
	{ "ed25519:\x01\x02\x03", "(3 characters" },
};

START_TEST(test_public_parse_refuses_malformed)
{
	const struct bad_pub *bp = &bad_pubs[_i];
	uint8_t pub[KEY_PUBLIC_BYTES];
	char err[512];

	err[0] = '\0';
	ck_assert_int_eq(key_public_parse(bp->bp_text, pub, err, sizeof(err)),
	    -1);
	ck_assert_msg(strstr(err, bp->bp_expect) != NULL, "'%s': no '%s' in: %s",
	    bp->bp_text ? bp->bp_text : "(null)", bp->bp_expect, err);
	/* Messages echo input only as printable text. */
	ck_assert_ptr_null(strchr(err, '\x01'));
}
END_TEST

START_TEST(test_public_parse_long_input_is_cut)
{
	uint8_t pub[KEY_PUBLIC_BYTES];
	char err[512], text[3000];

	memset(text, 'A', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	ck_assert_int_eq(key_public_parse(text, pub, err, sizeof(err)), -1);
	ck_assert_ptr_nonnull(strstr(err, "..."));
	ck_assert_int_lt(strlen(err), 300);
}
END_TEST

START_TEST(test_error_buffer_may_be_small)
{
	uint8_t pub[KEY_PUBLIC_BYTES];
	char err[8];

	memset(err, 'x', sizeof(err));
	ck_assert_int_eq(key_public_parse("nope", pub, err, sizeof(err)), -1);
	ck_assert_int_eq(strlen(err), sizeof(err) - 1);
	ck_assert_int_eq(key_public_parse("nope", pub, NULL, 0), -1);
}
END_TEST

static Suite *
key_suite(void)
{
	Suite *s = suite_create("key");
	TCase *tc = tcase_create("key");

	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 10);
	tcase_add_test(tc, test_round_trip);
	tcase_add_test(tc, test_two_keys_differ);
	tcase_add_test(tc, test_save_refuses_overwrite);
	tcase_add_test(tc, test_save_refuses_symlink);
	tcase_add_test(tc, test_save_mode_ignores_umask);
	tcase_add_loop_test(tc, test_load_refuses_open_modes, 0,
	    sizeof(bad_modes) / sizeof(bad_modes[0]));
	tcase_add_test(tc, test_load_accepts_owner_only);
	tcase_add_test(tc, test_load_missing_file);
	tcase_add_test(tc, test_load_directory);
	tcase_add_test(tc, test_load_fifo_does_not_hang);
	tcase_add_test(tc, test_load_tolerates_crlf_and_comments);
	tcase_add_loop_test(tc, test_load_refuses_malformed, 0,
	    sizeof(bad_files) / sizeof(bad_files[0]));
	tcase_add_test(tc, test_load_refuses_mismatched_halves);
	tcase_add_test(tc, test_load_refuses_large_file);
	tcase_add_test(tc, test_parse_from_memory);
	tcase_add_test(tc, test_wipe);
	tcase_add_test(tc, test_public_text_round_trip);
	tcase_add_loop_test(tc, test_public_parse_refuses_malformed, 0,
	    sizeof(bad_pubs) / sizeof(bad_pubs[0]));
	tcase_add_test(tc, test_public_parse_long_input_is_cut);
	tcase_add_test(tc, test_error_buffer_may_be_small);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(key_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
