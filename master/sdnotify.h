/*
 * sdnotify: the service manager's notification protocol (sd_notify(3)):
 * one datagram of "KEY=VALUE\n" lines to the AF_UNIX socket named by
 * $NOTIFY_SOCKET (a path, or an abstract name written with a leading '@'),
 * and the watchdog period from $WATCHDOG_USEC / $WATCHDOG_PID.  Master only;
 * workers never send (the manager accepts the main process only).
 *
 * Written here rather than linked from libsystemd: the protocol is one
 * sendto(), and the master must never block on it (MSG_DONTWAIT here).
 */
#ifndef SOCKS5D_SDNOTIFY_H
#define SOCKS5D_SDNOTIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

struct sdnotify {
	int fd; /* -1: off (no $NOTIFY_SOCKET, or it could not be used) */
	struct sockaddr_un addr;
	socklen_t addrlen;
	uint64_t watchdog_usec; /* 0: no watchdog asked for us */
};

/* The address in a $NOTIFY_SOCKET value: "/path" or "@abstract".  0 or
 * -EINVAL (empty, relative, longer than sun_path). */
int sdnotify_parse_address(const char *value, struct sockaddr_un *addr, socklen_t *len);

/* The watchdog period for process self from $WATCHDOG_USEC and
 * $WATCHDOG_PID (either may be NULL): 0 when none is asked for us. */
uint64_t sdnotify_parse_watchdog(const char *usec, const char *pid, pid_t self);

/* Read the environment and remove the three variables from it (a program
 * a worker or a helper might run must not speak for us).  Always leaves n
 * usable; returns 0, or a negative errno with the reason in err when
 * $NOTIFY_SOCKET is set but unusable (n is then off). */
int sdnotify_open(struct sdnotify *n, char *err, size_t errlen);

static inline bool sdnotify_on(const struct sdnotify *n)
{
	return n->fd >= 0;
}

/* Send one message (lines separated by '\n'); never blocks.  0 when off,
 * else 0 or a negative errno. */
int sdnotify_send(struct sdnotify *n, const char *msg);

/* "RELOADING=1\nMONOTONIC_USEC=<now>" then status: what a manager that
 * waits for the reload to be acknowledged wants. */
int sdnotify_reloading(struct sdnotify *n, const char *status);

void sdnotify_close(struct sdnotify *n);

#endif
