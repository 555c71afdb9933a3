/* The relay daemon: its listening socket, libmicrohttpd driven from our
 * loop, and an orderly stop.
 *
 * libmicrohttpd runs in "external epoll" mode: our loop watches its epoll
 * descriptor and calls MHD_run() when it is readable (socket events, and
 * the inter-thread channel that MHD_resume_connection() signals), and a
 * loop timer set from MHD_get_timeout() runs its connection timeouts.
 * Every callback therefore runs on the loop's thread. */
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <microhttpd.h>

#include "auth.h"
#include "log.h"
#include "relay.h"

#define RELAY_BACKLOG 1024
/* File descriptors kept for everything but client connections. */
#define RELAY_FD_RESERVE 32

static int
relay_bind(struct relay *rl, const char *addr, char *err, size_t errlen)
{
	struct addrinfo hints, *res = NULL, *ai;
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	char host[256], port[16], h[NI_MAXHOST], s[NI_MAXSERV];
	int fd = -1, one = 1, rc, saved = 0;

	if (config_split_hostport(addr, host, sizeof(host), port, sizeof(port),
	    err, errlen) == -1)
		return -1;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	if ((rc = getaddrinfo(host, port, &hints, &res)) != 0) {
		snprintf(err, errlen, "cannot resolve listen address %s: %s", addr,
		    gai_strerror(rc));
		return -1;
	}
	for (ai = res; ai != NULL; ai = ai->ai_next) {
		fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    ai->ai_protocol);
		if (fd == -1) {
			saved = errno;
			continue;
		}
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
		if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
		    listen(fd, RELAY_BACKLOG) == 0)
			break;
		saved = errno;
		close(fd);
		fd = -1;
	}
	freeaddrinfo(res);
	if (fd == -1) {
		snprintf(err, errlen, "cannot listen on %s: %s", addr, strerror(saved));
		return -1;
	}
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) == -1 ||
	    getnameinfo((struct sockaddr *)&ss, sl, h, sizeof(h), s, sizeof(s),
	    NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		snprintf(err, errlen, "cannot read the address bound for %s", addr);
		close(fd);
		return -1;
	}
	snprintf(rl->rl_address, sizeof(rl->rl_address),
	    strchr(h, ':') ? "[%s]:%s" : "%s:%s", h, s);
	rl->rl_listen_fd = fd;
	return 0;
}

static unsigned
relay_mhd_connections(struct relay *rl)
{
	const union MHD_DaemonInfo *di;

	di = MHD_get_daemon_info(rl->rl_mhd, MHD_DAEMON_INFO_CURRENT_CONNECTIONS);
	return di != NULL ? di->num_connections : 0;
}

static void
relay_mhd_run(struct relay *rl)
{
	unsigned before = relay_mhd_connections(rl);

	rl->rl_mhd_kick = 0;
	if (MHD_run(rl->rl_mhd) != MHD_YES)
		log_warn("libmicrohttpd: MHD_run failed");
	/* At max_connections libmicrohttpd takes its listening socket out of
	 * its epoll set and puts it back only at the start of a later run,
	 * which nothing would trigger once the connections are gone: run
	 * again whenever connections closed. */
	if (relay_mhd_connections(rl) < before)
		relay_mhd_kick(rl);
}

void
relay_mhd_kick(struct relay *rl)
{
	if (rl->rl_mhd_kick || rl->rl_mhd == NULL)
		return;
	rl->rl_mhd_kick = 1;
	loop_timer_start(rl->rl_loop, &rl->rl_mhd_timer, 0);
}

static void
relay_mhd_event(struct loop *l, int fd, int events, void *arg)
{
	(void)l;
	(void)fd;
	(void)events;
	relay_mhd_run(arg);
}

static void
relay_mhd_timer(struct loop *l, void *arg)
{
	(void)l;
	relay_mhd_run(arg);
}

/* Before each wait: libmicrohttpd says how soon it must run again (0
 * when it has buffered work, else its nearest connection timeout). */
static int64_t
relay_timeout_hook(void *arg)
{
	struct relay *rl = arg;
	MHD_UNSIGNED_LONG_LONG to;

	if (rl->rl_mhd == NULL)
		return -1;
	if (rl->rl_mhd_kick) {
		if (!loop_timer_armed(&rl->rl_mhd_timer))
			loop_timer_start(rl->rl_loop, &rl->rl_mhd_timer, 0);
		return 0;
	}
	if (MHD_get_timeout(rl->rl_mhd, &to) != MHD_YES) {
		loop_timer_stop(rl->rl_loop, &rl->rl_mhd_timer);
		return -1;
	}
	if (to > 3600000)
		to = 3600000;
	loop_timer_start(rl->rl_loop, &rl->rl_mhd_timer, (uint64_t)to);
	return (int64_t)to;
}

/* Connections beyond the open-file limit would fail at accept(), so the
 * limit is lowered to what the process can hold. */
static unsigned
relay_connection_limit(const struct relay_config *cf)
{
	struct rlimit rl;
	uint64_t want = cf->cf_max_connections, room;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1 || rl.rlim_cur == RLIM_INFINITY)
		return (unsigned)want;
	room = rl.rlim_cur > RELAY_FD_RESERVE ? rl.rlim_cur - RELAY_FD_RESERVE : 1;
	if (want > room) {
		log_warn("max_connections %llu is over what the open-file limit (%llu) "
		    "allows; using %llu (raise it with ulimit -n or LimitNOFILE=)",
		    (unsigned long long)want, (unsigned long long)rl.rlim_cur,
		    (unsigned long long)room);
		want = room;
	}
	return (unsigned)want;
}

struct relay *
relay_new(struct loop *l, const struct relay_config *cf, char *err, size_t errlen)
{
	struct relay *rl;

	if ((rl = calloc(1, sizeof(*rl))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	rl->rl_cf = cf;
	rl->rl_loop = l;
	rl->rl_listen_fd = -1;
	rl->rl_mhd_fd = -1;
	LIST_INIT(&rl->rl_ports);
	LIST_INIT(&rl->rl_reqs);
	LIST_INIT(&rl->rl_circuits);
	loop_timer_init(&rl->rl_mhd_timer, relay_mhd_timer, rl);
	rl->rl_max_connections = relay_connection_limit(cf);
	if ((rl->rl_ids = idtable_new()) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (relay_bind(rl, cf->cf_listen, err, errlen) == -1)
		goto fail;
	if (http_start(rl, err, errlen) == -1)
		goto fail;
	if (loop_watch(l, rl->rl_mhd_fd, LOOP_READ, relay_mhd_event, rl) == -1) {
		snprintf(err, errlen, "cannot watch libmicrohttpd's epoll descriptor: %s",
		    strerror(errno));
		goto fail;
	}
	loop_set_timeout_hook(l, relay_timeout_hook, rl);
	return rl;
fail:
	relay_free(rl);
	return NULL;
}

const char *
relay_address(const struct relay *rl)
{
	return rl->rl_address;
}

void
relay_free(struct relay *rl)
{
	struct relay_req *rq;
	struct circuit *t, *tnext;
	int fd;

	if (rl == NULL)
		return;
	rl->rl_stopping = 1;
	if (rl->rl_mhd != NULL) {
		/* Stop accepting; the listening socket is ours to close. */
		fd = MHD_quiesce_daemon(rl->rl_mhd);
		if (fd >= 0)
			close(fd);
		/* Either closed now, or (quiesce failed) MHD_stop_daemon
		 * closes it. */
		rl->rl_listen_fd = -1;
		for (t = LIST_FIRST(&rl->rl_circuits); t != NULL; t = tnext) {
			tnext = LIST_NEXT(t, ci_entry);
			circuit_fail(t, "shutdown", 503, "busy", "the relay is shutting down");
		}
		/* libmicrohttpd must not be stopped with suspended
		 * connections: wake them all; their handlers (or readers)
		 * now answer MHD_NO (or an error) and they close. */
		LIST_FOREACH(rq, &rl->rl_reqs, rq_entry) {
			if (rq->rq_port != NULL)
				pairing_drop(rq);
			loop_timer_stop(rl->rl_loop, &rq->rq_timer);
			rq->rq_abort = 1;
			http_resume(rq);
		}
		do
			relay_mhd_run(rl);
		while (rl->rl_mhd_kick);
		loop_unwatch(rl->rl_loop, rl->rl_mhd_fd);
		MHD_stop_daemon(rl->rl_mhd);
		rl->rl_mhd = NULL;
	}
	loop_set_timeout_hook(rl->rl_loop, NULL, NULL);
	loop_timer_stop(rl->rl_loop, &rl->rl_mhd_timer);
	if (rl->rl_listen_fd >= 0)
		close(rl->rl_listen_fd);
	if (!LIST_EMPTY(&rl->rl_reqs) || !LIST_EMPTY(&rl->rl_circuits))
		log_warn("relay stopped with requests or tunnels left over");
	pairing_free_all(rl);
	idtable_free(rl->rl_ids);
	auth_verifier_free(rl->rl_auth);
	free(rl);
}
