/*
 * Unit tests for worker/pipes, the splice pipe pool, on real pipes: the
 * capacity asked for (rounded by the kernel), reuse of a returned pipe,
 * the bound on spares (the rest are closed: their descriptors disappear),
 * a spare smaller than a new size is replaced, a pipe that still holds
 * bytes is discarded, never pooled, the count of open pipes (the worker's
 * descriptor budget), and no new pipe when the budget has no room.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include "../../worker/pipes.h"

static int open_fds(void)
{
	int n = 0;
	DIR *d = opendir("/proc/self/fd");
	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static int teardown(void **st)
{
	(void)st;
	pipes_drain();
	return 0;
}

static void capacity_and_reuse(void **st)
{
	(void)st;
	struct rpipe *p = pipes_get(262144, true);
	assert_non_null(p);
	assert_int_equal(p->len, 0);
	assert_true(p->cap >= 262144);
	assert_int_equal(fcntl(p->wfd, F_GETPIPE_SZ), (int)p->cap);
	assert_true(fcntl(p->rfd, F_GETFL) & O_NONBLOCK);
	assert_true(fcntl(p->wfd, F_GETFD) & FD_CLOEXEC);
	int rfd = p->rfd;
	pipes_put(p);
	struct rpipe *q = pipes_get(65536, true); /* a big enough spare is reused */
	assert_ptr_equal(q, p);
	assert_int_equal(q->rfd, rfd);
	pipes_put(q);
}

static void smaller_spare_is_replaced(void **st)
{
	(void)st;
	struct rpipe *p = pipes_get(65536, true);
	assert_non_null(p);
	uint32_t cap = p->cap;
	pipes_put(p);
	struct rpipe *q = pipes_get(cap * 4, true);
	assert_non_null(q);
	assert_true(q->cap >= cap * 4);
	pipes_put(q);
}

static void spares_are_bounded(void **st)
{
	(void)st;
	pipes_drain();
	int base = open_fds();
	struct rpipe *p[PIPES_SPARE_MAX + 8];
	for (int i = 0; i < PIPES_SPARE_MAX + 8; i++) {
		p[i] = pipes_get(65536, true);
		assert_non_null(p[i]);
	}
	assert_int_equal(open_fds(), base + 2 * (PIPES_SPARE_MAX + 8));
	for (int i = 0; i < PIPES_SPARE_MAX + 8; i++)
		pipes_put(p[i]);
	assert_int_equal(open_fds(), base + 2 * PIPES_SPARE_MAX);
	pipes_drain();
	assert_int_equal(open_fds(), base);
}

static void pipe_with_bytes_is_discarded(void **st)
{
	(void)st;
	pipes_drain();
	int base = open_fds();
	struct rpipe *p = pipes_get(65536, true);
	assert_non_null(p);
	assert_int_equal(write(p->wfd, "abc", 3), 3);
	p->len = 3;
	pipes_discard(p);
	assert_int_equal(open_fds(), base);
	pipes_discard(NULL);
}

static void open_count_and_no_room(void **st)
{
	(void)st;
	pipes_drain();
	assert_int_equal(pipes_open(), 0);
	struct rpipe *a = pipes_get(65536, true), *b = pipes_get(65536, true);
	assert_non_null(a);
	assert_non_null(b);
	assert_int_equal(pipes_open(), 2);
	pipes_put(a);
	assert_int_equal(pipes_open(), 2); /* a spare keeps its descriptors */
	/* No room for new descriptors: a spare is still handed out... */
	struct rpipe *c = pipes_get(65536, false);
	assert_ptr_equal(c, a);
	/* ...but no pipe is made. */
	errno = 0;
	assert_null(pipes_get(65536, false));
	assert_int_equal(errno, EMFILE);
	assert_int_equal(pipes_open(), 2);
	pipes_discard(b);
	pipes_put(c);
	pipes_drain();
	assert_int_equal(pipes_open(), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_teardown(capacity_and_reuse, teardown),
	    cmocka_unit_test_teardown(smaller_spare_is_replaced, teardown),
	    cmocka_unit_test_teardown(spares_are_bounded, teardown),
	    cmocka_unit_test_teardown(pipe_with_bytes_is_discarded, teardown),
	    cmocka_unit_test_teardown(open_count_and_no_room, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
