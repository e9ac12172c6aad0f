/*
 * admin_endpoint: the listening sockets of the administration (the
 * unix-domain socket and the SCTP endpoint), opened for master/admin.c.
 * Each returns a listening, non-blocking descriptor or a negative errno;
 * the caller logs.
 *
 * Master loop thread only (the unix socket is created under a umask).
 */
#ifndef SOCKS5D_ADMIN_ENDPOINT_H
#define SOCKS5D_ADMIN_ENDPOINT_H

#include <stddef.h>
#include <stdint.h>

/* $RUNTIME_DIRECTORY/socks5d.sock, /run/socks5d/socks5d.sock for root (the
 * directory is created), else socks5d.sock. */
void admin_endpoint_default_path(char *out, size_t len);
/* Mode 0600.  -EADDRINUSE when a live server answers at path; -EEXIST
 * when something other than a socket is there (never removed); a stale
 * socket is replaced. */
int admin_endpoint_unix(const char *path);
int admin_endpoint_sctp(const char *addr, uint16_t port);

#endif
