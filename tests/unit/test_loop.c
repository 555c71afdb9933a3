/* The event loop: timers fire in order, io reaches the right watcher,
 * and callbacks may remove watchers and timers while dispatching. */
#include <check.h>
#include <stdlib.h>
#include <unistd.h>

#include "loop.h"

struct order { int seen[8]; int n; };


static struct order g_order;
static struct loop_timer g_t[4];

static void
record(struct loop *l, void *arg)
{
	int id = (int)(long)arg;

	g_order.seen[g_order.n++] = id;
	if (id == 0)
		loop_timer_stop(l, &g_t[3]);  /* cancel a later one from a callback */
	if (g_order.n == 3)
		loop_stop(l);
}

START_TEST(test_loop_timers_fire_in_due_order)
{
	struct loop *l = loop_new();
	static const int due[4] = { 30, 10, 20, 40 };
	int i;

	ck_assert_ptr_nonnull(l);
	g_order.n = 0;
	for (i = 0; i < 4; i++) {
		loop_timer_init(&g_t[i], record, (void *)(long)i);
		loop_timer_start(l, &g_t[i], (uint64_t)due[i]);
	}
	ck_assert_int_eq(loop_run(l), 0);
	ck_assert_int_eq(g_order.n, 3);
	ck_assert_int_eq(g_order.seen[0], 1);
	ck_assert_int_eq(g_order.seen[1], 2);
	ck_assert_int_eq(g_order.seen[2], 0);
	ck_assert(!loop_timer_armed(&g_t[3]));
	loop_free(l);
}
END_TEST

static int g_reads;
static int g_pipes[2][2];

static void
on_read(struct loop *l, int fd, int events, void *arg)
{
	char c;

	(void)arg;
	ck_assert(events & LOOP_READ);
	ck_assert_int_eq(read(fd, &c, 1), 1);
	g_reads++;
	/* Remove the other watcher whose event is already fetched in this
	 * batch: it must not be dispatched. */
	loop_unwatch(l, fd == g_pipes[0][0] ? g_pipes[1][0] : g_pipes[0][0]);
	loop_unwatch(l, fd);
	loop_stop(l);
}

static void
on_deadline(struct loop *l, void *arg)
{
	(void)arg;
	loop_stop(l);
}

START_TEST(test_loop_unwatched_fd_not_dispatched)
{
	struct loop *l = loop_new();
	struct loop_timer deadline;

	ck_assert_int_eq(pipe(g_pipes[0]), 0);
	ck_assert_int_eq(pipe(g_pipes[1]), 0);
	ck_assert_int_eq(write(g_pipes[0][1], "a", 1), 1);
	ck_assert_int_eq(write(g_pipes[1][1], "b", 1), 1);
	ck_assert_int_eq(loop_watch(l, g_pipes[0][0], LOOP_READ, on_read, NULL), 0);
	ck_assert_int_eq(loop_watch(l, g_pipes[1][0], LOOP_READ, on_read, NULL), 0);
	loop_timer_init(&deadline, on_deadline, NULL);
	loop_timer_start(l, &deadline, 2000);
	g_reads = 0;
	loop_run(l);
	ck_assert_int_eq(g_reads, 1);
	loop_timer_stop(l, &deadline);
	for (int i = 0; i < 2; i++) {
		close(g_pipes[i][0]);
		close(g_pipes[i][1]);
	}
	loop_free(l);
}
END_TEST

START_TEST(test_loop_many_timers_heap)
{
	struct loop *l = loop_new();
	struct loop_timer *ts = calloc(1000, sizeof(*ts));
	int i;

	for (i = 0; i < 1000; i++) {
		loop_timer_init(&ts[i], on_deadline, NULL);
		loop_timer_start(l, &ts[i], (uint64_t)(100000 + (i * 7919) % 1000));
	}
	/* Stopping in a scrambled order keeps the heap consistent. */
	for (i = 0; i < 1000; i++)
		loop_timer_stop(l, &ts[(i * 379) % 1000]);
	for (i = 0; i < 1000; i++)
		ck_assert(!loop_timer_armed(&ts[i]));
	free(ts);
	loop_free(l);
}
END_TEST

int
main(void)
{
	Suite *s = suite_create("loop");
	TCase *tc = tcase_create("core");
	SRunner *sr;
	int failed;

	tcase_add_test(tc, test_loop_timers_fire_in_due_order);
	tcase_add_test(tc, test_loop_unwatched_fd_not_dispatched);
	tcase_add_test(tc, test_loop_many_timers_heap);
	suite_add_tcase(s, tc);
	sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
