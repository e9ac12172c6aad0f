/*
 * admin_cmds: the request handlers of the pipo administration protocol
 * (docs/pipo-protocol.txt), apart from the transport in admin.c: each is
 * given a request payload and fills a response body, and returns a pipo
 * status.  They reach the server through the master's interface
 * (master.h) only, so a test can link them against a stand-in master.
 *
 * Master loop thread only.
 */
#ifndef SOCKS5D_ADMIN_CMDS_H
#define SOCKS5D_ADMIN_CMDS_H

#include <stdint.h>

#include "../admin/pipo.h"

struct master;
struct shm_segment;

/* What a handler may see of the server. */
struct admin_ctx {
	struct master *m;
	struct shm_segment *seg;
	unsigned admin_sessions; /* open admin sessions, for the metrics */
};

/* A query (PIPO_QUERY) or a modification (PIPO_MODIFY) other than the
 * session listing and closing, which wait for the workers (admin.c). */
uint8_t admin_cmd_query(const struct admin_ctx *x, uint8_t cmd, struct pipo_cur *c,
                        struct pipo_buf *b);
uint8_t admin_cmd_modify(const struct admin_ctx *x, uint8_t cmd, struct pipo_cur *c,
                         struct pipo_buf *b);

#endif
