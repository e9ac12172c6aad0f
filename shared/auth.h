/*
 * auth: RFC 1929 password checks for a worker without stalling its loop.
 *
 * A password already verified for a user is remembered as a keyed hash
 * (HMAC-SHA256 under a per-process random key) next to the user's id and
 * credential generation, and answered at once.  Anything else is verified
 * against the crypt(3) hash on one helper thread; the answer comes back to
 * the loop through an eventfd.  Deleting a user or changing its password
 * changes the id or generation, so a remembered verification is dropped at
 * once.
 *
 * Loop thread only (the helper thread is internal).
 */
#ifndef SOCKS5D_AUTH_H
#define SOCKS5D_AUTH_H

#include <stdbool.h>
#include <stdint.h>

#include "../shared/shm.h"
#include "loop.h"

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
 * later unless auth_cancel(*job) is called first. */
enum auth_result auth_check(struct auth *a, int slot, const struct shm_user *user, const char *pass,
                            auth_cb *cb, void *arg, struct auth_job **job);
/* The callback will not run; a check not yet started is dropped. */
void auth_cancel(struct auth *a, struct auth_job *job);

#endif
