/*
 * pipo1: version 1 of the pipo administration protocol, the original one
 * (docs/pipo-protocol.txt, "Version 1").  Sans-I/O codec of its requests
 * for the server: fed byte slices of any size, bounded memory, no globals.
 *
 * A version-1 session begins with AUTH carrying VER 0x01 (the RFC 1929
 * layout, shared/rfc1929.h) and is answered VER STATUS with VER 0x01.
 * Then each request is TYPE(1) CMD(1) and a payload whose layout the
 * command alone defines (there is no length field); each response is
 * TYPE(1) CMD(1), echoed, then the command's answer.  Integers are in
 * network order.
 *
 * Since a request carries no length, a TYPE or CMD this codec does not
 * know cannot be skipped: the reader stops with PIPO1_ERROR and the
 * server closes the session.
 */
#ifndef SOCKS5D_PIPO1_H
#define SOCKS5D_PIPO1_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PIPO1_VERSION 0x01
#define PIPO1_MAX_NAME 255

enum pipo1_type {
	PIPO1_QUERY = 0x00,
	PIPO1_MODIFY = 0x01,
};

/* Queries: the request is TYPE CMD (and a str8 name for USER_CONNS). */
enum pipo1_query {
	PIPO1_Q_USERS = 0x00,           /* -> u8 n, n x (u8 len, name) */
	PIPO1_Q_HISTORIC_CONNS = 0x01,  /* -> u64 */
	PIPO1_Q_CURRENT_CONNS = 0x02,   /* -> u64 */
	PIPO1_Q_MAX_CONNS = 0x03,       /* -> u32 */
	PIPO1_Q_BYTES_SENT = 0x04,      /* -> u64 */
	PIPO1_Q_BYTES_RECEIVED = 0x05,  /* -> u64 */
	PIPO1_Q_USERS_CONNECTED = 0x06, /* -> u64 */
	PIPO1_Q_USER_COUNT = 0x07,      /* -> u8 */
	PIPO1_Q_BUFFER_SIZE = 0x08,     /* -> u32 */
	PIPO1_Q_SELECTOR_TIMEOUT = 0x09,/* -> u8 seconds */
	PIPO1_Q_CONN_TIMEOUT = 0x0a,    /* -> u8 seconds */
	PIPO1_Q_USER_CONNS = 0x0b,      /* u8 len, name -> u8 */
	/* The codes the original text also listed for the last two ("X'10'",
	 * "X'11'"): accepted as the same queries, echoed as received. */
	PIPO1_Q_CONN_TIMEOUT_ALT = 0x10,
	PIPO1_Q_USER_CONNS_ALT = 0x11,
};

/* Modifications: the response is TYPE CMD STATUS. */
enum pipo1_modify {
	PIPO1_M_ADD_USER = 0x00,         /* u8 len, name, u8 len, pass, u8 privilege */
	PIPO1_M_DEL_USER = 0x01,         /* u8 len, name */
	PIPO1_M_DISSECTORS = 0x02,       /* u8 action */
	PIPO1_M_IDLE_CLEANUP = 0x03,     /* u8 action */
	PIPO1_M_BUFFER_SIZE = 0x04,      /* u32 */
	PIPO1_M_SELECTOR_TIMEOUT = 0x05, /* u8 seconds */
	PIPO1_M_CONN_TIMEOUT = 0x06,     /* u8 seconds */
};

/* Modification statuses (their meaning depends on the command). */
enum pipo1_status {
	PIPO1_OK = 0x00,
	PIPO1_E_1 = 0x01,       /* add: name taken; del: no such user; sizes: unsupported */
	PIPO1_E_INVALID = 0x02, /* add, del: invalid parameter */
	PIPO1_E_SERVER = 0xff,
};

enum pipo1_result { PIPO1_NEED_MORE = 0, PIPO1_DONE = 1, PIPO1_ERROR = -1 };

/* A parsed request.  Names and passwords are NUL-terminated; ulen/plen
 * give their length (they may hold a NUL byte, which the server refuses). */
struct pipo1_request {
	uint8_t type, cmd;
	uint8_t ulen, plen;
	char user[PIPO1_MAX_NAME + 1];
	char pass[PIPO1_MAX_NAME + 1];
	uint8_t u8;   /* privilege, action or seconds */
	uint32_t u32; /* buffer size */
};

struct pipo1_reader {
	uint8_t state;
	uint8_t field; /* index in the command's layout */
	uint32_t pos;  /* bytes of the current field read */
	uint8_t num[4];
	struct pipo1_request req;
};

void pipo1_reader_init(struct pipo1_reader *r);
/* DONE: r->req holds a request (call again for the next one).  ERROR: an
 * unknown TYPE or CMD (r->req.type and r->req.cmd hold them); the stream
 * cannot be resynchronised.  *used is what was consumed. */
int pipo1_reader_feed(struct pipo1_reader *r, const uint8_t *p, size_t n, size_t *used);
/* Wipe the password of the last request. */
void pipo1_reader_wipe(struct pipo1_reader *r);

/* Is TYPE/CMD a request of version 1? */
bool pipo1_known(uint8_t type, uint8_t cmd);

/* Encode a request (for tests and clients); returns its length or 0 when
 * it does not fit or TYPE/CMD is unknown. */
size_t pipo1_request_encode(uint8_t *out, size_t cap, const struct pipo1_request *q);

#endif
