/* The service manager's notification protocol: $NOTIFY_SOCKET addresses,
 * the watchdog variables, and one datagram end to end. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "../../master/sdnotify.h"

static void test_path_address(void **state)
{
	(void)state;
	struct sockaddr_un a;
	socklen_t len;
	assert_int_equal(sdnotify_parse_address("/run/systemd/notify", &a, &len), 0);
	assert_int_equal(a.sun_family, AF_UNIX);
	assert_string_equal(a.sun_path, "/run/systemd/notify");
	assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + strlen("/run/systemd/notify") + 1);
}

static void test_abstract_address_has_leading_nul_and_exact_length(void **state)
{
	(void)state;
	struct sockaddr_un a;
	socklen_t len;
	assert_int_equal(sdnotify_parse_address("@name/with/slash", &a, &len), 0);
	assert_int_equal(a.sun_path[0], '\0');
	assert_memory_equal(a.sun_path + 1, "name/with/slash", 15);
	/* no trailing NUL counted: it would be part of the abstract name */
	assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + 16);
}

static void test_hostile_addresses_refused(void **state)
{
	(void)state;
	struct sockaddr_un a;
	socklen_t len;
	const char *bad[] = {"", "@", "/", "relative/path", "notify", " /run/x", "vsock:2:1"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(sdnotify_parse_address(bad[i], &a, &len), -EINVAL);
	assert_int_equal(sdnotify_parse_address(NULL, &a, &len), -EINVAL);
	char longest[sizeof a.sun_path + 2];
	memset(longest, 'x', sizeof longest);
	longest[0] = '/';
	longest[sizeof a.sun_path - 1] = '\0'; /* 107 bytes: fits with its NUL */
	assert_int_equal(sdnotify_parse_address(longest, &a, &len), 0);
	longest[sizeof a.sun_path - 1] = 'x';
	longest[sizeof a.sun_path] = '\0'; /* 108 bytes: does not */
	assert_int_equal(sdnotify_parse_address(longest, &a, &len), -EINVAL);
	longest[sizeof a.sun_path + 1] = '\0';
	longest[sizeof a.sun_path] = 'x';
	assert_int_equal(sdnotify_parse_address(longest, &a, &len), -EINVAL);
}

static void test_watchdog_values(void **state)
{
	(void)state;
	assert_int_equal(sdnotify_parse_watchdog("30000000", NULL, 42), 30000000);
	assert_int_equal(sdnotify_parse_watchdog("200000", "42", 42), 200000);
	assert_int_equal(sdnotify_parse_watchdog("200000", "43", 42), 0);
	assert_int_equal(sdnotify_parse_watchdog(NULL, NULL, 42), 0);
	const char *bad[] = {"", "0", "-1", "+5", " 5", "5 ", "5s", "0x10", "99999999999999999999999"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		assert_int_equal(sdnotify_parse_watchdog(bad[i], NULL, 42), 0);
	assert_int_equal(sdnotify_parse_watchdog("5", "", 42), 0);
	assert_int_equal(sdnotify_parse_watchdog("5", "42x", 42), 0);
}

static void test_open_reads_and_clears_the_environment(void **state)
{
	(void)state;
	char path[] = "/tmp/socks5d-sdn-XXXXXX";
	assert_non_null(mkdtemp(path));
	char sock[64];
	snprintf(sock, sizeof sock, "%s/notify", path);
	int r = socket(AF_UNIX, SOCK_DGRAM, 0);
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	snprintf(a.sun_path, sizeof a.sun_path, "%s", sock);
	assert_int_equal(bind(r, (struct sockaddr *)&a, sizeof a), 0);

	setenv("NOTIFY_SOCKET", sock, 1);
	setenv("WATCHDOG_USEC", "200000", 1);
	char pid[32];
	snprintf(pid, sizeof pid, "%d", (int)getpid());
	setenv("WATCHDOG_PID", pid, 1);
	struct sdnotify n;
	char err[128] = "";
	assert_int_equal(sdnotify_open(&n, err, sizeof err), 0);
	assert_true(sdnotify_on(&n));
	assert_int_equal(n.watchdog_usec, 200000);
	assert_null(getenv("NOTIFY_SOCKET"));
	assert_null(getenv("WATCHDOG_USEC"));
	assert_null(getenv("WATCHDOG_PID"));

	assert_int_equal(sdnotify_send(&n, "READY=1\nSTATUS=x"), 0);
	char buf[256];
	ssize_t got = recv(r, buf, sizeof buf - 1, MSG_DONTWAIT);
	assert_int_equal(got, 16);
	buf[got] = '\0';
	assert_string_equal(buf, "READY=1\nSTATUS=x");
	assert_int_equal(sdnotify_reloading(&n, "r"), 0);
	got = recv(r, buf, sizeof buf - 1, MSG_DONTWAIT);
	assert_true(got > 0);
	buf[got] = '\0';
	assert_true(strncmp(buf, "RELOADING=1\nMONOTONIC_USEC=", 27) == 0);
	assert_non_null(strstr(buf, "\nSTATUS=r"));
	sdnotify_close(&n);
	assert_false(sdnotify_on(&n));
	assert_int_equal(sdnotify_send(&n, "READY=1"), 0); /* off: nothing, no error */
	close(r);
	unlink(sock);
	rmdir(path);
}

static void test_open_without_or_with_bad_socket(void **state)
{
	(void)state;
	struct sdnotify n;
	char err[128] = "";
	unsetenv("NOTIFY_SOCKET");
	setenv("WATCHDOG_USEC", "200000", 1);
	assert_int_equal(sdnotify_open(&n, err, sizeof err), 0);
	assert_false(sdnotify_on(&n));
	assert_int_equal(n.watchdog_usec, 0); /* nobody to pet */
	setenv("NOTIFY_SOCKET", "", 1);
	assert_int_equal(sdnotify_open(&n, err, sizeof err), 0);
	assert_false(sdnotify_on(&n));
	setenv("NOTIFY_SOCKET", "relative", 1);
	assert_int_equal(sdnotify_open(&n, err, sizeof err), -EINVAL);
	assert_false(sdnotify_on(&n));
	assert_non_null(strstr(err, "NOTIFY_SOCKET"));
	assert_null(getenv("NOTIFY_SOCKET"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_path_address),
	    cmocka_unit_test(test_abstract_address_has_leading_nul_and_exact_length),
	    cmocka_unit_test(test_hostile_addresses_refused),
	    cmocka_unit_test(test_watchdog_values),
	    cmocka_unit_test(test_open_reads_and_clears_the_environment),
	    cmocka_unit_test(test_open_without_or_with_bad_socket),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
