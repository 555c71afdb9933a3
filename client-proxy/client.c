/* postern-client at run time: listeners, one tunnel per accepted socket. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include "client.h"
#include "curlloop.h"
#include "log.h"
#include "tunnel.h"

#define CLIENT_BACKLOG      511
#define CLIENT_ACCEPT_BURST 64     /* accepts per readiness event */
#define CLIENT_EMFILE_MS    200    /* listener rest when out of fds */

struct client;

struct client_listener {
	struct client         *li_c;
	const struct client_forward *li_fwd;
	int                    li_fd;
	char                   li_addr[NET_ADDR_TEXT_MAX];
	struct loop_timer      li_rest;
};

struct client_tunnel {
	LIST_ENTRY(client_tunnel) ct_link;
	struct client          *ct_c;
	struct client_listener *ct_li;
	struct tunnel          *ct_t;
};

struct client {
	struct loop            *c_loop;
	const struct client_options *c_opt;
	struct curlloop        *c_curl;
	struct curlloop        *c_curl_up;   /* uploads (tunnel.h) */
	struct relaycall_conf   c_relay;
	struct tunnel_env       c_env;
	int                     c_fallback;  /* auto found streams blocked */
	struct client_listener *c_li;
	size_t                  c_nli;
	LIST_HEAD(, client_tunnel) c_tunnels;
	unsigned                c_ntunnels;
	int                     c_fd_warned;
	int                     c_draining;  /* SIGTERM: telling the peers */
	struct loop_timer       c_drain;     /* shutdown_grace */
};

static void
client_tunnel_open(struct tunnel *t, void *arg)
{
	struct client_tunnel *ct = arg;
	char from[NET_ADDR_TEXT_MAX];

	net_peer_text(tunnel_peer(t), from, sizeof(from));
	log_info("tunnel open id=%s %s/%s from %s", tunnel_id(t),
	    ct->ct_li->li_fwd->cf_server, ct->ct_li->li_fwd->cf_port, from);
}

static void
client_tunnel_closed(struct tunnel *t, const char *reason, void *arg)
{
	struct client_tunnel *ct = arg;
	struct client *c = ct->ct_c;
	const struct client_forward *f = ct->ct_li->li_fwd;
	struct tunnel_stats st;

	tunnel_stats(t, &st);
	if (tunnel_opened(t))
		log_msg(strcmp(reason, "done") == 0 ? LOG_INFO : LOG_WARN,
		    "tunnel closed id=%s %s/%s up=%llu down=%llu "
		    "duration=%llu.%03llus gen=%llu resent=%llu%s reason=%s",
		    tunnel_id(t), f->cf_server, f->cf_port,
		    (unsigned long long)st.ts_up, (unsigned long long)st.ts_down,
		    (unsigned long long)(st.ts_ms / 1000),
		    (unsigned long long)(st.ts_ms % 1000),
		    (unsigned long long)st.ts_gen, (unsigned long long)st.ts_resent,
		    st.ts_segmented ? " segmented" : "", reason);
	else
		log_warn("tunnel to %s/%s failed: %s (relay %s%s)",
		    f->cf_server, f->cf_port, reason, c->c_relay.rc_base,
		    c->c_relay.rc_prefix);
	LIST_REMOVE(ct, ct_link);
	c->c_ntunnels--;
	free(ct);
	if (c->c_draining && c->c_ntunnels == 0) {
		loop_timer_stop(c->c_loop, &c->c_drain);
		loop_stop(c->c_loop);
	}
}

static void
client_drain_timeout(struct loop *l, void *arg)
{
	struct client *c = arg;

	log_warn("shutdown_grace over; ending %u tunnels", c->c_ntunnels);
	client_shutdown(c);
	loop_stop(l);
}

static void
client_tunnel_note(struct tunnel *t, const char *what, void *arg)
{
	struct client_tunnel *ct = arg;

	log_info("tunnel id=%s %s/%s: %s", tunnel_id(t),
	    ct->ct_li->li_fwd->cf_server, ct->ct_li->li_fwd->cf_port, what);
}

static const struct tunnel_cbs client_tunnel_cbs = {
	client_tunnel_open, client_tunnel_closed, NULL, client_tunnel_note
};

static void
client_start_tunnel(struct client_listener *li, int fd,
    const struct net_peer *peer)
{
	struct client *c = li->li_c;
	struct client_tunnel *ct;
	char err[256];

	if ((ct = calloc(1, sizeof(*ct))) == NULL) {
		log_warn("out of memory: closing a new connection on %s",
		    li->li_addr);
		close(fd);
		return;
	}
	ct->ct_c = c;
	ct->ct_li = li;
	ct->ct_t = tunnel_new(&c->c_env, TUNNEL_CLIENT, fd,
	    li->li_fwd->cf_server, li->li_fwd->cf_port, &client_tunnel_cbs, ct,
	    err, sizeof(err));
	if (ct->ct_t == NULL) {
		log_warn("tunnel to %s/%s failed: %s", li->li_fwd->cf_server,
		    li->li_fwd->cf_port, err);
		close(fd);
		free(ct);
		return;
	}
	LIST_INSERT_HEAD(&c->c_tunnels, ct, ct_link);
	c->c_ntunnels++;
	tunnel_set_peer(ct->ct_t, peer);
	if (tunnel_connect(ct->ct_t, err, sizeof(err)) == -1)
		tunnel_close(ct->ct_t, err);
}

static void client_on_accept(struct loop *l, int fd, int events, void *arg);

static void
client_on_rest(struct loop *l, void *arg)
{
	struct client_listener *li = arg;

	if (loop_watch(l, li->li_fd, LOOP_READ, client_on_accept, li) == -1)
		log_error("cannot watch %s: %s", li->li_addr, strerror(errno));
}

static void
client_on_accept(struct loop *l, int lfd, int events, void *arg)
{
	struct client_listener *li = arg;
	struct client *c = li->li_c;
	struct sockaddr_storage ss;
	struct net_peer peer;
	char from[NET_ADDR_TEXT_MAX];
	socklen_t len;
	int i, fd;

	(void)events;
	for (i = 0; i < CLIENT_ACCEPT_BURST; i++) {
		len = sizeof(ss);
		fd = accept4(lfd, (struct sockaddr *)&ss, &len,
		    SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED)
				continue;
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			/* Out of descriptors: the pending connection stays
			 * queued and would wake us at once; rest a moment. */
			if (!c->c_fd_warned)
				log_warn("accept on %s: %s; pausing new "
				    "connections briefly", li->li_addr,
				    strerror(errno));
			c->c_fd_warned = 1;
			loop_unwatch(l, lfd);
			loop_timer_start(l, &li->li_rest, CLIENT_EMFILE_MS);
			return;
		}
		c->c_fd_warned = 0;
		if (net_peer_from((struct sockaddr *)&ss, &peer) == -1)
			memset(&peer, 0, sizeof(peer));
		if (c->c_ntunnels >= c->c_opt->co_ps.ps_max_tunnels) {
			net_peer_text(&peer, from, sizeof(from));
			log_warn("max_tunnels (%u) reached: closing the new "
			    "connection from %s on %s", c->c_opt->co_ps.ps_max_tunnels,
			    from, li->li_addr);
			close(fd);
			continue;
		}
		net_nodelay(fd);
		client_start_tunnel(li, fd, &peer);
	}
}

static int
client_bind(struct client *c, struct client_listener *li,
    const struct client_forward *f, char *err, size_t errlen)
{
	struct net_addrs addrs;
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	li->li_c = c;
	li->li_fwd = f;
	li->li_fd = -1;
	loop_timer_init(&li->li_rest, client_on_rest, li);
	if (net_resolve(f->cf_bind, f->cf_lport, 1, &addrs, err, errlen) == -1)
		return -1;
	li->li_fd = net_listen((struct sockaddr *)&addrs.na_addr[0],
	    addrs.na_len[0], CLIENT_BACKLOG, err, errlen);
	if (li->li_fd == -1)
		return -1;
	if (getsockname(li->li_fd, (struct sockaddr *)&ss, &len) == -1) {
		snprintf(err, errlen, "getsockname: %s", strerror(errno));
		return -1;
	}
	net_sockaddr_text((struct sockaddr *)&ss, li->li_addr,
	    sizeof(li->li_addr));
	if (loop_watch(c->c_loop, li->li_fd, LOOP_READ, client_on_accept,
	    li) == -1) {
		snprintf(err, errlen, "cannot watch %s: %s", li->li_addr,
		    strerror(errno));
		return -1;
	}
	log_info("listening on %s -> %s/%s", li->li_addr, f->cf_server,
	    f->cf_port);
	return 0;
}

struct client *
client_new(struct loop *l, const struct client_options *co,
    const struct key *k, char *err, size_t errlen)
{
	const struct proxy_settings *ps = &co->co_ps;
	struct client *c;
	size_t i;

	if ((c = calloc(1, sizeof(*c))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	c->c_loop = l;
	loop_timer_init(&c->c_drain, client_drain_timeout, c);
	c->c_opt = co;
	LIST_INIT(&c->c_tunnels);
	if (relaycall_conf_url(&c->c_relay, ps->ps_relay, err, errlen) == -1)
		goto fail;
	c->c_relay.rc_key = k;
	c->c_relay.rc_connect_timeout_ms = (long)ps->ps_relay_timeout_ms;
	c->c_relay.rc_cacert = ps->ps_cacert;
	c->c_relay.rc_insecure = ps->ps_insecure;
	c->c_relay.rc_pin = ps->ps_pin;
	c->c_relay.rc_proxy = ps->ps_proxy;
	c->c_relay.rc_proxy_cacert = ps->ps_proxy_cacert;
	/* Two streams per tunnel, plus room to keep idle connections for
	 * the next connects. */
	c->c_curl = curlloop_new(l, (long)ps->ps_max_tunnels * 2 + 16, err,
	    errlen);
	if (c->c_curl == NULL)
		goto fail;
	curlloop_set_connect_timeout(c->c_curl, ps->ps_relay_timeout_ms);
	c->c_curl_up = curlloop_new(l, TUNNEL_UPLOAD_IDLE_CONNS, err, errlen);
	if (c->c_curl_up == NULL)
		goto fail;
	curlloop_set_connect_timeout(c->c_curl_up, ps->ps_relay_timeout_ms);
	c->c_env.te_loop = l;
	c->c_env.te_curl = c->c_curl;
	c->c_env.te_curl_up = c->c_curl_up;
	c->c_env.te_relay = &c->c_relay;
	c->c_env.te_frame_max = ps->ps_frame_max;
	c->c_env.te_buffer = ps->ps_buffer;
	c->c_env.te_keepalive_ms = ps->ps_keepalive_ms;
	c->c_env.te_window = ps->ps_window;
	c->c_env.te_resume_grace_ms = ps->ps_resume_grace_ms;
	c->c_env.te_peer_timeout_ms = ps->ps_peer_timeout_ms;
	c->c_env.te_transport = ps->ps_transport;
	c->c_env.te_segment_bytes = ps->ps_segment_bytes;
	c->c_env.te_segment_ms = ps->ps_segment_ms;
	c->c_env.te_probe_ms = ps->ps_probe_ms;
	c->c_env.te_fallback = &c->c_fallback;
	if ((c->c_env.te_batch = tunnel_batch_new()) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	c->c_env.te_max_data = 0;
	if ((c->c_li = calloc(co->co_nfwd, sizeof(*c->c_li))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (i = 0; i < co->co_nfwd; i++) {
		c->c_nli++;
		if (client_bind(c, &c->c_li[i], &co->co_fwd[i], err,
		    errlen) == -1)
			goto fail;
	}
	return c;
fail:
	client_free(c);
	return NULL;
}

void
client_shutdown(struct client *c)
{
	struct client_tunnel *ct;
	size_t i;

	loop_timer_stop(c->c_loop, &c->c_drain);
	for (i = 0; i < c->c_nli; i++) {
		struct client_listener *li = &c->c_li[i];

		loop_timer_stop(c->c_loop, &li->li_rest);
		if (li->li_fd >= 0) {
			loop_unwatch(c->c_loop, li->li_fd);
			close(li->li_fd);
			li->li_fd = -1;
		}
	}
	while ((ct = LIST_FIRST(&c->c_tunnels)) != NULL)
		tunnel_close(ct->ct_t, "shutdown");
}

int
client_drain(struct client *c)
{
	struct client_tunnel *ct, *next;
	size_t i;

	if (c->c_draining)
		return c->c_ntunnels > 0;
	c->c_draining = 1;
	for (i = 0; i < c->c_nli; i++) {
		struct client_listener *li = &c->c_li[i];

		loop_timer_stop(c->c_loop, &li->li_rest);
		if (li->li_fd >= 0) {
			loop_unwatch(c->c_loop, li->li_fd);
			close(li->li_fd);
			li->li_fd = -1;
		}
	}
	if (c->c_opt->co_ps.ps_shutdown_grace_ms == 0 || c->c_ntunnels == 0)
		return 0;
	log_info("telling the servers of %u open tunnels (at most %llu.%03llu "
	    "s, shutdown_grace)", c->c_ntunnels,
	    (unsigned long long)(c->c_opt->co_ps.ps_shutdown_grace_ms / 1000),
	    (unsigned long long)(c->c_opt->co_ps.ps_shutdown_grace_ms % 1000));
	loop_timer_start(c->c_loop, &c->c_drain,
	    c->c_opt->co_ps.ps_shutdown_grace_ms);
	for (ct = LIST_FIRST(&c->c_tunnels); ct != NULL; ct = next) {
		next = LIST_NEXT(ct, ct_link);
		tunnel_abort(ct->ct_t, "the client-proxy is shutting down");
	}
	return c->c_ntunnels > 0;
}

void
client_free(struct client *c)
{
	if (c == NULL)
		return;
	client_shutdown(c);
	curlloop_free(c->c_curl_up);
	curlloop_free(c->c_curl);
	tunnel_batch_free(c->c_env.te_batch);
	free(c->c_li);
	free(c);
}
