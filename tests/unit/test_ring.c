/* The pipe buffer: bytes come out in order, never more than the bound
 * is held; a busy ring keeps its storage across drains, while a quiet or
 * chatty one, or one past the process-wide bound, releases it. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "ring.h"

START_TEST(test_ring_fifo_wraps_in_order)
{
	struct ring r;
	uint8_t in[1000], out[1000];
	size_t i, wrote = 0, read = 0;
	unsigned seed = 7;

	for (i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 31 + 1);
	ring_init(&r, 97);
	/* Uneven writes and reads force every wrap position. */
	for (i = 0; i < 10000 && read < sizeof(in); i++) {
		size_t w = (size_t)(rand_r(&seed) % 40), rd = (size_t)(rand_r(&seed) % 40);
		if (w > sizeof(in) - wrote)
			w = sizeof(in) - wrote;
		wrote += ring_write(&r, in + wrote, w);
		ck_assert_uint_le(ring_len(&r), 97);
		read += ring_read(&r, out + read, rd);
	}
	ck_assert_uint_eq(read, sizeof(in));
	ck_assert_mem_eq(in, out, sizeof(in));
	ck_assert_uint_eq(ring_len(&r), 0);
	ring_release(&r);
	ck_assert_uint_eq(ring_storage(&r), 0);
	ck_assert_uint_eq(ring_kept(), 0);
	ring_free(&r);
}
END_TEST

START_TEST(test_ring_bound_is_hard)
{
	struct ring r;
	uint8_t big[300];

	memset(big, 'x', sizeof(big));
	ring_init(&r, 128);
	ck_assert_uint_eq(ring_write(&r, big, sizeof(big)), 128);
	ck_assert_uint_eq(ring_space(&r), 0);
	ck_assert_uint_eq(ring_write(&r, big, 1), 0);
	ring_free(&r);
}
END_TEST

START_TEST(test_ring_reserve_commit_peek_drop)
{
	struct ring r;
	uint8_t *p;
	const uint8_t *q;
	size_t n;

	ring_init(&r, 16);
	p = ring_reserve(&r, &n);
	ck_assert_ptr_nonnull(p);
	ck_assert_uint_eq(n, 16);
	memcpy(p, "abcdefghij", 10);
	ring_commit(&r, 10);
	q = ring_peek(&r, &n);
	ck_assert_uint_eq(n, 10);
	ck_assert_mem_eq(q, "abcdefghij", 10);
	ring_drop(&r, 8);
	/* Free space is now split: 6 at the tail, 8 at the front. */
	p = ring_reserve(&r, &n);
	ck_assert_uint_eq(n, 6);
	memcpy(p, "klmnop", 6);
	ring_commit(&r, 6);
	p = ring_reserve(&r, &n);
	ck_assert_uint_eq(n, 8);
	memcpy(p, "qr", 2);
	ring_commit(&r, 2);
	q = ring_peek(&r, &n);
	ck_assert_uint_eq(n, 8);
	ck_assert_mem_eq(q, "ijklmnop", 8);
	ring_drop(&r, 8);
	q = ring_peek(&r, &n);
	ck_assert_uint_eq(n, 2);
	ck_assert_mem_eq(q, "qr", 2);
	ring_drop(&r, 2);
	ck_assert_uint_eq(ring_len(&r), 0);
	/* Drained, the ring offers its whole storage from the start. */
	p = ring_reserve(&r, &n);
	ck_assert_ptr_nonnull(p);
	ck_assert_uint_eq(n, 16);
	ring_free(&r);
	ck_assert_uint_eq(ring_kept(), 0);
}
END_TEST

/* Moves total bytes through r in writes of chunk bytes, each read back
 * whole (a reader that keeps up: the ring drains after every write), and
 * checks they come out in order.  Returns how many of those drains
 * released the storage (each costs a malloc on the next write). */
static unsigned
ring_pump(struct ring *r, size_t chunk, size_t total)
{
	static uint8_t in[65536], out[65536];
	size_t moved = 0, i;
	unsigned released = 0;

	ck_assert_uint_le(chunk, sizeof(in));
	for (i = 0; i < 100000 && moved < total; i++) {
		memset(in, (int)(i & 0xff), chunk);
		ck_assert_uint_eq(ring_write(r, in, chunk), chunk);
		ck_assert_uint_eq(ring_read(r, out, sizeof(out)), chunk);
		ck_assert_mem_eq(in, out, chunk);
		if (ring_storage(r) == 0)
			released++;
		moved += chunk;
	}
	ck_assert_uint_eq(moved, total);
	return released;
}

START_TEST(test_ring_grows_in_order)
{
	static uint8_t in[1 << 20], out[1 << 20];
	struct ring r;
	size_t i, wrote = 0, read = 0, w, rd;
	unsigned seed = 11;

	for (i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 7 + i / 251);
	ring_init(&r, 100000);
	/* A reader slower than the writer: the storage fills while its bytes
	 * wrap, and grows (up to the capacity, never past it) keeping the
	 * order. */
	for (i = 0; i < 100000 && read < sizeof(in); i++) {
		w = (size_t)(rand_r(&seed) % 30000);
		rd = (size_t)(rand_r(&seed) % 20000);
		if (w > sizeof(in) - wrote)
			w = sizeof(in) - wrote;
		wrote += ring_write(&r, in + wrote, w);
		ck_assert_uint_le(ring_len(&r), 100000);
		ck_assert_uint_le(ring_storage(&r), 100000);
		ck_assert_uint_ge(ring_storage(&r), ring_len(&r));
		read += ring_read(&r, out + read, rd);
	}
	ck_assert_uint_eq(read, sizeof(in));
	ck_assert_mem_eq(in, out, sizeof(in));
	ring_free(&r);
	ck_assert_uint_eq(ring_kept(), 0);
}
END_TEST

START_TEST(test_ring_grows_only_when_full)
{
	struct ring r;
	uint8_t b[RING_START_SIZE];
	const uint8_t *q;
	size_t n;

	memset(b, 'g', sizeof(b));
	ring_init(&r, 262144);
	ck_assert_uint_eq(ring_storage(&r), 0);
	/* A reader that keeps up: one piece of storage is enough. */
	ck_assert_uint_eq(ring_pump(&r, 6144, 6144 * 100), 0);
	ck_assert_uint_eq(ring_storage(&r), RING_START_SIZE);
	/* Wrapped and full, it doubles; the bytes keep their order. */
	ck_assert_uint_eq(ring_write(&r, "0123456789", 10), 10);
	ck_assert_uint_eq(ring_read(&r, b, 4), 4);
	ck_assert_uint_eq(ring_write(&r, b, RING_START_SIZE - 6), RING_START_SIZE - 6);
	ck_assert_uint_eq(ring_len(&r), RING_START_SIZE);
	ck_assert_uint_eq(ring_storage(&r), RING_START_SIZE);
	ck_assert_uint_eq(ring_write(&r, "!", 1), 1);
	ck_assert_uint_eq(ring_storage(&r), 2 * RING_START_SIZE);
	q = ring_peek(&r, &n);
	ck_assert_uint_eq(n, RING_START_SIZE + 1);
	ck_assert_mem_eq(q, "456789", 6);
	ck_assert_uint_eq(q[RING_START_SIZE], '!');
	ring_free(&r);
}
END_TEST

START_TEST(test_ring_busy_keeps_storage)
{
	struct ring r;
	uint8_t b[100];

	ring_init(&r, 262144);
	/* 6 KiB pieces, as the relay moves them: ten thousand drains, one
	 * allocation. */
	ck_assert_uint_eq(ring_pump(&r, 6144, 6144u * 10000), 0);
	ck_assert_uint_eq(ring_len(&r), 0);
	ck_assert_uint_eq(ring_storage(&r), RING_START_SIZE);
	ck_assert_uint_eq(ring_kept(), RING_START_SIZE);
	/* Holding bytes, the storage is in use, not kept idle. */
	memset(b, 'a', sizeof(b));
	ck_assert_uint_eq(ring_write(&r, b, sizeof(b)), sizeof(b));
	ck_assert_uint_eq(ring_kept(), 0);
	/* The owner's idle call does nothing while bytes are waiting... */
	ring_release(&r);
	ck_assert_uint_eq(ring_storage(&r), RING_START_SIZE);
	ck_assert_uint_eq(ring_read(&r, b, sizeof(b)), sizeof(b));
	ck_assert_uint_eq(ring_kept(), RING_START_SIZE);
	/* ...and frees an empty ring. */
	ring_release(&r);
	ck_assert_uint_eq(ring_storage(&r), 0);
	ck_assert_uint_eq(ring_kept(), 0);
	/* It works again after a release. */
	ck_assert_uint_eq(ring_pump(&r, 4096, 1u << 20), 0);
	ring_free(&r);
	ck_assert_uint_eq(ring_storage(&r), 0);
	ck_assert_uint_eq(ring_kept(), 0);
}
END_TEST

START_TEST(test_ring_light_ring_releases)
{
	struct ring r;
	uint8_t b[RING_LIGHT_BYTES + 1];
	unsigned i;

	memset(b, 'x', sizeof(b));
	ring_init(&r, 262144);
	/* Small messages on a ring that never moved bulk: no storage kept,
	 * as for an idle tunnel that only said hello. */
	ck_assert_uint_eq(ring_pump(&r, 64, 64 * 10), 10);
	ck_assert_uint_eq(ring_kept(), 0);
	/* After a bulk fill, storage is kept for a while... */
	ck_assert_uint_eq(ring_write(&r, b, sizeof(b)), sizeof(b));
	ck_assert_uint_eq(ring_read(&r, b, sizeof(b)), sizeof(b));
	ck_assert_uint_eq(ring_storage(&r), RING_START_SIZE);
	for (i = 1; i < RING_LIGHT_DRAINS; i++) {
		ck_assert_uint_eq(ring_write(&r, b, 64), 64);
		ck_assert_uint_eq(ring_read(&r, b, 64), 64);
		ck_assert_uint_eq(ring_storage(&r), RING_START_SIZE);
	}
	/* ...but RING_LIGHT_DRAINS light fills in a row release it. */
	ck_assert_uint_eq(ring_write(&r, b, 64), 64);
	ck_assert_uint_eq(ring_read(&r, b, 64), 64);
	ck_assert_uint_eq(ring_storage(&r), 0);
	ck_assert_uint_eq(ring_kept(), 0);
	ring_free(&r);
}
END_TEST

START_TEST(test_ring_keep_is_bounded)
{
	struct ring r[4];
	uint8_t b[8192];
	size_t i;

	memset(b, 'k', sizeof(b));
	ring_keep_limit(2 * RING_START_SIZE);
	for (i = 0; i < 4; i++) {
		ring_init(&r[i], 65536);
		ck_assert_uint_eq(ring_write(&r[i], b, sizeof(b)), sizeof(b));
	}
	for (i = 0; i < 4; i++)
		ck_assert_uint_eq(ring_read(&r[i], b, sizeof(b)), sizeof(b));
	/* Idle rings keep at most the bound between them, however many. */
	ck_assert_uint_eq(ring_kept(), 2 * RING_START_SIZE);
	ck_assert_uint_eq(ring_storage(&r[0]) + ring_storage(&r[1]) +
	    ring_storage(&r[2]) + ring_storage(&r[3]), 2 * RING_START_SIZE);
	ck_assert_uint_eq(ring_storage(&r[2]), 0);
	/* Freeing a kept ring makes room for the next one to drain. */
	ring_free(&r[0]);
	ck_assert_uint_eq(ring_kept(), RING_START_SIZE);
	ck_assert_uint_eq(ring_write(&r[2], b, sizeof(b)), sizeof(b));
	ck_assert_uint_eq(ring_read(&r[2], b, sizeof(b)), sizeof(b));
	ck_assert_uint_eq(ring_storage(&r[2]), RING_START_SIZE);
	ck_assert_uint_eq(ring_kept(), 2 * RING_START_SIZE);
	for (i = 0; i < 4; i++)
		ring_free(&r[i]);
	ck_assert_uint_eq(ring_kept(), 0);

	/* A bound of 0 gives back the old policy: released at each drain. */
	ring_keep_limit(0);
	ring_init(&r[0], 65536);
	ck_assert_uint_eq(ring_pump(&r[0], sizeof(b), 10 * sizeof(b)), 10);
	ring_free(&r[0]);
	ring_keep_limit(RING_KEEP_DEFAULT);
}
END_TEST

START_TEST(test_ring_zero_copy_keeps_storage)
{
	struct ring r;
	uint8_t *p;
	const uint8_t *q;
	size_t n, i;

	ring_init(&r, 32768);
	/* recv()/send() style use: reserve, commit, peek, drop. */
	for (i = 0; i < 1000; i++) {
		p = ring_reserve(&r, &n);
		ck_assert_ptr_nonnull(p);
		ck_assert_uint_ge(n, RING_START_SIZE);
		if (n > 20000)
			n = 20000;
		memset(p, (int)i, n);
		ring_commit(&r, n);
		q = ring_peek(&r, &n);
		ck_assert_uint_eq(q[0], (uint8_t)i);
		ck_assert_uint_eq(q[n - 1], (uint8_t)i);
		ring_drop(&r, n / 2);
		ring_drop(&r, n);
		ck_assert_uint_eq(ring_len(&r), 0);
		ck_assert_uint_ge(ring_storage(&r), RING_START_SIZE);
	}
	/* A reserve that receives nothing changes nothing. */
	p = ring_reserve(&r, &n);
	ring_commit(&r, 0);
	ring_drop(&r, 0);
	ck_assert_uint_eq(ring_len(&r), 0);
	ck_assert_uint_eq(ring_kept(), ring_storage(&r));
	ring_free(&r);
	ck_assert_uint_eq(ring_kept(), 0);
}
END_TEST

/* A tunnel's window: bytes read back at any offset through
 * ring_peek_at's contiguous runs come out as written, across wrap-around
 * and growth, while acknowledged ones are dropped from the front. */
static void
window_read(const struct ring *r, size_t off, uint8_t *out, size_t len)
{
	size_t got = 0, run;
	const uint8_t *p;

	while (got < len) {
		p = ring_peek_at(r, off + got, &run);
		ck_assert_ptr_nonnull(p);
		ck_assert_uint_gt(run, 0);
		if (run > len - got)
			run = len - got;
		memcpy(out + got, p, run);
		got += run;
	}
}

START_TEST(test_ring_peek_at_window)
{
	static uint8_t in[300000], out[300000];
	struct ring r;
	size_t sent = 0, acked = 0, i, n, step, run;

	for (i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 131 + i / 251);
	ring_init(&r, 100000);
	/* Uneven writes and acks so that runs wrap and storage grows. */
	for (step = 0; step < 400 && acked < sizeof(in); step++) {
		n = (step * 7919) % 9000 + 1;
		if (n > ring_space(&r))
			n = ring_space(&r);
		if (n > sizeof(in) - sent)
			n = sizeof(in) - sent;
		ck_assert_uint_eq(ring_write(&r, in + sent, n), n);
		sent += n;
		ck_assert_uint_eq(ring_len(&r), sent - acked);
		window_read(&r, 0, out, sent - acked);
		ck_assert_mem_eq(out, in + acked, sent - acked);
		/* From the middle too, as a re-send after a break does. */
		if (sent - acked > 10) {
			window_read(&r, 7, out, sent - acked - 7);
			ck_assert_mem_eq(out, in + acked + 7, sent - acked - 7);
		}
		n = (step * 104729) % 7000;
		if (n > sent - acked)
			n = sent - acked;
		ring_drop(&r, n);
		acked += n;
	}
	ck_assert_uint_eq(sent, sizeof(in));
	ck_assert_ptr_null(ring_peek_at(&r, ring_len(&r), &run));
	ck_assert_uint_eq(run, 0);
	ring_drop(&r, ring_len(&r));
	ck_assert_uint_eq(ring_len(&r), 0);
	ck_assert_ptr_null(ring_peek_at(&r, 0, &run));
	ring_release(&r);
	ck_assert_ptr_null(r.r_buf);
	ring_free(&r);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("ring");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_ring_fifo_wraps_in_order);
	tcase_add_test(tc, test_ring_bound_is_hard);
	tcase_add_test(tc, test_ring_reserve_commit_peek_drop);
	tcase_add_test(tc, test_ring_grows_in_order);
	tcase_add_test(tc, test_ring_grows_only_when_full);
	tcase_add_test(tc, test_ring_busy_keeps_storage);
	tcase_add_test(tc, test_ring_light_ring_releases);
	tcase_add_test(tc, test_ring_keep_is_bounded);
	tcase_add_test(tc, test_ring_zero_copy_keeps_storage);
	tcase_add_test(tc, test_ring_peek_at_window);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
