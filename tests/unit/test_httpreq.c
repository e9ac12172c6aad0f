/* httpreq: the request head reader of the metrics endpoint, fed whole,
 * byte by byte and with hostile input. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../shared/httpreq.h"

static struct httpreq req;

static enum httpreq_status whole(const char *s, size_t n)
{
	httpreq_init(&req);
	size_t used = 0;
	return httpreq_feed(&req, (const uint8_t *)s, n, &used);
}

static enum httpreq_status bytewise(const char *s, size_t n)
{
	httpreq_init(&req);
	enum httpreq_status st = HTTPREQ_MORE;
	for (size_t i = 0; i < n && st == HTTPREQ_MORE; i++) {
		size_t used = 9;
		st = httpreq_feed(&req, (const uint8_t *)s + i, 1, &used);
		assert_int_equal(used, 1);
	}
	return st;
}

/* The same outcome whole and byte by byte. */
#define EXPECT(status, lit)                                                                        \
	do {                                                                                       \
		assert_int_equal(whole((lit), sizeof(lit) - 1), (status));                         \
		assert_int_equal(bytewise((lit), sizeof(lit) - 1), (status));                      \
	} while (0)

static void scrape_requests_are_accepted(void **state)
{
	(void)state;
	EXPECT(HTTPREQ_DONE, "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1:9100\r\n"
	                     "User-Agent: Prometheus/2.45.3\r\nAccept: text/plain;version=0.0.4\r\n"
	                     "Accept-Encoding: gzip\r\n\r\n");
	assert_int_equal(req.method, HTTPREQ_GET);
	assert_int_equal(req.minor, 1);
	assert_false(req.openmetrics);
	EXPECT(HTTPREQ_DONE, "HEAD /metrics HTTP/1.0\r\n\r\n");
	assert_int_equal(req.method, HTTPREQ_HEAD);
	assert_int_equal(req.minor, 0);
	EXPECT(HTTPREQ_DONE, "GET /metrics?x=1 HTTP/1.1\nHost: a\n\n"); /* bare LF */
	EXPECT(HTTPREQ_DONE, "GET /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
	EXPECT(HTTPREQ_DONE, "GET /metrics HTTP/1.1\r\nX:\r\n\r\n"); /* empty value */
	EXPECT(HTTPREQ_DONE, "GET /metrics HTTP/1.1\r\nAccept: application/OpenMetrics-text;"
	                     "version=1.0.0,text/plain;q=0.5\r\n\r\n");
	assert_true(req.openmetrics);
	EXPECT(HTTPREQ_DONE, "GET /metrics HTTP/1.1\r\nAccept: text/plain, "
	                     "application/openmetrics-text\r\n\r\n");
	assert_true(req.openmetrics);
}

static void openmetrics_only_when_acceptable(void **state)
{
	(void)state;
	EXPECT(HTTPREQ_DONE, "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;q=0,"
	                     "text/plain\r\n\r\n");
	assert_false(req.openmetrics);
	EXPECT(HTTPREQ_DONE, "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; "
	                     "version=1.0.0; q=0.000\r\n\r\n");
	assert_false(req.openmetrics);
	EXPECT(HTTPREQ_DONE, "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;"
	                     "q=0.1\r\n\r\n");
	assert_true(req.openmetrics);
	EXPECT(HTTPREQ_DONE, "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-textual,"
	                     "x/application/openmetrics-text\r\n\r\n");
	assert_false(req.openmetrics);
	EXPECT(HTTPREQ_DONE, "GET /metrics HTTP/1.1\r\nX-Accept: application/openmetrics-text"
	                     "\r\n\r\n");
	assert_false(req.openmetrics);
	EXPECT(HTTPREQ_DONE, "GET /metrics HTTP/1.1\r\nAccept: ;q=0,,\r\n\r\n");
	assert_false(req.openmetrics);
}

static void the_head_ends_at_the_blank_line(void **state)
{
	(void)state;
	static const char s[] = "GET /metrics HTTP/1.1\r\n\r\nGARBAGE";
	httpreq_init(&req);
	size_t used = 0;
	assert_int_equal(httpreq_feed(&req, (const uint8_t *)s, sizeof s - 1, &used), HTTPREQ_DONE);
	assert_int_equal(used, sizeof s - 1 - 7);
	/* final: more bytes change nothing */
	assert_int_equal(httpreq_feed(&req, (const uint8_t *)"x", 1, &used), HTTPREQ_DONE);
	assert_int_equal(used, 0);
}

static void incomplete_heads_need_more(void **state)
{
	(void)state;
	EXPECT(HTTPREQ_MORE, "");
	EXPECT(HTTPREQ_MORE, "GET /metr");
	EXPECT(HTTPREQ_MORE, "GET /metrics HTTP/1.1\r\n");
	EXPECT(HTTPREQ_MORE, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r");
}

static void other_methods_and_paths_get_their_status(void **state)
{
	(void)state;
	EXPECT(HTTPREQ_METHOD_NOT_ALLOWED, "POST /metrics HTTP/1.1\r\n");
	EXPECT(HTTPREQ_METHOD_NOT_ALLOWED, "get /metrics HTTP/1.1\r\n");
	EXPECT(HTTPREQ_METHOD_NOT_ALLOWED, "CONNECT /metrics HTTP/1.1\r\n");
	EXPECT(HTTPREQ_NOT_FOUND, "GET / HTTP/1.1\r\n");
	EXPECT(HTTPREQ_NOT_FOUND, "GET /metricsx HTTP/1.1\r\n");
	EXPECT(HTTPREQ_NOT_FOUND, "GET /metrics/ HTTP/1.1\r\n");
	EXPECT(HTTPREQ_NOT_FOUND, "GET /%6detrics HTTP/1.1\r\n");
	EXPECT(HTTPREQ_VERSION_NOT_SUPPORTED, "GET /metrics HTTP/2.0\r\n");
	EXPECT(HTTPREQ_VERSION_NOT_SUPPORTED, "GET /metrics HTTP/0.9\r\n");
}

static void malformed_request_lines_are_bad(void **state)
{
	(void)state;
	EXPECT(HTTPREQ_BAD_REQUEST, "\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET  /metrics HTTP/1.1\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics  HTTP/1.1\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1 \r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET\t/metrics HTTP/1.1\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.10\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/a.1\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics http/1.1\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET http://x/metrics HTTP/1.1\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET * HTTP/1.1\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "G(T /metrics HTTP/1.1\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /m\xc3\xa9trics HTTP/1.1\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"); /* TLS */
	EXPECT(HTTPREQ_BAD_REQUEST, "\x05\x01\x00"); /* SOCKS */
}

static void control_bytes_and_lone_cr_are_bad(void **state)
{
	(void)state;
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1\rX");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1\r\nHost: a\rb\r\n\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1\r\nHost: a\x00"
	                            "b\r\n\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1\r\nHost: a\x1b[31m\r\n\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1\r\nHost: a\x7f\r\n\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1\r\n\r\r\n");
}

static void malformed_fields_are_bad(void **state)
{
	(void)state;
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1\r\nHost\r\n\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1\r\n: x\r\n\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1\r\nHost : x\r\n\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1\r\nA: b\r\n c\r\n\r\n"); /* folded */
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1\r\nA: b\r\n\tc\r\n\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1\r\nH\xc3\xa9: x\r\n\r\n");
}

static void request_bodies_are_refused(void **state)
{
	(void)state;
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1\r\nContent-Length: 5\r\n\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1\r\ncontent-length: -0\r\n\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1\r\nContent-Length:\r\n\r\n");
	EXPECT(HTTPREQ_BAD_REQUEST, "GET /metrics HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
}

static char *repeat(const char *head, char c, size_t n, const char *tail)
{
	size_t h = strlen(head), t = strlen(tail);
	char *s = malloc(h + n + t + 1);
	assert_non_null(s);
	memcpy(s, head, h);
	memset(s + h, c, n);
	memcpy(s + h + n, tail, t + 1);
	return s;
}

static void oversized_heads_are_refused(void **state)
{
	(void)state;
	/* a long target: 414 once the line exceeds its bound, without its end */
	char *s = repeat("GET /metrics?", 'a', HTTPREQ_LINE_MAX, "");
	assert_int_equal(whole(s, strlen(s)), HTTPREQ_URI_TOO_LONG);
	assert_int_equal(bytewise(s, strlen(s)), HTTPREQ_URI_TOO_LONG);
	free(s);
	/* the longest line that fits is served */
	s = repeat("GET /metrics?", 'a', HTTPREQ_LINE_MAX - 13 - 9, " HTTP/1.1\r\n\r\n");
	assert_int_equal(whole(s, strlen(s)), HTTPREQ_DONE);
	free(s);
	/* one long field */
	s = repeat("GET /metrics HTTP/1.1\r\nX: ", 'b', HTTPREQ_LINE_MAX, "\r\n\r\n");
	assert_int_equal(whole(s, strlen(s)), HTTPREQ_FIELDS_TOO_LARGE);
	free(s);
	/* many short fields, and many fields that fit the byte bound */
	char big[HTTPREQ_HEAD_MAX + 64];
	size_t n = (size_t)snprintf(big, sizeof big, "GET /metrics HTTP/1.1\r\n");
	while (n + 8 < sizeof big)
		n += (size_t)snprintf(big + n, sizeof big - n, "A: b\r\n");
	assert_int_equal(whole(big, n), HTTPREQ_FIELDS_TOO_LARGE);
	n = (size_t)snprintf(big, sizeof big, "GET /metrics HTTP/1.1\r\n");
	for (int i = 0; i < HTTPREQ_FIELDS_MAX; i++)
		n += (size_t)snprintf(big + n, sizeof big - n, "A: b\r\n");
	n += (size_t)snprintf(big + n, sizeof big - n, "\r\n");
	assert_int_equal(whole(big, n), HTTPREQ_DONE);
	/* blank lines forever never end the request line: bounded */
	s = repeat("GET /metrics HTTP/1.1\r\nX: ", ' ', HTTPREQ_LINE_MAX - 4, "\r\n");
	assert_int_equal(whole(s, strlen(s)), HTTPREQ_MORE);
	free(s);
}

static void a_status_has_a_reason(void **state)
{
	(void)state;
	assert_string_equal(httpreq_reason(HTTPREQ_BAD_REQUEST), "Bad Request");
	assert_string_equal(httpreq_reason(HTTPREQ_FIELDS_TOO_LARGE),
	                    "Request Header Fields Too Large");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(scrape_requests_are_accepted),
	    cmocka_unit_test(openmetrics_only_when_acceptable),
	    cmocka_unit_test(the_head_ends_at_the_blank_line),
	    cmocka_unit_test(incomplete_heads_need_more),
	    cmocka_unit_test(other_methods_and_paths_get_their_status),
	    cmocka_unit_test(malformed_request_lines_are_bad),
	    cmocka_unit_test(control_bytes_and_lone_cr_are_bad),
	    cmocka_unit_test(malformed_fields_are_bad),
	    cmocka_unit_test(request_bodies_are_refused),
	    cmocka_unit_test(oversized_heads_are_refused),
	    cmocka_unit_test(a_status_has_a_reason),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
