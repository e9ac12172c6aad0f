/*
 * udp: UDP ASSOCIATE (RFC 1928 section 7) — one association per session
 * whose request asked for it.  It owns the relay socket the client sends
 * to (bound on the address the client reached the proxy at), one
 * outbound socket per address family opened on demand, the client-source
 * check, the reply filter (udp-filter), a small bounded queue of datagrams
 * waiting for name lookups, and the idle timer.  The association ends with
 * its control connection (session_finalize calls udp_end).
 *
 * Datagrams are read and written in batches (recvmmsg/sendmmsg) through
 * buffers the worker allocates once, with its first association; nothing
 * is allocated per datagram.  Loop thread only.
 */
#ifndef SOCKS5D_UDP_H
#define SOCKS5D_UDP_H

#include <stddef.h>

struct session;

/* The request is UDP ASSOCIATE: open the relay socket, answer with its
 * address, and relay until the control connection closes. */
void udp_begin(struct session *s);
/* Close the association's sockets and cancel its lookups (from
 * session_finalize; safe when the session has none). */
void udp_end(struct session *s);
/* Outbound sockets open in this worker, for its descriptor budget (the
 * relay socket takes the place of a session's target descriptor). */
size_t udp_fds_open(void);

#endif
