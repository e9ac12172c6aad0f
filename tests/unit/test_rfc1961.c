/*
 * Unit tests for worker/rfc1961: the GSS-API method's messages fed whole,
 * byte by byte and in every two-piece split; several messages back to back;
 * the failure message; every error; the length bound; random bytes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../../worker/rfc1961.h"

/* Feed the bytes in pieces of step (0: whole), each piece an exact-size
 * copy (ASan sees a read past it).  Returns the status; *consumed. */
static int feed_steps(struct rfc1961_msg *m, const uint8_t *in, size_t n, size_t step,
                      size_t *consumed)
{
	size_t off = 0;
	int rc = RFC1961_MORE;
	while (off < n && rc == RFC1961_MORE) {
		size_t k = step && n - off > step ? step : n - off;
		uint8_t *slice = malloc(k);
		assert_non_null(slice);
		memcpy(slice, in + off, k);
		size_t used = 0;
		rc = rfc1961_feed(m, slice, k, &used);
		assert_true(used <= k);
		if (rc == RFC1961_MORE)
			assert_int_equal(used, k);
		off += used;
		free(slice);
	}
	*consumed = off;
	return rc;
}

static void auth_token_in_any_pieces(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x01, 0x01, 0x00, 0x05, 'h', 'e', 'l', 'l', 'o', 0x05, 0x01};
	for (size_t step = 0; step <= sizeof msg; step++) {
		struct rfc1961_msg m;
		size_t used;
		rfc1961_init(&m, RFC1961_AUTH);
		assert_int_equal(feed_steps(&m, msg, sizeof msg, step, &used), RFC1961_DONE);
		assert_int_equal(used, 9); /* the SOCKS bytes behind it are left */
		assert_int_equal(m.mtyp, RFC1961_AUTH);
		assert_int_equal(m.len, 5);
		assert_memory_equal(m.token, "hello", 5);
		rfc1961_free(&m);
	}
}

static void every_two_piece_split(void **state)
{
	(void)state;
	uint8_t msg[4 + 300];
	rfc1961_header(msg, RFC1961_ENCAPSULATED, 300);
	for (int i = 0; i < 300; i++)
		msg[4 + i] = (uint8_t)i;
	for (size_t cut = 0; cut <= sizeof msg; cut++) {
		struct rfc1961_msg m;
		size_t u1 = 0, u2 = 0;
		rfc1961_init(&m, RFC1961_ENCAPSULATED);
		int rc = rfc1961_feed(&m, msg, cut, &u1);
		assert_int_equal(u1, cut);
		if (cut < sizeof msg) {
			assert_int_equal(rc, RFC1961_MORE);
			rc = rfc1961_feed(&m, msg + cut, sizeof msg - cut, &u2);
		}
		assert_int_equal(rc, RFC1961_DONE);
		assert_int_equal(u1 + u2, sizeof msg);
		assert_memory_equal(m.token, msg + 4, 300);
		rfc1961_free(&m);
	}
}

static void messages_back_to_back_reuse_the_buffer(void **state)
{
	(void)state;
	const uint8_t two[] = {0x01, 0x03, 0x00, 0x03, 'a', 'b', 'c', 0x01, 0x03, 0x00, 0x02, 'd', 'e'};
	struct rfc1961_msg m;
	size_t used;
	rfc1961_init(&m, RFC1961_ENCAPSULATED);
	assert_int_equal(rfc1961_feed(&m, two, sizeof two, &used), RFC1961_DONE);
	assert_int_equal(used, 7);
	assert_memory_equal(m.token, "abc", 3);
	size_t used2;
	assert_int_equal(rfc1961_feed(&m, two + used, sizeof two - used, &used2), RFC1961_DONE);
	assert_int_equal(used2, 6);
	assert_int_equal(m.len, 2);
	assert_memory_equal(m.token, "de", 2);
	/* An empty feed after a message starts the next one and waits. */
	assert_int_equal(rfc1961_feed(&m, two, 0, &used), RFC1961_MORE);
	assert_int_equal(used, 0);
	rfc1961_free(&m);
}

static void failure_message_has_no_length(void **state)
{
	(void)state;
	const uint8_t fail[] = {0x01, 0xff, 0x05};
	for (size_t step = 0; step <= 2; step++) {
		struct rfc1961_msg m;
		size_t used;
		rfc1961_init(&m, RFC1961_PROTECTION);
		assert_int_equal(feed_steps(&m, fail, sizeof fail, step, &used), RFC1961_DONE);
		assert_int_equal(used, 2);
		assert_int_equal(m.mtyp, RFC1961_FAILURE);
		assert_int_equal(m.len, 0);
		rfc1961_free(&m);
	}
}

static void errors_stop_the_parser(void **state)
{
	(void)state;
	struct {
		uint8_t in[4];
		uint8_t expect, error;
		size_t used;
	} cases[] = {
	    {{0x05, 0x01, 0x00, 0x01}, RFC1961_AUTH, RFC1961_BAD_VERSION, 1},
	    {{0x00, 0x01, 0x00, 0x01}, RFC1961_AUTH, RFC1961_BAD_VERSION, 1},
	    {{0x01, 0x03, 0x00, 0x01}, RFC1961_AUTH, RFC1961_BAD_TYPE, 2},
	    {{0x01, 0x00, 0x00, 0x01}, RFC1961_PROTECTION, RFC1961_BAD_TYPE, 2},
	    {{0x01, 0x02, 0x00, 0x00}, RFC1961_PROTECTION, RFC1961_EMPTY_TOKEN, 4},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		for (size_t step = 0; step <= 1; step++) {
			struct rfc1961_msg m;
			size_t used;
			rfc1961_init(&m, cases[i].expect);
			assert_int_equal(feed_steps(&m, cases[i].in, 4, step, &used), RFC1961_ERROR);
			assert_int_equal(m.error, cases[i].error);
			assert_int_equal(used, cases[i].used);
			/* Nothing more is taken. */
			assert_int_equal(rfc1961_feed(&m, cases[i].in, 4, &used), RFC1961_ERROR);
			assert_int_equal(used, 0);
			rfc1961_free(&m);
		}
	}
}

static void largest_token_is_taken_whole(void **state)
{
	(void)state;
	size_t n = 4 + RFC1961_TOKEN_MAX;
	uint8_t *msg = malloc(n + 1);
	assert_non_null(msg);
	rfc1961_header(msg, RFC1961_ENCAPSULATED, RFC1961_TOKEN_MAX);
	assert_int_equal(msg[2], 0xff);
	assert_int_equal(msg[3], 0xff);
	memset(msg + 4, 0xab, RFC1961_TOKEN_MAX);
	msg[n] = 0x01;
	struct rfc1961_msg m;
	size_t used;
	rfc1961_init(&m, RFC1961_ENCAPSULATED);
	assert_int_equal(feed_steps(&m, msg, n + 1, 4096, &used), RFC1961_DONE);
	assert_int_equal(used, n);
	assert_int_equal(m.len, RFC1961_TOKEN_MAX);
	assert_true(m.cap <= RFC1961_TOKEN_MAX);
	rfc1961_free(&m);
	free(msg);
}

/* A header that announces 65,535 bytes costs no more memory than the
 * bytes that actually came: a client that stops after it (or sends its
 * token slowly) holds a buffer of what it sent, not of what it claimed. */
static void announced_length_is_not_allocated_ahead(void **state)
{
	(void)state;
	const uint8_t hdr[] = {0x01, 0x01, 0xff, 0xff, 0x60, 0x82};
	struct rfc1961_msg m;
	size_t used;
	rfc1961_init(&m, RFC1961_AUTH);
	assert_int_equal(rfc1961_feed(&m, hdr, sizeof hdr, &used), RFC1961_MORE);
	assert_int_equal(used, sizeof hdr);
	assert_true(m.cap <= 4096);
	/* The rest, in pieces: the token is whole and exact. */
	uint8_t *rest = malloc(RFC1961_TOKEN_MAX - 2);
	assert_non_null(rest);
	for (size_t i = 0; i < RFC1961_TOKEN_MAX - 2; i++)
		rest[i] = (uint8_t)i;
	size_t off = 0;
	int rc = RFC1961_MORE;
	while (rc == RFC1961_MORE) {
		size_t k = RFC1961_TOKEN_MAX - 2 - off < 1000 ? RFC1961_TOKEN_MAX - 2 - off : 1000;
		rc = rfc1961_feed(&m, rest + off, k, &used);
		off += used;
		assert_true(m.cap <= 2 * (off + 2) + 4096);
	}
	assert_int_equal(rc, RFC1961_DONE);
	assert_int_equal(m.len, RFC1961_TOKEN_MAX);
	assert_int_equal(m.token[0], 0x60);
	assert_int_equal(m.token[1], 0x82);
	assert_memory_equal(m.token + 2, rest, RFC1961_TOKEN_MAX - 2);
	free(rest);
	rfc1961_free(&m);
}

static void expect_changes_the_next_type(void **state)
{
	(void)state;
	const uint8_t a[] = {0x01, 0x01, 0x00, 0x01, 0x42};
	const uint8_t b[] = {0x01, 0x02, 0x00, 0x01, 0x01};
	struct rfc1961_msg m;
	size_t used;
	rfc1961_init(&m, RFC1961_AUTH);
	assert_int_equal(rfc1961_feed(&m, a, sizeof a, &used), RFC1961_DONE);
	rfc1961_expect(&m, RFC1961_PROTECTION);
	assert_int_equal(rfc1961_feed(&m, b, sizeof b, &used), RFC1961_DONE);
	assert_int_equal(m.token[0], 0x01);
	assert_int_equal(rfc1961_feed(&m, a, sizeof a, &used), RFC1961_ERROR);
	assert_int_equal(m.error, RFC1961_BAD_TYPE);
	rfc1961_free(&m);
}

static void random_bytes_never_crash_or_overconsume(void **state)
{
	(void)state;
	srand(1961);
	uint8_t buf[512];
	for (int round = 0; round < 2000; round++) {
		size_t n = (size_t)rand() % sizeof buf;
		for (size_t i = 0; i < n; i++)
			buf[i] = (uint8_t)rand();
		/* Valid-looking starts now and then. */
		if (n >= 2 && round % 3 == 0) {
			buf[0] = 0x01;
			buf[1] = (uint8_t)(1 + round % 3);
		}
		struct rfc1961_msg m;
		size_t used;
		rfc1961_init(&m, (uint8_t)(1 + round % 3));
		int rc = feed_steps(&m, buf, n, (size_t)(round % 7), &used);
		assert_true(used <= n);
		if (rc == RFC1961_DONE && m.mtyp != RFC1961_FAILURE)
			assert_int_equal(used, 4 + m.len);
		rfc1961_free(&m);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(auth_token_in_any_pieces),
	    cmocka_unit_test(every_two_piece_split),
	    cmocka_unit_test(messages_back_to_back_reuse_the_buffer),
	    cmocka_unit_test(failure_message_has_no_length),
	    cmocka_unit_test(errors_stop_the_parser),
	    cmocka_unit_test(largest_token_is_taken_whole),
	    cmocka_unit_test(announced_length_is_not_allocated_ahead),
	    cmocka_unit_test(expect_changes_the_next_type),
	    cmocka_unit_test(random_bytes_never_crash_or_overconsume),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
