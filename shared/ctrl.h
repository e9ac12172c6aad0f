/*
 * ctrl: messages between the master and one worker over their socketpair
 * (SOCK_SEQPACKET, one message per datagram).
 */
#ifndef SOCKS5D_CTRL_H
#define SOCKS5D_CTRL_H

#include <stdint.h>

enum ctrl_type {
	/* master -> worker */
	CTRL_CONFIG = 1,        /* settings or users changed: re-read, close sessions of removed users */
	CTRL_DRAIN = 2,         /* stop accepting, finish sessions within the grace period, exit */
	CTRL_LIST_SESSIONS = 3, /* a = list sessions with id > a, b = at most b of them */
	CTRL_CLOSE_SESSION = 4, /* a = session id */
	/* worker -> master */
	CTRL_SESSIONS = 16,     /* b = count, c = more; followed by b struct pipo_session */
	CTRL_CLOSED = 17,       /* b = 1 found and closed, 0 not found */
};

struct ctrl_msg {
	uint32_t type;
	uint32_t tag; /* echoed in the answer */
	uint64_t a;
	uint32_t b;
	uint32_t c;
};

/* Session ids carry their worker: (index + 1) << CTRL_ID_SHIFT | sequence. */
#define CTRL_ID_SHIFT 40

#endif
