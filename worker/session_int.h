/*
 * session_int: what the parts of a session share — the session struct, the
 * handshake state, and the functions each part offers the others.  Private
 * to worker/session.c (life cycle, finalize, failure replies), handshake.c
 * (greeting, login, request), gssapi.c (the GSS-API method), connect.c
 * (resolution results and connection attempts), bind.c (the BIND command
 * up to its relay) and relay.c (moving bytes).  Nothing outside those
 * includes it.
 *
 * The state is the handler: s->on_client (and s->on_target) is the
 * function that runs on the next event of that socket, swapped at each
 * transition.  s->phase only names the state for listings and counters.
 * Loop thread only.
 */
#ifndef SOCKS5D_SESSION_INT_H
#define SOCKS5D_SESSION_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "../shared/list.h"
#include "../shared/loop.h"
#include "../shared/rules.h"
#include "../shared/shm.h"
#include "proxyproto.h"
#include "resolver.h"
#include "session.h"
#include "sniff.h"
#include "socks5.h"

struct worker;
struct rbuf;
struct rpipe;
struct sniff;
struct auth_job;
struct resolver_query;
struct udp_assoc;
struct gss_sess;
struct sockmap_sess;

/* Greeting (<= 257) + auth (<= 513) + request (<= 262) fit, with room for
 * early data sent before the reply. */
#define HS_BUF 2048
/* s->rep before any reply was sent. */
#define REP_NONE 0xff

enum phase {
	PH_PROXY, /* a trusted balancer's PROXY protocol header */
	PH_GREETING,
	PH_AUTH,
	PH_AUTH_WAIT,
	PH_REQUEST,
	PH_RESOLVING,
	PH_CONNECTING,
	PH_RELAY,
	PH_UDP, /* a UDP association relaying datagrams (worker/udp.c) */
	PH_LINGER,
};

struct session;
typedef void session_fn(struct session *s);

/* One connection attempt (RFC 8305 races one per address at most). */
struct attempt {
	struct session *s;
	struct loop_watch w;
	struct loop_timer timer; /* this attempt's connect timeout */
	int fd;
	uint8_t addr;
	struct rules_match match; /* the rule that let this address be tried */
};

/* Everything only the handshake needs; freed when the relay starts. */
struct handshake {
	uint32_t len;
	uint8_t in[HS_BUF];
	bool proxied; /* a PROXY header comes first */
	struct proxyproto proxy;
	struct socks5_greeting greeting;
	struct rfc1929 auth;
	struct socks5_request req;
	size_t naddrs, next_addr;
	struct sockaddr_storage addrs[RESOLVER_MAX_ADDRS];
	struct attempt att[RESOLVER_MAX_ADDRS];
	struct loop_deferred deferred;
	size_t natt; /* attempts started */
	unsigned in_flight;
	struct loop_timer next_timer; /* start the next attempt (worker's attempt list) */
	int64_t connect_start_us;     /* connect_begin, monotonic (connect latency) */
	/* BIND (bind.c): the listening socket while it waits for the peer;
	 * addrs[0..naddrs) are the addresses it may come from (none: any). */
	struct loop_watch lw;
	int lfd;
	bool listening; /* lfd is open */
	bool blocked_any;             /* an address was skipped: blocked by the rules */
	struct rules_match blocked;   /* the last rule that blocked one */
};

struct session {
	struct list_node link; /* the worker's sessions, newest first */
	struct loop_deferred deferred;
	struct worker *wk;
	struct handshake *hs;
	uint64_t id;
	enum phase phase;
	session_fn *on_client; /* the handler of the current state */
	session_fn *on_target;

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
	struct sockmap_sess *sm; /* in the kernel relay (worker/sockmap.c), or NULL */
	bool sniff_wanted;   /* dissector on, state not allocated before the first byte */

	/* One timer, on the list of the current state: handshake, linger or
	 * idle (its fn is swapped with the state). */
	struct loop_timer timer;
	struct auth_job *auth_job;
	struct resolver_query *query;

	uint8_t method;       /* the method chosen (enum socks5_method); 0xff before */
	struct gss_sess *gss; /* GSS-API (worker/gssapi.c), or NULL */
	bool gss_user;        /* user is a Kerberos principal's local name */
	int user_slot; /* -1: anonymous, not in the user table, or none yet */
	uint64_t user_id;
	uint64_t user_gen; /* credential generation the login was checked under */
	bool unauth;       /* counted by auth_conn_open until authenticated or gone */
	bool counted;      /* a session of the counters (session_counted) */
	/* The user's name and the destination as text: on the heap, as long as
	 * they are (an idle session is mostly these and the socket pair, so
	 * not 2 x 256 bytes each); "" before they are known.  Set with
	 * session_set_text. */
	const char *user;

	struct sockaddr_storage peer;
	const char *dest;
	uint16_t dport;
	uint8_t cmd; /* the request's command (enum socks5_cmd); 0 before a request */
	bool requested;
	uint8_t rep;
	uint8_t best_fail;
	struct rules_match rule; /* the rule that let the target be reached (limits, via) */
	uint64_t bytes_up, bytes_down;
	uint64_t dgrams_up, dgrams_down; /* UDP ASSOCIATE: datagrams relayed each way */
	struct udp_assoc *udp;           /* UDP ASSOCIATE: the association (worker/udp.c) */
	int64_t start_ms;
	int64_t start_wall;

	/* Limits (shared/limits.h): the entries this session holds a place in
	 * (its user's, a rule's) and the bytes each direction may still read
	 * before it takes more from the entries' buckets.  lim_n == 0: no
	 * limit, and that test is all the relay pays. */
	uint8_t lim_n;
	uint32_t lim_idx[2];
	uint64_t lim_allow[2]; /* by enum limit_dir */
	bool lim_waiting;            /* the last take found the bucket short */
	bool lim_paused[2];          /* by enum limit_dir: waits for lim_timer */
	struct loop_timer lim_timer; /* a direction waits for its bucket */
};

/* ---- session.c: life cycle and what every state shares ---- */

/* The one exit: reply if a request is unanswered, log, count, close, free. */
void session_finalize(struct session *s);
/* The session no longer counts as not yet authenticated (flood guard). */
void session_authenticated(struct session *s);
/* The connection is a session: counted in sessions_total and the open
 * sessions (a balancer's once its header names a client). */
void session_counted(struct session *s);
/* A state's timeout (counted in counter, logged as "<what> timeout"). */
void session_timed_out(struct session *s, enum shm_counter counter, const char *what);
/* Send msg (a failure: 05 FF, 01 01 or a SOCKS reply), then half-close and
 * discard client input until it closes or SESSION_LINGER_MS pass. */
void session_refuse(struct session *s, const uint8_t *msg, size_t n);
/* A SOCKS reply with failure code rep, then as session_refuse. */
void session_fail(struct session *s, uint8_t rep);
/* Queue bytes for the client and send what it takes now (n may be 0 to
 * flush).  Returns 0 or a negative errno. */
int session_send(struct session *s, const void *p, size_t n);
/* The same, never encapsulated: session_send encapsulates SOCKS replies
 * of a GSS-API session with protection. */
int session_send_raw(struct session *s, const void *p, size_t n);
/* After a login that names a user without a password check (GSS-API):
 * the user table's entry of that name, when there is one, is the
 * session's (its limits, counters, and its removal ends the session). */
void session_bind_user(struct session *s);
/* The request is read (or found malformed): from here it is logged and
 * counted, and always answered. */
void session_request_begin(struct session *s);
/* Free the handshake state after the current batch of events. */
void session_free_handshake(struct session *s);
void session_close_target(struct session *s);
/* The target watch's callback (installed on the winning attempt's fd). */
void session_target_event(struct loop *l, struct loop_watch *w, uint32_t events);
void session_addr_text(const struct sockaddr_storage *ss, char *out, size_t len, uint16_t *port);
/* The method as the access log shows it: none, password, gssapi/LEVEL,
 * or - before one is chosen (out: room for the GSS-API text). */
const char *session_method_text(const struct session *s, char *out, size_t len);
/* The destination's longest text (escaped names are cut there). */
#define SESSION_DEST_MAX 255
/* *field = a heap copy of text (n bytes, n <= 255), freed with the
 * session; on no memory it stays as it was and -ENOMEM is returned. */
int session_set_text(const char **field, const char *text, size_t n);
/* The user name as logs show it (escaped), or "anonymous". */
#define SESSION_USER_TEXT_MAX (SHM_USER_NAME_MAX * 4 + 6)
void session_user_text(const struct session *s, char out[SESSION_USER_TEXT_MAX]);

/* Limits, at request time (after authentication).  Each takes a place in
 * its entry (the user's; the rule's, found by its tag and identity) and returns
 * true, or answers the request 0x02 (not allowed), counts the refusal and
 * returns false: the caller just returns.  Nothing is taken for a user
 * without a limit, nor for a rule without one. */
bool session_limits_admit(struct session *s);
bool session_limits_admit_rule(struct session *s, uint32_t rule_number, uint32_t tag,
                               uint64_t ident, uint32_t max_sessions, uint64_t rate_in,
                               uint64_t rate_out);

/* ---- handshake.c ---- */

/* The first state: read and answer the greeting. */
void handshake_begin(struct session *s);
/* The address a request names without a lookup (DST.PORT set), into *ss:
 * 1, or 0 when it names a host that needs one. */
size_t handshake_literal_addr(const struct socks5_request *r, struct sockaddr_storage *ss);
/* The waiting states' client handler: read early data, parse nothing. */
void handshake_read_early(struct session *s);
/* Flush queued replies, read what the client sent into hs->in.  False
 * when the session ended. */
bool handshake_read(struct session *s);
/* Authentication is over: read the request (unencapsulated). */
void handshake_request_begin(struct session *s);
/* Feed request bytes from p[*pos..n) (the plaintext of an encapsulated
 * message), advancing *pos; on a whole or bad request it is acted on and
 * the codec's status (SOCKS5_DONE or SOCKS5_ERROR) returned, else
 * SOCKS5_MORE. */
int handshake_feed_request(struct session *s, const uint8_t *p, size_t n, size_t *pos);

/* ---- gssapi.c (worker/gssapi.h has the worker's side) ---- */

/* Method 0x01 was chosen: context establishment, protection level, then
 * the request (encapsulated at levels 1 and 2). */
void gss_begin(struct session *s);
/* The session is GSS-API with integrity or confidentiality. */
bool gss_protected(const struct session *s);
/* A SOCKS reply, encapsulated, queued for the client (session_send's
 * part for protected sessions).  0 or a negative errno. */
int gss_send_reply(struct session *s, const void *p, size_t n);
/* relay_begin's part for protected sessions. */
void gss_relay_begin(struct session *s);
/* "gssapi/integrity" and so on, for logs and listings. */
const char *gss_method_text(const struct session *s, char *out, size_t len);
/* The protection level granted, 0xff before (or without GSS-API). */
uint8_t gss_level(const struct session *s);
/* The client principal ("" before it is known). */
const char *gss_principal(const struct session *s);
void gss_session_free(struct session *s);

/* ---- connect.c ---- */

/* Race connections to hs->addrs[0..naddrs); the winner goes to relay_begin,
 * total failure to session_fail. */
void connect_begin(struct session *s);
/* Resolve s->hs->req's name, then connect_begin. */
void connect_resolve(struct session *s);
/* Close every attempt still running (safe with no handshake state). */
void connect_close_attempts(struct session *s);
/* The request rules on the requested name, before any lookup: false when
 * they block it (then the session is answered 0x02). */
bool connect_name_allowed(struct session *s);
/* The request rules (command, DST.PORT, user, client of the request) on one
 * address: the hit counted, a pass with `log` said; true on a pass. */
bool connect_address_allowed(struct session *s, const struct sockaddr_storage *sa,
                             struct rules_match *m);
/* Answer 0x02 for the rule m: counted, and said (at info with `log`). */
void connect_blocked(struct session *s, const struct rules_match *m);
/* Take a place in the limits of s->rule (the rule that let the destination
 * through); false when over them (the request is then answered 0x02). */
bool connect_rule_limits(struct session *s);

/* ---- bind.c ---- */

/* A BIND request (RFC 1928 section 6): listen on the control connection's
 * local address, first reply, wait for the peer up to bind-timeout, second
 * reply, then relay_begin.  Failures answer with session_fail. */
void bind_begin(struct session *s);
/* Close the listening socket if one is open (safe at any time). */
void bind_close(struct session *s);

/* ---- relay.c ---- */

/* The target is connected and the success reply sent: relay from now on. */
void relay_begin(struct session *s);
/* A datagram of n bytes in direction d under the session's rate limits:
 * true when the allowance covers it (and it is spent), false when it must
 * be dropped (the bucket is short: UDP is not queued). */
bool relay_rate_admit(struct session *s, enum limit_dir d, uint64_t n);
/* Restart the idle timer (when the idle clean-up is on). */
void relay_touch_idle(struct session *s);
/* Enter the relay state with fn as the handler of both sides, and run it. */
void relay_enter(struct session *s, session_fn *fn);
/* Bytes relayed since up0/down0: restart the idle timer, count per user. */
void relay_moved(struct session *s, uint64_t up0, uint64_t down0);
/* The kernel relay (worker/sockmap.c) gives the session back: the copying
 * relay goes on from what the sockets hold. */
void relay_take_back(struct session *s);
/* Bytes just read from one side, for the credential dissector. */
void relay_sniff(struct session *s, enum sniff_dir dir, const uint8_t *p, size_t n);
/* Rate limits: the bytes direction d may read now (0: paused, a timer
 * resumes the relay), and the bytes it read. */
uint64_t relay_rate_allowance(struct session *s, enum limit_dir d);
void relay_rate_spent(struct session *s, enum limit_dir d, uint64_t n);
/* lim_timer's callback: a paused direction reads again. */
void relay_rate_resume(struct loop *l, struct loop_timer *t);

#endif
