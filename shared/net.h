/* Socket helpers for the proxies: address parsing, nonblocking listen and
 * connect, and the text forms used in logs and M-PROXY headers. */
#ifndef POSTERN_NET_H
#define POSTERN_NET_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define NET_HOST_MAX      256  /* a host name or literal, with NUL */
#define NET_ADDR_TEXT_MAX 64   /* "[v6 literal]:65535" with NUL */
#define NET_ADDRS_MAX     8    /* addresses kept from one resolution */

/* "HOST:PORT" or "[V6]:PORT".  PORT is 1..65535, or 0..65535 when
 * allow_zero.  Returns 0, or -1 with err filled. */
int net_split_hostport(const char *s, char *host, size_t hostlen,
                       uint16_t *port, int allow_zero,
                       char *err, size_t errlen);

/* A target "tcp://HOST:PORT" (the scheme may be left out). */
int net_parse_target(const char *s, char *host, size_t hostlen,
                     uint16_t *port, char *err, size_t errlen);

struct net_addrs {
	struct sockaddr_storage na_addr[NET_ADDRS_MAX];
	socklen_t na_len[NET_ADDRS_MAX];
	size_t    na_count;
};

/* Blocking getaddrinfo (TCP), for start-up only.  passive: for bind(). */
int net_resolve(const char *host, uint16_t port, int passive,
                struct net_addrs *out, char *err, size_t errlen);

/* A nonblocking, close-on-exec listening TCP socket (SO_REUSEADDR). */
int net_listen(const struct sockaddr *sa, socklen_t len, int backlog,
               char *err, size_t errlen);

/* Starts a nonblocking connect.  Returns the socket (connected or in
 * progress: wait for writable, then net_connect_error), or -1 with errno
 * set. */
int net_connect_start(const struct sockaddr *sa, socklen_t len);
/* 0 once connected, else the errno of the failed connect. */
int net_connect_error(int fd);
/* Without waiting: 0 when connected, EINPROGRESS while the handshake
 * runs, else the errno of the failed connect.  On loopback the handshake
 * is usually over before connect() returns. */
int net_connect_poll(int fd);

void net_nodelay(int fd);
/* Closes with SO_LINGER 0: the peer sees a reset, not an end of stream. */
void net_reset_close(int fd);

/* The M-PROXY view of an address: family "IPv4"/"IPv6", the literal, the
 * port.  IPv4-mapped IPv6 addresses are shown as IPv4. */
struct net_peer {
	char     np_family[8];
	char     np_address[48];
	uint16_t np_port;
};
int net_peer_from(const struct sockaddr *sa, struct net_peer *p);
/* "127.0.0.1:22", "[::1]:22". */
void net_peer_text(const struct net_peer *p, char *out, size_t outlen);
void net_sockaddr_text(const struct sockaddr *sa, char *out, size_t outlen);

/* Raises the soft RLIMIT_NOFILE towards want (at most the hard limit);
 * returns the soft limit now in force. */
unsigned long net_raise_nofile(unsigned long want);

/* "ECONNREFUSED" and the like ("E123" for a number without a name). */
const char *net_errno_name(int e, char *buf, size_t buflen);

#endif
