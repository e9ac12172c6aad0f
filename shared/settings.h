/*
 * settings: every tunable of socks5d in one descriptor table
 * (settings_table): its key (the configuration-file key and the long
 * option), type and range, default, --help text, short option and flag
 * form, whether it can change while running, and its numeric pipo codes.
 * The command line (master/options.c), the configuration file
 * (master/conffile.c), the administration protocol (master/admin.c) and
 * pipoClient (client/settings_cmds.c) all parse and print values through
 * this one module.  The struct is plain data: it is copied into the shared
 * segment and read by workers.  Pure functions; any thread.
 */
#ifndef SOCKS5D_SETTINGS_H
#define SOCKS5D_SETTINGS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

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

/* Which remotes may answer through a UDP association. */
enum udp_filter {
	UDP_FILTER_ANY = 0,          /* any remote */
	UDP_FILTER_ADDRESS = 1,      /* an address the client has sent to (any port) */
	UDP_FILTER_ADDRESS_PORT = 2, /* an address and port the client has sent to */
};

#define SETTINGS_MAX_LISTEN 16
#define SETTINGS_ADDR_MAX 64
#define SETTINGS_MAX_WORKERS 64
#define SETTINGS_MAX_PROXY_NETS 32 /* networks in proxy-protocol */

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
	uint32_t bind_timeout_s; /* BIND: how long the listening socket waits for its peer */
	uint16_t bind_ports[2];  /* BIND: listening ports LOW, HIGH; 0, 0 = the kernel's choice */
	uint32_t udp_idle_timeout_s; /* a UDP association without datagrams for this long ends */
	uint8_t idle_cleanup;
	uint8_t dissectors;
	uint8_t splice; /* zero-copy relay through pipes when nothing inspects the bytes */
	uint8_t sockmap; /* kernel-only relay (BPF sockmap) when nothing inspects the bytes */
	uint8_t accept; /* enum accept_mode */
	uint8_t anonymous; /* enum anon_policy */
	uint8_t log_level; /* enum log_level */
	uint8_t doh_post;
	uint8_t dns_fallback;
	uint8_t doh; /* a DoH endpoint was configured: DoH first, else classic DNS alone */
	uint8_t udp_filter; /* enum udp_filter */
	uint8_t gssapi_protection; /* GSS-API levels granted: 1 << 0 clear, 1 << 1 integrity,
	                              1 << 2 confidentiality (RFC 1961 level numbers) */
	uint8_t gssapi_nec; /* also take the protection level unwrapped (NEC's client) */
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
	char run_as[64]; /* USER[:GROUP] once sockets and segment exist, "" = stay as started */
	char proxy_protocol[512]; /* balancers that send a PROXY header first, "" = none */
	char metrics[SETTINGS_ADDR_MAX + 8]; /* the Prometheus endpoint ADDR:PORT, "" = none */
	char gssapi_keytab[1024]; /* GSS-API (RFC 1961) keytab, "" = method off */
	char gssapi_service[256]; /* the service (or service/host) of the keys accepted */
	/* TCP congestion control (TCP_CONGESTION) of the connections with
	 * clients and with targets, "" = the system's default */
	char client_congestion[16];
	char target_congestion[16];
};

enum setting_type {
	SETTING_U32,     /* a decimal integer, with a unit suffix where unit says */
	SETTING_U16,
	SETTING_BOOL,    /* yes/no, on/off, true/false, 1/0 */
	SETTING_CHOICE,  /* one of choices[], stored as its index */
	SETTING_STR,
	SETTING_ADDR,    /* an IPv4 or IPv6 address */
	SETTING_URL,     /* http:// or https:// */
	SETTING_LISTEN,  /* an address, appended to listen[] */
	SETTING_SERVERS, /* ADDR[:PORT] or [ADDR6]:PORT, comma-separated */
	SETTING_RUN_AS,  /* USER[:GROUP] */
	SETTING_CIDRS,   /* ADDR[/LEN], comma-separated; "" = none */
	SETTING_PORTS,   /* LOW-HIGH into uint16_t[2], or "ephemeral" (0, 0) */
	SETTING_ENDPOINT, /* ADDR:PORT or [ADDR6]:PORT, the port required */
	SETTING_CHOICE_SET, /* some of choices[], comma-separated, stored as a bit mask */
	SETTING_TOKEN,   /* a kernel module's name: a-z, 0-9, '_' and '-'; "" unless min */
};

enum setting_unit {
	SETTING_UNIT_NONE = 0,
	SETTING_UNIT_BYTES,   /* 65536, 64K, 64KiB, 1M, 1MiB */
	SETTING_UNIT_SECONDS, /* 30, 30s, 5m, 2h, 1d */
};

/* When a new value takes effect. */
enum setting_when {
	SETTING_RUNTIME, /* at once: pipo set, SIGHUP, reload */
	SETTING_RELOAD,  /* SIGHUP and reload, not pipo set */
	SETTING_START,   /* the next start; a change on SIGHUP is only warned about */
};

/* A flag that sets the key to a fixed value: --no-splice is splice = no. */
struct setting_flag {
	const char *name; /* long option without "--", or NULL */
	char short_opt;   /* or 0 */
	const char *value;
};

#define SETTING_NO_PIPO 0xff

struct setting_desc {
	const char *key; /* configuration key and long option --KEY VALUE */
	enum setting_type type;
	enum setting_unit unit;
	size_t off, size;
	uint32_t min, max; /* integers; min 1 for strings: not empty */
	const char *const *choices;
	const char *deflt;      /* the default as text, parsed like any value; NULL: empty */
	const char *deflt_help; /* the default as --help says it when not deflt */
	char short_opt;         /* -p for --port, or 0 */
	const char *arg;        /* the value's name in --help */
	const char *help;
	enum setting_when when;
	bool doh_endpoint; /* giving it turns DoH on */
	struct setting_flag flag;
	uint8_t pipo_q, pipo_m; /* numeric query/modify codes, or SETTING_NO_PIPO */
};

extern const struct setting_desc settings_table[];
extern const size_t settings_count;

/* Defaults (each row's deflt); workers is the number of online CPUs
 * (capped). */
void settings_defaults(struct settings *s);

/* The row of a key, or NULL. */
const struct setting_desc *settings_find(const char *key);
/* The row with this numeric pipo query (modify false) or modify code. */
const struct setting_desc *settings_find_pipo(bool modify, uint8_t code);

/* Set one key ("workers", "idle-timeout", ...) from its text value.
 * Returns the key's index (>= 0, < 64) or -EINVAL/-ENOENT with a message in
 * err ("'abc' is not an integer in 1..64" or "unknown setting 'x'").
 * "listen" appends.  Nothing changes on error. */
int settings_set(struct settings *s, const char *key, const char *value, char *err, size_t errlen);

/* A change while running (pipo set by key): like settings_set, but a row
 * that is not SETTING_RUNTIME gives -EPERM.  msg receives the reason, or
 * on success the value now in force as settings_format writes it. */
int settings_change(struct settings *s, const char *key, const char *value, char *msg,
                    size_t len);

/* The value of a row as text that settings_set takes back ("65536", "yes",
 * "never", a list of listen addresses joined by ','). */
void settings_format(const struct settings *s, const struct setting_desc *d, char *out,
                     size_t len);

/* Integer, boolean and choice rows as a number (the pipo v2 numeric
 * encoding), and back with the row's range check (-EINVAL). */
uint32_t settings_number(const struct settings *s, const struct setting_desc *d);
int settings_set_number(struct settings *s, const struct setting_desc *d, uint32_t v);

/* The DoH endpoint in force as one URL ("" when DoH is off). */
void settings_doh_url(const struct settings *s, char *out, size_t len);

/* Copy into dst every key whose bit is set in mask, from src. */
void settings_overlay(struct settings *dst, const struct settings *src, uint64_t mask);

/* The --help lines of every row, in table order. */
void settings_usage(FILE *f);

#endif
