/*
 * Unit tests for shared/auth under load, on a real loop and helper thread
 * (yescrypt checks against the dummy hash, about 20 ms each): a source that
 * queues many checks does not keep another source waiting behind them, and
 * checks past the per-source bound wait for a place instead of failing.
 * Every test arms a guard timer, so that a lost answer fails the test
 * instead of hanging it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../shared/clock.h"
#include "../../shared/auth.h"

#define GUARD_MS 60000
#define FLOOD (AUTH_MAX_PER_SOURCE + 8)

struct fixture {
	struct loop loop;
	struct loop_tlist guard_tl;
	struct loop_timer guard;
	bool guard_fired;
	struct auth *auth;
	int answers, want;
	int order_of_b; /* the position of B's answer among all answers */
	int flood_answered;
};

struct call {
	struct fixture *f;
	char who;
	bool ok;
};

static void on_guard(struct loop *l, struct loop_timer *t)
{
	struct fixture *f = t->data;
	f->guard_fired = true;
	loop_stop(l);
}

static void on_answer(void *arg, bool ok)
{
	struct call *c = arg;
	struct fixture *f = c->f;
	c->ok = ok;
	assert_true(c->who != 'X'); /* cancelled */
	if (c->who == 'B')
		f->order_of_b = f->answers;
	else
		f->flood_answered++;
	if (++f->answers == f->want)
		loop_stop(&f->loop);
}

static struct sockaddr_storage addr(const char *text)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	s4->sin_family = AF_INET;
	assert_int_equal(inet_pton(AF_INET, text, &s4->sin_addr), 1);
	return ss;
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	if (!f || loop_init(&f->loop) < 0)
		return -1;
	f->loop.now = clock_ms();
	loop_tlist_init(&f->loop, &f->guard_tl, 0);
	loop_timer_init(&f->guard, on_guard, f);
	loop_timer_start_at(&f->guard_tl, &f->guard, f->loop.now + GUARD_MS);
	if (auth_new(&f->loop, &f->auth) < 0)
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	auth_free(f->auth);
	loop_free(&f->loop);
	free(f);
	return 0;
}

/* FLOOD checks of unknown names (one each, so that no user's back-off
 * spaces them) with wrong passwords from one source (A), each of which
 * must be queued. */
static void flood_from(struct fixture *f, const struct sockaddr_storage *a, struct call *calls,
                       struct auth_job **jobs)
{
	for (int i = 0; i < FLOOD; i++) {
		char pass[32], name[32];
		snprintf(pass, sizeof pass, "guess-%d", i);
		snprintf(name, sizeof name, "nobody-%d", i);
		calls[i] = (struct call){.f = f, .who = 'A'};
		assert_int_equal(auth_check_from(f->auth, a, name, -1, NULL, pass, on_answer,
		                                 &calls[i], &jobs[i]),
		                 AUTH_PENDING);
	}
}

static void one_source_does_not_keep_another_waiting(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_storage a = addr("192.0.2.1"), b = addr("198.51.100.1");
	struct call calls[FLOOD + 1];
	struct auth_job *jobs[FLOOD + 1];
	f->want = FLOOD + 1;
	flood_from(f, &a, calls, jobs);
	calls[FLOOD] = (struct call){.f = f, .who = 'B'};
	assert_int_equal(auth_check_from(f->auth, &b, "somebody", -1, NULL, "pw", on_answer,
	                                 &calls[FLOOD], &jobs[FLOOD]),
	                 AUTH_PENDING);
	assert_int_equal(loop_run(&f->loop), 0);
	assert_false(f->guard_fired);
	/* B waits for the check running when it came, and at most one more of
	 * A's: not for the FLOOD checks A queued before it. */
	assert_in_range(f->order_of_b, 0, 2);
	/* past the per-source bound, A's checks waited for a place: all are
	 * answered, as failures (unknown name) */
	assert_int_equal(f->flood_answered, FLOOD);
	for (int i = 0; i <= FLOOD; i++)
		assert_false(calls[i].ok);
}

static void cancelled_checks_are_never_answered(void **state)
{
	struct fixture *f = *state;
	struct sockaddr_storage a = addr("192.0.2.1");
	struct call calls[FLOOD];
	struct auth_job *jobs[FLOOD];
	f->want = FLOOD / 2;
	flood_from(f, &a, calls, jobs);
	/* queued, running and waiting for a place: every kind is cancelled */
	for (int i = 1; i < FLOOD; i += 2) {
		auth_cancel(f->auth, jobs[i]);
		calls[i].who = 'X';
	}
	assert_int_equal(loop_run(&f->loop), 0);
	assert_false(f->guard_fired);
	assert_int_equal(f->flood_answered, FLOOD / 2);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(one_source_does_not_keep_another_waiting),
		T(cancelled_checks_are_never_answered),
	};
	return cmocka_run_group_tests_name("auth", tests, NULL, NULL);
}
