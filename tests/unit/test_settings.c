/*
 * Unit tests for shared/settings: defaults, every kind of key (integers and
 * their bounds, booleans, choices, addresses, URLs, strings, the appending
 * "listen"), error reporting, and settings_overlay.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../../shared/log.h"
#include "../../shared/settings.h"

static struct settings s;
static char err[256];

static int setup(void **state)
{
	(void)state;
	settings_defaults(&s);
	err[0] = '\0';
	return 0;
}

/* Set and expect success: returns the key's index. */
static int set_ok(const char *key, const char *value)
{
	err[0] = '\0';
	int rc = settings_set(&s, key, value, err, sizeof err);
	if (rc < 0)
		fail_msg("%s=%s rejected: %d %s", key, value, rc, err);
	assert_in_range(rc, 0, 63);
	return rc;
}

/* Set and expect -EINVAL with a message naming the value, and no change. */
static void set_bad(const char *key, const char *value)
{
	struct settings before = s;
	err[0] = '\0';
	int rc = settings_set(&s, key, value, err, sizeof err);
	if (rc != -EINVAL)
		fail_msg("%s='%s' gave %d, want -EINVAL", key, value, rc);
	assert_true(err[0] != '\0');
	if (value[0] && !strstr(err, value))
		fail_msg("error for %s='%s' does not name the value: %s", key, value, err);
	assert_memory_equal(&before, &s, sizeof s);
}

/* ---- defaults ----------------------------------------------------------- */

static void defaults_are_the_documented_values(void **state)
{
	(void)state;
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (cpus < 1)
		cpus = 1;
	if (cpus > SETTINGS_MAX_WORKERS)
		cpus = SETTINGS_MAX_WORKERS;
	assert_int_equal(s.workers, (uint32_t)cpus);
	assert_in_range(s.workers, 1, SETTINGS_MAX_WORKERS);
	assert_int_equal(s.handshake_timeout_s, 15);
	assert_int_equal(s.connect_timeout_s, 10);
	assert_int_equal(s.bind_timeout_s, 120);
	assert_int_equal(s.idle_timeout_s, 600);
	assert_int_equal(s.grace_s, 10);
	assert_int_equal(s.buffer_size, 65536);
	assert_int_equal(s.idle_cleanup, 1);
	assert_int_equal(s.dissectors, 1);
	assert_int_equal(s.accept, ACCEPT_EXCLUSIVE);
	assert_int_equal(s.anonymous, ANON_AUTO);
	assert_int_equal(s.log_level, LOG_INFO);
	assert_int_equal(s.doh_post, 0);
	assert_int_equal(s.dns_fallback, 1);
	assert_int_equal(s.port, 1080);
	assert_int_equal(s.admin_port, 8080);
	assert_int_equal(s.doh_port, 8053);
	assert_int_equal(s.nlisten, 0);
	assert_string_equal(s.admin_addr, "127.0.0.1");
	assert_string_equal(s.doh_ip, "127.0.0.1");
	assert_string_equal(s.doh_host, "localhost");
	assert_string_equal(s.doh_path, "/getnsrecord");
	assert_string_equal(s.doh_query, "?dns=");
	assert_string_equal(s.doh_url, "");
	assert_string_equal(s.doh_ca_file, "");
	assert_string_equal(s.dns_server, "");
	assert_int_equal(s.doh, 0);
}

static void doh_is_on_only_when_a_part_of_the_endpoint_is_given(void **state)
{
	(void)state;
	static const char *const parts[][2] = {
	    {"doh-url", "https://dns.example/dns-query"}, {"doh-ip", "::1"}, {"doh-port", "443"},
	    {"doh-host", "dns.example"}, {"doh-path", "/q"}, {"doh-query", "?d="},
	};
	for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++) {
		settings_defaults(&s);
		set_ok(parts[i][0], parts[i][1]);
		assert_int_equal(s.doh, 1);
		/* the parts not given keep their defaults */
		if (strcmp(parts[i][0], "doh-port"))
			assert_int_equal(s.doh_port, 8053);
	}
	settings_defaults(&s);
	set_ok("doh-method", "post");
	set_ok("doh-ca-file", "/ca");
	set_ok("dns-fallback", "no");
	set_ok("doh-connections", "2");
	assert_int_equal(s.doh, 0);
	/* a refused value turns nothing on */
	settings_defaults(&s);
	set_bad("doh-url", "ftp://x/");
	assert_int_equal(s.doh, 0);

	struct settings src, dst;
	settings_defaults(&src);
	settings_defaults(&dst);
	uint64_t bit = 1ull << settings_set(&src, "doh-port", "8443", err, sizeof err);
	settings_overlay(&dst, &src, bit);
	assert_int_equal(dst.doh, 1);
	settings_defaults(&dst);
	settings_overlay(&dst, &src, 0);
	assert_int_equal(dst.doh, 0);
}

static void defaults_are_deterministic_including_padding(void **state)
{
	(void)state;
	struct settings a, b;
	memset(&a, 0x5a, sizeof a);
	memset(&b, 0xa5, sizeof b);
	settings_defaults(&a);
	settings_defaults(&b);
	assert_memory_equal(&a, &b, sizeof a);
}

/* ---- integers ----------------------------------------------------------- */

static void integer_keys_accept_their_bounds(void **state)
{
	(void)state;
	set_ok("workers", "1");
	assert_int_equal(s.workers, 1);
	set_ok("workers", "64");
	assert_int_equal(s.workers, 64);
	set_ok("handshake-timeout", "86400");
	assert_int_equal(s.handshake_timeout_s, 86400);
	set_ok("connect-timeout", "3600");
	assert_int_equal(s.connect_timeout_s, 3600);
	set_ok("idle-timeout", "604800");
	assert_int_equal(s.idle_timeout_s, 604800);
	set_ok("grace", "0");
	assert_int_equal(s.grace_s, 0);
	set_ok("buffer-size", "4096");
	assert_int_equal(s.buffer_size, 4096);
	set_ok("buffer-size", "1048576");
	assert_int_equal(s.buffer_size, 1048576);
	set_ok("port", "65535");
	assert_int_equal(s.port, 65535);
	set_ok("port", "1");
	assert_int_equal(s.port, 1);
	set_ok("admin-port", "9090");
	assert_int_equal(s.admin_port, 9090);
	set_ok("doh-port", "443");
	assert_int_equal(s.doh_port, 443);
}

static void integer_keys_reject_values_out_of_bounds(void **state)
{
	(void)state;
	set_bad("workers", "0");
	set_bad("workers", "65");
	set_bad("handshake-timeout", "0");
	set_bad("handshake-timeout", "86401");
	set_bad("connect-timeout", "3601");
	set_bad("idle-timeout", "604801");
	set_bad("grace", "3601");
	set_bad("buffer-size", "4095");
	set_bad("buffer-size", "1048577");
	set_bad("port", "0");
	set_bad("port", "65536");
	set_bad("admin-port", "70000");
	set_bad("doh-port", "0");
}

static void integer_keys_reject_junk(void **state)
{
	(void)state;
	static const char *const junk[] = {
		"12x", "-1", "", "99999999999", "18446744073709551617", "4294967297", " 5", "5 ",
		"+5", "0x10", "1e3", "abc", "1.5", "\xd9\xa3",
	};
	for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
		set_bad("workers", junk[i]);
		set_bad("idle-timeout", junk[i]);
		set_bad("port", junk[i]);
	}
}

static void integer_error_names_the_value_and_the_range(void **state)
{
	(void)state;
	assert_int_equal(settings_set(&s, "workers", "abc", err, sizeof err), -EINVAL);
	assert_non_null(strstr(err, "abc"));
	assert_non_null(strstr(err, "1..64"));
}

/* ---- booleans ----------------------------------------------------------- */

static void bool_keys_take_yes_no_and_synonyms(void **state)
{
	(void)state;
	static const char *const keys[] = {"idle-cleanup", "dissectors", "dns-fallback"};
	for (size_t k = 0; k < 3; k++) {
		uint8_t *field = k == 0 ? &s.idle_cleanup : k == 1 ? &s.dissectors : &s.dns_fallback;
		set_ok(keys[k], "no");
		assert_int_equal(*field, 0);
		set_ok(keys[k], "yes");
		assert_int_equal(*field, 1);
		set_ok(keys[k], "false");
		assert_int_equal(*field, 0);
		set_ok(keys[k], "true");
		assert_int_equal(*field, 1);
		set_ok(keys[k], "off");
		assert_int_equal(*field, 0);
		set_ok(keys[k], "on");
		assert_int_equal(*field, 1);
		set_ok(keys[k], "0");
		assert_int_equal(*field, 0);
		set_ok(keys[k], "1");
		assert_int_equal(*field, 1);
	}
}

static void bool_keys_reject_junk(void **state)
{
	(void)state;
	set_bad("idle-cleanup", "maybe");
	set_bad("idle-cleanup", "");
	set_bad("dissectors", "2");
	set_bad("dissectors", "yess");
	set_bad("dns-fallback", "y e s");
	set_bad("dns-fallback", "-1");
}

/* ---- choices ------------------------------------------------------------ */

static void anonymous_takes_auto_always_never(void **state)
{
	(void)state;
	set_ok("anonymous", "always");
	assert_int_equal(s.anonymous, ANON_ALWAYS);
	set_ok("anonymous", "never");
	assert_int_equal(s.anonymous, ANON_NEVER);
	set_ok("anonymous", "auto");
	assert_int_equal(s.anonymous, ANON_AUTO);
	set_bad("anonymous", "sometimes");
	set_bad("anonymous", "");
	set_bad("anonymous", "1");
}

static void log_level_takes_the_level_names(void **state)
{
	(void)state;
	set_ok("log-level", "error");
	assert_int_equal(s.log_level, LOG_ERROR);
	set_ok("log-level", "warn");
	assert_int_equal(s.log_level, LOG_WARN);
	set_ok("log-level", "debug");
	assert_int_equal(s.log_level, LOG_DEBUG);
	set_ok("log-level", "info");
	assert_int_equal(s.log_level, LOG_INFO);
	set_bad("log-level", "verbose");
	set_bad("log-level", "infos");
}

static void doh_method_takes_get_or_post(void **state)
{
	(void)state;
	set_ok("doh-method", "post");
	assert_int_equal(s.doh_post, 1);
	set_ok("doh-method", "get");
	assert_int_equal(s.doh_post, 0);
	set_bad("doh-method", "put");
}

static void accept_takes_exclusive_or_reuseport(void **state)
{
	(void)state;
	set_ok("accept", "reuseport");
	assert_int_equal(s.accept, ACCEPT_REUSEPORT);
	set_ok("accept", "exclusive");
	assert_int_equal(s.accept, ACCEPT_EXCLUSIVE);
	set_bad("accept", "");
	set_bad("accept", "Reuseport");
	set_bad("accept", "reuseport ");
	set_bad("accept", "1");
	set_bad("accept", "shared");
	/* The error names the value and both choices. */
	assert_int_equal(settings_set(&s, "accept", "roundrobin", err, sizeof err), -EINVAL);
	assert_non_null(strstr(err, "'roundrobin'"));
	assert_non_null(strstr(err, "exclusive|reuseport"));
}

static void choice_error_lists_the_choices(void **state)
{
	(void)state;
	assert_int_equal(settings_set(&s, "anonymous", "bogus", err, sizeof err), -EINVAL);
	assert_non_null(strstr(err, "bogus"));
	assert_non_null(strstr(err, "auto"));
	assert_non_null(strstr(err, "always"));
	assert_non_null(strstr(err, "never"));
}

/* ---- addresses and strings ---------------------------------------------- */

static void address_keys_take_ipv4_and_ipv6(void **state)
{
	(void)state;
	set_ok("admin-addr", "0.0.0.0");
	assert_string_equal(s.admin_addr, "0.0.0.0");
	set_ok("admin-addr", "::1");
	assert_string_equal(s.admin_addr, "::1");
	set_ok("doh-ip", "2001:db8::53");
	assert_string_equal(s.doh_ip, "2001:db8::53");
	set_ok("doh-ip", "192.0.2.53");
	assert_string_equal(s.doh_ip, "192.0.2.53");
	set_ok("doh-ip", "::ffff:192.0.2.1");
	assert_string_equal(s.doh_ip, "::ffff:192.0.2.1");
}

static void address_keys_reject_names_and_junk(void **state)
{
	(void)state;
	set_bad("admin-addr", "localhost");
	set_bad("admin-addr", "");
	set_bad("admin-addr", "1.2.3.4.5");
	set_bad("admin-addr", "256.1.1.1");
	set_bad("admin-addr", "[::1]");
	set_bad("doh-ip", "::1%lo");
	set_bad("doh-ip", "1.2.3.4:53");
}

static void doh_url_takes_http_and_https(void **state)
{
	(void)state;
	set_ok("doh-url", "http://127.0.0.1:8053/dns-query");
	assert_string_equal(s.doh_url, "http://127.0.0.1:8053/dns-query");
	set_ok("doh-url", "https://dns.example/dns-query");
	assert_string_equal(s.doh_url, "https://dns.example/dns-query");
}

static void doh_url_rejects_other_schemes_and_overlong(void **state)
{
	(void)state;
	set_bad("doh-url", "ftp://dns.example/");
	set_bad("doh-url", "dns.example");
	set_bad("doh-url", "");
	set_bad("doh-url", "HTTPX://a");
	char big[1100];
	memcpy(big, "https://", 8);
	memset(big + 8, 'a', sizeof big - 9);
	big[sizeof big - 1] = '\0';
	struct settings before = s;
	assert_int_equal(settings_set(&s, "doh-url", big, err, sizeof err), -EINVAL);
	assert_memory_equal(&before, &s, sizeof s);
}

static void doh_url_of_1023_bytes_fits(void **state)
{
	(void)state;
	char url[1024];
	memcpy(url, "https://", 8);
	memset(url + 8, 'a', sizeof url - 9);
	url[sizeof url - 1] = '\0';
	set_ok("doh-url", url);
	assert_string_equal(s.doh_url, url);
}

static void string_keys_reject_empty_and_overlong(void **state)
{
	(void)state;
	set_ok("doh-host", "dns.example");
	assert_string_equal(s.doh_host, "dns.example");
	set_ok("doh-path", "/dns-query");
	assert_string_equal(s.doh_path, "/dns-query");
	set_ok("doh-ca-file", "/etc/ssl/ca.pem");
	assert_string_equal(s.doh_ca_file, "/etc/ssl/ca.pem");
	set_bad("doh-host", "");
	set_bad("doh-path", "");

	char q[65];
	memset(q, 'q', 63);
	q[63] = '\0';
	set_ok("doh-query", q); /* 63 bytes + NUL fill the 64-byte field */
	assert_string_equal(s.doh_query, q);
	q[63] = 'q';
	q[64] = '\0';
	set_bad("doh-query", q);
}

static void congestion_keys_take_a_kernel_name_or_nothing(void **state)
{
	(void)state;
	assert_string_equal(s.client_congestion, "");
	assert_string_equal(s.target_congestion, "");
	set_ok("client-congestion", "cubic");
	assert_string_equal(s.client_congestion, "cubic");
	set_ok("target-congestion", "bbr");
	assert_string_equal(s.target_congestion, "bbr");
	set_ok("target-congestion", "scalable_tcp-2");
	set_ok("target-congestion", ""); /* back to the system's */
	assert_string_equal(s.target_congestion, "");
	set_bad("client-congestion", "Cubic");
	set_bad("client-congestion", "bb r");
	set_bad("client-congestion", "../x");
	set_bad("client-congestion", "a.b");
	set_ok("client-congestion", "abcdefghijklmno"); /* 15 bytes + NUL fill the field */
	set_bad("client-congestion", "abcdefghijklmnop");
	assert_string_equal(s.client_congestion, "abcdefghijklmno");
}

static void dns_server_takes_a_list_of_addresses_with_optional_ports(void **state)
{
	(void)state;
	set_ok("dns-server", "1.1.1.1");
	assert_string_equal(s.dns_server, "1.1.1.1");
	set_ok("dns-server", "1.1.1.1:53,[2001:db8::1]:5353,::1");
	assert_string_equal(s.dns_server, "1.1.1.1:53,[2001:db8::1]:5353,::1");
	set_ok("dns-server", "[::1]:65535");
	assert_string_equal(s.dns_server, "[::1]:65535");
}

static void dns_server_rejects_names_bad_ports_and_empty_items(void **state)
{
	(void)state;
	set_bad("dns-server", "dns.google");
	set_bad("dns-server", "1.1.1.1:0");
	set_bad("dns-server", "1.1.1.1:65536");
	set_bad("dns-server", "1.1.1.1:");
	set_bad("dns-server", "1.1.1.1,");
	set_bad("dns-server", ",1.1.1.1");
	set_bad("dns-server", "1.1.1.1,,8.8.8.8");
	set_bad("dns-server", "[::1]");
	set_bad("dns-server", "[1.1.1.1]:53");
	set_bad("dns-server", "[]:53");
	set_bad("dns-server", "2001:db8::1]:53");
}

static void dns_server_rejects_a_list_longer_than_its_field(void **state)
{
	(void)state;
	char list[400] = "";
	while (strlen(list) < sizeof s.dns_server)
		strcat(list, "192.168.100.100,");
	strcat(list, "1.1.1.1");
	struct settings before = s;
	assert_int_equal(settings_set(&s, "dns-server", list, err, sizeof err), -EINVAL);
	assert_memory_equal(&before, &s, sizeof s);
}

/* ---- bind-ports ---------------------------------------------------------- */

static void bind_ports_take_a_range_or_ephemeral(void **state)
{
	(void)state;
	char out[32];
	const struct setting_desc *d = settings_find("bind-ports");
	assert_int_equal(s.bind_ports[0], 0); /* the default: the kernel's choice */
	assert_int_equal(s.bind_ports[1], 0);
	set_ok("bind-ports", "20000-20100");
	assert_int_equal(s.bind_ports[0], 20000);
	assert_int_equal(s.bind_ports[1], 20100);
	settings_format(&s, d, out, sizeof out);
	assert_string_equal(out, "20000-20100");
	set_ok("bind-ports", "1-1");
	set_ok("bind-ports", "65535-65535");
	set_ok("bind-ports", "ephemeral");
	assert_int_equal(s.bind_ports[0], 0);
	settings_format(&s, d, out, sizeof out);
	assert_string_equal(out, "ephemeral");
}

static void bind_ports_reject_junk(void **state)
{
	(void)state;
	static const char *const bad[] = {"",         "0-10",       "10-0",        "20-10",
	                                  "1-65536",  "1000",       "1000-",       "-1000",
	                                  "a-b",      "1-2-3",      " 1-2",        "1 -2",
	                                  "+1-2",     "1--2",       "99999999-1",  "Ephemeral",
	                                  "123456789012-1", "1-99999999999999999999"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		set_bad("bind-ports", bad[i]);
}

/* ---- listen ------------------------------------------------------------- */

static void listen_appends_up_to_16_then_fails(void **state)
{
	(void)state;
	char addr[32];
	int idx = -1;
	for (int i = 0; i < SETTINGS_MAX_LISTEN; i++) {
		snprintf(addr, sizeof addr, i % 2 ? "10.0.0.%d" : "fd00::%d", i + 1);
		int rc = set_ok("listen", addr);
		if (idx >= 0)
			assert_int_equal(rc, idx);
		idx = rc;
		assert_int_equal(s.nlisten, (uint32_t)i + 1);
		assert_string_equal(s.listen[i], addr);
	}
	struct settings before = s;
	assert_int_equal(settings_set(&s, "listen", "127.0.0.1", err, sizeof err), -EINVAL);
	assert_true(err[0] != '\0');
	assert_non_null(strstr(err, "16"));
	assert_memory_equal(&before, &s, sizeof s);
	assert_string_equal(s.listen[0], "fd00::1");
	assert_string_equal(s.listen[1], "10.0.0.2");
}

static void listen_rejects_junk_without_appending(void **state)
{
	(void)state;
	set_ok("listen", "127.0.0.1");
	set_bad("listen", "localhost");
	set_bad("listen", "");
	set_bad("listen", "127.0.0.1:1080");
	assert_int_equal(s.nlisten, 1);
	set_ok("listen", "::");
	assert_int_equal(s.nlisten, 2);
	assert_string_equal(s.listen[1], "::");
}

/* ---- keys --------------------------------------------------------------- */

static void unknown_key_is_enoent_and_named(void **state)
{
	(void)state;
	struct settings before = s;
	assert_int_equal(settings_set(&s, "no-such-key", "1", err, sizeof err), -ENOENT);
	assert_non_null(strstr(err, "no-such-key"));
	assert_int_equal(settings_set(&s, "", "1", err, sizeof err), -ENOENT);
	assert_int_equal(settings_set(&s, "Workers", "1", err, sizeof err), -ENOENT);
	assert_int_equal(settings_set(&s, "workers ", "1", err, sizeof err), -ENOENT);
	assert_int_equal(settings_set(&s, "--workers", "1", err, sizeof err), -ENOENT);
	assert_memory_equal(&before, &s, sizeof s);
}

static const char *const all_keys[][2] = {
	{"workers", "2"},          {"handshake-timeout", "5"},
	{"connect-timeout", "5"},  {"idle-timeout", "5"},
	{"grace", "5"},            {"buffer-size", "4096"},
	{"idle-cleanup", "no"},    {"dissectors", "no"},
	{"anonymous", "never"},    {"log-level", "debug"},
	{"doh-method", "post"},    {"dns-fallback", "no"},
	{"port", "1081"},          {"admin-port", "8081"},
	{"doh-port", "8054"},      {"listen", "::1"},
	{"admin-addr", "::1"},     {"doh-ip", "::1"},
	{"doh-host", "h"},         {"doh-path", "/p"},
	{"doh-query", "?q="},      {"doh-url", "https://x/"},
	{"doh-ca-file", "/ca"},    {"dns-server", "1.1.1.1"},
	{"accept", "reuseport"},
};
#define NKEYS (sizeof all_keys / sizeof all_keys[0])

static void every_key_has_a_distinct_stable_index_below_64(void **state)
{
	(void)state;
	int idx[NKEYS];
	for (size_t i = 0; i < NKEYS; i++) {
		idx[i] = set_ok(all_keys[i][0], all_keys[i][1]);
		for (size_t j = 0; j < i; j++)
			assert_int_not_equal(idx[i], idx[j]);
	}
	settings_defaults(&s);
	for (size_t i = 0; i < NKEYS; i++)
		assert_int_equal(set_ok(all_keys[i][0], all_keys[i][1]), idx[i]);
}

static void tiny_error_buffer_is_truncated_safely(void **state)
{
	(void)state;
	char small[8];
	memset(small, 'x', sizeof small);
	assert_int_equal(settings_set(&s, "workers", "a-very-long-junk-value", small, sizeof small),
	                 -EINVAL);
	assert_int_equal(small[sizeof small - 1], '\0');
	assert_int_equal(settings_set(&s, "a-very-long-unknown-key", "1", small, sizeof small),
	                 -ENOENT);
	assert_int_equal(small[sizeof small - 1], '\0');
}

/* ---- overlay ------------------------------------------------------------ */

static uint64_t bit_of(const char *key, const char *value, struct settings *into)
{
	int i = settings_set(into, key, value, err, sizeof err);
	assert_in_range(i, 0, 63);
	return 1ull << i;
}

static void overlay_copies_only_masked_keys(void **state)
{
	(void)state;
	struct settings src, dst, want;
	settings_defaults(&src);
	settings_defaults(&dst);
	uint64_t mask = 0;
	mask |= bit_of("port", "2000", &src);
	mask |= bit_of("doh-host", "dns.example", &src);
	mask |= bit_of("anonymous", "never", &src);
	/* Changed in src but not in the mask: must not be copied. */
	(void)bit_of("workers", "7", &src);
	(void)bit_of("idle-timeout", "42", &src);
	(void)bit_of("doh-url", "https://x/", &src);

	settings_defaults(&want);
	want.port = 2000;
	strcpy(want.doh_host, "dns.example");
	want.anonymous = ANON_NEVER;
	want.doh = 1; /* a part of the endpoint was given */

	settings_overlay(&dst, &src, mask);
	assert_memory_equal(&dst, &want, sizeof dst);
}

static void overlay_copies_listen_with_its_count(void **state)
{
	(void)state;
	struct settings src, dst;
	settings_defaults(&src);
	settings_defaults(&dst);
	uint64_t listen = bit_of("listen", "127.0.0.1", &src);
	(void)bit_of("listen", "::1", &src);
	(void)bit_of("port", "1", &src);

	/* dst had three of its own: they are replaced, not appended to. */
	(void)bit_of("listen", "10.0.0.1", &dst);
	(void)bit_of("listen", "10.0.0.2", &dst);
	(void)bit_of("listen", "10.0.0.3", &dst);

	settings_overlay(&dst, &src, listen);
	assert_int_equal(dst.nlisten, 2);
	assert_string_equal(dst.listen[0], "127.0.0.1");
	assert_string_equal(dst.listen[1], "::1");
	assert_int_equal(dst.port, 1080);

	/* And the other way: a listen-less src clears the list. */
	struct settings empty;
	settings_defaults(&empty);
	settings_overlay(&dst, &empty, listen);
	assert_int_equal(dst.nlisten, 0);
}

static void overlay_with_empty_mask_changes_nothing(void **state)
{
	(void)state;
	struct settings src, dst, before;
	settings_defaults(&src);
	settings_defaults(&dst);
	for (size_t i = 0; i < NKEYS; i++)
		(void)bit_of(all_keys[i][0], all_keys[i][1], &src);
	before = dst;
	settings_overlay(&dst, &src, 0);
	assert_memory_equal(&dst, &before, sizeof dst);
}

static void overlay_with_every_bit_copies_everything(void **state)
{
	(void)state;
	struct settings src, dst;
	settings_defaults(&src);
	settings_defaults(&dst);
	for (size_t i = 0; i < NKEYS; i++)
		(void)bit_of(all_keys[i][0], all_keys[i][1], &src);
	settings_overlay(&dst, &src, ~0ull);
	assert_memory_equal(&dst, &src, sizeof dst);
}


/* ---- the table -------------------------------------------------------------- */

static void every_row_formats_what_it_parses(void **state)
{
	(void)state;
	/* The default of each row, printed and parsed back, is the same value. */
	struct settings a, b;
	char text[2048];
	settings_defaults(&a);
	for (size_t i = 0; i < settings_count; i++) {
		const struct setting_desc *d = &settings_table[i];
		assert_ptr_equal(settings_find(d->key), d);
		settings_format(&a, d, text, sizeof text);
		if (!text[0])
			continue; /* unset strings: nothing to parse */
		settings_defaults(&b);
		b.nlisten = 0;
		if (settings_set(&b, d->key, text, err, sizeof err) != (int)i)
			fail_msg("%s = '%s' not taken back: %s", d->key, text, err);
		assert_memory_equal((char *)&a + d->off, (char *)&b + d->off, d->size);
	}
}

static void every_row_is_in_the_help_with_its_flag_and_short_option(void **state)
{
	(void)state;
	char buf[16384];
	FILE *f = fmemopen(buf, sizeof buf, "w");
	assert_non_null(f);
	settings_usage(f);
	fclose(f);
	buf[sizeof buf - 1] = '\0';
	for (size_t i = 0; i < settings_count; i++) {
		const struct setting_desc *d = &settings_table[i];
		char want[96];
		snprintf(want, sizeof want, "--%s ", d->key);
		if (!strstr(buf, want))
			fail_msg("%s missing from the help", want);
		if (d->short_opt) {
			snprintf(want, sizeof want, "-%c, --%s", d->short_opt, d->key);
			assert_non_null(strstr(buf, want));
		}
		if (d->flag.name) {
			snprintf(want, sizeof want, "--%s ", d->flag.name);
			assert_non_null(strstr(buf, want));
			/* the flag's value is one the row takes */
			settings_defaults(&s);
			assert_int_equal(settings_set(&s, d->key, d->flag.value, err, sizeof err), (int)i);
		}
		assert_non_null(d->help);
		assert_true(d->deflt || d->deflt_help);
	}
	/* no line wider than 79 columns */
	for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n"))
		assert_true(strlen(line) <= 79);
}

static void sizes_and_durations_take_units(void **state)
{
	(void)state;
	set_ok("buffer-size", "64K");
	assert_int_equal(s.buffer_size, 65536);
	set_ok("buffer-size", "64KiB");
	assert_int_equal(s.buffer_size, 65536);
	set_ok("pipe-size", "1M");
	assert_int_equal(s.pipe_size, 1048576);
	set_ok("pipe-size", "8192b");
	assert_int_equal(s.pipe_size, 8192);
	set_ok("idle-timeout", "2h");
	assert_int_equal(s.idle_timeout_s, 7200);
	set_ok("idle-timeout", "1d");
	assert_int_equal(s.idle_timeout_s, 86400);
	set_ok("handshake-timeout", "5m");
	assert_int_equal(s.handshake_timeout_s, 300);
	set_ok("connect-timeout", "30s");
	assert_int_equal(s.connect_timeout_s, 30);
	/* the range applies after the unit */
	set_bad("buffer-size", "2M");
	set_bad("buffer-size", "3K");
	set_bad("connect-timeout", "2h");
	set_bad("idle-timeout", "4294967296s");
	set_bad("buffer-size", "4194304K");
	/* no unit where the row has none, and no unit of the other kind */
	set_bad("workers", "2K");
	set_bad("port", "1m");
	set_bad("buffer-size", "64s");
	set_bad("idle-timeout", "64K");
	set_bad("idle-timeout", "5M");
	set_bad("idle-timeout", "5 m");
	set_bad("buffer-size", "K");
}

static void run_as_takes_user_or_user_and_group(void **state)
{
	(void)state;
	assert_int_equal(s.run_as[0], '\0');
	set_ok("run-as", "nobody");
	assert_string_equal(s.run_as, "nobody");
	set_ok("run-as", "socks5d:nogroup");
	set_ok("run-as", "65534:65534");
	set_ok("run-as", "svc_proxy.1");
	static const char *const bad[] = {"", ":", "a:", ":b", "a:b:c", "-x", "a b",
	                                  "root:-g", "x/y", "abcdefghijklmnopqrstuvwxyz0123456"};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		set_bad("run-as", bad[i]);
}

static void change_refuses_rows_that_do_not_change_while_running(void **state)
{
	(void)state;
	char msg[256];
	assert_int_equal(settings_change(&s, "port", "1081", msg, sizeof msg), -EPERM);
	assert_non_null(strstr(msg, "at start only"));
	assert_int_equal(settings_change(&s, "workers", "1", msg, sizeof msg), -EPERM);
	assert_non_null(strstr(msg, "at reload"));
	assert_int_equal(settings_change(&s, "run-as", "nobody", msg, sizeof msg), -EPERM);
	assert_int_equal(settings_change(&s, "colour", "blue", msg, sizeof msg), -ENOENT);
	struct settings before = s;
	assert_int_equal(settings_change(&s, "buffer-size", "100", msg, sizeof msg), -EINVAL);
	assert_memory_equal(&before, &s, sizeof s);
	assert_int_equal(settings_change(&s, "buffer-size", "128K", msg, sizeof msg), 0);
	assert_string_equal(msg, "131072");
	assert_int_equal(s.buffer_size, 131072);
	assert_int_equal(settings_change(&s, "dissectors", "off", msg, sizeof msg), 0);
	assert_string_equal(msg, "no");
}

static void numeric_pipo_codes_map_to_rows_with_their_ranges(void **state)
{
	(void)state;
	const struct setting_desc *d = settings_find_pipo(true, 0x04); /* M_BUFFER_SIZE */
	assert_non_null(d);
	assert_string_equal(d->key, "buffer-size");
	assert_ptr_equal(settings_find_pipo(false, 0x08), d); /* Q_BUFFER_SIZE */
	assert_int_equal(settings_set_number(&s, d, 4095), -EINVAL);
	assert_int_equal(settings_set_number(&s, d, 1048577), -EINVAL);
	assert_int_equal(settings_set_number(&s, d, 8192), 0);
	assert_int_equal(settings_number(&s, d), 8192);
	d = settings_find("anonymous");
	assert_int_equal(settings_set_number(&s, d, 3), -EINVAL);
	assert_int_equal(settings_set_number(&s, d, ANON_NEVER), 0);
	d = settings_find("dissectors");
	assert_int_equal(settings_set_number(&s, d, 2), -EINVAL);
	assert_null(settings_find_pipo(true, 0x00));  /* M_ADD_USER is no setting */
	assert_null(settings_find_pipo(false, 0xff));
	/* each code names one row at most */
	for (unsigned code = 0; code < 0xff; code++)
		for (int m = 0; m < 2; m++) {
			const struct setting_desc *r = settings_find_pipo(m, (uint8_t)code);
			size_t n = 0;
			for (size_t i = 0; r && i < settings_count; i++)
				n += (m ? settings_table[i].pipo_m : settings_table[i].pipo_q) == code;
			assert_true(!r || n == 1);
		}
}

static void no_value_holds_a_control_byte(void **state)
{
	(void)state;
	static const char *const keys[] = {"doh-host", "doh-path", "doh-query", "doh-url",
	                                   "doh-ca-file", "admin-socket", "dns-server", "run-as"};
	for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
		struct settings before = s;
		assert_int_equal(settings_set(&s, keys[i], "https://a\r\nX-Injected: 1", err, sizeof err),
		                 -EINVAL);
		assert_non_null(strstr(err, "control byte"));
		assert_int_equal(settings_set(&s, keys[i], "x\x7f", err, sizeof err), -EINVAL);
		assert_int_equal(settings_set(&s, keys[i], "\x1b[31m", err, sizeof err), -EINVAL);
		assert_memory_equal(&before, &s, sizeof s);
	}
}

static void doh_url_in_force_is_empty_without_an_endpoint(void **state)
{
	(void)state;
	char url[1100];
	settings_doh_url(&s, url, sizeof url);
	assert_string_equal(url, "");
	set_ok("doh-port", "8443");
	settings_doh_url(&s, url, sizeof url);
	assert_string_equal(url, "http://127.0.0.1:8443/getnsrecord?dns=");
	set_ok("doh-ip", "::1");
	settings_doh_url(&s, url, sizeof url);
	assert_string_equal(url, "http://[::1]:8443/getnsrecord?dns=");
	set_ok("doh-url", "https://dns.example/dns-query");
	settings_doh_url(&s, url, sizeof url);
	assert_string_equal(url, "https://dns.example/dns-query");
}

#define T(f) cmocka_unit_test_setup(f, setup)

int main(void)
{
	const struct CMUnitTest tests[] = {
		T(defaults_are_the_documented_values),
		T(defaults_are_deterministic_including_padding),
		T(doh_is_on_only_when_a_part_of_the_endpoint_is_given),
		T(every_row_formats_what_it_parses),
		T(every_row_is_in_the_help_with_its_flag_and_short_option),
		T(sizes_and_durations_take_units),
		T(run_as_takes_user_or_user_and_group),
		T(change_refuses_rows_that_do_not_change_while_running),
		T(numeric_pipo_codes_map_to_rows_with_their_ranges),
		T(doh_url_in_force_is_empty_without_an_endpoint),
		T(no_value_holds_a_control_byte),
		T(integer_keys_accept_their_bounds),
		T(integer_keys_reject_values_out_of_bounds),
		T(integer_keys_reject_junk),
		T(integer_error_names_the_value_and_the_range),
		T(bool_keys_take_yes_no_and_synonyms),
		T(bool_keys_reject_junk),
		T(anonymous_takes_auto_always_never),
		T(log_level_takes_the_level_names),
		T(doh_method_takes_get_or_post),
		T(accept_takes_exclusive_or_reuseport),
		T(choice_error_lists_the_choices),
		T(address_keys_take_ipv4_and_ipv6),
		T(address_keys_reject_names_and_junk),
		T(doh_url_takes_http_and_https),
		T(doh_url_rejects_other_schemes_and_overlong),
		T(doh_url_of_1023_bytes_fits),
		T(string_keys_reject_empty_and_overlong),
		T(congestion_keys_take_a_kernel_name_or_nothing),
		T(dns_server_takes_a_list_of_addresses_with_optional_ports),
		T(dns_server_rejects_names_bad_ports_and_empty_items),
		T(dns_server_rejects_a_list_longer_than_its_field),
		T(bind_ports_take_a_range_or_ephemeral),
		T(bind_ports_reject_junk),
		T(listen_appends_up_to_16_then_fails),
		T(listen_rejects_junk_without_appending),
		T(unknown_key_is_enoent_and_named),
		T(every_key_has_a_distinct_stable_index_below_64),
		T(tiny_error_buffer_is_truncated_safely),
		T(overlay_copies_only_masked_keys),
		T(overlay_copies_listen_with_its_count),
		T(overlay_with_empty_mask_changes_nothing),
		T(overlay_with_every_bit_copies_everything),
	};
	return cmocka_run_group_tests_name("settings", tests, NULL, NULL);
}
