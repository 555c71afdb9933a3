/* sort.c: which new connections the upload daemons get. */
#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "../../relay/relay.h"

struct head {
	const char *h;
	size_t      n;      /* 0: strlen(h) */
	int         upload;
};

static const struct head heads[] = {
	{ "POST /v1/s/nas/upstream/abc HTTP/1.1\r\n", 0, 1 },
	{ "POST /v1/s/nas/downstream/abc HTTP/1.1\r\n", 0, 1 },
	{ "POST /v1/s/box.2-x/upstream/", 0, 1 },
	{ "POST /v1/s/nas/upstream/abc HTTP/1.1\r\n"
	  "Host: r\r\nTransfer-Encoding: chunked\r\n\r\n1a\r\n", 0, 1 },
	/* the header's name in a body is not a header */
	{ "POST /v1/s/nas/upstream/abc HTTP/1.1\r\n"
	  "Host: r\r\n\r\n\r\nPostern-Segment: 1\r\n", 0, 1 },

	{ "POST /v1/s/nas/listen/ssh HTTP/1.1\r\n", 0, 0 },
	{ "POST /v1/s/nas/connect/ssh HTTP/1.1\r\n", 0, 0 },
	{ "POST /v1/s/nas/accept/abc HTTP/1.1\r\n", 0, 0 },
	{ "POST /v1/s/nas/receive/abc HTTP/1.1\r\n", 0, 0 },
	{ "GET /v1/s/nas/upstream/abc HTTP/1.1\r\n", 0, 0 },
	{ "GET /v1/status HTTP/1.1\r\n", 0, 0 },
	/* the call is the third segment, not any segment */
	{ "POST /v1/s/upstream/listen/x HTTP/1.1\r\n", 0, 0 },
	{ "POST /v1/s/nas/upstreamx/abc HTTP/1.1\r\n", 0, 0 },
	{ "POST /v1/s/nas HTTP/1.1\r\n", 0, 0 },
	/* upload segments stay with the other requests */
	{ "POST /v1/s/nas/upstream/abc HTTP/1.1\r\n"
	  "Host: r\r\nPostern-Segment: 1\r\n\r\n", 0, 0 },
	{ "POST /v1/s/nas/downstream/abc HTTP/1.1\r\n"
	  "postern-segment: 1\r\n", 0, 0 },

	/* Whatever arrived first decides; a cut line is no upload. */
	{ "", 0, 0 },
	{ "POS", 0, 0 },
	{ "POST /v1/s/", 0, 0 },
	{ "POST /v1/s/nas", 0, 0 },
	{ "POST /v1/s/nas/upstre", 0, 0 },
	{ "POST /v1/s/nas/upstream", 0, 0 },
	{ "POST /v1/s/nas/upstream/", 20, 0 },
	/* binary noise, TLS hellos */
	{ "\x16\x03\x01\x02\x00\x01", 6, 0 },
};

START_TEST(sorted)
{
	const struct head *h = &heads[_i];

	ck_assert_msg(sort_is_upload(h->h, h->n ? h->n : strlen(h->h)) == h->upload,
	    "head %d (\"%.40s\"): want upload %d", _i, h->h, h->upload);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("relay_sort");
	TCase *tc = tcase_create("sort");
	SRunner *sr;
	int failed;

	tcase_add_loop_test(tc, sorted, 0, (int)(sizeof(heads) / sizeof(heads[0])));
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
