/*
 * pipoClient interactive shell: libedit line editing, in-memory history and
 * tab completion of command names, subcommands, settings and their values.
 * Without a terminal on stdin the same commands are read line by line
 * (scripts may pipe commands in).  One session serves every command; when
 * the server has closed it (60 s of silence), the shell logs in again.
 */
#include "pc.h"

#include "../shared/settings.h"

#include <getopt.h>
#include <histedit.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LINE_MAX_WORDS 16

/* libedit (3.1-20221030) never frees the copies (wcsdup) it makes of the
 * names given to EL_ADDFN; nothing else here calls wcsdup.  Tells the
 * sanitizer build's LeakSanitizer; unused in the release build. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
	return "leak:wcsdup\n";
}

const char *__lsan_default_options(void);
const char *__lsan_default_options(void)
{
	return "print_suppressions=0";
}

int pc_split(char *line, char **argv, int max)
{
	int n = 0;
	char *r = line, *w = line;
	while (*r) {
		while (*r == ' ' || *r == '\t' || *r == '\n' || *r == '\r')
			r++;
		if (!*r)
			break;
		if (n == max)
			return -1;
		argv[n++] = w;
		char quote = 0;
		while (*r && (quote || (*r != ' ' && *r != '\t' && *r != '\n' && *r != '\r'))) {
			if (quote && *r == quote) {
				quote = 0;
				r++;
			} else if (!quote && (*r == '\'' || *r == '"')) {
				quote = *r++;
			} else if (*r == '\\' && r[1] && quote != '\'') {
				*w++ = r[1];
				r += 2;
			} else {
				*w++ = *r++;
			}
		}
		if (quote)
			return -2;
		if (*r)
			r++;
		*w++ = '\0';
	}
	return n;
}

int pc_cmd_flag(struct pc_ctx *x, int opt, const char *arg)
{
	char *end;
	switch (opt) {
	case 'A':
		x->f_admin = true;
		x->f_seen |= PCF_ADMIN;
		return 1;
	case 'a':
		x->f_all = true;
		x->f_seen |= PCF_ALL;
		return 1;
	case 'n':
		x->f_iterations = strtol(arg, &end, 10);
		if (!arg[0] || *end || x->f_iterations < 1 || x->f_iterations > 1000000000) {
			pc_err("option --iterations: '%s' is not an integer in 1..1000000000", arg);
			return -1;
		}
		x->f_seen |= PCF_ITER;
		return 1;
	case 'i':
		x->f_interval = strtod(arg, &end);
		if (!arg[0] || *end || !(x->f_interval >= 0.1 && x->f_interval <= 3600)) {
			pc_err("option --interval: '%s' is not a number of seconds in 0.1..3600", arg);
			return -1;
		}
		x->f_seen |= PCF_INTERVAL;
		return 1;
	case PC_CMD_USER_OPTION:
		if (x->f_seen & PCF_USER) {
			pc_err("option --user given twice");
			return -1;
		}
		x->f_user = arg;
		x->f_seen |= PCF_USER;
		return 1;
	default:
		return 0;
	}
}

int pc_parse_cmd_flags(struct pc_ctx *x, int *argc, char **argv)
{
	static const struct option longopts[] = {
	    {"json", no_argument, NULL, 'j'},
	    {"user", required_argument, NULL, PC_CMD_USER_OPTION},
	    PC_CMD_FLAG_OPTIONS,
	    {NULL, 0, NULL, 0},
	};
	char *av[LINE_MAX_WORDS + 2];
	int ac = 0;
	av[ac++] = (char *)"pipoClient";
	for (int i = 0; i < *argc && ac < LINE_MAX_WORDS + 1; i++)
		av[ac++] = argv[i];
	av[ac] = NULL;
	optind = 0; /* glibc: full re-initialisation for a new vector */
	opterr = 0;
	int opt;
	while ((opt = getopt_long(ac, av, ":ju:", longopts, NULL)) != -1) {
		/* In the shell there is no login option: -u is the command's. */
		int flag = pc_cmd_flag(x, opt == 'u' ? PC_CMD_USER_OPTION : opt, optarg);
		if (flag < 0)
			return PC_EXIT_USAGE;
		if (flag > 0)
			continue;
		switch (opt) {
		case 'j':
			x->json = true;
			x->f_seen |= PCF_JSON;
			break;
		case ':':
			pc_err("option %s needs a value (type 'help')", av[optind - 1]);
			return PC_EXIT_USAGE;
		default:
			pc_err("unknown option '%s' (type 'help')", av[optind - 1]);
			return PC_EXIT_USAGE;
		}
	}
	int n = 0;
	for (int i = optind; i < ac; i++)
		argv[n++] = av[i];
	*argc = n;
	return PC_EXIT_OK;
}

static void shell_help(void)
{
	printf("Commands:\n");
	pc_print_commands(stdout);
	printf("  %-36s %s\n", "help", "this list");
	printf("  %-36s %s\n", "quit", "leave (also exit, Ctrl-D)");
	printf("Every query takes --json for JSON output.\n");
	fflush(stdout);
}

/* One line: returns the command's exit status, or -1 for quit. */
static int shell_line(struct pc_ctx *x, char *line, bool json_default)
{
	char *argv[LINE_MAX_WORDS + 1];
	int argc = pc_split(line, argv, LINE_MAX_WORDS);
	if (argc == -1) {
		pc_err("too many words (at most %d)", LINE_MAX_WORDS);
		return PC_EXIT_USAGE;
	}
	if (argc == -2) {
		pc_err("unterminated quote");
		return PC_EXIT_USAGE;
	}
	if (argc == 0)
		return PC_EXIT_OK;
	x->json = json_default;
	x->f_admin = x->f_all = false;
	x->f_iterations = -1;
	x->f_interval = 1.0;
	x->f_user = NULL;
	x->f_seen = 0;
	if (!strcmp(argv[0], "quit") || !strcmp(argv[0], "exit"))
		return -1;
	if (!strcmp(argv[0], "help") || !strcmp(argv[0], "?")) {
		shell_help();
		return PC_EXIT_OK;
	}
	int rc = pc_parse_cmd_flags(x, &argc, argv);
	if (rc)
		return rc;
	if (argc == 0) {
		pc_err("no command (type 'help')");
		return PC_EXIT_USAGE;
	}
	return pc_dispatch(x, argc, argv);
}

/* ---- completion ----------------------------------------------------------- */

static const char *const user_subs[] = {"add", "conns", "del", "passwd"};
static const char *const session_subs[] = {"close"};
static const char *const rule_subs[] = {"test"};
static const char *const rule_cmds[] = {"connect", "bind", "udp"};
static const char *const onoff[] = {"on", "off"};
static const char *const shell_only[] = {"help", "quit", "exit"};

struct cands {
	const char *v[64];
	size_t n;
};

static void add_cands(struct cands *c, const char *const *v, size_t n)
{
	for (size_t i = 0; i < n && c->n < 64; i++) {
		bool dup = false;
		for (size_t k = 0; k < c->n; k++)
			dup |= !strcmp(c->v[k], v[i]);
		if (!dup)
			c->v[c->n++] = v[i];
	}
}

static void candidates(char **words, int nw, struct cands *c)
{
	c->n = 0;
	if (nw == 0) {
		for (size_t i = 0; i < pc_ncommands; i++)
			add_cands(c, &pc_commands[i].name, 1);
		add_cands(c, shell_only, 3);
	} else if (nw == 1) {
		if (!strcmp(words[0], "user"))
			add_cands(c, user_subs, 4);
		else if (!strcmp(words[0], "session"))
			add_cands(c, session_subs, 1);
		else if (!strcmp(words[0], "rule"))
			add_cands(c, rule_subs, 1);
		else if (!strcmp(words[0], "get") || !strcmp(words[0], "set"))
			for (size_t i = 0; i < settings_count; i++)
				if (words[0][0] == 'g' || settings_table[i].when == SETTING_RUNTIME)
					add_cands(c, &settings_table[i].key, 1);
	} else if (nw >= 2 && !strcmp(words[0], "rule") && !strcmp(words[1], "test")) {
		/* rule test [--user U] SRC DST PORT: then the command */
		int pos = 0;
		for (int i = 2; i < nw; i++) {
			if (!strcmp(words[i], "--user") || !strcmp(words[i], "-u"))
				i++;
			else if (words[i][0] != '-')
				pos++;
		}
		if (pos == 3)
			add_cands(c, rule_cmds, 3);
	} else if (nw == 2 && !strcmp(words[0], "set")) {
		const struct setting_desc *d = settings_find(words[1]);
		if (d && d->type == SETTING_BOOL)
			add_cands(c, onoff, 2);
		else if (d && d->type == SETTING_CHOICE)
			for (size_t i = 0; d->choices[i]; i++)
				add_cands(c, &d->choices[i], 1);
	}
}

static unsigned char complete(EditLine *el, int ch)
{
	(void)ch;
	const LineInfo *li = el_line(el);
	char buf[512];
	size_t len = (size_t)(li->cursor - li->buffer);
	if (len >= sizeof buf)
		return CC_ERROR;
	memcpy(buf, li->buffer, len);
	buf[len] = '\0';
	/* The word being completed starts after the last blank. */
	char *cur = buf + len;
	while (cur > buf && cur[-1] != ' ' && cur[-1] != '\t')
		cur--;
	const char *prefix = cur;
	char before[sizeof buf];
	memcpy(before, buf, (size_t)(cur - buf));
	before[cur - buf] = '\0';
	char *words[LINE_MAX_WORDS];
	int nw = pc_split(before, words, LINE_MAX_WORDS);
	if (nw < 0)
		return CC_ERROR;
	struct cands c;
	candidates(words, nw, &c);
	size_t plen = strlen(prefix);
	const char *match[64];
	size_t nm = 0;
	for (size_t i = 0; i < c.n; i++)
		if (!strncmp(c.v[i], prefix, plen))
			match[nm++] = c.v[i];
	if (nm == 0)
		return CC_ERROR;
	if (nm == 1) {
		char ins[128];
		snprintf(ins, sizeof ins, "%s ", match[0] + plen);
		el_insertstr(el, ins);
		return CC_REFRESH;
	}
	/* Several: extend to the longest common prefix, else list them. */
	size_t common = strlen(match[0]);
	for (size_t i = 1; i < nm; i++) {
		size_t k = 0;
		while (k < common && match[i][k] == match[0][k])
			k++;
		common = k;
	}
	if (common > plen) {
		char ins[128];
		snprintf(ins, sizeof ins, "%.*s", (int)(common - plen), match[0] + plen);
		el_insertstr(el, ins);
		return CC_REFRESH;
	}
	fputc('\n', stdout);
	for (size_t i = 0; i < nm; i++)
		printf("%s%s", match[i], i + 1 < nm ? "  " : "\n");
	fflush(stdout);
	return CC_REDISPLAY;
}

static char *prompt(EditLine *el)
{
	(void)el;
	return (char *)"pipo> ";
}

/* ---- loop --------------------------------------------------------------- */

static void banner(struct pc_ctx *x)
{
	printf("pipoClient %s: connected to %s as %s. Type 'help' for commands, 'quit' to leave.\n",
	       SOCKS5D_VERSION, x->conn->where, x->user);
	fflush(stdout);
}

int pc_shell(struct pc_ctx *x)
{
	bool json_default = x->json;
	int rc = pc_login(x);
	if (rc)
		return rc;
	int last = PC_EXIT_OK;
	if (!isatty(STDIN_FILENO)) {
		/* Commands from a pipe or file: no prompt, no editing. */
		char line[4096];
		for (unsigned i = 0; i < 1000000 && fgets(line, sizeof line, stdin); i++) {
			int r = shell_line(x, line, json_default);
			if (r < 0)
				break;
			last = r;
		}
		return last;
	}
	banner(x);
	/* Ctrl-C at the prompt must not kill the shell (top has its own). */
	struct sigaction ign, old_int;
	memset(&ign, 0, sizeof ign);
	ign.sa_handler = SIG_IGN;
	sigaction(SIGINT, &ign, &old_int);

	EditLine *el = el_init("pipoClient", stdin, stdout, stderr);
	History *hist = history_init();
	HistEvent ev;
	if (!el || !hist) {
		pc_err("cannot initialise the line editor");
		return PC_EXIT_USAGE;
	}
	history(hist, &ev, H_SETSIZE, 500);
	history(hist, &ev, H_SETUNIQUE, 1);
	el_set(el, EL_EDITOR, "emacs");
	el_set(el, EL_PROMPT, prompt);
	el_set(el, EL_HIST, history, hist);
	el_set(el, EL_ADDFN, "pc-complete", "complete a command", complete);
	el_set(el, EL_BIND, "^I", "pc-complete", NULL);

	for (;;) {
		int count = 0;
		const char *l = el_gets(el, &count);
		if (!l || count <= 0) {
			fputc('\n', stdout);
			break;
		}
		char line[4096];
		snprintf(line, sizeof line, "%s", l);
		size_t n = strlen(line);
		while (n && (line[n - 1] == '\n' || line[n - 1] == '\r'))
			line[--n] = '\0';
		if (n)
			history(hist, &ev, H_ENTER, line);
		int r = shell_line(x, line, json_default);
		if (r < 0)
			break;
		last = r;
		fflush(stdout);
	}
	history_end(hist);
	el_end(el);
	sigaction(SIGINT, &old_int, NULL);
	(void)last; /* interactive: the session ended normally */
	return PC_EXIT_OK;
}
