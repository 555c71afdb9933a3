/* postern-server's listen retry schedule: a ceiling that doubles to a cap,
 * and a random wait under it, so that proxies which lost the same relay
 * at the same moment do not all come back in the same millisecond. */
#include <check.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../server-proxy/server.h"

START_TEST(test_jitter_bounds)
{
	static const uint64_t ceilings[] = {
		0, 1, SERVER_BACKOFF_FLOOR_MS, SERVER_BACKOFF_MIN_MS, 1000,
		16000, SERVER_BACKOFF_MAX_MS, SERVER_BACKOFF_MAX_MS * 10,
		UINT64_MAX
	};
	static const uint32_t rs[] = { 0, 1, 99, 12345, 0x7fffffffu,
		0xfffffffeu, 0xffffffffu };
	size_t i, j;

	for (i = 0; i < sizeof(ceilings) / sizeof(ceilings[0]); i++)
		for (j = 0; j < sizeof(rs) / sizeof(rs[0]); j++) {
			uint64_t c = ceilings[i], w;

			w = server_backoff_jitter(c, rs[j]);
			ck_assert_uint_ge(w, SERVER_BACKOFF_FLOOR_MS);
			ck_assert_uint_le(w, SERVER_BACKOFF_MAX_MS);
			if (c >= SERVER_BACKOFF_FLOOR_MS)
				ck_assert_uint_le(w, c);
		}
	/* r = 0 is the floor; the top of r's range reaches the ceiling's
	 * neighbourhood only through the modulo, so check exact ends. */
	ck_assert_uint_eq(server_backoff_jitter(1000, 0),
	    SERVER_BACKOFF_FLOOR_MS);
	ck_assert_uint_eq(server_backoff_jitter(1000,
	    1000 - SERVER_BACKOFF_FLOOR_MS), 1000);
	ck_assert_uint_eq(server_backoff_jitter(SERVER_BACKOFF_MAX_MS * 2,
	    SERVER_BACKOFF_MAX_MS - SERVER_BACKOFF_FLOOR_MS),
	    SERVER_BACKOFF_MAX_MS);
}
END_TEST

/* Deterministic: the same r gives the same wait. */
START_TEST(test_jitter_deterministic)
{
	uint32_t r;

	for (r = 0; r < 5000; r += 7)
		ck_assert_uint_eq(server_backoff_jitter(8000, r),
		    server_backoff_jitter(8000, r));
}
END_TEST

/* Spread: waits drawn with a simple LCG cover the whole span rather than
 * bunching (each tenth of [floor, ceiling] gets a fair share), which is
 * the point of jitter: 1000 proxies do not retry at the same moment. */
START_TEST(test_jitter_spread)
{
	const uint64_t c = 30000, span = c - SERVER_BACKOFF_FLOOR_MS + 1;
	unsigned bins[10], i, n = 20000;
	uint32_t r = 2463534242u;
	uint64_t w, lo = UINT64_MAX, hi = 0, sum = 0;

	memset(bins, 0, sizeof(bins));
	for (i = 0; i < n; i++) {
		r = r * 1664525u + 1013904223u;
		w = server_backoff_jitter(c, r);
		bins[(w - SERVER_BACKOFF_FLOOR_MS) * 10 / span]++;
		lo = w < lo ? w : lo;
		hi = w > hi ? w : hi;
		sum += w;
	}
	for (i = 0; i < 10; i++)
		ck_assert_msg(bins[i] > n / 10 * 8 / 10 &&
		    bins[i] < n / 10 * 12 / 10, "bin %u holds %u of %u waits",
		    i, bins[i], n);
	ck_assert_uint_lt(lo, SERVER_BACKOFF_FLOOR_MS + 300);
	ck_assert_uint_gt(hi, c - 300);
	/* The mean is about half the ceiling: retries come twice as often
	 * as without jitter, on average, but never in step. */
	ck_assert_uint_gt(sum / n, c / 2 - 1000);
	ck_assert_uint_lt(sum / n, c / 2 + 1000);
}
END_TEST

/* The ceiling's schedule with jitter on top: after k failures the wait is
 * at most min(0.5 s * 2^k, 30 s), whatever the random numbers. */
START_TEST(test_schedule_capped)
{
	uint64_t ceiling = 0, w;
	uint32_t r = 1;
	int i;

	for (i = 0; i < 40; i++) {
		ceiling = server_backoff_next(ceiling);
		r = r * 1103515245u + 12345u;
		w = server_backoff_jitter(ceiling, r);
		ck_assert_uint_le(ceiling, SERVER_BACKOFF_MAX_MS);
		ck_assert_uint_le(w, ceiling);
		ck_assert_uint_ge(w, SERVER_BACKOFF_FLOOR_MS);
	}
	ck_assert_uint_eq(ceiling, SERVER_BACKOFF_MAX_MS);
}
END_TEST

/* The Postern-Instance token: 22 URL-safe base64 characters, different
 * each time. */
START_TEST(test_instance_token)
{
	char a[SERVER_INSTANCE_LEN + 1], b[SERVER_INSTANCE_LEN + 1];
	size_t i;

	server_instance_token(a, sizeof(a));
	server_instance_token(b, sizeof(b));
	ck_assert_uint_eq(strlen(a), SERVER_INSTANCE_LEN);
	ck_assert_uint_eq(strlen(b), SERVER_INSTANCE_LEN);
	ck_assert_str_ne(a, b);
	for (i = 0; i < SERVER_INSTANCE_LEN; i++)
		ck_assert_msg(strchr("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnop"
		    "qrstuvwxyz0123456789-_", a[i]) != NULL,
		    "token %s has '%c'", a, a[i]);
}
END_TEST

static Suite *
server_backoff_suite(void)
{
	Suite *s = suite_create("server_backoff");
	TCase *tc = tcase_create("backoff");

	tcase_add_test(tc, test_jitter_bounds);
	tcase_add_test(tc, test_jitter_deterministic);
	tcase_add_test(tc, test_jitter_spread);
	tcase_add_test(tc, test_schedule_capped);
	tcase_add_test(tc, test_instance_token);
	suite_add_tcase(s, tc);
	return s;
}

int
main(void)
{
	SRunner *sr = srunner_create(server_backoff_suite());
	int failed;

	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
