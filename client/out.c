/*
 * pipoClient output helpers: binary units (KiB, MiB: the server counts
 * bytes, and buffer sizes are powers of two), durations, and a small JSON
 * writer that always produces valid JSON (strings are escaped, invalid
 * UTF-8 from the wire becomes U+FFFD).
 */
#include "pc.h"

#include <math.h>
#include <string.h>

#include "../shared/names.h"

const char *pc_bytes(char *buf, size_t cap, uint64_t v)
{
	static const char *const unit[] = {"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
	if (v < 1024) {
		snprintf(buf, cap, "%llu B", (unsigned long long)v);
		return buf;
	}
	double d = (double)v;
	size_t u = 0;
	d /= 1024;
	while (d >= 1024 && u + 1 < sizeof unit / sizeof unit[0]) {
		d /= 1024;
		u++;
	}
	snprintf(buf, cap, d < 10 ? "%.2f %s" : d < 100 ? "%.1f %s" : "%.0f %s", d, unit[u]);
	return buf;
}

const char *pc_text(char *buf, size_t cap, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		bool ctl = ch < 0x20 || ch == 0x7f;
		if (o + (ctl ? 4 : 1) >= cap)
			break;
		if (ctl) {
			buf[o++] = '\\';
			buf[o++] = 'x';
			buf[o++] = hex[ch >> 4];
			buf[o++] = hex[ch & 15];
		} else {
			buf[o++] = (char)ch;
		}
	}
	if (cap)
		buf[o] = '\0';
	return buf;
}

const char *pc_duration(char *buf, size_t cap, uint64_t s)
{
	uint64_t d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60, sec = s % 60;
	if (d)
		snprintf(buf, cap, "%llud %02lluh %02llum", (unsigned long long)d,
		         (unsigned long long)h, (unsigned long long)m);
	else if (h)
		snprintf(buf, cap, "%lluh %02llum %02llus", (unsigned long long)h,
		         (unsigned long long)m, (unsigned long long)sec);
	else if (m)
		snprintf(buf, cap, "%llum %02llus", (unsigned long long)m, (unsigned long long)sec);
	else
		snprintf(buf, cap, "%llus", (unsigned long long)sec);
	return buf;
}

const char *pc_rate(char *buf, size_t cap, double r, bool bytes)
{
	if (!isfinite(r) || r < 0)
		r = 0;
	if (bytes) {
		char b[32];
		pc_bytes(b, sizeof b, (uint64_t)(r + 0.5));
		snprintf(buf, cap, "%s/s", b);
	} else {
		snprintf(buf, cap, r < 10 ? "%.2f/s" : "%.0f/s", r);
	}
	return buf;
}

/* ---- JSON --------------------------------------------------------------- */

void pj_init(struct pc_json *j, FILE *f)
{
	memset(j, 0, sizeof *j);
	j->f = f;
	j->first[0] = true;
}

static void indent(struct pc_json *j)
{
	for (int i = 0; i < j->depth; i++)
		fputs("  ", j->f);
}

static void put_string(FILE *f, const char *s)
{
	const unsigned char *p = (const unsigned char *)s;
	size_t n = strlen(s);
	fputc('"', f);
	for (size_t i = 0; i < n;) {
		unsigned char c = p[i];
		if (c == '"' || c == '\\') {
			fputc('\\', f);
			fputc(c, f);
			i++;
		} else if (c == '\n') {
			fputs("\\n", f);
			i++;
		} else if (c == '\t') {
			fputs("\\t", f);
			i++;
		} else if (c < 0x20 || c == 0x7f) {
			fprintf(f, "\\u%04x", c);
			i++;
		} else {
			size_t k = names_utf8_len(p + i, n - i);
			if (k == 0) {
				fputs("\\ufffd", f);
				i++;
			} else {
				fwrite(p + i, 1, k, f);
				i += k;
			}
		}
	}
	fputc('"', f);
}

static void item(struct pc_json *j, const char *key)
{
	if (!j->first[j->depth])
		fputc(',', j->f);
	j->first[j->depth] = false;
	if (j->depth > 0) {
		fputc('\n', j->f);
		indent(j);
	}
	if (key) {
		put_string(j->f, key);
		fputs(": ", j->f);
	}
}

static void open_(struct pc_json *j, const char *key, char c)
{
	item(j, key);
	fputc(c, j->f);
	if (j->depth + 1 < (int)(sizeof j->first / sizeof j->first[0]))
		j->depth++;
	j->first[j->depth] = true;
}

static void close_(struct pc_json *j, char c)
{
	bool empty = j->first[j->depth];
	if (j->depth > 0)
		j->depth--;
	if (!empty) {
		fputc('\n', j->f);
		indent(j);
	}
	fputc(c, j->f);
}

void pj_obj(struct pc_json *j, const char *key)
{
	open_(j, key, '{');
}

void pj_arr(struct pc_json *j, const char *key)
{
	open_(j, key, '[');
}

void pj_end_obj(struct pc_json *j)
{
	close_(j, '}');
}

void pj_end_arr(struct pc_json *j)
{
	close_(j, ']');
}

void pj_str(struct pc_json *j, const char *key, const char *s)
{
	item(j, key);
	put_string(j->f, s);
}

void pj_u64(struct pc_json *j, const char *key, uint64_t v)
{
	item(j, key);
	fprintf(j->f, "%llu", (unsigned long long)v);
}

void pj_double(struct pc_json *j, const char *key, double v)
{
	item(j, key);
	if (!isfinite(v))
		v = 0;
	fprintf(j->f, "%.3f", v);
}

void pj_bool(struct pc_json *j, const char *key, bool v)
{
	item(j, key);
	fputs(v ? "true" : "false", j->f);
}

void pj_null(struct pc_json *j, const char *key)
{
	item(j, key);
	fputs("null", j->f);
}

void pj_finish(struct pc_json *j)
{
	fputc('\n', j->f);
	fflush(j->f);
}
