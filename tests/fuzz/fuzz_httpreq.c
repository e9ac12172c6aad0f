/*
 * libFuzzer target for shared/httpreq: the request head reader of the
 * metrics endpoint.
 *
 * Input layout:
 *   byte 0     chunk size for the split feed (0 feeds one byte at a time)
 *   the rest   the bytes of the connection
 *
 * The head is read in one slice and in chunks: the status, the bytes taken
 * and the method must not depend on the split; a result other than MORE is
 * final; the bytes taken never exceed the head bound.  Each chunk is copied
 * to the end of a heap buffer so that ASan catches any read beyond it.
 */
#include "fuzz_common.h"

#include "../../shared/httpreq.h"

static enum httpreq_status feed(struct httpreq *r, const uint8_t *p, size_t n, size_t chunk,
                                size_t *taken)
{
	httpreq_init(r);
	enum httpreq_status st = HTTPREQ_MORE;
	*taken = 0;
	for (size_t off = 0; off < n;) {
		size_t k = n - off < chunk ? n - off : chunk;
		uint8_t *b = malloc(k ? k : 1);
		CHECK(b);
		memcpy(b, p + off, k);
		size_t used = 0;
		st = httpreq_feed(r, b, k, &used);
		free(b);
		CHECK(used <= k);
		*taken += used;
		if (st != HTTPREQ_MORE) {
			CHECK(httpreq_feed(r, p, n, &used) == st && used == 0);
			break;
		}
		CHECK(used == k);
		off += k;
	}
	CHECK(*taken <= HTTPREQ_HEAD_MAX + 1);
	CHECK(st == HTTPREQ_MORE || httpreq_reason(st)[0]);
	return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t chunk = data[0] ? data[0] : 1;
	data++, size--;
	static struct httpreq a, b;
	size_t ta, tb;
	enum httpreq_status sa = feed(&a, data, size, size ? size : 1, &ta);
	enum httpreq_status sb = feed(&b, data, size, chunk, &tb);
	CHECK(sa == sb);
	CHECK(ta == tb);
	if (sa == HTTPREQ_DONE)
		CHECK(a.method == b.method && a.minor == b.minor && a.openmetrics == b.openmetrics);
	return 0;
}
