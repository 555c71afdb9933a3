/* The pipe buffer: bytes come out in order, never more than the bound
 * is held, and an empty ring holds no storage. */
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
	ck_assert_ptr_null(r.r_buf);
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
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
