#include "socks5.h"

#include "../shared/settings.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

enum { G_VER, G_NMETHODS, G_METHODS, G_DONE };

void socks5_greeting_init(struct socks5_greeting *g)
{
	memset(g, 0, sizeof *g);
}

int socks5_greeting_feed(struct socks5_greeting *g, const uint8_t *p, size_t n, size_t *used)
{
	size_t i = 0;
	int rc = SOCKS5_MORE;
	while (i < n && rc == SOCKS5_MORE) {
		uint8_t b = p[i++];
		switch (g->state) {
		case G_VER:
			if (b != SOCKS5_VERSION) {
				g->error = SOCKS5_GREETING_BAD_VERSION;
				rc = SOCKS5_ERROR;
				break;
			}
			g->state = G_NMETHODS;
			break;
		case G_NMETHODS:
			if (b == 0) {
				g->error = SOCKS5_GREETING_NO_METHODS;
				rc = SOCKS5_ERROR;
				break;
			}
			g->nmethods = b;
			g->state = G_METHODS;
			break;
		case G_METHODS:
			if (b == SOCKS5_METHOD_NO_AUTH)
				g->offers_no_auth = 1;
			else if (b == SOCKS5_METHOD_USERPASS)
				g->offers_userpass = 1;
			else if (b == SOCKS5_METHOD_GSSAPI)
				g->offers_gssapi = 1;
			if (++g->seen == g->nmethods) {
				g->state = G_DONE;
				rc = SOCKS5_DONE;
			}
			break;
		default:
			rc = SOCKS5_DONE;
			i--;
			break;
		}
	}
	*used = i;
	return rc;
}

void socks5_auth_init(struct rfc1929 *a)
{
	rfc1929_init(a, SOCKS5_AUTH_VERSION, false);
}

enum { R_VER, R_CMD, R_RSV, R_ATYP, R_ALEN, R_ADDR, R_PORT_HI, R_PORT_LO, R_DONE };

void socks5_request_init(struct socks5_request *r)
{
	memset(r, 0, sizeof *r);
}

static int request_fail(struct socks5_request *r, uint8_t rep)
{
	r->rep = rep;
	return SOCKS5_ERROR;
}

int socks5_request_feed(struct socks5_request *r, const uint8_t *p, size_t n, size_t *used)
{
	size_t i = 0;
	int rc = SOCKS5_MORE;
	while (i < n && rc == SOCKS5_MORE) {
		switch (r->state) {
		case R_VER:
			if (p[i++] != SOCKS5_VERSION)
				rc = request_fail(r, SOCKS5_REP_GENERAL_FAILURE);
			else
				r->state = R_CMD;
			break;
		case R_CMD:
			r->cmd = p[i++];
			r->state = R_RSV;
			break;
		case R_RSV:
			if (p[i++] != 0x00)
				rc = request_fail(r, SOCKS5_REP_GENERAL_FAILURE);
			else
				r->state = R_ATYP;
			break;
		case R_ATYP:
			r->atyp = p[i++];
			r->pos = 0;
			if (r->atyp == SOCKS5_ATYP_IPV4) {
				r->alen = 4;
				r->state = R_ADDR;
			} else if (r->atyp == SOCKS5_ATYP_IPV6) {
				r->alen = 16;
				r->state = R_ADDR;
			} else if (r->atyp == SOCKS5_ATYP_DOMAIN) {
				r->state = R_ALEN;
			} else {
				rc = request_fail(r, SOCKS5_REP_ATYP_NOT_SUPPORTED);
			}
			break;
		case R_ALEN:
			r->alen = p[i++];
			if (r->alen == 0)
				rc = request_fail(r, SOCKS5_REP_GENERAL_FAILURE);
			else
				r->state = R_ADDR;
			break;
		case R_ADDR: {
			size_t k = r->alen - r->pos;
			if (k > n - i)
				k = n - i;
			uint8_t *dst = r->atyp == SOCKS5_ATYP_DOMAIN ? (uint8_t *)r->host : r->addr;
			memcpy(dst + r->pos, p + i, k);
			r->pos = (uint8_t)(r->pos + k);
			i += k;
			if (r->pos == r->alen) {
				if (r->atyp == SOCKS5_ATYP_DOMAIN)
					r->host[r->alen] = '\0';
				r->state = R_PORT_HI;
			}
			break;
		}
		case R_PORT_HI:
			r->port_hi = p[i++];
			r->state = R_PORT_LO;
			break;
		case R_PORT_LO:
			r->port = (uint16_t)(r->port_hi << 8 | p[i++]);
			r->state = R_DONE;
			rc = SOCKS5_DONE;
			break;
		default:
			rc = SOCKS5_DONE;
			break;
		}
	}
	*used = i;
	return rc;
}

size_t socks5_reply_encode(uint8_t out[SOCKS5_REPLY_MAX], uint8_t rep, const struct sockaddr *bnd)
{
	out[0] = SOCKS5_VERSION;
	out[1] = rep;
	out[2] = 0x00;
	if (bnd && bnd->sa_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)bnd;
		if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
			out[3] = SOCKS5_ATYP_IPV4;
			memcpy(out + 4, &s6->sin6_addr.s6_addr[12], 4);
			memcpy(out + 8, &s6->sin6_port, 2);
			return 10;
		}
		out[3] = SOCKS5_ATYP_IPV6;
		memcpy(out + 4, &s6->sin6_addr, 16);
		memcpy(out + 20, &s6->sin6_port, 2);
		return 22;
	}
	out[3] = SOCKS5_ATYP_IPV4;
	if (bnd && bnd->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)bnd;
		memcpy(out + 4, &s4->sin_addr, 4);
		memcpy(out + 8, &s4->sin_port, 2);
	} else {
		memset(out + 4, 0, 6);
	}
	return 10;
}

uint8_t socks5_rep_from_errno(int err)
{
	switch (err) {
	case ECONNREFUSED:
		return SOCKS5_REP_CONN_REFUSED;
	case EHOSTUNREACH:
	case EHOSTDOWN:
		return SOCKS5_REP_HOST_UNREACH;
	case ENETUNREACH:
	case ENETDOWN:
		return SOCKS5_REP_NET_UNREACH;
	case ETIMEDOUT:
		return SOCKS5_REP_TTL_EXPIRED;
	case EACCES:
	case EPERM:
		return SOCKS5_REP_NOT_ALLOWED;
	case EAFNOSUPPORT:
		return SOCKS5_REP_ATYP_NOT_SUPPORTED;
	default:
		return SOCKS5_REP_GENERAL_FAILURE;
	}
}

static int rep_rank(uint8_t rep)
{
	switch (rep) {
	case SOCKS5_REP_CONN_REFUSED:
		return 6;
	case SOCKS5_REP_HOST_UNREACH:
		return 5;
	case SOCKS5_REP_NET_UNREACH:
		return 4;
	case SOCKS5_REP_NOT_ALLOWED:
		return 3;
	case SOCKS5_REP_TTL_EXPIRED:
		return 2;
	default:
		return 1;
	}
}

uint8_t socks5_rep_worst(uint8_t a, uint8_t b)
{
	return rep_rank(b) > rep_rank(a) ? b : a;
}

uint8_t socks5_choose_method(const struct socks5_greeting *g, bool gssapi, bool users_exist,
                             uint8_t policy, bool client_loopback)
{
	if (g->offers_gssapi && gssapi)
		return SOCKS5_METHOD_GSSAPI;
	if (g->offers_userpass && users_exist)
		return SOCKS5_METHOD_USERPASS;
	if (!g->offers_no_auth)
		return SOCKS5_METHOD_NO_ACCEPTABLE;
	/* A server with GSS-API has accounts as much as one with users. */
	bool allowed = policy == ANON_ALWAYS ||
	               (policy == ANON_AUTO && !users_exist && !gssapi && client_loopback);
	return allowed ? SOCKS5_METHOD_NO_AUTH : SOCKS5_METHOD_NO_ACCEPTABLE;
}

bool socks5_is_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET) {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)sa;
		return (ntohl(s4->sin_addr.s_addr) >> 24) == 127;
	}
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		return IN6_IS_ADDR_LOOPBACK(a) || (IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}
