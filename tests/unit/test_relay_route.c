/* Which relay call a request is, and the status a caller gets for a path
 * or method the relay does not serve; connection IDs and their table. */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "../../relay/relay.h"

static char err[256];
static const char *code;
static struct relay_route rt;

static int
parse(const char *method, const char *path)
{
	code = NULL;
	err[0] = '\0';
	return route_parse(method, path, &rt, &code, err, sizeof(err));
}

START_TEST(calls)
{
	static const struct {
		const char *path;
		enum relay_call call;
		const char *server, *arg;
	} cases[] = {
		{ "/v1/s/nas/listen/ssh", CALL_LISTEN, "nas", "ssh" },
		{ "/v1/s/nas/connect/web.2", CALL_CONNECT, "nas", "web.2" },
		{ "/v1/s/a-b_c.d/accept/k3J9AAAAAAAAAAAAAAAAAA", CALL_ACCEPT, "a-b_c.d",
		  "k3J9AAAAAAAAAAAAAAAAAA" },
		{ "/v1/s/nas/downstream/ID", CALL_DOWNSTREAM, "nas", "ID" },
		{ "/v1/s/nas/upstream/ID", CALL_UPSTREAM, "nas", "ID" },
		{ "/v1/s/nas/refuse/ID", CALL_REFUSE, "nas", "ID" },
		{ "/v1/s/nas/receive/ID", CALL_RECEIVE, "nas", "ID" },
	};
	size_t i;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		ck_assert_msg(parse("POST", cases[i].path) == 0, "%s: %s", cases[i].path, err);
		ck_assert_int_eq(rt.rt_call, cases[i].call);
		ck_assert_str_eq(rt.rt_server, cases[i].server);
		ck_assert_str_eq(rt.rt_arg, cases[i].arg);
	}
	ck_assert_int_eq(parse("GET", "/v1/status"), 0);
	ck_assert_int_eq(rt.rt_call, CALL_STATUS);
	ck_assert(route_call_is_server(CALL_LISTEN));
	ck_assert(route_call_is_server(CALL_REFUSE));
	ck_assert(!route_call_is_server(CALL_CONNECT));
	ck_assert(!route_call_is_server(CALL_UPSTREAM));
	ck_assert(!route_call_is_server(CALL_RECEIVE));
	ck_assert_str_eq(route_call_name(CALL_RECEIVE), "receive");
	ck_assert_str_eq(route_call_name(CALL_DOWNSTREAM), "downstream");
}
END_TEST

START_TEST(not_found)
{
	static const char *const paths[] = {
		"/", "/v1", "/v1/s", "/v1/s/", "/v1/s/nas", "/v1/s/nas/listen",
		"/v1/s/nas/listen/ssh/", "/v1/s/nas/listen/ssh/x",
		"/v1/s/nas/lisen/ssh", "/v1/s/nas/LISTEN/ssh", "/v2/s/nas/listen/ssh",
		"/v1/status/", "/v1/statuses",
	};
	size_t i;

	for (i = 0; i < sizeof(paths) / sizeof(paths[0]); i++) {
		ck_assert_msg(parse("POST", paths[i]) == 404, "%s", paths[i]);
		ck_assert_str_eq(code, "not_found");
	}
}
END_TEST

START_TEST(bad_names)
{
	char longname[100], path[128];

	ck_assert_int_eq(parse("POST", "/v1/s/n%20as/listen/ssh"), 400);
	ck_assert_str_eq(code, "bad_request");
	ck_assert(strstr(err, "server name") != NULL);
	ck_assert_int_eq(parse("POST", "/v1/s//listen/ssh"), 400);
	ck_assert_int_eq(parse("POST", "/v1/s/nas/listen/"), 400);
	ck_assert_int_eq(parse("POST", "/v1/s/nas/listen/s:sh"), 400);
	ck_assert(strstr(err, "port name") != NULL);
	ck_assert_int_eq(parse("POST", "/v1/s/nas/accept/a+b"), 400);
	ck_assert(strstr(err, "connection ID") != NULL);
	memset(longname, 'a', 65);
	longname[65] = '\0';
	snprintf(path, sizeof(path), "/v1/s/%s/listen/ssh", longname);
	ck_assert_int_eq(parse("POST", path), 400);
	longname[64] = '\0';
	snprintf(path, sizeof(path), "/v1/s/%s/listen/ssh", longname);
	ck_assert_int_eq(parse("POST", path), 0);
}
END_TEST

START_TEST(methods)
{
	ck_assert_int_eq(parse("GET", "/v1/s/nas/listen/ssh"), 405);
	ck_assert_str_eq(code, "method_not_allowed");
	ck_assert_int_eq(parse("PUT", "/v1/s/nas/upstream/x"), 405);
	ck_assert_int_eq(parse("POST", "/v1/status"), 405);
	ck_assert_int_eq(parse("HEAD", "/v1/status"), 405);
}
END_TEST

START_TEST(ids)
{
	uint8_t id[RELAY_ID_BYTES], back[RELAY_ID_BYTES];
	char text[RELAY_ID_TEXT + 1];
	int i;

	for (i = 0; i < 100; i++) {
		randombytes_buf(id, sizeof(id));
		idtable_id_text(id, text);
		ck_assert_uint_eq(strlen(text), RELAY_ID_TEXT);
		ck_assert(route_name_valid(text, strlen(text)));
		ck_assert_int_eq(idtable_id_parse(text, back), 0);
		ck_assert(memcmp(id, back, sizeof(id)) == 0);
	}
	ck_assert_int_eq(idtable_id_parse("short", back), -1);
	ck_assert_int_eq(idtable_id_parse("AAAAAAAAAAAAAAAAAAAAA=", back), -1);
	ck_assert_int_eq(idtable_id_parse("AAAAAAAAAAAAAAAAAAAAA+", back), -1);
	/* Unused low bits of the last character must be zero: one ID has
	 * one spelling. */
	ck_assert_int_eq(idtable_id_parse("AAAAAAAAAAAAAAAAAAAAAB", back), -1);
	ck_assert_int_eq(idtable_id_parse("AAAAAAAAAAAAAAAAAAAAAA", back), 0);
}
END_TEST

START_TEST(table)
{
	enum { N = 5000 };
	static uint8_t ids[N][RELAY_ID_BYTES];
	static int vals[N];
	struct idtable *t = idtable_new();
	uint8_t other[RELAY_ID_BYTES];
	int i;

	ck_assert_ptr_nonnull(t);
	for (i = 0; i < N; i++) {
		randombytes_buf(ids[i], RELAY_ID_BYTES);
		ck_assert_int_eq(idtable_add(t, ids[i], &vals[i]), 0);
	}
	ck_assert_uint_eq(idtable_count(t), N);
	ck_assert_int_eq(idtable_add(t, ids[7], &vals[8]), -1);   /* no duplicates */
	for (i = 0; i < N; i++)
		ck_assert_ptr_eq(idtable_find(t, ids[i]), &vals[i]);
	randombytes_buf(other, sizeof(other));
	ck_assert_ptr_null(idtable_find(t, other));
	for (i = 0; i < N; i += 2)
		ck_assert_ptr_eq(idtable_remove(t, ids[i]), &vals[i]);
	ck_assert_ptr_null(idtable_remove(t, ids[0]));
	ck_assert_uint_eq(idtable_count(t), N / 2);
	for (i = 0; i < N; i++)
		ck_assert_ptr_eq(idtable_find(t, ids[i]), i % 2 ? &vals[i] : NULL);
	idtable_free(t);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("relay_route");
	TCase *tc = tcase_create("route");
	SRunner *sr;
	int failed;

	if (sodium_init() < 0)
		return 1;
	tcase_add_test(tc, calls);
	tcase_add_test(tc, not_found);
	tcase_add_test(tc, bad_names);
	tcase_add_test(tc, methods);
	tcase_add_test(tc, ids);
	tcase_add_test(tc, table);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed == 0 ? 0 : 1;
}
