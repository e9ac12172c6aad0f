/*
 * loop: the epoll reactor of a process (each worker has one; the master has
 * its own).
 *
 * - fd watches: a struct loop_watch embedded in its owner; the callback gets
 *   the epoll events.  Watches are edge- or level-triggered as registered.
 * - timer lists: every timer on one list shares one duration, so a list
 *   stays ordered by deadline and start/stop/touch are O(1) (the idle lists
 *   of sessions).  A list with no fixed duration takes deadlines in any
 *   order (inserted from the tail).
 * - deferred close: an owner freed while events of the same batch may still
 *   name it is put on the loop's close list and freed after the batch.
 *
 * Single-threaded: every function is called on the loop's thread.
 */
#ifndef SOCKS5D_LOOP_H
#define SOCKS5D_LOOP_H

#include <stdbool.h>
#include <stdint.h>

#include "list.h"

struct loop;
struct loop_watch;
struct loop_timer;

typedef void loop_io_fn(struct loop *l, struct loop_watch *w, uint32_t events);
typedef void loop_timer_fn(struct loop *l, struct loop_timer *t);
typedef void loop_free_fn(void *p);
typedef void loop_hook_fn(struct loop *l, void *arg);

struct loop_watch {
	int fd;
	uint32_t events;
	loop_io_fn *fn;
	void *data;
};

struct loop_timer {
	struct list_node node; /* linked when running */
	int64_t deadline;
	loop_timer_fn *fn;
	void *data;
};

struct loop_tlist {
	struct list_node head;
	int64_t duration_ms; /* <= 0: deadlines given per timer */
	struct loop_tlist *next_list;
};

struct loop_deferred {
	struct loop_deferred *next;
	loop_free_fn *fn;
	void *p;
};

struct loop {
	int epfd;
	bool stop;
	int64_t now; /* monotonic ms, refreshed after every wait */
	struct loop_tlist *tlists;
	struct loop_deferred *deferred;
	loop_hook_fn *before_sleep;
	void *before_sleep_arg;
};

int loop_init(struct loop *l);
void loop_free(struct loop *l);
/* Run until loop_stop(); returns 0 or a negative errno. */
int loop_run(struct loop *l);
void loop_stop(struct loop *l);

int loop_watch_add(struct loop *l, struct loop_watch *w, int fd, uint32_t events, loop_io_fn *fn,
                   void *data);
int loop_watch_mod(struct loop *l, struct loop_watch *w, uint32_t events);
/* Hand a registered fd over to another watch (one epoll_ctl): `from`
 * becomes inactive, `to` takes the fd with its events, fn and data. */
int loop_watch_move(struct loop *l, struct loop_watch *from, struct loop_watch *to, uint32_t events,
                    loop_io_fn *fn, void *data);
/* Remove from epoll (the fd is not closed); safe on a watch never added. */
void loop_watch_del(struct loop *l, struct loop_watch *w);
/* Close the watched fd, which takes it out of epoll without a system call
 * of its own: only for descriptors never duplicated (dup, fork), whose
 * close is their last.  The watch becomes inactive; safe on a watch never
 * added (then it only closes fd). */
void loop_watch_close(struct loop_watch *w, int fd);
static inline bool loop_watch_active(const struct loop_watch *w)
{
	return w->fn != 0;
}

void loop_tlist_init(struct loop *l, struct loop_tlist *tl, int64_t duration_ms);
/* Change a list's duration; a shorter one also brings running deadlines
 * forward to now + duration (so none waits longer than the new duration). */
void loop_tlist_set(struct loop *l, struct loop_tlist *tl, int64_t duration_ms);
void loop_tlist_detach(struct loop *l, struct loop_tlist *tl);

void loop_timer_init(struct loop_timer *t, loop_timer_fn *fn, void *data);
/* (Re)start on the list: deadline now + the list's duration, or at `at`
 * (monotonic ms) on a list without a fixed duration. */
void loop_timer_start(struct loop *l, struct loop_tlist *tl, struct loop_timer *t);
void loop_timer_start_at(struct loop_tlist *tl, struct loop_timer *t, int64_t at);
void loop_timer_stop(struct loop_timer *t);
static inline bool loop_timer_active(const struct loop_timer *t)
{
	return list_linked(&t->node);
}

/* Free p with fn after the current batch of events; d is embedded in p. */
void loop_defer_free(struct loop *l, struct loop_deferred *d, loop_free_fn *fn, void *p);

#endif
