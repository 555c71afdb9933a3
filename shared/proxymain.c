/* The process around a proxy; see proxymain.h. */
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <curl/curl.h>

#include "log.h"
#include "net.h"
#include "proxymain.h"

struct proxymain {
	const struct proxymain_ops *pm_ops;
	void                       *pm_proxy;
	int                         pm_draining;
};

static void
proxymain_on_signal(struct loop *l, int fd, int events, void *arg)
{
	struct proxymain *pm = arg;
	struct signalfd_siginfo si;

	(void)events;
	if (read(fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return;
	if (!pm->pm_draining && pm->pm_ops->pm_drain != NULL) {
		log_info("%s: shutting down (again to stop at once)",
		    strsignal((int)si.ssi_signo));
		pm->pm_draining = 1;
		if (pm->pm_ops->pm_drain(pm->pm_proxy))
			return;
	} else
		log_info("%s: shutting down", strsignal((int)si.ssi_signo));
	pm->pm_ops->pm_shutdown(pm->pm_proxy);
	loop_stop(l);
}

int
proxymain_run(const struct proxymain_ops *ops, int argc, char **argv)
{
	const struct proxy_settings *ps;
	struct proxymain pm;
	struct loop *l = NULL;
	struct key k;
	sigset_t mask;
	unsigned long need, have;
	char err[512];
	int rc = 1, sigfd = -1;

	/* Buffers of 128 KiB and more (windows, pipes, curl's) come from
	 * mmap and go back to the kernel when freed, so a burst of traffic
	 * does not leave the heap large; glibc's default threshold grows
	 * past them after the first free and keeps them in the heap. */
	mallopt(M_MMAP_THRESHOLD, 128 * 1024);
	log_init(ops->pm_name, LOG_INFO);
	ops->pm_options_init(ops->pm_options);
	switch (ops->pm_options_parse(ops->pm_options, argc, argv, err,
	    sizeof(err))) {
	case POPT_HELP:
		ops->pm_usage(stdout);
		ops->pm_options_free(ops->pm_options);
		return 0;
	case POPT_ERROR:
		fprintf(stderr, "%s: %s\n(%s -h lists the options)\n",
		    ops->pm_name, err, ops->pm_name);
		ops->pm_options_free(ops->pm_options);
		return 2;
	case POPT_OK:
		break;
	}
	ps = ops->pm_settings(ops->pm_options);
	log_adjust(ps->ps_verbosity);
	memset(&pm, 0, sizeof(pm));
	pm.pm_ops = ops;
	if (key_load(&k, ps->ps_key, err, sizeof(err)) == -1) {
		log_error("%s", err);
		ops->pm_options_free(ops->pm_options);
		return 1;
	}
	signal(SIGPIPE, SIG_IGN);
	/* Blocked before any thread exists (curl's resolver), so that only
	 * the signalfd sees them. */
	sigemptyset(&mask);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGTERM);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	/* A tunnel holds its socket and two relay connections. */
	need = (unsigned long)ps->ps_max_tunnels * 3 + 64;
	if ((have = net_raise_nofile(need)) < need)
		log_warn("max_tunnels %u needs about %lu file descriptors; the "
		    "limit is %lu (raise it with ulimit -n)",
		    ps->ps_max_tunnels, need, have);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_error("curl_global_init failed");
		goto out_key;
	}
	if ((l = loop_new()) == NULL) {
		log_error("cannot create the event loop: %s", strerror(errno));
		goto out_curl;
	}
	if ((sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) == -1 ||
	    loop_watch(l, sigfd, LOOP_READ, proxymain_on_signal, &pm) == -1) {
		log_error("cannot watch signals: %s", strerror(errno));
		goto out_loop;
	}
	if ((pm.pm_proxy = ops->pm_new(l, ops->pm_options, &k, err,
	    sizeof(err))) == NULL) {
		log_error("%s", err);
		goto out_loop;
	}
	if (loop_run(l) == -1)
		log_error("event loop failed: %s", strerror(errno));
	else
		rc = ops->pm_status != NULL ? ops->pm_status(pm.pm_proxy) : 0;
	ops->pm_free(pm.pm_proxy);
out_loop:
	if (sigfd >= 0) {
		loop_unwatch(l, sigfd);
		close(sigfd);
	}
	loop_free(l);
out_curl:
	curl_global_cleanup();
out_key:
	key_wipe(&k);
	ops->pm_options_free(ops->pm_options);
	return rc;
}
