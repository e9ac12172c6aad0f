#include "worker.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../shared/ctrl.h"
#include "../shared/log.h"
#include "../shared/auth.h"
#include "../shared/rules.h"
#include "gssapi.h"
#include "pipes.h"
#include "resolver.h"
#include "session.h"
#include "udp.h"

_Static_assert(PROXYPROTO_TRUST_MAX == SETTINGS_MAX_PROXY_NETS,
               "every list the settings take fits the trust list");

#define ACCEPT_BATCH 64
#define ACCEPT_PAUSE_MS 100
/* Descriptors kept free of sessions and pipes: listeners, control and log
 * pipes, DoH and DNS sockets, extra connection attempts. */
#define FD_RESERVE 128
/* Spare relay buffers kept for reuse, in bytes; beyond this they are freed
 * (a burst of transfers must not leave the worker holding its peak). */
#define MAX_FREE_BYTES (4u << 20)

struct rbuf *worker_buf_get(struct worker *wk)
{
	struct rbuf *b = wk->free_bufs;
	if (b && b->cap == wk->cfg.buffer_size) {
		wk->free_bufs = b->next_free;
		wk->nfree_bufs--;
	} else {
		b = malloc(sizeof *b + wk->cfg.buffer_size);
		if (!b)
			return NULL;
		b->cap = wk->cfg.buffer_size;
	}
	b->pos = b->last = 0;
	b->next_free = NULL;
	return b;
}

void worker_buf_put(struct worker *wk, struct rbuf *b)
{
	if ((wk->nfree_bufs + 1) * b->cap > MAX_FREE_BYTES || b->cap != wk->cfg.buffer_size) {
		free(b);
		return;
	}
	b->next_free = wk->free_bufs;
	wk->free_bufs = b;
	wk->nfree_bufs++;
}

static void free_bufs(struct worker *wk)
{
	while (wk->free_bufs) {
		struct rbuf *b = wk->free_bufs;
		wk->free_bufs = b->next_free;
		free(b);
	}
	wk->nfree_bufs = 0;
}

/* ---- accepting ---------------------------------------------------------- */

static void on_accept(struct loop *l, struct loop_watch *w, uint32_t events);

bool worker_fd_room(const struct worker *wk, size_t n)
{
	return 2 * (wk->nsessions + pipes_open()) + udp_fds_open() + wk->fd_reserve + n <=
	       wk->fd_limit;
}

static void accept_enable(struct worker *wk, bool on)
{
	if (wk->accepting == on)
		return;
	bool failed = false;
	for (size_t i = 0; i < wk->nlisteners; i++) {
		struct listener *ls = &wk->listeners[i];
		if (!on) {
			loop_watch_del(&wk->loop, &ls->w);
			continue;
		}
		/* Shared sockets: EPOLLEXCLUSIVE wakes one worker per connection,
		 * not all.  Own sockets (reuseport): plain EPOLLIN. */
		int rc = loop_watch_active(&ls->w) ? 0
		                                    : loop_watch_add(&wk->loop, &ls->w, ls->fd,
		                                                     wk->listen_events, on_accept, wk);
		if (rc < 0) {
			log_error("cannot watch a listening socket: %s; retrying", strerror(-rc));
			failed = true;
		}
	}
	wk->accepting = on;
	if (failed)
		loop_timer_start_at(&wk->misc_tl, &wk->accept_timer, wk->loop.now + ACCEPT_PAUSE_MS);
}

/* Draining: no more accepts.  Closing our copies at once matters with
 * reuseport, where a socket stays in the kernel's group (and is given
 * connections) as long as any process holds it; with shared sockets it only
 * drops a reference. */
static void close_listeners(struct worker *wk)
{
	accept_enable(wk, false);
	for (size_t i = 0; i < wk->nlisteners; i++)
		close(wk->listeners[i].fd);
	wk->nlisteners = 0;
}

static void on_accept_resume(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct worker *wk = t->data;
	if (wk->draining)
		return;
	if (!worker_fd_room(wk, 2)) {
		loop_timer_start_at(&wk->misc_tl, &wk->accept_timer, wk->loop.now + ACCEPT_PAUSE_MS);
		return;
	}
	wk->accepting = false;
	accept_enable(wk, true);
}

static void client_blocked(struct worker *wk, const struct sockaddr_storage *peer,
                           const struct rules_match *rm)
{
	shm_count(wk->slot, M_CLIENTS_BLOCKED, 1);
	rules_shm_hit(wk->seg, wk->rules_gen, rm);
	if (rm->log) {
		char addr[INET6_ADDRSTRLEN] = "?";
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)peer;
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)peer;
		if (peer->ss_family == AF_INET)
			inet_ntop(AF_INET, &s4->sin_addr, addr, sizeof addr);
		else
			inet_ntop(AF_INET6, &s6->sin6_addr, addr, sizeof addr);
		unsigned port = ntohs(peer->ss_family == AF_INET ? s4->sin_port : s6->sin6_port);
		log_info("client %s port %u blocked by rule %u (line %u)", addr, port, rm->number,
		         rm->line);
	}
}

bool worker_client_allowed(struct worker *wk, const struct sockaddr_storage *peer)
{
	struct rules_match rm;
	if (!wk->rules)
		return true;
	if (rules_client(wk->rules, (const struct sockaddr *)peer, &rm) == RULES_BLOCK) {
		client_blocked(wk, peer, &rm);
		session_log_refusal(wk, peer, NULL, SESSION_REFUSED_CLIENT, NULL, wk->loop.now);
		return false;
	}
	/* A client rule that passes counts its hit too (none: the default). */
	if (rm.number)
		rules_shm_hit(wk->seg, wk->rules_gen, &rm);
	return true;
}

void worker_congestion(struct worker *wk, int fd, bool target)
{
	const char *name = target ? wk->cfg.target_congestion : wk->cfg.client_congestion;
	if (!name[0])
		return;
	/* A name that failed is not tried on every connection: a root
	 * worker's kernel would look for a module each time. */
	char *failed = wk->congestion_failed[target];
	int64_t *at = &wk->congestion_failed_at[target];
	if (*at && wk->loop.now - *at < 60000 && strcmp(failed, name) == 0)
		return;
	if (setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, name, strlen(name)) == 0)
		return;
	int e = errno;
	*at = wk->loop.now ? wk->loop.now : 1;
	snprintf(failed, sizeof wk->congestion_failed[0], "%s", name);
	log_warn("%s %s: %s; connections keep the system's for a minute",
	         target ? "target-congestion" : "client-congestion", name, strerror(e));
}

static void on_accept(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)events;
	struct worker *wk = w->data;
	for (int i = 0; i < ACCEPT_BATCH && wk->accepting; i++) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof peer;
		int fd = accept4(w->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
				return;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
				/* Out of descriptors or memory: the pending connection stays
				 * queued, so a level-triggered watch would spin.  Stop
				 * watching for a moment; running sessions go on. */
				shm_count(wk->slot, M_ACCEPT_PAUSED, 1);
				pipes_drain();
				if (l->now - wk->last_accept_warn >= 1000) {
					log_warn("accept: %s; pausing accepts for %d ms (%zu sessions)",
					         strerror(errno), ACCEPT_PAUSE_MS, wk->nsessions);
					wk->last_accept_warn = l->now;
				}
				accept_enable(wk, false);
				loop_timer_start_at(&wk->misc_tl, &wk->accept_timer, l->now + ACCEPT_PAUSE_MS);
				return;
			}
			log_error("accept: %s", strerror(errno));
			return;
		}
		/* Client rules: decided before a byte is read, except for a
		 * trusted balancer's connection, whose client is known only from
		 * its PROXY header (the session decides them then). */
		bool proxied = wk->proxy_trust.n && proxyproto_trusted(&wk->proxy_trust, &peer);
		if (!proxied && !worker_client_allowed(wk, &peer)) {
			close(fd);
			continue;
		}
		worker_congestion(wk, fd, false);
		if (session_start(wk, fd, &peer, proxied) < 0) {
			log_warn("cannot start a session: out of memory");
			close(fd);
		}
		/* A session needs a second descriptor for its target: stop taking
		 * new ones while the limit leaves no room for them (with a shared
		 * socket another worker takes them). */
		if (!worker_fd_room(wk, 2)) {
			shm_count(wk->slot, M_ACCEPT_PAUSED, 1);
			if (l->now - wk->last_accept_warn >= 1000) {
				log_warn("%zu sessions: descriptor limit near; pausing accepts for %d ms",
				         wk->nsessions, ACCEPT_PAUSE_MS);
				wk->last_accept_warn = l->now;
			}
			accept_enable(wk, false);
			loop_timer_start_at(&wk->misc_tl, &wk->accept_timer, l->now + ACCEPT_PAUSE_MS);
			return;
		}
	}
}

/* ---- configuration and control ------------------------------------------ */

static void apply_settings(struct worker *wk)
{
	struct settings old = wk->cfg;
	wk->cfg_gen = shm_settings_read(wk->seg, &wk->cfg);
	log_set_level((enum log_level)wk->cfg.log_level);
	loop_tlist_set(&wk->loop, &wk->handshake_tl, (int64_t)wk->cfg.handshake_timeout_s * 1000);
	loop_tlist_set(&wk->loop, &wk->connect_tl, (int64_t)wk->cfg.connect_timeout_s * 1000);
	loop_tlist_set(&wk->loop, &wk->idle_tl, (int64_t)wk->cfg.idle_timeout_s * 1000);
	if (old.buffer_size != wk->cfg.buffer_size)
		free_bufs(wk);
	if (wk->resolver && strcmp(old.dns_server, wk->cfg.dns_server) != 0) {
		if (!wk->cfg.dns_server[0])
			log_warn("dns-server removed: /etc/resolv.conf is read again at the next start");
		else if (resolver_set_servers(wk->resolver, wk->cfg.dns_server) < 0)
			log_error("invalid DNS servers '%s'", wk->cfg.dns_server);
	}
	if (wk->resolver)
		resolver_configure(wk->resolver, &wk->cfg); /* DoH endpoint, fallback, cache */
	if (proxyproto_trust_parse(&wk->proxy_trust, wk->cfg.proxy_protocol) < 0)
		log_error("worker %u: invalid proxy-protocol list '%s': no balancer trusted",
		          wk->index, wk->cfg.proxy_protocol);
	/* GSS-API: the helper thread from the first time it is configured
	 * (it stays: logins in progress hold its jobs); an empty keytab
	 * stops offering the method. */
	if (wk->cfg.gssapi_keytab[0] && !wk->gss && gss_worker_new(&wk->loop, &wk->gss) < 0)
		log_error("worker %u: cannot start the GSS-API thread: method 0x01 not offered",
		          wk->index);
	if (wk->gss)
		gss_worker_configure(wk->gss, &wk->cfg);
	/* New rules apply to the requests decided from now on. */
	struct rules *rs;
	char err[512];
	int rc = rules_shm_load(wk->seg, &wk->cfg, &wk->rules_gen, &rs, err, sizeof err);
	if (rc > 0) {
		rules_free(wk->rules);
		wk->rules = rs;
	} else if (rc < 0) {
		log_error("worker %u: cannot compile the rules (line %s): keeping the old ones",
		          wk->index, err);
	}
}

static void drain_done(struct worker *wk)
{
	loop_stop(&wk->loop);
}

void worker_session_gone(struct worker *wk)
{
	if (wk->draining && wk->nsessions == 0)
		drain_done(wk);
}

static void on_grace_over(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct worker *wk = t->data;
	if (wk->nsessions)
		log_info("grace period over: closing %zu sessions", wk->nsessions);
	session_abort_all(wk);
	drain_done(wk);
}

static void start_drain(struct worker *wk)
{
	if (wk->draining)
		return;
	wk->draining = true;
	close_listeners(wk);
	loop_timer_stop(&wk->accept_timer);
	if (wk->nsessions == 0) {
		drain_done(wk);
		return;
	}
	loop_timer_start_at(&wk->misc_tl, &wk->grace_timer,
	                    wk->loop.now + (int64_t)wk->cfg.grace_s * 1000);
}

/* Answer the master's session listing: one datagram, a header and records. */
static void answer_list(struct worker *wk, const struct ctrl_msg *m)
{
	size_t max = m->b > CTRL_SESSIONS_MAX ? CTRL_SESSIONS_MAX : m->b;
	size_t size = sizeof(struct ctrl_msg) + max * sizeof(struct ctrl_session);
	uint8_t *buf = malloc(size);
	struct ctrl_msg reply = {.type = CTRL_SESSIONS, .tag = m->tag};
	bool more = false;
	if (buf)
		reply.b = (uint32_t)session_list(wk, m->a, max,
		                                  (struct ctrl_session *)(buf + sizeof reply), &more);
	reply.c = more;
	if (!buf) {
		(void)send(wk->ctrl_fd, &reply, sizeof reply, MSG_DONTWAIT | MSG_NOSIGNAL);
		return;
	}
	memcpy(buf, &reply, sizeof reply);
	if (send(wk->ctrl_fd, buf, sizeof reply + reply.b * sizeof(struct ctrl_session),
	         MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
		log_warn("cannot answer the master's session list: %s", strerror(errno));
	free(buf);
}

static void on_ctrl(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	(void)events;
	struct worker *wk = w->data;
	for (;;) {
		struct ctrl_msg m;
		ssize_t n = recv(wk->ctrl_fd, &m, sizeof m, MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			return;
		if (n <= 0) {
			/* The master is gone: finish what we have and leave. */
			loop_watch_del(&wk->loop, &wk->ctrl_w);
			start_drain(wk);
			return;
		}
		if ((size_t)n != sizeof m)
			continue;
		if (m.type == CTRL_CONFIG) {
			apply_settings(wk);
			session_reconfigure(wk);
		} else if (m.type == CTRL_DRAIN) {
			start_drain(wk);
		} else if (m.type == CTRL_LIST_SESSIONS) {
			answer_list(wk, &m);
		} else if (m.type == CTRL_CLOSE_SESSION) {
			struct ctrl_msg reply = {.type = CTRL_CLOSED, .tag = m.tag};
			reply.b = session_close_id(wk, m.a);
			(void)send(wk->ctrl_fd, &reply, sizeof reply, MSG_DONTWAIT | MSG_NOSIGNAL);
		}
	}
}

static void on_signal(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	(void)events;
	struct worker *wk = w->data;
	struct signalfd_siginfo si;
	while (read(wk->sig_fd, &si, sizeof si) == (ssize_t)sizeof si)
		if (si.ssi_signo == SIGTERM)
			start_drain(wk);
}

/* ---- log streams -------------------------------------------------------- */

static void on_log_writable(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	(void)w;
	(void)events;
	/* before_sleep flushes and updates the watches. */
}

static void before_sleep(struct loop *l, void *arg)
{
	struct worker *wk = arg;
	unsigned want = log_flush();
	for (int i = 0; i < 2; i++) {
		struct loop_watch *w = &wk->log_w[i];
		if ((want & (1u << i)) && !loop_watch_active(w))
			/* Fails for regular files, which never make a writer wait. */
			(void)loop_watch_add(l, w, log_fd((enum log_stream)i), EPOLLOUT, on_log_writable,
			                     wk);
		else if (!(want & (1u << i)) && loop_watch_active(w))
			loop_watch_del(l, w);
	}
	__atomic_store_n(&wk->slot->counters[M_LOG_DROPPED], log_dropped_total(), __ATOMIC_RELAXED);
}

/* ---- main --------------------------------------------------------------- */

static int setup(struct worker *wk, const struct worker_args *a)
{
	wk->seg = a->seg;
	wk->index = a->index;
	wk->slot = &a->seg->slots[a->index];
	wk->ctrl_fd = a->ctrl_fd;
	wk->sig_fd = -1;
	list_init(&wk->sessions);
	struct rlimit rl;
	wk->fd_limit = SIZE_MAX / 2;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < wk->fd_limit)
		wk->fd_limit = (size_t)rl.rlim_cur;
	wk->fd_reserve = wk->fd_limit / 4 < FD_RESERVE ? wk->fd_limit / 4 : FD_RESERVE;
	for (size_t i = 0; i < a->nlisten; i++)
		wk->listeners[wk->nlisteners++].fd = a->listen_fds[i];
	wk->listen_events = a->exclusive ? EPOLLIN | EPOLLEXCLUSIVE : EPOLLIN;
	int rc = loop_init(&wk->loop);
	if (rc < 0)
		return rc;
	loop_tlist_init(&wk->loop, &wk->handshake_tl, 1);
	loop_tlist_init(&wk->loop, &wk->connect_tl, 1);
	loop_tlist_init(&wk->loop, &wk->idle_tl, 1);
	loop_tlist_init(&wk->loop, &wk->linger_tl, SESSION_LINGER_MS);
	loop_tlist_init(&wk->loop, &wk->attempt_tl, SESSION_ATTEMPT_DELAY_MS);
	loop_tlist_init(&wk->loop, &wk->misc_tl, 0);
	loop_timer_init(&wk->accept_timer, on_accept_resume, wk);
	loop_timer_init(&wk->grace_timer, on_grace_over, wk);
	loop_timer_init(&wk->auth_fail_timer, handshake_say_failures, wk);
	loop_timer_init(&wk->refusal_timer, session_say_refusals, wk);
	apply_settings(wk);
	wk->loop.before_sleep = before_sleep;
	wk->loop.before_sleep_arg = wk;

	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	wk->sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (wk->sig_fd < 0)
		return -errno;
	if ((rc = loop_watch_add(&wk->loop, &wk->sig_w, wk->sig_fd, EPOLLIN, on_signal, wk)) < 0)
		return rc;
	if ((rc = loop_watch_add(&wk->loop, &wk->ctrl_w, wk->ctrl_fd, EPOLLIN, on_ctrl, wk)) < 0)
		return rc;
	if ((rc = resolver_new(&wk->loop, &wk->cfg, wk->slot, &wk->resolver)) < 0)
		return rc;
	if ((rc = auth_new(&wk->loop, &wk->auth)) < 0)
		return rc;
	auth_set_metrics(wk->auth, wk->slot);
	accept_enable(wk, true);
	return 0;
}

static void teardown(struct worker *wk)
{
	session_abort_all(wk);
	close_listeners(wk);
	pipes_drain();
	gss_worker_free(wk->gss);
	wk->gss = NULL;
	auth_free(wk->auth);
	resolver_free(wk->resolver);
	rules_free(wk->rules);
	wk->rules = NULL;
	for (int i = 0; i < 2; i++)
		loop_watch_del(&wk->loop, &wk->log_w[i]);
	loop_watch_del(&wk->loop, &wk->ctrl_w);
	loop_watch_del(&wk->loop, &wk->sig_w);
	if (wk->sig_fd >= 0)
		close(wk->sig_fd);
	close(wk->ctrl_fd);
	loop_free(&wk->loop);
	free_bufs(wk);
}

int worker_main(const struct worker_args *a)
{
	struct worker *wk = calloc(1, sizeof *wk);
	if (!wk)
		return 71;
	int status = 0;
	int rc = setup(wk, a);
	if (rc < 0) {
		log_error("worker %u: cannot start: %s", a->index, strerror(-rc));
		status = 71;
	} else {
		__atomic_store_n(&wk->slot->pid, (int32_t)getpid(), __ATOMIC_RELAXED);
		rc = loop_run(&wk->loop);
		if (rc < 0) {
			log_error("worker %u: event loop failed: %s", a->index, strerror(-rc));
			status = 70;
		}
	}
	teardown(wk);
	free(wk);
	return status;
}
