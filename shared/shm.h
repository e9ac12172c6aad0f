/*
 * shm: the POSIX shared-memory segment shared by the master and its workers.
 *
 * Layout (fixed size, versioned): a header with a magic and a layout
 * version, the published settings with a generation number, the users
 * table, and one metrics slot per worker.  The settings and the users table
 * are guarded by process-shared robust mutexes: a process that dies while
 * holding one leaves it recoverable (EOWNERDEAD is made consistent), never
 * wedged.  Each metrics slot is written by its own worker only, without a
 * lock: one writer needs no read-modify-write, so an add is a relaxed
 * atomic load and a relaxed atomic store (no locked instruction); readers
 * load whole 64-bit values and sum the slots.
 *
 * The limits table (shared/limits.h) sits at the end: its places and
 * buckets are changed with compare-and-swap by any worker; a rule's entry
 * is claimed under the table's own robust mutex.
 *
 * The master creates and unlinks the segment; workers inherit the mapping
 * across fork().
 */
#ifndef SOCKS5D_SHM_H
#define SOCKS5D_SHM_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "limits.h"
#include "settings.h"

#define SHM_MAGIC 0x6473356b636f7353ull /* "Ssocks5d" little-endian */
#define SHM_LAYOUT_VERSION 13u
#define SHM_MAX_WORKERS SETTINGS_MAX_WORKERS
#define SHM_MAX_USERS 1024
#define SHM_USER_INDEX 2048 /* a power of two, at least twice SHM_MAX_USERS */
#define SHM_USER_NAME_MAX 255 /* RFC 1929 ULEN is one octet */
#define SHM_HASH_MAX 160
#define SHM_RULES_MAX 4096
#define SHM_RULES_TEXT_MAX (512 * 1024)

struct shm_user {
	uint32_t used;
	uint32_t admin;
	uint64_t id;       /* unique for the life of the segment; 0 = none */
	uint64_t cred_gen; /* changes whenever the password changes */
	uint64_t bytes_base[2]; /* per-user byte sums when the user was added */
	char name[SHM_USER_NAME_MAX + 1];
	char hash[SHM_HASH_MAX];
};

enum shm_counter {
	M_CONN_TOTAL,       /* sessions accepted (from a balancer: once its header names a client) */
	M_REQUESTS,         /* SOCKS requests answered */
	M_BYTES_UP,         /* client -> target */
	M_BYTES_DOWN,       /* target -> client */
	M_AUTH_FAIL,        /* RFC 1929 failures */
	M_NO_METHOD,        /* greeting answered 0xFF */
	M_HANDSHAKE_TIMEOUT,
	M_IDLE_TIMEOUT,
	M_ACCEPT_PAUSED,    /* EMFILE/ENFILE pauses */
	M_DNS_LOOKUPS,
	M_DNS_FAILURES,
	M_LOG_DROPPED,      /* absolute, copied from log_dropped_total() */
	M_CREDENTIALS,      /* credential records written by the dissectors */
	M_DNS_CACHE_HITS,   /* lookups answered from the DoH cache */
	M_DNS_COALESCED,    /* lookups that joined a query in flight */
	M_DOH_QUERIES,      /* DoH requests sent (A and AAAA count apart) */
	M_DOH_FAILURES,     /* DoH exchanges that failed (transport, HTTP, body) */
	M_DNS_FALLBACKS,    /* lookups resolved through classic DNS instead of DoH */
	M_DOH_OUTAGES,      /* DoH endpoint found unusable (one per outage) */
	M_DNS_TIMEOUTS,     /* lookups that ran out of time */
	M_BYTES_SPLICED,    /* relayed bytes sent out of a pipe (zero-copy), both ways */
	M_SOCKMAP_SESSIONS, /* sessions handed to the kernel relay (worker/sockmap.c) */
	M_SOCKMAP_FALLBACKS, /* workers whose kernel relay could not load */
	M_SOCKMAP_HANDBACKS, /* kernel-relayed sessions given back to the worker: bytes piled up */
	M_AUTH_DELAYED,     /* logins held by the failure back-off */
	M_AUTH_EVICTED,     /* queued password checks dropped for another source's */
	M_AUTH_BACKOFF_FULL, /* back-off records replaced while they still held failures */
	M_UNAUTH_REFUSED,   /* connections closed: too many unauthenticated from the source */
	/* Limits (shared/limits.h): requests answered 0x02 because a
	 * max-sessions was reached; times a relay direction stopped reading
	 * because its rate allowance was spent. */
	M_LIMIT_REFUSED,
	M_RATE_PAUSES,
	/* BIND (worker/bind.c) */
	M_BIND_STARTED,     /* listening sockets opened and announced in a first reply */
	M_BIND_ACCEPTED,    /* incoming connections accepted and announced in a second reply */
	M_BIND_TIMEOUTS,    /* binds whose peer did not come within bind-timeout */
	M_BIND_WRONG_PEER,  /* incoming connections closed: not from the expected address */
	/* Access rules (shared/rules.c). */
	M_CLIENTS_BLOCKED,  /* connections closed at accept by a client rule */
	M_RULE_BLOCKED,     /* requests answered 0x02 by a rule of the file */
	M_DEFAULT_BLOCKED,  /* requests answered 0x02 by the default policy */
	M_ADDRS_SKIPPED,    /* resolved or requested addresses not tried: blocked */
	/* UDP ASSOCIATE (worker/udp.c): datagrams relayed each way, and
	 * datagrams dropped, by reason. */
	M_UDP_DGRAMS_UP,      /* client -> remote, sent */
	M_UDP_DGRAMS_DOWN,    /* remote -> client, sent */
	M_UDP_DROP_SOURCE,    /* from another address or port than the association's client */
	M_UDP_DROP_FRAG,      /* FRAG not 0 (fragments are not reassembled) */
	M_UDP_DROP_MALFORMED, /* header short or unusable, truncated, or for port 0 */
	M_UDP_DROP_FILTER,    /* from a remote the client has not sent to (udp-filter) */
	M_UDP_DROP_LOOKUP,    /* waited for a name lookup that failed */
	M_UDP_DROP_QUEUE,     /* no room left among the datagrams waiting for lookups */
	M_UDP_DROP_SEND,      /* the send failed (buffer full, too big, no socket) */
	M_UDP_DROP_DENIED,    /* a destination the access decision refused */
	M_UDP_DROP_RATE,      /* over the user's rate limit (datagrams are not queued) */
	/* GSS-API (worker/gssapi.c): logins with a level granted, failures
	 * (01 FF sent, or the client's), and plaintext bytes wrapped for the
	 * client and unwrapped from it. */
	M_GSS_LOGINS,
	M_GSS_FAILURES,
	M_GSS_WRAPPED,
	M_GSS_UNWRAPPED,
	M_DNS_LAT_SUM_US,   /* the lookup latencies added up, microseconds (histogram sum) */
	M_DNS_LAT_0,        /* latency histogram, M_DNS_LAT_0 + bucket (SHM_DNS_LAT_BOUNDS_US) */
	M_DNS_LAT_END = M_DNS_LAT_0 + 12,
	M_REPLY_0 = M_DNS_LAT_END, /* M_REPLY_0 + code, codes 0..8 */
	M_REPLY_END = M_REPLY_0 + 9,
	/* CONNECT: from the first outbound attempt to the first connection
	 * established (worker/connect.c), successful connects only. */
	M_CONNECT_LAT_SUM_US = M_REPLY_END, /* microseconds (histogram sum) */
	M_CONNECT_LAT_0,    /* M_CONNECT_LAT_0 + bucket (SHM_CONNECT_LAT_BOUNDS_US) */
	M_CONNECT_LAT_END = M_CONNECT_LAT_0 + 12,
	/* Sessions that relayed (TCP or UDP): from accept to close. */
	M_SESSION_DUR_SUM_MS = M_CONNECT_LAT_END, /* milliseconds (histogram sum) */
	M_SESSION_DUR_0,    /* M_SESSION_DUR_0 + bucket (SHM_SESSION_DUR_BOUNDS_MS) */
	M_SESSION_DUR_END = M_SESSION_DUR_0 + 15,
	M_COUNTERS = M_SESSION_DUR_END,
};

enum shm_gauge {
	G_CONN_CURRENT,
	G_CONN_RELAYING,
	G_CONN_LIMITED, /* sessions holding a place in a limit entry */
	G_GAUGES,
};

struct shm_worker_slot {
	_Alignas(64) int32_t pid;
	uint32_t index;
	uint64_t started_ms;
	uint64_t counters[M_COUNTERS];
	uint64_t gauges[G_GAUGES];
	uint32_t user_conns[SHM_MAX_USERS]; /* current sessions per user slot */
	uint64_t user_bytes[SHM_MAX_USERS][2]; /* per user slot: up, down (since the slot's start) */
	uint32_t limit_held[LIMITS_ENTRIES];   /* places this worker holds per limit entry */
};

struct shm_segment {
	uint64_t magic;
	uint32_t layout_version;
	uint32_t size;
	int32_t master_pid;
	uint32_t nworkers;
	uint64_t worker_restarts;
	uint64_t started_ms;   /* the master's start, monotonic */
	uint64_t conns_now;    /* sessions open in all workers (atomic) */
	uint64_t conns_max;    /* the largest conns_now seen */
	uint32_t admin_sessions;

	pthread_mutex_t settings_lock;
	uint64_t settings_gen;
	struct settings settings;

	pthread_mutex_t users_lock;
	uint64_t users_gen; /* bumped on every change of the table */
	uint64_t next_user_id;
	uint32_t nusers;
	struct shm_user users[SHM_MAX_USERS];
	/* Names to slots (slot + 1, 0: empty), open addressing on a hash of
	 * the name: a lookup reads one or two slots whatever the table holds. */
	uint16_t user_index[SHM_USER_INDEX];

	/* Access rules: the rule lines of the configuration file (the other
	 * lines blanked, so that line numbers hold), published by the master
	 * with a generation; workers compile their own copy on CONFIG.  Hits
	 * per rule are atomic adds by any worker, cleared with each generation
	 * (shared/rules.c). */
	pthread_mutex_t rules_lock;
	uint64_t rules_gen;
	uint32_t rules_len;
	uint64_t rule_hits[SHM_RULES_MAX];
	char rules_text[SHM_RULES_TEXT_MAX];

	/* Historic counters of workers that have exited, folded in by the master. */
	uint64_t retired[M_COUNTERS];
	uint64_t retired_user_bytes[SHM_MAX_USERS][2];
	struct shm_worker_slot slots[SHM_MAX_WORKERS];

	/* Session and rate limits, shared by every worker (no lock but for
	 * claiming a rule's entry). */
	struct limits_area limits;
};

_Static_assert(LIMITS_MAX_USERS == SHM_MAX_USERS, "one user limit entry per user slot");

/* Create a POSIX shared-memory segment under the name PREFIX-<16 random
 * hex digits> (written to name; namelen >= strlen(prefix) + 18), created
 * exclusively (an existing name is never reused or removed: another
 * random one is tried), allocated, mapped, and unlinked at once: processes
 * forked afterwards share the mapping, and nothing else can open it.
 * prefix NULL: an anonymous shared mapping (tests). */
int shm_create(const char *prefix, char *name, size_t namelen, struct shm_segment **out);
/* Unmap. */
void shm_destroy(struct shm_segment *seg);
int shm_check(const struct shm_segment *seg);

/* Lock a robust process-shared mutex; a lock whose holder died is made
 * consistent and taken.  Returns 0, or 1 when the previous holder died. */
int shm_lock(pthread_mutex_t *m);
void shm_unlock(pthread_mutex_t *m);

void shm_settings_publish(struct shm_segment *seg, const struct settings *s);
uint64_t shm_settings_read(struct shm_segment *seg, struct settings *out);

/* Users.  Names are compared exactly.  put adds or updates (a new hash
 * bumps cred_gen) and returns the slot; del returns 0; errors are negative
 * errnos (-EINVAL empty name, -ENAMETOOLONG, -ENOSPC table full, -ENOENT). */
int shm_user_put(struct shm_segment *seg, const char *name, const char *hash, bool admin);
int shm_user_del(struct shm_segment *seg, const char *name);
/* Copy the user's record; returns its slot or -ENOENT. */
int shm_user_get(struct shm_segment *seg, const char *name, struct shm_user *out);
/* Is the user with this id still present (at this slot)? */
bool shm_user_alive(struct shm_segment *seg, uint32_t slot, uint64_t id);
/* ... and is its password still the one of credential generation cred_gen? */
bool shm_user_current(struct shm_segment *seg, uint32_t slot, uint64_t id, uint64_t cred_gen);
uint32_t shm_user_count(struct shm_segment *seg);

/* Metrics: the owner worker adds; readers sum. */
static inline void shm_count(struct shm_worker_slot *w, enum shm_counter c, uint64_t n)
{
	__atomic_store_n(&w->counters[c], __atomic_load_n(&w->counters[c], __ATOMIC_RELAXED) + n,
	                 __ATOMIC_RELAXED);
}
static inline void shm_gauge_add(struct shm_worker_slot *w, enum shm_gauge g, int64_t n)
{
	__atomic_store_n(&w->gauges[g], __atomic_load_n(&w->gauges[g], __ATOMIC_RELAXED) + (uint64_t)n,
	                 __ATOMIC_RELAXED);
}
/* Upper bounds (microseconds) of the lookup latency buckets; the last
 * bucket, M_DNS_LAT_END - 1, takes everything slower than the one before. */
#define SHM_DNS_LAT_BOUNDS_US                                                                      \
	{100, 300, 1000, 3000, 10000, 30000, 100000, 300000, 1000000, 3000000, 10000000, UINT64_MAX}
/* Upper bounds of the connect latency buckets (microseconds) and of the
 * session duration buckets (milliseconds); the last takes the rest. */
#define SHM_CONNECT_LAT_BOUNDS_US                                                                  \
	{100, 300, 1000, 3000, 10000, 30000, 100000, 300000, 1000000, 3000000, 10000000, UINT64_MAX}
#define SHM_SESSION_DUR_BOUNDS_MS                                                                  \
	{10, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 900000, 3600000,       \
	 UINT64_MAX}

_Static_assert(sizeof((const uint64_t[])SHM_CONNECT_LAT_BOUNDS_US) / sizeof(uint64_t) ==
                   M_CONNECT_LAT_END - M_CONNECT_LAT_0,
               "one connect latency counter per bucket");
_Static_assert(sizeof((const uint64_t[])SHM_SESSION_DUR_BOUNDS_MS) / sizeof(uint64_t) ==
                   M_SESSION_DUR_END - M_SESSION_DUR_0,
               "one session duration counter per bucket");

/* The bucket of v among n upper bounds (inclusive, as Prometheus' le):
 * the first bound >= v; the last bucket takes anything above the others. */
static inline unsigned shm_bucket(const uint64_t *bounds, unsigned n, uint64_t v)
{
	for (unsigned i = 0; i + 1 < n; i++)
		if (v <= bounds[i])
			return i;
	return n - 1;
}
/* One observation of a histogram kept in the owner's slot: its bucket
 * (counters first .. first + n - 1) and its sum. */
static inline void shm_observe(struct shm_worker_slot *w, enum shm_counter first,
                               const uint64_t *bounds, unsigned n, enum shm_counter sum, uint64_t v)
{
	shm_count(w, (enum shm_counter)(first + shm_bucket(bounds, n, v)), 1);
	shm_count(w, sum, v);
}
uint64_t shm_counter_sum(const struct shm_segment *seg, enum shm_counter c);
uint64_t shm_gauge_sum(const struct shm_segment *seg, enum shm_gauge g);
uint64_t shm_user_conns_sum(const struct shm_segment *seg, uint32_t user_slot);

/* A session opened or closed (any worker): keeps the global concurrency
 * gauge and its maximum with two atomic operations, nothing per byte. */
static inline void shm_conn_opened(struct shm_segment *seg)
{
	uint64_t now = __atomic_add_fetch(&seg->conns_now, 1, __ATOMIC_RELAXED);
	uint64_t max = __atomic_load_n(&seg->conns_max, __ATOMIC_RELAXED);
	while (now > max && !__atomic_compare_exchange_n(&seg->conns_max, &max, now, true,
	                                                 __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}
static inline void shm_conn_closed(struct shm_segment *seg)
{
	__atomic_sub_fetch(&seg->conns_now, 1, __ATOMIC_RELAXED);
}

/* Per-user bytes, from all workers (including those that exited). */
uint64_t shm_user_bytes_sum(const struct shm_segment *seg, uint32_t user_slot, int dir);

/* The master, after a worker exited: fold its counters into the retired
 * totals, clear its gauges so that nothing stays counted for it, and give
 * back the places it held in limit entries. */
void shm_worker_retire(struct shm_segment *seg, uint32_t index);

#endif
