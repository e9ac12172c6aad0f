/*
 * ctrl: messages from the master to one worker over their socketpair
 * (SOCK_SEQPACKET, one message per datagram).
 */
#ifndef SOCKS5D_CTRL_H
#define SOCKS5D_CTRL_H

#include <stdint.h>

enum ctrl_type {
	CTRL_CONFIG = 1, /* settings or users changed: re-read, close sessions of removed users */
	CTRL_DRAIN = 2,  /* stop accepting, finish sessions within the grace period, exit */
};

struct ctrl_msg {
	uint32_t type;
	uint32_t reserved;
	uint64_t arg;
};

#endif
