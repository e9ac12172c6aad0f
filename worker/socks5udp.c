#include "socks5udp.h"

#include <netinet/in.h>
#include <string.h>

#include "socks5.h"

int socks5_udp_parse(const uint8_t *p, size_t n, struct socks5_udp_hdr *h)
{
	size_t alen, pos;
	memset(h, 0, offsetof(struct socks5_udp_hdr, host) + 1);
	if (n < 4)
		return SOCKS5_UDP_SHORT;
	h->frag = p[2];
	h->atyp = p[3];
	if (h->frag != 0)
		return SOCKS5_UDP_FRAG;
	switch (h->atyp) {
	case SOCKS5_ATYP_IPV4:
		alen = 4;
		pos = 4;
		break;
	case SOCKS5_ATYP_IPV6:
		alen = 16;
		pos = 4;
		break;
	case SOCKS5_ATYP_DOMAIN:
		if (n < 5)
			return SOCKS5_UDP_SHORT;
		alen = p[4];
		pos = 5;
		break;
	default:
		return SOCKS5_UDP_BAD_ATYP;
	}
	if (n - pos < alen + 2)
		return SOCKS5_UDP_SHORT;
	if (h->atyp == SOCKS5_ATYP_DOMAIN) {
		if (alen == 0 || memchr(p + pos, '\0', alen))
			return SOCKS5_UDP_BAD_NAME;
		memcpy(h->host, p + pos, alen);
		h->host[alen] = '\0';
	} else {
		memcpy(h->addr, p + pos, alen);
	}
	h->alen = (uint8_t)alen;
	pos += alen;
	h->port = (uint16_t)(p[pos] << 8 | p[pos + 1]);
	return (int)(pos + 2);
}

size_t socks5_udp_header_encode(uint8_t out[SOCKS5_UDP_REPLY_HDR_MAX], const struct sockaddr *from)
{
	if (from->sa_family != AF_INET && from->sa_family != AF_INET6)
		return 0;
	/* The layout of a SOCKS reply with VER REP RSV zeroed: RSV RSV FRAG. */
	size_t n = socks5_reply_encode(out, 0, from);
	out[0] = out[1] = out[2] = 0;
	return n;
}
