/*
 * relay: the last state of a session — bytes both ways between client and
 * target, through a relay buffer taken from the worker's pool only while
 * bytes are in flight, or zero-copy through a splice(2) pipe once a
 * direction carries bulk data that no dissector needs to see, or inside
 * the kernel once nothing needs to see any (worker/sockmap.c); the
 * credential dissector (worker/sniff.c) watches what is copied; the idle
 * timer ends a silent session.  A session under a rate limit reads no
 * more than the allowance it took from its entries' buckets
 * (shared/limits.h), and waits on a timer when they are empty.  Loop
 * thread only.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>

#include "../shared/log.h"
#include "pipes.h"
#include "session_int.h"
#include "sniff.h"
#include "sockmap.h"
#include "worker.h"

static void relay(struct session *s);

static void on_idle_timeout(struct loop *l, struct loop_timer *t)
{
	(void)l;
	session_timed_out(t->data, M_IDLE_TIMEOUT, "idle");
}

void relay_touch_idle(struct session *s)
{
	if (s->wk->cfg.idle_cleanup)
		loop_timer_start(&s->wk->loop, &s->wk->idle_tl, &s->timer);
}

/* A credential the server accepted: one P record on stdout. */
static void cred_record(void *arg, const struct sniff_cred *c)
{
	struct session *s = arg;
	char line[LOG_LINE_MAX];
	int n = sniff_format(line, sizeof line, (int64_t)time(NULL), s->user, s->dest, s->dport, c);
	if (n > 0)
		log_record(line, (size_t)n);
	shm_count(s->wk->slot, M_CREDENTIALS, 1);
}

/* Bytes just read from one side go to the dissector; when it has nothing
 * more to find it is freed and the relay runs without it. */
void relay_sniff(struct session *s, enum sniff_dir dir, const uint8_t *p, size_t n)
{
	/* The state is allocated with the first byte relayed, so that a
	 * session that never carries any costs nothing for it. */
	if (s->sniff_wanted) {
		s->sniff_wanted = false;
		s->sniff = sniff_new();
	}
	if (!s->sniff)
		return;
	if (sniff_feed(s->sniff, dir, p, n, cred_record, s) == SNIFF_DONE) {
		sniff_free(s->sniff);
		s->sniff = NULL;
	}
}

/* One direction of the relay. */
struct flow {
	int src, dst;
	bool *readable, *eof, *writable, *shut;
	bool hup;   /* the source has shut down its sending */
	bool *bulk; /* reads fill the buffer: the direction splices */
	struct rbuf **buf;
	struct rpipe **pipe;
	uint64_t *total;
	enum shm_counter counter;
	enum sniff_dir dir;
	enum limit_dir ldir;
};

/* ---- rate limits -------------------------------------------------------- */

void relay_rate_resume(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct session *s = t->data;
	s->lim_paused[0] = s->lim_paused[1] = false;
	if (s->phase == PH_RELAY)
		s->on_client(s); /* the relay's handler: this file's, or GSS-API's */
}

/* Take up to want bytes from entry i's bucket for direction d; UINT64_MAX
 * when the entry has no rate that way.  *wait: how long until it has some. */
static uint64_t take_from(struct session *s, uint8_t i, enum limit_dir d, uint64_t want,
                          int64_t *wait)
{
	struct limit_entry *e = limits_entry_at(&s->wk->seg->limits, s->lim_idx[i]);
	uint64_t rate = __atomic_load_n(&e->b[d].rate, __ATOMIC_RELAXED);
	if (!rate)
		return UINT64_MAX;
	uint64_t chunk = limits_chunk(rate);
	if (want > chunk)
		want = chunk;
	uint64_t n = limits_bucket_take(&e->b[d], rate, want, want, s->wk->loop.now);
	if (!n) {
		int64_t w = limits_bucket_wait_ms(&e->b[d], rate, want);
		if (w > *wait)
			*wait = w;
	}
	return n;
}

/* The bytes direction d may read now (taking more from the buckets when
 * the allowance is spent); 0: it stops reading, and lim_timer brings it
 * back when the bucket should have refilled.  The readable flag stays set,
 * so the resumed relay reads what waited; meanwhile the edge-triggered
 * watch stays quiet and the peer's TCP window closes. */
uint64_t relay_rate_allowance(struct session *s, enum limit_dir d)
{
	if (s->lim_allow[d])
		return s->lim_allow[d];
	/* A paused direction tries again when its timer says, not at every
	 * packet: the sessions waiting take the chunks in turn.  The other
	 * direction, with its own buckets, goes on meanwhile. */
	if (s->lim_paused[d])
		return 0;
	int64_t wait = 0;
	uint64_t got = take_from(s, 0, d, LIMITS_UNRATED_CHUNK, &wait);
	if (got && got != UINT64_MAX && s->lim_n > 1) {
		uint64_t other = take_from(s, 1, d, got, &wait);
		if (other < got) {
			/* The second bucket had less: the first gets the rest back. */
			struct limit_entry *e = limits_entry_at(&s->wk->seg->limits, s->lim_idx[0]);
			limits_bucket_give(&e->b[d], __atomic_load_n(&e->b[d].rate, __ATOMIC_RELAXED),
			                   got - other);
			got = other;
		}
	} else if (got == UINT64_MAX) {
		got = s->lim_n > 1 ? take_from(s, 1, d, LIMITS_UNRATED_CHUNK, &wait) : UINT64_MAX;
	}
	if (got == UINT64_MAX)
		got = LIMITS_UNRATED_CHUNK;
	if (!got) {
		/* Sessions that waited go first: one that has just had a chunk
		 * waits a millisecond more, behind them (timers of one deadline
		 * fire in the order they were set). */
		if (!s->lim_waiting)
			wait++;
		s->lim_waiting = true;
		s->lim_paused[d] = true;
		shm_count(s->wk->slot, M_RATE_PAUSES, 1);
		int64_t at = s->wk->loop.now + wait;
		if (!loop_timer_active(&s->lim_timer) || s->lim_timer.deadline > at)
			loop_timer_start_at(&s->wk->misc_tl, &s->lim_timer, at);
		return 0;
	}
	s->lim_waiting = false;
	return s->lim_allow[d] = got;
}

void relay_rate_spent(struct session *s, enum limit_dir d, uint64_t n)
{
	s->lim_allow[d] = s->lim_allow[d] > n ? s->lim_allow[d] - n : 0;
}

bool relay_rate_admit(struct session *s, enum limit_dir d, uint64_t n)
{
	if (!s->lim_n)
		return true;
	/* Chunks are gathered until the datagram is covered; what is gathered
	 * and not used stays in the session's allowance for the next one. */
	uint64_t have = s->lim_allow[d];
	s->lim_allow[d] = 0;
	while (have < n) {
		uint64_t got = relay_rate_allowance(s, d);
		s->lim_allow[d] = 0;
		if (!got)
			break;
		have += got;
	}
	bool ok = have >= n;
	s->lim_allow[d] = ok ? have - n : have;
	return ok;
}

/* How many bytes the next read may splice (0: read into the buffer).
 * Splicing needs the buffer empty (bytes leave in order) and nothing that
 * must look at the bytes: no dissector, or one that skips them unseen. */
static uint64_t splice_allowance(const struct session *s, const struct flow *f)
{
	if (!s->splice || s->urgent || !*f->bulk || *f->buf || s->sniff_wanted)
		return 0;
	return s->sniff ? sniff_skippable(s->sniff, f->dir) : UINT64_MAX;
}

/* Send what the pipe, then the buffer, hold.  Returns bytes sent or a
 * negative errno; clears *writable when the socket is full. */
static ssize_t flush(struct session *s, const struct flow *f)
{
	struct rpipe *p = *f->pipe;
	struct rbuf *b = *f->buf;
	ssize_t w;
	size_t want;
	if (p) {
		want = p->len;
		w = splice(p->rfd, NULL, f->dst, NULL, want, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (w > 0) {
			shm_count(s->wk->slot, M_BYTES_SPLICED, (uint64_t)w);
			p->len -= (uint32_t)w;
			if (p->len == 0) {
				pipes_put(p);
				*f->pipe = NULL;
			}
		}
	} else {
		want = b->last - b->pos;
		w = send(f->dst, b->data + b->pos, want, MSG_NOSIGNAL);
		if (w > 0) {
			b->pos += (uint32_t)w;
			if (b->pos == b->last) {
				worker_buf_put(s->wk, b);
				*f->buf = NULL;
			}
		}
	}
	if (w > 0) {
		*f->total += (uint64_t)w;
		shm_count(s->wk->slot, f->counter, (uint64_t)w);
		/* A short write means the socket buffer is full: wait for EPOLLOUT. */
		if ((size_t)w < want)
			*f->writable = false;
		return w;
	}
	if (w < 0 && errno == EAGAIN)
		*f->writable = false;
	else if (w < 0 && errno != EINTR)
		return -errno;
	return 0;
}

/* Splice up to max bytes from the source into the pipe.  Returns 1 on
 * progress (bytes or EOF), 0 on none, -ENOBUFS when no pipe can be had
 * (the caller reads into the buffer instead), or a negative errno. */
static int fill_pipe(struct session *s, const struct flow *f, uint64_t max)
{
	struct rpipe *p = *f->pipe;
	if (!p) {
		p = *f->pipe = pipes_get(s->wk->cfg.pipe_size, worker_fd_room(s->wk, 2));
		if (!p)
			return -ENOBUFS;
	}
	size_t space = p->cap - p->len;
	if (space > max)
		space = (size_t)max;
	if (space == 0)
		return 0;
	ssize_t r = splice(f->src, NULL, p->wfd, NULL, space, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
	int rc = 0;
	if (r > 0) {
		p->len += (uint32_t)r;
		if (s->lim_n)
			s->lim_allow[f->ldir] -= (uint64_t)r;
		if (s->sniff)
			sniff_skip(s->sniff, f->dir, (uint64_t)r);
		/* A short splice does not prove the socket drained (the pipe may
		 * have run out of slots first): only EAGAIN into an empty pipe does. */
		rc = 1;
	} else if (r == 0) {
		*f->eof = true;
		rc = 1;
	} else if (errno == EAGAIN) {
		/* With bytes in the pipe, EAGAIN may mean the pipe is full: read
		 * again once it has drained. */
		if (p->len == 0)
			*f->readable = false;
	} else if (errno != EINTR) {
		rc = -errno;
	}
	if (p->len == 0) {
		pipes_put(p);
		*f->pipe = NULL;
	}
	return rc;
}

/* Read from the source into the buffer.  Returns 1 on progress (bytes or
 * EOF), 0 on none, or a negative errno. */
static int fill_buf(struct session *s, const struct flow *f, uint64_t allow)
{
	struct rbuf *b = *f->buf;
	if (!b) {
		b = *f->buf = worker_buf_get(s->wk);
		if (!b)
			return -ENOMEM;
	}
	if (b->pos == b->last)
		b->pos = b->last = 0;
	else if (b->last == b->cap && b->pos > 0) {
		memmove(b->data, b->data + b->pos, b->last - b->pos);
		b->last -= b->pos;
		b->pos = 0;
	}
	size_t space = b->cap - b->last;
	if (space > allow)
		space = (size_t)allow;
	int rc = 0;
	if (space > 0) {
		ssize_t r = recv(f->src, b->data + b->last, space, 0);
		if (r > 0) {
			if (s->lim_n)
				s->lim_allow[f->ldir] -= (uint64_t)r;
			if (s->sniff || s->sniff_wanted)
				relay_sniff(s, f->dir, b->data + b->last, (size_t)r);
			b->last += (uint32_t)r;
			rc = 1;
			if ((size_t)r == space)
				*f->bulk = true;
			/* A short read drained the socket, and new data raises a
			 * new edge; but an EOF that came with this data raises
			 * none, so after EPOLLRDHUP read on until it shows.  A
			 * read also stops short at an urgent mark, with more
			 * behind it: after urgent data, read on until EAGAIN. */
			else if (!f->hup && !s->urgent)
				*f->readable = false;
		} else if (r == 0) {
			*f->eof = true;
			rc = 1;
		} else if (errno == EAGAIN) {
			*f->readable = false;
		} else if (errno != EINTR) {
			rc = -errno;
		}
	}
	if (b->pos == b->last) {
		worker_buf_put(s->wk, b);
		*f->buf = NULL;
	}
	return rc;
}

/* Move bytes from the source to the destination until neither can make
 * progress.  Returns 0 or a negative errno. */
static int pump(struct session *s, const struct flow *f, bool *moved)
{
	for (;;) {
		bool progress = false;
		if (*f->writable && (*f->pipe || *f->buf)) {
			ssize_t w = flush(s, f);
			if (w < 0)
				return (int)w;
			progress = w > 0;
		}
		/* Unlimited sessions pay the lim_n test only. */
		uint64_t allow = UINT64_MAX;
		if (!*f->eof && *f->readable && (!s->lim_n || (allow = relay_rate_allowance(s, f->ldir)))) {
			uint64_t max = splice_allowance(s, f);
			if (max > allow)
				max = allow;
			int rc = max ? fill_pipe(s, f, max) : -ENOBUFS;
			if (rc == -ENOBUFS)
				rc = fill_buf(s, f, allow);
			if (rc < 0)
				return rc;
			progress |= rc > 0;
		}
		if (!progress)
			break;
		*moved = true;
	}
	if (*f->eof && !*f->buf && !*f->pipe && !*f->shut) {
		/* When the other direction is over too, the session closes both
		 * sockets next, and the close sends the FIN. */
		if (!(s->c_shut || s->t_shut))
			shutdown(f->dst, SHUT_WR);
		*f->shut = true;
	}
	return 0;
}

static void relay(struct session *s)
{
	bool moved = false;
	uint64_t up0 = s->bytes_up, down0 = s->bytes_down;
	const struct flow up = {s->cfd, s->tfd, &s->c_readable, &s->c_eof, &s->t_writable,
	                        &s->t_shut, s->c_hup, &s->up_bulk, &s->up, &s->up_pipe,
	                        &s->bytes_up, M_BYTES_UP, SNIFF_UP, LIMIT_OUT};
	const struct flow down = {s->tfd, s->cfd, &s->t_readable, &s->t_eof, &s->c_writable,
	                          &s->c_shut, s->t_hup, &s->down_bulk, &s->down, &s->down_pipe,
	                          &s->bytes_down, M_BYTES_DOWN, SNIFF_DOWN, LIMIT_IN};
	int rc = pump(s, &up, &moved);
	if (rc == 0)
		rc = pump(s, &down, &moved);
	if (rc < 0 || (s->c_shut && s->t_shut)) {
		session_finalize(s);
		return;
	}
	if (moved)
		relay_moved(s, up0, down0);
	/* From here the kernel may relay alone (sockmap = yes). */
	if (s->wk->cfg.sockmap)
		sockmap_try(s);
}

void relay_moved(struct session *s, uint64_t up0, uint64_t down0)
{
	relay_touch_idle(s);
	if (s->user_slot >= 0) {
		uint64_t *ub = s->wk->slot->user_bytes[s->user_slot];
		__atomic_store_n(&ub[0], ub[0] + (s->bytes_up - up0), __ATOMIC_RELAXED);
		__atomic_store_n(&ub[1], ub[1] + (s->bytes_down - down0), __ATOMIC_RELAXED);
	}
}

void relay_take_back(struct session *s)
{
	/* Copy only: the sockets stay under the kernel relay's program, whose
	 * bytes wait in the sockets' own queues, which splice would skip. */
	s->splice = false;
	s->on_client = s->on_target = relay;
	s->timer.fn = on_idle_timeout;
	s->c_readable = s->t_readable = s->c_writable = s->t_writable = true;
	const uint32_t ev = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLPRI | EPOLLET;
	(void)loop_watch_mod(&s->wk->loop, &s->cw, ev);
	(void)loop_watch_mod(&s->wk->loop, &s->tw, ev);
	relay_touch_idle(s);
	relay(s);
}

void relay_enter(struct session *s, session_fn *fn)
{
	s->phase = PH_RELAY;
	s->on_client = fn;
	s->on_target = fn;
	s->timer.fn = on_idle_timeout;
	shm_gauge_add(s->wk->slot, G_CONN_RELAYING, 1);
	relay_touch_idle(s);
	fn(s);
}

void relay_begin(struct session *s)
{
	struct handshake *hs = s->hs;
	/* Encapsulated sessions cannot splice: they relay message by message. */
	if (gss_protected(s)) {
		gss_relay_begin(s);
		return;
	}
	/* Early data the client sent behind its request goes first. */
	if (hs->len) {
		s->up = worker_buf_get(s->wk);
		if (!s->up) {
			session_finalize(s);
			return;
		}
		memcpy(s->up->data, hs->in, hs->len);
		s->up->last = hs->len;
	}
	/* The dissector setting as it is now applies to this session for good
	 * (a SIGHUP changes it for new sessions only). */
	s->sniff_wanted = s->wk->cfg.dissectors;
	s->splice = s->wk->cfg.splice;
	if (hs->len)
		relay_sniff(s, SNIFF_UP, hs->in, hs->len);
	session_free_handshake(s);
	relay_enter(s, relay);
}
