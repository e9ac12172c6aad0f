/*
 * limits: per-user and per-rule limits held in the shared segment —
 * concurrent sessions (max-sessions) and bandwidth (rate IN/OUT), shared by
 * every worker.
 *
 * The table (struct limits_area, inside struct shm_segment) has one entry
 * per user slot and LIMITS_RULE_SLOTS entries for the rules that carry
 * limits.  An entry is:
 *   - a 64-bit word: the number of sessions holding it (low 32 bits) and,
 *     for rule entries, the tag of the rule that owns it (high 32 bits; 0
 *     for user entries).  Taking a place is one compare-and-swap that
 *     checks the tag and the maximum and adds one in the same step, so no
 *     two processes can both take the last place;
 *   - the maximum (0: none);
 *   - one token bucket per direction: a rate in bytes per second (0: none),
 *     the tokens available (in thousandths of a byte, so that a refill of
 *     elapsed_ms * rate is exact) and the time of the last refill.  Refill
 *     and take are compare-and-swap loops: no lock, ever.  The bucket holds
 *     at most limits_burst(rate) bytes (a tenth of a second of the rate, at
 *     least LIMITS_BURST_MIN); a worker takes at most limits_chunk(rate)
 *     bytes at a time (a quarter of the burst) into its session's own
 *     allowance, and reads no more than that allowance.
 *
 * Rule entries are found by the rule's identity, not by its number: a
 * non-zero 64-bit hash of the rule's text, limits included (shared/rules.c
 * computes it; a decision carries it with a 32-bit tag folded from it).
 * The tag is in the word; the identity is in rule_ident[] beside the
 * entries.  An entry is the rule's own when its tag, its identity and its
 * limits are the rule's: an entry of another rule whose tag collides is
 * passed over and its limits are never written.  A rule's entry is looked
 * for without a lock over LIMITS_PROBE slots from tag % LIMITS_RULE_SLOTS;
 * when none there is its own, the area's mutex is taken and every slot is
 * looked at, from the same place: the rule's own entry wherever it is
 * (another worker may have claimed it, or the window was full when it was
 * claimed), else the first slot nobody holds (holders 0) is claimed.  A
 * claim empties the word (tag 0: nobody's) by a compare-and-swap from "no
 * holders", writes the identity, fresh buckets and the limits, then
 * publishes the tag (release): the lock-free path sees a tag only with its
 * identity and limits, and two workers never claim two slots for one rule.
 * A slot held by another rule is never taken over, so a rule is refused
 * only when all LIMITS_RULE_SLOTS are held.  A rule unchanged by a reload
 * keeps its slot, its holders and its buckets; the sessions of a rule that
 * is gone keep its slot until they end.  Two different rules share one
 * entry only when their 64-bit identities and their limits are all equal
 * (for a set of 1,024 limited rules, about one chance in 3.5e13 that two
 * identities collide).
 *
 * Every worker also keeps, in its metrics slot, how many places it holds in
 * each entry (limit_held[]): when a worker dies the master subtracts them
 * (limits_fold), so the segment stays the truth.  A worker raises its own
 * count before the compare-and-swap and lowers it after a release, so a
 * worker killed between the two steps makes the master subtract one place
 * that was never taken (a count one too low until a session ends, clamped
 * at zero), never leaves a place taken forever.
 *
 * Master: limits_set (user entries), limits_fold.  Workers: limits_take /
 * limits_rule_take / limits_give and the bucket functions, from their loop
 * thread.  Any process may read.
 */
#ifndef SOCKS5D_LIMITS_H
#define SOCKS5D_LIMITS_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LIMITS_MAX_USERS 1024 /* = SHM_MAX_USERS (checked in shm.h) */
#define LIMITS_MAX_RULES 1024 /* rules numbered up to this can carry limits */
/* Rule entries: room for one full rule set and the rules of the sets
 * before whose sessions are still open. */
#define LIMITS_RULE_SLOTS (2 * LIMITS_MAX_RULES)
#define LIMITS_PROBE 64 /* slots looked at for one tag without the lock */
#define LIMITS_ENTRIES (LIMITS_MAX_USERS + LIMITS_RULE_SLOTS)
#define LIMITS_NAME_MAX 255
#define LIMITS_BURST_MIN 4096u
#define LIMITS_RATE_MAX (1ull << 40) /* 1 TiB/s: tokens * 1000 stay far from overflow */
#define LIMITS_SESSIONS_MAX 1000000u
/* A direction without a rate (its entry limits sessions only) re-reads the
 * rate after this many bytes: a rate given at a reload applies soon. */
#define LIMITS_UNRATED_CHUNK (16u << 20)
/* The longest a paused direction waits before it looks again. */
#define LIMITS_WAIT_MAX_MS 1000

/* Directions, as the user sees them: OUT is what the client sends (client
 * -> target), IN what it receives (target -> client). */
enum limit_dir { LIMIT_OUT = 0, LIMIT_IN = 1 };

struct limit_bucket {
	uint64_t rate;    /* bytes per second; 0: none */
	int64_t tokens;   /* thousandths of a byte */
	int64_t stamp_ms; /* monotonic ms of the last refill */
};

struct limit_entry {
	_Alignas(64) uint64_t word; /* holders | tag << 32 */
	uint32_t on;                /* a limit applies (user entries: set by the master) */
	uint32_t max_sessions;      /* 0: no maximum */
	struct limit_bucket b[2];   /* by enum limit_dir */
};

struct limits_area {
	pthread_mutex_t claim_lock; /* robust, process-shared: claims of rule slots */
	struct limit_entry user[LIMITS_MAX_USERS];
	struct limit_entry rule[LIMITS_RULE_SLOTS];
	uint64_t rule_ident[LIMITS_RULE_SLOTS]; /* the identity of the rule that claimed it */
};

/* What one limit line (or rule) asks for. */
struct limit_spec {
	uint32_t max_sessions; /* 0: none */
	uint64_t rate[2];      /* by enum limit_dir; 0: none */
};

/* ---- the entries -------------------------------------------------------- */

/* An entry's index in limit_held[] and back. */
static inline uint32_t limits_user_index(uint32_t user_slot)
{
	return user_slot;
}
static inline uint32_t limits_rule_index(uint32_t rule_slot)
{
	return LIMITS_MAX_USERS + rule_slot;
}
struct limit_entry *limits_entry_at(struct limits_area *la, uint32_t index);

static inline uint32_t limits_holders(const struct limit_entry *e)
{
	return (uint32_t)__atomic_load_n(&e->word, __ATOMIC_RELAXED);
}
static inline uint32_t limits_tag(const struct limit_entry *e)
{
	return (uint32_t)(__atomic_load_n(&e->word, __ATOMIC_RELAXED) >> 32);
}

/* Configure an entry (spec NULL: no limit).  Holders are kept; the
 * buckets keep their tokens (capped by the new burst at the next refill). */
void limits_set(struct limit_entry *e, const struct limit_spec *spec);
/* Master: a dead worker held n places in e. */
void limits_fold(struct limit_entry *e, uint32_t n);

/* Take a place in a user entry: false when max (non-zero) places are
 * taken.  *held is the caller's own count (its slot's limit_held[index]),
 * raised on success. */
bool limits_take(struct limit_entry *e, uint32_t max, uint32_t *held);

enum limits_rule_result {
	LIMITS_RULE_TAKEN,   /* a place, in entry *index */
	LIMITS_RULE_FULL,    /* the rule's max-sessions are taken */
	LIMITS_RULE_NO_SLOT, /* every rule slot is held by other rules: refuse */
};
/* Take a place in the entry of the rule with this tag (non-zero), identity
 * and limits, claiming a free slot for it when it has none (the spec is
 * written into the entry then).  held: the caller's limit_held[]
 * (LIMITS_ENTRIES counts). */
enum limits_rule_result limits_rule_take(struct limits_area *la, uint32_t tag, uint64_t ident,
                                         const struct limit_spec *spec, uint32_t *held,
                                         uint32_t *index);
/* Give a place back (user or rule entry). */
void limits_give(struct limit_entry *e, uint32_t *held);

/* ---- buckets ------------------------------------------------------------ */

uint64_t limits_burst(uint64_t rate);
uint64_t limits_chunk(uint64_t rate);
/* Refill by the time since the last refill (at most a burst), then take up
 * to want bytes (the tokens there are, rounded down to whole bytes), or
 * nothing when fewer than min are there.  Returns the bytes taken.  The
 * relay asks for whole chunks (min = want): a session that wakes often
 * cannot starve the others by taking every few bytes as they come. */
uint64_t limits_bucket_take(struct limit_bucket *b, uint64_t rate, uint64_t want, uint64_t min,
                            int64_t now_ms);
/* Return bytes taken and not used (capped at the burst). */
void limits_bucket_give(struct limit_bucket *b, uint64_t rate, uint64_t n);
/* How long until want bytes (at most a burst) are there: 1 ..
 * LIMITS_WAIT_MAX_MS. */
int64_t limits_bucket_wait_ms(const struct limit_bucket *b, uint64_t rate, uint64_t want);

/* ---- configuration ------------------------------------------------------ */

/* A rate: digits with an optional K, M or G (1024-based, as the sizes of
 * the settings), at most LIMITS_RATE_MAX.  0 or -EINVAL. */
int limits_parse_rate(const char *s, uint64_t *out);
/* "IN[/OUT]" (OUT defaults to IN). */
int limits_parse_rates(const char *s, uint64_t rate[2]);

/* One `limit` line: NAME|* [max-sessions N] [rate IN[/OUT]]. */
struct limit_conf {
	char name[LIMITS_NAME_MAX + 1]; /* "*": every user without a line of its own */
	struct limit_spec spec;
};

struct limit_list {
	struct limit_conf *v;
	size_t n, cap;
};

/* Parse the value of a `limit` line into *out: 0, or -EINVAL with a reason
 * in err. */
int limits_parse_line(const char *value, struct limit_conf *out, char *err, size_t errlen);
/* Append (a second line for the same name is -EEXIST); 0 or -errno. */
int limit_list_add(struct limit_list *l, const struct limit_conf *c);
void limit_list_free(struct limit_list *l);
/* The spec for a user: its own line, else "*", else NULL. */
const struct limit_spec *limit_list_find(const struct limit_list *l, const char *user);

#endif
