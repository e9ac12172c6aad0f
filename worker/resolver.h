/*
 * resolver: asynchronous name resolution for sessions, returning every A and
 * AAAA address of a name.  Nothing blocks: everything runs on the worker's
 * loop.
 *
 * Order: the hosts file (c-ares, a local file read), then the worker's DNS
 * cache, then a lookup of that name already in flight (joined), then DoH
 * (worker/doh.c: A and AAAA in parallel), and classic DNS through c-ares as
 * the fallback when the DoH endpoint cannot be used (connect or TLS failure,
 * timeout, HTTP error, unusable body) unless settings.dns_fallback is off.
 * After such a failure DoH is skipped for a back-off period (one warning
 * per outage), then tried again.  Every lookup is bounded by
 * settings.dns_timeout_s.
 *
 * Loop thread only.
 */
#ifndef SOCKS5D_RESOLVER_H
#define SOCKS5D_RESOLVER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "../shared/settings.h"
#include "../shared/shm.h"
#include "../shared/loop.h"

#define RESOLVER_MAX_ADDRS 16

/* Cache clamps (seconds).  Positive answers: at least 5 s, so that names
 * published with TTL 0 or 1 do not turn every connection into a DoH round
 * trip, at most 1 h, so that a changed record is seen within the hour.
 * Negative answers (RFC 2308 5, from the SOA): 5 s to 5 min; answers
 * without an SOA are not cached (RFC 2308 5). */
#define RESOLVER_TTL_MIN 5
#define RESOLVER_TTL_MAX 3600
#define RESOLVER_NEG_TTL_MIN 5
#define RESOLVER_NEG_TTL_MAX 300
/* After DoH failed, classic DNS only for this long, then DoH again. */
#define RESOLVER_DOH_BACKOFF_MS 30000

struct resolver;
struct resolver_query;

/* status: 0 with n >= 1 addresses (port already set), or a negative errno:
 * -ENOENT (no such name or no address), -ETIMEDOUT, -EIO (servers failed). */
typedef void resolver_cb(void *arg, int status, const struct sockaddr_storage *addrs, size_t n);

/* slot: the worker's metrics slot (NULL: counted privately). */
int resolver_new(struct loop *l, const struct settings *cfg, struct shm_worker_slot *slot,
                 struct resolver **out);
void resolver_free(struct resolver *r);
/* Servers changed by a reload ("" = system default). */
int resolver_set_servers(struct resolver *r, const char *servers);
/* DoH endpoint, fallback, timeout and cache size (startup and reload).  A
 * changed endpoint empties the cache and forgets an outage. */
void resolver_configure(struct resolver *r, const struct settings *cfg);

/* Start a lookup.  cb is called later, never from inside this call.  The
 * returned handle can be cancelled until cb runs. */
int resolver_lookup(struct resolver *r, const char *name, uint16_t port, resolver_cb *cb, void *arg,
                    struct resolver_query **out);
void resolver_cancel(struct resolver_query *q);

/* The latency histogram bucket of a lookup that took us microseconds. */
unsigned resolver_latency_bucket(uint64_t us);

#endif
