/* pipoClient: sessions, session close and reload. */
#include "pc.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <arpa/inet.h>
#include <errno.h>

static const char *const state_names[] = {"handshake", "resolving", "connecting", "relay",
                                          "closing"};

static bool parse_u64(const char *s, uint64_t *out)
{
	if (!s[0] || s[0] == '-' || s[0] == '+')
		return false;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

/* ---- sessions ----------------------------------------------------------- */

static void session_client(const struct pipo_session *s, char *buf, size_t cap)
{
	char a[INET6_ADDRSTRLEN];
	if (!inet_ntop(s->family == 6 ? AF_INET6 : AF_INET, s->addr, a, sizeof a))
		snprintf(a, sizeof a, "?");
	if (s->family == 6)
		snprintf(buf, cap, "[%s]:%u", a, s->sport);
	else
		snprintf(buf, cap, "%s:%u", a, s->sport);
}

static const char *cmd_name(uint8_t cmd)
{
	static const char *const names[] = {"-", "connect", "bind", "udp"};
	return cmd < sizeof names / sizeof names[0] ? names[cmd] : "unknown";
}

/* The authentication method (RFC 1928 numbers; 0xff: not chosen yet). */
static const char *method_name(uint8_t m)
{
	switch (m) {
	case 0x00:
		return "none";
	case 0x01:
		return "gssapi";
	case 0x02:
		return "password";
	case 0xff:
		return "-";
	default:
		return "unknown";
	}
}

/* A GSS-API protection level (RFC 1961, with 0 for none). */
static const char *level_name(uint8_t l)
{
	static const char *const names[] = {"clear", "integrity", "confidentiality"};
	return l < sizeof names / sizeof names[0] ? names[l] : "unknown";
}

static const char *state_name(uint8_t st)
{
	return st < sizeof state_names / sizeof state_names[0] ? state_names[st] : "unknown";
}

int cmd_sessions(struct pc_ctx *x, char **args)
{
	(void)args;
	/* Bounded: 4096 pages of 256 is far beyond any real table. */
	const unsigned max_pages = 4096;
	uint64_t after = 0;
	bool more = true;
	size_t total = 0;
	struct pc_json j;
	if (x->json) {
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
		pj_arr(&j, "sessions");
	}
	int rc = PC_EXIT_OK;
	/* Records with the command and datagram counts; a server without them
	 * answers UNKNOWN and is asked the original query. */
	uint8_t query = PIPO_Q_SESSIONS_EX;
	for (unsigned page = 0; more && page < max_pages; page++) {
		uint8_t p[10];
		struct pipo_buf b = {.p = p, .cap = sizeof p};
		pipo_put_u64(&b, after);
		pipo_put_u16(&b, PIPO_SESSIONS_PAGE_MAX);
		struct pc_resp r;
		rc = pc_round_trip(x, PIPO_QUERY, query, p, b.len, &r);
		if (rc)
			break;
		if (r.f.status == PIPO_E_UNKNOWN && query == PIPO_Q_SESSIONS_EX) {
			query = PIPO_Q_SESSIONS;
			page--;
			continue;
		}
		if (r.f.status) {
			rc = pc_status_fail("sessions", r.f.status, NULL);
			break;
		}
		struct pipo_cur c = {.p = r.payload, .len = r.f.len};
		uint16_t n = pipo_get_u16(&c);
		more = pipo_get_u8(&c) != 0;
		if (n > PIPO_SESSIONS_PAGE_MAX) {
			rc = pc_malformed(x, "sessions");
			break;
		}
		if (page == 0 && !x->json && n > 0)
			printf("%-8s %-10s %-7s %-24s %-16s %-22s %-30s %10s %10s %10s %s\n", "ID",
			       "STATE", "CMD", "CLIENT", "USER", "METHOD", "DESTINATION", "UP", "DOWN", "AGE",
			       "DATAGRAMS");
		for (uint16_t i = 0; i < n; i++) {
			struct pipo_session s;
			if (query == PIPO_Q_SESSIONS_EX)
				pipo_get_session_ex(&c, &s);
			else
				pipo_get_session(&c, &s);
			/* Ascending ids guarantee that paging ends. */
			if (c.bad || s.id <= after) {
				rc = pc_malformed(x, "sessions");
				break;
			}
			after = s.id;
			total++;
			char cl[INET6_ADDRSTRLEN + 10], ub[32], db[32], ab[48];
			session_client(&s, cl, sizeof cl);
			if (x->json) {
				char a[INET6_ADDRSTRLEN];
				inet_ntop(s.family == 6 ? AF_INET6 : AF_INET, s.addr, a, sizeof a);
				pj_obj(&j, NULL);
				pj_u64(&j, "id", s.id);
				pj_str(&j, "state", state_name(s.state));
				pj_str(&j, "client", a);
				pj_u64(&j, "client_port", s.sport);
				pj_str(&j, "user", s.user);
				pj_str(&j, "destination", s.dest);
				pj_u64(&j, "port", s.dport);
				pj_u64(&j, "bytes_up", s.up);
				pj_u64(&j, "bytes_down", s.down);
				pj_u64(&j, "age_ms", s.age_ms);
				if (query == PIPO_Q_SESSIONS_EX) {
					pj_str(&j, "command", cmd_name(s.cmd));
					pj_u64(&j, "datagrams_up", s.dgrams_up);
					pj_u64(&j, "datagrams_down", s.dgrams_down);
					pj_str(&j, "method", method_name(s.method));
					if (s.protection != 0xff)
						pj_str(&j, "protection", level_name(s.protection));
				}
				pj_end_obj(&j);
			} else {
				char dest[PC_TEXT_MAX(PIPO_MAX_NAME) + 16], dt[PC_TEXT_MAX(PIPO_MAX_NAME)];
				char ut[PC_TEXT_MAX(PIPO_MAX_NAME)];
				pc_text(dt, sizeof dt, s.dest);
				if (s.dest[0] && strchr(s.dest, ':'))
					snprintf(dest, sizeof dest, "[%s]:%u", dt, s.dport);
				else if (s.dest[0])
					snprintf(dest, sizeof dest, "%s:%u", dt, s.dport);
				else
					snprintf(dest, sizeof dest, "-");
				/* Datagrams up/down, for UDP associations. */
				char dg[48] = "-";
				if (s.cmd == PIPO_CMD_UDP)
					snprintf(dg, sizeof dg, "%" PRIu64 "/%" PRIu64, s.dgrams_up,
					         s.dgrams_down);
				char meth[48] = "?";
				if (query == PIPO_Q_SESSIONS_EX && s.protection != 0xff)
					snprintf(meth, sizeof meth, "%s/%s", method_name(s.method),
					         level_name(s.protection));
				else if (query == PIPO_Q_SESSIONS_EX)
					snprintf(meth, sizeof meth, "%s", method_name(s.method));
				printf("%-8" PRIu64 " %-10s %-7s %-24s %-16s %-22s %-30s %10s %10s %10s %s\n",
				       s.id, state_name(s.state),
				       query == PIPO_Q_SESSIONS_EX ? cmd_name(s.cmd) : "?", cl,
				       s.user[0] ? pc_text(ut, sizeof ut, s.user) : "-", meth, dest,
				       pc_bytes(ub, sizeof ub, s.up),
				       pc_bytes(db, sizeof db, s.down),
				       pc_duration(ab, sizeof ab, s.age_ms / 1000), dg);
			}
		}
		if (rc)
			break;
		if (!pipo_cur_done(&c)) {
			rc = pc_malformed(x, "sessions");
			break;
		}
		if (!x->f_all)
			break;
	}
	if (x->json) {
		pj_end_arr(&j);
		pj_u64(&j, "count", total);
		pj_bool(&j, "more", more && rc == PC_EXIT_OK);
		pj_end_obj(&j);
		pj_finish(&j);
	} else if (rc == PC_EXIT_OK) {
		if (total == 0)
			printf("no sessions\n");
		else if (more)
			printf("(%zu shown; more sessions exist: use --all)\n", total);
	}
	return rc;
}

int cmd_session_close(struct pc_ctx *x, char **args)
{
	uint64_t id;
	if (!parse_u64(args[0], &id)) {
		pc_err("session close: '%s' is not a session id (a decimal number)", args[0]);
		return PC_EXIT_USAGE;
	}
	uint8_t p[8];
	struct pipo_buf b = {.p = p, .cap = sizeof p};
	pipo_put_u64(&b, id);
	struct pc_resp r;
	int rc = pc_round_trip(x, PIPO_MODIFY, PIPO_M_CLOSE_SESSION, p, b.len, &r);
	if (rc)
		return rc;
	if (r.f.status == PIPO_E_NOT_FOUND) {
		pc_err("session close %" PRIu64 ": no such session (status 0x%02x)", id, r.f.status);
		return PC_EXIT_STATUS;
	}
	if (r.f.status)
		return pc_status_fail("session close", r.f.status, NULL);
	char line[48];
	snprintf(line, sizeof line, "session %" PRIu64 " closed", id);
	pc_done(x, line, "session", id);
	return PC_EXIT_OK;
}

int cmd_reload(struct pc_ctx *x, char **args)
{
	(void)args;
	struct pc_resp r;
	int rc = pc_round_trip(x, PIPO_MODIFY, PIPO_M_RELOAD, NULL, 0, &r);
	if (rc)
		return rc;
	if (r.f.status == PIPO_E_INVALID)
		return pc_status_fail("reload", r.f.status,
		                   "the configuration file is invalid (running configuration kept; "
		                   "see the server's log) or the server runs without one");
	if (r.f.status)
		return pc_status_fail("reload", r.f.status, NULL);
	pc_done(x, "configuration reloaded", NULL, 0);
	return PC_EXIT_OK;
}

