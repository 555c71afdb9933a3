/* postern-server's options: the common ones plus name, expose and
 * listens_per_port. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "server.h"

void
server_options_init(struct server_options *so)
{
	memset(so, 0, sizeof(*so));
	proxy_settings_init(&so->so_ps);
	so->so_listens_per_port = SERVER_DEFAULT_LISTENS_PER_PORT;
	so->so_replaced_grace_ms = SERVER_DEFAULT_REPLACED_GRACE_MS;
}

void
server_options_free(struct server_options *so)
{
	proxy_settings_free(&so->so_ps);
	free(so->so_name);
	free(so->so_exp);
	so->so_name = NULL;
	so->so_exp = NULL;
	so->so_nexp = 0;
}

/* PORT=tcp://HOST:PORT */
int
server_expose_parse(const char *s, struct server_expose *e, char *err,
    size_t errlen)
{
	const char *eq;
	char why[256];
	size_t n;

	memset(e, 0, sizeof(*e));
	if ((eq = strchr(s, '=')) == NULL) {
		snprintf(err, errlen, "'%s': expected PORT=tcp://HOST:PORT, e.g. "
		    "ssh=tcp://127.0.0.1:22", s);
		return -1;
	}
	n = (size_t)(eq - s);
	if (n == 0 || n > RELAYCALL_NAME_MAX) {
		snprintf(err, errlen, "'%s': the port name before '=' must be 1 "
		    "to %d characters", s, RELAYCALL_NAME_MAX);
		return -1;
	}
	memcpy(e->se_port, s, n);
	e->se_port[n] = '\0';
	if (!relaycall_name_valid(e->se_port)) {
		snprintf(err, errlen, "'%s': port name '%s' may hold only "
		    "letters, digits, '.', '_' and '-'", s, e->se_port);
		return -1;
	}
	if (net_parse_target(eq + 1, e->se_host, sizeof(e->se_host),
	    &e->se_tport, why, sizeof(why)) == -1) {
		snprintf(err, errlen, "'%s': bad target: %s (expected "
		    "tcp://HOST:PORT)", s, why);
		return -1;
	}
	return 0;
}

#define SO(cfg) ((struct server_options *)(cfg))

static int
set_name(void *cfg, const char *v, char *err, size_t errlen)
{
	if (v == NULL || !relaycall_name_valid(v)) {
		snprintf(err, errlen, "'%s' is not a server name (1 to %d "
		    "letters, digits, '.', '_' or '-')", v ? v : "",
		    RELAYCALL_NAME_MAX);
		return -1;
	}
	return popt_string(&SO(cfg)->so_name, v, err, errlen);
}

static int
set_expose(void *cfg, const char *v, char *err, size_t errlen)
{
	struct server_options *so = cfg;
	struct server_expose e, *ne;
	size_t i;

	if (v == NULL || v[0] == '\0') {
		snprintf(err, errlen, "needs a value (PORT=tcp://HOST:PORT)");
		return -1;
	}
	if (server_expose_parse(v, &e, err, errlen) == -1)
		return -1;
	for (i = 0; i < so->so_nexp; i++)
		if (strcmp(so->so_exp[i].se_port, e.se_port) == 0) {
			snprintf(err, errlen, "port name '%s' is exposed twice",
			    e.se_port);
			return -1;
		}
	if (so->so_nexp >= SERVER_EXPOSES_MAX) {
		snprintf(err, errlen, "more than %d exposed ports",
		    SERVER_EXPOSES_MAX);
		return -1;
	}
	if ((ne = realloc(so->so_exp, (so->so_nexp + 1) * sizeof(*ne))) ==
	    NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	ne[so->so_nexp++] = e;
	so->so_exp = ne;
	return 0;
}

static void
clear_expose(void *cfg)
{
	struct server_options *so = cfg;

	free(so->so_exp);
	so->so_exp = NULL;
	so->so_nexp = 0;
}

static int
set_listens(void *cfg, const char *v, char *err, size_t errlen)
{
	uint64_t n;

	if (popt_size(v, 1, SERVER_LISTENS_PER_PORT_MAX, &n, err, errlen) == -1)
		return -1;
	SO(cfg)->so_listens_per_port = (unsigned)n;
	return 0;
}

static int
set_replaced_grace(void *cfg, const char *v, char *err, size_t errlen)
{
	return popt_seconds(v, 3600, 1, &SO(cfg)->so_replaced_grace_ms, err,
	    errlen);
}

static const struct popt server_opts[] = {
	{ "name", 0, POPT_VALUE, set_name, NULL, "NAME",
	  "this server's name in the relay config (required)" },
	{ "expose", 0, POPT_VALUE | POPT_LIST, set_expose, clear_expose,
	  "PORT=tcp://HOST:PORT",
	  "offer the target HOST:PORT to clients as port name PORT; "
	  "repeatable (required)" },
	{ "listens_per_port", 0, POPT_VALUE, set_listens, NULL, "N",
	  "listens kept outstanding per port (2)" },
	{ "replaced_grace", 0, POPT_VALUE, set_replaced_grace, NULL, "S",
	  "once another postern-server with this key took over the name, "
	  "open tunnels may finish for this long before the process exits "
	  "with status 1; 0 ends them at once (30)" },
	{ NULL, 0, 0, NULL, NULL, NULL, NULL },
};

static const struct popt *const server_tabs[] = {
	server_opts, proxy_common_opts, NULL
};

enum popt_result
server_options_parse(struct server_options *so, int argc, char **argv,
    char *err, size_t errlen)
{
	struct relaycall_conf rc;
	enum popt_result r;
	char why[256];

	r = popt_parse(server_tabs, "server", so, argc, argv, err, errlen);
	if (r != POPT_OK)
		return r;
	if (so->so_ps.ps_relay == NULL) {
		snprintf(err, errlen, "--relay URL is required (the relay, "
		    "e.g. https://relay.example)");
		return POPT_ERROR;
	}
	if (relaycall_conf_url(&rc, so->so_ps.ps_relay, why, sizeof(why)) ==
	    -1) {
		snprintf(err, errlen, "--relay: %s", why);
		return POPT_ERROR;
	}
	if (so->so_name == NULL) {
		snprintf(err, errlen, "--name NAME is required (this server's "
		    "name in the relay config)");
		return POPT_ERROR;
	}
	if (so->so_ps.ps_key == NULL) {
		snprintf(err, errlen, "--key FILE is required (make one with "
		    "postern-keygen -o FILE)");
		return POPT_ERROR;
	}
	if (so->so_nexp == 0) {
		snprintf(err, errlen, "at least one --expose PORT=tcp://HOST:PORT "
		    "is required, e.g. --expose ssh=tcp://127.0.0.1:22");
		return POPT_ERROR;
	}
	if (proxy_settings_check(&so->so_ps, err, errlen) == -1)
		return POPT_ERROR;
	return POPT_OK;
}

void
server_usage(FILE *f)
{
	fprintf(f, "usage: postern-server --relay URL --name NAME --key FILE "
	    "--expose PORT=tcp://HOST:PORT\n"
	    "                      [--expose ...] [--config FILE] "
	    "[-v|-q]...\n\n"
	    "Registers NAME with the relay and connects clients to local "
	    "targets.\nOptions (INI keys in [server] have the same names, "
	    "with '_'):\n");
	popt_usage(f, server_tabs);
}
