/*
 * httpreq: a sans-I/O reader of one HTTP/1.x request head (request line and
 * header fields), for the metrics endpoint (master/metrics.c).
 *
 * The caller feeds bytes as they arrive; the reader answers "need more",
 * "done" or the 4xx/5xx status to reply with.  It keeps one line at a time
 * and the whole head is bounded (HTTPREQ_HEAD_MAX bytes, HTTPREQ_FIELDS_MAX
 * fields).  Only GET and HEAD of /metrics (a query string is allowed and
 * ignored) are served; a request with a body (Content-Length other than 0,
 * any Transfer-Encoding) is refused, since no body is ever read.
 *
 * Pure: no I/O, no allocation; any thread.
 */
#ifndef SOCKS5D_HTTPREQ_H
#define SOCKS5D_HTTPREQ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HTTPREQ_HEAD_MAX 8192  /* request line, fields and the blank line */
#define HTTPREQ_LINE_MAX 4096  /* one line without its end */
#define HTTPREQ_FIELDS_MAX 64

/* The outcome of a feed: a status code, or MORE/DONE. */
enum httpreq_status {
	HTTPREQ_MORE = 0,
	HTTPREQ_DONE = 200,
	HTTPREQ_BAD_REQUEST = 400,
	HTTPREQ_NOT_FOUND = 404,
	HTTPREQ_METHOD_NOT_ALLOWED = 405,
	HTTPREQ_URI_TOO_LONG = 414,
	HTTPREQ_FIELDS_TOO_LARGE = 431,
	HTTPREQ_VERSION_NOT_SUPPORTED = 505,
};

enum httpreq_method {
	HTTPREQ_GET,
	HTTPREQ_HEAD,
};

struct httpreq {
	size_t total;  /* bytes of the head taken so far */
	size_t len;    /* bytes of the current line */
	bool cr;       /* the last byte was a CR */
	bool have_line; /* the request line is behind */
	unsigned nfields;
	enum httpreq_status status; /* once not MORE, every feed returns it */
	enum httpreq_method method;
	uint8_t minor; /* HTTP/1.minor */
	bool openmetrics; /* an Accept field names application/openmetrics-text */
	char line[HTTPREQ_LINE_MAX];
};

void httpreq_init(struct httpreq *r);

/* Take bytes of the head.  *used receives how many were taken (all of
 * them while the result is MORE; up to the end of the head on DONE; the
 * byte that decided an error).  The result is final once not MORE. */
enum httpreq_status httpreq_feed(struct httpreq *r, const uint8_t *p, size_t n, size_t *used);

/* The reason phrase of a status ("Bad Request"). */
const char *httpreq_reason(enum httpreq_status s);

#endif
