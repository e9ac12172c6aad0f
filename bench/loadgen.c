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
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode { RATE, BULK, HOLD };
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
	out->sin_port = htons((uint16_t)atoi(colon + 1));
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

static void finish(struct conn *c, bool ok)
{
	epoll_ctl(g.ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	if (g.mode == HOLD) {
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

/* Opens a connection; false (and c->fd -1) when that failed at once.  In
 * rate and bulk mode the failure is counted here; in hold mode the caller
 * counts it. */
static bool start(struct conn *c)
{
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
	msg[0] = 5;
	msg[1] = 1;
	msg[2] = 0;
	msg[3] = 1;
	memcpy(msg + 4, &g.targets[c->target].sin_addr, 4);
	memcpy(msg + 8, &g.targets[c->target].sin_port, 2);
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
	fprintf(stderr, "usage: loadgen -m rate|bulk|hold [-x PROXY:PORT] -t TARGET:PORT[,TARGET:PORT...]\n"
	                "               [-c N] [-d SECONDS] [-n MAXCONNS] [-u USER:PASS] [-p PATH]\n"
	                "               [-s SRC1,SRC2,...] [-k IN_FLIGHT] [-r RAMP_SECONDS] [-W]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	g.conc = 1;
	g.duration = 10;
	g.path = "/";
	g.direct = true;
	g.max_inflight = 256;
	g.ramp_limit = 120;
	int opt;
	while ((opt = getopt(argc, argv, "m:x:t:c:d:n:u:p:s:k:r:W")) != -1) {
		switch (opt) {
		case 'm':
			g.mode = !strcmp(optarg, "rate") ? RATE : !strcmp(optarg, "bulk") ? BULK : HOLD;
			if (strcmp(optarg, "rate") && strcmp(optarg, "bulk") && strcmp(optarg, "hold"))
				usage();
			break;
		case 'x':
			if (parse_addr(optarg, &g.proxy) < 0)
				usage();
			g.direct = false;
			break;
		case 't':
			for (char *tok = strtok(optarg, ","); tok; tok = strtok(NULL, ",")) {
				if (g.ntargets == MAX_ADDRS || parse_addr(tok, &g.targets[g.ntargets]) < 0)
					usage();
				g.ntargets++;
			}
			break;
		case 'k': g.max_inflight = atoi(optarg); break;
		case 'W': g.step = true; break;
		case 'r': g.ramp_limit = atof(optarg); break;
		case 'c': g.conc = atoi(optarg); break;
		case 'd': g.duration = atof(optarg); break;
		case 'n': g.max_conns = strtoull(optarg, NULL, 10); break;
		case 'p': g.path = optarg; break;
		case 'u': {
			char *colon = strchr(optarg, ':');
			if (!colon)
				usage();
			*colon = '\0';
			g.user = optarg;
			g.pass = colon + 1;
			break;
		}
		case 's':
			for (char *tok = strtok(optarg, ","); tok && g.nsrc < 64; tok = strtok(NULL, ","))
				if (inet_pton(AF_INET, tok, &g.src[g.nsrc]) == 1)
					g.nsrc++;
			break;
		default:
			usage();
		}
	}
	if (!g.ntargets || g.conc < 1 || g.duration <= 0 || g.max_inflight < 1 || g.ramp_limit <= 0)
		usage();
	for (int i = 0; i < g.ntargets; i++)
		if (!g.targets[i].sin_port)
			usage();
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
	int64_t t_start = now_ns();
	int64_t t_end = t_start + (int64_t)(g.duration * 1e9);
	int64_t t_ramp_end = t_start + (int64_t)(g.ramp_limit * 1e9);
	double ramp_secs = 0;
	if (g.mode == HOLD) {
		/* -d counts from the end of the ramp */
		t_end = INT64_MAX;
		g.ramping = true;
		ramp_fill();
	} else {
		for (int i = 0; i < g.conc; i++)
			start(&g.conns[i]);
	}
	struct epoll_event evs[512];
	while (!interrupted && now_ns() < t_end &&
	       (!g.max_conns || g.done + g.failed < g.max_conns || g.mode == HOLD)) {
		if (g.ramping && ((g.started == g.conc && g.inflight == 0) || now_ns() >= t_ramp_end)) {
			g.ramping = false;
			int64_t t = now_ns();
			ramp_secs = (double)(t - t_start) / 1e9;
			t_end = t + (int64_t)(g.duration * 1e9);
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
	g.stopping = true;
	double secs = (double)(now_ns() - t_start) / 1e9;
	uint64_t nheld = 0;
	for (int i = 0; i < g.conc; i++)
		if (g.conns[i].fd >= 0 && g.conns[i].st == ST_HELD)
			nheld++;
	/* The report first: closing many thousand sockets takes a while. */
	if (g.mode == RATE) {
		qsort(g.lat, g.nlat, sizeof *g.lat, cmp64);
		double p50 = g.nlat ? (double)g.lat[g.nlat / 2] / 1e3 : 0;
		double p99 = g.nlat ? (double)g.lat[g.nlat * 99 / 100] / 1e3 : 0;
		printf("mode=rate conns=%llu failed=%llu seconds=%.2f rate=%.0f p50_us=%.0f p99_us=%.0f\n",
		       (unsigned long long)g.done, (unsigned long long)g.failed, secs, (double)g.done / secs,
		       p50, p99);
	} else if (g.mode == BULK) {
		printf("mode=bulk fetches=%llu failed=%llu seconds=%.2f bytes=%llu MBps=%.1f\n",
		       (unsigned long long)g.done, (unsigned long long)g.failed, secs,
		       (unsigned long long)g.bytes, (double)g.bytes / secs / 1e6);
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
