/* The tunnel pump without curl: what the upload body holds for bytes read
 * from the socket (frames as proxy-packer's pack() makes them), and what
 * the socket sees for frames fed to the download. */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <unistd.h>

#include "loop.h"
#include "mproxy.h"
#include "tunnel.h"

struct fixture {
	struct loop      *l;
	struct tunnel_env env;
	struct tunnel    *t;
	int               peer;         /* the TCP client's end */
	int               closed;
	int               opened;
	char              reason[512];
	struct loop_timer guard;
};

static void
on_open(struct tunnel *t, void *arg)
{
	struct fixture *f = arg;

	(void)t;
	f->opened++;
}

static void
on_closed(struct tunnel *t, const char *reason, void *arg)
{
	struct fixture *f = arg;

	(void)t;
	f->closed++;
	snprintf(f->reason, sizeof(f->reason), "%s", reason);
	loop_stop(f->l);
}

static const struct tunnel_cbs cbs = { on_open, on_closed, NULL, NULL };

static void
on_guard(struct loop *l, void *arg)
{
	(void)arg;
	loop_stop(l);
}

/* sv[0] becomes the tunnel's socket (nonblocking), sv[1] the peer. */
static void
fixture_init_fds(struct fixture *f, enum tunnel_side side, size_t buffer,
    int sv[2])
{
	char err[256];

	memset(f, 0, sizeof(*f));
	f->l = loop_new();
	ck_assert_ptr_nonnull(f->l);
	f->env.te_loop = f->l;
	f->env.te_frame_max = 65536;
	f->env.te_buffer = buffer;
	f->peer = sv[1];
	f->t = tunnel_new(&f->env, side, sv[0], "nas", "ssh", &cbs, f, err,
	    sizeof(err));
	ck_assert_msg(f->t != NULL, "%s", err);
	loop_timer_init(&f->guard, on_guard, f);
}

static void
fixture_init(struct fixture *f, enum tunnel_side side, size_t buffer)
{
	int sv[2];

	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0,
	    sv), 0);
	fixture_init_fds(f, side, buffer, sv);
}

/* Runs the loop until the tunnel reports closed (or 2 s pass). */
static void
fixture_run(struct fixture *f)
{
	loop_timer_start(f->l, &f->guard, 2000);
	loop_run(f->l);
	loop_timer_stop(f->l, &f->guard);
}

static void
fixture_done(struct fixture *f)
{
	if (!f->closed)
		tunnel_close(f->t, "test over");
	if (f->peer >= 0)
		close(f->peer);
	loop_free(f->l);
}

static void
set_client_peer(struct tunnel *t)
{
	struct net_peer p;

	memset(&p, 0, sizeof(p));
	strcpy(p.np_family, "IPv4");
	strcpy(p.np_address, "127.0.0.1");
	p.np_port = 50312;
	tunnel_set_peer(t, &p);
}

static size_t
frame(uint8_t *out, const char *header, const char *payload, size_t plen)
{
	size_t h = strlen(header);

	out[0] = 0xFE;
	out[1] = (uint8_t)h;
	memcpy(out + 2, header, h);
	memcpy(out + 2 + h, payload, plen);
	return 2 + h + plen;
}

/* Feeds the tunnel one control frame [1,what,n,g] as its download. */
static void
feed_control(struct fixture *f, const char *what, uint64_t n, uint64_t g)
{
	uint8_t in[160];
	char json[96], head[32];
	size_t len;

	snprintf(json, sizeof(json), "[1,\"%s\",%llu,%llu]", what,
	    (unsigned long long)n, (unsigned long long)g);
	snprintf(head, sizeof(head), ",,,%zu,control", strlen(json));
	len = frame(in, head, json, strlen(json));
	ck_assert_uint_eq(tunnel_download_feed(f->t, in, len), len);
}

/* The frames of an upload chunk, as "service:payload" lines. */
static void
frames_text(const uint8_t *buf, size_t n, char *out, size_t outlen)
{
	struct mproxy_decoder *d = mproxy_decoder_new(MPROXY_WHOLE, 0);
	struct mproxy_frame fr;
	size_t off = 0, used, o = 0;

	out[0] = '\0';
	while (off < n) {
		fr.service = NULL;
		ck_assert_int_ne(mproxy_decoder_feed(d, buf + off, n - off,
		    &used, &fr), MPROXY_ERROR);
		off += used;
		if (used == 0)
			break;
		if (fr.service == NULL)
			continue;
		o += (size_t)snprintf(out + o, outlen - o, "%s:%.*s\n",
		    fr.service, (int)fr.len, (const char *)fr.data);
	}
	mproxy_decoder_free(d);
}

START_TEST(test_upload_connection_data_end)
{
	struct fixture f;
	uint8_t buf[65536], in[64];
	char text[1024];
	size_t n;

	fixture_init(&f, TUNNEL_CLIENT, 262144);
	set_client_peer(f.t);
	ck_assert_int_eq(write(f.peer, "hello", 5), 5);
	tunnel_body_begin(f.t);
	n = tunnel_upload_fill(f.t, buf, sizeof(buf));
	frames_text(buf, n, text, sizeof(text));
	ck_assert_str_eq(text, "connection:\ncontrol:[1,\"seq\",0,1]\n"
	    "tcp:hello\n");

	/* Nothing to read: the body pauses (curl's PAUSE value). */
	ck_assert_uint_eq(tunnel_upload_fill(f.t, buf, sizeof(buf)),
	    TUNNEL_FILL_PAUSE);

	/* The TCP client half-closes: an end frame (one space). */
	ck_assert_int_eq(shutdown(f.peer, SHUT_WR), 0);
	n = tunnel_upload_fill(f.t, buf, sizeof(buf));
	frames_text(buf, n, text, sizeof(text));
	ck_assert_str_eq(text, "end: \n");
	/* The body stays open until the peer has acknowledged our 6 units
	 * and sent its own end. */
	ck_assert_uint_eq(tunnel_upload_fill(f.t, buf, sizeof(buf)),
	    TUNNEL_FILL_PAUSE);
	feed_control(&f, "seq", 0, 1);
	feed_control(&f, "ack", 6, 1);
	n = frame(in, "IPv4,127.0.0.1,50312,1,end,,", " ", 1);
	ck_assert_uint_eq(tunnel_download_feed(f.t, in, n), n);
	n = tunnel_upload_fill(f.t, buf, sizeof(buf));
	frames_text(buf, n, text, sizeof(text));
	ck_assert_str_eq(text, "control:[1,\"ack\",1,1]\n");
	ck_assert_uint_eq(tunnel_upload_fill(f.t, buf, sizeof(buf)), 0);
	ck_assert_uint_eq(tunnel_upload_fill(f.t, buf, sizeof(buf)), 0);
	fixture_done(&f);
}
END_TEST

/* An ack beyond what was sent is the peer's error, never a silent skip;
 * a seq ahead of what arrived means bytes were lost. */
START_TEST(test_bad_ack_and_seq_fail)
{
	struct fixture f;

	fixture_init(&f, TUNNEL_CLIENT, 262144);
	feed_control(&f, "ack", 5, 1);
	fixture_run(&f);
	ck_assert_int_eq(f.closed, 1);
	ck_assert_msg(strstr(f.reason, "acknowledged 5 units of 0") != NULL,
	    "reason: %s", f.reason);
	fixture_done(&f);

	fixture_init(&f, TUNNEL_CLIENT, 262144);
	feed_control(&f, "seq", 3, 1);
	fixture_run(&f);
	ck_assert_int_eq(f.closed, 1);
	ck_assert_msg(strstr(f.reason, "bytes were lost") != NULL,
	    "reason: %s", f.reason);
	fixture_done(&f);
}
END_TEST

/* After a break the peer re-sends from an older unit: what arrived
 * before is dropped, the rest delivered once, in order. */
START_TEST(test_download_duplicates_dropped)
{
	struct fixture f;
	uint8_t in[256], out[64];
	size_t n;
	ssize_t r;

	fixture_init(&f, TUNNEL_CLIENT, 262144);
	feed_control(&f, "seq", 0, 1);
	n = frame(in, "IPv4,127.0.0.1,50312,5,tcp,,", "hello", 5);
	ck_assert_uint_eq(tunnel_download_feed(f.t, in, n), n);
	feed_control(&f, "seq", 3, 2);
	n = frame(in, "IPv4,127.0.0.1,50312,6,tcp,,", "lo wor", 6);
	ck_assert_uint_eq(tunnel_download_feed(f.t, in, n), n);
	r = read(f.peer, out, sizeof(out));
	ck_assert_int_eq(r, 9);
	ck_assert_mem_eq(out, "hello wor", 9);
	fixture_done(&f);
}
END_TEST

/* Bulk bytes come out as frames of at most frame_max payload whose
 * payloads concatenate to the input, whatever the read sizes (a short
 * read has a shorter header than reserved). */
static void
check_bulk(size_t total, size_t room, size_t frame_max)
{
	struct fixture f;
	struct mproxy_decoder *d;
	struct mproxy_frame fr;
	uint8_t *in, *got, *buf;
	size_t sent = 0, have = 0, n, off, used, i, rounds = 0;
	int first = 1;

	fixture_init(&f, TUNNEL_CLIENT, 262144);
	f.env.te_frame_max = frame_max;
	set_client_peer(f.t);
	in = malloc(total);
	got = malloc(total);
	buf = malloc(room);
	for (i = 0; i < total; i++)
		in[i] = (uint8_t)(i * 7 + i / 251);
	d = mproxy_decoder_new(MPROXY_WHOLE, 0);
	tunnel_body_begin(f.t);
	while (have < total && rounds++ < 100000) {
		ssize_t w = send(f.peer, in + sent, total - sent, MSG_DONTWAIT);

		if (w > 0)
			sent += (size_t)w;
		n = tunnel_upload_fill(f.t, buf, room);
		if (n == TUNNEL_FILL_PAUSE)
			continue;
		ck_assert_uint_gt(n, 0);
		ck_assert_uint_le(n, room);
		for (off = 0; off < n; off += used) {
			enum mproxy_result r = mproxy_decoder_feed(d, buf + off,
			    n - off, &used, &fr);

			ck_assert_int_ne(r, MPROXY_ERROR);
			if (r != MPROXY_FRAME)
				continue;
			if (first) {
				ck_assert_str_eq(fr.service, "connection");
				first = 0;
				continue;
			}
			if (strcmp(fr.service, "control") == 0)
				continue;
			ck_assert_str_eq(fr.service, "tcp");
			ck_assert_str_eq(fr.address, "127.0.0.1");
			ck_assert_uint_le(fr.len, frame_max);
			ck_assert_uint_ge(fr.len, 1);
			memcpy(got + have, fr.data, fr.len);
			have += fr.len;
		}
		/* The peer acknowledges: the window never fills. */
		feed_control(&f, "ack", have, 1);
	}
	ck_assert_uint_eq(have, total);
	ck_assert_mem_eq(in, got, total);
	mproxy_decoder_free(d);
	free(in);
	free(got);
	free(buf);
	fixture_done(&f);
}

START_TEST(test_upload_bulk_frames)
{
	check_bulk(3 * 1024 * 1024 + 17, 262144 - 12, 65536);
}
END_TEST

START_TEST(test_upload_bulk_small_room_and_frames)
{
	/* Rooms and frame sizes around digit boundaries. */
	check_bulk(500000, 16384 - 12, 9999);
	check_bulk(200000, 10050, 100000);
	check_bulk(100000, 16372, 1);
}
END_TEST

/* A connected loopback TCP pair (SO_LINGER 0 then makes real resets). */
static void
tcp_pair(int sv[2])
{
	struct sockaddr_in a;
	socklen_t al = sizeof(a);
	int ls = socket(AF_INET, SOCK_STREAM, 0);

	memset(&a, 0, sizeof(a));
	a.sin_family = AF_INET;
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(ls, (struct sockaddr *)&a, sizeof(a)), 0);
	ck_assert_int_eq(listen(ls, 1), 0);
	ck_assert_int_eq(getsockname(ls, (struct sockaddr *)&a, &al), 0);
	sv[1] = socket(AF_INET, SOCK_STREAM, 0);
	ck_assert_int_eq(connect(sv[1], (struct sockaddr *)&a, al), 0);
	sv[0] = accept4(ls, NULL, NULL, SOCK_NONBLOCK);
	ck_assert_int_ge(sv[0], 0);
	close(ls);
}

START_TEST(test_upload_socket_error_sends_error_frame)
{
	struct fixture f;
	struct mproxy_decoder *d;
	struct mproxy_frame fr;
	struct linger lg = { 1, 0 };
	uint8_t buf[4096];
	size_t n, off = 0, used;
	int sv[2], saw_error = 0;

	tcp_pair(sv);
	fixture_init_fds(&f, TUNNEL_CLIENT, 262144, sv);
	set_client_peer(f.t);
	/* The TCP client resets. */
	setsockopt(f.peer, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(f.peer);
	f.peer = -1;
	usleep(20000);
	tunnel_body_begin(f.t);
	n = tunnel_upload_fill(f.t, buf, sizeof(buf));
	ck_assert_uint_ne(n, TUNNEL_FILL_PAUSE);
	d = mproxy_decoder_new(MPROXY_WHOLE, 0);
	while (off < n) {
		if (mproxy_decoder_feed(d, buf + off, n - off, &used, &fr) ==
		    MPROXY_FRAME && strcmp(fr.service, "error") == 0) {
			saw_error = 1;
			const char *c = "\"code\":\"ECONNRESET\"";
			const char *m = "\"message\":\"client 127.0.0.1:50312: ";

			ck_assert_ptr_nonnull(memmem(fr.data, fr.len, c,
			    strlen(c)));
			ck_assert_ptr_nonnull(memmem(fr.data, fr.len, m,
			    strlen(m)));
		}
		off += used;
	}
	ck_assert_int_eq(saw_error, 1);
	/* The body ends once the error is acknowledged and the peer ended. */
	ck_assert_uint_eq(tunnel_upload_fill(f.t, buf, sizeof(buf)),
	    TUNNEL_FILL_PAUSE);
	feed_control(&f, "seq", 0, 1);
	feed_control(&f, "ack", 1, 1);
	n = frame(buf, "IPv4,127.0.0.1,50312,1,end,,", " ", 1);
	ck_assert_uint_eq(tunnel_download_feed(f.t, buf, n), n);
	n = tunnel_upload_fill(f.t, buf, sizeof(buf));
	ck_assert_uint_ne(n, TUNNEL_FILL_PAUSE);
	ck_assert_uint_eq(tunnel_upload_fill(f.t, buf, sizeof(buf)), 0);
	mproxy_decoder_free(d);
	fixture_done(&f);
}
END_TEST

START_TEST(test_download_data_then_end)
{
	struct fixture f;
	uint8_t in[512], out[64];
	size_t n;
	ssize_t r;

	fixture_init(&f, TUNNEL_CLIENT, 262144);
	n = frame(in, "IPv4,127.0.0.1,50312,3,tcp,,", "abc", 3);
	n += frame(in + n, ",,,10,control", "[1,\"ping\"]", 10);
	n += frame(in + n, "IPv4,127.0.0.1,50312,4,tcp,,", "defg", 4);
	/* Fed in two uneven chunks: pieces cross chunk borders. */
	ck_assert_uint_eq(tunnel_download_feed(f.t, in, 20), 20);
	ck_assert_uint_eq(tunnel_download_feed(f.t, in + 20, n - 20), n - 20);
	r = read(f.peer, out, sizeof(out));
	ck_assert_int_eq(r, 7);
	ck_assert_mem_eq(out, "abcdefg", 7);
	n = frame(in, "IPv4,127.0.0.1,50312,1,end,,", " ", 1);
	ck_assert_uint_eq(tunnel_download_feed(f.t, in, n), n);
	/* end: the socket's write side is shut down. */
	ck_assert_int_eq(read(f.peer, out, sizeof(out)), 0);
	ck_assert_int_eq(f.closed, 0);
	fixture_done(&f);
}
END_TEST

START_TEST(test_download_backpressure_is_bounded)
{
	struct fixture f;
	static uint8_t in[16384], chunk[16384 + 64], sink[65536];
	size_t n, fed = 0, got = 0, paused = 0, i, hl;
	int sz = 4096;
	ssize_t r;
	char head[64];

	fixture_init(&f, TUNNEL_CLIENT, 65536);
	setsockopt(f.peer, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	memset(in, 'z', sizeof(in));
	/* One frame per chunk, 16000 payload bytes each. */
	snprintf(head, sizeof(head), "IPv4,127.0.0.1,1,%d,tcp,,", 16000);
	hl = frame(chunk, head, (const char *)in, 16000);
	for (i = 0; i < 200; i++) {
		n = tunnel_download_feed(f.t, chunk, hl);
		if (n == TUNNEL_FEED_PAUSE) {
			paused++;
			break;
		}
		ck_assert_uint_eq(n, hl);
		fed += 16000;
	}
	/* The reader never read: the feed paused with at most `buffer`
	 * bytes held by the tunnel (plus what the kernel took). */
	ck_assert_uint_eq(paused, 1);
	ck_assert_uint_lt(fed, 200 * 16000);
	/* Drain; the tunnel flushes on writable and the same chunk is then
	 * accepted. */
	for (i = 0; i < 1000 && got < fed; i++) {
		r = read(f.peer, sink, sizeof(sink));
		if (r > 0)
			got += (size_t)r;
		tunnel_on_io(f.l, -1, LOOP_WRITE, f.t);
	}
	ck_assert_uint_eq(got, fed);
	ck_assert_uint_eq(tunnel_download_feed(f.t, chunk, hl), hl);
	fixture_done(&f);
}
END_TEST

/* With a batch, pieces of one tunnel go out together once the loop runs
 * (curl has returned), in order; another tunnel taking the batch first
 * sends what the batch held for the one before. */
START_TEST(test_download_batch_coalesces_in_order)
{
	struct fixture f, g;
	struct tunnel_batch *b;
	uint8_t in[512], out[64];
	size_t n;
	ssize_t r;

	b = tunnel_batch_new();
	ck_assert_ptr_nonnull(b);
	fixture_init(&f, TUNNEL_CLIENT, 262144);
	f.env.te_batch = b;
	fixture_init(&g, TUNNEL_CLIENT, 262144);
	g.env.te_batch = b;
	n = frame(in, "IPv4,127.0.0.1,50312,3,tcp,,", "abc", 3);
	n += frame(in + n, "IPv4,127.0.0.1,50312,4,tcp,,", "defg", 4);
	ck_assert_uint_eq(tunnel_download_feed(f.t, in, n), n);
	/* Held for one send. */
	errno = 0;
	ck_assert_int_eq(recv(f.peer, out, sizeof(out), MSG_DONTWAIT), -1);
	ck_assert_int_eq(errno, EAGAIN);
	/* g takes the batch: f's bytes go out first. */
	n = frame(in, "IPv4,127.0.0.1,50312,2,tcp,,", "xy", 2);
	ck_assert_uint_eq(tunnel_download_feed(g.t, in, n), n);
	r = recv(f.peer, out, sizeof(out), MSG_DONTWAIT);
	ck_assert_int_eq(r, 7);
	ck_assert_mem_eq(out, "abcdefg", 7);
	/* g's wait for its loop. */
	loop_timer_start(g.l, &g.guard, 20);
	loop_run(g.l);
	r = recv(g.peer, out, sizeof(out), MSG_DONTWAIT);
	ck_assert_int_eq(r, 2);
	ck_assert_mem_eq(out, "xy", 2);
	/* An end frame sends what is held before shutting down. */
	n = frame(in, "IPv4,127.0.0.1,50312,1,tcp,,", "z", 1);
	n += frame(in + n, "IPv4,127.0.0.1,50312,1,end,,", " ", 1);
	ck_assert_uint_eq(tunnel_download_feed(g.t, in, n), n);
	r = recv(g.peer, out, sizeof(out), 0);
	ck_assert_int_eq(r, 1);
	ck_assert_int_eq(out[0], 'z');
	ck_assert_int_eq(recv(g.peer, out, sizeof(out), 0), 0);
	fixture_done(&f);
	fixture_done(&g);
	tunnel_batch_free(b);
}
END_TEST

/* Bulk through the batch into a slow reader: nothing lost, nothing
 * reordered, and the tunnel pauses the download instead of holding more
 * than its buffer. */
START_TEST(test_download_batch_backpressure)
{
	struct fixture f;
	struct tunnel_batch *b;
	static uint8_t chunk[16384 + 64], sink[65536], want[16000];
	size_t hl, fed = 0, got = 0, bad = 0, i, j;
	int sz = 8192, paused = 0;
	ssize_t r;
	char head[64];

	b = tunnel_batch_new();
	ck_assert_ptr_nonnull(b);
	fixture_init(&f, TUNNEL_CLIENT, 65536);
	f.env.te_batch = b;
	setsockopt(f.peer, SOL_SOCKET, SO_RCVBUF, &sz, sizeof(sz));
	snprintf(head, sizeof(head), "IPv4,127.0.0.1,1,%d,tcp,,", 16000);
	for (i = 0; i < 400 && got < 400 * 16000; i++) {
		for (j = 0; j < 16000; j++)
			want[j] = (uint8_t)((i * 16000 + j) % 253);
		hl = frame(chunk, head, (const char *)want, 16000);
		while (tunnel_download_feed(f.t, chunk, hl) ==
		    TUNNEL_FEED_PAUSE) {
			paused = 1;
			r = read(f.peer, sink, sizeof(sink));
			for (j = 0; r > 0 && j < (size_t)r; j++)
				bad += sink[j] != (uint8_t)((got + j) % 253);
			if (r > 0)
				got += (size_t)r;
			tunnel_on_io(f.l, -1, LOOP_WRITE, f.t);
		}
		fed += 16000;
		/* The reader takes a little while curl is still busy, then
		 * the loop's turn: what the batch holds goes out, never
		 * ahead of what the ring holds. */
		r = read(f.peer, sink, 3000);
		for (j = 0; r > 0 && j < (size_t)r; j++)
			bad += sink[j] != (uint8_t)((got + j) % 253);
		if (r > 0)
			got += (size_t)r;
		loop_timer_start(f.l, &f.guard, 0);
		loop_run(f.l);
	}
	ck_assert_int_eq(paused, 1);
	for (i = 0; i < 100000 && got < fed; i++) {
		r = read(f.peer, sink, sizeof(sink));
		for (j = 0; r > 0 && j < (size_t)r; j++)
			bad += sink[j] != (uint8_t)((got + j) % 253);
		if (r > 0)
			got += (size_t)r;
		tunnel_on_io(f.l, -1, LOOP_WRITE, f.t);
		loop_timer_start(f.l, &f.guard, 0);
		loop_run(f.l);
	}
	ck_assert_uint_eq(got, fed);
	ck_assert_uint_eq(bad, 0);
	fixture_done(&f);
	tunnel_batch_free(b);
}
END_TEST

START_TEST(test_download_error_frame_resets)
{
	struct fixture f;
	uint8_t in[512], out[16];
	const char *js = "{\"message\":\"connect reset by target\",\"code\":"
	    "\"ECONNRESET\"}";
	size_t n;
	char head[64];
	int sv[2];

	tcp_pair(sv);
	fixture_init_fds(&f, TUNNEL_CLIENT, 262144, sv);
	snprintf(head, sizeof(head), "IPv4,127.0.0.1,50312,%zu,error,,",
	    strlen(js));
	n = frame(in, head, js, strlen(js));
	ck_assert_uint_eq(tunnel_download_feed(f.t, in, n), n);
	/* The socket is reset at once; the tunnel itself still finishes
	 * the protocol (acks the error, sends its end) before it closes. */
	ck_assert_int_eq(f.closed, 0);
	errno = 0;
	ck_assert_int_eq(read(f.peer, out, sizeof(out)), -1);
	ck_assert_int_eq(errno, ECONNRESET);
	fixture_done(&f);
}
END_TEST

START_TEST(test_download_malformed_names_offset)
{
	struct fixture f;
	uint8_t in[64];
	size_t n;

	fixture_init(&f, TUNNEL_CLIENT, 262144);
	n = frame(in, "IPv4,127.0.0.1,50312,3,tcp,,", "abc", 3);
	in[n++] = 0x01;   /* not a version byte */
	memset(in + n, 'x', 8);
	n += 8;
	ck_assert_uint_eq(tunnel_download_feed(f.t, in, n), n);
	fixture_run(&f);
	ck_assert_int_eq(f.closed, 1);
	ck_assert_msg(strstr(f.reason, "malformed stream from relay") != NULL &&
	    strstr(f.reason, "byte 33") != NULL, "reason: %s", f.reason);
	fixture_done(&f);
}
END_TEST

START_TEST(test_server_side_learns_peer)
{
	struct fixture f;
	uint8_t in[256], buf[4096], want[64];
	size_t n, w;

	fixture_init(&f, TUNNEL_SERVER, 262144);
	/* Bytes from the target before the connection frame arrived carry
	 * no address. */
	ck_assert_int_eq(write(f.peer, "SSH-2.0", 7), 7);
	n = tunnel_upload_fill(f.t, buf, sizeof(buf));
	w = frame(want, ",,,7,tcp,,", "SSH-2.0", 7);
	ck_assert_uint_eq(n, w);
	ck_assert_mem_eq(buf, want, w);
	n = frame(in, "IPv6,::1,40000,0,connection,,nas,ssh", "", 0);
	ck_assert_uint_eq(tunnel_download_feed(f.t, in, n), n);
	ck_assert_str_eq(tunnel_peer(f.t)->np_family, "IPv6");
	ck_assert_str_eq(tunnel_peer(f.t)->np_address, "::1");
	ck_assert_uint_eq(tunnel_peer(f.t)->np_port, 40000);
	ck_assert_int_eq(write(f.peer, "x", 1), 1);
	n = tunnel_upload_fill(f.t, buf, sizeof(buf));
	w = frame(want, "IPv6,::1,40000,1,tcp,,", "x", 1);
	ck_assert_uint_eq(n, w);
	ck_assert_mem_eq(buf, want, w);
	/* tc_open comes from the loop, outside the feed. */
	ck_assert_int_eq(f.opened, 0);
	loop_timer_start(f.l, &f.guard, 20);
	loop_run(f.l);
	ck_assert_int_eq(f.opened, 1);
	ck_assert_int_eq(tunnel_opened(f.t), 1);
	fixture_done(&f);
}
END_TEST

static Suite *
tunnel_suite(void)
{
	Suite *s = suite_create("tunnel");
	TCase *tc = tcase_create("pump");

	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, test_upload_connection_data_end);
	tcase_add_test(tc, test_bad_ack_and_seq_fail);
	tcase_add_test(tc, test_download_duplicates_dropped);
	tcase_add_test(tc, test_upload_bulk_frames);
	tcase_add_test(tc, test_upload_bulk_small_room_and_frames);
	tcase_add_test(tc, test_upload_socket_error_sends_error_frame);
	tcase_add_test(tc, test_download_data_then_end);
	tcase_add_test(tc, test_download_backpressure_is_bounded);
	tcase_add_test(tc, test_download_batch_coalesces_in_order);
	tcase_add_test(tc, test_download_batch_backpressure);
	tcase_add_test(tc, test_download_error_frame_resets);
	tcase_add_test(tc, test_download_malformed_names_offset);
	tcase_add_test(tc, test_server_side_learns_peer);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(tunnel_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
