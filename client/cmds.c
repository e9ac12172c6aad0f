/*
 * pipoClient commands: the helpers every command uses, the administrator's
 * login, the command table and dispatch.  Each command parses its arguments
 * first (so that a usage error never costs a connection or a password
 * prompt), then connects on first use, sends its requests (pipelined when
 * several are independent), decodes the answers with admin/pipo.c and
 * prints a table or one JSON document.  The commands themselves:
 * stats_cmds.c, user_cmds.c, session_cmds.c, settings_cmds.c, rule_cmds.c.
 */
#include "pc.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers -------------------------------------------------------------- */

int pc_status_fail(const char *what, uint8_t st, const char *hint)
{
	pc_err("%s: %s (status 0x%02x)%s%s", what, pipo_status_name(st), st, hint ? ": " : "",
	       hint ? hint : "");
	return PC_EXIT_STATUS;
}

int pc_malformed(struct pc_ctx *x, const char *what)
{
	pc_err("%s: malformed response from %s", what, x->conn->where);
	return PC_EXIT_PROTOCOL;
}

int pc_need_conn(struct pc_ctx *x)
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
int pc_round_trip(struct pc_ctx *x, uint8_t type, uint8_t cmd, const void *payload,
                      size_t len, struct pc_resp *r)
{
	int rc = pc_need_conn(x);
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


void pc_done(struct pc_ctx *x, const char *line, const char *key, uint64_t v)
{
	if (!x->json) {
		printf("%s\n", line);
		return;
	}
	struct pc_json j;
	pj_init(&j, stdout);
	pj_obj(&j, NULL);
	pj_bool(&j, "ok", true);
	if (key)
		pj_u64(&j, key, v);
	pj_end_obj(&j);
	pj_finish(&j);
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
int pc_new_password(const char *name, char *out, size_t cap)
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
    {"rules", NULL, 0, 0, 0, cmd_rules, "rules", "the access rules in force, with their hits"},
    {"rule", "test", 3, 4, PCF_USER, cmd_rule_test, "rule test [--user U] SRC DST PORT [CMD]",
     "which rule decides a request (CMD: connect, bind, udp); nothing is sent"},
};
const size_t pc_ncommands = sizeof pc_commands / sizeof pc_commands[0];

void pc_print_commands(FILE *f)
{
	for (size_t i = 0; i < pc_ncommands; i++) {
		const struct pc_command *c = &pc_commands[i];
		if (strlen(c->synopsis) > 36) /* the help on a line of its own */
			fprintf(f, "  %s\n  %-36s %s\n", c->synopsis, "", c->help);
		else
			fprintf(f, "  %-36s %s\n", c->synopsis, c->help);
	}
	pc_print_settings(f);
}

bool pc_name_takes_flag(const char *name, int bit)
{
	for (size_t i = 0; i < pc_ncommands; i++)
		if (!strcmp(pc_commands[i].name, name) && (pc_commands[i].flags & bit))
			return true;
	return false;
}

static const char *flag_name(int bit)
{
	switch (bit) {
	case PCF_ADMIN: return "--admin";
	case PCF_ALL: return "--all";
	case PCF_ITER: return "--iterations";
	case PCF_INTERVAL: return "--interval";
	case PCF_USER: return "--user";
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
	char *args[PC_ARGS_MAX + 1] = {NULL};
	for (int i = words; i < argc && i - words < PC_ARGS_MAX; i++)
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

