/*
 * Unit tests for shared/shm: the segment header, the users table, settings
 * publication, metrics slots and their retirement, the robust mutexes
 * (a holder killed while holding a lock leaves it recoverable), and the
 * named segment's lifetime.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../../shared/shm.h"

static int seg_setup(void **state)
{
	struct shm_segment *seg = NULL;
	if (shm_create(NULL, NULL, 0, &seg) != 0 || !seg)
		return -1;
	*state = seg;
	return 0;
}

static int seg_teardown(void **state)
{
	shm_destroy(*state);
	return 0;
}

/* ---- header ------------------------------------------------------------- */

static void anonymous_segment_has_magic_version_and_size(void **state)
{
	struct shm_segment *seg = *state;
	assert_int_equal(shm_check(seg), 0);
	assert_true(seg->magic == SHM_MAGIC);
	assert_int_equal(seg->layout_version, SHM_LAYOUT_VERSION);
	assert_int_equal(seg->size, sizeof *seg);
	assert_int_equal(seg->master_pid, getpid());
	assert_int_equal(shm_user_count(seg), 0);
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++)
		assert_int_equal(seg->slots[i].index, i);
}

static void check_rejects_a_wrong_magic_or_layout(void **state)
{
	struct shm_segment *seg = *state;
	seg->magic ^= 1;
	assert_true(shm_check(seg) < 0);
	seg->magic ^= 1;
	assert_int_equal(shm_check(seg), 0);

	seg->layout_version++;
	assert_true(shm_check(seg) < 0);
	seg->layout_version--;

	seg->size--;
	assert_true(shm_check(seg) < 0);
	seg->size++;
	assert_int_equal(shm_check(seg), 0);
}

static void metrics_slots_are_cache_line_aligned(void **state)
{
	struct shm_segment *seg = *state;
	for (int i = 0; i < 2; i++)
		assert_int_equal((uintptr_t)&seg->slots[i] % 64, 0);
}

/* ---- users -------------------------------------------------------------- */

static void put_then_get_returns_the_record(void **state)
{
	struct shm_segment *seg = *state;
	struct shm_user u;
	int slot = shm_user_put(seg, "alice", "$hash$a", false);
	assert_true(slot >= 0 && slot < SHM_MAX_USERS);
	assert_int_equal(shm_user_count(seg), 1);
	assert_int_equal(shm_user_get(seg, "alice", &u), slot);
	assert_string_equal(u.name, "alice");
	assert_string_equal(u.hash, "$hash$a");
	assert_int_equal(u.admin, 0);
	assert_int_not_equal(u.used, 0);
	assert_true(u.id != 0);
	assert_true(shm_user_alive(seg, (uint32_t)slot, u.id));

	int s2 = shm_user_put(seg, "root", "$hash$r", true);
	assert_true(s2 >= 0);
	assert_int_not_equal(s2, slot);
	struct shm_user r;
	assert_int_equal(shm_user_get(seg, "root", &r), s2);
	assert_int_not_equal(r.admin, 0);
	assert_true(r.id != u.id);
	assert_int_equal(shm_user_count(seg), 2);
}

static void names_are_compared_exactly(void **state)
{
	struct shm_segment *seg = *state;
	struct shm_user u;
	assert_true(shm_user_put(seg, "alice", "h", false) >= 0);
	assert_int_equal(shm_user_get(seg, "Alice", &u), -ENOENT);
	assert_int_equal(shm_user_get(seg, "alic", &u), -ENOENT);
	assert_int_equal(shm_user_get(seg, "alice ", &u), -ENOENT);
	assert_int_equal(shm_user_get(seg, "", &u), -ENOENT);
	assert_int_equal(shm_user_del(seg, "ALICE"), -ENOENT);
	assert_int_equal(shm_user_count(seg), 1);
}

static void get_of_a_missing_user_is_enoent(void **state)
{
	struct shm_segment *seg = *state;
	struct shm_user u;
	assert_int_equal(shm_user_get(seg, "nobody", &u), -ENOENT);
	assert_int_equal(shm_user_del(seg, "nobody"), -ENOENT);
}

static void password_change_bumps_cred_gen_and_keeps_the_id(void **state)
{
	struct shm_segment *seg = *state;
	struct shm_user before, after;
	int slot = shm_user_put(seg, "alice", "$old$", false);
	assert_true(slot >= 0);
	assert_int_equal(shm_user_get(seg, "alice", &before), slot);
	uint64_t gen = seg->users_gen;

	assert_int_equal(shm_user_put(seg, "alice", "$new$", false), slot);
	assert_int_equal(shm_user_get(seg, "alice", &after), slot);
	assert_true(after.id == before.id);
	assert_true(after.cred_gen > before.cred_gen);
	assert_string_equal(after.hash, "$new$");
	assert_true(seg->users_gen > gen);
	assert_true(shm_user_alive(seg, (uint32_t)slot, before.id));
	assert_int_equal(shm_user_count(seg), 1);
}

static void same_password_keeps_cred_gen(void **state)
{
	struct shm_segment *seg = *state;
	struct shm_user before, after;
	int slot = shm_user_put(seg, "alice", "$same$", false);
	assert_int_equal(shm_user_get(seg, "alice", &before), slot);
	/* Only the admin flag changes: sessions keep their credentials. */
	assert_int_equal(shm_user_put(seg, "alice", "$same$", true), slot);
	assert_int_equal(shm_user_get(seg, "alice", &after), slot);
	assert_true(after.cred_gen == before.cred_gen);
	assert_true(after.id == before.id);
	assert_int_not_equal(after.admin, 0);
}

static void delete_makes_the_user_dead_and_readd_gets_a_new_id(void **state)
{
	struct shm_segment *seg = *state;
	struct shm_user u, again;
	int slot = shm_user_put(seg, "alice", "h1", false);
	assert_int_equal(shm_user_get(seg, "alice", &u), slot);
	uint64_t gen = seg->users_gen;

	assert_int_equal(shm_user_del(seg, "alice"), 0);
	assert_false(shm_user_alive(seg, (uint32_t)slot, u.id));
	assert_int_equal(shm_user_count(seg), 0);
	assert_int_equal(shm_user_get(seg, "alice", &again), -ENOENT);
	assert_true(seg->users_gen > gen);
	assert_int_equal(shm_user_del(seg, "alice"), -ENOENT);

	int slot2 = shm_user_put(seg, "alice", "h1", false);
	assert_true(slot2 >= 0);
	assert_int_equal(shm_user_get(seg, "alice", &again), slot2);
	assert_true(again.id != u.id);
	assert_true(again.id != 0);
	/* A session that authenticated as the old alice stays dead, even when
	 * the new one reuses the slot with the same password. */
	assert_false(shm_user_alive(seg, (uint32_t)slot, u.id));
	assert_true(shm_user_alive(seg, (uint32_t)slot2, again.id));
	assert_int_equal(shm_user_count(seg), 1);
}

static void alive_is_false_for_a_slot_out_of_range_or_a_wrong_id(void **state)
{
	struct shm_segment *seg = *state;
	struct shm_user u;
	int slot = shm_user_put(seg, "alice", "h", false);
	assert_int_equal(shm_user_get(seg, "alice", &u), slot);
	assert_false(shm_user_alive(seg, SHM_MAX_USERS, u.id));
	assert_false(shm_user_alive(seg, UINT32_MAX, u.id));
	assert_false(shm_user_alive(seg, (uint32_t)slot, u.id + 1));
	assert_false(shm_user_alive(seg, (uint32_t)(slot + 1), u.id));
}

static void ids_are_never_reused(void **state)
{
	struct shm_segment *seg = *state;
	uint64_t seen[64];
	for (int i = 0; i < 64; i++) {
		struct shm_user u;
		assert_true(shm_user_put(seg, "cycle", "h", false) >= 0);
		assert_true(shm_user_get(seg, "cycle", &u) >= 0);
		for (int j = 0; j < i; j++)
			assert_true(seen[j] != u.id);
		seen[i] = u.id;
		assert_int_equal(shm_user_del(seg, "cycle"), 0);
	}
}

/* The name index: every user is found at its own slot through adds,
 * deletions and re-adds in a full table (probe chains that run past a
 * deleted entry, names that collide). */
static void users_found_by_name_through_churn(void **state)
{
	struct shm_segment *seg = *state;
	char name[32];
	int slot[SHM_MAX_USERS];
	struct shm_user u;
	for (int i = 0; i < SHM_MAX_USERS; i++) {
		snprintf(name, sizeof name, "u%d", i);
		slot[i] = shm_user_put(seg, name, "h", false);
		assert_true(slot[i] >= 0);
	}
	for (int i = 0; i < SHM_MAX_USERS; i += 3) {
		snprintf(name, sizeof name, "u%d", i);
		assert_int_equal(shm_user_del(seg, name), 0);
	}
	for (int i = 0; i < SHM_MAX_USERS; i++) {
		snprintf(name, sizeof name, "u%d", i);
		if (i % 3 == 0) {
			assert_int_equal(shm_user_get(seg, name, &u), -ENOENT);
		} else {
			assert_int_equal(shm_user_get(seg, name, &u), slot[i]);
			assert_string_equal(u.name, name);
		}
	}
	for (int i = 0; i < SHM_MAX_USERS; i += 3) {
		snprintf(name, sizeof name, "v%d", i);
		int sl = shm_user_put(seg, name, "h", false);
		assert_true(sl >= 0);
		assert_int_equal(shm_user_get(seg, name, &u), sl);
		assert_string_equal(u.name, name);
	}
	assert_int_equal(shm_user_count(seg), SHM_MAX_USERS);
	assert_int_equal(shm_user_get(seg, "u0", &u), -ENOENT);
	assert_int_equal(shm_user_get(seg, "u1", &u), slot[1]);
}

static void table_full_is_enospc_and_updates_still_work(void **state)
{
	struct shm_segment *seg = *state;
	char name[32];
	for (int i = 0; i < SHM_MAX_USERS; i++) {
		snprintf(name, sizeof name, "user%d", i);
		assert_true(shm_user_put(seg, name, "h", false) >= 0);
	}
	assert_int_equal(shm_user_count(seg), SHM_MAX_USERS);
	assert_int_equal(shm_user_put(seg, "one-too-many", "h", false), -ENOSPC);
	assert_int_equal(shm_user_count(seg), SHM_MAX_USERS);
	struct shm_user u;
	assert_int_equal(shm_user_get(seg, "one-too-many", &u), -ENOENT);

	/* An existing user can still change password when the table is full. */
	assert_true(shm_user_put(seg, "user7", "h2", false) >= 0);
	assert_true(shm_user_get(seg, "user7", &u) >= 0);
	assert_string_equal(u.hash, "h2");

	/* Deleting one makes room for exactly one. */
	assert_int_equal(shm_user_del(seg, "user500"), 0);
	assert_true(shm_user_put(seg, "one-too-many", "h", false) >= 0);
	assert_int_equal(shm_user_put(seg, "two-too-many", "h", false), -ENOSPC);
	assert_int_equal(shm_user_count(seg), SHM_MAX_USERS);
}

static void name_length_must_be_1_to_255(void **state)
{
	struct shm_segment *seg = *state;
	char name[SHM_USER_NAME_MAX + 2];
	assert_true(shm_user_put(seg, "", "h", false) < 0);

	memset(name, 'n', SHM_USER_NAME_MAX + 1);
	name[SHM_USER_NAME_MAX + 1] = '\0'; /* 256 */
	assert_true(shm_user_put(seg, name, "h", false) < 0);
	assert_int_equal(shm_user_count(seg), 0);

	name[SHM_USER_NAME_MAX] = '\0'; /* 255 */
	assert_true(shm_user_put(seg, name, "h", false) >= 0);
	struct shm_user u;
	assert_true(shm_user_get(seg, name, &u) >= 0);
	assert_int_equal(strlen(u.name), SHM_USER_NAME_MAX);

	assert_true(shm_user_put(seg, "x", "h", false) >= 0); /* 1 */
	assert_int_equal(shm_user_count(seg), 2);
}

static void hash_must_fit_its_field(void **state)
{
	struct shm_segment *seg = *state;
	char hash[SHM_HASH_MAX + 1];
	memset(hash, 'h', SHM_HASH_MAX);
	hash[SHM_HASH_MAX] = '\0'; /* 160: no room for the NUL */
	assert_true(shm_user_put(seg, "alice", hash, false) < 0);
	assert_int_equal(shm_user_count(seg), 0);
	hash[SHM_HASH_MAX - 1] = '\0'; /* 159 */
	assert_true(shm_user_put(seg, "alice", hash, false) >= 0);
	struct shm_user u;
	assert_true(shm_user_get(seg, "alice", &u) >= 0);
	assert_string_equal(u.hash, hash);
}

static void concurrent_puts_from_processes_lose_nothing(void **state)
{
	struct shm_segment *seg = *state;
	enum { PROCS = 4, EACH = 150 };
	pid_t pids[PROCS];
	for (int p = 0; p < PROCS; p++) {
		pids[p] = fork();
		assert_true(pids[p] >= 0);
		if (pids[p] == 0) {
			char name[32];
			for (int i = 0; i < EACH; i++) {
				snprintf(name, sizeof name, "p%d-u%d", p, i);
				if (shm_user_put(seg, name, "h", false) < 0)
					_exit(1);
				/* Churn: one change and one delete per user. */
				if (shm_user_put(seg, name, "h2", false) < 0)
					_exit(2);
				if (i % 3 == 0 && shm_user_del(seg, name) != 0)
					_exit(3);
			}
			_exit(0);
		}
	}
	for (int p = 0; p < PROCS; p++) {
		int st;
		assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), 0);
	}
	uint32_t want = PROCS * (EACH - (EACH + 2) / 3);
	assert_int_equal(shm_user_count(seg), want);
	uint32_t used = 0;
	for (int i = 0; i < SHM_MAX_USERS; i++) {
		if (!seg->users[i].used)
			continue;
		used++;
		assert_true(seg->users[i].cred_gen >= 2);
		for (int j = 0; j < i; j++)
			if (seg->users[j].used)
				assert_true(seg->users[j].id != seg->users[i].id);
	}
	assert_int_equal(used, want);
}

/* ---- settings ----------------------------------------------------------- */

static void settings_publish_bumps_generation_and_read_returns_it(void **state)
{
	struct shm_segment *seg = *state;
	struct settings s, got;
	settings_defaults(&s);
	memset(&got, 0x5a, sizeof got);
	uint64_t g0 = shm_settings_read(seg, &got);

	s.port = 1234;
	shm_settings_publish(seg, &s);
	uint64_t g1 = shm_settings_read(seg, &got);
	assert_true(g1 > g0);
	assert_memory_equal(&got, &s, sizeof s);

	s.port = 4321;
	s.workers = 3;
	shm_settings_publish(seg, &s);
	uint64_t g2 = shm_settings_read(seg, &got);
	assert_true(g2 > g1);
	assert_int_equal(got.port, 4321);
	assert_int_equal(got.workers, 3);

	/* Reading does not bump it. */
	assert_true(shm_settings_read(seg, &got) == g2);
}

static void settings_published_by_a_child_are_seen_by_the_parent(void **state)
{
	struct shm_segment *seg = *state;
	struct settings s, got;
	uint64_t g0 = shm_settings_read(seg, &got);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		settings_defaults(&s);
		s.idle_timeout_s = 77;
		shm_settings_publish(seg, &s);
		_exit(0);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_true(shm_settings_read(seg, &got) > g0);
	assert_int_equal(got.idle_timeout_s, 77);
}

/* ---- metrics ------------------------------------------------------------ */

static void counters_sum_across_slots(void **state)
{
	struct shm_segment *seg = *state;
	shm_count(&seg->slots[0], M_BYTES_UP, 100);
	shm_count(&seg->slots[3], M_BYTES_UP, 200);
	shm_count(&seg->slots[SHM_MAX_WORKERS - 1], M_BYTES_UP, 5);
	shm_count(&seg->slots[3], M_REQUESTS, 1);
	shm_count(&seg->slots[3], M_REQUESTS, 1);
	shm_count(&seg->slots[1], (enum shm_counter)(M_REPLY_0 + 5), 1);
	assert_true(seg->slots[3].counters[M_BYTES_UP] == 200);
	assert_true(shm_counter_sum(seg, M_BYTES_UP) == 305);
	assert_true(shm_counter_sum(seg, M_REQUESTS) == 2);
	assert_true(shm_counter_sum(seg, (enum shm_counter)(M_REPLY_0 + 5)) == 1);
	assert_true(shm_counter_sum(seg, M_BYTES_DOWN) == 0);
}

/* A bound is inclusive (Prometheus' le); the last bucket takes the rest. */
static void a_value_falls_in_the_first_bucket_whose_bound_holds_it(void **state)
{
	(void)state;
	static const uint64_t b[] = SHM_SESSION_DUR_BOUNDS_MS;
	unsigned n = sizeof b / sizeof b[0];
	assert_int_equal(shm_bucket(b, n, 0), 0);
	assert_int_equal(shm_bucket(b, n, 10), 0);
	assert_int_equal(shm_bucket(b, n, 11), 1);
	assert_int_equal(shm_bucket(b, n, 250), 3);
	assert_int_equal(shm_bucket(b, n, 300), 4);
	assert_int_equal(shm_bucket(b, n, 3600000), n - 2);
	assert_int_equal(shm_bucket(b, n, 3600001), n - 1);
	assert_int_equal(shm_bucket(b, n, UINT64_MAX), n - 1);
	/* bounds that are all finite: the last still takes what is above */
	static const uint64_t two[] = {5, 7};
	assert_int_equal(shm_bucket(two, 2, 6), 1);
	assert_int_equal(shm_bucket(two, 2, 1000), 1);
}

static void an_observation_counts_its_bucket_and_adds_to_the_sum(void **state)
{
	struct shm_segment *seg = *state;
	static const uint64_t b[] = SHM_CONNECT_LAT_BOUNDS_US;
	unsigned n = sizeof b / sizeof b[0];
	shm_observe(&seg->slots[1], M_CONNECT_LAT_0, b, n, M_CONNECT_LAT_SUM_US, 250);
	shm_observe(&seg->slots[2], M_CONNECT_LAT_0, b, n, M_CONNECT_LAT_SUM_US, 300);
	shm_observe(&seg->slots[2], M_CONNECT_LAT_0, b, n, M_CONNECT_LAT_SUM_US, 20000000);
	assert_true(shm_counter_sum(seg, M_CONNECT_LAT_0 + 1) == 2);
	assert_true(shm_counter_sum(seg, (enum shm_counter)(M_CONNECT_LAT_END - 1)) == 1);
	assert_true(shm_counter_sum(seg, M_CONNECT_LAT_SUM_US) == 20000550);
	uint64_t all = 0;
	for (int c = M_CONNECT_LAT_0; c < M_CONNECT_LAT_END; c++)
		all += shm_counter_sum(seg, (enum shm_counter)c);
	assert_true(all == 3);
	/* the other histograms and the replies are untouched */
	for (int c = M_SESSION_DUR_SUM_MS; c < M_SESSION_DUR_END; c++)
		assert_true(shm_counter_sum(seg, (enum shm_counter)c) == 0);
	for (int c = M_REPLY_0; c < M_REPLY_END; c++)
		assert_true(shm_counter_sum(seg, (enum shm_counter)c) == 0);
}

static void gauges_go_up_and_down_per_slot_and_sum(void **state)
{
	struct shm_segment *seg = *state;
	shm_gauge_add(&seg->slots[0], G_CONN_CURRENT, 3);
	shm_gauge_add(&seg->slots[2], G_CONN_CURRENT, 2);
	shm_gauge_add(&seg->slots[2], G_CONN_CURRENT, -1);
	shm_gauge_add(&seg->slots[0], G_CONN_RELAYING, 1);
	assert_true(seg->slots[2].gauges[G_CONN_CURRENT] == 1);
	assert_true(shm_gauge_sum(seg, G_CONN_CURRENT) == 4);
	assert_true(shm_gauge_sum(seg, G_CONN_RELAYING) == 1);
	shm_gauge_add(&seg->slots[0], G_CONN_CURRENT, -3);
	shm_gauge_add(&seg->slots[2], G_CONN_CURRENT, -1);
	assert_true(shm_gauge_sum(seg, G_CONN_CURRENT) == 0);
}

static void user_conns_sum_across_slots(void **state)
{
	struct shm_segment *seg = *state;
	seg->slots[0].user_conns[5] = 2;
	seg->slots[9].user_conns[5] = 3;
	seg->slots[9].user_conns[6] = 1;
	assert_true(shm_user_conns_sum(seg, 5) == 5);
	assert_true(shm_user_conns_sum(seg, 6) == 1);
	assert_true(shm_user_conns_sum(seg, SHM_MAX_USERS - 1) == 0);
}

static void retire_folds_counters_and_zeroes_gauges_and_user_conns(void **state)
{
	struct shm_segment *seg = *state;
	struct shm_worker_slot *w = &seg->slots[4];
	w->pid = 4242;
	shm_count(&seg->slots[1], M_CONN_TOTAL, 10);
	shm_count(w, M_CONN_TOTAL, 7);
	shm_count(w, M_BYTES_DOWN, 1000);
	shm_gauge_add(w, G_CONN_CURRENT, 4);
	shm_gauge_add(w, G_CONN_RELAYING, 2);
	shm_gauge_add(&seg->slots[1], G_CONN_CURRENT, 1);
	w->user_conns[3] = 2;
	seg->slots[1].user_conns[3] = 1;

	uint64_t before[M_COUNTERS];
	for (int c = 0; c < M_COUNTERS; c++)
		before[c] = shm_counter_sum(seg, (enum shm_counter)c);

	shm_worker_retire(seg, 4);

	for (int c = 0; c < M_COUNTERS; c++) {
		assert_true(shm_counter_sum(seg, (enum shm_counter)c) == before[c]);
		assert_true(w->counters[c] == 0);
	}
	assert_true(seg->retired[M_CONN_TOTAL] == 7);
	assert_true(seg->retired[M_BYTES_DOWN] == 1000);
	assert_true(w->gauges[G_CONN_CURRENT] == 0);
	assert_true(w->gauges[G_CONN_RELAYING] == 0);
	assert_true(shm_gauge_sum(seg, G_CONN_CURRENT) == 1);
	assert_true(shm_gauge_sum(seg, G_CONN_RELAYING) == 0);
	assert_true(w->user_conns[3] == 0);
	assert_true(shm_user_conns_sum(seg, 3) == 1);
	/* The other slot is untouched. */
	assert_true(seg->slots[1].counters[M_CONN_TOTAL] == 10);
	assert_int_equal(seg->slots[4].index, 4);

	/* Retiring the same slot again does not count twice. */
	shm_worker_retire(seg, 4);
	for (int c = 0; c < M_COUNTERS; c++)
		assert_true(shm_counter_sum(seg, (enum shm_counter)c) == before[c]);

	/* A replacement worker in the slot starts from zero and adds on top. */
	shm_count(w, M_CONN_TOTAL, 1);
	assert_true(shm_counter_sum(seg, M_CONN_TOTAL) == before[M_CONN_TOTAL] + 1);
}

static void counts_made_by_a_child_worker_are_seen_by_the_parent(void **state)
{
	struct shm_segment *seg = *state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		shm_count(&seg->slots[2], M_REQUESTS, 41);
		shm_gauge_add(&seg->slots[2], G_CONN_CURRENT, 2);
		_exit(0);
	}
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(shm_counter_sum(seg, M_REQUESTS) == 41);
	assert_true(shm_gauge_sum(seg, G_CONN_CURRENT) == 2);
	shm_worker_retire(seg, 2);
	assert_true(shm_counter_sum(seg, M_REQUESTS) == 41);
	assert_true(shm_gauge_sum(seg, G_CONN_CURRENT) == 0);
}

/* ---- robust locks ------------------------------------------------------- */

enum death { DIE_SIGKILL, DIE_EXIT };

/* A child takes the lock, tells the parent, and dies holding it. */
static void child_dies_holding(pthread_mutex_t *m, enum death how)
{
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		shm_lock(m);
		if (write(fds[1], "L", 1) != 1)
			_exit(2);
		if (how == DIE_EXIT)
			_exit(0);
		for (;;)
			pause(); /* killed by the parent */
	}
	close(fds[1]);
	char c;
	assert_int_equal(read(fds[0], &c, 1), 1);
	close(fds[0]);
	if (how == DIE_SIGKILL)
		assert_int_equal(kill(pid, SIGKILL), 0);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (how == DIE_SIGKILL)
		assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	else
		assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void expect_recovered_then_normal(pthread_mutex_t *m)
{
	assert_int_equal(shm_lock(m), 1); /* EOWNERDEAD, made consistent */
	shm_unlock(m);
	assert_int_equal(shm_lock(m), 0);
	shm_unlock(m);
	assert_int_equal(shm_lock(m), 0);
	shm_unlock(m);
	/* Not left locked: a non-blocking attempt succeeds. */
	assert_int_equal(pthread_mutex_trylock(m), 0);
	shm_unlock(m);
}

static void users_lock_of_a_killed_holder_is_recovered(void **state)
{
	struct shm_segment *seg = *state;
	assert_true(shm_user_put(seg, "alice", "h", false) >= 0);
	child_dies_holding(&seg->users_lock, DIE_SIGKILL);
	expect_recovered_then_normal(&seg->users_lock);
	/* And the table behind it works. */
	struct shm_user u;
	assert_true(shm_user_get(seg, "alice", &u) >= 0);
	assert_true(shm_user_put(seg, "bob", "h", false) >= 0);
	assert_int_equal(shm_user_count(seg), 2);
}

static void users_lock_of_an_exited_holder_is_recovered(void **state)
{
	struct shm_segment *seg = *state;
	child_dies_holding(&seg->users_lock, DIE_EXIT);
	expect_recovered_then_normal(&seg->users_lock);
}

static void users_api_recovers_a_lock_left_by_a_dead_holder(void **state)
{
	struct shm_segment *seg = *state;
	child_dies_holding(&seg->users_lock, DIE_SIGKILL);
	/* The first caller after the death is an ordinary API call. */
	assert_true(shm_user_put(seg, "carol", "h", false) >= 0);
	assert_int_equal(shm_user_count(seg), 1);
	assert_int_equal(shm_lock(&seg->users_lock), 0);
	shm_unlock(&seg->users_lock);
}

static void settings_lock_of_a_killed_holder_is_recovered(void **state)
{
	struct shm_segment *seg = *state;
	child_dies_holding(&seg->settings_lock, DIE_SIGKILL);
	expect_recovered_then_normal(&seg->settings_lock);
	struct settings s, got;
	settings_defaults(&s);
	s.grace_s = 3;
	shm_settings_publish(seg, &s);
	assert_true(shm_settings_read(seg, &got) > 0);
	assert_int_equal(got.grace_s, 3);
}

static void settings_api_recovers_a_lock_left_by_a_dead_holder(void **state)
{
	struct shm_segment *seg = *state;
	child_dies_holding(&seg->settings_lock, DIE_EXIT);
	struct settings s, got;
	settings_defaults(&s);
	s.port = 999;
	shm_settings_publish(seg, &s);
	shm_settings_read(seg, &got);
	assert_int_equal(got.port, 999);
}

static void lock_recovered_twice_in_a_row(void **state)
{
	struct shm_segment *seg = *state;
	child_dies_holding(&seg->users_lock, DIE_SIGKILL);
	expect_recovered_then_normal(&seg->users_lock);
	child_dies_holding(&seg->users_lock, DIE_SIGKILL);
	expect_recovered_then_normal(&seg->users_lock);
}

/* ---- named segment ------------------------------------------------------ */

static void named_segment_leaves_no_name_behind(void **state)
{
	(void)state;
	char prefix[64], name[96];
	snprintf(prefix, sizeof prefix, "/socks5d-test-%d", (int)getpid());
	struct shm_segment *seg = NULL;
	assert_int_equal(shm_create(prefix, name, sizeof name, &seg), 0);
	assert_non_null(seg);
	assert_int_equal(shm_check(seg), 0);
	/* PREFIX-<16 hex digits> */
	assert_int_equal(strncmp(name, prefix, strlen(prefix)), 0);
	assert_int_equal(strlen(name), strlen(prefix) + 17);
	/* Unlinked once mapped: nobody can open it by name. */
	errno = 0;
	assert_int_equal(shm_open(name, O_RDONLY, 0), -1);
	assert_int_equal(errno, ENOENT);
	shm_destroy(seg);
}

/* The mapping is shared with children forked after the name is gone. */
static void a_child_forked_later_shares_the_segment(void **state)
{
	(void)state;
	char name[96];
	struct shm_segment *seg = NULL;
	assert_int_equal(shm_create("/socks5d-test-fork", name, sizeof name, &seg), 0);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0)
		_exit(shm_user_put(seg, "alice", "h", false) >= 0 ? 0 : 1);
	int st;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(shm_user_count(seg), 1);
	shm_destroy(seg);
}

static void two_segments_of_one_prefix_get_different_names(void **state)
{
	(void)state;
	char prefix[64], a[96], b[96];
	snprintf(prefix, sizeof prefix, "/socks5d-test-two-%d", (int)getpid());
	struct shm_segment *sa = NULL, *sb = NULL;
	assert_int_equal(shm_create(prefix, a, sizeof a, &sa), 0);
	assert_int_equal(shm_create(prefix, b, sizeof b, &sb), 0);
	assert_string_not_equal(a, b);
	shm_destroy(sa);
	shm_destroy(sb);
}

/* Someone else's file under the old predictable name /socks5d-PID: it is
 * neither opened nor removed, and the segment is created anyway. */
static void a_planted_name_is_passed_over_and_left_alone(void **state)
{
	(void)state;
	char prefix[64], name[96];
	snprintf(prefix, sizeof prefix, "/socks5d-test-planted-%d", (int)getpid());
	int fd = shm_open(prefix, O_RDWR | O_CREAT | O_EXCL, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "planted", 7), 7);
	close(fd);

	struct shm_segment *seg = NULL;
	assert_int_equal(shm_create(prefix, name, sizeof name, &seg), 0);
	assert_int_equal(shm_check(seg), 0);
	assert_string_not_equal(name, prefix);
	shm_destroy(seg);

	fd = shm_open(prefix, O_RDONLY, 0);
	assert_true(fd >= 0);
	char buf[8] = "";
	assert_int_equal(read(fd, buf, sizeof buf), 7);
	assert_memory_equal(buf, "planted", 7);
	close(fd);
	shm_unlink(prefix);
}

static void a_name_that_does_not_fit_is_refused(void **state)
{
	(void)state;
	char name[20];
	struct shm_segment *seg = NULL;
	assert_int_equal(shm_create("/socks5d-test", name, sizeof name, &seg), -ENAMETOOLONG);
	assert_null(seg);
}

#define T(f) cmocka_unit_test_setup_teardown(f, seg_setup, seg_teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(anonymous_segment_has_magic_version_and_size),
		T(check_rejects_a_wrong_magic_or_layout),
		T(metrics_slots_are_cache_line_aligned),
		T(put_then_get_returns_the_record),
		T(names_are_compared_exactly),
		T(get_of_a_missing_user_is_enoent),
		T(password_change_bumps_cred_gen_and_keeps_the_id),
		T(same_password_keeps_cred_gen),
		T(delete_makes_the_user_dead_and_readd_gets_a_new_id),
		T(alive_is_false_for_a_slot_out_of_range_or_a_wrong_id),
		T(ids_are_never_reused),
		T(users_found_by_name_through_churn),
		T(table_full_is_enospc_and_updates_still_work),
		T(name_length_must_be_1_to_255),
		T(hash_must_fit_its_field),
		T(concurrent_puts_from_processes_lose_nothing),
		T(settings_publish_bumps_generation_and_read_returns_it),
		T(settings_published_by_a_child_are_seen_by_the_parent),
		T(counters_sum_across_slots),
		T(a_value_falls_in_the_first_bucket_whose_bound_holds_it),
		T(an_observation_counts_its_bucket_and_adds_to_the_sum),
		T(gauges_go_up_and_down_per_slot_and_sum),
		T(user_conns_sum_across_slots),
		T(retire_folds_counters_and_zeroes_gauges_and_user_conns),
		T(counts_made_by_a_child_worker_are_seen_by_the_parent),
		T(users_lock_of_a_killed_holder_is_recovered),
		T(users_lock_of_an_exited_holder_is_recovered),
		T(users_api_recovers_a_lock_left_by_a_dead_holder),
		T(settings_lock_of_a_killed_holder_is_recovered),
		T(settings_api_recovers_a_lock_left_by_a_dead_holder),
		T(lock_recovered_twice_in_a_row),
		cmocka_unit_test(named_segment_leaves_no_name_behind),
		cmocka_unit_test(a_child_forked_later_shares_the_segment),
		cmocka_unit_test(two_segments_of_one_prefix_get_different_names),
		cmocka_unit_test(a_planted_name_is_passed_over_and_left_alone),
		cmocka_unit_test(a_name_that_does_not_fit_is_refused),
	};
	return cmocka_run_group_tests_name("shm", tests, NULL, NULL);
}
