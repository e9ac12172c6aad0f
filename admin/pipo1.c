#include "pipo1.h"

#include <string.h>

enum { S_TYPE, S_CMD, S_FIELDS };

/* The fields of a request, in order. */
enum field { F_END, F_USER, F_PASS, F_U8, F_U32 };

static const uint8_t *layout(uint8_t type, uint8_t cmd)
{
	static const uint8_t none[] = {F_END};
	static const uint8_t name[] = {F_USER, F_END};
	static const uint8_t add[] = {F_USER, F_PASS, F_U8, F_END};
	static const uint8_t one[] = {F_U8, F_END};
	static const uint8_t four[] = {F_U32, F_END};
	if (type == PIPO1_QUERY) {
		if (cmd <= PIPO1_Q_CONN_TIMEOUT || cmd == PIPO1_Q_CONN_TIMEOUT_ALT)
			return none;
		if (cmd == PIPO1_Q_USER_CONNS || cmd == PIPO1_Q_USER_CONNS_ALT)
			return name;
		return NULL;
	}
	if (type != PIPO1_MODIFY)
		return NULL;
	switch (cmd) {
	case PIPO1_M_ADD_USER: return add;
	case PIPO1_M_DEL_USER: return name;
	case PIPO1_M_DISSECTORS:
	case PIPO1_M_IDLE_CLEANUP:
	case PIPO1_M_SELECTOR_TIMEOUT:
	case PIPO1_M_CONN_TIMEOUT: return one;
	case PIPO1_M_BUFFER_SIZE: return four;
	default: return NULL;
	}
}

bool pipo1_known(uint8_t type, uint8_t cmd)
{
	return layout(type, cmd) != NULL;
}

void pipo1_reader_init(struct pipo1_reader *r)
{
	memset(r, 0, sizeof *r);
	r->state = S_TYPE;
}

void pipo1_reader_wipe(struct pipo1_reader *r)
{
	/* volatile: the wipe must not be dropped as a dead store */
	volatile char *p = r->req.pass;
	for (size_t i = 0; i < sizeof r->req.pass; i++)
		p[i] = 0;
	r->req.plen = 0;
}

/* A string field: its length byte, then its bytes. */
static void str_byte(struct pipo1_reader *r, char *s, uint8_t *len, uint8_t b)
{
	if (r->pos == 0) {
		*len = b;
		s[0] = '\0';
	} else {
		s[r->pos - 1] = (char)b;
		s[r->pos] = '\0';
	}
	r->pos++;
}

int pipo1_reader_feed(struct pipo1_reader *r, const uint8_t *p, size_t n, size_t *used)
{
	size_t i = 0;
	int rc = PIPO1_NEED_MORE;
	while (rc == PIPO1_NEED_MORE) {
		if (r->state == S_FIELDS) {
			const uint8_t *l = layout(r->req.type, r->req.cmd);
			uint8_t f = l[r->field];
			/* A field complete: on to the next one. */
			bool full = (f == F_USER && r->pos > 0 && r->pos == 1u + r->req.ulen) ||
			            (f == F_PASS && r->pos > 0 && r->pos == 1u + r->req.plen) ||
			            (f == F_U8 && r->pos == 1) || (f == F_U32 && r->pos == 4);
			if (full) {
				if (f == F_U8)
					r->req.u8 = r->num[0];
				else if (f == F_U32)
					r->req.u32 = (uint32_t)r->num[0] << 24 | (uint32_t)r->num[1] << 16 |
					             (uint32_t)r->num[2] << 8 | r->num[3];
				r->field++;
				r->pos = 0;
				continue;
			}
			if (f == F_END) {
				r->state = S_TYPE;
				rc = PIPO1_DONE;
				break;
			}
			if (i == n)
				break;
			uint8_t b = p[i++];
			if (f == F_USER)
				str_byte(r, r->req.user, &r->req.ulen, b);
			else if (f == F_PASS)
				str_byte(r, r->req.pass, &r->req.plen, b);
			else
				r->num[r->pos++] = b;
			continue;
		}
		if (i == n)
			break;
		uint8_t b = p[i++];
		if (r->state == S_TYPE) {
			pipo1_reader_wipe(r);
			memset(&r->req, 0, sizeof r->req);
			r->req.type = b;
			r->state = S_CMD;
			continue;
		}
		/* S_CMD */
		r->req.cmd = b;
		if (!layout(r->req.type, b)) {
			r->state = S_TYPE;
			rc = PIPO1_ERROR;
			break;
		}
		r->state = S_FIELDS;
		r->field = 0;
		r->pos = 0;
	}
	*used = i;
	return rc;
}

size_t pipo1_request_encode(uint8_t *out, size_t cap, const struct pipo1_request *q)
{
	const uint8_t *l = layout(q->type, q->cmd);
	if (!l)
		return 0;
	size_t need = 2;
	for (const uint8_t *f = l; *f != F_END; f++)
		need += *f == F_USER ? 1u + q->ulen : *f == F_PASS ? 1u + q->plen : *f == F_U8 ? 1 : 4;
	if (need > cap)
		return 0;
	size_t k = 0;
	out[k++] = q->type;
	out[k++] = q->cmd;
	for (const uint8_t *f = l; *f != F_END; f++) {
		switch (*f) {
		case F_USER:
			out[k++] = q->ulen;
			memcpy(out + k, q->user, q->ulen);
			k += q->ulen;
			break;
		case F_PASS:
			out[k++] = q->plen;
			memcpy(out + k, q->pass, q->plen);
			k += q->plen;
			break;
		case F_U8:
			out[k++] = q->u8;
			break;
		default:
			out[k++] = (uint8_t)(q->u32 >> 24);
			out[k++] = (uint8_t)(q->u32 >> 16);
			out[k++] = (uint8_t)(q->u32 >> 8);
			out[k++] = (uint8_t)q->u32;
			break;
		}
	}
	return k;
}
