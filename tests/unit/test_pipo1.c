/*
 * Unit tests for admin/pipo1: the request reader of the original pipo
 * protocol (version 1) fed whole, byte by byte, in every split and
 * coalesced; requests encoded and parsed back; hostile input (unknown
 * TYPE or CMD, maximal and empty strings, NUL bytes, empty slices).
 * Every slice is an exact-size heap copy so that ASan reports any read
 * beyond it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../../admin/pipo1.h"

/* Feed a heap copy of exactly n bytes; check what every feed promises. */
static int feed(struct pipo1_reader *r, const uint8_t *p, size_t n, size_t *used)
{
	uint8_t *copy = malloc(n ? n : 1);
	assert_non_null(copy);
	if (n)
		memcpy(copy, p, n);
	*used = (size_t)-1;
	int rc = pipo1_reader_feed(r, copy, n, used);
	free(copy);
	assert_true(*used <= n);
	assert_true(rc == PIPO1_NEED_MORE || rc == PIPO1_DONE || rc == PIPO1_ERROR);
	if (rc == PIPO1_NEED_MORE)
		assert_int_equal(*used, n);
	return rc;
}

/* Parse a stream in slices of k bytes (0: whole); collect requests. */
static size_t parse_all(const uint8_t *p, size_t n, size_t k, struct pipo1_request *out,
                        size_t max, int *last)
{
	struct pipo1_reader r;
	memset(&r, 0xa5, sizeof r); /* init must not rely on zeroed memory */
	pipo1_reader_init(&r);
	size_t off = 0, got = 0;
	*last = PIPO1_NEED_MORE;
	while (off < n) {
		size_t len = k && k < n - off ? k : n - off;
		size_t used;
		int rc = feed(&r, p + off, len, &used);
		off += used;
		*last = rc;
		if (rc == PIPO1_ERROR) {
			if (got < max)
				out[got] = r.req;
			return got;
		}
		if (rc == PIPO1_DONE && got < max)
			out[got++] = r.req;
	}
	return got;
}

static const uint8_t stream[] = {
    0x00, 0x07,                                           /* user count */
    0x01, 0x00, 0x03, 'b', 'o', 'b', 0x02, 'p', 'w', 0x01, /* add bob, admin */
    0x00, 0x0b, 0x03, 'b', 'o', 'b',                      /* bob's connections */
    0x01, 0x04, 0x00, 0x00, 0x20, 0x00,                   /* buffer 8192 */
    0x01, 0x06, 0x1e,                                     /* connection timeout 30 */
    0x01, 0x01, 0x03, 'b', 'o', 'b',                      /* delete bob */
    0x00, 0x11, 0x00,                                     /* the alternate code, empty name */
    0x00, 0x10,                                           /* the alternate code */
    0x01, 0x02, 0x01,                                     /* dissectors on */
};

static void check_stream(const struct pipo1_request *q, size_t n)
{
	assert_int_equal(n, 9);
	assert_int_equal(q[0].type, PIPO1_QUERY);
	assert_int_equal(q[0].cmd, PIPO1_Q_USER_COUNT);
	assert_int_equal(q[1].cmd, PIPO1_M_ADD_USER);
	assert_string_equal(q[1].user, "bob");
	assert_string_equal(q[1].pass, "pw");
	assert_int_equal(q[1].ulen, 3);
	assert_int_equal(q[1].plen, 2);
	assert_int_equal(q[1].u8, 1);
	assert_int_equal(q[2].cmd, PIPO1_Q_USER_CONNS);
	assert_string_equal(q[2].user, "bob");
	assert_int_equal(q[3].u32, 8192);
	assert_int_equal(q[4].cmd, PIPO1_M_CONN_TIMEOUT);
	assert_int_equal(q[4].u8, 30);
	assert_int_equal(q[5].type, PIPO1_MODIFY);
	assert_int_equal(q[5].cmd, PIPO1_M_DEL_USER);
	assert_string_equal(q[5].user, "bob");
	assert_int_equal(q[5].plen, 0);
	assert_string_equal(q[5].pass, ""); /* nothing left of the last request */
	assert_int_equal(q[6].cmd, PIPO1_Q_USER_CONNS_ALT);
	assert_int_equal(q[6].ulen, 0);
	assert_string_equal(q[6].user, "");
	assert_int_equal(q[7].cmd, PIPO1_Q_CONN_TIMEOUT_ALT);
	assert_int_equal(q[8].cmd, PIPO1_M_DISSECTORS);
	assert_int_equal(q[8].u8, 1);
}

static void test_every_slice_size(void **state)
{
	(void)state;
	for (size_t k = 0; k <= sizeof stream; k++) {
		struct pipo1_request q[12];
		int last;
		size_t n = parse_all(stream, sizeof stream, k, q, 12, &last);
		assert_int_equal(last, PIPO1_DONE);
		check_stream(q, n);
	}
}

/* A request split anywhere waits, then completes: every cut of it. */
static void test_every_cut(void **state)
{
	(void)state;
	for (size_t cut = 0; cut <= sizeof stream; cut++) {
		struct pipo1_reader r;
		pipo1_reader_init(&r);
		struct pipo1_request q[12];
		size_t got = 0, off = 0, used;
		const size_t ends[2] = {cut, sizeof stream};
		for (int part = 0; part < 2; part++) {
			while (off < ends[part]) {
				int rc = feed(&r, stream + off, ends[part] - off, &used);
				off += used;
				assert_int_not_equal(rc, PIPO1_ERROR);
				if (rc == PIPO1_DONE)
					q[got++] = r.req;
			}
		}
		check_stream(q, got);
	}
}

static void test_empty_slices(void **state)
{
	(void)state;
	struct pipo1_reader r;
	pipo1_reader_init(&r);
	size_t used;
	assert_int_equal(feed(&r, NULL, 0, &used), PIPO1_NEED_MORE);
	static const uint8_t q[] = {0x00, 0x01};
	assert_int_equal(feed(&r, q, 1, &used), PIPO1_NEED_MORE);
	assert_int_equal(feed(&r, q + 1, 0, &used), PIPO1_NEED_MORE);
	assert_int_equal(feed(&r, q + 1, 1, &used), PIPO1_DONE);
	assert_int_equal(used, 1);
	assert_int_equal(feed(&r, NULL, 0, &used), PIPO1_NEED_MORE);
}

/* Unknown TYPE or CMD: an error at that byte, nothing more consumed. */
static void test_unknown_requests(void **state)
{
	(void)state;
	static const uint8_t bad[][3] = {
	    {0x00, 0x0c, 0x00}, {0x00, 0x0f, 0x00}, {0x00, 0x12, 0x00}, {0x00, 0xff, 0x00},
	    {0x01, 0x07, 0x00}, {0x01, 0x10, 0x00}, {0x01, 0xff, 0x00}, {0x02, 0x00, 0x00},
	    {0xff, 0x00, 0x00}, {0x80, 0x01, 0x00},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		for (size_t k = 1; k <= 3; k++) {
			struct pipo1_request q[2];
			int last;
			size_t n = parse_all(bad[i], 3, k, q, 2, &last);
			assert_int_equal(n, 0);
			assert_int_equal(last, PIPO1_ERROR);
			assert_int_equal(q[0].type, bad[i][0]);
			assert_int_equal(q[0].cmd, bad[i][1]);
		}
		assert_false(pipo1_known(bad[i][0], bad[i][1]));
	}
	/* Whole: the error consumes TYPE and CMD only. */
	struct pipo1_reader r;
	pipo1_reader_init(&r);
	size_t used;
	static const uint8_t s[] = {0x00, 0x07, 0x00, 0x42, 0x00, 0x07};
	assert_int_equal(feed(&r, s, sizeof s, &used), PIPO1_DONE);
	assert_int_equal(used, 2);
	assert_int_equal(feed(&r, s + 2, sizeof s - 2, &used), PIPO1_ERROR);
	assert_int_equal(used, 2);
}

/* Maximal names and passwords (255 bytes), empty ones, NUL inside. */
static void test_string_bounds(void **state)
{
	(void)state;
	uint8_t msg[2 + 256 + 256 + 1];
	size_t k = 0;
	msg[k++] = PIPO1_MODIFY;
	msg[k++] = PIPO1_M_ADD_USER;
	msg[k++] = 255;
	memset(msg + k, 'u', 255);
	k += 255;
	msg[k++] = 255;
	memset(msg + k, 0xff, 255);
	k += 255;
	msg[k++] = 7;
	for (size_t step = 1; step <= k; step += 37) {
		struct pipo1_request q[2];
		int last;
		assert_int_equal(parse_all(msg, k, step, q, 2, &last), 1);
		assert_int_equal(q[0].ulen, 255);
		assert_int_equal(q[0].plen, 255);
		assert_int_equal(strlen(q[0].user), 255);
		assert_int_equal(strlen(q[0].pass), 255);
		assert_int_equal(q[0].u8, 7); /* the reader keeps it; the server judges it */
	}
	/* A NUL in a name: kept with its length (the server refuses it). */
	static const uint8_t nul[] = {0x01, 0x01, 0x03, 'a', 0x00, 'b'};
	struct pipo1_request q[2];
	int last;
	assert_int_equal(parse_all(nul, sizeof nul, 1, q, 2, &last), 1);
	assert_int_equal(q[0].ulen, 3);
	assert_int_equal(strlen(q[0].user), 1);
	/* Empty name and password: three bytes then the privilege. */
	static const uint8_t empty[] = {0x01, 0x00, 0x00, 0x00, 0x01, 0x00, 0x07};
	assert_int_equal(parse_all(empty, sizeof empty, 0, q, 2, &last), 2);
	assert_int_equal(q[0].ulen, 0);
	assert_int_equal(q[0].plen, 0);
	assert_int_equal(q[0].u8, 1);
	assert_int_equal(q[1].cmd, PIPO1_Q_USER_COUNT);
}

/* A truncated request never completes, whatever follows it never shows. */
static void test_truncated(void **state)
{
	(void)state;
	static const uint8_t t[] = {0x01, 0x00, 0x05, 'a', 'b'};
	struct pipo1_request q[2];
	int last;
	for (size_t n = 0; n <= sizeof t; n++) {
		assert_int_equal(parse_all(t, n, 1, q, 2, &last), 0);
		assert_int_equal(last, PIPO1_NEED_MORE);
	}
}

static void test_encode_roundtrip(void **state)
{
	(void)state;
	struct pipo1_request in = {.type = PIPO1_MODIFY, .cmd = PIPO1_M_ADD_USER, .ulen = 4,
	                           .plen = 2, .u8 = 1};
	memcpy(in.user, "carl", 5);
	memcpy(in.pass, "pw", 3);
	uint8_t out[600];
	size_t n = pipo1_request_encode(out, sizeof out, &in);
	static const uint8_t want[] = {0x01, 0x00, 4, 'c', 'a', 'r', 'l', 2, 'p', 'w', 1};
	assert_int_equal(n, sizeof want);
	assert_memory_equal(out, want, n);
	assert_int_equal(pipo1_request_encode(out, n - 1, &in), 0); /* does not fit */
	struct pipo1_request bs = {.type = PIPO1_MODIFY, .cmd = PIPO1_M_BUFFER_SIZE,
	                           .u32 = 0x01020304};
	n = pipo1_request_encode(out, sizeof out, &bs);
	static const uint8_t want_bs[] = {0x01, 0x04, 1, 2, 3, 4};
	assert_int_equal(n, sizeof want_bs);
	assert_memory_equal(out, want_bs, n);
	struct pipo1_request q[2];
	int last;
	assert_int_equal(parse_all(out, n, 1, q, 2, &last), 1);
	assert_int_equal(q[0].u32, 0x01020304);
	struct pipo1_request unknown = {.type = 0x00, .cmd = 0x0c};
	assert_int_equal(pipo1_request_encode(out, sizeof out, &unknown), 0);
}

static void test_wipe(void **state)
{
	(void)state;
	struct pipo1_reader r;
	pipo1_reader_init(&r);
	static const uint8_t m[] = {0x01, 0x00, 0x01, 'u', 0x03, 's', 'e', 'c', 0x00};
	size_t used;
	assert_int_equal(feed(&r, m, sizeof m, &used), PIPO1_DONE);
	assert_string_equal(r.req.pass, "sec");
	pipo1_reader_wipe(&r);
	for (size_t i = 0; i < sizeof r.req.pass; i++)
		assert_int_equal(r.req.pass[i], 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_every_slice_size), cmocka_unit_test(test_every_cut),
	    cmocka_unit_test(test_empty_slices),     cmocka_unit_test(test_unknown_requests),
	    cmocka_unit_test(test_string_bounds),    cmocka_unit_test(test_truncated),
	    cmocka_unit_test(test_encode_roundtrip), cmocka_unit_test(test_wipe),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
