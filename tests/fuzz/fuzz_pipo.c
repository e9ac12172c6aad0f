/*
 * libFuzzer target for admin/pipo: the AUTH parser, the frame reader and
 * the payload parsers of every request and response, as a server and a
 * client meet them.
 *
 * Input layout:
 *   byte 0          bits 0-2: k = bits + 1 chunk-size bytes follow;
 *                   bits 3-4: reader bound (16, 64, 1024, PIPO_MAX_REQUEST)
 *   bytes 1..k      chunk sizes, used in turn (0 feeds an empty slice)
 *   the rest        the byte stream: AUTH, then frames
 *
 * The stream is parsed chunked and in one slice: the outcome (AUTH result,
 * the sequence of frames with their headers and payload digests) must not
 * depend on the split.  Each slice is copied to the end of a heap buffer so
 * that ASan catches any read beyond it.  Every delivered payload goes
 * through the request parser of its TYPE/CMD and the response parser of
 * the same command; a session record that parses is re-encoded and must
 * give the same bytes back.
 */
#include "fuzz_common.h"

#include "../../admin/pipo.h"

struct fz_chunks {
	const uint8_t *sizes;
	size_t nsizes, next;
};

static size_t fz_next(struct fz_chunks *c, size_t left)
{
	if (!c)
		return left;
	size_t k = c->sizes[c->next++ % c->nsizes];
	return k < left ? k : left;
}

/* FNV-1a: a digest of everything delivered, to compare two parses. */
static uint64_t fz_mix(uint64_t h, const void *p, size_t n)
{
	const uint8_t *b = p;
	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 0x100000001b3ull;
	return h;
}

static void fz_check_str(const char *s)
{
	CHECK(strlen(s) <= PIPO_MAX_NAME);
}

static void fz_session_roundtrip(const uint8_t *p, size_t n)
{
	struct pipo_cur c = {.p = p, .len = n};
	struct pipo_session s;
	pipo_get_session(&c, &s);
	CHECK(c.pos <= c.len);
	fz_check_str(s.user);
	fz_check_str(s.dest);
	if (c.bad)
		return;
	CHECK(s.family == 4 || s.family == 6);
	uint8_t out[600];
	struct pipo_buf b = {.p = out, .cap = sizeof out};
	pipo_put_session(&b, &s);
	CHECK(!b.overflow);
	CHECK(b.len == c.pos);
	CHECK(memcmp(out, p, b.len) == 0);
}

/* Request payloads, as the server parses them. */
static void fz_request(uint8_t type, uint8_t cmd, const uint8_t *p, size_t n)
{
	struct pipo_cur c = {.p = p, .len = n};
	char a[PIPO_MAX_NAME + 1], b[PIPO_MAX_NAME + 1], url[PIPO_MAX_URL + 1];
	if (type == PIPO_QUERY) {
		switch (cmd) {
		case PIPO_Q_USER_CONNS:
			pipo_get_str8(&c, a, sizeof a);
			fz_check_str(a);
			break;
		case PIPO_Q_SESSIONS:
			(void)pipo_get_u64(&c);
			(void)pipo_get_u16(&c);
			break;
		case PIPO_Q_RULE_TEST: {
			struct pipo_rule_test t;
			pipo_get_rule_test(&c, &t);
			fz_check_str(t.user);
			fz_check_str(t.source);
			fz_check_str(t.dest);
			break;
		}
		default:
			break;
		}
	} else {
		switch (cmd) {
		case PIPO_M_ADD_USER:
		case PIPO_M_PASSWORD:
			pipo_get_str8(&c, a, sizeof a);
			pipo_get_str8(&c, b, sizeof b);
			if (cmd == PIPO_M_ADD_USER)
				(void)pipo_get_u8(&c);
			fz_check_str(a);
			fz_check_str(b);
			break;
		case PIPO_M_DEL_USER:
			pipo_get_str8(&c, a, sizeof a);
			break;
		case PIPO_M_CLOSE_SESSION:
			(void)pipo_get_u64(&c);
			break;
		case PIPO_M_DOH:
			(void)pipo_get_u8(&c);
			pipo_get_str16(&c, url, sizeof url);
			CHECK(strlen(url) <= PIPO_MAX_URL);
			break;
		default:
			(void)pipo_get_u32(&c);
			break;
		}
	}
	CHECK(c.pos <= c.len);
	if (!c.bad)
		CHECK(pipo_cur_done(&c) == (c.pos == n));
}

/* Response payloads, as pipoClient parses them. */
static void fz_response(uint8_t type, uint8_t cmd, const uint8_t *p, size_t n)
{
	struct pipo_cur c = {.p = p, .len = n};
	char s[PIPO_MAX_NAME + 1], url[PIPO_MAX_URL + 1];
	if (type != PIPO_QUERY) {
		(void)pipo_get_u8(&c);
		CHECK(c.pos <= c.len);
		return;
	}
	switch (cmd) {
	case PIPO_Q_USERS:
	case PIPO_Q_USER_STATS: {
		uint32_t count = pipo_get_u32(&c);
		for (uint32_t i = 0; i < count && !c.bad; i++) {
			pipo_get_str8(&c, s, sizeof s);
			fz_check_str(s);
			(void)pipo_get_u8(&c);
			if (cmd == PIPO_Q_USER_STATS) {
				(void)pipo_get_u32(&c);
				(void)pipo_get_u64(&c);
				(void)pipo_get_u64(&c);
			}
		}
		break;
	}
	case PIPO_Q_METRICS: {
		uint16_t count = pipo_get_u16(&c);
		for (uint16_t i = 0; i < count && !c.bad; i++) {
			uint16_t id = pipo_get_u16(&c);
			(void)pipo_get_u64(&c);
			const char *name = pipo_metric_name(id);
			if (name)
				CHECK(strlen(name) > 0);
		}
		break;
	}
	case PIPO_Q_SESSIONS: {
		uint16_t count = pipo_get_u16(&c);
		(void)pipo_get_u8(&c);
		for (uint16_t i = 0; i < count && !c.bad; i++) {
			size_t at = c.pos;
			struct pipo_session ses;
			pipo_get_session(&c, &ses);
			if (!c.bad)
				fz_session_roundtrip(p + at, n - at);
		}
		break;
	}
	case PIPO_Q_DOH:
		(void)pipo_get_u8(&c);
		pipo_get_str16(&c, url, sizeof url);
		CHECK(strlen(url) <= PIPO_MAX_URL);
		break;
	case PIPO_Q_RULES: {
		static char text[PIPO_RULE_TEXT_MAX + 1];
		(void)pipo_get_u64(&c);
		(void)pipo_get_u8(&c);
		pipo_get_str16(&c, text, sizeof text);
		uint32_t count = pipo_get_u32(&c);
		for (uint32_t i = 0; i < count && !c.bad; i++) {
			size_t at = c.pos;
			struct pipo_rule r;
			pipo_get_rule(&c, &r, text, sizeof text);
			CHECK(strlen(r.text) <= PIPO_RULE_TEXT_MAX);
			if (c.bad)
				break;
			/* re-encoded, the same bytes */
			static uint8_t out[PIPO_RULE_TEXT_MAX + 32];
			struct pipo_buf b = {.p = out, .cap = sizeof out};
			pipo_put_rule(&b, &r);
			CHECK(!b.overflow && b.len == c.pos - at && memcmp(out, p + at, b.len) == 0);
		}
		break;
	}
	case PIPO_Q_RULE_TEST: {
		static char text[PIPO_RULE_TEXT_MAX + 1];
		struct pipo_rule_verdict v;
		pipo_get_rule_verdict(&c, &v, text, sizeof text);
		CHECK(strlen(v.text) <= PIPO_RULE_TEXT_MAX);
		if (!c.bad)
			CHECK(v.decision <= PIPO_RULE_UNDECIDED && v.on_name <= 1);
		break;
	}
	case PIPO_Q_SERVER:
		(void)pipo_get_u8(&c);
		(void)pipo_get_u32(&c);
		(void)pipo_get_u64(&c);
		(void)pipo_get_u32(&c);
		pipo_get_str8(&c, s, sizeof s);
		fz_check_str(s);
		break;
	default:
		(void)pipo_get_u64(&c);
		break;
	}
	CHECK(c.pos <= c.len);
}

struct fz_result {
	int auth_rc;
	size_t auth_used;
	char user[PIPO_MAX_NAME + 1], pass[PIPO_MAX_NAME + 1];
	size_t frames;
	uint64_t digest;
	size_t consumed;
};

static int fz_feed_reader(struct pipo_reader *r, uint8_t *scratch, size_t cap, const uint8_t *buf,
                          size_t k, size_t *used)
{
	CHECK(k <= cap);
	uint8_t *slice = scratch + cap - k;
	if (k)
		memcpy(slice, buf, k);
	*used = (size_t)-1;
	int rc = pipo_reader_feed(r, slice, k, used);
	CHECK(*used <= k);
	CHECK(rc == PIPO_NEED_MORE || rc == PIPO_DONE);
	if (rc == PIPO_NEED_MORE)
		CHECK(*used == k);
	return rc;
}

static void fz_parse(const uint8_t *buf, size_t n, uint32_t max, struct fz_chunks *chunks,
                     bool parse_payloads, struct fz_result *res)
{
	uint8_t *scratch = malloc(n ? n : 1);
	uint8_t *payload = malloc(max ? max : 1);
	CHECK(scratch && payload);
	size_t cap = n ? n : 1;
	memset(res, 0, sizeof *res);
	res->digest = 0xcbf29ce484222325ull;

	struct rfc1929 a;
	memset(&a, 0xa5, sizeof a); /* init must not rely on zeroed memory */
	pipo_auth_init(&a);
	size_t off = 0;
	int rc = PIPO_NEED_MORE;
	unsigned empty = 0;
	while (rc == PIPO_NEED_MORE && off < n) {
		size_t k = fz_next(chunks, n - off);
		if (k == 0 && ++empty > 8)
			k = 1;
		uint8_t *slice = scratch + cap - k;
		if (k)
			memcpy(slice, buf + off, k);
		size_t used = (size_t)-1;
		rc = pipo_auth_feed(&a, slice, k, &used);
		CHECK(used <= k);
		if (rc == PIPO_NEED_MORE)
			CHECK(used == k);
		off += used;
	}
	res->auth_rc = rc;
	res->auth_used = off;
	if (rc == PIPO_DONE) {
		CHECK(a.ulen >= 1 && a.plen >= 1);
		CHECK(off == 3u + a.ulen + a.plen);
		CHECK(a.ver == PIPO_VERSION);
		memcpy(res->user, a.user, (size_t)a.ulen + 1);
		memcpy(res->pass, a.pass, (size_t)a.plen + 1);
	} else if (rc == PIPO_ERROR) {
		CHECK(off >= 1);
		CHECK(a.ver != PIPO_VERSION || a.ulen == 0 || a.plen == 0);
	}

	/* Frames follow a good AUTH, as in a server session. */
	if (rc == PIPO_DONE) {
		struct pipo_reader r;
		memset(&r, 0x5a, sizeof r);
		pipo_reader_init(&r, payload, max);
		empty = 0;
		/* Bounded: each round consumes a byte or delivers a frame. */
		for (size_t guard = 0; off < n && guard < 4 * n + 64; guard++) {
			size_t k = fz_next(chunks, n - off);
			if (k == 0 && ++empty > 8)
				k = 1;
			size_t used;
			int fr = fz_feed_reader(&r, scratch, cap, buf + off, k, &used);
			off += used;
			if (fr != PIPO_DONE)
				continue;
			res->frames++;
			CHECK(r.too_big == (r.f.len > max));
			res->digest = fz_mix(res->digest, &r.f, sizeof r.f);
			res->digest = fz_mix(res->digest, &r.too_big, sizeof r.too_big);
			if (!r.too_big) {
				res->digest = fz_mix(res->digest, payload, r.f.len);
				if (parse_payloads) {
					fz_request(r.f.type, r.f.cmd, payload, r.f.len);
					fz_response(r.f.type, r.f.cmd, payload, r.f.len);
				}
			}
		}
		CHECK(off == n);
	}
	res->consumed = off;
	free(scratch);
	free(payload);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	static const uint32_t bounds[] = {16, 64, 1024, PIPO_MAX_REQUEST};
	size_t nsizes = (size_t)(data[0] & 7) + 1;
	uint32_t max = bounds[(data[0] >> 3) & 3];
	if (size < 1 + nsizes)
		return 0;
	struct fz_chunks chunks = {.sizes = data + 1, .nsizes = nsizes, .next = 0};
	const uint8_t *buf = data + 1 + nsizes;
	size_t n = size - 1 - nsizes;

	static struct fz_result x, y;
	fz_parse(buf, n, max, &chunks, true, &x);
	fz_parse(buf, n, max, NULL, false, &y);
	CHECK(x.auth_rc == y.auth_rc);
	CHECK(x.auth_used == y.auth_used);
	CHECK(strcmp(x.user, y.user) == 0 && strcmp(x.pass, y.pass) == 0);
	CHECK(x.frames == y.frames);
	CHECK(x.digest == y.digest);
	CHECK(x.consumed == y.consumed);

	/* The whole stream (past the chunk sizes) as one payload of each kind. */
	for (unsigned cmd = 0; cmd <= PIPO_Q_USER_STATS; cmd++)
		fz_response(PIPO_QUERY, (uint8_t)cmd, buf, n);
	for (unsigned cmd = 0; cmd <= PIPO_M_CONNECT_TIMEOUT; cmd++)
		fz_request(PIPO_MODIFY, (uint8_t)cmd, buf, n);
	fz_session_roundtrip(buf, n);
	(void)pipo_status_name(n ? buf[0] : 0);
	return 0;
}
