/*
 * guard: the bookkeeping that keeps login floods from locking users out.
 *
 * - Source keys: a client address reduced to what one party usually holds
 *   (IPv4 /32, IPv6 /64; an IPv4-mapped IPv6 address counts as IPv4).
 * - Back-off tables: failures per key, forgotten one every
 *   GUARD_FORGET_MS.  After GUARD_FREE_FAILS failures a key's attempts are
 *   spaced: each may start no sooner than GUARD_BASE_MS << (failures -
 *   GUARD_FREE_FAILS) (at most GUARD_MAX_MS) after the previous one or the
 *   last failure.  The caller holds the attempt until then (a timer, never
 *   a sleep).  Fixed size: GUARD_BUCKETS buckets of GUARD_WAYS records,
 *   the least useful record of a full bucket is replaced (and counted).
 * - Connection counts: sessions per source key that have not finished
 *   authentication, exact, one node per source with at least one.
 *
 * Pure data and arithmetic on times given by the caller, no I/O: unit
 * tested alone.  One thread (the worker's loop).
 */
#ifndef SOCKS5D_GUARD_H
#define SOCKS5D_GUARD_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#define GUARD_FREE_FAILS 3
#define GUARD_BASE_MS 250
#define GUARD_MAX_MS 4000
#define GUARD_FORGET_MS 10000
#define GUARD_BUCKETS 1024
#define GUARD_WAYS 4

/* 16 bytes: IPv4 as ::ffff:a.b.c.d, IPv6 with the host half zeroed. */
struct guard_key {
	uint8_t b[16];
};

/* The source key of a peer (/32 or /64), and the wider network the
 * per-user back-off is kept for (/24 or /48). */
void guard_source_key(const struct sockaddr_storage *peer, struct guard_key *out);
void guard_network_key(const struct sockaddr_storage *peer, struct guard_key *out);

struct guard_rec {
	uint64_t key; /* 0: free */
	uint32_t fails;
	uint32_t inflight; /* checks started and not answered yet (reserve .. done) */
	int64_t seen;    /* last failure or decay step (ms) */
	int64_t next_at; /* the next attempt starts no sooner (ms) */
};

struct guard_table {
	uint64_t seed[2];
	uint64_t replaced; /* records with failures dropped for room */
	struct guard_rec rec[GUARD_BUCKETS][GUARD_WAYS];
};

/* seed: random bytes, so that nobody can choose keys that share a bucket. */
void guard_table_init(struct guard_table *t, const uint8_t seed[16]);
/* A keyed 64-bit hash of a key and an optional name (NULL: none). */
uint64_t guard_hash(const struct guard_table *t, const struct guard_key *k, const char *name);
/* When an attempt under this hash may start (>= now); reserves that
 * moment, so that attempts in a row are spaced by the back-off. */
int64_t guard_admit(struct guard_table *t, uint64_t h, int64_t now);
/* When an attempt under this hash may start (>= now): the last failure
 * plus its back-off, or the moment the last check under it started plus
 * the back-off.  Reserves nothing: attempts abandoned while they wait
 * cannot push the moment out (used for the per-user key, which others can
 * reach); guard_reserve() is called when a check really starts. */
int64_t guard_hold_until(struct guard_table *t, uint64_t h, int64_t now);
/* A check under this hash starts now.  Checks not answered yet count as
 * failures to come: past the free ones, the next start waits the back-off
 * of failures plus checks in flight.  Each reserve has one guard_done. */
void guard_reserve(struct guard_table *t, uint64_t h, int64_t now);
/* A check reserved under this hash is answered (after guard_fail, if it
 * failed) or dropped. */
void guard_done(struct guard_table *t, uint64_t h, int64_t now);
/* A failed attempt. */
void guard_fail(struct guard_table *t, uint64_t h, int64_t now);
/* Failures on record (after decay). */
uint32_t guard_fails(struct guard_table *t, uint64_t h, int64_t now);
/* The back-off after this many failures (0 below GUARD_FREE_FAILS). */
int64_t guard_delay(uint32_t fails);

/* Sessions per source that have not finished authentication. */
struct guard_count;
struct guard_counts {
	struct guard_count *bucket[GUARD_BUCKETS];
	uint64_t seed[2];
};
void guard_counts_init(struct guard_counts *c, const uint8_t seed[16]);
void guard_counts_free(struct guard_counts *c);
/* Count one more for k unless k already has cap (0: no cap) or memory is
 * short: false, nothing counted. */
bool guard_enter(struct guard_counts *c, const struct guard_key *k, uint32_t cap);
void guard_leave(struct guard_counts *c, const struct guard_key *k);
uint32_t guard_count(const struct guard_counts *c, const struct guard_key *k);

#endif
