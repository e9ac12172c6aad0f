/*
 * Unit tests for worker/dns (the DNS wire codec of the DoH client) and
 * worker/dnscache (the per-worker cache): base64url, query encoding, name
 * normalization, answer decoding on good and hostile input (compression
 * loops, truncation at every length, bogus counts, huge TTLs, question
 * mismatches, rcodes), and the cache's expiry, negative entries and LRU
 * eviction with a clock passed in.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "../../worker/dns.h"
#include "../../worker/dnscache.h"

/* ---- a tiny message builder ------------------------------------------------ */

struct msg {
	uint8_t b[4096];
	size_t n;
};

static void put8(struct msg *m, unsigned v)
{
	m->b[m->n++] = (uint8_t)v;
}

static void put16(struct msg *m, unsigned v)
{
	put8(m, v >> 8);
	put8(m, v & 0xff);
}

static void put32(struct msg *m, uint32_t v)
{
	put16(m, v >> 16);
	put16(m, v & 0xffff);
}

static void put_name(struct msg *m, const char *name)
{
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t len = dot ? (size_t)(dot - name) : strlen(name);
		put8(m, (unsigned)len);
		memcpy(m->b + m->n, name, len);
		m->n += len;
		name += len + (dot ? 1 : 0);
	}
	put8(m, 0);
}

static void header(struct msg *m, unsigned id, unsigned flags, unsigned qd, unsigned an,
                   unsigned ns, unsigned ar)
{
	m->n = 0;
	put16(m, id);
	put16(m, flags);
	put16(m, qd);
	put16(m, an);
	put16(m, ns);
	put16(m, ar);
}

static void question(struct msg *m, const char *name, unsigned type)
{
	put_name(m, name);
	put16(m, type);
	put16(m, DNS_CLASS_IN);
}

/* An RR whose owner is a pointer to the question name (offset 12). */
static void rr_a(struct msg *m, uint32_t ttl, const char *ip)
{
	put16(m, 0xc00c);
	put16(m, DNS_TYPE_A);
	put16(m, DNS_CLASS_IN);
	put32(m, ttl);
	put16(m, 4);
	inet_pton(AF_INET, ip, m->b + m->n);
	m->n += 4;
}

static void rr_aaaa(struct msg *m, uint32_t ttl, const char *ip)
{
	put16(m, 0xc00c);
	put16(m, DNS_TYPE_AAAA);
	put16(m, DNS_CLASS_IN);
	put32(m, ttl);
	put16(m, 16);
	inet_pton(AF_INET6, ip, m->b + m->n);
	m->n += 16;
}

static void rr_soa(struct msg *m, uint32_t ttl, uint32_t minimum)
{
	put_name(m, "test");
	put16(m, DNS_TYPE_SOA);
	put16(m, DNS_CLASS_IN);
	put32(m, ttl);
	size_t len_at = m->n;
	put16(m, 0);
	size_t start = m->n;
	put_name(m, "ns.test");
	put_name(m, "admin.test");
	put32(m, 1);
	put32(m, 3600);
	put32(m, 600);
	put32(m, 86400);
	put32(m, minimum);
	size_t len = m->n - start;
	m->b[len_at] = (uint8_t)(len >> 8);
	m->b[len_at + 1] = (uint8_t)len;
}

#define RESP 0x8180 /* QR RD RA, NOERROR */

/* ---- base64url ---------------------------------------------------------------- */

static void b64url_rfc4648_vectors_without_padding(void **state)
{
	(void)state;
	static const char *in[] = {"", "f", "fo", "foo", "foob", "fooba", "foobar"};
	static const char *out[] = {"", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy"};
	char buf[32];
	for (size_t i = 0; i < 7; i++) {
		int n = dns_b64url_encode((const uint8_t *)in[i], strlen(in[i]), buf, sizeof buf);
		assert_int_equal(n, (int)strlen(out[i]));
		assert_string_equal(buf, out[i]);
		assert_int_equal(dns_b64url_len(strlen(in[i])), strlen(out[i]));
	}
	/* The URL-safe alphabet: 62 and 63 are '-' and '_'. */
	const uint8_t x[] = {0xfb, 0xff, 0xbf};
	assert_int_equal(dns_b64url_encode(x, 3, buf, sizeof buf), 4);
	assert_string_equal(buf, "-_-_");
}

static void b64url_refuses_short_buffer(void **state)
{
	(void)state;
	char buf[4];
	assert_int_equal(dns_b64url_encode((const uint8_t *)"foo", 3, buf, 4), -ENOSPC);
	assert_int_equal(dns_b64url_encode((const uint8_t *)"foo", 3, buf, 5 - 1), -ENOSPC);
	char ok[5];
	assert_int_equal(dns_b64url_encode((const uint8_t *)"foo", 3, ok, 5), 4);
}

/* ---- names and queries ------------------------------------------------------------- */

static void query_for_v4_test_matches_rfc8484_form(void **state)
{
	(void)state;
	uint8_t q[512];
	int n = dns_query_encode("v4.test", DNS_TYPE_A, q, sizeof q);
	assert_int_equal(n, 25);
	assert_int_equal(q[0], 0); /* ID 0 (RFC 8484 4.1) */
	assert_int_equal(q[1], 0);
	assert_int_equal(q[2] & 0x01, 1); /* RD */
	char b64[64];
	dns_b64url_encode(q, (size_t)n, b64, sizeof b64);
	assert_string_equal(b64, "AAABAAABAAAAAAAAAnY0BHRlc3QAAAEAAQ");
	assert_int_equal(dns_query_encode("v4.test", DNS_TYPE_A, q, 10), -ENOSPC);
	assert_int_equal(dns_query_encode("a..b", DNS_TYPE_A, q, sizeof q), -EINVAL);
}

static void name_normalize_accepts_host_names_only(void **state)
{
	(void)state;
	char out[DNS_MAX_NAME + 1];
	assert_int_equal(dns_name_normalize("WWW.Example.COM.", out, sizeof out), 15);
	assert_string_equal(out, "www.example.com");
	assert_int_equal(dns_name_normalize("_srv-x.a1", out, sizeof out), 9);
	static const char *bad[] = {"", ".", "a..b", ".a", "a b", "a\tb", "\xff\xfe", "a/b", "a..",
	                            "xn--*.test"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(dns_name_normalize(bad[i], out, sizeof out), -EINVAL);
	char label[80];
	memset(label, 'x', 64);
	label[64] = '\0';
	assert_int_equal(dns_name_normalize(label, out, sizeof out), -EINVAL);
	label[63] = '\0';
	assert_int_equal(dns_name_normalize(label, out, sizeof out), 63);
	/* 253 characters is the longest name; 254 is too long. */
	char longname[300];
	snprintf(longname, sizeof longname, "%.63s.%.63s.%.63s.%.61s", label, label, label, label);
	assert_int_equal(strlen(longname), 253);
	assert_int_equal(dns_name_normalize(longname, out, sizeof out), 253);
	snprintf(longname, sizeof longname, "%.63s.%.63s.%.63s.%.62s", label, label, label, label);
	assert_int_equal(dns_name_normalize(longname, out, sizeof out), -EINVAL);
	assert_int_equal(dns_name_normalize("abc", out, 3), -EINVAL);
}

static void name_read_follows_backward_pointers_and_refuses_loops(void **state)
{
	(void)state;
	struct msg m;
	header(&m, 0, RESP, 1, 0, 0, 0);
	question(&m, "www.example.test", DNS_TYPE_A);
	/* At 38: "mail" + pointer to "example.test" (offset 16). */
	size_t at = m.n;
	put8(&m, 4);
	memcpy(m.b + m.n, "MAIL", 4);
	m.n += 4;
	put16(&m, 0xc000 | 16);
	char out[DNS_MAX_NAME + 1];
	size_t next = 0;
	assert_int_equal(dns_name_read(m.b, m.n, at, out, sizeof out, &next), 0);
	assert_string_equal(out, "mail.example.test");
	assert_int_equal(next, at + 7);

	/* A pointer to itself, a forward pointer, a pointer cycle. */
	size_t self = m.n;
	put16(&m, 0xc000 | (unsigned)self);
	assert_int_equal(dns_name_read(m.b, m.n, self, out, sizeof out, &next), -EBADMSG);
	uint8_t fwd[] = {0xc0, 0x04, 0, 0, 1, 'a', 0};
	assert_int_equal(dns_name_read(fwd, sizeof fwd, 0, out, sizeof out, &next), -EBADMSG);
	/* 0: "a" then pointer to 0 (jumps back to its own start). */
	uint8_t cyc[] = {1, 'a', 0xc0, 0x00};
	assert_int_equal(dns_name_read(cyc, sizeof cyc, 0, out, sizeof out, &next), -EBADMSG);
	/* 2 -> 0 -> 2: the second jump does not go strictly backwards. */
	uint8_t cyc2[] = {1, 'a', 0xc0, 0x00, 0xc0, 0x02};
	assert_int_equal(dns_name_read(cyc2, sizeof cyc2, 4, out, sizeof out, &next), -EBADMSG);
	/* Extended label types and labels beyond the end. */
	uint8_t ext[] = {0x41, 'a', 0};
	assert_int_equal(dns_name_read(ext, sizeof ext, 0, out, sizeof out, &next), -EBADMSG);
	uint8_t past[] = {5, 'a', 'b'};
	assert_int_equal(dns_name_read(past, sizeof past, 0, out, sizeof out, &next), -EBADMSG);
	/* A dot inside a label has no unambiguous text form. */
	uint8_t dot[] = {3, 'a', '.', 'b', 0};
	assert_int_equal(dns_name_read(dot, sizeof dot, 0, out, sizeof out, &next), -EBADMSG);
	/* The root. */
	uint8_t root[] = {0};
	assert_int_equal(dns_name_read(root, 1, 0, out, sizeof out, &next), 0);
	assert_string_equal(out, "");
}

static void name_read_refuses_names_over_253_characters(void **state)
{
	(void)state;
	struct msg m;
	m.n = 0;
	for (int i = 0; i < 5; i++) { /* 5 x 63 + 4 dots */
		put8(&m, 63);
		memset(m.b + m.n, 'a', 63);
		m.n += 63;
	}
	put8(&m, 0);
	char out[1024];
	size_t next;
	assert_int_equal(dns_name_read(m.b, m.n, 0, out, sizeof out, &next), -EBADMSG);
}

/* ---- answers ------------------------------------------------------------------------------ */

static void decode_a_answer_all_addresses_in_order_min_ttl(void **state)
{
	(void)state;
	struct msg m;
	header(&m, 0, RESP, 1, 3, 0, 0);
	question(&m, "multi.test", DNS_TYPE_A);
	rr_a(&m, 300, "127.0.0.2");
	rr_a(&m, 60, "127.0.0.3");
	rr_a(&m, 300, "127.0.0.1");
	struct dns_answer a;
	assert_int_equal(dns_answer_decode(m.b, m.n, "multi.test", DNS_TYPE_A, &a), DNS_ANSWER);
	assert_int_equal(a.naddrs, 3);
	assert_int_equal(a.ttl, 60);
	assert_true(a.has_ttl);
	static const uint8_t want[3] = {2, 3, 1};
	for (int i = 0; i < 3; i++) {
		assert_int_equal(a.addrs[i].family, AF_INET);
		assert_int_equal(a.addrs[i].addr[0], 127);
		assert_int_equal(a.addrs[i].addr[3], want[i]);
	}
	/* The question is compared without regard to case. */
	m.b[12 + 1] = 'M';
	assert_int_equal(dns_answer_decode(m.b, m.n, "multi.test", DNS_TYPE_A, &a), DNS_ANSWER);
}

static void decode_aaaa_answer(void **state)
{
	(void)state;
	struct msg m;
	header(&m, 0, RESP, 1, 1, 0, 0);
	question(&m, "v6.test", DNS_TYPE_AAAA);
	rr_aaaa(&m, 3600, "::1");
	struct dns_answer a;
	assert_int_equal(dns_answer_decode(m.b, m.n, "v6.test", DNS_TYPE_AAAA, &a), DNS_ANSWER);
	assert_int_equal(a.naddrs, 1);
	assert_int_equal(a.addrs[0].family, AF_INET6);
	assert_int_equal(a.addrs[0].addr[15], 1);
	/* An A answer does not satisfy an AAAA question. */
	assert_int_equal(dns_answer_decode(m.b, m.n, "v6.test", DNS_TYPE_A, &a), DNS_MALFORMED);
}

static void decode_follows_cname_chain_with_its_ttl(void **state)
{
	(void)state;
	struct msg m;
	header(&m, 0, RESP, 1, 3, 0, 0);
	question(&m, "www.test", DNS_TYPE_A);
	/* www.test CNAME mid.test (ttl 30); mid.test CNAME end.test; end.test A */
	put16(&m, 0xc00c);
	put16(&m, DNS_TYPE_CNAME);
	put16(&m, DNS_CLASS_IN);
	put32(&m, 30);
	put16(&m, 10);
	size_t mid = m.n;
	put_name(&m, "mid.test");
	put16(&m, 0xc000 | (unsigned)mid);
	put16(&m, DNS_TYPE_CNAME);
	put16(&m, DNS_CLASS_IN);
	put32(&m, 3600);
	put16(&m, 10);
	size_t end = m.n;
	put_name(&m, "end.test");
	put16(&m, 0xc000 | (unsigned)end);
	put16(&m, DNS_TYPE_A);
	put16(&m, DNS_CLASS_IN);
	put32(&m, 600);
	put16(&m, 4);
	put32(&m, 0x7f000009);
	struct dns_answer a;
	assert_int_equal(dns_answer_decode(m.b, m.n, "www.test", DNS_TYPE_A, &a), DNS_ANSWER);
	assert_int_equal(a.naddrs, 1);
	assert_int_equal(a.addrs[0].addr[3], 9);
	assert_int_equal(a.ttl, 30); /* the chain lives as long as its shortest link */
}

static void decode_nxdomain_negative_ttl_from_soa(void **state)
{
	(void)state;
	struct msg m;
	header(&m, 0, 0x8183, 1, 0, 1, 0);
	question(&m, "nope.test", DNS_TYPE_A);
	rr_soa(&m, 3600, 10);
	struct dns_answer a;
	assert_int_equal(dns_answer_decode(m.b, m.n, "nope.test", DNS_TYPE_A, &a), DNS_NXDOMAIN);
	assert_true(a.has_ttl);
	assert_int_equal(a.ttl, 10); /* min(SOA TTL, MINIMUM), RFC 2308 5 */
	header(&m, 0, 0x8183, 1, 0, 1, 0);
	question(&m, "nope.test", DNS_TYPE_A);
	rr_soa(&m, 7, 900);
	assert_int_equal(dns_answer_decode(m.b, m.n, "nope.test", DNS_TYPE_A, &a), DNS_NXDOMAIN);
	assert_int_equal(a.ttl, 7);
	assert_int_equal(a.naddrs, 0);
}

static void decode_nodata_with_and_without_soa(void **state)
{
	(void)state;
	struct msg m;
	header(&m, 0, RESP, 1, 0, 1, 0);
	question(&m, "v4.test", DNS_TYPE_AAAA);
	rr_soa(&m, 3600, 60);
	struct dns_answer a;
	assert_int_equal(dns_answer_decode(m.b, m.n, "v4.test", DNS_TYPE_AAAA, &a), DNS_NODATA);
	assert_true(a.has_ttl);
	assert_int_equal(a.ttl, 60);
	header(&m, 0, RESP, 1, 0, 0, 0);
	question(&m, "v4.test", DNS_TYPE_AAAA);
	assert_int_equal(dns_answer_decode(m.b, m.n, "v4.test", DNS_TYPE_AAAA, &a), DNS_NODATA);
	assert_false(a.has_ttl);
}

static void decode_server_failures_by_rcode(void **state)
{
	(void)state;
	static const unsigned rcodes[] = {DNS_RCODE_SERVFAIL, DNS_RCODE_REFUSED, DNS_RCODE_FORMERR,
	                                  DNS_RCODE_NOTIMP};
	for (size_t i = 0; i < 4; i++) {
		struct msg m;
		/* An answer record is present: the rcode wins (read first). */
		header(&m, 0, 0x8180 | rcodes[i], 1, 1, 0, 0);
		question(&m, "v4.test", DNS_TYPE_A);
		rr_a(&m, 60, "127.0.0.1");
		struct dns_answer a;
		assert_int_equal(dns_answer_decode(m.b, m.n, "v4.test", DNS_TYPE_A, &a),
		                 DNS_SERVER_FAILURE);
		assert_int_equal(a.rcode, rcodes[i]);
		assert_int_equal(a.naddrs, 0);
	}
}

static void decode_refuses_wrong_header_or_question(void **state)
{
	(void)state;
	struct dns_answer a;
	struct msg m;
	/* ID not 0; a query (QR 0); opcode 1; TC set; 0 and 2 questions. */
	static const struct {
		unsigned id, flags, qd;
	} hdr[] = {{1, RESP, 1}, {0, 0x0100, 1}, {0, RESP | 0x0800, 1}, {0, RESP | 0x0200, 1},
	           {0, RESP, 0}, {0, RESP, 2}};
	for (size_t i = 0; i < sizeof hdr / sizeof hdr[0]; i++) {
		header(&m, hdr[i].id, hdr[i].flags, hdr[i].qd, 1, 0, 0);
		question(&m, "v4.test", DNS_TYPE_A);
		rr_a(&m, 60, "127.0.0.1");
		assert_int_equal(dns_answer_decode(m.b, m.n, "v4.test", DNS_TYPE_A, &a), DNS_MALFORMED);
	}
	/* Another name, another class. */
	header(&m, 0, RESP, 1, 1, 0, 0);
	question(&m, "v5.test", DNS_TYPE_A);
	rr_a(&m, 60, "127.0.0.1");
	assert_int_equal(dns_answer_decode(m.b, m.n, "v4.test", DNS_TYPE_A, &a), DNS_MALFORMED);
	header(&m, 0, RESP, 1, 0, 0, 0);
	put_name(&m, "v4.test");
	put16(&m, DNS_TYPE_A);
	put16(&m, 3); /* CHAOS */
	assert_int_equal(dns_answer_decode(m.b, m.n, "v4.test", DNS_TYPE_A, &a), DNS_MALFORMED);
	/* Nothing, a bare header, a NULL body, more than 65535 bytes. */
	assert_int_equal(dns_answer_decode(m.b, 0, "v4.test", DNS_TYPE_A, &a), DNS_MALFORMED);
	assert_int_equal(dns_answer_decode(m.b, 12, "v4.test", DNS_TYPE_A, &a), DNS_MALFORMED);
	assert_int_equal(dns_answer_decode(NULL, 100, "v4.test", DNS_TYPE_A, &a), DNS_MALFORMED);
	uint8_t *big = calloc(1, 70000);
	assert_non_null(big);
	memcpy(big, m.b, m.n);
	assert_int_equal(dns_answer_decode(big, 70000, "v4.test", DNS_TYPE_A, &a), DNS_MALFORMED);
	free(big);
}

static void decode_every_truncation_fails_cleanly(void **state)
{
	(void)state;
	struct msg m;
	header(&m, 0, 0x8183, 1, 0, 1, 0);
	question(&m, "nope.test", DNS_TYPE_A);
	rr_soa(&m, 3600, 10);
	struct dns_answer a;
	for (size_t n = 0; n < m.n; n++) {
		/* A heap copy of exactly n bytes: ASan sees any read past it. */
		uint8_t *p = malloc(n ? n : 1);
		memcpy(p, m.b, n);
		assert_int_equal(dns_answer_decode(p, n, "nope.test", DNS_TYPE_A, &a), DNS_MALFORMED);
		free(p);
	}
	header(&m, 0, RESP, 1, 2, 0, 0);
	question(&m, "dual.test", DNS_TYPE_A);
	rr_a(&m, 60, "127.0.0.1");
	rr_a(&m, 60, "127.0.0.2");
	for (size_t n = 0; n < m.n; n++) {
		uint8_t *p = malloc(n ? n : 1);
		memcpy(p, m.b, n);
		assert_int_equal(dns_answer_decode(p, n, "dual.test", DNS_TYPE_A, &a), DNS_MALFORMED);
		free(p);
	}
}

static void decode_bogus_counts_fail_cleanly(void **state)
{
	(void)state;
	struct msg m;
	struct dns_answer a;
	header(&m, 0, RESP, 1, 65535, 0, 0);
	question(&m, "v4.test", DNS_TYPE_A);
	rr_a(&m, 60, "127.0.0.1");
	assert_int_equal(dns_answer_decode(m.b, m.n, "v4.test", DNS_TYPE_A, &a), DNS_MALFORMED);
	header(&m, 0, 0x8183, 1, 0, 65535, 65535);
	question(&m, "nope.test", DNS_TYPE_A);
	assert_int_equal(dns_answer_decode(m.b, m.n, "nope.test", DNS_TYPE_A, &a), DNS_MALFORMED);
	/* rdlength beyond the end. */
	header(&m, 0, RESP, 1, 1, 0, 0);
	question(&m, "v4.test", DNS_TYPE_A);
	rr_a(&m, 60, "127.0.0.1");
	m.b[m.n - 5] = 0xff;
	assert_int_equal(dns_answer_decode(m.b, m.n, "v4.test", DNS_TYPE_A, &a), DNS_MALFORMED);
	/* An SOA whose rdata does not hold its 20 bytes of numbers. */
	header(&m, 0, 0x8183, 1, 0, 1, 0);
	question(&m, "nope.test", DNS_TYPE_A);
	rr_soa(&m, 3600, 10);
	m.n -= 4; /* the rdlength still claims the MINIMUM */
	assert_int_equal(dns_answer_decode(m.b, m.n, "nope.test", DNS_TYPE_A, &a), DNS_MALFORMED);
}

static void decode_maps_huge_ttls_to_zero(void **state)
{
	(void)state;
	struct msg m;
	header(&m, 0, RESP, 1, 1, 0, 0);
	question(&m, "v4.test", DNS_TYPE_A);
	rr_a(&m, 0xffffffffu, "127.0.0.1");
	struct dns_answer a;
	assert_int_equal(dns_answer_decode(m.b, m.n, "v4.test", DNS_TYPE_A, &a), DNS_ANSWER);
	assert_int_equal(a.ttl, 0); /* RFC 2181 8 */
	header(&m, 0, RESP, 1, 1, 0, 0);
	question(&m, "v4.test", DNS_TYPE_A);
	rr_a(&m, 0x7fffffffu, "127.0.0.1");
	assert_int_equal(dns_answer_decode(m.b, m.n, "v4.test", DNS_TYPE_A, &a), DNS_ANSWER);
	assert_int_equal(a.ttl, 0x7fffffffu);
	header(&m, 0, 0x8183, 1, 0, 1, 0);
	question(&m, "nope.test", DNS_TYPE_A);
	rr_soa(&m, 0x80000000u, 0x90000000u);
	assert_int_equal(dns_answer_decode(m.b, m.n, "nope.test", DNS_TYPE_A, &a), DNS_NXDOMAIN);
	assert_int_equal(a.ttl, 0);
	assert_int_equal(dns_ttl_clamp(0, 5, 3600), 5);
	assert_int_equal(dns_ttl_clamp(86400, 5, 3600), 3600);
	assert_int_equal(dns_ttl_clamp(60, 5, 3600), 60);
}

static void decode_caps_addresses(void **state)
{
	(void)state;
	struct msg m;
	header(&m, 0, RESP, 1, 40, 0, 0);
	question(&m, "big.test", DNS_TYPE_A);
	for (int i = 0; i < 40; i++) {
		char ip[32];
		snprintf(ip, sizeof ip, "127.0.1.%d", i + 1);
		rr_a(&m, 60, ip);
	}
	struct dns_answer a;
	assert_int_equal(dns_answer_decode(m.b, m.n, "big.test", DNS_TYPE_A, &a), DNS_ANSWER);
	assert_int_equal(a.naddrs, DNS_MAX_ADDRS);
	assert_int_equal(a.addrs[0].addr[3], 1);
}

/* ---- cache ---------------------------------------------------------------------------------- */

static struct dns_addr addr4(uint8_t last)
{
	struct dns_addr a = {.family = AF_INET, .addr = {127, 0, 0, last}, .ttl = 60};
	return a;
}

static void cache_positive_until_ttl(void **state)
{
	(void)state;
	struct dnscache *c;
	assert_int_equal(dnscache_new(8, &c), 0);
	struct dns_addr in[2] = {addr4(1), addr4(2)}, out[4];
	size_t n;
	assert_int_equal(dnscache_get(c, "a.test", 0, out, 4, &n), DNSCACHE_MISS);
	dnscache_put(c, "a.test", in, 2, 5, 1000);
	assert_int_equal(dnscache_get(c, "a.test", 1000, out, 4, &n), DNSCACHE_POSITIVE);
	assert_int_equal(n, 2);
	assert_int_equal(out[1].addr[3], 2);
	assert_int_equal(dnscache_get(c, "a.test", 5999, out, 1, &n), DNSCACHE_POSITIVE);
	assert_int_equal(n, 1);
	/* Expired at exactly ttl: dropped, a miss. */
	assert_int_equal(dnscache_get(c, "a.test", 6000, out, 4, &n), DNSCACHE_MISS);
	struct dnscache_stats st;
	dnscache_stats(c, &st);
	assert_int_equal(st.entries, 0);
	assert_int_equal(st.expirations, 1);
	assert_int_equal(st.hits, 2);
	dnscache_free(c);
}

static void cache_negative_entries(void **state)
{
	(void)state;
	struct dnscache *c;
	assert_int_equal(dnscache_new(8, &c), 0);
	struct dns_addr out[4];
	size_t n = 99;
	dnscache_put(c, "nx.test", NULL, 0, 10, 0);
	assert_int_equal(dnscache_get(c, "nx.test", 9999, out, 4, &n), DNSCACHE_NEGATIVE);
	assert_int_equal(n, 0);
	assert_int_equal(dnscache_get(c, "nx.test", 10000, out, 4, &n), DNSCACHE_MISS);
	/* ttl 0 stores nothing and removes an old entry. */
	struct dns_addr a = addr4(1);
	dnscache_put(c, "x.test", &a, 1, 10, 0);
	dnscache_put(c, "x.test", &a, 1, 0, 0);
	assert_int_equal(dnscache_get(c, "x.test", 1, out, 4, &n), DNSCACHE_MISS);
	dnscache_free(c);
}

static void cache_evicts_least_recently_used(void **state)
{
	(void)state;
	struct dnscache *c;
	assert_int_equal(dnscache_new(3, &c), 0);
	struct dns_addr a = addr4(1), out[4];
	size_t n;
	dnscache_put(c, "a", &a, 1, 100, 0);
	dnscache_put(c, "b", &a, 1, 100, 0);
	dnscache_put(c, "c", &a, 1, 100, 0);
	/* Use "a": "b" is now the least recently used. */
	assert_int_equal(dnscache_get(c, "a", 1, out, 4, &n), DNSCACHE_POSITIVE);
	dnscache_put(c, "d", &a, 1, 100, 0);
	assert_int_equal(dnscache_get(c, "b", 2, out, 4, &n), DNSCACHE_MISS);
	assert_int_equal(dnscache_get(c, "a", 2, out, 4, &n), DNSCACHE_POSITIVE);
	assert_int_equal(dnscache_get(c, "c", 2, out, 4, &n), DNSCACHE_POSITIVE);
	assert_int_equal(dnscache_get(c, "d", 2, out, 4, &n), DNSCACHE_POSITIVE);
	struct dnscache_stats st;
	dnscache_stats(c, &st);
	assert_int_equal(st.entries, 3);
	assert_int_equal(st.evictions, 1);
	/* Replacing keeps one entry per name. */
	dnscache_put(c, "d", &a, 1, 100, 0);
	dnscache_stats(c, &st);
	assert_int_equal(st.entries, 3);
	/* Shrinking evicts from the old end; 0 stores nothing. */
	dnscache_set_capacity(c, 1);
	dnscache_stats(c, &st);
	assert_int_equal(st.entries, 1);
	assert_int_equal(dnscache_get(c, "d", 3, out, 4, &n), DNSCACHE_POSITIVE);
	dnscache_set_capacity(c, 0);
	dnscache_put(c, "e", &a, 1, 100, 0);
	assert_int_equal(dnscache_get(c, "e", 3, out, 4, &n), DNSCACHE_MISS);
	dnscache_free(c);
}

static void cache_many_names_stay_bounded(void **state)
{
	(void)state;
	struct dnscache *c;
	assert_int_equal(dnscache_new(100, &c), 0);
	struct dns_addr a = addr4(1), out[4];
	size_t n;
	char name[32];
	for (int i = 0; i < 10000; i++) {
		snprintf(name, sizeof name, "n%d.test", i);
		dnscache_put(c, name, &a, 1, 100, i);
	}
	struct dnscache_stats st;
	dnscache_stats(c, &st);
	assert_int_equal(st.entries, 100);
	assert_int_equal(st.evictions, 9900);
	assert_int_equal(dnscache_get(c, "n9999.test", 10000, out, 4, &n), DNSCACHE_POSITIVE);
	assert_int_equal(dnscache_get(c, "n9899.test", 10000, out, 4, &n), DNSCACHE_MISS);
	assert_int_equal(dnscache_get(c, "n9900.test", 10000, out, 4, &n), DNSCACHE_POSITIVE);
	dnscache_clear(c);
	dnscache_stats(c, &st);
	assert_int_equal(st.entries, 0);
	dnscache_free(c);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(b64url_rfc4648_vectors_without_padding),
	    cmocka_unit_test(b64url_refuses_short_buffer),
	    cmocka_unit_test(query_for_v4_test_matches_rfc8484_form),
	    cmocka_unit_test(name_normalize_accepts_host_names_only),
	    cmocka_unit_test(name_read_follows_backward_pointers_and_refuses_loops),
	    cmocka_unit_test(name_read_refuses_names_over_253_characters),
	    cmocka_unit_test(decode_a_answer_all_addresses_in_order_min_ttl),
	    cmocka_unit_test(decode_aaaa_answer),
	    cmocka_unit_test(decode_follows_cname_chain_with_its_ttl),
	    cmocka_unit_test(decode_nxdomain_negative_ttl_from_soa),
	    cmocka_unit_test(decode_nodata_with_and_without_soa),
	    cmocka_unit_test(decode_server_failures_by_rcode),
	    cmocka_unit_test(decode_refuses_wrong_header_or_question),
	    cmocka_unit_test(decode_every_truncation_fails_cleanly),
	    cmocka_unit_test(decode_bogus_counts_fail_cleanly),
	    cmocka_unit_test(decode_maps_huge_ttls_to_zero),
	    cmocka_unit_test(decode_caps_addresses),
	    cmocka_unit_test(cache_positive_until_ttl),
	    cmocka_unit_test(cache_negative_entries),
	    cmocka_unit_test(cache_evicts_least_recently_used),
	    cmocka_unit_test(cache_many_names_stay_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
