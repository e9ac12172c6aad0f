#include "loop.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "../shared/clock.h"

#define LOOP_BATCH 256

int loop_init(struct loop *l)
{
	memset(l, 0, sizeof *l);
	l->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (l->epfd < 0)
		return -errno;
	l->now = clock_ms();
	return 0;
}

static void run_deferred(struct loop *l)
{
	while (l->deferred) {
		struct loop_deferred *d = l->deferred;
		l->deferred = d->next;
		d->fn(d->p);
	}
}

void loop_free(struct loop *l)
{
	run_deferred(l);
	if (l->epfd >= 0)
		close(l->epfd);
	l->epfd = -1;
}

void loop_stop(struct loop *l)
{
	l->stop = true;
}

int loop_watch_add(struct loop *l, struct loop_watch *w, int fd, uint32_t events, loop_io_fn *fn,
                   void *data)
{
	struct epoll_event ev = {.events = events, .data.ptr = w};
	w->fd = fd;
	w->events = events;
	w->fn = fn;
	w->data = data;
	if (epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		int e = errno;
		w->fn = NULL;
		return -e;
	}
	return 0;
}

int loop_watch_mod(struct loop *l, struct loop_watch *w, uint32_t events)
{
	if (w->events == events)
		return 0;
	struct epoll_event ev = {.events = events, .data.ptr = w};
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, w->fd, &ev) < 0)
		return -errno;
	w->events = events;
	return 0;
}

int loop_watch_move(struct loop *l, struct loop_watch *from, struct loop_watch *to, uint32_t events,
                    loop_io_fn *fn, void *data)
{
	struct epoll_event ev = {.events = events, .data.ptr = to};
	if (epoll_ctl(l->epfd, EPOLL_CTL_MOD, from->fd, &ev) < 0)
		return -errno;
	to->fd = from->fd;
	to->events = events;
	to->fn = fn;
	to->data = data;
	from->fn = NULL;
	return 0;
}

void loop_watch_del(struct loop *l, struct loop_watch *w)
{
	if (!w->fn)
		return;
	(void)epoll_ctl(l->epfd, EPOLL_CTL_DEL, w->fd, NULL);
	w->fn = NULL;
}

void loop_watch_close(struct loop_watch *w, int fd)
{
	close(fd);
	w->fn = NULL;
}

static int64_t deadline_of(const struct list_node *n)
{
	return list_entry(n, const struct loop_timer, node)->deadline;
}

void loop_tlist_init(struct loop *l, struct loop_tlist *tl, int64_t duration_ms)
{
	list_init(&tl->head);
	tl->duration_ms = duration_ms;
	tl->next_list = l->tlists;
	l->tlists = tl;
}

void loop_tlist_detach(struct loop *l, struct loop_tlist *tl)
{
	for (struct loop_tlist **p = &l->tlists; *p; p = &(*p)->next_list)
		if (*p == tl) {
			*p = tl->next_list;
			break;
		}
}

void loop_timer_init(struct loop_timer *t, loop_timer_fn *fn, void *data)
{
	memset(t, 0, sizeof *t);
	t->fn = fn;
	t->data = data;
}

void loop_timer_stop(struct loop_timer *t)
{
	if (list_linked(&t->node))
		list_remove(&t->node);
}

void loop_timer_start_at(struct loop_tlist *tl, struct loop_timer *t, int64_t at)
{
	loop_timer_stop(t);
	t->deadline = at;
	/* From the tail: on a fixed-duration list this stops at once. */
	struct list_node *pos = tl->head.prev;
	while (pos != &tl->head && deadline_of(pos) > at)
		pos = pos->prev;
	list_insert_after(pos, &t->node);
}

void loop_timer_start(struct loop *l, struct loop_tlist *tl, struct loop_timer *t)
{
	loop_timer_start_at(tl, t, l->now + (tl->duration_ms > 0 ? tl->duration_ms : 0));
}

void loop_tlist_set(struct loop *l, struct loop_tlist *tl, int64_t duration_ms)
{
	if (tl->duration_ms == duration_ms)
		return;
	/* A shorter duration pulls running deadlines in, so that the list stays
	 * sorted for appends (min with a constant keeps the order). */
	if (duration_ms < tl->duration_ms) {
		int64_t cap = l->now + duration_ms;
		struct list_node *n;
		list_foreach(n, &tl->head) {
			struct loop_timer *t = list_entry(n, struct loop_timer, node);
			if (t->deadline > cap)
				t->deadline = cap;
		}
	}
	tl->duration_ms = duration_ms;
}

void loop_defer_free(struct loop *l, struct loop_deferred *d, loop_free_fn *fn, void *p)
{
	d->fn = fn;
	d->p = p;
	d->next = l->deferred;
	l->deferred = d;
}

static int next_timeout(struct loop *l)
{
	int64_t soonest = -1;
	for (struct loop_tlist *tl = l->tlists; tl; tl = tl->next_list) {
		if (list_empty(&tl->head))
			continue;
		int64_t d = deadline_of(tl->head.next);
		if (soonest < 0 || d < soonest)
			soonest = d;
	}
	if (soonest < 0)
		return -1;
	int64_t wait = soonest - l->now;
	if (wait < 0)
		wait = 0;
	return wait > 60000 ? 60000 : (int)wait;
}

/* Fire the timers due now.  They are moved to a local list first, so a
 * callback that starts a timer at or before now does not run it again in
 * this pass (it fires after the next, zero-timeout, wait). */
static void run_timers(struct loop *l)
{
	struct list_node due;
	list_init(&due);
	for (struct loop_tlist *tl = l->tlists; tl; tl = tl->next_list) {
		while (!list_empty(&tl->head)) {
			struct list_node *n = tl->head.next;
			if (deadline_of(n) > l->now)
				break;
			list_remove(n);
			list_insert_tail(&due, n);
		}
	}
	while (!list_empty(&due)) {
		struct loop_timer *t = list_entry(due.next, struct loop_timer, node);
		list_remove(&t->node);
		if (!l->stop)
			t->fn(l, t);
	}
}

int loop_run(struct loop *l)
{
	struct epoll_event evs[LOOP_BATCH];
	while (!l->stop) {
		if (l->before_sleep)
			l->before_sleep(l, l->before_sleep_arg);
		if (l->stop)
			break;
		int n = epoll_wait(l->epfd, evs, LOOP_BATCH, next_timeout(l));
		if (n < 0 && errno != EINTR)
			return -errno;
		l->now = clock_ms();
		for (int i = 0; i < n && !l->stop; i++) {
			struct loop_watch *w = evs[i].data.ptr;
			/* A watch deleted by an earlier event of this batch has fn NULL;
			 * its owner is freed only after the batch. */
			if (w->fn)
				w->fn(l, w, evs[i].events);
		}
		run_deferred(l);
		run_timers(l);
		run_deferred(l);
	}
	return 0;
}
