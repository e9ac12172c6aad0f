#include "admin.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../admin/pipo.h"
#include "../shared/guard.h"
#include "../shared/log.h"
#include "../shared/shm.h"
#include "../shared/auth.h"
#include "admin_cmds.h"
#include "admin_endpoint.h"
#include "admin_int.h"
#include "master.h"

static void sess_close(struct admin_sess *s);

/* ---- output -------------------------------------------------------------- */

void admin_flush(struct admin_sess *s)
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
		/* Progress: a client that reads is not idle. */
		loop_timer_start(s->a->loop, &s->a->idle_tl, &s->idle);
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

void admin_respond(struct admin_sess *s, uint8_t type, uint8_t cmd, uint8_t status,
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
	loop_timer_stop(&s->login);
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
	if (!s->authed)
		a->npending[s->sctp]--;
	__atomic_store_n(&a->seg->admin_sessions, a->nsessions, __ATOMIC_RELAXED);
	explicit_bzero(&s->auth, sizeof s->auth);
	pipo1_reader_wipe(&s->rd1);
	loop_defer_free(a->loop, &s->deferred, sess_free, s);
}

static void on_idle(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct admin_sess *s = t->data;
	log_info("admin session closed: silent for %d s", ADMIN_IDLE_MS / 1000);
	sess_close(s);
}

static void say_rest(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct admin *a = t->data;
	if (a->unsaid)
		log_warn("admin: %u more connection(s) refused or closed before login in the last "
		         "second(s)", a->unsaid);
	a->unsaid = 0;
}

/* A refusal, said at most once a second: a flood must not flood the log. */
static void say_refused(struct admin *a, const char *what)
{
	if (a->said_at && a->loop->now - a->said_at < ADMIN_SAY_EVERY_MS) {
		if (a->unsaid++ == 0)
			loop_timer_start_at(&a->misc_tl, &a->say_rest, a->said_at + ADMIN_SAY_EVERY_MS);
		return;
	}
	loop_timer_stop(&a->say_rest);
	if (a->unsaid)
		log_warn("admin: %s (and %u more in the last second(s))", what, a->unsaid);
	else
		log_warn("admin: %s", what);
	a->unsaid = 0;
	a->said_at = a->loop->now;
}

static void on_login_deadline(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct admin_sess *s = t->data;
	say_refused(s->a, "a connection did not log in within 5 s: closed");
	sess_close(s);
}

/* The session's user name for a log line: escaped, as every name is, so
 * that a control byte cannot forge or hide a line. */
struct shown_name {
	char s[PIPO_MAX_NAME * 4 + 1];
};

static const char *shown(const struct admin_sess *s, struct shown_name *out)
{
	log_escape(out->s, sizeof out->s, (const uint8_t *)s->auth.user, s->auth.ulen);
	return out->s;
}

static bool still_admin(const struct admin_sess *s, bool *only_password)
{
	return admin_rights_hold(s->a->seg, &s->rights, only_password);
}

/* After a change of the users (by session `by`): close every admin session
 * whose user was deleted, demoted or given a new password.  The session
 * that changed its own password keeps its rights. */
static void revoke_stale(struct admin *a, struct admin_sess *by)
{
	struct admin_sess *next;
	for (struct admin_sess *t = a->sessions; t; t = next) {
		next = t->next;
		bool only_password;
		if (!t->authed || still_admin(t, &only_password))
			continue;
		if (t == by && only_password) {
			shm_lock(&a->seg->users_lock);
			t->rights.gen = a->seg->users[t->rights.slot].cred_gen;
			shm_unlock(&a->seg->users_lock);
			continue;
		}
		struct shown_name n;
		log_info("admin session of '%s' closed: the user was deleted, demoted or given a new "
		         "password", shown(t, &n));
		if (t == by)
			t->closing = true; /* after its answer */
		else
			sess_close(t);
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
			admin_respond(s, PIPO_QUERY, s->pend_cmd, PIPO_E_BUSY, NULL);
			admin_flush(s);
			if (s->fd >= 0)
				admin_process(s);
			return;
		}
		admin_finish_pending(s);
		return;
	}
	/* A failed login: answered late, then closed. */
	uint8_t msg[2] = {s->v1 ? PIPO_VERSION_ORIGINAL : PIPO_VERSION, PIPO_AUTH_FAILED};
	queue(s, msg, 2);
	s->closing = true;
	admin_flush(s);
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
	struct admin_ctx x = {.m = s->a->m, .seg = s->a->seg, .admin_sessions = s->a->nsessions};
	uint8_t st;
	if (!still_admin(s, NULL)) {
		struct shown_name n;
		log_info("admin session of '%s' closed: the user was deleted, demoted or given a new "
		         "password", shown(s, &n));
		sess_close(s);
		return true;
	}
	if (f->ver != PIPO_VERSION) {
		st = PIPO_E_VERSION;
	} else if (rd->too_big) {
		st = PIPO_E_TOO_BIG;
	} else if ((f->type == PIPO_QUERY &&
	            (f->cmd == PIPO_Q_SESSIONS || f->cmd == PIPO_Q_SESSIONS_EX)) ||
	           (f->type == PIPO_MODIFY && f->cmd == PIPO_M_CLOSE_SESSION)) {
		s->pend_cmd = f->cmd;
		st = f->type == PIPO_QUERY ? admin_start_list(s, &c) : admin_start_close(s, &c);
		if (st == PIPO_OK) {
			if (s->pend_waiting == 0) {
				admin_finish_pending(s);
				return true;
			}
			loop_timer_start_at(&s->a->misc_tl, &s->delay, s->a->loop->now + ADMIN_WORKER_WAIT_MS);
			return false;
		}
	} else if (f->type == PIPO_QUERY) {
		if (f->cmd == PIPO_Q_USERS || f->cmd == PIPO_Q_USER_STATS || f->cmd == PIPO_Q_RULES) {
			/* Up to 1024 users of 255-byte names, or every rule: the large
			 * answers. */
			big.cap = f->cmd == PIPO_Q_RULES ? PIPO_MAX_RESPONSE
			                                 : 4 + SHM_MAX_USERS * (2 + PIPO_MAX_NAME + 1 + 20);
			big.p = malloc(big.cap);
			if (!big.p) {
				admin_respond(s, f->type, f->cmd, PIPO_E_SERVER, NULL);
				return true;
			}
			st = admin_cmd_query(&x, f->cmd, &c, &big);
			admin_respond(s, f->type, f->cmd, big.overflow ? PIPO_E_SERVER : st, &big);
			free(big.p);
			return true;
		}
		st = admin_cmd_query(&x, f->cmd, &c, &b);
	} else if (f->type == PIPO_MODIFY) {
		st = admin_cmd_modify(&x, f->cmd, &c, &b);
		if (st == PIPO_OK && (f->cmd == PIPO_M_ADD_USER || f->cmd == PIPO_M_DEL_USER ||
		                      f->cmd == PIPO_M_PASSWORD || f->cmd == PIPO_M_RELOAD)) {
			admin_respond(s, f->type, f->cmd, b.overflow ? PIPO_E_SERVER : st, &b);
			revoke_stale(s->a, s);
			return true;
		}
	} else {
		st = PIPO_E_UNKNOWN;
	}
	if (b.overflow)
		st = PIPO_E_SERVER;
	admin_respond(s, f->type, f->cmd, st, &b);
	return true;
}

/* Handle one version-1 request: the same rights check before it as a
 * version-2 frame, then one message with the whole answer. */
static void handle_v1(struct admin_sess *s)
{
	const struct pipo1_request *r = &s->rd1.req;
	if (!still_admin(s, NULL)) {
		struct shown_name n;
		log_info("admin session of '%s' closed: the user was deleted, demoted or given a new "
		         "password", shown(s, &n));
		sess_close(s);
		return;
	}
	struct admin_ctx x = {.m = s->a->m, .seg = s->a->seg, .admin_sessions = s->a->nsessions};
	/* The largest answer: 255 names of 255 bytes. */
	struct pipo_buf b = {.cap = 2 + 1 + 255 * (1 + PIPO1_MAX_NAME)};
	b.p = malloc(b.cap);
	if (!b.p) {
		sess_close(s);
		return;
	}
	uint8_t st = admin_cmd_v1(&x, r, &b);
	pipo1_reader_wipe(&s->rd1);
	if (b.overflow) {
		/* The answer could not be built: the stream cannot go on. */
		log_warn("admin: a version-1 answer could not be built: session closed");
		free(b.p);
		sess_close(s);
		return;
	}
	queue(s, b.p, b.len);
	free(b.p);
	if (r->type == PIPO1_MODIFY && st == PIPO1_OK &&
	    (r->cmd == PIPO1_M_ADD_USER || r->cmd == PIPO1_M_DEL_USER))
		revoke_stale(s->a, s);
}

static void auth_done(void *arg, bool ok)
{
	struct admin_sess *s = arg;
	s->job = NULL;
	/* The record checked must still be there, unchanged, with the flag. */
	bool admin = ok && still_admin(s, NULL);
	if (!admin) {
		struct shown_name n;
		char line[sizeof n.s + 64];
		snprintf(line, sizeof line, "login failed for '%s'", shown(s, &n));
		say_refused(s->a, line);
		loop_timer_start_at(&s->a->misc_tl, &s->delay, s->a->loop->now + ADMIN_FAIL_DELAY_MS);
		return;
	}
	if (s->a->nsessions - s->a->npending[0] - s->a->npending[1] >= ADMIN_MAX_SESSIONS) {
		say_refused(s->a, "16 sessions logged in already: closing a new one");
		sess_close(s);
		return;
	}
	struct shown_name n;
	log_info("admin '%s' logged in", shown(s, &n));
	s->authed = true;
	s->a->npending[s->sctp]--;
	loop_timer_stop(&s->login);
	uint8_t msg[2] = {s->v1 ? PIPO_VERSION_ORIGINAL : PIPO_VERSION, PIPO_AUTH_OK};
	queue(s, msg, 2);
	admin_flush(s);
	if (s->fd >= 0)
		admin_process(s);
}

/* Parse and answer what is buffered, in order, until a request waits. */
void admin_process(struct admin_sess *s)
{
	/* Answers stop at the bound of unsent output as reading does: what is
	 * buffered waits for the client to read (on_sess resumes). */
	while (s->fd >= 0 && s->in_pos < s->in_len && s->pend == PEND_NONE && !s->closing &&
	       !s->job && !loop_timer_active(&s->delay) && s->out_bytes < ADMIN_OUT_MAX) {
		size_t used;
		if (!s->authed) {
			/* The first byte of AUTH picks the protocol version (state 0:
			 * nothing of AUTH read yet). */
			if (s->auth.state == 0 && !s->v1 && s->in[s->in_pos] == PIPO_VERSION_ORIGINAL) {
				s->v1 = true;
				rfc1929_init(&s->auth, PIPO_VERSION_ORIGINAL, true);
			}
			int rc = pipo_auth_feed(&s->auth, s->in + s->in_pos, s->in_len - s->in_pos, &used);
			s->in_pos += used;
			if (rc == PIPO_NEED_MORE)
				break;
			/* A NUL would cut the name or the password short below (C
			 * strings): refused like a wrong password, as SOCKS logins are. */
			if (rc == PIPO_DONE && (strlen(s->auth.user) != s->auth.ulen ||
			                        strlen(s->auth.pass) != s->auth.plen)) {
				explicit_bzero(s->auth.pass, sizeof s->auth.pass);
				say_refused(s->a, "login failed: a NUL byte in the name or the password");
				rc = PIPO_ERROR;
			}
			if (rc == PIPO_ERROR) {
				uint8_t want = s->v1 ? PIPO_VERSION_ORIGINAL : PIPO_VERSION;
				uint8_t msg[2] = {want, s->auth.ver == want ? PIPO_AUTH_FAILED
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
			s->rights.slot = slot;
			s->rights.id = slot >= 0 ? u.id : 0;
			s->rights.gen = slot >= 0 ? u.cred_gen : 0;
			/* Over SCTP the source is known: its checks queue fairly
			 * against other sources' and its failures back off. */
			enum auth_result r =
			    s->sctp ? auth_check_from(s->a->auth, &s->peer, s->auth.user, slot,
			                              slot >= 0 ? &u : NULL, s->auth.pass, auth_done, s, &s->job)
			            : auth_check(s->a->auth, slot, slot >= 0 ? &u : NULL, s->auth.pass,
			                         auth_done, s, &s->job);
			explicit_bzero(s->auth.pass, sizeof s->auth.pass);
			explicit_bzero(u.hash, sizeof u.hash);
			if (r == AUTH_PENDING)
				break;
			auth_done(s, r == AUTH_OK);
			continue;
		}
		if (s->v1) {
			int rc = pipo1_reader_feed(&s->rd1, s->in + s->in_pos, s->in_len - s->in_pos, &used);
			s->in_pos += used;
			if (rc == PIPO1_ERROR) {
				/* No length field: an unknown request cannot be skipped. */
				struct shown_name n;
				log_warn("admin session of '%s' closed: unknown version-1 request type 0x%02x "
				         "command 0x%02x", shown(s, &n), s->rd1.req.type, s->rd1.req.cmd);
				/* The answers before it leave first, then the close. */
				s->in_pos = s->in_len;
				s->closing = true;
				break;
			}
			if (rc != PIPO1_DONE)
				break;
			handle_v1(s);
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
	/* The client is done sending and every whole request it sent is
	 * answered (what is left is not a whole request and cannot become
	 * one): close once the answers are out. */
	if (s->peer_done && s->pend == PEND_NONE && !s->job && !loop_timer_active(&s->delay) &&
	    s->out_bytes < ADMIN_OUT_MAX)
		s->closing = true;
	if (s->fd >= 0)
		admin_flush(s);
}

static void on_sess(struct loop *l, struct loop_watch *w, uint32_t events)
{
	struct admin_sess *s = w->data;
	if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
		admin_flush(s);
		if (s->fd < 0)
			return;
		if (s->in_pos < s->in_len)
			admin_process(s); /* requests held back by the output bound */
		if (s->fd < 0)
			return;
	}
	if (!(events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
		return;
	/* Back-pressure: a client that does not read its answers is not read
	 * (nor kept from idling out by bytes it cannot send). */
	while (s->fd >= 0 && s->out_bytes < ADMIN_OUT_MAX && s->in_len < sizeof s->in) {
		if (s->pend != PEND_NONE || s->job || loop_timer_active(&s->delay) || s->closing ||
		    s->peer_done)
			break;
		ssize_t n = recv(s->fd, s->in + s->in_len, sizeof s->in - s->in_len, MSG_DONTWAIT);
		if (n < 0 && errno != EAGAIN && errno != EINTR) {
			sess_close(s);
			return;
		}
		if (n == 0) {
			/* A half-close after pipelined requests: they are answered. */
			s->peer_done = true;
			admin_process(s);
			return;
		}
		if (n < 0) {
			if (errno == EAGAIN)
				break;
			continue;
		}
		loop_timer_start(l, &s->a->idle_tl, &s->idle);
		s->in_len += (size_t)n;
		admin_process(s);
	}
}

/* Make room for a new connection: close the oldest one that has not logged
 * in and is not having its password checked.  New sessions are at the
 * head of the list. */
static bool evict_pending(struct admin *a, bool sctp)
{
	struct admin_sess *oldest = NULL;
	for (struct admin_sess *s = a->sessions; s; s = s->next)
		if (!s->authed && !s->job && s->sctp == sctp)
			oldest = s;
	if (!oldest)
		return false;
	say_refused(a, "8 connections have not logged in: closing the oldest");
	sess_close(oldest);
	return true;
}

/* SCTP connections from this source (an IPv4 address, an IPv6 /64, as
 * the login back-off counts them) that have not logged in. */
static unsigned pending_from(const struct admin *a, const struct sockaddr_storage *peer)
{
	struct guard_key k, x;
	guard_source_key(peer, &k);
	unsigned n = 0;
	for (const struct admin_sess *s = a->sessions; s; s = s->next) {
		if (!s->sctp || s->authed)
			continue;
		guard_source_key(&s->peer, &x);
		n += memcmp(&k, &x, sizeof k) == 0;
	}
	return n;
}

static void on_listen(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)events;
	struct admin *a = w->data;
	/* Each endpoint has its own places for connections that have not
	 * logged in, so a flood over SCTP never reaches the unix socket; over
	 * SCTP, one address holds at most two of them. */
	bool sctp = w == &a->sctp_w;
	for (int i = 0; i < 16; i++) {
		struct sockaddr_storage peer;
		socklen_t plen = sizeof peer;
		int fd = accept4(w->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		if (sctp && pending_from(a, &peer) >= ADMIN_MAX_PENDING_PER_SOURCE) {
			say_refused(a, "an SCTP address has 2 connections that have not logged in: "
			               "refusing another");
			close(fd);
			continue;
		}
		if (a->npending[sctp] >= ADMIN_MAX_PENDING && !evict_pending(a, sctp)) {
			say_refused(a, "8 connections are checking a password: refusing another");
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
		s->sctp = sctp;
		s->peer = peer;
		s->out_tail = &s->out;
		s->rights.slot = -1;
		pipo_auth_init(&s->auth);
		pipo_reader_init(&s->rd, s->payload, PIPO_MAX_REQUEST);
		pipo1_reader_init(&s->rd1);
		loop_timer_init(&s->idle, on_idle, s);
		loop_timer_init(&s->login, on_login_deadline, s);
		loop_timer_init(&s->delay, on_delay, s);
		if (loop_watch_add(l, &s->w, fd, EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, on_sess, s) < 0) {
			close(fd);
			free(s);
			continue;
		}
		s->next = a->sessions;
		a->sessions = s;
		a->nsessions++;
		a->npending[sctp]++;
		__atomic_store_n(&a->seg->admin_sessions, a->nsessions, __ATOMIC_RELAXED);
		loop_timer_start(l, &a->idle_tl, &s->idle);
		loop_timer_start(l, &a->login_tl, &s->login);
	}
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
	loop_tlist_init(l, &a->login_tl, ADMIN_LOGIN_MS);
	loop_tlist_init(l, &a->misc_tl, 0);
	loop_timer_init(&a->say_rest, say_rest, a);
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
		admin_endpoint_default_path(path, sizeof path);
	rc = a->unix_fd = admin_endpoint_unix(path);
	if (rc >= 0)
		snprintf(a->unix_path, sizeof a->unix_path, "%s", path);
	if (rc == -EEXIST) {
		log_error("admin socket %s: the path exists and is not a socket; not replacing it", path);
		admin_close(a);
		return rc;
	}
	if (rc == -EADDRINUSE)
		log_error("admin socket %s is in use by another server: no unix-socket administration",
		          path);
	else if (rc < 0)
		log_error("cannot open the admin socket %s: %s", path, strerror(-rc));
	else if (loop_watch_add(l, &a->unix_w, a->unix_fd, EPOLLIN, on_listen, a) == 0)
		log_info("admin socket %s", path);
	rc = a->sctp_fd = admin_endpoint_sctp(s->admin_addr, s->admin_port);
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
			/* Unlinked before the memory goes: the lists are still
			 * walked below (loop_timer_stop of say_rest). */
			loop_timer_stop(&s->idle);
			loop_timer_stop(&s->login);
			loop_timer_stop(&s->delay);
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
	loop_timer_stop(&a->say_rest);
	loop_tlist_detach(a->loop, &a->idle_tl);
	loop_tlist_detach(a->loop, &a->login_tl);
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
