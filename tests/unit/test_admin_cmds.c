/*
 * Unit tests for master/admin_cmds: the pipo request handlers, run against
 * a stand-in master (the master_* functions below) and an anonymous shared
 * segment.  Covers payload parsing (short, trailing, NUL), the name rule
 * of user changes, the mapping of the master's errno to pipo statuses,
 * setting ranges, and whether an admin session's rights still hold after
 * the users table changed.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../admin/pipo.h"
#include "../../master/admin_cmds.h"
#include "../../master/master.h"
#include "../../shared/shm.h"

/* ---- the stand-in master ------------------------------------------------- */

static struct fake {
	struct settings cfg;
	int applied;
	int reload_rc;
	/* master_user_change */
	int user_calls;
	int user_rc;
	bool user_persisted;
	enum master_user_op op;
	char name[PIPO_MAX_NAME + 1], pass[PIPO_MAX_NAME + 1];
	bool admin;
} F;

const struct settings *master_settings(struct master *m)
{
	(void)m;
	return &F.cfg;
}

void master_apply(struct master *m, const struct settings *s)
{
	(void)m;
	F.cfg = *s;
	F.applied++;
}

int master_reload(struct master *m)
{
	(void)m;
	return F.reload_rc;
}

int master_user_change(struct master *m, enum master_user_op op, const char *name,
                       const char *pass, bool admin, bool *persisted)
{
	(void)m;
	F.user_calls++;
	F.op = op;
	snprintf(F.name, sizeof F.name, "%s", name);
	snprintf(F.pass, sizeof F.pass, "%s", pass);
	F.admin = admin;
	*persisted = F.user_persisted;
	return F.user_rc;
}

static struct shm_segment *seg;
static struct admin_ctx ctx;

static int setup(void **state)
{
	(void)state;
	memset(&F, 0, sizeof F);
	settings_defaults(&F.cfg);
	if (shm_create(NULL, NULL, 0, &seg) != 0)
		return -1;
	ctx = (struct admin_ctx){.m = NULL, .seg = seg, .admin_sessions = 1};
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	shm_destroy(seg);
	return 0;
}

/* ---- helpers ------------------------------------------------------------- */

struct req {
	uint8_t p[1024];
	size_t n;
};

static void put8(struct req *r, uint8_t v)
{
	r->p[r->n++] = v;
}

static void put32(struct req *r, uint32_t v)
{
	for (int i = 3; i >= 0; i--)
		put8(r, (uint8_t)(v >> (8 * i)));
}

static void putstr(struct req *r, const char *s, size_t n)
{
	put8(r, (uint8_t)n);
	memcpy(r->p + r->n, s, n);
	r->n += n;
}

static uint8_t answer(uint8_t type, uint8_t cmd, const struct req *r, uint8_t *out, size_t *outlen)
{
	static uint8_t body[8192];
	struct pipo_buf b = {.p = out ? out : body, .cap = sizeof body};
	struct pipo_cur c = {.p = r->p, .len = r->n};
	uint8_t st = type == PIPO_QUERY ? admin_cmd_query(&ctx, cmd, &c, &b)
	                                : admin_cmd_modify(&ctx, cmd, &c, &b);
	if (outlen)
		*outlen = b.len;
	return st;
}

static uint8_t user_req(uint8_t cmd, const char *name, size_t nlen, const char *pass,
                        size_t plen, int admin)
{
	struct req r = {0};
	putstr(&r, name, nlen);
	if (cmd != PIPO_M_DEL_USER)
		putstr(&r, pass, plen);
	if (cmd == PIPO_M_ADD_USER)
		put8(&r, (uint8_t)admin);
	return answer(PIPO_MODIFY, cmd, &r, NULL, NULL);
}

#define USER(cmd, name, pass, admin) user_req(cmd, name, strlen(name), pass, strlen(pass), admin)

/* ---- user changes -------------------------------------------------------- */

static void add_user_passes_its_fields_to_the_master(void **state)
{
	(void)state;
	F.user_persisted = true;
	uint8_t out[16];
	size_t n;
	struct req r = {0};
	putstr(&r, "carol", 5);
	putstr(&r, "carol pw", 8);
	put8(&r, 1);
	assert_int_equal(answer(PIPO_MODIFY, PIPO_M_ADD_USER, &r, out, &n), PIPO_OK);
	assert_int_equal(F.user_calls, 1);
	assert_int_equal(F.op, MASTER_USER_ADD);
	assert_string_equal(F.name, "carol");
	assert_string_equal(F.pass, "carol pw");
	assert_true(F.admin);
	assert_int_equal(n, 1);
	assert_int_equal(out[0], 1); /* persisted */
}

static void names_the_config_file_cannot_hold_are_invalid(void **state)
{
	(void)state;
	static const char *const bad[] = {"eve\nadmin = x:y", "eve\r", "\x1b[31meve", "eve\x7f",
	                                  " eve", "eve ", "\teve", "eve\t"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		assert_int_equal(USER(PIPO_M_ADD_USER, bad[i], "pw", 0), PIPO_E_INVALID);
		assert_int_equal(USER(PIPO_M_PASSWORD, bad[i], "pw", 0), PIPO_E_INVALID);
	}
	assert_int_equal(F.user_calls, 0);
	/* ':' '#' and inner blanks are allowed by the rule */
	assert_int_equal(USER(PIPO_M_ADD_USER, "a:b #c d", "pw", 0), PIPO_OK);
	assert_int_equal(F.user_calls, 1);
}

static void empty_fields_and_admin_byte_checked(void **state)
{
	(void)state;
	assert_int_equal(USER(PIPO_M_ADD_USER, "", "pw", 0), PIPO_E_INVALID);
	assert_int_equal(USER(PIPO_M_ADD_USER, "bob", "", 0), PIPO_E_INVALID);
	assert_int_equal(USER(PIPO_M_PASSWORD, "bob", "", 0), PIPO_E_INVALID);
	assert_int_equal(USER(PIPO_M_ADD_USER, "bob", "pw", 2), PIPO_E_INVALID);
	assert_int_equal(USER(PIPO_M_DEL_USER, "", "", 0), PIPO_E_INVALID);
	assert_int_equal(F.user_calls, 0);
	/* a password may hold control bytes other than NUL */
	assert_int_equal(USER(PIPO_M_ADD_USER, "bob", "tab\there", 0), PIPO_OK);
}

static void nul_short_and_trailing_payloads_malformed(void **state)
{
	(void)state;
	assert_int_equal(user_req(PIPO_M_ADD_USER, "a\0b", 3, "pw", 2, 0), PIPO_E_MALFORMED);
	assert_int_equal(user_req(PIPO_M_PASSWORD, "bob", 3, "p\0w", 3, 0), PIPO_E_MALFORMED);
	struct req r = {0};
	putstr(&r, "bob", 3);
	assert_int_equal(answer(PIPO_MODIFY, PIPO_M_ADD_USER, &r, NULL, NULL), PIPO_E_MALFORMED);
	put8(&r, 0);
	assert_int_equal(answer(PIPO_MODIFY, PIPO_M_DEL_USER, &r, NULL, NULL), PIPO_E_MALFORMED);
	r.n = 0;
	put8(&r, 10); /* says 10 bytes, has 2 */
	put8(&r, 'a');
	put8(&r, 'b');
	assert_int_equal(answer(PIPO_MODIFY, PIPO_M_DEL_USER, &r, NULL, NULL), PIPO_E_MALFORMED);
	assert_int_equal(F.user_calls, 0);
}

static void master_errors_become_statuses(void **state)
{
	(void)state;
	static const struct {
		int rc;
		uint8_t st;
	} map[] = {
	    {0, PIPO_OK},
	    {-EEXIST, PIPO_E_EXISTS},
	    {-ENOENT, PIPO_E_NOT_FOUND},
	    {-EPERM, PIPO_E_FIXED},
	    {-EINVAL, PIPO_E_INVALID},
	    {-ENOSPC, PIPO_E_FULL},
	    {-EIO, PIPO_E_SERVER},
	    {-ENOMEM, PIPO_E_SERVER},
	};
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
		F.user_rc = map[i].rc;
		assert_int_equal(USER(PIPO_M_PASSWORD, "bob", "pw", 0), map[i].st);
		assert_int_equal(USER(PIPO_M_DEL_USER, "bob", "", 0), map[i].st);
	}
	assert_int_equal(F.op, MASTER_USER_DEL);
}

/* ---- settings and queries ------------------------------------------------ */

static void setting_ranges_and_apply(void **state)
{
	(void)state;
	struct req r = {0};
	put32(&r, 4095);
	assert_int_equal(answer(PIPO_MODIFY, PIPO_M_BUFFER_SIZE, &r, NULL, NULL), PIPO_E_INVALID);
	assert_int_equal(F.applied, 0);
	r.n = 0;
	put32(&r, 65536);
	assert_int_equal(answer(PIPO_MODIFY, PIPO_M_BUFFER_SIZE, &r, NULL, NULL), PIPO_OK);
	assert_int_equal(F.applied, 1);
	assert_int_equal(F.cfg.buffer_size, 65536);
	uint8_t out[8];
	size_t n;
	struct req q = {0};
	assert_int_equal(answer(PIPO_QUERY, PIPO_Q_BUFFER_SIZE, &q, out, &n), PIPO_OK);
	assert_int_equal(n, 4);
	assert_int_equal(((uint32_t)out[0] << 24) | ((uint32_t)out[1] << 16) | (out[2] << 8) | out[3],
	                 65536);
	put8(&q, 0);
	assert_int_equal(answer(PIPO_QUERY, PIPO_Q_BUFFER_SIZE, &q, NULL, NULL), PIPO_E_MALFORMED);
}

static void unknown_commands_and_reload(void **state)
{
	(void)state;
	struct req r = {0};
	assert_int_equal(answer(PIPO_QUERY, 0xee, &r, NULL, NULL), PIPO_E_UNKNOWN);
	assert_int_equal(answer(PIPO_MODIFY, 0xee, &r, NULL, NULL), PIPO_E_UNKNOWN);
	F.reload_rc = -ENOENT;
	assert_int_equal(answer(PIPO_MODIFY, PIPO_M_RELOAD, &r, NULL, NULL), PIPO_E_INVALID);
	F.reload_rc = 0;
	assert_int_equal(answer(PIPO_MODIFY, PIPO_M_RELOAD, &r, NULL, NULL), PIPO_OK);
}

static void user_conns_of_unknown_user_not_found(void **state)
{
	(void)state;
	assert_true(shm_user_put(seg, "alice", "$h$a", false) >= 0);
	struct req r = {0};
	putstr(&r, "bob", 3);
	assert_int_equal(answer(PIPO_QUERY, PIPO_Q_USER_CONNS, &r, NULL, NULL), PIPO_E_NOT_FOUND);
	r.n = 0;
	putstr(&r, "alice", 5);
	uint8_t out[8];
	size_t n;
	assert_int_equal(answer(PIPO_QUERY, PIPO_Q_USER_CONNS, &r, out, &n), PIPO_OK);
	assert_int_equal(n, 4);
}

/* ---- rights of an admin session ------------------------------------------ */

static struct admin_rights login(const char *name)
{
	struct shm_user u;
	int slot = shm_user_get(seg, name, &u);
	assert_true(slot >= 0);
	return (struct admin_rights){.slot = slot, .id = u.id, .gen = u.cred_gen};
}

static void rights_hold_until_the_user_changes(void **state)
{
	(void)state;
	bool only_password;
	assert_true(shm_user_put(seg, "root", "$h$1", true) >= 0);
	struct admin_rights r = login("root");
	assert_true(admin_rights_hold(seg, &r, &only_password));
	assert_false(only_password);

	/* a new password */
	assert_true(shm_user_put(seg, "root", "$h$2", true) >= 0);
	assert_false(admin_rights_hold(seg, &r, &only_password));
	assert_true(only_password);

	/* demoted */
	r = login("root");
	assert_true(shm_user_put(seg, "root", "$h$2", false) >= 0);
	assert_false(admin_rights_hold(seg, &r, &only_password));
	assert_false(only_password);

	/* deleted, then a user of the same name added again */
	assert_true(shm_user_put(seg, "root", "$h$2", true) >= 0);
	r = login("root");
	assert_int_equal(shm_user_del(seg, "root"), 0);
	assert_false(admin_rights_hold(seg, &r, NULL));
	assert_true(shm_user_put(seg, "root", "$h$2", true) >= 0);
	assert_false(admin_rights_hold(seg, &r, &only_password));
	assert_false(only_password);

	/* no record at all */
	struct admin_rights none = {.slot = -1};
	assert_false(admin_rights_hold(seg, &none, NULL));
	struct admin_rights far = {.slot = SHM_MAX_USERS};
	assert_false(admin_rights_hold(seg, &far, NULL));
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(add_user_passes_its_fields_to_the_master),
	    T(names_the_config_file_cannot_hold_are_invalid),
	    T(empty_fields_and_admin_byte_checked),
	    T(nul_short_and_trailing_payloads_malformed),
	    T(master_errors_become_statuses),
	    T(setting_ranges_and_apply),
	    T(unknown_commands_and_reload),
	    T(user_conns_of_unknown_user_not_found),
	    T(rights_hold_until_the_user_changes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
