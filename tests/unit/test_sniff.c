/*
 * Unit tests for worker/sniff: every dissector fed whole, byte by byte and
 * in every small chunk size, with commands coalesced and pipelined; the
 * credentials reported must not depend on how the bytes were split.
 * Hostile input: endless lines, missing CRLF, invalid base64, huge
 * literals and bodies, NUL and TLS bytes.  Record formatting and escaping.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../shared/log.h"
#include "../../worker/sniff.h"

#define UP SNIFF_UP
#define DN SNIFF_DOWN

struct step {
	int dir;
	const char *data;
	size_t len; /* 0: strlen(data) */
};

#define END {-1, NULL, 0}

struct got {
	char text[4096];
	size_t n;
	int count;
};

static void on_cred(void *arg, const struct sniff_cred *c)
{
	struct got *g = arg;
	char u[SNIFF_FIELD_MAX * 4 + 5], p[SNIFF_FIELD_MAX * 4 + 5];
	log_escape(u, sizeof u, c->user, c->ulen);
	log_escape(p, sizeof p, c->pass, c->plen);
	int n = snprintf(g->text + g->n, sizeof g->text - g->n, "%s %s %s;",
	                 sniff_proto_name(c->proto), u, p);
	assert_true(n > 0 && (size_t)n < sizeof g->text - g->n);
	g->n += (size_t)n;
	g->count++;
}

/* Feed a script in slices of at most `chunk` bytes, each from an exact-size
 * heap copy so that ASan sees any read beyond it. */
static enum sniff_status run_chunked(const struct step *steps, size_t chunk, struct got *g,
                                     enum sniff_proto *proto)
{
	struct sniff *sn = sniff_new();
	assert_non_null(sn);
	memset(g, 0, sizeof *g);
	enum sniff_status st = SNIFF_MORE;
	for (const struct step *s = steps; s->dir >= 0; s++) {
		size_t len = s->len ? s->len : strlen(s->data);
		for (size_t off = 0; off < len;) {
			size_t k = len - off < chunk ? len - off : chunk;
			uint8_t *copy = malloc(k);
			assert_non_null(copy);
			memcpy(copy, s->data + off, k);
			st = sniff_feed(sn, (enum sniff_dir)s->dir, copy, k, on_cred, g);
			free(copy);
			off += k;
		}
	}
	if (proto)
		*proto = sniff_proto(sn);
	sniff_free(sn);
	return st;
}

/* Whole, byte by byte, and every chunk size up to 17: the same records and
 * the same final status. */
static void expect(const struct step *steps, const char *records, enum sniff_status want)
{
	static const size_t chunks[] = {1000000, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 16, 17, 64};
	for (size_t i = 0; i < sizeof chunks / sizeof chunks[0]; i++) {
		struct got g;
		enum sniff_status st = run_chunked(steps, chunks[i], &g, NULL);
		if (strcmp(g.text, records) != 0 || st != want)
			fail_msg("chunk %zu: got '%s' status %d, want '%s' status %d", chunks[i],
			         g.text, st, records, want);
	}
}

/* ---- HTTP --------------------------------------------------------------- */

/* alice:s3cret */
#define AUTH_ALICE "Authorization: Basic YWxpY2U6czNjcmV0\r\n"
/* bob:pa:ss (the password may hold a colon) */
#define AUTH_BOB "Authorization: basic   Ym9iOnBhOnNz\r\n"

static void http_basic_recorded_on_2xx(void **st)
{
	(void)st;
	struct step s[] = {
	    {UP, "GET /a HTTP/1.1\r\nHost: x\r\n" AUTH_ALICE "\r\n", 0},
	    {DN, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello", 0},
	    END,
	};
	expect(s, "HTTP alice s3cret;", SNIFF_MORE);
}

static void http_wrong_password_not_recorded(void **st)
{
	(void)st;
	struct step s[] = {
	    {UP, "GET /a HTTP/1.1\r\nHost: x\r\n" AUTH_ALICE "\r\n", 0},
	    {DN, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 3\r\n\r\nno\n", 0},
	    END,
	};
	expect(s, "", SNIFF_MORE);
}

static void http_every_request_of_keepalive_connection(void **st)
{
	(void)st;
	struct step s[] = {
	    {UP, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n", 0},
	    {DN, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n", 0},
	    {UP, "GET /2 HTTP/1.1\r\nHost: x\r\n" AUTH_ALICE "\r\n", 0},
	    {DN,
	     "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
	     "5\r\nHTTP/\r\n1a;ext=1\r\nHTTP/1.1 200 OK\r\n\r\n1234567\r\n0\r\nX-T: 1\r\n\r\n",
	     0},
	    {UP, "HEAD /3 HTTP/1.1\r\nHost: x\r\n" AUTH_BOB "\r\n", 0},
	    {DN, "HTTP/1.1 204 No Content\r\nContent-Length: 99\r\n\r\n", 0},
	    {UP,
	     "POST /4 HTTP/1.1\r\nContent-Length: 39\r\nExpect: 100-continue\r\n" AUTH_ALICE "\r\n",
	     0},
	    {DN, "HTTP/1.1 100 Continue\r\n\r\n", 0},
	    {UP, "Authorization: Basic Ym9iOnBhOnNz\r\n\r\n\r\n", 0},
	    {DN, "HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok", 0},
	    {UP, "GET /5 HTTP/1.0\r\n" AUTH_ALICE "\r\n", 0},
	    {DN, "HTTP/1.1 304 Not Modified\r\n\r\n", 0},
	    END,
	};
	/* 304 is not 2xx: the last one is not reported */
	expect(s, "HTTP alice s3cret;HTTP bob pa:ss;HTTP alice s3cret;", SNIFF_MORE);
}

static void http_pipelined_requests_and_coalesced_responses(void **st)
{
	(void)st;
	struct step s[] = {
	    {UP,
	     "GET /1 HTTP/1.1\r\n" AUTH_ALICE "\r\nGET /2 HTTP/1.1\r\n" AUTH_ALICE
	     "\r\nHEAD /3 HTTP/1.1\r\n" AUTH_ALICE "\r\nGET /4 HTTP/1.1\r\n\r\n",
	     0},
	    {DN,
	     "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 403 Forbidden\r\n"
	     "Content-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
	     "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	     0},
	    END,
	};
	expect(s, "HTTP alice s3cret;HTTP alice s3cret;", SNIFF_MORE);
}

static void http_long_headers_and_long_target_are_skipped(void **st)
{
	(void)st;
	static char req[9000];
	char target[3000], cookie[4000];
	memset(target, 'a', sizeof target - 1);
	target[sizeof target - 1] = 0;
	memset(cookie, 'c', sizeof cookie - 1);
	cookie[sizeof cookie - 1] = 0;
	snprintf(req, sizeof req, "GET /%s HTTP/1.1\r\nCookie: %s\r\n" AUTH_ALICE "\r\n", target,
	         cookie);
	struct step s[] = {
	    {UP, req, 0},
	    {DN,
	     "HTTP/1.1 200 OK\r\nContent-Length: 0\r\nX-Long: 12345678901234567890123456789012345"
	     "67890123456789012345678901234567890\r\n\r\n",
	     0},
	    END,
	};
	expect(s, "HTTP alice s3cret;", SNIFF_MORE);
}

static void http_body_bytes_are_not_headers(void **st)
{
	(void)st;
	struct step s[] = {
	    {UP, "POST / HTTP/1.1\r\nContent-Length: 39\r\n\r\n" AUTH_ALICE, 0},
	    {DN, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0},
	    {UP,
	     "PUT / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n27\r\n" AUTH_ALICE
	     "\r\n0\r\n\r\n",
	     0},
	    {DN, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0},
	    END,
	};
	expect(s, "", SNIFF_MORE);
}

static void http_big_body_skipped_then_next_request_seen(void **st)
{
	(void)st;
	struct sniff *sn = sniff_new();
	struct got g = {0};
	static const char req[] = "GET /big HTTP/1.1\r\nHost: x\r\n\r\n";
	static const char hdr[] = "HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\n";
	static uint8_t body[1 << 16];
	memset(body, 0, sizeof body); /* binary body: counted, never looked at */
	assert_int_equal(sniff_feed(sn, UP, (const uint8_t *)req, strlen(req), on_cred, &g),
	                 SNIFF_MORE);
	assert_int_equal(sniff_feed(sn, DN, (const uint8_t *)hdr, strlen(hdr), on_cred, &g),
	                 SNIFF_MORE);
	size_t left = 10000000;
	while (left) {
		size_t k = left < sizeof body ? left : sizeof body;
		assert_int_equal(sniff_feed(sn, DN, body, k, on_cred, &g), SNIFF_MORE);
		left -= k;
	}
	static const char req2[] = "GET /2 HTTP/1.1\r\n" AUTH_ALICE "\r\n";
	static const char rsp2[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
	sniff_feed(sn, UP, (const uint8_t *)req2, strlen(req2), on_cred, &g);
	sniff_feed(sn, DN, (const uint8_t *)rsp2, strlen(rsp2), on_cred, &g);
	assert_string_equal(g.text, "HTTP alice s3cret;");
	sniff_free(sn);
}

/* The relay may move a body unseen (splice) and report it with sniff_skip:
 * the dissector says how much it can skip, counts it, and stays in step. */
static void http_body_moved_unseen_then_next_request_seen(void **st)
{
	(void)st;
	struct sniff *sn = sniff_new();
	struct got g = {0};
	static const char req[] = "GET /big HTTP/1.1\r\nHost: x\r\n\r\n";
	static const char hdr[] = "HTTP/1.1 200 OK\r\nContent-Length: 10000000\r\n\r\nfirst";
	assert_int_equal(sniff_skippable(sn, UP), 0);
	sniff_feed(sn, UP, (const uint8_t *)req, strlen(req), on_cred, &g);
	assert_int_equal(sniff_skippable(sn, DN), 0); /* the headers must be seen */
	sniff_feed(sn, DN, (const uint8_t *)hdr, strlen(hdr), on_cred, &g);
	assert_int_equal(sniff_skippable(sn, UP), 0);
	assert_int_equal(sniff_skippable(sn, DN), 10000000 - 5);
	sniff_skip(sn, DN, 1000);
	assert_int_equal(sniff_skippable(sn, DN), 10000000 - 5 - 1000);
	sniff_skip(sn, UP, 1000); /* nothing to skip there: ignored */
	assert_int_equal(sniff_skippable(sn, UP), 0);
	sniff_skip(sn, DN, 10000000); /* more than left: stops at the body's end */
	assert_int_equal(sniff_skippable(sn, DN), 0);
	static const char req2[] = "GET /2 HTTP/1.1\r\n" AUTH_ALICE "\r\n";
	static const char rsp2[] = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
	sniff_feed(sn, UP, (const uint8_t *)req2, strlen(req2), on_cred, &g);
	sniff_feed(sn, DN, (const uint8_t *)rsp2, strlen(rsp2), on_cred, &g);
	assert_string_equal(g.text, "HTTP alice s3cret;");
	/* A session with nothing left to find may skip everything. */
	static const char tls[] = "\x16\x03\x01\x02\x00";
	assert_int_equal(sniff_feed(sn, UP, (const uint8_t *)tls, 5, on_cred, &g), SNIFF_DONE);
	assert_true(sniff_skippable(sn, UP) == UINT64_MAX);
	sniff_free(sn);
}

static void http_stops_on_tunnels_and_upgrades(void **st)
{
	(void)st;
	struct step connect[] = {
	    {UP, "CONNECT h:443 HTTP/1.1\r\n" AUTH_ALICE "\r\n", 0},
	    {DN, "HTTP/1.1 200 Connection established\r\n\r\n", 0},
	    {UP, "\x16\x03\x01\x02\x00", 0},
	    END,
	};
	expect(connect, "HTTP alice s3cret;", SNIFF_DONE);
	struct step upgrade[] = {
	    {UP, "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\n\r\n", 0},
	    {DN, "HTTP/1.1 101 Switching Protocols\r\n\r\n", 0},
	    END,
	};
	expect(upgrade, "", SNIFF_DONE);
	struct step h2[] = {{UP, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 0}, END};
	expect(h2, "", SNIFF_DONE);
	struct step closed[] = {
	    {UP, "GET / HTTP/1.0\r\n" AUTH_ALICE "\r\n", 0},
	    {DN, "HTTP/1.0 200 OK\r\n\r\nbody until close", 0},
	    END,
	};
	expect(closed, "HTTP alice s3cret;", SNIFF_DONE);
}

static void http_hostile_input(void **st)
{
	(void)st;
	struct step tls[] = {{UP, "\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03", 11}, END};
	expect(tls, "", SNIFF_DONE);
	struct step nul[] = {{UP, "GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 27}, END};
	expect(nul, "", SNIFF_DONE);
	struct step badb64[] = {
	    {UP, "GET / HTTP/1.1\r\nAuthorization: Basic YW$pY2U6czNjcmV0\r\n\r\n", 0},
	    {DN, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0},
	    {UP, "GET / HTTP/1.1\r\nAuthorization: Basic YWxpY2U\r\n\r\n", 0}, /* no colon */
	    {DN, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0},
	    {UP, "GET / HTTP/1.1\r\nAuthorization: Bearer YWxpY2U6czNjcmV0\r\n\r\n", 0},
	    {DN, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0},
	    END,
	};
	expect(badb64, "", SNIFF_MORE);
	struct step badlen[] = {
	    {UP, "GET / HTTP/1.1\r\n" AUTH_ALICE "\r\n", 0},
	    {DN, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 0},
	    END,
	};
	expect(badlen, "HTTP alice s3cret;", SNIFF_DONE);
	struct step unsolicited[] = {{UP, "GET / HTTP/1.1\r\n\r\n", 0},
	                             {DN, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 0},
	                             {DN, "HTTP/1.1 200 OK\r\n\r\n", 0},
	                             END};
	expect(unsolicited, "", SNIFF_DONE);

	/* An endless line and an endless header section end at the budget. */
	struct sniff *sn = sniff_new();
	static uint8_t junk[4096];
	memset(junk, 'a', sizeof junk);
	sniff_feed(sn, UP, (const uint8_t *)"GET / HTTP/1.1\r\nX: ", 19, on_cred, NULL);
	size_t fed = 0;
	while (sniff_feed(sn, UP, junk, sizeof junk, on_cred, NULL) == SNIFF_MORE)
		fed += sizeof junk;
	assert_true(fed <= SNIFF_BUDGET);
	sniff_free(sn);
	sn = sniff_new();
	sniff_feed(sn, UP, (const uint8_t *)"GET / HTTP/1.1\r\n", 16, on_cred, NULL);
	fed = 0;
	while (sniff_feed(sn, UP, (const uint8_t *)"X-A: b\r\n", 8, on_cred, NULL) == SNIFF_MORE)
		fed += 8;
	assert_true(fed <= SNIFF_BUDGET);
	sniff_free(sn);
}

/* ---- POP3 --------------------------------------------------------------- */

static void pop3_user_pass(void **st)
{
	(void)st;
	struct step s[] = {
	    {DN, "+OK POP3 ready\r\n", 0},
	    {UP, "CAPA\r\n", 0},
	    {DN, "+OK\r\nUSER\r\n+OK not an answer\r\nSASL PLAIN\r\n.\r\n", 0},
	    {UP, "USER alice\r\n", 0},
	    {DN, "+OK\r\n", 0},
	    {UP, "PASS wrong\r\n", 0},
	    {DN, "-ERR [AUTH] Authentication failed.\r\n", 0},
	    {UP, "USER alice\r\n", 0},
	    {DN, "+OK\r\n", 0},
	    {UP, "PASS s3 cr\tet\r\n", 0},
	    {DN, "+OK Logged in.\r\n", 0},
	    {UP, "RETR 1\r\n", 0},
	    END,
	};
	expect(s, "POP3 alice s3\\x20cr\\x09et;", SNIFF_DONE);
}

static void pop3_pipelined(void **st)
{
	(void)st;
	struct step s[] = {
	    {DN, "+OK hi\r\n", 0},
	    {UP, "CAPA\r\nNOOP\r\nUSER bob\r\nPASS pw\r\n", 0},
	    {DN, "+OK\r\nPIPELINING\r\n.\r\n+OK\r\n+OK\r\n+OK in\r\n", 0},
	    END,
	};
	expect(s, "POP3 bob pw;", SNIFF_DONE);
}

static void pop3_auth_plain(void **st)
{
	(void)st;
	/* \0alice\0s3cret */
	struct step ir[] = {
	    {DN, "+OK hi\r\n", 0},
	    {UP, "AUTH PLAIN AGFsaWNlAHMzY3JldA==\r\n", 0},
	    {DN, "+OK Logged in.\r\n", 0},
	    END,
	};
	expect(ir, "POP3 alice s3cret;", SNIFF_DONE);
	/* authzid given: admin\0alice\0s3cret */
	struct step cont[] = {
	    {DN, "+OK hi\r\n", 0},
	    {UP, "AUTH\r\n", 0},
	    {DN, "+OK\r\nPLAIN\r\n.\r\n", 0},
	    {UP, "AUTH PLAIN\r\n", 0},
	    {DN, "+ \r\n", 0},
	    {UP, "*\r\n", 0},
	    {DN, "-ERR cancelled\r\n", 0},
	    {UP, "AUTH PLAIN\r\n", 0},
	    {DN, "+\r\n", 0},
	    {UP, "YWRtaW4AYWxpY2UAczNjcmV0\r\n", 0},
	    {DN, "+OK Logged in.\r\n", 0},
	    END,
	};
	expect(cont, "POP3 alice s3cret;", SNIFF_DONE);
	struct step bad[] = {
	    {DN, "+OK hi\r\n", 0},   {UP, "AUTH PLAIN AGFsaWNl!!!!\r\n", 0},
	    {DN, "-ERR bad\r\n", 0}, {UP, "AUTH PLAIN YWxpY2UAczNjcmV0\r\n", 0}, /* only one NUL */
	    {DN, "+OK\r\n", 0},      END,
	};
	expect(bad, "", SNIFF_DONE);
}

static void pop3_stls_stops(void **st)
{
	(void)st;
	struct step s[] = {
	    {DN, "+OK hi\r\n", 0},
	    {UP, "STLS\r\n", 0},
	    {DN, "+OK Begin TLS negotiation now.\r\n", 0},
	    {UP, "\x16\x03\x01", 0},
	    END,
	};
	expect(s, "", SNIFF_DONE);
	struct step refused[] = {
	    {DN, "+OK hi\r\n", 0},           {UP, "STLS\r\n", 0},       {DN, "-ERR no TLS\r\n", 0},
	    {UP, "USER a\r\nPASS b\r\n", 0}, {DN, "+OK\r\n+OK\r\n", 0}, END,
	};
	expect(refused, "POP3 a b;", SNIFF_DONE);
}

/* ---- IMAP --------------------------------------------------------------- */

static void imap_login_forms(void **st)
{
	(void)st;
	struct step atoms[] = {
	    {DN, "* OK [CAPABILITY IMAP4rev1 LITERAL+] ready\r\n", 0},
	    {UP, "a1 CAPABILITY\r\n", 0},
	    {DN, "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\na1 OK done\r\n", 0},
	    {UP, "a2 LOGIN alice wrong\r\n", 0},
	    {DN, "a2 NO [AUTHENTICATIONFAILED] failed\r\n", 0},
	    {UP, "a3 login alice s3cret\r\n", 0},
	    {DN, "a3 OK [CAPABILITY IMAP4rev1] Logged in\r\n", 0},
	    END,
	};
	expect(atoms, "IMAP alice s3cret;", SNIFF_DONE);
	struct step quoted[] = {
	    {DN, "* OK ready\r\n", 0},
	    {UP, "x LOGIN \"al ice\" \"p\\\"w\\\\d\"\r\n", 0},
	    {DN, "x OK\r\n", 0},
	    END,
	};
	expect(quoted, "IMAP al\\x20ice p\"w\\x5cd;", SNIFF_DONE);
	struct step literal[] = {
	    {DN, "* OK ready\r\n", 0},
	    {UP, "A001 LOGIN {5}\r\n", 0},
	    {DN, "+ Ready for additional command text\r\n", 0},
	    {UP, "alice {8}\r\n", 0},
	    {DN, "+ Ready\r\n", 0},
	    {UP, "s3\"c et}\r\n", 0},
	    {DN, "A001 OK LOGIN completed\r\n", 0},
	    END,
	};
	expect(literal, "IMAP alice s3\"c\\x20et};", SNIFF_DONE);
	struct step litplus[] = {
	    {DN, "* OK ready\r\n", 0},
	    {UP, "t1 NOOP\r\nt2 LOGIN {5+}\r\nalice \"s3cret\"\r\n", 0},
	    {DN, "t1 OK\r\nt2 OK\r\n", 0},
	    END,
	};
	expect(litplus, "IMAP alice s3cret;", SNIFF_DONE);
}

static void imap_authenticate_plain(void **st)
{
	(void)st;
	struct step ir[] = {
	    {DN, "* OK ready\r\n", 0},
	    {UP, "A AUTHENTICATE PLAIN AGFsaWNlAHMzY3JldA==\r\n", 0},
	    {DN, "* CAPABILITY IMAP4rev1\r\nA OK Logged in\r\n", 0},
	    END,
	};
	expect(ir, "IMAP alice s3cret;", SNIFF_DONE);
	struct step cont[] = {
	    {DN, "* OK ready\r\n", 0},
	    {UP, "B AUTHENTICATE PLAIN\r\n", 0},
	    {DN, "+ \r\n", 0},
	    {UP, "AGFsaWNlAHMzY3JldA==\r\n", 0},
	    {DN, "B OK Logged in\r\n", 0},
	    END,
	};
	expect(cont, "IMAP alice s3cret;", SNIFF_DONE);
	struct step no[] = {
	    {DN, "* OK ready\r\n", 0},  {UP, "B AUTHENTICATE PLAIN\r\n", 0},
	    {DN, "+ \r\n", 0},          {UP, "AGFsaWNlAHdyb25n\r\n", 0},
	    {DN, "B NO failed\r\n", 0}, {UP, "C LOGIN x y\r\n", 0},
	    {DN, "C OK\r\n", 0},        END,
	};
	expect(no, "IMAP x y;", SNIFF_DONE);
}

static void imap_stops_and_hostile(void **st)
{
	(void)st;
	struct step preauth[] = {{DN, "* PREAUTH welcome\r\n", 0}, END};
	expect(preauth, "", SNIFF_DONE);
	struct step tls[] = {
	    {DN, "* OK ready\r\n", 0},
	    {UP, "S STARTTLS\r\n", 0},
	    {DN, "S OK Begin TLS\r\n", 0},
	    END,
	};
	expect(tls, "", SNIFF_DONE);
	struct step huge[] = {
	    {DN, "* OK ready\r\n", 0},
	    {UP, "A LOGIN {99999999999}\r\n", 0},
	    END,
	};
	expect(huge, "", SNIFF_DONE);
	/* A literal too long to keep is skipped, not recorded. */
	static char longlit[600];
	snprintf(longlit, sizeof longlit, "A LOGIN {300}\r\n%0300d {1}\r\nx\r\n", 7);
	struct step toolong[] = {
	    {DN, "* OK ready\r\n", 0},
	    {UP, longlit, 0},
	    {DN, "A OK\r\n", 0},
	    END,
	};
	expect(toolong, "", SNIFF_DONE);
	struct step untagged_literal[] = {
	    {DN, "* OK ready\r\n", 0},
	    {UP, "A ID NIL\r\nB LOGIN u p\r\n", 0},
	    {DN, "* ID (\"name\" {14}\r\nB OK fake\r\n x)\r\nA OK\r\nB OK\r\n", 0},
	    END,
	};
	expect(untagged_literal, "IMAP u p;", SNIFF_DONE);
	struct step nul[] = {{DN, "* OK ready\r\n", 0}, {UP, "A LOGIN a\0b c\r\n", 15}, END};
	expect(nul, "", SNIFF_DONE);
}

/* ---- FTP ---------------------------------------------------------------- */

static void ftp_user_pass(void **st)
{
	(void)st;
	struct step s[] = {
	    {DN, "220-Welcome\r\n220-to the\r\n220 server\r\n", 0},
	    {UP, "USER alice\r\n", 0},
	    {DN, "331 Please specify the password.\r\n", 0},
	    {UP, "PASS wrong\r\n", 0},
	    {DN, "530 Login incorrect.\r\n", 0},
	    {UP, "USER alice\r\n", 0},
	    {DN, "331 Please specify the password.\r\n", 0},
	    {UP, "PASS s3cret\r\n", 0},
	    {DN, "230-Hello\r\n in between\r\n230 Login successful.\r\n", 0},
	    END,
	};
	expect(s, "FTP alice s3cret;", SNIFF_DONE);
	struct step pipelined[] = {
	    {DN, "220 (vsFTPd 3.0.3)\r\n", 0},
	    {UP, "USER bob\r\nPASS pw\r\n", 0},
	    {DN, "331 ok\r\n230 in\r\n", 0},
	    END,
	};
	expect(pipelined, "FTP bob pw;", SNIFF_DONE);
	struct step tls[] = {
	    {DN, "220 ready\r\n", 0},
	    {UP, "AUTH TLS\r\n", 0},
	    {DN, "234 Proceed with negotiation.\r\n", 0},
	    END,
	};
	expect(tls, "", SNIFF_DONE);
}

/* ---- SMTP --------------------------------------------------------------- */

static void smtp_auth(void **st)
{
	(void)st;
	struct step plain[] = {
	    {DN, "220 mail ESMTP\r\n", 0},
	    {UP, "EHLO client\r\n", 0},
	    {DN, "250-mail\r\n250-PIPELINING\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n", 0},
	    {UP, "AUTH PLAIN AGFsaWNlAHdyb25n\r\n", 0},
	    {DN, "535 5.7.8 Authentication failed\r\n", 0},
	    {UP, "AUTH PLAIN AGFsaWNlAHMzY3JldA==\r\n", 0},
	    {DN, "235 2.7.0 Authentication successful\r\n", 0},
	    END,
	};
	expect(plain, "SMTP alice s3cret;", SNIFF_DONE);
	struct step login[] = {
	    {DN, "220 mail ESMTP\r\n", 0},
	    {UP, "EHLO client\r\n", 0},
	    {DN, "250-mail\r\n250 AUTH LOGIN\r\n", 0},
	    {UP, "AUTH LOGIN\r\n", 0},
	    {DN, "334 VXNlcm5hbWU6\r\n", 0},
	    {UP, "YWxpY2U=\r\n", 0},
	    {DN, "334 UGFzc3dvcmQ6\r\n", 0},
	    {UP, "czNjcmV0\r\n", 0},
	    {DN, "235 2.7.0 ok\r\n", 0},
	    END,
	};
	expect(login, "SMTP alice s3cret;", SNIFF_DONE);
	struct step login_ir[] = {
	    {DN, "220 mail ESMTP\r\n", 0},   {UP, "EHLO client\r\n", 0},
	    {DN, "250 AUTH LOGIN\r\n", 0},   {UP, "AUTH LOGIN YWxpY2U=\r\n", 0},
	    {DN, "334 UGFzc3dvcmQ6\r\n", 0}, {UP, "czNjcmV0\r\n", 0},
	    {DN, "235 2.7.0 ok\r\n", 0},     END,
	};
	expect(login_ir, "SMTP alice s3cret;", SNIFF_DONE);
	struct step cont[] = {
	    {DN, "220 mail ESMTP\r\n", 0}, {UP, "EHLO client\r\n", 0},
	    {DN, "250 AUTH PLAIN\r\n", 0}, {UP, "AUTH PLAIN\r\n", 0},
	    {DN, "334 \r\n", 0},           {UP, "AGFsaWNlAHMzY3JldA==\r\n", 0},
	    {DN, "235 2.7.0 ok\r\n", 0},   END,
	};
	expect(cont, "SMTP alice s3cret;", SNIFF_DONE);
	/* A mechanism without a clear-text password: its exchange is consumed
	 * as SASL data and the commands after it stay paired with answers. */
	struct step cram[] = {
	    {DN, "220 mail ESMTP\r\n", 0},
	    {UP, "EHLO client\r\n", 0},
	    {DN, "250 AUTH CRAM-MD5 PLAIN\r\n", 0},
	    {UP, "AUTH CRAM-MD5\r\n", 0},
	    {DN, "334 PDQxOTI5NDIzNDEuMTI4Mjg0NzJAc291cmNlZm91ci5hbmRyZXcuY211LmVkdT4=\r\n", 0},
	    {UP, "YWxpY2UgYjkxM2E2MDJjN2VkYTdhNDk1YjRlNmU3MzM0ZDM4OTA=\r\n", 0},
	    {DN, "535 5.7.8 no\r\n", 0},
	    {UP, "NOOP\r\nAUTH PLAIN AGFsaWNlAHMzY3JldA==\r\n", 0},
	    {DN, "250 ok\r\n235 2.7.0 ok\r\n", 0},
	    END,
	};
	expect(cram, "SMTP alice s3cret;", SNIFF_DONE);
}

static void smtp_stops(void **st)
{
	(void)st;
	struct step tls[] = {
	    {DN, "220 mail ESMTP\r\n", 0},
	    {UP, "EHLO c\r\n", 0},
	    {DN, "250-mail\r\n250 STARTTLS\r\n", 0},
	    {UP, "STARTTLS\r\n", 0},
	    {DN, "220 2.0.0 Ready to start TLS\r\n", 0},
	    END,
	};
	expect(tls, "", SNIFF_DONE);
	struct step data[] = {
	    {DN, "220 mail ESMTP\r\n", 0},
	    {UP, "HELO c\r\nMAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n", 0},
	    {DN, "250 hi\r\n250 ok\r\n250 ok\r\n354 go\r\n", 0},
	    END,
	};
	expect(data, "", SNIFF_DONE);
}

/* ---- recognition, hostile input ----------------------------------------- */

static void unknown_protocols_stop_at_once(void **st)
{
	(void)st;
	enum sniff_proto p;
	struct got g;
	struct step ssh[] = {{DN, "SSH-2.0-OpenSSH_9.2\r\n", 0}, END};
	assert_int_equal(run_chunked(ssh, 1, &g, &p), SNIFF_DONE);
	struct step bin[] = {{UP, "\x00\x01\x02\x03", 4}, END};
	assert_int_equal(run_chunked(bin, 1, &g, &p), SNIFF_DONE);
	struct step lower[] = {{UP, "get / HTTP/1.1\r\n", 0}, END};
	assert_int_equal(run_chunked(lower, 1, &g, &p), SNIFF_DONE);
	struct step http[] = {{UP, "OPTIONS * HTTP/1.1\r\n", 0}, END};
	assert_int_equal(run_chunked(http, 3, &g, &p), SNIFF_MORE);
	assert_int_equal(p, SNIFF_HTTP);
	struct step amb[] = {
	    {DN, "220 hello\r\n", 0}, {UP, "NOOP\r\n", 0}, {DN, "200 ok\r\n", 0}, END};
	assert_int_equal(run_chunked(amb, 1, &g, &p), SNIFF_MORE);
	struct step smtp[] = {{DN, "220 hello\r\n", 0}, {UP, "EHLO x\r\n", 0}, END};
	assert_int_equal(run_chunked(smtp, 1, &g, &p), SNIFF_MORE);
	assert_int_equal(p, SNIFF_SMTP);
	struct step ftp[] = {{DN, "220 hello\r\n", 0}, {UP, "USER x\r\n", 0}, END};
	assert_int_equal(run_chunked(ftp, 1, &g, &p), SNIFF_MORE);
	assert_int_equal(p, SNIFF_FTP);
}

static void endless_lines_without_crlf_end_at_budget(void **st)
{
	(void)st;
	static const char *const greet[] = {"+OK hi\r\n", "* OK hi\r\n", "220 hi\r\n"};
	static uint8_t junk[1000];
	memset(junk, 'x', sizeof junk);
	for (size_t i = 0; i < 3; i++) {
		for (int dir = 0; dir < 2; dir++) {
			struct sniff *sn = sniff_new();
			assert_int_equal(sniff_feed(sn, DN, (const uint8_t *)greet[i],
			                            strlen(greet[i]), on_cred, NULL),
			                 SNIFF_MORE);
			size_t fed = 0;
			while (sniff_feed(sn, (enum sniff_dir)dir, junk, sizeof junk, on_cred,
			                  NULL) == SNIFF_MORE)
				fed += sizeof junk;
			assert_true(fed <= SNIFF_BUDGET);
			sniff_free(sn);
		}
	}
	/* Short lines that never make progress end too. */
	struct sniff *sn = sniff_new();
	sniff_feed(sn, DN, (const uint8_t *)"+OK hi\r\n", 8, on_cred, NULL);
	size_t fed = 0;
	for (;;) {
		if (sniff_feed(sn, UP, (const uint8_t *)"NOOP\r\n", 6, on_cred, NULL) == SNIFF_DONE)
			break;
		if (sniff_feed(sn, DN, (const uint8_t *)"+OK\r\n", 5, on_cred, NULL) == SNIFF_DONE)
			break;
		fed += 11;
		assert_true(fed <= SNIFF_BUDGET);
	}
	sniff_free(sn);
}

static void random_input_never_crashes(void **st)
{
	(void)st;
	static const char *const starts[] = {"", "+OK\r\n", "* OK\r\n", "220 x\r\n",
	                                     "GET / HTTP/1.1\r\n"};
	srand(1234);
	for (int round = 0; round < 2000; round++) {
		struct sniff *sn = sniff_new();
		const char *s0 = starts[round % 5];
		int dir0 = round % 5 == 4 ? UP : DN;
		sniff_feed(sn, (enum sniff_dir)dir0, (const uint8_t *)s0, strlen(s0), on_cred,
		           NULL);
		for (int k = 0; k < 20; k++) {
			uint8_t buf[64];
			size_t n = (size_t)(rand() % (int)sizeof buf);
			for (size_t i = 0; i < n; i++) {
				static const char alpha[] =
				    "AUTH PLAIN LOGIN USER PASS {3}{2+}\"\\ +OK 235 334 "
				    "230 a OK \r\n\r\n=YWFh:HTTP/1.1 200\r\n";
				buf[i] =
				    (uint8_t)(rand() % 4 ? alpha[rand() % (int)(sizeof alpha - 1)]
				                         : rand());
			}
			uint8_t *copy = malloc(n ? n : 1);
			memcpy(copy, buf, n);
			sniff_feed(sn, (enum sniff_dir)(rand() & 1), copy, n, on_cred, NULL);
			free(copy);
		}
		sniff_free(sn);
	}
}

/* ---- records ------------------------------------------------------------ */

static void record_format_and_escaping(void **st)
{
	(void)st;
	static const uint8_t user[] = "al\\ice";
	static const uint8_t pass[] = {'p', '\t', 'w', '\n', 0, 0xff, ' ', 'x'};
	struct sniff_cred c = {SNIFF_POP3, user, 6, pass, sizeof pass};
	char line[2048];
	int n = sniff_format(line, sizeof line, 1795802400, NULL, "mail.example", 110, &c);
	assert_true(n > 0);
	assert_string_equal(line, "2026-11-27T18:00:00Z\tanonymous\tP\tPOP3\tmail.example\t110\t"
	                          "al\\x5cice\tp\\x09w\\x0a\\x00\\xff\\x20x");
	n = sniff_format(line, sizeof line, 0, "bob", "::1", 21, &c);
	assert_true(n > 0);
	int tabs = 0;
	for (int i = 0; i < n; i++)
		tabs += line[i] == '\t';
	assert_int_equal(tabs, 7);
	assert_true(sniff_format(line, 10, 0, "bob", "::1", 21, &c) < 0);
	/* The longest fields fit a log line. */
	uint8_t big[SNIFF_FIELD_MAX];
	memset(big, 0x01, sizeof big);
	struct sniff_cred b = {SNIFF_HTTP, big, sizeof big, big, sizeof big};
	char d255[256];
	memset(d255, 'd', 255);
	d255[255] = 0;
	char l2[2048];
	n = sniff_format(l2, sizeof l2, 0, d255, d255, 65535, &b);
	assert_true(n > 0 && strlen(l2) == (size_t)n);
	assert_int_equal(strlen(strrchr(l2, '\t') + 1), SNIFF_FIELD_MAX * 4);
}

static void state_is_small(void **st)
{
	(void)st;
	assert_true(sniff_state_size() < 1024);
	sniff_free(NULL);
	assert_string_equal(sniff_proto_name(SNIFF_IMAP), "IMAP");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(http_basic_recorded_on_2xx),
	    cmocka_unit_test(http_wrong_password_not_recorded),
	    cmocka_unit_test(http_every_request_of_keepalive_connection),
	    cmocka_unit_test(http_pipelined_requests_and_coalesced_responses),
	    cmocka_unit_test(http_long_headers_and_long_target_are_skipped),
	    cmocka_unit_test(http_body_bytes_are_not_headers),
	    cmocka_unit_test(http_big_body_skipped_then_next_request_seen),
	    cmocka_unit_test(http_body_moved_unseen_then_next_request_seen),
	    cmocka_unit_test(http_stops_on_tunnels_and_upgrades),
	    cmocka_unit_test(http_hostile_input),
	    cmocka_unit_test(pop3_user_pass),
	    cmocka_unit_test(pop3_pipelined),
	    cmocka_unit_test(pop3_auth_plain),
	    cmocka_unit_test(pop3_stls_stops),
	    cmocka_unit_test(imap_login_forms),
	    cmocka_unit_test(imap_authenticate_plain),
	    cmocka_unit_test(imap_stops_and_hostile),
	    cmocka_unit_test(ftp_user_pass),
	    cmocka_unit_test(smtp_auth),
	    cmocka_unit_test(smtp_stops),
	    cmocka_unit_test(unknown_protocols_stop_at_once),
	    cmocka_unit_test(endless_lines_without_crlf_end_at_budget),
	    cmocka_unit_test(random_input_never_crashes),
	    cmocka_unit_test(record_format_and_escaping),
	    cmocka_unit_test(state_is_small),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
