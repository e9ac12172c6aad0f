/*
 * gssapi: the GSS-API authentication method of SOCKS5 (RFC 1961) with
 * MIT Kerberos: context establishment, protection-level negotiation and
 * per-message encapsulation of the request, the replies and the relayed
 * stream.
 *
 * gss_accept_sec_context reads the keytab and the replay cache: it runs
 * on one helper thread per worker (struct gss_worker), never on the loop;
 * its answer comes back through an eventfd.  Wrapping and unwrapping
 * (symmetric crypto on data in memory) run on the loop.
 *
 * The session side (gss_begin and what follows) lives in
 * worker/session_int.h's world: see the declarations there.
 */
#ifndef SOCKS5D_GSSAPI_H
#define SOCKS5D_GSSAPI_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../shared/loop.h"
#include "../shared/settings.h"

/* RFC 1961 protection levels (0: none, as curl and Dante use it). */
enum gss_level {
	GSS_LEVEL_CLEAR = 0,
	GSS_LEVEL_INTEGRITY = 1,
	GSS_LEVEL_CONFIDENTIALITY = 2,
	GSS_LEVEL_PER_MESSAGE = 3, /* RFC 1961's selective level: not served */
};

/* Context establishments waiting for or on the helper thread, per worker:
 * more are refused (01 FF) at once. */
#define GSS_MAX_PENDING 128

struct gss_worker;

/* The helper thread and its eventfd on loop l. */
int gss_worker_new(struct loop *l, struct gss_worker **out);
void gss_worker_free(struct gss_worker *g);
/* The keytab and service of new context establishments (settings in
 * force); the thread acquires its credentials again when they change. */
void gss_worker_configure(struct gss_worker *g, const struct settings *cfg);

/* At start and reload: can this process read the keytab, and does it hold
 * a key of the service?  0, or -1 with a one-line reason in err. */
int gss_check_keytab(const char *keytab, const char *service, char *err, size_t len);

/* "clear", "integrity", "confidentiality" or "level N". */
const char *gss_level_name(uint8_t level);

#endif
