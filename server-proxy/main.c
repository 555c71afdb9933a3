/* postern-server: offer local targets through the relay. */
#include "proxymain.h"
#include "server.h"

static void s_init(void *o) { server_options_init(o); }
static void s_opts_free(void *o) { server_options_free(o); }
static enum popt_result
s_parse(void *o, int argc, char **argv, char *err, size_t errlen)
{
	return server_options_parse(o, argc, argv, err, errlen);
}
static const struct proxy_settings *
s_settings(const void *o)
{
	return &((const struct server_options *)o)->so_ps;
}
static void *
s_new(struct loop *l, const void *o, const struct key *k, char *err,
    size_t errlen)
{
	return server_new(l, o, k, err, errlen);
}
static void s_shutdown(void *s) { server_shutdown(s); }
static void s_free(void *s) { server_free(s); }
static int s_status(void *s) { return server_exit_status(s); }
static int s_drain(void *s) { return server_drain(s); }

int
main(int argc, char **argv)
{
	struct server_options so;
	const struct proxymain_ops ops = {
		"postern-server", &so, s_init, s_opts_free, s_parse,
		s_settings, server_usage, s_new, s_shutdown, s_free, s_status, s_drain,
	};

	return proxymain_run(&ops, argc, argv);
}
