/* postern-client's options: the common ones plus -L / forward. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client.h"

void
client_options_init(struct client_options *co)
{
	memset(co, 0, sizeof(*co));
	proxy_settings_init(&co->co_ps);
}

void
client_options_free(struct client_options *co)
{
	proxy_settings_free(&co->co_ps);
	free(co->co_fwd);
	co->co_fwd = NULL;
	co->co_nfwd = 0;
}

/* [BIND:]LPORT:SERVER/PORT; BIND may be [V6]. */
int
client_forward_parse(const char *s, struct client_forward *f, char *err,
    size_t errlen)
{
	char left[NET_HOST_MAX + 16], tmp[NET_HOST_MAX + 32];
	const char *dest, *slash, *colon;
	size_t n;
	uint16_t lport;

	memset(f, 0, sizeof(*f));
	if ((colon = strrchr(s, ':')) == NULL || colon == s) {
		snprintf(err, errlen, "'%s': expected [BIND:]LPORT:SERVER/PORT, "
		    "e.g. 2222:nas/ssh", s);
		return -1;
	}
	dest = colon + 1;
	if ((slash = strchr(dest, '/')) == NULL) {
		snprintf(err, errlen, "'%s': the destination '%s' must be "
		    "SERVER/PORT, e.g. nas/ssh", s, dest);
		return -1;
	}
	n = (size_t)(slash - dest);
	if (n == 0 || n > RELAYCALL_NAME_MAX) {
		snprintf(err, errlen, "'%s': the server name must be 1 to %d "
		    "characters", s, RELAYCALL_NAME_MAX);
		return -1;
	}
	memcpy(f->cf_server, dest, n);
	f->cf_server[n] = '\0';
	if (strlen(slash + 1) > RELAYCALL_NAME_MAX)
		goto badport;
	snprintf(f->cf_port, sizeof(f->cf_port), "%s", slash + 1);
	if (!relaycall_name_valid(f->cf_server)) {
		snprintf(err, errlen, "'%s': server name '%s' may hold only "
		    "letters, digits, '.', '_' and '-'", s, f->cf_server);
		return -1;
	}
	if (!relaycall_name_valid(f->cf_port))
		goto badport;
	n = (size_t)(colon - s);
	if (n >= sizeof(left)) {
		snprintf(err, errlen, "'%s': the bind address is too long", s);
		return -1;
	}
	memcpy(left, s, n);
	left[n] = '\0';
	if (strchr(left, ':') == NULL) {
		/* LPORT alone: bind the default address. */
		snprintf(tmp, sizeof(tmp), "%s:%s", CLIENT_DEFAULT_BIND, left);
	} else
		snprintf(tmp, sizeof(tmp), "%s", left);
	if (net_split_hostport(tmp, f->cf_bind, sizeof(f->cf_bind), &lport, 1,
	    err, errlen) == -1) {
		char why[256];

		snprintf(why, sizeof(why), "%s", err);
		snprintf(err, errlen, "'%s': bad local address: %s (expected "
		    "[BIND:]LPORT, e.g. 2222 or 127.0.0.1:2222)", s, why);
		return -1;
	}
	f->cf_lport = lport;
	return 0;
badport:
	snprintf(err, errlen, "'%s': the port name after '/' must be 1 to %d "
	    "letters, digits, '.', '_' or '-'", s, RELAYCALL_NAME_MAX);
	return -1;
}

static int
set_forward(void *cfg, const char *v, char *err, size_t errlen)
{
	struct client_options *co = cfg;
	struct client_forward f, *nf;

	if (v == NULL || v[0] == '\0') {
		snprintf(err, errlen, "needs a value ([BIND:]LPORT:SERVER/PORT)");
		return -1;
	}
	if (client_forward_parse(v, &f, err, errlen) == -1)
		return -1;
	if (co->co_nfwd >= CLIENT_FORWARDS_MAX) {
		snprintf(err, errlen, "more than %d forwards",
		    CLIENT_FORWARDS_MAX);
		return -1;
	}
	nf = realloc(co->co_fwd, (co->co_nfwd + 1) * sizeof(*nf));
	if (nf == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	nf[co->co_nfwd++] = f;
	co->co_fwd = nf;
	return 0;
}

static void
clear_forward(void *cfg)
{
	struct client_options *co = cfg;

	free(co->co_fwd);
	co->co_fwd = NULL;
	co->co_nfwd = 0;
}

static const struct popt client_opts[] = {
	{ "forward", 'L', POPT_VALUE | POPT_LIST, set_forward, clear_forward,
	  "[BIND:]LPORT:SERVER/PORT",
	  "serve SERVER/PORT on local port LPORT (bind 127.0.0.1 unless BIND; "
	  "LPORT 0 picks a free port); repeatable (required)" },
	{ NULL, 0, 0, NULL, NULL, NULL, NULL },
};

static const struct popt *const client_tabs[] = {
	client_opts, proxy_common_opts, NULL
};

enum popt_result
client_options_parse(struct client_options *co, int argc, char **argv,
    char *err, size_t errlen)
{
	struct relaycall_conf rc;
	enum popt_result r;
	char why[256];

	r = popt_parse(client_tabs, "client", co, argc, argv, err, errlen);
	if (r != POPT_OK)
		return r;
	if (co->co_ps.ps_relay == NULL) {
		snprintf(err, errlen, "--relay URL is required (the relay, "
		    "e.g. https://relay.example)");
		return POPT_ERROR;
	}
	if (relaycall_conf_url(&rc, co->co_ps.ps_relay, why, sizeof(why)) ==
	    -1) {
		snprintf(err, errlen, "--relay: %s", why);
		return POPT_ERROR;
	}
	if (co->co_ps.ps_key == NULL) {
		snprintf(err, errlen, "--key FILE is required (make one with "
		    "postern-keygen -o FILE)");
		return POPT_ERROR;
	}
	if (co->co_nfwd == 0) {
		snprintf(err, errlen, "at least one -L [BIND:]LPORT:SERVER/PORT "
		    "is required, e.g. -L 2222:nas/ssh");
		return POPT_ERROR;
	}
	if (proxy_settings_check(&co->co_ps, err, errlen) == -1)
		return POPT_ERROR;
	return POPT_OK;
}

void
client_usage(FILE *f)
{
	fprintf(f, "usage: postern-client --relay URL --key FILE "
	    "-L [BIND:]LPORT:SERVER/PORT [-L ...]\n"
	    "                      [--config FILE] [-v|-q]...\n\n"
	    "Serves local TCP ports whose connections are tunnelled through "
	    "the relay\nto a postern-server.  Options (INI keys in [client] "
	    "have the same names,\nwith '_'; -L is 'forward'):\n");
	popt_usage(f, client_tabs);
}
