/* postern-client: serve local ports through the relay. */
#include "client.h"
#include "proxymain.h"

static void c_init(void *o) { client_options_init(o); }
static void c_opts_free(void *o) { client_options_free(o); }
static enum popt_result
c_parse(void *o, int argc, char **argv, char *err, size_t errlen)
{
	return client_options_parse(o, argc, argv, err, errlen);
}
static const struct proxy_settings *
c_settings(const void *o)
{
	return &((const struct client_options *)o)->co_ps;
}
static void *
c_new(struct loop *l, const void *o, const struct key *k, char *err,
    size_t errlen)
{
	return client_new(l, o, k, err, errlen);
}
static void c_shutdown(void *c) { client_shutdown(c); }
static void c_free(void *c) { client_free(c); }
static int c_drain(void *c) { return client_drain(c); }

int
main(int argc, char **argv)
{
	struct client_options co;
	const struct proxymain_ops ops = {
		"postern-client", &co, c_init, c_opts_free, c_parse,
		c_settings, client_usage, c_new, c_shutdown, c_free, NULL, c_drain,
	};

	return proxymain_run(&ops, argc, argv);
}
