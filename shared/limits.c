#include "limits.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "names.h"
#include "shm.h"

#define HOLDERS_MASK 0xffffffffull

struct limit_entry *limits_entry_at(struct limits_area *la, uint32_t index)
{
	if (index < LIMITS_MAX_USERS)
		return &la->user[index];
	index -= LIMITS_MAX_USERS;
	if (index < LIMITS_RULE_SLOTS)
		return &la->rule[index];
	return NULL;
}

void limits_set(struct limit_entry *e, const struct limit_spec *spec)
{
	__atomic_store_n(&e->max_sessions, spec ? spec->max_sessions : 0, __ATOMIC_RELAXED);
	for (int d = 0; d < 2; d++)
		__atomic_store_n(&e->b[d].rate, spec ? spec->rate[d] : 0, __ATOMIC_RELAXED);
	__atomic_store_n(&e->on, spec != NULL, __ATOMIC_RELEASE);
}

void limits_fold(struct limit_entry *e, uint32_t n)
{
	uint64_t w = __atomic_load_n(&e->word, __ATOMIC_RELAXED);
	uint64_t next;
	do {
		uint32_t h = (uint32_t)(w & HOLDERS_MASK);
		next = (w & ~HOLDERS_MASK) | (h > n ? h - n : 0);
	} while (!__atomic_compare_exchange_n(&e->word, &w, next, true, __ATOMIC_RELAXED,
	                                      __ATOMIC_RELAXED));
}

enum take_result { TAKE_OK, TAKE_FULL, TAKE_MOVED };

/* Take a place in e if its tag is tag (user entries: 0) and fewer than max
 * (non-zero) are taken. */
static enum take_result take(struct limit_entry *e, uint32_t max, uint32_t tag, uint32_t *held)
{
	/* Our own count first: a worker killed from here on is subtracted at
	 * most once too often, never leaves a place taken. */
	__atomic_store_n(held, *held + 1, __ATOMIC_RELAXED);
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	uint64_t w = __atomic_load_n(&e->word, __ATOMIC_ACQUIRE);
	enum take_result r;
	for (;;) {
		uint32_t h = (uint32_t)(w & HOLDERS_MASK);
		if ((uint32_t)(w >> 32) != tag) {
			r = TAKE_MOVED; /* claimed by another rule while we looked */
			break;
		}
		if ((max && h >= max) || h == UINT32_MAX) {
			r = TAKE_FULL;
			break;
		}
		/* A failed compare-and-swap reloads w: the tag is checked again. */
		if (__atomic_compare_exchange_n(&e->word, &w, w + 1, true, __ATOMIC_ACQ_REL,
		                                __ATOMIC_ACQUIRE))
			return TAKE_OK;
	}
	__atomic_store_n(held, *held - 1, __ATOMIC_RELAXED);
	return r;
}

bool limits_take(struct limit_entry *e, uint32_t max, uint32_t *held)
{
	return take(e, max, 0, held) == TAKE_OK;
}

static uint32_t probe_slot(uint32_t tag, uint32_t k)
{
	return (uint32_t)(((uint64_t)tag + k) % LIMITS_RULE_SLOTS);
}

/* Whether the slot, its tag seen as the rule's, is the rule's own: its
 * identity and its limits.  Both are written before the tag is published,
 * so a reader that saw the tag (acquire) sees them. */
static bool rule_own(struct limits_area *la, uint32_t slot, uint64_t ident,
                     const struct limit_spec *spec)
{
	struct limit_entry *e = &la->rule[slot];
	return __atomic_load_n(&la->rule_ident[slot], __ATOMIC_RELAXED) == ident &&
	       __atomic_load_n(&e->max_sessions, __ATOMIC_RELAXED) == spec->max_sessions &&
	       __atomic_load_n(&e->b[LIMIT_IN].rate, __ATOMIC_RELAXED) == spec->rate[LIMIT_IN] &&
	       __atomic_load_n(&e->b[LIMIT_OUT].rate, __ATOMIC_RELAXED) == spec->rate[LIMIT_OUT];
}

/* Take a place in the slot if it is the rule's own; TAKE_MOVED when it is
 * not (another rule's, whose tag may collide with ours). */
static enum take_result rule_take_at(struct limits_area *la, uint32_t slot, uint32_t tag,
                                     uint64_t ident, const struct limit_spec *spec,
                                     uint32_t *held)
{
	struct limit_entry *e = &la->rule[slot];
	uint64_t w = __atomic_load_n(&e->word, __ATOMIC_ACQUIRE);
	if ((uint32_t)(w >> 32) != tag || !rule_own(la, slot, ident, spec))
		return TAKE_MOVED;
	enum take_result r = take(e, spec->max_sessions, tag, &held[limits_rule_index(slot)]);
	/* Between the look and the take, the slot may have been freed and
	 * claimed by another rule with the same tag: look again. */
	if (r != TAKE_MOVED && !rule_own(la, slot, ident, spec)) {
		if (r == TAKE_OK)
			limits_give(e, &held[limits_rule_index(slot)]);
		r = TAKE_MOVED;
	}
	return r;
}

static enum limits_rule_result rule_taken(uint32_t slot, enum take_result r, uint32_t *index)
{
	*index = limits_rule_index(slot);
	return r == TAKE_OK ? LIMITS_RULE_TAKEN : LIMITS_RULE_FULL;
}

/* Under the lock: make a slot nobody holds the rule's own, or false when a
 * session of its old rule took a place since. */
static bool rule_claim(struct limits_area *la, uint32_t slot, uint32_t tag, uint64_t ident,
                       const struct limit_spec *spec)
{
	struct limit_entry *e = &la->rule[slot];
	uint64_t w = __atomic_load_n(&e->word, __ATOMIC_RELAXED);
	if ((w & HOLDERS_MASK) != 0)
		return false;
	/* Tag 0 is no rule's: nobody takes a place while we fill it in. */
	if (!__atomic_compare_exchange_n(&e->word, &w, 0, false, __ATOMIC_ACQ_REL,
	                                 __ATOMIC_RELAXED))
		return false;
	__atomic_store_n(&la->rule_ident[slot], ident, __ATOMIC_RELAXED);
	/* Fresh buckets (a full burst at the first refill), the rule's limits. */
	for (int d = 0; d < 2; d++) {
		__atomic_store_n(&e->b[d].tokens, 0, __ATOMIC_RELAXED);
		__atomic_store_n(&e->b[d].stamp_ms, 0, __ATOMIC_RELAXED);
	}
	limits_set(e, spec);
	/* Published last: the holders are still 0 (a stray give or fold of a
	 * place never held leaves them at 0). */
	__atomic_store_n(&e->word, (uint64_t)tag << 32, __ATOMIC_RELEASE);
	return true;
}

enum limits_rule_result limits_rule_take(struct limits_area *la, uint32_t tag, uint64_t ident,
                                         const struct limit_spec *spec, uint32_t *held,
                                         uint32_t *index)
{
	/* The rule's slot in the window: no lock.  A slot never changes rules
	 * while it is held, and changes only under the lock. */
	for (uint32_t k = 0; k < LIMITS_PROBE; k++) {
		uint32_t slot = probe_slot(tag, k);
		enum take_result r = rule_take_at(la, slot, tag, ident, spec, held);
		if (r != TAKE_MOVED)
			return rule_taken(slot, r, index);
	}
	/* None: under the lock, the rule's slot anywhere in the table (claimed
	 * meanwhile, or beyond the window), else claim the first free one. */
	shm_lock(&la->claim_lock);
	enum limits_rule_result res = LIMITS_RULE_NO_SLOT;
	uint32_t first_free = LIMITS_RULE_SLOTS;
	for (uint32_t k = 0; k < LIMITS_RULE_SLOTS; k++) {
		uint32_t slot = probe_slot(tag, k);
		/* No slot changes rules while we hold the lock: TAKE_MOVED
		 * here means another rule's. */
		enum take_result r = rule_take_at(la, slot, tag, ident, spec, held);
		if (r != TAKE_MOVED) {
			res = rule_taken(slot, r, index);
			goto out;
		}
		if (first_free == LIMITS_RULE_SLOTS && limits_holders(&la->rule[slot]) == 0)
			first_free = k;
	}
	for (uint32_t k = first_free; k < LIMITS_RULE_SLOTS; k++) {
		uint32_t slot = probe_slot(tag, k);
		if (!rule_claim(la, slot, tag, ident, spec))
			continue;
		enum take_result r = take(&la->rule[slot], spec->max_sessions, tag,
		                          &held[limits_rule_index(slot)]);
		res = rule_taken(slot, r, index);
		break;
	}
out:
	shm_unlock(&la->claim_lock);
	return res;
}

void limits_give(struct limit_entry *e, uint32_t *held)
{
	uint64_t w = __atomic_load_n(&e->word, __ATOMIC_RELAXED);
	uint64_t next;
	do {
		uint32_t h = (uint32_t)(w & HOLDERS_MASK);
		next = (w & ~HOLDERS_MASK) | (h ? h - 1 : 0);
	} while (!__atomic_compare_exchange_n(&e->word, &w, next, true, __ATOMIC_RELEASE,
	                                      __ATOMIC_RELAXED));
	__atomic_signal_fence(__ATOMIC_SEQ_CST);
	if (*held)
		__atomic_store_n(held, *held - 1, __ATOMIC_RELAXED);
}

/* ---- buckets ------------------------------------------------------------ */

uint64_t limits_burst(uint64_t rate)
{
	uint64_t b = rate / 10;
	return b < LIMITS_BURST_MIN ? LIMITS_BURST_MIN : b;
}

uint64_t limits_chunk(uint64_t rate)
{
	return limits_burst(rate) / 4;
}

/* Add up to add thousandths, never past cap. */
static void bucket_add(struct limit_bucket *b, int64_t add, int64_t cap)
{
	int64_t t = __atomic_load_n(&b->tokens, __ATOMIC_RELAXED);
	int64_t next;
	do {
		if (t >= cap)
			return;
		next = add > cap - t ? cap : t + add;
	} while (!__atomic_compare_exchange_n(&b->tokens, &t, next, true, __ATOMIC_RELAXED,
	                                      __ATOMIC_RELAXED));
}

uint64_t limits_bucket_take(struct limit_bucket *b, uint64_t rate, uint64_t want, uint64_t min,
                            int64_t now_ms)
{
	if (rate > LIMITS_RATE_MAX)
		rate = LIMITS_RATE_MAX;
	int64_t cap = (int64_t)limits_burst(rate) * 1000;
	/* One process wins the refill of each elapsed interval: the one whose
	 * compare-and-swap moves the stamp. */
	int64_t st = __atomic_load_n(&b->stamp_ms, __ATOMIC_RELAXED);
	if (now_ms > st &&
	    __atomic_compare_exchange_n(&b->stamp_ms, &st, now_ms, false, __ATOMIC_RELAXED,
	                                __ATOMIC_RELAXED)) {
		int64_t elapsed = now_ms - st;
		/* Bounded so that elapsed * rate cannot overflow; the cap
		 * below keeps the bucket to its burst anyway. */
		if (elapsed > 1000 * 1000)
			elapsed = 1000 * 1000;
		bucket_add(b, elapsed * (int64_t)rate, cap);
	}
	int64_t t = __atomic_load_n(&b->tokens, __ATOMIC_RELAXED);
	uint64_t n;
	do {
		n = t < 1000 ? 0 : (uint64_t)t / 1000;
		if (n == 0 || n < min)
			return 0;
		if (n > want)
			n = want;
	} while (!__atomic_compare_exchange_n(&b->tokens, &t, t - (int64_t)n * 1000, true,
	                                      __ATOMIC_RELAXED, __ATOMIC_RELAXED));
	return n;
}

void limits_bucket_give(struct limit_bucket *b, uint64_t rate, uint64_t n)
{
	if (rate > LIMITS_RATE_MAX)
		rate = LIMITS_RATE_MAX;
	uint64_t burst = limits_burst(rate);
	if (n > burst)
		n = burst;
	bucket_add(b, (int64_t)n * 1000, (int64_t)burst * 1000);
}

int64_t limits_bucket_wait_ms(const struct limit_bucket *b, uint64_t rate, uint64_t want)
{
	if (rate == 0)
		return 1;
	if (rate > LIMITS_RATE_MAX)
		rate = LIMITS_RATE_MAX;
	uint64_t burst = limits_burst(rate);
	if (want > burst)
		want = burst;
	int64_t t = __atomic_load_n(&b->tokens, __ATOMIC_RELAXED);
	int64_t need = (int64_t)want * 1000 - (t > 0 ? t : 0);
	if (need <= 0)
		return 1;
	int64_t ms = (need + (int64_t)rate - 1) / (int64_t)rate;
	return ms < 1 ? 1 : ms > LIMITS_WAIT_MAX_MS ? LIMITS_WAIT_MAX_MS : ms;
}

/* ---- configuration ------------------------------------------------------ */

int limits_parse_rate(const char *s, uint64_t *out)
{
	if (*s < '0' || *s > '9')
		return -EINVAL;
	errno = 0;
	char *end;
	unsigned long long n = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	unsigned long long mul = 0;
	if (!*end || !strcasecmp(end, "b"))
		mul = 1;
	else if (!strcasecmp(end, "k") || !strcasecmp(end, "kb") || !strcasecmp(end, "kib"))
		mul = 1ull << 10;
	else if (!strcasecmp(end, "m") || !strcasecmp(end, "mb") || !strcasecmp(end, "mib"))
		mul = 1ull << 20;
	else if (!strcasecmp(end, "g") || !strcasecmp(end, "gb") || !strcasecmp(end, "gib"))
		mul = 1ull << 30;
	if (!mul || n > LIMITS_RATE_MAX / mul)
		return -EINVAL;
	*out = n * mul;
	return 0;
}

int limits_parse_rates(const char *s, uint64_t rate[2])
{
	char in[32];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	if (n == 0 || n >= sizeof in)
		return -EINVAL;
	memcpy(in, s, n);
	in[n] = '\0';
	if (limits_parse_rate(in, &rate[LIMIT_IN]) < 0)
		return -EINVAL;
	if (!slash) {
		rate[LIMIT_OUT] = rate[LIMIT_IN];
		return 0;
	}
	return limits_parse_rate(slash + 1, &rate[LIMIT_OUT]);
}

/* The next blank-separated word of *p (NUL-terminated in place), or NULL. */
static char *word(char **p)
{
	char *s = *p;
	while (*s == ' ' || *s == '\t')
		s++;
	if (!*s)
		return NULL;
	char *w = s;
	while (*s && *s != ' ' && *s != '\t')
		s++;
	if (*s)
		*s++ = '\0';
	*p = s;
	return w;
}

int limits_parse_line(const char *value, struct limit_conf *out, char *err, size_t errlen)
{
	char buf[1024];
	if (strlen(value) >= sizeof buf) {
		snprintf(err, errlen, "line too long");
		return -EINVAL;
	}
	memcpy(buf, value, strlen(value) + 1);
	memset(out, 0, sizeof *out);
	char *p = buf;
	char *name = word(&p);
	if (!name) {
		snprintf(err, errlen, "expected NAME|* [max-sessions N] [rate IN[/OUT]]");
		return -EINVAL;
	}
	const char *why = strcmp(name, "*") == 0 ? NULL : names_user_problem(name, strlen(name));
	if (why) {
		snprintf(err, errlen, "the user name %s", why);
		return -EINVAL;
	}
	memcpy(out->name, name, strlen(name) + 1);
	bool any = false, have_max = false, have_rate = false;
	for (char *k; (k = word(&p));) {
		char *v = word(&p);
		if (!v) {
			snprintf(err, errlen, "'%s' needs a value", k);
			return -EINVAL;
		}
		if (strcmp(k, "max-sessions") == 0 && !have_max) {
			char *end;
			errno = 0;
			unsigned long long n = strtoull(v, &end, 10);
			if (*v < '0' || *v > '9' || *end || errno || n == 0 || n > LIMITS_SESSIONS_MAX) {
				snprintf(err, errlen, "max-sessions '%s': expected 1 to %u", v,
				         LIMITS_SESSIONS_MAX);
				return -EINVAL;
			}
			out->spec.max_sessions = (uint32_t)n;
			have_max = true;
		} else if (strcmp(k, "rate") == 0 && !have_rate) {
			if (limits_parse_rates(v, out->spec.rate) < 0) {
				snprintf(err, errlen,
				         "rate '%s': expected IN[/OUT] in bytes per second (K, M, G: "
				         "1024-based; 0: none)",
				         v);
				return -EINVAL;
			}
			have_rate = true;
		} else {
			snprintf(err, errlen, "'%s': expected max-sessions N or rate IN[/OUT], once each",
			         k);
			return -EINVAL;
		}
		any = true;
	}
	if (!any) {
		snprintf(err, errlen, "'%s': no max-sessions or rate given", out->name);
		return -EINVAL;
	}
	return 0;
}

int limit_list_add(struct limit_list *l, const struct limit_conf *c)
{
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].name, c->name) == 0)
			return -EEXIST;
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		struct limit_conf *v = realloc(l->v, cap * sizeof *v);
		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	l->v[l->n++] = *c;
	return 0;
}

void limit_list_free(struct limit_list *l)
{
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

const struct limit_spec *limit_list_find(const struct limit_list *l, const char *user)
{
	const struct limit_spec *any = NULL;
	for (size_t i = 0; i < l->n; i++) {
		if (strcmp(l->v[i].name, user) == 0)
			return &l->v[i].spec;
		if (strcmp(l->v[i].name, "*") == 0)
			any = &l->v[i].spec;
	}
	return any;
}
