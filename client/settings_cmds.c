/*
 * pipoClient: get and set, by key name (PIPO_Q_SETTING, PIPO_M_SETTING).
 * The names, what each value may be and which settings change at run time
 * come from the server's own table and parser (shared/settings.c): a value
 * is checked here exactly as the server will check it, so that a bad one
 * is a usage error before any connection or password prompt.
 */
#include "pc.h"

#include <inttypes.h>
#include <string.h>

#include "../shared/settings.h"

#define VALUE_MAX 2048

static const struct setting_desc *find(const char *what, const char *key)
{
	const struct setting_desc *d = settings_find(key);
	if (!d)
		pc_err("%s: unknown setting '%s' ('get' lists them all)", what, key);
	return d;
}

/* One value as the server wrote it: numbers and booleans typed in JSON,
 * sizes and durations with their human form in text. */
static void print_value(struct pc_json *j, const struct setting_desc *d, const char *text)
{
	struct settings tmp;
	char err[256], human[48];
	bool typed = false;
	uint32_t n = 0;
	if (d->type == SETTING_U32 || d->type == SETTING_U16 || d->type == SETTING_BOOL) {
		settings_defaults(&tmp);
		typed = settings_set(&tmp, d->key, text, err, sizeof err) >= 0;
		n = typed ? settings_number(&tmp, d) : 0;
	}
	if (j) {
		if (typed && d->type == SETTING_BOOL)
			pj_bool(j, d->key, n != 0);
		else if (typed)
			pj_u64(j, d->key, n);
		else
			pj_str(j, d->key, text);
		return;
	}
	if (typed && d->unit == SETTING_UNIT_BYTES)
		printf("%-18s %s (%s)\n", d->key, text, pc_bytes(human, sizeof human, n));
	else if (typed && d->unit == SETTING_UNIT_SECONDS)
		printf("%-18s %s s (%s)\n", d->key, text, pc_duration(human, sizeof human, n));
	else
		printf("%-18s %s\n", d->key, text[0] ? text : "(none)");
}

static void put_key(struct pc_batch *b, const struct setting_desc *d)
{
	uint8_t p[1 + PIPO_MAX_NAME];
	struct pipo_buf pb = {.p = p, .cap = sizeof p};
	pipo_put_str8(&pb, d->key);
	pc_batch_add(b, PIPO_QUERY, PIPO_Q_SETTING, p, pb.len);
}

/* get [SETTING]: the queries go out PC_BATCH_MAX to a write. */
int cmd_get(struct pc_ctx *x, char **args)
{
	const struct setting_desc *one = NULL;
	if (args[0] && !(one = find("get", args[0])))
		return PC_EXIT_USAGE;
	size_t first = one ? (size_t)(one - settings_table) : 0;
	size_t end = one ? first + 1 : settings_count;
	int rc = pc_need_conn(x);
	if (rc)
		return rc;
	int result = PC_EXIT_OK;
	struct pc_json j;
	if (x->json) {
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
	}
	for (size_t i = first; i < end && rc == PC_EXIT_OK; i += PC_BATCH_MAX) {
		size_t n = end - i < PC_BATCH_MAX ? end - i : PC_BATCH_MAX;
		struct pc_batch b;
		pc_batch_init(&b);
		for (size_t k = 0; k < n; k++)
			put_key(&b, &settings_table[i + k]);
		rc = pc_send(x->conn, &b);
		for (size_t k = 0; k < n && rc == PC_EXIT_OK; k++) {
			const struct setting_desc *d = &settings_table[i + k];
			struct pc_resp r;
			char v[VALUE_MAX], what[64];
			rc = pc_recv(x->conn, PIPO_QUERY, PIPO_Q_SETTING, &r);
			if (rc)
				break;
			if (r.f.status) {
				snprintf(what, sizeof what, "get %s", d->key);
				result = pc_status_fail(what, r.f.status, NULL);
				if (x->json)
					pj_null(&j, d->key);
				continue;
			}
			struct pipo_cur c = {.p = r.payload, .len = r.f.len};
			pipo_get_str16(&c, v, sizeof v);
			if (!pipo_cur_done(&c)) {
				rc = pc_malformed(x, "get");
				break;
			}
			print_value(x->json ? &j : NULL, d, v);
		}
	}
	if (rc)
		return rc;
	if (x->json) {
		pj_end_obj(&j);
		pj_finish(&j);
	}
	return result;
}

int cmd_set(struct pc_ctx *x, char **args)
{
	const struct setting_desc *d = find("set", args[0]);
	const char *val = args[1];
	if (!d)
		return PC_EXIT_USAGE;
	struct settings tmp;
	char msg[512];
	settings_defaults(&tmp);
	if (settings_change(&tmp, d->key, val, msg, sizeof msg) < 0) {
		pc_err("set %s: %s", d->key, msg);
		return PC_EXIT_USAGE;
	}
	uint8_t p[1 + PIPO_MAX_NAME + 2 + VALUE_MAX];
	struct pipo_buf b = {.p = p, .cap = sizeof p};
	pipo_put_str8(&b, d->key);
	pipo_put_u16(&b, (uint16_t)strlen(val));
	pipo_put_bytes(&b, val, strlen(val));
	struct pc_resp r;
	int rc = pc_round_trip(x, PIPO_MODIFY, PIPO_M_SETTING, p, b.len, &r);
	if (rc)
		return rc;
	/* The value now in force, or why not. */
	char text[VALUE_MAX], what[64];
	struct pipo_cur c = {.p = r.payload, .len = r.f.len};
	pipo_get_str16(&c, text, sizeof text);
	bool parsed = pipo_cur_done(&c);
	snprintf(what, sizeof what, "set %s %s", d->key, strlen(val) < 24 ? val : "...");
	if (r.f.status)
		return pc_status_fail(what, r.f.status, parsed && text[0] ? text : NULL);
	if (!parsed)
		return pc_malformed(x, "set");
	if (x->json) {
		struct pc_json j;
		pj_init(&j, stdout);
		pj_obj(&j, NULL);
		pj_bool(&j, "ok", true);
		print_value(&j, d, text);
		pj_end_obj(&j);
		pj_finish(&j);
	} else {
		printf("set: ");
		print_value(NULL, d, text);
	}
	return PC_EXIT_OK;
}

void pc_print_settings(FILE *f)
{
	char line[80] = "";
	fprintf(f, "  %-36s %s\n", "", "settings (* can be set while running):");
	for (size_t i = 0; i < settings_count; i++) {
		const struct setting_desc *d = &settings_table[i];
		size_t used = strlen(line), need = strlen(d->key) + 3;
		if (used && used + need > 40) {
			fprintf(f, "  %-36s %s,\n", "", line);
			line[0] = '\0';
			used = 0;
		}
		snprintf(line + used, sizeof line - used, "%s%s%s", used ? ", " : "", d->key,
		         d->when == SETTING_RUNTIME ? "*" : "");
	}
	if (line[0])
		fprintf(f, "  %-36s %s\n", "", line);
}
