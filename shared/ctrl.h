/*
 * ctrl: messages between the master and one worker over their socketpair
 * (SOCK_SEQPACKET, one message per datagram).
 */
#ifndef SOCKS5D_CTRL_H
#define SOCKS5D_CTRL_H

#include <stdint.h>

enum ctrl_type {
	/* master -> worker */
	CTRL_CONFIG = 1,        /* settings or users changed: re-read, close sessions of users
	                           removed or whose password changed */
	CTRL_DRAIN = 2,         /* stop accepting, finish sessions within the grace period, exit */
	CTRL_LIST_SESSIONS = 3, /* a = list sessions with id > a, b = at most b of them */
	CTRL_CLOSE_SESSION = 4, /* a = session id */
	/* worker -> master */
	CTRL_SESSIONS = 16,     /* b = count, c = more; followed by b struct ctrl_session */
	CTRL_CLOSED = 17,       /* b = 1 found and closed, 0 not found */
};

struct ctrl_msg {
	uint32_t type;
	uint32_t tag; /* echoed in the answer */
	uint64_t a;
	uint32_t b;
	uint32_t c;
};

/* One session as a worker lists it: a neutral record, which the admin code
 * encodes for its clients (admin/pipo.c).  Both processes are the same
 * binary, so the struct crosses the socketpair as it is. */
enum ctrl_session_state {
	CTRL_SS_HANDSHAKE = 0,
	CTRL_SS_RESOLVING = 1,
	CTRL_SS_CONNECTING = 2,
	CTRL_SS_RELAY = 3,
	CTRL_SS_CLOSING = 4,
};

#define CTRL_NAME_MAX 255
/* At most this many records in one CTRL_SESSIONS message. */
#define CTRL_SESSIONS_MAX 256

struct ctrl_session {
	uint64_t id;
	uint8_t state;  /* enum ctrl_session_state */
	uint8_t family; /* 4 or 6 */
	uint8_t addr[16];
	uint16_t sport; /* the client's address and port */
	uint16_t dport;
	uint8_t cmd; /* the request's command (1 connect, 2 bind, 3 udp), 0 before a request */
	char user[CTRL_NAME_MAX + 1]; /* "" before a login */
	char dest[CTRL_NAME_MAX + 1]; /* as requested (escaped), "" before a request */
	uint64_t up, down, age_ms;
	uint64_t dgrams_up, dgrams_down; /* UDP ASSOCIATE: datagrams each way */
	uint8_t method;     /* RFC 1928 method chosen (0 none, 1 GSS-API, 2 password), 0xff: none yet */
	uint8_t protection; /* GSS-API: the level granted (0-2), 0xff: none (yet) */
};

/* Session ids carry their worker: (index + 1) << CTRL_ID_SHIFT | sequence. */
#define CTRL_ID_SHIFT 40

#endif
