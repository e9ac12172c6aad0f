/*
 * sniff: the credential dissectors.  See sniff.h for the contract.
 *
 * Layout: a per-direction line accumulator (the first bytes of the current
 * line, plus its last TAIL bytes so that "{n}" or "chunked" at the end of a
 * long line is still seen), a skip count for bodies and literals, and the
 * protocol state.  Every protocol here is line-oriented up to the point
 * where credentials could appear; each complete line goes to the
 * protocol's handler for its direction.
 *
 * Ordering: the session feeds bytes as it reads them.  A client reacts to
 * a server line only after the proxy read and forwarded it, so a server
 * continuation ("+ ", "334 ") is always fed before the client line that
 * answers it; the handlers rely on that.
 */
#include "sniff.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../shared/log.h"

#define CLINE_MAX 320 /* client line kept: "Authorization: Basic <b64>", AUTH PLAIN <b64> */
#define SLINE_MAX 64  /* server line kept: status codes, tags, framing headers */
#define TAIL 16
#define QMAX 16       /* outstanding (pipelined) requests or commands tracked */
#define TAG_MAX 32
/* A literal or chunk larger than this before any login is not worth
 * following: skipping it is cheap, but it signals bulk data. */
#define SKIP_MAX_PREAUTH (1u << 20)

enum mode {
	M_LINE = 0,
	M_SKIP,    /* skip d->skip bytes, then back to lines */
	M_CAPTURE, /* IMAP literal into the user or password field */
	M_IGNORE,  /* the rest of this direction is opaque */
};

/* HTTP phases, per direction */
enum hphase {
	H_START = 0, /* request or status line */
	H_HEADERS,
	H_CHUNK_SIZE,
	H_CHUNK_END, /* CRLF after chunk data */
	H_TRAILERS,
};

/* HTTP request queue flags */
#define RQ_HEAD 1u
#define RQ_CONNECT 2u
#define RQ_CRED 4u

/* Commands awaiting a reply (POP3, FTP, SMTP) */
enum cmd {
	C_OTHER = 0,
	C_GREETING, /* the server speaks first: its greeting answers no command */
	C_MULTI,    /* POP3: +OK starts a multi-line answer */
	C_USER,
	C_PASS,
	C_ACCT,
	C_AUTH,     /* SASL exchange */
	C_TLS,      /* STLS, STARTTLS, AUTH TLS */
	C_DATA,     /* SMTP DATA: 354 starts bulk data */
};

enum sasl_mech { SASL_NONE = 0, SASL_PLAIN, SASL_LOGIN };

/* IMAP commands whose tagged answer matters */
enum imap_cmd { IC_OTHER = 0, IC_LOGIN, IC_AUTH, IC_STARTTLS };

struct dir {
	uint8_t mode;    /* enum mode */
	uint8_t phase;   /* enum hphase (HTTP) */
	uint8_t capture; /* M_CAPTURE: 0 user, 1 password */
	uint8_t tlen;
	uint16_t len;    /* bytes kept of the current line */
	uint32_t total;  /* bytes of the current line */
	uint64_t skip;
	/* HTTP framing of the current message */
	uint64_t clen;
	uint16_t status;
	uint8_t have_clen, chunked, bad;
	uint8_t tail[TAIL];
};

struct sniff {
	uint8_t proto;   /* enum sniff_proto */
	uint8_t ambig;   /* 220 greeting: FTP or SMTP not decided yet */
	uint8_t done;
	uint32_t budget;
	sniff_emit_fn *emit;
	void *arg;

	struct dir d[2];
	uint8_t cline[CLINE_MAX];
	uint8_t sline[SLINE_MAX];

	/* the candidate credential */
	uint8_t ulen, plen, have_user, have_pass;
	uint8_t user[SNIFF_FIELD_MAX];
	uint8_t pass[SNIFF_FIELD_MAX];

	/* queue of outstanding requests/commands */
	uint8_t q[QMAX];
	uint8_t qhead, qlen;

	/* HTTP: references to the credential slot from queued requests */
	uint8_t cred_refs;
	uint8_t req_flags; /* request being parsed */

	/* SASL */
	uint8_t sasl;      /* enum sasl_mech: exchange in progress */
	uint8_t sasl_step; /* LOGIN: 0 user next, 1 password next */
	uint8_t sasl_cont; /* the server asked for the next client line */

	/* reply codes (FTP, SMTP): the code of a multi-line reply in progress */
	uint16_t multi_code;
	uint8_t pop_multi; /* POP3: inside a multi-line answer */

	/* IMAP */
	uint8_t imap_cont; /* the client command continues after a literal */
	uint8_t imap_cmd;  /* enum imap_cmd of the command being read */
	uint8_t imap_argi;
	uint8_t imap_bad;  /* the command being read cannot be used */
	uint8_t pend_cmd;  /* enum imap_cmd awaiting its tagged answer */
	uint8_t tag_len, pend_tag_len;
	uint8_t tag[TAG_MAX];
	uint8_t pend_tag[TAG_MAX];
};

/* A complete line: the kept prefix and the tail, CR LF removed. */
struct line {
	const uint8_t *p;
	size_t len;   /* kept bytes */
	size_t total; /* real length */
	const uint8_t *tail;
	size_t tlen;
};

static const char *const proto_names[] = {"-", "HTTP", "POP3", "IMAP", "FTP", "SMTP"};

struct sniff *sniff_new(void)
{
	struct sniff *sn = calloc(1, sizeof *sn);
	if (sn)
		sn->budget = SNIFF_BUDGET;
	return sn;
}

void sniff_free(struct sniff *sn)
{
	if (sn)
		explicit_bzero(sn, sizeof *sn); /* it may hold a password */
	free(sn);
}

size_t sniff_state_size(void)
{
	return sizeof(struct sniff);
}

enum sniff_proto sniff_proto(const struct sniff *sn)
{
	return (enum sniff_proto)sn->proto;
}

const char *sniff_proto_name(enum sniff_proto p)
{
	return (unsigned)p < sizeof proto_names / sizeof proto_names[0] ? proto_names[p] : "-";
}

/* ---- small text helpers ------------------------------------------------- */

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Does p (n bytes) start with the word w, case-insensitively, followed by
 * the end, a space, or (when allowed) anything? */
static bool word_is(const uint8_t *p, size_t n, const char *w)
{
	size_t k = strlen(w);
	if (n < k)
		return false;
	for (size_t i = 0; i < k; i++)
		if (lower(p[i]) != lower((unsigned char)w[i]))
			return false;
	return n == k || p[k] == ' ';
}

static bool prefix_ci(const uint8_t *p, size_t n, const char *w)
{
	size_t k = strlen(w);
	if (n < k)
		return false;
	for (size_t i = 0; i < k; i++)
		if (lower(p[i]) != lower((unsigned char)w[i]))
			return false;
	return true;
}

static bool suffix_ci(const uint8_t *p, size_t n, const char *w)
{
	size_t k = strlen(w);
	return n >= k && prefix_ci(p + n - k, k, w);
}

/* Argument after the verb: the rest of the line after one space. */
static void rest_after(const struct line *l, size_t verb, const uint8_t **a, size_t *alen)
{
	if (l->len > verb) {
		*a = l->p + verb + 1;
		*alen = l->len - verb - 1;
	} else {
		*a = l->p + l->len;
		*alen = 0;
	}
}

static int b64_val(uint8_t c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decode base64 (padding optional, nothing else allowed) into out, which
 * may be in itself (out never overtakes in).  Returns the length or -1. */
static long b64_decode(uint8_t *out, size_t outcap, const uint8_t *in, size_t n)
{
	while (n > 0 && in[n - 1] == '=')
		n--;
	if (n % 4 == 1)
		return -1;
	uint32_t acc = 0;
	int bits = 0;
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		int v = b64_val(in[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= outcap)
				return -1;
			out[o++] = (uint8_t)(acc >> bits);
		}
	}
	return (long)o;
}

static bool parse_u64(const uint8_t *p, size_t n, int base, uint64_t *out)
{
	uint64_t v = 0;
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		int d;
		uint8_t c = p[i];
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (base == 16 && lower(c) >= 'a' && lower(c) <= 'f')
			d = lower(c) - 'a' + 10;
		else
			return false;
		if (v > (UINT64_MAX - (uint64_t)d) / (uint64_t)base)
			return false;
		v = v * (uint64_t)base + (uint64_t)d;
	}
	*out = v;
	return true;
}

static const uint8_t *trim(const uint8_t *p, size_t *n)
{
	while (*n && (*p == ' ' || *p == '\t')) {
		p++;
		(*n)--;
	}
	while (*n && (p[*n - 1] == ' ' || p[*n - 1] == '\t'))
		(*n)--;
	return p;
}

/* ---- the candidate credential ------------------------------------------- */

static bool set_field(uint8_t *dst, uint8_t *dlen, uint8_t *have, const uint8_t *p, size_t n)
{
	if (n > SNIFF_FIELD_MAX) {
		*have = 0;
		return false;
	}
	memcpy(dst, p, n);
	*dlen = (uint8_t)n;
	*have = 1;
	return true;
}

static void clear_cred(struct sniff *sn)
{
	sn->have_user = sn->have_pass = 0;
	sn->ulen = sn->plen = 0;
}

static void stop(struct sniff *sn)
{
	sn->done = 1;
}

static void emit(struct sniff *sn)
{
	if (!sn->have_user || !sn->have_pass)
		return;
	struct sniff_cred c = {(enum sniff_proto)sn->proto, sn->user, sn->ulen, sn->pass, sn->plen};
	if (sn->emit)
		sn->emit(sn->arg, &c);
}

/* authzid \0 authcid \0 passwd (RFC 4616) */
static bool sasl_plain(struct sniff *sn, uint8_t *b64, size_t n)
{
	long m = b64_decode(b64, n, b64, n);
	if (m < 0)
		return false;
	uint8_t *p = b64;
	uint8_t *z1 = memchr(p, 0, (size_t)m);
	if (!z1)
		return false;
	uint8_t *u = z1 + 1;
	uint8_t *z2 = memchr(u, 0, (size_t)(p + m - u));
	if (!z2 || z2 == u || memchr(z2 + 1, 0, (size_t)(p + m - z2 - 1)))
		return false;
	return set_field(sn->user, &sn->ulen, &sn->have_user, u, (size_t)(z2 - u)) &&
	       set_field(sn->pass, &sn->plen, &sn->have_pass, z2 + 1, (size_t)(p + m - z2 - 1));
}

static bool sasl_field(struct sniff *sn, uint8_t *b64, size_t n, bool pass)
{
	long m = b64_decode(b64, n, b64, n);
	if (m < 0 || memchr(b64, 0, (size_t)m))
		return false;
	return pass ? set_field(sn->pass, &sn->plen, &sn->have_pass, b64, (size_t)m)
	            : set_field(sn->user, &sn->ulen, &sn->have_user, b64, (size_t)m);
}

/* The mechanism and optional initial response after AUTH/AUTHENTICATE. */
static void sasl_start(struct sniff *sn, const struct line *l, size_t at)
{
	const uint8_t *a = l->p + at;
	size_t n = l->len > at ? l->len - at : 0;
	clear_cred(sn);
	sn->sasl = SASL_NONE;
	sn->sasl_cont = 0;
	sn->sasl_step = 0;
	if (l->total != l->len)
		return;
	uint8_t *ir = memchr(a, ' ', n);
	size_t mlen = ir ? (size_t)(ir - a) : n;
	uint8_t *irp = ir ? ir + 1 : NULL;
	size_t irn = ir ? n - mlen - 1 : 0;
	bool empty = irp && irn == 1 && irp[0] == '='; /* RFC 4954: "=" is an empty response */
	if (mlen == 5 && prefix_ci(a, 5, "PLAIN")) {
		if (!irp)
			sn->sasl = SASL_PLAIN;
		else if (!empty)
			(void)sasl_plain(sn, irp, irn);
	} else if (mlen == 5 && prefix_ci(a, 5, "LOGIN")) {
		sn->sasl = SASL_LOGIN;
		if (irp && !empty) {
			(void)sasl_field(sn, irp, irn, false);
			sn->sasl_step = 1;
		}
	}
}

/* A client line answering a server continuation.  With no exchange we
 * can follow (an unknown mechanism, an undecodable initial response), the
 * line is still SASL data, not a command: it is consumed here. */
static void sasl_client_line(struct sniff *sn, const struct line *l)
{
	uint8_t *p = (uint8_t *)l->p; /* the kept line is ours to decode in place */
	sn->sasl_cont = 0;
	if (sn->sasl == SASL_NONE)
		return;
	if (l->total != l->len || (l->len == 1 && p[0] == '*')) { /* "*" cancels */
		sn->sasl = SASL_NONE;
		clear_cred(sn);
		return;
	}
	if (sn->sasl == SASL_PLAIN) {
		(void)sasl_plain(sn, p, l->len);
		sn->sasl = SASL_NONE;
	} else if (sn->sasl == SASL_LOGIN) {
		(void)sasl_field(sn, p, l->len, sn->sasl_step == 1);
		if (sn->sasl_step++ == 1)
			sn->sasl = SASL_NONE;
	}
}

static void sasl_reset(struct sniff *sn)
{
	sn->sasl = SASL_NONE;
	sn->sasl_cont = 0;
}

/* ---- command queue ------------------------------------------------------ */

static bool q_push(struct sniff *sn, uint8_t v)
{
	if (sn->qlen == QMAX) {
		stop(sn); /* more in flight than we can pair with answers */
		return false;
	}
	sn->q[(sn->qhead + sn->qlen) % QMAX] = v;
	sn->qlen++;
	return true;
}

static int q_peek(const struct sniff *sn)
{
	return sn->qlen ? sn->q[sn->qhead] : -1;
}

static int q_pop(struct sniff *sn)
{
	if (!sn->qlen)
		return -1;
	int v = sn->q[sn->qhead];
	sn->qhead = (uint8_t)((sn->qhead + 1) % QMAX);
	sn->qlen--;
	return v;
}

/* ---- HTTP/1.x ----------------------------------------------------------- */

static bool http_request_line(const struct line *l)
{
	size_t i = 0;
	while (i < l->len && l->p[i] >= 'A' && l->p[i] <= 'Z')
		i++;
	if (i == 0 || i > 16 || i >= l->len || l->p[i] != ' ')
		return false;
	/* " HTTP/1.0" or " HTTP/1.1" ends the line (the tail has it even when
	 * the target was too long to keep). */
	const uint8_t *t = l->total == l->len ? l->p : l->tail;
	size_t tn = l->total == l->len ? l->len : l->tlen;
	return tn >= 9 && memcmp(t + tn - 9, " HTTP/1.", 8) == 0 &&
	       (t[tn - 1] == '0' || t[tn - 1] == '1');
}

/* Authorization: Basic base64(user ":" pass) */
static void http_basic(struct sniff *sn, uint8_t *v, size_t n)
{
	v = (uint8_t *)trim(v, &n);
	if (n < 6 || !prefix_ci(v, 5, "Basic") || (v[5] != ' ' && v[5] != '\t'))
		return;
	v += 6;
	n -= 6;
	v = (uint8_t *)trim(v, &n);
	long m = b64_decode(v, n, v, n);
	if (m < 0)
		return;
	uint8_t *colon = memchr(v, ':', (size_t)m);
	if (!colon)
		return;
	size_t ul = (size_t)(colon - v), pl = (size_t)m - ul - 1;
	if (ul > SNIFF_FIELD_MAX || pl > SNIFF_FIELD_MAX)
		return;
	if (sn->cred_refs) {
		/* One slot: a pipelined request with the same credential shares
		 * it; a different one while the first waits is not tracked. */
		if (ul == sn->ulen && pl == sn->plen && !memcmp(v, sn->user, ul) &&
		    !memcmp(colon + 1, sn->pass, pl))
			sn->req_flags |= RQ_CRED;
		return;
	}
	set_field(sn->user, &sn->ulen, &sn->have_user, v, ul);
	set_field(sn->pass, &sn->plen, &sn->have_pass, colon + 1, pl);
	sn->req_flags |= RQ_CRED;
}

/* A header line of either direction: the framing headers, and the
 * Authorization header of requests. */
static void http_header(struct sniff *sn, enum sniff_dir dir, const struct line *l)
{
	struct dir *d = &sn->d[dir];
	uint8_t *colon = memchr(l->p, ':', l->len);
	if (!colon)
		return; /* obs-fold or junk: nothing we use */
	size_t nlen = (size_t)(colon - l->p);
	uint8_t *v = colon + 1;
	size_t vn = l->len - nlen - 1;
	if (nlen == 13 && prefix_ci(l->p, 13, "authorization")) {
		if (dir == SNIFF_UP && l->total == l->len && !(sn->req_flags & RQ_CRED))
			http_basic(sn, v, vn);
	} else if (nlen == 14 && prefix_ci(l->p, 14, "content-length")) {
		uint64_t x = 0;
		const uint8_t *t = trim(v, &vn);
		if (l->total != l->len || !parse_u64(t, vn, 10, &x) ||
		    (d->have_clen && d->clen != x))
			d->bad = 1;
		d->clen = x;
		d->have_clen = 1;
	} else if (nlen == 17 && prefix_ci(l->p, 17, "transfer-encoding")) {
		const uint8_t *t = l->total == l->len ? v : l->tail;
		size_t tn = l->total == l->len ? vn : l->tlen;
		t = trim(t, &tn);
		/* chunked is the final coding when present at all */
		d->chunked = suffix_ci(t, tn, "chunked");
		if (!d->chunked)
			d->bad = 1; /* any other coding: the length is unknown */
	}
}

static void http_body(struct sniff *sn, enum sniff_dir dir, bool none)
{
	struct dir *d = &sn->d[dir];
	d->phase = H_START;
	if (none)
		return;
	if (d->chunked) {
		d->phase = H_CHUNK_SIZE;
	} else if (d->have_clen && d->clen > 0) {
		d->skip = d->clen;
		d->mode = M_SKIP;
	}
}

static void http_response_end(struct sniff *sn)
{
	struct dir *d = &sn->d[SNIFF_DOWN];
	uint16_t st = d->status;
	if (st >= 100 && st < 200) {
		if (st == 101)
			stop(sn); /* another protocol follows */
		d->phase = H_START;
		return;
	}
	int rq = q_pop(sn);
	if (rq < 0) {
		stop(sn);
		return;
	}
	if (rq & RQ_CRED) {
		if (st >= 200 && st < 300)
			emit(sn);
		if (--sn->cred_refs == 0)
			clear_cred(sn);
	}
	if ((rq & RQ_CONNECT) && st >= 200 && st < 300) {
		stop(sn); /* a tunnel follows */
		return;
	}
	if (d->bad) {
		stop(sn);
		return;
	}
	bool none = (rq & RQ_HEAD) || st == 204 || st == 304;
	if (!none && !d->chunked && !d->have_clen) {
		/* Delimited by the close: no further response can follow. */
		stop(sn);
		return;
	}
	http_body(sn, SNIFF_DOWN, none);
}

static void http_line(struct sniff *sn, enum sniff_dir dir, const struct line *l)
{
	struct dir *d = &sn->d[dir];
	switch (d->phase) {
	case H_START:
		if (l->total == 0)
			return; /* RFC 9112 2.2: empty lines before a message are ignored */
		d->have_clen = d->chunked = d->bad = 0;
		d->clen = 0;
		if (dir == SNIFF_UP) {
			if (!http_request_line(l)) {
				stop(sn); /* HTTP/2 preface, a tunnel, or anything else */
				return;
			}
			sn->req_flags = 0;
			if (word_is(l->p, l->len, "HEAD"))
				sn->req_flags |= RQ_HEAD;
			else if (word_is(l->p, l->len, "CONNECT"))
				sn->req_flags |= RQ_CONNECT;
		} else {
			uint64_t st;
			if (l->len < 12 || memcmp(l->p, "HTTP/1.", 7) != 0 || l->p[8] != ' ' ||
			    !parse_u64(l->p + 9, 3, 10, &st) || (l->len > 12 && l->p[12] != ' ') ||
			    sn->qlen == 0) {
				stop(sn);
				return;
			}
			d->status = (uint16_t)st;
		}
		d->phase = H_HEADERS;
		return;
	case H_HEADERS:
		if (l->total > 0) {
			http_header(sn, dir, l);
			return;
		}
		sn->budget = SNIFF_BUDGET; /* a whole header section: progress */
		if (dir == SNIFF_DOWN) {
			http_response_end(sn);
			return;
		}
		if (d->bad) {
			stop(sn);
			return;
		}
		if (!q_push(sn, sn->req_flags))
			return;
		if (sn->req_flags & RQ_CRED)
			sn->cred_refs++;
		http_body(sn, dir, false);
		return;
	case H_CHUNK_SIZE: {
		size_t n = 0;
		while (n < l->len && l->p[n] != ';' && l->p[n] != ' ' && l->p[n] != '\t')
			n++;
		uint64_t sz;
		if (l->total != l->len && n == l->len) {
			stop(sn);
			return;
		}
		if (!parse_u64(l->p, n, 16, &sz)) {
			stop(sn);
			return;
		}
		if (sz == 0) {
			d->phase = H_TRAILERS;
		} else {
			d->phase = H_CHUNK_END;
			d->skip = sz;
			d->mode = M_SKIP;
		}
		return;
	}
	case H_CHUNK_END:
		if (l->total != 0)
			stop(sn);
		d->phase = H_CHUNK_SIZE;
		return;
	case H_TRAILERS:
		if (l->total == 0)
			d->phase = H_START;
		return;
	}
}

/* ---- POP3 --------------------------------------------------------------- */

static void pop3_client(struct sniff *sn, const struct line *l)
{
	if (sn->sasl_cont) {
		sasl_client_line(sn, l);
		return;
	}
	const uint8_t *a;
	size_t an;
	uint8_t c = C_OTHER;
	if (word_is(l->p, l->len, "USER")) {
		rest_after(l, 4, &a, &an);
		sn->have_pass = 0;
		if (l->total == l->len)
			set_field(sn->user, &sn->ulen, &sn->have_user, a, an);
		else
			sn->have_user = 0;
		c = C_USER;
		sn->budget = SNIFF_BUDGET;
	} else if (word_is(l->p, l->len, "PASS")) {
		rest_after(l, 4, &a, &an);
		if (l->total == l->len)
			set_field(sn->pass, &sn->plen, &sn->have_pass, a, an);
		else
			sn->have_pass = 0;
		c = C_PASS;
		sn->budget = SNIFF_BUDGET;
	} else if (word_is(l->p, l->len, "AUTH")) {
		if (l->len > 5) {
			sasl_start(sn, l, 5);
			c = C_AUTH;
		} else {
			c = C_MULTI; /* the list of mechanisms */
		}
		sn->budget = SNIFF_BUDGET;
	} else if (word_is(l->p, l->len, "STLS")) {
		c = C_TLS;
	} else if (word_is(l->p, l->len, "CAPA") || word_is(l->p, l->len, "RETR") ||
	           word_is(l->p, l->len, "TOP") ||
	           ((word_is(l->p, l->len, "LIST") || word_is(l->p, l->len, "UIDL")) &&
	            l->len == 4)) {
		c = C_MULTI;
	}
	(void)q_push(sn, c);
}

static void pop3_server(struct sniff *sn, const struct line *l)
{
	if (sn->pop_multi) {
		if (l->len == 1 && l->p[0] == '.' && l->total == 1)
			sn->pop_multi = 0;
		return;
	}
	bool ok = prefix_ci(l->p, l->len, "+OK");
	bool err = prefix_ci(l->p, l->len, "-ERR");
	if (!ok && !err) {
		if (l->len >= 1 && l->p[0] == '+' && (l->len == 1 || l->p[1] == ' ') &&
		    q_peek(sn) == C_AUTH) {
			sn->sasl_cont = 1;
			return;
		}
		stop(sn); /* not POP3 */
		return;
	}
	int c = q_pop(sn);
	switch (c) {
	case C_USER:
		if (err)
			clear_cred(sn);
		break;
	case C_PASS:
	case C_AUTH:
		sasl_reset(sn);
		if (ok) {
			emit(sn);
			stop(sn); /* logged in: no further credentials */
		} else {
			clear_cred(sn);
		}
		break;
	case C_TLS:
		if (ok)
			stop(sn);
		break;
	case C_MULTI:
		if (ok)
			sn->pop_multi = 1;
		break;
	case -1:
		stop(sn); /* an answer to nothing */
		break;
	default:
		break;
	}
}

/* ---- IMAP --------------------------------------------------------------- */

/* An astring argument of LOGIN: atom or quoted string.  Returns the
 * position after it, or 0 when malformed. */
static size_t imap_astring(struct sniff *sn, const uint8_t *p, size_t i, size_t n, int argi)
{
	uint8_t buf[SNIFF_FIELD_MAX];
	size_t o = 0;
	bool ok = true;
	if (p[i] == '"') {
		for (i++; i < n && p[i] != '"'; i++) {
			if (p[i] == '\\' && i + 1 < n)
				i++;
			if (o < sizeof buf)
				buf[o++] = p[i];
			else
				ok = false;
		}
		if (i >= n)
			return 0;
		i++;
	} else {
		for (; i < n && p[i] != ' '; i++) {
			if (p[i] == '(' || p[i] == ')' || p[i] == '{' || p[i] == '"')
				return 0;
			if (o < sizeof buf)
				buf[o++] = p[i];
			else
				ok = false;
		}
	}
	if (!ok)
		sn->imap_bad = 1;
	else if (argi == 0)
		set_field(sn->user, &sn->ulen, &sn->have_user, buf, o);
	else if (argi == 1)
		set_field(sn->pass, &sn->plen, &sn->have_pass, buf, o);
	return i;
}

/* "{n}" or "{n+}" at the end of the line: the length of the literal that
 * follows, or -1. */
static int64_t imap_literal(const uint8_t *t, size_t n)
{
	if (n < 3 || t[n - 1] != '}')
		return -1;
	size_t e = n - 1;
	if (t[e - 1] == '+')
		e--;
	size_t b = e;
	while (b > 0 && t[b - 1] >= '0' && t[b - 1] <= '9')
		b--;
	uint64_t v;
	if (b == 0 || t[b - 1] != '{' || e - b > 12 || !parse_u64(t + b, e - b, 10, &v))
		return -1;
	return (int64_t)v;
}

static void imap_literal_follows(struct sniff *sn, enum sniff_dir dir, const struct line *l,
                                 bool capture)
{
	const uint8_t *t = l->total == l->len ? l->p : l->tail;
	size_t tn = l->total == l->len ? l->len : l->tlen;
	int64_t lit = imap_literal(t, tn);
	struct dir *d = &sn->d[dir];
	if (dir == SNIFF_UP)
		sn->imap_cont = lit >= 0;
	if (lit <= 0)
		return;
	if ((uint64_t)lit > SKIP_MAX_PREAUTH) {
		stop(sn);
		return;
	}
	d->skip = (uint64_t)lit;
	d->mode = M_SKIP;
	if (capture && sn->imap_argi < 2 && lit <= SNIFF_FIELD_MAX) {
		d->mode = M_CAPTURE;
		d->capture = sn->imap_argi;
		if (sn->imap_argi == 0) {
			sn->ulen = 0;
			sn->have_user = 0;
		} else {
			sn->plen = 0;
			sn->have_pass = 0;
		}
	}
}

static void imap_command_done(struct sniff *sn)
{
	if (sn->tag_len == 0 || sn->imap_cmd == IC_OTHER)
		return;
	/* A login we cannot report still ends the inspection when it works. */
	if (sn->imap_bad || (sn->imap_cmd == IC_LOGIN && sn->imap_argi != 2))
		clear_cred(sn);
	sn->pend_cmd = sn->imap_cmd;
	memcpy(sn->pend_tag, sn->tag, sn->tag_len);
	sn->pend_tag_len = sn->tag_len;
}

static void imap_client(struct sniff *sn, const struct line *l)
{
	if (sn->sasl_cont && !sn->imap_cont) {
		sasl_client_line(sn, l);
		return;
	}
	const uint8_t *p = l->p;
	size_t n = l->len, i = 0;
	bool full = l->total == l->len;
	if (!sn->imap_cont) {
		sn->imap_cmd = IC_OTHER;
		sn->imap_argi = 0;
		sn->imap_bad = 0;
		sn->tag_len = 0;
		while (i < n && p[i] != ' ')
			i++;
		if (i == 0 || i > TAG_MAX || i >= n) {
			imap_literal_follows(sn, SNIFF_UP, l, false);
			return;
		}
		memcpy(sn->tag, p, i);
		sn->tag_len = (uint8_t)i;
		i++;
		const uint8_t *c = p + i;
		size_t cn = n - i;
		if (word_is(c, cn, "LOGIN")) {
			sn->imap_cmd = IC_LOGIN;
			clear_cred(sn);
			sasl_reset(sn);
			sn->budget = SNIFF_BUDGET;
			i += 5;
		} else if (word_is(c, cn, "AUTHENTICATE")) {
			sn->imap_cmd = IC_AUTH;
			sn->budget = SNIFF_BUDGET;
			if (cn > 13 && full)
				sasl_start(sn, l, i + 13);
			else
				sn->imap_bad = 1;
			imap_command_done(sn);
			return;
		} else if (word_is(c, cn, "STARTTLS")) {
			sn->imap_cmd = IC_STARTTLS;
			imap_command_done(sn);
			return;
		}
	}
	if (sn->imap_cmd == IC_LOGIN && !full)
		sn->imap_bad = 1;
	if (sn->imap_cmd == IC_LOGIN && !sn->imap_bad) {
		/* astrings up to the end or up to a trailing literal */
		while (i < n && sn->imap_argi < 3) {
			if (p[i] == ' ') {
				i++;
				continue;
			}
			if (p[i] == '{')
				break;
			size_t next = imap_astring(sn, p, i, n, sn->imap_argi);
			if (next == 0) {
				sn->imap_bad = 1;
				break;
			}
			sn->imap_argi++;
			i = next;
		}
	}
	imap_literal_follows(sn, SNIFF_UP, l, sn->imap_cmd == IC_LOGIN && !sn->imap_bad);
	if (sn->done)
		return;
	if (sn->imap_cont) {
		if (sn->d[SNIFF_UP].mode == M_SKIP && sn->imap_cmd == IC_LOGIN)
			sn->imap_bad = 1; /* a literal too long to keep */
		if (sn->imap_cmd == IC_LOGIN)
			sn->imap_argi++;
		return;
	}
	imap_command_done(sn);
}

static void imap_server(struct sniff *sn, const struct line *l)
{
	const uint8_t *p = l->p;
	size_t n = l->len;
	if (n >= 1 && p[0] == '+' && (n == 1 || p[1] == ' ')) {
		if (sn->pend_cmd == IC_AUTH)
			sn->sasl_cont = 1;
		return;
	}
	if (n >= 2 && p[0] == '*' && p[1] == ' ') {
		imap_literal_follows(sn, SNIFF_DOWN, l, false);
		return;
	}
	size_t i = 0;
	while (i < n && p[i] != ' ')
		i++;
	if (!sn->pend_cmd || i >= n || i != sn->pend_tag_len || memcmp(p, sn->pend_tag, i) != 0) {
		imap_literal_follows(sn, SNIFF_DOWN, l, false);
		return;
	}
	bool ok = word_is(p + i + 1, n - i - 1, "OK");
	uint8_t cmd = sn->pend_cmd;
	sn->pend_cmd = IC_OTHER;
	sasl_reset(sn);
	if (!ok) {
		if (cmd != IC_STARTTLS)
			clear_cred(sn);
		return;
	}
	if (cmd != IC_STARTTLS)
		emit(sn);
	stop(sn); /* logged in, or TLS follows */
}

/* ---- FTP and SMTP (three-digit replies) ---------------------------------- */

static bool is_ftp_verb(const uint8_t *p, size_t n)
{
	static const char *const v[] = {"USER", "PASS", "ACCT", "AUTH", "FEAT", "SYST", "OPTS",
	                                "PBSZ", "PROT", "CLNT", "SITE", "PWD",  "TYPE"};
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
		if (word_is(p, n, v[i]))
			return true;
	return false;
}

static void reply_client(struct sniff *sn, const struct line *l)
{
	if (sn->sasl_cont) {
		sasl_client_line(sn, l);
		return;
	}
	if (sn->ambig) {
		if (word_is(l->p, l->len, "EHLO") || word_is(l->p, l->len, "HELO") ||
		    word_is(l->p, l->len, "LHLO")) {
			sn->proto = SNIFF_SMTP;
			sn->ambig = 0;
		} else if (is_ftp_verb(l->p, l->len)) {
			sn->proto = SNIFF_FTP;
			sn->ambig = 0;
		}
	}
	const uint8_t *a;
	size_t an;
	uint8_t c = C_OTHER;
	bool full = l->total == l->len;
	if (sn->proto == SNIFF_FTP && !sn->ambig) {
		if (word_is(l->p, l->len, "USER")) {
			rest_after(l, 4, &a, &an);
			clear_cred(sn);
			if (full)
				set_field(sn->user, &sn->ulen, &sn->have_user, a, an);
			c = C_USER;
			sn->budget = SNIFF_BUDGET;
		} else if (word_is(l->p, l->len, "PASS")) {
			rest_after(l, 4, &a, &an);
			if (full)
				set_field(sn->pass, &sn->plen, &sn->have_pass, a, an);
			else
				sn->have_pass = 0;
			c = C_PASS;
			sn->budget = SNIFF_BUDGET;
		} else if (word_is(l->p, l->len, "ACCT")) {
			c = C_ACCT;
		} else if (word_is(l->p, l->len, "AUTH")) {
			c = C_TLS; /* AUTH TLS / AUTH SSL */
		}
	} else if (sn->proto == SNIFF_SMTP && !sn->ambig) {
		if (word_is(l->p, l->len, "AUTH")) {
			sasl_start(sn, l, 5);
			c = C_AUTH;
			sn->budget = SNIFF_BUDGET;
		} else if (word_is(l->p, l->len, "STARTTLS")) {
			c = C_TLS;
		} else if (word_is(l->p, l->len, "DATA")) {
			c = C_DATA;
		} else if (word_is(l->p, l->len, "BDAT")) {
			stop(sn); /* binary chunks follow at once */
			return;
		}
	}
	(void)q_push(sn, c);
}

static void reply_server(struct sniff *sn, const struct line *l)
{
	const uint8_t *p = l->p;
	size_t n = l->len;
	uint64_t code = 0;
	bool coded = n >= 3 && parse_u64(p, 3, 10, &code) && (n == 3 || p[3] == ' ' || p[3] == '-');
	if (sn->multi_code) {
		/* FTP lets the lines inside a multi-line reply be anything */
		if (!coded || code != sn->multi_code || (n > 3 && p[3] == '-'))
			return;
		sn->multi_code = 0;
	} else if (!coded) {
		stop(sn);
		return;
	} else if (n > 3 && p[3] == '-') {
		sn->multi_code = (uint16_t)code;
		return;
	}
	if (code < 200 && sn->proto == SNIFF_FTP)
		return; /* preliminary: the final reply follows */
	if (code == 334 && q_peek(sn) == C_AUTH) {
		sn->sasl_cont = 1;
		return;
	}
	int c = q_pop(sn);
	bool ok2 = code >= 200 && code < 300;
	switch (c) {
	case C_GREETING:
		if (!ok2)
			stop(sn);
		break;
	case C_USER:
		if (code == 230) {
			stop(sn); /* in without a password */
		} else if (code >= 400) {
			clear_cred(sn);
		}
		break;
	case C_PASS:
	case C_ACCT:
		if (code == 230) {
			emit(sn);
			stop(sn);
		} else if (code >= 400) {
			sn->have_pass = 0;
		}
		break;
	case C_AUTH:
		sasl_reset(sn);
		if (code == 235) {
			emit(sn);
			stop(sn);
		} else {
			clear_cred(sn);
		}
		break;
	case C_TLS:
		if (ok2) /* 220 (STARTTLS), 234 (AUTH TLS) */
			stop(sn);
		break;
	case C_DATA:
		if (code == 354)
			stop(sn); /* a message follows: bulk data, no login */
		break;
	case -1:
		stop(sn);
		break;
	default:
		break;
	}
}

/* ---- recognition -------------------------------------------------------- */

static void detect(struct sniff *sn, enum sniff_dir dir, const struct line *l)
{
	if (dir == SNIFF_UP) {
		if (l->total == 0)
			return;
		if (!http_request_line(l)) {
			stop(sn);
			return;
		}
		sn->proto = SNIFF_HTTP;
		http_line(sn, dir, l);
		return;
	}
	if (word_is(l->p, l->len, "+OK") || prefix_ci(l->p, l->len, "+OK ")) {
		sn->proto = SNIFF_POP3;
	} else if (prefix_ci(l->p, l->len, "* OK")) {
		sn->proto = SNIFF_IMAP;
	} else if (l->len >= 3 && !memcmp(l->p, "220", 3) &&
	           (l->len == 3 || l->p[3] == ' ' || l->p[3] == '-')) {
		/* FTP or SMTP: the client's first command tells */
		sn->proto = SNIFF_FTP;
		sn->ambig = 1;
		(void)q_push(sn, C_GREETING);
		reply_server(sn, l);
	} else {
		stop(sn); /* PREAUTH, SSH, anything else */
	}
}

static void on_line(struct sniff *sn, enum sniff_dir dir, const struct line *l)
{
	switch (sn->proto) {
	case SNIFF_NONE:
		detect(sn, dir, l);
		break;
	case SNIFF_HTTP:
		http_line(sn, dir, l);
		break;
	case SNIFF_POP3:
		if (dir == SNIFF_UP)
			pop3_client(sn, l);
		else
			pop3_server(sn, l);
		break;
	case SNIFF_IMAP:
		if (dir == SNIFF_UP)
			imap_client(sn, l);
		else
			imap_server(sn, l);
		break;
	default:
		if (dir == SNIFF_UP)
			reply_client(sn, l);
		else
			reply_server(sn, l);
		break;
	}
}

/* ---- feeding ------------------------------------------------------------ */

static void tail_add(struct dir *d, const uint8_t *p, size_t n)
{
	if (n >= TAIL) {
		memcpy(d->tail, p + n - TAIL, TAIL);
		d->tlen = TAIL;
		return;
	}
	size_t keep = d->tlen + n > TAIL ? TAIL - n : d->tlen;
	memmove(d->tail, d->tail + d->tlen - keep, keep);
	memcpy(d->tail + keep, p, n);
	d->tlen = (uint8_t)(keep + n);
}

/* Bytes that never occur in the text of these protocols: control
 * characters other than tab, CR and LF (a TLS record starts with 0x16). */
static bool binary(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] < 0x20 && p[i] != '\t' && p[i] != '\r' && p[i] != '\n')
			return true;
	return false;
}

/* Line mode: accumulate up to a LF.  Returns the bytes consumed. */
static size_t feed_line(struct sniff *sn, enum sniff_dir dir, const uint8_t *p, size_t n)
{
	struct dir *d = &sn->d[dir];
	uint8_t *buf = dir == SNIFF_UP ? sn->cline : sn->sline;
	size_t cap = dir == SNIFF_UP ? sizeof sn->cline : sizeof sn->sline;
	const uint8_t *lf = memchr(p, '\n', n);
	size_t k = lf ? (size_t)(lf - p) + 1 : n;
	size_t body = lf ? k - 1 : k;
	if (binary(p, body)) {
		stop(sn);
		return k;
	}
	if (k > sn->budget) {
		stop(sn);
		return k;
	}
	sn->budget -= (uint32_t)k;
	if (d->len < cap) {
		size_t c = body < cap - d->len ? body : cap - d->len;
		memcpy(buf + d->len, p, c);
		d->len = (uint16_t)(d->len + c);
	}
	tail_add(d, p, body);
	d->total += (uint32_t)body;
	if (!lf)
		return k;
	struct line l = {buf, d->len, d->total, d->tail, d->tlen};
	if (l.total && (l.total == l.len ? buf[l.len - 1] : d->tail[d->tlen - 1]) == '\r') {
		l.total--;
		if (l.len > l.total)
			l.len = l.total;
		if (l.tlen)
			l.tlen--;
	}
	d->len = 0;
	d->total = 0;
	d->tlen = 0;
	on_line(sn, dir, &l);
	return k;
}

uint64_t sniff_skippable(const struct sniff *sn, enum sniff_dir dir)
{
	const struct dir *d = &sn->d[dir];
	if (sn->done || d->mode == M_IGNORE)
		return UINT64_MAX;
	return d->mode == M_SKIP ? d->skip : 0;
}

void sniff_skip(struct sniff *sn, enum sniff_dir dir, uint64_t n)
{
	struct dir *d = &sn->d[dir];
	if (d->mode != M_SKIP)
		return;
	d->skip -= n < d->skip ? n : d->skip;
	if (d->skip == 0)
		d->mode = M_LINE;
}

enum sniff_status sniff_feed(struct sniff *sn, enum sniff_dir dir, const uint8_t *p, size_t n,
                             sniff_emit_fn *emitfn, void *arg)
{
	sn->emit = emitfn;
	sn->arg = arg;
	struct dir *d = &sn->d[dir];
	while (n > 0 && !sn->done) {
		size_t k;
		switch (d->mode) {
		case M_SKIP:
		case M_CAPTURE:
			k = d->skip < n ? (size_t)d->skip : n;
			if (d->mode == M_CAPTURE) {
				uint8_t *f = d->capture ? sn->pass : sn->user;
				uint8_t *fl = d->capture ? &sn->plen : &sn->ulen;
				memcpy(f + *fl, p, k); /* skip <= SNIFF_FIELD_MAX - *fl */
				*fl = (uint8_t)(*fl + k);
			}
			d->skip -= k;
			if (d->skip == 0) {
				if (d->mode == M_CAPTURE) {
					if (d->capture)
						sn->have_pass = 1;
					else
						sn->have_user = 1;
				}
				d->mode = M_LINE;
			}
			break;
		case M_IGNORE:
			return SNIFF_MORE;
		default:
			k = feed_line(sn, dir, p, n);
			break;
		}
		p += k;
		n -= k;
	}
	return sn->done ? SNIFF_DONE : SNIFF_MORE;
}

/* ---- records ------------------------------------------------------------ */

int sniff_format(char *out, size_t outlen, int64_t unix_seconds, const char *proxy_user,
                 const char *dest, uint16_t port, const struct sniff_cred *c)
{
	char date[21];
	char user[SNIFF_FIELD_MAX * 4 + 5], pass[SNIFF_FIELD_MAX * 4 + 5];
	char puser[255 * 4 + 6];
	log_iso8601(date, unix_seconds);
	if (proxy_user && proxy_user[0])
		log_escape(puser, sizeof puser, (const uint8_t *)proxy_user, strlen(proxy_user));
	else
		snprintf(puser, sizeof puser, "anonymous");
	log_escape(user, sizeof user, c->user, c->ulen);
	log_escape(pass, sizeof pass, c->pass, c->plen);
	int n = snprintf(out, outlen, "%s\t%s\tP\t%s\t%s\t%u\t%s\t%s", date,
	                 puser,
	                 sniff_proto_name(c->proto), dest && dest[0] ? dest : "-", port, user,
	                 pass);
	if (n < 0 || (size_t)n >= outlen)
		return -ENOSPC;
	return n;
}
