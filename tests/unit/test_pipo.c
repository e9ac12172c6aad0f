/*
 * Unit tests for admin/pipo: the AUTH codec and the frame reader fed whole,
 * byte by byte, in every chunking and coalesced with the bytes that follow;
 * the payload cursor readers and writers; session records; and hostile
 * input (lengths, truncation, oversize payloads skipped with the stream in
 * sync, NUL inside strings, bad session records).  Every slice is an
 * exact-size heap copy so that ASan reports any read beyond it.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "../../admin/pipo.h"
#include "../../shared/ctrl.h"

/* ---- helpers ------------------------------------------------------------ */

enum codec { CODEC_AUTH, CODEC_READER };

/* Feeds a heap copy of exactly n bytes (so that ASan sees any read beyond
 * it) and checks what every feed promises: it consumes at most what it was
 * given and all of it when it needs more.  Only AUTH can fail. */
static int feed_copy(enum codec k, void *codec, const uint8_t *buf, size_t n, size_t *used)
{
	uint8_t *copy = malloc(n ? n : 1);
	assert_non_null(copy);
	if (n)
		memcpy(copy, buf, n);
	*used = (size_t)-1;
	int rc = k == CODEC_AUTH ? pipo_auth_feed(codec, copy, n, used)
	                         : pipo_reader_feed(codec, copy, n, used);
	free(copy);
	assert_true(*used <= n);
	assert_true(rc == PIPO_NEED_MORE || rc == PIPO_DONE || (k == CODEC_AUTH && rc == PIPO_ERROR));
	if (rc == PIPO_NEED_MORE)
		assert_int_equal(*used, n);
	return rc;
}

static int auth_feed(struct rfc1929 *a, const uint8_t *buf, size_t n, size_t *used)
{
	return feed_copy(CODEC_AUTH, a, buf, n, used);
}

static int reader_feed(struct pipo_reader *r, const uint8_t *buf, size_t n, size_t *used)
{
	return feed_copy(CODEC_READER, r, buf, n, used);
}

/* Feed in chunks of `chunk` bytes until DONE/ERROR; *total = consumed. */
static int auth_chunked(struct rfc1929 *a, const uint8_t *buf, size_t n, size_t chunk,
                        size_t *total)
{
	size_t off = 0;
	int rc = PIPO_NEED_MORE;
	pipo_auth_init(a);
	while (rc == PIPO_NEED_MORE && off < n) {
		size_t k = n - off < chunk ? n - off : chunk;
		size_t used;
		rc = auth_feed(a, buf + off, k, &used);
		off += used;
	}
	*total = off;
	return rc;
}

static size_t frame(uint8_t *out, uint8_t type, uint8_t cmd, uint8_t status, const void *p,
                    uint32_t len)
{
	pipo_header_encode(out, type, cmd, status, len);
	if (len)
		memcpy(out + PIPO_HEADER_LEN, p, len);
	return PIPO_HEADER_LEN + len;
}

struct got_frame {
	struct pipo_frame f;
	bool too_big;
	uint8_t payload[64];
};

/* Read every frame from buf in chunks; returns how many were read. */
static size_t read_frames(const uint8_t *buf, size_t n, size_t chunk, uint32_t max,
                          struct got_frame *out, size_t cap)
{
	uint8_t *pbuf = malloc(max ? max : 1);
	assert_non_null(pbuf);
	struct pipo_reader r;
	pipo_reader_init(&r, pbuf, max);
	size_t off = 0, nf = 0;
	/* Bounded: every call consumes at least one byte or ends a frame. */
	for (size_t guard = 0; off < n && guard < 4 * n + 16; guard++) {
		size_t k = n - off < chunk ? n - off : chunk;
		size_t used;
		int rc = reader_feed(&r, buf + off, k, &used);
		off += used;
		if (rc == PIPO_DONE) {
			assert_true(nf < cap);
			out[nf].f = r.f;
			out[nf].too_big = r.too_big;
			if (!r.too_big) {
				assert_true(r.f.len <= sizeof out[nf].payload);
				memcpy(out[nf].payload, pbuf, r.f.len);
			}
			nf++;
		}
	}
	assert_int_equal(off, n);
	free(pbuf);
	return nf;
}

/* ---- AUTH --------------------------------------------------------------- */

static void test_auth_encode_layout(void **state)
{
	(void)state;
	uint8_t out[64];
	size_t n = pipo_auth_encode(out, sizeof out, "admin", "pw");
	assert_int_equal(n, 3 + 5 + 2);
	static const uint8_t want[] = {0x02, 5, 'a', 'd', 'm', 'i', 'n', 2, 'p', 'w'};
	assert_memory_equal(out, want, sizeof want);
}

static void test_auth_encode_limits(void **state)
{
	(void)state;
	char u255[256], u256[257];
	memset(u255, 'u', 255);
	u255[255] = '\0';
	memset(u256, 'u', 256);
	u256[256] = '\0';
	uint8_t out[600];
	assert_int_equal(pipo_auth_encode(out, sizeof out, u255, u255), 3 + 255 + 255);
	assert_int_equal(pipo_auth_encode(out, sizeof out, u256, "p"), 0);
	assert_int_equal(pipo_auth_encode(out, sizeof out, "u", u256), 0);
	assert_int_equal(pipo_auth_encode(out, sizeof out, "", "p"), 0);
	assert_int_equal(pipo_auth_encode(out, sizeof out, "u", ""), 0);
	/* Capacity exactly enough, then one short. */
	assert_int_equal(pipo_auth_encode(out, 5, "u", "p"), 5);
	assert_int_equal(pipo_auth_encode(out, 4, "u", "p"), 0);
}

static void test_auth_every_chunking(void **state)
{
	(void)state;
	uint8_t msg[600];
	char user[256], pass[256];
	memset(user, 'A', 255);
	user[255] = '\0';
	memset(pass, 'z', 200);
	pass[200] = '\0';
	size_t n = pipo_auth_encode(msg, sizeof msg, user, pass);
	assert_true(n > 0);
	for (size_t chunk = 1; chunk <= n; chunk++) {
		struct rfc1929 a;
		size_t used;
		assert_int_equal(auth_chunked(&a, msg, n, chunk, &used), PIPO_DONE);
		assert_int_equal(used, n);
		assert_string_equal(a.user, user);
		assert_string_equal(a.pass, pass);
		assert_int_equal(a.ver, PIPO_VERSION);
	}
}

static void test_auth_coalesced_with_frame(void **state)
{
	(void)state;
	uint8_t msg[128];
	size_t n = pipo_auth_encode(msg, sizeof msg, "root", "toor");
	/* A pipelined client sends its first request right behind AUTH. */
	n += frame(msg + n, PIPO_QUERY, PIPO_Q_METRICS, 0, NULL, 0);
	struct rfc1929 a;
	size_t used;
	pipo_auth_init(&a);
	assert_int_equal(auth_feed(&a, msg, n, &used), PIPO_DONE);
	assert_int_equal(used, 3 + 4 + 4);
	assert_string_equal(a.user, "root");
	assert_string_equal(a.pass, "toor");
	/* The rest is exactly one frame. */
	struct got_frame g[2];
	assert_int_equal(read_frames(msg + used, n - used, 3, 16, g, 2), 1);
	assert_int_equal(g[0].f.cmd, PIPO_Q_METRICS);
}

static void test_auth_original_version_refused(void **state)
{
	(void)state;
	/* An original-protocol client: VER 0x01. */
	static const uint8_t v1[] = {0x01, 1, 'a', 1, 'b'};
	struct rfc1929 a;
	size_t used;
	pipo_auth_init(&a);
	assert_int_equal(auth_feed(&a, v1, sizeof v1, &used), PIPO_ERROR);
	assert_int_equal(used, 1);
	assert_int_equal(a.ver, PIPO_VERSION_ORIGINAL);
	/* Byte by byte: the error comes with the first byte. */
	pipo_auth_init(&a);
	assert_int_equal(auth_feed(&a, v1, 1, &used), PIPO_ERROR);
	static const uint8_t junk[] = {0xff, 0, 0};
	pipo_auth_init(&a);
	assert_int_equal(auth_feed(&a, junk, sizeof junk, &used), PIPO_ERROR);
	assert_int_equal(a.ver, 0xff);
}

static void test_auth_empty_fields_refused(void **state)
{
	(void)state;
	static const uint8_t nouser[] = {0x02, 0, 1, 'p'};
	static const uint8_t nopass[] = {0x02, 1, 'u', 0};
	struct rfc1929 a;
	size_t used;
	pipo_auth_init(&a);
	assert_int_equal(auth_feed(&a, nouser, sizeof nouser, &used), PIPO_ERROR);
	assert_int_equal(used, 2);
	pipo_auth_init(&a);
	assert_int_equal(auth_feed(&a, nopass, sizeof nopass, &used), PIPO_ERROR);
	assert_int_equal(used, 4);
}

static void test_auth_truncated_needs_more(void **state)
{
	(void)state;
	uint8_t msg[64];
	size_t n = pipo_auth_encode(msg, sizeof msg, "user", "password");
	for (size_t cut = 0; cut < n; cut++) {
		struct rfc1929 a;
		size_t used;
		pipo_auth_init(&a);
		assert_int_equal(auth_feed(&a, msg, cut, &used), PIPO_NEED_MORE);
		assert_int_equal(used, cut);
	}
}

static void test_auth_empty_slice(void **state)
{
	(void)state;
	struct rfc1929 a;
	size_t used;
	uint8_t b = 0x02;
	pipo_auth_init(&a);
	assert_int_equal(pipo_auth_feed(&a, &b, 0, &used), PIPO_NEED_MORE);
	assert_int_equal(used, 0);
}

/* ---- frames ------------------------------------------------------------- */

static void test_header_layout(void **state)
{
	(void)state;
	uint8_t h[PIPO_HEADER_LEN];
	pipo_header_encode(h, PIPO_MODIFY, PIPO_M_DOH, PIPO_E_INVALID, 0x01020304);
	static const uint8_t want[] = {0x02, 0x01, 0x0a, 0x03, 0x01, 0x02, 0x03, 0x04};
	assert_memory_equal(h, want, sizeof want);
}

static void test_reader_every_chunking_coalesced(void **state)
{
	(void)state;
	uint8_t buf[256];
	size_t n = 0;
	n += frame(buf + n, PIPO_QUERY, PIPO_Q_USERS, 0, NULL, 0);
	n += frame(buf + n, PIPO_MODIFY, PIPO_M_DEL_USER, 0, "\x03" "bob", 4);
	n += frame(buf + n, PIPO_QUERY, PIPO_Q_SESSIONS, 0, "\0\0\0\0\0\0\0\0\x01\0", 10);
	n += frame(buf + n, PIPO_QUERY, PIPO_Q_METRICS, PIPO_E_BUSY, NULL, 0);
	for (size_t chunk = 1; chunk <= n; chunk++) {
		struct got_frame g[8];
		assert_int_equal(read_frames(buf, n, chunk, 64, g, 8), 4);
		assert_int_equal(g[0].f.ver, PIPO_VERSION);
		assert_int_equal(g[0].f.len, 0);
		assert_int_equal(g[1].f.type, PIPO_MODIFY);
		assert_int_equal(g[1].f.cmd, PIPO_M_DEL_USER);
		assert_int_equal(g[1].f.len, 4);
		assert_memory_equal(g[1].payload, "\x03" "bob", 4);
		assert_int_equal(g[2].f.len, 10);
		assert_int_equal(g[2].payload[8], 1);
		assert_int_equal(g[3].f.status, PIPO_E_BUSY);
		for (int i = 0; i < 4; i++)
			assert_false(g[i].too_big);
	}
}

static void test_reader_payload_exactly_max(void **state)
{
	(void)state;
	uint8_t buf[PIPO_HEADER_LEN + 32];
	uint8_t p[32];
	memset(p, 0x5a, sizeof p);
	size_t n = frame(buf, PIPO_QUERY, 1, 0, p, 32);
	struct got_frame g[1];
	assert_int_equal(read_frames(buf, n, 1, 32, g, 1), 1);
	assert_false(g[0].too_big);
	assert_memory_equal(g[0].payload, p, 32);
}

static void test_reader_oversize_skipped_stream_in_sync(void **state)
{
	(void)state;
	/* The server's bound is 65536 bytes; here 16 to keep the test small:
	 * a 40-byte payload is skipped and the next frames still parse. */
	uint8_t buf[256];
	uint8_t big[40];
	memset(big, 0x02, sizeof big); /* looks like headers: must not confuse */
	size_t n = 0;
	n += frame(buf + n, PIPO_MODIFY, PIPO_M_ADD_USER, 0, big, sizeof big);
	n += frame(buf + n, PIPO_QUERY, PIPO_Q_SERVER, 0, NULL, 0);
	n += frame(buf + n, PIPO_MODIFY, PIPO_M_DOH, 0, "\x01\0\0", 3);
	for (size_t chunk = 1; chunk <= n; chunk++) {
		struct got_frame g[4];
		assert_int_equal(read_frames(buf, n, chunk, 16, g, 4), 3);
		assert_true(g[0].too_big);
		assert_int_equal(g[0].f.len, sizeof big);
		assert_int_equal(g[0].f.cmd, PIPO_M_ADD_USER);
		assert_false(g[1].too_big);
		assert_int_equal(g[1].f.cmd, PIPO_Q_SERVER);
		assert_false(g[2].too_big);
		assert_int_equal(g[2].f.len, 3);
		assert_memory_equal(g[2].payload, "\x01\0\0", 3);
	}
}

static void test_reader_huge_length_waits(void **state)
{
	(void)state;
	/* LEN 0xffffffff: the reader skips what arrives and never completes
	 * the frame early nor writes into its 8-byte buffer. */
	uint8_t pbuf[8];
	struct pipo_reader r;
	pipo_reader_init(&r, pbuf, sizeof pbuf);
	uint8_t h[PIPO_HEADER_LEN];
	pipo_header_encode(h, PIPO_MODIFY, PIPO_M_ADD_USER, 0, 0xffffffffu);
	size_t used;
	assert_int_equal(reader_feed(&r, h, sizeof h, &used), PIPO_NEED_MORE);
	assert_true(r.too_big);
	uint8_t junk[4096];
	memset(junk, 0xee, sizeof junk);
	for (int i = 0; i < 16; i++)
		assert_int_equal(reader_feed(&r, junk, sizeof junk, &used), PIPO_NEED_MORE);
	assert_int_equal(r.ppos, 16 * sizeof junk);
}

static void test_reader_truncated_header(void **state)
{
	(void)state;
	uint8_t h[PIPO_HEADER_LEN];
	pipo_header_encode(h, PIPO_QUERY, PIPO_Q_METRICS, 0, 0);
	for (size_t cut = 0; cut < PIPO_HEADER_LEN; cut++) {
		uint8_t pbuf[4];
		struct pipo_reader r;
		pipo_reader_init(&r, pbuf, sizeof pbuf);
		size_t used;
		assert_int_equal(reader_feed(&r, h, cut, &used), PIPO_NEED_MORE);
		/* The rest completes it. */
		assert_int_equal(reader_feed(&r, h + cut, sizeof h - cut, &used), PIPO_DONE);
		assert_int_equal(used, sizeof h - cut);
		assert_int_equal(r.f.cmd, PIPO_Q_METRICS);
	}
}

static void test_reader_foreign_version_delivered(void **state)
{
	(void)state;
	/* The reader reports VER as is: the server answers VERSION (0x07) and
	 * the stream continues, because LEN still frames the payload. */
	uint8_t buf[64];
	size_t n = frame(buf, PIPO_QUERY, PIPO_Q_USERS, 0, "xyz", 3);
	buf[0] = 0x01;
	n += frame(buf + n, PIPO_QUERY, PIPO_Q_USERS, 0, NULL, 0);
	struct got_frame g[2];
	assert_int_equal(read_frames(buf, n, 2, 16, g, 2), 2);
	assert_int_equal(g[0].f.ver, 0x01);
	assert_int_equal(g[0].f.len, 3);
	assert_int_equal(g[1].f.ver, PIPO_VERSION);
}

static void test_reader_empty_slice_between_frames(void **state)
{
	(void)state;
	uint8_t pbuf[4];
	struct pipo_reader r;
	pipo_reader_init(&r, pbuf, sizeof pbuf);
	uint8_t h[PIPO_HEADER_LEN];
	pipo_header_encode(h, PIPO_QUERY, 0, 0, 0);
	size_t used;
	assert_int_equal(reader_feed(&r, h, sizeof h, &used), PIPO_DONE);
	assert_int_equal(reader_feed(&r, h, 0, &used), PIPO_NEED_MORE);
	assert_int_equal(used, 0);
	assert_int_equal(reader_feed(&r, h, sizeof h, &used), PIPO_DONE);
}

/* ---- payload cursors -------------------------------------------------------- */

static void test_put_get_integers(void **state)
{
	(void)state;
	uint8_t p[15];
	struct pipo_buf b = {.p = p, .cap = sizeof p};
	pipo_put_u8(&b, 0xab);
	pipo_put_u16(&b, 0x1234);
	pipo_put_u32(&b, 0x89abcdef);
	pipo_put_u64(&b, 0x0102030405060708ull);
	assert_false(b.overflow);
	assert_int_equal(b.len, 15);
	static const uint8_t want[] = {0xab, 0x12, 0x34, 0x89, 0xab, 0xcd, 0xef, 1, 2, 3, 4, 5, 6, 7, 8};
	assert_memory_equal(p, want, sizeof want);
	struct pipo_cur c = {.p = p, .len = b.len};
	assert_int_equal(pipo_get_u8(&c), 0xab);
	assert_int_equal(pipo_get_u16(&c), 0x1234);
	assert_int_equal(pipo_get_u32(&c), 0x89abcdef);
	assert_true(pipo_get_u64(&c) == 0x0102030405060708ull);
	assert_true(pipo_cur_done(&c));
	/* One more read: bad, sticky, returns 0. */
	assert_int_equal(pipo_get_u8(&c), 0);
	assert_true(c.bad);
	assert_false(pipo_cur_done(&c));
}

static void test_put_overflow_sticky(void **state)
{
	(void)state;
	uint8_t p[5];
	struct pipo_buf b = {.p = p, .cap = sizeof p};
	pipo_put_u32(&b, 1);
	pipo_put_u16(&b, 2); /* does not fit */
	assert_true(b.overflow);
	pipo_put_u8(&b, 3); /* would fit, but overflow is sticky */
	assert_int_equal(b.len, 4);
	char s256[257];
	memset(s256, 's', 256);
	s256[256] = '\0';
	uint8_t q[400];
	struct pipo_buf b2 = {.p = q, .cap = sizeof q};
	pipo_put_str8(&b2, s256);
	assert_true(b2.overflow);
	assert_int_equal(b2.len, 0);
}

static void test_get_truncated_integers(void **state)
{
	(void)state;
	static const uint8_t p[7] = {1, 2, 3, 4, 5, 6, 7};
	for (size_t n = 0; n < 8; n++) {
		uint8_t *copy = malloc(n ? n : 1);
		memcpy(copy, p, n);
		struct pipo_cur c = {.p = copy, .len = n};
		(void)pipo_get_u64(&c);
		assert_true(c.bad);
		assert_true(c.pos <= n);
		free(copy);
	}
}

static void test_str8_roundtrip_and_hostile(void **state)
{
	(void)state;
	uint8_t p[300];
	struct pipo_buf b = {.p = p, .cap = sizeof p};
	pipo_put_str8(&b, "alice");
	pipo_put_str8(&b, "");
	assert_int_equal(b.len, 7);
	struct pipo_cur c = {.p = p, .len = b.len};
	char out[PIPO_MAX_NAME + 1];
	pipo_get_str8(&c, out, sizeof out);
	assert_string_equal(out, "alice");
	pipo_get_str8(&c, out, sizeof out);
	assert_string_equal(out, "");
	assert_true(pipo_cur_done(&c));

	/* A NUL inside: bad (a name "a\0b" would be truncated silently). */
	static const uint8_t nul[] = {3, 'a', 0, 'b'};
	struct pipo_cur c2 = {.p = nul, .len = sizeof nul};
	pipo_get_str8(&c2, out, sizeof out);
	assert_true(c2.bad);

	/* Length beyond the payload. */
	static const uint8_t shortp[] = {10, 'a', 'b'};
	struct pipo_cur c3 = {.p = shortp, .len = sizeof shortp};
	pipo_get_str8(&c3, out, sizeof out);
	assert_true(c3.bad);
	assert_string_equal(out, "");

	/* 255 bytes fit a 256-byte buffer exactly. */
	uint8_t max[256];
	max[0] = 255;
	memset(max + 1, 'm', 255);
	struct pipo_cur c4 = {.p = max, .len = sizeof max};
	pipo_get_str8(&c4, out, sizeof out);
	assert_true(pipo_cur_done(&c4));
	assert_int_equal(strlen(out), 255);

	/* A caller buffer too small is refused, not overrun. */
	char small[4];
	static const uint8_t four[] = {4, 'a', 'b', 'c', 'd'};
	struct pipo_cur c5 = {.p = four, .len = sizeof four};
	pipo_get_str8(&c5, small, sizeof small);
	assert_true(c5.bad);
}

static void test_str16_url_limits(void **state)
{
	(void)state;
	uint8_t p[2 + PIPO_MAX_URL + 1];
	char url[PIPO_MAX_URL + 1];
	p[0] = PIPO_MAX_URL >> 8;
	p[1] = PIPO_MAX_URL & 0xff;
	memset(p + 2, 'u', PIPO_MAX_URL);
	struct pipo_cur c = {.p = p, .len = 2 + PIPO_MAX_URL};
	pipo_get_str16(&c, url, sizeof url);
	assert_true(pipo_cur_done(&c));
	assert_int_equal(strlen(url), PIPO_MAX_URL);
	/* One more byte than the buffer holds: bad. */
	p[0] = (PIPO_MAX_URL + 1) >> 8;
	p[1] = (PIPO_MAX_URL + 1) & 0xff;
	p[2 + PIPO_MAX_URL] = 'u';
	struct pipo_cur c2 = {.p = p, .len = sizeof p};
	pipo_get_str16(&c2, url, sizeof url);
	assert_true(c2.bad);
	/* Length 0xffff with 3 bytes of payload. */
	static const uint8_t huge[] = {0xff, 0xff, 'a'};
	struct pipo_cur c3 = {.p = huge, .len = sizeof huge};
	pipo_get_str16(&c3, url, sizeof url);
	assert_true(c3.bad);
}

/* ---- sessions ------------------------------------------------------------ */

static struct pipo_session sample_session(uint8_t family)
{
	struct pipo_session s;
	memset(&s, 0, sizeof s);
	s.id = 0x1122334455667788ull;
	s.state = PIPO_SS_RELAY;
	s.family = family;
	for (int i = 0; i < 16; i++)
		s.addr[i] = (uint8_t)(family == 6 || i < 4 ? i + 1 : 0);
	s.sport = 40000;
	s.dport = 443;
	strcpy(s.user, "alice");
	strcpy(s.dest, "example.test");
	s.up = 12345;
	s.down = 1ull << 40;
	s.age_ms = 61000;
	return s;
}

static void test_session_roundtrip(void **state)
{
	(void)state;
	for (uint8_t fam = 4; fam <= 6; fam += 2) {
		struct pipo_session s = sample_session(fam), t;
		uint8_t p[600];
		struct pipo_buf b = {.p = p, .cap = sizeof p};
		pipo_put_session(&b, &s);
		assert_false(b.overflow);
		size_t want = 8 + 1 + 1 + (fam == 6 ? 16 : 4) + 2 + 1 + 5 + 1 + 12 + 2 + 8 + 8 + 8;
		assert_int_equal(b.len, want);
		struct pipo_cur c = {.p = p, .len = b.len};
		pipo_get_session(&c, &t);
		assert_true(pipo_cur_done(&c));
		assert_true(t.id == s.id);
		assert_int_equal(t.state, s.state);
		assert_int_equal(t.family, fam);
		assert_memory_equal(t.addr, s.addr, fam == 6 ? 16 : 4);
		assert_int_equal(t.sport, s.sport);
		assert_int_equal(t.dport, s.dport);
		assert_string_equal(t.user, "alice");
		assert_string_equal(t.dest, "example.test");
		assert_true(t.up == s.up && t.down == s.down && t.age_ms == s.age_ms);

		/* Every truncation is bad, never a read past the end. */
		for (size_t cut = 0; cut < b.len; cut++) {
			uint8_t *copy = malloc(cut ? cut : 1);
			memcpy(copy, p, cut);
			struct pipo_cur ct = {.p = copy, .len = cut};
			pipo_get_session(&ct, &t);
			assert_true(ct.bad);
			free(copy);
		}
	}
}

/* The worker's neutral record becomes a pipo record field by field; a
 * record without a terminating NUL or with an unknown state stays bounded. */
static void test_session_from_ctrl_record(void **state)
{
	(void)state;
	static const uint8_t wire_state[] = {PIPO_SS_HANDSHAKE, PIPO_SS_RESOLVING, PIPO_SS_CONNECTING,
	                                     PIPO_SS_RELAY, PIPO_SS_CLOSING};
	for (uint8_t st = CTRL_SS_HANDSHAKE; st <= CTRL_SS_CLOSING; st++) {
		struct ctrl_session r;
		struct pipo_session o;
		memset(&r, 0, sizeof r);
		r.id = 0x0123456789abcdefull;
		r.state = st;
		r.family = 6;
		memset(r.addr, 0xab, sizeof r.addr);
		r.sport = 40000;
		r.dport = 443;
		strcpy(r.user, "alice");
		strcpy(r.dest, "example.test");
		r.up = 1;
		r.down = 2;
		r.age_ms = 3;
		pipo_session_from_ctrl(&o, &r);
		assert_true(o.id == r.id);
		assert_int_equal(o.state, wire_state[st]);
		assert_int_equal(o.family, 6);
		assert_memory_equal(o.addr, r.addr, 16);
		assert_int_equal(o.sport, 40000);
		assert_int_equal(o.dport, 443);
		assert_string_equal(o.user, "alice");
		assert_string_equal(o.dest, "example.test");
		assert_true(o.up == 1 && o.down == 2 && o.age_ms == 3);
	}
	struct ctrl_session r;
	struct pipo_session o;
	memset(&r, 'x', sizeof r);
	r.state = 200;
	r.family = 9;
	pipo_session_from_ctrl(&o, &r);
	assert_int_equal(o.state, PIPO_SS_HANDSHAKE);
	assert_int_equal(o.family, 4);
	assert_int_equal(strlen(o.user), PIPO_MAX_NAME);
	assert_int_equal(strlen(o.dest), PIPO_MAX_NAME);
}

/* The extended record is the original one followed by cmd, the datagram
 * counts, the method and the protection; the original decoder reads its
 * prefix unchanged. */
static void test_session_ex_record(void **state)
{
	(void)state;
	struct pipo_session s = sample_session(6), t, u;
	s.cmd = PIPO_CMD_UDP;
	s.dgrams_up = 10000;
	s.dgrams_down = 0x0102030405060708ull;
	s.method = 0x01;
	s.protection = 0x02;
	uint8_t p[700], q[700];
	struct pipo_buf b = {.p = p, .cap = sizeof p}, ob = {.p = q, .cap = sizeof q};
	pipo_put_session_ex(&b, &s);
	pipo_put_session(&ob, &s);
	assert_int_equal(b.len, ob.len + 19);
	assert_memory_equal(p, q, ob.len);
	assert_memory_equal(p + ob.len,
	                    "\x03\0\0\0\0\0\0\x27\x10\x01\x02\x03\x04\x05\x06\x07\x08\x01\x02", 19);
	struct pipo_cur c = {.p = p, .len = b.len};
	pipo_get_session_ex(&c, &t);
	assert_true(pipo_cur_done(&c));
	assert_int_equal(t.cmd, PIPO_CMD_UDP);
	assert_int_equal(t.dgrams_up, 10000);
	assert_int_equal(t.dgrams_down, s.dgrams_down);
	assert_int_equal(t.method, 0x01);
	assert_int_equal(t.protection, 0x02);
	struct pipo_cur c2 = {.p = p, .len = ob.len};
	pipo_get_session(&c2, &u);
	assert_true(pipo_cur_done(&c2));
	assert_int_equal(u.id, s.id);
	/* Cut short in the new fields: bad. */
	struct pipo_cur c3 = {.p = p, .len = b.len - 1};
	pipo_get_session_ex(&c3, &t);
	assert_true(c3.bad);
}

static void test_session_bad_records(void **state)
{
	(void)state;
	struct pipo_session s = sample_session(4), t;
	uint8_t p[600];
	struct pipo_buf b = {.p = p, .cap = sizeof p};
	pipo_put_session(&b, &s);
	/* family 5 */
	p[9] = 5;
	struct pipo_cur c = {.p = p, .len = b.len};
	pipo_get_session(&c, &t);
	assert_true(c.bad);
	/* NUL inside the user name */
	p[9] = 4;
	size_t user_at = 8 + 1 + 1 + 4 + 2;
	assert_int_equal(p[user_at], 5);
	p[user_at + 3] = 0;
	struct pipo_cur c2 = {.p = p, .len = b.len};
	pipo_get_session(&c2, &t);
	assert_true(c2.bad);
	/* A trailing byte: parses, but the payload is not done. */
	p[user_at + 3] = 'c';
	p[b.len] = 0;
	struct pipo_cur c3 = {.p = p, .len = b.len + 1};
	pipo_get_session(&c3, &t);
	assert_false(c3.bad);
	assert_false(pipo_cur_done(&c3));
	/* family 4 record read as if 6 were announced: out of bytes. */
	p[9] = 6;
	struct pipo_cur c4 = {.p = p, .len = b.len};
	pipo_get_session(&c4, &t);
	assert_true(c4.bad);
}

/* ---- names ------------------------------------------------------------------ */

static void test_rule_records_roundtrip_and_hostile(void **state)
{
	(void)state;
	static uint8_t buf[2 * PIPO_RULE_TEXT_MAX];
	static char text[PIPO_RULE_TEXT_MAX + 2], got[PIPO_RULE_TEXT_MAX + 1];
	struct pipo_buf b = {.p = buf, .cap = sizeof buf};
	struct pipo_rule r = {.number = 7, .line = 42, .stage = PIPO_RULE_CLIENT,
	                      .action = PIPO_RULE_BLOCK, .hits = 0x0102030405060708ull,
	                      .text = "client block from 192.0.2.0/24"};
	pipo_put_rule(&b, &r);
	assert_false(b.overflow);
	assert_int_equal(b.len, 18 + 2 + strlen(r.text));
	static const uint8_t head[] = {0, 0, 0, 7, 0, 0, 0, 42, 1, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 30};
	assert_memory_equal(buf, head, sizeof head);
	struct pipo_cur c = {.p = buf, .len = b.len};
	struct pipo_rule back;
	pipo_get_rule(&c, &back, got, sizeof got);
	assert_true(pipo_cur_done(&c));
	assert_int_equal(back.number, 7);
	assert_int_equal(back.line, 42);
	assert_int_equal(back.hits, r.hits);
	assert_string_equal(back.text, r.text);
	/* every truncation is bad, never a read past the end */
	for (size_t n = 0; n < b.len; n++) {
		c = (struct pipo_cur){.p = buf, .len = n};
		pipo_get_rule(&c, &back, got, sizeof got);
		assert_true(c.bad);
	}
	/* a stage or action out of range, a NUL in the text */
	buf[8] = 2;
	c = (struct pipo_cur){.p = buf, .len = b.len};
	pipo_get_rule(&c, &back, got, sizeof got);
	assert_true(c.bad);
	buf[8] = 1;
	buf[9] = 2;
	c = (struct pipo_cur){.p = buf, .len = b.len};
	pipo_get_rule(&c, &back, got, sizeof got);
	assert_true(c.bad);
	buf[9] = 1;
	buf[22] = 0;
	c = (struct pipo_cur){.p = buf, .len = b.len};
	pipo_get_rule(&c, &back, got, sizeof got);
	assert_true(c.bad);
	/* the longest text goes; one byte more does not, either way */
	memset(text, 'x', PIPO_RULE_TEXT_MAX);
	text[PIPO_RULE_TEXT_MAX] = '\0';
	r.text = text;
	b = (struct pipo_buf){.p = buf, .cap = sizeof buf};
	pipo_put_rule(&b, &r);
	assert_false(b.overflow);
	c = (struct pipo_cur){.p = buf, .len = b.len};
	pipo_get_rule(&c, &back, got, sizeof got);
	assert_true(pipo_cur_done(&c));
	assert_int_equal(strlen(back.text), PIPO_RULE_TEXT_MAX);
	text[PIPO_RULE_TEXT_MAX] = 'x';
	text[PIPO_RULE_TEXT_MAX + 1] = '\0';
	b = (struct pipo_buf){.p = buf, .cap = sizeof buf};
	pipo_put_rule(&b, &r);
	assert_true(b.overflow);
	buf[18] = (PIPO_RULE_TEXT_MAX + 1) >> 8; /* a peer that says 4097 */
	buf[19] = (PIPO_RULE_TEXT_MAX + 1) & 0xff;
	c = (struct pipo_cur){.p = buf, .len = 20 + PIPO_RULE_TEXT_MAX + 1};
	pipo_get_rule(&c, &back, got, sizeof got);
	assert_true(c.bad);
}

static void test_rule_test_and_verdict_roundtrip(void **state)
{
	(void)state;
	uint8_t buf[1024];
	struct pipo_buf b = {.p = buf, .cap = sizeof buf};
	struct pipo_rule_test t = {.user = "alice", .source = "127.0.0.1", .dest = "a.example",
	                           .port = 443, .cmd = PIPO_RULE_UDP};
	pipo_put_rule_test(&b, &t);
	static const uint8_t want[] = {5, 'a', 'l', 'i', 'c', 'e', 9, '1', '2', '7', '.', '0', '.',
	                               '0', '.', '1', 9, 'a', '.', 'e', 'x', 'a', 'm', 'p', 'l', 'e',
	                               0x01, 0xbb, 3};
	assert_int_equal(b.len, sizeof want);
	assert_memory_equal(buf, want, sizeof want);
	struct pipo_rule_test back;
	struct pipo_cur c = {.p = buf, .len = b.len};
	pipo_get_rule_test(&c, &back);
	assert_true(pipo_cur_done(&c));
	assert_string_equal(back.user, "alice");
	assert_string_equal(back.dest, "a.example");
	assert_int_equal(back.port, 443);
	assert_int_equal(back.cmd, 3);
	for (size_t n = 0; n < b.len; n++) {
		c = (struct pipo_cur){.p = buf, .len = n};
		pipo_get_rule_test(&c, &back);
		assert_true(c.bad);
	}

	char text[PIPO_RULE_TEXT_MAX + 1];
	struct pipo_rule_verdict v = {.decision = PIPO_RULE_BLOCK, .stage = PIPO_RULE_REQUEST,
	                              .on_name = 1, .number = 3, .line = 9, .text = "block to x.test"};
	b = (struct pipo_buf){.p = buf, .cap = sizeof buf};
	pipo_put_rule_verdict(&b, &v);
	assert_int_equal(b.len, 11 + 2 + 15);
	struct pipo_rule_verdict vb;
	c = (struct pipo_cur){.p = buf, .len = b.len};
	pipo_get_rule_verdict(&c, &vb, text, sizeof text);
	assert_true(pipo_cur_done(&c));
	assert_int_equal(vb.decision, PIPO_RULE_BLOCK);
	assert_int_equal(vb.number, 3);
	assert_int_equal(vb.line, 9);
	assert_int_equal(vb.on_name, 1);
	assert_string_equal(vb.text, "block to x.test");
	buf[0] = 3; /* no such decision */
	c = (struct pipo_cur){.p = buf, .len = b.len};
	pipo_get_rule_verdict(&c, &vb, text, sizeof text);
	assert_true(c.bad);
	buf[0] = 1;
	buf[10] = 2; /* on_name is a bool */
	c = (struct pipo_cur){.p = buf, .len = b.len};
	pipo_get_rule_verdict(&c, &vb, text, sizeof text);
	assert_true(c.bad);
}

static void test_status_and_metric_names(void **state)
{
	(void)state;
	assert_string_equal(pipo_status_name(PIPO_OK), "ok");
	assert_string_equal(pipo_status_name(PIPO_E_TOO_BIG), "request too big");
	assert_string_equal(pipo_status_name(0x42), "unknown status");
	assert_string_equal(pipo_metric_name(PIPO_MET_CONN_TOTAL), "connections_total");
	assert_string_equal(pipo_metric_name(PIPO_MET_DNS_CACHE_HITS), "dns_cache_hits");
	assert_string_equal(pipo_metric_name(PIPO_MET_REPLY_0), "replies_succeeded");
	assert_string_equal(pipo_metric_name(PIPO_MET_REPLY_0 + 8), "replies_atyp_unsupported");
	assert_null(pipo_metric_name(0));
	assert_string_equal(pipo_metric_name(PIPO_MET_DNS_LATENCY_P99), "dns_latency_p99_us");
	assert_string_equal(pipo_metric_name(PIPO_MET_BYTES_SPLICED), "bytes_spliced");
	assert_string_equal(pipo_metric_name(PIPO_MET_UNAUTH_REFUSED), "unauth_refused");
	assert_string_equal(pipo_metric_name(PIPO_MET_UDP_DGRAMS_UP), "udp_datagrams_up");
	assert_string_equal(pipo_metric_name(PIPO_MET_UDP_DROP_DENIED), "udp_dropped_denied");
	for (unsigned id = PIPO_MET_UDP_DGRAMS_UP; id <= PIPO_MET_UDP_DROP_DENIED; id++)
		assert_non_null(pipo_metric_name((uint16_t)id));
	assert_null(pipo_metric_name(99));
	assert_null(pipo_metric_name(PIPO_MET_REPLY_0 + 9));
	assert_null(pipo_metric_name(0xffff));
	for (unsigned id = 1; id <= PIPO_MET_BYTES_SPLICED; id++)
		assert_non_null(pipo_metric_name((uint16_t)id));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_auth_encode_layout),
	    cmocka_unit_test(test_auth_encode_limits),
	    cmocka_unit_test(test_auth_every_chunking),
	    cmocka_unit_test(test_auth_coalesced_with_frame),
	    cmocka_unit_test(test_auth_original_version_refused),
	    cmocka_unit_test(test_auth_empty_fields_refused),
	    cmocka_unit_test(test_auth_truncated_needs_more),
	    cmocka_unit_test(test_auth_empty_slice),
	    cmocka_unit_test(test_header_layout),
	    cmocka_unit_test(test_reader_every_chunking_coalesced),
	    cmocka_unit_test(test_reader_payload_exactly_max),
	    cmocka_unit_test(test_reader_oversize_skipped_stream_in_sync),
	    cmocka_unit_test(test_reader_huge_length_waits),
	    cmocka_unit_test(test_reader_truncated_header),
	    cmocka_unit_test(test_reader_foreign_version_delivered),
	    cmocka_unit_test(test_reader_empty_slice_between_frames),
	    cmocka_unit_test(test_put_get_integers),
	    cmocka_unit_test(test_put_overflow_sticky),
	    cmocka_unit_test(test_get_truncated_integers),
	    cmocka_unit_test(test_str8_roundtrip_and_hostile),
	    cmocka_unit_test(test_str16_url_limits),
	    cmocka_unit_test(test_session_roundtrip),
	    cmocka_unit_test(test_session_from_ctrl_record),
	    cmocka_unit_test(test_session_ex_record),
	    cmocka_unit_test(test_session_bad_records),
	    cmocka_unit_test(test_rule_records_roundtrip_and_hostile),
	    cmocka_unit_test(test_rule_test_and_verdict_roundtrip),
	    cmocka_unit_test(test_status_and_metric_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
