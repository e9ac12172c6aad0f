/*
 * Unit tests for worker/socks5: the RFC 1928 / RFC 1929 codecs, fed whole,
 * byte by byte, in every chunking and coalesced with the bytes that follow
 * them; every error path; reply encoding; errno -> reply mapping; and
 * hostile input (random bytes, exact-size buffers under ASan).
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
#include <sys/un.h>

#include "../../shared/settings.h"
#include "../../worker/socks5.h"

/* ---- helpers ------------------------------------------------------------ */

enum codec { C_GREETING, C_AUTH, C_REQUEST };

union parser {
	struct socks5_greeting g;
	struct rfc1929 a;
	struct socks5_request r;
};

static void parser_init(enum codec c, union parser *p)
{
	switch (c) {
	case C_GREETING:
		socks5_greeting_init(&p->g);
		break;
	case C_AUTH:
		socks5_auth_init(&p->a);
		break;
	case C_REQUEST:
		socks5_request_init(&p->r);
		break;
	}
}

/* Feed exactly n bytes from an exact-size heap copy, so that ASan reports any
 * read beyond the slice. */
static int parser_feed(enum codec c, union parser *p, const uint8_t *buf, size_t n, size_t *used)
{
	uint8_t *copy = malloc(n ? n : 1);
	assert_non_null(copy);
	if (n)
		memcpy(copy, buf, n);
	*used = (size_t)-1;
	int rc = SOCKS5_ERROR;
	switch (c) {
	case C_GREETING:
		rc = socks5_greeting_feed(&p->g, copy, n, used);
		break;
	case C_AUTH:
		rc = socks5_auth_feed(&p->a, copy, n, used);
		break;
	case C_REQUEST:
		rc = socks5_request_feed(&p->r, copy, n, used);
		break;
	}
	free(copy);
	assert_true(*used <= n);
	assert_true(rc == SOCKS5_MORE || rc == SOCKS5_DONE || rc == SOCKS5_ERROR);
	return rc;
}

/* Feed buf in chunks of `chunk` bytes until the parser finishes; returns the
 * final status and the total consumed in *total. */
static int parser_feed_chunked(enum codec c, union parser *p, const uint8_t *buf, size_t n,
                               size_t chunk, size_t *total)
{
	size_t off = 0;
	int rc = SOCKS5_MORE;
	while (off < n && rc == SOCKS5_MORE) {
		size_t k = n - off < chunk ? n - off : chunk;
		size_t used;
		rc = parser_feed(c, p, buf + off, k, &used);
		if (rc == SOCKS5_MORE)
			assert_int_equal(used, k); /* MORE: the whole slice was taken */
		off += used;
	}
	*total = off;
	return rc;
}

/* Whole, every chunk size, and followed by trailing data: always DONE with
 * exactly msglen consumed.  check() verifies the decoded fields. */
static void expect_done_every_way(enum codec c, const uint8_t *msg, size_t msglen,
                                  void (*check)(const union parser *p))
{
	static const uint8_t tail[] = "trailing early data";
	uint8_t *buf = malloc(msglen + sizeof tail);
	assert_non_null(buf);
	memcpy(buf, msg, msglen);
	memcpy(buf + msglen, tail, sizeof tail);

	for (size_t chunk = 1; chunk <= msglen + sizeof tail; chunk++) {
		union parser p;
		size_t total;
		/* Alone. */
		parser_init(c, &p);
		assert_int_equal(parser_feed_chunked(c, &p, buf, msglen, chunk, &total), SOCKS5_DONE);
		assert_int_equal(total, msglen);
		check(&p);
		/* Coalesced with what follows: the tail is left to the caller. */
		parser_init(c, &p);
		assert_int_equal(parser_feed_chunked(c, &p, buf, msglen + sizeof tail, chunk, &total),
		                 SOCKS5_DONE);
		assert_int_equal(total, msglen);
		check(&p);
	}
	/* Every prefix is MORE and consumes everything it was given. */
	for (size_t cut = 0; cut < msglen; cut++) {
		union parser p;
		size_t used;
		parser_init(c, &p);
		assert_int_equal(parser_feed(c, &p, buf, cut, &used), SOCKS5_MORE);
		assert_int_equal(used, cut);
	}
	free(buf);
}

/* Fed whole, and byte by byte: ERROR, consuming at most up to the bad byte. */
static void expect_error_every_way(enum codec c, const uint8_t *msg, size_t msglen,
                                   size_t bad_at, void (*check)(const union parser *p))
{
	for (size_t chunk = 1; chunk <= msglen; chunk++) {
		union parser p;
		size_t total;
		parser_init(c, &p);
		assert_int_equal(parser_feed_chunked(c, &p, msg, msglen, chunk, &total), SOCKS5_ERROR);
		assert_true(total <= bad_at + 1);
		check(&p);
	}
}

/* ---- greeting ----------------------------------------------------------- */

static void check_greeting_both(const union parser *p)
{
	assert_int_equal(p->g.nmethods, 2);
	assert_true(p->g.offers_no_auth);
	assert_true(p->g.offers_userpass);
	assert_int_equal(p->g.error, SOCKS5_GREETING_OK);
}

static void greeting_offering_noauth_and_userpass_is_done_fed_any_way(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x05, 0x02, 0x00, 0x02};
	expect_done_every_way(C_GREETING, msg, sizeof msg, check_greeting_both);
}

static void check_greeting_gssapi_only(const union parser *p)
{
	assert_int_equal(p->g.nmethods, 1);
	assert_false(p->g.offers_no_auth);
	assert_false(p->g.offers_userpass);
}

static void greeting_offering_only_gssapi_offers_neither_method(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x05, 0x01, 0x01};
	expect_done_every_way(C_GREETING, msg, sizeof msg, check_greeting_gssapi_only);
}

static void check_greeting_255(const union parser *p)
{
	assert_int_equal(p->g.nmethods, 255);
	assert_true(p->g.offers_no_auth);
	assert_true(p->g.offers_userpass);
}

static void greeting_with_255_methods_is_done(void **state)
{
	(void)state;
	uint8_t msg[2 + 255];
	msg[0] = 0x05;
	msg[1] = 255;
	for (int i = 0; i < 255; i++)
		msg[2 + i] = (uint8_t)(i + 1); /* 0x01..0xff, then 0x00 last */
	msg[2 + 254] = 0x00;
	expect_done_every_way(C_GREETING, msg, sizeof msg, check_greeting_255);
}

static void check_greeting_bad_version(const union parser *p)
{
	assert_int_equal(p->g.error, SOCKS5_GREETING_BAD_VERSION);
}

static void greeting_version_4_is_bad_version(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x04, 0x01, 0x00, 0x50, 0x7f, 0x00, 0x00, 0x01, 0x00};
	expect_error_every_way(C_GREETING, msg, sizeof msg, 0, check_greeting_bad_version);
}

static void check_greeting_no_methods(const union parser *p)
{
	assert_int_equal(p->g.error, SOCKS5_GREETING_NO_METHODS);
}

static void greeting_with_zero_methods_is_no_methods(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x05, 0x00, 0x05, 0x01, 0x00};
	expect_error_every_way(C_GREETING, msg, sizeof msg, 1, check_greeting_no_methods);
}

static void greeting_fed_nothing_is_more_and_uses_nothing(void **state)
{
	(void)state;
	struct socks5_greeting g;
	size_t used = 99;
	socks5_greeting_init(&g);
	assert_int_equal(socks5_greeting_feed(&g, (const uint8_t *)"", 0, &used), SOCKS5_MORE);
	assert_int_equal(used, 0);
}

static void greeting_once_done_consumes_no_more_bytes(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x05, 0x01, 0x00};
	const uint8_t more[] = {0x05, 0x01, 0x00, 0x01};
	struct socks5_greeting g;
	size_t used;
	socks5_greeting_init(&g);
	assert_int_equal(socks5_greeting_feed(&g, msg, sizeof msg, &used), SOCKS5_DONE);
	assert_int_equal(socks5_greeting_feed(&g, more, sizeof more, &used), SOCKS5_DONE);
	assert_int_equal(used, 0);
}

/* ---- RFC 1929 auth ------------------------------------------------------ */

static void check_auth_user_pass(const union parser *p)
{
	assert_int_equal(p->a.error, SOCKS5_AUTH_OK);
	assert_int_equal(p->a.ulen, 5);
	assert_int_equal(p->a.plen, 6);
	assert_string_equal(p->a.user, "alice");
	assert_string_equal(p->a.pass, "s3cr3t");
}

static void auth_user_and_password_is_done_fed_any_way(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x01, 5, 'a', 'l', 'i', 'c', 'e', 6, 's', '3', 'c', 'r', '3', 't'};
	expect_done_every_way(C_AUTH, msg, sizeof msg, check_auth_user_pass);
}

static void check_auth_empty_pass(const union parser *p)
{
	assert_string_equal(p->a.user, "bob");
	assert_int_equal(p->a.plen, 0);
	assert_string_equal(p->a.pass, "");
}

static void auth_empty_password_is_accepted_as_empty_string(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x01, 3, 'b', 'o', 'b', 0};
	expect_done_every_way(C_AUTH, msg, sizeof msg, check_auth_empty_pass);
}

static void auth_empty_password_after_reinit_does_not_keep_old_password(void **state)
{
	(void)state;
	const uint8_t first[] = {0x01, 1, 'u', 3, 'o', 'l', 'd'};
	const uint8_t second[] = {0x01, 1, 'v', 0};
	struct rfc1929 a;
	size_t used;
	socks5_auth_init(&a);
	assert_int_equal(socks5_auth_feed(&a, first, sizeof first, &used), SOCKS5_DONE);
	assert_string_equal(a.pass, "old");
	socks5_auth_init(&a);
	assert_int_equal(socks5_auth_feed(&a, second, sizeof second, &used), SOCKS5_DONE);
	assert_string_equal(a.user, "v");
	assert_string_equal(a.pass, "");
}

static void check_auth_max(const union parser *p)
{
	assert_int_equal(p->a.ulen, 255);
	assert_int_equal(p->a.plen, 255);
	assert_int_equal(strlen(p->a.user), 255);
	assert_int_equal(strlen(p->a.pass), 255);
	for (int i = 0; i < 255; i++) {
		assert_int_equal(p->a.user[i], 'u');
		assert_int_equal(p->a.pass[i], 'p');
	}
}

static void auth_255_byte_user_and_password_are_done(void **state)
{
	(void)state;
	uint8_t msg[1 + 1 + 255 + 1 + 255];
	size_t k = 0;
	msg[k++] = 0x01;
	msg[k++] = 255;
	memset(msg + k, 'u', 255);
	k += 255;
	msg[k++] = 255;
	memset(msg + k, 'p', 255);
	k += 255;
	assert_int_equal(k, sizeof msg);
	expect_done_every_way(C_AUTH, msg, sizeof msg, check_auth_max);
}

static void check_auth_bad_version(const union parser *p)
{
	assert_int_equal(p->a.error, SOCKS5_AUTH_BAD_VERSION);
}

static void auth_version_2_is_bad_version(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x02, 1, 'u', 1, 'p'};
	expect_error_every_way(C_AUTH, msg, sizeof msg, 0, check_auth_bad_version);
}

static void auth_version_5_is_bad_version(void **state)
{
	(void)state;
	/* A client that skipped sub-negotiation and sent its request. */
	const uint8_t msg[] = {0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0, 80};
	expect_error_every_way(C_AUTH, msg, sizeof msg, 0, check_auth_bad_version);
}

static void check_auth_empty_user(const union parser *p)
{
	assert_int_equal(p->a.error, SOCKS5_AUTH_EMPTY_USER);
}

static void auth_empty_username_is_empty_user(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x01, 0, 4, 'p', 'a', 's', 's'};
	expect_error_every_way(C_AUTH, msg, sizeof msg, 1, check_auth_empty_user);
}

/* ---- request ------------------------------------------------------------ */

static void check_req_ipv4(const union parser *p)
{
	const uint8_t want[4] = {127, 0, 0, 1};
	assert_int_equal(p->r.cmd, SOCKS5_CMD_CONNECT);
	assert_int_equal(p->r.atyp, SOCKS5_ATYP_IPV4);
	assert_memory_equal(p->r.addr, want, 4);
	assert_int_equal(p->r.port, 8080);
}

static void request_connect_ipv4_is_done_fed_any_way(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x05, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0x1f, 0x90};
	expect_done_every_way(C_REQUEST, msg, sizeof msg, check_req_ipv4);
}

static void check_req_ipv6(const union parser *p)
{
	uint8_t want[16];
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::1:2", want), 1);
	assert_int_equal(p->r.atyp, SOCKS5_ATYP_IPV6);
	assert_memory_equal(p->r.addr, want, 16);
	assert_int_equal(p->r.port, 443);
}

static void request_connect_ipv6_is_done_fed_any_way(void **state)
{
	(void)state;
	uint8_t msg[4 + 16 + 2] = {0x05, 0x01, 0x00, 0x04};
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::1:2", msg + 4), 1);
	msg[20] = 0x01;
	msg[21] = 0xbb;
	expect_done_every_way(C_REQUEST, msg, sizeof msg, check_req_ipv6);
}

static void check_req_domain(const union parser *p)
{
	assert_int_equal(p->r.atyp, SOCKS5_ATYP_DOMAIN);
	assert_int_equal(p->r.alen, 11);
	assert_string_equal(p->r.host, "example.com");
	assert_int_equal(p->r.port, 80);
}

static void request_connect_domain_is_done_fed_any_way(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x05, 0x01, 0x00, 0x03, 11,  'e', 'x', 'a', 'm',
	                       'p',  'l',  'e',  '.',  'c', 'o', 'm', 0,   80};
	expect_done_every_way(C_REQUEST, msg, sizeof msg, check_req_domain);
}

static void check_req_domain_255(const union parser *p)
{
	assert_int_equal(p->r.alen, 255);
	assert_int_equal(strlen(p->r.host), 255);
	assert_int_equal(p->r.host[0], 'a');
	assert_int_equal(p->r.host[254], 'z');
	assert_int_equal(p->r.port, 65535);
}

static void request_255_byte_domain_is_done_and_nul_terminated(void **state)
{
	(void)state;
	uint8_t msg[5 + 255 + 2] = {0x05, 0x01, 0x00, 0x03, 255};
	memset(msg + 5, 'a', 254);
	msg[5 + 254] = 'z';
	msg[5 + 255] = 0xff;
	msg[5 + 256] = 0xff;
	expect_done_every_way(C_REQUEST, msg, sizeof msg, check_req_domain_255);
}

static void check_req_port0_udp(const union parser *p)
{
	assert_int_equal(p->r.cmd, SOCKS5_CMD_UDP_ASSOCIATE);
	assert_int_equal(p->r.port, 0);
}

static void request_udp_associate_with_port_0_reports_its_command(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x05, 0x03, 0x00, 0x01, 0, 0, 0, 0, 0, 0};
	expect_done_every_way(C_REQUEST, msg, sizeof msg, check_req_port0_udp);
}

static void check_req_bind(const union parser *p)
{
	assert_int_equal(p->r.cmd, SOCKS5_CMD_BIND);
	assert_int_equal(p->r.port, 0x1234);
}

static void request_bind_reports_its_command(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x05, 0x02, 0x00, 0x01, 10, 0, 0, 1, 0x12, 0x34};
	expect_done_every_way(C_REQUEST, msg, sizeof msg, check_req_bind);
}

static void check_rep_general(const union parser *p)
{
	assert_int_equal(p->r.rep, SOCKS5_REP_GENERAL_FAILURE);
}

static void check_rep_atyp(const union parser *p)
{
	assert_int_equal(p->r.rep, SOCKS5_REP_ATYP_NOT_SUPPORTED);
}

static void request_version_4_fails_with_general_failure(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x04, 0x01, 0x00, 0x01, 127, 0, 0, 1, 0, 80};
	expect_error_every_way(C_REQUEST, msg, sizeof msg, 0, check_rep_general);
}

static void request_nonzero_reserved_byte_fails_with_general_failure(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x05, 0x01, 0x01, 0x01, 127, 0, 0, 1, 0, 80};
	expect_error_every_way(C_REQUEST, msg, sizeof msg, 2, check_rep_general);
}

static void request_atyp_2_fails_with_atyp_not_supported(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x05, 0x01, 0x00, 0x02, 127, 0, 0, 1, 0, 80};
	expect_error_every_way(C_REQUEST, msg, sizeof msg, 3, check_rep_atyp);
}

static void request_atyp_0_and_0xff_fail_with_atyp_not_supported(void **state)
{
	(void)state;
	const uint8_t zero[] = {0x05, 0x01, 0x00, 0x00, 0, 0};
	const uint8_t ff[] = {0x05, 0x01, 0x00, 0xff, 0, 0};
	expect_error_every_way(C_REQUEST, zero, sizeof zero, 3, check_rep_atyp);
	expect_error_every_way(C_REQUEST, ff, sizeof ff, 3, check_rep_atyp);
}

static void request_empty_domain_fails_with_general_failure(void **state)
{
	(void)state;
	const uint8_t msg[] = {0x05, 0x01, 0x00, 0x03, 0, 0, 80};
	expect_error_every_way(C_REQUEST, msg, sizeof msg, 4, check_rep_general);
}

/* ---- the whole handshake pipelined in one buffer ------------------------ */

static const uint8_t pipelined[] = {
	/* greeting: no-auth + user/pass */
	0x05, 0x02, 0x00, 0x02,
	/* RFC 1929 */
	0x01, 4, 'u', 's', 'e', 'r', 4, 'p', 'a', 's', 's',
	/* CONNECT example.org:443 */
	0x05, 0x01, 0x00, 0x03, 11, 'e', 'x', 'a', 'm', 'p', 'l', 'e', '.', 'o', 'r', 'g', 0x01, 0xbb,
	/* early data */
	'G', 'E', 'T', ' ', '/', '\r', '\n', '\r', '\n'};
#define PIPE_GREETING 4
#define PIPE_AUTH 11
#define PIPE_REQUEST 18

static void handshake_pipelined_in_one_buffer_leaves_the_payload(void **state)
{
	(void)state;
	const uint8_t *p = pipelined;
	size_t n = sizeof pipelined, used;
	struct socks5_greeting g;
	struct rfc1929 a;
	struct socks5_request r;

	socks5_greeting_init(&g);
	assert_int_equal(socks5_greeting_feed(&g, p, n, &used), SOCKS5_DONE);
	assert_int_equal(used, PIPE_GREETING);
	assert_true(g.offers_userpass);
	p += used;
	n -= used;

	socks5_auth_init(&a);
	assert_int_equal(socks5_auth_feed(&a, p, n, &used), SOCKS5_DONE);
	assert_int_equal(used, PIPE_AUTH);
	assert_string_equal(a.user, "user");
	assert_string_equal(a.pass, "pass");
	p += used;
	n -= used;

	socks5_request_init(&r);
	assert_int_equal(socks5_request_feed(&r, p, n, &used), SOCKS5_DONE);
	assert_int_equal(used, PIPE_REQUEST);
	assert_string_equal(r.host, "example.org");
	assert_int_equal(r.port, 443);
	p += used;
	n -= used;

	assert_int_equal(n, 9);
	assert_memory_equal(p, "GET /\r\n\r\n", 9);
}

/* The same stream read in every segment size, as a session reading a socket
 * would: each parser takes its bytes, the next one continues where it
 * stopped, and the payload is what is left. */
static void handshake_pipelined_in_any_segment_size_leaves_the_payload(void **state)
{
	(void)state;
	for (size_t seg = 1; seg <= sizeof pipelined; seg++) {
		enum codec order[3] = {C_GREETING, C_AUTH, C_REQUEST};
		int stage = 0;
		union parser p;
		size_t off = 0;
		size_t consumed_at[3] = {0, 0, 0};
		parser_init(order[0], &p);
		while (off < sizeof pipelined && stage < 3) {
			size_t end = off + seg < sizeof pipelined ? off + seg : sizeof pipelined;
			/* One "read": the parsers may share it. */
			while (off < end && stage < 3) {
				size_t used;
				int rc = parser_feed(order[stage], &p, pipelined + off, end - off, &used);
				off += used;
				assert_int_not_equal(rc, SOCKS5_ERROR);
				if (rc == SOCKS5_DONE) {
					consumed_at[stage] = off;
					if (++stage < 3)
						parser_init(order[stage], &p);
				}
			}
		}
		assert_int_equal(stage, 3);
		assert_int_equal(consumed_at[0], PIPE_GREETING);
		assert_int_equal(consumed_at[1], PIPE_GREETING + PIPE_AUTH);
		assert_int_equal(consumed_at[2], PIPE_GREETING + PIPE_AUTH + PIPE_REQUEST);
		assert_string_equal(p.r.host, "example.org");
		assert_int_equal(p.r.port, 443);
	}
}

/* ---- reply encoding ----------------------------------------------------- */

static void reply_for_ipv4_is_10_bytes_with_address_and_port(void **state)
{
	(void)state;
	struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons(8080)};
	assert_int_equal(inet_pton(AF_INET, "10.1.2.3", &sin.sin_addr), 1);
	uint8_t out[SOCKS5_REPLY_MAX];
	memset(out, 0xaa, sizeof out);
	const uint8_t want[] = {0x05, 0x00, 0x00, 0x01, 10, 1, 2, 3, 0x1f, 0x90};
	assert_int_equal(socks5_reply_encode(out, SOCKS5_REP_SUCCEEDED, (struct sockaddr *)&sin), 10);
	assert_memory_equal(out, want, sizeof want);
}

static void reply_for_ipv6_is_22_bytes_with_address_and_port(void **state)
{
	(void)state;
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(443)};
	assert_int_equal(inet_pton(AF_INET6, "2001:db8::7", &sin6.sin6_addr), 1);
	uint8_t out[SOCKS5_REPLY_MAX];
	memset(out, 0xaa, sizeof out);
	assert_int_equal(socks5_reply_encode(out, SOCKS5_REP_SUCCEEDED, (struct sockaddr *)&sin6), 22);
	assert_int_equal(out[0], 0x05);
	assert_int_equal(out[1], 0x00);
	assert_int_equal(out[2], 0x00);
	assert_int_equal(out[3], SOCKS5_ATYP_IPV6);
	assert_memory_equal(out + 4, &sin6.sin6_addr, 16);
	assert_int_equal(out[20], 0x01);
	assert_int_equal(out[21], 0xbb);
}

static void reply_for_v4_mapped_ipv6_is_encoded_as_ipv4(void **state)
{
	(void)state;
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(53)};
	assert_int_equal(inet_pton(AF_INET6, "::ffff:192.0.2.1", &sin6.sin6_addr), 1);
	uint8_t out[SOCKS5_REPLY_MAX];
	const uint8_t want[] = {0x05, 0x00, 0x00, 0x01, 192, 0, 2, 1, 0, 53};
	assert_int_equal(socks5_reply_encode(out, SOCKS5_REP_SUCCEEDED, (struct sockaddr *)&sin6), 10);
	assert_memory_equal(out, want, sizeof want);
}

static void reply_without_address_is_ipv4_zero_with_the_code(void **state)
{
	(void)state;
	uint8_t out[SOCKS5_REPLY_MAX];
	memset(out, 0xaa, sizeof out);
	const uint8_t want[] = {0x05, 0x05, 0x00, 0x01, 0, 0, 0, 0, 0, 0};
	assert_int_equal(socks5_reply_encode(out, SOCKS5_REP_CONN_REFUSED, NULL), 10);
	assert_memory_equal(out, want, sizeof want);
}

static void reply_for_unknown_family_is_ipv4_zero(void **state)
{
	(void)state;
	struct sockaddr_un sun = {.sun_family = AF_UNIX, .sun_path = "/tmp/x"};
	uint8_t out[SOCKS5_REPLY_MAX];
	memset(out, 0xaa, sizeof out);
	const uint8_t want[] = {0x05, 0x01, 0x00, 0x01, 0, 0, 0, 0, 0, 0};
	assert_int_equal(socks5_reply_encode(out, SOCKS5_REP_GENERAL_FAILURE, (struct sockaddr *)&sun),
	                 10);
	assert_memory_equal(out, want, sizeof want);
}

static void reply_carries_every_code_unchanged(void **state)
{
	(void)state;
	for (unsigned rep = 0; rep <= 0xff; rep++) {
		uint8_t out[SOCKS5_REPLY_MAX];
		assert_int_equal(socks5_reply_encode(out, (uint8_t)rep, NULL), 10);
		assert_int_equal(out[0], 0x05);
		assert_int_equal(out[1], rep);
		assert_int_equal(out[2], 0x00);
	}
}

/* The reply parses back through a request-shaped decoder: VER REP RSV ATYP. */
static void reply_round_trips_through_the_request_parser(void **state)
{
	(void)state;
	struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons(1)};
	assert_int_equal(inet_pton(AF_INET6, "fe80::1", &sin6.sin6_addr), 1);
	uint8_t out[SOCKS5_REPLY_MAX];
	size_t len = socks5_reply_encode(out, 0x01, (struct sockaddr *)&sin6);
	struct socks5_request r;
	size_t used;
	socks5_request_init(&r);
	/* REP 0x01 sits where CMD is; the rest is the same shape. */
	assert_int_equal(socks5_request_feed(&r, out, len, &used), SOCKS5_DONE);
	assert_int_equal(used, len);
	assert_int_equal(r.atyp, SOCKS5_ATYP_IPV6);
	assert_memory_equal(r.addr, &sin6.sin6_addr, 16);
	assert_int_equal(r.port, 1);
}

/* ---- errno -> reply ----------------------------------------------------- */

static void connect_errors_map_to_their_reply_codes(void **state)
{
	(void)state;
	assert_int_equal(socks5_rep_from_errno(ECONNREFUSED), SOCKS5_REP_CONN_REFUSED);
	assert_int_equal(socks5_rep_from_errno(EHOSTUNREACH), SOCKS5_REP_HOST_UNREACH);
	assert_int_equal(socks5_rep_from_errno(ENETUNREACH), SOCKS5_REP_NET_UNREACH);
	assert_int_equal(socks5_rep_from_errno(ETIMEDOUT), SOCKS5_REP_TTL_EXPIRED);
	assert_int_equal(socks5_rep_from_errno(EACCES), SOCKS5_REP_NOT_ALLOWED);
	assert_int_equal(socks5_rep_from_errno(EPERM), SOCKS5_REP_NOT_ALLOWED);
	assert_int_equal(socks5_rep_from_errno(ENOMEM), SOCKS5_REP_GENERAL_FAILURE);
	assert_int_equal(socks5_rep_from_errno(EIO), SOCKS5_REP_GENERAL_FAILURE);
	assert_int_equal(socks5_rep_from_errno(0), SOCKS5_REP_GENERAL_FAILURE);
	assert_int_equal(socks5_rep_from_errno(-1), SOCKS5_REP_GENERAL_FAILURE);
}

static void no_errno_maps_to_success(void **state)
{
	(void)state;
	for (int e = 0; e < 256; e++)
		assert_int_not_equal(socks5_rep_from_errno(e), SOCKS5_REP_SUCCEEDED);
}

static void worst_reply_prefers_refused_then_unreachable_then_denied(void **state)
{
	(void)state;
	/* Most telling first. */
	const uint8_t order[] = {SOCKS5_REP_CONN_REFUSED, SOCKS5_REP_HOST_UNREACH,
	                         SOCKS5_REP_NET_UNREACH,  SOCKS5_REP_NOT_ALLOWED,
	                         SOCKS5_REP_TTL_EXPIRED,  SOCKS5_REP_GENERAL_FAILURE};
	const size_t n = sizeof order;
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(socks5_rep_worst(order[i], order[i]), order[i]);
		for (size_t j = i + 1; j < n; j++) {
			assert_int_equal(socks5_rep_worst(order[i], order[j]), order[i]);
			assert_int_equal(socks5_rep_worst(order[j], order[i]), order[i]);
		}
	}
}

static void worst_reply_folded_over_attempts_is_order_independent(void **state)
{
	(void)state;
	/* Happy-eyeballs style: several addresses failed differently. */
	const uint8_t a[] = {SOCKS5_REP_TTL_EXPIRED, SOCKS5_REP_NET_UNREACH,
	                     SOCKS5_REP_GENERAL_FAILURE, SOCKS5_REP_HOST_UNREACH};
	uint8_t fwd = SOCKS5_REP_GENERAL_FAILURE, back = SOCKS5_REP_GENERAL_FAILURE;
	for (size_t i = 0; i < sizeof a; i++) {
		fwd = socks5_rep_worst(fwd, a[i]);
		back = socks5_rep_worst(back, a[sizeof a - 1 - i]);
	}
	assert_int_equal(fwd, SOCKS5_REP_HOST_UNREACH);
	assert_int_equal(back, SOCKS5_REP_HOST_UNREACH);
}

/* ---- hostile input ------------------------------------------------------ */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
	uint64_t x = rng_state;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return rng_state = x;
}

static void check_done_invariants(enum codec c, const union parser *p, size_t consumed)
{
	switch (c) {
	case C_GREETING:
		assert_true(p->g.nmethods >= 1);
		assert_int_equal(consumed, 2u + p->g.nmethods);
		break;
	case C_AUTH:
		assert_true(p->a.ulen >= 1);
		assert_int_equal(p->a.user[p->a.ulen], '\0');
		assert_int_equal(p->a.pass[p->a.plen], '\0');
		assert_int_equal(consumed, 3u + p->a.ulen + p->a.plen);
		break;
	case C_REQUEST:
		if (p->r.atyp == SOCKS5_ATYP_IPV4) {
			assert_int_equal(consumed, 10);
		} else if (p->r.atyp == SOCKS5_ATYP_IPV6) {
			assert_int_equal(consumed, 22);
		} else {
			assert_int_equal(p->r.atyp, SOCKS5_ATYP_DOMAIN);
			assert_true(p->r.alen >= 1);
			assert_int_equal(p->r.host[p->r.alen], '\0');
			assert_int_equal(consumed, 7u + p->r.alen);
		}
		break;
	}
}

static void random_bytes_never_crash_or_overconsume(void **state)
{
	(void)state;
	uint8_t buf[600];
	for (int iter = 0; iter < 20000; iter++) {
		size_t n = (size_t)(rng() % sizeof buf);
		for (size_t i = 0; i < n; i++)
			buf[i] = (uint8_t)rng();
		/* Bias towards plausible headers so that deep states are reached. */
		enum codec c = (enum codec)(iter % 3);
		if (n > 0 && rng() % 2)
			buf[0] = c == C_AUTH ? 0x01 : 0x05;
		if (c == C_REQUEST && n > 3 && rng() % 2) {
			buf[2] = 0;
			buf[3] = (uint8_t)(rng() % 2 ? 0x03 : (rng() % 2 ? 0x01 : 0x04));
		}
		size_t chunk = 1 + (size_t)(rng() % 40);
		union parser p;
		size_t total;
		parser_init(c, &p);
		int rc = parser_feed_chunked(c, &p, buf, n, chunk, &total);
		assert_true(total <= n);
		if (rc == SOCKS5_DONE)
			check_done_invariants(c, &p, total);
		else if (rc == SOCKS5_MORE)
			assert_int_equal(total, n);
		else if (c == C_REQUEST)
			assert_true(p.r.rep == SOCKS5_REP_GENERAL_FAILURE ||
			            p.r.rep == SOCKS5_REP_ATYP_NOT_SUPPORTED);
		else if (c == C_GREETING)
			assert_int_not_equal(p.g.error, SOCKS5_GREETING_OK);
		else
			assert_int_not_equal(p.a.error, SOCKS5_AUTH_OK);

		/* The result does not depend on how the bytes were split. */
		union parser q;
		size_t total_whole;
		parser_init(c, &q);
		int rc_whole = parser_feed_chunked(c, &q, buf, n, n ? n : 1, &total_whole);
		assert_int_equal(rc_whole, rc);
		assert_int_equal(total_whole, total);
	}
}

/* ---- method policy ---------------------------------------------------- */

static struct socks5_greeting offers(int no_auth, int userpass)
{
	struct socks5_greeting g = {0};
	g.offers_no_auth = (uint8_t)no_auth;
	g.offers_userpass = (uint8_t)userpass;
	return g;
}

static void userpass_chosen_when_offered_and_users_exist(void **state)
{
	(void)state;
	struct socks5_greeting both = offers(1, 1), up = offers(0, 1);
	for (uint8_t pol = ANON_AUTO; pol <= ANON_NEVER; pol++) {
		assert_int_equal(socks5_choose_method(&both, false, true, pol, true), SOCKS5_METHOD_USERPASS);
		assert_int_equal(socks5_choose_method(&up, false, true, pol, false), SOCKS5_METHOD_USERPASS);
	}
	/* No users: offering only username/password cannot succeed. */
	assert_int_equal(socks5_choose_method(&up, false, false, ANON_ALWAYS, true),
	                 SOCKS5_METHOD_NO_ACCEPTABLE);
}

static void auto_policy_admits_only_loopback_and_only_without_users(void **state)
{
	(void)state;
	struct socks5_greeting none = offers(1, 0);
	assert_int_equal(socks5_choose_method(&none, false, false, ANON_AUTO, true), SOCKS5_METHOD_NO_AUTH);
	assert_int_equal(socks5_choose_method(&none, false, false, ANON_AUTO, false),
	                 SOCKS5_METHOD_NO_ACCEPTABLE);
	assert_int_equal(socks5_choose_method(&none, false, true, ANON_AUTO, true),
	                 SOCKS5_METHOD_NO_ACCEPTABLE);
}

static void always_and_never_ignore_the_client_address(void **state)
{
	(void)state;
	struct socks5_greeting none = offers(1, 0), both = offers(1, 1);
	assert_int_equal(socks5_choose_method(&none, false, true, ANON_ALWAYS, false), SOCKS5_METHOD_NO_AUTH);
	assert_int_equal(socks5_choose_method(&none, false, false, ANON_ALWAYS, false), SOCKS5_METHOD_NO_AUTH);
	assert_int_equal(socks5_choose_method(&none, false, false, ANON_NEVER, true),
	                 SOCKS5_METHOD_NO_ACCEPTABLE);
	/* Both offered, no users, anonymous allowed: no authentication. */
	assert_int_equal(socks5_choose_method(&both, false, false, ANON_ALWAYS, false), SOCKS5_METHOD_NO_AUTH);
	struct socks5_greeting gssapi_only = offers(0, 0);
	gssapi_only.offers_gssapi = 1;
	assert_int_equal(socks5_choose_method(&gssapi_only, false, false, ANON_ALWAYS, true),
	                 SOCKS5_METHOD_NO_ACCEPTABLE);
}

static void gssapi_comes_first_when_configured(void **state)
{
	(void)state;
	struct socks5_greeting all = offers(1, 1), gss = offers(0, 0), none = offers(1, 0);
	all.offers_gssapi = gss.offers_gssapi = 1;
	for (uint8_t pol = ANON_AUTO; pol <= ANON_NEVER; pol++) {
		assert_int_equal(socks5_choose_method(&all, true, true, pol, true), SOCKS5_METHOD_GSSAPI);
		assert_int_equal(socks5_choose_method(&gss, true, false, pol, false), SOCKS5_METHOD_GSSAPI);
	}
	/* Not configured: offered GSS-API is passed over. */
	assert_int_equal(socks5_choose_method(&all, false, true, ANON_NEVER, true),
	                 SOCKS5_METHOD_USERPASS);
	/* Configured, not offered: the auto policy counts it as accounts. */
	assert_int_equal(socks5_choose_method(&none, true, false, ANON_AUTO, true),
	                 SOCKS5_METHOD_NO_ACCEPTABLE);
	assert_int_equal(socks5_choose_method(&none, true, false, ANON_ALWAYS, false),
	                 SOCKS5_METHOD_NO_AUTH);
}

static void loopback_addresses_are_recognised(void **state)
{
	(void)state;
	struct sockaddr_in s4 = {.sin_family = AF_INET};
	struct sockaddr_in6 s6 = {.sin6_family = AF_INET6};
	const char *yes4[] = {"127.0.0.1", "127.255.0.9"}, *no4[] = {"10.0.0.1", "128.0.0.1", "0.0.0.0"};
	for (size_t i = 0; i < 2; i++) {
		inet_pton(AF_INET, yes4[i], &s4.sin_addr);
		assert_true(socks5_is_loopback((struct sockaddr *)&s4));
	}
	for (size_t i = 0; i < 3; i++) {
		inet_pton(AF_INET, no4[i], &s4.sin_addr);
		assert_false(socks5_is_loopback((struct sockaddr *)&s4));
	}
	const char *yes6[] = {"::1", "::ffff:127.0.0.2"}, *no6[] = {"::2", "::ffff:10.0.0.1", "fe80::1"};
	for (size_t i = 0; i < 2; i++) {
		inet_pton(AF_INET6, yes6[i], &s6.sin6_addr);
		assert_true(socks5_is_loopback((struct sockaddr *)&s6));
	}
	for (size_t i = 0; i < 3; i++) {
		inet_pton(AF_INET6, no6[i], &s6.sin6_addr);
		assert_false(socks5_is_loopback((struct sockaddr *)&s6));
	}
	struct sockaddr_un su = {.sun_family = AF_UNIX};
	assert_false(socks5_is_loopback((struct sockaddr *)&su));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(greeting_offering_noauth_and_userpass_is_done_fed_any_way),
		cmocka_unit_test(greeting_offering_only_gssapi_offers_neither_method),
		cmocka_unit_test(greeting_with_255_methods_is_done),
		cmocka_unit_test(greeting_version_4_is_bad_version),
		cmocka_unit_test(greeting_with_zero_methods_is_no_methods),
		cmocka_unit_test(greeting_fed_nothing_is_more_and_uses_nothing),
		cmocka_unit_test(greeting_once_done_consumes_no_more_bytes),
		cmocka_unit_test(auth_user_and_password_is_done_fed_any_way),
		cmocka_unit_test(auth_empty_password_is_accepted_as_empty_string),
		cmocka_unit_test(auth_empty_password_after_reinit_does_not_keep_old_password),
		cmocka_unit_test(auth_255_byte_user_and_password_are_done),
		cmocka_unit_test(auth_version_2_is_bad_version),
		cmocka_unit_test(auth_version_5_is_bad_version),
		cmocka_unit_test(auth_empty_username_is_empty_user),
		cmocka_unit_test(request_connect_ipv4_is_done_fed_any_way),
		cmocka_unit_test(request_connect_ipv6_is_done_fed_any_way),
		cmocka_unit_test(request_connect_domain_is_done_fed_any_way),
		cmocka_unit_test(request_255_byte_domain_is_done_and_nul_terminated),
		cmocka_unit_test(request_udp_associate_with_port_0_reports_its_command),
		cmocka_unit_test(request_bind_reports_its_command),
		cmocka_unit_test(request_version_4_fails_with_general_failure),
		cmocka_unit_test(request_nonzero_reserved_byte_fails_with_general_failure),
		cmocka_unit_test(request_atyp_2_fails_with_atyp_not_supported),
		cmocka_unit_test(request_atyp_0_and_0xff_fail_with_atyp_not_supported),
		cmocka_unit_test(request_empty_domain_fails_with_general_failure),
		cmocka_unit_test(handshake_pipelined_in_one_buffer_leaves_the_payload),
		cmocka_unit_test(handshake_pipelined_in_any_segment_size_leaves_the_payload),
		cmocka_unit_test(reply_for_ipv4_is_10_bytes_with_address_and_port),
		cmocka_unit_test(reply_for_ipv6_is_22_bytes_with_address_and_port),
		cmocka_unit_test(reply_for_v4_mapped_ipv6_is_encoded_as_ipv4),
		cmocka_unit_test(reply_without_address_is_ipv4_zero_with_the_code),
		cmocka_unit_test(reply_for_unknown_family_is_ipv4_zero),
		cmocka_unit_test(reply_carries_every_code_unchanged),
		cmocka_unit_test(reply_round_trips_through_the_request_parser),
		cmocka_unit_test(connect_errors_map_to_their_reply_codes),
		cmocka_unit_test(no_errno_maps_to_success),
		cmocka_unit_test(worst_reply_prefers_refused_then_unreachable_then_denied),
		cmocka_unit_test(worst_reply_folded_over_attempts_is_order_independent),
		cmocka_unit_test(random_bytes_never_crash_or_overconsume),
		cmocka_unit_test(userpass_chosen_when_offered_and_users_exist),
		cmocka_unit_test(auto_policy_admits_only_loopback_and_only_without_users),
		cmocka_unit_test(always_and_never_ignore_the_client_address),
		cmocka_unit_test(gssapi_comes_first_when_configured),
		cmocka_unit_test(loopback_addresses_are_recognised),
	};
	return cmocka_run_group_tests_name("socks5", tests, NULL, NULL);
}
