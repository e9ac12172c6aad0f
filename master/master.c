#include "master.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../admin/pipo.h"
#include "../shared/addr.h"
#include "../shared/clock.h"
#include "../shared/ctrl.h"
#include "../shared/log.h"
#include "../shared/rules.h"
#include "../worker/gssapi.h"
#include "../worker/sockmap.h"
#include "../worker/worker.h"
#include "admin.h"
#include "metrics.h"
#include "privs.h"
#include "sdnotify.h"

#define LISTEN_BACKLOG 4096
/* A worker that dies sooner than this after its start counts as a crash loop. */
#define CRASH_WINDOW_MS 5000
#define BACKOFF_MAX_MS 30000
/* How long after the grace period the master waits before killing workers. */
#define KILL_AFTER_GRACE_MS 3000
/* Until the first worker serves, how often the master looks. */
#define READY_POLL_MS 20
/* Then, how often it looks whether the count of serving workers changed. */
#define STATUS_POLL_MS 1000

struct wslot {
	pid_t pid;
	int ctrl_fd;
	struct loop_watch ctrl_w;
	bool wanted;
	unsigned quick_deaths;
	int64_t started;
	struct loop_timer respawn;
	struct master *m;
};

struct master {
	struct loop loop;
	const struct options *opts;
	struct settings cfg;
	struct shm_segment *seg;
	bool dropped; /* running as run-as: workers give up every capability */
	struct conf_identity conf_id; /* the configuration file as found at start */
	bool conf_id_known;
	int sig_fd;
	struct loop_watch sig_w;
	struct loop_watch log_w[2];
	/* Listening sockets, as opened at the start (a change of the addresses
	 * or of the accept strategy applies at the next start).  Exclusive: row
	 * 0, one socket per address, shared by every worker.  Reuseport: row i
	 * holds worker i's SO_REUSEPORT sockets, kept open across its respawns
	 * and closed when the worker is no longer wanted. */
	uint8_t accept_mode; /* enum accept_mode */
	uint16_t lport;
	size_t naddr;
	struct {
		char addr[SETTINGS_ADDR_MAX];
		bool dual;
	} addrs[SETTINGS_MAX_LISTEN + 1];
	int listen_fds[SHM_MAX_WORKERS][SETTINGS_MAX_LISTEN + 1];
	struct wslot workers[SHM_MAX_WORKERS];
	struct loop_tlist misc_tl;
	struct loop_timer kill_timer;
	struct admin *admin;
	struct metrics *metrics; /* the Prometheus endpoint, or NULL */
	struct user_list file_users; /* the users the configuration file holds */
	struct limit_list limits;    /* the file's limit lines */
	uint8_t *ctrl_buf;           /* one worker answer */
	struct rules *rules;         /* the published rules, compiled (listing, rule test) */
	bool draining;
	/* The service manager ($NOTIFY_SOCKET): READY=1 once a worker serves,
	 * WATCHDOG=1 every half period while one does. */
	struct sdnotify sd;
	struct loop_timer sd_timer;
	bool sd_ready;
	uint32_t sd_serving; /* the count last put in STATUS= */
	/* sockmap = yes at start: each worker slot's BPF program and maps,
	 * loaded before root is given up (a worker may not load them). */
	struct relay_bpf *kits[SHM_MAX_WORKERS];
};

/* ---- listeners ---------------------------------------------------------- */

static const char *const accept_names[] = {"exclusive", "reuseport"};

static bool reuseport(const struct master *m)
{
	return m->accept_mode == ACCEPT_REUSEPORT;
}

/* The row of listening sockets that worker i watches. */
static size_t row_of(const struct master *m, uint32_t i)
{
	return reuseport(m) ? i : 0;
}

/* A bound socket on addr:port; listening unless probe.  A probe is bound
 * without SO_REUSEPORT and closed at once: it fails with EADDRINUSE when any
 * socket holds the port, so that a reuseport start does not silently join
 * the SO_REUSEPORT group of another process (of the same user). */
static int open_socket(const char *addr, uint16_t port, bool dual, bool rp, bool probe)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (addr_parse(addr, port, &ss, &len) < 0)
		return -EINVAL;
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	int one = 1, v6only = dual ? 0 : 1;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (ss.ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only);
	if ((rp && !probe && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) ||
	    bind(fd, (struct sockaddr *)&ss, len) < 0 || (!probe && listen(fd, LISTEN_BACKLOG) < 0)) {
		int e = errno;
		close(fd);
		return -e;
	}
	if (probe) {
		close(fd);
		return 0;
	}
	return fd;
}

static void close_row(struct master *m, size_t row)
{
	for (size_t a = 0; a < SETTINGS_MAX_LISTEN + 1; a++) {
		if (m->listen_fds[row][a] >= 0)
			close(m->listen_fds[row][a]);
		m->listen_fds[row][a] = -1;
	}
}

/* Open a row's sockets, one per address, unless it is open.  On failure
 * none stays open and *failed is the address that failed. */
static int open_row(struct master *m, size_t row, size_t *failed)
{
	if (m->naddr == 0 || m->listen_fds[row][0] >= 0)
		return 0;
	for (size_t a = 0; a < m->naddr; a++) {
		int fd = open_socket(m->addrs[a].addr, m->lport, m->addrs[a].dual, reuseport(m), false);
		if (fd < 0) {
			close_row(m, row);
			*failed = a;
			return fd;
		}
		m->listen_fds[row][a] = fd;
	}
	return 0;
}

/* Every address free (reuseport only), then row 0. */
static int open_first_row(struct master *m, size_t *failed)
{
	for (size_t a = 0; reuseport(m) && a < m->naddr; a++) {
		int rc = open_socket(m->addrs[a].addr, m->lport, m->addrs[a].dual, true, true);
		if (rc < 0) {
			*failed = a;
			return rc;
		}
	}
	return open_row(m, 0, failed);
}

/* At the start, before any worker: row 0 (exclusive), or one row per worker. */
static int open_listeners(struct master *m, uint32_t nworkers)
{
	const struct settings *s = &m->cfg;
	m->accept_mode = s->accept;
	m->lport = s->port;
	bool dflt = s->nlisten == 0;
	if (dflt) {
		m->naddr = 1;
		snprintf(m->addrs[0].addr, sizeof m->addrs[0].addr, "::");
		m->addrs[0].dual = true;
	} else {
		m->naddr = s->nlisten;
		for (uint32_t i = 0; i < s->nlisten; i++) {
			snprintf(m->addrs[i].addr, sizeof m->addrs[i].addr, "%s", s->listen[i]);
			m->addrs[i].dual = false;
		}
	}
	size_t failed = 0;
	int rc = open_first_row(m, &failed);
	if (rc == -EAFNOSUPPORT && dflt) {
		snprintf(m->addrs[0].addr, sizeof m->addrs[0].addr, "0.0.0.0");
		m->addrs[0].dual = false;
		rc = open_first_row(m, &failed);
	}
	for (uint32_t i = 1; rc == 0 && reuseport(m) && i < nworkers; i++)
		rc = open_row(m, i, &failed);
	if (rc < 0) {
		if (dflt)
			log_error("cannot listen on port %u: %s", m->lport, strerror(-rc));
		else
			log_error("cannot listen on %s port %u: %s", m->addrs[failed].addr, m->lport,
			          strerror(-rc));
		return rc;
	}
	for (size_t a = 0; a < m->naddr; a++)
		log_info("listening on %s port %u%s%s", m->addrs[a].addr, m->lport,
		         m->addrs[a].dual ? " (IPv4 and IPv6)" : "",
		         reuseport(m) ? " (one SO_REUSEPORT socket per worker)" : "");
	return 0;
}

static void close_listeners(struct master *m)
{
	for (size_t r = 0; r < SHM_MAX_WORKERS; r++)
		close_row(m, r);
}

/* ---- users and settings ------------------------------------------------- */

/* Make the users table hold exactly `users`; returns the number of errors. */
static int sync_users(struct master *m, const struct user_list *users)
{
	int errors = 0;
	for (uint32_t i = 0; i < SHM_MAX_USERS; i++) {
		const struct shm_user *u = &m->seg->users[i];
		if (!u->used)
			continue;
		bool keep = false;
		for (size_t j = 0; j < users->n && !keep; j++)
			keep = strcmp(users->v[j].name, u->name) == 0;
		if (!keep) {
			char name[SHM_USER_NAME_MAX + 1];
			memcpy(name, u->name, sizeof name);
			shm_user_del(m->seg, name);
			char shown[4 * SHM_USER_NAME_MAX + 1];
			log_escape(shown, sizeof shown, (const uint8_t *)name, strlen(name));
			log_info("user '%s' removed", shown);
		}
	}
	for (size_t j = 0; j < users->n; j++) {
		const struct user_spec *u = &users->v[j];
		int rc = shm_user_put(m->seg, u->name, u->hash, u->admin);
		if (rc < 0) {
			char shown[4 * SHM_USER_NAME_MAX + 1];
			log_escape(shown, sizeof shown, (const uint8_t *)u->name, strlen(u->name));
			log_error("cannot add user '%s': %s", shown,
			          rc == -ENOSPC ? "the users table is full" : strerror(-rc));
			errors++;
		}
	}
	return errors;
}

/* Give every user slot its limit: the user's own line, else "*", else
 * none.  Sessions keep the places they hold; a rate changes at their next
 * refill. */
static void apply_limits(struct master *m)
{
	for (uint32_t i = 0; i < SHM_MAX_USERS; i++) {
		const struct shm_user *u = &m->seg->users[i];
		limits_set(&m->seg->limits.user[i], u->used ? limit_list_find(&m->limits, u->name) : NULL);
	}
}

/* The limit lines of the configuration file (none without one). */
static int load_limits(struct master *m, struct limit_list *out)
{
	*out = (struct limit_list){0};
	return m->opts->config_path ? conffile_load_limits(m->opts->config_path, out) : 0;
}

static void notify_workers(struct master *m, enum ctrl_type type)
{
	struct ctrl_msg msg = {.type = type};
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++) {
		struct wslot *w = &m->workers[i];
		if (w->pid > 0 && w->ctrl_fd >= 0 &&
		    send(w->ctrl_fd, &msg, sizeof msg, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
			log_warn("cannot notify worker %u: %s", i, strerror(errno));
	}
}

/* ---- workers ------------------------------------------------------------ */

static void spawn(struct master *m, uint32_t i);
static void sd_worker_died(struct master *m);
static void teardown(struct master *m, bool in_child);

static void on_worker_ctrl(struct loop *l, struct loop_watch *lw, uint32_t events)
{
	(void)l;
	(void)events;
	struct wslot *w = lw->data;
	struct master *m = w->m;
	size_t cap = sizeof(struct ctrl_msg) + CTRL_SESSIONS_MAX * sizeof(struct ctrl_session);
	for (int i = 0; i < 64; i++) {
		ssize_t n = recv(w->ctrl_fd, m->ctrl_buf, cap, MSG_DONTWAIT);
		if (n <= 0)
			return; /* EOF: the worker is gone, SIGCHLD tells the rest */
		if (m->admin)
			admin_worker_msg(m->admin, (uint32_t)(w - m->workers), m->ctrl_buf, (size_t)n);
	}
}

static void on_respawn(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct wslot *w = t->data;
	if (!w->m->draining && w->wanted && w->pid == 0)
		spawn(w->m, (uint32_t)(w - w->m->workers));
}

/* The forked child: drop what belongs to the master, run the worker, and
 * leave from here.  A worker never returns into master code: spawn() is
 * called from admin requests (a reload raising the worker count), timers
 * and signal handling, whose callers hold master state the child has just
 * released. */
static _Noreturn void run_worker(struct master *m, uint32_t i, size_t row, int ctrl_fd)
{
	log_after_fork();
	/* The epoll instance is shared with the master: close it before
	 * anything below deletes a watch, which would delete the master's
	 * registration. */
	close(m->loop.epfd);
	m->loop.epfd = -1;
	admin_forget(m->admin);
	m->admin = NULL;
	metrics_forget(m->metrics);
	m->metrics = NULL;
	for (uint32_t j = 0; j < SHM_MAX_WORKERS; j++) {
		if (m->workers[j].ctrl_fd >= 0)
			close(m->workers[j].ctrl_fd);
		m->workers[j].ctrl_fd = -1;
	}
	close(m->sig_fd);
	m->sig_fd = -1;
	sdnotify_close(&m->sd);
	loop_timer_stop(&m->sd_timer);
	/* Reuseport: the other workers' sockets are not ours to hold (a worker
	 * that is drained must not stay in its group through us). */
	for (size_t r = 0; r < SHM_MAX_WORKERS; r++)
		if (r != row)
			close_row(m, r);
	/* Only the master binds: a worker of a switched master, or of one
	 * started unprivileged with capabilities (systemd's
	 * AmbientCapabilities=), keeps none: the kernel relay is loaded
	 * before that. */
	sockmap_at_fork(m->kits, SHM_MAX_WORKERS, i, m->cfg.sockmap);
	if ((m->dropped || geteuid() != 0) && privs_drop_all_caps() < 0) {
		log_error("worker %u: cannot give up its capabilities: %s", i, strerror(errno));
		exit(EXIT_OSERR);
	}
	struct worker_args a = {
	    .index = i,
	    .seg = m->seg,
	    .ctrl_fd = ctrl_fd,
	    .listen_fds = m->listen_fds[row],
	    .nlisten = m->naddr,
	    .exclusive = !reuseport(m),
	};
	int status = worker_main(&a);
	/* Closed by the worker: forget them without closing. */
	for (size_t k = 0; k < SETTINGS_MAX_LISTEN + 1; k++)
		m->listen_fds[row][k] = -1;
	teardown(m, true);
	free(m);
	log_shutdown(2000);
	exit(status);
}

static void spawn(struct master *m, uint32_t i)
{
	struct wslot *w = &m->workers[i];
	size_t row = row_of(m, i), failed = 0;
	int rc = open_row(m, row, &failed); /* reuseport: a worker added by a reload */
	if (rc < 0) {
		log_error("worker %u: cannot listen on %s port %u: %s; retrying in 1 s", i,
		          m->addrs[failed].addr, m->lport, strerror(-rc));
		loop_timer_start_at(&m->misc_tl, &w->respawn, m->loop.now + 1000);
		return;
	}
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
		log_error("worker %u: socketpair: %s", i, strerror(errno));
		loop_timer_start_at(&m->misc_tl, &w->respawn, m->loop.now + 1000);
		return;
	}
	(void)log_flush();
	admin_before_fork(m->admin);
	pid_t pid = fork();
	if (pid != 0)
		admin_after_fork(m->admin);
	if (pid < 0) {
		log_error("worker %u: fork: %s", i, strerror(errno));
		close(sv[0]);
		close(sv[1]);
		loop_timer_start_at(&m->misc_tl, &w->respawn, m->loop.now + 1000);
		return;
	}
	if (pid == 0)
		run_worker(m, i, row, sv[1]);
	close(sv[1]);
	w->pid = pid;
	w->ctrl_fd = sv[0];
	w->started = m->loop.now;
	if (loop_watch_add(&m->loop, &w->ctrl_w, w->ctrl_fd, EPOLLIN, on_worker_ctrl, w) < 0)
		log_warn("worker %u: cannot watch its control socket", i);
	log_debug("worker %u started: pid %d", i, (int)pid);
}

static void reap(struct master *m)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		uint32_t i;
		for (i = 0; i < SHM_MAX_WORKERS; i++)
			if (m->workers[i].pid == pid)
				break;
		if (i == SHM_MAX_WORKERS)
			continue;
		struct wslot *w = &m->workers[i];
		w->pid = 0;
		loop_watch_del(&m->loop, &w->ctrl_w);
		close(w->ctrl_fd);
		w->ctrl_fd = -1;
		shm_worker_retire(m->seg, i);
		bool clean = WIFEXITED(status) && WEXITSTATUS(status) == 0;
		if (m->draining || !w->wanted) {
			if (!clean)
				log_warn("worker %u (pid %d) ended with status %d", i, (int)pid, status);
			continue;
		}
		if (WIFSIGNALED(status))
			log_error("worker %u (pid %d) killed by signal %d (%s)%s", i, (int)pid,
			          WTERMSIG(status), strsignal(WTERMSIG(status)),
			          WCOREDUMP(status) ? ", core dumped" : "");
		else
			log_error("worker %u (pid %d) exited with status %d", i, (int)pid,
			          WEXITSTATUS(status));
		__atomic_fetch_add(&m->seg->worker_restarts, 1, __ATOMIC_RELAXED);
		sd_worker_died(m);
		if (m->loop.now - w->started < CRASH_WINDOW_MS)
			w->quick_deaths++;
		else
			w->quick_deaths = 0;
		int64_t delay = 0;
		if (w->quick_deaths > 1) {
			delay = 250ll << (w->quick_deaths - 2 < 8 ? w->quick_deaths - 2 : 8);
			if (delay > BACKOFF_MAX_MS)
				delay = BACKOFF_MAX_MS;
			log_warn("worker %u keeps dying: restarting it in %lld ms", i, (long long)delay);
		}
		loop_timer_start_at(&m->misc_tl, &w->respawn, m->loop.now + delay);
	}
	if (m->draining) {
		for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++)
			if (m->workers[i].pid > 0)
				return;
		loop_stop(&m->loop);
	}
}

static void set_worker_count(struct master *m, uint32_t n)
{
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++) {
		struct wslot *w = &m->workers[i];
		bool want = i < n;
		if (want && !w->wanted) {
			w->wanted = true;
			w->quick_deaths = 0;
			if (w->pid == 0)
				spawn(m, i);
		} else if (!want && w->wanted) {
			w->wanted = false;
			loop_timer_stop(&w->respawn);
			/* Reuseport: the worker closes its copies as it starts to
			 * drain; with ours closed, its sockets leave the group. */
			if (reuseport(m))
				close_row(m, i);
			if (w->pid > 0) {
				struct ctrl_msg msg = {.type = CTRL_DRAIN};
				(void)send(w->ctrl_fd, &msg, sizeof msg, MSG_NOSIGNAL | MSG_DONTWAIT);
			}
		}
	}
	m->seg->nworkers = n;
}

/* ---- access rules -------------------------------------------------------- */

/* The rule lines of the file (none without one), compiled against the
 * listening addresses and port in force.  Errors are logged as
 * FILE:LINE: why. */
static int load_rules(struct master *m, char **text, size_t *len, struct rules **out)
{
	*text = NULL;
	*len = 0;
	const char *path = m->opts->config_path;
	if (path) {
		int rc = conffile_load_rules(path, text, len);
		if (rc < 0) {
			log_error("%s: %s", path,
			          rc == -E2BIG ? "the rule lines take more than 512 KiB" : strerror(-rc));
			return -EINVAL;
		}
	}
	char err[512];
	unsigned n = 0;
	int rc = rules_compile(*text ? *text : "", *len, &m->cfg, out, err, sizeof err, &n);
	if (rc < 0) {
		if (rc == -EINVAL && n > 1)
			log_error("%s:%s (and %u more errors in rules)", path ? path : "rules", err, n - 1);
		else if (rc == -EINVAL)
			log_error("%s:%s", path ? path : "rules", err);
		else
			log_error("cannot compile the rules: %s", strerror(-rc));
		free(*text);
		*text = NULL;
		return -EINVAL;
	}
	return 0;
}

const struct rules *master_rules(struct master *m)
{
	return m->rules;
}

/* ---- the service manager ------------------------------------------------ */

/* Workers that serve: forked by us and past their setup (a worker
 * publishes its pid in its slot once its listening sockets are in its
 * epoll set, so a client that connects then is served). */
static uint32_t serving_workers(const struct master *m)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++) {
		pid_t pid = m->workers[i].pid;
		if (pid > 0 && __atomic_load_n(&m->seg->slots[i].pid, __ATOMIC_RELAXED) == pid)
			n++;
	}
	return n;
}

static void sd_say(struct master *m, const char *msg)
{
	int rc = sdnotify_send(&m->sd, msg);
	if (rc < 0)
		log_debug("cannot notify the service manager: %s", strerror(-rc));
}

/* READY=1 (or the status line) with the serving count. */
static void sd_status(struct master *m, const char *head, uint32_t serving)
{
	char msg[256];
	snprintf(msg, sizeof msg, "%sSTATUS=serving: %u of %u workers", head, serving,
	         m->cfg.workers);
	sd_say(m, msg);
	m->sd_serving = serving;
}

static void on_sd_timer(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct master *m = t->data;
	uint32_t serving = serving_workers(m);
	if (!m->draining) {
		if (!m->sd_ready && serving > 0) {
			m->sd_ready = true;
			sd_status(m, "READY=1\n", serving);
		} else if (m->sd_ready && serving != m->sd_serving) {
			sd_status(m, "", serving);
		}
	}
	/* A master whose workers all died and do not come back says nothing:
	 * the manager's watchdog then restarts the service.  While draining
	 * the workers end on purpose. */
	if (m->sd.watchdog_usec && (serving > 0 || m->draining))
		sd_say(m, "WATCHDOG=1");
	int64_t period = m->draining ? 0 : m->sd_ready ? STATUS_POLL_MS : READY_POLL_MS;
	if (m->sd.watchdog_usec) {
		int64_t half = (int64_t)(m->sd.watchdog_usec / 2000);
		if (half < 1)
			half = 1;
		if (period == 0 || half < period)
			period = half;
	}
	if (period)
		loop_timer_start_at(&m->misc_tl, &m->sd_timer, m->loop.now + period);
}

/* A death is said at once (the comeback at the next look). */
static void sd_worker_died(struct master *m)
{
	uint32_t serving = serving_workers(m);
	if (m->sd_ready && serving != m->sd_serving)
		sd_status(m, "", serving);
}

static void sd_start(struct master *m)
{
	char err[160];
	if (sdnotify_open(&m->sd, err, sizeof err) < 0)
		log_warn("%s: not telling the service manager", err);
	loop_timer_init(&m->sd_timer, on_sd_timer, m);
	if (sdnotify_on(&m->sd))
		loop_timer_start_at(&m->misc_tl, &m->sd_timer, m->loop.now);
}

/* A reload as the manager sees it: RELOADING=1, then READY=1 when done
 * (done or refused: either way the service runs on). */
static void reload_notified(struct master *m)
{
	/* Before the first READY=1 there is nothing to tell: a READY=1 here
	 * would say a worker serves before one does. */
	if (!m->sd_ready) {
		(void)master_reload(m);
		return;
	}
	sdnotify_reloading(&m->sd, "reloading the configuration");
	int rc = master_reload(m);
	if (rc == -EINVAL)
		sd_say(m, "READY=1\nSTATUS=reload refused: keeping the running configuration");
	else
		sd_status(m, "READY=1\n", serving_workers(m));
}

/* ---- signals ------------------------------------------------------------ */

/* GSS-API configured: the keytab must be readable and hold a key of the
 * service, or the method would fail at every login. */
static int check_gssapi(const struct settings *s)
{
	char err[1400];
	if (!s->gssapi_keytab[0] || gss_check_keytab(s->gssapi_keytab, s->gssapi_service, err,
	                                             sizeof err) == 0)
		return 0;
	log_error("%s", err);
	return -EINVAL;
}

/* Whether name is one of the words of /proc/sys/net/ipv4/<file>. */
static bool in_ipv4_list(const char *file, const char *name)
{
	char path[96], text[1024];
	snprintf(path, sizeof path, "/proc/sys/net/ipv4/%s", file);
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	size_t n = fread(text, 1, sizeof text - 1, f);
	fclose(f);
	text[n] = '\0';
	for (char *save, *w = strtok_r(text, " \t\n", &save); w; w = strtok_r(NULL, " \t\n", &save))
		if (strcmp(w, name) == 0)
			return true;
	return false;
}

int master_check_congestion(const struct master *m, const struct settings *s,
                            const struct settings *running)
{
	/* The workers give up every capability in these cases (run_worker),
	 * and without CAP_NET_ADMIN the kernel takes only the allowed names. */
	bool unprivileged = m->dropped || geteuid() != 0;
	const struct {
		const char *key, *name, *was;
	} cc[] = {{"client-congestion", s->client_congestion,
	           running ? running->client_congestion : NULL},
	          {"target-congestion", s->target_congestion,
	           running ? running->target_congestion : NULL}};
	for (size_t i = 0; i < sizeof cc / sizeof cc[0]; i++) {
		/* Unset, or in force already: a name that the kernel stopped
		 * taking since is the workers' to say, and must not block
		 * every other change. */
		if (!cc[i].name[0] || (cc[i].was && strcmp(cc[i].name, cc[i].was) == 0))
			continue;
		/* Before any setsockopt: with CAP_NET_ADMIN the kernel would load
		 * a module tcp_NAME for a name it does not have. */
		if (!in_ipv4_list("tcp_available_congestion_control", cc[i].name)) {
			log_error("%s %s: no such congestion control (net.ipv4.tcp_available_"
			          "congestion_control lists those loaded)",
			          cc[i].key, cc[i].name);
			return -EINVAL;
		}
		if (unprivileged && !in_ipv4_list("tcp_allowed_congestion_control", cc[i].name)) {
			log_error("%s %s: workers without CAP_NET_ADMIN may not set it (add it to "
			          "net.ipv4.tcp_allowed_congestion_control)",
			          cc[i].key, cc[i].name);
			return -EINVAL;
		}
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		int rc = fd < 0 ? -1
		                : setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc[i].name,
		                             strlen(cc[i].name));
		int e = errno;
		if (fd >= 0)
			close(fd);
		if (rc < 0) {
			log_error("%s %s: %s", cc[i].key, cc[i].name, strerror(e));
			return -EINVAL;
		}
	}
	return 0;
}

int master_reload(struct master *m)
{
	if (!m->opts->config_path) {
		log_info("reload: no configuration file");
		return -ENOENT;
	}
	/* A file put in its place by whoever can write the directory is not
	 * read: it could name its own administrators. */
	if (m->conf_id_known && conffile_same_file(m->opts->config_path, &m->conf_id) == -ESTALE) {
		log_error("configuration %s not reloaded: it no longer leads to the file found at "
		          "start (%s), or that file has another owner or more than one link",
		          m->opts->config_path, m->conf_id.real);
		return -EINVAL;
	}
	/* The rules first: an invalid rule keeps everything as it runs. */
	char *rtext;
	size_t rlen;
	struct rules *rules;
	if (load_rules(m, &rtext, &rlen, &rules) < 0) {
		log_error("configuration %s not reloaded: keeping the running configuration",
		          m->opts->config_path);
		return -EINVAL;
	}
	struct settings s;
	struct user_list users, file_users;
	struct limit_list limits = {0};
	int rc = options_effective(m->opts, &s, &users, &file_users);
	if (rc == 0 && (rc = load_limits(m, &limits)) < 0) {
		user_list_free(&users);
		user_list_free(&file_users);
	}
	if (rc == 0 && (check_gssapi(&s) < 0 || master_check_congestion(m, &s, &m->cfg) < 0)) {
		user_list_free(&users);
		user_list_free(&file_users);
		limit_list_free(&limits);
		rc = -EINVAL;
	}
	if (rc == 0 && users.n > SHM_MAX_USERS) {
		log_error("%s: %zu users, more than the %d the users table holds",
		          m->opts->config_path, users.n, SHM_MAX_USERS);
		user_list_free(&users);
		user_list_free(&file_users);
		limit_list_free(&limits);
		rc = -EINVAL;
	}
	if (rc < 0) {
		log_error("configuration %s not reloaded: keeping the running configuration",
		          m->opts->config_path);
		free(rtext);
		rules_free(rules);
		return -EINVAL;
	}
	/* Workers compile the new text when CONFIG arrives (below). */
	(void)rules_shm_publish(m->seg, rtext, rlen);
	free(rtext);
	rules_free(m->rules);
	m->rules = rules;
	user_list_free(&m->file_users);
	m->file_users = file_users;
	if (s.port != m->cfg.port || s.nlisten != m->cfg.nlisten ||
	    memcmp(s.listen, m->cfg.listen, sizeof s.listen) != 0)
		log_warn("listening addresses changed: they take effect at the next start");
	if (s.accept != m->accept_mode)
		log_warn("accept strategy changed to %s: it takes effect at the next start",
		         accept_names[s.accept == ACCEPT_REUSEPORT]);
	/* The kernel groups SO_REUSEPORT sockets by the uid that made them: a
	 * socket made after the switch could not join root's. */
	if (m->dropped && reuseport(m) && s.workers != m->cfg.workers) {
		log_warn("workers changed to %u: with accept = reuseport and run-as it takes "
		         "effect at the next start",
		         s.workers);
		s.workers = m->cfg.workers;
	}
	if (strcmp(s.run_as, m->cfg.run_as) != 0)
		log_warn("run-as changed: it takes effect at the next start");
	/* Listening addresses, the accept strategy and the account stay as
	 * at start. */
	memcpy(s.run_as, m->cfg.run_as, sizeof s.run_as);
	s.port = m->cfg.port;
	s.nlisten = m->cfg.nlisten;
	memcpy(s.listen, m->cfg.listen, sizeof s.listen);
	s.accept = m->accept_mode;
	sync_users(m, &users);
	user_list_free(&users);
	limit_list_free(&m->limits);
	m->limits = limits;
	apply_limits(m);
	m->cfg = s;
	log_set_level((enum log_level)s.log_level);
	shm_settings_publish(m->seg, &s);
	notify_workers(m, CTRL_CONFIG);
	set_worker_count(m, s.workers);
	log_info("configuration %s reloaded (%u users, %zu limit lines, %zu rules)",
	         m->opts->config_path, shm_user_count(m->seg), m->limits.n, rules_count(m->rules));
	return 0;
}

static void on_kill_timer(struct loop *l, struct loop_timer *t)
{
	(void)l;
	struct master *m = t->data;
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++)
		if (m->workers[i].pid > 0) {
			log_warn("worker %u did not stop in time: killing it", i);
			kill(m->workers[i].pid, SIGKILL);
		}
}

static void start_drain(struct master *m, int signo)
{
	if (m->draining)
		return;
	m->draining = true;
	log_info("%s: draining sessions (grace %u s)", strsignal(signo), m->cfg.grace_s);
	char msg[128];
	snprintf(msg, sizeof msg, "STOPPING=1\nSTATUS=draining sessions (grace %u s)", m->cfg.grace_s);
	sd_say(m, msg);
	close_listeners(m);
	notify_workers(m, CTRL_DRAIN);
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++)
		loop_timer_stop(&m->workers[i].respawn);
	loop_timer_start_at(&m->misc_tl, &m->kill_timer,
	                    m->loop.now + (int64_t)m->cfg.grace_s * 1000 + KILL_AFTER_GRACE_MS);
	reap(m);
}

static void on_signal(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	(void)events;
	struct master *m = w->data;
	struct signalfd_siginfo si;
	while (read(m->sig_fd, &si, sizeof si) == (ssize_t)sizeof si) {
		switch (si.ssi_signo) {
		case SIGCHLD:
			reap(m);
			break;
		case SIGHUP:
			if (!m->draining)
				reload_notified(m);
			break;
		case SIGTERM:
		case SIGINT:
			start_drain(m, (int)si.ssi_signo);
			break;
		}
	}
}

static void on_log_writable(struct loop *l, struct loop_watch *w, uint32_t events)
{
	(void)l;
	(void)w;
	(void)events;
}

static void before_sleep(struct loop *l, void *arg)
{
	struct master *m = arg;
	unsigned want = log_flush();
	for (int i = 0; i < 2; i++) {
		struct loop_watch *w = &m->log_w[i];
		if ((want & (1u << i)) && !loop_watch_active(w))
			(void)loop_watch_add(l, w, log_fd((enum log_stream)i), EPOLLOUT, on_log_writable, m);
		else if (!(want & (1u << i)) && loop_watch_active(w))
			loop_watch_del(l, w);
	}
}

/* ---- for the admin handlers --------------------------------------------- */

struct shm_segment *master_segment(struct master *m)
{
	return m->seg;
}

const struct settings *master_settings(struct master *m)
{
	return &m->cfg;
}

void master_apply(struct master *m, const struct settings *s)
{
	m->cfg = *s;
	log_set_level((enum log_level)s->log_level);
	shm_settings_publish(m->seg, s);
	notify_workers(m, CTRL_CONFIG);
}

int master_worker_send(struct master *m, uint32_t index, const struct ctrl_msg *msg)
{
	if (index >= SHM_MAX_WORKERS)
		return -ESRCH;
	struct wslot *w = &m->workers[index];
	if (w->pid <= 0 || w->ctrl_fd < 0)
		return -ESRCH;
	if (send(w->ctrl_fd, msg, sizeof *msg, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		return -errno;
	return 0;
}

/* Was this user given on the command line (-u, -a)?  Those win over the
 * file at every reload, so a change made at run time would not last. */
static bool cli_user(const struct master *m, const char *name)
{
	for (size_t i = 0; i < m->opts->cli_users.n; i++)
		if (strcmp(m->opts->cli_users.v[i].name, name) == 0)
			return true;
	return false;
}

int master_user_change(struct master *m, enum master_user_op op, const char *name,
                       const char *pass, bool admin, bool *persisted)
{
	struct shm_user u;
	bool exists = shm_user_get(m->seg, name, &u) >= 0;
	explicit_bzero(u.hash, sizeof u.hash);
	*persisted = false;
	if (op == MASTER_USER_ADD && exists)
		return -EEXIST;
	if (op != MASTER_USER_ADD && !exists)
		return -ENOENT;
	if (op != MASTER_USER_ADD && cli_user(m, name))
		return -EPERM;
	if (strlen(name) > SHM_USER_NAME_MAX)
		return -EINVAL;
	char hash[PWHASH_MAX] = "";
	if (op != MASTER_USER_DEL) {
		/* One yescrypt hash (tens of ms) on the master's loop: admin
		 * changes are rare and one at a time per session. */
		if (pwhash_make(pass, hash) < 0)
			return -EIO;
		admin = op == MASTER_USER_ADD ? admin : u.admin != 0;
	}
	int rc = op == MASTER_USER_DEL ? shm_user_del(m->seg, name)
	                               : shm_user_put(m->seg, name, hash, admin);
	if (rc < 0)
		return rc == -ENOSPC ? rc : -EINVAL;
	char shown[SHM_USER_NAME_MAX * 4 + 1];
	log_escape(shown, sizeof shown, (const uint8_t *)name, strlen(name));
	log_info("admin: user '%s' %s", shown,
	         op == MASTER_USER_ADD ? "added" : op == MASTER_USER_DEL ? "deleted" : "password changed");
	apply_limits(m); /* a new user gets its line or "*" */
	/* Workers close the sessions of users that no longer exist or whose
	 * password changed. */
	if (op != MASTER_USER_ADD)
		notify_workers(m, CTRL_CONFIG);
	if (!m->opts->config_path)
		return 0;
	struct user_list next = {0};
	for (size_t i = 0; i < m->file_users.n; i++) {
		const struct user_spec *f = &m->file_users.v[i];
		if (strcmp(f->name, name) == 0)
			continue;
		if (user_list_add(&next, f->name, f->hash, f->admin) < 0)
			goto fail;
	}
	if (op != MASTER_USER_DEL && user_list_add(&next, name, hash, admin) < 0)
		goto fail;
	rc = conffile_save_users(m->opts->config_path, &next,
	                         m->conf_id_known ? &m->conf_id : NULL);
	if (rc == -ESTALE)
		log_error("%s no longer leads to the file found at start (%s), or that file has another "
		          "owner or more than one link: users not written to it (the change is in force "
		          "until the next reload or restart)",
		          m->opts->config_path, m->conf_id.real);
	else if (rc < 0)
		log_error("cannot write the users to %s: %s", m->opts->config_path, strerror(-rc));
	/* The running users, saved or not: a later save writes them all. */
	user_list_free(&m->file_users);
	m->file_users = next;
	*persisted = rc == 0;
	return 0;
fail:
	user_list_free(&next);
	return -ENOMEM;
}

/* ---- main --------------------------------------------------------------- */

static void raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			log_warn("cannot raise the descriptor limit: %s", strerror(errno));
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0)
		log_debug("descriptor limit: %llu per process", (unsigned long long)rl.rlim_cur);
}

/* Everything that needs root exists now (sockets, admin endpoints, the
 * segment, the descriptor limit): become run-as for good, with no
 * capability left.  The segment has no name by then, so the user cannot
 * open it, only the processes that hold its mapping use it. */
static int run_as(struct master *m, const struct settings *s)
{
	struct privs p;
	char err[256];
	if (privs_lookup(s->run_as, &p, err, sizeof err) < 0) {
		log_error("run-as %s: %s", s->run_as, err);
		return -EINVAL;
	}
	if (p.uid == 0) {
		log_warn("run-as %s is root: nothing is given up", s->run_as);
		return 0;
	}
	if (privs_drop(&p, err, sizeof err) < 0) {
		log_error("run-as %s: %s", s->run_as, err);
		return -EPERM;
	}
	m->dropped = true;
	log_info("running as uid %u gid %u", (unsigned)p.uid, (unsigned)p.gid);
	return 0;
}

static int setup(struct master *m, const struct settings *s, const struct user_list *users)
{
	m->cfg = *s;
	for (size_t r = 0; r < SHM_MAX_WORKERS; r++)
		for (size_t a = 0; a < SETTINGS_MAX_LISTEN + 1; a++)
			m->listen_fds[r][a] = -1;
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++) {
		m->workers[i].ctrl_fd = -1;
		m->workers[i].m = m;
		loop_timer_init(&m->workers[i].respawn, on_respawn, &m->workers[i]);
	}
	m->sig_fd = -1;
	m->sd.fd = -1;
	int rc = loop_init(&m->loop);
	if (rc < 0)
		return rc;
	loop_tlist_init(&m->loop, &m->misc_tl, 0);
	loop_timer_init(&m->kill_timer, on_kill_timer, m);
	m->loop.before_sleep = before_sleep;
	m->loop.before_sleep_arg = m;
	sd_start(m);

	signal(SIGPIPE, SIG_IGN);
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	m->sig_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (m->sig_fd < 0)
		return -errno;
	if ((rc = loop_watch_add(&m->loop, &m->sig_w, m->sig_fd, EPOLLIN, on_signal, m)) < 0)
		return rc;

	raise_nofile();
	char prefix[32], name[64];
	snprintf(prefix, sizeof prefix, "/socks5d-%d", (int)getpid());
	if ((rc = shm_create(prefix, name, sizeof name, &m->seg)) < 0) {
		log_error("cannot create the shared segment: %s", strerror(-rc));
		return rc;
	}
	m->seg->started_ms = (uint64_t)clock_ms();
	shm_settings_publish(m->seg, s);
	if ((rc = rules_shm_init(m->seg)) < 0)
		return rc;
	char *rtext;
	size_t rlen;
	if (load_rules(m, &rtext, &rlen, &m->rules) < 0)
		return -EINVAL;
	(void)rules_shm_publish(m->seg, rtext ? rtext : "", rlen);
	free(rtext);
	if (rules_count(m->rules))
		log_info("%zu access rules", rules_count(m->rules));
	if (users->n > SHM_MAX_USERS) {
		log_error("%zu users, more than the %d the users table holds", users->n, SHM_MAX_USERS);
		return -EINVAL;
	}
	if (sync_users(m, users))
		return -EINVAL;
	if (load_limits(m, &m->limits) < 0)
		return -EINVAL;
	apply_limits(m);
	if ((rc = open_listeners(m, s->workers)) < 0)
		return rc;
	m->ctrl_buf = malloc(sizeof(struct ctrl_msg) +
	                     CTRL_SESSIONS_MAX * sizeof(struct ctrl_session));
	if (!m->ctrl_buf)
		return -ENOMEM;
	if ((rc = admin_open(m, &m->loop, &m->admin)) == -EEXIST)
		return -EINVAL; /* a file in the admin socket's place: said, not removed */
	if (rc < 0)
		log_error("administration is off: %s", strerror(-rc));
	if (s->metrics[0] && (rc = metrics_open(&m->loop, m->seg, s->metrics, &m->metrics)) < 0)
		return rc;
	if (s->sockmap)
		for (uint32_t i = 0; i < s->workers && i < SHM_MAX_WORKERS; i++)
			m->kits[i] = sockmap_preload();
	if (s->run_as[0] && (rc = run_as(m, s)) < 0)
		return rc;
	/* Checked as the user the workers run as: they read the keytab and
	 * set the congestion controls. */
	if (check_gssapi(s) < 0)
		return -EINVAL;
	return master_check_congestion(m, s, NULL);
}

/* in_child: a worker leaving; the admin socket path is the master's to
 * remove. */
static void teardown(struct master *m, bool in_child)
{
	if (in_child)
		admin_forget(m->admin);
	else
		admin_close(m->admin);
	m->admin = NULL;
	if (in_child)
		metrics_forget(m->metrics);
	else
		metrics_close(m->metrics);
	m->metrics = NULL;
	free(m->ctrl_buf);
	rules_free(m->rules);
	m->rules = NULL;
	user_list_free(&m->file_users);
	limit_list_free(&m->limits);
	close_listeners(m);
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++) {
		if (m->workers[i].ctrl_fd >= 0)
			close(m->workers[i].ctrl_fd);
		sockmap_unload(m->kits[i]);
		m->kits[i] = NULL;
	}
	if (m->sig_fd >= 0)
		close(m->sig_fd);
	sdnotify_close(&m->sd);
	loop_free(&m->loop);
	if (m->seg)
		shm_destroy(m->seg);
}

int master_run(const struct options *o, const struct settings *s, const struct user_list *users,
               const struct user_list *file_users)
{
	struct master *m = calloc(1, sizeof *m);
	if (!m)
		return EXIT_OSERR;
	m->opts = o;
	for (size_t i = 0; i < file_users->n; i++)
		if (user_list_add(&m->file_users, file_users->v[i].name, file_users->v[i].hash,
		                  file_users->v[i].admin) < 0) {
			user_list_free(&m->file_users);
			free(m);
			return EXIT_OSERR;
		}
	int status = 0;
	/* Where the configuration path leads now is trusted; the rewrite of
	 * users goes nowhere else (a reload does not move it). */
	m->conf_id_known = o->config_path && conffile_identity(o->config_path, &m->conf_id) == 0;
	int rc = setup(m, s, users);
	if (rc < 0) {
		status = rc == -EINVAL ? EXIT_CONFIG : EXIT_OSERR;
	} else {
		set_worker_count(m, s->workers);
		log_info("ready: %u workers", s->workers);
		rc = loop_run(&m->loop);
		if (rc < 0) {
			log_error("event loop failed: %s", strerror(-rc));
			status = EXIT_OSERR;
		} else {
			log_info("stopped");
		}
	}
	teardown(m, false);
	free(m);
	return status;
}
