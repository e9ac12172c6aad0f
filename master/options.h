/*
 * options: the command line and the configuration file of the master.
 * Both feed the same settings parser (shared/settings.c); the file also
 * holds users (NAME:HASH).  Flags given on the command line win over the
 * file, at start and after every reload.
 */
#ifndef SOCKS5D_OPTIONS_H
#define SOCKS5D_OPTIONS_H

#include <stdbool.h>
#include <stddef.h>
#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include "../shared/pwhash.h"
#include "../shared/settings.h"
#include "../shared/shm.h"

enum {
	EXIT_USAGE = 64,   /* EX_USAGE */
	EXIT_NOINPUT = 66, /* EX_NOINPUT: config file cannot be read */
	EXIT_OSERR = 71,   /* EX_OSERR */
	EXIT_CONFIG = 78,  /* EX_CONFIG: invalid config file */
};

struct user_spec {
	char name[SHM_USER_NAME_MAX + 1];
	char hash[PWHASH_MAX];
	bool admin;
};

struct user_list {
	struct user_spec *v;
	size_t n, cap;
};

struct options {
	struct settings cli;   /* defaults + command-line values */
	uint64_t cli_mask;     /* which settings the command line gave */
	struct user_list cli_users;
	const char *config_path;
	bool hash_password;
	bool exit_now; /* --help or --version done */
};

/* Parse argv.  Returns 0, or an exit status after printing the error. */
int options_parse(struct options *o, int argc, char **argv);
void options_free(struct options *o);

int user_list_add(struct user_list *l, const char *name, const char *hash, bool admin);
void user_list_free(struct user_list *l);

/* Read a config file into *s (already holding defaults) and *users.
 * Every error is logged as "FILE:LINE: message".  Returns 0, -ENOENT-like
 * negative errno when the file cannot be read, or -EINVAL when invalid. */
int conffile_load(const char *path, struct settings *s, struct user_list *users);

/* The limit lines of a config file (shared/limits.h) into *limits (empty
 * on entry; freed on error).  Returns as conffile_load. */
struct limit_list;
int conffile_load_limits(const char *path, struct limit_list *limits);
/* The access rules of a config file: its text with every line that is
 * not a rule, group or external line left empty (line numbers hold).
 * *text is malloc'd.  0, -E2BIG (more than RULES_TEXT_MAX), or another
 * negative errno. */
int conffile_load_rules(const char *path, char **text, size_t *len);

/* The configuration file as found at start: where the path led and who
 * owned the file. */
struct conf_identity {
	char real[PATH_MAX];
	uid_t uid;
};

/* Fill id from path: 0 or a negative errno. */
int conffile_identity(const char *path, struct conf_identity *id);
/* 0 when path still leads where it led (expect), to a regular file of the
 * same owner with one link; -ESTALE when not; another negative errno when
 * it cannot be looked at. */
int conffile_same_file(const char *path, const struct conf_identity *expect);

/* Rewrite the users of the configuration file (user = / admin = lines) as
 * `users`, keeping every other line: a temporary file beside it, fsync,
 * rename.  With `expect`, the path must still lead where it led at start,
 * to a regular file of the same owner with one link (else -ESTALE:
 * someone put a link to another file, or a file of their own, in its
 * place; an editor that saves by rename keeps all three).  0 or a
 * negative errno. */
int conffile_save_users(const char *path, const struct user_list *users,
                        const struct conf_identity *expect);

/* The settings and users in force: defaults, then the file, then the
 * command line.  file_users (may be NULL) receives the users of the file
 * alone.  Returns 0 or the conffile_load error. */
int options_effective(const struct options *o, struct settings *s, struct user_list *users,
                      struct user_list *file_users);

#endif
