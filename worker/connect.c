/*
 * connect: from a request's destination to a connected target — the
 * resolver's answer, then connection attempts raced as RFC 8305 (Happy
 * Eyeballs) says: the families alternate, an attempt starts every
 * SESSION_ATTEMPT_DELAY_MS or as soon as one fails, the first to connect wins and
 * the others are closed.  The winner's descriptor is handed to the
 * session's target watch and the success reply sent; total failure answers
 * with the most telling reply code.  Loop thread only.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../shared/log.h"
#include "session_int.h"
#include "worker.h"

static void launch_next(struct session *s);

/* The connect latency wants finer than the loop's cached milliseconds (a
 * LAN connect takes a fraction of one): one clock read at the start of a
 * CONNECT's attempts and one at its end, none per event. */
static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* ---- access rules --------------------------------------------------------- */

static void question(const struct session *s, struct rules_request *q,
                     const struct sockaddr_storage *dest)
{
	const struct socks5_request *r = &s->hs->req;
	q->client = (const struct sockaddr *)&s->peer;
	q->user = s->user_slot >= 0 || s->gss_user ? s->user : NULL;
	q->cmd = r->cmd;
	q->port = r->port;
	q->name = r->atyp == SOCKS5_ATYP_DOMAIN ? r->host : NULL;
	q->dest = (const struct sockaddr *)dest;
}

static void say_rule(const struct session *s, const struct rules_match *m, const char *what)
{
	char user[SESSION_USER_TEXT_MAX], from[INET6_ADDRSTRLEN], how[96];
	uint16_t port;
	session_user_text(s, user);
	session_addr_text(&s->peer, from, sizeof from, &port);
	rules_match_text(m, how, sizeof how);
	log_msg(m->log ? LOG_INFO : LOG_DEBUG, "session %llu: %s %s: user '%s' from %s to %s port %u",
	        (unsigned long long)s->id, what, how + (m->action == RULES_BLOCK ? 6 : 5), user,
	        from, s->dest, s->dport);
}

void connect_blocked(struct session *s, const struct rules_match *m)
{
	shm_count(s->wk->slot, m->number ? M_RULE_BLOCKED : M_DEFAULT_BLOCKED, 1);
	say_rule(s, m, "blocked");
	session_fail(s, SOCKS5_REP_NOT_ALLOWED);
}

bool connect_name_allowed(struct session *s)
{
	struct rules_request q;
	struct rules_match m;
	question(s, &q, NULL);
	if (rules_decide(s->wk->rules, &q, &m) != RULES_BLOCK)
		return true; /* a pass is counted with the address it lets through */
	rules_shm_hit(s->wk->seg, s->wk->rules_gen, &m);
	connect_blocked(s, &m);
	return false;
}

bool connect_address_allowed(struct session *s, const struct sockaddr_storage *sa,
                             struct rules_match *m)
{
	struct rules_request q;
	question(s, &q, sa);
	enum rules_action a = rules_decide(s->wk->rules, &q, m);
	rules_shm_hit(s->wk->seg, s->wk->rules_gen, m);
	if (a == RULES_PASS && m->log)
		say_rule(s, m, "passed");
	return a == RULES_PASS;
}

bool connect_rule_limits(struct session *s)
{
	const struct rules_match *m = &s->rule;
	if (!m->number)
		return true;
	return session_limits_admit_rule(s, m->number, m->limit_tag, m->limit_ident,
	                                 m->max_sessions, m->rate_in, m->rate_out);
}

/* Every address is checked before its attempt: a name that resolves to
 * a blocked address (DNS rebinding) gets nowhere. */
static bool address_allowed(struct session *s, const struct sockaddr_storage *sa,
                            struct rules_match *m)
{
	if (connect_address_allowed(s, sa, m))
		return true;
	char text[INET6_ADDRSTRLEN];
	uint16_t port;
	session_addr_text(sa, text, sizeof text, &port);
	log_debug("session %llu: address %s port %u not tried: blocked", (unsigned long long)s->id,
	          text, port);
	shm_count(s->wk->slot, M_ADDRS_SKIPPED, 1);
	s->hs->blocked_any = true;
	s->hs->blocked = *m;
	s->best_fail = socks5_rep_worst(s->best_fail, SOCKS5_REP_NOT_ALLOWED);
	return false;
}

/* `via` or `external`: the source address, bound before connect. */
static int bind_source(struct session *s, int fd, int family, const struct rules_match *m)
{
	struct sockaddr_storage src;
	socklen_t len;
	if (!rules_source(s->wk->rules, m, family, &src, &len))
		return 0;
	int one = 1;
	/* The port is chosen at connect, per destination: no port exhaustion. */
	(void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
	return bind(fd, (struct sockaddr *)&src, len) < 0 ? -errno : 0;
}

static void resolved(void *arg, int status, const struct sockaddr_storage *addrs, size_t n)
{
	struct session *s = arg;
	s->query = NULL;
	shm_count(s->wk->slot, M_DNS_LOOKUPS, 1);
	if (status < 0) {
		shm_count(s->wk->slot, M_DNS_FAILURES, 1);
		log_info("session %llu: cannot resolve '%s': %s", (unsigned long long)s->id, s->dest,
		         status == -ENOENT ? "no such name or no address" : strerror(-status));
		session_fail(s, SOCKS5_REP_HOST_UNREACH);
		return;
	}
	memcpy(s->hs->addrs, addrs, n * sizeof *addrs);
	s->hs->naddrs = n;
	s->hs->next_addr = 0;
	connect_begin(s);
}

void connect_resolve(struct session *s)
{
	const struct socks5_request *r = &s->hs->req;
	s->phase = PH_RESOLVING;
	s->on_client = handshake_read_early;
	if (resolver_lookup(s->wk->resolver, r->host, r->port, resolved, s, &s->query) < 0) {
		s->query = NULL;
		session_fail(s, SOCKS5_REP_GENERAL_FAILURE);
	}
}

/* The target is connected: answer with its local address and relay. */
static void connected(struct session *s)
{
	/* The rule that let the winning address through may limit its
	 * sessions: over the limit the connection is closed unused. */
	if (!connect_rule_limits(s))
		return;
	struct sockaddr_storage local;
	socklen_t len = sizeof local;
	if (getsockname(s->tfd, (struct sockaddr *)&local, &len) < 0) {
		session_fail(s, SOCKS5_REP_GENERAL_FAILURE);
		return;
	}
	int one = 1;
	(void)setsockopt(s->tfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	uint8_t out[SOCKS5_REPLY_MAX];
	size_t n = socks5_reply_encode(out, SOCKS5_REP_SUCCEEDED, (struct sockaddr *)&local);
	s->rep = SOCKS5_REP_SUCCEEDED;
	shm_count(s->wk->slot, M_REPLY_0, 1);
	if (session_send(s, out, n) < 0) {
		session_finalize(s);
		return;
	}
	relay_begin(s);
}

/* RFC 8305 section 4: alternate the address families, starting with the
 * family of the first address. */
static void interleave(struct handshake *hs)
{
	struct sockaddr_storage v[RESOLVER_MAX_ADDRS], *first[RESOLVER_MAX_ADDRS],
	    *second[RESOLVER_MAX_ADDRS];
	size_t nf = 0, ns = 0, n = 0;
	if (hs->naddrs < 3)
		return;
	sa_family_t fam = hs->addrs[0].ss_family;
	for (size_t i = 0; i < hs->naddrs; i++) {
		if (hs->addrs[i].ss_family == fam)
			first[nf++] = &hs->addrs[i];
		else
			second[ns++] = &hs->addrs[i];
	}
	for (size_t i = 0; i < nf || i < ns; i++) {
		if (i < nf)
			v[n++] = *first[i];
		if (i < ns)
			v[n++] = *second[i];
	}
	memcpy(hs->addrs, v, n * sizeof v[0]);
}

static void on_attempt(struct loop *l, struct loop_watch *w, uint32_t events);

/* The events a connected target is watched for. */
#define TARGET_EVENTS (EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET)

/* An attempt that is alone (a destination's only address: a literal
 * address or a name with one; or the last left after the others failed)
 * watches its socket through the session's own target watch, registered
 * with the target's events from the start: when it connects the watch only
 * changes hands, without an epoll_ctl.  Where several attempts may race,
 * each has its own watch and the winner moves to the session's: an event
 * of a loser still in this batch then finds its watch closed, never the
 * winner's. */
static struct loop_watch *attempt_watch(struct session *s, struct attempt *a)
{
	return s->tw.fn == on_attempt && s->tw.data == a ? &s->tw : &a->w;
}

static void close_attempt(struct session *s, struct attempt *a)
{
	if (a->fd < 0)
		return;
	loop_timer_stop(&a->timer);
	loop_watch_close(attempt_watch(s, a), a->fd);
	a->fd = -1;
	s->hs->in_flight--;
}

void connect_close_attempts(struct session *s)
{
	if (!s->hs)
		return;
	loop_timer_stop(&s->hs->next_timer);
	for (size_t i = 0; i < s->hs->natt; i++)
		close_attempt(s, &s->hs->att[i]);
}

/* One address failed (err): remember how, and try the next at once (RFC
 * 8305 section 5). */
static void address_failed(struct session *s, const struct sockaddr_storage *sa, int err)
{
	char text[INET6_ADDRSTRLEN];
	uint16_t port;
	session_addr_text(sa, text, sizeof text, &port);
	log_debug("session %llu: connect to %s port %u: %s", (unsigned long long)s->id, text, port,
	          strerror(err));
	s->best_fail = socks5_rep_worst(s->best_fail, socks5_rep_from_errno(err));
}

static void attempt_failed(struct attempt *a, int err)
{
	struct session *s = a->s;
	address_failed(s, &s->hs->addrs[a->addr], err);
	close_attempt(s, a);
	launch_next(s);
}

static void on_attempt_timeout(struct loop *l, struct loop_timer *t)
{
	(void)l;
	attempt_failed(t->data, ETIMEDOUT);
}

static void on_attempt(struct loop *l, struct loop_watch *w, uint32_t events)
{
	struct attempt *a = w->data;
	struct session *s = a->s;
	/* EPOLLOUT alone means connected; the error is read only on failure. */
	if (events & (EPOLLERR | EPOLLHUP)) {
		int err = 0;
		socklen_t len = sizeof err;
		if (getsockopt(a->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
			err = errno;
		if (err) {
			attempt_failed(a, err);
			return;
		}
	}
	if (!(events & EPOLLOUT))
		return;
	/* The first to connect wins; the others are closed. */
	int fd = a->fd;
	loop_timer_stop(&a->timer);
	if (w == &s->tw) {
		w->fn = session_target_event;
		w->data = s;
	} else if (loop_watch_move(l, &a->w, &s->tw, TARGET_EVENTS, session_target_event, s) < 0) {
		attempt_failed(a, errno);
		return;
	}
	a->fd = -1;
	s->hs->in_flight--;
	s->rule = a->match;
	connect_close_attempts(s);
	s->tfd = fd;
	/* An attempt alone on the target watch has its edges delivered here
	 * once (no epoll_ctl re-reports them): an EOF or urgent data that came
	 * with the connect must be taken as session_target_event would. */
	s->t_readable = (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLPRI)) != 0;
	if (events & EPOLLPRI)
		s->urgent = true;
	if (events & (EPOLLRDHUP | EPOLLHUP))
		s->t_hup = true;
	s->t_writable = true;
	static const uint64_t bounds[] = SHM_CONNECT_LAT_BOUNDS_US;
	int64_t us = now_us() - s->hs->connect_start_us;
	shm_observe(s->wk->slot, M_CONNECT_LAT_0, bounds, sizeof bounds / sizeof bounds[0],
	            M_CONNECT_LAT_SUM_US, us < 0 ? 0 : (uint64_t)us);
	connected(s);
}

static void on_next_timer(struct loop *l, struct loop_timer *t)
{
	(void)l;
	launch_next(t->data);
}

/* Start the next address's attempt; with more left, the one after it
 * starts in SESSION_ATTEMPT_DELAY_MS unless a failure starts it earlier. */
static void launch_next(struct session *s)
{
	struct handshake *hs = s->hs;
	struct worker *wk = s->wk;
	loop_timer_stop(&hs->next_timer);
	while (hs->next_addr < hs->naddrs) {
		uint8_t idx = (uint8_t)hs->next_addr++;
		const struct sockaddr_storage *sa = &hs->addrs[idx];
		socklen_t alen = sa->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
		                                           : sizeof(struct sockaddr_in);
		struct rules_match m;
		if (!address_allowed(s, sa, &m))
			continue;
		int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			address_failed(s, sa, errno);
			continue;
		}
		worker_congestion(wk, fd, true);
		int rc = bind_source(s, fd, sa->ss_family, &m);
		if (rc < 0) {
			address_failed(s, sa, -rc);
			close(fd);
			continue;
		}
		if (connect(fd, (const struct sockaddr *)sa, alen) < 0 && errno != EINPROGRESS) {
			address_failed(s, sa, errno);
			close(fd);
			continue;
		}
		struct attempt *a = &hs->att[hs->natt++];
		a->s = s;
		a->fd = fd;
		a->addr = idx;
		a->match = m;
		loop_timer_init(&a->timer, on_attempt_timeout, a);
		/* Alone: no other attempt in flight and none to come. */
		bool own = hs->in_flight || hs->next_addr < hs->naddrs || loop_watch_active(&s->tw);
		if (loop_watch_add(&wk->loop, own ? &a->w : &s->tw, fd,
		                   own ? EPOLLOUT | EPOLLET : TARGET_EVENTS, on_attempt, a) < 0) {
			close(fd);
			a->fd = -1;
			continue;
		}
		hs->in_flight++;
		loop_timer_start(&wk->loop, &wk->connect_tl, &a->timer);
		if (hs->next_addr < hs->naddrs)
			loop_timer_start(&wk->loop, &wk->attempt_tl, &hs->next_timer);
		return;
	}
	if (hs->in_flight == 0 && hs->blocked_any && s->best_fail == SOCKS5_REP_NOT_ALLOWED)
		connect_blocked(s, &hs->blocked);
	else if (hs->in_flight == 0)
		session_fail(s, s->best_fail);
}

void connect_begin(struct session *s)
{
	struct handshake *hs = s->hs;
	s->phase = PH_CONNECTING;
	s->on_client = handshake_read_early;
	interleave(hs);
	hs->natt = 0;
	hs->in_flight = 0;
	loop_timer_init(&hs->next_timer, on_next_timer, s);
	hs->connect_start_us = now_us();
	launch_next(s);
}
