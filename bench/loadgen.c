/*
 * loadgen: a SOCKS5 load generator on epoll, for benchmarks on loopback.
 *
 *   loadgen -m rate  -x 127.0.0.1:1080 -t 127.0.0.1:8080 -c 64 -d 10 [-u user:pass] [-p /path]
 *   loadgen -m bulk  -x 127.0.0.1:1080 -t 127.0.0.1:8080 -c 32 -d 10 -p /big.bin
 *   loadgen -m hold  -x 127.0.0.1:1080 -t 127.0.0.1:8080 -c 10000 -d 30 [-s 127.0.0.2,127.0.0.3]
 *                    [-k IN_FLIGHT] [-r RAMP_SECONDS]
 *
 * Without -x it connects to the target directly (the baseline).  rate: each
 * of c clients repeats connect, SOCKS5 handshake (optionally RFC 1929),
 * "GET path HTTP/1.0", reads the response to EOF, closes; reports
 * connections per second and latency percentiles.  bulk: c clients each
 * fetch path again and again and count body bytes; reports bytes per
 * second (the receive buffer is 256 KiB, so the client is not the
 * bottleneck).  hold: opens c sessions, at most -k (default 256) in set-up
 * at once, and gives up opening more after -r seconds (default 120); once
 * every session is established or failed it says "ramp done" on stderr and
 * keeps them open for -d seconds more (or until SIGINT/SIGTERM), then
 * reports how many were established, still held at the end, failed during
 * set-up and dropped (closed by the peer while held).
 *
 * -t takes a comma-separated list of targets, used round robin per
 * connection; -s a list of source addresses, likewise (bound with
 * IP_BIND_ADDRESS_NO_PORT, so the port is chosen per 4-tuple at connect):
 * both keep many sessions clear of the ephemeral port limit per address
 * pair.  The SOCKS5 greeting, credentials and request go out in one
 * segment (pipelined) unless -W is given: then each waits for the server's
 * answer to the one before, as most clients do (and as microsocks needs).
 * rate and bulk stop after -d seconds or -n connections, whichever
 * is first; SIGINT/SIGTERM stop every mode early with the usual report.
 *
 *   loadgen -m udp [-x 127.0.0.1:1080] -t 127.0.0.1:7 -c 8 -d 5 -l 1400
 *                  [-R RATE | -w WINDOW] [-n MAXDGRAMS] [-u user:pass]
 *   loadgen udp-echo 127.0.0.1:PORT [SECONDS]
 *
 * udp: c associations, each a SOCKS5 UDP ASSOCIATE on its own control
 * connection (greeting, credentials and request each after the answer to
 * the one before) and a UDP socket on 127.0.0.1 (or the -s addresses),
 * whose address and port the request carries.  Datagrams go to the relay
 * the reply names (BND.ADDR:BND.PORT; the proxy's address when BND.ADDR is
 * 0.0.0.0) with the RFC 1928 header (RSV RSV FRAG=0 ATYP=1 DST.ADDR
 * DST.PORT) for the association's target; without -x straight to the
 * target.  Each payload is -l bytes (the header comes on top): the
 * association's index, a sequence number and a magic word, then filler.  An
 * echo counts when its header names the target and its payload is one this
 * association sent and has not had back yet; others are counted as bad,
 * duplicate or late (more than 65,536 behind).  -R offers RATE datagrams per
 * second in all (paced, whatever comes back); without it each association
 * keeps at most -w (default 32) datagrams in flight and sends the next as
 * echoes come (closed loop: the highest rate that path sustains), writing
 * off what stays unanswered for 200 ms.  Sending stops after -d seconds or
 * -n datagrams; echoes are awaited for up to 0.5 s more.  It reports
 * datagrams sent and received per second and the loss; a refused
 * association makes it say the reply code (0x07: the proxy does not
 * support UDP ASSOCIATE) and exit 1 when none succeeded.
 *
 * udp-echo: a UDP echo server for the udp mode (recvmmsg/sendmmsg in
 * batches, 16 MiB socket buffers), on ADDR:PORT (port 0: any; the first
 * line on stdout says which), for SECONDS (default: until SIGINT/SIGTERM);
 * then it reports what it received and echoed.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode { RATE, BULK, HOLD, UDP };
enum state { ST_CONNECTING, ST_GREETING, ST_AUTH, ST_REPLY, ST_REQUEST, ST_BODY, ST_HELD };

struct conn {
	int fd;
	enum state st;
	size_t need; /* bytes still expected for the current SOCKS message */
	uint8_t in[512];
	size_t in_len;
	int64_t t0; /* start of this connection, ns */
	uint64_t body;
	int target; /* index into g.targets */
};

#define MAX_ADDRS 64

/* udp mode */
#define UDP_HDR 10          /* RSV RSV FRAG ATYP=1 DST.ADDR(4) DST.PORT(2) */
#define UDP_MIN 16          /* index(4) sequence(8) magic(4) */
#define UDP_MAX 65000       /* payload bytes; with the header under 65,507 */
#define UDP_MAGIC 0x55445042u
#define UDP_SEEN_BITS 65536 /* sequence numbers remembered per association */
#define UDP_BATCH 64
#define UDP_MAX_ASSOC 4096

struct udp_assoc {
	int fd;
	struct sockaddr_in local; /* the UDP socket's address, sent in the request */
	struct sockaddr_in relay; /* where datagrams go: BND.ADDR:BND.PORT or the target */
	bool ready;
	uint64_t sent, received, written_off;
	int64_t last_rx;
	uint64_t *seen; /* UDP_SEEN_BITS bits: echoed, by sequence number modulo */
};

static struct {
	enum mode mode;
	struct sockaddr_in proxy;
	struct sockaddr_in targets[MAX_ADDRS];
	int ntargets, next_target;
	bool direct;
	bool step; /* -W: wait for each SOCKS answer before the next message */
	const char *user, *pass;
	const char *path;
	int conc;
	double duration;
	uint64_t max_conns;
	struct in_addr src[MAX_ADDRS];
	int nsrc, next_src;
	int ep;
	struct conn *conns;
	uint64_t done, failed, bytes;
	/* hold mode: sessions started so far, in set-up now, bound of that */
	int started, inflight, max_inflight;
	double ramp_limit;
	bool ramping;
	uint64_t dropped;
	int64_t *lat;
	size_t nlat, cap_lat;
	bool stopping;
	/* udp mode */
	struct udp_assoc *udp;
	size_t dg_size;     /* payload bytes (-l) */
	double dg_rate;     /* -R: datagrams per second in all, 0: window */
	int window;         /* -w */
	uint64_t max_dgrams; /* -n */
	int last_rep;       /* the last non-zero reply code to a request */
	uint64_t bad, dup, late, short_sends;
} g;

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int parse_addr(const char *s, struct sockaddr_in *out)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	if (!colon || (size_t)(colon - s) >= sizeof host)
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	memset(out, 0, sizeof *out);
	out->sin_family = AF_INET;
	char *end;
	errno = 0;
	unsigned long port = strtoul(colon + 1, &end, 10);
	if (end == colon + 1 || *end || errno || port > 65535)
		return -1;
	out->sin_port = htons((uint16_t)port);
	return inet_pton(AF_INET, host, &out->sin_addr) == 1 ? 0 : -1;
}

static void record_latency(int64_t ns)
{
	if (g.nlat == g.cap_lat) {
		g.cap_lat = g.cap_lat ? g.cap_lat * 2 : 65536;
		g.lat = realloc(g.lat, g.cap_lat * sizeof *g.lat);
		if (!g.lat) {
			perror("realloc");
			exit(1);
		}
	}
	g.lat[g.nlat++] = ns;
}

static bool start(struct conn *c);
static void ramp_fill(void);
static bool udp_open(struct udp_assoc *u);
static void udp_associated(struct conn *c);

static void finish(struct conn *c, bool ok)
{
	epoll_ctl(g.ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	if (g.mode == HOLD || g.mode == UDP) {
		if (c->st == ST_HELD) {
			g.dropped++;
		} else {
			g.failed++;
			g.inflight--;
			ramp_fill();
		}
		return;
	}
	if (ok) {
		g.done++;
		if (g.mode == RATE)
			record_latency(now_ns() - c->t0);
	} else {
		g.failed++;
	}
	if (!g.stopping && (!g.max_conns || g.done + g.failed < g.max_conns))
		start(c);
}

/* hold mode: a session reached ST_HELD */
static void now_held(struct conn *c)
{
	c->st = ST_HELD;
	g.done++;
	g.inflight--;
	ramp_fill();
}

/* hold mode: start sessions while fewer than max_inflight are in set-up */
static void ramp_fill(void)
{
	while (g.ramping && !g.stopping && g.started < g.conc && g.inflight < g.max_inflight) {
		struct conn *c = &g.conns[g.started++];
		if (start(c))
			g.inflight++;
		else
			g.failed++;
	}
}

static void send_all(struct conn *c, const void *p, size_t n)
{
	/* Small messages on a fresh socket: the kernel takes them whole. */
	if (send(c->fd, p, n, MSG_NOSIGNAL) != (ssize_t)n)
		finish(c, false);
}

static void send_request(struct conn *c)
{
	char req[512];
	int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: bench\r\n\r\n", g.path);
	c->st = ST_BODY;
	c->body = 0;
	send_all(c, req, (size_t)n);
}

/* A one-line complaint about the command line, then exit 2. */
__attribute__((format(printf, 1, 2), noreturn)) static void bad_usage(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("loadgen: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputs(" (loadgen -h for usage)\n", stderr);
	va_end(ap);
	exit(2);
}

/* A whole decimal number within [lo, hi] for option opt, or exit. */
static double num_arg(const char *what, const char *arg, double lo, double hi)
{
	char *end;
	errno = 0;
	double v = strtod(arg, &end);
	if (end == arg || *end || errno || !(v >= lo && v <= hi))
		bad_usage("%s %s: want a number from %g to %g", what, arg, lo, hi);
	return v;
}

/* udp mode: opens the association's UDP socket on the next source address
 * (127.0.0.1 without -s), port chosen by the kernel. */
static bool udp_open(struct udp_assoc *u)
{
	u->fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (u->fd < 0)
		return false;
	/* Large buffers (forced when root): a burst of echoes must not
	 * overflow loadgen's own socket and pass for the proxy's loss. */
	int sz = 4 << 20;
	if (setsockopt(u->fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) < 0)
		setsockopt(u->fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
	if (setsockopt(u->fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz) < 0)
		setsockopt(u->fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	if (g.nsrc)
		a.sin_addr = g.src[g.next_src++ % g.nsrc];
	socklen_t len = sizeof a;
	if (bind(u->fd, (struct sockaddr *)&a, sizeof a) < 0 ||
	    getsockname(u->fd, (struct sockaddr *)&u->local, &len) < 0) {
		close(u->fd);
		u->fd = -1;
		return false;
	}
	return true;
}

/* Opens a connection; false (and c->fd -1) when that failed at once.  In
 * rate and bulk mode the failure is counted here; in hold mode the caller
 * counts it. */
static bool start(struct conn *c)
{
	if (g.mode == UDP && !udp_open(&g.udp[c - g.conns]))
		goto fail;
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0)
		goto fail;
	if (g.nsrc) {
		struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr = g.src[g.next_src++ % g.nsrc]};
		int one = 1;
		setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
		if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0)
			goto fail_close;
	}
	c->t0 = now_ns();
	c->st = ST_CONNECTING;
	c->in_len = 0;
	c->target = g.next_target++ % g.ntargets;
	const struct sockaddr_in *to = g.direct ? &g.targets[c->target] : &g.proxy;
	if (connect(c->fd, (const struct sockaddr *)to, sizeof *to) < 0 && errno != EINPROGRESS)
		goto fail_close;
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
	if (epoll_ctl(g.ep, EPOLL_CTL_ADD, c->fd, &ev) < 0)
		goto fail_close;
	return true;
fail_close:
	close(c->fd);
	c->fd = -1;
fail:
	if (g.mode != HOLD)
		g.failed++;
	return false;
}

static size_t put_greeting(uint8_t *msg)
{
	msg[0] = 5;
	msg[1] = 1;
	msg[2] = g.user ? 2 : 0;
	return 3;
}

static size_t put_auth(uint8_t *msg)
{
	size_t n = 0, ul = strlen(g.user), pl = strlen(g.pass);
	msg[n++] = 1;
	msg[n++] = (uint8_t)ul;
	memcpy(msg + n, g.user, ul);
	n += ul;
	msg[n++] = (uint8_t)pl;
	memcpy(msg + n, g.pass, pl);
	n += pl;
	return n;
}

static size_t put_request(uint8_t *msg, const struct conn *c)
{
	/* UDP ASSOCIATE names the address and port the client sends from */
	const struct sockaddr_in *dst =
	        g.mode == UDP ? &g.udp[c - g.conns].local : &g.targets[c->target];
	msg[0] = 5;
	msg[1] = g.mode == UDP ? 3 : 1;
	msg[2] = 0;
	msg[3] = 1;
	memcpy(msg + 4, &dst->sin_addr, 4);
	memcpy(msg + 8, &dst->sin_port, 2);
	return 10;
}

static void on_connected(struct conn *c)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
	epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev);
	if (g.direct) {
		if (g.mode == HOLD) {
			now_held(c);
		} else {
			send_request(c);
		}
		return;
	}
	uint8_t msg[600];
	size_t n = put_greeting(msg);
	c->st = ST_GREETING;
	c->in_len = 0;
	if (g.step) {
		/* one message at a time, each after the server's answer */
		c->need = 2;
	} else {
		/* Pipelined: greeting, credentials and request in one segment. */
		if (g.user)
			n += put_auth(msg + n);
		n += put_request(msg + n, c);
		c->need = 2 + (g.user ? 2 : 0) + 10;
	}
	send_all(c, msg, n);
}

/* The length of a SOCKS5 reply from its first five bytes. */
static size_t reply_len(const uint8_t *r)
{
	return r[3] == 4 ? 22 : r[3] == 3 ? 7 + (size_t)r[4] : 10;
}

/* step mode (-W): the answer to the greeting or the credentials is in; send
 * the next message.  False when the connection failed. */
static bool step_next(struct conn *c)
{
	uint8_t msg[600];
	size_t n;
	if (c->st == ST_GREETING && g.user) {
		n = put_auth(msg);
		c->st = ST_AUTH;
		c->need = 2;
	} else {
		n = put_request(msg, c);
		c->st = ST_REPLY;
		c->need = 10;
	}
	c->in_len = 0;
	send_all(c, msg, n);
	return c->fd >= 0;
}

/* udp mode: the reply to UDP ASSOCIATE succeeded; its BND.ADDR:BND.PORT is
 * the relay (a proxy that answers 0.0.0.0 means its own address). */
static void udp_associated(struct conn *c)
{
	struct udp_assoc *u = &g.udp[c - g.conns];
	if (c->in[3] != 1) {
		fprintf(stderr, "loadgen: the proxy's relay address is not IPv4 (ATYP %d)\n", c->in[3]);
		finish(c, false);
		return;
	}
	u->relay.sin_family = AF_INET;
	memcpy(&u->relay.sin_addr, c->in + 4, 4);
	memcpy(&u->relay.sin_port, c->in + 8, 2);
	if (u->relay.sin_addr.s_addr == htonl(INADDR_ANY))
		u->relay.sin_addr = g.proxy.sin_addr;
	u->ready = true;
	now_held(c);
}

static void on_readable(struct conn *c)
{
	for (;;) {
		if (c->st == ST_BODY || c->st == ST_HELD) {
			static char buf[256 * 1024];
			ssize_t n = recv(c->fd, buf, sizeof buf, 0);
			if (n > 0) {
				c->body += (uint64_t)n;
				g.bytes += (uint64_t)n;
				continue;
			}
			if (n == 0)
				finish(c, c->st == ST_BODY);
			else if (errno != EAGAIN)
				finish(c, false);
			return;
		}
		ssize_t n = recv(c->fd, c->in + c->in_len, c->need - c->in_len, 0);
		if (n <= 0) {
			if (n < 0 && errno == EAGAIN)
				return;
			finish(c, false);
			return;
		}
		c->in_len += (size_t)n;
		if (c->in_len < c->need)
			continue;
		if (g.step) {
			bool ok = c->in[0] == (c->st == ST_AUTH ? 1 : 5) &&
			          c->in[1] == (c->st == ST_GREETING ? (g.user ? 2 : 0) : 0);
			if (!ok) {
				if (c->st == ST_REPLY && c->in[0] == 5 && c->in[1] != 0)
					g.last_rep = c->in[1];
				finish(c, false);
				return;
			}
			if (c->st != ST_REPLY) {
				if (!step_next(c))
					return;
				continue;
			}
			if (reply_len(c->in) > c->need) { /* a longer BND.ADDR */
				c->need = reply_len(c->in);
				continue;
			}
		} else {
			/* method selection, [auth status], reply */
			size_t rep = 2 + (g.user ? 2 : 0);
			if (c->in[1] != (g.user ? 2 : 0) || (g.user && c->in[3] != 0) || c->in[rep + 1] != 0) {
				finish(c, false);
				return;
			}
			if (rep + reply_len(c->in + rep) > c->need) {
				c->need = rep + reply_len(c->in + rep);
				continue;
			}
		}
		if (g.mode == UDP) {
			udp_associated(c);
			return;
		}
		if (g.mode == HOLD) {
			now_held(c);
			return;
		}
		send_request(c);
		if (c->fd < 0)
			return;
	}
}

static int cmp64(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
	return x < y ? -1 : x > y;
}

static void usage(void)
{
	printf("usage: loadgen -m rate|bulk|hold|udp [-x PROXY:PORT] -t TARGET:PORT[,TARGET:PORT...]\n"
	       "               [-c N] [-d SECONDS] [-n MAXCONNS|MAXDGRAMS] [-u USER:PASS] [-p PATH]\n"
	       "               [-s SRC1,SRC2,...] [-k IN_FLIGHT] [-r RAMP_SECONDS] [-W]\n"
	       "               [-l DGRAM_BYTES] [-R DGRAMS_PER_SECOND | -w WINDOW]\n"
	       "       loadgen udp-echo ADDR:PORT [SECONDS]\n");
	exit(0);
}

/* ------------------------------------------------------------ udp mode */

static struct mmsghdr udp_msgs[UDP_BATCH];
static struct iovec udp_iov[UDP_BATCH];
static uint8_t *udp_buf; /* UDP_BATCH slots of UDP_MAX + UDP_HDR bytes */
#define UDP_SLOT (UDP_MAX + UDP_HDR + 16)

static bool udp_seen(const struct udp_assoc *u, uint64_t seq)
{
	return u->seen[(seq % UDP_SEEN_BITS) / 64] >> (seq % 64) & 1;
}

static void udp_mark(struct udp_assoc *u, uint64_t seq, bool on)
{
	uint64_t *w = &u->seen[(seq % UDP_SEEN_BITS) / 64], bit = (uint64_t)1 << (seq % 64);
	*w = on ? *w | bit : *w & ~bit;
}

/* Sends up to n (at most UDP_BATCH) datagrams of association i in one
 * sendmmsg; returns how many the kernel took. */
static int udp_send(int i, int n)
{
	struct udp_assoc *u = &g.udp[i];
	const struct sockaddr_in *t = &g.targets[i % g.ntargets];
	size_t h = g.direct ? 0 : UDP_HDR;
	for (int k = 0; k < n; k++) {
		uint8_t *p = udp_buf + (size_t)k * UDP_SLOT;
		uint64_t seq = u->sent + (uint64_t)k;
		uint32_t id = (uint32_t)i, magic = UDP_MAGIC;
		if (h) {
			p[0] = p[1] = p[2] = 0;
			p[3] = 1;
			memcpy(p + 4, &t->sin_addr, 4);
			memcpy(p + 8, &t->sin_port, 2);
		}
		memcpy(p + h, &id, 4);
		memcpy(p + h + 4, &seq, 8);
		memcpy(p + h + 12, &magic, 4);
		udp_mark(u, seq, false);
		udp_iov[k] = (struct iovec){.iov_base = p, .iov_len = h + g.dg_size};
		udp_msgs[k].msg_hdr = (struct msghdr){.msg_name = &u->relay, .msg_namelen = sizeof u->relay,
		                                      .msg_iov = &udp_iov[k], .msg_iovlen = 1};
	}
	int r = sendmmsg(u->fd, udp_msgs, (unsigned)n, MSG_DONTWAIT);
	if (r < n)
		g.short_sends++;
	if (r <= 0)
		return 0;
	u->sent += (uint64_t)r;
	return r;
}

/* Reads every echo waiting on association i's socket. */
static void udp_receive(int i, int64_t now)
{
	struct udp_assoc *u = &g.udp[i];
	const struct sockaddr_in *t = &g.targets[i % g.ntargets];
	for (;;) {
		for (int k = 0; k < UDP_BATCH; k++) {
			udp_iov[k] = (struct iovec){.iov_base = udp_buf + (size_t)k * UDP_SLOT, .iov_len = UDP_SLOT};
			udp_msgs[k].msg_hdr = (struct msghdr){.msg_iov = &udp_iov[k], .msg_iovlen = 1};
		}
		int n = recvmmsg(u->fd, udp_msgs, UDP_BATCH, MSG_DONTWAIT, NULL);
		if (n <= 0)
			return;
		for (int k = 0; k < n; k++) {
			const uint8_t *p = udp_buf + (size_t)k * UDP_SLOT;
			size_t len = udp_msgs[k].msg_len;
			if (!g.direct) {
				/* the reply's header names the target it came from */
				if (len < UDP_HDR || p[0] || p[1] || p[2] || p[3] != 1 ||
				    memcmp(p + 4, &t->sin_addr, 4) || memcmp(p + 8, &t->sin_port, 2)) {
					g.bad++;
					continue;
				}
				p += UDP_HDR;
				len -= UDP_HDR;
			}
			uint32_t id, magic;
			uint64_t seq;
			memcpy(&id, p, 4);
			memcpy(&seq, p + 4, 8);
			memcpy(&magic, p + 12, 4);
			if (len != g.dg_size || id != (uint32_t)i || magic != UDP_MAGIC || seq >= u->sent) {
				g.bad++;
			} else if (seq + UDP_SEEN_BITS <= u->sent) {
				g.late++;
			} else if (udp_seen(u, seq)) {
				g.dup++;
			} else {
				udp_mark(u, seq, true);
				u->received++;
				u->last_rx = now;
			}
		}
		if (n < UDP_BATCH)
			return;
	}
}

/* window mode: tops association i up to -w datagrams in flight */
static void udp_top_up(int i, uint64_t *total)
{
	struct udp_assoc *u = &g.udp[i];
	for (;;) {
		int64_t inflight = (int64_t)(u->sent - u->received - u->written_off);
		int64_t room = g.window - inflight;
		if (g.max_dgrams && (int64_t)(g.max_dgrams - *total) < room)
			room = (int64_t)(g.max_dgrams - *total);
		if (room <= 0)
			return;
		int n = udp_send(i, room > UDP_BATCH ? UDP_BATCH : (int)room);
		*total += (uint64_t)n;
		if (n == 0)
			return;
	}
}

static int64_t min64(int64_t a, int64_t b)
{
	return a < b ? a : b;
}

/* The datagram phase: sends for -d seconds (or -n datagrams), then waits
 * up to 0.5 s for the last echoes; returns the seconds spent sending. */
static double udp_run(void)
{
	int uep = epoll_create1(EPOLL_CLOEXEC);
	int *ready = calloc((size_t)g.conc, sizeof *ready), nready = 0;
	if (uep < 0 || !ready) {
		perror("loadgen");
		exit(1);
	}
	int64_t t0 = now_ns();
	for (int i = 0; i < g.conc; i++) {
		if (!g.udp[i].ready)
			continue;
		struct epoll_event ev = {.events = EPOLLIN, .data.u32 = (uint32_t)i};
		if (epoll_ctl(uep, EPOLL_CTL_ADD, g.udp[i].fd, &ev) == 0) {
			ready[nready++] = i;
			g.udp[i].last_rx = t0;
		}
	}
	int64_t t_end = t0 + (int64_t)(g.duration * 1e9), t_sent = 0, t_check = t0;
	uint64_t total = 0, offered = 0;
	int rr = 0;
	bool sending = nready > 0;
	if (sending && !g.dg_rate)
		for (int k = 0; k < nready; k++)
			udp_top_up(ready[k], &total);
	struct epoll_event evs[256];
	for (;;) {
		int64_t now = now_ns();
		if (sending && (interrupted || now >= t_end || (g.max_dgrams && total >= g.max_dgrams))) {
			sending = false;
			t_sent = now;
		}
		if (!sending) {
			uint64_t back = 0;
			for (int k = 0; k < nready; k++)
				back += g.udp[ready[k]].received;
			if (back >= total || now - t_sent >= 500000000 || interrupted > 1)
				break;
		}
		if (sending && g.dg_rate) {
			/* paced: send what is due by now, round robin in bursts of at
			 * most 32 per association; a backlog beyond 5 ms is skipped
			 * (loadgen fell behind), not sent as one burst */
			uint64_t due = (uint64_t)((double)(now - t0) * g.dg_rate / 1e9) + 1;
			if (g.max_dgrams && due > g.max_dgrams)
				due = g.max_dgrams;
			uint64_t cap = (uint64_t)(g.dg_rate * 0.005) + 64;
			if (due > offered + cap)
				offered = due - cap;
			while (offered < due) {
				uint64_t n = due - offered;
				if (n > 32)
					n = 32;
				total += (uint64_t)udp_send(ready[rr++ % nready], (int)n);
				offered += n;
			}
		}
		int64_t wait = 100000000;
		if (sending && g.dg_rate)
			wait = (int64_t)((double)(offered + 1) * 1e9 / g.dg_rate) - (now - t0);
		if (sending)
			wait = min64(wait, t_end - now);
		else
			wait = min64(wait, t_sent + 500000000 - now);
		if (wait < 0)
			wait = 0;
		struct timespec ts = {.tv_sec = wait / 1000000000, .tv_nsec = wait % 1000000000};
		int n = epoll_pwait2(uep, evs, 256, &ts, NULL);
		if (n < 0 && errno != EINTR)
			break;
		now = now_ns();
		for (int k = 0; k < n; k++) {
			int i = (int)evs[k].data.u32;
			udp_receive(i, now);
			if (sending && !g.dg_rate)
				udp_top_up(i, &total);
		}
		if (now - t_check >= 50000000) {
			t_check = now;
			/* control connections: a proxy that closes one ends that
			 * association (counted as dropped) */
			int m = epoll_wait(g.ep, evs, 256, 0);
			for (int k = 0; k < m; k++) {
				struct conn *c = evs[k].data.ptr;
				if (c->fd >= 0)
					on_readable(c);
			}
			/* window mode: what stayed unanswered for 200 ms is lost */
			for (int k = 0; sending && !g.dg_rate && k < nready; k++) {
				struct udp_assoc *u = &g.udp[ready[k]];
				int64_t inflight = (int64_t)(u->sent - u->received - u->written_off);
				if (inflight > 0 && now - u->last_rx >= 200000000) {
					u->written_off += (uint64_t)inflight;
					u->last_rx = now;
					udp_top_up(ready[k], &total);
				}
			}
		}
	}
	if (!t_sent)
		t_sent = now_ns();
	free(ready);
	close(uep);
	return (double)(t_sent - t0) / 1e9;
}

/* udp-echo ADDR:PORT [SECONDS]: sends every datagram back to its sender. */
static int udp_echo(int argc, char **argv)
{
	if (argc < 2 || argc > 3)
		bad_usage("udp-echo wants ADDR:PORT [SECONDS]");
	struct sockaddr_in a;
	if (parse_addr(argv[1], &a) < 0)
		bad_usage("udp-echo %s: want an IPv4 ADDR:PORT", argv[1]);
	double secs = argc == 3 ? num_arg("udp-echo SECONDS", argv[2], 0.001, 1e7) : 0;
	int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int sz = 16 << 20;
	if (fd < 0) {
		perror("loadgen: udp-echo socket");
		return 1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &sz, sizeof sz) < 0)
		setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sz, sizeof sz);
	if (setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sz, sizeof sz) < 0)
		setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sz, sizeof sz);
	socklen_t len = sizeof a;
	if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0) {
		fprintf(stderr, "loadgen: udp-echo %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	char host[INET_ADDRSTRLEN];
	inet_ntop(AF_INET, &a.sin_addr, host, sizeof host);
	printf("udp-echo %s:%d\n", host, ntohs(a.sin_port));
	fflush(stdout);
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = {.events = EPOLLIN};
	udp_buf = malloc((size_t)UDP_BATCH * UDP_SLOT);
	if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0 || !udp_buf) {
		perror("loadgen: udp-echo");
		return 1;
	}
	static struct sockaddr_in from[UDP_BATCH];
	uint64_t received = 0, echoed = 0;
	int64_t t0 = now_ns(), t_end = secs > 0 ? t0 + (int64_t)(secs * 1e9) : INT64_MAX;
	while (!interrupted && now_ns() < t_end) {
		if (epoll_wait(ep, &ev, 1, 100) <= 0)
			continue;
		for (;;) {
			for (int k = 0; k < UDP_BATCH; k++) {
				udp_iov[k] = (struct iovec){.iov_base = udp_buf + (size_t)k * UDP_SLOT, .iov_len = UDP_SLOT};
				udp_msgs[k].msg_hdr = (struct msghdr){.msg_name = &from[k], .msg_namelen = sizeof from[k],
				                                      .msg_iov = &udp_iov[k], .msg_iovlen = 1};
			}
			int n = recvmmsg(fd, udp_msgs, UDP_BATCH, MSG_DONTWAIT, NULL);
			if (n <= 0)
				break;
			received += (uint64_t)n;
			for (int k = 0; k < n; k++)
				udp_iov[k].iov_len = udp_msgs[k].msg_len;
			/* what the kernel will not take now is dropped, as a busy
			 * UDP server would */
			int done = 0;
			while (done < n) {
				int r = sendmmsg(fd, udp_msgs + done, (unsigned)(n - done), MSG_DONTWAIT);
				if (r <= 0)
					break;
				done += r;
			}
			echoed += (uint64_t)done;
			if (n < UDP_BATCH)
				break;
		}
	}
	printf("mode=udp-echo received=%llu echoed=%llu dropped=%llu seconds=%.2f\n",
	       (unsigned long long)received, (unsigned long long)echoed,
	       (unsigned long long)(received - echoed), (double)(now_ns() - t0) / 1e9);
	return 0;
}

/* udp mode, once the associations are set up: the datagram phase and its
 * report.  Exit status 1 when no association could be set up or nothing
 * came back. */
static int udp_report(void)
{
	uint64_t established = g.done, failed = g.failed;
	if (!established) {
		if (g.last_rep)
			fprintf(stderr, "loadgen: UDP ASSOCIATE refused: reply 0x%02x%s\n", g.last_rep,
			        g.last_rep == 7 ? " (command not supported)" : "");
		else
			fprintf(stderr, "loadgen: no UDP association could be set up (%llu failed)\n",
			        (unsigned long long)failed);
	}
	double secs = established && !interrupted ? udp_run() : 0;
	uint64_t sent = 0, received = 0;
	for (int i = 0; i < g.conc; i++) {
		sent += g.udp[i].sent;
		received += g.udp[i].received;
	}
	printf("mode=udp assocs=%d established=%llu failed=%llu dropped=%llu rep=%d size=%zu offered_rate=%.0f "
	       "window=%d sent=%llu received=%llu bad=%llu dup=%llu late=%llu short_sends=%llu seconds=%.2f "
	       "sent_rate=%.0f recv_rate=%.0f loss_pct=%.4f\n",
	       g.conc, (unsigned long long)established, (unsigned long long)failed,
	       (unsigned long long)g.dropped, g.last_rep, g.dg_size, g.dg_rate, g.dg_rate ? 0 : g.window,
	       (unsigned long long)sent, (unsigned long long)received, (unsigned long long)g.bad,
	       (unsigned long long)g.dup, (unsigned long long)g.late, (unsigned long long)g.short_sends, secs,
	       secs > 0 ? (double)sent / secs : 0, secs > 0 ? (double)received / secs : 0,
	       sent ? 100.0 * (double)(sent - received) / (double)sent : 0);
	fflush(stdout);
	for (int i = 0; i < g.conc; i++) {
		if (g.conns[i].fd >= 0)
			close(g.conns[i].fd);
		if (g.udp[i].fd >= 0)
			close(g.udp[i].fd);
		free(g.udp[i].seen);
	}
	free(g.udp);
	free(g.conns);
	free(udp_buf);
	close(g.ep);
	return received > 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc > 1 && !strcmp(argv[1], "udp-echo"))
		return udp_echo(argc - 1, argv + 1);
	g.conc = 1;
	g.duration = 10;
	g.path = "/";
	g.direct = true;
	g.max_inflight = 256;
	g.ramp_limit = 120;
	g.dg_size = 64;
	g.window = 32;
	bool window_set = false, udp_opt = false;
	int opt;
	opterr = 0; /* our own one-line messages */
	while ((opt = getopt(argc, argv, "m:x:t:c:d:n:u:p:s:k:r:Wl:R:w:h")) != -1) {
		switch (opt) {
		case 'm':
			if (!strcmp(optarg, "rate"))
				g.mode = RATE;
			else if (!strcmp(optarg, "bulk"))
				g.mode = BULK;
			else if (!strcmp(optarg, "hold"))
				g.mode = HOLD;
			else if (!strcmp(optarg, "udp"))
				g.mode = UDP;
			else
				bad_usage("-m %s: want rate, bulk, hold or udp", optarg);
			break;
		case 'x':
			if (parse_addr(optarg, &g.proxy) < 0 || !g.proxy.sin_port)
				bad_usage("-x %s: want an IPv4 ADDR:PORT", optarg);
			g.direct = false;
			break;
		case 't':
			for (char *tok = strtok(optarg, ","); tok; tok = strtok(NULL, ",")) {
				if (g.ntargets == MAX_ADDRS)
					bad_usage("-t: at most %d targets", MAX_ADDRS);
				if (parse_addr(tok, &g.targets[g.ntargets]) < 0 || !g.targets[g.ntargets].sin_port)
					bad_usage("-t %s: want an IPv4 ADDR:PORT", tok);
				g.ntargets++;
			}
			break;
		case 'k': g.max_inflight = (int)num_arg("-k", optarg, 1, 1e6); break;
		case 'W': g.step = true; break;
		case 'r': g.ramp_limit = num_arg("-r", optarg, 0.001, 1e7); break;
		case 'c': g.conc = (int)num_arg("-c", optarg, 1, 1e6); break;
		case 'd': g.duration = num_arg("-d", optarg, 0.001, 1e7); break;
		case 'n': g.max_conns = (uint64_t)num_arg("-n", optarg, 0, 1e15); break;
		case 'p': g.path = optarg; break;
		case 'l':
			g.dg_size = (size_t)num_arg("-l", optarg, UDP_MIN, UDP_MAX);
			udp_opt = true;
			break;
		case 'R':
			g.dg_rate = num_arg("-R", optarg, 1, 1e8);
			udp_opt = true;
			break;
		case 'w':
			g.window = (int)num_arg("-w", optarg, 1, UDP_SEEN_BITS / 16);
			window_set = udp_opt = true;
			break;
		case 'u': {
			char *colon = strchr(optarg, ':');
			if (!colon || colon == optarg || colon - optarg > 255 || strlen(colon + 1) > 255)
				bad_usage("-u: want USER:PASS, each 1 to 255 bytes");
			*colon = '\0';
			g.user = optarg;
			g.pass = colon + 1;
			break;
		}
		case 's':
			for (char *tok = strtok(optarg, ","); tok; tok = strtok(NULL, ",")) {
				if (g.nsrc == MAX_ADDRS)
					bad_usage("-s: at most %d source addresses", MAX_ADDRS);
				if (inet_pton(AF_INET, tok, &g.src[g.nsrc]) != 1)
					bad_usage("-s %s: want an IPv4 address", tok);
				g.nsrc++;
			}
			break;
		case 'h': usage(); break;
		default:
			if (strchr("mxtcdnupskrlRw", optopt))
				bad_usage("-%c wants a value", optopt);
			bad_usage("-%c: unknown option", optopt);
		}
	}
	if (optind < argc)
		bad_usage("%s: unexpected argument", argv[optind]);
	if (!g.ntargets)
		bad_usage("-t TARGET:PORT is required");
	if (g.mode == UDP) {
		if (g.dg_rate && window_set)
			bad_usage("-R (paced) and -w (window) exclude each other");
		if (g.conc > UDP_MAX_ASSOC)
			bad_usage("-c %d: at most %d UDP associations", g.conc, UDP_MAX_ASSOC);
		g.max_dgrams = g.max_conns;
		g.max_conns = 0;
		g.step = true; /* each SOCKS answer before the next message */
	} else if (udp_opt) {
		bad_usage("-l, -R and -w are for -m udp");
	}
	struct sigaction sa = {.sa_handler = on_signal};
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	g.ep = epoll_create1(EPOLL_CLOEXEC);
	g.conns = calloc((size_t)g.conc, sizeof *g.conns);
	if (!g.conns)
		return 1;
	for (int i = 0; i < g.conc; i++)
		g.conns[i].fd = -1;
	if (g.mode == UDP) {
		g.udp = calloc((size_t)g.conc, sizeof *g.udp);
		udp_buf = malloc((size_t)UDP_BATCH * UDP_SLOT);
		if (!g.udp || !udp_buf)
			return 1;
		memset(udp_buf, 0xa5, (size_t)UDP_BATCH * UDP_SLOT);
		for (int i = 0; i < g.conc; i++) {
			g.udp[i].fd = -1;
			g.udp[i].seen = calloc(UDP_SEEN_BITS / 64, sizeof(uint64_t));
			if (!g.udp[i].seen)
				return 1;
		}
		/* pacing wakes up every few microseconds */
		prctl(PR_SET_TIMERSLACK, 1000UL);
	}
	int64_t t_start = now_ns();
	int64_t t_end = t_start + (int64_t)(g.duration * 1e9);
	int64_t t_ramp_end = t_start + (int64_t)(g.ramp_limit * 1e9);
	double ramp_secs = 0;
	if (g.mode == UDP && g.direct) {
		for (int i = 0; i < g.conc; i++) {
			struct udp_assoc *u = &g.udp[i];
			if (udp_open(u)) {
				u->relay = g.targets[i % g.ntargets];
				u->ready = true;
				g.done++;
			} else {
				g.failed++;
			}
		}
	} else if (g.mode == HOLD || g.mode == UDP) {
		/* -d counts from the end of the ramp */
		t_end = INT64_MAX;
		g.ramping = true;
		ramp_fill();
	} else {
		for (int i = 0; i < g.conc; i++)
			start(&g.conns[i]);
	}
	struct epoll_event evs[512];
	while (!interrupted && now_ns() < t_end && !(g.mode == UDP && g.direct) &&
	       (!g.max_conns || g.done + g.failed < g.max_conns || g.mode == HOLD)) {
		if (g.ramping && ((g.started == g.conc && g.inflight == 0) || now_ns() >= t_ramp_end)) {
			g.ramping = false;
			int64_t t = now_ns();
			ramp_secs = (double)(t - t_start) / 1e9;
			t_end = t + (int64_t)(g.duration * 1e9);
			if (g.mode == UDP)
				break; /* every association is set up: on to the datagrams */
			fprintf(stderr, "loadgen: ramp done established=%llu failed=%llu pending=%d seconds=%.2f\n",
			        (unsigned long long)g.done, (unsigned long long)g.failed, g.inflight, ramp_secs);
			fflush(stderr);
		}
		int n = epoll_wait(g.ep, evs, 512, 100);
		if (n < 0 && errno != EINTR)
			break;
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (c->fd < 0)
				continue;
			if (c->st == ST_CONNECTING) {
				int err = 0;
				socklen_t len = sizeof err;
				getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
				if (err) {
					finish(c, false);
					continue;
				}
				if (!(evs[i].events & EPOLLOUT))
					continue;
				on_connected(c);
				if (c->fd < 0 || !(evs[i].events & EPOLLIN))
					continue;
			}
			on_readable(c);
		}
	}
	if (g.mode == UDP)
		return udp_report();
	g.stopping = true;
	double secs = (double)(now_ns() - t_start) / 1e9;
	uint64_t nheld = 0;
	for (int i = 0; i < g.conc; i++)
		if (g.conns[i].fd >= 0 && g.conns[i].st == ST_HELD)
			nheld++;
	/* The report first: closing many thousand sockets takes a while.  Its
	 * own time on CPU (user + system) goes with it, so that a run can set
	 * the client's cost beside the proxy's and the server's. */
	struct rusage ru;
	double cpu_us = 0;
	if (getrusage(RUSAGE_SELF, &ru) == 0)
		cpu_us = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1e6 +
		         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec);
	if (g.mode == RATE) {
		qsort(g.lat, g.nlat, sizeof *g.lat, cmp64);
		double p50 = g.nlat ? (double)g.lat[g.nlat / 2] / 1e3 : 0;
		double p99 = g.nlat ? (double)g.lat[g.nlat * 99 / 100] / 1e3 : 0;
		printf("mode=rate conns=%llu failed=%llu seconds=%.2f rate=%.0f p50_us=%.0f p99_us=%.0f "
		       "cpu_us=%.0f\n",
		       (unsigned long long)g.done, (unsigned long long)g.failed, secs, (double)g.done / secs,
		       p50, p99, cpu_us);
	} else if (g.mode == BULK) {
		printf("mode=bulk fetches=%llu failed=%llu seconds=%.2f bytes=%llu MBps=%.1f cpu_us=%.0f\n",
		       (unsigned long long)g.done, (unsigned long long)g.failed, secs,
		       (unsigned long long)g.bytes, (double)g.bytes / secs / 1e6, cpu_us);
	} else {
		if (g.ramping)
			ramp_secs = secs;
		printf("mode=hold established=%llu held=%llu failed=%llu dropped=%llu seconds=%.2f "
		       "ramp_seconds=%.2f\n",
		       (unsigned long long)g.done, (unsigned long long)nheld, (unsigned long long)g.failed,
		       (unsigned long long)g.dropped, secs, ramp_secs);
	}
	fflush(stdout);
	for (int i = 0; i < g.conc; i++)
		if (g.conns[i].fd >= 0)
			close(g.conns[i].fd);
	free(g.conns);
	free(g.lat);
	close(g.ep);
	/* bulk: a 1 GiB fetch may not finish within -d; the bytes count */
	return (g.mode == BULK ? g.bytes > 0 : g.done > 0) ? 0 : 1;
}
