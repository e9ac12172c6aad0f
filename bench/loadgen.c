/*
 * loadgen: a SOCKS5 load generator on epoll, for benchmarks on loopback.
 *
 *   loadgen -m rate  -x 127.0.0.1:1080 -t 127.0.0.1:8080 -c 64 -d 10 [-u user:pass] [-p /path]
 *   loadgen -m bulk  -x 127.0.0.1:1080 -t 127.0.0.1:8080 -c 32 -d 10 -p /big.bin
 *   loadgen -m hold  -x 127.0.0.1:1080 -t 127.0.0.1:8080 -c 10000 -d 30 [-s 127.0.0.2,127.0.0.3]
 *
 * Without -x it connects to the target directly (the baseline).  rate: each
 * of c clients repeats connect, SOCKS5 handshake (optionally RFC 1929),
 * "GET path HTTP/1.0", reads the response to EOF, closes; reports
 * connections per second and latency percentiles.  bulk: c clients each
 * fetch path again and again and count body bytes; reports bytes per
 * second.  hold: opens c sessions (from the source addresses given with -s,
 * round robin, to stay clear of the ephemeral port limit), keeps them open
 * for the duration and reports how many were established and held.
 * Every mode stops after -d seconds or -n connections, whichever is first.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
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
};

static struct {
	enum mode mode;
	struct sockaddr_in proxy, target;
	bool direct;
	const char *user, *pass;
	const char *path;
	int conc;
	double duration;
	uint64_t max_conns;
	struct in_addr src[64];
	int nsrc, next_src;
	int ep;
	struct conn *conns;
	uint64_t done, failed, bytes;
	int64_t *lat;
	size_t nlat, cap_lat;
	bool stopping;
} g;

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

static void start(struct conn *c);

static void finish(struct conn *c, bool ok)
{
	epoll_ctl(g.ep, EPOLL_CTL_DEL, c->fd, NULL);
	close(c->fd);
	c->fd = -1;
	if (ok) {
		g.done++;
		if (g.mode == RATE)
			record_latency(now_ns() - c->t0);
	} else {
		g.failed++;
	}
	if (!g.stopping && (!g.max_conns || g.done + g.failed < g.max_conns) && g.mode != HOLD)
		start(c);
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

static void start(struct conn *c)
{
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		g.failed++;
		return;
	}
	if (g.nsrc) {
		struct sockaddr_in src = {.sin_family = AF_INET, .sin_addr = g.src[g.next_src++ % g.nsrc]};
		int one = 1;
		setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
		if (bind(c->fd, (struct sockaddr *)&src, sizeof src) < 0) {
			close(c->fd);
			c->fd = -1;
			g.failed++;
			return;
		}
	}
	c->t0 = now_ns();
	c->st = ST_CONNECTING;
	c->in_len = 0;
	const struct sockaddr_in *to = g.direct ? &g.target : &g.proxy;
	if (connect(c->fd, (const struct sockaddr *)to, sizeof *to) < 0 && errno != EINPROGRESS) {
		close(c->fd);
		c->fd = -1;
		g.failed++;
		return;
	}
	struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP, .data.ptr = c};
	epoll_ctl(g.ep, EPOLL_CTL_ADD, c->fd, &ev);
}

static void on_connected(struct conn *c)
{
	struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.ptr = c};
	epoll_ctl(g.ep, EPOLL_CTL_MOD, c->fd, &ev);
	if (g.direct) {
		if (g.mode == HOLD) {
			c->st = ST_HELD;
			g.done++;
		} else {
			send_request(c);
		}
		return;
	}
	uint8_t msg[600];
	size_t n = 0;
	msg[n++] = 5;
	msg[n++] = 1;
	msg[n++] = g.user ? 2 : 0;
	if (g.user) {
		size_t ul = strlen(g.user), pl = strlen(g.pass);
		msg[n++] = 1;
		msg[n++] = (uint8_t)ul;
		memcpy(msg + n, g.user, ul);
		n += ul;
		msg[n++] = (uint8_t)pl;
		memcpy(msg + n, g.pass, pl);
		n += pl;
	}
	/* Pipelined: greeting, credentials and request in one segment. */
	msg[n++] = 5;
	msg[n++] = 1;
	msg[n++] = 0;
	msg[n++] = 1;
	memcpy(msg + n, &g.target.sin_addr, 4);
	n += 4;
	memcpy(msg + n, &g.target.sin_port, 2);
	n += 2;
	c->st = ST_GREETING;
	c->need = 2 + (g.user ? 2 : 0) + 10;
	send_all(c, msg, n);
}

static void on_readable(struct conn *c)
{
	for (;;) {
		if (c->st == ST_BODY || c->st == ST_HELD) {
			char buf[65536];
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
		/* method selection, [auth status], reply (IPv4 BND) */
		size_t rep = 2 + (g.user ? 2 : 0);
		if (c->in[1] != (g.user ? 2 : 0) || (g.user && c->in[3] != 0) || c->in[rep + 1] != 0) {
			finish(c, false);
			return;
		}
		if (g.mode == HOLD) {
			c->st = ST_HELD;
			g.done++;
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
	fprintf(stderr, "usage: loadgen -m rate|bulk|hold [-x PROXY:PORT] -t TARGET:PORT [-c N] [-d SECONDS]\n"
	                "               [-n MAXCONNS] [-u USER:PASS] [-p PATH] [-s SRC1,SRC2,...]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	g.conc = 1;
	g.duration = 10;
	g.path = "/";
	g.direct = true;
	int opt;
	while ((opt = getopt(argc, argv, "m:x:t:c:d:n:u:p:s:")) != -1) {
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
			if (parse_addr(optarg, &g.target) < 0)
				usage();
			break;
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
	if (!g.target.sin_port || g.conc < 1 || g.duration <= 0)
		usage();
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	g.ep = epoll_create1(EPOLL_CLOEXEC);
	g.conns = calloc((size_t)g.conc, sizeof *g.conns);
	if (!g.conns)
		return 1;
	int64_t t_start = now_ns();
	int64_t t_end = t_start + (int64_t)(g.duration * 1e9);
	for (int i = 0; i < g.conc; i++)
		start(&g.conns[i]);
	struct epoll_event evs[512];
	while (now_ns() < t_end && (!g.max_conns || g.done + g.failed < g.max_conns || g.mode == HOLD)) {
		int n = epoll_wait(g.ep, evs, 512, 100);
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
	uint64_t held = 0;
	for (int i = 0; i < g.conc; i++)
		if (g.conns[i].fd >= 0) {
			if (g.conns[i].st == ST_HELD)
				held++;
			close(g.conns[i].fd);
		}
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
		printf("mode=hold established=%llu held=%llu failed=%llu seconds=%.2f\n",
		       (unsigned long long)g.done, (unsigned long long)held, (unsigned long long)g.failed,
		       secs);
	}
	free(g.conns);
	free(g.lat);
	close(g.ep);
	return g.done ? 0 : 1;
}
