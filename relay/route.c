/* Request paths: /v1/s/{server}/{call}/{port or id} and /v1/status. */
#include <stdio.h>
#include <string.h>

#include "relay.h"

static const struct {
	const char     *name;
	enum relay_call call;
} route_calls[] = {
	{ "listen",     CALL_LISTEN },
	{ "accept",     CALL_ACCEPT },
	{ "downstream", CALL_DOWNSTREAM },
	{ "refuse",     CALL_REFUSE },
	{ "connect",    CALL_CONNECT },
	{ "upstream",   CALL_UPSTREAM },
	{ "receive",    CALL_RECEIVE },
};
#define NCALLS (sizeof(route_calls) / sizeof(route_calls[0]))

#define ROUTE_PREFIX "/v1/s/"

int
route_name_valid(const char *s, size_t len)
{
	size_t i;
	char c;

	if (len == 0 || len > RELAY_NAME_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		c = s[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
			return 0;
	}
	return 1;
}

const char *
route_call_name(enum relay_call c)
{
	size_t i;

	if (c == CALL_STATUS)
		return "status";
	for (i = 0; i < NCALLS; i++)
		if (route_calls[i].call == c)
			return route_calls[i].name;
	return "?";
}

int
route_call_is_server(enum relay_call c)
{
	return c == CALL_LISTEN || c == CALL_ACCEPT || c == CALL_DOWNSTREAM ||
	    c == CALL_REFUSE;
}

int
route_parse(const char *method, const char *path, struct relay_route *rt,
            const char **code, char *err, size_t errlen)
{
	const char *seg[3], *end[3], *p;
	size_t i, n, verblen;
	int found = 0;

	memset(rt, 0, sizeof(*rt));
	if (strcmp(path, "/v1/status") == 0) {
		rt->rt_call = CALL_STATUS;
		if (strcmp(method, "GET") != 0) {
			*code = "method_not_allowed";
			snprintf(err, errlen, "/v1/status takes GET, not %.16s", method);
			return 405;
		}
		return 0;
	}
	if (strncmp(path, ROUTE_PREFIX, strlen(ROUTE_PREFIX)) != 0)
		goto notfound;
	p = path + strlen(ROUTE_PREFIX);
	for (n = 0; n < 3; n++) {
		seg[n] = p;
		p += strcspn(p, "/");
		end[n] = p;
		if (*p == '\0')
			break;
		p++;
	}
	if (n != 2 || *end[2] != '\0')
		goto notfound;
	verblen = (size_t)(end[1] - seg[1]);
	for (i = 0; i < NCALLS; i++)
		if (strlen(route_calls[i].name) == verblen &&
		    memcmp(route_calls[i].name, seg[1], verblen) == 0) {
			rt->rt_call = route_calls[i].call;
			found = 1;
			break;
		}
	if (!found)
		goto notfound;
	if (strcmp(method, "POST") != 0) {
		*code = "method_not_allowed";
		snprintf(err, errlen, "relay calls take POST, not %.16s", method);
		return 405;
	}
	if (!route_name_valid(seg[0], (size_t)(end[0] - seg[0]))) {
		*code = "bad_request";
		snprintf(err, errlen, "bad server name in the path: use 1 to %d "
		    "characters from A-Z a-z 0-9 . _ -", RELAY_NAME_MAX);
		return 400;
	}
	if (!route_name_valid(seg[2], (size_t)(end[2] - seg[2]))) {
		*code = "bad_request";
		if (rt->rt_call == CALL_LISTEN || rt->rt_call == CALL_CONNECT)
			snprintf(err, errlen, "bad port name in the path: use 1 to %d "
			    "characters from A-Z a-z 0-9 . _ -", RELAY_NAME_MAX);
		else
			snprintf(err, errlen, "bad connection ID in the path: IDs are "
			    "%d characters of URL-safe base64", RELAY_ID_TEXT);
		return 400;
	}
	memcpy(rt->rt_server, seg[0], (size_t)(end[0] - seg[0]));
	memcpy(rt->rt_arg, seg[2], (size_t)(end[2] - seg[2]));
	return 0;

notfound:
	*code = "not_found";
	snprintf(err, errlen, "no such relay call; calls are POST "
	    "/v1/s/SERVER/{listen,connect}/PORT and "
	    "/v1/s/SERVER/{accept,downstream,refuse,upstream,receive}/ID");
	return 404;
}
