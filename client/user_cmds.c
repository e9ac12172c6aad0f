/* pipoClient: users, user add, del, passwd and conns. */
#include "pc.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../shared/names.h"

/* The server's rule for names (shared/names.c), checked before connecting. */
static bool check_name(const char *what, const char *name)
{
	const char *why = names_user_problem(name, strlen(name));
	if (why) {
		pc_err("%s: the user name %s", what, why);
		return false;
	}
	return true;
}

/* ---- users ------------------------------------------------------------ */

int cmd_users(struct pc_ctx *x, char **args)
{
	(void)args;
	struct pc_resp r;
	bool detailed = true;
	int rc = pc_round_trip(x, PIPO_QUERY, PIPO_Q_USER_STATS, NULL, 0, &r);
	if (rc)
		return rc;
	if (r.f.status == PIPO_E_UNKNOWN) {
		/* An older server: names and roles only. */
		detailed = false;
		rc = pc_round_trip(x, PIPO_QUERY, PIPO_Q_USERS, NULL, 0, &r);
		if (rc)
			return rc;
	}
	if (r.f.status)
		return pc_status_fail("users", r.f.status, NULL);
	struct pipo_cur c = {.p = r.payload, .len = r.f.len};
	uint32_t n = pipo_get_u32(&c);
	/* Each record is at least 2 bytes: a count beyond that is a lie. */
	if (n > r.f.len / 2)
		return pc_malformed(x, "users");
	struct pc_json j;
	if (x->json) {
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
		pj_arr(&j, "users");
	} else if (detailed) {
		printf("%-24s %-5s %7s %12s %12s\n", "USER", "ADMIN", "CONNS", "UP", "DOWN");
	} else {
		printf("%-24s %-5s\n", "USER", "ADMIN");
	}
	char name[PIPO_MAX_NAME + 1], ub[32], db[32], nt[PC_TEXT_MAX(PIPO_MAX_NAME + 1)];
	for (uint32_t i = 0; i < n && !c.bad; i++) {
		pipo_get_str8(&c, name, sizeof name);
		uint8_t admin = pipo_get_u8(&c);
		uint32_t conns = 0;
		uint64_t up = 0, down = 0;
		if (detailed) {
			conns = pipo_get_u32(&c);
			up = pipo_get_u64(&c);
			down = pipo_get_u64(&c);
		}
		if (c.bad)
			break;
		if (x->json) {
			pj_obj(&j, NULL);
			pj_str(&j, "name", name);
			pj_bool(&j, "admin", admin != 0);
			if (detailed) {
				pj_u64(&j, "connections", conns);
				pj_u64(&j, "bytes_up", up);
				pj_u64(&j, "bytes_down", down);
			}
			pj_end_obj(&j);
		} else if (detailed) {
			printf("%-24s %-5s %7" PRIu32 " %12s %12s\n", pc_text(nt, sizeof nt, name),
			       admin ? "yes" : "no", conns,
			       pc_bytes(ub, sizeof ub, up), pc_bytes(db, sizeof db, down));
		} else {
			printf("%-24s %-5s\n", pc_text(nt, sizeof nt, name), admin ? "yes" : "no");
		}
	}
	if (x->json) {
		pj_end_arr(&j);
		pj_u64(&j, "count", n);
		pj_end_obj(&j);
		pj_finish(&j);
	}
	if (!pipo_cur_done(&c))
		return pc_malformed(x, "users");
	return PC_EXIT_OK;
}

static int print_persisted(struct pc_ctx *x, const struct pc_resp *r, const char *what,
                           const char *done_msg, const char *name)
{
	struct pipo_cur c = {.p = r->payload, .len = r->f.len};
	uint8_t persisted = pipo_get_u8(&c);
	if (!pipo_cur_done(&c))
		return pc_malformed(x, what);
	if (x->json) {
		struct pc_json j;
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
		pj_bool(&j, "ok", true);
		pj_str(&j, "user", name);
		pj_bool(&j, "persisted", persisted != 0);
		pj_end_obj(&j);
		pj_finish(&j);
	} else {
		printf("%s; %s\n", done_msg,
		       persisted ? "saved to the configuration file"
		                 : "not saved to a configuration file (the server has none, or "
		                   "could not write it: see its log)");
	}
	return PC_EXIT_OK;
}

static int user_modify(struct pc_ctx *x, const char *what, const char *name, bool with_pass,
                       bool admin, uint8_t cmd)
{
	if (!check_name(what, name))
		return PC_EXIT_USAGE;
	/* Log in first: the administrator's password before the new one. */
	int rc = pc_need_conn(x);
	if (rc)
		return rc;
	char pass[PIPO_MAX_NAME + 2];
	pass[0] = '\0';
	if (with_pass) {
		rc = pc_new_password(name, pass, sizeof pass);
		if (rc)
			return rc;
	}
	uint8_t p[3 + 2 * PIPO_MAX_NAME];
	struct pipo_buf b = {.p = p, .cap = sizeof p};
	pipo_put_str8(&b, name);
	if (with_pass)
		pipo_put_str8(&b, pass);
	if (cmd == PIPO_M_ADD_USER)
		pipo_put_u8(&b, admin ? 1 : 0);
	explicit_bzero(pass, sizeof pass);
	struct pc_resp r;
	rc = pc_round_trip(x, PIPO_MODIFY, cmd, p, b.len, &r);
	explicit_bzero(p, sizeof p);
	if (rc)
		return rc;
	char msg[PIPO_MAX_NAME + 80];
	switch (r.f.status) {
	case PIPO_OK:
		break;
	case PIPO_E_EXISTS:
		pc_err("%s %s: a user of that name already exists (status 0x%02x)", what, name,
		       r.f.status);
		return PC_EXIT_STATUS;
	case PIPO_E_NOT_FOUND:
		pc_err("%s %s: no such user (status 0x%02x)", what, name, r.f.status);
		return PC_EXIT_STATUS;
	default:
		snprintf(msg, sizeof msg, "%s %s", what, name);
		return pc_status_fail(msg, r.f.status, NULL);
	}
	if (cmd == PIPO_M_ADD_USER)
		snprintf(msg, sizeof msg, "user %s added%s", name, admin ? " (administrator)" : "");
	else if (cmd == PIPO_M_DEL_USER)
		snprintf(msg, sizeof msg, "user %s deleted, its sessions closed", name);
	else
		snprintf(msg, sizeof msg, "password of %s changed", name);
	return print_persisted(x, &r, what, msg, name);
}

int cmd_user_add(struct pc_ctx *x, char **args)
{
	return user_modify(x, "user add", args[0], true, x->f_admin, PIPO_M_ADD_USER);
}

int cmd_user_del(struct pc_ctx *x, char **args)
{
	return user_modify(x, "user del", args[0], false, false, PIPO_M_DEL_USER);
}

int cmd_user_passwd(struct pc_ctx *x, char **args)
{
	return user_modify(x, "user passwd", args[0], true, false, PIPO_M_PASSWORD);
}

int cmd_user_conns(struct pc_ctx *x, char **args)
{
	const char *name = args[0];
	if (!check_name("user conns", name))
		return PC_EXIT_USAGE;
	uint8_t p[1 + PIPO_MAX_NAME];
	struct pipo_buf b = {.p = p, .cap = sizeof p};
	pipo_put_str8(&b, name);
	struct pc_resp r;
	int rc = pc_round_trip(x, PIPO_QUERY, PIPO_Q_USER_CONNS, p, b.len, &r);
	if (rc)
		return rc;
	if (r.f.status == PIPO_E_NOT_FOUND) {
		pc_err("user conns %s: no such user (status 0x%02x)", name, r.f.status);
		return PC_EXIT_STATUS;
	}
	if (r.f.status)
		return pc_status_fail("user conns", r.f.status, NULL);
	struct pipo_cur c = {.p = r.payload, .len = r.f.len};
	uint32_t n = pipo_get_u32(&c);
	if (!pipo_cur_done(&c))
		return pc_malformed(x, "user conns");
	if (x->json) {
		struct pc_json j;
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
		pj_str(&j, "user", name);
		pj_u64(&j, "connections", n);
		pj_end_obj(&j);
		pj_finish(&j);
	} else {
		printf("%s: %" PRIu32 " connection%s\n", name, n, n == 1 ? "" : "s");
	}
	return PC_EXIT_OK;
}

