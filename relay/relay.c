/* The relay daemon: its listening socket, libmicrohttpd driven from our
 * loop, and an orderly stop.
 *
 * The relay accepts connections itself and hands each to the least busy
 * of RELAY_SHARDS libmicrohttpd daemons (MHD_add_connection(); see
 * relay.h for why there are several).  They run in "external epoll" mode:
 * our loop watches each daemon's epoll descriptor and calls MHD_run() on
 * it when it is readable, and again at once (a "kick") after a resume,
 * which libmicrohttpd only acts on inside a run.  libmicrohttpd keeps no
 * timeouts of its own (http.c times connections), so nothing else needs a
 * run.  Every callback therefore runs on the loop's thread. */
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
/* File descriptors kept for everything but client connections: the
 * loop, signals, logs, and each shard's epoll and event descriptors. */
#define RELAY_FD_RESERVE (32 + 4 * RELAY_SHARDS)
/* Connections accepted per wakeup of the listening socket, so that a
 * flood of them does not hold up the tunnels already open. */
#define RELAY_ACCEPT_BATCH 64
/* How long accepting pauses when the process is out of descriptors. */
#define RELAY_ACCEPT_RETRY_MS 100
/* HTTP connections a tunnel holds: connect, upstream, accept, downstream. */
#define RELAY_CONNS_PER_TUNNEL 4
/* MHD_run() calls in a row while libmicrohttpd has work buffered. */
#define RELAY_MHD_BATCH 8

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
		/* No Nagle: accepted sockets inherit TCP_NODELAY (Linux),
		 * so every answer and stream chunk leaves at once from a
		 * connection's first byte.  (libmicrohttpd 0.9.75 also sets
		 * it, but only after the first reply it pushes.) */
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
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

/* libmicrohttpd reports 0 when it has work buffered: connections it has
 * data for (edge-triggered epoll: it reads each once per run), resumed
 * ones, or ones to clean up.  With no per-connection timeouts this costs
 * O(1). */
static int
relay_mhd_busy(struct relay_shard *sh)
{
	MHD_UNSIGNED_LONG_LONG to;

	return MHD_get_timeout(sh->sh_mhd, &to) == MHD_YES && to == 0;
}

static void
relay_mhd_run(struct relay_shard *sh)
{
	int i;

	/* One run reads and writes each ready connection once; a busy pipe
	 * needs a run per buffer's worth, and a resume one more.  Running
	 * again at once while there is work saves a loop iteration (an
	 * epoll_wait and the timer bookkeeping) per round; the bound keeps
	 * the loop's other watchers, timers and shards from waiting long. */
	for (i = 0; i < RELAY_MHD_BATCH; i++) {
		sh->sh_kick = 0;
		if (MHD_run(sh->sh_mhd) != MHD_YES) {
			log_warn("libmicrohttpd: MHD_run failed");
			return;
		}
		if (!sh->sh_kick && !relay_mhd_busy(sh))
			return;
	}
	relay_mhd_kick(sh);   /* more to do: after the others had a turn */
}

void
relay_mhd_kick(struct relay_shard *sh)
{
	struct relay *rl = sh->sh_relay;

	if (sh->sh_kick || sh->sh_mhd == NULL)
		return;
	sh->sh_kick = 1;
	if (!loop_timer_armed(&rl->rl_kick_timer))
		loop_timer_start(rl->rl_loop, &rl->rl_kick_timer, 0);
}

/* Due "now": runs after this iteration's socket events, so a resume made
 * while handling one is served before the loop waits again. */
static void
relay_kick_timer(struct loop *l, void *arg)
{
	struct relay *rl = arg;
	size_t i;

	(void)l;
	for (i = 0; i < rl->rl_nshards; i++)
		if (rl->rl_shards[i].sh_kick)
			relay_mhd_run(&rl->rl_shards[i]);
}

static void
relay_mhd_event(struct loop *l, int fd, int events, void *arg)
{
	(void)l;
	(void)fd;
	(void)events;
	relay_mhd_run(arg);
}

/* ---- accepting ---------------------------------------------------------- */

static void relay_accept(struct loop *l, int fd, int events, void *arg);

static void
relay_accept_on(struct relay *rl)
{
	if (rl->rl_accepting || rl->rl_stopping || rl->rl_listen_fd < 0 ||
	    loop_timer_armed(&rl->rl_accept_timer))
		return;
	if (loop_watch(rl->rl_loop, rl->rl_listen_fd, LOOP_READ, relay_accept, rl) == 0)
		rl->rl_accepting = 1;
	else
		log_warn("cannot watch the listening socket: %s", strerror(errno));
}

static void
relay_accept_off(struct relay *rl)
{
	if (!rl->rl_accepting)
		return;
	loop_unwatch(rl->rl_loop, rl->rl_listen_fd);
	rl->rl_accepting = 0;
}

static void
relay_accept_timer(struct loop *l, void *arg)
{
	(void)l;
	relay_accept_on(arg);
}

void
relay_conn_closed(struct relay *rl)
{
	if (!rl->rl_accepting &&
	    rl->rl_conns + rl->rl_nsorting < rl->rl_max_connections)
		relay_accept_on(rl);
}

/* The shard of the kind asked holding the fewest connections. */
static struct relay_shard *
relay_pick_shard(struct relay *rl, int upload)
{
	struct relay_shard *best = NULL, *sh;
	size_t i;

	for (i = 0; i < rl->rl_nshards; i++) {
		sh = &rl->rl_shards[i];
		if (sh->sh_upload == (upload && rl->rl_sort) &&
		    (best == NULL || sh->sh_conns < best->sh_conns))
			best = sh;
	}
	return best;
}

void
relay_hand_over(struct relay *rl, int fd, const struct sockaddr *sa,
                socklen_t sl, int upload)
{
	struct relay_shard *sh = relay_pick_shard(rl, upload);

	/* It closes the socket itself when it fails. */
	if (MHD_add_connection(sh->sh_mhd, fd, sa, sl) != MHD_YES) {
		log_warn("libmicrohttpd did not take a new connection: %s",
		    strerror(errno));
		return;
	}
	/* Its request is likely waiting already. */
	relay_mhd_kick(sh);
}

static void
relay_accept(struct loop *l, int lfd, int events, void *arg)
{
	struct relay *rl = arg;
	struct sockaddr_storage ss;
	socklen_t sl;
	int i, fd;

	(void)events;
	for (i = 0; i < RELAY_ACCEPT_BATCH; i++) {
		if (rl->rl_conns + rl->rl_nsorting >= rl->rl_max_connections) {
			/* Left in the backlog until a connection closes. */
			relay_accept_off(rl);
			return;
		}
		sl = sizeof(ss);
		fd = accept4(lfd, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				log_warn("cannot accept a connection: %s; pausing "
				    "for %d ms (raise the open-file limit, or lower "
				    "max_connections)", strerror(errno),
				    RELAY_ACCEPT_RETRY_MS);
				relay_accept_off(rl);
				loop_timer_start(l, &rl->rl_accept_timer,
				    RELAY_ACCEPT_RETRY_MS);
			} else if (errno != EAGAIN && errno != EWOULDBLOCK)
				log_warn("accept failed: %s", strerror(errno));
			return;
		}
		if (rl->rl_sort && sort_add(rl, fd, (struct sockaddr *)&ss, sl) == 0)
			continue;
		relay_hand_over(rl, fd, (struct sockaddr *)&ss, sl, 0);
	}
}

/* Connections beyond the open-file limit would fail at accept(), so the
 * limit is lowered to what the process can hold: with a warning when the
 * operator asked for more, quietly for the default.  Either way it warns
 * when the result cannot carry max_tunnels tunnels (four HTTP connections
 * each, plus the server-proxies' listens and idle keep-alive connections),
 * since that is what an operator sizing for max_tunnels needs to know. */
static unsigned
relay_connection_limit(const struct relay_config *cf)
{
	struct rlimit rl;
	uint64_t want = cf->cf_max_connections, room;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY) {
		room = rl.rlim_cur > RELAY_FD_RESERVE ? rl.rlim_cur - RELAY_FD_RESERVE : 1;
		if (want > room && cf->cf_max_connections_set)
			log_warn("max_connections %llu is over what the open-file limit "
			    "(%llu) allows; using %llu (raise it with ulimit -n or "
			    "LimitNOFILE=)", (unsigned long long)want,
			    (unsigned long long)rl.rlim_cur, (unsigned long long)room);
		if (want > room)
			want = room;
	}
	if (want / RELAY_CONNS_PER_TUNNEL < cf->cf_max_tunnels)
		log_warn("%llu HTTP connections (max_connections, open-file limit) carry "
		    "at most %llu tunnels at %d each, fewer than max_tunnels (%llu); "
		    "raise the open-file limit (LimitNOFILE=) and max_connections, or "
		    "lower max_tunnels", (unsigned long long)want,
		    (unsigned long long)(want / RELAY_CONNS_PER_TUNNEL),
		    RELAY_CONNS_PER_TUNNEL, (unsigned long long)cf->cf_max_tunnels);
	return (unsigned)want;
}

struct relay *
relay_new(struct loop *l, const struct relay_config *cf, char *err, size_t errlen)
{
	struct relay *rl;
	struct relay_shard *sh;
	size_t i;

	if ((rl = calloc(1, sizeof(*rl))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	rl->rl_cf = cf;
	rl->rl_loop = l;
	rl->rl_listen_fd = -1;
	rl->rl_hup_fd = -1;
	LIST_INIT(&rl->rl_ports);
	LIST_INIT(&rl->rl_reqs);
	LIST_INIT(&rl->rl_circuits);
	loop_timer_init(&rl->rl_kick_timer, relay_kick_timer, rl);
	loop_timer_init(&rl->rl_accept_timer, relay_accept_timer, rl);
	rl->rl_max_connections = relay_connection_limit(cf);
	if ((rl->rl_ids = idtable_new()) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (http_auth_start(rl, err, errlen) == -1)
		goto fail;
	if (http_tls_start(rl, err, errlen) == -1)
		goto fail;
	LIST_INIT(&rl->rl_sorting);
	/* Upload daemons only where sort.c can read request lines (not
	 * through TLS) and they would differ. */
	rl->rl_sort = rl->rl_tls.tl_cert == NULL &&
	    cf->cf_upload_memory > cf->cf_connection_memory;
	for (i = 0; i < (rl->rl_sort ? 2u : 1u) * RELAY_SHARDS; i++) {
		sh = &rl->rl_shards[i];
		sh->sh_relay = rl;
		sh->sh_fd = -1;
		sh->sh_upload = i >= RELAY_SHARDS;
		if (http_start(sh, err, errlen) == -1)
			goto fail;
		rl->rl_nshards++;
		if (loop_watch(l, sh->sh_fd, LOOP_READ, relay_mhd_event, sh) == -1) {
			snprintf(err, errlen, "cannot watch libmicrohttpd's epoll "
			    "descriptor: %s", strerror(errno));
			goto fail;
		}
	}
	if (relay_bind(rl, cf->cf_listen, err, errlen) == -1)
		goto fail;
	relay_accept_on(rl);
	if (!rl->rl_accepting) {
		snprintf(err, errlen, "cannot watch the listening socket");
		goto fail;
	}
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

static int
relay_kicked(const struct relay *rl)
{
	size_t i;

	for (i = 0; i < rl->rl_nshards; i++)
		if (rl->rl_shards[i].sh_kick)
			return 1;
	return 0;
}

void
relay_free(struct relay *rl)
{
	struct relay_req *rq;
	struct circuit *t, *tnext;
	struct relay_shard *sh;
	size_t i;
	int rounds;

	if (rl == NULL)
		return;
	rl->rl_stopping = 1;
	/* Stop accepting. */
	relay_accept_off(rl);
	loop_timer_stop(rl->rl_loop, &rl->rl_accept_timer);
	if (rl->rl_listen_fd >= 0)
		close(rl->rl_listen_fd);
	rl->rl_listen_fd = -1;
	sort_free_all(rl);
	for (t = LIST_FIRST(&rl->rl_circuits); t != NULL; t = tnext) {
		tnext = LIST_NEXT(t, ci_entry);
		circuit_fail(t, "shutdown", 503, "busy", "the relay is shutting down");
	}
	/* libmicrohttpd must not be stopped with suspended connections:
	 * wake them all; their handlers (or readers) now answer MHD_NO (or
	 * an error) and they close. */
	LIST_FOREACH(rq, &rl->rl_reqs, rq_entry) {
		if (rq->rq_port != NULL)
			pairing_drop(rq);
		loop_timer_stop(rl->rl_loop, &rq->rq_timer);
		rq->rq_abort = 1;
		http_resume(rq);
	}
	/* Bounded: each round only finishes what the last one started. */
	for (rounds = 0; rounds < 100 && relay_kicked(rl); rounds++)
		for (i = 0; i < rl->rl_nshards; i++)
			if (rl->rl_shards[i].sh_kick)
				relay_mhd_run(&rl->rl_shards[i]);
	for (i = 0; i < rl->rl_nshards; i++) {
		sh = &rl->rl_shards[i];
		loop_unwatch(rl->rl_loop, sh->sh_fd);
		MHD_stop_daemon(sh->sh_mhd);
		sh->sh_mhd = NULL;
		sh->sh_kick = 0;
	}
	loop_timer_stop(rl->rl_loop, &rl->rl_kick_timer);
	http_tls_stop(rl);
	if (!LIST_EMPTY(&rl->rl_reqs) || !LIST_EMPTY(&rl->rl_circuits))
		log_warn("relay stopped with requests or tunnels left over");
	pairing_free_all(rl);
	idtable_free(rl->rl_ids);
	auth_verifier_free(rl->rl_auth);
	free(rl);
}
