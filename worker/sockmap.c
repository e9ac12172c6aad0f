/*
 * sockmap: the kernel-only relay (see sockmap.h).
 */
#include "sockmap.h"

#include <bpf/bpf.h>
#include <bpf/libbpf.h>
#include <errno.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/sockios.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include "../shared/log.h"
#include "relay.skel.h"
#include "session_int.h"
#include "worker.h"

/* Sockets per worker's maps at most: a worker with a larger descriptor
 * limit keeps its further sessions on splice. */
#define SOCKMAP_SOCKETS_MAX (1u << 18)
/* How soon a FIN, or a session handed back, looks again whether the
 * bytes queued for the peer have left; the wait doubles up to the maximum
 * while they have not, and up to the stalled maximum while nothing at all
 * has left since the last look (a reader that reads nothing: thousands of
 * them must not keep the worker busy looking). */
#define SOCKMAP_POLL_MS 1
#define SOCKMAP_POLL_MAX_MS 64
#define SOCKMAP_POLL_STALLED_MAX_MS 1024
/* Bytes read from one socket and not yet written to its peer above which
 * the session goes back to the worker's relay (the program reports every
 * 2 MiB a socket reads).  Taking a socket out of the program instead
 * would be racy: a segment that arrives while it is being taken out is
 * dropped by the kernel. */
#define SOCKMAP_HOLD_BYTES (4u << 20)

/* As bpf/relay.bpf.c. */
struct sockmap_peer {
	uint64_t peer;
	uint64_t bytes;
	uint64_t owner;
};

/* The worker process's program and maps (one worker per process). */
static struct {
	struct relay_bpf *skel;
	int socks, dests, peers, held; /* map descriptors */
	struct ring_buffer *marks;
	struct loop_watch marks_w;
	bool tried;     /* a load was tried: skel says how it went */
	bool told;      /* a failed load was said and counted */
	int err;        /* how it failed: a negative errno */
	const char *what; /* the step that failed */
} km = {NULL, -1, -1, -1, -1, NULL, {0}, false, false, 0, ""};

/* A session in the kernel relay; index 0 is the client, 1 the target. */
struct sockmap_sess {
	struct loop_timer poll; /* a FIN or the hand-back waits for bytes to leave */
	uint32_t poll_ms;
	uint64_t polled;  /* bytes written to both sockets, at the last look */
	bool held;        /* bytes stay with their socket: going back to the worker */
	bool handed_back; /* the worker's relay has it (the sockets stay in the maps) */
	uint64_t cookie[2];
	uint64_t base[2]; /* bytes written to each socket before it went in */
	uint64_t seen[2]; /* bytes read from each socket, as last counted */
	uint64_t out[2];  /* bytes written to each socket, at the last idle look */
};

static int on_mark(void *ctx, void *data, size_t size);
static void on_marks(struct loop *l, struct loop_watch *w, uint32_t events);

static int quiet(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	(void)level;
	(void)fmt;
	(void)ap;
	return 0;
}

/* Opened, loaded and attached to its socket hash: the steps that take
 * CAP_BPF and CAP_NET_ADMIN.  Sized to the process's descriptor limit. */
static int kit_load(struct relay_bpf **out, const char **what)
{
	libbpf_set_print(quiet);
	*what = "open";
	struct relay_bpf *skel = relay_bpf__open();
	if (!skel)
		return -errno;
	struct rlimit rl;
	uint32_t max = SOCKMAP_SOCKETS_MAX;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < max)
		max = (uint32_t)rl.rlim_cur;
	if (max < 2)
		max = 2;
	int rc = bpf_map__set_max_entries(skel->maps.socks, max);
	if (!rc)
		rc = bpf_map__set_max_entries(skel->maps.dests, max);
	if (!rc)
		rc = bpf_map__set_max_entries(skel->maps.peers, max);
	if (!rc)
		rc = bpf_map__set_max_entries(skel->maps.held, max);
	*what = "load";
	if (!rc)
		rc = relay_bpf__load(skel);
	if (!rc) {
		*what = "attach";
		rc = bpf_prog_attach(bpf_program__fd(skel->progs.relay_verdict),
		                     bpf_map__fd(skel->maps.socks), BPF_SK_SKB_VERDICT, 0);
	}
	if (rc) {
		relay_bpf__destroy(skel);
		return rc < 0 ? rc : -EINVAL;
	}
	*out = skel;
	return 0;
}

struct relay_bpf *sockmap_preload(void)
{
	struct relay_bpf *skel = NULL;
	const char *what;
	int rc = kit_load(&skel, &what);
	if (rc < 0)
		log_debug("sockmap relay not loaded ahead (BPF %s: %s)", what, strerror(-rc));
	return skel;
}

void sockmap_unload(struct relay_bpf *skel)
{
	relay_bpf__destroy(skel);
}

/* The process's own program and maps from now on.  A set loaded ahead
 * may have served a worker that died: entries of its sessions go (their
 * sockets left the socket hashes as they closed), so that a mark it left
 * in the ring finds no session. */
static void km_take(struct relay_bpf *skel)
{
	km.skel = skel;
	km.tried = true;
	km.socks = bpf_map__fd(skel->maps.socks);
	km.dests = bpf_map__fd(skel->maps.dests);
	km.peers = bpf_map__fd(skel->maps.peers);
	km.held = bpf_map__fd(skel->maps.held);
	int maps[2] = {km.peers, km.held};
	for (int i = 0; i < 2; i++) {
		uint64_t key;
		while (bpf_map_get_next_key(maps[i], NULL, &key) == 0 &&
		       bpf_map_delete_elem(maps[i], &key) == 0)
			;
	}
}

void sockmap_at_fork(struct relay_bpf **kits, size_t n, size_t mine, bool enabled)
{
	for (size_t i = 0; i < n; i++) {
		if (i == mine && enabled && kits[i])
			km_take(kits[i]);
		else
			relay_bpf__destroy(kits[i]);
		kits[i] = NULL;
	}
	if (!enabled || km.skel)
		return;
	struct relay_bpf *skel = NULL;
	km.tried = true;
	km.err = kit_load(&skel, &km.what);
	if (km.err == 0)
		km_take(skel);
}

/* The marks ring, watched by the worker's loop: a map descriptor's work,
 * which takes no capability. */
static int km_watch(struct worker *wk)
{
	km.what = "ring buffer";
	int fd = bpf_map__fd(km.skel->maps.marks);
	km.marks = ring_buffer__new(fd, on_mark, NULL, NULL);
	int rc = km.marks ? loop_watch_add(&wk->loop, &km.marks_w, fd, EPOLLIN, on_marks, NULL)
	                  : -errno;
	if (rc) {
		ring_buffer__free(km.marks);
		km.marks = NULL;
		relay_bpf__destroy(km.skel);
		km.skel = NULL;
	}
	return rc < 0 ? rc : rc ? -EINVAL : 0;
}

/* The program and maps, loaded ahead (by the master before it gave up
 * root, or by the worker before it gave up its capabilities) or else at
 * the first session that asks; a worker whose kernel or privileges refuse
 * says so once and counts it. */
static bool km_ready(struct worker *wk)
{
	if (km.marks)
		return true;
	if (!km.tried) {
		km.tried = true;
		struct relay_bpf *skel = NULL;
		km.err = kit_load(&skel, &km.what);
		if (km.err == 0)
			km_take(skel);
	}
	if (km.skel && !km.marks) {
		km.err = km_watch(wk);
		if (km.err == 0)
			return true;
	}
	if (km.told)
		return false;
	km.told = true;
	log_warn("sockmap relay unavailable (BPF %s: %s%s): relaying by %s instead", km.what,
	         strerror(-km.err), km.err == -EPERM ? ", needs CAP_BPF and CAP_NET_ADMIN" : "",
	         wk->cfg.splice ? "splice" : "copy");
	shm_count(wk->slot, M_SOCKMAP_FALLBACKS, 1);
	return false;
}

/* Bytes written to a socket since it was connected: those acknowledged
 * plus those in its send queue, read until the two reads agree. */
static int written(int fd, uint64_t *out)
{
	for (int i = 0; i < 8; i++) {
		struct tcp_info a, b;
		socklen_t la = sizeof a, lb = sizeof b;
		int outq;
		if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &a, &la) < 0 ||
		    ioctl(fd, SIOCOUTQ, &outq) < 0 ||
		    getsockopt(fd, IPPROTO_TCP, TCP_INFO, &b, &lb) < 0)
			return -errno;
		if (a.tcpi_bytes_acked == b.tcpi_bytes_acked) {
			*out = a.tcpi_bytes_acked + (uint64_t)outq;
			return 0;
		}
	}
	return -EAGAIN;
}

static uint64_t counted(uint64_t cookie)
{
	struct sockmap_peer p;
	return bpf_map_lookup_elem(km.peers, &cookie, &p) == 0 ? p.bytes : 0;
}

static void km_remove(const uint64_t cookie[2])
{
	for (int i = 0; i < 2; i++) {
		(void)bpf_map_delete_elem(km.socks, &cookie[i]);
		(void)bpf_map_delete_elem(km.dests, &cookie[i]);
		(void)bpf_map_delete_elem(km.peers, &cookie[i]);
		(void)bpf_map_delete_elem(km.held, &cookie[i]);
	}
}

/* Both sockets in: first where bytes may be sent, then their routes, then
 * under the program.  0 or a negative errno (nothing left in the maps). */
static int km_add(const int fd[2], uint64_t cookie[2], struct session *owner)
{
	for (int i = 0; i < 2; i++) {
		socklen_t len = sizeof cookie[i];
		if (getsockopt(fd[i], SOL_SOCKET, SO_COOKIE, &cookie[i], &len) < 0)
			return -errno;
	}
	int rc = 0;
	for (int i = 0; i < 2 && !rc; i++) {
		uint64_t v = (uint64_t)fd[i];
		rc = bpf_map_update_elem(km.dests, &cookie[i], &v, BPF_NOEXIST);
	}
	for (int i = 0; i < 2 && !rc; i++) {
		struct sockmap_peer p = {cookie[1 - i], 0, (uint64_t)(uintptr_t)owner};
		rc = bpf_map_update_elem(km.peers, &cookie[i], &p, BPF_NOEXIST);
	}
	for (int i = 0; i < 2 && !rc; i++) {
		uint64_t v = (uint64_t)fd[i];
		rc = bpf_map_update_elem(km.socks, &cookie[i], &v, BPF_NOEXIST);
	}
	if (rc) {
		rc = -errno;
		km_remove(cookie);
	}
	return rc;
}

/* Take the counts of the BPF map into the session's; true when bytes
 * moved since the last look. */
static bool collect(struct session *s)
{
	struct sockmap_sess *sm = s->sm;
	uint64_t up0 = s->bytes_up, down0 = s->bytes_down;
	uint64_t now[2] = {counted(sm->cookie[0]), counted(sm->cookie[1])};
	if (now[0] == sm->seen[0] && now[1] == sm->seen[1])
		return false;
	uint64_t up = now[0] - sm->seen[0], down = now[1] - sm->seen[1];
	sm->seen[0] = now[0];
	sm->seen[1] = now[1];
	s->bytes_up += up;
	s->bytes_down += down;
	shm_count(s->wk->slot, M_BYTES_UP, up);
	shm_count(s->wk->slot, M_BYTES_DOWN, down);
	relay_moved(s, up0, down0);
	return true;
}

/* Socket i has sent its FIN: pass it on to the other once every byte
 * read before it has been written there.  True when passed. */
static bool pass_fin(struct session *s, int i)
{
	struct sockmap_sess *sm = s->sm;
	int src = i ? s->tfd : s->cfd, dst = i ? s->cfd : s->tfd;
	bool *shut = i ? &s->c_shut : &s->t_shut;
	/* Held: the worker's relay passes the FIN on, after the bytes. */
	if (sm->held)
		return false;
	/* The verdict runs under the source's socket lock: once a call has
	 * held that lock, the bytes that came before the FIN are counted. */
	struct tcp_info ti;
	socklen_t len = sizeof ti;
	uint64_t out;
	if (getsockopt(src, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 || written(dst, &out) < 0)
		return false;
	if (out - sm->base[1 - i] < counted(sm->cookie[i]))
		return false;
	/* When the other direction is over too, the close sends the FIN. */
	if (!(s->c_shut || s->t_shut))
		shutdown(dst, SHUT_WR);
	*shut = true;
	return true;
}

static bool sock_failed(int fd)
{
	int err = 0;
	socklen_t len = sizeof err;
	return getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0;
}

/* The handler of both sockets: only EOF and errors wake it. */
static void sockmap_relay(struct session *s)
{
	struct sockmap_sess *sm = s->sm;
	if ((s->c_hup && sock_failed(s->cfd)) || (s->t_hup && sock_failed(s->tfd))) {
		session_finalize(s);
		return;
	}
	bool waiting = false;
	if (s->c_hup && !s->t_shut)
		waiting |= !pass_fin(s, 0);
	if (s->t_hup && !s->c_shut)
		waiting |= !pass_fin(s, 1);
	if (s->c_shut && s->t_shut) {
		session_finalize(s);
		return;
	}
	if (waiting && !loop_timer_active(&sm->poll)) {
		sm->poll_ms = SOCKMAP_POLL_MS;
		loop_timer_start_at(&s->wk->misc_tl, &sm->poll, s->wk->loop.now + sm->poll_ms);
	}
}

/* Bytes read from socket i (as counted) not yet written to its peer. */
static int64_t queued(struct session *s, int i)
{
	struct sockmap_sess *sm = s->sm;
	uint64_t out;
	if (written(i ? s->cfd : s->tfd, &out) < 0)
		return 0;
	return (int64_t)(counted(sm->cookie[i]) - (out - sm->base[1 - i]));
}

static void on_poll(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct session *s = t->data;
	struct sockmap_sess *sm = s->sm;
	uint32_t ms = sm->poll_ms;
	if (sm->held) {
		/* Once every redirected byte has left, what the sockets kept
		 * comes after it: the worker's relay takes over, copying (its
		 * reads go through the sockets' own queues; splice would not). */
		if (queued(s, 0) <= 0 && queued(s, 1) <= 0) {
			collect(s);
			sm->held = false;
			sm->handed_back = true;
			loop_timer_stop(&sm->poll);
			relay_take_back(s);
			return;
		}
	} else {
		sockmap_relay(s);
		if (s->cfd < 0 || !loop_timer_active(&sm->poll))
			return;
	}
	uint64_t out[2] = {0, 0};
	(void)written(s->cfd, &out[0]);
	(void)written(s->tfd, &out[1]);
	uint32_t max = out[0] + out[1] == sm->polled ? SOCKMAP_POLL_STALLED_MAX_MS : SOCKMAP_POLL_MAX_MS;
	sm->polled = out[0] + out[1];
	loop_timer_stop(&sm->poll);
	sm->poll_ms = ms * 2 < max ? ms * 2 : max;
	loop_timer_start_at(&s->wk->misc_tl, &sm->poll, s->wk->loop.now + sm->poll_ms);
}

/* The program says socket `cookie` read another 2 MiB: when too much of
 * it waits for the peer, both sockets keep their bytes from now on, and
 * the session goes back to the worker's relay once the queued ones are
 * out. */
static int on_mark(void *ctx, void *data, size_t size)
{
	(void)ctx;
	uint64_t cookie;
	struct sockmap_peer p;
	if (size < sizeof cookie)
		return 0;
	memcpy(&cookie, data, sizeof cookie);
	if (bpf_map_lookup_elem(km.peers, &cookie, &p) < 0)
		return 0; /* the session has ended */
	struct session *s = (struct session *)(uintptr_t)p.owner;
	struct sockmap_sess *sm = s->sm;
	int i = cookie == sm->cookie[1];
	if (sm->held || sm->handed_back || queued(s, i) <= (int64_t)SOCKMAP_HOLD_BYTES)
		return 0;
	uint32_t one = 1;
	for (int k = 0; k < 2; k++)
		if (bpf_map_update_elem(km.held, &sm->cookie[k], &one, BPF_ANY) < 0) {
			session_finalize(s);
			return 0;
		}
	/* A verdict that looked before the flags were set may still be about
	 * to count and redirect its batch; it runs under its socket's lock, so
	 * once each socket's lock has been taken, every batch redirected is
	 * counted, and the hand-back cannot come before it has left. */
	struct tcp_info ti;
	socklen_t len = sizeof ti;
	(void)getsockopt(s->cfd, IPPROTO_TCP, TCP_INFO, &ti, &len);
	len = sizeof ti;
	(void)getsockopt(s->tfd, IPPROTO_TCP, TCP_INFO, &ti, &len);
	sm->held = true;
	shm_count(s->wk->slot, M_SOCKMAP_HANDBACKS, 1);
	loop_timer_stop(&sm->poll);
	sm->poll_ms = SOCKMAP_POLL_MS;
	loop_timer_start_at(&s->wk->misc_tl, &sm->poll, s->wk->loop.now + sm->poll_ms);
	return 0;
}

static void on_marks(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	(void)w;
	(void)events;
	(void)ring_buffer__consume(km.marks);
}

/* The idle timer: bytes moved since it was set restart it. */
static void on_idle(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct session *s = t->data;
	struct sockmap_sess *sm = s->sm;
	/* Bytes still leaving for a slow reader count as activity too. */
	uint64_t out[2] = {sm->out[0], sm->out[1]};
	(void)written(s->cfd, &out[0]);
	(void)written(s->tfd, &out[1]);
	bool wrote = out[0] != sm->out[0] || out[1] != sm->out[1];
	sm->out[0] = out[0];
	sm->out[1] = out[1];
	if (!collect(s) && !wrote)
		session_timed_out(s, M_IDLE_TIMEOUT, "idle");
	else if (wrote)
		relay_touch_idle(s);
}

bool sockmap_try(struct session *s)
{
	struct worker *wk = s->wk;
	/* Only a session whose bytes nothing needs to see, with nothing held
	 * in the worker and both directions open. */
	if (!wk->cfg.sockmap || !s->splice || s->sm || s->sniff || s->sniff_wanted || s->lim_n ||
	    s->urgent || s->gss || s->up || s->down || s->up_pipe || s->down_pipe || s->c_hup ||
	    s->t_hup || s->c_shut || s->t_shut || !km_ready(wk))
		return false;
	struct sockmap_sess *sm = calloc(1, sizeof *sm);
	if (!sm)
		return false;
	int fd[2] = {s->cfd, s->tfd};
	if (written(s->cfd, &sm->base[0]) < 0 || written(s->tfd, &sm->base[1]) < 0 ||
	    km_add(fd, sm->cookie, s) < 0) {
		free(sm);
		return false;
	}
	s->sm = sm;
	sm->out[0] = sm->base[0];
	sm->out[1] = sm->base[1];
	loop_timer_init(&sm->poll, on_poll, s);
	s->timer.fn = on_idle;
	s->on_client = s->on_target = sockmap_relay;
	/* Bytes no longer wake the worker: only EOF and errors do. */
	(void)loop_watch_mod(&wk->loop, &s->cw, EPOLLRDHUP | EPOLLET);
	(void)loop_watch_mod(&wk->loop, &s->tw, EPOLLRDHUP | EPOLLET);
	/* Bytes that arrived before the program took the sockets wait in
	 * their receive queues: setting the low-water mark runs the verdict
	 * on them now rather than at the next segment. */
	int one = 1;
	(void)setsockopt(s->cfd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
	(void)setsockopt(s->tfd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof one);
	shm_count(wk->slot, M_SOCKMAP_SESSIONS, 1);
	return true;
}

void sockmap_session_end(struct session *s)
{
	struct sockmap_sess *sm = s->sm;
	if (!sm)
		return;
	collect(s);
	km_remove(sm->cookie);
	loop_timer_stop(&sm->poll);
	free(sm);
	s->sm = NULL;
}
