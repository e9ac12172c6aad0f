#include "metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../shared/clock.h"
#include "../shared/httpreq.h"
#include "../shared/log.h"
#include "../shared/names.h"

struct metrics_conn {
	struct metrics *mx;
	int fd; /* -1: a free place */
	struct loop_watch w;
	struct loop_timer timer;
	char *out;
	size_t out_len, out_pos;
	size_t drained; /* bytes read and dropped after the answer */
	struct httpreq req;
};

struct metrics {
	struct loop *l;
	struct shm_segment *seg;
	int fd;
	struct loop_watch w;
	struct loop_tlist tl; /* METRICS_TIMEOUT_MS from accept */
	/* No descriptor left: the listener is out of epoll for a while (level
	 * triggered, it would wake the loop again and again). */
	struct loop_tlist pause_tl;
	struct loop_timer pause;
	struct metrics_conn conns[METRICS_CONNS_MAX];
};

/* ---- the exposition text ------------------------------------------------- */

struct mbuf {
	char *p;
	size_t len, cap;
	bool oom;
	bool om; /* OpenMetrics 1.0.0 rather than the text format 0.0.4 */
};

__attribute__((format(printf, 2, 3))) static void mb_printf(struct mbuf *b, const char *fmt, ...)
{
	for (;;) {
		if (b->oom)
			return;
		va_list ap;
		va_start(ap, fmt);
		int n = vsnprintf(b->p ? b->p + b->len : NULL, b->p ? b->cap - b->len : 0, fmt, ap);
		va_end(ap);
		if (n < 0) {
			b->oom = true;
			return;
		}
		if (b->p && (size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return;
		}
		size_t cap = b->cap ? b->cap : 16384;
		while (cap - b->len <= (size_t)n)
			cap *= 2;
		char *p = realloc(b->p, cap);
		if (!p) {
			b->oom = true;
			return;
		}
		b->p = p;
		b->cap = cap;
	}
}

/* OpenMetrics names a counter's family without its _total suffix. */
static void family(struct mbuf *b, const char *name, const char *type, const char *help)
{
	int n = (int)strlen(name);
	if (b->om && !strcmp(type, "counter") && n > 6 && !strcmp(name + n - 6, "_total"))
		n -= 6;
	mb_printf(b, "# HELP %.*s %s\n# TYPE %.*s %s\n", n, name, help, n, name, type);
}

static void one(struct mbuf *b, const char *name, const char *type, const char *help, uint64_t v)
{
	family(b, name, type, help);
	mb_printf(b, "%s %llu\n", name, (unsigned long long)v);
}

/* A user name as a label value: UTF-8 as it is, the backslash, control
 * bytes and bytes that are not UTF-8 as \xHH (as the logs show them), so
 * that two names never give one value; then \ and " escaped as the format
 * says. */
static void label_value(struct mbuf *b, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t left = strlen(s);
	while (left) {
		size_t n = names_utf8_len(p, left);
		if (n == 0 || (n == 1 && (*p < 0x20 || *p == 0x7f || *p == '\\')))
			mb_printf(b, "\\\\x%02x", *p);
		else if (n == 1 && *p == '"')
			mb_printf(b, "\\\"");
		else
			mb_printf(b, "%.*s", (int)n, (const char *)p);
		n = n ? n : 1;
		p += n;
		left -= n;
	}
}

static const struct {
	enum shm_counter c;
	const char *name, *help;
} counters[] = {
    {M_CONN_TOTAL, "socks5d_sessions_total", "Client connections accepted."},
    {M_REQUESTS, "socks5d_requests_total", "SOCKS requests answered."},
    {M_BYTES_SPLICED, "socks5d_bytes_spliced_total",
     "Relayed bytes moved through pipes (zero-copy), both directions."},
    {M_SOCKMAP_SESSIONS, "socks5d_sockmap_sessions_total",
     "Sessions relayed inside the kernel (sockmap = yes)."},
    {M_SOCKMAP_FALLBACKS, "socks5d_sockmap_fallbacks_total",
     "Workers that could not load the kernel relay and relay by splice or copy."},
    {M_SOCKMAP_HANDBACKS, "socks5d_sockmap_handbacks_total",
     "Kernel-relayed sessions given back to the worker's relay: a slow reader let bytes pile up."},
    {M_AUTH_FAIL, "socks5d_auth_failures_total", "Username/password authentications failed."},
    {M_NO_METHOD, "socks5d_no_acceptable_method_total",
     "Greetings answered with no acceptable method."},
    {M_HANDSHAKE_TIMEOUT, "socks5d_handshake_timeouts_total",
     "Sessions closed before their request was complete."},
    {M_IDLE_TIMEOUT, "socks5d_idle_timeouts_total", "Relaying sessions closed as idle."},
    {M_ACCEPT_PAUSED, "socks5d_accept_pauses_total",
     "Times accepting paused for want of descriptors."},
    {M_DNS_LOOKUPS, "socks5d_dns_lookups_total", "Name lookups started."},
    {M_DNS_FAILURES, "socks5d_dns_failures_total", "Name lookups that failed."},
    {M_DNS_TIMEOUTS, "socks5d_dns_timeouts_total", "Name lookups that ran out of time."},
    {M_DNS_CACHE_HITS, "socks5d_dns_cache_hits_total", "Name lookups answered from the cache."},
    {M_DNS_COALESCED, "socks5d_dns_coalesced_total",
     "Name lookups that joined a query in flight."},
    {M_DNS_FALLBACKS, "socks5d_dns_fallbacks_total",
     "Name lookups resolved through classic DNS instead of DoH."},
    {M_DOH_QUERIES, "socks5d_doh_queries_total", "DoH requests sent."},
    {M_DOH_FAILURES, "socks5d_doh_failures_total", "DoH exchanges that failed."},
    {M_DOH_OUTAGES, "socks5d_doh_outages_total", "Times the DoH endpoint was found unusable."},
    {M_LOG_DROPPED, "socks5d_log_records_dropped_total",
     "Log records dropped because the log could not keep up."},
    {M_CREDENTIALS, "socks5d_credentials_total",
     "Credential records written by the protocol dissectors."},
    {M_AUTH_DELAYED, "socks5d_auth_delayed_total", "Logins held by the failure back-off."},
    {M_AUTH_EVICTED, "socks5d_auth_evicted_total",
     "Queued password checks dropped for another source's."},
    {M_AUTH_BACKOFF_FULL, "socks5d_auth_backoff_full_total",
     "Back-off records replaced while they still held failures."},
    {M_UNAUTH_REFUSED, "socks5d_unauth_refused_total",
     "Connections closed: too many unauthenticated sessions from the source."},
    {M_LIMIT_REFUSED, "socks5d_limit_refused_total",
     "Requests refused because a max-sessions limit was reached."},
    {M_RATE_PAUSES, "socks5d_rate_pauses_total",
     "Times a relay direction paused because its rate allowance was spent."},
    {M_GSS_LOGINS, "socks5d_gssapi_logins_total",
     "GSS-API logins that were granted a protection level."},
    {M_GSS_FAILURES, "socks5d_gssapi_failures_total", "GSS-API logins failed or abandoned."},
    {M_GSS_WRAPPED, "socks5d_gssapi_wrapped_bytes_total",
     "Plaintext bytes wrapped (gss_wrap) for GSS-API clients."},
    {M_GSS_UNWRAPPED, "socks5d_gssapi_unwrapped_bytes_total",
     "Plaintext bytes unwrapped (gss_unwrap) from GSS-API clients."},
    {M_BIND_STARTED, "socks5d_bind_started_total", "BIND listening sockets opened."},
    {M_BIND_ACCEPTED, "socks5d_bind_accepted_total", "BIND incoming connections accepted."},
    {M_BIND_TIMEOUTS, "socks5d_bind_timeouts_total", "BINDs whose peer did not come in time."},
    {M_BIND_WRONG_PEER, "socks5d_bind_wrong_peer_total",
     "BIND incoming connections closed: not from the expected address."},
    {M_CLIENTS_BLOCKED, "socks5d_clients_blocked_total",
     "Connections closed at accept by a client rule."},
    {M_RULE_BLOCKED, "socks5d_rule_blocked_total", "Requests refused by a rule."},
    {M_DEFAULT_BLOCKED, "socks5d_default_blocked_total",
     "Requests refused by the default policy."},
    {M_ADDRS_SKIPPED, "socks5d_addresses_skipped_total",
     "Resolved or requested addresses not tried because a rule blocks them."},
};

static const struct {
	enum shm_counter c;
	const char *reason;
} udp_drops[] = {
    {M_UDP_DROP_SOURCE, "source"},   {M_UDP_DROP_FRAG, "fragment"},
    {M_UDP_DROP_MALFORMED, "malformed"}, {M_UDP_DROP_FILTER, "filter"},
    {M_UDP_DROP_LOOKUP, "lookup"},   {M_UDP_DROP_QUEUE, "queue"},
    {M_UDP_DROP_SEND, "send"},       {M_UDP_DROP_DENIED, "denied"},
    {M_UDP_DROP_RATE, "rate"},
};

static void render_users(struct mbuf *b, struct shm_segment *seg)
{
	struct shm_user *copy = malloc(sizeof seg->users);
	if (!copy) {
		b->oom = true;
		return;
	}
	shm_lock(&seg->users_lock);
	memcpy(copy, seg->users, sizeof seg->users);
	shm_unlock(&seg->users_lock);
	family(b, "socks5d_user_bytes_total", "counter",
	       "Bytes relayed for a user since it was added, by direction (up: client to target).");
	for (uint32_t i = 0; i < SHM_MAX_USERS; i++) {
		if (!copy[i].used)
			continue;
		for (int d = 0; d < 2; d++) {
			mb_printf(b, "socks5d_user_bytes_total{user=\"");
			label_value(b, copy[i].name);
			mb_printf(b, "\",direction=\"%s\"} %llu\n", d ? "down" : "up",
			          (unsigned long long)(shm_user_bytes_sum(seg, i, d) -
			                               copy[i].bytes_base[d]));
		}
	}
	family(b, "socks5d_user_sessions", "gauge", "Sessions open for a user.");
	for (uint32_t i = 0; i < SHM_MAX_USERS; i++) {
		if (!copy[i].used)
			continue;
		mb_printf(b, "socks5d_user_sessions{user=\"");
		label_value(b, copy[i].name);
		mb_printf(b, "\"} %llu\n", (unsigned long long)shm_user_conns_sum(seg, i));
	}
	/* The copy holds the password hashes too. */
	explicit_bzero(copy, sizeof seg->users);
	free(copy);
}

/* A histogram kept as per-bucket counters (first .. first + n - 1, upper
 * bounds in units of 1/scale second) and a sum in the same units:
 * cumulative buckets, bounds and sum in seconds, _count the +Inf bucket. */
static void histogram(struct mbuf *b, const struct shm_segment *seg, const char *name,
                      const char *help, enum shm_counter first, const uint64_t *bounds,
                      unsigned n, enum shm_counter sum, double scale)
{
	family(b, name, "histogram", help);
	uint64_t cum = 0;
	for (unsigned i = 0; i < n; i++) {
		cum += shm_counter_sum(seg, (enum shm_counter)(first + i));
		if (bounds[i] == UINT64_MAX)
			mb_printf(b, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
		else
			mb_printf(b, "%s_bucket{le=\"%g\"} %llu\n", name, (double)bounds[i] / scale,
			          (unsigned long long)cum);
	}
	mb_printf(b, "%s_sum %.6f\n", name, (double)shm_counter_sum(seg, sum) / scale);
	mb_printf(b, "%s_count %llu\n", name, (unsigned long long)cum);
}

/* The per-worker view: one series per running worker, labelled with its
 * slot index.  A worker's counters start again from 0 when it is
 * restarted in its slot (a counter reset); the totals keep what exited
 * workers counted.  Returns the workers running. */
static uint32_t render_workers(struct mbuf *b, const struct shm_segment *seg)
{
	int32_t pids[SHM_MAX_WORKERS];
	uint32_t running = 0;
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++) {
		pids[i] = __atomic_load_n(&seg->slots[i].pid, __ATOMIC_RELAXED);
		running += pids[i] > 0;
	}
	family(b, "socks5d_worker_info", "gauge", "A running worker (1), with its process id.");
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++)
		if (pids[i] > 0)
			mb_printf(b, "socks5d_worker_info{worker=\"%u\",pid=\"%d\"} 1\n", i, (int)pids[i]);
	family(b, "socks5d_worker_sessions_open", "gauge", "Sessions open, by worker.");
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++)
		if (pids[i] > 0)
			mb_printf(b, "socks5d_worker_sessions_open{worker=\"%u\"} %llu\n", i,
			          (unsigned long long)__atomic_load_n(
			              &seg->slots[i].gauges[G_CONN_CURRENT], __ATOMIC_RELAXED));
	family(b, "socks5d_worker_sessions_total", "counter",
	       "Client connections accepted, by worker (since the worker started).");
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++)
		if (pids[i] > 0)
			mb_printf(b, "socks5d_worker_sessions_total{worker=\"%u\"} %llu\n", i,
			          (unsigned long long)__atomic_load_n(
			              &seg->slots[i].counters[M_CONN_TOTAL], __ATOMIC_RELAXED));
	family(b, "socks5d_worker_bytes_total", "counter",
	       "Bytes relayed, by worker (since the worker started) and direction.");
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++) {
		if (pids[i] <= 0)
			continue;
		for (int d = 0; d < 2; d++)
			mb_printf(b, "socks5d_worker_bytes_total{worker=\"%u\",direction=\"%s\"} %llu\n",
			          i, d ? "down" : "up",
			          (unsigned long long)__atomic_load_n(
			              &seg->slots[i].counters[d ? M_BYTES_DOWN : M_BYTES_UP],
			              __ATOMIC_RELAXED));
	}
	return running;
}

char *metrics_render(struct shm_segment *seg, bool openmetrics, size_t *len)
{
	struct mbuf b = {.om = openmetrics};
	for (size_t i = 0; i < sizeof counters / sizeof counters[0]; i++)
		one(&b, counters[i].name, "counter", counters[i].help,
		    shm_counter_sum(seg, counters[i].c));
	family(&b, "socks5d_bytes_total", "counter",
	       "Bytes relayed, by direction (up: client to target, down: target to client).");
	mb_printf(&b, "socks5d_bytes_total{direction=\"up\"} %llu\n",
	          (unsigned long long)shm_counter_sum(seg, M_BYTES_UP));
	mb_printf(&b, "socks5d_bytes_total{direction=\"down\"} %llu\n",
	          (unsigned long long)shm_counter_sum(seg, M_BYTES_DOWN));
	family(&b, "socks5d_replies_total", "counter", "SOCKS replies sent, by reply code (RFC 1928).");
	for (int r = 0; r < 9; r++)
		mb_printf(&b, "socks5d_replies_total{code=\"%d\"} %llu\n", r,
		          (unsigned long long)shm_counter_sum(seg, (enum shm_counter)(M_REPLY_0 + r)));
	family(&b, "socks5d_udp_datagrams_total", "counter",
	       "UDP datagrams relayed, by direction (up: client to remote).");
	mb_printf(&b, "socks5d_udp_datagrams_total{direction=\"up\"} %llu\n",
	          (unsigned long long)shm_counter_sum(seg, M_UDP_DGRAMS_UP));
	mb_printf(&b, "socks5d_udp_datagrams_total{direction=\"down\"} %llu\n",
	          (unsigned long long)shm_counter_sum(seg, M_UDP_DGRAMS_DOWN));
	family(&b, "socks5d_udp_dropped_total", "counter", "UDP datagrams dropped, by reason.");
	for (size_t i = 0; i < sizeof udp_drops / sizeof udp_drops[0]; i++)
		mb_printf(&b, "socks5d_udp_dropped_total{reason=\"%s\"} %llu\n", udp_drops[i].reason,
		          (unsigned long long)shm_counter_sum(seg, udp_drops[i].c));

	static const uint64_t dns_bounds[] = SHM_DNS_LAT_BOUNDS_US;
	histogram(&b, seg, "socks5d_dns_lookup_seconds", "Name lookup latency.", M_DNS_LAT_0,
	          dns_bounds, M_DNS_LAT_END - M_DNS_LAT_0, M_DNS_LAT_SUM_US, 1e6);
	static const uint64_t connect_bounds[] = SHM_CONNECT_LAT_BOUNDS_US;
	histogram(&b, seg, "socks5d_connect_seconds",
	          "Time from a CONNECT's first outbound attempt to its target connected "
	          "(successful connects).",
	          M_CONNECT_LAT_0, connect_bounds, M_CONNECT_LAT_END - M_CONNECT_LAT_0,
	          M_CONNECT_LAT_SUM_US, 1e6);
	static const uint64_t session_bounds[] = SHM_SESSION_DUR_BOUNDS_MS;
	histogram(&b, seg, "socks5d_session_duration_seconds",
	          "Time from accept to close of the sessions that relayed.", M_SESSION_DUR_0,
	          session_bounds, M_SESSION_DUR_END - M_SESSION_DUR_0, M_SESSION_DUR_SUM_MS, 1e3);

	one(&b, "socks5d_sessions_open", "gauge", "Sessions open.",
	    __atomic_load_n(&seg->conns_now, __ATOMIC_RELAXED));
	one(&b, "socks5d_sessions_open_max", "gauge", "The most sessions open at once since the start.",
	    __atomic_load_n(&seg->conns_max, __ATOMIC_RELAXED));
	one(&b, "socks5d_sessions_relaying", "gauge", "Sessions relaying data.",
	    shm_gauge_sum(seg, G_CONN_RELAYING));
	one(&b, "socks5d_sessions_limited", "gauge", "Sessions holding a place in a limit entry.",
	    shm_gauge_sum(seg, G_CONN_LIMITED));
	uint32_t running = render_workers(&b, seg);
	one(&b, "socks5d_workers", "gauge", "Worker processes running.", running);
	one(&b, "socks5d_worker_restarts_total", "counter", "Workers started again after an exit.",
	    __atomic_load_n(&seg->worker_restarts, __ATOMIC_RELAXED));
	one(&b, "socks5d_users", "gauge", "Users in the users table.", shm_user_count(seg));
	one(&b, "socks5d_admin_sessions", "gauge", "Administration sessions open.",
	    __atomic_load_n(&seg->admin_sessions, __ATOMIC_RELAXED));
	uint64_t up_ms = (uint64_t)clock_ms() - seg->started_ms;
	mb_printf(&b, "# HELP socks5d_uptime_seconds Time since the master started.\n"
	              "# TYPE socks5d_uptime_seconds gauge\nsocks5d_uptime_seconds %.3f\n",
	          (double)up_ms / 1000.0);
	render_users(&b, seg);
	if (b.om)
		mb_printf(&b, "# EOF\n");
	if (b.oom) {
		free(b.p);
		return NULL;
	}
	*len = b.len;
	return b.p;
}

/* ---- the HTTP side ----------------------------------------------------------- */

static void conn_close(struct metrics_conn *c)
{
	loop_timer_stop(&c->timer);
	loop_watch_del(c->mx->l, &c->w);
	close(c->fd);
	c->fd = -1;
	free(c->out);
	c->out = NULL;
}

static void on_timeout(struct loop *l, struct loop_timer *t)
{
	(void)l;
	conn_close(t->data);
}

/* After the response: read and drop what the client still sends until it
 * closes (or the time is up), so that the close sends no reset that could
 * destroy the response in flight. */
static void on_linger(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	(void)events;
	struct metrics_conn *c = w->data;
	char buf[4096];
	/* What a client sends after its answer is read and dropped, but no
	 * more than METRICS_LINGER_MAX in all: a client that keeps sending
	 * must not keep the master busy. */
	for (;;) {
		ssize_t n = recv(c->fd, buf, sizeof buf, 0);
		if (n > 0 && (c->drained += (size_t)n) <= METRICS_LINGER_MAX)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		conn_close(c);
		return;
	}
}

static void on_writable(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)events;
	struct metrics_conn *c = w->data;
	while (c->out_pos < c->out_len) {
		ssize_t n = send(c->fd, c->out + c->out_pos, c->out_len - c->out_pos, MSG_NOSIGNAL);
		if (n > 0) {
			c->out_pos += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN) {
			if (!(c->w.events & EPOLLOUT))
				(void)loop_watch_mod(l, &c->w, EPOLLOUT);
			return;
		}
		conn_close(c);
		return;
	}
	free(c->out);
	c->out = NULL;
	shutdown(c->fd, SHUT_WR);
	c->w.fn = on_linger;
	if (loop_watch_mod(l, &c->w, EPOLLIN) < 0)
		conn_close(c);
}

static void respond(struct metrics_conn *c, enum httpreq_status st)
{
	char head[256];
	char *body = NULL;
	size_t blen = 0;
	char msg[64];
	const char *type = "text/plain; charset=utf-8";
	if (st == HTTPREQ_DONE) {
		body = metrics_render(c->mx->seg, c->req.openmetrics, &blen);
		if (!body)
			st = 503;
		type = c->req.openmetrics ? "application/openmetrics-text; version=1.0.0; charset=utf-8"
		                          : "text/plain; version=0.0.4; charset=utf-8";
	}
	if (!body) {
		blen = (size_t)snprintf(msg, sizeof msg, "%d %s\n", (int)st,
		                        st == 503 ? "Service Unavailable" : httpreq_reason(st));
		body = msg;
	}
	int hlen = snprintf(head, sizeof head,
	                    "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
	                    "Connection: close\r\n\r\n",
	                    (int)st, st == 503 ? "Service Unavailable" : httpreq_reason(st), type,
	                    blen, st == HTTPREQ_METHOD_NOT_ALLOWED ? "Allow: GET, HEAD\r\n" : "");
	bool with_body = !(st == HTTPREQ_DONE && c->req.method == HTTPREQ_HEAD);
	c->out_len = (size_t)hlen + (with_body ? blen : 0);
	c->out = malloc(c->out_len);
	if (c->out) {
		memcpy(c->out, head, (size_t)hlen);
		if (with_body)
			memcpy(c->out + hlen, body, blen);
	}
	if (body != msg)
		free(body);
	if (!c->out) {
		conn_close(c);
		return;
	}
	c->out_pos = 0;
	if (st != HTTPREQ_DONE)
		log_debug("metrics: answered %d to a request", (int)st);
	c->w.fn = on_writable;
	on_writable(c->mx->l, &c->w, EPOLLOUT);
}

static void on_readable(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	(void)events;
	struct metrics_conn *c = w->data;
	uint8_t buf[2048];
	for (;;) {
		ssize_t n = recv(c->fd, buf, sizeof buf, 0);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			conn_close(c); /* gone before the end of its request */
			return;
		}
		size_t used;
		enum httpreq_status st = httpreq_feed(&c->req, buf, (size_t)n, &used);
		if (st != HTTPREQ_MORE) {
			respond(c, st);
			return;
		}
	}
}

static void on_accept(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)events;
	struct metrics *mx = w->data;
	for (int k = 0; k < 64; k++) {
		int fd = accept4(mx->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0 && (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
		               errno == ENOMEM)) {
			log_warn("metrics: cannot accept: %s; paused for %d ms", strerror(errno),
			         METRICS_PAUSE_MS);
			if (loop_watch_mod(l, &mx->w, 0) == 0)
				loop_timer_start(l, &mx->pause_tl, &mx->pause);
			return;
		}
		if (fd < 0)
			return; /* EAGAIN, or a connection gone before it was accepted */
		struct metrics_conn *c = NULL;
		for (size_t i = 0; i < METRICS_CONNS_MAX && !c; i++)
			if (mx->conns[i].fd < 0)
				c = &mx->conns[i];
		/* All taken: the oldest connection that has not sent a whole
		 * request (or has had its answer) gives its place, so that idle
		 * connections cannot keep a scraper out; only 16 answers being
		 * sent at once make a newcomer wait (503). */
		for (size_t i = 0; i < METRICS_CONNS_MAX && !(c && c->fd < 0); i++) {
			struct metrics_conn *o = &mx->conns[i];
			if (o->w.fn == on_writable)
				continue;
			if (!c || o->timer.deadline < c->timer.deadline)
				c = o;
		}
		if (c && c->fd >= 0) {
			log_debug("metrics: a new connection takes the place of an idle one");
			conn_close(c);
		}
		if (!c) {
			static const char busy[] = "HTTP/1.1 503 Service Unavailable\r\n"
			                           "Content-Length: 0\r\nConnection: close\r\n\r\n";
			(void)!send(fd, busy, sizeof busy - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
			close(fd);
			continue;
		}
		c->fd = fd;
		c->drained = 0;
		httpreq_init(&c->req);
		if (loop_watch_add(l, &c->w, fd, EPOLLIN, on_readable, c) < 0) {
			close(fd);
			c->fd = -1;
			continue;
		}
		loop_timer_start(l, &mx->tl, &c->timer);
	}
}

static void on_pause_end(struct loop *l, struct loop_timer *t)
{
	struct metrics *mx = t->data;
	(void)loop_watch_mod(l, &mx->w, EPOLLIN);
}

static int parse_endpoint(const char *ep, struct sockaddr_storage *ss, socklen_t *sl)
{
	char host[SETTINGS_ADDR_MAX + 8];
	snprintf(host, sizeof host, "%s", ep);
	char *colon = strrchr(host, ':');
	if (!colon)
		return -EINVAL;
	*colon = '\0';
	char *end;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (*end || port == 0 || port > 65535)
		return -EINVAL;
	memset(ss, 0, sizeof *ss);
	size_t hl = strlen(host);
	if (hl >= 2 && host[0] == '[' && host[hl - 1] == ']') {
		host[hl - 1] = '\0';
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
		a->sin6_family = AF_INET6;
		a->sin6_port = htons((uint16_t)port);
		if (inet_pton(AF_INET6, host + 1, &a->sin6_addr) != 1)
			return -EINVAL;
		*sl = sizeof *a;
		return 0;
	}
	struct sockaddr_in *a = (struct sockaddr_in *)ss;
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
		return -EINVAL;
	*sl = sizeof *a;
	return 0;
}

int metrics_open(struct loop *l, struct shm_segment *seg, const char *endpoint,
                 struct metrics **out)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	*out = NULL;
	if (parse_endpoint(endpoint, &ss, &sl) < 0) {
		log_error("metrics: '%s' is not ADDR:PORT or [ADDR6]:PORT", endpoint);
		return -EINVAL;
	}
	struct metrics *mx = calloc(1, sizeof *mx);
	if (!mx)
		return -ENOMEM;
	mx->l = l;
	mx->seg = seg;
	for (size_t i = 0; i < METRICS_CONNS_MAX; i++) {
		mx->conns[i].mx = mx;
		mx->conns[i].fd = -1;
		loop_timer_init(&mx->conns[i].timer, on_timeout, &mx->conns[i]);
	}
	int one_ = 1, rc;
	mx->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (mx->fd < 0 || setsockopt(mx->fd, SOL_SOCKET, SO_REUSEADDR, &one_, sizeof one_) < 0 ||
	    (ss.ss_family == AF_INET6 &&
	     setsockopt(mx->fd, IPPROTO_IPV6, IPV6_V6ONLY, &one_, sizeof one_) < 0) ||
	    bind(mx->fd, (struct sockaddr *)&ss, sl) < 0 || listen(mx->fd, 64) < 0) {
		rc = -errno;
		log_error("metrics: cannot listen on %s: %s", endpoint, strerror(-rc));
		if (mx->fd >= 0)
			close(mx->fd);
		free(mx);
		return rc;
	}
	loop_tlist_init(l, &mx->tl, METRICS_TIMEOUT_MS);
	loop_tlist_init(l, &mx->pause_tl, METRICS_PAUSE_MS);
	loop_timer_init(&mx->pause, on_pause_end, mx);
	if ((rc = loop_watch_add(l, &mx->w, mx->fd, EPOLLIN, on_accept, mx)) < 0) {
		loop_tlist_detach(l, &mx->tl);
		loop_tlist_detach(l, &mx->pause_tl);
		close(mx->fd);
		free(mx);
		return rc;
	}
	log_info("metrics: serving http://%s/metrics", endpoint);
	*out = mx;
	return 0;
}

static void release(struct metrics *mx, bool in_child)
{
	if (!mx)
		return;
	for (size_t i = 0; i < METRICS_CONNS_MAX; i++) {
		struct metrics_conn *c = &mx->conns[i];
		if (c->fd < 0)
			continue;
		if (in_child) {
			close(c->fd);
			free(c->out);
		} else {
			conn_close(c);
		}
	}
	if (!in_child)
		loop_watch_del(mx->l, &mx->w);
	close(mx->fd);
	loop_timer_stop(&mx->pause);
	loop_tlist_detach(mx->l, &mx->tl);
	loop_tlist_detach(mx->l, &mx->pause_tl);
	free(mx);
}

void metrics_close(struct metrics *mx)
{
	release(mx, false);
}

void metrics_forget(struct metrics *mx)
{
	release(mx, true);
}
