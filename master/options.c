#include "options.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../shared/log.h"
#include "../shared/names.h"

/* getopt values: the options that are not settings, then one per settings
 * row (OPT_KEY + row) and one per row's flag form (OPT_FLAG + row). */
enum {
	OPT_HASH = 256,
	OPT_KEY = 512,
	OPT_FLAG = 1024,
};

static const struct option fixed_longopts[] = {
	{"help", no_argument, NULL, 'h'},
	{"version", no_argument, NULL, 'v'},
	{"config", required_argument, NULL, 'f'},
	{"user", required_argument, NULL, 'u'},
	{"admin", required_argument, NULL, 'a'},
	{"hash-password", no_argument, NULL, OPT_HASH},
};
#define NFIXED (sizeof fixed_longopts / sizeof fixed_longopts[0])

static const char usage_head[] =
    "Usage: socks5d [OPTION]...\n"
    "SOCKS5 proxy server (RFC 1928, RFC 1929) with a prefork master and workers.\n"
    "\n"
    "  -h, --help                 show this help and exit\n"
    "  -v, --version              show the version and exit\n"
    "  -f, --config FILE          read settings and users from FILE (key = value)\n"
    "  -u, --user USER:PASS       add a proxy user, repeatable (the password is\n"
    "                             visible until parsed: prefer the file's hashes)\n"
    "  -a, --admin USER:PASS      add an administrator, repeatable\n"
    "      --hash-password        read a password on standard input, print its hash\n"
    "\n"
    "Settings (each is also a configuration-file key: KEY = VALUE; sizes take K or M,\n"
    "durations s, m, h or d, e.g. 64K, 5m):\n";

static const char usage_tail[] =
    "\n"
    "Signals: SIGHUP reloads the configuration file; SIGTERM and SIGINT drain and exit.\n"
    "See socks5d(8).\n";

static void usage(void)
{
	fputs(usage_head, stdout);
	settings_usage(stdout);
	fputs(usage_tail, stdout);
}

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

static int add_user(struct options *o, const char *opt, char *arg, bool admin)
{
	const char *colon = strchr(arg, ':');
	if (!colon)
		return bad(opt, "expected USER:PASS");
	size_t nlen = (size_t)(colon - arg);
	const char *why = names_user_problem(arg, nlen);
	char msg[96];
	if (why) {
		snprintf(msg, sizeof msg, "the user name %s", why);
		return bad(opt, msg);
	}
	char *pass = arg + nlen + 1;
	if ((why = names_password_problem(pass, strlen(pass)))) {
		snprintf(msg, sizeof msg, "the password %s", why);
		return bad(opt, msg);
	}
	char name[SHM_USER_NAME_MAX + 1];
	memcpy(name, arg, nlen);
	name[nlen] = '\0';
	char hash[PWHASH_MAX];
	if (pwhash_make(pass, hash) < 0)
		return bad(opt, "cannot hash the password");
	if (user_list_add(&o->cli_users, name, hash, admin) < 0)
		return bad(opt, "out of memory");
	/* Every local user can read /proc/PID/cmdline of the master and of
	 * the workers it forks: the clear password must not stay there, nor
	 * its length (one '*', then NULs). */
	size_t plen = strlen(pass);
	if (plen) {
		pass[0] = '*';
		memset(pass + 1, 0, plen - 1);
	}
	return 0;
}

/* getopt's tables, made from the settings table. */
static void build_getopt(struct option *lo, char *shorts, size_t cap)
{
	size_t n = 0, k = 0;
	memcpy(lo, fixed_longopts, sizeof fixed_longopts);
	n = NFIXED;
	k = (size_t)snprintf(shorts, cap, ":hvf:u:a:");
	for (size_t i = 0; i < settings_count; i++) {
		const struct setting_desc *d = &settings_table[i];
		lo[n++] = (struct option){d->key, required_argument, NULL, OPT_KEY + (int)i};
		if (d->flag.name)
			lo[n++] = (struct option){d->flag.name, no_argument, NULL, OPT_FLAG + (int)i};
		if (d->short_opt && k + 3 < cap) {
			shorts[k++] = d->short_opt;
			shorts[k++] = ':';
		}
		if (d->flag.short_opt && k + 2 < cap)
			shorts[k++] = d->flag.short_opt;
	}
	shorts[k] = '\0';
	lo[n] = (struct option){NULL, 0, NULL, 0};
}

/* The row whose short option (or flag's) is c; *flag tells which. */
static const struct setting_desc *by_short(int c, bool *flag)
{
	for (size_t i = 0; i < settings_count; i++) {
		if (settings_table[i].short_opt == c) {
			*flag = false;
			return &settings_table[i];
		}
		if (settings_table[i].flag.short_opt == c) {
			*flag = true;
			return &settings_table[i];
		}
	}
	return NULL;
}

int options_parse(struct options *o, int argc, char **argv)
{
	memset(o, 0, sizeof *o);
	settings_defaults(&o->cli);
	struct option longopts[NFIXED + 2 * 64 + 1];
	char shorts[NFIXED * 2 + 3 * 64 + 8];
	build_getopt(longopts, shorts, sizeof shorts);
	opterr = 0;
	int c, rc = 0;
	char optname[64];
	while (rc == 0 && (c = getopt_long(argc, argv, shorts, longopts, NULL)) != -1) {
		/* The option as the user wrote it, for messages. */
		const char *arg = argv[optind - 1];
		if (optarg && arg == optarg && optind >= 2)
			arg = argv[optind - 2];
		snprintf(optname, sizeof optname, "%.*s", (int)strcspn(arg, "="), arg);
		const struct setting_desc *d = NULL;
		bool flag = false;
		if (c >= OPT_FLAG && c < OPT_FLAG + (int)settings_count) {
			d = &settings_table[c - OPT_FLAG];
			flag = true;
		} else if (c >= OPT_KEY && c < OPT_KEY + (int)settings_count) {
			d = &settings_table[c - OPT_KEY];
		} else if (c > 0 && c < 128 && !strchr("hvfua:?", c)) {
			d = by_short(c, &flag);
		}
		if (d) {
			rc = set(o, optname, d->key, flag ? d->flag.value : optarg);
			continue;
		}
		switch (c) {
		case 'h':
			usage();
			o->exit_now = true;
			return 0;
		case 'v':
			printf("socks5d %s\n", SOCKS5D_VERSION);
			o->exit_now = true;
			return 0;
		case 'f':
			o->config_path = optarg;
			break;
		case 'u': rc = add_user(o, optname, optarg, false); break;
		case 'a': rc = add_user(o, optname, optarg, true); break;
		case OPT_HASH: o->hash_password = true; break;
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
