/*
 * pipoClient transport: SCTP one-to-one or unix stream socket, the AUTH
 * exchange, pipelined request batches and the frame reader.  The socket is
 * non-blocking and every wait is a poll(2) bounded by the timeout, so a
 * silent server makes the client fail, never hang.
 */
#include "pc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

void pc_err(const char *fmt, ...)
{
	va_list ap;
	fputs("pipoClient: ", stderr);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
}

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Wait for events on fd until the absolute deadline; 1 ready, 0 timeout,
 * -1 error (errno set). */
static int wait_fd(int fd, short events, int64_t deadline)
{
	for (;;) {
		int64_t left = deadline - now_ms();
		if (left <= 0)
			return 0;
		struct pollfd p = {.fd = fd, .events = events};
		int r = poll(&p, 1, left > 60000 ? 60000 : (int)left);
		if (r > 0)
			return 1;
		if (r < 0 && errno != EINTR)
			return -1;
	}
}

static int connect_wait(int fd, const struct sockaddr *sa, socklen_t len, int timeout_ms)
{
	if (connect(fd, sa, len) == 0)
		return 0;
	if (errno != EINPROGRESS && errno != EINTR)
		return -errno;
	int r = wait_fd(fd, POLLOUT, now_ms() + timeout_ms);
	if (r == 0)
		return -ETIMEDOUT;
	if (r < 0)
		return -errno;
	int err = 0;
	socklen_t el = sizeof err;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) < 0)
		return -errno;
	return err ? -err : 0;
}

static int connect_unix(struct pc_conn *c, const char *path, int timeout_ms)
{
	struct sockaddr_un sun;
	memset(&sun, 0, sizeof sun);
	sun.sun_family = AF_UNIX;
	snprintf(c->where, sizeof c->where, "unix socket %s", path);
	if (strlen(path) >= sizeof sun.sun_path) {
		pc_err("cannot connect to %s: path too long (max %zu bytes)", c->where,
		       sizeof sun.sun_path - 1);
		return PC_EXIT_CONNECT;
	}
	memcpy(sun.sun_path, path, strlen(path));
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		pc_err("cannot create a unix socket: %s", strerror(errno));
		return PC_EXIT_CONNECT;
	}
	int e = connect_wait(c->fd, (struct sockaddr *)&sun, sizeof sun, timeout_ms);
	if (e) {
		pc_err("cannot connect to %s: %s", c->where, strerror(-e));
		return PC_EXIT_CONNECT;
	}
	return PC_EXIT_OK;
}

static int connect_sctp(struct pc_conn *c, const char *addr, unsigned port, int timeout_ms)
{
	/* Accept "[::1]" as well as "::1". */
	char host[256];
	size_t al = strlen(addr);
	if (al >= 2 && addr[0] == '[' && addr[al - 1] == ']') {
		addr++;
		al -= 2;
	}
	if (al == 0 || al >= sizeof host) {
		pc_err("bad server address '%s'", addr);
		return PC_EXIT_USAGE;
	}
	memcpy(host, addr, al);
	host[al] = '\0';
	snprintf(c->where, sizeof c->where, "%s port %u (SCTP)", host, port);

	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof hints);
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	int g = getaddrinfo(host, NULL, &hints, &res);
	if (g != 0) {
		pc_err("cannot connect to %s: %s", c->where, gai_strerror(g));
		return PC_EXIT_CONNECT;
	}
	int last = ECONNREFUSED;
	int rc = PC_EXIT_CONNECT;
	/* Every address in turn, each bounded by the timeout. */
	for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
		if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
			continue;
		struct sockaddr_storage ss;
		memcpy(&ss, ai->ai_addr, ai->ai_addrlen);
		if (ai->ai_family == AF_INET)
			((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)port);
		else
			((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)port);
		int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
		                IPPROTO_SCTP);
		if (fd < 0) {
			last = errno;
			if (errno == EPROTONOSUPPORT || errno == ESOCKTNOSUPPORT)
				break;
			continue;
		}
		int e = connect_wait(fd, (struct sockaddr *)&ss, ai->ai_addrlen, timeout_ms);
		if (e == 0) {
			c->fd = fd;
			rc = PC_EXIT_OK;
			break;
		}
		last = -e;
		close(fd);
	}
	freeaddrinfo(res);
	if (rc == PC_EXIT_OK) {
		c->sctp = true;
		return rc;
	}
	if (last == EPROTONOSUPPORT || last == ESOCKTNOSUPPORT)
		pc_err("cannot connect to %s: this kernel has no SCTP (use --socket PATH for the "
		       "server's unix socket)",
		       c->where);
	else
		pc_err("cannot connect to %s: %s", c->where, strerror(last));
	return PC_EXIT_CONNECT;
}

int pc_connect(struct pc_conn *c, const struct pc_target *t)
{
	memset(c, 0, sizeof *c);
	c->fd = -1;
	c->timeout_ms = t->timeout_ms;
	c->payload = malloc(PIPO_MAX_RESPONSE);
	if (!c->payload) {
		pc_err("out of memory");
		return PC_EXIT_CONNECT;
	}
	pipo_reader_init(&c->rd, c->payload, PIPO_MAX_RESPONSE);
	int rc = t->socket ? connect_unix(c, t->socket, t->timeout_ms)
	                   : connect_sctp(c, t->addr, t->port, t->timeout_ms);
	if (rc != PC_EXIT_OK)
		pc_close(c);
	return rc;
}

void pc_close(struct pc_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	free(c->payload);
	c->payload = NULL;
}

bool pc_peer_closed(struct pc_conn *c)
{
	if (c->fd < 0)
		return true;
	if (c->in_pos < c->in_len)
		return false;
	struct pollfd p = {.fd = c->fd, .events = POLLIN};
	if (poll(&p, 1, 0) <= 0)
		return false;
	if (p.revents & (POLLERR | POLLHUP))
		return true;
	uint8_t b;
	ssize_t r = recv(c->fd, &b, 1, MSG_PEEK);
	return r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR);
}

/* Write all of the iovecs as one message (SCTP) or a byte stream (unix). */
static int send_all(struct pc_conn *c, struct iovec *iov, int iovcnt, int64_t deadline)
{
	struct msghdr m;
	memset(&m, 0, sizeof m);
	m.msg_iov = iov;
	m.msg_iovlen = (size_t)iovcnt;
	for (;;) {
		ssize_t w = sendmsg(c->fd, &m, MSG_NOSIGNAL);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				int r = wait_fd(c->fd, POLLOUT, deadline);
				if (r == 0) {
					pc_err("%s: timed out sending", c->where);
					return PC_EXIT_CONNECT;
				}
				if (r > 0)
					continue;
			}
			if (c->authenticating && (errno == EPIPE || errno == ECONNRESET))
				pc_err("%s: the server closed the connection before the login "
				       "(too many administration sessions?)",
				       c->where);
			else
				pc_err("%s: connection lost while sending: %s", c->where,
				       strerror(errno));
			return PC_EXIT_CONNECT;
		}
		/* Advance past what was written (an SCTP message goes whole). */
		size_t left = (size_t)w;
		while (m.msg_iovlen && left >= m.msg_iov->iov_len) {
			left -= m.msg_iov->iov_len;
			m.msg_iov++;
			m.msg_iovlen--;
		}
		if (m.msg_iovlen == 0)
			return PC_EXIT_OK;
		m.msg_iov->iov_base = (uint8_t *)m.msg_iov->iov_base + left;
		m.msg_iov->iov_len -= left;
	}
}

static int fill(struct pc_conn *c, int64_t deadline)
{
	for (;;) {
		ssize_t r = recv(c->fd, c->in, sizeof c->in, 0);
		if (r > 0) {
			c->in_pos = 0;
			c->in_len = (size_t)r;
			return PC_EXIT_OK;
		}
		if (r == 0 || (r < 0 && errno == ECONNRESET)) {
			if (c->authenticating)
				pc_err("%s: the server closed the connection before answering the login "
				       "(too many administration sessions?)",
				       c->where);
			else
				pc_err("%s: connection closed by the server", c->where);
			return PC_EXIT_CONNECT;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN) {
			pc_err("%s: connection lost: %s", c->where, strerror(errno));
			return PC_EXIT_CONNECT;
		}
		int w = wait_fd(c->fd, POLLIN, deadline);
		if (w == 0) {
			pc_err("%s: no answer from the server within %d s", c->where,
			       c->timeout_ms / 1000);
			return PC_EXIT_CONNECT;
		}
		if (w < 0) {
			pc_err("%s: poll: %s", c->where, strerror(errno));
			return PC_EXIT_CONNECT;
		}
	}
}

int pc_auth(struct pc_conn *c, const char *user, const char *pass)
{
	uint8_t msg[3 + 2 * PIPO_MAX_NAME];
	size_t n = pipo_auth_encode(msg, sizeof msg, user, pass);
	if (n == 0) {
		pc_err("user name and password must each be 1..%d bytes", PIPO_MAX_NAME);
		return PC_EXIT_USAGE;
	}
	int64_t deadline = now_ms() + c->timeout_ms;
	struct iovec iov = {.iov_base = msg, .iov_len = n};
	c->authenticating = true;
	int rc = send_all(c, &iov, 1, deadline);
	explicit_bzero(msg, sizeof msg);
	if (rc) {
		c->authenticating = false;
		return rc;
	}
	uint8_t ans[2];
	size_t got = 0;
	/* A failed attempt is answered only after a second: wait long enough. */
	deadline = now_ms() + c->timeout_ms + 2000;
	while (got < 2) {
		if (c->in_pos == c->in_len) {
			rc = fill(c, deadline);
			if (rc) {
				c->authenticating = false;
				return rc;
			}
		}
		ans[got++] = c->in[c->in_pos++];
	}
	c->authenticating = false;
	if (ans[1] == PIPO_AUTH_OK && ans[0] == PIPO_VERSION)
		return PC_EXIT_OK;
	if (ans[1] == PIPO_AUTH_FAILED) {
		pc_err("authentication failed for user '%s' at %s: wrong name or password, or not "
		       "an administrator",
		       user, c->where);
		return PC_EXIT_AUTH;
	}
	if (ans[1] == PIPO_AUTH_BAD_VERSION) {
		pc_err("%s does not speak pipo protocol version %d", c->where, PIPO_VERSION);
		return PC_EXIT_AUTH;
	}
	pc_err("%s: unexpected answer to authentication: %02x %02x", c->where, ans[0], ans[1]);
	return PC_EXIT_PROTOCOL;
}

void pc_batch_init(struct pc_batch *b)
{
	b->len = 0;
	b->n = 0;
	b->overflow = false;
	b->off[0] = 0;
}

void pc_batch_add(struct pc_batch *b, uint8_t type, uint8_t cmd, const void *payload, size_t len)
{
	if (b->overflow || b->n >= PC_BATCH_MAX || sizeof b->buf - b->len < PIPO_HEADER_LEN + len) {
		b->overflow = true;
		return;
	}
	pipo_header_encode(b->buf + b->len, type, cmd, 0, (uint32_t)len);
	if (len)
		memcpy(b->buf + b->len + PIPO_HEADER_LEN, payload, len);
	b->len += PIPO_HEADER_LEN + len;
	b->off[++b->n] = b->len;
}

int pc_send(struct pc_conn *c, const struct pc_batch *b)
{
	if (b->overflow) {
		pc_err("request too long");
		return PC_EXIT_USAGE;
	}
	int64_t deadline = now_ms() + c->timeout_ms;
	if (!c->sctp) {
		/* Pipelining: the whole batch in one write. */
		struct iovec iov = {.iov_base = (void *)b->buf, .iov_len = b->len};
		return send_all(c, &iov, 1, deadline);
	}
	/* SCTP: one message per request, all handed to the kernel in one call
	 * without waiting for answers. */
	struct mmsghdr mm[PC_BATCH_MAX];
	struct iovec iov[PC_BATCH_MAX];
	memset(mm, 0, sizeof mm);
	for (size_t i = 0; i < b->n; i++) {
		iov[i].iov_base = (void *)(b->buf + b->off[i]);
		iov[i].iov_len = b->off[i + 1] - b->off[i];
		mm[i].msg_hdr.msg_iov = &iov[i];
		mm[i].msg_hdr.msg_iovlen = 1;
	}
	size_t done = 0;
	while (done < b->n) {
		int r = sendmmsg(c->fd, mm + done, (unsigned)(b->n - done), MSG_NOSIGNAL);
		if (r > 0) {
			done += (size_t)r;
			continue;
		}
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0 && errno == EAGAIN) {
			int w = wait_fd(c->fd, POLLOUT, deadline);
			if (w > 0)
				continue;
			if (w == 0) {
				pc_err("%s: timed out sending", c->where);
				return PC_EXIT_CONNECT;
			}
		}
		pc_err("%s: connection lost while sending: %s", c->where, strerror(errno));
		return PC_EXIT_CONNECT;
	}
	return PC_EXIT_OK;
}

int pc_recv(struct pc_conn *c, uint8_t type, uint8_t cmd, struct pc_resp *r)
{
	int64_t deadline = now_ms() + c->timeout_ms;
	for (;;) {
		if (c->in_pos == c->in_len) {
			int rc = fill(c, deadline);
			if (rc)
				return rc;
		}
		size_t used = 0;
		int fr = pipo_reader_feed(&c->rd, c->in + c->in_pos, c->in_len - c->in_pos, &used);
		c->in_pos += used;
		/* Known from the header alone: no need to read megabytes first. */
		if (c->rd.hpos == PIPO_HEADER_LEN && c->rd.too_big) {
			pc_err("%s: response of %u bytes is over the %u-byte limit", c->where,
			       c->rd.f.len, PIPO_MAX_RESPONSE);
			return PC_EXIT_PROTOCOL;
		}
		if (fr != PIPO_DONE)
			continue;
		r->f = c->rd.f;
		r->payload = c->payload;
		if (r->f.ver != PIPO_VERSION) {
			pc_err("%s: response with protocol version %u", c->where, r->f.ver);
			return PC_EXIT_PROTOCOL;
		}
		if (r->f.type != type || r->f.cmd != cmd) {
			pc_err("%s: response to %02x/%02x where %02x/%02x was expected", c->where,
			       r->f.type, r->f.cmd, type, cmd);
			return PC_EXIT_PROTOCOL;
		}
		return PC_EXIT_OK;
	}
}
