/*
 * sctp_check: pipo over a real SCTP association, message by message (run
 * inside the test VM; this host's kernel has no SCTP).
 *
 *   sctp_check ADDR PORT USER PASS
 *
 * Checks: AUTH in one message answered by one 2-byte message; a burst of
 * requests sent as separate SCTP messages before reading anything is
 * answered by exactly one message per request (MSG_EOR, the message is one
 * whole frame, responses in request order); a wrong password is answered
 * 02 01 on a fresh association.  Exit 0 when all hold.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "../../admin/pipo.h"

#ifndef IPPROTO_SCTP
#define IPPROTO_SCTP 132
#endif

static uint8_t msgbuf[PIPO_MAX_RESPONSE + 16];

static int fail(const char *what)
{
	fprintf(stderr, "sctp_check: FAIL: %s\n", what);
	return 1;
}

static int open_assoc(const char *addr, unsigned port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, addr, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons((uint16_t)port);
		len = sizeof *s4;
	} else if (inet_pton(AF_INET6, addr, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons((uint16_t)port);
		len = sizeof *s6;
	} else {
		fprintf(stderr, "sctp_check: bad address %s\n", addr);
		return -1;
	}
	int fd = socket(ss.ss_family, SOCK_STREAM, IPPROTO_SCTP);
	if (fd < 0) {
		perror("sctp_check: socket(IPPROTO_SCTP)");
		return -1;
	}
	struct timeval tv = {.tv_sec = 10};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
	if (connect(fd, (struct sockaddr *)&ss, len) < 0) {
		perror("sctp_check: connect");
		close(fd);
		return -1;
	}
	return fd;
}

/* One SCTP message: its length, and whether it ended (MSG_EOR). */
static ssize_t recv_message(int fd, bool *eor)
{
	struct iovec iov = {.iov_base = msgbuf, .iov_len = sizeof msgbuf};
	struct msghdr m;
	memset(&m, 0, sizeof m);
	m.msg_iov = &iov;
	m.msg_iovlen = 1;
	ssize_t n = recvmsg(fd, &m, 0);
	*eor = (m.msg_flags & MSG_EOR) != 0;
	return n;
}

static int auth(int fd, const char *user, const char *pass, uint8_t want)
{
	uint8_t a[3 + 2 * PIPO_MAX_NAME];
	size_t n = pipo_auth_encode(a, sizeof a, user, pass);
	if (n == 0 || send(fd, a, n, 0) != (ssize_t)n)
		return fail("sending AUTH");
	bool eor;
	ssize_t r = recv_message(fd, &eor);
	if (r != 2 || !eor) {
		fprintf(stderr, "sctp_check: AUTH answer: %zd bytes, eor %d (%s)\n", r, eor,
		        r < 0 ? strerror(errno) : "");
		return fail("AUTH answer is not one 2-byte message");
	}
	if (msgbuf[0] != PIPO_VERSION || msgbuf[1] != want) {
		fprintf(stderr, "sctp_check: AUTH answer %02x %02x, want 02 %02x\n", msgbuf[0],
		        msgbuf[1], want);
		return fail("AUTH status");
	}
	return 0;
}

struct req {
	uint8_t type, cmd, want_status;
	uint8_t payload[64];
	size_t len;
};

int main(int argc, char **argv)
{
	if (argc != 5) {
		fprintf(stderr, "usage: sctp_check ADDR PORT USER PASS\n");
		return 2;
	}
	unsigned port = (unsigned)atoi(argv[2]);
	int fd = open_assoc(argv[1], port);
	if (fd < 0)
		return fail("no association");
	if (auth(fd, argv[3], argv[4], PIPO_AUTH_OK))
		return 1;

	static struct req reqs[] = {
	    {PIPO_QUERY, PIPO_Q_SERVER, PIPO_OK, {0}, 0},
	    {PIPO_QUERY, PIPO_Q_METRICS, PIPO_OK, {0}, 0},
	    {PIPO_QUERY, PIPO_Q_USERS, PIPO_OK, {0}, 0},
	    {PIPO_MODIFY, PIPO_M_ADD_USER, PIPO_OK, "\x08sctpuser\x02pw\x00", 13},
	    {PIPO_MODIFY, PIPO_M_ADD_USER, PIPO_E_EXISTS, "\x08sctpuser\x02pw\x00", 13},
	    {PIPO_QUERY, 0x7f, PIPO_E_UNKNOWN, {0}, 0},
	    {PIPO_QUERY, PIPO_Q_USER_COUNT, PIPO_OK, {0}, 0},
	    {PIPO_QUERY, PIPO_Q_BUFFER_SIZE, PIPO_OK, {0}, 0},
	    {PIPO_MODIFY, PIPO_M_DEL_USER, PIPO_OK, "\x08sctpuser", 9},
	    {PIPO_QUERY, PIPO_Q_USER_STATS, PIPO_OK, {0}, 0},
	};
	const size_t n = sizeof reqs / sizeof reqs[0];
	/* The burst: every request its own message, nothing read yet. */
	for (size_t i = 0; i < n; i++) {
		uint8_t m[PIPO_HEADER_LEN + 64];
		pipo_header_encode(m, reqs[i].type, reqs[i].cmd, 0, (uint32_t)reqs[i].len);
		memcpy(m + PIPO_HEADER_LEN, reqs[i].payload, reqs[i].len);
		ssize_t w = send(fd, m, PIPO_HEADER_LEN + reqs[i].len, 0);
		if (w != (ssize_t)(PIPO_HEADER_LEN + reqs[i].len))
			return fail("sending a request message");
	}
	for (size_t i = 0; i < n; i++) {
		bool eor;
		ssize_t r = recv_message(fd, &eor);
		if (r < PIPO_HEADER_LEN || !eor) {
			fprintf(stderr, "sctp_check: response %zu: %zd bytes, eor %d\n", i, r, eor);
			return fail("a response is not one whole message");
		}
		uint32_t len = (uint32_t)msgbuf[4] << 24 | (uint32_t)msgbuf[5] << 16 |
		               (uint32_t)msgbuf[6] << 8 | msgbuf[7];
		if ((size_t)r != PIPO_HEADER_LEN + len) {
			fprintf(stderr, "sctp_check: response %zu: message %zd bytes, frame %u\n", i, r,
			        PIPO_HEADER_LEN + len);
			return fail("message and frame boundaries differ");
		}
		if (msgbuf[0] != PIPO_VERSION || msgbuf[1] != reqs[i].type ||
		    msgbuf[2] != reqs[i].cmd || msgbuf[3] != reqs[i].want_status) {
			fprintf(stderr,
			        "sctp_check: response %zu: %02x %02x %02x %02x, want 02 %02x %02x %02x\n",
			        i, msgbuf[0], msgbuf[1], msgbuf[2], msgbuf[3], reqs[i].type, reqs[i].cmd,
			        reqs[i].want_status);
			return fail("response out of order or wrong status");
		}
	}
	printf("sctp_check: %zu requests sent as %zu SCTP messages: %zu responses, one message "
	       "each, in order\n",
	       n, n, n);
	close(fd);

	fd = open_assoc(argv[1], port);
	if (fd < 0)
		return fail("no second association");
	if (auth(fd, argv[3], "wrong-password", PIPO_AUTH_FAILED))
		return 1;
	close(fd);
	printf("sctp_check: wrong password refused (02 01)\n");
	return 0;
}
