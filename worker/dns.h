/*
 * dns: the DNS wire codec used by the DoH client (RFC 1035, RFC 8484).
 *
 * Sans-I/O and allocation-free towards its callers: it builds a query for one
 * name and type (through c-ares' ares_create_query, ID 0 as RFC 8484 4.1
 * asks, so that identical queries are identical HTTP requests and caches
 * can share them), and it decodes a complete answer message into addresses
 * with TTLs or a classified negative/failed outcome.  The addresses and
 * CNAME chains are read by c-ares (ares_parse_a_reply/ares_parse_aaaa_reply);
 * what c-ares does not check is ours: the header (QR, opcode, TC, the rcode,
 * read first because c-ares reports NXDOMAIN, NODATA and REFUSED alike), the
 * question (it must be the one we asked) and the SOA of negative answers
 * (RFC 2308).  Every read is bounded by the message length; compression
 * pointers must point strictly backwards, so loops cannot exist.
 *
 * Also base64url without padding (RFC 4648 5) for the GET form.
 *
 * No globals; any thread may call it.
 */
#ifndef SOCKS5D_DNS_H
#define SOCKS5D_DNS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DNS_MAX_MSG 65535  /* a DNS message's length field is 16 bits */
#define DNS_MAX_NAME 253   /* presentation form, no trailing dot */
#define DNS_MAX_LABEL 63
#define DNS_HEADER_LEN 12
#define DNS_MAX_ADDRS 16   /* per family and per answer; more are ignored */
#define DNS_TTL_MAX_VALID 0x7fffffffu /* RFC 2181 8: larger TTLs count as 0 */

enum dns_type {
	DNS_TYPE_A = 1,
	DNS_TYPE_NS = 2,
	DNS_TYPE_CNAME = 5,
	DNS_TYPE_SOA = 6,
	DNS_TYPE_AAAA = 28,
};

enum dns_class {
	DNS_CLASS_IN = 1,
};

enum dns_rcode {
	DNS_RCODE_NOERROR = 0,
	DNS_RCODE_FORMERR = 1,
	DNS_RCODE_SERVFAIL = 2,
	DNS_RCODE_NXDOMAIN = 3,
	DNS_RCODE_NOTIMP = 4,
	DNS_RCODE_REFUSED = 5,
};

/* The outcome of one answer. */
enum dns_result {
	DNS_ANSWER = 0,      /* naddrs >= 1 */
	DNS_NODATA,          /* the name exists, no record of this type */
	DNS_NXDOMAIN,        /* the name does not exist */
	DNS_SERVER_FAILURE,  /* SERVFAIL, REFUSED or another error rcode */
	DNS_MALFORMED,       /* not a usable answer to our question */
};

struct dns_addr {
	uint8_t family; /* AF_INET or AF_INET6 */
	uint8_t addr[16];
	uint32_t ttl;   /* seconds, already mapped per RFC 2181 8 */
};

struct dns_answer {
	enum dns_result result;
	uint8_t rcode;
	/* DNS_ANSWER: the minimum TTL of the addresses (CNAMEs included).
	 * DNS_NODATA/DNS_NXDOMAIN: the negative TTL from the SOA (RFC 2308 5),
	 * when has_ttl. */
	bool has_ttl;
	uint32_t ttl;
	size_t naddrs;
	struct dns_addr addrs[DNS_MAX_ADDRS];
};

/* Copy name into out in canonical form (lower case, no trailing dot) when it
 * is a host name we will ask for: 1..253 characters, labels of 1..63 of
 * [A-Za-z0-9_-].  Returns the length, or -EINVAL. */
int dns_name_normalize(const char *name, char *out, size_t cap);

/* Build a query (ID 0, RD, one question of class IN) for a normalized name.
 * Returns the length written, -EINVAL for a bad name, -ENOSPC, -ENOMEM. */
int dns_query_encode(const char *name, uint16_t qtype, uint8_t *buf, size_t cap);

/* base64url without padding; returns the length written (NUL-terminated),
 * or -ENOSPC when cap < dns_b64url_len(n) + 1. */
size_t dns_b64url_len(size_t n);
int dns_b64url_encode(const uint8_t *in, size_t n, char *out, size_t cap);

/* Decode a complete answer to the question (name, qtype) with ID 0.
 * Always fills out->result; returns it. */
enum dns_result dns_answer_decode(const uint8_t *msg, size_t len, const char *name, uint16_t qtype,
                                  struct dns_answer *out);

/* Read a (possibly compressed) name starting at off into out (presentation
 * form, lower case, no trailing dot, "" for the root).  *next is the offset
 * after the name where it starts.  Returns 0 or -EBADMSG. */
int dns_name_read(const uint8_t *msg, size_t len, size_t off, char *out, size_t cap, size_t *next);

/* Clamp a TTL into [min, max]. */
static inline uint32_t dns_ttl_clamp(uint32_t ttl, uint32_t min, uint32_t max)
{
	return ttl < min ? min : ttl > max ? max : ttl;
}

const char *dns_result_str(enum dns_result r);

#endif
