/* rules: the parser, the matcher's first-match order on every field, and
 * the default policy. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "../../shared/rules.h"

static struct sockaddr_storage sa(const char *ip, uint16_t port)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
	} else {
		assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
	}
	return ss;
}

static struct rules *compile(const char *text)
{
	struct rules *rs = NULL;
	char err[256];
	int rc = rules_compile(text, strlen(text), NULL, &rs, err, sizeof err, NULL);
	if (rc != 0)
		fail_msg("compile failed: %s", err);
	return rs;
}

static int compile_err(const char *text, char *err, size_t len)
{
	struct rules *rs = NULL;
	int rc = rules_compile(text, strlen(text), NULL, &rs, err, len, NULL);
	assert_null(rs);
	return rc;
}

/* Decide: returns the number of the rule (0: default) and the action. */
static uint32_t decide(const struct rules *rs, const char *client, const char *user, int cmd,
                       const char *name, const char *dest, uint16_t port, int *action)
{
	struct sockaddr_storage c = sa(client, 40000), d;
	struct rules_request q = {.client = (struct sockaddr *)&c, .user = user, .cmd = (uint8_t)cmd,
	                          .port = port, .name = name};
	if (dest) {
		d = sa(dest, port);
		q.dest = (struct sockaddr *)&d;
	}
	struct rules_match m;
	*action = rules_decide(rs, &q, &m);
	assert_int_equal(*action, m.action);
	return m.number;
}

#define EXPECT(rs, client, user, cmd, name, dest, port, want_action, want_rule)                   \
	do {                                                                                        \
		int act_;                                                                               \
		uint32_t n_ = decide(rs, client, user, cmd, name, dest, port, &act_);                  \
		assert_int_equal(act_, want_action);                                                    \
		assert_int_equal(n_, want_rule);                                                        \
	} while (0)

static void default_policy_without_rules(void **state)
{
	(void)state;
	struct rules *rs = compile("");
	/* a client on loopback: everything */
	EXPECT(rs, "127.0.0.1", NULL, 1, NULL, "127.0.0.1", 80, RULES_PASS, 0);
	EXPECT(rs, "::1", NULL, 1, NULL, "169.254.77.77", 80, RULES_PASS, 0);
	EXPECT(rs, "::ffff:127.0.0.2", NULL, 1, NULL, "::1", 80, RULES_PASS, 0);
	/* elsewhere: loopback, unspecified, link-local blocked */
	const char *blocked[] = {"127.0.0.1", "127.255.0.9", "0.0.0.0", "0.1.2.3", "169.254.77.77",
	                         "::1", "::", "fe80::1", "febf::1", "::ffff:127.0.0.1",
	                         "::ffff:169.254.1.1", "::ffff:0.0.0.0", "::2"};
	for (size_t i = 0; i < sizeof blocked / sizeof blocked[0]; i++)
		EXPECT(rs, "10.0.0.2", NULL, 1, NULL, blocked[i], 80, RULES_BLOCK, 0);
	const char *passed[] = {"10.0.0.1", "8.8.8.8", "128.0.0.1", "169.253.1.1", "2001:db8::1",
	                        "fec0::1", "::ffff:10.0.0.1"};
	for (size_t i = 0; i < sizeof passed / sizeof passed[0]; i++)
		EXPECT(rs, "10.0.0.2", NULL, 1, NULL, passed[i], 80, RULES_PASS, 0);
	/* a name before resolution: the addresses decide */
	EXPECT(rs, "10.0.0.2", NULL, 1, "localhost", NULL, 80, RULES_UNDECIDED, 0);
	EXPECT(rs, "127.0.0.1", NULL, 1, "localhost", NULL, 80, RULES_PASS, 0);
	/* no rule set at all: the same default */
	EXPECT(NULL, "10.0.0.2", NULL, 1, NULL, "127.0.0.1", 80, RULES_BLOCK, 0);
	EXPECT(NULL, "10.0.0.2", NULL, 1, NULL, "10.0.0.1", 80, RULES_PASS, 0);
	rules_free(rs);
}

/* IPv6 forms that a host or a translator delivers to an IPv4 address,
 * multicast and broadcast, and the EC2 metadata address. */
static void default_policy_embedded_and_multicast(void **state)
{
	(void)state;
	static const char *const blocked[] = {
	    "::127.0.0.1",          /* IPv4-compatible */
	    "::169.254.77.77",
	    "::ffff:0:127.0.0.1",   /* SIIT */
	    "::ffff:0:a9fe:4d4d",   /* 169.254.77.77 */
	    "64:ff9b::7f00:1",      /* NAT64 */
	    "64:ff9b::a9fe:4d4d",
	    "64:ff9b::e000:fb",     /* 224.0.0.251 */
	    "64:ff9b:1::a00:1",     /* the local-use NAT64 prefix, whole */
	    "64:ff9b:1:ffff::",
	    "2002:7f00:1::1",       /* 6to4 */
	    "2002:a9fe:4d4d:1::2",
	    "2002::1",              /* 6to4 of 0.0.0.0 */
	    "fd00:ec2::254",        /* EC2 metadata */
	    "224.0.0.1",            /* multicast */
	    "239.255.255.250",
	    "::ffff:224.0.0.251",
	    "255.255.255.255",      /* limited broadcast */
	    "ff02::1",
	    "ff05::c",
	    "ff0e::1",
	};
	static const char *const passed[] = {
	    "::10.0.0.1",        "::ffff:0:a00:1", "64:ff9b::808:808", "64:ff9b::1:a00:1",
	    "64:ff9b:2::1",      "2002:a00:1::1",  "2003:7f00:1::1",   "fd00:ec2::253",
	    "fd00:ec2:0:1::254", "223.255.255.255", "240.0.0.1",       "255.255.255.254",
	    "fe00::1",           "::1:0:0:1",
	};
	struct rules *none = compile("");
	for (size_t i = 0; i < sizeof blocked / sizeof blocked[0]; i++) {
		EXPECT(none, "10.0.0.2", NULL, 1, NULL, blocked[i], 80, RULES_BLOCK, 0);
		EXPECT(none, "2001:db8::2", NULL, 3, NULL, blocked[i], 5353, RULES_BLOCK, 0);
		EXPECT(none, "127.0.0.1", NULL, 1, NULL, blocked[i], 80, RULES_PASS, 0);
		EXPECT(none, "::1", NULL, 3, NULL, blocked[i], 5353, RULES_PASS, 0);
		/* a rule that names the destination lets it through */
		char text[128];
		snprintf(text, sizeof text, "pass to %s\n", blocked[i]);
		struct rules *rs = compile(text);
		EXPECT(rs, "10.0.0.2", NULL, 1, NULL, blocked[i], 80, RULES_PASS, 1);
		rules_free(rs);
	}
	for (size_t i = 0; i < sizeof passed / sizeof passed[0]; i++)
		EXPECT(none, "10.0.0.2", NULL, 1, NULL, passed[i], 80, RULES_PASS, 0);
	rules_free(none);
	/* wide rules open the forms too */
	struct rules *rs = compile("pass to 64:ff9b::/96, 2002::/16, ff00::/8, 224.0.0.0/4\n");
	EXPECT(rs, "10.0.0.2", NULL, 1, NULL, "64:ff9b::7f00:1", 80, RULES_PASS, 1);
	EXPECT(rs, "10.0.0.2", NULL, 1, NULL, "2002:7f00:1::1", 80, RULES_PASS, 1);
	EXPECT(rs, "10.0.0.2", NULL, 3, NULL, "ff02::fb", 5353, RULES_PASS, 1);
	EXPECT(rs, "10.0.0.2", NULL, 3, NULL, "224.0.0.251", 5353, RULES_PASS, 1);
	EXPECT(rs, "10.0.0.2", NULL, 1, NULL, "::ffff:0:7f00:1", 80, RULES_BLOCK, 0);
	rules_free(rs);
}

static void own_listening_addresses_blocked(void **state)
{
	(void)state;
	struct settings cfg;
	settings_defaults(&cfg);
	cfg.port = 1080;
	cfg.nlisten = 2;
	snprintf(cfg.listen[0], sizeof cfg.listen[0], "192.0.2.10");
	snprintf(cfg.listen[1], sizeof cfg.listen[1], "2001:db8::10");
	struct rules *rs = NULL;
	char err[128];
	assert_int_equal(rules_compile("", 0, &cfg, &rs, err, sizeof err, NULL), 0);
	EXPECT(rs, "10.0.0.2", NULL, 1, NULL, "192.0.2.10", 1080, RULES_BLOCK, 0);
	EXPECT(rs, "10.0.0.2", NULL, 1, NULL, "::ffff:192.0.2.10", 1080, RULES_BLOCK, 0);
	EXPECT(rs, "10.0.0.2", NULL, 1, NULL, "2001:db8::10", 1080, RULES_BLOCK, 0);
	/* an IPv4 one under an IPv6 form */
	EXPECT(rs, "10.0.0.2", NULL, 1, NULL, "64:ff9b::c000:20a", 1080, RULES_BLOCK, 0);
	EXPECT(rs, "10.0.0.2", NULL, 1, NULL, "2002:c000:20a::1", 1080, RULES_BLOCK, 0);
	EXPECT(rs, "10.0.0.2", NULL, 1, NULL, "64:ff9b::c000:20a", 80, RULES_PASS, 0);
	EXPECT(rs, "10.0.0.2", NULL, 1, NULL, "192.0.2.10", 80, RULES_PASS, 0);
	EXPECT(rs, "10.0.0.2", NULL, 1, NULL, "192.0.2.11", 1080, RULES_PASS, 0);
	rules_free(rs);
	/* a wildcard listener: the host's own addresses (loopback among them) */
	cfg.nlisten = 0;
	assert_int_equal(rules_compile("pass to 127.0.0.1 port 80", 25, &cfg, &rs, err, sizeof err,
	                               NULL),
	                 0);
	EXPECT(rs, "10.0.0.2", NULL, 1, NULL, "127.0.0.1", 1080, RULES_BLOCK, 0);
	EXPECT(rs, "10.0.0.2", NULL, 1, NULL, "127.0.0.1", 80, RULES_PASS, 1);
	rules_free(rs);
}

static void first_match_wins(void **state)
{
	(void)state;
	struct rules *rs = compile("block to 10.1.0.0/16\n"
	                           "pass to 10.0.0.0/8\n"
	                           "block\n");
	EXPECT(rs, "192.0.2.1", NULL, 1, NULL, "10.1.2.3", 443, RULES_BLOCK, 1);
	EXPECT(rs, "192.0.2.1", NULL, 1, NULL, "10.2.2.3", 443, RULES_PASS, 2);
	EXPECT(rs, "192.0.2.1", NULL, 1, NULL, "11.0.0.1", 443, RULES_BLOCK, 3);
	rules_free(rs);
	/* the order of the file, not of specificity */
	rs = compile("pass to 10.0.0.0/8\nblock to 10.1.0.0/16\n");
	EXPECT(rs, "192.0.2.1", NULL, 1, NULL, "10.1.2.3", 443, RULES_PASS, 1);
	rules_free(rs);
}

static void each_field_matches(void **state)
{
	(void)state;
	struct rules *rs = compile("# comment\n"
	                           "\n"
	                           "block from 192.0.2.0/24 to 10.0.0.1\n"     /* 1, line 3 */
	                           "block to 10.0.0.2 port 22\n"               /* 2 */
	                           "block to 10.0.0.3 user alice\n"            /* 3 */
	                           "block to 10.0.0.4 command bind, udp\n"     /* 4 */
	                           "pass to 10.0.0.5 port 80,443,8000-8080\n"  /* 5 */
	                           "block to 10.0.0.5\n"                       /* 6 */
	                           "pass to 2001:db8::/32 port 443\n"          /* 7 */
	                           "block to 2001:db8::/32\n");                /* 8 */
	EXPECT(rs, "192.0.2.9", NULL, 1, NULL, "10.0.0.1", 80, RULES_BLOCK, 1);
	EXPECT(rs, "198.51.100.9", NULL, 1, NULL, "10.0.0.1", 80, RULES_PASS, 0);
	EXPECT(rs, "198.51.100.9", NULL, 1, NULL, "10.0.0.2", 22, RULES_BLOCK, 2);
	EXPECT(rs, "198.51.100.9", NULL, 1, NULL, "10.0.0.2", 23, RULES_PASS, 0);
	EXPECT(rs, "198.51.100.9", "alice", 1, NULL, "10.0.0.3", 80, RULES_BLOCK, 3);
	EXPECT(rs, "198.51.100.9", "Alice", 1, NULL, "10.0.0.3", 80, RULES_PASS, 0);
	EXPECT(rs, "198.51.100.9", "bob", 1, NULL, "10.0.0.3", 80, RULES_PASS, 0);
	EXPECT(rs, "198.51.100.9", NULL, 1, NULL, "10.0.0.3", 80, RULES_PASS, 0);
	EXPECT(rs, "198.51.100.9", NULL, RULES_CMD_CONNECT, NULL, "10.0.0.4", 80, RULES_PASS, 0);
	EXPECT(rs, "198.51.100.9", NULL, RULES_CMD_BIND, NULL, "10.0.0.4", 80, RULES_BLOCK, 4);
	EXPECT(rs, "198.51.100.9", NULL, RULES_CMD_UDP, NULL, "10.0.0.4", 80, RULES_BLOCK, 4);
	EXPECT(rs, "198.51.100.9", NULL, 1, NULL, "10.0.0.5", 80, RULES_PASS, 5);
	EXPECT(rs, "198.51.100.9", NULL, 1, NULL, "10.0.0.5", 443, RULES_PASS, 5);
	EXPECT(rs, "198.51.100.9", NULL, 1, NULL, "10.0.0.5", 8000, RULES_PASS, 5);
	EXPECT(rs, "198.51.100.9", NULL, 1, NULL, "10.0.0.5", 8080, RULES_PASS, 5);
	EXPECT(rs, "198.51.100.9", NULL, 1, NULL, "10.0.0.5", 8081, RULES_BLOCK, 6);
	EXPECT(rs, "198.51.100.9", NULL, 1, NULL, "10.0.0.5", 7999, RULES_BLOCK, 6);
	EXPECT(rs, "198.51.100.9", NULL, 1, NULL, "2001:db8:1::1", 443, RULES_PASS, 7);
	EXPECT(rs, "198.51.100.9", NULL, 1, NULL, "2001:db8:1::1", 80, RULES_BLOCK, 8);
	EXPECT(rs, "198.51.100.9", NULL, 1, NULL, "2001:db9::1", 80, RULES_PASS, 0);
	struct rules_match m;
	struct sockaddr_storage c = sa("192.0.2.9", 1), d = sa("10.0.0.1", 80);
	struct rules_request q = {(struct sockaddr *)&c, NULL, 1, 80, NULL, (struct sockaddr *)&d};
	rules_decide(rs, &q, &m);
	assert_int_equal(m.line, 3);
	uint32_t line;
	bool client;
	assert_string_equal(rules_text(rs, 0, &line, &client), "block from 192.0.2.0/24 to 10.0.0.1");
	assert_int_equal(line, 3);
	assert_false(client);
	assert_int_equal(rules_count(rs), 8);
	rules_free(rs);
}

static void v4_mapped_matches_v4_rules(void **state)
{
	(void)state;
	struct rules *rs = compile("pass to 10.0.0.0/8\nblock from 192.0.2.0/24\n"
	                           "pass to ::ffff:172.16.0.0/108\n");
	EXPECT(rs, "198.51.100.1", NULL, 1, NULL, "::ffff:10.9.9.9", 80, RULES_PASS, 1);
	EXPECT(rs, "::ffff:192.0.2.7", NULL, 1, NULL, "11.0.0.1", 80, RULES_BLOCK, 2);
	EXPECT(rs, "198.51.100.1", NULL, 1, NULL, "172.16.1.1", 80, RULES_PASS, 3);
	EXPECT(rs, "198.51.100.1", NULL, 1, NULL, "172.32.1.1", 80, RULES_PASS, 0);
	rules_free(rs);
}

static void names_exact_and_suffix(void **state)
{
	(void)state;
	struct rules *rs = compile("block to www.example.com\n"
	                           "pass to .example.com port 443\n"
	                           "block to .example.com\n"
	                           "pass to .com\n");
	/* exact: only the name itself, any case, a trailing dot ignored */
	EXPECT(rs, "198.51.100.1", NULL, 1, "www.example.com", NULL, 443, RULES_BLOCK, 1);
	EXPECT(rs, "198.51.100.1", NULL, 1, "WWW.Example.COM.", NULL, 443, RULES_BLOCK, 1);
	EXPECT(rs, "198.51.100.1", NULL, 1, "a.www.example.com", NULL, 443, RULES_PASS, 2);
	/* .suffix: the domain and every name under it, on label boundaries */
	EXPECT(rs, "198.51.100.1", NULL, 1, "example.com", NULL, 443, RULES_PASS, 2);
	EXPECT(rs, "198.51.100.1", NULL, 1, "mail.example.com", NULL, 25, RULES_BLOCK, 3);
	EXPECT(rs, "198.51.100.1", NULL, 1, "badexample.com", NULL, 25, RULES_PASS, 4);
	EXPECT(rs, "198.51.100.1", NULL, 1, "example.org", NULL, 25, RULES_UNDECIDED, 0);
	/* a name rule decides at the address stage too */
	EXPECT(rs, "198.51.100.1", NULL, 1, "mail.example.com", "192.0.2.1", 25, RULES_BLOCK, 3);
	/* an address request does not match a name rule */
	EXPECT(rs, "198.51.100.1", NULL, 1, NULL, "192.0.2.1", 25, RULES_PASS, 0);
	rules_free(rs);
}

static void name_stage_waits_for_earlier_address_rules(void **state)
{
	(void)state;
	struct rules *rs = compile("pass to 10.0.0.0/8\n"
	                           "block to .example.com\n");
	/* 10/8 could match the resolved address: undecided */
	EXPECT(rs, "198.51.100.1", NULL, 1, "a.example.com", NULL, 80, RULES_UNDECIDED, 0);
	EXPECT(rs, "198.51.100.1", NULL, 1, "a.example.com", "10.1.1.1", 80, RULES_PASS, 1);
	EXPECT(rs, "198.51.100.1", NULL, 1, "a.example.com", "192.0.2.1", 80, RULES_BLOCK, 2);
	rules_free(rs);
	/* an address rule that cannot match (port) does not hold the name back */
	rs = compile("pass to 10.0.0.0/8 port 22\nblock to .example.com\n");
	EXPECT(rs, "198.51.100.1", NULL, 1, "a.example.com", NULL, 80, RULES_BLOCK, 2);
	rules_free(rs);
}

static void groups_expand(void **state)
{
	(void)state;
	struct rules *rs = compile("pass to 10.0.0.0/8 group staff\n"
	                           "block user carol, dave\n"
	                           "group = staff: alice, bob\n");
	EXPECT(rs, "198.51.100.1", "alice", 1, NULL, "10.0.0.1", 80, RULES_PASS, 1);
	EXPECT(rs, "198.51.100.1", "bob", 1, NULL, "10.0.0.1", 80, RULES_PASS, 1);
	EXPECT(rs, "198.51.100.1", "carol", 1, NULL, "10.0.0.1", 80, RULES_BLOCK, 2);
	EXPECT(rs, "198.51.100.1", "dave", 1, NULL, "8.8.8.8", 80, RULES_BLOCK, 2);
	EXPECT(rs, "198.51.100.1", "eve", 1, NULL, "10.0.0.1", 80, RULES_PASS, 0);
	EXPECT(rs, "198.51.100.1", NULL, 1, NULL, "10.0.0.1", 80, RULES_PASS, 0);
	rules_free(rs);
}

/* The first n two-character names of [a-z0-9]. */
static void member_name(unsigned i, char out[3])
{
	static const char al[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	out[0] = al[i / 36];
	out[1] = al[i % 36];
	out[2] = '\0';
}

static void user_lists_deduplicated(void **state)
{
	(void)state;
	/* a name twice, and through a group: once; names are exact */
	struct rules *rs = compile("group = g: alice, Alice, bob\n"
	                           "pass port 1 user alice, alice, bob group g, g\n"
	                           "pass port 2 user Alice\n");
	EXPECT(rs, "198.51.100.1", "alice", 1, NULL, "10.0.0.1", 1, RULES_PASS, 1);
	EXPECT(rs, "198.51.100.1", "Alice", 1, NULL, "10.0.0.1", 1, RULES_PASS, 1);
	EXPECT(rs, "198.51.100.1", "carol", 1, NULL, "10.0.0.1", 1, RULES_PASS, 0);
	EXPECT(rs, "198.51.100.1", "alice", 1, NULL, "127.0.0.1", 2, RULES_BLOCK, 0);
	EXPECT(rs, "198.51.100.1", "Alice", 1, NULL, "127.0.0.1", 2, RULES_PASS, 2);
	rules_free(rs);
	/* 120 groups of the same 1024 members named by 10 rules: 1,228,800
	 * user entries as written, over the bound of 2^20, but 1024 per rule
	 * once each rule's list holds each user once */
	size_t cap = 1 << 19, len = 0;
	char *text = malloc(cap);
	assert_non_null(text);
	for (int g = 0; g < 120; g++) {
		len += (size_t)snprintf(text + len, cap - len, "group = g%d: ", g);
		for (unsigned i = 0; i < 1024; i++) {
			char m[3];
			member_name(i, m);
			len += (size_t)snprintf(text + len, cap - len, "%s%s", i ? "," : "", m);
		}
		text[len++] = '\n';
	}
	for (int r = 0; r < 10; r++) {
		len += (size_t)snprintf(text + len, cap - len, "pass port %d group ", r + 1);
		for (int g = 0; g < 120; g++)
			len += (size_t)snprintf(text + len, cap - len, "%sg%d", g ? "," : "", g);
		text[len++] = '\n';
	}
	assert_true(len < cap);
	char err[256] = "";
	rs = NULL;
	int rc = rules_compile(text, len, NULL, &rs, err, sizeof err, NULL);
	if (rc != 0)
		fail_msg("compile failed: %s", err);
	for (unsigned i = 0; i < 1024; i += 73) {
		char m[3];
		member_name(i, m);
		EXPECT(rs, "198.51.100.1", m, 1, NULL, "127.0.0.1", 7, RULES_PASS, 7);
	}
	EXPECT(rs, "198.51.100.1", "99", 1, NULL, "127.0.0.1", 7, RULES_BLOCK, 0); /* 1295th */
	EXPECT(rs, "198.51.100.1", NULL, 1, NULL, "127.0.0.1", 7, RULES_BLOCK, 0);
	rules_free(rs);
	free(text);
}

/* n rules naming the 64 groups of text (lines of 4 KiB at most: 800
 * members each), after groups_end. */
static size_t rules_naming_all(char *text, size_t cap, size_t groups_end, int n)
{
	size_t len = groups_end;
	for (int r = 0; r < n; r++) {
		len += (size_t)snprintf(text + len, cap - len, "pass port %d group ", r + 1);
		for (unsigned g = 0; g < 64; g++)
			len += (size_t)snprintf(text + len, cap - len, "%sg%u", g ? "," : "", g);
		text[len++] = '\n';
	}
	assert_true(len < cap);
	return len;
}

static void user_entries_bounded(void **state)
{
	(void)state;
	/* 64 groups of 800 distinct members (51,200 users), each rule naming
	 * all: 20 rules hold 1,024,000 entries, 21 pass the bound of 2^20 */
	size_t cap = 1 << 19, len = 0;
	char *text = malloc(cap);
	assert_non_null(text);
	for (unsigned g = 0; g < 64; g++) {
		len += (size_t)snprintf(text + len, cap - len, "group = g%u: ", g);
		for (unsigned i = 0; i < 800; i++)
			len += (size_t)snprintf(text + len, cap - len, "%s%x", i ? "," : "", g * 800 + i);
		text[len++] = '\n';
	}
	size_t groups_end = len;
	len = rules_naming_all(text, cap, groups_end, 21);
	char err[256] = "";
	struct rules *rs = NULL;
	assert_int_equal(rules_compile(text, len, NULL, &rs, err, sizeof err, NULL), -EINVAL);
	assert_null(rs);
	if (!strstr(err, "more than 1048576 users together") || strncmp(err, "85: ", 4) != 0) {
		free(text);
		fail_msg("got '%s'", err);
	}
	len = rules_naming_all(text, cap, groups_end, 20);
	int rc = rules_compile(text, len, NULL, &rs, err, sizeof err, NULL);
	free(text);
	if (rc != 0)
		fail_msg("compile failed: %s", err);
	EXPECT(rs, "198.51.100.1", "c7ff", 1, NULL, "127.0.0.1", 20, RULES_PASS, 20);
	EXPECT(rs, "198.51.100.1", "c800", 1, NULL, "127.0.0.1", 20, RULES_BLOCK, 0);
	rules_free(rs);
}

static void limits_and_via_returned(void **state)
{
	(void)state;
	struct rules *rs = compile("external = 192.0.2.50\n"
	                           "external = 2001:db8::50\n"
	                           "pass to 10.0.0.0/8 port 443 user alice max-sessions 5 rate 1M "
	                           "via 192.0.2.7 log\n"
	                           "pass user alice rate 512K/2M\n"
	                           "block user alice\n"
	                           "block to 169.254.0.0/16\n");
	struct sockaddr_storage c = sa("198.51.100.1", 1), d = sa("10.1.1.1", 443);
	struct rules_request q = {(struct sockaddr *)&c, "alice", 1, 443, NULL, (struct sockaddr *)&d};
	struct rules_match m;
	assert_int_equal(rules_decide(rs, &q, &m), RULES_PASS);
	assert_int_equal(m.number, 1);
	assert_int_equal(m.line, 3);
	assert_true(m.log);
	assert_int_equal(m.max_sessions, 5);
	assert_int_equal(m.rate_in, 1048576);
	assert_int_equal(m.rate_out, 1048576);
	struct sockaddr_storage src;
	socklen_t len;
	assert_true(rules_source(rs, &m, AF_INET, &src, &len));
	char text[64];
	inet_ntop(AF_INET, &((struct sockaddr_in *)&src)->sin_addr, text, sizeof text);
	assert_string_equal(text, "192.0.2.7");
	/* another family: the external address of that family */
	assert_true(rules_source(rs, &m, AF_INET6, &src, &len));
	inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&src)->sin6_addr, text, sizeof text);
	assert_string_equal(text, "2001:db8::50");
	q.port = 80;
	assert_int_equal(rules_decide(rs, &q, &m), RULES_PASS);
	assert_int_equal(m.number, 2);
	assert_int_equal(m.rate_in, 512 * 1024);
	assert_int_equal(m.rate_out, 2 * 1048576);
	assert_int_equal(m.max_sessions, 0);
	assert_false(m.log);
	assert_true(rules_source(rs, &m, AF_INET, &src, &len));
	inet_ntop(AF_INET, &((struct sockaddr_in *)&src)->sin_addr, text, sizeof text);
	assert_string_equal(text, "192.0.2.50");
	/* nobody reaches 169.254.0.0/16, whatever the client */
	EXPECT(rs, "127.0.0.1", NULL, 1, NULL, "169.254.77.77", 80, RULES_BLOCK, 4);
	rules_free(rs);
	rs = compile("pass\n");
	assert_false(rules_source(rs, NULL, AF_INET, &src, &len));
	rules_free(rs);
}

static void client_rules(void **state)
{
	(void)state;
	struct rules *rs = compile("client pass from 10.1.0.0/16\n"
	                           "client block from 10.0.0.0/8 log\n"
	                           "client block port 1-1023\n"
	                           "pass\n");
	assert_true(rules_has_client_rules(rs));
	struct rules_match m;
	struct sockaddr_storage c = sa("10.1.2.3", 40000);
	assert_int_equal(rules_client(rs, (struct sockaddr *)&c, &m), RULES_PASS);
	assert_int_equal(m.number, 1);
	c = sa("10.2.2.3", 40000);
	assert_int_equal(rules_client(rs, (struct sockaddr *)&c, &m), RULES_BLOCK);
	assert_int_equal(m.number, 2);
	assert_true(m.log);
	c = sa("::ffff:10.2.2.3", 40000);
	assert_int_equal(rules_client(rs, (struct sockaddr *)&c, &m), RULES_BLOCK);
	c = sa("192.0.2.1", 999);
	assert_int_equal(rules_client(rs, (struct sockaddr *)&c, &m), RULES_BLOCK);
	assert_int_equal(m.number, 3);
	c = sa("192.0.2.1", 40000);
	assert_int_equal(rules_client(rs, (struct sockaddr *)&c, &m), RULES_PASS);
	assert_int_equal(m.number, 0);
	/* client rules do not take part in request decisions */
	EXPECT(rs, "10.2.2.3", NULL, 1, NULL, "127.0.0.1", 80, RULES_PASS, 4);
	rules_free(rs);
}

static void bad_lines_are_refused(void **state)
{
	(void)state;
	static const struct {
		const char *text, *msg;
	} bad[] = {
	    {"pass to 10.0.0.0/33", "'10.0.0.0/33' is not"},
	    {"pass to", "'to' needs a value"},
	    {"pass port 70000", "not a port"},
	    {"pass port 80-79", "empty"},
	    {"pass port 80,", "empty item"},
	    {"pass port ,80", "unknown word 'port,80'"},
	    {"pass frob", "unknown word 'frob'"},
	    {"pass to 1.2.3.4 to 1.2.3.5", "'to' given twice"},
	    {"pass command dance", "not a command"},
	    {"pass group nobody", "unknown group 'nobody'"},
	    {"pass rate 0", "rate"},
	    {"pass rate 1M/", "rate"},
	    {"pass rate 10T", "rate"},
	    {"pass max-sessions 0", "max-sessions"},
	    {"pass via example.com", "via"},
	    {"client pass to 1.2.3.4", "only from, port and log"},
	    {"client allow", "client pass or block"},
	    {"pass to bad..name", "not an address"},
	    {"pass to -", "not an address"},
	    {"group = : alice", "expected"},
	    {"group = a: x\ngroup = a: y", "defined twice"},
	    {"external = 1.2.3.4\nexternal = 1.2.3.5", "same family"},
	    {"external = nowhere", "external"},
	    {"listen = 1.2.3.4", "not a rule"},
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char err[256] = "";
		assert_int_equal(compile_err(bad[i].text, err, sizeof err), -EINVAL);
		if (!strstr(err, bad[i].msg))
			fail_msg("'%s': got '%s', expected '%s'", bad[i].text, err, bad[i].msg);
	}
	char err[256];
	assert_int_equal(compile_err("\n\npass to nowhere..\n", err, sizeof err), -EINVAL);
	assert_true(strncmp(err, "3: ", 3) == 0);
	unsigned n = 0;
	struct rules *rs = NULL;
	assert_int_equal(rules_compile("pass x\nblock y\n", 15, NULL, &rs, err, sizeof err, &n),
	                 -EINVAL);
	assert_int_equal(n, 2);
}

static void lines_recognised(void **state)
{
	(void)state;
	assert_true(rules_is_line("pass"));
	assert_true(rules_is_line("block to 1.2.3.4"));
	assert_true(rules_is_line("client pass from 1.2.3.4"));
	assert_true(rules_is_line("group = a: b"));
	assert_true(rules_is_line("external=1.2.3.4"));
	assert_false(rules_is_line("passwd = x"));
	assert_false(rules_is_line("port = 1080"));
	assert_false(rules_is_line("user = a:b"));
	assert_false(rules_is_line("groupie = 1"));
}

static void many_rules_stay_first_match(void **state)
{
	(void)state;
	/* 1,000 rules: the index must agree with the file's order */
	size_t cap = 1 << 16, len = 0;
	char *text = malloc(cap);
	assert_non_null(text);
	for (int i = 0; i < 500; i++)
		len += (size_t)snprintf(text + len, cap - len, "block to 10.%d.0.0/16 port %d\n", i % 256,
		                        1000 + i);
	for (int i = 0; i < 499; i++)
		len += (size_t)snprintf(text + len, cap - len, "pass to .d%d.example\n", i);
	len += (size_t)snprintf(text + len, cap - len, "pass to 10.0.0.0/8\n");
	struct rules *rs = NULL;
	char err[128];
	assert_int_equal(rules_compile(text, len, NULL, &rs, err, sizeof err, NULL), 0);
	/* 10.5.x with port 1005 is rule 6; with port 1261 (i = 261, 10.5/16) rule 262 */
	EXPECT(rs, "192.0.2.1", NULL, 1, NULL, "10.5.1.1", 1005, RULES_BLOCK, 6);
	EXPECT(rs, "192.0.2.1", NULL, 1, NULL, "10.5.1.1", 1261, RULES_BLOCK, 262);
	EXPECT(rs, "192.0.2.1", NULL, 1, NULL, "10.5.1.1", 80, RULES_PASS, 1000);
	EXPECT(rs, "192.0.2.1", NULL, 1, "x.d77.example", "11.0.0.1", 80, RULES_PASS, 578);
	rules_free(rs);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(default_policy_without_rules),
	    cmocka_unit_test(default_policy_embedded_and_multicast),
	    cmocka_unit_test(own_listening_addresses_blocked),
	    cmocka_unit_test(first_match_wins),
	    cmocka_unit_test(each_field_matches),
	    cmocka_unit_test(v4_mapped_matches_v4_rules),
	    cmocka_unit_test(names_exact_and_suffix),
	    cmocka_unit_test(name_stage_waits_for_earlier_address_rules),
	    cmocka_unit_test(groups_expand),
	    cmocka_unit_test(user_lists_deduplicated),
	    cmocka_unit_test(user_entries_bounded),
	    cmocka_unit_test(limits_and_via_returned),
	    cmocka_unit_test(client_rules),
	    cmocka_unit_test(bad_lines_are_refused),
	    cmocka_unit_test(lines_recognised),
	    cmocka_unit_test(many_rules_stay_first_match),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
