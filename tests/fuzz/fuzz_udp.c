/*
 * libFuzzer target for worker/socks5udp: the UDP request header parser on
 * a datagram copied to the end of an exact-size heap buffer (ASan catches
 * any read beyond it).  Invariants: the header length never exceeds the
 * datagram; a parsed header re-encodes (for IP addresses) to the same
 * bytes after RSV; a name is NUL-free and as long as its length byte.
 */
#include "fuzz_common.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "../../worker/socks5.h"
#include "../../worker/socks5udp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	uint8_t *copy = malloc(size ? size : 1);
	if (!copy)
		return 0;
	memcpy(copy, data, size);
	struct socks5_udp_hdr h;
	int rc = socks5_udp_parse(copy, size, &h);
	if (rc >= 0) {
		CHECK((size_t)rc <= size);
		CHECK(h.frag == 0);
		if (h.atyp == SOCKS5_ATYP_DOMAIN) {
			CHECK(strlen(h.host) == h.alen && h.alen > 0);
			CHECK((size_t)rc == 7u + h.alen);
		} else {
			struct sockaddr_storage ss;
			memset(&ss, 0, sizeof ss);
			if (h.atyp == SOCKS5_ATYP_IPV4) {
				struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
				s4->sin_family = AF_INET;
				memcpy(&s4->sin_addr, h.addr, 4);
				s4->sin_port = htons(h.port);
			} else {
				CHECK(h.atyp == SOCKS5_ATYP_IPV6);
				struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
				s6->sin6_family = AF_INET6;
				memcpy(&s6->sin6_addr, h.addr, 16);
				s6->sin6_port = htons(h.port);
			}
			uint8_t out[SOCKS5_UDP_REPLY_HDR_MAX];
			size_t n = socks5_udp_header_encode(out, (struct sockaddr *)&ss);
			/* A mapped IPv6 address comes back as IPv4: compare only
			 * what is not one. */
			if (n == (size_t)rc)
				CHECK(memcmp(out + 2, copy + 2, n - 2) == 0);
		}
	} else {
		CHECK(rc == SOCKS5_UDP_SHORT || rc == SOCKS5_UDP_FRAG || rc == SOCKS5_UDP_BAD_ATYP ||
		      rc == SOCKS5_UDP_BAD_NAME);
	}
	free(copy);
	return 0;
}
