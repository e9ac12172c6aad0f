#include "resolver.h"

#include <ares.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <time.h>

#include "../shared/log.h"
#include "dns.h"
#include "dnscache.h"
#include "doh.h"

#define FLIGHT_BUCKETS 256
/* With a fallback, DoH gets this share of the lookup's time, so that the
 * classic query still has the rest when the DoH server does not answer. */
#define DOH_SHARE_PCT 60
#define TIMEOUT_WARN_MS 1000

struct ares_watch {
	struct loop_watch w;
	struct ares_watch *next;
	struct loop_deferred deferred;
};

enum { Q_AAAA = 0, Q_A = 1 };

struct lookup;

struct lookup_part {
	struct lookup *lk;
	int idx;
};

/* One name being resolved, shared by every query that asked for it. */
struct lookup {
	struct resolver *r;
	struct lookup *hnext;
	struct resolver_query *waiters, **wtail;
	struct doh_req *req[2];
	struct lookup_part part[2];
	struct dns_answer ans[2];
	bool got[2];
	bool classic;   /* resolving through c-ares */
	bool done;      /* answered; kept only while c-ares still holds it */
	bool ares_busy; /* a c-ares query has this lookup as its argument */
	uint32_t hash;
	struct loop_timer deadline;
	char name[DNS_MAX_NAME + 1];
};

struct resolver_query {
	struct resolver *r;
	resolver_cb *cb;
	void *arg;
	uint16_t port;
	int status;
	size_t n;
	int64_t start_us;
	struct resolver_query *next; /* a lookup's waiters, then the ready list */
	char name[DNS_MAX_NAME + 1];
	struct sockaddr_storage addrs[RESOLVER_MAX_ADDRS];
};

struct resolver {
	struct loop *loop;
	struct shm_worker_slot *slot;
	struct shm_worker_slot *own_slot; /* when none was given */
	ares_channel ch;                  /* classic DNS */
	ares_channel hosts;               /* the hosts file only */
	struct ares_watch *watches;
	struct loop_tlist tlist;
	struct loop_timer timer;
	/* Answers are delivered from this timer, never from inside
	 * resolver_lookup (c-ares answers a hosts-file name at once). */
	struct loop_timer ready_timer;
	struct resolver_query *ready, **ready_tail;

	struct doh *doh;
	struct dnscache *cache;
	struct lookup *flights[FLIGHT_BUCKETS];
	struct loop_tlist deadline_tl;
	bool use_doh; /* an endpoint was configured; classic DNS alone otherwise */
	bool fallback;
	int64_t timeout_ms;
	bool doh_down;          /* an outage was reported and not yet over */
	int64_t doh_retry_at;   /* with a fallback: classic only until then */
	int64_t last_timeout_warn;
	uint64_t timeouts_unreported;
};

static void deliver_ready(struct loop *l, struct loop_timer *t);

static int64_t now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

unsigned resolver_latency_bucket(uint64_t us)
{
	static const uint64_t bounds[] = SHM_DNS_LAT_BOUNDS_US;
	unsigned n = (unsigned)(sizeof bounds / sizeof bounds[0]);
	for (unsigned i = 0; i < n; i++)
		if (us <= bounds[i])
			return i;
	return n - 1;
}

static void count(struct resolver *r, enum shm_counter c)
{
	shm_count(r->slot, c, 1);
}

static void update_timer(struct resolver *r)
{
	struct timeval tv;
	struct timeval *t = ares_timeout(r->ch, NULL, &tv);
	if (!t) {
		loop_timer_stop(&r->timer);
		return;
	}
	int64_t ms = (int64_t)t->tv_sec * 1000 + t->tv_usec / 1000 + 1;
	loop_timer_start_at(&r->tlist, &r->timer, r->loop->now + ms);
}

static void on_timer(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct resolver *r = t->data;
	ares_process_fd(r->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	update_timer(r);
}

static void on_io(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	struct resolver *r = w->data;
	int fd = w->fd;
	ares_socket_t rfd = (events & (EPOLLIN | EPOLLERR | EPOLLHUP)) ? fd : ARES_SOCKET_BAD;
	ares_socket_t wfd = (events & EPOLLOUT) ? fd : ARES_SOCKET_BAD;
	ares_process_fd(r->ch, rfd, wfd);
	update_timer(r);
}

static void sock_state(void *data, ares_socket_t fd, int readable, int writable)
{
	struct resolver *r = data;
	struct ares_watch **pp = &r->watches;
	while (*pp && (*pp)->w.fd != fd)
		pp = &(*pp)->next;
	struct ares_watch *aw = *pp;
	uint32_t ev = (readable ? EPOLLIN : 0) | (writable ? EPOLLOUT : 0);
	if (!readable && !writable) {
		if (aw) {
			/* c-ares closes all its sockets when the last query ends: events
			 * of this batch may still name this watch, so free it after. */
			loop_watch_del(r->loop, &aw->w);
			*pp = aw->next;
			loop_defer_free(r->loop, &aw->deferred, free, aw);
		}
		return;
	}
	if (aw) {
		(void)loop_watch_mod(r->loop, &aw->w, ev);
		return;
	}
	aw = calloc(1, sizeof *aw);
	if (!aw) {
		log_error("resolver: out of memory watching a DNS socket");
		return;
	}
	if (loop_watch_add(r->loop, &aw->w, fd, ev, on_io, r) < 0) {
		log_error("resolver: cannot watch a DNS socket: %s", strerror(errno));
		free(aw);
		return;
	}
	aw->next = r->watches;
	r->watches = aw;
}

int resolver_set_servers(struct resolver *r, const char *servers)
{
	if (!servers || !*servers)
		return 0; /* the system's servers, read when the channel was made */
	int rc = ares_set_servers_ports_csv(r->ch, servers);
	return rc == ARES_SUCCESS ? 0 : -EINVAL;
}

void resolver_configure(struct resolver *r, const struct settings *cfg)
{
	bool was_doh = r->use_doh;
	r->use_doh = cfg->doh != 0;
	r->fallback = cfg->dns_fallback != 0;
	r->timeout_ms = (int64_t)(cfg->dns_timeout_s ? cfg->dns_timeout_s : 5) * 1000;
	dnscache_set_capacity(r->cache, cfg->dns_cache_size);
	bool changed = doh_endpoint_changed(r->doh, cfg);
	int rc = doh_configure(r->doh, cfg);
	if (rc < 0) {
		log_error("dns: cannot configure the DoH endpoint: %s", strerror(-rc));
		return;
	}
	if (changed || was_doh != r->use_doh) {
		/* Another server may answer differently; its health is unknown. */
		dnscache_clear(r->cache);
		r->doh_down = false;
		r->doh_retry_at = 0;
		if (r->use_doh)
			log_debug("dns: DoH endpoint %s (%s), classic fallback %s", doh_url(r->doh),
			          cfg->doh_post ? "POST" : "GET", r->fallback ? "on" : "off");
		else
			log_debug("dns: classic DNS (no DoH endpoint configured)");
	}
}

int resolver_new(struct loop *l, const struct settings *cfg, struct shm_worker_slot *slot,
                 struct resolver **out)
{
	static int library_ready;
	if (!library_ready) {
		if (ares_library_init(ARES_LIB_INIT_ALL) != ARES_SUCCESS)
			return -ENOMEM;
		library_ready = 1;
	}
	struct resolver *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	r->loop = l;
	r->slot = slot;
	if (!slot && !(r->slot = r->own_slot = calloc(1, sizeof *r->own_slot))) {
		free(r);
		return -ENOMEM;
	}
	struct ares_options opts = {0};
	opts.sock_state_cb = sock_state;
	opts.sock_state_cb_data = r;
	opts.timeout = 2000;
	opts.tries = 2;
	/* The hosts file is read before DoH by the hosts channel. */
	opts.lookups = (char *)"b";
	int rc = ares_init_options(&r->ch, &opts,
	                           ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
	                               ARES_OPT_LOOKUPS);
	if (rc != ARES_SUCCESS) {
		free(r->own_slot);
		free(r);
		return -ENOMEM;
	}
	struct ares_options hopts = {0};
	hopts.lookups = (char *)"f";
	if (ares_init_options(&r->hosts, &hopts, ARES_OPT_LOOKUPS) != ARES_SUCCESS) {
		ares_destroy(r->ch);
		free(r->own_slot);
		free(r);
		return -ENOMEM;
	}
	loop_tlist_init(l, &r->tlist, 0);
	loop_tlist_init(l, &r->deadline_tl, 0);
	loop_timer_init(&r->timer, on_timer, r);
	loop_timer_init(&r->ready_timer, deliver_ready, r);
	r->ready_tail = &r->ready;
	if (resolver_set_servers(r, cfg->dns_server) < 0 || dnscache_new(cfg->dns_cache_size, &r->cache) < 0 ||
	    doh_new(l, &r->doh) < 0) {
		resolver_free(r);
		return -EINVAL;
	}
	resolver_configure(r, cfg);
	*out = r;
	return 0;
}

static void lookup_drop(struct lookup *lk);

void resolver_free(struct resolver *r)
{
	if (!r)
		return;
	/* DoH requests go without callbacks; lookups still held by c-ares are
	 * freed by their callbacks (ARES_EDESTRUCTION) from ares_destroy. */
	doh_free(r->doh);
	r->doh = NULL;
	for (size_t i = 0; i < FLIGHT_BUCKETS; i++)
		while (r->flights[i])
			lookup_drop(r->flights[i]);
	if (r->ch)
		ares_destroy(r->ch);
	if (r->hosts)
		ares_destroy(r->hosts);
	while (r->ready) {
		struct resolver_query *q = r->ready;
		r->ready = q->next;
		free(q);
	}
	loop_timer_stop(&r->ready_timer);
	while (r->watches) {
		struct ares_watch *aw = r->watches;
		r->watches = aw->next;
		loop_watch_del(r->loop, &aw->w);
		free(aw);
	}
	loop_timer_stop(&r->timer);
	loop_tlist_detach(r->loop, &r->tlist);
	loop_tlist_detach(r->loop, &r->deadline_tl);
	dnscache_free(r->cache);
	free(r->own_slot);
	free(r);
}

static void deliver_ready(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct resolver *r = t->data;
	struct resolver_query *q = r->ready;
	r->ready = NULL;
	r->ready_tail = &r->ready;
	int64_t now = now_us();
	while (q) {
		struct resolver_query *next = q->next;
		if (q->cb) {
			int64_t us = now - q->start_us;
			count(r, (enum shm_counter)(M_DNS_LAT_0 + resolver_latency_bucket(us < 0 ? 0 : (uint64_t)us)));
			shm_count(r->slot, M_DNS_LAT_SUM_US, us < 0 ? 0 : (uint64_t)us);
			q->cb(q->arg, q->status, q->addrs, q->n);
		}
		free(q);
		q = next;
	}
}

static void ready(struct resolver_query *q, int status)
{
	struct resolver *r = q->r;
	q->status = status;
	if (status)
		q->n = 0;
	q->next = NULL;
	*r->ready_tail = q;
	r->ready_tail = &q->next;
	if (!loop_timer_active(&r->ready_timer))
		loop_timer_start_at(&r->tlist, &r->ready_timer, r->loop->now);
}

/* IPv6 first (RFC 6724's default preference), each family keeping at least
 * half of the slots when the other has more addresses than fit. */
static void fill(struct resolver_query *q, const struct dns_addr *a, size_t n)
{
	size_t c6 = 0, c4 = 0;
	for (size_t i = 0; i < n; i++) {
		if (a[i].family == AF_INET6)
			c6++;
		else
			c4++;
	}
	size_t half = RESOLVER_MAX_ADDRS / 2;
	size_t n6 = c6, n4 = c4;
	if (n6 + n4 > RESOLVER_MAX_ADDRS) {
		n6 = c6 < half ? c6 : (c4 < half ? RESOLVER_MAX_ADDRS - c4 : half);
		n4 = RESOLVER_MAX_ADDRS - n6 < c4 ? RESOLVER_MAX_ADDRS - n6 : c4;
	}
	size_t k = 0;
	for (int pass = 0; pass < 2; pass++) {
		size_t want = pass == 0 ? n6 : n4, got = 0;
		int fam = pass == 0 ? AF_INET6 : AF_INET;
		for (size_t i = 0; i < n && got < want; i++) {
			if (a[i].family != fam)
				continue;
			struct sockaddr_storage *ss = &q->addrs[k++];
			memset(ss, 0, sizeof *ss);
			if (fam == AF_INET6) {
				struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
				s6->sin6_family = AF_INET6;
				memcpy(&s6->sin6_addr, a[i].addr, 16);
				s6->sin6_port = htons(q->port);
			} else {
				struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
				s4->sin_family = AF_INET;
				memcpy(&s4->sin_addr, a[i].addr, 4);
				s4->sin_port = htons(q->port);
			}
			got++;
		}
	}
	q->n = k;
}

/* ---- lookups in flight --------------------------------------------------- */

static uint32_t name_hash(const char *s)
{
	uint32_t h = 2166136261u;
	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return h;
}

static struct lookup *flight_find(struct resolver *r, const char *name, uint32_t h)
{
	for (struct lookup *lk = r->flights[h % FLIGHT_BUCKETS]; lk; lk = lk->hnext)
		if (lk->hash == h && strcmp(lk->name, name) == 0)
			return lk;
	return NULL;
}

static void flight_remove(struct lookup *lk)
{
	struct lookup **pp = &lk->r->flights[lk->hash % FLIGHT_BUCKETS];
	while (*pp && *pp != lk)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = lk->hnext;
	lk->hnext = NULL;
}

static void cancel_doh(struct lookup *lk)
{
	for (int i = 0; i < 2; i++) {
		doh_cancel(lk->req[i]);
		lk->req[i] = NULL;
	}
}

/* End a lookup: every waiter gets the outcome (through the ready list). */
static void lookup_finish(struct lookup *lk, int status, const struct dns_addr *a, size_t n)
{
	struct resolver *r = lk->r;
	lk->done = true;
	flight_remove(lk);
	loop_timer_stop(&lk->deadline);
	cancel_doh(lk);
	if (status == -ETIMEDOUT) {
		count(r, M_DNS_TIMEOUTS);
		/* One line per timeout, but not a flood when a server hangs. */
		if (r->loop->now - r->last_timeout_warn >= TIMEOUT_WARN_MS) {
			log_warn("dns: lookup of '%s' timed out after %lld ms (%s)%s", lk->name,
			         (long long)r->timeout_ms,
			         lk->classic ? "classic DNS" : "DoH", r->timeouts_unreported ? "; more timed out before" : "");
			r->last_timeout_warn = r->loop->now;
			r->timeouts_unreported = 0;
		} else {
			r->timeouts_unreported++;
		}
	}
	struct resolver_query *q = lk->waiters;
	lk->waiters = NULL;
	lk->wtail = &lk->waiters;
	while (q) {
		struct resolver_query *next = q->next;
		if (status == 0 && n > 0) {
			fill(q, a, n);
			ready(q, 0);
		} else {
			ready(q, status ? status : -ENOENT);
		}
		q = next;
	}
	if (!lk->ares_busy)
		free(lk);
}

/* At resolver_free: waiters' callbacks were cancelled by their sessions. */
static void lookup_drop(struct lookup *lk)
{
	lk->done = true;
	flight_remove(lk);
	loop_timer_stop(&lk->deadline);
	cancel_doh(lk);
	while (lk->waiters) {
		struct resolver_query *q = lk->waiters;
		lk->waiters = q->next;
		free(q);
	}
	if (!lk->ares_busy)
		free(lk);
}

static void on_deadline(struct loop *l, struct loop_timer *t)
{
	(void)l;
	lookup_finish(t->data, -ETIMEDOUT, NULL, 0);
}

/* ---- classic DNS (c-ares) -------------------------------------------------- */


/* The addresses of a c-ares answer, at most max of them. */
static size_t addrs_of(const struct ares_addrinfo *res, struct dns_addr *a, size_t max)
{
	size_t n = 0;
	for (const struct ares_addrinfo_node *ai = res->nodes; ai && n < max; ai = ai->ai_next) {
		if (ai->ai_family == AF_INET && ai->ai_addrlen >= sizeof(struct sockaddr_in)) {
			a[n].family = AF_INET;
			memcpy(a[n++].addr, &((const struct sockaddr_in *)ai->ai_addr)->sin_addr, 4);
		} else if (ai->ai_family == AF_INET6 && ai->ai_addrlen >= sizeof(struct sockaddr_in6)) {
			a[n].family = AF_INET6;
			memcpy(a[n++].addr, &((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr, 16);
		}
	}
	return n;
}

static void on_classic(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	(void)timeouts;
	struct lookup *lk = arg;
	lk->ares_busy = false;
	if (lk->done) {
		if (res)
			ares_freeaddrinfo(res);
		free(lk);
		return;
	}
	struct dns_addr a[DNSCACHE_MAX_ADDRS];
	size_t n = 0;
	int err = 0;
	if (status == ARES_SUCCESS && res) {
		n = addrs_of(res, a, DNSCACHE_MAX_ADDRS);
		if (n == 0)
			err = -ENOENT;
	} else if (status == ARES_ENOTFOUND || status == ARES_ENODATA || status == ARES_EBADNAME) {
		err = -ENOENT;
	} else if (status == ARES_ETIMEOUT) {
		err = -ETIMEDOUT;
	} else {
		err = -EIO;
	}
	if (res)
		ares_freeaddrinfo(res);
	/* Classic answers are not cached: the fallback behaves as the classic
	 * resolver always did, and DoH answers are not mixed with them. */
	lookup_finish(lk, err, a, n);
}

static void start_classic(struct lookup *lk)
{
	struct resolver *r = lk->r;
	lk->classic = true;
	if (r->use_doh)
		count(r, M_DNS_FALLBACKS);
	struct ares_addrinfo_hints hints = {0};
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	lk->ares_busy = true;
	/* May answer at once (lookup_finish frees nothing while ares_busy is
	 * cleared first by on_classic); lk is not touched afterwards. */
	ares_getaddrinfo(r->ch, lk->name, NULL, &hints, on_classic, lk);
	update_timer(r);
}

/* ---- DoH --------------------------------------------------------------------- */

static void doh_failed(struct lookup *lk, enum doh_status st, const char *detail)
{
	struct resolver *r = lk->r;
	count(r, M_DOH_FAILURES);
	cancel_doh(lk);
	if (!r->doh_down) {
		r->doh_down = true;
		count(r, M_DOH_OUTAGES);
		if (r->fallback)
			log_warn("dns: DoH endpoint %s unusable (%s: %s); resolving through classic DNS, "
			         "DoH again in %d s",
			         doh_url(r->doh), doh_status_str(st), detail, RESOLVER_DOH_BACKOFF_MS / 1000);
		else
			log_warn("dns: DoH endpoint %s unusable (%s: %s); no fallback (dns-fallback off)",
			         doh_url(r->doh), doh_status_str(st), detail);
	}
	if (r->fallback) {
		r->doh_retry_at = r->loop->now + RESOLVER_DOH_BACKOFF_MS;
		start_classic(lk);
		return;
	}
	lookup_finish(lk, st == DOH_E_TIMEOUT ? -ETIMEDOUT : -EIO, NULL, 0);
}

static uint32_t min_u32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

/* Both answers are in: addresses of both families, or a negative result;
 * cached for the shortest TTL involved. */
static void doh_complete(struct lookup *lk)
{
	struct resolver *r = lk->r;
	struct dns_addr a[DNSCACHE_MAX_ADDRS];
	size_t n = 0;
	uint32_t ttl = UINT32_MAX;
	bool have_ttl = false;
	for (int i = 0; i < 2; i++) {
		const struct dns_answer *ans = &lk->ans[i];
		for (size_t k = 0; k < ans->naddrs && n < DNSCACHE_MAX_ADDRS; k++)
			a[n++] = ans->addrs[k];
		if (ans->has_ttl) {
			ttl = min_u32(ttl, ans->ttl);
			have_ttl = true;
		}
	}
	/* Addresses win over an inconsistent NXDOMAIN for the other type. */
	if (n) {
		dnscache_put(r->cache, lk->name, a, n,
		             dns_ttl_clamp(ttl, RESOLVER_TTL_MIN, RESOLVER_TTL_MAX), r->loop->now);
		lookup_finish(lk, 0, a, n);
		return;
	}
	if (have_ttl)
		dnscache_put(r->cache, lk->name, NULL, 0,
		             dns_ttl_clamp(ttl, RESOLVER_NEG_TTL_MIN, RESOLVER_NEG_TTL_MAX), r->loop->now);
	lookup_finish(lk, -ENOENT, NULL, 0);
}

static void on_doh(void *arg, enum doh_status st, const struct dns_answer *ans, const char *detail)
{
	struct lookup_part *p = arg;
	struct lookup *lk = p->lk;
	struct resolver *r = lk->r;
	lk->req[p->idx] = NULL;
	if (st != DOH_OK) {
		doh_failed(lk, st, detail);
		return;
	}
	if (r->doh_down) {
		r->doh_down = false;
		log_info("dns: DoH endpoint %s answers again", doh_url(r->doh));
	}
	if (ans->result == DNS_SERVER_FAILURE) {
		log_debug("dns: '%s': the DoH server answered rcode %u", lk->name, ans->rcode);
		lookup_finish(lk, -EIO, NULL, 0);
		return;
	}
	lk->ans[p->idx] = *ans;
	lk->got[p->idx] = true;
	if (lk->got[0] && lk->got[1])
		doh_complete(lk);
}

static void start_doh(struct lookup *lk)
{
	struct resolver *r = lk->r;
	int64_t budget = r->fallback ? r->timeout_ms * DOH_SHARE_PCT / 100 : r->timeout_ms;
	static const uint16_t types[2] = {DNS_TYPE_AAAA, DNS_TYPE_A};
	for (int i = 0; i < 2; i++) {
		lk->part[i].lk = lk;
		lk->part[i].idx = i;
		int rc = doh_request(r->doh, lk->name, types[i], budget, on_doh, &lk->part[i], &lk->req[i]);
		if (rc < 0) {
			lk->req[i] = NULL;
			doh_failed(lk, DOH_E_TRANSPORT, strerror(-rc));
			return;
		}
		count(r, M_DOH_QUERIES);
	}
}

/* ---- lookups ------------------------------------------------------------------ */

/* Past the hosts file: the cache, a lookup in flight, or a new lookup. */
static void resolve_name(struct resolver_query *q)
{
	struct resolver *r = q->r;
	struct dns_addr a[DNSCACHE_MAX_ADDRS];
	size_t n = 0;
	switch (dnscache_get(r->cache, q->name, r->loop->now, a, DNSCACHE_MAX_ADDRS, &n)) {
	case DNSCACHE_POSITIVE:
		count(r, M_DNS_CACHE_HITS);
		fill(q, a, n);
		ready(q, 0);
		return;
	case DNSCACHE_NEGATIVE:
		count(r, M_DNS_CACHE_HITS);
		ready(q, -ENOENT);
		return;
	case DNSCACHE_MISS:
		break;
	}
	uint32_t h = name_hash(q->name);
	struct lookup *lk = flight_find(r, q->name, h);
	if (lk) {
		count(r, M_DNS_COALESCED);
		q->next = NULL;
		*lk->wtail = q;
		lk->wtail = &q->next;
		return;
	}
	lk = calloc(1, sizeof *lk);
	if (!lk) {
		ready(q, -EIO);
		return;
	}
	lk->r = r;
	lk->hash = h;
	memcpy(lk->name, q->name, sizeof lk->name);
	q->next = NULL;
	lk->waiters = q;
	lk->wtail = &q->next;
	lk->hnext = r->flights[h % FLIGHT_BUCKETS];
	r->flights[h % FLIGHT_BUCKETS] = lk;
	loop_timer_init(&lk->deadline, on_deadline, lk);
	loop_timer_start_at(&r->deadline_tl, &lk->deadline, r->loop->now + r->timeout_ms);
	if (!r->use_doh || (r->fallback && r->doh_down && r->loop->now < r->doh_retry_at))
		start_classic(lk);
	else
		start_doh(lk);
}

static void on_hosts(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	(void)timeouts;
	struct resolver_query *q = arg;
	if (status == ARES_EDESTRUCTION) {
		free(q);
		return;
	}
	struct dns_addr a[RESOLVER_MAX_ADDRS];
	size_t n = 0;
	if (status == ARES_SUCCESS && res) {
		n = addrs_of(res, a, RESOLVER_MAX_ADDRS);
	}
	if (res)
		ares_freeaddrinfo(res);
	if (n == 0) {
		resolve_name(q);
		return;
	}
	/* The hosts file's order is kept, as the classic resolver kept it. */
	size_t k = 0;
	for (size_t i = 0; i < n; i++) {
		struct sockaddr_storage *ss = &q->addrs[k++];
		memset(ss, 0, sizeof *ss);
		if (a[i].family == AF_INET6) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
			s6->sin6_family = AF_INET6;
			memcpy(&s6->sin6_addr, a[i].addr, 16);
			s6->sin6_port = htons(q->port);
		} else {
			struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
			s4->sin_family = AF_INET;
			memcpy(&s4->sin_addr, a[i].addr, 4);
			s4->sin_port = htons(q->port);
		}
	}
	q->n = k;
	ready(q, 0);
}

int resolver_lookup(struct resolver *r, const char *name, uint16_t port, resolver_cb *cb, void *arg,
                    struct resolver_query **out)
{
	struct resolver_query *q = calloc(1, sizeof *q);
	if (!q)
		return -ENOMEM;
	q->r = r;
	q->cb = cb;
	q->arg = arg;
	q->port = port;
	q->start_us = now_us();
	*out = q;
	int len = dns_name_normalize(name, q->name, sizeof q->name);
	/* Not a host name: nothing to ask anyone.  .onion names must never
	 * reach DNS (RFC 7686), as c-ares always refused them. */
	if (len < 0 || (len >= 5 && strcmp(q->name + len - 5, "onion") == 0 &&
	                (len == 5 || q->name[len - 6] == '.'))) {
		ready(q, -ENOENT);
		return 0;
	}
	struct ares_addrinfo_hints hints = {0};
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	/* A local file read; c-ares calls on_hosts before returning. */
	ares_getaddrinfo(r->hosts, q->name, NULL, &hints, on_hosts, q);
	return 0;
}

void resolver_cancel(struct resolver_query *q)
{
	if (q)
		q->cb = NULL;
}
