#include "guard.h"

#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>

/* ---- keys --------------------------------------------------------------- */

static void key_of(const struct sockaddr_storage *peer, int v4_bits, int v6_bits,
                   struct guard_key *out)
{
	memset(out, 0, sizeof *out);
	const uint8_t *a;
	int bits;
	if (peer->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)peer;
		a = s6->sin6_addr.s6_addr;
		bits = IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr) ? 96 + v4_bits : v6_bits;
		memcpy(out->b, a, (size_t)bits / 8);
		return;
	}
	if (peer->ss_family != AF_INET)
		return; /* unix sockets and the like: one key for all */
	a = (const uint8_t *)&((const struct sockaddr_in *)peer)->sin_addr;
	out->b[10] = out->b[11] = 0xff;
	memcpy(out->b + 12, a, (size_t)v4_bits / 8);
}

void guard_source_key(const struct sockaddr_storage *peer, struct guard_key *out)
{
	key_of(peer, 32, 64, out);
}

void guard_network_key(const struct sockaddr_storage *peer, struct guard_key *out)
{
	key_of(peer, 24, 48, out);
}

/* SipHash-2-4: keyed, so that bucket collisions cannot be chosen. */
static uint64_t rotl(uint64_t x, int b)
{
	return (x << b) | (x >> (64 - b));
}

#define SIPROUND                                                                                   \
	do {                                                                                       \
		v0 += v1;                                                                          \
		v1 = rotl(v1, 13);                                                                 \
		v1 ^= v0;                                                                          \
		v0 = rotl(v0, 32);                                                                 \
		v2 += v3;                                                                          \
		v3 = rotl(v3, 16);                                                                 \
		v3 ^= v2;                                                                          \
		v0 += v3;                                                                          \
		v3 = rotl(v3, 21);                                                                 \
		v3 ^= v0;                                                                          \
		v2 += v1;                                                                          \
		v1 = rotl(v1, 17);                                                                 \
		v1 ^= v2;                                                                          \
		v2 = rotl(v2, 32);                                                                 \
	} while (0)

static uint64_t siphash(const uint64_t k[2], const uint8_t *p, size_t n)
{
	uint64_t v0 = 0x736f6d6570736575ull ^ k[0], v1 = 0x646f72616e646f6dull ^ k[1];
	uint64_t v2 = 0x6c7967656e657261ull ^ k[0], v3 = 0x7465646279746573ull ^ k[1];
	uint64_t b = (uint64_t)n << 56;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t m;
		memcpy(&m, p + i, 8);
		v3 ^= m;
		SIPROUND;
		SIPROUND;
		v0 ^= m;
	}
	for (size_t j = 0; i + j < n; j++)
		b |= (uint64_t)p[i + j] << (8 * j);
	v3 ^= b;
	SIPROUND;
	SIPROUND;
	v0 ^= b;
	v2 ^= 0xff;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	SIPROUND;
	return v0 ^ v1 ^ v2 ^ v3;
}

static uint64_t hash_key(const uint64_t seed[2], const struct guard_key *k, const char *name)
{
	uint8_t buf[sizeof k->b + 256];
	size_t n = name ? strnlen(name, 255) : 0;
	memcpy(buf, k->b, sizeof k->b);
	memcpy(buf + sizeof k->b, name ? name : "", n);
	uint64_t h = siphash(seed, buf, sizeof k->b + n);
	return h ? h : 1; /* 0 marks a free record */
}

/* ---- back-off tables ---------------------------------------------------- */

void guard_table_init(struct guard_table *t, const uint8_t seed[16])
{
	memset(t, 0, sizeof *t);
	memcpy(t->seed, seed, sizeof t->seed);
}

uint64_t guard_hash(const struct guard_table *t, const struct guard_key *k, const char *name)
{
	return hash_key(t->seed, k, name);
}

int64_t guard_delay(uint32_t fails)
{
	if (fails < GUARD_FREE_FAILS)
		return 0;
	uint32_t k = fails - GUARD_FREE_FAILS;
	int64_t d = k >= 16 ? GUARD_MAX_MS : (int64_t)GUARD_BASE_MS << k;
	return d < GUARD_MAX_MS ? d : GUARD_MAX_MS;
}

/* Forget one failure per GUARD_FORGET_MS since the record last changed. */
static void decay(struct guard_rec *r, int64_t now)
{
	if (now <= r->seen)
		return;
	int64_t steps = (now - r->seen) / GUARD_FORGET_MS;
	if (steps <= 0)
		return;
	r->fails = steps >= r->fails ? 0 : r->fails - (uint32_t)steps;
	r->seen += steps * GUARD_FORGET_MS;
}

static bool useless(const struct guard_rec *r, int64_t now)
{
	return r->key == 0 || (r->fails == 0 && r->inflight == 0 && r->next_at <= now);
}

/* The record of h; with create, one is made, replacing the least useful
 * of a full bucket (the fewest failures, then the oldest). */
static struct guard_rec *find(struct guard_table *t, uint64_t h, int64_t now, bool create)
{
	struct guard_rec *b = t->rec[h % GUARD_BUCKETS], *victim = NULL;
	for (int i = 0; i < GUARD_WAYS; i++) {
		if (b[i].key == h) {
			decay(&b[i], now);
			return &b[i];
		}
	}
	if (!create)
		return NULL;
	for (int i = 0; i < GUARD_WAYS; i++) {
		struct guard_rec *r = &b[i];
		if (r->key)
			decay(r, now);
		if (useless(r, now)) {
			victim = r;
			break;
		}
		if (!victim || r->fails < victim->fails ||
		    (r->fails == victim->fails && r->seen < victim->seen))
			victim = r;
	}
	if (!useless(victim, now))
		t->replaced++;
	*victim = (struct guard_rec){.key = h, .seen = now};
	return victim;
}

int64_t guard_admit(struct guard_table *t, uint64_t h, int64_t now)
{
	struct guard_rec *r = find(t, h, now, false);
	if (!r)
		return now;
	int64_t d = guard_delay(r->fails);
	if (d == 0)
		return now;
	int64_t at = r->next_at > now ? r->next_at : now;
	r->next_at = at + d;
	return at;
}

int64_t guard_hold_until(struct guard_table *t, uint64_t h, int64_t now)
{
	struct guard_rec *r = find(t, h, now, false);
	return !r || r->next_at <= now ? now : r->next_at;
}

void guard_reserve(struct guard_table *t, uint64_t h, int64_t now)
{
	struct guard_rec *r = find(t, h, now, true);
	if (r->inflight < UINT32_MAX)
		r->inflight++;
	uint32_t n = r->fails + r->inflight < r->fails ? UINT32_MAX : r->fails + r->inflight;
	int64_t at = now + guard_delay(n);
	if (r->next_at < at)
		r->next_at = at;
}

void guard_done(struct guard_table *t, uint64_t h, int64_t now)
{
	struct guard_rec *r = find(t, h, now, false);
	if (r && r->inflight)
		r->inflight--;
}

void guard_fail(struct guard_table *t, uint64_t h, int64_t now)
{
	struct guard_rec *r = find(t, h, now, true);
	if (r->fails < UINT32_MAX)
		r->fails++;
	r->seen = now;
	int64_t at = now + guard_delay(r->fails);
	if (r->next_at < at)
		r->next_at = at;
}

uint32_t guard_fails(struct guard_table *t, uint64_t h, int64_t now)
{
	struct guard_rec *r = find(t, h, now, false);
	return r ? r->fails : 0;
}

/* ---- connection counts -------------------------------------------------- */

struct guard_count {
	struct guard_count *next;
	struct guard_key key;
	uint32_t n;
};

void guard_counts_init(struct guard_counts *c, const uint8_t seed[16])
{
	memset(c, 0, sizeof *c);
	memcpy(c->seed, seed, sizeof c->seed);
}

void guard_counts_free(struct guard_counts *c)
{
	for (size_t i = 0; i < GUARD_BUCKETS; i++)
		while (c->bucket[i]) {
			struct guard_count *n = c->bucket[i];
			c->bucket[i] = n->next;
			free(n);
		}
}

static struct guard_count **slot_of(const struct guard_counts *c, const struct guard_key *k)
{
	struct guard_count *const *pp = &c->bucket[hash_key(c->seed, k, NULL) % GUARD_BUCKETS];
	while (*pp && memcmp((*pp)->key.b, k->b, sizeof k->b) != 0)
		pp = &(*pp)->next;
	return (struct guard_count **)pp;
}

bool guard_enter(struct guard_counts *c, const struct guard_key *k, uint32_t cap)
{
	struct guard_count **pp = slot_of(c, k);
	if (!*pp) {
		*pp = calloc(1, sizeof **pp);
		if (!*pp)
			return false;
		(*pp)->key = *k;
	}
	if (cap && (*pp)->n >= cap)
		return false;
	(*pp)->n++;
	return true;
}

void guard_leave(struct guard_counts *c, const struct guard_key *k)
{
	struct guard_count **pp = slot_of(c, k);
	struct guard_count *n = *pp;
	if (!n)
		return;
	if (--n->n == 0) {
		*pp = n->next;
		free(n);
	}
}

uint32_t guard_count(const struct guard_counts *c, const struct guard_key *k)
{
	struct guard_count *const *pp = slot_of(c, k);
	return *pp ? (*pp)->n : 0;
}
