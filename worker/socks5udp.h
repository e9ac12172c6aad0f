/*
 * socks5udp: the sans-I/O codec of the header that every UDP datagram
 * between a client and the relay carries (RFC 1928 section 7):
 *
 *   RSV(2) FRAG(1) ATYP(1) DST.ADDR DST.PORT(2) DATA
 *
 * A datagram arrives whole, so the parser is not incremental: it is given
 * the datagram, reads only within it, and returns the header's length or
 * an error.  RSV is ignored (the RFC reserves it without asking for a
 * check).  No I/O, no allocation, no globals: any thread.
 */
#ifndef SOCKS5D_SOCKS5UDP_H
#define SOCKS5D_SOCKS5UDP_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The longest header: RSV FRAG ATYP, a 255-byte name with its length, port. */
#define SOCKS5_UDP_HDR_MAX (4 + 1 + 255 + 2)
/* The longest header the relay writes (an IPv6 address). */
#define SOCKS5_UDP_REPLY_HDR_MAX 22

enum socks5_udp_error {
	SOCKS5_UDP_SHORT = -1,    /* the datagram ends inside the header */
	SOCKS5_UDP_FRAG = -2,     /* FRAG is not 0: fragments are not reassembled */
	SOCKS5_UDP_BAD_ATYP = -3, /* ATYP is none of 1, 3, 4 */
	SOCKS5_UDP_BAD_NAME = -4, /* a domain name that is empty or holds a NUL */
};

struct socks5_udp_hdr {
	uint8_t frag;
	uint8_t atyp;     /* enum socks5_atyp */
	uint8_t alen;     /* name length for SOCKS5_ATYP_DOMAIN */
	uint16_t port;    /* host order */
	uint8_t addr[16]; /* IPv4 or IPv6, network order */
	char host[256];   /* domain name, NUL-terminated */
};

/* Parse the header at the start of datagram p[0..n).  Returns its length
 * (the data follows it) or an enum socks5_udp_error.  h is filled as far
 * as the header was read (frag is set for SOCKS5_UDP_FRAG). */
int socks5_udp_parse(const uint8_t *p, size_t n, struct socks5_udp_hdr *h);

/* Write the header of a datagram from the remote `from` (IPv4, IPv6; an
 * IPv4-mapped IPv6 address is written as IPv4).  Returns its length (10 or
 * 22), or 0 for another family. */
size_t socks5_udp_header_encode(uint8_t out[SOCKS5_UDP_REPLY_HDR_MAX], const struct sockaddr *from);

#endif
