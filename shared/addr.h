/* addr: socket addresses from their text form.  Thread-safe. */
#ifndef SOCKS5D_ADDR_H
#define SOCKS5D_ADDR_H

#include <stdint.h>
#include <sys/socket.h>

/* An IPv4 or IPv6 literal and a port; 0 or -EINVAL. */
int addr_parse(const char *ip, uint16_t port, struct sockaddr_storage *ss, socklen_t *len);

#endif
