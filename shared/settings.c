#include "settings.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"

enum kind { K_U32, K_U16, K_BOOL, K_CHOICE, K_STR, K_ADDR, K_URL, K_LISTEN, K_SERVERS };

static const char *const anon_choices[] = {"auto", "always", "never", NULL};
static const char *const level_choices[] = {"error", "warn", "info", "debug", NULL};
static const char *const method_choices[] = {"get", "post", NULL};
static const char *const accept_choices[] = {"exclusive", "reuseport", NULL};

struct desc {
	const char *key;
	enum kind kind;
	size_t off;
	size_t size;
	uint32_t min, max;
	const char *const *choices;
};

#define F(m) offsetof(struct settings, m), sizeof(((struct settings *)0)->m)

static const struct desc descs[] = {
	{"workers", K_U32, F(workers), 1, SETTINGS_MAX_WORKERS, NULL},
	{"handshake-timeout", K_U32, F(handshake_timeout_s), 1, 86400, NULL},
	{"connect-timeout", K_U32, F(connect_timeout_s), 1, 3600, NULL},
	{"idle-timeout", K_U32, F(idle_timeout_s), 1, 604800, NULL},
	{"grace", K_U32, F(grace_s), 0, 3600, NULL},
	{"buffer-size", K_U32, F(buffer_size), 4096, 1048576, NULL},
	{"idle-cleanup", K_BOOL, F(idle_cleanup), 0, 1, NULL},
	{"dissectors", K_BOOL, F(dissectors), 0, 1, NULL},
	{"splice", K_BOOL, F(splice), 0, 1, NULL},
	{"pipe-size", K_U32, F(pipe_size), 4096, 1048576, NULL},
	{"accept", K_CHOICE, F(accept), 0, 0, accept_choices},
	{"anonymous", K_CHOICE, F(anonymous), 0, 0, anon_choices},
	{"log-level", K_CHOICE, F(log_level), 0, 0, level_choices},
	{"doh-method", K_CHOICE, F(doh_post), 0, 0, method_choices},
	{"dns-fallback", K_BOOL, F(dns_fallback), 0, 1, NULL},
	{"port", K_U16, F(port), 1, 65535, NULL},
	{"admin-port", K_U16, F(admin_port), 1, 65535, NULL},
	{"doh-port", K_U16, F(doh_port), 1, 65535, NULL},
	{"listen", K_LISTEN, F(listen), 0, 0, NULL},
	{"admin-addr", K_ADDR, F(admin_addr), 0, 0, NULL},
	{"doh-ip", K_ADDR, F(doh_ip), 0, 0, NULL},
	{"doh-host", K_STR, F(doh_host), 1, 0, NULL},
	{"doh-path", K_STR, F(doh_path), 1, 0, NULL},
	{"doh-query", K_STR, F(doh_query), 1, 0, NULL},
	{"doh-url", K_URL, F(doh_url), 0, 0, NULL},
	{"doh-ca-file", K_STR, F(doh_ca_file), 1, 0, NULL},
	{"dns-server", K_SERVERS, F(dns_server), 0, 0, NULL},
	{"dns-cache-size", K_U32, F(dns_cache_size), 0, 1048576, NULL},
	{"dns-timeout", K_U32, F(dns_timeout_s), 1, 60, NULL},
	{"doh-connections", K_U32, F(doh_connections), 1, 64, NULL},
	{"admin-socket", K_STR, F(admin_socket), 1, 0, NULL},
	{"max-unauth-per-source", K_U32, F(max_unauth), 0, 1000000, NULL},
};

#define NDESCS (sizeof descs / sizeof descs[0])

void settings_defaults(struct settings *s)
{
	memset(s, 0, sizeof *s);
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (cpus < 1)
		cpus = 1;
	if (cpus > SETTINGS_MAX_WORKERS)
		cpus = SETTINGS_MAX_WORKERS;
	s->workers = (uint32_t)cpus;
	s->handshake_timeout_s = 15;
	s->connect_timeout_s = 10;
	s->idle_timeout_s = 600;
	s->grace_s = 10;
	s->buffer_size = 65536;
	s->idle_cleanup = 1;
	s->dissectors = 1;
	s->splice = 1;
	s->pipe_size = 1048576;
	s->accept = ACCEPT_EXCLUSIVE;
	s->anonymous = ANON_AUTO;
	s->log_level = LOG_INFO;
	s->doh_post = 0;
	s->dns_fallback = 1;
	s->port = 1080;
	s->admin_port = 8080;
	s->doh_port = 8053;
	strcpy(s->admin_addr, "127.0.0.1");
	strcpy(s->doh_ip, "127.0.0.1");
	strcpy(s->doh_host, "localhost");
	strcpy(s->doh_path, "/getnsrecord");
	strcpy(s->doh_query, "?dns=");
	s->dns_cache_size = 4096;
	s->dns_timeout_s = 5;
	s->doh_connections = 4;
	s->max_unauth = 64;
}

static int parse_u32(const char *v, uint32_t min, uint32_t max, uint32_t *out)
{
	if (*v < '0' || *v > '9')
		return -EINVAL;
	errno = 0;
	char *end;
	unsigned long long n = strtoull(v, &end, 10);
	if (errno || *end || n < min || n > max)
		return -EINVAL;
	*out = (uint32_t)n;
	return 0;
}

static int is_ip(const char *v)
{
	unsigned char buf[16];
	return inet_pton(AF_INET, v, buf) == 1 || inet_pton(AF_INET6, v, buf) == 1;
}

/* One server of a list: IPv4, IPv4:PORT, IPv6 or [IPv6]:PORT. */
static int is_server(const char *v, size_t len)
{
	char buf[SETTINGS_ADDR_MAX];
	uint32_t port;
	if (len == 0 || len >= sizeof buf)
		return 0;
	memcpy(buf, v, len);
	buf[len] = '\0';
	if (is_ip(buf))
		return 1;
	char *colon = strrchr(buf, ':');
	if (!colon || parse_u32(colon + 1, 1, 65535, &port) < 0)
		return 0;
	*colon = '\0';
	if (buf[0] == '[') {
		size_t n = strlen(buf);
		if (n < 3 || buf[n - 1] != ']')
			return 0;
		buf[n - 1] = '\0';
		return strchr(buf + 1, ':') && is_ip(buf + 1);
	}
	return !strchr(buf, ':') && is_ip(buf);
}

int settings_set(struct settings *s, const char *key, const char *value, char *err, size_t errlen)
{
	const struct desc *d = NULL;
	for (size_t i = 0; i < NDESCS; i++)
		if (strcmp(descs[i].key, key) == 0)
			d = &descs[i];
	if (!d) {
		snprintf(err, errlen, "unknown setting '%s'", key);
		return -ENOENT;
	}
	char *field = (char *)s + d->off;
	uint32_t n;
	switch (d->kind) {
	case K_U32:
	case K_U16:
		if (parse_u32(value, d->min, d->max, &n) < 0) {
			snprintf(err, errlen, "'%s' is not an integer in %u..%u", value, d->min, d->max);
			return -EINVAL;
		}
		if (d->kind == K_U16)
			*(uint16_t *)field = (uint16_t)n;
		else
			*(uint32_t *)field = n;
		break;
	case K_BOOL:
		if (!strcmp(value, "yes") || !strcmp(value, "true") || !strcmp(value, "on") ||
		    !strcmp(value, "1"))
			*(uint8_t *)field = 1;
		else if (!strcmp(value, "no") || !strcmp(value, "false") || !strcmp(value, "off") ||
		         !strcmp(value, "0"))
			*(uint8_t *)field = 0;
		else {
			snprintf(err, errlen, "'%s' is not yes or no", value);
			return -EINVAL;
		}
		break;
	case K_CHOICE: {
		size_t i;
		for (i = 0; d->choices[i]; i++)
			if (strcmp(d->choices[i], value) == 0)
				break;
		if (!d->choices[i]) {
			char list[128] = "";
			for (size_t j = 0; d->choices[j]; j++) {
				strncat(list, j ? "|" : "", sizeof list - strlen(list) - 1);
				strncat(list, d->choices[j], sizeof list - strlen(list) - 1);
			}
			snprintf(err, errlen, "'%s' is not one of %s", value, list);
			return -EINVAL;
		}
		*(uint8_t *)field = (uint8_t)i;
		break;
	}
	case K_ADDR:
		if (!is_ip(value)) {
			snprintf(err, errlen, "'%s' is not an IPv4 or IPv6 address", value);
			return -EINVAL;
		}
		snprintf(field, d->size, "%s", value);
		break;
	case K_LISTEN:
		if (!is_ip(value)) {
			snprintf(err, errlen, "'%s' is not an IPv4 or IPv6 address", value);
			return -EINVAL;
		}
		if (s->nlisten >= SETTINGS_MAX_LISTEN) {
			snprintf(err, errlen, "more than %d listen addresses", SETTINGS_MAX_LISTEN);
			return -EINVAL;
		}
		snprintf(s->listen[s->nlisten++], SETTINGS_ADDR_MAX, "%s", value);
		break;
	case K_SERVERS:
		for (const char *p = value, *c;; p = c + 1) {
			c = strchr(p, ',');
			if (!is_server(p, c ? (size_t)(c - p) : strlen(p))) {
				snprintf(err, errlen, "'%s' is not a list of ADDR, ADDR:PORT or [ADDR6]:PORT",
				         value);
				return -EINVAL;
			}
			if (!c)
				break;
		}
		goto copy;
	case K_URL:
		if (strncmp(value, "http://", 7) != 0 && strncmp(value, "https://", 8) != 0) {
			snprintf(err, errlen, "'%s' is not an http:// or https:// URL", value);
			return -EINVAL;
		}
		/* fall through */
	case K_STR:
		if (d->min && !*value) {
			snprintf(err, errlen, "the value is empty");
			return -EINVAL;
		}
	copy:
		if (strlen(value) >= d->size) {
			snprintf(err, errlen, "'%s' is longer than %zu bytes", value, d->size - 1);
			return -EINVAL;
		}
		snprintf(field, d->size, "%s", value);
		break;
	}
	return (int)(d - descs);
}

void settings_overlay(struct settings *dst, const struct settings *src, uint64_t mask)
{
	for (size_t i = 0; i < NDESCS; i++) {
		if (!(mask & (1ull << i)))
			continue;
		const struct desc *d = &descs[i];
		if (d->kind == K_LISTEN)
			dst->nlisten = src->nlisten;
		memcpy((char *)dst + d->off, (const char *)src + d->off, d->size);
	}
}
