#include "dnscache.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct lru_link {
	struct lru_link *lru_prev, *lru_next; /* most recent at the head */
};

struct centry {
	struct lru_link link; /* first: a link is its entry */
	struct centry *hnext; /* hash chain */
	uint32_t hash;
	int64_t expires;
	size_t naddrs;
	char name[DNS_MAX_NAME + 1];
	struct dns_addr addrs[]; /* naddrs of them: a negative entry is small */
};

struct dnscache {
	size_t capacity, count;
	size_t nbuckets; /* a power of two */
	struct centry **buckets;
	struct lru_link lru; /* sentinel */
	struct dnscache_stats st;
};

static uint32_t hash_name(const char *s)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return h;
}

static void lru_unlink(struct centry *e)
{
	e->link.lru_prev->lru_next = e->link.lru_next;
	e->link.lru_next->lru_prev = e->link.lru_prev;
}

static void lru_push_front(struct dnscache *c, struct centry *e)
{
	e->link.lru_next = c->lru.lru_next;
	e->link.lru_prev = &c->lru;
	c->lru.lru_next->lru_prev = &e->link;
	c->lru.lru_next = &e->link;
}

static struct centry *entry_of(struct lru_link *l)
{
	return (struct centry *)(void *)l;
}

static struct centry **find_slot(struct dnscache *c, const char *name, uint32_t h)
{
	struct centry **pp = &c->buckets[h & (c->nbuckets - 1)];
	while (*pp && ((*pp)->hash != h || strcmp((*pp)->name, name) != 0))
		pp = &(*pp)->hnext;
	return pp;
}

static void remove_entry(struct dnscache *c, struct centry *e)
{
	struct centry **pp = find_slot(c, e->name, e->hash);
	if (*pp == e)
		*pp = e->hnext;
	lru_unlink(e);
	c->count--;
	free(e);
}

static int resize(struct dnscache *c, size_t capacity)
{
	size_t nb = 16;
	while (nb < capacity && nb < ((size_t)1 << 24))
		nb <<= 1;
	if (c->buckets && nb == c->nbuckets)
		return 0;
	struct centry **b = calloc(nb, sizeof *b);
	if (!b)
		return -ENOMEM;
	for (struct lru_link *l = c->lru.lru_next; l != &c->lru; l = l->lru_next) {
		struct centry *e = entry_of(l);
		e->hnext = b[e->hash & (nb - 1)];
		b[e->hash & (nb - 1)] = e;
	}
	free(c->buckets);
	c->buckets = b;
	c->nbuckets = nb;
	return 0;
}

int dnscache_new(size_t capacity, struct dnscache **out)
{
	struct dnscache *c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	c->lru.lru_next = c->lru.lru_prev = &c->lru;
	c->capacity = capacity;
	if (resize(c, capacity) < 0) {
		free(c);
		return -ENOMEM;
	}
	*out = c;
	return 0;
}

void dnscache_clear(struct dnscache *c)
{
	while (c->lru.lru_next != &c->lru)
		remove_entry(c, entry_of(c->lru.lru_next));
}

void dnscache_free(struct dnscache *c)
{
	if (!c)
		return;
	dnscache_clear(c);
	free(c->buckets);
	free(c);
}

void dnscache_set_capacity(struct dnscache *c, size_t capacity)
{
	c->capacity = capacity;
	while (c->count > capacity) {
		remove_entry(c, entry_of(c->lru.lru_prev));
		c->st.evictions++;
	}
	/* On failure the old table stays: longer chains, still correct. */
	(void)resize(c, capacity);
}

enum dnscache_status dnscache_get(struct dnscache *c, const char *name, int64_t now,
                                  struct dns_addr *addrs, size_t max, size_t *n)
{
	*n = 0;
	uint32_t h = hash_name(name);
	struct centry *e = *find_slot(c, name, h);
	if (!e) {
		c->st.misses++;
		return DNSCACHE_MISS;
	}
	if (e->expires <= now) {
		remove_entry(c, e);
		c->st.expirations++;
		c->st.misses++;
		return DNSCACHE_MISS;
	}
	lru_unlink(e);
	lru_push_front(c, e);
	c->st.hits++;
	if (e->naddrs == 0)
		return DNSCACHE_NEGATIVE;
	size_t k = e->naddrs < max ? e->naddrs : max;
	memcpy(addrs, e->addrs, k * sizeof *addrs);
	*n = k;
	return DNSCACHE_POSITIVE;
}

void dnscache_put(struct dnscache *c, const char *name, const struct dns_addr *addrs, size_t n,
                  uint32_t ttl_s, int64_t now)
{
	size_t len = strlen(name);
	if (len > DNS_MAX_NAME)
		return;
	uint32_t h = hash_name(name);
	struct centry *e = *find_slot(c, name, h);
	if (e)
		remove_entry(c, e);
	if (ttl_s == 0 || c->capacity == 0)
		return;
	if (c->count >= c->capacity) {
		remove_entry(c, entry_of(c->lru.lru_prev));
		c->st.evictions++;
	}
	if (n > DNSCACHE_MAX_ADDRS)
		n = DNSCACHE_MAX_ADDRS;
	e = malloc(sizeof *e + n * sizeof *addrs);
	if (!e)
		return; /* a cache that cannot grow just misses */
	memcpy(e->name, name, len + 1);
	e->hash = h;
	e->expires = now + (int64_t)ttl_s * 1000;
	e->naddrs = n;
	if (n)
		memcpy(e->addrs, addrs, n * sizeof *addrs);
	struct centry **slot = &c->buckets[h & (c->nbuckets - 1)];
	e->hnext = *slot;
	*slot = e;
	lru_push_front(c, e);
	c->count++;
}

void dnscache_stats(const struct dnscache *c, struct dnscache_stats *out)
{
	*out = c->st;
	out->entries = c->count;
}
