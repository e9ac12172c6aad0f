/*
 * admin: the master's side of the pipo administration protocol
 * (docs/pipo-protocol.txt): the SCTP and unix-domain endpoints, admin
 * sessions (authentication, framing, pipelined requests answered in order)
 * and the request handlers.  It never waits on a client: bounded buffers,
 * a timeout for silent clients, a limit on sessions; password checks run on
 * a helper thread (shared/auth.c).
 *
 * Master loop thread only.
 */
#ifndef SOCKS5D_ADMIN_H
#define SOCKS5D_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "../shared/settings.h"
#include "../shared/loop.h"

struct admin;
struct master;

/* -EEXIST (logged) when something other than a socket is at the unix
 * socket's path: the server must not start over it. */
int admin_open(struct master *m, struct loop *l, struct admin **out);
void admin_close(struct admin *a);
/* In a forked worker: close the master's admin descriptors and free the
 * memory without touching the helper thread, which exists only in the master. */
void admin_forget(struct admin *a);
/* Around fork(): no helper thread may run while the master forks. */
void admin_before_fork(struct admin *a);
void admin_after_fork(struct admin *a);
/* A message from worker `index` on its control socket. */
void admin_worker_msg(struct admin *a, uint32_t index, const uint8_t *msg, size_t len);

#endif
