/*
 * pipo1_check: the original administration protocol, pipo version 1, over a
 * real SCTP association (run inside the test VM; this host's kernel has no
 * SCTP).  The client is written from the protocol's description
 * (docs/pipo-protocol.txt, "Version 1"), not from socks5d's codec: each
 * request is TYPE CMD and the payload its command defines, each answer is
 * parsed by its command (version 1 has no length field).
 *
 *   pipo1_check ADDR PORT USER PASS SOCKS_PORT
 *
 * ADDR is the SCTP address (IPv4 or IPv6).  An ADDR starting with '/' is a
 * unix administration socket instead (PORT ignored), so that the checks
 * can be run on a host without SCTP; there the stream has no message
 * boundaries and answers are read by their parsed length.
 *
 * The server is a socks5d started with the default settings, USER an
 * administrator, no SOCKS session open.  Checks, over SCTP each request
 * sent as its own message (as the original client does) and each answer
 * required to be exactly one whole message (MSG_EOR) holding exactly one
 * answer, in request order:
 *   - a version-1 AUTH in one message, answered by one message 01 00;
 *   - every query pipelined, each answer's width and value (defaults,
 *     the user list and count agreeing, the clamped u8 timeout, the
 *     alternative codes X'10' and X'11');
 *   - the counters after one SOCKS session relaying 1000 bytes up and
 *     2000 down: historic +1, current 1, users connected 1, the user's
 *     connections 1, bytes sent +1000 and received +2000 exactly;
 *   - add a user then delete it, with "name taken" and "no such user",
 *     the count and list following; two requests in one message answered
 *     by two messages;
 *   - an unknown request: the answers before it, then the session closed;
 *   - a wrong password: one message 01 01, then the association closed.
 * Exit 0 when all hold.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

enum { QUERY = 0x00, MODIFY = 0x01 };
enum {
	Q_USERS = 0x00, Q_HISTORIC = 0x01, Q_CURRENT = 0x02, Q_MAX = 0x03, Q_SENT = 0x04,
	Q_RECEIVED = 0x05, Q_USERS_CONNECTED = 0x06, Q_COUNT = 0x07, Q_BUFFER = 0x08,
	Q_SELECTOR_TIMEOUT = 0x09, Q_CONN_TIMEOUT = 0x0a, Q_USER_CONNS = 0x0b,
	Q_CONN_TIMEOUT_ALT = 0x10, Q_USER_CONNS_ALT = 0x11,
};
enum { M_ADD = 0x00, M_DEL = 0x01 };
enum { ST_OK = 0x00, ST_1 = 0x01 };

/* socks5d's defaults (socks5d --help), as tests/vm/init.sh starts it. */
#define DEFAULT_BUFFER 65536u
#define DEFAULT_HANDSHAKE 15u
#define DEFAULT_IDLE_CLAMPED 255u /* 600 s in a u8 field */

#define UP_BYTES 1000
#define DOWN_BYTES 2000

static bool sctp = true;
static const char *addr_arg, *user, *pass;
static unsigned admin_port, socks_port;
static uint8_t msg[70000];

static int fail(const char *what)
{
	fprintf(stderr, "pipo1_check: FAIL: %s\n", what);
	return 1;
}

static void timeouts(int fd)
{
	struct timeval tv = {.tv_sec = 10};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

static int open_admin(void)
{
	struct sockaddr_storage ss;
	socklen_t len;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	struct sockaddr_un *su = (struct sockaddr_un *)&ss;
	int type = SOCK_STREAM, proto = IPPROTO_SCTP;
	if (!sctp) {
		su->sun_family = AF_UNIX;
		snprintf(su->sun_path, sizeof su->sun_path, "%s", addr_arg);
		len = sizeof *su;
		proto = 0;
	} else if (inet_pton(AF_INET, addr_arg, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)admin_port);
		len = sizeof *s4;
	} else if (inet_pton(AF_INET6, addr_arg, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)admin_port);
		len = sizeof *s6;
	} else {
		fprintf(stderr, "pipo1_check: bad address %s\n", addr_arg);
		return -1;
	}
	int fd = socket(ss.ss_family, type, proto);
	if (fd < 0) {
		perror("pipo1_check: socket");
		return -1;
	}
	timeouts(fd);
	if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
		perror("pipo1_check: connect");
		close(fd);
		return -1;
	}
	return fd;
}

/* One request: one send(), so one SCTP message. */
static bool send_msg(int fd, const uint8_t *p, size_t n)
{
	return send(fd, p, n, MSG_NOSIGNAL) == (ssize_t)n;
}

static bool read_exact(int fd, uint8_t *p, size_t n)
{
	while (n) {
		ssize_t r = recv(fd, p, n, 0);
		if (r <= 0)
			return false;
		p += r;
		n -= (size_t)r;
	}
	return true;
}

/* How long the answer to TYPE CMD is, as far as the bytes so far tell:
 * a total <= have means the answer is whole (and that long). */
static size_t answer_len(uint8_t type, uint8_t cmd, const uint8_t *p, size_t have)
{
	if (type == MODIFY)
		return 3;
	switch (cmd) {
	case Q_USERS: {
		if (have < 3)
			return 3;
		size_t pos = 3;
		for (unsigned i = 0; i < p[2]; i++) {
			if (have < pos + 1)
				return pos + 1;
			pos += 1u + p[pos];
		}
		return pos;
	}
	case Q_HISTORIC:
	case Q_CURRENT:
	case Q_SENT:
	case Q_RECEIVED:
	case Q_USERS_CONNECTED: return 2 + 8;
	case Q_MAX:
	case Q_BUFFER: return 2 + 4;
	default: return 2 + 1; /* the u8 answers */
	}
}

/* The answer to TYPE CMD into msg, its length in *len.  Over SCTP it must
 * be exactly one whole message; on a stream it is read by its length. */
static bool read_answer(int fd, uint8_t type, uint8_t cmd, size_t *len)
{
	if (sctp) {
		struct iovec iov = {.iov_base = msg, .iov_len = sizeof msg};
		struct msghdr m;
		memset(&m, 0, sizeof m);
		m.msg_iov = &iov;
		m.msg_iovlen = 1;
		ssize_t r = recvmsg(fd, &m, 0);
		if (r <= 0 || !(m.msg_flags & MSG_EOR)) {
			fprintf(stderr, "pipo1_check: answer to %02x %02x: %zd bytes, eor %d (%s)\n", type,
			        cmd, r, (m.msg_flags & MSG_EOR) != 0, r < 0 ? strerror(errno) : "");
			return false;
		}
		*len = (size_t)r;
		size_t want = answer_len(type, cmd, msg, *len);
		if (want != *len) {
			fprintf(stderr, "pipo1_check: answer to %02x %02x: a %zd-byte message, the answer "
			        "is %zu bytes\n", type, cmd, r, want);
			return false;
		}
	} else {
		size_t have = 0, want;
		while ((want = answer_len(type, cmd, msg, have)) > have) {
			if (!read_exact(fd, msg + have, want - have))
				return false;
			have = want;
		}
		*len = have;
	}
	if (msg[0] != type || msg[1] != cmd) {
		fprintf(stderr, "pipo1_check: answer %02x %02x to request %02x %02x\n", msg[0], msg[1],
		        type, cmd);
		return false;
	}
	return true;
}

static uint64_t be(const uint8_t *p, size_t n)
{
	uint64_t v = 0;
	for (size_t i = 0; i < n; i++)
		v = v << 8 | p[i];
	return v;
}

/* A request and what its answer holds. */
struct req {
	uint8_t b[600];
	size_t n;
	uint64_t value;    /* a query's number, a modification's status */
	unsigned nusers;   /* Q_USERS: COUNT */
	bool has[2];       /* Q_USERS: holds USER, holds the added user */
};

static const char *NEW_USER = "v1-vm-user";

static void str8(struct req *q, const char *s)
{
	size_t n = strlen(s);
	q->b[q->n++] = (uint8_t)n;
	memcpy(q->b + q->n, s, n);
	q->n += n;
}

static void mk(struct req *q, uint8_t type, uint8_t cmd, const char *name)
{
	memset(q, 0, sizeof *q);
	q->b[0] = type;
	q->b[1] = cmd;
	q->n = 2;
	if (name)
		str8(q, name);
}

/* Fill q from its answer in msg. */
static void parse(struct req *q, size_t len)
{
	if (q->b[0] == MODIFY) {
		q->value = msg[2];
		return;
	}
	if (q->b[1] == Q_USERS) {
		q->nusers = msg[2];
		for (size_t pos = 3; pos < len; pos += 1u + msg[pos]) {
			size_t l = msg[pos];
			if (l == strlen(user) && !memcmp(msg + pos + 1, user, l))
				q->has[0] = true;
			if (l == strlen(NEW_USER) && !memcmp(msg + pos + 1, NEW_USER, l))
				q->has[1] = true;
		}
		return;
	}
	q->value = be(msg + 2, len - 2);
}

/* Send every request as its own message, nothing read, then read the
 * answers in order. */
static bool burst(int fd, struct req *r, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!send_msg(fd, r[i].b, r[i].n)) {
			perror("pipo1_check: send");
			return false;
		}
	for (size_t i = 0; i < n; i++) {
		size_t len;
		if (!read_answer(fd, r[i].b[0], r[i].b[1], &len))
			return false;
		parse(&r[i], len);
	}
	return true;
}

static uint64_t query(int fd, uint8_t cmd, bool *ok)
{
	struct req q;
	mk(&q, QUERY, cmd, cmd == Q_USER_CONNS ? user : NULL);
	if (!burst(fd, &q, 1))
		*ok = false;
	return q.value;
}

static int auth(const char *password, uint8_t want)
{
	int fd = open_admin();
	if (fd < 0)
		return -1;
	uint8_t a[3 + 2 * 255];
	size_t ul = strlen(user), pl = strlen(password), n = 0;
	a[n++] = 0x01;
	a[n++] = (uint8_t)ul;
	memcpy(a + n, user, ul);
	n += ul;
	a[n++] = (uint8_t)pl;
	memcpy(a + n, password, pl);
	n += pl;
	if (!send_msg(fd, a, n)) {
		close(fd);
		return -1;
	}
	uint8_t ans[2];
	bool eor = true;
	ssize_t r;
	if (sctp) {
		struct iovec iov = {.iov_base = msg, .iov_len = sizeof msg};
		struct msghdr m;
		memset(&m, 0, sizeof m);
		m.msg_iov = &iov;
		m.msg_iovlen = 1;
		r = recvmsg(fd, &m, 0);
		eor = (m.msg_flags & MSG_EOR) != 0;
		if (r == 2)
			memcpy(ans, msg, 2);
	} else {
		r = read_exact(fd, ans, 2) ? 2 : -1;
	}
	if (r != 2 || !eor || ans[0] != 0x01 || ans[1] != want) {
		fprintf(stderr, "pipo1_check: AUTH answer: %zd bytes, eor %d, %02x %02x; want one "
		        "2-byte message 01 %02x\n", r, eor, r == 2 ? ans[0] : 0, r == 2 ? ans[1] : 0,
		        want);
		close(fd);
		return -1;
	}
	return fd;
}

/* The connection ends (EOF or reset) within the receive timeout. */
static bool closed_by_server(int fd)
{
	ssize_t r = recv(fd, msg, sizeof msg, 0);
	if (r > 0)
		fprintf(stderr, "pipo1_check: %zd unexpected bytes, first %02x\n", r, msg[0]);
	return r == 0 || (r < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

static int tcp_connect(unsigned port)
{
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0)
		return -1;
	timeouts(fd);
	if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* A SOCKS session as USER to a target of our own, UP_BYTES relayed up and
 * DOWN_BYTES down; the client side is left open in *client. */
static int socks_session(int *client)
{
	int lfd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in t = {.sin_family = AF_INET};
	t.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t tl = sizeof t;
	if (lfd < 0 || bind(lfd, (struct sockaddr *)&t, sizeof t) < 0 || listen(lfd, 1) < 0 ||
	    getsockname(lfd, (struct sockaddr *)&t, &tl) < 0)
		return fail("target listener");
	timeouts(lfd);
	int c = tcp_connect(socks_port);
	if (c < 0)
		return fail("connecting to the SOCKS port");
	uint8_t b[600];
	size_t ul = strlen(user), pl = strlen(pass), n = 0;
	if (!send_msg(c, (const uint8_t *)"\x05\x01\x02", 3) || !read_exact(c, b, 2) || b[0] != 5 ||
	    b[1] != 2)
		return fail("SOCKS method selection");
	b[n++] = 1;
	b[n++] = (uint8_t)ul;
	memcpy(b + n, user, ul);
	n += ul;
	b[n++] = (uint8_t)pl;
	memcpy(b + n, pass, pl);
	n += pl;
	if (!send_msg(c, b, n) || !read_exact(c, b, 2) || b[1] != 0)
		return fail("SOCKS login");
	uint8_t req[10] = {5, 1, 0, 1, 127, 0, 0, 1};
	memcpy(req + 8, &t.sin_port, 2);
	if (!send_msg(c, req, 10) || !read_exact(c, b, 10) || b[1] != 0)
		return fail("SOCKS CONNECT");
	int s = accept(lfd, NULL, NULL);
	close(lfd);
	if (s < 0)
		return fail("the target saw no connection");
	timeouts(s);
	static uint8_t up[UP_BYTES], down[DOWN_BYTES], got[DOWN_BYTES];
	memset(up, 'u', sizeof up);
	memset(down, 'd', sizeof down);
	if (!send_msg(c, up, sizeof up) || !read_exact(s, got, sizeof up) ||
	    memcmp(got, up, sizeof up))
		return fail("relaying up");
	if (!send_msg(s, down, sizeof down) || !read_exact(c, got, sizeof down) ||
	    memcmp(got, down, sizeof down))
		return fail("relaying down");
	close(s);
	*client = c;
	return 0;
}

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

#define CHECK(cond, ...)                                                                          \
	do {                                                                                          \
		if (!(cond)) {                                                                            \
			fprintf(stderr, "pipo1_check: FAIL: " __VA_ARGS__);                                   \
			fputc('\n', stderr);                                                                  \
			return 1;                                                                             \
		}                                                                                         \
	} while (0)

static int queries(int fd, uint64_t *hist, uint64_t *sent, uint64_t *recvd, unsigned *count)
{
	static const uint8_t cmds[] = {Q_USERS,          Q_HISTORIC,     Q_CURRENT, Q_MAX,
	                               Q_SENT,           Q_RECEIVED,     Q_USERS_CONNECTED,
	                               Q_COUNT,          Q_BUFFER,       Q_SELECTOR_TIMEOUT,
	                               Q_CONN_TIMEOUT,   Q_USER_CONNS,   Q_CONN_TIMEOUT_ALT,
	                               Q_USER_CONNS_ALT};
	enum { N = sizeof cmds };
	static struct req r[N];
	for (size_t i = 0; i < N; i++)
		mk(&r[i], QUERY, cmds[i],
		   cmds[i] == Q_USER_CONNS || cmds[i] == Q_USER_CONNS_ALT ? user : NULL);
	if (!burst(fd, r, N))
		return fail("the answers to 14 pipelined queries");
	CHECK(r[0].has[0], "the user list lacks '%s'", user);
	CHECK(!r[0].has[1], "the user list holds '%s' already", NEW_USER);
	CHECK(r[7].value == r[0].nusers, "user count %llu, the list holds %u",
	      (unsigned long long)r[7].value, r[0].nusers);
	CHECK(r[2].value == 0, "current connections %llu with no SOCKS session",
	      (unsigned long long)r[2].value);
	CHECK(r[6].value == 0, "users connected %llu", (unsigned long long)r[6].value);
	CHECK(r[8].value == DEFAULT_BUFFER, "buffer size %llu", (unsigned long long)r[8].value);
	CHECK(r[9].value == DEFAULT_HANDSHAKE, "selector timeout %llu",
	      (unsigned long long)r[9].value);
	CHECK(r[10].value == DEFAULT_IDLE_CLAMPED && r[12].value == DEFAULT_IDLE_CLAMPED,
	      "connection timeout %llu / %llu", (unsigned long long)r[10].value,
	      (unsigned long long)r[12].value);
	CHECK(r[11].value == 0 && r[13].value == 0, "the user's connections %llu / %llu",
	      (unsigned long long)r[11].value, (unsigned long long)r[13].value);
	*hist = r[1].value;
	*sent = r[4].value;
	*recvd = r[5].value;
	*count = r[0].nusers;
	printf("pipo1_check: 14 queries as 14 SCTP messages: 14 answers, one message each, in "
	       "order (%u users, buffer %llu, timeouts %llu/%llu)\n",
	       r[0].nusers, (unsigned long long)r[8].value, (unsigned long long)r[9].value,
	       (unsigned long long)r[10].value);
	return 0;
}

static int counters(int fd, uint64_t hist, uint64_t sent, uint64_t recvd)
{
	int c;
	if (socks_session(&c))
		return 1;
	static const uint8_t cmds[] = {Q_HISTORIC, Q_CURRENT, Q_USERS_CONNECTED, Q_USER_CONNS, Q_MAX};
	struct req r[5];
	for (size_t i = 0; i < 5; i++)
		mk(&r[i], QUERY, cmds[i], cmds[i] == Q_USER_CONNS ? user : NULL);
	if (!burst(fd, r, 5))
		return fail("the answers to the counter queries");
	CHECK(r[0].value == hist + 1, "historic connections %llu, want %llu",
	      (unsigned long long)r[0].value, (unsigned long long)hist + 1);
	CHECK(r[1].value == 1, "current connections %llu, want 1", (unsigned long long)r[1].value);
	CHECK(r[2].value == 1, "users connected %llu, want 1", (unsigned long long)r[2].value);
	CHECK(r[3].value == 1, "the user's connections %llu, want 1", (unsigned long long)r[3].value);
	CHECK(r[4].value >= 1, "most concurrent connections %llu", (unsigned long long)r[4].value);
	/* The byte counters reach the shared segment a little later. */
	bool ok = true;
	uint64_t s = 0, d = 0;
	for (double end = now() + 10; now() < end;) {
		s = query(fd, Q_SENT, &ok);
		d = query(fd, Q_RECEIVED, &ok);
		if (!ok || (s == sent + UP_BYTES && d == recvd + DOWN_BYTES))
			break;
		usleep(50000);
	}
	CHECK(ok && s == sent + UP_BYTES && d == recvd + DOWN_BYTES,
	      "bytes sent +%lld received +%lld, want +%d +%d", (long long)(s - sent),
	      (long long)(d - recvd), UP_BYTES, DOWN_BYTES);
	close(c);
	uint64_t cur = 1;
	for (double end = now() + 10; now() < end && ok && cur != 0;) {
		cur = query(fd, Q_CURRENT, &ok);
		if (cur)
			usleep(50000);
	}
	CHECK(ok && cur == 0, "current connections %llu after the session ended",
	      (unsigned long long)cur);
	printf("pipo1_check: counters after one SOCKS session: historic +1, current 1, bytes +%d "
	       "+%d, current 0 after it\n", UP_BYTES, DOWN_BYTES);
	return 0;
}

static int modify(int fd, unsigned count)
{
	struct req r[8];
	mk(&r[0], MODIFY, M_ADD, NEW_USER);
	str8(&r[0], "v1-vm-pass");
	r[0].b[r[0].n++] = 0x00; /* a regular user */
	r[1] = r[0];              /* again: the name is taken */
	mk(&r[2], QUERY, Q_COUNT, NULL);
	mk(&r[3], QUERY, Q_USERS, NULL);
	mk(&r[4], MODIFY, M_DEL, NEW_USER);
	mk(&r[5], MODIFY, M_DEL, NEW_USER); /* again: no such user */
	mk(&r[6], QUERY, Q_COUNT, NULL);
	mk(&r[7], QUERY, Q_USERS, NULL);
	if (!burst(fd, r, 8))
		return fail("the answers to add and delete");
	CHECK(r[0].value == ST_OK, "add: status %02llx", (unsigned long long)r[0].value);
	CHECK(r[1].value == ST_1, "add again: status %02llx, want 01 (name taken)",
	      (unsigned long long)r[1].value);
	CHECK(r[2].value == count + 1, "count after add %llu, want %u", (unsigned long long)r[2].value,
	      count + 1);
	CHECK(r[3].has[1] && r[3].nusers == count + 1, "the list after add");
	CHECK(r[4].value == ST_OK, "delete: status %02llx", (unsigned long long)r[4].value);
	CHECK(r[5].value == ST_1, "delete again: status %02llx, want 01 (no such user)",
	      (unsigned long long)r[5].value);
	CHECK(r[6].value == count, "count after delete %llu, want %u", (unsigned long long)r[6].value,
	      count);
	CHECK(!r[7].has[1] && r[7].nusers == count, "the list after delete");
	printf("pipo1_check: add user (00, then 01 taken), delete (00, then 01 no such user), "
	       "count and list follow\n");

	/* Two requests in one message: two answers, each its own message. */
	struct req two[2];
	mk(&two[0], QUERY, Q_COUNT, NULL);
	mk(&two[1], QUERY, Q_BUFFER, NULL);
	uint8_t both[4] = {QUERY, Q_COUNT, QUERY, Q_BUFFER};
	if (!send_msg(fd, both, sizeof both))
		return fail("sending two requests in one message");
	for (int i = 0; i < 2; i++) {
		size_t len;
		if (!read_answer(fd, two[i].b[0], two[i].b[1], &len))
			return fail("two requests in one message: their answers");
		parse(&two[i], len);
	}
	CHECK(two[0].value == count && two[1].value == DEFAULT_BUFFER,
	      "two requests in one message answered %llu, %llu", (unsigned long long)two[0].value,
	      (unsigned long long)two[1].value);
	printf("pipo1_check: two requests in one message: two answers, one message each\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc != 6) {
		fprintf(stderr, "usage: pipo1_check ADDR|/UNIX-SOCKET PORT USER PASS SOCKS_PORT\n");
		return 2;
	}
	addr_arg = argv[1];
	sctp = addr_arg[0] != '/';
	admin_port = (unsigned)atoi(argv[2]);
	user = argv[3];
	pass = argv[4];
	socks_port = (unsigned)atoi(argv[5]);
	if (strlen(user) > 255 || strlen(pass) > 255)
		return fail("USER and PASS are 255 bytes at most");

	int fd = auth(pass, ST_OK);
	if (fd < 0)
		return fail("version-1 login");
	printf("pipo1_check: AUTH version 1 in one message, answered 01 00 in one message\n");
	uint64_t hist, sent, recvd;
	unsigned count;
	if (queries(fd, &hist, &sent, &recvd, &count) || counters(fd, hist, sent, recvd) ||
	    modify(fd, count))
		return 1;
	close(fd);

	/* An unknown request cannot be skipped: the answer before it, then the
	 * session closes. */
	fd = auth(pass, ST_OK);
	if (fd < 0)
		return fail("second version-1 login");
	struct req r[2];
	mk(&r[0], QUERY, Q_COUNT, NULL);
	mk(&r[1], QUERY, 0x7f, NULL);
	size_t len;
	if (!send_msg(fd, r[0].b, r[0].n) || !send_msg(fd, r[1].b, r[1].n) ||
	    !read_answer(fd, QUERY, Q_COUNT, &len))
		return fail("the answer before an unknown request");
	CHECK(closed_by_server(fd), "the session goes on after an unknown request");
	close(fd);
	printf("pipo1_check: unknown request 00 7f: the answer before it, then the session "
	       "closed\n");

	/* A wrong password: 01 01 (after the server's delay), then closed. */
	fd = auth("wrong-password", ST_1);
	if (fd < 0)
		return fail("wrong password not answered 01 01");
	CHECK(closed_by_server(fd), "the association stays open after a failed login");
	close(fd);
	printf("pipo1_check: wrong password refused (01 01), association closed\n");
	return 0;
}
