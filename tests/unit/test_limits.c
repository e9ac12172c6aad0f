/*
 * Unit tests for shared/limits: the session places (compare-and-swap,
 * including processes racing for the last place), the rule slots found by
 * tag (sharing, take-over of free slots only, processes claiming one tag
 * at once, a full probe window) and the tags rules.c gives, the token bucket
 * arithmetic, the fold of a dead worker's places, and the `limit` line
 * parser on good and hostile input.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include "../../shared/limits.h"
#include "../../shared/rules.h"
#include "../../shared/shm.h"

/* ---- places ------------------------------------------------------------- */

static void take_stops_at_the_maximum_and_give_frees_a_place(void **state)
{
	(void)state;
	struct limit_entry e = {0};
	uint32_t held = 0;
	for (int i = 0; i < 3; i++)
		assert_true(limits_take(&e, 3, &held));
	assert_false(limits_take(&e, 3, &held));
	assert_int_equal(limits_holders(&e), 3);
	assert_int_equal(held, 3);
	limits_give(&e, &held);
	assert_int_equal(held, 2);
	assert_true(limits_take(&e, 3, &held));
	assert_false(limits_take(&e, 3, &held));
}

static void no_maximum_always_takes(void **state)
{
	(void)state;
	struct limit_entry e = {0};
	uint32_t held = 0;
	for (int i = 0; i < 1000; i++)
		assert_true(limits_take(&e, 0, &held));
	assert_int_equal(limits_holders(&e), 1000);
}

static void give_one_too_many_is_clamped(void **state)
{
	(void)state;
	struct limit_entry e = {0};
	uint32_t held = 0;
	assert_true(limits_take(&e, 2, &held));
	limits_give(&e, &held);
	limits_give(&e, &held); /* one too many: clamped, never wraps */
	assert_int_equal(limits_holders(&e), 0);
	assert_int_equal(held, 0);
}

/* ---- rule slots ---------------------------------------------------------- */

static void wait_children(int n);

static struct shm_segment *segment(void)
{
	struct shm_segment *seg = NULL;
	assert_int_equal(shm_create(NULL, NULL, 0, &seg), 0);
	return seg;
}

/* A rule whose identity is its tag (no collisions). */
static enum limits_rule_result rule_take(struct shm_segment *seg, uint32_t worker, uint32_t tag,
                                         uint32_t max, uint32_t *index)
{
	struct limit_spec sp = {.max_sessions = max, .rate = {[LIMIT_IN] = 1000, [LIMIT_OUT] = 2000}};
	return limits_rule_take(&seg->limits, tag, tag, &sp, seg->slots[worker].limit_held, index);
}

static void rule_give(struct shm_segment *seg, uint32_t worker, uint32_t index)
{
	limits_give(limits_entry_at(&seg->limits, index), &seg->slots[worker].limit_held[index]);
}

static void the_same_tag_shares_one_slot(void **state)
{
	(void)state;
	struct shm_segment *seg = segment();
	uint32_t a, b, c;
	assert_int_equal(rule_take(seg, 0, 77, 2, &a), LIMITS_RULE_TAKEN);
	assert_int_equal(rule_take(seg, 1, 77, 2, &b), LIMITS_RULE_TAKEN);
	assert_int_equal(a, b);
	assert_int_equal(a, limits_rule_index(77));
	assert_int_equal(rule_take(seg, 1, 77, 2, &c), LIMITS_RULE_FULL);
	struct limit_entry *e = limits_entry_at(&seg->limits, a);
	assert_int_equal(limits_holders(e), 2);
	assert_int_equal(limits_tag(e), 77);
	assert_int_equal(e->max_sessions, 2);
	assert_int_equal(e->b[LIMIT_IN].rate, 1000);
	assert_int_equal(e->b[LIMIT_OUT].rate, 2000);
	assert_int_equal(seg->slots[0].limit_held[a], 1);
	assert_int_equal(seg->slots[1].limit_held[a], 1);
	/* a place given back is the tag's again, in the same slot */
	rule_give(seg, 0, a);
	assert_int_equal(rule_take(seg, 0, 77, 2, &c), LIMITS_RULE_TAKEN);
	assert_int_equal(c, a);
	shm_destroy(seg);
}

static void another_tag_never_takes_over_a_held_slot(void **state)
{
	(void)state;
	struct shm_segment *seg = segment();
	uint32_t a, b;
	/* Both tags start at the same slot: the second goes to the next. */
	uint32_t t1 = 5, t2 = 5 + LIMITS_RULE_SLOTS;
	assert_int_equal(rule_take(seg, 0, t1, 1, &a), LIMITS_RULE_TAKEN);
	assert_int_equal(rule_take(seg, 1, t2, 1, &b), LIMITS_RULE_TAKEN);
	assert_int_not_equal(a, b);
	assert_int_equal(b, limits_rule_index(6));
	assert_int_equal(limits_tag(limits_entry_at(&seg->limits, a)), t1);
	assert_int_equal(limits_holders(limits_entry_at(&seg->limits, a)), 1);
	/* each rule's maximum is its own */
	uint32_t x;
	assert_int_equal(rule_take(seg, 0, t1, 1, &x), LIMITS_RULE_FULL);
	assert_int_equal(rule_take(seg, 0, t2, 1, &x), LIMITS_RULE_FULL);
	shm_destroy(seg);
}

static void a_freed_slot_is_claimed_again(void **state)
{
	(void)state;
	struct shm_segment *seg = segment();
	uint32_t a, b, c;
	uint32_t t1 = 9, t2 = 9 + LIMITS_RULE_SLOTS, t3 = 9 + 2 * LIMITS_RULE_SLOTS;
	assert_int_equal(rule_take(seg, 0, t1, 3, &a), LIMITS_RULE_TAKEN);
	assert_int_equal(rule_take(seg, 0, t2, 3, &b), LIMITS_RULE_TAKEN);
	rule_give(seg, 0, a);
	/* t1's slot has no holders: a third tag takes it over, fresh */
	struct limit_entry *e = limits_entry_at(&seg->limits, a);
	__atomic_store_n(&e->b[LIMIT_IN].tokens, 123000, __ATOMIC_RELAXED);
	struct limit_spec sp = {.max_sessions = 1};
	assert_int_equal(limits_rule_take(&seg->limits, t3, t3, &sp, seg->slots[1].limit_held, &c),
	                 LIMITS_RULE_TAKEN);
	assert_int_equal(c, a);
	assert_int_equal(limits_tag(e), t3);
	assert_int_equal(e->max_sessions, 1);
	assert_int_equal(e->b[LIMIT_IN].rate, 0);
	assert_int_equal(e->b[LIMIT_IN].tokens, 0);
	/* and t1 comes back in the next free slot, not in a held one */
	assert_int_equal(rule_take(seg, 0, t1, 3, &a), LIMITS_RULE_TAKEN);
	assert_true(a != b && a != c);
	assert_int_equal(a, limits_rule_index(11));
	/* a worker's death frees its places the same way */
	assert_int_equal(rule_take(seg, 0, t1, 3, &a), LIMITS_RULE_TAKEN);
	shm_worker_retire(seg, 0);
	assert_int_equal(limits_holders(limits_entry_at(&seg->limits, a)), 0);
	assert_int_equal(limits_holders(limits_entry_at(&seg->limits, c)), 1);
	shm_destroy(seg);
}

static void colliding_tags_of_two_rules_keep_two_entries(void **state)
{
	(void)state;
	struct shm_segment *seg = segment();
	uint32_t held_a = 0, held_b = 0, x;
	const uint32_t tag = 42;
	const uint64_t ida = 0x1111000000000042ull, idb = 0x2222000000000042ull;
	struct limit_spec a = {.max_sessions = 1, .rate = {[LIMIT_IN] = 1000, [LIMIT_OUT] = 2000}};
	struct limit_spec b = {.max_sessions = 2, .rate = {[LIMIT_IN] = 5000, [LIMIT_OUT] = 6000}};
	uint32_t *h0 = seg->slots[0].limit_held;
	assert_int_equal(limits_rule_take(&seg->limits, tag, ida, &a, h0, &held_a),
	                 LIMITS_RULE_TAKEN);
	/* A's one place is taken: B, with the same tag, still has its own two */
	assert_int_equal(limits_rule_take(&seg->limits, tag, idb, &b, h0, &held_b),
	                 LIMITS_RULE_TAKEN);
	assert_int_not_equal(held_a, held_b);
	assert_int_equal(limits_rule_take(&seg->limits, tag, idb, &b, h0, &x), LIMITS_RULE_TAKEN);
	assert_int_equal(x, held_b);
	assert_int_equal(limits_rule_take(&seg->limits, tag, idb, &b, h0, &x), LIMITS_RULE_FULL);
	assert_int_equal(limits_rule_take(&seg->limits, tag, ida, &a, h0, &x), LIMITS_RULE_FULL);
	/* each keeps its own limits: B never rewrote A's */
	struct limit_entry *ea = limits_entry_at(&seg->limits, held_a);
	struct limit_entry *eb = limits_entry_at(&seg->limits, held_b);
	assert_int_equal(limits_holders(ea), 1);
	assert_int_equal(limits_holders(eb), 2);
	assert_int_equal(ea->max_sessions, 1);
	assert_int_equal(ea->b[LIMIT_IN].rate, 1000);
	assert_int_equal(ea->b[LIMIT_OUT].rate, 2000);
	assert_int_equal(eb->max_sessions, 2);
	assert_int_equal(eb->b[LIMIT_IN].rate, 5000);
	assert_int_equal(eb->b[LIMIT_OUT].rate, 6000);
	/* the same limits, another identity: a third entry */
	assert_int_equal(limits_rule_take(&seg->limits, tag, ida ^ 1, &a, h0, &x), LIMITS_RULE_TAKEN);
	assert_true(x != held_a && x != held_b);
	/* the same identity with other limits is not that entry either */
	struct limit_spec a2 = a;
	a2.rate[LIMIT_OUT] = 2001;
	uint32_t y;
	assert_int_equal(limits_rule_take(&seg->limits, tag, ida, &a2, h0, &y), LIMITS_RULE_TAKEN);
	assert_true(y != held_a && y != held_b && y != x);
	assert_int_equal(ea->b[LIMIT_OUT].rate, 2000);
	shm_destroy(seg);
}

static void an_entry_beyond_the_probe_window_is_found(void **state)
{
	(void)state;
	struct shm_segment *seg = segment();
	uint32_t idx[LIMITS_PROBE];
	/* LIMITS_PROBE tags with one home slot, each held by one session */
	for (uint32_t k = 0; k < LIMITS_PROBE; k++)
		assert_int_equal(rule_take(seg, 0, 3 + (k + 1) * LIMITS_RULE_SLOTS, 0, &idx[k]),
		                 LIMITS_RULE_TAKEN);
	/* the window of tag 3 is full: it is claimed beyond, never over a held slot */
	uint32_t x, y;
	assert_int_equal(rule_take(seg, 1, 3, 2, &x), LIMITS_RULE_TAKEN);
	assert_int_equal(x, limits_rule_index(3 + LIMITS_PROBE));
	for (uint32_t k = 0; k < LIMITS_PROBE; k++) {
		struct limit_entry *e = limits_entry_at(&seg->limits, idx[k]);
		assert_int_equal(limits_tag(e), 3 + (k + 1) * LIMITS_RULE_SLOTS);
		assert_int_equal(limits_holders(e), 1);
	}
	/* later takers find it there, and its maximum holds */
	assert_int_equal(rule_take(seg, 2, 3, 2, &y), LIMITS_RULE_TAKEN);
	assert_int_equal(y, x);
	assert_int_equal(rule_take(seg, 2, 3, 2, &y), LIMITS_RULE_FULL);
	assert_int_equal(limits_holders(limits_entry_at(&seg->limits, x)), 2);
	/* with no holders left it is still the tag's: found again, not claimed twice */
	rule_give(seg, 1, x);
	rule_give(seg, 2, x);
	assert_int_equal(rule_take(seg, 2, 3, 2, &y), LIMITS_RULE_TAKEN);
	assert_int_equal(y, x);
	shm_destroy(seg);
}

static void a_nearly_full_table_still_grants(void **state)
{
	(void)state;
	struct shm_segment *seg = segment();
	uint32_t x;
	/* every slot but the last held, each by another tag */
	for (uint32_t t = 1; t < LIMITS_RULE_SLOTS; t++) {
		assert_int_equal(rule_take(seg, 0, t, 0, &x), LIMITS_RULE_TAKEN);
		assert_int_equal(x, limits_rule_index(t));
	}
	/* a tag whose home is held far from the free slot still gets it */
	uint32_t home = 100 + LIMITS_RULE_SLOTS;
	assert_int_equal(rule_take(seg, 1, home, 0, &x), LIMITS_RULE_TAKEN);
	assert_int_equal(x, limits_rule_index(0));
	/* the table full: only then a new rule is refused, taking nothing */
	assert_int_equal(rule_take(seg, 1, home + 1, 0, &x), LIMITS_RULE_NO_SLOT);
	assert_int_equal(seg->slots[1].limit_held[limits_rule_index(1)], 0);
	/* one ends: its slot is there for the refused tag */
	rule_give(seg, 0, limits_rule_index(7));
	assert_int_equal(rule_take(seg, 1, home + 1, 0, &x), LIMITS_RULE_TAKEN);
	assert_int_equal(x, limits_rule_index(7));
	shm_destroy(seg);
}

static void claims_in_step(void)
{
	/* The processes go through the same tags in step: each tag's first
	 * places are taken by several processes at once, and each must end
	 * in one slot holding all of them. */
	enum { PROCS = 4, TAGS = 300 };
	struct shm_segment *seg = segment();
	uint32_t *go =
	    mmap(NULL, sizeof *go, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	assert_true(go != MAP_FAILED);
	*go = 0;
	/* The slots were other rules', now free: every claim is a take-over. */
	for (uint32_t t = 1; t <= TAGS; t++) {
		uint32_t x;
		assert_int_equal(rule_take(seg, 63, t + 2 * LIMITS_RULE_SLOTS, 0, &x),
		                 LIMITS_RULE_TAKEN);
		rule_give(seg, 63, x);
	}
	for (int p = 0; p < PROCS; p++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			while (!__atomic_load_n(go, __ATOMIC_ACQUIRE))
				;
			for (uint32_t t = 1; t <= TAGS; t++) {
				uint32_t x;
				if (rule_take(seg, (uint32_t)p, t, 0, &x) != LIMITS_RULE_TAKEN)
					_exit(1);
			}
			_exit(0);
		}
	}
	__atomic_store_n(go, 1, __ATOMIC_RELEASE);
	wait_children(PROCS);
	uint32_t slots[TAGS + 1] = {0};
	for (uint32_t i = 0; i < LIMITS_RULE_SLOTS; i++) {
		struct limit_entry *e = &seg->limits.rule[i];
		uint32_t t = limits_tag(e);
		if (t == 0 || t > TAGS)
			continue;
		slots[t]++;
		assert_int_equal(limits_holders(e), PROCS);
		for (int p = 0; p < PROCS; p++)
			assert_int_equal(seg->slots[p].limit_held[limits_rule_index(i)], 1);
	}
	for (uint32_t t = 1; t <= TAGS; t++)
		assert_int_equal(slots[t], 1);
	munmap(go, sizeof *go);
	shm_destroy(seg);
}

static void processes_claiming_one_tag_end_in_one_slot(void **state)
{
	(void)state;
	for (int round = 0; round < 10; round++)
		claims_in_step();
}

/* The tag of the rule that lets 127.0.0.1 port 80 through text's rules. */
static uint32_t tag_of(const char *text, uint32_t *number)
{
	struct rules *rs = NULL;
	char err[256];
	assert_int_equal(rules_compile(text, strlen(text), NULL, &rs, err, sizeof err, NULL), 0);
	struct sockaddr_in c = {.sin_family = AF_INET, .sin_port = htons(1)};
	struct sockaddr_in d = {.sin_family = AF_INET, .sin_port = htons(80)};
	c.sin_addr.s_addr = d.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	struct rules_request q = {(struct sockaddr *)&c, NULL, RULES_CMD_CONNECT, 80, NULL,
	                          (struct sockaddr *)&d};
	struct rules_match m;
	assert_int_equal(rules_decide(rs, &q, &m), RULES_PASS);
	rules_free(rs);
	*number = m.number;
	/* the tag is the identity folded, never 0 */
	assert_true(m.limit_ident != 0);
	uint32_t t = (uint32_t)(m.limit_ident ^ m.limit_ident >> 32);
	assert_int_equal(m.limit_tag, t ? t : 1);
	return m.limit_tag;
}

static void a_rules_tag_follows_its_text_not_its_number(void **state)
{
	(void)state;
	uint32_t n1, n2, n3, n4;
	uint32_t t1 = tag_of("pass to 127.0.0.1 port 80 max-sessions 2\npass\n", &n1);
	uint32_t t2 = tag_of("block to 10.0.0.1\n\npass  to 127.0.0.1\tport 80 max-sessions 2 "
	                     "# the same\npass\n",
	                     &n2);
	uint32_t t3 = tag_of("pass to 127.0.0.1 port 80 max-sessions 3\npass\n", &n3);
	uint32_t t4 = tag_of("pass to 127.0.0.1 port 80 max-sessions 2 rate 1M\npass\n", &n4);
	assert_int_equal(n1, 1);
	assert_int_equal(n2, 2);
	assert_true(t1 != 0);
	assert_int_equal(t1, t2); /* renumbered, re-spaced: the same rule */
	assert_true(t3 != t1);    /* other limits: another rule */
	assert_true(t4 != t1 && t4 != t3);
}

static void fold_subtracts_a_dead_workers_places_clamped(void **state)
{
	(void)state;
	struct limit_entry e = {0};
	uint32_t a = 0, b = 0;
	for (int i = 0; i < 3; i++)
		assert_true(limits_take(&e, 5, &a));
	assert_true(limits_take(&e, 5, &b));
	limits_fold(&e, a);
	assert_int_equal(limits_holders(&e), 1);
	limits_fold(&e, 10);
	assert_int_equal(limits_holders(&e), 0);
}

static void retire_gives_back_the_places_of_the_worker(void **state)
{
	(void)state;
	struct shm_segment *seg = NULL;
	assert_int_equal(shm_create(NULL, NULL, 0, &seg), 0);
	struct limit_spec sp = {.max_sessions = 2};
	limits_set(&seg->limits.user[5], &sp);
	uint32_t idx = limits_user_index(5);
	assert_true(limits_take(&seg->limits.user[5], 2, &seg->slots[0].limit_held[idx]));
	assert_true(limits_take(&seg->limits.user[5], 2, &seg->slots[1].limit_held[idx]));
	assert_false(limits_take(&seg->limits.user[5], 2, &seg->slots[1].limit_held[idx]));
	struct limit_spec rsp = {.max_sessions = 1};
	uint32_t ridx;
	assert_int_equal(limits_rule_take(&seg->limits, 9, 9, &rsp, seg->slots[0].limit_held, &ridx),
	                 LIMITS_RULE_TAKEN);
	shm_worker_retire(seg, 0);
	assert_int_equal(limits_holders(&seg->limits.user[5]), 1);
	assert_int_equal(limits_holders(limits_entry_at(&seg->limits, ridx)), 0);
	assert_int_equal(seg->slots[0].limit_held[idx], 0);
	assert_true(limits_take(&seg->limits.user[5], 2, &seg->slots[1].limit_held[idx]));
	shm_destroy(seg);
}

/* Processes share one entry through a shared mapping, as workers do. */
struct race {
	struct limit_entry e;
	uint32_t inside;   /* places really in use, counted after each take */
	uint32_t overflow; /* set when inside ever went past the maximum */
	uint32_t wins;
	uint32_t go;
	uint32_t held[16];
};

static struct race *race_map(void)
{
	void *p = mmap(NULL, sizeof(struct race), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
	               -1, 0);
	assert_true(p != MAP_FAILED);
	memset(p, 0, sizeof(struct race));
	return p;
}

static void wait_children(int n)
{
	for (int i = 0; i < n; i++) {
		int st;
		assert_true(wait(&st) > 0);
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	}
}

static void processes_racing_never_exceed_the_maximum(void **state)
{
	(void)state;
	struct race *r = race_map();
	enum { PROCS = 6, ROUNDS = 20000, MAX = 3 };
	for (int p = 0; p < PROCS; p++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			while (!__atomic_load_n(&r->go, __ATOMIC_ACQUIRE))
				;
			for (int i = 0; i < ROUNDS; i++) {
				if (!limits_take(&r->e, MAX, &r->held[p]))
					continue;
				if (__atomic_add_fetch(&r->inside, 1, __ATOMIC_SEQ_CST) > MAX)
					__atomic_store_n(&r->overflow, 1, __ATOMIC_SEQ_CST);
				__atomic_sub_fetch(&r->inside, 1, __ATOMIC_SEQ_CST);
				limits_give(&r->e, &r->held[p]);
			}
			_exit(0);
		}
	}
	__atomic_store_n(&r->go, 1, __ATOMIC_RELEASE);
	wait_children(PROCS);
	assert_int_equal(r->overflow, 0);
	assert_int_equal(limits_holders(&r->e), 0);
	for (int p = 0; p < PROCS; p++)
		assert_int_equal(r->held[p], 0);
	munmap(r, sizeof *r);
}

static void processes_racing_take_exactly_the_maximum(void **state)
{
	(void)state;
	/* Every take a process wins is counted: with a lost update, more
	 * places would be won than exist. */
	struct race *r = race_map();
	enum { PROCS = 4, TRIES = 40000, MAX = 100000 };
	for (int p = 0; p < PROCS; p++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			while (!__atomic_load_n(&r->go, __ATOMIC_ACQUIRE))
				;
			for (int i = 0; i < TRIES; i++)
				if (limits_take(&r->e, MAX, &r->held[p]))
					__atomic_add_fetch(&r->wins, 1, __ATOMIC_SEQ_CST);
			_exit(0);
		}
	}
	__atomic_store_n(&r->go, 1, __ATOMIC_RELEASE);
	wait_children(PROCS);
	assert_int_equal(r->wins, MAX);
	assert_int_equal(limits_holders(&r->e), MAX);
	uint32_t held = 0;
	for (int p = 0; p < PROCS; p++)
		held += r->held[p];
	assert_int_equal(held, MAX);
	munmap(r, sizeof *r);
}

static void processes_racing_for_the_last_places_take_exactly_them(void **state)
{
	(void)state;
	enum { PROCS = 12, MAX = 5 };
	for (int round = 0; round < 20; round++) {
		struct race *r = race_map();
		for (int p = 0; p < PROCS; p++) {
			pid_t pid = fork();
			assert_true(pid >= 0);
			if (pid == 0) {
				while (!__atomic_load_n(&r->go, __ATOMIC_ACQUIRE))
					;
				if (limits_take(&r->e, MAX, &r->held[p]))
					__atomic_add_fetch(&r->wins, 1, __ATOMIC_SEQ_CST);
				_exit(0);
			}
		}
		__atomic_store_n(&r->go, 1, __ATOMIC_RELEASE);
		wait_children(PROCS);
		assert_int_equal(r->wins, MAX);
		assert_int_equal(limits_holders(&r->e), MAX);
		munmap(r, sizeof *r);
	}
}

/* ---- buckets ------------------------------------------------------------ */

static void burst_and_chunk_sizes(void **state)
{
	(void)state;
	assert_int_equal(limits_burst(1000000), 100000);
	assert_int_equal(limits_chunk(1000000), 25000);
	assert_int_equal(limits_burst(100), LIMITS_BURST_MIN);
	assert_int_equal(limits_chunk(100), LIMITS_BURST_MIN / 4);
}

static void bucket_refills_by_elapsed_time_up_to_the_burst(void **state)
{
	(void)state;
	struct limit_bucket b = {.stamp_ms = 1000};
	uint64_t rate = 1000000; /* 1000 bytes per ms */
	assert_int_equal(limits_bucket_take(&b, rate, 1u << 30, 1, 1000), 0);
	assert_int_equal(limits_bucket_take(&b, rate, 1u << 30, 1, 1010), 10000);
	assert_int_equal(limits_bucket_take(&b, rate, 1u << 30, 1, 1010), 0);
	/* A long pause fills the bucket to its burst, no more. */
	assert_int_equal(limits_bucket_take(&b, rate, 1u << 30, 1, 61010), 100000);
	/* want is honoured; the rest stays. */
	assert_int_equal(limits_bucket_take(&b, rate, 300, 1, 61015), 300);
	assert_int_equal(limits_bucket_take(&b, rate, 1u << 30, 1, 61015), 5000 - 300);
}

static void bucket_keeps_fractions_of_a_byte(void **state)
{
	(void)state;
	struct limit_bucket b = {.stamp_ms = 0};
	uint64_t rate = 1500; /* 1.5 bytes per ms */
	uint64_t total = 0;
	for (int64_t now = 1; now <= 1000; now++)
		total += limits_bucket_take(&b, rate, 1u << 30, 1, now);
	assert_int_equal(total, 1500);
}

static void bucket_over_ten_seconds_gives_the_rate(void **state)
{
	(void)state;
	/* Many takers, 1 ms apart, each wanting a chunk: the bytes given over
	 * 10 s are the rate's plus at most one burst. */
	struct limit_bucket b = {.stamp_ms = 0};
	uint64_t rate = 1 << 20, total = 0;
	for (int64_t now = 1; now <= 10000; now++)
		for (int k = 0; k < 4; k++)
			total += limits_bucket_take(&b, rate, limits_chunk(rate), 1, now);
	assert_true(total <= 10 * rate + limits_burst(rate));
	assert_true(total >= 10 * rate - limits_chunk(rate));
}

static void bucket_gives_whole_chunks_or_nothing(void **state)
{
	(void)state;
	struct limit_bucket b = {.stamp_ms = 0};
	uint64_t rate = 1000000;
	assert_int_equal(limits_bucket_take(&b, rate, 25000, 25000, 20), 0);
	assert_int_equal(limits_bucket_take(&b, rate, 25000, 25000, 25), 25000);
	assert_int_equal(limits_bucket_take(&b, rate, 25000, 25000, 49), 0);
	assert_int_equal(limits_bucket_take(&b, rate, 25000, 1, 49), 24000);
}

static void bucket_give_returns_unused_bytes_capped(void **state)
{
	(void)state;
	struct limit_bucket b = {.stamp_ms = 5};
	uint64_t rate = 1000000;
	limits_bucket_give(&b, rate, 500);
	assert_int_equal(limits_bucket_take(&b, rate, 1u << 30, 1, 5), 500);
	limits_bucket_give(&b, rate, 1u << 30);
	assert_int_equal(limits_bucket_take(&b, rate, 1u << 30, 1, 5), limits_burst(rate));
}

static void bucket_wait_says_when_a_chunk_is_there(void **state)
{
	(void)state;
	struct limit_bucket b = {.stamp_ms = 0};
	assert_int_equal(limits_bucket_wait_ms(&b, 1000000, 25000), 25);
	b.tokens = 24000 * 1000;
	assert_int_equal(limits_bucket_wait_ms(&b, 1000000, 25000), 1);
	b.tokens = 0;
	assert_int_equal(limits_bucket_wait_ms(&b, 100, 1024), LIMITS_WAIT_MAX_MS);
	assert_int_equal(limits_bucket_wait_ms(&b, 0, 1024), 1);
}

static void huge_rates_and_long_pauses_do_not_overflow(void **state)
{
	(void)state;
	struct limit_bucket b = {.stamp_ms = 0};
	uint64_t n = limits_bucket_take(&b, UINT64_MAX, UINT64_MAX, 1, INT64_MAX / 2);
	assert_int_equal(n, limits_burst(LIMITS_RATE_MAX));
	assert_true(b.tokens >= 0);
}

/* ---- configuration ------------------------------------------------------ */

static void rates_parse_with_units(void **state)
{
	(void)state;
	uint64_t r[2];
	assert_int_equal(limits_parse_rates("1M", r), 0);
	assert_int_equal(r[LIMIT_IN], 1 << 20);
	assert_int_equal(r[LIMIT_OUT], 1 << 20);
	assert_int_equal(limits_parse_rates("512k/2000", r), 0);
	assert_int_equal(r[LIMIT_IN], 512 << 10);
	assert_int_equal(r[LIMIT_OUT], 2000);
	assert_int_equal(limits_parse_rates("0/1G", r), 0);
	assert_int_equal(r[LIMIT_IN], 0);
	assert_int_equal(r[LIMIT_OUT], 1ull << 30);
	const char *bad[] = {"", "/", "1M/", "/1M", "-1", "1X", "1M/2M/3M", "99999999999999999999",
	                     "1025G", " 1", "1 M", "0x10"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(limits_parse_rates(bad[i], r), -EINVAL);
}

static void limit_lines_parse(void **state)
{
	(void)state;
	struct limit_conf c;
	char err[256];
	assert_int_equal(limits_parse_line("alice max-sessions 5 rate 1M/256K", &c, err, sizeof err),
	                 0);
	assert_string_equal(c.name, "alice");
	assert_int_equal(c.spec.max_sessions, 5);
	assert_int_equal(c.spec.rate[LIMIT_IN], 1 << 20);
	assert_int_equal(c.spec.rate[LIMIT_OUT], 256 << 10);
	assert_int_equal(limits_parse_line("*\trate 100", &c, err, sizeof err), 0);
	assert_string_equal(c.name, "*");
	assert_int_equal(c.spec.max_sessions, 0);
	assert_int_equal(c.spec.rate[LIMIT_OUT], 100);
	assert_int_equal(limits_parse_line("bob max-sessions 1", &c, err, sizeof err), 0);
	const char *bad[] = {"", "alice", "alice max-sessions", "alice max-sessions 0",
	                     "alice max-sessions -1", "alice max-sessions 1x",
	                     "alice max-sessions 1 max-sessions 2", "alice rate 1M rate 2M",
	                     "alice speed 1M", "alice rate fast", "alice max-sessions 99999999999",
	                     "\x01 rate 1"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		assert_int_equal(limits_parse_line(bad[i], &c, err, sizeof err), -EINVAL);
		assert_true(err[0] != '\0');
	}
	char big[2000];
	memset(big, 'a', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	assert_int_equal(limits_parse_line(big, &c, err, sizeof err), -EINVAL);
}

static void list_finds_the_users_line_then_the_default(void **state)
{
	(void)state;
	struct limit_list l = {0};
	struct limit_conf c;
	char err[256];
	assert_int_equal(limits_parse_line("* max-sessions 2", &c, err, sizeof err), 0);
	assert_int_equal(limit_list_add(&l, &c), 0);
	assert_int_equal(limits_parse_line("alice max-sessions 9", &c, err, sizeof err), 0);
	assert_int_equal(limit_list_add(&l, &c), 0);
	assert_int_equal(limit_list_add(&l, &c), -EEXIST);
	assert_int_equal(limit_list_find(&l, "alice")->max_sessions, 9);
	assert_int_equal(limit_list_find(&l, "bob")->max_sessions, 2);
	limit_list_free(&l);
	assert_null(limit_list_find(&l, "bob"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(take_stops_at_the_maximum_and_give_frees_a_place),
	    cmocka_unit_test(no_maximum_always_takes),
	    cmocka_unit_test(give_one_too_many_is_clamped),
	    cmocka_unit_test(the_same_tag_shares_one_slot),
	    cmocka_unit_test(another_tag_never_takes_over_a_held_slot),
	    cmocka_unit_test(a_freed_slot_is_claimed_again),
	    cmocka_unit_test(colliding_tags_of_two_rules_keep_two_entries),
	    cmocka_unit_test(an_entry_beyond_the_probe_window_is_found),
	    cmocka_unit_test(a_nearly_full_table_still_grants),
	    cmocka_unit_test(processes_claiming_one_tag_end_in_one_slot),
	    cmocka_unit_test(a_rules_tag_follows_its_text_not_its_number),
	    cmocka_unit_test(fold_subtracts_a_dead_workers_places_clamped),
	    cmocka_unit_test(retire_gives_back_the_places_of_the_worker),
	    cmocka_unit_test(processes_racing_never_exceed_the_maximum),
	    cmocka_unit_test(processes_racing_take_exactly_the_maximum),
	    cmocka_unit_test(processes_racing_for_the_last_places_take_exactly_them),
	    cmocka_unit_test(burst_and_chunk_sizes),
	    cmocka_unit_test(bucket_refills_by_elapsed_time_up_to_the_burst),
	    cmocka_unit_test(bucket_keeps_fractions_of_a_byte),
	    cmocka_unit_test(bucket_over_ten_seconds_gives_the_rate),
	    cmocka_unit_test(bucket_gives_whole_chunks_or_nothing),
	    cmocka_unit_test(bucket_give_returns_unused_bytes_capped),
	    cmocka_unit_test(bucket_wait_says_when_a_chunk_is_there),
	    cmocka_unit_test(huge_rates_and_long_pauses_do_not_overflow),
	    cmocka_unit_test(rates_parse_with_units),
	    cmocka_unit_test(limit_lines_parse),
	    cmocka_unit_test(list_finds_the_users_line_then_the_default),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
