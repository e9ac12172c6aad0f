#include "settings.h"

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "../admin/pipo.h"

static const char *const anon_choices[] = {"auto", "always", "never", NULL};
static const char *const level_choices[] = {"error", "warn", "info", "debug", NULL};
static const char *const method_choices[] = {"get", "post", NULL};
static const char *const accept_choices[] = {"exclusive", "reuseport", NULL};
static const char *const udp_filter_choices[] = {"any", "address", "address-port", NULL};
/* Indexed by RFC 1961 protection level (clear is the level 0 of curl and Dante). */
static const char *const gss_level_choices[] = {"clear", "integrity", "confidentiality", NULL};

#define F(m) offsetof(struct settings, m), sizeof(((struct settings *)0)->m)
#define NOPIPO SETTING_NO_PIPO, SETTING_NO_PIPO

/* --help lists the rows in this order.  A row's index is its bit in the
 * masks of settings_overlay: rows may be added anywhere, below 64. */
const struct setting_desc settings_table[] = {
    {"listen", SETTING_LISTEN, 0, F(listen), 0, 0, NULL, NULL, "all, IPv4 and IPv6", 'l',
     "ADDR", "SOCKS address, repeatable", SETTING_START, false, {0}, NOPIPO},
    {"port", SETTING_U16, 0, F(port), 1, 65535, NULL, "1080", NULL, 'p', "PORT", "SOCKS port",
     SETTING_START, false, {0}, NOPIPO},
    {"admin-addr", SETTING_ADDR, 0, F(admin_addr), 0, 0, NULL, "127.0.0.1", NULL, 'L', "ADDR",
     "administration (SCTP) address", SETTING_START, false, {0}, NOPIPO},
    {"admin-port", SETTING_U16, 0, F(admin_port), 1, 65535, NULL, "8080", NULL, 'P', "PORT",
     "administration (SCTP) port", SETTING_START, false, {0}, NOPIPO},
    {"admin-socket", SETTING_STR, 0, F(admin_socket), 1, 0, NULL, NULL,
     "$RUNTIME_DIRECTORY, /run/socks5d or ./socks5d.sock", 0, "PATH",
     "administration unix socket", SETTING_START, false, {0}, NOPIPO},
    {"metrics", SETTING_ENDPOINT, 0, F(metrics), 0, 0, NULL, NULL, "none", 0, "ADDR:PORT",
     "serve Prometheus metrics over HTTP at ADDR:PORT ([ADDR6]:PORT for IPv6), GET /metrics",
     SETTING_START, false, {0}, NOPIPO},
    {"run-as", SETTING_RUN_AS, 0, F(run_as), 1, 0, NULL, NULL, "stay as started", 0,
     "USER[:GROUP]",
     "run the master and workers as USER (and GROUP) once sockets and the shared segment exist",
     SETTING_START, false, {0}, NOPIPO},
    {"workers", SETTING_U32, 0, F(workers), 1, SETTINGS_MAX_WORKERS, NULL, NULL, "online CPUs",
     'w', "N", "worker processes", SETTING_RELOAD, false, {0}, NOPIPO},
    {"accept", SETTING_CHOICE, 0, F(accept), 0, 0, accept_choices, "exclusive", NULL, 0, "MODE",
     "exclusive (one shared socket) or reuseport (one SO_REUSEPORT socket per worker)",
     SETTING_START, false, {0}, NOPIPO},
    {"anonymous", SETTING_CHOICE, 0, F(anonymous), 0, 0, anon_choices, "auto", NULL, 0, "POLICY",
     "when clients may skip authentication: auto (only from loopback while no users exist), "
     "always or never",
     SETTING_RUNTIME, false, {"allow-anonymous", 0, "always"}, PIPO_Q_ANONYMOUS,
     PIPO_M_ANONYMOUS},
    {"proxy-protocol", SETTING_CIDRS, 0, F(proxy_protocol), 0, 0, NULL, NULL, "none", 0, "LIST",
     "load balancers (ADDR[/LEN], comma-separated) whose connections start with a PROXY "
     "protocol v1 or v2 header giving the client's address; others must not send one",
     SETTING_RUNTIME, false, {0}, NOPIPO},
    {"gssapi-keytab", SETTING_STR, 0, F(gssapi_keytab), 1, 0, NULL, NULL, "none: GSS-API off", 0,
     "FILE",
     "offer GSS-API (Kerberos, RFC 1961), accepting the keys of this keytab; it must be "
     "readable by the workers' user",
     SETTING_RELOAD, false, {0}, NOPIPO},
    {"gssapi-service", SETTING_STR, 0, F(gssapi_service), 1, 0, NULL, "rcmd", NULL, 0, "NAME",
     "GSS-API service name: any host's key of this service in the keytab (NAME/HOST: that "
     "one only)",
     SETTING_RELOAD, false, {0}, NOPIPO},
    {"gssapi-protection", SETTING_CHOICE_SET, 0, F(gssapi_protection), 0, 0, gss_level_choices,
     "integrity,confidentiality", NULL, 0, "LIST",
     "GSS-API protection levels granted: some of clear, integrity, confidentiality",
     SETTING_RUNTIME, false, {0}, NOPIPO},
    {"gssapi-nec", SETTING_BOOL, 0, F(gssapi_nec), 0, 1, NULL, "no", NULL, 0, "yes|no",
     "also take the GSS-API protection level unwrapped, as NEC's client (and curl "
     "--socks5-gssapi-nec) send it",
     SETTING_RUNTIME, false, {0}, NOPIPO},
    {"handshake-timeout", SETTING_U32, SETTING_UNIT_SECONDS, F(handshake_timeout_s), 1, 86400,
     NULL, "15", NULL, 0, "S", "seconds from accept until the request is complete",
     SETTING_RUNTIME, false, {0}, PIPO_Q_HANDSHAKE_TIMEOUT, PIPO_M_HANDSHAKE_TIMEOUT},
    {"max-unauth-per-source", SETTING_U32, 0, F(max_unauth), 0, 1000000, NULL, "64", NULL, 0,
     "N",
     "sessions per client address (IPv6 /64) and worker that have not finished "
     "authentication; more are closed at once; 0: no cap",
     SETTING_RUNTIME, false, {0}, NOPIPO},
    {"connect-timeout", SETTING_U32, SETTING_UNIT_SECONDS, F(connect_timeout_s), 1, 3600, NULL,
     "10", NULL, 0, "S", "seconds per outbound connect attempt", SETTING_RUNTIME, false, {0},
     PIPO_Q_CONNECT_TIMEOUT, PIPO_M_CONNECT_TIMEOUT},
    {"bind-timeout", SETTING_U32, SETTING_UNIT_SECONDS, F(bind_timeout_s), 1, 86400, NULL, "120",
     NULL, 0, "S", "seconds a BIND waits for its incoming connection", SETTING_RUNTIME, false,
     {0}, NOPIPO},
    {"bind-ports", SETTING_PORTS, 0, F(bind_ports), 0, 0, NULL, "ephemeral", NULL, 0,
     "LOW-HIGH", "ports of BIND's listening sockets, or ephemeral (the kernel's choice)",
     SETTING_RUNTIME, false, {0}, NOPIPO},
    {"idle-timeout", SETTING_U32, SETTING_UNIT_SECONDS, F(idle_timeout_s), 1, 604800, NULL, "600",
     NULL, 0, "S", "close relaying sessions idle for S seconds", SETTING_RUNTIME, false, {0},
     PIPO_Q_IDLE_TIMEOUT, PIPO_M_IDLE_TIMEOUT},
    {"idle-cleanup", SETTING_BOOL, 0, F(idle_cleanup), 0, 1, NULL, "yes", NULL, 0, "yes|no",
     "close idle relaying sessions", SETTING_RUNTIME, false, {"no-idle-cleanup", 'D', "no"},
     PIPO_Q_IDLE_CLEANUP, PIPO_M_IDLE_CLEANUP},
    {"udp-idle-timeout", SETTING_U32, SETTING_UNIT_SECONDS, F(udp_idle_timeout_s), 1, 86400, NULL,
     "120", NULL, 0, "S", "end UDP associations without a datagram for S seconds",
     SETTING_RUNTIME, false, {0}, NOPIPO},
    {"udp-filter", SETTING_CHOICE, 0, F(udp_filter), 0, 0, udp_filter_choices, "address", NULL, 0,
     "MODE",
     "which remotes may answer through a UDP association: any, address (one the client sent "
     "to) or address-port",
     SETTING_RUNTIME, false, {0}, NOPIPO},
    {"grace", SETTING_U32, SETTING_UNIT_SECONDS, F(grace_s), 0, 3600, NULL, "10", NULL, 0, "S",
     "drain period on SIGTERM/SIGINT", SETTING_RUNTIME, false, {0}, NOPIPO},
    {"buffer-size", SETTING_U32, SETTING_UNIT_BYTES, F(buffer_size), 4096, 1048576, NULL,
     "65536", NULL, 0, "BYTES", "relay buffer per direction", SETTING_RUNTIME, false, {0},
     PIPO_Q_BUFFER_SIZE, PIPO_M_BUFFER_SIZE},
    {"splice", SETTING_BOOL, 0, F(splice), 0, 1, NULL, "yes", NULL, 0, "yes|no",
     "relay bulk directions with splice(2) when nothing inspects the bytes", SETTING_RUNTIME,
     false, {"no-splice", 0, "no"}, PIPO_Q_SPLICE, PIPO_M_SPLICE},
    {"sockmap", SETTING_BOOL, 0, F(sockmap), 0, 1, NULL, "no", NULL, 0, "yes|no",
     "relay established sessions inside the kernel (BPF sockmap) when nothing inspects the "
     "bytes and splice is on; needs CAP_BPF, else splice",
     SETTING_RUNTIME, false, {0}, NOPIPO},
    {"client-congestion", SETTING_TOKEN, 0, F(client_congestion), 0, 0, NULL, NULL,
     "the system's", 0, "NAME",
     "TCP congestion control of the connections with clients (cubic, bbr, reno, ...: "
     "net.ipv4.tcp_available_congestion_control)",
     SETTING_RUNTIME, false, {0}, NOPIPO},
    {"target-congestion", SETTING_TOKEN, 0, F(target_congestion), 0, 0, NULL, NULL,
     "the system's", 0, "NAME",
     "TCP congestion control of the connections with targets (BIND's peers included)",
     SETTING_RUNTIME, false, {0}, NOPIPO},
    {"pipe-size", SETTING_U32, SETTING_UNIT_BYTES, F(pipe_size), 4096, 1048576, NULL, "1048576",
     NULL, 0, "BYTES", "splice pipe per busy direction", SETTING_RUNTIME, false, {0},
     PIPO_Q_PIPE_SIZE, PIPO_M_PIPE_SIZE},
    {"dissectors", SETTING_BOOL, 0, F(dissectors), 0, 1, NULL, "yes", NULL, 0, "yes|no",
     "log credentials seen in cleartext protocols", SETTING_RUNTIME, false,
     {"no-dissectors", 'N', "no"}, PIPO_Q_DISSECTORS, PIPO_M_DISSECTORS},
    {"log-level", SETTING_CHOICE, 0, F(log_level), 0, 0, level_choices, "info", NULL, 0, "LEVEL",
     "error, warn, info or debug", SETTING_RUNTIME, false, {0}, NOPIPO},
    {"dns-server", SETTING_SERVERS, 0, F(dns_server), 0, 0, NULL, NULL, "/etc/resolv.conf", 0,
     "LIST", "DNS servers, ADDR[:PORT] or [ADDR6]:PORT, comma-separated", SETTING_RUNTIME, false,
     {0}, NOPIPO},
    {"dns-timeout", SETTING_U32, SETTING_UNIT_SECONDS, F(dns_timeout_s), 1, 60, NULL, "5", NULL,
     0, "S", "time allowed for one lookup, DoH and fallback together", SETTING_RUNTIME, false,
     {0}, NOPIPO},
    {"dns-cache-size", SETTING_U32, 0, F(dns_cache_size), 0, 1048576, NULL, "4096", NULL, 0, "N",
     "names cached per worker, 0 = none", SETTING_RUNTIME, false, {0}, NOPIPO},
    {"dns-fallback", SETTING_BOOL, 0, F(dns_fallback), 0, 1, NULL, "yes", NULL, 0, "yes|no",
     "resolve through classic DNS when the DoH endpoint cannot be used", SETTING_RUNTIME, false,
     {"no-dns-fallback", 0, "no"}, NOPIPO},
    {"doh-url", SETTING_URL, 0, F(doh_url), 0, 0, NULL, NULL, "none: classic DNS", 0, "URL",
     "DoH endpoint, https:// recommended; wins over --doh-ip and the parts below",
     SETTING_RUNTIME, true, {0}, NOPIPO},
    {"doh-ip", SETTING_ADDR, 0, F(doh_ip), 0, 0, NULL, "127.0.0.1", NULL, 0, "ADDR",
     "DoH server address of http://ADDR:PORT PATH QUERY; any of these parts turns DoH on",
     SETTING_RUNTIME, true, {0}, NOPIPO},
    {"doh-port", SETTING_U16, 0, F(doh_port), 1, 65535, NULL, "8053", NULL, 0, "PORT",
     "DoH server port", SETTING_RUNTIME, true, {0}, NOPIPO},
    {"doh-host", SETTING_STR, 0, F(doh_host), 1, 0, NULL, "localhost", NULL, 0, "NAME",
     "DoH Host header", SETTING_RUNTIME, true, {0}, NOPIPO},
    {"doh-path", SETTING_STR, 0, F(doh_path), 1, 0, NULL, "/getnsrecord", NULL, 0, "PATH",
     "DoH path", SETTING_RUNTIME, true, {0}, NOPIPO},
    {"doh-query", SETTING_STR, 0, F(doh_query), 1, 0, NULL, "?dns=", NULL, 0, "Q",
     "DoH query prefix", SETTING_RUNTIME, true, {0}, NOPIPO},
    {"doh-method", SETTING_CHOICE, 0, F(doh_post), 0, 0, method_choices, "get", NULL, 'm',
     "get|post", "DoH request method", SETTING_RUNTIME, false, {"doh-method-post", 0, "post"},
     NOPIPO},
    {"doh-ca-file", SETTING_STR, 0, F(doh_ca_file), 1, 0, NULL, NULL, "the system's", 0, "FILE",
     "CA certificates for the DoH server", SETTING_RUNTIME, false, {0}, NOPIPO},
    {"doh-connections", SETTING_U32, 0, F(doh_connections), 1, 64, NULL, "4", NULL, 0, "N",
     "DoH keep-alive connections per worker", SETTING_RUNTIME, false, {0}, NOPIPO},
};

const size_t settings_count = sizeof settings_table / sizeof settings_table[0];

_Static_assert(sizeof settings_table / sizeof settings_table[0] <= 64,
               "settings_overlay masks hold 64 rows");

const struct setting_desc *settings_find(const char *key)
{
	for (size_t i = 0; i < settings_count; i++)
		if (strcmp(settings_table[i].key, key) == 0)
			return &settings_table[i];
	return NULL;
}

const struct setting_desc *settings_find_pipo(bool modify, uint8_t code)
{
	if (code == SETTING_NO_PIPO)
		return NULL;
	for (size_t i = 0; i < settings_count; i++)
		if ((modify ? settings_table[i].pipo_m : settings_table[i].pipo_q) == code)
			return &settings_table[i];
	return NULL;
}

/* ---- parsing ---------------------------------------------------------------- */

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

/* A number with the row's unit suffix; range checked after the multiply. */
static int parse_number(const struct setting_desc *d, const char *v, uint32_t *out)
{
	if (*v < '0' || *v > '9')
		return -EINVAL;
	errno = 0;
	char *end;
	unsigned long long n = strtoull(v, &end, 10);
	if (errno)
		return -EINVAL;
	unsigned long long mul = 0;
	if (!*end)
		mul = 1;
	else if (d->unit == SETTING_UNIT_BYTES) {
		if (!strcasecmp(end, "b"))
			mul = 1;
		else if (!strcasecmp(end, "k") || !strcasecmp(end, "kib") || !strcasecmp(end, "kb"))
			mul = 1024;
		else if (!strcasecmp(end, "m") || !strcasecmp(end, "mib") || !strcasecmp(end, "mb"))
			mul = 1024 * 1024;
	} else if (d->unit == SETTING_UNIT_SECONDS) {
		mul = !strcmp(end, "s")   ? 1
		      : !strcmp(end, "m") ? 60
		      : !strcmp(end, "h") ? 3600
		      : !strcmp(end, "d") ? 86400
		                          : 0;
	}
	if (!mul || n > UINT32_MAX / mul || n * mul < d->min || n * mul > d->max)
		return -EINVAL;
	*out = (uint32_t)(n * mul);
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

/* One network of a list: an IPv4 or IPv6 address, /LEN optional
 * (0..32 or 0..128, no leading zero). */
static int is_cidr(const char *v, size_t len)
{
	char buf[SETTINGS_ADDR_MAX];
	unsigned char a[16];
	if (len == 0 || len >= sizeof buf)
		return 0;
	memcpy(buf, v, len);
	buf[len] = '\0';
	char *slash = strchr(buf, '/');
	if (slash)
		*slash = '\0';
	uint32_t max = inet_pton(AF_INET, buf, a) == 1 ? 32 : inet_pton(AF_INET6, buf, a) == 1 ? 128 : 0;
	uint32_t plen;
	if (!max)
		return 0;
	if (!slash)
		return 1;
	const char *d = slash + 1;
	return d[0] && (d[0] != '0' || !d[1]) && strspn(d, "0123456789") == strlen(d) &&
	       parse_u32(d, 0, max, &plen) == 0;
}

/* USER or USER:GROUP, each a POSIX portable name ([A-Za-z0-9._-], not
 * starting with '-') or a numeric id. */
static int is_account(const char *v, size_t len)
{
	if (len == 0 || len > 32 || v[0] == '-')
		return 0;
	for (size_t i = 0; i < len; i++)
		if (!((v[i] >= 'a' && v[i] <= 'z') || (v[i] >= 'A' && v[i] <= 'Z') ||
		      (v[i] >= '0' && v[i] <= '9') || v[i] == '.' || v[i] == '_' || v[i] == '-'))
			return 0;
	return 1;
}

static int is_run_as(const char *v)
{
	const char *colon = strchr(v, ':');
	if (!colon)
		return is_account(v, strlen(v));
	return is_account(v, (size_t)(colon - v)) && is_account(colon + 1, strlen(colon + 1));
}

/* LOW-HIGH, 1 <= LOW <= HIGH <= 65535, or "ephemeral" (0, 0). */
static int parse_ports(const char *v, uint16_t out[2])
{
	char low[8];
	uint32_t lo, hi;
	const char *dash = strchr(v, '-');
	if (!strcmp(v, "ephemeral")) {
		out[0] = out[1] = 0;
		return 0;
	}
	if (!dash || (size_t)(dash - v) >= sizeof low)
		return -EINVAL;
	memcpy(low, v, (size_t)(dash - v));
	low[dash - v] = '\0';
	if (parse_u32(low, 1, 65535, &lo) < 0 || parse_u32(dash + 1, 1, 65535, &hi) < 0 || lo > hi)
		return -EINVAL;
	out[0] = (uint16_t)lo;
	out[1] = (uint16_t)hi;
	return 0;
}

static void choice_list(const struct setting_desc *d, char *list, size_t len)
{
	list[0] = '\0';
	for (size_t j = 0; d->choices[j]; j++) {
		strncat(list, j ? "|" : "", len - strlen(list) - 1);
		strncat(list, d->choices[j], len - strlen(list) - 1);
	}
}

static int store(struct settings *s, const struct setting_desc *d, const char *value, char *err,
                 size_t errlen)
{
	char *field = (char *)s + d->off;
	uint32_t n;
	/* Values reach HTTP headers (doh-host), logs and the configuration
	 * file's lines: no control byte in any of them. */
	for (const char *p = value; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f) {
			snprintf(err, errlen, "the value contains a control byte");
			return -EINVAL;
		}
	switch (d->type) {
	case SETTING_U32:
	case SETTING_U16:
		if (parse_number(d, value, &n) < 0) {
			snprintf(err, errlen, "'%s' is not %s in %u..%u%s", value,
			         d->unit == SETTING_UNIT_BYTES     ? "a size"
			         : d->unit == SETTING_UNIT_SECONDS ? "a duration"
			                                           : "an integer",
			         d->min, d->max,
			         d->unit == SETTING_UNIT_BYTES     ? " bytes (e.g. 65536, 64K, 1M)"
			         : d->unit == SETTING_UNIT_SECONDS ? " seconds (e.g. 30, 30s, 5m, 2h, 1d)"
			                                           : "");
			return -EINVAL;
		}
		if (d->type == SETTING_U16)
			*(uint16_t *)field = (uint16_t)n;
		else
			*(uint32_t *)field = n;
		break;
	case SETTING_BOOL:
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
	case SETTING_CHOICE: {
		size_t i;
		for (i = 0; d->choices[i]; i++)
			if (strcmp(d->choices[i], value) == 0)
				break;
		if (!d->choices[i]) {
			char list[128];
			choice_list(d, list, sizeof list);
			snprintf(err, errlen, "'%s' is not one of %s", value, list);
			return -EINVAL;
		}
		*(uint8_t *)field = (uint8_t)i;
		break;
	}
	case SETTING_CHOICE_SET: {
		unsigned mask = 0;
		for (const char *p = value, *c;; p = c + 1) {
			c = strchr(p, ',');
			size_t len = c ? (size_t)(c - p) : strlen(p), i;
			for (i = 0; d->choices[i]; i++)
				if (strlen(d->choices[i]) == len && !strncmp(d->choices[i], p, len))
					break;
			if (!d->choices[i]) {
				char list[128];
				choice_list(d, list, sizeof list);
				snprintf(err, errlen, "'%s' is not a comma-separated list of %s", value,
				         list);
				return -EINVAL;
			}
			mask |= 1u << i;
			if (!c)
				break;
		}
		*(uint8_t *)field = (uint8_t)mask;
		break;
	}
	case SETTING_ADDR:
		if (!is_ip(value)) {
			snprintf(err, errlen, "'%s' is not an IPv4 or IPv6 address", value);
			return -EINVAL;
		}
		snprintf(field, d->size, "%s", value);
		break;
	case SETTING_LISTEN:
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
	case SETTING_SERVERS:
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
	case SETTING_CIDRS: {
		size_t nets = 1;
		for (const char *p = value; *p; p++)
			nets += *p == ',';
		if (nets > SETTINGS_MAX_PROXY_NETS) {
			snprintf(err, errlen, "more than %d networks in '%s'", SETTINGS_MAX_PROXY_NETS,
			         value);
			return -EINVAL;
		}
		for (const char *p = value, *c; *value; p = c + 1) {
			c = strchr(p, ',');
			if (!is_cidr(p, c ? (size_t)(c - p) : strlen(p))) {
				snprintf(err, errlen, "'%s' is not a list of ADDR or ADDR/LEN", value);
				return -EINVAL;
			}
			if (!c)
				break;
		}
		goto copy;
	}
	case SETTING_ENDPOINT:
		if (is_ip(value) || !is_server(value, strlen(value))) {
			snprintf(err, errlen, "'%s' is not ADDR:PORT or [ADDR6]:PORT", value);
			return -EINVAL;
		}
		goto copy;
	case SETTING_RUN_AS:
		if (!is_run_as(value)) {
			snprintf(err, errlen, "'%s' is not USER or USER:GROUP (names or numeric ids)",
			         value);
			return -EINVAL;
		}
		goto copy;
	case SETTING_PORTS: {
		uint16_t ports[2];
		if (parse_ports(value, ports) < 0) {
			snprintf(err, errlen, "'%s' is not LOW-HIGH (ports, LOW <= HIGH) or ephemeral",
			         value);
			return -EINVAL;
		}
		memcpy(field, ports, sizeof ports);
		break;
	}
	case SETTING_TOKEN:
		if (strspn(value, "abcdefghijklmnopqrstuvwxyz0123456789_-") != strlen(value)) {
			snprintf(err, errlen, "'%s' is not a name of lower-case letters, digits, '_' and '-'",
			         value);
			return -EINVAL;
		}
		if (d->min && !*value) {
			snprintf(err, errlen, "the value is empty");
			return -EINVAL;
		}
		goto copy;
	case SETTING_URL:
		if (strncmp(value, "http://", 7) != 0 && strncmp(value, "https://", 8) != 0) {
			snprintf(err, errlen, "'%s' is not an http:// or https:// URL", value);
			return -EINVAL;
		}
		/* fall through */
	case SETTING_STR:
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
	return 0;
}

void settings_defaults(struct settings *s)
{
	memset(s, 0, sizeof *s);
	char err[128];
	for (size_t i = 0; i < settings_count; i++)
		if (settings_table[i].deflt && store(s, &settings_table[i], settings_table[i].deflt, err,
		                                     sizeof err) < 0)
			abort(); /* a default the table itself refuses */
	long cpus = sysconf(_SC_NPROCESSORS_ONLN);
	if (cpus < 1)
		cpus = 1;
	if (cpus > SETTINGS_MAX_WORKERS)
		cpus = SETTINGS_MAX_WORKERS;
	s->workers = (uint32_t)cpus;
}

int settings_set(struct settings *s, const char *key, const char *value, char *err, size_t errlen)
{
	const struct setting_desc *d = settings_find(key);
	if (!d) {
		snprintf(err, errlen, "unknown setting '%s'", key);
		return -ENOENT;
	}
	int rc = store(s, d, value, err, errlen);
	if (rc < 0)
		return rc;
	/* Giving any part of a DoH endpoint turns DoH on; the parts not given
	 * keep their defaults.  A default endpoint would let a local user who
	 * binds its port first answer every lookup. */
	if (d->doh_endpoint)
		s->doh = 1;
	return (int)(d - settings_table);
}

int settings_change(struct settings *s, const char *key, const char *value, char *msg,
                    size_t len)
{
	const struct setting_desc *d = settings_find(key);
	if (d && d->when != SETTING_RUNTIME) {
		snprintf(msg, len, "%s is read %s: change it in the configuration file%s", key,
		         d->when == SETTING_START ? "at start only" : "at reload",
		         d->when == SETTING_START ? " and restart" : " and reload");
		return -EPERM;
	}
	struct settings next = *s;
	int rc = settings_set(&next, key, value, msg, len);
	if (rc < 0)
		return rc;
	*s = next;
	settings_format(s, d, msg, len);
	return 0;
}

/* ---- reading ------------------------------------------------------------------ */

uint32_t settings_number(const struct settings *s, const struct setting_desc *d)
{
	const char *field = (const char *)s + d->off;
	switch (d->type) {
	case SETTING_U32:
		return *(const uint32_t *)field;
	case SETTING_U16:
		return *(const uint16_t *)field;
	case SETTING_BOOL:
	case SETTING_CHOICE:
	case SETTING_CHOICE_SET:
		return *(const uint8_t *)field;
	default:
		return 0;
	}
}

int settings_set_number(struct settings *s, const struct setting_desc *d, uint32_t v)
{
	char *field = (char *)s + d->off;
	switch (d->type) {
	case SETTING_U32:
	case SETTING_U16:
	case SETTING_BOOL:
		if (v < d->min || v > d->max)
			return -EINVAL;
		if (d->type == SETTING_U32)
			*(uint32_t *)field = v;
		else if (d->type == SETTING_U16)
			*(uint16_t *)field = (uint16_t)v;
		else
			*(uint8_t *)field = (uint8_t)v;
		return 0;
	case SETTING_CHOICE:
		for (uint32_t i = 0; d->choices[i]; i++)
			if (i == v) {
				*(uint8_t *)field = (uint8_t)v;
				return 0;
			}
		return -EINVAL;
	case SETTING_CHOICE_SET: {
		uint32_t all = 0;
		for (uint32_t i = 0; d->choices[i]; i++)
			all |= 1u << i;
		if (!v || (v & ~all))
			return -EINVAL;
		*(uint8_t *)field = (uint8_t)v;
		return 0;
	}
	default:
		return -EINVAL;
	}
}

void settings_format(const struct settings *s, const struct setting_desc *d, char *out,
                     size_t len)
{
	const char *field = (const char *)s + d->off;
	uint32_t n = settings_number(s, d);
	switch (d->type) {
	case SETTING_U32:
	case SETTING_U16:
		snprintf(out, len, "%u", n);
		break;
	case SETTING_BOOL:
		snprintf(out, len, "%s", n ? "yes" : "no");
		break;
	case SETTING_CHOICE: {
		size_t i = 0;
		while (d->choices[i] && i < n)
			i++;
		snprintf(out, len, "%s", d->choices[i] ? d->choices[i] : "");
		break;
	}
	case SETTING_CHOICE_SET:
		out[0] = '\0';
		for (size_t i = 0; d->choices[i]; i++)
			if (n & (1u << i)) {
				size_t used = strlen(out);
				snprintf(out + used, len - used, "%s%s", used ? "," : "", d->choices[i]);
			}
		break;
	case SETTING_LISTEN:
		out[0] = '\0';
		for (uint32_t i = 0; i < s->nlisten && i < SETTINGS_MAX_LISTEN; i++) {
			size_t used = strlen(out);
			snprintf(out + used, len - used, "%s%s", i ? "," : "", s->listen[i]);
		}
		break;
	case SETTING_PORTS: {
		uint16_t ports[2];
		memcpy(ports, field, sizeof ports);
		if (ports[0] == 0)
			snprintf(out, len, "ephemeral");
		else
			snprintf(out, len, "%u-%u", ports[0], ports[1]);
		break;
	}
	default:
		snprintf(out, len, "%.*s", (int)d->size, field);
		break;
	}
}

void settings_doh_url(const struct settings *s, char *out, size_t len)
{
	if (!s->doh)
		snprintf(out, len, "%s", "");
	else if (s->doh_url[0])
		snprintf(out, len, "%s", s->doh_url);
	else if (strchr(s->doh_ip, ':'))
		snprintf(out, len, "http://[%s]:%u%s%s", s->doh_ip, s->doh_port, s->doh_path,
		         s->doh_query);
	else
		snprintf(out, len, "http://%s:%u%s%s", s->doh_ip, s->doh_port, s->doh_path, s->doh_query);
}

void settings_overlay(struct settings *dst, const struct settings *src, uint64_t mask)
{
	for (size_t i = 0; i < settings_count; i++) {
		if (!(mask & (1ull << i)))
			continue;
		const struct setting_desc *d = &settings_table[i];
		if (d->type == SETTING_LISTEN)
			dst->nlisten = src->nlisten;
		memcpy((char *)dst + d->off, (const char *)src + d->off, d->size);
		if (d->doh_endpoint)
			dst->doh = 1;
	}
}

/* ---- --help ------------------------------------------------------------------- */

#define HELP_COL 29
#define HELP_WIDTH 79

/* "  -p, --port PORT" then the text from column HELP_COL, wrapped. */
static void usage_line(FILE *f, char short_opt, const char *name, const char *arg,
                       const char *text)
{
	char head[96];
	if (short_opt)
		snprintf(head, sizeof head, "  -%c, --%s%s%s", short_opt, name, arg ? " " : "",
		         arg ? arg : "");
	else
		snprintf(head, sizeof head, "      --%s%s%s", name, arg ? " " : "", arg ? arg : "");
	int col = fprintf(f, "%s", head);
	if (col >= HELP_COL - 1) {
		fputc('\n', f);
		col = 0;
	}
	const char *p = text;
	while (*p) {
		fprintf(f, "%*s", HELP_COL - col, "");
		col = HELP_COL;
		size_t room = HELP_WIDTH - HELP_COL, n = strlen(p);
		if (n > room) {
			n = room;
			while (n > 0 && p[n] != ' ')
				n--;
			if (n == 0)
				n = strcspn(p, " ");
		}
		fprintf(f, "%.*s\n", (int)n, p);
		col = 0;
		p += n;
		while (*p == ' ')
			p++;
	}
}

void settings_usage(FILE *f)
{
	for (size_t i = 0; i < settings_count; i++) {
		const struct setting_desc *d = &settings_table[i];
		char text[512], range[64] = "";
		if (d->type == SETTING_U32 || d->type == SETTING_U16)
			snprintf(range, sizeof range, ", %u..%u%s", d->min, d->max,
			         d->unit == SETTING_UNIT_BYTES     ? " bytes"
			         : d->unit == SETTING_UNIT_SECONDS ? " s"
			                                           : "");
		snprintf(text, sizeof text, "%s%s (default %s%s)", d->help, range,
		         d->deflt_help ? d->deflt_help : d->deflt,
		         d->when == SETTING_START ? "; read at start" : "");
		usage_line(f, d->short_opt, d->key, d->arg, text);
		if (d->flag.name || d->flag.short_opt) {
			snprintf(text, sizeof text, "same as --%s %s", d->key, d->flag.value);
			usage_line(f, d->flag.short_opt, d->flag.name, NULL, text);
		}
	}
}
