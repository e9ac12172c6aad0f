#include "rfc1961.h"

#include <stdlib.h>
#include <string.h>

/* The token buffer's first size: a Kerberos AP-REQ or a wrapped chunk of
 * a few KiB fits without growing. */
#define RFC1961_FIRST_CAP 2048

void rfc1961_init(struct rfc1961_msg *m, uint8_t expect)
{
	memset(m, 0, sizeof *m);
	m->expect = expect;
}

void rfc1961_expect(struct rfc1961_msg *m, uint8_t expect)
{
	m->expect = expect;
}

static int fail(struct rfc1961_msg *m, enum rfc1961_error e)
{
	m->error = (uint8_t)e;
	return RFC1961_ERROR;
}

int rfc1961_feed(struct rfc1961_msg *m, const uint8_t *in, size_t n, size_t *used)
{
	size_t i = 0;
	*used = 0;
	if (m->error)
		return RFC1961_ERROR;
	/* A message that was complete: this feed starts the next one. */
	if (m->have == 4 && m->got == m->len)
		m->have = 0;
	if (m->have == 2 && m->mtyp == RFC1961_FAILURE)
		m->have = 0;
	while (m->have < 4 && i < n) {
		m->hdr[m->have++] = in[i++];
		if (m->have == 1 && m->hdr[0] != RFC1961_VERSION) {
			*used = i;
			return fail(m, RFC1961_BAD_VERSION);
		}
		if (m->have == 2) {
			m->mtyp = m->hdr[1];
			if (m->mtyp == RFC1961_FAILURE) {
				m->len = m->got = 0;
				*used = i;
				return RFC1961_DONE;
			}
			if (m->mtyp != m->expect) {
				*used = i;
				return fail(m, RFC1961_BAD_TYPE);
			}
		}
		if (m->have == 4) {
			m->len = (uint32_t)m->hdr[2] << 8 | m->hdr[3];
			m->got = 0;
			if (m->len == 0) {
				*used = i;
				return fail(m, RFC1961_EMPTY_TOKEN);
			}
		}
	}
	if (m->have < 4) {
		*used = i;
		return RFC1961_MORE;
	}
	size_t want = m->len - m->got;
	if (want > n - i)
		want = n - i;
	/* The buffer grows with the bytes that came (doubling, at most to
	 * the announced length), never ahead to what the header claims. */
	if (m->got + want > m->cap) {
		size_t cap = m->cap ? (size_t)m->cap * 2 : RFC1961_FIRST_CAP;
		if (cap < m->got + want)
			cap = m->got + want;
		if (cap > m->len)
			cap = m->len;
		uint8_t *t = realloc(m->token, cap);
		if (!t) {
			*used = i;
			return fail(m, RFC1961_NO_MEMORY);
		}
		m->token = t;
		m->cap = (uint32_t)cap;
	}
	if (want)
		memcpy(m->token + m->got, in + i, want);
	m->got += (uint32_t)want;
	*used = i + want;
	return m->got == m->len ? RFC1961_DONE : RFC1961_MORE;
}

void rfc1961_free(struct rfc1961_msg *m)
{
	free(m->token);
	m->token = NULL;
	m->cap = 0;
}

void rfc1961_header(uint8_t out[4], uint8_t mtyp, size_t len)
{
	out[0] = RFC1961_VERSION;
	out[1] = mtyp;
	out[2] = (uint8_t)(len >> 8);
	out[3] = (uint8_t)len;
}
