#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../shared/log.h"
#include "master.h"

/* --hash-password: one line from standard input, its hash on standard output. */
static int hash_password(void)
{
	char line[512];
	if (isatty(0))
		fprintf(stderr, "Password: ");
	if (!fgets(line, sizeof line, stdin)) {
		fprintf(stderr, "socks5d: --hash-password: no password on standard input\n");
		return EXIT_USAGE;
	}
	line[strcspn(line, "\r\n")] = '\0';
	if (strlen(line) > 255) {
		fprintf(stderr, "socks5d: --hash-password: the password is longer than 255 bytes\n");
		explicit_bzero(line, sizeof line);
		return EXIT_USAGE;
	}
	char hash[PWHASH_MAX];
	int rc = pwhash_make(line, hash);
	explicit_bzero(line, sizeof line);
	if (rc < 0) {
		fprintf(stderr, "socks5d: --hash-password: %s\n", strerror(-rc));
		return EXIT_OSERR;
	}
	printf("%s\n", hash);
	return 0;
}

int main(int argc, char **argv)
{
	struct options o;
	int status = options_parse(&o, argc, argv);
	if (status || o.exit_now) {
		options_free(&o);
		return status;
	}
	if (o.hash_password) {
		options_free(&o);
		return hash_password();
	}
	struct settings s;
	struct user_list users, file_users;
	int rc = options_effective(&o, &s, &users, &file_users);
	if (rc < 0) {
		options_free(&o);
		return rc == -EINVAL ? EXIT_CONFIG : EXIT_NOINPUT;
	}
	if (log_init((enum log_level)s.log_level) < 0) {
		fprintf(stderr, "socks5d: out of memory\n");
		status = EXIT_OSERR;
	} else {
		status = master_run(&o, &s, &users, &file_users);
	}
	user_list_free(&users);
	user_list_free(&file_users);
	options_free(&o);
	log_shutdown(2000);
	return status;
}
