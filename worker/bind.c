/*
 * bind: the BIND command (RFC 1928 section 6) — a listening socket on the
 * address the client reached the proxy at (the control connection's local
 * address, same family), a first reply with its address and port, a wait
 * for one incoming connection bounded by bind-timeout, a second reply with
 * the peer's address and port, then the relay of CONNECT (relay_begin).
 *
 * The peer must come from DST.ADDR unless that is all zeros (any address);
 * a connection from elsewhere is closed and counted, and the wait goes on.
 * DST.PORT is not checked: the peer's source port is its own choice (an
 * FTP server connects from port 20 or an ephemeral one, whatever the
 * client put in the request), as Dante does.  A domain DST.ADDR is
 * resolved like a CONNECT destination, and the peer may come from any of
 * its addresses.
 *
 * Descriptors: while it waits the session holds the control connection and
 * the listening socket, the two a session counts for in the worker's
 * descriptor budget (the target's place is empty until the peer arrives);
 * the accepted connection takes the listener's place.
 * Loop thread only.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../shared/log.h"
#include "session_int.h"
#include "worker.h"

/* Pending connections on the listening socket: one is wanted, a few more
 * let connections from the wrong address be refused without making the
 * right one wait behind them. */
#define BIND_BACKLOG 8
/* Connections accepted per event, so that a flood from wrong addresses
 * cannot hold the loop. */
#define BIND_ACCEPT_BATCH 64

/* The access rules on a BIND's peer, as on a CONNECT's destination
 * (command bind, DST.PORT of the request): checked on each expected
 * address before listening (a block answers X'02'; all zeros is checked
 * when the peer comes) and on the actual peer when it connects (a block
 * closes that connection, and the wait goes on).  The rule that lets the
 * peer in is the session's, with its limits. */
/* An address as (family, bytes), an IPv4-mapped IPv6 address as IPv4, so
 * that an expected 192.0.2.1 matches a peer seen as ::ffff:192.0.2.1. */
static int addr_bytes(const struct sockaddr_storage *ss, uint8_t out[16])
{
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
		if (!IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			memcpy(out, &s6->sin6_addr, 16);
			return AF_INET6;
		}
		memcpy(out, &s6->sin6_addr.s6_addr[12], 4);
		return AF_INET;
	}
	memcpy(out, &((const struct sockaddr_in *)ss)->sin_addr, 4);
	return AF_INET;
}

/* The same address with an IPv4-mapped IPv6 address made IPv4 (port kept):
 * a client that reached a dual-stack listener over IPv4 gets an IPv4
 * listening socket and reply. */
static void unmap(struct sockaddr_storage *ss)
{
	struct sockaddr_in6 s6;
	if (ss->ss_family != AF_INET6)
		return;
	memcpy(&s6, ss, sizeof s6);
	if (!IN6_IS_ADDR_V4MAPPED(&s6.sin6_addr))
		return;
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	memset(ss, 0, sizeof *ss);
	s4->sin_family = AF_INET;
	s4->sin_port = s6.sin6_port;
	memcpy(&s4->sin_addr, &s6.sin6_addr.s6_addr[12], 4);
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET6)
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
	else
		((struct sockaddr_in *)ss)->sin_port = htons(port);
}

static bool peer_expected(const struct handshake *hs, const struct sockaddr_storage *peer)
{
	uint8_t p[16], e[16];
	int fam = addr_bytes(peer, p);
	if (hs->naddrs == 0)
		return true;
	for (size_t i = 0; i < hs->naddrs; i++)
		if (addr_bytes(&hs->addrs[i], e) == fam && !memcmp(p, e, fam == AF_INET ? 4 : 16))
			return true;
	return false;
}

void bind_close(struct session *s)
{
	if (!s->hs || !s->hs->listening)
		return;
	loop_watch_close(&s->hs->lw, s->hs->lfd);
	s->hs->lfd = -1;
	s->hs->listening = false;
}

/* One listening socket on addr at port (0: the kernel's choice).  Returns
 * the descriptor or a negative errno. */
static int listen_on(const struct sockaddr_storage *addr, uint16_t port)
{
	struct sockaddr_storage a = *addr;
	socklen_t len = a.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
	                                         : sizeof(struct sockaddr_in);
	set_port(&a, port);
	int fd = socket(a.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1;
	/* A port of the range whose last connection is in TIME_WAIT can be
	 * listened on again; a port someone listens on still cannot. */
	if (port)
		(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&a, len) < 0 || listen(fd, BIND_BACKLOG) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

/* Listen on addr: on the kernel's ephemeral port, or on a free port of
 * bind-ports, tried from a random one upwards, wrapping around, until one
 * is free (a random start spreads concurrent binds over the range and
 * makes the port hard to guess).  Returns the descriptor or a negative
 * errno (-EADDRINUSE: every port of the range is taken). */
static int open_listener(const struct worker *wk, uint64_t id, const struct sockaddr_storage *addr)
{
	uint16_t lo = wk->cfg.bind_ports[0], hi = wk->cfg.bind_ports[1];
	if (lo == 0)
		return listen_on(addr, 0);
	uint32_t n = (uint32_t)(hi - lo) + 1, r;
	if (getrandom(&r, sizeof r, GRND_NONBLOCK) != (ssize_t)sizeof r)
		r = (uint32_t)(id * 2654435761u) ^ (uint32_t)wk->loop.now;
	for (uint32_t i = 0; i < n; i++) {
		int fd = listen_on(addr, (uint16_t)(lo + (r + i) % n));
		if (fd != -EADDRINUSE)
			return fd;
	}
	return -EADDRINUSE;
}

static void on_bind_timeout(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct session *s = t->data;
	shm_count(s->wk->slot, M_BIND_TIMEOUTS, 1);
	log_debug("session %llu: BIND timeout", (unsigned long long)s->id);
	bind_close(s);
	/* As for a connect timeout: the peer did not come in time. */
	session_fail(s, SOCKS5_REP_TTL_EXPIRED);
}

/* The waiting state's client handler: bytes the client sends now go to the
 * peer first; a client that closes ends the bind. */
static void on_client_wait(struct session *s)
{
	handshake_read_early(s);
	if (s->cfd >= 0 && s->c_eof) {
		log_debug("session %llu: client closed during BIND", (unsigned long long)s->id);
		session_finalize(s);
	}
}

/* The peer connected: second reply, then relay as CONNECT does. */
static void peer_arrived(struct session *s, int fd, const struct sockaddr_storage *peer)
{
	struct worker *wk = s->wk;
	bind_close(s);
	loop_timer_stop(&s->timer);
	if (loop_watch_add(&wk->loop, &s->tw, fd,
	                   EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET,
	                   session_target_event, s) < 0) {
		close(fd);
		session_fail(s, SOCKS5_REP_GENERAL_FAILURE);
		return;
	}
	s->tfd = fd;
	s->t_readable = s->t_writable = true;
	if (!connect_rule_limits(s))
		return;
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	worker_congestion(wk, fd, true);
	/* From here the session's destination is the peer that connected. */
	char dest[INET6_ADDRSTRLEN];
	session_addr_text(peer, dest, sizeof dest, &s->dport);
	(void)session_set_text(&s->dest, dest, strlen(dest));
	shm_count(wk->slot, M_BIND_ACCEPTED, 1);
	uint8_t out[SOCKS5_REPLY_MAX];
	size_t n = socks5_reply_encode(out, SOCKS5_REP_SUCCEEDED, (const struct sockaddr *)peer);
	s->rep = SOCKS5_REP_SUCCEEDED;
	shm_count(wk->slot, M_REPLY_0, 1);
	if (session_send(s, out, n) < 0) {
		session_finalize(s);
		return;
	}
	relay_begin(s);
}

static void on_listener(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	(void)events;
	struct session *s = w->data;
	for (int i = 0; i < BIND_ACCEPT_BATCH && s->hs && s->hs->listening; i++) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof peer;
		int fd = accept4(s->hs->lfd, (struct sockaddr *)&peer, &plen,
		                 SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN)
				return;
			if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
				continue;
			/* Out of descriptors or memory: the connection stays queued
			 * and the level-triggered watch would spin. */
			log_warn("session %llu: BIND: accept: %s", (unsigned long long)s->id,
			         strerror(errno));
			bind_close(s);
			session_fail(s, SOCKS5_REP_GENERAL_FAILURE);
			return;
		}
		struct rules_match m;
		if (!peer_expected(s->hs, &peer) || !connect_address_allowed(s, &peer, &m)) {
			char text[INET6_ADDRSTRLEN];
			uint16_t port;
			session_addr_text(&peer, text, sizeof text, &port);
			log_debug("session %llu: BIND: connection from %s port %u refused",
			          (unsigned long long)s->id, text, port);
			shm_count(s->wk->slot, M_BIND_WRONG_PEER, 1);
			close(fd);
			continue;
		}
		s->rule = m;
		peer_arrived(s, fd, &peer);
		return;
	}
}

/* Open the listening socket and send the first reply. */
static void start_listening(struct session *s)
{
	struct handshake *hs = s->hs;
	struct worker *wk = s->wk;
	for (size_t i = 0; i < hs->naddrs; i++) {
		struct rules_match m;
		if (!connect_address_allowed(s, &hs->addrs[i], &m)) {
			connect_blocked(s, &m);
			return;
		}
	}
	struct sockaddr_storage local;
	socklen_t len = sizeof local;
	if (getsockname(s->cfd, (struct sockaddr *)&local, &len) < 0) {
		session_fail(s, SOCKS5_REP_GENERAL_FAILURE);
		return;
	}
	unmap(&local);
	int fd = open_listener(wk, s->id, &local);
	if (fd < 0) {
		char text[INET6_ADDRSTRLEN];
		uint16_t port;
		session_addr_text(&local, text, sizeof text, &port);
		log_warn("session %llu: BIND: cannot listen on %s%s: %s", (unsigned long long)s->id,
		         text, wk->cfg.bind_ports[0] ? " in bind-ports" : "",
		         fd == -EADDRINUSE && wk->cfg.bind_ports[0] ? "every port is taken"
		                                                    : strerror(-fd));
		session_fail(s, SOCKS5_REP_GENERAL_FAILURE);
		return;
	}
	len = sizeof local;
	if (getsockname(fd, (struct sockaddr *)&local, &len) < 0 ||
	    loop_watch_add(&wk->loop, &hs->lw, fd, EPOLLIN, on_listener, s) < 0) {
		close(fd);
		session_fail(s, SOCKS5_REP_GENERAL_FAILURE);
		return;
	}
	hs->lfd = fd;
	hs->listening = true;
	shm_count(wk->slot, M_BIND_STARTED, 1);
	s->phase = PH_CONNECTING;
	s->on_client = on_client_wait;
	s->timer.fn = on_bind_timeout;
	loop_timer_start_at(&wk->misc_tl, &s->timer,
	                    wk->loop.now + (int64_t)wk->cfg.bind_timeout_s * 1000);
	/* The first reply is not counted among the replies: the second one,
	 * success or failure, is the request's outcome. */
	uint8_t out[SOCKS5_REPLY_MAX];
	size_t n = socks5_reply_encode(out, SOCKS5_REP_SUCCEEDED, (struct sockaddr *)&local);
	if (session_send(s, out, n) < 0)
		session_finalize(s);
}

static void resolved(void *arg, int status, const struct sockaddr_storage *addrs, size_t n)
{
	struct session *s = arg;
	s->query = NULL;
	shm_count(s->wk->slot, M_DNS_LOOKUPS, 1);
	if (status < 0) {
		shm_count(s->wk->slot, M_DNS_FAILURES, 1);
		log_info("session %llu: BIND: cannot resolve '%s': %s", (unsigned long long)s->id,
		         s->dest, status == -ENOENT ? "no such name or no address" : strerror(-status));
		session_fail(s, SOCKS5_REP_HOST_UNREACH);
		return;
	}
	memcpy(s->hs->addrs, addrs, n * sizeof *addrs);
	s->hs->naddrs = n;
	start_listening(s);
}

void bind_begin(struct session *s)
{
	struct handshake *hs = s->hs;
	const struct socks5_request *r = &hs->req;
	struct sockaddr_storage *ss = &hs->addrs[0];
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	static const uint8_t zeros[16];
	hs->lfd = -1;
	hs->naddrs = handshake_literal_addr(r, ss);
	if (!hs->naddrs && strlen(r->host) != r->alen) {
		session_fail(s, SOCKS5_REP_HOST_UNREACH); /* a NUL inside the name */
		return;
	}
	if (!hs->naddrs) {
		if (!connect_name_allowed(s))
			return;
		s->phase = PH_RESOLVING;
		s->on_client = handshake_read_early;
		if (resolver_lookup(s->wk->resolver, r->host, r->port, resolved, s, &s->query) < 0) {
			s->query = NULL;
			session_fail(s, SOCKS5_REP_GENERAL_FAILURE);
		}
		return;
	}
	/* All zeros: the peer may come from any address. */
	if (!memcmp(ss->ss_family == AF_INET ? (const void *)&s4->sin_addr
	                                     : (const void *)&s6->sin6_addr,
	            zeros, ss->ss_family == AF_INET ? 4 : 16)) {
		hs->naddrs = 0;
	}
	start_listening(s);
}
