/* sort.c: which new connections the upload daemons get. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "../../relay/relay.h"

static int
is_upload(const char *s)
{
	return sort_is_upload(s, strlen(s));
}

START_TEST(uploads)
{
	ck_assert_int_eq(is_upload("POST /v1/s/nas/upstream/abc HTTP/1.1\r\n"), 1);
	ck_assert_int_eq(is_upload("POST /v1/s/nas/downstream/abc HTTP/1.1\r\n"), 1);
	ck_assert_int_eq(is_upload("POST /v1/s/box.2-x/upstream/"), 1);
	ck_assert_int_eq(is_upload("POST /v1/s/nas/upstream/abc HTTP/1.1\r\n"
	    "Host: r\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\n"), 1);
	/* the header's name in a body is not a header */
	ck_assert_int_eq(is_upload("POST /v1/s/nas/upstream/abc HTTP/1.1\r\n"
	    "Host: r\r\n\r\n\r\nPostern-Segment: 1\r\n"), 1);
}
END_TEST

START_TEST(not_uploads)
{
	ck_assert_int_eq(is_upload("POST /v1/s/nas/listen/ssh HTTP/1.1\r\n"), 0);
	ck_assert_int_eq(is_upload("POST /v1/s/nas/connect/ssh HTTP/1.1\r\n"), 0);
	ck_assert_int_eq(is_upload("POST /v1/s/nas/accept/abc HTTP/1.1\r\n"), 0);
	ck_assert_int_eq(is_upload("POST /v1/s/nas/receive/abc HTTP/1.1\r\n"), 0);
	ck_assert_int_eq(is_upload("GET /v1/s/nas/upstream/abc HTTP/1.1\r\n"), 0);
	ck_assert_int_eq(is_upload("GET /v1/status HTTP/1.1\r\n"), 0);
	/* the call is the third segment, not any segment */
	ck_assert_int_eq(is_upload("POST /v1/s/upstream/listen/x HTTP/1.1\r\n"), 0);
	ck_assert_int_eq(is_upload("POST /v1/s/nas/upstreamx/abc HTTP/1.1\r\n"), 0);
	ck_assert_int_eq(is_upload("POST /v1/s/nas HTTP/1.1\r\n"), 0);
	/* upload segments stay with the other requests */
	ck_assert_int_eq(is_upload("POST /v1/s/nas/upstream/abc HTTP/1.1\r\n"
	    "Host: r\r\nPostern-Segment: 1\r\n\r\n"), 0);
	ck_assert_int_eq(is_upload("POST /v1/s/nas/downstream/abc HTTP/1.1\r\n"
	    "postern-segment: 1\r\n"), 0);
}
END_TEST

START_TEST(cut_short)
{
	/* Whatever arrived first decides; a cut line is no upload. */
	ck_assert_int_eq(is_upload(""), 0);
	ck_assert_int_eq(is_upload("POS"), 0);
	ck_assert_int_eq(is_upload("POST /v1/s/"), 0);
	ck_assert_int_eq(is_upload("POST /v1/s/nas"), 0);
	ck_assert_int_eq(is_upload("POST /v1/s/nas/upstre"), 0);
	ck_assert_int_eq(is_upload("POST /v1/s/nas/upstream"), 0);
	ck_assert_int_eq(sort_is_upload("POST /v1/s/nas/upstream/", 20), 0);
	/* binary noise, TLS hellos */
	ck_assert_int_eq(sort_is_upload("\x16\x03\x01\x02\x00\x01", 6), 0);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("relay_sort");
	TCase *tc = tcase_create("sort");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, uploads);
	tcase_add_test(tc, not_uploads);
	tcase_add_test(tc, cut_short);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
