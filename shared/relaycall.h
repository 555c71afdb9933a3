/* One signed HTTP call to the relay: the easy handle both proxies start
 * every request from (URL, POST, HTTP/1.1, signing headers, timeouts,
 * TLS settings), and the reading of the relay's error bodies. */
#ifndef POSTERN_RELAYCALL_H
#define POSTERN_RELAYCALL_H

#include <stddef.h>
#include <curl/curl.h>

#include "key.h"

#define RELAYCALL_URL_MAX  512
#define RELAYCALL_NAME_MAX 64   /* server and port names, connection IDs */
#define RELAYCALL_PATH_MAX 1024

struct relaycall_conf {
	char  rc_base[RELAYCALL_URL_MAX];    /* "https://host:port" */
	char  rc_prefix[RELAYCALL_URL_MAX];  /* path prefix, "" or "/x" */
	const struct key *rc_key;
	long  rc_connect_timeout_ms;         /* TCP + TLS handshake; enforced
	                                      * by curlloop, not set on the
	                                      * handle (see curlloop.h) */
	const char *rc_cacert;               /* CURLOPT_CAINFO or NULL */
	int   rc_insecure;                   /* no certificate checks */
	const char *rc_pin;                  /* CURLOPT_PINNEDPUBLICKEY or NULL */
	long  rc_recv_buffer;                /* CURLOPT_BUFFERSIZE */
	long  rc_send_buffer;                /* CURLOPT_UPLOAD_BUFFERSIZE */
	/* Forward proxy: NULL leaves libcurl to read http_proxy,
	 * https_proxy, all_proxy and no_proxy from the environment; ""
	 * means none, whatever the environment says; otherwise the proxy's
	 * URL (CURLOPT_PROXY), used for every call, no_proxy or not. */
	const char *rc_proxy;
	const char *rc_proxy_cacert;         /* CURLOPT_PROXY_CAINFO or NULL */
};

/* Checks and splits the relay URL (http:// or https://, optional path
 * prefix, no query).  The other members are left for the caller. */
int relaycall_conf_url(struct relaycall_conf *rc, const char *url,
                       char *err, size_t errlen);

/* Checks a forward proxy's URL: http://[USER:PASS@]HOST:PORT (the port
 * is required: libcurl's default, 1080, is rarely right), or
 * https://HOST[:PORT] when this libcurl can speak TLS to a proxy; no
 * path, query or fragment.  -1 with err. */
int relaycall_proxy_url(const char *url, char *err, size_t errlen);

/* A POST to rc_base + rc_prefix + path, signed now.  extra: more header
 * lines, NULL-terminated, or NULL.  *hdrs receives the header list,
 * which must outlive the transfer (curl_slist_free_all after).  The
 * caller sets the body and the callbacks.  NULL with err on failure. */
CURL *relaycall_easy(const struct relaycall_conf *rc, const char *path,
                     const char *const *extra, struct curl_slist **hdrs,
                     char *err, size_t errlen);

/* "relay answered 502 ECONNREFUSED: connect to 127.0.0.1:1: Connection
 * refused" from a status and the relay's JSON error body (any body:
 * what is not JSON is quoted, cut and cleaned). */
void relaycall_describe(long status, const char *body, size_t len,
                        char *out, size_t outlen);

/* For a call that failed with result: what to check (a sentence), or
 * NULL.  Covers TLS (certificate refused, pin mismatch, handshake
 * failure) and a plain-HTTP URL for an HTTPS relay. */
const char *relaycall_hint(const struct relaycall_conf *rc, CURLcode result);
/* 1 when result means the relay's certificate or key was refused: no
 * network glitch, but something for the operator to fix. */
int relaycall_tls_refused(CURLcode result);

/* 1 when body is the relay's JSON error with this "code". */
int relaycall_code_is(const char *body, size_t len, const char *code);

/* 1 for a protocol name: 1..64 bytes of [A-Za-z0-9._-]. */
int relaycall_name_valid(const char *s);

#endif
