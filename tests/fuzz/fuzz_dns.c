/*
 * libFuzzer target for worker/dns: the answer decoder (header, question,
 * record walk, SOA, and c-ares' address parsing behind it), the name reader
 * at every offset, base64url and query encoding.
 *
 * Input layout:
 *   byte 0      bit 0: question type (0 = A, 1 = AAAA); bit 1: expect the
 *               name found in the message's own question (so that the
 *               decoder gets past the question check) or "v4.test"
 *   the rest    the DNS message, copied to the end of a heap buffer so that
 *               ASan catches any read beyond it
 *
 * Invariants checked: a DNS_ANSWER has 1..DNS_MAX_ADDRS addresses of a known
 * family; other results have none; names read are at most 253 characters;
 * base64url has the computed length.
 */
#include "fuzz_common.h"

#include <sys/socket.h>

#include "../../worker/dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > DNS_MAX_MSG + 1)
		return 0;
	uint16_t qtype = (data[0] & 1) ? DNS_TYPE_AAAA : DNS_TYPE_A;
	size_t n = size - 1;
	uint8_t *msg = malloc(n ? n : 1);
	if (!msg)
		return 0;
	memcpy(msg, data + 1, n);

	char name[DNS_MAX_NAME + 1] = "v4.test";
	size_t next;
	if ((data[0] & 2) && n > DNS_HEADER_LEN) {
		char q[DNS_MAX_NAME + 1];
		if (dns_name_read(msg, n, DNS_HEADER_LEN, q, sizeof q, &next) == 0) {
			CHECK(strlen(q) <= DNS_MAX_NAME);
			CHECK(next <= n);
			memcpy(name, q, sizeof q);
		}
	}
	struct dns_answer a;
	enum dns_result r = dns_answer_decode(msg, n, name, qtype, &a);
	CHECK(r == a.result);
	if (r == DNS_ANSWER) {
		CHECK(a.naddrs >= 1 && a.naddrs <= DNS_MAX_ADDRS);
		for (size_t i = 0; i < a.naddrs; i++)
			CHECK(a.addrs[i].family == (qtype == DNS_TYPE_A ? AF_INET : AF_INET6));
		CHECK(a.ttl <= DNS_TTL_MAX_VALID);
	} else {
		CHECK(a.naddrs == 0);
	}

	/* The name reader from every offset (bounded: the first 512). */
	for (size_t off = 0; off < n && off < 512; off++) {
		char out[DNS_MAX_NAME + 1];
		if (dns_name_read(msg, n, off, out, sizeof out, &next) == 0) {
			CHECK(strlen(out) <= DNS_MAX_NAME);
			CHECK(next > off && next <= n);
		}
	}

	/* base64url of the input, and a query for the bytes taken as a name. */
	size_t blen = dns_b64url_len(n);
	char *b64 = malloc(blen + 1);
	if (b64) {
		CHECK(dns_b64url_encode(msg, n, b64, blen + 1) == (int)blen);
		CHECK(strlen(b64) == blen);
		free(b64);
	}
	char text[300];
	size_t tl = n < sizeof text - 1 ? n : sizeof text - 1;
	memcpy(text, msg, tl);
	text[tl] = '\0';
	char norm[DNS_MAX_NAME + 1];
	if (dns_name_normalize(text, norm, sizeof norm) >= 0) {
		uint8_t qbuf[512];
		int ql = dns_query_encode(norm, qtype, qbuf, sizeof qbuf);
		CHECK(ql > DNS_HEADER_LEN);
		char back[DNS_MAX_NAME + 1];
		CHECK(dns_name_read(qbuf, (size_t)ql, DNS_HEADER_LEN, back, sizeof back, &next) == 0);
		CHECK(strcmp(back, norm) == 0);
	}
	free(msg);
	return 0;
}
