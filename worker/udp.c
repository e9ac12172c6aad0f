/*
 * udp: UDP ASSOCIATE.  The session's request was read; from here the
 * control connection only tells the association's life (its close ends it)
 * and the datagrams go through three sockets:
 *
 *   client ──► relay socket (rfd) ──► out[IPv4] / out[IPv6] ──► remotes
 *          ◄──                    ◄──                       ◄──
 *
 * Up: recvmmsg a batch on the relay socket; each datagram must come from
 * the client's address (and port, once known); its header is parsed
 * (worker/socks5udp.c); an address target is checked (udp_dest_allowed,
 * through a small decision cache) and remembered for the reply filter; a
 * name target is resolved through the worker's resolver (the same as
 * CONNECT's), the datagram waiting meanwhile in the association's bounded
 * queue; the batch leaves with one sendmmsg per family.  Down: recvmmsg
 * on an outbound socket into buffers with room for the header in front,
 * the reply filter, the header written in place, one sendmmsg to the
 * client.  UDP semantics throughout: what cannot be sent now is dropped
 * and counted, never buffered.  Loop thread only.
 */
#include "udp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "../shared/log.h"
#include "session_int.h"
#include "socks5udp.h"
#include "worker.h"

/* Datagrams per recvmmsg/sendmmsg (a build may choose another to compare). */
#ifndef UDP_BATCH
#define UDP_BATCH 16
#endif
/* A receive buffer: the largest datagram, with room in front for the
 * header of a reply written in place. */
#define UDP_HEADROOM 32
#define UDP_BUF (UDP_HEADROOM + 65536)
/* Datagrams waiting for lookups, per association: at most this many, of
 * this many bytes together (one datagram of the largest size fits). */
#define UDP_QUEUE_MAX 8
#define UDP_QUEUE_BYTES 65536
/* Receive buffer of every UDP socket (capped by net.core.rmem_max): room
 * for a burst that arrives while the worker is busy elsewhere, instead of
 * the default's ~90 datagrams of 1,400 bytes.  Only queued datagrams take
 * memory. */
#define UDP_SOCKBUF (1 << 20)
/* Distinct names looked up at once, per association. */
#define UDP_LOOKUPS_MAX 4
/* Resolved names remembered per association, and for how long. */
#define UDP_NAMES 8
#define UDP_NAME_TTL_MS 30000
/* Remotes the client sent to (the reply filter): sets of ways, least
 * recently used way replaced. */
#define UDP_PEER_SETS 64
#define UDP_PEER_WAYS 4
/* Access decisions remembered per association. */
#define UDP_DECISIONS 16
/* Names the rules blocked, remembered per association (by hash). */
#define UDP_BLOCKED_NAMES 16
/* Blocked destinations logged one by one per association; the rest are
 * counted and said once when it ends. */
#define UDP_BLOCK_LOGS 4
/* Control-connection bytes discarded per event (a client should send none);
 * the watch is level-triggered meanwhile, so the rest is read at the next
 * turn of the loop and the close behind it is always seen. */
#define UDP_CTRL_READ_MAX 65536

/* An address and port, compared as bytes (IPv4 in the first 4). */
struct udp_key {
	uint8_t family; /* AF_INET or AF_INET6; 0: unused */
	uint16_t port;
	uint8_t addr[16];
};

struct udp_peer {
	struct udp_key k;
	int64_t used;
};

struct udp_decision {
	struct udp_key k;
	uint64_t name; /* hash of the name the address came from; 0: a literal */
	bool allowed;
};

/* A resolved name: its first address of each family ([0] IPv4, [1]
 * IPv6; ss_family 0 when it has none) and the families a send failed on. */
struct udp_name {
	char host[256];
	struct sockaddr_storage addr[2];
	uint8_t bad; /* bit i: family i cannot be reached from here */
	int64_t until;
};

struct udp_lookup {
	struct udp_assoc *a;
	struct resolver_query *q; /* NULL: slot free */
	char host[256];
};

/* A datagram waiting for lookup `lookup`; its data at qbuf + off. */
struct udp_waiting {
	uint8_t lookup;
	uint16_t port;
	uint32_t off, len;
};

struct udp_assoc {
	struct session *s;
	struct loop_deferred deferred;
	int rfd; /* the relay socket the client sends to */
	struct loop_watch rw;
	int ofd[2]; /* outbound sockets: [0] IPv4, [1] IPv6; -1 until needed */
	struct loop_watch ow[2];
	bool ofd_failed[2];     /* that family's socket could not be had: not retried */
	struct udp_key relay_k; /* the relay socket's own address */
	struct udp_key out_k[2]; /* the outbound sockets' own addresses */
	struct sockaddr_storage client; /* port 0 until the first datagram fixes it */
	socklen_t client_len;
	bool port_known;
	uint8_t filter; /* enum udp_filter, taken when the association starts */
	int64_t last_active;

	struct udp_peer peers[UDP_PEER_SETS][UDP_PEER_WAYS];
	struct udp_decision decisions[UDP_DECISIONS];
	unsigned next_decision;
	struct udp_name names[UDP_NAMES];
	unsigned next_name;
	uint64_t blocked_names[UDP_BLOCKED_NAMES];
	unsigned next_blocked;
	unsigned block_logs;    /* blocks logged one by one */
	uint64_t block_unlogged; /* blocks past UDP_BLOCK_LOGS */
	bool unlogged_info;     /* one of those was of a rule with `log` */
	struct udp_lookup lookups[UDP_LOOKUPS_MAX];
	struct udp_waiting waiting[UDP_QUEUE_MAX];
	unsigned nwaiting;
	uint32_t qused;
	uint8_t *qbuf; /* UDP_QUEUE_BYTES, allocated with the first lookup */
};

/* The worker's batch buffers, allocated with its first association and
 * kept for the life of the process (one worker per process). */
struct udp_bufs {
	uint8_t data[UDP_BATCH][UDP_BUF];
	struct mmsghdr in[UDP_BATCH];
	struct iovec in_iov[UDP_BATCH];
	struct sockaddr_storage in_name[UDP_BATCH];
	struct mmsghdr out[2][UDP_BATCH];
	struct iovec out_iov[2][UDP_BATCH];
	struct sockaddr_storage out_name[2][UDP_BATCH];
	int8_t out_nm[2][UDP_BATCH]; /* the name entry a datagram's address came from; -1 */
	int out_err[UDP_BATCH];      /* 0: sent, else why not (errno) */
};

static struct udp_bufs *bufs;
static size_t out_fds;

size_t udp_fds_open(void)
{
	return out_fds;
}

/* ---- addresses ----------------------------------------------------------- */

static socklen_t sa_len(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* An IPv4-mapped IPv6 address becomes the IPv4 address it maps. */
static void unmap(struct sockaddr_storage *ss)
{
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr))
		return;
	struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = s6->sin6_port};
	memcpy(&s4.sin_addr, &s6->sin6_addr.s6_addr[12], 4);
	memset(ss, 0, sizeof *ss);
	memcpy(ss, &s4, sizeof s4);
}

static void key_of(const struct sockaddr_storage *ss, struct udp_key *k)
{
	memset(k, 0, sizeof *k);
	k->family = (uint8_t)ss->ss_family;
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
		memcpy(k->addr, &s6->sin6_addr, 16);
		k->port = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
		memcpy(k->addr, &s4->sin_addr, 4);
		k->port = ntohs(s4->sin_port);
	}
}

static bool same_addr(const struct udp_key *a, const struct udp_key *b)
{
	return a->family == b->family && memcmp(a->addr, b->addr, sizeof a->addr) == 0;
}

static bool same_key(const struct udp_key *a, const struct udp_key *b)
{
	return same_addr(a, b) && a->port == b->port;
}

static size_t peer_set(const struct udp_key *k)
{
	/* FNV-1a over the address only, so that both filter modes find an
	 * address's entries in one set. */
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < sizeof k->addr; i++)
		h = (h ^ k->addr[i]) * 16777619u;
	return h % UDP_PEER_SETS;
}

static bool is_loopback(const struct udp_key *k)
{
	static const uint8_t lo6[16] = {[15] = 1};
	return k->family == AF_INET ? k->addr[0] == 127 : memcmp(k->addr, lo6, 16) == 0;
}

static bool is_wildcard(const struct udp_key *k)
{
	static const uint8_t zero[16];
	return memcmp(k->addr, zero, sizeof zero) == 0;
}

/* Whether k is one of this association's own sockets: the relay socket,
 * or an outbound socket (bound to a wildcard, it answers at its port on
 * loopback and on the relay's address too).  A datagram between them would
 * circle inside the worker. */
static bool own_socket(const struct udp_assoc *a, const struct udp_key *k)
{
	if (same_key(k, &a->relay_k))
		return true;
	for (int i = 0; i < 2; i++) {
		const struct udp_key *o = &a->out_k[i];
		if (!o->family || o->family != k->family || o->port != k->port)
			continue;
		if (same_addr(o, k) ||
		    (is_wildcard(o) && (is_loopback(k) || same_addr(k, &a->relay_k))))
			return true;
	}
	return false;
}

/* ---- the reply filter and the access decision ------------------------------ */

/* The client sent to k: its replies may come back. */
static void peer_remember(struct udp_assoc *a, const struct udp_key *k)
{
	if (a->filter == UDP_FILTER_ANY)
		return;
	struct udp_peer *set = a->peers[peer_set(k)], *victim = &set[0];
	for (size_t i = 0; i < UDP_PEER_WAYS; i++) {
		struct udp_peer *p = &set[i];
		if (p->k.family && (a->filter == UDP_FILTER_ADDRESS ? same_addr(&p->k, k)
		                                                     : same_key(&p->k, k))) {
			p->used = a->s->wk->loop.now;
			return;
		}
		if (!p->k.family || p->used < victim->used)
			victim = p;
		if (!p->k.family)
			break;
	}
	victim->k = *k;
	victim->used = a->s->wk->loop.now;
}

static bool peer_known(const struct udp_assoc *a, const struct udp_key *k)
{
	if (a->filter == UDP_FILTER_ANY)
		return true;
	const struct udp_peer *set = a->peers[peer_set(k)];
	for (size_t i = 0; i < UDP_PEER_WAYS; i++)
		if (set[i].k.family && (a->filter == UDP_FILTER_ADDRESS ? same_addr(&set[i].k, k)
		                                                         : same_key(&set[i].k, k)))
			return true;
	return false;
}

/* The access rules on one destination of the association (command udp,
 * the client, the user): an address (with the name it came from, if any),
 * or with dest NULL a name before its lookup, or with neither the request
 * itself.  The hit is counted; a block is said (at info with `log`). */
static enum rules_action udp_rules(struct session *s, struct udp_assoc *a, const char *name,
                                   const struct sockaddr_storage *dest, uint16_t port,
                                   struct rules_match *m)
{
	struct rules_request q = {
	    .client = (const struct sockaddr *)&s->peer,
	    .user = s->user_slot >= 0 || s->gss_user ? s->user : NULL,
	    .cmd = RULES_CMD_UDP,
	    .port = port,
	    .name = name,
	    .dest = (const struct sockaddr *)dest,
	};
	enum rules_action act = rules_decide(s->wk->rules, &q, m);
	if (act == RULES_UNDECIDED)
		return act;
	rules_shm_hit(s->wk->seg, s->wk->rules_gen, m);
	if (act == RULES_BLOCK && a && a->block_logs >= UDP_BLOCK_LOGS) {
		/* A client cycling through blocked destinations does not turn
		 * its datagrams into log lines: counted, said at the end. */
		a->block_unlogged++;
		a->unlogged_info |= m->log;
	} else if (act == RULES_BLOCK) {
		if (a)
			a->block_logs++;
		char how[96], to[INET6_ADDRSTRLEN + 1], esc[1024];
		uint16_t p = port;
		rules_match_text(m, how, sizeof how);
		if (dest)
			session_addr_text(dest, to, sizeof to, &p);
		log_escape(esc, sizeof esc, (const uint8_t *)(name ? name : ""), name ? strlen(name) : 0);
		log_msg(m->log ? LOG_INFO : LOG_DEBUG, "session %llu: datagram to %s port %u %s",
		        (unsigned long long)s->id, dest ? to : esc, p, how);
	}
	return act;
}

static uint64_t name_hash(const char *name)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */
	for (; name && *name; name++)
		h = (h ^ (unsigned char)*name) * 1099511628211ull;
	return name ? h | 1 : 0;
}

/* Whether this association may send to dest (reached through name, or a
 * literal when name is NULL).  The answers are remembered per association,
 * so the rules run once per destination while the entry lasts, not once
 * per datagram. */
static bool dest_allowed(struct udp_assoc *a, const struct sockaddr_storage *dest,
                         const char *name)
{
	struct udp_key k;
	key_of(dest, &k);
	uint64_t nh = name_hash(name);
	for (size_t i = 0; i < UDP_DECISIONS; i++)
		if (a->decisions[i].k.family && same_key(&a->decisions[i].k, &k) &&
		    a->decisions[i].name == nh)
			return a->decisions[i].allowed;
	struct udp_decision *d = &a->decisions[a->next_decision++ % UDP_DECISIONS];
	d->k = k;
	d->name = nh;
	struct rules_match m;
	d->allowed = udp_rules(a->s, a, name, dest, k.port, &m) == RULES_PASS;
	return d->allowed;
}

/* ---- sockets --------------------------------------------------------------- */

static void on_out(struct loop *l, struct loop_watch *w, uint32_t events);

static void set_bufs(int fd)
{
	int n = UDP_SOCKBUF;
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &n, sizeof n);
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &n, sizeof n);
}

/* Bind an outbound socket to the family's `external` address, else to the
 * wildcard, so that its own address is known from the start (port chosen
 * now, once per association).  A rule's `via` is not used here: one
 * socket per family serves every destination of the association. */
static int bind_out(struct udp_assoc *a, int fd, int family, struct udp_key *own)
{
	struct sockaddr_storage src;
	socklen_t len;
	if (!rules_source(a->s->wk->rules, NULL, family, &src, &len)) {
		memset(&src, 0, sizeof src);
		src.ss_family = (sa_family_t)family;
		len = sa_len(&src);
	}
	if (bind(fd, (struct sockaddr *)&src, len) < 0)
		return -errno;
	len = sizeof src;
	if (getsockname(fd, (struct sockaddr *)&src, &len) < 0)
		return -errno;
	key_of(&src, own);
	return 0;
}

/* The outbound socket of a family, opened on first use.  -1 when none can
 * be had (no room in the descriptor budget, socket() or bind() failed; a
 * failure other than the budget is not retried for this association). */
static int out_fd(struct udp_assoc *a, int family)
{
	int i = family == AF_INET6;
	if (a->ofd[i] >= 0)
		return a->ofd[i];
	if (a->ofd_failed[i] || !worker_fd_room(a->s->wk, 1))
		return -1;
	int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		a->ofd_failed[i] = true;
		return -1;
	}
	set_bufs(fd);
	if (family == AF_INET6) {
		/* Mapped addresses are sent from the IPv4 socket. */
		int one = 1;
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
	}
	int rc = bind_out(a, fd, family, &a->out_k[i]);
	if (rc < 0) {
		log_info("session %llu: cannot bind the outbound IPv%c UDP socket: %s",
		         (unsigned long long)a->s->id, family == AF_INET6 ? '6' : '4', strerror(-rc));
		a->ofd_failed[i] = true;
		close(fd);
		return -1;
	}
	if (loop_watch_add(&a->s->wk->loop, &a->ow[i], fd, EPOLLIN, on_out, a) < 0) {
		memset(&a->out_k[i], 0, sizeof a->out_k[i]);
		close(fd);
		return -1;
	}
	a->ofd[i] = fd;
	out_fds++;
	return fd;
}

static void touch(struct udp_assoc *a)
{
	a->last_active = a->s->wk->loop.now;
}

static void add_user_bytes(struct session *s, int dir, uint64_t n)
{
	if (s->user_slot < 0 || !n)
		return;
	uint64_t *ub = &s->wk->slot->user_bytes[s->user_slot][dir];
	__atomic_store_n(ub, *ub + n, __ATOMIC_RELAXED);
}

static bool name_pick(struct udp_assoc *a, int nm, uint16_t port, struct sockaddr_storage *out);

/* A family failed for the name entry nm (-1: none): the other is used
 * from now on, if it has one. */
static void name_failed(struct udp_assoc *a, int nm, int family)
{
	if (nm >= 0)
		a->names[nm].bad |= (uint8_t)(1u << (family == AF_INET6));
}

/* Prepare datagram data[0..len) for dest in the family's send batch.  A
 * name's datagram (nm >= 0) whose family has no outbound socket goes to
 * the name's address of the other family (once: `retried`). */
static void queue_out1(struct udp_assoc *a, unsigned *nout, const struct sockaddr_storage *dest,
                       const char *name, int nm, uint8_t *data, size_t len, bool retried)
{
	struct worker *wk = a->s->wk;
	struct sockaddr_storage alt;
	struct udp_key k;
	key_of(dest, &k);
	if (own_socket(a, &k) || !dest_allowed(a, dest, name)) {
		shm_count(wk->slot, M_UDP_DROP_DENIED, 1);
		return;
	}
	if (!retried && !relay_rate_admit(a->s, LIMIT_OUT, len)) {
		shm_count(wk->slot, M_UDP_DROP_RATE, 1);
		return;
	}
	int i = dest->ss_family == AF_INET6;
	if (out_fd(a, dest->ss_family) < 0) {
		name_failed(a, nm, dest->ss_family);
		if (nm >= 0 && !retried && name_pick(a, nm, k.port, &alt) &&
		    alt.ss_family != dest->ss_family) {
			queue_out1(a, nout, &alt, name, nm, data, len, true);
			return;
		}
		shm_count(wk->slot, M_UDP_DROP_SEND, 1);
		return;
	}
	peer_remember(a, &k);
	unsigned j = nout[i]++;
	bufs->out_nm[i][j] = (int8_t)nm;
	bufs->out_name[i][j] = *dest;
	bufs->out_iov[i][j] = (struct iovec){.iov_base = data, .iov_len = len};
	bufs->out[i][j].msg_hdr = (struct msghdr){
	    .msg_name = &bufs->out_name[i][j],
	    .msg_namelen = sa_len(dest),
	    .msg_iov = &bufs->out_iov[i][j],
	    .msg_iovlen = 1,
	};
}

static void queue_out(struct udp_assoc *a, unsigned *nout, const struct sockaddr_storage *dest,
                      const char *name, int nm, uint8_t *data, size_t len)
{
	queue_out1(a, nout, dest, name, nm, data, len, false);
}

/* Send a prepared batch; a datagram the socket refuses is dropped and
 * counted, the rest go on.  err[j] tells which left (0) and why the others
 * did not; returns how many left. */
static unsigned send_batch(struct session *s, int fd, struct mmsghdr *m, unsigned n, int *err)
{
	unsigned done = 0, sent = 0;
	while (done < n) {
		int r = sendmmsg(fd, m + done, n - done, MSG_DONTWAIT | MSG_NOSIGNAL);
		if (r < 0) {
			if (errno == EINTR)
				continue;
			shm_count(s->wk->slot, M_UDP_DROP_SEND, 1);
			err[done++] = errno; /* the one at the head failed: skip it */
			continue;
		}
		for (unsigned i = 0; i < (unsigned)r; i++)
			err[done + i] = 0;
		done += (unsigned)r;
		sent += (unsigned)r;
	}
	return sent;
}

/* Whether a send failure says that the family cannot reach the
 * destination from this host (no route, no source address, no IPv6). */
static bool family_unreachable(int err)
{
	return err == ENETUNREACH || err == EADDRNOTAVAIL || err == EAFNOSUPPORT ||
	       err == EHOSTUNREACH;
}

/* Send the up batches of both families and count them.  A name whose
 * address of one family cannot be reached uses its other one from then
 * on (the datagram that found out is dropped, as UDP may). */
static void flush_up(struct udp_assoc *a, const unsigned nout[2])
{
	struct session *s = a->s;
	int *err = bufs->out_err;
	for (int f = 0; f < 2; f++) {
		if (!nout[f])
			continue;
		unsigned sent = send_batch(s, a->ofd[f], bufs->out[f], nout[f], err);
		uint64_t bytes = 0;
		for (unsigned j = 0; j < nout[f]; j++) {
			if (!err[j])
				bytes += bufs->out_iov[f][j].iov_len;
			else if (family_unreachable(err[j]))
				name_failed(a, bufs->out_nm[f][j], f ? AF_INET6 : AF_INET);
		}
		s->dgrams_up += sent;
		s->bytes_up += bytes;
		shm_count(s->wk->slot, M_UDP_DGRAMS_UP, sent);
		shm_count(s->wk->slot, M_BYTES_UP, bytes);
		add_user_bytes(s, 0, bytes);
	}
}

/* ---- lookups ----------------------------------------------------------------- */

static void lookup_done(void *arg, int status, const struct sockaddr_storage *addrs, size_t n);

static void drop_waiting(struct udp_assoc *a, unsigned idx)
{
	struct udp_waiting *w = &a->waiting[idx];
	uint32_t end = w->off + w->len;
	memmove(a->qbuf + w->off, a->qbuf + end, a->qused - end);
	a->qused -= w->len;
	for (unsigned i = 0; i < a->nwaiting; i++)
		if (a->waiting[i].off > w->off)
			a->waiting[i].off -= w->len;
	memmove(&a->waiting[idx], &a->waiting[idx + 1], (a->nwaiting - idx - 1) * sizeof *w);
	a->nwaiting--;
}

/* The address of name entry nm to send to: of the relay socket's family
 * (the family the client itself reached the proxy over) when the name has
 * one, else of the other; a family a send failed on only when the other
 * failed too (then both are tried afresh). */
static bool name_pick(struct udp_assoc *a, int nm, uint16_t port, struct sockaddr_storage *out)
{
	struct udp_name *e = &a->names[nm];
	int pref = a->relay_k.family == AF_INET6;
	int order[2] = {pref, !pref};
	int pick = -1;
	for (int t = 0; t < 2 && pick < 0; t++)
		if (e->addr[order[t]].ss_family && !(e->bad & (1u << order[t])))
			pick = order[t];
	if (pick < 0) {
		e->bad = 0;
		for (int t = 0; t < 2 && pick < 0; t++)
			if (e->addr[order[t]].ss_family)
				pick = order[t];
	}
	if (pick < 0)
		return false;
	*out = e->addr[pick];
	if (out->ss_family == AF_INET6)
		((struct sockaddr_in6 *)out)->sin6_port = htons(port);
	else
		((struct sockaddr_in *)out)->sin_port = htons(port);
	return true;
}

/* A datagram for a name: from the association's names (its entry in *nm),
 * or queued for a lookup (joining one in flight for the same name). */
static bool resolve_cached(struct udp_assoc *a, const char *host, uint16_t port,
                           struct sockaddr_storage *out, int *nm)
{
	for (int i = 0; i < UDP_NAMES; i++) {
		struct udp_name *e = &a->names[i];
		if (e->until > a->s->wk->loop.now && strcmp(e->host, host) == 0 &&
		    name_pick(a, i, port, out)) {
			*nm = i;
			return true;
		}
	}
	return false;
}

static void enqueue_lookup(struct udp_assoc *a, const char *host, uint16_t port,
                           const uint8_t *data, size_t len)
{
	struct worker *wk = a->s->wk;
	int slot = -1, free_slot = -1;
	for (int i = 0; i < UDP_LOOKUPS_MAX; i++) {
		if (a->lookups[i].q && strcmp(a->lookups[i].host, host) == 0)
			slot = i;
		else if (!a->lookups[i].q && free_slot < 0)
			free_slot = i;
	}
	if ((slot < 0 && free_slot < 0) || a->nwaiting == UDP_QUEUE_MAX ||
	    len > UDP_QUEUE_BYTES - a->qused) {
		shm_count(wk->slot, M_UDP_DROP_QUEUE, 1);
		return;
	}
	if (!a->qbuf && !(a->qbuf = malloc(UDP_QUEUE_BYTES))) {
		shm_count(wk->slot, M_UDP_DROP_QUEUE, 1);
		return;
	}
	if (slot < 0) {
		/* The rules on the name, before it is looked up (the addresses it
		 * resolves to are decided again, with it). */
		uint64_t nh = name_hash(host);
		for (size_t i = 0; i < UDP_BLOCKED_NAMES; i++)
			if (a->blocked_names[i] == nh) {
				shm_count(wk->slot, M_UDP_DROP_DENIED, 1);
				return;
			}
		struct rules_match m;
		if (udp_rules(a->s, a, host, NULL, port, &m) == RULES_BLOCK) {
			a->blocked_names[a->next_blocked++ % UDP_BLOCKED_NAMES] = nh;
			shm_count(wk->slot, M_UDP_DROP_DENIED, 1);
			return;
		}
		struct udp_lookup *lk = &a->lookups[free_slot];
		lk->a = a;
		snprintf(lk->host, sizeof lk->host, "%s", host);
		if (resolver_lookup(wk->resolver, host, port, lookup_done, lk, &lk->q) < 0) {
			lk->q = NULL;
			shm_count(wk->slot, M_DNS_LOOKUPS, 1);
			shm_count(wk->slot, M_DNS_FAILURES, 1);
			shm_count(wk->slot, M_UDP_DROP_LOOKUP, 1);
			return;
		}
		slot = free_slot;
	}
	struct udp_waiting *w = &a->waiting[a->nwaiting++];
	w->lookup = (uint8_t)slot;
	w->port = port;
	w->off = a->qused;
	w->len = (uint32_t)len;
	memcpy(a->qbuf + a->qused, data, len);
	a->qused += (uint32_t)len;
}

static void lookup_done(void *arg, int status, const struct sockaddr_storage *addrs, size_t n)
{
	struct udp_lookup *lk = arg;
	struct udp_assoc *a = lk->a;
	struct session *s = a->s;
	struct worker *wk = s->wk;
	unsigned slot = (unsigned)(lk - a->lookups);
	lk->q = NULL;
	shm_count(wk->slot, M_DNS_LOOKUPS, 1);
	if (status < 0) {
		shm_count(wk->slot, M_DNS_FAILURES, 1);
		char name[1024];
		log_escape(name, sizeof name, (const uint8_t *)lk->host, strlen(lk->host));
		log_debug("session %llu: cannot resolve '%s' for a datagram: %s",
		          (unsigned long long)s->id, name,
		          status == -ENOENT ? "no such name or no address" : strerror(-status));
	} else {
		struct udp_name *nm = &a->names[a->next_name++ % UDP_NAMES];
		snprintf(nm->host, sizeof nm->host, "%s", lk->host);
		memset(nm->addr, 0, sizeof nm->addr);
		nm->bad = 0;
		for (size_t i = 0; i < n; i++) {
			struct sockaddr_storage ss = addrs[i];
			unmap(&ss);
			int f = ss.ss_family == AF_INET6;
			if (!nm->addr[f].ss_family)
				nm->addr[f] = ss;
		}
		nm->until = wk->loop.now + UDP_NAME_TTL_MS;
	}
	unsigned nout[2] = {0, 0};
	/* The waiting data is copied into the batch buffers, which are free
	 * between events, so that the queue can be compacted at once. */
	unsigned used = 0;
	for (unsigned i = 0; i < a->nwaiting;) {
		struct udp_waiting *w = &a->waiting[i];
		if (w->lookup != slot) {
			i++;
			continue;
		}
		if (status < 0) {
			shm_count(wk->slot, M_UDP_DROP_LOOKUP, 1);
		} else if (used == UDP_BATCH) {
			shm_count(wk->slot, M_UDP_DROP_QUEUE, 1);
		} else {
			struct sockaddr_storage dest;
			int nm;
			if (resolve_cached(a, lk->host, w->port, &dest, &nm)) {
				uint8_t *d = bufs->data[used++];
				memcpy(d, a->qbuf + w->off, w->len);
				queue_out(a, nout, &dest, lk->host, nm, d, w->len);
			} else {
				shm_count(wk->slot, M_UDP_DROP_LOOKUP, 1);
			}
		}
		drop_waiting(a, i);
	}
	flush_up(a, nout);
}

/* ---- up: client -> remotes ------------------------------------------------------ */

/* Whether a datagram's source is the association's client; the first one
 * from the client's address fixes the port when the request did not. */
static bool from_client(struct udp_assoc *a, struct sockaddr_storage *src)
{
	struct udp_key c, k;
	unmap(src);
	key_of(&a->client, &c);
	key_of(src, &k);
	if (!same_addr(&c, &k) || own_socket(a, &k))
		return false;
	if (a->port_known)
		return c.port == k.port;
	a->client = *src;
	a->client_len = sa_len(src);
	a->port_known = true;
	return true;
}

/* The destination of a header naming an address (or a literal address
 * sent as a name); false for a name to look up. */
static bool literal_dest(const struct socks5_udp_hdr *h, struct sockaddr_storage *ss)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	memset(ss, 0, sizeof *ss);
	if (h->atyp == SOCKS5_ATYP_IPV4) {
		s4->sin_family = AF_INET;
		memcpy(&s4->sin_addr, h->addr, 4);
	} else if (h->atyp == SOCKS5_ATYP_IPV6) {
		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, h->addr, 16);
	} else if (inet_pton(AF_INET, h->host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
	} else if (inet_pton(AF_INET6, h->host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
	} else {
		return false;
	}
	if (ss->ss_family == AF_INET)
		s4->sin_port = htons(h->port);
	else
		s6->sin6_port = htons(h->port);
	unmap(ss);
	return true;
}

static void prepare_in(unsigned n, size_t headroom)
{
	for (unsigned i = 0; i < n; i++) {
		bufs->in_iov[i] = (struct iovec){.iov_base = bufs->data[i] + headroom,
		                                 .iov_len = UDP_BUF - headroom};
		bufs->in[i].msg_hdr = (struct msghdr){
		    .msg_name = &bufs->in_name[i],
		    .msg_namelen = sizeof bufs->in_name[i],
		    .msg_iov = &bufs->in_iov[i],
		    .msg_iovlen = 1,
		};
	}
}

/* One batch from the client (the watch is level-triggered: what is left
 * is read at the next wake, after other sockets had their turn). */
static void on_relay(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	(void)events;
	struct udp_assoc *a = w->data;
	struct session *s = a->s;
	struct worker *wk = s->wk;
	prepare_in(UDP_BATCH, 0);
	int n = recvmmsg(a->rfd, bufs->in, UDP_BATCH, MSG_DONTWAIT, NULL);
	if (n <= 0)
		return;
	unsigned nout[2] = {0, 0};
	for (int i = 0; i < n; i++) {
		struct mmsghdr *m = &bufs->in[i];
		if (!from_client(a, &bufs->in_name[i])) {
			shm_count(wk->slot, M_UDP_DROP_SOURCE, 1);
			continue;
		}
		if (m->msg_hdr.msg_flags & MSG_TRUNC) {
			shm_count(wk->slot, M_UDP_DROP_MALFORMED, 1);
			continue;
		}
		struct socks5_udp_hdr h;
		int hl = socks5_udp_parse(bufs->data[i], m->msg_len, &h);
		if (hl < 0 || h.port == 0) {
			shm_count(wk->slot, hl == SOCKS5_UDP_FRAG ? M_UDP_DROP_FRAG : M_UDP_DROP_MALFORMED,
			          1);
			continue;
		}
		touch(a);
		uint8_t *data = bufs->data[i] + hl;
		size_t len = m->msg_len - (unsigned)hl;
		struct sockaddr_storage dest;
		int nm;
		if (literal_dest(&h, &dest))
			queue_out(a, nout, &dest, NULL, -1, data, len);
		else if (resolve_cached(a, h.host, h.port, &dest, &nm))
			queue_out(a, nout, &dest, h.host, nm, data, len);
		else
			enqueue_lookup(a, h.host, h.port, data, len);
	}
	flush_up(a, nout);
}

/* ---- down: remotes -> client ---------------------------------------------------- */

static void on_out(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	(void)events;
	struct udp_assoc *a = w->data;
	struct session *s = a->s;
	struct worker *wk = s->wk;
	prepare_in(UDP_BATCH, UDP_HEADROOM);
	int n = recvmmsg(w->fd, bufs->in, UDP_BATCH, MSG_DONTWAIT, NULL);
	if (n <= 0)
		return;
	unsigned nout = 0;
	uint8_t hls[UDP_BATCH];
	for (int i = 0; i < n; i++) {
		struct mmsghdr *m = &bufs->in[i];
		struct udp_key k;
		key_of(&bufs->in_name[i], &k);
		if (!peer_known(a, &k)) {
			shm_count(wk->slot, M_UDP_DROP_FILTER, 1);
			continue;
		}
		if (m->msg_hdr.msg_flags & MSG_TRUNC) {
			shm_count(wk->slot, M_UDP_DROP_SEND, 1);
			continue;
		}
		if (!relay_rate_admit(s, LIMIT_IN, m->msg_len)) {
			shm_count(wk->slot, M_UDP_DROP_RATE, 1);
			continue;
		}
		uint8_t hdr[SOCKS5_UDP_REPLY_HDR_MAX];
		size_t hl = socks5_udp_header_encode(hdr, (struct sockaddr *)&bufs->in_name[i]);
		uint8_t *p = bufs->data[i] + UDP_HEADROOM - hl;
		memcpy(p, hdr, hl);
		touch(a);
		hls[nout] = (uint8_t)hl;
		bufs->out_iov[0][nout] = (struct iovec){.iov_base = p, .iov_len = hl + m->msg_len};
		bufs->out[0][nout].msg_hdr = (struct msghdr){
		    .msg_name = &a->client,
		    .msg_namelen = a->client_len,
		    .msg_iov = &bufs->out_iov[0][nout],
		    .msg_iovlen = 1,
		};
		nout++;
	}
	if (!nout)
		return;
	int *err = bufs->out_err;
	unsigned sent = send_batch(s, a->rfd, bufs->out[0], nout, err);
	uint64_t payload = 0;
	for (unsigned j = 0; j < nout; j++)
		if (!err[j])
			payload += bufs->out_iov[0][j].iov_len - hls[j];
	s->dgrams_down += sent;
	s->bytes_down += payload;
	shm_count(wk->slot, M_UDP_DGRAMS_DOWN, sent);
	shm_count(wk->slot, M_BYTES_DOWN, payload);
	add_user_bytes(s, 1, payload);
}

/* ---- the control connection and the idle timer ----------------------------------- */

/* The control watch while the association lasts: level-triggered, so a
 * client that keeps sending on it is read in bounded bites, one per turn of
 * the loop, until its close; EPOLLOUT only while the reply is not out. */
static void control_watch(struct session *s)
{
	uint32_t ev = EPOLLIN | EPOLLRDHUP | (s->down ? EPOLLOUT : 0);
	if (s->cw.events != ev)
		(void)loop_watch_mod(&s->wk->loop, &s->cw, ev);
}

/* The control connection carries nothing more; what the client sends on
 * it is discarded, and its close ends the association. */
static void on_control(struct session *s)
{
	char sink[4096];
	if (s->down && s->c_writable) {
		if (session_send(s, "", 0) < 0) {
			session_finalize(s);
			return;
		}
		control_watch(s);
	}
	for (size_t total = 0; s->c_readable && total < UDP_CTRL_READ_MAX;) {
		ssize_t n = recv(s->cfd, sink, sizeof sink, 0);
		if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
			log_debug("session %llu: control connection closed: association over",
			          (unsigned long long)s->id);
			session_finalize(s);
			return;
		}
		if (n < 0 && errno == EAGAIN)
			s->c_readable = false;
		if (n > 0)
			total += (size_t)n;
	}
}

/* The timer is not moved per datagram: on expiry it looks at the last
 * datagram's time and, when there was one since, sleeps for the rest. */
static void on_idle(struct loop *l, struct loop_timer *t)
{
	struct session *s = t->data;
	struct udp_assoc *a = s->udp;
	int64_t timeout = (int64_t)s->wk->cfg.udp_idle_timeout_s * 1000;
	if (!s->wk->cfg.idle_cleanup)
		touch(a);
	if (a->last_active + timeout > l->now) {
		loop_timer_start_at(&s->wk->misc_tl, t, a->last_active + timeout);
		return;
	}
	session_timed_out(s, M_IDLE_TIMEOUT, "UDP association idle");
}

/* ---- start and end ------------------------------------------------------------------ */

/* The request's DST.ADDR and DST.PORT fix the client's port only when
 * they name one: port 0, an all-zero address or a name (PySocks sends
 * "0") leave it to the first datagram. */
static bool request_names_port(const struct socks5_request *r)
{
	static const uint8_t zero[16];
	if (r->port == 0 || r->atyp == SOCKS5_ATYP_DOMAIN)
		return false;
	return memcmp(r->addr, zero, r->atyp == SOCKS5_ATYP_IPV4 ? 4 : 16) != 0;
}

static int open_relay(struct udp_assoc *a, struct sockaddr_storage *bnd)
{
	struct session *s = a->s;
	socklen_t len = sizeof *bnd;
	/* The address the client reached the proxy at: never a wildcard. */
	if (getsockname(s->cfd, (struct sockaddr *)bnd, &len) < 0)
		return -errno;
	unmap(bnd);
	if (bnd->ss_family == AF_INET6)
		((struct sockaddr_in6 *)bnd)->sin6_port = 0;
	else
		((struct sockaddr_in *)bnd)->sin_port = 0;
	int fd = socket(bnd->ss_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	set_bufs(fd);
	len = sa_len(bnd);
	if (bind(fd, (struct sockaddr *)bnd, len) < 0 ||
	    getsockname(fd, (struct sockaddr *)bnd, &len) < 0) {
		int e = errno;
		close(fd);
		return -e;
	}
	int rc = loop_watch_add(&s->wk->loop, &a->rw, fd, EPOLLIN, on_relay, a);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	a->rfd = fd;
	key_of(bnd, &a->relay_k);
	return 0;
}

void udp_begin(struct session *s)
{
	struct worker *wk = s->wk;
	const struct socks5_request *r = &s->hs->req;
	if (!bufs && !(bufs = malloc(sizeof *bufs))) {
		log_warn("session %llu: no memory for UDP buffers", (unsigned long long)s->id);
		session_fail(s, SOCKS5_REP_GENERAL_FAILURE);
		return;
	}
	/* A rule that blocks UDP for this client or user, whatever the
	 * destination, refuses the association itself. */
	struct rules_match m;
	if (udp_rules(s, NULL, NULL, NULL, 0, &m) == RULES_BLOCK) {
		connect_blocked(s, &m);
		return;
	}
	struct udp_assoc *a = calloc(1, sizeof *a);
	if (!a) {
		session_fail(s, SOCKS5_REP_GENERAL_FAILURE);
		return;
	}
	a->s = s;
	a->rfd = a->ofd[0] = a->ofd[1] = -1;
	a->filter = wk->cfg.udp_filter;
	s->udp = a;
	struct sockaddr_storage bnd;
	int rc = open_relay(a, &bnd);
	if (rc < 0) {
		log_warn("session %llu: cannot open a UDP relay socket: %s", (unsigned long long)s->id,
		         strerror(-rc));
		session_fail(s, SOCKS5_REP_GENERAL_FAILURE);
		return;
	}
	a->client = s->peer;
	unmap(&a->client);
	a->client_len = sa_len(&a->client);
	if (request_names_port(r)) {
		if (a->client.ss_family == AF_INET6)
			((struct sockaddr_in6 *)&a->client)->sin6_port = htons(r->port);
		else
			((struct sockaddr_in *)&a->client)->sin_port = htons(r->port);
		a->port_known = true;
	}
	uint8_t out[SOCKS5_REPLY_MAX];
	size_t n = socks5_reply_encode(out, SOCKS5_REP_SUCCEEDED, (struct sockaddr *)&bnd);
	s->rep = SOCKS5_REP_SUCCEEDED;
	shm_count(wk->slot, M_REPLY_0, 1);
	if (session_send(s, out, n) < 0) {
		session_finalize(s);
		return;
	}
	session_free_handshake(s);
	s->phase = PH_UDP;
	s->on_client = on_control;
	s->on_target = NULL;
	control_watch(s);
	shm_gauge_add(wk->slot, G_CONN_RELAYING, 1);
	touch(a);
	s->timer.fn = on_idle;
	loop_timer_start_at(&wk->misc_tl, &s->timer,
	                    wk->loop.now + (int64_t)wk->cfg.udp_idle_timeout_s * 1000);
	on_control(s);
}

void udp_end(struct session *s)
{
	struct udp_assoc *a = s->udp;
	if (!a)
		return;
	for (int i = 0; i < UDP_LOOKUPS_MAX; i++)
		resolver_cancel(a->lookups[i].q);
	if (a->rfd >= 0)
		loop_watch_close(&a->rw, a->rfd);
	for (int i = 0; i < 2; i++)
		if (a->ofd[i] >= 0) {
			loop_watch_close(&a->ow[i], a->ofd[i]);
			out_fds--;
		}
	if (a->block_unlogged)
		log_msg(a->unlogged_info ? LOG_INFO : LOG_DEBUG,
		        "session %llu: %llu more blocked datagram destinations, not logged one by one",
		        (unsigned long long)s->id, (unsigned long long)a->block_unlogged);
	free(a->qbuf);
	s->udp = NULL;
	/* Events of this batch may still name its watches. */
	loop_defer_free(&s->wk->loop, &a->deferred, free, a);
}
