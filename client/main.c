/*
 * pipoClient command line: global options (transport, credentials, output)
 * before the command word; after it, the command's words with its flags
 * anywhere among them (GNU order), and the global options again, except
 * where the command has an option of the same name (rule test --user).
 * No command: the interactive shell.
 */
#include "pc.h"

#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f,
	        "Usage: pipoClient [OPTIONS] [COMMAND [ARGS]]\n"
	        "Administer a running socks5d over the pipo protocol (version %d).\n"
	        "Without a command: an interactive shell (line editing, history, Tab completion).\n"
	        "\n"
	        "Connection:\n"
	        "  -L, --addr ADDR        server SCTP address (default %s; IPv6 too)\n"
	        "  -P, --port PORT        server SCTP port (default %d)\n"
	        "  -S, --socket PATH      use the server's unix socket instead of SCTP\n"
	        "  -u, --user NAME        administrator name (default: $PIPO_USER)\n"
	        "  -t, --timeout SECONDS  give up on a silent server (default %d)\n"
	        "Output:\n"
	        "  -j, --json             JSON output: one document on stdout\n"
	        "  -h, --help             this help\n"
	        "  -V, --version          print the version\n"
	        "\n"
	        "Commands:\n",
	        PIPO_VERSION, PC_DEFAULT_ADDR, PC_DEFAULT_PORT, PC_DEFAULT_TIMEOUT);
	pc_print_commands(f);
	fprintf(f, "\n"
	           "Environment: PIPO_PASSWORD (the administrator's password; else a prompt on the\n"
	           "terminal), PIPO_NEW_PASSWORD (for user add/passwd), PIPO_USER.\n"
	           "Exit status: 0 ok, 1 the server answered an error status, 2 usage error,\n"
	           "3 cannot connect or connection lost, 4 authentication failed, 5 protocol error.\n");
}

static int bad_usage(void)
{
	fprintf(stderr, "Try 'pipoClient --help' for more information.\n");
	return PC_EXIT_USAGE;
}

static bool parse_uint(const char *s, unsigned long lo, unsigned long hi, unsigned long *out)
{
	char *end;
	if (!s[0] || s[0] == '-' || s[0] == '+')
		return false;
	unsigned long v = strtoul(s, &end, 10);
	if (*end || v < lo || v > hi)
		return false;
	*out = v;
	return true;
}

/* One option as getopt_long returned it: -1 to go on, else an exit status
 * (a usage error, or 0 after --help / --version). */
static int take_option(struct pc_ctx *x, struct pc_target *t, int opt, char **argv)
{
	unsigned long v;
	int flag = pc_cmd_flag(x, opt, optarg);
	if (flag < 0)
		return bad_usage();
	if (flag > 0)
		return -1;
	switch (opt) {
	case 'L':
		t->addr = optarg;
		break;
	case 'P':
		if (!parse_uint(optarg, 1, 65535, &v)) {
			pc_err("option --port: '%s' is not a port number in 1..65535", optarg);
			return bad_usage();
		}
		t->port = (unsigned)v;
		break;
	case 'S':
		if (!optarg[0]) {
			pc_err("option --socket: empty path");
			return bad_usage();
		}
		t->socket = optarg;
		break;
	case 'u':
		x->user = optarg;
		break;
	case 't':
		if (!parse_uint(optarg, 1, 3600, &v)) {
			pc_err("option --timeout: '%s' is not a number of seconds in 1..3600", optarg);
			return bad_usage();
		}
		t->timeout_ms = (int)v * 1000;
		break;
	case 'j':
		x->json = true;
		break;
	case 'h':
		usage(stdout);
		return PC_EXIT_OK;
	case 'V':
		printf("pipoClient %s (pipo protocol %d)\n", SOCKS5D_VERSION, PIPO_VERSION);
		return PC_EXIT_OK;
	case ':':
		pc_err("option %s needs a value", argv[optind - 1]);
		return bad_usage();
	default:
		if (optopt && optopt != '?')
			pc_err("unknown option '-%c'", optopt);
		else
			pc_err("unknown option '%s'", argv[optind - 1]);
		return bad_usage();
	}
	return -1;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"addr", required_argument, NULL, 'L'},
	    {"port", required_argument, NULL, 'P'},
	    {"socket", required_argument, NULL, 'S'},
	    {"user", required_argument, NULL, 'u'},
	    {"timeout", required_argument, NULL, 't'},
	    {"json", no_argument, NULL, 'j'},
	    {"help", no_argument, NULL, 'h'},
	    {"version", no_argument, NULL, 'V'},
	    PC_CMD_FLAG_OPTIONS,
	    {NULL, 0, NULL, 0},
	};
	struct pc_target t = {
	    .addr = PC_DEFAULT_ADDR,
	    .port = PC_DEFAULT_PORT,
	    .socket = NULL,
	    .timeout_ms = PC_DEFAULT_TIMEOUT * 1000,
	};
	static struct pc_conn conn;
	static struct pc_ctx x;
	x.conn = &conn;
	x.target = &t;
	x.user = getenv("PIPO_USER");
	x.f_iterations = -1;
	x.f_interval = 1.0;
	conn.fd = -1;
	signal(SIGPIPE, SIG_IGN);

	opterr = 0;
	int opt, rc;
	/* The options before the command word ("+": stop at the first word). */
	while ((opt = getopt_long(argc, argv, "+:L:P:S:u:t:jhV", longopts, NULL)) != -1)
		if ((rc = take_option(&x, &t, opt, argv)) >= 0)
			return rc;
	int nargs = 0;
	char **args = NULL;
	if (optind < argc) {
		/* The command's words, options anywhere among them (GNU order).
		 * The command's own options come first: after "rule", --user
		 * is the rule test's user, not the login. */
		char *name = argv[optind];
		bool own_user = pc_name_takes_flag(name, PCF_USER);
		char **sub = argv + optind;
		int subc = argc - optind;
		sub[0] = argv[0];
		optind = 0; /* glibc: full re-initialisation for a new vector */
		while ((opt = getopt_long(subc, sub, ":L:P:S:u:t:jhV", longopts, NULL)) != -1)
			if ((rc = take_option(&x, &t, opt == 'u' && own_user ? PC_CMD_USER_OPTION : opt,
			                      sub)) >= 0)
				return rc;
		sub[optind - 1] = name;
		args = sub + optind - 1;
		nargs = subc - optind + 1;
	}
	if (!x.user || !x.user[0] || strlen(x.user) > PIPO_MAX_NAME) {
		pc_err(x.user && x.user[0] ? "administrator name too long (at most 255 bytes)"
		                           : "no administrator name: give -u NAME before the command (or set "
		                             "PIPO_USER)");
		return bad_usage();
	}
	if (nargs == 0) {
		if (x.f_seen) {
			pc_err("command options need a command");
			return bad_usage();
		}
		x.shell = true;
		rc = pc_shell(&x);
	} else {
		int words;
		/* Check the command before any connection or prompt. */
		if (!pc_lookup(&x, nargs, args, &words))
			return bad_usage();
		rc = pc_dispatch(&x, nargs, args);
	}
	if (x.connected)
		pc_close(&conn);
	explicit_bzero(x.pass, sizeof x.pass);
	if (fflush(stdout) != 0 && rc == PC_EXIT_OK) {
		pc_err("cannot write the output");
		rc = PC_EXIT_USAGE;
	}
	return rc;
}
