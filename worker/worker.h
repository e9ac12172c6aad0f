/*
 * worker: one worker process — its loop, listeners, sessions, resolver,
 * password checker and relay buffer pool.  Runs in the forked child.
 */
#ifndef SOCKS5D_WORKER_H
#define SOCKS5D_WORKER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../shared/settings.h"
#include "../shared/shm.h"
#include "../shared/loop.h"
#include "proxyproto.h"

struct resolver;
struct auth;
struct rules;
struct gss_worker;

/* A relay buffer: start/end of the allocation, pos/last of the data. */
struct rbuf {
	struct rbuf *next_free;
	uint32_t cap;
	uint32_t pos;
	uint32_t last;
	uint8_t data[];
};

struct listener {
	struct loop_watch w;
	int fd;
};

struct worker {
	struct loop loop;
	struct shm_segment *seg;
	struct shm_worker_slot *slot;
	uint32_t index;
	struct settings cfg;
	uint64_t cfg_gen;
	struct resolver *resolver;
	struct auth *auth;
	struct gss_worker *gss; /* GSS-API's helper thread, once configured */
	int64_t gss_fail_said_at; /* the last failed GSS-API login said at info */
	struct rules *rules; /* compiled from the segment's text of generation rules_gen */
	struct proxyproto_trust proxy_trust; /* from cfg.proxy_protocol */
	uint64_t rules_gen;

	int ctrl_fd;
	struct loop_watch ctrl_w;
	int sig_fd;
	struct loop_watch sig_w;
	struct loop_watch log_w[2];

	size_t nlisteners;
	struct listener listeners[SETTINGS_MAX_LISTEN + 1];
	uint32_t listen_events; /* EPOLLIN, | EPOLLEXCLUSIVE on shared sockets */
	bool accepting;
	bool draining;
	int64_t last_accept_warn;
	int64_t congestion_failed_at[2]; /* client, target: when the name failed */
	char congestion_failed[2][16];   /* that name */
	int64_t last_auth_busy_warn;
	int64_t last_proxy_warn; /* a trusted balancer without a valid PROXY header */
	/* Failed logins: one line a second; the others are counted, and said
	 * with the last one's user and address when the second is over. */
	int64_t auth_fail_said_at;
	uint32_t auth_fail_unsaid;
	char auth_fail_last[(SHM_USER_NAME_MAX * 4 + 6) + 96];
	struct loop_timer auth_fail_timer;
	/* Refusal records (session_log_refusal): SESSION_REFUSALS_PER_SEC in
	 * the second that began at refusal_window; the rest counted. */
	int64_t refusal_window;
	uint32_t refusals_written;
	uint32_t refusals_unwritten;
	struct loop_timer refusal_timer;

	struct loop_tlist handshake_tl; /* greeting to reply */
	struct loop_tlist connect_tl;   /* one connect attempt */
	struct loop_tlist idle_tl;      /* relay idle timeout */
	struct loop_tlist linger_tl;    /* draining input after a failure reply (2 s) */
	struct loop_tlist attempt_tl;   /* the delay before the next connection attempt */
	struct loop_tlist misc_tl;      /* any deadline: accept pause, grace */
	struct loop_timer accept_timer;
	struct loop_timer grace_timer;

	struct list_node sessions;
	size_t nsessions;
	size_t fd_limit;  /* RLIMIT_NOFILE */
	size_t fd_reserve; /* kept for everything but sessions and pipes */
	uint64_t next_session_id;

	struct rbuf *free_bufs;
	size_t nfree_bufs;
};

struct worker_args {
	uint32_t index;
	struct shm_segment *seg;
	int ctrl_fd;
	const int *listen_fds; /* shared by every worker, or this worker's own */
	size_t nlisten;
	bool exclusive; /* shared sockets (accept exclusive): watch with EPOLLEXCLUSIVE */
};

/* Run the worker; returns the process exit status. */
int worker_main(const struct worker_args *args);

/* Whether the descriptor limit leaves n more beyond what the sessions (two
 * each), the splice pipes (two each) and the reserve need. */
bool worker_fd_room(const struct worker *wk, size_t n);

/* Set the congestion control of client-congestion (target false) or
 * target-congestion on a TCP socket; unset, nothing.  A name the kernel
 * refuses is said, and not tried again for a minute (the sockets keep the
 * system's meanwhile). */
void worker_congestion(struct worker *wk, int fd, bool target);

struct rbuf *worker_buf_get(struct worker *wk);
void worker_buf_put(struct worker *wk, struct rbuf *b);
/* Called by a session when it ends. */
void worker_session_gone(struct worker *wk);
/* The client rules on a client's address (counted, a block logged when its
 * rule says so): false when they block it.  At accept, or once a trusted
 * balancer's PROXY header has given the address. */
struct sockaddr_storage;
bool worker_client_allowed(struct worker *wk, const struct sockaddr_storage *peer);

#endif
