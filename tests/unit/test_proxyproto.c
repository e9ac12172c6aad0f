/*
 * Unit tests for worker/proxyproto: PROXY protocol v1 and v2 headers fed
 * whole, byte by byte and in every two-piece split, coalesced with the
 * SOCKS greeting that follows them; every error path; the bounds; hostile
 * input (random bytes, exact-size buffers under ASan); the trust list.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "../../worker/proxyproto.h"

static const uint8_t greeting[3] = {0x05, 0x01, 0x00};

/* Feed msg followed by the greeting in pieces of `step` bytes (0: whole).
 * Returns the final status; *consumed is what the parser took. */
static int feed_steps(struct proxyproto *p, const uint8_t *msg, size_t n, size_t step,
                      size_t *consumed)
{
	uint8_t *all = malloc(n + sizeof greeting);
	assert_non_null(all);
	memcpy(all, msg, n);
	memcpy(all + n, greeting, sizeof greeting);
	size_t total = n + sizeof greeting, off = 0;
	int rc = PROXYPROTO_MORE;
	proxyproto_init(p);
	while (off < total && rc == PROXYPROTO_MORE) {
		size_t k = step && total - off > step ? step : total - off;
		/* An exact-size copy: ASan sees any read past the slice. */
		uint8_t *slice = malloc(k);
		assert_non_null(slice);
		memcpy(slice, all + off, k);
		size_t used = 0;
		rc = proxyproto_feed(p, slice, k, &used);
		assert_true(used <= k);
		if (rc == PROXYPROTO_MORE)
			assert_int_equal(used, k);
		off += used;
		free(slice);
	}
	free(all);
	*consumed = off;
	return rc;
}

static void check_every_chunking(const uint8_t *msg, size_t n, int want_rc)
{
	for (size_t step = 0; step <= n + 1; step++) {
		struct proxyproto p;
		size_t used;
		int rc = feed_steps(&p, msg, n, step, &used);
		assert_int_equal(rc, want_rc);
		if (rc == PROXYPROTO_DONE)
			assert_int_equal(used, n); /* the greeting is left alone */
	}
	/* Every split into two pieces. */
	for (size_t cut = 0; cut <= n; cut++) {
		struct proxyproto p;
		proxyproto_init(&p);
		size_t u1 = 0, u2 = 0;
		int rc = proxyproto_feed(&p, msg, cut, &u1);
		if (rc == PROXYPROTO_MORE) {
			uint8_t rest[PROXYPROTO_V2_HEADER + PROXYPROTO_V2_BODY_MAX + 8];
			memcpy(rest, msg + cut, n - cut);
			memcpy(rest + n - cut, greeting, sizeof greeting);
			rc = proxyproto_feed(&p, rest, n - cut + sizeof greeting, &u2);
		}
		assert_int_equal(rc, want_rc);
		if (rc == PROXYPROTO_DONE)
			assert_int_equal(u1 + u2, n);
	}
}

static void assert_src4(const struct proxyproto *p, const char *ip, uint16_t port)
{
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)&p->src;
	struct in_addr want;
	assert_true(p->has_addr);
	assert_int_equal(s4->sin_family, AF_INET);
	inet_pton(AF_INET, ip, &want);
	assert_memory_equal(&s4->sin_addr, &want, 4);
	assert_int_equal(ntohs(s4->sin_port), port);
}

static void assert_src6(const struct proxyproto *p, const char *ip, uint16_t port)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&p->src;
	struct in6_addr want;
	assert_true(p->has_addr);
	assert_int_equal(s6->sin6_family, AF_INET6);
	inet_pton(AF_INET6, ip, &want);
	assert_memory_equal(&s6->sin6_addr, &want, 16);
	assert_int_equal(ntohs(s6->sin6_port), port);
}

static int parse_text(struct proxyproto *p, const char *text)
{
	size_t used;
	return feed_steps(p, (const uint8_t *)text, strlen(text), 0, &used);
}

/* ---- version 1 ---------------------------------------------------------- */

static void v1_tcp4_gives_the_client_address(void **state)
{
	(void)state;
	const char *h = "PROXY TCP4 203.0.113.7 127.0.0.1 40123 1080\r\n";
	check_every_chunking((const uint8_t *)h, strlen(h), PROXYPROTO_DONE);
	struct proxyproto p;
	assert_int_equal(parse_text(&p, h), PROXYPROTO_DONE);
	assert_int_equal(p.version, 1);
	assert_src4(&p, "203.0.113.7", 40123);
}

static void v1_tcp6_gives_the_client_address(void **state)
{
	(void)state;
	const char *h = "PROXY TCP6 2001:db8::7 ::1 65535 1080\r\n";
	check_every_chunking((const uint8_t *)h, strlen(h), PROXYPROTO_DONE);
	struct proxyproto p;
	assert_int_equal(parse_text(&p, h), PROXYPROTO_DONE);
	assert_src6(&p, "2001:db8::7", 65535);
}

static void v1_unknown_keeps_the_own_address(void **state)
{
	(void)state;
	struct proxyproto p;
	assert_int_equal(parse_text(&p, "PROXY UNKNOWN\r\n"), PROXYPROTO_DONE);
	assert_false(p.has_addr);
	const char *h = "PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n";
	assert_int_equal(parse_text(&p, h), PROXYPROTO_DONE);
	assert_false(p.has_addr);
}

static void v1_longest_line_is_accepted_one_more_byte_is_not(void **state)
{
	(void)state;
	/* 107 bytes: the spec's worst case. */
	const char *h = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	                "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
	assert_int_equal(strlen(h), PROXYPROTO_V1_MAX);
	check_every_chunking((const uint8_t *)h, strlen(h), PROXYPROTO_DONE);
	const char *tcp6 = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
	                   "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe 65535 65535\r\n";
	check_every_chunking((const uint8_t *)tcp6, strlen(tcp6), PROXYPROTO_DONE);
	char longer[256] = "PROXY UNKNOWN ";
	memset(longer + 14, 'x', 200);
	struct proxyproto p;
	size_t used;
	assert_int_equal(feed_steps(&p, (const uint8_t *)longer, strlen(longer), 1, &used),
	                 PROXYPROTO_ERROR);
	assert_int_equal(p.error, PROXYPROTO_V1_TOO_LONG);
	assert_int_equal(used, PROXYPROTO_V1_MAX);
}

static void v1_malformed_lines_are_refused(void **state)
{
	(void)state;
	static const char *const bad[] = {
	    "PROXY TCP4 203.0.113.7 127.0.0.1 40123 1080\n",      /* LF alone */
	    "PROXY TCP4 203.0.113.7 127.0.0.1 40123\r\n",         /* a field short */
	    "PROXY TCP4 203.0.113.7 127.0.0.1 40123 1080 9\r\n",  /* a field more */
	    "PROXY TCP4 203.0.113.7  127.0.0.1 40123 1080\r\n",   /* two spaces */
	    "PROXY TCP4 203.0.113.7 127.0.0.1 040123 1080\r\n",   /* leading zero */
	    "PROXY TCP4 203.0.113.7 127.0.0.1 65536 1080\r\n",    /* port range */
	    "PROXY TCP4 2001:db8::7 127.0.0.1 1 1080\r\n",        /* family mismatch */
	    "PROXY TCP6 203.0.113.7 ::1 1 1080\r\n",              /* family mismatch */
	    "PROXY TCP4 203.0.113.777 127.0.0.1 1 1080\r\n",      /* bad address */
	    "PROXY UDP4 203.0.113.7 127.0.0.1 1 1080\r\n",        /* protocol */
	    "PROXY UNKNOWNX\r\n",                                 /* not UNKNOWN */
	    "PROXY \r\n",                                         /* nothing */
	    "PROXY TCP4 203.0.113.7 127.0.0.1 1 -1\r\n",          /* sign */
	    "PROXY TCP4 203.0.113.7 127.0.0.1 1 1080 \r\n",       /* trailing space */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct proxyproto p;
		assert_int_equal(parse_text(&p, bad[i]), PROXYPROTO_ERROR);
		assert_int_equal(p.error, PROXYPROTO_V1_SYNTAX);
	}
	/* A NUL inside the line. */
	static const uint8_t nul[] = "PROXY UNKNOWN \0\r\n";
	struct proxyproto p;
	size_t used;
	assert_int_equal(feed_steps(&p, nul, sizeof nul - 1, 0, &used), PROXYPROTO_ERROR);
}

static void a_socks_greeting_is_not_a_header(void **state)
{
	(void)state;
	struct proxyproto p;
	proxyproto_init(&p);
	size_t used;
	assert_int_equal(proxyproto_feed(&p, greeting, sizeof greeting, &used), PROXYPROTO_ERROR);
	assert_int_equal(p.error, PROXYPROTO_NOT_PROXY);
	assert_int_equal(used, 1);
	/* A wrong byte inside either signature. */
	const char *v1 = "PROXX TCP4 1.2.3.4 1.2.3.4 1 1\r\n";
	assert_int_equal(parse_text(&p, v1), PROXYPROTO_ERROR);
	assert_int_equal(p.error, PROXYPROTO_NOT_PROXY);
	static const uint8_t v2[] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0B};
	assert_int_equal(feed_steps(&p, v2, sizeof v2, 1, &used), PROXYPROTO_ERROR);
	assert_int_equal(p.error, PROXYPROTO_NOT_PROXY);
	/* Nothing yet: more. */
	proxyproto_init(&p);
	assert_int_equal(proxyproto_feed(&p, greeting, 0, &used), PROXYPROTO_MORE);
	assert_int_equal(used, 0);
}

/* ---- version 2 ---------------------------------------------------------- */

static size_t v2_build(uint8_t *out, uint8_t ver_cmd, uint8_t fam, const uint8_t *body,
                       uint16_t len)
{
	static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
	                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
	memcpy(out, sig, 12);
	out[12] = ver_cmd;
	out[13] = fam;
	out[14] = (uint8_t)(len >> 8);
	out[15] = (uint8_t)len;
	if (len)
		memcpy(out + 16, body, len);
	return 16u + len;
}

static void v2_inet_gives_the_client_address(void **state)
{
	(void)state;
	uint8_t body[12] = {203, 0, 113, 9, 127, 0, 0, 1, 0x9c, 0x40, 0x04, 0x38};
	uint8_t msg[64];
	size_t n = v2_build(msg, 0x21, 0x11, body, sizeof body);
	check_every_chunking(msg, n, PROXYPROTO_DONE);
	struct proxyproto p;
	size_t used;
	assert_int_equal(feed_steps(&p, msg, n, 1, &used), PROXYPROTO_DONE);
	assert_int_equal(p.version, 2);
	assert_src4(&p, "203.0.113.9", 40000);
}

static void v2_inet6_with_tlvs_skips_them(void **state)
{
	(void)state;
	uint8_t body[36 + 40];
	memset(body, 0, sizeof body);
	inet_pton(AF_INET6, "2001:db8::9", body);
	inet_pton(AF_INET6, "::1", body + 16);
	body[32] = 0x12;
	body[33] = 0x34;
	body[36] = 0x05; /* PP2_TYPE_UNIQUE_ID, 37 bytes */
	body[37] = 0;
	body[38] = 37;
	uint8_t msg[128];
	size_t n = v2_build(msg, 0x21, 0x21, body, sizeof body);
	check_every_chunking(msg, n, PROXYPROTO_DONE);
	struct proxyproto p;
	size_t used;
	assert_int_equal(feed_steps(&p, msg, n, 0, &used), PROXYPROTO_DONE);
	assert_src6(&p, "2001:db8::9", 0x1234);
}

static void v2_local_and_unspec_keep_the_own_address(void **state)
{
	(void)state;
	uint8_t msg[64], body[12] = {1, 2, 3, 4, 5, 6, 7, 8, 0, 1, 0, 2};
	struct proxyproto p;
	size_t used;
	/* LOCAL with no body (a health check). */
	size_t n = v2_build(msg, 0x20, 0x00, NULL, 0);
	check_every_chunking(msg, n, PROXYPROTO_DONE);
	assert_int_equal(feed_steps(&p, msg, n, 0, &used), PROXYPROTO_DONE);
	assert_false(p.has_addr);
	/* LOCAL with an address: ignored. */
	n = v2_build(msg, 0x20, 0x11, body, sizeof body);
	assert_int_equal(feed_steps(&p, msg, n, 0, &used), PROXYPROTO_DONE);
	assert_false(p.has_addr);
	/* PROXY, AF_UNSPEC. */
	n = v2_build(msg, 0x21, 0x00, NULL, 0);
	assert_int_equal(feed_steps(&p, msg, n, 0, &used), PROXYPROTO_DONE);
	assert_false(p.has_addr);
	/* PROXY over a datagram transport: not this stream's client. */
	n = v2_build(msg, 0x21, 0x12, body, sizeof body);
	assert_int_equal(feed_steps(&p, msg, n, 0, &used), PROXYPROTO_DONE);
	assert_false(p.has_addr);
}

static void v2_bad_headers_are_refused(void **state)
{
	(void)state;
	uint8_t msg[64], body[36] = {0};
	struct proxyproto p;
	size_t used;
	struct {
		uint8_t vc, fam;
		uint16_t len;
		enum proxyproto_error e;
	} bad[] = {
	    {0x11, 0x11, 12, PROXYPROTO_V2_VERSION}, /* version 1 nibble */
	    {0x31, 0x11, 12, PROXYPROTO_V2_VERSION}, /* version 3 */
	    {0x22, 0x11, 12, PROXYPROTO_V2_VERSION}, /* command 2 */
	    {0x21, 0x41, 12, PROXYPROTO_V2_FAMILY},  /* family 4 */
	    {0x21, 0x13, 12, PROXYPROTO_V2_FAMILY},  /* transport 3 */
	    {0x21, 0x11, 11, PROXYPROTO_V2_LENGTH},  /* short for AF_INET */
	    {0x21, 0x21, 35, PROXYPROTO_V2_LENGTH},  /* short for AF_INET6 */
	    {0x21, 0x31, 36, PROXYPROTO_V2_LENGTH},  /* short for AF_UNIX */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		size_t n = v2_build(msg, bad[i].vc, bad[i].fam, body, bad[i].len);
		assert_int_equal(feed_steps(&p, msg, n, 1, &used), PROXYPROTO_ERROR);
		assert_int_equal(p.error, bad[i].e);
		assert_int_equal(used, 16); /* refused at the header, before any body */
	}
}

static void v2_length_is_bounded(void **state)
{
	(void)state;
	static uint8_t msg[16 + PROXYPROTO_V2_BODY_MAX + 1];
	uint8_t body[PROXYPROTO_V2_BODY_MAX + 1];
	memset(body, 0, sizeof body);
	struct proxyproto p;
	size_t used;
	size_t n = v2_build(msg, 0x21, 0x11, body, PROXYPROTO_V2_BODY_MAX);
	assert_int_equal(feed_steps(&p, msg, n, 7, &used), PROXYPROTO_DONE);
	assert_int_equal(used, n);
	n = v2_build(msg, 0x21, 0x11, body, PROXYPROTO_V2_BODY_MAX + 1);
	assert_int_equal(feed_steps(&p, msg, n, 0, &used), PROXYPROTO_ERROR);
	assert_int_equal(p.error, PROXYPROTO_V2_LENGTH);
	/* The largest length field: refused without waiting for 65535 bytes. */
	msg[14] = msg[15] = 0xff;
	proxyproto_init(&p);
	assert_int_equal(proxyproto_feed(&p, msg, 16, &used), PROXYPROTO_ERROR);
}

static void a_finished_parser_takes_nothing_more(void **state)
{
	(void)state;
	struct proxyproto p;
	assert_int_equal(parse_text(&p, "PROXY UNKNOWN\r\n"), PROXYPROTO_DONE);
	size_t used = 9;
	assert_int_equal(proxyproto_feed(&p, greeting, sizeof greeting, &used), PROXYPROTO_DONE);
	assert_int_equal(used, 0);
	assert_int_equal(parse_text(&p, "PROXY \n"), PROXYPROTO_ERROR);
	assert_int_equal(proxyproto_feed(&p, greeting, sizeof greeting, &used), PROXYPROTO_ERROR);
	assert_int_equal(used, 0);
}

static void random_bytes_never_crash_or_overconsume(void **state)
{
	(void)state;
	srand(13);
	for (int round = 0; round < 20000; round++) {
		size_t n = (size_t)(rand() % 200);
		uint8_t *buf = malloc(n ? n : 1);
		assert_non_null(buf);
		for (size_t i = 0; i < n; i++)
			buf[i] = (uint8_t)rand();
		/* Start from a real signature half the time to reach the depths. */
		if (n >= 16 && round % 2) {
			static const uint8_t sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
			                                0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
			memcpy(buf, sig, 12);
			buf[12] = (uint8_t)(0x20 | (buf[12] & 1));
		} else if (n >= 6 && round % 3 == 0) {
			memcpy(buf, "PROXY ", 6);
		}
		struct proxyproto p;
		proxyproto_init(&p);
		size_t off = 0;
		int rc = PROXYPROTO_MORE;
		while (off < n && rc == PROXYPROTO_MORE) {
			size_t k = 1 + (size_t)rand() % 8;
			if (k > n - off)
				k = n - off;
			size_t used;
			rc = proxyproto_feed(&p, buf + off, k, &used);
			assert_true(used <= k);
			off += used;
		}
		assert_true(off <= 16 + PROXYPROTO_V2_BODY_MAX);
		free(buf);
	}
}

/* ---- trust list ---------------------------------------------------------- */

static struct sockaddr_storage addr_of(const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1)
		s4->sin_family = AF_INET;
	else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1)
		s6->sin6_family = AF_INET6;
	return ss;
}

static void trust_list_matches_its_nets(void **state)
{
	(void)state;
	struct proxyproto_trust t;
	assert_int_equal(proxyproto_trust_parse(&t, "10.1.0.0/16,192.0.2.7,2001:db8::/33,::1"), 0);
	assert_int_equal(t.n, 4);
	struct sockaddr_storage a;
	a = addr_of("10.1.255.3");
	assert_true(proxyproto_trusted(&t, &a));
	a = addr_of("10.2.0.1");
	assert_false(proxyproto_trusted(&t, &a));
	a = addr_of("192.0.2.7");
	assert_true(proxyproto_trusted(&t, &a));
	a = addr_of("192.0.2.8");
	assert_false(proxyproto_trusted(&t, &a));
	a = addr_of("::ffff:10.1.2.3"); /* a dual-stack socket's IPv4 client */
	assert_true(proxyproto_trusted(&t, &a));
	a = addr_of("2001:db8:7fff::1");
	assert_true(proxyproto_trusted(&t, &a));
	a = addr_of("2001:db8:8000::1");
	assert_false(proxyproto_trusted(&t, &a));
	a = addr_of("::1");
	assert_true(proxyproto_trusted(&t, &a));
	a = addr_of("127.0.0.1");
	assert_false(proxyproto_trusted(&t, &a));
	assert_int_equal(proxyproto_trust_parse(&t, "0.0.0.0/0"), 0);
	assert_true(proxyproto_trusted(&t, &a));
	assert_int_equal(proxyproto_trust_parse(&t, ""), 0);
	assert_int_equal(t.n, 0);
	assert_false(proxyproto_trusted(&t, &a));
}

static void trust_list_refuses_bad_text(void **state)
{
	(void)state;
	static const char *const bad[] = {"10.0.0.0/33", "::/129", "10.0.0.0/", "10.0.0.0/08",
	                                  "10.0.0.0/x", "host.example", "10.0.0.0/8,", ",::1",
	                                  "10.0.0.0/8,,::1", "10.0.0.0/-1"};
	struct proxyproto_trust t;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(proxyproto_trust_parse(&t, bad[i]), -EINVAL);
		assert_int_equal(t.n, 0);
	}
	char many[64 * 20] = "";
	for (int i = 0; i <= PROXYPROTO_TRUST_MAX; i++)
		strcat(many, i ? ",10.0.0.1" : "10.0.0.1");
	assert_int_equal(proxyproto_trust_parse(&t, many), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(v1_tcp4_gives_the_client_address),
	    cmocka_unit_test(v1_tcp6_gives_the_client_address),
	    cmocka_unit_test(v1_unknown_keeps_the_own_address),
	    cmocka_unit_test(v1_longest_line_is_accepted_one_more_byte_is_not),
	    cmocka_unit_test(v1_malformed_lines_are_refused),
	    cmocka_unit_test(a_socks_greeting_is_not_a_header),
	    cmocka_unit_test(v2_inet_gives_the_client_address),
	    cmocka_unit_test(v2_inet6_with_tlvs_skips_them),
	    cmocka_unit_test(v2_local_and_unspec_keep_the_own_address),
	    cmocka_unit_test(v2_bad_headers_are_refused),
	    cmocka_unit_test(v2_length_is_bounded),
	    cmocka_unit_test(a_finished_parser_takes_nothing_more),
	    cmocka_unit_test(random_bytes_never_crash_or_overconsume),
	    cmocka_unit_test(trust_list_matches_its_nets),
	    cmocka_unit_test(trust_list_refuses_bad_text),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
