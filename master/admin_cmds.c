#include "admin_cmds.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../shared/clock.h"
#include "../shared/log.h"
#include "../shared/names.h"
#include "../shared/rules.h"
#include "../shared/shm.h"
#include "master.h"

bool admin_rights_hold(struct shm_segment *seg, const struct admin_rights *r,
                       bool *only_password)
{
	if (only_password)
		*only_password = false;
	if (r->slot < 0 || r->slot >= SHM_MAX_USERS)
		return false;
	shm_lock(&seg->users_lock);
	const struct shm_user *u = &seg->users[r->slot];
	bool same = u->used && u->id == r->id && u->admin;
	bool ok = same && u->cred_gen == r->gen;
	if (only_password)
		*only_password = same && !ok;
	shm_unlock(&seg->users_lock);
	return ok;
}

static uint64_t users_connected(struct shm_segment *seg)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < SHM_MAX_USERS; i++)
		if (seg->users[i].used && shm_user_conns_sum(seg, i) > 0)
			n++;
	return n;
}

static uint32_t workers_running(struct shm_segment *seg)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++)
		if (__atomic_load_n(&seg->slots[i].pid, __ATOMIC_RELAXED) > 0)
			n++;
	return n;
}

static void put_metric(struct pipo_buf *b, uint16_t id, uint64_t v)
{
	pipo_put_u16(b, id);
	pipo_put_u64(b, v);
}

static void metrics(const struct admin_ctx *a, struct pipo_buf *b)
{
	struct shm_segment *seg = a->seg;
	static const struct {
		uint16_t id;
		enum shm_counter c;
	} counters[] = {
	    {PIPO_MET_CONN_TOTAL, M_CONN_TOTAL},
	    {PIPO_MET_BYTES_UP, M_BYTES_UP},
	    {PIPO_MET_BYTES_DOWN, M_BYTES_DOWN},
	    {PIPO_MET_REQUESTS, M_REQUESTS},
	    {PIPO_MET_AUTH_FAILURES, M_AUTH_FAIL},
	    {PIPO_MET_NO_METHOD, M_NO_METHOD},
	    {PIPO_MET_HANDSHAKE_TIMEOUTS, M_HANDSHAKE_TIMEOUT},
	    {PIPO_MET_IDLE_TIMEOUTS, M_IDLE_TIMEOUT},
	    {PIPO_MET_ACCEPT_PAUSES, M_ACCEPT_PAUSED},
	    {PIPO_MET_DNS_LOOKUPS, M_DNS_LOOKUPS},
	    {PIPO_MET_DNS_FAILURES, M_DNS_FAILURES},
	    {PIPO_MET_LOG_DROPPED, M_LOG_DROPPED},
	    {PIPO_MET_DNS_CACHE_HITS, M_DNS_CACHE_HITS},
	    {PIPO_MET_CREDENTIALS, M_CREDENTIALS},
	    {PIPO_MET_DNS_COALESCED, M_DNS_COALESCED},
	    {PIPO_MET_DOH_QUERIES, M_DOH_QUERIES},
	    {PIPO_MET_DOH_FAILURES, M_DOH_FAILURES},
	    {PIPO_MET_DNS_FALLBACKS, M_DNS_FALLBACKS},
	    {PIPO_MET_DOH_OUTAGES, M_DOH_OUTAGES},
	    {PIPO_MET_DNS_TIMEOUTS, M_DNS_TIMEOUTS},
	    {PIPO_MET_BYTES_SPLICED, M_BYTES_SPLICED},
	    {PIPO_MET_AUTH_DELAYED, M_AUTH_DELAYED},
	    {PIPO_MET_AUTH_EVICTED, M_AUTH_EVICTED},
	    {PIPO_MET_AUTH_BACKOFF_FULL, M_AUTH_BACKOFF_FULL},
	    {PIPO_MET_UNAUTH_REFUSED, M_UNAUTH_REFUSED},
	    {PIPO_MET_LIMIT_REFUSED, M_LIMIT_REFUSED},
	    {PIPO_MET_RATE_PAUSES, M_RATE_PAUSES},
	    {PIPO_MET_BIND_STARTED, M_BIND_STARTED},
	    {PIPO_MET_BIND_ACCEPTED, M_BIND_ACCEPTED},
	    {PIPO_MET_BIND_TIMEOUTS, M_BIND_TIMEOUTS},
	    {PIPO_MET_BIND_WRONG_PEER, M_BIND_WRONG_PEER},
	    {PIPO_MET_CLIENTS_BLOCKED, M_CLIENTS_BLOCKED},
	    {PIPO_MET_RULE_BLOCKED, M_RULE_BLOCKED},
	    {PIPO_MET_DEFAULT_BLOCKED, M_DEFAULT_BLOCKED},
	    {PIPO_MET_ADDRS_SKIPPED, M_ADDRS_SKIPPED},
	    {PIPO_MET_UDP_DGRAMS_UP, M_UDP_DGRAMS_UP},
	    {PIPO_MET_UDP_DGRAMS_DOWN, M_UDP_DGRAMS_DOWN},
	    {PIPO_MET_UDP_DROP_SOURCE, M_UDP_DROP_SOURCE},
	    {PIPO_MET_UDP_DROP_FRAG, M_UDP_DROP_FRAG},
	    {PIPO_MET_UDP_DROP_MALFORMED, M_UDP_DROP_MALFORMED},
	    {PIPO_MET_UDP_DROP_FILTER, M_UDP_DROP_FILTER},
	    {PIPO_MET_UDP_DROP_LOOKUP, M_UDP_DROP_LOOKUP},
	    {PIPO_MET_UDP_DROP_QUEUE, M_UDP_DROP_QUEUE},
	    {PIPO_MET_UDP_DROP_SEND, M_UDP_DROP_SEND},
	    {PIPO_MET_UDP_DROP_DENIED, M_UDP_DROP_DENIED},
	    {PIPO_MET_UDP_DROP_RATE, M_UDP_DROP_RATE},
	    {PIPO_MET_GSS_LOGINS, M_GSS_LOGINS},
	    {PIPO_MET_GSS_FAILURES, M_GSS_FAILURES},
	    {PIPO_MET_GSS_WRAPPED, M_GSS_WRAPPED},
	    {PIPO_MET_GSS_UNWRAPPED, M_GSS_UNWRAPPED},
	};
	size_t n = sizeof counters / sizeof counters[0];
	/* The counters, 9 replies, 9 gauges and 2 latency percentiles. */
	pipo_put_u16(b, (uint16_t)(n + 9 + 9 + 2));
	for (size_t i = 0; i < n; i++)
		put_metric(b, counters[i].id, shm_counter_sum(seg, counters[i].c));
	for (int r = 0; r < 9; r++)
		put_metric(b, (uint16_t)(PIPO_MET_REPLY_0 + r),
		           shm_counter_sum(seg, (enum shm_counter)(M_REPLY_0 + r)));
	put_metric(b, PIPO_MET_CONN_CURRENT, __atomic_load_n(&seg->conns_now, __ATOMIC_RELAXED));
	put_metric(b, PIPO_MET_CONN_MAX, __atomic_load_n(&seg->conns_max, __ATOMIC_RELAXED));
	put_metric(b, PIPO_MET_USERS_CONNECTED, users_connected(seg));
	put_metric(b, PIPO_MET_USER_COUNT, shm_user_count(seg));
	put_metric(b, PIPO_MET_WORKER_RESTARTS, __atomic_load_n(&seg->worker_restarts, __ATOMIC_RELAXED));
	put_metric(b, PIPO_MET_ADMIN_SESSIONS, a->admin_sessions);
	put_metric(b, PIPO_MET_WORKERS, workers_running(seg));
	put_metric(b, PIPO_MET_RELAYING, shm_gauge_sum(seg, G_CONN_RELAYING));
	put_metric(b, PIPO_MET_SESSIONS_LIMITED, shm_gauge_sum(seg, G_CONN_LIMITED));
	/* Lookup latency percentiles from the shared histogram: the upper
	 * bound of the bucket holding the percentile (0 before any lookup). */
	static const uint64_t bounds[] = SHM_DNS_LAT_BOUNDS_US;
	uint64_t hist[M_DNS_LAT_END - M_DNS_LAT_0], total = 0;
	for (int i = 0; i < M_DNS_LAT_END - M_DNS_LAT_0; i++)
		total += hist[i] = shm_counter_sum(seg, (enum shm_counter)(M_DNS_LAT_0 + i));
	uint16_t ids[2] = {PIPO_MET_DNS_LATENCY_P50, PIPO_MET_DNS_LATENCY_P99};
	uint64_t want[2] = {(total + 1) / 2, total - total / 100};
	for (int k = 0; k < 2; k++) {
		uint64_t seen = 0, v = 0;
		for (int i = 0; total && i < M_DNS_LAT_END - M_DNS_LAT_0; i++) {
			seen += hist[i];
			if (seen >= want[k]) {
				v = bounds[i];
				break;
			}
		}
		put_metric(b, ids[k], v);
	}
}

/* Copy the users table under its lock, then encode without holding it. */
static void list_users(const struct admin_ctx *a, struct pipo_buf *b, bool stats)
{
	struct shm_segment *seg = a->seg;
	struct shm_user *copy = malloc(sizeof seg->users);
	if (!copy) {
		b->overflow = true;
		return;
	}
	shm_lock(&seg->users_lock);
	memcpy(copy, seg->users, sizeof seg->users);
	shm_unlock(&seg->users_lock);
	uint32_t n = 0;
	for (uint32_t i = 0; i < SHM_MAX_USERS; i++)
		n += copy[i].used != 0;
	pipo_put_u32(b, n);
	for (uint32_t i = 0; i < SHM_MAX_USERS; i++) {
		if (!copy[i].used)
			continue;
		pipo_put_str8(b, copy[i].name);
		pipo_put_u8(b, copy[i].admin ? 1 : 0);
		if (stats) {
			pipo_put_u32(b, (uint32_t)shm_user_conns_sum(seg, i));
			for (int d = 0; d < 2; d++)
				pipo_put_u64(b, shm_user_bytes_sum(seg, i, d) - copy[i].bytes_base[d]);
		}
	}
	free(copy);
}

/* ---- access rules ------------------------------------------------------------ */

/* Every rule of the set in force, in file order, with its hits in this
 * generation (the segment clears them with each publication).  One answer
 * holds them all: 4096 rules of 20 bytes and a text of 512 KiB at most,
 * well under PIPO_MAX_RESPONSE. */
static uint8_t list_rules(const struct admin_ctx *a, struct pipo_buf *b)
{
	_Static_assert((size_t)RULES_MAX * (20 + 2) + RULES_TEXT_MAX + 8 + 1 + 2 + 512 + 4 <=
	                   PIPO_MAX_RESPONSE,
	               "the rules listing fits one pipo answer");
	struct shm_segment *seg = a->seg;
	const struct rules *rs = master_rules(a->m);
	size_t n = rules_count(rs);
	char def[512];
	rules_default_text(rs, def, sizeof def);
	pipo_put_u64(b, __atomic_load_n(&seg->rules_gen, __ATOMIC_ACQUIRE));
	pipo_put_u8(b, n == 0);
	pipo_put_str16(b, def);
	pipo_put_u32(b, (uint32_t)n);
	for (size_t i = 0; i < n; i++) {
		struct pipo_rule r = {.number = (uint32_t)(i + 1)};
		bool client = false;
		r.text = rules_text(rs, i, &r.line, &client);
		r.stage = client ? PIPO_RULE_CLIENT : PIPO_RULE_REQUEST;
		r.action = rules_rule_action(rs, i) == RULES_BLOCK ? PIPO_RULE_BLOCK : PIPO_RULE_PASS;
		r.hits = i < SHM_RULES_MAX ? __atomic_load_n(&seg->rule_hits[i], __ATOMIC_RELAXED) : 0;
		pipo_put_rule(b, &r);
	}
	return b->overflow ? PIPO_E_SERVER : PIPO_OK;
}

/* An address literal, IPv6 in brackets or not, as a socket address. */
static bool parse_addr(const char *s, struct sockaddr_storage *ss)
{
	char buf[INET6_ADDRSTRLEN + 2];
	size_t n = strlen(s);
	if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
		s++;
		n -= 2;
	}
	if (n == 0 || n >= sizeof buf)
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	memset(ss, 0, sizeof *ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (inet_pton(AF_INET, buf, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		return true;
	}
	if (inet_pton(AF_INET6, buf, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		return true;
	}
	return false;
}

/* A name as a rule test takes it: one the rules could name, whose last
 * label is not all digits (300.1.2.3 is a mistyped address, not a name). */
static bool test_name_valid(const char *s)
{
	if (!rules_valid_name(s))
		return false;
	size_t n = strlen(s);
	if (n > 1 && s[n - 1] == '.')
		n--;
	size_t i = n;
	while (i > 0 && s[i - 1] != '.')
		i--;
	return strspn(s + i, "0123456789") < n - i;
}

/* Which rule would decide a request: the client rules at accept, then the
 * request rules.  A name is decided on the name alone: nothing is
 * resolved and nothing is sent. */
static uint8_t rule_test(const struct admin_ctx *a, struct pipo_cur *c, struct pipo_buf *b)
{
	struct pipo_rule_test t;
	pipo_get_rule_test(c, &t);
	if (!pipo_cur_done(c))
		return PIPO_E_MALFORMED;
	struct sockaddr_storage src, dst;
	bool dest_is_addr = parse_addr(t.dest, &dst);
	if (!parse_addr(t.source, &src) || (!dest_is_addr && !test_name_valid(t.dest)) ||
	    t.cmd < PIPO_RULE_CONNECT || t.cmd > PIPO_RULE_UDP)
		return PIPO_E_INVALID;
	const struct rules *rs = master_rules(a->m);
	struct rules_match m;
	struct pipo_rule_verdict v = {.on_name = !dest_is_addr};
	/* The source port is not known: 0 (a client rule's port range may
	 * not cover it). */
	if (rules_client(rs, (const struct sockaddr *)&src, &m) == RULES_BLOCK) {
		v.stage = PIPO_RULE_CLIENT;
	} else {
		struct rules_request q = {
		    .client = (const struct sockaddr *)&src,
		    .user = t.user[0] ? t.user : NULL,
		    .cmd = t.cmd,
		    .port = t.port,
		    .name = dest_is_addr ? NULL : t.dest,
		    .dest = dest_is_addr ? (const struct sockaddr *)&dst : NULL,
		};
		(void)rules_decide(rs, &q, &m);
		v.stage = PIPO_RULE_REQUEST;
	}
	v.decision = m.action == RULES_BLOCK       ? PIPO_RULE_BLOCK
	             : m.action == RULES_UNDECIDED ? PIPO_RULE_UNDECIDED
	                                           : PIPO_RULE_PASS;
	v.number = m.number;
	v.line = m.line;
	v.text = m.number ? rules_text(rs, m.number - 1, NULL, NULL) : "";
	pipo_put_rule_verdict(b, &v);
	return b->overflow ? PIPO_E_SERVER : PIPO_OK;
}

uint8_t admin_cmd_query(const struct admin_ctx *a, uint8_t cmd, struct pipo_cur *c,
                        struct pipo_buf *b)
{
	struct shm_segment *seg = a->seg;
	const struct settings *cfg = master_settings(a->m);
	char name[PIPO_MAX_NAME + 1];
	switch (cmd) {
	case PIPO_Q_USERS:
	case PIPO_Q_USER_STATS:
		if (!pipo_cur_done(c))
			return PIPO_E_MALFORMED;
		list_users(a, b, cmd == PIPO_Q_USER_STATS);
		return PIPO_OK;
	case PIPO_Q_HISTORIC_CONNS:
		pipo_put_u64(b, shm_counter_sum(seg, M_CONN_TOTAL));
		break;
	case PIPO_Q_CURRENT_CONNS:
		pipo_put_u64(b, __atomic_load_n(&seg->conns_now, __ATOMIC_RELAXED));
		break;
	case PIPO_Q_MAX_CONNS:
		pipo_put_u64(b, __atomic_load_n(&seg->conns_max, __ATOMIC_RELAXED));
		break;
	case PIPO_Q_BYTES_UP:
		pipo_put_u64(b, shm_counter_sum(seg, M_BYTES_UP));
		break;
	case PIPO_Q_BYTES_DOWN:
		pipo_put_u64(b, shm_counter_sum(seg, M_BYTES_DOWN));
		break;
	case PIPO_Q_USERS_CONNECTED:
		pipo_put_u64(b, users_connected(seg));
		break;
	case PIPO_Q_USER_COUNT:
		pipo_put_u32(b, shm_user_count(seg));
		break;
	case PIPO_Q_USER_CONNS: {
		pipo_get_str8(c, name, sizeof name);
		if (!pipo_cur_done(c) || !name[0])
			return PIPO_E_MALFORMED;
		struct shm_user u;
		int slot = shm_user_get(seg, name, &u);
		explicit_bzero(u.hash, sizeof u.hash);
		if (slot < 0)
			return PIPO_E_NOT_FOUND;
		pipo_put_u32(b, (uint32_t)shm_user_conns_sum(seg, (uint32_t)slot));
		return PIPO_OK;
	}
	case PIPO_Q_METRICS:
		metrics(a, b);
		break;
	case PIPO_Q_RULES:
		return pipo_cur_done(c) ? list_rules(a, b) : PIPO_E_MALFORMED;
	case PIPO_Q_RULE_TEST:
		return rule_test(a, c, b);
	case PIPO_Q_DOH: {
		char url[PIPO_MAX_URL + 64];
		settings_doh_url(cfg, url, sizeof url);
		pipo_put_u8(b, cfg->doh_post);
		pipo_put_u16(b, (uint16_t)strlen(url));
		pipo_put_bytes(b, url, strlen(url));
		break;
	}
	case PIPO_Q_SERVER:
		pipo_put_u8(b, PIPO_VERSION);
		pipo_put_u32(b, (uint32_t)seg->master_pid);
		pipo_put_u64(b, (uint64_t)(clock_ms() - (int64_t)seg->started_ms));
		pipo_put_u32(b, workers_running(seg));
		pipo_put_str8(b, SOCKS5D_VERSION);
		break;
	case PIPO_Q_SETTING: {
		char v[SETTINGS_MAX_LISTEN * SETTINGS_ADDR_MAX + 64];
		pipo_get_str8(c, name, sizeof name);
		if (!pipo_cur_done(c))
			return PIPO_E_MALFORMED;
		const struct setting_desc *d = settings_find(name);
		if (!d)
			return PIPO_E_NOT_FOUND;
		settings_format(cfg, d, v, sizeof v);
		pipo_put_u16(b, (uint16_t)strlen(v));
		pipo_put_bytes(b, v, strlen(v));
		break;
	}
	default: {
		/* The numeric codes of single settings. */
		const struct setting_desc *d = settings_find_pipo(false, cmd);
		if (!d)
			return PIPO_E_UNKNOWN;
		if (d->type == SETTING_U32)
			pipo_put_u32(b, settings_number(cfg, d));
		else
			pipo_put_u8(b, (uint8_t)settings_number(cfg, d));
		break;
	}
	}
	return pipo_cur_done(c) ? PIPO_OK : PIPO_E_MALFORMED;
}

/* The master's errno for a change of users, as a pipo status. */
static uint8_t user_status(int rc)
{
	switch (rc) {
	case 0: return PIPO_OK;
	case -EEXIST: return PIPO_E_EXISTS;
	case -ENOENT: return PIPO_E_NOT_FOUND;
	case -EPERM: return PIPO_E_FIXED;
	case -EINVAL: return PIPO_E_INVALID;
	case -ENOSPC: return PIPO_E_FULL;
	default: return PIPO_E_SERVER;
	}
}

uint8_t admin_cmd_modify(const struct admin_ctx *a, uint8_t cmd, struct pipo_cur *c,
                         struct pipo_buf *b)
{
	struct settings cfg = *master_settings(a->m);
	char name[PIPO_MAX_NAME + 1], pass[PIPO_MAX_NAME + 1];
	uint8_t st;
	bool persisted = false;
	switch (cmd) {
	case PIPO_M_ADD_USER:
	case PIPO_M_PASSWORD:
	case PIPO_M_DEL_USER: {
		uint8_t admin = 0;
		pipo_get_str8(c, name, sizeof name);
		pass[0] = '\0';
		if (cmd != PIPO_M_DEL_USER)
			pipo_get_str8(c, pass, sizeof pass);
		if (cmd == PIPO_M_ADD_USER)
			admin = pipo_get_u8(c);
		if (!pipo_cur_done(c)) {
			explicit_bzero(pass, sizeof pass);
			return PIPO_E_MALFORMED;
		}
		if (!name[0] || (cmd != PIPO_M_DEL_USER && !pass[0]) || admin > 1) {
			explicit_bzero(pass, sizeof pass);
			return PIPO_E_INVALID;
		}
		/* The rule of every entry point: such a name could not be written
		 * back to the configuration file or logged on one line. */
		const char *why = NULL;
		if (cmd != PIPO_M_DEL_USER && (why = names_user_problem(name, strlen(name))))
			log_warn("admin: user name refused: it %s", why);
		else if (cmd != PIPO_M_DEL_USER && (why = names_password_problem(pass, strlen(pass))))
			log_warn("admin: password refused: it %s", why);
		if (why) {
			explicit_bzero(pass, sizeof pass);
			return PIPO_E_INVALID;
		}
		enum master_user_op op = cmd == PIPO_M_ADD_USER   ? MASTER_USER_ADD
		                         : cmd == PIPO_M_DEL_USER ? MASTER_USER_DEL
		                                                  : MASTER_USER_PASSWD;
		int rc = master_user_change(a->m, op, name, pass, admin, &persisted);
		explicit_bzero(pass, sizeof pass);
		pipo_put_u8(b, persisted);
		return user_status(rc);
	}
	case PIPO_M_DOH: {
		char url[sizeof cfg.doh_url], err[256];
		uint8_t method = pipo_get_u8(c);
		uint16_t ulen = pipo_get_u16(c);
		if (c->bad || c->len - c->pos != ulen)
			return PIPO_E_MALFORMED;
		if (ulen >= sizeof url)
			return PIPO_E_INVALID;
		c->pos -= 2;
		pipo_get_str16(c, url, sizeof url);
		if (!pipo_cur_done(c))
			return PIPO_E_MALFORMED;
		if (settings_set_number(&cfg, settings_find("doh-method"), method) < 0 ||
		    (url[0] && settings_set(&cfg, "doh-url", url, err, sizeof err) < 0))
			return PIPO_E_INVALID;
		st = PIPO_OK;
		break;
	}
	case PIPO_M_SETTING: {
		char value[2048], msg[512];
		pipo_get_str8(c, name, sizeof name);
		pipo_get_str16(c, value, sizeof value);
		if (!pipo_cur_done(c))
			return PIPO_E_MALFORMED;
		int rc = settings_change(&cfg, name, value, msg, sizeof msg);
		if (rc < 0)
			return rc == -ENOENT ? PIPO_E_NOT_FOUND : PIPO_E_INVALID;
		/* A name the kernel does not have is refused here, once, rather
		 * than warned about by every worker. */
		if (master_check_congestion(a->m, &cfg, master_settings(a->m)) < 0)
			return PIPO_E_INVALID;
		pipo_put_u16(b, (uint16_t)strlen(msg));
		pipo_put_bytes(b, msg, strlen(msg));
		log_info("admin: %s set to %s", name, msg);
		st = PIPO_OK;
		break;
	}
	case PIPO_M_RELOAD:
		if (!pipo_cur_done(c))
			return PIPO_E_MALFORMED;
		return master_reload(a->m) == 0 ? PIPO_OK : PIPO_E_INVALID;
	default: {
		/* The numeric codes of single settings. */
		const struct setting_desc *d = settings_find_pipo(true, cmd);
		if (!d)
			return PIPO_E_UNKNOWN;
		uint32_t v = d->type == SETTING_U32 ? pipo_get_u32(c) : pipo_get_u8(c);
		if (!pipo_cur_done(c))
			return PIPO_E_MALFORMED;
		st = settings_set_number(&cfg, d, v) == 0 ? PIPO_OK : PIPO_E_INVALID;
		if (st == PIPO_OK)
			log_info("admin: %s set to %u", d->key, v);
		break;
	}
	}
	if (st == PIPO_OK)
		master_apply(a->m, &cfg);
	return st;
}

/* ---- version 1 --------------------------------------------------------------- */

static uint64_t clamp(uint64_t v, uint64_t max)
{
	return v > max ? max : v;
}

/* A version-2 query answering one number (of the width its table gives). */
static uint64_t v2_number(const struct admin_ctx *a, uint8_t cmd, size_t width)
{
	uint8_t buf[16];
	struct pipo_buf b = {.p = buf, .cap = sizeof buf};
	struct pipo_cur none = {.p = buf, .len = 0};
	if (admin_cmd_query(a, cmd, &none, &b) != PIPO_OK || b.overflow || b.len != width)
		return 0;
	struct pipo_cur c = {.p = buf, .len = b.len};
	return width == 8 ? pipo_get_u64(&c) : width == 4 ? pipo_get_u32(&c) : pipo_get_u8(&c);
}

/* The users, as version 1 lists them: u8 n, n x str8 (the first 255). */
static void v1_users(const struct admin_ctx *a, struct pipo_buf *b)
{
	struct pipo_buf v2 = {.cap = 4 + SHM_MAX_USERS * (2 + PIPO_MAX_NAME)};
	v2.p = malloc(v2.cap);
	if (!v2.p) {
		b->overflow = true;
		return;
	}
	struct pipo_cur none = {.p = v2.p, .len = 0};
	if (admin_cmd_query(a, PIPO_Q_USERS, &none, &v2) != PIPO_OK || v2.overflow) {
		free(v2.p);
		b->overflow = true;
		return;
	}
	struct pipo_cur c = {.p = v2.p, .len = v2.len};
	uint32_t n = pipo_get_u32(&c);
	uint8_t shown = (uint8_t)clamp(n, 255);
	pipo_put_u8(b, shown);
	char name[PIPO_MAX_NAME + 1];
	for (uint32_t i = 0; i < shown && !c.bad; i++) {
		pipo_get_str8(&c, name, sizeof name);
		(void)pipo_get_u8(&c);
		pipo_put_str8(b, name);
	}
	if (c.bad)
		b->overflow = true;
	free(v2.p);
}

/* A version-1 modification through its version-2 handler: the payload
 * re-encoded, the status mapped to the command's own. */
static uint8_t v1_modify(const struct admin_ctx *a, const struct pipo1_request *r)
{
	uint8_t req[2 * (1 + PIPO_MAX_NAME) + 8], out[64];
	struct pipo_buf q = {.p = req, .cap = sizeof req};
	struct pipo_buf b = {.p = out, .cap = sizeof out};
	uint8_t cmd = r->cmd; /* the version-2 codes are the same */
	bool user = r->cmd == PIPO1_M_ADD_USER || r->cmd == PIPO1_M_DEL_USER;
	if (user) {
		/* A NUL would cut the name short: an invalid parameter. */
		if (strlen(r->user) != r->ulen || strlen(r->pass) != r->plen ||
		    (r->cmd == PIPO1_M_ADD_USER && r->u8 > 1))
			return PIPO1_E_INVALID;
		pipo_put_u8(&q, r->ulen);
		pipo_put_bytes(&q, r->user, r->ulen);
		if (r->cmd == PIPO1_M_ADD_USER) {
			pipo_put_u8(&q, r->plen);
			pipo_put_bytes(&q, r->pass, r->plen);
			pipo_put_u8(&q, r->u8);
		}
	} else if (r->cmd == PIPO1_M_DISSECTORS || r->cmd == PIPO1_M_IDLE_CLEANUP) {
		if (r->u8 > 1)
			return PIPO1_E_SERVER; /* no "invalid" status for these */
		pipo_put_u8(&q, r->u8);
	} else if (r->cmd == PIPO1_M_BUFFER_SIZE) {
		if (r->u32 == 0)
			return PIPO1_E_1;
		pipo_put_u32(&q, r->u32);
	} else {
		if (r->u8 == 0)
			return PIPO1_E_1;
		pipo_put_u32(&q, r->u8); /* seconds: u32 in version 2 */
	}
	struct pipo_cur c = {.p = req, .len = q.len};
	uint8_t st = admin_cmd_modify(a, cmd, &c, &b);
	explicit_bzero(req, sizeof req);
	switch (st) {
	case PIPO_OK: return PIPO1_OK;
	case PIPO_E_EXISTS: return r->cmd == PIPO1_M_ADD_USER ? PIPO1_E_1 : PIPO1_E_SERVER;
	case PIPO_E_NOT_FOUND: return r->cmd == PIPO1_M_DEL_USER ? PIPO1_E_1 : PIPO1_E_SERVER;
	case PIPO_E_INVALID:
	case PIPO_E_MALFORMED: return user ? PIPO1_E_INVALID : PIPO1_E_1;
	default: return PIPO1_E_SERVER;
	}
}

uint8_t admin_cmd_v1(const struct admin_ctx *a, const struct pipo1_request *r,
                     struct pipo_buf *b)
{
	pipo_put_u8(b, r->type);
	pipo_put_u8(b, r->cmd);
	if (r->type == PIPO1_MODIFY) {
		uint8_t st = v1_modify(a, r);
		pipo_put_u8(b, st);
		return st;
	}
	switch (r->cmd) {
	case PIPO1_Q_USERS:
		v1_users(a, b);
		break;
	case PIPO1_Q_HISTORIC_CONNS:
	case PIPO1_Q_CURRENT_CONNS:
	case PIPO1_Q_BYTES_SENT:
	case PIPO1_Q_BYTES_RECEIVED:
	case PIPO1_Q_USERS_CONNECTED:
		pipo_put_u64(b, v2_number(a, r->cmd, 8));
		break;
	case PIPO1_Q_MAX_CONNS:
		pipo_put_u32(b, (uint32_t)clamp(v2_number(a, PIPO_Q_MAX_CONNS, 8), UINT32_MAX));
		break;
	case PIPO1_Q_USER_COUNT:
		pipo_put_u8(b, (uint8_t)clamp(v2_number(a, PIPO_Q_USER_COUNT, 4), 255));
		break;
	case PIPO1_Q_BUFFER_SIZE:
		pipo_put_u32(b, (uint32_t)v2_number(a, PIPO_Q_BUFFER_SIZE, 4));
		break;
	case PIPO1_Q_SELECTOR_TIMEOUT:
		pipo_put_u8(b, (uint8_t)clamp(v2_number(a, PIPO_Q_HANDSHAKE_TIMEOUT, 4), 255));
		break;
	case PIPO1_Q_CONN_TIMEOUT:
	case PIPO1_Q_CONN_TIMEOUT_ALT:
		pipo_put_u8(b, (uint8_t)clamp(v2_number(a, PIPO_Q_IDLE_TIMEOUT, 4), 255));
		break;
	default: { /* PIPO1_Q_USER_CONNS and its alternative code */
		/* An unknown user (or a name with a NUL) has no connections: a
		 * version-1 query has no error status. */
		uint64_t n = 0;
		if (r->ulen && strlen(r->user) == r->ulen) {
			struct shm_user u;
			int slot = shm_user_get(a->seg, r->user, &u);
			explicit_bzero(u.hash, sizeof u.hash);
			if (slot >= 0)
				n = shm_user_conns_sum(a->seg, (uint32_t)slot);
		}
		pipo_put_u8(b, (uint8_t)clamp(n, 255));
		break;
	}
	}
	return PIPO1_OK;
}
