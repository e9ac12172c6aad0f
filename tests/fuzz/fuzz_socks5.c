/*
 * libFuzzer target for worker/socks5: the greeting, RFC 1929 and request
 * parsers, fed in chunks whose sizes come from the input.
 *
 * Input layout:
 *   byte 0          k = (byte & 7) + 1: the number of chunk-size bytes
 *   bytes 1..k      chunk sizes, used in turn (0 feeds an empty slice)
 *   the rest        the client's byte stream
 *
 * The stream is parsed three ways: as a pipelined handshake (greeting, then
 * RFC 1929, then the request, each starting where the previous stopped),
 * and by each parser alone from the start.  Every chunked parse is checked
 * against a parse of the same bytes in one slice: the result must not
 * depend on how the bytes were split.  Each slice is copied to the end of a
 * heap buffer so that ASan catches any read beyond it.
 */
#include "fuzz_common.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include "../../worker/socks5.h"

enum fz_codec { FZ_GREETING, FZ_AUTH, FZ_REQUEST };

union fz_parser {
	struct socks5_greeting g;
	struct rfc1929 a;
	struct socks5_request r;
};

struct fz_chunks {
	const uint8_t *sizes;
	size_t nsizes;
	size_t next;
};

static size_t fz_next_chunk(struct fz_chunks *c)
{
	size_t k = c->sizes[c->next++ % c->nsizes];
	return k;
}

static void fz_init(enum fz_codec c, union fz_parser *p)
{
	memset(p, 0xa5, sizeof *p); /* init must not rely on zeroed memory */
	if (c == FZ_GREETING)
		socks5_greeting_init(&p->g);
	else if (c == FZ_AUTH)
		socks5_auth_init(&p->a);
	else
		socks5_request_init(&p->r);
}

/* The slice is copied to the very end of scratch (cap bytes, allocated for
 * the whole parse), so that a read past its end hits ASan's redzone. */
static int fz_feed(enum fz_codec c, union fz_parser *p, uint8_t *scratch, size_t cap,
                   const uint8_t *buf, size_t n, size_t *used)
{
	CHECK(n <= cap);
	uint8_t *slice = scratch + cap - n;
	if (n)
		memcpy(slice, buf, n);
	*used = (size_t)-1;
	int rc;
	if (c == FZ_GREETING)
		rc = socks5_greeting_feed(&p->g, slice, n, used);
	else if (c == FZ_AUTH)
		rc = socks5_auth_feed(&p->a, slice, n, used);
	else
		rc = socks5_request_feed(&p->r, slice, n, used);
	CHECK(*used <= n);
	CHECK(rc == SOCKS5_MORE || rc == SOCKS5_DONE || rc == SOCKS5_ERROR);
	if (rc == SOCKS5_MORE)
		CHECK(*used == n); /* MORE: it took everything it was given */
	return rc;
}

/* Parse from buf until DONE/ERROR or the end; chunks NULL: one slice. */
static int fz_parse(enum fz_codec c, union fz_parser *p, const uint8_t *buf, size_t n,
                    struct fz_chunks *chunks, size_t *consumed)
{
	size_t off = 0;
	int rc = SOCKS5_MORE;
	int empty_run = 0;
	uint8_t *scratch = malloc(n ? n : 1);
	CHECK(scratch);
	fz_init(c, p);
	while (rc == SOCKS5_MORE && off < n) {
		size_t k = chunks ? fz_next_chunk(chunks) : n - off;
		if (k == 0 && ++empty_run > 8)
			k = 1; /* all-zero sizes still make progress */
		if (k)
			empty_run = 0;
		if (k > n - off)
			k = n - off;
		size_t used;
		rc = fz_feed(c, p, scratch, n ? n : 1, buf + off, k, &used);
		if (k == 0)
			CHECK(rc == SOCKS5_MORE && used == 0);
		off += used;
	}
	free(scratch);
	CHECK(off <= n);
	*consumed = off;
	return rc;
}

static void fz_check_result(enum fz_codec c, const union fz_parser *p, int rc, size_t consumed)
{
	if (rc == SOCKS5_DONE) {
		switch (c) {
		case FZ_GREETING:
			CHECK(p->g.nmethods >= 1);
			CHECK(p->g.seen == p->g.nmethods);
			CHECK(p->g.error == SOCKS5_GREETING_OK);
			CHECK(consumed == 2u + p->g.nmethods);
			break;
		case FZ_AUTH:
			CHECK(p->a.error == SOCKS5_AUTH_OK);
			CHECK(p->a.ulen >= 1);
			CHECK(p->a.user[p->a.ulen] == '\0');
			CHECK(p->a.pass[p->a.plen] == '\0');
			CHECK(strlen(p->a.user) <= p->a.ulen);
			CHECK(strlen(p->a.pass) <= p->a.plen);
			CHECK(consumed == 3u + p->a.ulen + p->a.plen);
			break;
		case FZ_REQUEST:
			if (p->r.atyp == SOCKS5_ATYP_IPV4) {
				CHECK(consumed == 10);
			} else if (p->r.atyp == SOCKS5_ATYP_IPV6) {
				CHECK(consumed == 22);
			} else {
				CHECK(p->r.atyp == SOCKS5_ATYP_DOMAIN);
				CHECK(p->r.alen >= 1);
				CHECK(p->r.host[p->r.alen] == '\0');
				CHECK(strlen(p->r.host) <= p->r.alen);
				CHECK(consumed == 7u + p->r.alen);
			}
			break;
		}
	} else if (rc == SOCKS5_ERROR) {
		CHECK(consumed >= 1);
		switch (c) {
		case FZ_GREETING:
			CHECK(p->g.error == SOCKS5_GREETING_BAD_VERSION ||
			      p->g.error == SOCKS5_GREETING_NO_METHODS);
			CHECK(consumed <= 2);
			break;
		case FZ_AUTH:
			CHECK(p->a.error == SOCKS5_AUTH_BAD_VERSION ||
			      p->a.error == SOCKS5_AUTH_EMPTY_USER);
			CHECK(consumed <= 2);
			break;
		case FZ_REQUEST:
			CHECK(p->r.rep == SOCKS5_REP_GENERAL_FAILURE ||
			      p->r.rep == SOCKS5_REP_ATYP_NOT_SUPPORTED);
			CHECK(consumed <= 5);
			break;
		}
	}
}

static void fz_same_result(enum fz_codec c, const union fz_parser *x, const union fz_parser *y)
{
	switch (c) {
	case FZ_GREETING:
		CHECK(x->g.nmethods == y->g.nmethods || x->g.error);
		CHECK(x->g.error == y->g.error);
		CHECK(x->g.offers_no_auth == y->g.offers_no_auth);
		CHECK(x->g.offers_userpass == y->g.offers_userpass);
		break;
	case FZ_AUTH:
		CHECK(x->a.error == y->a.error);
		if (!x->a.error) {
			CHECK(x->a.ulen == y->a.ulen);
			CHECK(strcmp(x->a.user, y->a.user) == 0);
		}
		break;
	case FZ_REQUEST:
		CHECK(x->r.rep == y->r.rep);
		CHECK(x->r.cmd == y->r.cmd);
		CHECK(x->r.atyp == y->r.atyp);
		break;
	}
}

/* One parser, chunked and whole: same outcome, both sane. */
static size_t fz_one(enum fz_codec c, const uint8_t *buf, size_t n, struct fz_chunks *chunks,
                     int *rc_out, union fz_parser *out)
{
	union fz_parser chunked, whole;
	size_t used_chunked, used_whole;
	int rc = fz_parse(c, &chunked, buf, n, chunks, &used_chunked);
	int rc_whole = fz_parse(c, &whole, buf, n, NULL, &used_whole);
	fz_check_result(c, &chunked, rc, used_chunked);
	fz_check_result(c, &whole, rc_whole, used_whole);
	CHECK(rc == rc_whole);
	CHECK(used_chunked == used_whole);
	if (rc == SOCKS5_DONE) {
		fz_same_result(c, &chunked, &whole);
		if (c == FZ_AUTH)
			CHECK(memcmp(chunked.a.pass, whole.a.pass, chunked.a.plen + 1u) == 0);
		if (c == FZ_REQUEST) {
			CHECK(chunked.r.port == whole.r.port);
			if (chunked.r.atyp == SOCKS5_ATYP_DOMAIN)
				CHECK(strcmp(chunked.r.host, whole.r.host) == 0);
			else
				CHECK(memcmp(chunked.r.addr, whole.r.addr,
				             chunked.r.atyp == SOCKS5_ATYP_IPV4 ? 4 : 16) == 0);
		}
	} else if (rc == SOCKS5_ERROR) {
		fz_same_result(c, &chunked, &whole);
	}
	*rc_out = rc;
	if (out)
		*out = chunked;
	return used_chunked;
}

static void fz_reply(const uint8_t *buf, size_t n)
{
	uint8_t out[SOCKS5_REPLY_MAX];
	struct sockaddr_in6 s6;
	struct sockaddr_in s4;
	memset(&s6, 0, sizeof s6);
	memset(&s4, 0, sizeof s4);
	uint8_t rep = n ? buf[0] : 0;
	if (n >= 1 + 16 + 2) {
		s6.sin6_family = AF_INET6;
		memcpy(&s6.sin6_addr, buf + 1, 16);
		memcpy(&s6.sin6_port, buf + 17, 2);
		size_t len = socks5_reply_encode(out, rep, (struct sockaddr *)&s6);
		CHECK(len == 10 || len == 22);
		CHECK(out[0] == SOCKS5_VERSION && out[1] == rep && out[2] == 0);
		CHECK(out[3] == (len == 10 ? SOCKS5_ATYP_IPV4 : SOCKS5_ATYP_IPV6));
		CHECK(memcmp(out + len - 2, &s6.sin6_port, 2) == 0);
	}
	if (n >= 1 + 4 + 2) {
		s4.sin_family = AF_INET;
		memcpy(&s4.sin_addr, buf + 1, 4);
		memcpy(&s4.sin_port, buf + 5, 2);
		CHECK(socks5_reply_encode(out, rep, (struct sockaddr *)&s4) == 10);
		CHECK(memcmp(out + 4, &s4.sin_addr, 4) == 0);
		CHECK(memcmp(out + 8, &s4.sin_port, 2) == 0);
	}
	CHECK(socks5_reply_encode(out, rep, NULL) == 10);
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

	/* The pipelined handshake: RFC 1929 only when the client offers it. */
	union fz_parser greeting;
	size_t off = 0;
	int rc;
	off += fz_one(FZ_GREETING, buf + off, n - off, &chunks, &rc, &greeting);
	CHECK(off <= n);
	if (rc == SOCKS5_DONE && greeting.g.offers_userpass) {
		off += fz_one(FZ_AUTH, buf + off, n - off, &chunks, &rc, NULL);
		CHECK(off <= n);
	}
	if (rc == SOCKS5_DONE) {
		off += fz_one(FZ_REQUEST, buf + off, n - off, &chunks, &rc, NULL);
		CHECK(off <= n);
	}

	/* Each parser alone on the whole stream. */
	(void)fz_one(FZ_AUTH, buf, n, &chunks, &rc, NULL);
	(void)fz_one(FZ_REQUEST, buf, n, &chunks, &rc, NULL);

	fz_reply(buf, n);
	(void)socks5_rep_worst(n ? buf[0] : 0, n > 1 ? buf[1] : 0);
	(void)socks5_rep_from_errno(n ? buf[0] : 0);
	return 0;
}
