#include "doh.h"

#include <curl/curl.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/epoll.h>

#include "../shared/log.h"

#define DOH_MEDIA_TYPE "application/dns-message"
#define DOH_QUERY_MAX 512 /* a query for a 253-byte name is 271 bytes */
#define DOH_BODY_START 512

/* An endpoint as configured; requests keep a reference because libcurl
 * does not copy the header list. */
struct doh_ep {
	unsigned refs;
	struct doh_endpoint ep;
	char ca_file[sizeof(((struct settings *)0)->doh_ca_file)];
	struct curl_slist *headers;
};

struct doh_sock {
	struct loop_watch w;
	struct doh *d;
	struct list_node link; /* in d->socks */
	struct loop_deferred deferred;
};

struct doh_req {
	struct doh *d;
	struct doh_ep *ep;
	CURL *easy;
	doh_cb *cb;
	void *arg;
	struct list_node link; /* in d->reqs */
	uint16_t qtype;
	size_t qlen;
	uint8_t query[DOH_QUERY_MAX];
	uint8_t *body;
	size_t blen, bcap;
	bool oversized;
	char name[DNS_MAX_NAME + 1];
	char err[CURL_ERROR_SIZE];
};

struct doh {
	struct loop *loop;
	CURLM *multi; /* made by the first request */
	long conns;
	struct doh_ep *ep;
	struct loop_tlist tlist;
	struct loop_timer timer;
	struct list_node socks; /* struct doh_sock */
	struct list_node reqs;  /* struct doh_req */
};

static unsigned curl_users;

/* ---- endpoint ------------------------------------------------------------ */

int doh_endpoint_build(const struct settings *s, struct doh_endpoint *ep)
{
	memset(ep, 0, sizeof *ep);
	ep->post = s->doh_post != 0;
	int n;
	if (s->doh_url[0]) {
		char base[sizeof s->doh_url];
		snprintf(base, sizeof base, "%s", s->doh_url);
		/* RFC 8484 4.1.1 publishes endpoints as URI templates. */
		char *tmpl = strstr(base, "{?dns}");
		if (tmpl)
			*tmpl = '\0';
		ep->tls = strncasecmp(base, "https://", 8) == 0;
		if (ep->post)
			n = snprintf(ep->url, sizeof ep->url, "%s", base);
		else
			n = snprintf(ep->url, sizeof ep->url, "%s%sdns=", base,
			             strchr(base, '?') ? "&" : "?");
	} else {
		bool v6 = strchr(s->doh_ip, ':') != NULL;
		n = snprintf(ep->url, sizeof ep->url, "http://%s%s%s:%u%s%s", v6 ? "[" : "", s->doh_ip,
		             v6 ? "]" : "", (unsigned)s->doh_port, s->doh_path,
		             ep->post ? "" : s->doh_query);
		snprintf(ep->host, sizeof ep->host, "%s", s->doh_host);
	}
	if (n < 0 || (size_t)n >= sizeof ep->url)
		return -ENAMETOOLONG;
	return 0;
}

static void ep_put(struct doh_ep *e)
{
	if (e && --e->refs == 0) {
		curl_slist_free_all(e->headers);
		free(e);
	}
}

static struct curl_slist *add_header(struct curl_slist *l, const char *h, bool *ok)
{
	struct curl_slist *n = curl_slist_append(l, h);
	if (!n) {
		*ok = false;
		return l;
	}
	return n;
}

bool doh_endpoint_changed(const struct doh *d, const struct settings *s)
{
	struct doh_endpoint ep;
	if (!d->ep || doh_endpoint_build(s, &ep) < 0)
		return true;
	return strcmp(ep.url, d->ep->ep.url) != 0 || strcmp(ep.host, d->ep->ep.host) != 0 ||
	       ep.post != d->ep->ep.post || strcmp(s->doh_ca_file, d->ep->ca_file) != 0;
}

const char *doh_url(const struct doh *d)
{
	return d->ep ? d->ep->ep.url : "";
}

static void set_pool(struct doh *d)
{
	curl_multi_setopt(d->multi, CURLMOPT_MAX_HOST_CONNECTIONS, d->conns);
	curl_multi_setopt(d->multi, CURLMOPT_MAX_TOTAL_CONNECTIONS, d->conns);
	curl_multi_setopt(d->multi, CURLMOPT_MAXCONNECTS, d->conns);
}

int doh_configure(struct doh *d, const struct settings *s)
{
	d->conns = s->doh_connections ? (long)s->doh_connections : 1;
	if (d->multi)
		set_pool(d);
	if (d->ep && !doh_endpoint_changed(d, s))
		return 0;
	struct doh_ep *e = calloc(1, sizeof *e);
	if (!e)
		return -ENOMEM;
	e->refs = 1;
	int rc = doh_endpoint_build(s, &e->ep);
	if (rc < 0) {
		free(e);
		return rc;
	}
	snprintf(e->ca_file, sizeof e->ca_file, "%s", s->doh_ca_file);
	bool ok = true;
	e->headers = add_header(e->headers, "accept: " DOH_MEDIA_TYPE, &ok);
	if (e->ep.post)
		e->headers = add_header(e->headers, "content-type: " DOH_MEDIA_TYPE, &ok);
	if (e->ep.host[0]) {
		char h[sizeof e->ep.host + 8];
		snprintf(h, sizeof h, "host: %s", e->ep.host);
		e->headers = add_header(e->headers, h, &ok);
	}
	if (!ok) {
		ep_put(e);
		return -ENOMEM;
	}
	ep_put(d->ep);
	d->ep = e;
	return 0;
}

/* ---- curl on the loop ------------------------------------------------------ */

static void check_done(struct doh *d);

static void socket_action(struct doh *d, curl_socket_t fd, int mask)
{
	int running = 0;
	curl_multi_socket_action(d->multi, fd, mask, &running);
	check_done(d);
}

static void on_io(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	struct doh_sock *ds = w->data;
	int mask = 0;
	if (events & (EPOLLIN | EPOLLHUP | EPOLLRDHUP))
		mask |= CURL_CSELECT_IN;
	if (events & EPOLLOUT)
		mask |= CURL_CSELECT_OUT;
	if (events & EPOLLERR)
		mask |= CURL_CSELECT_ERR;
	socket_action(ds->d, w->fd, mask);
}

static void on_timer(struct loop *l, struct loop_timer *t)
{
	(void)l;
	socket_action(t->data, CURL_SOCKET_TIMEOUT, 0);
}

/* CURLMOPT_TIMERFUNCTION: only (re)arms the loop timer; libcurl must not be
 * called back from inside its own callbacks. */
static int curl_timer_cb(CURLM *m, long timeout_ms, void *userp)
{
	(void)m;
	struct doh *d = userp;
	if (timeout_ms < 0)
		loop_timer_stop(&d->timer);
	else
		loop_timer_start_at(&d->tlist, &d->timer, d->loop->now + timeout_ms);
	return 0;
}

static void sock_drop(struct doh *d, struct doh_sock *ds, bool deferred)
{
	loop_watch_del(d->loop, &ds->w);
	list_remove(&ds->link);
	/* Events of the current batch may still name this watch. */
	if (deferred)
		loop_defer_free(d->loop, &ds->deferred, free, ds);
	else
		free(ds);
}

/* CURLMOPT_SOCKETFUNCTION: mirror libcurl's interest in a socket as a
 * level-triggered loop watch (libcurl expects level semantics). */
static int curl_socket_cb(CURL *e, curl_socket_t fd, int what, void *userp, void *socketp)
{
	(void)e;
	struct doh *d = userp;
	struct doh_sock *ds = socketp;
	if (what == CURL_POLL_REMOVE) {
		if (ds) {
			curl_multi_assign(d->multi, fd, NULL);
			sock_drop(d, ds, true);
		}
		return 0;
	}
	uint32_t ev = ((what & CURL_POLL_IN) ? EPOLLIN : 0) | ((what & CURL_POLL_OUT) ? EPOLLOUT : 0);
	if (ds)
		return loop_watch_mod(d->loop, &ds->w, ev) < 0 ? -1 : 0;
	ds = calloc(1, sizeof *ds);
	if (!ds)
		return -1;
	ds->d = d;
	if (loop_watch_add(d->loop, &ds->w, fd, ev, on_io, ds) < 0) {
		log_error("doh: cannot watch a socket: %s", strerror(errno));
		free(ds);
		return -1;
	}
	list_insert_head(&d->socks, &ds->link);
	curl_multi_assign(d->multi, fd, ds);
	return 0;
}

int doh_new(struct loop *l, struct doh **out)
{
	struct doh *d = calloc(1, sizeof *d);
	if (!d)
		return -ENOMEM;
	d->loop = l;
	d->conns = 1;
	list_init(&d->socks);
	list_init(&d->reqs);
	loop_tlist_init(l, &d->tlist, 0);
	loop_timer_init(&d->timer, on_timer, d);
	*out = d;
	return 0;
}

/* libcurl (and with it OpenSSL) is set up by the first request, not at
 * start: a worker whose names all come from the hosts file, the cache or
 * literal addresses never pays for it. */
static int multi_init(struct doh *d)
{
	if (d->multi)
		return 0;
	if (curl_users == 0 && curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return -ENOMEM;
	curl_users++;
	if (!(d->multi = curl_multi_init())) {
		if (--curl_users == 0)
			curl_global_cleanup();
		return -ENOMEM;
	}
	curl_multi_setopt(d->multi, CURLMOPT_SOCKETFUNCTION, curl_socket_cb);
	curl_multi_setopt(d->multi, CURLMOPT_SOCKETDATA, d);
	curl_multi_setopt(d->multi, CURLMOPT_TIMERFUNCTION, curl_timer_cb);
	curl_multi_setopt(d->multi, CURLMOPT_TIMERDATA, d);
	/* HTTP/2 streams share a connection; HTTP/1.1 reuses idle ones. */
	curl_multi_setopt(d->multi, CURLMOPT_PIPELINING, CURLPIPE_MULTIPLEX);
	set_pool(d);
	return 0;
}

static void req_free(struct doh_req *r)
{
	curl_multi_remove_handle(r->d->multi, r->easy);
	curl_easy_cleanup(r->easy);
	list_remove(&r->link);
	ep_put(r->ep);
	free(r->body);
	free(r);
}

void doh_free(struct doh *d)
{
	if (!d)
		return;
	while (!list_empty(&d->reqs))
		req_free(list_entry(d->reqs.next, struct doh_req, link));
	if (d->multi)
		curl_multi_cleanup(d->multi);
	while (!list_empty(&d->socks))
		sock_drop(d, list_entry(d->socks.next, struct doh_sock, link), false);
	loop_timer_stop(&d->timer);
	loop_tlist_detach(d->loop, &d->tlist);
	ep_put(d->ep);
	if (d->multi && --curl_users == 0)
		curl_global_cleanup();
	free(d);
}

/* ---- requests --------------------------------------------------------------- */

static size_t on_body(char *p, size_t size, size_t nmemb, void *userp)
{
	struct doh_req *r = userp;
	size_t n = size * nmemb;
	if (n > DNS_MAX_MSG - r->blen) {
		r->oversized = true;
		return 0; /* CURLE_WRITE_ERROR ends the transfer */
	}
	if (r->blen + n > r->bcap) {
		size_t cap = r->bcap ? r->bcap : DOH_BODY_START;
		while (cap < r->blen + n)
			cap *= 2;
		if (cap > DNS_MAX_MSG)
			cap = DNS_MAX_MSG;
		uint8_t *b = realloc(r->body, cap);
		if (!b)
			return 0;
		r->body = b;
		r->bcap = cap;
	}
	memcpy(r->body + r->blen, p, n);
	r->blen += n;
	return n;
}

static bool is_dns_message(const char *ct)
{
	if (!ct)
		return false;
	while (*ct == ' ')
		ct++;
	size_t n = strlen(DOH_MEDIA_TYPE);
	return strncasecmp(ct, DOH_MEDIA_TYPE, n) == 0 &&
	       (ct[n] == '\0' || ct[n] == ';' || ct[n] == ' ');
}

static void finish(struct doh_req *r, CURLcode res)
{
	struct dns_answer ans;
	enum doh_status st = DOH_OK;
	char detail[CURL_ERROR_SIZE + 32] = "";
	memset(&ans, 0, sizeof ans);
	ans.result = DNS_MALFORMED;
	if (res == CURLE_OPERATION_TIMEDOUT) {
		st = DOH_E_TIMEOUT;
		snprintf(detail, sizeof detail, "%s", r->err[0] ? r->err : curl_easy_strerror(res));
	} else if (res == CURLE_WRITE_ERROR && r->oversized) {
		st = DOH_E_BODY;
		snprintf(detail, sizeof detail, "answer larger than %d bytes", DNS_MAX_MSG);
	} else if (res != CURLE_OK) {
		st = DOH_E_TRANSPORT;
		snprintf(detail, sizeof detail, "%s", r->err[0] ? r->err : curl_easy_strerror(res));
	} else {
		long code = 0;
		char *ct = NULL;
		curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &code);
		curl_easy_getinfo(r->easy, CURLINFO_CONTENT_TYPE, &ct);
		if (code < 200 || code > 299) {
			st = DOH_E_HTTP;
			snprintf(detail, sizeof detail, "HTTP status %ld", code);
		} else if (!is_dns_message(ct)) {
			st = DOH_E_CONTENT_TYPE;
			snprintf(detail, sizeof detail, "content type '%.64s', not " DOH_MEDIA_TYPE,
			         ct ? ct : "");
		} else if (dns_answer_decode(r->body, r->blen, r->name, r->qtype, &ans) ==
		           DNS_MALFORMED) {
			st = DOH_E_BODY;
			snprintf(detail, sizeof detail, "%zu-byte body is not an answer to the question",
			         r->blen);
		}
	}
	doh_cb *cb = r->cb;
	void *arg = r->arg;
	req_free(r);
	if (cb)
		cb(arg, st, &ans, detail);
}

static void check_done(struct doh *d)
{
	CURLMsg *m;
	int left;
	while ((m = curl_multi_info_read(d->multi, &left))) {
		if (m->msg != CURLMSG_DONE)
			continue;
		char *p = NULL;
		curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &p);
		/* finish() may cancel other requests (removing their messages). */
		finish((struct doh_req *)(void *)p, m->data.result);
	}
}

int doh_request(struct doh *d, const char *name, uint16_t qtype, int64_t timeout_ms, doh_cb *cb,
                void *arg, struct doh_req **out)
{
	if (!d->ep)
		return -EINVAL;
	int rc = multi_init(d);
	if (rc < 0)
		return rc;
	struct doh_req *r = calloc(1, sizeof *r);
	if (!r)
		return -ENOMEM;
	int qlen = dns_query_encode(name, qtype, r->query, sizeof r->query);
	if (qlen < 0) {
		free(r);
		return qlen;
	}
	r->qlen = (size_t)qlen;
	snprintf(r->name, sizeof r->name, "%s", name);
	r->qtype = qtype;
	r->d = d;
	r->cb = cb;
	r->arg = arg;
	r->easy = curl_easy_init();
	if (!r->easy) {
		free(r);
		return -ENOMEM;
	}
	struct doh_ep *e = d->ep;
	CURL *c = r->easy;
	char url[DOH_URL_MAX + DOH_QUERY_MAX * 2];
	if (e->ep.post) {
		snprintf(url, sizeof url, "%s", e->ep.url);
		curl_easy_setopt(c, CURLOPT_POST, 1L);
		curl_easy_setopt(c, CURLOPT_POSTFIELDS, (char *)r->query);
		curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE, (long)r->qlen);
	} else {
		size_t ul = strlen(e->ep.url);
		memcpy(url, e->ep.url, ul);
		(void)dns_b64url_encode(r->query, r->qlen, url + ul, sizeof url - ul);
	}
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPHEADER, e->headers);
	/* Never a proxy from the environment, never another scheme, never a
	 * redirect: the endpoint is exactly what was configured. */
	curl_easy_setopt(c, CURLOPT_PROXY, "");
	curl_easy_setopt(c, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)(timeout_ms > 0 ? timeout_ms : 1));
	/* Cleartext: HTTP/1.1 keep-alive (libcurl 7.88 breaks h2c prior
	 * knowledge on a reused connection).  TLS: HTTP/2 by ALPN, and wait for
	 * a connection that can multiplex rather than opening another. */
	if (e->ep.tls) {
		curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
		curl_easy_setopt(c, CURLOPT_PIPEWAIT, 1L);
	} else {
		curl_easy_setopt(c, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1);
	}
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, 2L);
	if (e->ca_file[0])
		curl_easy_setopt(c, CURLOPT_CAINFO, e->ca_file);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(c, CURLOPT_WRITEDATA, r);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, r->err);
	curl_easy_setopt(c, CURLOPT_PRIVATE, (void *)r);
	r->ep = e;
	e->refs++;
	list_insert_head(&d->reqs, &r->link);
	if (curl_multi_add_handle(d->multi, c) != CURLM_OK) {
		r->cb = NULL;
		req_free(r);
		return -ENOMEM;
	}
	*out = r;
	return 0;
}

void doh_cancel(struct doh_req *r)
{
	if (r)
		req_free(r);
}

const char *doh_status_str(enum doh_status st)
{
	switch (st) {
	case DOH_OK:
		return "ok";
	case DOH_E_TRANSPORT:
		return "transport failure";
	case DOH_E_TIMEOUT:
		return "timeout";
	case DOH_E_HTTP:
		return "HTTP error";
	case DOH_E_CONTENT_TYPE:
		return "wrong content type";
	case DOH_E_BODY:
		return "bad answer";
	}
	return "?";
}
