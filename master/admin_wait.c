/*
 * The admin requests that wait for the workers: listing and closing SOCKS
 * sessions.  The master asks every running worker (or the one that owns an
 * id) over its control socket and answers when the last one replied, or
 * after ADMIN_WORKER_WAIT_MS (admin.c's timer).
 */
#include <stdlib.h>
#include <string.h>

#include "../shared/ctrl.h"
#include "../shared/shm.h"
#include "admin.h"
#include "admin_int.h"
#include "master.h"

/* Ask every running worker for its sessions; the answer is sent when the
 * last one replied (or after ADMIN_WORKER_WAIT_MS). */
uint8_t admin_start_list(struct admin_sess *s, struct pipo_cur *c)
{
	uint64_t after = pipo_get_u64(c);
	uint16_t max = pipo_get_u16(c);
	if (!pipo_cur_done(c))
		return PIPO_E_MALFORMED;
	if (max == 0 || max > PIPO_SESSIONS_PAGE_MAX)
		return PIPO_E_INVALID;
	struct admin *a = s->a;
	s->pend_sessions = calloc(SHM_MAX_WORKERS * (size_t)max, sizeof *s->pend_sessions);
	if (!s->pend_sessions)
		return PIPO_E_SERVER;
	s->pend = PEND_LIST;
	s->pend_tag = ++a->next_tag;
	s->pend_after = after;
	s->pend_max = max;
	s->pend_more = false;
	s->pend_n = 0;
	s->pend_waiting = 0;
	struct ctrl_msg m = {.type = CTRL_LIST_SESSIONS, .tag = s->pend_tag, .a = after, .b = max};
	for (uint32_t i = 0; i < SHM_MAX_WORKERS; i++)
		if (master_worker_send(a->m, i, &m) == 0)
			s->pend_waiting++;
	return PIPO_OK;
}

uint8_t admin_start_close(struct admin_sess *s, struct pipo_cur *c)
{
	uint64_t id = pipo_get_u64(c);
	if (!pipo_cur_done(c))
		return PIPO_E_MALFORMED;
	uint64_t w = id >> CTRL_ID_SHIFT;
	struct admin *a = s->a;
	s->pend = PEND_CLOSE;
	s->pend_tag = ++a->next_tag;
	s->pend_found = false;
	s->pend_waiting = 0;
	struct ctrl_msg m = {.type = CTRL_CLOSE_SESSION, .tag = s->pend_tag, .a = id};
	if (w >= 1 && w <= SHM_MAX_WORKERS && master_worker_send(a->m, (uint32_t)(w - 1), &m) == 0)
		s->pend_waiting = 1;
	return PIPO_OK;
}

static int cmp_session(const void *x, const void *y)
{
	const struct pipo_session *p = x, *q = y;
	return p->id < q->id ? -1 : p->id > q->id;
}

void admin_finish_pending(struct admin_sess *s)
{
	uint8_t buf[16];
	struct pipo_buf b = {.p = buf, .cap = sizeof buf};
	if (s->pend == PEND_LIST) {
		qsort(s->pend_sessions, s->pend_n, sizeof *s->pend_sessions, cmp_session);
		size_t n = s->pend_n < s->pend_max ? s->pend_n : s->pend_max;
		bool more = s->pend_more || s->pend_n > n;
		size_t cap = 3 + n * 600;
		struct pipo_buf body = {.p = malloc(cap), .cap = cap};
		if (!body.p) {
			admin_respond(s, PIPO_QUERY, s->pend_cmd, PIPO_E_SERVER, NULL);
		} else {
			pipo_put_u16(&body, (uint16_t)n);
			pipo_put_u8(&body, more);
			for (size_t i = 0; i < n; i++)
				if (s->pend_cmd == PIPO_Q_SESSIONS_EX)
					pipo_put_session_ex(&body, &s->pend_sessions[i]);
				else
					pipo_put_session(&body, &s->pend_sessions[i]);
			admin_respond(s, PIPO_QUERY, s->pend_cmd,
			              body.overflow ? PIPO_E_SERVER : PIPO_OK, &body);
			free(body.p);
		}
		free(s->pend_sessions);
		s->pend_sessions = NULL;
	} else if (s->pend == PEND_CLOSE) {
		admin_respond(s, PIPO_MODIFY, PIPO_M_CLOSE_SESSION,
		              s->pend_found ? PIPO_OK : PIPO_E_NOT_FOUND, &b);
	}
	s->pend = PEND_NONE;
	loop_timer_stop(&s->delay);
	if (s->fd >= 0) {
		admin_flush(s);
		if (s->fd >= 0)
			admin_process(s);
	}
}

void admin_worker_msg(struct admin *a, uint32_t index, const uint8_t *msg, size_t len)
{
	(void)index;
	if (len < sizeof(struct ctrl_msg))
		return;
	struct ctrl_msg m;
	memcpy(&m, msg, sizeof m);
	for (struct admin_sess *s = a->sessions; s; s = s->next) {
		if (s->pend == PEND_NONE || s->pend_tag != m.tag)
			continue;
		if (m.type == CTRL_SESSIONS && s->pend == PEND_LIST) {
			size_t n = m.b;
			if (n > s->pend_max || sizeof m + n * sizeof(struct ctrl_session) > len)
				n = 0;
			for (size_t i = 0; i < n; i++) {
				struct ctrl_session rec;
				memcpy(&rec, msg + sizeof m + i * sizeof rec, sizeof rec);
				pipo_session_from_ctrl(&s->pend_sessions[s->pend_n + i], &rec);
			}
			s->pend_n += n;
			s->pend_more |= m.c != 0;
		} else if (m.type == CTRL_CLOSED && s->pend == PEND_CLOSE) {
			s->pend_found = m.b != 0;
		} else {
			return;
		}
		if (s->pend_waiting && --s->pend_waiting == 0)
			admin_finish_pending(s);
		return;
	}
}
