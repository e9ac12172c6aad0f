/*
 * master: the supervising process.  Owns the shared segment, the listening
 * sockets and the workers; handles SIGCHLD (respawn with back-off), SIGHUP
 * (reload) and SIGTERM/SIGINT (drain) through a signalfd in its own loop.
 * The master never relays data.
 */
#ifndef SOCKS5D_MASTER_H
#define SOCKS5D_MASTER_H

#include "options.h"

/* Run until drained.  Returns the exit status, in the master and (after
 * its worker ends) in each forked worker, which unwinds to main(). */
int master_run(const struct options *o, const struct settings *s, const struct user_list *users);

#endif
