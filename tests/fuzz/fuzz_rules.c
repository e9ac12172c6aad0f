/*
 * libFuzzer target for shared/rules: the parser of the rule lines of the
 * configuration file (an operator's text, and the text workers compile
 * from the shared segment), and the matcher on what compiles.
 *
 * Input layout: rule text, then optionally a NUL byte and a destination
 * name (a client's bytes) tried against the compiled set.
 *
 * Invariants checked: a refused text leaves no set and a message naming a
 * line; an accepted one decides every probe within bounds (a rule number
 * it has, no undecided answer once an address is given), and compiling it
 * again gives a set that decides every probe the same way.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>

#include "fuzz_common.h"

#include "../../shared/rules.h"

static const char *const addrs[] = {"127.0.0.1", "10.1.2.3", "169.254.77.77", "::1",
                                    "::ffff:10.0.0.1", "2001:db8::1", "fe80::1", "0.0.0.0"};

static void probe(const struct rules *rs, const char *name, struct rules_match out[64])
{
	size_t k = 0;
	for (size_t c = 0; c < 2; c++)
		for (size_t d = 0; d < sizeof addrs / sizeof addrs[0]; d++)
			for (int cmd = 1; cmd <= 3; cmd++, k++) {
				struct sockaddr_storage cs = {0}, ds = {0};
				struct sockaddr_in *c4 = (struct sockaddr_in *)&cs;
				c4->sin_family = AF_INET;
				inet_pton(AF_INET, c ? "127.0.0.1" : "192.0.2.1", &c4->sin_addr);
				struct sockaddr_in6 *d6 = (struct sockaddr_in6 *)&ds;
				struct sockaddr_in *d4 = (struct sockaddr_in *)&ds;
				if (inet_pton(AF_INET, addrs[d], &d4->sin_addr) == 1)
					d4->sin_family = AF_INET;
				else {
					d6->sin6_family = AF_INET6;
					inet_pton(AF_INET6, addrs[d], &d6->sin6_addr);
				}
				struct rules_request q = {(struct sockaddr *)&cs, cmd == 2 ? "alice" : NULL,
				                          (uint8_t)cmd, (uint16_t)(80 + d * 100), name,
				                          (k & 1) ? (struct sockaddr *)&ds : NULL};
				enum rules_action a = rules_decide(rs, &q, &out[k]);
				CHECK(a == out[k].action && a <= RULES_UNDECIDED);
				CHECK(out[k].number <= rules_count(rs));
				CHECK(!(q.dest && a == RULES_UNDECIDED));
				CHECK(a != RULES_UNDECIDED || out[k].number == 0);
				if (k < 16) {
					struct rules_match cm;
					a = rules_client(rs, (struct sockaddr *)&cs, &cm);
					CHECK(a == RULES_PASS || a == RULES_BLOCK);
				}
			}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	size_t tlen = nul ? (size_t)(nul - data) : size;
	char *name = NULL;
	if (nul) {
		size_t nlen = size - tlen - 1;
		name = malloc(nlen + 1);
		if (!name)
			return 0;
		memcpy(name, nul + 1, nlen);
		name[nlen] = '\0';
	}
	char *text = malloc(tlen ? tlen : 1);
	if (!text) {
		free(name);
		return 0;
	}
	memcpy(text, data, tlen);
	struct rules *rs = NULL;
	char err[256];
	unsigned n = 0;
	int rc = rules_compile(text, tlen, NULL, &rs, err, sizeof err, &n);
	if (rc < 0) {
		CHECK(rc == -EINVAL && !rs && n > 0 && err[0] >= '0' && err[0] <= '9');
	} else {
		CHECK(rs && n == 0);
		static struct rules_match a[64], b[64];
		probe(rs, name, a);
		/* Compiling is deterministic: a second set decides alike. */
		struct rules *rs2 = NULL;
		if (rules_compile(text, tlen, NULL, &rs2, err, sizeof err, NULL) == 0) {
			probe(rs2, name, b);
			CHECK(memcmp(a, b, sizeof a) == 0);
		}
		rules_free(rs2);
		rules_free(rs);
	}
	free(text);
	free(name);
	return 0;
}
