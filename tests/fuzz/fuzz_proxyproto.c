/*
 * libFuzzer target for worker/proxyproto: the PROXY protocol header a
 * trusted balancer sends before the SOCKS greeting (v1 text, v2 binary).
 *
 * Input layout: the first byte chooses the slice size (1..16) the rest is
 * fed in, as a socket may deliver it; the second half of the input is also
 * parsed as a trust list.
 *
 * Invariants checked: the parser never takes more bytes than given nor
 * more than a header's bound; once it answers DONE or ERROR it takes
 * nothing more; the same bytes fed whole give the same answer, the same
 * length and the same address; a DONE with an address has a family the
 * header can carry.
 */
#include <netinet/in.h>

#include "fuzz_common.h"

#include "../../worker/proxyproto.h"

static int run(const uint8_t *data, size_t size, size_t step, struct proxyproto *p, size_t *total)
{
	proxyproto_init(p);
	size_t off = 0;
	int rc = PROXYPROTO_MORE;
	while (off < size && rc == PROXYPROTO_MORE) {
		size_t k = size - off < step ? size - off : step;
		size_t used = 0;
		rc = proxyproto_feed(p, data + off, k, &used);
		CHECK(used <= k);
		CHECK(rc != PROXYPROTO_MORE || used == k);
		off += used;
	}
	*total = off;
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	size_t step = (size_t)(data[0] % 16) + 1;
	data++;
	size--;
	struct proxyproto a, b;
	size_t na, nb;
	int ra = run(data, size, step, &a, &na);
	int rb = run(data, size, size ? size : 1, &b, &nb);
	CHECK(ra == rb);
	CHECK(na == nb);
	CHECK(na <= PROXYPROTO_V2_HEADER + PROXYPROTO_V2_BODY_MAX);
	CHECK(a.version == 1 ? na <= PROXYPROTO_V1_MAX : 1);
	if (ra == PROXYPROTO_DONE) {
		CHECK(a.has_addr == b.has_addr);
		if (a.has_addr) {
			CHECK(a.src.ss_family == AF_INET || a.src.ss_family == AF_INET6);
			CHECK(memcmp(&a.src, &b.src, sizeof a.src) == 0);
		}
	}
	if (ra != PROXYPROTO_MORE) {
		size_t used = 1;
		CHECK(proxyproto_feed(&a, data, size, &used) == ra && used == 0);
	}
	/* The trust list text. */
	char text[256];
	size_t h = size / 2, tl = size - h < sizeof text - 1 ? size - h : sizeof text - 1;
	memcpy(text, data + h, tl);
	text[tl] = '\0';
	struct proxyproto_trust t;
	if (proxyproto_trust_parse(&t, text) == 0) {
		CHECK(t.n <= PROXYPROTO_TRUST_MAX);
		for (size_t i = 0; i < t.n; i++)
			CHECK(t.net[i].plen <= (t.net[i].family == AF_INET ? 32 : 128));
		if (ra == PROXYPROTO_DONE && a.has_addr)
			(void)proxyproto_trusted(&t, &a.src);
	} else {
		CHECK(t.n == 0);
	}
	return 0;
}
