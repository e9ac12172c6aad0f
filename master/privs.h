/*
 * privs: running as an unprivileged user once what needs root exists (the
 * listening sockets, the admin endpoints, the shared segment, the raised
 * descriptor limit).  Master only, before any worker is forked.
 */
#ifndef SOCKS5D_PRIVS_H
#define SOCKS5D_PRIVS_H

#include <stddef.h>
#include <sys/types.h>

struct privs {
	uid_t uid;
	gid_t gid;
};

/* Resolve "USER" or "USER:GROUP" (names or numbers; GROUP defaults to
 * USER's login group).  0, or -EINVAL with the reason in err. */
int privs_lookup(const char *spec, struct privs *p, char *err, size_t errlen);

/* Become p->uid/p->gid for good (real, effective and saved ids;
 * supplementary groups reset to p->gid), which leaves no capability.
 * Checks that root cannot be regained.  0 or a negative errno with err. */
int privs_drop(const struct privs *p, char *err, size_t errlen);

/* In a worker after fork: forbid gaining privileges through execve, and
 * make sure no capability is left.  0 or a negative errno. */
int privs_drop_all_caps(void);

#endif
