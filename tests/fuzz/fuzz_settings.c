/*
 * libFuzzer target for shared/settings: the value parser that the command
 * line, the configuration file and the administration protocol's M_SETTING
 * (an administrator's bytes) all go through, and the printer behind
 * Q_SETTING.
 *
 * Input layout: KEY, a NUL byte, VALUE (the rest, NUL-terminated on the
 * heap so that ASan catches any read beyond it).  Without a NUL the input
 * is the value of every row in turn.
 *
 * Invariants checked: a refused value changes nothing and leaves a message;
 * an accepted one prints as text that is taken back to the same field.
 */
#include <errno.h>

#include "fuzz_common.h"

#include "../../shared/settings.h"

static void one(const struct setting_desc *d, const char *value)
{
	struct settings s, before, back;
	char err[256] = "", text[2048];
	settings_defaults(&s);
	before = s;
	int rc = settings_set(&s, d->key, value, err, sizeof err);
	if (rc < 0) {
		CHECK(rc == -EINVAL && err[0]);
		CHECK(memcmp(&s, &before, sizeof s) == 0);
		return;
	}
	CHECK(rc == (int)(d - settings_table));
	settings_format(&s, d, text, sizeof text);
	CHECK(strlen(text) < sizeof text);
	settings_defaults(&back);
	CHECK(settings_set(&back, d->key, text, err, sizeof err) == rc);
	CHECK(memcmp((char *)&s + d->off, (char *)&back + d->off, d->size) == 0);
	/* the same through a change while running */
	settings_defaults(&back);
	rc = settings_change(&back, d->key, value, err, sizeof err);
	CHECK(rc == 0 || (rc == -EPERM && d->when != SETTING_RUNTIME));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf = malloc(size + 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	const char *nul = memchr(buf, '\0', size);
	if (nul) {
		const struct setting_desc *d = settings_find(buf);
		if (d)
			one(d, nul + 1);
	} else {
		for (size_t i = 0; i < settings_count; i++)
			one(&settings_table[i], buf);
	}
	free(buf);
	return 0;
}
