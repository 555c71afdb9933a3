/* The window of unacknowledged bytes: what goes in comes out at the same
 * offsets until acknowledged, across wrap-around and growth, and a fully
 * acknowledged window holds no storage. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "sendbuf.h"

/* Reads len bytes at off through sendbuf_at's contiguous runs. */
static void
sb_read(const struct sendbuf *b, size_t off, uint8_t *out, size_t len)
{
	size_t got = 0, run;
	const uint8_t *p;

	while (got < len) {
		p = sendbuf_at(b, off + got, &run);
		ck_assert_ptr_nonnull(p);
		ck_assert_uint_gt(run, 0);
		if (run > len - got)
			run = len - got;
		memcpy(out + got, p, run);
		got += run;
	}
}

START_TEST(test_order_wrap_grow)
{
	struct sendbuf b;
	uint8_t in[300000], out[300000];
	uint64_t sent = 0, acked = 0;
	size_t i, n, step;

	for (i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 131 + i / 251);
	sendbuf_init(&b, 100000);
	/* Uneven appends and acks so that runs wrap and storage grows. */
	for (step = 0; step < 400 && acked < sizeof(in); step++) {
		n = (step * 7919) % 9000 + 1;
		if (n > sendbuf_space(&b))
			n = sendbuf_space(&b);
		if (n > sizeof(in) - sent)
			n = sizeof(in) - sent;
		ck_assert_int_eq(sendbuf_append(&b, in + sent, n), 0);
		sent += n;
		ck_assert_uint_eq(sendbuf_len(&b), sent - acked);
		sb_read(&b, 0, out, (size_t)(sent - acked));
		ck_assert_mem_eq(out, in + acked, (size_t)(sent - acked));
		n = (step * 104729) % 7000;
		if (n > sent - acked)
			n = (size_t)(sent - acked);
		sendbuf_ack(&b, n);
		acked += n;
	}
	ck_assert_uint_eq(sent, sizeof(in));
	sendbuf_ack(&b, sendbuf_len(&b));
	ck_assert_uint_eq(sendbuf_len(&b), 0);
	/* Kept for the next bytes until the owner releases it. */
	ck_assert_ptr_nonnull(b.sb_buf);
	ck_assert_int_eq(sendbuf_append(&b, in, 10), 0);
	sendbuf_release(&b);
	ck_assert_ptr_nonnull(b.sb_buf);     /* not while bytes are kept */
	sendbuf_ack(&b, 10);
	sendbuf_release(&b);
	ck_assert_ptr_null(b.sb_buf);
	sendbuf_free(&b);
}
END_TEST

START_TEST(test_window_bound)
{
	struct sendbuf b;
	uint8_t data[4096];
	size_t run;

	memset(data, 'x', sizeof(data));
	sendbuf_init(&b, 10000);
	ck_assert_int_eq(sendbuf_append(&b, data, 4096), 0);
	ck_assert_int_eq(sendbuf_append(&b, data, 4096), 0);
	ck_assert_uint_eq(sendbuf_space(&b), 10000 - 8192);
	/* Past the window nothing is taken. */
	ck_assert_int_eq(sendbuf_append(&b, data, 4096), -1);
	ck_assert_uint_eq(sendbuf_len(&b), 8192);
	ck_assert_ptr_null(sendbuf_at(&b, 8192, &run));
	ck_assert_uint_eq(run, 0);
	sendbuf_free(&b);
	ck_assert_uint_eq(sendbuf_len(&b), 0);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("sendbuf");
	TCase *tc = tcase_create("sendbuf");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_order_wrap_grow);
	tcase_add_test(tc, test_window_bound);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
