/* postern-client: serve local ports through the relay. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <curl/curl.h>

#include "client.h"
#include "key.h"
#include "log.h"
#include "loop.h"

struct main_ctx {
	struct loop   *m_loop;
	struct client *m_client;
	int            m_sigfd;
};

static void
main_on_signal(struct loop *l, int fd, int events, void *arg)
{
	struct main_ctx *m = arg;
	struct signalfd_siginfo si;

	(void)events;
	if (read(fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
		return;
	log_info("%s: shutting down", strsignal((int)si.ssi_signo));
	client_shutdown(m->m_client);
	loop_stop(l);
}

int
main(int argc, char **argv)
{
	struct client_options co;
	struct main_ctx m;
	struct key k;
	sigset_t mask;
	unsigned long need, have;
	char err[512];
	int rc = 1;

	log_init("postern-client", LOG_INFO);
	client_options_init(&co);
	switch (client_options_parse(&co, argc, argv, err, sizeof(err))) {
	case POPT_HELP:
		client_usage(stdout);
		client_options_free(&co);
		return 0;
	case POPT_ERROR:
		fprintf(stderr, "postern-client: %s\n(postern-client -h lists "
		    "the options)\n", err);
		client_options_free(&co);
		return 2;
	case POPT_OK:
		break;
	}
	log_adjust(co.co_ps.ps_verbosity);
	memset(&m, 0, sizeof(m));
	m.m_sigfd = -1;
	if (key_load(&k, co.co_ps.ps_key, err, sizeof(err)) == -1) {
		log_error("%s", err);
		client_options_free(&co);
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
	need = (unsigned long)co.co_ps.ps_max_tunnels * 3 + 64;
	if ((have = net_raise_nofile(need)) < need)
		log_warn("max_tunnels %u needs about %lu file descriptors; the "
		    "limit is %lu (raise it with ulimit -n)",
		    co.co_ps.ps_max_tunnels, need, have);
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_error("curl_global_init failed");
		goto out_key;
	}
	if ((m.m_loop = loop_new()) == NULL) {
		log_error("cannot create the event loop: %s", strerror(errno));
		goto out_curl;
	}
	if ((m.m_sigfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC)) == -1 ||
	    loop_watch(m.m_loop, m.m_sigfd, LOOP_READ, main_on_signal, &m) == -1) {
		log_error("cannot watch signals: %s", strerror(errno));
		goto out_loop;
	}
	if ((m.m_client = client_new(m.m_loop, &co, &k, err, sizeof(err))) ==
	    NULL) {
		log_error("%s", err);
		goto out_loop;
	}
	if (loop_run(m.m_loop) == -1)
		log_error("event loop failed: %s", strerror(errno));
	else
		rc = 0;
	client_free(m.m_client);
out_loop:
	if (m.m_sigfd >= 0) {
		loop_unwatch(m.m_loop, m.m_sigfd);
		close(m.m_sigfd);
	}
	loop_free(m.m_loop);
out_curl:
	curl_global_cleanup();
out_key:
	key_wipe(&k);
	client_options_free(&co);
	return rc;
}
