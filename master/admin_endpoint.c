#include "admin_endpoint.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "../shared/addr.h"

void admin_endpoint_default_path(char *out, size_t len)
{
	const char *rt = getenv("RUNTIME_DIRECTORY");
	if (rt && *rt) {
		/* systemd may list several directories separated by ':'. */
		snprintf(out, len, "%.*s/socks5d.sock", (int)strcspn(rt, ":"), rt);
	} else if (geteuid() == 0) {
		(void)mkdir("/run/socks5d", 0700);
		snprintf(out, len, "/run/socks5d/socks5d.sock");
	} else {
		snprintf(out, len, "socks5d.sock");
	}
}

int admin_endpoint_unix(const char *path)
{
	struct sockaddr_un sun = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof sun.sun_path)
		return -ENAMETOOLONG;
	memcpy(sun.sun_path, path, strlen(path) + 1);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	/* A socket file left by a server that is gone is replaced; one that a
	 * live server answers on is not taken over, and anything else (a
	 * file, a symbolic link) is never removed. */
	struct stat st;
	if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
		close(fd);
		return -EEXIST;
	}
	int probe = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (probe >= 0) {
		if (connect(probe, (struct sockaddr *)&sun, sizeof sun) == 0) {
			close(probe);
			close(fd);
			return -EADDRINUSE;
		}
		if (errno == ECONNREFUSED)
			unlink(path);
		close(probe);
	}
	mode_t old = umask(0177);
	int rc = bind(fd, (struct sockaddr *)&sun, sizeof sun);
	umask(old);
	if (rc < 0 || chmod(path, 0600) < 0 || listen(fd, 16) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}

int admin_endpoint_sctp(const char *addr, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (addr_parse(addr, port, &ss, &len) < 0)
		return -EINVAL;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, IPPROTO_SCTP);
	if (fd < 0)
		return -errno;
	int one = 1;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 16) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	return fd;
}
