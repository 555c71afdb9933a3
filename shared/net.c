/* Socket helpers shared by the proxies. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net.h"

static int
net_parse_port(const char *s, uint16_t *port, int allow_zero)
{
	unsigned long v = 0;
	const char *p;

	if (*s == '\0' || strlen(s) > 5)
		return -1;
	for (p = s; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		v = v * 10 + (unsigned long)(*p - '0');
	}
	if (v > 65535 || (v == 0 && !allow_zero))
		return -1;
	*port = (uint16_t)v;
	return 0;
}

int
net_split_hostport(const char *s, char *host, size_t hostlen,
    uint16_t *port, int allow_zero, char *err, size_t errlen)
{
	const char *colon, *hs, *he;
	size_t n;

	if (s[0] == '[') {
		hs = s + 1;
		if ((he = strchr(hs, ']')) == NULL) {
			snprintf(err, errlen, "'%s': missing ']' after the IPv6 "
			    "address", s);
			return -1;
		}
		if (he[1] != ':') {
			snprintf(err, errlen, "'%s': expected ':PORT' after ']'",
			    s);
			return -1;
		}
		colon = he + 1;
	} else {
		if ((colon = strrchr(s, ':')) == NULL) {
			snprintf(err, errlen, "'%s': expected HOST:PORT", s);
			return -1;
		}
		if (memchr(s, ':', (size_t)(colon - s)) != NULL) {
			snprintf(err, errlen, "'%s': write an IPv6 address in "
			    "brackets, as [::1]:PORT", s);
			return -1;
		}
		hs = s;
		he = colon;
	}
	n = (size_t)(he - hs);
	if (n == 0) {
		snprintf(err, errlen, "'%s': the host is empty", s);
		return -1;
	}
	if (n >= hostlen) {
		snprintf(err, errlen, "'%s': the host is too long", s);
		return -1;
	}
	if (net_parse_port(colon + 1, port, allow_zero) == -1) {
		snprintf(err, errlen, "'%s': the port must be a number from %d "
		    "to 65535", s, allow_zero ? 0 : 1);
		return -1;
	}
	memcpy(host, hs, n);
	host[n] = '\0';
	return 0;
}

int
net_parse_target(const char *s, char *host, size_t hostlen, uint16_t *port,
    char *err, size_t errlen)
{
	const char *rest = s, *sep;

	if ((sep = strstr(s, "://")) != NULL) {
		if ((size_t)(sep - s) != 3 || strncmp(s, "tcp", 3) != 0) {
			snprintf(err, errlen, "'%s': only tcp:// targets are "
			    "supported", s);
			return -1;
		}
		rest = sep + 3;
	}
	return net_split_hostport(rest, host, hostlen, port, 0, err, errlen);
}

int
net_resolve(const char *host, uint16_t port, int passive,
    struct net_addrs *out, char *err, size_t errlen)
{
	struct addrinfo hints, *res = NULL, *ai;
	char pbuf[8];
	int rc;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = passive ? AI_PASSIVE : AI_ADDRCONFIG;
	snprintf(pbuf, sizeof(pbuf), "%u", (unsigned)port);
	if ((rc = getaddrinfo(host, pbuf, &hints, &res)) != 0) {
		/* AI_ADDRCONFIG hides loopback-only hosts on a machine
		 * with no configured address; ask again without it. */
		if (!passive && rc != EAI_SYSTEM) {
			hints.ai_flags = 0;
			rc = getaddrinfo(host, pbuf, &hints, &res);
		}
		if (rc != 0) {
			snprintf(err, errlen, "cannot resolve '%s': %s", host,
			    rc == EAI_SYSTEM ? strerror(errno) :
			    gai_strerror(rc));
			return -1;
		}
	}
	out->na_count = 0;
	for (ai = res; ai != NULL && out->na_count < NET_ADDRS_MAX;
	    ai = ai->ai_next) {
		if (ai->ai_addrlen > sizeof(out->na_addr[0]))
			continue;
		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		memcpy(&out->na_addr[out->na_count], ai->ai_addr,
		    ai->ai_addrlen);
		out->na_len[out->na_count] = ai->ai_addrlen;
		out->na_count++;
	}
	freeaddrinfo(res);
	if (out->na_count == 0) {
		snprintf(err, errlen, "'%s' has no IPv4 or IPv6 address", host);
		return -1;
	}
	return 0;
}

int
net_listen(const struct sockaddr *sa, socklen_t len, int backlog,
    char *err, size_t errlen)
{
	char text[NET_ADDR_TEXT_MAX];
	int fd, one = 1;

	net_sockaddr_text(sa, text, sizeof(text));
	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    IPPROTO_TCP);
	if (fd == -1) {
		snprintf(err, errlen, "socket for %s: %s", text,
		    strerror(errno));
		return -1;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (sa->sa_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one,
		    sizeof(one));
	if (bind(fd, sa, len) == -1) {
		snprintf(err, errlen, "bind %s: %s", text, strerror(errno));
		close(fd);
		return -1;
	}
	if (listen(fd, backlog) == -1) {
		snprintf(err, errlen, "listen on %s: %s", text,
		    strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

int
net_connect_start(const struct sockaddr *sa, socklen_t len)
{
	int fd, saved;

	fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    IPPROTO_TCP);
	if (fd == -1)
		return -1;
	net_nodelay(fd);
	if (connect(fd, sa, len) == -1 && errno != EINPROGRESS) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

int
net_connect_error(int fd)
{
	int e = 0;
	socklen_t len = sizeof(e);

	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &len) == -1)
		return errno;
	return e;
}

int
net_connect_poll(int fd)
{
	struct pollfd pfd;
	int n;

	pfd.fd = fd;
	pfd.events = POLLOUT;
	pfd.revents = 0;
	while ((n = poll(&pfd, 1, 0)) == -1 && errno == EINTR)
		;
	if (n == -1)
		return errno;
	if (n == 0)
		return EINPROGRESS;
	return net_connect_error(fd);
}

void
net_nodelay(int fd)
{
	int one = 1;

	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

void
net_reset_close(int fd)
{
	struct linger lg = { 1, 0 };

	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

int
net_peer_from(const struct sockaddr *sa, struct net_peer *p)
{
	const struct sockaddr_in *s4;
	const struct sockaddr_in6 *s6;
	struct in_addr a4;

	memset(p, 0, sizeof(*p));
	if (sa->sa_family == AF_INET) {
		s4 = (const struct sockaddr_in *)(const void *)sa;
		snprintf(p->np_family, sizeof(p->np_family), "IPv4");
		inet_ntop(AF_INET, &s4->sin_addr, p->np_address,
		    sizeof(p->np_address));
		p->np_port = ntohs(s4->sin_port);
		return 0;
	}
	if (sa->sa_family == AF_INET6) {
		s6 = (const struct sockaddr_in6 *)(const void *)sa;
		p->np_port = ntohs(s6->sin6_port);
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			memcpy(&a4, &s6->sin6_addr.s6_addr[12], 4);
			snprintf(p->np_family, sizeof(p->np_family), "IPv4");
			inet_ntop(AF_INET, &a4, p->np_address,
			    sizeof(p->np_address));
			return 0;
		}
		snprintf(p->np_family, sizeof(p->np_family), "IPv6");
		inet_ntop(AF_INET6, &s6->sin6_addr, p->np_address,
		    sizeof(p->np_address));
		return 0;
	}
	return -1;
}

void
net_peer_text(const struct net_peer *p, char *out, size_t outlen)
{
	if (p->np_address[0] == '\0')
		snprintf(out, outlen, "unknown");
	else if (strchr(p->np_address, ':') != NULL)
		snprintf(out, outlen, "[%s]:%u", p->np_address,
		    (unsigned)p->np_port);
	else
		snprintf(out, outlen, "%s:%u", p->np_address,
		    (unsigned)p->np_port);
}

void
net_sockaddr_text(const struct sockaddr *sa, char *out, size_t outlen)
{
	struct net_peer p;

	if (net_peer_from(sa, &p) == -1) {
		snprintf(out, outlen, "(address family %d)", sa->sa_family);
		return;
	}
	net_peer_text(&p, out, outlen);
}

const char *
net_errno_name(int e, char *buf, size_t buflen)
{
	const char *name = strerrorname_np(e);

	if (name != NULL)
		return name;
	snprintf(buf, buflen, "E%d", e);
	return buf;
}

unsigned long
net_raise_nofile(unsigned long want)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == -1)
		return 0;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
		rl.rlim_cur = (rl.rlim_max == RLIM_INFINITY ||
		    rl.rlim_max > want) ? want : rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
		(void)getrlimit(RLIMIT_NOFILE, &rl);
	}
	return rl.rlim_cur == RLIM_INFINITY ? want : (unsigned long)rl.rlim_cur;
}
