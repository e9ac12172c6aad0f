#include "pipo.h"

#include <stdio.h>
#include <string.h>

#include "../shared/ctrl.h"

/* A listing page is answered from one message of each worker. */
_Static_assert(PIPO_SESSIONS_PAGE_MAX <= CTRL_SESSIONS_MAX, "a pipo page fits a worker's answer");

void pipo_auth_init(struct rfc1929 *a)
{
	rfc1929_init(a, PIPO_VERSION, true);
}

size_t pipo_auth_encode(uint8_t *out, size_t cap, const char *user, const char *pass)
{
	return rfc1929_encode(out, cap, PIPO_VERSION, user, pass);
}

void pipo_reader_init(struct pipo_reader *r, uint8_t *payload_buf, uint32_t max)
{
	memset(r, 0, sizeof *r);
	r->payload = payload_buf;
	r->max = max;
}

int pipo_reader_feed(struct pipo_reader *r, const uint8_t *p, size_t n, size_t *used)
{
	size_t i = 0;
	if (r->hpos == PIPO_HEADER_LEN && r->ppos == r->f.len) {
		/* The previous frame was delivered: start the next one. */
		r->hpos = 0;
		r->ppos = 0;
		r->too_big = false;
	}
	while (i < n && r->hpos < PIPO_HEADER_LEN) {
		r->hdr[r->hpos++] = p[i++];
		if (r->hpos == PIPO_HEADER_LEN) {
			r->f.ver = r->hdr[0];
			r->f.type = r->hdr[1];
			r->f.cmd = r->hdr[2];
			r->f.status = r->hdr[3];
			r->f.len = (uint32_t)r->hdr[4] << 24 | (uint32_t)r->hdr[5] << 16 |
			           (uint32_t)r->hdr[6] << 8 | r->hdr[7];
			r->too_big = r->f.len > r->max;
		}
	}
	if (r->hpos < PIPO_HEADER_LEN) {
		*used = i;
		return PIPO_NEED_MORE;
	}
	size_t k = r->f.len - r->ppos;
	if (k > n - i)
		k = n - i;
	if (!r->too_big)
		memcpy(r->payload + r->ppos, p + i, k);
	r->ppos += (uint32_t)k;
	i += k;
	*used = i;
	return r->ppos == r->f.len ? PIPO_DONE : PIPO_NEED_MORE;
}

void pipo_header_encode(uint8_t out[PIPO_HEADER_LEN], uint8_t type, uint8_t cmd, uint8_t status,
                        uint32_t len)
{
	out[0] = PIPO_VERSION;
	out[1] = type;
	out[2] = cmd;
	out[3] = status;
	out[4] = (uint8_t)(len >> 24);
	out[5] = (uint8_t)(len >> 16);
	out[6] = (uint8_t)(len >> 8);
	out[7] = (uint8_t)len;
}

static bool room(struct pipo_buf *b, size_t n)
{
	if (b->overflow || b->cap - b->len < n) {
		b->overflow = true;
		return false;
	}
	return true;
}

void pipo_put_bytes(struct pipo_buf *b, const void *p, size_t n)
{
	if (room(b, n)) {
		memcpy(b->p + b->len, p, n);
		b->len += n;
	}
}

void pipo_put_u8(struct pipo_buf *b, uint8_t v)
{
	pipo_put_bytes(b, &v, 1);
}

void pipo_put_u16(struct pipo_buf *b, uint16_t v)
{
	uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
	pipo_put_bytes(b, x, 2);
}

void pipo_put_u32(struct pipo_buf *b, uint32_t v)
{
	uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
	pipo_put_bytes(b, x, 4);
}

void pipo_put_u64(struct pipo_buf *b, uint64_t v)
{
	pipo_put_u32(b, (uint32_t)(v >> 32));
	pipo_put_u32(b, (uint32_t)v);
}

void pipo_put_str8(struct pipo_buf *b, const char *s)
{
	size_t n = strlen(s);
	if (n > 255) {
		b->overflow = true;
		return;
	}
	pipo_put_u8(b, (uint8_t)n);
	pipo_put_bytes(b, s, n);
}

void pipo_put_session(struct pipo_buf *b, const struct pipo_session *s)
{
	pipo_put_u64(b, s->id);
	pipo_put_u8(b, s->state);
	pipo_put_u8(b, s->family);
	pipo_put_bytes(b, s->addr, s->family == 6 ? 16 : 4);
	pipo_put_u16(b, s->sport);
	pipo_put_str8(b, s->user);
	pipo_put_str8(b, s->dest);
	pipo_put_u16(b, s->dport);
	pipo_put_u64(b, s->up);
	pipo_put_u64(b, s->down);
	pipo_put_u64(b, s->age_ms);
}

void pipo_put_session_ex(struct pipo_buf *b, const struct pipo_session *s)
{
	pipo_put_session(b, s);
	pipo_put_u8(b, s->cmd);
	pipo_put_u64(b, s->dgrams_up);
	pipo_put_u64(b, s->dgrams_down);
	pipo_put_u8(b, s->method);
	pipo_put_u8(b, s->protection);
}

void pipo_session_from_ctrl(struct pipo_session *out, const struct ctrl_session *in)
{
	static const uint8_t states[] = {
	    [CTRL_SS_HANDSHAKE] = PIPO_SS_HANDSHAKE, [CTRL_SS_RESOLVING] = PIPO_SS_RESOLVING,
	    [CTRL_SS_CONNECTING] = PIPO_SS_CONNECTING, [CTRL_SS_RELAY] = PIPO_SS_RELAY,
	    [CTRL_SS_CLOSING] = PIPO_SS_CLOSING,
	};
	memset(out, 0, sizeof *out);
	out->id = in->id;
	out->state = in->state < sizeof states ? states[in->state] : PIPO_SS_HANDSHAKE;
	out->family = in->family == 6 ? 6 : 4;
	memcpy(out->addr, in->addr, sizeof out->addr);
	out->sport = in->sport;
	out->dport = in->dport;
	snprintf(out->user, sizeof out->user, "%.*s", (int)strnlen(in->user, sizeof in->user), in->user);
	snprintf(out->dest, sizeof out->dest, "%.*s", (int)strnlen(in->dest, sizeof in->dest), in->dest);
	out->up = in->up;
	out->down = in->down;
	out->age_ms = in->age_ms;
	out->cmd = in->cmd;
	out->dgrams_up = in->dgrams_up;
	out->dgrams_down = in->dgrams_down;
	out->method = in->method;
	out->protection = in->protection;
}

static const uint8_t *take(struct pipo_cur *c, size_t n)
{
	if (c->bad || c->len - c->pos < n) {
		c->bad = true;
		return NULL;
	}
	const uint8_t *p = c->p + c->pos;
	c->pos += n;
	return p;
}

uint8_t pipo_get_u8(struct pipo_cur *c)
{
	const uint8_t *p = take(c, 1);
	return p ? p[0] : 0;
}

uint16_t pipo_get_u16(struct pipo_cur *c)
{
	const uint8_t *p = take(c, 2);
	return p ? (uint16_t)(p[0] << 8 | p[1]) : 0;
}

uint32_t pipo_get_u32(struct pipo_cur *c)
{
	const uint8_t *p = take(c, 4);
	return p ? (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3] : 0;
}

uint64_t pipo_get_u64(struct pipo_cur *c)
{
	uint64_t hi = pipo_get_u32(c);
	return hi << 32 | pipo_get_u32(c);
}

static void get_str(struct pipo_cur *c, size_t n, char *out, size_t cap)
{
	const uint8_t *p = n < cap ? take(c, n) : NULL;
	if (!p) {
		c->bad = true;
		out[0] = '\0';
		return;
	}
	memcpy(out, p, n);
	out[n] = '\0';
	if (memchr(out, '\0', n))
		c->bad = true;
}

void pipo_get_str8(struct pipo_cur *c, char *out, size_t cap)
{
	get_str(c, pipo_get_u8(c), out, cap);
}

void pipo_get_str16(struct pipo_cur *c, char *out, size_t cap)
{
	get_str(c, pipo_get_u16(c), out, cap);
}

void pipo_get_session(struct pipo_cur *c, struct pipo_session *s)
{
	memset(s, 0, sizeof *s);
	s->id = pipo_get_u64(c);
	s->state = pipo_get_u8(c);
	s->family = pipo_get_u8(c);
	if (s->family != 4 && s->family != 6)
		c->bad = true;
	const uint8_t *a = take(c, s->family == 6 ? 16 : 4);
	if (a)
		memcpy(s->addr, a, s->family == 6 ? 16 : 4);
	s->sport = pipo_get_u16(c);
	pipo_get_str8(c, s->user, sizeof s->user);
	pipo_get_str8(c, s->dest, sizeof s->dest);
	s->dport = pipo_get_u16(c);
	s->up = pipo_get_u64(c);
	s->down = pipo_get_u64(c);
	s->age_ms = pipo_get_u64(c);
}

void pipo_get_session_ex(struct pipo_cur *c, struct pipo_session *s)
{
	pipo_get_session(c, s);
	s->cmd = pipo_get_u8(c);
	s->dgrams_up = pipo_get_u64(c);
	s->dgrams_down = pipo_get_u64(c);
	s->method = pipo_get_u8(c);
	s->protection = pipo_get_u8(c);
}

const char *pipo_status_name(uint8_t status)
{
	switch (status) {
	case PIPO_OK: return "ok";
	case PIPO_E_NOT_FOUND: return "not found";
	case PIPO_E_EXISTS: return "already exists";
	case PIPO_E_INVALID: return "invalid value";
	case PIPO_E_UNKNOWN: return "unknown command";
	case PIPO_E_MALFORMED: return "malformed request";
	case PIPO_E_TOO_BIG: return "request too big";
	case PIPO_E_VERSION: return "unsupported protocol version";
	case PIPO_E_FULL: return "users table full";
	case PIPO_E_BUSY: return "server busy, try again";
	case PIPO_E_FIXED: return "user given on the server's command line: change it there";
	case PIPO_E_SERVER: return "server error";
	default: return "unknown status";
	}
}

const char *pipo_metric_name(uint16_t id)
{
	static const char *const names[] = {
	    [PIPO_MET_CONN_TOTAL] = "connections_total",
	    [PIPO_MET_CONN_CURRENT] = "connections_current",
	    [PIPO_MET_CONN_MAX] = "connections_max",
	    [PIPO_MET_BYTES_UP] = "bytes_up",
	    [PIPO_MET_BYTES_DOWN] = "bytes_down",
	    [PIPO_MET_USERS_CONNECTED] = "users_connected",
	    [PIPO_MET_USER_COUNT] = "users",
	    [PIPO_MET_REQUESTS] = "requests",
	    [PIPO_MET_AUTH_FAILURES] = "auth_failures",
	    [PIPO_MET_NO_METHOD] = "no_acceptable_method",
	    [PIPO_MET_HANDSHAKE_TIMEOUTS] = "handshake_timeouts",
	    [PIPO_MET_IDLE_TIMEOUTS] = "idle_timeouts",
	    [PIPO_MET_ACCEPT_PAUSES] = "accept_pauses",
	    [PIPO_MET_DNS_LOOKUPS] = "dns_lookups",
	    [PIPO_MET_DNS_FAILURES] = "dns_failures",
	    [PIPO_MET_LOG_DROPPED] = "log_lines_dropped",
	    [PIPO_MET_WORKER_RESTARTS] = "worker_restarts",
	    [PIPO_MET_ADMIN_SESSIONS] = "admin_sessions",
	    [PIPO_MET_WORKERS] = "workers",
	    [PIPO_MET_RELAYING] = "sessions_relaying",
	    [PIPO_MET_DNS_CACHE_HITS] = "dns_cache_hits",
	    [PIPO_MET_CREDENTIALS] = "credentials_recorded",
	    [PIPO_MET_DNS_COALESCED] = "dns_coalesced",
	    [PIPO_MET_DOH_QUERIES] = "doh_queries",
	    [PIPO_MET_DOH_FAILURES] = "doh_failures",
	    [PIPO_MET_DNS_FALLBACKS] = "dns_fallbacks",
	    [PIPO_MET_DOH_OUTAGES] = "doh_outages",
	    [PIPO_MET_DNS_TIMEOUTS] = "dns_timeouts",
	    [PIPO_MET_DNS_LATENCY_P50] = "dns_latency_p50_us",
	    [PIPO_MET_DNS_LATENCY_P99] = "dns_latency_p99_us",
	    [PIPO_MET_BYTES_SPLICED] = "bytes_spliced",
	    [PIPO_MET_AUTH_DELAYED] = "auth_delayed",
	    [PIPO_MET_AUTH_EVICTED] = "auth_checks_evicted",
	    [PIPO_MET_AUTH_BACKOFF_FULL] = "auth_backoff_replaced",
	    [PIPO_MET_UNAUTH_REFUSED] = "unauth_refused",
	    [PIPO_MET_LIMIT_REFUSED] = "limit_refused",
	    [PIPO_MET_RATE_PAUSES] = "rate_pauses",
	    [PIPO_MET_SESSIONS_LIMITED] = "sessions_limited",
	    [PIPO_MET_BIND_STARTED] = "binds_started",
	    [PIPO_MET_BIND_ACCEPTED] = "binds_accepted",
	    [PIPO_MET_BIND_TIMEOUTS] = "bind_timeouts",
	    [PIPO_MET_BIND_WRONG_PEER] = "bind_wrong_peer",
	    [PIPO_MET_CLIENTS_BLOCKED] = "clients_blocked",
	    [PIPO_MET_RULE_BLOCKED] = "requests_blocked_by_rule",
	    [PIPO_MET_DEFAULT_BLOCKED] = "requests_blocked_by_default",
	    [PIPO_MET_ADDRS_SKIPPED] = "addresses_skipped",
	    [PIPO_MET_UDP_DGRAMS_UP] = "udp_datagrams_up",
	    [PIPO_MET_UDP_DGRAMS_DOWN] = "udp_datagrams_down",
	    [PIPO_MET_UDP_DROP_SOURCE] = "udp_dropped_source",
	    [PIPO_MET_UDP_DROP_FRAG] = "udp_dropped_frag",
	    [PIPO_MET_UDP_DROP_MALFORMED] = "udp_dropped_malformed",
	    [PIPO_MET_UDP_DROP_FILTER] = "udp_dropped_filter",
	    [PIPO_MET_UDP_DROP_LOOKUP] = "udp_dropped_lookup",
	    [PIPO_MET_UDP_DROP_QUEUE] = "udp_dropped_queue",
	    [PIPO_MET_UDP_DROP_SEND] = "udp_dropped_send",
	    [PIPO_MET_UDP_DROP_DENIED] = "udp_dropped_denied",
	    [PIPO_MET_UDP_DROP_RATE] = "udp_dropped_rate",
	    [PIPO_MET_GSS_LOGINS] = "gssapi_logins",
	    [PIPO_MET_GSS_FAILURES] = "gssapi_failures",
	    [PIPO_MET_GSS_WRAPPED] = "gssapi_bytes_wrapped",
	    [PIPO_MET_GSS_UNWRAPPED] = "gssapi_bytes_unwrapped",
	};
	static const char *const replies[] = {
	    "replies_succeeded",     "replies_general_failure", "replies_not_allowed",
	    "replies_net_unreach",   "replies_host_unreach",    "replies_conn_refused",
	    "replies_ttl_expired",   "replies_cmd_unsupported", "replies_atyp_unsupported",
	};
	if (id >= PIPO_MET_REPLY_0 && id < PIPO_MET_REPLY_0 + 9)
		return replies[id - PIPO_MET_REPLY_0];
	if (id < sizeof names / sizeof names[0] && names[id])
		return names[id];
	return NULL;
}

/* ---- access rules: listing and rule test ----------------------------------- */

void pipo_put_str16(struct pipo_buf *b, const char *s)
{
	size_t n = strlen(s);
	if (n > UINT16_MAX) {
		b->overflow = true;
		return;
	}
	pipo_put_u16(b, (uint16_t)n);
	pipo_put_bytes(b, s, n);
}

void pipo_put_rule(struct pipo_buf *b, const struct pipo_rule *r)
{
	if (strlen(r->text) > PIPO_RULE_TEXT_MAX) {
		b->overflow = true;
		return;
	}
	pipo_put_u32(b, r->number);
	pipo_put_u32(b, r->line);
	pipo_put_u8(b, r->stage);
	pipo_put_u8(b, r->action);
	pipo_put_u64(b, r->hits);
	pipo_put_str16(b, r->text);
}

void pipo_get_rule(struct pipo_cur *c, struct pipo_rule *r, char *text, size_t cap)
{
	r->number = pipo_get_u32(c);
	r->line = pipo_get_u32(c);
	r->stage = pipo_get_u8(c);
	r->action = pipo_get_u8(c);
	r->hits = pipo_get_u64(c);
	pipo_get_str16(c, text, cap < PIPO_RULE_TEXT_MAX + 1 ? cap : PIPO_RULE_TEXT_MAX + 1);
	r->text = text;
	if (r->stage > PIPO_RULE_CLIENT || r->action > PIPO_RULE_BLOCK)
		c->bad = true;
}

void pipo_put_rule_test(struct pipo_buf *b, const struct pipo_rule_test *t)
{
	pipo_put_str8(b, t->user);
	pipo_put_str8(b, t->source);
	pipo_put_str8(b, t->dest);
	pipo_put_u16(b, t->port);
	pipo_put_u8(b, t->cmd);
}

void pipo_get_rule_test(struct pipo_cur *c, struct pipo_rule_test *t)
{
	pipo_get_str8(c, t->user, sizeof t->user);
	pipo_get_str8(c, t->source, sizeof t->source);
	pipo_get_str8(c, t->dest, sizeof t->dest);
	t->port = pipo_get_u16(c);
	t->cmd = pipo_get_u8(c);
}

void pipo_put_rule_verdict(struct pipo_buf *b, const struct pipo_rule_verdict *v)
{
	const char *text = v->text ? v->text : "";
	if (strlen(text) > PIPO_RULE_TEXT_MAX) {
		b->overflow = true;
		return;
	}
	pipo_put_u8(b, v->decision);
	pipo_put_u8(b, v->stage);
	pipo_put_u32(b, v->number);
	pipo_put_u32(b, v->line);
	pipo_put_u8(b, v->on_name);
	pipo_put_str16(b, text);
}

void pipo_get_rule_verdict(struct pipo_cur *c, struct pipo_rule_verdict *v, char *text,
                           size_t cap)
{
	v->decision = pipo_get_u8(c);
	v->stage = pipo_get_u8(c);
	v->number = pipo_get_u32(c);
	v->line = pipo_get_u32(c);
	v->on_name = pipo_get_u8(c);
	pipo_get_str16(c, text, cap < PIPO_RULE_TEXT_MAX + 1 ? cap : PIPO_RULE_TEXT_MAX + 1);
	v->text = text;
	if (v->decision > PIPO_RULE_UNDECIDED || v->stage > PIPO_RULE_CLIENT || v->on_name > 1)
		c->bad = true;
}
