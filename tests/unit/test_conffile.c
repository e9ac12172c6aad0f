/* Configuration file: loading, errors, and the atomic rewrite of users. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../master/options.h"

#define HASH "$y$j9T$ibmdyuD239aYHDnsdDxKi.$lXr5ZXmpHSdr9cKVoyz2cPGqkNgyWqujm3WRvqSRDS6"

static char dir[64];

static int setup(void **state)
{
	(void)state;
	snprintf(dir, sizeof dir, "/tmp/socks5d-conf-XXXXXX");
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	char cmd[128];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	return system(cmd);
}

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

static char *read_file(const char *path)
{
	static char buf[8192];
	FILE *f = fopen(path, "r");
	assert_non_null(f);
	size_t n = fread(buf, 1, sizeof buf - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void expect_invalid_without_users(const char *path)
{
	struct settings s;
	struct user_list u = {0};
	settings_defaults(&s);
	assert_int_equal(conffile_load(path, &s, &u), -EINVAL);
	assert_int_equal(u.n, 0);
	user_list_free(&u);
}

static void valid_file_sets_settings_and_users(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof path, "%s/ok.conf", dir);
	write_file(path, "# comment\n\nworkers = 3\n  idle-timeout=42  \nlisten = 127.0.0.1\n"
	                 "listen = ::1\nuser = alice:" HASH "\nadmin = root:" HASH "\n"
	                 "user = a:b:c:" HASH "\n");
	struct settings s;
	struct user_list u = {0};
	settings_defaults(&s);
	assert_int_equal(conffile_load(path, &s, &u), 0);
	assert_int_equal(s.workers, 3);
	assert_int_equal(s.idle_timeout_s, 42);
	assert_int_equal(s.nlisten, 2);
	assert_string_equal(s.listen[1], "::1");
	assert_int_equal(u.n, 3);
	assert_string_equal(u.v[0].name, "alice");
	assert_false(u.v[0].admin);
	assert_true(u.v[1].admin);
	assert_string_equal(u.v[2].name, "a:b:c"); /* names may hold ':' */
	user_list_free(&u);
}

static void every_bad_line_is_an_error(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof path, "%s/bad.conf", dir);
	write_file(path, "workers = 0\nno equals sign\nuser = bob:plaintext\nbogus = 1\n");
	expect_invalid_without_users(path);
}

static void missing_file_is_not_invalid(void **state)
{
	(void)state;
	struct settings s;
	struct user_list u = {0};
	settings_defaults(&s);
	assert_int_equal(conffile_load("/nonexistent/socks5d.conf", &s, &u), -ENOENT);
}

static void save_users_replaces_user_lines_and_keeps_the_rest(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof path, "%s/rw.conf", dir);
	write_file(path, "# head\nworkers = 2\nuser = old:" HASH "\n  admin=root:" HASH
	                 "\nidle-timeout = 9\nuser = old2:" HASH "\n");
	chmod(path, 0640);
	struct user_list u = {0};
	assert_int_equal(user_list_add(&u, "new", HASH, false), 0);
	assert_int_equal(user_list_add(&u, "boss", HASH, true), 0);
	assert_int_equal(conffile_save_users(path, &u, NULL), 0);
	const char *text = read_file(path);
	assert_string_equal(text, "# head\nworkers = 2\nuser = new:" HASH "\nadmin = boss:" HASH
	                          "\nidle-timeout = 9\n");
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);
	/* The rewritten file loads to the same users. */
	struct settings s;
	struct user_list back = {0};
	settings_defaults(&s);
	assert_int_equal(conffile_load(path, &s, &back), 0);
	assert_int_equal(back.n, 2);
	assert_string_equal(back.v[1].name, "boss");
	assert_true(back.v[1].admin);
	user_list_free(&back);
	user_list_free(&u);
	/* No temporary file is left behind. */
	char cmd[160];
	snprintf(cmd, sizeof cmd, "test -z \"$(ls %s | grep 'rw\\.conf.')\"", dir);
	assert_int_equal(system(cmd), 0);
}

static void save_users_appends_when_the_file_had_none(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof path, "%s/none.conf", dir);
	write_file(path, "port = 1080\n");
	struct user_list u = {0};
	assert_int_equal(user_list_add(&u, "x", HASH, false), 0);
	assert_int_equal(conffile_save_users(path, &u, NULL), 0);
	assert_string_equal(read_file(path), "port = 1080\nuser = x:" HASH "\n");
	struct user_list empty = {0};
	assert_int_equal(conffile_save_users(path, &empty, NULL), 0);
	assert_string_equal(read_file(path), "port = 1080\n");
	user_list_free(&u);
}

static void later_entry_for_a_name_replaces_the_earlier(void **state)
{
	(void)state;
	struct user_list u = {0};
	assert_int_equal(user_list_add(&u, "x", "h1", false), 0);
	assert_int_equal(user_list_add(&u, "x", "h2", true), 0);
	assert_int_equal(u.n, 1);
	assert_string_equal(u.v[0].hash, "h2");
	assert_true(u.v[0].admin);
	user_list_free(&u);
}

/* ---- the rewrite is safe in a directory others can write ---------------- */

/* The name the rewrite once used (CONF.tmp.PID) planted as a symlink to a
 * victim file: the victim is left as it was. */
static void save_users_never_follows_a_planted_temporary_name(void **state)
{
	(void)state;
	char path[128], victim[128], planted[192];
	snprintf(path, sizeof path, "%s/plant.conf", dir);
	snprintf(victim, sizeof victim, "%s/victim", dir);
	snprintf(planted, sizeof planted, "%s.tmp.%d", path, (int)getpid());
	write_file(path, "port = 1080\n");
	write_file(victim, "precious\n");
	assert_int_equal(symlink(victim, planted), 0);
	struct user_list u = {0};
	assert_int_equal(user_list_add(&u, "x", HASH, false), 0);
	assert_int_equal(conffile_save_users(path, &u, NULL), 0);
	assert_string_equal(read_file(victim), "precious\n");
	assert_string_equal(read_file(path), "port = 1080\nuser = x:" HASH "\n");
	user_list_free(&u);
}

/* The rewritten file keeps the original's owner, group and mode (it used
 * to become root's, and a pre-created temporary file made it another's). */
static void save_users_keeps_owner_group_and_mode(void **state)
{
	(void)state;
	if (geteuid() != 0)
		fail_msg("this test changes a file's owner: run it as root");
	char path[128];
	snprintf(path, sizeof path, "%s/owned.conf", dir);
	write_file(path, "port = 1080\n");
	assert_int_equal(chown(path, 65534, 65534), 0);
	assert_int_equal(chmod(path, 0640), 0);
	struct user_list u = {0};
	assert_int_equal(user_list_add(&u, "x", HASH, false), 0);
	assert_int_equal(conffile_save_users(path, &u, NULL), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_uid, 65534);
	assert_int_equal(st.st_gid, 65534);
	assert_int_equal(st.st_mode & 07777, 0640);
	user_list_free(&u);
}

/* A configuration reached through a symlink: the link stays a link and
 * the file it names is rewritten. */
static void save_users_through_a_symlink_rewrites_its_target(void **state)
{
	(void)state;
	char real[256], link[128], sub[128];
	snprintf(sub, sizeof sub, "%s/etc", dir);
	assert_int_equal(mkdir(sub, 0755), 0);
	snprintf(real, sizeof real, "%s/real.conf", sub);
	snprintf(link, sizeof link, "%s/link.conf", dir);
	write_file(real, "port = 1080\n");
	assert_int_equal(symlink(real, link), 0);
	struct user_list u = {0};
	assert_int_equal(user_list_add(&u, "x", HASH, false), 0);
	assert_int_equal(conffile_save_users(link, &u, NULL), 0);
	struct stat st;
	assert_int_equal(lstat(link, &st), 0);
	assert_true(S_ISLNK(st.st_mode));
	assert_string_equal(read_file(real), "port = 1080\nuser = x:" HASH "\n");
	user_list_free(&u);
}

/* The path replaced after start by a link to another file, or by a file
 * of someone else's: not written.  An editor's save by rename (same path,
 * same owner, one link) is. */
static void save_users_writes_only_where_the_path_led_at_start(void **state)
{
	(void)state;
	if (geteuid() != 0)
		fail_msg("this test changes a file's owner: run it as root");
	char path[128], victim[128];
	snprintf(path, sizeof path, "%s/swap.conf", dir);
	snprintf(victim, sizeof victim, "%s/swap-victim", dir);
	write_file(path, "port = 1080\n");
	write_file(victim, "root:x:0:0\n");
	struct conf_identity start;
	assert_int_equal(conffile_identity(path, &start), 0);
	struct user_list u = {0};
	assert_int_equal(user_list_add(&u, "x", HASH, false), 0);
	/* a link to another file */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(symlink(victim, path), 0);
	assert_int_equal(conffile_save_users(path, &u, &start), -ESTALE);
	assert_string_equal(read_file(victim), "root:x:0:0\n");
	/* a file of someone else's */
	assert_int_equal(unlink(path), 0);
	write_file(path, "port = 1080\n");
	assert_int_equal(chown(path, 65534, 65534), 0);
	assert_int_equal(conffile_save_users(path, &u, &start), -ESTALE);
	/* a hard link to another file */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(link(victim, path), 0);
	assert_int_equal(conffile_save_users(path, &u, &start), -ESTALE);
	assert_string_equal(read_file(victim), "root:x:0:0\n");
	/* an editor's save: a new file renamed over the old one */
	assert_int_equal(unlink(path), 0);
	char tmp[160];
	snprintf(tmp, sizeof tmp, "%s.edit", path);
	write_file(tmp, "port = 1081\n");
	assert_int_equal(rename(tmp, path), 0);
	assert_int_equal(conffile_save_users(path, &u, &start), 0);
	assert_string_equal(read_file(path), "port = 1081\nuser = x:" HASH "\n");
	user_list_free(&u);
}

static void a_user_name_with_a_control_byte_is_an_error(void **state)
{
	(void)state;
	char path[128];
	snprintf(path, sizeof path, "%s/ctl.conf", dir);
	write_file(path, "user = bad\x1b[31mname:" HASH "\nuser = tab\tname:" HASH "\n");
	expect_invalid_without_users(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(valid_file_sets_settings_and_users),
	    cmocka_unit_test(every_bad_line_is_an_error),
	    cmocka_unit_test(missing_file_is_not_invalid),
	    cmocka_unit_test(save_users_replaces_user_lines_and_keeps_the_rest),
	    cmocka_unit_test(save_users_appends_when_the_file_had_none),
	    cmocka_unit_test(later_entry_for_a_name_replaces_the_earlier),
	    cmocka_unit_test(save_users_never_follows_a_planted_temporary_name),
	    cmocka_unit_test(save_users_keeps_owner_group_and_mode),
	    cmocka_unit_test(save_users_through_a_symlink_rewrites_its_target),
	    cmocka_unit_test(save_users_writes_only_where_the_path_led_at_start),
	    cmocka_unit_test(a_user_name_with_a_control_byte_is_an_error),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
