/*
 * resolver: asynchronous name resolution for sessions, returning every A and
 * AAAA address of a name.  This implementation uses c-ares (the hosts file,
 * then classic DNS) with its sockets and timeouts driven by the worker's
 * loop: nothing blocks.  The DoH resolver sits behind the same interface.
 *
 * Loop thread only.
 */
#ifndef SOCKS5D_RESOLVER_H
#define SOCKS5D_RESOLVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "loop.h"

#define RESOLVER_MAX_ADDRS 16

struct resolver;
struct resolver_query;

/* status: 0 with n >= 1 addresses (port already set), or a negative errno:
 * -ENOENT (no such name or no address), -ETIMEDOUT, -EIO (servers failed). */
typedef void resolver_cb(void *arg, int status, const struct sockaddr_storage *addrs, size_t n);

int resolver_new(struct loop *l, const char *servers, struct resolver **out);
void resolver_free(struct resolver *r);
/* Servers changed by a reload ("" = system default). */
int resolver_set_servers(struct resolver *r, const char *servers);

/* Start a lookup.  cb is called later, never from inside this call.  The
 * returned handle can be cancelled until cb runs. */
int resolver_lookup(struct resolver *r, const char *name, uint16_t port, resolver_cb *cb, void *arg,
                    struct resolver_query **out);
void resolver_cancel(struct resolver_query *q);

#endif
