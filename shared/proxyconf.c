/* Option tables for the proxies: command line and INI file. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <ini.h>

#include "proxyconf.h"
#include "relaycall.h"

void
proxy_settings_init(struct proxy_settings *ps)
{
	memset(ps, 0, sizeof(*ps));
	ps->ps_keepalive_ms = PROXY_DEFAULT_KEEPALIVE_MS;
	ps->ps_frame_max = PROXY_DEFAULT_FRAME_MAX;
	ps->ps_buffer = PROXY_DEFAULT_BUFFER;
	ps->ps_max_tunnels = PROXY_DEFAULT_MAX_TUNNELS;
	ps->ps_connect_timeout_ms = PROXY_DEFAULT_CONNECT_TIMEOUT_MS;
	ps->ps_relay_timeout_ms = PROXY_DEFAULT_RELAY_TIMEOUT_MS;
	ps->ps_transport = PROXY_DEFAULT_TRANSPORT;
	ps->ps_window = PROXY_DEFAULT_WINDOW;
	ps->ps_resume_grace_ms = PROXY_DEFAULT_RESUME_GRACE_MS;
	ps->ps_peer_timeout_ms = PROXY_DEFAULT_PEER_TIMEOUT_MS;
	ps->ps_segment_bytes = PROXY_DEFAULT_SEGMENT_BYTES;
	ps->ps_segment_ms = PROXY_DEFAULT_SEGMENT_MS;
	ps->ps_probe_ms = PROXY_DEFAULT_PROBE_MS;
	ps->ps_shutdown_grace_ms = PROXY_DEFAULT_SHUTDOWN_GRACE_MS;
}

void
proxy_settings_free(struct proxy_settings *ps)
{
	free(ps->ps_relay);
	free(ps->ps_key);
	free(ps->ps_config);
	free(ps->ps_cacert);
	free(ps->ps_pin);
	free(ps->ps_proxy);
	free(ps->ps_proxy_cacert);
	ps->ps_relay = ps->ps_key = ps->ps_config = NULL;
	ps->ps_cacert = ps->ps_pin = NULL;
	ps->ps_proxy = ps->ps_proxy_cacert = NULL;
}

int
proxy_settings_check(const struct proxy_settings *ps, char *err,
    size_t errlen)
{
	if (ps->ps_cacert != NULL && access(ps->ps_cacert, R_OK) == -1) {
		snprintf(err, errlen, "--cacert: cannot read %s: %s",
		    ps->ps_cacert, strerror(errno));
		return -1;
	}
	if (ps->ps_pin != NULL && strncmp(ps->ps_pin, "sha256//", 8) != 0 &&
	    access(ps->ps_pin, R_OK) == -1) {
		snprintf(err, errlen, "--pin: '%s' is neither sha256//BASE64 "
		    "nor a readable key file: %s", ps->ps_pin, strerror(errno));
		return -1;
	}
	if (ps->ps_proxy_cacert != NULL &&
	    access(ps->ps_proxy_cacert, R_OK) == -1) {
		snprintf(err, errlen, "--proxy-cacert: cannot read %s: %s",
		    ps->ps_proxy_cacert, strerror(errno));
		return -1;
	}
	if (ps->ps_proxy_cacert != NULL && (ps->ps_proxy == NULL ||
	    strncmp(ps->ps_proxy, "https://", 8) != 0)) {
		snprintf(err, errlen, "--proxy-cacert is for an https:// proxy; "
		    "give one with --proxy https://HOST:PORT, or drop "
		    "--proxy-cacert");
		return -1;
	}
	/* A live peer pings a quiet stream every keepalive: a peer timeout
	 * that short would break healthy idle tunnels. */
	if (ps->ps_peer_timeout_ms != 0 && ps->ps_keepalive_ms != 0 &&
	    ps->ps_peer_timeout_ms <= ps->ps_keepalive_ms) {
		snprintf(err, errlen, "--peer-timeout (%.6g s) must be longer "
		    "than --keepalive (%.6g s): a quiet but live peer sends a "
		    "ping only every keepalive; raise --peer-timeout (e.g. to "
		    "twice the keepalive) or set it to 0 to disable it",
		    ps->ps_peer_timeout_ms / 1000.0,
		    ps->ps_keepalive_ms / 1000.0);
		return -1;
	}
	if (ps->ps_window < ps->ps_frame_max) {
		snprintf(err, errlen, "--window (%zu) must be at least "
		    "--frame-max (%zu): a data frame is kept whole until it is "
		    "acknowledged", ps->ps_window, ps->ps_frame_max);
		return -1;
	}
	if (ps->ps_transport != TUNNEL_STREAM &&
	    ps->ps_frame_max + PROXY_SEGMENT_HEADROOM > ps->ps_segment_bytes) {
		snprintf(err, errlen, "--frame-max (%zu) must be at least %d "
		    "bytes below --segment-bytes (%zu): a segment carries whole "
		    "frames; lower --frame-max, raise --segment-bytes, or use "
		    "--transport stream", ps->ps_frame_max,
		    PROXY_SEGMENT_HEADROOM, ps->ps_segment_bytes);
		return -1;
	}
	return 0;
}

/* ---- value parsers ------------------------------------------------- */

int
popt_string(char **dst, const char *v, char *err, size_t errlen)
{
	char *c;

	if (v == NULL || v[0] == '\0') {
		snprintf(err, errlen, "needs a value");
		return -1;
	}
	if ((c = strdup(v)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	free(*dst);
	*dst = c;
	return 0;
}

int
popt_seconds(const char *v, double max_s, int allow_zero, uint64_t *ms,
    char *err, size_t errlen)
{
	char *end;
	double d, scale = 1000.0;

	if (v == NULL || v[0] == '\0')
		goto bad;
	errno = 0;
	d = strtod(v, &end);
	if (end == v || errno != 0 || !isfinite(d))
		goto bad;
	if (strcmp(end, "ms") == 0)
		scale = 1.0;
	else if (strcmp(end, "s") != 0 && *end != '\0')
		goto bad;
	d = d * scale;
	if (d < 0 || d > max_s * 1000.0)
		goto bad;
	if (d < 1.0 && !(allow_zero && d == 0))
		goto bad;
	*ms = (uint64_t)llround(d);
	return 0;
bad:
	snprintf(err, errlen, "'%s' is not a number of seconds from %s to %.0f "
	    "(e.g. 25, 0.5 or 250ms)", v ? v : "", allow_zero ? "0" : "0.001",
	    max_s);
	return -1;
}

int
popt_size(const char *v, uint64_t min, uint64_t max, uint64_t *out,
    char *err, size_t errlen)
{
	unsigned long long n;
	uint64_t mult = 1;
	char *end;

	if (v == NULL || v[0] < '0' || v[0] > '9')
		goto bad;
	errno = 0;
	n = strtoull(v, &end, 10);
	if (errno != 0)
		goto bad;
	if (strcasecmp(end, "k") == 0 || strcasecmp(end, "kib") == 0)
		mult = 1024;
	else if (strcasecmp(end, "m") == 0 || strcasecmp(end, "mib") == 0)
		mult = 1024 * 1024;
	else if (*end != '\0')
		goto bad;
	if (n > max / mult || n * mult < min || n * mult > max)
		goto bad;
	*out = n * mult;
	return 0;
bad:
	snprintf(err, errlen, "'%s' is not a whole number from %llu to %llu "
	    "(suffixes k and m multiply by 1024)", v ? v : "",
	    (unsigned long long)min, (unsigned long long)max);
	return -1;
}

int
popt_bool(const char *v, int *out, char *err, size_t errlen)
{
	static const char *const yes[] = { "1", "yes", "true", "on" };
	static const char *const no[] = { "0", "no", "false", "off" };
	size_t i;

	if (v == NULL) {
		*out = 1;
		return 0;
	}
	for (i = 0; i < 4; i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = 1;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = 0;
			return 0;
		}
	}
	snprintf(err, errlen, "'%s' is not yes or no", v);
	return -1;
}

/* ---- common options ------------------------------------------------ */

#define PS(cfg) ((struct proxy_settings *)(cfg))

static int
set_relay(void *cfg, const char *v, char *err, size_t errlen)
{
	return popt_string(&PS(cfg)->ps_relay, v, err, errlen);
}

static int
set_key(void *cfg, const char *v, char *err, size_t errlen)
{
	return popt_string(&PS(cfg)->ps_key, v, err, errlen);
}

static int
set_config(void *cfg, const char *v, char *err, size_t errlen)
{
	return popt_string(&PS(cfg)->ps_config, v, err, errlen);
}

static int
set_keepalive(void *cfg, const char *v, char *err, size_t errlen)
{
	return popt_seconds(v, 3600, 1, &PS(cfg)->ps_keepalive_ms, err, errlen);
}

static int
set_frame_max(void *cfg, const char *v, char *err, size_t errlen)
{
	uint64_t n;

	if (popt_size(v, 1, PROXY_FRAME_MAX_LIMIT, &n, err, errlen) == -1)
		return -1;
	PS(cfg)->ps_frame_max = (size_t)n;
	return 0;
}

static int
set_buffer(void *cfg, const char *v, char *err, size_t errlen)
{
	uint64_t n;

	if (popt_size(v, PROXY_BUFFER_MIN, PROXY_BUFFER_LIMIT, &n, err,
	    errlen) == -1)
		return -1;
	PS(cfg)->ps_buffer = (size_t)n;
	return 0;
}

static int
set_max_tunnels(void *cfg, const char *v, char *err, size_t errlen)
{
	uint64_t n;

	if (popt_size(v, 1, 1000000, &n, err, errlen) == -1)
		return -1;
	PS(cfg)->ps_max_tunnels = (unsigned)n;
	return 0;
}

static int
set_connect_timeout(void *cfg, const char *v, char *err, size_t errlen)
{
	return popt_seconds(v, 3600, 0, &PS(cfg)->ps_connect_timeout_ms, err,
	    errlen);
}

static int
set_relay_timeout(void *cfg, const char *v, char *err, size_t errlen)
{
	return popt_seconds(v, 3600, 0, &PS(cfg)->ps_relay_timeout_ms, err,
	    errlen);
}

static int
set_cacert(void *cfg, const char *v, char *err, size_t errlen)
{
	return popt_string(&PS(cfg)->ps_cacert, v, err, errlen);
}

static int
set_insecure(void *cfg, const char *v, char *err, size_t errlen)
{
	return popt_bool(v, &PS(cfg)->ps_insecure, err, errlen);
}

static int
set_pin(void *cfg, const char *v, char *err, size_t errlen)
{
	return popt_string(&PS(cfg)->ps_pin, v, err, errlen);
}

static int
set_proxy(void *cfg, const char *v, char *err, size_t errlen)
{
	char *c;

	/* Empty (an INI "proxy =") and "none" turn the environment's proxy
	 * off too: libcurl reads it only while CURLOPT_PROXY is unset. */
	if (v == NULL || v[0] == '\0' || strcasecmp(v, "none") == 0)
		v = "";
	else if (relaycall_proxy_url(v, err, errlen) == -1)
		return -1;
	if ((c = strdup(v)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	free(PS(cfg)->ps_proxy);
	PS(cfg)->ps_proxy = c;
	return 0;
}

static int
set_proxy_cacert(void *cfg, const char *v, char *err, size_t errlen)
{
	return popt_string(&PS(cfg)->ps_proxy_cacert, v, err, errlen);
}

static int
set_transport(void *cfg, const char *v, char *err, size_t errlen)
{
	if (v != NULL && strcasecmp(v, "auto") == 0)
		PS(cfg)->ps_transport = TUNNEL_AUTO;
	else if (v != NULL && strcasecmp(v, "stream") == 0)
		PS(cfg)->ps_transport = TUNNEL_STREAM;
	else if (v != NULL && strcasecmp(v, "segmented") == 0)
		PS(cfg)->ps_transport = TUNNEL_SEGMENTED;
	else {
		snprintf(err, errlen, "'%s' is not a transport; use stream, "
		    "segmented or auto", v ? v : "");
		return -1;
	}
	return 0;
}

static int
set_window(void *cfg, const char *v, char *err, size_t errlen)
{
	uint64_t n;

	if (popt_size(v, PROXY_WINDOW_MIN, PROXY_WINDOW_LIMIT, &n, err,
	    errlen) == -1)
		return -1;
	PS(cfg)->ps_window = (size_t)n;
	return 0;
}

static int
set_resume_grace(void *cfg, const char *v, char *err, size_t errlen)
{
	return popt_seconds(v, PROXY_TIME_LIMIT_S, 1,
	    &PS(cfg)->ps_resume_grace_ms, err, errlen);
}

static int
set_peer_timeout(void *cfg, const char *v, char *err, size_t errlen)
{
	return popt_seconds(v, PROXY_TIME_LIMIT_S, 1,
	    &PS(cfg)->ps_peer_timeout_ms, err, errlen);
}

static int
set_segment_bytes(void *cfg, const char *v, char *err, size_t errlen)
{
	uint64_t n;

	if (popt_size(v, PROXY_SEGMENT_MIN, PROXY_SEGMENT_LIMIT, &n, err,
	    errlen) == -1)
		return -1;
	PS(cfg)->ps_segment_bytes = (size_t)n;
	return 0;
}

static int
set_segment_time(void *cfg, const char *v, char *err, size_t errlen)
{
	return popt_seconds(v, PROXY_SEGMENT_TIME_LIMIT_S, 0,
	    &PS(cfg)->ps_segment_ms, err, errlen);
}

static int
set_probe_timeout(void *cfg, const char *v, char *err, size_t errlen)
{
	uint64_t ms;

	if (popt_seconds(v, PROXY_TIME_LIMIT_S, 0, &ms, err, errlen) == -1)
		return -1;
	if (ms < PROXY_PROBE_MIN_MS) {
		snprintf(err, errlen, "'%s' is too short: the peer may take "
		    "its ack delay and a round trip to answer; at least %gs",
		    v, PROXY_PROBE_MIN_MS / 1000.0);
		return -1;
	}
	PS(cfg)->ps_probe_ms = ms;
	return 0;
}

static int
set_shutdown_grace(void *cfg, const char *v, char *err, size_t errlen)
{
	return popt_seconds(v, PROXY_TIME_LIMIT_S, 1,
	    &PS(cfg)->ps_shutdown_grace_ms, err, errlen);
}

static int
set_verbose(void *cfg, const char *v, char *err, size_t errlen)
{
	(void)v;
	(void)err;
	(void)errlen;
	PS(cfg)->ps_verbosity++;
	return 0;
}

static int
set_quiet(void *cfg, const char *v, char *err, size_t errlen)
{
	(void)v;
	(void)err;
	(void)errlen;
	PS(cfg)->ps_verbosity--;
	return 0;
}

const struct popt proxy_common_opts[] = {
	{ "relay", 0, POPT_VALUE, set_relay, NULL, "URL",
	  "the relay, http://HOST:PORT or https://HOST (required)" },
	{ "key", 0, POPT_VALUE, set_key, NULL, "FILE",
	  "this proxy's key file from postern-keygen, mode 0600 (required)" },
	{ "config", 0, POPT_VALUE | POPT_NOINI, set_config, NULL, "FILE",
	  "read settings from FILE (INI); flags override it" },
	{ "keepalive", 0, POPT_VALUE, set_keepalive, NULL, "SECONDS",
	  "send a ping on an upload stream idle this long; 0 = never (25)" },
	{ "frame_max", 0, POPT_VALUE, set_frame_max, NULL, "BYTES",
	  "largest payload of one data frame (65536)" },
	{ "buffer", 0, POPT_VALUE, set_buffer, NULL, "BYTES",
	  "bytes buffered per direction per tunnel (262144)" },
	{ "max_tunnels", 0, POPT_VALUE, set_max_tunnels, NULL, "N",
	  "tunnels open at once; more are turned away (1024)" },
	{ "connect_timeout", 0, POPT_VALUE, set_connect_timeout, NULL,
	  "SECONDS", "time allowed to connect to a target (5)" },
	{ "relay_timeout", 0, POPT_VALUE, set_relay_timeout, NULL, "SECONDS",
	  "time allowed to connect to the relay, TCP and TLS (10)" },
	{ "cacert", 0, POPT_VALUE, set_cacert, NULL, "FILE",
	  "CA certificates to verify the relay with (PEM)" },
	{ "insecure", 0, 0, set_insecure, NULL, NULL,
	  "do not verify the relay's certificate (testing only)" },
	{ "pinned_pubkey", 0, POPT_VALUE, set_pin, NULL, "PIN",
	  "the relay's public key: sha256//BASE64 or a PEM/DER file" },
	{ "pin", 0, POPT_VALUE | POPT_NOINI, set_pin, NULL, "PIN",
	  "same as --pinned-pubkey" },
	{ "proxy", 0, POPT_VALUE, set_proxy, NULL, "URL",
	  "forward proxy for relay calls, http[s]://HOST:PORT; none: not "
	  "even the environment's http_proxy, https_proxy, all_proxy" },
	{ "proxy_cacert", 0, POPT_VALUE, set_proxy_cacert, NULL, "FILE",
	  "CA certificates to verify an https:// proxy with (PEM)" },
	{ "transport", 0, POPT_VALUE, set_transport, NULL, "MODE",
	  "stream, segmented (bounded requests) or auto: segments once "
	  "streams do not get through (auto)" },
	{ "window", 0, POPT_VALUE, set_window, NULL, "BYTES",
	  "unacknowledged bytes kept per tunnel to resend after a break (1m)" },
	{ "resume_grace", 0, POPT_VALUE, set_resume_grace, NULL, "SECONDS",
	  "time a tunnel tries to re-attach after a break; 0 = a break ends "
	  "it (30)" },
	{ "peer_timeout", 0, POPT_VALUE, set_peer_timeout, NULL, "SECONDS",
	  "a download silent this long is broken (above keepalive); 0 = "
	  "never (60)" },
	{ "segment_bytes", 0, POPT_VALUE, set_segment_bytes, NULL, "BYTES",
	  "largest body of one upload segment (256k, at most 900k)" },
	{ "segment_time", 0, POPT_VALUE, set_segment_time, NULL, "SECONDS",
	  "an upload segment ends this long after its first byte (0.2)" },
	{ "probe_timeout", 0, POPT_VALUE, set_probe_timeout, NULL, "SECONDS",
	  "auto: segments when streamed bytes go unacknowledged this long (3)" },
	{ "shutdown_grace", 0, POPT_VALUE, set_shutdown_grace, NULL, "SECONDS",
	  "on SIGTERM, time to tell open tunnels' peers before exiting (2; 0: "
	  "reset at once)" },
	{ "verbose", 'v', POPT_NOINI, set_verbose, NULL, NULL,
	  "log more (repeat for debug)" },
	{ "quiet", 'q', POPT_NOINI, set_quiet, NULL, NULL,
	  "log less (repeat for errors only)" },
	{ NULL, 0, 0, NULL, NULL, NULL, NULL },
};

/* ---- lookup -------------------------------------------------------- */

/* Compares an option name with '_' against a user's spelling where '-'
 * stands for '_' as well. */
static int
popt_name_eq(const char *name, const char *s, size_t slen)
{
	size_t i;

	for (i = 0; i < slen; i++) {
		char c = s[i] == '-' ? '_' : s[i];

		if (name[i] == '\0' || name[i] != c)
			return 0;
	}
	return name[i] == '\0';
}

static const struct popt *
popt_find_long(const struct popt *const *tabs, const char *s, size_t slen)
{
	const struct popt *o;

	for (; *tabs != NULL; tabs++)
		for (o = *tabs; o->po_name != NULL; o++)
			if (popt_name_eq(o->po_name, s, slen))
				return o;
	return NULL;
}

static const struct popt *
popt_find_short(const struct popt *const *tabs, char c)
{
	const struct popt *o;

	for (; *tabs != NULL; tabs++)
		for (o = *tabs; o->po_name != NULL; o++)
			if (o->po_short == c)
				return o;
	return NULL;
}

static void
popt_flag_name(const struct popt *o, char *out, size_t outlen)
{
	size_t i, n;

	n = snprintf(out, outlen, "--%s", o->po_name);
	for (i = 2; i < n && i < outlen; i++)
		if (out[i] == '_')
			out[i] = '-';
}

/* ---- INI ----------------------------------------------------------- */

struct popt_ini {
	FILE       *pi_f;
	const char *pi_path;
	int         pi_line;
	const struct popt *const *pi_tabs;
	const char *pi_section;
	void       *pi_cfg;
	char       *pi_err;
	size_t      pi_errlen;
	int         pi_failed;
};

static void
popt_ini_fail(struct popt_ini *pi, const char *fmt, const char *a,
    const char *b)
{
	char msg[512];

	if (pi->pi_failed)
		return;
	pi->pi_failed = 1;
	snprintf(msg, sizeof(msg), fmt, a, b);
	snprintf(pi->pi_err, pi->pi_errlen, "%s:%d: %s", pi->pi_path,
	    pi->pi_line, msg);
}

/* Counts lines for messages, and refuses lines inih would cut. */
static char *
popt_ini_reader(char *str, int num, void *stream)
{
	struct popt_ini *pi = stream;
	size_t n;

	if (pi->pi_failed || fgets(str, num, pi->pi_f) == NULL)
		return NULL;
	pi->pi_line++;
	n = strlen(str);
	if (n > 0 && str[n - 1] != '\n' && !feof(pi->pi_f)) {
		pi->pi_failed = 1;
		snprintf(pi->pi_err, pi->pi_errlen, "%s:%d: line too long (at "
		    "most %d bytes)", pi->pi_path, pi->pi_line, num - 3);
		return NULL;
	}
	return str;
}

static int
popt_ini_handler(void *user, const char *section, const char *name,
    const char *value)
{
	struct popt_ini *pi = user;
	const struct popt *o;
	char msg[320];

	if (pi->pi_failed)
		return 0;
	if (section[0] == '\0') {
		popt_ini_fail(pi, "'%s' is outside a section; put it under "
		    "[%s]", name, pi->pi_section);
		return 0;
	}
	if (strcmp(section, pi->pi_section) != 0) {
		popt_ini_fail(pi, "unknown section [%s]; this program reads "
		    "[%s]", section, pi->pi_section);
		return 0;
	}
	o = popt_find_long(pi->pi_tabs, name, strlen(name));
	if (o == NULL || (o->po_flags & POPT_NOINI) ||
	    strchr(name, '-') != NULL) {
		popt_ini_fail(pi, "unknown key '%s' in [%s]", name,
		    pi->pi_section);
		return 0;
	}
	if (o->po_set(pi->pi_cfg, value, msg, sizeof(msg)) == -1) {
		popt_ini_fail(pi, "%s: %s", name, msg);
		return 0;
	}
	return 1;
}

static int
popt_ini_load(const struct popt *const *tabs, const char *section,
    void *cfg, const char *path, char *err, size_t errlen)
{
	struct popt_ini pi;
	int rc;

	memset(&pi, 0, sizeof(pi));
	if ((pi.pi_f = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "cannot read config file %s: %s", path,
		    strerror(errno));
		return -1;
	}
	pi.pi_path = path;
	pi.pi_tabs = tabs;
	pi.pi_section = section;
	pi.pi_cfg = cfg;
	pi.pi_err = err;
	pi.pi_errlen = errlen;
	rc = ini_parse_stream(popt_ini_reader, &pi, popt_ini_handler, &pi);
	fclose(pi.pi_f);
	if (pi.pi_failed)
		return -1;
	if (rc > 0) {
		snprintf(err, errlen, "%s:%d: syntax error (expected [section] "
		    "or key = value)", path, rc);
		return -1;
	}
	if (rc < 0) {
		snprintf(err, errlen, "cannot parse config file %s", path);
		return -1;
	}
	return 0;
}

/* ---- command line -------------------------------------------------- */

struct popt_arg {
	const struct popt *pa_opt;
	const char        *pa_value;
};

enum popt_result
popt_parse(const struct popt *const *tabs, const char *section, void *cfg,
    int argc, char **argv, char *err, size_t errlen)
{
	struct popt_arg *args;
	struct proxy_settings *ps = cfg;
	const struct popt *o, *cleared[32];
	size_t nargs = 0, ncleared = 0, j;
	char msg[320], flag[64];
	const char *a, *eq, *v;
	int i, k, help = 0;
	enum popt_result rv = POPT_ERROR;

	if ((args = calloc((size_t)argc + 1, sizeof(*args))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return POPT_ERROR;
	}
	/* First pass: recognise everything, so that a typo is reported
	 * before any file is read. */
	for (i = 1; i < argc; i++) {
		a = argv[i];
		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			help = 1;
			continue;
		}
		if (a[0] != '-' || a[1] == '\0') {
			snprintf(err, errlen, "unexpected argument '%s'", a);
			goto done;
		}
		if (a[1] == '-') {
			eq = strchr(a + 2, '=');
			o = popt_find_long(tabs, a + 2,
			    eq ? (size_t)(eq - a - 2) : strlen(a + 2));
			if (o == NULL) {
				snprintf(err, errlen, "unknown option '%.*s'",
				    (int)(eq ? (size_t)(eq - a) : strlen(a)),
				    a);
				goto done;
			}
			popt_flag_name(o, flag, sizeof(flag));
			if (!(o->po_flags & POPT_VALUE)) {
				if (eq != NULL && o->po_short != 0) {
					snprintf(err, errlen, "%s takes no "
					    "value", flag);
					goto done;
				}
				v = eq ? eq + 1 : NULL;
			} else if (eq != NULL)
				v = eq + 1;
			else if (i + 1 < argc)
				v = argv[++i];
			else {
				snprintf(err, errlen, "%s needs a value (%s)",
				    flag, o->po_arg);
				goto done;
			}
			args[nargs].pa_opt = o;
			args[nargs++].pa_value = v;
			continue;
		}
		/* Short options: -vv, -q, -L VALUE, -LVALUE. */
		for (k = 1; a[k] != '\0'; k++) {
			if ((o = popt_find_short(tabs, a[k])) == NULL) {
				snprintf(err, errlen, "unknown option '-%c'",
				    a[k]);
				goto done;
			}
			if (!(o->po_flags & POPT_VALUE)) {
				args[nargs].pa_opt = o;
				args[nargs++].pa_value = NULL;
				continue;
			}
			if (a[k + 1] != '\0')
				v = a + k + 1;
			else if (i + 1 < argc)
				v = argv[++i];
			else {
				snprintf(err, errlen, "-%c needs a value (%s)",
				    a[k], o->po_arg);
				goto done;
			}
			args[nargs].pa_opt = o;
			args[nargs++].pa_value = v;
			break;
		}
	}
	if (help) {
		rv = POPT_HELP;
		goto done;
	}
	for (j = 0; j < nargs; j++)
		if (args[j].pa_opt->po_set == set_config &&
		    set_config(cfg, args[j].pa_value, msg, sizeof(msg)) == -1) {
			snprintf(err, errlen, "--config: %s", msg);
			goto done;
		}
	if (ps->ps_config != NULL && popt_ini_load(tabs, section, cfg,
	    ps->ps_config, err, errlen) == -1)
		goto done;
	for (j = 0; j < nargs; j++) {
		o = args[j].pa_opt;
		if (o->po_set == set_config)
			continue;
		popt_flag_name(o, flag, sizeof(flag));
		if ((o->po_flags & POPT_LIST) && o->po_clear != NULL) {
			size_t c;

			for (c = 0; c < ncleared && cleared[c] != o; c++)
				;
			if (c == ncleared && ncleared < 32) {
				o->po_clear(cfg);
				cleared[ncleared++] = o;
			}
		}
		if (o->po_set(cfg, args[j].pa_value, msg, sizeof(msg)) == -1) {
			if (o->po_short != 0 && o->po_flags & POPT_VALUE)
				snprintf(err, errlen, "-%c: %s", o->po_short,
				    msg);
			else
				snprintf(err, errlen, "%s: %s", flag, msg);
			goto done;
		}
	}
	rv = POPT_OK;
done:
	free(args);
	return rv;
}

void
popt_usage(FILE *f, const struct popt *const *tabs)
{
	const struct popt *o;
	char flag[64], left[96];

	for (; *tabs != NULL; tabs++)
		for (o = *tabs; o->po_name != NULL; o++) {
			popt_flag_name(o, flag, sizeof(flag));
			if (o->po_short)
				snprintf(left, sizeof(left), "-%c, %s%s%s",
				    o->po_short, flag, o->po_arg ? " " : "",
				    o->po_arg ? o->po_arg : "");
			else
				snprintf(left, sizeof(left), "    %s%s%s", flag,
				    o->po_arg ? " " : "",
				    o->po_arg ? o->po_arg : "");
			fprintf(f, "  %-30s %s\n", left, o->po_help);
		}
	fprintf(f, "  %-30s %s\n", "-h, --help", "show this help");
}
