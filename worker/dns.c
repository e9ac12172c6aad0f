#include "dns.h"

#include <ares.h>
#include <errno.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t rd32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

/* RFC 2181 8: a TTL with the top bit set is treated as zero. */
static uint32_t ttl_map(uint32_t t)
{
	return t > DNS_TTL_MAX_VALID ? 0 : t;
}

static bool host_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
	       c == '_';
}

int dns_name_normalize(const char *name, char *out, size_t cap)
{
	size_t n = strlen(name);
	if (n && name[n - 1] == '.')
		n--; /* one trailing dot: the same (absolute) name */
	if (n == 0 || n > DNS_MAX_NAME || cap < n + 1)
		return -EINVAL;
	size_t label = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c == '.') {
			if (label == 0)
				return -EINVAL;
			label = 0;
		} else if (host_char(c)) {
			if (++label > DNS_MAX_LABEL)
				return -EINVAL;
		} else {
			return -EINVAL;
		}
		out[i] = (char)(c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c);
	}
	if (label == 0)
		return -EINVAL;
	out[n] = '\0';
	return (int)n;
}

int dns_query_encode(const char *name, uint16_t qtype, uint8_t *buf, size_t cap)
{
	char norm[DNS_MAX_NAME + 1];
	if (dns_name_normalize(name, norm, sizeof norm) < 0)
		return -EINVAL;
	unsigned char *q = NULL;
	int qlen = 0;
	/* max_udp_size 0: no EDNS OPT record; DoH has no UDP size to announce. */
	int rc = ares_create_query(norm, DNS_CLASS_IN, qtype, 0, 1, &q, &qlen, 0);
	if (rc == ARES_ENOMEM)
		return -ENOMEM;
	if (rc != ARES_SUCCESS || !q)
		return -EINVAL;
	int ret = qlen;
	if ((size_t)qlen > cap)
		ret = -ENOSPC;
	else
		memcpy(buf, q, (size_t)qlen);
	ares_free_string(q);
	return ret;
}

size_t dns_b64url_len(size_t n)
{
	return n / 3 * 4 + (n % 3 ? n % 3 + 1 : 0);
}

int dns_b64url_encode(const uint8_t *in, size_t n, char *out, size_t cap)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t need = dns_b64url_len(n);
	if (cap < need + 1)
		return -ENOSPC;
	size_t o = 0, i = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8) | in[i + 2];
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = tab[(v >> 6) & 63];
		out[o++] = tab[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
	} else if (n - i == 2) {
		uint32_t v = ((uint32_t)in[i] << 16) | ((uint32_t)in[i + 1] << 8);
		out[o++] = tab[v >> 18];
		out[o++] = tab[(v >> 12) & 63];
		out[o++] = tab[(v >> 6) & 63];
	}
	out[o] = '\0';
	return (int)o;
}

int dns_name_read(const uint8_t *msg, size_t len, size_t off, char *out, size_t cap, size_t *next)
{
	size_t pos = off, olen = 0;
	/* Each pointer must go strictly before the previous target (or the name's
	 * start): positions strictly decrease, so no loop can exist. */
	size_t limit = off;
	bool jumped = false;
	if (cap == 0)
		return -EBADMSG;
	for (;;) {
		if (pos >= len)
			return -EBADMSG;
		uint8_t c = msg[pos];
		if ((c & 0xc0) == 0xc0) {
			if (pos + 1 >= len)
				return -EBADMSG;
			size_t ptr = ((size_t)(c & 0x3f) << 8) | msg[pos + 1];
			if (ptr >= limit)
				return -EBADMSG;
			if (!jumped)
				*next = pos + 2;
			jumped = true;
			limit = ptr;
			pos = ptr;
			continue;
		}
		if (c & 0xc0)
			return -EBADMSG; /* 0x40/0x80: extended label types, obsolete */
		if (c == 0) {
			if (!jumped)
				*next = pos + 1;
			break;
		}
		if (pos + 1 + c > len)
			return -EBADMSG;
		size_t add = (olen ? 1u : 0u) + c;
		if (olen + add > DNS_MAX_NAME || olen + add + 1 > cap)
			return -EBADMSG;
		if (olen)
			out[olen++] = '.';
		for (size_t i = 0; i < c; i++) {
			unsigned char ch = msg[pos + 1 + i];
			/* A dot or a control byte inside a label has no unambiguous
			 * presentation form; we never ask for such names. */
			if (ch <= 0x20 || ch >= 0x7f || ch == '.')
				return -EBADMSG;
			out[olen++] = (char)(ch >= 'A' && ch <= 'Z' ? ch + ('a' - 'A') : ch);
		}
		pos += 1u + c;
	}
	out[olen] = '\0';
	return 0;
}

/* Step over a name without reading it: labels up to the root or a pointer. */
static int name_skip(const uint8_t *msg, size_t len, size_t off, size_t *next)
{
	size_t pos = off;
	for (;;) {
		if (pos >= len)
			return -EBADMSG;
		uint8_t c = msg[pos];
		if ((c & 0xc0) == 0xc0) {
			if (pos + 2 > len)
				return -EBADMSG;
			*next = pos + 2;
			return 0;
		}
		if (c & 0xc0)
			return -EBADMSG;
		if (c == 0) {
			*next = pos + 1;
			return 0;
		}
		if (pos - off + 1u + c > 255 || pos + 1 + c > len)
			return -EBADMSG;
		pos += 1u + c;
	}
}

struct rr {
	uint16_t type, cls;
	uint32_t ttl;
	size_t rdata, rdlen;
};

static int rr_read(const uint8_t *msg, size_t len, size_t *off, struct rr *rr)
{
	size_t p;
	if (name_skip(msg, len, *off, &p) < 0 || p + 10 > len)
		return -EBADMSG;
	rr->type = rd16(msg + p);
	rr->cls = rd16(msg + p + 2);
	rr->ttl = rd32(msg + p + 4);
	rr->rdlen = rd16(msg + p + 8);
	rr->rdata = p + 10;
	if (rr->rdata + rr->rdlen > len)
		return -EBADMSG;
	*off = rr->rdata + rr->rdlen;
	return 0;
}

/* RFC 2308 5: the negative TTL is min(SOA TTL, SOA MINIMUM) of the SOA in
 * the authority section.  Returns 1 with *ttl, 0 when there is none. */
static int negative_ttl(const uint8_t *msg, size_t len, size_t off, unsigned an, unsigned ns,
                        uint32_t *ttl)
{
	struct rr rr;
	for (unsigned i = 0; i < an; i++)
		if (rr_read(msg, len, &off, &rr) < 0)
			return -EBADMSG;
	for (unsigned i = 0; i < ns; i++) {
		if (rr_read(msg, len, &off, &rr) < 0)
			return -EBADMSG;
		if (rr.type != DNS_TYPE_SOA || rr.cls != DNS_CLASS_IN)
			continue;
		size_t end = rr.rdata + rr.rdlen, p;
		/* MNAME and RNAME, then SERIAL REFRESH RETRY EXPIRE MINIMUM. */
		if (name_skip(msg, end, rr.rdata, &p) < 0 || name_skip(msg, end, p, &p) < 0 ||
		    p + 20 != end)
			return -EBADMSG;
		uint32_t t = ttl_map(rr.ttl), min = ttl_map(rd32(msg + p + 16));
		*ttl = t < min ? t : min;
		return 1;
	}
	return 0;
}

static int addresses(const uint8_t *msg, size_t len, uint16_t qtype, struct dns_answer *out)
{
	int n = DNS_MAX_ADDRS, rc;
	if (qtype == DNS_TYPE_A) {
		struct ares_addrttl a[DNS_MAX_ADDRS];
		rc = ares_parse_a_reply(msg, (int)len, NULL, a, &n);
		if (rc != ARES_SUCCESS)
			return rc;
		for (int i = 0; i < n && i < DNS_MAX_ADDRS; i++) {
			struct dns_addr *d = &out->addrs[out->naddrs++];
			d->family = AF_INET;
			memcpy(d->addr, &a[i].ipaddr, 4);
			d->ttl = a[i].ttl < 0 ? 0 : ttl_map((uint32_t)a[i].ttl);
		}
	} else {
		struct ares_addr6ttl a[DNS_MAX_ADDRS];
		rc = ares_parse_aaaa_reply(msg, (int)len, NULL, a, &n);
		if (rc != ARES_SUCCESS)
			return rc;
		for (int i = 0; i < n && i < DNS_MAX_ADDRS; i++) {
			struct dns_addr *d = &out->addrs[out->naddrs++];
			d->family = AF_INET6;
			memcpy(d->addr, &a[i].ip6addr, 16);
			d->ttl = a[i].ttl < 0 ? 0 : ttl_map((uint32_t)a[i].ttl);
		}
	}
	return ARES_SUCCESS;
}

enum dns_result dns_answer_decode(const uint8_t *msg, size_t len, const char *name, uint16_t qtype,
                                  struct dns_answer *out)
{
	out->result = DNS_MALFORMED;
	out->rcode = 0;
	out->has_ttl = false;
	out->ttl = 0;
	out->naddrs = 0;
	if (!msg || len < DNS_HEADER_LEN || len > DNS_MAX_MSG)
		return out->result;
	uint16_t id = rd16(msg), flags = rd16(msg + 2);
	unsigned qd = rd16(msg + 4), an = rd16(msg + 6), ns = rd16(msg + 8);
	/* An answer (QR), standard query, not truncated (over HTTP nothing is),
	 * with our ID 0 echoed. */
	if (id != 0 || !(flags & 0x8000) || ((flags >> 11) & 0xf) != 0 || (flags & 0x0200) || qd != 1)
		return out->result;
	out->rcode = (uint8_t)(flags & 0xf);
	char qname[DNS_MAX_NAME + 1];
	size_t off;
	if (dns_name_read(msg, len, DNS_HEADER_LEN, qname, sizeof qname, &off) < 0 || off + 4 > len)
		return out->result;
	if (strcmp(qname, name) != 0 || rd16(msg + off) != qtype || rd16(msg + off + 2) != DNS_CLASS_IN)
		return out->result;
	off += 4;

	/* The rcode first: c-ares reports NXDOMAIN, NODATA and REFUSED alike. */
	if (out->rcode == DNS_RCODE_NOERROR) {
		int rc = addresses(msg, len, qtype, out);
		if (rc == ARES_SUCCESS && out->naddrs > 0) {
			uint32_t min = UINT32_MAX;
			for (size_t i = 0; i < out->naddrs; i++)
				if (out->addrs[i].ttl < min)
					min = out->addrs[i].ttl;
			out->ttl = min;
			out->has_ttl = true;
			out->result = DNS_ANSWER;
			return out->result;
		}
		out->naddrs = 0;
		if (rc != ARES_SUCCESS && rc != ARES_ENODATA)
			return out->result;
	} else if (out->rcode != DNS_RCODE_NXDOMAIN) {
		out->result = DNS_SERVER_FAILURE;
		return out->result;
	}
	uint32_t ttl = 0;
	int rc = negative_ttl(msg, len, off, an, ns, &ttl);
	if (rc < 0)
		return out->result;
	out->has_ttl = rc == 1;
	out->ttl = ttl;
	out->result = out->rcode == DNS_RCODE_NXDOMAIN ? DNS_NXDOMAIN : DNS_NODATA;
	return out->result;
}

const char *dns_result_str(enum dns_result r)
{
	switch (r) {
	case DNS_ANSWER:
		return "answer";
	case DNS_NODATA:
		return "no data";
	case DNS_NXDOMAIN:
		return "no such name";
	case DNS_SERVER_FAILURE:
		return "server failure";
	case DNS_MALFORMED:
		return "malformed answer";
	}
	return "?";
}
