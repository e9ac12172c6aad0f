/*
 * Unit tests for master/admin_cmds: the pipo request handlers, run against
 * a stand-in master (the master_* functions below) and an anonymous shared
 * segment.  Covers payload parsing (short, trailing, NUL), the name rule
 * of user changes, the mapping of the master's errno to pipo statuses,
 * setting ranges, whether an admin session's rights still hold after
 * the users table changed, the rules listing and rule test, and the
 * version-1 requests (statuses, widths, bounds).
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
#include "../../shared/rules.h"
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
	struct rules *rules;
} F;

const struct rules *master_rules(struct master *m)
{
	(void)m;
	return F.rules;
}

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

/* The kernel's answer is the integration tests' (test_congestion.py): here
 * every name the settings table takes is one the kernel has. */
int master_check_congestion(const struct master *m, const struct settings *s,
                            const struct settings *running)
{
	(void)m;
	(void)s;
	(void)running;
	return 0;
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
	rules_free(F.rules);
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

/* ---- access rules ---------------------------------------------------------- */

static const char RULES[] = "group = staff: alice, bob\n"
                            "\n"
                            "client block from 192.0.2.0/24\n"
                            "client pass from 127.0.0.0/8\n"
                            "# a comment\n"
                            "block to blocked.example port 80\n"
                            "pass to .example.com group staff\n"
                            "block to 10.0.0.0/8\n"
                            "pass from 127.0.0.1 port 1-1024 command connect log\n";

/* The master's rules: compiled and published as the master does. */
static void load(const char *text)
{
	char err[256];
	settings_defaults(&F.cfg);
	rules_free(F.rules);
	F.rules = NULL;
	assert_int_equal(rules_shm_init(seg), 0);
	assert_int_equal(rules_compile(text, strlen(text), &F.cfg, &F.rules, err, sizeof err, NULL),
	                 0);
	assert_int_equal(rules_shm_publish(seg, text, strlen(text)), 0);
}

static uint8_t big_answer(uint8_t cmd, const struct req *r, struct pipo_cur *out)
{
	static uint8_t body[PIPO_MAX_RESPONSE];
	struct pipo_buf b = {.p = body, .cap = sizeof body};
	struct pipo_cur c = {.p = r->p, .len = r->n};
	uint8_t st = admin_cmd_query(&ctx, cmd, &c, &b);
	*out = (struct pipo_cur){.p = body, .len = b.len};
	return st;
}

static void rules_listing_gives_lines_texts_and_hits(void **state)
{
	(void)state;
	load(RULES);
	/* Two hits of rule 4 (line 7) and one of rule 1, as workers count them. */
	struct rules_match m = {.number = 4, .line = 7};
	uint64_t gen = __atomic_load_n(&seg->rules_gen, __ATOMIC_RELAXED);
	rules_shm_hit(seg, gen, &m);
	rules_shm_hit(seg, gen, &m);
	m.number = 1;
	rules_shm_hit(seg, gen, &m);
	struct req r = {0};
	struct pipo_cur c;
	assert_int_equal(big_answer(PIPO_Q_RULES, &r, &c), PIPO_OK);
	assert_int_equal(pipo_get_u64(&c), gen);
	assert_int_equal(pipo_get_u8(&c), 0); /* rules in force */
	char def[512], text[PIPO_RULE_TEXT_MAX + 1];
	pipo_get_str16(&c, def, sizeof def);
	assert_non_null(strstr(def, "169.254.0.0/16"));
	assert_non_null(strstr(def, "port 1080"));
	assert_int_equal(pipo_get_u32(&c), 6);
	static const struct {
		uint32_t line;
		uint8_t stage, action;
		uint64_t hits;
		const char *text;
	} want[] = {
	    {3, PIPO_RULE_CLIENT, PIPO_RULE_BLOCK, 1, "client block from 192.0.2.0/24"},
	    {4, PIPO_RULE_CLIENT, PIPO_RULE_PASS, 0, "client pass from 127.0.0.0/8"},
	    {6, PIPO_RULE_REQUEST, PIPO_RULE_BLOCK, 0, "block to blocked.example port 80"},
	    {7, PIPO_RULE_REQUEST, PIPO_RULE_PASS, 2, "pass to .example.com group staff"},
	    {8, PIPO_RULE_REQUEST, PIPO_RULE_BLOCK, 0, "block to 10.0.0.0/8"},
	    {9, PIPO_RULE_REQUEST, PIPO_RULE_PASS, 0,
	     "pass from 127.0.0.1 port 1-1024 command connect log"},
	};
	for (uint32_t i = 0; i < 6; i++) {
		struct pipo_rule rule;
		pipo_get_rule(&c, &rule, text, sizeof text);
		assert_false(c.bad);
		assert_int_equal(rule.number, i + 1);
		assert_int_equal(rule.line, want[i].line);
		assert_int_equal(rule.stage, want[i].stage);
		assert_int_equal(rule.action, want[i].action);
		assert_int_equal(rule.hits, want[i].hits);
		assert_string_equal(rule.text, want[i].text);
	}
	assert_true(pipo_cur_done(&c));
	/* A new generation starts its counters at 0. */
	load(RULES);
	assert_int_equal(big_answer(PIPO_Q_RULES, &r, &c), PIPO_OK);
	c.pos = 8 + 1;
	pipo_get_str16(&c, def, sizeof def);
	assert_int_equal(pipo_get_u32(&c), 6);
	for (uint32_t i = 0; i < 6; i++) {
		struct pipo_rule rule;
		pipo_get_rule(&c, &rule, text, sizeof text);
		assert_int_equal(rule.hits, 0);
	}
	/* The request payload is empty. */
	put8(&r, 0);
	assert_int_equal(big_answer(PIPO_Q_RULES, &r, &c), PIPO_E_MALFORMED);
}

static void rules_listing_says_when_only_the_default_holds(void **state)
{
	(void)state;
	load("");
	struct req r = {0};
	struct pipo_cur c;
	assert_int_equal(big_answer(PIPO_Q_RULES, &r, &c), PIPO_OK);
	(void)pipo_get_u64(&c);
	assert_int_equal(pipo_get_u8(&c), 1);
	char def[512];
	pipo_get_str16(&c, def, sizeof def);
	assert_true(strncmp(def, "pass;", 5) == 0);
	assert_int_equal(pipo_get_u32(&c), 0);
	assert_true(pipo_cur_done(&c));
}

/* A rule test's answer. */
struct verdict {
	uint8_t st;
	struct pipo_rule_verdict v;
	char text[PIPO_RULE_TEXT_MAX + 1];
};

static struct verdict test_rule(const char *user, const char *src, const char *dst,
                                uint16_t port, uint8_t cmd)
{
	struct pipo_rule_test t = {.port = port, .cmd = cmd};
	snprintf(t.user, sizeof t.user, "%s", user);
	snprintf(t.source, sizeof t.source, "%s", src);
	snprintf(t.dest, sizeof t.dest, "%s", dst);
	struct req r = {0};
	struct pipo_buf b = {.p = r.p, .cap = sizeof r.p};
	pipo_put_rule_test(&b, &t);
	r.n = b.len;
	struct verdict out;
	memset(&out, 0, sizeof out);
	struct pipo_cur c;
	out.st = big_answer(PIPO_Q_RULE_TEST, &r, &c);
	if (out.st == PIPO_OK) {
		pipo_get_rule_verdict(&c, &out.v, out.text, sizeof out.text);
		assert_true(pipo_cur_done(&c));
	} else {
		assert_int_equal(c.len, 0);
	}
	return out;
}

static void rule_test_names_the_deciding_rule(void **state)
{
	(void)state;
	load(RULES);
	uint64_t hits_before = __atomic_load_n(&seg->rule_hits[3], __ATOMIC_RELAXED);
	/* an address literal */
	struct verdict v = test_rule("", "127.0.0.1", "10.1.2.3", 443, PIPO_RULE_CONNECT);
	assert_int_equal(v.st, PIPO_OK);
	assert_int_equal(v.v.decision, PIPO_RULE_BLOCK);
	assert_int_equal(v.v.stage, PIPO_RULE_REQUEST);
	assert_int_equal(v.v.number, 5);
	assert_int_equal(v.v.line, 8);
	assert_int_equal(v.v.on_name, 0);
	assert_string_equal(v.text, "block to 10.0.0.0/8");
	/* IPv4-mapped and bracketed IPv6 match the IPv4 rule */
	v = test_rule("", "127.0.0.1", "[::ffff:10.0.0.1]", 80, PIPO_RULE_CONNECT);
	assert_int_equal(v.v.number, 5);
	/* an exact name decided on the name */
	v = test_rule("", "127.0.0.1", "blocked.example", 80, PIPO_RULE_CONNECT);
	assert_int_equal(v.v.decision, PIPO_RULE_BLOCK);
	assert_int_equal(v.v.number, 3);
	assert_int_equal(v.v.on_name, 1);
	/* group membership: alice is in staff; carol and anonymous are not */
	v = test_rule("alice", "127.0.0.1", "www.example.com", 443, PIPO_RULE_CONNECT);
	assert_int_equal(v.v.decision, PIPO_RULE_PASS);
	assert_int_equal(v.v.number, 4);
	assert_int_equal(v.v.line, 7);
	/* the CIDR rule 5 may match the addresses: undecided on the name */
	v = test_rule("carol", "127.0.0.1", "www.example.com", 443, PIPO_RULE_CONNECT);
	assert_int_equal(v.st, PIPO_OK);
	assert_int_equal(v.v.decision, PIPO_RULE_UNDECIDED);
	assert_int_equal(v.v.number, 0);
	assert_int_equal(v.v.on_name, 1);
	assert_string_equal(v.text, "");
	/* the command: rule 6 takes connect only */
	v = test_rule("", "127.0.0.1", "192.0.2.9", 22, PIPO_RULE_CONNECT);
	assert_int_equal(v.v.number, 6);
	v = test_rule("", "127.0.0.1", "192.0.2.9", 22, PIPO_RULE_BIND);
	assert_int_equal(v.v.number, 0);
	assert_int_equal(v.v.decision, PIPO_RULE_PASS); /* the default, from loopback */
	/* a client rule blocks before any request rule */
	v = test_rule("alice", "192.0.2.7", "www.example.com", 443, PIPO_RULE_CONNECT);
	assert_int_equal(v.v.decision, PIPO_RULE_BLOCK);
	assert_int_equal(v.v.stage, PIPO_RULE_CLIENT);
	assert_int_equal(v.v.number, 1);
	assert_string_equal(v.text, "client block from 192.0.2.0/24");
	/* a test counts no hit */
	assert_int_equal(__atomic_load_n(&seg->rule_hits[3], __ATOMIC_RELAXED), hits_before);
}

static void rule_test_default_policy_without_traffic(void **state)
{
	(void)state;
	load("");
	/* a client not on loopback may not reach loopback or link-local */
	struct verdict v = test_rule("", "198.51.100.7", "127.0.0.1", 80, PIPO_RULE_CONNECT);
	assert_int_equal(v.v.decision, PIPO_RULE_BLOCK);
	assert_int_equal(v.v.number, 0);
	v = test_rule("", "198.51.100.7", "169.254.77.77", 80, PIPO_RULE_CONNECT);
	assert_int_equal(v.v.decision, PIPO_RULE_BLOCK);
	v = test_rule("", "2001:db8::7", "::1", 80, PIPO_RULE_CONNECT);
	assert_int_equal(v.v.decision, PIPO_RULE_BLOCK);
	v = test_rule("", "198.51.100.7", "203.0.113.5", 80, PIPO_RULE_CONNECT);
	assert_int_equal(v.v.decision, PIPO_RULE_PASS);
	/* its names are decided per address */
	v = test_rule("", "198.51.100.7", "db.internal", 5432, PIPO_RULE_CONNECT);
	assert_int_equal(v.v.decision, PIPO_RULE_UNDECIDED);
	/* a loopback client keeps everything */
	v = test_rule("", "127.0.0.1", "127.0.0.1", 80, PIPO_RULE_CONNECT);
	assert_int_equal(v.v.decision, PIPO_RULE_PASS);
}

static void rule_test_fields_validated(void **state)
{
	(void)state;
	load(RULES);
	assert_int_equal(test_rule("", "1.2.3", "10.1.2.3", 80, 1).st, PIPO_E_INVALID);
	assert_int_equal(test_rule("", "", "10.1.2.3", 80, 1).st, PIPO_E_INVALID);
	assert_int_equal(test_rule("", "localhost", "10.1.2.3", 80, 1).st, PIPO_E_INVALID);
	assert_int_equal(test_rule("", "127.0.0.1", "", 80, 1).st, PIPO_E_INVALID);
	assert_int_equal(test_rule("", "127.0.0.1", "300.1.2.3", 80, 1).st, PIPO_E_INVALID);
	assert_int_equal(test_rule("", "127.0.0.1", "a b.example", 80, 1).st, PIPO_E_INVALID);
	assert_int_equal(test_rule("", "127.0.0.1", "[::1", 80, 1).st, PIPO_E_INVALID);
	assert_int_equal(test_rule("", "127.0.0.1", "example.com", 80, 0).st, PIPO_E_INVALID);
	assert_int_equal(test_rule("", "127.0.0.1", "example.com", 80, 4).st, PIPO_E_INVALID);
	assert_int_equal(test_rule("", "127.0.0.1", "example.com.", 80, 3).st, PIPO_OK);
	/* short, trailing and NUL payloads */
	struct req r = {0};
	struct pipo_cur c;
	putstr(&r, "", 0);
	putstr(&r, "127.0.0.1", 9);
	putstr(&r, "a.example", 9);
	put8(&r, 0);
	put8(&r, 80);
	assert_int_equal(big_answer(PIPO_Q_RULE_TEST, &r, &c), PIPO_E_MALFORMED);
	put8(&r, 1);
	assert_int_equal(big_answer(PIPO_Q_RULE_TEST, &r, &c), PIPO_OK);
	put8(&r, 0);
	assert_int_equal(big_answer(PIPO_Q_RULE_TEST, &r, &c), PIPO_E_MALFORMED);
	r.n = 0;
	putstr(&r, "", 0);
	putstr(&r, "127.0.0.1", 9);
	putstr(&r, "a\0example", 9);
	put8(&r, 0);
	put8(&r, 80);
	put8(&r, 1);
	assert_int_equal(big_answer(PIPO_Q_RULE_TEST, &r, &c), PIPO_E_MALFORMED);
}

/* ---- version 1 -------------------------------------------------------------- */

static uint8_t v1(const struct pipo1_request *q, uint8_t *out, size_t cap, size_t *n)
{
	struct pipo_buf b = {.p = out, .cap = cap};
	uint8_t st = admin_cmd_v1(&ctx, q, &b);
	assert_false(b.overflow);
	assert_true(b.len >= 2);
	assert_int_equal(out[0], q->type);
	assert_int_equal(out[1], q->cmd);
	*n = b.len;
	return st;
}

static struct pipo1_request v1_user(uint8_t cmd, const char *name, const char *pass,
                                    uint8_t priv)
{
	struct pipo1_request q = {.type = PIPO1_MODIFY, .cmd = cmd, .u8 = priv};
	q.ulen = (uint8_t)strlen(name);
	q.plen = (uint8_t)strlen(pass);
	memcpy(q.user, name, q.ulen + 1u);
	memcpy(q.pass, pass, q.plen + 1u);
	return q;
}

/* The master's errors as each version-1 command states them. */
static void v1_user_statuses(void **state)
{
	(void)state;
	static const struct {
		int rc;
		uint8_t add, del;
	} map[] = {
	    {0, PIPO1_OK, PIPO1_OK},
	    {-EEXIST, PIPO1_E_1, PIPO1_E_SERVER},
	    {-ENOENT, PIPO1_E_SERVER, PIPO1_E_1},
	    {-EINVAL, PIPO1_E_INVALID, PIPO1_E_INVALID},
	    {-EPERM, PIPO1_E_SERVER, PIPO1_E_SERVER},
	    {-ENOSPC, PIPO1_E_SERVER, PIPO1_E_SERVER},
	    {-EIO, PIPO1_E_SERVER, PIPO1_E_SERVER},
	};
	uint8_t out[16];
	size_t n;
	for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
		F.user_rc = map[i].rc;
		struct pipo1_request q = v1_user(PIPO1_M_ADD_USER, "bob", "pw", 1);
		assert_int_equal(v1(&q, out, sizeof out, &n), map[i].add);
		assert_int_equal(n, 3);
		assert_int_equal(out[2], map[i].add);
		assert_int_equal(F.op, MASTER_USER_ADD);
		assert_string_equal(F.name, "bob");
		assert_string_equal(F.pass, "pw");
		assert_true(F.admin);
		q = v1_user(PIPO1_M_DEL_USER, "bob", "", 0);
		assert_int_equal(v1(&q, out, sizeof out, &n), map[i].del);
		assert_int_equal(F.op, MASTER_USER_DEL);
	}
	/* Refused before the master: privilege, empty fields, NUL, names. */
	F.user_rc = 0;
	int calls = F.user_calls;
	struct pipo1_request bad[] = {
	    v1_user(PIPO1_M_ADD_USER, "bob", "pw", 2),  v1_user(PIPO1_M_ADD_USER, "", "pw", 0),
	    v1_user(PIPO1_M_ADD_USER, "bob", "", 0),    v1_user(PIPO1_M_ADD_USER, "a\tb", "pw", 0),
	    v1_user(PIPO1_M_DEL_USER, "", "", 0),
	};
	bad[4].ulen = 0;
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(v1(&bad[i], out, sizeof out, &n), PIPO1_E_INVALID);
	struct pipo1_request nul = v1_user(PIPO1_M_ADD_USER, "ab", "pw", 0);
	nul.user[1] = '\0';
	assert_int_equal(v1(&nul, out, sizeof out, &n), PIPO1_E_INVALID);
	assert_int_equal(F.user_calls, calls);
}

static void v1_settings_and_widths(void **state)
{
	(void)state;
	uint8_t out[64];
	size_t n;
	struct pipo1_request q = {.type = PIPO1_MODIFY, .cmd = PIPO1_M_BUFFER_SIZE, .u32 = 0};
	assert_int_equal(v1(&q, out, sizeof out, &n), PIPO1_E_1);
	q.u32 = 4095;
	assert_int_equal(v1(&q, out, sizeof out, &n), PIPO1_E_1);
	assert_int_equal(F.applied, 0);
	q.u32 = 8192;
	assert_int_equal(v1(&q, out, sizeof out, &n), PIPO1_OK);
	assert_int_equal(F.cfg.buffer_size, 8192);
	q = (struct pipo1_request){.type = PIPO1_MODIFY, .cmd = PIPO1_M_DISSECTORS, .u8 = 2};
	assert_int_equal(v1(&q, out, sizeof out, &n), PIPO1_E_SERVER);
	q.cmd = PIPO1_M_IDLE_CLEANUP;
	assert_int_equal(v1(&q, out, sizeof out, &n), PIPO1_E_SERVER);
	q.u8 = 0;
	assert_int_equal(v1(&q, out, sizeof out, &n), PIPO1_OK);
	assert_false(F.cfg.idle_cleanup);
	q = (struct pipo1_request){.type = PIPO1_MODIFY, .cmd = PIPO1_M_SELECTOR_TIMEOUT, .u8 = 0};
	assert_int_equal(v1(&q, out, sizeof out, &n), PIPO1_E_1);
	q.u8 = 200;
	assert_int_equal(v1(&q, out, sizeof out, &n), PIPO1_OK);
	assert_int_equal(F.cfg.handshake_timeout_s, 200);
	/* Answers at their version-1 widths; too large: the largest value. */
	F.cfg.idle_timeout_s = 600;
	static const struct {
		uint8_t cmd;
		size_t width;
		uint64_t value;
	} w[] = {
	    {PIPO1_Q_HISTORIC_CONNS, 8, 0}, {PIPO1_Q_CURRENT_CONNS, 8, 0},
	    {PIPO1_Q_MAX_CONNS, 4, 0},      {PIPO1_Q_BYTES_SENT, 8, 0},
	    {PIPO1_Q_BYTES_RECEIVED, 8, 0}, {PIPO1_Q_USERS_CONNECTED, 8, 0},
	    {PIPO1_Q_USER_COUNT, 1, 0},     {PIPO1_Q_BUFFER_SIZE, 4, 8192},
	    {PIPO1_Q_SELECTOR_TIMEOUT, 1, 200}, {PIPO1_Q_CONN_TIMEOUT, 1, 255},
	    {PIPO1_Q_CONN_TIMEOUT_ALT, 1, 255}, {PIPO1_Q_USER_CONNS, 1, 0},
	    {PIPO1_Q_USER_CONNS_ALT, 1, 0},
	};
	for (size_t i = 0; i < sizeof w / sizeof w[0]; i++) {
		q = (struct pipo1_request){.type = PIPO1_QUERY, .cmd = w[i].cmd};
		assert_int_equal(v1(&q, out, sizeof out, &n), PIPO1_OK);
		assert_int_equal(n, 2 + w[i].width);
		uint64_t v = 0;
		for (size_t k = 0; k < w[i].width; k++)
			v = v << 8 | out[2 + k];
		assert_int_equal(v, w[i].value);
	}
}

/* More than 255 users: COUNT 255 and the first 255 names. */
static void v1_user_list_bounded(void **state)
{
	(void)state;
	char name[16];
	for (int i = 0; i < 300; i++) {
		snprintf(name, sizeof name, "user%03d", i);
		assert_true(shm_user_put(seg, name, "$h$a", false) >= 0);
	}
	static uint8_t out[2 + 1 + 255 * 256];
	size_t n;
	struct pipo1_request q = {.type = PIPO1_QUERY, .cmd = PIPO1_Q_USERS};
	assert_int_equal(v1(&q, out, sizeof out, &n), PIPO1_OK);
	assert_int_equal(out[2], 255);
	assert_int_equal(n, 3 + 255 * 8);
	for (size_t i = 0, at = 3; i < 255; i++, at += 8)
		assert_int_equal(out[at], 7);
	q.cmd = PIPO1_Q_USER_COUNT;
	assert_int_equal(v1(&q, out, sizeof out, &n), PIPO1_OK);
	assert_int_equal(out[2], 255);
	/* A user's connections: known, unknown and empty names. */
	q = (struct pipo1_request){.type = PIPO1_QUERY, .cmd = PIPO1_Q_USER_CONNS, .ulen = 7};
	memcpy(q.user, "user001", 8);
	assert_int_equal(v1(&q, out, sizeof out, &n), PIPO1_OK);
	assert_int_equal(n, 3);
	memcpy(q.user, "ghost01", 8);
	assert_int_equal(v1(&q, out, sizeof out, &n), PIPO1_OK);
	assert_int_equal(out[2], 0);
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
	    T(rules_listing_gives_lines_texts_and_hits),
	    T(rules_listing_says_when_only_the_default_holds),
	    T(rule_test_names_the_deciding_rule),
	    T(rule_test_default_policy_without_traffic),
	    T(rule_test_fields_validated),
	    T(v1_user_statuses),
	    T(v1_settings_and_widths),
	    T(v1_user_list_bounded),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
