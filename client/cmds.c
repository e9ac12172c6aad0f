/*
 * pipoClient commands: each parses its arguments first (so that a usage
 * error never costs a connection or a password prompt), then connects on
 * first use, sends its requests (pipelined when several are independent),
 * decodes the answers with admin/pipo.c and prints a table or one JSON
 * document.
 */
#include "pc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers -------------------------------------------------------------- */

static int status_fail(const char *what, uint8_t st, const char *hint)
{
	pc_err("%s: %s (status 0x%02x)%s%s", what, pipo_status_name(st), st, hint ? ": " : "",
	       hint ? hint : "");
	return PC_EXIT_STATUS;
}

static int malformed(struct pc_ctx *x, const char *what)
{
	pc_err("%s: malformed response from %s", what, x->conn->where);
	return PC_EXIT_PROTOCOL;
}

static int need_conn(struct pc_ctx *x)
{
	if (x->connected && !pc_peer_closed(x->conn))
		return PC_EXIT_OK;
	if (x->connected) {
		/* The server ends silent sessions (60 s); the shell just logs in
		 * again. */
		pc_close(x->conn);
		x->connected = false;
		if (x->shell)
			fprintf(stderr, "pipoClient: the server closed the session; reconnecting\n");
	}
	return pc_login(x);
}

/* One request, one response with STATUS checked. */
static int round_trip(struct pc_ctx *x, uint8_t type, uint8_t cmd, const void *payload,
                      size_t len, struct pc_resp *r)
{
	int rc = need_conn(x);
	if (rc)
		return rc;
	struct pc_batch b;
	pc_batch_init(&b);
	pc_batch_add(&b, type, cmd, payload, len);
	/* BUSY means "workers did not answer in time": a query is safe to ask
	 * again, a little later, a bounded number of times. */
	for (int attempt = 0;; attempt++) {
		rc = pc_send(x->conn, &b);
		if (rc == PC_EXIT_OK)
			rc = pc_recv(x->conn, type, cmd, r);
		if (rc || type != PIPO_QUERY || r->f.status != PIPO_E_BUSY || attempt == 2)
			break;
		struct timespec ts = {.tv_sec = 0, .tv_nsec = 250 * 1000000L};
		nanosleep(&ts, NULL);
	}
	return rc;
}

static bool parse_u64(const char *s, uint64_t *out)
{
	if (!s[0] || s[0] == '-' || s[0] == '+')
		return false;
	char *end;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		return false;
	*out = v;
	return true;
}

/* "65536", "64K", "64KiB", "1M", "1MiB" (binary multiples). */
static bool parse_size(const char *s, uint32_t *out)
{
	char *end;
	if (!s[0] || s[0] == '-' || s[0] == '+')
		return false;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return false;
	unsigned long long mul = 1;
	if (!strcasecmp(end, "k") || !strcasecmp(end, "kib") || !strcasecmp(end, "kb"))
		mul = 1024;
	else if (!strcasecmp(end, "m") || !strcasecmp(end, "mib") || !strcasecmp(end, "mb"))
		mul = 1024 * 1024;
	else if (!strcasecmp(end, "b") || !*end)
		mul = 1;
	else
		return false;
	if (v > UINT32_MAX / mul)
		return false;
	*out = (uint32_t)(v * mul);
	return true;
}

/* "30", "30s", "5m", "2h", "1d". */
static bool parse_seconds(const char *s, uint32_t *out)
{
	char *end;
	if (!s[0] || s[0] == '-' || s[0] == '+')
		return false;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return false;
	unsigned long long mul;
	if (!*end || !strcmp(end, "s"))
		mul = 1;
	else if (!strcmp(end, "m"))
		mul = 60;
	else if (!strcmp(end, "h"))
		mul = 3600;
	else if (!strcmp(end, "d"))
		mul = 86400;
	else
		return false;
	if (v > UINT32_MAX / mul)
		return false;
	*out = (uint32_t)(v * mul);
	return true;
}

static int parse_bool(const char *s)
{
	if (!strcmp(s, "on") || !strcmp(s, "yes") || !strcmp(s, "1") || !strcmp(s, "true"))
		return 1;
	if (!strcmp(s, "off") || !strcmp(s, "no") || !strcmp(s, "0") || !strcmp(s, "false"))
		return 0;
	return -1;
}

static const char *const anon_names[] = {"auto", "always", "never"};
static const char *const doh_methods[] = {"get", "post"};
static const char *const state_names[] = {"handshake", "resolving", "connecting", "relay",
                                          "closing"};

static bool check_name(const char *what, const char *name)
{
	size_t n = strlen(name);
	if (n == 0 || n > PIPO_MAX_NAME) {
		pc_err("%s: user name must be 1..%d bytes (got %zu)", what, PIPO_MAX_NAME, n);
		return false;
	}
	return true;
}

/* ---- passwords ------------------------------------------------------------ */

static volatile sig_atomic_t tty_fd_saved = -1;
static struct termios tty_saved;

static void tty_restore_on_signal(int sig)
{
	if (tty_fd_saved >= 0)
		tcsetattr(tty_fd_saved, TCSANOW, &tty_saved);
	signal(sig, SIG_DFL);
	raise(sig);
}

static int read_line_noecho(int fd, const char *prompt, char *out, size_t cap)
{
	struct termios t;
	bool is_tty = tcgetattr(fd, &t) == 0;
	struct sigaction sa, old_int, old_term;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = tty_restore_on_signal;
	sigemptyset(&sa.sa_mask);
	if (is_tty) {
		tty_saved = t;
		tty_fd_saved = fd;
		sigaction(SIGINT, &sa, &old_int);
		sigaction(SIGTERM, &sa, &old_term);
		struct termios n = t;
		n.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
		n.c_lflag |= ICANON;
		tcsetattr(fd, TCSAFLUSH, &n);
	}
	if (write(fd, prompt, strlen(prompt)) < 0) {
		/* ignored: the read below still works */
	}
	size_t len = 0;
	bool too_long = false, eof = true;
	for (size_t i = 0; i < 4096; i++) {
		char ch;
		ssize_t r = read(fd, &ch, 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		if (ch == '\n' || ch == '\r') {
			eof = false;
			break;
		}
		if (len + 1 < cap)
			out[len++] = ch;
		else
			too_long = true;
	}
	out[len] = '\0';
	if (is_tty) {
		tcsetattr(fd, TCSAFLUSH, &t);
		tty_fd_saved = -1;
		sigaction(SIGINT, &old_int, NULL);
		sigaction(SIGTERM, &old_term, NULL);
		if (write(fd, "\n", 1) < 0) {
			/* ignored */
		}
	}
	if (eof && len == 0)
		return -1;
	return too_long ? -2 : 0;
}

int pc_read_password(const char *prompt, bool confirm, char *out, size_t cap)
{
	int fd = open("/dev/tty", O_RDWR | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		pc_err("cannot read a password: no terminal (%s); set PIPO_PASSWORD or "
		       "PIPO_NEW_PASSWORD",
		       strerror(errno));
		return PC_EXIT_USAGE;
	}
	char again[PIPO_MAX_NAME + 2];
	int rc = PC_EXIT_OK;
	int r = read_line_noecho(fd, prompt, out, cap);
	if (r == 0 && confirm)
		r = read_line_noecho(fd, "Retype password: ", again, sizeof again);
	if (r == -1) {
		pc_err("no password given");
		rc = PC_EXIT_USAGE;
	} else if (r == -2) {
		pc_err("password too long (at most %d bytes)", PIPO_MAX_NAME);
		rc = PC_EXIT_USAGE;
	} else if (out[0] == '\0') {
		pc_err("empty password");
		rc = PC_EXIT_USAGE;
	} else if (confirm && strcmp(out, again) != 0) {
		pc_err("passwords do not match");
		rc = PC_EXIT_USAGE;
	}
	explicit_bzero(again, sizeof again);
	close(fd);
	if (rc)
		explicit_bzero(out, cap);
	return rc;
}

/* A new user's password: PIPO_NEW_PASSWORD or a prompt. */
static int new_password(const char *name, char *out, size_t cap)
{
	const char *env = getenv("PIPO_NEW_PASSWORD");
	if (env) {
		size_t n = strlen(env);
		if (n == 0 || n > PIPO_MAX_NAME || n >= cap) {
			pc_err("PIPO_NEW_PASSWORD must be 1..%d bytes (got %zu)", PIPO_MAX_NAME, n);
			return PC_EXIT_USAGE;
		}
		memcpy(out, env, n + 1);
		return PC_EXIT_OK;
	}
	char prompt[PIPO_MAX_NAME + 40];
	snprintf(prompt, sizeof prompt, "New password for %s: ", name);
	return pc_read_password(prompt, true, out, cap);
}

int pc_login(struct pc_ctx *x)
{
	/* Connect first: no password prompt for a server that is not there. */
	int rc = pc_connect(x->conn, x->target);
	if (rc)
		return rc;
	if (!x->pass[0]) {
		const char *env = getenv("PIPO_PASSWORD");
		if (env) {
			size_t n = strlen(env);
			if (n == 0 || n > PIPO_MAX_NAME) {
				pc_err("PIPO_PASSWORD must be 1..%d bytes (got %zu)", PIPO_MAX_NAME, n);
				pc_close(x->conn);
				return PC_EXIT_USAGE;
			}
			memcpy(x->pass, env, n + 1);
		} else {
			char prompt[PIPO_MAX_NAME + 40];
			snprintf(prompt, sizeof prompt, "Password for %s: ", x->user);
			rc = pc_read_password(prompt, false, x->pass, sizeof x->pass);
			if (rc) {
				pc_close(x->conn);
				return rc;
			}
		}
	}
	rc = pc_auth(x->conn, x->user, x->pass);
	if (rc) {
		pc_close(x->conn);
		/* A wrong password is asked again next time. */
		if (rc == PC_EXIT_AUTH && !getenv("PIPO_PASSWORD"))
			explicit_bzero(x->pass, sizeof x->pass);
		return rc;
	}
	x->connected = true;
	return PC_EXIT_OK;
}

/* ---- metrics ---------------------------------------------------------- */

#define MAX_METRICS 256

struct metrics {
	size_t n;
	uint16_t id[MAX_METRICS];
	uint64_t v[MAX_METRICS];
};

struct server_info {
	uint8_t proto;
	uint32_t pid, workers;
	uint64_t uptime_ms;
	char version[PIPO_MAX_NAME + 1];
};

static bool decode_metrics(const struct pc_resp *r, struct metrics *m)
{
	struct pipo_cur c = {.p = r->payload, .len = r->f.len};
	uint16_t n = pipo_get_u16(&c);
	m->n = 0;
	for (uint16_t i = 0; i < n && !c.bad; i++) {
		uint16_t id = pipo_get_u16(&c);
		uint64_t v = pipo_get_u64(&c);
		if (m->n < MAX_METRICS) {
			m->id[m->n] = id;
			m->v[m->n] = v;
			m->n++;
		}
	}
	return pipo_cur_done(&c);
}

static bool decode_server(const struct pc_resp *r, struct server_info *s)
{
	struct pipo_cur c = {.p = r->payload, .len = r->f.len};
	s->proto = pipo_get_u8(&c);
	s->pid = pipo_get_u32(&c);
	s->uptime_ms = pipo_get_u64(&c);
	s->workers = pipo_get_u32(&c);
	pipo_get_str8(&c, s->version, sizeof s->version);
	return pipo_cur_done(&c);
}

static const char *metric_name(uint16_t id, char *buf, size_t cap)
{
	const char *n = pipo_metric_name(id);
	if (n)
		return n;
	snprintf(buf, cap, "metric_%u", id);
	return buf;
}

static bool metric_is_bytes(uint16_t id)
{
	return id == PIPO_MET_BYTES_UP || id == PIPO_MET_BYTES_DOWN;
}

/* Gauges have no meaningful rate. */
static bool metric_is_gauge(uint16_t id)
{
	switch (id) {
	case PIPO_MET_CONN_CURRENT:
	case PIPO_MET_CONN_MAX:
	case PIPO_MET_USERS_CONNECTED:
	case PIPO_MET_USER_COUNT:
	case PIPO_MET_ADMIN_SESSIONS:
	case PIPO_MET_WORKERS:
	case PIPO_MET_RELAYING:
		return true;
	default:
		return false;
	}
}

/* Server info and metrics, pipelined: both requests in one write. */
static int fetch_stats(struct pc_ctx *x, struct server_info *si, struct metrics *m,
                       const char *what)
{
	int rc = need_conn(x);
	if (rc)
		return rc;
	struct pc_batch b;
	pc_batch_init(&b);
	pc_batch_add(&b, PIPO_QUERY, PIPO_Q_SERVER, NULL, 0);
	pc_batch_add(&b, PIPO_QUERY, PIPO_Q_METRICS, NULL, 0);
	rc = pc_send(x->conn, &b);
	struct pc_resp r;
	if (rc == PC_EXIT_OK)
		rc = pc_recv(x->conn, PIPO_QUERY, PIPO_Q_SERVER, &r);
	if (rc)
		goto broken;
	bool server_ok = r.f.status == PIPO_OK;
	uint8_t server_st = r.f.status;
	if (server_ok && !decode_server(&r, si))
		return malformed(x, what);
	rc = pc_recv(x->conn, PIPO_QUERY, PIPO_Q_METRICS, &r);
	if (rc)
		goto broken;
	if (!server_ok)
		return status_fail(what, server_st, NULL);
	if (r.f.status != PIPO_OK)
		return status_fail(what, r.f.status, NULL);
	if (!decode_metrics(&r, m))
		return malformed(x, what);
	return PC_EXIT_OK;
broken:
	return rc;
}

static void print_server_line(const struct server_info *si)
{
	char d[48];
	printf("socks5d %s (pipo %u), pid %" PRIu32 ", up %s, %" PRIu32 " worker%s\n", si->version,
	       si->proto, si->pid, pc_duration(d, sizeof d, si->uptime_ms / 1000), si->workers,
	       si->workers == 1 ? "" : "s");
}

static void json_server(struct pc_json *j, const char *key, const struct server_info *si)
{
	pj_obj(j, key);
	pj_u64(j, "protocol", si->proto);
	pj_u64(j, "pid", si->pid);
	pj_u64(j, "uptime_ms", si->uptime_ms);
	pj_u64(j, "workers", si->workers);
	pj_str(j, "version", si->version);
	pj_end_obj(j);
}

static int cmd_stats(struct pc_ctx *x, char **args)
{
	(void)args;
	struct server_info si;
	static struct metrics m;
	int rc = fetch_stats(x, &si, &m, "stats");
	if (rc)
		return rc;
	char nb[32], ub[32];
	if (x->json) {
		struct pc_json j;
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
		json_server(&j, "server", &si);
		pj_obj(&j, "metrics");
		for (size_t i = 0; i < m.n; i++)
			pj_u64(&j, metric_name(m.id[i], nb, sizeof nb), m.v[i]);
		pj_end_obj(&j);
		pj_end_obj(&j);
		pj_finish(&j);
		return PC_EXIT_OK;
	}
	print_server_line(&si);
	for (size_t i = 0; i < m.n; i++) {
		const char *name = metric_name(m.id[i], nb, sizeof nb);
		if (metric_is_bytes(m.id[i]))
			printf("  %-26s %s (%" PRIu64 ")\n", name, pc_bytes(ub, sizeof ub, m.v[i]),
			       m.v[i]);
		else
			printf("  %-26s %" PRIu64 "\n", name, m.v[i]);
	}
	return PC_EXIT_OK;
}

static int cmd_server(struct pc_ctx *x, char **args)
{
	(void)args;
	struct pc_resp r;
	int rc = round_trip(x, PIPO_QUERY, PIPO_Q_SERVER, NULL, 0, &r);
	if (rc)
		return rc;
	if (r.f.status)
		return status_fail("server", r.f.status, NULL);
	struct server_info si;
	if (!decode_server(&r, &si))
		return malformed(x, "server");
	if (x->json) {
		struct pc_json j;
		pj_init(&j, stdout);
		json_server(&j, NULL, &si);
		pj_finish(&j);
		return PC_EXIT_OK;
	}
	char d[48];
	printf("version:   socks5d %s\n", si.version);
	printf("protocol:  pipo %u\n", si.proto);
	printf("pid:       %" PRIu32 "\n", si.pid);
	printf("uptime:    %s\n", pc_duration(d, sizeof d, si.uptime_ms / 1000));
	printf("workers:   %" PRIu32 "\n", si.workers);
	return PC_EXIT_OK;
}

/* ---- top ---------------------------------------------------------------- */

static volatile sig_atomic_t top_stop;

static void top_on_signal(int sig)
{
	(void)sig;
	top_stop = 1;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool find_metric(const struct metrics *m, uint16_t id, uint64_t *v)
{
	for (size_t i = 0; i < m->n; i++)
		if (m->id[i] == id) {
			*v = m->v[i];
			return true;
		}
	return false;
}

static void top_render_human(const struct server_info *si, const struct metrics *cur,
                             const struct metrics *prev, double dt, bool tty, long iter)
{
	char nb[32], vb[48], rb[48], tb[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(tb, sizeof tb, "%Y-%m-%d %H:%M:%S UTC", &tm);
	if (tty)
		fputs("\033[H\033[2J", stdout);
	else if (iter > 0)
		fputc('\n', stdout);
	printf("pipoClient top  %s\n", tb);
	print_server_line(si);
	printf("\n  %-26s %20s %14s\n", "METRIC", "VALUE", "RATE");
	for (size_t i = 0; i < cur->n; i++) {
		uint16_t id = cur->id[i];
		uint64_t pv;
		const char *name = metric_name(id, nb, sizeof nb);
		if (metric_is_bytes(id))
			pc_bytes(vb, sizeof vb, cur->v[i]);
		else
			snprintf(vb, sizeof vb, "%" PRIu64, cur->v[i]);
		rb[0] = '\0';
		if (!metric_is_gauge(id) && prev && dt > 0 && find_metric(prev, id, &pv) &&
		    cur->v[i] >= pv)
			pc_rate(rb, sizeof rb, (double)(cur->v[i] - pv) / dt, metric_is_bytes(id));
		else if (!metric_is_gauge(id))
			snprintf(rb, sizeof rb, "-");
		printf("  %-26s %20s %14s\n", name, vb, rb);
	}
	if (tty)
		printf("\n(q or Ctrl-C to quit)\n");
	fflush(stdout);
}

static void top_render_json(struct pc_json *j, const struct server_info *si,
                            const struct metrics *cur, const struct metrics *prev, double dt)
{
	char nb[32];
	pj_obj(j, NULL);
	pj_u64(j, "time", (uint64_t)time(NULL));
	json_server(j, "server", si);
	pj_obj(j, "metrics");
	for (size_t i = 0; i < cur->n; i++)
		pj_u64(j, metric_name(cur->id[i], nb, sizeof nb), cur->v[i]);
	pj_end_obj(j);
	pj_obj(j, "rates");
	for (size_t i = 0; prev && dt > 0 && i < cur->n; i++) {
		uint64_t pv;
		if (!metric_is_gauge(cur->id[i]) && find_metric(prev, cur->id[i], &pv) &&
		    cur->v[i] >= pv)
			pj_double(j, metric_name(cur->id[i], nb, sizeof nb),
			          (double)(cur->v[i] - pv) / dt);
	}
	pj_end_obj(j);
	pj_end_obj(j);
	fflush(j->f);
}

/* Sleep until the deadline, a 'q' on the terminal, or a signal. */
static void top_wait(uint64_t deadline, bool keys)
{
	while (!top_stop) {
		uint64_t now = mono_ms();
		if (now >= deadline)
			return;
		struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
		int r = poll(&p, keys ? 1 : 0, (int)(deadline - now));
		if (r > 0) {
			char buf[64];
			ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
			if (n <= 0) {
				keys = false; /* EOF on the terminal: only the timer now */
				continue;
			}
			for (ssize_t i = 0; i < n; i++)
				if (buf[i] == 'q' || buf[i] == 'Q' || buf[i] == 3 /* ^C */)
					top_stop = 1;
		}
	}
}

static int cmd_top(struct pc_ctx *x, char **args)
{
	(void)args;
	static struct metrics bufs[2];
	struct server_info si;
	bool tty_out = isatty(STDOUT_FILENO) && !x->json;
	bool keys = isatty(STDIN_FILENO);
	long iterations = x->f_iterations;
	uint64_t interval_ms = (uint64_t)(x->f_interval * 1000);

	struct termios saved, raw;
	if (keys && tcgetattr(STDIN_FILENO, &saved) == 0) {
		raw = saved;
		/* Keys without Enter; ISIG stays so Ctrl-C still interrupts. */
		raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO);
		raw.c_cc[VMIN] = 1;
		raw.c_cc[VTIME] = 0;
		tcsetattr(STDIN_FILENO, TCSANOW, &raw);
	} else {
		keys = false;
	}
	struct sigaction sa, old_int, old_term;
	memset(&sa, 0, sizeof sa);
	sa.sa_handler = top_on_signal; /* no SA_RESTART: poll returns at once */
	sigemptyset(&sa.sa_mask);
	top_stop = 0;
	sigaction(SIGINT, &sa, &old_int);
	sigaction(SIGTERM, &sa, &old_term);

	struct pc_json j;
	if (x->json) {
		pj_init(&j, stdout);
		pj_arr(&j, NULL);
	}
	int rc = PC_EXIT_OK;
	struct metrics *prev = NULL;
	uint64_t prev_t = 0, next = mono_ms();
	for (long i = 0; (iterations < 0 || i < iterations) && !top_stop; i++) {
		struct metrics *cur = &bufs[i & 1];
		rc = fetch_stats(x, &si, cur, "top");
		if (rc)
			break;
		uint64_t t = mono_ms();
		double dt = prev ? (double)(t - prev_t) / 1000.0 : 0;
		if (x->json)
			top_render_json(&j, &si, cur, prev, dt);
		else
			top_render_human(&si, cur, prev, dt, tty_out, i);
		prev = cur;
		prev_t = t;
		if (iterations >= 0 && i + 1 >= iterations)
			break;
		next += interval_ms;
		if (next < t)
			next = t; /* a slow server: no burst of catch-up queries */
		top_wait(next, keys);
	}
	if (x->json) {
		pj_end_arr(&j);
		pj_finish(&j);
	}
	if (keys)
		tcsetattr(STDIN_FILENO, TCSANOW, &saved);
	sigaction(SIGINT, &old_int, NULL);
	sigaction(SIGTERM, &old_term, NULL);
	return rc;
}

/* ---- users ------------------------------------------------------------ */

static int cmd_users(struct pc_ctx *x, char **args)
{
	(void)args;
	struct pc_resp r;
	bool detailed = true;
	int rc = round_trip(x, PIPO_QUERY, PIPO_Q_USER_STATS, NULL, 0, &r);
	if (rc)
		return rc;
	if (r.f.status == PIPO_E_UNKNOWN) {
		/* An older server: names and roles only. */
		detailed = false;
		rc = round_trip(x, PIPO_QUERY, PIPO_Q_USERS, NULL, 0, &r);
		if (rc)
			return rc;
	}
	if (r.f.status)
		return status_fail("users", r.f.status, NULL);
	struct pipo_cur c = {.p = r.payload, .len = r.f.len};
	uint32_t n = pipo_get_u32(&c);
	/* Each record is at least 2 bytes: a count beyond that is a lie. */
	if (n > r.f.len / 2)
		return malformed(x, "users");
	struct pc_json j;
	if (x->json) {
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
		pj_arr(&j, "users");
	} else if (detailed) {
		printf("%-24s %-5s %7s %12s %12s\n", "USER", "ADMIN", "CONNS", "UP", "DOWN");
	} else {
		printf("%-24s %-5s\n", "USER", "ADMIN");
	}
	char name[PIPO_MAX_NAME + 1], ub[32], db[32];
	for (uint32_t i = 0; i < n && !c.bad; i++) {
		pipo_get_str8(&c, name, sizeof name);
		uint8_t admin = pipo_get_u8(&c);
		uint32_t conns = 0;
		uint64_t up = 0, down = 0;
		if (detailed) {
			conns = pipo_get_u32(&c);
			up = pipo_get_u64(&c);
			down = pipo_get_u64(&c);
		}
		if (c.bad)
			break;
		if (x->json) {
			pj_obj(&j, NULL);
			pj_str(&j, "name", name);
			pj_bool(&j, "admin", admin != 0);
			if (detailed) {
				pj_u64(&j, "connections", conns);
				pj_u64(&j, "bytes_up", up);
				pj_u64(&j, "bytes_down", down);
			}
			pj_end_obj(&j);
		} else if (detailed) {
			printf("%-24s %-5s %7" PRIu32 " %12s %12s\n", name, admin ? "yes" : "no", conns,
			       pc_bytes(ub, sizeof ub, up), pc_bytes(db, sizeof db, down));
		} else {
			printf("%-24s %-5s\n", name, admin ? "yes" : "no");
		}
	}
	if (x->json) {
		pj_end_arr(&j);
		pj_u64(&j, "count", n);
		pj_end_obj(&j);
		pj_finish(&j);
	}
	if (!pipo_cur_done(&c))
		return malformed(x, "users");
	return PC_EXIT_OK;
}

static int print_persisted(struct pc_ctx *x, const struct pc_resp *r, const char *what,
                           const char *done_msg, const char *name)
{
	struct pipo_cur c = {.p = r->payload, .len = r->f.len};
	uint8_t persisted = pipo_get_u8(&c);
	if (!pipo_cur_done(&c))
		return malformed(x, what);
	if (x->json) {
		struct pc_json j;
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
		pj_bool(&j, "ok", true);
		pj_str(&j, "user", name);
		pj_bool(&j, "persisted", persisted != 0);
		pj_end_obj(&j);
		pj_finish(&j);
	} else {
		printf("%s; %s\n", done_msg,
		       persisted ? "saved to the configuration file"
		                 : "not saved: the server runs without a configuration file");
	}
	return PC_EXIT_OK;
}

static int user_modify(struct pc_ctx *x, const char *what, const char *name, bool with_pass,
                       bool admin, uint8_t cmd)
{
	if (!check_name(what, name))
		return PC_EXIT_USAGE;
	/* Log in first: the administrator's password before the new one. */
	int rc = need_conn(x);
	if (rc)
		return rc;
	char pass[PIPO_MAX_NAME + 2];
	pass[0] = '\0';
	if (with_pass) {
		rc = new_password(name, pass, sizeof pass);
		if (rc)
			return rc;
	}
	uint8_t p[3 + 2 * PIPO_MAX_NAME];
	struct pipo_buf b = {.p = p, .cap = sizeof p};
	pipo_put_str8(&b, name);
	if (with_pass)
		pipo_put_str8(&b, pass);
	if (cmd == PIPO_M_ADD_USER)
		pipo_put_u8(&b, admin ? 1 : 0);
	explicit_bzero(pass, sizeof pass);
	struct pc_resp r;
	rc = round_trip(x, PIPO_MODIFY, cmd, p, b.len, &r);
	explicit_bzero(p, sizeof p);
	if (rc)
		return rc;
	char msg[PIPO_MAX_NAME + 80];
	switch (r.f.status) {
	case PIPO_OK:
		break;
	case PIPO_E_EXISTS:
		pc_err("%s %s: a user of that name already exists (status 0x%02x)", what, name,
		       r.f.status);
		return PC_EXIT_STATUS;
	case PIPO_E_NOT_FOUND:
		pc_err("%s %s: no such user (status 0x%02x)", what, name, r.f.status);
		return PC_EXIT_STATUS;
	default:
		snprintf(msg, sizeof msg, "%s %s", what, name);
		return status_fail(msg, r.f.status, NULL);
	}
	if (cmd == PIPO_M_ADD_USER)
		snprintf(msg, sizeof msg, "user %s added%s", name, admin ? " (administrator)" : "");
	else if (cmd == PIPO_M_DEL_USER)
		snprintf(msg, sizeof msg, "user %s deleted, its sessions closed", name);
	else
		snprintf(msg, sizeof msg, "password of %s changed", name);
	return print_persisted(x, &r, what, msg, name);
}

static int cmd_user_add(struct pc_ctx *x, char **args)
{
	return user_modify(x, "user add", args[0], true, x->f_admin, PIPO_M_ADD_USER);
}

static int cmd_user_del(struct pc_ctx *x, char **args)
{
	return user_modify(x, "user del", args[0], false, false, PIPO_M_DEL_USER);
}

static int cmd_user_passwd(struct pc_ctx *x, char **args)
{
	return user_modify(x, "user passwd", args[0], true, false, PIPO_M_PASSWORD);
}

static int cmd_user_conns(struct pc_ctx *x, char **args)
{
	const char *name = args[0];
	if (!check_name("user conns", name))
		return PC_EXIT_USAGE;
	uint8_t p[1 + PIPO_MAX_NAME];
	struct pipo_buf b = {.p = p, .cap = sizeof p};
	pipo_put_str8(&b, name);
	struct pc_resp r;
	int rc = round_trip(x, PIPO_QUERY, PIPO_Q_USER_CONNS, p, b.len, &r);
	if (rc)
		return rc;
	if (r.f.status == PIPO_E_NOT_FOUND) {
		pc_err("user conns %s: no such user (status 0x%02x)", name, r.f.status);
		return PC_EXIT_STATUS;
	}
	if (r.f.status)
		return status_fail("user conns", r.f.status, NULL);
	struct pipo_cur c = {.p = r.payload, .len = r.f.len};
	uint32_t n = pipo_get_u32(&c);
	if (!pipo_cur_done(&c))
		return malformed(x, "user conns");
	if (x->json) {
		struct pc_json j;
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
		pj_str(&j, "user", name);
		pj_u64(&j, "connections", n);
		pj_end_obj(&j);
		pj_finish(&j);
	} else {
		printf("%s: %" PRIu32 " connection%s\n", name, n, n == 1 ? "" : "s");
	}
	return PC_EXIT_OK;
}

/* ---- sessions ----------------------------------------------------------- */

static void session_client(const struct pipo_session *s, char *buf, size_t cap)
{
	char a[INET6_ADDRSTRLEN];
	if (!inet_ntop(s->family == 6 ? AF_INET6 : AF_INET, s->addr, a, sizeof a))
		snprintf(a, sizeof a, "?");
	if (s->family == 6)
		snprintf(buf, cap, "[%s]:%u", a, s->sport);
	else
		snprintf(buf, cap, "%s:%u", a, s->sport);
}

static const char *state_name(uint8_t st)
{
	return st < sizeof state_names / sizeof state_names[0] ? state_names[st] : "unknown";
}

static int cmd_sessions(struct pc_ctx *x, char **args)
{
	(void)args;
	/* Bounded: 4096 pages of 256 is far beyond any real table. */
	const unsigned max_pages = 4096;
	uint64_t after = 0;
	bool more = true;
	size_t total = 0;
	struct pc_json j;
	if (x->json) {
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
		pj_arr(&j, "sessions");
	}
	int rc = PC_EXIT_OK;
	for (unsigned page = 0; more && page < max_pages; page++) {
		uint8_t p[10];
		struct pipo_buf b = {.p = p, .cap = sizeof p};
		pipo_put_u64(&b, after);
		pipo_put_u16(&b, PIPO_SESSIONS_PAGE_MAX);
		struct pc_resp r;
		rc = round_trip(x, PIPO_QUERY, PIPO_Q_SESSIONS, p, b.len, &r);
		if (rc)
			break;
		if (r.f.status) {
			rc = status_fail("sessions", r.f.status, NULL);
			break;
		}
		struct pipo_cur c = {.p = r.payload, .len = r.f.len};
		uint16_t n = pipo_get_u16(&c);
		more = pipo_get_u8(&c) != 0;
		if (n > PIPO_SESSIONS_PAGE_MAX) {
			rc = malformed(x, "sessions");
			break;
		}
		if (page == 0 && !x->json && n > 0)
			printf("%-8s %-10s %-24s %-16s %-30s %10s %10s %10s\n", "ID", "STATE", "CLIENT",
			       "USER", "DESTINATION", "UP", "DOWN", "AGE");
		for (uint16_t i = 0; i < n; i++) {
			struct pipo_session s;
			pipo_get_session(&c, &s);
			/* Ascending ids guarantee that paging ends. */
			if (c.bad || s.id <= after) {
				rc = malformed(x, "sessions");
				break;
			}
			after = s.id;
			total++;
			char cl[INET6_ADDRSTRLEN + 10], ub[32], db[32], ab[48];
			session_client(&s, cl, sizeof cl);
			if (x->json) {
				char a[INET6_ADDRSTRLEN];
				inet_ntop(s.family == 6 ? AF_INET6 : AF_INET, s.addr, a, sizeof a);
				pj_obj(&j, NULL);
				pj_u64(&j, "id", s.id);
				pj_str(&j, "state", state_name(s.state));
				pj_str(&j, "client", a);
				pj_u64(&j, "client_port", s.sport);
				pj_str(&j, "user", s.user);
				pj_str(&j, "destination", s.dest);
				pj_u64(&j, "port", s.dport);
				pj_u64(&j, "bytes_up", s.up);
				pj_u64(&j, "bytes_down", s.down);
				pj_u64(&j, "age_ms", s.age_ms);
				pj_end_obj(&j);
			} else {
				char dest[PIPO_MAX_NAME + 16];
				if (s.dest[0] && strchr(s.dest, ':'))
					snprintf(dest, sizeof dest, "[%s]:%u", s.dest, s.dport);
				else if (s.dest[0])
					snprintf(dest, sizeof dest, "%s:%u", s.dest, s.dport);
				else
					snprintf(dest, sizeof dest, "-");
				printf("%-8" PRIu64 " %-10s %-24s %-16s %-30s %10s %10s %10s\n", s.id,
				       state_name(s.state), cl, s.user[0] ? s.user : "-", dest,
				       pc_bytes(ub, sizeof ub, s.up), pc_bytes(db, sizeof db, s.down),
				       pc_duration(ab, sizeof ab, s.age_ms / 1000));
			}
		}
		if (rc)
			break;
		if (!pipo_cur_done(&c)) {
			rc = malformed(x, "sessions");
			break;
		}
		if (!x->f_all)
			break;
	}
	if (x->json) {
		pj_end_arr(&j);
		pj_u64(&j, "count", total);
		pj_bool(&j, "more", more && rc == PC_EXIT_OK);
		pj_end_obj(&j);
		pj_finish(&j);
	} else if (rc == PC_EXIT_OK) {
		if (total == 0)
			printf("no sessions\n");
		else if (more)
			printf("(%zu shown; more sessions exist: use --all)\n", total);
	}
	return rc;
}

static int cmd_session_close(struct pc_ctx *x, char **args)
{
	uint64_t id;
	if (!parse_u64(args[0], &id)) {
		pc_err("session close: '%s' is not a session id (a decimal number)", args[0]);
		return PC_EXIT_USAGE;
	}
	uint8_t p[8];
	struct pipo_buf b = {.p = p, .cap = sizeof p};
	pipo_put_u64(&b, id);
	struct pc_resp r;
	int rc = round_trip(x, PIPO_MODIFY, PIPO_M_CLOSE_SESSION, p, b.len, &r);
	if (rc)
		return rc;
	if (r.f.status == PIPO_E_NOT_FOUND) {
		pc_err("session close %" PRIu64 ": no such session (status 0x%02x)", id, r.f.status);
		return PC_EXIT_STATUS;
	}
	if (r.f.status)
		return status_fail("session close", r.f.status, NULL);
	if (x->json) {
		struct pc_json j;
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
		pj_bool(&j, "ok", true);
		pj_u64(&j, "session", id);
		pj_end_obj(&j);
		pj_finish(&j);
	} else {
		printf("session %" PRIu64 " closed\n", id);
	}
	return PC_EXIT_OK;
}

static int cmd_reload(struct pc_ctx *x, char **args)
{
	(void)args;
	struct pc_resp r;
	int rc = round_trip(x, PIPO_MODIFY, PIPO_M_RELOAD, NULL, 0, &r);
	if (rc)
		return rc;
	if (r.f.status == PIPO_E_INVALID)
		return status_fail("reload", r.f.status,
		                   "the configuration file is invalid (running configuration kept; "
		                   "see the server's log) or the server runs without one");
	if (r.f.status)
		return status_fail("reload", r.f.status, NULL);
	if (x->json) {
		struct pc_json j;
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
		pj_bool(&j, "ok", true);
		pj_end_obj(&j);
		pj_finish(&j);
	} else {
		printf("configuration reloaded\n");
	}
	return PC_EXIT_OK;
}

/* ---- settings ----------------------------------------------------------- */

enum setting_kind { K_SIZE, K_SECONDS, K_BOOL, K_ANON, K_DOH_METHOD, K_DOH_URL };

struct setting {
	const char *name;
	enum setting_kind kind;
	uint8_t q, m;
	const char *range; /* shown when the server refuses a value */
};

static const struct setting settings[] = {
    {"buffer-size", K_SIZE, PIPO_Q_BUFFER_SIZE, PIPO_M_BUFFER_SIZE, "4096..1048576 bytes"},
    {"handshake-timeout", K_SECONDS, PIPO_Q_HANDSHAKE_TIMEOUT, PIPO_M_HANDSHAKE_TIMEOUT,
     "1..86400 seconds"},
    {"idle-timeout", K_SECONDS, PIPO_Q_IDLE_TIMEOUT, PIPO_M_IDLE_TIMEOUT, "1..604800 seconds"},
    {"connect-timeout", K_SECONDS, PIPO_Q_CONNECT_TIMEOUT, PIPO_M_CONNECT_TIMEOUT,
     "1..3600 seconds"},
    {"dissectors", K_BOOL, PIPO_Q_DISSECTORS, PIPO_M_DISSECTORS, "on or off"},
    {"idle-cleanup", K_BOOL, PIPO_Q_IDLE_CLEANUP, PIPO_M_IDLE_CLEANUP, "on or off"},
    {"splice", K_BOOL, PIPO_Q_SPLICE, PIPO_M_SPLICE, "on or off"},
    {"pipe-size", K_SIZE, PIPO_Q_PIPE_SIZE, PIPO_M_PIPE_SIZE, "4096..1048576 bytes"},
    {"anonymous", K_ANON, PIPO_Q_ANONYMOUS, PIPO_M_ANONYMOUS, "auto, always or never"},
    {"doh-method", K_DOH_METHOD, PIPO_Q_DOH, PIPO_M_DOH, "get or post"},
    {"doh-url", K_DOH_URL, PIPO_Q_DOH, PIPO_M_DOH, "an http:// or https:// URL"},
};

#define NSETTINGS (sizeof settings / sizeof settings[0])

const char *const pc_settings[] = {"buffer-size",  "handshake-timeout", "idle-timeout",
                                   "connect-timeout", "dissectors",   "idle-cleanup",
                                   "splice",          "pipe-size",    "anonymous",
                                   "doh-method",      "doh-url"};
const size_t pc_nsettings = sizeof pc_settings / sizeof pc_settings[0];

static const struct setting *find_setting(const char *name)
{
	for (size_t i = 0; i < NSETTINGS; i++)
		if (!strcmp(settings[i].name, name))
			return &settings[i];
	return NULL;
}

static void unknown_setting(const char *what, const char *name)
{
	char list[256] = "";
	for (size_t i = 0; i < NSETTINGS; i++) {
		strcat(list, i ? ", " : "");
		strcat(list, settings[i].name);
	}
	pc_err("%s: unknown setting '%s' (one of: %s)", what, name, list);
}

struct setting_val {
	bool have;
	uint8_t status;
	uint32_t u;
	uint8_t b;
	char url[PIPO_MAX_URL + 1];
};

static bool decode_setting(const struct setting *s, const struct pc_resp *r,
                           struct setting_val *v)
{
	struct pipo_cur c = {.p = r->payload, .len = r->f.len};
	switch (s->kind) {
	case K_SIZE:
	case K_SECONDS:
		v->u = pipo_get_u32(&c);
		break;
	case K_BOOL:
	case K_ANON:
		v->b = pipo_get_u8(&c);
		break;
	case K_DOH_METHOD:
	case K_DOH_URL:
		v->b = pipo_get_u8(&c);
		pipo_get_str16(&c, v->url, sizeof v->url);
		break;
	}
	return pipo_cur_done(&c);
}

static void print_setting(struct pc_json *j, const struct setting *s, const struct setting_val *v)
{
	char buf[48];
	if (j) {
		switch (s->kind) {
		case K_SIZE:
		case K_SECONDS:
			pj_u64(j, s->name, v->u);
			break;
		case K_BOOL:
			pj_bool(j, s->name, v->b != 0);
			break;
		case K_ANON:
			pj_str(j, s->name, v->b < 3 ? anon_names[v->b] : "unknown");
			break;
		case K_DOH_METHOD:
			pj_str(j, s->name, v->b < 2 ? doh_methods[v->b] : "unknown");
			break;
		case K_DOH_URL:
			pj_str(j, s->name, v->url);
			break;
		}
		return;
	}
	switch (s->kind) {
	case K_SIZE:
		printf("%-18s %" PRIu32 " (%s)\n", s->name, v->u, pc_bytes(buf, sizeof buf, v->u));
		break;
	case K_SECONDS:
		printf("%-18s %" PRIu32 " s (%s)\n", s->name, v->u,
		       pc_duration(buf, sizeof buf, v->u));
		break;
	case K_BOOL:
		printf("%-18s %s\n", s->name, v->b ? "on" : "off");
		break;
	case K_ANON:
		printf("%-18s %s\n", s->name, v->b < 3 ? anon_names[v->b] : "unknown");
		break;
	case K_DOH_METHOD:
		printf("%-18s %s\n", s->name, v->b < 2 ? doh_methods[v->b] : "unknown");
		break;
	case K_DOH_URL:
		printf("%-18s %s\n", s->name, v->url[0] ? v->url : "(none)");
		break;
	}
}

/* get [SETTING]: the queries for all requested settings go out in one
 * write; doh-method and doh-url share one query. */
static int cmd_get(struct pc_ctx *x, char **args)
{
	const struct setting *want[NSETTINGS];
	size_t nwant = 0;
	if (args[0]) {
		const struct setting *s = find_setting(args[0]);
		if (!s) {
			unknown_setting("get", args[0]);
			return PC_EXIT_USAGE;
		}
		want[nwant++] = s;
	} else {
		for (size_t i = 0; i < NSETTINGS; i++)
			want[nwant++] = &settings[i];
	}
	uint8_t qs[NSETTINGS];
	size_t nq = 0;
	for (size_t i = 0; i < nwant; i++) {
		bool dup = false;
		for (size_t k = 0; k < nq; k++)
			dup |= qs[k] == want[i]->q;
		if (!dup)
			qs[nq++] = want[i]->q;
	}
	int rc = need_conn(x);
	if (rc)
		return rc;
	struct pc_batch b;
	pc_batch_init(&b);
	for (size_t k = 0; k < nq; k++)
		pc_batch_add(&b, PIPO_QUERY, qs[k], NULL, 0);
	rc = pc_send(x->conn, &b);
	if (rc)
		return rc;
	static struct setting_val vals[NSETTINGS];
	for (size_t k = 0; k < nq; k++) {
		struct pc_resp r;
		rc = pc_recv(x->conn, PIPO_QUERY, qs[k], &r);
		if (rc)
			return rc;
		for (size_t i = 0; i < nwant; i++) {
			if (want[i]->q != qs[k])
				continue;
			struct setting_val *v = &vals[i];
			memset(v, 0, sizeof *v);
			v->status = r.f.status;
			if (r.f.status == PIPO_OK) {
				if (!decode_setting(want[i], &r, v))
					return malformed(x, "get");
				v->have = true;
			}
		}
	}
	int result = PC_EXIT_OK;
	struct pc_json j;
	if (x->json) {
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
	}
	for (size_t i = 0; i < nwant; i++) {
		if (!vals[i].have) {
			char what[64];
			snprintf(what, sizeof what, "get %s", want[i]->name);
			result = status_fail(what, vals[i].status, NULL);
			if (x->json)
				pj_null(&j, want[i]->name);
			continue;
		}
		print_setting(x->json ? &j : NULL, want[i], &vals[i]);
	}
	if (x->json) {
		pj_end_obj(&j);
		pj_finish(&j);
	}
	return result;
}

static int cmd_set(struct pc_ctx *x, char **args)
{
	const struct setting *s = find_setting(args[0]);
	const char *val = args[1];
	if (!s) {
		unknown_setting("set", args[0]);
		return PC_EXIT_USAGE;
	}
	uint8_t p[3 + PIPO_MAX_URL];
	struct pipo_buf b = {.p = p, .cap = sizeof p};
	struct setting_val shown;
	memset(&shown, 0, sizeof shown);
	int bv;
	switch (s->kind) {
	case K_SIZE:
		if (!parse_size(val, &shown.u)) {
			pc_err("set %s: '%s' is not a size in bytes (e.g. 65536, 64K, 1M)", s->name,
			       val);
			return PC_EXIT_USAGE;
		}
		pipo_put_u32(&b, shown.u);
		break;
	case K_SECONDS:
		if (!parse_seconds(val, &shown.u)) {
			pc_err("set %s: '%s' is not a duration (seconds, or with s, m, h or d)", s->name,
			       val);
			return PC_EXIT_USAGE;
		}
		pipo_put_u32(&b, shown.u);
		break;
	case K_BOOL:
		bv = parse_bool(val);
		if (bv < 0) {
			pc_err("set %s: '%s' is not on or off", s->name, val);
			return PC_EXIT_USAGE;
		}
		shown.b = (uint8_t)bv;
		pipo_put_u8(&b, shown.b);
		break;
	case K_ANON:
		for (bv = 0; bv < 3 && strcmp(val, anon_names[bv]); bv++)
			;
		if (bv == 3) {
			pc_err("set anonymous: '%s' is not auto, always or never", val);
			return PC_EXIT_USAGE;
		}
		shown.b = (uint8_t)bv;
		pipo_put_u8(&b, shown.b);
		break;
	case K_DOH_METHOD:
		if (!strcasecmp(val, "get"))
			shown.b = 0;
		else if (!strcasecmp(val, "post"))
			shown.b = 1;
		else {
			pc_err("set doh-method: '%s' is not get or post", val);
			return PC_EXIT_USAGE;
		}
		pipo_put_u8(&b, shown.b);
		pipo_put_u16(&b, 0); /* keep the URL */
		break;
	case K_DOH_URL: {
		size_t n = strlen(val);
		if (n == 0 || n > PIPO_MAX_URL) {
			pc_err("set doh-url: the URL must be 1..%d bytes (got %zu)", PIPO_MAX_URL, n);
			return PC_EXIT_USAGE;
		}
		/* M_DOH carries the method too: keep the current one. */
		struct pc_resp r;
		int rc = round_trip(x, PIPO_QUERY, PIPO_Q_DOH, NULL, 0, &r);
		if (rc)
			return rc;
		if (r.f.status)
			return status_fail("set doh-url", r.f.status, NULL);
		struct setting_val cur;
		if (!decode_setting(s, &r, &cur))
			return malformed(x, "set doh-url");
		pipo_put_u8(&b, cur.b);
		pipo_put_u16(&b, (uint16_t)n);
		pipo_put_bytes(&b, val, n);
		snprintf(shown.url, sizeof shown.url, "%s", val);
		break;
	}
	}
	struct pc_resp r;
	int rc = round_trip(x, PIPO_MODIFY, s->m, p, b.len, &r);
	if (rc)
		return rc;
	char what[64];
	snprintf(what, sizeof what, "set %s %s", s->name, strlen(val) < 24 ? val : "...");
	if (r.f.status == PIPO_E_INVALID) {
		char hint[96];
		snprintf(hint, sizeof hint, "the server accepts %s", s->range);
		return status_fail(what, r.f.status, hint);
	}
	if (r.f.status)
		return status_fail(what, r.f.status, NULL);
	if (x->json) {
		struct pc_json j;
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
		pj_bool(&j, "ok", true);
		print_setting(&j, s, &shown);
		pj_end_obj(&j);
		pj_finish(&j);
	} else {
		printf("set: ");
		print_setting(NULL, s, &shown);
	}
	return PC_EXIT_OK;
}

/* ---- table and dispatch ------------------------------------------------- */

const struct pc_command pc_commands[] = {
    {"stats", NULL, 0, 0, 0, cmd_stats, "stats", "server summary and every metric"},
    {"top", NULL, 0, 0, PCF_ITER | PCF_INTERVAL, cmd_top, "top [--iterations N] [--interval S]",
     "metrics with rates, refreshed every second (q or Ctrl-C quits)"},
    {"server", NULL, 0, 0, 0, cmd_server, "server", "version, pid, uptime, workers"},
    {"users", NULL, 0, 0, 0, cmd_users, "users", "users with role, connections and traffic"},
    {"user", "add", 1, 1, PCF_ADMIN, cmd_user_add, "user add NAME [--admin]",
     "add a user (password: PIPO_NEW_PASSWORD or prompt)"},
    {"user", "del", 1, 1, 0, cmd_user_del, "user del NAME",
     "delete a user and close its sessions"},
    {"user", "passwd", 1, 1, 0, cmd_user_passwd, "user passwd NAME", "change a user's password"},
    {"user", "conns", 1, 1, 0, cmd_user_conns, "user conns NAME",
     "a user's current connections"},
    {"sessions", NULL, 0, 0, PCF_ALL, cmd_sessions, "sessions [--all]",
     "live SOCKS sessions (first 256, or all)"},
    {"session", "close", 1, 1, 0, cmd_session_close, "session close ID", "close a session"},
    {"get", NULL, 0, 1, 0, cmd_get, "get [SETTING]", "show one setting, or all"},
    {"set", NULL, 2, 2, 0, cmd_set, "set SETTING VALUE", "change a setting at run time"},
    {"reload", NULL, 0, 0, 0, cmd_reload, "reload", "re-read the configuration file (SIGHUP)"},
};
const size_t pc_ncommands = sizeof pc_commands / sizeof pc_commands[0];

void pc_print_commands(FILE *f)
{
	for (size_t i = 0; i < pc_ncommands; i++)
		fprintf(f, "  %-36s %s\n", pc_commands[i].synopsis, pc_commands[i].help);
	fprintf(f, "  %-36s %s\n", "", "settings: buffer-size, handshake-timeout, idle-timeout,");
	fprintf(f, "  %-36s %s\n", "", "connect-timeout, dissectors on|off, idle-cleanup on|off,");
	fprintf(f, "  %-36s %s\n", "", "splice on|off, pipe-size,");
	fprintf(f, "  %-36s %s\n", "", "anonymous auto|always|never, doh-method get|post, doh-url");
}

static const char *flag_name(int bit)
{
	switch (bit) {
	case PCF_ADMIN: return "--admin";
	case PCF_ALL: return "--all";
	case PCF_ITER: return "--iterations";
	case PCF_INTERVAL: return "--interval";
	default: return "--json";
	}
}

const struct pc_command *pc_lookup(struct pc_ctx *x, int argc, char **argv, int *nwords)
{
	/* One-shot: main() adds the "Try --help" line. */
	const char *hint = x->shell ? " (type 'help')" : "";
	const struct pc_command *cmd = NULL;
	bool name_known = false;
	for (size_t i = 0; i < pc_ncommands && !cmd; i++) {
		const struct pc_command *c = &pc_commands[i];
		if (strcmp(c->name, argv[0]))
			continue;
		name_known = true;
		if (!c->sub || (argc > 1 && !strcmp(c->sub, argv[1])))
			cmd = c;
	}
	if (!cmd) {
		if (name_known && argc > 1)
			pc_err("unknown command '%s %s'%s", argv[0], argv[1], hint);
		else if (name_known)
			pc_err("'%s' needs a subcommand%s", argv[0], hint);
		else
			pc_err("unknown command '%s'%s", argv[0], hint);
		return NULL;
	}
	int words = cmd->sub ? 2 : 1;
	int n = argc - words;
	if (n < cmd->min_args || n > cmd->max_args) {
		pc_err("%s: %s (usage: %s)%s", cmd->sub ? argv[1] : argv[0],
		       n < cmd->min_args ? "missing argument" : "too many arguments", cmd->synopsis,
		       hint);
		return NULL;
	}
	int bad = x->f_seen & ~(cmd->flags | PCF_JSON);
	if (bad) {
		pc_err("option %s is not valid for '%s%s%s'%s", flag_name(bad & -bad), cmd->name,
		       cmd->sub ? " " : "", cmd->sub ? cmd->sub : "", hint);
		return NULL;
	}
	*nwords = words;
	return cmd;
}

int pc_dispatch(struct pc_ctx *x, int argc, char **argv)
{
	int words;
	const struct pc_command *cmd = pc_lookup(x, argc, argv, &words);
	if (!cmd)
		return PC_EXIT_USAGE;
	char *args[3] = {NULL, NULL, NULL};
	for (int i = words; i < argc && i - words < 2; i++)
		args[i - words] = argv[i];
	int rc = cmd->run(x, args);
	fflush(stdout);
	if ((rc == PC_EXIT_PROTOCOL || rc == PC_EXIT_CONNECT) && x->connected) {
		/* The stream can no longer be trusted: the shell starts afresh. */
		pc_close(x->conn);
		x->connected = false;
	}
	return rc;
}
