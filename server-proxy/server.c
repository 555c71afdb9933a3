/* postern-server at run time.
 *
 * For every exposed port, listens_per_port long-polls stay outstanding at
 * the relay; each is re-issued as soon as it returns (one that brought a
 * connection once that connection's accept is answered, at most
 * SERVER_RELISTEN_MS later).  A 200 names a new connection: the target is
 * dialed (nonblocking, connect_timeout) and the connection either becomes
 * a tunnel (accept, then downstream) or is refused with the dial's
 * error. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "curlloop.h"
#include "log.h"
#include "server.h"
#include "tunnel.h"

#define SERVER_BODY_MAX     4096   /* listen and refuse answers we read */
#define SERVER_QUICK_204_MS 500    /* a 204 sooner than this: wait a bit */
/* A listen answered with a connection is posted again once the relay has
 * answered that connection's accept (a listen arriving with the accept
 * would hold up the relay's answer to the waiting client), or after this
 * long, so that a slow target does not hold up other clients. */
#define SERVER_RELISTEN_MS  20

struct server;
struct server_port;

struct server_poll {
	struct server_port  *lp_port;
	struct curlloop_xfer lp_x;
	struct curl_slist   *lp_hdrs;
	char                 lp_errbuf[CURL_ERROR_SIZE];
	char                 lp_body[SERVER_BODY_MAX];
	size_t               lp_len;
	uint64_t             lp_started;
	uint64_t             lp_backoff_ms;
	struct loop_timer    lp_retry;
	int                  lp_parked;     /* waits for an accept's answer */
};

struct server_port {
	struct server              *sp_sv;
	const struct server_expose *sp_cfg;
	struct net_addrs            sp_addrs;
	char                        sp_target[NET_HOST_MAX + 8];
	struct server_poll         *sp_polls;
	char                        sp_problem[320];  /* last logged */
};

struct server_dial {
	LIST_ENTRY(server_dial) dl_link;
	struct server_port  *dl_port;
	struct server_poll  *dl_poll;       /* to post again, or NULL */
	char                 dl_id[RELAYCALL_NAME_MAX + 1];
	char                 dl_client[RELAYCALL_NAME_MAX + 1];
	int                  dl_fd;
	size_t               dl_ai;         /* address being tried */
	int                  dl_errno;
	char                 dl_where[NET_ADDR_TEXT_MAX];
	struct loop_timer    dl_timer;
	/* refuse call */
	struct curlloop_xfer dl_x;
	struct curl_slist   *dl_hdrs;
	char                 dl_errbuf[CURL_ERROR_SIZE];
	char                 dl_body[SERVER_BODY_MAX];
	size_t               dl_len;
	char                 dl_message[256];
};

struct server_tunnel {
	LIST_ENTRY(server_tunnel) st_link;
	struct server       *st_sv;
	struct server_port  *st_port;
	struct tunnel       *st_t;
	struct server_poll  *st_poll;       /* to post again, or NULL */
	char                 st_client[RELAYCALL_NAME_MAX + 1];
	int                  st_logged_open;
};

struct server {
	struct loop          *sv_loop;
	const struct server_options *sv_opt;
	struct curlloop      *sv_curl;
	struct curlloop      *sv_curl_up;   /* uploads (tunnel.h) */
	struct relaycall_conf sv_relay;
	struct tunnel_env     sv_env;
	struct server_port   *sv_ports;
	size_t                sv_nports;
	LIST_HEAD(, server_dial) sv_dials;
	LIST_HEAD(, server_tunnel) sv_tunnels;
	unsigned              sv_count;      /* dials + tunnels */
	int                   sv_relay_down;
	char                  sv_relay_problem[CURL_ERROR_SIZE];
	int                   sv_stopping;
	int                   sv_fallback;   /* auto found streams blocked */
	/* Sent as Postern-Instance on every listen: the relay answers the
	 * listens of an older instance of this server 409 replaced. */
	char                  sv_instance[SERVER_INSTANCE_LEN + 1];
	char                  sv_instance_hdr[SERVER_INSTANCE_LEN + 32];
	int                   sv_replaced;   /* another instance took over */
	int                   sv_draining;   /* SIGTERM: telling the peers */
	struct loop_timer     sv_drain;      /* replaced_grace, then exit */
};

uint64_t
server_backoff_next(uint64_t prev_ms)
{
	if (prev_ms < SERVER_BACKOFF_MIN_MS)
		return SERVER_BACKOFF_MIN_MS;
	if (prev_ms >= SERVER_BACKOFF_MAX_MS / 2)
		return SERVER_BACKOFF_MAX_MS;
	return prev_ms * 2;
}

/* Full jitter: proxies that lost the same relay at the same moment do not
 * come back in step.  The floor keeps a retry from following a failure
 * back to back. */
uint64_t
server_backoff_jitter(uint64_t ceiling_ms, uint32_t r)
{
	if (ceiling_ms > SERVER_BACKOFF_MAX_MS)
		ceiling_ms = SERVER_BACKOFF_MAX_MS;
	if (ceiling_ms <= SERVER_BACKOFF_FLOOR_MS)
		return SERVER_BACKOFF_FLOOR_MS;
	return SERVER_BACKOFF_FLOOR_MS +
	    (uint64_t)r % (ceiling_ms - SERVER_BACKOFF_FLOOR_MS + 1);
}

void
server_instance_token(char *out, size_t outlen)
{
	unsigned char raw[SERVER_INSTANCE_RAW];

	randombytes_buf(raw, sizeof(raw));
	sodium_bin2base64(out, outlen, raw, sizeof(raw),
	    sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

static size_t
server_keep_body(char *p, size_t size, size_t nmemb, char *buf, size_t *len)
{
	size_t n = size * nmemb, take = n;

	if (take > SERVER_BODY_MAX - *len)
		take = SERVER_BODY_MAX - *len;
	memcpy(buf + *len, p, take);
	*len += take;
	return n;
}

static void server_poll_start(struct server_poll *p);
static void server_drained(struct server *sv);

/* The connection a listen brought has been accepted (or has failed):
 * the listen goes out again now. */
static void
server_poll_unpark(struct server_poll *p)
{
	if (p == NULL || !p->lp_parked)
		return;
	p->lp_parked = 0;
	loop_timer_stop(p->lp_port->sp_sv->sv_loop, &p->lp_retry);
	server_poll_start(p);
}

/* ---- tunnels ---------------------------------------------------------- */

static void
server_log_open(struct server_tunnel *st)
{
	char from[NET_ADDR_TEXT_MAX];

	if (st->st_logged_open)
		return;
	st->st_logged_open = 1;
	net_peer_text(tunnel_peer(st->st_t), from, sizeof(from));
	log_info("tunnel open id=%s %s/%s from %s client=%s target=%s",
	    tunnel_id(st->st_t), st->st_sv->sv_opt->so_name,
	    st->st_port->sp_cfg->se_port, from, st->st_client,
	    st->st_port->sp_target);
}

static void
server_tunnel_open(struct tunnel *t, void *arg)
{
	(void)t;
	server_log_open(arg);
}

static void
server_tunnel_accepted(struct tunnel *t, void *arg)
{
	struct server_tunnel *st = arg;

	(void)t;
	server_poll_unpark(st->st_poll);
	st->st_poll = NULL;
}

static void
server_tunnel_closed(struct tunnel *t, const char *reason, void *arg)
{
	struct server_tunnel *st = arg;
	struct tunnel_stats ts;

	/* Ended before the relay answered its accept. */
	server_poll_unpark(st->st_poll);
	server_log_open(st);
	tunnel_stats(t, &ts);
	/* up/down as the client sees them, so both logs of a tunnel agree:
	 * up is what reached the target, down what came back. */
	log_msg(strcmp(reason, "done") == 0 ? LOG_INFO : LOG_WARN,
		    "tunnel closed id=%s %s/%s up=%llu down=%llu "
	    "duration=%llu.%03llus gen=%llu resent=%llu%s reason=%s", tunnel_id(t),
	    st->st_sv->sv_opt->so_name, st->st_port->sp_cfg->se_port,
	    (unsigned long long)ts.ts_down, (unsigned long long)ts.ts_up,
	    (unsigned long long)(ts.ts_ms / 1000),
	    (unsigned long long)(ts.ts_ms % 1000), (unsigned long long)ts.ts_gen,
	    (unsigned long long)ts.ts_resent, ts.ts_segmented ? " segmented" : "",
	    reason);
	LIST_REMOVE(st, st_link);
	st->st_sv->sv_count--;
	server_drained(st->st_sv);
	free(st);
}

static void
server_tunnel_note(struct tunnel *t, const char *what, void *arg)
{
	struct server_tunnel *st = arg;

	log_info("tunnel id=%s %s/%s: %s", tunnel_id(t),
	    st->st_sv->sv_opt->so_name, st->st_port->sp_cfg->se_port, what);
}

static const struct tunnel_cbs server_tunnel_cbs = {
	server_tunnel_open, server_tunnel_closed, server_tunnel_accepted,
	server_tunnel_note
};

/* ---- dials and refusals ------------------------------------------------ */

static void
server_dial_free(struct server_dial *d)
{
	struct server *sv = d->dl_port->sp_sv;

	loop_timer_stop(sv->sv_loop, &d->dl_timer);
	server_poll_unpark(d->dl_poll);
	if (d->dl_fd >= 0) {
		loop_unwatch(sv->sv_loop, d->dl_fd);
		close(d->dl_fd);
	}
	if (d->dl_x.cx_easy != NULL) {
		curlloop_remove(sv->sv_curl, &d->dl_x);
		curl_easy_cleanup(d->dl_x.cx_easy);
	}
	curl_slist_free_all(d->dl_hdrs);
	LIST_REMOVE(d, dl_link);
	sv->sv_count--;
	server_drained(sv);
	free(d);
}

static void
server_refuse_done(struct curlloop_xfer *x, CURLcode result, void *arg)
{
	struct server_dial *d = arg;
	char desc[320];
	long status = 0;

	curl_easy_getinfo(x->cx_easy, CURLINFO_RESPONSE_CODE, &status);
	if (result != CURLE_OK)
		log_warn("refuse id=%s failed: %s", d->dl_id,
		    d->dl_errbuf[0] ? d->dl_errbuf : curl_easy_strerror(result));
	else if (status != 200) {
		relaycall_describe(status, d->dl_body, d->dl_len, desc,
		    sizeof(desc));
		log_warn("refuse id=%s failed: %s", d->dl_id, desc);
	} else
		log_debug("refused id=%s", d->dl_id);
	server_dial_free(d);
}

static size_t
server_refuse_body(char *p, size_t size, size_t nmemb, void *arg)
{
	struct server_dial *d = arg;

	return server_keep_body(p, size, nmemb, d->dl_body, &d->dl_len);
}

/* Tells the relay (and so the waiting client) why there is no tunnel. */
static void
server_refuse(struct server_dial *d, const char *message, const char *code)
{
	static const char *const hdrs[] = {
		"Content-Type: application/json", NULL
	};
	struct server *sv = d->dl_port->sp_sv;
	char path[RELAYCALL_PATH_MAX], err[256];
	json_t *j;
	char *body;
	CURL *e;

	if (d->dl_fd >= 0) {
		loop_unwatch(sv->sv_loop, d->dl_fd);
		close(d->dl_fd);
		d->dl_fd = -1;
	}
	loop_timer_stop(sv->sv_loop, &d->dl_timer);
	server_poll_unpark(d->dl_poll);
	d->dl_poll = NULL;
	log_warn("refusing id=%s %s/%s (client %s): %s", d->dl_id,
	    sv->sv_opt->so_name, d->dl_port->sp_cfg->se_port, d->dl_client,
	    message);
	snprintf(path, sizeof(path), "/v1/s/%s/refuse/%s", sv->sv_opt->so_name,
	    d->dl_id);
	j = json_pack("{s:s, s:s}", "message", message, "code", code);
	body = j != NULL ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	e = body != NULL ? relaycall_easy(&sv->sv_relay, path, hdrs,
	    &d->dl_hdrs, err, sizeof(err)) : NULL;
	if (e == NULL) {
		log_warn("cannot refuse id=%s: %s", d->dl_id,
		    body == NULL ? "out of memory" : err);
		free(body);
		server_dial_free(d);
		return;
	}
	curl_easy_setopt(e, CURLOPT_COPYPOSTFIELDS, body);
	free(body);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, d->dl_errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, server_refuse_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, d);
	d->dl_x.cx_easy = e;
	d->dl_x.cx_done = server_refuse_done;
	d->dl_x.cx_arg = d;
	d->dl_x.cx_errbuf = d->dl_errbuf;
	if (curlloop_add(sv->sv_curl, &d->dl_x, err, sizeof(err)) == -1) {
		log_warn("cannot refuse id=%s: %s", d->dl_id, err);
		server_dial_free(d);
	}
}

static void
server_refuse_errno(struct server_dial *d)
{
	char msg[256], nb[16];

	snprintf(msg, sizeof(msg), "connect to %s: %s", d->dl_where,
	    strerror(d->dl_errno));
	server_refuse(d, msg, net_errno_name(d->dl_errno, nb, sizeof(nb)));
}

/* The target answered: the dial becomes a tunnel. */
static void
server_dial_connected(struct server_dial *d)
{
	struct server *sv = d->dl_port->sp_sv;
	struct server_tunnel *st;
	char err[256];
	int fd = d->dl_fd;

	loop_unwatch(sv->sv_loop, fd);
	d->dl_fd = -1;
	if ((st = calloc(1, sizeof(*st))) == NULL) {
		close(fd);
		server_refuse(d, "server out of memory", "ENOMEM");
		return;
	}
	st->st_sv = sv;
	st->st_port = d->dl_port;
	st->st_poll = d->dl_poll;
	d->dl_poll = NULL;
	snprintf(st->st_client, sizeof(st->st_client), "%s", d->dl_client);
	st->st_t = tunnel_new(&sv->sv_env, TUNNEL_SERVER, fd, sv->sv_opt->so_name,
	    d->dl_port->sp_cfg->se_port, &server_tunnel_cbs, st, err,
	    sizeof(err));
	if (st->st_t == NULL) {
		free(st);
		close(fd);
		server_refuse(d, err, "EIO");
		return;
	}
	log_debug("connected to %s for id=%s", d->dl_where, d->dl_id);
	LIST_INSERT_HEAD(&sv->sv_tunnels, st, st_link);
	sv->sv_count++;
	if (tunnel_accept(st->st_t, d->dl_id, err, sizeof(err)) == -1)
		tunnel_close(st->st_t, err);
	else
		tunnel_env_flush(&sv->sv_env);   /* before the next listen */
	server_dial_free(d);
}

static void server_dial_next(struct server_dial *d);

static void
server_dial_on_io(struct loop *l, int fd, int events, void *arg)
{
	struct server_dial *d = arg;
	int e;

	(void)l;
	(void)events;
	if ((e = net_connect_error(fd)) == 0) {
		server_dial_connected(d);
		return;
	}
	d->dl_errno = e;
	loop_unwatch(d->dl_port->sp_sv->sv_loop, fd);
	close(fd);
	d->dl_fd = -1;
	d->dl_ai++;
	server_dial_next(d);
}

static void
server_dial_timeout(struct loop *l, void *arg)
{
	struct server_dial *d = arg;

	(void)l;
	d->dl_errno = ETIMEDOUT;
	server_refuse_errno(d);
}

/* Tries the target's addresses in turn until one connects. */
static void
server_dial_next(struct server_dial *d)
{
	struct server_port *sp = d->dl_port;
	struct loop *l = sp->sp_sv->sv_loop;
	int fd, e;

	while (d->dl_ai < sp->sp_addrs.na_count) {
		const struct sockaddr *sa =
		    (const struct sockaddr *)&sp->sp_addrs.na_addr[d->dl_ai];

		net_sockaddr_text(sa, d->dl_where, sizeof(d->dl_where));
		fd = net_connect_start(sa, sp->sp_addrs.na_len[d->dl_ai]);
		if (fd == -1) {
			d->dl_errno = errno;
			d->dl_ai++;
			continue;
		}
		/* A target on this host has answered already: start the
		 * tunnel now rather than after a trip through the loop. */
		if ((e = net_connect_poll(fd)) == 0) {
			d->dl_fd = fd;
			server_dial_connected(d);
			return;
		}
		if (e != EINPROGRESS) {
			d->dl_errno = e;
			close(fd);
			d->dl_ai++;
			continue;
		}
		if (loop_watch(l, fd, LOOP_WRITE, server_dial_on_io, d) == -1) {
			d->dl_errno = errno;
			close(fd);
			d->dl_ai++;
			continue;
		}
		d->dl_fd = fd;
		return;
	}
	server_refuse_errno(d);
}

static void
server_dial(struct server_port *sp, const char *id, const char *client,
    struct server_poll *p)
{
	struct server *sv = sp->sp_sv;
	struct server_dial *d;
	char msg[256];

	if ((d = calloc(1, sizeof(*d))) == NULL) {
		log_error("out of memory: dropping connection id=%s", id);
		server_poll_unpark(p);
		return;
	}
	d->dl_port = sp;
	d->dl_poll = p;
	d->dl_fd = -1;
	snprintf(d->dl_id, sizeof(d->dl_id), "%s", id);
	snprintf(d->dl_client, sizeof(d->dl_client), "%s", client);
	loop_timer_init(&d->dl_timer, server_dial_timeout, d);
	LIST_INSERT_HEAD(&sv->sv_dials, d, dl_link);
	sv->sv_count++;
	if (sv->sv_count > sv->sv_opt->so_ps.ps_max_tunnels) {
		snprintf(msg, sizeof(msg), "server %s is at max_tunnels (%u)",
		    sv->sv_opt->so_name, sv->sv_opt->so_ps.ps_max_tunnels);
		server_refuse(d, msg, "busy");
		return;
	}
	loop_timer_start(sv->sv_loop, &d->dl_timer,
	    sv->sv_opt->so_ps.ps_connect_timeout_ms);
	server_dial_next(d);
}

/* ---- listens ------------------------------------------------------------ */

static void
server_relay_ok(struct server *sv)
{
	if (sv->sv_relay_down)
		log_info("relay %s reachable again", sv->sv_opt->so_ps.ps_relay);
	sv->sv_relay_down = 0;
	sv->sv_relay_problem[0] = '\0';
}

static const char *
server_hint(long status, const char *body, size_t len)
{
	if (status == 401)
		return "check that --key is the key whose public half the "
		    "relay config lists for this server, and that both clocks "
		    "are right";
	if (status == 403)
		return "check that the relay config lets this server offer "
		    "this port (its 'ports' list) and that --name is this "
		    "key's server";
	if (status == 404 && len > 0 && memmem(body, len, "unknown_port",
	    12) != NULL)
		return "check the port name of --expose against the 'ports' "
		    "list of this server in the relay config";
	if (status == 404)
		return "check --name against the [server NAME] sections of "
		    "the relay config";
	return NULL;
}

static void
server_poll_retry(struct server_poll *p)
{
	struct server *sv = p->lp_port->sp_sv;

	/* A poll that lived long had worked: start the backoff over. */
	if (loop_now_ms() - p->lp_started >= SERVER_BACKOFF_MAX_MS)
		p->lp_backoff_ms = 0;
	p->lp_backoff_ms = server_backoff_next(p->lp_backoff_ms);
	loop_timer_start(sv->sv_loop, &p->lp_retry,
	    server_backoff_jitter(p->lp_backoff_ms, randombytes_random()));
}

static void
server_poll_answer(struct server_poll *p)
{
	struct server_port *sp = p->lp_port;
	json_t *j, *id, *port, *client;

	j = json_loadb(p->lp_body, p->lp_len, 0, NULL);
	id = j ? json_object_get(j, "id") : NULL;
	port = j ? json_object_get(j, "port") : NULL;
	client = j ? json_object_get(j, "client") : NULL;
	if (!json_is_string(id) || !relaycall_name_valid(json_string_value(id))) {
		log_error("relay answered listen for %s/%s with 200 but no "
		    "usable connection id: '%.200s'", sp->sp_sv->sv_opt->so_name,
		    sp->sp_cfg->se_port, p->lp_len ? p->lp_body : "");
		json_decref(j);
		server_poll_start(p);
		return;
	}
	if (json_is_string(port) &&
	    strcmp(json_string_value(port), sp->sp_cfg->se_port) != 0)
		log_warn("relay answered listen for port %s with port %.64s; "
		    "serving %s", sp->sp_cfg->se_port, json_string_value(port),
		    sp->sp_cfg->se_port);
	/* Parked before the dial, which may end (and unpark) at once. */
	p->lp_parked = 1;
	loop_timer_start(sp->sp_sv->sv_loop, &p->lp_retry, SERVER_RELISTEN_MS);
	server_dial(sp, json_string_value(id),
	    json_is_string(client) && relaycall_name_valid(
	    json_string_value(client)) ? json_string_value(client) : "?", p);
	json_decref(j);
}

/* 1 when an error body is JSON whose "code" is code. */
static void server_poll_stop(struct server *sv, struct server_poll *p);

static void
server_drained(struct server *sv)
{
	if ((!sv->sv_replaced && !sv->sv_draining) || sv->sv_stopping ||
	    sv->sv_count != 0)
		return;
	loop_timer_stop(sv->sv_loop, &sv->sv_drain);
	log_info("%s: no tunnels left; exiting", sv->sv_opt->so_name);
	loop_stop(sv->sv_loop);
}

static void
server_drain_timeout(struct loop *l, void *arg)
{
	struct server *sv = arg;

	(void)l;
	log_warn("%s: %s over; ending %u tunnels", sv->sv_opt->so_name,
	    sv->sv_draining ? "shutdown_grace" : "replaced_grace", sv->sv_count);
	while (!LIST_EMPTY(&sv->sv_dials))
		server_dial_free(LIST_FIRST(&sv->sv_dials));
	while (!LIST_EMPTY(&sv->sv_tunnels))
		tunnel_close(LIST_FIRST(&sv->sv_tunnels)->st_t,
		    sv->sv_draining ? "shutdown" : "replaced");
	/* With none left the last close stopped the loop; stop it anyway. */
	loop_stop(sv->sv_loop);
}

/* Another postern-server with our key and name registered after us
 * (docs/protocol.md, "Newest registration wins"): it serves new
 * connections now.  We stop listening, let our open tunnels finish for
 * at most replaced_grace, and exit with status 1 so that a supervisor
 * shows the failure rather than a clean stop. */
static void
server_replaced(struct server *sv, const char *desc)
{
	size_t i, j;

	if (sv->sv_replaced)
		return;
	sv->sv_replaced = 1;
	log_error("another postern-server with the same key took over server "
	    "'%s' (this instance %s; %s): stopping. Only one process may serve "
	    "a name: if both keep running they take it from each other on "
	    "every restart; give each machine its own key and [server] name",
	    sv->sv_opt->so_name, sv->sv_instance, desc);
	for (i = 0; i < sv->sv_nports; i++)
		for (j = 0; j < sv->sv_opt->so_listens_per_port; j++)
			server_poll_stop(sv, &sv->sv_ports[i].sp_polls[j]);
	if (sv->sv_count == 0) {
		server_drained(sv);
		return;
	}
	log_info("%s: letting %u open tunnels finish (at most %llu.%03llu s, "
	    "replaced_grace)", sv->sv_opt->so_name, sv->sv_count,
	    (unsigned long long)(sv->sv_opt->so_replaced_grace_ms / 1000),
	    (unsigned long long)(sv->sv_opt->so_replaced_grace_ms % 1000));
	loop_timer_start(sv->sv_loop, &sv->sv_drain,
	    sv->sv_opt->so_replaced_grace_ms);
}

int
server_exit_status(const struct server *sv)
{
	return sv != NULL && sv->sv_replaced ? 1 : 0;
}

static void
server_poll_done(struct curlloop_xfer *x, CURLcode result, void *arg)
{
	struct server_poll *p = arg;
	struct server_port *sp = p->lp_port;
	struct server *sv = sp->sp_sv;
	const char *hint;
	char desc[320];
	long status = 0;
	uint64_t took;

	curl_easy_getinfo(x->cx_easy, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_cleanup(x->cx_easy);
	x->cx_easy = NULL;
	curl_slist_free_all(p->lp_hdrs);
	p->lp_hdrs = NULL;
	if (sv->sv_stopping)
		return;
	if (result != CURLE_OK) {
		const char *why = p->lp_errbuf[0] ? p->lp_errbuf :
		    curl_easy_strerror(result);
		const char *hint = relaycall_hint(&sv->sv_relay, result);

		/* One line when the relay goes away, not one per retry.  A
		 * certificate refused is no network glitch: it needs the
		 * operator, so it is an error. */
		if (!sv->sv_relay_down && relaycall_tls_refused(result))
			log_error("relay %s refused: %s; %s; retrying with "
			    "backoff (at most %d s)", sv->sv_opt->so_ps.ps_relay,
			    why, hint, SERVER_BACKOFF_MAX_MS / 1000);
		else if (!sv->sv_relay_down)
			log_warn("relay %s unreachable: %s%s%s; retrying with "
			    "backoff (at most %d s)", sv->sv_opt->so_ps.ps_relay,
			    why, hint != NULL ? "; " : "", hint != NULL ? hint : "",
			    SERVER_BACKOFF_MAX_MS / 1000);
		sv->sv_relay_down = 1;
		snprintf(sv->sv_relay_problem, sizeof(sv->sv_relay_problem),
		    "%s", why);
		server_poll_retry(p);
		return;
	}
	server_relay_ok(sv);
	if (status == 200 || status == 204) {
		if (sp->sp_problem[0] != '\0')
			log_info("relay accepts listens for %s/%s again",
			    sv->sv_opt->so_name, sp->sp_cfg->se_port);
		sp->sp_problem[0] = '\0';
		p->lp_backoff_ms = 0;
		if (status == 200) {
			server_poll_answer(p);
			return;
		}
		took = loop_now_ms() - p->lp_started;
		if (status == 204 && took < SERVER_QUICK_204_MS) {
			/* A relay that answers at once would make us spin. */
			loop_timer_start(sv->sv_loop, &p->lp_retry,
			    SERVER_QUICK_204_MS);
		} else
			server_poll_start(p);
		return;
	}
	relaycall_describe(status, p->lp_body, p->lp_len, desc, sizeof(desc));
	if (status == 409 && relaycall_code_is(p->lp_body, p->lp_len,
	    "replaced")) {
		server_replaced(sv, desc);
		return;
	}
	if (status == 401 && relaycall_code_is(p->lp_body, p->lp_len,
	    "replayed_nonce")) {
		/* curl re-sent the listen on a fresh connection after the
		 * reused one died: sign anew, no operator needed. */
		log_debug("listen for %s/%s: %s; again at once",
		    sv->sv_opt->so_name, sp->sp_cfg->se_port, desc);
		server_poll_start(p);
		return;
	}
	if (strcmp(desc, sp->sp_problem) != 0) {
		hint = server_hint(status, p->lp_body, p->lp_len);
		if (hint != NULL)
			log_error("listen for %s/%s refused: %s; %s; retrying "
			    "with backoff", sv->sv_opt->so_name,
			    sp->sp_cfg->se_port, desc, hint);
		else
			log_warn("listen for %s/%s failed: %s; retrying with "
			    "backoff", sv->sv_opt->so_name, sp->sp_cfg->se_port,
			    desc);
		snprintf(sp->sp_problem, sizeof(sp->sp_problem), "%s", desc);
	}
	server_poll_retry(p);
}

static size_t
server_poll_body(char *ptr, size_t size, size_t nmemb, void *arg)
{
	struct server_poll *p = arg;

	return server_keep_body(ptr, size, nmemb, p->lp_body, &p->lp_len);
}

/* Connected to the relay, request about to go out: the relay is back,
 * which a long poll would otherwise tell only when it returns. */
static void
server_poll_ready(struct curlloop_xfer *x, void *arg)
{
	struct server_poll *p = arg;

	(void)x;
	server_relay_ok(p->lp_port->sp_sv);
}

static void
server_poll_start(struct server_poll *p)
{
	struct server_port *sp = p->lp_port;
	struct server *sv = sp->sp_sv;
	const char *const instance[] = { sv->sv_instance_hdr, NULL };
	char path[RELAYCALL_PATH_MAX], err[256];
	CURL *e;

	if (sv->sv_stopping || sv->sv_replaced || p->lp_x.cx_easy != NULL)
		return;
	snprintf(path, sizeof(path), "/v1/s/%s/listen/%s", sv->sv_opt->so_name,
	    sp->sp_cfg->se_port);
	p->lp_len = 0;
	p->lp_errbuf[0] = '\0';
	e = relaycall_easy(&sv->sv_relay, path, instance, &p->lp_hdrs, err,
	    sizeof(err));
	if (e == NULL) {
		log_error("listen for %s/%s: %s", sv->sv_opt->so_name,
		    sp->sp_cfg->se_port, err);
		server_poll_retry(p);
		return;
	}
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, "");
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, 0L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, p->lp_errbuf);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, server_poll_body);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, p);
	p->lp_x.cx_easy = e;
	p->lp_x.cx_done = server_poll_done;
	p->lp_x.cx_arg = p;
	p->lp_x.cx_ready = server_poll_ready;
	p->lp_x.cx_errbuf = p->lp_errbuf;
	p->lp_started = loop_now_ms();
	if (curlloop_add(sv->sv_curl, &p->lp_x, err, sizeof(err)) == -1) {
		log_error("listen for %s/%s: %s", sv->sv_opt->so_name,
		    sp->sp_cfg->se_port, err);
		curl_easy_cleanup(e);
		p->lp_x.cx_easy = NULL;
		curl_slist_free_all(p->lp_hdrs);
		p->lp_hdrs = NULL;
		server_poll_retry(p);
	}
}

static void
server_poll_on_retry(struct loop *l, void *arg)
{
	struct server_poll *p = arg;

	(void)l;
	p->lp_parked = 0;
	server_poll_start(p);
}

static void
server_poll_stop(struct server *sv, struct server_poll *p)
{
	loop_timer_stop(sv->sv_loop, &p->lp_retry);
	p->lp_parked = 0;
	if (p->lp_x.cx_easy != NULL) {
		curlloop_remove(sv->sv_curl, &p->lp_x);
		curl_easy_cleanup(p->lp_x.cx_easy);
		p->lp_x.cx_easy = NULL;
	}
	curl_slist_free_all(p->lp_hdrs);
	p->lp_hdrs = NULL;
}

/* ---- the server --------------------------------------------------------- */

struct server *
server_new(struct loop *l, const struct server_options *so,
    const struct key *k, char *err, size_t errlen)
{
	const struct proxy_settings *ps = &so->so_ps;
	struct server *sv;
	size_t i, j, total;

	if ((sv = calloc(1, sizeof(*sv))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	sv->sv_loop = l;
	sv->sv_opt = so;
	server_instance_token(sv->sv_instance, sizeof(sv->sv_instance));
	snprintf(sv->sv_instance_hdr, sizeof(sv->sv_instance_hdr),
	    "Postern-Instance: %s", sv->sv_instance);
	loop_timer_init(&sv->sv_drain, server_drain_timeout, sv);
	LIST_INIT(&sv->sv_dials);
	LIST_INIT(&sv->sv_tunnels);
	if (relaycall_conf_url(&sv->sv_relay, ps->ps_relay, err, errlen) == -1)
		goto fail;
	sv->sv_relay.rc_key = k;
	sv->sv_relay.rc_connect_timeout_ms = (long)ps->ps_relay_timeout_ms;
	sv->sv_relay.rc_cacert = ps->ps_cacert;
	sv->sv_relay.rc_insecure = ps->ps_insecure;
	sv->sv_relay.rc_pin = ps->ps_pin;
	sv->sv_relay.rc_proxy = ps->ps_proxy;
	sv->sv_relay.rc_proxy_cacert = ps->ps_proxy_cacert;
	total = so->so_nexp * so->so_listens_per_port;
	sv->sv_curl = curlloop_new(l, (long)(ps->ps_max_tunnels * 2 + total +
	    16), err, errlen);
	if (sv->sv_curl == NULL)
		goto fail;
	curlloop_set_connect_timeout(sv->sv_curl, ps->ps_relay_timeout_ms);
	sv->sv_curl_up = curlloop_new(l, TUNNEL_UPLOAD_IDLE_CONNS, err, errlen);
	if (sv->sv_curl_up == NULL)
		goto fail;
	curlloop_set_connect_timeout(sv->sv_curl_up, ps->ps_relay_timeout_ms);
	sv->sv_env.te_loop = l;
	sv->sv_env.te_curl = sv->sv_curl;
	sv->sv_env.te_curl_up = sv->sv_curl_up;
	sv->sv_env.te_relay = &sv->sv_relay;
	sv->sv_env.te_frame_max = ps->ps_frame_max;
	sv->sv_env.te_buffer = ps->ps_buffer;
	sv->sv_env.te_keepalive_ms = ps->ps_keepalive_ms;
	sv->sv_env.te_window = ps->ps_window;
	sv->sv_env.te_resume_grace_ms = ps->ps_resume_grace_ms;
	sv->sv_env.te_peer_timeout_ms = ps->ps_peer_timeout_ms;
	sv->sv_env.te_transport = ps->ps_transport;
	sv->sv_env.te_segment_bytes = ps->ps_segment_bytes;
	sv->sv_env.te_segment_ms = ps->ps_segment_ms;
	sv->sv_env.te_probe_ms = ps->ps_probe_ms;
	sv->sv_env.te_fallback = &sv->sv_fallback;
	if ((sv->sv_env.te_batch = tunnel_batch_new()) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if ((sv->sv_ports = calloc(so->so_nexp, sizeof(*sv->sv_ports))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (i = 0; i < so->so_nexp; i++) {
		struct server_port *sp = &sv->sv_ports[i];
		const struct server_expose *e = &so->so_exp[i];

		sv->sv_nports++;
		sp->sp_sv = sv;
		sp->sp_cfg = e;
		snprintf(sp->sp_target, sizeof(sp->sp_target),
		    strchr(e->se_host, ':') ? "[%s]:%u" : "%s:%u", e->se_host,
		    (unsigned)e->se_tport);
		if (net_resolve(e->se_host, e->se_tport, 0, &sp->sp_addrs, err,
		    errlen) == -1)
			goto fail;
		sp->sp_polls = calloc(so->so_listens_per_port,
		    sizeof(*sp->sp_polls));
		if (sp->sp_polls == NULL) {
			snprintf(err, errlen, "out of memory");
			goto fail;
		}
		for (j = 0; j < so->so_listens_per_port; j++) {
			sp->sp_polls[j].lp_port = sp;
			loop_timer_init(&sp->sp_polls[j].lp_retry,
			    server_poll_on_retry, &sp->sp_polls[j]);
		}
	}
	log_debug("%s: instance %s", so->so_name, sv->sv_instance);
	for (i = 0; i < sv->sv_nports; i++) {
		struct server_port *sp = &sv->sv_ports[i];

		log_info("serving %s/%s -> %s via %s", so->so_name,
		    sp->sp_cfg->se_port, sp->sp_target, ps->ps_relay);
		for (j = 0; j < so->so_listens_per_port; j++)
			server_poll_start(&sp->sp_polls[j]);
	}
	return sv;
fail:
	server_free(sv);
	return NULL;
}

void
server_shutdown(struct server *sv)
{
	size_t i, j;

	sv->sv_stopping = 1;
	loop_timer_stop(sv->sv_loop, &sv->sv_drain);
	for (i = 0; i < sv->sv_nports; i++) {
		struct server_port *sp = &sv->sv_ports[i];

		if (sp->sp_polls == NULL)
			continue;
		for (j = 0; j < sv->sv_opt->so_listens_per_port; j++)
			server_poll_stop(sv, &sp->sp_polls[j]);
	}
	while (!LIST_EMPTY(&sv->sv_dials))
		server_dial_free(LIST_FIRST(&sv->sv_dials));
	while (!LIST_EMPTY(&sv->sv_tunnels))
		tunnel_close(LIST_FIRST(&sv->sv_tunnels)->st_t, "shutdown");
}

int
server_drain(struct server *sv)
{
	struct server_tunnel *st, *next;
	size_t i, j;

	if (sv->sv_replaced || sv->sv_draining)
		return sv->sv_count > 0;
	sv->sv_draining = 1;
	for (i = 0; i < sv->sv_nports; i++) {
		if (sv->sv_ports[i].sp_polls == NULL)
			continue;
		for (j = 0; j < sv->sv_opt->so_listens_per_port; j++)
			server_poll_stop(sv, &sv->sv_ports[i].sp_polls[j]);
	}
	while (!LIST_EMPTY(&sv->sv_dials))
		server_dial_free(LIST_FIRST(&sv->sv_dials));
	if (sv->sv_opt->so_ps.ps_shutdown_grace_ms == 0 || sv->sv_count == 0)
		return 0;
	log_info("%s: telling the clients of %u open tunnels (at most "
	    "%llu.%03llu s, shutdown_grace)", sv->sv_opt->so_name, sv->sv_count,
	    (unsigned long long)(sv->sv_opt->so_ps.ps_shutdown_grace_ms / 1000),
	    (unsigned long long)(sv->sv_opt->so_ps.ps_shutdown_grace_ms % 1000));
	loop_timer_start(sv->sv_loop, &sv->sv_drain,
	    sv->sv_opt->so_ps.ps_shutdown_grace_ms);
	for (st = LIST_FIRST(&sv->sv_tunnels); st != NULL; st = next) {
		next = LIST_NEXT(st, st_link);
		tunnel_abort(st->st_t, "the server-proxy is shutting down");
	}
	if (sv->sv_count == 0)
		return 0;
	return 1;
}

void
server_free(struct server *sv)
{
	size_t i;

	if (sv == NULL)
		return;
	server_shutdown(sv);
	curlloop_free(sv->sv_curl_up);
	curlloop_free(sv->sv_curl);
	tunnel_batch_free(sv->sv_env.te_batch);
	for (i = 0; i < sv->sv_nports; i++)
		free(sv->sv_ports[i].sp_polls);
	free(sv->sv_ports);
	free(sv);
}
