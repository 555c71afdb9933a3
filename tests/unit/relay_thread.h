/* Test harness: a real relay on its own loop in a thread, listening on
 * an ephemeral 127.0.0.1 port, for unit tests that speak HTTP to it.
 * Header-only (static functions) because each test is one binary. */
#ifndef POSTERN_TEST_RELAY_THREAD_H
#define POSTERN_TEST_RELAY_THREAD_H

#include <check.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "loop.h"
#include "../../relay/relay.h"

struct relay_thread {
	struct relay_config *rt_cf;
	struct loop         *rt_loop;
	struct relay        *rt_relay;
	pthread_t            rt_thread;
	int                  rt_stopfd;
	int                  rt_port;
};

static void
relay_thread_stop_cb(struct loop *l, int fd, int events, void *arg)
{
	uint64_t v;

	(void)events;
	(void)arg;
	if (read(fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
		loop_stop(l);
}

static void *
relay_thread_main(void *arg)
{
	struct relay_thread *rt = arg;

	loop_run(rt->rt_loop);
	return NULL;
}

/* ini: a whole relay.ini text. */
static void
relay_thread_start(struct relay_thread *rt, const char *ini)
{
	char err[512];
	const char *colon;
	FILE *f;

	f = fmemopen((void *)ini, strlen(ini), "r");
	ck_assert_ptr_nonnull(f);
	rt->rt_cf = config_load_stream(f, "test.ini", err, sizeof(err));
	fclose(f);
	ck_assert_msg(rt->rt_cf != NULL, "%s", err);
	rt->rt_loop = loop_new();
	ck_assert_ptr_nonnull(rt->rt_loop);
	rt->rt_relay = relay_new(rt->rt_loop, rt->rt_cf, err, sizeof(err));
	ck_assert_msg(rt->rt_relay != NULL, "%s", err);
	colon = strrchr(relay_address(rt->rt_relay), ':');
	rt->rt_port = atoi(colon + 1);
	ck_assert_int_gt(rt->rt_port, 0);
	rt->rt_stopfd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	ck_assert_int_ge(rt->rt_stopfd, 0);
	ck_assert_int_eq(loop_watch(rt->rt_loop, rt->rt_stopfd, LOOP_READ,
	    relay_thread_stop_cb, NULL), 0);
	ck_assert_int_eq(pthread_create(&rt->rt_thread, NULL,
	    relay_thread_main, rt), 0);
}

static void
relay_thread_stop(struct relay_thread *rt)
{
	uint64_t one = 1;

	ck_assert_int_eq(write(rt->rt_stopfd, &one, sizeof(one)),
	    (ssize_t)sizeof(one));
	pthread_join(rt->rt_thread, NULL);
	relay_free(rt->rt_relay);
	loop_unwatch(rt->rt_loop, rt->rt_stopfd);
	close(rt->rt_stopfd);
	loop_free(rt->rt_loop);
	config_free(rt->rt_cf);
}

#endif
