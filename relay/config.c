/* relay.ini: the relay's settings and the keys it knows.
 *
 * inih does the name/value split; our line reader in front of it counts
 * lines (so every error names file:line), strips inline comments whatever
 * way inih was built, refuses over-long lines instead of letting inih
 * split them, and tracks the current section itself so that a section
 * with no keys is still seen. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ini.h>

#include "auth.h"
#include "key.h"
#include "relay.h"

enum config_section { SEC_NONE, SEC_RELAY, SEC_SERVER, SEC_CLIENT };

enum setting_type { SET_DURATION, SET_SECONDS, SET_COUNT, SET_SIZE, SET_ONOFF,
                    SET_ADDRESS, SET_PATH };

struct setting {
	const char        *st_name;
	enum setting_type  st_type;
	size_t             st_offset;
	uint64_t           st_min, st_max;   /* ms for durations */
};

#define CF(f) offsetof(struct relay_config, f)
#define KIB 1024ull
#define MIB (1024ull * 1024ull)
#define GIB (1024ull * 1024ull * 1024ull)

static const struct setting config_settings[] = {
	{ "listen",               SET_ADDRESS,  CF(cf_listen), 0, 0 },
	{ "listen_timeout",       SET_DURATION, CF(cf_listen_timeout_ms), 1, 3600000 },
	{ "listen_grace",         SET_DURATION, CF(cf_listen_grace_ms), 0, 3600000 },
	{ "connect_wait",         SET_DURATION, CF(cf_connect_wait_ms), 1, 3600000 },
	{ "accept_timeout",       SET_DURATION, CF(cf_accept_timeout_ms), 1, 3600000 },
	{ "idle_timeout",         SET_DURATION, CF(cf_idle_timeout_ms), 1, 7 * 86400000ull },
	{ "header_timeout",       SET_DURATION, CF(cf_header_timeout_ms), 1, 3600000 },
	{ "clock_skew",           SET_SECONDS,  CF(cf_clock_skew), 1, AUTH_MAX_SKEW_LIMIT },
	{ "max_nonces",           SET_COUNT,    CF(cf_max_nonces), 1, AUTH_MAX_NONCES_LIMIT },
	{ "pipe_buffer",          SET_SIZE,     CF(cf_pipe_buffer), 1 * KIB, 1 * GIB },
	{ "max_tunnels",          SET_COUNT,    CF(cf_max_tunnels), 1, 10000000 },
	{ "max_connections",      SET_COUNT,    CF(cf_max_connections), 1, 10000000 },
	{ "max_pending_connects", SET_COUNT,    CF(cf_max_pending_connects), 0, 10000000 },
	{ "max_refuse_body",      SET_SIZE,     CF(cf_max_refuse_body), 64, 1 * MIB },
	{ "connection_memory",    SET_SIZE,     CF(cf_connection_memory), 8 * KIB, 64 * MIB },
	{ "upload_memory",        SET_SIZE,     CF(cf_upload_memory), 8 * KIB, 64 * MIB },
	{ "status",               SET_ONOFF,    CF(cf_status), 0, 1 },
	{ "direct_write",         SET_ONOFF,    CF(cf_direct_write), 0, 1 },
	{ "tls_cert",             SET_PATH,     CF(cf_tls_cert), 0, 0 },
	{ "tls_key",              SET_PATH,     CF(cf_tls_key), 0, 0 },
	{ "resume_grace",         SET_DURATION, CF(cf_resume_grace_ms), 100, 86400000 },
	{ "peer_timeout",         SET_DURATION, CF(cf_peer_timeout_ms), 0, 7 * 86400000ull },
	{ "segment_bytes",        SET_SIZE,     CF(cf_segment_bytes), 1 * KIB, 1 * GIB },
	{ "segment_time",         SET_DURATION, CF(cf_segment_time_ms), 1, 60000 },
	{ "poll_time",            SET_DURATION, CF(cf_poll_time_ms), 1, 3600000 },
};
#define NSETTINGS (sizeof(config_settings) / sizeof(config_settings[0]))

struct config_parse {
	struct relay_config *cp_cf;
	FILE       *cp_file;
	const char *cp_name;
	int         cp_line;
	char       *cp_buf;
	size_t      cp_cap;
	int         cp_failed;
	char       *cp_err;
	size_t      cp_errlen;
	enum config_section cp_sec;
	size_t      cp_index;                /* current server or client */
	int         cp_relay_lines[NSETTINGS]; /* where each was set */
};

static void config_fail(struct config_parse *cp, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
config_fail(struct config_parse *cp, int line, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (cp->cp_failed)
		return;
	cp->cp_failed = 1;
	n = line > 0 ? snprintf(cp->cp_err, cp->cp_errlen, "%s:%d: ", cp->cp_name, line)
	    : snprintf(cp->cp_err, cp->cp_errlen, "%s: ", cp->cp_name);
	if (n < 0 || (size_t)n >= cp->cp_errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(cp->cp_err + n, cp->cp_errlen - (size_t)n, fmt, ap);
	va_end(ap);
}

/* ---- value parsers ---------------------------------------------------- */

/* Seconds with an optional fraction ("25", "0.5"), or a number with an
 * "ms" suffix.  Millisecond resolution. */
static int
config_parse_duration(const char *v, uint64_t *ms)
{
	uint64_t whole = 0, frac = 0, scale = 1000;
	const char *p = v;
	int digits = 0;

	while (isdigit((unsigned char)*p)) {
		if (whole > 100000000000ull)
			return -1;
		whole = whole * 10 + (uint64_t)(*p++ - '0');
		digits++;
	}
	if (strcmp(p, "ms") == 0 && digits > 0) {
		*ms = whole;
		return 0;
	}
	if (*p == '.') {
		p++;
		while (isdigit((unsigned char)*p)) {
			if (scale > 1) {
				scale /= 10;
				frac += (uint64_t)(*p - '0') * scale;
			} else if (*p != '0')
				return -1;   /* finer than a millisecond */
			p++;
			digits++;
		}
	}
	if (*p == 's')
		p++;
	if (*p != '\0' || digits == 0)
		return -1;
	*ms = whole * 1000 + frac;
	return 0;
}

static int
config_parse_uint(const char *v, uint64_t *out)
{
	uint64_t n = 0;
	const char *p = v;

	if (!isdigit((unsigned char)*p))
		return -1;
	while (isdigit((unsigned char)*p)) {
		if (n > (UINT64_MAX - 9) / 10)
			return -1;
		n = n * 10 + (uint64_t)(*p++ - '0');
	}
	*out = n;
	return *p == '\0' ? 0 : -1;
}

/* Bytes, with an optional binary suffix: 256k, 1M, 1G (KiB, MiB, GiB). */
static int
config_parse_size(const char *v, uint64_t *out)
{
	char num[32];
	size_t len = strlen(v);
	uint64_t mult = 1, n;

	if (len == 0 || len >= sizeof(num))
		return -1;
	memcpy(num, v, len + 1);
	switch (num[len - 1]) {
	case 'k': case 'K': mult = KIB; break;
	case 'm': case 'M': mult = MIB; break;
	case 'g': case 'G': mult = GIB; break;
	}
	if (mult != 1)
		num[len - 1] = '\0';
	if (config_parse_uint(num, &n) == -1 || n > UINT64_MAX / mult)
		return -1;
	*out = n * mult;
	return 0;
}

static void
config_format_limit(const struct setting *st, uint64_t v, char *buf, size_t len)
{
	if (st->st_type == SET_DURATION) {
		if (v % 1000 == 0)
			snprintf(buf, len, "%" PRIu64 " s", v / 1000);
		else
			snprintf(buf, len, "%" PRIu64 ".%03" PRIu64 " s", v / 1000, v % 1000);
	} else
		snprintf(buf, len, "%" PRIu64, v);
}

int
config_split_hostport(const char *s, char *host, size_t hostlen, char *port,
                      size_t portlen, char *err, size_t errlen)
{
	const char *colon, *h, *he;
	uint64_t pn;

	if (s[0] == '[') {
		he = strchr(s, ']');
		if (he == NULL || he[1] != ':') {
			snprintf(err, errlen, "'%s' is not HOST:PORT ([IPv6]:PORT for IPv6)", s);
			return -1;
		}
		h = s + 1;
		colon = he + 1;
	} else {
		colon = strrchr(s, ':');
		if (colon == NULL || memchr(s, ':', (size_t)(colon - s)) != NULL) {
			snprintf(err, errlen, "'%s' is not HOST:PORT ([IPv6]:PORT for IPv6)", s);
			return -1;
		}
		h = s;
		he = colon;
	}
	if (he == h || (size_t)(he - h) >= hostlen) {
		snprintf(err, errlen, "'%s' has no host (use 127.0.0.1, 0.0.0.0 or [::])", s);
		return -1;
	}
	if (config_parse_uint(colon + 1, &pn) == -1 || pn > 65535 ||
	    strlen(colon + 1) >= portlen) {
		snprintf(err, errlen, "'%s' has no valid port (0..65535)", s);
		return -1;
	}
	memcpy(host, h, (size_t)(he - h));
	host[he - h] = '\0';
	snprintf(port, portlen, "%" PRIu64, pn);
	return 0;
}

/* ---- sections ---------------------------------------------------------- */

static int
config_names_split(char *v, char **words, size_t max)
{
	size_t n = 0;
	char *save = NULL, *w;

	for (w = strtok_r(v, " \t,", &save); w != NULL; w = strtok_r(NULL, " \t,", &save)) {
		if (n == max)
			return -1;
		words[n++] = w;
	}
	return (int)n;
}

static int
config_relay_set(struct config_parse *cp, const char *name, const char *value)
{
	struct relay_config *cf = cp->cp_cf;
	const struct setting *st = NULL;
	char host[256], port[16], err[RELAY_ERR_MAX], lo[32], hi[32], **pp;
	int *flag;
	uint64_t v = 0;
	size_t i;

	for (i = 0; i < NSETTINGS; i++)
		if (strcmp(config_settings[i].st_name, name) == 0) {
			st = &config_settings[i];
			break;
		}
	if (st == NULL) {
		config_fail(cp, cp->cp_line, "unknown key '%s' in [relay]", name);
		return 0;
	}
	if (cp->cp_relay_lines[i] != 0) {
		config_fail(cp, cp->cp_line, "'%s' is set twice in [relay] (first on line %d)",
		    name, cp->cp_relay_lines[i]);
		return 0;
	}
	cp->cp_relay_lines[i] = cp->cp_line;
	if (st->st_offset == CF(cf_max_connections))
		cf->cf_max_connections_set = 1;

	switch (st->st_type) {
	case SET_ADDRESS:
		if (config_split_hostport(value, host, sizeof(host), port, sizeof(port),
		    err, sizeof(err)) == -1) {
			config_fail(cp, cp->cp_line, "listen: %s", err);
			return 0;
		}
		free(cf->cf_listen);
		if ((cf->cf_listen = strdup(value)) == NULL) {
			config_fail(cp, cp->cp_line, "out of memory");
			return 0;
		}
		return 1;
	case SET_PATH:
		/* Read when the relay starts (tls.c), so that a missing file
		 * is reported with the reason open() gives. */
		pp = (char **)(void *)((char *)cf + st->st_offset);
		free(*pp);
		if ((*pp = strdup(value)) == NULL) {
			config_fail(cp, cp->cp_line, "out of memory");
			return 0;
		}
		return 1;
	case SET_ONOFF:
		flag = (int *)(void *)((char *)cf + st->st_offset);
		if (strcmp(value, "on") == 0)
			*flag = 1;
		else if (strcmp(value, "off") == 0)
			*flag = 0;
		else {
			config_fail(cp, cp->cp_line, "%s must be 'on' or 'off', not '%s'",
			    name, value);
			return 0;
		}
		return 1;
	case SET_DURATION:
		if (config_parse_duration(value, &v) == -1) {
			config_fail(cp, cp->cp_line, "%s must be a number of seconds "
			    "(e.g. 25 or 0.5), not '%s'", name, value);
			return 0;
		}
		break;
	case SET_SECONDS:
	case SET_COUNT:
		if (config_parse_uint(value, &v) == -1) {
			config_fail(cp, cp->cp_line, "%s must be a whole number%s, not '%s'",
			    name, st->st_type == SET_SECONDS ? " of seconds" : "", value);
			return 0;
		}
		break;
	case SET_SIZE:
		if (config_parse_size(value, &v) == -1) {
			config_fail(cp, cp->cp_line, "%s must be a number of bytes "
			    "(suffixes k, M, G allowed), not '%s'", name, value);
			return 0;
		}
		break;
	}
	if (v < st->st_min || v > st->st_max) {
		config_format_limit(st, st->st_min, lo, sizeof(lo));
		config_format_limit(st, st->st_max, hi, sizeof(hi));
		config_fail(cp, cp->cp_line, "%s = %s is out of range (%s to %s)",
		    name, value, lo, hi);
		return 0;
	}
	*(uint64_t *)(void *)((char *)cf + st->st_offset) = v;
	return 1;
}

static int
config_key_set(struct config_parse *cp, uint8_t key[KEY_PUBLIC_BYTES], int *line,
               const char *what, const char *value)
{
	char err[RELAY_ERR_MAX];

	if (*line != 0) {
		config_fail(cp, cp->cp_line, "'key' is set twice in [%s] (first on line %d)",
		    what, *line);
		return 0;
	}
	if (key_public_parse(value, key, err, sizeof(err)) == -1) {
		config_fail(cp, cp->cp_line, "bad key in [%s]: %s", what, err);
		return 0;
	}
	*line = cp->cp_line;
	return 1;
}

static int
config_server_set(struct config_parse *cp, const char *name, char *value)
{
	struct relay_server *sv = &cp->cp_cf->cf_servers[cp->cp_index];
	char what[RELAY_NAME_MAX + 16], *words[256], **np;
	int n, i;

	snprintf(what, sizeof(what), "server %s", sv->sv_name);
	if (strcmp(name, "key") == 0)
		return config_key_set(cp, sv->sv_key, &sv->sv_key_line, what, value);
	if (strcmp(name, "ports") != 0) {
		config_fail(cp, cp->cp_line, "unknown key '%s' in [%s] (known: key, ports)",
		    name, what);
		return 0;
	}
	if ((n = config_names_split(value, words, 256)) <= 0) {
		config_fail(cp, cp->cp_line, n == 0 ? "ports is empty in [%s]" :
		    "too many ports on one line in [%s]; continue on another 'ports =' line",
		    what);
		return 0;
	}
	if (sv->sv_ports_line != 0 && sv->sv_ports == NULL) {
		config_fail(cp, cp->cp_line, "[%s] allows any port ('*') already", what);
		return 0;
	}
	if (strcmp(words[0], "*") == 0 && n == 1 && sv->sv_ports_line == 0) {
		sv->sv_ports_line = cp->cp_line;
		return 1;
	}
	for (i = 0; i < n; i++) {
		if (strcmp(words[i], "*") == 0) {
			config_fail(cp, cp->cp_line, "'*' (any port) cannot be mixed with "
			    "port names in [%s]", what);
			return 0;
		}
		if (!route_name_valid(words[i], strlen(words[i]))) {
			config_fail(cp, cp->cp_line, "bad port name '%s' in [%s]: use 1 to "
			    "%d characters from A-Z a-z 0-9 . _ -", words[i], what, RELAY_NAME_MAX);
			return 0;
		}
		if (config_server_offers(sv, words[i]) && sv->sv_ports != NULL)
			continue;   /* listed twice: harmless */
		np = realloc(sv->sv_ports, (sv->sv_nports + 1) * sizeof(*np));
		if (np == NULL) {
			config_fail(cp, cp->cp_line, "out of memory");
			return 0;
		}
		sv->sv_ports = np;
		if ((np[sv->sv_nports] = strdup(words[i])) == NULL) {
			config_fail(cp, cp->cp_line, "out of memory");
			return 0;
		}
		sv->sv_nports++;
	}
	sv->sv_ports_line = cp->cp_line;
	return 1;
}

static int
config_client_set(struct config_parse *cp, const char *name, char *value)
{
	struct relay_client *cl = &cp->cp_cf->cf_clients[cp->cp_index];
	struct relay_allow *na, *al;
	char what[RELAY_NAME_MAX + 16], *words[256], *slash;
	int n, i;

	snprintf(what, sizeof(what), "client %s", cl->cl_name);
	if (strcmp(name, "key") == 0)
		return config_key_set(cp, cl->cl_key, &cl->cl_key_line, what, value);
	if (strcmp(name, "allow") != 0) {
		config_fail(cp, cp->cp_line, "unknown key '%s' in [%s] (known: key, allow)",
		    name, what);
		return 0;
	}
	if ((n = config_names_split(value, words, 256)) <= 0) {
		config_fail(cp, cp->cp_line, n == 0 ? "allow is empty in [%s]" :
		    "too many entries on one line in [%s]; continue on another 'allow =' line",
		    what);
		return 0;
	}
	for (i = 0; i < n; i++) {
		slash = strchr(words[i], '/');
		if (slash == NULL || !route_name_valid(words[i], (size_t)(slash - words[i])) ||
		    (strcmp(slash + 1, "*") != 0 &&
		    !route_name_valid(slash + 1, strlen(slash + 1)))) {
			config_fail(cp, cp->cp_line, "bad allow entry '%s' in [%s]: write "
			    "SERVER/PORT or SERVER/*", words[i], what);
			return 0;
		}
		na = realloc(cl->cl_allow, (cl->cl_nallow + 1) * sizeof(*na));
		if (na == NULL) {
			config_fail(cp, cp->cp_line, "out of memory");
			return 0;
		}
		cl->cl_allow = na;
		al = &na[cl->cl_nallow];
		*slash = '\0';
		al->al_server = strdup(words[i]);
		al->al_port = strcmp(slash + 1, "*") == 0 ? NULL : strdup(slash + 1);
		al->al_line = cp->cp_line;
		cl->cl_nallow++;
		if (al->al_server == NULL || (strcmp(slash + 1, "*") != 0 && al->al_port == NULL)) {
			config_fail(cp, cp->cp_line, "out of memory");
			return 0;
		}
	}
	return 1;
}

static int
config_handler(void *user, const char *section, const char *name, const char *value)
{
	struct config_parse *cp = user;
	char buf[1024];

	(void)section;   /* tracked by the reader, which also sees empty sections */
	if (cp->cp_failed)
		return 0;
	if (*value == '\0') {
		config_fail(cp, cp->cp_line, "'%s' has no value", name);
		return 0;
	}
	if (strlen(value) >= sizeof(buf)) {
		config_fail(cp, cp->cp_line, "value of '%s' is too long", name);
		return 0;
	}
	strcpy(buf, value);
	switch (cp->cp_sec) {
	case SEC_NONE:
		config_fail(cp, cp->cp_line, "'%s' is outside any section; put settings "
		    "under [relay], [server NAME] or [client NAME]", name);
		return 0;
	case SEC_RELAY:
		return config_relay_set(cp, name, buf);
	case SEC_SERVER:
		return config_server_set(cp, name, buf);
	case SEC_CLIENT:
		return config_client_set(cp, name, buf);
	}
	return 0;
}

/* "[server nas]": opens a new server or client entry. */
static void
config_section(struct config_parse *cp, char *text)
{
	struct relay_config *cf = cp->cp_cf;
	char *name, *kind = text;
	size_t i;
	void *p;

	while (isspace((unsigned char)*kind))
		kind++;
	name = kind + strcspn(kind, " \t");
	if (*name != '\0')
		*name++ = '\0';
	while (isspace((unsigned char)*name))
		name++;
	i = strlen(name);
	while (i > 0 && isspace((unsigned char)name[i - 1]))
		name[--i] = '\0';

	if (strcmp(kind, "relay") == 0 && *name == '\0') {
		cp->cp_sec = SEC_RELAY;
		return;
	}
	if (strcmp(kind, "server") != 0 && strcmp(kind, "client") != 0) {
		config_fail(cp, cp->cp_line, "unknown section [%s%s%s] (known: [relay], "
		    "[server NAME], [client NAME])", kind, *name ? " " : "", name);
		return;
	}
	if (*name == '\0') {
		config_fail(cp, cp->cp_line, "section [%s] needs a name: [%s NAME]", kind, kind);
		return;
	}
	if (!route_name_valid(name, strlen(name))) {
		config_fail(cp, cp->cp_line, "bad %s name '%s': use 1 to %d characters "
		    "from A-Z a-z 0-9 . _ -", kind, name, RELAY_NAME_MAX);
		return;
	}
	if (kind[0] == 's') {
		for (i = 0; i < cf->cf_nservers; i++)
			if (strcmp(cf->cf_servers[i].sv_name, name) == 0) {
				config_fail(cp, cp->cp_line, "duplicate section [server %s] "
				    "(first on line %d)", name, cf->cf_servers[i].sv_line);
				return;
			}
		p = realloc(cf->cf_servers, (cf->cf_nservers + 1) * sizeof(*cf->cf_servers));
		if (p == NULL)
			goto oom;
		cf->cf_servers = p;
		memset(&cf->cf_servers[cf->cf_nservers], 0, sizeof(*cf->cf_servers));
		cf->cf_servers[cf->cf_nservers].sv_line = cp->cp_line;
		if ((cf->cf_servers[cf->cf_nservers].sv_name = strdup(name)) == NULL)
			goto oom;
		cp->cp_index = cf->cf_nservers++;
		cp->cp_sec = SEC_SERVER;
	} else {
		for (i = 0; i < cf->cf_nclients; i++)
			if (strcmp(cf->cf_clients[i].cl_name, name) == 0) {
				config_fail(cp, cp->cp_line, "duplicate section [client %s] "
				    "(first on line %d)", name, cf->cf_clients[i].cl_line);
				return;
			}
		p = realloc(cf->cf_clients, (cf->cf_nclients + 1) * sizeof(*cf->cf_clients));
		if (p == NULL)
			goto oom;
		cf->cf_clients = p;
		memset(&cf->cf_clients[cf->cf_nclients], 0, sizeof(*cf->cf_clients));
		cf->cf_clients[cf->cf_nclients].cl_line = cp->cp_line;
		if ((cf->cf_clients[cf->cf_nclients].cl_name = strdup(name)) == NULL)
			goto oom;
		cp->cp_index = cf->cf_nclients++;
		cp->cp_sec = SEC_CLIENT;
	}
	return;
oom:
	config_fail(cp, cp->cp_line, "out of memory");
}

/* inih's line source.  Each line handed on is either blank, a section
 * header or "name = value" with no leading blanks (so inih never treats a
 * line as a continuation) and no comment. */
static char *
config_reader(char *str, int num, void *stream)
{
	struct config_parse *cp = stream;
	ssize_t n;
	char *p, *c, *end, *eq, *colon;
	size_t len;

	if (cp->cp_failed)
		return NULL;
	n = getline(&cp->cp_buf, &cp->cp_cap, cp->cp_file);
	if (n < 0)
		return NULL;
	cp->cp_line++;
	if (memchr(cp->cp_buf, '\0', (size_t)n) != NULL) {
		config_fail(cp, cp->cp_line, "line contains a NUL byte");
		return NULL;
	}
	p = cp->cp_buf;
	if (cp->cp_line == 1 && memcmp(p, "\xEF\xBB\xBF", 3) == 0)
		p += 3;
	while (*p == ' ' || *p == '\t')
		p++;
	/* Comments: ';' or '#' at the start, or after a blank. */
	for (c = p; *c != '\0'; c++)
		if ((*c == ';' || *c == '#') && (c == p || c[-1] == ' ' || c[-1] == '\t')) {
			*c = '\0';
			break;
		}
	len = strlen(p);
	while (len > 0 && isspace((unsigned char)p[len - 1]))
		p[--len] = '\0';

	if (*p == '[') {
		end = strchr(p, ']');
		if (end == NULL || end[1] != '\0') {
			config_fail(cp, cp->cp_line, "malformed section header '%s': write "
			    "[relay], [server NAME] or [client NAME]", p);
			return NULL;
		}
		char sec[256];

		if ((size_t)(end - p) >= sizeof(sec)) {
			config_fail(cp, cp->cp_line, "section header is too long");
			return NULL;
		}
		memcpy(sec, p + 1, (size_t)(end - p - 1));
		sec[end - p - 1] = '\0';
		config_section(cp, sec);
		if (cp->cp_failed)
			return NULL;
	} else if (*p != '\0') {
		eq = strchr(p, '=');
		colon = strchr(p, ':');
		if (eq == NULL || eq == p || (colon != NULL && colon < eq)) {
			config_fail(cp, cp->cp_line, "expected 'name = value', a [section] or "
			    "a comment, not '%s'", p);
			return NULL;
		}
	}
	if (num < 3 || len + 2 > (size_t)num) {
		config_fail(cp, cp->cp_line, "line is longer than %d bytes; split long "
		    "'ports' or 'allow' lists over several lines", num - 2);
		return NULL;
	}
	memcpy(str, p, len);
	str[len] = '\n';
	str[len + 1] = '\0';
	return str;
}

/* The line a [relay] setting was given on, 0 if it was not. */
static int
config_relay_line(const struct config_parse *cp, const char *name)
{
	size_t i;

	for (i = 0; i < NSETTINGS; i++)
		if (strcmp(config_settings[i].st_name, name) == 0)
			return cp->cp_relay_lines[i];
	return 0;
}

static void
config_validate(struct config_parse *cp)
{
	struct relay_config *cf = cp->cp_cf;
	const struct relay_server *sv;
	const struct relay_allow *al;
	size_t i, j, k;

	/* HTTPS needs both files; one alone is a mistake, not plain HTTP. */
	if ((cf->cf_tls_cert == NULL) != (cf->cf_tls_key == NULL)) {
		config_fail(cp, config_relay_line(cp, cf->cf_tls_cert != NULL ?
		    "tls_cert" : "tls_key"), "%s is set but %s is not: HTTPS "
		    "needs both the certificate and its key (or neither, for "
		    "plain HTTP)", cf->cf_tls_cert != NULL ? "tls_cert" :
		    "tls_key", cf->cf_tls_cert != NULL ? "tls_key" : "tls_cert");
		return;
	}

	for (i = 0; i < cf->cf_nservers; i++) {
		sv = &cf->cf_servers[i];
		if (sv->sv_key_line == 0) {
			config_fail(cp, sv->sv_line, "[server %s] has no 'key = ed25519:...' "
			    "line", sv->sv_name);
			return;
		}
		for (j = 0; j < i; j++)
			if (memcmp(cf->cf_servers[j].sv_key, sv->sv_key, KEY_PUBLIC_BYTES) == 0) {
				config_fail(cp, sv->sv_key_line, "[server %s] has the same key as "
				    "[server %s] (line %d); give each server its own key",
				    sv->sv_name, cf->cf_servers[j].sv_name,
				    cf->cf_servers[j].sv_key_line);
				return;
			}
	}
	for (i = 0; i < cf->cf_nclients; i++) {
		const struct relay_client *cl = &cf->cf_clients[i];

		if (cl->cl_key_line == 0) {
			config_fail(cp, cl->cl_line, "[client %s] has no 'key = ed25519:...' "
			    "line", cl->cl_name);
			return;
		}
		if (cl->cl_nallow == 0) {
			config_fail(cp, cl->cl_line, "[client %s] has no 'allow' line, so it "
			    "could connect nowhere (write e.g. allow = nas/ssh)", cl->cl_name);
			return;
		}
		for (j = 0; j < i; j++)
			if (memcmp(cf->cf_clients[j].cl_key, cl->cl_key, KEY_PUBLIC_BYTES) == 0) {
				config_fail(cp, cl->cl_key_line, "[client %s] has the same key as "
				    "[client %s] (line %d); give each client its own key",
				    cl->cl_name, cf->cf_clients[j].cl_name,
				    cf->cf_clients[j].cl_key_line);
				return;
			}
		for (k = 0; k < cl->cl_nallow; k++) {
			al = &cl->cl_allow[k];
			if ((sv = config_server(cf, al->al_server)) == NULL) {
				config_fail(cp, al->al_line, "[client %s] allows '%s/%s' but there "
				    "is no [server %s] section", cl->cl_name, al->al_server,
				    al->al_port ? al->al_port : "*", al->al_server);
				return;
			}
			if (al->al_port != NULL && !config_server_offers(sv, al->al_port)) {
				config_fail(cp, al->al_line, "[client %s] allows '%s/%s' but "
				    "[server %s] does not list port '%s' in its ports",
				    cl->cl_name, al->al_server, al->al_port, al->al_server,
				    al->al_port);
				return;
			}
		}
	}
}

struct relay_config *
config_load_stream(FILE *f, const char *name, char *err, size_t errlen)
{
	struct config_parse cp;
	struct relay_config *cf;
	int rc;

	if ((cf = calloc(1, sizeof(*cf))) == NULL) {
		snprintf(err, errlen, "%s: out of memory", name);
		return NULL;
	}
	cf->cf_listen_timeout_ms = CONFIG_DEFAULT_LISTEN_TIMEOUT_MS;
	cf->cf_listen_grace_ms = CONFIG_DEFAULT_LISTEN_GRACE_MS;
	cf->cf_connect_wait_ms = CONFIG_DEFAULT_CONNECT_WAIT_MS;
	cf->cf_accept_timeout_ms = CONFIG_DEFAULT_ACCEPT_TIMEOUT_MS;
	cf->cf_idle_timeout_ms = CONFIG_DEFAULT_IDLE_TIMEOUT_MS;
	cf->cf_header_timeout_ms = CONFIG_DEFAULT_HEADER_TIMEOUT_MS;
	cf->cf_clock_skew = CONFIG_DEFAULT_CLOCK_SKEW;
	cf->cf_max_nonces = CONFIG_DEFAULT_MAX_NONCES;
	cf->cf_pipe_buffer = CONFIG_DEFAULT_PIPE_BUFFER;
	cf->cf_max_tunnels = CONFIG_DEFAULT_MAX_TUNNELS;
	cf->cf_max_connections = CONFIG_DEFAULT_MAX_CONNECTIONS;
	cf->cf_max_pending_connects = CONFIG_DEFAULT_MAX_PENDING;
	cf->cf_max_refuse_body = CONFIG_DEFAULT_MAX_REFUSE_BODY;
	cf->cf_connection_memory = CONFIG_DEFAULT_CONNECTION_MEMORY;
	cf->cf_direct_write = 1;
	cf->cf_upload_memory = CONFIG_DEFAULT_UPLOAD_MEMORY;
	cf->cf_resume_grace_ms = CONFIG_DEFAULT_RESUME_GRACE_MS;
	cf->cf_peer_timeout_ms = CONFIG_DEFAULT_PEER_TIMEOUT_MS;
	cf->cf_segment_bytes = CONFIG_DEFAULT_SEGMENT_BYTES;
	cf->cf_segment_time_ms = CONFIG_DEFAULT_SEGMENT_TIME_MS;
	cf->cf_poll_time_ms = CONFIG_DEFAULT_POLL_TIME_MS;

	memset(&cp, 0, sizeof(cp));
	cp.cp_cf = cf;
	cp.cp_file = f;
	cp.cp_name = name;
	cp.cp_err = err;
	cp.cp_errlen = errlen;
	cp.cp_sec = SEC_NONE;

	rc = ini_parse_stream(config_reader, &cp, config_handler, &cp);
	if (!cp.cp_failed && ferror(f))
		config_fail(&cp, cp.cp_line, "read error: %s", strerror(errno));
	if (!cp.cp_failed && rc != 0)
		config_fail(&cp, rc > 0 ? rc : 0, "cannot parse this line");
	if (!cp.cp_failed && cf->cf_listen == NULL &&
	    (cf->cf_listen = strdup(CONFIG_DEFAULT_LISTEN)) == NULL)
		config_fail(&cp, 0, "out of memory");
	if (!cp.cp_failed)
		config_validate(&cp);
	free(cp.cp_buf);
	if (cp.cp_failed) {
		config_free(cf);
		return NULL;
	}
	return cf;
}

struct relay_config *
config_load(const char *path, char *err, size_t errlen)
{
	struct relay_config *cf;
	FILE *f;

	if ((f = fopen(path, "r")) == NULL) {
		snprintf(err, errlen, "cannot open config %s: %s", path, strerror(errno));
		return NULL;
	}
	cf = config_load_stream(f, path, err, errlen);
	fclose(f);
	return cf;
}

void
config_free(struct relay_config *cf)
{
	size_t i, j;

	if (cf == NULL)
		return;
	for (i = 0; i < cf->cf_nservers; i++) {
		free(cf->cf_servers[i].sv_name);
		for (j = 0; j < cf->cf_servers[i].sv_nports; j++)
			free(cf->cf_servers[i].sv_ports[j]);
		free(cf->cf_servers[i].sv_ports);
	}
	free(cf->cf_servers);
	for (i = 0; i < cf->cf_nclients; i++) {
		free(cf->cf_clients[i].cl_name);
		for (j = 0; j < cf->cf_clients[i].cl_nallow; j++) {
			free(cf->cf_clients[i].cl_allow[j].al_server);
			free(cf->cf_clients[i].cl_allow[j].al_port);
		}
		free(cf->cf_clients[i].cl_allow);
	}
	free(cf->cf_clients);
	free(cf->cf_listen);
	free(cf->cf_tls_cert);
	free(cf->cf_tls_key);
	free(cf);
}

const struct relay_server *
config_server(const struct relay_config *cf, const char *name)
{
	size_t i;

	for (i = 0; i < cf->cf_nservers; i++)
		if (strcmp(cf->cf_servers[i].sv_name, name) == 0)
			return &cf->cf_servers[i];
	return NULL;
}

const struct relay_server *
config_server_by_key(const struct relay_config *cf, const uint8_t key[KEY_PUBLIC_BYTES])
{
	size_t i;

	for (i = 0; i < cf->cf_nservers; i++)
		if (memcmp(cf->cf_servers[i].sv_key, key, KEY_PUBLIC_BYTES) == 0)
			return &cf->cf_servers[i];
	return NULL;
}

const struct relay_client *
config_client_by_key(const struct relay_config *cf, const uint8_t key[KEY_PUBLIC_BYTES])
{
	size_t i;

	for (i = 0; i < cf->cf_nclients; i++)
		if (memcmp(cf->cf_clients[i].cl_key, key, KEY_PUBLIC_BYTES) == 0)
			return &cf->cf_clients[i];
	return NULL;
}

int
config_server_offers(const struct relay_server *sv, const char *port)
{
	size_t i;

	if (sv->sv_ports == NULL)
		return 1;
	for (i = 0; i < sv->sv_nports; i++)
		if (strcmp(sv->sv_ports[i], port) == 0)
			return 1;
	return 0;
}

int
config_client_may(const struct relay_client *cl, const char *server, const char *port)
{
	size_t i;

	for (i = 0; i < cl->cl_nallow; i++)
		if (strcmp(cl->cl_allow[i].al_server, server) == 0 &&
		    (cl->cl_allow[i].al_port == NULL ||
		    strcmp(cl->cl_allow[i].al_port, port) == 0))
			return 1;
	return 0;
}
