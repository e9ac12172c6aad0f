/*
 * Unit tests for shared/guard: source and network keys (IPv4 /32 and /24,
 * IPv6 /64 and /48, IPv4-mapped as IPv4), the back-off schedule, spacing of
 * attempts in a row, decay with time, forgetting on success, a full bucket
 * replacing its least useful record, and the per-source connection counts
 * with their cap.  Times are given by the test: nothing sleeps.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../shared/guard.h"

static const uint8_t seed[16] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16};

static struct sockaddr_storage addr(const char *text)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	if (strchr(text, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		s6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, text, &s6->sin6_addr), 1);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		s4->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, text, &s4->sin_addr), 1);
	}
	return ss;
}

static bool same_key(void (*key)(const struct sockaddr_storage *, struct guard_key *),
                     const char *a, const char *b)
{
	struct sockaddr_storage x = addr(a), y = addr(b);
	struct guard_key kx, ky;
	key(&x, &kx);
	key(&y, &ky);
	return memcmp(&kx, &ky, sizeof kx) == 0;
}

static bool same_source(const char *a, const char *b)
{
	return same_key(guard_source_key, a, b);
}

static bool same_network(const char *a, const char *b)
{
	return same_key(guard_network_key, a, b);
}

static void ipv4_sources_are_addresses_and_networks_are_slash_24(void **state)
{
	(void)state;
	assert_true(same_source("192.0.2.1", "192.0.2.1"));
	assert_false(same_source("192.0.2.1", "192.0.2.2"));
	assert_true(same_network("192.0.2.1", "192.0.2.200"));
	assert_false(same_network("192.0.2.1", "192.0.3.1"));
	/* the mapped form is the same client */
	assert_true(same_source("192.0.2.1", "::ffff:192.0.2.1"));
	assert_true(same_network("192.0.2.1", "::ffff:192.0.2.9"));
	/* an IPv6 address whose low bits look like it is not */
	assert_false(same_source("192.0.2.1", "::c000:201"));
}

static void ipv6_sources_are_slash_64_and_networks_slash_48(void **state)
{
	(void)state;
	assert_true(same_source("2001:db8:1:2::1", "2001:db8:1:2:ffff::7"));
	assert_false(same_source("2001:db8:1:2::1", "2001:db8:1:3::1"));
	assert_true(same_network("2001:db8:1:2::1", "2001:db8:1:ffff::1"));
	assert_false(same_network("2001:db8:1::1", "2001:db8:2::1"));
}

static void back_off_is_free_then_doubles_to_a_cap(void **state)
{
	(void)state;
	for (uint32_t f = 0; f < GUARD_FREE_FAILS; f++)
		assert_int_equal(guard_delay(f), 0);
	assert_int_equal(guard_delay(GUARD_FREE_FAILS), GUARD_BASE_MS);
	assert_int_equal(guard_delay(GUARD_FREE_FAILS + 1), 2 * GUARD_BASE_MS);
	assert_int_equal(guard_delay(GUARD_FREE_FAILS + 2), 4 * GUARD_BASE_MS);
	assert_int_equal(guard_delay(GUARD_FREE_FAILS + 40), GUARD_MAX_MS);
	assert_int_equal(guard_delay(UINT32_MAX), GUARD_MAX_MS);
}

static struct guard_table *table(void)
{
	struct guard_table *t = malloc(sizeof *t);
	assert_non_null(t);
	guard_table_init(t, seed);
	return t;
}

static uint64_t key_hash(struct guard_table *t, const char *a, const char *name)
{
	struct sockaddr_storage ss = addr(a);
	struct guard_key k;
	guard_source_key(&ss, &k);
	return guard_hash(t, &k, name);
}

static void names_make_different_keys(void **state)
{
	(void)state;
	struct guard_table *t = table();
	assert_int_not_equal(key_hash(t, "192.0.2.1", "alice"), key_hash(t, "192.0.2.1", "bob"));
	assert_int_not_equal(key_hash(t, "192.0.2.1", "alice"), key_hash(t, "192.0.2.1", NULL));
	assert_int_equal(key_hash(t, "192.0.2.1", "alice"), key_hash(t, "192.0.2.1", "alice"));
	free(t);
}

static void attempts_of_a_clean_key_start_at_once(void **state)
{
	(void)state;
	struct guard_table *t = table();
	uint64_t h = key_hash(t, "192.0.2.1", NULL);
	for (int i = 0; i < 10; i++)
		assert_int_equal(guard_admit(t, h, 1000 + i), 1000 + i);
	for (int i = 0; i < GUARD_FREE_FAILS - 1; i++)
		guard_fail(t, h, 2000);
	assert_int_equal(guard_admit(t, h, 2001), 2001);
	free(t);
}

static void after_the_free_failures_attempts_wait_and_are_spaced(void **state)
{
	(void)state;
	struct guard_table *t = table();
	uint64_t h = key_hash(t, "192.0.2.1", NULL), other = key_hash(t, "192.0.2.2", NULL);
	for (int i = 0; i < GUARD_FREE_FAILS; i++)
		guard_fail(t, h, 5000);
	/* the next attempt waits the back-off from the last failure */
	assert_int_equal(guard_admit(t, h, 5010), 5000 + GUARD_BASE_MS);
	/* attempts in parallel are spaced, not let through together */
	assert_int_equal(guard_admit(t, h, 5020), 5000 + 2 * GUARD_BASE_MS);
	assert_int_equal(guard_admit(t, h, 5030), 5000 + 3 * GUARD_BASE_MS);
	/* another key is not affected */
	assert_int_equal(guard_admit(t, other, 5040), 5040);
	/* one more failure doubles the wait */
	guard_fail(t, h, 6000);
	assert_int_equal(guard_admit(t, h, 6000), 6000 + 2 * GUARD_BASE_MS);
	free(t);
}

/* The user's key: waiting reserves nothing, only a started check does. */
static void holding_reserves_nothing_a_started_check_does(void **state)
{
	(void)state;
	struct guard_table *t = table();
	uint64_t h = key_hash(t, "192.0.2.1", "alice");
	for (int i = 0; i < GUARD_FREE_FAILS; i++)
		guard_fail(t, h, 5000);
	for (int i = 0; i < 10; i++) /* ten waiters, abandoned or not */
		assert_int_equal(guard_hold_until(t, h, 5010), 5000 + GUARD_BASE_MS);
	assert_int_equal(guard_hold_until(t, h, 5000 + GUARD_BASE_MS), 5000 + GUARD_BASE_MS);
	guard_reserve(t, h, 5000 + GUARD_BASE_MS);
	/* the next waits the back-off of the failures and the check in flight */
	assert_int_equal(guard_hold_until(t, h, 5000 + GUARD_BASE_MS),
	                 5000 + GUARD_BASE_MS + guard_delay(GUARD_FREE_FAILS + 1));
	/* a clean key: nothing to hold, nothing reserved */
	uint64_t clean = key_hash(t, "192.0.2.1", "bob");
	guard_reserve(t, clean, 5000);
	assert_int_equal(guard_hold_until(t, clean, 5000), 5000);
	free(t);
}

static void failures_decay_with_time(void **state)
{
	(void)state;
	struct guard_table *t = table();
	uint64_t h = key_hash(t, "192.0.2.1", NULL);
	for (int i = 0; i < GUARD_FREE_FAILS + 1; i++)
		guard_fail(t, h, 0);
	assert_int_equal(guard_fails(t, h, 0), GUARD_FREE_FAILS + 1);
	assert_int_equal(guard_fails(t, h, GUARD_FORGET_MS - 1), GUARD_FREE_FAILS + 1);
	assert_int_equal(guard_fails(t, h, GUARD_FORGET_MS), GUARD_FREE_FAILS);
	/* long quiet: all forgotten, attempts start at once */
	int64_t later = (int64_t)(GUARD_FREE_FAILS + 2) * GUARD_FORGET_MS;
	assert_int_equal(guard_admit(t, h, later), later);
	assert_int_equal(guard_fails(t, h, later), 0);
	free(t);
}

/* Checks started and not answered count as failures to come, so a burst
 * from many addresses gets the free ones at once and then takes turns;
 * answers (successes too) take them off, and forget no failure. */
static void checks_in_flight_count_as_failures_to_come(void **state)
{
	(void)state;
	struct guard_table *t = table();
	uint64_t h = key_hash(t, "192.0.2.1", "alice");
	for (int i = 0; i < GUARD_FREE_FAILS; i++) {
		assert_int_equal(guard_hold_until(t, h, 100), 100);
		guard_reserve(t, h, 100);
	}
	assert_int_equal(guard_hold_until(t, h, 100), 100 + GUARD_BASE_MS);
	for (int i = 0; i < GUARD_FREE_FAILS; i++)
		guard_done(t, h, 150);
	assert_int_equal(guard_hold_until(t, h, 100 + GUARD_BASE_MS), 100 + GUARD_BASE_MS);
	/* failures on record stay through a success */
	for (int i = 0; i < GUARD_FREE_FAILS; i++)
		guard_fail(t, h, 1000);
	guard_reserve(t, h, 2000);
	guard_done(t, h, 2000);
	assert_int_equal(guard_fails(t, h, 2000), GUARD_FREE_FAILS);
	assert_true(guard_hold_until(t, h, 2000) > 2000);
	free(t);
}

static void a_full_bucket_replaces_its_least_failing_record_and_counts_it(void **state)
{
	(void)state;
	struct guard_table *t = table();
	/* find GUARD_WAYS + 1 keys of one bucket */
	uint64_t hs[GUARD_WAYS + 1];
	int n = 0;
	uint64_t bucket = key_hash(t, "10.0.0.0", NULL) % GUARD_BUCKETS;
	hs[n++] = key_hash(t, "10.0.0.0", NULL);
	for (uint32_t i = 1; n < GUARD_WAYS + 1 && i < (1u << 24); i++) {
		char text[32];
		snprintf(text, sizeof text, "10.%u.%u.%u", i >> 16 & 255, i >> 8 & 255, i & 255);
		uint64_t h = key_hash(t, text, NULL);
		if (h % GUARD_BUCKETS == bucket)
			hs[n++] = h;
	}
	assert_int_equal(n, GUARD_WAYS + 1);
	/* record k gets k + 1 failures: record 0 is the least useful */
	for (int k = 0; k < GUARD_WAYS; k++)
		for (int i = 0; i <= k; i++)
			guard_fail(t, hs[k], 10);
	assert_int_equal(t->replaced, 0);
	guard_fail(t, hs[GUARD_WAYS], 20);
	assert_int_equal(t->replaced, 1);
	assert_int_equal(guard_fails(t, hs[0], 20), 0);
	for (int k = 1; k < GUARD_WAYS; k++)
		assert_int_equal(guard_fails(t, hs[k], 20), (uint32_t)k + 1);
	assert_int_equal(guard_fails(t, hs[GUARD_WAYS], 20), 1);
	/* records whose failures have decayed are reused without counting */
	guard_fail(t, hs[0], 10 + (int64_t)(GUARD_WAYS + 2) * GUARD_FORGET_MS);
	assert_int_equal(t->replaced, 1);
	free(t);
}

static void connection_counts_cap_each_source(void **state)
{
	(void)state;
	struct guard_counts c;
	guard_counts_init(&c, seed);
	struct sockaddr_storage a = addr("192.0.2.1"), b = addr("192.0.2.2"),
	                        a6 = addr("::ffff:192.0.2.1");
	struct guard_key ka, kb, ka6;
	guard_source_key(&a, &ka);
	guard_source_key(&b, &kb);
	guard_source_key(&a6, &ka6);
	for (int i = 0; i < 3; i++)
		assert_true(guard_enter(&c, &ka, 3));
	assert_false(guard_enter(&c, &ka, 3));
	assert_false(guard_enter(&c, &ka6, 3)); /* the same client */
	assert_int_equal(guard_count(&c, &ka), 3);
	assert_true(guard_enter(&c, &kb, 3));
	guard_leave(&c, &ka);
	assert_true(guard_enter(&c, &ka, 3));
	/* no cap: counted all the same */
	for (int i = 0; i < 100; i++)
		assert_true(guard_enter(&c, &kb, 0));
	assert_int_equal(guard_count(&c, &kb), 101);
	for (int i = 0; i < 101; i++)
		guard_leave(&c, &kb);
	assert_int_equal(guard_count(&c, &kb), 0);
	guard_leave(&c, &kb); /* one too many: ignored */
	assert_int_equal(guard_count(&c, &kb), 0);
	guard_counts_free(&c); /* frees what is still counted (ka) */
}

#define T(f) cmocka_unit_test(f)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(ipv4_sources_are_addresses_and_networks_are_slash_24),
		T(ipv6_sources_are_slash_64_and_networks_slash_48),
		T(back_off_is_free_then_doubles_to_a_cap),
		T(names_make_different_keys),
		T(attempts_of_a_clean_key_start_at_once),
		T(after_the_free_failures_attempts_wait_and_are_spaced),
		T(holding_reserves_nothing_a_started_check_does),
		T(failures_decay_with_time),
		T(checks_in_flight_count_as_failures_to_come),
		T(a_full_bucket_replaces_its_least_failing_record_and_counts_it),
		T(connection_counts_cap_each_source),
	};
	return cmocka_run_group_tests_name("guard", tests, NULL, NULL);
}
