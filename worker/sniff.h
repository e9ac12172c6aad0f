/*
 * sniff: clear-text credential dissectors for relayed sessions — HTTP/1.x
 * Basic authorization, POP3 (USER/PASS, AUTH PLAIN/LOGIN), IMAP (LOGIN,
 * AUTHENTICATE PLAIN/LOGIN), FTP (USER/PASS) and SMTP (AUTH PLAIN/LOGIN).
 *
 * Sans-I/O: the session feeds each direction's bytes as it reads them, in
 * slices of any size (one byte at a time works), and gets a callback for
 * every credential that the server accepted.  The protocol is recognised
 * from the traffic, never from the port: an HTTP/1 request line from the
 * client, or a server greeting (+OK, * OK, 220; FTP and SMTP told apart by
 * the client's first command).
 *
 * The state is one fixed-size allocation per session (sniff_state_size()
 * bytes, under 1 KiB) and nothing else is ever allocated.  sniff_feed()
 * returns SNIFF_DONE as soon as the session cannot carry clear-text
 * credentials any more (TLS, STARTTLS/STLS/AUTH TLS accepted, a successful
 * mail/FTP login, binary data, an unknown protocol, SNIFF_BUDGET bytes of
 * line-oriented traffic without progress); the caller then frees the state
 * and relays on without it.  Message bodies whose length is known (HTTP
 * Content-Length, chunks, IMAP literals) are skipped by counting, at a
 * constant cost per slice.
 *
 * Credentials are reported only when the server's answer says that they
 * worked (HTTP 2xx to that request, +OK, tagged OK, 230, 235).
 *
 * No globals; any thread may use its own struct sniff.
 */
#ifndef SOCKS5D_SNIFF_H
#define SOCKS5D_SNIFF_H

#include <stddef.h>
#include <stdint.h>

/* Longest user name or password kept (longer ones are not reported). */
#define SNIFF_FIELD_MAX 128
/* Bytes of line-oriented traffic allowed without progress (a complete HTTP
 * header section, a credential-bearing command) before giving up. */
#define SNIFF_BUDGET 65536u

enum sniff_proto {
	SNIFF_NONE = 0, /* not recognised yet */
	SNIFF_HTTP,
	SNIFF_POP3,
	SNIFF_IMAP,
	SNIFF_FTP,
	SNIFF_SMTP,
};

enum sniff_dir {
	SNIFF_UP = 0,   /* client to server */
	SNIFF_DOWN = 1, /* server to client */
};

enum sniff_status {
	SNIFF_MORE = 0, /* keep feeding */
	SNIFF_DONE = 1, /* nothing more to find: free the state */
};

/* A credential the server accepted; the pointers live until the next feed. */
struct sniff_cred {
	enum sniff_proto proto;
	const uint8_t *user;
	size_t ulen;
	const uint8_t *pass;
	size_t plen;
};

struct sniff;

typedef void sniff_emit_fn(void *arg, const struct sniff_cred *cred);

/* One zeroed state (calloc); NULL when out of memory. */
struct sniff *sniff_new(void);
void sniff_free(struct sniff *sn);
size_t sniff_state_size(void);

/* Feed the next bytes of one direction.  emit is called for each accepted
 * credential found in them (possibly several).  Once SNIFF_DONE was
 * returned, further feeds do nothing and return SNIFF_DONE. */
enum sniff_status sniff_feed(struct sniff *sn, enum sniff_dir dir, const uint8_t *p, size_t n,
                             sniff_emit_fn *emit, void *arg);

/* How many of the next bytes of direction dir the dissector would skip
 * without looking at them: the rest of a body or literal of known length
 * (0 when it must see the next byte).  The relay may move that many bytes
 * without feeding them, zero-copy, and report them with sniff_skip(). */
uint64_t sniff_skippable(const struct sniff *sn, enum sniff_dir dir);

/* n (at most sniff_skippable()) bytes of direction dir went by unseen. */
void sniff_skip(struct sniff *sn, enum sniff_dir dir, uint64_t n);

/* The protocol recognised so far (SNIFF_NONE while undecided). */
enum sniff_proto sniff_proto(const struct sniff *sn);
const char *sniff_proto_name(enum sniff_proto p);

/* Format one credential record (without newline):
 *   DATE \t PROXY-USER \t P \t PROTO \t DEST \t PORT \t USER \t PASSWORD
 * proxy_user NULL or "" prints "anonymous", any other is escaped with
 * log_escape like the credentials; dest is printed as given (the caller's
 * already sanitised destination).  Returns the length, or a
 * negative errno when the line does not fit. */
int sniff_format(char *out, size_t outlen, int64_t unix_seconds, const char *proxy_user,
                 const char *dest, uint16_t port, const struct sniff_cred *c);

#endif
