/*
 * doh: a DNS-over-HTTPS client (RFC 8484) on libcurl's multi-socket API,
 * driven by a worker's loop.  curl's sockets are loop watches and its timer a
 * loop timer; nothing blocks and no thread is started (the endpoint's host
 * should be an address: a host name is resolved by libcurl, which on Debian
 * uses a short-lived resolver thread per new connection).
 *
 * One struct doh per worker owns one curl multi handle, hence one bounded
 * pool of keep-alive connections (CURLMOPT_MAX_HOST_CONNECTIONS and
 * MAX_TOTAL_CONNECTIONS): HTTP/1.1 keep-alive over cleartext (Debian's
 * libcurl 7.88 breaks h2c prior knowledge on reuse, curl #10634), HTTP/2
 * with multiplexing over TLS (ALPN).  Requests beyond the pool wait for a
 * connection inside libcurl.
 *
 * A request asks one question (name, type) with DNS ID 0, by GET (?dns=
 * base64url) or POST (application/dns-message), and reports either a
 * decoded DNS answer or why the endpoint could not be used.
 *
 * Loop thread only.  Callbacks run from the loop, never from inside
 * doh_request().
 */
#ifndef SOCKS5D_DOH_H
#define SOCKS5D_DOH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../shared/settings.h"
#include "dns.h"
#include "../shared/loop.h"

#define DOH_URL_MAX 1400

struct doh;
struct doh_req;

enum doh_status {
	DOH_OK = 0,         /* a DNS answer: see its result (negative or SERVFAIL too) */
	DOH_E_TRANSPORT,    /* connect, TLS, send or receive failed */
	DOH_E_TIMEOUT,      /* no complete answer in time */
	DOH_E_HTTP,         /* a status other than 2xx */
	DOH_E_CONTENT_TYPE, /* 2xx but not application/dns-message */
	DOH_E_BODY,         /* empty, oversized or not an answer to the question */
};

/* The endpoint, built from the settings. */
struct doh_endpoint {
	char url[DOH_URL_MAX];  /* POST target, or the GET URL up to the value of dns= */
	char host[300];         /* a Host header to send ("" = the URL's) */
	bool post;
	bool tls;               /* https:// */
};

/* detail: a short human-readable reason for failures (curl's message or the
 * HTTP status), "" on DOH_OK. */
typedef void doh_cb(void *arg, enum doh_status st, const struct dns_answer *ans,
                    const char *detail);

/* The resolver uses DoH only when settings.doh is set (an endpoint was
 * configured).  --doh-url wins; otherwise http://doh_ip:doh_port + doh_path + doh_query
 * with Host: doh_host (the original flags).  A --doh-url may be an RFC 6570
 * template ending in {?dns}.  Returns 0 or -ENAMETOOLONG. */
int doh_endpoint_build(const struct settings *s, struct doh_endpoint *ep);

int doh_new(struct loop *l, struct doh **out);
/* Free the client; requests still pending are dropped without callback. */
void doh_free(struct doh *d);
/* Endpoint, method, CA file and pool size, from settings (startup and
 * SIGHUP).  Requests in flight finish with what they started with. */
int doh_configure(struct doh *d, const struct settings *s);
/* Did the last doh_configure change the endpoint? */
bool doh_endpoint_changed(const struct doh *d, const struct settings *s);
const char *doh_url(const struct doh *d);

/* Ask (name, qtype); name is normalized (dns_name_normalize). */
int doh_request(struct doh *d, const char *name, uint16_t qtype, int64_t timeout_ms, doh_cb *cb,
                void *arg, struct doh_req **out);
/* Drop a request; its callback will not run.  NULL is a no-op. */
void doh_cancel(struct doh_req *r);

const char *doh_status_str(enum doh_status st);

#endif
