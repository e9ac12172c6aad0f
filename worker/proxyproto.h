/*
 * proxyproto: a sans-I/O parser of the PROXY protocol header (versions 1
 * and 2, as HAProxy defines them) that a load balancer sends before the
 * client's first byte, and the list of balancers trusted to send it.
 *
 * The parser is fed byte slices of any size (one byte at a time works),
 * tells the version from the first bytes, keeps its own bounded state (a
 * version 1 line of at most PROXYPROTO_V1_MAX bytes; a version 2 header of
 * 16 bytes and at most PROXYPROTO_V2_BODY_MAX more, TLVs skipped), consumes
 * only the header's bytes (the SOCKS greeting after it is left to the
 * caller) and returns PROXYPROTO_MORE, PROXYPROTO_DONE or PROXYPROTO_ERROR.
 * No I/O, no allocation, no globals: any thread may use its own parser.
 */
#ifndef SOCKS5D_PROXYPROTO_H
#define SOCKS5D_PROXYPROTO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* "PROXY UNKNOWN" + two IPv6 addresses + two ports + CRLF: the spec's 107. */
#define PROXYPROTO_V1_MAX 107
#define PROXYPROTO_V2_HEADER 16
/* Addresses (36 bytes for IPv6) and TLVs: more is refused. */
#define PROXYPROTO_V2_BODY_MAX 2048
/* Balancers in one trust list. */
#define PROXYPROTO_TRUST_MAX 32

enum proxyproto_status {
	PROXYPROTO_ERROR = -1,
	PROXYPROTO_MORE = 0,
	PROXYPROTO_DONE = 1,
};

enum proxyproto_error {
	PROXYPROTO_OK = 0,
	PROXYPROTO_NOT_PROXY,   /* neither signature */
	PROXYPROTO_V1_TOO_LONG, /* no CRLF within 107 bytes */
	PROXYPROTO_V1_SYNTAX,   /* a malformed line */
	PROXYPROTO_V2_VERSION,  /* version nibble not 2, or a command not LOCAL/PROXY */
	PROXYPROTO_V2_FAMILY,   /* an unknown family or transport */
	PROXYPROTO_V2_LENGTH,   /* too short for its addresses, or over the bound */
};

struct proxyproto {
	uint8_t state;
	uint8_t version; /* 1 or 2 once known */
	uint8_t error;   /* enum proxyproto_error */
	uint8_t len;     /* bytes kept in buf */
	uint16_t body;   /* v2: length of what follows the 16-byte header */
	uint16_t seen;   /* v2: bytes of the body consumed */
	uint8_t buf[PROXYPROTO_V1_MAX + 1];
	/* When done: has_addr says the header carried the client's address
	 * (v1 TCP4/TCP6, v2 PROXY over AF_INET/AF_INET6); otherwise (v1
	 * UNKNOWN, v2 LOCAL or another family) the connection's own address
	 * stands. */
	bool has_addr;
	struct sockaddr_storage src;
};

void proxyproto_init(struct proxyproto *p);
/* Feed n bytes; *used says how many belong to the header. */
int proxyproto_feed(struct proxyproto *p, const uint8_t *in, size_t n, size_t *used);
/* The reason of an error, for a log line. */
const char *proxyproto_error_text(enum proxyproto_error e);

/* The balancers allowed to send the header. */
struct proxyproto_net {
	uint8_t family; /* AF_INET or AF_INET6 */
	uint8_t plen;
	uint8_t addr[16];
};
struct proxyproto_trust {
	size_t n;
	struct proxyproto_net net[PROXYPROTO_TRUST_MAX];
};

/* CIDR[,CIDR...] (an address alone is a host); "" is an empty list.
 * 0, or -EINVAL and t left empty. */
int proxyproto_trust_parse(struct proxyproto_trust *t, const char *list);
/* The peer is in the list (an IPv4-mapped IPv6 peer matches IPv4 nets). */
bool proxyproto_trusted(const struct proxyproto_trust *t, const struct sockaddr_storage *peer);

#endif
