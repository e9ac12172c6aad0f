#include "rfc1929.h"

#include <string.h>

enum { S_VER, S_ULEN, S_UNAME, S_PLEN, S_PASSWD, S_DONE };

void rfc1929_init(struct rfc1929 *a, uint8_t version, bool pass_required)
{
	a->state = S_VER;
	a->want_ver = version;
	a->pass_required = pass_required;
	a->ver = 0;
	a->error = RFC1929_OK;
	a->ulen = a->plen = a->pos = 0;
	a->user[0] = a->pass[0] = '\0';
}

static int fail(struct rfc1929 *a, enum rfc1929_error e)
{
	a->error = (uint8_t)e;
	return RFC1929_ERROR;
}

/* Copy up to the rest of a field of len bytes into dst; true when full. */
static bool take(struct rfc1929 *a, char *dst, uint8_t len, const uint8_t *p, size_t n, size_t *i)
{
	size_t k = (size_t)(len - a->pos);
	if (k > n - *i)
		k = n - *i;
	memcpy(dst + a->pos, p + *i, k);
	a->pos = (uint8_t)(a->pos + k);
	*i += k;
	if (a->pos < len)
		return false;
	dst[len] = '\0';
	return true;
}

int rfc1929_feed(struct rfc1929 *a, const uint8_t *p, size_t n, size_t *used)
{
	size_t i = 0;
	int rc = RFC1929_MORE;
	while (i < n && rc == RFC1929_MORE) {
		switch (a->state) {
		case S_VER:
			a->ver = p[i++];
			if (a->ver != a->want_ver)
				rc = fail(a, RFC1929_BAD_VERSION);
			else
				a->state = S_ULEN;
			break;
		case S_ULEN:
			a->ulen = p[i++];
			a->pos = 0;
			if (a->ulen == 0)
				rc = fail(a, RFC1929_EMPTY_USER);
			else
				a->state = S_UNAME;
			break;
		case S_UNAME:
			if (take(a, a->user, a->ulen, p, n, &i))
				a->state = S_PLEN;
			break;
		case S_PLEN:
			a->plen = p[i++];
			a->pos = 0;
			a->pass[0] = '\0';
			if (a->plen == 0 && a->pass_required) {
				rc = fail(a, RFC1929_EMPTY_PASS);
			} else if (a->plen == 0) {
				a->state = S_DONE;
				rc = RFC1929_DONE;
			} else {
				a->state = S_PASSWD;
			}
			break;
		case S_PASSWD:
			if (take(a, a->pass, a->plen, p, n, &i)) {
				a->state = S_DONE;
				rc = RFC1929_DONE;
			}
			break;
		default:
			rc = RFC1929_DONE;
			break;
		}
	}
	*used = i;
	return rc;
}

size_t rfc1929_encode(uint8_t *out, size_t cap, uint8_t version, const char *user,
                      const char *pass)
{
	size_t ul = strlen(user), pl = strlen(pass);
	if (ul == 0 || pl == 0 || ul > RFC1929_FIELD_MAX || pl > RFC1929_FIELD_MAX ||
	    cap < 3 + ul + pl)
		return 0;
	out[0] = version;
	out[1] = (uint8_t)ul;
	memcpy(out + 2, user, ul);
	out[2 + ul] = (uint8_t)pl;
	memcpy(out + 3 + ul, pass, pl);
	return 3 + ul + pl;
}
