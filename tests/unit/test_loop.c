/*
 * Unit tests for shared/loop (and the list it is built on): fd watches on pipes and socketpairs (read and
 * write readiness, level and edge triggering, mod, del), timer lists with a
 * fixed duration and with per-timer deadlines, timer stop, deferred frees
 * after a batch, and loop_stop.
 *
 * Every test that runs the loop arms a guard timer, so that a watch or a
 * timer that never fires fails the test instead of hanging it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../shared/clock.h"
#include "../../shared/loop.h"

#define GUARD_MS 3000

struct fixture {
	struct loop loop;
	struct loop_tlist guard_tl;
	struct loop_timer guard;
	int guard_fired;
	int sp[2]; /* socketpair */
	int pp[2]; /* pipe: [0] read, [1] write */
};

static void on_guard(struct loop *l, struct loop_timer *t)
{
	struct fixture *f = t->data;
	f->guard_fired = 1;
	loop_stop(l);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	if (!f)
		return -1;
	if (loop_init(&f->loop) < 0)
		return -1;
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, f->sp) < 0)
		return -1;
	if (pipe2(f->pp, O_NONBLOCK | O_CLOEXEC) < 0)
		return -1;
	loop_tlist_init(&f->loop, &f->guard_tl, 0);
	loop_timer_init(&f->guard, on_guard, f);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	loop_free(&f->loop);
	for (int i = 0; i < 2; i++) {
		if (f->sp[i] >= 0)
			close(f->sp[i]);
		if (f->pp[i] >= 0)
			close(f->pp[i]);
	}
	free(f);
	return 0;
}

/* Arm the guard at now + ms (it stops the loop and marks the fixture). */
static void guard(struct fixture *f, int64_t ms)
{
	f->loop.now = clock_ms();
	loop_timer_start_at(&f->guard_tl, &f->guard, f->loop.now + ms);
}

static void run(struct fixture *f)
{
	assert_int_equal(loop_run(&f->loop), 0);
	f->loop.stop = false; /* so that a test may run it again */
}

/* ---- watches ------------------------------------------------------------ */

struct io_probe {
	int fires;
	uint32_t events[16];
	int stop_after; /* stop the loop after this many fires (0: never) */
	int drain;      /* read what is readable */
};

static void on_io(struct loop *l, struct loop_watch *w, uint32_t events)
{
	struct io_probe *p = w->data;
	if (p->fires < 16)
		p->events[p->fires] = events;
	p->fires++;
	if (p->drain && (events & EPOLLIN)) {
		char buf[64];
		while (read(w->fd, buf, sizeof buf) > 0) {
		}
	}
	if (p->stop_after && p->fires >= p->stop_after)
		loop_stop(l);
}

static void watch_fires_on_read_readiness_of_a_socketpair(void **state)
{
	struct fixture *f = *state;
	struct loop_watch w = {0};
	struct io_probe p = {.stop_after = 1, .drain = 1};
	assert_int_equal(loop_watch_add(&f->loop, &w, f->sp[0], EPOLLIN, on_io, &p), 0);
	assert_true(loop_watch_active(&w));
	assert_int_equal(w.fd, f->sp[0]);
	assert_int_equal(write(f->sp[1], "x", 1), 1);
	guard(f, GUARD_MS);
	run(f);
	assert_false(f->guard_fired);
	assert_int_equal(p.fires, 1);
	assert_true(p.events[0] & EPOLLIN);
	assert_false(p.events[0] & EPOLLOUT);
}

static void watch_fires_on_read_readiness_of_a_pipe(void **state)
{
	struct fixture *f = *state;
	struct loop_watch w = {0};
	struct io_probe p = {.stop_after = 1, .drain = 1};
	assert_int_equal(loop_watch_add(&f->loop, &w, f->pp[0], EPOLLIN, on_io, &p), 0);
	assert_int_equal(write(f->pp[1], "hello", 5), 5);
	guard(f, GUARD_MS);
	run(f);
	assert_false(f->guard_fired);
	assert_int_equal(p.fires, 1);
	assert_true(p.events[0] & EPOLLIN);
}

static void watch_reports_hangup_when_the_pipe_writer_closes(void **state)
{
	struct fixture *f = *state;
	struct loop_watch w = {0};
	struct io_probe p = {.stop_after = 1};
	assert_int_equal(loop_watch_add(&f->loop, &w, f->pp[0], EPOLLIN, on_io, &p), 0);
	close(f->pp[1]);
	f->pp[1] = -1;
	guard(f, GUARD_MS);
	run(f);
	assert_int_equal(p.fires, 1);
	assert_true(p.events[0] & EPOLLHUP);
}

static void watch_does_not_fire_without_readiness(void **state)
{
	struct fixture *f = *state;
	struct loop_watch w = {0};
	struct io_probe p = {0};
	assert_int_equal(loop_watch_add(&f->loop, &w, f->sp[0], EPOLLIN, on_io, &p), 0);
	guard(f, 30);
	run(f);
	assert_true(f->guard_fired);
	assert_int_equal(p.fires, 0);
}

static void watch_fires_on_write_readiness(void **state)
{
	struct fixture *f = *state;
	struct loop_watch w = {0};
	struct io_probe p = {.stop_after = 1};
	assert_int_equal(loop_watch_add(&f->loop, &w, f->pp[1], EPOLLOUT, on_io, &p), 0);
	guard(f, GUARD_MS);
	run(f);
	assert_false(f->guard_fired);
	assert_int_equal(p.fires, 1);
	assert_true(p.events[0] & EPOLLOUT);
}

static void level_triggered_watch_fires_again_until_drained(void **state)
{
	struct fixture *f = *state;
	struct loop_watch w = {0};
	struct io_probe p = {.stop_after = 3}; /* never reads */
	assert_int_equal(loop_watch_add(&f->loop, &w, f->sp[0], EPOLLIN, on_io, &p), 0);
	assert_int_equal(write(f->sp[1], "x", 1), 1);
	guard(f, GUARD_MS);
	run(f);
	assert_false(f->guard_fired);
	assert_int_equal(p.fires, 3);
}

static void edge_triggered_watch_fires_once_per_edge(void **state)
{
	struct fixture *f = *state;
	struct loop_watch w = {0};
	struct io_probe p = {0}; /* never reads */
	assert_int_equal(loop_watch_add(&f->loop, &w, f->sp[0], EPOLLIN | EPOLLET, on_io, &p), 0);
	assert_int_equal(write(f->sp[1], "x", 1), 1);
	guard(f, 50);
	run(f);
	assert_int_equal(p.fires, 1);
	/* New data is a new edge. */
	assert_int_equal(write(f->sp[1], "y", 1), 1);
	guard(f, 50);
	run(f);
	assert_int_equal(p.fires, 2);
}

static void mod_switches_the_events_a_watch_waits_for(void **state)
{
	struct fixture *f = *state;
	struct loop_watch w = {0};
	struct io_probe p = {.stop_after = 1, .drain = 1};
	/* Nothing to read: the read interest alone would never fire. */
	assert_int_equal(loop_watch_add(&f->loop, &w, f->sp[0], EPOLLIN, on_io, &p), 0);
	assert_int_equal(loop_watch_mod(&f->loop, &w, EPOLLOUT), 0);
	assert_int_equal(w.events, EPOLLOUT);
	guard(f, GUARD_MS);
	run(f);
	assert_false(f->guard_fired);
	assert_int_equal(p.fires, 1);
	assert_true(p.events[0] & EPOLLOUT);
	assert_false(p.events[0] & EPOLLIN);

	/* Back to read only: writable no longer fires, readable does. */
	assert_int_equal(loop_watch_mod(&f->loop, &w, EPOLLIN), 0);
	guard(f, 30);
	run(f);
	assert_true(f->guard_fired);
	assert_int_equal(p.fires, 1);

	f->guard_fired = 0;
	p.stop_after = 2;
	assert_int_equal(write(f->sp[1], "x", 1), 1);
	guard(f, GUARD_MS);
	run(f);
	assert_false(f->guard_fired);
	assert_int_equal(p.fires, 2);
	assert_true(p.events[1] & EPOLLIN);
	assert_false(p.events[1] & EPOLLOUT);
}

static void mod_to_the_same_events_is_a_no_op(void **state)
{
	struct fixture *f = *state;
	struct loop_watch w = {0};
	struct io_probe p = {0};
	assert_int_equal(loop_watch_add(&f->loop, &w, f->sp[0], EPOLLIN, on_io, &p), 0);
	assert_int_equal(loop_watch_mod(&f->loop, &w, EPOLLIN), 0);
	assert_int_equal(loop_watch_mod(&f->loop, &w, EPOLLIN | EPOLLOUT), 0);
	assert_int_equal(w.events, EPOLLIN | EPOLLOUT);
}

static void del_stops_events_and_deactivates_the_watch(void **state)
{
	struct fixture *f = *state;
	struct loop_watch w = {0};
	struct io_probe p = {.stop_after = 1, .drain = 1};
	assert_int_equal(loop_watch_add(&f->loop, &w, f->sp[0], EPOLLIN, on_io, &p), 0);
	assert_int_equal(write(f->sp[1], "x", 1), 1);
	loop_watch_del(&f->loop, &w);
	assert_false(loop_watch_active(&w));
	loop_watch_del(&f->loop, &w); /* twice is harmless */
	guard(f, 30);
	run(f);
	assert_true(f->guard_fired);
	assert_int_equal(p.fires, 0);

	/* The fd stays open and can be watched again. */
	f->guard_fired = 0;
	assert_int_equal(loop_watch_add(&f->loop, &w, f->sp[0], EPOLLIN, on_io, &p), 0);
	guard(f, GUARD_MS);
	run(f);
	assert_false(f->guard_fired);
	assert_int_equal(p.fires, 1);
}

static void del_of_a_watch_never_added_is_harmless(void **state)
{
	struct fixture *f = *state;
	struct loop_watch w;
	memset(&w, 0, sizeof w);
	loop_watch_del(&f->loop, &w);
	assert_false(loop_watch_active(&w));
}

static void add_of_a_bad_fd_fails_and_leaves_the_watch_inactive(void **state)
{
	struct fixture *f = *state;
	struct loop_watch w = {0}, w2 = {0};
	struct io_probe p = {0};
	assert_int_equal(loop_watch_add(&f->loop, &w, -1, EPOLLIN, on_io, &p), -EBADF);
	assert_false(loop_watch_active(&w));
	loop_watch_del(&f->loop, &w);

	/* The same fd twice: the second add fails, the first stays. */
	assert_int_equal(loop_watch_add(&f->loop, &w, f->sp[0], EPOLLIN, on_io, &p), 0);
	assert_int_equal(loop_watch_add(&f->loop, &w2, f->sp[0], EPOLLIN, on_io, &p), -EEXIST);
	assert_false(loop_watch_active(&w2));
	assert_true(loop_watch_active(&w));
}

struct many {
	int fired;
	int total;
};

static void on_many(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)events;
	struct many *m = w->data;
	char c;
	assert_int_equal(read(w->fd, &c, 1), 1);
	loop_watch_del(l, w);
	if (++m->fired == m->total)
		loop_stop(l);
}

static void more_ready_watches_than_one_batch_all_fire(void **state)
{
	struct fixture *f = *state;
	enum { N = 600 }; /* more than one epoll_wait batch */
	int (*fds)[2] = calloc(N, sizeof *fds);
	struct loop_watch *w = calloc(N, sizeof *w);
	assert_non_null(fds);
	assert_non_null(w);
	struct many m = {.total = N};
	int n = 0;
	for (; n < N; n++) {
		if (pipe2(fds[n], O_NONBLOCK | O_CLOEXEC) < 0)
			break;
		assert_int_equal(loop_watch_add(&f->loop, &w[n], fds[n][0], EPOLLIN, on_many, &m), 0);
		assert_int_equal(write(fds[n][1], "x", 1), 1);
	}
	if (n < N) {
		for (int i = 0; i < n; i++) {
			loop_watch_del(&f->loop, &w[i]);
			close(fds[i][0]);
			close(fds[i][1]);
		}
		free(fds);
		free(w);
		skip(); /* not enough descriptors */
	}
	guard(f, GUARD_MS);
	run(f);
	assert_false(f->guard_fired);
	assert_int_equal(m.fired, N);
	for (int i = 0; i < N; i++) {
		assert_false(loop_watch_active(&w[i]));
		close(fds[i][0]);
		close(fds[i][1]);
	}
	free(fds);
	free(w);
}

static void mod_of_a_closed_fd_fails_and_keeps_the_events(void **state)
{
	struct fixture *f = *state;
	struct loop_watch w = {0};
	struct io_probe p = {0};
	assert_int_equal(loop_watch_add(&f->loop, &w, f->sp[0], EPOLLIN, on_io, &p), 0);
	close(f->sp[0]);
	f->sp[0] = -1;
	assert_true(loop_watch_mod(&f->loop, &w, EPOLLOUT) < 0);
	assert_int_equal(w.events, EPOLLIN);
}

/* ---- timers ------------------------------------------------------------- */

struct tprobe {
	int order[16];
	int n;
	int stop_at;    /* stop the loop when n reaches this */
	int64_t late;   /* largest deadline overrun seen */
	int early;      /* fired before its deadline */
};

struct tnode {
	struct loop_timer t;
	int id;
	struct tprobe *p;
	struct loop_timer *stop_other; /* stop this timer when fired */
	struct loop_tlist *restart_on; /* restart self on this list */
	int restarts;
};

static void on_timer(struct loop *l, struct loop_timer *t)
{
	struct tnode *tn = t->data;
	struct tprobe *p = tn->p;
	assert_false(loop_timer_active(t)); /* unlinked before its callback */
	if (t->deadline > l->now)
		p->early = 1;
	if (l->now - t->deadline > p->late)
		p->late = l->now - t->deadline;
	if (p->n < 16)
		p->order[p->n] = tn->id;
	p->n++;
	if (tn->stop_other)
		loop_timer_stop(tn->stop_other);
	if (tn->restart_on && tn->restarts-- > 0)
		loop_timer_start(l, tn->restart_on, t);
	if (p->n == p->stop_at)
		loop_stop(l);
}

static void tnode_init(struct tnode *tn, int id, struct tprobe *p)
{
	memset(tn, 0, sizeof *tn);
	tn->id = id;
	tn->p = p;
	loop_timer_init(&tn->t, on_timer, tn);
}

static void timers_on_a_fixed_duration_list_fire_in_start_order(void **state)
{
	struct fixture *f = *state;
	struct loop_tlist tl;
	struct tprobe p = {.stop_at = 3};
	struct tnode a, b, c;
	tnode_init(&a, 1, &p);
	tnode_init(&b, 2, &p);
	tnode_init(&c, 3, &p);
	loop_tlist_init(&f->loop, &tl, 20);

	int64_t t0 = clock_ms();
	f->loop.now = t0;
	loop_timer_start(&f->loop, &tl, &a.t);
	assert_true(loop_timer_active(&a.t));
	assert_true(a.t.deadline == t0 + 20);
	f->loop.now = t0 + 5;
	loop_timer_start(&f->loop, &tl, &b.t);
	f->loop.now = t0 + 10;
	loop_timer_start(&f->loop, &tl, &c.t);
	assert_true(c.t.deadline == t0 + 30);
	f->loop.now = t0;
	loop_timer_start_at(&f->guard_tl, &f->guard, t0 + GUARD_MS);

	run(f);
	assert_false(f->guard_fired);
	assert_int_equal(p.n, 3);
	assert_int_equal(p.order[0], 1);
	assert_int_equal(p.order[1], 2);
	assert_int_equal(p.order[2], 3);
	assert_false(p.early);
	assert_true(clock_ms() - t0 >= 30);
	assert_true(f->loop.now >= t0 + 30);
	loop_tlist_detach(&f->loop, &tl);
}

static void restarting_a_running_timer_moves_it_to_the_back(void **state)
{
	struct fixture *f = *state;
	struct loop_tlist tl;
	struct tprobe p = {.stop_at = 2};
	struct tnode a, b;
	tnode_init(&a, 1, &p);
	tnode_init(&b, 2, &p);
	loop_tlist_init(&f->loop, &tl, 20);
	int64_t t0 = clock_ms();
	f->loop.now = t0;
	loop_timer_start(&f->loop, &tl, &a.t);
	loop_timer_start(&f->loop, &tl, &b.t);
	f->loop.now = t0 + 5;
	loop_timer_start(&f->loop, &tl, &a.t); /* touch: a is now last */
	assert_true(a.t.deadline == t0 + 25);
	guard(f, GUARD_MS);
	run(f);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.order[0], 2);
	assert_int_equal(p.order[1], 1);
	assert_false(p.early);
	loop_tlist_detach(&f->loop, &tl);
}

static void timers_with_own_deadlines_fire_in_deadline_order(void **state)
{
	struct fixture *f = *state;
	struct loop_tlist tl;
	struct tprobe p = {.stop_at = 6};
	struct tnode n[6];
	for (int i = 0; i < 6; i++)
		tnode_init(&n[i], i + 1, &p);
	loop_tlist_init(&f->loop, &tl, 0);
	int64_t t0 = clock_ms();
	f->loop.now = t0;
	/* Inserted out of order, with a tie (id 2 then id 4 at +10). */
	loop_timer_start_at(&tl, &n[0].t, t0 + 40);
	loop_timer_start_at(&tl, &n[1].t, t0 + 10);
	loop_timer_start_at(&tl, &n[2].t, t0 + 30);
	loop_timer_start_at(&tl, &n[3].t, t0 + 10);
	loop_timer_start_at(&tl, &n[4].t, t0 + 5);
	loop_timer_start(&f->loop, &tl, &n[5].t); /* no duration: due now */
	assert_true(n[5].t.deadline == t0);
	loop_timer_start_at(&f->guard_tl, &f->guard, t0 + GUARD_MS);

	run(f);
	assert_false(f->guard_fired);
	const int want[6] = {6, 5, 2, 4, 3, 1};
	assert_int_equal(p.n, 6);
	for (int i = 0; i < 6; i++)
		assert_int_equal(p.order[i], want[i]);
	assert_false(p.early);
	assert_true(clock_ms() - t0 >= 40);
	loop_tlist_detach(&f->loop, &tl);
}

static void rescheduling_a_deadline_timer_reorders_it(void **state)
{
	struct fixture *f = *state;
	struct loop_tlist tl;
	struct tprobe p = {.stop_at = 3};
	struct tnode a, b, c;
	tnode_init(&a, 1, &p);
	tnode_init(&b, 2, &p);
	tnode_init(&c, 3, &p);
	loop_tlist_init(&f->loop, &tl, 0);
	int64_t t0 = clock_ms();
	f->loop.now = t0;
	loop_timer_start_at(&tl, &a.t, t0 + 5);
	loop_timer_start_at(&tl, &b.t, t0 + 10);
	loop_timer_start_at(&tl, &c.t, t0 + 15);
	loop_timer_start_at(&tl, &a.t, t0 + 20); /* later */
	loop_timer_start_at(&tl, &c.t, t0 + 1);  /* sooner */
	guard(f, GUARD_MS);
	run(f);
	assert_int_equal(p.n, 3);
	assert_int_equal(p.order[0], 3);
	assert_int_equal(p.order[1], 2);
	assert_int_equal(p.order[2], 1);
	assert_false(p.early);
	loop_tlist_detach(&f->loop, &tl);
}

static void the_soonest_timer_of_all_lists_sets_the_wait(void **state)
{
	struct fixture *f = *state;
	struct loop_tlist slow, fast;
	struct tprobe p = {.stop_at = 1};
	struct tnode a, b;
	tnode_init(&a, 1, &p);
	tnode_init(&b, 2, &p);
	loop_tlist_init(&f->loop, &slow, 1000);
	loop_tlist_init(&f->loop, &fast, 10);
	int64_t t0 = clock_ms();
	f->loop.now = t0;
	loop_timer_start(&f->loop, &slow, &a.t);
	loop_timer_start(&f->loop, &fast, &b.t);
	guard(f, GUARD_MS);
	run(f);
	assert_int_equal(p.n, 1);
	assert_int_equal(p.order[0], 2);
	assert_true(clock_ms() - t0 < 800);
	assert_true(loop_timer_active(&a.t));
	loop_tlist_detach(&f->loop, &slow);
	loop_tlist_detach(&f->loop, &fast);
}

static void shorter_duration_pulls_running_deadlines_in(void **state)
{
	struct fixture *f = *state;
	struct loop_tlist tl;
	struct tprobe p = {.stop_at = 2};
	struct tnode a, b;
	tnode_init(&a, 1, &p);
	tnode_init(&b, 2, &p);
	loop_tlist_init(&f->loop, &tl, 200);
	int64_t t0 = clock_ms();
	f->loop.now = t0;
	loop_timer_start(&f->loop, &tl, &a.t); /* t0 + 200 */
	loop_tlist_set(&f->loop, &tl, 10);
	assert_true(tl.duration_ms == 10);
	assert_true(a.t.deadline == t0 + 10); /* no timer outlives the new duration */
	f->loop.now = t0 + 1;
	loop_timer_start(&f->loop, &tl, &b.t); /* t0 + 11: after a */
	assert_true(b.t.deadline == t0 + 11);
	guard(f, GUARD_MS);
	run(f);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.order[0], 1);
	assert_int_equal(p.order[1], 2);
	assert_false(p.early);
	loop_tlist_detach(&f->loop, &tl);
}

struct self_restart {
	struct loop_timer t;
	struct loop_tlist *tl;
	int fired;
	int passes; /* loop iterations, counted by before_sleep */
};

static void self_restart_fire(struct loop *l, struct loop_timer *t)
{
	struct self_restart *r = t->data;
	if (++r->fired == 5) {
		loop_stop(l);
		return;
	}
	loop_timer_start_at(r->tl, t, l->now); /* due again at once */
}

static void count_pass(struct loop *l, void *arg)
{
	(void)l;
	((struct self_restart *)arg)->passes++;
}

/* A timer restarted at "now" from its own callback must wait for the next
 * pass: firing it again in the same pass would starve I/O forever. */
static void timer_restarted_at_now_fires_once_per_pass(void **state)
{
	struct fixture *f = *state;
	struct loop_tlist tl;
	struct self_restart r = {.tl = &tl};
	loop_tlist_init(&f->loop, &tl, 0);
	loop_timer_init(&r.t, self_restart_fire, &r);
	f->loop.before_sleep = count_pass;
	f->loop.before_sleep_arg = &r;
	guard(f, GUARD_MS);
	loop_timer_start_at(&tl, &r.t, f->loop.now);
	run(f);
	f->loop.before_sleep = NULL;
	assert_int_equal(r.fired, 5);
	assert_true(r.passes >= 5);
	loop_timer_stop(&r.t);
	loop_tlist_detach(&f->loop, &tl);
}

static void stopped_timer_never_fires(void **state)
{
	struct fixture *f = *state;
	struct loop_tlist tl;
	struct tprobe p = {.stop_at = 1};
	struct tnode a, b, never;
	tnode_init(&a, 1, &p);
	tnode_init(&b, 2, &p);
	tnode_init(&never, 3, &p);
	loop_timer_stop(&never.t); /* never started: harmless */
	assert_false(loop_timer_active(&never.t));
	loop_tlist_init(&f->loop, &tl, 0);
	int64_t t0 = clock_ms();
	f->loop.now = t0;
	loop_timer_start_at(&tl, &a.t, t0 + 5);
	loop_timer_start_at(&tl, &b.t, t0 + 20);
	loop_timer_stop(&a.t);
	assert_false(loop_timer_active(&a.t));
	loop_timer_stop(&a.t); /* twice */
	guard(f, GUARD_MS);
	run(f);
	assert_int_equal(p.n, 1);
	assert_int_equal(p.order[0], 2);
	loop_tlist_detach(&f->loop, &tl);
}

static void timer_stopped_by_an_earlier_callback_of_the_same_run_never_fires(void **state)
{
	struct fixture *f = *state;
	struct loop_tlist tl;
	struct tprobe p = {0};
	struct tnode a, b, c;
	tnode_init(&a, 1, &p);
	tnode_init(&b, 2, &p);
	tnode_init(&c, 3, &p);
	a.stop_other = &b.t;
	loop_tlist_init(&f->loop, &tl, 10);
	loop_timer_start(&f->loop, &tl, &a.t);
	loop_timer_start(&f->loop, &tl, &b.t); /* same deadline as a */
	f->loop.now += 20;
	loop_timer_start(&f->loop, &tl, &c.t);
	f->loop.now -= 20;
	p.stop_at = 2; /* a and c */
	guard(f, GUARD_MS);
	run(f);
	assert_false(f->guard_fired);
	assert_int_equal(p.n, 2);
	assert_int_equal(p.order[0], 1);
	assert_int_equal(p.order[1], 3);
	loop_tlist_detach(&f->loop, &tl);
}

static void timer_restarted_from_its_callback_fires_again_later(void **state)
{
	struct fixture *f = *state;
	struct loop_tlist tl;
	struct tprobe p = {.stop_at = 3};
	struct tnode a;
	tnode_init(&a, 1, &p);
	a.restart_on = &tl;
	a.restarts = 10;
	loop_tlist_init(&f->loop, &tl, 10);
	int64_t t0 = clock_ms();
	f->loop.now = t0;
	loop_timer_start(&f->loop, &tl, &a.t);
	guard(f, GUARD_MS);
	run(f);
	assert_false(f->guard_fired);
	assert_int_equal(p.n, 3);
	assert_true(clock_ms() - t0 >= 30);
	assert_false(p.early);
	assert_true(loop_timer_active(&a.t));
	loop_tlist_detach(&f->loop, &tl);
}

static void detached_list_never_fires(void **state)
{
	struct fixture *f = *state;
	struct loop_tlist tl;
	struct tprobe p = {0};
	struct tnode a;
	tnode_init(&a, 1, &p);
	loop_tlist_init(&f->loop, &tl, 0);
	loop_timer_start_at(&tl, &a.t, f->loop.now);
	loop_tlist_detach(&f->loop, &tl);
	loop_tlist_detach(&f->loop, &tl); /* twice is harmless */
	guard(f, 30);
	run(f);
	assert_true(f->guard_fired);
	assert_int_equal(p.n, 0);
}

/* ---- deferred free ------------------------------------------------------ */

struct owner {
	struct loop_watch w;
	struct loop_deferred d;
	struct owner *peer;
	int *fired;
	int *freed;               /* per-owner flags, outside the owners */
	int idx;
	int victim_freed_in_batch; /* the victim's flag, read inside the batch */
};

static void owner_free(void *p)
{
	struct owner *o = p;
	o->freed[o->idx]++;
	free(o);
}

/* The first of two owners to fire closes the other (as a session closing
 * its peer would): deletes its watch and frees it after the batch. */
static void on_owner_io(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)events;
	struct owner *o = w->data;
	(*o->fired)++;
	if (o->peer) {
		struct owner *victim = o->peer;
		victim->peer = NULL;
		o->peer = NULL;
		loop_watch_del(l, &victim->w);
		loop_defer_free(l, &victim->d, owner_free, victim);
		o->victim_freed_in_batch = o->freed[victim->idx];
	}
	loop_stop(l);
}

static void deferred_free_runs_after_the_batch(void **state)
{
	struct fixture *f = *state;
	int fired = 0, freed[2] = {0, 0};
	int sp2[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sp2), 0);
	struct owner *o[2];
	for (int i = 0; i < 2; i++) {
		o[i] = calloc(1, sizeof *o[i]);
		assert_non_null(o[i]);
		o[i]->fired = &fired;
		o[i]->freed = freed;
		o[i]->idx = i;
		o[i]->victim_freed_in_batch = -1;
	}
	o[0]->peer = o[1];
	o[1]->peer = o[0];
	assert_int_equal(loop_watch_add(&f->loop, &o[0]->w, f->sp[0], EPOLLIN, on_owner_io, o[0]), 0);
	assert_int_equal(loop_watch_add(&f->loop, &o[1]->w, sp2[0], EPOLLIN, on_owner_io, o[1]), 0);
	/* Both readable before the wait: one batch names both. */
	assert_int_equal(write(f->sp[1], "a", 1), 1);
	assert_int_equal(write(sp2[1], "b", 1), 1);
	guard(f, GUARD_MS);
	run(f); /* a use of the victim after its free is an ASan report */
	assert_false(f->guard_fired);
	assert_int_equal(fired, 1); /* the victim's pending event was skipped */
	assert_int_equal(freed[0] + freed[1], 1);
	struct owner *survivor = freed[0] ? o[1] : o[0];
	assert_int_equal(survivor->victim_freed_in_batch, 0); /* not during the batch */
	assert_true(loop_watch_active(&survivor->w));
	loop_watch_del(&f->loop, &survivor->w);
	free(survivor);
	close(sp2[0]);
	close(sp2[1]);
}

static int deferred_calls;
static void count_free(void *p)
{
	(void)p;
	deferred_calls++;
}

static void deferred_frees_run_at_loop_free_if_the_loop_never_ran(void **state)
{
	struct fixture *f = *state;
	struct loop_deferred d1, d2;
	deferred_calls = 0;
	loop_defer_free(&f->loop, &d1, count_free, NULL);
	loop_defer_free(&f->loop, &d2, count_free, NULL);
	assert_int_equal(deferred_calls, 0);
	loop_free(&f->loop);
	assert_int_equal(deferred_calls, 2);
	assert_int_equal(loop_init(&f->loop), 0);
	loop_tlist_init(&f->loop, &f->guard_tl, 0);
}

static void on_timer_defers(struct loop *l, struct loop_timer *t)
{
	struct loop_deferred *d = t->data;
	loop_defer_free(l, d, count_free, NULL);
	assert_int_equal(deferred_calls, 0);
	loop_stop(l);
}

static void deferred_free_from_a_timer_runs_before_the_loop_returns(void **state)
{
	struct fixture *f = *state;
	struct loop_tlist tl;
	struct loop_timer t;
	struct loop_deferred d;
	deferred_calls = 0;
	loop_tlist_init(&f->loop, &tl, 0);
	loop_timer_init(&t, on_timer_defers, &d);
	loop_timer_start_at(&tl, &t, f->loop.now);
	guard(f, GUARD_MS);
	run(f);
	assert_false(f->guard_fired);
	assert_int_equal(deferred_calls, 1);
	loop_tlist_detach(&f->loop, &tl);
}

/* ---- stop --------------------------------------------------------------- */

static int hook_calls;
static void stop_hook(struct loop *l, void *arg)
{
	assert_ptr_equal(arg, &hook_calls);
	hook_calls++;
	loop_stop(l);
}

static void stop_from_before_sleep_returns_without_waiting(void **state)
{
	struct fixture *f = *state;
	/* No watch, no timer: a wait would block forever. */
	hook_calls = 0;
	f->loop.before_sleep = stop_hook;
	f->loop.before_sleep_arg = &hook_calls;
	run(f);
	assert_int_equal(hook_calls, 1);
}

static int counting_hook_calls;
static void counting_hook(struct loop *l, void *arg)
{
	(void)l;
	(void)arg;
	counting_hook_calls++;
}

static void before_sleep_runs_before_every_wait(void **state)
{
	struct fixture *f = *state;
	struct loop_tlist tl;
	struct tprobe p = {.stop_at = 3};
	struct tnode a;
	tnode_init(&a, 1, &p);
	a.restart_on = &tl;
	a.restarts = 10;
	loop_tlist_init(&f->loop, &tl, 5);
	loop_timer_start(&f->loop, &tl, &a.t);
	counting_hook_calls = 0;
	f->loop.before_sleep = counting_hook;
	guard(f, GUARD_MS);
	run(f);
	assert_int_equal(p.n, 3);
	assert_true(counting_hook_calls >= 3);
	f->loop.before_sleep = NULL;
	loop_tlist_detach(&f->loop, &tl);
}

static void stop_from_a_callback_returns_zero(void **state)
{
	struct fixture *f = *state;
	struct loop_watch w = {0};
	struct io_probe p = {.stop_after = 1};
	assert_int_equal(loop_watch_add(&f->loop, &w, f->sp[1], EPOLLOUT, on_io, &p), 0);
	guard(f, GUARD_MS);
	assert_int_equal(loop_run(&f->loop), 0);
	assert_int_equal(p.fires, 1);
}

/* ---- shared/list.h: the intrusive list the timers and sessions use ---- */

struct item {
	int v;
	struct list_node link; /* not the first member: found by container_of */
};

static void list_keeps_order_and_finds_the_owner(void **state)
{
	(void)state;
	struct list_node head, *n, *tmp;
	struct item it[4];
	list_init(&head);
	assert_true(list_empty(&head));
	for (int i = 0; i < 4; i++) {
		it[i].v = i;
		it[i].link.next = NULL;
		assert_false(list_linked(&it[i].link));
		if (i % 2)
			list_insert_tail(&head, &it[i].link);
		else
			list_insert_head(&head, &it[i].link);
	}
	int want[] = {2, 0, 1, 3}, k = 0;
	list_foreach(n, &head) {
		assert_int_equal(list_entry(n, struct item, link)->v, want[k++]);
	}
	assert_int_equal(k, 4);
	list_foreach_reverse(n, &head) {
		assert_int_equal(list_entry(n, struct item, link)->v, want[--k]);
	}
	/* Removing while walking: every even item goes. */
	list_foreach_safe(n, tmp, &head) {
		if (list_entry(n, struct item, link)->v % 2 == 0)
			list_remove(n);
	}
	assert_false(list_linked(&it[0].link));
	assert_true(list_linked(&it[1].link));
	assert_ptr_equal(list_entry(head.next, struct item, link), &it[1]);
	assert_ptr_equal(list_entry(head.prev, struct item, link), &it[3]);
	list_remove(&it[1].link);
	list_remove(&it[3].link);
	assert_true(list_empty(&head));
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(watch_fires_on_read_readiness_of_a_socketpair),
		T(watch_fires_on_read_readiness_of_a_pipe),
		T(watch_reports_hangup_when_the_pipe_writer_closes),
		T(watch_does_not_fire_without_readiness),
		T(watch_fires_on_write_readiness),
		T(level_triggered_watch_fires_again_until_drained),
		T(edge_triggered_watch_fires_once_per_edge),
		T(mod_switches_the_events_a_watch_waits_for),
		T(mod_to_the_same_events_is_a_no_op),
		T(del_stops_events_and_deactivates_the_watch),
		T(del_of_a_watch_never_added_is_harmless),
		T(add_of_a_bad_fd_fails_and_leaves_the_watch_inactive),
		T(more_ready_watches_than_one_batch_all_fire),
		T(mod_of_a_closed_fd_fails_and_keeps_the_events),
		T(timers_on_a_fixed_duration_list_fire_in_start_order),
		T(restarting_a_running_timer_moves_it_to_the_back),
		T(timers_with_own_deadlines_fire_in_deadline_order),
		T(rescheduling_a_deadline_timer_reorders_it),
		T(the_soonest_timer_of_all_lists_sets_the_wait),
		T(shorter_duration_pulls_running_deadlines_in),
		T(timer_restarted_at_now_fires_once_per_pass),
		T(stopped_timer_never_fires),
		T(timer_stopped_by_an_earlier_callback_of_the_same_run_never_fires),
		T(timer_restarted_from_its_callback_fires_again_later),
		T(detached_list_never_fires),
		T(deferred_free_runs_after_the_batch),
		T(deferred_frees_run_at_loop_free_if_the_loop_never_ran),
		T(deferred_free_from_a_timer_runs_before_the_loop_returns),
		T(stop_from_before_sleep_returns_without_waiting),
		T(before_sleep_runs_before_every_wait),
		T(stop_from_a_callback_returns_zero),
		cmocka_unit_test(list_keeps_order_and_finds_the_owner),
	};
	return cmocka_run_group_tests_name("loop", tests, NULL, NULL);
}
