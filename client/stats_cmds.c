/* pipoClient: stats, server and top (server information and metrics). */
#include "pc.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <signal.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

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
	case PIPO_MET_SESSIONS_LIMITED:
		return true;
	default:
		return false;
	}
}

/* Server info and metrics, pipelined: both requests in one write. */
static int fetch_stats(struct pc_ctx *x, struct server_info *si, struct metrics *m,
                       const char *what)
{
	int rc = pc_need_conn(x);
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
		return pc_malformed(x, what);
	rc = pc_recv(x->conn, PIPO_QUERY, PIPO_Q_METRICS, &r);
	if (rc)
		goto broken;
	if (!server_ok)
		return pc_status_fail(what, server_st, NULL);
	if (r.f.status != PIPO_OK)
		return pc_status_fail(what, r.f.status, NULL);
	if (!decode_metrics(&r, m))
		return pc_malformed(x, what);
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

int cmd_stats(struct pc_ctx *x, char **args)
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

int cmd_server(struct pc_ctx *x, char **args)
{
	(void)args;
	struct pc_resp r;
	int rc = pc_round_trip(x, PIPO_QUERY, PIPO_Q_SERVER, NULL, 0, &r);
	if (rc)
		return rc;
	if (r.f.status)
		return pc_status_fail("server", r.f.status, NULL);
	struct server_info si;
	if (!decode_server(&r, &si))
		return pc_malformed(x, "server");
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

int cmd_top(struct pc_ctx *x, char **args)
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

