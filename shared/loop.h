/* A small single-threaded event loop on epoll with one-shot timers.
 * Callbacks may add, modify and delete watchers and timers (including
 * their own) while the loop dispatches. */
#ifndef POSTERN_LOOP_H
#define POSTERN_LOOP_H

#include <stdint.h>

struct loop;

enum { LOOP_READ = 1, LOOP_WRITE = 2 };

typedef void (*loop_io_cb)(struct loop *l, int fd, int events, void *arg);
typedef void (*loop_timer_cb)(struct loop *l, void *arg);

struct loop_timer {
	uint64_t      lt_due;   /* monotonic ms; internal */
	size_t        lt_slot;  /* heap index + 1; 0 = not armed */
	loop_timer_cb lt_cb;
	void         *lt_arg;
};

struct loop *loop_new(void);
void  loop_free(struct loop *l);
/* Watch fd for LOOP_READ|LOOP_WRITE (level-triggered); events 0 keeps the
 * registration but waits for nothing. Returns 0 / -1 (errno set). */
int   loop_watch(struct loop *l, int fd, int events, loop_io_cb cb, void *arg);
int   loop_unwatch(struct loop *l, int fd);
void  loop_timer_init(struct loop_timer *t, loop_timer_cb cb, void *arg);
void  loop_timer_start(struct loop *l, struct loop_timer *t, uint64_t ms);
void  loop_timer_stop(struct loop *l, struct loop_timer *t);
int   loop_timer_armed(const struct loop_timer *t);
uint64_t loop_now_ms(void);
/* Runs until loop_stop(); returns 0, or -1 on an epoll failure. */
int   loop_run(struct loop *l);
void  loop_stop(struct loop *l);
/* Extra epoll wait bound (ms, -1 none), re-read each iteration: lets a
 * library with its own timeouts (libmicrohttpd, curl) be polled. */
typedef int64_t (*loop_timeout_fn)(void *arg);
void  loop_set_timeout_hook(struct loop *l, loop_timeout_fn fn, void *arg);

#endif
