/*
 * libFuzzer target for worker/rfc1961: the GSS-API method's messages
 * (RFC 1961) as a client sends them, possibly several back to back.
 *
 * Input layout: the first byte chooses the slice size (1..16) and the
 * message type expected (its high bits); the rest is fed in slices.
 *
 * Invariants checked: the parser never takes more bytes than given; a
 * message is header plus LEN bytes (two for the failure message) and its
 * token is at most RFC1961_TOKEN_MAX; fed in slices or whole, the same
 * messages come out with the same tokens; after an error nothing more is
 * taken.
 */
#include "fuzz_common.h"

#include "../../worker/rfc1961.h"

#define MAX_MSGS 64

struct seen {
	size_t n;
	uint8_t mtyp[MAX_MSGS];
	uint32_t len[MAX_MSGS];
	uint32_t sum[MAX_MSGS];
};

static int run(const uint8_t *data, size_t size, size_t step, uint8_t expect, struct seen *s)
{
	struct rfc1961_msg m;
	rfc1961_init(&m, expect);
	size_t off = 0;
	int rc = RFC1961_MORE;
	s->n = 0;
	while (off < size && rc != RFC1961_ERROR && s->n < MAX_MSGS) {
		size_t k = size - off < step ? size - off : step;
		size_t used = 0;
		rc = rfc1961_feed(&m, data + off, k, &used);
		CHECK(used <= k);
		CHECK(rc != RFC1961_MORE || used == k);
		off += used;
		if (rc == RFC1961_DONE) {
			CHECK(m.len <= RFC1961_TOKEN_MAX);
			CHECK(m.mtyp == RFC1961_FAILURE ? m.len == 0 : m.len > 0 && m.mtyp == expect);
			uint32_t sum = 0;
			for (uint32_t i = 0; i < m.len; i++)
				sum = sum * 31 + m.token[i];
			s->mtyp[s->n] = m.mtyp;
			s->len[s->n] = m.len;
			s->sum[s->n] = sum;
			s->n++;
		}
	}
	if (rc == RFC1961_ERROR) {
		size_t used = 1;
		CHECK(rfc1961_feed(&m, data, size, &used) == RFC1961_ERROR && used == 0);
		CHECK(m.error != RFC1961_OK);
	}
	rfc1961_free(&m);
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t step = (size_t)(data[0] % 16) + 1;
	uint8_t expect = (uint8_t)(1 + (data[0] >> 4) % 3);
	data++;
	size--;
	static struct seen a, b;
	int ra = run(data, size, step, expect, &a);
	int rb = run(data, size, size ? size : 1, expect, &b);
	if (a.n < MAX_MSGS && b.n < MAX_MSGS) {
		CHECK(ra == rb || (ra != RFC1961_ERROR && rb != RFC1961_ERROR));
		CHECK(a.n == b.n);
		for (size_t i = 0; i < a.n; i++)
			CHECK(a.mtyp[i] == b.mtyp[i] && a.len[i] == b.len[i] && a.sum[i] == b.sum[i]);
	}
	return 0;
}
