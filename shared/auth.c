#include "auth.h"

#include <arpa/inet.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "../shared/log.h"
#include "../shared/pwhash.h"
#include "guard.h"

/* A login from a source whose checks fill their places waits this long
 * and tries again (until the handshake timeout ends it). */
#define AUTH_RETRY_MS 250
/* Warnings about floods: at most one of a kind this often. */
#define AUTH_WARN_MS 10000

/* A yescrypt hash of a random password: verifying against it costs what a
 * real check costs and never succeeds. */
static const char dummy_hash[] = "$y$j9T$ibmdyuD239aYHDnsdDxKi.$lXr5ZXmpHSdr9cKVoyz2cPGqkNgyWqujm3WRvqSRDS6";

struct remembered {
	uint64_t id;
	uint64_t cred_gen;
	unsigned char mac[32];
};

enum job_state { J_HELD, J_QUEUED, J_TAKEN };

struct auth_job {
	struct auth_job *next;
	struct auth *a;
	auth_cb *cb;
	void *arg;
	int slot;
	uint64_t id, cred_gen;
	enum job_state state; /* QUEUED -> TAKEN under the mutex */
	bool ok;
	bool evicted; /* dropped for room: answered as a failure, not counted */
	bool guarded; /* has a source: failures back off */
	bool reserved; /* counted in flight under its user key (guard_reserve) */
	bool clean;   /* its source had no failure on record */
	uint64_t h_src, h_user;
	struct guard_key src;
	struct loop_timer hold; /* J_HELD: until the back-off allows */
	unsigned char mac[32]; /* keyed hash of pass, to answer duplicates */
	char hash[PWHASH_MAX];
	char pass[256];
};

/* The queued checks of one source, served in turn with the others. */
struct auth_group {
	struct guard_key key;
	struct auth_job *head, **tail;
	unsigned n;
	bool used;
	bool clean; /* a source without failures: served before the others */
	struct auth_group *next; /* in the ring of groups with checks */
};

struct auth {
	struct loop *loop;
	struct loop_watch w;
	int efd;
	pthread_t thread;
	bool thread_started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool quit;
	/* loop -> thread, under mu: groups with checks, oldest turn first */
	struct auth_group *ring, *ring_tail;
	struct auth_group *clean_tail; /* clean groups are the ring's first ones */
	unsigned queued;
	struct auth_job *running; /* the check the thread is on */
	struct auth_group groups[AUTH_MAX_PENDING + 1];
	struct auth_job *done; /* thread -> loop */
	unsigned char key[32];
	struct remembered cache[SHM_MAX_USERS];

	/* Loop side only. */
	struct shm_worker_slot *metrics;
	struct loop_tlist hold_tl;
	struct guard_table *by_src, *by_user;
	uint64_t replaced_seen;
	struct guard_counts conns;
	int64_t last_full_warn, last_evict_warn, last_cap_warn;
};

static void count(struct auth *a, enum shm_counter c)
{
	if (a->metrics)
		shm_count(a->metrics, c, 1);
}

static void mac_of(const struct auth *a, const char *pass, unsigned char out[32])
{
	unsigned int len = 32;
	HMAC(EVP_sha256(), a->key, sizeof a->key, (const unsigned char *)pass, strlen(pass), out, &len);
}

/* ---- the fair queue (under mu) ------------------------------------------ */

static struct auth_group *group_find(struct auth *a, const struct guard_key *k)
{
	for (struct auth_group *g = a->ring; g; g = g->next)
		if (memcmp(g->key.b, k->b, sizeof k->b) == 0)
			return g;
	return NULL;
}

static void ring_remove(struct auth *a, struct auth_group *g)
{
	struct auth_group **pp = &a->ring, *prev = NULL;
	while (*pp != g) {
		prev = *pp;
		pp = &(*pp)->next;
	}
	*pp = g->next;
	if (a->ring_tail == g)
		a->ring_tail = prev;
	if (a->clean_tail == g)
		a->clean_tail = prev;
	g->next = NULL;
	g->used = false;
}

/* Clean groups go after the last clean one, the others at the end. */
static void ring_append(struct auth *a, struct auth_group *g)
{
	struct auth_group **pp = &a->ring;
	if (!g->clean)
		pp = a->ring_tail ? &a->ring_tail->next : &a->ring;
	else if (a->clean_tail)
		pp = &a->clean_tail->next;
	g->next = *pp;
	*pp = g;
	if (!g->next)
		a->ring_tail = g;
	if (g->clean)
		a->clean_tail = g;
}

/* Take *pp (a job of g) out of the queue. */
static void group_unlink(struct auth *a, struct auth_group *g, struct auth_job **pp)
{
	struct auth_job *j = *pp;
	*pp = j->next;
	if (g->tail == &j->next)
		g->tail = pp;
	j->next = NULL;
	g->n--;
	a->queued--;
	if (g->n == 0)
		ring_remove(a, g);
}

static struct auth_job *take_next(struct auth *a)
{
	struct auth_group *g = a->ring;
	struct auth_job *j = g->head;
	group_unlink(a, g, &g->head);
	if (g->used) {
		/* Its turn is over: to the back of the ring, behind the clean
		 * sources not served yet. */
		ring_remove(a, g);
		g->used = true;
		g->clean = false;
		ring_append(a, g);
	}
	j->state = J_TAKEN;
	a->running = j;
	return j;
}

/* Hand j back to the loop (under mu), checked or not. */
static void answer_later(struct auth *a, struct auth_job *j)
{
	j->state = J_TAKEN;
	j->next = a->done;
	a->done = j;
	uint64_t one = 1;
	ssize_t w = write(a->efd, &one, sizeof one);
	(void)w;
}

static void *helper(void *arg)
{
	struct auth *a = arg;
	pthread_mutex_lock(&a->mu);
	for (;;) {
		while (!a->ring && !a->quit)
			pthread_cond_wait(&a->cv, &a->mu);
		if (a->quit)
			break;
		struct auth_job *j = take_next(a);
		pthread_mutex_unlock(&a->mu);

		j->ok = pwhash_verify(j->pass, j->hash) && j->slot >= 0;

		pthread_mutex_lock(&a->mu);
		a->running = NULL;
		answer_later(a, j);
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

static bool same_check(const struct auth_job *j, const struct auth_job *k)
{
	return k->slot == j->slot && k->id == j->id && k->cred_gen == j->cred_gen &&
	       CRYPTO_memcmp(k->mac, j->mac, sizeof k->mac) == 0;
}

/* Is the same check already waiting or running (under mu)?  Then j costs
 * no hash: it is answered with that one (take_duplicates). */
static bool has_twin(const struct auth *a, const struct auth_group *g, const struct auth_job *j)
{
	if (a->running && same_check(j, a->running))
		return true;
	for (const struct auth_job *k = g ? g->head : NULL; k; k = k->next)
		if (same_check(j, k))
			return true;
	return false;
}

/* Queue j in its source's turn.  Full: a place is taken from the source
 * with the most waiting checks, if that leaves it no fewer than j's. */
static enum auth_result enqueue(struct auth *a, struct auth_job *j)
{
	bool evicted = false;
	pthread_mutex_lock(&a->mu);
	struct auth_group *g = group_find(a, &j->src);
	/* A burst of one user's logins from one place is one check. */
	bool twin = has_twin(a, g, j);
	if (!twin && g && g->n >= AUTH_MAX_PER_SOURCE) {
		pthread_mutex_unlock(&a->mu);
		return AUTH_BUSY;
	}
	if (!twin && a->queued >= AUTH_MAX_PENDING) {
		struct auth_group *big = NULL;
		for (struct auth_group *x = a->ring; x; x = x->next)
			if (!big || x->n > big->n)
				big = x;
		unsigned mine = g ? g->n : 0;
		if (!big || big == g || big->n < mine + 2) {
			pthread_mutex_unlock(&a->mu);
			return AUTH_BUSY;
		}
		struct auth_job **pp = &big->head;
		while ((*pp)->next)
			pp = &(*pp)->next;
		struct auth_job *victim = *pp;
		group_unlink(a, big, pp);
		victim->evicted = true;
		victim->ok = false;
		answer_later(a, victim);
		evicted = true;
	}
	if (!g) {
		for (size_t i = 0; i < sizeof a->groups / sizeof a->groups[0]; i++)
			if (!a->groups[i].used) {
				g = &a->groups[i];
				break;
			}
		if (!g) { /* only when twins went past the bound */
			pthread_mutex_unlock(&a->mu);
			return AUTH_BUSY;
		}
		g->key = j->src;
		g->head = NULL;
		g->tail = &g->head;
		g->n = 0;
		g->used = true;
		g->clean = j->clean;
		ring_append(a, g);
	}
	j->state = J_QUEUED;
	j->next = NULL;
	*g->tail = j;
	g->tail = &j->next;
	g->n++;
	a->queued++;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
	if (evicted) {
		count(a, M_AUTH_EVICTED);
		if (a->last_evict_warn + AUTH_WARN_MS <= a->loop->now) {
			log_warn("password checks queue full: dropping the newest checks of the busiest "
			         "sources");
			a->last_evict_warn = a->loop->now;
		}
	}
	return AUTH_PENDING;
}

/* ---- answers ------------------------------------------------------------ */

static void free_job(struct auth_job *j)
{
	if (j->reserved)
		guard_done(j->a->by_user, j->h_user, j->a->loop->now);
	explicit_bzero(j->pass, sizeof j->pass);
	free(j);
}

static void note_replaced(struct auth *a)
{
	uint64_t r = a->by_src->replaced + a->by_user->replaced;
	if (r == a->replaced_seen)
		return;
	if (a->metrics)
		shm_count(a->metrics, M_AUTH_BACKOFF_FULL, r - a->replaced_seen);
	a->replaced_seen = r;
	if (a->last_full_warn + AUTH_WARN_MS <= a->loop->now) {
		log_warn("login back-off table full: failures of the least failing keys forgotten");
		a->last_full_warn = a->loop->now;
	}
}

/* A source just failed: its waiting checks lose their precedence. */
static void demote(struct auth *a, const struct guard_key *src)
{
	pthread_mutex_lock(&a->mu);
	struct auth_group *g = group_find(a, src);
	if (g && g->clean) {
		ring_remove(a, g);
		g->used = true;
		g->clean = false;
		ring_append(a, g);
	}
	pthread_mutex_unlock(&a->mu);
}

/* The outcome of a check, for the back-off. */
static void judge(struct auth *a, const struct auth_job *j)
{
	if (!j->guarded || j->evicted)
		return;
	/* A success forgets nothing: the user's own logins must not reopen
	 * the door for a guesser of the same network (failures decay). */
	if (j->ok)
		return;
	guard_fail(a->by_src, j->h_src, a->loop->now);
	guard_fail(a->by_user, j->h_user, a->loop->now);
	demote(a, &j->src);
	note_replaced(a);
}

static void remember(struct auth *a, const struct auth_job *j)
{
	struct remembered *m = &a->cache[j->slot];
	m->id = j->id;
	m->cred_gen = j->cred_gen;
	memcpy(m->mac, j->mac, sizeof m->mac);
}

/* A burst of logins of one user queues the same check many times before
 * the first answer: those still queued are answered with it (success or
 * failure: the same password against the same hash), without hashing
 * again.  Returns them in a list (under mu). */
static struct auth_job *take_duplicates(struct auth *a, const struct auth_job *j,
                                        struct auth_job *list)
{
	for (struct auth_group *g = a->ring, *gn; g; g = gn) {
		gn = g->next; /* g may leave the ring */
		for (struct auth_job **pp = &g->head; *pp;) {
			struct auth_job *k = *pp;
			if (same_check(j, k)) {
				bool last = g->n == 1;
				group_unlink(a, g, pp);
				k->state = J_TAKEN;
				k->ok = j->ok;
				k->next = list;
				list = k;
				if (last)
					break;
			} else {
				pp = &k->next;
			}
		}
	}
	return list;
}

static void on_done(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	(void)events;
	struct auth *a = w->data;
	uint64_t n;
	ssize_t r = read(a->efd, &n, sizeof n);
	(void)r;
	pthread_mutex_lock(&a->mu);
	struct auth_job *j = a->done;
	a->done = NULL;
	pthread_mutex_unlock(&a->mu);
	while (j) {
		struct auth_job *next = j->next;
		if (j->ok)
			remember(a, j);
		if (!j->evicted) {
			pthread_mutex_lock(&a->mu);
			next = take_duplicates(a, j, next);
			pthread_mutex_unlock(&a->mu);
		}
		judge(a, j);
		if (j->cb)
			j->cb(j->arg, j->ok);
		free_job(j);
		j = next;
	}
}

/* ---- checks ------------------------------------------------------------- */

static bool remembered(struct auth *a, int slot, const struct shm_user *user, const unsigned char mac[32])
{
	if (!user || slot < 0 || slot >= SHM_MAX_USERS)
		return false;
	const struct remembered *m = &a->cache[slot];
	return m->id == user->id && m->cred_gen == user->cred_gen &&
	       CRYPTO_memcmp(mac, m->mac, 32) == 0;
}

/* Queue the check; under the user's key, one check starts per back-off
 * period, whatever the number of addresses of the network asking. */
static enum auth_result start_check(struct auth *a, struct auth_job *j)
{
	int64_t now = a->loop->now;
	if (j->guarded) {
		int64_t at = guard_hold_until(a->by_user, j->h_user, now);
		if (at > now) {
			j->state = J_HELD;
			loop_timer_start_at(&a->hold_tl, &j->hold, at);
			return AUTH_PENDING;
		}
	}
	enum auth_result r = enqueue(a, j);
	if (r == AUTH_PENDING && j->guarded && !j->reserved) {
		guard_reserve(a->by_user, j->h_user, now);
		j->reserved = true;
	}
	return r;
}

static enum auth_result run(struct auth *a, struct auth_job *j)
{
	if (j->slot >= 0 && j->slot < SHM_MAX_USERS) {
		const struct remembered *m = &a->cache[j->slot];
		if (m->id == j->id && m->cred_gen == j->cred_gen &&
		    CRYPTO_memcmp(j->mac, m->mac, sizeof m->mac) == 0) {
			j->ok = true;
			judge(a, j);
			return AUTH_OK;
		}
	}
	return start_check(a, j);
}

/* The back-off is over: check now; the answer goes to the callback. */
static void on_hold_over(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct auth_job *j = t->data;
	struct auth *a = j->a;
	enum auth_result r = run(a, j);
	if (r == AUTH_PENDING)
		return;
	if (r == AUTH_BUSY) {
		loop_timer_start_at(&a->hold_tl, &j->hold, a->loop->now + AUTH_RETRY_MS);
		return;
	}
	if (j->cb)
		j->cb(j->arg, r == AUTH_OK);
	free_job(j);
}

static struct auth_job *job_new(struct auth *a, int slot, const struct shm_user *user,
                                const char *pass, auth_cb *cb, void *arg)
{
	struct auth_job *j = calloc(1, sizeof *j);
	if (!j)
		return NULL;
	j->a = a;
	j->cb = cb;
	j->arg = arg;
	j->slot = user ? slot : -1;
	if (user) {
		j->id = user->id;
		j->cred_gen = user->cred_gen;
		memcpy(j->hash, user->hash, sizeof j->hash);
	} else {
		memcpy(j->hash, dummy_hash, sizeof dummy_hash);
	}
	size_t plen = strlen(pass);
	if (plen >= sizeof j->pass)
		plen = sizeof j->pass - 1;
	memcpy(j->pass, pass, plen);
	mac_of(a, j->pass, j->mac);
	loop_timer_init(&j->hold, on_hold_over, j);
	return j;
}

static enum auth_result check(struct auth *a, const struct sockaddr_storage *peer, const char *name,
                              int slot, const struct shm_user *user, const char *pass, auth_cb *cb,
                              void *arg, struct auth_job **job)
{
	*job = NULL;
	int64_t now = a->loop->now, at = now, at_user = now;
	uint64_t h_src = 0, h_user = 0;
	struct guard_key src = {0};
	if (peer) {
		struct guard_key net;
		guard_source_key(peer, &src);
		guard_network_key(peer, &net);
		h_src = guard_hash(a->by_src, &src, NULL);
		h_user = guard_hash(a->by_user, &net, name);
		/* The source's own attempts are spaced (it pays for its
		 * connections in parallel); the user's key, which others in the
		 * network reach too, only holds until its last failure's
		 * back-off is over. */
		at = guard_admit(a->by_src, h_src, now);
		at_user = guard_hold_until(a->by_user, h_user, now);
		/* Checks queue fairly per network, not per address: addresses
		 * of one network are cheap to have many of. */
		src = net;
	}
	if (at <= now) {
		/* The common case costs one HMAC and no allocation. */
		unsigned char mac[32];
		mac_of(a, pass, mac);
		bool hit = remembered(a, slot, user, mac);
		explicit_bzero(mac, sizeof mac);
		/* A password that is right needs no hold of the user's key: a
		 * flood of wrong ones for the name must not keep its owner out.
		 * The source's hold above still applies to a guesser. */
		if (hit)
			return AUTH_OK;
	}
	if (at_user > at)
		at = at_user;
	struct auth_job *j = job_new(a, slot, user, pass, cb, arg);
	if (!j)
		return AUTH_BUSY;
	j->src = src;
	j->guarded = peer != NULL;
	j->clean = !peer || guard_fails(a->by_src, h_src, now) == 0;
	j->h_src = h_src;
	j->h_user = h_user;
	if (at > now) {
		j->state = J_HELD;
		count(a, M_AUTH_DELAYED);
		loop_timer_start_at(&a->hold_tl, &j->hold, at);
		*job = j;
		return AUTH_PENDING;
	}
	enum auth_result r = start_check(a, j);
	if (r == AUTH_BUSY && peer) {
		/* Rather than closing (and being called again at once), the
		 * session waits for a place. */
		j->state = J_HELD;
		loop_timer_start_at(&a->hold_tl, &j->hold, now + AUTH_RETRY_MS);
		r = AUTH_PENDING;
	}
	if (r != AUTH_PENDING) {
		free_job(j);
		return r;
	}
	*job = j;
	return AUTH_PENDING;
}

enum auth_result auth_check(struct auth *a, int slot, const struct shm_user *user, const char *pass,
                            auth_cb *cb, void *arg, struct auth_job **job)
{
	return check(a, NULL, NULL, slot, user, pass, cb, arg, job);
}

enum auth_result auth_check_from(struct auth *a, const struct sockaddr_storage *peer,
                                 const char *name, int slot, const struct shm_user *user,
                                 const char *pass, auth_cb *cb, void *arg, struct auth_job **job)
{
	return check(a, peer, name, slot, user, pass, cb, arg, job);
}

void auth_cancel(struct auth *a, struct auth_job *job)
{
	if (!job)
		return;
	job->cb = NULL;
	if (job->state == J_HELD) {
		loop_timer_stop(&job->hold);
		free_job(job);
		return;
	}
	/* Still queued: take it off.  Otherwise the thread is working on it
	 * and it comes back, without a callback, through done. */
	pthread_mutex_lock(&a->mu);
	if (job->state == J_QUEUED) {
		struct auth_group *g = group_find(a, &job->src);
		struct auth_job **pp = &g->head;
		while (*pp != job)
			pp = &(*pp)->next;
		group_unlink(a, g, pp);
		free_job(job);
	}
	pthread_mutex_unlock(&a->mu);
}

/* ---- sessions not yet authenticated -------------------------------------- */

bool auth_conn_open(struct auth *a, const struct sockaddr_storage *peer, uint32_t cap)
{
	struct guard_key k;
	guard_source_key(peer, &k);
	if (guard_enter(&a->conns, &k, cap))
		return true;
	count(a, M_UNAUTH_REFUSED);
	if (a->last_cap_warn + AUTH_WARN_MS <= a->loop->now) {
		char text[INET6_ADDRSTRLEN] = "?";
		if (peer->ss_family == AF_INET)
			inet_ntop(AF_INET, &((const struct sockaddr_in *)peer)->sin_addr, text, sizeof text);
		else if (peer->ss_family == AF_INET6)
			inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)peer)->sin6_addr, text,
			          sizeof text);
		log_warn("%u sessions from %s not authenticated yet (max-unauth-per-source): "
		         "closing new ones",
		         guard_count(&a->conns, &k), text);
		a->last_cap_warn = a->loop->now;
	}
	return false;
}

void auth_conn_done(struct auth *a, const struct sockaddr_storage *peer)
{
	struct guard_key k;
	guard_source_key(peer, &k);
	guard_leave(&a->conns, &k);
}

/* ---- life cycle ---------------------------------------------------------- */

int auth_new(struct loop *l, struct auth **out)
{
	struct auth *a = calloc(1, sizeof *a);
	if (!a)
		return -ENOMEM;
	a->loop = l;
	a->efd = -1;
	uint8_t seed[48];
	a->by_src = malloc(sizeof *a->by_src);
	a->by_user = malloc(sizeof *a->by_user);
	if (!a->by_src || !a->by_user ||
	    getrandom(a->key, sizeof a->key, 0) != (ssize_t)sizeof a->key ||
	    getrandom(seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
		free(a->by_src);
		free(a->by_user);
		free(a);
		return -ENOMEM;
	}
	guard_table_init(a->by_src, seed);
	guard_table_init(a->by_user, seed + 16);
	guard_counts_init(&a->conns, seed + 32);
	explicit_bzero(seed, sizeof seed);
	loop_tlist_init(l, &a->hold_tl, 0);
	a->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	int rc = a->efd < 0 ? -errno : loop_watch_add(l, &a->w, a->efd, EPOLLIN, on_done, a);
	if (rc == 0) {
		rc = -pthread_create(&a->thread, NULL, helper, a);
		a->thread_started = rc == 0;
	}
	if (rc) {
		auth_free(a);
		return rc;
	}
	*out = a;
	return 0;
}

void auth_set_metrics(struct auth *a, struct shm_worker_slot *slot)
{
	a->metrics = slot;
}

void auth_pause(struct auth *a)
{
	if (!a || !a->thread_started)
		return;
	pthread_mutex_lock(&a->mu);
	a->quit = true;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
	pthread_join(a->thread, NULL);
	a->thread_started = false;
	a->quit = false;
}

int auth_resume(struct auth *a)
{
	if (!a || a->thread_started)
		return 0;
	int rc = pthread_create(&a->thread, NULL, helper, a);
	a->thread_started = rc == 0;
	return -rc;
}

static void release(struct auth *a, bool forked)
{
	if (a->thread_started && !forked) {
		pthread_mutex_lock(&a->mu);
		a->quit = true;
		pthread_cond_signal(&a->cv);
		pthread_mutex_unlock(&a->mu);
		pthread_join(a->thread, NULL);
	}
	while (a->ring) {
		struct auth_group *g = a->ring;
		struct auth_job *j = g->head;
		group_unlink(a, g, &g->head);
		free_job(j);
	}
	while (a->done) {
		struct auth_job *j = a->done;
		a->done = j->next;
		free_job(j);
	}
	/* Held checks belong to sessions, which cancel them before this. */
	while (a->hold_tl.head.next != &a->hold_tl.head) {
		struct loop_timer *t = (struct loop_timer *)a->hold_tl.head.next;
		struct auth_job *j = t->data;
		loop_timer_stop(t);
		free_job(j);
	}
	loop_tlist_detach(a->loop, &a->hold_tl);
	if (a->efd >= 0) {
		loop_watch_del(a->loop, &a->w);
		close(a->efd);
	}
	/* After fork the mutex and condition variable may record a thread
	 * that does not exist here (destroying them could wait for it). */
	if (!forked) {
		pthread_mutex_destroy(&a->mu);
		pthread_cond_destroy(&a->cv);
	}
	guard_counts_free(&a->conns);
	free(a->by_src);
	free(a->by_user);
	explicit_bzero(a, sizeof *a);
	free(a);
}

void auth_free(struct auth *a)
{
	if (a)
		release(a, false);
}

void auth_forget(struct auth *a)
{
	if (a)
		release(a, true);
}
