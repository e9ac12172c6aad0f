/*
 * gssapi: RFC 1961 for socks5d — see gssapi.h.  The session's states:
 *
 *   on_token     read 01 01 LEN TOKEN; hand it to the helper thread
 *   (waiting)    the thread runs gss_accept_sec_context
 *   token_done   send the answer token; CONTINUE: on_token again;
 *                COMPLETE: the identity is checked, on_protection
 *   on_protection read 01 02 LEN TOKEN (the level, wrapped, or raw in
 *                NEC mode); grant it when gssapi-protection has it, else
 *                01 FF; then the request, encapsulated at levels 1 and 2
 *   gss_relay    after the success reply: each side's bytes, unwrapped
 *                from and wrapped into 01 03 LEN TOKEN messages
 *
 * A failure before the level is granted answers 01 FF and closes.  A bad
 * token after it ends the session (nothing can be answered that the
 * client could trust).  Loop thread only, but for the helper thread's
 * part, marked below.
 */
#include "gssapi.h"

#include <errno.h>
#include <gssapi/gssapi.h>
#include <gssapi/gssapi_ext.h>
#include <gssapi/gssapi_krb5.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "../shared/log.h"
#include "rfc1961.h"
#include "session_int.h"
#include "sniff.h"
#include "worker.h"

/* Plaintext read from the target per wrapped message (smaller when the
 * mechanism's limit for a 65,535-byte token is). */
#define GSS_CHUNK 32768
/* Raw bytes read from the client at a time, before they are parsed. */
#define GSS_READ 16384

const char *gss_level_name(uint8_t level)
{
	static const char *const names[] = {"clear", "integrity", "confidentiality"};
	static char other[16]; /* loop thread only */
	if (level < 3)
		return names[level];
	snprintf(other, sizeof other, "level %u", level);
	return other;
}

/* ---- the helper thread ---------------------------------------------------- */

struct gss_job {
	struct gss_job *next;
	struct session *s; /* NULL once the session is gone: the loop frees the rest */
	gss_ctx_id_t ctx;  /* the session's context, the thread's while queued */
	uint8_t *in;
	size_t inlen;
	gss_buffer_desc out; /* the answer token (gss-allocated) */
	OM_uint32 major;
	OM_uint32 flags;
	bool failed;
	char principal[256]; /* the client, as the mechanism names it */
	char user[SHM_USER_NAME_MAX + 1]; /* its local name */
	char why[640];       /* what failed, for the log */
};

struct gss_worker {
	struct loop *loop;
	struct loop_watch w;
	int efd;
	pthread_t thread;
	bool started, stop;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	struct gss_job *queue, **qtail, *done;
	unsigned pending;
	/* Under mu: what the next context establishment accepts. */
	char keytab[sizeof ((struct settings *)0)->gssapi_keytab];
	char service[sizeof ((struct settings *)0)->gssapi_service];
	/* The thread's own: its credentials and what they were acquired for. */
	gss_cred_id_t cred;
	char cred_keytab[sizeof ((struct settings *)0)->gssapi_keytab];
};

/* n bytes of the mechanism's text into out, its control and non-ASCII
 * bytes as \xNN: it quotes names from the client's token (the ticket's
 * server name travels in the clear), and those go into log lines. */
static size_t text_escape(char *out, size_t len, const char *in, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (size_t i = 0; i < n && o + 5 < len; i++) {
		uint8_t c = (uint8_t)in[i];
		if (c >= 0x20 && c < 0x7f) {
			out[o++] = (char)c;
		} else {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return o;
}

/* The mechanism's words for a status (major and minor), into out. */
static void status_text(OM_uint32 major, OM_uint32 minor, char *out, size_t len)
{
	size_t used = 0;
	out[0] = '\0';
	for (int pass = 0; pass < 2; pass++) {
		OM_uint32 code = pass ? minor : major, ctx = 0, min2;
		int type = pass ? GSS_C_MECH_CODE : GSS_C_GSS_CODE;
		if (pass && !minor)
			break;
		do {
			gss_buffer_desc b = GSS_C_EMPTY_BUFFER;
			if (GSS_ERROR(gss_display_status(&min2, code, type, GSS_C_NO_OID, &ctx, &b)))
				break;
			if (used && len - used > 3) {
				memcpy(out + used, ": ", 3);
				used += 2;
			}
			used += text_escape(out + used, len - used, b.value, b.length);
			gss_release_buffer(&min2, &b);
		} while (ctx);
	}
}

/* A name as text (escaped for logs), into out. */
static void name_text(gss_name_t name, char *out, size_t len)
{
	OM_uint32 minor;
	gss_buffer_desc b = GSS_C_EMPTY_BUFFER;
	out[0] = '\0';
	if (GSS_ERROR(gss_display_name(&minor, name, &b, NULL)))
		return;
	log_escape(out, len, b.value, b.length);
	gss_release_buffer(&minor, &b);
}

/* Is the principal the context was accepted for one of the service?
 * "rcmd" takes rcmd/ANY@REALM; "rcmd/host" only that one. */
static bool service_matches(const char *principal, const char *service)
{
	size_t n = strcspn(principal, "@");
	if (strchr(service, '/'))
		return strlen(service) == n && !strncmp(principal, service, n);
	size_t sl = strlen(service);
	return n > sl && principal[sl] == '/' && !strncmp(principal, service, sl);
}

/* Thread: credentials for the keytab, acquired again when it changed. */
static bool ensure_cred(struct gss_worker *g, const char *keytab, char *why, size_t len)
{
	OM_uint32 minor;
	if (g->cred != GSS_C_NO_CREDENTIAL && !strcmp(g->cred_keytab, keytab))
		return true;
	if (g->cred != GSS_C_NO_CREDENTIAL)
		gss_release_cred(&minor, &g->cred);
	gss_key_value_element_desc el = {"keytab", keytab};
	gss_key_value_set_desc store = {1, &el};
	OM_uint32 major = gss_acquire_cred_from(&minor, GSS_C_NO_NAME, GSS_C_INDEFINITE,
	                                        GSS_C_NO_OID_SET, GSS_C_ACCEPT, &store, &g->cred,
	                                        NULL, NULL);
	if (GSS_ERROR(major)) {
		char text[200];
		status_text(major, minor, text, sizeof text);
		snprintf(why, len, "keytab %.300s: %s", keytab, text);
		g->cred = GSS_C_NO_CREDENTIAL;
		return false;
	}
	snprintf(g->cred_keytab, sizeof g->cred_keytab, "%s", keytab);
	return true;
}

/* Thread: one step of context establishment, and on completion who the
 * client is. */
static void run_job(struct gss_worker *g, struct gss_job *j, const char *keytab,
                    const char *service)
{
	OM_uint32 minor, min2;
	if (!ensure_cred(g, keytab, j->why, sizeof j->why)) {
		j->failed = true;
		return;
	}
	gss_buffer_desc in = {j->inlen, j->in};
	gss_name_t src = GSS_C_NO_NAME;
	j->major = gss_accept_sec_context(&minor, &j->ctx, g->cred, &in, GSS_C_NO_CHANNEL_BINDINGS,
	                                  &src, NULL, &j->out, &j->flags, NULL, NULL);
	if (GSS_ERROR(j->major)) {
		status_text(j->major, minor, j->why, sizeof j->why);
		j->failed = true;
		goto out;
	}
	if (j->major & GSS_S_CONTINUE_NEEDED)
		goto out;
	name_text(src, j->principal, sizeof j->principal);
	gss_name_t target = GSS_C_NO_NAME;
	char acceptor[256] = "";
	if (!GSS_ERROR(gss_inquire_context(&min2, j->ctx, NULL, &target, NULL, NULL, NULL, NULL,
	                                   NULL))) {
		name_text(target, acceptor, sizeof acceptor);
		gss_release_name(&min2, &target);
	}
	if (!service_matches(acceptor, service)) {
		snprintf(j->why, sizeof j->why, "the ticket is for %.255s, not the service %.255s",
		         acceptor[0] ? acceptor : "an unknown principal", service);
		j->failed = true;
		goto out;
	}
	/* The local name: krb5.conf's auth_to_local rules (by default, a
	 * one-part principal of the default realm gives its name; any other
	 * realm gives none). */
	gss_buffer_desc local = GSS_C_EMPTY_BUFFER;
	if (GSS_ERROR(gss_localname(&min2, src, GSS_C_NO_OID, &local))) {
		snprintf(j->why, sizeof j->why, "%.255s has no local name (auth_to_local)", j->principal);
		j->failed = true;
		goto out;
	}
	if (local.length == 0 || local.length > SHM_USER_NAME_MAX ||
	    memchr(local.value, '\0', local.length)) {
		snprintf(j->why, sizeof j->why, "%.255s maps to an unusable local name", j->principal);
		j->failed = true;
	} else {
		memcpy(j->user, local.value, local.length);
		j->user[local.length] = '\0';
	}
	gss_release_buffer(&min2, &local);
out:
	if (src != GSS_C_NO_NAME)
		gss_release_name(&min2, &src);
}

static void *helper(void *arg)
{
	struct gss_worker *g = arg;
	char keytab[sizeof g->keytab], service[sizeof g->service];
	pthread_mutex_lock(&g->mu);
	for (;;) {
		while (!g->queue && !g->stop)
			pthread_cond_wait(&g->cv, &g->mu);
		if (g->stop)
			break;
		struct gss_job *j = g->queue;
		g->queue = j->next;
		if (!g->queue)
			g->qtail = &g->queue;
		memcpy(keytab, g->keytab, sizeof keytab);
		memcpy(service, g->service, sizeof service);
		pthread_mutex_unlock(&g->mu);
		run_job(g, j, keytab, service);
		pthread_mutex_lock(&g->mu);
		j->next = g->done;
		g->done = j;
		uint64_t one = 1;
		ssize_t w = write(g->efd, &one, sizeof one);
		(void)w;
	}
	pthread_mutex_unlock(&g->mu);
	OM_uint32 minor;
	if (g->cred != GSS_C_NO_CREDENTIAL)
		gss_release_cred(&minor, &g->cred);
	return NULL;
}

static void free_job(struct gss_job *j)
{
	OM_uint32 minor;
	free(j->in);
	gss_release_buffer(&minor, &j->out);
	if (j->ctx != GSS_C_NO_CONTEXT)
		gss_delete_sec_context(&minor, &j->ctx, GSS_C_NO_BUFFER);
	free(j);
}

static void token_done(struct session *s, struct gss_job *j);

static void on_done(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	(void)events;
	struct gss_worker *g = w->data;
	uint64_t n;
	ssize_t r = read(g->efd, &n, sizeof n);
	(void)r;
	pthread_mutex_lock(&g->mu);
	struct gss_job *j = g->done;
	g->done = NULL;
	pthread_mutex_unlock(&g->mu);
	/* Oldest first. */
	struct gss_job *rev = NULL;
	while (j) {
		struct gss_job *next = j->next;
		j->next = rev;
		rev = j;
		j = next;
	}
	for (j = rev; j;) {
		struct gss_job *next = j->next;
		g->pending--;
		if (j->s)
			token_done(j->s, j);
		free_job(j);
		j = next;
	}
}

int gss_worker_new(struct loop *l, struct gss_worker **out)
{
	struct gss_worker *g = calloc(1, sizeof *g);
	if (!g)
		return -ENOMEM;
	g->loop = l;
	g->qtail = &g->queue;
	g->cred = GSS_C_NO_CREDENTIAL;
	pthread_mutex_init(&g->mu, NULL);
	pthread_cond_init(&g->cv, NULL);
	g->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	int rc = g->efd < 0 ? -errno : loop_watch_add(l, &g->w, g->efd, EPOLLIN, on_done, g);
	if (rc == 0) {
		rc = -pthread_create(&g->thread, NULL, helper, g);
		g->started = rc == 0;
	}
	if (rc < 0) {
		gss_worker_free(g);
		return rc;
	}
	*out = g;
	return 0;
}

void gss_worker_free(struct gss_worker *g)
{
	if (!g)
		return;
	if (g->started) {
		pthread_mutex_lock(&g->mu);
		g->stop = true;
		pthread_cond_signal(&g->cv);
		pthread_mutex_unlock(&g->mu);
		pthread_join(g->thread, NULL);
	}
	for (struct gss_job *lists[2] = {g->queue, g->done}, *j; lists[0] || lists[1];) {
		int i = lists[0] ? 0 : 1;
		j = lists[i];
		lists[i] = j->next;
		free_job(j);
	}
	if (loop_watch_active(&g->w))
		loop_watch_del(g->loop, &g->w);
	if (g->efd >= 0)
		close(g->efd);
	pthread_mutex_destroy(&g->mu);
	pthread_cond_destroy(&g->cv);
	free(g);
}

void gss_worker_configure(struct gss_worker *g, const struct settings *cfg)
{
	pthread_mutex_lock(&g->mu);
	memcpy(g->keytab, cfg->gssapi_keytab, sizeof g->keytab);
	memcpy(g->service, cfg->gssapi_service, sizeof g->service);
	pthread_mutex_unlock(&g->mu);
}

int gss_check_keytab(const char *keytab, const char *service, char *err, size_t len)
{
	FILE *f = fopen(keytab, "r");
	if (!f) {
		snprintf(err, len, "gssapi-keytab %s: %s", keytab, strerror(errno));
		return -1;
	}
	fclose(f);
	/* A key of the service: the keytab's principals, through krb5. */
	krb5_context kc;
	if (krb5_init_context(&kc)) {
		snprintf(err, len, "gssapi-keytab %s: Kerberos cannot start (krb5.conf?)", keytab);
		return -1;
	}
	char name[1100];
	snprintf(name, sizeof name, "FILE:%s", keytab);
	krb5_keytab kt;
	krb5_kt_cursor cur;
	krb5_keytab_entry e;
	int found = 0, keys = 0;
	if (!krb5_kt_resolve(kc, name, &kt)) {
		if (!krb5_kt_start_seq_get(kc, kt, &cur)) {
			while (!krb5_kt_next_entry(kc, kt, &e, &cur)) {
				char *p = NULL;
				keys++;
				if (!krb5_unparse_name(kc, e.principal, &p)) {
					found |= service_matches(p, service);
					krb5_free_unparsed_name(kc, p);
				}
				krb5_free_keytab_entry_contents(kc, &e);
			}
			krb5_kt_end_seq_get(kc, kt, &cur);
		}
		krb5_kt_close(kc, kt);
	}
	krb5_free_context(kc);
	if (!keys)
		snprintf(err, len, "gssapi-keytab %s: not a keytab, or it holds no key", keytab);
	else if (!found)
		snprintf(err, len, "gssapi-keytab %s: no key of the service %s (gssapi-service)", keytab,
		         service);
	return keys && found ? 0 : -1;
}

/* ---- the session's GSS-API state ----------------------------------------- */

struct gss_sess {
	gss_ctx_id_t ctx;
	struct gss_job *job; /* the step on the helper thread */
	struct rfc1961_msg msg;
	uint8_t level;
	bool protect; /* level 1 or 2: everything from the request on is encapsulated */
	bool established;
	bool level_granted;
	OM_uint32 flags; /* the context's services (GSS_C_INTEG_FLAG, GSS_C_CONF_FLAG) */
	uint32_t max_plain; /* the most plaintext one token carries */
	char principal[256];
	/* Relay: unwrapped bytes for the target, and the client's raw bytes
	 * not parsed yet. */
	gss_buffer_desc up;
	size_t up_pos;
	uint8_t *rd;
	uint32_t rd_pos, rd_len;
	/* Relay: one wrapped message for the client (header + token). */
	uint8_t hdr[4];
	gss_buffer_desc down;
	size_t down_pos;    /* over hdr and token together */
	size_t down_plain;  /* the plaintext it carries (counted when sent) */
	uint8_t *plain;     /* the target's bytes before wrapping */
};

static void on_token(struct session *s);
static void on_protection(struct session *s);
static void on_request_wrapped(struct session *s);

static void gss_fail(struct session *s, const char *why)
{
	static const uint8_t fail[2] = {RFC1961_VERSION, RFC1961_FAILURE};
	struct gss_sess *g = s->gss;
	char addr[64];
	uint16_t port;
	session_addr_text(&s->peer, addr, sizeof addr, &port);
	/* One line a second per worker at info; a flood's others at debug
	 * (each one has its refusal record and is counted). */
	struct worker *wk = s->wk;
	if (wk->gss_fail_said_at + 1000 <= wk->loop.now) {
		log_info("GSS-API login from %s failed: %s", addr, why);
		wk->gss_fail_said_at = wk->loop.now;
	} else {
		log_debug("GSS-API login from %s failed: %s", addr, why);
	}
	shm_count(s->wk->slot, M_GSS_FAILURES, 1);
	session_log_refusal(s->wk, &s->peer, g->principal[0] ? g->principal : NULL,
	                    SESSION_REFUSED_AUTH, "gssapi", s->start_ms);
	session_refuse(s, fail, sizeof fail);
}

void gss_begin(struct session *s)
{
	s->gss = calloc(1, sizeof *s->gss);
	if (!s->gss) {
		session_finalize(s);
		return;
	}
	s->gss->ctx = GSS_C_NO_CONTEXT;
	rfc1961_init(&s->gss->msg, RFC1961_AUTH);
	s->method = SOCKS5_METHOD_GSSAPI;
	s->phase = PH_AUTH;
	s->on_client = on_token;
	on_token(s);
}

/* Read and parse one client message of the expected type: 1 when
 * s->gss->msg holds it, 0 while more is needed, -1 when the session ended
 * (a bad message is answered 01 FF first). */
static int read_msg(struct session *s)
{
	struct handshake *hs = s->hs;
	struct gss_sess *g = s->gss;
	for (;;) {
		/* Flushes what waits for the client too. */
		if (!handshake_read(s))
			return -1;
		size_t used;
		int rc = rfc1961_feed(&g->msg, hs->in, hs->len, &used);
		memmove(hs->in, hs->in + used, hs->len - used);
		hs->len -= (uint32_t)used;
		if (rc == RFC1961_ERROR) {
			gss_fail(s, g->msg.error == RFC1961_BAD_VERSION ? "not an RFC 1961 message"
			            : g->msg.error == RFC1961_BAD_TYPE ? "unexpected message type"
			            : g->msg.error == RFC1961_EMPTY_TOKEN ? "empty token"
			                                                  : "out of memory");
			return -1;
		}
		if (rc == RFC1961_DONE) {
			if (g->msg.mtyp == RFC1961_FAILURE) {
				/* The client gave up: nothing to answer. */
				shm_count(s->wk->slot, M_GSS_FAILURES, 1);
				session_finalize(s);
				return -1;
			}
			return 1;
		}
		/* Everything buffered was taken: the rest is still to come. */
		if (s->c_eof) {
			session_finalize(s);
			return -1;
		}
		if (!s->c_readable)
			return 0;
	}
}

static void on_token(struct session *s)
{
	struct gss_sess *g = s->gss;
	struct gss_worker *gw = s->wk->gss;
	int rc = read_msg(s);
	if (rc <= 0)
		return;
	if (!gw || gw->pending >= GSS_MAX_PENDING) {
		gss_fail(s, gw ? "too many logins in progress" : "GSS-API is off");
		return;
	}
	struct gss_job *j = calloc(1, sizeof *j);
	if (j)
		j->in = malloc(g->msg.len);
	if (!j || !j->in) {
		free(j);
		gss_fail(s, "out of memory");
		return;
	}
	memcpy(j->in, g->msg.token, g->msg.len);
	j->inlen = g->msg.len;
	j->s = s;
	j->ctx = g->ctx; /* the thread's until it comes back */
	g->ctx = GSS_C_NO_CONTEXT;
	g->job = j;
	s->phase = PH_AUTH_WAIT;
	s->on_client = handshake_read_early;
	pthread_mutex_lock(&gw->mu);
	*gw->qtail = j;
	gw->qtail = &j->next;
	gw->pending++;
	pthread_cond_signal(&gw->cv);
	pthread_mutex_unlock(&gw->mu);
}

/* Queue one message (header + token) for the client. */
static int send_msg(struct session *s, uint8_t mtyp, const void *token, size_t n)
{
	uint8_t hdr[4];
	rfc1961_header(hdr, mtyp, n);
	if (session_send_raw(s, hdr, sizeof hdr) < 0 || session_send_raw(s, token, n) < 0)
		return -1;
	return 0;
}

static void token_done(struct session *s, struct gss_job *j)
{
	struct gss_sess *g = s->gss;
	g->job = NULL;
	g->ctx = j->ctx; /* back to the session (freed with it) */
	j->ctx = GSS_C_NO_CONTEXT;
	j->s = NULL;
	if (j->principal[0])
		snprintf(g->principal, sizeof g->principal, "%s", j->principal);
	if (j->failed) {
		gss_fail(s, j->why);
		return;
	}
	if (j->out.length > RFC1961_TOKEN_MAX) {
		gss_fail(s, "the mechanism's token is too long for RFC 1961");
		return;
	}
	if (j->out.length && send_msg(s, RFC1961_AUTH, j->out.value, j->out.length) < 0) {
		session_finalize(s);
		return;
	}
	if (j->major & GSS_S_CONTINUE_NEEDED) {
		s->phase = PH_AUTH;
		s->on_client = on_token;
		on_token(s);
		return;
	}
	/* Complete: the client is who the ticket says. */
	g->established = true;
	g->flags = j->flags;
	if (session_set_text(&s->user, j->user, strlen(j->user)) < 0) {
		gss_fail(s, "out of memory");
		return;
	}
	s->gss_user = true;
	char user[SESSION_USER_TEXT_MAX];
	session_user_text(s, user);
	log_debug("session %llu: GSS-API: %s is %s", (unsigned long long)s->id, g->principal, user);
	rfc1961_expect(&g->msg, RFC1961_PROTECTION);
	s->phase = PH_AUTH;
	s->on_client = on_protection;
	on_protection(s);
}

/* Wrap n bytes (conf: confidentiality) into out (gss-allocated); counted. */
static bool wrap(struct session *s, bool conf, const void *p, size_t n, gss_buffer_desc *out)
{
	OM_uint32 minor;
	gss_buffer_desc in = {n, (void *)p};
	int conf_state;
	OM_uint32 major = gss_wrap(&minor, s->gss->ctx, conf, GSS_C_QOP_DEFAULT, &in, &conf_state,
	                           out);
	if (GSS_ERROR(major) || (conf && !conf_state) || out->length > RFC1961_TOKEN_MAX) {
		gss_release_buffer(&minor, out);
		return false;
	}
	shm_count(s->wk->slot, M_GSS_WRAPPED, n);
	return true;
}

/* Unwrap the message in s->gss->msg into out; the protection used must
 * be the granted level's, and a token the mechanism finds repeated, out
 * of order or after a gap (when the client asked for replay and sequence
 * detection) is refused like a bad one: the stream is not the client's.
 * Counted. */
static bool unwrap(struct session *s, gss_buffer_desc *out, bool want_conf)
{
	struct gss_sess *g = s->gss;
	OM_uint32 minor;
	gss_buffer_desc in = {g->msg.len, g->msg.token};
	int conf_state = 0;
	OM_uint32 major = gss_unwrap(&minor, g->ctx, &in, out, &conf_state, NULL);
	if (GSS_ERROR(major) ||
	    (major & (GSS_S_DUPLICATE_TOKEN | GSS_S_OLD_TOKEN | GSS_S_UNSEQ_TOKEN | GSS_S_GAP_TOKEN)) ||
	    (want_conf && !conf_state)) {
		gss_release_buffer(&minor, out);
		return false;
	}
	shm_count(s->wk->slot, M_GSS_UNWRAPPED, out->length);
	return true;
}

static void on_protection(struct session *s)
{
	struct gss_sess *g = s->gss;
	OM_uint32 minor;
	int rc = read_msg(s);
	if (rc <= 0)
		return;
	uint8_t level;
	bool nec = false;
	gss_buffer_desc plain = GSS_C_EMPTY_BUFFER;
	if (g->msg.len == 1) {
		/* NEC's client sends the level byte unwrapped (no token is one byte). */
		if (!s->wk->cfg.gssapi_nec) {
			gss_fail(s, "unwrapped protection level (gssapi-nec is off)");
			return;
		}
		nec = true;
		level = g->msg.token[0];
	} else {
		if (!unwrap(s, &plain, false) || plain.length != 1) {
			gss_release_buffer(&minor, &plain);
			gss_fail(s, "bad protection-level token");
			return;
		}
		level = ((uint8_t *)plain.value)[0];
		gss_release_buffer(&minor, &plain);
	}
	/* Only the level asked for is granted (a client that asked for one
	 * level would not use another), when gssapi-protection has it. */
	bool ok = level <= GSS_LEVEL_CONFIDENTIALITY &&
	          (s->wk->cfg.gssapi_protection & (1u << level));
	if (ok && level == GSS_LEVEL_CONFIDENTIALITY && !(g->flags & GSS_C_CONF_FLAG))
		ok = false;
	if (ok && level == GSS_LEVEL_INTEGRITY && !(g->flags & GSS_C_INTEG_FLAG))
		ok = false;
	if (!ok) {
		char why[320];
		snprintf(why, sizeof why, "%.255s asked for protection %s, not granted", g->principal,
		         gss_level_name(level));
		gss_fail(s, why);
		return;
	}
	/* A protected stream is whole only when messages cannot be repeated,
	 * reordered or dropped unseen: the context must detect replays and
	 * gaps (Dante's client asks for both). */
	const OM_uint32 seq = GSS_C_REPLAY_FLAG | GSS_C_SEQUENCE_FLAG;
	if (level != GSS_LEVEL_CLEAR && (g->flags & seq) != seq) {
		char why[320];
		snprintf(why, sizeof why,
		         "%.255s asked for protection %s without replay and sequence detection",
		         g->principal, gss_level_name(level));
		gss_fail(s, why);
		return;
	}
	if (nec) {
		const uint8_t msg[5] = {RFC1961_VERSION, RFC1961_PROTECTION, 0, 1, level};
		rc = session_send_raw(s, msg, sizeof msg);
	} else {
		gss_buffer_desc tok = GSS_C_EMPTY_BUFFER;
		if (!wrap(s, false, &level, 1, &tok)) {
			gss_fail(s, "cannot wrap the protection level");
			return;
		}
		rc = send_msg(s, RFC1961_PROTECTION, tok.value, tok.length);
		gss_release_buffer(&minor, &tok);
	}
	if (rc < 0) {
		session_finalize(s);
		return;
	}
	g->level = level;
	g->level_granted = true;
	g->protect = level != GSS_LEVEL_CLEAR;
	shm_count(s->wk->slot, M_GSS_LOGINS, 1);
	session_bind_user(s);
	if (s->cfd < 0)
		return;
	session_authenticated(s);
	if (g->protect) {
		OM_uint32 max = 0;
		if (GSS_ERROR(gss_wrap_size_limit(&minor, g->ctx, level == GSS_LEVEL_CONFIDENTIALITY,
		                                  GSS_C_QOP_DEFAULT, RFC1961_TOKEN_MAX, &max)) ||
		    max == 0)
			max = 1024;
		g->max_plain = max < GSS_CHUNK ? max : GSS_CHUNK;
		rfc1961_expect(&g->msg, RFC1961_ENCAPSULATED);
		s->phase = PH_REQUEST;
		s->on_client = on_request_wrapped;
		on_request_wrapped(s);
	} else {
		handshake_request_begin(s);
	}
}

/* Level 1 or 2: the request arrives encapsulated.  Its plaintext goes
 * through the request codec from a buffer of the session; what follows
 * it in the same token waits there for the relay. */
static void on_request_wrapped(struct session *s)
{
	struct gss_sess *g = s->gss;
	for (;;) {
		if (g->up.length > g->up_pos) {
			int rc = handshake_feed_request(s, (uint8_t *)g->up.value + g->up_pos,
			                                g->up.length - g->up_pos, &g->up_pos);
			if (rc != SOCKS5_MORE)
				return; /* answered, or acted on */
		}
		OM_uint32 minor;
		gss_release_buffer(&minor, &g->up);
		g->up_pos = 0;
		int rc = read_msg(s);
		if (rc <= 0)
			return;
		if (!unwrap(s, &g->up, g->level == GSS_LEVEL_CONFIDENTIALITY)) {
			log_info("session %llu: GSS-API: bad token before the request",
			         (unsigned long long)s->id);
			session_finalize(s);
			return;
		}
	}
}

bool gss_protected(const struct session *s)
{
	return s->gss && s->gss->protect;
}

int gss_send_reply(struct session *s, const void *p, size_t n)
{
	OM_uint32 minor;
	gss_buffer_desc tok = GSS_C_EMPTY_BUFFER;
	if (!wrap(s, s->gss->level == GSS_LEVEL_CONFIDENTIALITY, p, n, &tok))
		return -EPROTO;
	int rc = send_msg(s, RFC1961_ENCAPSULATED, tok.value, tok.length);
	gss_release_buffer(&minor, &tok);
	return rc < 0 ? -EIO : 0;
}

const char *gss_method_text(const struct session *s, char *out, size_t len)
{
	if (!s->gss || !s->gss->level_granted)
		snprintf(out, len, "gssapi");
	else
		snprintf(out, len, "gssapi/%s", gss_level_name(s->gss->level));
	return out;
}

uint8_t gss_level(const struct session *s)
{
	return s->gss && s->gss->established && s->gss->level_granted ? s->gss->level : 0xff;
}

const char *gss_principal(const struct session *s)
{
	return s->gss ? s->gss->principal : "";
}

void gss_session_free(struct session *s)
{
	struct gss_sess *g = s->gss;
	OM_uint32 minor;
	if (!g)
		return;
	if (g->job) {
		/* Still queued: it leaves the queue, and its place is free for
		 * another login.  On the thread: the loop frees it, and the
		 * context, when it is back. */
		struct gss_worker *gw = s->wk->gss;
		struct gss_job *j = g->job, **p;
		bool queued = false;
		pthread_mutex_lock(&gw->mu);
		for (p = &gw->queue; *p; p = &(*p)->next)
			if (*p == j) {
				*p = j->next;
				if (gw->qtail == &j->next)
					gw->qtail = p;
				queued = true;
				break;
			}
		pthread_mutex_unlock(&gw->mu);
		if (queued) {
			gw->pending--;
			g->ctx = j->ctx; /* back to the session: deleted below */
			j->ctx = GSS_C_NO_CONTEXT;
			free_job(j);
		} else {
			j->s = NULL;
		}
		g->job = NULL;
	}
	if (g->ctx != GSS_C_NO_CONTEXT)
		gss_delete_sec_context(&minor, &g->ctx, GSS_C_NO_BUFFER);
	rfc1961_free(&g->msg);
	gss_release_buffer(&minor, &g->up);
	gss_release_buffer(&minor, &g->down);
	free(g->rd);
	free(g->plain);
	free(g);
	s->gss = NULL;
}

/* ---- relay ------------------------------------------------------------------ */

/* Client to target: parse the client's messages, unwrap, send.  Returns
 * 1 on progress, 0 on none, -1 when the session must end. */
static int pump_up(struct session *s, bool *moved)
{
	struct gss_sess *g = s->gss;
	OM_uint32 minor;
	int progress = 0;
	for (;;) {
		/* Unwrapped bytes first. */
		if (g->up.length > g->up_pos) {
			if (!s->t_writable)
				return progress;
			size_t want = g->up.length - g->up_pos;
			ssize_t w = send(s->tfd, (uint8_t *)g->up.value + g->up_pos, want, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EAGAIN) {
					s->t_writable = false;
					return progress;
				}
				if (errno == EINTR)
					continue;
				return -1;
			}
			g->up_pos += (size_t)w;
			s->bytes_up += (uint64_t)w;
			shm_count(s->wk->slot, M_BYTES_UP, (uint64_t)w);
			*moved = true;
			progress = 1;
			if ((size_t)w < want)
				s->t_writable = false;
			continue;
		}
		gss_release_buffer(&minor, &g->up);
		g->up_pos = 0;
		/* A whole message among the raw bytes? */
		if (g->rd_pos < g->rd_len) {
			size_t used;
			int rc = rfc1961_feed(&g->msg, g->rd + g->rd_pos, g->rd_len - g->rd_pos, &used);
			g->rd_pos += (uint32_t)used;
			if (rc == RFC1961_ERROR || (rc == RFC1961_DONE && g->msg.mtyp == RFC1961_FAILURE)) {
				log_info("session %llu: GSS-API: malformed message from the client",
				         (unsigned long long)s->id);
				return -1;
			}
			if (rc == RFC1961_DONE) {
				if (!unwrap(s, &g->up, g->level == GSS_LEVEL_CONFIDENTIALITY)) {
					log_info("session %llu: GSS-API: bad token from the client",
					         (unsigned long long)s->id);
					return -1;
				}
						if (s->sniff || s->sniff_wanted)
					relay_sniff(s, SNIFF_UP, g->up.value, g->up.length);
				continue;
			}
			continue; /* all taken: read more */
		}
		if (s->c_eof) {
			/* The stream ends between messages only. */
			if (g->msg.have != 0 && !(g->msg.have == 4 && g->msg.got == g->msg.len))
				return -1;
			if (!s->t_shut) {
				if (!s->c_shut)
					shutdown(s->tfd, SHUT_WR);
				s->t_shut = true;
			}
			return progress;
		}
		if (!s->c_readable)
			return progress;
		uint64_t allow = GSS_READ;
		if (s->lim_n && (allow = relay_rate_allowance(s, LIMIT_OUT)) == 0)
			return progress;
		if (!g->rd && !(g->rd = malloc(GSS_READ)))
			return -1;
		size_t space = allow < GSS_READ ? (size_t)allow : GSS_READ;
		ssize_t r = recv(s->cfd, g->rd, space, 0);
		if (r > 0) {
			if (s->lim_n)
				relay_rate_spent(s, LIMIT_OUT, (uint64_t)r);
			g->rd_pos = 0;
			g->rd_len = (uint32_t)r;
			progress = 1;
		} else if (r == 0) {
			s->c_eof = true;
			progress = 1;
		} else if (errno == EAGAIN) {
			s->c_readable = false;
		} else if (errno != EINTR) {
			return -1;
		}
	}
}

/* Target to client: read, wrap, send one message at a time. */
static int pump_down(struct session *s, bool *moved)
{
	struct gss_sess *g = s->gss;
	OM_uint32 minor;
	int progress = 0;
	for (;;) {
		size_t total = sizeof g->hdr + g->down.length;
		if (g->down.length && g->down_pos < total) {
			if (!s->c_writable)
				return progress;
			struct iovec iov[2];
			int n = 0;
			if (g->down_pos < sizeof g->hdr)
				iov[n++] = (struct iovec){g->hdr + g->down_pos, sizeof g->hdr - g->down_pos};
			size_t tpos = g->down_pos > sizeof g->hdr ? g->down_pos - sizeof g->hdr : 0;
			iov[n++] = (struct iovec){(uint8_t *)g->down.value + tpos, g->down.length - tpos};
			struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
			ssize_t w = sendmsg(s->cfd, &mh, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EAGAIN) {
					s->c_writable = false;
					return progress;
				}
				if (errno == EINTR)
					continue;
				return -1;
			}
			g->down_pos += (size_t)w;
			progress = 1;
			*moved = true;
			if (g->down_pos < total) {
				s->c_writable = false;
				return progress;
			}
			s->bytes_down += g->down_plain;
			shm_count(s->wk->slot, M_BYTES_DOWN, g->down_plain);
			continue;
		}
		gss_release_buffer(&minor, &g->down);
		g->down_pos = 0;
		if (s->t_eof) {
			if (!s->c_shut) {
				if (!s->t_shut)
					shutdown(s->cfd, SHUT_WR);
				s->c_shut = true;
			}
			return progress;
		}
		if (!s->t_readable)
			return progress;
		uint64_t allow = g->max_plain;
		if (s->lim_n && (allow = relay_rate_allowance(s, LIMIT_IN)) == 0)
			return progress;
		if (!g->plain && !(g->plain = malloc(g->max_plain)))
			return -1;
		size_t space = allow < g->max_plain ? (size_t)allow : g->max_plain;
		ssize_t r = recv(s->tfd, g->plain, space, 0);
		if (r > 0) {
			if (s->lim_n)
				relay_rate_spent(s, LIMIT_IN, (uint64_t)r);
			if (s->sniff || s->sniff_wanted)
				relay_sniff(s, SNIFF_DOWN, g->plain, (size_t)r);
			if (!wrap(s, g->level == GSS_LEVEL_CONFIDENTIALITY, g->plain, (size_t)r, &g->down))
				return -1;
			rfc1961_header(g->hdr, RFC1961_ENCAPSULATED, g->down.length);
			g->down_plain = (size_t)r;
			progress = 1;
		} else if (r == 0) {
			s->t_eof = true;
			progress = 1;
		} else if (errno == EAGAIN) {
			s->t_readable = false;
		} else if (errno != EINTR) {
			return -1;
		}
	}
}

/* A session waiting for its sockets keeps no message buffer it is not
 * in the middle of: the client's raw bytes once parsed, the target's
 * plaintext once wrapped, the codec's token between messages.  Memory
 * follows the traffic in flight, not what a session once carried. */
static void gss_trim(struct gss_sess *g)
{
	if (g->rd && g->rd_pos == g->rd_len) {
		free(g->rd);
		g->rd = NULL;
		g->rd_pos = g->rd_len = 0;
	}
	free(g->plain);
	g->plain = NULL;
	if (g->msg.have == 0 || (g->msg.have == 4 && g->msg.got == g->msg.len))
		rfc1961_free(&g->msg);
}

static void gss_relay(struct session *s)
{
	bool moved = false;
	uint64_t up0 = s->bytes_up, down0 = s->bytes_down;
	/* A reply still queued (the client's socket was full) goes before
	 * any relayed message. */
	if (s->down && s->c_writable && session_send_raw(s, "", 0) < 0) {
		session_finalize(s);
		return;
	}
	if (pump_up(s, &moved) < 0 || (!s->down && pump_down(s, &moved) < 0) ||
	    (s->c_shut && s->t_shut)) {
		session_finalize(s);
		return;
	}
	gss_trim(s->gss);
	if (moved)
		relay_moved(s, up0, down0);
}

void gss_relay_begin(struct session *s)
{
	struct gss_sess *g = s->gss;
	struct handshake *hs = s->hs;
	/* Raw bytes the client sent behind its request are messages still to
	 * parse. */
	if (hs->len) {
		g->rd = malloc(hs->len > GSS_READ ? hs->len : GSS_READ);
		if (!g->rd) {
			session_finalize(s);
			return;
		}
		memcpy(g->rd, hs->in, hs->len);
		g->rd_len = hs->len;
		g->rd_pos = 0;
	}
	s->sniff_wanted = s->wk->cfg.dissectors;
	if (g->up.length > g->up_pos)
		relay_sniff(s, SNIFF_UP, (uint8_t *)g->up.value + g->up_pos, g->up.length - g->up_pos);
	session_free_handshake(s);
	relay_enter(s, gss_relay);
}
