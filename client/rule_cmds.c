/* pipoClient: rules (the access rules with their hits) and rule test. */
#include "pc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "../shared/names.h"

static const char *action_name(uint8_t a)
{
	return a == PIPO_RULE_BLOCK ? "block" : a == PIPO_RULE_UNDECIDED ? "undecided" : "pass";
}

/* ---- rules ------------------------------------------------------------------ */

struct rules_head {
	uint64_t gen;
	uint8_t no_rules;
	char def[512];
	uint32_t n;
};

static void get_head(struct pipo_cur *c, struct rules_head *h)
{
	h->gen = pipo_get_u64(c);
	h->no_rules = pipo_get_u8(c);
	pipo_get_str16(c, h->def, sizeof h->def);
	h->n = pipo_get_u32(c);
	if (h->no_rules > 1)
		c->bad = true;
}

int cmd_rules(struct pc_ctx *x, char **args)
{
	(void)args;
	struct pc_resp r;
	int rc = pc_round_trip(x, PIPO_QUERY, PIPO_Q_RULES, NULL, 0, &r);
	if (rc)
		return rc;
	if (r.f.status == PIPO_E_UNKNOWN)
		return pc_status_fail("rules", r.f.status, "the server has no access rules");
	if (r.f.status)
		return pc_status_fail("rules", r.f.status, NULL);
	/* Check the whole answer before printing any of it. */
	static char text[PIPO_RULE_TEXT_MAX + 1];
	struct pipo_cur c = {.p = r.payload, .len = r.f.len};
	struct rules_head h;
	get_head(&c, &h);
	struct pipo_rule rule;
	for (uint32_t i = 0; i < h.n && !c.bad; i++) {
		pipo_get_rule(&c, &rule, text, sizeof text);
		if (rule.number != i + 1)
			c.bad = true;
	}
	if (!pipo_cur_done(&c))
		return pc_malformed(x, "rules");

	c.pos = 0;
	get_head(&c, &h);
	struct pc_json j;
	if (x->json) {
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
		pj_u64(&j, "generation", h.gen);
		pj_bool(&j, "default_policy_only", h.no_rules != 0);
		pj_str(&j, "default_policy", h.def);
		pj_arr(&j, "rules");
	} else if (h.n) {
		printf("%5s %6s %12s  %s\n", "RULE", "LINE", "HITS", "TEXT");
	}
	for (uint32_t i = 0; i < h.n; i++) {
		pipo_get_rule(&c, &rule, text, sizeof text);
		if (x->json) {
			pj_obj(&j, NULL);
			pj_u64(&j, "number", rule.number);
			pj_u64(&j, "line", rule.line);
			pj_str(&j, "stage", rule.stage == PIPO_RULE_CLIENT ? "client" : "request");
			pj_str(&j, "action", action_name(rule.action));
			pj_u64(&j, "hits", rule.hits);
			pj_str(&j, "text", rule.text);
			pj_end_obj(&j);
		} else {
			static char shown[PC_TEXT_MAX(sizeof rule.text)];
			printf("%5" PRIu32 " %6" PRIu32 " %12" PRIu64 "  %s\n", rule.number, rule.line,
			       rule.hits, pc_text(shown, sizeof shown, rule.text));
		}
	}
	if (x->json) {
		pj_end_arr(&j);
		pj_u64(&j, "count", h.n);
		pj_end_obj(&j);
		pj_finish(&j);
	} else {
		static char def[PC_TEXT_MAX(sizeof h.def)];
		pc_text(def, sizeof def, h.def);
		if (h.no_rules)
			printf("No rules: the default policy decides every request: %s.\n", def);
		else
			printf("Default policy (no rule matches): %s.\n", def);
	}
	return PC_EXIT_OK;
}

/* ---- rule test ----------------------------------------------------------------- */

/* An IPv4 or IPv6 address, brackets allowed: the server's own test. */
static bool is_address(const char *s)
{
	char buf[INET6_ADDRSTRLEN + 2];
	unsigned char a[16];
	size_t n = strlen(s);
	if (n >= 2 && s[0] == '[' && s[n - 1] == ']') {
		s++;
		n -= 2;
	}
	if (n == 0 || n >= sizeof buf)
		return false;
	memcpy(buf, s, n);
	buf[n] = '\0';
	return inet_pton(AF_INET, buf, a) == 1 || inet_pton(AF_INET6, buf, a) == 1;
}

/* "rule test: WHAT 'VALUE' WHY", a usage error. */
static int bad_arg(const char *what, const char *v, const char *why)
{
	pc_err("rule test: %s '%s' %s", what, v, why);
	return PC_EXIT_USAGE;
}

int cmd_rule_test(struct pc_ctx *x, char **args)
{
	struct pipo_rule_test t;
	memset(&t, 0, sizeof t);
	const char *user = x->f_user, *src = args[0], *dst = args[1], *port = args[2],
	           *cmd = args[3] ? args[3] : "connect";
	/* Everything the client can check is checked before connecting. */
	if (user) {
		const char *why = names_user_problem(user, strlen(user));
		if (why) {
			pc_err("rule test: option --user: the user name %s%s", why,
			       user[0] ? "" : " (leave --user out for an anonymous request)");
			return PC_EXIT_USAGE;
		}
		snprintf(t.user, sizeof t.user, "%s", user);
	}
	if (!is_address(src))
		return bad_arg("source", src, "is not an IPv4 or IPv6 address");
	if (!dst[0] || strlen(dst) > PIPO_MAX_NAME)
		return bad_arg("destination", dst, "is not an address or a host name (1..255 bytes)");
	char *end;
	errno = 0;
	unsigned long p = strtoul(port, &end, 10);
	if (!port[0] || port[0] == '-' || port[0] == '+' || *end || errno || p > 65535)
		return bad_arg("port", port, "is not a port number in 0..65535");
	if (!strcmp(cmd, "connect"))
		t.cmd = PIPO_RULE_CONNECT;
	else if (!strcmp(cmd, "bind"))
		t.cmd = PIPO_RULE_BIND;
	else if (!strcmp(cmd, "udp"))
		t.cmd = PIPO_RULE_UDP;
	else
		return bad_arg("command", cmd, "is not connect, bind or udp");
	snprintf(t.source, sizeof t.source, "%s", src);
	snprintf(t.dest, sizeof t.dest, "%s", dst);
	t.port = (uint16_t)p;

	uint8_t buf[3 * (PIPO_MAX_NAME + 1) + 3];
	struct pipo_buf b = {.p = buf, .cap = sizeof buf};
	pipo_put_rule_test(&b, &t);
	struct pc_resp r;
	int rc = pc_round_trip(x, PIPO_QUERY, PIPO_Q_RULE_TEST, buf, b.len, &r);
	if (rc)
		return rc;
	if (r.f.status == PIPO_E_INVALID) {
		/* The source, port and command were checked above: the server
		 * refused the destination. */
		char hint[PIPO_MAX_NAME + 96];
		snprintf(hint, sizeof hint, "destination '%s' is neither an IPv4 or IPv6 address nor a host name",
		         dst);
		return pc_status_fail("rule test", r.f.status, hint);
	}
	if (r.f.status == PIPO_E_UNKNOWN)
		return pc_status_fail("rule test", r.f.status, "the server has no access rules");
	if (r.f.status)
		return pc_status_fail("rule test", r.f.status, NULL);
	static char text[PIPO_RULE_TEXT_MAX + 1];
	struct pipo_cur c = {.p = r.payload, .len = r.f.len};
	struct pipo_rule_verdict v;
	pipo_get_rule_verdict(&c, &v, text, sizeof text);
	if (!pipo_cur_done(&c) || (v.decision == PIPO_RULE_UNDECIDED && (v.number || !v.on_name)))
		return pc_malformed(x, "rule test");
	const char *stage = v.stage == PIPO_RULE_CLIENT ? "client" : "request";
	if (x->json) {
		struct pc_json j;
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
		pj_str(&j, "decision", action_name(v.decision));
		pj_str(&j, "stage", stage);
		pj_u64(&j, "rule", v.number);
		pj_u64(&j, "line", v.line);
		pj_bool(&j, "default_policy", v.number == 0 && v.decision != PIPO_RULE_UNDECIDED);
		pj_str(&j, "decided_on", v.decision == PIPO_RULE_UNDECIDED ? "address"
		                         : v.on_name                     ? "name"
		                                                         : "address");
		if (v.number)
			pj_str(&j, "text", v.text);
		else
			pj_null(&j, "text");
		pj_end_obj(&j);
		pj_finish(&j);
	} else if (v.decision == PIPO_RULE_UNDECIDED) {
		printf("undecided on the name: decided per address (each address '%s' resolves to is "
		       "checked before its connection; nothing was resolved here)\n",
		       dst);
	} else if (v.number) {
		static char shown[PC_TEXT_MAX(sizeof v.text)];
		printf("%s by %s rule %" PRIu32 " (line %" PRIu32 ")%s: %s\n", action_name(v.decision),
		       stage, v.number, v.line, v.on_name ? ", decided on the name" : "",
		       pc_text(shown, sizeof shown, v.text));
	} else {
		printf("%s by the default policy%s\n", action_name(v.decision),
		       v.on_name ? ", decided on the name" : "");
	}
	return PC_EXIT_OK;
}
