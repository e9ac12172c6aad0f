#include "auth.h"

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

#define AUTH_MAX_PENDING 256

/* A yescrypt hash of a random password: verifying against it costs what a
 * real check costs and never succeeds. */
static const char dummy_hash[] = "$y$j9T$ibmdyuD239aYHDnsdDxKi.$lXr5ZXmpHSdr9cKVoyz2cPGqkNgyWqujm3WRvqSRDS6";

struct remembered {
	uint64_t id;
	uint64_t cred_gen;
	unsigned char mac[32];
};

struct auth_job {
	struct auth_job *next;
	auth_cb *cb;
	void *arg;
	int slot;
	uint64_t id, cred_gen;
	bool ok;
	unsigned char mac[32]; /* keyed hash of pass, to answer duplicates */
	char hash[PWHASH_MAX];
	char pass[256];
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
	struct auth_job *todo, **todo_tail; /* loop -> thread */
	struct auth_job *done;              /* thread -> loop */
	unsigned pending;
	unsigned char key[32];
	struct remembered cache[SHM_MAX_USERS];
};

static void mac_of(const struct auth *a, const char *pass, unsigned char out[32])
{
	unsigned int len = 32;
	HMAC(EVP_sha256(), a->key, sizeof a->key, (const unsigned char *)pass, strlen(pass), out, &len);
}

static void *helper(void *arg)
{
	struct auth *a = arg;
	pthread_mutex_lock(&a->mu);
	for (;;) {
		while (!a->todo && !a->quit)
			pthread_cond_wait(&a->cv, &a->mu);
		if (a->quit)
			break;
		struct auth_job *j = a->todo;
		a->todo = j->next;
		if (!a->todo)
			a->todo_tail = &a->todo;
		pthread_mutex_unlock(&a->mu);

		j->ok = pwhash_verify(j->pass, j->hash) && j->slot >= 0;

		pthread_mutex_lock(&a->mu);
		j->next = a->done;
		a->done = j;
		uint64_t one = 1;
		ssize_t w = write(a->efd, &one, sizeof one);
		(void)w;
	}
	pthread_mutex_unlock(&a->mu);
	return NULL;
}

static void free_job(struct auth_job *j)
{
	explicit_bzero(j->pass, sizeof j->pass);
	free(j);
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
		a->pending--;
		if (j->ok) {
			struct remembered *m = &a->cache[j->slot];
			m->id = j->id;
			m->cred_gen = j->cred_gen;
			memcpy(m->mac, j->mac, sizeof m->mac);
			/* A burst of logins of one user queues the same check many
			 * times before the first answer: those still queued are
			 * answered now, without hashing again. */
			pthread_mutex_lock(&a->mu);
			for (struct auth_job **pp = &a->todo; *pp;) {
				struct auth_job *k = *pp;
				if (k->slot == j->slot && k->id == j->id && k->cred_gen == j->cred_gen &&
				    CRYPTO_memcmp(k->mac, j->mac, sizeof k->mac) == 0) {
					*pp = k->next;
					k->ok = true;
					k->next = next;
					next = k;
				} else {
					pp = &k->next;
				}
			}
			a->todo_tail = &a->todo;
			while (*a->todo_tail)
				a->todo_tail = &(*a->todo_tail)->next;
			pthread_mutex_unlock(&a->mu);
		}
		if (j->cb)
			j->cb(j->arg, j->ok);
		free_job(j);
		j = next;
	}
}

int auth_new(struct loop *l, struct auth **out)
{
	struct auth *a = calloc(1, sizeof *a);
	if (!a)
		return -ENOMEM;
	a->loop = l;
	a->todo_tail = &a->todo;
	if (getrandom(a->key, sizeof a->key, 0) != (ssize_t)sizeof a->key) {
		free(a);
		return -EIO;
	}
	a->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (a->efd < 0) {
		int e = errno;
		free(a);
		return -e;
	}
	pthread_mutex_init(&a->mu, NULL);
	pthread_cond_init(&a->cv, NULL);
	int rc = loop_watch_add(l, &a->w, a->efd, EPOLLIN, on_done, a);
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
	struct auth_job *lists[2] = {a->todo, a->done};
	for (int i = 0; i < 2; i++)
		while (lists[i]) {
			struct auth_job *j = lists[i];
			lists[i] = j->next;
			free_job(j);
		}
	loop_watch_del(a->loop, &a->w);
	close(a->efd);
	/* After fork the mutex and condition variable may record a thread
	 * that does not exist here (destroying them could wait for it). */
	if (!forked) {
		pthread_mutex_destroy(&a->mu);
		pthread_cond_destroy(&a->cv);
	}
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

enum auth_result auth_check(struct auth *a, int slot, const struct shm_user *user, const char *pass,
                            auth_cb *cb, void *arg, struct auth_job **job)
{
	*job = NULL;
	if (user && slot >= 0 && slot < SHM_MAX_USERS) {
		const struct remembered *m = &a->cache[slot];
		if (m->id == user->id && m->cred_gen == user->cred_gen) {
			unsigned char mac[32];
			mac_of(a, pass, mac);
			if (CRYPTO_memcmp(mac, m->mac, sizeof mac) == 0)
				return AUTH_OK;
		}
	}
	if (a->pending >= AUTH_MAX_PENDING)
		return AUTH_BUSY;
	struct auth_job *j = calloc(1, sizeof *j);
	if (!j)
		return AUTH_BUSY;
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
	a->pending++;
	pthread_mutex_lock(&a->mu);
	*a->todo_tail = j;
	a->todo_tail = &j->next;
	pthread_cond_signal(&a->cv);
	pthread_mutex_unlock(&a->mu);
	*job = j;
	return AUTH_PENDING;
}

void auth_cancel(struct auth *a, struct auth_job *job)
{
	if (!job)
		return;
	job->cb = NULL;
	/* Not started yet: take it off the queue.  Otherwise the thread is
	 * working on it and it comes back, without a callback, through done. */
	pthread_mutex_lock(&a->mu);
	for (struct auth_job **pp = &a->todo; *pp; pp = &(*pp)->next) {
		if (*pp != job)
			continue;
		*pp = job->next;
		if (!*pp)
			a->todo_tail = pp;
		a->pending--;
		free_job(job);
		break;
	}
	pthread_mutex_unlock(&a->mu);
}
