/*
 * Shared body of the fuzz_sniff_<proto> targets (one per dissector).  Each
 * target defines FUZZ_PREAMBLE, the bytes that put a fresh dissector into
 * its protocol, then includes this file.
 *
 * Input layout: a sequence of records, each a header byte (bit 7: the
 * direction, 1 = server to client; bits 0..6: the length) followed by that
 * many bytes of the stream.  The records are fed twice: each record as one
 * slice, then byte by byte; the credentials reported and the final status
 * must be the same (the result must not depend on how the bytes were
 * split).  A third run feeds byte by byte but first lets go unseen (with
 * sniff_skip) every byte that sniff_skippable() says the dissector would
 * not look at, as the splice relay does: the result must be the same
 * again.  Every slice is a heap copy of its exact size so that ASan sees
 * any read beyond it.
 */
#include "fuzz_common.h"

#include "../../worker/sniff.h"

struct fz_out {
	uint64_t hash;
	unsigned count;
};

static void fz_emit(void *arg, const struct sniff_cred *c)
{
	struct fz_out *o = arg;
	char line[2048];
	CHECK(c->ulen <= SNIFF_FIELD_MAX && c->plen <= SNIFF_FIELD_MAX);
	CHECK(sniff_format(line, sizeof line, 0, "user", "dest", 1, c) > 0);
	for (const char *p = line; *p; p++)
		o->hash = (o->hash ^ (uint8_t)*p) * 1099511628211ull;
	o->count++;
}

static void fz_slice(struct sniff *sn, enum sniff_dir dir, const uint8_t *p, size_t n,
                     struct fz_out *o, enum sniff_status *st)
{
	uint8_t *copy = malloc(n ? n : 1);
	CHECK(copy);
	memcpy(copy, p, n);
	enum sniff_status r = sniff_feed(sn, dir, copy, n, fz_emit, o);
	free(copy);
	CHECK(*st == SNIFF_MORE || r == SNIFF_DONE); /* DONE stays DONE */
	*st = r;
}

enum fz_mode { FZ_SLICES, FZ_BYTES, FZ_SKIPPING };

static enum sniff_status fz_run(const uint8_t *data, size_t size, enum fz_mode mode,
                                struct fz_out *o)
{
	static const struct {
		int dir;
		const char *s;
	} pre[] = {FUZZ_PREAMBLE};
	struct sniff *sn = sniff_new();
	CHECK(sn);
	enum sniff_status st = SNIFF_MORE;
	for (size_t i = 0; i < sizeof pre / sizeof pre[0]; i++)
		if (pre[i].s[0])
			fz_slice(sn, (enum sniff_dir)pre[i].dir, (const uint8_t *)pre[i].s,
			         strlen(pre[i].s), o, &st);
	size_t off = 0;
	while (off < size) {
		enum sniff_dir dir = data[off] & 0x80 ? SNIFF_DOWN : SNIFF_UP;
		size_t len = data[off] & 0x7f;
		off++;
		if (len > size - off)
			len = size - off;
		if (mode == FZ_BYTES) {
			for (size_t i = 0; i < len; i++)
				fz_slice(sn, dir, data + off + i, 1, o, &st);
		} else if (mode == FZ_SKIPPING) {
			for (size_t i = 0; i < len;) {
				uint64_t k = sniff_skippable(sn, dir);
				if (k > len - i)
					k = len - i;
				if (k) {
					sniff_skip(sn, dir, k);
					i += (size_t)k;
				} else {
					fz_slice(sn, dir, data + off + i++, 1, o, &st);
				}
			}
		} else {
			fz_slice(sn, dir, data + off, len, o, &st);
		}
		off += len;
	}
	sniff_free(sn);
	return st;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fz_out a = {14695981039346656037ull, 0}, b = a, c = a;
	enum sniff_status sa = fz_run(data, size, FZ_SLICES, &a);
	enum sniff_status sb = fz_run(data, size, FZ_BYTES, &b);
	enum sniff_status sc = fz_run(data, size, FZ_SKIPPING, &c);
	CHECK(sa == sb);
	CHECK(a.count == b.count && a.hash == b.hash);
	CHECK(a.count == c.count && a.hash == c.hash);
	CHECK(sc == sa);
	return 0;
}
