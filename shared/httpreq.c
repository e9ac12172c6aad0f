#include "httpreq.h"

#include <string.h>
#include <strings.h>

void httpreq_init(struct httpreq *r)
{
	memset(r, 0, offsetof(struct httpreq, line));
	r->status = HTTPREQ_MORE;
}

const char *httpreq_reason(enum httpreq_status s)
{
	switch (s) {
	case HTTPREQ_DONE:
		return "OK";
	case HTTPREQ_BAD_REQUEST:
		return "Bad Request";
	case HTTPREQ_NOT_FOUND:
		return "Not Found";
	case HTTPREQ_METHOD_NOT_ALLOWED:
		return "Method Not Allowed";
	case HTTPREQ_URI_TOO_LONG:
		return "URI Too Long";
	case HTTPREQ_FIELDS_TOO_LARGE:
		return "Request Header Fields Too Large";
	case HTTPREQ_VERSION_NOT_SUPPORTED:
		return "HTTP Version Not Supported";
	case HTTPREQ_MORE:
		break;
	}
	return "";
}

/* RFC 9110 tchar. */
static bool is_tchar(unsigned char c)
{
	if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))
		return true;
	return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static bool span_is(const char *p, size_t n, const char *word)
{
	return strlen(word) == n && memcmp(p, word, n) == 0;
}

/* METHOD SP TARGET SP HTTP/D.D, single spaces. */
static enum httpreq_status request_line(struct httpreq *r, const char *s, size_t n)
{
	const char *sp1 = memchr(s, ' ', n);
	if (!sp1 || sp1 == s)
		return HTTPREQ_BAD_REQUEST;
	const char *t = sp1 + 1, *end = s + n;
	const char *sp2 = memchr(t, ' ', (size_t)(end - t));
	if (!sp2 || sp2 == t)
		return HTTPREQ_BAD_REQUEST;
	const char *v = sp2 + 1;
	for (const char *q = s; q < sp1; q++)
		if (!is_tchar((unsigned char)*q))
			return HTTPREQ_BAD_REQUEST;
	for (const char *q = t; q < sp2; q++)
		if ((unsigned char)*q <= 0x20 || (unsigned char)*q >= 0x7f)
			return HTTPREQ_BAD_REQUEST;
	if (end - v != 8 || memcmp(v, "HTTP/", 5) != 0 || v[5] < '0' || v[5] > '9' || v[6] != '.' ||
	    v[7] < '0' || v[7] > '9')
		return HTTPREQ_BAD_REQUEST;
	if (*t != '/')
		return HTTPREQ_BAD_REQUEST; /* origin-form only: no absolute-form, no '*' */
	if (v[5] != '1')
		return HTTPREQ_VERSION_NOT_SUPPORTED;
	r->minor = (uint8_t)(v[7] - '0');
	if (span_is(s, (size_t)(sp1 - s), "GET"))
		r->method = HTTPREQ_GET;
	else if (span_is(s, (size_t)(sp1 - s), "HEAD"))
		r->method = HTTPREQ_HEAD;
	else
		return HTTPREQ_METHOD_NOT_ALLOWED;
	const char *qm = memchr(t, '?', (size_t)(sp2 - t));
	if (!span_is(t, (size_t)((qm ? qm : sp2) - t), "/metrics"))
		return HTTPREQ_NOT_FOUND;
	return HTTPREQ_MORE;
}

static bool name_is(const char *s, size_t n, const char *name)
{
	return strlen(name) == n && strncasecmp(s, name, n) == 0;
}

/* Is the q parameter of one Accept element zero ("q=0", "q=0.000")? */
static bool q_is_zero(const char *p, size_t n)
{
	for (size_t i = 0; i + 2 <= n; i++) {
		if (p[i] != ';')
			continue;
		size_t j = i + 1;
		while (j < n && (p[j] == ' ' || p[j] == '\t'))
			j++;
		if (j + 2 > n || (p[j] != 'q' && p[j] != 'Q') || p[j + 1] != '=')
			continue;
		j += 2;
		if (j >= n || p[j] != '0')
			return false;
		for (j++; j < n && p[j] != ';' && p[j] != ' ' && p[j] != '\t'; j++)
			if (p[j] != '.' && p[j] != '0')
				return false;
		return true;
	}
	return false;
}

/* OpenMetrics when an element of Accept names it with a q above 0. */
static void accept_field(struct httpreq *r, const char *v, size_t n)
{
	static const char om[] = "application/openmetrics-text";
	const size_t omlen = sizeof om - 1;
	while (n) {
		const char *comma = memchr(v, ',', n);
		size_t el = comma ? (size_t)(comma - v) : n;
		size_t i = 0;
		while (i < el && (v[i] == ' ' || v[i] == '\t'))
			i++;
		if (el - i >= omlen && strncasecmp(v + i, om, omlen) == 0 &&
		    (el - i == omlen || v[i + omlen] == ';' || v[i + omlen] == ' ') &&
		    !q_is_zero(v + i + omlen, el - i - omlen))
			r->openmetrics = true;
		if (!comma)
			break;
		n -= el + 1;
		v += el + 1;
	}
}

/* NAME ":" OWS VALUE OWS */
static enum httpreq_status field_line(struct httpreq *r, const char *s, size_t n)
{
	if (++r->nfields > HTTPREQ_FIELDS_MAX)
		return HTTPREQ_FIELDS_TOO_LARGE;
	const char *colon = memchr(s, ':', n);
	if (!colon || colon == s)
		return HTTPREQ_BAD_REQUEST; /* also a folded line: it starts with a blank */
	size_t nlen = (size_t)(colon - s);
	for (size_t i = 0; i < nlen; i++)
		if (!is_tchar((unsigned char)s[i]))
			return HTTPREQ_BAD_REQUEST;
	const char *v = colon + 1, *end = s + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
		end--;
	size_t vlen = (size_t)(end - v);
	if (name_is(s, nlen, "transfer-encoding"))
		return HTTPREQ_BAD_REQUEST; /* a body is never read */
	if (name_is(s, nlen, "content-length")) {
		if (!vlen)
			return HTTPREQ_BAD_REQUEST;
		for (size_t i = 0; i < vlen; i++)
			if (v[i] != '0')
				return HTTPREQ_BAD_REQUEST;
	}
	if (name_is(s, nlen, "accept"))
		accept_field(r, v, vlen);
	return HTTPREQ_MORE;
}

static enum httpreq_status end_of_line(struct httpreq *r)
{
	if (!r->have_line) {
		r->have_line = true;
		return request_line(r, r->line, r->len);
	}
	if (r->len == 0)
		return HTTPREQ_DONE;
	return field_line(r, r->line, r->len);
}

enum httpreq_status httpreq_feed(struct httpreq *r, const uint8_t *p, size_t n, size_t *used)
{
	size_t i = 0;
	while (r->status == HTTPREQ_MORE && i < n) {
		unsigned char c = p[i++];
		if (++r->total > HTTPREQ_HEAD_MAX) {
			r->status = r->have_line ? HTTPREQ_FIELDS_TOO_LARGE : HTTPREQ_URI_TOO_LONG;
			break;
		}
		if (c == '\n') {
			r->cr = false;
			r->status = end_of_line(r);
			r->len = 0;
			continue;
		}
		if (r->cr || (c < 0x20 && c != '\t' && c != '\r') || c == 0x7f) {
			r->status = HTTPREQ_BAD_REQUEST; /* a CR alone, or a control byte */
			break;
		}
		if (c == '\r') {
			r->cr = true;
			continue;
		}
		if (r->len == HTTPREQ_LINE_MAX) {
			r->status = r->have_line ? HTTPREQ_FIELDS_TOO_LARGE : HTTPREQ_URI_TOO_LONG;
			break;
		}
		r->line[r->len++] = (char)c;
	}
	if (used)
		*used = i;
	return r->status;
}
