#include "resolver.h"

#include <ares.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#include "../shared/log.h"

struct ares_watch {
	struct loop_watch w;
	struct ares_watch *next;
	struct loop_deferred deferred;
};

struct resolver_query {
	struct resolver *r;
	resolver_cb *cb;
	void *arg;
	uint16_t port;
	int status;
	size_t n;
	struct resolver_query *next_ready;
	struct sockaddr_storage addrs[RESOLVER_MAX_ADDRS];
};

struct resolver {
	struct loop *loop;
	ares_channel ch;
	struct ares_watch *watches;
	struct loop_tlist tlist;
	struct loop_timer timer;
	/* Answers are delivered from this timer, never from inside
	 * resolver_lookup (c-ares may answer a hosts-file name at once). */
	struct loop_timer ready_timer;
	struct resolver_query *ready, **ready_tail;
};

static void deliver_ready(struct loop *l, struct loop_timer *t);

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

int resolver_new(struct loop *l, const char *servers, struct resolver **out)
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
	struct ares_options opts = {0};
	opts.sock_state_cb = sock_state;
	opts.sock_state_cb_data = r;
	opts.timeout = 2000;
	opts.tries = 2;
	opts.lookups = (char *)"fb";
	int rc = ares_init_options(&r->ch, &opts,
	                           ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES |
	                               ARES_OPT_LOOKUPS);
	if (rc != ARES_SUCCESS) {
		free(r);
		return -ENOMEM;
	}
	if (resolver_set_servers(r, servers) < 0) {
		ares_destroy(r->ch);
		free(r);
		return -EINVAL;
	}
	loop_tlist_init(l, &r->tlist, 0);
	loop_timer_init(&r->timer, on_timer, r);
	loop_timer_init(&r->ready_timer, deliver_ready, r);
	r->ready_tail = &r->ready;
	*out = r;
	return 0;
}

void resolver_free(struct resolver *r)
{
	if (!r)
		return;
	/* Pending queries complete with ARES_EDESTRUCTION into the ready list;
	 * their callbacks were cancelled by the sessions' finalize. */
	ares_destroy(r->ch);
	while (r->ready) {
		struct resolver_query *q = r->ready;
		r->ready = q->next_ready;
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
	free(r);
}

static void deliver_ready(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct resolver *r = t->data;
	struct resolver_query *q = r->ready;
	r->ready = NULL;
	r->ready_tail = &r->ready;
	while (q) {
		struct resolver_query *next = q->next_ready;
		if (q->cb)
			q->cb(q->arg, q->status, q->addrs, q->n);
		free(q);
		q = next;
	}
}

static void on_addrinfo(void *arg, int status, int timeouts, struct ares_addrinfo *res)
{
	(void)timeouts;
	struct resolver_query *q = arg;
	struct resolver *r = q->r;
	struct sockaddr_storage *addrs = q->addrs;
	size_t n = 0;
	int err = 0;
	if (status == ARES_SUCCESS && res) {
		for (struct ares_addrinfo_node *ai = res->nodes; ai && n < RESOLVER_MAX_ADDRS;
		     ai = ai->ai_next) {
			if (ai->ai_family == AF_INET && ai->ai_addrlen >= sizeof(struct sockaddr_in)) {
				struct sockaddr_in *s4 = (struct sockaddr_in *)&addrs[n];
				memcpy(s4, ai->ai_addr, sizeof *s4);
				s4->sin_port = htons(q->port);
				n++;
			} else if (ai->ai_family == AF_INET6 &&
			           ai->ai_addrlen >= sizeof(struct sockaddr_in6)) {
				struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&addrs[n];
				memcpy(s6, ai->ai_addr, sizeof *s6);
				s6->sin6_port = htons(q->port);
				n++;
			}
		}
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
	q->status = err;
	q->n = err ? 0 : n;
	q->next_ready = NULL;
	*r->ready_tail = q;
	r->ready_tail = &q->next_ready;
	if (!loop_timer_active(&r->ready_timer))
		loop_timer_start_at(&r->tlist, &r->ready_timer, r->loop->now);
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
	*out = q;
	struct ares_addrinfo_hints hints = {0};
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	ares_getaddrinfo(r->ch, name, NULL, &hints, on_addrinfo, q);
	update_timer(r);
	return 0;
}

void resolver_cancel(struct resolver_query *q)
{
	if (q)
		q->cb = NULL;
}
