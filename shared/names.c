#include "names.h"

#include <stdint.h>
#include <string.h>

#define NAMES_MAX 255

const char *names_user_problem(const char *name, size_t len)
{
	if (len == 0)
		return "is empty";
	if (len > NAMES_MAX)
		return "is longer than 255 bytes";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)name[i];
		if (c < 0x20 || c == 0x7f)
			return "contains a control byte";
	}
	if (name[0] == ' ' || name[len - 1] == ' ')
		return "begins or ends with a blank";
	return NULL;
}

const char *names_password_problem(const char *pw, size_t len)
{
	if (len == 0)
		return "is empty";
	if (len > NAMES_MAX)
		return "is longer than 255 bytes";
	if (memchr(pw, '\0', len))
		return "contains a NUL byte";
	return NULL;
}

size_t names_utf8_len(const unsigned char *p, size_t left)
{
	unsigned char c = p[0];
	size_t n;
	uint32_t cp;
	if (c < 0x80)
		return 1;
	if (c >= 0xc2 && c <= 0xdf)
		n = 2, cp = c & 0x1fu;
	else if (c >= 0xe0 && c <= 0xef)
		n = 3, cp = c & 0x0fu;
	else if (c >= 0xf0 && c <= 0xf4)
		n = 4, cp = c & 0x07u;
	else
		return 0;
	if (left < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (p[i] & 0x3fu);
	}
	if ((n == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (n == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return n;
}
