/*
 * proxyproto: the PROXY protocol header parser and the trusted balancers
 * (see proxyproto.h).
 */
#include "proxyproto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

enum state {
	S_SIG,     /* the first bytes: which signature */
	S_V1,      /* a version 1 line, up to its CRLF */
	S_V2_HDR,  /* the rest of the 16-byte version 2 header */
	S_V2_BODY, /* addresses (kept) and TLVs (skipped) */
	S_DONE,
};

enum v2_cmd { V2_LOCAL = 0x0, V2_PROXY = 0x1 };
enum v2_family { V2_AF_UNSPEC = 0x0, V2_AF_INET = 0x1, V2_AF_INET6 = 0x2, V2_AF_UNIX = 0x3 };
enum v2_transport { V2_UNSPEC = 0x0, V2_STREAM = 0x1, V2_DGRAM = 0x2 };

static const uint8_t v1_sig[] = "PROXY ";
#define V1_SIG_LEN 6
static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
/* What a v2 body holds for its addresses (those of AF_UNIX are skipped). */
#define V2_INET_LEN 12
#define V2_INET6_LEN 36
#define V2_UNIX_LEN 216

void proxyproto_init(struct proxyproto *p)
{
	memset(p, 0, sizeof *p);
}

const char *proxyproto_error_text(enum proxyproto_error e)
{
	switch (e) {
	case PROXYPROTO_OK:
		return "no error";
	case PROXYPROTO_NOT_PROXY:
		return "not a PROXY protocol header";
	case PROXYPROTO_V1_TOO_LONG:
		return "version 1 line longer than 107 bytes";
	case PROXYPROTO_V1_SYNTAX:
		return "malformed version 1 line";
	case PROXYPROTO_V2_VERSION:
		return "version 2 header with a bad version or command";
	case PROXYPROTO_V2_FAMILY:
		return "version 2 header with an unknown family or transport";
	case PROXYPROTO_V2_LENGTH:
		return "version 2 header with a bad length";
	}
	return "?";
}

static int fail(struct proxyproto *p, enum proxyproto_error e)
{
	p->error = (uint8_t)e;
	p->state = S_DONE;
	return PROXYPROTO_ERROR;
}

/* A decimal port, 0..65535, without leading zeros. */
static bool parse_port(const char *s, uint16_t *out)
{
	size_t n = strlen(s);
	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return false;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return false;
	*out = (uint16_t)v;
	return true;
}

/* "PROXY TCP4|TCP6 SRC DST SPORT DPORT" or "PROXY UNKNOWN[ anything]",
 * the CRLF already removed; fields apart by exactly one space. */
static int v1_parse(struct proxyproto *p)
{
	char line[PROXYPROTO_V1_MAX + 1];
	size_t n = (size_t)p->len - 2; /* without CRLF */
	memcpy(line, p->buf, n);
	line[n] = '\0';
	if (memchr(line, '\0', n))
		return fail(p, PROXYPROTO_V1_SYNTAX);
	const char *rest = line + V1_SIG_LEN;
	if (strncmp(rest, "UNKNOWN", 7) == 0 && (rest[7] == '\0' || rest[7] == ' ')) {
		p->has_addr = false;
		p->state = S_DONE;
		return PROXYPROTO_DONE;
	}
	int family;
	if (strncmp(rest, "TCP4 ", 5) == 0)
		family = AF_INET;
	else if (strncmp(rest, "TCP6 ", 5) == 0)
		family = AF_INET6;
	else
		return fail(p, PROXYPROTO_V1_SYNTAX);
	char *field[4];
	char *q = line + V1_SIG_LEN + 5;
	for (int i = 0; i < 4; i++) {
		field[i] = q;
		char *sp = strchr(q, ' ');
		if ((i < 3) != (sp != NULL) || sp == q || *q == '\0')
			return fail(p, PROXYPROTO_V1_SYNTAX);
		if (sp) {
			*sp = '\0';
			q = sp + 1;
		}
	}
	uint8_t src[16], dst[16];
	uint16_t sport, dport;
	if (inet_pton(family, field[0], src) != 1 || inet_pton(family, field[1], dst) != 1 ||
	    !parse_port(field[2], &sport) || !parse_port(field[3], &dport))
		return fail(p, PROXYPROTO_V1_SYNTAX);
	memset(&p->src, 0, sizeof p->src);
	if (family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&p->src;
		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, src, 4);
		s4->sin_port = htons(sport);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&p->src;
		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, src, 16);
		s6->sin6_port = htons(sport);
	}
	p->has_addr = true;
	p->state = S_DONE;
	return PROXYPROTO_DONE;
}

/* The 16-byte header is in buf: check it and learn the body's length. */
static int v2_header(struct proxyproto *p)
{
	uint8_t ver = p->buf[12] >> 4, cmd = p->buf[12] & 0x0f;
	uint8_t fam = p->buf[13] >> 4, proto = p->buf[13] & 0x0f;
	if (ver != 2 || (cmd != V2_LOCAL && cmd != V2_PROXY))
		return fail(p, PROXYPROTO_V2_VERSION);
	if (fam > V2_AF_UNIX || proto > V2_DGRAM)
		return fail(p, PROXYPROTO_V2_FAMILY);
	uint16_t len = (uint16_t)(p->buf[14] << 8 | p->buf[15]);
	size_t need = cmd != V2_PROXY      ? 0
	              : fam == V2_AF_INET  ? V2_INET_LEN
	              : fam == V2_AF_INET6 ? V2_INET6_LEN
	              : fam == V2_AF_UNIX  ? V2_UNIX_LEN
	                                   : 0;
	if (len > PROXYPROTO_V2_BODY_MAX || len < need)
		return fail(p, PROXYPROTO_V2_LENGTH);
	p->body = len;
	p->seen = 0;
	p->state = S_V2_BODY;
	return PROXYPROTO_MORE;
}

/* The body is consumed; its addresses (if kept) follow the header in buf. */
static int v2_done(struct proxyproto *p)
{
	uint8_t cmd = p->buf[12] & 0x0f, fam = p->buf[13] >> 4;
	const uint8_t *a = p->buf + PROXYPROTO_V2_HEADER;
	memset(&p->src, 0, sizeof p->src);
	p->has_addr = false;
	/* A DGRAM transport cannot be what this stream came from. */
	bool stream = (p->buf[13] & 0x0f) != V2_DGRAM;
	if (cmd == V2_PROXY && fam == V2_AF_INET && stream) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&p->src;
		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, a, 4);
		memcpy(&s4->sin_port, a + 8, 2);
		p->has_addr = true;
	} else if (cmd == V2_PROXY && fam == V2_AF_INET6 && stream) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&p->src;
		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, a, 16);
		memcpy(&s6->sin6_port, a + 32, 2);
		p->has_addr = true;
	}
	p->state = S_DONE;
	return PROXYPROTO_DONE;
}

int proxyproto_feed(struct proxyproto *p, const uint8_t *in, size_t n, size_t *used)
{
	size_t i = 0;
	int rc = p->state == S_DONE ? (p->error ? PROXYPROTO_ERROR : PROXYPROTO_DONE)
	                            : PROXYPROTO_MORE;
	if (rc == PROXYPROTO_MORE && p->state == S_V2_BODY && p->seen == p->body)
		rc = v2_done(p); /* an empty body: done without another byte */
	while (i < n && rc == PROXYPROTO_MORE) {
		uint8_t b = in[i++];
		switch (p->state) {
		case S_SIG:
			if (p->len == 0) {
				if (b == v1_sig[0])
					p->version = 1;
				else if (b == v2_sig[0])
					p->version = 2;
				else {
					rc = fail(p, PROXYPROTO_NOT_PROXY);
					break;
				}
			}
			if (b != (p->version == 1 ? v1_sig[p->len] : v2_sig[p->len])) {
				rc = fail(p, PROXYPROTO_NOT_PROXY);
				break;
			}
			p->buf[p->len++] = b;
			if (p->version == 1 && p->len == V1_SIG_LEN)
				p->state = S_V1;
			else if (p->version == 2 && p->len == sizeof v2_sig)
				p->state = S_V2_HDR;
			break;
		case S_V1:
			p->buf[p->len++] = b;
			if (b == '\n') {
				rc = p->buf[p->len - 2] == '\r' ? v1_parse(p)
				                                 : fail(p, PROXYPROTO_V1_SYNTAX);
			} else if (p->len >= PROXYPROTO_V1_MAX) {
				rc = fail(p, PROXYPROTO_V1_TOO_LONG);
			}
			break;
		case S_V2_HDR:
			p->buf[p->len++] = b;
			if (p->len == PROXYPROTO_V2_HEADER) {
				rc = v2_header(p);
				if (rc == PROXYPROTO_MORE && p->body == 0)
					rc = v2_done(p);
			}
			break;
		case S_V2_BODY:
			/* Only the addresses are kept; TLVs are counted past. */
			if (p->seen < V2_INET6_LEN)
				p->buf[PROXYPROTO_V2_HEADER + p->seen] = b;
			if (++p->seen == p->body)
				rc = v2_done(p);
			break;
		default:
			rc = PROXYPROTO_DONE;
			i--;
			break;
		}
	}
	*used = i;
	return rc;
}

/* ---- trusted balancers -------------------------------------------------- */

static bool parse_net(const char *s, size_t n, struct proxyproto_net *out)
{
	char text[64];
	if (n == 0 || n >= sizeof text)
		return false;
	memcpy(text, s, n);
	text[n] = '\0';
	char *slash = strchr(text, '/');
	if (slash)
		*slash = '\0';
	memset(out, 0, sizeof *out);
	unsigned max;
	if (inet_pton(AF_INET, text, out->addr) == 1) {
		out->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, text, out->addr) == 1) {
		out->family = AF_INET6;
		max = 128;
	} else {
		return false;
	}
	unsigned plen = max;
	if (slash) {
		const char *d = slash + 1;
		size_t dl = strlen(d);
		if (dl == 0 || dl > 3 || (dl > 1 && d[0] == '0'))
			return false;
		plen = 0;
		for (size_t k = 0; k < dl; k++) {
			if (d[k] < '0' || d[k] > '9')
				return false;
			plen = plen * 10 + (unsigned)(d[k] - '0');
		}
		if (plen > max)
			return false;
	}
	out->plen = (uint8_t)plen;
	return true;
}

int proxyproto_trust_parse(struct proxyproto_trust *t, const char *list)
{
	t->n = 0;
	if (!*list)
		return 0;
	for (const char *p = list, *c;; p = c + 1) {
		c = strchr(p, ',');
		size_t n = c ? (size_t)(c - p) : strlen(p);
		if (t->n == PROXYPROTO_TRUST_MAX || !parse_net(p, n, &t->net[t->n])) {
			t->n = 0;
			return -EINVAL;
		}
		t->n++;
		if (!c)
			return 0;
	}
}

static bool prefix_match(const uint8_t *a, const uint8_t *net, unsigned plen)
{
	unsigned full = plen / 8, bits = plen % 8;
	if (memcmp(a, net, full) != 0)
		return false;
	if (!bits)
		return true;
	uint8_t mask = (uint8_t)(0xff << (8 - bits));
	return (a[full] & mask) == (net[full] & mask);
}

bool proxyproto_trusted(const struct proxyproto_trust *t, const struct sockaddr_storage *peer)
{
	const uint8_t *a;
	int family = peer->ss_family;
	if (family == AF_INET) {
		a = (const uint8_t *)&((const struct sockaddr_in *)peer)->sin_addr;
	} else if (family == AF_INET6) {
		const struct in6_addr *a6 = &((const struct sockaddr_in6 *)peer)->sin6_addr;
		a = a6->s6_addr;
		if (IN6_IS_ADDR_V4MAPPED(a6)) {
			family = AF_INET;
			a += 12;
		}
	} else {
		return false;
	}
	for (size_t i = 0; i < t->n; i++)
		if (t->net[i].family == family && prefix_match(a, t->net[i].addr, t->net[i].plen))
			return true;
	return false;
}
