/*
 * admin_int: what master/admin.c (the transport: sessions, login, framing,
 * back-pressure, timers) shares with master/admin_wait.c (the requests
 * that wait for the workers).  Private to master/admin*.c.
 *
 * Master loop thread only.
 */
#ifndef SOCKS5D_ADMIN_INT_H
#define SOCKS5D_ADMIN_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "../admin/pipo.h"
#include "../admin/pipo1.h"
#include "../shared/loop.h"
#include "admin_cmds.h"

#define ADMIN_MAX_SESSIONS 16 /* logged in */
/* Connections that have not logged in yet have their own, smaller cap and
 * a fixed deadline, so that idle or slow connections cannot keep an
 * administrator out. */
#define ADMIN_MAX_PENDING 8 /* per endpoint */
#define ADMIN_MAX_PENDING_PER_SOURCE 2 /* SCTP: per address */
#define ADMIN_LOGIN_MS 5000
#define ADMIN_SAY_EVERY_MS 1000 /* at most one refusal line per second */
#define ADMIN_IDLE_MS 60000
#define ADMIN_FAIL_DELAY_MS 1000
#define ADMIN_WORKER_WAIT_MS 2000
#define ADMIN_OUT_MAX (4u << 20)
#define ADMIN_IN_BUF 16384

enum pending_kind { PEND_NONE, PEND_LIST, PEND_CLOSE };

struct out_msg {
	struct out_msg *next;
	size_t len, pos;
	uint8_t data[];
};

struct admin_sess {
	struct admin_sess *next;
	struct admin *a;
	struct loop_deferred deferred;
	struct loop_watch w;
	int fd;
	bool authed;
	bool closing; /* send what is queued, then close */
	bool sctp;    /* came in over SCTP (peer is its address), else the unix socket */
	struct sockaddr_storage peer;
	/* The user this session logged in as (or is checking): its rights are
	 * those of this record, re-checked before every request. */
	struct admin_rights rights;
	bool peer_done; /* the client sent EOF: answer what it sent, then close */
	struct rfc1929 auth;
	struct auth_job *job;
	struct pipo_reader rd;
	/* A version-1 session (AUTH with VER 0x01): its requests and answers
	 * are those of admin/pipo1.h, under the same rights and bounds. */
	bool v1;
	struct pipo1_reader rd1;
	uint8_t in[ADMIN_IN_BUF];
	size_t in_pos, in_len;
	struct out_msg *out, **out_tail;
	size_t out_bytes;
	struct loop_timer idle;
	struct loop_timer login; /* the deadline of the login, from accept */
	struct loop_timer delay; /* failed login answered late; worker wait */

	/* A request waiting for the workers (answered before any later one). */
	enum pending_kind pend;
	uint32_t pend_tag;
	uint32_t pend_waiting;
	uint64_t pend_after;
	uint32_t pend_max;
	uint8_t pend_cmd; /* PIPO_Q_SESSIONS or PIPO_Q_SESSIONS_EX: the record layout */
	bool pend_more;
	bool pend_found;
	size_t pend_n;
	struct pipo_session *pend_sessions;
	uint8_t payload[PIPO_MAX_REQUEST];
};

struct admin {
	struct master *m;
	struct loop *loop;
	struct shm_segment *seg;
	struct auth *auth;
	int unix_fd, sctp_fd;
	struct loop_watch unix_w, sctp_w;
	char unix_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	struct loop_tlist idle_tl, login_tl, misc_tl;
	struct admin_sess *sessions;
	unsigned nsessions;   /* all of them */
	unsigned npending[2]; /* not logged in yet, per endpoint: [0] unix, [1] SCTP */
	/* Refusals are said at most once a second, with a count of the rest. */
	int64_t said_at;
	unsigned unsaid;
	struct loop_timer say_rest;
	uint32_t next_tag;
};

/* Send what is queued (and close a closing session once it is sent). */
void admin_flush(struct admin_sess *s);
/* Queue one response; an error status carries no body. */
void admin_respond(struct admin_sess *s, uint8_t type, uint8_t cmd, uint8_t status,
                   const struct pipo_buf *body);
/* Parse and answer what is buffered, in order, until a request waits. */
void admin_process(struct admin_sess *s);

/* Start a session listing or a close; OK when the request waits for
 * s->pend_waiting workers (0: answer at once with admin_finish_pending). */
uint8_t admin_start_list(struct admin_sess *s, struct pipo_cur *c);
uint8_t admin_start_close(struct admin_sess *s, struct pipo_cur *c);
/* Answer the waiting request with what the workers said, then go on. */
void admin_finish_pending(struct admin_sess *s);

#endif
