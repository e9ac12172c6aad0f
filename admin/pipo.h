/*
 * pipo: the administration protocol of socks5d, version 2 (see
 * docs/pipo-protocol.txt).  Sans-I/O codec shared by the server (master)
 * and pipoClient: fed byte slices of any size, bounded memory, no globals.
 *
 * Session: the client sends AUTH (RFC 1929 layout, VER 0x02), the server
 * answers VER STATUS.  Then every message in both directions is a frame:
 *
 *   VER(1)=0x02 | TYPE(1) | CMD(1) | STATUS(1) | LEN(4, network order) | PAYLOAD(LEN)
 *
 * STATUS is 0 in requests.  A response echoes TYPE and CMD.  Requests are
 * answered in order.  Integers in payloads are network order.
 */
#ifndef SOCKS5D_PIPO_H
#define SOCKS5D_PIPO_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../shared/rfc1929.h"

#define PIPO_VERSION 0x02
#define PIPO_VERSION_ORIGINAL 0x01
#define PIPO_HEADER_LEN 8
#define PIPO_MAX_REQUEST 65536u     /* request payload bound */
#define PIPO_MAX_RESPONSE 1048576u  /* response payload bound */
#define PIPO_MAX_NAME 255
#define PIPO_MAX_URL 1024
#define PIPO_SESSIONS_PAGE_MAX 256

enum pipo_type {
	PIPO_QUERY = 0x00,
	PIPO_MODIFY = 0x01,
};

enum pipo_query {
	PIPO_Q_USERS = 0x00,            /* -> u32 n, n x (u8 len, name, u8 admin) */
	PIPO_Q_HISTORIC_CONNS = 0x01,   /* -> u64 */
	PIPO_Q_CURRENT_CONNS = 0x02,    /* -> u64 */
	PIPO_Q_MAX_CONNS = 0x03,        /* -> u64 */
	PIPO_Q_BYTES_UP = 0x04,         /* -> u64, clients to targets */
	PIPO_Q_BYTES_DOWN = 0x05,       /* -> u64, targets to clients */
	PIPO_Q_USERS_CONNECTED = 0x06,  /* -> u64 */
	PIPO_Q_USER_COUNT = 0x07,       /* -> u32 */
	PIPO_Q_BUFFER_SIZE = 0x08,      /* -> u32 bytes */
	PIPO_Q_HANDSHAKE_TIMEOUT = 0x09,/* -> u32 seconds */
	PIPO_Q_IDLE_TIMEOUT = 0x0a,     /* -> u32 seconds */
	PIPO_Q_USER_CONNS = 0x0b,       /* u8 len, name -> u32 */
	PIPO_Q_METRICS = 0x0c,          /* -> u16 n, n x (u16 id, u64 value) */
	PIPO_Q_SESSIONS = 0x0d,         /* u64 after, u16 max -> u16 n, u8 more, n x session */
	PIPO_Q_ANONYMOUS = 0x0e,        /* -> u8 policy */
	PIPO_Q_DOH = 0x0f,              /* -> u8 method, u16 len, url */
	PIPO_Q_DISSECTORS = 0x10,       /* -> u8 */
	PIPO_Q_IDLE_CLEANUP = 0x11,     /* -> u8 */
	PIPO_Q_CONNECT_TIMEOUT = 0x12,  /* -> u32 seconds */
	PIPO_Q_SERVER = 0x13,           /* -> u8 proto, u32 pid, u64 uptime_ms, u32 workers, u8 len, version */
	PIPO_Q_USER_STATS = 0x14,       /* -> u32 n, n x (u8 len, name, u8 admin, u32 conns, u64 up, u64 down) */
	PIPO_Q_SPLICE = 0x15,           /* -> u8 */
	PIPO_Q_PIPE_SIZE = 0x16,        /* -> u32 bytes */
	PIPO_Q_SETTING = 0x17,          /* u8 len, key -> u16 len, value as text */
	PIPO_Q_SESSIONS_EX = 0x20,      /* as Q_SESSIONS, records with cmd and datagram counts */
};

enum pipo_modify {
	PIPO_M_ADD_USER = 0x00,         /* u8 len, name, u8 len, pass, u8 admin -> u8 persisted */
	PIPO_M_DEL_USER = 0x01,         /* u8 len, name -> u8 persisted */
	PIPO_M_DISSECTORS = 0x02,       /* u8 0|1 */
	PIPO_M_IDLE_CLEANUP = 0x03,     /* u8 0|1 */
	PIPO_M_BUFFER_SIZE = 0x04,      /* u32 */
	PIPO_M_HANDSHAKE_TIMEOUT = 0x05,/* u32 */
	PIPO_M_IDLE_TIMEOUT = 0x06,     /* u32 */
	PIPO_M_PASSWORD = 0x07,         /* u8 len, name, u8 len, pass -> u8 persisted */
	PIPO_M_CLOSE_SESSION = 0x08,    /* u64 id */
	PIPO_M_ANONYMOUS = 0x09,        /* u8 policy */
	PIPO_M_DOH = 0x0a,              /* u8 method, u16 len, url (len 0: keep the URL) */
	PIPO_M_RELOAD = 0x0b,           /* (empty) */
	PIPO_M_CONNECT_TIMEOUT = 0x0c,  /* u32 */
	PIPO_M_SPLICE = 0x0d,           /* u8 0|1 */
	PIPO_M_PIPE_SIZE = 0x0e,        /* u32 */
	PIPO_M_SETTING = 0x0f,          /* u8 len, key, u16 len, value -> u16 len, value or reason */
};

enum pipo_status {
	PIPO_OK = 0x00,
	PIPO_E_NOT_FOUND = 0x01,
	PIPO_E_EXISTS = 0x02,
	PIPO_E_INVALID = 0x03,     /* a value out of range */
	PIPO_E_UNKNOWN = 0x04,     /* unknown TYPE/CMD */
	PIPO_E_MALFORMED = 0x05,   /* payload does not parse for this command */
	PIPO_E_TOO_BIG = 0x06,     /* LEN over PIPO_MAX_REQUEST: payload skipped */
	PIPO_E_VERSION = 0x07,     /* frame VER not supported */
	PIPO_E_FULL = 0x08,        /* users table full */
	PIPO_E_BUSY = 0x09,        /* try again (workers did not answer in time) */
	PIPO_E_FIXED = 0x0a,       /* a user given on the command line: not changed */
	PIPO_E_SERVER = 0xff,
};

/* Authentication status (second byte of the answer to AUTH). */
enum pipo_auth_status {
	PIPO_AUTH_OK = 0x00,
	PIPO_AUTH_FAILED = 0x01,
	PIPO_AUTH_BAD_VERSION = 0x02,
};

/* Metric ids of PIPO_Q_METRICS (stable; new ones are appended). */
enum pipo_metric {
	PIPO_MET_CONN_TOTAL = 1,
	PIPO_MET_CONN_CURRENT = 2,
	PIPO_MET_CONN_MAX = 3,
	PIPO_MET_BYTES_UP = 4,
	PIPO_MET_BYTES_DOWN = 5,
	PIPO_MET_USERS_CONNECTED = 6,
	PIPO_MET_USER_COUNT = 7,
	PIPO_MET_REQUESTS = 8,
	PIPO_MET_AUTH_FAILURES = 9,
	PIPO_MET_NO_METHOD = 10,
	PIPO_MET_HANDSHAKE_TIMEOUTS = 11,
	PIPO_MET_IDLE_TIMEOUTS = 12,
	PIPO_MET_ACCEPT_PAUSES = 13,
	PIPO_MET_DNS_LOOKUPS = 14,
	PIPO_MET_DNS_FAILURES = 15,
	PIPO_MET_LOG_DROPPED = 16,
	PIPO_MET_WORKER_RESTARTS = 17,
	PIPO_MET_ADMIN_SESSIONS = 18,
	PIPO_MET_WORKERS = 19,
	PIPO_MET_RELAYING = 20,
	PIPO_MET_DNS_CACHE_HITS = 21,
	PIPO_MET_CREDENTIALS = 22,
	PIPO_MET_DNS_COALESCED = 23,
	PIPO_MET_DOH_QUERIES = 24,
	PIPO_MET_DOH_FAILURES = 25,
	PIPO_MET_DNS_FALLBACKS = 26,
	PIPO_MET_DOH_OUTAGES = 27,
	PIPO_MET_DNS_TIMEOUTS = 28,
	PIPO_MET_DNS_LATENCY_P50 = 29, /* microseconds, upper bound of the bucket */
	PIPO_MET_DNS_LATENCY_P99 = 30,
	PIPO_MET_BYTES_SPLICED = 31,
	PIPO_MET_AUTH_DELAYED = 32,
	PIPO_MET_AUTH_EVICTED = 33,
	PIPO_MET_AUTH_BACKOFF_FULL = 34,
	PIPO_MET_UNAUTH_REFUSED = 35,
	PIPO_MET_LIMIT_REFUSED = 56,   /* requests answered 0x02: a max-sessions reached */
	PIPO_MET_RATE_PAUSES = 57,     /* relay directions paused by a rate limit */
	PIPO_MET_SESSIONS_LIMITED = 58, /* gauge: sessions holding a place in a limit */
	PIPO_MET_BIND_STARTED = 46,
	PIPO_MET_BIND_ACCEPTED = 47,
	PIPO_MET_BIND_TIMEOUTS = 48,
	PIPO_MET_BIND_WRONG_PEER = 49,
	PIPO_MET_CLIENTS_BLOCKED = 50,  /* connections closed at accept by a client rule */
	PIPO_MET_RULE_BLOCKED = 51,     /* requests answered 0x02 by a rule of the file */
	PIPO_MET_DEFAULT_BLOCKED = 52,  /* requests answered 0x02 by the default policy */
	PIPO_MET_ADDRS_SKIPPED = 53,    /* addresses not tried: blocked */
	PIPO_MET_UDP_DGRAMS_UP = 36,
	PIPO_MET_UDP_DGRAMS_DOWN = 37,
	PIPO_MET_UDP_DROP_SOURCE = 38,
	PIPO_MET_UDP_DROP_FRAG = 39,
	PIPO_MET_UDP_DROP_MALFORMED = 40,
	PIPO_MET_UDP_DROP_FILTER = 41,
	PIPO_MET_UDP_DROP_LOOKUP = 42,
	PIPO_MET_UDP_DROP_QUEUE = 43,
	PIPO_MET_UDP_DROP_SEND = 44,
	PIPO_MET_UDP_DROP_DENIED = 45,
	PIPO_MET_UDP_DROP_RATE = 54, /* datagrams over a rate limit */
	PIPO_MET_GSS_LOGINS = 60,     /* GSS-API logins with a protection level granted */
	PIPO_MET_GSS_FAILURES = 61,   /* GSS-API logins failed or abandoned */
	PIPO_MET_GSS_WRAPPED = 62,    /* plaintext bytes wrapped for GSS-API clients */
	PIPO_MET_GSS_UNWRAPPED = 63,  /* plaintext bytes unwrapped from GSS-API clients */
	PIPO_MET_REPLY_0 = 100, /* 100 + reply code 0..8 */
};

/* Session states in PIPO_Q_SESSIONS records. */
enum pipo_session_state {
	PIPO_SS_HANDSHAKE = 0,
	PIPO_SS_RESOLVING = 1,
	PIPO_SS_CONNECTING = 2,
	PIPO_SS_RELAY = 3,
	PIPO_SS_CLOSING = 4,
};

/* SOCKS commands in PIPO_Q_SESSIONS_EX records (RFC 1928 CMD; 0 before
 * the request). */
enum pipo_session_cmd {
	PIPO_CMD_NONE = 0,
	PIPO_CMD_CONNECT = 1,
	PIPO_CMD_BIND = 2,
	PIPO_CMD_UDP = 3,
};

/* One session of PIPO_Q_SESSIONS:
 *   u64 id, u8 state, u8 family (4|6), addr (4|16), u16 sport,
 *   u8 len, user, u8 len, dest, u16 dport, u64 up, u64 down, u64 age_ms
 * and in PIPO_Q_SESSIONS_EX the same followed by
 *   u8 cmd, u64 datagrams up, u64 datagrams down, u8 method (RFC 1928:
 *   0 none, 1 GSS-API, 2 username/password; 0xff before one is chosen),
 *   u8 protection (GSS-API level 0 clear, 1 integrity, 2 confidentiality;
 *   0xff without GSS-API or before one is granted) */
struct pipo_session {
	uint64_t id;
	uint8_t state;
	uint8_t family;
	uint8_t addr[16];
	uint16_t sport;
	uint16_t dport;
	char user[PIPO_MAX_NAME + 1];
	char dest[PIPO_MAX_NAME + 1];
	uint64_t up, down, age_ms;
	uint8_t cmd; /* enum pipo_session_cmd (Q_SESSIONS_EX only) */
	uint64_t dgrams_up, dgrams_down;
	uint8_t method, protection; /* Q_SESSIONS_EX only */
};

/* ---- authentication ----------------------------------------------------- */

enum pipo_result { PIPO_NEED_MORE = 0, PIPO_DONE = 1, PIPO_ERROR = -1 };

/* AUTH is RFC 1929's message with VER 0x02, parsed by the codec shared with
 * SOCKS logins (shared/rfc1929.h); here the password may not be empty. */
void pipo_auth_init(struct rfc1929 *a);
/* ERROR: bad version (a->ver holds it) or an empty name or password. */
static inline int pipo_auth_feed(struct rfc1929 *a, const uint8_t *p, size_t n, size_t *used)
{
	return rfc1929_feed(a, p, n, used);
}
/* Encode AUTH; returns its length or 0 when a field is too long. */
size_t pipo_auth_encode(uint8_t *out, size_t cap, const char *user, const char *pass);

/* ---- frames -------------------------------------------------------------- */

struct pipo_frame {
	uint8_t ver, type, cmd, status;
	uint32_t len;
};

/* Incremental frame reader: header, then the payload into a caller buffer
 * of max bytes; a longer payload is skipped (too_big set) so that the
 * stream stays in sync. */
struct pipo_reader {
	uint8_t hdr[PIPO_HEADER_LEN];
	uint32_t hpos;
	uint32_t ppos;
	uint32_t max;
	bool too_big;
	struct pipo_frame f;
	uint8_t *payload;
};

void pipo_reader_init(struct pipo_reader *r, uint8_t *payload_buf, uint32_t max);
/* DONE: r->f and r->payload[0..f.len) hold a frame (unless too_big); call
 * again for the next one. */
int pipo_reader_feed(struct pipo_reader *r, const uint8_t *p, size_t n, size_t *used);

void pipo_header_encode(uint8_t out[PIPO_HEADER_LEN], uint8_t type, uint8_t cmd, uint8_t status,
                        uint32_t len);

/* ---- payload helpers: bounded cursor readers and writers --------------------- */

struct pipo_buf {
	uint8_t *p;
	size_t len, cap;
	bool overflow;
};

void pipo_put_u8(struct pipo_buf *b, uint8_t v);
void pipo_put_u16(struct pipo_buf *b, uint16_t v);
void pipo_put_u32(struct pipo_buf *b, uint32_t v);
void pipo_put_u64(struct pipo_buf *b, uint64_t v);
void pipo_put_bytes(struct pipo_buf *b, const void *p, size_t n);
/* u8 length + bytes; a string over 255 bytes sets overflow. */
void pipo_put_str8(struct pipo_buf *b, const char *s);
void pipo_put_session(struct pipo_buf *b, const struct pipo_session *s);
/* The PIPO_Q_SESSIONS_EX record: the above, then cmd and datagrams. */
void pipo_put_session_ex(struct pipo_buf *b, const struct pipo_session *s);
/* A worker's neutral session record (shared/ctrl.h) as a pipo record. */
struct ctrl_session;
void pipo_session_from_ctrl(struct pipo_session *out, const struct ctrl_session *in);

struct pipo_cur {
	const uint8_t *p;
	size_t len, pos;
	bool bad;
};

uint8_t pipo_get_u8(struct pipo_cur *c);
uint16_t pipo_get_u16(struct pipo_cur *c);
uint32_t pipo_get_u32(struct pipo_cur *c);
uint64_t pipo_get_u64(struct pipo_cur *c);
/* u8 length + bytes into out (NUL-terminated, cap >= 256); bad when short
 * or when the string holds a NUL. */
void pipo_get_str8(struct pipo_cur *c, char *out, size_t cap);
/* u16 length + bytes, cap bytes at most. */
void pipo_get_str16(struct pipo_cur *c, char *out, size_t cap);
void pipo_get_session(struct pipo_cur *c, struct pipo_session *s);
void pipo_get_session_ex(struct pipo_cur *c, struct pipo_session *s);
/* Everything consumed and nothing bad. */
static inline bool pipo_cur_done(const struct pipo_cur *c)
{
	return !c->bad && c->pos == c->len;
}

const char *pipo_status_name(uint8_t status);
const char *pipo_metric_name(uint16_t id);

/* ---- access rules: listing and rule test ----------------------------------- */

/* Queries of the access rules (socks5d.conf(5)); apart from the table
 * above so that each stays one block. */
enum pipo_query_rules {
	PIPO_Q_RULES = 0x30,     /* -> u64 gen, u8 no_rules, str16 default, u32 n, n x rule */
	PIPO_Q_RULE_TEST = 0x31, /* rule test request -> rule verdict */
};

#define PIPO_RULE_TEXT_MAX 4096 /* a rule line, as the configuration file bounds it */

enum pipo_rule_stage { PIPO_RULE_REQUEST = 0, PIPO_RULE_CLIENT = 1 };
/* Actions and decisions (the values of shared/rules.h's enum rules_action). */
enum pipo_rule_action { PIPO_RULE_PASS = 0, PIPO_RULE_BLOCK = 1, PIPO_RULE_UNDECIDED = 2 };
enum pipo_rule_cmd { PIPO_RULE_CONNECT = 1, PIPO_RULE_BIND = 2, PIPO_RULE_UDP = 3 };

/* One rule of PIPO_Q_RULES:
 *   u32 number, u32 line, u8 stage, u8 action, u64 hits, str16 text
 * text points at the caller's text (put) or at get's buffer. */
struct pipo_rule {
	uint32_t number, line;
	uint8_t stage, action;
	uint64_t hits;
	const char *text;
};

/* The request of PIPO_Q_RULE_TEST:
 *   str8 user (empty: anonymous), str8 source, str8 destination, u16 port, u8 command */
struct pipo_rule_test {
	char user[PIPO_MAX_NAME + 1];
	char source[PIPO_MAX_NAME + 1];
	char dest[PIPO_MAX_NAME + 1];
	uint16_t port;
	uint8_t cmd;
};

/* The answer of PIPO_Q_RULE_TEST:
 *   u8 decision, u8 stage, u32 number (0: the default policy), u32 line,
 *   u8 on_name, str16 text of the rule (empty for number 0) */
struct pipo_rule_verdict {
	uint8_t decision, stage, on_name;
	uint32_t number, line;
	const char *text;
};

/* A text over PIPO_RULE_TEXT_MAX sets overflow. */
void pipo_put_rule(struct pipo_buf *b, const struct pipo_rule *r);
/* text: a buffer of cap >= PIPO_RULE_TEXT_MAX + 1 bytes. */
void pipo_get_rule(struct pipo_cur *c, struct pipo_rule *r, char *text, size_t cap);
void pipo_put_rule_test(struct pipo_buf *b, const struct pipo_rule_test *t);
void pipo_get_rule_test(struct pipo_cur *c, struct pipo_rule_test *t);
void pipo_put_rule_verdict(struct pipo_buf *b, const struct pipo_rule_verdict *v);
void pipo_get_rule_verdict(struct pipo_cur *c, struct pipo_rule_verdict *v, char *text,
                           size_t cap);
/* u16 length + bytes; a string over 65535 bytes sets overflow. */
void pipo_put_str16(struct pipo_buf *b, const char *s);

#endif
