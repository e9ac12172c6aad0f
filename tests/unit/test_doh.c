/*
 * Unit tests for worker/resolver + worker/doh on a real loop, against a
 * small DoH server (HTTP/1.1, GET) and a small classic DNS server (UDP) run
 * on threads of this process, on loopback:
 *
 * - concurrent lookups of one name join one query (2 requests: A + AAAA);
 * - a second lookup within the TTL is answered from the cache, NXDOMAIN too;
 * - keep-alive: many lookups, one connection;
 * - the hosts file answers without DoH;
 * - a server that never answers gives -ETIMEDOUT at the lookup timeout;
 * - a DoH failure falls back to classic DNS, and DoH is then skipped for the
 *   back-off period; with the fallback off nothing reaches the DNS server;
 * - HTTP 500, a wrong content type and garbage bodies are failures;
 * - the endpoint URL from the original flags and from --doh-url, and the
 *   new settings keys (dns-timeout, dns-cache-size, doh-connections).
 *
 * Every test arms a guard timer so that nothing can hang.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../../shared/settings.h"
#include "../../shared/shm.h"
#include "../../worker/dns.h"
#include "../../worker/doh.h"
#include "../../shared/loop.h"
#include "../../worker/resolver.h"

#define GUARD_MS 6000
#define MAX_CONNS 64

/* ---- the fake servers ------------------------------------------------------ */

struct fake {
	int http_ls, udp;
	uint16_t http_port, udp_port;
	int pipe[2]; /* write a byte to stop */
	pthread_t th;
	int requests;    /* HTTP requests */
	int connections; /* HTTP connections accepted */
	int udp_queries;
	pthread_mutex_t mu;
};

static size_t b64url_decode(const char *in, size_t n, uint8_t *out, size_t cap)
{
	size_t o = 0;
	uint32_t acc = 0;
	int bits = 0;
	for (size_t i = 0; i < n; i++) {
		char c = in[i];
		int v = c >= 'A' && c <= 'Z'   ? c - 'A'
		        : c >= 'a' && c <= 'z' ? c - 'a' + 26
		        : c >= '0' && c <= '9' ? c - '0' + 52
		        : c == '-'             ? 62
		        : c == '_'             ? 63
		                               : -1;
		if (v < 0)
			break;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o < cap)
				out[o++] = (uint8_t)(acc >> bits);
		}
	}
	return o;
}

static size_t put_rr(uint8_t *p, uint16_t type, uint32_t ttl, const uint8_t *rd, uint16_t rdlen)
{
	p[0] = 0xc0;
	p[1] = 0x0c;
	p[2] = (uint8_t)(type >> 8);
	p[3] = (uint8_t)type;
	p[4] = 0;
	p[5] = 1;
	p[6] = (uint8_t)(ttl >> 24);
	p[7] = (uint8_t)(ttl >> 16);
	p[8] = (uint8_t)(ttl >> 8);
	p[9] = (uint8_t)ttl;
	p[10] = (uint8_t)(rdlen >> 8);
	p[11] = (uint8_t)rdlen;
	memcpy(p + 12, rd, rdlen);
	return 12u + rdlen;
}

/* SOA "test." owned by the question name (good enough for the decoder). */
static size_t put_soa(uint8_t *p, uint32_t minimum)
{
	uint8_t rd[22 + 20];
	size_t n = 0;
	rd[n++] = 0; /* MNAME: root */
	rd[n++] = 0; /* RNAME: root */
	memset(rd + n, 0, 16);
	n += 16;
	rd[n++] = (uint8_t)(minimum >> 24);
	rd[n++] = (uint8_t)(minimum >> 16);
	rd[n++] = (uint8_t)(minimum >> 8);
	rd[n++] = (uint8_t)minimum;
	return put_rr(p, DNS_TYPE_SOA, 3600, rd, (uint16_t)n);
}

/* Answer a query in q (qlen bytes) into out; returns the length.
 * a.test: A 127.0.0.1 (60 s) / AAAA NODATA; nx.test: NXDOMAIN; with
 * udp, every A is 127.0.0.7. */
static size_t answer(const uint8_t *q, size_t qlen, uint8_t *out, bool udp)
{
	char name[DNS_MAX_NAME + 1];
	size_t next;
	if (qlen < 12 || dns_name_read(q, qlen, 12, name, sizeof name, &next) < 0 || next + 4 > qlen)
		return 0;
	uint16_t qtype = (uint16_t)((q[next] << 8) | q[next + 1]);
	size_t n = next + 4;
	memcpy(out, q, n);
	out[2] = 0x81;
	out[3] = 0x80;
	out[6] = out[7] = out[8] = out[9] = out[10] = out[11] = 0;
	bool nx = strcmp(name, "nx.test") == 0;
	if (nx)
		out[3] = 0x83;
	if (!nx && qtype == DNS_TYPE_A) {
		uint8_t ip[4] = {127, 0, 0, udp ? 7 : 1};
		n += put_rr(out + n, DNS_TYPE_A, 60, ip, 4);
		out[7] = 1;
	} else if (!udp) {
		n += put_soa(out + n, 30);
		out[9] = 1;
	}
	return n;
}

struct conn {
	int fd;
	char buf[4096];
	size_t len;
};

static void http_reply(struct fake *f, struct conn *c, const char *req)
{
	pthread_mutex_lock(&f->mu);
	f->requests++;
	pthread_mutex_unlock(&f->mu);
	const char *d = strstr(req, "dns=");
	uint8_t q[512], a[1024];
	size_t ql = d ? b64url_decode(d + 4, strcspn(d + 4, " &\r\n"), q, sizeof q) : 0;
	char name[DNS_MAX_NAME + 1] = "";
	size_t next;
	if (ql > 12)
		(void)dns_name_read(q, ql, 12, name, sizeof name, &next);
	if (strcmp(name, "hang.test") == 0)
		return;
	char head[256];
	size_t alen = 0;
	const char *ctype = "application/dns-message";
	int status = 200;
	if (strcmp(name, "e500.test") == 0)
		status = 500;
	else if (strcmp(name, "html.test") == 0)
		ctype = "text/html";
	if (strcmp(name, "garbage.test") == 0) {
		memset(a, 0xff, 40);
		alen = 40;
	} else if (status == 200) {
		alen = answer(q, ql, a, false);
	}
	int hl = snprintf(head, sizeof head,
	                  "HTTP/1.1 %d X\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n", status,
	                  ctype, alen);
	if (write(c->fd, head, (size_t)hl) < 0 || write(c->fd, a, alen) < 0)
		return;
}

static void *serve(void *arg)
{
	struct fake *f = arg;
	struct conn conns[MAX_CONNS];
	size_t nconns = 0;
	for (;;) {
		struct pollfd p[3 + MAX_CONNS];
		p[0] = (struct pollfd){.fd = f->pipe[0], .events = POLLIN};
		p[1] = (struct pollfd){.fd = f->http_ls, .events = POLLIN};
		p[2] = (struct pollfd){.fd = f->udp, .events = POLLIN};
		for (size_t i = 0; i < nconns; i++)
			p[3 + i] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
		if (poll(p, 3 + nconns, 1000) < 0)
			break;
		if (p[0].revents)
			break;
		if ((p[1].revents & POLLIN) && nconns < MAX_CONNS) {
			int fd = accept(f->http_ls, NULL, NULL);
			if (fd >= 0) {
				conns[nconns].fd = fd;
				conns[nconns++].len = 0;
				pthread_mutex_lock(&f->mu);
				f->connections++;
				pthread_mutex_unlock(&f->mu);
			}
		}
		if (p[2].revents & POLLIN) {
			uint8_t q[512], a[1024];
			struct sockaddr_storage from;
			socklen_t fl = sizeof from;
			ssize_t n = recvfrom(f->udp, q, sizeof q, 0, (struct sockaddr *)&from, &fl);
			if (n > 0) {
				pthread_mutex_lock(&f->mu);
				f->udp_queries++;
				pthread_mutex_unlock(&f->mu);
				size_t al = answer(q, (size_t)n, a, true);
				if (al)
					(void)sendto(f->udp, a, al, 0, (struct sockaddr *)&from, fl);
			}
		}
		for (size_t i = 0; i < nconns; i++) {
			if (!p[3 + i].revents)
				continue;
			struct conn *c = &conns[i];
			ssize_t n = read(c->fd, c->buf + c->len, sizeof c->buf - 1 - c->len);
			if (n <= 0) {
				close(c->fd);
				conns[i] = conns[--nconns];
				p[3 + i] = p[3 + nconns];
				i--;
				continue;
			}
			c->len += (size_t)n;
			c->buf[c->len] = '\0';
			char *end;
			while ((end = strstr(c->buf, "\r\n\r\n"))) {
				*end = '\0';
				http_reply(f, c, c->buf);
				size_t used = (size_t)(end + 4 - c->buf);
				memmove(c->buf, end + 4, c->len - used + 1);
				c->len -= used;
			}
		}
	}
	for (size_t i = 0; i < nconns; i++)
		close(conns[i].fd);
	return NULL;
}

static int bound_socket(int type, uint16_t *port)
{
	int fd = socket(AF_INET, type, 0);
	struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t l = sizeof a;
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
	    (type == SOCK_STREAM && listen(fd, 64) < 0) ||
	    getsockname(fd, (struct sockaddr *)&a, &l) < 0)
		return -1;
	*port = ntohs(a.sin_port);
	return fd;
}

static int counter(struct fake *f, int *c)
{
	pthread_mutex_lock(&f->mu);
	int v = *c;
	pthread_mutex_unlock(&f->mu);
	return v;
}

/* ---- the fixture ------------------------------------------------------------ */

#define MAXQ 64

struct fixture {
	struct fake fake;
	struct loop loop;
	struct loop_tlist guard_tl;
	struct loop_timer guard;
	struct settings cfg;
	struct resolver *r;
	struct shm_worker_slot *slot;
	int pending;
	int done;
	int status[MAXQ];
	size_t n[MAXQ];
	struct sockaddr_storage first[MAXQ];
	int idx[MAXQ];
};

static void on_guard(struct loop *l, struct loop_timer *t)
{
	(void)t;
	loop_stop(l);
}

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof *f);
	assert_non_null(f);
	pthread_mutex_init(&f->fake.mu, NULL);
	f->fake.http_ls = bound_socket(SOCK_STREAM, &f->fake.http_port);
	f->fake.udp = bound_socket(SOCK_DGRAM, &f->fake.udp_port);
	assert_true(f->fake.http_ls >= 0 && f->fake.udp >= 0);
	assert_int_equal(pipe(f->fake.pipe), 0);
	assert_int_equal(pthread_create(&f->fake.th, NULL, serve, &f->fake), 0);
	assert_int_equal(loop_init(&f->loop), 0);
	loop_tlist_init(&f->loop, &f->guard_tl, 0);
	loop_timer_init(&f->guard, on_guard, f);
	settings_defaults(&f->cfg);
	f->cfg.doh = 1;
	snprintf(f->cfg.doh_url, sizeof f->cfg.doh_url, "http://127.0.0.1:%u/dns-query",
	         f->fake.http_port);
	snprintf(f->cfg.dns_server, sizeof f->cfg.dns_server, "127.0.0.1:%u", f->fake.udp_port);
	f->slot = calloc(1, sizeof *f->slot);
	assert_non_null(f->slot);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	resolver_free(f->r);
	loop_timer_stop(&f->guard);
	loop_tlist_detach(&f->loop, &f->guard_tl);
	loop_free(&f->loop);
	assert_int_equal(write(f->fake.pipe[1], "x", 1), 1);
	pthread_join(f->fake.th, NULL);
	close(f->fake.pipe[0]);
	close(f->fake.pipe[1]);
	close(f->fake.http_ls);
	close(f->fake.udp);
	pthread_mutex_destroy(&f->fake.mu);
	free(f->slot);
	free(f);
	return 0;
}

static void start_resolver(struct fixture *f)
{
	assert_int_equal(resolver_new(&f->loop, &f->cfg, f->slot, &f->r), 0);
}

static void on_resolved(void *arg, int status, const struct sockaddr_storage *addrs, size_t n)
{
	int *idx = arg;
	struct fixture *f = (struct fixture *)(void *)((char *)(idx - *idx) - offsetof(struct fixture, idx));
	f->status[*idx] = status;
	f->n[*idx] = n;
	if (n)
		f->first[*idx] = addrs[0];
	f->done++;
	if (f->done == f->pending)
		loop_stop(&f->loop);
}

/* Start count lookups of name (slots from f->pending on) and run the loop
 * until they are all answered or the guard fires. */
static void lookups(struct fixture *f, const char *name, int count)
{
	int first = f->pending;
	f->pending += count;
	for (int i = first; i < first + count; i++) {
		struct resolver_query *q;
		f->idx[i] = i;
		f->status[i] = 1;
		assert_int_equal(resolver_lookup(f->r, name, 80, on_resolved, &f->idx[i], &q), 0);
	}
	/* Never answered from inside resolver_lookup. */
	assert_int_equal(f->done, first);
	f->loop.stop = false;
	loop_timer_start_at(&f->guard_tl, &f->guard, f->loop.now + GUARD_MS);
	assert_int_equal(loop_run(&f->loop), 0);
	loop_timer_stop(&f->guard);
	assert_int_equal(f->done, f->pending);
}

static uint8_t last_octet(const struct sockaddr_storage *ss)
{
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
	assert_int_equal(s4->sin_family, AF_INET);
	assert_int_equal(ntohs(s4->sin_port), 80);
	return (uint8_t)(ntohl(s4->sin_addr.s_addr) & 0xff);
}

/* ---- tests -------------------------------------------------------------------- */

static void concurrent_lookups_join_one_query(void **state)
{
	struct fixture *f = *state;
	start_resolver(f);
	lookups(f, "a.test", 10);
	for (int i = 0; i < 10; i++) {
		assert_int_equal(f->status[i], 0);
		assert_int_equal(f->n[i], 1);
		assert_int_equal(last_octet(&f->first[i]), 1);
	}
	assert_int_equal(counter(&f->fake, &f->fake.requests), 2); /* A + AAAA, once */
	assert_int_equal(f->slot->counters[M_DNS_COALESCED], 9);
	assert_int_equal(f->slot->counters[M_DOH_QUERIES], 2);
	assert_int_equal(counter(&f->fake, &f->fake.udp_queries), 0);
}

static void second_lookup_within_ttl_is_cached(void **state)
{
	struct fixture *f = *state;
	start_resolver(f);
	lookups(f, "a.test", 1);
	lookups(f, "A.TEST.", 1); /* the same name */
	assert_int_equal(f->status[1], 0);
	assert_int_equal(counter(&f->fake, &f->fake.requests), 2);
	assert_int_equal(f->slot->counters[M_DNS_CACHE_HITS], 1);
	uint64_t lat = 0;
	for (int i = M_DNS_LAT_0; i < M_DNS_LAT_END; i++)
		lat += f->slot->counters[i];
	assert_int_equal(lat, 2); /* every delivered lookup is in the histogram */
}

static void nxdomain_is_cached_negatively(void **state)
{
	struct fixture *f = *state;
	start_resolver(f);
	lookups(f, "nx.test", 1);
	lookups(f, "nx.test", 1);
	assert_int_equal(f->status[0], -ENOENT);
	assert_int_equal(f->status[1], -ENOENT);
	assert_int_equal(counter(&f->fake, &f->fake.requests), 2);
	assert_int_equal(counter(&f->fake, &f->fake.udp_queries), 0);
}

static void keep_alive_many_names_one_connection(void **state)
{
	struct fixture *f = *state;
	f->cfg.doh_connections = 1;
	start_resolver(f);
	char name[32];
	for (int i = 0; i < 20; i++) {
		snprintf(name, sizeof name, "n%d.a.test", i);
		lookups(f, name, 1);
	}
	assert_int_equal(counter(&f->fake, &f->fake.requests), 40);
	assert_int_equal(counter(&f->fake, &f->fake.connections), 1);
}

static void hosts_file_answers_without_doh(void **state)
{
	struct fixture *f = *state;
	start_resolver(f);
	lookups(f, "localhost", 1);
	assert_int_equal(f->status[0], 0);
	assert_true(f->n[0] >= 1);
	assert_int_equal(counter(&f->fake, &f->fake.requests), 0);
	assert_int_equal(counter(&f->fake, &f->fake.udp_queries), 0);
}

static void unanswered_lookup_times_out(void **state)
{
	struct fixture *f = *state;
	f->cfg.dns_fallback = 0;
	f->cfg.dns_timeout_s = 1;
	start_resolver(f);
	int64_t t0 = f->loop.now;
	lookups(f, "hang.test", 2);
	assert_int_equal(f->status[0], -ETIMEDOUT);
	assert_int_equal(f->status[1], -ETIMEDOUT);
	assert_true(f->loop.now - t0 >= 900 && f->loop.now - t0 < 3000);
	assert_int_equal(counter(&f->fake, &f->fake.udp_queries), 0);
	assert_int_equal(f->slot->counters[M_DNS_TIMEOUTS], 1);
}

static void server_down_without_fallback_queries_nothing_else(void **state)
{
	struct fixture *f = *state;
	f->cfg.dns_fallback = 0;
	uint16_t closed;
	int fd = bound_socket(SOCK_STREAM, &closed);
	close(fd); /* nothing listens there now */
	snprintf(f->cfg.doh_url, sizeof f->cfg.doh_url, "http://127.0.0.1:%u/dns-query", closed);
	start_resolver(f);
	lookups(f, "a.test", 1);
	lookups(f, "b.test", 1); /* no back-off without a fallback: DoH again */
	assert_int_equal(f->status[0], -EIO);
	assert_int_equal(f->status[1], -EIO);
	assert_int_equal(counter(&f->fake, &f->fake.udp_queries), 0);
	assert_int_equal(f->slot->counters[M_DOH_FAILURES], 2);
	assert_int_equal(f->slot->counters[M_DOH_OUTAGES], 1);
	assert_int_equal(f->slot->counters[M_DNS_FALLBACKS], 0);
}

static void doh_failure_falls_back_then_backs_off(void **state)
{
	struct fixture *f = *state;
	start_resolver(f);
	lookups(f, "e500.test", 1); /* HTTP 500 -> classic DNS answers 127.0.0.7 */
	assert_int_equal(f->status[0], 0);
	assert_int_equal(last_octet(&f->first[0]), 7);
	int req = counter(&f->fake, &f->fake.requests);
	assert_true(req >= 1 && req <= 2);
	lookups(f, "a.test", 1); /* within the back-off: classic only */
	assert_int_equal(f->status[1], 0);
	assert_int_equal(last_octet(&f->first[1]), 7);
	assert_int_equal(counter(&f->fake, &f->fake.requests), req);
	assert_true(counter(&f->fake, &f->fake.udp_queries) >= 2);
	assert_int_equal(f->slot->counters[M_DNS_FALLBACKS], 2);
	assert_int_equal(f->slot->counters[M_DOH_OUTAGES], 1);
}

static void bad_content_type_and_garbage_are_failures(void **state)
{
	struct fixture *f = *state;
	f->cfg.dns_fallback = 0;
	start_resolver(f);
	lookups(f, "html.test", 1);
	lookups(f, "garbage.test", 1);
	lookups(f, "e500.test", 1);
	for (int i = 0; i < 3; i++)
		assert_int_equal(f->status[i], -EIO);
	assert_int_equal(f->slot->counters[M_DOH_FAILURES], 3);
}

static void invalid_names_fail_without_queries(void **state)
{
	struct fixture *f = *state;
	start_resolver(f);
	lookups(f, "a..b", 1);
	lookups(f, "bad name", 1);
	lookups(f, "abcdefghijklmnop.onion", 1); /* RFC 7686 */
	assert_int_equal(f->status[0], -ENOENT);
	assert_int_equal(f->status[1], -ENOENT);
	assert_int_equal(f->status[2], -ENOENT);
	assert_int_equal(counter(&f->fake, &f->fake.requests), 0);
	assert_int_equal(counter(&f->fake, &f->fake.udp_queries), 0);
}

static void latency_buckets(void **state)
{
	(void)state;
	assert_int_equal(resolver_latency_bucket(0), 0);
	assert_int_equal(resolver_latency_bucket(100), 0);
	assert_int_equal(resolver_latency_bucket(101), 1);
	assert_int_equal(resolver_latency_bucket(5000000), 10);
	assert_int_equal(resolver_latency_bucket(UINT64_MAX), M_DNS_LAT_END - M_DNS_LAT_0 - 1);
}

static void dns_settings_keys_are_validated(void **state)
{
	(void)state;
	struct settings s;
	char err[128];
	settings_defaults(&s);
	assert_int_equal(s.dns_timeout_s, 5);
	assert_int_equal(s.dns_cache_size, 4096);
	assert_int_equal(s.doh_connections, 4);
	assert_true(settings_set(&s, "dns-timeout", "2", err, sizeof err) >= 0);
	assert_int_equal(s.dns_timeout_s, 2);
	assert_int_equal(settings_set(&s, "dns-timeout", "0", err, sizeof err), -EINVAL);
	assert_int_equal(settings_set(&s, "dns-timeout", "61", err, sizeof err), -EINVAL);
	assert_true(settings_set(&s, "dns-cache-size", "0", err, sizeof err) >= 0);
	assert_int_equal(s.dns_cache_size, 0);
	assert_int_equal(settings_set(&s, "doh-connections", "0", err, sizeof err), -EINVAL);
	assert_int_equal(settings_set(&s, "doh-connections", "65", err, sizeof err), -EINVAL);
	assert_true(settings_set(&s, "doh-connections", "64", err, sizeof err) >= 0);
}

static void endpoint_from_original_flags_and_url(void **state)
{
	(void)state;
	struct settings s;
	struct doh_endpoint ep;
	settings_defaults(&s);
	assert_int_equal(doh_endpoint_build(&s, &ep), 0);
	assert_string_equal(ep.url, "http://127.0.0.1:8053/getnsrecord?dns=");
	assert_string_equal(ep.host, "localhost");
	assert_false(ep.tls);
	s.doh_post = 1;
	snprintf(s.doh_ip, sizeof s.doh_ip, "::1");
	assert_int_equal(doh_endpoint_build(&s, &ep), 0);
	assert_string_equal(ep.url, "http://[::1]:8053/getnsrecord");
	assert_true(ep.post);
	s.doh_post = 0;
	snprintf(s.doh_url, sizeof s.doh_url, "https://dns.example/dns-query{?dns}");
	assert_int_equal(doh_endpoint_build(&s, &ep), 0);
	assert_string_equal(ep.url, "https://dns.example/dns-query?dns=");
	assert_string_equal(ep.host, "");
	assert_true(ep.tls);
	snprintf(s.doh_url, sizeof s.doh_url, "http://127.0.0.1:1/q?x=1");
	assert_int_equal(doh_endpoint_build(&s, &ep), 0);
	assert_string_equal(ep.url, "http://127.0.0.1:1/q?x=1&dns=");
}

#define T(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
	    T(concurrent_lookups_join_one_query),
	    T(second_lookup_within_ttl_is_cached),
	    T(nxdomain_is_cached_negatively),
	    T(keep_alive_many_names_one_connection),
	    T(hosts_file_answers_without_doh),
	    T(unanswered_lookup_times_out),
	    T(server_down_without_fallback_queries_nothing_else),
	    T(doh_failure_falls_back_then_backs_off),
	    T(bad_content_type_and_garbage_are_failures),
	    T(invalid_names_fail_without_queries),
	    cmocka_unit_test(latency_buckets),
	    cmocka_unit_test(dns_settings_keys_are_validated),
	    cmocka_unit_test(endpoint_from_original_flags_and_url),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
