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

#include <stdbool.h>
#include <stdint.h>

#include "../admin/pipo.h"
#include "../admin/pipo1.h"

struct master;
struct shm_segment;

/* What a handler may see of the server. */
struct admin_ctx {
	struct master *m;
	struct shm_segment *seg;
	unsigned admin_sessions; /* open admin sessions, for the metrics */
};

/* The user record an admin session logged in with: its slot in the users
 * table, its id and its password generation. */
struct admin_rights {
	int32_t slot; /* -1: none */
	uint64_t id, gen;
};

/* Do the rights still hold: the same record (id), the same password
 * (generation), the administrator flag?  *only_password (may be NULL) is
 * set when the record and the flag are unchanged but the password is new.
 * Takes the users lock. */
bool admin_rights_hold(struct shm_segment *seg, const struct admin_rights *r,
                       bool *only_password);

/* A query (PIPO_QUERY) or a modification (PIPO_MODIFY) other than the
 * session listing and closing, which wait for the workers (admin.c). */
uint8_t admin_cmd_query(const struct admin_ctx *x, uint8_t cmd, struct pipo_cur *c,
                        struct pipo_buf *b);
uint8_t admin_cmd_modify(const struct admin_ctx *x, uint8_t cmd, struct pipo_cur *c,
                         struct pipo_buf *b);

/* A version-1 request (admin/pipo1.h): the whole response, TYPE and CMD
 * echoed, into b.  Served by the handlers above, its values narrowed to
 * the version-1 widths (clamped at their maximum).  Returns the status of
 * a modification (PIPO1_OK...), PIPO1_OK for a query. */
uint8_t admin_cmd_v1(const struct admin_ctx *x, const struct pipo1_request *r,
                     struct pipo_buf *b);

#endif
