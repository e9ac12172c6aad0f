/*
 * session: the life cycle of a SOCKS5 session — start, the event dispatch
 * to the handler of the current state, failure replies and lingering, the
 * single finalize, and what the worker asks of its sessions (reconfigure,
 * list, close by id, abort all).  The states themselves live in
 * handshake.c, connect.c and relay.c (session_int.h).
 */
#include "session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../shared/auth.h"
#include "../shared/ctrl.h"
#include "../shared/log.h"
#include "pipes.h"
#include "gssapi.h"
#include "session_int.h"
#include "sniff.h"
#include "sockmap.h"
#include "udp.h"
#include "worker.h"

/* At most this much discarded per event while lingering. */
#define LINGER_READ_MAX 65536

void session_addr_text(const struct sockaddr_storage *ss, char *out, size_t len, uint16_t *port)
{
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
			inet_ntop(AF_INET, &s6->sin6_addr.s6_addr[12], out, (socklen_t)len);
		else
			inet_ntop(AF_INET6, &s6->sin6_addr, out, (socklen_t)len);
		*port = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &s4->sin_addr, out, (socklen_t)len);
		*port = ntohs(s4->sin_port);
	}
}

void session_user_text(const struct session *s, char out[SESSION_USER_TEXT_MAX])
{
	if (!s->user[0])
		snprintf(out, SESSION_USER_TEXT_MAX, "anonymous");
	else
		log_escape(out, SESSION_USER_TEXT_MAX, (const uint8_t *)s->user, strlen(s->user));
}

/* The attempts' watches live in the handshake state: events of the
 * current batch may still name them, so it is freed after the batch. */
void session_free_handshake(struct session *s)
{
	if (s->hs)
		loop_defer_free(&s->wk->loop, &s->hs->deferred, free, s->hs);
	s->hs = NULL;
}

void session_close_target(struct session *s)
{
	if (s->tfd < 0)
		return;
	loop_watch_close(&s->tw, s->tfd);
	s->tfd = -1;
}

int session_send_raw(struct session *s, const void *p, size_t n)
{
	if (!s->down) {
		s->down = worker_buf_get(s->wk);
		if (!s->down)
			return -ENOMEM;
	}
	struct rbuf *b = s->down;
	if (b->cap - b->last < n)
		return -ENOBUFS;
	memcpy(b->data + b->last, p, n);
	b->last += (uint32_t)n;
	while (b->pos < b->last && s->c_writable) {
		ssize_t w = send(s->cfd, b->data + b->pos, b->last - b->pos, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				s->c_writable = false;
			else
				return -errno;
		} else {
			b->pos += (uint32_t)w;
		}
	}
	if (b->pos == b->last) {
		worker_buf_put(s->wk, b);
		s->down = NULL;
	}
	return 0;
}

int session_send(struct session *s, const void *p, size_t n)
{
	if (n && gss_protected(s))
		return gss_send_reply(s, p, n);
	return session_send_raw(s, p, n);
}

void session_request_begin(struct session *s)
{
	s->requested = true;
	s->start_wall = (int64_t)time(NULL);
	shm_count(s->wk->slot, M_REQUESTS, 1);
}

void session_timed_out(struct session *s, enum shm_counter counter, const char *what)
{
	shm_count(s->wk->slot, counter, 1);
	log_debug("session %llu: %s timeout", (unsigned long long)s->id, what);
	session_finalize(s);
}

/* ---- lingering after a failure reply ------------------------------------ */

static void on_linger_timeout(struct loop *l, struct loop_timer *t)
{
	(void)l;
	session_finalize(t->data);
}

/* The linger state's client handler: finish sending the reply, then read
 * and discard until the client closes. */
static void linger(struct session *s)
{
	char sink[4096];
	if (s->down && s->c_writable) {
		if (session_send(s, "", 0) < 0) {
			session_finalize(s);
			return;
		}
		if (!s->down && !s->c_shut) {
			shutdown(s->cfd, SHUT_WR);
			s->c_shut = true;
		}
	}
	/* Bounded per event so that a fast sender cannot hold the loop; the
	 * linger timer ends a client that never stops. */
	for (size_t total = 0; s->c_readable && total < LINGER_READ_MAX;) {
		ssize_t n = recv(s->cfd, sink, sizeof sink, 0);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			session_finalize(s);
			return;
		}
		if (n < 0 && errno == EAGAIN)
			s->c_readable = false;
		if (n > 0)
			total += (size_t)n;
	}
}

void session_refuse(struct session *s, const uint8_t *msg, size_t n)
{
	if (session_send(s, msg, n) < 0) {
		session_finalize(s);
		return;
	}
	session_close_target(s);
	connect_close_attempts(s);
	s->phase = PH_LINGER;
	s->on_client = linger;
	s->on_target = NULL;
	s->timer.fn = on_linger_timeout;
	loop_timer_start(&s->wk->loop, &s->wk->linger_tl, &s->timer);
	if (!s->down) {
		shutdown(s->cfd, SHUT_WR);
		s->c_shut = true;
	}
	linger(s);
}

void session_fail(struct session *s, uint8_t rep)
{
	uint8_t out[SOCKS5_REPLY_MAX];
	s->rep = rep;
	if (s->requested)
		shm_count(s->wk->slot, (enum shm_counter)(M_REPLY_0 + rep), 1);
	session_refuse(s, out, socks5_reply_encode(out, rep, NULL));
}

/* ---- limits ------------------------------------------------------------- */

/* The session now holds a place in entry index. */
static void limits_held(struct session *s, uint32_t index)
{
	if (s->lim_n++ == 0) {
		loop_timer_init(&s->lim_timer, relay_rate_resume, s);
		shm_gauge_add(s->wk->slot, G_CONN_LIMITED, 1);
	}
	s->lim_idx[s->lim_n - 1] = index;
}

static bool limits_refuse(struct session *s, const char *what, uint32_t max)
{
	char name[SESSION_USER_TEXT_MAX];
	session_user_text(s, name);
	log_debug("session %llu: user '%s': %s at its %u sessions: refused",
	          (unsigned long long)s->id, name, what, max);
	shm_count(s->wk->slot, M_LIMIT_REFUSED, 1);
	session_fail(s, SOCKS5_REP_NOT_ALLOWED);
	return false;
}

bool session_limits_admit(struct session *s)
{
	if (s->user_slot < 0)
		return true;
	struct worker *wk = s->wk;
	struct limit_entry *e = &wk->seg->limits.user[s->user_slot];
	if (!__atomic_load_n(&e->on, __ATOMIC_ACQUIRE))
		return true;
	uint32_t max = __atomic_load_n(&e->max_sessions, __ATOMIC_RELAXED);
	uint32_t index = limits_user_index((uint32_t)s->user_slot);
	if (s->lim_n == 2 || !limits_take(e, max, &wk->slot->limit_held[index]))
		return limits_refuse(s, "user limit", max);
	limits_held(s, index);
	return true;
}

bool session_limits_admit_rule(struct session *s, uint32_t rule_number, uint32_t tag,
                               uint64_t ident, uint32_t max_sessions, uint64_t rate_in,
                               uint64_t rate_out)
{
	if (!max_sessions && !rate_in && !rate_out)
		return true;
	struct worker *wk = s->wk;
	struct limit_spec spec = {.max_sessions = max_sessions};
	spec.rate[LIMIT_IN] = rate_in;
	spec.rate[LIMIT_OUT] = rate_out;
	/* The entry is the rule's own, found by its identity: the places of a rule
	 * that a reload kept stay counted, those of a rule that is gone (or
	 * of the set a request was decided by) never count against another. */
	uint32_t index = 0;
	enum limits_rule_result r =
	    s->lim_n == 2 ? LIMITS_RULE_FULL
	                  : limits_rule_take(&wk->seg->limits, tag, ident, &spec, wk->slot->limit_held,
	                                     &index);
	if (r == LIMITS_RULE_NO_SLOT) {
		static bool warned;
		if (!warned) {
			warned = true;
			log_warn("rule %u: no free entry for its limits (all %d are held by "
			         "other rules' sessions): its requests are refused until some end",
			         rule_number, LIMITS_RULE_SLOTS);
		}
		log_debug("session %llu: rule %u: no entry for its limits: refused",
		          (unsigned long long)s->id, rule_number);
		shm_count(wk->slot, M_LIMIT_REFUSED, 1);
		session_fail(s, SOCKS5_REP_NOT_ALLOWED);
		return false;
	}
	if (r == LIMITS_RULE_FULL)
		return limits_refuse(s, "rule limit", max_sessions);
	limits_held(s, index);
	return true;
}

/* Places and unused allowance go back to the entries. */
static void limits_release(struct session *s)
{
	struct worker *wk = s->wk;
	if (!s->lim_n)
		return;
	loop_timer_stop(&s->lim_timer);
	for (uint8_t i = 0; i < s->lim_n; i++) {
		struct limit_entry *e = limits_entry_at(&wk->seg->limits, s->lim_idx[i]);
		for (int d = 0; d < 2; d++) {
			uint64_t rate = __atomic_load_n(&e->b[d].rate, __ATOMIC_RELAXED);
			if (rate && s->lim_allow[d])
				limits_bucket_give(&e->b[d], rate, s->lim_allow[d]);
		}
		limits_give(e, &wk->slot->limit_held[s->lim_idx[i]]);
	}
	s->lim_n = 0;
	shm_gauge_add(wk->slot, G_CONN_LIMITED, -1);
}

/* ---- events ------------------------------------------------------------- */

/* Readiness is kept as flags (edge-triggered watches); the handler of the
 * current state then does what the state does. */
static void on_client(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	struct session *s = w->data;
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI))
		s->c_readable = true;
	if (events & EPOLLPRI)
		s->urgent = true;
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		s->c_hup = true;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		s->c_writable = true;
	s->on_client(s);
}

void session_target_event(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	struct session *s = w->data;
	if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR | EPOLLPRI))
		s->t_readable = true;
	if (events & EPOLLPRI)
		s->urgent = true;
	if (events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR))
		s->t_hup = true;
	if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR))
		s->t_writable = true;
	if (s->on_target)
		s->on_target(s);
}

/* ---- life cycle --------------------------------------------------------- */

/* "" and "anonymous" are never allocated. */
static const char no_text[] = "";
static const char anonymous[] = "anonymous";

static void free_text(const char *t)
{
	if (t != no_text && t != anonymous)
		free((char *)t);
}

int session_set_text(const char **field, const char *text, size_t n)
{
	char *copy = NULL;
	if (n == 0 || (n == 9 && !memcmp(text, anonymous, 9))) {
		free_text(*field);
		*field = n ? anonymous : no_text;
		return 0;
	}
	if (!(copy = malloc(n + 1)))
		return -ENOMEM;
	memcpy(copy, text, n);
	copy[n] = '\0';
	free_text(*field);
	*field = copy;
	return 0;
}

static void session_free(void *p)
{
	struct session *s = p;
	free_text(s->user);
	free_text(s->dest);
	free(s);
}

/* The command column of the access log. */
static const char *cmd_text(uint8_t cmd)
{
	switch (cmd) {
	case SOCKS5_CMD_CONNECT:
		return "connect";
	case SOCKS5_CMD_BIND:
		return "bind";
	case SOCKS5_CMD_UDP_ASSOCIATE:
		return "udp";
	default:
		return "-";
	}
}

const char *session_method_text(const struct session *s, char *out, size_t len)
{
	switch (s->method) {
	case SOCKS5_METHOD_NO_AUTH:
		return "none";
	case SOCKS5_METHOD_USERPASS:
		return "password";
	case SOCKS5_METHOD_GSSAPI:
		return gss_method_text(s, out, len);
	default:
		return "-";
	}
}

static void access_log(struct session *s)
{
	char date[21], src[INET6_ADDRSTRLEN], user[SESSION_USER_TEXT_MAX], line[LOG_LINE_MAX];
	char method[32];
	uint16_t sport;
	log_iso8601(date, s->start_wall);
	session_addr_text(&s->peer, src, sizeof src, &sport);
	session_user_text(s, user);
	/* A Kerberos login is named by its principal (escaped already). */
	const char *who = s->gss_user ? gss_principal(s) : user;
	int n = snprintf(line, sizeof line,
	                 "%s\t%s\tA\t%s\t%u\t%s\t%u\t%u\t%llu\t%llu\t%lld\t%s\t%llu\t%llu\t%s", date,
	                 who, src, sport, s->dest[0] ? s->dest : "-", s->dport, s->rep,
	                 (unsigned long long)s->bytes_up, (unsigned long long)s->bytes_down,
	                 (long long)(s->wk->loop.now - s->start_ms), cmd_text(s->cmd),
	                 (unsigned long long)s->dgrams_up, (unsigned long long)s->dgrams_down,
	                 session_method_text(s, method, sizeof method));
	if (n > 0)
		log_record(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

/* ---- refusal records ---------------------------------------------------- */

void session_say_refusals(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct worker *wk = t->data;
	if (wk->refusals_unwritten)
		log_warn("%u refusal record(s) not written in the last second (over %d a second)",
		         wk->refusals_unwritten, SESSION_REFUSALS_PER_SEC);
	wk->refusals_unwritten = 0;
}

void session_log_refusal(struct worker *wk, const struct sockaddr_storage *peer,
                         const char *user, const char *status, const char *method,
                         int64_t start_ms)
{
	if (wk->refusal_window + 1000 <= wk->loop.now) {
		/* The last second's count is said before this one's records. */
		if (wk->refusals_unwritten) {
			loop_timer_stop(&wk->refusal_timer);
			session_say_refusals(&wk->loop, &wk->refusal_timer);
		}
		wk->refusal_window = wk->loop.now;
		wk->refusals_written = 0;
	}
	if (wk->refusals_written == SESSION_REFUSALS_PER_SEC) {
		/* Said when the second is over: a flood costs one line a second. */
		if (wk->refusals_unwritten++ == 0)
			loop_timer_start_at(&wk->misc_tl, &wk->refusal_timer, wk->refusal_window + 1000);
		return;
	}
	wk->refusals_written++;
	char date[21], src[INET6_ADDRSTRLEN], line[LOG_LINE_MAX];
	uint16_t sport;
	log_iso8601(date, (int64_t)time(NULL));
	session_addr_text(peer, src, sizeof src, &sport);
	int n = snprintf(line, sizeof line, "%s\t%s\tA\t%s\t%u\t-\t-\t%s\t0\t0\t%lld\t-\t0\t0\t%s",
	                 date, user && user[0] ? user : "-", src, sport, status,
	                 (long long)(wk->loop.now - start_ms), method ? method : "-");
	if (n > 0)
		log_record(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

void session_finalize(struct session *s)
{
	struct worker *wk = s->wk;
	if (s->cfd < 0)
		return; /* already finalized in this batch */
	if (s->requested && s->rep == REP_NONE) {
		/* Closed before an answer (drain, removed user): a request always
		 * gets one, sent best-effort. */
		uint8_t out[SOCKS5_REPLY_MAX];
		size_t n = socks5_reply_encode(out, SOCKS5_REP_GENERAL_FAILURE, NULL);
		if (gss_protected(s))
			(void)session_send(s, out, n); /* encapsulated, as far as it goes now */
		else if (!s->down)
			(void)send(s->cfd, out, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		s->rep = SOCKS5_REP_GENERAL_FAILURE;
		shm_count(wk->slot, (enum shm_counter)(M_REPLY_0 + s->rep), 1);
	}
	sockmap_session_end(s); /* its bytes counted before the log */
	if (s->requested)
		access_log(s);
	if (s->phase == PH_RELAY || s->phase == PH_UDP) {
		static const uint64_t bounds[] = SHM_SESSION_DUR_BOUNDS_MS;
		shm_gauge_add(wk->slot, G_CONN_RELAYING, -1);
		shm_observe(wk->slot, M_SESSION_DUR_0, bounds, sizeof bounds / sizeof bounds[0],
		            M_SESSION_DUR_SUM_MS, (uint64_t)(wk->loop.now - s->start_ms));
	}
	if (s->user_slot >= 0)
		__atomic_fetch_sub(&wk->slot->user_conns[s->user_slot], 1, __ATOMIC_RELAXED);
	limits_release(s);
	if (s->counted) {
		shm_gauge_add(wk->slot, G_CONN_CURRENT, -1);
		shm_conn_closed(wk->seg);
	}
	auth_cancel(wk->auth, s->auth_job);
	session_authenticated(s); /* or gone: no longer counted either way */
	resolver_cancel(s->query);
	loop_timer_stop(&s->timer);
	connect_close_attempts(s);
	bind_close(s);
	loop_watch_close(&s->cw, s->cfd);
	s->cfd = -1;
	session_close_target(s);
	udp_end(s); /* the association ends with its control connection */
	if (s->up)
		worker_buf_put(wk, s->up);
	if (s->down)
		worker_buf_put(wk, s->down);
	s->up = s->down = NULL;
	pipes_discard(s->up_pipe);
	pipes_discard(s->down_pipe);
	s->up_pipe = s->down_pipe = NULL;
	session_free_handshake(s);
	gss_session_free(s);
	sniff_free(s->sniff);
	s->sniff = NULL;
	list_remove(&s->link);
	wk->nsessions--;
	loop_defer_free(&wk->loop, &s->deferred, session_free, s);
	worker_session_gone(wk);
}

void session_abort_all(struct worker *wk)
{
	while (!list_empty(&wk->sessions))
		session_finalize(list_entry(wk->sessions.next, struct session, link));
}

void session_bind_user(struct session *s)
{
	struct shm_user u;
	int slot = shm_user_get(s->wk->seg, s->user, &u);
	if (slot < 0)
		return;
	s->user_slot = slot;
	s->user_id = u.id;
	s->user_gen = u.cred_gen;
	__atomic_fetch_add(&s->wk->slot->user_conns[slot], 1, __ATOMIC_RELAXED);
}

void session_authenticated(struct session *s)
{
	if (s->unauth)
		auth_conn_done(s->wk->auth, &s->peer);
	s->unauth = false;
}

void session_counted(struct session *s)
{
	shm_count(s->wk->slot, M_CONN_TOTAL, 1);
	shm_gauge_add(s->wk->slot, G_CONN_CURRENT, 1);
	shm_conn_opened(s->wk->seg);
	s->counted = true;
}

int session_start(struct worker *wk, int fd, const struct sockaddr_storage *peer, bool proxied)
{
	/* A source with too many sessions not yet authenticated gets no more
	 * (a balancer's client is counted once its header names it). */
	if (!proxied && !auth_conn_open(wk->auth, peer, wk->cfg.max_unauth)) {
		session_log_refusal(wk, peer, NULL, SESSION_REFUSED_UNAUTH_CAP, NULL, wk->loop.now);
		close(fd);
		return 0;
	}
	struct session *s = calloc(1, sizeof *s);
	if (s)
		s->hs = calloc(1, sizeof *s->hs);
	if (!s || !s->hs) {
		free(s);
		if (!proxied)
			auth_conn_done(wk->auth, peer);
		return -ENOMEM;
	}
	s->unauth = !proxied;
	s->hs->proxied = proxied;
	s->wk = wk;
	s->id = (uint64_t)(wk->index + 1) << CTRL_ID_SHIFT | ++wk->next_session_id;
	s->cfd = fd;
	s->tfd = -1;
	s->user_slot = -1;
	s->user = s->dest = no_text;
	s->method = 0xff;
	s->rep = REP_NONE;
	s->peer = *peer;
	s->start_ms = wk->loop.now;
	if (loop_watch_add(&wk->loop, &s->cw, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET,
	                   on_client, s) < 0) {
		int e = errno;
		free(s->hs);
		free(s);
		if (!proxied)
			auth_conn_done(wk->auth, peer);
		return -e;
	}
	list_insert_head(&wk->sessions, &s->link);
	wk->nsessions++;
	/* From a balancer, the connection counts once its header names a
	 * client (handshake.c): health checks are not client sessions. */
	if (!proxied)
		session_counted(s);
	handshake_begin(s);
	return 0;
}

void session_reconfigure(struct worker *wk)
{
	struct list_node *n, *next;
	list_foreach_safe(n, next, &wk->sessions) {
		struct session *s = list_entry(n, struct session, link);
		/* A removed user, or one whose password changed, keeps no session
		 * opened under the old credentials. */
		if (s->user_slot >= 0 &&
		    !shm_user_current(wk->seg, (uint32_t)s->user_slot, s->user_id, s->user_gen)) {
			char name[SESSION_USER_TEXT_MAX];
			session_user_text(s, name);
			log_info("session %llu: user '%s' was removed or its password changed: closing",
			         (unsigned long long)s->id, name);
			session_finalize(s);
			continue;
		}
		if (s->phase == PH_RELAY) {
			if (!wk->cfg.idle_cleanup)
				loop_timer_stop(&s->timer);
			else if (!loop_timer_active(&s->timer))
				relay_touch_idle(s);
		}
	}
}

static enum ctrl_session_state listed_state(const struct session *s)
{
	switch (s->phase) {
	case PH_RESOLVING:
		return CTRL_SS_RESOLVING;
	case PH_CONNECTING:
		return CTRL_SS_CONNECTING;
	case PH_RELAY:
	case PH_UDP:
		return CTRL_SS_RELAY;
	case PH_LINGER:
		return CTRL_SS_CLOSING;
	default:
		return CTRL_SS_HANDSHAKE;
	}
}

size_t session_list(struct worker *wk, uint64_t after, size_t max, struct ctrl_session *out,
                    bool *more)
{
	/* New sessions go to the head and ids grow, so walking from the tail
	 * visits them in ascending id order. */
	size_t n = 0;
	struct list_node *p;
	*more = false;
	list_foreach_reverse(p, &wk->sessions) {
		const struct session *s = list_entry(p, const struct session, link);
		if (s->id <= after)
			continue;
		if (n == max) {
			*more = true;
			break;
		}
		struct ctrl_session *o = &out[n++];
		memset(o, 0, sizeof *o);
		o->id = s->id;
		o->state = (uint8_t)listed_state(s);
		if (s->peer.ss_family == AF_INET6 &&
		    !IN6_IS_ADDR_V4MAPPED(&((const struct sockaddr_in6 *)&s->peer)->sin6_addr)) {
			const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&s->peer;
			o->family = 6;
			memcpy(o->addr, &s6->sin6_addr, 16);
			o->sport = ntohs(s6->sin6_port);
		} else if (s->peer.ss_family == AF_INET6) {
			const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&s->peer;
			o->family = 4;
			memcpy(o->addr, &s6->sin6_addr.s6_addr[12], 4);
			o->sport = ntohs(s6->sin6_port);
		} else {
			const struct sockaddr_in *s4 = (const struct sockaddr_in *)&s->peer;
			o->family = 4;
			memcpy(o->addr, &s4->sin_addr, 4);
			o->sport = ntohs(s4->sin_port);
		}
		snprintf(o->user, sizeof o->user, "%.*s", (int)(sizeof o->user - 1), s->user);
		snprintf(o->dest, sizeof o->dest, "%.*s", (int)(sizeof o->dest - 1), s->dest);
		o->dport = s->dport;
		o->cmd = s->cmd;
		o->dgrams_up = s->dgrams_up;
		o->dgrams_down = s->dgrams_down;
		o->method = s->method;
		o->protection = gss_level(s);
		o->up = s->bytes_up;
		o->down = s->bytes_down;
		o->age_ms = (uint64_t)(wk->loop.now - s->start_ms);
	}
	return n;
}

bool session_close_id(struct worker *wk, uint64_t id)
{
	struct list_node *p;
	list_foreach(p, &wk->sessions) {
		struct session *s = list_entry(p, struct session, link);
		if (s->id == id) {
			log_info("session %llu: closed by an administrator", (unsigned long long)id);
			session_finalize(s);
			return true;
		}
	}
	return false;
}
