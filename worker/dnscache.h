/*
 * dnscache: a worker's cache of DoH answers, by name.
 *
 * One entry per (normalized) name holds every address of the name (A and
 * AAAA) or nothing (a negative entry: NXDOMAIN, or no address of either
 * type).  An entry lives until the shortest TTL of what it holds; the caller
 * clamps TTLs.  The cache is bounded: past its capacity the least recently
 * used entry goes.  Time is passed in (monotonic ms), so it is pure and
 * tested without a clock.
 *
 * Not thread-safe: one per worker, used on its loop.
 */
#ifndef SOCKS5D_DNSCACHE_H
#define SOCKS5D_DNSCACHE_H

#include <stddef.h>
#include <stdint.h>

#include "dns.h"

#define DNSCACHE_MAX_ADDRS (2 * DNS_MAX_ADDRS)

struct dnscache;

enum dnscache_status {
	DNSCACHE_MISS = 0,
	DNSCACHE_POSITIVE,
	DNSCACHE_NEGATIVE,
};

struct dnscache_stats {
	size_t entries;
	uint64_t hits, misses, evictions, expirations;
};

/* capacity 0: nothing is ever stored. */
int dnscache_new(size_t capacity, struct dnscache **out);
void dnscache_free(struct dnscache *c);
/* A smaller capacity evicts least recently used entries now. */
void dnscache_set_capacity(struct dnscache *c, size_t capacity);
void dnscache_clear(struct dnscache *c);

/* Look a name up at time now; on DNSCACHE_POSITIVE copies up to max
 * addresses into addrs and their number into *n.  A hit makes the entry the
 * most recently used; an expired entry is dropped and reported as a miss. */
enum dnscache_status dnscache_get(struct dnscache *c, const char *name, int64_t now,
                                  struct dns_addr *addrs, size_t max, size_t *n);

/* Store (replace) a name's addresses, n == 0 for a negative entry, valid for
 * ttl_s seconds from now.  ttl_s == 0 stores nothing (and drops an old entry). */
void dnscache_put(struct dnscache *c, const char *name, const struct dns_addr *addrs, size_t n,
                  uint32_t ttl_s, int64_t now);

void dnscache_stats(const struct dnscache *c, struct dnscache_stats *out);

#endif
