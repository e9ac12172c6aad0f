/*
 * rfc1961: the sans-I/O codec of the GSS-API method's messages (RFC 1961):
 *
 *   VER=1 MTYP LEN(2, network order) TOKEN[LEN]
 *
 * MTYP 1 carries context-establishment tokens, 2 the protection-level
 * message, 3 an encapsulated (gss_wrap) piece of the stream; the failure
 * message is the two bytes 01 FF with no length and no token.
 *
 * The parser is fed byte slices of any size (one at a time works), keeps
 * its own bounded state and takes only the bytes of its message.  The
 * token goes into a buffer the parser grows as its bytes arrive (never
 * ahead of them, at most RFC1961_TOKEN_MAX bytes) and reuses for the next
 * message.  No I/O, no globals.
 */
#ifndef SOCKS5D_RFC1961_H
#define SOCKS5D_RFC1961_H

#include <stddef.h>
#include <stdint.h>

#define RFC1961_VERSION 0x01
#define RFC1961_TOKEN_MAX 65535

enum rfc1961_mtyp {
	RFC1961_AUTH = 0x01,
	RFC1961_PROTECTION = 0x02,
	RFC1961_ENCAPSULATED = 0x03,
	RFC1961_FAILURE = 0xff,
};

enum rfc1961_status {
	RFC1961_ERROR = -1,
	RFC1961_MORE = 0,
	RFC1961_DONE = 1, /* a whole message: mtyp, len, token */
};

enum rfc1961_error {
	RFC1961_OK = 0,
	RFC1961_BAD_VERSION,  /* VER is not 1 */
	RFC1961_BAD_TYPE,     /* not the message type expected here */
	RFC1961_EMPTY_TOKEN,  /* LEN 0: no mechanism token is empty */
	RFC1961_NO_MEMORY,
};

struct rfc1961_msg {
	uint8_t expect; /* the MTYP this state takes (a failure message is always taken) */
	uint8_t have;   /* header bytes read, 0..4 */
	uint8_t hdr[4];
	uint8_t mtyp;
	uint8_t error; /* enum rfc1961_error */
	uint32_t len, got;
	uint8_t *token; /* len bytes once DONE; owned by the parser */
	uint32_t cap;
};

/* A parser expecting messages of type expect. */
void rfc1961_init(struct rfc1961_msg *m, uint8_t expect);
/* Expect another type from the next message on (the buffer is kept). */
void rfc1961_expect(struct rfc1961_msg *m, uint8_t expect);
/* Feed n bytes; *used says how many were taken.  After DONE, the next
 * feed starts the next message.  After ERROR, m->error says why and the
 * parser takes nothing more. */
int rfc1961_feed(struct rfc1961_msg *m, const uint8_t *in, size_t n, size_t *used);
void rfc1961_free(struct rfc1961_msg *m);

/* The 4-byte header of a message with a token of len bytes (1..65535). */
void rfc1961_header(uint8_t out[4], uint8_t mtyp, size_t len);

#endif
