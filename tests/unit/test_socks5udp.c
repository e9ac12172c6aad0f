/*
 * Unit tests for worker/socks5udp: the UDP request header of RFC 1928
 * section 7, parsed from exact-size heap copies (ASan catches any read past
 * the datagram) — every address type, every truncation, FRAG, bad ATYP,
 * names with NUL or empty, random bytes — and the reply header's bytes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

#include "../../worker/socks5.h"
#include "../../worker/socks5udp.h"

/* Parse exactly n bytes from a heap copy of that size. */
static int parse(const void *buf, size_t n, struct socks5_udp_hdr *h)
{
	uint8_t *copy = malloc(n ? n : 1);
	assert_non_null(copy);
	memcpy(copy, buf, n);
	int rc = socks5_udp_parse(copy, n, h);
	free(copy);
	return rc;
}

static void test_ipv4_header(void **state)
{
	(void)state;
	static const uint8_t d[] = {0, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90, 'h', 'i'};
	struct socks5_udp_hdr h;
	assert_int_equal(parse(d, sizeof d, &h), 10);
	assert_int_equal(h.atyp, SOCKS5_ATYP_IPV4);
	assert_int_equal(h.port, 8080);
	assert_memory_equal(h.addr, "\x7f\0\0\x01", 4);
	/* A header with no data is a valid empty datagram. */
	assert_int_equal(parse(d, 10, &h), 10);
}

static void test_ipv6_header(void **state)
{
	(void)state;
	uint8_t d[22 + 3] = {0, 0, 0, 4};
	d[4 + 15] = 1; /* ::1 */
	d[20] = 0;
	d[21] = 53;
	memcpy(d + 22, "abc", 3);
	struct socks5_udp_hdr h;
	assert_int_equal(parse(d, sizeof d, &h), 22);
	assert_int_equal(h.atyp, SOCKS5_ATYP_IPV6);
	assert_int_equal(h.port, 53);
	assert_memory_equal(h.addr, &in6addr_loopback, 16);
}

static void test_domain_header(void **state)
{
	(void)state;
	static const uint8_t d[] = {0, 0, 0, 3, 9, 'l', 'o', 'c', 'a', 'l', 'h', 'o', 's', 't', 0, 7,
	                            'x'};
	struct socks5_udp_hdr h;
	assert_int_equal(parse(d, sizeof d, &h), 16);
	assert_int_equal(h.atyp, SOCKS5_ATYP_DOMAIN);
	assert_int_equal(h.alen, 9);
	assert_string_equal(h.host, "localhost");
	assert_int_equal(h.port, 7);
}

static void test_longest_name(void **state)
{
	(void)state;
	uint8_t d[4 + 1 + 255 + 2];
	memset(d, 'a', sizeof d);
	d[0] = d[1] = d[2] = 0;
	d[3] = 3;
	d[4] = 255;
	struct socks5_udp_hdr h;
	assert_int_equal(parse(d, sizeof d, &h), SOCKS5_UDP_HDR_MAX);
	assert_int_equal(strlen(h.host), 255);
}

/* Every prefix of a header is too short, never read past. */
static void test_every_truncation_is_short(void **state)
{
	(void)state;
	static const uint8_t v4[] = {0, 0, 0, 1, 10, 0, 0, 1, 0, 53};
	static const uint8_t name[] = {0, 0, 0, 3, 3, 'a', '.', 'b', 0, 53};
	uint8_t v6[22] = {0, 0, 0, 4};
	struct socks5_udp_hdr h;
	for (size_t n = 0; n < sizeof v4; n++)
		assert_int_equal(parse(v4, n, &h), SOCKS5_UDP_SHORT);
	for (size_t n = 0; n < sizeof name; n++)
		assert_int_equal(parse(name, n, &h), SOCKS5_UDP_SHORT);
	for (size_t n = 0; n < sizeof v6; n++)
		assert_int_equal(parse(v6, n, &h), SOCKS5_UDP_SHORT);
}

static void test_frag_refused(void **state)
{
	(void)state;
	static const uint8_t d[] = {0, 0, 1, 1, 127, 0, 0, 1, 0, 7, 'x'};
	struct socks5_udp_hdr h;
	assert_int_equal(parse(d, sizeof d, &h), SOCKS5_UDP_FRAG);
	assert_int_equal(h.frag, 1);
	static const uint8_t last[] = {0, 0, 0x81, 1, 127, 0, 0, 1, 0, 7};
	assert_int_equal(parse(last, sizeof last, &h), SOCKS5_UDP_FRAG);
}

static void test_bad_atyp_and_names(void **state)
{
	(void)state;
	struct socks5_udp_hdr h;
	for (unsigned a = 0; a < 256; a++) {
		uint8_t d[32] = {0, 0, 0, (uint8_t)a, 4, 'a', 'b', 'c', 'd'};
		int rc = parse(d, sizeof d, &h);
		if (a == 1 || a == 3 || a == 4)
			assert_true(rc > 0);
		else
			assert_int_equal(rc, SOCKS5_UDP_BAD_ATYP);
	}
	static const uint8_t empty[] = {0, 0, 0, 3, 0, 0, 53};
	assert_int_equal(parse(empty, sizeof empty, &h), SOCKS5_UDP_BAD_NAME);
	static const uint8_t nul[] = {0, 0, 0, 3, 3, 'a', 0, 'b', 0, 53};
	assert_int_equal(parse(nul, sizeof nul, &h), SOCKS5_UDP_BAD_NAME);
}

/* RSV is reserved, not checked. */
static void test_rsv_ignored(void **state)
{
	(void)state;
	static const uint8_t d[] = {0xff, 0xff, 0, 1, 1, 2, 3, 4, 0, 1};
	struct socks5_udp_hdr h;
	assert_int_equal(parse(d, sizeof d, &h), 10);
}

static void test_random_bytes_stay_in_bounds(void **state)
{
	(void)state;
	uint8_t d[300];
	srand(7);
	struct socks5_udp_hdr h;
	for (int i = 0; i < 20000; i++) {
		size_t n = (size_t)rand() % sizeof d;
		for (size_t k = 0; k < n; k++)
			d[k] = (uint8_t)rand();
		if (n > 3 && (i & 1))
			d[2] = 0, d[3] = (uint8_t)(1 + (rand() % 2) * 2 + (rand() % 2));
		int rc = parse(d, n, &h);
		assert_true(rc <= (int)n);
		assert_true(rc == SOCKS5_UDP_SHORT || rc == SOCKS5_UDP_FRAG ||
		            rc == SOCKS5_UDP_BAD_ATYP || rc == SOCKS5_UDP_BAD_NAME || rc >= 8);
	}
}

static void test_reply_header_bytes(void **state)
{
	(void)state;
	uint8_t out[SOCKS5_UDP_REPLY_HDR_MAX];
	struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons(5353)};
	inet_pton(AF_INET, "192.0.2.7", &s4.sin_addr);
	assert_int_equal(socks5_udp_header_encode(out, (struct sockaddr *)&s4), 10);
	assert_memory_equal(out, "\0\0\0\x01\xc0\x00\x02\x07\x14\xe9", 10);

	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(53)};
	inet_pton(AF_INET6, "2001:db8::1", &s6.sin6_addr);
	assert_int_equal(socks5_udp_header_encode(out, (struct sockaddr *)&s6), 22);
	assert_memory_equal(out, "\0\0\0\x04\x20\x01\x0d\xb8\0\0\0\0\0\0\0\0\0\0\0\x01\0\x35", 22);

	inet_pton(AF_INET6, "::ffff:10.1.2.3", &s6.sin6_addr);
	assert_int_equal(socks5_udp_header_encode(out, (struct sockaddr *)&s6), 10);
	assert_memory_equal(out, "\0\0\0\x01\x0a\x01\x02\x03\0\x35", 10);

	struct sockaddr un = {.sa_family = AF_UNIX};
	assert_int_equal(socks5_udp_header_encode(out, &un), 0);
}

/* What the encoder writes, the parser reads back. */
static void test_round_trip(void **state)
{
	(void)state;
	uint8_t out[SOCKS5_UDP_REPLY_HDR_MAX];
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(4242)};
	inet_pton(AF_INET6, "fe80::1234", &s6.sin6_addr);
	size_t n = socks5_udp_header_encode(out, (struct sockaddr *)&s6);
	struct socks5_udp_hdr h;
	assert_int_equal(parse(out, n, &h), (int)n);
	assert_int_equal(h.port, 4242);
	assert_memory_equal(h.addr, &s6.sin6_addr, 16);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_ipv4_header),
	    cmocka_unit_test(test_ipv6_header),
	    cmocka_unit_test(test_domain_header),
	    cmocka_unit_test(test_longest_name),
	    cmocka_unit_test(test_every_truncation_is_short),
	    cmocka_unit_test(test_frag_refused),
	    cmocka_unit_test(test_bad_atyp_and_names),
	    cmocka_unit_test(test_rsv_ignored),
	    cmocka_unit_test(test_random_bytes_stay_in_bounds),
	    cmocka_unit_test(test_reply_header_bytes),
	    cmocka_unit_test(test_round_trip),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
