/* The configuration file: "key = value" lines, '#' comments.  Besides
 * the settings: users (user =, admin =), limits (limit =) and the access
 * rules' lines (shared/rules.c reads those). */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <stdbool.h>

#include "../shared/limits.h"
#include "../shared/log.h"
#include "../shared/names.h"
#include "../shared/rules.h"

#include "options.h"

#define CONF_LINE_MAX 4096

static char *trim(char *s)
{
	while (*s == ' ' || *s == '\t')
		s++;
	char *e = s + strlen(s);
	while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r' || e[-1] == '\n'))
		*--e = '\0';
	return s;
}

/* NAME:HASH; the name may itself hold ':' (RFC 1929 allows any octet), a
 * crypt(3) hash never does. */
static int parse_user(char *value, struct user_list *users, bool admin, char *err, size_t errlen)
{
	char *colon = strrchr(value, ':');
	if (!colon || colon == value) {
		snprintf(err, errlen, "expected NAME:HASH");
		return -EINVAL;
	}
	*colon = '\0';
	const char *hash = colon + 1;
	const char *why = names_user_problem(value, strlen(value));
	if (why) {
		snprintf(err, errlen, "the user name %s", why);
		return -EINVAL;
	}
	if (!pwhash_is_hash(hash)) {
		snprintf(err, errlen,
		         "the password of '%s' is not a crypt(3) hash (make one with socks5d "
		         "--hash-password)",
		         value);
		return -EINVAL;
	}
	if (user_list_add(users, value, hash, admin) < 0) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return 0;
}

static int parse_limit(const char *value, struct limit_list *limits, char *err, size_t errlen)
{
	struct limit_conf c;
	int rc = limits_parse_line(value, &c, err, errlen);
	if (rc < 0)
		return rc;
	rc = limit_list_add(limits, &c);
	if (rc == -EEXIST)
		snprintf(err, errlen, "a second limit line for '%s'", c.name);
	else if (rc < 0)
		snprintf(err, errlen, "out of memory");
	return rc;
}

static int load(const char *path, struct settings *s, struct user_list *users,
                struct limit_list *limits)
{
	FILE *f = fopen(path, "re");
	if (!f) {
		int e = errno;
		log_error("cannot read config file %s: %s", path, strerror(e));
		return -e;
	}
	char line[CONF_LINE_MAX];
	unsigned lineno = 0, errors = 0;
	while (fgets(line, sizeof line, f)) {
		lineno++;
		char err[512] = "";
		size_t len = strlen(line);
		if (len == sizeof line - 1 && line[len - 1] != '\n') {
			log_error("%s:%u: line longer than %d bytes", path, lineno, CONF_LINE_MAX - 2);
			errors++;
			int c;
			while ((c = fgetc(f)) != EOF && c != '\n')
				;
			continue;
		}
		char *p = trim(line);
		if (*p == '\0' || *p == '#' || rules_is_line(p))
			continue;
		char *eq = strchr(p, '=');
		if (!eq) {
			log_error("%s:%u: expected 'key = value'", path, lineno);
			errors++;
			continue;
		}
		*eq = '\0';
		char *key = trim(p);
		char *value = trim(eq + 1);
		int rc;
		if (strcmp(key, "user") == 0 || strcmp(key, "admin") == 0)
			rc = parse_user(value, users, key[0] == 'a', err, sizeof err);
		else if (strcmp(key, "limit") == 0)
			rc = parse_limit(value, limits, err, sizeof err);
		else
			rc = settings_set(s, key, value, err, sizeof err);
		if (rc < 0) {
			log_error("%s:%u: %s: %s", path, lineno, key, err);
			errors++;
		}
	}
	int rerr = ferror(f);
	fclose(f);
	if (rerr) {
		log_error("%s: read error", path);
		return -EIO;
	}
	return errors ? -EINVAL : 0;
}

int conffile_load(const char *path, struct settings *s, struct user_list *users)
{
	/* The limit lines are checked here, with the rest; the master reads
	 * them with conffile_load_limits. */
	struct limit_list limits = {0};
	int rc = load(path, s, users, &limits);
	limit_list_free(&limits);
	return rc;
}

int conffile_load_limits(const char *path, struct limit_list *limits)
{
	struct settings s;
	struct user_list users = {0};
	settings_defaults(&s);
	int rc = load(path, &s, &users, limits);
	user_list_free(&users);
	if (rc < 0)
		limit_list_free(limits);
	return rc;
}

int conffile_load_rules(const char *path, char **text, size_t *len)
{
	*text = NULL;
	*len = 0;
	FILE *f = fopen(path, "re");
	if (!f)
		return -errno;
	size_t cap = 4096, n = 0;
	char *out = malloc(cap);
	char line[CONF_LINE_MAX];
	int rc = 0;
	bool partial = false;
	while (out && fgets(line, sizeof line, f)) {
		size_t l = strlen(line);
		bool whole = l > 0 && line[l - 1] == '\n';
		/* The rest of a line too long for the buffer: conffile_load says so. */
		char *p = partial ? (char *)"" : trim(line);
		partial = !whole;
		size_t keep = rules_is_line(p) ? strlen(p) : 0;
		if (n + keep + 2 > cap) {
			while (n + keep + 2 > cap)
				cap *= 2;
			char *bigger = cap <= RULES_TEXT_MAX * 2 ? realloc(out, cap) : NULL;
			if (!bigger) {
				rc = cap <= RULES_TEXT_MAX * 2 ? -ENOMEM : -E2BIG;
				break;
			}
			out = bigger;
		}
		memcpy(out + n, p, keep);
		n += keep;
		if (whole)
			out[n++] = '\n';
	}
	if (!out)
		rc = -ENOMEM;
	if (ferror(f))
		rc = -EIO;
	fclose(f);
	if (rc == 0 && n > RULES_TEXT_MAX)
		rc = -E2BIG;
	if (rc < 0) {
		free(out);
		return rc;
	}
	/* Trailing blank lines carry nothing. */
	while (n && out[n - 1] == '\n' && (n == 1 || out[n - 2] == '\n'))
		n--;
	*text = out;
	*len = n;
	return 0;
}

static bool is_user_line(const char *line)
{
	while (*line == ' ' || *line == '\t')
		line++;
	const char *keys[] = {"user", "admin"};
	for (int i = 0; i < 2; i++) {
		size_t n = strlen(keys[i]);
		if (strncmp(line, keys[i], n) != 0)
			continue;
		const char *p = line + n;
		while (*p == ' ' || *p == '\t')
			p++;
		if (*p == '=')
			return true;
	}
	return false;
}

static int write_users(FILE *out, const struct user_list *users)
{
	for (size_t i = 0; i < users->n; i++)
		if (fprintf(out, "%s = %s:%s\n", users->v[i].admin ? "admin" : "user", users->v[i].name,
		            users->v[i].hash) < 0)
			return errno ? -errno : -EIO;
	return 0;
}

/* The rewrite must not become a way to write elsewhere or to hand the file
 * to someone else: the temporary file is created exclusively (mkostemp:
 * O_CREAT|O_EXCL, so a planted file or symlink is never opened) beside the
 * real file (a symlinked config stays a symlink; its target is replaced),
 * gets the original's owner, group and mode before it holds anything, and
 * file and directory are synced. */
int conffile_identity(const char *path, struct conf_identity *id)
{
	struct stat st;
	if (!realpath(path, id->real) || stat(id->real, &st) < 0)
		return -errno;
	id->uid = st.st_uid;
	return 0;
}

int conffile_same_file(const char *path, const struct conf_identity *expect)
{
	char real[PATH_MAX];
	struct stat st;
	if (!realpath(path, real) || lstat(real, &st) < 0)
		return -errno;
	if (strcmp(real, expect->real) != 0 || !S_ISREG(st.st_mode) || st.st_uid != expect->uid ||
	    st.st_nlink != 1)
		return -ESTALE;
	return 0;
}

int conffile_save_users(const char *path, const struct user_list *users,
                        const struct conf_identity *expect)
{
	char real[PATH_MAX];
	if (!realpath(path, real))
		return -errno;
	if (expect && strcmp(real, expect->real) != 0)
		return -ESTALE;
	/* O_NOFOLLOW: a link put in its place since realpath() is refused. */
	int ifd = open(real, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	FILE *in = ifd >= 0 ? fdopen(ifd, "r") : NULL;
	if (!in) {
		int oe = errno;
		if (ifd >= 0)
			close(ifd);
		return oe == ELOOP ? -ESTALE : -oe;
	}
	struct stat st;
	int e = fstat(fileno(in), &st) < 0 ? errno : S_ISREG(st.st_mode) ? 0 : EINVAL;
	if (!e && expect && (st.st_uid != expect->uid || st.st_nlink != 1))
		e = ESTALE;
	if (e) {
		fclose(in);
		return -e;
	}
	char tmp[PATH_MAX + 16];
	snprintf(tmp, sizeof tmp, "%s.XXXXXX", real);
	int fd = mkostemp(tmp, O_CLOEXEC);
	if (fd < 0) {
		e = errno;
		fclose(in);
		return -e;
	}
	FILE *out = NULL;
	int rc = 0;
	if (fchown(fd, st.st_uid, st.st_gid) < 0 || fchmod(fd, st.st_mode & 07777) < 0 ||
	    !(out = fdopen(fd, "w"))) {
		rc = -errno;
		close(fd);
		fclose(in);
		unlink(tmp);
		return rc;
	}
	char line[CONF_LINE_MAX];
	bool written = false;
	/* The users take the place of the first user line; other lines stay. */
	while (rc == 0 && fgets(line, sizeof line, in)) {
		if (is_user_line(line)) {
			if (!written)
				rc = write_users(out, users);
			written = true;
			continue;
		}
		if (fputs(line, out) < 0)
			rc = errno ? -errno : -EIO;
	}
	if (rc == 0 && !written)
		rc = write_users(out, users);
	fclose(in);
	if (rc == 0 && (fflush(out) != 0 || fsync(fileno(out)) != 0))
		rc = -errno;
	if (fclose(out) != 0 && rc == 0)
		rc = -errno;
	if (rc == 0 && rename(tmp, real) != 0)
		rc = -errno;
	if (rc != 0) {
		unlink(tmp);
		return rc;
	}
	/* Make the rename itself durable. */
	int dfd = open(dirname(real), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		(void)fsync(dfd);
		close(dfd);
	}
	return 0;
}
