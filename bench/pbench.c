/* pbench: the load generator and target service behind `make bench`.
 *
 * It is a measuring tool, not part of Postern: it uses a thread per
 * connection for simplicity, which is fine at benchmark scale.
 *
 *   pbench server HOST:PORT
 *       serves a one-byte command per connection:
 *         'E' echo everything back
 *         'S' sink: read to EOF, then answer the 8-byte big-endian count
 *         'R' source: read an 8-byte count, send that many bytes, close
 *       prints "listening PORT" once bound.
 *   pbench up      HOST:PORT BYTES STREAMS   -> mbps=...
 *   pbench down    HOST:PORT BYTES STREAMS   -> mbps=...
 *   pbench rtt     HOST:PORT COUNT           -> p50_us=... p99_us=...
 *   pbench connect HOST:PORT COUNT           -> p50_us=... p99_us=... per_s=...
 *   pbench idle    HOST:PORT N               -> opens N echo connections,
 *       prints "ready N" once each has echoed one byte, holds them until
 *       stdin closes, then checks each still echoes and prints "ok N".
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define PB_BLOCK (256 * 1024)
#define PB_STACK (256 * 1024)
#define PB_MAX_STREAMS 4096

static struct sockaddr_in pb_addr;

static void
pb_die(const char *what)
{
	fprintf(stderr, "pbench: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double
pb_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void
pb_parse_addr(const char *s)
{
	char host[256];
	const char *colon = strrchr(s, ':');
	size_t n;

	if (colon == NULL || (n = (size_t)(colon - s)) >= sizeof(host)) {
		fprintf(stderr, "pbench: address '%s' is not HOST:PORT\n", s);
		exit(2);
	}
	memcpy(host, s, n);
	host[n] = '\0';
	memset(&pb_addr, 0, sizeof(pb_addr));
	pb_addr.sin_family = AF_INET;
	pb_addr.sin_port = htons((uint16_t)atoi(colon + 1));
	if (inet_pton(AF_INET, host, &pb_addr.sin_addr) != 1) {
		fprintf(stderr, "pbench: '%s' is not an IPv4 address\n", host);
		exit(2);
	}
}

static int
pb_connect(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

	if (fd == -1)
		pb_die("socket");
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, (struct sockaddr *)&pb_addr, sizeof(pb_addr)) == -1)
		pb_die("connect");
	return fd;
}

static int
pb_write_all(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static int
pb_read_all(int fd, void *buf, size_t len)
{
	uint8_t *p = buf;

	while (len > 0) {
		ssize_t n = read(fd, p, len);
		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			return -1;
		}
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

static void
pb_put64(uint8_t *b, uint64_t v)
{
	for (int i = 7; i >= 0; i--, v >>= 8)
		b[i] = (uint8_t)v;
}

static uint64_t
pb_get64(const uint8_t *b)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = (v << 8) | b[i];
	return v;
}

/* ---- server ------------------------------------------------------------ */

static void *
pb_serve_one(void *arg)
{
	int fd = (int)(intptr_t)arg;
	uint8_t cmd, len8[8];
	uint8_t *buf = malloc(PB_BLOCK);
	uint64_t total = 0, want;
	ssize_t n;

	if (buf == NULL || pb_read_all(fd, &cmd, 1) == -1)
		goto out;
	switch (cmd) {
	case 'E':
		while ((n = read(fd, buf, PB_BLOCK)) > 0)
			if (pb_write_all(fd, buf, (size_t)n) == -1)
				break;
		break;
	case 'S':
		while ((n = read(fd, buf, PB_BLOCK)) > 0)
			total += (uint64_t)n;
		pb_put64(len8, total);
		pb_write_all(fd, len8, 8);
		break;
	case 'R':
		if (pb_read_all(fd, len8, 8) == -1)
			break;
		want = pb_get64(len8);
		memset(buf, 'x', PB_BLOCK);
		while (want > 0) {
			size_t k = want < PB_BLOCK ? (size_t)want : PB_BLOCK;
			if (pb_write_all(fd, buf, k) == -1)
				break;
			want -= k;
		}
		break;
	}
out:
	free(buf);
	close(fd);
	return NULL;
}

static void
pb_spawn(void *(*fn)(void *), void *arg, pthread_t *out)
{
	pthread_attr_t at;
	pthread_t t;

	pthread_attr_init(&at);
	pthread_attr_setstacksize(&at, PB_STACK);
	if (out == NULL)
		pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
	if (pthread_create(out ? out : &t, &at, fn, arg) != 0) {
		fprintf(stderr, "pbench: cannot start a thread\n");
		exit(1);
	}
	pthread_attr_destroy(&at);
}

static __attribute__((noreturn)) void
pb_server(void)
{
	int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	socklen_t sl = sizeof(pb_addr);

	if (lfd == -1)
		pb_die("socket");
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&pb_addr, sizeof(pb_addr)) == -1 ||
	    listen(lfd, 4096) == -1 ||
	    getsockname(lfd, (struct sockaddr *)&pb_addr, &sl) == -1)
		pb_die("bind/listen");
	printf("listening %d\n", ntohs(pb_addr.sin_port));
	fflush(stdout);
	for (;;) {
		int fd = accept(lfd, NULL, NULL);
		if (fd == -1) {
			if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
				continue;
			pb_die("accept");
		}
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		pb_spawn(pb_serve_one, (void *)(intptr_t)fd, NULL);
	}
}

/* ---- throughput -------------------------------------------------------- */

struct pb_stream {
	uint64_t ps_bytes;
	int      ps_up;
	int      ps_ok;
};

static void *
pb_stream_run(void *arg)
{
	struct pb_stream *s = arg;
	uint8_t *buf = malloc(PB_BLOCK), hdr[9], len8[8];
	uint64_t left = s->ps_bytes, got = 0;
	int fd = pb_connect();
	ssize_t n;

	if (buf == NULL)
		goto out;
	memset(buf, 'y', PB_BLOCK);
	if (s->ps_up) {
		hdr[0] = 'S';
		if (pb_write_all(fd, hdr, 1) == -1)
			goto out;
		while (left > 0) {
			size_t k = left < PB_BLOCK ? (size_t)left : PB_BLOCK;
			if (pb_write_all(fd, buf, k) == -1)
				goto out;
			left -= k;
		}
		shutdown(fd, SHUT_WR);
		if (pb_read_all(fd, len8, 8) == -1)
			goto out;
		s->ps_ok = pb_get64(len8) == s->ps_bytes;
	} else {
		hdr[0] = 'R';
		pb_put64(hdr + 1, s->ps_bytes);
		if (pb_write_all(fd, hdr, 9) == -1)
			goto out;
		while ((n = read(fd, buf, PB_BLOCK)) > 0)
			got += (uint64_t)n;
		s->ps_ok = got == s->ps_bytes;
	}
out:
	free(buf);
	close(fd);
	return NULL;
}

static int
pb_throughput(int up, uint64_t bytes, int streams)
{
	pthread_t th[PB_MAX_STREAMS];
	struct pb_stream *ss;
	double t0, t1;
	int i, ok = 1;

	if (streams < 1 || streams > PB_MAX_STREAMS) {
		fprintf(stderr, "pbench: streams must be 1..%d\n", PB_MAX_STREAMS);
		return 2;
	}
	ss = calloc((size_t)streams, sizeof(*ss));
	t0 = pb_now();
	for (i = 0; i < streams; i++) {
		ss[i].ps_bytes = bytes / (uint64_t)streams;
		ss[i].ps_up = up;
		pb_spawn(pb_stream_run, &ss[i], &th[i]);
	}
	for (i = 0; i < streams; i++) {
		pthread_join(th[i], NULL);
		ok &= ss[i].ps_ok;
	}
	t1 = pb_now();
	printf("mbps=%.1f seconds=%.3f bytes=%llu ok=%d\n",
	    (double)(bytes / (uint64_t)streams * (uint64_t)streams) / (t1 - t0) / 1e6,
	    t1 - t0, (unsigned long long)bytes, ok);
	free(ss);
	return ok ? 0 : 1;
}

/* ---- latency ----------------------------------------------------------- */

static int
pb_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

static double
pb_pct(double *v, int n, double p)
{
	int i = (int)(p * (n - 1) + 0.5);

	return v[i];
}

static int
pb_rtt(int count)
{
	uint8_t msg[64];
	double *lat = calloc((size_t)count, sizeof(double));
	int fd = pb_connect(), i;

	memset(msg, 'r', sizeof(msg));
	msg[0] = 'E';
	if (pb_write_all(fd, msg, 1) == -1)
		pb_die("write");
	for (i = 0; i < count; i++) {
		double t0 = pb_now();
		if (pb_write_all(fd, msg, sizeof(msg)) == -1 ||
		    pb_read_all(fd, msg, sizeof(msg)) == -1)
			pb_die("echo");
		lat[i] = (pb_now() - t0) * 1e6;
	}
	close(fd);
	qsort(lat, (size_t)count, sizeof(double), pb_cmp_double);
	printf("p50_us=%.1f p99_us=%.1f count=%d\n", pb_pct(lat, count, 0.5),
	    pb_pct(lat, count, 0.99), count);
	free(lat);
	return 0;
}

static int
pb_connect_latency(int count)
{
	double *lat = calloc((size_t)count, sizeof(double)), t_start, t_all;
	uint8_t msg[2] = { 'E', 'z' };
	int i;

	t_start = pb_now();
	for (i = 0; i < count; i++) {
		double t0 = pb_now();
		int fd = pb_connect();
		if (pb_write_all(fd, msg, 2) == -1 || pb_read_all(fd, msg + 1, 1) == -1)
			pb_die("first byte");
		lat[i] = (pb_now() - t0) * 1e6;
		close(fd);
	}
	t_all = pb_now() - t_start;
	qsort(lat, (size_t)count, sizeof(double), pb_cmp_double);
	printf("p50_us=%.1f p99_us=%.1f per_s=%.1f count=%d\n",
	    pb_pct(lat, count, 0.5), pb_pct(lat, count, 0.99), count / t_all, count);
	free(lat);
	return 0;
}

static int
pb_idle(int n)
{
	int *fds = calloc((size_t)n, sizeof(int)), i, ok = 0;
	uint8_t msg[2] = { 'E', 'i' }, c;
	char line[16];

	for (i = 0; i < n; i++) {
		fds[i] = pb_connect();
		if (pb_write_all(fds[i], msg, 2) == -1 || pb_read_all(fds[i], &c, 1) == -1)
			pb_die("idle echo");
	}
	printf("ready %d\n", n);
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin) != NULL)
		;
	for (i = 0; i < n; i++) {
		if (pb_write_all(fds[i], msg + 1, 1) == 0 && pb_read_all(fds[i], &c, 1) == 0 && c == 'i')
			ok++;
		close(fds[i]);
	}
	printf("ok %d\n", ok);
	free(fds);
	return ok == n ? 0 : 1;
}

int
main(int argc, char **argv)
{
	signal(SIGPIPE, SIG_IGN);
	if (argc < 3) {
		fprintf(stderr, "usage: pbench server|up|down|rtt|connect|idle HOST:PORT [ARGS]\n");
		return 2;
	}
	pb_parse_addr(argv[2]);
	if (strcmp(argv[1], "server") == 0)
		pb_server();
	if ((strcmp(argv[1], "up") == 0 || strcmp(argv[1], "down") == 0) && argc == 5)
		return pb_throughput(argv[1][0] == 'u', strtoull(argv[3], NULL, 10), atoi(argv[4]));
	if (strcmp(argv[1], "rtt") == 0 && argc == 4)
		return pb_rtt(atoi(argv[3]));
	if (strcmp(argv[1], "connect") == 0 && argc == 4)
		return pb_connect_latency(atoi(argv[3]));
	if (strcmp(argv[1], "idle") == 0 && argc == 4)
		return pb_idle(atoi(argv[3]));
	fprintf(stderr, "pbench: bad arguments (see the comment at the top of bench/pbench.c)\n");
	return 2;
}
