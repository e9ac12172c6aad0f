/*
 * rules: parser, compiled matcher and default policy (see rules.h).
 *
 * Compiled form.  Every address is a 128-bit number, IPv4 as its mapped
 * IPv6 form (::ffff:a.b.c.d), so one index serves both families and a
 * mapped address matches the IPv4 rules.  The `to` CIDRs of the request
 * rules (and the `from` CIDRs of the client rules) cut the address space
 * into elementary intervals, sorted: one binary search finds an address's
 * interval, which holds the ascending list of the rules whose CIDR covers
 * it.  Names and .suffixes live in two hash tables keyed by the name; the
 * hash runs from the last byte of a name to its first, so one pass over a
 * requested name yields the hash of every suffix that starts at a label.
 * A decision merges these ascending lists (plus the rules without a
 * destination) and checks the remaining fields of each candidate in
 * order: the first that matches is the first rule of the file that
 * matches.
 */
#include "rules.h"
#include "limits.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef unsigned __int128 u128;

#define U128_MAX (~(u128)0)
#define NAME_MAX_LEN 255
#define GROUP_MEMBERS_MAX 1024
/* Bound of the rules' user lists together (distinct users and group
 * members per rule): 4 MiB of uids. */
#define USER_ENTRIES_MAX (1u << 20)
/* Bound of the interval lists (entries), whatever the overlap of CIDRs. */
#define INDEX_ENTRIES_MAX (8u << 20)

struct range {
	u128 lo, hi;
};

struct port_range {
	uint16_t lo, hi;
};

struct rule {
	uint8_t action; /* RULES_PASS or RULES_BLOCK */
	bool client;
	uint8_t cmds; /* bit per enum rules_cmd */
	bool has_to;
	bool has_users;
	uint32_t line;
	char *text;
	struct range *from;
	uint32_t nfrom;
	struct port_range *ports;
	uint32_t nports;
	uint32_t *uids; /* sorted */
	uint32_t nuids;
	struct rules_match m; /* what a match returns */
};

/* Elementary intervals: bounds[i] starts interval i, which ends where the
 * next starts; list[off[i] .. off[i+1]) are its rules, ascending. */
struct cidr_index {
	size_t n;
	u128 *bounds;
	uint32_t *off;
	uint16_t *list;
};

struct name_slot {
	char *key; /* NULL: empty */
	uint64_t hash;
	uint32_t off, n;
};

struct name_table {
	size_t mask; /* capacity - 1, 0: empty table */
	struct name_slot *slots;
	uint16_t *list;
};

struct group {
	char *name;
	char **members;
	uint32_t n;
	uint32_t *uids; /* the members' uids, once a rule names the group */
};

struct rules {
	size_t n;
	struct rule *v;
	uint32_t nclient;
	struct cidr_index dest, client_from;
	uint16_t *dest_any, *dest_cidr, *client_any;
	uint32_t ndest_any, ndest_cidr, nclient_any;
	struct name_table exact, suffix;
	struct name_table users; /* interned user names: off = uid */
	struct range *self;
	size_t nself;
	uint16_t self_port;
	bool has_ext4, has_ext6;
	uint8_t ext4[4], ext6[16];
};

/* ---- addresses ------------------------------------------------------------ */

static u128 from_bytes(const uint8_t b[16])
{
	u128 v = 0;
	for (int i = 0; i < 16; i++)
		v = v << 8 | b[i];
	return v;
}

static u128 mapped4(const uint8_t b[4])
{
	return (u128)0xffff << 32 | (u128)((uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 |
	                                   (uint32_t)b[2] << 8 | b[3]);
}

static bool sa_to_u128(const struct sockaddr *sa, u128 *out)
{
	if (sa->sa_family == AF_INET) {
		*out = mapped4((const uint8_t *)&((const struct sockaddr_in *)sa)->sin_addr);
		return true;
	}
	if (sa->sa_family == AF_INET6) {
		*out = from_bytes(((const struct sockaddr_in6 *)sa)->sin6_addr.s6_addr);
		return true;
	}
	return false;
}

static u128 prefix_mask(unsigned plen)
{
	return plen == 0 ? 0 : U128_MAX << (128 - plen);
}

static struct range cidr_range(u128 a, unsigned plen)
{
	u128 m = prefix_mask(plen);
	return (struct range){a & m, (a & m) | ~m};
}

/* ADDR or ADDR/PREFIX into a range; IPv4 as mapped. */
static bool parse_cidr(const char *s, struct range *r)
{
	char buf[INET6_ADDRSTRLEN + 8];
	size_t len = strlen(s);
	if (len == 0 || len >= sizeof buf)
		return false;
	memcpy(buf, s, len + 1);
	char *slash = strchr(buf, '/');
	long plen = -1;
	if (slash) {
		*slash = '\0';
		char *end;
		if (slash[1] < '0' || slash[1] > '9')
			return false;
		plen = strtol(slash + 1, &end, 10);
		if (*end || plen > 128)
			return false;
	}
	uint8_t b[16];
	if (inet_pton(AF_INET, buf, b) == 1) {
		if (plen > 32)
			return false;
		*r = cidr_range(mapped4(b), (unsigned)(96 + (plen < 0 ? 32 : plen)));
		return true;
	}
	if (inet_pton(AF_INET6, buf, b) == 1) {
		*r = cidr_range(from_bytes(b), (unsigned)(plen < 0 ? 128 : plen));
		return true;
	}
	return false;
}

static bool in_range(const struct range *r, u128 a)
{
	return r->lo <= a && a <= r->hi;
}

/* ---- hashing and name tables ---------------------------------------------- */

/* FNV-1a over the bytes from the last to the first, lower-cased: the
 * running value at a label's start is the hash of that suffix. */
#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t hash_step(uint64_t h, unsigned char c)
{
	return (h ^ (unsigned char)tolower(c)) * FNV_PRIME;
}

static uint64_t hash_str(const char *s, size_t n)
{
	uint64_t h = FNV_OFFSET;
	while (n--)
		h = hash_step(h, (unsigned char)s[n]);
	return h;
}

/* Names fold case; user names (exact) do not. */
static const struct name_slot *table_find(const struct name_table *t, const char *s, size_t n,
                                          uint64_t h, bool exact)
{
	if (!t->mask)
		return NULL;
	for (size_t i = h & t->mask;; i = (i + 1) & t->mask) {
		const struct name_slot *e = &t->slots[i];
		if (!e->key)
			return NULL;
		if (e->hash == h && strlen(e->key) == n &&
		    (exact ? memcmp(e->key, s, n) : strncasecmp(e->key, s, n)) == 0)
			return e;
	}
}

/* One (key, rule) pair while building. */
struct pair {
	char *key;
	uint16_t rule;
};

static int pair_cmp(const void *a, const void *b)
{
	const struct pair *x = a, *y = b;
	int c = strcmp(x->key, y->key);
	return c ? c : (int)x->rule - (int)y->rule;
}

/* Build a table from pairs (keys lower-case; the table takes the keys). */
static int table_build(struct name_table *t, struct pair *p, size_t n)
{
	memset(t, 0, sizeof *t);
	if (n == 0) {
		return 0;
	}
	qsort(p, n, sizeof *p, pair_cmp);
	size_t cap = 4;
	while (cap < 2 * n)
		cap <<= 1;
	t->slots = calloc(cap, sizeof *t->slots);
	t->list = malloc(n * sizeof *t->list);
	if (!t->slots || !t->list)
		return -ENOMEM;
	t->mask = cap - 1;
	uint32_t out = 0;
	for (size_t i = 0; i < n;) {
		size_t j = i;
		uint32_t off = out;
		for (; j < n && strcmp(p[j].key, p[i].key) == 0; j++)
			if (out == off || t->list[out - 1] != p[j].rule)
				t->list[out++] = p[j].rule;
		uint64_t h = hash_str(p[i].key, strlen(p[i].key));
		size_t k = h & t->mask;
		while (t->slots[k].key)
			k = (k + 1) & t->mask;
		t->slots[k] = (struct name_slot){p[i].key, h, off, out - off};
		for (size_t d = i + 1; d < j; d++)
			free(p[d].key);
		for (size_t d = i; d < j; d++)
			p[d].key = NULL;
		i = j;
	}
	return 0;
}

static void table_free(struct name_table *t)
{
	for (size_t i = 0; t->slots && i <= t->mask; i++)
		free(t->slots[i].key);
	free(t->slots);
	free(t->list);
	memset(t, 0, sizeof *t);
}

/* ---- interval index ------------------------------------------------------- */

struct cidr_item {
	struct range r;
	uint16_t rule;
};

static int u128_cmp(const void *a, const void *b)
{
	u128 x = *(const u128 *)a, y = *(const u128 *)b;
	return x < y ? -1 : x > y;
}

static int u16_cmp(const void *a, const void *b)
{
	return (int)*(const uint16_t *)a - (int)*(const uint16_t *)b;
}

/* The interval holding a: the last bound <= a (bounds[0] is 0). */
static size_t interval_of(const struct cidr_index *x, u128 a)
{
	size_t lo = 0, hi = x->n;
	while (hi - lo > 1) {
		size_t mid = (lo + hi) / 2;
		if (x->bounds[mid] <= a)
			lo = mid;
		else
			hi = mid;
	}
	return lo;
}

static int index_build(struct cidr_index *x, const struct cidr_item *it, size_t n)
{
	memset(x, 0, sizeof *x);
	if (n == 0)
		return 0;
	u128 *b = malloc((2 * n + 1) * sizeof *b);
	if (!b)
		return -ENOMEM;
	size_t nb = 0;
	b[nb++] = 0;
	for (size_t i = 0; i < n; i++) {
		b[nb++] = it[i].r.lo;
		if (it[i].r.hi != U128_MAX)
			b[nb++] = it[i].r.hi + 1;
	}
	qsort(b, nb, sizeof *b, u128_cmp);
	size_t k = 0;
	for (size_t i = 0; i < nb; i++)
		if (k == 0 || b[k - 1] != b[i])
			b[k++] = b[i];
	x->n = k;
	x->bounds = b;
	x->off = calloc(k + 1, sizeof *x->off);
	if (!x->off)
		return -ENOMEM;
	/* Count, then fill: each CIDR covers the intervals from its start's
	 * to the one before its end's. */
	size_t total = 0;
	for (size_t i = 0; i < n; i++) {
		size_t a = interval_of(x, it[i].r.lo);
		size_t e = it[i].r.hi == U128_MAX ? k : interval_of(x, it[i].r.hi + 1);
		total += e - a;
		if (total > INDEX_ENTRIES_MAX)
			return -E2BIG;
		for (size_t j = a; j < e; j++)
			x->off[j + 1]++;
	}
	for (size_t j = 0; j < k; j++)
		x->off[j + 1] += x->off[j];
	x->list = malloc((total ? total : 1) * sizeof *x->list);
	uint32_t *fill = malloc(k * sizeof *fill);
	if (!x->list || !fill) {
		free(fill);
		return -ENOMEM;
	}
	memcpy(fill, x->off, k * sizeof *fill);
	for (size_t i = 0; i < n; i++) {
		size_t a = interval_of(x, it[i].r.lo);
		size_t e = it[i].r.hi == U128_MAX ? k : interval_of(x, it[i].r.hi + 1);
		for (size_t j = a; j < e; j++)
			x->list[fill[j]++] = it[i].rule;
	}
	free(fill);
	/* Ascending, without repeats (a rule may list overlapping CIDRs). */
	uint32_t out = 0;
	for (size_t j = 0; j < k; j++) {
		uint32_t s = x->off[j], e = x->off[j + 1];
		qsort(x->list + s, e - s, sizeof *x->list, u16_cmp);
		x->off[j] = out;
		for (uint32_t i = s; i < e; i++)
			if (i == s || x->list[i] != x->list[i - 1])
				x->list[out++] = x->list[i];
	}
	x->off[k] = out;
	return 0;
}

static void index_free(struct cidr_index *x)
{
	free(x->bounds);
	free(x->off);
	free(x->list);
	memset(x, 0, sizeof *x);
}

/* ---- parsing ------------------------------------------------------------------ */

struct parse {
	struct rules *rs;
	char *err;
	size_t errlen;
	unsigned nerrors;
	uint32_t line;
	struct group *groups;
	size_t ngroups;
	struct cidr_item *dest_items, *client_items;
	size_t ndest_items, nclient_items, cap_dest, cap_client;
	struct pair *exact, *suffix;
	size_t nexact, nsuffix, cap_exact, cap_suffix;
	/* users: rs->users interns the names (uid = off); seen[uid] is the
	 * number of the last rule that listed the uid */
	size_t nuser_names, cap_seen, nuser_entries;
	uint32_t *seen;
};

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static int fail(struct parse *p, const char *fmt, ...)
{
	if (p->nerrors++ == 0 && p->err && p->errlen) {
		int n = snprintf(p->err, p->errlen, "%u: ", p->line);
		if (n >= 0 && (size_t)n < p->errlen) {
			va_list ap;
			va_start(ap, fmt);
			vsnprintf(p->err + n, p->errlen - (size_t)n, fmt, ap);
			va_end(ap);
		}
	}
	return -EINVAL;
}

static int grow(void **v, size_t *cap, size_t n, size_t size)
{
	if (n < *cap)
		return 0;
	size_t nc = *cap ? *cap * 2 : 16;
	void *nv = realloc(*v, nc * size);
	if (!nv)
		return -ENOMEM;
	*v = nv;
	*cap = nc;
	return 0;
}

static int add_pair(struct pair **v, size_t *n, size_t *cap, const char *key, size_t klen,
                    uint16_t rule, bool fold)
{
	if (grow((void **)v, cap, *n, sizeof **v) < 0)
		return -ENOMEM;
	char *k = malloc(klen + 1);
	if (!k)
		return -ENOMEM;
	for (size_t i = 0; i < klen; i++)
		k[i] = fold ? (char)tolower((unsigned char)key[i]) : key[i];
	k[klen] = '\0';
	(*v)[*n] = (struct pair){k, rule};
	(*n)++;
	return 0;
}

/* Words of a line: split at blanks; a word that ends with ',' or a word
 * that starts with ',' joins its neighbour, so "a, b" and "a ,b" are one
 * list.  '#' at a word's start ends the line. */
#define WORDS_MAX 1024
struct words {
	char *v[WORDS_MAX];
	size_t n;
	char buf[4096 + 8];
};

static int split(struct parse *p, const char *line, struct words *w)
{
	size_t len = strlen(line);
	if (len >= sizeof w->buf)
		return fail(p, "line too long");
	char *b = w->buf;
	size_t o = 0;
	w->n = 0;
	for (size_t i = 0; i < len;) {
		while (i < len && (line[i] == ' ' || line[i] == '\t'))
			i++;
		if (i >= len || line[i] == '#')
			break;
		size_t s = i;
		while (i < len && line[i] != ' ' && line[i] != '\t')
			i++;
		bool join = w->n > 0 && (line[s] == ',' || (o >= 2 && b[o - 2] == ','));
		if (join) {
			o--; /* over the NUL of the previous word */
		} else {
			if (w->n == WORDS_MAX)
				return fail(p, "too many words");
			w->v[w->n++] = b + o;
		}
		memcpy(b + o, line + s, i - s);
		o += i - s;
		b[o++] = '\0';
	}
	return 0;
}

/* Next item of a comma list: copies it into item (NUL-terminated) and
 * advances *s; false at the end.  An empty item is an error. */
static int next_item(struct parse *p, const char **s, char *item, size_t cap, bool *got)
{
	*got = false;
	if (!**s)
		return 0;
	const char *c = strchr(*s, ',');
	size_t n = c ? (size_t)(c - *s) : strlen(*s);
	if (n == 0 || n >= cap)
		return fail(p, n ? "list item too long" : "empty item in a list");
	memcpy(item, *s, n);
	item[n] = '\0';
	*s += n + (c ? 1 : 0);
	if (c && !**s)
		return fail(p, "empty item in a list");
	*got = true;
	return 0;
}

static bool parse_u32(const char *s, uint32_t max, uint32_t *out)
{
	if (*s < '0' || *s > '9')
		return false;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end || v > max)
		return false;
	*out = (uint32_t)v;
	return true;
}

/* N with K, M or G (powers of 1024). */
/* A host name as a rule names it: letters, digits, '-', '_', labels of 1..63. */
static bool valid_name(const char *s, size_t n)
{
	if (n == 0 || n > 253)
		return false;
	size_t label = 0;
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return false;
			label = 0;
		} else if (c == '-' && label == 0) {
			return false;
		} else if (isalnum(c) || c == '-' || c == '_') {
			if (++label > 63)
				return false;
		} else {
			return false;
		}
	}
	return label > 0 && s[n - 1] != '-';
}

static struct group *find_group(const struct parse *p, const char *name)
{
	for (size_t i = 0; i < p->ngroups; i++)
		if (strcmp(p->groups[i].name, name) == 0)
			return &p->groups[i];
	return NULL;
}

/* The uid of a user name: its slot's off in rs->users, added if new. */
static int user_intern(struct parse *p, const char *name, uint32_t *uid)
{
	struct name_table *t = &p->rs->users;
	if (2 * (p->nuser_names + 1) > (t->slots ? t->mask + 1 : 0)) {
		size_t cap = t->slots ? 2 * (t->mask + 1) : 64;
		struct name_slot *ns = calloc(cap, sizeof *ns);
		if (!ns)
			return -ENOMEM;
		for (size_t i = 0; t->slots && i <= t->mask; i++) {
			if (!t->slots[i].key)
				continue;
			size_t k = t->slots[i].hash & (cap - 1);
			while (ns[k].key)
				k = (k + 1) & (cap - 1);
			ns[k] = t->slots[i];
		}
		free(t->slots);
		t->slots = ns;
		t->mask = cap - 1;
	}
	size_t kl = strlen(name);
	uint64_t h = hash_str(name, kl);
	size_t s = h & t->mask;
	/* user names are exact (case matters): compare bytes */
	while (t->slots[s].key && !(t->slots[s].hash == h && strcmp(t->slots[s].key, name) == 0))
		s = (s + 1) & t->mask;
	if (!t->slots[s].key) {
		if (grow((void **)&p->seen, &p->cap_seen, p->nuser_names, sizeof *p->seen) < 0)
			return -ENOMEM;
		char *k = strdup(name);
		if (!k)
			return -ENOMEM;
		p->seen[p->nuser_names] = 0;
		t->slots[s] = (struct name_slot){k, h, (uint32_t)p->nuser_names++, 0};
	}
	*uid = t->slots[s].off;
	return 0;
}

/* Add uid to the rule being parsed (the last one), once. */
static int add_uid(struct parse *p, struct rule *r, uint32_t uid, size_t *cap)
{
	uint32_t number = (uint32_t)p->rs->n;
	if (p->seen[uid] == number)
		return 0;
	if (p->nuser_entries >= USER_ENTRIES_MAX)
		return fail(p, "the rules name more than %u users together (each rule counts its "
		               "distinct users and group members)",
		            USER_ENTRIES_MAX);
	if (grow((void **)&r->uids, cap, r->nuids, sizeof *r->uids) < 0)
		return -ENOMEM;
	p->seen[uid] = number;
	p->nuser_entries++;
	r->uids[r->nuids++] = uid;
	return 0;
}

static int parse_to(struct parse *p, struct rule *r, uint16_t ri, const char *v)
{
	char item[NAME_MAX_LEN + 2];
	bool got;
	int rc;
	size_t count = 0;
	while ((rc = next_item(p, &v, item, sizeof item, &got)) == 0 && got) {
		if (++count > RULES_LIST_MAX)
			return fail(p, "more than %d destinations", RULES_LIST_MAX);
		struct range rg;
		size_t n = strlen(item);
		if (n > 1 && item[n - 1] == '.')
			item[--n] = '\0';
		if (parse_cidr(item, &rg)) {
			if (grow((void **)&p->dest_items, &p->cap_dest, p->ndest_items,
			         sizeof *p->dest_items) < 0)
				return -ENOMEM;
			p->dest_items[p->ndest_items++] = (struct cidr_item){rg, ri};
			r->has_to = true;
			continue;
		}
		bool suffix = item[0] == '.';
		if (!valid_name(item + suffix, n - suffix))
			return fail(p, "'%s' is not an address, CIDR, host name or .suffix", item);
		if (suffix ? add_pair(&p->suffix, &p->nsuffix, &p->cap_suffix, item + 1, n - 1, ri, true)
		           : add_pair(&p->exact, &p->nexact, &p->cap_exact, item, n, ri, true))
			return -ENOMEM;
		r->has_to = true;
	}
	return rc;
}

static int parse_from(struct parse *p, struct rule *r, uint16_t ri, const char *v)
{
	char item[INET6_ADDRSTRLEN + 8];
	bool got;
	int rc;
	size_t cap = 0;
	while ((rc = next_item(p, &v, item, sizeof item, &got)) == 0 && got) {
		if (r->nfrom >= RULES_LIST_MAX)
			return fail(p, "more than %d sources", RULES_LIST_MAX);
		struct range rg;
		if (!parse_cidr(item, &rg))
			return fail(p, "'%s' is not an address or CIDR", item);
		if (grow((void **)&r->from, &cap, r->nfrom, sizeof *r->from) < 0)
			return -ENOMEM;
		r->from[r->nfrom++] = rg;
		if (r->client) {
			if (grow((void **)&p->client_items, &p->cap_client, p->nclient_items,
			         sizeof *p->client_items) < 0)
				return -ENOMEM;
			p->client_items[p->nclient_items++] = (struct cidr_item){rg, ri};
		}
	}
	return rc;
}

static int parse_ports(struct parse *p, struct rule *r, const char *v)
{
	char item[16];
	bool got;
	int rc;
	size_t cap = 0;
	while ((rc = next_item(p, &v, item, sizeof item, &got)) == 0 && got) {
		if (r->nports >= RULES_LIST_MAX)
			return fail(p, "more than %d ports", RULES_LIST_MAX);
		uint32_t lo, hi;
		char *dash = strchr(item, '-');
		if (dash)
			*dash = '\0';
		if (!parse_u32(item, 65535, &lo) || (dash && !parse_u32(dash + 1, 65535, &hi)))
			return fail(p, "'%s%s%s' is not a port or range (N or N-M, 0..65535)", item,
			            dash ? "-" : "", dash ? dash + 1 : "");
		if (!dash)
			hi = lo;
		if (hi < lo)
			return fail(p, "port range %u-%u is empty", lo, hi);
		if (grow((void **)&r->ports, &cap, r->nports, sizeof *r->ports) < 0)
			return -ENOMEM;
		r->ports[r->nports++] = (struct port_range){(uint16_t)lo, (uint16_t)hi};
	}
	return rc;
}

static int parse_users(struct parse *p, struct rule *r, const char *v, bool group, size_t *cap)
{
	char item[SHM_USER_NAME_MAX + 1];
	bool got;
	int rc;
	size_t count = 0;
	while ((rc = next_item(p, &v, item, sizeof item, &got)) == 0 && got) {
		if (++count > RULES_LIST_MAX)
			return fail(p, "more than %d %s", RULES_LIST_MAX, group ? "groups" : "users");
		r->has_users = true;
		uint32_t uid;
		if (!group) {
			if ((rc = user_intern(p, item, &uid)) < 0 || (rc = add_uid(p, r, uid, cap)) < 0)
				return rc;
			continue;
		}
		struct group *g = find_group(p, item);
		if (!g)
			return fail(p, "unknown group '%s'", item);
		if (!g->uids && g->n) {
			if (!(g->uids = malloc(g->n * sizeof *g->uids)))
				return -ENOMEM;
			for (uint32_t i = 0; i < g->n; i++)
				if ((rc = user_intern(p, g->members[i], &g->uids[i])) < 0)
					return rc;
		}
		for (uint32_t i = 0; i < g->n; i++)
			if ((rc = add_uid(p, r, g->uids[i], cap)) < 0)
				return rc;
	}
	return rc;
}

static int parse_commands(struct parse *p, struct rule *r, const char *v)
{
	char item[16];
	bool got;
	int rc;
	r->cmds = 0;
	while ((rc = next_item(p, &v, item, sizeof item, &got)) == 0 && got) {
		if (strcmp(item, "connect") == 0)
			r->cmds |= 1u << RULES_CMD_CONNECT;
		else if (strcmp(item, "bind") == 0)
			r->cmds |= 1u << RULES_CMD_BIND;
		else if (strcmp(item, "udp") == 0)
			r->cmds |= 1u << RULES_CMD_UDP;
		else
			return fail(p, "'%s' is not a command (connect, bind or udp)", item);
	}
	return rc;
}

static bool parse_ip(const char *s, uint8_t *family, uint8_t out[16])
{
	if (inet_pton(AF_INET, s, out) == 1) {
		*family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, s, out) == 1) {
		*family = AF_INET6;
		return true;
	}
	return false;
}

/* A rule's identity for its limits: FNV-1a over its words (the rule as
 * written, blanks and comment aside), 64 bits, never 0.  The same rule in
 * the next set has the same identity, whatever its number. */
static uint64_t limit_ident(const struct words *w)
{
	uint64_t h = 0xcbf29ce484222325ull;
	for (size_t i = 0; i < w->n; i++)
		for (const unsigned char *c = (const unsigned char *)w->v[i];; c++) {
			h = (h ^ *c) * 0x100000001b3ull; /* the NUL separates the words */
			if (!*c)
				break;
		}
	return h ? h : 1;
}

/* Its tag, where its entry is looked for: the identity folded to 32 bits,
 * never 0. */
static uint32_t limit_tag(uint64_t ident)
{
	uint32_t t = (uint32_t)(ident ^ ident >> 32);
	return t ? t : 1;
}

static int parse_rule(struct parse *p, const char *line)
{
	struct words w;
	int rc = split(p, line, &w);
	if (rc < 0)
		return rc;
	if (p->rs->n >= RULES_MAX)
		return fail(p, "more than %d rules", RULES_MAX);
	struct rule *r = &p->rs->v[p->rs->n++];
	memset(r, 0, sizeof *r);
	uint16_t ri = (uint16_t)(p->rs->n - 1);
	r->line = p->line;
	r->text = strdup(line);
	if (!r->text)
		return -ENOMEM;
	r->cmds = 1u << RULES_CMD_CONNECT | 1u << RULES_CMD_BIND | 1u << RULES_CMD_UDP;
	size_t i = 0;
	if (strcmp(w.v[0], "client") == 0) {
		r->client = true;
		p->rs->nclient++;
		i++;
	}
	if (i >= w.n || (strcmp(w.v[i], "pass") != 0 && strcmp(w.v[i], "block") != 0))
		return fail(p, "a rule starts with %spass or block", r->client ? "client " : "");
	r->action = w.v[i][0] == 'p' ? RULES_PASS : RULES_BLOCK;
	i++;
	unsigned seen = 0;
	size_t ucap = 0;
	for (; i < w.n; i++) {
		static const char *const keys[] = {"from",  "to",           "port", "user",
		                                   "group", "command",      "log",  "max-sessions",
		                                   "rate",  "via",          NULL};
		size_t k;
		for (k = 0; keys[k] && strcmp(keys[k], w.v[i]) != 0; k++)
			;
		if (!keys[k])
			return fail(p, "unknown word '%s'", w.v[i]);
		if (seen & (1u << k))
			return fail(p, "'%s' given twice", keys[k]);
		seen |= 1u << k;
		if (r->client && k != 0 && k != 2 && k != 6)
			return fail(p, "a client rule takes only from, port and log, not '%s'", keys[k]);
		if (k == 6) {
			r->m.log = true;
			continue;
		}
		if (i + 1 >= w.n)
			return fail(p, "'%s' needs a value", keys[k]);
		const char *v = w.v[++i];
		switch (k) {
		case 0:
			rc = parse_from(p, r, ri, v);
			break;
		case 1:
			rc = parse_to(p, r, ri, v);
			break;
		case 2:
			rc = parse_ports(p, r, v);
			break;
		case 3:
		case 4:
			rc = parse_users(p, r, v, k == 4, &ucap);
			break;
		case 5:
			rc = parse_commands(p, r, v);
			break;
		case 7:
			if (!parse_u32(v, 1000000, &r->m.max_sessions) || r->m.max_sessions == 0)
				return fail(p, "max-sessions '%s' is not an integer in 1..1000000", v);
			break;
		case 8: {
			uint64_t rate[2];
			if (limits_parse_rates(v, rate) < 0 || (!rate[LIMIT_IN] && !rate[LIMIT_OUT]))
				return fail(p,
				            "rate '%s' is not IN[/OUT] in bytes per second (e.g. 1M, 512K/1M)",
				            v);
			r->m.rate_in = rate[LIMIT_IN];
			r->m.rate_out = rate[LIMIT_OUT];
			break;
		}
		case 9:
			if (!parse_ip(v, &r->m.via_family, r->m.via))
				return fail(p, "via '%s' is not an IPv4 or IPv6 address", v);
			break;
		}
		if (rc < 0)
			return rc;
	}
	r->m.action = r->action;
	r->m.number = (uint32_t)p->rs->n;
	if ((r->m.max_sessions || r->m.rate_in || r->m.rate_out) && r->m.number > LIMITS_MAX_RULES)
		return fail(p, "only the first %d rules can carry max-sessions or rate",
		            LIMITS_MAX_RULES);
	r->m.line = r->line;
	r->m.limit_ident = limit_ident(&w);
	r->m.limit_tag = limit_tag(r->m.limit_ident);
	return 0;
}

/* group = NAME: USER, USER ... */
static int parse_group(struct parse *p, const char *v)
{
	const char *colon = strchr(v, ':');
	if (!colon || colon == v)
		return fail(p, "expected 'group = NAME: USER, USER, ...'");
	size_t nlen = (size_t)(colon - v);
	while (nlen && (v[nlen - 1] == ' ' || v[nlen - 1] == '\t'))
		nlen--;
	char name[64];
	if (nlen == 0 || nlen >= sizeof name)
		return fail(p, "a group name has 1..63 bytes");
	memcpy(name, v, nlen);
	name[nlen] = '\0';
	if (strpbrk(name, " \t,"))
		return fail(p, "the group name '%s' holds a blank or a comma", name);
	if (find_group(p, name))
		return fail(p, "group '%s' defined twice", name);
	if (p->ngroups >= RULES_GROUPS_MAX)
		return fail(p, "more than %d groups", RULES_GROUPS_MAX);
	struct words w;
	int rc = split(p, colon + 1, &w);
	if (rc < 0)
		return rc;
	struct group *g = &p->groups[p->ngroups];
	memset(g, 0, sizeof *g);
	g->name = strdup(name);
	if (!g->name)
		return -ENOMEM;
	p->ngroups++;
	for (size_t i = 0; i < w.n; i++) {
		const char *s = w.v[i];
		char item[SHM_USER_NAME_MAX + 1];
		bool got;
		while ((rc = next_item(p, &s, item, sizeof item, &got)) == 0 && got) {
			if (g->n >= GROUP_MEMBERS_MAX)
				return fail(p, "more than %d members in group '%s'", GROUP_MEMBERS_MAX, name);
			if (!(g->n & (g->n - 1)) || g->n == 0) {
				char **nm = realloc(g->members, (g->n ? 2 * g->n : 1) * sizeof *nm);
				if (!nm)
					return -ENOMEM;
				g->members = nm;
			}
			if (!(g->members[g->n] = strdup(item)))
				return -ENOMEM;
			g->n++;
		}
		if (rc < 0)
			return rc;
	}
	return 0;
}

static int parse_external(struct parse *p, const char *v)
{
	uint8_t fam, a[16];
	if (!parse_ip(v, &fam, a))
		return fail(p, "external '%s' is not an IPv4 or IPv6 address", v);
	struct rules *rs = p->rs;
	if (fam == AF_INET ? rs->has_ext4 : rs->has_ext6)
		return fail(p, "a second external address of the same family ('%s')", v);
	if (fam == AF_INET) {
		rs->has_ext4 = true;
		memcpy(rs->ext4, a, 4);
	} else {
		rs->has_ext6 = true;
		memcpy(rs->ext6, a, 16);
	}
	return 0;
}

/* "key = value" with key one of ours: the value, else NULL. */
static const char *key_value(const char *line, const char *key)
{
	size_t n = strlen(key);
	if (strncmp(line, key, n) != 0)
		return NULL;
	const char *s = line + n;
	while (*s == ' ' || *s == '\t')
		s++;
	if (*s != '=')
		return NULL;
	s++;
	while (*s == ' ' || *s == '\t')
		s++;
	return s;
}

static bool first_word(const char *line, const char *w)
{
	size_t n = strlen(w);
	return strncmp(line, w, n) == 0 && (line[n] == ' ' || line[n] == '\t' || line[n] == '\0');
}

bool rules_is_line(const char *line)
{
	return first_word(line, "pass") || first_word(line, "block") || first_word(line, "client") ||
	       key_value(line, "group") || key_value(line, "external");
}

/* ---- the default policy ------------------------------------------------------- */

static bool is_loopback(u128 a)
{
	return a == 1 || (a >> 24) == (((u128)0xffff << 8) | 127);
}

/* The IPv4 address that an IPv6 address stands for, when a host or a
 * translator on the path would deliver it to that IPv4 address: mapped
 * ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d (:: and ::1 among them), SIIT
 * ::ffff:0:a.b.c.d, NAT64 64:ff9b::a.b.c.d and 6to4 2002:AABB:CCDD::/48. */
static bool embedded_v4(u128 a, uint32_t *v4)
{
	u128 top = a >> 32;
	if (top == 0 || top == 0xffff || top == (u128)0xffff << 16 || top == (u128)0x64ff9b << 64) {
		*v4 = (uint32_t)a;
		return true;
	}
	if ((a >> 112) == 0x2002) {
		*v4 = (uint32_t)(a >> 80);
		return true;
	}
	return false;
}

/* 0.0.0.0/8, 127.0.0.0/8, 169.254.0.0/16, 224.0.0.0/4 and 255.255.255.255. */
static bool v4_protected(uint32_t v)
{
	uint32_t top = v >> 24;
	return top == 0 || top == 127 || (v >> 16) == 0xa9fe || (v >> 28) == 0xe || v == 0xffffffff;
}

/* fe80::/10, ff00::/8, the local-use NAT64 prefix 64:ff9b:1::/48 (whose
 * IPv4 sits where the site's translator puts it: no one place to read),
 * and the EC2 metadata address fd00:ec2::254. */
static bool is_protected(u128 a)
{
	uint32_t v4;
	if (embedded_v4(a, &v4))
		return v4_protected(v4);
	uint64_t hi = (uint64_t)(a >> 64);
	return (hi >> 54) == (0xfe80 >> 6) || (hi >> 56) == 0xff || (hi >> 16) == 0x64ff9b0001ull ||
	       (hi == 0xfd000ec200000000ull && (uint64_t)a == 0x254);
}

static bool is_self(const struct rules *rs, u128 a, uint16_t port)
{
	if (port != rs->self_port)
		return false;
	for (size_t i = 0; i < rs->nself; i++)
		if (in_range(&rs->self[i], a))
			return true;
	return false;
}

static int add_self(struct rules *rs, size_t *cap, u128 a)
{
	if (grow((void **)&rs->self, cap, rs->nself, sizeof *rs->self) < 0)
		return -ENOMEM;
	rs->self[rs->nself++] = (struct range){a, a};
	return 0;
}

/* The proxy's own listening addresses: the specific ones as given; for a
 * wildcard listener, every address of the host's interfaces now. */
static int collect_self(struct rules *rs, const struct settings *cfg)
{
	size_t cap = 0;
	bool wildcard = cfg->nlisten == 0;
	rs->self_port = cfg->port;
	for (uint32_t i = 0; i < cfg->nlisten && i < SETTINGS_MAX_LISTEN; i++) {
		struct range r;
		if (!parse_cidr(cfg->listen[i], &r))
			continue;
		if (r.lo == 0 || r.lo == mapped4((const uint8_t[4]){0, 0, 0, 0}))
			wildcard = true;
		else if (add_self(rs, &cap, r.lo) < 0)
			return -ENOMEM;
	}
	if (!wildcard)
		return 0;
	struct ifaddrs *ifa;
	if (getifaddrs(&ifa) < 0)
		return 0; /* the loopback and link-local blocks still hold */
	for (struct ifaddrs *i = ifa; i; i = i->ifa_next) {
		u128 a;
		if (i->ifa_addr && sa_to_u128(i->ifa_addr, &a) && add_self(rs, &cap, a) < 0) {
			freeifaddrs(ifa);
			return -ENOMEM;
		}
	}
	freeifaddrs(ifa);
	return 0;
}

/* ---- compile ------------------------------------------------------------------ */

static int uid_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return (x > y) - (x < y);
}

/* Each rule's uids are distinct already (add_uid): sort them for uid_in. */
static void user_build(struct rules *rs)
{
	for (size_t r = 0; r < rs->n; r++)
		if (rs->v[r].nuids > 1)
			qsort(rs->v[r].uids, rs->v[r].nuids, sizeof *rs->v[r].uids, uid_cmp);
}

static int lists_build(struct rules *rs)
{
	rs->dest_any = malloc((rs->n + 1) * sizeof *rs->dest_any);
	rs->dest_cidr = malloc((rs->n + 1) * sizeof *rs->dest_cidr);
	rs->client_any = malloc((rs->n + 1) * sizeof *rs->client_any);
	if (!rs->dest_any || !rs->dest_cidr || !rs->client_any)
		return -ENOMEM;
	return 0;
}

static void free_parse(struct parse *p)
{
	for (size_t i = 0; i < p->ngroups; i++) {
		for (uint32_t j = 0; j < p->groups[i].n; j++)
			free(p->groups[i].members[j]);
		free(p->groups[i].members);
		free(p->groups[i].uids);
		free(p->groups[i].name);
	}
	free(p->groups);
	free(p->dest_items);
	free(p->client_items);
	free(p->seen);
	struct pair *lists[] = {p->exact, p->suffix};
	size_t ns[] = {p->nexact, p->nsuffix};
	for (int l = 0; l < 2; l++) {
		for (size_t i = 0; lists[l] && i < ns[l]; i++)
			free(lists[l][i].key);
		free(lists[l]);
	}
}

void rules_free(struct rules *rs)
{
	if (!rs)
		return;
	for (size_t i = 0; i < rs->n; i++) {
		free(rs->v[i].text);
		free(rs->v[i].from);
		free(rs->v[i].ports);
		free(rs->v[i].uids);
	}
	free(rs->v);
	index_free(&rs->dest);
	index_free(&rs->client_from);
	free(rs->dest_any);
	free(rs->dest_cidr);
	free(rs->client_any);
	table_free(&rs->exact);
	table_free(&rs->suffix);
	table_free(&rs->users);
	free(rs->self);
	free(rs);
}

/* Call fn for each line of text with p->line set; trims blanks. */
static int each_line(struct parse *p, const char *text, size_t len, int pass)
{
	char line[4096 + 2];
	p->line = 0;
	for (size_t i = 0; i < len;) {
		const char *nl = memchr(text + i, '\n', len - i);
		size_t n = nl ? (size_t)(nl - (text + i)) : len - i;
		p->line++;
		const char *s = text + i;
		i += n + 1;
		while (n && (*s == ' ' || *s == '\t')) {
			s++;
			n--;
		}
		while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
			n--;
		if (n == 0 || *s == '#')
			continue;
		if (n >= sizeof line - 1) {
			if (pass == 0)
				fail(p, "line longer than 4096 bytes");
			continue;
		}
		if (memchr(s, '\0', n)) {
			if (pass == 0)
				fail(p, "a NUL byte in the line");
			continue;
		}
		memcpy(line, s, n);
		line[n] = '\0';
		int rc = 0;
		const char *v;
		if (pass == 0) {
			if ((v = key_value(line, "group")))
				rc = parse_group(p, v);
			else if ((v = key_value(line, "external")))
				rc = parse_external(p, v);
			else if (!rules_is_line(line))
				rc = fail(p, "not a rule, group or external line");
		} else if (!key_value(line, "group") && !key_value(line, "external") &&
		           rules_is_line(line)) {
			rc = parse_rule(p, line);
		}
		if (rc == -ENOMEM)
			return rc;
	}
	return 0;
}

int rules_compile(const char *text, size_t len, const struct settings *cfg, struct rules **out,
                  char *err, size_t errlen, unsigned *nerrors)
{
	*out = NULL;
	if (err && errlen)
		err[0] = '\0';
	struct rules *rs = calloc(1, sizeof *rs);
	struct parse p = {.rs = rs, .err = err, .errlen = errlen};
	int rc = -ENOMEM;
	if (!rs)
		goto done;
	if (!(p.groups = calloc(RULES_GROUPS_MAX, sizeof *p.groups)))
		goto done;
	if (len > RULES_TEXT_MAX) {
		p.line = 0;
		rc = fail(&p, "the rules take more than %u bytes", (unsigned)RULES_TEXT_MAX);
		goto done;
	}
	/* Rules: one per line at most; count the lines that may hold one. */
	size_t lines = 1;
	for (size_t i = 0; i < len; i++)
		lines += text[i] == '\n';
	rs->v = calloc(lines < RULES_MAX ? lines : RULES_MAX, sizeof *rs->v);
	if (!rs->v)
		goto done;
	/* Groups and externals first, so that a rule may name a group defined
	 * further down. */
	if ((rc = each_line(&p, text, len, 0)) < 0 || (rc = each_line(&p, text, len, 1)) < 0)
		goto done;
	if (p.nerrors) {
		rc = -EINVAL;
		goto done;
	}
	rc = -ENOMEM;
	if (lists_build(rs) < 0)
		goto done;
	for (size_t i = 0; i < rs->n; i++) {
		struct rule *r = &rs->v[i];
		if (r->client && !r->nfrom)
			rs->client_any[rs->nclient_any++] = (uint16_t)i;
		if (!r->client && !r->has_to)
			rs->dest_any[rs->ndest_any++] = (uint16_t)i;
	}
	for (size_t i = 0, last = SIZE_MAX; i < p.ndest_items; i++)
		if (p.dest_items[i].rule != last)
			rs->dest_cidr[rs->ndest_cidr++] = last = p.dest_items[i].rule;
	if ((rc = index_build(&rs->dest, p.dest_items, p.ndest_items)) < 0 ||
	    (rc = index_build(&rs->client_from, p.client_items, p.nclient_items)) < 0) {
		if (rc == -E2BIG) {
			p.line = 0;
			rc = fail(&p, "the destinations overlap too much to be indexed");
		}
		goto done;
	}
	rc = -ENOMEM;
	if (table_build(&rs->exact, p.exact, p.nexact) < 0 ||
	    table_build(&rs->suffix, p.suffix, p.nsuffix) < 0)
		goto done;
	user_build(rs);
	if (cfg && collect_self(rs, cfg) < 0)
		goto done;
	rc = 0;
done:
	if (nerrors)
		*nerrors = p.nerrors;
	free_parse(&p);
	if (rc < 0) {
		rules_free(rs);
		return rc;
	}
	*out = rs;
	return 0;
}

/* ---- deciding ----------------------------------------------------------------- */

struct cand {
	const uint16_t *p;
	uint32_t n;
	bool maybe; /* a CIDR rule at the name stage: matches or not by address */
};

/* At most: any, CIDR, exact, and one suffix per label. */
#define CANDS_MAX (3 + NAME_MAX_LEN / 2 + 2)

static bool port_in(const struct rule *r, uint16_t port)
{
	for (uint32_t i = 0; i < r->nports; i++)
		if (r->ports[i].lo <= port && port <= r->ports[i].hi)
			return true;
	return false;
}

static bool uid_in(const struct rule *r, int64_t uid)
{
	uint32_t lo = 0, hi = r->nuids;
	while (lo < hi) {
		uint32_t mid = (lo + hi) / 2;
		if (r->uids[mid] == uid)
			return true;
		if (r->uids[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

struct query {
	u128 client;
	int64_t uid; /* -1: no login or a name no rule knows */
	bool has_user;
	uint8_t cmd;
	uint16_t port;
};

static bool other_fields(const struct rule *r, const struct query *q)
{
	if (!(r->cmds & (1u << q->cmd)))
		return false;
	if (r->nports && !port_in(r, q->port))
		return false;
	if (r->has_users && (q->uid < 0 || !uid_in(r, q->uid)))
		return false;
	if (r->nfrom) {
		uint32_t i;
		for (i = 0; i < r->nfrom && !in_range(&r->from[i], q->client); i++)
			;
		if (i == r->nfrom)
			return false;
	}
	return true;
}

/* The first rule of the merged ascending lists whose other fields match. */
static const struct rule *first_match(const struct rules *rs, struct cand *c, size_t nc,
                                      const struct query *q, bool client, bool *maybe)
{
	for (;;) {
		uint32_t best = UINT32_MAX;
		for (size_t i = 0; i < nc; i++)
			if (c[i].n && *c[i].p < best)
				best = *c[i].p;
		if (best == UINT32_MAX)
			return NULL;
		bool definite = false;
		for (size_t i = 0; i < nc; i++)
			if (c[i].n && *c[i].p == best) {
				c[i].p++;
				c[i].n--;
				definite |= !c[i].maybe;
			}
		const struct rule *r = &rs->v[best];
		if (client ? (!r->nports || port_in(r, q->port)) : other_fields(r, q)) {
			*maybe = !definite;
			return r;
		}
	}
}

static void default_match(struct rules_match *m, enum rules_action a)
{
	memset(m, 0, sizeof *m);
	m->action = (uint8_t)a;
}

static uint16_t sa_port(const struct sockaddr *sa)
{
	return sa->sa_family == AF_INET ? ntohs(((const struct sockaddr_in *)sa)->sin_port)
	                                : ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
}

enum rules_action rules_decide(const struct rules *rs, const struct rules_request *q,
                               struct rules_match *m)
{
	struct query qq = {.uid = -1, .cmd = q->cmd, .port = q->port};
	if (!q->client || !sa_to_u128(q->client, &qq.client))
		qq.client = 0;
	if (qq.cmd > RULES_CMD_UDP)
		qq.cmd = 0;
	u128 dest = 0;
	bool has_dest = q->dest && sa_to_u128(q->dest, &dest);
	if (rs && rs->n > rs->nclient) {
		struct cand c[CANDS_MAX];
		size_t nc = 0;
		if (q->user && rs->users.mask) {
			size_t ul = strlen(q->user);
			const struct name_slot *e = table_find(&rs->users, q->user, ul, hash_str(q->user, ul), true);
			if (e)
				qq.uid = e->off;
		}
		if (rs->ndest_any)
			c[nc++] = (struct cand){rs->dest_any, rs->ndest_any, false};
		if (has_dest && rs->dest.n) {
			size_t iv = interval_of(&rs->dest, dest);
			uint32_t s = rs->dest.off[iv], e = rs->dest.off[iv + 1];
			if (e > s)
				c[nc++] = (struct cand){rs->dest.list + s, e - s, false};
		} else if (!has_dest && rs->ndest_cidr) {
			c[nc++] = (struct cand){rs->dest_cidr, rs->ndest_cidr, true};
		}
		size_t nlen = q->name ? strlen(q->name) : 0;
		if (nlen > 1 && q->name[nlen - 1] == '.')
			nlen--;
		if (nlen && nlen <= NAME_MAX_LEN && (rs->exact.mask || rs->suffix.mask)) {
			/* One pass from the end: at each label start, the suffix's hash. */
			uint64_t h = FNV_OFFSET;
			for (size_t i = nlen; i-- > 0;) {
				h = hash_step(h, (unsigned char)q->name[i]);
				if (i != 0 && q->name[i - 1] != '.')
					continue;
				const struct name_slot *e = table_find(&rs->suffix, q->name + i, nlen - i, h, false);
				if (e && nc < CANDS_MAX)
					c[nc++] = (struct cand){rs->suffix.list + e->off, e->n, false};
				if (i == 0 && (e = table_find(&rs->exact, q->name, nlen, h, false)) && nc < CANDS_MAX)
					c[nc++] = (struct cand){rs->exact.list + e->off, e->n, false};
			}
		}
		bool maybe = false;
		const struct rule *r = first_match(rs, c, nc, &qq, false, &maybe);
		if (r && !maybe) {
			*m = r->m;
			return (enum rules_action)m->action;
		}
		if (r) {
			default_match(m, RULES_UNDECIDED);
			return RULES_UNDECIDED;
		}
	}
	/* The default policy. */
	if (is_loopback(qq.client)) {
		default_match(m, RULES_PASS);
		return RULES_PASS;
	}
	if (!has_dest) {
		default_match(m, RULES_UNDECIDED);
		return RULES_UNDECIDED;
	}
	/* the proxy's own IPv4 addresses under an IPv6 form too */
	uint32_t v4;
	bool blocked = is_protected(dest) || (rs && is_self(rs, dest, q->port)) ||
	               (rs && embedded_v4(dest, &v4) && is_self(rs, (u128)0xffff << 32 | v4, q->port));
	default_match(m, blocked ? RULES_BLOCK : RULES_PASS);
	return (enum rules_action)m->action;
}

enum rules_action rules_client(const struct rules *rs, const struct sockaddr *client,
                               struct rules_match *m)
{
	struct query qq = {.uid = -1};
	if (!rs || !rs->nclient || !sa_to_u128(client, &qq.client)) {
		default_match(m, RULES_PASS);
		return RULES_PASS;
	}
	qq.port = sa_port(client);
	struct cand c[2];
	size_t nc = 0;
	if (rs->nclient_any)
		c[nc++] = (struct cand){rs->client_any, rs->nclient_any, false};
	if (rs->client_from.n) {
		size_t iv = interval_of(&rs->client_from, qq.client);
		uint32_t s = rs->client_from.off[iv], e = rs->client_from.off[iv + 1];
		if (e > s)
			c[nc++] = (struct cand){rs->client_from.list + s, e - s, false};
	}
	bool maybe;
	const struct rule *r = first_match(rs, c, nc, &qq, true, &maybe);
	if (!r) {
		default_match(m, RULES_PASS);
		return RULES_PASS;
	}
	*m = r->m;
	return (enum rules_action)m->action;
}

bool rules_source(const struct rules *rs, const struct rules_match *m, int family,
                  struct sockaddr_storage *out, socklen_t *len)
{
	const uint8_t *a = NULL;
	if (m && m->via_family == family)
		a = m->via;
	else if (rs && family == AF_INET && rs->has_ext4)
		a = rs->ext4;
	else if (rs && family == AF_INET6 && rs->has_ext6)
		a = rs->ext6;
	if (!a)
		return false;
	memset(out, 0, sizeof *out);
	if (family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)out;
		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, a, 4);
		*len = sizeof *s4;
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)out;
		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, a, 16);
		*len = sizeof *s6;
	}
	return true;
}

size_t rules_count(const struct rules *rs)
{
	return rs ? rs->n : 0;
}

const char *rules_text(const struct rules *rs, size_t i, uint32_t *line, bool *client)
{
	if (!rs || i >= rs->n)
		return NULL;
	if (line)
		*line = rs->v[i].line;
	if (client)
		*client = rs->v[i].client;
	return rs->v[i].text;
}

bool rules_has_client_rules(const struct rules *rs)
{
	return rs && rs->nclient > 0;
}

enum rules_action rules_rule_action(const struct rules *rs, size_t i)
{
	return rs && i < rs->n ? (enum rules_action)rs->v[i].action : RULES_PASS;
}

void rules_default_text(const struct rules *rs, char *out, size_t len)
{
	char port[32] = "";
	if (rs && rs->self_port)
		snprintf(port, sizeof port, " at port %u", rs->self_port);
	snprintf(out, len,
	         "pass; a client not on loopback may not reach 127.0.0.0/8, 0.0.0.0/8, "
	         "169.254.0.0/16, 224.0.0.0/4, 255.255.255.255 (nor these under ::ffff:0:0/96, "
	         "::/96, ::ffff:0:0:0/96, 64:ff9b::/96, 2002::/16), fe80::/10, ff00::/8, "
	         "64:ff9b:1::/48, fd00:ec2::254, nor the proxy's own addresses%s",
	         port);
}

bool rules_valid_name(const char *name)
{
	size_t n = strlen(name);
	if (n > 1 && name[n - 1] == '.')
		n--;
	return valid_name(name, n);
}

void rules_match_text(const struct rules_match *m, char *out, size_t len)
{
	static const char *const act[] = {"pass", "block", "undecided"};
	const char *a = m->action <= RULES_UNDECIDED ? act[m->action] : "?";
	if (m->action == RULES_UNDECIDED)
		snprintf(out, len, "undecided: the resolved addresses decide");
	else if (m->number)
		snprintf(out, len, "%s by rule %u (line %u)", a, m->number, m->line);
	else
		snprintf(out, len, "%s by the default policy", a);
}

/* ---- the shared segment --------------------------------------------------------- */

int rules_shm_init(struct shm_segment *seg)
{
	pthread_mutexattr_t a;
	int rc = pthread_mutexattr_init(&a);
	if (rc)
		return -rc;
	rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	if (!rc)
		rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	if (!rc)
		rc = pthread_mutex_init(&seg->rules_lock, &a);
	pthread_mutexattr_destroy(&a);
	seg->rules_len = 0;
	__atomic_store_n(&seg->rules_gen, 1, __ATOMIC_RELEASE);
	return -rc;
}

int rules_shm_publish(struct shm_segment *seg, const char *text, size_t len)
{
	if (len > SHM_RULES_TEXT_MAX)
		return -E2BIG;
	shm_lock(&seg->rules_lock);
	memcpy(seg->rules_text, text, len);
	seg->rules_len = (uint32_t)len;
	for (size_t i = 0; i < SHM_RULES_MAX; i++)
		__atomic_store_n(&seg->rule_hits[i], 0, __ATOMIC_RELAXED);
	__atomic_store_n(&seg->rules_gen, seg->rules_gen + 1, __ATOMIC_RELEASE);
	shm_unlock(&seg->rules_lock);
	return 0;
}

int rules_shm_load(struct shm_segment *seg, const struct settings *cfg, uint64_t *gen,
                   struct rules **out, char *err, size_t errlen)
{
	if (__atomic_load_n(&seg->rules_gen, __ATOMIC_ACQUIRE) == *gen)
		return 0;
	char *copy = malloc(SHM_RULES_TEXT_MAX);
	if (!copy) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	shm_lock(&seg->rules_lock);
	uint64_t g = seg->rules_gen;
	size_t len = seg->rules_len <= SHM_RULES_TEXT_MAX ? seg->rules_len : 0;
	memcpy(copy, seg->rules_text, len);
	shm_unlock(&seg->rules_lock);
	int rc = rules_compile(copy, len, cfg, out, err, errlen, NULL);
	free(copy);
	if (rc < 0)
		return rc;
	*gen = g;
	return 1;
}

void rules_shm_hit(struct shm_segment *seg, uint64_t gen, const struct rules_match *m)
{
	if (m->number == 0 || m->number > SHM_RULES_MAX ||
	    __atomic_load_n(&seg->rules_gen, __ATOMIC_RELAXED) != gen)
		return;
	__atomic_fetch_add(&seg->rule_hits[m->number - 1], 1, __ATOMIC_RELAXED);
}
