#include "admin.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "../admin/pipo.h"
#include "../shared/addr.h"
#include "../shared/clock.h"
#include "../shared/ctrl.h"
#include "../shared/log.h"
#include "../shared/shm.h"
#include "../shared/auth.h"
#include "master.h"

#define ADMIN_MAX_SESSIONS 16
#define ADMIN_IDLE_MS 60000
#define ADMIN_FAIL_DELAY_MS 1000
#define ADMIN_WORKER_WAIT_MS 2000
#define ADMIN_OUT_MAX (4u << 20)
#define ADMIN_IN_BUF 16384

enum pending_kind { PEND_NONE, PEND_LIST, PEND_CLOSE };

struct out_msg {
	struct out_msg *next;
	size_t len, pos;
	uint8_t data[];
};

struct admin_sess {
	struct admin_sess *next;
	struct admin *a;
	struct loop_deferred deferred;
	struct loop_watch w;
	int fd;
	bool authed;
	bool closing; /* send what is queued, then close */
	bool readable;
	struct rfc1929 auth;
	struct auth_job *job;
	struct pipo_reader rd;
	uint8_t in[ADMIN_IN_BUF];
	size_t in_pos, in_len;
	struct out_msg *out, **out_tail;
	size_t out_bytes;
	struct loop_timer idle;
	struct loop_timer delay; /* failed login answered late; worker wait */

	/* A request waiting for the workers (answered before any later one). */
	enum pending_kind pend;
	uint32_t pend_tag;
	uint32_t pend_waiting;
	uint64_t pend_after;
	uint32_t pend_max;
	bool pend_more;
	bool pend_found;
	size_t pend_n;
	struct pipo_session *pend_sessions;
	uint8_t payload[PIPO_MAX_REQUEST];
};

struct admin {
	struct master *m;
	struct loop *loop;
	struct shm_segment *seg;
	struct auth *auth;
	int unix_fd, sctp_fd;
	struct loop_watch unix_w, sctp_w;
	char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct loop_tlist idle_tl, misc_tl;
	struct admin_sess *sessions;
	unsigned nsessions;
	uint32_t next_tag;
};

static void sess_close(struct admin_sess *s);
static void process(struct admin_sess *s);

/* ---- output -------------------------------------------------------------- */

static void flush(struct admin_sess *s)
{
	while (s->out) {
		struct out_msg *o = s->out;
		ssize_t n = send(s->fd, o->data + o->pos, o->len - o->pos, MSG_NOSIGNAL | MSG_DONTWAIT);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno != EAGAIN)
				sess_close(s);
			return;
		}
		o->pos += (size_t)n;
		if (o->pos < o->len)
			return;
		s->out = o->next;
		if (!s->out)
			s->out_tail = &s->out;
		s->out_bytes -= o->len;
		free(o);
	}
	if (s->closing)
		sess_close(s);
}

/* Queue one protocol message; over SCTP it leaves in one send(). */
static void queue(struct admin_sess *s, const void *p, size_t n)
{
	struct out_msg *o = malloc(sizeof *o + n);
	if (!o) {
		sess_close(s);
		return;
	}
	o->next = NULL;
	o->len = n;
	o->pos = 0;
	memcpy(o->data, p, n);
	*s->out_tail = o;
	s->out_tail = &o->next;
	s->out_bytes += n;
}

static void respond(struct admin_sess *s, uint8_t type, uint8_t cmd, uint8_t status,
                    const struct pipo_buf *body)
{
	size_t len = body && status == PIPO_OK ? body->len : 0;
	uint8_t *msg = malloc(PIPO_HEADER_LEN + len);
	if (!msg) {
		sess_close(s);
		return;
	}
	pipo_header_encode(msg, type, cmd, status, (uint32_t)len);
	if (len)
		memcpy(msg + PIPO_HEADER_LEN, body->p, len);
	queue(s, msg, PIPO_HEADER_LEN + len);
	free(msg);
}

/* ---- session life -------------------------------------------------------- */

static void sess_free(void *p)
{
	struct admin_sess *s = p;
	free(s->pend_sessions);
	free(s);
}

static void sess_close(struct admin_sess *s)
{
	struct admin *a = s->a;
	if (s->fd < 0)
		return;
	auth_cancel(a->auth, s->job);
	loop_timer_stop(&s->idle);
	loop_timer_stop(&s->delay);
	loop_watch_del(a->loop, &s->w);
	close(s->fd);
	s->fd = -1;
	while (s->out) {
		struct out_msg *o = s->out;
		s->out = o->next;
		free(o);
	}
	for (struct admin_sess **pp = &a->sessions; *pp; pp = &(*pp)->next)
		if (*pp == s) {
			*pp = s->next;
			break;
		}
	a->nsessions--;
	__atomic_store_n(&a->seg->admin_sessions, a->nsessions, __ATOMIC_RELAXED);
	explicit_bzero(&s->auth, sizeof s->auth);
	loop_defer_free(a->loop, &s->deferred, sess_free, s);
}

static void on_idle(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct admin_sess *s = t->data;
	log_info("admin session closed: silent for %d s", ADMIN_IDLE_MS / 1000);
	sess_close(s);
}

/* ---- requests ------------------------------------------------------------ */

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

static void metrics(struct admin *a, struct pipo_buf *b)
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
	};
	size_t n = sizeof counters / sizeof counters[0];
	pipo_put_u16(b, (uint16_t)(n + 9 + 8 + 2));
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
	put_metric(b, PIPO_MET_ADMIN_SESSIONS, a->nsessions);
	put_metric(b, PIPO_MET_WORKERS, workers_running(seg));
	put_metric(b, PIPO_MET_RELAYING, shm_gauge_sum(seg, G_CONN_RELAYING));
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
static void list_users(struct admin *a, struct pipo_buf *b, bool stats)
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

static void doh_url(const struct settings *s, char *out, size_t len)
{
	if (s->doh_url[0])
		snprintf(out, len, "%s", s->doh_url);
	else if (strchr(s->doh_ip, ':'))
		snprintf(out, len, "http://[%s]:%u%s%s", s->doh_ip, s->doh_port, s->doh_path,
		         s->doh_query);
	else
		snprintf(out, len, "http://%s:%u%s%s", s->doh_ip, s->doh_port, s->doh_path, s->doh_query);
}

static uint8_t query(struct admin_sess *s, uint8_t cmd, struct pipo_cur *c, struct pipo_buf *b)
{
	struct admin *a = s->a;
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
	case PIPO_Q_BUFFER_SIZE:
		pipo_put_u32(b, cfg->buffer_size);
		break;
	case PIPO_Q_HANDSHAKE_TIMEOUT:
		pipo_put_u32(b, cfg->handshake_timeout_s);
		break;
	case PIPO_Q_IDLE_TIMEOUT:
		pipo_put_u32(b, cfg->idle_timeout_s);
		break;
	case PIPO_Q_CONNECT_TIMEOUT:
		pipo_put_u32(b, cfg->connect_timeout_s);
		break;
	case PIPO_Q_SPLICE:
		pipo_put_u8(b, cfg->splice);
		break;
	case PIPO_Q_PIPE_SIZE:
		pipo_put_u32(b, cfg->pipe_size);
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
	case PIPO_Q_ANONYMOUS:
		pipo_put_u8(b, cfg->anonymous);
		break;
	case PIPO_Q_DOH: {
		char url[PIPO_MAX_URL + 64];
		doh_url(cfg, url, sizeof url);
		pipo_put_u8(b, cfg->doh_post);
		pipo_put_u16(b, (uint16_t)strlen(url));
		pipo_put_bytes(b, url, strlen(url));
		break;
	}
	case PIPO_Q_DISSECTORS:
		pipo_put_u8(b, cfg->dissectors);
		break;
	case PIPO_Q_IDLE_CLEANUP:
		pipo_put_u8(b, cfg->idle_cleanup);
		break;
	case PIPO_Q_SERVER:
		pipo_put_u8(b, PIPO_VERSION);
		pipo_put_u32(b, (uint32_t)seg->master_pid);
		pipo_put_u64(b, (uint64_t)(clock_ms() - (int64_t)seg->started_ms));
		pipo_put_u32(b, workers_running(seg));
		pipo_put_str8(b, SOCKS5D_VERSION);
		break;
	default:
		return PIPO_E_UNKNOWN;
	}
	return pipo_cur_done(c) ? PIPO_OK : PIPO_E_MALFORMED;
}

/* Ask every running worker for its sessions; the answer is sent when the
 * last one replied (or after ADMIN_WORKER_WAIT_MS). */
static uint8_t start_list(struct admin_sess *s, struct pipo_cur *c)
{
	uint64_t after = pipo_get_u64(c);
	uint16_t max = pipo_get_u16(c);
	if (!pipo_cur_done(c))
		return PIPO_E_MALFORMED;
	if (max == 0 || max > PIPO_SESSIONS_PAGE_MAX)
		return PIPO_E_INVALID;
	struct admin *a = s->a;
	s->pend_sessions = calloc(SHM_MAX_WORKERS * (size_t)max, sizeof *s->pend_sessions);
	if (!s->pend_sessions)
		return PIPO_E_SERVER;
	s->pend = PEND_LIST;
	s->pend_tag = ++a->next_tag;
	s->pend_after = after;
	s->pend_max = max;
	s->pend_more = false;
	s->pend_n = 0;
	s->pend_waiting = 0;
	struct ctrl_msg m = {.type = CTRL_LIST_SESSIONS, .tag = s->pend_tag, .a = after, .b = max};
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++)
		if (master_worker_send(a->m, i, &m) == 0)
			s->pend_waiting++;
	return PIPO_OK;
}

static uint8_t start_close(struct admin_sess *s, struct pipo_cur *c)
{
	uint64_t id = pipo_get_u64(c);
	if (!pipo_cur_done(c))
		return PIPO_E_MALFORMED;
	uint64_t w = id >> CTRL_ID_SHIFT;
	struct admin *a = s->a;
	s->pend = PEND_CLOSE;
	s->pend_tag = ++a->next_tag;
	s->pend_found = false;
	s->pend_waiting = 0;
	struct ctrl_msg m = {.type = CTRL_CLOSE_SESSION, .tag = s->pend_tag, .a = id};
	if (w >= 1 && w <= SHM_MAX_WORKERS && master_worker_send(a->m, (uint32_t)(w - 1), &m) == 0)
		s->pend_waiting = 1;
	return PIPO_OK;
}

static int cmp_session(const void *x, const void *y)
{
	const struct pipo_session *p = x, *q = y;
	return p->id < q->id ? -1 : p->id > q->id;
}

static void finish_pending(struct admin_sess *s)
{
	uint8_t buf[16];
	struct pipo_buf b = {.p = buf, .cap = sizeof buf};
	if (s->pend == PEND_LIST) {
		qsort(s->pend_sessions, s->pend_n, sizeof *s->pend_sessions, cmp_session);
		size_t n = s->pend_n < s->pend_max ? s->pend_n : s->pend_max;
		bool more = s->pend_more || s->pend_n > n;
		size_t cap = 3 + n * 600;
		struct pipo_buf body = {.p = malloc(cap), .cap = cap};
		if (!body.p) {
			respond(s, PIPO_QUERY, PIPO_Q_SESSIONS, PIPO_E_SERVER, NULL);
		} else {
			pipo_put_u16(&body, (uint16_t)n);
			pipo_put_u8(&body, more);
			for (size_t i = 0; i < n; i++)
				pipo_put_session(&body, &s->pend_sessions[i]);
			respond(s, PIPO_QUERY, PIPO_Q_SESSIONS, body.overflow ? PIPO_E_SERVER : PIPO_OK,
			        &body);
			free(body.p);
		}
		free(s->pend_sessions);
		s->pend_sessions = NULL;
	} else if (s->pend == PEND_CLOSE) {
		respond(s, PIPO_MODIFY, PIPO_M_CLOSE_SESSION,
		        s->pend_found ? PIPO_OK : PIPO_E_NOT_FOUND, &b);
	}
	s->pend = PEND_NONE;
	loop_timer_stop(&s->delay);
	if (s->fd >= 0) {
		flush(s);
		if (s->fd >= 0)
			process(s);
	}
}

static void on_delay(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct admin_sess *s = t->data;
	if (s->pend != PEND_NONE) {
		if (s->pend == PEND_LIST && s->pend_n == 0 && s->pend_waiting) {
			/* No worker answered at all: say so rather than "no sessions". */
			free(s->pend_sessions);
			s->pend_sessions = NULL;
			s->pend = PEND_NONE;
			respond(s, PIPO_QUERY, PIPO_Q_SESSIONS, PIPO_E_BUSY, NULL);
			flush(s);
			if (s->fd >= 0)
				process(s);
			return;
		}
		finish_pending(s);
		return;
	}
	/* A failed login: answered late, then closed. */
	uint8_t msg[2] = {PIPO_VERSION, PIPO_AUTH_FAILED};
	queue(s, msg, 2);
	s->closing = true;
	flush(s);
}

void admin_worker_msg(struct admin *a, uint32_t index, const uint8_t *msg, size_t len)
{
	(void)index;
	if (len < sizeof(struct ctrl_msg))
		return;
	struct ctrl_msg m;
	memcpy(&m, msg, sizeof m);
	for (struct admin_sess *s = a->sessions; s; s = s->next) {
		if (s->pend == PEND_NONE || s->pend_tag != m.tag)
			continue;
		if (m.type == CTRL_SESSIONS && s->pend == PEND_LIST) {
			size_t n = m.b;
			if (n > s->pend_max || sizeof m + n * sizeof(struct ctrl_session) > len)
				n = 0;
			for (size_t i = 0; i < n; i++) {
				struct ctrl_session rec;
				memcpy(&rec, msg + sizeof m + i * sizeof rec, sizeof rec);
				pipo_session_from_ctrl(&s->pend_sessions[s->pend_n + i], &rec);
			}
			s->pend_n += n;
			s->pend_more |= m.c != 0;
		} else if (m.type == CTRL_CLOSED && s->pend == PEND_CLOSE) {
			s->pend_found = m.b != 0;
		} else {
			return;
		}
		if (s->pend_waiting && --s->pend_waiting == 0)
			finish_pending(s);
		return;
	}
}

static uint8_t set_u32(struct pipo_cur *c, uint32_t *field, uint32_t min, uint32_t max)
{
	uint32_t v = pipo_get_u32(c);
	if (!pipo_cur_done(c))
		return PIPO_E_MALFORMED;
	if (v < min || v > max)
		return PIPO_E_INVALID;
	*field = v;
	return PIPO_OK;
}

static uint8_t set_u8(struct pipo_cur *c, uint8_t *field, uint8_t max)
{
	uint8_t v = pipo_get_u8(c);
	if (!pipo_cur_done(c))
		return PIPO_E_MALFORMED;
	if (v > max)
		return PIPO_E_INVALID;
	*field = v;
	return PIPO_OK;
}

static uint8_t modify(struct admin_sess *s, uint8_t cmd, struct pipo_cur *c, struct pipo_buf *b)
{
	struct admin *a = s->a;
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
		enum master_user_op op = cmd == PIPO_M_ADD_USER   ? MASTER_USER_ADD
		                         : cmd == PIPO_M_DEL_USER ? MASTER_USER_DEL
		                                                  : MASTER_USER_PASSWD;
		st = (uint8_t)master_user_change(a->m, op, name, pass, admin, &persisted);
		explicit_bzero(pass, sizeof pass);
		pipo_put_u8(b, persisted);
		return st;
	}
	case PIPO_M_DISSECTORS:
		st = set_u8(c, &cfg.dissectors, 1);
		break;
	case PIPO_M_IDLE_CLEANUP:
		st = set_u8(c, &cfg.idle_cleanup, 1);
		break;
	case PIPO_M_ANONYMOUS:
		st = set_u8(c, &cfg.anonymous, ANON_NEVER);
		break;
	case PIPO_M_BUFFER_SIZE:
		st = set_u32(c, &cfg.buffer_size, 4096, 1048576);
		break;
	case PIPO_M_HANDSHAKE_TIMEOUT:
		st = set_u32(c, &cfg.handshake_timeout_s, 1, 86400);
		break;
	case PIPO_M_IDLE_TIMEOUT:
		st = set_u32(c, &cfg.idle_timeout_s, 1, 604800);
		break;
	case PIPO_M_CONNECT_TIMEOUT:
		st = set_u32(c, &cfg.connect_timeout_s, 1, 3600);
		break;
	case PIPO_M_SPLICE:
		st = set_u8(c, &cfg.splice, 1);
		break;
	case PIPO_M_PIPE_SIZE:
		st = set_u32(c, &cfg.pipe_size, 4096, 1048576);
		break;
	case PIPO_M_DOH: {
		uint8_t method = pipo_get_u8(c);
		uint16_t ulen = pipo_get_u16(c);
		if (c->bad || c->len - c->pos != ulen)
			return PIPO_E_MALFORMED;
		if (ulen >= sizeof cfg.doh_url)
			return PIPO_E_INVALID;
		char url[sizeof cfg.doh_url];
		c->pos -= 2;
		pipo_get_str16(c, url, sizeof url);
		if (!pipo_cur_done(c))
			return PIPO_E_MALFORMED;
		if (method > 1 || (url[0] && strncmp(url, "http://", 7) != 0 &&
		                   strncmp(url, "https://", 8) != 0))
			return PIPO_E_INVALID;
		cfg.doh_post = method;
		if (url[0])
			snprintf(cfg.doh_url, sizeof cfg.doh_url, "%s", url);
		st = PIPO_OK;
		break;
	}
	case PIPO_M_RELOAD:
		if (!pipo_cur_done(c))
			return PIPO_E_MALFORMED;
		return master_reload(a->m) == 0 ? PIPO_OK : PIPO_E_INVALID;
	default:
		return PIPO_E_UNKNOWN;
	}
	if (st == PIPO_OK) {
		master_apply(a->m, &cfg);
		log_info("admin: setting 0x%02x changed", cmd);
	}
	return st;
}

/* Handle one complete frame; false when the request waits for workers. */
static bool handle(struct admin_sess *s)
{
	struct pipo_reader *rd = &s->rd;
	const struct pipo_frame *f = &rd->f;
	uint8_t buf[8192];
	struct pipo_buf b = {.p = buf, .cap = sizeof buf};
	struct pipo_buf big = {0};
	struct pipo_cur c = {.p = s->payload, .len = rd->too_big ? 0 : f->len};
	uint8_t st;
	if (f->ver != PIPO_VERSION) {
		st = PIPO_E_VERSION;
	} else if (rd->too_big) {
		st = PIPO_E_TOO_BIG;
	} else if (f->type == PIPO_QUERY && f->cmd == PIPO_Q_SESSIONS) {
		st = start_list(s, &c);
		if (st == PIPO_OK) {
			if (s->pend_waiting == 0) {
				finish_pending(s);
				return true;
			}
			loop_timer_start_at(&s->a->misc_tl, &s->delay, s->a->loop->now + ADMIN_WORKER_WAIT_MS);
			return false;
		}
	} else if (f->type == PIPO_MODIFY && f->cmd == PIPO_M_CLOSE_SESSION) {
		st = start_close(s, &c);
		if (st == PIPO_OK) {
			if (s->pend_waiting == 0) {
				finish_pending(s);
				return true;
			}
			loop_timer_start_at(&s->a->misc_tl, &s->delay, s->a->loop->now + ADMIN_WORKER_WAIT_MS);
			return false;
		}
	} else if (f->type == PIPO_QUERY) {
		if (f->cmd == PIPO_Q_USERS || f->cmd == PIPO_Q_USER_STATS) {
			/* Up to 1024 users of 255-byte names: the one large answer. */
			big.cap = 4 + SHM_MAX_USERS * (2 + PIPO_MAX_NAME + 1 + 20);
			big.p = malloc(big.cap);
			if (!big.p) {
				respond(s, f->type, f->cmd, PIPO_E_SERVER, NULL);
				return true;
			}
			st = query(s, f->cmd, &c, &big);
			respond(s, f->type, f->cmd, big.overflow ? PIPO_E_SERVER : st, &big);
			free(big.p);
			return true;
		}
		st = query(s, f->cmd, &c, &b);
	} else if (f->type == PIPO_MODIFY) {
		st = modify(s, f->cmd, &c, &b);
	} else {
		st = PIPO_E_UNKNOWN;
	}
	if (b.overflow)
		st = PIPO_E_SERVER;
	respond(s, f->type, f->cmd, st, &b);
	return true;
}

static void auth_done(void *arg, bool ok)
{
	struct admin_sess *s = arg;
	s->job = NULL;
	struct shm_user u;
	bool admin = ok && shm_user_get(s->a->seg, s->auth.user, &u) >= 0 && u.admin;
	if (!admin) {
		log_warn("admin login failed for '%s'", s->auth.user);
		loop_timer_start_at(&s->a->misc_tl, &s->delay, s->a->loop->now + ADMIN_FAIL_DELAY_MS);
		return;
	}
	log_info("admin '%s' logged in", s->auth.user);
	s->authed = true;
	uint8_t msg[2] = {PIPO_VERSION, PIPO_AUTH_OK};
	queue(s, msg, 2);
	flush(s);
	if (s->fd >= 0)
		process(s);
}

/* Parse and answer what is buffered, in order, until a request waits. */
static void process(struct admin_sess *s)
{
	while (s->fd >= 0 && s->in_pos < s->in_len && s->pend == PEND_NONE && !s->closing &&
	       !s->job && !loop_timer_active(&s->delay)) {
		size_t used;
		if (!s->authed) {
			int rc = pipo_auth_feed(&s->auth, s->in + s->in_pos, s->in_len - s->in_pos, &used);
			s->in_pos += used;
			if (rc == PIPO_NEED_MORE)
				break;
			if (rc == PIPO_ERROR) {
				uint8_t msg[2] = {PIPO_VERSION, s->auth.ver == PIPO_VERSION ? PIPO_AUTH_FAILED
				                                                           : PIPO_AUTH_BAD_VERSION};
				if (msg[1] == PIPO_AUTH_FAILED) {
					loop_timer_start_at(&s->a->misc_tl, &s->delay,
					                    s->a->loop->now + ADMIN_FAIL_DELAY_MS);
					break;
				}
				queue(s, msg, 2);
				s->closing = true;
				break;
			}
			struct shm_user u;
			int slot = shm_user_get(s->a->seg, s->auth.user, &u);
			enum auth_result r = auth_check(s->a->auth, slot, slot >= 0 ? &u : NULL, s->auth.pass,
			                                auth_done, s, &s->job);
			explicit_bzero(s->auth.pass, sizeof s->auth.pass);
			explicit_bzero(u.hash, sizeof u.hash);
			if (r == AUTH_PENDING)
				break;
			auth_done(s, r == AUTH_OK);
			continue;
		}
		int rc = pipo_reader_feed(&s->rd, s->in + s->in_pos, s->in_len - s->in_pos, &used);
		s->in_pos += used;
		if (rc != PIPO_DONE)
			break;
		if (!handle(s))
			break;
	}
	if (s->in_pos == s->in_len)
		s->in_pos = s->in_len = 0;
	if (s->fd >= 0)
		flush(s);
}

static void on_sess(struct loop *l, struct loop_watch *w, uint32_t events)
{
	struct admin_sess *s = w->data;
	if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
		flush(s);
		if (s->fd < 0)
			return;
	}
	if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
		return;
	loop_timer_start(l, &s->a->idle_tl, &s->idle);
	/* Back-pressure: a client that does not read its answers is not read. */
	while (s->fd >= 0 && s->out_bytes < ADMIN_OUT_MAX && s->in_len < sizeof s->in) {
		if (s->pend != PEND_NONE || s->job || loop_timer_active(&s->delay) || s->closing)
			break;
		ssize_t n = recv(s->fd, s->in + s->in_len, sizeof s->in - s->in_len, MSG_DONTWAIT);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			sess_close(s);
			return;
		}
		if (n < 0) {
			if (errno == EAGAIN)
				break;
			continue;
		}
		s->in_len += (size_t)n;
		process(s);
	}
}

static void on_listen(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)events;
	struct admin *a = w->data;
	for (int i = 0; i < 16; i++) {
		int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		if (a->nsessions >= ADMIN_MAX_SESSIONS) {
			log_warn("admin: %d sessions already: refusing another", ADMIN_MAX_SESSIONS);
			close(fd);
			continue;
		}
		struct admin_sess *s = calloc(1, sizeof *s);
		if (!s) {
			close(fd);
			continue;
		}
		s->a = a;
		s->fd = fd;
		s->out_tail = &s->out;
		pipo_auth_init(&s->auth);
		pipo_reader_init(&s->rd, s->payload, PIPO_MAX_REQUEST);
		loop_timer_init(&s->idle, on_idle, s);
		loop_timer_init(&s->delay, on_delay, s);
		if (loop_watch_add(l, &s->w, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, on_sess, s) < 0) {
			close(fd);
			free(s);
			continue;
		}
		s->next = a->sessions;
		a->sessions = s;
		a->nsessions++;
		__atomic_store_n(&a->seg->admin_sessions, a->nsessions, __ATOMIC_RELAXED);
		loop_timer_start(l, &a->idle_tl, &s->idle);
	}
}

/* ---- endpoints ----------------------------------------------------------- */

static void default_socket_path(char *out, size_t len)
{
	const char *rt = getenv("RUNTIME_DIRECTORY");
	if (rt && *rt) {
		/* systemd may list several directories separated by ':'. */
		snprintf(out, len, "%.*s/socks5d.sock", (int)strcspn(rt, ":"), rt);
	} else if (geteuid() == 0) {
		(void)mkdir("/run/socks5d", 0700);
		snprintf(out, len, "/run/socks5d/socks5d.sock");
	} else {
		snprintf(out, len, "socks5d.sock");
	}
}

static int open_unix(struct admin *a, const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sun.sun_path)
		return -ENAMETOOLONG;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* A socket file left by a server that is gone is replaced; one that a
	 * live server answers on is not taken over. */
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0) {
		if (connect(probe, (struct sockaddr *)&sun, sizeof sun) == 0) {
			close(probe);
			close(fd);
			return -EADDRINUSE;
		}
		if (errno == ECONNREFUSED)
			unlink(path);
		close(probe);
	}
	mode_t old = umask(0177);
	int rc = bind(fd, (struct sockaddr *)&sun, sizeof sun);
	umask(old);
	if (rc < 0 || chmod(path, 0600) < 0 || listen(fd, 16) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	a->unix_fd = fd;
	snprintf(a->unix_path, sizeof a->unix_path, "%s", path);
	return 0;
}

static int open_sctp(struct admin *a, const char *addr, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (addr_parse(addr, port, &ss, &len) < 0)
		return -EINVAL;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_SCTP);
	if (fd < 0)
		return -errno;
	int one = 1;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 16) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	a->sctp_fd = fd;
	return 0;
}

int admin_open(struct master *m, struct loop *l, struct admin **out)
{
	struct admin *a = calloc(1, sizeof *a);
	if (!a)
		return -ENOMEM;
	a->m = m;
	a->loop = l;
	a->seg = master_segment(m);
	a->unix_fd = a->sctp_fd = -1;
	loop_tlist_init(l, &a->idle_tl, ADMIN_IDLE_MS);
	loop_tlist_init(l, &a->misc_tl, 0);
	int rc = auth_new(l, &a->auth);
	if (rc < 0) {
		admin_close(a);
		return rc;
	}
	const struct settings *s = master_settings(m);
	char path[sizeof a->unix_path];
	if (s->admin_socket[0])
		snprintf(path, sizeof path, "%s", s->admin_socket);
	else
		default_socket_path(path, sizeof path);
	rc = open_unix(a, path);
	if (rc == -EADDRINUSE)
		log_error("admin socket %s is in use by another server: no unix-socket administration",
		          path);
	else if (rc < 0)
		log_error("cannot open the admin socket %s: %s", path, strerror(-rc));
	else if (loop_watch_add(l, &a->unix_w, a->unix_fd, EPOLLIN, on_listen, a) == 0)
		log_info("admin socket %s", path);
	rc = open_sctp(a, s->admin_addr, s->admin_port);
	if (rc == -EPROTONOSUPPORT || rc == -ESOCKTNOSUPPORT)
		log_warn("SCTP is not available in this kernel: administration over SCTP is off "
		         "(the unix socket serves)");
	else if (rc < 0)
		log_error("cannot open the SCTP admin endpoint %s port %u: %s", s->admin_addr,
		          s->admin_port, strerror(-rc));
	else if (loop_watch_add(l, &a->sctp_w, a->sctp_fd, EPOLLIN, on_listen, a) == 0)
		log_info("admin SCTP endpoint %s port %u", s->admin_addr, s->admin_port);
	*out = a;
	return 0;
}

static void release(struct admin *a, bool in_child)
{
	while (a->sessions) {
		struct admin_sess *s = a->sessions;
		if (in_child) {
			a->sessions = s->next;
			close(s->fd);
			while (s->out) {
				struct out_msg *o = s->out;
				s->out = o->next;
				free(o);
			}
			sess_free(s);
		} else {
			sess_close(s);
		}
	}
	if (a->unix_fd >= 0) {
		loop_watch_del(a->loop, &a->unix_w);
		close(a->unix_fd);
		if (!in_child)
			unlink(a->unix_path);
	}
	if (a->sctp_fd >= 0) {
		loop_watch_del(a->loop, &a->sctp_w);
		close(a->sctp_fd);
	}
	loop_tlist_detach(a->loop, &a->idle_tl);
	loop_tlist_detach(a->loop, &a->misc_tl);
	if (in_child)
		auth_forget(a->auth);
	else
		auth_free(a->auth);
	free(a);
}

void admin_before_fork(struct admin *a)
{
	if (a)
		auth_pause(a->auth);
}

void admin_after_fork(struct admin *a)
{
	if (a && auth_resume(a->auth) < 0)
		log_error("admin: cannot restart the password checker");
}

void admin_close(struct admin *a)
{
	if (a)
		release(a, false);
}

void admin_forget(struct admin *a)
{
	if (a)
		release(a, true);
}
