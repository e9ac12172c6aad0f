/*
 * auth: RFC 1929 password checks for a worker without stalling its loop,
 * and the defences of that path against login floods.
 *
 * A password already verified for a user is remembered as a keyed hash
 * (HMAC-SHA256 under a per-process random key) next to the user's id and
 * credential generation, and answered at once.  Anything else is verified
 * against the crypt(3) hash on one helper thread; the answer comes back to
 * the loop through an eventfd.  Deleting a user or changing its password
 * changes the id or generation, so a remembered verification is dropped at
 * once.
 *
 * Floods (checks given a source address, auth_check_from):
 * - the queue is fair: pending checks wait in one queue per source
 *   (guard.h's source key) and the helper takes one from each source in
 *   turn, sources not served yet and without failures first; a source has
 *   at most AUTH_MAX_PER_SOURCE waiting (identical checks, answered by one
 *   hash, aside); when all AUTH_MAX_PENDING places are taken, a source
 *   with fewer waiting checks takes the place of the newest check of the
 *   source with the most, which is answered as a failure (not counted as
 *   one); a login that finds no place waits on a retry timer;
 * - failures back off (guard.h), per source and per (user name, source
 *   network /24 or /48): an attempt of a key in back-off is held on a
 *   timer before anything is looked at, remembered checks included, so
 *   that giving up early tells a guesser nothing;
 * - sessions that have not finished authentication are counted per source
 *   (auth_conn_open), so that a cap can refuse more.
 *
 * Loop thread only (the helper thread is internal).
 */
#ifndef SOCKS5D_AUTH_H
#define SOCKS5D_AUTH_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

#include "../shared/shm.h"
#include "loop.h"

#define AUTH_MAX_PENDING 256
#define AUTH_MAX_PER_SOURCE 32

struct auth;
struct auth_job;

typedef void auth_cb(void *arg, bool ok);

enum auth_result {
	AUTH_FAIL = 0,
	AUTH_OK = 1,
	AUTH_PENDING = 2,
	AUTH_BUSY = 3, /* too many checks queued: the client should retry later */
};

int auth_new(struct loop *l, struct auth **out);
/* Count what the flood defences do in this worker's metrics slot. */
void auth_set_metrics(struct auth *a, struct shm_worker_slot *slot);
void auth_free(struct auth *a);
/* Stop the helper thread (after the check it is running) and start it
 * again: a process that forks must have no other thread at that moment,
 * or the child may inherit a lock (the allocator's) that nobody releases.
 * Queued checks wait and go on after auth_resume. */
void auth_pause(struct auth *a);
int auth_resume(struct auth *a);
/* In a process forked from the owner: free the memory and descriptors
 * without the helper thread, which did not survive the fork. */
void auth_forget(struct auth *a);

/* user is NULL when the name is unknown (a dummy hash is still checked so
 * that timing does not reveal which names exist).  On AUTH_PENDING, cb runs
 * later unless auth_cancel(*job) is called first.  Without a source: no
 * back-off, one queue for all such checks. */
enum auth_result auth_check(struct auth *a, int slot, const struct shm_user *user, const char *pass,
                            auth_cb *cb, void *arg, struct auth_job **job);
/* The same for a login from peer under the name it gave. */
enum auth_result auth_check_from(struct auth *a, const struct sockaddr_storage *peer,
                                 const char *name, int slot, const struct shm_user *user,
                                 const char *pass, auth_cb *cb, void *arg, struct auth_job **job);
/* The callback will not run; a check not yet started is dropped. */
void auth_cancel(struct auth *a, struct auth_job *job);

/* A session from peer starts its handshake: false (and counted) when peer
 * already has cap sessions that have not finished authentication (cap 0:
 * no limit).  Each true is matched by one auth_conn_done. */
bool auth_conn_open(struct auth *a, const struct sockaddr_storage *peer, uint32_t cap);
void auth_conn_done(struct auth *a, const struct sockaddr_storage *peer);

#endif
