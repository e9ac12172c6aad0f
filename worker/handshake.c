/*
 * handshake: the states of a session before its request is acted on —
 * greeting, username/password login (RFC 1929, checked off the loop by
 * shared/auth.c), request.  Each state is a client handler that reads into
 * the handshake buffer and feeds its codec (worker/socks5.c); a complete
 * message installs the next state's handler and runs it at once, since its
 * bytes may already be buffered.  Loop thread only.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "../shared/auth.h"
#include "../shared/log.h"
#include "gssapi.h"
#include "session_int.h"
#include "udp.h"
#include "worker.h"

static void on_proxy(struct session *s);
static void on_greeting(struct session *s);
static void on_auth(struct session *s);
static void on_request(struct session *s);

static void on_handshake_timeout(struct loop *l, struct loop_timer *t)
{
	(void)l;
	session_timed_out(t->data, M_HANDSHAKE_TIMEOUT, "handshake");
}

void handshake_begin(struct session *s)
{
	socks5_greeting_init(&s->hs->greeting);
	socks5_request_init(&s->hs->req);
	proxyproto_init(&s->hs->proxy);
	/* The header counts against the handshake timeout like the rest. */
	s->phase = s->hs->proxied ? PH_PROXY : PH_GREETING;
	s->on_client = s->hs->proxied ? on_proxy : on_greeting;
	loop_timer_init(&s->timer, on_handshake_timeout, s);
	loop_timer_start(&s->wk->loop, &s->wk->handshake_tl, &s->timer);
}

/* Drop the bytes a codec used.  True when its message is complete or
 * bad; false while it needs more (then a client that closed is gone). */
static bool fed(struct session *s, int rc, size_t used)
{
	struct handshake *hs = s->hs;
	memmove(hs->in, hs->in + used, hs->len - used);
	hs->len -= (uint32_t)used;
	if (rc != SOCKS5_MORE)
		return true;
	if (s->c_eof)
		session_finalize(s);
	return false;
}

bool handshake_read(struct session *s)
{
	struct handshake *hs = s->hs;
	if (s->down && s->c_writable && session_send(s, "", 0) < 0) {
		session_finalize(s);
		return false;
	}
	while (s->c_readable && hs->len < sizeof hs->in) {
		size_t space = sizeof hs->in - hs->len;
		ssize_t n = recv(s->cfd, hs->in + hs->len, space, 0);
		if (n > 0) {
			hs->len += (uint32_t)n;
			/* A short read drained the socket (see relay.c's fill_buf). */
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
		session_finalize(s);
		return false;
	}
	return true;
}

void handshake_read_early(struct session *s)
{
	if (!handshake_read(s))
		return;
	/* A client gone while its password is checked, with no request sent
	 * ahead, can never be served: its check leaves the queue now rather
	 * than at the handshake timeout (a flood of abandoned logins would
	 * otherwise hold the queue's places). */
	if (s->c_eof && s->hs->len == 0)
		session_finalize(s);
}

/* named: the offered user name was read whole (a malformed message's may not be). */
static void refuse_login(struct session *s, bool named)
{
	static const uint8_t no[2] = {SOCKS5_AUTH_VERSION, SOCKS5_AUTH_FAILURE};
	char user[RFC1929_FIELD_MAX * 4 + 1] = "";
	if (named)
		log_escape(user, sizeof user, (const uint8_t *)s->hs->auth.user, s->hs->auth.ulen);
	session_log_refusal(s->wk, &s->peer, user, SESSION_REFUSED_AUTH, "password", s->start_ms);
	shm_count(s->wk->slot, M_AUTH_FAIL, 1);
	session_refuse(s, no, sizeof no);
}

/* ---- PROXY protocol header (trusted balancers) --------------------------- */

static void on_proxy(struct session *s)
{
	struct handshake *hs = s->hs;
	struct worker *wk = s->wk;
	size_t used;
	if (!handshake_read(s))
		return;
	int rc = proxyproto_feed(&hs->proxy, hs->in, hs->len, &used);
	/* PROXYPROTO_MORE is SOCKS5_MORE: fed() reads it the same way. */
	if (!fed(s, rc == PROXYPROTO_MORE ? SOCKS5_MORE : SOCKS5_DONE, used))
		return;
	if (rc == PROXYPROTO_ERROR) {
		/* A balancer that does not send the header is misconfigured:
		 * said once a second, every one counted at debug. */
		char addr[64];
		uint16_t port;
		session_addr_text(&s->peer, addr, sizeof addr, &port);
		if (wk->last_proxy_warn + 1000 <= wk->loop.now) {
			log_warn("connection from balancer %s port %u: %s: closing", addr, port,
			         proxyproto_error_text((enum proxyproto_error)hs->proxy.error));
			wk->last_proxy_warn = wk->loop.now;
		} else {
			log_debug("session %llu: from %s: %s", (unsigned long long)s->id, addr,
			          proxyproto_error_text((enum proxyproto_error)hs->proxy.error));
		}
		session_finalize(s);
		return;
	}
	/* A header that names no client (LOCAL, UNKNOWN, another family or
	 * transport) ends the connection: the balancer's own address, often
	 * loopback, must not stand in for an unknown client, and a health
	 * check needs nothing after the header. */
	if (!hs->proxy.has_addr) {
		log_debug("session %llu: PROXY header without a client address: closed",
		          (unsigned long long)s->id);
		session_finalize(s);
		return;
	}
	/* From here the client is the header's: rules, the per-source cap,
	 * the anonymous policy, logs, listings and the session counter all
	 * see it. */
	/* A loopback client of a balancer on another host is on that host's
	 * loopback, not ours: it is that host (the balancer's address, the
	 * header's port), so it passes none of the policies kept for this
	 * host's own loopback clients. */
	if (socks5_is_loopback((const struct sockaddr *)&hs->proxy.src) &&
	    !socks5_is_loopback((const struct sockaddr *)&s->peer)) {
		uint16_t port = hs->proxy.src.ss_family == AF_INET
		                    ? ((const struct sockaddr_in *)&hs->proxy.src)->sin_port
		                    : ((const struct sockaddr_in6 *)&hs->proxy.src)->sin6_port;
		if (s->peer.ss_family == AF_INET)
			((struct sockaddr_in *)&s->peer)->sin_port = port;
		else
			((struct sockaddr_in6 *)&s->peer)->sin6_port = port;
	} else {
		s->peer = hs->proxy.src;
	}
	session_counted(s);
	if (!worker_client_allowed(wk, &s->peer)) {
		session_finalize(s);
		return;
	}
	if (!auth_conn_open(wk->auth, &s->peer, wk->cfg.max_unauth)) {
		session_log_refusal(wk, &s->peer, NULL, SESSION_REFUSED_UNAUTH_CAP, NULL, s->start_ms);
		session_finalize(s);
		return;
	}
	s->unauth = true;
	s->phase = PH_GREETING;
	s->on_client = on_greeting;
	on_greeting(s);
}

/* ---- greeting ----------------------------------------------------------- */

static void on_greeting(struct session *s)
{
	struct handshake *hs = s->hs;
	size_t used;
	if (!handshake_read(s))
		return;
	int rc = socks5_greeting_feed(&hs->greeting, hs->in, hs->len, &used);
	if (!fed(s, rc, used))
		return;
	if (rc == SOCKS5_ERROR && hs->greeting.error == SOCKS5_GREETING_BAD_VERSION) {
		log_debug("session %llu: not a SOCKS5 greeting", (unsigned long long)s->id);
		session_finalize(s);
		return;
	}
	uint8_t method = rc != SOCKS5_DONE
	                     ? SOCKS5_METHOD_NO_ACCEPTABLE
	                     : socks5_choose_method(&hs->greeting,
	                                            s->wk->gss && s->wk->cfg.gssapi_keytab[0],
	                                            shm_user_count(s->wk->seg) > 0,
	                                            s->wk->cfg.anonymous,
	                                            socks5_is_loopback((struct sockaddr *)&s->peer));
	uint8_t msg[2] = {SOCKS5_VERSION, method};
	if (method == SOCKS5_METHOD_NO_ACCEPTABLE) {
		shm_count(s->wk->slot, M_NO_METHOD, 1);
		session_log_refusal(s->wk, &s->peer, NULL, SESSION_REFUSED_NO_METHOD, NULL, s->start_ms);
		session_refuse(s, msg, 2);
		return;
	}
	if (session_send(s, msg, 2) < 0) {
		session_finalize(s);
		return;
	}
	s->method = method;
	if (method == SOCKS5_METHOD_GSSAPI) {
		gss_begin(s);
		return;
	}
	if (method == SOCKS5_METHOD_USERPASS) {
		socks5_auth_init(&hs->auth);
		s->phase = PH_AUTH;
		s->on_client = on_auth;
	} else {
		(void)session_set_text(&s->user, "anonymous", 9);
		session_authenticated(s);
		s->phase = PH_REQUEST;
		s->on_client = on_request;
	}
	s->on_client(s);
}

/* ---- login -------------------------------------------------------------- */

/* The lines a guesser makes: one a second per worker; the rest are
 * counted and said with the last one's user and address when the second
 * is over (the auth_failures metric counts every one). */
void handshake_say_failures(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct worker *wk = t->data;
	if (wk->auth_fail_unsaid)
		log_info("authentication failed %u more time(s) in the last second, the last for %s",
		         wk->auth_fail_unsaid, wk->auth_fail_last);
	wk->auth_fail_unsaid = 0;
	wk->auth_fail_said_at = wk->loop.now;
}

static void say_failure(struct session *s)
{
	struct worker *wk = s->wk;
	char name[SESSION_USER_TEXT_MAX], addr[64];
	uint16_t port;
	session_user_text(s, name);
	session_addr_text(&s->peer, addr, sizeof addr, &port);
	if (wk->auth_fail_said_at + 1000 <= wk->loop.now && !wk->auth_fail_unsaid) {
		log_info("authentication failed for user '%s' from %s", name, addr);
		wk->auth_fail_said_at = wk->loop.now;
		return;
	}
	snprintf(wk->auth_fail_last, sizeof wk->auth_fail_last, "user '%s' from %s", name, addr);
	if (wk->auth_fail_unsaid++ == 0)
		loop_timer_start_at(&wk->misc_tl, &wk->auth_fail_timer, wk->auth_fail_said_at + 1000);
}

static void auth_done(void *arg, bool ok)
{
	struct session *s = arg;
	struct shm_user u;
	s->auth_job = NULL;
	int slot = ok ? shm_user_get(s->wk->seg, s->user, &u) : -1;
	/* A wrong password, or the user deleted or given a new password while
	 * the old one was being checked. */
	if (slot < 0 || u.id != s->user_id || u.cred_gen != s->user_gen) {
		say_failure(s);
		refuse_login(s, true);
		return;
	}
	session_authenticated(s);
	s->user_slot = slot;
	__atomic_fetch_add(&s->wk->slot->user_conns[slot], 1, __ATOMIC_RELAXED);
	static const uint8_t yes[2] = {SOCKS5_AUTH_VERSION, SOCKS5_AUTH_SUCCESS};
	if (session_send(s, yes, sizeof yes) < 0) {
		session_finalize(s);
		return;
	}
	s->phase = PH_REQUEST;
	s->on_client = on_request;
	on_request(s);
}

static void start_auth(struct session *s)
{
	struct handshake *hs = s->hs;
	if (session_set_text(&s->user, hs->auth.user, strlen(hs->auth.user)) < 0) {
		session_finalize(s);
		return;
	}
	struct shm_user u;
	int slot = shm_user_get(s->wk->seg, hs->auth.user, &u);
	s->phase = PH_AUTH_WAIT;
	s->on_client = handshake_read_early;
	/* What the check is against: auth_done compares it with the user then. */
	s->user_id = slot >= 0 ? u.id : 0;
	s->user_gen = slot >= 0 ? u.cred_gen : 0;
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
			log_warn("no memory for a password check: closing the login");
			s->wk->last_auth_busy_warn = s->wk->loop.now;
		}
		session_finalize(s);
		return;
	}
	if (r != AUTH_PENDING)
		auth_done(s, r == AUTH_OK);
}

static void on_auth(struct session *s)
{
	struct handshake *hs = s->hs;
	size_t used;
	if (!handshake_read(s))
		return;
	int rc = socks5_auth_feed(&hs->auth, hs->in, hs->len, &used);
	if (!fed(s, rc, used))
		return;
	if (rc == SOCKS5_ERROR)
		refuse_login(s, false);
	else if (s->c_eof && hs->len == 0)
		session_finalize(s); /* gone, no request to serve: nothing to check */
	else
		start_auth(s);
}

/* ---- request ------------------------------------------------------------ */

size_t handshake_literal_addr(const struct socks5_request *r, struct sockaddr_storage *ss)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	memset(ss, 0, sizeof *ss);
	if (r->atyp == SOCKS5_ATYP_IPV4) {
		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, r->addr, 4);
	} else if (r->atyp == SOCKS5_ATYP_IPV6) {
		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, r->addr, 16);
	} else if (inet_pton(AF_INET, r->host, &s4->sin_addr) == 1) {
		/* A literal address sent as a name is used as it is. */
		s4->sin_family = AF_INET;
	} else if (inet_pton(AF_INET6, r->host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
	} else {
		return 0;
	}
	if (ss->ss_family == AF_INET)
		s4->sin_port = htons(r->port);
	else
		s6->sin6_port = htons(r->port);
	return 1;
}

static void start_request(struct session *s)
{
	struct handshake *hs = s->hs;
	struct socks5_request *r = &hs->req;
	/* From here on the resolver's and the connect timeouts bound the wait,
	 * and every outcome is answered with a reply. */
	loop_timer_stop(&s->timer);
	session_request_begin(s);
	s->dport = r->port;
	s->cmd = r->cmd;
	char dest[SESSION_DEST_MAX + 1];
	if (r->atyp == SOCKS5_ATYP_DOMAIN)
		log_escape(dest, sizeof dest, (const uint8_t *)r->host, strlen(r->host));
	else
		inet_ntop(r->atyp == SOCKS5_ATYP_IPV4 ? AF_INET : AF_INET6, r->addr, dest,
		          sizeof dest);
	(void)session_set_text(&s->dest, dest, strlen(dest)); /* no memory: logged as - */
	if (!session_limits_admit(s))
		return;
	if (r->cmd == SOCKS5_CMD_BIND) {
		bind_begin(s);
		return;
	}
	if (r->cmd == SOCKS5_CMD_UDP_ASSOCIATE) {
		/* Datagrams would need RFC 1961's encapsulation too: not served
		 * under GSS-API protection. */
		if (gss_protected(s)) {
			session_fail(s, SOCKS5_REP_CMD_NOT_SUPPORTED);
			return;
		}
		udp_begin(s);
		return;
	}
	if (r->cmd != SOCKS5_CMD_CONNECT) {
		session_fail(s, SOCKS5_REP_CMD_NOT_SUPPORTED);
		return;
	}
	s->best_fail = SOCKS5_REP_GENERAL_FAILURE;
	hs->next_addr = 0;
	hs->naddrs = handshake_literal_addr(r, &hs->addrs[0]);
	if (hs->naddrs)
		connect_begin(s);
	else if (strlen(r->host) != r->alen)
		session_fail(s, SOCKS5_REP_HOST_UNREACH); /* a NUL inside the name */
	else if (connect_name_allowed(s))
		connect_resolve(s);
}

static void request_parsed(struct session *s, int rc)
{
	if (rc == SOCKS5_ERROR) {
		session_request_begin(s);
		session_fail(s, s->hs->req.rep);
	} else {
		start_request(s);
	}
}

static void on_request(struct session *s)
{
	struct handshake *hs = s->hs;
	size_t used;
	if (!handshake_read(s))
		return;
	int rc = socks5_request_feed(&hs->req, hs->in, hs->len, &used);
	if (!fed(s, rc, used))
		return;
	request_parsed(s, rc);
}

void handshake_request_begin(struct session *s)
{
	s->phase = PH_REQUEST;
	s->on_client = on_request;
	on_request(s);
}

int handshake_feed_request(struct session *s, const uint8_t *p, size_t n, size_t *pos)
{
	size_t used;
	int rc = socks5_request_feed(&s->hs->req, p + *pos, n - *pos, &used);
	*pos += used;
	if (rc != SOCKS5_MORE)
		request_parsed(s, rc);
	return rc;
}
