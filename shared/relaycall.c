/* Signed relay calls: the easy handle every proxy request starts from. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <jansson.h>

#include "auth.h"
#include "relaycall.h"

int
relaycall_name_valid(const char *s)
{
	size_t n = 0;

	for (; s[n] != '\0'; n++) {
		char ch = s[n];

		if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		    (ch >= '0' && ch <= '9') || ch == '.' || ch == '_' ||
		    ch == '-'))
			return 0;
		if (n >= RELAYCALL_NAME_MAX)
			return 0;
	}
	return n >= 1;
}

/* A URL's parts as libcurl splits them: NULL where absent, each freed by
 * relaycall_parts_free. */
struct relaycall_parts {
	char *rp_scheme, *rp_host, *rp_port, *rp_path, *rp_query, *rp_frag;
	char *rp_user;
};

static void
relaycall_parts_get(CURLU *u, struct relaycall_parts *p)
{
	curl_url_get(u, CURLUPART_SCHEME, &p->rp_scheme, 0);
	curl_url_get(u, CURLUPART_HOST, &p->rp_host, 0);
	curl_url_get(u, CURLUPART_PORT, &p->rp_port, 0);
	curl_url_get(u, CURLUPART_PATH, &p->rp_path, 0);
	curl_url_get(u, CURLUPART_QUERY, &p->rp_query, 0);
	curl_url_get(u, CURLUPART_FRAGMENT, &p->rp_frag, 0);
	curl_url_get(u, CURLUPART_USER, &p->rp_user, 0);
}

static void
relaycall_parts_free(struct relaycall_parts *p)
{
	curl_free(p->rp_scheme);
	curl_free(p->rp_host);
	curl_free(p->rp_port);
	curl_free(p->rp_path);
	curl_free(p->rp_query);
	curl_free(p->rp_frag);
	curl_free(p->rp_user);
}

/* 1 for the schemes Postern speaks to a relay or a proxy. */
static int
relaycall_scheme_ok(const char *scheme)
{
	return scheme != NULL && (strcmp(scheme, "http") == 0 ||
	    strcmp(scheme, "https") == 0);
}

int
relaycall_conf_url(struct relaycall_conf *rc, const char *url, char *err,
    size_t errlen)
{
	CURLU *u;
	struct relaycall_parts p = { 0 };
	size_t plen;
	int rv = -1;

	if ((u = curl_url()) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (strlen(url) >= RELAYCALL_URL_MAX) {
		snprintf(err, errlen, "relay URL is too long (at most %d bytes)",
		    RELAYCALL_URL_MAX - 1);
		goto done;
	}
	if (strstr(url, "://") == NULL ||
	    curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK) {
		snprintf(err, errlen, "relay URL '%s' is not a URL; expected "
		    "http://HOST:PORT or https://HOST", url);
		goto done;
	}
	relaycall_parts_get(u, &p);
	if (!relaycall_scheme_ok(p.rp_scheme)) {
		snprintf(err, errlen, "relay URL '%s': the scheme must be http "
		    "or https", url);
		goto done;
	}
	if (p.rp_host == NULL || p.rp_host[0] == '\0') {
		snprintf(err, errlen, "relay URL '%s' has no host", url);
		goto done;
	}
	if (p.rp_query != NULL || p.rp_frag != NULL || p.rp_user != NULL) {
		snprintf(err, errlen, "relay URL '%s': remove the query, "
		    "fragment or user name", url);
		goto done;
	}
	snprintf(rc->rc_base, sizeof(rc->rc_base), "%s://%s%s%s", p.rp_scheme,
	    p.rp_host, p.rp_port != NULL ? ":" : "",
	    p.rp_port != NULL ? p.rp_port : "");
	/* The prefix is signed as part of the path: a reverse proxy in
	 * front of the relay must pass it through unchanged. */
	snprintf(rc->rc_prefix, sizeof(rc->rc_prefix), "%s",
	    p.rp_path != NULL ? p.rp_path : "");
	plen = strlen(rc->rc_prefix);
	while (plen > 0 && rc->rc_prefix[plen - 1] == '/')
		rc->rc_prefix[--plen] = '\0';
	rv = 0;
done:
	relaycall_parts_free(&p);
	curl_url_cleanup(u);
	return rv;
}

int
relaycall_proxy_url(const char *url, char *err, size_t errlen)
{
	CURLU *u;
	struct relaycall_parts p = { 0 };
	const curl_version_info_data *vi;
	char shown[RELAYCALL_URL_MAX];
	const char *at, *sep;
	int rv = -1;

	if ((u = curl_url()) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (strlen(url) >= RELAYCALL_URL_MAX) {
		snprintf(err, errlen, "proxy URL is too long (at most %d bytes)",
		    RELAYCALL_URL_MAX - 1);
		goto done;
	}
	/* Messages never repeat a password given in the URL. */
	sep = strstr(url, "://");
	at = strrchr(sep != NULL ? sep : url, '@');
	if (at != NULL)
		snprintf(shown, sizeof(shown), "%.*s***%s",
		    sep != NULL ? (int)(sep + 3 - url) : 0, url, at);
	else
		snprintf(shown, sizeof(shown), "%s", url);
	if (sep == NULL) {
		snprintf(err, errlen, "proxy '%s' has no scheme; write "
		    "http://HOST:PORT (e.g. http://%s)", shown, shown);
		goto done;
	}
	if (curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) !=
	    CURLUE_OK) {
		snprintf(err, errlen, "proxy '%s' is not a URL; expected "
		    "http://HOST:PORT or https://HOST:PORT", shown);
		goto done;
	}
	relaycall_parts_get(u, &p);
	if (!relaycall_scheme_ok(p.rp_scheme)) {
		snprintf(err, errlen, "proxy '%s': the scheme must be http or "
		    "https (an HTTP proxy, reached in plain text or over TLS)",
		    shown);
		goto done;
	}
	if (p.rp_host == NULL || p.rp_host[0] == '\0') {
		snprintf(err, errlen, "proxy '%s' has no host", shown);
		goto done;
	}
	if (p.rp_port == NULL && strcmp(p.rp_scheme, "http") == 0) {
		snprintf(err, errlen, "proxy '%s' has no port; add it, e.g. "
		    "http://%s:3128", shown, p.rp_host);
		goto done;
	}
	if ((p.rp_path != NULL && strcmp(p.rp_path, "/") != 0 &&
	    p.rp_path[0] != '\0') || p.rp_query != NULL || p.rp_frag != NULL) {
		snprintf(err, errlen, "proxy '%s': remove the path, query or "
		    "fragment (a proxy is HOST:PORT)", shown);
		goto done;
	}
	vi = curl_version_info(CURLVERSION_NOW);
	if (strcmp(p.rp_scheme, "https") == 0 &&
	    !(vi->features & CURL_VERSION_HTTPS_PROXY)) {
		snprintf(err, errlen, "proxy '%s': this libcurl (%s) cannot "
		    "speak TLS to a proxy; use an http:// proxy (an https "
		    "relay is still reached end to end with CONNECT)", shown,
		    vi->version);
		goto done;
	}
	rv = 0;
done:
	relaycall_parts_free(&p);
	curl_url_cleanup(u);
	return rv;
}

static int
relaycall_header(struct curl_slist **hdrs, const char *name,
    const char *value)
{
	char line[256];
	struct curl_slist *n;

	snprintf(line, sizeof(line), "%s: %s", name, value);
	if ((n = curl_slist_append(*hdrs, line)) == NULL)
		return -1;
	*hdrs = n;
	return 0;
}

CURL *
relaycall_easy(const struct relaycall_conf *rc, const char *path,
    const char *const *extra, struct curl_slist **hdrs, char *err,
    size_t errlen)
{
	char full[RELAYCALL_PATH_MAX], url[RELAYCALL_URL_MAX + RELAYCALL_PATH_MAX];
	struct auth_headers ah;
	struct curl_slist *n;
	CURL *e;

	*hdrs = NULL;
	if ((size_t)snprintf(full, sizeof(full), "%s%s", rc->rc_prefix, path) >=
	    sizeof(full)) {
		snprintf(err, errlen, "request path too long");
		return NULL;
	}
	snprintf(url, sizeof(url), "%s%s", rc->rc_base, full);
	if (auth_sign(rc->rc_key, "POST", full, time(NULL), &ah, err,
	    errlen) == -1)
		return NULL;
	if (relaycall_header(hdrs, AUTH_H_KEY, ah.ah_key) == -1 ||
	    relaycall_header(hdrs, AUTH_H_TIMESTAMP, ah.ah_timestamp) == -1 ||
	    relaycall_header(hdrs, AUTH_H_NONCE, ah.ah_nonce) == -1 ||
	    relaycall_header(hdrs, AUTH_H_SIGNATURE, ah.ah_signature) == -1)
		goto oom;
	for (; extra != NULL && *extra != NULL; extra++) {
		if ((n = curl_slist_append(*hdrs, *extra)) == NULL)
			goto oom;
		*hdrs = n;
	}
	if ((e = curl_easy_init()) == NULL)
		goto oom;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, *hdrs);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "postern/1");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_NODELAY, 1L);
	/* Long polls and idle tunnels sit silent for minutes: keepalive
	 * probes find a dead relay or a NAT that forgot us. */
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPIDLE, 30L);
	curl_easy_setopt(e, CURLOPT_TCP_KEEPINTVL, 10L);
	if (rc->rc_recv_buffer > 0)
		curl_easy_setopt(e, CURLOPT_BUFFERSIZE, rc->rc_recv_buffer);
	if (rc->rc_send_buffer > 0)
		curl_easy_setopt(e, CURLOPT_UPLOAD_BUFFERSIZE,
		    rc->rc_send_buffer);
	if (rc->rc_cacert != NULL)
		curl_easy_setopt(e, CURLOPT_CAINFO, rc->rc_cacert);
	/* A pin without --cacert is the trust anchor by itself, as for a
	 * self-signed relay: with VERIFYPEER on, OpenSSL would fail such a
	 * certificate in the handshake, before libcurl compares its key with
	 * the pin.  libcurl (7.88, OpenSSL) checks the pin whether or not it
	 * checks the chain and the host name, so the pin still decides (a
	 * relay always shows a certificate: OpenSSL's default ciphers have
	 * no anonymous ones). */
	if (rc->rc_insecure || (rc->rc_pin != NULL && rc->rc_cacert == NULL)) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (rc->rc_pin != NULL)
		curl_easy_setopt(e, CURLOPT_PINNEDPUBLICKEY, rc->rc_pin);
	if (rc->rc_proxy != NULL) {
		/* "" also keeps libcurl from reading the environment. */
		curl_easy_setopt(e, CURLOPT_PROXY, rc->rc_proxy);
		/* The proxy given is for every call: an inherited no_proxy
		 * naming the relay must not route around it. */
		if (rc->rc_proxy[0] != '\0')
			curl_easy_setopt(e, CURLOPT_NOPROXY, "");
	}
	/* Through a proxy (ours or the environment's) to an https relay,
	 * curl would hand the proxy's "200 Connection established" and its
	 * headers to the header callbacks, which would read them as the
	 * relay's answer. */
	curl_easy_setopt(e, CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);
	if (rc->rc_proxy_cacert != NULL)
		curl_easy_setopt(e, CURLOPT_PROXY_CAINFO, rc->rc_proxy_cacert);
	return e;
oom:
	curl_slist_free_all(*hdrs);
	*hdrs = NULL;
	snprintf(err, errlen, "out of memory");
	return NULL;
}

int
relaycall_tls_refused(CURLcode result)
{
	return result == CURLE_PEER_FAILED_VERIFICATION ||
	    result == CURLE_SSL_PINNEDPUBKEYNOTMATCH ||
	    result == CURLE_SSL_CACERT_BADFILE;
}

const char *
relaycall_hint(const struct relaycall_conf *rc, CURLcode result)
{
	int tls_proxy = rc->rc_proxy != NULL &&
	    strncmp(rc->rc_proxy, "https://", 8) == 0;

	/* Curl reports a proxy's certificate as it does the relay's. */
	if (tls_proxy && (result == CURLE_PEER_FAILED_VERIFICATION ||
	    result == CURLE_SSL_CONNECT_ERROR)) {
		if (strncmp(rc->rc_base, "http://", 7) == 0)
			return "TLS to the https:// proxy failed: give its CA "
			    "with --proxy-cacert FILE, and check the host name "
			    "in --proxy (see docs/deployment.md)";
		return "TLS to the https:// proxy or to the relay failed: "
		    "check --proxy-cacert for the proxy and --cacert for the "
		    "relay (see docs/deployment.md)";
	}
	switch (result) {
	case CURLE_PEER_FAILED_VERIFICATION:
		if (rc->rc_cacert != NULL)
			return "the relay's certificate is not signed by a CA in "
			    "--cacert, or is not for the host name in --relay; "
			    "see TLS in docs/proxies.md";
		return "the relay's certificate is not signed by a CA this "
		    "system trusts, or is not for the host name in --relay: give "
		    "its CA with --cacert FILE, or pin its key with --pin "
		    "sha256//BASE64 (see TLS in docs/proxies.md)";
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
		return "the relay's public key is not the one --pin names (a "
		    "new key on the relay, or someone in between); see TLS in "
		    "docs/proxies.md";
	case CURLE_SSL_CACERT_BADFILE:
		return "--cacert must name a PEM file of CA certificates";
	case CURLE_SSL_CONNECT_ERROR:
		return "the TLS handshake failed: does the relay serve HTTPS on "
		    "that port?";
	case CURLE_GOT_NOTHING:
		if (strncmp(rc->rc_base, "http://", 7) == 0)
			return "if the relay serves HTTPS, its URL starts with "
			    "https://";
		return NULL;
	default:
		return NULL;
	}
}

/* Copies at most max bytes of s, printable ASCII only. */
static void
relaycall_clean(const char *s, size_t len, size_t max, char *out,
    size_t outlen)
{
	size_t i, o = 0;

	if (outlen == 0)
		return;
	for (i = 0; i < len && i < max && o + 1 < outlen; i++)
		out[o++] = (s[i] >= 0x20 && s[i] < 0x7f) ? s[i] : '?';
	out[o] = '\0';
}

void
relaycall_describe(long status, const char *body, size_t len, char *out,
    size_t outlen)
{
	char msg[256], code[72];
	json_t *j, *v;
	const char *m = NULL, *c = NULL;

	j = len > 0 ? json_loadb(body, len, 0, NULL) : NULL;
	if (j != NULL && json_is_object(j)) {
		if ((v = json_object_get(j, "error")) != NULL &&
		    json_is_string(v))
			m = json_string_value(v);
		else if ((v = json_object_get(j, "message")) != NULL &&
		    json_is_string(v))
			m = json_string_value(v);
		if ((v = json_object_get(j, "code")) != NULL &&
		    json_is_string(v))
			c = json_string_value(v);
	}
	if (m != NULL || c != NULL) {
		relaycall_clean(c ? c : "", c ? strlen(c) : 0, 64, code,
		    sizeof(code));
		relaycall_clean(m ? m : "", m ? strlen(m) : 0, 200, msg,
		    sizeof(msg));
		snprintf(out, outlen, "relay answered %ld%s%s: %s", status,
		    code[0] ? " " : "", code, msg[0] ? msg : "(no message)");
	} else if (len > 0) {
		relaycall_clean(body, len, 120, msg, sizeof(msg));
		snprintf(out, outlen, "relay answered %ld: '%s'", status, msg);
	} else
		snprintf(out, outlen, "relay answered %ld with no body", status);
	json_decref(j);
}

int
relaycall_code_is(const char *body, size_t len, const char *code)
{
	json_t *j, *c;
	int yes;

	if (body == NULL || len == 0 ||
	    (j = json_loadb(body, len, 0, NULL)) == NULL)
		return 0;
	c = json_object_get(j, "code");
	yes = json_is_string(c) && strcmp(json_string_value(c), code) == 0;
	json_decref(j);
	return yes;
}
