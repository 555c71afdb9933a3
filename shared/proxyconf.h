/* Settings of postern-server and postern-client: one table of options per
 * program, read from the command line and from an INI file section
 * (--config FILE), the command line winning.  Every INI key is the long
 * flag's name ("frame_max" is --frame-max or --frame_max). */
#ifndef POSTERN_PROXYCONF_H
#define POSTERN_PROXYCONF_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tunnel.h"

/* Defaults, documented in docs/proxies.md. */
#define PROXY_DEFAULT_KEEPALIVE_MS       25000
#define PROXY_DEFAULT_FRAME_MAX          65536
#define PROXY_DEFAULT_BUFFER             262144
#define PROXY_DEFAULT_MAX_TUNNELS        1024
#define PROXY_DEFAULT_CONNECT_TIMEOUT_MS 5000 /* below the relay's accept_timeout (10 s), so a dead target reads as 502 ETIMEDOUT, not 504 */
#define PROXY_DEFAULT_RELAY_TIMEOUT_MS   10000
/* Resuming and segments (docs/protocol.md, "Resuming tunnels"). */
#define PROXY_DEFAULT_TRANSPORT          TUNNEL_AUTO
#define PROXY_DEFAULT_WINDOW             (1024 * 1024)
#define PROXY_DEFAULT_RESUME_GRACE_MS    30000
#define PROXY_DEFAULT_PEER_TIMEOUT_MS    60000  /* above keepalive: a live peer pings every 25 s */
#define PROXY_DEFAULT_SEGMENT_BYTES      (256 * 1024)
#define PROXY_DEFAULT_SEGMENT_MS         200
#define PROXY_DEFAULT_PROBE_MS           3000
#define PROXY_DEFAULT_SHUTDOWN_GRACE_MS  2000 /* SIGTERM: tell peers, then exit */

#define PROXY_FRAME_MAX_LIMIT (1024 * 1024)     /* receivers' decoder limit */
#define PROXY_BUFFER_MIN      (16 * 1024)       /* one curl write chunk */
#define PROXY_BUFFER_LIMIT    (64 * 1024 * 1024)
#define PROXY_WINDOW_MIN      (64 * 1024)
#define PROXY_WINDOW_LIMIT    (64 * 1024 * 1024)
#define PROXY_SEGMENT_MIN     (16 * 1024)
/* One segment and its chunk framing stay under nginx's default
 * client_max_body_size of 1 MiB. */
#define PROXY_SEGMENT_LIMIT   (900 * 1024)
/* Room for a frame's header (and the seq/ack frames) in a segment: a data
 * frame of frame_max bytes must fit in one. */
#define PROXY_SEGMENT_HEADROOM 1024
#define PROXY_SEGMENT_TIME_LIMIT_S 60
#define PROXY_PROBE_MIN_MS    100     /* well above the peer's ack delay */
#define PROXY_TIME_LIMIT_S    3600    /* longest time any setting takes */

/* What both proxies share.  A program's option struct starts with this
 * (the common options' setters are handed the program's struct). */
struct proxy_settings {
	char    *ps_relay;              /* URL */
	char    *ps_key;                /* key file */
	char    *ps_config;             /* --config FILE, or NULL */
	uint64_t ps_keepalive_ms;       /* 0: no keepalives */
	size_t   ps_frame_max;
	size_t   ps_buffer;
	unsigned ps_max_tunnels;
	uint64_t ps_connect_timeout_ms;
	uint64_t ps_relay_timeout_ms;
	char    *ps_cacert;
	int      ps_insecure;
	char    *ps_pin;
	/* Forward proxy for every relay call: NULL = libcurl's environment
	 * variables (http_proxy, https_proxy, all_proxy, no_proxy); "" = no
	 * proxy at all (--proxy none); else http[s]://[USER:PASS@]HOST:PORT. */
	char    *ps_proxy;
	char    *ps_proxy_cacert;       /* CA bundle for an https:// proxy */
	/* Resuming tunnels: copied into struct tunnel_env. */
	enum tunnel_transport ps_transport;
	size_t   ps_window;
	uint64_t ps_resume_grace_ms;    /* 0: a break ends the tunnel */
	uint64_t ps_peer_timeout_ms;    /* 0: a silent download is never broken */
	size_t   ps_segment_bytes;
	uint64_t ps_segment_ms;
	uint64_t ps_probe_ms;
	uint64_t ps_shutdown_grace_ms;  /* 0: tunnels are reset at once */
	int      ps_verbosity;          /* -v count minus -q count */
};

void proxy_settings_init(struct proxy_settings *ps);
void proxy_settings_free(struct proxy_settings *ps);

enum {
	POPT_VALUE = 1,   /* takes a value */
	POPT_LIST  = 2,   /* repeatable; the command line replaces the file's */
	POPT_NOINI = 4,   /* command line only (-v, --config) */
};

/* Setters return 0, or -1 with err saying what is wrong with the value.
 * value is NULL for a flag without a value given on the command line. */
typedef int (*popt_set_fn)(void *cfg, const char *value, char *err,
                           size_t errlen);

struct popt {
	const char *po_name;     /* with '_' */
	char        po_short;    /* or 0 */
	int         po_flags;
	popt_set_fn po_set;
	void      (*po_clear)(void *cfg);   /* POPT_LIST only */
	const char *po_arg;      /* "URL", "FILE": shown in the usage */
	const char *po_help;
};

/* The options of struct proxy_settings; ends with a zeroed entry. */
extern const struct popt proxy_common_opts[];

enum popt_result { POPT_OK = 0, POPT_HELP = 1, POPT_ERROR = -1 };

/* Reads argv (argv[0] is skipped) and the --config file's [section].
 * tabs: NULL-terminated list of option tables.  POPT_ERROR with err
 * filled ("--frame-max: ...", "proxy.ini:7: unknown key 'x' in [client]"). */
enum popt_result popt_parse(const struct popt *const *tabs,
                            const char *section, void *cfg,
                            int argc, char **argv,
                            char *err, size_t errlen);

/* Checks what the settings name on disk (the --cacert file, a --pin
 * file) can be read, so that a typo stops the program at start-up rather
 * than failing every request, and that settings which bound each other
 * agree (--peer-timeout above --keepalive, a frame fits in a segment).
 * -1 with err. */
int proxy_settings_check(const struct proxy_settings *ps, char *err,
                         size_t errlen);

/* Prints every option with its help text. */
void popt_usage(FILE *f, const struct popt *const *tabs);

/* Value parsers shared by the setters. */
int popt_seconds(const char *v, double max_s, int allow_zero, uint64_t *ms,
                 char *err, size_t errlen);
int popt_size(const char *v, uint64_t min, uint64_t max, uint64_t *out,
              char *err, size_t errlen);
int popt_bool(const char *v, int *out, char *err, size_t errlen);
/* Replaces *dst with a copy of v. */
int popt_string(char **dst, const char *v, char *err, size_t errlen);

#endif
