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
int master_run(const struct options *o, const struct settings *s, const struct user_list *users,
               const struct user_list *file_users);

/* ---- what the admin handlers need from the master (master/admin.c) ---- */

struct master;
struct shm_segment;
struct ctrl_msg;

enum master_user_op { MASTER_USER_ADD, MASTER_USER_DEL, MASTER_USER_PASSWD };

struct shm_segment *master_segment(struct master *m);
const struct settings *master_settings(struct master *m);
/* Publish settings changed at runtime and tell the workers. */
void master_apply(struct master *m, const struct settings *s);
/* Reload the configuration file as SIGHUP does: 0, -ENOENT without a file,
 * -EINVAL when it is invalid (nothing changed). */
int master_reload(struct master *m);

/* The congestion controls that s names in client-congestion and
 * target-congestion, where they differ from running (NULL: all), are ones
 * the workers can set: loaded, allowed where the workers have no
 * CAP_NET_ADMIN, and taken by a socket of this process (run as the
 * workers' user).  0, or -EINVAL after one error line naming the setting. */
int master_check_congestion(const struct master *m, const struct settings *s,
                            const struct settings *running);
/* The access rules in force, compiled (never NULL once running). */
struct rules;
const struct rules *master_rules(struct master *m);
/* Change users at runtime; persisted to the configuration file when there
 * is one (*persisted).  Returns 0 or a negative errno: -EEXIST (add: the
 * name exists), -ENOENT (no such user), -EPERM (a user given on the
 * command line: it wins over any change at the next reload, so it is not
 * changed), -EINVAL, -ENOSPC (users table full), -EIO or -ENOMEM. */
int master_user_change(struct master *m, enum master_user_op op, const char *name,
                       const char *pass, bool admin, bool *persisted);
/* Send to worker index; -ESRCH when it is not running. */
int master_worker_send(struct master *m, uint32_t index, const struct ctrl_msg *msg);

#endif
