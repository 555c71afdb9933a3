/* Single-threaded epoll loop with a binary min-heap of one-shot timers.
 *
 * Watchers live in a table indexed by fd.  Each registration carries a
 * generation number in its epoll cookie, so an event already fetched for
 * an fd that a callback has since unwatched (or closed and reused) is
 * dropped instead of reaching the wrong owner. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#include "loop.h"

#define LOOP_BATCH 256

struct loop_watcher {
	loop_io_cb lw_cb;
	void      *lw_arg;
	uint32_t   lw_gen;      /* 0 = not watched */
	int        lw_events;
};

struct loop {
	int                  l_epfd;
	struct loop_watcher *l_watch;
	size_t               l_nwatch;
	uint32_t             l_gen;
	struct loop_timer  **l_heap;
	size_t               l_nheap, l_capheap;
	int                  l_stop;
	loop_timeout_fn      l_hook;
	void                *l_hook_arg;
};

uint64_t
loop_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

struct loop *
loop_new(void)
{
	struct loop *l;

	if ((l = calloc(1, sizeof(*l))) == NULL)
		return NULL;
	if ((l->l_epfd = epoll_create1(EPOLL_CLOEXEC)) == -1) {
		free(l);
		return NULL;
	}
	return l;
}

void
loop_free(struct loop *l)
{
	if (l == NULL)
		return;
	close(l->l_epfd);
	free(l->l_watch);
	free(l->l_heap);
	free(l);
}

static uint32_t
loop_epoll_events(int events)
{
	uint32_t ev = 0;

	if (events & LOOP_READ)
		ev |= EPOLLIN | EPOLLRDHUP;
	if (events & LOOP_WRITE)
		ev |= EPOLLOUT;
	return ev;
}

int
loop_watch(struct loop *l, int fd, int events, loop_io_cb cb, void *arg)
{
	struct loop_watcher *w;
	struct epoll_event ev;
	int op;

	if (fd < 0) {
		errno = EBADF;
		return -1;
	}
	if ((size_t)fd >= l->l_nwatch) {
		size_t n = l->l_nwatch ? l->l_nwatch : 64;
		struct loop_watcher *nw;

		while (n <= (size_t)fd)
			n *= 2;
		if ((nw = realloc(l->l_watch, n * sizeof(*nw))) == NULL)
			return -1;
		memset(nw + l->l_nwatch, 0, (n - l->l_nwatch) * sizeof(*nw));
		l->l_watch = nw;
		l->l_nwatch = n;
	}
	w = &l->l_watch[fd];
	op = w->lw_gen ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	if (op == EPOLL_CTL_MOD && w->lw_events == events) {
		w->lw_cb = cb;
		w->lw_arg = arg;
		return 0;
	}
	if (op == EPOLL_CTL_ADD) {
		if (++l->l_gen == 0)
			l->l_gen = 1;
	}
	memset(&ev, 0, sizeof(ev));
	ev.events = loop_epoll_events(events);
	ev.data.u64 = (uint64_t)(uint32_t)fd |
	    ((uint64_t)(op == EPOLL_CTL_ADD ? l->l_gen : w->lw_gen) << 32);
	if (epoll_ctl(l->l_epfd, op, fd, &ev) == -1) {
		/* The fd was closed without loop_unwatch and its number
		 * reused: the kernel dropped the old registration. */
		if (op != EPOLL_CTL_MOD || errno != ENOENT)
			return -1;
		op = EPOLL_CTL_ADD;
		if (++l->l_gen == 0)
			l->l_gen = 1;
		ev.data.u64 = (uint64_t)(uint32_t)fd | ((uint64_t)l->l_gen << 32);
		if (epoll_ctl(l->l_epfd, op, fd, &ev) == -1)
			return -1;
	}
	if (op == EPOLL_CTL_ADD)
		w->lw_gen = l->l_gen;
	w->lw_cb = cb;
	w->lw_arg = arg;
	w->lw_events = events;
	return 0;
}

int
loop_unwatch(struct loop *l, int fd)
{
	struct loop_watcher *w;

	if (fd < 0 || (size_t)fd >= l->l_nwatch || l->l_watch[fd].lw_gen == 0)
		return 0;
	w = &l->l_watch[fd];
	w->lw_gen = 0;
	w->lw_cb = NULL;
	w->lw_arg = NULL;
	/* The fd may already be closed (EBADF); the registration went
	 * with it, which is what we wanted. */
	if (epoll_ctl(l->l_epfd, EPOLL_CTL_DEL, fd, NULL) == -1 &&
	    errno != EBADF && errno != ENOENT)
		return -1;
	return 0;
}

/* ---- timers: min-heap on lt_due, lt_slot = index + 1 ---------------- */

static void
heap_set(struct loop *l, size_t i, struct loop_timer *t)
{
	l->l_heap[i] = t;
	t->lt_slot = i + 1;
}

static void
heap_up(struct loop *l, size_t i)
{
	struct loop_timer *t = l->l_heap[i];

	while (i > 0) {
		size_t p = (i - 1) / 2;
		if (l->l_heap[p]->lt_due <= t->lt_due)
			break;
		heap_set(l, i, l->l_heap[p]);
		i = p;
	}
	heap_set(l, i, t);
}

static void
heap_down(struct loop *l, size_t i)
{
	struct loop_timer *t = l->l_heap[i];

	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= l->l_nheap)
			break;
		if (c + 1 < l->l_nheap &&
		    l->l_heap[c + 1]->lt_due < l->l_heap[c]->lt_due)
			c++;
		if (t->lt_due <= l->l_heap[c]->lt_due)
			break;
		heap_set(l, i, l->l_heap[c]);
		i = c;
	}
	heap_set(l, i, t);
}

void
loop_timer_init(struct loop_timer *t, loop_timer_cb cb, void *arg)
{
	t->lt_due = 0;
	t->lt_slot = 0;
	t->lt_cb = cb;
	t->lt_arg = arg;
}

int
loop_timer_armed(const struct loop_timer *t)
{
	return t->lt_slot != 0;
}

void
loop_timer_stop(struct loop *l, struct loop_timer *t)
{
	size_t i;
	struct loop_timer *last;

	if (t->lt_slot == 0)
		return;
	i = t->lt_slot - 1;
	t->lt_slot = 0;
	last = l->l_heap[--l->l_nheap];
	if (last == t)
		return;
	heap_set(l, i, last);
	heap_up(l, i);
	heap_down(l, last->lt_slot - 1);
}

void
loop_timer_start(struct loop *l, struct loop_timer *t, uint64_t ms)
{
	loop_timer_stop(l, t);
	if (l->l_nheap == l->l_capheap) {
		size_t n = l->l_capheap ? l->l_capheap * 2 : 64;
		struct loop_timer **nh = realloc(l->l_heap, n * sizeof(*nh));

		/* Timers are armed from callbacks that cannot fail; without
		 * memory for the heap there is no safe way on. */
		if (nh == NULL)
			abort();
		l->l_heap = nh;
		l->l_capheap = n;
	}
	t->lt_due = loop_now_ms() + ms;
	heap_set(l, l->l_nheap++, t);
	heap_up(l, l->l_nheap - 1);
}

void
loop_set_timeout_hook(struct loop *l, loop_timeout_fn fn, void *arg)
{
	l->l_hook = fn;
	l->l_hook_arg = arg;
}

void
loop_stop(struct loop *l)
{
	l->l_stop = 1;
}

static void
loop_run_timers(struct loop *l)
{
	uint64_t now = loop_now_ms();
	/* Bounded: timers re-armed for "now" by their own callback wait for
	 * the next iteration instead of spinning here. */
	size_t budget = l->l_nheap;

	while (budget-- > 0 && l->l_nheap > 0 && l->l_heap[0]->lt_due <= now) {
		struct loop_timer *t = l->l_heap[0];

		loop_timer_stop(l, t);
		t->lt_cb(l, t->lt_arg);
		if (l->l_stop)
			return;
	}
}

static int
loop_wait_ms(struct loop *l)
{
	int64_t wait = -1, hook;

	if (l->l_nheap > 0) {
		uint64_t now = loop_now_ms(), due = l->l_heap[0]->lt_due;
		wait = due > now ? (int64_t)(due - now) : 0;
	}
	if (l->l_hook != NULL) {
		hook = l->l_hook(l->l_hook_arg);
		if (hook >= 0 && (wait < 0 || hook < wait))
			wait = hook;
	}
	if (wait > 60000)
		wait = 60000;
	return (int)wait;
}

int
loop_run(struct loop *l)
{
	struct epoll_event evs[LOOP_BATCH];
	int n, i;

	l->l_stop = 0;
	while (!l->l_stop) {
		n = epoll_wait(l->l_epfd, evs, LOOP_BATCH, loop_wait_ms(l));
		if (n == -1) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		for (i = 0; i < n && !l->l_stop; i++) {
			int fd = (int)(uint32_t)evs[i].data.u64;
			uint32_t gen = (uint32_t)(evs[i].data.u64 >> 32);
			struct loop_watcher *w;
			int events = 0;

			if ((size_t)fd >= l->l_nwatch)
				continue;
			w = &l->l_watch[fd];
			if (w->lw_gen != gen || w->lw_cb == NULL)
				continue;
			if (evs[i].events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR))
				events |= LOOP_READ;
			if (evs[i].events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
				events |= LOOP_WRITE;
			events &= w->lw_events ? w->lw_events : 0;
			if (events == 0 && (evs[i].events & (EPOLLHUP | EPOLLERR)))
				events = w->lw_events;
			if (events)
				w->lw_cb(l, fd, events, w->lw_arg);
		}
		if (!l->l_stop)
			loop_run_timers(l);
	}
	return 0;
}
