/*
 * The cost of one request decision with 1,000 rules (500 CIDRs, 500
 * .suffixes, with ports and users), timed one decision at a time with
 * CLOCK_MONOTONIC; prints p50 and p99 in nanoseconds.  make bench-rules.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../shared/rules.h"

static int cmp(const void *a, const void *b)
{
	long x = *(const long *)a, y = *(const long *)b;
	return x < y ? -1 : x > y;
}

static long now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000L + ts.tv_nsec;
}

int main(void)
{
	size_t cap = 1 << 17, len = 0;
	char *text = malloc(cap);
	if (!text)
		return 1;
	len += (size_t)snprintf(text + len, cap - len, "group = staff: alice, bob, carol\n");
	for (int i = 0; i < 500; i++)
		len += (size_t)snprintf(text + len, cap - len, "block to 10.%d.%d.0/24 port %d-%d\n",
		                        i / 256, i % 256, 1000 + i, 2000 + i);
	for (int i = 0; i < 499; i++)
		len += (size_t)snprintf(text + len, cap - len, "pass to .d%d.example.com group staff\n", i);
	len += (size_t)snprintf(text + len, cap - len, "block to 169.254.0.0/16\n");
	struct rules *rs;
	char err[256];
	if (rules_compile(text, len, NULL, &rs, err, sizeof err, NULL) < 0) {
		fprintf(stderr, "compile: %s\n", err);
		return 1;
	}
	enum { N = 200000 };
	long *t = malloc(N * sizeof *t);
	struct sockaddr_in c = {.sin_family = AF_INET}, d = {.sin_family = AF_INET};
	inet_pton(AF_INET, "192.0.2.1", &c.sin_addr);
	char name[64];
	volatile unsigned sink = 0;
	for (int i = 0; i < N; i++) {
		d.sin_addr.s_addr = htonl(0x0a000000u | (uint32_t)(i * 2654435761u % (1u << 17)));
		snprintf(name, sizeof name, "www.d%d.example.com", i % 600);
		struct rules_request q = {(struct sockaddr *)&c, i & 1 ? "alice" : "dave", 1,
		                          (uint16_t)(1000 + i % 1500), name, (struct sockaddr *)&d};
		struct rules_match m;
		long t0 = now_ns();
		sink += rules_decide(rs, &q, &m);
		t[i] = now_ns() - t0;
	}
	qsort(t, N, sizeof *t, cmp);
	printf("rules: 1000, decisions: %d, p50 %ld ns, p99 %ld ns, max %ld ns\n", N, t[N / 2],
	       t[N - N / 100], t[N - 1]);
	rules_free(rs);
	free(t);
	free(text);
	return sink == 0xffffffffu;
}
