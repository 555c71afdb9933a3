/* mproxy: pack a payload into an M-PROXY v1 frame the way proxy-packer
 * 2.0.4's test/pack.js does, or print a stream's frames as JSON lines.
 *
 *   mproxy pack INPUT.json OUTPUT.bin
 *   mproxy unpack [--max-data BYTES] INPUT.bin|-
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <sodium.h>

#include "mproxy.h"
#include "sniff.h"

/* The largest payload file `pack` reads. */
#define PACK_MAX_INPUT   (64u * 1024u * 1024u)
/* How much of the stream `unpack` reads at a time. */
#define UNPACK_CHUNK     (64u * 1024u)

#define EXIT_USAGE 2

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: mproxy pack INPUT.json OUTPUT.bin\n"
	    "       mproxy unpack [--max-data BYTES] INPUT.bin\n"
	    "\n"
	    "pack    reads proxy-packer's test/pack.js input, {\"version\":1,\n"
	    "        \"address\":{\"family\",\"address\",\"port\",\"service\",\n"
	    "        \"serviceport\"},\"filepath\":\"...\"} (filepath relative to\n"
	    "        the JSON file's folder), and writes the frame pack.js\n"
	    "        writes, named after the payload's TLS SNI or HTTP Host.\n"
	    "unpack  prints one JSON object per frame (data in base64); '-'\n"
	    "        reads stdin.  --max-data is the largest payload accepted\n"
	    "        (default %u).\n", MPROXY_DEFAULT_MAX_DATA);
}

/* Reads a whole file of at most max bytes.  Returns a malloc'd buffer (a
 * zero-length file gives a 1-byte buffer) or NULL with err filled. */
static uint8_t *
file_read(const char *path, size_t max, size_t *lenp, char *err,
    size_t errlen)
{
	FILE *f;
	uint8_t *buf = NULL, *p;
	size_t len = 0, cap = 0, n;

	if ((f = fopen(path, "rb")) == NULL) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return NULL;
	}
	for (;;) {
		if (len == cap) {
			if (cap > max) {
				snprintf(err, errlen, "%s: larger than %zu "
				    "bytes, the most `mproxy pack` reads",
				    path, max);
				goto fail;
			}
			cap = cap == 0 ? 65536 : cap * 2;
			if ((p = realloc(buf, cap + 1)) == NULL) {
				snprintf(err, errlen, "%s: out of memory",
				    path);
				goto fail;
			}
			buf = p;
		}
		n = fread(buf + len, 1, cap - len, f);
		len += n;
		if (n == 0)
			break;
	}
	if (ferror(f)) {
		snprintf(err, errlen, "%s: read error", path);
		goto fail;
	}
	if (len > max) {
		snprintf(err, errlen, "%s: larger than %zu bytes, the most "
		    "`mproxy pack` reads", path, max);
		goto fail;
	}
	fclose(f);
	*lenp = len;
	return buf;
fail:
	fclose(f);
	free(buf);
	return NULL;
}

/* A string field of "address": absent or null is an empty field. */
static int
json_str_field(json_t *addr, const char *key, const char **out, char *err,
    size_t errlen)
{
	json_t *v = json_object_get(addr, key);

	*out = NULL;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_string(v)) {
		snprintf(err, errlen, "address.%s must be a string", key);
		return -1;
	}
	*out = json_string_value(v);
	return 0;
}

static int
json_port_field(json_t *addr, const char *key, long *out, char *err,
    size_t errlen)
{
	json_t *v = json_object_get(addr, key);
	json_int_t i;

	*out = MPROXY_ABSENT;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || (i = json_integer_value(v)) < 0 ||
	    i > 65535) {
		snprintf(err, errlen, "address.%s must be an integer from 0 "
		    "to 65535", key);
		return -1;
	}
	*out = (long)i;
	return 0;
}

static int
cmd_pack(const char *inpath, const char *outpath)
{
	char err[512], name[MPROXY_HEADER_MAX + 2], *path = NULL;
	const char *filepath, *slash;
	struct mproxy_meta m;
	json_error_t jerr;
	json_t *root = NULL, *addr = NULL, *v;
	uint8_t *data = NULL, *frame = NULL;
	size_t len = 0, dirlen;
	long n;
	FILE *f = NULL;
	int result = EXIT_FAILURE;

	if ((root = json_load_file(inpath, 0, &jerr)) == NULL) {
		fprintf(stderr, "mproxy: %s: line %d column %d: %s\n", inpath,
		    jerr.line, jerr.column, jerr.text);
		goto done;
	}
	err[0] = '\0';
	v = json_object_get(root, "version");
	if (!json_is_object(root))
		snprintf(err, sizeof(err), "not a JSON object");
	else if (v != NULL && (!json_is_integer(v) ||
	    json_integer_value(v) != 1))
		snprintf(err, sizeof(err), "\"version\" must be 1 "
		    "(M-PROXY v1)");
	else if (!json_is_object(addr = json_object_get(root, "address")))
		snprintf(err, sizeof(err), "\"address\" must be an object "
		    "{\"family\",\"address\",\"port\",\"service\","
		    "\"serviceport\"}");
	else if (!json_is_string(v = json_object_get(root, "filepath")))
		snprintf(err, sizeof(err), "\"filepath\" must be a string "
		    "(the payload file, relative to this file's folder)");
	if (err[0] != '\0') {
		fprintf(stderr, "mproxy: %s: %s\n", inpath, err);
		goto done;
	}
	filepath = json_string_value(v);
	memset(&m, 0, sizeof(m));
	if (json_str_field(addr, "family", &m.family, err, sizeof(err)) ||
	    json_str_field(addr, "address", &m.address, err, sizeof(err)) ||
	    json_str_field(addr, "service", &m.service, err, sizeof(err)) ||
	    json_port_field(addr, "port", &m.port, err, sizeof(err)) ||
	    json_port_field(addr, "serviceport", &m.serviceport, err,
	    sizeof(err))) {
		fprintf(stderr, "mproxy: %s: %s\n", inpath, err);
		goto done;
	}

	/* path.resolve(path.dirname(infile), json.filepath) */
	slash = strrchr(inpath, '/');
	dirlen = (filepath[0] == '/' || slash == NULL) ? 0 :
	    (size_t)(slash - inpath) + 1;
	if ((path = malloc(dirlen + strlen(filepath) + 1)) == NULL) {
		fprintf(stderr, "mproxy: out of memory\n");
		goto done;
	}
	memcpy(path, inpath, dirlen);
	strcpy(path + dirlen, filepath);
	if ((data = file_read(path, PACK_MAX_INPUT, &len, err,
	    sizeof(err))) == NULL) {
		fprintf(stderr, "mproxy: %s\n", err);
		goto done;
	}

	/* pack.js overwrites address.name with what the payload announces;
	 * a name too long for a header fails in the encoder, named. */
	if ((n = sniff_name(data, len, name, sizeof(name))) >=
	    (long)sizeof(name)) {
		fprintf(stderr, "mproxy: %s: cannot pack: name: the payload "
		    "names a %ld-byte host, over the %d-byte header limit\n",
		    path, n, MPROXY_HEADER_MAX);
		goto done;
	}
	m.name = name;

	if ((frame = malloc(MPROXY_FRAME_HEAD_MAX + len + 1)) == NULL) {
		fprintf(stderr, "mproxy: out of memory\n");
		goto done;
	}
	if ((n = mproxy_pack(&m, NULL, data, len, frame,
	    MPROXY_FRAME_HEAD_MAX + len + 1, err, sizeof(err))) == -1) {
		fprintf(stderr, "mproxy: %s: cannot pack: %s\n", inpath, err);
		goto done;
	}
	if ((f = fopen(outpath, "wb")) == NULL ||
	    fwrite(frame, 1, (size_t)n, f) != (size_t)n) {
		fprintf(stderr, "mproxy: %s: %s\n", outpath, strerror(errno));
		goto done;
	}
	if (fclose(f) != 0) {
		f = NULL;
		fprintf(stderr, "mproxy: %s: %s\n", outpath, strerror(errno));
		goto done;
	}
	f = NULL;
	printf("wrote %ld bytes to '%s'\n", n, outpath);
	result = EXIT_SUCCESS;
done:
	if (f != NULL)
		fclose(f);
	free(frame);
	free(data);
	free(path);
	json_decref(root);
	return result;
}

static int
frame_print(const struct mproxy_frame *fr)
{
	json_t *o;
	char *b64, *line;
	size_t b64len;
	int result = -1;

	b64len = sodium_base64_ENCODED_LEN(fr->len,
	    sodium_base64_VARIANT_ORIGINAL);
	if ((b64 = malloc(b64len)) == NULL)
		return -1;
	sodium_bin2base64(b64, b64len, fr->data, fr->len,
	    sodium_base64_VARIANT_ORIGINAL);
	o = json_object();
	json_object_set_new(o, "family", json_string(fr->family));
	json_object_set_new(o, "address", json_string(fr->address));
	json_object_set_new(o, "port", json_string(fr->port));
	json_object_set_new(o, "datalen", json_integer((json_int_t)fr->datalen));
	json_object_set_new(o, "service", json_string(fr->service));
	json_object_set_new(o, "serviceport", json_string(fr->serviceport));
	json_object_set_new(o, "name", json_string(fr->name));
	if (strcmp(fr->service, "connection") == 0)
		json_object_set_new(o, "connservice",
		    json_string(fr->conn_service));
	json_object_set_new(o, "data", json_string(b64));
	if ((line = json_dumps(o, JSON_COMPACT)) != NULL) {
		if (puts(line) >= 0)
			result = 0;
		free(line);
	}
	json_decref(o);
	free(b64);
	return result;
}

static int
cmd_unpack(const char *inpath, size_t max_data)
{
	struct mproxy_decoder *d = NULL;
	struct mproxy_frame fr;
	enum mproxy_result r;
	uint8_t *buf = NULL;
	size_t n, off, used;
	FILE *f;
	int result = EXIT_FAILURE;

	if (strcmp(inpath, "-") == 0)
		f = stdin;
	else if ((f = fopen(inpath, "rb")) == NULL) {
		fprintf(stderr, "mproxy: %s: %s\n", inpath, strerror(errno));
		return EXIT_FAILURE;
	}
	if ((buf = malloc(UNPACK_CHUNK)) == NULL ||
	    (d = mproxy_decoder_new(MPROXY_WHOLE, max_data)) == NULL) {
		fprintf(stderr, "mproxy: out of memory\n");
		goto done;
	}
	while ((n = fread(buf, 1, UNPACK_CHUNK, f)) > 0) {
		for (off = 0; off < n; off += used) {
			r = mproxy_decoder_feed(d, buf + off, n - off, &used,
			    &fr);
			if (r == MPROXY_ERROR)
				goto bad;
			if (r == MPROXY_FRAME && frame_print(&fr) == -1) {
				fprintf(stderr, "mproxy: cannot write to "
				    "stdout\n");
				goto done;
			}
		}
	}
	if (ferror(f)) {
		fprintf(stderr, "mproxy: %s: read error\n", inpath);
		goto done;
	}
	if (mproxy_decoder_finish(d) == -1)
		goto bad;
	if (fflush(stdout) != 0) {
		fprintf(stderr, "mproxy: cannot write to stdout\n");
		goto done;
	}
	result = EXIT_SUCCESS;
	goto done;
bad:
	fflush(stdout);
	fprintf(stderr, "mproxy: %s: malformed M-PROXY stream: %s\n", inpath,
	    mproxy_decoder_error(d));
done:
	mproxy_decoder_free(d);
	free(buf);
	if (f != stdin)
		fclose(f);
	return result;
}

int
main(int argc, char **argv)
{
	unsigned long long v;
	size_t max_data = MPROXY_DEFAULT_MAX_DATA;
	char *end;
	int i;

	if (argc >= 2 && (strcmp(argv[1], "-h") == 0 ||
	    strcmp(argv[1], "--help") == 0)) {
		usage(stdout);
		return EXIT_SUCCESS;
	}
	if (argc == 4 && strcmp(argv[1], "pack") == 0)
		return cmd_pack(argv[2], argv[3]);
	if (argc >= 3 && strcmp(argv[1], "unpack") == 0) {
		for (i = 2; i < argc - 1; i++) {
			if (strcmp(argv[i], "--max-data") != 0 ||
			    i + 1 >= argc - 1)
				break;
			errno = 0;
			v = strtoull(argv[i + 1], &end, 10);
			if (argv[i + 1][0] < '0' || argv[i + 1][0] > '9' ||
			    *end != '\0' || errno != 0 || v == 0 ||
			    v > SIZE_MAX) {
				fprintf(stderr, "mproxy: --max-data: '%s' is "
				    "not a byte count from 1 up\n",
				    argv[i + 1]);
				return EXIT_USAGE;
			}
			max_data = (size_t)v;
			i++;
		}
		if (i == argc - 1)
			return cmd_unpack(argv[i], max_data);
	}
	usage(stderr);
	return EXIT_USAGE;
}
