/*
 * libFuzzer target for admin/pipo1: the request reader of the original
 * pipo protocol (version 1), after its AUTH (RFC 1929 layout, VER 0x01).
 *
 * Input layout:
 *   byte 0          bits 0-2: k = bits + 1 chunk-size bytes follow
 *   bytes 1..k      chunk sizes, used in turn (0 feeds an empty slice)
 *   the rest        the byte stream: AUTH, then requests
 *
 * The stream is parsed chunked and in one slice: the outcome (AUTH, the
 * requests and where an unknown one stopped the stream) must not depend
 * on the split.  Each slice is copied to the end of a heap buffer so that
 * ASan catches any read beyond it.  Every request parsed is encoded again
 * and must give back exactly the bytes it was read from.
 */
#include "fuzz_common.h"

#include "../../admin/pipo1.h"
#include "../../shared/rfc1929.h"

struct fz_chunks {
	const uint8_t *sizes;
	size_t nsizes, next;
};

static size_t fz_next(struct fz_chunks *c, size_t left)
{
	if (!c)
		return left;
	size_t k = c->sizes[c->next++ % c->nsizes];
	return k < left ? k : left;
}

static uint64_t fz_mix(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

struct fz_result {
	int auth_rc, last;
	size_t auth_used, requests, consumed;
	uint64_t digest;
};

static void fz_parse(const uint8_t *buf, size_t n, struct fz_chunks *chunks, struct fz_result *res)
{
	size_t cap = n ? n : 1;
	uint8_t *scratch = malloc(cap);
	CHECK(scratch);
	memset(res, 0, sizeof *res);
	res->digest = 0xcbf29ce484222325ull;

	struct rfc1929 a;
	memset(&a, 0xa5, sizeof a);
	rfc1929_init(&a, PIPO1_VERSION, true);
	size_t off = 0;
	unsigned empty = 0;
	int rc = RFC1929_MORE;
	while (rc == RFC1929_MORE && off < n) {
		size_t k = fz_next(chunks, n - off);
		if (k == 0 && ++empty > 8)
			k = 1;
		uint8_t *slice = scratch + cap - k;
		if (k)
			memcpy(slice, buf + off, k);
		size_t used = (size_t)-1;
		rc = rfc1929_feed(&a, slice, k, &used);
		CHECK(used <= k);
		off += used;
	}
	res->auth_rc = rc;
	res->auth_used = off;
	if (rc == RFC1929_DONE) {
		CHECK(a.ver == PIPO1_VERSION && a.ulen >= 1 && a.plen >= 1);
		struct pipo1_reader r;
		memset(&r, 0x5a, sizeof r);
		pipo1_reader_init(&r);
		size_t start = off; /* where the current request began */
		empty = 0;
		for (size_t guard = 0; off < n && guard < 4 * n + 64; guard++) {
			size_t k = fz_next(chunks, n - off);
			if (k == 0 && ++empty > 8)
				k = 1;
			uint8_t *slice = scratch + cap - k;
			if (k)
				memcpy(slice, buf + off, k);
			size_t used = (size_t)-1;
			int fr = pipo1_reader_feed(&r, slice, k, &used);
			CHECK(used <= k);
			CHECK(fr == PIPO1_NEED_MORE || fr == PIPO1_DONE || fr == PIPO1_ERROR);
			if (fr == PIPO1_NEED_MORE)
				CHECK(used == k);
			off += used;
			res->last = fr;
			if (fr == PIPO1_ERROR) {
				CHECK(!pipo1_known(r.req.type, r.req.cmd));
				CHECK(off - start == 2);
				break;
			}
			if (fr != PIPO1_DONE)
				continue;
			res->requests++;
			CHECK(pipo1_known(r.req.type, r.req.cmd));
			CHECK(strlen(r.req.user) <= r.req.ulen && strlen(r.req.pass) <= r.req.plen);
			uint8_t out[2 + 2 * 256 + 8];
			size_t len = pipo1_request_encode(out, sizeof out, &r.req);
			CHECK(len == off - start);
			CHECK(memcmp(out, buf + start, len) == 0);
			res->digest = fz_mix(res->digest, out, len);
			start = off;
			pipo1_reader_wipe(&r);
		}
	}
	res->consumed = off;
	free(scratch);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t nsizes = (size_t)(data[0] & 7) + 1;
	if (size < 1 + nsizes)
		return 0;
	struct fz_chunks chunks = {.sizes = data + 1, .nsizes = nsizes, .next = 0};
	const uint8_t *buf = data + 1 + nsizes;
	size_t n = size - 1 - nsizes;
	static struct fz_result x, y;
	fz_parse(buf, n, &chunks, &x);
	fz_parse(buf, n, NULL, &y);
	CHECK(x.auth_rc == y.auth_rc && x.auth_used == y.auth_used);
	CHECK(x.requests == y.requests && x.digest == y.digest);
	CHECK(x.consumed == y.consumed);
	return 0;
}
