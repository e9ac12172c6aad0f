#include "sdnotify.h"

#include <errno.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

int sdnotify_parse_address(const char *value, struct sockaddr_un *addr, socklen_t *len)
{
	size_t n = value ? strlen(value) : 0;
	if (n < 2 || (value[0] != '/' && value[0] != '@') || n > sizeof addr->sun_path - 1)
		return -EINVAL;
	memset(addr, 0, sizeof *addr);
	addr->sun_family = AF_UNIX;
	memcpy(addr->sun_path, value, n);
	/* An abstract name: a leading NUL, and the length says where it ends. */
	if (value[0] == '@')
		addr->sun_path[0] = '\0';
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (value[0] == '/'));
	return 0;
}

static bool parse_u64(const char *s, uint64_t *out)
{
	if (!s || *s < '0' || *s > '9')
		return false;
	errno = 0;
	char *end;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

uint64_t sdnotify_parse_watchdog(const char *usec, const char *pid, pid_t self)
{
	uint64_t v, p;
	if (!parse_u64(usec, &v) || v == 0)
		return 0;
	if (pid && (!parse_u64(pid, &p) || p != (uint64_t)self))
		return 0;
	return v;
}

int sdnotify_open(struct sdnotify *n, char *err, size_t errlen)
{
	memset(n, 0, sizeof *n);
	n->fd = -1;
	const char *sock = getenv("NOTIFY_SOCKET");
	if (sock && !*sock)
		sock = NULL; /* set empty: none */
	n->watchdog_usec = sdnotify_parse_watchdog(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"),
	                                           getpid());
	int rc = 0;
	if (sock) {
		if (sdnotify_parse_address(sock, &n->addr, &n->addrlen) < 0) {
			snprintf(err, errlen, "NOTIFY_SOCKET: not an absolute path or an @name that fits");
			rc = -EINVAL;
		} else if ((n->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0) {
			rc = -errno;
			snprintf(err, errlen, "NOTIFY_SOCKET: socket: %s", strerror(-rc));
		}
	}
	if (n->fd < 0)
		n->watchdog_usec = 0; /* nobody to tell */
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	return rc;
}

int sdnotify_send(struct sdnotify *n, const char *msg)
{
	if (n->fd < 0)
		return 0;
	/* Not connected: the path is looked up at each send, so a manager
	 * that re-executes itself (and binds its socket again) still hears us. */
	if (sendto(n->fd, msg, strlen(msg), MSG_DONTWAIT | MSG_NOSIGNAL,
	           (const struct sockaddr *)&n->addr, n->addrlen) < 0)
		return -errno;
	return 0;
}

int sdnotify_reloading(struct sdnotify *n, const char *status)
{
	if (n->fd < 0)
		return 0;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	char msg[512];
	snprintf(msg, sizeof msg, "RELOADING=1\nMONOTONIC_USEC=%" PRIu64 "\nSTATUS=%s",
	         (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u, status);
	return sdnotify_send(n, msg);
}

void sdnotify_close(struct sdnotify *n)
{
	if (n->fd >= 0)
		close(n->fd);
	n->fd = -1;
}
