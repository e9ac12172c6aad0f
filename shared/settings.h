/*
 * settings: every tunable of socks5d, its defaults, and one parser shared by
 * the command line and the configuration file (keys are the long option
 * names).  The struct is plain data: it is copied into the shared segment
 * and read by workers.
 */
#ifndef SOCKS5D_SETTINGS_H
#define SOCKS5D_SETTINGS_H

#include <stddef.h>
#include <stdint.h>

enum anon_policy {
	ANON_AUTO = 0,   /* only when no users exist, and only from loopback */
	ANON_ALWAYS = 1, /* from anywhere (the original behaviour) */
	ANON_NEVER = 2,
};

/* How workers share the SOCKS port. */
enum accept_mode {
	ACCEPT_EXCLUSIVE = 0, /* one listening socket, EPOLLEXCLUSIVE in every worker */
	ACCEPT_REUSEPORT = 1, /* one SO_REUSEPORT socket per worker, opened by the master */
};

#define SETTINGS_MAX_LISTEN 16
#define SETTINGS_ADDR_MAX 64
#define SETTINGS_MAX_WORKERS 64

struct settings {
	uint32_t workers;
	uint32_t handshake_timeout_s;
	uint32_t connect_timeout_s;
	uint32_t idle_timeout_s;
	uint32_t grace_s;
	uint32_t buffer_size;
	uint32_t pipe_size; /* splice pipe capacity per busy direction */
	uint32_t dns_cache_size;  /* DNS cache entries per worker */
	uint32_t dns_timeout_s;   /* lookup timeout */
	uint32_t doh_connections; /* DoH keep-alive connections per worker */
	uint32_t max_unauth; /* sessions per source and worker before authentication, 0 = no cap */
	uint8_t idle_cleanup;
	uint8_t dissectors;
	uint8_t splice; /* zero-copy relay through pipes when nothing inspects the bytes */
	uint8_t accept; /* enum accept_mode */
	uint8_t anonymous; /* enum anon_policy */
	uint8_t log_level; /* enum log_level */
	uint8_t doh_post;
	uint8_t dns_fallback;
	uint16_t port;
	uint16_t admin_port;
	uint16_t doh_port;
	uint32_t nlisten;
	char listen[SETTINGS_MAX_LISTEN][SETTINGS_ADDR_MAX];
	char admin_addr[SETTINGS_ADDR_MAX];
	char doh_ip[SETTINGS_ADDR_MAX];
	char doh_host[256];
	char doh_path[256];
	char doh_query[64];
	char doh_url[1024];
	char doh_ca_file[1024];
	char dns_server[256]; /* c-ares servers, "" = /etc/resolv.conf */
	char admin_socket[108]; /* unix-domain admin socket, "" = the default place */
};

/* Defaults; workers is the number of online CPUs (capped). */
void settings_defaults(struct settings *s);

/* Set one key ("workers", "idle-timeout", ...) from its text value.
 * Returns the key's index (>= 0, < 64) or -EINVAL/-ENOENT with a message in
 * err ("'abc' is not an integer in 1..64" or "unknown key").  "listen"
 * appends. */
int settings_set(struct settings *s, const char *key, const char *value, char *err, size_t errlen);

/* Copy into dst every key whose bit is set in mask, from src. */
void settings_overlay(struct settings *dst, const struct settings *src, uint64_t mask);

#endif
