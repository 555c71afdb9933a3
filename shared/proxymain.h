/* The process around a proxy: options, key, signals, curl, the loop.
 * postern-client and postern-server differ only in the object they run,
 * which they describe with a proxymain_ops. */
#ifndef POSTERN_PROXYMAIN_H
#define POSTERN_PROXYMAIN_H

#include <stddef.h>
#include <stdio.h>

#include "key.h"
#include "loop.h"
#include "proxyconf.h"

struct proxymain_ops {
	const char *pm_name;        /* "postern-client" */
	void       *pm_options;     /* the program's options struct */
	void (*pm_options_init)(void *opts);
	void (*pm_options_free)(void *opts);
	enum popt_result (*pm_options_parse)(void *opts, int argc, char **argv,
	    char *err, size_t errlen);
	const struct proxy_settings *(*pm_settings)(const void *opts);
	void (*pm_usage)(FILE *f);
	void *(*pm_new)(struct loop *l, const void *opts, const struct key *k,
	    char *err, size_t errlen);
	void (*pm_shutdown)(void *proxy);
	void (*pm_free)(void *proxy);
	/* Or NULL: the exit status after the loop stopped without an error
	 * (0 for a clean stop; the server's 1 when it was replaced). */
	int (*pm_status)(void *proxy);
	/* Or NULL: the first SIGTERM/SIGINT starts a graceful stop (peers
	 * are told, the proxy stops the loop when done or out of time);
	 * returns 0 when there is nothing to wait for.  A second signal
	 * stops at once. */
	int  (*pm_drain)(void *proxy);
};

/* Runs the program to completion; returns the exit status
 * (0 clean stop, 1 failure, 2 bad usage). */
int proxymain_run(const struct proxymain_ops *ops, int argc, char **argv);

#endif
