/* postern-keygen: makes an Ed25519 key file, or prints a key file's public
 * key.  The public key goes to stdout alone, so scripts can capture it. */
#include <sys/stat.h>

#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <sodium.h>

#include "key.h"

#define KEYGEN_EXIT_USAGE 2

static const char *keygen_name = "postern-keygen";

static void
keygen_usage(FILE *f)
{
	fprintf(f,
	    "usage: %s -o FILE [--force]   make a key, print its public key\n"
	    "       %s --public FILE       print the public key of FILE\n"
	    "\n"
	    "  -o, --output FILE  write a new Ed25519 secret key to FILE "
	    "(mode 0600)\n"
	    "  -f, --force        replace FILE if it exists\n"
	    "  -p, --public FILE  read FILE and print its public key\n"
	    "  -h, --help         this help\n"
	    "\n"
	    "The public key (ed25519:BASE64) is printed on stdout; list it in\n"
	    "the relay's config.  Keep FILE secret: it is refused unless only\n"
	    "its owner can read it.\n", keygen_name, keygen_name);
}

static int __attribute__((format(printf, 1, 2)))
keygen_bad_usage(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", keygen_name);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	fprintf(stderr, "Try '%s --help'.\n", keygen_name);
	return KEYGEN_EXIT_USAGE;
}

/* Writes to a temporary name beside path and renames it over path, so
 * that a failure leaves the old key in place. */
static int
keygen_replace(const struct key *k, const char *path, char *err, size_t errlen)
{
	char tmp[4096];
	int n;

	n = snprintf(tmp, sizeof(tmp), "%s.new-%ld", path, (long)getpid());
	if (n < 0 || (size_t)n >= sizeof(tmp)) {
		snprintf(err, errlen, "key file name %s is too long", path);
		return -1;
	}
	if (key_save(k, tmp, err, errlen) == -1)
		return -1;
	if (rename(tmp, path) == -1) {
		snprintf(err, errlen, "cannot replace %s: %s", path,
		    strerror(errno));
		unlink(tmp);
		return -1;
	}
	return 0;
}

static int
keygen_make(const char *path, int force)
{
	char err[512], pub[KEY_PUBLIC_TEXT_MAX];
	struct key k;
	struct stat st;
	int result;

	if (!force && lstat(path, &st) == 0) {
		fprintf(stderr, "%s: %s already exists: refusing to overwrite a "
		    "key (use --force to replace it; whoever uses the old key "
		    "will be locked out)\n", keygen_name, path);
		return 1;
	}
	if (force && lstat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		fprintf(stderr, "%s: %s exists and is not a regular file: "
		    "refusing to replace it\n", keygen_name, path);
		return 1;
	}
	if (key_generate(&k, err, sizeof(err)) == -1) {
		fprintf(stderr, "%s: %s\n", keygen_name, err);
		return 1;
	}
	if (force)
		result = keygen_replace(&k, path, err, sizeof(err));
	else
		result = key_save(&k, path, err, sizeof(err));
	key_public_text(k.k_pub, pub);
	key_wipe(&k);
	if (result == -1) {
		fprintf(stderr, "%s: %s\n", keygen_name, err);
		return 1;
	}
	printf("%s\n", pub);
	if (fflush(stdout) == EOF) {
		fprintf(stderr, "%s: cannot write to stdout: %s\n", keygen_name,
		    strerror(errno));
		return 1;
	}
	fprintf(stderr, "%s: wrote secret key %s (mode 0600); list the public "
	    "key above in the relay's config\n", keygen_name, path);
	return 0;
}

static int
keygen_public(const char *path)
{
	char err[512], pub[KEY_PUBLIC_TEXT_MAX];
	struct key k;

	if (key_load(&k, path, err, sizeof(err)) == -1) {
		fprintf(stderr, "%s: %s\n", keygen_name, err);
		return 1;
	}
	key_public_text(k.k_pub, pub);
	key_wipe(&k);
	printf("%s\n", pub);
	if (fflush(stdout) == EOF) {
		fprintf(stderr, "%s: cannot write to stdout: %s\n", keygen_name,
		    strerror(errno));
		return 1;
	}
	return 0;
}

int
main(int argc, char *argv[])
{
	static const struct option opts[] = {
		{ "output", required_argument, NULL, 'o' },
		{ "force",  no_argument,       NULL, 'f' },
		{ "public", required_argument, NULL, 'p' },
		{ "help",   no_argument,       NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *out = NULL, *pubfile = NULL;
	int c, force = 0;

	opterr = 0;
	while ((c = getopt_long(argc, argv, ":o:fp:h", opts, NULL)) != -1) {
		switch (c) {
		case 'o':
			out = optarg;
			break;
		case 'f':
			force = 1;
			break;
		case 'p':
			pubfile = optarg;
			break;
		case 'h':
			keygen_usage(stdout);
			return 0;
		case ':':
			return keygen_bad_usage("%s needs a FILE argument",
			    argv[optind - 1]);
		default:
			if (optopt != 0)
				return keygen_bad_usage("unknown option -%c",
				    optopt);
			return keygen_bad_usage("unknown option %s",
			    argv[optind - 1]);
		}
	}
	if (optind < argc)
		return keygen_bad_usage("unexpected argument '%s' (the key "
		    "file goes after -o or --public)", argv[optind]);
	if (out != NULL && pubfile != NULL)
		return keygen_bad_usage("%s", "give either -o FILE or --public "
		    "FILE, not both");
	if (out == NULL && pubfile == NULL)
		return keygen_bad_usage("%s", "say where to write the key: -o "
		    "FILE (or --public FILE to show an existing key)");
	if (force && out == NULL)
		return keygen_bad_usage("%s", "--force only goes with -o FILE");
	if (sodium_init() < 0) {
		fprintf(stderr, "%s: cannot initialise libsodium\n",
		    keygen_name);
		return 1;
	}
	if (out != NULL)
		return keygen_make(out, force);
	return keygen_public(pubfile);
}
