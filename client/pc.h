/*
 * pipoClient: the administration client of socks5d (pipo protocol v2, see
 * docs/pipo-protocol.txt).  Single-threaded; every blocking wait is a
 * poll(2) bounded by the --timeout option.
 *
 * Modules: conn.c (transport, authentication, pipelined request batches),
 * out.c (units, tables, JSON writer), cmds.c (helpers, login, the command
 * table and dispatch), stats_cmds.c, user_cmds.c, session_cmds.c,
 * settings_cmds.c and rule_cmds.c (the commands), shell.c (the interactive shell on
 * libedit), main.c (command line).  All wire encoding and decoding goes
 * through admin/pipo.c; setting names and values through the server's own
 * table and parser (shared/settings.c), user names through shared/names.c.
 */
#ifndef PIPOCLIENT_PC_H
#define PIPOCLIENT_PC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../admin/pipo.h"

/* Exit statuses (documented in man/pipoClient.1). */
enum pc_exit {
	PC_EXIT_OK = 0,
	PC_EXIT_STATUS = 1,   /* the server answered an error status */
	PC_EXIT_USAGE = 2,    /* bad command line or command */
	PC_EXIT_CONNECT = 3,  /* cannot connect, or the connection broke */
	PC_EXIT_AUTH = 4,     /* authentication failed */
	PC_EXIT_PROTOCOL = 5, /* the server's answer does not parse */
};

#define PC_DEFAULT_ADDR "127.0.0.1"
#define PC_DEFAULT_PORT 8080
#define PC_DEFAULT_TIMEOUT 10
#define PC_BATCH_MAX 32

__attribute__((format(printf, 1, 2))) void pc_err(const char *fmt, ...);

/* ---- connection (conn.c) ---------------------------------------------- */

struct pc_target {
	const char *addr;   /* SCTP address (name, IPv4 or IPv6, brackets allowed) */
	unsigned port;      /* SCTP port */
	const char *socket; /* unix socket path: used instead of SCTP when set */
	int timeout_ms;
};

struct pc_conn {
	int fd;
	bool sctp;
	bool authenticating; /* for the message when the server hangs up */
	int timeout_ms;
	char where[320]; /* for messages: "127.0.0.1 port 8080 (SCTP)" */
	struct pipo_reader rd;
	uint8_t *payload; /* PIPO_MAX_RESPONSE bytes */
	uint8_t in[65536];
	size_t in_pos, in_len;
};

/* A batch of requests sent in one write (unix socket) or one sendmmsg(2)
 * with one SCTP message per request. */
struct pc_batch {
	uint8_t buf[8192];
	size_t len;
	size_t off[PC_BATCH_MAX + 1];
	size_t n;
	bool overflow;
};

struct pc_resp {
	struct pipo_frame f;
	const uint8_t *payload; /* valid until the next pc_recv() */
};

/* Each returns PC_EXIT_OK or an exit status after printing one line. */
int pc_connect(struct pc_conn *c, const struct pc_target *t);
int pc_auth(struct pc_conn *c, const char *user, const char *pass);
void pc_close(struct pc_conn *c);
/* The server closed the connection (seen without blocking). */
bool pc_peer_closed(struct pc_conn *c);

void pc_batch_init(struct pc_batch *b);
void pc_batch_add(struct pc_batch *b, uint8_t type, uint8_t cmd, const void *payload, size_t len);
int pc_send(struct pc_conn *c, const struct pc_batch *b);
/* Next response; it must echo type/cmd (else PC_EXIT_PROTOCOL). */
int pc_recv(struct pc_conn *c, uint8_t type, uint8_t cmd, struct pc_resp *r);

/* ---- output (out.c) ---------------------------------------------------- */

/* Human-readable units into a caller buffer (returned). */
const char *pc_bytes(char *buf, size_t cap, uint64_t v);
const char *pc_duration(char *buf, size_t cap, uint64_t seconds);
const char *pc_rate(char *buf, size_t cap, double per_second, bool bytes);
/* Text from the server for a terminal: control bytes (C0 and DEL) become
 * \xHH, so that a hostile server cannot move the cursor, clear the screen
 * or forge lines.  Truncated to fit; returns buf. */
#define PC_TEXT_MAX(n) ((n) * 4 + 1)
const char *pc_text(char *buf, size_t cap, const char *s);

/* Minimal streaming JSON writer: one document, pretty-printed.  Keys are
 * passed inside objects, NULL inside arrays. */
struct pc_json {
	FILE *f;
	int depth;
	bool first[32];
};

void pj_init(struct pc_json *j, FILE *f);
void pj_obj(struct pc_json *j, const char *key);
void pj_arr(struct pc_json *j, const char *key);
void pj_end_obj(struct pc_json *j);
void pj_end_arr(struct pc_json *j);
void pj_str(struct pc_json *j, const char *key, const char *s);
void pj_u64(struct pc_json *j, const char *key, uint64_t v);
void pj_double(struct pc_json *j, const char *key, double v);
void pj_bool(struct pc_json *j, const char *key, bool v);
void pj_null(struct pc_json *j, const char *key);
/* Ends the document with a newline. */
void pj_finish(struct pc_json *j);

/* ---- commands (cmds.c) ------------------------------------------------- */

struct pc_ctx {
	struct pc_conn *conn;
	bool connected;
	const struct pc_target *target;
	const char *user;
	char pass[PIPO_MAX_NAME + 1]; /* empty until known */
	bool json;
	bool shell; /* inside the interactive shell */
	/* Per-command flags (parsed by pc_parse_flags). */
	bool f_admin, f_all;
	long f_iterations; /* -1: unbounded */
	double f_interval;
	const char *f_user; /* rule test --user, NULL: anonymous */
	int f_seen; /* bit set of the flags given (for "not valid here" errors) */
};

enum pc_flag_bit {
	PCF_ADMIN = 1,
	PCF_ALL = 2,
	PCF_ITER = 4,
	PCF_INTERVAL = 8,
	PCF_JSON = 16,
	PCF_USER = 32, /* a command's own --user (rule test), not the login */
};

/* Positional arguments a command takes at most. */
#define PC_ARGS_MAX 4

struct pc_command {
	const char *name;
	const char *sub; /* second word or NULL */
	int min_args;    /* positional arguments after name [sub] */
	int max_args;
	int flags;       /* PCF_* accepted */
	int (*run)(struct pc_ctx *x, char **args);
	const char *synopsis;
	const char *help;
};

extern const struct pc_command pc_commands[];
extern const size_t pc_ncommands;

/* Helpers of the commands (cmds.c).  Each returns an exit status after
 * printing one line. */
int pc_status_fail(const char *what, uint8_t st, const char *hint);
int pc_malformed(struct pc_ctx *x, const char *what);
/* Connected and logged in (again, when the server ended a silent session). */
int pc_need_conn(struct pc_ctx *x);
/* One request, one response (a BUSY query is asked again, bounded). */
int pc_round_trip(struct pc_ctx *x, uint8_t type, uint8_t cmd, const void *payload, size_t len,
                  struct pc_resp *r);
/* A new user's password: PIPO_NEW_PASSWORD or a prompt. */
int pc_new_password(const char *name, char *out, size_t cap);
/* A modification done: the line, or {"ok": true} with key (when not NULL). */
void pc_done(struct pc_ctx *x, const char *line, const char *key, uint64_t v);

/* The commands (stats_cmds.c, user_cmds.c, session_cmds.c, settings_cmds.c). */
int cmd_stats(struct pc_ctx *x, char **args);
int cmd_server(struct pc_ctx *x, char **args);
int cmd_top(struct pc_ctx *x, char **args);
int cmd_users(struct pc_ctx *x, char **args);
int cmd_user_add(struct pc_ctx *x, char **args);
int cmd_user_del(struct pc_ctx *x, char **args);
int cmd_user_passwd(struct pc_ctx *x, char **args);
int cmd_user_conns(struct pc_ctx *x, char **args);
int cmd_sessions(struct pc_ctx *x, char **args);
int cmd_session_close(struct pc_ctx *x, char **args);
int cmd_reload(struct pc_ctx *x, char **args);
int cmd_get(struct pc_ctx *x, char **args);
int cmd_set(struct pc_ctx *x, char **args);
int cmd_rules(struct pc_ctx *x, char **args);
int cmd_rule_test(struct pc_ctx *x, char **args);

/* Find the command named by the words (flags already removed) and check
 * its arguments and flags; prints a usage error and returns NULL when they
 * do not fit.  *nwords: how many words name it. */
const struct pc_command *pc_lookup(struct pc_ctx *x, int argc, char **argv, int *nwords);
/* Look up and run; connects on first use.  Returns an exit status. */
int pc_dispatch(struct pc_ctx *x, int argc, char **argv);
void pc_print_commands(FILE *f);
/* Does a command named name (its first word) take the flag bit?  After
 * such a command's name, its own option wins over a global one. */
bool pc_name_takes_flag(const char *name, int bit);
/* The setting names for the help text (settings_cmds.c). */
void pc_print_settings(FILE *f);
/* Read a password with echo off from /dev/tty (confirm: ask twice). */
int pc_read_password(const char *prompt, bool confirm, char *out, size_t cap);

/* ---- shell (shell.c) --------------------------------------------------- */

int pc_shell(struct pc_ctx *x);
/* Split a command line into words (quotes and backslashes as in sh). */
int pc_split(char *line, char **argv, int max);
/* Parse the flags of a command line (GNU style, anywhere among the words);
 * leaves the positional words in argv[0..*argc).  Returns an exit status. */
int pc_parse_cmd_flags(struct pc_ctx *x, int *argc, char **argv);
/* The getopt_long rows of the flags pc_cmd_flag() takes (--user is the
 * login in main() before the command word, and after the name of a
 * command that takes PCF_USER it is that command's). */
#define PC_CMD_FLAG_OPTIONS                                                                        \
	{"admin", no_argument, NULL, 'A'}, {"all", no_argument, NULL, 'a'},                        \
	    {"iterations", required_argument, NULL, 'n'}, {"interval", required_argument, NULL, 'i'}
#define PC_CMD_USER_OPTION 'U' /* what pc_cmd_flag() takes for a command's --user */
/* One of the command flags that both the command line and the shell take
 * (-A, -a, -n N, -i SECONDS, PC_CMD_USER_OPTION NAME), as getopt_long
 * returned it: 1 when opt is one and was recorded, 0 when it is not one,
 * -1 (after a one-line error) when its value is out of range. */
int pc_cmd_flag(struct pc_ctx *x, int opt, const char *arg);
/* (Re)connect and authenticate with the context's target and credentials. */
int pc_login(struct pc_ctx *x);

#endif
