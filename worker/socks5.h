/*
 * socks5: sans-I/O codecs for RFC 1928 (greeting, method selection,
 * request, reply); the RFC 1929 username/password sub-negotiation is the
 * shared codec of shared/rfc1929.h, set up here for SOCKS.
 *
 * Each parser is fed byte slices of any size (one byte at a time works),
 * keeps its own bounded state, consumes only the bytes of its message (the
 * rest, such as a pipelined request or early data, is left to the caller)
 * and returns SOCKS5_MORE, SOCKS5_DONE or SOCKS5_ERROR.  No I/O, no
 * allocation, no globals: any thread may use its own parser.
 */
#ifndef SOCKS5D_SOCKS5_H
#define SOCKS5D_SOCKS5_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "../shared/rfc1929.h"

#define SOCKS5_VERSION 0x05
#define SOCKS5_AUTH_VERSION 0x01

enum socks5_method {
	SOCKS5_METHOD_NO_AUTH = 0x00,
	SOCKS5_METHOD_GSSAPI = 0x01,
	SOCKS5_METHOD_USERPASS = 0x02,
	SOCKS5_METHOD_NO_ACCEPTABLE = 0xff,
};

enum socks5_cmd {
	SOCKS5_CMD_CONNECT = 0x01,
	SOCKS5_CMD_BIND = 0x02,
	SOCKS5_CMD_UDP_ASSOCIATE = 0x03,
};

enum socks5_atyp {
	SOCKS5_ATYP_IPV4 = 0x01,
	SOCKS5_ATYP_DOMAIN = 0x03,
	SOCKS5_ATYP_IPV6 = 0x04,
};

enum socks5_rep {
	SOCKS5_REP_SUCCEEDED = 0x00,
	SOCKS5_REP_GENERAL_FAILURE = 0x01,
	SOCKS5_REP_NOT_ALLOWED = 0x02,
	SOCKS5_REP_NET_UNREACH = 0x03,
	SOCKS5_REP_HOST_UNREACH = 0x04,
	SOCKS5_REP_CONN_REFUSED = 0x05,
	SOCKS5_REP_TTL_EXPIRED = 0x06,
	SOCKS5_REP_CMD_NOT_SUPPORTED = 0x07,
	SOCKS5_REP_ATYP_NOT_SUPPORTED = 0x08,
};

enum socks5_auth_status {
	SOCKS5_AUTH_SUCCESS = 0x00,
	SOCKS5_AUTH_FAILURE = 0x01,
};

enum socks5_status {
	SOCKS5_ERROR = -1,
	SOCKS5_MORE = 0,
	SOCKS5_DONE = 1,
};

/* Greeting: VER NMETHODS METHODS[NMETHODS] */
enum socks5_greeting_error {
	SOCKS5_GREETING_OK = 0,
	SOCKS5_GREETING_BAD_VERSION, /* not SOCKS5: close without a reply */
	SOCKS5_GREETING_NO_METHODS,  /* NMETHODS = 0: answer 0xFF */
};

struct socks5_greeting {
	uint8_t state;
	uint8_t nmethods;
	uint8_t seen;
	uint8_t error; /* enum socks5_greeting_error */
	uint8_t offers_no_auth;
	uint8_t offers_userpass;
	uint8_t offers_gssapi;
};

/* Username/password: VER ULEN UNAME PLEN PASSWD (RFC 1929), parsed by the
 * codec shared with pipo logins (shared/rfc1929.h): VER 0x01, and an empty
 * password is allowed. */
enum socks5_auth_error {
	SOCKS5_AUTH_OK = RFC1929_OK,
	SOCKS5_AUTH_BAD_VERSION = RFC1929_BAD_VERSION,
	SOCKS5_AUTH_EMPTY_USER = RFC1929_EMPTY_USER,
};

/* Request: VER CMD RSV ATYP DST.ADDR DST.PORT */
struct socks5_request {
	uint8_t state;
	uint8_t pos;
	uint8_t alen;
	uint8_t cmd;
	uint8_t atyp;
	uint8_t rep; /* on SOCKS5_ERROR: the reply code to send */
	uint16_t port;
	uint8_t addr[16]; /* IPv4 or IPv6 in network order */
	char host[256];   /* domain name, NUL-terminated */
	uint8_t port_hi;
};

void socks5_greeting_init(struct socks5_greeting *g);
int socks5_greeting_feed(struct socks5_greeting *g, const uint8_t *p, size_t n, size_t *used);

void socks5_auth_init(struct rfc1929 *a);
/* SOCKS5_MORE, SOCKS5_DONE or SOCKS5_ERROR (a->error says why). */
static inline int socks5_auth_feed(struct rfc1929 *a, const uint8_t *p, size_t n, size_t *used)
{
	return rfc1929_feed(a, p, n, used);
}

void socks5_request_init(struct socks5_request *r);
int socks5_request_feed(struct socks5_request *r, const uint8_t *p, size_t n, size_t *used);

/* The method for a complete greeting, in this order: GSS-API when offered
 * and configured (gssapi); username/password when offered and users
 * exist; no authentication when the anonymous policy (enum anon_policy:
 * auto, always, never) allows it — auto only while no users exist, GSS-API
 * is not configured, and the client is on loopback; otherwise 0xFF. */
uint8_t socks5_choose_method(const struct socks5_greeting *g, bool gssapi, bool users_exist,
                             uint8_t policy, bool client_loopback);
/* 127.0.0.0/8, ::1 and IPv4-mapped 127.0.0.0/8. */
bool socks5_is_loopback(const struct sockaddr *sa);

/* Encode a reply; bnd may be NULL (0.0.0.0:0).  Returns its length (10 or 22). */
#define SOCKS5_REPLY_MAX 22
size_t socks5_reply_encode(uint8_t out[SOCKS5_REPLY_MAX], uint8_t rep, const struct sockaddr *bnd);

/* The reply code for a connect(2) error (positive errno). */
uint8_t socks5_rep_from_errno(int err);
/* Of two failure codes, the more telling one (refused > host unreachable >
 * network unreachable > not allowed > TTL expired > general failure). */
uint8_t socks5_rep_worst(uint8_t a, uint8_t b);

#endif
