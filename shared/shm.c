#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <unistd.h>

#include "names.h"

static int init_robust(pthread_mutex_t *m)
{
	pthread_mutexattr_t a;
	int rc = pthread_mutexattr_init(&a);
	if (rc)
		return -rc;
	rc = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
	if (!rc)
		rc = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
	if (!rc)
		rc = pthread_mutex_init(m, &a);
	pthread_mutexattr_destroy(&a);
	return -rc;
}

/* A new name "PREFIX-<16 hex digits>" that did not exist, created with
 * O_EXCL: a name planted in /dev/shm by someone else is never opened,
 * truncated or unlinked, only passed over. */
static int create_unique(const char *prefix, char *name, size_t namelen)
{
	for (int tries = 0; tries < 16; tries++) {
		uint64_t r;
		if (getrandom(&r, sizeof r, 0) != (ssize_t)sizeof r)
			return -errno;
		if ((size_t)snprintf(name, namelen, "%s-%016llx", prefix, (unsigned long long)r) >=
		    namelen)
			return -ENAMETOOLONG;
		int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd >= 0 || errno != EEXIST)
			return fd >= 0 ? fd : -errno;
	}
	return -EEXIST;
}

int shm_create(const char *prefix, char *name, size_t namelen, struct shm_segment **out)
{
	size_t size = sizeof(struct shm_segment);
	void *p;
	if (prefix) {
		int fd = create_unique(prefix, name, namelen);
		if (fd < 0)
			return fd;
		/* Allocated now: a full /dev/shm is an error here, not a SIGBUS
		 * at the first write. */
		int rc = posix_fallocate(fd, 0, (off_t)size);
		p = rc ? MAP_FAILED : mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (rc == 0 && p == MAP_FAILED)
			rc = errno;
		/* Mapped, the name has no more use: workers inherit the mapping
		 * across fork().  Nobody can open it by name from here on, and
		 * nothing is left behind if the master is killed. */
		shm_unlink(name);
		close(fd);
		if (rc)
			return -rc;
	} else {
		p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED)
			return -errno;
	}
	struct shm_segment *seg = p;
	memset(seg, 0, size);
	int rc = init_robust(&seg->settings_lock);
	if (!rc)
		rc = init_robust(&seg->users_lock);
	if (!rc)
		rc = init_robust(&seg->limits.claim_lock);
	if (rc) {
		munmap(p, size);
		return rc;
	}
	seg->next_user_id = 1;
	seg->size = (uint32_t)size;
	seg->layout_version = SHM_LAYOUT_VERSION;
	seg->master_pid = (int32_t)getpid();
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++)
		seg->slots[i].index = i;
	__atomic_store_n(&seg->magic, SHM_MAGIC, __ATOMIC_RELEASE);
	*out = seg;
	return 0;
}

int shm_check(const struct shm_segment *seg)
{
	if (__atomic_load_n(&seg->magic, __ATOMIC_ACQUIRE) != SHM_MAGIC)
		return -EBADMSG;
	if (seg->layout_version != SHM_LAYOUT_VERSION || seg->size != sizeof *seg)
		return -EPROTO;
	return 0;
}

void shm_destroy(struct shm_segment *seg)
{
	if (seg)
		munmap(seg, sizeof *seg);
}

int shm_lock(pthread_mutex_t *m)
{
	int rc = pthread_mutex_lock(m);
	if (rc == EOWNERDEAD) {
		/* The holder died mid-update.  Every update below writes whole
		 * records before publishing them, so the data is usable. */
		pthread_mutex_consistent(m);
		return 1;
	}
	return 0;
}

void shm_unlock(pthread_mutex_t *m)
{
	pthread_mutex_unlock(m);
}

void shm_settings_publish(struct shm_segment *seg, const struct settings *s)
{
	shm_lock(&seg->settings_lock);
	seg->settings = *s;
	seg->settings_gen++;
	shm_unlock(&seg->settings_lock);
}

uint64_t shm_settings_read(struct shm_segment *seg, struct settings *out)
{
	shm_lock(&seg->settings_lock);
	*out = seg->settings;
	uint64_t gen = seg->settings_gen;
	shm_unlock(&seg->settings_lock);
	return gen;
}

static uint32_t user_hash(const char *name)
{
	uint32_t h = 2166136261u; /* FNV-1a */
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		h = (h ^ *p) * 16777619u;
	return h;
}

static void index_add(struct shm_segment *seg, int slot)
{
	uint32_t h = user_hash(seg->users[slot].name);
	for (uint32_t n = 0; n < SHM_USER_INDEX; n++)
		if (!seg->user_index[(h + n) & (SHM_USER_INDEX - 1)]) {
			seg->user_index[(h + n) & (SHM_USER_INDEX - 1)] = (uint16_t)(slot + 1);
			return;
		}
}

/* After a deletion (rare: an administrator's act), the index is rebuilt
 * rather than patched. */
static void index_rebuild(struct shm_segment *seg)
{
	memset(seg->user_index, 0, sizeof seg->user_index);
	for (int i = 0; i < SHM_MAX_USERS; i++)
		if (seg->users[i].used)
			index_add(seg, i);
}

/* Bounded and checked: the index lives in memory every process can
 * write, and a damaged one must not hang or mislead the master. */
static int find_user(struct shm_segment *seg, const char *name)
{
	uint32_t h = user_hash(name);
	for (uint32_t n = 0; n < SHM_USER_INDEX; n++) {
		unsigned e = seg->user_index[(h + n) & (SHM_USER_INDEX - 1)];
		if (!e)
			return -ENOENT;
		if (e <= SHM_MAX_USERS && seg->users[e - 1].used &&
		    strcmp(seg->users[e - 1].name, name) == 0)
			return (int)e - 1;
	}
	return -ENOENT;
}

int shm_user_put(struct shm_segment *seg, const char *name, const char *hash, bool admin)
{
	size_t nlen = strlen(name);
	if (nlen == 0)
		return -EINVAL;
	if (nlen > SHM_USER_NAME_MAX)
		return -ENAMETOOLONG;
	/* The last barrier: a name the table holds is written back to the
	 * configuration file and into logs. */
	if (names_user_problem(name, nlen))
		return -EINVAL;
	if (strlen(hash) >= SHM_HASH_MAX)
		return -EINVAL;
	shm_lock(&seg->users_lock);
	int slot = find_user(seg, name);
	if (slot >= 0) {
		struct shm_user *u = &seg->users[slot];
		if (strcmp(u->hash, hash) != 0) {
			memcpy(u->hash, hash, strlen(hash) + 1);
			__atomic_store_n(&u->cred_gen, u->cred_gen + 1, __ATOMIC_RELAXED);
		}
		u->admin = admin;
	} else {
		for (slot = 0; slot < SHM_MAX_USERS; slot++)
			if (!seg->users[slot].used)
				break;
		if (slot == SHM_MAX_USERS) {
			shm_unlock(&seg->users_lock);
			return -ENOSPC;
		}
		struct shm_user *u = &seg->users[slot];
		memset(u, 0, sizeof *u);
		memcpy(u->name, name, nlen + 1);
		memcpy(u->hash, hash, strlen(hash) + 1);
		u->admin = admin;
		u->cred_gen = 1;
		/* The slot may have served a deleted user: count from here. */
		for (int d = 0; d < 2; d++)
			u->bytes_base[d] = shm_user_bytes_sum(seg, (uint32_t)slot, d);
		u->used = 1;
		index_add(seg, slot);
		__atomic_store_n(&u->id, seg->next_user_id++, __ATOMIC_RELAXED);
		__atomic_store_n(&seg->nusers, seg->nusers + 1, __ATOMIC_RELAXED);
	}
	seg->users_gen++;
	shm_unlock(&seg->users_lock);
	return slot;
}

int shm_user_del(struct shm_segment *seg, const char *name)
{
	shm_lock(&seg->users_lock);
	int slot = find_user(seg, name);
	if (slot >= 0) {
		seg->users[slot].used = 0;
		__atomic_store_n(&seg->users[slot].id, 0, __ATOMIC_RELAXED);
		memset(seg->users[slot].hash, 0, SHM_HASH_MAX);
		__atomic_store_n(&seg->nusers, seg->nusers - 1, __ATOMIC_RELAXED);
		index_rebuild(seg);
		seg->users_gen++;
	}
	shm_unlock(&seg->users_lock);
	return slot < 0 ? slot : 0;
}

int shm_user_get(struct shm_segment *seg, const char *name, struct shm_user *out)
{
	shm_lock(&seg->users_lock);
	int slot = find_user(seg, name);
	if (slot >= 0)
		*out = seg->users[slot];
	shm_unlock(&seg->users_lock);
	return slot;
}

bool shm_user_alive(struct shm_segment *seg, uint32_t slot, uint64_t id)
{
	if (slot >= SHM_MAX_USERS)
		return false;
	return __atomic_load_n(&seg->users[slot].id, __ATOMIC_RELAXED) == id;
}

bool shm_user_current(struct shm_segment *seg, uint32_t slot, uint64_t id, uint64_t cred_gen)
{
	return shm_user_alive(seg, slot, id) &&
	       __atomic_load_n(&seg->users[slot].cred_gen, __ATOMIC_RELAXED) == cred_gen;
}

uint32_t shm_user_count(struct shm_segment *seg)
{
	return __atomic_load_n(&seg->nusers, __ATOMIC_RELAXED);
}

uint64_t shm_counter_sum(const struct shm_segment *seg, enum shm_counter c)
{
	uint64_t n = __atomic_load_n(&seg->retired[c], __ATOMIC_RELAXED);
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++)
		n += __atomic_load_n(&seg->slots[i].counters[c], __ATOMIC_RELAXED);
	return n;
}

uint64_t shm_gauge_sum(const struct shm_segment *seg, enum shm_gauge g)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++)
		n += __atomic_load_n(&seg->slots[i].gauges[g], __ATOMIC_RELAXED);
	return n;
}

uint64_t shm_user_conns_sum(const struct shm_segment *seg, uint32_t user_slot)
{
	uint64_t n = 0;
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++)
		n += __atomic_load_n(&seg->slots[i].user_conns[user_slot], __ATOMIC_RELAXED);
	return n;
}

uint64_t shm_user_bytes_sum(const struct shm_segment *seg, uint32_t user_slot, int dir)
{
	uint64_t n = __atomic_load_n(&seg->retired_user_bytes[user_slot][dir], __ATOMIC_RELAXED);
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++)
		n += __atomic_load_n(&seg->slots[i].user_bytes[user_slot][dir], __ATOMIC_RELAXED);
	return n;
}

void shm_worker_retire(struct shm_segment *seg, uint32_t index)
{
	struct shm_worker_slot *w = &seg->slots[index];
	/* Its sessions died with it: they no longer count as open. */
	__atomic_sub_fetch(&seg->conns_now, __atomic_load_n(&w->gauges[G_CONN_CURRENT], __ATOMIC_RELAXED),
	                   __ATOMIC_RELAXED);
	for (uint32_t u = 0; u < SHM_MAX_USERS; u++)
		for (int d = 0; d < 2; d++) {
			seg->retired_user_bytes[u][d] += w->user_bytes[u][d];
			w->user_bytes[u][d] = 0;
		}
	for (int c = 0; c < M_COUNTERS; c++) {
		__atomic_fetch_add(&seg->retired[c], __atomic_load_n(&w->counters[c], __ATOMIC_RELAXED),
		                   __ATOMIC_RELAXED);
		__atomic_store_n(&w->counters[c], 0, __ATOMIC_RELAXED);
	}
	/* Its sessions' places in limit entries: the others may take them. */
	for (uint32_t e = 0; e < LIMITS_ENTRIES; e++) {
		uint32_t n = __atomic_load_n(&w->limit_held[e], __ATOMIC_RELAXED);
		if (n)
			limits_fold(limits_entry_at(&seg->limits, e), n);
		__atomic_store_n(&w->limit_held[e], 0, __ATOMIC_RELAXED);
	}
	memset(w->gauges, 0, sizeof w->gauges);
	memset(w->user_conns, 0, sizeof w->user_conns);
	w->pid = 0;
}
