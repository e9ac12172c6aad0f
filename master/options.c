#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../shared/log.h"

enum {
	OPT_ALLOW_ANON = 256,
	OPT_ANON,
	OPT_HANDSHAKE,
	OPT_CONNECT,
	OPT_IDLE,
	OPT_GRACE,
	OPT_BUFSIZE,
	OPT_NO_SPLICE,
	OPT_PIPE_SIZE,
	OPT_ACCEPT,
	OPT_LOGLEVEL,
	OPT_DOH_IP,
	OPT_DOH_PORT,
	OPT_DOH_HOST,
	OPT_DOH_PATH,
	OPT_DOH_QUERY,
	OPT_DOH_POST,
	OPT_DOH_URL,
	OPT_DOH_CA,
	OPT_NO_FALLBACK,
	OPT_DNS_SERVER,
	OPT_HASH,
	OPT_ADMIN_SOCKET,
	OPT_MAX_UNAUTH,
};

static const struct option longopts[] = {
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'v'},
	{"config", required_argument, NULL, 'f'},
	{"listen", required_argument, NULL, 'l'},
	{"port", required_argument, NULL, 'p'},
	{"admin-addr", required_argument, NULL, 'L'},
	{"admin-port", required_argument, NULL, 'P'},
	{"user", required_argument, NULL, 'u'},
	{"admin", required_argument, NULL, 'a'},
	{"no-dissectors", no_argument, NULL, 'N'},
	{"no-idle-cleanup", no_argument, NULL, 'D'},
	{"workers", required_argument, NULL, 'w'},
	{"allow-anonymous", no_argument, NULL, OPT_ALLOW_ANON},
	{"anonymous", required_argument, NULL, OPT_ANON},
	{"handshake-timeout", required_argument, NULL, OPT_HANDSHAKE},
	{"connect-timeout", required_argument, NULL, OPT_CONNECT},
	{"idle-timeout", required_argument, NULL, OPT_IDLE},
	{"grace", required_argument, NULL, OPT_GRACE},
	{"buffer-size", required_argument, NULL, OPT_BUFSIZE},
	{"no-splice", no_argument, NULL, OPT_NO_SPLICE},
	{"pipe-size", required_argument, NULL, OPT_PIPE_SIZE},
	{"accept", required_argument, NULL, OPT_ACCEPT},
	{"log-level", required_argument, NULL, OPT_LOGLEVEL},
	{"doh-ip", required_argument, NULL, OPT_DOH_IP},
	{"doh-port", required_argument, NULL, OPT_DOH_PORT},
	{"doh-host", required_argument, NULL, OPT_DOH_HOST},
	{"doh-path", required_argument, NULL, OPT_DOH_PATH},
	{"doh-query", required_argument, NULL, OPT_DOH_QUERY},
	{"doh-method-post", no_argument, NULL, OPT_DOH_POST},
	{"doh-method", required_argument, NULL, 'm'},
	{"doh-url", required_argument, NULL, OPT_DOH_URL},
	{"doh-ca-file", required_argument, NULL, OPT_DOH_CA},
	{"no-dns-fallback", no_argument, NULL, OPT_NO_FALLBACK},
	{"dns-server", required_argument, NULL, OPT_DNS_SERVER},
	{"hash-password", no_argument, NULL, OPT_HASH},
	{"admin-socket", required_argument, NULL, OPT_ADMIN_SOCKET},
	{"max-unauth-per-source", required_argument, NULL, OPT_MAX_UNAUTH},
	{NULL, 0, NULL, 0},
};

static const char usage_text[] =
    "Usage: socks5d [OPTION]...\n"
    "SOCKS5 proxy server (RFC 1928, RFC 1929) with a prefork master and workers.\n"
    "\n"
    "  -h, --help                 show this help and exit\n"
    "  -v, --version              show the version and exit\n"
    "  -f, --config FILE          read settings and users from FILE (key = value)\n"
    "  -l, --listen ADDR          SOCKS address, repeatable (default: all, IPv4 and IPv6)\n"
    "  -p, --port PORT            SOCKS port (default 1080)\n"
    "  -L, --admin-addr ADDR      administration (SCTP) address (default 127.0.0.1)\n"
    "  -P, --admin-port PORT      administration (SCTP) port (default 8080)\n"
    "      --admin-socket PATH    administration unix socket (default:\n"
    "                             $RUNTIME_DIRECTORY, /run/socks5d or ./socks5d.sock)\n"
    "  -u, --user USER:PASS       add a proxy user, repeatable\n"
    "  -a, --admin USER:PASS      add an administrator, repeatable\n"
    "  -N, --no-dissectors        disable the password dissectors\n"
    "  -D, --no-idle-cleanup      never close idle relaying sessions\n"
    "  -w, --workers N            worker processes, 1..64 (default: online CPUs)\n"
    "      --allow-anonymous      allow anonymous clients from anywhere\n"
    "      --anonymous POLICY     auto (default: only from loopback while no users\n"
    "                             exist), always, never\n"
    "      --handshake-timeout S  seconds from accept to the reply (default 15)\n"
    "      --max-unauth-per-source N  sessions per client address and worker before\n"
    "                             authentication; 0: no cap (default 64)\n"
    "      --connect-timeout S    seconds per outbound connect attempt (default 10)\n"
    "      --idle-timeout S       close relaying sessions idle for S seconds (default 600)\n"
    "      --grace S              drain period on SIGTERM/SIGINT (default 10)\n"
    "      --buffer-size BYTES    relay buffer per direction, 4096..1048576 (default 65536)\n"
    "      --no-splice            always copy through buffers, never splice(2)\n"
    "      --pipe-size BYTES      splice pipe per busy direction, 4096..1048576\n"
    "                             (default 1048576)\n"
    "      --accept MODE          exclusive (default: one shared socket) or reuseport\n"
    "                             (one SO_REUSEPORT socket per worker)\n"
    "      --log-level LEVEL      error, warn, info (default) or debug\n"
    "      --dns-server LIST      DNS servers, ADDR[:PORT] or [ADDR6]:PORT, comma-separated\n"
    "      --doh-ip ADDR          DoH server address (default 127.0.0.1)\n"
    "      --doh-port PORT        DoH server port (default 8053)\n"
    "      --doh-host NAME        DoH Host header (default localhost)\n"
    "      --doh-path PATH        DoH path (default /getnsrecord)\n"
    "      --doh-query Q          DoH query prefix (default ?dns=)\n"
    "      --doh-method-post      use POST for DoH (same as -m post)\n"
    "  -m, --doh-method get|post  DoH method (default get)\n"
    "      --doh-url URL          DoH endpoint (http:// or https://); wins over --doh-ip...\n"
    "      --doh-ca-file FILE     CA certificates for the DoH server\n"
    "      --no-dns-fallback      never resolve outside DoH\n"
    "      --hash-password        read a password on standard input, print its hash\n"
    "\n"
    "Signals: SIGHUP reloads the configuration file; SIGTERM and SIGINT drain and exit.\n"
    "See socks5d(8).\n";

int user_list_add(struct user_list *l, const char *name, const char *hash, bool admin)
{
	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 8;
		struct user_spec *v = realloc(l->v, cap * sizeof *v);
		if (!v)
			return -ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	struct user_spec *u = &l->v[l->n];
	/* A later line for the same name replaces the earlier one. */
	for (size_t i = 0; i < l->n; i++)
		if (strcmp(l->v[i].name, name) == 0)
			u = &l->v[i];
	if (u == &l->v[l->n])
		l->n++;
	snprintf(u->name, sizeof u->name, "%s", name);
	snprintf(u->hash, sizeof u->hash, "%s", hash);
	u->admin = admin;
	return 0;
}

void user_list_free(struct user_list *l)
{
	if (l->v)
		explicit_bzero(l->v, l->cap * sizeof *l->v);
	free(l->v);
	l->v = NULL;
	l->n = l->cap = 0;
}

static int bad(const char *opt, const char *msg)
{
	fprintf(stderr, "socks5d: option %s: %s\n", opt, msg);
	fprintf(stderr, "Try 'socks5d --help' for more information.\n");
	return EXIT_USAGE;
}

static int set(struct options *o, const char *opt, const char *key, const char *value)
{
	char err[512];
	int idx = settings_set(&o->cli, key, value, err, sizeof err);
	if (idx < 0)
		return bad(opt, err);
	o->cli_mask |= 1ull << idx;
	return 0;
}

static int add_user(struct options *o, const char *opt, const char *arg, bool admin)
{
	const char *colon = strchr(arg, ':');
	if (!colon || colon == arg)
		return bad(opt, "expected USER:PASS");
	size_t nlen = (size_t)(colon - arg);
	if (nlen > SHM_USER_NAME_MAX)
		return bad(opt, "the user name is longer than 255 bytes");
	if (strlen(colon + 1) > 255)
		return bad(opt, "the password is longer than 255 bytes");
	char name[SHM_USER_NAME_MAX + 1];
	memcpy(name, arg, nlen);
	name[nlen] = '\0';
	char hash[PWHASH_MAX];
	if (pwhash_make(colon + 1, hash) < 0)
		return bad(opt, "cannot hash the password");
	if (user_list_add(&o->cli_users, name, hash, admin) < 0)
		return bad(opt, "out of memory");
	return 0;
}

int options_parse(struct options *o, int argc, char **argv)
{
	memset(o, 0, sizeof *o);
	settings_defaults(&o->cli);
	opterr = 0;
	int c, rc = 0;
	char optname[64];
	while (rc == 0 && (c = getopt_long(argc, argv, ":hvf:l:p:L:P:u:a:NDw:m:", longopts, NULL)) != -1) {
		/* The option as the user wrote it, for messages. */
		const char *arg = argv[optind - 1];
		if (optarg && arg == optarg && optind >= 2)
			arg = argv[optind - 2];
		snprintf(optname, sizeof optname, "%.*s", (int)strcspn(arg, "="), arg);
		switch (c) {
		case 'h':
			fputs(usage_text, stdout);
			o->exit_now = true;
			return 0;
		case 'v':
			printf("socks5d %s\n", SOCKS5D_VERSION);
			o->exit_now = true;
			return 0;
		case 'f':
			o->config_path = optarg;
			break;
		case 'l': rc = set(o, optname, "listen", optarg); break;
		case 'p': rc = set(o, optname, "port", optarg); break;
		case 'L': rc = set(o, optname, "admin-addr", optarg); break;
		case 'P': rc = set(o, optname, "admin-port", optarg); break;
		case 'u': rc = add_user(o, optname, optarg, false); break;
		case 'a': rc = add_user(o, optname, optarg, true); break;
		case 'N': rc = set(o, optname, "dissectors", "no"); break;
		case 'D': rc = set(o, optname, "idle-cleanup", "no"); break;
		case 'w': rc = set(o, optname, "workers", optarg); break;
		case 'm': rc = set(o, optname, "doh-method", optarg); break;
		case OPT_ALLOW_ANON: rc = set(o, optname, "anonymous", "always"); break;
		case OPT_ANON: rc = set(o, optname, "anonymous", optarg); break;
		case OPT_HANDSHAKE: rc = set(o, optname, "handshake-timeout", optarg); break;
		case OPT_CONNECT: rc = set(o, optname, "connect-timeout", optarg); break;
		case OPT_IDLE: rc = set(o, optname, "idle-timeout", optarg); break;
		case OPT_GRACE: rc = set(o, optname, "grace", optarg); break;
		case OPT_BUFSIZE: rc = set(o, optname, "buffer-size", optarg); break;
		case OPT_NO_SPLICE: rc = set(o, optname, "splice", "no"); break;
		case OPT_PIPE_SIZE: rc = set(o, optname, "pipe-size", optarg); break;
		case OPT_ACCEPT: rc = set(o, optname, "accept", optarg); break;
		case OPT_LOGLEVEL: rc = set(o, optname, "log-level", optarg); break;
		case OPT_DOH_IP: rc = set(o, optname, "doh-ip", optarg); break;
		case OPT_DOH_PORT: rc = set(o, optname, "doh-port", optarg); break;
		case OPT_DOH_HOST: rc = set(o, optname, "doh-host", optarg); break;
		case OPT_DOH_PATH: rc = set(o, optname, "doh-path", optarg); break;
		case OPT_DOH_QUERY: rc = set(o, optname, "doh-query", optarg); break;
		case OPT_DOH_POST: rc = set(o, optname, "doh-method", "post"); break;
		case OPT_DOH_URL: rc = set(o, optname, "doh-url", optarg); break;
		case OPT_DOH_CA: rc = set(o, optname, "doh-ca-file", optarg); break;
		case OPT_NO_FALLBACK: rc = set(o, optname, "dns-fallback", "no"); break;
		case OPT_DNS_SERVER: rc = set(o, optname, "dns-server", optarg); break;
		case OPT_HASH: o->hash_password = true; break;
		case OPT_ADMIN_SOCKET: rc = set(o, optname, "admin-socket", optarg); break;
		case OPT_MAX_UNAUTH: rc = set(o, optname, "max-unauth-per-source", optarg); break;
		case ':':
			rc = bad(optname, "requires a value");
			break;
		default:
			rc = bad(optname, "unknown option");
			break;
		}
	}
	if (rc == 0 && optind < argc)
		rc = bad(argv[optind], "unexpected argument");
	return rc;
}

void options_free(struct options *o)
{
	user_list_free(&o->cli_users);
}

int options_effective(const struct options *o, struct settings *s, struct user_list *users,
                      struct user_list *file_users)
{
	settings_defaults(s);
	memset(users, 0, sizeof *users);
	if (file_users)
		memset(file_users, 0, sizeof *file_users);
	if (o->config_path) {
		int rc = conffile_load(o->config_path, s, users);
		if (rc < 0) {
			user_list_free(users);
			return rc;
		}
		for (size_t i = 0; file_users && i < users->n; i++)
			if (user_list_add(file_users, users->v[i].name, users->v[i].hash, users->v[i].admin) < 0) {
				user_list_free(users);
				user_list_free(file_users);
				return -ENOMEM;
			}
	}
	settings_overlay(s, &o->cli, o->cli_mask);
	for (size_t i = 0; i < o->cli_users.n; i++) {
		const struct user_spec *u = &o->cli_users.v[i];
		if (user_list_add(users, u->name, u->hash, u->admin) < 0) {
			user_list_free(users);
			if (file_users)
				user_list_free(file_users);
			return -ENOMEM;
		}
	}
	return 0;
}
