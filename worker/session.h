/*
 * session: one SOCKS5 client connection in a worker — handshake, request,
 * resolution, outbound connection attempts, relay and the single finalize
 * that writes the reply, logs, counts and frees.
 *
 * The state is the handler that runs on the next event; each step is one
 * small function.  This is what the worker sees; the parts (session.c,
 * handshake.c, connect.c, relay.c) share worker/session_int.h.  Loop
 * thread only.
 */
#ifndef SOCKS5D_SESSION_H
#define SOCKS5D_SESSION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

struct worker;
struct session;
struct loop;
struct loop_timer;
struct ctrl_session;

/* After a failure reply: how long unread client input is drained before
 * closing, so that the reply is not destroyed by a reset (the duration of
 * the worker's linger timer list). */
#define SESSION_LINGER_MS 2000
/* RFC 8305 section 5, the "Connection Attempt Delay": the duration of the
 * worker's attempt timer list. */
#define SESSION_ATTEMPT_DELAY_MS 250

/* Refusal records: a connection refused before a request writes one
 * access record with one of these in the reply field (no SOCKS reply code
 * says it), at most SESSION_REFUSALS_PER_SEC a second per worker; the rest
 * are counted and said once on stderr when the second is over. */
#define SESSION_REFUSALS_PER_SEC 100
#define SESSION_REFUSED_NO_METHOD "no-method"
#define SESSION_REFUSED_AUTH "auth-failed"
#define SESSION_REFUSED_CLIENT "client-blocked"
#define SESSION_REFUSED_UNAUTH_CAP "unauth-cap"

/* Write one refusal record for a connection from peer accepted at start_ms
 * (loop time): user is the escaped name the client offered, or NULL;
 * method the access log's method field ("password", "gssapi"), or NULL
 * before one was chosen. */
void session_log_refusal(struct worker *wk, const struct sockaddr_storage *peer,
                         const char *user, const char *status, const char *method,
                         int64_t start_ms);
/* The timer of the unwritten-refusals line (worker.refusal_timer). */
void session_say_refusals(struct loop *l, struct loop_timer *t);
/* Take ownership of an accepted client socket (non-blocking).  proxied:
 * peer is a trusted balancer, whose PROXY header comes first and gives
 * the client's address (the client rules and the per-source cap are then
 * applied to that address, not to peer). */
int session_start(struct worker *wk, int fd, const struct sockaddr_storage *peer, bool proxied);
/* Close every session now (end of the grace period, shutdown). */
void session_abort_all(struct worker *wk);
/* The timer of the failed-login lines (worker.auth_fail_timer). */
void handshake_say_failures(struct loop *l, struct loop_timer *t);
/* Close the sessions whose user was removed or whose password changed;
 * apply a new idle setting. */
void session_reconfigure(struct worker *wk);
/* Up to max sessions with id > after, ascending; *more when others follow. */
size_t session_list(struct worker *wk, uint64_t after, size_t max, struct ctrl_session *out,
                    bool *more);
/* Close the session with this id; false when there is none. */
bool session_close_id(struct worker *wk, uint64_t id);

#endif
