/*
 * rfc1929: sans-I/O codec of the username/password message of RFC 1929,
 *
 *   VER(1) ULEN(1) UNAME(ULEN) PLEN(1) PASSWD(PLEN)
 *
 * used twice: by SOCKS5 logins (VER 0x01, worker/socks5.h) and by pipo
 * administrator logins (the same layout with VER 0x02, admin/pipo.h).
 * Fed byte slices of any size, it keeps its own bounded state, consumes
 * only its message's bytes and returns RFC1929_MORE, RFC1929_DONE or
 * RFC1929_ERROR.  No I/O, no allocation, no globals: any thread may use
 * its own parser.
 */
#ifndef SOCKS5D_RFC1929_H
#define SOCKS5D_RFC1929_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define RFC1929_FIELD_MAX 255

enum rfc1929_status {
	RFC1929_ERROR = -1,
	RFC1929_MORE = 0,
	RFC1929_DONE = 1,
};

enum rfc1929_error {
	RFC1929_OK = 0,
	RFC1929_BAD_VERSION, /* VER is not the expected one (ver holds it) */
	RFC1929_EMPTY_USER,  /* ULEN = 0 */
	RFC1929_EMPTY_PASS,  /* PLEN = 0 where a password is required */
};

struct rfc1929 {
	uint8_t state;
	uint8_t want_ver;
	bool pass_required;
	uint8_t ver;   /* VER as received */
	uint8_t error; /* enum rfc1929_error, on RFC1929_ERROR */
	uint8_t ulen, plen, pos;
	char user[RFC1929_FIELD_MAX + 1]; /* NUL-terminated when done; may hold NULs (ulen) */
	char pass[RFC1929_FIELD_MAX + 1];
};

/* Expect VER version; pass_required makes PLEN 0 an error (RFC 1929 allows
 * an empty password). */
void rfc1929_init(struct rfc1929 *a, uint8_t version, bool pass_required);
int rfc1929_feed(struct rfc1929 *a, const uint8_t *p, size_t n, size_t *used);
/* Encode the message; returns its length, or 0 when a field is empty, over
 * 255 bytes, or out does not hold it. */
size_t rfc1929_encode(uint8_t *out, size_t cap, uint8_t version, const char *user,
                      const char *pass);

#endif
