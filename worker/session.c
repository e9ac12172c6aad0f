#include "session.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "../admin/pipo.h"
#include "../shared/ctrl.h"
#include "../shared/log.h"
#include "auth.h"
#include "pipes.h"
#include "resolver.h"
#include "sniff.h"
#include "socks5.h"
#include "worker.h"

/* Greeting (<= 257) + auth (<= 513) + request (<= 262) fit, with room for
 * early data sent before the reply. */
#define HS_BUF 2048
/* After a failure reply: how long unread client input is drained before
 * closing, so that the reply is not destroyed by a reset. */
#define LINGER_MS 2000
/* At most this much discarded per event while lingering. */
#define LINGER_READ_MAX 65536
/* s->rep before any reply was sent. */
#define REP_NONE 0xff

enum phase {
	PH_GREETING,
	PH_AUTH,
	PH_AUTH_WAIT,
	PH_REQUEST,
	PH_RESOLVING,
	PH_CONNECTING,
	PH_RELAY,
	PH_LINGER,
};

/* Everything only the handshake needs; freed when the relay starts. */
struct handshake {
	uint32_t len;
	uint8_t in[HS_BUF];
	struct socks5_greeting greeting;
	struct socks5_auth auth;
	struct socks5_request req;
	size_t naddrs, next_addr;
	struct sockaddr_storage addrs[RESOLVER_MAX_ADDRS];
	/* Connection attempts racing (RFC 8305): one per address at most. */
	struct attempt {
		struct session *s;
		struct loop_watch w;
		struct loop_timer timer; /* this attempt's connect timeout */
		int fd;
		uint8_t addr;
	} att[RESOLVER_MAX_ADDRS];
	struct loop_deferred deferred;
	size_t natt;                 /* attempts started */
	unsigned in_flight;
	struct loop_timer next_timer; /* start the next attempt (250 ms) */
};

/* RFC 8305 section 5: the "Connection Attempt Delay". */
#define ATTEMPT_DELAY_MS 250

struct session {
	struct list_node link;
	struct loop_deferred deferred;
	struct worker *wk;
	struct handshake *hs;
	uint64_t id;
	enum phase phase;

	int cfd, tfd;
	struct loop_watch cw, tw;
	bool c_readable, c_writable, t_readable, t_writable;
	bool c_hup, t_hup;   /* the side has shut down its sending (EPOLLRDHUP) */
	bool c_eof, t_eof;   /* EOF read from that side */
	bool c_shut, t_shut; /* SHUT_WR sent to that side */
	struct rbuf *up;     /* client -> target */
	struct rbuf *down;   /* target -> client (replies during the handshake) */
	struct rpipe *up_pipe, *down_pipe; /* splice(2) relay: held only while not empty */
	bool splice;                       /* the splice setting when relaying began */
	bool up_bulk, down_bulk;           /* a read filled the buffer: splice from now on */
	bool urgent; /* TCP urgent data seen: copy from now on (splice stops at the mark) */
	struct sniff *sniff; /* credential dissector; NULL once it has nothing to find */
	bool sniff_wanted;   /* dissector on, state not allocated before the first byte */

	struct loop_timer timer;  /* handshake, then idle, or linger */
	struct auth_job *auth_job;
	struct resolver_query *query;

	int user_slot; /* -1: anonymous or none yet */
	uint64_t user_id;
	uint64_t cred_gen; /* of the user as its password was checked */
	bool unauth;       /* counted in auth_conn_open until authenticated */
	char user[SHM_USER_NAME_MAX + 1];

	struct sockaddr_storage peer;
	char dest[256];
	uint16_t dport;
	bool requested;
	uint8_t rep;
	uint8_t best_fail;
	uint64_t bytes_up, bytes_down;
	int64_t start_ms;
	int64_t start_wall;
};

/* The attempts' watches live in the handshake state: events of the
 * current batch may still name them, so it is freed after the batch. */
static void free_handshake(struct session *s)
{
	if (s->hs)
		loop_defer_free(&s->wk->loop, &s->hs->deferred, free, s->hs);
	s->hs = NULL;
}

static void close_target(struct session *s)
{
	if (s->tfd < 0)
		return;
	loop_watch_close(&s->tw, s->tfd);
	s->tfd = -1;
}

static void finalize(struct session *s);
static void on_client(struct loop *l, struct loop_watch *w, uint32_t events);
static void on_target(struct loop *l, struct loop_watch *w, uint32_t events);
static void handshake_step(struct session *s);
static void start_attempts(struct session *s);
static void close_attempts(struct session *s);
static void relay(struct session *s);
static void sniff_input(struct session *s, enum sniff_dir dir, const uint8_t *p, size_t n);

static void addr_text(const struct sockaddr_storage *ss, char *out, size_t len, uint16_t *port)
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

/* ---- timers ------------------------------------------------------------ */

static void on_handshake_timeout(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct session *s = t->data;
	if (s->phase == PH_LINGER) {
		finalize(s);
		return;
	}
	shm_count(s->wk->slot, M_HANDSHAKE_TIMEOUT, 1);
	log_debug("session %llu: handshake timeout", (unsigned long long)s->id);
	finalize(s);
}

static void on_idle_timeout(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct session *s = t->data;
	shm_count(s->wk->slot, M_IDLE_TIMEOUT, 1);
	log_debug("session %llu: idle timeout", (unsigned long long)s->id);
	finalize(s);
}

static void touch_idle(struct session *s)
{
	if (s->wk->cfg.idle_cleanup)
		loop_timer_start(&s->wk->loop, &s->wk->idle_tl, &s->timer);
}

/* ---- writing to the client during the handshake ------------------------ */

/* Queue bytes for the client and try to send them now. */
static int client_send(struct session *s, const void *p, size_t n)
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

/* Answer with a failure, then half-close and discard input until the client
 * closes or LINGER_MS pass. */
static void fail(struct session *s, uint8_t rep)
{
	uint8_t out[SOCKS5_REPLY_MAX];
	s->rep = rep;
	if (s->requested)
		shm_count(s->wk->slot, (enum shm_counter)(M_REPLY_0 + rep), 1);
	size_t n = socks5_reply_encode(out, rep, NULL);
	if (client_send(s, out, n) < 0) {
		finalize(s);
		return;
	}
	close_target(s);
	close_attempts(s);
	s->phase = PH_LINGER;
	loop_timer_start_at(&s->wk->misc_tl, &s->timer, s->wk->loop.now + LINGER_MS);
	if (!s->down) {
		shutdown(s->cfd, SHUT_WR);
		s->c_shut = true;
	}
	handshake_step(s);
}

/* Reply in the greeting or auth phases that ends the session (05 FF, 01 01). */
static void refuse(struct session *s, const uint8_t *msg, size_t n)
{
	if (client_send(s, msg, n) < 0) {
		finalize(s);
		return;
	}
	s->phase = PH_LINGER;
	loop_timer_start_at(&s->wk->misc_tl, &s->timer, s->wk->loop.now + LINGER_MS);
	if (!s->down) {
		shutdown(s->cfd, SHUT_WR);
		s->c_shut = true;
	}
	handshake_step(s);
}

/* ---- handshake ---------------------------------------------------------- */

static void consume(struct handshake *hs, size_t n)
{
	memmove(hs->in, hs->in + n, hs->len - n);
	hs->len -= (uint32_t)n;
}

static void set_user(struct session *s, int slot, const struct shm_user *u)
{
	s->user_slot = slot;
	s->user_id = u->id;
	__atomic_fetch_add(&s->wk->slot->user_conns[slot], 1, __ATOMIC_RELAXED);
}

/* Flood guard hook: the session no longer counts as unauthenticated. */
static void authenticated(struct session *s)
{
	if (s->unauth)
		auth_conn_done(s->wk->auth, &s->peer);
	s->unauth = false;
}

static void auth_done(void *arg, bool ok)
{
	struct session *s = arg;
	s->auth_job = NULL;
	if (!ok) {
		static const uint8_t no[2] = {SOCKS5_AUTH_VERSION, SOCKS5_AUTH_FAILURE};
		char name[sizeof s->user];
		shm_count(s->wk->slot, M_AUTH_FAIL, 1);
		log_escape(name, sizeof name, (const uint8_t *)s->user, strlen(s->user));
		log_info("authentication failed for user '%s'", name);
		refuse(s, no, sizeof no);
		return;
	}
	struct shm_user u;
	int slot = shm_user_get(s->wk->seg, s->user, &u);
	/* Deleted, or its password changed, while being checked. */
	if (slot < 0 || u.id != s->user_id || u.cred_gen != s->cred_gen) {
		auth_done(arg, false);
		return;
	}
	authenticated(s);
	set_user(s, slot, &u);
	static const uint8_t yes[2] = {SOCKS5_AUTH_VERSION, SOCKS5_AUTH_SUCCESS};
	if (client_send(s, yes, sizeof yes) < 0) {
		finalize(s);
		return;
	}
	s->phase = PH_REQUEST;
	handshake_step(s);
}

static void start_auth(struct session *s)
{
	struct handshake *hs = s->hs;
	memcpy(s->user, hs->auth.user, sizeof s->user);
	struct shm_user u;
	int slot = shm_user_get(s->wk->seg, hs->auth.user, &u);
	s->phase = PH_AUTH_WAIT;
	s->user_id = slot >= 0 ? u.id : 0;
	s->cred_gen = slot >= 0 ? u.cred_gen : 0;
	/* RFC 1929 fields may hold any octet; a NUL would cut the name or
	 * password short once it reaches C strings, so it cannot match. */
	bool nul = strlen(hs->auth.user) != hs->auth.ulen || strlen(hs->auth.pass) != hs->auth.plen;
	enum auth_result r = nul ? AUTH_FAIL
	                         : auth_check_from(s->wk->auth, &s->peer, hs->auth.user, slot,
	                                           slot >= 0 ? &u : NULL, hs->auth.pass, auth_done,
	                                           s, &s->auth_job);
	explicit_bzero(hs->auth.pass, sizeof hs->auth.pass);
	if (r == AUTH_BUSY) {
		if (s->wk->last_auth_busy_warn + 1000 <= s->wk->loop.now) {
			log_warn("too many password checks queued: closing new logins until they drain");
			s->wk->last_auth_busy_warn = s->wk->loop.now;
		}
		finalize(s);
		return;
	}
	if (r != AUTH_PENDING)
		auth_done(s, r == AUTH_OK);
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
		fail(s, SOCKS5_REP_HOST_UNREACH);
		return;
	}
	memcpy(s->hs->addrs, addrs, n * sizeof *addrs);
	s->hs->naddrs = n;
	s->hs->next_addr = 0;
	start_attempts(s);
}

static void start_request(struct session *s)
{
	struct socks5_request *r = &s->hs->req;
	/* From here on the resolver's and the connect timeouts bound the wait,
	 * and every outcome is answered with a reply. */
	loop_timer_stop(&s->timer);
	s->requested = true;
	s->start_wall = (int64_t)time(NULL);
	s->dport = r->port;
	if (r->atyp == SOCKS5_ATYP_DOMAIN)
		log_escape(s->dest, sizeof s->dest, (const uint8_t *)r->host, strlen(r->host));
	else
		inet_ntop(r->atyp == SOCKS5_ATYP_IPV4 ? AF_INET : AF_INET6, r->addr, s->dest,
		          sizeof s->dest);
	shm_count(s->wk->slot, M_REQUESTS, 1);
	if (r->cmd != SOCKS5_CMD_CONNECT) {
		fail(s, SOCKS5_REP_CMD_NOT_SUPPORTED);
		return;
	}
	struct handshake *hs = s->hs;
	hs->naddrs = 0;
	hs->next_addr = 0;
	s->best_fail = SOCKS5_REP_GENERAL_FAILURE;
	if (r->atyp == SOCKS5_ATYP_IPV4) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&hs->addrs[0];
		memset(s4, 0, sizeof *s4);
		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, r->addr, 4);
		s4->sin_port = htons(r->port);
		hs->naddrs = 1;
	} else if (r->atyp == SOCKS5_ATYP_IPV6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&hs->addrs[0];
		memset(s6, 0, sizeof *s6);
		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, r->addr, 16);
		s6->sin6_port = htons(r->port);
		hs->naddrs = 1;
	} else {
		/* A literal address sent as a name is used as it is. */
		struct sockaddr_in *s4 = (struct sockaddr_in *)&hs->addrs[0];
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&hs->addrs[0];
		memset(&hs->addrs[0], 0, sizeof hs->addrs[0]);
		if (inet_pton(AF_INET, r->host, &s4->sin_addr) == 1) {
			s4->sin_family = AF_INET;
			s4->sin_port = htons(r->port);
			hs->naddrs = 1;
		} else if (inet_pton(AF_INET6, r->host, &s6->sin6_addr) == 1) {
			s6->sin6_family = AF_INET6;
			s6->sin6_port = htons(r->port);
			hs->naddrs = 1;
		} else if (strlen(r->host) != r->alen) {
			fail(s, SOCKS5_REP_HOST_UNREACH); /* a NUL inside the name */
			return;
		}
	}
	if (hs->naddrs) {
		start_attempts(s);
		return;
	}
	s->phase = PH_RESOLVING;
	int rc = resolver_lookup(s->wk->resolver, r->host, r->port, resolved, s, &s->query);
	if (rc < 0) {
		s->query = NULL;
		fail(s, SOCKS5_REP_GENERAL_FAILURE);
	}
}

/* Parse what the client sent so far, as far as the phase allows. */
static void handshake_parse(struct session *s)
{
	struct handshake *hs = s->hs;
	size_t used;
	int rc;
	for (;;) {
		switch (s->phase) {
		case PH_GREETING:
			rc = socks5_greeting_feed(&hs->greeting, hs->in, hs->len, &used);
			consume(hs, used);
			if (rc == SOCKS5_MORE)
				return;
			if (rc == SOCKS5_ERROR && hs->greeting.error == SOCKS5_GREETING_BAD_VERSION) {
				log_debug("session %llu: not a SOCKS5 greeting", (unsigned long long)s->id);
				finalize(s);
				return;
			}
			{
				uint8_t method =
				    rc != SOCKS5_DONE
				        ? SOCKS5_METHOD_NO_ACCEPTABLE
				        : socks5_choose_method(&hs->greeting, shm_user_count(s->wk->seg) > 0,
				                               s->wk->cfg.anonymous,
				                               socks5_is_loopback((struct sockaddr *)&s->peer));
				uint8_t msg[2] = {SOCKS5_VERSION, method};
				if (method == SOCKS5_METHOD_NO_ACCEPTABLE) {
					shm_count(s->wk->slot, M_NO_METHOD, 1);
					refuse(s, msg, 2);
					return;
				}
				if (client_send(s, msg, 2) < 0) {
					finalize(s);
					return;
				}
				if (method == SOCKS5_METHOD_USERPASS) {
					socks5_auth_init(&hs->auth);
					s->phase = PH_AUTH;
				} else {
					snprintf(s->user, sizeof s->user, "anonymous");
					authenticated(s);
					s->phase = PH_REQUEST;
				}
			}
			break;
		case PH_AUTH:
			rc = socks5_auth_feed(&hs->auth, hs->in, hs->len, &used);
			consume(hs, used);
			if (rc == SOCKS5_MORE)
				return;
			if (rc == SOCKS5_ERROR) {
				static const uint8_t no[2] = {SOCKS5_AUTH_VERSION, SOCKS5_AUTH_FAILURE};
				shm_count(s->wk->slot, M_AUTH_FAIL, 1);
				refuse(s, no, sizeof no);
				return;
			}
			start_auth(s);
			return;
		case PH_REQUEST:
			rc = socks5_request_feed(&hs->req, hs->in, hs->len, &used);
			consume(hs, used);
			if (rc == SOCKS5_MORE)
				return;
			if (rc == SOCKS5_ERROR) {
				s->requested = true;
				s->start_wall = (int64_t)time(NULL);
				shm_count(s->wk->slot, M_REQUESTS, 1);
				fail(s, hs->req.rep);
				return;
			}
			start_request(s);
			return;
		default:
			return;
		}
	}
}

/* Read client bytes during the handshake (and discard them after a refusal). */
static void handshake_step(struct session *s)
{
	if (s->phase == PH_LINGER) {
		char sink[4096];
		if (s->down && s->c_writable) {
			if (client_send(s, "", 0) < 0) {
				finalize(s);
				return;
			}
			if (!s->down && !s->c_shut) {
				shutdown(s->cfd, SHUT_WR);
				s->c_shut = true;
			}
		}
		/* Bounded per event so that a fast sender cannot hold the loop;
		 * the linger timer ends a client that never stops. */
		for (size_t total = 0; s->c_readable && total < LINGER_READ_MAX;) {
			ssize_t n = recv(s->cfd, sink, sizeof sink, 0);
			if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
				finalize(s);
				return;
			}
			if (n < 0 && errno == EAGAIN)
				s->c_readable = false;
			if (n > 0)
				total += (size_t)n;
		}
		return;
	}
	if (s->down && s->c_writable && client_send(s, "", 0) < 0) {
		finalize(s);
		return;
	}
	struct handshake *hs = s->hs;
	while (s->c_readable && hs->len < sizeof hs->in) {
		size_t space = sizeof hs->in - hs->len;
		ssize_t n = recv(s->cfd, hs->in + hs->len, space, 0);
		if (n > 0) {
			hs->len += (uint32_t)n;
			/* A short read drained the socket (see fill_buf). */
			if ((size_t)n < space && !s->c_hup)
				s->c_readable = false;
			continue;
		}
		if (n == 0) {
			s->c_eof = true;
			s->c_readable = false;
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno == EAGAIN) {
			s->c_readable = false;
			break;
		}
		finalize(s);
		return;
	}
	handshake_parse(s);
	/* A client that closed before its request was complete is gone. */
	if (s->c_eof && s->phase <= PH_REQUEST && s->phase != PH_AUTH_WAIT)
		finalize(s);
}

/* ---- outbound connection ------------------------------------------------ */



static void connected(struct session *s)
{
	struct sockaddr_storage local;
	socklen_t len = sizeof local;
	loop_timer_stop(&s->timer);
	if (getsockname(s->tfd, (struct sockaddr *)&local, &len) < 0) {
		fail(s, SOCKS5_REP_GENERAL_FAILURE);
		return;
	}
	int one = 1;
	(void)setsockopt(s->tfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	uint8_t out[SOCKS5_REPLY_MAX];
	size_t n = socks5_reply_encode(out, SOCKS5_REP_SUCCEEDED, (struct sockaddr *)&local);
	s->rep = SOCKS5_REP_SUCCEEDED;
	shm_count(s->wk->slot, M_REPLY_0, 1);
	if (client_send(s, out, n) < 0) {
		finalize(s);
		return;
	}
	/* Early data the client sent behind its request goes first. */
	struct handshake *hs = s->hs;
	if (hs->len) {
		s->up = worker_buf_get(s->wk);
		if (!s->up) {
			finalize(s);
			return;
		}
		memcpy(s->up->data, hs->in, hs->len);
		s->up->last = hs->len;
	}
	/* The dissector setting as it is now applies to this session for good
	 * (a SIGHUP changes it for new sessions only). */
	s->sniff_wanted = s->wk->cfg.dissectors;
	s->splice = s->wk->cfg.splice;
	if (hs->len)
		sniff_input(s, SNIFF_UP, hs->in, hs->len);
	free_handshake(s);
	s->phase = PH_RELAY;
	s->timer.fn = on_idle_timeout;
	shm_gauge_add(s->wk->slot, G_CONN_RELAYING, 1);
	touch_idle(s);
	relay(s);
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

static void close_attempt(struct session *s, struct attempt *a)
{
	if (a->fd < 0)
		return;
	loop_timer_stop(&a->timer);
	loop_watch_close(&a->w, a->fd);
	a->fd = -1;
	s->hs->in_flight--;
}

static void close_attempts(struct session *s)
{
	if (!s->hs)
		return;
	loop_timer_stop(&s->hs->next_timer);
	for (size_t i = 0; i < s->hs->natt; i++)
		close_attempt(s, &s->hs->att[i]);
}

static void launch_next(struct session *s);

static void attempt_failed(struct attempt *a, int err)
{
	struct session *s = a->s;
	char text[INET6_ADDRSTRLEN];
	uint16_t port;
	addr_text(&s->hs->addrs[a->addr], text, sizeof text, &port);
	log_debug("session %llu: connect to %s port %u: %s", (unsigned long long)s->id, text, port,
	          strerror(err));
	s->best_fail = socks5_rep_worst(s->best_fail, socks5_rep_from_errno(err));
	close_attempt(s, a);
	/* A failure starts the next attempt at once (RFC 8305 section 5). */
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
	if (loop_watch_move(l, &a->w, &s->tw, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET, on_target,
	                    s) < 0) {
		attempt_failed(a, errno);
		return;
	}
	a->fd = -1;
	s->hs->in_flight--;
	close_attempts(s);
	s->tfd = fd;
	s->t_readable = (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP)) != 0;
	s->t_writable = true;
	connected(s);
}

static void on_next_timer(struct loop *l, struct loop_timer *t)
{
	(void)l;
	launch_next(t->data);
}

/* Start the next address's attempt; with more left, the one after it
 * starts in ATTEMPT_DELAY_MS unless a failure starts it earlier. */
static void launch_next(struct session *s)
{
	struct handshake *hs = s->hs;
	loop_timer_stop(&hs->next_timer);
	while (hs->next_addr < hs->naddrs) {
		uint8_t idx = (uint8_t)hs->next_addr++;
		const struct sockaddr_storage *sa = &hs->addrs[idx];
		socklen_t alen = sa->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
		                                           : sizeof(struct sockaddr_in);
		int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd >= 0 && connect(fd, (const struct sockaddr *)sa, alen) < 0 && errno != EINPROGRESS) {
			int e = errno;
			close(fd);
			fd = -1;
			errno = e;
		}
		if (fd < 0) {
			char text[INET6_ADDRSTRLEN];
			uint16_t port;
			int e = errno;
			addr_text(sa, text, sizeof text, &port);
			log_debug("session %llu: connect to %s port %u: %s", (unsigned long long)s->id,
			          text, port, strerror(e));
			s->best_fail = socks5_rep_worst(s->best_fail, socks5_rep_from_errno(e));
			continue;
		}
		struct attempt *a = &hs->att[hs->natt++];
		a->s = s;
		a->fd = fd;
		a->addr = idx;
		loop_timer_init(&a->timer, on_attempt_timeout, a);
		if (loop_watch_add(&s->wk->loop, &a->w, fd, EPOLLOUT | EPOLLET, on_attempt, a) < 0) {
			close(fd);
			a->fd = -1;
			continue;
		}
		hs->in_flight++;
		loop_timer_start(&s->wk->loop, &s->wk->connect_tl, &a->timer);
		if (hs->next_addr < hs->naddrs)
			loop_timer_start_at(&s->wk->misc_tl, &hs->next_timer,
			                    s->wk->loop.now + ATTEMPT_DELAY_MS);
		return;
	}
	if (hs->in_flight == 0)
		fail(s, s->best_fail);
}

static void start_attempts(struct session *s)
{
	struct handshake *hs = s->hs;
	s->phase = PH_CONNECTING;
	interleave(hs);
	hs->natt = 0;
	hs->in_flight = 0;
	loop_timer_init(&hs->next_timer, on_next_timer, s);
	launch_next(s);
}

/* ---- relay -------------------------------------------------------------- */

/* A credential the server accepted: one P record on stdout. */
static void cred_record(void *arg, const struct sniff_cred *c)
{
	struct session *s = arg;
	char line[LOG_LINE_MAX];
	int n = sniff_format(line, sizeof line, (int64_t)time(NULL), s->user, s->dest, s->dport, c);
	if (n > 0)
		log_record(line, (size_t)n);
	shm_count(s->wk->slot, M_CREDENTIALS, 1);
}

/* Bytes just read from one side go to the dissector; when it has nothing
 * more to find it is freed and the relay runs without it. */
static void sniff_input(struct session *s, enum sniff_dir dir, const uint8_t *p, size_t n)
{
	/* The state is allocated with the first byte relayed, so that a
	 * session that never carries any costs nothing for it. */
	if (s->sniff_wanted) {
		s->sniff_wanted = false;
		s->sniff = sniff_new();
	}
	if (!s->sniff)
		return;
	if (sniff_feed(s->sniff, dir, p, n, cred_record, s) == SNIFF_DONE) {
		sniff_free(s->sniff);
		s->sniff = NULL;
	}
}

/* One direction of the relay. */
struct flow {
	int src, dst;
	bool *readable, *eof, *writable, *shut;
	bool hup;   /* the source has shut down its sending */
	bool *bulk; /* reads fill the buffer: the direction splices */
	struct rbuf **buf;
	struct rpipe **pipe;
	uint64_t *total;
	enum shm_counter counter;
	enum sniff_dir dir;
};

/* How many bytes the next read may splice (0: read into the buffer).
 * Splicing needs the buffer empty (bytes leave in order) and nothing that
 * must look at the bytes: no dissector, or one that skips them unseen. */
static uint64_t splice_allowance(const struct session *s, const struct flow *f)
{
	if (!s->splice || s->urgent || !*f->bulk || *f->buf || s->sniff_wanted)
		return 0;
	return s->sniff ? sniff_skippable(s->sniff, f->dir) : UINT64_MAX;
}

/* Send what the pipe, then the buffer, hold.  Returns bytes sent or a
 * negative errno; clears *writable when the socket is full. */
static ssize_t flush(struct session *s, const struct flow *f)
{
	struct rpipe *p = *f->pipe;
	struct rbuf *b = *f->buf;
	ssize_t w;
	size_t want;
	if (p) {
		want = p->len;
		w = splice(p->rfd, NULL, f->dst, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (w > 0) {
			shm_count(s->wk->slot, M_BYTES_SPLICED, (uint64_t)w);
			p->len -= (uint32_t)w;
			if (p->len == 0) {
				pipes_put(p);
				*f->pipe = NULL;
			}
		}
	} else {
		want = b->last - b->pos;
		w = send(f->dst, b->data + b->pos, want, MSG_NOSIGNAL);
		if (w > 0) {
			b->pos += (uint32_t)w;
			if (b->pos == b->last) {
				worker_buf_put(s->wk, b);
				*f->buf = NULL;
			}
		}
	}
	if (w > 0) {
		*f->total += (uint64_t)w;
		shm_count(s->wk->slot, f->counter, (uint64_t)w);
		/* A short write means the socket buffer is full: wait for EPOLLOUT. */
		if ((size_t)w < want)
			*f->writable = false;
		return w;
	}
	if (w < 0 && errno == EAGAIN)
		*f->writable = false;
	else if (w < 0 && errno != EINTR)
		return -errno;
	return 0;
}

/* Splice up to max bytes from the source into the pipe.  Returns 1 on
 * progress (bytes or EOF), 0 on none, -ENOBUFS when no pipe can be had
 * (the caller reads into the buffer instead), or a negative errno. */
static int fill_pipe(struct session *s, const struct flow *f, uint64_t max)
{
	struct rpipe *p = *f->pipe;
	if (!p) {
		p = *f->pipe = pipes_get(s->wk->cfg.pipe_size, worker_fd_room(s->wk, 2));
		if (!p)
			return -ENOBUFS;
	}
	size_t space = p->cap - p->len;
	if (space > max)
		space = (size_t)max;
	if (space == 0)
		return 0;
	ssize_t r = splice(f->src, NULL, p->wfd, NULL, space, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
	int rc = 0;
	if (r > 0) {
		p->len += (uint32_t)r;
		if (s->sniff)
			sniff_skip(s->sniff, f->dir, (uint64_t)r);
		/* A short splice does not prove the socket drained (the pipe may
		 * have run out of slots first): only EAGAIN into an empty pipe does. */
		rc = 1;
	} else if (r == 0) {
		*f->eof = true;
		rc = 1;
	} else if (errno == EAGAIN) {
		/* With bytes in the pipe, EAGAIN may mean the pipe is full: read
		 * again once it has drained. */
		if (p->len == 0)
			*f->readable = false;
	} else if (errno != EINTR) {
		rc = -errno;
	}
	if (p->len == 0) {
		pipes_put(p);
		*f->pipe = NULL;
	}
	return rc;
}

/* Read from the source into the buffer.  Returns 1 on progress (bytes or
 * EOF), 0 on none, or a negative errno. */
static int fill_buf(struct session *s, const struct flow *f)
{
	struct rbuf *b = *f->buf;
	if (!b) {
		b = *f->buf = worker_buf_get(s->wk);
		if (!b)
			return -ENOMEM;
	}
	if (b->pos == b->last)
		b->pos = b->last = 0;
	else if (b->last == b->cap && b->pos > 0) {
		memmove(b->data, b->data + b->pos, b->last - b->pos);
		b->last -= b->pos;
		b->pos = 0;
	}
	size_t space = b->cap - b->last;
	int rc = 0;
	if (space > 0) {
		ssize_t r = recv(f->src, b->data + b->last, space, 0);
		if (r > 0) {
			if (s->sniff || s->sniff_wanted)
				sniff_input(s, f->dir, b->data + b->last, (size_t)r);
			b->last += (uint32_t)r;
			rc = 1;
			if ((size_t)r == space)
				*f->bulk = true;
			/* A short read drained the socket, and new data raises a
			 * new edge; but an EOF that came with this data raises
			 * none, so after EPOLLRDHUP read on until it shows.  A
			 * read also stops short at an urgent mark, with more
			 * behind it: after urgent data, read on until EAGAIN. */
			else if (!f->hup && !s->urgent)
				*f->readable = false;
		} else if (r == 0) {
			*f->eof = true;
			rc = 1;
		} else if (errno == EAGAIN) {
			*f->readable = false;
		} else if (errno != EINTR) {
			rc = -errno;
		}
	}
	if (b->pos == b->last) {
		worker_buf_put(s->wk, b);
		*f->buf = NULL;
	}
	return rc;
}

/* Move bytes from the source to the destination until neither can make
 * progress.  Returns 0 or a negative errno. */
static int pump(struct session *s, const struct flow *f, bool *moved)
{
	for (;;) {
		bool progress = false;
		if (*f->writable && (*f->pipe || *f->buf)) {
			ssize_t w = flush(s, f);
			if (w < 0)
				return (int)w;
			progress = w > 0;
		}
		if (!*f->eof && *f->readable) {
			uint64_t max = splice_allowance(s, f);
			int rc = max ? fill_pipe(s, f, max) : -ENOBUFS;
			if (rc == -ENOBUFS)
				rc = fill_buf(s, f);
			if (rc < 0)
				return rc;
			progress |= rc > 0;
		}
		if (!progress)
			break;
		*moved = true;
	}
	if (*f->eof && !*f->buf && !*f->pipe && !*f->shut) {
		/* When the other direction is over too, the session closes both
		 * sockets next, and the close sends the FIN. */
		if (!(s->c_shut || s->t_shut))
			shutdown(f->dst, SHUT_WR);
		*f->shut = true;
	}
	return 0;
}

static void relay(struct session *s)
{
	bool moved = false;
	uint64_t up0 = s->bytes_up, down0 = s->bytes_down;
	const struct flow up = {s->cfd, s->tfd, &s->c_readable, &s->c_eof, &s->t_writable,
	                        &s->t_shut, s->c_hup, &s->up_bulk, &s->up, &s->up_pipe,
	                        &s->bytes_up, M_BYTES_UP, SNIFF_UP};
	const struct flow down = {s->tfd, s->cfd, &s->t_readable, &s->t_eof, &s->c_writable,
	                          &s->c_shut, s->t_hup, &s->down_bulk, &s->down, &s->down_pipe,
	                          &s->bytes_down, M_BYTES_DOWN, SNIFF_DOWN};
	int rc = pump(s, &up, &moved);
	if (rc == 0)
		rc = pump(s, &down, &moved);
	if (rc < 0 || (s->c_shut && s->t_shut)) {
		finalize(s);
		return;
	}
	if (moved) {
		touch_idle(s);
		if (s->user_slot >= 0) {
			uint64_t *ub = s->wk->slot->user_bytes[s->user_slot];
			__atomic_store_n(&ub[0], ub[0] + (s->bytes_up - up0), __ATOMIC_RELAXED);
			__atomic_store_n(&ub[1], ub[1] + (s->bytes_down - down0), __ATOMIC_RELAXED);
		}
	}
}

/* ---- events ------------------------------------------------------------- */

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
	if (s->phase == PH_RELAY)
		relay(s);
	else if (s->phase == PH_LINGER || s->hs)
		handshake_step(s);
}

static void on_target(struct loop *l, struct loop_watch *w, uint32_t events)
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
	if (s->phase == PH_RELAY)
		relay(s);
}

/* ---- life cycle --------------------------------------------------------- */

static void session_free(void *p)
{
	free(p);
}

static void access_log(struct session *s)
{
	char date[21], src[INET6_ADDRSTRLEN], line[LOG_LINE_MAX];
	uint16_t sport;
	log_iso8601(date, s->start_wall);
	addr_text(&s->peer, src, sizeof src, &sport);
	int n = snprintf(line, sizeof line, "%s\t%s\tA\t%s\t%u\t%s\t%u\t%u\t%llu\t%llu\t%lld", date,
	                 s->user[0] ? s->user : "anonymous", src, sport, s->dest[0] ? s->dest : "-",
	                 s->dport, s->rep,
	                 (unsigned long long)s->bytes_up, (unsigned long long)s->bytes_down,
	                 (long long)(s->wk->loop.now - s->start_ms));
	if (n > 0)
		log_record(line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
}

static void finalize(struct session *s)
{
	struct worker *wk = s->wk;
	if (s->cfd < 0)
		return; /* already finalized in this batch */
	if (s->requested && s->rep == REP_NONE) {
		/* Closed before an answer (drain, removed user): a request always
		 * gets one, sent best-effort. */
		uint8_t out[SOCKS5_REPLY_MAX];
		size_t n = socks5_reply_encode(out, SOCKS5_REP_GENERAL_FAILURE, NULL);
		if (!s->down)
			(void)send(s->cfd, out, n, MSG_NOSIGNAL | MSG_DONTWAIT);
		s->rep = SOCKS5_REP_GENERAL_FAILURE;
		shm_count(wk->slot, (enum shm_counter)(M_REPLY_0 + s->rep), 1);
	}
	if (s->requested)
		access_log(s);
	if (s->phase == PH_RELAY)
		shm_gauge_add(wk->slot, G_CONN_RELAYING, -1);
	if (s->user_slot >= 0)
		__atomic_fetch_sub(&wk->slot->user_conns[s->user_slot], 1, __ATOMIC_RELAXED);
	shm_gauge_add(wk->slot, G_CONN_CURRENT, -1);
	shm_conn_closed(wk->seg);
	auth_cancel(wk->auth, s->auth_job);
	authenticated(s); /* flood guard: no longer counted */
	resolver_cancel(s->query);
	loop_timer_stop(&s->timer);
	close_attempts(s);
	loop_watch_close(&s->cw, s->cfd);
	s->cfd = -1;
	close_target(s);
	if (s->up)
		worker_buf_put(wk, s->up);
	if (s->down)
		worker_buf_put(wk, s->down);
	s->up = s->down = NULL;
	pipes_discard(s->up_pipe);
	pipes_discard(s->down_pipe);
	s->up_pipe = s->down_pipe = NULL;
	free_handshake(s);
	sniff_free(s->sniff);
	s->sniff = NULL;
	s->link.prev->next = s->link.next;
	s->link.next->prev = s->link.prev;
	wk->nsessions--;
	loop_defer_free(&wk->loop, &s->deferred, session_free, s);
	worker_session_gone(wk);
}

void session_abort(struct session *s)
{
	finalize(s);
}

int session_start(struct worker *wk, int fd, const struct sockaddr_storage *peer)
{
	/* Flood guard hook: a source with too many sessions not yet
	 * authenticated gets no more. */
	if (!auth_conn_open(wk->auth, peer, wk->cfg.max_unauth)) {
		close(fd);
		return 0;
	}
	struct session *s = calloc(1, sizeof *s);
	if (s)
		s->hs = malloc(sizeof *s->hs);
	if (!s || !s->hs) {
		free(s);
		auth_conn_done(wk->auth, peer);
		return -ENOMEM;
	}
	s->unauth = true;
	/* close_attempts() runs on any exit, also before the first attempt. */
	s->hs->len = 0;
	s->hs->natt = 0;
	s->hs->in_flight = 0;
	loop_timer_init(&s->hs->next_timer, on_next_timer, s);
	socks5_greeting_init(&s->hs->greeting);
	socks5_request_init(&s->hs->req);
	s->wk = wk;
	s->id = (uint64_t)(wk->index + 1) << CTRL_ID_SHIFT | ++wk->next_session_id;
	s->cfd = fd;
	s->tfd = -1;
	s->user_slot = -1;
	s->rep = REP_NONE;
	s->peer = *peer;
	s->start_ms = wk->loop.now;
	s->phase = PH_GREETING;
	loop_timer_init(&s->timer, on_handshake_timeout, s);
	if (loop_watch_add(&wk->loop, &s->cw, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET, on_client,
	                   s) < 0) {
		int e = errno;
		free(s->hs);
		free(s);
		auth_conn_done(wk->auth, peer);
		return -e;
	}
	s->link.next = wk->sessions.next;
	s->link.prev = &wk->sessions;
	wk->sessions.next->prev = &s->link;
	wk->sessions.next = &s->link;
	wk->nsessions++;
	shm_count(wk->slot, M_CONN_TOTAL, 1);
	shm_gauge_add(wk->slot, G_CONN_CURRENT, 1);
	shm_conn_opened(wk->seg);
	loop_timer_start(&wk->loop, &wk->handshake_tl, &s->timer);
	return 0;
}

void session_reconfigure(struct worker *wk)
{
	struct list_node *n = wk->sessions.next;
	while (n != &wk->sessions) {
		struct session *s = (struct session *)n;
		n = n->next;
		if (s->user_slot >= 0 && !shm_user_alive(wk->seg, (uint32_t)s->user_slot, s->user_id)) {
			log_info("session %llu: user '%s' was removed: closing", (unsigned long long)s->id,
			         s->user);
			finalize(s);
			continue;
		}
		if (s->phase == PH_RELAY) {
			if (!wk->cfg.idle_cleanup)
				loop_timer_stop(&s->timer);
			else if (!loop_timer_active(&s->timer))
				touch_idle(s);
		}
	}
}

static uint8_t pipo_state(const struct session *s)
{
	switch (s->phase) {
	case PH_RESOLVING:
		return PIPO_SS_RESOLVING;
	case PH_CONNECTING:
		return PIPO_SS_CONNECTING;
	case PH_RELAY:
		return PIPO_SS_RELAY;
	case PH_LINGER:
		return PIPO_SS_CLOSING;
	default:
		return PIPO_SS_HANDSHAKE;
	}
}

size_t session_list(struct worker *wk, uint64_t after, size_t max, struct pipo_session *out,
                    bool *more)
{
	/* New sessions go to the head and ids grow, so walking from the tail
	 * visits them in ascending id order. */
	size_t n = 0;
	*more = false;
	for (struct list_node *p = wk->sessions.prev; p != &wk->sessions; p = p->prev) {
		const struct session *s = (const struct session *)p;
		if (s->id <= after)
			continue;
		if (n == max) {
			*more = true;
			break;
		}
		struct pipo_session *o = &out[n++];
		memset(o, 0, sizeof *o);
		o->id = s->id;
		o->state = pipo_state(s);
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
		snprintf(o->user, sizeof o->user, "%s", s->user);
		snprintf(o->dest, sizeof o->dest, "%s", s->dest);
		o->dport = s->dport;
		o->up = s->bytes_up;
		o->down = s->bytes_down;
		o->age_ms = (uint64_t)(wk->loop.now - s->start_ms);
	}
	return n;
}

bool session_close_id(struct worker *wk, uint64_t id)
{
	for (struct list_node *p = wk->sessions.next; p != &wk->sessions; p = p->next) {
		struct session *s = (struct session *)p;
		if (s->id == id) {
			log_info("session %llu: closed by an administrator", (unsigned long long)id);
			finalize(s);
			return true;
		}
	}
	return false;
}
